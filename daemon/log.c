/* shmnetd logging: see log.h. */
#include "core/clock.h"
#include "daemon/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Relaxed: the level is a standalone value; no other data is published with it. */
static int log_level = LOG_LVL_INFO;
static int log_journal; /* written once by log_init before any thread starts */

void log_init(void)
{
    /* JOURNAL_STREAM is "DEV:INODE" of the journal stream; only trust it when it is really
     * our stderr (it is inherited by children whose stderr was redirected elsewhere). */
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;

    log_journal = 0;
    if (js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0 &&
        (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino)
        log_journal = 1;
}

void log_set_level(enum log_level l)
{
    __atomic_store_n(&log_level, (int)l, __ATOMIC_RELAXED);
}

enum log_level log_get_level(void)
{
    return (enum log_level)__atomic_load_n(&log_level, __ATOMIC_RELAXED);
}

void log_vmsg(enum log_level l, const char *fmt, va_list ap)
{
    static const char *const prio[] = {"<3>", "<4>", "<6>", "<7>"};
    static const char *const name[] = {"error", "warn", "info", "debug"};
    char line[2048];
    int n, saved = errno;

    if ((int)l > __atomic_load_n(&log_level, __ATOMIC_RELAXED) || l < 0 || l > LOG_LVL_DEBUG)
        return;
    if (log_journal)
        n = snprintf(line, sizeof(line), "%s", prio[l]);
    else
        n = snprintf(line, sizeof(line), "shmnetd: %s: ", name[l]);
    n += vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    if (n > (int)sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    /* One write per line so lines of the two threads never interleave. */
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
    errno = saved;
}

void log_msg(enum log_level l, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vmsg(l, fmt, ap);
    va_end(ap);
}

bool log_ratelimit(struct log_ratelimit *rl, unsigned burst, uint64_t interval_ns, uint64_t now_ns,
                   uint64_t *missed)
{
    /* Fixed intervals numbered by now / interval: the number and the count share one word, so
     * one compare-and-swap both counts and starts a new interval. */
    uint32_t epoch = (uint32_t)(now_ns / (interval_ns ? interval_ns : 1));
    uint64_t old = __atomic_load_n(&rl->state, __ATOMIC_RELAXED), nw;
    bool fresh;

    do {
        /* Only forward: a thread that read the clock just before another started the next
         * interval counts in the new one instead of going back. */
        fresh = (int32_t)(epoch - (uint32_t)(old >> 32)) > 0;
        nw = fresh ? (uint64_t)epoch << 32 | 1 : old + ((uint32_t)old != UINT32_MAX);
    } while (!__atomic_compare_exchange_n(&rl->state, &old, nw, true, __ATOMIC_RELAXED,
                                          __ATOMIC_RELAXED));
    if ((uint32_t)nw > burst) {
        __atomic_fetch_add(&rl->missed, 1, __ATOMIC_RELAXED);
        return false;
    }
    /* The first message of an interval reports what was suppressed before it. One that
     * another thread suppresses meanwhile may go to the next report instead: none is lost. */
    *missed = fresh ? __atomic_exchange_n(&rl->missed, 0, __ATOMIC_RELAXED) : 0;
    return true;
}

void log_msg_rl(struct log_ratelimit *rl, const char *site, enum log_level l, const char *fmt, ...)
{
    uint64_t missed;
    va_list ap;

    /* A filtered level costs nothing and does not use up the burst. */
    if ((int)l > __atomic_load_n(&log_level, __ATOMIC_RELAXED))
        return;
    if (!log_ratelimit(rl, LOG_RL_BURST, LOG_RL_INTERVAL_MS * 1000000ull, clock_mono_ns(), &missed))
        return;
    if (missed)
        log_msg(l, "%s: %llu messages suppressed", site, (unsigned long long)missed);
    va_start(ap, fmt);
    log_vmsg(l, fmt, ap);
    va_end(ap);
}
