/* Client sessions, worker side: see client.h and docs/ipc.md.
 *
 * Every byte of the region can be written by the client at any time. The rules:
 * indices and requests are read once (copied) and checked before use; the daemon keeps its
 * own indices and layout privately and never reads them back; handles are checked against
 * this client's own table; an impossible value marks the client broken (its session is then
 * closed), it never reaches the stack or another client. */
#include "daemon/client_impl.h"

size_t client_region_size(uint32_t nchannels, uint32_t nsocks, uint32_t fifo_bytes)
{
    size_t n = PAGE;                                                /* header */
    n += page_up(nchannels * (uint32_t)sizeof(struct shm_channel)); /* shm.h: an array */
    n += ((size_t)nsocks * sizeof(struct shm_sock) + PAGE - 1) & ~(size_t)(PAGE - 1);
    n += page_up(fifo_bytes);
    return n;
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

/* ---- misbehaviour and wake-ups ---- */

void client_break(struct client *cl, const char *why)
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
void sock_notify(struct client *cl, struct dsock *ds)
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

void set_error(struct client *cl, struct dsock *ds, int err)
{
    struct shm_sock *sh = shsock(cl, ds->idx);
    ds->so_error = err;
    __atomic_store_n(&sh->so_error, err, __ATOMIC_RELAXED);
    __atomic_fetch_or(&sh->events, SHM_EV_ERR, __ATOMIC_RELEASE);
    sock_notify(cl, ds);
}

/* Several workers: a port bound explicitly (or shared with the listener that did) becomes
 * this worker's, so the others hand its datagrams over (docs/workers.md). */
int sock_claim(struct client *cl, struct dsock *ds, uint16_t port)
{
    if (!port || ds->claim_port)
        return 0;
    bool reuse = ds->type == SOCK_STREAM ? ds->reuseaddr : ds->pcb.reuseaddr;
    int rc = stack_port_claim(cl->st, ds->type == SOCK_STREAM ? 6 : 17, port, reuse);
    if (rc == 0)
        ds->claim_port = port;
    return rc;
}

void sock_unclaim(struct client *cl, struct dsock *ds)
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
int bind_allowed(const struct client *cl, uint16_t port)
{
    return port && port < cl->bind_min && !cl->bind_low ? -EACCES : 0;
}

/* A TCP port of this client's listening group: a member listener of another part binds
 * it, or a connection a member accepted holds it. With adopt, also the group of a session
 * that is gone whose orphaned connections still hold the port. */
int sock_join(struct client *cl, struct dsock *ds, uint16_t port, bool adopt)
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
int sock_group(struct client *cl, struct dsock *ds)
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

void sock_free(struct client *cl, struct dsock *ds, bool release)
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

/* A socket slot with its two fifos, published in the region; NULL with *err set. */
struct dsock *sock_alloc(struct client *cl, uint32_t type, int *err)
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

void publish_names(struct client *cl, struct dsock *ds)
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

void txq_add(struct client *cl, struct dsock *ds)
{
    if (ds->tx_queued)
        return;
    ds->tx_queued = true;
    ds->tx_next = cl->txq;
    cl->txq = ds;
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
    c->result = ds->type == SOCK_STREAM ? handle_tcp(cl, ds, r, c) : handle_udp(cl, ds, r, c);
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
