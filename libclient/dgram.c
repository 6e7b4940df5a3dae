/* The datagram (UDP) API: sendto and recvfrom over the record fifos. */
#include "libclient/client_impl.h"

#include <netinet/in.h>
#include <string.h>

static bool rx_ready(struct csock *s, uint32_t unused)
{
    return rx_nonempty(s) || sock_closed(s) || (sock_shut(s) & 1) || sock_errored(s) ||
           att_dead(s->att);
}

static bool tx_ready(struct csock *s, uint32_t len)
{
    uint32_t tail = __atomic_load_n(&s->sp->tx_tail, __ATOMIC_RELAXED);
    return tx_free(s, tail) >= shm_dgram_need(s->tx_size, tail, len) || sock_closed(s) ||
           (sock_shut(s) & 2) || sock_errored(s) || att_dead(s->att);
}

static ssize_t do_sendto(struct csock *s, const void *buf, size_t len, int flags,
                         const struct sockaddr *dst, socklen_t dlen, uint32_t src)
{
    struct shm_dgram h = {.local = ntohl(src)};
    int64_t deadline = 0;
    int r;

    if (s->type == SOCK_STREAM)
        return do_send_stream(s, buf, len, flags); /* the address is ignored, as Linux */
    if (flags & MSG_OOB)
        return -EOPNOTSUPP;
    if (len > SHM_DGRAM_MAX)
        return -EMSGSIZE;
    if (!buf && len)
        return -EFAULT;
    if (dst) {
        r = get_sockaddr(dst, dlen, &h.addr, &h.port);
        if (r < 0)
            return r;
        if (h.port == 0)
            return -EINVAL;
    } else if (!__atomic_load_n(&s->connected, __ATOMIC_RELAXED)) {
        return -EDESTADDRREQ;
    }
    h.len = (uint32_t)len;
    if (sock_closed(s))
        return -EBADF;
    if (!att_alive(s->att, false))
        return -EPIPE;
    if (sock_shut(s) & 2)
        return -EPIPE;
    r = sock_take_error(s);
    if (r)
        return -r;
    if (shm_dgram_space(h.len) > s->tx_size)
        return -EMSGSIZE;

    fam_lock(&s->sp->tx_lock);
    for (;;) {
        uint32_t head = shm_load_acq(&s->sh->tx_head);
        if (s->sp->tx_tail - head > s->tx_size) {
            r = -EIO; /* the daemon published an impossible head */
            break;
        }
        r = shm_dgram_write(s->tx_base, s->tx_size, &s->sp->tx_tail, head, &h, buf, NULL, 0);
        if (r == 0)
            break;
        /* A record that does not fit even in the empty fifo at this position (it would
         * need a wrap marker plus itself) can never be sent: see docs/libshmnet.md. */
        if (shm_dgram_need(s->tx_size, s->sp->tx_tail, h.len) > s->tx_size) {
            r = -EMSGSIZE;
            break;
        }
        r = wait_turn(s, flags, &s->sp->tx_lock, tx_ready, h.len, s->sndtimeo, &deadline);
        if (r == E_DEAD || att_dead(s->att))
            r = -EPIPE;
        else if (sock_closed(s))
            r = -EBADF;
        else if (sock_shut(s) & 2)
            r = -EPIPE;
        else if (r == 0 && sock_errored(s)) {
            pthread_mutex_unlock(&s->sp->tx_lock);
            r = sock_take_error(s);
            fam_lock(&s->sp->tx_lock);
            r = -r;
        }
        if (r < 0)
            break;
    }
    if (r == 0) {
        /* release: the record's bytes are visible before the daemon sees the new tail. The
         * atomic store also lets tx_ready read tx_tail without the lock. */
        __atomic_store_n(&s->sp->tx_tail, s->sp->tx_tail, __ATOMIC_RELAXED);
        shm_store_rel(&s->sh->tx_tail, s->sp->tx_tail);
    }
    pthread_mutex_unlock(&s->sp->tx_lock);
    if (r < 0)
        return r;
    /* seq_cst fence: the tx_tail store is ordered before the tx_kick exchange. The daemon
     * clears tx_kick (seq_cst) and then loads tx_tail, so if we see the kick still set it
     * will see our record when it drains (Dekker); if we see 0 we post a kick. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_exchange_n(&s->sh->tx_kick, 1, __ATOMIC_SEQ_CST) == 0) {
        struct shm_req req = {.op = SHM_OP_TX, .handle = s->handle};
        if (att_call(s->att, s->pt, &req, NULL) < 0)
            return -EPIPE;
    }
    return (ssize_t)len;
}

ssize_t shmnet_sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *dest,
                      socklen_t destlen)
{
    return WITH_SOCK(fd, s, do_sendto(s, buf, len, flags, dest, destlen, 0));
}

ssize_t shmnet__sendto_from(int fd, const void *buf, size_t len, int flags,
                            const struct sockaddr *dst, socklen_t dlen, uint32_t src)
{
    return WITH_SOCK(fd, s, do_sendto(s, buf, len, flags, dst, dlen, src));
}

ssize_t shmnet_send(int fd, const void *buf, size_t len, int flags)
{
    return WITH_SOCK(fd, s, do_sendto(s, buf, len, flags, NULL, 0, 0));
}

/* What the record's header says of how the datagram arrived. */
static void dgram_info(const struct csock *s, const struct shm_dgram *h,
                       struct shmnet_dgram_info *info)
{
    info->want = __atomic_load_n(&s->want, __ATOMIC_RELAXED);
    info->spec_dst = htonl(h->local);
    info->dst = h->flags & SHM_DGRAM_BCAST ? htonl(INADDR_BROADCAST) : info->spec_dst;
    info->ifindex = (int)SHM_DGRAM_IFINDEX(h->flags);
    info->tos = SHM_DGRAM_TOS(h->flags);
    info->ts_ns = h->ts;
}

static ssize_t do_recvfrom(struct csock *s, void *buf, size_t len, int flags, struct sockaddr *src,
                           socklen_t *srclen, struct shmnet_dgram_info *info)
{
    int64_t deadline = 0;
    ssize_t r;

    if (src && !srclen)
        return -EFAULT;
    if (s->type == SOCK_STREAM)
        return do_recv_stream(s, buf, len, flags, src ? srclen : NULL);
    if (!buf && len)
        return -EFAULT;
    if (src && !srclen)
        return -EFAULT;
    if (src && (int)*srclen < 0)
        return -EINVAL;

    fam_lock(&s->sp->rx_lock);
    for (;;) {
        struct shm_dgram h;
        uint32_t pos, next;

        if (sock_closed(s)) {
            r = -EBADF;
            break;
        }
        if (sock_errored(s)) {
            /* Linux reports a pending error before queued data. */
            int e = sock_take_error(s);
            if (e) {
                r = -e;
                break;
            }
        }
        /* acquire: the record's bytes written by the daemon are visible after this load. */
        uint32_t tail = shm_load_acq(&s->sh->rx_tail);
        r = shm_dgram_peek(s->rx_base, s->rx_size, s->sp->rx_head, tail, &h, &pos, &next);
        if (r >= 0) {
            size_t n = (size_t)r < len ? (size_t)r : len;
            if (n)
                shm_fifo_get(s->rx_base, s->rx_size, pos, buf, (uint32_t)n);
            if (src)
                put_sockaddr(src, srclen, h.addr, h.port);
            if (info)
                dgram_info(s, &h, info);
            if (!(flags & MSG_PEEK)) {
                __atomic_store_n(&s->sp->rx_head, next, __ATOMIC_RELAXED);
                /* release: we are done reading the record before the daemon may reuse
                 * its space. */
                shm_store_rel(&s->sh->rx_head, next);
            }
            if (!(flags & MSG_TRUNC))
                r = (ssize_t)n;
            break;
        }
        if (r == -EFAULT) {
            r = -EIO; /* the daemon published an impossible record */
            break;
        }
        if (sock_shut(s) & 1) {
            r = 0;
            break;
        }
        if (!att_alive(s->att, false)) {
            r = dead_err(s, OP_RECV);
            break;
        }
        r = wait_turn(s, flags, &s->sp->rx_lock, rx_ready, 0, s->rcvtimeo, &deadline);
        if (r == E_DEAD)
            continue; /* queued data is still delivered, then the error */
        if (r < 0 && !rx_nonempty(s))
            break;
    }
    pthread_mutex_unlock(&s->sp->rx_lock);
    return r;
}

ssize_t shmnet_recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *src,
                        socklen_t *srclen)
{
    return WITH_SOCK(fd, s, do_recvfrom(s, buf, len, flags, src, srclen, NULL));
}

ssize_t shmnet__recvfrom_info(int fd, void *buf, size_t len, int flags, struct sockaddr *src,
                              socklen_t *srclen, struct shmnet_dgram_info *info)
{
    memset(info, 0, sizeof(*info));
    return WITH_SOCK(fd, s, do_recvfrom(s, buf, len, flags, src, srclen, info));
}

ssize_t shmnet_recv(int fd, void *buf, size_t len, int flags)
{
    return WITH_SOCK(fd, s, do_recvfrom(s, buf, len, flags, NULL, NULL, NULL));
}
