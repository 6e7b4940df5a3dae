/* Growable text buffer for control-socket replies. */
#ifndef SHMNET_DAEMON_STRBUF_H
#define SHMNET_DAEMON_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

struct strbuf {
    char *buf; /* NUL-terminated when len > 0 */
    size_t len, cap;
    bool oom; /* an append failed: the reply is truncated */
};

void sb_printf(struct strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sb_append(struct strbuf *sb, const char *s, size_t n);
/* Make room for n more bytes; returns where they go (NULL on OOM). Commit with sb->len += k. */
char *sb_reserve(struct strbuf *sb, size_t n);
void sb_free(struct strbuf *sb);

#endif
