/* tap backend: a Linux TAP device driven through io_uring (liburing).
 *
 * One io_uring and one tap fd per queue (IFF_MULTI_QUEUE when nqueues > 1).
 *
 * RX works like NAPI: a posted read on a blocking fd would park an io-wq thread per read,
 * and on a non-blocking one io_uring (since 6.x) arms a poll per read instead of failing
 * it, so every posted read waits on the tun fd and each arriving frame wakes them all (the
 * conn-rate benchmark measured 143000 poll re-arms/s and 2.3x fewer connections). So the
 * reads carry RWF_NOWAIT, and while the device is readable we post a batch of
 * IORING_OP_READs (each into its own pktbuf) that the kernel runs inline at submit time; a
 * read that finds the queue empty completes with -EAGAIN,
 * which ends the batch mode (the "interrupt re-enabled" point): one oneshot POLL_ADD is
 * then armed and its completion says the device is readable again. The batch size adapts
 * (doubles while batches fill, halves on -EAGAIN) between 4 and params.rx_ring.
 *
 * TX queues one IORING_OP_WRITE per frame and keeps the pktbuf until its completion
 * arrives (Linux's TX completion), then returns it to its pool.
 *
 * System calls: rx_burst and tx_burst only touch the shared rings (completions are peeked
 * and new SQEs written in user memory). tx_flush, once per loop iteration, does the single
 * io_uring_submit for every read re-posted and every write queued since the last one, and
 * nothing at all when no SQE is pending. The worker sleeps in ppoll() on the ring fd, which
 * polls readable when completions are waiting.
 *
 * Every request's user_data is an index into a descriptor array of rx_ring + tx_ring
 * entries, so close can find and free every buffer the kernel still held. */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <linux/if_tun.h>
#include <linux/virtio_net.h>
#include <net/if.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nic/nic.h"

#define TAP_REAP_BATCH  64u
#define TAP_MAX_ENTRIES 32768u           /* kernel limit for SQ entries */
#define TAP_CANCEL_UD   UINT64_MAX       /* user_data of the cancel and kick NOPs */
#define TAP_POLL_UD     (UINT64_MAX - 1) /* user_data of the readability poll */
#define TAP_MIN_BATCH   4u
#define TAP_NO_DESC     UINT32_MAX

struct tap_desc {
    struct pktbuf *pb; /* NULL when free */
    uint32_t next;     /* free list */
    bool rx;
};

struct tapq {
    int fd;
    bool ring_ok;
    bool starved;      /* last refill found the pool empty (counted once per episode) */
    bool readable;     /* the device may hold frames: post reads, not the poll */
    bool poll_armed;   /* a POLL_ADD is in flight */
    bool batch_eagain; /* the current read batch hit an empty queue */
    bool rw_nowait;    /* reads carry RWF_NOWAIT (cleared if the kernel refuses it) */
    bool gone;         /* the device was deleted: nothing more is read (nic_dev_gone) */
    uint32_t rx_batch; /* reads per batch, adaptive */
    struct io_uring ring;
    struct tap_desc *desc;
    uint32_t ndesc, free_head;
    uint32_t rx_posted, tx_inflight; /* includes SQEs written but not yet submitted */
    struct pktbuf_queue rxready;     /* completed reads not yet returned by rx_burst */
};

struct tap {
    uint16_t nq;
    struct tapq q[NIC_MAX_QUEUES];
    int rps_fd[NIC_MAX_QUEUES]; /* rps_cpus = "auto": each queue's sysfs file, kept open */
    char rps_mask[300];         /* what "on" writes */
};

#define TCNT(c, field)                                                                             \
    do {                                                                                           \
        if (c)                                                                                     \
            CNT_INC(c, field);                                                                     \
    } while (0)

static uint32_t desc_get(struct tapq *tq, struct pktbuf *pb, bool rx)
{
    uint32_t i = tq->free_head;
    if (i == TAP_NO_DESC)
        return i;
    tq->free_head = tq->desc[i].next;
    tq->desc[i].pb = pb;
    tq->desc[i].rx = rx;
    return i;
}

static void desc_put(struct tapq *tq, uint32_t i)
{
    tq->desc[i].pb = NULL;
    tq->desc[i].next = tq->free_head;
    tq->free_head = i;
}

static void tap_close(struct nic *n);

static int tapq_open(struct nic *n, struct tapq *tq, const struct nic_params *p, bool multi)
{
    tq->fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (tq->fd < 0)
        return -errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags =
        (short)(IFF_TAP | IFF_NO_PI | (multi ? IFF_MULTI_QUEUE : 0) | (p->tso ? IFF_VNET_HDR : 0));
    memcpy(ifr.ifr_name, n->params.name, IFNAMSIZ - 1);
    if (ioctl(tq->fd, TUNSETIFF, &ifr) < 0)
        return -errno;
    if (p->tso) {
        /* Every frame carries a virtio_net_hdr: ours asks the kernel to cut TCP
         * super-segments (TSO); the kernel's tells us its checksum state. */
        int sz = (int)sizeof(struct virtio_net_hdr);
        /* We take GSO TCP frames and partial checksums from the kernel too (GRO for
         * free): one 64 KiB read instead of 41. */
        if (ioctl(tq->fd, TUNSETVNETHDRSZ, &sz) < 0 ||
            ioctl(tq->fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4) < 0)
            return -errno;
    }
    /* "" or a pattern ("shm%d"): the kernel picked the name; later queues attach to it. */
    memcpy(n->params.name, ifr.ifr_name, IFNAMSIZ - 1);
    n->params.name[IFNAMSIZ - 1] = '\0';
    /* Non-blocking too (RWF_NOWAIT is per read; see the header comment). */
    int fl = fcntl(tq->fd, F_GETFL);
    if (fl < 0 || fcntl(tq->fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    tq->readable = true;
    tq->rw_nowait = true;
    tq->rx_batch = TAP_MIN_BATCH;

    uint32_t entries = p->rx_ring + p->tx_ring;
    if (entries > TAP_MAX_ENTRIES)
        return -EINVAL;
    /* CQ is twice the SQ by default and never more than rx_ring + tx_ring requests (plus
     * one cancel) are in flight, so the CQ cannot overflow. */
    /* COOP_TASKRUN: a frame arriving while the worker busy-polls does not interrupt it
     * with an IPI; the kernel raises IORING_SQ_TASKRUN (TASKRUN_FLAG) and tap_reap runs
     * the pending completions itself. Older kernels refuse the flags: plain ring. */
    int rc = io_uring_queue_init(entries, &tq->ring,
                                 IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG);
    if (rc == -EINVAL)
        rc = io_uring_queue_init(entries, &tq->ring, 0);
    if (rc < 0)
        return rc;
    tq->ring_ok = true;
    tq->ndesc = entries;
    tq->desc = calloc(entries, sizeof(*tq->desc));
    if (!tq->desc)
        return -ENOMEM;
    tq->free_head = TAP_NO_DESC;
    for (uint32_t i = entries; i-- > 0;) {
        tq->desc[i].next = tq->free_head;
        tq->free_head = i;
    }
    pktq_init(&tq->rxready);
    return 0;
}

static int tap_netdev_setup(struct nic *n, const struct nic_params *p)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -errno;
    int rc = 0;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    memcpy(ifr.ifr_name, n->params.name, IFNAMSIZ - 1);
    ifr.ifr_mtu = p->mtu;
    if (ioctl(s, SIOCSIFMTU, &ifr) < 0)
        goto err;
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        goto err;
    if (!(ifr.ifr_flags & IFF_UP)) {
        ifr.ifr_flags |= IFF_UP;
        if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
            goto err;
    }
    if (ioctl(s, SIOCGIFINDEX, &ifr) < 0)
        goto err;
    n->ifindex = ifr.ifr_ifindex;
    close(s);
    return 0;
err:
    rc = -errno;
    close(s);
    return rc;
}

/* Receive Packet Steering for the frames we write. A frame written to a TAP goes through
 * the kernel's receive path in the writer's thread (tun_get_user -> netif_receive_skb):
 * for a kernel TCP sender that is its ACK processing and the transmits and pacing timers
 * that follow, all on the worker's CPU. With rps_cpus set on the TAP's queue, the kernel
 * queues each frame to one of those CPUs' backlog instead (by flow hash), as a real NIC
 * interrupt lands on the receiving host's CPUs; the worker pays for the write only.
 * A list is written once; "auto" keeps the files open for tap_steer (nic.h). */
/* One write of v to a queue's rps_cpus file: 0 or -errno. */
static int rps_write(int fd, const char *v)
{
    size_t len = strlen(v);
    ssize_t r = pwrite(fd, v, len, 0);
    return r == (ssize_t)len ? 0 : r < 0 ? -errno : -EIO;
}

static int tap_rps_open(struct nic *n, struct tap *t, const struct nic_params *p)
{
    char path[128], buf[32];
    int len = nic_cpumask_hex(&p->rps_cpus, t->rps_mask, sizeof(t->rps_mask));
    if (len < 0)
        return len;
    /* /sys/class/net shows the netns that mounted sysfs, not necessarily ours: write only
     * if the name there is our device. */
    snprintf(path, sizeof(path), "/sys/class/net/%s/ifindex", n->params.name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t r = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (r <= 0 || (buf[r] = 0, strtol(buf, NULL, 10) != n->ifindex))
        return -ENODEV;
    for (uint16_t q = 0; q < t->nq; q++) {
        snprintf(path, sizeof(path), "/sys/class/net/%s/queues/rx-%u/rps_cpus", n->params.name,
                 (unsigned)q);
        fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
            return -errno;
        t->rps_fd[q] = fd;
        /* A list: on for good. Auto: the mask is tried (the kernel refuses CPUs it does
         * not have: better now than at the first switch), then off until the worker is
         * busy; it starts inline. */
        int rc = rps_write(fd, t->rps_mask);
        if (rc == 0 && p->rps == NIC_RPS_AUTO)
            rc = rps_write(fd, "0");
        if (rc < 0)
            return rc;
    }
    snprintf(n->mode, sizeof(n->mode), "rps_cpus %.40s%s", t->rps_mask,
             p->rps == NIC_RPS_AUTO ? " when busy" : "");
    return 0;
}

static void tap_rps_close(struct tap *t)
{
    for (uint16_t q = 0; q < NIC_MAX_QUEUES; q++) {
        if (t->rps_fd[q] >= 0)
            close(t->rps_fd[q]);
        t->rps_fd[q] = -1;
    }
}

static int tap_steer(struct nic *n, uint16_t q, bool on)
{
    struct tap *t = n->priv;
    if (!t || q >= t->nq || t->rps_fd[q] < 0)
        return -EOPNOTSUPP;
    return rps_write(t->rps_fd[q], on ? t->rps_mask : "0");
}

static int tap_open(struct nic *n, const struct nic_params *p)
{
    struct tap *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    n->priv = t;
    for (uint16_t i = 0; i < NIC_MAX_QUEUES; i++)
        t->q[i].fd = t->rps_fd[i] = -1;
    int rc = 0;
    for (uint16_t i = 0; i < p->nqueues; i++) {
        t->nq = (uint16_t)(i + 1);
        rc = tapq_open(n, &t->q[i], p, p->nqueues > 1);
        if (rc < 0)
            goto fail;
    }
    rc = tap_netdev_setup(n, p);
    if (rc < 0)
        goto fail;
    if (p->rps != NIC_RPS_OFF && CPU_COUNT(&p->rps_cpus) > 0) {
        rc = tap_rps_open(n, t, p);
        if (rc < 0 && p->rps == NIC_RPS_LIST) {
            snprintf(n->errmsg, sizeof(n->errmsg), "cannot set rps_cpus of %s", n->params.name);
            goto fail;
        }
        if (rc < 0) { /* auto: the stack works without it; the log says why it is not set */
            tap_rps_close(t);
            snprintf(n->mode, sizeof(n->mode), "rps_cpus not set (%s)", strerror(-rc));
        }
        if (p->rps == NIC_RPS_LIST)
            tap_rps_close(t); /* written for good */
        n->steer_auto = rc == 0 && p->rps == NIC_RPS_AUTO;
    }
    return 0;
fail:
    tap_close(n);
    return rc;
}

/* One completion. Returns nothing: every outcome is either a frame or a counted drop. */
static void tap_complete(struct nic *n, uint16_t q, struct tapq *tq, const struct io_uring_cqe *cqe)
{
    if (cqe->user_data == TAP_CANCEL_UD)
        return;
    if (cqe->user_data == TAP_POLL_UD) {
        tq->poll_armed = false;
        tq->readable = true; /* also on error/cancel: a read batch finds out */
        return;
    }
    uint32_t i = (uint32_t)cqe->user_data;
    if (i >= tq->ndesc || !tq->desc[i].pb)
        return; /* cannot happen: every user_data we post is a live descriptor */
    struct pktbuf *pb = tq->desc[i].pb;
    bool rx = tq->desc[i].rx;
    desc_put(tq, i);
    struct stack_counters *c = n->cnt[q];
    int res = cqe->res;
    if (rx) {
        tq->rx_posted--;
        uint32_t vh = n->params.tso ? (uint32_t)sizeof(struct virtio_net_hdr) : 0;
        if (res > (int)vh && (uint32_t)res <= pktbuf_tailroom(pb)) {
            pb->len = (uint32_t)res;
            if (vh) {
                /* The local kernel sends partial (NEEDS_CSUM) or verified (DATA_VALID)
                 * checksums for TCP/UDP: the stack must not check them again. */
                uint8_t fl = pktbuf_data(pb)[0];
                pb->csum_ok = fl & (VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID);
                pktbuf_pull(pb, vh);
            }
            pb->ifindex = (uint16_t)n->ifindex;
            pktq_push(&tq->rxready, pb);
            if (tq->rx_posted == 0 && !tq->batch_eagain && tq->rx_batch < n->params.rx_ring)
                tq->rx_batch *= 2; /* the whole batch was full: read more next time */
            return;
        }
        if (res == -EOPNOTSUPP && tq->rw_nowait) {
            /* A kernel without RWF_NOWAIT for tun: plain reads from now on. */
            tq->rw_nowait = false;
        } else if (res == -EAGAIN) {
            /* Queue drained: fall back to the poll (NAPI's "complete, re-enable IRQ"). */
            tq->readable = false;
            tq->batch_eagain = true;
        } else if (res == -EBADFD || res == -ENODEV || res == -ENXIO) {
            /* The device is gone (deleted, or its namespace removed): the fd stays
             * readable with an error for ever. Stop reading rather than spin on it. */
            if (!tq->gone)
                TCNT(c, nic_dev_gone);
            tq->gone = true;
            tq->readable = false;
        } else if (res != -ECANCELED) {
            TCNT(c, nic_rx_drop_error);
        }
        pktbuf_free(pb);
        if (tq->rx_posted == 0) {
            if (tq->batch_eagain && tq->rx_batch > TAP_MIN_BATCH)
                tq->rx_batch /= 2;
        }
    } else {
        tq->tx_inflight--;
        if (res < 0 && res != -ECANCELED)
            TCNT(c, nic_tx_drop_error);
        else if (res >= 0 && (uint32_t)res != pb->len)
            TCNT(c, nic_tx_drop_error); /* short write: the frame is broken */
        pktbuf_free(pb);
    }
}

/* Consume completions that are ready, without a system call, until `limit` received frames
 * wait in rxready. Completions beyond that stay in the CQ, so the ring fd keeps polling
 * readable and a worker never sleeps on frames it has not been given yet. */
static void tap_reap(struct nic *n, uint16_t q, struct tapq *tq, uint32_t limit)
{
    struct io_uring_cqe *cqes[TAP_REAP_BATCH];
    /* Completions the kernel deferred to us (COOP_TASKRUN): one system call posts them.
     * Relaxed is enough: a flag raised just after this load is seen on the next pass, and
     * a sleeping worker is woken by the task work itself. */
    if (__atomic_load_n(tq->ring.sq.kflags, __ATOMIC_RELAXED) & IORING_SQ_TASKRUN)
        io_uring_get_events(&tq->ring);
    while (tq->rxready.len < limit) {
        uint32_t want = limit - tq->rxready.len;
        if (want > TAP_REAP_BATCH)
            want = TAP_REAP_BATCH;
        /* peek_batch loads the CQ tail with acquire semantics, so the CQE contents the
         * kernel wrote before publishing the tail are visible to the reads below. */
        unsigned k = io_uring_peek_batch_cqe(&tq->ring, cqes, want);
        for (unsigned j = 0; j < k; j++)
            tap_complete(n, q, tq, cqes[j]);
        /* cq_advance stores the new head with release semantics: the kernel may reuse
         * these CQE slots only after our reads of them are complete. */
        if (k)
            io_uring_cq_advance(&tq->ring, k);
        if (k < want)
            break;
    }
}

/* While readable, post one batch of reads (after the previous batch completed); once a
 * read found the queue empty, arm the readability poll instead. SQEs only: tx_flush
 * submits them. */
static void tap_refill(struct nic *n, uint16_t q, struct tapq *tq)
{
    struct pktbuf_pool *pool = n->pool[q];
    if (!pool || tq->rx_posted || tq->gone)
        return;
    if (!tq->readable) {
        if (tq->poll_armed || tq->free_head == TAP_NO_DESC ||
            io_uring_sq_space_left(&tq->ring) == 0)
            return;
        struct io_uring_sqe *sqe = io_uring_get_sqe(&tq->ring);
        io_uring_prep_poll_add(sqe, tq->fd, POLLIN);
        sqe->user_data = TAP_POLL_UD;
        tq->poll_armed = true;
        return;
    }
    tq->batch_eagain = false;
    while (tq->rx_posted < tq->rx_batch) {
        /* Checked before taking a buffer because a taken SQE cannot be handed back. */
        if (tq->free_head == TAP_NO_DESC || io_uring_sq_space_left(&tq->ring) == 0)
            return;
        struct pktbuf *pb = pktbuf_alloc(pool);
        if (!pb) {
            /* The stack holds every buffer; retried on the next rx_burst/tx_flush while
             * the kernel queues frames. Counted once per starvation episode. */
            if (!tq->starved)
                TCNT(n->cnt[q], nic_rx_drop_nobuf);
            tq->starved = true;
            return;
        }
        struct io_uring_sqe *sqe = io_uring_get_sqe(&tq->ring);
        uint32_t i = desc_get(tq, pb, true);
        io_uring_prep_read(sqe, tq->fd, pktbuf_data(pb), pktbuf_tailroom(pb), 0);
        if (tq->rw_nowait)
            sqe->rw_flags = RWF_NOWAIT;
        sqe->user_data = i;
        tq->rx_posted++;
    }
    tq->starved = false;
}

static int tap_rx_burst(struct nic *n, uint16_t q, struct pktbuf **pkts, int max)
{
    struct tap *t = n->priv;
    if (q >= t->nq)
        return -EINVAL;
    struct tapq *tq = &t->q[q];
    if (max <= 0)
        return 0;
    tap_reap(n, q, tq, (uint32_t)max);
    int got = 0;
    while (got < max && tq->rxready.head)
        pkts[got++] = pktq_pop(&tq->rxready);
    tap_refill(n, q, tq);
    return got;
}

/* Prepend the virtio_net_hdr (IFF_VNET_HDR): zero for a plain frame; for a TCP
 * super-segment, GSO over IPv4 with a partial checksum (the TCP checksum field holds the
 * pseudo-header sum; the kernel completes it per segment). false if it does not fit. */
static bool tap_vnet_hdr(struct pktbuf *pb)
{
    struct virtio_net_hdr h;
    memset(&h, 0, sizeof(h));
    if (pb->gso_size) {
        const uint8_t *f = pktbuf_data(pb);
        uint32_t l2 = f[12] == 0x81 && f[13] == 0x00 ? 18 : 14;
        if (pb->len < l2 + 40)
            return false;
        uint32_t l3 = (f[l2] & 0x0fu) * 4u, l4 = (f[l2 + l3 + 12] >> 4) * 4u;
        h.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
        h.gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
        h.hdr_len = (uint16_t)(l2 + l3 + l4);
        h.gso_size = pb->gso_size;
        h.csum_start = (uint16_t)(l2 + l3);
        h.csum_offset = 16; /* the TCP checksum field */
    }
    uint8_t *p = pktbuf_push(pb, sizeof(h));
    if (!p)
        return false;
    memcpy(p, &h, sizeof(h));
    return true;
}

static bool tap_post_write(struct nic *n, struct tapq *tq, struct pktbuf *pb)
{
    if (tq->tx_inflight >= n->params.tx_ring)
        return false;
    /* Check for a descriptor first: an SQE once taken cannot be returned. */
    if (tq->free_head == TAP_NO_DESC || io_uring_sq_space_left(&tq->ring) == 0)
        return false;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&tq->ring);
    if (!sqe)
        return false;
    uint32_t i = desc_get(tq, pb, false);
    io_uring_prep_write(sqe, tq->fd, pktbuf_data(pb), pb->len, 0);
    sqe->user_data = i;
    tq->tx_inflight++;
    return true;
}

static int tap_tx_burst(struct nic *n, uint16_t q, struct pktbuf **pkts, int cnt)
{
    struct tap *t = n->priv;
    if (q >= t->nq) {
        for (int i = 0; i < cnt; i++)
            pktbuf_free(pkts[i]);
        return 0;
    }
    struct tapq *tq = &t->q[q];
    bool retried = false;
    int acc = 0;
    if (n->params.tso) { /* once per frame, before any retry below */
        int k = 0;
        for (int i = 0; i < cnt; i++) {
            if (tap_vnet_hdr(pkts[i]))
                pkts[k++] = pkts[i];
            else
                pktbuf_free(pkts[i]); /* no headroom: cannot happen (PKTBUF_HEADROOM) */
        }
        if (k < cnt)
            TCNT(n->cnt[q], nic_tx_drop_error);
        cnt = k;
    }
    for (; acc < cnt; acc++) {
        if (tap_post_write(n, tq, pkts[acc]))
            continue;
        if (retried)
            break;
        /* Ring or descriptors full: push what is queued (tap writes complete inline) and
         * collect the completions, then try once more. */
        retried = true;
        io_uring_submit(&tq->ring);
        tap_reap(n, q, tq, UINT32_MAX);
        if (!tap_post_write(n, tq, pkts[acc]))
            break;
    }
    for (int i = acc; i < cnt; i++)
        pktbuf_free(pkts[i]); /* counted nic_tx_drop_full by nic_tx() */
    return acc;
}

static int tap_tx_flush(struct nic *n, uint16_t q)
{
    struct tap *t = n->priv;
    if (q >= t->nq)
        return -EINVAL;
    struct tapq *tq = &t->q[q];
    tap_refill(n, q, tq);
    /* Frames reaped by tx_burst (ring full) wait in rxready without a CQE behind them: a
     * NOP completes at once and makes the ring fd readable, so nic_wait() will not sleep
     * on them. Rare (only after a full TX ring); the CQ has room (2 x SQ entries). */
    if (tq->rxready.head && io_uring_sq_space_left(&tq->ring) > 0) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&tq->ring);
        io_uring_prep_nop(sqe);
        sqe->user_data = TAP_CANCEL_UD;
    }
    if (io_uring_sq_ready(&tq->ring) == 0)
        return 0; /* idle: no system call */
    int rc = io_uring_submit(&tq->ring);
    return rc < 0 ? rc : 0;
}

static int tap_poll_fd(struct nic *n, uint16_t q)
{
    struct tap *t = n->priv;
    return q < t->nq ? t->q[q].ring.ring_fd : -1;
}

/* Cancel every request still in the kernel and wait for their completions, so that no
 * read can land in a buffer after it went back to its pool. */
static void tapq_drain(struct nic *n, uint16_t q, struct tapq *tq)
{
    if (tq->rx_posted + tq->tx_inflight == 0)
        return;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&tq->ring);
    if (!sqe) {
        io_uring_submit(&tq->ring);
        sqe = io_uring_get_sqe(&tq->ring);
    }
    if (sqe) {
        io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
        sqe->user_data = TAP_CANCEL_UD;
    }
    io_uring_submit(&tq->ring);
    for (int tries = 0; tq->rx_posted + tq->tx_inflight > 0 && tries < 50; tries++) {
        struct io_uring_cqe *cqe;
        struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = 20 * 1000 * 1000};
        int rc = io_uring_wait_cqe_timeout(&tq->ring, &cqe, &ts);
        if (rc < 0 && rc != -ETIME && rc != -EINTR)
            break;
        tap_reap(n, q, tq, UINT32_MAX);
    }
}

static void tap_close(struct nic *n)
{
    struct tap *t = n->priv;
    if (!t)
        return;
    for (uint16_t i = 0; i < t->nq; i++) {
        struct tapq *tq = &t->q[i];
        if (tq->ring_ok) {
            if (tq->desc)
                tapq_drain(n, i, tq);
            io_uring_queue_exit(&tq->ring);
        }
        if (tq->fd >= 0)
            close(tq->fd);
        /* After queue_exit nothing refers to these buffers any more. */
        for (uint32_t k = 0; tq->desc && k < tq->ndesc; k++)
            pktbuf_free(tq->desc[k].pb);
        free(tq->desc);
        pktq_purge(&tq->rxready);
    }
    for (uint16_t i = 0; n->steer_auto && i < t->nq; i++)
        if (t->rps_fd[i] >= 0 && rps_write(t->rps_fd[i], "0") < 0)
            break; /* the device may be gone already: nothing to restore */
    tap_rps_close(t);
    free(t);
    n->priv = NULL;
}

const struct nic_ops nic_tap_ops = {
    .name = "tap",
    .open = tap_open,
    .close = tap_close,
    .rx_burst = tap_rx_burst,
    .tx_burst = tap_tx_burst,
    .tx_flush = tap_tx_flush,
    .poll_fd = tap_poll_fd,
    .steer = tap_steer,
};
