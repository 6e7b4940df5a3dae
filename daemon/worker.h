/* shmnetd worker: one thread owning a stack, the NIC queues it serves and their timers.
 *
 * The worker runs to completion (timers, RX with a budget, mailbox, TX flush), spins for
 * busy_poll_us after the last work, then sleeps in nic_wait() on its NIC fds and a wake
 * eventfd. The control thread reaches it only through the mailbox (worker_call). */
#ifndef SHMNET_DAEMON_WORKER_H
#define SHMNET_DAEMON_WORKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "conf/conf.h"
#include "nic/nic.h"
#include "stack/stack.h"

struct worker;
/* Runs on the worker thread, between two loop iterations; must not block. */
typedef int (*worker_fn)(struct worker *w, void *arg);

struct worker_req {
    worker_fn fn;
    void *arg;
    int ret;
    bool done; /* under w->mb_lock */
};

/* An interface as the control thread sees it: copied once at start, immutable after. */
struct worker_ifinfo {
    struct stack_iface_params p;
    char backend[16];
    int ifindex;
};

struct worker {
    int id;
    const struct conf *conf;  /* start-time config (read during init only) */
    struct pcap_tap *capture; /* initial capture tap, NULL = none */
    int cpu;                  /* -1: not pinned */

    /* owned by the worker thread */
    struct stack st;
    struct nic nics[STACK_MAX_IFS];
    struct nic *nicp[STACK_MAX_IFS];
    uint16_t qs[STACK_MAX_IFS];
    int nnics;
    bool st_ready;
    struct client *clients; /* attached sessions served by this worker */
    uint32_t *shm_sleeping; /* this worker's flag in the clients' state page, or NULL */

    /* immutable once worker_start returned 0 */
    struct worker_ifinfo ifs[STACK_MAX_IFS];
    int nifs;

    pthread_t thr;
    bool running;
    int wake_fd; /* eventfd: control -> worker wake-up */

    /* shared with the control thread (atomics) */
    int stop;
    int sleeping;
    uint64_t heartbeat;
    uint32_t busy_poll_us;
    uint32_t rx_budget;
    struct worker_req *req; /* mailbox slot: at most one request at a time */

    pthread_mutex_t mb_lock;
    pthread_cond_t mb_cond;
    int init_state; /* 0 running init, 1 ok, <0 -errno (under mb_lock) */
};

/* Create the thread; it opens the NICs and builds the stack, and this returns once that is
 * done: 0, or -errno (the thread is gone again, the error logged). */
int worker_start(struct worker *w, int id, const struct conf *c, struct pcap_tap *capture);
/* Ask the worker to stop, join it, close its NICs and destroy its stack. Idempotent. */
void worker_stop(struct worker *w);

/* Run fn(w, arg) on the worker thread and return its result, or -ETIMEDOUT after
 * timeout_ms if the worker did not pick the request up. Control thread only. */
int worker_call(struct worker *w, worker_fn fn, void *arg, int timeout_ms);
/* Wake the worker if it is sleeping (watchdog liveness probe). */
void worker_kick(struct worker *w);

static inline uint64_t worker_heartbeat(const struct worker *w)
{
    /* Relaxed: a progress indicator only, nothing is published with it. */
    return __atomic_load_n(&w->heartbeat, __ATOMIC_RELAXED);
}

/* Where to mirror the sleeping flag for clients (set before any client attaches). */
void worker_set_shm_sleeping(struct worker *w, uint32_t *flag);

void worker_set_tunables(struct worker *w, uint32_t busy_poll_us, uint32_t rx_budget);

#endif
