/* libFuzzer target: the whole receive path (eth -> arp/ip4 -> frag -> icmp/udp/tcp-closed).
 *
 * Input: a sequence of records [u8 op][u16 len][len bytes]. op bit 0x80 advances the clock
 * by (op & 0x7f) * 100 ms first (timers: ARP, reassembly), the bytes are one frame.
 * After each run the pools must be whole again once pending work is flushed. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nic/nic.h"
#include "stack/stack.h"
#include "stack/tcp.h"
#include "tests/lib/tcptest.h"
#include "stack/wire.h"

static struct stack st;
static struct nic nic;
static struct tbuf lbuf, cbuf[8];
static struct tcp_pcb *children[8];
static int nchildren;

/* A listener on port 80 so handshakes, data and closes run too; children get small
 * in-memory buffers and are aborted after every input. */
static int on_accept(void *lctx, struct tcp_pcb *l, struct tcp_pcb *c)
{
    if (nchildren == 8)
        return -1;
    struct tbuf *b = &cbuf[nchildren];
    b->snd_head = b->snd_tail = b->rcv_head = b->rcv_tail = 0;
    b->closed_err = -1;
    c->buf = &tbuf_ops;
    c->ctx = b;
    c->ev = tbuf_event;
    children[nchildren++] = c;
    return 0;
}
static uint64_t now = 1000000000000ull;

static void setup(void)
{
    struct stack_params p;
    stack_params_defaults(&p);
    p.pktbufs = 2048;
    p.frag_max_datagrams = 16;
    p.forwarding = true; /* cover the forward path as well */
    p.routes[0] = (struct route_entry){.dst = 0, .plen = 0, .via = 0x0ac80001, .ifidx = -1};
    p.n_routes = 1;
    p.rules[0] = (struct hook_rule){
        .point = HOOK_LOCAL_IN, .action = HOOK_DROP, .proto = 17, .rate_pps = 1000};
    p.n_rules = 1;
    if (stack_init(&st, &p, now))
        abort();
    struct nic_params np = {.mtu = 1500, .nqueues = 1, .rx_ring = 64, .tx_ring = 64};
    strcpy(np.name, "fuzz0");
    strcpy(np.backend, "sim");
    memcpy(np.mac, (uint8_t[6]){2, 0, 0, 0, 0, 2}, 6);
    if (nic_open(&nic, &np))
        abort();
    struct stack_iface_params ip = {.mtu = 1500, .addr = 0x0ac80002, .plen = 24};
    strcpy(ip.name, "fuzz0");
    memcpy(ip.mac, np.mac, 6);
    if (stack_add_if(&st, &ip, &nic, 0) < 0)
        abort();
    tbuf_init(&lbuf, 64, 64);
    for (int i = 0; i < 8; i++)
        tbuf_init(&cbuf[i], 8192, 8192);
    struct tcp_pcb *l = tcp_new(&st, &tbuf_ops, tbuf_event, &lbuf);
    if (!l || tcp_bind(&st, l, 0, 80) || tcp_listen(&st, l, 4, on_accept, NULL))
        abort();
}

static void drain(void)
{
    struct pktbuf *pb;
    while ((pb = nic_sim_take_tx(&nic)))
        pktbuf_free(pb);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!st.nifs)
        setup();
    while (size >= 3) {
        uint8_t op = data[0];
        uint32_t len = rd16(data + 1);
        data += 3;
        size -= 3;
        if (len > size)
            len = (uint32_t)size;
        if (op & 0x80)
            now += (uint64_t)(op & 0x7f) * 100000000ull;
        stack_poll(&st, now);
        if (len <= 9000 && nic_sim_inject(&nic, data, len) == 0)
            stack_rx(&st, 64);
        stack_flush(&st);
        drain();
        data += len;
        size -= len;
    }
    /* Drop the connections this input made (taken from the accept queue first). */
    for (int i = 0; i < nchildren; i++)
        if (cbuf[i].closed_err < 0) /* still alive (a closed child was freed by the stack) */
            tcp_abort(&st, children[i]);
    nchildren = 0;
    /* Let every timer run out (timers re-arm relative to when they fire, so step the
     * clock): nothing may stay allocated afterwards. */
    for (int i = 0; i < 40; i++) {
        now += 10ull * 1000000000ull;
        stack_poll(&st, now);
        stack_flush(&st);
        drain();
    }
    if (st.pool.nfree != st.pool.count || st.large.nfree != st.large.count) {
        fprintf(stderr, "pool %u/%u large %u/%u\n", st.pool.nfree, st.pool.count, st.large.nfree,
                st.large.count);
        abort();
    } /* a pktbuf leaked */
    return 0;
}
