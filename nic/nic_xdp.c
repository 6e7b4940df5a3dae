/* af_xdp backend: an existing interface driven through AF_XDP sockets (libxdp + libbpf).
 *
 * One socket per queue (queues 0 .. nqueues-1; worker i serves queue i), each with its own
 * UMEM and rings, so the workers share nothing on the data path. A steering program
 * (nic/xdp_steer.bpf.c, embedded in the binary) redirects only the frames shmnet owns
 * (unicast to our MAC, broadcast ARP requests for our address) to the socket of the queue
 * they arrived on (the XSKMAP is indexed by rx_queue_index); the rest goes on to the host
 * (XDP_PASS). The device's RSS decides the queue, the stack's steering (RPS) the worker.
 *
 * UMEM, per queue: 2 * rx_ring + tx_ring frames of 4 KiB. At most 2 * rx_ring are lent to the kernel
 * for RX (fill ring plus RX ring) and at most tx_ring for TX (TX ring plus completion
 * ring), so neither direction can starve the other. Every frame is at all times in exactly
 * one place: our free stack, lent for RX (fill_out) or lent for TX (tx_out); the
 * xdp_umem_* gauges show where. Frames are copied between UMEM and the stack's pktbufs
 * (zero-copy is a later step), so a pktbuf never points into UMEM.
 *
 * System calls: rx_burst and tx_burst touch the rings only. tx_flush kicks TX with
 * sendto() when the kernel asks for it (need_wakeup; always in copy mode), and the kernel's
 * generic TX path sends at most 32 frames per call, so a large batch costs more than one.
 * poll_fd is the socket, readable when the RX ring holds frames. */
#include <errno.h>
#include <linux/if_link.h>
#include <linux/if_packet.h>
#include <linux/if_xdp.h>
#include <net/if.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <xdp/libxdp.h>
#include <xdp/xsk.h>

#include "core/clock.h"
#include "nic/nic.h"
#include "nic/xdp_steer.h"

/* Frame size XSK_UMEM__DEFAULT_FRAME_SIZE; the kernel leaves XDP_PACKET_HEADROOM in front
 * of received data. At most XDP_KICK_TRIES sendto() (32 frames each) per flush. */
#define XDP_FRAME_SIZE     4096u
#define XDP_FRAME_DATA     (XDP_FRAME_SIZE - XDP_PACKET_HEADROOM)
#define XDP_KICK_TRIES     64
#define XDP_STATS_EVERY_NS 100000000ull

/* The steering program's ELF object, embedded by nic/xdp_steer_obj.S. */
extern const unsigned char shmnet_xdp_steer_obj[];
extern const uint64_t shmnet_xdp_steer_obj_len;

enum { G_FILL, G_RX, G_TX, G_COMP, G_FREE, G_N };

/* One queue: its socket, UMEM and frame accounting. Touched only by the queue's worker
 * (and by open/close, when no worker runs). */
struct xdpq {
    struct xsk_umem *umem;
    struct xsk_socket *xsk;
    struct xsk_ring_prod fq, tx;
    struct xsk_ring_cons cq, rx;
    uint8_t *area;
    size_t area_len;
    uint64_t *free; /* stack of free frame addresses */
    uint32_t nfree, nframes;
    uint32_t fill_out, fill_max; /* lent for RX */
    uint32_t tx_out, tx_max;     /* lent for TX */
    uint64_t gauge[G_N];         /* values last added to the counters */
    struct xdp_statistics st;    /* kernel statistics last added to the counters */
    uint64_t st_next;            /* when to read them again (CLOCK_MONOTONIC_COARSE ns) */
};

struct xdpn {
    struct bpf_object *obj;
    struct xdp_program *prog;
    enum xdp_attach_mode mode; /* how prog is attached; XDP_MODE_UNSPEC: not attached */
    int pkt_fd;                /* AF_PACKET socket holding our MAC in the unicast filter */
    bool zerocopy;             /* sockets bound XDP_ZEROCOPY */
    uint16_t nq;               /* queues set up (sockets bound or being bound) */
    struct xdpq q[NIC_MAX_QUEUES];
};

#define XCNT_ADD(c, field, v)                                                                      \
    do {                                                                                           \
        if (c)                                                                                     \
            CNT_ADD(c, field, v);                                                                  \
    } while (0)

static int xdp_fail(struct nic *n, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Record why open failed (the daemon logs it next to strerror(-rc)). */
static int xdp_fail(struct nic *n, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(n->errmsg, sizeof(n->errmsg), fmt, ap);
    va_end(ap);
    return rc;
}

/* libbpf and libxdp print their own diagnostics; only warnings reach the daemon log. */
static int xdp_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
    if (level == LIBBPF_DEBUG)
        return 0;
    return vfprintf(stderr, fmt, ap);
}

static int xdp_print_x(enum libxdp_print_level level, const char *fmt, va_list ap)
{
    if (level == LIBXDP_DEBUG)
        return 0;
    return vfprintf(stderr, fmt, ap);
}

static int iface_setup(struct nic *n, uint8_t kmac[6])
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -errno;
    struct ifreq ifr;
    int rc = 0;
    memset(&ifr, 0, sizeof(ifr));
    memcpy(ifr.ifr_name, n->params.name, IFNAMSIZ - 1);
    if (ioctl(s, SIOCGIFINDEX, &ifr) < 0) {
        rc = -errno;
        close(s);
        if (rc == -ENODEV)
            return xdp_fail(n, rc, "no interface '%s' (af_xdp attaches to an existing one)",
                            n->params.name);
        return rc;
    }
    n->ifindex = ifr.ifr_ifindex;
    if (ioctl(s, SIOCGIFMTU, &ifr) < 0)
        goto err;
    if (ifr.ifr_mtu < n->params.mtu) {
        close(s);
        return xdp_fail(n, -EINVAL, "interface mtu %d is below the configured mtu %u", ifr.ifr_mtu,
                        (unsigned)n->params.mtu);
    }
    if (ioctl(s, SIOCGIFHWADDR, &ifr) < 0)
        goto err;
    memcpy(kmac, ifr.ifr_hwaddr.sa_data, 6);
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        goto err;
    if (!(ifr.ifr_flags & IFF_UP)) {
        ifr.ifr_flags |= IFF_UP;
        if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
            goto err;
    }
    close(s);
    return 0;
err:
    rc = -errno;
    close(s);
    return rc;
}

static bool is_ours(struct xdp_program *p)
{
    const char *name = xdp_program__name(p);
    return name && strcmp(name, XDP_STEER_PROG) == 0;
}

/* A daemon killed with SIGKILL leaves its program attached (its socket is gone, so the
 * program passes everything): remove every copy of ours before attaching a new one. One
 * daemon per interface, so a copy of ours is always stale here. */
static void detach_stale(int ifindex)
{
    struct xdp_multiprog *mp = xdp_multiprog__get_from_ifindex(ifindex);
    if (!mp || libxdp_get_error(mp))
        return;
    if (xdp_multiprog__is_legacy(mp)) {
        struct xdp_program *p = xdp_multiprog__main_prog(mp);
        if (p && is_ours(p))
            xdp_multiprog__detach(mp);
        xdp_multiprog__close(mp);
        return;
    }
    int ours = 0, all = 0;
    for (struct xdp_program *p = xdp_multiprog__next_prog(NULL, mp); p;
         p = xdp_multiprog__next_prog(p, mp)) {
        all++;
        ours += is_ours(p);
    }
    if (ours && ours == all) {
        xdp_multiprog__detach(mp); /* the dispatcher with it */
    } else if (ours) {
        enum xdp_attach_mode m = xdp_multiprog__attach_mode(mp);
        for (struct xdp_program *p = xdp_multiprog__next_prog(NULL, mp); p;
             p = xdp_multiprog__next_prog(p, mp))
            if (is_ours(p))
                xdp_program__detach(p, ifindex, m, 0);
    }
    xdp_multiprog__close(mp);
}

static int attach_prog(struct nic *n, struct xdpn *x)
{
    const struct nic_params *p = &n->params;
    size_t len = (size_t)shmnet_xdp_steer_obj_len;
    struct bpf_object_open_opts oo = {.sz = sizeof(oo), .object_name = "xdp_steer"};
    x->obj = bpf_object__open_mem(shmnet_xdp_steer_obj, len, &oo);
    if (!x->obj || libbpf_get_error(x->obj)) {
        int rc = x->obj ? (int)libbpf_get_error(x->obj) : -EINVAL;
        x->obj = NULL;
        return xdp_fail(n, rc, "cannot open the embedded XDP program");
    }
    x->prog = xdp_program__from_bpf_obj(x->obj, "xdp");
    if (!x->prog || libxdp_get_error(x->prog)) {
        int rc = x->prog ? (int)libxdp_get_error(x->prog) : -EINVAL;
        x->prog = NULL;
        return xdp_fail(n, rc, "cannot load the XDP program");
    }
    detach_stale(n->ifindex);
    int rc;
    if (p->xdp_mode == NIC_XDP_COPY) {
        rc = xdp_program__attach(x->prog, n->ifindex, XDP_MODE_SKB, 0);
        if (rc < 0)
            return xdp_fail(n, rc, "cannot attach XDP in copy (generic) mode to %s", p->name);
        x->mode = XDP_MODE_SKB;
        return 0;
    }
    rc = xdp_program__attach(x->prog, n->ifindex, XDP_MODE_NATIVE, 0);
    if (rc == 0) {
        x->mode = XDP_MODE_NATIVE;
        return 0;
    }
    if (p->xdp_mode == NIC_XDP_NATIVE)
        return xdp_fail(n, rc,
                        "%s cannot run XDP in native (driver) mode; use xdp_mode = \"copy\" "
                        "or \"auto\"",
                        p->name);
    rc = xdp_program__attach(x->prog, n->ifindex, XDP_MODE_SKB, 0);
    if (rc < 0)
        return xdp_fail(n, rc, "cannot attach XDP to %s in native or copy mode", p->name);
    x->mode = XDP_MODE_SKB;
    return 0;
}

static int set_steer_cfg(struct nic *n, struct xdpn *x)
{
    struct xdp_steer_cfg cfg;
    uint32_t key = 0;
    memset(&cfg, 0, sizeof(cfg));
    memcpy(cfg.mac, n->params.mac, 6);
    cfg.ip4[0] = (uint8_t)(n->params.addr >> 24);
    cfg.ip4[1] = (uint8_t)(n->params.addr >> 16);
    cfg.ip4[2] = (uint8_t)(n->params.addr >> 8);
    cfg.ip4[3] = (uint8_t)n->params.addr;
    int fd = bpf_object__find_map_fd_by_name(x->obj, XDP_STEER_CFG);
    if (fd < 0)
        return xdp_fail(n, fd, "XDP program has no %s map", XDP_STEER_CFG);
    if (bpf_map_update_elem(fd, &key, &cfg, BPF_ANY) < 0)
        return -errno;
    return 0;
}

/* Ask the device to accept frames to our MAC: its unicast filter gets our address (or the
 * device goes promiscuous if it has no filter). Held by the socket, so the kernel drops it
 * when the daemon exits, even by SIGKILL. */
static int add_unicast(struct nic *n, struct xdpn *x)
{
    x->pkt_fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    if (x->pkt_fd < 0)
        return -errno;
    struct packet_mreq mr;
    memset(&mr, 0, sizeof(mr));
    mr.mr_ifindex = n->ifindex;
    mr.mr_type = PACKET_MR_UNICAST;
    mr.mr_alen = 6;
    memcpy(mr.mr_address, n->params.mac, 6);
    if (setsockopt(x->pkt_fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof(mr)) < 0)
        return -errno;
    return 0;
}

static void fill_refill(struct xdpq *x)
{
    uint32_t want = x->fill_max - x->fill_out;
    if (want > x->nfree)
        want = x->nfree;
    want = xsk_prod_nb_free(&x->fq, want);
    if (want > x->fq.size)
        want = x->fq.size;
    uint32_t idx;
    if (want == 0 || xsk_ring_prod__reserve(&x->fq, want, &idx) != want)
        return;
    for (uint32_t i = 0; i < want; i++)
        *xsk_ring_prod__fill_addr(&x->fq, idx + i) = x->free[--x->nfree];
    xsk_ring_prod__submit(&x->fq, want);
    x->fill_out += want;
}

static void comp_reap(struct xdpq *x)
{
    uint32_t idx;
    uint32_t k = xsk_ring_cons__peek(&x->cq, x->cq.size, &idx);
    for (uint32_t i = 0; i < k; i++)
        x->free[x->nfree++] = xsk_umem__extract_addr(*xsk_ring_cons__comp_addr(&x->cq, idx + i));
    if (k)
        xsk_ring_cons__release(&x->cq, k);
    x->tx_out -= k;
}

static void xdp_close(struct nic *n);

/* Create queue qid's UMEM over x->area and bind its socket with bind flag `mode`
 * (XDP_COPY or XDP_ZEROCOPY). On failure both are gone again. */
static int bind_socket(struct nic *n, struct xdpq *x, uint16_t qid, uint16_t mode)
{
    const struct nic_params *p = &n->params;
    struct xsk_umem_config uc = {
        .fill_size = p->rx_ring,
        .comp_size = p->tx_ring,
        .frame_size = XDP_FRAME_SIZE,
        .frame_headroom = 0,
        .flags = 0,
    };
    int rc = xsk_umem__create(&x->umem, x->area, x->area_len, &x->fq, &x->cq, &uc);
    if (rc < 0) {
        x->umem = NULL;
        return xdp_fail(n, rc, "cannot register the UMEM of queue %u", (unsigned)qid);
    }
    struct xsk_socket_config sc = {
        .rx_size = p->rx_ring,
        .tx_size = p->tx_ring,
        .libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD, /* ours is attached */
        .xdp_flags = 0,
        .bind_flags = mode | XDP_USE_NEED_WAKEUP,
    };
    rc = xsk_socket__create(&x->xsk, p->name, qid, x->umem, &x->rx, &x->tx, &sc);
    if (rc < 0) {
        x->xsk = NULL;
        xsk_umem__delete(x->umem);
        x->umem = NULL;
        return rc;
    }
    return 0;
}

/* RX queues the interface has (its sysfs queues/rx-N), or -errno. */
static int count_rx_queues(const char *ifname)
{
    char path[96];
    int k = 0;
    for (; k < NIC_MAX_QUEUES; k++) {
        snprintf(path, sizeof(path), "/sys/class/net/%s/queues/rx-%d", ifname, k);
        if (access(path, F_OK) != 0)
            break;
    }
    return k;
}

/* Queue qid's frames and free stack. */
static int queue_frames(struct nic *n, struct xdpq *q)
{
    const struct nic_params *p = &n->params;
    q->fill_max = 2 * p->rx_ring;
    q->tx_max = p->tx_ring;
    q->nframes = q->fill_max + q->tx_max;
    q->area_len = (size_t)q->nframes * XDP_FRAME_SIZE;
    q->area = mmap(NULL, q->area_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (q->area == MAP_FAILED) {
        q->area = NULL;
        return -errno;
    }
    q->free = calloc(q->nframes, sizeof(*q->free));
    if (!q->free)
        return -ENOMEM;
    for (uint32_t i = q->nframes; i-- > 0;)
        q->free[q->nfree++] = (uint64_t)i * XDP_FRAME_SIZE;
    return 0;
}

/* A bound socket goes into the XSK map (key = its queue id, which the program looks up by
 * rx_queue_index) and gets its fill ring filled. */
static int queue_attach(struct nic *n, struct xdpn *x, uint16_t qid)
{
    int mfd = bpf_object__find_map_fd_by_name(x->obj, XDP_STEER_XSKS);
    int rc = mfd < 0 ? mfd : xsk_socket__update_xskmap(x->q[qid].xsk, mfd);
    if (rc < 0)
        return xdp_fail(n, rc, "cannot insert the socket of queue %u into the XSK map",
                        (unsigned)qid);
    fill_refill(&x->q[qid]);
    return 0;
}

static int xdp_open(struct nic *n, const struct nic_params *p)
{
    if (p->nqueues < 1 || p->nqueues > NIC_MAX_QUEUES)
        return xdp_fail(n, -EINVAL, "af_xdp: %u queues (1 to %d)", (unsigned)p->nqueues,
                        NIC_MAX_QUEUES);
    if (p->tso)
        return xdp_fail(n, -EINVAL, "af_xdp has no TSO");
    if ((uint32_t)p->mtu + 18 > XDP_FRAME_DATA)
        return xdp_fail(n, -EINVAL, "mtu %u does not fit an af_xdp frame (max %u)",
                        (unsigned)p->mtu, XDP_FRAME_DATA - 18);
    struct xdpn *x = calloc(1, sizeof(*x));
    if (!x)
        return -ENOMEM;
    n->priv = x;
    x->pkt_fd = -1;
    libbpf_set_print(xdp_print);
    libxdp_set_print(xdp_print_x);

    uint8_t kmac[6];
    int rc = iface_setup(n, kmac);
    if (rc < 0)
        goto fail;
    int have = count_rx_queues(p->name);
    if (have < p->nqueues) {
        rc = xdp_fail(n, -EINVAL,
                      "%s has %d RX queue%s and %u workers need one each (veth: numrxqueues; "
                      "a NIC: ethtool -L %s combined %u)",
                      p->name, have, have == 1 ? "" : "s", (unsigned)p->nqueues, p->name,
                      (unsigned)p->nqueues);
        goto fail;
    }
    rc = attach_prog(n, x);
    if (rc < 0)
        goto fail;
    rc = set_steer_cfg(n, x);
    if (rc < 0)
        goto fail;

    /* Zero-copy (the driver DMAs straight into UMEM, no kernel copy) exists only in
     * driver mode and only where the driver implements it; "auto" tries it there and
     * binds XDP_COPY otherwise. A failed bind may leave the UMEM half set up: it is made
     * afresh for the second attempt. Queue 0 decides for all queues. */
    bool try_zc = p->xdp_zc != NIC_XDP_ZC_OFF && x->mode == XDP_MODE_NATIVE;
    if (p->xdp_zc == NIC_XDP_ZC_ON && !try_zc) {
        rc = xdp_fail(n, -EOPNOTSUPP,
                      "xdp_zerocopy = \"on\" needs native mode, and %s runs XDP in copy mode",
                      p->name);
        goto fail;
    }
    for (uint16_t qid = 0; qid < p->nqueues; qid++) {
        struct xdpq *q = &x->q[qid];
        x->nq = (uint16_t)(qid + 1);
        rc = queue_frames(n, q);
        if (rc < 0)
            goto fail;
        uint16_t mode = (qid == 0 ? try_zc : x->zerocopy) ? XDP_ZEROCOPY : XDP_COPY;
        rc = bind_socket(n, q, qid, mode);
        if (rc < 0 && qid == 0 && mode == XDP_ZEROCOPY && p->xdp_zc == NIC_XDP_ZC_AUTO) {
            mode = XDP_COPY;
            rc = bind_socket(n, q, qid, mode);
        }
        if (rc < 0) {
            if (!n->errmsg[0]) /* else the UMEM's own reason */
                xdp_fail(
                    n, rc, "cannot bind an AF_XDP socket to %s queue %u%s", p->name, (unsigned)qid,
                    mode == XDP_ZEROCOPY ? " in zero-copy mode (does the driver have it?)" : "");
            goto fail;
        }
        if (qid == 0)
            x->zerocopy = mode == XDP_ZEROCOPY;
        rc = queue_attach(n, x, qid);
        if (rc < 0)
            goto fail;
    }
    snprintf(n->mode, sizeof(n->mode), "%s, %s, %u queue%s",
             x->mode == XDP_MODE_NATIVE ? "native" : "copy",
             x->zerocopy ? "zero-copy" : "frames copied by the kernel", (unsigned)p->nqueues,
             p->nqueues == 1 ? "" : "s");
    if (memcmp(kmac, p->mac, 6) != 0) {
        rc = add_unicast(n, x);
        if (rc < 0) {
            rc = xdp_fail(n, rc, "cannot add our MAC to the unicast filter of %s", p->name);
            goto fail;
        }
    }
    return 0;
fail:
    xdp_close(n);
    return rc;
}

/* Publish queue qid's frame accounting (gauges, as deltas on its worker's single-writer
 * counters) and, at most every 100 ms, the kernel's drop statistics of its socket. */
static void publish(struct nic *n, uint16_t qid, bool force)
{
    struct xdpq *x = &((struct xdpn *)n->priv)->q[qid];
    struct stack_counters *c = n->cnt[qid];
    if (!c || !x->xsk)
        return;
    /* Acquire: the kernel's consumer/producer index before we read what it covers. */
    uint32_t in_fill = x->fq.cached_prod - __atomic_load_n(x->fq.consumer, __ATOMIC_ACQUIRE);
    uint32_t in_comp = __atomic_load_n(x->cq.producer, __ATOMIC_ACQUIRE) - x->cq.cached_cons;
    if (in_fill > x->fill_out)
        in_fill = x->fill_out;
    if (in_comp > x->tx_out)
        in_comp = x->tx_out;
    uint64_t g[G_N];
    g[G_FILL] = in_fill;
    g[G_RX] = x->fill_out - in_fill;
    g[G_TX] = x->tx_out - in_comp;
    g[G_COMP] = in_comp;
    g[G_FREE] = x->nfree;
    /* Unsigned wrap-around makes a decrease a valid delta. */
    CNT_ADD(c, xdp_umem_fill, g[G_FILL] - x->gauge[G_FILL]);
    CNT_ADD(c, xdp_umem_rx, g[G_RX] - x->gauge[G_RX]);
    CNT_ADD(c, xdp_umem_tx, g[G_TX] - x->gauge[G_TX]);
    CNT_ADD(c, xdp_umem_comp, g[G_COMP] - x->gauge[G_COMP]);
    CNT_ADD(c, xdp_umem_free, g[G_FREE] - x->gauge[G_FREE]);
    memcpy(x->gauge, g, sizeof(g));

    uint64_t now = clock_mono_coarse_ns();
    if (!force && now < x->st_next)
        return;
    x->st_next = now + XDP_STATS_EVERY_NS;
    struct xdp_statistics st;
    socklen_t len = sizeof(st);
    memset(&st, 0, sizeof(st));
    if (getsockopt(xsk_socket__fd(x->xsk), SOL_XDP, XDP_STATISTICS, &st, &len) < 0)
        return;
    CNT_ADD(c, xdp_rx_drop_kernel, st.rx_dropped - x->st.rx_dropped);
    CNT_ADD(c, xdp_rx_drop_ring_full, st.rx_ring_full - x->st.rx_ring_full);
    CNT_ADD(c, xdp_rx_drop_invalid, st.rx_invalid_descs - x->st.rx_invalid_descs);
    CNT_ADD(c, xdp_tx_drop_invalid, st.tx_invalid_descs - x->st.tx_invalid_descs);
    CNT_ADD(c, xdp_fill_empty, st.rx_fill_ring_empty_descs - x->st.rx_fill_ring_empty_descs);
    x->st = st;
}

/* Queue q's state, or NULL if the NIC has no such queue. */
static struct xdpq *queue_of(struct nic *n, uint16_t q)
{
    struct xdpn *x = n->priv;
    return x && q < x->nq && x->q[q].xsk ? &x->q[q] : NULL;
}

static int xdp_rx_burst(struct nic *n, uint16_t q, struct pktbuf **pkts, int max)
{
    struct xdpq *x = queue_of(n, q);
    if (!x)
        return -EINVAL;
    if (max <= 0)
        return 0;
    struct stack_counters *c = n->cnt[q];
    struct pktbuf_pool *pool = n->pool[q];
    uint32_t idx;
    uint32_t k = xsk_ring_cons__peek(&x->rx, (uint32_t)max, &idx);
    int got = 0;
    for (uint32_t i = 0; i < k; i++) {
        const struct xdp_desc *d = xsk_ring_cons__rx_desc(&x->rx, idx + i);
        const uint8_t *data = xsk_umem__get_data(x->area, xsk_umem__add_offset_to_addr(d->addr));
        struct pktbuf *pb = pool ? pktbuf_alloc(pool) : NULL;
        if (!pb) {
            XCNT_ADD(c, nic_rx_drop_nobuf, 1);
        } else if (d->len == 0 || d->len > pktbuf_tailroom(pb)) {
            XCNT_ADD(c, nic_rx_drop_error, 1);
            pktbuf_free(pb);
        } else {
            memcpy(pktbuf_data(pb), data, d->len);
            pb->len = d->len;
            pb->ifindex = (uint16_t)n->ifindex;
            pkts[got++] = pb;
        }
        /* Copied (or dropped): the frame is ours again. */
        x->free[x->nfree++] = xsk_umem__extract_addr(d->addr);
    }
    if (k) {
        xsk_ring_cons__release(&x->rx, k);
        x->fill_out -= k;
    }
    fill_refill(x);
    return got;
}

static int xdp_tx_burst(struct nic *n, uint16_t q, struct pktbuf **pkts, int cnt)
{
    struct xdpq *x = queue_of(n, q);
    if (!x || cnt <= 0) {
        for (int i = 0; i < cnt; i++)
            pktbuf_free(pkts[i]);
        return 0;
    }
    comp_reap(x);
    /* A frame larger than a UMEM frame cannot happen (mtu checked at open, no TSO). It is
     * dropped here: an invalid descriptor would never come back on the completion ring. */
    int k = 0, bad = 0;
    for (int i = 0; i < cnt; i++) {
        if (pkts[i]->len == 0 || pkts[i]->len > XDP_FRAME_SIZE) {
            pktbuf_free(pkts[i]);
            bad++;
        } else {
            pkts[k++] = pkts[i];
        }
    }
    if (bad)
        XCNT_ADD(n->cnt[q], nic_tx_drop_error, (uint64_t)bad);
    uint32_t sent = 0;
    int fd = xsk_socket__fd(x->xsk);
    for (int tries = 0; sent < (uint32_t)k; tries++) {
        uint32_t left = (uint32_t)k - sent, room = x->tx_max - x->tx_out;
        if (room > x->nfree)
            room = x->nfree; /* cannot happen: tx_max frames are kept for TX */
        uint32_t want = left < room ? left : room, idx;
        if (xsk_prod_nb_free(&x->tx, want) < want)
            want = xsk_prod_nb_free(&x->tx, want);
        if (want && xsk_ring_prod__reserve(&x->tx, want, &idx) != want)
            want = 0;
        for (uint32_t i = 0; i < want; i++) {
            struct pktbuf *pb = pkts[sent + i];
            struct xdp_desc *d = xsk_ring_prod__tx_desc(&x->tx, idx + i);
            uint64_t addr = x->free[--x->nfree];
            memcpy(xsk_umem__get_data(x->area, addr), pktbuf_data(pb), pb->len);
            d->addr = addr;
            d->len = pb->len;
            d->options = 0;
            pktbuf_free(pb);
        }
        if (want) {
            xsk_ring_prod__submit(&x->tx, want);
            x->tx_out += want;
            sent += want;
        }
        if (sent == (uint32_t)k || tries == XDP_KICK_TRIES)
            break;
        /* Ring or frames full (a burst of fragments): let the kernel send what is queued
         * and take the completions, then go on, as a driver's xmit would wait for room.
         * Bounded; what is left is a counted drop. */
        if (sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0) < 0 && errno != EAGAIN && errno != EBUSY)
            break;
        comp_reap(x);
    }
    for (int i = (int)sent; i < k; i++)
        pktbuf_free(pkts[i]); /* counted nic_tx_drop_full by nic_tx() */
    /* The dropped ones count as taken (already counted above), not as a full ring. */
    return (int)sent + bad;
}

static int xdp_tx_flush(struct nic *n, uint16_t q)
{
    struct xdpq *x = queue_of(n, q);
    if (!x)
        return -EINVAL;
    int rc = 0, fd = xsk_socket__fd(x->xsk);
    bool kicked = false;
    comp_reap(x);
    /* The generic (copy) TX path sends up to 32 frames per sendto() and answers EAGAIN
     * when more remain or the completion ring is full: reap and go on until the TX ring is
     * empty. */
    for (int tries = 0; tries < XDP_KICK_TRIES && xsk_ring_prod__needs_wakeup(&x->tx); tries++) {
        /* Acquire: the kernel's consumer index (how much of the TX ring it has taken). */
        uint32_t queued = x->tx.cached_prod - __atomic_load_n(x->tx.consumer, __ATOMIC_ACQUIRE);
        if (queued == 0)
            break;
        kicked = true;
        if (sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0) >= 0 || errno == EAGAIN || errno == EBUSY) {
            comp_reap(x);
            continue;
        }
        rc = -errno; /* ENETDOWN, ENXIO: frames stay queued until the device is back */
        break;
    }
    comp_reap(x);
    fill_refill(x);
    /* Zero-copy drivers want a wakeup to look at the fill ring again; never in copy mode. */
    if (!kicked && xsk_ring_prod__needs_wakeup(&x->fq))
        recvfrom(fd, NULL, 0, MSG_DONTWAIT, NULL, NULL);
    publish(n, q, false);
    return rc;
}

static int xdp_poll_fd(struct nic *n, uint16_t q)
{
    struct xdpq *x = queue_of(n, q);
    return x ? xsk_socket__fd(x->xsk) : -1;
}

static void close_queue(struct nic *n, uint16_t qid)
{
    struct xdpq *x = &((struct xdpn *)n->priv)->q[qid];
    if (x->xsk) {
        publish(n, qid, true);
        /* Take the gauges back to zero: the frames go away with the UMEM. */
        struct stack_counters *c = n->cnt[qid];
        if (c) {
            CNT_ADD(c, xdp_umem_fill, -x->gauge[G_FILL]);
            CNT_ADD(c, xdp_umem_rx, -x->gauge[G_RX]);
            CNT_ADD(c, xdp_umem_tx, -x->gauge[G_TX]);
            CNT_ADD(c, xdp_umem_comp, -x->gauge[G_COMP]);
            CNT_ADD(c, xdp_umem_free, -x->gauge[G_FREE]);
        }
        /* Closing the socket also removes it from the XSK map. */
        xsk_socket__delete(x->xsk);
    }
    if (x->umem)
        xsk_umem__delete(x->umem);
    if (x->area)
        munmap(x->area, x->area_len);
    free(x->free);
    memset(x, 0, sizeof(*x));
}

static void xdp_close(struct nic *n)
{
    struct xdpn *x = n->priv;
    if (!x)
        return;
    for (uint16_t q = 0; q < x->nq; q++)
        close_queue(n, q);
    if (x->prog) {
        if (x->mode != XDP_MODE_UNSPEC)
            xdp_program__detach(x->prog, n->ifindex, x->mode, 0);
        xdp_program__close(x->prog);
    }
    if (x->obj)
        bpf_object__close(x->obj); /* opened by us: xdp_program__close leaves it */
    if (x->pkt_fd >= 0)
        close(x->pkt_fd);
    free(x);
    n->priv = NULL;
}

const struct nic_ops nic_xdp_ops = {
    .name = "af_xdp",
    .open = xdp_open,
    .close = xdp_close,
    .rx_burst = xdp_rx_burst,
    .tx_burst = xdp_tx_burst,
    .tx_flush = xdp_tx_flush,
    .poll_fd = xdp_poll_fd,
};
