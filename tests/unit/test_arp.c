/* ARP: replies, cache states, resolution with a wait queue, retries, limits. */
#include <criterion/criterion.h>

#include "tests/lib/stacktest.h"

static const uint8_t bc[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
static const uint8_t z[6];

static struct arp_view take_arp(struct stest *t, uint8_t *buf)
{
    uint32_t n = stest_tx(t, buf, 128);
    cr_assert_geq(n, 42);
    struct eth_view e;
    cr_assert_eq(eth_parse(buf, n, &e), 0);
    cr_assert_eq(e.type, ETHERTYPE_ARP);
    struct arp_view a;
    cr_assert_eq(arp_parse(buf + e.hlen, n - e.hlen, &a), 0);
    return a;
}

Test(arp, answers_request_for_our_address)
{
    struct stest t;
    stest_init(&t, NULL);
    uint8_t f[64], out[128];
    stest_rx(&t, f, build_arp(f, ARP_OP_REQUEST, st_mac_peer, ST_ADDR_PEER, z, ST_ADDR_A, bc));
    struct arp_view a = take_arp(&t, out);
    cr_assert_eq(a.op, ARP_OP_REPLY);
    cr_assert_eq(memcmp(a.sha, st_mac_a, 6), 0);
    cr_assert_eq(a.spa, ST_ADDR_A);
    cr_assert_eq(memcmp(a.tha, st_mac_peer, 6), 0);
    cr_assert_eq(a.tpa, ST_ADDR_PEER);
    cr_assert_eq(memcmp(out, st_mac_peer, 6), 0, "reply is unicast to the asker");
    cr_assert_eq(stest_cnt(&t, "arp_tx_reply"), 1);
    /* The asker was learned (RFC 826): a ping reply needs no ARP. */
    uint8_t e[200];
    stest_rx(&t, e, build_echo(e, ST_ADDR_PEER, ST_ADDR_A, 1, 1, 8));
    cr_assert_eq(stest_cnt(&t, "arp_tx_request"), 0);
    cr_assert_eq(stest_tx_count(&t), 1);
    stest_fini(&t);
}

Test(arp, drops_bad_requests)
{
    struct stest t;
    stest_init(&t, NULL);
    uint8_t f[64];
    stest_rx(&t, f, build_arp(f, ARP_OP_REQUEST, st_mac_peer, 0x0a090001, z, ST_ADDR_A, bc));
    cr_assert_eq(stest_cnt(&t, "arp_drop_wrong_subnet"), 1);
    stest_rx(&t, f, build_arp(f, ARP_OP_REQUEST, st_mac_peer, ST_ADDR_PEER, z, 0x0ac80063, bc));
    cr_assert_eq(stest_cnt(&t, "arp_drop_not_for_us"), 1);
    stest_rx(&t, f, build_arp(f, ARP_OP_REQUEST, st_mac_peer, ST_ADDR_A, z, ST_ADDR_A, bc));
    cr_assert_eq(stest_cnt(&t, "arp_drop_bad_sender"), 1, "someone claims our address");
    uint32_t n = build_arp(f, ARP_OP_REQUEST, st_mac_peer, ST_ADDR_PEER, z, ST_ADDR_A, bc);
    stest_rx(&t, f, 14 + 20);
    cr_assert_eq(stest_cnt(&t, "arp_drop_short"), 1);
    f[14 + 5] = 16;
    stest_rx(&t, f, n);
    cr_assert_eq(stest_cnt(&t, "arp_drop_format"), 1);
    cr_assert_eq(stest_tx_count(&t), 0);
    stest_fini(&t);
}

Test(arp, defends_address_against_probe)
{
    struct stest t;
    stest_init(&t, NULL);
    uint8_t f[64], out[128];
    stest_rx(&t, f, build_arp(f, ARP_OP_REQUEST, st_mac_peer, 0, z, ST_ADDR_A, bc));
    struct arp_view a = take_arp(&t, out);
    cr_assert_eq(a.op, ARP_OP_REPLY);
    cr_assert_eq(a.spa, ST_ADDR_A);
    stest_fini(&t);
}

Test(arp, resolves_queues_and_flushes)
{
    struct stest t;
    stest_init(&t, NULL);
    uint8_t out[2000], f[64];
    /* Three pings to the peer before it is known: one request, three queued. */
    for (int i = 0; i < 3; i++)
        cr_assert_eq(stack_ping(&t.st, ST_ADDR_PEER, 7, (uint16_t)i, 32), 0);
    stest_step(&t, 0);
    struct arp_view a = take_arp(&t, out);
    cr_assert_eq(a.op, ARP_OP_REQUEST);
    cr_assert_eq(a.tpa, ST_ADDR_PEER);
    cr_assert_eq(memcmp(out, bc, 6), 0);
    cr_assert_eq(stest_tx_count(&t), 0);
    cr_assert_eq(stest_cnt(&t, "arp_queued"), 3);
    stest_rx(&t, f,
             build_arp(f, ARP_OP_REPLY, st_mac_peer, ST_ADDR_PEER, st_mac_a, ST_ADDR_A, st_mac_a));
    cr_assert_eq(stest_tx_count(&t), 3, "queue flushed in order");
    for (int i = 0; i < 3; i++) {
        uint32_t n = stest_tx(&t, out, sizeof(out));
        cr_assert_eq(memcmp(out, st_mac_peer, 6), 0);
        cr_assert_eq(rd16(out + 14 + 20 + 6), i, "sequence %d in order", i);
        cr_assert_gt(n, 0);
    }
    char rep[512];
    size_t rl = stack_report_neigh(&t.st, rep, sizeof(rep));
    rep[rl] = 0;
    cr_assert(strstr(rep, "10.200.0.1") && strstr(rep, "02:00:00:00:00:01") &&
                  strstr(rep, "REACHABLE"),
              "%s", rep);
    /* Reachable -> stale after reachable_ms, then removed after stale_ms. */
    stest_step(&t, 31 * T_SEC);
    rl = stack_report_neigh(&t.st, rep, sizeof(rep));
    rep[rl] = 0;
    cr_assert(strstr(rep, "STALE"), "%s", rep);
    stest_step(&t, 61 * T_SEC);
    cr_assert_eq(stack_report_neigh(&t.st, rep, sizeof(rep)), 0);
    stest_fini(&t);
}

Test(arp, retries_then_gives_up_counting_drops)
{
    struct stack_params p;
    stack_params_defaults(&p);
    p.pktbufs = 512;
    p.arp_queue_len = 16;
    struct stest t;
    stest_init(&t, &p);
    uint8_t out[200];
    for (int i = 0; i < 20; i++)
        stack_ping(&t.st, ST_ADDR_PEER, 7, (uint16_t)i, 8);
    stest_step(&t, 0);
    cr_assert_eq(stest_cnt(&t, "arp_drop_queue_full"), 4, "queue holds arp_queue_len=16");
    for (int i = 0; i < 5; i++)
        stest_step(&t, 1001 * T_MS);
    cr_assert_eq(stest_cnt(&t, "arp_tx_request"), 4, "1 + 3 retries");
    cr_assert_eq(stest_cnt(&t, "arp_drop_unresolved"), 16);
    while (stest_tx(&t, out, sizeof(out)))
        ;
    stest_fini(&t);
}

Test(arp, gratuitous_at_start)
{
    struct stest t;
    stest_init(&t, NULL);
    stack_start(&t.st);
    stest_step(&t, 0);
    uint8_t out[128];
    struct arp_view a = take_arp(&t, out);
    cr_assert_eq(a.spa, ST_ADDR_A);
    cr_assert_eq(a.tpa, ST_ADDR_A);
    cr_assert_eq(memcmp(out, bc, 6), 0);
    stest_fini(&t);
}

Test(arp, cache_full_evicts_oldest_resolved)
{
    struct stack_params p;
    stack_params_defaults(&p);
    p.pktbufs = 512;
    p.arp_cache_size = 4;
    struct stest t;
    stest_init(&t, &p);
    uint8_t f[64];
    for (uint32_t i = 0; i < 6; i++) {
        uint8_t mac[6] = {2, 0, 0, 0, 1, (uint8_t)i};
        stest_rx(&t, f, build_arp(f, ARP_OP_REQUEST, mac, 0x0ac80010 + i, z, ST_ADDR_A, bc));
        stest_step(&t, T_MS);
    }
    stest_tx_drain(&t);
    char rep[1024];
    size_t rl = stack_report_neigh(&t.st, rep, sizeof(rep));
    rep[rl] = 0;
    cr_assert_null(strstr(rep, "10.200.0.16 "), "oldest evicted: %s", rep);
    cr_assert_not_null(strstr(rep, "10.200.0.21 "), "%s", rep);
    stest_fini(&t);
}
