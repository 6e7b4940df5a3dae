/* epoll for a mix of kernel fds and shmnet sockets (LD_PRELOAD): a kernel epoll instance
 * holds the kernel fds, the sockets are checked from memory, and the thread's wake fds
 * join the kernel instance before it sleeps. */
#include "libclient/preload_int.h"

/* ------------------------------------------------------------------ epoll */

/* A kernel epoll instance keeps the kernel fds; the shmnet sockets added to it are kept
 * here (struct ep) and checked from memory. Before sleeping, the thread's wake fds
 * (channel eventfd, control socket) are added to the kernel instance with a marker. */
#define EP_MARK      0x73686d6e00000000ull /* "shmn" in the high half of data.u64 */
#define EP_MARK_MASK 0xffffffff00000000ull

struct epe {
    int fd;
    void *sock; /* a reference to its socket (shmnet__sock_ref) */
    uint32_t events;
    epoll_data_t data;
    uint64_t sig; /* EPOLLET: readiness signature last reported */
    bool have_sig, disabled;
};

struct ep {
    int refs; /* atomic: the table's + one per call in progress */
    int epfd;
    pthread_mutex_t lock;
    struct epe *v;
    int n, cap, rr;
    int *pos; /* pos[fd] = index + 1 in v, or 0 */
    int npos;
    int wake[8]; /* wake fds added to the kernel instance */
    int nwake;
    struct ep *next; /* all instances with shmnet sockets, under ep_glock */
};

static struct ep *eptab[FD_LIMIT];
static struct ep *ep_all;
static pthread_mutex_t ep_glock = PTHREAD_MUTEX_INITIALIZER;

static void ep_put(struct ep *e)
{
    if (__atomic_sub_fetch(&e->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        for (int i = 0; i < e->n; i++)
            shmnet__sock_unref(e->v[i].sock);
        pthread_mutex_destroy(&e->lock);
        free(e->v);
        free(e->pos);
        free(e);
    }
}

static struct ep *ep_get(int epfd, bool create)
{
    struct ep *e;

    if (epfd < 0 || epfd >= FD_LIMIT)
        return NULL;
    pthread_mutex_lock(&ep_glock);
    e = eptab[epfd];
    if (!e && create && (e = calloc(1, sizeof(*e)))) {
        e->refs = 1;
        e->epfd = epfd;
        pthread_mutex_init(&e->lock, NULL);
        eptab[epfd] = e;
        e->next = ep_all;
        ep_all = e;
    }
    if (e)
        __atomic_fetch_add(&e->refs, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&ep_glock);
    return e;
}

void ep_free_fd(int epfd)
{
    struct ep *e = NULL;

    if (epfd < 0 || epfd >= FD_LIMIT || !__atomic_load_n(&eptab[epfd], __ATOMIC_RELAXED))
        return;
    pthread_mutex_lock(&ep_glock);
    e = eptab[epfd];
    eptab[epfd] = NULL;
    for (struct ep **pp = &ep_all; e && *pp; pp = &(*pp)->next) {
        if (*pp == e) {
            *pp = e->next;
            break;
        }
    }
    pthread_mutex_unlock(&ep_glock);
    if (e)
        ep_put(e);
}

static void ep_del_locked(struct ep *e, int fd)
{
    if (fd >= e->npos || !e->pos[fd])
        return;
    int i = e->pos[fd] - 1;
    e->pos[fd] = 0;
    shmnet__sock_unref(e->v[i].sock);
    if (i != e->n - 1) {
        e->v[i] = e->v[e->n - 1];
        e->pos[e->v[i].fd] = i + 1;
    }
    e->n--;
}

/* A shmnet fd name went away: drop it from every epoll set (the kernel does this when the
 * last reference closes; here a name is the unit, which is what programs rely on). */
void ep_forget_fd(int fd)
{
    if (!__atomic_load_n(&ep_all, __ATOMIC_RELAXED))
        return;
    pthread_mutex_lock(&ep_glock);
    for (struct ep *e = ep_all; e; e = e->next) {
        pthread_mutex_lock(&e->lock);
        ep_del_locked(e, fd);
        pthread_mutex_unlock(&e->lock);
    }
    pthread_mutex_unlock(&ep_glock);
}

/* fd became a kernel socket (migrate): its registrations move to the kernel instances. */
void ep_migrate_fd(int fd)
{
    if (!__atomic_load_n(&ep_all, __ATOMIC_RELAXED))
        return;
    pthread_mutex_lock(&ep_glock);
    for (struct ep *e = ep_all; e; e = e->next) {
        pthread_mutex_lock(&e->lock);
        if (fd < e->npos && e->pos[fd]) {
            struct epe *x = &e->v[e->pos[fd] - 1];
            struct epoll_event ev = {.events = x->events, .data = x->data};
            REAL(epoll_ctl)(e->epfd, EPOLL_CTL_ADD, fd, &ev);
            ep_del_locked(e, fd);
        }
        pthread_mutex_unlock(&e->lock);
    }
    pthread_mutex_unlock(&ep_glock);
}

EXPORT int epoll_create(int size)
{
    return REAL(epoll_create)(size);
}

EXPORT int epoll_create1(int flags)
{
    return REAL(epoll_create1)(flags);
}

EXPORT int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    if (!sn(fd))
        return REAL(epoll_ctl)(epfd, op, fd, ev);
    if (epfd == fd || REAL(fcntl)(epfd, F_GETFD) < 0) {
        errno = epfd == fd ? EINVAL : EBADF;
        return -1;
    }
    if (op != EPOLL_CTL_DEL && !ev) {
        errno = EFAULT;
        return -1;
    }
    struct ep *e = ep_get(epfd, op == EPOLL_CTL_ADD);
    int r = 0;
    if (!e) {
        errno = op == EPOLL_CTL_ADD ? ENOMEM : ENOENT;
        return -1;
    }
    pthread_mutex_lock(&e->lock);
    bool present = fd < e->npos && e->pos[fd];
    if (op == EPOLL_CTL_ADD) {
        if (present) {
            r = -EEXIST;
        } else {
            if (fd >= e->npos) {
                int np = e->npos ? e->npos : 64;
                while (np <= fd)
                    np *= 2;
                int *p = realloc(e->pos, (size_t)np * sizeof(*p));
                if (!p) {
                    r = -ENOMEM;
                    goto out;
                }
                memset(p + e->npos, 0, (size_t)(np - e->npos) * sizeof(*p));
                e->pos = p;
                e->npos = np;
            }
            if (e->n == e->cap) {
                int nc = e->cap ? 2 * e->cap : 16;
                struct epe *v = realloc(e->v, (size_t)nc * sizeof(*v));
                if (!v) {
                    r = -ENOMEM;
                    goto out;
                }
                e->v = v;
                e->cap = nc;
            }
            void *sock = shmnet__sock_ref(fd);
            if (!sock) {
                r = -EBADF;
                goto out;
            }
            e->v[e->n] =
                (struct epe){.fd = fd, .sock = sock, .events = ev->events, .data = ev->data};
            e->pos[fd] = ++e->n;
        }
    } else if (op == EPOLL_CTL_MOD) {
        if (!present)
            r = -ENOENT;
        else if (ev->events & EPOLLEXCLUSIVE)
            r = -EINVAL;
        else {
            struct epe *x = &e->v[e->pos[fd] - 1];
            *x = (struct epe){.fd = fd, .sock = x->sock, .events = ev->events, .data = ev->data};
        }
    } else if (op == EPOLL_CTL_DEL) {
        if (!present)
            r = -ENOENT;
        else
            ep_del_locked(e, fd);
    } else {
        r = -EINVAL;
    }
out:
    pthread_mutex_unlock(&e->lock);
    ep_put(e);
    if (r < 0) {
        errno = -r;
        return -1;
    }
    return 0;
}

/* Ready shmnet entries into out[0..max), round robin so none starves. */
static int ep_scan(struct ep *e, struct epoll_event *out, int max)
{
    int k = 0;

    pthread_mutex_lock(&e->lock);
    for (int j = 0; j < e->n && k < max; j++) {
        int i = (e->rr + j) % e->n;
        struct epe *x = &e->v[i];
        uint64_t sig;
        if (x->disabled)
            continue;
        int rev = shmnet__sock_revents(x->sock, (short)(x->events & 0xffff), &sig);
        rev &= (int)(x->events | EPOLLERR | EPOLLHUP) & 0xffff;
        if (!rev) {
            x->have_sig = false;
            continue;
        }
        if (x->events & EPOLLET) {
            if (x->have_sig && x->sig == sig)
                continue;
            x->sig = sig;
            x->have_sig = true;
        }
        if (x->events & EPOLLONESHOT)
            x->disabled = true;
        out[k].events = (uint32_t)rev;
        out[k].data = x->data;
        k++;
    }
    if (e->n)
        e->rr = (e->rr + 1) % e->n;
    pthread_mutex_unlock(&e->lock);
    return k;
}

/* Drop the marker events; returns how many real ones remain. */
static int ep_filter(struct ep *e, struct epoll_event *ev, int n)
{
    int k = 0;

    for (int i = 0; i < n; i++) {
        if ((ev[i].data.u64 & EP_MARK_MASK) == EP_MARK)
            continue;
        ev[k++] = ev[i];
    }
    return k;
}

/* Make sure wake fd w is in the kernel instance (level-triggered, with the marker). */
static void ep_add_wake(struct ep *e, int w)
{
    pthread_mutex_lock(&e->lock);
    bool have = false;
    for (int i = 0; i < e->nwake; i++)
        have |= e->wake[i] == w;
    if (!have) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = EP_MARK | (uint32_t)w};
        int r = REAL(epoll_ctl)(e->epfd, EPOLL_CTL_ADD, w, &ev);
        if ((r == 0 || errno == EEXIST) && e->nwake < 8)
            e->wake[e->nwake++] = w;
    }
    pthread_mutex_unlock(&e->lock);
}

/* The session's wake fds must not keep firing once nothing of it is watched. */
static void ep_drop_wakes(struct ep *e)
{
    pthread_mutex_lock(&e->lock);
    for (int i = 0; i < e->nwake; i++)
        REAL(epoll_ctl)(e->epfd, EPOLL_CTL_DEL, e->wake[i], NULL);
    e->nwake = 0;
    pthread_mutex_unlock(&e->lock);
}

static int ep_fds(struct ep *e, int **out, int *cap)
{
    pthread_mutex_lock(&e->lock);
    int n = e->n;
    if (n > *cap) {
        int *p = realloc(*out, (size_t)n * sizeof(*p));
        if (!p) {
            pthread_mutex_unlock(&e->lock);
            return -1;
        }
        *out = p;
        *cap = n;
    }
    for (int i = 0; i < n; i++)
        (*out)[i] = e->v[i].fd;
    pthread_mutex_unlock(&e->lock);
    return n;
}

/* The fds of a set, copied for shmnet__arm: one buffer per thread, kept between waits so a
 * blocking epoll_wait does not allocate (freed at thread exit). */
static __thread int *ep_buf;
static __thread int ep_cap;
static pthread_key_t ep_buf_key;
static pthread_once_t ep_buf_once = PTHREAD_ONCE_INIT;

static void ep_buf_free(void *p)
{
    free(p);
}

static void ep_buf_init(void)
{
    pthread_key_create(&ep_buf_key, ep_buf_free);
}

static int ep_wait(struct ep *e, struct epoll_event *ev, int max, int64_t ns, const sigset_t *m)
{
    int64_t t0 = (int64_t)clock_mono_ns(), deadline = ns < 0 ? -1 : t0 + ns;
    int64_t spin_end = t0 + shmnet__spin_ns();
    int nfd = 0, k;

    for (;;) {
        k = ep_scan(e, ev, max);
        if (k < max) {
            int r = REAL(epoll_pwait)(e->epfd, ev + k, max - k, 0, NULL);
            if (r > 0)
                k += ep_filter(e, ev + k, r);
        }
        if (k || ns == 0)
            break;
        int64_t t = (int64_t)clock_mono_ns();
        if (deadline >= 0 && t >= deadline)
            break;
        if (t < spin_end) {
            for (int i = 0; i < 16 && !(k = ep_scan(e, ev, max)); i++)
                shmnet__spin_yield(); /* see channel.c */
            if (k)
                break;
            continue;
        }
        /* Sleep in the kernel instance with the wake fds of the sockets' session. */
        int wake[2];
        int64_t capns, left = deadline < 0 ? -1 : deadline - t;
        int *old = ep_buf;
        nfd = ep_fds(e, &ep_buf, &ep_cap);
        if (ep_buf != old) { /* (re)allocated: the thread's destructor frees the latest */
            pthread_once(&ep_buf_once, ep_buf_init);
            pthread_setspecific(ep_buf_key, ep_buf);
        }
        int *fds = ep_buf;
        bool armed = nfd > 0 && shmnet__arm(fds, (size_t)nfd, wake, &capns) == 0;
        if (armed) {
            ep_add_wake(e, wake[0]);
            ep_add_wake(e, wake[1]);
            if (capns >= 0 && (left < 0 || left > capns))
                left = capns;
            k = ep_scan(e, ev, max); /* after announcing: see sock_wait's protocol */
        } else {
            ep_drop_wakes(e);
        }
        bool slept = !k;
        if (slept) {
            int ms = left < 0 ? -1 : (int)((left + 999999) / 1000000);
            int r = REAL(epoll_pwait)(e->epfd, ev, max, ms, m);
            if (r < 0) {
                int err = errno;
                if (armed)
                    shmnet__disarm(fds, (size_t)nfd);
                errno = err;
                return -1;
            }
            k = ep_filter(e, ev, r);
        }
        if (armed)
            shmnet__disarm(fds, (size_t)nfd);
        /* Only after a sleep: ev then holds kernel fds alone. When the scan after arming
         * found sockets, scanning again would append the level-triggered ones a second
         * time (epoll reports each ready fd at most once per call). */
        if (slept && k < max)
            k += ep_scan(e, ev + k, max - k);
        if (k)
            break;
        spin_end = 0; /* woken for nothing (another thread's wake-up): sleep again */
    }
    return k;
}

EXPORT int epoll_pwait(int epfd, struct epoll_event *ev, int max, int timeout, const sigset_t *m)
{
    struct ep *e = ep_get(epfd, false);

    if (!e)
        return REAL(epoll_pwait)(epfd, ev, max, timeout, m);
    if (max <= 0 || !ev) {
        ep_put(e);
        errno = max <= 0 ? EINVAL : EFAULT;
        return -1;
    }
    int r = ep_wait(e, ev, max, timeout < 0 ? -1 : (int64_t)timeout * 1000000, m);
    ep_put(e);
    return r;
}

EXPORT int epoll_wait(int epfd, struct epoll_event *ev, int max, int timeout)
{
    if (epfd < 0 || epfd >= FD_LIMIT || !__atomic_load_n(&eptab[epfd], __ATOMIC_RELAXED))
        return REAL(epoll_wait)(epfd, ev, max, timeout);
    return epoll_pwait(epfd, ev, max, timeout, NULL);
}

EXPORT int epoll_pwait2(int epfd, struct epoll_event *ev, int max, const struct timespec *t,
                        const sigset_t *m)
{
    struct ep *e = ep_get(epfd, false);

    if (!e)
        return REAL(epoll_pwait2)(epfd, ev, max, t, m);
    int64_t ns = ts_ns(t);
    int r;
    if (max <= 0 || !ev || ns == -2) {
        errno = ns == -2 || max <= 0 ? EINVAL : EFAULT;
        r = -1;
    } else {
        r = ep_wait(e, ev, max, ns, m);
    }
    ep_put(e);
    return r;
}
