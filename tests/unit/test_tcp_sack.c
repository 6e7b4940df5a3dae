/* The SACK blocks a receiver reports (RFC 2018 section 4). */
#include <criterion/criterion.h>

#include "stack/tcp.h"
#include "stack/wire.h"
#include "tests/lib/stacktest.h"
#include "tests/lib/tcppair.h"
#include "tests/lib/tcptest.h"

static bool never(struct pair *p, const uint8_t *f, uint32_t n, bool a_to_b)
{
    return false;
}

/* The SACK blocks of a TCP/IPv4 frame; returns how many (0 without the option). */
static int sack_of(const uint8_t *f, uint32_t n, struct tcp_range *b)
{
    if (n < 14 + 20 + 20 || rd16(f + 12) != ETHERTYPE_IPV4 || f[14 + 9] != 6)
        return 0;
    const uint8_t *t = f + 14 + (f[14] & 15u) * 4;
    uint32_t hl = (t[12] >> 4) * 4u;
    for (uint32_t i = 20; i < hl;) {
        if (t[i] == 0)
            break;
        if (t[i] == 1) {
            i++;
            continue;
        }
        if (t[i] == 5) {
            int k = (t[i + 1] - 2) / 8;
            for (int j = 0; j < k; j++) {
                b[j].start = rd32(t + i + 2 + 8 * j);
                b[j].end = rd32(t + i + 6 + 8 * j);
            }
            return k;
        }
        i += t[i + 1];
    }
    return 0;
}

/* Ten segments from a, the odd ones lost: b gets 0, 2, 4, 6, 8, 9 one at a time. Each
 * ACK after an out-of-order segment reports that segment's block first, then the blocks
 * of the ACK before, most recent first. Reported in sequence order instead, the fourth
 * hole's block (segments 8-9) would never be reported with timestamps (3 blocks fit). */
Test(tcp_sack, first_block_is_the_newest_then_the_most_recent)
{
    struct pair p;
    pair_init_filtered(&p, NULL, 256 * 1024, never);
    p.cli->nodelay = true;
    step(&p, 10 * T_MS);
    uint32_t seg = p.cli->mss - 12; /* timestamps on every segment */
    static uint8_t d[10 * 1448];
    cr_assert_eq(seg, 1448);
    cr_assert_eq(tbuf_write(&p.ca, d, sizeof(d)), sizeof(d));
    tcp_output(&p.a.st, p.cli);
    stest_step(&p.a, 0); /* flushes the batch to the (unlinked) sim NIC */
    struct pktbuf *segs[10];
    int ns = 0;
    struct pktbuf *pb;
    while (ns < 10 && (pb = nic_sim_take_tx(&p.a.nic)))
        segs[ns++] = pb;
    cr_assert_eq(ns, 10, "one flight of ten segments");
    uint32_t base = p.cli->snd_una;
    static const int order[] = {0, 2, 4, 6, 8, 9};
    /* Expected first blocks (in segments from base) and the blocks after them. */
    static const int want[][3][2] = {
        {{-1, -1}},
        {{2, 3}},
        {{4, 5}, {2, 3}},
        {{6, 7}, {4, 5}, {2, 3}},
        {{8, 9}, {6, 7}, {4, 5}},
        {{8, 10}, {6, 7}, {4, 5}},
    };
    static const int nwant[] = {0, 1, 2, 3, 3, 3};
    for (int i = 0; i < 6; i++) {
        pb = segs[order[i]];
        cr_assert_eq(nic_sim_inject(&p.b.nic, pktbuf_data(pb), pb->len), 0);
        stest_step(&p.b, 0);
        struct tcp_range got[4], last[4];
        int nlast = -1;
        while ((pb = nic_sim_take_tx(&p.b.nic))) {
            nlast = sack_of(pktbuf_data(pb), pb->len, last);
            memcpy(got, last, sizeof(got));
            pktbuf_free(pb);
        }
        cr_assert_geq(nlast, 0, "segment %d was not acknowledged at once", order[i]);
        cr_assert_eq(nlast, nwant[i], "after segment %d: %d blocks", order[i], nlast);
        for (int j = 0; j < nwant[i]; j++) {
            cr_assert_eq(got[j].start - base, (uint32_t)want[i][j][0] * seg,
                         "after segment %d, block %d starts at segment %.2f", order[i], j,
                         (double)(got[j].start - base) / seg);
            cr_assert_eq(got[j].end - base, (uint32_t)want[i][j][1] * seg,
                         "after segment %d, block %d ends at segment %.2f", order[i], j,
                         (double)(got[j].end - base) / seg);
        }
    }
    for (int i = 0; i < 10; i++)
        pktbuf_free(segs[i]);
    pair_fini(&p);
}

/* RFC 2883: a segment that arrives twice is reported in a D-SACK block, first in the
 * SACK option of the ACK it triggers, and only there. */
Test(tcp_sack, duplicate_segment_reported_once_as_dsack)
{
    struct pair p;
    pair_init_filtered(&p, NULL, 256 * 1024, never);
    step(&p, 10 * T_MS);
    static uint8_t d[1448];
    uint32_t base = p.cli->snd_nxt;
    cr_assert_eq(tbuf_write(&p.ca, d, sizeof(d)), sizeof(d));
    tcp_output(&p.a.st, p.cli);
    stest_step(&p.a, 0);
    struct pktbuf *seg = nic_sim_take_tx(&p.a.nic);
    cr_assert_not_null(seg);
    struct tcp_range b[4];
    struct pktbuf *pb;
    for (int round = 0; round < 3; round++) {
        cr_assert_eq(nic_sim_inject(&p.b.nic, pktbuf_data(seg), seg->len), 0);
        stest_step(&p.b, 0);
        int n = -1;
        while ((pb = nic_sim_take_tx(&p.b.nic))) {
            n = sack_of(pktbuf_data(pb), pb->len, b);
            pktbuf_free(pb);
        }
        if (round == 0) {
            cr_assert_eq(n, 0, "the first copy is acknowledged without SACK");
            continue;
        }
        cr_assert_eq(n, 1, "copy %d: %d blocks", round + 1, n);
        cr_assert_eq(b[0].start, base);
        cr_assert_eq(b[0].end, base + sizeof(d));
    }
    /* The next ACK (new data) carries no D-SACK. */
    pktbuf_free(seg);
    cr_assert_eq(tbuf_write(&p.ca, d, sizeof(d)), sizeof(d));
    tcp_output(&p.a.st, p.cli);
    stest_step(&p.a, 0);
    seg = nic_sim_take_tx(&p.a.nic);
    cr_assert_eq(nic_sim_inject(&p.b.nic, pktbuf_data(seg), seg->len), 0);
    pktbuf_free(seg);
    stest_step(&p.b, 50 * T_MS); /* past the delayed ACK */
    int n = -1;
    while ((pb = nic_sim_take_tx(&p.b.nic))) {
        n = sack_of(pktbuf_data(pb), pb->len, b);
        pktbuf_free(pb);
    }
    cr_assert_eq(n, 0);
    pair_fini(&p);
}

/* RFC 2883 4.1.2: a duplicate of data above RCV.NXT (out of order, already held) is
 * reported too: the D-SACK block first, the SACK block that holds it next. */
Test(tcp_sack, duplicate_above_rcv_nxt_reported_as_dsack)
{
    struct pair p;
    pair_init_filtered(&p, NULL, 256 * 1024, never);
    p.cli->nodelay = true;
    step(&p, 10 * T_MS);
    static uint8_t d[3 * 1448];
    cr_assert_eq(tbuf_write(&p.ca, d, sizeof(d)), sizeof(d));
    uint32_t base = p.cli->snd_nxt;
    tcp_output(&p.a.st, p.cli);
    stest_step(&p.a, 0);
    struct pktbuf *segs[3];
    for (int i = 0; i < 3; i++)
        cr_assert_not_null(segs[i] = nic_sim_take_tx(&p.a.nic));
    uint32_t seg = p.cli->mss - 12;
    struct tcp_range b[4];
    struct pktbuf *pb;
    for (int copy = 0; copy < 2; copy++) { /* segment 2 twice, segment 0 lost */
        cr_assert_eq(nic_sim_inject(&p.b.nic, pktbuf_data(segs[2]), segs[2]->len), 0);
        stest_step(&p.b, 0);
        int n = -1;
        while ((pb = nic_sim_take_tx(&p.b.nic))) {
            n = sack_of(pktbuf_data(pb), pb->len, b);
            pktbuf_free(pb);
        }
        if (copy == 0) {
            cr_assert_eq(n, 1);
            continue;
        }
        cr_assert_eq(n, 2, "the duplicate: %d blocks", n);
        cr_assert_eq(b[0].start, base + 2 * seg, "the D-SACK block first");
        cr_assert_eq(b[0].end, base + 3 * seg);
        cr_assert_eq(b[1].start, base + 2 * seg, "then the block that holds it");
        cr_assert_eq(b[1].end, base + 3 * seg);
    }
    for (int i = 0; i < 3; i++)
        pktbuf_free(segs[i]);
    pair_fini(&p);
}
