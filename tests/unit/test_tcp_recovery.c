/* Loss recovery as a sender: the RACK timer of a retransmission (RFC 8985 6.3) and the
 * loss mode after a timeout (RFC 6675 5.1), on two stacks over a filtered sim link. */
#include <criterion/criterion.h>

#include "stack/tcp.h"
#include "stack/wire.h"
#include "tests/lib/stacktest.h"
#include "tests/lib/tcppair.h"
#include "tests/lib/tcptest.h"

/* Drops a's data segments that start at drop_seq, the first drop_seen_max times. */
static int drop_max;
static bool drop_seq_times(struct pair *p, const uint8_t *f, uint32_t n, bool a_to_b)
{
    if (!a_to_b || !p->drop_seq || n < 14 + 20 + 20 || rd16(f + 12) != ETHERTYPE_IPV4 ||
        f[14 + 9] != 6)
        return false;
    const uint8_t *t = f + 14 + (f[14] & 15u) * 4;
    uint32_t len = rd16(f + 16) - (f[14] & 15u) * 4 - (t[12] >> 4) * 4u;
    if (!len || rd32(t + 4) != p->drop_seq || p->drop_seen >= drop_max)
        return false;
    p->drop_seen++;
    return true;
}

/* One flight of ten segments, nothing after it. */
static void send_flight(struct pair *p)
{
    static uint8_t d[10 * 1448];
    for (uint32_t i = 0; i < sizeof(d); i++)
        d[i] = pattern(i);
    cr_assert_eq(tbuf_write(&p->ca, d, sizeof(d)), sizeof(d));
    tcp_output(&p->a.st, p->cli);
}

static uint64_t until_acked(struct pair *p, int max_ms)
{
    uint64_t t0 = p->a.now;
    for (int i = 0; i < max_ms * 10 && p->cli->snd_una != p->cli->snd_max; i++)
        step(p, T_MS / 10);
    cr_assert_eq(p->cli->snd_una, p->cli->snd_max, "the flight was not acknowledged");
    return p->a.now - t0;
}

/* The second segment of a tail flight and its retransmission are lost. Everything sent
 * after the retransmission was SACKed before it went out, so no SACK can show it lost:
 * the RACK timer (a round trip and a reordering window) resends it, not the RTO. */
Test(tcp_recovery, lost_retransmission_of_a_tail_found_by_rack_timer)
{
    struct pair p;
    pair_init_filtered(&p, NULL, 256 * 1024, drop_seq_times);
    transfer(&p, 20000, 2000);
    drop_max = 2;
    p.drop_seq = p.cli->snd_nxt + 1448;
    send_flight(&p);
    uint64_t t = until_acked(&p, 1000);
    cr_assert_eq(p.drop_seen, 2);
    cr_assert_eq(stest_cnt(&p.a, "tcp_rto"), 0, "an RTO was needed");
    cr_assert_geq(stest_cnt(&p.a, "tcp_rack_timeouts"), 1);
    cr_assert_lt(t, 20 * T_MS, "took %llu us", (unsigned long long)(t / 1000));
    pair_fini(&p);
}

/* The first segment is lost four times (the original, the fast retransmission and two
 * RACK resends), until the RTO: the RTO keeps the SACK scoreboard and sends only the
 * hole again, not the nine SACKed segments behind it (loss mode). */
Test(tcp_recovery, rto_keeps_the_scoreboard)
{
    struct pair p;
    pair_init_filtered(&p, NULL, 256 * 1024, drop_seq_times);
    transfer(&p, 20000, 2000);
    drop_max = 1 + TCP_RXT_TRIES;
    p.drop_seq = p.cli->snd_nxt;
    send_flight(&p);
    uint64_t rto0 = stest_cnt(&p.a, "tcp_rto");
    uint32_t rx0 = 0;
    for (int i = 0; i < 10000 && stest_cnt(&p.a, "tcp_rto") == rto0; i++) {
        rx0 = p.cli->total_retrans;
        step(&p, T_MS / 10);
    }
    cr_assert_eq(stest_cnt(&p.a, "tcp_rto"), rto0 + 1);
    cr_assert_eq(p.drop_seen, 1 + TCP_RXT_TRIES);
    until_acked(&p, 100);
    cr_assert_eq(p.cli->total_retrans - rx0, 1, "%u segments sent again after the RTO",
                 p.cli->total_retrans - rx0);
    cr_assert_not(p.cli->in_recovery);
    cr_assert_not(p.cli->loss_mode);
    pair_fini(&p);
}

/* A tail flight recovers from one loss with nothing else in flight at the full ACK: the
 * recovery ends with cwnd at ssthresh (RFC 6937), not one segment (what RFC 6582's
 * "flight + 1 segment" gives with an empty flight): the next write goes out as a burst
 * of ssthresh, not one segment waiting for a delayed ACK. */
Test(tcp_recovery, recovery_ends_at_ssthresh)
{
    struct pair p;
    pair_init_filtered(&p, NULL, 256 * 1024, drop_seq_times);
    transfer(&p, 20000, 2000);
    drop_max = 1;
    p.drop_seq = p.cli->snd_nxt;
    send_flight(&p);
    until_acked(&p, 1000);
    cr_assert_eq(stest_cnt(&p.a, "tcp_sack_recovery"), 1);
    cr_assert_eq(stest_cnt(&p.a, "tcp_rto"), 0);
    cr_assert_not(p.cli->in_recovery);
    cr_assert_eq(p.cli->cwnd, p.cli->ssthresh, "cwnd %u, ssthresh %u", p.cli->cwnd,
                 p.cli->ssthresh);
    cr_assert_geq(p.cli->cwnd, 5u * p.cli->mss);
    pair_fini(&p);
}

/* A flight of three with the first lost: two SACKed segments are below DupThresh, so
 * RFC 6675 alone waits for a probe or the RTO. RACK (RFC 8985 6.2): the hole was sent
 * before data that arrived, so it is lost a reordering window after the SACKs. */
Test(tcp_recovery, short_flight_hole_found_by_rack)
{
    struct pair p;
    pair_init_filtered(&p, NULL, 256 * 1024, drop_seq_times);
    transfer(&p, 20000, 2000);
    drop_max = 1;
    p.drop_seq = p.cli->snd_nxt;
    static uint8_t d[3 * 1448];
    cr_assert_eq(tbuf_write(&p.ca, d, sizeof(d)), sizeof(d));
    tcp_output(&p.a.st, p.cli);
    uint64_t t = until_acked(&p, 1000);
    cr_assert_eq(p.drop_seen, 1);
    cr_assert_eq(stest_cnt(&p.a, "tcp_rack_recovery"), 1);
    cr_assert_eq(stest_cnt(&p.a, "tcp_tlp"), 0);
    cr_assert_eq(stest_cnt(&p.a, "tcp_rto"), 0);
    cr_assert_lt(t, 5 * T_MS, "took %llu us", (unsigned long long)(t / 1000));
    pair_fini(&p);
}

/* Holds a's first data segment from drop_seq on and lets it through behind the fifth:
 * reordering, not loss. */
static uint8_t held[2048];
static uint32_t held_len;
static bool reorder_first(struct pair *p, const uint8_t *f, uint32_t n, bool a_to_b)
{
    if (!a_to_b || !p->drop_seq || n < 14 + 20 + 20 || rd16(f + 12) != ETHERTYPE_IPV4 ||
        f[14 + 9] != 6)
        return false;
    const uint8_t *t = f + 14 + (f[14] & 15u) * 4;
    uint32_t seq = rd32(t + 4);
    if (seq == p->drop_seq && !p->drop_seen) {
        memcpy(held, f, n);
        held_len = n;
        p->drop_seen = 1;
        return true;
    }
    if (p->drop_seen == 1 && seq == p->drop_seq + 5 * 1448) {
        cr_assert_eq(nic_sim_inject(&p->b.nic, held, held_len), 0);
        p->drop_seen = 2;
    }
    return false;
}

/* Reordering makes a spurious fast retransmission: the receiver reports the retransmitted
 * segment as a duplicate (D-SACK), and the sender undoes the reduction (RFC 3708). */
Test(tcp_recovery, spurious_recovery_undone_on_dsack)
{
    struct pair p;
    pair_init_filtered(&p, NULL, 256 * 1024, reorder_first);
    transfer(&p, 200000, 2000);
    uint32_t cwnd0 = p.cli->cwnd;
    p.drop_seq = p.cli->snd_nxt;
    send_flight(&p);
    until_acked(&p, 1000);
    for (int i = 0; i < 20; i++)
        step(&p, T_MS);
    cr_assert_eq(p.drop_seen, 2, "the first segment came late");
    cr_assert_eq(stest_cnt(&p.a, "tcp_sack_recovery"), 1, "a recovery was entered");
    cr_assert_geq(stest_cnt(&p.a, "tcp_dsack_rx"), 1, "no D-SACK came back");
    cr_assert_eq(stest_cnt(&p.a, "tcp_dsack_undo"), 1);
    cr_assert_geq(p.cli->cwnd, cwnd0, "cwnd %u, before the recovery %u", p.cli->cwnd, cwnd0);
    pair_fini(&p);
}
