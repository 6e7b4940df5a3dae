/* IPv4 input (Linux's ip_rcv, routing, ip_local_deliver, forwarding) and output
 * (ip_queue_xmit, fragmentation, neighbour output). */
#include "stack/stack_impl.h"

#include <errno.h>

bool ip4_is_bcast(const struct stack *st, uint32_t addr)
{
    if (addr == 0xffffffffu)
        return true;
    for (int i = 0; i < st->nifs; i++)
        if (st->ifs[i].p.plen < 31 && addr == st->ifs[i].bcast)
            return true;
    return false;
}

bool ip4_is_local(const struct stack *st, uint32_t addr)
{
    for (int i = 0; i < st->nifs; i++)
        if (addr == st->ifs[i].p.addr)
            return true;
    return ip4_is_bcast(st, addr);
}

/* Options are accepted but not acted on, except source routes, which are refused like
 * Linux does by default (accept_source_route = 0). Malformed option lists are dropped. */
static bool ip4_options_ok(const struct ip4_view *ip)
{
    const uint8_t *o = ip->opts;
    uint32_t n = ip->optlen, i = 0;
    while (i < n) {
        uint8_t t = o[i];
        if (t == 0) /* end of list */
            break;
        if (t == 1) { /* no-op */
            i++;
            continue;
        }
        if (i + 1 >= n || o[i + 1] < 2 || i + o[i + 1] > n)
            return false;
        if (t == 131 || t == 137) /* LSRR, SSRR */
            return false;
        i += o[i + 1];
    }
    return true;
}

static void ip4_forward(struct stack *st, struct pktbuf *pb, const struct ip4_view *ip)
{
    /* RFC 1812 5.3.1: a packet whose TTL would reach zero is not forwarded. */
    if (ip->ttl <= 1) {
        CNT_INC(&st->cnt, ip4_drop_ttl);
        icmp_send_error(st, pb, ICMP_TIME_EXCEEDED, ICMP_EXC_TTL, 0);
        pktbuf_free(pb);
        return;
    }
    if (!hook_run(st, HOOK_FORWARD, ip, pktbuf_data(pb) + ip->ihl, pb->len - ip->ihl)) {
        pktbuf_free(pb);
        return;
    }
    int ifidx;
    uint32_t nh;
    if (route_lookup(st, ip->dst, &ifidx, &nh)) {
        CNT_INC(&st->cnt, ip4_drop_no_route);
        icmp_send_error(st, pb, ICMP_DEST_UNREACH, ICMP_UNREACH_NET, 0);
        pktbuf_free(pb);
        return;
    }
    if (ip->tot_len > st->ifs[ifidx].p.mtu) {
        /* Forwarded datagrams are not fragmented here: tell the sender (RFC 1191). */
        CNT_INC(&st->cnt, ip4_drop_df);
        icmp_send_error(st, pb, ICMP_DEST_UNREACH, ICMP_UNREACH_NEEDFRAG, st->ifs[ifidx].p.mtu);
        pktbuf_free(pb);
        return;
    }
    uint8_t *h = pktbuf_data(pb);
    ip4_set_ttl(h, (uint8_t)(ip->ttl - 1));
    ip4_fix_csum(h, ip->ihl);
    struct ip4_view fwd = *ip;
    fwd.ttl--;
    if (!hook_run(st, HOOK_POSTROUTING, &fwd, h + ip->ihl, pb->len - ip->ihl)) {
        pktbuf_free(pb);
        return;
    }
    CNT_INC(&st->cnt, ip4_forwarded);
    arp_output(st, ifidx, nh, pb);
}

void ip4_input(struct stack *st, int ifidx, struct pktbuf *pb)
{
    struct ip4_view ip;
    CNT_INC(&st->cnt, ip4_rx);
    switch (ip4_parse(pktbuf_data(pb), pb->len, &ip)) {
    case IP4_OK:
        break;
    case IP4_ERR_SHORT:
        CNT_INC(&st->cnt, ip4_drop_short);
        goto drop;
    case IP4_ERR_VERSION:
        CNT_INC(&st->cnt, ip4_drop_version);
        goto drop;
    case IP4_ERR_IHL:
        CNT_INC(&st->cnt, ip4_drop_ihl);
        goto drop;
    case IP4_ERR_LEN:
        CNT_INC(&st->cnt, ip4_drop_len);
        goto drop;
    case IP4_ERR_CSUM:
        CNT_INC(&st->cnt, ip4_drop_csum);
        goto drop;
    }
    pktbuf_trim(pb, ip.tot_len); /* drop Ethernet padding */
    /* RFC 1122 3.2.1.3 / RFC 1812 5.3.7: martian sources are discarded. */
    if (ip4_is_mcast(ip.src) || ip4_is_bcast(st, ip.src) || ip4_is_loopback(ip.src) ||
        ip.src == 0 || ip4_is_local(st, ip.src)) {
        CNT_INC(&st->cnt, ip4_drop_bad_src);
        goto drop;
    }
    if (ip.optlen && !ip4_options_ok(&ip)) {
        CNT_INC(&st->cnt, ip4_drop_options);
        goto drop;
    }
    if (!hook_run(st, HOOK_PREROUTING, &ip, pktbuf_data(pb) + ip.ihl, pb->len - ip.ihl))
        goto drop;
    if (!ip4_is_local(st, ip.dst)) {
        if (!st->par.forwarding || ip4_is_mcast(ip.dst)) {
            CNT_INC(&st->cnt, ip4_drop_not_local);
            goto drop;
        }
        ip4_forward(st, pb, &ip);
        return;
    }
    if (ip4_is_frag(&ip)) {
        /* Several workers: the fragments of one datagram may arrive on several queues;
         * all of them meet on the worker their (src, dst, id, proto) names. */
        if (st->steer_frag && !pb->steered && st->steer_frag(st, pb, &ip))
            return;
        ip4_frag_input(st, pb, &ip);
        return;
    }
    ip4_local_deliver(st, pb, &ip);
    return;
drop:
    pktbuf_free(pb);
}

/* A fragment for us: reassemble, and deliver the datagram once it is whole. */
void ip4_frag_input(struct stack *st, struct pktbuf *pb, const struct ip4_view *frag)
{
    struct ip4_view ip = *frag;
    pb = ip4_reasm(st, pb, &ip);
    if (!pb)
        return;
    /* The reassembled header is consistent and re-parsed (lengths changed). */
    if (ip4_parse(pktbuf_data(pb), pb->len, &ip) != IP4_OK) {
        CNT_INC(&st->cnt, ip4_frag_drop_bad);
        pktbuf_free(pb);
        return;
    }
    pb->steered = PKTBUF_NOT_STEERED; /* a whole datagram now: its port may name another worker */
    ip4_local_deliver(st, pb, &ip);
}

/* Deliver up to budget looped-back datagrams (those queued before this call). */
int ip4_loop_input(struct stack *st, int budget)
{
    int n = 0;
    uint32_t todo = st->lo.len;
    struct pktbuf *pb;

    while (todo-- && n < budget && (pb = pktq_pop(&st->lo))) {
        struct ip4_view ip;
        n++;
        if (ip4_parse(pktbuf_data(pb), pb->len, &ip) != IP4_OK) { /* we wrote it: cannot */
            CNT_INC(&st->cnt, ip4_drop_len);
            pktbuf_free(pb);
            continue;
        }
        if (!hook_run(st, HOOK_PREROUTING, &ip, pktbuf_data(pb) + ip.ihl, pb->len - ip.ihl)) {
            pktbuf_free(pb);
            continue;
        }
        ip4_local_deliver(st, pb, &ip);
    }
    return n;
}

void ip4_loop_flush(struct stack *st)
{
    pktq_purge(&st->lo);
}

void ip4_local_deliver(struct stack *st, struct pktbuf *pb, const struct ip4_view *ip)
{
    /* Several workers: a port another worker owns goes there (once: never re-steered). */
    if (st->steer && !pb->steered && st->steer(st, pb, ip))
        return;
    const uint8_t *l4 = pktbuf_data(pb) + ip->ihl;
    uint32_t l4len = pb->len - ip->ihl;
    if (!hook_run(st, HOOK_LOCAL_IN, ip, l4, l4len)) {
        pktbuf_free(pb);
        return;
    }
    CNT_INC(&st->cnt, ip4_rx_local);
    if (ip->proto == IPPROTO_ICMP_) {
        icmp_input(st, pb, ip);
        return;
    }
    int rc = -EPROTONOSUPPORT;
    if (st->l4_input[ip->proto]) {
        rc = st->l4_input[ip->proto](st, pb, ip);
        if (rc == 0)
            return;
    } else if (ip->proto == IPPROTO_UDP_) {
        struct udp_view u;
        if (udp_parse(l4, l4len, &u)) {
            CNT_INC(&st->cnt, udp_drop_short);
            pktbuf_free(pb);
            return;
        }
        CNT_INC(&st->cnt, udp_rx);
        rc = -ECONNREFUSED;
    }
    if (rc == -ECONNREFUSED) {
        /* No socket: RFC 1122 4.1.3.1 says send port unreachable. */
        CNT_INC(&st->cnt, udp_drop_no_port);
        icmp_send_error(st, pb, ICMP_DEST_UNREACH, ICMP_UNREACH_PORT, 0);
    } else {
        CNT_INC(&st->cnt, ip4_drop_proto);
        icmp_send_error(st, pb, ICMP_DEST_UNREACH, ICMP_UNREACH_PROTO, 0);
    }
    pktbuf_free(pb);
}

/* Split an IPv4 datagram (pb data = 20-byte header + payload) into fragments of at most
 * mtu bytes (RFC 791 3.2, offsets in units of 8 bytes) and hand each to the neighbour layer. */
static int ip4_fragment(struct stack *st, struct pktbuf *pb, int ifidx, uint32_t nh, uint16_t mtu)
{
    const uint8_t *h = pktbuf_data(pb);
    uint32_t hl = IP4_HLEN;
    struct ip4_view ip;
    if (ip4_peek(h, pb->len, &ip) != IP4_OK) { /* we wrote it: cannot */
        CNT_INC(&st->cnt, ip4_drop_len);
        pktbuf_free(pb);
        return -EINVAL;
    }
    uint32_t payload = pb->len - hl;
    uint32_t chunk = (mtu - hl) & ~7u;
    int rc = 0;
    for (uint32_t off = 0; off < payload; off += chunk) {
        uint32_t n = payload - off < chunk ? payload - off : chunk;
        struct pktbuf *f = pktbuf_alloc(&st->pool);
        if (!f) {
            CNT_INC(&st->cnt, ip4_drop_nobuf);
            rc = -ENOBUFS;
            break;
        }
        uint8_t *fh = pktbuf_put(f, hl + n);
        memcpy(fh + hl, h + hl + off, n);
        uint16_t flags = (uint16_t)((off + n < payload ? IP4_MF : 0) | (off / 8));
        ip4_write(fh, ip.tos, (uint16_t)(hl + n), ip.id, flags, ip.ttl, ip.proto, ip.src, ip.dst);
        CNT_INC(&st->cnt, ip4_frag_created);
        arp_output(st, ifidx, nh, f);
    }
    pktbuf_free(pb);
    return rc;
}

int ip4_output(struct stack *st, struct pktbuf *pb, uint32_t src, uint32_t dst, uint8_t proto,
               uint8_t ttl, uint8_t tos, bool df)
{
    int ifidx;
    uint32_t nh;
    if (route_lookup(st, dst, &ifidx, &nh)) {
        CNT_INC(&st->cnt, ip4_drop_no_route);
        pktbuf_free(pb);
        return -ENETUNREACH;
    }
    if (!src)
        src = st->ifs[ifidx].p.addr;
    if (pb->len + IP4_HLEN > 65535) {
        CNT_INC(&st->cnt, ip4_drop_len);
        pktbuf_free(pb);
        return -EMSGSIZE;
    }
    uint8_t *h = pktbuf_push(pb, IP4_HLEN);
    if (!h) {
        CNT_INC(&st->cnt, ip4_drop_nobuf);
        pktbuf_free(pb);
        return -ENOBUFS;
    }
    ip4_write(h, tos, (uint16_t)pb->len, st->ip_id++, df ? IP4_DF : 0, ttl, proto, src, dst);
    struct ip4_view ip;
    ip4_parse(h, pb->len, &ip);
    const uint8_t *l4 = h + IP4_HLEN;
    if (!hook_run(st, HOOK_LOCAL_OUT, &ip, l4, pb->len - IP4_HLEN) ||
        !hook_run(st, HOOK_POSTROUTING, &ip, l4, pb->len - IP4_HLEN)) {
        pktbuf_free(pb);
        return -EPERM;
    }
    CNT_INC(&st->cnt, ip4_tx);
    if (ip4_is_local(st, dst)) { /* loopback, as Linux's lo: no wire, no fragmenting */
        if (st->lo.len >= STACK_LO_MAX) {
            CNT_INC(&st->cnt, ip4_drop_local_full);
            pktbuf_free(pb);
            return -ENOBUFS;
        }
        CNT_INC(&st->cnt, ip4_tx_local);
        pb->ifindex = (uint16_t)ifidx;
        pb->csum_ok = true; /* never left memory (a TSO segment's checksum is partial) */
        pb->gso_size = 0;
        pktq_push(&st->lo, pb);
        return 0;
    }
    uint16_t mtu = st->ifs[ifidx].p.mtu;
    /* A TCP super-segment on a TSO interface is cut by the NIC, not fragmented. */
    if (pb->len > mtu && !(pb->gso_size && st->ifs[ifidx].tso)) {
        if (df) {
            CNT_INC(&st->cnt, ip4_drop_df);
            pktbuf_free(pb);
            return -EMSGSIZE;
        }
        return ip4_fragment(st, pb, ifidx, nh, mtu);
    }
    arp_output(st, ifidx, nh, pb);
    return 0;
}
