/* UDP: binding rules, demultiplexing, checksums, broadcast, errors, output. */
#include <criterion/criterion.h>
#include <errno.h>

#include "stack/udp.h"
#include "tests/lib/stacktest.h"

struct rx {
    int n;
    uint32_t src;
    uint16_t sport;
    uint8_t data[70000];
    uint32_t len;
    int err;
    int full; /* simulate a full receive buffer */
    struct udp_meta meta;
};

static int on_rx(void *ctx, const struct udp_meta *m, const uint8_t *d, uint32_t len)
{
    struct rx *r = ctx;
    if (r->full)
        return -ENOBUFS;
    r->n++;
    r->src = m->src;
    r->sport = m->sport;
    r->meta = *m;
    memcpy(r->data, d, len);
    r->len = len;
    return 0;
}

static void on_err(void *ctx, int err)
{
    ((struct rx *)ctx)->err = err;
}

static uint32_t udp_frame(uint8_t *f, uint32_t src, uint16_t sport, uint32_t dst, uint16_t dport,
                          const void *payload, uint32_t len, bool with_csum)
{
    uint8_t u[1600];
    wr16(u, sport);
    wr16(u + 2, dport);
    wr16(u + 4, (uint16_t)(8 + len));
    wr16(u + 6, 0);
    memcpy(u + 8, payload, len);
    if (with_csum) {
        uint16_t c =
            csum_fold(csum_partial(u, 8 + len, csum_pseudo4(src, dst, 17, (uint16_t)(8 + len))));
        wr16(u + 6, c ? c : 0xffff);
    }
    const uint8_t *dmac =
        dst == 0x0ac800ff ? (const uint8_t[6]){0xff, 0xff, 0xff, 0xff, 0xff, 0xff} : st_mac_a;
    return build_ip4(f, dmac, st_mac_peer, src, dst, 17, 1, 0, 64, u, 8 + len);
}

static struct rx r1, r2;

Test(udp, bind_rules)
{
    struct stest t;
    stest_init(&t, NULL);
    struct udp_pcb a, b, c;
    udp_pcb_init(&t.st, &a, on_rx, on_err, &r1);
    udp_pcb_init(&t.st, &b, on_rx, on_err, &r2);
    udp_pcb_init(&t.st, &c, on_rx, on_err, &r2);
    cr_assert_eq(udp_bind(&t.st, &a, 0, 5000), 0);
    cr_assert_eq(udp_bind(&t.st, &a, 0, 5001), -EINVAL, "already bound");
    cr_assert_eq(udp_bind(&t.st, &b, ST_ADDR_A, 5000), -EADDRINUSE);
    cr_assert_eq(udp_bind(&t.st, &b, 0x01020304, 5002), -EADDRNOTAVAIL);
    a.reuseaddr = b.reuseaddr = true;
    cr_assert_eq(udp_bind(&t.st, &b, ST_ADDR_A, 5000), 0, "SO_REUSEADDR on both");
    /* Ephemeral ports come from the configured range and differ. */
    struct udp_pcb e[10];
    for (int i = 0; i < 10; i++) {
        udp_pcb_init(&t.st, &e[i], on_rx, on_err, &r2);
        cr_assert_eq(udp_bind(&t.st, &e[i], 0, 0), 0);
        cr_assert(e[i].lport >= 32768 && e[i].lport <= 60999);
        for (int k = 0; k < i; k++)
            cr_assert_neq(e[i].lport, e[k].lport);
    }
    cr_assert_eq(udp_count(&t.st), 12);
    udp_close(&t.st, &a);
    cr_assert_eq(udp_bind(&t.st, &c, 0, 5000), -EADDRINUSE, "b still holds it");
    udp_close(&t.st, &b);
    cr_assert_eq(udp_bind(&t.st, &c, 0, 5000), 0);
    for (int i = 0; i < 10; i++)
        udp_close(&t.st, &e[i]);
    udp_close(&t.st, &c);
    cr_assert_eq(udp_count(&t.st), 0);
    stest_fini(&t);
}

Test(udp, small_range_runs_out)
{
    struct stack_params p;
    stack_params_defaults(&p);
    p.pktbufs = 256;
    p.udp_port_min = 40000;
    p.udp_port_max = 40002;
    struct stest t;
    stest_init(&t, &p);
    struct udp_pcb e[4];
    for (int i = 0; i < 3; i++) {
        udp_pcb_init(&t.st, &e[i], on_rx, on_err, &r1);
        cr_assert_eq(udp_bind(&t.st, &e[i], 0, 0), 0);
    }
    udp_pcb_init(&t.st, &e[3], on_rx, on_err, &r1);
    cr_assert_eq(udp_bind(&t.st, &e[3], 0, 0), -EAGAIN);
    stest_fini(&t);
}

static bool taken_40003(struct stack *st, int proto, uint16_t port)
{
    return proto == 17 && port == 40003;
}

/* Several workers: worker 1 of 2 picks only odd ephemeral ports, and skips a port another
 * worker claimed. */
Test(udp, ephemeral_ports_name_their_worker)
{
    struct stack_params p;
    stack_params_defaults(&p);
    p.pktbufs = 256;
    p.udp_port_min = 40000;
    p.udp_port_max = 40009;
    p.port_stride = 2;
    p.port_offset = 1;
    struct stest t;
    stest_init(&t, &p);
    t.st.port_taken = taken_40003;
    struct udp_pcb e[5];
    for (int i = 0; i < 4; i++) {
        udp_pcb_init(&t.st, &e[i], on_rx, on_err, &r1);
        cr_assert_eq(udp_bind(&t.st, &e[i], 0, 0), 0);
        cr_assert_eq(e[i].lport % 2, 1, "port %u", e[i].lport);
        cr_assert_neq(e[i].lport, 40003);
    }
    udp_pcb_init(&t.st, &e[4], on_rx, on_err, &r1);
    cr_assert_eq(udp_bind(&t.st, &e[4], 0, 0), -EAGAIN, "40001..40009 odd, minus 40003: 4");
    stest_fini(&t);
}

static int steered;
static bool steer_all(struct stack *st, struct pktbuf *pb, const struct ip4_view *ip)
{
    steered++;
    pktbuf_free(pb);
    return true;
}

/* Several workers: local delivery asks the steering hook first; a datagram another worker
 * handed over (pktbuf.steered) is delivered here without asking again. */
Test(udp, steering_hook_sees_local_datagrams_once)
{
    struct stest t;
    stest_init(&t, NULL);
    stest_learn_peer(&t);
    struct udp_pcb a;
    memset(&r1, 0, sizeof(r1));
    udp_pcb_init(&t.st, &a, on_rx, on_err, &r1);
    cr_assert_eq(udp_bind(&t.st, &a, 0, 5000), 0);
    uint8_t f[200];
    uint32_t n = udp_frame(f, ST_ADDR_PEER, 9, ST_ADDR_A, 5000, "hi", 2, true);
    t.st.steer = steer_all;
    steered = 0;
    stest_rx(&t, f, n);
    cr_assert_eq(steered, 1);
    cr_assert_eq(r1.n, 0, "taken by the hook");
    /* As the receiving worker: the same datagram, marked, goes to the socket. */
    struct pktbuf *pb = pktbuf_alloc(&t.st.pool);
    memcpy(pktbuf_put(pb, n - 14), f + 14, n - 14);
    pb->steered = 1;
    stack_input_steered(&t.st, pb);
    cr_assert_eq(steered, 1);
    cr_assert_eq(r1.n, 1);
    cr_assert_eq(r1.len, 2);
    udp_close(&t.st, &a);
    stest_fini(&t);
}

Test(udp, delivery_prefers_connected_and_checks_checksum)
{
    struct stest t;
    stest_init(&t, NULL);
    stest_learn_peer(&t);
    memset(&r1, 0, sizeof(r1));
    memset(&r2, 0, sizeof(r2));
    struct udp_pcb any, conn;
    udp_pcb_init(&t.st, &any, on_rx, on_err, &r1);
    udp_pcb_init(&t.st, &conn, on_rx, on_err, &r2);
    any.reuseaddr = conn.reuseaddr = true;
    cr_assert_eq(udp_bind(&t.st, &any, 0, 7000), 0);
    cr_assert_eq(udp_bind(&t.st, &conn, 0, 7000), 0);
    cr_assert_eq(udp_connect(&t.st, &conn, ST_ADDR_PEER, 9000), 0);
    cr_assert_eq(conn.laddr, ST_ADDR_A, "connect picks the route's source address");
    uint8_t f[200];
    stest_rx(&t, f, udp_frame(f, ST_ADDR_PEER, 9000, ST_ADDR_A, 7000, "abc", 3, true));
    cr_assert_eq(r2.n, 1, "the connected socket wins for its peer");
    cr_assert_eq(r1.n, 0);
    cr_assert_eq(memcmp(r2.data, "abc", 3), 0);
    cr_assert(r2.meta.dst == ST_ADDR_A && r2.meta.spec_dst == ST_ADDR_A && !r2.meta.bcast,
              "IP_PKTINFO: the destination, and the address a reply comes from");
    cr_assert_eq(r2.meta.ifindex, 1);
    stest_rx(&t, f, udp_frame(f, ST_ADDR_PEER, 9001, ST_ADDR_A, 7000, "xy", 2, false));
    cr_assert_eq(r1.n, 1, "other peers reach the wildcard socket; checksum 0 is 'none'");
    cr_assert_eq(r1.sport, 9001);
    uint32_t n = udp_frame(f, ST_ADDR_PEER, 9000, ST_ADDR_A, 7000, "abc", 3, true);
    f[n - 1] ^= 1;
    stest_rx(&t, f, n);
    cr_assert_eq(stest_cnt(&t, "udp_drop_csum"), 1);
    r2.full = 1;
    stest_rx(&t, f, udp_frame(f, ST_ADDR_PEER, 9000, ST_ADDR_A, 7000, "abc", 3, true));
    cr_assert_eq(stest_cnt(&t, "udp_drop_rcvbuf"), 1);
    cr_assert_eq(stest_tx_count(&t), 0, "no ICMP for a full buffer");
    cr_assert_eq(udp_connect(&t.st, &conn, 0, 0), 0);
    cr_assert(!conn.connected && conn.laddr == 0, "dissolving drops the source connect chose");
    udp_close(&t.st, &any);
    udp_close(&t.st, &conn);
    stest_fini(&t);
}

Test(udp, broadcast_to_all_bound_sockets)
{
    struct stest t;
    stest_init(&t, NULL);
    stest_learn_peer(&t);
    memset(&r1, 0, sizeof(r1));
    memset(&r2, 0, sizeof(r2));
    struct udp_pcb a, b;
    udp_pcb_init(&t.st, &a, on_rx, on_err, &r1);
    udp_pcb_init(&t.st, &b, on_rx, on_err, &r2);
    a.reuseaddr = b.reuseaddr = true;
    udp_bind(&t.st, &a, 0, 67);
    udp_bind(&t.st, &b, 0, 67);
    uint8_t f[200];
    stest_rx(&t, f, udp_frame(f, ST_ADDR_PEER, 68, 0x0ac800ff, 67, "b", 1, true));
    cr_assert_eq(r1.n + r2.n, 2);
    cr_assert(r1.meta.bcast && r1.meta.dst == 0x0ac800ff && r1.meta.spec_dst == ST_ADDR_A,
              "a broadcast's reply comes from the interface's address");
    stest_rx(&t, f, udp_frame(f, ST_ADDR_PEER, 68, 0x0ac800ff, 99, "b", 1, true));
    cr_assert_eq(stest_tx_count(&t), 0, "never port unreachable for a broadcast");
    udp_close(&t.st, &a);
    udp_close(&t.st, &b);
    stest_fini(&t);
}

Test(udp, port_unreachable_reaches_connected_socket)
{
    struct stest t;
    stest_init(&t, NULL);
    stest_learn_peer(&t);
    memset(&r1, 0, sizeof(r1));
    struct udp_pcb a;
    udp_pcb_init(&t.st, &a, on_rx, on_err, &r1);
    cr_assert_eq(udp_connect(&t.st, &a, ST_ADDR_PEER, 4444), 0);
    cr_assert_eq(udp_output(&t.st, &a, 0, 0, (const uint8_t *)"q", 1), 0);
    stest_step(&t, 0);
    uint8_t out[200];
    uint32_t n = stest_tx(&t, out, sizeof(out));
    cr_assert_eq(n, 60);
    /* The kernel's answer: port unreachable quoting our datagram. */
    uint8_t ic[8 + 28] = {ICMP_DEST_UNREACH, ICMP_UNREACH_PORT};
    memcpy(ic + 8, out + 14, 28);
    wr16(ic + 2, csum(ic, sizeof(ic)));
    uint8_t f[200];
    stest_rx(
        &t, f,
        build_ip4(f, st_mac_a, st_mac_peer, ST_ADDR_PEER, ST_ADDR_A, 1, 5, 0, 64, ic, sizeof(ic)));
    cr_assert_eq(r1.err, ECONNREFUSED);
    udp_close(&t.st, &a);
    stest_fini(&t);
}

Test(udp, output_header_checksum_and_rules)
{
    struct stest t;
    stest_init(&t, NULL);
    stest_learn_peer(&t);
    struct udp_pcb a;
    udp_pcb_init(&t.st, &a, on_rx, on_err, &r1);
    cr_assert_eq(udp_output(&t.st, &a, 0, 0, (const uint8_t *)"q", 1), -EDESTADDRREQ);
    cr_assert_eq(udp_output(&t.st, &a, 0x0ac800ff, 9, (const uint8_t *)"q", 1), -EACCES);
    cr_assert_eq(udp_output(&t.st, &a, 0x08080808, 9, (const uint8_t *)"q", 1), -ENETUNREACH);
    cr_assert_eq(udp_output(&t.st, &a, ST_ADDR_PEER, 9, NULL, 65508), -EMSGSIZE);
    cr_assert_eq(udp_output_from(&t.st, &a, 0x0a0a0a0a, ST_ADDR_PEER, 9, (const uint8_t *)"q", 1),
                 -EINVAL, "a source address that is not ours");
    cr_assert_eq(stest_cnt(&t, "udp_drop_bad_src"), 1);
    a.ttl = 7;
    cr_assert_eq(udp_output(&t.st, &a, ST_ADDR_PEER, 9, (const uint8_t *)"hello", 5), 0);
    cr_assert(a.bound && a.lport >= 32768, "implicit bind on first send");
    stest_step(&t, 0);
    uint8_t out[200];
    uint32_t n = stest_tx(&t, out, sizeof(out));
    cr_assert_eq(n, 60);
    struct ip4_view ip;
    cr_assert_eq(ip4_parse(out + 14, n - 14, &ip), IP4_OK);
    cr_assert_eq(ip.ttl, 7);
    struct udp_view u;
    cr_assert_eq(udp_parse(out + 34, ip.tot_len - 20, &u), 0);
    cr_assert_eq(u.len, 13);
    cr_assert_eq(u.sport, a.lport);
    cr_assert_eq(u.dport, 9);
    cr_assert_eq(
        csum_fold(csum_partial(out + 34, 13, csum_pseudo4(ST_ADDR_A, ST_ADDR_PEER, 17, 13))), 0);
    cr_assert_eq(memcmp(out + 42, "hello", 5), 0);
    udp_close(&t.st, &a);
    stest_fini(&t);
}

Test(udp, big_datagram_between_two_stacks)
{
    static const uint8_t mac_b[6] = {2, 0, 0, 0, 0, 3};
    struct nic_fault_params fp = {
        .enabled = true, .seed = 3, .reorder = 0.3, .duplicate = 0.1, .rx = true, .tx = true};
    struct stest a, b;
    stest_init_addr(&a, NULL, ST_ADDR_A, st_mac_a, &fp);
    stest_init_addr(&b, NULL, 0x0ac80003, mac_b, &fp);
    nic_sim_link(&a.nic, &b.nic);
    static struct rx rb;
    memset(&rb, 0, sizeof(rb));
    struct udp_pcb pa, pb;
    udp_pcb_init(&a.st, &pa, on_rx, on_err, &r1);
    udp_pcb_init(&b.st, &pb, on_rx, on_err, &rb);
    cr_assert_eq(udp_bind(&b.st, &pb, 0, 6000), 0);
    static uint8_t data[60000];
    for (uint32_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 31 + 7);
    for (int k = 0; k < 10; k++) {
        cr_assert_eq(udp_output(&a.st, &pa, 0x0ac80003, 6000, data, sizeof(data)), 0);
        for (int i = 0; i < 50 && rb.n <= k; i++) {
            stest_step(&a, T_MS);
            b.now = a.now;
            stest_step(&b, 0);
        }
    }
    cr_assert_eq(rb.n, 10, "every 60000-byte datagram arrives");
    cr_assert_eq(rb.len, sizeof(data));
    cr_assert_eq(memcmp(rb.data, data, sizeof(data)), 0);
    udp_close(&a.st, &pa);
    udp_close(&b.st, &pb);
    stest_fini(&a);
    stest_fini(&b);
}

Test(udp, to_own_address_loops_back_without_the_nic)
{
    struct stest t;
    stest_init(&t, NULL);
    static struct rx ra, rb;
    memset(&ra, 0, sizeof(ra));
    memset(&rb, 0, sizeof(rb));
    struct udp_pcb a, b;
    udp_pcb_init(&t.st, &a, on_rx, on_err, &ra);
    udp_pcb_init(&t.st, &b, on_rx, on_err, &rb);
    cr_assert_eq(udp_bind(&t.st, &a, 0, 7000), 0);
    static uint8_t data[60000];
    for (uint32_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 13 + 1);
    cr_assert_eq(udp_output(&t.st, &b, ST_ADDR_A, 7000, data, sizeof(data)), 0);
    cr_assert_eq(ra.n, 0, "delivered on the next poll, not from inside the output path");
    stest_step(&t, 0);
    cr_assert_eq(ra.n, 1);
    cr_assert_eq(ra.src, ST_ADDR_A);
    cr_assert_eq(ra.sport, b.lport);
    cr_assert_eq(ra.len, sizeof(data), "no fragmenting on the way");
    cr_assert_eq(memcmp(ra.data, data, sizeof(data)), 0);
    cr_assert_eq(stest_tx_count(&t), 0, "nothing reached the NIC");
    cr_assert_eq(stest_cnt(&t, "ip4_tx_local"), 1);
    /* a reply the other way */
    cr_assert_eq(udp_output(&t.st, &a, ST_ADDR_A, b.lport, (const uint8_t *)"ok", 2), 0);
    stest_step(&t, 0);
    cr_assert_eq(rb.n, 1);
    cr_assert_eq(memcmp(rb.data, "ok", 2), 0);
    /* queued datagrams still waiting at shutdown are freed (ASan checks the leak) */
    cr_assert_eq(udp_output(&t.st, &b, ST_ADDR_A, 7000, (const uint8_t *)"x", 1), 0);
    udp_close(&t.st, &a);
    udp_close(&t.st, &b);
    stest_fini(&t);
}
