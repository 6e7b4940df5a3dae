/* TCP over a socket's fifos (the stack's tcp_buf_ops on the shared region), its events
 * and accepted connections, and the requests on a TCP socket. */
#include "daemon/client_impl.h"

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

const struct tcp_buf_ops tcp_fifo_ops = {tcp_snd_len,   tcp_snd_copy,     tcp_snd_ack,
                                         tcp_rcv_space, tcp_rcv_write_at, tcp_rcv_commit};

static void set_events(struct dsock *ds, uint32_t set)
{
    __atomic_fetch_or(&shsock(ds->cl, ds->idx)->events, set, __ATOMIC_RELEASE);
    sock_notify(ds->cl, ds);
}

void tcp_event_cb(void *ctx, struct tcp_pcb *pcb, enum tcp_event ev, int err)
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
int tcp_accept_cb(void *lctx, struct tcp_pcb *listener, struct tcp_pcb *child)
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

void tcp_close_sock(struct client *cl, struct dsock *ds, bool abort)
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

int handle_tcp(struct client *cl, struct dsock *ds, const struct shm_req *r, struct shm_cpl *c)
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
