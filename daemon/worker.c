/* shmnetd worker thread: see worker.h and docs/daemon.md. */
#include "daemon/worker.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "daemon/client.h"
#include "daemon/log.h"

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define cpu_relax() __asm__ __volatile__("" ::: "memory")
#endif

static uint64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void close_nics(struct worker *w)
{
    for (int i = 0; i < w->nnics; i++) {
        /* The capture tap belongs to the control thread, which closes it after we are gone. */
        w->nics[i].pcap = NULL;
        nic_close(&w->nics[i]);
    }
    w->nnics = 0;
}

/* Build the stack and open every interface's NIC (queue 0). Runs on the worker thread so
 * the backends' per-thread resources (io_uring submitter) belong to it. */
static int worker_init(struct worker *w)
{
    const struct conf *c = w->conf;
    int ret;

    /* The key of ISNs (RFC 6528) and SYN cookies: fresh per run, never from config. */
    struct stack_params sp = c->stack;
    if (getrandom(sp.secret, sizeof(sp.secret), 0) != (ssize_t)sizeof(sp.secret)) {
        sp.secret[0] = mono_ns() ^ (uint64_t)getpid() << 32;
        sp.secret[1] = (uint64_t)(uintptr_t)&sp ^ mono_ns() * 0x9e3779b97f4a7c15ull;
    }
    ret = stack_init(&w->st, &sp, mono_ns());
    if (ret < 0) {
        log_error("worker %d: stack init: %s", w->id, strerror(-ret));
        return ret;
    }
    w->st_ready = true;
    w->st.user = w;
    for (uint32_t i = 0; i < c->n_ifs; i++) {
        const struct conf_iface *ci = &c->ifs[i];
        struct nic *n = &w->nics[w->nnics];

        memset(n, 0, sizeof(*n));
        ret = nic_open(n, &ci->nic);
        if (ret < 0) {
            log_error("interface %s: cannot open %s backend: %s%s%s", ci->ip.name, ci->nic.backend,
                      n->errmsg, n->errmsg[0] ? ": " : "", strerror(-ret));
            return ret;
        }
        w->nicp[w->nnics] = n;
        w->qs[w->nnics] = 0;
        w->nnics++;
        ret = stack_add_if(&w->st, &ci->ip, n, 0);
        if (ret < 0) {
            log_error("interface %s: cannot add to the stack: %s", ci->ip.name, strerror(-ret));
            return ret;
        }
        n->pcap = w->capture;
        w->ifs[w->nifs].p = ci->ip;
        snprintf(w->ifs[w->nifs].backend, sizeof(w->ifs[w->nifs].backend), "%s", ci->nic.backend);
        w->ifs[w->nifs].ifindex = n->ifindex;
        w->nifs++;
        log_info("interface %s: %s backend up%s%s, mtu %u", ci->ip.name, ci->nic.backend,
                 n->mode[0] ? ", " : "", n->mode, (unsigned)ci->ip.mtu);
    }
    stack_start(&w->st);
    if (w->cpu >= 0) {
        cpu_set_t set;

        CPU_ZERO(&set);
        CPU_SET(w->cpu, &set);
        ret = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
        if (ret)
            log_warn("worker %d: cannot pin to cpu %d: %s", w->id, w->cpu, strerror(ret));
        else
            log_info("worker %d: pinned to cpu %d", w->id, w->cpu);
    }
    return 0;
}

static void worker_fini(struct worker *w)
{
    /* NICs first: they hold RX buffers from the stack's pool. */
    close_nics(w);
    if (w->st_ready)
        stack_destroy(&w->st);
    w->st_ready = false;
}

/* Run a posted request, if any. */
static bool mailbox_run(struct worker *w)
{
    struct worker_req *r;
    int ret;

    /* Cheap relaxed peek first: the common case is an empty slot. */
    if (!__atomic_load_n(&w->req, __ATOMIC_RELAXED))
        return false;
    /* Acquire pairs with the release in worker_call's store: fn/arg/the data arg points to
     * are visible before we run it. Exchange (not load+store) so a retraction by the control
     * thread on timeout and our take cannot both succeed. */
    r = __atomic_exchange_n(&w->req, NULL, __ATOMIC_ACQUIRE);
    if (!r)
        return false;
    ret = r->fn(w, r->arg);
    /* The mutex orders our writes (ret, results behind arg) before the caller sees done. */
    pthread_mutex_lock(&w->mb_lock);
    r->ret = ret;
    r->done = true;
    pthread_cond_broadcast(&w->mb_cond);
    pthread_mutex_unlock(&w->mb_lock);
    return true;
}

static int clients_poll(struct worker *w, int budget)
{
    int work = 0;
    for (struct client *cl = w->clients; cl; cl = cl->next)
        work += client_poll(cl, budget);
    return work;
}

static bool clients_pending(const struct worker *w)
{
    for (const struct client *cl = w->clients; cl; cl = cl->next)
        if (client_pending(cl))
            return true;
    return false;
}

static void set_sleeping(struct worker *w, uint32_t v)
{
    /* seq_cst: the store must be ordered before the loads of the mailbox and of the
     * clients' req_pending words that follow (Dekker with worker_call and with clients,
     * which publish a request and then load this flag to decide on a doorbell). */
    __atomic_store_n(&w->sleeping, (int)v, __ATOMIC_SEQ_CST);
    uint32_t *f = __atomic_load_n(&w->shm_sleeping, __ATOMIC_RELAXED);
    if (f)
        __atomic_store_n(f, v, __ATOMIC_SEQ_CST);
}

static void worker_loop(struct worker *w)
{
    struct stack *st = &w->st;
    uint64_t now = mono_ns(), last_work = now;

    while (!__atomic_load_n(&w->stop, __ATOMIC_RELAXED)) {
        /* Relaxed: a progress indicator for the watchdog; single writer. */
        __atomic_store_n(&w->heartbeat, __atomic_load_n(&w->heartbeat, __ATOMIC_RELAXED) + 1,
                         __ATOMIC_RELAXED);
        now = mono_ns();
        stack_poll(st, now);
        int budget = (int)__atomic_load_n(&w->rx_budget, __ATOMIC_RELAXED);
        int n = stack_rx(st, budget);
        bool m = mailbox_run(w);
        n += clients_poll(w, budget);
        /* Wake the clients before the NIC flush: a TAP write runs the peer's stack inline
         * and can take tens of µs, while a sleeping client needs about as long to get its
         * CPU back; both then proceed at once. The second pass catches what the flush
         * produced (nothing may stay pending when we go to sleep). */
        for (struct client *cl = w->clients; cl; cl = cl->next)
            client_flush_wakeups(cl);
        stack_flush(st);
        for (struct client *cl = w->clients; cl; cl = cl->next)
            client_flush_wakeups(cl);
        if (n > 0 || m) {
            last_work = now;
            continue;
        }
        uint64_t spin_ns = (uint64_t)__atomic_load_n(&w->busy_poll_us, __ATOMIC_RELAXED) * 1000;
        if (now - last_work < spin_ns) {
            cpu_relax();
            continue;
        }

        /* Going to sleep. Dekker-style handshake with worker_call/worker_kick and with the
         * clients: we store sleeping=1 then load req/stop/req_pending; the other side stores
         * its request then loads sleeping. All seq_cst, so at least one side sees the other's
         * store: either we see the work here and do not sleep, or the other side sees
         * sleeping=1 and writes the eventfd, which ends nic_wait. No lost wake-up. */
        set_sleeping(w, 1);
        if (__atomic_load_n(&w->req, __ATOMIC_SEQ_CST) ||
            __atomic_load_n(&w->stop, __ATOMIC_SEQ_CST) || clients_pending(w)) {
            set_sleeping(w, 0);
            continue;
        }
        uint64_t dl = stack_next_deadline(st);
        uint64_t timeout = dl == UINT64_MAX ? UINT64_MAX : (dl > now ? dl - now : 0);
        int ret = nic_wait(w->nicp, w->qs, w->nnics, w->wake_fd, timeout);
        if (ret < 0 && ret != -EINTR)
            log_debug("worker %d: nic_wait: %s", w->id, strerror(-ret));
        /* The flags only tell others whether an eventfd write is needed; a stale 1 costs
         * one spurious write. */
        set_sleeping(w, 0);
        if (ret == 1) { /* woken by the control thread or a client doorbell: drain it */
            uint64_t v;
            ssize_t r = read(w->wake_fd, &v, sizeof(v));
            (void)r;
        }
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    char name[16];
    int ret;

    snprintf(name, sizeof(name), "shmnet-w%d", w->id);
    pthread_setname_np(pthread_self(), name);
    ret = worker_init(w);
    pthread_mutex_lock(&w->mb_lock);
    w->init_state = ret < 0 ? ret : 1;
    pthread_cond_broadcast(&w->mb_cond);
    pthread_mutex_unlock(&w->mb_lock);
    if (ret == 0) {
        log_debug("worker %d: running", w->id);
        worker_loop(w);
    }
    worker_fini(w);
    return NULL;
}

int worker_start(struct worker *w, int id, const struct conf *c, struct pcap_tap *capture)
{
    pthread_condattr_t ca;
    int ret;

    memset(w, 0, sizeof(*w));
    w->id = id;
    w->conf = c;
    w->capture = capture;
    w->cpu = c->n_cpus > (uint32_t)id ? c->cpus[id] : -1;
    w->busy_poll_us = c->busy_poll_us;
    w->rx_budget = c->rx_budget;
    w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->wake_fd < 0)
        return -errno;
    pthread_mutex_init(&w->mb_lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->mb_cond, &ca);
    pthread_condattr_destroy(&ca);

    ret = pthread_create(&w->thr, NULL, worker_main, w);
    if (ret) {
        ret = -ret;
        goto fail;
    }
    pthread_mutex_lock(&w->mb_lock);
    while (w->init_state == 0)
        pthread_cond_wait(&w->mb_cond, &w->mb_lock);
    ret = w->init_state < 0 ? w->init_state : 0;
    pthread_mutex_unlock(&w->mb_lock);
    if (ret < 0) {
        pthread_join(w->thr, NULL);
        goto fail;
    }
    w->running = true;
    return 0;
fail:
    pthread_cond_destroy(&w->mb_cond);
    pthread_mutex_destroy(&w->mb_lock);
    close(w->wake_fd);
    w->wake_fd = -1;
    return ret;
}

void worker_stop(struct worker *w)
{
    uint64_t one = 1;

    if (!w->running)
        return;
    /* seq_cst: same handshake as worker_call (see worker_loop); we also write the eventfd
     * unconditionally, so the worker wakes even if it is already inside nic_wait. */
    __atomic_store_n(&w->stop, 1, __ATOMIC_SEQ_CST);
    ssize_t r = write(w->wake_fd, &one, sizeof(one));
    (void)r;
    pthread_join(w->thr, NULL);
    w->running = false;
    pthread_cond_destroy(&w->mb_cond);
    pthread_mutex_destroy(&w->mb_lock);
    close(w->wake_fd);
    w->wake_fd = -1;
}

void worker_kick(struct worker *w)
{
    uint64_t one = 1;

    /* seq_cst pairs with the worker's sleeping store/req load (see worker_loop). Exchange
     * so only one waker pays for the eventfd write per sleep. */
    if (__atomic_exchange_n(&w->sleeping, 0, __ATOMIC_SEQ_CST)) {
        ssize_t r = write(w->wake_fd, &one, sizeof(one));
        (void)r;
    }
}

int worker_call(struct worker *w, worker_fn fn, void *arg, int timeout_ms)
{
    struct worker_req r = {.fn = fn, .arg = arg};
    struct timespec dl;
    bool timed = true;
    int ret;

    if (!w->running)
        return -ESRCH;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    /* Release publishes fn/arg (and what arg points to) to the worker's acquire exchange;
     * seq_cst also orders it before the sleeping exchange in worker_kick (no lost wake). */
    __atomic_store_n(&w->req, &r, __ATOMIC_SEQ_CST);
    worker_kick(w);

    pthread_mutex_lock(&w->mb_lock);
    while (!r.done) {
        int rc = timed ? pthread_cond_timedwait(&w->mb_cond, &w->mb_lock, &dl)
                       : pthread_cond_wait(&w->mb_cond, &w->mb_lock);
        if (rc == ETIMEDOUT && !r.done) {
            struct worker_req *exp = &r;
            /* Take the request back. If the worker already took it, it is running our fn
             * (short, non-blocking) and r lives on our stack: wait for it to finish. */
            if (__atomic_compare_exchange_n(&w->req, &exp, NULL, false, __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE)) {
                pthread_mutex_unlock(&w->mb_lock);
                return -ETIMEDOUT;
            }
            timed = false;
        }
    }
    ret = r.ret;
    pthread_mutex_unlock(&w->mb_lock);
    return ret;
}

void worker_set_shm_sleeping(struct worker *w, uint32_t *flag)
{
    /* Release: the state page is initialised before the worker may store into it. */
    __atomic_store_n(&w->shm_sleeping, flag, __ATOMIC_RELEASE);
}

void worker_set_tunables(struct worker *w, uint32_t busy_poll_us, uint32_t rx_budget)
{
    /* Relaxed: independent values, read fresh by the worker every iteration. */
    __atomic_store_n(&w->busy_poll_us, busy_poll_us, __ATOMIC_RELAXED);
    __atomic_store_n(&w->rx_budget, rx_budget, __ATOMIC_RELAXED);
}
