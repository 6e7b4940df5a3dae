/* Channels and waiting: each thread's request/completion rings, posting a request and
 * waiting for its completion, and the spin-then-sleep wait of a blocking call. */
#include "libclient/client_impl.h"

#include <poll.h>
#include <sched.h>
#include <unistd.h>

/* SHMNET_SPIN_US overrides it at the first attach (session.c). */
int64_t spin_ns = SPIN_NS_DEFAULT;

/* Between two looks at a socket that is not ready yet. The data comes from the daemon or
 * from a peer process, either of which may be waiting for this CPU (more runnable tasks
 * than CPUs): yielding lets it run now rather than after our time slice, and costs one
 * system call that returns at once when nobody waits. (Completions of our own requests
 * come within a microsecond or two: those waits pause instead.) */
void shmnet__spin_yield(void)
{
    if (!__atomic_load_n(&sandboxed, __ATOMIC_RELAXED)) {
        sched_yield();
        return;
    }
    for (int i = 0; i < 256; i++) /* a seccomp filter may kill us for sched_yield */
        cpu_relax();
}

int sandboxed;

void shmnet__sandboxed(void)
{
    __atomic_store_n(&sandboxed, 1, __ATOMIC_RELAXED);
}

int ppoll_fit(struct pollfd *p, nfds_t n, nfds_t extra, const struct timespec *ts,
              const sigset_t *mask)
{
    static const struct timespec tick = {0, 1000000};
    int r = ppoll(p, n, ts, mask);

    if (r >= 0 || errno != EINVAL)
        return r;
    /* More fds than RLIMIT_NOFILE (a sandbox's): drop ours from the end, waking every
     * tick so the caller looks at what the dropped fds would have told. */
    if (!ts || ts->tv_sec || ts->tv_nsec > tick.tv_nsec)
        ts = &tick;
    for (nfds_t k = 1; k <= extra && k <= n; k++) {
        p[n - k].revents = 0;
        r = ppoll(p, n - k, ts, mask);
        if (r >= 0 || errno != EINVAL)
            return r;
    }
    return ppoll(NULL, 0, ts, mask);
}

/* This thread's channel in one session. The reference to the session keeps the channel's
 * memory mapped while the thread may still touch it. */
static __thread struct {
    struct attach *att;
    int ch;
    bool exclusive;
} tls;
static pthread_key_t tls_key;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;

/* pid << 32 | tid of this thread: two system calls, made once per thread (and again in a
 * forked child, before it can sandbox itself). */
static __thread uint64_t tls_owner;
static uint64_t owner_word(void)
{
    if (!tls_owner)
        tls_owner = (uint64_t)(uint32_t)getpid() << 32 | (uint32_t)gettid();
    return tls_owner;
}

static void tls_release(void)
{
    struct attach *a = tls.att;

    if (!a)
        return;
    __atomic_fetch_sub(&a->cp[tls.ch].users, 1, __ATOMIC_RELAXED);
    /* release: our last uses of the channel's state happen before the next thread claims
     * it (its CAS acquires). */
    if (tls.exclusive) {
        uint64_t me = owner_word();
        __atomic_compare_exchange_n(&a->cp[tls.ch].owner, &me, 0, false, __ATOMIC_RELEASE,
                                    __ATOMIC_RELAXED);
    }
    tls.att = NULL;
    att_unref(a);
}

static void tls_destructor(void *unused)
{
    tls_release();
}

static void tls_init(void)
{
    pthread_key_create(&tls_key, tls_destructor);
}

/* This thread's channel: a free one claimed for itself (family-wide, so threads of forked
 * processes never share rings unknowingly), a stale claim of a thread that has exited,
 * or, when every channel is owned, one shared under its lock. */
int tls_channel(struct attach *a)
{
    uint64_t me;
    int ch = -1;

    if (tls.att == a)
        return tls.ch;
    me = owner_word();
    tls_release();
    pthread_once(&tls_once, tls_init);
    for (int pass = 0; pass < 2 && ch < 0; pass++) {
        for (uint32_t c = 0; c < a->nchannels && ch < 0; c++) {
            uint64_t o = __atomic_load_n(&a->cp[c].owner, __ATOMIC_RELAXED);
            /* A sandbox may not allow tgkill: there, stale claims are not taken over. */
            if (o && (pass == 0 || __atomic_load_n(&sandboxed, __ATOMIC_RELAXED) ||
                      thread_alive((int32_t)(o >> 32), (int32_t)o)))
                continue;
            /* acquire: see the previous owner's channel state (pairs with tls_release). */
            if (__atomic_compare_exchange_n(&a->cp[c].owner, &o, me, false, __ATOMIC_ACQUIRE,
                                            __ATOMIC_RELAXED))
                ch = (int)c;
        }
    }
    tls.exclusive = ch >= 0;
    if (ch < 0) /* every channel is owned: share one (docs/libshmnet.md) */
        ch = (int)(__atomic_fetch_add(&a->fam->next_share, 1, __ATOMIC_RELAXED) % a->nchannels);
    __atomic_fetch_add(&a->cp[ch].users, 1, __ATOMIC_RELAXED);
    att_ref(a);
    tls.att = a;
    tls.ch = ch;
    pthread_setspecific(tls_key, &tls); /* any non-NULL value runs the destructor */
    return ch;
}

/* This thread's channel in session a if it has claimed one, else -1. */
int chan_current(const struct attach *a)
{
    return tls.att == a ? tls.ch : -1;
}

/* In a forked child: only this thread exists, and the channel claims of the parent's
 * threads (this one's included) stay theirs. Drop our view of it without releasing it. */
void chan_forget_tls(void)
{
    struct attach *t = tls.att;

    tls_owner = 0;
    owner_word();
    if (t) {
        tls.att = NULL;
        att_unref(t);
    }
}

/* Lock channel ch. If the last holder died mid-call, continue from the request index it
 * published (a request it wrote but did not publish is simply not sent). */
static void chan_lock(struct part *pt, int ch)
{
    if (fam_lock(&pt->cp[ch].lock))
        pt->cp[ch].req_tail = shm_load_acq(&pt->chans[ch].req_tail);
}

/* Announce (v = 1) or end a sleep on channel ch to every part's worker: any of them may
 * have an event for this thread. seq_cst when announcing: see sock_wait. */
void chan_sleeping(struct attach *a, int ch, uint32_t v)
{
    for (uint32_t k = 0; k < a->nparts; k++)
        __atomic_store_n(&a->pt[k].chans[ch].client_sleeping, v,
                         v ? __ATOMIC_SEQ_CST : __ATOMIC_RELAXED);
}

/* Sleep on channel ch's eventfd and the control socket until either fires or timeout_ns
 * passes (< 0: no timeout). On a shared channel another thread may consume our wake-up,
 * so the sleep is capped. Returns 0, -EINTR, or E_DEAD. */
int chan_sleep(struct attach *a, int ch, int64_t timeout_ns)
{
    struct pollfd p[2] = {{.fd = a->chan_fd[ch], .events = POLLIN},
                          {.fd = a->ctl_fd, .events = POLLIN}};
    struct timespec ts, *tsp = NULL;
    uint64_t v;

    if (__atomic_load_n(&a->cp[ch].users, __ATOMIC_RELAXED) > 1 &&
        (timeout_ns < 0 || timeout_ns > SHARED_CAP_NS))
        timeout_ns = SHARED_CAP_NS;
    if (timeout_ns >= 0) {
        ts.tv_sec = timeout_ns / 1000000000ll;
        ts.tv_nsec = timeout_ns % 1000000000ll;
        tsp = &ts;
    }
    int n = ppoll_fit(p, 2, 2, tsp, NULL);
    if (n < 0)
        return errno == EINTR ? -EINTR : 0;
    if (p[0].revents & POLLIN && read(a->chan_fd[ch], &v, sizeof(v)) < 0) {
        /* EAGAIN: a thread sharing the channel took the wake-up; nothing to do */
    }
    if (p[1].revents)
        att_ctl_event(a, p[1].revents);
    return att_dead(a) ? E_DEAD : 0;
}

/* Tell part pt's worker that channel ch has requests. */
static void chan_kick(struct attach *a, struct part *pt, int ch)
{
    /* release: the requests (published by shm_req_push's release store of req_tail) are
     * visible to the daemon once it sees the bit (it exchanges with acquire). */
    __atomic_fetch_or(&pt->region->req_pending, 1ull << ch, __ATOMIC_RELEASE);
    /* seq_cst fence: orders the req_pending store before the load of `sleeping` below.
     * The worker stores sleeping = 1 (seq_cst) and then re-checks req_pending; with both
     * fences at least one side sees the other, so a request is never left unseen by a
     * sleeping worker (Dekker). */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(&a->state->worker[pt->worker].sleeping, __ATOMIC_SEQ_CST)) {
        uint64_t one = 1;
        if (write(pt->doorbell_fd, &one, sizeof(one)) < 0) {
            /* EAGAIN: the counter is saturated, so the worker is awake anyway */
        }
    }
}

/* Wait on the channel for the completion with sequence `seq` (any completion if
 * any_seq). Called with the channel lock held. Completions for other sequences (TX kicks
 * nobody waits for) are dropped. Returns 0 or E_DEAD. */
static int chan_wait_cpl(struct attach *a, struct part *pt, int ch, uint32_t seq, bool any_seq,
                         struct shm_cpl *out)
{
    struct shm_channel *c = &pt->chans[ch];
    struct chan_priv *cp = &pt->cp[ch];
    int64_t t0 = (int64_t)clock_mono_ns(), spin_end = t0 + SPIN_NS;
    struct shm_cpl cpl = {0};

    for (;;) {
        while (shm_cpl_pop(c, &cp->cpl_head, &cpl)) {
            if (any_seq || cpl.seq == seq) {
                if (out)
                    *out = cpl;
                return 0;
            }
        }
        if (att_dead(a))
            return E_DEAD;
        int64_t t = (int64_t)clock_mono_ns();
        if (t < spin_end) {
            if (t - t0 < PAUSE_NS) {
                for (int i = 0; i < 64; i++)
                    cpu_relax();
            } else {
                shmnet__spin_yield(); /* a connect waits a network round trip */
            }
            continue;
        }
        /* seq_cst store + fence, then re-check the ring: the daemon publishes cpl_tail and
         * then (seq_cst) reads client_sleeping, so either it sees us asleep and writes the
         * eventfd, or we see its completion here (Dekker). */
        __atomic_store_n(&c->client_sleeping, 1, __ATOMIC_SEQ_CST);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        int r = 0;
        if (shm_load_acq(&c->cpl_tail) == cp->cpl_head)
            r = chan_sleep(a, ch, -1);
        __atomic_store_n(&c->client_sleeping, 0, __ATOMIC_RELAXED);
        if (r == E_DEAD)
            return E_DEAD;
    }
}

/* Post one request on this thread's channel of part pt; with out != NULL wait for its
 * completion. Returns 0 (out filled) or E_DEAD. */
int att_call(struct attach *a, struct part *pt, struct shm_req *req, struct shm_cpl *out)
{
    struct shm_cpl stray;
    int ch, r = 0;

    if (att_dead(a))
        return E_DEAD;
    ch = tls_channel(a);
    struct chan_priv *cp = &pt->cp[ch];
    struct shm_channel *c = &pt->chans[ch];
    chan_lock(pt, ch);
    while (shm_cpl_pop(c, &cp->cpl_head, &stray)) {
        /* late completions of TX kicks: nobody waits for them */
    }
    /* At most SHM_RING_SIZE requests without their completion consumed: then the
     * daemon's completion ring can never be full, and neither can the request ring. */
    while (r == 0 && cp->req_tail - cp->cpl_head >= SHM_RING_SIZE)
        r = chan_wait_cpl(a, pt, ch, 0, true, NULL);
    if (r == 0) {
        req->seq = ++cp->seq;
        while (shm_req_push(c, &cp->req_tail, req) < 0 && r == 0)
            r = chan_wait_cpl(a, pt, ch, 0, true, NULL); /* only if the daemon lags */
    }
    if (r == 0) {
        chan_kick(a, pt, ch);
        if (out)
            r = chan_wait_cpl(a, pt, ch, req->seq, false, out);
    }
    pthread_mutex_unlock(&cp->lock);
    return r;
}

/* errno for an operation on a socket whose session died (as for a reset connection). */
int dead_err(const struct csock *s, enum op_kind k)
{
    if (k == OP_SEND)
        return -EPIPE;
    if (k == OP_RECV && __atomic_load_n(&s->connected, __ATOMIC_RELAXED))
        return -ECONNRESET;
    return -ENOTCONN;
}

/* One request about socket s, waiting for the completion. Returns 0 (cpl filled) or the
 * errno for a dead session. */
int sock_call(struct csock *s, struct shm_req *req, struct shm_cpl *cpl, enum op_kind k)
{
    req->handle = s->handle;
    if (att_call(s->att, s->pt, req, cpl) < 0)
        return dead_err(s, k);
    return 0;
}

/* sock_call for a request whose answer is an error or success: 0 (cpl filled), the
 * request's -errno, or the errno for a dead session. */
int sock_request(struct csock *s, struct shm_req *req, struct shm_cpl *cpl)
{
    int r = sock_call(s, req, cpl, OP_OTHER);
    return r < 0 ? r : (cpl->result < 0 ? cpl->result : 0);
}

/* Wake this process's threads blocked on s (close, shutdown): their channel eventfds. */
void sock_wake_local(struct csock *s)
{
    uint64_t w = __atomic_load_n(&s->sh->waiters, __ATOMIC_SEQ_CST);
    uint64_t one = 1;

    while (w) {
        int i = __builtin_ctzll(w);
        w &= w - 1;
        if ((uint32_t)i < s->att->nchannels && write(s->att->chan_fd[i], &one, sizeof(one)) < 0) {
            /* saturated: that thread will wake anyway */
        }
    }
}

/* Set (seq_cst, see sock_wait) or clear (relaxed: the bit is only a hint for the daemon;
 * a stale one costs a spurious wake) our waiters bit on s and its listener members. */
void sock_waiters(struct csock *s, uint64_t bit, bool set)
{
    for (int i = -1, n = grp_n(s); i < n; i++) {
        struct shm_sock *sh = i < 0 ? s->sh : s->grp[i]->sh;
        if (set)
            __atomic_fetch_or(&sh->waiters, bit, __ATOMIC_SEQ_CST);
        else
            __atomic_fetch_and(&sh->waiters, ~bit, __ATOMIC_RELAXED);
    }
}

/* Block until ready(s, arg) or the deadline (0 = none). Spins first, then announces the
 * sleep (waiters bit, client_sleeping) and sleeps on the channel eventfd. Returns 0 (the
 * caller re-checks), -EAGAIN (deadline), -EINTR, or E_DEAD. */
int sock_wait(struct csock *s, ready_fn ready, uint32_t arg, int64_t deadline)
{
    struct attach *a = s->att;
    int64_t spin_end = (int64_t)clock_mono_ns() + SPIN_NS, t;
    int r = 0;

    while ((t = (int64_t)clock_mono_ns()) < spin_end && (!deadline || t < deadline)) {
        if (ready(s, arg))
            return 0;
        shmnet__spin_yield();
    }
    if (deadline && t >= deadline)
        return -EAGAIN;
    if (att_dead(a))
        return E_DEAD;
    int ch = tls_channel(a);
    uint64_t bit = 1ull << ch;
    /* seq_cst: the waiters bit and client_sleeping are stored before the re-check of the
     * fifo below (fence); the daemon publishes fifo indices/so_error and then reads
     * waiters and client_sleeping with seq_cst. Either it sees us and writes the channel
     * eventfd, or we see its update in ready() (Dekker, no lost wake-up). */
    sock_waiters(s, bit, true);
    chan_sleeping(a, ch, 1);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (!ready(s, arg)) {
        eintr_arm(); /* from here, a signal handler that runs is the one that interrupts */
        r = chan_sleep(a, ch, deadline ? deadline - (int64_t)clock_mono_ns() : -1);
    }
    chan_sleeping(a, ch, 0);
    sock_waiters(s, bit, false);
    if (r == 0 && deadline && (int64_t)clock_mono_ns() >= deadline && !ready(s, arg))
        r = -EAGAIN;
    return r;
}

int64_t deadline_of(int64_t timeo)
{
    if (timeo == 0)
        return 0;
    return (int64_t)clock_mono_ns() + (timeo < 0 ? 1 : timeo);
}

/* The tail of every blocking call's loop: -EAGAIN at once when the call does not block,
 * else wait for ready(s, arg) with lock (if any) released, until the deadline that
 * timeo (SO_RCVTIMEO/SO_SNDTIMEO) sets on the first wait. As sock_wait returns. */
/* Set by the interposer (shmnet__set_restart_hook); NULL in the plain library, whose
 * blocking calls return EINTR (docs/libshmnet.md). */
static int (*restart_hook)(int phase);

void shmnet__set_restart_hook(int (*fn)(int phase))
{
    __atomic_store_n(&restart_hook, fn, __ATOMIC_RELEASE);
}

void eintr_arm(void)
{
    int (*h)(int) = __atomic_load_n(&restart_hook, __ATOMIC_ACQUIRE);
    if (h)
        h(0);
}

bool eintr_restarts(int64_t timeo)
{
    int (*h)(int) = __atomic_load_n(&restart_hook, __ATOMIC_ACQUIRE);
    /* signal(7): socket calls with SO_RCVTIMEO / SO_SNDTIMEO set are never restarted. */
    return h && timeo == 0 && h(1);
}

int wait_turn(struct csock *s, int flags, pthread_mutex_t *lock, ready_fn ready, uint32_t arg,
              int64_t timeo, int64_t *deadline)
{
    if (sock_nonblock(s, flags))
        return -EAGAIN;
    if (!*deadline)
        *deadline = deadline_of(timeo);
    if (lock)
        pthread_mutex_unlock(lock);
    int r = sock_wait(s, ready, arg, *deadline);
    if (r == -EINTR && eintr_restarts(timeo))
        r = 0; /* the handler has SA_RESTART: the caller looks again and waits on */
    if (lock)
        fam_lock(lock);
    return r;
}

int64_t shmnet__spin_ns(void)
{
    return SPIN_NS;
}
