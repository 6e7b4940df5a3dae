/* poll over shmnet sockets, and over any mix of shmnet sockets and kernel fds for the
 * interposer (poll, select, and epoll's arm/disarm). */
#include "libclient/client_impl.h"

#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

/* POLLOUT threshold: room for a maximum-size datagram wherever the tail is (one record
 * plus a wrap marker), or half the fifo if the fifo is smaller than that. */
static uint32_t tx_poll_room(const struct csock *s)
{
    uint32_t want = 2 * shm_dgram_space(SHM_DGRAM_MAX);
    return want < s->tx_size / 2 ? want : s->tx_size / 2;
}

static short sock_revents(struct csock *s, short events)
{
    short ev = 0;

    if (sock_closed(s) || att_dead(s->att)) /* every call fails at once: report it all */
        return (short)(POLLERR | POLLHUP |
                       (events & (POLLIN | POLLOUT | POLLRDNORM | POLLWRNORM | POLLRDHUP)));
    uint32_t sev = sock_events(s);
    int shut = sock_shut(s);
    if (s->type == SOCK_STREAM) {
        /* Data counts against SO_RCVLOWAT; SHM_EV_IN is a listener's queue, or comes with
         * the end of the stream. */
        if (rx_avail(s) >= rcv_lowat(s) || (shut & 1) ||
            (sev & (SHM_EV_IN | SHM_EV_RDHUP | SHM_EV_HUP | SHM_EV_ERR)))
            ev |= POLLIN | POLLRDNORM;
        if ((sev & SHM_EV_OUT) && !(sev & SHM_EV_HUP) && !(shut & 2) &&
            sock_tstate(s) != TS_LISTEN &&
            tx_free(s, __atomic_load_n(&s->sp->tx_tail, __ATOMIC_RELAXED)) > 0)
            ev |= POLLOUT | POLLWRNORM;
        if ((sev & SHM_EV_RDHUP) || (shut & 1))
            ev |= POLLRDHUP;
        if ((sev & SHM_EV_HUP) || shut == 3)
            ev |= POLLHUP;
        if (sock_errored(s) || (sev & SHM_EV_ERR))
            ev |= POLLERR;
        return (short)(ev & (events | POLLERR | POLLHUP));
    }
    if (rx_nonempty(s) || (shut & 1))
        ev |= POLLIN | POLLRDNORM;
    if (sock_errored(s) || (sev & SHM_EV_ERR))
        ev |= POLLERR;
    if (!(shut & 2) &&
        tx_free(s, __atomic_load_n(&s->sp->tx_tail, __ATOMIC_RELAXED)) >= tx_poll_room(s))
        ev |= POLLOUT | POLLWRNORM;
    if (shut == 3 || (sev & SHM_EV_HUP))
        ev |= POLLHUP;
    if ((shut & 1) || (sev & SHM_EV_RDHUP))
        ev |= POLLRDHUP | POLLIN | POLLRDNORM;
    return (short)(ev & (events | POLLERR | POLLHUP));
}

static int poll_scan(struct pollfd *fds, nfds_t n, struct csock **socks)
{
    int ready = 0;

    for (nfds_t i = 0; i < n; i++) {
        if (fds[i].fd < 0)
            fds[i].revents = 0;
        else if (!socks[i])
            fds[i].revents = POLLNVAL;
        else
            fds[i].revents = sock_revents(socks[i], fds[i].events);
        ready += fds[i].revents != 0;
    }
    return ready;
}

static void poll_bits(struct csock **socks, nfds_t n, struct attach *a, uint64_t bit, bool set)
{
    for (nfds_t i = 0; i < n; i++)
        if (socks[i] && socks[i]->att == a)
            sock_waiters(socks[i], bit, set);
}

static int do_poll(struct pollfd *fds, nfds_t n, int timeout_ms, struct csock **socks)
{
    int64_t deadline =
        timeout_ms < 0 ? 0 : (int64_t)clock_mono_ns() + (int64_t)timeout_ms * 1000000ll;
    int64_t spin_end = (int64_t)clock_mono_ns() + SPIN_NS;
    struct attach *a = NULL;
    int r;

    for (nfds_t i = 0; i < n; i++) {
        socks[i] = fds[i].fd >= 0 ? fdt_lookup(fds[i].fd) : NULL;
        if (socks[i] && !a && !att_dead(socks[i]->att))
            a = socks[i]->att;
    }
    for (;;) {
        r = poll_scan(fds, n, socks);
        if (r || timeout_ms == 0)
            return r;
        int64_t t = (int64_t)clock_mono_ns();
        if (deadline && t >= deadline)
            return 0;
        if (!a) { /* no live shmnet socket: a plain sleep */
            struct timespec ts = {0}, *tsp = NULL;
            if (deadline) {
                ts.tv_sec = (deadline - t) / 1000000000ll;
                ts.tv_nsec = (deadline - t) % 1000000000ll;
                tsp = &ts;
            }
            return ppoll(NULL, 0, tsp, NULL) < 0 ? -errno : 0;
        }
        if (t < spin_end) {
            shmnet__spin_yield();
            continue;
        }
        /* The same announcement as sock_wait, on every socket of the live session; sockets
         * of dead sessions are always ready, so they never need a wake-up. */
        int ch = tls_channel(a);
        poll_bits(socks, n, a, 1ull << ch, true);
        chan_sleeping(a, ch, 1);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        r = poll_scan(fds, n, socks);
        int w = r ? 0 : chan_sleep(a, ch, deadline ? deadline - (int64_t)clock_mono_ns() : -1);
        chan_sleeping(a, ch, 0);
        poll_bits(socks, n, a, 1ull << ch, false);
        if (r)
            return r;
        if (w == -EINTR)
            return -EINTR;
        if (w == E_DEAD)
            a = NULL; /* next scan reports every socket of it */
    }
}

int shmnet_poll(struct pollfd *fds, nfds_t nfds, int timeout_ms)
{
    struct csock *small[16], **socks = small;
    int r;

    if (!fds && nfds)
        return (int)ret_errno(-EFAULT);
    if (nfds > (nfds_t)INT_MAX)
        return (int)ret_errno(-EINVAL);
    if (nfds > sizeof(small) / sizeof(small[0])) {
        socks = calloc(nfds, sizeof(*socks));
        if (!socks)
            return (int)ret_errno(-ENOMEM);
    }
    r = do_poll(fds, nfds, timeout_ms, socks);
    for (nfds_t i = 0; i < nfds; i++)
        if (socks[i])
            sock_put(socks[i]);
    if (socks != small)
        free(socks);
    return (int)ret_errno(r);
}

int shmnet__sock_revents(void *sock, short events, uint64_t *sig)
{
    struct csock *s = sock;
    /* The signature first, the readiness after: an edge-triggered caller records sig with
     * the events it reports, so sig must not hold a change those events missed. Read the
     * other way round, data committed between the two reads went into sig but not into
     * the events (EPOLLOUT only, say), and the edge was lost for good: a preloaded nginx
     * then never read a keep-alive request that came with the ACK of its last response. */
    if (sig)
        *sig = (uint64_t)shm_load_acq(&s->sh->rx_tail) << 32 ^
               (uint64_t)shm_load_acq(&s->sh->tx_head) ^ (uint64_t)sock_events(s) << 48 ^
               (uint64_t)(uint32_t)__atomic_load_n(&s->shut, __ATOMIC_RELAXED) << 40;
    /* Acquire: the loads for the readiness below are not done before those of sig. */
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return sock_revents(s, events);
}

int shmnet__nread(int fd)
{
    struct csock *s = fdt_lookup(fd);
    int r = 0;

    if (!s)
        return (int)ret_errno(-EBADF);
    uint32_t tail = shm_load_acq(&s->sh->rx_tail);
    uint32_t head = __atomic_load_n(&s->sp->rx_head, __ATOMIC_RELAXED);
    if (s->type == SOCK_STREAM) {
        uint32_t n = tail - head;
        r = n > s->rx_size ? 0 : (int)n;
    } else {
        struct shm_dgram h;
        uint32_t pos, next;
        int k = shm_dgram_peek(s->rx_base, s->rx_size, head, tail, &h, &pos, &next);
        r = k > 0 ? k : 0;
    }
    sock_put(s);
    return r;
}

/* The live session of the first live shmnet socket among fds, referenced, or NULL. */
static struct attach *fds_session(const int *fds, size_t n, struct csock **socks)
{
    struct attach *a = NULL;

    for (size_t i = 0; i < n; i++) {
        socks[i] = fds[i] >= 0 ? fdt_lookup(fds[i]) : NULL;
        if (socks[i] && !a && !att_dead(socks[i]->att))
            a = socks[i]->att;
    }
    return a;
}

static void socks_put(struct csock **socks, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (socks[i])
            sock_put(socks[i]);
}

int shmnet__arm(const int *fds, size_t n, int wake_fds[2], int64_t *cap_ns)
{
    struct csock *small[64], **socks = n <= 64 ? small : calloc(n, sizeof(*socks));
    struct attach *a;

    wake_fds[0] = wake_fds[1] = -1;
    *cap_ns = -1;
    if (!socks)
        return (int)ret_errno(-ENOMEM);
    a = fds_session(fds, n, socks);
    if (a) {
        int ch = tls_channel(a);
        poll_bits(socks, n, a, 1ull << ch, true);
        /* seq_cst: see sock_wait (the caller re-checks readiness after this). */
        chan_sleeping(a, ch, 1);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        wake_fds[0] = a->chan_fd[ch];
        wake_fds[1] = a->ctl_fd;
        if (__atomic_load_n(&a->cp[ch].users, __ATOMIC_RELAXED) > 1)
            *cap_ns = SHARED_CAP_NS;
    }
    socks_put(socks, n);
    if (socks != small)
        free(socks);
    return a ? 0 : (int)ret_errno(-EBADF);
}

void shmnet__disarm(const int *fds, size_t n)
{
    struct csock *small[64], **socks = n <= 64 ? small : calloc(n, sizeof(*socks));
    struct attach *a;
    uint64_t v;

    if (!socks)
        return;
    a = fds_session(fds, n, socks);
    int ch = a ? chan_current(a) : -1;
    if (ch >= 0) {
        chan_sleeping(a, ch, 0);
        poll_bits(socks, n, a, 1ull << ch, false);
        if (read(a->chan_fd[ch], &v, sizeof(v)) < 0) {
            /* EAGAIN: no wake-up pending */
        }
        struct pollfd p = {.fd = a->ctl_fd, .events = POLLIN};
        if (poll(&p, 1, 0) > 0)
            att_ctl_event(a, p.revents);
    }
    socks_put(socks, n);
    if (socks != small)
        free(socks);
}

/* Readiness of the kernel fds among fds (socks[i] == NULL), without waiting. */
static int kpoll_scan(struct pollfd *fds, nfds_t n, struct csock **socks, struct pollfd *k,
                      nfds_t *map)
{
    nfds_t nk = 0;
    int ready = 0;

    for (nfds_t i = 0; i < n; i++) {
        if (fds[i].fd >= 0 && !socks[i]) {
            k[nk] = (struct pollfd){.fd = fds[i].fd, .events = fds[i].events};
            map[nk++] = i;
        }
    }
    if (nk && ppoll(k, nk, &(struct timespec){0}, NULL) > 0) {
        for (nfds_t j = 0; j < nk; j++) {
            fds[map[j]].revents = k[j].revents;
            ready += k[j].revents != 0;
        }
    }
    return ready;
}

static int mixed_scan(struct pollfd *fds, nfds_t n, struct csock **socks, struct pollfd *k,
                      nfds_t *map, bool kernel)
{
    int ready = 0;

    for (nfds_t i = 0; i < n; i++) {
        if (fds[i].fd < 0 || !socks[i]) {
            fds[i].revents = 0;
            continue;
        }
        fds[i].revents = sock_revents(socks[i], fds[i].events);
        ready += fds[i].revents != 0;
    }
    return ready + (kernel ? kpoll_scan(fds, n, socks, k, map) : 0);
}

static int do_mixed_poll(struct pollfd *fds, nfds_t n, int64_t timeout_ns, const sigset_t *mask,
                         struct csock **socks, struct pollfd *k, nfds_t *map)
{
    int64_t deadline = timeout_ns < 0 ? 0 : (int64_t)clock_mono_ns() + timeout_ns;
    int64_t spin_end = (int64_t)clock_mono_ns() + SPIN_NS;
    struct attach *a = NULL;
    nfds_t nk = 0;
    int r;

    for (nfds_t i = 0; i < n; i++) {
        socks[i] = fds[i].fd >= 0 ? fdt_lookup(fds[i].fd) : NULL;
        if (socks[i] && !a && !att_dead(socks[i]->att))
            a = socks[i]->att;
        nk += fds[i].fd >= 0 && !socks[i];
    }
    r = mixed_scan(fds, n, socks, k, map, true);
    if (r || timeout_ns == 0)
        return r;
    for (;;) {
        int64_t t = (int64_t)clock_mono_ns();
        if (deadline && t >= deadline)
            return 0;
        if (a && t < spin_end) { /* spin on the shmnet sockets only */
            shmnet__spin_yield();
            r = mixed_scan(fds, n, socks, k, map, false);
            if (r)
                return r;
            continue;
        }
        /* Sleep in the kernel on the kernel fds plus, with live shmnet sockets, the
         * channel eventfd and the control socket (announced as in sock_wait). */
        int ch = -1;
        int64_t left = deadline ? deadline - (int64_t)clock_mono_ns() : -1;
        nfds_t m = 0;
        for (nfds_t i = 0; i < n; i++) {
            if (fds[i].fd >= 0 && !socks[i]) {
                k[m] = (struct pollfd){.fd = fds[i].fd, .events = fds[i].events};
                map[m++] = i;
            }
        }
        if (a) {
            ch = tls_channel(a);
            poll_bits(socks, n, a, 1ull << ch, true);
            chan_sleeping(a, ch, 1);
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
            k[m++] = (struct pollfd){.fd = a->chan_fd[ch], .events = POLLIN};
            k[m++] = (struct pollfd){.fd = a->ctl_fd, .events = POLLIN};
            if (__atomic_load_n(&a->cp[ch].users, __ATOMIC_RELAXED) > 1 &&
                (left < 0 || left > SHARED_CAP_NS))
                left = SHARED_CAP_NS;
        }
        r = a ? mixed_scan(fds, n, socks, NULL, NULL, false) : 0;
        int w = 0;
        if (!r) {
            struct timespec ts, *tsp = NULL;
            if (left >= 0) {
                ts.tv_sec = left / 1000000000ll;
                ts.tv_nsec = left % 1000000000ll;
                tsp = &ts;
            }
            w = ppoll_fit(k, m, a ? 2 : 0, tsp, mask);
            if (w < 0)
                w = -errno;
        }
        if (a) {
            uint64_t v;
            chan_sleeping(a, ch, 0);
            poll_bits(socks, n, a, 1ull << ch, false);
            if (w > 0 && (k[m - 2].revents & POLLIN) && read(a->chan_fd[ch], &v, sizeof(v)) < 0) {
                /* EAGAIN: a thread sharing the channel took the wake-up */
            }
            if (w > 0 && k[m - 1].revents)
                att_ctl_event(a, k[m - 1].revents);
            if (att_dead(a))
                a = NULL;
        }
        if (r)
            return r;
        if (w < 0)
            return w; /* -EINTR (a signal, possibly unblocked by mask) */
        /* Report the kernel fds from this ppoll, the shmnet sockets from a fresh scan. */
        r = 0;
        for (nfds_t i = 0; i < n; i++) {
            if (fds[i].fd >= 0 && socks[i]) {
                fds[i].revents = sock_revents(socks[i], fds[i].events);
                r += fds[i].revents != 0;
            }
        }
        for (nfds_t j = 0; j < m - (ch >= 0 ? 2 : 0); j++) {
            fds[map[j]].revents = k[j].revents;
            r += k[j].revents != 0;
        }
        if (r)
            return r;
    }
}

int shmnet__poll(struct pollfd *fds, nfds_t n, int64_t timeout_ns, const sigset_t *sigmask)
{
    struct csock *small[16], **socks = small;
    struct pollfd ksmall[18], *k = ksmall;
    nfds_t msmall[18], *map = msmall;
    int r = -ENOMEM;

    if (!fds && n)
        return (int)ret_errno(-EFAULT);
    if (n > (nfds_t)INT_MAX - 2)
        return (int)ret_errno(-EINVAL);
    if (n > 16) {
        socks = calloc(n, sizeof(*socks));
        k = calloc(n + 2, sizeof(*k));
        map = calloc(n + 2, sizeof(*map));
    }
    if (socks && k && map)
        r = do_mixed_poll(fds, n, timeout_ns, sigmask, socks, k, map);
    else
        socks = socks ? socks : small, n = 0;
    for (nfds_t i = 0; i < n; i++)
        if (socks[i])
            sock_put(socks[i]);
    if (socks != small)
        free(socks);
    if (k != ksmall)
        free(k);
    if (map != msmall)
        free(map);
    return (int)ret_errno(r);
}
