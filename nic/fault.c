/* Fault injector: seeded, reproducible loss, duplication, corruption, reordering and delay.
 *
 * One instance per NIC; two independent directions (RX, TX), each with its own PRNG
 * stream (xoshiro256** seeded through splitmix64 from params.seed and the direction), so
 * the decisions taken for one direction never depend on the traffic of the other and a
 * run is reproduced exactly by the same seed and the same frame sequence.
 *
 * Per frame, in order: loss (drop), duplicate (copy from the same pool, placed right after
 * the original), corrupt (one bit at byte offset >= ETH_HLEN of the original), reorder
 * (hold the frame; it leaves after the next frame or after 1 ms), delay (FIFO delay queue:
 * release = max(previous release, now + delay + jitter), so jitter never reorders).
 *
 * Frames that do not fit the caller's output array are kept on a ready list and come out
 * first on the next call; nic_fault_next() then returns 0 ("now"). No allocation per
 * frame: the delay ring is allocated once, held frames are linked through pktbuf->next. */
#include <errno.h>
#include <linux/if_ether.h> /* ETH_HLEN */
#include <stdlib.h>
#include <string.h>

#include "nic/nic.h"

#define FAULT_DELAY_SLOTS     4096u      /* power of two */
#define FAULT_REORDER_HOLD_NS 1000000ull /* a held frame leaves after 1 ms at most */

#define FCNT(c, field)                                                                             \
    do {                                                                                           \
        if (c)                                                                                     \
            CNT_INC(c, field);                                                                     \
    } while (0)

struct fault_slot {
    struct pktbuf *pb;
    uint64_t release; /* ns */
};

struct fault_dir {
    uint64_t s[4];           /* xoshiro256** state */
    struct fault_slot *ring; /* delay queue, FAULT_DELAY_SLOTS entries */
    uint32_t head, count;
    uint64_t last_release; /* keeps the delay queue FIFO under jitter */
    struct pktbuf *held;   /* reordered frame waiting for the next one */
    uint64_t held_until;
    struct pktbuf_queue ready; /* due frames that did not fit the caller's array */
};

struct nic_fault {
    struct nic_fault_params p;
    struct fault_dir dir[2]; /* [0] RX, [1] TX */
};

bool nic_fault_on(const struct nic_fault *f, bool tx)
{
    return f && (tx ? f->p.tx : f->p.rx);
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t xoshiro_next(uint64_t s[4])
{
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Uniform in [0, 1). */
static inline double rnd_unit(struct fault_dir *d)
{
    return (double)(xoshiro_next(d->s) >> 11) * 0x1.0p-53;
}

/* Uniform in [0, n) for n > 0 (the modulo bias is irrelevant at these sizes). */
static inline uint64_t rnd_below(struct fault_dir *d, uint64_t n)
{
    return xoshiro_next(d->s) % n;
}

/* A rate of 0 draws nothing, so turning one fault off does not shift the others' stream. */
static inline bool roll(struct fault_dir *d, double rate)
{
    if (rate <= 0.0)
        return false;
    if (rate >= 1.0)
        return true;
    return rnd_unit(d) < rate;
}

struct nic_fault *nic_fault_create(const struct nic_fault_params *p)
{
    struct nic_fault *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->p = *p;
    for (int i = 0; i < 2; i++) {
        struct fault_dir *d = &f->dir[i];
        uint64_t x = p->seed ^ (i ? 0x7458ull : 0x5258ull); /* "TX" / "RX" */
        for (int k = 0; k < 4; k++)
            d->s[k] = splitmix64(&x);
        pktq_init(&d->ready);
        if (p->delay_us || p->jitter_us) {
            d->ring = calloc(FAULT_DELAY_SLOTS, sizeof(*d->ring));
            if (!d->ring) {
                nic_fault_destroy(f);
                return NULL;
            }
        }
    }
    return f;
}

void nic_fault_destroy(struct nic_fault *f)
{
    if (!f)
        return;
    for (int i = 0; i < 2; i++) {
        struct fault_dir *d = &f->dir[i];
        for (uint32_t k = 0; k < d->count; k++)
            pktbuf_free(d->ring[(d->head + k) & (FAULT_DELAY_SLOTS - 1)].pb);
        pktbuf_free(d->held);
        pktq_purge(&d->ready);
        free(d->ring);
    }
    free(f);
}

/* Output state of one nic_fault_apply() call. */
struct fault_out {
    struct pktbuf **out;
    int n, max;
};

static void deliver(struct fault_dir *d, struct fault_out *o, struct pktbuf *pb)
{
    if (o->n < o->max)
        o->out[o->n++] = pb;
    else
        pktq_push(&d->ready, pb);
}

/* The delayed frames that are due, in FIFO order. */
static void deliver_due(struct fault_dir *d, struct fault_out *o, uint64_t now)
{
    while (d->count && d->ring[d->head].release <= now) {
        struct fault_slot *s = &d->ring[d->head];
        d->head = (d->head + 1) & (FAULT_DELAY_SLOTS - 1);
        d->count--;
        deliver(d, o, s->pb);
        s->pb = NULL;
    }
}

/* Last stage: the delay queue (or straight out when there is no delay). */
static void stage_delay(struct nic_fault *f, struct fault_dir *d, struct fault_out *o,
                        struct pktbuf *pb, uint64_t now, struct stack_counters *cnt)
{
    if (!d->ring) {
        deliver(d, o, pb);
        return;
    }
    if (d->count == FAULT_DELAY_SLOTS) {
        pktbuf_free(pb);
        FCNT(cnt, fault_drop_queue_full);
        return;
    }
    uint64_t rel = now + (uint64_t)f->p.delay_us * 1000u;
    if (f->p.jitter_us)
        rel += rnd_below(d, (uint64_t)f->p.jitter_us * 1000u + 1);
    if (rel < d->last_release)
        rel = d->last_release; /* FIFO: jitter alone never reorders */
    d->last_release = rel;
    struct fault_slot *s = &d->ring[(d->head + d->count) & (FAULT_DELAY_SLOTS - 1)];
    s->pb = pb;
    s->release = rel;
    d->count++;
    FCNT(cnt, fault_delay);
}

/* Reorder stage: a frame picked for reordering waits until the next frame has passed. */
static void stage_reorder(struct nic_fault *f, struct fault_dir *d, struct fault_out *o,
                          struct pktbuf *pb, uint64_t now, struct stack_counters *cnt)
{
    if (!d->held && roll(d, f->p.reorder)) {
        d->held = pb;
        d->held_until = now + FAULT_REORDER_HOLD_NS;
        FCNT(cnt, fault_reorder);
        return;
    }
    stage_delay(f, d, o, pb, now, cnt);
    if (d->held) {
        struct pktbuf *h = d->held;
        d->held = NULL;
        stage_delay(f, d, o, h, now, cnt);
    }
}

static struct pktbuf *dup_frame(struct pktbuf *pb)
{
    struct pktbuf *c = pktbuf_alloc(pb->pool);
    if (!c)
        return NULL;
    c->off = pb->off;
    c->len = pb->len;
    c->ifindex = pb->ifindex;
    c->vlan = pb->vlan;
    c->l3off = pb->l3off;
    c->ts = pb->ts;
    memcpy(pktbuf_data(c), pktbuf_data(pb), pb->len);
    return c;
}

int nic_fault_apply(struct nic_fault *f, bool tx, struct pktbuf **in, int n, struct pktbuf **out,
                    int max, uint64_t now, struct stack_counters *cnt)
{
    struct fault_dir *d = &f->dir[tx ? 1 : 0];
    struct fault_out o = {.out = out, .n = 0, .max = max < 0 ? 0 : max};
    bool on = tx ? f->p.tx : f->p.rx;

    /* 1. What was due earlier and did not fit, oldest first. */
    while (o.n < o.max && d->ready.head)
        o.out[o.n++] = pktq_pop(&d->ready);
    /* 2. A held (reordered) frame whose 1 ms is up goes through the delay stage now. */
    if (d->held && now >= d->held_until) {
        struct pktbuf *h = d->held;
        d->held = NULL;
        stage_delay(f, d, &o, h, now, cnt);
    }
    /* 3. Delayed frames that are due, in FIFO order. */
    deliver_due(d, &o, now);
    /* 4. The new frames. */
    for (int i = 0; i < n; i++) {
        struct pktbuf *pb = in[i];
        if (!on) {
            deliver(d, &o, pb);
            continue;
        }
        if (roll(d, f->p.loss)) {
            pktbuf_free(pb);
            FCNT(cnt, fault_drop_loss);
            continue;
        }
        struct pktbuf *dup = NULL;
        if (roll(d, f->p.duplicate)) {
            dup = dup_frame(pb); /* pool empty: no duplicate, the original still goes */
            if (dup)
                FCNT(cnt, fault_dup);
        }
        if (pb->len > ETH_HLEN && roll(d, f->p.corrupt)) {
            uint32_t off = ETH_HLEN + (uint32_t)rnd_below(d, pb->len - ETH_HLEN);
            pktbuf_data(pb)[off] ^= (uint8_t)(1u << rnd_below(d, 8));
            FCNT(cnt, fault_corrupt);
        }
        stage_reorder(f, d, &o, pb, now, cnt);
        if (dup)
            stage_reorder(f, d, &o, dup, now, cnt);
    }
    /* 5. With a zero delay, frames just queued may already be due. */
    deliver_due(d, &o, now);
    return o.n;
}

uint64_t nic_fault_next(const struct nic_fault *f)
{
    uint64_t next = UINT64_MAX;
    for (int i = 0; i < 2; i++) {
        const struct fault_dir *d = &f->dir[i];
        if (d->ready.head)
            return 0;
        if (d->held && d->held_until < next)
            next = d->held_until;
        if (d->count && d->ring[d->head].release < next)
            next = d->ring[d->head].release;
    }
    return next;
}
