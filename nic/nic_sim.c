/* sim backend: an in-memory NIC for tests.
 *
 * One RX queue (queue 0; other queue numbers see nothing). Unlinked, transmitted frames
 * wait on a TX queue that the test drains with nic_sim_take_tx(). Linked to a peer, each
 * transmitted frame is copied into a buffer of the peer's queue-0 pool and queued on the
 * peer's RX; the original is freed at once (TX completion). Single-threaded by design: both
 * ends of a link belong to the same thread.
 *
 * poll_fd is an eventfd that is readable while RX holds frames: written on the
 * empty -> non-empty edge only and drained when RX becomes empty again, so a busy link
 * costs no system call per frame. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "nic/nic.h"

#define SIM_QUEUE_MAX 4096u

struct sim {
    struct pktbuf_queue rx, tx;
    int efd;
    bool signalled; /* efd holds a count */
    struct nic *peer;
};

static int sim_open(struct nic *n, const struct nic_params *p);
static void sim_close(struct nic *n);
static int sim_rx_burst(struct nic *n, uint16_t q, struct pktbuf **pkts, int max);
static int sim_tx_burst(struct nic *n, uint16_t q, struct pktbuf **pkts, int cnt);
static int sim_tx_flush(struct nic *n, uint16_t q)
{
    return 0;
}
static int sim_poll_fd(struct nic *n, uint16_t q)
{
    struct sim *s = n->priv;
    return s->efd;
}

const struct nic_ops nic_sim_ops = {
    .name = "sim",
    .open = sim_open,
    .close = sim_close,
    .rx_burst = sim_rx_burst,
    .tx_burst = sim_tx_burst,
    .tx_flush = sim_tx_flush,
    .poll_fd = sim_poll_fd,
};

static int sim_open(struct nic *n, const struct nic_params *p)
{
    struct sim *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->efd < 0) {
        int e = -errno;
        free(s);
        return e;
    }
    pktq_init(&s->rx);
    pktq_init(&s->tx);
    n->priv = s;
    n->ifindex = 0;
    return 0;
}

static void sim_close(struct nic *n)
{
    struct sim *s = n->priv;
    if (!s)
        return;
    if (s->peer) {
        struct sim *ps = s->peer->priv;
        if (ps && ps->peer == n)
            ps->peer = NULL;
    }
    pktq_purge(&s->rx);
    pktq_purge(&s->tx);
    close(s->efd);
    free(s);
    n->priv = NULL;
}

static void sim_rx_push(struct nic *n, struct pktbuf *pb)
{
    struct sim *s = n->priv;
    pktq_push(&s->rx, pb);
    if (!s->signalled) {
        uint64_t one = 1;
        /* Edge only: an eventfd write of 1 cannot fail short of counter overflow. */
        if (write(s->efd, &one, sizeof(one)) == (ssize_t)sizeof(one))
            s->signalled = true;
    }
}

/* Copy frame bytes into a fresh buffer of n's queue-0 pool and queue it for RX. */
static int sim_rx_copy(struct nic *n, const uint8_t *frame, uint32_t len)
{
    struct sim *s = n->priv;
    struct stack_counters *c = n->cnt[0];
    if (!n->pool[0] || s->rx.len >= SIM_QUEUE_MAX) {
        if (c)
            CNT_INC(c, nic_rx_drop_nobuf);
        return -ENOBUFS;
    }
    struct pktbuf *pb = pktbuf_alloc(n->pool[0]);
    if (!pb) {
        if (c)
            CNT_INC(c, nic_rx_drop_nobuf);
        return -ENOBUFS;
    }
    if (len > pktbuf_tailroom(pb)) {
        pktbuf_free(pb);
        if (c)
            CNT_INC(c, nic_rx_drop_error); /* longer than the device's buffers */
        return -EMSGSIZE;
    }
    memcpy(pktbuf_put(pb, len), frame, len);
    pb->ifindex = (uint16_t)n->ifindex;
    sim_rx_push(n, pb);
    return 0;
}

static int sim_rx_burst(struct nic *n, uint16_t q, struct pktbuf **pkts, int max)
{
    struct sim *s = n->priv;
    int got = 0;
    if (q != 0)
        return 0;
    while (got < max && s->rx.head)
        pkts[got++] = pktq_pop(&s->rx);
    if (!s->rx.head && s->signalled) {
        uint64_t v;
        /* Drain on the non-empty -> empty edge; EAGAIN cannot happen (we wrote). */
        if (read(s->efd, &v, sizeof(v)) == (ssize_t)sizeof(v) || errno == EAGAIN)
            s->signalled = false;
    }
    return got;
}

static int sim_tx_burst(struct nic *n, uint16_t q, struct pktbuf **pkts, int cnt)
{
    struct sim *s = n->priv;
    int acc = 0;
    for (int i = 0; i < cnt; i++) {
        struct pktbuf *pb = pkts[i];
        if (s->peer) {
            /* The frame left this NIC; a drop on the far side is counted there. */
            sim_rx_copy(s->peer, pktbuf_data(pb), pb->len);
            pktbuf_free(pb);
            acc++;
        } else if (s->tx.len < SIM_QUEUE_MAX) {
            pktq_push(&s->tx, pb);
            acc++;
        } else {
            pktbuf_free(pb); /* counted nic_tx_drop_full by nic_tx() */
        }
    }
    return acc;
}

static bool is_sim(const struct nic *n)
{
    return n && n->ops == &nic_sim_ops && n->priv;
}

void nic_sim_link(struct nic *a, struct nic *b)
{
    if (!is_sim(a) || !is_sim(b))
        return;
    ((struct sim *)a->priv)->peer = b;
    ((struct sim *)b->priv)->peer = a;
}

int nic_sim_inject(struct nic *n, const uint8_t *frame, uint32_t len)
{
    if (!is_sim(n))
        return -EINVAL;
    return sim_rx_copy(n, frame, len);
}

struct pktbuf *nic_sim_take_tx(struct nic *n)
{
    if (!is_sim(n))
        return NULL;
    return pktq_pop(&((struct sim *)n->priv)->tx);
}

uint32_t nic_sim_tx_pending(const struct nic *n)
{
    if (!is_sim(n))
        return 0;
    return ((const struct sim *)n->priv)->tx.len;
}
