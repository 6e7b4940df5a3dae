/* UDP: see udp.h. Demultiplexing prefers the most specific match (connected 4-tuple, then
 * bound address, then wildcard), like Linux's scoring. */
#include "stack/udp.h"

#include <errno.h>
#include <stdlib.h>

#include "stack/stack_impl.h"

#define UDP_HASH 1024u

struct udp_table {
    struct udp_pcb *bucket[UDP_HASH];
    uint16_t next_port;
    uint32_t count;
};

static struct udp_pcb **bucket(struct stack *st, uint16_t port)
{
    return &st->udp->bucket[port & (UDP_HASH - 1)];
}

static int udp_input(struct stack *st, struct pktbuf *pb, const struct ip4_view *ip);
static void udp_err_input(struct stack *st, uint8_t type, uint8_t code, uint32_t info,
                          const struct icmp_quote_view *q);

int udp_init(struct stack *st)
{
    st->udp = calloc(1, sizeof(*st->udp));
    if (!st->udp)
        return -ENOMEM;
    uint32_t span = st->par.udp_port_max - st->par.udp_port_min + 1u;
    st->udp->next_port = (uint16_t)(st->par.udp_port_min + (st->now / 1000u) % span);
    st->l4_input[IPPROTO_UDP_] = udp_input;
    st->l4_err[IPPROTO_UDP_] = udp_err_input;
    return 0;
}

void udp_destroy(struct stack *st)
{
    free(st->udp);
    st->udp = NULL;
}

uint32_t udp_count(const struct stack *st)
{
    return st->udp ? st->udp->count : 0;
}

void udp_pcb_init(struct stack *st, struct udp_pcb *pcb, udp_deliver_fn deliver, udp_err_fn err,
                  void *ctx)
{
    memset(pcb, 0, sizeof(*pcb));
    pcb->ttl = st->par.default_ttl;
    pcb->deliver = deliver;
    pcb->err = err;
    pcb->ctx = ctx;
}

static bool port_conflict(struct stack *st, const struct udp_pcb *self, uint32_t addr,
                          uint16_t port)
{
    for (struct udp_pcb *p = *bucket(st, port); p; p = p->hnext) {
        if (p == self || p->lport != port)
            continue;
        bool overlap = !p->laddr || !addr || p->laddr == addr;
        if (overlap && !(p->reuseaddr && self->reuseaddr))
            return true;
    }
    return false;
}

static bool port_used(struct stack *st, uint16_t port)
{
    for (struct udp_pcb *p = *bucket(st, port); p; p = p->hnext)
        if (p->lport == port)
            return true;
    return false;
}

static void hash_in(struct stack *st, struct udp_pcb *pcb)
{
    struct udp_pcb **b = bucket(st, pcb->lport);
    pcb->hnext = *b;
    *b = pcb;
    pcb->hashed = true;
    st->udp->count++;
}

int udp_bind(struct stack *st, struct udp_pcb *pcb, uint32_t addr, uint16_t port)
{
    if (pcb->bound)
        return -EINVAL;
    if (addr && !ip4_is_local(st, addr))
        return -EADDRNOTAVAIL;
    if (port == 0) {
        /* Ephemeral: walk the configured range from a moving cursor (RFC 6056 3.3.1). */
        uint32_t lo = st->par.udp_port_min, span = st->par.udp_port_max - lo + 1u;
        uint32_t i;
        for (i = 0; i < span; i++) {
            uint16_t cand = (uint16_t)(lo + (st->udp->next_port - lo + i) % span);
            if (!port_used(st, cand) && stack_port_ok(st, 17, cand)) {
                port = cand;
                st->udp->next_port = (uint16_t)(lo + (cand - lo + 1u) % span);
                break;
            }
        }
        if (i == span)
            return -EAGAIN;
    } else if (port_conflict(st, pcb, addr, port)) {
        return -EADDRINUSE;
    }
    pcb->laddr = addr;
    pcb->lport = port;
    pcb->bound = true;
    hash_in(st, pcb);
    return 0;
}

int udp_connect(struct stack *st, struct udp_pcb *pcb, uint32_t addr, uint16_t port)
{
    if (!addr && !port) { /* AF_UNSPEC: dissolve the association */
        pcb->connected = false;
        pcb->raddr = 0;
        pcb->rport = 0;
        if (pcb->laddr_auto) { /* the source connect chose goes too (Linux: inet_reset_saddr) */
            pcb->laddr = 0;
            pcb->laddr_auto = false;
        }
        return 0;
    }
    if (!port)
        return -EINVAL;
    int ifidx;
    uint32_t nh;
    if (route_lookup(st, addr, &ifidx, &nh))
        return -ENETUNREACH;
    if (ip4_is_bcast(st, addr) && !pcb->broadcast)
        return -EACCES;
    if (!pcb->bound) {
        int rc = udp_bind(st, pcb, 0, 0);
        if (rc)
            return rc;
    }
    pcb->raddr = addr;
    pcb->rport = port;
    pcb->connected = true;
    if (!pcb->laddr) { /* the route's source, as Linux: getsockname shows it */
        pcb->laddr = st->ifs[ifidx].p.addr;
        pcb->laddr_auto = true;
    }
    return 0;
}

void udp_close(struct stack *st, struct udp_pcb *pcb)
{
    if (pcb->hashed) {
        struct udp_pcb **pp = bucket(st, pcb->lport);
        while (*pp && *pp != pcb)
            pp = &(*pp)->hnext;
        if (*pp)
            *pp = pcb->hnext;
        st->udp->count--;
    }
    pcb->hashed = pcb->bound = pcb->connected = false;
    pcb->hnext = NULL;
}

int udp_output(struct stack *st, struct udp_pcb *pcb, uint32_t dst, uint16_t dport,
               const uint8_t *data, uint32_t len)
{
    return udp_output_from(st, pcb, 0, dst, dport, data, len);
}

int udp_output_from(struct stack *st, struct udp_pcb *pcb, uint32_t src, uint32_t dst,
                    uint16_t dport, const uint8_t *data, uint32_t len)
{
    if (!dst) {
        if (!pcb->connected)
            return -EDESTADDRREQ;
        dst = pcb->raddr;
        dport = pcb->rport;
    }
    if (!dport)
        return -EINVAL;
    if (len > 65535 - IP4_HLEN - UDP_HLEN)
        return -EMSGSIZE;
    if (ip4_is_bcast(st, dst) && !pcb->broadcast)
        return -EACCES; /* like Linux: broadcast needs SO_BROADCAST */
    if (src && !ip4_is_local(st, src)) {
        CNT_INC(&st->cnt, udp_drop_bad_src);
        return -EINVAL; /* Linux too, for a source that is not ours (no IP_FREEBIND) */
    }
    if (!pcb->bound) {
        int rc = udp_bind(st, pcb, 0, 0);
        if (rc)
            return rc;
    }
    int ifidx;
    uint32_t nh;
    if (route_lookup(st, dst, &ifidx, &nh)) {
        CNT_INC(&st->cnt, ip4_drop_no_route);
        return -ENETUNREACH;
    }
    if (!src)
        src = pcb->laddr ? pcb->laddr : st->ifs[ifidx].p.addr;
    uint32_t need = UDP_HLEN + len;
    struct pktbuf_pool *pool =
        need + IP4_HLEN + ETH_HLEN + ETH_VLAN_HLEN + PKTBUF_HEADROOM <= st->pool.bufsize
            ? &st->pool
            : &st->large;
    struct pktbuf *pb = pktbuf_alloc(pool);
    if (!pb) {
        CNT_INC(&st->cnt, ip4_drop_nobuf);
        return -ENOBUFS;
    }
    uint8_t *h = pktbuf_put(pb, need);
    udp_write(h, pcb->lport, dport, (uint16_t)need);
    memcpy(h + UDP_HLEN, data, len);
    uint16_t c =
        csum_fold(csum_partial(h, need, csum_pseudo4(src, dst, IPPROTO_UDP_, (uint16_t)need)));
    wr16(h + UDP_CSUM_OFF, c ? c : 0xffff); /* RFC 768: a computed zero is sent as all ones */
    CNT_INC(&st->cnt, udp_tx);
    return ip4_output(st, pb, src, dst, IPPROTO_UDP_, pcb->ttl, pcb->tos, false);
}

static struct udp_pcb *udp_lookup(struct stack *st, uint32_t src, uint16_t sport, uint32_t dst,
                                  uint16_t dport)
{
    struct udp_pcb *best = NULL;
    int best_score = -1;
    for (struct udp_pcb *p = *bucket(st, dport); p; p = p->hnext) {
        if (p->lport != dport || (p->laddr && p->laddr != dst))
            continue;
        int score = p->laddr ? 1 : 0;
        if (p->connected) {
            if (p->raddr != src || p->rport != sport)
                continue;
            score += 2;
        }
        if (score > best_score) {
            best = p;
            best_score = score;
        }
    }
    return best;
}

static void deliver(struct stack *st, struct udp_pcb *p, const struct pktbuf *pb,
                    const struct ip4_view *ip, const struct udp_view *u, const uint8_t *data,
                    uint32_t len)
{
    struct udp_meta m = {.src = ip->src,
                         .dst = ip->dst,
                         .spec_dst = ip->dst,
                         .sport = u->sport,
                         .tos = ip->tos,
                         .ifindex = (uint8_t)(pb->ifindex + 1)};
    if (ip4_is_bcast(st, ip->dst)) { /* a reply comes from the interface's own address */
        m.bcast = true;
        if (pb->ifindex < (unsigned)st->nifs)
            m.spec_dst = st->ifs[pb->ifindex].p.addr;
    }
    if (p->deliver(p->ctx, &m, data, len) == 0)
        CNT_INC(&st->cnt, udp_delivered);
    else
        CNT_INC(&st->cnt, udp_drop_rcvbuf);
}

static int udp_input(struct stack *st, struct pktbuf *pb, const struct ip4_view *ip)
{
    const uint8_t *p = pktbuf_data(pb) + ip->ihl;
    uint32_t l4len = pb->len - ip->ihl;
    struct udp_view u;
    CNT_INC(&st->cnt, udp_rx);
    if (udp_parse(p, l4len, &u)) {
        CNT_INC(&st->cnt, udp_drop_short);
        pktbuf_free(pb);
        return 0;
    }
    /* A zero checksum means none was computed (RFC 768); otherwise it must verify. */
    if (u.csum && !pb->csum_ok &&
        csum_fold(csum_partial(p, u.len, csum_pseudo4(ip->src, ip->dst, IPPROTO_UDP_, u.len))) !=
            0) {
        CNT_INC(&st->cnt, udp_drop_csum);
        pktbuf_free(pb);
        return 0;
    }
    const uint8_t *data = p + UDP_HLEN;
    uint32_t len = u.len - UDP_HLEN;
    if (ip4_is_bcast(st, ip->dst)) {
        /* Broadcast goes to every socket bound to the port (RFC 1122 4.1.3.6). */
        bool any = false;
        for (struct udp_pcb *q = *bucket(st, u.dport); q; q = q->hnext)
            if (q->lport == u.dport && !q->connected && (!q->laddr || q->laddr == ip->dst)) {
                deliver(st, q, pb, ip, &u, data, len);
                any = true;
            }
        if (!any)
            CNT_INC(&st->cnt, udp_drop_no_port);
        pktbuf_free(pb);
        return 0;
    }
    struct udp_pcb *q = udp_lookup(st, ip->src, u.sport, ip->dst, u.dport);
    if (!q)
        return -ECONNREFUSED; /* the stack answers port unreachable and counts */
    deliver(st, q, pb, ip, &u, data, len);
    pktbuf_free(pb);
    return 0;
}

/* ICMP errors reach only connected sockets, and only the hard ones, as in Linux without
 * IP_RECVERR (RFC 1122 4.1.3.3 leaves the choice to the application interface). */
static void udp_err_input(struct stack *st, uint8_t type, uint8_t code, uint32_t info,
                          const struct icmp_quote_view *q)
{
    uint32_t qsrc = q->src, qdst = q->dst;
    uint16_t sport = q->sport, dport = q->dport;
    int err = 0;
    if (type == ICMP_DEST_UNREACH && code == ICMP_UNREACH_PORT)
        err = ECONNREFUSED;
    else if (type == ICMP_DEST_UNREACH && code == ICMP_UNREACH_PROTO)
        err = ENOPROTOOPT;
    if (!err)
        return;
    for (struct udp_pcb *p = *bucket(st, sport); p; p = p->hnext)
        if (p->lport == sport && p->connected && p->raddr == qdst && p->rport == dport &&
            (!p->laddr || p->laddr == qsrc) && p->err)
            p->err(p->ctx, err);
}
