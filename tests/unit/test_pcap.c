/* pcap tap: file format, snaplen, error reporting, readable by tcpdump, and the nic hook. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nic/nic.h"

static char path[64];

static void setup(void)
{
    snprintf(path, sizeof(path), "/tmp/shmnet-pcap-%d-%ld.pcap", getpid(), random());
}

static void teardown(void)
{
    unlink(path);
}

TestSuite(pcap, .init = setup, .fini = teardown);

static uint32_t rd32le(const uint8_t *p) /* the tests run on the host that wrote the file */
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static size_t slurp(const char *p, uint8_t *buf, size_t cap)
{
    FILE *f = fopen(p, "rb");
    cr_assert_not_null(f);
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

/* A minimal valid frame: broadcast ARP request. */
static void arp_frame(uint8_t *f, uint8_t tag)
{
    static const uint8_t hdr[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0,    0,    0,    0,
                                  0x01, 0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01,
                                  0x02, 0,    0,    0,    0,    0x01, 10,   9,    8,    1,    0,
                                  0,    0,    0,    0,    0,    10,   9,    8,    2};
    memset(f, 0, 60);
    memcpy(f, hdr, sizeof(hdr));
    f[59] = tag;
}

Test(pcap, header_and_records)
{
    int err = -1;
    struct pcap_tap *t = pcap_open(path, 50, &err);
    cr_assert_not_null(t);
    cr_assert_eq(err, 0);
    uint8_t f1[60], f2[30];
    arp_frame(f1, 0xaa);
    memset(f2, 0x5c, sizeof(f2));
    cr_assert_eq(pcap_write(t, f1, 60, 1234567890123456789ull), 0);
    cr_assert_eq(pcap_write(t, f2, 30, 5), 0);
    pcap_close(t);

    uint8_t b[512];
    size_t n = slurp(path, b, sizeof(b));
    cr_assert_eq(n, 24 + 16 + 50 + 16 + 30, "file is %zu bytes", n);
    cr_assert_eq(rd32le(b), 0xa1b23c4du);
    cr_assert_eq(b[4] | b[5] << 8, 2); /* version 2.4 */
    cr_assert_eq(b[6] | b[7] << 8, 4);
    cr_assert_eq(rd32le(b + 16), 50); /* snaplen */
    cr_assert_eq(rd32le(b + 20), 1);  /* LINKTYPE_ETHERNET */
    const uint8_t *r = b + 24;
    cr_assert_eq(rd32le(r), 1234567890u);
    cr_assert_eq(rd32le(r + 4), 123456789u);
    cr_assert_eq(rd32le(r + 8), 50, "captured length cut to snaplen");
    cr_assert_eq(rd32le(r + 12), 60, "original length kept");
    cr_assert_arr_eq(r + 16, f1, 50);
    r += 16 + 50;
    cr_assert_eq(rd32le(r), 0);
    cr_assert_eq(rd32le(r + 4), 5);
    cr_assert_eq(rd32le(r + 8), 30);
    cr_assert_arr_eq(r + 16, f2, 30);
}

Test(pcap, open_error_is_reported)
{
    int err = 0;
    struct pcap_tap *t = pcap_open("/nonexistent-dir-shmnet/x.pcap", 0, &err);
    cr_assert_null(t);
    cr_assert_eq(err, -ENOENT);
}

Test(pcap, write_error_returns_errno)
{
    int err = 0;
    struct pcap_tap *t = pcap_open("/dev/full", 0, &err);
    cr_assert_not_null(t, "open /dev/full: %d", err);
    uint8_t f[1500] = {0};
    int rc = 0;
    for (int i = 0; i < 200 && rc == 0; i++) /* 300 KB: beyond the 64 KiB buffer */
        rc = pcap_write(t, f, sizeof(f), 0);
    cr_assert_eq(rc, -ENOSPC, "rc %d", rc);
    pcap_close(t);
}

Test(pcap, readable_by_tcpdump)
{
    if (access("/usr/sbin/tcpdump", X_OK) != 0 && access("/usr/bin/tcpdump", X_OK) != 0)
        cr_skip_test("tcpdump not installed");
    struct pcap_tap *t = pcap_open(path, 0, NULL);
    cr_assert_not_null(t);
    uint8_t f[60];
    for (int i = 0; i < 7; i++) {
        arp_frame(f, (uint8_t)i);
        cr_assert_eq(pcap_write(t, f, sizeof(f), 1000000000ull * (uint64_t)i + 42), 0);
    }
    pcap_close(t);
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "tcpdump -nn -r %s 2>/dev/null", path);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    char line[256];
    int lines = 0, arp = 0;
    while (fgets(line, sizeof(line), p)) {
        lines++;
        if (strstr(line, "ARP, Request who-has 10.9.8.2 tell 10.9.8.1"))
            arp++;
    }
    int st = pclose(p);
    cr_assert_eq(st, 0, "tcpdump exit status %d", st);
    cr_assert_eq(lines, 7);
    cr_assert_eq(arp, 7, "tcpdump decoded %d of 7 frames as our ARP request", arp);
}

/* nic_rx/nic_tx write to the NIC's pcap tap: RX after the injector, TX before it. */
Test(pcap, nic_hook_records_rx_and_tx)
{
    struct pktbuf_pool pool;
    struct stack_counters c;
    memset(&c, 0, sizeof(c));
    cr_assert_eq(pktbuf_pool_init(&pool, 64, 2048), 0);
    struct nic n;
    struct nic_params par = {.backend = "sim", .name = "sim0", .mtu = 1500};
    par.fault = (struct nic_fault_params){.enabled = true, .seed = 1, .loss = 1.0, .tx = true};
    cr_assert_eq(nic_open(&n, &par), 0);
    nic_bind_queue(&n, 0, &pool, &c);
    n.pcap = pcap_open(path, 0, NULL);
    cr_assert_not_null(n.pcap);

    uint8_t f[60];
    arp_frame(f, 1);
    cr_assert_eq(nic_sim_inject(&n, f, sizeof(f)), 0);
    struct pktbuf *pk[4];
    cr_assert_eq(nic_rx(&n, 0, pk, 4, 77), 1);
    cr_assert_eq(pk[0]->ts, 77);
    /* The stack sends it back out; the TX injector loses it after the tap saw it. */
    cr_assert_eq(nic_tx(&n, 0, pk, 1, 88), 0);
    cr_assert_eq(c.fault_drop_loss, 1);
    cr_assert_eq(c.pcap_frames, 2);
    nic_close(&n); /* closes and flushes the tap */
    cr_assert_eq(pool.nfree, pool.count);
    pktbuf_pool_destroy(&pool);

    uint8_t b[512];
    size_t len = slurp(path, b, sizeof(b));
    cr_assert_eq(len, 24 + 2 * (16 + 60));
    cr_assert_eq(rd32le(b + 24 + 4), 77);
    cr_assert_eq(rd32le(b + 24 + 16 + 60 + 4), 88);
}
