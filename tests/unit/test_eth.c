/* eth_input: MAC filter, promiscuous mode, VLAN, short frames, ethertypes. */
#include <criterion/criterion.h>

#include "tests/lib/stacktest.h"

static const uint8_t other_mac[6] = {2, 0, 0, 0, 0, 9};

Test(eth, filters_and_counts)
{
    struct stest t;
    stest_init(&t, NULL);
    stest_learn_peer(&t);
    uint8_t f[200];
    uint32_t n = build_echo(f, ST_ADDR_PEER, ST_ADDR_A, 1, 1, 16);

    stest_rx(&t, f, 10);
    cr_assert_eq(stest_cnt(&t, "eth_drop_short"), 1);

    memcpy(f, other_mac, 6); /* unicast to someone else */
    stest_rx(&t, f, n);
    cr_assert_eq(stest_cnt(&t, "eth_drop_not_ours"), 1);
    cr_assert_eq(stest_tx_count(&t), 0);

    memcpy(f, st_mac_a, 6);
    f[6] = 1; /* multicast source */
    stest_rx(&t, f, n);
    cr_assert_eq(stest_cnt(&t, "eth_drop_src"), 1);
    memcpy(f + 6, st_mac_peer, 6);

    wr16(f + 12, ETHERTYPE_IPV6);
    stest_rx(&t, f, n);
    cr_assert_eq(stest_cnt(&t, "eth_drop_proto"), 1);
    wr16(f + 12, ETHERTYPE_IPV4);

    stest_rx(&t, f, n);
    cr_assert_eq(stest_tx_count(&t), 1, "a good echo gets its reply");
    stest_fini(&t);
}

Test(eth, vlan_tag_must_match)
{
    struct stest t;
    stest_init(&t, NULL);
    stest_learn_peer(&t);
    uint8_t f[200], g[204];
    uint32_t n = build_echo(f, ST_ADDR_PEER, ST_ADDR_A, 1, 1, 16);
    /* Insert an 802.1Q tag with VID 5: this interface is untagged. */
    memcpy(g, f, 12);
    wr16(g + 12, ETHERTYPE_VLAN);
    wr16(g + 14, 5);
    memcpy(g + 16, f + 12, n - 12);
    stest_rx(&t, g, n + 4);
    cr_assert_eq(stest_cnt(&t, "eth_drop_vlan"), 1);
    /* A priority tag (VID 0) is untagged traffic. */
    wr16(g + 14, 0x6000);
    stest_rx(&t, g, n + 4);
    cr_assert_eq(stest_tx_count(&t), 1);
    stest_fini(&t);
}

Test(eth, promiscuous_sees_but_does_not_answer_others)
{
    struct stest t;
    stest_init(&t, NULL);
    t.st.ifs[0].p.promiscuous = true;
    stest_learn_peer(&t);
    uint8_t f[200];
    uint32_t n = build_echo(f, ST_ADDR_PEER, ST_ADDR_A, 1, 1, 16);
    memcpy(f, other_mac, 6);
    stest_rx(&t, f, n);
    cr_assert_eq(stest_tx_count(&t), 0);
    cr_assert_eq(stest_cnt(&t, "eth_drop_not_ours"), 1);
    stest_fini(&t);
}

Test(eth, short_replies_are_padded)
{
    struct stest t;
    stest_init(&t, NULL);
    uint8_t f[64], out[128];
    uint32_t n = build_arp(f, ARP_OP_REQUEST, st_mac_peer, ST_ADDR_PEER, (uint8_t[6]){0}, ST_ADDR_A,
                           (uint8_t[6]){0xff, 0xff, 0xff, 0xff, 0xff, 0xff});
    stest_rx(&t, f, n);
    cr_assert_eq(stest_tx(&t, out, sizeof(out)), 60, "ARP reply padded to 60 bytes");
    stest_fini(&t);
}
