/* Growable text buffer: see strbuf.h. */
#include "daemon/strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *sb_reserve(struct strbuf *sb, size_t n)
{
    if (sb->oom)
        return NULL;
    if (sb->len + n + 1 > sb->cap) {
        size_t cap = sb->cap ? sb->cap : 256;
        while (cap < sb->len + n + 1)
            cap *= 2;
        char *b = realloc(sb->buf, cap);
        if (!b) {
            sb->oom = true;
            return NULL;
        }
        sb->buf = b;
        sb->cap = cap;
    }
    return sb->buf + sb->len;
}

void sb_append(struct strbuf *sb, const char *s, size_t n)
{
    char *p = sb_reserve(sb, n);

    if (!p)
        return;
    memcpy(p, s, n);
    sb->len += n;
    sb->buf[sb->len] = '\0';
}

void sb_printf(struct strbuf *sb, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    char *p = sb_reserve(sb, (size_t)n);
    if (!p)
        return;
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb->len += (size_t)n;
}

void sb_free(struct strbuf *sb)
{
    free(sb->buf);
    sb->buf = NULL;
    sb->len = sb->cap = 0;
    sb->oom = false;
}
