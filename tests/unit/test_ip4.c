/* IPv4 input validation, local delivery, routing, hooks, forwarding, closed ports. */
#include <criterion/criterion.h>
#include <errno.h>

#include "tests/lib/stacktest.h"

static uint32_t take_ip(struct stest *t, uint8_t *buf, struct ip4_view *ip)
{
    uint32_t n = stest_tx(t, buf, 70000);
    cr_assert_gt(n, 34);
    cr_assert_eq(rd16(buf + 12), ETHERTYPE_IPV4);
    cr_assert_eq(ip4_parse(buf + 14, n - 14, ip), IP4_OK);
    return n;
}

Test(ip4, rejects_malformed_headers_with_reasons)
{
    struct stest t;
    stest_init(&t, NULL);
    stest_learn_peer(&t);
    uint8_t f[200];
    uint32_t n = build_echo(f, ST_ADDR_PEER, ST_ADDR_A, 1, 1, 16);
    uint8_t g[200];

    stest_rx(&t, f, 14 + 10);
    cr_assert_eq(stest_cnt(&t, "ip4_drop_short"), 1);
    memcpy(g, f, n);
    g[14 + 10] ^= 0xff;
    stest_rx(&t, g, n);
    cr_assert_eq(stest_cnt(&t, "ip4_drop_csum"), 1);
    memcpy(g, f, n);
    g[14] = 0x43;
    stest_rx(&t, g, n);
    cr_assert_eq(stest_cnt(&t, "ip4_drop_ihl"), 1);
    memcpy(g, f, n);
    wr16(g + 16, (uint16_t)(n - 14 + 1));
    stest_rx(&t, g, n);
    cr_assert_eq(stest_cnt(&t, "ip4_drop_len"), 1);
    memcpy(g, f, n);
    g[14] = 0x65;
    stest_rx(&t, g, n);
    cr_assert_eq(stest_cnt(&t, "ip4_drop_version"), 1);
    cr_assert_eq(stest_tx_count(&t), 0);

    /* Martian sources. */
    uint32_t bad[] = {0xe0000001, 0xffffffff, 0x7f000001, 0, ST_ADDR_A, 0x0ac800ff};
    for (unsigned i = 0; i < sizeof(bad) / 4; i++) {
        n = build_echo(g, bad[i], ST_ADDR_A, 1, 1, 8);
        stest_rx(&t, g, n);
    }
    cr_assert_eq(stest_cnt(&t, "ip4_drop_bad_src"), 6);
    /* Not for us and not forwarding. */
    n = build_echo(g, ST_ADDR_PEER, 0x0ac80063, 1, 1, 8);
    stest_rx(&t, g, n);
    cr_assert_eq(stest_cnt(&t, "ip4_drop_not_local"), 1);
    cr_assert_eq(stest_tx_count(&t), 0);
    stest_fini(&t);
}

Test(ip4, ethernet_padding_is_trimmed)
{
    struct stest t;
    stest_init(&t, NULL);
    stest_learn_peer(&t);
    uint8_t f[200], out[200];
    uint32_t n = build_echo(f, ST_ADDR_PEER, ST_ADDR_A, 1, 1, 0); /* 42 bytes: runt */
    memset(f + n, 0xee, 60 - n);
    stest_rx(&t, f, 60);
    struct ip4_view ip;
    take_ip(&t, out, &ip);
    cr_assert_eq(ip.tot_len, 28, "reply carries no padding bytes");
    stest_fini(&t);
}

Test(ip4, source_route_option_dropped)
{
    struct stest t;
    stest_init(&t, NULL);
    stest_learn_peer(&t);
    uint8_t f[200];
    uint32_t n = build_echo(f, ST_ADDR_PEER, ST_ADDR_A, 1, 1, 8);
    /* Rebuild with a 4-byte LSRR option: 0x83 len 3 ptr 4 + pad. */
    uint8_t g[220];
    memcpy(g, f, 14);
    g[14] = 0x46;
    memcpy(g + 15, f + 15, 19);
    wr16(g + 16, (uint16_t)(n - 14 + 4));
    g[34] = 0x83;
    g[35] = 3;
    g[36] = 4;
    g[37] = 0;
    memcpy(g + 38, f + 34, n - 34);
    wr16(g + 24, 0);
    wr16(g + 24, csum(g + 14, 24));
    stest_rx(&t, g, n + 4);
    cr_assert_eq(stest_cnt(&t, "ip4_drop_options"), 1);
    /* A record-route-free no-op option list is fine. */
    g[34] = 1;
    g[35] = 1;
    g[36] = 1;
    g[37] = 0;
    wr16(g + 24, 0);
    wr16(g + 24, csum(g + 14, 24));
    stest_rx(&t, g, n + 4);
    cr_assert_eq(stest_tx_count(&t), 1);
    stest_fini(&t);
}

Test(ip4, udp_closed_port_gets_port_unreachable)
{
    struct stest t;
    stest_init(&t, NULL);
    stest_learn_peer(&t);
    uint8_t u[16] = {0x30, 0x39, 0x00, 0x35, 0x00, 0x10};
    uint8_t f[200], out[200];
    uint32_t n = build_ip4(f, st_mac_a, st_mac_peer, ST_ADDR_PEER, ST_ADDR_A, 17, 9, 0, 64, u, 16);
    stest_rx(&t, f, n);
    struct ip4_view ip;
    take_ip(&t, out, &ip);
    cr_assert_eq(ip.proto, 1);
    cr_assert_eq(ip.dst, ST_ADDR_PEER);
    const uint8_t *ic = out + 14 + ip.ihl;
    cr_assert_eq(ic[0], ICMP_DEST_UNREACH);
    cr_assert_eq(ic[1], ICMP_UNREACH_PORT);
    cr_assert_eq(csum(ic, ip.tot_len - ip.ihl), 0);
    cr_assert_eq(memcmp(ic + 8, f + 14, 28), 0, "quotes the header and 8 bytes");
    cr_assert_eq(stest_cnt(&t, "udp_drop_no_port"), 1);

    /* An unknown protocol gets protocol unreachable. */
    n = build_ip4(f, st_mac_a, st_mac_peer, ST_ADDR_PEER, ST_ADDR_A, 99, 10, 0, 64, u, 16);
    stest_rx(&t, f, n);
    take_ip(&t, out, &ip);
    cr_assert_eq(out[14 + 20 + 1], ICMP_UNREACH_PROTO);
    cr_assert_eq(stest_cnt(&t, "ip4_drop_proto"), 1);
    stest_fini(&t);
}

Test(ip4, tcp_syn_to_closed_port_gets_rst)
{
    struct stest t;
    stest_init(&t, NULL);
    stest_learn_peer(&t);
    uint8_t seg[20] = {0};
    wr16(seg, 40000);
    wr16(seg + 2, 80);
    wr32(seg + 4, 1000);
    seg[12] = 5 << 4;
    seg[13] = TCP_SYN;
    wr16(seg + 14, 65535);
    wr16(seg + 16, csum_fold(csum_partial(seg, 20, csum_pseudo4(ST_ADDR_PEER, ST_ADDR_A, 6, 20))));
    uint8_t f[200], out[200];
    uint32_t n = build_ip4(f, st_mac_a, st_mac_peer, ST_ADDR_PEER, ST_ADDR_A, 6, 1, 0, 64, seg, 20);
    stest_rx(&t, f, n);
    struct ip4_view ip;
    take_ip(&t, out, &ip);
    struct tcp_view tv;
    cr_assert_eq(tcp_parse(out + 34, 20, &tv), 0);
    cr_assert_eq(tv.flags, TCP_RST | TCP_ACK);
    cr_assert_eq(tv.seq, 0);
    cr_assert_eq(tv.ack, 1001, "SEG.SEQ + 1 for the SYN");
    cr_assert_eq(tv.sport, 80);
    cr_assert_eq(
        csum_fold(csum_partial(out + 34, 20, csum_pseudo4(ST_ADDR_A, ST_ADDR_PEER, 6, 20))), 0);
    /* A RST is never answered; a bad checksum is dropped. */
    seg[13] = TCP_RST;
    wr16(seg + 16, 0);
    wr16(seg + 16, csum_fold(csum_partial(seg, 20, csum_pseudo4(ST_ADDR_PEER, ST_ADDR_A, 6, 20))));
    stest_rx(&t, f,
             build_ip4(f, st_mac_a, st_mac_peer, ST_ADDR_PEER, ST_ADDR_A, 6, 2, 0, 64, seg, 20));
    seg[16] ^= 1;
    stest_rx(&t, f,
             build_ip4(f, st_mac_a, st_mac_peer, ST_ADDR_PEER, ST_ADDR_A, 6, 3, 0, 64, seg, 20));
    cr_assert_eq(stest_tx_count(&t), 0);
    cr_assert_eq(stest_cnt(&t, "tcp_drop_csum"), 1);
    stest_fini(&t);
}

Test(route, longest_prefix_match_and_gateway)
{
    struct stack_params p;
    stack_params_defaults(&p);
    p.pktbufs = 512;
    p.routes[0] = (struct route_entry){.dst = 0, .plen = 0, .via = 0x0ac80001, .ifidx = -1};
    p.routes[1] =
        (struct route_entry){.dst = 0x0ac90000, .plen = 16, .via = 0x0ac800fe, .ifidx = -1};
    p.routes[2] =
        (struct route_entry){.dst = 0x0ac90100, .plen = 24, .via = 0x0ac80005, .ifidx = -1};
    p.n_routes = 3;
    struct stest t;
    stest_init(&t, &p);
    uint8_t out[200];
    struct {
        uint32_t dst, nh;
    } cases[] = {
        {0x08080808, 0x0ac80001},
        {0x0ac90203, 0x0ac800fe},
        {0x0ac90107, 0x0ac80005},
        {0x0ac80033, 0x0ac80033},
    };
    for (unsigned i = 0; i < 4; i++) {
        stack_ping(&t.st, cases[i].dst, 1, 1, 8);
        stest_step(&t, 0);
        uint32_t n = stest_tx(&t, out, sizeof(out));
        cr_assert_eq(n, 60);
        cr_assert_eq(rd32(out + 14 + 24), cases[i].nh, "case %u resolves the right next hop", i);
    }
    char rep[1024];
    size_t rl = stack_report_routes(&t.st, rep, sizeof(rep));
    rep[rl] = 0;
    cr_assert(strstr(rep, "10.201.1.0/24 via 10.200.0.5 dev sim0"), "%s", rep);
    cr_assert(strstr(rep, "10.200.0.0/24 dev sim0"), "%s", rep);
    /* The first line is the longest prefix. */
    cr_assert_eq(strncmp(rep, "10.201.1.0/24", 13), 0, "%s", rep);
    stest_fini(&t);
}

Test(ip4, no_route_is_counted)
{
    struct stest t;
    stest_init(&t, NULL);
    cr_assert_eq(stack_ping(&t.st, 0x08080808, 1, 1, 8), -ENETUNREACH);
    cr_assert_eq(stest_cnt(&t, "ip4_drop_no_route"), 1);
    stest_fini(&t);
}

Test(hook, local_in_drop_rule_and_rate_limit)
{
    struct stack_params p;
    stack_params_defaults(&p);
    p.pktbufs = 512;
    p.rules[0] = (struct hook_rule){.point = HOOK_LOCAL_IN,
                                    .action = HOOK_DROP,
                                    .proto = 1,
                                    .src = ST_ADDR_PEER,
                                    .src_plen = 32,
                                    .rate_pps = 10};
    p.n_rules = 1;
    struct stest t;
    stest_init(&t, &p);
    stest_learn_peer(&t);
    uint8_t f[200];
    uint32_t n = build_echo(f, ST_ADDR_PEER, ST_ADDR_A, 1, 1, 8);
    for (int i = 0; i < 30; i++)
        stest_rx(&t, f, n);
    cr_assert_eq(stest_tx_count(&t), 10, "10 per second pass the policer");
    cr_assert_eq(stest_cnt(&t, "hook_local_in_drop"), 20);
    cr_assert_eq(stest_cnt(&t, "hook_prerouting_pass"), 30);
    stest_tx_drain(&t);
    stest_step(&t, T_SEC);
    stest_rx(&t, f, n);
    cr_assert_eq(stest_tx_count(&t), 1, "tokens refill with time");
    stest_fini(&t);
}

Test(ip4, forwarding_decrements_ttl_and_expires)
{
    struct stack_params p;
    stack_params_defaults(&p);
    p.pktbufs = 512;
    p.forwarding = true;
    struct stest t;
    stest_init(&t, &p);
    stest_learn_peer(&t);
    uint8_t f[200], out[200];
    /* Peer .1 sends to .7 (on-link, via us): forwarded with TTL-1. */
    uint32_t n = build_echo(f, ST_ADDR_PEER, 0x0ac80007, 1, 1, 8);
    stest_rx(&t, f, n);
    stest_step(&t, 0);
    n = stest_tx(&t, out, sizeof(out)); /* ARP request for .7 */
    uint8_t arp[64];
    uint8_t mac7[6] = {2, 0, 0, 0, 0, 7};
    stest_rx(&t, arp,
             build_arp(arp, ARP_OP_REPLY, mac7, 0x0ac80007, st_mac_a, ST_ADDR_A, st_mac_a));
    struct ip4_view ip;
    take_ip(&t, out, &ip);
    cr_assert_eq(ip.ttl, 63);
    cr_assert_eq(ip.dst, 0x0ac80007);
    cr_assert_eq(stest_cnt(&t, "ip4_forwarded"), 1);
    /* TTL 1: time exceeded back to the source. */
    n = build_echo(f, ST_ADDR_PEER, 0x0ac80007, 1, 2, 8);
    f[14 + 8] = 1;
    wr16(f + 24, 0);
    wr16(f + 24, csum(f + 14, 20));
    stest_rx(&t, f, n);
    take_ip(&t, out, &ip);
    cr_assert_eq(out[34], ICMP_TIME_EXCEEDED);
    cr_assert_eq(stest_cnt(&t, "ip4_drop_ttl"), 1);
    stest_fini(&t);
}

/* A buffer another worker handed over that no longer parses (cannot happen: it was
 * parsed there) is freed and counted, as is an ARP one naming no interface. */
Test(ip4, steered_buffer_that_does_not_parse_is_counted)
{
    struct stest t;
    stest_init(&t, NULL);
    struct pktbuf *pb = pktbuf_alloc(&t.st.pool);
    cr_assert_not_null(pb);
    cr_assert_not_null(pktbuf_put(pb, 20));
    memset(pktbuf_data(pb), 0xee, 20);
    pb->steered = PKTBUF_STEER_DELIVER;
    stack_input_steered(&t.st, pb);
    cr_assert_eq(stest_cnt(&t, "steer_drop_invalid"), 1);
    pb = pktbuf_alloc(&t.st.pool);
    cr_assert_not_null(pktbuf_put(pb, 28));
    pb->steered = PKTBUF_STEER_ARP;
    pb->ifindex = 200;
    stack_input_steered(&t.st, pb);
    cr_assert_eq(stest_cnt(&t, "steer_drop_invalid"), 2);
    stest_fini(&t);
}
