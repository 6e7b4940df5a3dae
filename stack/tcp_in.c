/* TCP input: RFC 9293 3.10.7 "SEGMENT ARRIVES", with RFC 5961 (blind in-window attacks),
 * RFC 7323 (timestamps, PAWS, window scaling), RFC 2018/6675 (SACK), RFC 5681/6582
 * (congestion control, NewReno), RFC 6298 (RTO), RFC 6191 (TIME_WAIT reuse). */
#include <errno.h>

#include "stack/tcp_impl.h"

/* ---- RTT and RTO (RFC 6298 2) ---- */
void tcp_update_rtt(struct stack *st, struct tcp_pcb *pcb, uint32_t r)
{
    if (r == 0)
        r = 1;
    if (!pcb->srtt_us) {
        pcb->srtt_us = r;
        pcb->rttvar_us = r / 2;
    } else {
        uint32_t d = pcb->srtt_us > r ? pcb->srtt_us - r : r - pcb->srtt_us;
        pcb->rttvar_us = (3 * pcb->rttvar_us + d) / 4;
        pcb->srtt_us = (7 * pcb->srtt_us + r) / 8;
    }
    if (!pcb->min_rtt_us || r < pcb->min_rtt_us)
        pcb->min_rtt_us = r;
    uint32_t var = 4 * pcb->rttvar_us < 1000 ? 1000 : 4 * pcb->rttvar_us; /* G = 1 ms */
    uint32_t rto = (pcb->srtt_us + var + 999) / 1000;
    if (rto < st->par.tcp_rto_min_ms)
        rto = st->par.tcp_rto_min_ms;
    if (rto > st->par.tcp_rto_max_ms)
        rto = st->par.tcp_rto_max_ms;
    pcb->rto_ms = rto;
    pcb->backoff = 0; /* a valid sample ends the back-off (RFC 6298 5.7, Karn) */
}

/* ---- SACK scoreboard (sender side) ---- */
uint32_t tcp_sacked_bytes(const struct tcp_pcb *pcb)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < pcb->nsacked; i++)
        n += pcb->sacked[i].end - pcb->sacked[i].start;
    return n;
}

static void range_insert(struct tcp_range *r, uint8_t *n, uint8_t max, uint32_t s, uint32_t e)
{
    /* Keep sorted, merged ranges; when full, the range furthest from snd_una goes. */
    uint8_t i = 0;
    while (i < *n && SEQ_LT(r[i].end, s))
        i++;
    if (i < *n && SEQ_LEQ(r[i].start, e)) {
        if (SEQ_LT(s, r[i].start))
            r[i].start = s;
        if (SEQ_GT(e, r[i].end))
            r[i].end = e;
        while (i + 1 < *n && SEQ_LEQ(r[i + 1].start, r[i].end)) {
            if (SEQ_GT(r[i + 1].end, r[i].end))
                r[i].end = r[i + 1].end;
            memmove(&r[i + 1], &r[i + 2], (size_t)(*n - i - 2) * sizeof(*r));
            (*n)--;
        }
        return;
    }
    if (*n == max) {
        if (i == max)
            return;
        (*n)--;
    }
    memmove(&r[i + 1], &r[i], (size_t)(*n - i) * sizeof(*r));
    r[i].start = s;
    r[i].end = e;
    (*n)++;
}

/* RFC 2883: the first block reports a duplicate when it lies below the ACK, or inside
 * the second block. A duplicate of a segment retransmitted in the last recovery means that
 * retransmission was not needed; when every one of them comes back so (RFC 3708), the
 * recovery was spurious (reordering, a delayed ACK) and its reduction is undone. */
static void dsack_check(struct stack *st, struct tcp_pcb *pcb, const struct tcp_seg *s)
{
    const struct tcp_opts *o = &s->o;
    uint32_t ds = o->sack[0].start, de = o->sack[0].end;
    bool dup = SEQ_LEQ(de, s->ack) ||
               (o->nsack > 1 && SEQ_GEQ(ds, o->sack[1].start) && SEQ_LEQ(de, o->sack[1].end));
    if (!dup || !SEQ_LT(ds, de))
        return;
    CNT_INC(&st->cnt, tcp_dsack_rx);
    if (!pcb->undo_ok || !pcb->undo_retrans || SEQ_LT(ds, pcb->undo_marker) ||
        SEQ_GT(de, pcb->high_rxt))
        return; /* not a range this recovery sent again */
    uint32_t segs = (de - ds + pcb->mss - 1) / pcb->mss;
    pcb->undo_retrans = segs < pcb->undo_retrans ? pcb->undo_retrans - segs : 0;
    if (pcb->undo_retrans)
        return;
    CNT_INC(&st->cnt, tcp_dsack_undo);
    pcb->undo_ok = false;
    if (pcb->cwnd < pcb->undo_cwnd)
        pcb->cwnd = pcb->undo_cwnd;
    if (pcb->ssthresh < pcb->undo_ssthresh)
        pcb->ssthresh = pcb->undo_ssthresh;
    if (pcb->in_recovery && !pcb->loss_mode) {
        pcb->in_recovery = false;
        pcb->nrxt = 0;
        pcb->recover = pcb->snd_una; /* a new loss may start a recovery at once */
    }
}

static void sack_update(struct tcp_pcb *pcb, const struct tcp_opts *o)
{
    for (uint32_t k = 0; k < o->nsack; k++) {
        uint32_t s = o->sack[k].start, e = o->sack[k].end;
        /* Only blocks inside what is outstanding (D-SACKs below snd_una are ignored). */
        if (!SEQ_LT(s, e) || SEQ_LT(s, pcb->snd_una) || SEQ_GT(e, pcb->snd_max))
            continue;
        range_insert(pcb->sacked, &pcb->nsacked, TCP_MAX_SACK, s, e);
        if (SEQ_GT(e, pcb->high_sack))
            pcb->high_sack = e;
    }
}

static void sack_trim(struct tcp_pcb *pcb)
{
    uint8_t j = 0;
    for (uint8_t i = 0; i < pcb->nsacked; i++) {
        struct tcp_range r = pcb->sacked[i];
        if (SEQ_LEQ(r.end, pcb->snd_una))
            continue;
        if (SEQ_LT(r.start, pcb->snd_una))
            r.start = pcb->snd_una;
        pcb->sacked[j++] = r;
    }
    pcb->nsacked = j;
}

/* ---- options at connection set-up ---- */
static void negotiate(struct stack *st, struct tcp_pcb *pcb, const struct tcp_seg *s)
{
    uint16_t route = tcp_own_mss(st, pcb, pcb->raddr);
    pcb->adv_mss = route;
    uint16_t peer = s->o.mss_ok ? s->o.mss : TCP_DEFAULT_MSS; /* RFC 9293 3.7.1 */
    pcb->mss = peer < route ? peer : route;
    if (pcb->mss < 64)
        pcb->mss = 64;
    pcb->ws_ok = s->o.ws_ok && st->par.tcp_window_scaling;
    pcb->snd_wscale = pcb->ws_ok ? s->o.ws : 0;
    pcb->rcv_wscale = pcb->ws_ok ? st->par.tcp_rcv_wscale : 0;
    pcb->sack_ok = s->o.sack_perm && st->par.tcp_sack;
    pcb->ts_ok = s->o.ts_ok && st->par.tcp_timestamps;
    if (pcb->ts_ok) {
        pcb->ts_recent = s->o.tsval;
        pcb->ts_recent_age = st->now;
    }
}

static void established(struct stack *st, struct tcp_pcb *pcb)
{
    pcb->state = TCPS_ESTABLISHED;
    /* RFC 6298 5.7: the SYN or SYN-ACK timed out and no RTT was measured: data starts
     * with a 3 s RTO, not the initial one the handshake used. */
    if (pcb->rtx_count && !pcb->srtt_us && pcb->rto_ms < TCP_RTO_FALLBACK_MS)
        pcb->rto_ms = TCP_RTO_FALLBACK_MS;
    pcb->rtx_count = 0;
    pcb->backoff = 0;
    pcb->tso = tcp_route_tso(st, pcb->raddr);
    pcb->quickacks = 16;
    pcb->cc->init(pcb);
    pcb->cwnd = 10u * pcb->mss; /* RFC 6928 */
    pcb->high_sack = pcb->recover = pcb->snd_una;
    pcb->last_rx_ns = st->now;
    CNT_INC(&st->cnt, tcp_established);
    if (pcb->snd_una == pcb->snd_max)
        timer_cancel(&st->tw, &pcb->t_rtx);
    tcp_arm_keepalive(st, pcb);
}

/* ---- passive open ---- */
static struct tcp_pcb *new_child(struct stack *st, struct tcp_pcb *l, const struct tcp_seg *s)
{
    struct tcp_pcb *c = tcp_alloc(st);
    if (!c) {
        CNT_INC(&st->cnt, tcp_drop_no_mem);
        return NULL;
    }
    c->laddr = s->dst;
    c->lport = s->h.dport;
    c->raddr = s->src;
    c->rport = s->h.sport;
    c->nodelay = l->nodelay;
    c->keepalive = l->keepalive;
    c->keep_idle_s = l->keep_idle_s;
    c->keep_intvl_s = l->keep_intvl_s;
    c->keep_cnt = l->keep_cnt;
    c->user_timeout_ms = l->user_timeout_ms;
    c->ttl = l->ttl; /* what the listener was given, as Linux's children inherit it */
    c->tos = l->tos;
    c->user_mss = l->user_mss;
    c->cc = l->cc;
    c->ts_off = tcp_isn(st, c->laddr, c->lport, c->raddr, c->rport) * 2654435761u;
    return c;
}

/* The final ACK of a handshake found the listener's accept queue full. Unless
 * tcp.abort_on_overflow says reset, drop the ACK as Linux does (tcp_abort_on_overflow = 0):
 * the child stays in SYN-RECEIVED, its SYN-ACK timer repeats the handshake and the
 * client's next ACK or data completes it once the application has accepted. True: the
 * segment is dropped. */
static bool accept_overflow_drop(struct stack *st, const struct tcp_pcb *l)
{
    if (!l || l->state != TCPS_LISTEN || l->acc_qlen < l->backlog || st->par.tcp_abort_on_overflow)
        return false;
    CNT_INC(&st->cnt, tcp_drop_accept_full);
    return true;
}

/* The handshake of a passive open completed: hand the connection to the listener's owner. */
static bool child_established(struct stack *st, struct tcp_pcb *c)
{
    struct tcp_pcb *l = c->parent;
    if (l && !c->from_cookie) {
        struct tcp_pcb **pp = &l->syn_q;
        while (*pp && *pp != c)
            pp = &(*pp)->qnext;
        if (*pp) {
            *pp = c->qnext;
            l->syn_qlen--;
        }
    }
    c->qnext = NULL;
    c->parent = NULL;
    established(st, c);
    if (!l || l->state != TCPS_LISTEN || l->acc_qlen >= l->backlog || !l->accept_cb ||
        l->accept_cb(l->lctx, l, c) != 0) {
        CNT_INC(&st->cnt, tcp_drop_listen_overflow);
        tcp_send_rst(st, c);
        tcp_set_closed(st, c, 0);
        return false;
    }
    c->parent = l;
    c->in_accept_q = true;
    FIFO_APPEND(l->acc_head, l->acc_tail, c, qnext);
    l->acc_qlen++;
    tcp_ev_post(st, l, TCP_EV_ACCEPTABLE, 0);
    return true;
}

static void listen_input(struct stack *st, struct tcp_pcb *l, struct tcp_seg *s, bool *done);
static void conn_input(struct stack *st, struct tcp_pcb *pcb, struct tcp_seg *s);

static void syn_to_listener(struct stack *st, struct tcp_pcb *l, const struct tcp_seg *s)
{
    /* A full accept queue drops the SYN, cookies or not (as Linux): a cookie's handshake
     * would complete into the same full queue. The client retries its SYN. */
    if (l->acc_qlen >= l->backlog && !st->par.tcp_abort_on_overflow) {
        CNT_INC(&st->cnt, tcp_drop_accept_full);
        return;
    }
    bool full = l->syn_qlen >= l->backlog || l->syn_qlen >= st->par.tcp_max_syn_backlog ||
                l->acc_qlen >= l->backlog;
    struct tcp_pcb *c = full ? NULL : new_child(st, l, s);
    if (!c) {
        if (!st->par.tcp_syncookies) {
            CNT_INC(&st->cnt, tcp_drop_listen_overflow);
            return;
        }
        /* SYN cookie: answer without keeping state (RFC 4987 3.6). The SYN-ACK carries
         * only MSS: the other options cannot be remembered. */
        struct tcp_pcb tmp;
        memset(&tmp, 0, sizeof(tmp));
        tmp.laddr = s->dst;
        tmp.lport = s->h.dport;
        tmp.raddr = s->src;
        tmp.rport = s->h.sport;
        tmp.state = TCPS_SYN_RECEIVED;
        tmp.parent = l; /* for the window it offers (tcp_rcv_window) */
        tmp.ttl = l->ttl;
        tmp.tos = l->tos;
        uint16_t route = tcp_own_mss(st, l, s->src);
        uint16_t mss = s->o.mss_ok && s->o.mss < route ? s->o.mss : route;
        tmp.iss = tcp_cookie_make(st, s, mss);
        tmp.adv_mss = route;
        tmp.rcv_nxt = s->seq + 1;
        tmp.snd_una = tmp.snd_max = tmp.iss;
        tcp_send_synack_stateless(st, &tmp);
        CNT_INC(&st->cnt, tcp_syncookies_sent);
        return;
    }
    c->state = TCPS_SYN_RECEIVED;
    c->irs = s->seq;
    c->rcv_nxt = s->seq + 1;
    negotiate(st, c, s);
    c->iss = tcp_isn(st, c->laddr, c->lport, c->raddr, c->rport);
    c->snd_una = c->snd_nxt = c->snd_max = c->iss;
    c->snd_wnd = s->wnd; /* a SYN's window is never scaled */
    c->snd_wl1 = s->seq;
    c->snd_wl2 = c->iss;
    c->parent = l;
    c->qnext = l->syn_q;
    l->syn_q = c;
    l->syn_qlen++;
    tcp_hash_conn(st, c);
    CNT_INC(&st->cnt, tcp_passive_opens);
    tcp_send_syn(st, c);
}

static void listen_input(struct stack *st, struct tcp_pcb *l, struct tcp_seg *s, bool *done)
{
    *done = true;
    if (s->flags & TCP_RST)
        return;
    if (s->flags & TCP_ACK) {
        if (!(s->flags & TCP_SYN) && st->par.tcp_syncookies) {
            uint16_t mss = tcp_cookie_check(st, s);
            if (mss && accept_overflow_drop(st, l))
                return; /* stateless: the client's next segment brings the cookie again */
            if (mss) {
                struct tcp_pcb *c = new_child(st, l, s);
                if (!c)
                    return;
                CNT_INC(&st->cnt, tcp_syncookies_ok);
                c->from_cookie = true;
                c->state = TCPS_SYN_RECEIVED;
                c->irs = s->seq - 1;
                c->rcv_nxt = s->seq;
                c->iss = s->ack - 1;
                c->snd_una = c->snd_nxt = c->snd_max = s->ack;
                c->adv_mss = tcp_own_mss(st, c, c->raddr);
                c->mss = mss < c->adv_mss ? mss : c->adv_mss;
                c->snd_wnd = s->wnd;
                c->snd_wl1 = s->seq;
                c->snd_wl2 = s->ack;
                c->parent = l;
                tcp_hash_conn(st, c);
                CNT_INC(&st->cnt, tcp_passive_opens);
                if (child_established(st, c)) {
                    *done = false; /* the ACK may carry data: process it as established */
                    conn_input(st, c, s);
                    *done = true;
                }
                return;
            }
            CNT_INC(&st->cnt, tcp_drop_bad_cookie);
        }
        tcp_send_rst_for(st, s);
        return;
    }
    if (s->flags & TCP_SYN)
        syn_to_listener(st, l, s);
}

/* ---- SYN-SENT (RFC 9293 3.10.7.3) ---- */
static void syn_sent_input(struct stack *st, struct tcp_pcb *pcb, struct tcp_seg *s)
{
    bool ack_ok = false;
    if (s->flags & TCP_ACK) {
        if (SEQ_LEQ(s->ack, pcb->iss) || SEQ_GT(s->ack, pcb->snd_max)) {
            if (!(s->flags & TCP_RST))
                tcp_send_rst_for(st, s);
            return;
        }
        ack_ok = true;
    }
    if (s->flags & TCP_RST) {
        if (ack_ok) {
            CNT_INC(&st->cnt, tcp_rx_rst);
            tcp_set_closed(st, pcb, ECONNREFUSED);
        }
        return;
    }
    if (!(s->flags & TCP_SYN))
        return;
    /* Our SYN offered a window from RCV.NXT = 0 (there was none yet): the edge it set
     * is relative to the peer's ISN, now known. A stale rcv_adv would be a random edge,
     * "never shrunk" ever after: the buffer overrun by a peer trusting it. */
    uint32_t syn_wnd = pcb->rcv_adv - pcb->rcv_nxt;
    pcb->irs = s->seq;
    pcb->rcv_nxt = s->seq + 1;
    pcb->rcv_adv = pcb->rcv_nxt + syn_wnd;
    uint16_t adv = pcb->adv_mss;
    negotiate(st, pcb, s);
    pcb->adv_mss = adv;
    pcb->snd_wnd = s->wnd;
    pcb->snd_wl1 = s->seq;
    pcb->snd_wl2 = s->ack;
    if (ack_ok) {
        if (pcb->rtt_ts && pcb->rtx_count == 0)
            tcp_update_rtt(st, pcb, (uint32_t)((st->now - pcb->rtt_ts) / 1000));
        pcb->rtt_ts = 0;
        pcb->snd_una = s->ack;
        established(st, pcb);
        pcb->max_snd_wnd = pcb->snd_wnd;
        pcb->ack_now = true;
        tcp_ev_post(st, pcb, TCP_EV_CONNECTED, 0);
        tcp_output(st, pcb);
        return;
    }
    /* Simultaneous open: SYN-RECEIVED, answer with our SYN again plus an ACK. */
    pcb->state = TCPS_SYN_RECEIVED;
    pcb->rtx_count = 0;
    tcp_send_syn(st, pcb);
}

/* ---- ACK processing ---- */
void tcp_enter_recovery(struct stack *st, struct tcp_pcb *pcb)
{
    pcb->undo_cwnd = pcb->cwnd;
    pcb->undo_ssthresh = pcb->ssthresh;
    pcb->undo_marker = pcb->snd_una;
    pcb->undo_retrans = 0;
    pcb->undo_ok = pcb->sack_ok;
    pcb->ssthresh = pcb->cc->ssthresh(pcb, st->now);
    pcb->recover = pcb->snd_max;
    pcb->in_recovery = true;
    pcb->tlp_out = false; /* recovery takes over from a probe */
    pcb->high_rxt = pcb->snd_una;
    pcb->rtt_ts = 0;
    if (pcb->sack_ok) {
        CNT_INC(&st->cnt, tcp_sack_recovery);
        /* RFC 6937: cwnd follows the deliveries from here (prr_update), from the flight
         * down to ssthresh, instead of dropping to ssthresh at once and sending nothing
         * until the pipe has drained below it. */
        pcb->recover_fs = pcb->snd_max - pcb->snd_una;
        pcb->prr_delivered = 0;
        pcb->prr_out = 0;
        pcb->cwnd = pcb->ssthresh;
    } else {
        CNT_INC(&st->cnt, tcp_fast_retrans);
        pcb->cwnd = pcb->ssthresh + 3 * pcb->mss; /* RFC 6582 3.2 step 2 */
    }
    uint32_t end = pcb->nsacked ? pcb->sacked[0].start : pcb->snd_una + pcb->mss;
    pcb->high_rxt = pcb->snd_una + tcp_retransmit(st, pcb, pcb->snd_una, end);
    pcb->nrxt = 0;
    if (pcb->sack_ok)
        tcp_rxt_note(st, pcb, pcb->snd_una, pcb->high_rxt, 1);
    tcp_arm_rtx(st, pcb);
}

static void fin_acked(struct stack *st, struct tcp_pcb *pcb)
{
    switch (pcb->state) {
    case TCPS_FIN_WAIT_1:
        pcb->state = TCPS_FIN_WAIT_2;
        if (pcb->closed_by_app)
            timer_arm(&st->tw, &pcb->t_rtx,
                      st->now + (uint64_t)st->par.tcp_fin_timeout_ms * NS_PER_MS);
        break;
    case TCPS_CLOSING:
        tcp_enter_time_wait(st, pcb);
        break;
    case TCPS_LAST_ACK:
        tcp_set_closed(st, pcb, 0);
        break;
    default:
        break;
    }
}

/* RFC 6937 PRR with slow-start reduction bound: on each ACK in SACK recovery, what may be
 * sent is the delivered bytes' share of ssthresh/RecoverFS while the pipe is above
 * ssthresh, and up to ssthresh (at most one segment beyond what was delivered) below it.
 * The ACK clock keeps going through the recovery, and it ends with cwnd at ssthresh. */
static void prr_update(struct tcp_pcb *pcb, uint32_t delivered)
{
    pcb->prr_delivered += delivered;
    uint32_t pipe = tcp_sack_pipe(pcb), sndcnt;
    if (pipe > pcb->ssthresh) {
        uint32_t fs = pcb->recover_fs ? pcb->recover_fs : 1;
        uint64_t want = ((uint64_t)pcb->prr_delivered * pcb->ssthresh + fs - 1) / fs;
        sndcnt = want > pcb->prr_out ? (uint32_t)(want - pcb->prr_out) : 0;
    } else {
        uint32_t lim = pcb->prr_delivered > pcb->prr_out ? pcb->prr_delivered - pcb->prr_out : 0;
        if (lim < delivered)
            lim = delivered;
        lim += pcb->mss;
        sndcnt = pcb->ssthresh - pipe < lim ? pcb->ssthresh - pipe : lim;
    }
    pcb->cwnd = pipe + sndcnt;
}

/* Returns false if the connection went away. */
static bool process_ack(struct stack *st, struct tcp_pcb *pcb, struct tcp_seg *s)
{
    /* RFC 5961 5.2: acceptable ACKs lie in [SND.UNA - MAX.SND.WND, SND.NXT]. */
    if (SEQ_GT(s->ack, pcb->snd_max) ||
        SEQ_LT(s->ack, pcb->snd_una - (pcb->max_snd_wnd ? pcb->max_snd_wnd : 1))) {
        CNT_INC(&st->cnt, tcp_drop_bad_ack);
        if (tcp_challenge_ok(st)) {
            CNT_INC(&st->cnt, tcp_challenge_ack);
            tcp_send_ack(st, pcb);
        }
        return false;
    }
    uint32_t acked = SEQ_GT(s->ack, pcb->snd_una) ? s->ack - pcb->snd_una : 0;
    uint32_t old_wnd = pcb->snd_wnd, sacked_before = tcp_sacked_bytes(pcb);
    if (pcb->sack_ok && s->o.nsack) {
        dsack_check(st, pcb, s);
        sack_update(pcb, &s->o);
    }

    /* Window update (RFC 9293 3.10.7.4, SND.WL1/WL2 rule). */
    uint32_t nwnd = s->wnd << pcb->snd_wscale;
    if (SEQ_LT(pcb->snd_wl1, s->seq) || (pcb->snd_wl1 == s->seq && SEQ_LEQ(pcb->snd_wl2, s->ack))) {
        pcb->snd_wnd = nwnd;
        pcb->snd_wl1 = s->seq;
        pcb->snd_wl2 = s->ack;
        if (nwnd > pcb->max_snd_wnd)
            pcb->max_snd_wnd = nwnd;
        if (nwnd && pcb->persist) { /* the window opened: stop probing */
            pcb->persist = false;
            timer_cancel(&st->tw, &pcb->t_rtx);
            pcb->rtx_count = 0;
        }
    }

    if (acked) {
        /* RTT: from the timestamp echo when there is one (RFC 7323 4), else from the one
         * timed segment, never a retransmitted one (Karn). After a timeout, no sample
         * until the ACK covers data first sent after it (RFC 6298 5.7): the back-off
         * stays until then. */
        bool karn = pcb->backoff && SEQ_LEQ(s->ack, pcb->karn_high);
        if (karn) {
            /* an ACK of retransmitted data: ambiguous */
        } else if (pcb->ts_ok && s->o.ts_ok && s->o.tsecr) {
            uint32_t r = tcp_tsval(st, pcb) - s->o.tsecr;
            if (r < 3600000u)
                tcp_update_rtt(st, pcb, r * 1000u + (uint32_t)(st->now / 1000 % 1000));
        } else if (pcb->rtt_ts && SEQ_GT(s->ack, pcb->rtt_seq)) {
            tcp_update_rtt(st, pcb, (uint32_t)((st->now - pcb->rtt_ts) / 1000));
        }
        if (pcb->rtt_ts && SEQ_GT(s->ack, pcb->rtt_seq)) {
            /* The timed segment, never retransmitted (recovery and the RTO stop the
             * timing): its round trip to the microsecond, where the timestamp echo
             * counts in milliseconds. */
            pcb->seg_rtt_us = (uint32_t)((st->now - pcb->rtt_ts) / 1000u);
            pcb->rtt_ts = 0;
        }
        /* fin_ever, not fin_sent: after an RTO rewound snd_nxt, an ACK may still cover the
         * FIN the peer got before; it takes a sequence number but no buffer byte. */
        bool fin_ack =
            pcb->fin_ever && SEQ_GT(s->ack, pcb->fin_seq) && SEQ_LEQ(pcb->snd_una, pcb->fin_seq);
        uint32_t data = acked - (fin_ack ? 1 : 0);
        if (pcb->buf && data) {
            uint32_t have = pcb->buf->snd_len(pcb->ctx);
            if (data > have) /* cannot happen; never release bytes that are not there */
                data = have;
            pcb->buf->snd_ack(pcb->ctx, data);
        }
        pcb->bytes_acked += data;
        pcb->snd_una = s->ack;
        if (SEQ_LT(pcb->snd_nxt, pcb->snd_una))
            pcb->snd_nxt = pcb->snd_una;
        sack_trim(pcb);
        pcb->rtx_count = 0;
        pcb->first_rtx_ns = 0;
        if (pcb->tlp_out && SEQ_GEQ(s->ack, pcb->tlp_high))
            pcb->tlp_out = false; /* the probe's episode is over */
        if (pcb->loss_mode) {
            /* After an RTO: slow start from one segment (RFC 5681 3.1) while the lost
             * flight goes again; done at the recovery point. */
            pcb->cc->on_ack(pcb, data ? data : acked, st->now);
            if (SEQ_GEQ(s->ack, pcb->recover)) {
                pcb->in_recovery = false;
                pcb->loss_mode = false;
                pcb->nrxt = 0;
            }
        } else if (pcb->in_recovery) {
            if (SEQ_GEQ(s->ack, pcb->recover)) {
                pcb->in_recovery = false;
                pcb->nrxt = 0;
                if (pcb->sack_ok) {
                    pcb->cwnd = pcb->ssthresh; /* RFC 6937: the reduction is complete */
                } else {
                    /* Full ACK: leave recovery (RFC 6582 3.2 step 3, the burst-safe
                     * option: ssthresh, or the flight plus one segment if less). */
                    uint32_t flight = tcp_flight(pcb);
                    if (flight < pcb->mss)
                        flight = pcb->mss;
                    pcb->cwnd =
                        pcb->ssthresh < flight + pcb->mss ? pcb->ssthresh : flight + pcb->mss;
                }
            } else if (pcb->sack_ok) {
                uint32_t sacked = tcp_sacked_bytes(pcb);
                prr_update(pcb, acked + (sacked > sacked_before ? sacked - sacked_before : 0) -
                                    (sacked < sacked_before ? sacked_before - sacked : 0));
            } else {
                /* Partial ACK: retransmit the next hole, deflate (RFC 6582 3.2 step 4). */
                tcp_retransmit(st, pcb, pcb->snd_una, pcb->snd_una + pcb->mss);
                pcb->cwnd = pcb->cwnd > acked ? pcb->cwnd - acked + pcb->mss : pcb->mss;
            }
        } else {
            pcb->cc->on_ack(pcb, data ? data : acked, st->now);
        }
        pcb->dupacks = 0;
        if (pcb->in_recovery && pcb->sack_ok)
            tcp_rxt_check(pcb);
        if (pcb->cc->on_delivered)
            pcb->cc->on_delivered(pcb, st->now);
        if (pcb->snd_una == pcb->snd_max)
            timer_cancel(&st->tw, &pcb->t_rtx);
        else if (!pcb->persist)
            tcp_arm_rtx(st, pcb); /* RFC 6298 5.3 */
        if (data)
            tcp_ev_post(st, pcb, TCP_EV_WRITABLE, 0);
        if (fin_ack)
            fin_acked(st, pcb);
        return pcb->state != TCPS_CLOSED;
    }
    /* Duplicate ACK: nothing new acked while data is out, and either (RFC 5681 2) no data,
     * same window, or (RFC 6675 2) it SACKs bytes not SACKed before. The second counts
     * whatever the window says: a receiver whose application reads moves its window
     * with every ACK, and requiring the same window left losses to the RTO. */
    bool classic = s->len == 0 && !(s->flags & (TCP_SYN | TCP_FIN)) && nwnd == old_wnd;
    bool sack_news = pcb->sack_ok && tcp_sacked_bytes(pcb) > sacked_before;
    if ((classic || sack_news) && pcb->snd_una != pcb->snd_max && s->ack == pcb->snd_una) {
        if (pcb->dupacks < 255)
            pcb->dupacks++;
        bool lost = pcb->dupacks >= 3 || (pcb->sack_ok && tcp_sacked_bytes(pcb) > 2u * pcb->mss);
        if (!pcb->in_recovery && lost && SEQ_GEQ(pcb->snd_una, pcb->recover))
            tcp_enter_recovery(st, pcb);
        else if (pcb->in_recovery && !pcb->sack_ok)
            pcb->cwnd += pcb->mss; /* inflation (RFC 6582 3.2 step 3) */
    }
    /* A hole at SND.UNA that SACKs show: its RACK reordering window starts now. */
    if (!pcb->in_recovery && pcb->nsacked && pcb->hole_seq != pcb->snd_una &&
        SEQ_GEQ(pcb->snd_una, pcb->recover)) {
        pcb->hole_seq = pcb->snd_una;
        pcb->hole_ns = st->now;
        tcp_rack_arm(st, pcb);
    }
    /* An ACK that SACKs more in SACK recovery delivered those bytes (RFC 6937). */
    if (pcb->in_recovery && pcb->sack_ok && !pcb->loss_mode) {
        uint32_t sacked = tcp_sacked_bytes(pcb);
        prr_update(pcb, sacked > sacked_before ? sacked - sacked_before : 0);
    }
    /* Any ACK may bring SACK blocks (not only a duplicate one: the peer may be sending). */
    if (pcb->in_recovery && pcb->sack_ok)
        tcp_rxt_check(pcb);
    if (pcb->cc->on_delivered && pcb->snd_una != pcb->snd_max)
        pcb->cc->on_delivered(pcb, st->now);
    return true;
}

/* ---- data ---- */
static void deliver_fin(struct stack *st, struct tcp_pcb *pcb)
{
    pcb->rcv_nxt++;
    pcb->fin_rcvd = true;
    pcb->ack_now = true;
    tcp_ev_post(st, pcb, TCP_EV_FIN, 0);
    switch (pcb->state) {
    case TCPS_SYN_RECEIVED:
    case TCPS_ESTABLISHED:
        pcb->state = TCPS_CLOSE_WAIT;
        break;
    case TCPS_FIN_WAIT_1:
        if (pcb->fin_ever && SEQ_GT(pcb->snd_una, pcb->fin_seq)) {
            tcp_send_ack(st, pcb);
            tcp_enter_time_wait(st, pcb);
        } else {
            pcb->state = TCPS_CLOSING;
        }
        break;
    case TCPS_FIN_WAIT_2:
        tcp_send_ack(st, pcb);
        tcp_enter_time_wait(st, pcb);
        break;
    default:
        break;
    }
}

static void process_data(struct stack *st, struct tcp_pcb *pcb, struct tcp_seg *s)
{
    const uint8_t *data = s->data;
    uint32_t len = s->len, seq = s->seq;
    bool fin = s->flags & TCP_FIN;
    if (s->flags & TCP_SYN)
        seq++;                       /* the SYN occupies the first sequence number */
    if (SEQ_LT(seq, pcb->rcv_nxt)) { /* drop what we already have */
        uint32_t dup = pcb->rcv_nxt - seq;
        if (len && pcb->sack_ok) {
            /* RFC 2883 D-SACK: tell the sender which bytes came twice, so it can tell a
             * spurious retransmission (reordering, a late ACK) from a loss. */
            pcb->dsack = true;
            pcb->dsack_start = seq;
            pcb->dsack_end = seq + (dup < len ? dup : len);
        }
        if (dup >= len + (fin ? 1u : 0u)) {
            if (len || fin)
                pcb->ack_now = true; /* a retransmission of old data: re-ACK at once */
            return;
        }
        if (dup > len) { /* only the FIN is new */
            data += len;
            len = 0;
        } else {
            data += dup;
            len -= dup;
        }
        seq = pcb->rcv_nxt;
    }
    if (!len && !fin)
        return;
    if (pcb->state != TCPS_ESTABLISHED && pcb->state != TCPS_FIN_WAIT_1 &&
        pcb->state != TCPS_FIN_WAIT_2 && pcb->state != TCPS_SYN_RECEIVED) {
        pcb->ack_now = true; /* data after the peer's FIN: just ACK */
        return;
    }
    if (len && (!pcb->buf || pcb->closed_by_app)) {
        /* Data for a closed socket: RFC 2525 2.17, reset (as Linux does). */
        CNT_INC(&st->cnt, tcp_drop_rcv_closed);
        tcp_send_rst(st, pcb);
        tcp_set_closed(st, pcb, 0);
        return;
    }
    uint32_t off = seq - pcb->rcv_nxt;
    uint32_t space = pcb->buf ? pcb->buf->rcv_space(pcb->ctx) : 0;
    uint32_t take = 0;
    if (len && off < space)
        take = len < space - off ? len : space - off;
    if (take < len)
        CNT_INC(&st->cnt, tcp_drop_rcv_full);
    if (len && !take) {
        pcb->ack_now = true;
        return;
    }
    bool whole = take == len;
    if (pcb->shut_rd) {
        /* Read side shut down: acknowledge and discard (nobody will read it). The ACK is
         * asked for first: a FIN sends its own ACK, and no second one may follow. */
        pcb->ack_now = true;
        if (off == 0) {
            pcb->rcv_nxt += take;
            if (whole && fin)
                deliver_fin(st, pcb);
        }
        return;
    }
    if (take)
        pcb->buf->rcv_write_at(pcb->ctx, off, data, take);
    pcb->bytes_received += take;
    CNT_ADD(&st->cnt, tcp_rx_data_bytes, take);
    if (off == 0) {
        uint32_t adv = take;
        bool filled = pcb->nooo > 0;
        pcb->ooo_last_ok = false; /* this segment moves the ACK: no block is owed first */
        while (pcb->nooo && SEQ_LEQ(pcb->ooo[0].start, pcb->rcv_nxt + adv)) {
            if (SEQ_GT(pcb->ooo[0].end, pcb->rcv_nxt + adv))
                adv = pcb->ooo[0].end - pcb->rcv_nxt;
            memmove(&pcb->ooo[0], &pcb->ooo[1], (size_t)(pcb->nooo - 1) * sizeof(pcb->ooo[0]));
            pcb->nooo--;
        }
        if (adv) {
            pcb->buf->rcv_commit(pcb->ctx, adv);
            pcb->rcv_nxt += adv;
            tcp_ev_post(st, pcb, TCP_EV_READABLE, 0);
        }
        /* ACK policy (RFC 9293 3.8.6.3, RFC 5681 4.2): every second full segment, at once
         * when a hole was filled or during quick-ack, else within tcp_delack_ms. A PSH
         * segment to a TCP_NODELAY socket is most likely a request: its reply usually
         * follows within microseconds and carries the ACK (a pure ACK first would cost a
         * frame per request), so the ACK waits one timer tick (1 ms) at most. */
        pcb->unacked_segs++;
        if (filled || pcb->quickacks || pcb->unacked_segs >= 2) {
            if (pcb->quickacks)
                pcb->quickacks--;
            pcb->ack_now = true;
        } else if (!timer_armed(&pcb->t_delack)) {
            uint64_t wait = s->flags & TCP_PSH && pcb->nodelay
                                ? NS_PER_MS
                                : (uint64_t)st->par.tcp_delack_ms * NS_PER_MS;
            timer_arm(&st->tw, &pcb->t_delack, st->now + wait);
        }
        if (whole && fin)
            deliver_fin(st, pcb);
        else if (pcb->ooo_fin && pcb->ooo_fin_seq == pcb->rcv_nxt) {
            pcb->ooo_fin = false;
            deliver_fin(st, pcb);
        }
        return;
    }
    /* Out of order: the bytes are already in place in the buffer; remember the range,
     * send a duplicate ACK with SACK at once (RFC 5681 4.2) and stay in quick-ack. */
    if (take) {
        uint8_t before = pcb->nooo;
        for (uint8_t i = 0; i < pcb->nooo && pcb->sack_ok; i++) {
            if (SEQ_LEQ(pcb->ooo[i].start, seq) && SEQ_GEQ(pcb->ooo[i].end, seq + take)) {
                /* Held already: a D-SACK for it too (RFC 2883 4.1.2), before the block
                 * that holds it (ooo_last, below). */
                pcb->dsack = true;
                pcb->dsack_start = seq;
                pcb->dsack_end = seq + take;
                break;
            }
        }
        range_insert(pcb->ooo, &pcb->nooo, TCP_MAX_OOO, seq, seq + take);
        pcb->ooo_last = seq; /* its block goes first in the next SACK (RFC 2018 4) */
        pcb->ooo_last_ok = true;
        if (pcb->nooo == before && before == TCP_MAX_OOO) {
            bool kept = false;
            for (uint8_t i = 0; i < pcb->nooo; i++)
                kept |= SEQ_LEQ(pcb->ooo[i].start, seq) && SEQ_GEQ(pcb->ooo[i].end, seq + take);
            if (!kept)
                CNT_INC(&st->cnt, tcp_drop_ooo_full);
        }
    }
    if (whole && fin) {
        pcb->ooo_fin = true;
        pcb->ooo_fin_seq = seq + take;
    }
    pcb->ack_now = true;
    pcb->quickacks = 8;
}

/* Every synchronized state, SYN-RECEIVED included (RFC 9293 3.10.7.4). */
static void conn_input(struct stack *st, struct tcp_pcb *pcb, struct tcp_seg *s)
{
    pcb->segs_in++;
    /* PAWS (RFC 7323 5.3). */
    if (pcb->ts_ok && s->o.ts_ok && !(s->flags & TCP_RST) && SEQ_LT(s->o.tsval, pcb->ts_recent) &&
        st->now - pcb->ts_recent_age < 24ull * 86400 * NS_PER_SEC) {
        CNT_INC(&st->cnt, tcp_drop_paws);
        pcb->ack_now = true;
        tcp_output(st, pcb);
        return;
    }
    /* Acceptability against the receive window. */
    uint32_t wnd = SEQ_GT(pcb->rcv_adv, pcb->rcv_nxt) ? pcb->rcv_adv - pcb->rcv_nxt : 0;
    if (pcb->buf) {
        uint32_t space = pcb->buf->rcv_space(pcb->ctx);
        if (space > wnd)
            wnd = space; /* we can take what fits even beyond what we advertised */
    }
    uint32_t slen = s->len + !!(s->flags & TCP_SYN) + !!(s->flags & TCP_FIN);
    bool ok;
    if (slen == 0)
        ok = wnd == 0 ? s->seq == pcb->rcv_nxt
                      : SEQ_GEQ(s->seq, pcb->rcv_nxt) && SEQ_LT(s->seq, pcb->rcv_nxt + wnd);
    else
        ok = wnd != 0 && ((SEQ_GEQ(s->seq, pcb->rcv_nxt) && SEQ_LT(s->seq, pcb->rcv_nxt + wnd)) ||
                          (SEQ_GEQ(s->seq + slen - 1, pcb->rcv_nxt) &&
                           SEQ_LT(s->seq + slen - 1, pcb->rcv_nxt + wnd)));
    /* Old duplicates overlapping rcv_nxt are fine: they are trimmed in process_data. */
    if (!ok && slen && SEQ_LT(s->seq, pcb->rcv_nxt) && SEQ_GEQ(s->seq + slen, pcb->rcv_nxt))
        ok = true;
    if (!ok) {
        if (!(s->flags & TCP_RST)) {
            CNT_INC(&st->cnt, tcp_drop_out_of_window);
            /* Data we have had for a while (a retransmission that was not needed):
             * reported as a duplicate (RFC 2883) in the ACK that answers it. */
            if (s->len && pcb->sack_ok && SEQ_LT(s->seq, pcb->rcv_nxt) &&
                pcb->rcv_nxt - s->seq <= TCP_MAX_WIN << pcb->rcv_wscale) {
                pcb->dsack = true;
                pcb->dsack_start = s->seq;
                pcb->dsack_end = s->seq + s->len;
            }
            pcb->ack_now = true;
            tcp_output(st, pcb);
        }
        return;
    }
    if (s->flags & TCP_RST) {
        /* RFC 5961 3.2: only an exact hit resets; in-window gets a challenge ACK. */
        if (s->seq != pcb->rcv_nxt) {
            CNT_INC(&st->cnt, tcp_drop_rst_inwindow);
            if (tcp_challenge_ok(st)) {
                CNT_INC(&st->cnt, tcp_challenge_ack);
                tcp_send_ack(st, pcb);
            }
            return;
        }
        CNT_INC(&st->cnt, tcp_rx_rst);
        if (pcb->state == TCPS_TIME_WAIT || (pcb->state == TCPS_SYN_RECEIVED && pcb->parent)) {
            tcp_set_closed(st, pcb, 0);
            return;
        }
        tcp_set_closed(st, pcb, pcb->state == TCPS_CLOSE_WAIT ? EPIPE : ECONNRESET);
        return;
    }
    if (s->flags & TCP_SYN) {
        if (pcb->state == TCPS_SYN_RECEIVED && s->seq == pcb->irs) {
            tcp_send_syn(st, pcb); /* our SYN-ACK was lost */
            return;
        }
        /* RFC 5961 4.2: a SYN on a synchronized connection gets a challenge ACK. */
        CNT_INC(&st->cnt, tcp_drop_syn_inwindow);
        if (tcp_challenge_ok(st)) {
            CNT_INC(&st->cnt, tcp_challenge_ack);
            tcp_send_ack(st, pcb);
        }
        return;
    }
    if (!(s->flags & TCP_ACK))
        return;
    if (pcb->ts_ok && s->o.ts_ok && SEQ_GEQ(s->o.tsval, pcb->ts_recent) &&
        SEQ_LEQ(s->seq, pcb->rcv_nxt)) {
        pcb->ts_recent = s->o.tsval;
        pcb->ts_recent_age = st->now;
    }
    pcb->last_rx_ns = st->now;
    pcb->keep_probes = 0;
    if (pcb->state == TCPS_SYN_RECEIVED) {
        if (!SEQ_GT(s->ack, pcb->snd_una) || SEQ_GT(s->ack, pcb->snd_max)) {
            tcp_send_rst_for(st, s);
            return;
        }
        if (pcb->parent && accept_overflow_drop(st, pcb->parent))
            return; /* before any state moves: the handshake is repeated later */
        if (pcb->rtt_ts && pcb->rtx_count == 0)
            tcp_update_rtt(st, pcb, (uint32_t)((st->now - pcb->rtt_ts) / 1000));
        pcb->rtt_ts = 0;
        pcb->snd_una = s->ack;
        pcb->snd_wnd = s->wnd << pcb->snd_wscale;
        pcb->max_snd_wnd = pcb->snd_wnd;
        pcb->snd_wl1 = s->seq;
        pcb->snd_wl2 = s->ack;
        if (pcb->parent || pcb->from_cookie) {
            if (!child_established(st, pcb))
                return;
        } else { /* simultaneous open completes */
            established(st, pcb);
            tcp_ev_post(st, pcb, TCP_EV_CONNECTED, 0);
        }
    } else if (pcb->state == TCPS_TIME_WAIT) {
        if (s->flags & TCP_FIN) { /* the peer lost our last ACK: again, and restart 2MSL */
            tcp_send_ack(st, pcb);
            timer_arm(&st->tw, &pcb->t_rtx,
                      st->now + (uint64_t)st->par.tcp_time_wait_ms * NS_PER_MS);
        }
        return;
    } else if (!process_ack(st, pcb, s)) {
        return;
    }
    if (pcb->state == TCPS_CLOSED || pcb->state == TCPS_TIME_WAIT)
        return;
    process_data(st, pcb, s);
    if (pcb->state == TCPS_CLOSED)
        return;
    tcp_output(st, pcb);
}

static bool tw_reusable(const struct tcp_pcb *tw, const struct tcp_seg *s)
{
    /* RFC 6191: a new SYN may reuse a TIME_WAIT 4-tuple when its timestamp is newer, or
     * without timestamps, when its sequence number is beyond the old connection's. */
    if (tw->ts_ok && s->o.ts_ok)
        return SEQ_GT(s->o.tsval, tw->ts_recent);
    return SEQ_GT(s->seq, tw->rcv_nxt);
}

/* One parsed segment to its connection, or to a listener, or a RST. */
static void seg_input(struct stack *st, struct tcp_seg *s)
{
    struct tcp_pcb *pcb = tcp_lookup(st, s->dst, s->h.dport, s->src, s->h.sport);
    if (pcb && pcb->state == TCPS_TIME_WAIT && (s->flags & TCP_SYN) && !(s->flags & TCP_ACK) &&
        tw_reusable(pcb, s) && tcp_lookup_listener(st, s->dst, s->h.dport)) {
        CNT_INC(&st->cnt, tcp_tw_reuse);
        tcp_set_closed(st, pcb, 0);
        pcb = NULL;
    }
    if (!pcb) {
        struct tcp_pcb *l = tcp_lookup_listener(st, s->dst, s->h.dport);
        if (l) {
            bool done;
            listen_input(st, l, s, &done);
        } else {
            CNT_INC(&st->cnt, tcp_drop_no_port);
            tcp_send_rst_for(st, s);
        }
        return;
    }
    if (pcb->state == TCPS_SYN_SENT)
        syn_sent_input(st, pcb, s);
    else
        conn_input(st, pcb, s);
}

int tcp_input(struct stack *st, struct pktbuf *pb, const struct ip4_view *ip)
{
    const uint8_t *p = pktbuf_data(pb) + ip->ihl;
    uint32_t len = pb->len - ip->ihl;
    struct tcp_seg s;
    CNT_INC(&st->cnt, tcp_rx);
    if (tcp_parse(p, len, &s.h)) {
        if (len >= TCP_HLEN)
            CNT_INC(&st->cnt, tcp_drop_bad_off);
        else
            CNT_INC(&st->cnt, tcp_drop_short);
        goto out;
    }
    if (!pb->csum_ok &&
        csum_fold(csum_partial(p, len,
                               csum_pseudo4(ip->src, ip->dst, IPPROTO_TCP_, (uint16_t)len))) != 0) {
        CNT_INC(&st->cnt, tcp_drop_csum);
        goto out;
    }
    if (ip4_is_bcast(st, ip->dst)) { /* TCP is unicast only */
        CNT_INC(&st->cnt, tcp_drop_bcast);
        goto out;
    }
    s.src = ip->src;
    s.dst = ip->dst;
    s.flags = s.h.flags;
    s.seq = s.h.seq;
    s.ack = s.h.ack;
    s.wnd = s.h.win;
    s.data = p + s.h.doff;
    s.len = len - s.h.doff;
    if (tcp_opts_parse(s.h.opts, s.h.optlen, s.flags & TCP_SYN, &s.o))
        memset(&s.o, 0, sizeof(s.o)); /* malformed options: act as if there were none */
    /* The owner hears of what this segment did once it has been processed (lwIP's rule):
     * no owner callback runs on state the stack is still changing. */
    tcp_ev_hold(st);
    seg_input(st, &s);
    tcp_ev_release(st);
out:
    pktbuf_free(pb);
    return 0;
}

/* ICMP errors about our segments (RFC 5927: check the quoted sequence number first). */
void tcp_err_input(struct stack *st, uint8_t type, uint8_t code, uint32_t info,
                   const struct icmp_quote_view *q)
{
    struct tcp_pcb *pcb = tcp_lookup(st, q->src, q->sport, q->dst, q->dport);
    if (!pcb)
        return;
    uint32_t seq = q->l4_word1;
    if (SEQ_LT(seq, pcb->snd_una) || SEQ_GT(seq, pcb->snd_max))
        return;
    if (type == ICMP_DEST_UNREACH && code == ICMP_UNREACH_NEEDFRAG) {
        /* RFC 1191 6.5, RFC 8201: lower the MSS to the next-hop MTU. Every segment in
         * flight was cut at the old size and dropped on the way: send the flight again
         * in smaller segments now and as the ACKs open cwnd, not one segment and the
         * rest after an RTO. Not a congestion signal: cwnd and the back-off stay. */
        uint32_t mtu = info & 0xffff;
        if (mtu >= 68 && mtu - IP4_HLEN - TCP_HLEN < pcb->mss) {
            pcb->mss = (uint16_t)(mtu - IP4_HLEN - TCP_HLEN);
            if (pcb->cwnd < pcb->mss)
                pcb->cwnd = pcb->mss;
            CNT_INC(&st->cnt, tcp_pmtu_resend);
            pcb->snd_nxt = pcb->snd_una;
            if (pcb->fin_sent && SEQ_LEQ(pcb->snd_nxt, pcb->fin_seq))
                pcb->fin_sent = false;
            pcb->rtt_ts = 0; /* Karn: what is timed now is sent again */
            pcb->high_rxt = pcb->snd_una;
            pcb->nrxt = 0;
            tcp_output(st, pcb);
        }
        return;
    }
    int err = 0;
    if (type == ICMP_DEST_UNREACH)
        err = code == ICMP_UNREACH_PORT || code == ICMP_UNREACH_PROTO ? ECONNREFUSED
              : code == ICMP_UNREACH_NET                              ? ENETUNREACH
                                                                      : EHOSTUNREACH;
    else if (type == ICMP_TIME_EXCEEDED)
        err = EHOSTUNREACH;
    if (!err)
        return;
    /* RFC 1122 4.2.3.9: soft errors do not abort an established connection; they are
     * reported if it times out. In SYN-SENT a hard error ends the attempt. */
    if (pcb->state == TCPS_SYN_SENT && err == ECONNREFUSED)
        tcp_set_closed(st, pcb, err);
    else
        pcb->soft_err = err;
}
