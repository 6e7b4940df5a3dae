/* TCP between two stacks on a sim link (and against literal segments): handshakes, data
 * both ways, loss and reordering recovery, close sequences, resets, timers. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>

#include "stack/tcp.h"
#include "tests/lib/stacktest.h"
#include "tests/lib/tcppair.h"
#include "tests/lib/tcptest.h"

Test(tcp, handshake_negotiates_options)
{
    struct pair p;
    pair_init(&p, NULL, 256 * 1024);
    cr_assert(p.cli->ts_ok && p.cli->sack_ok && p.cli->ws_ok);
    cr_assert(p.srv->ts_ok && p.srv->sack_ok && p.srv->ws_ok);
    cr_assert_eq(p.cli->mss, 1460);
    cr_assert_eq(p.srv->mss, 1460);
    cr_assert_eq(p.srv->state, TCPS_ESTABLISHED);
    cr_assert_eq(p.cli->snd_una, p.srv->rcv_nxt);
    cr_assert_eq(p.srv->snd_una, p.cli->rcv_nxt);
    pair_fini(&p);
}

Test(tcp, bulk_both_ways_clean)
{
    struct pair p;
    pair_init(&p, NULL, 256 * 1024);
    transfer(&p, 4u << 20, 20000);
    cr_assert_eq(p.cli->total_retrans, 0);
    pair_fini(&p);
}

Test(tcp, bulk_with_loss_reorder_duplicates_corruption)
{
    struct nic_fault_params fp = {.enabled = true,
                                  .seed = 9,
                                  .loss = 0.02,
                                  .reorder = 0.02,
                                  .duplicate = 0.01,
                                  .corrupt = 0.005,
                                  .rx = true,
                                  .tx = true};
    struct pair p;
    pair_init(&p, &fp, 256 * 1024);
    transfer(&p, 2u << 20, 120000);
    cr_assert_gt(p.cli->total_retrans + p.srv->total_retrans, 0, "losses were repaired");
    pair_fini(&p);
}

Test(tcp, bulk_with_loss_newreno_no_sack)
{
    struct nic_fault_params fp = {.enabled = true, .seed = 4, .loss = 0.02, .rx = true, .tx = true};
    struct stack_params sp;
    stack_params_defaults(&sp);
    sp.pktbufs = 1024;
    sp.tcp_sack = false;
    sp.tcp_timestamps = false;
    snprintf(sp.tcp_cc, sizeof(sp.tcp_cc), "newreno");
    struct pair p;
    pair_init_with(&p, &sp, &fp, 128 * 1024, NULL, NULL);
    cr_assert_not(p.cli->sack_ok);
    cr_assert_eq(strcmp(p.cli->cc->name, "newreno"), 0);
    transfer(&p, 1u << 20, 200000);
    pair_fini(&p);
}

Test(tcp, orderly_close_both_sides)
{
    struct pair p;
    pair_init(&p, NULL, 64 * 1024);
    tbuf_write(&p.ca, (const uint8_t *)"bye", 3);
    tcp_output(&p.a.st, p.cli);
    tcp_shutdown(&p.a.st, p.cli, 1);
    for (int i = 0; i < 100; i++)
        step(&p, T_MS);
    cr_assert_eq(p.srv->state, TCPS_CLOSE_WAIT);
    cr_assert_eq(p.sb.events[TCP_EV_FIN], 1);
    uint8_t d[8];
    cr_assert_eq(tbuf_read(&p.sb, d, 8), 3);
    cr_assert_eq(p.cli->state, TCPS_FIN_WAIT_2);
    /* Half-close: the server can still send. */
    tbuf_write(&p.sb, (const uint8_t *)"late", 4);
    tcp_output(&p.b.st, p.srv);
    step(&p, T_MS);
    step(&p, T_MS);
    cr_assert_eq(tbuf_read(&p.ca, d, 8), 4);
    tcp_close(&p.b.st, p.srv);
    p.srv = NULL;
    for (int i = 0; i < 100; i++)
        step(&p, T_MS);
    cr_assert_eq(p.cli->state, TCPS_TIME_WAIT);
    cr_assert_eq(p.sb.closed_err, 0, "server side closed in order");
    cr_assert_eq(tcp_count(&p.b.st), 0, "LAST_ACK done");
    tcp_close(&p.a.st, p.cli);
    p.cli = NULL;
    step(&p, 61 * T_SEC);
    cr_assert_eq(tcp_count(&p.a.st), 0, "TIME_WAIT expired");
    pair_fini(&p);
}

Test(tcp, rst_on_abort_and_refused_connect)
{
    struct pair p;
    pair_init(&p, NULL, 64 * 1024);
    tcp_abort(&p.b.st, p.srv);
    p.srv = NULL;
    step(&p, T_MS);
    step(&p, T_MS);
    cr_assert_eq(p.ca.closed_err, ECONNRESET);
    cr_assert_eq(p.cli->state, TCPS_CLOSED);
    tcp_close(&p.a.st, p.cli);
    p.cli = NULL;
    /* Connect to a closed port: ECONNREFUSED. */
    struct tbuf c;
    tbuf_init(&c, 1024, 1024);
    struct tcp_pcb *x = tcp_new(&p.a.st, &tbuf_ops, tbuf_event, &c);
    cr_assert_eq(tcp_connect(&p.a.st, x, ADDR_B, 81), 0);
    step(&p, T_MS);
    step(&p, T_MS);
    cr_assert_eq(c.closed_err, ECONNREFUSED);
    tcp_close(&p.a.st, x);
    tbuf_free(&c);
    pair_fini(&p);
}

Test(tcp, zero_window_then_resume)
{
    struct pair p;
    pair_init(&p, NULL, 64 * 1024);
    static uint8_t big[200000];
    for (uint32_t i = 0; i < sizeof(big); i++)
        big[i] = pattern(i);
    uint32_t sent = tbuf_write(&p.ca, big, sizeof(big));
    tcp_output(&p.a.st, p.cli);
    /* The server does not read: its window closes; the client probes. */
    for (int i = 0; i < 30000; i++)
        step(&p, T_MS);
    cr_assert_lt(p.cli->snd_wnd, p.cli->mss, "the window closed (to less than a segment)");
    cr_assert(timer_armed(&p.cli->t_rtx), "probing");
    cr_assert_eq(p.cli->state, TCPS_ESTABLISHED, "probing never gives up on its own");
    uint8_t out[200000];
    uint32_t got = 0;
    for (int i = 0; i < 30000 && got < sent; i++) {
        uint32_t n = tbuf_read(&p.sb, out + got, sizeof(out) - got);
        got += n;
        if (n)
            tcp_rcvd(&p.b.st, p.srv);
        sent += tbuf_write(&p.ca, big + sent, sizeof(big) - sent);
        tcp_output(&p.a.st, p.cli);
        step(&p, T_MS);
    }
    cr_assert_eq(got, sizeof(big));
    cr_assert_eq(memcmp(out, big, sizeof(big)), 0);
    pair_fini(&p);
}

Test(tcp, blind_rst_and_syn_get_challenge_acks)
{
    struct pair p;
    pair_init(&p, NULL, 64 * 1024);
    /* Inject a RST to the server's connection with an in-window but inexact sequence. */
    uint8_t seg[20] = {0};
    wr16(seg, p.cli->lport);
    wr16(seg + 2, 80);
    wr32(seg + 4, p.srv->rcv_nxt + 100);
    seg[12] = 5 << 4;
    seg[13] = TCP_RST;
    wr16(seg + 14, 1000);
    wr16(seg + 16, csum_fold(csum_partial(seg, 20, csum_pseudo4(ST_ADDR_A, ADDR_B, 6, 20))));
    uint8_t f[100];
    uint32_t n = build_ip4(f, mac_b, st_mac_a, ST_ADDR_A, ADDR_B, 6, 1, 0, 64, seg, 20);
    cr_assert_eq(nic_sim_inject(&p.b.nic, f, n), 0);
    stest_step(&p.b, 0);
    cr_assert_eq(p.srv->state, TCPS_ESTABLISHED);
    cr_assert_eq(stest_cnt(&p.b, "tcp_drop_rst_inwindow"), 1);
    cr_assert_eq(stest_cnt(&p.b, "tcp_challenge_ack"), 1);
    /* A SYN on the established connection: challenge ACK, no reset. */
    seg[13] = TCP_SYN;
    wr16(seg + 16, 0);
    wr16(seg + 16, csum_fold(csum_partial(seg, 20, csum_pseudo4(ST_ADDR_A, ADDR_B, 6, 20))));
    n = build_ip4(f, mac_b, st_mac_a, ST_ADDR_A, ADDR_B, 6, 2, 0, 64, seg, 20);
    nic_sim_inject(&p.b.nic, f, n);
    stest_step(&p.b, 0);
    cr_assert_eq(p.srv->state, TCPS_ESTABLISHED);
    cr_assert_eq(stest_cnt(&p.b, "tcp_drop_syn_inwindow"), 1);
    /* The connection still works. */
    step(&p, T_MS);
    transfer(&p, 10000, 1000);
    pair_fini(&p);
}

Test(tcp, syn_cookies_when_queue_full)
{
    struct stack_params sp;
    stack_params_defaults(&sp);
    sp.pktbufs = 1024;
    sp.tcp_max_syn_backlog = 1;
    struct pair p;
    memset(&p, 0, sizeof(p));
    stest_init_addr(&p.a, NULL, ST_ADDR_A, st_mac_a, NULL);
    stest_init_addr(&p.b, &sp, ADDR_B, mac_b, NULL);
    p.b.now = p.a.now;
    nic_sim_link(&p.a.nic, &p.b.nic);
    tbuf_init(&p.lb, 128 * 1024, 128 * 1024);
    tbuf_init(&p.sb, 65536, 65536);
    p.lis = tcp_new(&p.b.st, &tbuf_ops, tbuf_event, &p.lb);
    tcp_bind(&p.b.st, p.lis, 0, 80);
    tcp_listen(&p.b.st, p.lis, 8, on_accept, &p);
    /* Fill the SYN queue with a half-open connection from a silent address. */
    uint8_t syn[20] = {0};
    wr16(syn, 5555);
    wr16(syn + 2, 80);
    wr32(syn + 4, 777);
    syn[12] = 5 << 4;
    syn[13] = TCP_SYN;
    wr16(syn + 14, 1000);
    wr16(syn + 16, csum_fold(csum_partial(syn, 20, csum_pseudo4(0x0ac80063, ADDR_B, 6, 20))));
    uint8_t f[100];
    uint32_t n = build_ip4(f, mac_b, st_mac_peer, 0x0ac80063, ADDR_B, 6, 1, 0, 64, syn, 20);
    nic_sim_inject(&p.b.nic, f, n);
    stest_step(&p.b, 0);
    cr_assert_eq(p.lis->syn_qlen, 1);
    /* A real client now connects through a cookie. */
    tbuf_init(&p.ca, 65536, 65536);
    p.cli = tcp_new(&p.a.st, &tbuf_ops, tbuf_event, &p.ca);
    tcp_connect(&p.a.st, p.cli, ADDR_B, 80);
    for (int i = 0; i < 100 && !p.lis->acc_qlen; i++)
        step(&p, T_MS);
    cr_assert_eq(stest_cnt(&p.b, "tcp_syncookies_sent"), 1);
    cr_assert_eq(stest_cnt(&p.b, "tcp_syncookies_ok"), 1);
    p.srv = tcp_accept(&p.b.st, p.lis);
    cr_assert_not_null(p.srv);
    transfer(&p, 100000, 5000);
    pair_fini(&p);
}

Test(tcp, connect_timeout_with_retries)
{
    struct stest a;
    stest_init(&a, NULL);
    stest_learn_peer(&a);
    struct tbuf c;
    tbuf_init(&c, 1024, 1024);
    struct tcp_pcb *x = tcp_new(&a.st, &tbuf_ops, tbuf_event, &c);
    cr_assert_eq(tcp_connect(&a.st, x, ST_ADDR_PEER, 80), 0);
    int syns = 0;
    for (int i = 0; i < 300 && c.closed_err < 0; i++) {
        stest_step(&a, T_SEC);
        uint8_t fr[200];
        while (stest_tx_ip(&a, fr, sizeof(fr)))
            syns++;
    }
    cr_assert_eq(c.closed_err, ETIMEDOUT);
    cr_assert_eq(syns, 7, "1 SYN + tcp_syn_retries (6)");
    tcp_close(&a.st, x);
    tbuf_free(&c);
    stest_fini(&a);
}

/* Half-close after bulk data on a lossy link, several seeds: the FIN may be acknowledged
 * after an RTO rewound the send pointer; the send buffer must release exactly the data. */
Test(tcp, fin_after_data_under_loss_releases_exact_bytes)
{
    for (uint64_t seed = 1; seed <= 6; seed++) {
        struct nic_fault_params fp = {
            .enabled = true, .seed = seed, .loss = 0.05, .reorder = 0.02, .rx = true, .tx = true};
        struct pair p;
        pair_init(&p, &fp, 64 * 1024);
        static uint8_t data[300000], got[300000];
        for (uint32_t i = 0; i < sizeof(data); i++)
            data[i] = pattern(i);
        uint32_t sent = 0, recvd = 0;
        bool shut = false;
        for (int i = 0; i < 200000 && !(recvd == sizeof(data) && p.sb.events[TCP_EV_FIN]); i++) {
            sent += tbuf_write(&p.ca, data + sent, sizeof(data) - sent);
            tcp_output(&p.a.st, p.cli);
            if (sent == sizeof(data) && !shut) {
                tcp_shutdown(&p.a.st, p.cli, 1);
                shut = true;
            }
            uint32_t n = tbuf_read(&p.sb, got + recvd, sizeof(got) - recvd);
            recvd += n;
            if (n)
                tcp_rcvd(&p.b.st, p.srv);
            step(&p, T_MS);
        }
        cr_assert_eq(recvd, sizeof(data), "seed %llu", (unsigned long long)seed);
        cr_assert_eq(memcmp(got, data, sizeof(data)), 0);
        cr_assert(p.sb.events[TCP_EV_FIN], "seed %llu: FIN delivered", (unsigned long long)seed);
        for (int i = 0; i < 20000 && p.cli->state != TCPS_FIN_WAIT_2; i++)
            step(&p, T_MS);
        cr_assert_eq(p.cli->state, TCPS_FIN_WAIT_2, "seed %llu", (unsigned long long)seed);
        cr_assert_eq(p.ca.snd_head, p.ca.snd_tail, "seed %llu: exactly the data was released",
                     (unsigned long long)seed);
        pair_fini(&p);
    }
}

/* Active close after a request/response: exactly FIN and the last ACK leave the closer,
 * which then sits in TIME_WAIT (a stray ACK after it would draw a RST from the peer). */
Test(tcp, active_close_sends_fin_and_one_last_ack)
{
    struct pair p;
    pair_init(&p, NULL, 4096);
    tbuf_write(&p.ca, (const uint8_t *)"x", 1);
    tcp_output(&p.a.st, p.cli);
    for (int i = 0; i < 5; i++)
        step(&p, T_MS);
    uint8_t d;
    cr_assert_eq(tbuf_read(&p.sb, &d, 1), 1);
    tbuf_write(&p.sb, &d, 1);
    tcp_output(&p.b.st, p.srv);
    for (int i = 0; i < 5; i++)
        step(&p, T_MS);
    cr_assert_eq(tbuf_read(&p.ca, &d, 1), 1);
    uint64_t t0 = p.a.st.cnt.tcp_tx;
    struct tcp_pcb *c = p.cli;
    tcp_close(&p.a.st, c);
    p.cli = NULL;
    for (int i = 0; i < 5; i++)
        step(&p, T_MS);
    cr_assert_eq(p.sb.events[TCP_EV_FIN], 1);
    tcp_close(&p.b.st, p.srv);
    p.srv = NULL;
    for (int i = 0; i < 5; i++)
        step(&p, T_MS);
    cr_assert_eq(p.a.st.cnt.tcp_tx - t0, 2, "FIN, then the ACK of the peer's FIN");
    cr_assert_eq(c->state, TCPS_TIME_WAIT);
    cr_assert_eq(p.a.st.cnt.tcp_rx_rst, 0);
    pair_fini(&p);
}

/* Destroying a stack with connections still in TIME_WAIT leaves no timer behind: the
 * wheel outlives the connection table during destruction, and a dangling entry was a
 * use-after-free when a neighbouring timer was cancelled later (seen under ASan). */
Test(tcp, destroy_with_time_wait_connections)
{
    struct pair p;
    pair_init(&p, NULL, 4096);
    tcp_close(&p.a.st, p.cli);
    p.cli = NULL;
    for (int i = 0; i < 5; i++)
        step(&p, T_MS);
    tcp_close(&p.b.st, p.srv);
    p.srv = NULL;
    for (int i = 0; i < 5; i++)
        step(&p, T_MS);
    cr_assert_eq(tcp_count(&p.a.st), 1, "the closer sits in TIME_WAIT");
    /* An ARP entry with a timer too, cancelled after the TCP table is gone. */
    stack_ping(&p.a.st, 0x0ac80063, 1, 1, 8);
    pair_fini(&p);
    cr_assert_eq(p.a.st.tw.armed, 0, "every timer was taken out of the wheel");
    cr_assert_eq(p.b.st.tw.armed, 0);
}

/* The TCP header of an IPv4 frame from a to b carrying data, or NULL. */
static const uint8_t *data_seg(const uint8_t *f, uint32_t n, bool a_to_b, uint32_t *len)
{
    if (!a_to_b || n < 14 + 20 + 20 || rd16(f + 12) != ETHERTYPE_IPV4 || f[14 + 9] != 6)
        return NULL;
    uint32_t ihl = (f[14] & 0x0fu) * 4, tot = rd16(f + 14 + 2);
    const uint8_t *t = f + 14 + ihl;
    uint32_t doff = (t[12] >> 4) * 4u;
    if (tot < ihl + doff + 1)
        return NULL;
    *len = tot - ihl - doff;
    return t;
}

/* Drops one data segment some way into the transfer and then its first retransmission. */
static bool drop_segment_and_its_retransmission(struct pair *p, const uint8_t *f, uint32_t n,
                                                bool a_to_b)
{
    uint32_t len;
    const uint8_t *t = data_seg(f, n, a_to_b, &len);
    if (!t || !p->cli || p->cli->bytes_acked < 100000)
        return false;
    uint32_t seq = rd32(t + 4);
    if (!p->drop_seen)
        p->drop_seq = seq;
    if (seq != p->drop_seq || p->drop_seen >= 2)
        return false;
    p->drop_seen++;
    return true;
}

/* RACK-like: a retransmission lost in SACK recovery is found lost again when data sent
 * after it is SACKed, and sent a third time at once: no RTO (200 ms at least, while the
 * link's round trip is a fraction of a millisecond). */
Test(tcp, lost_retransmission_resent_without_rto)
{
    struct pair p;
    pair_init_filtered(&p, NULL, 256 * 1024, drop_segment_and_its_retransmission);
    transfer(&p, 1u << 20, 20000);
    cr_assert_eq(p.drop_seen, 2, "the segment and its first retransmission were dropped");
    cr_assert_eq(stest_cnt(&p.a, "tcp_sack_recovery"), 1);
    cr_assert_geq(stest_cnt(&p.a, "tcp_lost_retrans"), 1, "the lost retransmission was found");
    cr_assert_eq(stest_cnt(&p.a, "tcp_rto"), 0, "no retransmission timeout was needed");
    cr_assert_eq(p.cli->nrxt, 0, "recovery is over");
    pair_fini(&p);
}

/* A connection never offers more window than its receive buffer holds. Two ways it did:
 * an active opener's SYN offers a window before it knows the peer's ISN, and the edge it
 * set was not moved to RCV.NXT when the SYN-ACK arrived: for about half of the ISNs the
 * stale edge looked like a huge window that "never shrinks", so the peer was offered 8 MiB
 * whatever the buffer, and what it sent beyond the buffer was dropped (seen as 50 MiB
 * transfers from the kernel taking 8x longer). And a passive open's SYN-ACK offered 64 KiB
 * whatever its buffer would be. Several connections: several ISNs. */
Test(tcp, window_offered_never_exceeds_receive_buffer)
{
    struct pair p;
    pair_init(&p, NULL, 4096);
    struct tbuf c[16];
    for (int i = 0; i < 16; i++) {
        tbuf_init(&c[i], 4096, 4096);
        struct tcp_pcb *x = tcp_new(&p.a.st, &tbuf_ops, tbuf_event, &c[i]);
        cr_assert_eq(tcp_connect(&p.a.st, x, ADDR_B, 80), 0);
        for (int k = 0; k < 100 && !p.lis->acc_qlen; k++)
            step(&p, T_MS);
        struct tcp_pcb *y = tcp_accept(&p.b.st, p.lis);
        cr_assert_not_null(y);
        cr_assert_eq(x->state, TCPS_ESTABLISHED);
        cr_assert_leq(x->rcv_adv - x->rcv_nxt, 4096, "conn %d (ISN %u): offered %u", i, y->iss,
                      x->rcv_adv - x->rcv_nxt);
        cr_assert_leq(y->snd_wnd, 4096, "conn %d: the peer was offered %u", i, y->snd_wnd);
        tcp_abort(&p.b.st, y);
        tcp_abort(&p.a.st, x);
    }
    for (int i = 0; i < 16; i++)
        tbuf_free(&c[i]);
    /* Data both ways into 4 KiB receive buffers from large send buffers (nothing queued
     * yet: the buffers can be replaced): nothing beyond a receive buffer is ever sent. */
    tbuf_free(&p.ca);
    tbuf_init(&p.ca, 256 * 1024, 4096);
    tbuf_free(&p.sb);
    tbuf_init(&p.sb, 256 * 1024, 4096);
    transfer(&p, 200000, 20000);
    cr_assert_eq(stest_cnt(&p.a, "tcp_drop_rcv_full"), 0);
    cr_assert_eq(stest_cnt(&p.b, "tcp_drop_rcv_full"), 0);
    pair_fini(&p);
}

/* Drops the first ACK from b that acknowledges everything a sent (drop_seq: that edge). */
static bool drop_ack_of_the_tail(struct pair *p, const uint8_t *f, uint32_t n, bool a_to_b)
{
    if (a_to_b || !p->drop_seq || p->drop_seen || n < 14 + 20 + 20 ||
        rd16(f + 12) != ETHERTYPE_IPV4 || f[14 + 9] != 6)
        return false;
    const uint8_t *t = f + 14 + (f[14] & 0x0fu) * 4;
    if ((t[13] & TCP_ACK) && rd32(t + 8) == p->drop_seq) {
        p->drop_seen++;
        return true;
    }
    return false;
}

/* A flight whose only ACK is lost (a receiver that coalesces a burst acknowledges it once)
 * is repaired by a tail loss probe after two RTTs (10 ms at least), not by the RTO. */
Test(tcp, lost_tail_ack_repaired_by_probe_not_rto)
{
    struct pair p;
    pair_init_filtered(&p, NULL, 256 * 1024, drop_ack_of_the_tail);
    transfer(&p, 100000, 5000);   /* an RTT measured, a cwnd of some segments */
    for (int i = 0; i < 100; i++) /* everything acknowledged: the burst is the whole flight */
        step(&p, T_MS);
    cr_assert_eq(p.cli->snd_una, p.cli->snd_max);
    static uint8_t burst[8 * 1448];
    memset(burst, 'b', sizeof(burst));
    cr_assert_eq(tbuf_write(&p.ca, burst, sizeof(burst)), sizeof(burst));
    p.drop_seq = p.cli->snd_una + (uint32_t)sizeof(burst);
    tcp_output(&p.a.st, p.cli);
    uint64_t t0 = p.a.now;
    for (int i = 0; i < 2000 && p.cli->snd_una != p.drop_seq; i++)
        step(&p, T_MS / 10);
    cr_assert_eq(p.drop_seen, 1, "the ACK of the whole flight was dropped");
    cr_assert_eq(p.cli->snd_una, p.drop_seq, "everything acknowledged in the end");
    cr_assert_lt(p.a.now - t0, 50 * T_MS, "repaired after %llu ms",
                 (unsigned long long)((p.a.now - t0) / T_MS));
    cr_assert_eq(stest_cnt(&p.a, "tcp_tlp"), 1);
    cr_assert_eq(stest_cnt(&p.a, "tcp_rto"), 0);
    uint8_t got[sizeof(burst)];
    cr_assert_eq(tbuf_read(&p.sb, got, sizeof(got)), sizeof(burst));
    cr_assert_eq(memcmp(got, burst, sizeof(burst)), 0);
    pair_fini(&p);
}

/* Drops every segment from b until drop_seq (ms) once set: the ACKs of a flight. */
static bool drop_acks_until(struct pair *p, const uint8_t *f, uint32_t n, bool a_to_b)
{
    if (a_to_b || !p->drop_seq || p->a.now / T_MS >= p->drop_seq)
        return false;
    p->drop_seen++;
    return true;
}

/* Every ACK of a flight lost while more is queued than cwnd lets out: the probe is the
 * last segment sent again, which the receiver acknowledges at once (a duplicate), not a
 * new segment, whose ACK a receiver past its quick-ack phase delays (40 ms here, as on
 * Linux). */
Test(tcp, probe_is_a_duplicate_that_the_peer_acks_at_once)
{
    struct pair p;
    pair_init_filtered(&p, NULL, 256 * 1024, drop_acks_until);
    transfer(&p, 100000, 5000);
    for (int i = 0; i < 100; i++)
        step(&p, T_MS);
    cr_assert_eq(p.cli->snd_una, p.cli->snd_max);
    cr_assert_eq(p.srv->quickacks, 0, "the receiver delays ACKs of in-order data by now");
    uint64_t probes = stest_cnt(&p.a, "tcp_tlp");
    static uint8_t more[32 * 1448];
    for (uint32_t i = 0; i < sizeof(more); i++)
        more[i] = pattern(i);
    cr_assert_eq(tbuf_write(&p.ca, more, sizeof(more)), sizeof(more));
    p.cli->cwnd = 4 * p.cli->mss; /* a flight of 4, 28 segments waiting for the window */
    tcp_output(&p.a.st, p.cli);
    uint32_t flight_end = p.cli->snd_max;
    p.drop_seq = (uint32_t)(p.a.now / T_MS) + 5; /* its ACKs, not the probe's (>= 10 ms) */
    uint64_t t0 = p.a.now;
    for (int i = 0; i < 2000 && (int32_t)(p.cli->snd_una - flight_end) < 0; i++)
        step(&p, T_MS / 10);
    cr_assert_geq(p.drop_seen, 1, "the flight's ACKs were dropped");
    cr_assert_eq(stest_cnt(&p.a, "tcp_tlp") - probes, 1);
    cr_assert_lt(p.a.now - t0, 20 * T_MS, "repaired after %llu ms: the probe's ACK was delayed",
                 (unsigned long long)((p.a.now - t0) / T_MS));
    cr_assert_eq(stest_cnt(&p.a, "tcp_rto"), 0);
    for (int i = 0; i < 500 && p.cli->snd_una != p.cli->snd_max; i++)
        step(&p, T_MS);
    static uint8_t got[sizeof(more)];
    cr_assert_eq(tbuf_read(&p.sb, got, sizeof(got)), sizeof(more));
    cr_assert_eq(memcmp(got, more, sizeof(more)), 0);
    pair_fini(&p);
}

/* Blacks out b -> a for drop_seq ms from the first data segment on, and notes any a -> b
 * segment that ends beyond a's SND.MAX (sent without SND.MAX knowing it). */
static bool blackout_and_check_edge(struct pair *p, const uint8_t *f, uint32_t n, bool a_to_b)
{
    uint32_t len;
    const uint8_t *t = data_seg(f, n, a_to_b, &len);
    if (t && p->cli && (int32_t)(rd32(t + 4) + len - p->cli->snd_max) > 0)
        p->drop_seen |= 2;
    if (t && !p->drop_seq && p->cli && p->cli->bytes_acked > 0)
        p->drop_seq = (uint32_t)(p->a.now / T_MS) + 30; /* blackout until then (ms) */
    return !a_to_b && p->drop_seq && p->a.now / T_MS < p->drop_seq;
}

/* A probe when the peer's window holds the rest of the queue back: the probe is the last
 * segment sent again, not the last one queued (that one was beyond the window and beyond
 * SND.MAX: the peer's ACK of it then looked like an ACK of unsent data, and connections
 * stalled with 1000 of them sharing the TAP). */
Test(tcp, probe_resends_last_sent_not_last_queued)
{
    struct pair p;
    pair_init_filtered(&p, NULL, 16384, blackout_and_check_edge);
    tbuf_free(&p.ca); /* more to send than the peer's 16 KiB, which nobody reads */
    tbuf_init(&p.ca, 64 * 1024, 16384);
    transfer(&p, 1000, 1000); /* an RTT */
    for (int i = 0; i < 20; i++)
        step(&p, T_MS);
    static uint8_t big[48 * 1024];
    for (uint32_t i = 0; i < sizeof(big); i++)
        big[i] = pattern(i);
    cr_assert_eq(tbuf_write(&p.ca, big, sizeof(big)), sizeof(big));
    tcp_output(&p.a.st, p.cli);
    for (int i = 0; i < 5000; i++) /* the blackout, then the RTO after the probe */
        step(&p, T_MS / 10);
    cr_assert_geq(stest_cnt(&p.a, "tcp_tlp"), 1, "a probe went out during the blackout");
    cr_assert_eq(p.drop_seen & 2, 0, "nothing was sent beyond SND.MAX");
    cr_assert_eq(stest_cnt(&p.a, "tcp_drop_bad_ack"), 0);
    cr_assert_eq(stest_cnt(&p.b, "tcp_drop_rcv_full"), 0);
    /* What went out arrived intact, and is acknowledged now that the blackout is over. */
    cr_assert_eq(p.cli->snd_una, p.cli->snd_max);
    cr_assert_eq(p.srv->rcv_nxt, p.cli->snd_max);
    static uint8_t got[16384];
    uint32_t r = tbuf_read(&p.sb, got, sizeof(got));
    cr_assert_gt(r, 10000, "a window's worth arrived (%u)", r);
    cr_assert_eq(memcmp(got, big, r), 0);
    pair_fini(&p);
}

/* Counts the frames b sends to a; drops nothing. */
static bool count_b_to_a(struct pair *p, const uint8_t *f, uint32_t n, bool a_to_b)
{
    (void)f;
    (void)n;
    if (!a_to_b)
        p->drop_seen++;
    return false;
}

/* A small PSH segment to a TCP_NODELAY socket (a request) is not ACKed at once: the reply
 * carries the ACK, one frame instead of two; without a reply the ACK leaves within the
 * next timer ticks (about 1 ms), not tcp_delack_ms (40 ms). */
Test(tcp, request_to_nodelay_socket_acked_by_its_reply)
{
    struct pair p;
    pair_init_filtered(&p, NULL, 64 * 1024, count_b_to_a);
    p.srv->nodelay = p.cli->nodelay = true;
    p.srv->quickacks = 0; /* past the connection's start */
    uint8_t buf[64];

    cr_assert_eq(tbuf_write(&p.ca, (const uint8_t *)"GET k\r\n", 7), 7);
    tcp_output(&p.a.st, p.cli);
    p.drop_seen = 0;
    step(&p, T_MS / 10);
    step(&p, T_MS / 10);
    cr_assert_eq(tbuf_read(&p.sb, buf, sizeof(buf)), 7);
    tcp_rcvd(&p.b.st, p.srv);
    step(&p, T_MS / 10);
    cr_assert_eq(p.drop_seen, 0, "no pure ACK before the reply");
    cr_assert_neq(p.cli->snd_una, p.cli->snd_nxt);
    cr_assert_eq(tbuf_write(&p.sb, (const uint8_t *)"$1\r\nv\r\n", 7), 7);
    tcp_output(&p.b.st, p.srv);
    step(&p, T_MS / 10);
    step(&p, 0); /* a takes in what b sent during the last step */
    cr_assert_eq(p.drop_seen, 1, "the reply alone, carrying the ACK");
    cr_assert_eq(p.cli->snd_una, p.cli->snd_nxt);
    cr_assert_eq(tbuf_read(&p.ca, buf, sizeof(buf)), 7);
    tcp_rcvd(&p.a.st, p.cli);

    /* No reply: a pure ACK within 3 ms. */
    cr_assert_eq(tbuf_write(&p.ca, (const uint8_t *)"GET j\r\n", 7), 7);
    tcp_output(&p.a.st, p.cli);
    p.drop_seen = 0;
    for (int i = 0; i < 30 && p.cli->snd_una != p.cli->snd_nxt; i++)
        step(&p, T_MS / 10);
    cr_assert_eq(p.cli->snd_una, p.cli->snd_nxt, "ACKed within 3 ms");
    cr_assert_eq(p.drop_seen, 1);
    pair_fini(&p);
}

/* TCP is unicast only: a SYN to the subnet's broadcast address reaches no listener and
 * is counted (it used to be freed without a count). */
Test(tcp, syn_to_broadcast_dropped_and_counted)
{
    struct pair p;
    pair_init(&p, NULL, 64 * 1024);
    uint32_t bcast = (ADDR_B & 0xffffff00u) | 0xffu;
    uint8_t seg[20] = {0};
    wr16(seg, 40000);
    wr16(seg + 2, 80);
    wr32(seg + 4, 12345);
    seg[12] = 5 << 4;
    seg[13] = TCP_SYN;
    wr16(seg + 14, 1000);
    wr16(seg + 16, csum_fold(csum_partial(seg, 20, csum_pseudo4(ST_ADDR_A, bcast, 6, 20))));
    uint8_t f[100];
    uint32_t n = build_ip4(f, mac_b, st_mac_a, ST_ADDR_A, bcast, 6, 1, 0, 64, seg, 20);
    uint64_t tx0 = stest_cnt(&p.b, "tcp_tx");
    cr_assert_eq(nic_sim_inject(&p.b.nic, f, n), 0);
    stest_step(&p.b, 0);
    cr_assert_eq(stest_cnt(&p.b, "tcp_drop_bcast"), 1);
    cr_assert_eq(stest_cnt(&p.b, "tcp_tx"), tx0, "nothing answered");
    pair_fini(&p);
}

/* The owner hears of a segment once it has been processed: the WRITABLE that the ACK of
 * a segment raises comes after the data that segment carries is in the receive buffer, so
 * the owner never acts on a connection the stack is still changing. */
static uint32_t writable_rcv_nxt;
static void spy_event(void *ctx, struct tcp_pcb *pcb, enum tcp_event ev, int err)
{
    if (ev == TCP_EV_WRITABLE && !writable_rcv_nxt)
        writable_rcv_nxt = pcb->rcv_nxt;
    tbuf_event(ctx, pcb, ev, err);
}

Test(tcp, events_come_after_the_segment_is_processed)
{
    struct pair p;
    uint8_t d[100] = {1};
    pair_init(&p, NULL, 64 * 1024);
    p.cli->ev = spy_event;
    p.srv->quickacks = 0; /* so its ACK waits for its data */
    tbuf_write(&p.ca, d, sizeof(d));
    tcp_output(&p.a.st, p.cli);
    step(&p, T_MS / 10); /* the server has the data; its ACK is delayed */
    cr_assert_eq(p.cli->snd_una + sizeof(d), p.cli->snd_nxt, "not acked yet");
    uint32_t before = p.cli->rcv_nxt;
    tbuf_write(&p.sb, d, sizeof(d));
    tcp_output(&p.b.st, p.srv); /* data with the ACK of the client's bytes */
    for (int i = 0; i < 10 && p.cli->rcv_nxt == before; i++)
        step(&p, T_MS / 10);
    cr_assert_eq(p.cli->rcv_nxt, before + sizeof(d));
    cr_assert_eq(writable_rcv_nxt, before + sizeof(d), "WRITABLE came before the data was in");
    pair_fini(&p);
}

/* IP_TTL and IP_TOS of a connection go into every segment it sends. */
static uint8_t seen_ttl, seen_tos;
static bool record_ip(struct pair *p, const uint8_t *f, uint32_t n, bool a_to_b)
{
    struct ip4_view ip;
    (void)p;
    if (a_to_b && n > 14 && ip4_parse(f + 14, n - 14, &ip) == IP4_OK && ip.proto == 6) {
        seen_ttl = ip.ttl;
        seen_tos = ip.tos;
    }
    return false;
}

Test(tcp, ttl_and_tos_are_the_connections)
{
    struct pair p;
    uint8_t d[10] = {0};
    pair_init_filtered(&p, NULL, 64 * 1024, record_ip);
    cr_assert_eq(seen_ttl, 64, "the default TTL");
    p.cli->ttl = 9;
    p.cli->tos = 0x20;
    tbuf_write(&p.ca, d, sizeof(d));
    tcp_output(&p.a.st, p.cli);
    step(&p, T_MS);
    cr_assert_eq(seen_ttl, 9);
    cr_assert_eq(seen_tos, 0x20);
    pair_fini(&p);
}

/* TCP_MAXSEG before connect caps the MSS the SYN offers, so the peer sends no larger
 * segments, and the MSS this side uses. */
static void maxseg_1000(struct pair *p)
{
    p->cli->user_mss = 1000;
}

Test(tcp, maxseg_caps_the_mss_both_ways)
{
    struct pair p;
    pair_init_with(&p, NULL, NULL, 64 * 1024, NULL, maxseg_1000);
    cr_assert_eq(p.cli->adv_mss, 1000, "the SYN offered the cap");
    cr_assert_eq(p.srv->mss, 1000, "the peer sends at most that");
    cr_assert_eq(p.cli->mss, 1000, "and so does this side");
    pair_fini(&p);
}
