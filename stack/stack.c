/* Stack instance: set-up, the poll/rx/flush entry points the worker loop calls, reports. */
#include "stack/stack_impl.h"
#include "stack/tcp.h"
#include "stack/udp.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

const char *const stack_counter_names[STACK_NCOUNTERS] = {
#define X(n) #n,
    STACK_COUNTERS(X)
#undef X
};

void stack_params_defaults(struct stack_params *p)
{
    memset(p, 0, sizeof(*p));
    p->pktbufs = 8192;
    p->large_pktbufs = 32;
    p->forwarding = false;
    p->default_ttl = 64;
    p->frag_timeout_ms = 30000; /* Linux ipfrag_time */
    p->frag_max_datagrams = 64;
    p->frag_max_bytes = 4u << 20;
    p->icmp_ratelimit_pps = 1000;
    p->arp_cache_size = 1024;
    p->arp_reachable_ms = 30000;
    p->arp_stale_ms = 60000;
    p->arp_retry_ms = 1000;
    p->arp_retries = 3;
    p->arp_queue_len = 101; /* Linux unres_qlen: a 64 KiB datagram in fragments fits */
    p->arp_gratuitous = true;
    p->udp_port_min = 32768; /* Linux ip_local_port_range */
    p->udp_port_max = 60999;
    p->tcp_sack = p->tcp_timestamps = p->tcp_window_scaling = p->tcp_syncookies = true;
    snprintf(p->tcp_cc, sizeof(p->tcp_cc), "cubic");
    p->tcp_time_wait_ms = 60000; /* Linux TCP_TIMEWAIT_LEN */
    p->tcp_fin_timeout_ms = 60000;
    p->tcp_syn_retries = 6;
    p->tcp_synack_retries = 5;
    p->tcp_retries2 = 15;
    p->tcp_rto_min_ms =
        200; /* Linux TCP_RTO_MIN (RFC 6298 2.4 says 1 s; Linux's 200 ms is the norm) */
    p->tcp_rto_max_ms = 120000;
    p->tcp_rto_init_ms = 1000; /* RFC 6298 2.1 */
    p->tcp_delack_ms = 40;
    p->tcp_keepalive_time_s = 7200;
    p->tcp_keepalive_intvl_s = 75;
    p->tcp_keepalive_probes = 9;
    p->tcp_max_syn_backlog = 256;
    p->tcp_orphan_retries = 8; /* Linux: tcp_orphan_retries 0 means 8 */
    p->tcp_max_conns = 262144;
    p->tcp_rcv_wscale = 7;
}

int stack_init(struct stack *st, const struct stack_params *p, uint64_t now)
{
    memset(st, 0, sizeof(*st));
    st->par = *p;
    st->now = now;
    st->ip_id = (uint16_t)(now ^ (now >> 16));
    timer_wheel_init(&st->tw, NS_PER_MS, now);
    route_table_init(&st->rt);
    /* Frames up to 9000 bytes of MTU plus tags, with headroom. */
    int rc = pktbuf_pool_init(&st->pool, p->pktbufs ? p->pktbufs : 8192, 9216 + PKTBUF_HEADROOM);
    if (rc)
        return rc;
    uint32_t nlarge = p->large_pktbufs;
    if (nlarge < p->frag_max_datagrams + 8)
        nlarge = p->frag_max_datagrams + 8; /* every reassembly slot plus replies in flight */
    rc = pktbuf_pool_init(&st->large, nlarge, 65536 + 2 * PKTBUF_HEADROOM);
    if (rc)
        goto fail;
    if ((rc = arp_init(st)) || (rc = ip4_frag_init(st)) || (rc = udp_init(st)) ||
        (rc = tcp_init(st)))
        goto fail;
    for (uint32_t i = 0; i < p->n_routes; i++)
        if ((rc = route_add(&st->rt, &p->routes[i])))
            goto fail;
    st->icmp_tokens = p->icmp_ratelimit_pps;
    st->icmp_tokens_ts = now;
    return 0;
fail:
    stack_destroy(st);
    return rc;
}

int stack_add_if(struct stack *st, const struct stack_iface_params *ip, struct nic *nic, uint16_t q)
{
    if (st->nifs >= STACK_MAX_IFS)
        return -ENOSPC;
    if (ip->plen > 32 || ip->mtu < 68)
        return -EINVAL;
    int idx = st->nifs;
    struct stack_if *ifp = &st->ifs[idx];
    memset(ifp, 0, sizeof(*ifp));
    ifp->p = *ip;
    ifp->mask = ip4_mask(ip->plen);
    ifp->bcast = ip->plen < 31 ? (ip->addr | ~ifp->mask) : 0xffffffffu;
    ifp->nic = nic;
    ifp->queue = q;
    ifp->tso = nic && nic->params.tso;
    if (nic) {
        struct pktbuf_pool *rxp = &st->pool;
        /* A TSO interface also receives GSO frames (up to 64 KiB): big RX buffers. */
        if (nic->params.tso) {
            if (!st->rx64.count && pktbuf_pool_init(&st->rx64, 1024, 65536 + 2 * PKTBUF_HEADROOM))
                return -ENOMEM;
            rxp = &st->rx64;
        }
        nic_bind_queue(nic, q, rxp, &st->cnt);
    }
    struct route_entry conn = {
        .dst = ip->addr & ifp->mask,
        .plen = ip->plen,
        .via = 0,
        .ifidx = idx,
        .connected = true,
    };
    int rc = route_add(&st->rt, &conn);
    if (rc)
        return rc;
    st->nifs++;
    /* Static routes given without a device are bound to the interface of their gateway. */
    for (uint32_t i = 0; i < st->rt.n; i++) {
        struct route_entry *e = &st->rt.e[i];
        if (e->ifidx < 0 && e->via && (e->via & ifp->mask) == (ip->addr & ifp->mask))
            e->ifidx = idx;
    }
    return idx;
}

void stack_start(struct stack *st)
{
    if (!st->par.arp_gratuitous)
        return;
    for (int i = 0; i < st->nifs; i++)
        arp_announce(st, i);
}

void stack_destroy(struct stack *st)
{
    stack_release(st);
    stack_destroy_pools(st);
}

void stack_destroy_pools(struct stack *st)
{
    pktbuf_pool_destroy(&st->rx64);
    pktbuf_pool_destroy(&st->large);
    pktbuf_pool_destroy(&st->pool);
}

void stack_release(struct stack *st)
{
    for (int i = 0; i < st->nifs; i++) {
        struct stack_if *ifp = &st->ifs[i];
        for (int k = 0; k < ifp->ntx; k++)
            pktbuf_free(ifp->tx[k]);
        ifp->ntx = 0;
    }
    ip4_loop_flush(st);
    tcp_destroy(st);
    udp_destroy(st);
    ip4_loop_flush(st); /* what closing connections sent to each other */
    ip4_frag_destroy(st);
    arp_destroy(st);
}

static void timer_count(struct stack *st, unsigned n)
{
    if (n)
        CNT_ADD(&st->cnt, timer_fired, n);
}

void stack_poll(struct stack *st, uint64_t now)
{
    if (now > st->now)
        st->now = now;
    timer_count(st, timer_wheel_run(&st->tw, st->now, st));
}

void stack_input(struct stack *st, int ifidx, struct pktbuf *pb)
{
    pb->ifindex = (uint16_t)ifidx;
    eth_input(st, ifidx, pb);
}

int stack_rx(struct stack *st, int budget)
{
    struct pktbuf *pkts[NIC_BURST];
    int total = ip4_loop_input(st, budget);
    for (int i = 0; i < st->nifs && total < budget; i++) {
        struct stack_if *ifp = &st->ifs[i];
        if (!ifp->nic)
            continue;
        int want = budget - total < NIC_BURST ? budget - total : NIC_BURST;
        int n = nic_rx(ifp->nic, ifp->queue, pkts, want, st->now);
        for (int k = 0; k < n; k++)
            stack_input(st, i, pkts[k]);
        total += n > 0 ? n : 0;
    }
    return total;
}

void stack_if_flush(struct stack *st, int ifidx)
{
    struct stack_if *ifp = &st->ifs[ifidx];
    if (!ifp->ntx)
        return;
    if (ifp->nic)
        nic_tx(ifp->nic, ifp->queue, ifp->tx, ifp->ntx, st->now);
    else
        for (int k = 0; k < ifp->ntx; k++)
            pktbuf_free(ifp->tx[k]);
    ifp->ntx = 0;
}

void stack_flush(struct stack *st)
{
    for (int i = 0; i < st->nifs; i++) {
        stack_if_flush(st, i);
        if (st->ifs[i].nic)
            nic_flush(st->ifs[i].nic, st->ifs[i].queue, st->now);
    }
}

uint64_t stack_next_deadline(const struct stack *st)
{
    uint64_t t = timer_wheel_next(&st->tw);
    if (st->lo.head) /* looped-back datagrams wait: no sleeping */
        return st->now;
    for (int i = 0; i < st->nifs; i++) {
        if (!st->ifs[i].nic)
            continue;
        uint64_t n = nic_next_event_q(st->ifs[i].nic, st->ifs[i].queue); /* our queue's */
        if (n < t)
            t = n;
    }
    return t;
}

void stack_apply_tunables(struct stack *st, const struct stack_params *p)
{
    /* Pools, tables and interfaces keep their sizes; the rest is read on every use. */
    struct stack_params *c = &st->par;
    c->default_ttl = p->default_ttl;
    c->frag_timeout_ms = p->frag_timeout_ms;
    c->frag_max_bytes = p->frag_max_bytes;
    c->icmp_ratelimit_pps = p->icmp_ratelimit_pps;
    c->arp_reachable_ms = p->arp_reachable_ms;
    c->arp_stale_ms = p->arp_stale_ms;
    c->arp_retry_ms = p->arp_retry_ms;
    c->arp_retries = p->arp_retries;
    c->arp_queue_len = p->arp_queue_len;
    c->tcp_sack = p->tcp_sack;
    c->tcp_timestamps = p->tcp_timestamps;
    c->tcp_window_scaling = p->tcp_window_scaling;
    c->tcp_syncookies = p->tcp_syncookies;
    memcpy(c->tcp_cc, p->tcp_cc, sizeof(c->tcp_cc));
    c->tcp_time_wait_ms = p->tcp_time_wait_ms;
    c->tcp_fin_timeout_ms = p->tcp_fin_timeout_ms;
    c->tcp_syn_retries = p->tcp_syn_retries;
    c->tcp_synack_retries = p->tcp_synack_retries;
    c->tcp_retries2 = p->tcp_retries2;
    c->tcp_rto_min_ms = p->tcp_rto_min_ms;
    c->tcp_rto_max_ms = p->tcp_rto_max_ms;
    c->tcp_rto_init_ms = p->tcp_rto_init_ms;
    c->tcp_delack_ms = p->tcp_delack_ms;
    c->tcp_keepalive_time_s = p->tcp_keepalive_time_s;
    c->tcp_keepalive_intvl_s = p->tcp_keepalive_intvl_s;
    c->tcp_keepalive_probes = p->tcp_keepalive_probes;
    c->tcp_max_syn_backlog = p->tcp_max_syn_backlog;
    c->tcp_abort_on_overflow = p->tcp_abort_on_overflow;
    c->tcp_orphan_retries = p->tcp_orphan_retries;
    c->n_rules = p->n_rules;
    memcpy(c->rules, p->rules, sizeof(c->rules));
}

size_t stack_report_neigh(struct stack *st, char *buf, size_t cap)
{
    return arp_report(st, buf, cap);
}

size_t stack_report_routes(const struct stack *st, char *buf, size_t cap)
{
    size_t n = 0;
    char a[16], g[16];
    for (uint32_t i = 0; i < st->rt.n && n < cap; i++) {
        const struct route_entry *e = &st->rt.e[i];
        const char *dev = e->ifidx >= 0 && e->ifidx < st->nifs ? st->ifs[e->ifidx].p.name : "?";
        int w;
        if (e->via)
            w = snprintf(buf + n, cap - n, "%s/%u via %s dev %s metric %u\n", ip4_fmt(e->dst, a),
                         e->plen, ip4_fmt(e->via, g), dev, e->metric);
        else
            w = snprintf(buf + n, cap - n, "%s/%u dev %s %s\n", ip4_fmt(e->dst, a), e->plen, dev,
                         e->connected ? "proto kernel scope link" : "scope link");
        if (w < 0)
            break;
        n += (size_t)w;
    }
    return n < cap ? n : cap;
}

int stack_port_claim(struct stack *st, int proto, uint16_t port, bool shared)
{
    return st->port_claim
               ? st->port_claim(st, proto, port, shared ? STACK_CLAIM_SHARED : STACK_CLAIM, 0)
               : 0;
}

int stack_port_group(struct stack *st, uint16_t port, uint32_t key, enum stack_claim_op op)
{
    if (!st->port_claim)
        return -EOPNOTSUPP; /* one worker: no groups */
    return st->port_claim(st, 6, port, op, key);
}

void stack_port_release(struct stack *st, int proto, uint16_t port)
{
    if (st->port_claim)
        st->port_claim(st, proto, port, STACK_CLAIM_RELEASE, 0);
}

bool stack_port_ok(struct stack *st, int proto, uint16_t port)
{
    if (st->par.port_stride > 1 && port % st->par.port_stride != st->par.port_offset)
        return false;
    return !st->port_taken || !st->port_taken(st, proto, port);
}

void stack_input_steered(struct stack *st, struct pktbuf *pb)
{
    if (pb->steered == PKTBUF_STEER_ARP) {
        if (pb->ifindex < st->nifs) {
            arp_input(st, pb->ifindex, pb);
        } else {
            CNT_INC(&st->cnt, steer_drop_invalid);
            pktbuf_free(pb);
        }
        return;
    }
    /* The worker that received it validated the header (ip4_parse, checksum included):
     * the view is read back without checking again. Carrying the view itself would take
     * pktbuf past its one cache line for the one path that needs it. */
    struct ip4_view ip;
    if (ip4_peek(pktbuf_data(pb), pb->len, &ip) != IP4_OK) { /* cannot */
        CNT_INC(&st->cnt, steer_drop_invalid);
        pktbuf_free(pb);
        return;
    }
    if (pb->steered == PKTBUF_STEER_FRAG)
        ip4_frag_input(st, pb, &ip);
    else
        ip4_local_deliver(st, pb, &ip);
}
