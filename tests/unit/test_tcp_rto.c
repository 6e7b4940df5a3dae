/* TCP timers against their RFC rules: local transmit failures are retried, the RTO after
 * a timed-out handshake (RFC 6298 5.7), Karn's back-off (RFC 6298 5.5-5.7). */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>

#include "core/pktbuf.h"
#include "stack/tcp.h"
#include "stack/tcp_impl.h"
#include "tests/lib/stacktest.h"
#include "tests/lib/tcppair.h"
#include "tests/lib/tcptest.h"

/* Take every frame buffer of a stack's pool; returns how many. */
static uint32_t drain_pool(struct stack *st, struct pktbuf ***held)
{
    uint32_t n = 0, cap = 1024;
    struct pktbuf **v = malloc(cap * sizeof(*v));
    struct pktbuf *pb;
    while ((pb = pktbuf_alloc(&st->pool))) {
        if (n == cap)
            v = realloc(v, (cap *= 2) * sizeof(*v));
        v[n++] = pb;
    }
    *held = v;
    return n;
}

static void refill_pool(struct pktbuf **v, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        pktbuf_free(v[i]);
    free(v);
}

/* The FIN of a close in CLOSE_WAIT finds no buffer: the state is LAST_ACK already, and a
 * timer must send the FIN later, or the connection sticks there for ever. */
Test(tcp_rto, fin_without_buffers_is_sent_later)
{
    struct pair p;
    pair_init(&p, NULL, 64 * 1024);
    tcp_shutdown(&p.a.st, p.cli, 1);
    step(&p, T_MS);
    step(&p, T_MS);
    cr_assert_eq(p.srv->state, TCPS_CLOSE_WAIT);
    struct pktbuf **held;
    uint32_t n = drain_pool(&p.b.st, &held);
    tcp_close(&p.b.st, p.srv);
    cr_assert_eq(p.srv->state, TCPS_LAST_ACK);
    cr_assert_eq(p.ca.events[TCP_EV_FIN], 0);
    refill_pool(held, n);
    for (int i = 0; i < 100 && p.ca.events[TCP_EV_FIN] == 0; i++)
        step(&p, 10 * T_MS);
    cr_assert_eq(p.ca.events[TCP_EV_FIN], 1, "the FIN never went out");
    step(&p, T_MS);
    step(&p, T_MS);
    cr_assert_eq(p.sb.closed_err, 0);
    cr_assert_eq(tcp_count(&p.b.st), 0, "LAST_ACK never ended");
    cr_assert_geq(stest_cnt(&p.b, "tcp_xmit_retry"), 1);
    p.srv = NULL;
    pair_fini(&p);
}

/* Data written while the pool is empty goes out once buffers are back, with nothing in
 * flight to arm a retransmission. */
Test(tcp_rto, data_without_buffers_is_sent_later)
{
    struct pair p;
    pair_init(&p, NULL, 64 * 1024);
    struct pktbuf **held;
    uint32_t n = drain_pool(&p.b.st, &held);
    static uint8_t d[20000];
    for (uint32_t i = 0; i < sizeof(d); i++)
        d[i] = pattern(i);
    cr_assert_eq(tbuf_write(&p.sb, d, sizeof(d)), sizeof(d));
    tcp_output(&p.b.st, p.srv);
    cr_assert_eq(p.srv->snd_max, p.srv->snd_una, "nothing could be sent");
    refill_pool(held, n);
    uint8_t got[sizeof(d)];
    uint32_t have = 0;
    for (int i = 0; i < 100 && have < sizeof(d); i++) {
        step(&p, 10 * T_MS);
        have += tbuf_read(&p.ca, got + have, sizeof(got) - have);
    }
    cr_assert_eq(have, sizeof(d));
    cr_assert_eq(memcmp(got, d, sizeof(d)), 0);
    cr_assert_eq(p.srv->rtx_count, 0, "a local failure is not a loss");
    pair_fini(&p);
}

/* TCP header of an IPv4 TCP frame, or NULL. */
static const uint8_t *tcp_of(const uint8_t *f, uint32_t n, uint32_t *paylen)
{
    if (n < 14 + 20 + 20 || rd16(f + 12) != ETHERTYPE_IPV4 || f[14 + 9] != 6)
        return NULL;
    uint32_t ihl = (f[14] & 15u) * 4, tot = rd16(f + 16);
    const uint8_t *t = f + 14 + ihl;
    *paylen = tot - ihl - (t[12] >> 4) * 4u;
    return t;
}

/* Drops the first SYN from a, then the first data segment from a. */
static bool drop_syn_then_data(struct pair *p, const uint8_t *f, uint32_t n, bool a_to_b)
{
    uint32_t len;
    const uint8_t *t = tcp_of(f, n, &len);
    if (!a_to_b || !t)
        return false;
    if (p->drop_seen == 0 && (t[13] & TCP_SYN)) {
        p->drop_seen++;
        return true;
    }
    if (p->drop_seen == 1 && len) {
        p->drop_seen++;
        return true;
    }
    return false;
}

/* Step until a's client has retransmitted more than before; returns the ns it took. */
static uint64_t until_retransmit(struct pair *p, uint32_t before)
{
    uint64_t t0 = p->a.now;
    for (int i = 0; i < 10000 && p->cli->total_retrans == before; i++)
        step(p, T_MS);
    cr_assert_gt(p->cli->total_retrans, before, "no retransmission");
    return p->a.now - t0;
}

/* RFC 6298 5.7: the SYN timed out and no RTT was measured: the first data segment's RTO
 * is 3 s, not rto_init (1 s). */
Test(tcp_rto, rto_after_syn_timeout_is_three_seconds)
{
    struct pair p;
    pair_init_filtered(&p, NULL, 64 * 1024, drop_syn_then_data);
    cr_assert_eq(p.drop_seen, 1, "the first SYN was dropped");
    cr_assert_eq(p.cli->srtt_us, 0, "no RTT sample from a retransmitted SYN");
    cr_assert_eq(p.cli->rto_ms, 3000);
    tbuf_write(&p.ca, (const uint8_t *)"data", 4);
    tcp_output(&p.a.st, p.cli);
    uint64_t t = until_retransmit(&p, p.cli->total_retrans);
    cr_assert_eq(p.drop_seen, 2);
    cr_assert_geq(t, 2990 * T_MS, "retransmitted after %llu ms", (unsigned long long)(t / T_MS));
    cr_assert_leq(t, 3010 * T_MS, "retransmitted after %llu ms", (unsigned long long)(t / T_MS));
    pair_fini(&p);
}

/* Drops the next drop_seq data segments from a. */
static bool drop_next_data(struct pair *p, const uint8_t *f, uint32_t n, bool a_to_b)
{
    uint32_t len;
    const uint8_t *t = tcp_of(f, n, &len);
    if (!a_to_b || !t || !len || !p->drop_seq)
        return false;
    p->drop_seq--;
    p->drop_seen++;
    return true;
}

/* Karn (RFC 6298 5.5-5.7): after a timeout, the ACK of the retransmitted segment is no
 * RTT sample and does not end the back-off: the next segment's RTO is still doubled. A
 * sample from a segment sent once ends it. */
Test(tcp_rto, backoff_kept_until_a_valid_sample)
{
    struct pair p;
    pair_init_filtered(&p, NULL, 64 * 1024, drop_next_data);
    p.cli->nodelay = true;
    transfer(&p, 20000, 2000);
    cr_assert_eq(p.cli->rto_ms, 200, "rto_min with a sub-millisecond RTT");
    /* A lone segment is lost: no probe comes before its RTO (2 SRTT + the worst delayed
     * ACK exceed 200 ms, RFC 8985 7.2), which resends it. */
    p.drop_seq = 1;
    tbuf_write(&p.ca, (const uint8_t *)"one", 3);
    tcp_output(&p.a.st, p.cli);
    for (int i = 0; i < 1000 && p.cli->snd_una != p.cli->snd_max; i++)
        step(&p, T_MS);
    cr_assert_eq(p.cli->snd_una, p.cli->snd_max);
    cr_assert_eq(stest_cnt(&p.a, "tcp_rto"), 1);
    cr_assert_eq(p.cli->backoff, 1, "the ACK of the retransmission ended the back-off");
    /* The next segment is lost too: its RTO is 400 ms (no probe while backed off). */
    p.drop_seq = 1;
    tbuf_write(&p.ca, (const uint8_t *)"two", 3);
    tcp_output(&p.a.st, p.cli);
    uint64_t t = until_retransmit(&p, p.cli->total_retrans);
    cr_assert_geq(t, 399 * T_MS, "retransmitted after %llu ms", (unsigned long long)(t / T_MS));
    cr_assert_leq(t, 401 * T_MS, "retransmitted after %llu ms", (unsigned long long)(t / T_MS));
    for (int i = 0; i < 100 && p.cli->snd_una != p.cli->snd_max; i++)
        step(&p, T_MS);
    cr_assert_eq(p.cli->backoff, 2);
    /* A segment sent once and acknowledged: a valid sample, the back-off ends. */
    tbuf_write(&p.ca, (const uint8_t *)"three", 5);
    tcp_output(&p.a.st, p.cli);
    for (int i = 0; i < 100 && p.cli->snd_una != p.cli->snd_max; i++)
        step(&p, T_MS);
    cr_assert_eq(p.cli->snd_una, p.cli->snd_max);
    cr_assert_eq(p.cli->backoff, 0);
    pair_fini(&p);
}

/* ICMP frag-needed from a router between a and b, quoting the IP header and 8 bytes of
 * the frame f that a sent. */
static void inject_frag_needed(struct pair *p, const uint8_t *f, uint16_t mtu)
{
    uint8_t icmp[8 + 28];
    memset(icmp, 0, sizeof(icmp));
    icmp[0] = 3; /* destination unreachable */
    icmp[1] = 4; /* fragmentation needed and DF set */
    wr16(icmp + 6, mtu);
    memcpy(icmp + 8, f + 14, 28);
    wr16(icmp + 2, csum_fold(csum_partial(icmp, sizeof(icmp), 0)));
    uint8_t fr[128];
    uint32_t n = build_ip4(fr, st_mac_a, mac_b, ADDR_B, ST_ADDR_A, 1, 9, 0, 64, icmp, sizeof(icmp));
    cr_assert_eq(nic_sim_inject(&p->a.nic, fr, n), 0);
    stest_step(&p->a, 0);
}

/* Drops a's data segments larger than drop_seq bytes (a link with a smaller MTU). */
static bool drop_big(struct pair *p, const uint8_t *f, uint32_t n, bool a_to_b)
{
    uint32_t len;
    const uint8_t *t = tcp_of(f, n, &len);
    if (!a_to_b || !t || !p->drop_seq || len <= p->drop_seq)
        return false;
    if (p->drop_seen++ == 0) /* the router reports the first one */
        inject_frag_needed(p, f, 1000);
    return true;
}

/* RFC 1191 6.5 / RFC 8201: after frag-needed lowers the MSS, the whole flight (all cut
 * too big) is resent in smaller segments as the ACKs come, not one segment and the rest
 * after an RTO. */
Test(tcp_rto, frag_needed_resends_the_flight_at_once)
{
    struct pair p;
    pair_init_filtered(&p, NULL, 256 * 1024, drop_big);
    p.cli->nodelay = true;
    transfer(&p, 20000, 2000);
    uint64_t rto0 = stest_cnt(&p.a, "tcp_rto");
    p.drop_seq = 1000 - 20 - 20 - 12;            /* the largest payload the 1000-byte MTU carries */
    static uint8_t d[10 * 1448], got[sizeof(d)]; /* one flight, nothing after it */
    for (uint32_t i = 0; i < sizeof(d); i++)
        d[i] = pattern(i);
    uint32_t sent = 0, have = 0;
    uint64_t t0 = p.a.now;
    for (int i = 0; i < 1000 && have < sizeof(d); i++) {
        sent += tbuf_write(&p.ca, d + sent, sizeof(d) - sent);
        tcp_output(&p.a.st, p.cli);
        step(&p, T_MS);
        have += tbuf_read(&p.sb, got + have, sizeof(got) - have);
        tcp_rcvd(&p.b.st, p.srv);
    }
    cr_assert_eq(have, sizeof(d));
    cr_assert_eq(memcmp(got, d, sizeof(d)), 0);
    cr_assert_geq(p.drop_seen, 2, "a flight of large segments was dropped");
    cr_assert_eq(p.cli->mss, 1000 - 40);
    cr_assert_eq(stest_cnt(&p.a, "tcp_rto"), rto0, "the flight waited for an RTO");
    cr_assert_lt(p.a.now - t0, 100 * T_MS, "took %llu ms",
                 (unsigned long long)((p.a.now - t0) / T_MS));
    pair_fini(&p);
}
