/* UDP through a socket's fifos: datagrams received into the RX fifo, the TX fifo drained
 * to the stack, and the requests on a UDP socket. */
#include "core/clock.h"
#include "daemon/client_impl.h"

int udp_deliver_cb(void *ctx, const struct udp_meta *m, const uint8_t *data, uint32_t len)
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
    struct shm_dgram h = {.len = len,
                          .addr = m->src,
                          .port = m->sport,
                          .flags = (uint16_t)((m->tos & 0xfc) | (m->ifindex & 0x7f) << 8 |
                                              (m->bcast ? SHM_DGRAM_BCAST : 0)),
                          .local = m->spec_dst,
                          .ts = ds->want_ts ? clock_real_ns() : 0};
    if (shm_dgram_write(cl->base + ds->rx_off, ds->rx_size, &ds->rx_tail, head, &h, data, NULL, 0))
        return -ENOBUFS;
    /* Release: the record's bytes are visible before the new tail. */
    __atomic_store_n(&sh->rx_tail, ds->rx_tail, __ATOMIC_RELEASE);
    cl->stats.rx_datagrams++;
    sock_notify(cl, ds); /* every datagram: see tcp_rcv_commit for why not only on empty */
    return 0;
}

void udp_err_cb(void *ctx, int err)
{
    struct dsock *ds = ctx;
    set_error(ds->cl, ds, err);
}

/* Send what the socket's TX fifo holds (up to TX_BUDGET datagrams). true when drained. */
bool tx_drain(struct client *cl, struct dsock *ds)
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
            int rc = udp_output_from(cl->st, &ds->pcb, h.local, h.addr, h.port,
                                     fifo + pos % ds->tx_size, (uint32_t)len);
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

/* A request on a UDP socket (TCP's are handle_tcp's). */
int handle_udp(struct client *cl, struct dsock *ds, const struct shm_req *r, struct shm_cpl *c)
{
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
    return rc;
}
