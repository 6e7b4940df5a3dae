/* Client sessions, worker side: see client.h and docs/ipc.md.
 *
 * Every byte of the region can be written by the client at any time. The rules:
 * indices and requests are read once (copied) and checked before use; the daemon keeps its
 * own indices and layout privately and never reads them back; handles are checked against
 * this client's own table; an impossible value marks the client broken (its session is then
 * closed), it never reaches the stack or another client. */
#include "daemon/client.h"

#include <errno.h>
#include <linux/capability.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon/log.h"
#include "shm/shm_ring.h"
#include "stack/wire.h"

#define PAGE        4096u
#define CHAN_BUDGET 32 /* requests per channel per iteration: fairness between threads */
#define TX_BUDGET   64 /* datagrams per socket per iteration */

static uint32_t page_up(uint32_t v)
{
    return (v + PAGE - 1) & ~(PAGE - 1);
}

size_t client_region_size(uint32_t nchannels, uint32_t nsocks, uint32_t fifo_bytes)
{
    size_t n = PAGE;                                                /* header */
    n += page_up(nchannels * (uint32_t)sizeof(struct shm_channel)); /* shm.h: an array */
    n += ((size_t)nsocks * sizeof(struct shm_sock) + PAGE - 1) & ~(size_t)(PAGE - 1);
    n += page_up(fifo_bytes);
    return n;
}

static struct shm_channel *chan(const struct client *cl, uint32_t i)
{
    return (struct shm_channel *)(cl->base + PAGE + (size_t)i * sizeof(struct shm_channel));
}

static uint32_t sock_off_of(uint32_t nchannels)
{
    return PAGE + page_up(nchannels * (uint32_t)sizeof(struct shm_channel));
}

static struct shm_sock *shsock(const struct client *cl, uint32_t idx)
{
    return (struct shm_sock *)(cl->base + sock_off_of(cl->nchannels)) + idx;
}

int client_init(struct client *cl, void *mem, size_t size, uint32_t id, uint32_t worker,
                uint32_t nchannels, uint32_t nsocks, uint32_t fifo_bytes, uint32_t rcvbuf,
                uint32_t sndbuf)
{
    memset(cl, 0, sizeof(*cl));
    if (nchannels < 1 || nchannels > SHM_MAX_CHANNELS || nsocks < 1 || nsocks > 65535 ||
        client_region_size(nchannels, nsocks, fifo_bytes) != size)
        return -EINVAL;
    cl->id = id;
    cl->base = mem;
    cl->reg = mem;
    cl->size = size;
    cl->nchannels = nchannels;
    cl->nsocks = nsocks;
    cl->rcvbuf = page_up(rcvbuf);
    cl->sndbuf = page_up(sndbuf);
    cl->gen_next = 1;
    for (uint32_t i = 0; i < SHM_MAX_CHANNELS; i++)
        cl->chan_efd[i] = -1;
    uint32_t socks_bytes =
        (uint32_t)(((size_t)nsocks * sizeof(struct shm_sock) + PAGE - 1) & ~(size_t)(PAGE - 1));
    cl->fifo_off = sock_off_of(nchannels) + socks_bytes;
    cl->fifo_pages = page_up(fifo_bytes) / PAGE;
    cl->socks = calloc(nsocks, sizeof(*cl->socks));
    cl->fifo_map = calloc((cl->fifo_pages + 63) / 64, sizeof(uint64_t));
    if (!cl->socks || !cl->fifo_map) {
        client_fini(cl);
        return -ENOMEM;
    }
    struct shm_region *r = cl->reg;
    r->magic = SHM_MAGIC;
    r->version = SHM_LAYOUT_VERSION;
    r->size = (uint32_t)size;
    r->client_id = id;
    r->nchannels = nchannels;
    r->chan_off = PAGE;
    r->nsocks = nsocks;
    r->sock_off = sock_off_of(nchannels);
    r->fifo_off = cl->fifo_off;
    r->fifo_size = cl->fifo_pages * PAGE;
    r->worker = worker;
    return 0;
}

void client_fini(struct client *cl)
{
    free(cl->socks);
    free(cl->fifo_map);
    cl->socks = NULL;
    cl->fifo_map = NULL;
}

/* ---- fifo arena: first fit over a page bitmap ---- */

static bool page_used(const struct client *cl, uint32_t p)
{
    return cl->fifo_map[p / 64] >> (p % 64) & 1;
}

static void pages_mark(struct client *cl, uint32_t first, uint32_t n, bool used)
{
    for (uint32_t p = first; p < first + n; p++) {
        if (used)
            cl->fifo_map[p / 64] |= 1ull << (p % 64);
        else
            cl->fifo_map[p / 64] &= ~(1ull << (p % 64));
    }
    if (used)
        cl->fifo_used_pages += n;
    else
        cl->fifo_used_pages -= n;
}

/* Offset (from the region start) of `bytes` of fifo space, or 0 when the arena is full. */
static uint32_t fifo_alloc(struct client *cl, uint32_t bytes)
{
    uint32_t n = page_up(bytes) / PAGE, run = 0;
    /* Every page below fifo_hint is in use: thousands of sockets do not rescan the front. */
    for (uint32_t p = cl->fifo_hint; p < cl->fifo_pages; p++) {
        if (cl->fifo_map[p / 64] == ~0ull && p % 64 == 0) {
            run = 0;
            p += 63;
            continue;
        }
        run = page_used(cl, p) ? 0 : run + 1;
        if (run == n) {
            uint32_t first = p + 1 - n;
            pages_mark(cl, first, n, true);
            if (first == cl->fifo_hint)
                cl->fifo_hint = first + n;
            return cl->fifo_off + first * PAGE;
        }
    }
    return 0;
}

/* Freed fifo pages are given back to the system in bulk: MADV_REMOVE on memory the client
 * maps too costs a TLB shootdown on every CPU, too much for each short connection. The
 * freed extents are remembered and, once FIFO_DIRTY_MAX pages or CLIENT_FIFO_EXT extents
 * piled up, the pages of them that are still free are released. First fit hands the
 * lowest free pages out again, so with short connections most extents are in use again
 * by then and cost nothing: their pages stay resident for the next socket. */
#define FIFO_DIRTY_MAX 8192 /* pages (32 MiB) */

static void fifo_release_free(struct client *cl)
{
    for (uint32_t e = 0; e < cl->fifo_next; e++) {
        uint32_t first = cl->fifo_ext[e].first, end = first + cl->fifo_ext[e].n, run = 0;
        for (uint32_t p = first; p <= end; p++) {
            if (p < end && !page_used(cl, p)) {
                run++;
                continue;
            }
            if (run)
                madvise(cl->base + cl->fifo_off + (size_t)(p - run) * PAGE, (size_t)run * PAGE,
                        MADV_REMOVE);
            run = 0;
        }
        /* Later extents may overlap this one: mark nothing; a second MADV_REMOVE of a
         * released range finds no pages and is cheap. */
    }
    cl->fifo_next = 0;
    cl->fifo_dirty = 0;
}

static void fifo_free(struct client *cl, uint32_t off, uint32_t bytes, bool release)
{
    if (!off)
        return;
    uint32_t first = (off - cl->fifo_off) / PAGE, n = page_up(bytes) / PAGE;
    pages_mark(cl, first, n, false);
    if (first < cl->fifo_hint)
        cl->fifo_hint = first;
    if (!release)
        return;
    /* A closed socket's fifos cost no memory for long. */
    uint32_t e = 0;
    while (e < cl->fifo_next && (cl->fifo_ext[e].first != first || cl->fifo_ext[e].n != n))
        e++;
    if (e < cl->fifo_next) /* the same extent freed again is recorded once */
        return;
    cl->fifo_ext[cl->fifo_next].first = first;
    cl->fifo_ext[cl->fifo_next].n = n;
    cl->fifo_next++;
    cl->fifo_dirty += n;
    if (cl->fifo_dirty >= FIFO_DIRTY_MAX || cl->fifo_next == CLIENT_FIFO_EXT)
        fifo_release_free(cl);
}

/* ---- misbehaviour and wake-ups ---- */

static void client_break(struct client *cl, const char *why)
{
    cl->stats.faults++;
    if (cl->broken)
        return;
    cl->broken = true;
    /* Rate-limited: a local user can start misbehaving clients as fast as it likes. */
    log_warn_rl("client %u (pid %d): %s: disconnecting it", cl->id, (int)cl->pid, why);
    /* The control thread owns the connection; shutting it down makes it see EOF and
     * detach the session through the mailbox (its sockets close then). */
    if (cl->sess_fd >= 0)
        shutdown(cl->sess_fd, SHUT_RDWR);
}

static uint64_t chan_mask(const struct client *cl)
{
    return cl->nchannels == 64 ? ~0ull : (1ull << cl->nchannels) - 1;
}

/* The socket's state changed: wake the channels that wait on it (at the end of the
 * iteration, once per channel). The seq_cst fence orders our publication (fifo index,
 * events, error) before the load of the waiter bits; the client stores its bit and then
 * re-checks the socket, so one of the two sides always sees the other (no lost wake-up). */
static void sock_notify(struct client *cl, struct dsock *ds)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    uint64_t w = __atomic_load_n(&shsock(cl, ds->idx)->waiters, __ATOMIC_RELAXED);
    cl->wake |= w & chan_mask(cl);
}

void client_flush_wakeups(struct client *cl)
{
    if (!cl->wake)
        return;
    /* Orders the completions and fifo updates published this iteration before the loads of
     * client_sleeping (Dekker with the client's store of client_sleeping + re-check). */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    uint64_t w = cl->wake;
    cl->wake = 0;
    while (w) {
        uint32_t i = (uint32_t)__builtin_ctzll(w);
        w &= w - 1;
        if (__atomic_load_n(&chan(cl, i)->client_sleeping, __ATOMIC_RELAXED)) {
            uint64_t one = 1;
            ssize_t r = write(cl->chan_efd[i], &one, sizeof(one));
            (void)r; /* EAGAIN: already signalled */
            cl->stats.wakeups++;
        }
    }
}

/* ---- socket table ---- */

static struct dsock *sock_get(struct client *cl, uint32_t handle)
{
    uint32_t idx = shm_handle_idx(handle), gen = shm_handle_gen(handle);
    if (idx >= cl->nsocks || !gen || cl->socks[idx].gen != gen || cl->socks[idx].closing)
        return NULL;
    return &cl->socks[idx];
}

static void set_error(struct client *cl, struct dsock *ds, int err)
{
    struct shm_sock *sh = shsock(cl, ds->idx);
    ds->so_error = err;
    __atomic_store_n(&sh->so_error, err, __ATOMIC_RELAXED);
    __atomic_fetch_or(&sh->events, SHM_EV_ERR, __ATOMIC_RELEASE);
    sock_notify(cl, ds);
}

static int udp_deliver_cb(void *ctx, uint32_t src, uint16_t sport, uint32_t dst,
                          const uint8_t *data, uint32_t len)
{
    struct dsock *ds = ctx;
    struct client *cl = ds->cl;
    if (ds->shut_rd || cl->broken)
        return -ENOBUFS;
    struct shm_sock *sh = shsock(cl, ds->idx);
    /* Acquire: the client's reads of the records it released are done before we reuse
     * the space. Read once and checked: a client-written index. */
    uint32_t head = __atomic_load_n(&sh->rx_head, __ATOMIC_ACQUIRE);
    uint32_t used = ds->rx_tail - head;
    if (used > ds->rx_size || (head & 7)) {
        client_break(cl, "impossible RX fifo index");
        return -ENOBUFS;
    }
    if (used + shm_dgram_need(ds->rx_size, ds->rx_tail, len) > ds->rx_limit)
        return -ENOBUFS; /* SO_RCVBUF reached */
    struct shm_dgram h = {.len = len, .addr = src, .port = sport};
    if (shm_dgram_write(cl->base + ds->rx_off, ds->rx_size, &ds->rx_tail, head, &h, data, NULL, 0))
        return -ENOBUFS;
    /* Release: the record's bytes are visible before the new tail. */
    __atomic_store_n(&sh->rx_tail, ds->rx_tail, __ATOMIC_RELEASE);
    cl->stats.rx_datagrams++;
    sock_notify(cl, ds); /* every datagram: see tcp_rcv_commit for why not only on empty */
    return 0;
}

static void udp_err_cb(void *ctx, int err)
{
    struct dsock *ds = ctx;
    set_error(ds->cl, ds, err);
}

/* Several workers: a port bound explicitly (or shared with the listener that did) becomes
 * this worker's, so the others hand its datagrams over (docs/workers.md). */
static int sock_claim(struct client *cl, struct dsock *ds, uint16_t port)
{
    if (!port || ds->claim_port)
        return 0;
    bool reuse = ds->type == SOCK_STREAM ? ds->reuseaddr : ds->pcb.reuseaddr;
    int rc = stack_port_claim(cl->st, ds->type == SOCK_STREAM ? 6 : 17, port, reuse);
    if (rc == 0)
        ds->claim_port = port;
    return rc;
}

static void sock_unclaim(struct client *cl, struct dsock *ds)
{
    if (ds->claim_port)
        stack_port_release(cl->st, ds->type == SOCK_STREAM ? 6 : 17, ds->claim_port);
    ds->claim_port = 0;
    ds->claim_group = false;
}

/* CAP_NET_BIND_SERVICE in the effective set of process pid (/proc/PID/status). */
static bool has_cap_bind(pid_t pid)
{
    char path[64], line[256];
    bool yes = false;
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    while (fgets(line, sizeof(line), f)) {
        unsigned long long eff;
        if (sscanf(line, "CapEff: %llx", &eff) == 1) {
            yes = eff & (1ull << CAP_NET_BIND_SERVICE);
            break;
        }
    }
    fclose(f);
    return yes;
}

void client_set_bind_policy(struct client *cl, uint32_t unprivileged_port_start)
{
    cl->bind_min = (uint16_t)(unprivileged_port_start > 65535 ? 65535 : unprivileged_port_start);
    cl->bind_low = cl->uid == 0 || (cl->bind_min > 1 && has_cap_bind(cl->pid));
}

/* Linux's rule for ports below net.ipv4.ip_unprivileged_port_start (inet_bind). */
static int bind_allowed(const struct client *cl, uint16_t port)
{
    return port && port < cl->bind_min && !cl->bind_low ? -EACCES : 0;
}

/* A TCP port of this client's listening group: a member listener of another part binds
 * it, or a connection a member accepted holds it. With adopt, also the group of a session
 * that is gone whose orphaned connections still hold the port. */
static int sock_join(struct client *cl, struct dsock *ds, uint16_t port, bool adopt)
{
    if (!port)
        return -EINVAL;
    int rc = stack_port_group(cl->st, port, cl->id,
                              adopt ? STACK_CLAIM_GROUP_ADOPT : STACK_CLAIM_GROUP_JOIN);
    if (rc == 0) {
        ds->claim_port = port;
        ds->claim_group = true;
    }
    return rc;
}

/* LISTEN with SHM_REQ_GROUP: make the listener's port a group the client's listeners on
 * the other workers join (docs/workers.md). 1: a group now (the client adds the members),
 * 2: it was one already (its members exist, or it joined one), 0: no group. */
static int sock_group(struct client *cl, struct dsock *ds)
{
    uint16_t port = ds->tcp->lport;
    if (ds->group_listen)
        return 2;
    if (!ds->claim_group) { /* else it joined at bind: it needs members too */
        if (cl->nparts < 2 || (!ds->claim_port && sock_claim(cl, ds, port) < 0))
            return 0;
        if (stack_port_group(cl->st, port, cl->id, STACK_CLAIM_GROUP_MAKE) < 0)
            return 0;
        ds->claim_group = true;
    }
    ds->group_listen = true;
    return 1;
}

static void sock_free(struct client *cl, struct dsock *ds, bool release)
{
    sock_unclaim(cl, ds);
    if (ds->type == SOCK_DGRAM)
        udp_close(cl->st, &ds->pcb);
    ds->tcp = NULL;
    fifo_free(cl, ds->rx_off, ds->rx_size, release);
    fifo_free(cl, ds->tx_off, ds->tx_size, release);
    if (ds->tx_queued) {
        struct dsock **pp = &cl->txq;
        while (*pp && *pp != ds)
            pp = &(*pp)->tx_next;
        if (*pp)
            *pp = ds->tx_next;
        ds->tx_queued = false;
    }
    if (release) {
        struct shm_sock *sh = shsock(cl, ds->idx);
        __atomic_store_n(&sh->gen, 0, __ATOMIC_RELEASE);
    }
    ds->gen = 0;
    cl->nopen--;
    /* The last orphan of a departed process is done: its session may go (release: our
     * last writes to the region and the table come before). */
    if (cl->nopen == 0 && cl->orphaned)
        __atomic_store_n(&cl->orphans_done, true, __ATOMIC_RELEASE);
}

static void publish_names(struct client *cl, struct dsock *ds);
static bool tx_drain(struct client *cl, struct dsock *ds);
static struct dsock *sock_alloc(struct client *cl, uint32_t type, int *err);

/* ---- TCP over the socket's fifos ----
 * TX fifo: [tx_head, tail) holds the bytes not yet acknowledged (sent or not); tx_head is
 * SND.UNA's place, so acknowledged bytes are released by moving it. RX fifo: bytes up to
 * rx_tail are readable; out-of-order data is written beyond rx_tail, inside the window,
 * and committed when the hole fills. Client-written indices are read once and checked. */
static uint32_t tx_tail_checked(struct dsock *ds)
{
    /* Acquire: the bytes the client wrote before its release store are visible. */
    uint32_t tail = __atomic_load_n(&shsock(ds->cl, ds->idx)->tx_tail, __ATOMIC_ACQUIRE);
    if (tail - ds->tx_head > ds->tx_size) {
        client_break(ds->cl, "impossible TX fifo index");
        return ds->tx_head;
    }
    return tail;
}

static uint32_t tcp_snd_len(void *ctx)
{
    struct dsock *ds = ctx;
    return tx_tail_checked(ds) - ds->tx_head;
}

static void tcp_snd_copy(void *ctx, uint32_t off, uint32_t len, uint8_t *dst)
{
    struct dsock *ds = ctx;
    shm_fifo_get(ds->cl->base + ds->tx_off, ds->tx_size, ds->tx_head + off, dst, len);
}

static void tcp_snd_ack(void *ctx, uint32_t n)
{
    struct dsock *ds = ctx;
    ds->tx_head += n;
    /* Release: our reads of the acknowledged bytes are done before the client reuses them. */
    __atomic_store_n(&shsock(ds->cl, ds->idx)->tx_head, ds->tx_head, __ATOMIC_RELEASE);
}

static uint32_t rx_free(struct dsock *ds, struct shm_sock *sh)
{
    uint32_t head = __atomic_load_n(&sh->rx_head, __ATOMIC_ACQUIRE);
    uint32_t used = ds->rx_tail - head;
    if (used > ds->rx_size) {
        client_break(ds->cl, "impossible RX fifo index");
        return 0;
    }
    return ds->rx_size - used;
}

/* Free RX fifo space (the receive window). Also decides whether the client should post
 * SHM_OP_RX_DONE after it reads: only while the window is under half the fifo, when a
 * read can make a window update worth sending (RFC 9293 3.8.6.2.2). Above that, rx_kick
 * stays 1 and reads cost the client nothing: our next segment carries the larger window. */
static uint32_t tcp_rcv_space(void *ctx)
{
    struct dsock *ds = ctx;
    struct shm_sock *sh = shsock(ds->cl, ds->idx);
    uint32_t free = rx_free(ds, sh);

    if (free >= ds->rx_size / 2) {
        __atomic_store_n(&sh->rx_kick, 1, __ATOMIC_RELAXED); /* a hint: no ordering needed */
        return free;
    }
    /* seq_cst store, then load rx_head again: the client stores rx_head and then exchanges
     * rx_kick (seq_cst), so either we see its read here or it sees 0 and posts (Dekker). */
    __atomic_store_n(&sh->rx_kick, 0, __ATOMIC_SEQ_CST);
    return rx_free(ds, sh);
}

static void tcp_rcv_write_at(void *ctx, uint32_t off, const uint8_t *data, uint32_t len)
{
    struct dsock *ds = ctx;
    shm_fifo_put(ds->cl->base + ds->rx_off, ds->rx_size, ds->rx_tail + off, data, len);
}

static void tcp_rcv_commit(void *ctx, uint32_t n)
{
    struct dsock *ds = ctx;
    struct shm_sock *sh = shsock(ds->cl, ds->idx);
    ds->rx_tail += n;
    /* Release: the bytes are visible before the new tail. */
    __atomic_store_n(&sh->rx_tail, ds->rx_tail, __ATOMIC_RELEASE);
    /* Every commit, not only "the fifo was empty": that test read rx_head before our
     * store, and a client that had just emptied the fifo may not have published its
     * rx_head yet; it then checks rx_tail before our store is visible and sleeps, and no
     * later commit would wake it (the fifo filled up under a sleeping reader). The fence
     * in sock_notify after our store pairs with the client's waiters store + re-check. */
    sock_notify(ds->cl, ds);
}

static const struct tcp_buf_ops tcp_fifo_ops = {tcp_snd_len,   tcp_snd_copy,     tcp_snd_ack,
                                                tcp_rcv_space, tcp_rcv_write_at, tcp_rcv_commit};

static void set_events(struct dsock *ds, uint32_t set)
{
    __atomic_fetch_or(&shsock(ds->cl, ds->idx)->events, set, __ATOMIC_RELEASE);
    sock_notify(ds->cl, ds);
}

static void tcp_event_cb(void *ctx, struct tcp_pcb *pcb, enum tcp_event ev, int err)
{
    struct dsock *ds = ctx;
    struct client *cl = ds->cl;
    switch (ev) {
    case TCP_EV_CONNECTED:
        publish_names(cl, ds);
        set_events(ds, SHM_EV_OUT);
        break;
    case TCP_EV_READABLE:
        break; /* tcp_rcv_commit notified on the empty -> non-empty edge */
    case TCP_EV_WRITABLE:
        sock_notify(cl, ds);
        break;
    case TCP_EV_FIN:
        set_events(ds, SHM_EV_RDHUP | SHM_EV_IN);
        break;
    case TCP_EV_ACCEPTABLE:
        set_events(ds, SHM_EV_IN);
        break;
    case TCP_EV_CLOSED:
        /* The stack is done with our fifos. */
        ds->tcp = NULL;
        if (ds->closing || ds->unaccepted) {
            sock_free(cl, ds, true);
            return;
        }
        if (err) {
            ds->so_error = err;
            __atomic_store_n(&shsock(cl, ds->idx)->so_error, err, __ATOMIC_RELAXED);
        }
        set_events(ds, SHM_EV_HUP | SHM_EV_RDHUP | SHM_EV_IN | (err ? SHM_EV_ERR : 0));
        break;
    }
}

/* A connection completed its handshake on a listener: give it a slot and fifos now, so
 * data can arrive before the application calls accept. */
static int tcp_accept_cb(void *lctx, struct tcp_pcb *listener, struct tcp_pcb *child)
{
    struct dsock *l = lctx;
    struct client *cl = l->cl;
    int err = 0;
    if (cl->broken)
        return -ENOBUFS;
    struct dsock *ds = sock_alloc(cl, SOCK_STREAM, &err);
    if (!ds)
        return err;
    if (l->claim_group) /* the listener holds the group: cannot fail */
        sock_join(cl, ds, l->claim_port, false);
    else if (l->claim_port) /* the same worker: cannot fail */
        sock_claim(cl, ds, l->claim_port);
    ds->tcp = child;
    ds->unaccepted = true;
    child->buf = &tcp_fifo_ops;
    child->ctx = ds;
    child->ev = tcp_event_cb;
    publish_names(cl, ds);
    set_events(ds, SHM_EV_OUT);
    return 0;
}

/* A socket slot with its two fifos, published in the region; NULL with *err set. */
static struct dsock *sock_alloc(struct client *cl, uint32_t type, int *err)
{
    if (cl->nopen >= cl->nsocks) {
        *err = -EMFILE; /* clients.max_sockets */
        return NULL;
    }
    uint32_t idx = 0;
    while (idx < cl->nsocks && cl->socks[idx].gen)
        idx++;
    if (idx == cl->nsocks) {
        *err = -EMFILE;
        return NULL;
    }
    uint32_t rx = fifo_alloc(cl, cl->rcvbuf);
    uint32_t tx = rx ? fifo_alloc(cl, cl->sndbuf) : 0;
    if (!tx) {
        fifo_free(cl, rx, cl->rcvbuf, false);
        *err = -ENOBUFS; /* clients.fifo_mb exhausted */
        return NULL;
    }
    struct dsock *ds = &cl->socks[idx];
    memset(ds, 0, sizeof(*ds));
    ds->idx = idx;
    ds->cl = cl;
    ds->type = type;
    ds->rx_off = rx;
    ds->rx_size = cl->rcvbuf;
    ds->tx_off = tx;
    ds->tx_size = cl->sndbuf;
    ds->rx_limit = cl->rcvbuf;
    ds->gen = cl->gen_next;
    cl->gen_next = cl->gen_next == 0x7fff ? 1 : cl->gen_next + 1; /* handle < 2^31 */
    struct shm_sock *sh = shsock(cl, idx);
    memset(sh, 0, sizeof(*sh));
    sh->type = type;
    sh->rx_off = rx;
    sh->rx_size = ds->rx_size;
    sh->tx_off = tx;
    sh->tx_size = ds->tx_size;
    sh->events = type == SOCK_DGRAM ? SHM_EV_OUT : 0;
    /* The client learns the handle from a completion, published with release after this. */
    sh->gen = ds->gen;
    cl->nopen++;
    return ds;
}

static int op_socket(struct client *cl, const struct shm_req *r, struct shm_cpl *c)
{
    int type = r->arg0 & 0xf; /* SOCK_NONBLOCK/SOCK_CLOEXEC are the client's business */
    if (type != SOCK_DGRAM && type != SOCK_STREAM)
        return -ESOCKTNOSUPPORT;
    if (r->arg1 != 0 && r->arg1 != (type == SOCK_DGRAM ? IPPROTO_UDP : IPPROTO_TCP))
        return -EPROTONOSUPPORT;
    int err = 0;
    struct dsock *ds = sock_alloc(cl, (uint32_t)type, &err);
    if (!ds)
        return err;
    if (type == SOCK_DGRAM) {
        udp_pcb_init(cl->st, &ds->pcb, udp_deliver_cb, udp_err_cb, ds);
    } else {
        ds->tcp = tcp_new(cl->st, &tcp_fifo_ops, tcp_event_cb, ds);
        if (!ds->tcp) {
            sock_free(cl, ds, true);
            return -ENOBUFS;
        }
    }
    c->handle = shm_handle(ds->idx, ds->gen);
    return (int)c->handle; /* the result is the handle too (shm.h) */
}

static void publish_names(struct client *cl, struct dsock *ds)
{
    struct shm_sock *sh = shsock(cl, ds->idx);
    if (ds->type == SOCK_STREAM) {
        if (!ds->tcp)
            return;
        bool conn = ds->tcp->state != TCPS_CLOSED && ds->tcp->state != TCPS_LISTEN;
        sh->local_addr = ds->tcp->laddr;
        sh->local_port = ds->tcp->lport;
        sh->peer_addr = conn ? ds->tcp->raddr : 0;
        sh->peer_port = conn ? ds->tcp->rport : 0;
        return;
    }
    sh->local_addr = ds->pcb.laddr;
    sh->local_port = ds->pcb.lport;
    sh->peer_addr = ds->pcb.connected ? ds->pcb.raddr : 0;
    sh->peer_port = ds->pcb.connected ? ds->pcb.rport : 0;
}

static int get_int(const struct shm_req *r, int *v)
{
    if (r->optlen < sizeof(int))
        return -EINVAL;
    memcpy(v, r->opt, sizeof(int));
    return 0;
}

static int put_int(struct shm_cpl *c, int v)
{
    memcpy(c->opt, &v, sizeof(v));
    c->optlen = sizeof(v);
    return 0;
}

static int tcp_setsockopt(struct client *cl, struct dsock *ds, const struct shm_req *r)
{
    struct tcp_pcb *t = ds->tcp;
    if (r->arg0 == SOL_SOCKET && r->arg1 == SO_LINGER) {
        struct linger lg;
        if (r->optlen < sizeof(lg))
            return -EINVAL;
        memcpy(&lg, r->opt, sizeof(lg));
        ds->linger0 = lg.l_onoff && lg.l_linger == 0;
        return 0;
    }
    if (r->arg0 == IPPROTO_TCP && r->arg1 == TCP_CONGESTION) {
        char name[17] = {0};
        memcpy(name, r->opt, r->optlen < 16 ? r->optlen : 16);
        return t ? tcp_set_cc(t, name) : -ENOTCONN;
    }
    int v, rc = get_int(r, &v);
    if (rc)
        return rc;
    if (!t)
        return -EINVAL;
    if (r->arg0 == SOL_SOCKET) {
        switch (r->arg1) {
        case SO_KEEPALIVE:
            t->keepalive = v != 0;
            tcp_arm_keepalive(cl->st, t);
            return 0;
        case SO_REUSEADDR:
            ds->reuseaddr = v != 0;
            return 0; /* TIME_WAIT never blocks a listener's bind */
        case SO_RCVBUF:
        case SO_SNDBUF:
        case SO_PRIORITY:
            return 0; /* fifos have their size */
        default:
            return -ENOPROTOOPT;
        }
    }
    if (r->arg0 == IPPROTO_TCP) {
        switch (r->arg1) {
        case TCP_NODELAY:
            t->nodelay = v != 0;
            tcp_output(cl->st, t);
            return 0;
        case TCP_CORK:
            t->cork = v != 0;
            if (!t->cork)
                tcp_output(cl->st, t); /* uncorking sends what was held */
            return 0;
        case TCP_KEEPIDLE:
        case TCP_KEEPINTVL:
        case TCP_KEEPCNT:
            if (v < 1 || v > 32767)
                return -EINVAL;
            if (r->arg1 == TCP_KEEPIDLE)
                t->keep_idle_s = (uint32_t)v;
            else if (r->arg1 == TCP_KEEPINTVL)
                t->keep_intvl_s = (uint32_t)v;
            else
                t->keep_cnt = (uint32_t)v;
            tcp_arm_keepalive(cl->st, t);
            return 0;
        case TCP_USER_TIMEOUT:
            if (v < 0)
                return -EINVAL;
            t->user_timeout_ms = (uint32_t)v;
            return 0;
        case TCP_QUICKACK:
            return 0;
        default:
            return -ENOPROTOOPT;
        }
    }
    if (r->arg0 == IPPROTO_IP && (r->arg1 == IP_TOS || r->arg1 == IP_TTL))
        return 0;
    return -ENOPROTOOPT;
}

static int tcp_getsockopt(struct client *cl, struct dsock *ds, const struct shm_req *r,
                          struct shm_cpl *c)
{
    struct tcp_pcb *t = ds->tcp;
    if (r->arg0 == SOL_SOCKET) {
        switch (r->arg1) {
        case SO_TYPE:
            return put_int(c, SOCK_STREAM);
        case SO_DOMAIN:
            return put_int(c, AF_INET);
        case SO_PROTOCOL:
            return put_int(c, IPPROTO_TCP);
        case SO_ERROR: {
            int e = ds->so_error;
            ds->so_error = 0;
            __atomic_store_n(&shsock(cl, ds->idx)->so_error, 0, __ATOMIC_RELAXED);
            __atomic_fetch_and(&shsock(cl, ds->idx)->events, ~(uint32_t)SHM_EV_ERR,
                               __ATOMIC_RELEASE);
            return put_int(c, e);
        }
        case SO_KEEPALIVE:
            return put_int(c, t && t->keepalive);
        case SO_RCVBUF:
            return put_int(c, (int)ds->rx_size);
        case SO_SNDBUF:
            return put_int(c, (int)ds->tx_size);
        case SO_REUSEADDR:
            return put_int(c, ds->reuseaddr);
        case SO_ACCEPTCONN:
            return put_int(c, t && t->state == TCPS_LISTEN);
        case SO_LINGER: {
            struct linger lg = {.l_onoff = ds->linger0, .l_linger = 0};
            memcpy(c->opt, &lg, sizeof(lg));
            c->optlen = sizeof(lg);
            return 0;
        }
        default:
            return -ENOPROTOOPT;
        }
    }
    if (r->arg0 != IPPROTO_TCP)
        return -ENOPROTOOPT;
    if (!t)
        return r->arg1 == TCP_INFO ? (c->optlen = 0, 0) : -ENOTCONN;
    switch (r->arg1) {
    case TCP_NODELAY:
        return put_int(c, t->nodelay);
    case TCP_CORK:
        return put_int(c, t->cork);
    case TCP_MAXSEG:
        return put_int(c, t->mss);
    case TCP_KEEPIDLE:
        return put_int(c, (int)t->keep_idle_s);
    case TCP_KEEPINTVL:
        return put_int(c, (int)t->keep_intvl_s);
    case TCP_KEEPCNT:
        return put_int(c, (int)t->keep_cnt);
    case TCP_USER_TIMEOUT:
        return put_int(c, (int)t->user_timeout_ms);
    case TCP_CONGESTION:
        c->optlen = (uint16_t)strlen(t->cc->name);
        memcpy(c->opt, t->cc->name, c->optlen);
        return 0;
    case TCP_INFO: {
        /* Linux's tcpi_state numbering: ESTABLISHED = 1 ... (see linux/tcp.h) */
        static const uint8_t linux_state[] = {7, 10, 2, 3, 1, 4, 5, 8, 11, 9, 6};
        struct shm_tcp_info ti = {
            .state = linux_state[t->state],
            .ca_state = t->in_recovery ? 3 : 0,
            .retransmits = (uint8_t)(t->rtx_count > 255 ? 255 : t->rtx_count),
            .options = (uint8_t)((t->ts_ok ? 1 : 0) | (t->sack_ok ? 2 : 0) | (t->ws_ok ? 4 : 0)),
            .snd_wscale = t->snd_wscale,
            .rcv_wscale = t->rcv_wscale,
            .rto_us = t->rto_ms * 1000,
            .snd_mss = t->mss,
            .rtt_us = t->srtt_us,
            .rttvar_us = t->rttvar_us,
            .snd_cwnd = t->mss ? t->cwnd / t->mss : 0,
            .snd_ssthresh =
                t->ssthresh == 0xffffffffu ? 0x7fffffff : t->ssthresh / (t->mss ? t->mss : 1),
        };
        memcpy(c->opt, &ti, sizeof(ti));
        c->optlen = sizeof(ti);
        return 0;
    }
    default:
        return -ENOPROTOOPT;
    }
}

static int op_setsockopt(struct client *cl, struct dsock *ds, const struct shm_req *r)
{
    if (ds->type == SOCK_STREAM)
        return tcp_setsockopt(cl, ds, r);
    int v, rc = get_int(r, &v);
    if (rc)
        return rc;
    if (r->arg0 == SOL_SOCKET) {
        switch (r->arg1) {
        case SO_REUSEADDR:
            ds->pcb.reuseaddr = v != 0;
            return 0;
        case SO_BROADCAST:
            ds->pcb.broadcast = v != 0;
            return 0;
        case SO_RCVBUF:
            /* Linux doubles the value for bookkeeping; the fifo is the upper bound. */
            if (v < 0)
                return -EINVAL;
            ds->rx_limit = (uint32_t)v > ds->rx_size / 2 ? ds->rx_size : (uint32_t)v * 2;
            if (ds->rx_limit < 2304)
                ds->rx_limit = 2304; /* SOCK_MIN_RCVBUF */
            return 0;
        case SO_SNDBUF:
        case SO_KEEPALIVE:
        case SO_PRIORITY:
            return 0; /* accepted; no effect on a datagram fifo of fixed size */
        default:
            return -ENOPROTOOPT;
        }
    }
    if (r->arg0 == IPPROTO_IP) {
        switch (r->arg1) {
        case IP_TTL:
            if (v == -1)
                v = cl->st->par.default_ttl;
            if (v < 1 || v > 255)
                return -EINVAL;
            ds->pcb.ttl = (uint8_t)v;
            return 0;
        case IP_TOS:
            ds->pcb.tos = (uint8_t)(v & 0xfc);
            return 0;
        default:
            return -ENOPROTOOPT;
        }
    }
    return -ENOPROTOOPT;
}

static int op_getsockopt(struct client *cl, struct dsock *ds, const struct shm_req *r,
                         struct shm_cpl *c)
{
    if (ds->type == SOCK_STREAM)
        return tcp_getsockopt(cl, ds, r, c);
    if (r->arg0 == SOL_SOCKET) {
        switch (r->arg1) {
        case SO_TYPE:
            return put_int(c, (int)ds->type);
        case SO_DOMAIN:
            return put_int(c, AF_INET);
        case SO_PROTOCOL:
            return put_int(c, IPPROTO_UDP);
        case SO_ERROR: {
            int e = ds->so_error;
            ds->so_error = 0;
            struct shm_sock *sh = shsock(cl, ds->idx);
            __atomic_store_n(&sh->so_error, 0, __ATOMIC_RELAXED);
            __atomic_fetch_and(&sh->events, ~(uint32_t)SHM_EV_ERR, __ATOMIC_RELEASE);
            return put_int(c, e);
        }
        case SO_REUSEADDR:
            return put_int(c, ds->pcb.reuseaddr);
        case SO_BROADCAST:
            return put_int(c, ds->pcb.broadcast);
        case SO_RCVBUF:
            return put_int(c, (int)ds->rx_limit);
        case SO_SNDBUF:
            return put_int(c, (int)ds->tx_size);
        case SO_KEEPALIVE:
            return put_int(c, 0);
        default:
            return -ENOPROTOOPT;
        }
    }
    if (r->arg0 == IPPROTO_IP) {
        if (r->arg1 == IP_TTL)
            return put_int(c, ds->pcb.ttl);
        if (r->arg1 == IP_TOS)
            return put_int(c, ds->pcb.tos);
    }
    return -ENOPROTOOPT;
}

static void txq_add(struct client *cl, struct dsock *ds)
{
    if (ds->tx_queued)
        return;
    ds->tx_queued = true;
    ds->tx_next = cl->txq;
    cl->txq = ds;
}

static void tcp_close_sock(struct client *cl, struct dsock *ds, bool abort)
{
    struct shm_sock *sh = shsock(cl, ds->idx);
    __atomic_store_n(&sh->gen, 0, __ATOMIC_RELEASE); /* the client's handle is dead now */
    if (!ds->tcp) {
        sock_free(cl, ds, true);
        return;
    }
    struct tcp_pcb *t = ds->tcp;
    /* Unread data at close means the peer's data was lost: RST, not FIN (RFC 2525 2.17). */
    uint32_t unread = ds->rx_tail - __atomic_load_n(&sh->rx_head, __ATOMIC_ACQUIRE);
    if (abort || ds->linger0 || ds->unaccepted || (unread && unread <= ds->rx_size) ||
        t->state == TCPS_LISTEN || t->state == TCPS_SYN_SENT || t->state == TCPS_CLOSED) {
        if (t->state == TCPS_LISTEN || t->state == TCPS_CLOSED || t->state == TCPS_SYN_SENT)
            tcp_close(cl->st, t);
        else
            tcp_abort(cl->st, t);
        ds->tcp = NULL;
        sock_free(cl, ds, true);
        return;
    }
    ds->closing = true;
    tcp_close(cl->st, t); /* EV_CLOSED frees the slot once the data is delivered */
}

static int handle_tcp(struct client *cl, struct dsock *ds, const struct shm_req *r,
                      struct shm_cpl *c)
{
    struct tcp_pcb *t = ds->tcp;
    int rc = 0;
    switch (r->op) {
    case SHM_OP_CLOSE:
        tcp_close_sock(cl, ds, false);
        return 0;
    case SHM_OP_GETSOCKOPT:
        return op_getsockopt(cl, ds, r, c);
    case SHM_OP_SETSOCKOPT:
        return op_setsockopt(cl, ds, r);
    default:
        break;
    }
    if (!t) { /* the connection is gone (reset, timed out): only close and options work */
        if (r->op == SHM_OP_TX || r->op == SHM_OP_RX_DONE)
            return 0;
        if (r->op == SHM_OP_GETSOCKNAME || r->op == SHM_OP_GETPEERNAME) {
            struct shm_sock *sh = shsock(cl, ds->idx);
            c->addr = r->op == SHM_OP_GETSOCKNAME ? sh->local_addr : sh->peer_addr;
            c->port = r->op == SHM_OP_GETSOCKNAME ? sh->local_port : sh->peer_port;
            return r->op == SHM_OP_GETPEERNAME ? -ENOTCONN : 0;
        }
        return -ENOTCONN;
    }
    switch (r->op) {
    case SHM_OP_BIND:
        if ((rc = bind_allowed(cl, r->port)) < 0)
            return rc;
        rc = t->lport                   ? -EINVAL
             : r->flags & SHM_REQ_GROUP ? sock_join(cl, ds, r->port, false)
                                        : sock_claim(cl, ds, r->port);
        /* A port of this session's own listening group (a second address, a restart
         * while accepted connections remain): the socket joins the group. With
         * SO_REUSEADDR, also the group of a server that exited while its connections
         * finish as orphans (a restart, as Linux allows). */
        if (rc == -EADDRINUSE && !(r->flags & SHM_REQ_GROUP) &&
            sock_join(cl, ds, r->port, ds->reuseaddr) == 0)
            rc = 0;
        if (rc == 0 && (rc = tcp_bind(cl->st, t, r->addr, r->port)) < 0)
            sock_unclaim(cl, ds);
        publish_names(cl, ds);
        shsock(cl, ds->idx)->local_addr = t->laddr;
        shsock(cl, ds->idx)->local_port = t->lport;
        return rc;
    case SHM_OP_LISTEN:
        rc = tcp_listen(cl->st, t, r->arg0, tcp_accept_cb, ds);
        shsock(cl, ds->idx)->local_port = t->lport;
        c->port = t->lport;
        if (rc == 0 && (r->flags & SHM_REQ_GROUP)) {
            c->optlen = 1;
            c->opt[0] = (uint8_t)sock_group(cl, ds);
        }
        return rc;
    case SHM_OP_CONNECT:
        rc = tcp_connect(cl->st, t, r->addr, r->port);
        publish_names(cl, ds);
        return rc == 0 ? -EINPROGRESS : rc;
    case SHM_OP_ACCEPT: {
        if (t->state != TCPS_LISTEN)
            return -EINVAL;
        struct tcp_pcb *child = tcp_accept(cl->st, t);
        if (!t->acc_head)
            __atomic_fetch_and(&shsock(cl, ds->idx)->events, ~(uint32_t)SHM_EV_IN,
                               __ATOMIC_RELEASE);
        if (!child)
            return -EAGAIN;
        struct dsock *cds = child->ctx;
        cds->unaccepted = false;
        c->handle = shm_handle(cds->idx, cds->gen);
        c->addr = child->raddr;
        c->port = child->rport;
        return (int)c->handle;
    }
    case SHM_OP_TX:
        __atomic_store_n(&shsock(cl, ds->idx)->tx_kick, 0, __ATOMIC_SEQ_CST);
        tcp_output(cl->st, t);
        return 0;
    case SHM_OP_RX_DONE:
        __atomic_store_n(&shsock(cl, ds->idx)->rx_kick, 0, __ATOMIC_SEQ_CST);
        tcp_rcvd(cl->st, t);
        tcp_rcv_space(ds); /* re-arm or suppress the next RX_DONE */
        return 0;
    case SHM_OP_SHUTDOWN:
        rc = tcp_shutdown(cl->st, t, r->arg0);
        if (rc == 0 && r->arg0 != SHUT_WR)
            set_events(ds, SHM_EV_RDHUP | SHM_EV_IN);
        return rc;
    case SHM_OP_GETSOCKNAME:
        c->addr = t->laddr;
        c->port = t->lport;
        return 0;
    case SHM_OP_GETPEERNAME:
        if (t->state == TCPS_CLOSED || t->state == TCPS_LISTEN || t->state == TCPS_SYN_SENT)
            return -ENOTCONN;
        c->addr = t->raddr;
        c->port = t->rport;
        return 0;
    default:
        return -EINVAL;
    }
}

/* One request; fills the completion. */
static void handle_req(struct client *cl, const struct shm_req *r, struct shm_cpl *c)
{
    memset(c, 0, sizeof(*c));
    c->seq = r->seq;
    c->handle = r->handle;
    if (r->op == SHM_OP_NOP) {
        c->result = 0;
        return;
    }
    if (r->op == SHM_OP_SOCKET) {
        c->result = op_socket(cl, r, c);
        return;
    }
    if (r->op >= SHM_OP_COUNT) {
        c->result = -EINVAL;
        return;
    }
    struct dsock *ds = sock_get(cl, r->handle);
    if (!ds) {
        c->result = -EBADF;
        return;
    }
    if (r->optlen > SHM_OPT_MAX) {
        c->result = -EINVAL;
        return;
    }
    if (ds->type == SOCK_STREAM) {
        c->result = handle_tcp(cl, ds, r, c);
        return;
    }
    int rc = 0;
    switch (r->op) {
    case SHM_OP_BIND:
        if ((rc = bind_allowed(cl, r->port)) < 0)
            break;
        rc = ds->pcb.bound ? -EINVAL : sock_claim(cl, ds, r->port);
        if (rc == 0 && (rc = udp_bind(cl->st, &ds->pcb, r->addr, r->port)) < 0)
            sock_unclaim(cl, ds);
        publish_names(cl, ds);
        break;
    case SHM_OP_CONNECT:
        if (r->flags & SHM_REQ_UNSPEC)
            rc = udp_connect(cl->st, &ds->pcb, 0, 0);
        else
            rc = r->addr || r->port ? udp_connect(cl->st, &ds->pcb, r->addr, r->port) : -EINVAL;
        publish_names(cl, ds);
        break;
    case SHM_OP_CLOSE:
        /* Datagrams sent before close still go out (as with the kernel's socket). */
        while (!cl->broken && !tx_drain(cl, ds))
            ;
        sock_free(cl, ds, true);
        break;
    case SHM_OP_TX:
        /* Clear the kick before draining: a record the client adds after our drain read
         * its tail will see tx_kick == 0 and post a new TX (seq_cst against its exchange). */
        __atomic_store_n(&shsock(cl, ds->idx)->tx_kick, 0, __ATOMIC_SEQ_CST);
        txq_add(cl, ds);
        break;
    case SHM_OP_SETSOCKOPT:
        rc = op_setsockopt(cl, ds, r);
        break;
    case SHM_OP_GETSOCKOPT:
        rc = op_getsockopt(cl, ds, r, c);
        break;
    case SHM_OP_GETSOCKNAME:
        c->addr = ds->pcb.laddr;
        c->port = ds->pcb.lport;
        break;
    case SHM_OP_GETPEERNAME:
        if (!ds->pcb.connected)
            rc = -ENOTCONN;
        c->addr = ds->pcb.raddr;
        c->port = ds->pcb.rport;
        break;
    case SHM_OP_SHUTDOWN:
        if (r->arg0 < SHUT_RD || r->arg0 > SHUT_RDWR) {
            rc = -EINVAL;
            break;
        }
        /* Like Linux: ENOTCONN on an unconnected socket, but the shutdown still applies. */
        if (!ds->pcb.connected)
            rc = -ENOTCONN;
        if (r->arg0 != SHUT_WR) {
            ds->shut_rd = true;
            __atomic_fetch_or(&shsock(cl, ds->idx)->events, SHM_EV_RDHUP | SHM_EV_IN,
                              __ATOMIC_RELEASE);
        }
        if (r->arg0 != SHUT_RD)
            ds->shut_wr = true;
        sock_notify(cl, ds);
        break;
    case SHM_OP_LISTEN:
    case SHM_OP_ACCEPT:
        rc = -EOPNOTSUPP;
        break;
    case SHM_OP_RX_DONE:
        break;
    default:
        rc = -EINVAL;
        break;
    }
    c->result = rc;
}

/* Send what the socket's TX fifo holds (up to TX_BUDGET datagrams). true when drained. */
static bool tx_drain(struct client *cl, struct dsock *ds)
{
    struct shm_sock *sh = shsock(cl, ds->idx);
    /* Acquire: the record bytes the client wrote before its release store are visible. */
    uint32_t tail = __atomic_load_n(&sh->tx_tail, __ATOMIC_ACQUIRE);
    const uint8_t *fifo = cl->base + ds->tx_off;
    int n = 0;
    bool moved = false;
    while (n < TX_BUDGET) {
        struct shm_dgram h;
        uint32_t pos, next;
        int len = shm_dgram_peek(fifo, ds->tx_size, ds->tx_head, tail, &h, &pos, &next);
        if (len == -EAGAIN)
            break;
        if (len < 0) {
            client_break(cl, "malformed TX fifo");
            return true;
        }
        if (!ds->shut_wr) {
            int rc = udp_output(cl->st, &ds->pcb, h.addr, h.port, fifo + pos % ds->tx_size,
                                (uint32_t)len);
            /* Sends are asynchronous: a failure shows up as SO_ERROR on the next call. */
            if (rc && rc != -ENOBUFS)
                set_error(cl, ds, -rc);
            else
                cl->stats.tx_datagrams++;
        }
        ds->tx_head = next;
        moved = true;
        n++;
    }
    if (moved) {
        /* Release: our reads of the records are done before the client may reuse them. */
        __atomic_store_n(&sh->tx_head, ds->tx_head, __ATOMIC_RELEASE);
        sock_notify(cl, ds);   /* writers blocked on a full fifo */
        publish_names(cl, ds); /* an implicit bind on first send */
    }
    return n < TX_BUDGET;
}

void client_attach(struct client *cl, struct stack *st)
{
    cl->st = st;
}

/* Run the requests a departed process left in its rings, completions dropped: libshmnet
 * posts the close of a connection without waiting, so a process that closes and exits at
 * once still sends its FIN (and a TX kick its data) before the resets below. Bounded: a
 * ring holds at most SHM_RING_SIZE requests. */
static void drain_requests(struct client *cl)
{
    for (uint32_t i = 0; i < cl->nchannels && !cl->broken; i++) {
        struct shm_req r;
        struct shm_cpl c;
        int rc;
        while ((rc = shm_req_pop_checked(chan(cl, i), &cl->req_head[i], &r)) > 0) {
            handle_req(cl, &r, &c);
            cl->stats.requests++;
        }
        if (rc < 0)
            client_break(cl, "impossible request ring index");
    }
}

uint32_t client_close_all(struct client *cl)
{
    drain_requests(cl);
    /* The process is gone. As the kernel closes the descriptors of an exiting process,
     * every socket is closed as close() would: a connection sends what was written and
     * then its FIN, and is reset only where close() resets (unread data, SO_LINGER 0,
     * never accepted). What is left lives on as orphans on the region, which the session
     * keeps mapped until the last of them is done (client_orphans_done). A broken client's
     * indices cannot be trusted: its connections are reset. */
    for (uint32_t i = 0; i < cl->nsocks; i++) {
        struct dsock *ds = &cl->socks[i];
        if (!ds->gen || ds->closing)
            continue;
        if (ds->type == SOCK_DGRAM) {
            while (!cl->broken && !tx_drain(cl, ds))
                ; /* what a process sent before it exited still goes out */
            sock_free(cl, ds, false);
        } else {
            tcp_close_sock(cl, ds, cl->broken);
        }
    }
    cl->txq = NULL;
    /* Connections left as orphans keep their claims of a listening group's port: the
     * group is marked orphaned, so that a restarted server can bind the port
     * (sock_join's adopt) while they finish. */
    for (uint32_t i = 0; i < cl->nsocks; i++) {
        const struct dsock *ds = &cl->socks[i];
        if (ds->gen && ds->claim_group)
            stack_port_group(cl->st, ds->claim_port, cl->id, STACK_CLAIM_GROUP_ORPHAN);
    }
    /* Release: a control thread that sees the flag sees no socket of ours left. */
    __atomic_store_n(&cl->orphaned, true, __ATOMIC_RELEASE);
    if (cl->nopen == 0)
        __atomic_store_n(&cl->orphans_done, true, __ATOMIC_RELEASE);
    return cl->nopen;
}

bool client_orphans_done(const struct client *cl)
{
    /* Acquire: pairs with the release in sock_free / client_close_all; after it, the
     * worker no longer touches the region or the socket table. */
    return __atomic_load_n(&cl->orphans_done, __ATOMIC_ACQUIRE);
}

void client_abort_orphans(struct client *cl)
{
    for (uint32_t i = 0; i < cl->nsocks; i++) {
        struct dsock *ds = &cl->socks[i];
        if (!ds->gen)
            continue;
        if (ds->tcp) {
            struct tcp_pcb *t = ds->tcp;
            ds->tcp = NULL;
            tcp_abort(cl->st, t);
        }
        sock_free(cl, ds, false);
    }
}

bool client_pending(const struct client *cl)
{
    if (cl->broken)
        return false;
    return cl->carry || cl->txq || __atomic_load_n(&cl->reg->req_pending, __ATOMIC_SEQ_CST) != 0;
}

static int serve_channel(struct client *cl, uint32_t i, bool *more)
{
    struct shm_channel *ch = chan(cl, i);
    int done = 0;
    while (done < CHAN_BUDGET) {
        /* Only take a request when its completion has room: the ring cannot overflow and
         * a client that stops reading completions only stalls itself. */
        uint32_t chead = __atomic_load_n(&ch->cpl_head, __ATOMIC_ACQUIRE);
        uint32_t used = cl->cpl_tail[i] - chead;
        if (used > SHM_RING_SIZE) {
            client_break(cl, "impossible completion ring index");
            return done;
        }
        if (used == SHM_RING_SIZE) {
            *more = true;
            return done;
        }
        struct shm_req r;
        int rc = shm_req_pop_checked(ch, &cl->req_head[i], &r);
        if (rc == 0)
            return done;
        if (rc < 0) {
            client_break(cl, "impossible request ring index");
            return done;
        }
        struct shm_cpl c;
        handle_req(cl, &r, &c);
        cl->stats.requests++;
        if (shm_cpl_push_checked(ch, &cl->cpl_tail[i], &c) == 0)
            cl->stats.completions++;
        cl->wake |= 1ull << i;
        done++;
    }
    *more = true;
    return done;
}

int client_poll(struct client *cl, int budget)
{
    if (cl->broken)
        return 0;
    /* Acquire pairs with the client's release fetch_or: its requests are visible. The
     * cheap relaxed peek first keeps an idle client to one shared-cache-line read. */
    uint64_t pend = cl->carry;
    if (__atomic_load_n(&cl->reg->req_pending, __ATOMIC_RELAXED))
        pend |= __atomic_exchange_n(&cl->reg->req_pending, 0, __ATOMIC_ACQUIRE);
    pend &= chan_mask(cl);
    cl->carry = 0;
    int work = 0;
    while (pend && work < budget && !cl->broken) {
        uint32_t i = (uint32_t)__builtin_ctzll(pend);
        pend &= pend - 1;
        bool more = false;
        work += serve_channel(cl, i, &more);
        if (more)
            cl->carry |= 1ull << i;
    }
    cl->carry |= pend; /* budget spent: the rest next iteration */
    /* Drain TX fifos: sockets stay queued while they have more than one batch. */
    struct dsock **pp = &cl->txq;
    while (*pp && !cl->broken) {
        struct dsock *ds = *pp;
        work++;
        if (tx_drain(cl, ds)) {
            *pp = ds->tx_next;
            ds->tx_queued = false;
        } else {
            pp = &ds->tx_next;
        }
    }
    return work;
}

size_t client_report(const struct client *cl, char *buf, size_t cap)
{
    int n = snprintf(buf, cap,
                     "%s %u pid %d uid %u sockets %u/%u channels %u fifo %ukB/%ukB requests %llu "
                     "rx %llu tx %llu faults %llu%s\n",
                     cl->part ? "client-part" : "client", cl->id, (int)cl->pid, (unsigned)cl->uid,
                     cl->nopen, cl->nsocks, cl->nchannels, cl->fifo_used_pages * (PAGE / 1024),
                     cl->fifo_pages * (PAGE / 1024), (unsigned long long)cl->stats.requests,
                     (unsigned long long)cl->stats.rx_datagrams,
                     (unsigned long long)cl->stats.tx_datagrams,
                     (unsigned long long)cl->stats.faults, cl->broken ? " BROKEN" : "");
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap;
}

size_t client_report_sockets(const struct client *cl, char *buf, size_t cap)
{
    size_t n = 0;
    for (uint32_t i = 0; i < cl->nsocks && n < cap; i++) {
        const struct dsock *ds = &cl->socks[i];
        if (!ds->gen || ds->type != SOCK_DGRAM)
            continue; /* TCP connections are listed by tcp_report */
        const struct shm_sock *sh = shsock(cl, i);
        uint32_t rxq = ds->rx_tail - __atomic_load_n(&sh->rx_head, __ATOMIC_RELAXED);
        uint32_t txq = __atomic_load_n(&sh->tx_tail, __ATOMIC_RELAXED) - ds->tx_head;
        char la[16], ra[16];
        int w = snprintf(
            buf + n, cap - n, "udp client %u handle %#x local %s:%u peer %s:%u rxq %u txq %u%s\n",
            cl->id, shm_handle(i, ds->gen), ip4_fmt(ds->pcb.laddr, la), ds->pcb.lport,
            ds->pcb.connected ? ip4_fmt(ds->pcb.raddr, ra) : "*",
            ds->pcb.connected ? (unsigned)ds->pcb.rport : 0u, rxq > ds->rx_size ? 0 : rxq,
            txq > ds->tx_size ? 0 : txq, ds->so_error ? " error" : "");
        if (w < 0)
            break;
        n += (size_t)w;
    }
    return n < cap ? n : cap;
}
