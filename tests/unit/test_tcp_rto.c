/* TCP timers against their RFC rules: local transmit failures are retried, the RTO after
 * a timed-out handshake (RFC 6298 5.7), Karn's back-off (RFC 6298 5.5-5.7). */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>

#include "stack/pktbuf.h"
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
