/* TCP timers: retransmission (RFC 6298 5), persist (RFC 9293 3.8.6.1), delayed ACK,
 * keepalive (RFC 9293 3.8.4, RFC 1122 4.2.3.6), TIME_WAIT and orphaned FIN_WAIT_2. */
#include <errno.h>

#include "stack/tcp_impl.h"

static void timeout_close(struct stack *st, struct tcp_pcb *pcb)
{
    CNT_INC(&st->cnt, tcp_timeouts);
    tcp_set_closed(st, pcb, pcb->soft_err ? pcb->soft_err : ETIMEDOUT);
}

static bool user_timeout_hit(struct stack *st, struct tcp_pcb *pcb)
{
    /* TCP_USER_TIMEOUT (RFC 5482): data unacknowledged for longer than this aborts. */
    return pcb->user_timeout_ms && pcb->first_rtx_ns &&
           st->now - pcb->first_rtx_ns >= (uint64_t)pcb->user_timeout_ms * NS_PER_MS;
}

/* RFC 6298 5.5: double the RTO (up to 2^16, the maximum bounds it before). */
static void tcp_backoff(struct tcp_pcb *pcb)
{
    if (pcb->backoff < 16)
        pcb->backoff++;
}

void tcp_rtx_timer(struct timer *t, void *ctx, uint64_t now)
{
    struct stack *st = ctx;
    struct tcp_pcb *pcb = container_of(t, struct tcp_pcb, t_rtx);
    switch (pcb->state) {
    case TCPS_TIME_WAIT:
        tcp_set_closed(st, pcb, 0);
        return;
    case TCPS_FIN_WAIT_2:
        if (pcb->closed_by_app) { /* the peer never sent its FIN (tcp_fin_timeout) */
            tcp_set_closed(st, pcb, 0);
            return;
        }
        break;
    case TCPS_SYN_SENT:
    case TCPS_SYN_RECEIVED: {
        uint32_t max =
            pcb->state == TCPS_SYN_SENT ? st->par.tcp_syn_retries : st->par.tcp_synack_retries;
        if (pcb->rtx_count >= max) {
            timeout_close(st, pcb);
            return;
        }
        pcb->rtx_count++;
        tcp_backoff(pcb);
        pcb->rtt_ts = 0;
        CNT_INC(&st->cnt, tcp_rto);
        tcp_send_syn(st, pcb);
        return;
    }
    default:
        break;
    }
    if (pcb->persist) {
        /* Zero-window probe; backs off like the RTO and never gives up on its own (RFC
         * 1122 4.2.2.17), only through TCP_USER_TIMEOUT. */
        if (!pcb->first_rtx_ns)
            pcb->first_rtx_ns = now;
        if (user_timeout_hit(st, pcb)) {
            timeout_close(st, pcb);
            return;
        }
        if (pcb->snd_wnd) {
            /* Open but small: send what fits (SWS override), then go on as usual. */
            pcb->persist = false;
            pcb->force_runt = true;
            tcp_output(st, pcb);
            pcb->force_runt = false;
            if (pcb->state != TCPS_CLOSED && !timer_armed(&pcb->t_rtx) &&
                pcb->snd_una != pcb->snd_max)
                tcp_arm_rtx(st, pcb);
            return;
        }
        /* An orphan's peer that never opens its window again would hold it for ever
         * (Linux: tcp_orphan_retries bounds the probes of a socket without owner). */
        if (pcb->orphan && pcb->rtx_count >= st->par.tcp_orphan_retries) {
            CNT_INC(&st->cnt, tcp_orphan_timeouts);
            timeout_close(st, pcb);
            return;
        }
        CNT_INC(&st->cnt, tcp_zero_window_probes);
        tcp_send_probe(st, pcb);
        pcb->rtx_count++;
        uint64_t rto = (uint64_t)pcb->rto_ms << (pcb->rtx_count < 10 ? pcb->rtx_count : 10);
        if (rto > 60000)
            rto = 60000;
        timer_arm(&st->tw, &pcb->t_rtx, now + rto * NS_PER_MS);
        return;
    }
    if (pcb->xmit_retry) { /* a transmit failed locally: try again, no loss was seen */
        pcb->xmit_retry = false;
        tcp_output(st, pcb);
        return;
    }
    if (pcb->snd_una == pcb->snd_max)
        return;              /* nothing outstanding */
    if (pcb->rack_pending) { /* RFC 8985 6.3: a retransmission not delivered in time */
        pcb->rack_pending = false;
        tcp_rack_timeout(st, pcb);
        tcp_output(st, pcb);
        if (pcb->state != TCPS_CLOSED && !timer_armed(&pcb->t_rtx))
            tcp_arm_rtx(st, pcb);
        return;
    }
    if (pcb->tlp_pending) {
        pcb->tlp_pending = false;
        tcp_send_tlp(st, pcb);
        return;
    }
    if (!pcb->first_rtx_ns)
        pcb->first_rtx_ns = now;
    if (pcb->orphan && pcb->rtx_count >= st->par.tcp_orphan_retries) {
        CNT_INC(&st->cnt, tcp_orphan_timeouts);
        timeout_close(st, pcb);
        return;
    }
    if (pcb->rtx_count >= st->par.tcp_retries2 || user_timeout_hit(st, pcb)) {
        timeout_close(st, pcb);
        return;
    }
    /* RFC 6298 5.5-5.7 and RFC 5681 3.1: back off, collapse cwnd, go back to snd_una. */
    CNT_INC(&st->cnt, tcp_rto);
    pcb->rtx_count++;
    pcb->undo_ok = false; /* no D-SACK undo across a timeout */
    tcp_backoff(pcb);
    pcb->karn_high = pcb->snd_max;
    pcb->cc->on_rto(pcb, now);
    pcb->recover = pcb->snd_max;
    pcb->dupacks = 0;
    pcb->nrxt = 0;
    pcb->tlp_out = false;
    pcb->high_rxt = pcb->snd_una;
    pcb->rtt_ts = 0;
    pcb->lost++;
    if (pcb->sack_ok && pcb->rtx_count == 1) {
        /* With SACK, the first timeout keeps the scoreboard and recovers in loss mode:
         * only the unSACKed bytes go again, in slow start, and a retransmission lost
         * again is found by SACKs or its RACK timer instead of a second RTO (RFC 6675
         * 5.1, RFC 8985; Linux's Loss state). */
        pcb->in_recovery = true;
        pcb->loss_mode = true;
    } else {
        /* Timed out again (or no SACK): the receiver may have reneged (RFC 2018 8):
         * forget the scoreboard and go back to SND.UNA. */
        pcb->in_recovery = false;
        pcb->loss_mode = false;
        pcb->nsacked = 0;
        pcb->snd_nxt = pcb->snd_una;
        if (pcb->fin_sent && SEQ_LEQ(pcb->snd_nxt, pcb->fin_seq))
            pcb->fin_sent = false; /* the FIN goes out again with the data */
    }
    tcp_output(st, pcb);
    if (pcb->state != TCPS_CLOSED && !timer_armed(&pcb->t_rtx))
        tcp_arm_rtx(st, pcb);
}

/* The delayed-ACK timer (ack: an ACK is due) and the pacing timer (a paced connection
 * may send again: tcp_output's pacing gate armed it) both end in tcp_output. */
static void output_timer(struct stack *st, struct tcp_pcb *pcb, bool ack)
{
    if (pcb->state == TCPS_CLOSED || pcb->state == TCPS_LISTEN)
        return;
    if (ack)
        pcb->ack_now = true;
    tcp_output(st, pcb);
}

void tcp_delack_timer(struct timer *t, void *ctx, uint64_t now)
{
    output_timer(ctx, container_of(t, struct tcp_pcb, t_delack), true);
}

void tcp_pace_timer(struct timer *t, void *ctx, uint64_t now)
{
    output_timer(ctx, container_of(t, struct tcp_pcb, t_pace), false);
}

void tcp_arm_keepalive(struct stack *st, struct tcp_pcb *pcb)
{
    if (!pcb->keepalive) {
        timer_cancel(&st->tw, &pcb->t_keep);
        return;
    }
    timer_arm(&st->tw, &pcb->t_keep, pcb->last_rx_ns + (uint64_t)pcb->keep_idle_s * NS_PER_SEC);
}

void tcp_keep_timer(struct timer *t, void *ctx, uint64_t now)
{
    struct stack *st = ctx;
    struct tcp_pcb *pcb = container_of(t, struct tcp_pcb, t_keep);
    if (!pcb->keepalive || (pcb->state != TCPS_ESTABLISHED && pcb->state != TCPS_CLOSE_WAIT &&
                            pcb->state != TCPS_FIN_WAIT_2))
        return;
    uint64_t idle = now - pcb->last_rx_ns;
    if (idle < (uint64_t)pcb->keep_idle_s * NS_PER_SEC) {
        tcp_arm_keepalive(st, pcb);
        return;
    }
    if (pcb->keep_probes >= pcb->keep_cnt) {
        timeout_close(st, pcb);
        return;
    }
    pcb->keep_probes++;
    tcp_send_probe(st, pcb);
    timer_arm(&st->tw, &pcb->t_keep, now + (uint64_t)pcb->keep_intvl_s * NS_PER_SEC);
}
