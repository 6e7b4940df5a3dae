/* Fault injector: reproducibility, rates, and the semantics of each impairment. */
#include <criterion/criterion.h>
#include <string.h>

#include "nic/nic.h"

#define MS 1000000ull

static struct pktbuf_pool pool;
static struct stack_counters cnt;

static void setup(void)
{
    cr_assert_eq(pktbuf_pool_init(&pool, 4400, 256), 0);
    memset(&cnt, 0, sizeof(cnt));
}

static void teardown(void)
{
    pktbuf_pool_destroy(&pool);
}

TestSuite(fault, .init = setup, .fini = teardown);

/* A 100-byte frame: Ethernet header, then the sequence number, then a byte pattern. */
static struct pktbuf *mkframe(uint32_t seq)
{
    struct pktbuf *pb = pktbuf_alloc(&pool);
    cr_assert_not_null(pb);
    uint8_t *p = pktbuf_put(pb, 100);
    for (int i = 0; i < 100; i++)
        p[i] = (uint8_t)(i * 7 + 3);
    p[14] = (uint8_t)(seq >> 24);
    p[15] = (uint8_t)(seq >> 16);
    p[16] = (uint8_t)(seq >> 8);
    p[17] = (uint8_t)seq;
    return pb;
}

static uint32_t seq_of(const struct pktbuf *pb)
{
    const uint8_t *p = pktbuf_data(pb);
    return (uint32_t)p[14] << 24 | (uint32_t)p[15] << 16 | (uint32_t)p[16] << 8 | p[17];
}

static struct nic_fault *mk(struct nic_fault_params p)
{
    p.enabled = true;
    p.rx = p.tx = true;
    struct nic_fault *f = nic_fault_create(&p);
    cr_assert_not_null(f);
    return f;
}

/* Feed nframes one by one (time advancing 10 us per frame); record what comes out as a
 * hash over sequence numbers and bytes; return the number delivered. */
static int run_trace(struct nic_fault *f, int nframes, uint64_t *hash)
{
    uint64_t h = 1469598103934665603ull;
    int delivered = 0;
    uint64_t now = 1000 * MS;
    for (int i = 0; i < nframes + 200; i++, now += 10000) {
        struct pktbuf *in = i < nframes ? mkframe((uint32_t)i) : NULL;
        struct pktbuf *out[8];
        int m = nic_fault_apply(f, true, &in, in ? 1 : 0, out, 8, now, &cnt);
        for (int k = 0; k < m; k++) {
            const uint8_t *p = pktbuf_data(out[k]);
            for (uint32_t b = 0; b < out[k]->len; b++)
                h = (h ^ p[b]) * 1099511628211ull;
            pktbuf_free(out[k]);
            delivered++;
        }
    }
    *hash = h;
    return delivered;
}

Test(fault, same_seed_same_decisions)
{
    struct nic_fault_params p = {.seed = 42,
                                 .loss = 0.2,
                                 .duplicate = 0.1,
                                 .corrupt = 0.1,
                                 .reorder = 0.1,
                                 .delay_us = 50,
                                 .jitter_us = 30};
    uint64_t h1, h2, h3;
    struct nic_fault *a = mk(p), *b = mk(p);
    int n1 = run_trace(a, 2000, &h1);
    int n2 = run_trace(b, 2000, &h2);
    cr_assert_eq(n1, n2);
    cr_assert_eq(h1, h2, "same seed must give the same output");
    p.seed = 43;
    struct nic_fault *c = mk(p);
    run_trace(c, 2000, &h3);
    cr_assert_neq(h1, h3, "another seed must give other decisions");
    nic_fault_destroy(a);
    nic_fault_destroy(b);
    nic_fault_destroy(c);
    cr_assert_eq(pool.nfree, pool.count, "no frame leaked");
}

Test(fault, loss_rate)
{
    struct nic_fault *f = mk((struct nic_fault_params){.seed = 7, .loss = 0.2});
    int delivered = 0;
    for (int i = 0; i < 10000; i++) {
        struct pktbuf *in = mkframe((uint32_t)i), *out[2];
        int m = nic_fault_apply(f, false, &in, 1, out, 2, 0, &cnt);
        delivered += m;
        for (int k = 0; k < m; k++)
            pktbuf_free(out[k]);
    }
    /* sd = sqrt(10000 * 0.2 * 0.8) = 40 frames; allow ~4 sd */
    cr_assert(delivered > 7840 && delivered < 8160, "delivered %d of 10000 at 20%% loss",
              delivered);
    cr_assert_eq(cnt.fault_drop_loss, (uint64_t)(10000 - delivered));
    nic_fault_destroy(f);
    cr_assert_eq(pool.nfree, pool.count);
}

Test(fault, duplicate_copies_frame_and_overflows_to_next_call)
{
    struct nic_fault *f = mk((struct nic_fault_params){.seed = 1, .duplicate = 1.0});
    struct pktbuf *in[NIC_BURST], *out[NIC_BURST];
    for (int i = 0; i < NIC_BURST; i++)
        in[i] = mkframe((uint32_t)i);
    int m = nic_fault_apply(f, true, in, NIC_BURST, out, NIC_BURST, 0, &cnt);
    cr_assert_eq(m, NIC_BURST);
    cr_assert_eq(nic_fault_next(f), 0, "frames left over are due now");
    struct pktbuf *out2[NIC_BURST];
    int m2 = nic_fault_apply(f, true, NULL, 0, out2, NIC_BURST, 0, &cnt);
    cr_assert_eq(m2, NIC_BURST);
    cr_assert_eq(nic_fault_next(f), UINT64_MAX);
    cr_assert_eq(cnt.fault_dup, NIC_BURST);
    /* original then its copy, in order, with equal bytes and distinct buffers */
    struct pktbuf *all[2 * NIC_BURST];
    memcpy(all, out, sizeof(out));
    memcpy(all + NIC_BURST, out2, sizeof(out2));
    for (int i = 0; i < NIC_BURST; i++) {
        struct pktbuf *a = all[2 * i], *b = all[2 * i + 1];
        cr_assert_neq(a, b);
        cr_assert_eq(seq_of(a), (uint32_t)i);
        cr_assert_eq(a->len, b->len);
        cr_assert_arr_eq(pktbuf_data(a), pktbuf_data(b), a->len);
    }
    for (int i = 0; i < 2 * NIC_BURST; i++)
        pktbuf_free(all[i]);
    nic_fault_destroy(f);
    cr_assert_eq(pool.nfree, pool.count);
}

Test(fault, corrupt_flips_one_bit_beyond_ethernet_header)
{
    struct nic_fault *f = mk((struct nic_fault_params){.seed = 99, .corrupt = 1.0});
    struct pktbuf *ref = mkframe(0);
    bool seen_off[100] = {false};
    int distinct = 0;
    for (int i = 0; i < 300; i++) {
        struct pktbuf *in = mkframe(0), *out[1];
        cr_assert_eq(nic_fault_apply(f, false, &in, 1, out, 1, 0, &cnt), 1);
        const uint8_t *a = pktbuf_data(ref), *b = pktbuf_data(out[0]);
        int bits = 0, where = -1;
        for (int k = 0; k < 100; k++) {
            if (a[k] != b[k]) {
                bits += __builtin_popcount(a[k] ^ b[k]);
                where = k;
            }
        }
        cr_assert_eq(bits, 1, "exactly one bit must flip, got %d", bits);
        cr_assert_geq(where, 14, "corruption at %d, inside the Ethernet header", where);
        if (!seen_off[where]) {
            seen_off[where] = true;
            distinct++;
        }
        pktbuf_free(out[0]);
    }
    cr_assert_gt(distinct, 30, "offsets should be spread, saw %d", distinct);
    cr_assert_eq(cnt.fault_corrupt, 300);
    pktbuf_free(ref);
    nic_fault_destroy(f);
}

Test(fault, reorder_swaps_and_times_out)
{
    struct nic_fault *f = mk((struct nic_fault_params){.seed = 5, .reorder = 1.0});
    uint32_t order[4];
    int got = 0;
    for (uint32_t i = 0; i < 4; i++) {
        struct pktbuf *in = mkframe(i), *out[4];
        int m = nic_fault_apply(f, true, &in, 1, out, 4, 0, &cnt);
        for (int k = 0; k < m; k++) {
            order[got++] = seq_of(out[k]);
            pktbuf_free(out[k]);
        }
    }
    cr_assert_eq(got, 4);
    cr_assert(order[0] == 1 && order[1] == 0 && order[2] == 3 && order[3] == 2, "got %u %u %u %u",
              order[0], order[1], order[2], order[3]);
    cr_assert_eq(cnt.fault_reorder, 2);

    /* A held frame with no successor leaves after 1 ms. */
    struct pktbuf *in = mkframe(9), *out[2];
    uint64_t t0 = 5 * MS;
    cr_assert_eq(nic_fault_apply(f, true, &in, 1, out, 2, t0, &cnt), 0);
    cr_assert_eq(nic_fault_next(f), t0 + MS);
    cr_assert_eq(nic_fault_apply(f, true, NULL, 0, out, 2, t0 + MS - 1, &cnt), 0);
    cr_assert_eq(nic_fault_apply(f, true, NULL, 0, out, 2, t0 + MS, &cnt), 1);
    cr_assert_eq(seq_of(out[0]), 9);
    pktbuf_free(out[0]);
    cr_assert_eq(nic_fault_next(f), UINT64_MAX);
    nic_fault_destroy(f);
    cr_assert_eq(pool.nfree, pool.count);
}

Test(fault, delay_holds_until_due_and_keeps_order)
{
    struct nic_fault *f =
        mk((struct nic_fault_params){.seed = 3, .delay_us = 1000, .jitter_us = 800});
    uint64_t sent[200];
    uint64_t now = 10 * MS;
    uint32_t next_expected = 0;
    for (uint32_t i = 0; i < 200 || next_expected < 200; i++, now += 20000) {
        struct pktbuf *in = NULL, *out[16];
        if (i < 200) {
            in = mkframe(i);
            sent[i] = now;
        }
        uint64_t due = nic_fault_next(f);
        int m = nic_fault_apply(f, false, &in, in ? 1 : 0, out, 16, now, &cnt);
        if (m > 0)
            cr_assert_leq(due, now, "released before nic_fault_next said so");
        for (int k = 0; k < m; k++) {
            uint32_t s = seq_of(out[k]);
            cr_assert_eq(s, next_expected, "out of order: got %u, want %u", s, next_expected);
            cr_assert_geq(now, sent[s] + MS, "frame %u released %llu ns early", s,
                          (unsigned long long)(sent[s] + MS - now));
            next_expected++;
            pktbuf_free(out[k]);
        }
        cr_assert_lt(i, 1000u, "frames never released");
    }
    cr_assert_eq(cnt.fault_delay, 200);
    cr_assert_eq(nic_fault_next(f), UINT64_MAX);
    nic_fault_destroy(f);
}

Test(fault, delay_queue_full_drops_are_counted)
{
    struct nic_fault *f = mk((struct nic_fault_params){.seed = 3, .delay_us = 1000000});
    for (uint32_t i = 0; i < 4096 + 10; i++) {
        struct pktbuf *in = mkframe(i), *out[1];
        cr_assert_eq(nic_fault_apply(f, true, &in, 1, out, 1, 0, &cnt), 0);
    }
    cr_assert_eq(cnt.fault_drop_queue_full, 10);
    cr_assert_eq(cnt.fault_delay, 4096);
    cr_assert_eq(nic_fault_next(f), 1000 * MS);
    cr_assert_eq(pool.nfree, pool.count - 4096);
    nic_fault_destroy(f); /* held frames go back to their pool */
    cr_assert_eq(pool.nfree, pool.count);
}

Test(fault, direction_off_passes_through)
{
    struct nic_fault_params p = {.enabled = true, .seed = 1, .loss = 1.0, .rx = false, .tx = true};
    struct nic_fault *f = nic_fault_create(&p);
    struct pktbuf *in = mkframe(1), *out[1];
    cr_assert_eq(nic_fault_apply(f, false, &in, 1, out, 1, 0, &cnt), 1);
    pktbuf_free(out[0]);
    in = mkframe(2);
    cr_assert_eq(nic_fault_apply(f, true, &in, 1, out, 1, 0, &cnt), 0);
    cr_assert_eq(cnt.fault_drop_loss, 1);
    nic_fault_destroy(f);
    cr_assert_eq(pool.nfree, pool.count);
}

Test(fault, null_counters_are_fine)
{
    struct nic_fault *f = mk((struct nic_fault_params){.seed = 2, .loss = 1.0});
    struct pktbuf *in = mkframe(1), *out[1];
    cr_assert_eq(nic_fault_apply(f, true, &in, 1, out, 1, 0, NULL), 0);
    nic_fault_destroy(f);
    cr_assert_eq(pool.nfree, pool.count);
}
