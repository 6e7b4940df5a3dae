/* shmnetd logging: one line per message on stderr.
 *
 * Under systemd (JOURNAL_STREAM names our stderr) lines carry sd-daemon priority prefixes
 * ("<3>" ...) so the journal files them at the right level; otherwise "shmnetd: info: ...".
 * The level lives in an atomic so a reload (control thread) can change it while the worker
 * logs. */
#ifndef SHMNET_DAEMON_LOG_H
#define SHMNET_DAEMON_LOG_H

#include <stdarg.h>

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

#endif
