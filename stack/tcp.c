/* TCP: connection table, objects, ISNs, SYN cookies, the owner's API. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "stack/tcp_impl.h"

#define TCP_CHUNK 256

const char *tcp_state_name(enum tcp_state s)
{
    static const char *const n[] = {"CLOSED",  "LISTEN",     "SYN-SENT",   "SYN-RECV",
                                    "ESTAB",   "FIN-WAIT-1", "FIN-WAIT-2", "CLOSE-WAIT",
                                    "CLOSING", "LAST-ACK",   "TIME-WAIT"};
    return (unsigned)s < sizeof(n) / sizeof(n[0]) ? n[s] : "?";
}

/* ---- SipHash-2-4: keyed hash for ISNs (RFC 6528) and SYN cookies ---- */
#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)

static uint64_t siphash2(const uint64_t key[2], uint64_t m0, uint64_t m1)
{
    uint64_t v0 = 0x736f6d6570736575ull ^ key[0], v1 = 0x646f72616e646f6dull ^ key[1];
    uint64_t v2 = 0x6c7967656e657261ull ^ key[0], v3 = 0x7465646279746573ull ^ key[1];
    uint64_t m[3] = {m0, m1, 16ull << 56};
    for (int i = 0; i < 3; i++) {
        v3 ^= m[i];
        SIPROUND;
        SIPROUND;
        v0 ^= m[i];
    }
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

static uint64_t tuple_hash(const struct stack *st, uint32_t la, uint16_t lp, uint32_t ra,
                           uint16_t rp, uint64_t extra)
{
    return siphash2(st->par.secret, (uint64_t)la << 32 | ra,
                    ((uint64_t)lp << 16 | rp) ^ extra << 32);
}

uint32_t tcp_isn(const struct stack *st, uint32_t la, uint16_t lp, uint32_t ra, uint16_t rp)
{
    /* RFC 6528: ISN = M + F(4-tuple, secret), M a 4 microsecond clock. */
    return (uint32_t)(st->now / 4000) + (uint32_t)tuple_hash(st, la, lp, ra, rp, 0);
}

/* SYN cookies (RFC 4987 3.6): the ISN carries a 6-bit time counter (64 s each), a 2-bit
 * MSS index and a 24-bit keyed hash; the ACK that completes the handshake proves it. */
static const uint16_t cookie_mss[4] = {536, 1300, 1440, 1460};

static uint32_t cookie_hash(const struct stack *st, const struct tcp_seg *s, uint32_t t,
                            uint32_t seq)
{
    return (uint32_t)tuple_hash(st, s->dst, s->h.dport, s->src, s->h.sport,
                                (uint64_t)t << 32 | seq) &
           0xffffffu;
}

uint32_t tcp_cookie_make(const struct stack *st, const struct tcp_seg *s, uint16_t mss)
{
    uint32_t idx = 0;
    for (uint32_t i = 0; i < 4; i++)
        if (cookie_mss[i] <= mss)
            idx = i;
    uint32_t t = (uint32_t)(st->now / (64 * NS_PER_SEC)) & 0x3f;
    return t << 26 | idx << 24 | ((cookie_hash(st, s, t, s->seq) + idx) & 0xffffffu);
}

uint16_t tcp_cookie_check(const struct stack *st, const struct tcp_seg *s)
{
    uint32_t c = s->ack - 1, seq = s->seq - 1;
    uint32_t t = c >> 26, idx = c >> 24 & 3;
    uint32_t now_t = (uint32_t)(st->now / (64 * NS_PER_SEC)) & 0x3f;
    /* Valid for the current and the previous counter value: 64 to 128 seconds. */
    if (t != now_t && t != ((now_t - 1) & 0x3f))
        return 0;
    if (((cookie_hash(st, s, t, seq) + idx) & 0xffffffu) != (c & 0xffffffu))
        return 0;
    return cookie_mss[idx];
}

/* ---- table ---- */

static uint32_t conn_hash(uint32_t la, uint16_t lp, uint32_t ra, uint16_t rp)
{
    uint32_t h = la * 0x9e3779b1u ^ ra * 0x85ebca6bu ^ ((uint32_t)lp << 16 | rp) * 0xc2b2ae35u;
    return (h ^ h >> 15) & (TCP_HASH - 1);
}

int tcp_init(struct stack *st)
{
    st->tcp = calloc(1, sizeof(*st->tcp));
    if (!st->tcp)
        return -ENOMEM;
    st->tcp->port_cursor = (uint32_t)(st->now / 1000u);
    st->tcp->chal_tokens = 1000;
    st->l4_input[IPPROTO_TCP_] = tcp_input;
    st->l4_err[IPPROTO_TCP_] = tcp_err_input;
    return 0;
}

void tcp_destroy(struct stack *st)
{
    struct tcp_table *t = st->tcp;
    if (!t)
        return;
    for (uint32_t i = 0; i < t->nchunks; i++) {
        /* Connections still alive (TIME_WAIT, orphans) have timers in the wheel, which
         * outlives this table: take them out before the memory goes. */
        struct tcp_pcb *c = t->chunks[i];
        for (uint32_t k = 0; k < TCP_CHUNK; k++) {
            timer_cancel(&st->tw, &c[k].t_rtx);
            timer_cancel(&st->tw, &c[k].t_delack);
            timer_cancel(&st->tw, &c[k].t_keep);
            timer_cancel(&st->tw, &c[k].t_pace);
        }
        free(t->chunks[i]);
    }
    free(t->chunks);
    free(t);
    st->tcp = NULL;
}

struct tcp_pcb *tcp_alloc(struct stack *st)
{
    struct tcp_table *t = st->tcp;
    if (!t->free) {
        /* Objects come in chunks: no allocation per connection in steady state, and a
         * SYN flood is bounded by tcp_max_conns (then SYN cookies take over). */
        if (t->allocated + TCP_CHUNK > st->par.tcp_max_conns)
            return NULL;
        struct tcp_pcb *c = calloc(TCP_CHUNK, sizeof(*c));
        void **nc = realloc(t->chunks, (t->nchunks + 1) * sizeof(void *));
        if (!c || !nc) {
            free(c);
            if (nc)
                t->chunks = nc;
            return NULL;
        }
        t->chunks = nc;
        t->chunks[t->nchunks++] = c;
        for (int i = TCP_CHUNK - 1; i >= 0; i--) {
            c[i].fnext = t->free;
            t->free = &c[i];
        }
        t->allocated += TCP_CHUNK;
    }
    struct tcp_pcb *p = t->free;
    t->free = p->fnext;
    memset(p, 0, sizeof(*p));
    t->in_use++;
    tcp_init_pcb_timers(p);
    p->ssthresh = 0xffffffffu;
    p->rto_ms = st->par.tcp_rto_init_ms;
    p->mss = TCP_DEFAULT_MSS;
    p->nodelay = false;
    p->keep_idle_s = st->par.tcp_keepalive_time_s;
    p->keep_intvl_s = st->par.tcp_keepalive_intvl_s;
    p->keep_cnt = st->par.tcp_keepalive_probes;
    p->cc = tcp_cc_find(st->par.tcp_cc);
    return p;
}

void tcp_free(struct stack *st, struct tcp_pcb *pcb)
{
    tcp_unhash(st, pcb);
    timer_cancel(&st->tw, &pcb->t_rtx);
    timer_cancel(&st->tw, &pcb->t_delack);
    timer_cancel(&st->tw, &pcb->t_keep);
    timer_cancel(&st->tw, &pcb->t_pace);
    pcb->state = TCPS_CLOSED;
    pcb->fnext = st->tcp->free;
    st->tcp->free = pcb;
    st->tcp->in_use--;
}

void tcp_hash_conn(struct stack *st, struct tcp_pcb *pcb)
{
    struct tcp_pcb **b = &st->tcp->conn[conn_hash(pcb->laddr, pcb->lport, pcb->raddr, pcb->rport)];
    pcb->hnext = *b;
    *b = pcb;
    pcb->hashed = true;
    st->tcp->count++;
}

void tcp_unhash(struct stack *st, struct tcp_pcb *pcb)
{
    struct tcp_pcb **pp;
    if (pcb->hashed) {
        pp = &st->tcp->conn[conn_hash(pcb->laddr, pcb->lport, pcb->raddr, pcb->rport)];
        while (*pp && *pp != pcb)
            pp = &(*pp)->hnext;
        if (*pp)
            *pp = pcb->hnext;
        pcb->hashed = false;
        st->tcp->count--;
    }
    if (pcb->listen_hashed) {
        pp = &st->tcp->lis[pcb->lport & (TCP_LHASH - 1)];
        while (*pp && *pp != pcb)
            pp = &(*pp)->hnext;
        if (*pp)
            *pp = pcb->hnext;
        pcb->listen_hashed = false;
    }
    pcb->hnext = NULL;
}

struct tcp_pcb *tcp_lookup(struct stack *st, uint32_t laddr, uint16_t lport, uint32_t raddr,
                           uint16_t rport)
{
    for (struct tcp_pcb *p = st->tcp->conn[conn_hash(laddr, lport, raddr, rport)]; p; p = p->hnext)
        if (p->lport == lport && p->rport == rport && p->raddr == raddr && p->laddr == laddr)
            return p;
    return NULL;
}

struct tcp_pcb *tcp_lookup_listener(struct stack *st, uint32_t laddr, uint16_t lport)
{
    struct tcp_pcb *best = NULL;
    for (struct tcp_pcb *p = st->tcp->lis[lport & (TCP_LHASH - 1)]; p; p = p->hnext) {
        if (p->lport != lport || (p->laddr && p->laddr != laddr))
            continue;
        if (p->laddr)
            return p; /* exact address beats the wildcard */
        best = p;
    }
    return best;
}

uint32_t tcp_count(const struct stack *st)
{
    return st->tcp ? st->tcp->count : 0;
}

bool tcp_challenge_ok(struct stack *st)
{
    /* RFC 5961 7: limit challenge ACKs (1000 per second, like Linux). */
    struct tcp_table *t = st->tcp;
    if (st->now - t->chal_ts >= NS_PER_SEC) {
        t->chal_ts = st->now;
        t->chal_tokens = 1000;
    }
    if (!t->chal_tokens)
        return false;
    t->chal_tokens--;
    return true;
}

uint16_t tcp_route_mss(struct stack *st, uint32_t dst)
{
    int ifidx;
    uint32_t nh;
    if (route_lookup(st, dst, &ifidx, &nh))
        return TCP_DEFAULT_MSS;
    return (uint16_t)(st->ifs[ifidx].p.mtu - IP4_HLEN - TCP_HLEN);
}

uint16_t tcp_own_mss(struct stack *st, const struct tcp_pcb *pcb, uint32_t dst)
{
    uint16_t m = tcp_route_mss(st, dst);
    return pcb->user_mss && pcb->user_mss < m ? pcb->user_mss : m;
}

bool tcp_route_tso(struct stack *st, uint32_t dst)
{
    int ifidx;
    uint32_t nh;
    return route_lookup(st, dst, &ifidx, &nh) == 0 && st->ifs[ifidx].tso;
}

static void ev_queue(struct tcp_table *t, struct tcp_pcb *pcb)
{
    if (pcb->ev_queued)
        return;
    pcb->ev_queued = true;
    FIFO_APPEND(t->ev_head, t->ev_tail, pcb, ev_next);
}

void tcp_ev_post(struct stack *st, struct tcp_pcb *pcb, enum tcp_event e, int err)
{
    if (!pcb->ev || pcb->closed_sent)
        return;
    if (!st->tcp->ev_hold) {
        pcb->ev(pcb->ctx, pcb, e, err);
        return;
    }
    pcb->ev_mask |= (uint8_t)(1u << e);
    if (e == TCP_EV_CLOSED)
        pcb->ev_err = err;
    ev_queue(st->tcp, pcb);
}

void tcp_ev_hold(struct stack *st)
{
    st->tcp->ev_hold++;
}

void tcp_ev_release(struct stack *st)
{
    struct tcp_table *t = st->tcp;

    if (--t->ev_hold)
        return;
    while (t->ev_head) {
        struct tcp_pcb *p = t->ev_head;
        t->ev_head = p->ev_next;
        if (!t->ev_head)
            t->ev_tail = NULL;
        p->ev_queued = false;
        uint8_t m = p->ev_mask;
        p->ev_mask = 0;
        /* In enum order, which is the order they can happen in; CLOSED is last. An owner
         * callback that calls the stack gets its events at once (no hold now). */
        for (int e = TCP_EV_CONNECTED; e <= TCP_EV_CLOSED && p->ev; e++)
            if (m & (1u << e))
                p->ev(p->ctx, p, (enum tcp_event)e, e == TCP_EV_CLOSED ? p->ev_err : 0);
        if (p->free_held) {
            p->free_held = false;
            if (!p->owned && !p->in_accept_q && p->state == TCPS_CLOSED)
                tcp_free(st, p);
        }
    }
}

void tcp_notify_closed(struct stack *st, struct tcp_pcb *pcb, int err)
{
    if (pcb->closed_sent || !pcb->ev)
        return;
    /* From here the owner's buffers are no longer ours to touch, and no other event
     * follows, whether CLOSED goes now or is held. */
    pcb->buf = NULL;
    tcp_ev_post(st, pcb, TCP_EV_CLOSED, err);
    pcb->closed_sent = true;
}

static void listener_drop_children(struct stack *st, struct tcp_pcb *l);

static void orphan_done(struct stack *st, struct tcp_pcb *pcb)
{
    if (pcb->orphan) {
        pcb->orphan = false;
        CNT_ADD(&st->cnt, tcp_orphans, (uint64_t)-1);
    }
}

void tcp_set_closed(struct stack *st, struct tcp_pcb *pcb, int err)
{
    orphan_done(st, pcb);
    if (pcb->state == TCPS_LISTEN)
        listener_drop_children(st, pcb);
    /* A queued child is on exactly one of its listener's queues, told apart by
     * in_accept_q (parent is set for both). One that dies in the accept queue leaves it:
     * the owner frees its context on the CLOSED event below, so accept() must never
     * return it, and it must stop counting against the backlog. */
    if (pcb->parent && !pcb->in_accept_q) { /* still in a listener's SYN queue */
        struct tcp_pcb **pp = &pcb->parent->syn_q;
        while (*pp && *pp != pcb)
            pp = &(*pp)->qnext;
        if (*pp) {
            *pp = pcb->qnext;
            pcb->parent->syn_qlen--;
        }
        pcb->parent = NULL;
    }
    if (pcb->in_accept_q && pcb->parent) { /* reset before the application took it */
        struct tcp_pcb *l = pcb->parent, **pp = &l->acc_head, *prev = NULL;
        while (*pp && *pp != pcb) {
            prev = *pp;
            pp = &(*pp)->qnext;
        }
        if (*pp) {
            *pp = pcb->qnext;
            if (l->acc_tail == pcb)
                l->acc_tail = prev;
            l->acc_qlen--;
        }
        pcb->in_accept_q = false;
        pcb->parent = NULL;
    }
    pcb->state = TCPS_CLOSED;
    tcp_unhash(st, pcb);
    timer_cancel(&st->tw, &pcb->t_rtx);
    timer_cancel(&st->tw, &pcb->t_delack);
    timer_cancel(&st->tw, &pcb->t_keep);
    timer_cancel(&st->tw, &pcb->t_pace);
    tcp_notify_closed(st, pcb, err);
    /* Not freed while its events are held: the segment being processed may still look at
     * it, and a free pcb can be handed out again at once (to the SYN that reuses a
     * TIME_WAIT 4-tuple, say). tcp_ev_release frees it. */
    if (!pcb->owned && !pcb->in_accept_q) {
        if (pcb->ev_queued || st->tcp->ev_hold) {
            pcb->free_held = true;
            ev_queue(st->tcp, pcb);
        } else {
            tcp_free(st, pcb);
        }
    }
}

void tcp_enter_time_wait(struct stack *st, struct tcp_pcb *pcb)
{
    orphan_done(st, pcb); /* as Linux counts them: TIME_WAIT is not an orphan */
    pcb->state = TCPS_TIME_WAIT;
    pcb->ack_now = false; /* the FIN was just ACKed; TIME_WAIT only re-ACKs a repeated FIN */
    timer_cancel(&st->tw, &pcb->t_delack);
    timer_cancel(&st->tw, &pcb->t_keep);
    timer_cancel(&st->tw, &pcb->t_pace);
    pcb->persist = false;
    timer_arm(&st->tw, &pcb->t_rtx, st->now + (uint64_t)st->par.tcp_time_wait_ms * NS_PER_MS);
    /* Everything we sent is acknowledged: the owner's buffers are free. */
    tcp_notify_closed(st, pcb, 0);
}

static void listener_drop_children(struct stack *st, struct tcp_pcb *l)
{
    while (l->syn_q) {
        struct tcp_pcb *c = l->syn_q;
        l->syn_q = c->qnext;
        l->syn_qlen--;
        c->parent = NULL;
        tcp_set_closed(st, c, 0);
    }
    while (l->acc_head) {
        struct tcp_pcb *c = l->acc_head;
        l->acc_head = c->qnext;
        l->acc_qlen--;
        c->in_accept_q = false;
        c->parent = NULL;
        /* Accepted by the stack, never by the application: reset it (RFC 2525 2.17). */
        tcp_send_rst(st, c);
        tcp_set_closed(st, c, ECONNABORTED);
    }
    l->acc_tail = NULL;
}

void tcp_init_pcb_timers(struct tcp_pcb *pcb)
{
    timer_init(&pcb->t_rtx, tcp_rtx_timer);
    timer_init(&pcb->t_delack, tcp_delack_timer);
    timer_init(&pcb->t_keep, tcp_keep_timer);
    timer_init(&pcb->t_pace, tcp_pace_timer);
}

/* ---- owner API ---- */

struct tcp_pcb *tcp_new(struct stack *st, const struct tcp_buf_ops *buf, tcp_event_fn ev, void *ctx)
{
    struct tcp_pcb *p = tcp_alloc(st);
    if (!p)
        return NULL;
    p->buf = buf;
    p->ev = ev;
    p->ctx = ctx;
    p->owned = true;
    return p;
}

static bool port_busy(struct stack *st, uint32_t addr, uint16_t port)
{
    for (struct tcp_pcb *p = st->tcp->lis[port & (TCP_LHASH - 1)]; p; p = p->hnext)
        if (p->lport == port && (!p->laddr || !addr || p->laddr == addr))
            return true;
    return false;
}

int tcp_bind(struct stack *st, struct tcp_pcb *pcb, uint32_t addr, uint16_t port)
{
    if (pcb->state != TCPS_CLOSED || pcb->lport)
        return -EINVAL;
    if (addr && !ip4_is_local(st, addr))
        return -EADDRNOTAVAIL;
    if (port && port_busy(st, addr, port))
        return -EADDRINUSE;
    pcb->laddr = addr;
    pcb->lport = port; /* 0: chosen at listen/connect */
    return 0;
}

int tcp_listen(struct stack *st, struct tcp_pcb *pcb, int backlog, tcp_accept_fn accept_cb,
               void *lctx)
{
    if (pcb->state == TCPS_LISTEN) {
        pcb->backlog = (uint16_t)(backlog < 1 ? 1 : backlog > 65535 ? 65535 : backlog);
        return 0;
    }
    if (pcb->state != TCPS_CLOSED)
        return -EINVAL;
    if (!pcb->lport) {
        for (uint32_t i = 0; i < 28232 && !pcb->lport; i++) {
            uint16_t cand = (uint16_t)(32768 + (st->tcp->port_cursor++ % 28232));
            if (!port_busy(st, pcb->laddr, cand) && stack_port_ok(st, 6, cand))
                pcb->lport = cand;
        }
        if (!pcb->lport)
            return -EADDRINUSE;
    }
    if (port_busy(st, pcb->laddr, pcb->lport))
        return -EADDRINUSE;
    pcb->state = TCPS_LISTEN;
    pcb->backlog = (uint16_t)(backlog < 1 ? 1 : backlog > 65535 ? 65535 : backlog);
    pcb->accept_cb = accept_cb;
    pcb->lctx = lctx;
    struct tcp_pcb **b = &st->tcp->lis[pcb->lport & (TCP_LHASH - 1)];
    pcb->hnext = *b;
    *b = pcb;
    pcb->listen_hashed = true;
    return 0;
}

struct tcp_pcb *tcp_accept(struct stack *st, struct tcp_pcb *l)
{
    struct tcp_pcb *c = l->acc_head;
    if (!c)
        return NULL;
    l->acc_head = c->qnext;
    if (!l->acc_head)
        l->acc_tail = NULL;
    l->acc_qlen--;
    c->qnext = NULL;
    c->in_accept_q = false;
    c->parent = NULL;
    c->owned = true;
    return c;
}

/* RFC 6056 algorithm 3: a per-destination offset, so many connections to one peer spread
 * over the whole range and a port can be reused toward other peers. */
static int pick_port(struct stack *st, struct tcp_pcb *pcb)
{
    const uint32_t lo = st->par.udp_port_min, span = st->par.udp_port_max - lo + 1u;
    uint32_t off = (uint32_t)tuple_hash(st, pcb->laddr, 0, pcb->raddr, pcb->rport, 1);
    for (uint32_t i = 0; i < span; i++) {
        uint16_t cand = (uint16_t)(lo + (off + st->tcp->port_cursor + i) % span);
        if (!tcp_lookup(st, pcb->laddr, cand, pcb->raddr, pcb->rport) && !port_busy(st, 0, cand) &&
            stack_port_ok(st, 6, cand)) {
            st->tcp->port_cursor += i + 1;
            pcb->lport = cand;
            return 0;
        }
    }
    return -EADDRNOTAVAIL;
}

int tcp_connect(struct stack *st, struct tcp_pcb *pcb, uint32_t addr, uint16_t port)
{
    if (pcb->state == TCPS_SYN_SENT)
        return -EALREADY;
    if (pcb->state != TCPS_CLOSED)
        return pcb->state == TCPS_LISTEN ? -EINVAL : -EISCONN;
    if (!port || !addr)
        return -EINVAL;
    if (ip4_is_bcast(st, addr) || ip4_is_mcast(addr))
        return -ENETUNREACH;
    int ifidx;
    uint32_t nh;
    if (route_lookup(st, addr, &ifidx, &nh))
        return -ENETUNREACH;
    pcb->raddr = addr;
    pcb->rport = port;
    if (!pcb->laddr)
        pcb->laddr = st->ifs[ifidx].p.addr;
    if (!pcb->lport) {
        int rc = pick_port(st, pcb);
        if (rc)
            return rc;
    } else if (tcp_lookup(st, pcb->laddr, pcb->lport, addr, port)) {
        return -EADDRINUSE;
    }
    pcb->iss = tcp_isn(st, pcb->laddr, pcb->lport, pcb->raddr, pcb->rport);
    pcb->snd_una = pcb->snd_nxt = pcb->snd_max = pcb->iss;
    pcb->adv_mss = tcp_own_mss(st, pcb, addr);
    pcb->mss = pcb->adv_mss < TCP_DEFAULT_MSS ? pcb->adv_mss : TCP_DEFAULT_MSS;
    pcb->rcv_wscale = st->par.tcp_window_scaling ? st->par.tcp_rcv_wscale : 0;
    pcb->ts_off = (uint32_t)tuple_hash(st, pcb->laddr, pcb->lport, addr, port, 2);
    pcb->state = TCPS_SYN_SENT;
    tcp_hash_conn(st, pcb);
    CNT_INC(&st->cnt, tcp_active_opens);
    tcp_send_syn(st, pcb);
    return 0;
}

int tcp_shutdown(struct stack *st, struct tcp_pcb *pcb, int how)
{
    if (how < 0 || how > 2)
        return -EINVAL;
    switch (pcb->state) {
    case TCPS_ESTABLISHED:
    case TCPS_CLOSE_WAIT:
    case TCPS_SYN_RECEIVED:
    case TCPS_FIN_WAIT_1:
    case TCPS_FIN_WAIT_2:
    case TCPS_CLOSING:
    case TCPS_LAST_ACK:
    case TCPS_TIME_WAIT:
        break;
    case TCPS_SYN_SENT:
        if (how != 0) { /* no connection yet: nothing to half-close */
            tcp_set_closed(st, pcb, 0);
            return 0;
        }
        break;
    default:
        return -ENOTCONN;
    }
    if (how != 1)
        pcb->shut_rd = true;
    if (how != 0 && !pcb->fin_queued) {
        pcb->fin_queued = true;
        if (pcb->state == TCPS_ESTABLISHED || pcb->state == TCPS_SYN_RECEIVED)
            pcb->state = TCPS_FIN_WAIT_1;
        else if (pcb->state == TCPS_CLOSE_WAIT)
            pcb->state = TCPS_LAST_ACK;
        tcp_output(st, pcb);
    }
    return 0;
}

void tcp_close(struct stack *st, struct tcp_pcb *pcb)
{
    pcb->owned = false;
    pcb->closed_by_app = true;
    switch (pcb->state) {
    case TCPS_CLOSED:
    case TCPS_LISTEN:
    case TCPS_SYN_SENT:
        tcp_set_closed(st, pcb, 0);
        return;
    case TCPS_TIME_WAIT:
        return; /* the timer frees it */
    default:
        break;
    }
    /* An orphan now: it lives on until what was written is delivered and the FIN is
     * acknowledged, or its retries run out (tcp.orphan_retries, fin_timeout_ms). */
    if (!pcb->orphan) {
        pcb->orphan = true;
        CNT_INC(&st->cnt, tcp_orphans);
    }
    pcb->shut_rd = true;
    if (!pcb->fin_queued)
        tcp_shutdown(st, pcb, 1);
    if (pcb->state == TCPS_FIN_WAIT_2) /* orphaned: do not wait forever for the peer's FIN */
        timer_arm(&st->tw, &pcb->t_rtx, st->now + (uint64_t)st->par.tcp_fin_timeout_ms * NS_PER_MS);
}

void tcp_abort(struct stack *st, struct tcp_pcb *pcb)
{
    pcb->owned = false;
    pcb->closed_sent = true; /* no events, not even those held */
    pcb->ev_mask = 0;
    pcb->buf = NULL;
    if (pcb->state != TCPS_CLOSED && pcb->state != TCPS_LISTEN && pcb->state != TCPS_SYN_SENT &&
        pcb->state != TCPS_TIME_WAIT)
        tcp_send_rst(st, pcb);
    tcp_set_closed(st, pcb, 0);
}

int tcp_set_cc(struct tcp_pcb *pcb, const char *name)
{
    const struct tcp_cc_ops *cc = tcp_cc_find(name);
    if (!cc || strcmp(cc->name, name))
        return -ENOENT;
    pcb->cc = cc;
    pcb->pacing_rate = 0; /* the new control paces if it wants to */
    if (pcb->state >= TCPS_ESTABLISHED)
        cc->init(pcb);
    return 0;
}

size_t tcp_report(struct stack *st, char *buf, size_t cap)
{
    char la[16], ra[16];
    int h =
        snprintf(buf, cap, "%-10s %6s %6s %s %s\n", "State", "Recv-Q", "Send-Q", "Local", "Peer");
    size_t n = h < 0 ? 0 : (size_t)h, hdr = n;
    /* TIME_WAIT last: after a storm of short connections they can fill the caller's
     * buffer, and the live connections are the interesting ones. */
    for (uint32_t b = 0; b < 2 * (TCP_HASH + TCP_LHASH) && n < cap; b++) {
        uint32_t k = b % (TCP_HASH + TCP_LHASH);
        bool tw_pass = b >= TCP_HASH + TCP_LHASH;
        struct tcp_pcb *p = k < TCP_HASH ? st->tcp->conn[k] : st->tcp->lis[k - TCP_HASH];
        for (; p && n < cap; p = p->hnext) {
            if ((p->state == TCPS_TIME_WAIT) != tw_pass)
                continue;
            uint32_t sendq = p->state == TCPS_LISTEN ? p->backlog : tcp_flight(p);
            uint32_t recvq = p->state == TCPS_LISTEN ? p->acc_qlen
                             : p->buf                ? p->buf->rcv_space(p->ctx)
                                                     : 0;
            int w =
                snprintf(buf + n, cap - n,
                         "%-10s %6u %6u %s:%u %s:%u rtt %.3f/%.3f ms cwnd %u ssthresh %u mss %u "
                         "retrans %u %s rwnd %u swnd %u\n",
                         tcp_state_name(p->state), recvq, sendq, ip4_fmt(p->laddr, la), p->lport,
                         p->state == TCPS_LISTEN ? "*" : ip4_fmt(p->raddr, ra), p->rport,
                         p->srtt_us / 1000.0, p->rttvar_us / 1000.0, p->mss ? p->cwnd / p->mss : 0,
                         p->ssthresh == 0xffffffffu ? 0 : p->ssthresh / (p->mss ? p->mss : 1),
                         p->mss, p->total_retrans, p->cc ? p->cc->name : "",
                         SEQ_GT(p->rcv_adv, p->rcv_nxt) ? p->rcv_adv - p->rcv_nxt : 0, p->snd_wnd);
            if (w < 0)
                return n;
            n += (size_t)w;
        }
    }
    if (n == hdr)
        return 0; /* no connections: no header either */
    return n < cap ? n : cap;
}
