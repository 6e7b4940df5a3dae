/* BBR congestion control (the model of draft-cardwell-iccrg-bbr-congestion-control-00,
 * BBR v1 as in Linux): the window and a pacing rate follow a model of the path, the
 * bottleneck bandwidth (the largest delivery rate of the last 10 rounds) and the minimum
 * RTT (of the last 10 s), not losses. A random loss does not shrink the window; loss
 * recovery itself (SACK, RACK, PRR) stays the generic one.
 *
 * The delivery rate is measured once per round trip: the bytes delivered (acknowledged
 * or SACKed) from the start of a round to the ACK of the first byte sent in it, over the
 * time between. shmnet keeps no per-segment send records, so there is no per-ACK rate
 * sample as in Linux; a round's average is steadier and never larger than the per-ACK
 * samples Linux filters. */
#include <string.h>

#include "stack/tcp_impl.h"

#define BBR_BW_ROUNDS      10u                  /* the bandwidth filter's window, rounds */
#define BBR_MIN_RTT_NS     (10ull * NS_PER_SEC) /* the min-RTT filter's window */
#define BBR_PROBE_RTT_NS   (200ull * NS_PER_MS) /* time at 4 segments in PROBE_RTT */
#define BBR_HIGH_GAIN      2885                 /* 2/ln(2), in thousandths */
#define BBR_DRAIN_GAIN     347                  /* 1/2.885 */
#define BBR_CWND_GAIN      2000                 /* PROBE_BW's window: twice the BDP */
#define BBR_PACING_MARGIN  990                  /* pace 1% below the estimate (Linux) */
#define BBR_FULL_BW_GROWTH 1250                 /* STARTUP ends when 3 rounds grow < 25% */
#define BBR_MIN_ROUND_NS   (20ull * 1000u)      /* shorter rounds give no rate sample */

enum bbr_mode { BBR_STARTUP, BBR_DRAIN, BBR_PROBE_BW, BBR_PROBE_RTT };

/* PROBE_BW's gain cycle, one phase per min RTT: probe up, drain what that queued, cruise. */
static const uint16_t bbr_cycle[8] = {1250, 750, 1000, 1000, 1000, 1000, 1000, 1000};

struct bbr {
    uint64_t round_delivered; /* delivered at the round's start */
    uint64_t round_start_ns;
    uint64_t min_rtt_stamp_ns;
    uint64_t cycle_stamp_ns;
    uint64_t probe_rtt_done_ns; /* 0: not yet at 4 segments */
    uint32_t round_end_seq;     /* the round ends when this byte is acknowledged */
    uint32_t rounds;            /* round trips counted */
    uint32_t bw[BBR_BW_ROUNDS]; /* bytes per ms, by round */
    uint32_t full_bw;           /* bytes per ms */
    uint32_t min_rtt_us;
    uint32_t prior_cwnd;      /* before PROBE_RTT */
    uint32_t probe_rtt_round; /* PROBE_RTT lasts until a round after this one */
    uint8_t mode, cycle_idx, full_bw_cnt;
    bool full_bw_reached;
};
_Static_assert(sizeof(struct bbr) <= TCP_CC_PRIV, "bbr state fits");

static struct bbr *bbr_of(struct tcp_pcb *pcb)
{
    return (struct bbr *)pcb->cc_priv;
}

static uint64_t delivered(const struct tcp_pcb *pcb)
{
    return pcb->bytes_acked + tcp_sacked_bytes(pcb);
}

static uint32_t max_bw(const struct bbr *b)
{
    uint32_t m = 0;
    for (uint32_t i = 0; i < BBR_BW_ROUNDS; i++)
        if (b->bw[i] > m)
            m = b->bw[i];
    return m;
}

/* The estimated bandwidth-delay product, bytes (0 before the first sample). */
static uint64_t bdp(const struct bbr *b)
{
    if (b->min_rtt_us == UINT32_MAX)
        return 0;
    return (uint64_t)max_bw(b) * b->min_rtt_us / 1000u;
}

static uint32_t pacing_gain(const struct bbr *b)
{
    switch (b->mode) {
    case BBR_STARTUP:
        return BBR_HIGH_GAIN;
    case BBR_DRAIN:
        return BBR_DRAIN_GAIN;
    case BBR_PROBE_BW:
        return bbr_cycle[b->cycle_idx];
    default:
        return 1000;
    }
}

static void set_pacing_rate(struct tcp_pcb *pcb, struct bbr *b)
{
    uint64_t bw = max_bw(b);
    if (!bw)
        return; /* no sample yet: the first window goes out unpaced, as the IW does */
    /* bytes/ms x gain/1000 x 1000 ms/s x margin/1000 */
    pcb->pacing_rate = bw * pacing_gain(b) * BBR_PACING_MARGIN / 1000u;
}

static void bbr_init(struct tcp_pcb *pcb)
{
    memset(pcb->cc_priv, 0, sizeof(pcb->cc_priv));
    struct bbr *b = bbr_of(pcb);
    b->mode = BBR_STARTUP;
    b->round_end_seq = pcb->snd_max;
    b->round_delivered = delivered(pcb);
    b->min_rtt_us = pcb->min_rtt_us ? pcb->min_rtt_us : UINT32_MAX;
    pcb->pacing_rate = 0;
}

static void enter_probe_bw(struct bbr *b, uint64_t now)
{
    b->mode = BBR_PROBE_BW;
    b->cycle_stamp_ns = now;
    /* Any phase but the draining one (Linux picks at random; the round count will do). */
    b->cycle_idx = (uint8_t)(2 + b->rounds % 6);
}

/* A round ended: STARTUP is over when the bandwidth grew less than 25% in 3 rounds. */
static void check_full_bw(struct bbr *b)
{
    if (b->full_bw_reached)
        return;
    uint32_t bw = max_bw(b);
    if ((uint64_t)bw * 1000u >= (uint64_t)b->full_bw * BBR_FULL_BW_GROWTH) {
        b->full_bw = bw;
        b->full_bw_cnt = 0;
        return;
    }
    if (++b->full_bw_cnt >= 3)
        b->full_bw_reached = true;
}

static void update_min_rtt(struct tcp_pcb *pcb, struct bbr *b, uint32_t sample_us, uint64_t now)
{
    bool expired = b->min_rtt_stamp_ns && now - b->min_rtt_stamp_ns > BBR_MIN_RTT_NS;
    if (sample_us && (sample_us <= b->min_rtt_us || expired)) {
        b->min_rtt_us = sample_us;
        b->min_rtt_stamp_ns = now;
    }
    /* PROBE_RTT: the estimate is old; drain the queue to 4 segments for 200 ms and a
     * round so that a new sample can see the path's own delay. */
    if (expired && b->mode != BBR_PROBE_RTT) {
        b->mode = BBR_PROBE_RTT;
        b->prior_cwnd = pcb->cwnd;
        b->probe_rtt_done_ns = 0;
    }
    if (b->mode != BBR_PROBE_RTT)
        return;
    uint32_t floor = 4u * pcb->mss;
    if (pcb->cwnd > floor)
        pcb->cwnd = floor;
    if (!b->probe_rtt_done_ns && tcp_flight(pcb) <= floor) {
        b->probe_rtt_done_ns = now + BBR_PROBE_RTT_NS;
        b->probe_rtt_round = b->rounds; /* and a round */
    } else if (b->probe_rtt_done_ns && now >= b->probe_rtt_done_ns &&
               b->rounds - b->probe_rtt_round >= 2) {
        b->min_rtt_stamp_ns = now;
        if (pcb->cwnd < b->prior_cwnd)
            pcb->cwnd = b->prior_cwnd;
        if (b->full_bw_reached)
            enter_probe_bw(b, now);
        else
            b->mode = BBR_STARTUP;
    }
}

/* Every ACK, in recovery too: rounds, the filters, the mode, the pacing rate. */
static void bbr_on_delivered(struct tcp_pcb *pcb, uint64_t now)
{
    struct bbr *b = bbr_of(pcb);
    uint32_t rtt_sample = pcb->seg_rtt_us;
    /* The round ends when the first byte sent after its start is acknowledged: one round
     * trip of that byte at least. */
    if (SEQ_GT(pcb->snd_una, b->round_end_seq)) {
        uint64_t d = delivered(pcb), el = now - b->round_start_ns, bw = 0;
        bool valid = b->round_start_ns && el >= BBR_MIN_ROUND_NS && d > b->round_delivered;
        if (valid) {
            bw = (d - b->round_delivered) * NS_PER_MS / el;
            if (!rtt_sample || el / 1000u < rtt_sample)
                rtt_sample = (uint32_t)(el / 1000u); /* the first byte's round trip */
        }
        /* A round without a sample (idle before it) counts, with no bandwidth. */
        b->bw[b->rounds % BBR_BW_ROUNDS] = bw > UINT32_MAX ? UINT32_MAX : (uint32_t)bw;
        b->rounds++;
        if (valid)
            check_full_bw(b);
        b->round_delivered = d;
        b->round_start_ns = now;
        b->round_end_seq = pcb->snd_max;
    } else if (pcb->snd_una == pcb->snd_max) {
        b->round_end_seq = pcb->snd_max; /* idle: the next round starts with the next send */
        b->round_start_ns = 0;
    }
    if (!b->round_start_ns && pcb->snd_una != pcb->snd_max) {
        b->round_start_ns = now;
        b->round_delivered = delivered(pcb);
    }
    update_min_rtt(pcb, b, rtt_sample, now);

    if (b->mode == BBR_STARTUP && b->full_bw_reached)
        b->mode = BBR_DRAIN; /* empty the queue STARTUP built */
    if (b->mode == BBR_DRAIN && tcp_flight(pcb) <= bdp(b))
        enter_probe_bw(b, now);
    if (b->mode == BBR_PROBE_BW && b->min_rtt_us != UINT32_MAX &&
        now - b->cycle_stamp_ns > (uint64_t)b->min_rtt_us * 1000u) {
        b->cycle_idx = (uint8_t)((b->cycle_idx + 1) % 8);
        b->cycle_stamp_ns = now;
    }
    set_pacing_rate(pcb, b);
}

/* New data acknowledged outside recovery: the window towards gain x BDP. */
static void bbr_on_ack(struct tcp_pcb *pcb, uint32_t acked, uint64_t now)
{
    struct bbr *b = bbr_of(pcb);
    uint64_t est = bdp(b);
    uint32_t gain = b->mode == BBR_PROBE_BW ? BBR_CWND_GAIN : BBR_HIGH_GAIN;
    /* Three segments more for the ACKs a receiver holds back or coalesces (Linux). */
    uint64_t target = est ? est * gain / 1000u + 3u * pcb->mss : UINT32_MAX;
    uint64_t cwnd = (uint64_t)pcb->cwnd + acked;
    if (b->full_bw_reached && cwnd > target)
        cwnd = target;
    if (cwnd < 4u * pcb->mss)
        cwnd = 4u * pcb->mss;
    if (b->mode == BBR_PROBE_RTT && cwnd > 4u * pcb->mss)
        cwnd = 4u * pcb->mss;
    pcb->cwnd = cwnd > UINT32_MAX / 2 ? UINT32_MAX / 2 : (uint32_t)cwnd;
}

/* A loss: no reduction (the model, not the loss, says how fast); recovery keeps the
 * window the flight had. */
static uint32_t bbr_ssthresh(struct tcp_pcb *pcb, uint64_t now)
{
    return pcb->cwnd;
}

static void bbr_on_rto(struct tcp_pcb *pcb, uint64_t now)
{
    /* As Linux: one segment while the flight goes again; the model is kept, and bbr_on_ack
     * brings the window back to it as ACKs come. */
    pcb->ssthresh = 0xffffffffu;
    pcb->cwnd = pcb->mss;
}

const struct tcp_cc_ops tcp_cc_bbr = {
    .name = "bbr",
    .init = bbr_init,
    .on_ack = bbr_on_ack,
    .ssthresh = bbr_ssthresh,
    .on_rto = bbr_on_rto,
    .on_delivered = bbr_on_delivered,
};
