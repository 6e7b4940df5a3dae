/* ARP (RFC 826) with a neighbour cache: states, timeouts, retries, a bounded wait queue per
 * unresolved neighbour, gratuitous announcements (RFC 5227 2.3) and probe defence. */
#include "stack/stack_impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

enum arp_state { ARP_FREE = 0, ARP_INCOMPLETE, ARP_REACHABLE, ARP_STALE };

struct arp_entry {
    struct arp_entry *hnext;
    uint32_t ip;
    int ifidx;
    uint8_t mac[6];
    uint8_t state;
    uint8_t tries;
    uint64_t confirmed;    /* ns of the last reply/update */
    struct timer tmr;      /* retry (INCOMPLETE), ->STALE (REACHABLE), expire (STALE) */
    struct pktbuf_queue q; /* packets waiting for resolution */
};

struct arp_cache {
    struct arp_entry *e;
    struct arp_entry **hash;
    uint32_t size, hmask, used;
};

static const uint8_t bcast_mac[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
static const uint8_t zero_mac[6];

static uint32_t arp_hash(const struct arp_cache *c, uint32_t ip)
{
    return (ip * 2654435761u) >> 7 & c->hmask;
}

static void arp_timer_fn(struct timer *t, void *ctx, uint64_t now);

int arp_init(struct stack *st)
{
    struct arp_cache *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->size = st->par.arp_cache_size ? st->par.arp_cache_size : 1024;
    uint32_t hs = 16;
    while (hs < c->size * 2)
        hs <<= 1;
    c->hmask = hs - 1;
    c->e = calloc(c->size, sizeof(*c->e));
    c->hash = calloc(hs, sizeof(*c->hash));
    if (!c->e || !c->hash) {
        free(c->e);
        free(c->hash);
        free(c);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < c->size; i++) {
        timer_init(&c->e[i].tmr, arp_timer_fn);
        pktq_init(&c->e[i].q);
    }
    st->arp = c;
    return 0;
}

void arp_destroy(struct stack *st)
{
    struct arp_cache *c = st->arp;
    if (!c)
        return;
    for (uint32_t i = 0; i < c->size; i++) {
        pktq_purge(&c->e[i].q);
        timer_cancel(&st->tw, &c->e[i].tmr);
    }
    free(c->e);
    free(c->hash);
    free(c);
    st->arp = NULL;
}

static struct arp_entry *arp_find(struct arp_cache *c, uint32_t ip)
{
    for (struct arp_entry *e = c->hash[arp_hash(c, ip)]; e; e = e->hnext)
        if (e->ip == ip)
            return e;
    return NULL;
}

static void arp_remove(struct stack *st, struct arp_entry *e)
{
    struct arp_cache *c = st->arp;
    struct arp_entry **pp = &c->hash[arp_hash(c, e->ip)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    e->hnext = NULL;
    timer_cancel(&st->tw, &e->tmr);
    if (e->q.len)
        CNT_ADD(&st->cnt, arp_drop_unresolved, e->q.len);
    pktq_purge(&e->q);
    e->state = ARP_FREE;
    c->used--;
}

/* A free entry, or the least recently confirmed resolved one (never one with waiters). */
static struct arp_entry *arp_alloc(struct stack *st, uint32_t ip, int ifidx)
{
    struct arp_cache *c = st->arp;
    struct arp_entry *e = NULL, *victim = NULL;
    for (uint32_t i = 0; i < c->size && !e; i++) {
        struct arp_entry *x = &c->e[i];
        if (x->state == ARP_FREE)
            e = x;
        else if (x->state != ARP_INCOMPLETE && (!victim || x->confirmed < victim->confirmed))
            victim = x;
    }
    if (!e) {
        if (!victim) {
            CNT_INC(&st->cnt, arp_drop_cache_full);
            return NULL;
        }
        arp_remove(st, victim);
        e = victim;
    }
    e->ip = ip;
    e->ifidx = ifidx;
    e->tries = 0;
    e->confirmed = 0;
    memset(e->mac, 0, 6);
    uint32_t h = arp_hash(c, ip);
    e->hnext = c->hash[h];
    c->hash[h] = e;
    c->used++;
    return e;
}

static void arp_send(struct stack *st, int ifidx, uint16_t op, const uint8_t *eth_dst,
                     const uint8_t *tha, uint32_t tpa, uint32_t spa)
{
    struct pktbuf *pb = pktbuf_alloc(&st->pool);
    if (!pb) {
        CNT_INC(&st->cnt, ip4_drop_nobuf);
        return;
    }
    arp_write(pktbuf_put(pb, ARP_LEN), op, st->ifs[ifidx].p.mac, spa, tha, tpa);
    eth_output(st, ifidx, pb, eth_dst, ETHERTYPE_ARP);
}

static void arp_request(struct stack *st, struct arp_entry *e, bool unicast)
{
    arp_send(st, e->ifidx, ARP_OP_REQUEST, unicast ? e->mac : bcast_mac, zero_mac, e->ip,
             st->ifs[e->ifidx].p.addr);
    CNT_INC(&st->cnt, arp_tx_request);
}

void arp_announce(struct stack *st, int ifidx)
{
    uint32_t a = st->ifs[ifidx].p.addr;
    /* Gratuitous request: sender = target = our address (RFC 5227 2.3). */
    arp_send(st, ifidx, ARP_OP_REQUEST, bcast_mac, zero_mac, a, a);
    CNT_INC(&st->cnt, arp_tx_gratuitous);
}

static void arp_flush_queue(struct stack *st, struct arp_entry *e)
{
    struct pktbuf *pb;
    while ((pb = pktq_pop(&e->q)))
        eth_output(st, e->ifidx, pb, e->mac, ETHERTYPE_IPV4);
}

static void arp_confirm(struct stack *st, struct arp_entry *e, const uint8_t *mac)
{
    bool was_incomplete = e->state == ARP_INCOMPLETE;
    memcpy(e->mac, mac, 6);
    e->state = ARP_REACHABLE;
    e->tries = 0;
    e->confirmed = st->now;
    timer_arm(&st->tw, &e->tmr, st->now + st->par.arp_reachable_ms * NS_PER_MS);
    if (was_incomplete)
        CNT_INC(&st->cnt, arp_resolved);
    arp_flush_queue(st, e);
}

static void arp_timer_fn(struct timer *t, void *ctx, uint64_t now)
{
    struct stack *st = ctx;
    struct arp_entry *e = container_of(t, struct arp_entry, tmr);
    switch (e->state) {
    case ARP_INCOMPLETE:
        if (e->tries >= st->par.arp_retries) {
            arp_remove(st, e); /* counts the waiting packets as unresolved drops */
            return;
        }
        e->tries++;
        arp_request(st, e, false);
        timer_arm(&st->tw, t, now + st->par.arp_retry_ms * NS_PER_MS);
        break;
    case ARP_REACHABLE:
        e->state = ARP_STALE;
        timer_arm(&st->tw, t, now + st->par.arp_stale_ms * NS_PER_MS);
        break;
    default:
        arp_remove(st, e);
        break;
    }
}

void arp_output(struct stack *st, int ifidx, uint32_t nexthop, struct pktbuf *pb)
{
    if (ip4_is_bcast(st, nexthop)) {
        eth_output(st, ifidx, pb, bcast_mac, ETHERTYPE_IPV4);
        return;
    }
    struct arp_entry *e = arp_find(st->arp, nexthop);
    if (e && e->state != ARP_INCOMPLETE) {
        if (e->state == ARP_STALE && e->tries == 0) {
            /* Still usable; confirm with a unicast probe (RFC 1122 2.3.2.1). */
            e->tries = 1;
            arp_request(st, e, true);
        }
        eth_output(st, e->ifidx, pb, e->mac, ETHERTYPE_IPV4);
        return;
    }
    if (!e) {
        e = arp_alloc(st, nexthop, ifidx);
        if (!e) {
            pktbuf_free(pb);
            return;
        }
        e->state = ARP_INCOMPLETE;
        arp_request(st, e, false);
        timer_arm(&st->tw, &e->tmr, st->now + st->par.arp_retry_ms * NS_PER_MS);
    }
    if (e->q.len >= st->par.arp_queue_len) {
        CNT_INC(&st->cnt, arp_drop_queue_full);
        pktbuf_free(pb);
        return;
    }
    CNT_INC(&st->cnt, arp_queued);
    pktq_push(&e->q, pb);
}

void arp_input(struct stack *st, int ifidx, struct pktbuf *pb)
{
    struct stack_if *ifp = &st->ifs[ifidx];
    struct arp_view a;
    /* Other workers learn from it too (they answer nothing: PKTBUF_STEER_ARP). */
    if (st->arp_fanout && !pb->steered)
        st->arp_fanout(st, ifidx, pb);
    int rc = arp_parse(pktbuf_data(pb), pb->len, &a);
    if (rc) {
        if (rc == -EBADMSG)
            CNT_INC(&st->cnt, arp_drop_short);
        else
            CNT_INC(&st->cnt, arp_drop_format);
        goto out;
    }
    if (a.op != ARP_OP_REQUEST && a.op != ARP_OP_REPLY) {
        CNT_INC(&st->cnt, arp_drop_format);
        goto out;
    }
    if (a.op == ARP_OP_REQUEST)
        CNT_INC(&st->cnt, arp_rx_request);
    else
        CNT_INC(&st->cnt, arp_rx_reply);
    if (eth_is_mcast(a.sha) || memcmp(a.sha, ifp->p.mac, 6) == 0) {
        CNT_INC(&st->cnt, arp_drop_bad_sender);
        goto out;
    }
    bool for_us = a.tpa == ifp->p.addr;
    /* RFC 5227 probe (sender 0.0.0.0) for our address: defend it, learn nothing. */
    if (a.spa == 0) {
        if (a.op == ARP_OP_REQUEST && for_us && !pb->steered) {
            arp_send(st, ifidx, ARP_OP_REPLY, a.sha, a.sha, 0, ifp->p.addr);
            CNT_INC(&st->cnt, arp_tx_reply);
        } else {
            CNT_INC(&st->cnt, arp_drop_not_for_us);
        }
        goto out;
    }
    if ((a.spa & ifp->mask) != (ifp->p.addr & ifp->mask) || a.spa == ifp->bcast) {
        CNT_INC(&st->cnt, arp_drop_wrong_subnet);
        goto out;
    }
    if (a.spa == ifp->p.addr) { /* someone else claims our address */
        CNT_INC(&st->cnt, arp_drop_bad_sender);
        goto out;
    }
    /* RFC 826 merge: update an entry we have; create one only if the packet is for us. */
    struct arp_entry *e = arp_find(st->arp, a.spa);
    if (e && e->ifidx == ifidx)
        arp_confirm(st, e, a.sha);
    else if (for_us && !e && (e = arp_alloc(st, a.spa, ifidx)))
        arp_confirm(st, e, a.sha);
    if (!for_us) {
        if (a.spa != a.tpa) /* gratuitous announcements are not "not for us" */
            CNT_INC(&st->cnt, arp_drop_not_for_us);
        goto out;
    }
    if (a.op == ARP_OP_REQUEST && !pb->steered) { /* the receiving worker answers */
        /* Reuse the request's buffer for the reply: no allocation. a.sha points into it,
         * so copy the peer's address out before overwriting. */
        uint8_t dst[6];
        memcpy(dst, a.sha, 6);
        pktbuf_trim(pb, 0);
        arp_write(pktbuf_put(pb, ARP_LEN), ARP_OP_REPLY, ifp->p.mac, ifp->p.addr, dst, a.spa);
        CNT_INC(&st->cnt, arp_tx_reply);
        eth_output(st, ifidx, pb, dst, ETHERTYPE_ARP);
        return;
    }
out:
    pktbuf_free(pb);
}

size_t arp_report(struct stack *st, char *buf, size_t cap)
{
    static const char *const names[] = {"FREE", "INCOMPLETE", "REACHABLE", "STALE"};
    struct arp_cache *c = st->arp;
    size_t n = 0;
    char ip[16], mac[18];
    for (uint32_t i = 0; i < c->size && n < cap; i++) {
        struct arp_entry *e = &c->e[i];
        if (e->state == ARP_FREE)
            continue;
        uint64_t age = e->confirmed ? (st->now - e->confirmed) / NS_PER_MS : 0;
        int w = snprintf(buf + n, cap - n, "%s dev %s lladdr %s %s age %llums queued %u\n",
                         ip4_fmt(e->ip, ip), st->ifs[e->ifidx].p.name,
                         e->state == ARP_INCOMPLETE ? "(none)" : mac_fmt(e->mac, mac),
                         names[e->state], (unsigned long long)age, e->q.len);
        if (w < 0)
            break;
        n += (size_t)w;
    }
    return n < cap ? n : cap;
}
