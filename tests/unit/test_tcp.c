/* TCP between two stacks on a sim link (and against literal segments): handshakes, data
 * both ways, loss and reordering recovery, close sequences, resets, timers. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>

#include "stack/tcp.h"
#include "tests/lib/stacktest.h"
#include "tests/lib/tcptest.h"

#define ADDR_B 0x0ac80003u
static const uint8_t mac_b[6] = {2, 0, 0, 0, 0, 3};

struct pair {
    struct stest a, b;
    struct tbuf ca, sb; /* client on a, server connection on b */
    struct tbuf lb;     /* listener context */
    struct tcp_pcb *cli, *lis, *srv;
};

static int on_accept(void *lctx, struct tcp_pcb *l, struct tcp_pcb *child)
{
    struct pair *p = lctx;
    child->buf = &tbuf_ops;
    child->ctx = &p->sb;
    child->ev = tbuf_event;
    return 0;
}

static void step(struct pair *p, uint64_t ns)
{
    stest_step(&p->a, ns);
    p->b.now = p->a.now;
    stest_step(&p->b, 0);
}

static void pair_init(struct pair *p, const struct nic_fault_params *fp, uint32_t bufsz)
{
    memset(p, 0, sizeof(*p));
    stest_init_addr(&p->a, NULL, ST_ADDR_A, st_mac_a, fp);
    stest_init_addr(&p->b, NULL, ADDR_B, mac_b, fp);
    p->b.now = p->a.now;
    nic_sim_link(&p->a.nic, &p->b.nic);
    tbuf_init(&p->ca, bufsz, bufsz);
    tbuf_init(&p->sb, bufsz, bufsz);
    tbuf_init(&p->lb, 16, 16);
    p->lis = tcp_new(&p->b.st, &tbuf_ops, tbuf_event, &p->lb);
    cr_assert_eq(tcp_bind(&p->b.st, p->lis, 0, 80), 0);
    cr_assert_eq(tcp_listen(&p->b.st, p->lis, 16, on_accept, p), 0);
    p->cli = tcp_new(&p->a.st, &tbuf_ops, tbuf_event, &p->ca);
    cr_assert_eq(tcp_connect(&p->a.st, p->cli, ADDR_B, 80), 0);
    for (int i = 0; i < 2000 && !(p->cli->state == TCPS_ESTABLISHED && p->lis->acc_qlen); i++)
        step(p, T_MS);
    cr_assert_eq(p->cli->state, TCPS_ESTABLISHED);
    p->srv = tcp_accept(&p->b.st, p->lis);
    cr_assert_not_null(p->srv);
    cr_assert_eq(p->ca.events[TCP_EV_CONNECTED], 1);
}

static void pair_fini(struct pair *p)
{
    if (p->cli)
        tcp_abort(&p->a.st, p->cli);
    if (p->srv)
        tcp_abort(&p->b.st, p->srv);
    tcp_close(&p->b.st, p->lis);
    stest_fini(&p->a);
    stest_fini(&p->b);
    tbuf_free(&p->ca);
    tbuf_free(&p->sb);
    tbuf_free(&p->lb);
}

static uint8_t pattern(uint64_t i)
{
    return (uint8_t)(i * 131 + (i >> 9));
}

/* Move total bytes a->b and b->a at once; verifies content; returns simulated ms. */
static uint64_t transfer(struct pair *p, uint64_t total, uint64_t max_ms)
{
    uint64_t sent_a = 0, recv_b = 0, sent_b = 0, recv_a = 0, t = 0;
    uint8_t chunk[8192];
    while ((recv_b < total || recv_a < total) && t < max_ms) {
        while (sent_a < total) {
            uint32_t n =
                (uint32_t)(total - sent_a < sizeof(chunk) ? total - sent_a : sizeof(chunk));
            for (uint32_t i = 0; i < n; i++)
                chunk[i] = pattern(sent_a + i);
            uint32_t w = tbuf_write(&p->ca, chunk, n);
            sent_a += w;
            if (w < n)
                break;
        }
        while (sent_b < total) {
            uint32_t n =
                (uint32_t)(total - sent_b < sizeof(chunk) ? total - sent_b : sizeof(chunk));
            for (uint32_t i = 0; i < n; i++)
                chunk[i] = (uint8_t)~pattern(sent_b + i);
            uint32_t w = tbuf_write(&p->sb, chunk, n);
            sent_b += w;
            if (w < n)
                break;
        }
        tcp_output(&p->a.st, p->cli);
        tcp_output(&p->b.st, p->srv);
        uint32_t n;
        while ((n = tbuf_read(&p->sb, chunk, sizeof(chunk)))) {
            for (uint32_t i = 0; i < n; i++)
                cr_assert_eq(chunk[i], pattern(recv_b + i), "byte %llu a->b",
                             (unsigned long long)(recv_b + i));
            recv_b += n;
            tcp_rcvd(&p->b.st, p->srv);
        }
        while ((n = tbuf_read(&p->ca, chunk, sizeof(chunk)))) {
            for (uint32_t i = 0; i < n; i++)
                cr_assert_eq(chunk[i], (uint8_t)~pattern(recv_a + i), "byte %llu b->a",
                             (unsigned long long)(recv_a + i));
            recv_a += n;
            tcp_rcvd(&p->a.st, p->cli);
        }
        step(p, T_MS / 10);
        t++;
    }
    cr_assert_eq(recv_b, total, "a->b delivered %llu of %llu", (unsigned long long)recv_b,
                 (unsigned long long)total);
    cr_assert_eq(recv_a, total, "b->a delivered %llu of %llu", (unsigned long long)recv_a,
                 (unsigned long long)total);
    return t / 10;
}

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
    struct pair p;
    memset(&p, 0, sizeof(p));
    pair_init(&p, &fp, 256 * 1024);
    /* Renegotiate without SACK and timestamps on a fresh connection. */
    pair_fini(&p);
    struct stack_params sp;
    stack_params_defaults(&sp);
    sp.pktbufs = 1024;
    sp.tcp_sack = false;
    sp.tcp_timestamps = false;
    snprintf(sp.tcp_cc, sizeof(sp.tcp_cc), "newreno");
    memset(&p, 0, sizeof(p));
    stest_init_addr(&p.a, &sp, ST_ADDR_A, st_mac_a, &fp);
    stest_init_addr(&p.b, &sp, ADDR_B, mac_b, &fp);
    p.b.now = p.a.now;
    nic_sim_link(&p.a.nic, &p.b.nic);
    tbuf_init(&p.ca, 128 * 1024, 128 * 1024);
    tbuf_init(&p.sb, 128 * 1024, 128 * 1024);
    tbuf_init(&p.lb, 16, 16);
    p.lis = tcp_new(&p.b.st, &tbuf_ops, tbuf_event, &p.lb);
    tcp_bind(&p.b.st, p.lis, 0, 80);
    tcp_listen(&p.b.st, p.lis, 4, on_accept, &p);
    p.cli = tcp_new(&p.a.st, &tbuf_ops, tbuf_event, &p.ca);
    tcp_connect(&p.a.st, p.cli, ADDR_B, 80);
    for (int i = 0; i < 5000 && !p.lis->acc_qlen; i++)
        step(&p, T_MS);
    p.srv = tcp_accept(&p.b.st, p.lis);
    cr_assert_not_null(p.srv);
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
    tbuf_init(&p.lb, 16, 16);
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
