/* af_xdp backend against the Linux kernel: a veth pair whose root-namespace end carries our
 * AF_XDP socket (copy mode) and whose other end is in a fresh namespace with 10.78.N.1/24;
 * we play 10.78.N.2 with MAC 02:5e:00:00:00:02. Root only (skipped otherwise). The veth and
 * the namespace are removed in .fini even when a test fails. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "nic/nic.h"

#define MS 1000000ull

static const uint8_t our_mac[6] = {0x02, 0x5e, 0x00, 0x00, 0x00, 0x02};
static char ifname[IFNAMSIZ], peer[IFNAMSIZ], nsname[48];
static uint8_t subnet;
static bool made;
static struct pktbuf_pool pool, pool1; /* queue 0's, queue 1's */
static struct stack_counters cnt, cnt1;
static struct nic nic;

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    return system(cmd);
}

static uint64_t mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void setup(void)
{
    memset(&nic, 0, sizeof(nic));
    memset(&cnt, 0, sizeof(cnt));
    memset(&cnt1, 0, sizeof(cnt1));
    if (geteuid() != 0 || sh("ip -V >/dev/null 2>&1") != 0)
        return;
    srandom((unsigned)(getpid() ^ mono()));
    unsigned tag = (unsigned)((getpid() & 0xfffff) ^ (random() & 0xfff));
    snprintf(ifname, sizeof(ifname), "snx%05x", tag);
    snprintf(peer, sizeof(peer), "snx%05xp", tag);
    snprintf(nsname, sizeof(nsname), "shmnet-nicxdp-%d-%lx", getpid(), random() & 0xffff);
    subnet = (uint8_t)(1 + getpid() % 250);
    cr_assert_eq(pktbuf_pool_init(&pool, 512, 2048), 0);
    cr_assert_eq(sh("ip netns add %s && ip link add %s type veth peer name %s && "
                    "ip link set %s netns %s && ip -n %s link set %s up && "
                    "ip -n %s addr add 10.78.%u.1/24 dev %s && ip link set %s up",
                    nsname, ifname, peer, peer, nsname, nsname, peer, nsname, subnet, peer, ifname),
                 0);
    made = true;
}

static void teardown(void)
{
    nic_close(&nic);
    if (made) {
        sh("ip link del %s >/dev/null 2>&1", ifname);
        sh("ip netns del %s >/dev/null 2>&1", nsname);
    }
    made = false;
    pktbuf_pool_destroy(&pool);
    pktbuf_pool_destroy(&pool1);
}

TestSuite(nic_xdp, .init = setup, .fini = teardown, .timeout = 30);

static void need_root(void)
{
    if (!made)
        cr_skip_test("needs root and iproute2");
}

static struct nic_params params(uint32_t rx_ring, uint32_t tx_ring)
{
    struct nic_params p = {.backend = "af_xdp",
                           .mtu = 1500,
                           .rx_ring = rx_ring,
                           .tx_ring = tx_ring,
                           .xdp_mode = NIC_XDP_COPY,
                           .addr = 0x0a4e0002u | (uint32_t)subnet << 8};
    strcpy(p.name, ifname);
    memcpy(p.mac, our_mac, 6);
    return p;
}

static void open_xdp(uint32_t rx_ring, uint32_t tx_ring, struct pktbuf_pool *pl)
{
    struct nic_params p = params(rx_ring, tx_ring);
    int rc = nic_open(&nic, &p);
    cr_assert_eq(rc, 0, "nic_open af_xdp: %s: %s", nic.errmsg, strerror(-rc));
    cr_assert_gt(nic.ifindex, 0);
    nic_bind_queue(&nic, 0, pl, &cnt);
}

static uint64_t frames_total(void)
{
    return cnt.xdp_umem_free + cnt.xdp_umem_fill + cnt.xdp_umem_rx + cnt.xdp_umem_tx +
           cnt.xdp_umem_comp;
}

static bool prog_attached(void)
{
    return sh("ip link show dev %s | grep -q prog/xdp", ifname) == 0;
}

Test(nic_xdp, open_errors_leave_nothing_attached)
{
    need_root();
    struct nic_params p = params(64, 64);
    strcpy(p.name, "nosuchxdp0");
    cr_assert_eq(nic_open(&nic, &p), -ENODEV);
    cr_assert(strstr(nic.errmsg, "no interface 'nosuchxdp0'"), "%s", nic.errmsg);

    p = params(64, 64);
    p.nqueues = 2; /* the veth has one */
    cr_assert_eq(nic_open(&nic, &p), -EINVAL);
    cr_assert(strstr(nic.errmsg, "has 1 RX queue and 2 workers need one each"), "%s", nic.errmsg);

    p = params(64, 64);
    p.mtu = 4000;
    cr_assert_eq(nic_open(&nic, &p), -EINVAL);
    cr_assert(strstr(nic.errmsg, "does not fit"), "%s", nic.errmsg);

    p = params(64, 64);
    p.mtu = 1600; /* above the veth's 1500 */
    cr_assert_eq(nic_open(&nic, &p), -EINVAL);
    cr_assert(strstr(nic.errmsg, "below the configured mtu"), "%s", nic.errmsg);
    cr_assert_not(prog_attached());
}

/* The kernel's ARP request for our address is steered to us; gauges add up to the UMEM and
 * go back to zero at close, which also detaches the program. */
Test(nic_xdp, arp_request_steered_and_frames_accounted)
{
    need_root();
    open_xdp(64, 64, &pool);
    cr_assert(prog_attached());
    nic_flush(&nic, 0, mono());
    cr_assert_eq(frames_total(), 2 * 64 + 64);
    cr_assert_eq(cnt.xdp_umem_fill, 64);

    sh("ip netns exec %s ping -c 1 -W 1 10.78.%u.2 >/dev/null 2>&1 &", nsname, subnet);
    bool arp = false;
    for (uint64_t end = mono() + 3000 * MS; !arp && mono() < end;) {
        struct pktbuf *pk[NIC_BURST];
        int k = nic_rx(&nic, 0, pk, NIC_BURST, mono());
        for (int i = 0; i < k; i++) {
            const uint8_t *f = pktbuf_data(pk[i]);
            if (pk[i]->len >= 42 && f[12] == 0x08 && f[13] == 0x06 && f[0] == 0xff)
                arp = true;
            pktbuf_free(pk[i]);
        }
        nic_flush(&nic, 0, mono());
        usleep(1000);
    }
    cr_assert(arp, "no ARP request for our address arrived");
    nic_flush(&nic, 0, mono());
    cr_assert_eq(frames_total(), 2 * 64 + 64);
    cr_assert_eq(pool.nfree, pool.count);

    nic_close(&nic);
    cr_assert_eq(frames_total(), 0);
    cr_assert_eq(cnt.xdp_umem_free, 0);
    cr_assert_not(prog_attached());
}

/* A burst twice the TX ring: the backend kicks the kernel to make room as a driver's xmit
 * would, so every frame is taken, none refused; each reaches the wire and its UMEM frame
 * comes back. */
Test(nic_xdp, tx_burst_beyond_ring)
{
    need_root();
    open_xdp(64, 64, &pool);
    enum { N = 128 };
    struct pktbuf *pk[N];
    for (int i = 0; i < N; i++) {
        pk[i] = pktbuf_alloc(&pool);
        cr_assert_not_null(pk[i]);
        uint8_t *f = pktbuf_data(pk[i]);
        memset(f, 0, 60);
        memset(f, 0xff, 6); /* broadcast, local experimental ethertype: the peer drops it */
        memcpy(f + 6, our_mac, 6);
        f[12] = 0x88;
        f[13] = 0xb5;
        pk[i]->len = 60;
    }
    int acc = nic_tx(&nic, 0, pk, N, mono());
    cr_assert_eq(acc, N);
    cr_assert_eq(cnt.nic_tx_drop_full, 0);
    cr_assert_eq(pool.nfree, pool.count); /* copied into UMEM: pktbufs freed at once */
    for (uint64_t end = mono() + 2000 * MS; mono() < end;) {
        nic_flush(&nic, 0, mono());
        if (cnt.xdp_umem_tx == 0 && cnt.xdp_umem_comp == 0)
            break;
        usleep(1000);
    }
    nic_flush(&nic, 0, mono());
    cr_assert_eq(cnt.xdp_umem_tx + cnt.xdp_umem_comp, 0, "tx %lu comp %lu",
                 (unsigned long)cnt.xdp_umem_tx, (unsigned long)cnt.xdp_umem_comp);
    cr_assert_eq(frames_total(), 2 * 64 + 64);
    cr_assert_eq(cnt.nic_tx_frames, N);
    cr_assert_eq(cnt.xdp_tx_drop_invalid, 0);
}

/* With the pool empty, received frames are dropped one by one (nic_rx_drop_nobuf) and
 * their UMEM frames go back to the fill ring. */
Test(nic_xdp, pool_empty_drops_counted)
{
    need_root();
    struct pktbuf_pool tiny;
    cr_assert_eq(pktbuf_pool_init(&tiny, 2, 2048), 0);
    open_xdp(64, 64, &tiny);
    struct pktbuf *h0 = pktbuf_alloc(&tiny), *h1 = pktbuf_alloc(&tiny);
    cr_assert(h0 && h1);
    sh("ip netns exec %s ping -c 1 -W 1 10.78.%u.2 >/dev/null 2>&1 &", nsname, subnet);
    for (uint64_t end = mono() + 3000 * MS; cnt.nic_rx_drop_nobuf == 0 && mono() < end;) {
        struct pktbuf *pk[NIC_BURST];
        cr_assert_eq(nic_rx(&nic, 0, pk, NIC_BURST, mono()), 0);
        nic_flush(&nic, 0, mono());
        usleep(1000);
    }
    cr_assert_geq(cnt.nic_rx_drop_nobuf, 1);
    nic_flush(&nic, 0, mono());
    cr_assert_eq(frames_total(), 2 * 64 + 64);
    pktbuf_free(h0);
    pktbuf_free(h1);
    nic_close(&nic);
    pktbuf_pool_destroy(&tiny);
}

/* A frame larger than a UMEM frame (cannot come from the stack) is dropped as an error
 * without using a UMEM frame. */
Test(nic_xdp, oversized_tx_dropped_without_losing_a_frame)
{
    need_root();
    struct pktbuf_pool big;
    cr_assert_eq(pktbuf_pool_init(&big, 4, 8192), 0);
    open_xdp(64, 64, &big);
    struct pktbuf *pb = pktbuf_alloc(&big);
    cr_assert_not_null(pb);
    memset(pktbuf_data(pb), 0xff, 5000);
    pb->len = 5000;
    cr_assert_eq(nic_tx(&nic, 0, &pb, 1, mono()), 1);
    cr_assert_eq(cnt.nic_tx_drop_error, 1);
    cr_assert_eq(cnt.nic_tx_drop_full, 0);
    nic_flush(&nic, 0, mono());
    cr_assert_eq(cnt.xdp_umem_tx + cnt.xdp_umem_comp, 0);
    cr_assert_eq(frames_total(), 2 * 64 + 64);
    cr_assert_eq(big.nfree, big.count);
    nic_close(&nic);
    pktbuf_pool_destroy(&big);
}

/* Two queues, one socket each: the peer's flows spread over both (its TX queue is our RX
 * queue in native mode; generic XDP on a veth sees every frame on queue 0), each queue's
 * frames come out of that queue only, and each queue's UMEM is accounted in its own
 * counters. */
Test(nic_xdp, one_socket_per_queue)
{
    need_root();
    cr_assert_eq(sh("ip link del %s && ip link add %s numtxqueues 2 numrxqueues 2 type veth "
                    "peer name %s numtxqueues 2 numrxqueues 2 && ip link set %s netns %s && "
                    "ip -n %s link set %s up && ip -n %s addr add 10.78.%u.1/24 dev %s && "
                    "ip link set %s up && ip -n %s neigh replace 10.78.%u.2 lladdr "
                    "02:5e:00:00:00:02 dev %s",
                    ifname, ifname, peer, peer, nsname, nsname, peer, nsname, subnet, peer, ifname,
                    nsname, subnet, peer),
                 0);
    cr_assert_eq(pktbuf_pool_init(&pool1, 512, 2048), 0);
    struct nic_params p = params(64, 64);
    p.nqueues = 2;
    p.xdp_mode = NIC_XDP_NATIVE;
    int rc = nic_open(&nic, &p);
    cr_assert_eq(rc, 0, "nic_open af_xdp, 2 queues: %s: %s", nic.errmsg, strerror(-rc));
    cr_assert(strstr(nic.mode, "2 queues"), "%s", nic.mode);
    nic_bind_queue(&nic, 0, &pool, &cnt);
    nic_bind_queue(&nic, 1, &pool1, &cnt1);
    int fd0 = nic.ops->poll_fd(&nic, 0), fd1 = nic.ops->poll_fd(&nic, 1);
    cr_assert(fd0 >= 0 && fd1 >= 0 && fd0 != fd1);
    cr_assert_eq(nic.ops->poll_fd(&nic, 2), -1);
    nic_flush(&nic, 0, mono());
    nic_flush(&nic, 1, mono());
    cr_assert_eq(frames_total(), 2 * 64 + 64);
    cr_assert_eq(cnt1.xdp_umem_free + cnt1.xdp_umem_fill + cnt1.xdp_umem_rx + cnt1.xdp_umem_tx +
                     cnt1.xdp_umem_comp,
                 2 * 64 + 64);

    /* 64 datagrams, each from a new socket (a new source port, so a new flow hash). */
    cr_assert_eq(sh("ip netns exec %s bash -c 'for i in $(seq 64); do echo x "
                    ">/dev/udp/10.78.%u.2/$((7000 + i)); done'",
                    nsname, subnet),
                 0);
    int got[2] = {0, 0};
    struct nic *ns[2] = {&nic, &nic};
    uint16_t qs[2] = {0, 1};
    for (uint64_t end = mono() + 3000 * MS; got[0] + got[1] < 64 && mono() < end;) {
        for (uint16_t q = 0; q < 2; q++) {
            struct pktbuf *pk[NIC_BURST];
            int k = nic_rx(&nic, q, pk, NIC_BURST, mono());
            for (int i = 0; i < k; i++) {
                const uint8_t *f = pktbuf_data(pk[i]);
                if (pk[i]->len >= 42 && f[12] == 0x08 && f[13] == 0x00 && f[23] == 17)
                    got[q]++;
                pktbuf_free(pk[i]);
            }
            nic_flush(&nic, q, mono());
        }
        nic_wait(ns, qs, 2, -1, 100 * MS); /* either socket's RX ring holds frames */
    }
    cr_assert_eq(got[0] + got[1], 64, "queue 0: %d, queue 1: %d", got[0], got[1]);
    cr_assert(got[0] > 0 && got[1] > 0, "queue 0: %d, queue 1: %d", got[0], got[1]);
    cr_assert_eq(cnt.nic_rx_frames, (uint64_t)got[0]);
    cr_assert_eq(cnt1.nic_rx_frames, (uint64_t)got[1]);

    nic_close(&nic);
    cr_assert_eq(frames_total(), 0);
    cr_assert_eq(cnt1.xdp_umem_free + cnt1.xdp_umem_fill, 0);
    cr_assert_not(prog_attached());
}
