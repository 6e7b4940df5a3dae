/* TCP output: segment building (options, window, checksum), the send loop (windows,
 * Nagle, cork, SWS avoidance, recovery), control segments. */
#include <errno.h>

#include "stack/tcp_impl.h"

/* The window to advertise: free receive space, with receiver-side SWS avoidance (RFC 9293
 * 3.8.6.2.2): the right edge moves only in steps of at least min(space/2, MSS), and never
 * moves left. */
uint32_t tcp_rcv_window(struct tcp_pcb *pcb)
{
    if (!pcb->buf) {
        /* A passive open has no buffer before the handshake completes: its SYN-ACK offers
         * what the listener's (empty) buffer holds, the size an accepted connection gets
         * (tcp.h), up to one unscaled window. Offering more would invite data that the
         * buffer cannot take. */
        if (pcb->state != TCPS_SYN_RECEIVED)
            return 0;
        const struct tcp_pcb *l = pcb->parent;
        uint32_t w = l && l->buf ? l->buf->rcv_space(l->ctx) : TCP_MAX_WIN;
        return w < TCP_MAX_WIN ? w : TCP_MAX_WIN;
    }
    uint32_t space = pcb->buf->rcv_space(pcb->ctx);
    uint32_t max = TCP_MAX_WIN << pcb->rcv_wscale;
    if (space > max)
        space = max;
    uint32_t cur = SEQ_GT(pcb->rcv_adv, pcb->rcv_nxt) ? pcb->rcv_adv - pcb->rcv_nxt : 0;
    if (space <= cur)
        return cur;
    uint32_t step = pcb->mss < space / 2 ? pcb->mss : space / 2;
    if (space - cur < step && cur > 0)
        return cur;
    /* Round down to the scale unit so the advertised edge is exact. */
    return space & ~((1u << pcb->rcv_wscale) - 1);
}

/* The held range that contains seq, or -1. */
static int ooo_find(const struct tcp_pcb *pcb, uint32_t seq)
{
    for (int i = 0; i < pcb->nooo; i++)
        if (SEQ_LEQ(pcb->ooo[i].start, seq) && SEQ_LT(seq, pcb->ooo[i].end))
            return i;
    return -1;
}

/* Choose up to max SACK blocks into sack_sent, in RFC 2018 section 4's order: first the
 * block holding the segment that triggered this ACK (unless it advanced the ACK), then
 * the blocks of the previous SACK option, most recent first, as they are now (merged or
 * grown), then the other held ranges. A sender thus hears of every new block at once
 * and of each block at least three times, however many holes there are. */
static uint32_t sack_blocks(struct tcp_pcb *pcb, uint32_t max)
{
    int pick[4];
    uint32_t k = 0;
    if (max > 4)
        max = 4;
    bool used[TCP_MAX_OOO] = {false};
    int i = pcb->ooo_last_ok ? ooo_find(pcb, pcb->ooo_last) : -1;
    if (i >= 0 && k < max) {
        pick[k++] = i;
        used[i] = true;
    }
    for (uint32_t h = 0; h < pcb->nsack_sent && k < max; h++) {
        i = ooo_find(pcb, pcb->sack_sent[h].start);
        if (i < 0) /* merged into a grown block, or filled: look at its end too */
            i = ooo_find(pcb, pcb->sack_sent[h].end - 1);
        if (i >= 0 && !used[i]) {
            pick[k++] = i;
            used[i] = true;
        }
    }
    for (i = 0; i < pcb->nooo && k < max; i++)
        if (!used[i]) {
            pick[k++] = i;
            used[i] = true;
        }
    for (uint32_t j = 0; j < k; j++)
        pcb->sack_sent[j] = pcb->ooo[pick[j]];
    pcb->nsack_sent = (uint8_t)k;
    return k;
}

static uint32_t build_opts(struct stack *st, struct tcp_pcb *pcb, uint8_t flags, uint8_t *o)
{
    uint32_t n = 0;
    if (flags & TCP_SYN) {
        o[n++] = TCPOPT_MSS;
        o[n++] = 4;
        wr16(o + n, pcb->adv_mss);
        n += 2;
        bool syn_only = !(flags & TCP_ACK);
        if (syn_only ? st->par.tcp_sack : pcb->sack_ok) {
            o[n++] = TCPOPT_SACK_PERM;
            o[n++] = 2;
        } else {
            o[n++] = TCPOPT_NOP;
            o[n++] = TCPOPT_NOP;
        }
        if (syn_only ? st->par.tcp_timestamps : pcb->ts_ok) {
            o[n++] = TCPOPT_TS;
            o[n++] = 10;
            wr32(o + n, tcp_tsval(st, pcb));
            wr32(o + n + 4, syn_only ? 0 : pcb->ts_recent);
            n += 8;
        }
        if (syn_only ? st->par.tcp_window_scaling : pcb->ws_ok) {
            o[n++] = TCPOPT_NOP;
            o[n++] = TCPOPT_WS;
            o[n++] = 3;
            o[n++] = pcb->rcv_wscale;
        }
        while (n & 3)
            o[n++] = TCPOPT_NOP;
        return n;
    }
    if (pcb->ts_ok) {
        o[n++] = TCPOPT_NOP;
        o[n++] = TCPOPT_NOP;
        o[n++] = TCPOPT_TS;
        o[n++] = 10;
        wr32(o + n, tcp_tsval(st, pcb));
        wr32(o + n + 4, pcb->ts_recent);
        n += 8;
    }
    if (pcb->sack_ok && (pcb->nooo || pcb->dsack) && !(flags & TCP_RST)) {
        uint32_t max = (TCP_OPT_SPACE - n - 4) / 8, d = pcb->dsack ? 1 : 0;
        uint32_t k = pcb->nooo ? sack_blocks(pcb, max - d) : 0;
        o[n++] = TCPOPT_NOP;
        o[n++] = TCPOPT_NOP;
        o[n++] = TCPOPT_SACK;
        o[n++] = (uint8_t)(2 + 8 * (k + d));
        if (d) { /* RFC 2883: the D-SACK block first, reported once */
            wr32(o + n, pcb->dsack_start);
            wr32(o + n + 4, pcb->dsack_end);
            n += 8;
            pcb->dsack = false;
        }
        for (uint32_t i = 0; i < k; i++) {
            wr32(o + n, pcb->sack_sent[i].start);
            wr32(o + n + 4, pcb->sack_sent[i].end);
            n += 8;
        }
    }
    return n;
}

/* Data bytes per segment: the MSS less the options every segment carries (RFC 9293
 * 3.7.1: the MSS does not include options). */
static uint32_t seg_size(const struct tcp_pcb *pcb)
{
    uint32_t o = pcb->ts_ok ? 12 : 0;
    if (pcb->sack_ok && (pcb->nooo || pcb->dsack)) {
        uint32_t max = (TCP_OPT_SPACE - o - 4) / 8, nb = pcb->nooo + (pcb->dsack ? 1u : 0u);
        o += 4 + 8 * (nb < max ? nb : max);
    }
    return pcb->mss > o + 64 ? pcb->mss - o : 64;
}

/* Build and send one segment: seq, flags, and len data bytes taken at seq from the send
 * buffer. Returns 0 or -errno. */
static int tcp_xmit(struct stack *st, struct tcp_pcb *pcb, uint32_t seq, uint8_t flags,
                    uint32_t len)
{
    /* A super-segment (TSO) needs a large buffer; everything else a frame buffer. */
    bool gso = len > seg_size(pcb);
    struct pktbuf *pb = pktbuf_alloc(gso ? &st->large : &st->pool);
    if (!pb) {
        CNT_INC(&st->cnt, ip4_drop_nobuf);
        return -ENOBUFS;
    }
    uint8_t opts[TCP_OPT_SPACE];
    uint32_t olen = build_opts(st, pcb, flags, opts);
    uint32_t hl = TCP_HLEN + olen;
    uint8_t *h = pktbuf_put(pb, hl + len);
    if (!h) {
        pktbuf_free(pb);
        return -EMSGSIZE;
    }
    uint32_t wnd = (flags & TCP_RST) ? 0 : tcp_rcv_window(pcb);
    /* RFC 7323 2.2: the window in a SYN is never scaled. */
    uint32_t wfield =
        (flags & TCP_SYN) ? (wnd > TCP_MAX_WIN ? TCP_MAX_WIN : wnd) : wnd >> pcb->rcv_wscale;
    if (wfield > TCP_MAX_WIN)
        wfield = TCP_MAX_WIN;
    /* The right edge the peer now sees: what the field says, not what we meant. */
    if (!(flags & TCP_RST))
        pcb->rcv_adv = pcb->rcv_nxt + ((flags & TCP_SYN) ? wfield : wfield << pcb->rcv_wscale);
    tcp_write(h, pcb->lport, pcb->rport, seq, (flags & TCP_ACK) ? pcb->rcv_nxt : 0, (uint8_t)hl,
              flags, (uint16_t)wfield);
    memcpy(h + TCP_HLEN, opts, olen);
    if (len)
        pcb->buf->snd_copy(pcb->ctx, seq - pcb->snd_una, len, h + hl);
    uint32_t pseudo = csum_pseudo4(pcb->laddr, pcb->raddr, IPPROTO_TCP_, (uint16_t)(hl + len));
    if (gso) {
        /* Partial checksum: the pseudo-header sum only; the NIC finishes each segment. */
        pb->gso_size = (uint16_t)seg_size(pcb);
        wr16(h + TCP_CSUM_OFF, (uint16_t)~csum_fold(pseudo));
    } else {
        wr16(h + TCP_CSUM_OFF, csum_fold(csum_partial(h, hl + len, pseudo)));
    }
    if (flags & TCP_ACK) {
        pcb->ack_now = false;
        pcb->unacked_segs = 0;
        timer_cancel(&st->tw, &pcb->t_delack);
    }
    pcb->segs_out++;
    CNT_INC(&st->cnt, tcp_tx);
    if (len)
        CNT_ADD(&st->cnt, tcp_tx_data_bytes, len);
    if (pcb->in_recovery)
        pcb->prr_out += len; /* RFC 6937 prr_out */
    /* DF: path MTU discovery (RFC 1191); frag-needed lowers pcb->mss. */
    return ip4_output(st, pb, pcb->laddr, pcb->raddr, IPPROTO_TCP_,
                      pcb->ttl ? pcb->ttl : st->par.default_ttl, pcb->tos, true);
}

#define TLP_MIN_NS    (10 * NS_PER_MS)  /* floor of the probe timeout, as Linux */
#define TLP_DELACK_NS (200 * NS_PER_MS) /* worst-case delayed ACK (RFC 8985 7.2 WCDelAckT) */
/* Retry of a local transmit failure: buffers come back as the NIC completes a batch. */
#define TCP_XMIT_RETRY_NS (5 * NS_PER_MS)

/* RFC 8985 7.2: the probe timeout, or 0 when no probe is due. A probe needs SACK (what it
 * elicits must show what is missing), no recovery or back-off in progress, and an RTT. */
/* The states in which data (or a FIN) may be in flight and sent (RFC 9293 3.3.2). */
static bool sends_data(enum tcp_state s)
{
    return s == TCPS_ESTABLISHED || s == TCPS_CLOSE_WAIT || s == TCPS_FIN_WAIT_1 ||
           s == TCPS_CLOSING || s == TCPS_LAST_ACK;
}

static uint64_t tlp_timeout(const struct tcp_pcb *pcb)
{
    if (!sends_data(pcb->state))
        return 0;
    if (!pcb->sack_ok || pcb->in_recovery || pcb->tlp_out || pcb->backoff || !pcb->srtt_us ||
        pcb->snd_una == pcb->snd_max)
        return 0;
    uint64_t pto = 2ull * pcb->srtt_us * 1000u;
    if (tcp_flight(pcb) <= pcb->mss) /* one segment: the peer may delay its ACK */
        pto += TLP_DELACK_NS;
    return pto < TLP_MIN_NS ? TLP_MIN_NS : pto;
}

static uint64_t rack_deadline(const struct stack *st, const struct tcp_pcb *pcb);

void tcp_arm_rtx(struct stack *st, struct tcp_pcb *pcb)
{
    uint64_t rto = (uint64_t)pcb->rto_ms << pcb->backoff;
    if (rto > st->par.tcp_rto_max_ms)
        rto = st->par.tcp_rto_max_ms;
    pcb->persist = false;
    pcb->xmit_retry = false;
    /* A tail loss probe first when it comes before the RTO: a lost tail (or the one ACK
     * a receiver sent for a whole flight) then costs two RTTs, not an RTO. */
    uint64_t pto = tlp_timeout(pcb);
    pcb->tlp_pending = pto && pto < rto * NS_PER_MS;
    uint64_t when = st->now + (pcb->tlp_pending ? pto : rto * NS_PER_MS);
    /* In recovery, a retransmission's RACK timeout first: a lost retransmission with
     * nothing sent after it to be SACKed is found in a round trip, not an RTO. */
    uint64_t rack = rack_deadline(st, pcb);
    pcb->rack_pending = rack && rack < when;
    timer_arm(&st->tw, &pcb->t_rtx, pcb->rack_pending ? rack : when);
}

void tcp_send_syn(struct stack *st, struct tcp_pcb *pcb)
{
    uint8_t flags = pcb->state == TCPS_SYN_RECEIVED ? (TCP_SYN | TCP_ACK) : TCP_SYN;
    if (pcb->state == TCPS_SYN_RECEIVED && pcb->from_cookie)
        return;
    tcp_xmit(st, pcb, pcb->iss, flags, 0);
    if (pcb->snd_max == pcb->iss)
        pcb->snd_nxt = pcb->snd_max = pcb->iss + 1;
    if (!pcb->rtt_ts && pcb->rtx_count == 0) {
        pcb->rtt_ts = st->now;
        pcb->rtt_seq = pcb->iss;
    }
    tcp_arm_rtx(st, pcb);
}

void tcp_send_synack_stateless(struct stack *st, struct tcp_pcb *tmp)
{
    tcp_xmit(st, tmp, tmp->iss, TCP_SYN | TCP_ACK, 0);
}

/* Pacing: a segment of len bytes takes len / rate of the sender's time. Up to a timer
 * tick of unused time is kept as credit (the wheel's 1 ms resolution: a burst per tick,
 * as Linux's TSO autosizing sends about 1 ms of data per burst); more is forgotten, so
 * an idle connection does not burst. */
#define PACE_CREDIT_NS NS_PER_MS
static void pace_charge(const struct stack *st, struct tcp_pcb *pcb, uint32_t len)
{
    uint64_t floor = st->now > PACE_CREDIT_NS ? st->now - PACE_CREDIT_NS : 0;
    if (pcb->pace_next_ns < floor)
        pcb->pace_next_ns = floor;
    pcb->pace_next_ns += (uint64_t)len * NS_PER_SEC / pcb->pacing_rate;
}

/* A segment could not go out for a local reason (no packet buffer): nothing may wait on
 * the peer for it. An ACK is retried by the delayed-ACK timer (ack_now is still set);
 * data or a FIN with nothing in flight by the retransmission timer, which then only
 * calls tcp_output, without a back-off (tcp_rtx_timer, xmit_retry). */
static void retry_later(struct stack *st, struct tcp_pcb *pcb, bool ack_only)
{
    CNT_INC(&st->cnt, tcp_xmit_retry);
    if (ack_only) {
        if (!timer_armed(&pcb->t_delack))
            timer_arm(&st->tw, &pcb->t_delack, st->now + TCP_XMIT_RETRY_NS);
        return;
    }
    if (!timer_armed(&pcb->t_rtx)) {
        pcb->xmit_retry = true;
        pcb->persist = false;
        pcb->tlp_pending = false;
        timer_arm(&st->tw, &pcb->t_rtx, st->now + TCP_XMIT_RETRY_NS);
    }
}

void tcp_send_ack(struct stack *st, struct tcp_pcb *pcb)
{
    if (tcp_xmit(st, pcb, pcb->snd_nxt, TCP_ACK, 0) == -ENOBUFS)
        retry_later(st, pcb, true);
}

void tcp_send_rst(struct stack *st, struct tcp_pcb *pcb)
{
    CNT_INC(&st->cnt, tcp_tx_rst);
    tcp_xmit(st, pcb, pcb->snd_nxt, TCP_RST | TCP_ACK, 0);
}

/* Keepalive and zero-window probe: an ACK with SEQ = SND.UNA - 1 (RFC 9293 3.8.4 and
 * 3.8.6.1: the peer must answer with an ACK showing its current window). */
void tcp_send_probe(struct stack *st, struct tcp_pcb *pcb)
{
    tcp_xmit(st, pcb, pcb->snd_una - 1, TCP_ACK, 0);
}

void tcp_send_tlp(struct stack *st, struct tcp_pcb *pcb)
{
    CNT_INC(&st->cnt, tcp_tlp);
    /* The last segment sent goes again, even when new data waits (RFC 8985 7.3 prefers
     * new data). A receiver answers a duplicate at once (a D-SACK) and a segment past a
     * hole at once (a SACK), but delays its ACK of one new in-order segment: 40 ms on
     * Linux, which is the common case here, a flight whose one ACK was lost. Measured
     * under bench/fault.sh's profile, new-data probes cost 40 ms each, a third of the
     * transfer time. The end is that of what is in flight, not of what is queued, some
     * of which the windows kept back. */
    uint32_t smss = seg_size(pcb);
    pcb->tlp_out = true;
    uint32_t end =
        pcb->fin_ever && SEQ_GT(pcb->snd_max, pcb->fin_seq) ? pcb->fin_seq : pcb->snd_max;
    uint32_t n = end - pcb->snd_una < smss ? end - pcb->snd_una : smss;
    tcp_retransmit(st, pcb, end - n, end);
    pcb->tlp_high = pcb->snd_max;
    tcp_arm_rtx(st, pcb); /* the RTO now: tlp_out holds further probes back */
}

void tcp_send_rst_for(struct stack *st, const struct tcp_seg *s)
{
    if (s->flags & TCP_RST)
        return; /* never answer a reset */
    struct tcp_pcb tmp;
    memset(&tmp, 0, sizeof(tmp));
    tmp.laddr = s->dst;
    tmp.raddr = s->src;
    tmp.lport = s->h.dport;
    tmp.rport = s->h.sport;
    uint8_t flags;
    uint32_t seq;
    if (s->flags & TCP_ACK) {
        seq = s->ack; /* <SEQ=SEG.ACK><CTL=RST> */
        flags = TCP_RST;
    } else {
        seq = 0; /* <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK> */
        tmp.rcv_nxt = s->seq + s->len + !!(s->flags & TCP_SYN) + !!(s->flags & TCP_FIN);
        flags = TCP_RST | TCP_ACK;
    }
    CNT_INC(&st->cnt, tcp_tx_rst);
    tcp_xmit(st, &tmp, seq, flags, 0);
}

uint32_t tcp_retransmit(struct stack *st, struct tcp_pcb *pcb, uint32_t seq, uint32_t end)
{
    uint32_t data_end = pcb->snd_una + (pcb->buf ? pcb->buf->snd_len(pcb->ctx) : 0);
    if (SEQ_GT(end, data_end))
        end = data_end;
    uint32_t len = SEQ_GT(end, seq) ? end - seq : 0;
    if (len > seg_size(pcb))
        len = seg_size(pcb);
    uint8_t flags = TCP_ACK;
    /* The FIN rides on the last byte again if it was sent. */
    if (pcb->fin_ever && seq + len == pcb->fin_seq)
        flags |= TCP_FIN;
    if (!len && !(flags & TCP_FIN))
        return 0;
    if (len)
        flags |= TCP_PSH;
    if (tcp_xmit(st, pcb, seq, flags, len) == 0) {
        pcb->total_retrans++;
        CNT_INC(&st->cnt, tcp_retrans_segs);
        if (pcb->in_recovery)
            pcb->undo_retrans++; /* one more the D-SACKs must show unneeded (undo) */
    }
    /* Karn: never time a retransmitted segment. */
    if (pcb->rtt_ts && SEQ_GEQ(pcb->rtt_seq, seq) && SEQ_LT(pcb->rtt_seq, seq + len + 1))
        pcb->rtt_ts = 0;
    return len + ((flags & TCP_FIN) ? 1 : 0);
}

/* The next hole to retransmit in SACK recovery: the first byte at or after high_rxt that
 * no SACK block covers, below the highest SACKed byte (RFC 6675 NextSeg rule 1). After an
 * RTO (loss_mode) everything unSACKed below the recovery point is lost, the tail above
 * the highest SACK too (RFC 6675 5.1; Linux's Loss state marks it so). */
static bool next_hole(const struct tcp_pcb *pcb, uint32_t *start, uint32_t *end)
{
    uint32_t s = SEQ_GT(pcb->high_rxt, pcb->snd_una) ? pcb->high_rxt : pcb->snd_una;
    for (uint32_t i = 0; i < pcb->nsacked; i++) {
        const struct tcp_range *r = &pcb->sacked[i];
        if (SEQ_LEQ(r->end, s))
            continue;
        if (SEQ_LEQ(r->start, s)) {
            s = r->end;
            continue;
        }
        *start = s;
        *end = r->start;
        return true;
    }
    if (pcb->loss_mode && SEQ_LT(s, pcb->recover)) {
        *start = s;
        *end = pcb->recover;
        return true;
    }
    return false;
}

/* The first stretch of [from, end) that no SACK block covers; false if there is none. */
static bool unsacked_in(const struct tcp_pcb *pcb, uint32_t from, uint32_t end, uint32_t *s,
                        uint32_t *e)
{
    for (uint32_t i = 0; i < pcb->nsacked; i++) {
        const struct tcp_range *r = &pcb->sacked[i];
        if (SEQ_LEQ(r->end, from))
            continue;
        if (SEQ_LEQ(r->start, from)) {
            from = r->end;
            continue;
        }
        if (SEQ_LT(r->start, end))
            end = r->start;
        break;
    }
    if (!SEQ_LT(from, end))
        return false;
    *s = from;
    *e = end;
    return true;
}

/* RFC 6675 SetPipe, simplified: what is in the network = sent - SACKed - lost holes not yet
 * retransmitted (holes below the highest SACK count as lost) - retransmissions lost again
 * and not yet sent a third time. */
uint32_t tcp_sack_pipe(const struct tcp_pcb *pcb)
{
    uint32_t out = tcp_flight(pcb) - tcp_sacked_bytes(pcb);
    uint32_t s = SEQ_GT(pcb->high_rxt, pcb->snd_una) ? pcb->high_rxt : pcb->snd_una;
    uint32_t lost = 0;
    for (uint32_t i = 0; i < pcb->nsacked; i++) {
        const struct tcp_range *r = &pcb->sacked[i];
        if (SEQ_GT(r->start, s))
            lost += r->start - s;
        if (SEQ_GT(r->end, s))
            s = r->end;
    }
    if (pcb->loss_mode && SEQ_LT(s, pcb->recover))
        lost += pcb->recover - s; /* the tail not yet sent again after the RTO */
    for (uint32_t i = 0; i < pcb->nrxt; i++) {
        const struct tcp_rxt *r = &pcb->rxt[i];
        uint32_t from = SEQ_LT(r->start, pcb->snd_una) ? pcb->snd_una : r->start, hs, he;
        while (r->lost && SEQ_LT(from, r->end) && unsacked_in(pcb, from, r->end, &hs, &he)) {
            lost += he - hs;
            from = he;
        }
    }
    return out > lost ? out - lost : 0;
}

static uint32_t now_us(const struct stack *st)
{
    return (uint32_t)(st->now / 1000);
}

void tcp_rxt_note(struct stack *st, struct tcp_pcb *pcb, uint32_t start, uint32_t end,
                  uint8_t tries)
{
    if (!SEQ_LT(start, end))
        return;
    if (pcb->nrxt) {
        struct tcp_rxt *l = &pcb->rxt[pcb->nrxt - 1];
        if (!l->lost && l->end == start && l->snd_max == pcb->snd_max && l->tries == tries) {
            l->end = end;
            l->xmit_us = now_us(st); /* the timer runs from the last byte's sending */
            return;
        }
    }
    if (pcb->nrxt == TCP_MAX_RXT) { /* the oldest is no longer watched: the RTO covers it */
        memmove(&pcb->rxt[0], &pcb->rxt[1], (TCP_MAX_RXT - 1) * sizeof(pcb->rxt[0]));
        pcb->nrxt--;
    }
    pcb->rxt[pcb->nrxt++] = (struct tcp_rxt){start, end, pcb->snd_max, now_us(st), tries, false};
}

/* RFC 8985 6.2: a retransmission is lost when it is not delivered a round trip plus a
 * reordering window after it went out. The round trip is the smoothed one (RACK.rtt
 * would be the latest sample: the smoothed one is steadier on a busy host); the window a
 * quarter of the minimum RTT (RACK.reo_wnd), at least 1 ms for the host's own jitter. */
static uint32_t rack_reo_us(const struct tcp_pcb *pcb);

static uint32_t rack_wait_us(const struct tcp_pcb *pcb)
{
    return pcb->srtt_us + rack_reo_us(pcb);
}

/* Outside recovery: a hole at SND.UNA below SACKed data is lost a reordering window
 * after the SACKs showed it (it was sent before what arrived: RFC 8985 6.2 with the
 * SACK's arrival standing in for that data's delivery time). */
static bool rack_hole(const struct tcp_pcb *pcb)
{
    return !pcb->in_recovery && pcb->sack_ok && pcb->nsacked && pcb->srtt_us &&
           pcb->hole_seq == pcb->snd_una && pcb->snd_una != pcb->snd_max &&
           SEQ_GEQ(pcb->snd_una, pcb->recover);
}

static uint32_t rack_reo_us(const struct tcp_pcb *pcb)
{
    uint32_t reo = pcb->min_rtt_us / 4;
    return reo < 1000 ? 1000 : reo;
}

/* The earliest moment (stack ns) a watched retransmission times out, or 0. */
static uint64_t rack_deadline(const struct stack *st, const struct tcp_pcb *pcb)
{
    if (rack_hole(pcb))
        return pcb->hole_ns + (uint64_t)rack_reo_us(pcb) * 1000;
    if (!pcb->in_recovery || !pcb->sack_ok || !pcb->srtt_us)
        return 0;
    uint32_t now = now_us(st), wait = rack_wait_us(pcb), first = UINT32_MAX;
    for (uint32_t i = 0; i < pcb->nrxt; i++) {
        const struct tcp_rxt *r = &pcb->rxt[i];
        if (r->lost || r->tries >= TCP_RXT_TRIES || !SEQ_LT(r->start, r->end))
            continue;
        uint32_t age = now - r->xmit_us;
        uint32_t left = age >= wait ? 0 : wait - age;
        if (left < first)
            first = left;
    }
    return first == UINT32_MAX ? 0 : st->now + (uint64_t)first * 1000 + 1;
}

/* A retransmission went out: its RACK timeout may come before the armed timer. */
void tcp_rack_arm(struct stack *st, struct tcp_pcb *pcb)
{
    uint64_t rack = rack_deadline(st, pcb);
    if (!rack || pcb->persist || pcb->xmit_retry ||
        (timer_armed(&pcb->t_rtx) && pcb->t_rtx.expires <= rack))
        return;
    pcb->rack_pending = true;
    pcb->tlp_pending = false;
    timer_arm(&st->tw, &pcb->t_rtx, rack);
}

void tcp_rack_timeout(struct stack *st, struct tcp_pcb *pcb)
{
    if (rack_hole(pcb)) {
        CNT_INC(&st->cnt, tcp_rack_recovery);
        tcp_enter_recovery(st, pcb);
        return;
    }
    uint32_t now = now_us(st), wait = rack_wait_us(pcb);
    for (uint32_t i = 0; i < pcb->nrxt; i++) {
        struct tcp_rxt *r = &pcb->rxt[i];
        uint32_t hs, he;
        if (r->lost || r->tries >= TCP_RXT_TRIES || now - r->xmit_us < wait)
            continue;
        if (SEQ_LT(r->start, pcb->snd_una))
            r->start = pcb->snd_una;
        if (SEQ_LT(r->start, r->end) && unsacked_in(pcb, r->start, r->end, &hs, &he)) {
            r->lost = true;
            CNT_INC(&st->cnt, tcp_rack_timeouts);
        }
    }
}

void tcp_rxt_check(struct tcp_pcb *pcb)
{
    uint8_t j = 0;
    for (uint8_t i = 0; i < pcb->nrxt; i++) {
        struct tcp_rxt r = pcb->rxt[i];
        uint32_t hs, he;
        if (SEQ_LT(r.start, pcb->snd_una))
            r.start = pcb->snd_una;
        if (!SEQ_LT(r.start, r.end) || !unsacked_in(pcb, r.start, r.end, &hs, &he))
            continue; /* all of it arrived */
        /* high_sack beyond SND.MAX of its sending: a byte first sent after this
         * retransmission arrived, this one did not. */
        if (SEQ_GT(pcb->high_sack, r.snd_max))
            r.lost = true;
        pcb->rxt[j++] = r;
    }
    pcb->nrxt = j;
}

void tcp_output(struct stack *st, struct tcp_pcb *pcb)
{
    if (!sends_data(pcb->state)) {
        if ((pcb->state == TCPS_FIN_WAIT_2 || pcb->state == TCPS_TIME_WAIT) && pcb->ack_now)
            tcp_send_ack(st, pcb);
        else if (pcb->state == TCPS_SYN_RECEIVED && pcb->ack_now && !pcb->from_cookie)
            tcp_send_syn(st, pcb);
        return;
    }
    if (!pcb->buf) {
        if (pcb->ack_now)
            tcp_send_ack(st, pcb);
        return;
    }
    bool sent = false, sent_here = false;
    uint32_t total = pcb->buf->snd_len(pcb->ctx); /* bytes from snd_una on */

    /* Loss recovery with SACK (RFC 6675): holes first, then new data, while pipe < cwnd. */
    if (pcb->in_recovery && pcb->sack_ok) {
        uint32_t pipe = tcp_sack_pipe(pcb);
        /* Retransmissions lost again first: the oldest holds SND.UNA back. What goes out
         * is watched in turn (noted after the loop, which walks the same array). */
        struct tcp_range again[TCP_MAX_RXT * 2];
        uint8_t again_tries[TCP_MAX_RXT * 2];
        uint32_t nagain = 0;
        for (uint32_t i = 0; i < pcb->nrxt && nagain < TCP_MAX_RXT * 2; i++) {
            struct tcp_rxt *r = &pcb->rxt[i];
            uint32_t hs, he;
            while (r->lost && nagain < TCP_MAX_RXT * 2 && pipe + pcb->mss <= pcb->cwnd &&
                   SEQ_LT(r->start, r->end) && unsacked_in(pcb, r->start, r->end, &hs, &he)) {
                uint32_t n = tcp_retransmit(st, pcb, hs, he);
                if (!n) {
                    r->start = r->end;
                    break;
                }
                CNT_INC(&st->cnt, tcp_lost_retrans);
                r->start = hs + n;
                again_tries[nagain] = (uint8_t)(r->tries + 1);
                again[nagain++] = (struct tcp_range){hs, hs + n};
                pipe += n;
                sent = true;
            }
        }
        for (uint32_t i = 0; i < nagain; i++)
            tcp_rxt_note(st, pcb, again[i].start, again[i].end, again_tries[i]);
        if (nagain)
            tcp_rack_arm(st, pcb);
        for (int guard = 0; guard < 64 && pipe + pcb->mss <= pcb->cwnd; guard++) {
            uint32_t hs, he;
            if (!next_hole(pcb, &hs, &he))
                break;
            uint32_t n = tcp_retransmit(st, pcb, hs, he);
            if (!n)
                break;
            tcp_rxt_note(st, pcb, hs, hs + n, 1);
            pcb->high_rxt = hs + n;
            pipe += n;
            sent = true;
        }
        if (sent)
            tcp_rack_arm(st, pcb);
        if (pipe + pcb->mss > pcb->cwnd)
            goto done;
    }

    for (int guard = 0; guard < 4096; guard++) {
        uint32_t off = pcb->snd_nxt - pcb->snd_una;
        if (pcb->fin_sent && SEQ_GT(pcb->snd_nxt, pcb->fin_seq))
            break; /* everything including the FIN is out */
        uint32_t unsent = total > off ? total - off : 0;
        uint32_t inflight =
            pcb->in_recovery && pcb->sack_ok ? tcp_sack_pipe(pcb) : pcb->snd_nxt - pcb->snd_una;
        uint32_t cwnd = pcb->cwnd;
        /* RFC 3042 limited transmit: one new segment per duplicate ACK, up to two. */
        if (!pcb->in_recovery && pcb->dupacks > 0 && pcb->dupacks < 3)
            cwnd += pcb->dupacks * pcb->mss;
        /* Window edge relative to snd_una for the receive window; cwnd limits in flight. */
        uint32_t rwnd_room = SEQ_GT(pcb->snd_una + pcb->snd_wnd, pcb->snd_nxt)
                                 ? pcb->snd_una + pcb->snd_wnd - pcb->snd_nxt
                                 : 0;
        uint32_t cwnd_room = cwnd > inflight ? cwnd - inflight : 0;
        uint32_t room = rwnd_room < cwnd_room ? rwnd_room : cwnd_room;
        uint32_t smss = seg_size(pcb);
        /* With TSO, one super-segment of up to 60000 bytes (64 KiB with headers). */
        uint32_t maxlen = pcb->tso && !pcb->in_recovery ? smss * (60000u / smss) : smss;
        uint32_t len = unsent < maxlen ? unsent : maxlen;
        if (len > room)
            len = room;
        bool fin = pcb->fin_queued && !pcb->fin_sent && len == unsent;
        if (len == 0 && !fin)
            break;
        if (len == 0 && fin && cwnd_room == 0 && inflight > 0)
            break; /* a lone FIN waits for room like data */
        if (len < smss && !fin) {
            /* Cork holds partial segments; Nagle (RFC 896) holds them while data is
             * unacknowledged; sender SWS (RFC 9293 3.8.6.2.1) holds window-limited
             * runts unless they are half the largest window seen. */
            if (pcb->cork)
                break;
            if (len < unsent) {
                if (len < pcb->max_snd_wnd / 2 && !pcb->force_runt)
                    break;
            } else if (!pcb->nodelay && pcb->snd_nxt != pcb->snd_una) {
                break;
            }
        }
        uint8_t flags = TCP_ACK;
        if (len && len == unsent)
            flags |= TCP_PSH;
        if (fin)
            flags |= TCP_FIN;
        bool is_new = SEQ_GEQ(pcb->snd_nxt, pcb->snd_max);
        if (pcb->pacing_rate && is_new && len && pcb->pace_next_ns > st->now) {
            /* Paced: this segment leaves at its time; the timer, not a busy loop. */
            if (!timer_armed(&pcb->t_pace)) {
                CNT_INC(&st->cnt, tcp_pace_waits);
                timer_arm(&st->tw, &pcb->t_pace, pcb->pace_next_ns);
            }
            break;
        }
        int rc = tcp_xmit(st, pcb, pcb->snd_nxt, flags, len);
        if (rc) {
            if (rc == -ENOBUFS)
                retry_later(st, pcb, false);
            break;
        }
        if (!is_new) {
            pcb->total_retrans++;
            CNT_INC(&st->cnt, tcp_retrans_segs);
        }
        if (!pcb->rtt_ts && is_new && len) {
            pcb->rtt_ts = st->now;
            pcb->rtt_seq = pcb->snd_nxt;
        }
        if (pcb->pacing_rate && is_new && len)
            pace_charge(st, pcb, len);
        pcb->snd_nxt += len;
        if (fin) {
            pcb->fin_sent = true;
            pcb->fin_ever = true;
            pcb->fin_seq = pcb->snd_nxt;
            pcb->snd_nxt++;
        }
        if (SEQ_GT(pcb->snd_nxt, pcb->snd_max))
            pcb->snd_max = pcb->snd_nxt;
        sent = sent_here = true;
    }
    /* Armed once the burst is out: a probe timeout depends on what is in flight (a lone
     * segment waits for a delayed ACK) and restarts with every burst (RFC 8985 7.2). A
     * running RTO is left alone (RFC 6298 5.1) unless a probe may now come first. */
    if (sent_here &&
        (!timer_armed(&pcb->t_rtx) || pcb->persist || pcb->tlp_pending || tlp_timeout(pcb)))
        tcp_arm_rtx(st, pcb);
done:
    /* Data waiting, nothing in flight, and the peer's window closed or too small for a
     * segment: the persist timer probes it (RFC 9293 3.8.6.1) or, when the window is open
     * but small, sends the runt anyway (the SWS override timeout, 3.8.6.2.1). */
    if (pcb->snd_una == pcb->snd_max && total > pcb->snd_nxt - pcb->snd_una &&
        pcb->snd_wnd < seg_size(pcb) && !timer_armed(&pcb->t_rtx)) {
        pcb->persist = true;
        pcb->tlp_pending = false;
        uint64_t rto = pcb->rto_ms;
        timer_arm(&st->tw, &pcb->t_rtx, st->now + rto * NS_PER_MS);
    }
    if (!sent && pcb->ack_now)
        tcp_send_ack(st, pcb);
}

void tcp_rcvd(struct stack *st, struct tcp_pcb *pcb)
{
    if (pcb->state != TCPS_ESTABLISHED && pcb->state != TCPS_FIN_WAIT_1 &&
        pcb->state != TCPS_FIN_WAIT_2)
        return;
    /* A window update is worth a segment when it opens the window by two segments, or
     * reopens a window smaller than one segment (RFC 9293 3.8.6.2.2, like Linux). */
    uint32_t cur = SEQ_GT(pcb->rcv_adv, pcb->rcv_nxt) ? pcb->rcv_adv - pcb->rcv_nxt : 0;
    uint32_t nw = tcp_rcv_window(pcb);
    if (nw >= cur + 2u * pcb->mss || (cur < pcb->mss && nw >= pcb->mss)) {
        pcb->ack_now = true;
        tcp_output(st, pcb);
    }
}
