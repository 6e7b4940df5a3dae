/* The stream (TCP) API: connect, listen across workers, accept, send and receive over the
 * byte fifos. */
#include "libclient/client_impl.h"

#include <stdlib.h>
#include <string.h>

static void tcp_set_connected(struct csock *s)
{
    __atomic_store_n(&s->connected, 1, __ATOMIC_RELAXED);
    /* release: pairs with sock_tstate's acquire (connected is set first). */
    __atomic_store_n(&s->tstate, TS_CONNECTED, __ATOMIC_RELEASE);
}

/* A connect in progress: 0 once connected, -EALREADY while the handshake runs, or the
 * error that ended it (taken from the daemon, which clears it, as Linux's connect does). */
static int tcp_connect_result(struct csock *s)
{
    uint32_t ev = sock_events(s);

    if (ev & (SHM_EV_ERR | SHM_EV_HUP)) {
        int e = sock_take_error(s);
        __atomic_store_n(&s->tstate, TS_NONE, __ATOMIC_RELEASE);
        return -(e ? e : ECONNABORTED);
    }
    if (ev & SHM_EV_OUT) {
        tcp_set_connected(s);
        return 0;
    }
    return -EALREADY;
}

static bool tcp_conn_ready(struct csock *s, uint32_t unused)
{
    return (sock_events(s) & (SHM_EV_OUT | SHM_EV_ERR | SHM_EV_HUP)) || sock_closed(s) ||
           att_dead(s->att);
}

static bool tcp_accept_ready(struct csock *s, uint32_t unused)
{
    return (sock_events(s) & (SHM_EV_IN | SHM_EV_ERR | SHM_EV_HUP)) || sock_closed(s) ||
           (sock_shut(s) & 1) || att_dead(s->att);
}

/* need: the bytes a blocked recv waits for (SO_RCVLOWAT, MSG_WAITALL), at least 1. */
static bool tcp_rx_ready(struct csock *s, uint32_t need)
{
    return (need <= 1 ? rx_nonempty(s) : rx_avail(s) >= need) ||
           (sock_events(s) & (SHM_EV_RDHUP | SHM_EV_HUP | SHM_EV_ERR)) || sock_closed(s) ||
           (sock_shut(s) & 1) || sock_errored(s) || att_dead(s->att);
}

static bool tcp_tx_ready(struct csock *s, uint32_t unused)
{
    uint32_t ev = sock_events(s);

    if (sock_closed(s) || (sock_shut(s) & 2) || sock_errored(s) || att_dead(s->att) ||
        (ev & (SHM_EV_ERR | SHM_EV_HUP)))
        return true;
    if (sock_tstate(s) == TS_CONNECTING)
        return ev & SHM_EV_OUT;
    return tx_free(s, __atomic_load_n(&s->sp->tx_tail, __ATOMIC_RELAXED)) > 0;
}

/* close: everything written was acknowledged, or there is no point in waiting. */
bool tcp_tx_acked(struct csock *s, uint32_t unused)
{
    return tx_drained(s, 0) || (sock_events(s) & (SHM_EV_ERR | SHM_EV_HUP));
}

/* Post SHM_OP_TX unless one is in flight. Called after the release store of tx_tail. */
static int tcp_kick_tx(struct csock *s)
{
    /* seq_cst fence: the tx_tail store is ordered before the tx_kick exchange. The daemon
     * clears tx_kick (seq_cst) and then loads tx_tail, so if we see the kick still set it
     * will see our bytes when it sends (Dekker); if we see 0 we post a kick. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_exchange_n(&s->sh->tx_kick, 1, __ATOMIC_SEQ_CST) == 0) {
        struct shm_req req = {.op = SHM_OP_TX, .handle = s->handle};
        if (att_call(s->att, s->pt, &req, NULL) < 0)
            return E_DEAD;
    }
    return 0;
}

/* Post SHM_OP_RX_DONE unless one is in flight. Called after the release store of rx_head. */
static void tcp_kick_rx(struct csock *s)
{
    /* seq_cst fence: the rx_head store is ordered before the rx_kick exchange; the daemon
     * clears rx_kick (seq_cst) before it reads rx_head to compute the window, so either
     * it sees our new head or we see rx_kick cleared and post a new request (Dekker). */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_exchange_n(&s->sh->rx_kick, 1, __ATOMIC_SEQ_CST) == 0) {
        struct shm_req req = {.op = SHM_OP_RX_DONE, .handle = s->handle};
        att_call(s->att, s->pt, &req, NULL); /* a dead session is reported by the next call */
    }
}

/* TCP connect (Linux's __inet_stream_connect): -EINPROGRESS on a non-blocking socket,
 * else wait (up to SO_SNDTIMEO, then -EINPROGRESS) for the handshake's outcome. */
int do_connect_stream(struct csock *s, const struct sockaddr *sa, socklen_t len)
{
    struct shm_req req = {.op = SHM_OP_CONNECT};
    struct shm_cpl cpl = {0};
    int64_t deadline;
    int r, err;

    if (len >= sizeof(sa_family_t) && sa->sa_family == AF_UNSPEC)
        return -EOPNOTSUPP; /* disconnecting a TCP socket is not supported */
    r = get_sockaddr(sa, len, &req.addr, &req.port);
    if (r < 0)
        return r;
    switch (sock_tstate(s)) {
    case TS_CONNECTED:
    case TS_LISTEN:
        return -EISCONN;
    case TS_CONNECTING:
        err = -EALREADY;
        break;
    default:
        r = sock_call(s, &req, &cpl, OP_OTHER);
        if (r < 0)
            return r;
        if (cpl.result == 0) { /* connected at once */
            tcp_set_connected(s);
            return 0;
        }
        if (cpl.result != -EINPROGRESS)
            return cpl.result;
        __atomic_store_n(&s->tstate, TS_CONNECTING, __ATOMIC_RELEASE);
        err = -EINPROGRESS;
        if (sock_nonblock(s, 0))
            return err;
        break;
    }
    deadline = deadline_of(s->sndtimeo);
    for (;;) {
        r = tcp_connect_result(s);
        if (r != -EALREADY)
            return r;
        if (sock_nonblock(s, 0))
            return err;
        r = sock_wait(s, tcp_conn_ready, 0, deadline);
        if (sock_closed(s))
            return -EBADF;
        if (r == -EAGAIN)
            return err; /* SO_SNDTIMEO: still in progress, as Linux reports */
        if (r == -EINTR && !eintr_restarts(s->sndtimeo))
            return -EINTR;
        if (r == E_DEAD)
            return -ENOTCONN;
    }
}

/* Close listener member m in the daemon; no process holds it any more. relaxed: the
 * sweep of another process may close it too; the daemon answers a second close of a
 * handle with -EBADF, harmlessly. */
void member_close(struct attach *a, struct csock *m)
{
    __atomic_store_n(&m->sp->holders, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&m->closed, 1, __ATOMIC_RELEASE);
    if (!att_dead(a))
        close_handle(a, m->pt, m->handle, false);
}

/* One request to a listener member; its result. */
int member_call(struct csock *m, struct shm_req *req)
{
    struct shm_cpl cpl = {0};
    int r = sock_call(m, req, &cpl, OP_OTHER);
    return r < 0 ? r : cpl.result;
}

/* Several workers (docs/workers.md): s listens on a group port; give it a member in every
 * other part, with the options set so far, joined to the group and listening, so that
 * each worker accepts the connections its flow hash picks. */
static int listen_group(struct csock *s, uint16_t port, int backlog)
{
    struct attach *a = s->att;
    struct csock *m[SHM_MAX_PARTS] = {NULL};
    int n = 0, r = 0;

    for (uint32_t k = 0; k < a->nparts && r == 0; k++) {
        struct part *pt = &a->pt[k];
        struct shm_req req = {.op = SHM_OP_SOCKET, .arg0 = SOCK_STREAM};
        struct shm_cpl cpl = {0};
        if (pt == s->pt)
            continue;
        if (att_call(a, pt, &req, &cpl) < 0) {
            r = -ENOTCONN;
            break;
        }
        if (cpl.result < 0) {
            r = cpl.result;
            break;
        }
        att_ref(a);
        r = csock_new(a, pt, (uint32_t)cpl.result, SOCK_STREAM, false, NULL, &m[n]);
        if (r < 0)
            break;
        n++;
        for (int i = 0; s->opts && i < s->opts->n; i++) { /* best effort, as on s */
            struct shm_req o = {.op = SHM_OP_SETSOCKOPT,
                                .arg0 = s->opts->o[i].level,
                                .arg1 = s->opts->o[i].name,
                                .optlen = s->opts->o[i].len};
            memcpy(o.opt, s->opts->o[i].val, s->opts->o[i].len);
            member_call(m[n - 1], &o);
        }
        struct shm_req b = {.op = SHM_OP_BIND,
                            .flags = SHM_REQ_GROUP,
                            .addr = __atomic_load_n(&s->sh->local_addr, __ATOMIC_RELAXED),
                            .port = port};
        struct shm_req l = {.op = SHM_OP_LISTEN, .arg0 = backlog};
        r = member_call(m[n - 1], &b);
        if (r == 0)
            r = member_call(m[n - 1], &l);
    }
    if (r < 0) {
        for (int i = 0; i < n; i++) {
            member_close(a, m[i]);
            sock_put(m[i]);
        }
        return r;
    }
    for (int i = 0; i < n; i++)
        s->grp[i] = m[i];
    /* release: the members are in place before a reader (poll, accept) sees the count. */
    __atomic_store_n(&s->ngrp, n, __ATOMIC_RELEASE);
    if (sock_closed(s)) /* closed by another thread meanwhile: its release missed them */
        members_release(s, proc_bit(a), true);
    return 0;
}

static int do_listen(struct csock *s, int backlog)
{
    struct shm_req req = {.op = SHM_OP_LISTEN, .arg0 = backlog};
    struct shm_cpl cpl = {0};
    int r;

    if (s->type != SOCK_STREAM)
        return -EOPNOTSUPP;
    int st = sock_tstate(s);
    if (st == TS_CONNECTING || st == TS_CONNECTED)
        return -EINVAL;
    bool group = s->att->nparts > 1 && st != TS_LISTEN;
    if (group)
        req.flags = SHM_REQ_GROUP;
    r = sock_request(s, &req, &cpl);
    if (r < 0)
        return r;
    if (group && cpl.optlen == 1 && cpl.opt[0] == 1) {
        r = listen_group(s, cpl.port, backlog);
        if (r < 0)
            return r;
    } else {
        for (int i = 0; i < grp_n(s); i++) { /* listen again: a new backlog for all */
            struct shm_req l = {.op = SHM_OP_LISTEN, .arg0 = backlog};
            member_call(s->grp[i], &l);
        }
    }
    __atomic_store_n(&s->tstate, TS_LISTEN, __ATOMIC_RELEASE);
    return 0;
}

/* The listener to ask for a connection: among s and its members, the first (from a
 * rotating start, so no worker's queue starves) whose queue shows one; s when none does.
 * *ready: one did. */
static struct csock *accept_pick(struct csock *s, bool *ready)
{
    int n = grp_n(s) + 1;
    /* relaxed: only spreads the picks */
    unsigned start = __atomic_fetch_add(&s->acc_next, 1, __ATOMIC_RELAXED);

    for (int i = 0; i < n; i++) {
        int j = (int)((start + (unsigned)i) % (unsigned)n);
        struct csock *m = j == 0 ? s : s->grp[j - 1];
        if (__atomic_load_n(&m->sh->events, __ATOMIC_ACQUIRE) & SHM_EV_IN) {
            *ready = true;
            return m;
        }
    }
    *ready = false;
    return s;
}

int shmnet_listen(int fd, int backlog)
{
    return (int)WITH_SOCK(fd, s, do_listen(s, backlog));
}

static int do_accept(struct csock *s, struct sockaddr *sa, socklen_t *len, int flags)
{
    struct shm_req req = {.op = SHM_OP_ACCEPT};
    struct shm_cpl cpl = {0};
    int64_t deadline = 0;
    struct csock *c;
    int r;

    if (flags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC))
        return -EINVAL;
    if (s->type != SOCK_STREAM)
        return -EOPNOTSUPP;
    if (sa || len) {
        r = check_out_addr(sa, len);
        if (r < 0)
            return r;
    }
    if (sock_tstate(s) != TS_LISTEN)
        return -EINVAL;
    struct csock *m = s;
    for (int tries = 0;; tries++) {
        bool ready;
        if (sock_closed(s))
            return -EBADF;
        m = accept_pick(s, &ready);
        r = sock_call(m, &req, &cpl, OP_OTHER);
        if (r < 0)
            return r;
        if (cpl.result >= 0)
            break;
        if (cpl.result != -EAGAIN)
            return cpl.result;
        if (ready && tries <= 2 * grp_n(s))
            continue; /* another process took that one: look at the other queues */
        tries = 0;
        if (sock_shut(s) & 1)
            return -EINVAL; /* shut down while listening, as Linux reports */
        r = wait_turn(s, 0, NULL, tcp_accept_ready, 0, s->rcvtimeo, &deadline);
        if (r == E_DEAD)
            return -ENOTCONN;
        if (r < 0)
            return r; /* -EAGAIN (SO_RCVTIMEO), -EINTR */
    }
    att_ref(s->att); /* the new socket's reference */
    r = csock_make(s->att, m->pt, (uint32_t)cpl.result, SOCK_STREAM, !!(flags & SOCK_NONBLOCK), &c);
    if (r < 0)
        return r;
    tcp_set_connected(c);
    if (sa)
        put_sockaddr(sa, len, cpl.addr, cpl.port);
    return r;
}

int shmnet_accept(int fd, struct sockaddr *addr, socklen_t *addrlen)
{
    return (int)WITH_SOCK(fd, s, do_accept(s, addr, addrlen, 0));
}

int shmnet_accept4(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
    return (int)WITH_SOCK(fd, s, do_accept(s, addr, addrlen, flags));
}

/* EPIPE on a stream, with SIGPIPE unless MSG_NOSIGNAL (as Linux). */
static ssize_t tcp_epipe(int flags)
{
    if (!(flags & MSG_NOSIGNAL))
        raise(SIGPIPE);
    return -EPIPE;
}

/* Why a stream cannot take bytes now: 0 (it can), 1 (still connecting), or -errno. Called
 * with tx_lock held. */
static int tcp_tx_state(struct csock *s, int flags)
{
    if (sock_closed(s))
        return -EBADF;
    if (!att_alive(s->att, false))
        return E_DEAD;
    if (sock_shut(s) & 2)
        return (int)tcp_epipe(flags);
    if (sock_errored(s)) {
        int e = sock_take_error(s);
        if (e)
            return -e;
    }
    uint32_t ev = sock_events(s);
    if (ev & (SHM_EV_ERR | SHM_EV_HUP))
        return (int)tcp_epipe(flags);
    int st = sock_tstate(s);
    if (st == TS_CONNECTING) {
        if (!(ev & SHM_EV_OUT))
            return 1;
        tcp_set_connected(s);
    } else if (st != TS_CONNECTED) {
        return -ENOTCONN;
    }
    return 0;
}

/* Byte stream into the TX fifo. Blocking: until every byte is queued (or a timeout, a
 * signal or an error after some were: their count). Non-blocking: what fits. */
ssize_t do_send_stream(struct csock *s, const uint8_t *buf, size_t len, int flags)
{
    int64_t deadline = 0;
    size_t done = 0;
    int r = 0;

    if (flags & MSG_OOB)
        return -EOPNOTSUPP;
    if (!buf && len)
        return -EFAULT;
    fam_lock(&s->sp->tx_lock);
    for (;;) {
        r = tcp_tx_state(s, done ? flags | MSG_NOSIGNAL : flags);
        if (r < 0)
            break;
        if (r == 0) {
            /* acquire: the daemon's reads of the acknowledged bytes are done. */
            uint32_t used = s->sp->tx_tail - shm_load_acq(&s->sh->tx_head);
            if (used > s->tx_size) {
                r = -EIO; /* the daemon published an impossible head */
                break;
            }
            size_t n = s->tx_size - used;
            if (n > len - done)
                n = len - done;
            if (n) {
                shm_fifo_put(s->tx_base, s->tx_size, s->sp->tx_tail, buf + done, (uint32_t)n);
                s->sp->tx_tail += (uint32_t)n;
                /* relaxed store: lets waiters read tx_tail without the lock; release store
                 * into the slot: the bytes are visible before the daemon sees the tail. */
                __atomic_store_n(&s->sp->tx_tail, s->sp->tx_tail, __ATOMIC_RELAXED);
                shm_store_rel(&s->sh->tx_tail, s->sp->tx_tail);
                done += n;
                if (tcp_kick_tx(s) < 0) {
                    r = E_DEAD;
                    break;
                }
            }
            if (done == len)
                break;
        }
        r = wait_turn(s, flags, &s->sp->tx_lock, tcp_tx_ready, 0, s->sndtimeo, &deadline);
        if (r < 0 && r != E_DEAD)
            break; /* -EAGAIN (non-blocking, SO_SNDTIMEO), -EINTR */
    }
    pthread_mutex_unlock(&s->sp->tx_lock);
    if (done)
        return (ssize_t)done;
    if (r == E_DEAD)
        return -EPIPE; /* daemon gone: no SIGPIPE (docs/libshmnet.md) */
    return r;
}

/* Bytes from the RX fifo. EOF (0) after the peer's FIN or SHUT_RD once the fifo is empty;
 * a reset reports ECONNRESET once the queued bytes are read. */
ssize_t do_recv_stream(struct csock *s, uint8_t *buf, size_t len, int flags, socklen_t *srclen)
{
    bool waitall = (flags & MSG_WAITALL) && !(flags & MSG_PEEK);
    int64_t deadline = 0;
    size_t done = 0;
    int r = 0;

    if (flags & MSG_OOB)
        return -EINVAL; /* no urgent data, ever */
    if (!buf && len)
        return -EFAULT;
    int st = sock_tstate(s);
    if (st == TS_NONE || st == TS_LISTEN)
        return -ENOTCONN;
    if (srclen)
        *srclen = 0; /* a stream reports no source address (as Linux's TCP) */
    if (len == 0)
        return 0;
    /* tcp(7): a blocking read returns once it has min(SO_RCVLOWAT, len) bytes, or all of
     * len with MSG_WAITALL (or the connection ended first). */
    size_t target = waitall ? len : (flags & MSG_PEEK) ? 1 : rcv_lowat(s);
    if (target > len)
        target = len;
    fam_lock(&s->sp->rx_lock);
    for (;;) {
        if (sock_closed(s)) {
            r = -EBADF;
            break;
        }
        /* acquire: the bytes the daemon wrote before its release store are visible. */
        uint32_t avail = shm_load_acq(&s->sh->rx_tail) - s->sp->rx_head;
        if (avail > s->rx_size) {
            r = -EIO; /* the daemon published an impossible tail */
            break;
        }
        if (avail) {
            size_t n = avail < len - done ? avail : len - done;
            shm_fifo_get(s->rx_base, s->rx_size, s->sp->rx_head, buf + done, (uint32_t)n);
            done += n;
            if (!(flags & MSG_PEEK)) {
                s->sp->rx_head += (uint32_t)n;
                /* relaxed: rx_nonempty reads it without the lock. release into the slot:
                 * our reads of the bytes are done before the daemon may reuse the space. */
                __atomic_store_n(&s->sp->rx_head, s->sp->rx_head, __ATOMIC_RELAXED);
                shm_store_rel(&s->sh->rx_head, s->sp->rx_head);
                tcp_kick_rx(s);
            }
            if (done >= target)
                break;
            continue;
        }
        /* The daemon publishes bytes (rx_tail) before the error or the FIN behind them.
         * Having seen one of those (acquire), look at the tail once more: bytes that came
         * in between our first look and the flag are still delivered before it. */
        bool ended = (sock_events(s) & (SHM_EV_RDHUP | SHM_EV_HUP | SHM_EV_ERR)) ||
                     sock_errored(s) || (sock_shut(s) & 1);
        if (ended && shm_load_acq(&s->sh->rx_tail) != s->sp->rx_head)
            continue;
        if (sock_errored(s)) {
            if (done)
                break;
            int e = sock_take_error(s);
            if (e) {
                r = -e;
                break;
            }
        }
        if ((sock_events(s) & (SHM_EV_RDHUP | SHM_EV_HUP)) || (sock_shut(s) & 1))
            break; /* EOF */
        if (!att_alive(s->att, false)) {
            r = -ECONNRESET;
            break;
        }
        r = wait_turn(s, flags, &s->sp->rx_lock, tcp_rx_ready, (uint32_t)(target - done),
                      s->rcvtimeo, &deadline);
        if (r == E_DEAD)
            continue; /* queued bytes are still delivered, then ECONNRESET */
        if (r < 0 && !rx_nonempty(s))
            break;
        r = 0;
    }
    pthread_mutex_unlock(&s->sp->rx_lock);
    return done ? (ssize_t)done : r;
}
