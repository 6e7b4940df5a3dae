/* Ring and fifo operations on the shared-memory contract (shm.h), used by both sides.
 *
 * Each side keeps its own indices privately and only publishes them into shared memory;
 * it reads the other side's index once per operation. The daemon validates every index it
 * reads from a client (shm_*_checked return -EFAULT on nonsense) and never reads its own
 * published indices back. */
#ifndef SHMNET_SHM_RING_H
#define SHMNET_SHM_RING_H

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "shm/shm.h"

/* Acquire load of the other side's index: orders the entry/byte reads that follow after
 * the producer's writes that preceded its release store. */
static inline uint32_t shm_load_acq(const uint32_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
/* Release store of our index: publishes the entry/byte writes (producer) or hands the
 * space back only after our reads of it are done (consumer). */
static inline void shm_store_rel(uint32_t *p, uint32_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

/* ---- request ring: client produces, daemon consumes ---- */

/* Client: queue one request. Returns 0, or -EAGAIN when the ring is full. */
static inline int shm_req_push(struct shm_channel *ch, uint32_t *tail, const struct shm_req *r)
{
    uint32_t head = shm_load_acq(&ch->req_head);
    if (*tail - head >= SHM_RING_SIZE)
        return -EAGAIN;
    ch->req[*tail % SHM_RING_SIZE] = *r;
    shm_store_rel(&ch->req_tail, ++*tail);
    return 0;
}

/* Daemon: take one request into *out (a private copy, so the client cannot change it
 * while it is being handled). Returns 1, 0 if empty, or -EFAULT if the client's tail is
 * impossible. `head` is the daemon's private consumer index. */
static inline int shm_req_pop_checked(struct shm_channel *ch, uint32_t *head, struct shm_req *out)
{
    uint32_t tail = shm_load_acq(&ch->req_tail);
    uint32_t used = tail - *head;
    if (used == 0)
        return 0;
    if (used > SHM_RING_SIZE)
        return -EFAULT;
    memcpy(out, &ch->req[*head % SHM_RING_SIZE], sizeof(*out));
    shm_store_rel(&ch->req_head, ++*head);
    return 1;
}

/* ---- completion ring: daemon produces, client consumes ---- */

/* Daemon: publish one completion. Returns 0, -EAGAIN when full (the client is not
 * consuming), or -EFAULT when the client's head is impossible. */
static inline int shm_cpl_push_checked(struct shm_channel *ch, uint32_t *tail,
                                       const struct shm_cpl *c)
{
    uint32_t head = shm_load_acq(&ch->cpl_head);
    uint32_t used = *tail - head;
    if (used > SHM_RING_SIZE)
        return -EFAULT;
    if (used == SHM_RING_SIZE)
        return -EAGAIN;
    ch->cpl[*tail % SHM_RING_SIZE] = *c;
    shm_store_rel(&ch->cpl_tail, ++*tail);
    return 0;
}

/* Client: take one completion. Returns 1 or 0 if none. */
static inline int shm_cpl_pop(struct shm_channel *ch, uint32_t *head, struct shm_cpl *out)
{
    uint32_t tail = shm_load_acq(&ch->cpl_tail);
    if (tail == *head)
        return 0;
    *out = ch->cpl[*head % SHM_RING_SIZE];
    shm_store_rel(&ch->cpl_head, ++*head);
    return 1;
}

/* ---- byte fifos ---- */

/* Copy len bytes into a ring of size bytes at logical position pos (wrapping). */
static inline void shm_fifo_put(uint8_t *base, uint32_t size, uint32_t pos, const void *src,
                                uint32_t len)
{
    uint32_t off = pos % size, first = size - off < len ? size - off : len;
    memcpy(base + off, src, first);
    memcpy(base, (const uint8_t *)src + first, len - first);
}

static inline void shm_fifo_get(const uint8_t *base, uint32_t size, uint32_t pos, void *dst,
                                uint32_t len)
{
    uint32_t off = pos % size, first = size - off < len ? size - off : len;
    memcpy(dst, base + off, first);
    memcpy((uint8_t *)dst + first, base, len - first);
}

/* Datagram records (see shm.h): bytes a record of len needs at producer position pos,
 * including a wrap marker when it would cross the end. */
static inline uint32_t shm_dgram_need(uint32_t size, uint32_t pos, uint32_t len)
{
    uint32_t rec = shm_dgram_space(len), room = size - pos % size;
    return rec <= room ? rec : room + rec;
}

/* Producer: write one datagram record at *tail if it fits in a fifo whose consumer is at
 * head. Returns 0 or -ENOBUFS. The caller publishes *tail with shm_store_rel. */
static inline int shm_dgram_write(uint8_t *base, uint32_t size, uint32_t *tail, uint32_t head,
                                  const struct shm_dgram *h, const void *payload,
                                  const void *payload2, uint32_t len2)
{
    uint32_t need = shm_dgram_need(size, *tail, h->len);
    if (need > size - (*tail - head))
        return -ENOBUFS;
    uint32_t room = size - *tail % size;
    if (shm_dgram_space(h->len) > room) {
        if (room >= sizeof(struct shm_dgram)) {
            struct shm_dgram w = {.len = SHM_DGRAM_WRAP};
            memcpy(base + *tail % size, &w, sizeof(w));
        }
        *tail += room; /* records start 8-aligned and sizes are 8-aligned: room >= 8 */
    }
    uint8_t *p = base + *tail % size;
    memcpy(p, h, sizeof(*h));
    uint32_t len1 = h->len - len2;
    memcpy(p + sizeof(*h), payload, len1);
    if (len2)
        memcpy(p + sizeof(*h) + len1, payload2, len2);
    *tail += shm_dgram_space(h->len);
    return 0;
}

/* Consumer: look at the next datagram record between head and tail (both logical).
 * Returns the payload length (>= 0) and fills *h, *payload_pos (logical position of the
 * payload, which never wraps) and *next (head after the record); -EAGAIN when empty;
 * -EFAULT when the producer wrote something impossible (a hostile or broken client). */
static inline int shm_dgram_peek(const uint8_t *base, uint32_t size, uint32_t head, uint32_t tail,
                                 struct shm_dgram *h, uint32_t *payload_pos, uint32_t *next)
{
    uint32_t used = tail - head;
    if (used == 0)
        return -EAGAIN;
    if (used > size || (head & 7) || (used & 7))
        return -EFAULT;
    uint32_t room = size - head % size;
    if (room < sizeof(*h)) { /* implicit wrap: no room for even a header */
        if (used <= room)
            return -EFAULT;
        head += room;
        used -= room;
        room = size;
    }
    memcpy(h, base + head % size, sizeof(*h));
    if (h->len == SHM_DGRAM_WRAP) {
        if (used <= room)
            return -EFAULT;
        head += room;
        used -= room;
        room = size;
        if (used < sizeof(*h))
            return -EFAULT;
        memcpy(h, base, sizeof(*h));
    }
    if (h->len > SHM_DGRAM_MAX)
        return -EFAULT;
    uint32_t sp = shm_dgram_space(h->len);
    if (sp > used || sp > room)
        return -EFAULT;
    *payload_pos = head + sizeof(*h);
    *next = head + sp;
    return (int)h->len;
}

#endif
