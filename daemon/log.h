/* shmnetd logging: one line per message on stderr.
 *
 * Under systemd (JOURNAL_STREAM names our stderr) lines carry sd-daemon priority prefixes
 * ("<3>" ...) so the journal files them at the right level; otherwise "shmnetd: info: ...".
 * The level lives in an atomic so a reload (control thread) can change it while the worker
 * logs. */
#ifndef SHMNET_DAEMON_LOG_H
#define SHMNET_DAEMON_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include "conf/conf.h"

/* Decide the output format (reads JOURNAL_STREAM); call once at start. */
void log_init(void);
void log_set_level(enum log_level l);
enum log_level log_get_level(void);

void log_msg(enum log_level l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vmsg(enum log_level l, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)

/* Rate limiting per call site, like the kernel's printk_ratelimit: at most LOG_RL_BURST
 * messages per LOG_RL_INTERVAL_MS from one site; the next one that gets through is preceded
 * by "SITE: N messages suppressed". For messages a peer can trigger at will (refused
 * connections), so it cannot fill the disk. Lock-free: the control thread and the workers
 * may log from the same site. */
#define LOG_RL_BURST       10
#define LOG_RL_INTERVAL_MS 5000

struct log_ratelimit {
    uint64_t state;  /* atomic: interval number << 32 | messages counted in it */
    uint64_t missed; /* atomic: suppressed and not yet reported */
};

/* Count one message at now_ns (CLOCK_MONOTONIC). true: it may go out, and *missed is the
 * number suppressed before it (0 most of the time); false: it is suppressed. */
bool log_ratelimit(struct log_ratelimit *rl, unsigned burst, uint64_t interval_ns, uint64_t now_ns,
                   uint64_t *missed);
void log_msg_rl(struct log_ratelimit *rl, const char *site, enum log_level l, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define log_rl(l, ...)                                                                             \
    do {                                                                                           \
        static struct log_ratelimit log_rl_site_;                                                  \
        log_msg_rl(&log_rl_site_, __func__, l, __VA_ARGS__);                                       \
    } while (0)
#define log_error_rl(...) log_rl(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn_rl(...)  log_rl(LOG_LVL_WARN, __VA_ARGS__)
#define log_info_rl(...)  log_rl(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug_rl(...) log_rl(LOG_LVL_DEBUG, __VA_ARGS__)

#endif
