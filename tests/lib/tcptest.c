#include "tests/lib/tcptest.h"

#include <stdlib.h>
#include <string.h>

static uint32_t snd_len(void *ctx)
{
    struct tbuf *b = ctx;
    return b->snd_tail - b->snd_head;
}

static void snd_copy(void *ctx, uint32_t off, uint32_t len, uint8_t *dst)
{
    struct tbuf *b = ctx;
    for (uint32_t i = 0; i < len; i++)
        dst[i] = b->snd[(b->snd_head + off + i) % b->snd_cap];
}

static void snd_ack(void *ctx, uint32_t n)
{
    struct tbuf *b = ctx;
    b->snd_head += n;
}

static uint32_t rcv_space(void *ctx)
{
    struct tbuf *b = ctx;
    return b->rcv_cap - (b->rcv_tail - b->rcv_head);
}

static void rcv_write_at(void *ctx, uint32_t off, const uint8_t *d, uint32_t len)
{
    struct tbuf *b = ctx;
    for (uint32_t i = 0; i < len; i++)
        b->rcv[(b->rcv_tail + off + i) % b->rcv_cap] = d[i];
}

static void rcv_commit(void *ctx, uint32_t n)
{
    struct tbuf *b = ctx;
    b->rcv_tail += n;
}

const struct tcp_buf_ops tbuf_ops = {snd_len,   snd_copy,     snd_ack,
                                     rcv_space, rcv_write_at, rcv_commit};

void tbuf_init(struct tbuf *b, uint32_t snd_cap, uint32_t rcv_cap)
{
    memset(b, 0, sizeof(*b));
    b->snd = malloc(snd_cap);
    b->rcv = malloc(rcv_cap);
    b->snd_cap = snd_cap;
    b->rcv_cap = rcv_cap;
    b->closed_err = -1;
}

void tbuf_free(struct tbuf *b)
{
    free(b->snd);
    free(b->rcv);
}

uint32_t tbuf_write(struct tbuf *b, const uint8_t *d, uint32_t len)
{
    uint32_t room = b->snd_cap - (b->snd_tail - b->snd_head);
    if (len > room)
        len = room;
    for (uint32_t i = 0; i < len; i++)
        b->snd[(b->snd_tail + i) % b->snd_cap] = d[i];
    b->snd_tail += len;
    return len;
}

uint32_t tbuf_read(struct tbuf *b, uint8_t *d, uint32_t len)
{
    uint32_t avail = b->rcv_tail - b->rcv_head;
    if (len > avail)
        len = avail;
    for (uint32_t i = 0; i < len; i++)
        d[i] = b->rcv[(b->rcv_head + i) % b->rcv_cap];
    b->rcv_head += len;
    return len;
}

void tbuf_event(void *ctx, struct tcp_pcb *pcb, enum tcp_event ev, int err)
{
    struct tbuf *b = ctx;
    if ((unsigned)ev < 8)
        b->events[ev]++;
    if (ev == TCP_EV_CLOSED)
        b->closed_err = err;
}
