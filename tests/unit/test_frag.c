/* IPv4 fragmentation and reassembly, including two stacks over a lossy sim link. */
#include <criterion/criterion.h>

#include "stack/stack_impl.h"
#include "tests/lib/stacktest.h"

/* Build fragment [off, off+len) of an ICMP echo datagram whose payload is `pl` (plen bytes). */
static uint32_t frag(uint8_t *f, const uint8_t *pl, uint32_t off, uint32_t len, bool more,
                     uint16_t id)
{
    return build_ip4(f, st_mac_a, st_mac_peer, ST_ADDR_PEER, ST_ADDR_A, 1, id,
                     (uint16_t)((more ? IP4_MF : 0) | off / 8), 64, pl + off, len);
}

static uint32_t make_echo_payload(uint8_t *pl, uint32_t datalen)
{
    pl[0] = ICMP_ECHO;
    pl[1] = 0;
    wr16(pl + 2, 0);
    wr16(pl + 4, 9);
    wr16(pl + 6, 1);
    for (uint32_t i = 0; i < datalen; i++)
        pl[8 + i] = (uint8_t)(i ^ (i >> 8));
    wr16(pl + 2, csum(pl, 8 + datalen));
    return 8 + datalen;
}

/* Reassemble what the stack sent (fragments of one datagram) and return its payload length. */
static uint32_t collect_reply(struct stest *t, uint8_t *payload)
{
    uint8_t out[2000];
    uint32_t total = 0, got = 0, n;
    while ((n = stest_tx(t, out, sizeof(out)))) {
        struct ip4_view ip;
        cr_assert_eq(ip4_parse(out + 14, n - 14, &ip), IP4_OK);
        cr_assert_leq(ip.tot_len, 1500, "fragments fit the MTU");
        uint32_t off = ip4_frag_off(&ip), l = ip.tot_len - ip.ihl;
        memcpy(payload + off, out + 14 + ip.ihl, l);
        got += l;
        if (!(ip.frag & IP4_MF))
            total = off + l;
    }
    cr_assert_eq(got, total);
    return total;
}

Test(frag, reassembles_out_of_order_and_replies_fragmented)
{
    struct stest t;
    stest_init(&t, NULL);
    stest_learn_peer(&t);
    static uint8_t pl[9000], rep[9000];
    uint32_t plen = make_echo_payload(pl, 8000 - 8);
    uint8_t f[1600];
    /* 1480-byte pieces sent last first. */
    uint32_t offs[16], n = 0;
    for (uint32_t o = 0; o < plen; o += 1480)
        offs[n++] = o;
    for (uint32_t i = n; i-- > 0;) {
        uint32_t len = plen - offs[i] < 1480 ? plen - offs[i] : 1480;
        stest_rx(&t, f, frag(f, pl, offs[i], len, offs[i] + len < plen, 42));
        if (i)
            cr_assert_eq(stest_tx_count(&t), 0);
    }
    cr_assert_eq(stest_cnt(&t, "ip4_reasm_ok"), 1);
    cr_assert_eq(ip4_frag_count(&t.st), 0);
    uint32_t rl = collect_reply(&t, rep);
    cr_assert_eq(rl, plen);
    cr_assert_eq(rep[0], ICMP_ECHOREPLY);
    cr_assert_eq(memcmp(rep + 8, pl + 8, plen - 8), 0);
    cr_assert_eq(csum(rep, rl), 0);
    cr_assert_eq(stest_cnt(&t, "ip4_frag_created"), 6);
    stest_fini(&t);
}

Test(frag, overlap_drops_datagram_duplicate_drops_copy)
{
    struct stest t;
    stest_init(&t, NULL);
    stest_learn_peer(&t);
    static uint8_t pl[4000];
    uint32_t plen = make_echo_payload(pl, 3000);
    uint8_t f[1600];
    stest_rx(&t, f, frag(f, pl, 0, 1480, true, 1));
    stest_rx(&t, f, frag(f, pl, 0, 1480, true, 1));
    cr_assert_eq(stest_cnt(&t, "ip4_frag_drop_dup"), 1);
    cr_assert_eq(ip4_frag_count(&t.st), 1);
    stest_rx(&t, f, frag(f, pl, 1472, 1480, true, 1)); /* overlaps [1472,1480) */
    cr_assert_eq(stest_cnt(&t, "ip4_frag_drop_overlap"), 1);
    cr_assert_eq(ip4_frag_count(&t.st), 0, "whole datagram dropped");
    /* The rest of it arriving now does not complete anything. */
    stest_rx(&t, f, frag(f, pl, 1480, plen - 1480, false, 1));
    cr_assert_eq(stest_tx_count(&t), 0);
    stest_fini(&t);
}

Test(frag, timeout_sends_time_exceeded_and_frees)
{
    struct stest t;
    stest_init(&t, NULL);
    stest_learn_peer(&t);
    static uint8_t pl[4000];
    make_echo_payload(pl, 3000);
    uint8_t f[1600], out[200];
    stest_rx(&t, f, frag(f, pl, 0, 1480, true, 3));
    stest_step(&t, 29 * T_SEC);
    cr_assert_eq(ip4_frag_count(&t.st), 1);
    stest_step(&t, 2 * T_SEC);
    cr_assert_eq(ip4_frag_count(&t.st), 0);
    cr_assert_eq(stest_cnt(&t, "ip4_frag_drop_timeout"), 1);
    uint32_t n = stest_tx_ip(&t, out, sizeof(out));
    cr_assert_gt(n, 34);
    cr_assert_eq(out[34], ICMP_TIME_EXCEEDED);
    cr_assert_eq(out[35], ICMP_EXC_FRAGTIME);
    cr_assert_eq(rd16(out + 42 + 4), 3, "quotes the datagram id");
    /* A timed-out datagram without fragment zero is dropped silently. */
    stest_rx(&t, f, frag(f, pl, 1480, 1480, true, 4));
    stest_step(&t, 31 * T_SEC);
    cr_assert_eq(stest_cnt(&t, "ip4_frag_drop_timeout"), 2);
    cr_assert_eq(stest_tx_ip(&t, out, sizeof(out)), 0);
    stest_fini(&t);
}

Test(frag, limits_bound_memory)
{
    struct stest t;
    stest_init(&t, NULL);
    stest_learn_peer(&t);
    static uint8_t pl[70000];
    make_echo_payload(pl, 1000);
    uint8_t f[1600];
    /* A flood of never-completed datagrams: at most frag_max_datagrams are held. */
    for (uint16_t id = 0; id < 2000; id++)
        stest_rx(&t, f, frag(f, pl, 8, 16, true, id));
    cr_assert_eq(ip4_frag_count(&t.st), 64);
    cr_assert_eq(stest_cnt(&t, "ip4_frag_drop_mem"), 2000 - 64);
    /* Endless pieces of one datagram: stopped at 64 pieces. */
    for (uint32_t i = 0; i < 100; i++)
        stest_rx(&t, f, frag(f, pl, 8 * (2 * i + 1), 8, true, 60000));
    cr_assert_eq(stest_cnt(&t, "ip4_frag_drop_too_many"), 1);
    /* Beyond 65535 bytes. */
    stest_rx(&t, f, frag(f, pl, 65528, 16, false, 60001));
    cr_assert_eq(stest_cnt(&t, "ip4_frag_drop_too_big"), 1);
    /* Bad: a middle piece whose length is not a multiple of 8. */
    stest_rx(&t, f, frag(f, pl, 0, 13, true, 60002));
    cr_assert_eq(stest_cnt(&t, "ip4_frag_drop_bad"), 1);
    /* A legitimate datagram still reassembles afterwards. */
    static uint8_t good[3000];
    uint32_t gl = make_echo_payload(good, 2000);
    stest_rx(&t, f, frag(f, good, 0, 1480, true, 61000));
    stest_rx(&t, f, frag(f, good, 1480, gl - 1480, false, 61000));
    cr_assert_eq(stest_cnt(&t, "ip4_reasm_ok"), 1);
    cr_assert_eq(t.st.large.nfree + ip4_frag_count(&t.st), t.st.large.count,
                 "no large buffer leaked");
    stest_fini(&t);
}

/* Two stacks on a sim link with the fault injector: 8000-byte pings both ways. */
static void ping_pair(const struct nic_fault_params *fp, int npings, int *replies)
{
    static const uint8_t mac_b[6] = {2, 0, 0, 0, 0, 3};
    struct stest a, b;
    stest_init_addr(&a, NULL, ST_ADDR_A, st_mac_a, fp);
    stest_init_addr(&b, NULL, 0x0ac80003, mac_b, fp);
    nic_sim_link(&a.nic, &b.nic);
    *replies = 0;
    for (int i = 0; i < npings; i++) {
        uint64_t before = a.st.ping_replies;
        cr_assert_eq(stack_ping(&a.st, 0x0ac80003, 5, (uint16_t)i, 8000), 0);
        for (int k = 0; k < 200 && a.st.ping_replies == before; k++) {
            stest_step(&a, 100 * T_MS / 100);
            b.now = a.now;
            stest_step(&b, 0);
        }
        *replies += a.st.ping_replies > before;
    }
    stest_fini(&a);
    stest_fini(&b);
}

Test(frag, two_stacks_big_ping_clean_link)
{
    int r;
    ping_pair(NULL, 20, &r);
    cr_assert_eq(r, 20);
}

Test(frag, two_stacks_big_ping_reordered_duplicated)
{
    struct nic_fault_params fp = {
        .enabled = true, .seed = 11, .duplicate = 0.05, .reorder = 0.2, .rx = true, .tx = true};
    int r;
    ping_pair(&fp, 50, &r);
    cr_assert_eq(r, 50, "reordering and duplicates must not lose a datagram");
}

Test(frag, two_stacks_big_ping_lossy_corrupt)
{
    struct nic_fault_params fp = {
        .enabled = true, .seed = 5, .loss = 0.02, .corrupt = 0.02, .rx = false, .tx = true};
    int r;
    ping_pair(&fp, 100, &r);
    /* 12 fragments per round trip at ~4% damage each: most, not all, survive. */
    cr_assert_gt(r, 30);
    cr_assert_lt(r, 100);
}
