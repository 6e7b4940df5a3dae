/* Daemon side of the shared-memory contract (daemon/client.c), driven by a fake client in
 * the same process: requests, sockets, fifos, wake-ups, limits and hostile memory. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "daemon/client.h"
#include "daemon/log.h"
#include "shm/shm_ring.h"
#include "tests/lib/stacktest.h"

#define NCH   2
#define NSOCK 4
#define FIFO  (1024u * 1024)

struct fx {
    struct stest t;
    struct client cl;
    void *mem;
    size_t size;
    uint32_t req_tail[NCH], cpl_head[NCH], seq;
};

static struct fx *fx_new(void)
{
    struct fx *f = calloc(1, sizeof(*f));
    stest_init(&f->t, NULL);
    stest_learn_peer(&f->t);
    f->size = client_region_size(NCH, NSOCK, FIFO);
    f->mem = mmap(NULL, f->size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(f->mem, MAP_FAILED);
    cr_assert_eq(client_init(&f->cl, f->mem, f->size, 1, 0, NCH, NSOCK, FIFO, 65536, 65536), 0);
    f->cl.sess_fd = -1;
    for (int i = 0; i < NCH; i++)
        f->cl.chan_efd[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    client_attach(&f->cl, &f->t.st);
    return f;
}

static void fx_free(struct fx *f)
{
    client_close_all(&f->cl);
    for (int i = 0; i < NCH; i++)
        close(f->cl.chan_efd[i]);
    client_fini(&f->cl);
    munmap(f->mem, f->size);
    stest_fini(&f->t);
    free(f);
}

static struct shm_region *reg(struct fx *f)
{
    return f->mem;
}
static struct shm_channel *ch(struct fx *f, int i)
{
    size_t stride = sizeof(struct shm_channel); /* shm.h: chan_off is an array */
    return (struct shm_channel *)((uint8_t *)f->mem + reg(f)->chan_off + (size_t)i * stride);
}
static struct shm_sock *sk(struct fx *f, uint32_t handle)
{
    return (struct shm_sock *)((uint8_t *)f->mem + reg(f)->sock_off) + shm_handle_idx(handle);
}

/* Post a request on channel c, run the worker side, return the completion. */
static struct shm_cpl call(struct fx *f, int c, struct shm_req r)
{
    r.seq = ++f->seq;
    cr_assert_eq(shm_req_push(ch(f, c), &f->req_tail[c], &r), 0);
    __atomic_fetch_or(&reg(f)->req_pending, 1ull << c, __ATOMIC_RELEASE);
    client_poll(&f->cl, 64);
    stack_flush(&f->t.st);
    struct shm_cpl cpl;
    cr_assert_eq(shm_cpl_pop(ch(f, c), &f->cpl_head[c], &cpl), 1, "a completion for op %u", r.op);
    cr_assert_eq(cpl.seq, r.seq);
    return cpl;
}

static uint32_t udp_socket(struct fx *f)
{
    struct shm_cpl c = call(f, 0, (struct shm_req){.op = SHM_OP_SOCKET, .arg0 = SOCK_DGRAM});
    cr_assert_geq(c.result, 0);
    return c.handle;
}

Test(client, layout_nop_and_errors)
{
    struct fx *f = fx_new();
    cr_assert_eq(reg(f)->magic, SHM_MAGIC);
    cr_assert_eq(reg(f)->nchannels, NCH);
    cr_assert_eq(call(f, 1, (struct shm_req){.op = SHM_OP_NOP}).result, 0);
    cr_assert_eq(call(f, 0, (struct shm_req){.op = SHM_OP_BIND, .handle = 0x10000}).result, -EBADF);
    cr_assert_eq(call(f, 0, (struct shm_req){.op = 999}).result, -EINVAL);
    cr_assert_eq(call(f, 0, (struct shm_req){.op = SHM_OP_SOCKET, .arg0 = SOCK_RAW}).result,
                 -ESOCKTNOSUPPORT);
    uint32_t h = udp_socket(f);
    cr_assert_eq(call(f, 0, (struct shm_req){.op = SHM_OP_CLOSE, .handle = h}).result, 0);
    cr_assert_eq(call(f, 0, (struct shm_req){.op = SHM_OP_CLOSE, .handle = h}).result, -EBADF,
                 "stale handle");
    uint32_t h2 = udp_socket(f);
    cr_assert_eq(shm_handle_idx(h2), shm_handle_idx(h), "slot reused");
    cr_assert_neq(h2, h, "with a new generation");
    fx_free(f);
}

/* One worker: a listen asking for a group answers "no group" and still listens; a bind
 * that would join one is refused (only several workers have groups). */
Test(client, listening_group_needs_several_workers)
{
    struct fx *f = fx_new();
    struct shm_cpl c = call(f, 0, (struct shm_req){.op = SHM_OP_SOCKET, .arg0 = SOCK_STREAM});
    cr_assert_geq(c.result, 0);
    uint32_t l = c.handle;
    cr_assert_eq(
        call(f, 0, (struct shm_req){.op = SHM_OP_BIND, .handle = l, .addr = 0, .port = 8080})
            .result,
        0);
    c = call(f, 0,
             (struct shm_req){.op = SHM_OP_LISTEN, .handle = l, .arg0 = 8, .flags = SHM_REQ_GROUP});
    cr_assert_eq(c.result, 0);
    cr_assert_eq(c.port, 8080);
    cr_assert_eq(c.optlen, 1);
    cr_assert_eq(c.opt[0], 0, "no group with one worker");
    c = call(f, 0, (struct shm_req){.op = SHM_OP_SOCKET, .arg0 = SOCK_STREAM});
    cr_assert_eq(
        call(f, 0,
             (struct shm_req){
                 .op = SHM_OP_BIND, .handle = c.handle, .port = 8080, .flags = SHM_REQ_GROUP})
            .result,
        -EOPNOTSUPP);
    fx_free(f);
}

Test(client, limits)
{
    struct fx *f = fx_new();
    for (int i = 0; i < NSOCK; i++)
        udp_socket(f);
    cr_assert_eq(call(f, 0, (struct shm_req){.op = SHM_OP_SOCKET, .arg0 = SOCK_DGRAM}).result,
                 -EMFILE);
    cr_assert_eq(f->cl.fifo_used_pages, NSOCK * 2 * 16);
    fx_free(f);

    /* An arena too small for two fifos: ENOBUFS, nothing leaked. */
    f = fx_new();
    client_close_all(&f->cl);
    f->cl.rcvbuf = f->cl.sndbuf = FIFO / 2;
    int rc = call(f, 0, (struct shm_req){.op = SHM_OP_SOCKET, .arg0 = SOCK_DGRAM}).result;
    cr_assert_geq(rc, 0, "rc %d pages %u", rc, f->cl.fifo_pages);
    cr_assert_eq(call(f, 0, (struct shm_req){.op = SHM_OP_SOCKET, .arg0 = SOCK_DGRAM}).result,
                 -ENOBUFS);
    cr_assert_eq(f->cl.fifo_used_pages, FIFO / 4096);
    fx_free(f);
}

Test(client, udp_rx_and_tx_through_fifos)
{
    struct fx *f = fx_new();
    uint32_t h = udp_socket(f);
    cr_assert_eq(call(f, 0, (struct shm_req){.op = SHM_OP_BIND, .handle = h, .port = 5555}).result,
                 0);
    struct shm_cpl c = call(f, 0, (struct shm_req){.op = SHM_OP_GETSOCKNAME, .handle = h});
    cr_assert_eq(c.port, 5555);
    cr_assert_eq(call(f, 0, (struct shm_req){.op = SHM_OP_GETPEERNAME, .handle = h}).result,
                 -ENOTCONN);

    /* A datagram from the wire lands in the RX fifo. */
    uint8_t u[8 + 5] = {0x23, 0x28, 0x15, 0xb3, 0, 13, 0, 0, 'h', 'e', 'l', 'l', 'o'};
    uint8_t fr[100];
    stest_rx(&f->t, fr,
             build_ip4(fr, st_mac_a, st_mac_peer, ST_ADDR_PEER, ST_ADDR_A, 17, 1, 0, 64, u, 13));
    struct shm_sock *s = sk(f, h);
    struct shm_dgram d;
    uint32_t pos, next;
    int len = shm_dgram_peek((uint8_t *)f->mem + s->rx_off, s->rx_size, s->rx_head,
                             __atomic_load_n(&s->rx_tail, __ATOMIC_ACQUIRE), &d, &pos, &next);
    cr_assert_eq(len, 5);
    cr_assert_eq(d.addr, ST_ADDR_PEER);
    cr_assert_eq(d.port, 9000);
    cr_assert_eq(memcmp((uint8_t *)f->mem + s->rx_off + pos, "hello", 5), 0);
    s->rx_head = next;

    /* Two datagrams written into the TX fifo go out after one TX kick. */
    uint32_t tail = s->tx_tail;
    struct shm_dgram out = {.len = 3, .addr = ST_ADDR_PEER, .port = 7};
    cr_assert_eq(shm_dgram_write((uint8_t *)f->mem + s->tx_off, s->tx_size, &tail, s->tx_head, &out,
                                 "abc", NULL, 0),
                 0);
    out.len = 0;
    cr_assert_eq(shm_dgram_write((uint8_t *)f->mem + s->tx_off, s->tx_size, &tail, s->tx_head, &out,
                                 "", NULL, 0),
                 0);
    __atomic_store_n(&s->tx_tail, tail, __ATOMIC_RELEASE);
    s->tx_kick = 1;
    cr_assert_eq(call(f, 0, (struct shm_req){.op = SHM_OP_TX, .handle = h}).result, 0);
    cr_assert_eq(s->tx_kick, 0);
    cr_assert_eq(s->tx_head, tail, "fifo drained");
    uint8_t o[200];
    uint32_t n = stest_tx(&f->t, o, sizeof(o));
    cr_assert_eq(rd16(o + 34), 5555);
    cr_assert_eq(rd16(o + 36), 7);
    cr_assert_eq(memcmp(o + 42, "abc", 3), 0);
    n = stest_tx(&f->t, o, sizeof(o));
    cr_assert_eq(rd16(o + 38), 8, "zero-length datagram");
    cr_assert_gt(n, 0);
    fx_free(f);
}

Test(client, wakes_sleeping_waiters_once)
{
    struct fx *f = fx_new();
    uint32_t h = udp_socket(f);
    call(f, 0, (struct shm_req){.op = SHM_OP_BIND, .handle = h, .port = 5555});
    struct shm_sock *s = sk(f, h);
    s->waiters = 1ull << 1;
    ch(f, 1)->client_sleeping = 1;
    uint8_t u[9] = {0x23, 0x28, 0x15, 0xb3, 0, 9, 0, 0, 'x'};
    uint8_t fr[100];
    uint32_t n = build_ip4(fr, st_mac_a, st_mac_peer, ST_ADDR_PEER, ST_ADDR_A, 17, 1, 0, 64, u, 9);
    stest_rx(&f->t, fr, n);
    stest_rx(&f->t, fr, n); /* one eventfd write per channel per iteration */
    client_flush_wakeups(&f->cl);
    uint64_t v = 0;
    cr_assert_eq(read(f->cl.chan_efd[1], &v, 8), 8);
    cr_assert_eq(v, 1);
    cr_assert_eq(read(f->cl.chan_efd[0], &v, 8), -1, "channel 0 does not wait");
    fx_free(f);
}

/* A reader that emptied the fifo may go to sleep before its new rx_head is visible to the
 * daemon: the fifo then looks non-empty here, and a wake-up only on the empty ->
 * non-empty edge would be lost (the reader slept while the fifo filled). Every delivery
 * checks for sleeping waiters. */
Test(client, wakes_a_waiter_even_when_the_fifo_looks_non_empty)
{
    struct fx *f = fx_new();
    uint32_t h = udp_socket(f);
    call(f, 0, (struct shm_req){.op = SHM_OP_BIND, .handle = h, .port = 5555});
    uint8_t u[9] = {0x23, 0x28, 0x15, 0xb3, 0, 9, 0, 0, 'x'};
    uint8_t fr[100];
    uint32_t n = build_ip4(fr, st_mac_a, st_mac_peer, ST_ADDR_PEER, ST_ADDR_A, 17, 1, 0, 64, u, 9);
    stest_rx(&f->t, fr, n); /* nobody waits yet; the client reads it but has not published */
    client_flush_wakeups(&f->cl);
    struct shm_sock *s = sk(f, h);
    s->waiters = 1ull << 1;
    ch(f, 1)->client_sleeping = 1;
    stest_rx(&f->t, fr, n);
    client_flush_wakeups(&f->cl);
    uint64_t v = 0;
    cr_assert_eq(read(f->cl.chan_efd[1], &v, 8), 8, "the sleeping reader is woken");
    fx_free(f);
}

Test(client, rcvbuf_limit_drops_and_counts)
{
    struct fx *f = fx_new();
    uint32_t h = udp_socket(f);
    call(f, 0, (struct shm_req){.op = SHM_OP_BIND, .handle = h, .port = 5555});
    int v = 4096; /* Linux doubles it: 8192 bytes of records */
    struct shm_req r = {
        .op = SHM_OP_SETSOCKOPT, .handle = h, .arg0 = SOL_SOCKET, .arg1 = SO_RCVBUF, .optlen = 4};
    memcpy(r.opt, &v, 4);
    cr_assert_eq(call(f, 0, r).result, 0);
    struct shm_cpl c =
        call(f, 0,
             (struct shm_req){
                 .op = SHM_OP_GETSOCKOPT, .handle = h, .arg0 = SOL_SOCKET, .arg1 = SO_RCVBUF});
    memcpy(&v, c.opt, 4);
    cr_assert_eq(v, 8192);
    uint8_t u[8 + 1000] = {0x23, 0x28, 0x15, 0xb3, 1000 >> 8 & 0xff, 0, 0, 0};
    wr16(u + 4, 1008);
    uint8_t fr[1100];
    uint32_t n =
        build_ip4(fr, st_mac_a, st_mac_peer, ST_ADDR_PEER, ST_ADDR_A, 17, 1, 0, 64, u, 1008);
    for (int i = 0; i < 10; i++)
        stest_rx(&f->t, fr, n);
    cr_assert_eq(stest_cnt(&f->t, "udp_delivered"), 8);
    cr_assert_eq(stest_cnt(&f->t, "udp_drop_rcvbuf"), 2);
    fx_free(f);
}

Test(client, hostile_indices_break_the_client_only)
{
    struct fx *f = fx_new();
    uint32_t h = udp_socket(f);
    call(f, 0, (struct shm_req){.op = SHM_OP_BIND, .handle = h, .port = 5555});
    /* A request tail far beyond the ring. */
    ch(f, 1)->req_tail = 12345;
    __atomic_fetch_or(&reg(f)->req_pending, 2, __ATOMIC_RELEASE);
    client_poll(&f->cl, 64);
    cr_assert(f->cl.broken);
    cr_assert_eq(f->cl.stats.faults, 1);
    cr_assert_not(client_pending(&f->cl), "a broken client is not served");
    fx_free(f);

    /* A malformed TX record. */
    f = fx_new();
    h = udp_socket(f);
    struct shm_sock *s = sk(f, h);
    struct shm_dgram bad = {.len = 60000};
    memcpy((uint8_t *)f->mem + s->tx_off, &bad, sizeof(bad));
    s->tx_tail = 16;
    cr_assert_eq(call(f, 0, (struct shm_req){.op = SHM_OP_TX, .handle = h}).result, 0);
    cr_assert(f->cl.broken);
    cr_assert_eq(stest_tx_count(&f->t), 0);
    fx_free(f);
}

Test(client, random_bytes_over_the_region)
{
    log_set_level(LOG_LVL_ERROR); /* one "disconnecting" warning per round is expected */
    srandom(42);
    for (int round = 0; round < 50; round++) {
        struct fx *f = fx_new();
        uint32_t h = udp_socket(f);
        call(f, 0, (struct shm_req){.op = SHM_OP_BIND, .handle = h, .port = 5555});
        uint8_t *m = f->mem;
        /* Scribble over the header, the rings, the socket table and some fifo pages. */
        size_t spots[] = {0,
                          reg(f)->chan_off,
                          reg(f)->chan_off + 4096 * 3,
                          reg(f)->sock_off,
                          reg(f)->fifo_off,
                          reg(f)->fifo_off + 70000};
        for (int k = 0; k < 6; k++)
            for (int i = 0; i < 4096; i++)
                m[spots[k] + (size_t)i] = (uint8_t)random();
        for (int i = 0; i < 5; i++) {
            client_poll(&f->cl, 64);
            stack_flush(&f->t.st);
            client_flush_wakeups(&f->cl);
        }
        stest_tx_drain(&f->t);
        /* Whatever happened, the stack still answers and nothing leaked. */
        uint8_t fr[200];
        stest_rx(&f->t, fr, build_echo(fr, ST_ADDR_PEER, ST_ADDR_A, 1, 1, 8));
        cr_assert_eq(stest_tx_count(&f->t), 1);
        fx_free(f);
    }
}

Test(client, full_completion_ring_stalls_only_that_channel)
{
    struct fx *f = fx_new();
    struct shm_req r = {.op = SHM_OP_NOP};
    for (int i = 0; i < SHM_RING_SIZE; i++) {
        r.seq = (uint32_t)i;
        cr_assert_eq(shm_req_push(ch(f, 0), &f->req_tail[0], &r), 0);
    }
    __atomic_fetch_or(&reg(f)->req_pending, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < 20; i++)
        client_poll(&f->cl, 1000);
    cr_assert_eq(ch(f, 0)->cpl_tail, SHM_RING_SIZE);
    /* 10 more requests: no room for their completions until the client consumes. */
    for (int i = 0; i < 10; i++)
        cr_assert_eq(shm_req_push(ch(f, 0), &f->req_tail[0], &r), 0);
    __atomic_fetch_or(&reg(f)->req_pending, 1, __ATOMIC_RELEASE);
    client_poll(&f->cl, 1000);
    cr_assert_eq(ch(f, 0)->cpl_tail, SHM_RING_SIZE);
    cr_assert(client_pending(&f->cl));
    cr_assert_eq(call(f, 1, (struct shm_req){.op = SHM_OP_NOP}).result, 0, "other channels flow");
    struct shm_cpl c;
    for (int i = 0; i < SHM_RING_SIZE; i++)
        shm_cpl_pop(ch(f, 0), &f->cpl_head[0], &c);
    client_poll(&f->cl, 1000);
    cr_assert_eq(ch(f, 0)->cpl_tail, SHM_RING_SIZE + 10);
    cr_assert_not(f->cl.broken);
    fx_free(f);
}

Test(client, fifo_space_is_reused_after_close)
{
    struct fx *f = fx_new();
    uint32_t h[NSOCK];
    for (int i = 0; i < NSOCK; i++)
        h[i] = udp_socket(f);
    uint32_t off1 = sk(f, h[1])->rx_off;
    cr_assert_eq(call(f, 0, (struct shm_req){.op = SHM_OP_CLOSE, .handle = h[1]}).result, 0);
    cr_assert_eq(call(f, 0, (struct shm_req){.op = SHM_OP_CLOSE, .handle = h[2]}).result, 0);
    cr_assert_eq(f->cl.fifo_used_pages, 2 * 2 * 16);
    uint32_t n1 = udp_socket(f), n2 = udp_socket(f);
    cr_assert_eq(sk(f, n1)->rx_off, off1, "first fit reuses the lowest freed range");
    cr_assert_neq(sk(f, n2)->rx_off, sk(f, n1)->rx_off);
    cr_assert_eq(f->cl.fifo_used_pages, NSOCK * 2 * 16);
    fx_free(f);
}
