/* IPv4 reassembly (RFC 791 3.2, RFC 815 holes) with bounded memory.
 *
 * Each datagram being reassembled owns one large pktbuf; its pieces are copied to their
 * offset and tracked as sorted [start,end) ranges. Limits: frag_max_datagrams at once,
 * frag_max_bytes in all, FRAG_MAX_PIECES per datagram, 65535 bytes per datagram, and a
 * timeout. Overlaps drop the whole datagram (as Linux does since FragmentSmack, RFC 5722
 * for IPv6); exact duplicates drop only the copy. When a limit is hit, the oldest datagram
 * is evicted, so a flood of never-completed fragments cannot starve real traffic for long. */
#include "core/list.h"
#include "stack/stack_impl.h"

#include <errno.h>
#include <stdlib.h>

#define FRAG_MAX_PIECES 64
#define FRAG_HASH       256

struct frag_piece {
    uint32_t start, end;
};

struct frag_dgram {
    struct frag_dgram *hnext;
    struct frag_dgram *onext, *oprev; /* age order, oldest first */
    uint32_t src, dst;
    uint16_t id;
    uint8_t proto;
    bool have_first, have_last;
    uint32_t total;     /* payload length, known once the last piece came */
    uint32_t bytes;     /* payload bytes held */
    uint32_t hlen;      /* header length of the first fragment */
    struct pktbuf *buf; /* data at PKTBUF_HEADROOM: room for IP header + 64 KiB */
    struct frag_piece pieces[FRAG_MAX_PIECES];
    uint32_t npieces;
    struct timer tmr;
    uint64_t created;
};

struct ip4_frag_table {
    struct frag_dgram *hash[FRAG_HASH];
    struct frag_dgram *oldest, *newest;
    struct frag_dgram *freelist;
    struct frag_dgram *slab;
    uint32_t count, bytes;
};

static void frag_timer_fn(struct timer *t, void *ctx, uint64_t now);

int ip4_frag_init(struct stack *st)
{
    struct ip4_frag_table *ft = calloc(1, sizeof(*ft));
    uint32_t n = st->par.frag_max_datagrams ? st->par.frag_max_datagrams : 1;
    if (!ft)
        return -ENOMEM;
    ft->slab = calloc(n, sizeof(*ft->slab));
    if (!ft->slab) {
        free(ft);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < n; i++) {
        timer_init(&ft->slab[i].tmr, frag_timer_fn);
        ft->slab[i].hnext = ft->freelist;
        ft->freelist = &ft->slab[i];
    }
    st->frag = ft;
    return 0;
}

static uint32_t frag_hash(uint32_t src, uint32_t dst, uint16_t id, uint8_t proto)
{
    uint32_t h = src * 0x9e3779b1u ^ dst * 0x85ebca6bu ^ ((uint32_t)id << 8 | proto) * 0xc2b2ae35u;
    return (h >> 16 ^ h) & (FRAG_HASH - 1);
}

static void frag_release(struct stack *st, struct frag_dgram *d, bool free_buf)
{
    struct ip4_frag_table *ft = st->frag;
    struct frag_dgram **pp = &ft->hash[frag_hash(d->src, d->dst, d->id, d->proto)];
    while (*pp != d)
        pp = &(*pp)->hnext;
    *pp = d->hnext;
    if (d->oprev)
        d->oprev->onext = d->onext;
    else
        ft->oldest = d->onext;
    if (d->onext)
        d->onext->oprev = d->oprev;
    else
        ft->newest = d->oprev;
    timer_cancel(&st->tw, &d->tmr);
    if (free_buf)
        pktbuf_free(d->buf);
    d->buf = NULL;
    ft->count--;
    ft->bytes -= d->bytes;
    d->hnext = ft->freelist;
    ft->freelist = d;
}

void ip4_frag_destroy(struct stack *st)
{
    struct ip4_frag_table *ft = st->frag;
    if (!ft)
        return;
    while (ft->oldest)
        frag_release(st, ft->oldest, true);
    free(ft->slab);
    free(ft);
    st->frag = NULL;
}

uint32_t ip4_frag_count(const struct stack *st)
{
    return st->frag ? st->frag->count : 0;
}

static void frag_timer_fn(struct timer *t, void *ctx, uint64_t now)
{
    struct stack *st = ctx;
    struct frag_dgram *d = container_of(t, struct frag_dgram, tmr);
    CNT_INC(&st->cnt, ip4_frag_drop_timeout);
    /* RFC 792 / RFC 1122 3.3.2: time exceeded (reassembly) if we hold fragment zero. */
    if (d->have_first) {
        struct pktbuf *b = d->buf;
        uint32_t len = d->hlen + (d->pieces[0].end < 8 ? d->pieces[0].end : 8);
        b->off = PKTBUF_HEADROOM + IP4_MAX_HLEN - d->hlen;
        b->len = len;
        icmp_send_error(st, b, ICMP_TIME_EXCEEDED, ICMP_EXC_FRAGTIME, 0);
    }
    frag_release(st, d, true);
}

static struct frag_dgram *frag_new(struct stack *st, const struct ip4_view *ip)
{
    struct ip4_frag_table *ft = st->frag;
    if (!ft->freelist) {
        CNT_INC(&st->cnt, ip4_frag_drop_mem);
        frag_release(st, ft->oldest, true);
    }
    struct pktbuf *b = pktbuf_alloc(&st->large);
    while (!b && ft->oldest) {
        CNT_INC(&st->cnt, ip4_frag_drop_mem);
        frag_release(st, ft->oldest, true);
        b = pktbuf_alloc(&st->large);
    }
    if (!b) {
        CNT_INC(&st->cnt, ip4_frag_drop_mem);
        return NULL;
    }
    struct frag_dgram *d = ft->freelist;
    ft->freelist = d->hnext;
    d->src = ip->src;
    d->dst = ip->dst;
    d->id = ip->id;
    d->proto = ip->proto;
    d->have_first = d->have_last = false;
    d->total = d->bytes = d->hlen = 0;
    d->npieces = 0;
    d->buf = b;
    d->created = st->now;
    uint32_t h = frag_hash(ip->src, ip->dst, ip->id, ip->proto);
    d->hnext = ft->hash[h];
    ft->hash[h] = d;
    d->oprev = ft->newest;
    FIFO_APPEND(ft->oldest, ft->newest, d, onext);
    ft->count++;
    timer_arm(&st->tw, &d->tmr, st->now + (uint64_t)st->par.frag_timeout_ms * NS_PER_MS);
    return d;
}

static struct frag_dgram *frag_find(struct stack *st, const struct ip4_view *ip)
{
    struct frag_dgram *d = st->frag->hash[frag_hash(ip->src, ip->dst, ip->id, ip->proto)];
    for (; d; d = d->hnext)
        if (d->src == ip->src && d->dst == ip->dst && d->id == ip->id && d->proto == ip->proto)
            return d;
    return NULL;
}

struct pktbuf *ip4_reasm(struct stack *st, struct pktbuf *pb, const struct ip4_view *ip)
{
    struct ip4_frag_table *ft = st->frag;
    CNT_INC(&st->cnt, ip4_frag_rx);
    uint32_t start = ip4_frag_off(ip);
    uint32_t len = ip->tot_len - ip->ihl;
    uint32_t end = start + len;
    bool more = ip->frag & IP4_MF;
    const uint8_t *payload = pktbuf_data(pb) + ip->ihl;

    /* Every piece but the last carries a multiple of 8 bytes (RFC 791); none is empty. */
    if (len == 0 || (more && (len & 7))) {
        CNT_INC(&st->cnt, ip4_frag_drop_bad);
        goto drop;
    }
    if (end + ip->ihl > 65535) {
        CNT_INC(&st->cnt, ip4_frag_drop_too_big);
        struct frag_dgram *old = frag_find(st, ip);
        if (old)
            frag_release(st, old, true);
        goto drop;
    }
    struct frag_dgram *d = frag_find(st, ip);
    if (!d && !(d = frag_new(st, ip)))
        goto drop;

    /* Consistency with what is known about the end of the datagram. */
    if ((d->have_last && (end > d->total || (!more && end != d->total))) ||
        (!more && end < d->total)) {
        CNT_INC(&st->cnt, ip4_frag_drop_bad);
        frag_release(st, d, true);
        goto drop;
    }
    /* Find the insertion point; detect duplicates and overlaps. */
    uint32_t i = 0;
    while (i < d->npieces && d->pieces[i].end <= start)
        i++;
    if (i < d->npieces && d->pieces[i].start < end) {
        if (d->pieces[i].start == start && d->pieces[i].end == end) {
            CNT_INC(&st->cnt, ip4_frag_drop_dup);
            goto drop;
        }
        CNT_INC(&st->cnt, ip4_frag_drop_overlap);
        frag_release(st, d, true);
        goto drop;
    }
    if (d->npieces == FRAG_MAX_PIECES) {
        CNT_INC(&st->cnt, ip4_frag_drop_too_many);
        frag_release(st, d, true);
        goto drop;
    }
    /* Global memory bound: evict the oldest other datagrams first. */
    while (ft->bytes + len > st->par.frag_max_bytes && ft->oldest && ft->oldest != d) {
        CNT_INC(&st->cnt, ip4_frag_drop_mem);
        frag_release(st, ft->oldest, true);
    }
    if (ft->bytes + len > st->par.frag_max_bytes) {
        CNT_INC(&st->cnt, ip4_frag_drop_mem);
        frag_release(st, d, true);
        goto drop;
    }
    memmove(&d->pieces[i + 1], &d->pieces[i], (d->npieces - i) * sizeof(d->pieces[0]));
    d->pieces[i].start = start;
    d->pieces[i].end = end;
    d->npieces++;
    /* Payload goes after room for the largest IP header at the front of the buffer. */
    memcpy(d->buf->buf + PKTBUF_HEADROOM + IP4_MAX_HLEN + start, payload, len);
    d->bytes += len;
    ft->bytes += len;
    if (start == 0) {
        d->have_first = true;
        d->hlen = ip->ihl;
        memcpy(d->buf->buf + PKTBUF_HEADROOM + IP4_MAX_HLEN - ip->ihl, pktbuf_data(pb), ip->ihl);
    }
    if (!more) {
        d->have_last = true;
        d->total = end;
    }
    uint16_t ifindex = pb->ifindex;
    pktbuf_free(pb);
    pb = NULL;

    /* Complete when the pieces cover [0,total) without holes. */
    if (!d->have_first || !d->have_last || d->bytes != d->total)
        return NULL;
    struct pktbuf *out = d->buf;
    uint32_t hlen = d->hlen, total = d->total;
    frag_release(st, d, false);
    out->off = PKTBUF_HEADROOM + IP4_MAX_HLEN - hlen;
    out->len = hlen + total;
    out->ifindex = ifindex;
    uint8_t *h = pktbuf_data(out);
    ip4_set_len_frag(h, (uint16_t)out->len, 0); /* no MF, offset 0 */
    ip4_fix_csum(h, (uint8_t)hlen);
    CNT_INC(&st->cnt, ip4_reasm_ok);
    return out;
drop:
    if (pb)
        pktbuf_free(pb);
    return NULL;
}
