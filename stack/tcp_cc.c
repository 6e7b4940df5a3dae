/* Congestion control: NewReno (RFC 5681, RFC 6582) and CUBIC (RFC 9438). */
#include <math.h>
#include <string.h>

#include "stack/tcp_impl.h"

static void reno_init(struct tcp_pcb *pcb)
{
    memset(pcb->cc_priv, 0, sizeof(pcb->cc_priv));
}

/* RFC 5681 3.1: slow start below ssthresh (RFC 3465 ABC, L = 2 MSS), then one MSS per RTT. */
static void reno_on_ack(struct tcp_pcb *pcb, uint32_t acked, uint64_t now)
{
    if (pcb->cwnd < pcb->ssthresh) {
        pcb->cwnd += acked < 2u * pcb->mss ? acked : 2u * pcb->mss;
        return;
    }
    uint64_t *acc = &pcb->cc_priv[0];
    *acc += acked;
    if (*acc >= pcb->cwnd) {
        *acc -= pcb->cwnd;
        pcb->cwnd += pcb->mss;
    }
}

static uint32_t reno_ssthresh(struct tcp_pcb *pcb, uint64_t now)
{
    uint32_t half = tcp_flight(pcb) / 2; /* RFC 5681 (4) */
    return half > 2u * pcb->mss ? half : 2u * pcb->mss;
}

static void reno_on_rto(struct tcp_pcb *pcb, uint64_t now)
{
    pcb->ssthresh = reno_ssthresh(pcb, now);
    pcb->cwnd = pcb->mss; /* loss window (RFC 5681 3.1) */
}

const struct tcp_cc_ops tcp_cc_newreno = {
    .name = "newreno",
    .init = reno_init,
    .on_ack = reno_on_ack,
    .ssthresh = reno_ssthresh,
    .on_rto = reno_on_rto,
};

/* CUBIC state in cc_priv. Window in segments as doubles (RFC 9438 4). */
struct cubic {
    double w_max;     /* segments */
    double k;         /* seconds */
    double w_est;     /* Reno-friendly estimate, segments */
    uint64_t t_epoch; /* ns; 0 = no epoch */
    double cwnd_cnt;
};
_Static_assert(sizeof(struct cubic) <= TCP_CC_PRIV, "cubic state fits");

#define CUBIC_C    0.4
#define CUBIC_BETA 0.7

static struct cubic *cub(struct tcp_pcb *pcb)
{
    return (struct cubic *)pcb->cc_priv;
}

static void cubic_init(struct tcp_pcb *pcb)
{
    memset(pcb->cc_priv, 0, sizeof(pcb->cc_priv));
}

static void cubic_on_ack(struct tcp_pcb *pcb, uint32_t acked, uint64_t now)
{
    struct cubic *c = cub(pcb);
    if (pcb->cwnd < pcb->ssthresh) { /* slow start as Reno (RFC 9438 4.10) */
        pcb->cwnd += acked < 2u * pcb->mss ? acked : 2u * pcb->mss;
        return;
    }
    double mss = pcb->mss, cwnd = pcb->cwnd / mss;
    if (!c->t_epoch) {
        c->t_epoch = now;
        if (c->w_max < cwnd)
            c->w_max = cwnd;
        c->k = cbrt((c->w_max - cwnd) / CUBIC_C); /* RFC 9438 (2) with cwnd_epoch = cwnd */
        c->w_est = cwnd;
    }
    double rtt = pcb->srtt_us ? pcb->srtt_us / 1e6 : 0.1;
    double t = (double)(now - c->t_epoch) / 1e9 + rtt;
    double target = CUBIC_C * pow(t - c->k, 3) + c->w_max; /* W_cubic(t + RTT), (1) */
    if (target > 1.5 * cwnd)
        target = 1.5 * cwnd;
    /* Reno-friendly region (RFC 9438 4.3): alpha = 3(1-beta)/(1+beta). */
    double alpha = 3.0 * (1 - CUBIC_BETA) / (1 + CUBIC_BETA);
    c->w_est += alpha * (acked / mss) / cwnd;
    if (c->w_est > target)
        target = c->w_est;
    if (target > cwnd) {
        c->cwnd_cnt += (target - cwnd) / cwnd * (acked / mss);
        if (c->cwnd_cnt >= 1.0) {
            uint32_t add = (uint32_t)c->cwnd_cnt;
            pcb->cwnd += add * pcb->mss;
            c->cwnd_cnt -= add;
        }
    }
}

static uint32_t cubic_ssthresh(struct tcp_pcb *pcb, uint64_t now)
{
    struct cubic *c = cub(pcb);
    double cwnd = (double)pcb->cwnd / pcb->mss;
    /* Fast convergence (RFC 9438 4.7). */
    c->w_max = cwnd < c->w_max ? cwnd * (1 + CUBIC_BETA) / 2 : cwnd;
    c->t_epoch = 0;
    c->cwnd_cnt = 0;
    uint32_t s = (uint32_t)(pcb->cwnd * CUBIC_BETA); /* (4.6) */
    return s > 2u * pcb->mss ? s : 2u * pcb->mss;
}

static void cubic_on_rto(struct tcp_pcb *pcb, uint64_t now)
{
    pcb->ssthresh = cubic_ssthresh(pcb, now);
    pcb->cwnd = pcb->mss;
    cub(pcb)->w_est = 1;
}

const struct tcp_cc_ops tcp_cc_cubic = {
    .name = "cubic",
    .init = cubic_init,
    .on_ack = cubic_on_ack,
    .ssthresh = cubic_ssthresh,
    .on_rto = cubic_on_rto,
};

const struct tcp_cc_ops *tcp_cc_find(const char *name)
{
    if (name && !strcmp(name, "newreno"))
        return &tcp_cc_newreno;
    if (name && (!strcmp(name, "reno")))
        return &tcp_cc_newreno;
    if (name && !strcmp(name, "bbr"))
        return &tcp_cc_bbr;
    return &tcp_cc_cubic;
}
