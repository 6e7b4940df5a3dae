/* sim backend and the generic nic wrappers (counters, poll fd, nic_wait, fault hooks). */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "nic/nic.h"

#define MS 1000000ull

static struct pktbuf_pool pa, pb_pool;
static struct stack_counters ca, cb;
static struct nic a, b;

static void open_sim(struct nic *n, const char *name, struct nic_fault_params *fp)
{
    struct nic_params p = {.backend = "sim", .mtu = 1500};
    strcpy(p.name, name);
    if (fp)
        p.fault = *fp;
    cr_assert_eq(nic_open(n, &p), 0);
}

static void setup(void)
{
    cr_assert_eq(pktbuf_pool_init(&pa, 4200, 2048), 0);
    cr_assert_eq(pktbuf_pool_init(&pb_pool, 8, 2048), 0);
    memset(&ca, 0, sizeof(ca));
    memset(&cb, 0, sizeof(cb));
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
}

static void teardown(void)
{
    nic_close(&a);
    nic_close(&b);
    pktbuf_pool_destroy(&pa);
    pktbuf_pool_destroy(&pb_pool);
}

TestSuite(nic_sim, .init = setup, .fini = teardown);

static void frame(uint8_t *f, uint32_t len, uint8_t tag)
{
    for (uint32_t i = 0; i < len; i++)
        f[i] = (uint8_t)(i ^ tag);
}

static struct pktbuf *mkpb(struct pktbuf_pool *p, uint32_t len, uint8_t tag)
{
    struct pktbuf *x = pktbuf_alloc(p);
    cr_assert_not_null(x);
    frame(pktbuf_put(x, len), len, tag);
    return x;
}

static bool readable(int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    return poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLIN);
}

Test(nic_sim, find_ops)
{
    cr_assert_not_null(nic_find_ops("sim"));
    cr_assert_not_null(nic_find_ops("tap"));
    cr_assert_not_null(nic_find_ops("af_xdp"));
    cr_assert_null(nic_find_ops("bogus"));
    struct nic x;
    struct nic_params p = {.backend = "bogus"};
    cr_assert_lt(nic_open(&x, &p), 0);
}

Test(nic_sim, inject_rx_and_take_tx)
{
    open_sim(&a, "a", NULL);
    nic_bind_queue(&a, 0, &pa, &ca);
    uint8_t f[100];
    frame(f, sizeof(f), 1);
    cr_assert_eq(nic_sim_inject(&a, f, sizeof(f)), 0);
    cr_assert_eq(nic_sim_inject(&a, f, 60), 0);
    struct pktbuf *pk[8];
    cr_assert_eq(nic_rx(&a, 0, pk, 8, 5), 2);
    cr_assert_eq(pk[0]->len, 100);
    cr_assert_arr_eq(pktbuf_data(pk[0]), f, 100);
    cr_assert_eq(pk[1]->len, 60);
    cr_assert_eq(pk[0]->ts, 5);
    cr_assert_eq(pktbuf_headroom(pk[0]), PKTBUF_HEADROOM);
    cr_assert_eq(ca.nic_rx_frames, 2);
    cr_assert_eq(ca.nic_rx_bytes, 160);
    cr_assert_eq(nic_rx(&a, 0, pk + 2, 8, 5), 0);

    cr_assert_eq(nic_tx(&a, 0, pk, 2, 6), 2);
    cr_assert_eq(nic_flush(&a, 0, 6), 0);
    cr_assert_eq(ca.nic_tx_frames, 2);
    cr_assert_eq(ca.nic_tx_bytes, 160);
    cr_assert_eq(nic_sim_tx_pending(&a), 2);
    struct pktbuf *t = nic_sim_take_tx(&a);
    cr_assert_eq(t, pk[0], "unlinked TX keeps the very buffer, in order");
    pktbuf_free(t);
    pktbuf_free(nic_sim_take_tx(&a));
    cr_assert_null(nic_sim_take_tx(&a));
    cr_assert_eq(pa.nfree, pa.count);
}

Test(nic_sim, link_copies_frames_to_peer)
{
    open_sim(&a, "a", NULL);
    open_sim(&b, "b", NULL);
    nic_bind_queue(&a, 0, &pa, &ca);
    nic_bind_queue(&b, 0, &pb_pool, &cb);
    nic_sim_link(&a, &b);
    struct pktbuf *x[3] = {mkpb(&pa, 64, 1), mkpb(&pa, 70, 2), mkpb(&pa, 80, 3)};
    cr_assert_eq(nic_tx(&a, 0, x, 3, 0), 3);
    cr_assert_eq(pa.nfree, pa.count, "the originals are completed at once");
    cr_assert_eq(nic_sim_tx_pending(&a), 0);
    struct pktbuf *r[4];
    cr_assert_eq(nic_rx(&b, 0, r, 4, 1), 3);
    uint8_t f[80];
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(r[i]->pool, &pb_pool, "copied into the receiver's pool");
        frame(f, r[i]->len, (uint8_t)(i + 1));
        cr_assert_arr_eq(pktbuf_data(r[i]), f, r[i]->len);
    }
    cr_assert_eq(r[2]->len, 80);
    /* and back the other way */
    cr_assert_eq(nic_tx(&b, 0, r, 1, 2), 1);
    struct pktbuf *back[2];
    cr_assert_eq(nic_rx(&a, 0, back, 2, 3), 1);
    frame(f, 64, 1);
    cr_assert_arr_eq(pktbuf_data(back[0]), f, 64);
    pktbuf_free(back[0]);
    pktbuf_free(r[1]);
    pktbuf_free(r[2]);
    cr_assert_eq(pb_pool.nfree, pb_pool.count);
}

Test(nic_sim, peer_pool_empty_counts_nobuf)
{
    open_sim(&a, "a", NULL);
    open_sim(&b, "b", NULL);
    nic_bind_queue(&a, 0, &pa, &ca);
    nic_bind_queue(&b, 0, &pb_pool, &cb); /* 8 buffers */
    nic_sim_link(&a, &b);
    struct pktbuf *x[12];
    for (int i = 0; i < 12; i++)
        x[i] = mkpb(&pa, 60, (uint8_t)i);
    cr_assert_eq(nic_tx(&a, 0, x, 12, 0), 12);
    cr_assert_eq(cb.nic_rx_drop_nobuf, 4);
    struct pktbuf *r[16];
    int got = nic_rx(&b, 0, r, 16, 0);
    cr_assert_eq(got, 8);
    for (int i = 0; i < got; i++)
        pktbuf_free(r[i]);
    /* inject also counts, and tolerates unbound counters */
    uint8_t f[60] = {0};
    for (int i = 0; i < 8; i++)
        cr_assert_eq(nic_sim_inject(&b, f, 60), 0);
    cr_assert_eq(nic_sim_inject(&b, f, 60), -ENOBUFS);
    cr_assert_eq(cb.nic_rx_drop_nobuf, 5);
    b.cnt[0] = NULL;
    cr_assert_eq(nic_sim_inject(&b, f, 60), -ENOBUFS);
}

Test(nic_sim, poll_fd_readable_on_edge_and_drained_when_empty)
{
    open_sim(&a, "a", NULL);
    nic_bind_queue(&a, 0, &pa, NULL); /* counters may be NULL */
    int fd = a.ops->poll_fd(&a, 0);
    cr_assert_geq(fd, 0);
    cr_assert_not(readable(fd));
    uint8_t f[60] = {0};
    cr_assert_eq(nic_sim_inject(&a, f, 60), 0);
    cr_assert(readable(fd));
    cr_assert_eq(nic_sim_inject(&a, f, 60), 0);
    uint64_t v;
    /* Edge-triggered: two frames, one write. Peek the counter without draining. */
    struct pktbuf *pk[2];
    cr_assert_eq(nic_rx(&a, 0, pk, 1, 0), 1);
    cr_assert(readable(fd), "still frames queued");
    cr_assert_eq(nic_rx(&a, 0, pk + 1, 1, 0), 1);
    cr_assert_not(readable(fd), "drained when RX emptied");
    cr_assert_eq(read(fd, &v, sizeof(v)), -1);
    pktbuf_free(pk[0]);
    pktbuf_free(pk[1]);

    /* nic_wait returns at once when RX is pending, and times out otherwise. */
    struct nic *ns[1] = {&a};
    uint16_t qs[1] = {0};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_assert_eq(nic_wait(ns, qs, 1, -1, 20 * MS), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    int64_t el = (t1.tv_sec - t0.tv_sec) * 1000000000ll + (t1.tv_nsec - t0.tv_nsec);
    cr_assert_geq(el, (int64_t)(19 * MS), "nic_wait returned after %lld ns", (long long)el);
    cr_assert_eq(nic_sim_inject(&a, f, 60), 0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_assert_eq(nic_wait(ns, qs, 1, -1, 5000 * MS), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    el = (t1.tv_sec - t0.tv_sec) * 1000000000ll + (t1.tv_nsec - t0.tv_nsec);
    cr_assert_lt(el, (int64_t)(1000 * MS), "nic_wait slept with RX pending");
    cr_assert_eq(nic_rx(&a, 0, pk, 2, 0), 1);
    pktbuf_free(pk[0]);

    /* the wake fd alone wakes it */
    int wfd = eventfd(1, EFD_CLOEXEC);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_assert_eq(nic_wait(ns, qs, 1, wfd, UINT64_MAX), 1, "reports the wake fd");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    el = (t1.tv_sec - t0.tv_sec) * 1000000000ll + (t1.tv_nsec - t0.tv_nsec);
    cr_assert_lt(el, (int64_t)(1000 * MS));
    close(wfd);
}

Test(nic_sim, tx_queue_bound_counts_drop_full)
{
    open_sim(&a, "a", NULL);
    nic_bind_queue(&a, 0, &pa, &ca);
    int sent = 0;
    struct pktbuf *x[NIC_BURST];
    for (int round = 0; round < 4100 / NIC_BURST + 1; round++) {
        for (int i = 0; i < NIC_BURST; i++)
            x[i] = mkpb(&pa, 60, 0);
        sent += nic_tx(&a, 0, x, NIC_BURST, 0);
    }
    int offered = (4100 / NIC_BURST + 1) * NIC_BURST;
    cr_assert_eq(sent, 4096);
    cr_assert_eq(ca.nic_tx_frames, 4096);
    cr_assert_eq(ca.nic_tx_drop_full, (uint64_t)(offered - 4096));
    cr_assert_eq(pa.nfree, pa.count - 4096, "refused frames were freed");
}

Test(nic_sim, fault_delay_through_nic_wrappers)
{
    struct nic_fault_params fp = {
        .enabled = true, .seed = 9, .delay_us = 2000, .rx = true, .tx = true};
    open_sim(&a, "a", &fp);
    open_sim(&b, "b", NULL);
    nic_bind_queue(&a, 0, &pa, &ca);
    nic_bind_queue(&b, 0, &pb_pool, &cb);
    nic_sim_link(&a, &b);
    cr_assert_eq(nic_next_event(&b), UINT64_MAX);

    /* TX delay: held by the injector, released by nic_flush once due. */
    struct pktbuf *x = mkpb(&pa, 60, 7);
    uint64_t t = 100 * MS;
    cr_assert_eq(nic_tx(&a, 0, &x, 1, t), 0);
    cr_assert_eq(nic_next_event(&a), t + 2 * MS);
    cr_assert_eq(nic_flush(&a, 0, t + 2 * MS - 1), 0);
    struct pktbuf *r[4];
    cr_assert_eq(nic_rx(&b, 0, r, 4, t), 0);
    cr_assert_eq(nic_flush(&a, 0, t + 2 * MS), 0);
    cr_assert_eq(ca.nic_tx_frames, 1);
    cr_assert_eq(nic_rx(&b, 0, r, 4, t + 2 * MS), 1);
    pktbuf_free(r[0]);

    /* RX delay: the frame arrives, waits, and comes out of a later nic_rx. */
    uint8_t f[60] = {0};
    cr_assert_eq(nic_sim_inject(&a, f, 60), 0);
    cr_assert_eq(nic_rx(&a, 0, r, 4, t), 0);
    cr_assert_eq(ca.nic_rx_frames, 1, "counted when the device delivered it");
    cr_assert_eq(nic_next_event(&a), t + 2 * MS);
    cr_assert_eq(nic_rx(&a, 0, r, 4, t + MS), 0);
    cr_assert_eq(nic_rx(&a, 0, r, 4, t + 2 * MS), 1);
    cr_assert_eq(r[0]->ts, t + 2 * MS, "stamped when delivered to the stack");
    pktbuf_free(r[0]);
    cr_assert_eq(ca.fault_delay, 2);

    /* Frames still held are returned to their pool on close. */
    x = mkpb(&pa, 60, 8);
    cr_assert_eq(nic_tx(&a, 0, &x, 1, t), 0);
    nic_close(&a);
    cr_assert_eq(pa.nfree, pa.count);
}

Test(nic_sim, close_returns_queued_frames)
{
    open_sim(&a, "a", NULL);
    open_sim(&b, "b", NULL);
    nic_bind_queue(&a, 0, &pa, &ca);
    nic_bind_queue(&b, 0, &pb_pool, &cb);
    uint8_t f[60] = {0};
    cr_assert_eq(nic_sim_inject(&a, f, 60), 0);
    struct pktbuf *x = mkpb(&pa, 60, 1);
    cr_assert_eq(nic_tx(&a, 0, &x, 1, 0), 1);
    nic_sim_link(&a, &b);
    nic_close(&b); /* unlinks a */
    x = mkpb(&pa, 60, 2);
    cr_assert_eq(nic_tx(&a, 0, &x, 1, 0), 1, "unlinked again: frame queued for take_tx");
    cr_assert_eq(nic_sim_tx_pending(&a), 2);
    nic_close(&a);
    cr_assert_eq(pa.nfree, pa.count);
    cr_assert_eq(pb_pool.nfree, pb_pool.count);
}

/* One window of the steering rule: busy percent, bytes per frame, bytes moved. Returns
 * the state after it. */
static bool step(struct nic_steer_state *st, unsigned pct, uint64_t per_frame, uint64_t bytes)
{
    const uint64_t w = NIC_STEER_WINDOW_NS;
    nic_steer_step(st, w * pct / 100, w, bytes / per_frame, bytes);
    return st->on;
}

/* The adaptive steering rule (rps_cpus = "auto"), no backend needed: on after three
 * saturated (70% busy) windows of bulk frames inline; steered, a probe inline every
 * NIC_STEER_PROBE bulk windows (the switching window skipped, the next one measured)
 * steers again only if saturated inline; small frames end it and never start it; idle
 * windows change nothing. */
Test(nic_sim, steer_follows_the_inline_busy_share)
{
    struct nic_steer_state st = {0};
    const uint64_t big = 40000, small = 100, mb = 1000000;

    cr_assert(!step(&st, 100, big, 100 * mb) && !step(&st, 90, big, 100 * mb));
    cr_assert(!step(&st, 69, big, 100 * mb)); /* the count restarts */
    cr_assert(!step(&st, 22, big, 100 * mb)); /* one stream: never saturated */
    cr_assert(!step(&st, 80, big, 100 * mb) && !step(&st, 80, big, 100 * mb));
    cr_assert(step(&st, 80, big, 100 * mb));
    /* Steered: the busy share does not matter; idle windows keep the state. */
    for (unsigned i = 1; i < NIC_STEER_PROBE; i++) {
        cr_assert(step(&st, i % 2 ? 20 : 50, big, 100 * mb));
        cr_assert(step(&st, 0, big, 0));
    }
    /* The probe: inline, the switching window skipped, then saturated: steered again. */
    cr_assert(!step(&st, 40, big, 100 * mb));
    cr_assert(!step(&st, 10, big, 100 * mb));
    cr_assert(step(&st, 84, big, 100 * mb));
    /* Next probe finds one stream (22% inline): stays inline, and only three saturated
     * windows steer again. */
    for (unsigned i = 1; i < NIC_STEER_PROBE; i++)
        cr_assert(step(&st, 30, big, 100 * mb));
    cr_assert(!step(&st, 30, big, 100 * mb));
    cr_assert(!step(&st, 90, big, 100 * mb));
    cr_assert(!step(&st, 22, big, 100 * mb));
    cr_assert(!step(&st, 90, big, 100 * mb) && !step(&st, 90, big, 100 * mb));
    cr_assert(step(&st, 90, big, 100 * mb));
    /* Small frames end it at once, and never start it. */
    cr_assert(!step(&st, 100, small, 10 * mb));
    for (int i = 0; i < 10; i++)
        cr_assert(!step(&st, 100, small, 10 * mb));
    cr_assert(!step(&st, 100, NIC_STEER_BULK_BYTES - 1, 100 * mb));
    /* An empty window changes nothing. */
    st = (struct nic_steer_state){.on = true};
    cr_assert(!nic_steer_step(&st, 0, 0, 0, 0) && st.on);
}
