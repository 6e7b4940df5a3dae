/* ICMP: echo reply content, broadcast echo, error generation rules and rate limit,
 * received errors. */
#include <criterion/criterion.h>

#include "tests/lib/stacktest.h"

Test(icmp, echo_reply_mirrors_request)
{
    struct stest t;
    stest_init(&t, NULL);
    stest_learn_peer(&t);
    uint8_t f[1600], out[1600];
    uint32_t n = build_echo(f, ST_ADDR_PEER, ST_ADDR_A, 0x1234, 77, 1000);
    stest_rx(&t, f, n);
    uint32_t m = stest_tx(&t, out, sizeof(out));
    cr_assert_eq(m, n);
    struct ip4_view ip;
    cr_assert_eq(ip4_parse(out + 14, m - 14, &ip), IP4_OK);
    cr_assert_eq(ip.src, ST_ADDR_A);
    cr_assert_eq(ip.dst, ST_ADDR_PEER);
    cr_assert_eq(out[34], ICMP_ECHOREPLY);
    cr_assert_eq(rd16(out + 38), 0x1234);
    cr_assert_eq(rd16(out + 40), 77);
    cr_assert_eq(memcmp(out + 42, f + 42, 1000), 0, "data echoed");
    cr_assert_eq(csum(out + 34, m - 34), 0);
    cr_assert_eq(memcmp(out, st_mac_peer, 6), 0);
    stest_fini(&t);
}

Test(icmp, bad_checksum_and_broadcast_echo_dropped)
{
    struct stest t;
    stest_init(&t, NULL);
    stest_learn_peer(&t);
    uint8_t f[200];
    uint32_t n = build_echo(f, ST_ADDR_PEER, ST_ADDR_A, 1, 1, 20);
    f[40] ^= 0x55;
    stest_rx(&t, f, n);
    cr_assert_eq(stest_cnt(&t, "icmp_drop_csum"), 1);
    n = build_echo(f, ST_ADDR_PEER, 0x0ac800ff, 1, 1, 20);
    memset(f, 0xff, 6);
    stest_rx(&t, f, n);
    cr_assert_eq(stest_cnt(&t, "icmp_drop_bcast"), 1);
    n = build_echo(f, ST_ADDR_PEER, ST_ADDR_A, 1, 1, 20);
    stest_rx(&t, f, 14 + 20 + 4);
    cr_assert(stest_cnt(&t, "ip4_drop_len") + stest_cnt(&t, "icmp_drop_short") == 1);
    cr_assert_eq(stest_tx_count(&t), 0);
    stest_fini(&t);
}

Test(icmp, error_rate_limit)
{
    struct stack_params p;
    stack_params_defaults(&p);
    p.pktbufs = 512;
    p.icmp_ratelimit_pps = 5;
    struct stest t;
    stest_init(&t, &p);
    stest_learn_peer(&t);
    uint8_t u[8] = {0, 1, 0, 2, 0, 8, 0, 0};
    uint8_t f[100];
    for (int i = 0; i < 20; i++)
        stest_rx(&t, f,
                 build_ip4(f, st_mac_a, st_mac_peer, ST_ADDR_PEER, ST_ADDR_A, 17, (uint16_t)i, 0,
                           64, u, 8));
    cr_assert_eq(stest_tx_count(&t), 5);
    cr_assert_eq(stest_cnt(&t, "icmp_drop_ratelimit"), 15);
    stest_fini(&t);
}

static int err_calls;
static uint8_t err_type, err_code;
static void on_err(struct stack *st, uint8_t type, uint8_t code, uint32_t info,
                   const struct icmp_quote_view *q)
{
    err_calls++;
    err_type = type;
    err_code = code;
}

Test(icmp, received_errors_validated_and_delivered)
{
    struct stest t;
    stest_init(&t, NULL);
    stest_learn_peer(&t);
    t.st.l4_err[17] = on_err;
    err_calls = 0;
    /* Quoted datagram: ours (src = 10.200.0.2) UDP to the peer. */
    uint8_t q[28];
    ip4_write(q, 0, 28, 5, 0, 64, 17, ST_ADDR_A, ST_ADDR_PEER);
    memset(q + 20, 0, 8);
    uint8_t ic[8 + 28] = {ICMP_DEST_UNREACH, ICMP_UNREACH_PORT};
    memcpy(ic + 8, q, 28);
    wr16(ic + 2, csum(ic, sizeof(ic)));
    uint8_t f[200];
    stest_rx(
        &t, f,
        build_ip4(f, st_mac_a, st_mac_peer, ST_ADDR_PEER, ST_ADDR_A, 1, 1, 0, 64, ic, sizeof(ic)));
    cr_assert_eq(err_calls, 1);
    cr_assert_eq(err_type, ICMP_DEST_UNREACH);
    cr_assert_eq(err_code, ICMP_UNREACH_PORT);
    /* One quoting somebody else's datagram is not believed. */
    ip4_write(q, 0, 28, 5, 0, 64, 17, 0x0ac80009, ST_ADDR_PEER);
    memcpy(ic + 8, q, 28);
    wr16(ic + 2, 0);
    wr16(ic + 2, csum(ic, sizeof(ic)));
    stest_rx(
        &t, f,
        build_ip4(f, st_mac_a, st_mac_peer, ST_ADDR_PEER, ST_ADDR_A, 1, 2, 0, 64, ic, sizeof(ic)));
    cr_assert_eq(err_calls, 1);
    cr_assert_eq(stest_cnt(&t, "icmp_drop_bad_error"), 1);
    /* Truncated quote. */
    stest_rx(&t, f,
             build_ip4(f, st_mac_a, st_mac_peer, ST_ADDR_PEER, ST_ADDR_A, 1, 3, 0, 64, ic, 8 + 20));
    cr_assert(stest_cnt(&t, "icmp_drop_bad_error") + stest_cnt(&t, "icmp_drop_csum") == 2);
    cr_assert_eq(stest_tx_count(&t), 0, "never an error about an error");
    stest_fini(&t);
}
