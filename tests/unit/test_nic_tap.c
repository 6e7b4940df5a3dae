/* tap backend against the Linux kernel: the TAP is moved into a fresh network namespace
 * whose kernel side has 10.77.N.1/24; we play 10.77.N.2 with MAC 02:5e:00:00:00:02.
 * Root only (skipped otherwise). Device and namespace names are unique per run and removed
 * in .fini even when a test fails (closing the fd of a non-persistent TAP deletes it). */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "nic/nic.h"
#include "stack/wire.h"

#define MS 1000000ull

static const uint8_t our_mac[6] = {0x02, 0x5e, 0x00, 0x00, 0x00, 0x02};
static char ifname[IFNAMSIZ], nsname[48];
static uint8_t subnet; /* 10.77.subnet.0/24 */
static bool ns_made;
static struct pktbuf_pool pool;
static struct stack_counters cnt;
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
    if (geteuid() != 0 || access("/dev/net/tun", R_OK | W_OK) != 0 ||
        sh("ip -V >/dev/null 2>&1") != 0)
        return;
    srandom((unsigned)(getpid() ^ mono()));
    snprintf(ifname, sizeof(ifname), "snt%05x%04lx", getpid() & 0xfffff, random() & 0xffff);
    snprintf(nsname, sizeof(nsname), "shmnet-nictap-%d-%lx", getpid(), random() & 0xffff);
    subnet = (uint8_t)(1 + getpid() % 250);
    cr_assert_eq(pktbuf_pool_init(&pool, 512, 2048), 0);
    cr_assert_eq(sh("ip netns add %s", nsname), 0);
    ns_made = true;
}

static void teardown(void)
{
    nic_close(&nic); /* removes the TAP */
    if (ns_made)
        sh("ip netns del %s >/dev/null 2>&1", nsname);
    ns_made = false;
    pktbuf_pool_destroy(&pool);
}

TestSuite(nic_tap, .init = setup, .fini = teardown, .timeout = 30);

static void need_root(void)
{
    if (!ns_made)
        cr_skip_test("needs root, /dev/net/tun and iproute2");
}

/* Open the TAP here, then move its kernel side into the namespace with an address. */
static void open_tap(uint32_t rx_ring, uint32_t tx_ring)
{
    struct nic_params p = {.backend = "tap", .mtu = 1500, .rx_ring = rx_ring, .tx_ring = tx_ring};
    strcpy(p.name, ifname);
    memcpy(p.mac, our_mac, 6);
    int rc = nic_open(&nic, &p);
    cr_assert_eq(rc, 0, "nic_open tap: %s", strerror(-rc));
    cr_assert_gt(nic.ifindex, 0);
    cr_assert_str_eq(nic.params.name, ifname);
    nic_bind_queue(&nic, 0, &pool, &cnt);
    cr_assert_eq(sh("ip link set %s netns %s && ip -n %s link set %s up && "
                    "ip -n %s addr add 10.77.%u.1/24 dev %s",
                    ifname, nsname, nsname, ifname, nsname, subnet, ifname),
                 0);
}

/* A socket created in the test namespace (and the device's ifindex there). */
static int ns_socket(int domain, int type, int proto, int *ns_ifindex)
{
    char path[96];
    snprintf(path, sizeof(path), "/run/netns/%s", nsname);
    int self = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    int target = open(path, O_RDONLY | O_CLOEXEC);
    cr_assert(self >= 0 && target >= 0);
    cr_assert_eq(setns(target, CLONE_NEWNET), 0);
    int s = socket(domain, type | SOCK_CLOEXEC, proto);
    if (ns_ifindex)
        *ns_ifindex = (int)if_nametoindex(ifname);
    cr_assert_eq(setns(self, CLONE_NEWNET), 0);
    close(self);
    close(target);
    cr_assert_geq(s, 0);
    return s;
}

typedef bool (*frame_pred)(const uint8_t *f, uint32_t len, void *ctx);

/* Receive until pred matches a frame (copied into out) or 2 s pass; sleeps in nic_wait. */
static bool rx_until(frame_pred pred, void *ctx, uint8_t *out, uint32_t *outlen)
{
    struct nic *ns[1] = {&nic};
    uint16_t qs[1] = {0};
    uint64_t deadline = mono() + 2000 * MS;
    for (;;) {
        uint64_t now = mono();
        struct pktbuf *pk[NIC_BURST];
        int n = nic_rx(&nic, 0, pk, NIC_BURST, now);
        cr_assert_geq(n, 0);
        bool hit = false;
        for (int i = 0; i < n; i++) {
            if (!hit && pred(pktbuf_data(pk[i]), pk[i]->len, ctx)) {
                hit = true;
                memcpy(out, pktbuf_data(pk[i]), pk[i]->len);
                *outlen = pk[i]->len;
            }
            pktbuf_free(pk[i]);
        }
        cr_assert_eq(nic_flush(&nic, 0, now), 0); /* re-posts the reads */
        if (hit)
            return true;
        if (now >= deadline)
            return false;
        cr_assert_eq(nic_wait(ns, qs, 1, -1, deadline - now), 0);
    }
}

static bool is_arp_request_for_us(const uint8_t *f, uint32_t len, void *ctx)
{
    uint8_t *sub = ctx;
    return len >= ETH_HLEN + ARP_LEN && rd16(f + 12) == ETHERTYPE_ARP &&
           rd16(f + 14 + 6) == ARP_OP_REQUEST && f[38] == 10 && f[39] == 77 && f[40] == *sub &&
           f[41] == 2;
}

static bool is_udp_to_us(const uint8_t *f, uint32_t len, void *ctx)
{
    uint8_t *sub = ctx;
    return len >= ETH_HLEN + 28 && memcmp(f, our_mac, 6) == 0 && rd16(f + 12) == ETHERTYPE_IPV4 &&
           f[14 + 9] == 17 && f[30] == 10 && f[31] == 77 && f[32] == *sub && f[33] == 2 &&
           rd16(f + 36) == 9;
}

Test(nic_tap, arp_round_trip_with_kernel)
{
    need_root();
    open_tap(64, 64);
    int s = ns_socket(AF_INET, SOCK_DGRAM, 0, NULL);
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(9)};
    char ip[32];
    snprintf(ip, sizeof(ip), "10.77.%u.2", subnet);
    inet_pton(AF_INET, ip, &dst.sin_addr);
    static const char msg[] = "shmnet-tap-test";
    cr_assert_eq(sendto(s, msg, sizeof(msg), 0, (struct sockaddr *)&dst, sizeof(dst)),
                 (ssize_t)sizeof(msg));

    /* 1. The kernel asks who has 10.77.N.2: we receive its ARP request. */
    uint8_t req[2048];
    uint32_t reqlen = 0;
    cr_assert(rx_until(is_arp_request_for_us, &subnet, req, &reqlen),
              "no ARP request from the kernel within 2 s");
    cr_assert_gt(cnt.nic_rx_frames, 0);
    cr_assert_geq(cnt.nic_rx_bytes, reqlen);
    const uint8_t *kmac = req + 6;

    /* 2. We answer; the kernel then sends the queued datagram to our MAC. */
    struct pktbuf *pb = pktbuf_alloc(&pool);
    cr_assert_not_null(pb);
    uint8_t *f = pktbuf_put(pb, 60);
    if (!f)
        abort(); /* cannot happen: 2 KiB buffers */
    memset(f, 0, 60);
    memcpy(f, kmac, 6);
    memcpy(f + 6, our_mac, 6);
    wr16(f + 12, ETHERTYPE_ARP);
    wr16(f + 14, 1); /* hardware: Ethernet */
    wr16(f + 16, ETHERTYPE_IPV4);
    f[18] = 6;
    f[19] = 4;
    wr16(f + 20, ARP_OP_REPLY);
    memcpy(f + 22, our_mac, 6);
    memcpy(f + 28, req + 38, 4); /* sender IP: the address asked for */
    memcpy(f + 32, kmac, 6);
    memcpy(f + 38, req + 28, 4); /* target IP: the kernel's */
    uint64_t now = mono();
    cr_assert_eq(nic_tx(&nic, 0, &pb, 1, now), 1);
    cr_assert_eq(nic_flush(&nic, 0, now), 0);

    uint8_t udp[2048];
    uint32_t udplen = 0;
    cr_assert(rx_until(is_udp_to_us, &subnet, udp, &udplen),
              "kernel did not send the datagram after our ARP reply");
    cr_assert_geq(udplen, ETH_HLEN + 28 + sizeof(msg));
    cr_assert_arr_eq(udp + ETH_HLEN + 28, msg, sizeof(msg));
    cr_assert_eq(cnt.nic_tx_frames, 1);
    cr_assert_eq(cnt.nic_tx_bytes, 60);
    cr_assert_eq(cnt.nic_tx_drop_error, 0);
    cr_assert_eq(cnt.nic_rx_drop_error, 0);
    close(s);

    /* Close with reads posted: every buffer comes back to the pool. */
    nic_close(&nic);
    cr_assert_eq(pool.nfree, pool.count, "%u of %u buffers back", pool.nfree, pool.count);
}

static uint64_t ns_rx_packets(void)
{
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "ip netns exec %s cat /sys/class/net/%s/statistics/rx_packets",
             nsname, ifname);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    unsigned long long v = 0;
    cr_assert_eq(fscanf(p, "%llu", &v), 1);
    pclose(p);
    return v;
}

Test(nic_tap, tx_bursts_reach_kernel_and_full_ring_is_counted)
{
    need_root();
    open_tap(16, 16); /* a TX ring smaller than a burst: exercises submit-and-retry */
    uint64_t before = ns_rx_packets();
    int accepted = 0, offered = 0;
    for (int round = 0; round < 10; round++) {
        struct pktbuf *pk[NIC_BURST];
        for (int i = 0; i < NIC_BURST; i++) {
            pk[i] = pktbuf_alloc(&pool);
            cr_assert_not_null(pk[i]);
            uint8_t *f = pktbuf_put(pk[i], 64);
            if (!f)
                abort(); /* cannot happen: 2 KiB buffers */
            memset(f, 0xff, 6);
            memcpy(f + 6, our_mac, 6);
            wr16(f + 12, 0x88b5); /* IEEE local experimental: counted, then ignored */
            memset(f + 14, round, 50);
        }
        uint64_t now = mono();
        accepted += nic_tx(&nic, 0, pk, NIC_BURST, now);
        offered += NIC_BURST;
        cr_assert_eq(nic_flush(&nic, 0, now), 0);
        struct pktbuf *r[NIC_BURST];
        int n = nic_rx(&nic, 0, r, NIC_BURST, now); /* reaps the write completions */
        for (int i = 0; i < n; i++)
            pktbuf_free(r[i]);
    }
    cr_assert_geq(accepted, 10 * 16, "at least a ring per burst: %d", accepted);
    cr_assert_lt(accepted, offered, "a 16-entry ring cannot take 64 frames with one retry");
    cr_assert_eq(cnt.nic_tx_frames, (uint64_t)accepted);
    cr_assert_eq(cnt.nic_tx_drop_full, (uint64_t)(offered - accepted));
    cr_assert_eq(cnt.nic_tx_drop_error, 0);
    /* tun counts a frame in rx_packets as the write returns, before the CQE is posted */
    cr_assert_eq(ns_rx_packets() - before, (uint64_t)accepted);
    nic_close(&nic);
    cr_assert_eq(pool.nfree, pool.count);
}

Test(nic_tap, open_error_is_reported)
{
    need_root();
    struct nic_params p = {.backend = "tap", .mtu = 1500, .rx_ring = 8, .tx_ring = 8};
    strcpy(p.name, ifname);
    p.mtu = 60; /* below ETH_MIN_MTU (68): SIOCSIFMTU fails, the TAP goes away */
    struct nic x;
    int rc = nic_open(&x, &p);
    cr_assert_eq(rc, -EINVAL, "rc %d", rc);
    cr_assert_neq(sh("ip link show %s >/dev/null 2>&1", ifname), 0, "device left behind");
}

/* rx_burst with a small max must leave the remaining completions in the CQ, so the ring fd
 * still polls readable and the worker does not sleep on frames it was not given. */
Test(nic_tap, small_bursts_do_not_strand_frames)
{
    need_root();
    open_tap(64, 16);
    int ifx = 0;
    int ps = ns_socket(AF_PACKET, SOCK_RAW, 0, &ifx);
    cr_assert_gt(ifx, 0);
    uint8_t f[64];
    memset(f, 0xff, 6);
    memcpy(f + 6, (uint8_t[6]){0x02, 0x5e, 0, 0, 0, 0x09}, 6);
    wr16(f + 12, 0x88b5);
    struct sockaddr_ll sll = {.sll_family = AF_PACKET, .sll_ifindex = ifx, .sll_halen = 6};
    memset(sll.sll_addr, 0xff, 6);
    for (int i = 0; i < 10; i++) {
        memset(f + 14, i, sizeof(f) - 14);
        cr_assert_eq(sendto(ps, f, sizeof(f), 0, (struct sockaddr *)&sll, sizeof(sll)),
                     (ssize_t)sizeof(f), "packet socket send: %s", strerror(errno));
    }
    close(ps);
    struct nic *ns[1] = {&nic};
    uint16_t qs[1] = {0};
    int seen = 0;
    uint64_t start = mono();
    while (seen < 10 && mono() - start < 3000 * MS) {
        cr_assert_eq(nic_wait(ns, qs, 1, -1, 1000 * MS), 0);
        struct pktbuf *pb;
        if (nic_rx(&nic, 0, &pb, 1, mono()) == 1) {
            if (pb->len == sizeof(f) && rd16(pktbuf_data(pb) + 12) == 0x88b5) {
                cr_assert_eq(pktbuf_data(pb)[14], seen, "frames in order");
                seen++;
            }
            pktbuf_free(pb);
        }
        cr_assert_eq(nic_flush(&nic, 0, mono()), 0);
    }
    cr_assert_eq(seen, 10);
    cr_assert_lt(mono() - start, 900 * MS, "a nic_wait slept while frames were pending");
}

Test(nic_tap, cpu_masks_in_the_kernels_text_form)
{
    cpu_set_t s;
    char buf[300];

    CPU_ZERO(&s);
    cr_assert_eq(nic_cpumask_hex(&s, buf, sizeof(buf)), 1);
    cr_assert_str_eq(buf, "0");
    CPU_SET(1, &s);
    cr_assert_eq(nic_cpumask_hex(&s, buf, sizeof(buf)), 1);
    cr_assert_str_eq(buf, "2");
    CPU_SET(0, &s);
    CPU_SET(33, &s);
    nic_cpumask_hex(&s, buf, sizeof(buf));
    cr_assert_str_eq(buf, "2,00000003");
    CPU_ZERO(&s);
    CPU_SET(95, &s);
    nic_cpumask_hex(&s, buf, sizeof(buf));
    cr_assert_str_eq(buf, "80000000,00000000,00000000");
    cr_assert_eq(nic_cpumask_hex(&s, buf, 10), -ENOSPC);
}

/* The value the kernel reads back from the TAP's queue 0, in namespace ns ("" for ours). */
static unsigned long rps_of(const char *ns)
{
    char cmd[200], out[64] = "";
    snprintf(cmd, sizeof(cmd), "%s%s cat /sys/class/net/%s/queues/rx-0/rps_cpus",
             *ns ? "ip netns exec " : "", ns, ifname);
    FILE *f = popen(cmd, "r");
    cr_assert(f);
    cr_assert(fgets(out, sizeof(out), f), "no rps_cpus for %s", ifname);
    pclose(f);
    return strtoul(out, NULL, 16);
}

/* Parameters of a small TAP with rps_cpus = mode over one CPU. */
static struct nic_params rps_params(enum nic_rps mode, int cpu)
{
    struct nic_params p = {.backend = "tap", .mtu = 1500, .rx_ring = 16, .tx_ring = 16};
    strcpy(p.name, ifname);
    p.rps = mode;
    CPU_SET(cpu, &p.rps_cpus);
    return p;
}

/* Open nic with p; fails the test if it does not open. */
static void open_ok(const struct nic_params *p)
{
    int rc = nic_open(&nic, p);
    cr_assert_eq(rc, 0, "nic_open: %s %s", nic.errmsg, strerror(-rc));
}

/* rps_cpus = [0]: the TAP's queue steers to CPU 0, and the setting stays with the device
 * when its kernel side moves to another namespace (as the tests and bench do). */
Test(nic_tap, rps_cpus_are_set_on_the_tap_queue)
{
    need_root();
    struct nic_params p = rps_params(NIC_RPS_LIST, 0);
    open_ok(&p);
    cr_assert_str_eq(nic.mode, "rps_cpus 1");
    cr_assert_eq(rps_of(""), 1);
    cr_assert_eq(sh("ip link set %s netns %s", ifname, nsname), 0);
    cr_assert_eq(rps_of(nsname), 1);
}

/* A CPU the kernel does not have: an explicit list fails the open and says why; the same
 * set from "auto" only leaves the queue as it was. */
Test(nic_tap, rps_cpus_the_kernel_refuses)
{
    need_root();
    struct nic_params p = rps_params(NIC_RPS_LIST, CPU_SETSIZE - 1);
    struct nic x;
    memset(&x, 0, sizeof(x));
    int rc = nic_open(&x, &p);
    cr_assert_lt(rc, 0);
    cr_assert(strstr(x.errmsg, "rps_cpus"), "errmsg: %s", x.errmsg);
    cr_assert_neq(sh("ip link show %s >/dev/null 2>&1", ifname), 0, "device left behind");

    p.rps = NIC_RPS_AUTO;
    open_ok(&p);
    cr_assert(strstr(nic.mode, "rps_cpus not set"), "mode: %s", nic.mode);
    cr_assert_eq(rps_of(""), 0);
}

/* rps_cpus = "auto": the queue starts inline (0); the worker's nic_steer switches it to the
 * mask and back, counted; a list is not switched. */
Test(nic_tap, auto_rps_is_switched_by_the_worker)
{
    need_root();
    struct nic_params p = rps_params(NIC_RPS_AUTO, 0);
    open_ok(&p);
    nic_bind_queue(&nic, 0, &pool, &cnt);
    cr_assert(nic.steer_auto);
    cr_assert_str_eq(nic.mode, "rps_cpus 1 when busy");
    cr_assert_eq(rps_of(""), 0);
    cr_assert_eq(nic_steer(&nic, 0, true), 0);
    cr_assert_eq(rps_of(""), 1);
    cr_assert_eq(cnt.nic_rps_on, 1);
    cr_assert_eq(nic_steer(&nic, 0, false), 0);
    cr_assert_eq(rps_of(""), 0);
    cr_assert_eq(cnt.nic_rps_on, 0);
    cr_assert_eq(cnt.nic_rps_switch, 2);
    cr_assert_eq(nic_steer(&nic, 1, true), -EOPNOTSUPP); /* no such queue */
    nic_close(&nic);
    memset(&nic, 0, sizeof(nic));

    p.rps = NIC_RPS_LIST;
    open_ok(&p);
    cr_assert(!nic.steer_auto);
    cr_assert_eq(nic_steer(&nic, 0, false), -EOPNOTSUPP);
    cr_assert_eq(rps_of(""), 1);
}

/* The device is deleted under us (`ip link del`, its namespace removed): the queue stops,
 * counted once, and nic_wait sleeps instead of returning at once for ever (a worker spun
 * at 100% of a CPU on the failed reads). */
Test(nic_tap, deleted_device_does_not_spin)
{
    need_root();
    open_tap(64, 16);
    struct nic *ns[1] = {&nic};
    uint16_t qs[1] = {0};
    struct pktbuf *pb;
    cr_assert_eq(sh("ip -n %s link del %s", nsname, ifname), 0);
    uint64_t start = mono();
    int wakes = 0;
    while (mono() - start < 300 * MS) {
        cr_assert_geq(nic_wait(ns, qs, 1, -1, 50 * MS), 0);
        wakes++;
        while (nic_rx(&nic, 0, &pb, 1, mono()) == 1)
            pktbuf_free(pb);
        nic_flush(&nic, 0, mono());
    }
    cr_assert_leq(wakes, 20, "%d wake-ups in 300 ms: the queue spins", wakes);
    cr_assert_eq(cnt_read(&cnt.nic_dev_gone), 1);
}
