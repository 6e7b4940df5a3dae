/* libFuzzer target: the daemon's handling of client-written shared memory
 * (daemon/client.c). The input is a script of what a hostile client does:
 *   0 OFF32 LEN8 BYTES   write bytes anywhere in its region
 *   1 CH8 REQ[64]        publish a request on a channel (through the ring, or not)
 *   2                    let the worker serve the client
 *   3 PORT16 LEN8        a datagram from the wire to a port (fills RX fifos)
 *   4 H32 LEN8 BYTES     append a TX record to socket slot H and kick it
 * Afterwards the client is closed: no crash, no leak, pools whole. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "daemon/client.h"
#include "daemon/log.h"
#include "nic/nic.h"
#include "shm/shm_ring.h"
#include "stack/stack.h"
#include "stack/wire.h"

#define NCH   2
#define NSOCK 4
#define FIFO  (512u * 1024)

static struct stack st;
static struct nic nic;
static void *mem;
static size_t size;
static uint64_t now = 1000000000000ull;

static void setup(void)
{
    struct stack_params p;
    stack_params_defaults(&p);
    p.pktbufs = 1024;
    if (stack_init(&st, &p, now))
        abort();
    struct nic_params np = {.mtu = 1500, .nqueues = 1, .rx_ring = 64, .tx_ring = 64};
    strcpy(np.name, "fz0");
    strcpy(np.backend, "sim");
    if (nic_open(&nic, &np))
        abort();
    struct stack_iface_params ip = {.mtu = 1500, .addr = 0x0ac80002, .plen = 24};
    strcpy(ip.name, "fz0");
    memcpy(ip.mac, (uint8_t[6]){2, 0, 0, 0, 0, 2}, 6);
    if (stack_add_if(&st, &ip, &nic, 0) < 0)
        abort();
    size = client_region_size(NCH, NSOCK, FIFO);
    mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        abort();
    log_set_level(LOG_LVL_ERROR);
    /* The peer's MAC, so replies need no ARP. */
    uint8_t f[60] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06};
    arp_write(f + 14, ARP_OP_REQUEST, f + 6, 0x0ac80001, (uint8_t[6]){0}, 0x0ac80002);
    nic_sim_inject(&nic, f, 60);
    stack_rx(&st, 64);
}

static void drain(void)
{
    stack_flush(&st);
    struct pktbuf *pb;
    while ((pb = nic_sim_take_tx(&nic)))
        pktbuf_free(pb);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    if (!mem)
        setup();
    memset(mem, 0, size);
    struct client cl;
    if (client_init(&cl, mem, size, 1, 0, NCH, NSOCK, FIFO, 65536, 65536))
        abort();
    cl.sess_fd = -1;
    client_attach(&cl, &st);
    /* The client's own copy of its layout: the region header may be scribbled over. */
    const struct shm_region lay = *(struct shm_region *)mem;
    struct shm_region *reg = mem;
    uint32_t tails[NCH] = {0};
    size_t i = 0;
    while (i < n) {
        uint8_t op = d[i++] % 5;
        if (op == 0 && i + 5 <= n) {
            uint32_t off = rd32(d + i) % (uint32_t)size, len = d[i + 4];
            i += 5;
            for (uint32_t k = 0; k < len && i < n && off + k < size; k++)
                ((uint8_t *)mem)[off + k] = d[i++];
        } else if (op == 1 && i + 65 <= n) {
            uint32_t c = d[i] % NCH;
            struct shm_req r;
            memcpy(&r, d + i + 1, sizeof(r));
            i += 65;
            struct shm_channel *ch =
                (struct shm_channel *)((uint8_t *)mem + lay.chan_off + c * sizeof(*ch));
            if (r.op % 4 == 0)
                r.op = SHM_OP_SOCKET, r.arg0 = 2; /* make sockets common */
            shm_req_push(ch, &tails[c], &r);
            __atomic_fetch_or(&reg->req_pending, 1ull << c, __ATOMIC_RELEASE);
        } else if (op == 2) {
            client_poll(&cl, 64);
            drain();
            client_flush_wakeups(&cl);
        } else if (op == 3 && i + 3 <= n) {
            uint16_t port = rd16(d + i);
            uint32_t len = d[i + 2] * 8u;
            i += 3;
            uint8_t f[14 + 20 + 8 + 2048] = {2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00};
            uint8_t *u = f + 34;
            wr16(u, 9000);
            wr16(u + 2, port);
            wr16(u + 4, (uint16_t)(8 + len));
            wr16(u + 6, 0);
            memset(u + 8, 0x5a, len);
            ip4_write(f + 14, 0, (uint16_t)(28 + len), 1, 0, 64, 17, 0x0ac80001, 0x0ac80002);
            nic_sim_inject(&nic, f, 42 + len);
            stack_rx(&st, 64);
            drain();
        } else if (op == 4 && i + 5 <= n) {
            uint32_t idx = d[i] % NSOCK, len = d[i + 4];
            i += 5;
            struct shm_sock *s = (struct shm_sock *)((uint8_t *)mem + lay.sock_off) + idx;
            if (s->tx_off >= lay.fifo_off && s->tx_size &&
                s->tx_off + (uint64_t)s->tx_size <= size) {
                uint32_t tail = s->tx_tail;
                struct shm_dgram h = {.len = len, .addr = 0x0ac80001, .port = 7};
                uint8_t pl[256] = {0};
                if (shm_dgram_write((uint8_t *)mem + s->tx_off, s->tx_size, &tail, s->tx_head, &h,
                                    pl, NULL, 0) == 0)
                    s->tx_tail = tail;
            }
            struct shm_req r = {.op = SHM_OP_TX, .handle = shm_handle(idx, s->gen)};
            struct shm_channel *ch = (struct shm_channel *)((uint8_t *)mem + lay.chan_off);
            shm_req_push(ch, &tails[0], &r);
            __atomic_fetch_or(&reg->req_pending, 1, __ATOMIC_RELEASE);
        }
    }
    client_poll(&cl, 64);
    drain();
    client_close_all(&cl);
    client_fini(&cl);
    /* Frames may wait for ARP (scribbled destinations): let those timers run out. */
    for (int k = 0; k < 8; k++) {
        now += 2000000000ull;
        stack_poll(&st, now);
        drain();
    }
    if (udp_count(&st) != 0 || st.pool.nfree != st.pool.count)
        abort(); /* a socket or a buffer outlived its client */
    return 0;
}
