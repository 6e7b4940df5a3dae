/* BBR (stack/tcp_bbr.c) and pacing (tcp_output's gate), on two stacks over a sim link
 * with simulated time. */
#include <criterion/criterion.h>

#include "stack/tcp.h"
#include "tests/lib/stacktest.h"
#include "tests/lib/tcppair.h"
#include "tests/lib/tcptest.h"

/* Random loss both ways (2%) and 200 us of delay each way: the link of bench/fault.sh,
 * without its reordering. */
static const struct nic_fault_params lossy = {
    .enabled = true, .seed = 11, .loss = 0.02, .delay_us = 200, .rx = true, .tx = true};

static uint64_t transfer_with(const char *cc, uint64_t bytes)
{
    struct pair p;
    pair_init(&p, &lossy, 512 * 1024);
    cr_assert_eq(tcp_set_cc(p.cli, cc), 0);
    cr_assert_eq(tcp_set_cc(p.srv, cc), 0);
    uint64_t ms = transfer(&p, bytes, 600000); /* checks every byte both ways */
    cr_assert_lt(ms, 600000, "%s: the transfer did not finish", cc);
    pair_fini(&p);
    return ms;
}

/* CUBIC halves its window for every random loss (2% here: a window of a few segments);
 * BBR's window follows its model of the path, so it moves the same bytes in much less
 * time, every byte intact. */
Test(tcp_bbr, random_loss_does_not_shrink_the_window)
{
    uint64_t cubic = transfer_with("cubic", 8u << 20);
    uint64_t bbr = transfer_with("bbr", 8u << 20);
    cr_assert_lt(bbr * 2, cubic, "bbr %llu ms, cubic %llu ms", (unsigned long long)bbr,
                 (unsigned long long)cubic);
}

/* A paced connection sends at its rate, a timer tick's worth at a time, not its whole
 * window at once, and not less than the rate allows either. */
Test(tcp_bbr, pacing_spreads_segments_at_the_rate)
{
    struct pair p;
    pair_init(&p, NULL, 1024 * 1024);
    transfer(&p, 100000, 5000);
    static uint8_t d[400 * 1024];
    for (uint32_t i = 0; i < sizeof(d); i++)
        d[i] = pattern(i);
    cr_assert_eq(tbuf_write(&p.ca, d, sizeof(d)), sizeof(d));
    p.cli->cwnd = 1024 * 1024;             /* the window does not limit: the pace does */
    p.cli->pacing_rate = 20 * 1000 * 1000; /* 20 MB/s: 20000 bytes per ms */
    uint64_t b0 = stest_cnt(&p.a, "tcp_tx_data_bytes");
    tcp_output(&p.a.st, p.cli);
    uint64_t first = stest_cnt(&p.a, "tcp_tx_data_bytes") - b0;
    cr_assert_leq(first, 20000 + 2 * 1448, "a burst of %llu bytes at once",
                  (unsigned long long)first);
    for (int i = 0; i < 100; i++) /* 10 ms */
        step(&p, T_MS / 10);
    uint64_t sent = stest_cnt(&p.a, "tcp_tx_data_bytes") - b0;
    cr_assert_geq(sent, 9 * 20000, "%llu bytes in 10 ms", (unsigned long long)sent);
    cr_assert_leq(sent, 11 * 20000 + 2 * 1448, "%llu bytes in 10 ms", (unsigned long long)sent);
    p.cli->pacing_rate = 0;
    for (int i = 0; i < 2000 && p.cli->snd_una != p.cli->snd_max; i++)
        step(&p, T_MS / 10);
    static uint8_t got[sizeof(d)];
    cr_assert_eq(tbuf_read(&p.sb, got, sizeof(got)), sizeof(d));
    cr_assert_eq(memcmp(got, d, sizeof(d)), 0);
    pair_fini(&p);
}

/* The path's delay goes to delay_us each way (as a reload of the fault group does). */
static void set_delay(struct stest *t, uint32_t delay_us)
{
    struct nic_fault_params fp = {
        .enabled = true, .seed = 3, .delay_us = delay_us, .rx = true, .tx = true};
    nic_fault_destroy(t->nic.qfault[0]);
    t->nic.qfault[0] = t->nic.fault = nic_fault_create(&fp);
    cr_assert_not_null(t->nic.fault);
}

/* BBR sets a pacing rate from its bandwidth estimate once it has one. When the path's
 * delay rises (a route change, a queue elsewhere), no sample reaches the old minimum
 * again: 10 s after the last one it probes the RTT, the window at four segments for
 * 200 ms and a round (PROBE_RTT), then back to where it was. */
Test(tcp_bbr, paces_and_probes_rtt_when_the_minimum_is_old)
{
    struct pair p;
    static const struct nic_fault_params delay = {
        .enabled = true, .seed = 3, .delay_us = 100, .rx = true, .tx = true};
    pair_init(&p, &delay, 256 * 1024);
    cr_assert_eq(tcp_set_cc(p.cli, "bbr"), 0);
    static uint8_t chunk[4096];
    uint64_t sent = 0, rcvd = 0;
    uint32_t min_cwnd_late = UINT32_MAX, max_cwnd_after = 0;
    bool paced = false, slower = false;
    uint64_t t0 = p.a.now;
    while (p.a.now - t0 < 13 * 1000 * T_MS) {
        uint64_t el = p.a.now - t0;
        if (!slower && el > 1000 * T_MS) {
            set_delay(&p.a, 1000);
            set_delay(&p.b, 1000);
            slower = true;
        }
        /* 4 KiB per ms: an application that sends at 4 MB/s */
        for (uint32_t i = 0; i < sizeof(chunk); i++)
            chunk[i] = pattern(sent + i);
        sent += tbuf_write(&p.ca, chunk, sizeof(chunk));
        tcp_output(&p.a.st, p.cli);
        for (int k = 0; k < 4; k++)
            step(&p, T_MS / 4);
        uint32_t n;
        while ((n = tbuf_read(&p.sb, chunk, sizeof(chunk)))) {
            for (uint32_t i = 0; i < n; i++)
                cr_assert_eq(chunk[i], pattern(rcvd + i), "byte %llu",
                             (unsigned long long)(rcvd + i));
            rcvd += n;
            tcp_rcvd(&p.b.st, p.srv);
        }
        paced |= p.cli->pacing_rate > 0;
        if (el > 10500 * T_MS && el < 12000 * T_MS && p.cli->cwnd < min_cwnd_late)
            min_cwnd_late = p.cli->cwnd;
        if (el > 12500 * T_MS && p.cli->cwnd > max_cwnd_after)
            max_cwnd_after = p.cli->cwnd;
    }
    cr_assert(paced, "no pacing rate was set");
    cr_assert_gt(rcvd, 30u << 20, "only %llu bytes moved", (unsigned long long)rcvd);
    cr_assert_leq(min_cwnd_late, 4 * p.cli->mss, "no PROBE_RTT: cwnd %u", min_cwnd_late);
    cr_assert_gt(max_cwnd_after, 4 * p.cli->mss, "the window did not come back: %u",
                 max_cwnd_after);
    pair_fini(&p);
}
