#include "tests/lib/tcppair.h"

#include <criterion/criterion.h>
#include <string.h>

const uint8_t mac_b[6] = {2, 0, 0, 0, 0, 3};

int on_accept(void *lctx, struct tcp_pcb *l, struct tcp_pcb *child)
{
    struct pair *p = lctx;
    child->buf = &tbuf_ops;
    child->ctx = &p->sb;
    child->ev = tbuf_event;
    return 0;
}

/* Frames from one unlinked sim NIC to the other, through the filter. */
static void carry(struct pair *p, struct stest *from, struct stest *to, bool a_to_b)
{
    struct pktbuf *pb;
    while ((pb = nic_sim_take_tx(&from->nic))) {
        if (!p->drop(p, pktbuf_data(pb), pb->len, a_to_b))
            cr_assert_eq(nic_sim_inject(&to->nic, pktbuf_data(pb), pb->len), 0);
        pktbuf_free(pb);
    }
}

void step(struct pair *p, uint64_t ns)
{
    stest_step(&p->a, ns);
    p->b.now = p->a.now;
    if (p->drop)
        carry(p, &p->a, &p->b, true);
    stest_step(&p->b, 0);
    if (p->drop)
        carry(p, &p->b, &p->a, false);
}

void pair_init(struct pair *p, const struct nic_fault_params *fp, uint32_t bufsz)
{
    pair_init_filtered(p, fp, bufsz, NULL);
}

void pair_init_filtered(struct pair *p, const struct nic_fault_params *fp, uint32_t bufsz,
                        drop_fn drop)
{
    pair_init_with(p, NULL, fp, bufsz, drop, NULL);
}

void pair_init_with(struct pair *p, const struct stack_params *sp,
                    const struct nic_fault_params *fp, uint32_t bufsz, drop_fn drop,
                    void (*setup)(struct pair *p))
{
    memset(p, 0, sizeof(*p));
    stest_init_addr(&p->a, sp, ST_ADDR_A, st_mac_a, fp);
    stest_init_addr(&p->b, sp, ADDR_B, mac_b, fp);
    p->b.now = p->a.now;
    p->drop = drop;
    if (!drop)
        nic_sim_link(&p->a.nic, &p->b.nic);
    tbuf_init(&p->ca, bufsz, bufsz);
    tbuf_init(&p->sb, bufsz, bufsz);
    tbuf_init(&p->lb, bufsz, bufsz); /* a listener's: the size its connections get */
    p->lis = tcp_new(&p->b.st, &tbuf_ops, tbuf_event, &p->lb);
    cr_assert_eq(tcp_bind(&p->b.st, p->lis, 0, 80), 0);
    cr_assert_eq(tcp_listen(&p->b.st, p->lis, 16, on_accept, p), 0);
    p->cli = tcp_new(&p->a.st, &tbuf_ops, tbuf_event, &p->ca);
    if (setup)
        setup(p);
    cr_assert_eq(tcp_connect(&p->a.st, p->cli, ADDR_B, 80), 0);
    for (int i = 0; i < 10000 && !(p->cli->state == TCPS_ESTABLISHED && p->lis->acc_qlen); i++)
        step(p, T_MS);
    cr_assert_eq(p->cli->state, TCPS_ESTABLISHED);
    p->srv = tcp_accept(&p->b.st, p->lis);
    cr_assert_not_null(p->srv);
    cr_assert_eq(p->ca.events[TCP_EV_CONNECTED], 1);
}

void pair_fini(struct pair *p)
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

uint8_t pattern(uint64_t i)
{
    return (uint8_t)(i * 131 + (i >> 9));
}

uint64_t transfer(struct pair *p, uint64_t total, uint64_t max_ms)
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
