/* A listener's queues: connections that die before the application accepts them, and a
 * full accept queue. */
#include <criterion/criterion.h>
#include <errno.h>

#include "stack/tcp.h"
#include "stack/tcp_impl.h"
#include "tests/lib/stacktest.h"
#include "tests/lib/tcppair.h"
#include "tests/lib/tcptest.h"

/* Children of the listener get their own buffers, so an event for a dead one shows. */
struct kids {
    struct tbuf b[4];
    int n;
};

static int kids_accept(void *lctx, struct tcp_pcb *l, struct tcp_pcb *child)
{
    struct kids *k = lctx;
    if (k->n >= 4)
        return -ENOBUFS;
    child->buf = &tbuf_ops;
    child->ctx = &k->b[k->n++];
    child->ev = tbuf_event;
    return 0;
}

struct lpair {
    struct pair p;
    struct kids k;
    struct tbuf cb[4];
    struct tcp_pcb *c[4];
};

/* A listener with the given backlog on b and no connection yet. */
static void lpair_init(struct lpair *lp, struct stack_params *sp, int backlog)
{
    struct pair *p = &lp->p;
    memset(lp, 0, sizeof(*lp));
    stest_init_addr(&p->a, NULL, ST_ADDR_A, st_mac_a, NULL);
    stest_init_addr(&p->b, sp, ADDR_B, mac_b, NULL);
    p->b.now = p->a.now;
    nic_sim_link(&p->a.nic, &p->b.nic);
    tbuf_init(&p->lb, 65536, 65536);
    for (int i = 0; i < 4; i++) {
        tbuf_init(&lp->k.b[i], 65536, 65536);
        tbuf_init(&lp->cb[i], 65536, 65536);
    }
    p->lis = tcp_new(&p->b.st, &tbuf_ops, tbuf_event, &p->lb);
    cr_assert_eq(tcp_bind(&p->b.st, p->lis, 0, 80), 0);
    cr_assert_eq(tcp_listen(&p->b.st, p->lis, backlog, kids_accept, &lp->k), 0);
}

static struct tcp_pcb *lpair_connect(struct lpair *lp, int i)
{
    struct pair *p = &lp->p;
    lp->c[i] = tcp_new(&p->a.st, &tbuf_ops, tbuf_event, &lp->cb[i]);
    cr_assert_eq(tcp_connect(&p->a.st, lp->c[i], ADDR_B, 80), 0);
    for (int t = 0; t < 50 && lp->c[i]->state != TCPS_ESTABLISHED; t++)
        step(p, T_MS);
    cr_assert_eq(lp->c[i]->state, TCPS_ESTABLISHED);
    step(p, T_MS);
    return lp->c[i];
}

static void lpair_fini(struct lpair *lp)
{
    struct pair *p = &lp->p;
    for (int i = 0; i < 4; i++)
        if (lp->c[i])
            tcp_abort(&p->a.st, lp->c[i]);
    if (p->lis)
        tcp_close(&p->b.st, p->lis);
    stest_fini(&p->a);
    stest_fini(&p->b);
    tbuf_free(&p->lb);
    for (int i = 0; i < 4; i++) {
        tbuf_free(&lp->k.b[i]);
        tbuf_free(&lp->cb[i]);
    }
}

/* The child died in the accept queue: it left the queue and was freed, its owner heard
 * CLOSED once, and accept() does not hand it out. */
static void assert_gone(struct lpair *lp, int kid, int err)
{
    struct pair *p = &lp->p;
    cr_assert_eq(p->lis->acc_qlen, 0, "the dead child still counts against the backlog");
    cr_assert_null(p->lis->acc_head);
    cr_assert_null(p->lis->acc_tail);
    cr_assert_eq(lp->k.b[kid].events[TCP_EV_CLOSED], 1);
    cr_assert_eq(lp->k.b[kid].closed_err, err);
    cr_assert_null(tcp_accept(&p->b.st, p->lis), "accept() returned a dead connection");
    cr_assert_eq(tcp_count(&p->b.st), 0, "the dead child is still hashed");
    cr_assert_eq(p->b.st.tcp->in_use, 1, "the dead child was not freed");
}

Test(tcp_listen, rst_before_accept_leaves_the_queue)
{
    struct lpair lp;
    lpair_init(&lp, NULL, 4);
    lpair_connect(&lp, 0);
    cr_assert_eq(lp.p.lis->acc_qlen, 1);
    tcp_abort(&lp.p.a.st, lp.c[0]);
    lp.c[0] = NULL;
    step(&lp.p, T_MS);
    assert_gone(&lp, 0, ECONNRESET);
    /* A later connection is queued and accepted normally, with its own buffers. */
    lpair_connect(&lp, 1);
    struct tcp_pcb *s = tcp_accept(&lp.p.b.st, lp.p.lis);
    cr_assert_not_null(s);
    cr_assert_eq(s->ctx, &lp.k.b[1]);
    tcp_abort(&lp.p.b.st, s);
    lpair_fini(&lp);
}

Test(tcp_listen, fin_then_rst_before_accept_leaves_the_queue)
{
    struct lpair lp;
    lpair_init(&lp, NULL, 4);
    lpair_connect(&lp, 0);
    tcp_shutdown(&lp.p.a.st, lp.c[0], 1);
    step(&lp.p, T_MS);
    step(&lp.p, T_MS);
    cr_assert_eq(lp.k.b[0].events[TCP_EV_FIN], 1);
    cr_assert_eq(lp.p.lis->acc_qlen, 1, "a half-closed connection is still accepted");
    tcp_abort(&lp.p.a.st, lp.c[0]);
    lp.c[0] = NULL;
    step(&lp.p, T_MS);
    assert_gone(&lp, 0, EPIPE); /* reset in CLOSE_WAIT, as Linux */
    lpair_fini(&lp);
}

/* The second of three queued children dies: the queue keeps its order and its tail. */
Test(tcp_listen, middle_child_dies_queue_stays_linked)
{
    struct lpair lp;
    lpair_init(&lp, NULL, 4);
    for (int i = 0; i < 3; i++)
        lpair_connect(&lp, i);
    cr_assert_eq(lp.p.lis->acc_qlen, 3);
    tcp_abort(&lp.p.a.st, lp.c[2]); /* the tail */
    lp.c[2] = NULL;
    step(&lp.p, T_MS);
    tcp_abort(&lp.p.a.st, lp.c[0]); /* the head */
    lp.c[0] = NULL;
    step(&lp.p, T_MS);
    cr_assert_eq(lp.p.lis->acc_qlen, 1);
    cr_assert_eq(lp.p.lis->acc_head, lp.p.lis->acc_tail);
    lpair_connect(&lp, 3);
    struct tcp_pcb *s1 = tcp_accept(&lp.p.b.st, lp.p.lis);
    struct tcp_pcb *s3 = tcp_accept(&lp.p.b.st, lp.p.lis);
    cr_assert_eq(s1->ctx, &lp.k.b[1]);
    cr_assert_eq(s3->ctx, &lp.k.b[3]);
    cr_assert_null(tcp_accept(&lp.p.b.st, lp.p.lis));
    tcp_abort(&lp.p.b.st, s1);
    tcp_abort(&lp.p.b.st, s3);
    lpair_fini(&lp);
}

/* Keepalive gives up on a silent peer while the connection waits to be accepted. */
Test(tcp_listen, timeout_before_accept_leaves_the_queue)
{
    struct lpair lp;
    lpair_init(&lp, NULL, 4);
    lp.p.lis->keepalive = true;
    lp.p.lis->keep_idle_s = 1;
    lp.p.lis->keep_intvl_s = 1;
    lp.p.lis->keep_cnt = 2;
    lpair_connect(&lp, 0);
    cr_assert_eq(lp.p.lis->acc_qlen, 1);
    /* Only b runs from here: the peer is silent. */
    for (int i = 0; i < 100 && lp.p.lis->acc_qlen; i++)
        stest_step(&lp.p.b, 100 * T_MS);
    assert_gone(&lp, 0, ETIMEDOUT);
    lpair_fini(&lp);
}

/* Closing the listener resets its queued children once each, with their own sequence
 * numbers, and a child that died before is not reset again. */
Test(tcp_listen, listener_close_resets_live_children_only)
{
    struct lpair lp;
    lpair_init(&lp, NULL, 4);
    lpair_connect(&lp, 0);
    lpair_connect(&lp, 1);
    tcp_abort(&lp.p.a.st, lp.c[0]);
    lp.c[0] = NULL;
    step(&lp.p, T_MS);
    uint64_t rst_before = stest_cnt(&lp.p.b, "tcp_tx_rst");
    tcp_close(&lp.p.b.st, lp.p.lis);
    lp.p.lis = NULL;
    step(&lp.p, T_MS);
    step(&lp.p, T_MS);
    cr_assert_eq(stest_cnt(&lp.p.b, "tcp_tx_rst") - rst_before, 1);
    cr_assert_eq(lp.cb[1].closed_err, ECONNRESET, "the live child's peer accepted the RST");
    cr_assert_eq(lp.k.b[0].events[TCP_EV_CLOSED], 1);
    cr_assert_eq(lp.k.b[1].events[TCP_EV_CLOSED], 1);
    cr_assert_eq(lp.p.b.st.tcp->in_use, 0);
    lpair_fini(&lp);
}

static struct tcp_pcb *connect_nowait(struct lpair *lp, int i)
{
    lp->c[i] = tcp_new(&lp->p.a.st, &tbuf_ops, tbuf_event, &lp->cb[i]);
    cr_assert_eq(tcp_connect(&lp->p.a.st, lp->c[i], ADDR_B, 80), 0);
    return lp->c[i];
}

/* The final ACK of a handshake finds the accept queue full: dropped, no RST (Linux's
 * tcp_abort_on_overflow = 0); the repeated SYN-ACK completes it once there is room. */
Test(tcp_listen, full_accept_queue_drops_the_final_ack)
{
    struct lpair lp;
    lpair_init(&lp, NULL, 2);
    lpair_connect(&lp, 0);
    connect_nowait(&lp, 1);
    connect_nowait(&lp, 2);
    for (int t = 0; t < 20; t++)
        step(&lp.p, T_MS);
    cr_assert_eq(lp.p.lis->acc_qlen, 2);
    cr_assert_eq(lp.c[2]->state, TCPS_ESTABLISHED, "the client saw the SYN-ACK");
    cr_assert_geq(stest_cnt(&lp.p.b, "tcp_drop_accept_full"), 1);
    cr_assert_eq(stest_cnt(&lp.p.b, "tcp_tx_rst"), 0, "a completed handshake was reset");
    struct tcp_pcb *s0 = tcp_accept(&lp.p.b.st, lp.p.lis);
    cr_assert_not_null(s0);
    for (int t = 0; t < 100 && lp.p.lis->acc_qlen < 2; t++)
        step(&lp.p, 100 * T_MS);
    cr_assert_eq(lp.p.lis->acc_qlen, 2, "the dropped handshake completed later");
    struct tcp_pcb *s1 = tcp_accept(&lp.p.b.st, lp.p.lis);
    struct tcp_pcb *s2 = tcp_accept(&lp.p.b.st, lp.p.lis);
    cr_assert_eq(s2->ctx, &lp.k.b[2]);
    /* The late connection carries data. */
    tbuf_write(&lp.cb[2], (const uint8_t *)"hello", 5);
    tcp_output(&lp.p.a.st, lp.c[2]);
    step(&lp.p, T_MS);
    step(&lp.p, T_MS);
    uint8_t d[8];
    cr_assert_eq(tbuf_read(&lp.k.b[2], d, sizeof(d)), 5);
    cr_assert_eq(stest_cnt(&lp.p.b, "tcp_tx_rst"), 0);
    tcp_abort(&lp.p.b.st, s0);
    tcp_abort(&lp.p.b.st, s1);
    tcp_abort(&lp.p.b.st, s2);
    lpair_fini(&lp);
}

/* A SYN to a listener whose accept queue is full is dropped (no cookie either): the
 * client's retransmitted SYN gets through once the application accepted. */
Test(tcp_listen, full_accept_queue_drops_syn)
{
    struct lpair lp;
    lpair_init(&lp, NULL, 1);
    lpair_connect(&lp, 0);
    connect_nowait(&lp, 1);
    for (int t = 0; t < 20; t++)
        step(&lp.p, T_MS);
    cr_assert_eq(lp.c[1]->state, TCPS_SYN_SENT);
    cr_assert_eq(stest_cnt(&lp.p.b, "tcp_syncookies_sent"), 0);
    struct tcp_pcb *s0 = tcp_accept(&lp.p.b.st, lp.p.lis);
    for (int t = 0; t < 50 && lp.c[1]->state != TCPS_ESTABLISHED; t++)
        step(&lp.p, 100 * T_MS);
    cr_assert_eq(lp.c[1]->state, TCPS_ESTABLISHED);
    step(&lp.p, T_MS);
    cr_assert_eq(lp.p.lis->acc_qlen, 1);
    cr_assert_eq(stest_cnt(&lp.p.b, "tcp_tx_rst"), 0);
    tcp_abort(&lp.p.b.st, s0);
    lpair_fini(&lp);
}

/* tcp.abort_on_overflow = true: the overflowing handshake is reset instead. */
Test(tcp_listen, abort_on_overflow_resets)
{
    struct stack_params sp;
    stack_params_defaults(&sp);
    sp.pktbufs = 1024;
    sp.tcp_abort_on_overflow = true;
    struct lpair lp;
    lpair_init(&lp, &sp, 2);
    lpair_connect(&lp, 0);
    connect_nowait(&lp, 1);
    connect_nowait(&lp, 2);
    for (int t = 0; t < 20; t++)
        step(&lp.p, T_MS);
    cr_assert_eq(lp.p.lis->acc_qlen, 2);
    cr_assert_eq(stest_cnt(&lp.p.b, "tcp_tx_rst"), 1);
    cr_assert_eq(lp.cb[2].closed_err, ECONNRESET);
    lpair_fini(&lp);
}
