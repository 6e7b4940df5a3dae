/* Generic NIC layer: backend lookup, open/close, and the RX/TX wrappers that add what every
 * backend shares (counters, fault injector, pcap tap). Callers never call ops directly. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "nic/nic.h"

extern const struct nic_ops nic_tap_ops;
extern const struct nic_ops nic_sim_ops;
extern const struct nic_ops nic_xdp_ops;

#define NIC_WAIT_MAX 64

#define NCNT_ADD(c, field, v)                                                                      \
    do {                                                                                           \
        if (c)                                                                                     \
            CNT_ADD(c, field, v);                                                                  \
    } while (0)

int nic_cpumask_hex(const cpu_set_t *set, char *buf, size_t len)
{
    int top = -1; /* highest 32-bit word with a CPU in it */
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, set))
            top = c / 32;
    if (top < 0)
        top = 0;
    size_t at = 0;
    for (int w = top; w >= 0; w--) {
        uint32_t bits = 0;
        for (int b = 0; b < 32; b++)
            if (CPU_ISSET(w * 32 + b, set))
                bits |= 1u << b;
        /* The first word without leading zeros, the rest as full words. */
        int k = snprintf(buf + at, len - at, w == top ? "%x" : ",%08x", bits);
        if (k < 0 || (size_t)k >= len - at)
            return -ENOSPC;
        at += (size_t)k;
    }
    return (int)at;
}

const struct nic_ops *nic_find_ops(const char *backend)
{
    if (!backend)
        return NULL;
    if (strcmp(backend, "tap") == 0)
        return &nic_tap_ops;
    if (strcmp(backend, "sim") == 0)
        return &nic_sim_ops;
    if (strcmp(backend, "af_xdp") == 0)
        return &nic_xdp_ops;
    return NULL;
}

int nic_open(struct nic *n, const struct nic_params *p)
{
    struct nic_params par = *p; /* p may point into *n */
    const struct nic_ops *ops = nic_find_ops(par.backend);
    memset(n, 0, sizeof(*n));
    if (!ops)
        return -EPROTONOSUPPORT;
    if (par.nqueues == 0)
        par.nqueues = 1;
    if (par.nqueues > NIC_MAX_QUEUES)
        return -EINVAL;
    if (par.rx_ring == 0)
        par.rx_ring = NIC_DEFAULT_RING;
    if (par.tx_ring == 0)
        par.tx_ring = NIC_DEFAULT_RING;
    if (par.mtu == 0)
        par.mtu = NIC_DEFAULT_MTU;
    n->params = par;
    n->ops = ops;
    int rc = ops->open(n, &n->params);
    if (rc < 0) {
        n->ops = NULL;
        return rc;
    }
    if (n->params.fault.enabled) {
        /* One injector per queue: each runs on its queue's worker, no sharing. Queue q's
         * seed is offset by q, so runs stay reproducible. */
        for (uint16_t q = 0; q < n->params.nqueues; q++) {
            struct nic_fault_params fp = n->params.fault;
            fp.seed += q;
            n->qfault[q] = nic_fault_create(&fp);
            if (!n->qfault[q]) {
                for (uint16_t k = 0; k < q; k++)
                    nic_fault_destroy(n->qfault[k]);
                ops->close(n);
                n->ops = NULL;
                return -ENOMEM;
            }
        }
        n->fault = n->qfault[0];
    }
    return 0;
}

void nic_bind_queue(struct nic *n, uint16_t q, struct pktbuf_pool *pool, struct stack_counters *cnt)
{
    if (q >= NIC_MAX_QUEUES)
        return;
    n->pool[q] = pool;
    n->cnt[q] = cnt;
    /* Lets the backend post its RX buffers now and push them to the device (tap: one
     * io_uring_submit), so a worker that sleeps in nic_wait() before its first nic_rx()
     * still wakes up for the first frame. */
    if (n->ops && pool)
        n->ops->tx_flush(n, q);
}

void nic_close(struct nic *n)
{
    if (!n->ops)
        return;
    /* Frames held by the injector belong to the pools, which still exist here. */
    for (uint16_t q = 0; q < NIC_MAX_QUEUES; q++) {
        nic_fault_destroy(n->qfault[q]);
        n->qfault[q] = NULL;
    }
    n->fault = NULL;
    n->ops->close(n);
    n->ops = NULL;
    pcap_close(n->pcap);
    n->pcap = NULL;
}

static void tap_frames(struct nic *n, uint16_t q, struct pktbuf **pkts, int cnt, bool stamp,
                       uint64_t now)
{
    /* Every queue records into the one capture (pcap_write keeps records whole). Acquire
     * pairs with the release store that switches it (daemon: set_pcap_fn). */
    struct pcap_tap *t = __atomic_load_n(&n->pcap, __ATOMIC_ACQUIRE);
    struct stack_counters *c = n->cnt[q];
    for (int i = 0; i < cnt; i++) {
        if (stamp)
            pkts[i]->ts = now;
        if (!t)
            continue;
        if (pcap_write(t, pktbuf_data(pkts[i]), pkts[i]->len, now) < 0)
            NCNT_ADD(c, pcap_drop_error, 1);
        else
            NCNT_ADD(c, pcap_frames, 1);
    }
}

int nic_steer(struct nic *n, uint16_t q, bool on)
{
    if (!n->ops->steer || !n->steer_auto || q >= n->params.nqueues)
        return -EOPNOTSUPP;
    int rc = n->ops->steer(n, q, on);
    if (rc == 0 && n->cnt[q]) {
        CNT_INC(n->cnt[q], nic_rps_switch);
        /* A gauge: relaxed, single writer (counters.h). */
        __atomic_store_n(&n->cnt[q]->nic_rps_on, on, __ATOMIC_RELAXED);
    }
    return rc;
}

int nic_rx(struct nic *n, uint16_t q, struct pktbuf **pkts, int max, uint64_t now)
{
    if (max <= 0)
        return 0;
    struct stack_counters *c = n->cnt[q];
    struct nic_fault *f = nic_fault_on(n->qfault[q], false) ? n->qfault[q] : NULL;
    struct pktbuf *tmp[NIC_BURST];
    struct pktbuf **dst = f ? tmp : pkts;
    int want = f && max > NIC_BURST ? NIC_BURST : max;

    int got = n->ops->rx_burst(n, q, dst, want);
    if (got < 0) {
        if (!f)
            return got;
        got = 0; /* frames the injector delayed are still due */
    }
    uint64_t bytes = 0;
    for (int i = 0; i < got; i++)
        bytes += dst[i]->len;
    NCNT_ADD(c, nic_rx_frames, (uint64_t)got);
    NCNT_ADD(c, nic_rx_bytes, bytes);
    if (f)
        got = nic_fault_apply(f, false, tmp, got, pkts, max, now, c);
    /* Stamped at delivery, after the injector: a delayed frame arrives when it is released. */
    tap_frames(n, q, pkts, got, true, now);
    return got;
}

/* Hand frames to the backend; count what it took and what it refused (already freed). */
static int send_burst(struct nic *n, uint16_t q, struct pktbuf **pkts, int cnt)
{
    if (cnt <= 0)
        return 0;
    struct stack_counters *c = n->cnt[q];
    uint32_t len[NIC_BURST];
    for (int i = 0; i < cnt; i++)
        len[i] = pkts[i]->len; /* ownership passes to the backend below */
    int acc = n->ops->tx_burst(n, q, pkts, cnt);
    if (acc < 0)
        acc = 0;
    uint64_t bytes = 0;
    for (int i = 0; i < acc; i++)
        bytes += len[i];
    NCNT_ADD(c, nic_tx_frames, (uint64_t)acc);
    NCNT_ADD(c, nic_tx_bytes, bytes);
    NCNT_ADD(c, nic_tx_drop_full, (uint64_t)(cnt - acc));
    return acc;
}

int nic_tx(struct nic *n, uint16_t q, struct pktbuf **pkts, int cnt, uint64_t now)
{
    struct nic_fault *f = nic_fault_on(n->qfault[q], true) ? n->qfault[q] : NULL;
    struct stack_counters *c = n->cnt[q];
    int total = 0;
    for (int i = 0; i < cnt; i += NIC_BURST) {
        int k = cnt - i < NIC_BURST ? cnt - i : NIC_BURST;
        /* pcap records what the stack sent, before the wire's impairments. */
        tap_frames(n, q, pkts + i, k, false, now);
        if (!f) {
            total += send_burst(n, q, pkts + i, k);
            continue;
        }
        struct pktbuf *out[NIC_BURST];
        int m = nic_fault_apply(f, true, pkts + i, k, out, NIC_BURST, now, c);
        total += send_burst(n, q, out, m);
    }
    return total;
}

int nic_flush(struct nic *n, uint16_t q, uint64_t now)
{
    struct nic_fault *f = nic_fault_on(n->qfault[q], true) ? n->qfault[q] : NULL;
    if (f) {
        struct pktbuf *out[NIC_BURST];
        int m;
        do {
            m = nic_fault_apply(f, true, NULL, 0, out, NIC_BURST, now, n->cnt[q]);
            send_burst(n, q, out, m);
        } while (m == NIC_BURST);
    }
    return n->ops->tx_flush(n, q);
}

uint64_t nic_next_event(const struct nic *n)
{
    return nic_next_event_q(n, 0);
}

uint64_t nic_next_event_q(const struct nic *n, uint16_t q)
{
    return q < NIC_MAX_QUEUES && n->qfault[q] ? nic_fault_next(n->qfault[q]) : UINT64_MAX;
}

int nic_wait(struct nic **nics, const uint16_t *qs, int n, int wake_fd, uint64_t timeout_ns)
{
    struct pollfd pfd[NIC_WAIT_MAX + 1];
    nfds_t np = 0;
    if (n < 0 || n > NIC_WAIT_MAX)
        return -EINVAL;
    for (int i = 0; i < n; i++) {
        int fd = nics[i]->ops->poll_fd(nics[i], qs[i]);
        if (fd < 0)
            continue;
        pfd[np].fd = fd;
        pfd[np].events = POLLIN;
        pfd[np].revents = 0;
        np++;
    }
    if (wake_fd >= 0) {
        pfd[np].fd = wake_fd;
        pfd[np].events = POLLIN;
        pfd[np].revents = 0;
        np++;
    }
    struct timespec ts, *tp = NULL;
    if (timeout_ns != UINT64_MAX) {
        ts.tv_sec = (time_t)(timeout_ns / 1000000000u);
        ts.tv_nsec = (long)(timeout_ns % 1000000000u);
        tp = &ts;
    }
    if (ppoll(pfd, np, tp, NULL) < 0)
        return errno == EINTR ? 0 : -errno;
    return wake_fd >= 0 && (pfd[np - 1].revents & POLLIN) ? 1 : 0;
}
