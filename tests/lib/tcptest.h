/* In-memory byte buffers behind the TCP buffer ops, for unit tests. */
#ifndef SHMNET_TCPTEST_H
#define SHMNET_TCPTEST_H

#include "stack/tcp.h"

struct tbuf {
    uint8_t *snd;
    uint32_t snd_cap, snd_head, snd_tail; /* head = snd_una position */
    uint8_t *rcv;
    uint32_t rcv_cap, rcv_head, rcv_tail; /* tail = committed end */
    int events[8];
    int closed_err;
    struct tcp_pcb *accepted;
};

extern const struct tcp_buf_ops tbuf_ops;
void tbuf_init(struct tbuf *b, uint32_t snd_cap, uint32_t rcv_cap);
void tbuf_free(struct tbuf *b);
/* Queue up to len bytes for sending; returns how many fit. */
uint32_t tbuf_write(struct tbuf *b, const uint8_t *d, uint32_t len);
/* Read up to len received bytes. */
uint32_t tbuf_read(struct tbuf *b, uint8_t *d, uint32_t len);
void tbuf_event(void *ctx, struct tcp_pcb *pcb, enum tcp_event ev, int err);

#endif
