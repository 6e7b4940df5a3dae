/* pktbuf: the packet buffer (Linux's sk_buff, reduced).
 *
 * Buffers come from a per-worker pool allocated once at start: no malloc per packet.
 * Data starts PKTBUF_HEADROOM bytes into the buffer so every header on the way out
 * (Ethernet + VLAN + IPv4 + options + TCP/UDP) is prepended by moving a pointer. */
#ifndef SHMNET_PKTBUF_H
#define SHMNET_PKTBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/list.h"

#define PKTBUF_HEADROOM 128u

struct pktbuf_pool;

/* Why another worker handed a buffer over (pktbuf.steered); a buffer is never handed
 * over twice. */
enum pktbuf_steer {
    PKTBUF_NOT_STEERED = 0, /* received on this worker's queue */
    PKTBUF_STEER_DELIVER,   /* an IPv4 datagram for local delivery (its port is ours) */
    PKTBUF_STEER_ARP,       /* an ARP packet to learn from (answered where it came in) */
    PKTBUF_STEER_FRAG,      /* an IPv4 fragment, reassembled by the worker of its flow */
};

struct pktbuf {
    struct pktbuf *next;      /* queue link: TX batch, ARP wait queue, free list */
    struct pktbuf_pool *pool; /* owner, for pktbuf_free */
    uint8_t *buf;             /* start of the buffer (cap bytes) */
    uint32_t cap;
    uint32_t off;      /* data starts at buf + off */
    uint32_t len;      /* bytes of data */
    uint16_t ifindex;  /* interface it came in on / goes out of */
    uint16_t vlan;     /* 802.1Q VID seen on input, 0 if untagged */
    uint32_t l3off;    /* offset of the network header from buf (set by eth_input) */
    uint64_t ts;       /* RX time in ns (pcap), 0 if unknown */
    uint16_t gso_size; /* TX: a TCP super-segment the NIC cuts into segments of this size */
    bool csum_ok;      /* RX: the NIC vouches for the L4 checksum (or it is still partial) */
    uint8_t steered;   /* enum pktbuf_steer: handed over by another worker, and why */
};

struct pktbuf_pool {
    struct pktbuf *free;
    struct pktbuf *hdrs;
    uint8_t *mem;
    uint32_t count;
    uint32_t nfree;
    uint32_t bufsize;
    uint64_t alloc_fail; /* counted drop reason: pool empty */
    /* Several workers (daemon.workers > 1): a buffer steered to another worker is freed
     * there. A pool with an owner token takes frees from other threads on `remote` (a
     * lock-free stack: pushes CAS, only the owner takes the whole list with an exchange,
     * so there is no ABA); the owner splices it in when its own list runs dry. */
    uint32_t owner;        /* pktbuf_thread_token of the owning thread; 0: one thread */
    struct pktbuf *remote; /* atomic: freed by other threads */
    uint32_t remote_frees; /* atomic counter, for tests and stats */
};

/* The calling thread's token (workers set their id + 1; 0 elsewhere). */
extern __thread uint32_t pktbuf_thread_token;

/* Allocate count buffers of bufsize bytes each. Returns 0 or -errno. */
int pktbuf_pool_init(struct pktbuf_pool *p, uint32_t count, uint32_t bufsize);
void pktbuf_pool_destroy(struct pktbuf_pool *p);

/* A fresh buffer with len 0 and PKTBUF_HEADROOM of headroom, or NULL when empty. */
struct pktbuf *pktbuf_alloc(struct pktbuf_pool *p);
void pktbuf_free(struct pktbuf *pb);
/* Free a whole ->next chain. */
void pktbuf_free_chain(struct pktbuf *pb);

static inline uint8_t *pktbuf_data(const struct pktbuf *pb)
{
    return pb->buf + pb->off;
}
static inline uint32_t pktbuf_headroom(const struct pktbuf *pb)
{
    return pb->off;
}
static inline uint32_t pktbuf_tailroom(const struct pktbuf *pb)
{
    return pb->cap - pb->off - pb->len;
}

/* Prepend n bytes; returns the new start or NULL when headroom is short. */
static inline uint8_t *pktbuf_push(struct pktbuf *pb, uint32_t n)
{
    if (n > pb->off)
        return NULL;
    pb->off -= n;
    pb->len += n;
    return pb->buf + pb->off;
}

/* Strip n bytes from the front; returns the new start or NULL when len < n. */
static inline uint8_t *pktbuf_pull(struct pktbuf *pb, uint32_t n)
{
    if (n > pb->len)
        return NULL;
    pb->off += n;
    pb->len -= n;
    return pb->buf + pb->off;
}

/* Append n bytes at the tail; returns where they go or NULL when tailroom is short. */
static inline uint8_t *pktbuf_put(struct pktbuf *pb, uint32_t n)
{
    if (n > pktbuf_tailroom(pb))
        return NULL;
    uint8_t *t = pb->buf + pb->off + pb->len;
    pb->len += n;
    return t;
}

/* Cut the data to len bytes (no-op if already shorter). */
static inline void pktbuf_trim(struct pktbuf *pb, uint32_t len)
{
    if (len < pb->len)
        pb->len = len;
}

/* Reset to an empty buffer with headroom (for reuse without a free/alloc pair). */
static inline void pktbuf_reset(struct pktbuf *pb)
{
    pb->off = PKTBUF_HEADROOM;
    pb->len = 0;
    pb->ifindex = 0;
    pb->vlan = 0;
    pb->l3off = 0;
    pb->ts = 0;
    pb->gso_size = 0;
    pb->csum_ok = false;
    pb->steered = PKTBUF_NOT_STEERED;
}

/* Simple FIFO of pktbufs linked through ->next. */
struct pktbuf_queue {
    struct pktbuf *head, *tail;
    uint32_t len;
};

static inline void pktq_init(struct pktbuf_queue *q)
{
    q->head = q->tail = NULL;
    q->len = 0;
}

static inline void pktq_push(struct pktbuf_queue *q, struct pktbuf *pb)
{
    FIFO_APPEND(q->head, q->tail, pb, next);
    q->len++;
}

static inline struct pktbuf *pktq_pop(struct pktbuf_queue *q)
{
    struct pktbuf *pb = q->head;
    if (pb) {
        q->head = pb->next;
        if (!q->head)
            q->tail = NULL;
        q->len--;
        pb->next = NULL;
    }
    return pb;
}

static inline void pktq_purge(struct pktbuf_queue *q)
{
    pktbuf_free_chain(q->head);
    pktq_init(q);
}

#endif
