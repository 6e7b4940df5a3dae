/* Rate-limited logging (daemon/log.c): a burst per interval and call site, the count of what
 * was suppressed with the next message through, exact counts under threads. */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/log.h"

#define SEC 1000000000ull
#define IVL (5 * SEC)

Test(log_rl, burst_then_suppressed)
{
    struct log_ratelimit rl = {0};
    uint64_t missed = 99, t = 100 * IVL;
    int passed = 0;

    for (int i = 0; i < 25; i++)
        if (log_ratelimit(&rl, 10, IVL, t + (uint64_t)i, &missed)) {
            cr_assert_eq(missed, 0, "nothing suppressed before message %d", i);
            passed++;
        }
    cr_assert_eq(passed, 10);
    /* Next interval: through again, and it carries the count of the 15 suppressed. */
    cr_assert(log_ratelimit(&rl, 10, IVL, t + IVL, &missed));
    cr_assert_eq(missed, 15);
    cr_assert(log_ratelimit(&rl, 10, IVL, t + IVL + 1, &missed));
    cr_assert_eq(missed, 0, "reported once");
    /* A quiet interval in between changes nothing: a new burst, nothing to report. */
    cr_assert(log_ratelimit(&rl, 10, IVL, t + 5 * IVL, &missed));
    cr_assert_eq(missed, 0);
}

Test(log_rl, clock_behind_counts_in_current_interval)
{
    struct log_ratelimit rl = {0};
    uint64_t missed, t = 100 * IVL;

    cr_assert(log_ratelimit(&rl, 1, IVL, t, &missed));
    cr_assert_not(log_ratelimit(&rl, 1, IVL, t + 1, &missed));
    /* A thread that read the clock just before the interval began: no new burst for it. */
    cr_assert_not(log_ratelimit(&rl, 1, IVL, t - 1, &missed));
    cr_assert(log_ratelimit(&rl, 1, IVL, t + IVL, &missed));
    cr_assert_eq(missed, 2);
}

struct hammer {
    struct log_ratelimit *rl;
    uint64_t now;
    int calls, passed;
};

static void *hammer_fn(void *arg)
{
    struct hammer *h = arg;
    uint64_t missed;

    for (int i = 0; i < h->calls; i++)
        h->passed += log_ratelimit(h->rl, 10, IVL, h->now, &missed);
    return NULL;
}

/* Lock-free, and still exact: one burst among all threads, the rest counted. */
Test(log_rl, threads_share_the_burst)
{
    struct log_ratelimit rl = {0};
    struct hammer h[4];
    pthread_t th[4];
    uint64_t missed, t = 7 * IVL;
    int passed = 0;

    for (int i = 0; i < 4; i++) {
        h[i] = (struct hammer){.rl = &rl, .now = t, .calls = 100000};
        cr_assert_eq(pthread_create(&th[i], NULL, hammer_fn, &h[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        passed += h[i].passed;
    }
    cr_assert_eq(passed, 10);
    cr_assert(log_ratelimit(&rl, 10, IVL, t + IVL, &missed));
    cr_assert_eq(missed, 4 * 100000 - 10);
}

static void rl_site(int i)
{
    log_warn_rl("refused %d", i);
}

/* The macro: one state per call site; the line before the next message says how many
 * were suppressed, naming the site. */
Test(log_rl, macro_lines, .init = cr_redirect_stderr)
{
    log_set_level(LOG_LVL_INFO);
    for (int i = 0; i < LOG_RL_BURST + 5; i++)
        rl_site(i);
    /* A filtered level neither prints nor uses up a burst. */
    for (int i = 0; i < 3 * LOG_RL_BURST; i++)
        log_debug_rl("hidden %d", i);
    fflush(stderr);

    char buf[4096] = "", want[64];
    FILE *f = cr_get_redirected_stderr();
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    int lines = 0;
    for (char *p = buf; (p = strchr(p, '\n')); p++)
        lines++;
    /* Unless the 5 s grid of intervals passed between two calls: then a new burst. */
    if (lines == LOG_RL_BURST) {
        for (int i = 0; i < LOG_RL_BURST; i++) {
            snprintf(want, sizeof(want), "shmnetd: warn: refused %d\n", i);
            cr_assert(strstr(buf, want), "%s missing in:\n%s", want, buf);
        }
    }
    cr_assert_geq(lines, LOG_RL_BURST, "%s", buf);
    cr_assert_not(strstr(buf, "hidden"), "%s", buf);
}

/* What the next interval's first message prints first. */
Test(log_rl, suppressed_line, .init = cr_redirect_stderr)
{
    struct log_ratelimit rl = {.state = 0ull << 32 | 99, .missed = 42};
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (ts.tv_sec < LOG_RL_INTERVAL_MS / 1000 + 1)
        cr_skip_test("the monotonic clock is still in the first interval");
    log_set_level(LOG_LVL_INFO);
    /* Interval 0 is past: the message starts a new one. */
    log_msg_rl(&rl, "accept_cb", LOG_LVL_WARN, "refused uid %u", 7u);
    fflush(stderr);
    cr_assert_stderr_eq_str("shmnetd: warn: accept_cb: 42 messages suppressed\n"
                            "shmnetd: warn: refused uid 7\n");
}
