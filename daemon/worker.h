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

/* Several workers (docs/workers.md): a datagram for a port another worker owns crosses
 * over on a single-producer single-consumer ring of pktbuf pointers, one per ordered pair
 * of workers; the buffer goes back to its pool through pktbuf's remote free. */
#define WORKER_STEER_RING 1024u
struct steer_ring {
    uint32_t tail __attribute__((aligned(64))); /* written by the sending worker */
    uint32_t head __attribute__((aligned(64))); /* written by the receiving worker */
    struct pktbuf *slot[WORKER_STEER_RING];
};

/* Local ports owned by a worker: [0] TCP, [1] UDP, each 65536 entries, owner id + 1 or 0
 * (atomic bytes). A port nobody claimed belongs to worker port % nworkers (ephemeral ports
 * are chosen that way), an explicitly bound one to the worker that bound it. */
#define WORKER_PORTS (2u * 65536u)
/* The shared port area: port_owner's bytes, then the key of each TCP port's listening
 * group (uint32_t[65536], see port_group). */
#define WORKER_SHARED_BYTES (WORKER_PORTS + 65536u * 4u)

struct worker {
    int id;
    /* the group (set before the thread starts, immutable) */
    struct worker *group; /* all workers, group[0..ngroup) */
    int ngroup;
    /* rps_cpus = "auto" (worker_loop): busy time in the current window, and the state. */
    uint64_t win_start, busy_ns, win_frames, win_bytes;
    struct nic_steer_state steer;
    uint8_t *port_owner;    /* shared, WORKER_PORTS bytes */
    uint32_t *port_group;   /* shared: key (client id) of the listening group on a TCP port */
    uint16_t *port_refs;    /* ours: how many of our sockets hold each explicit claim */
    struct steer_ring *inq; /* [ngroup]: inq[src] brings src's datagrams to us */
    uint32_t kick;          /* workers to wake after this iteration (bits) */
    struct nic_fault_params fault_par[STACK_MAX_IFS]; /* what our queues' injectors run */
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
    uint64_t dev_gone_seen; /* nic_dev_gone when last reported */

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
/* The same as member id of a group of n workers sharing port_owner (n > 1): worker 0 opens
 * each NIC with n queues, worker i serves queue i. Start them in order 0, 1, ... */
int worker_start_group(struct worker *group, int n, int id, const struct conf *c,
                       struct pcap_tap *capture, uint8_t *port_owner);
/* Ask the worker to stop, join it, close its NICs and destroy its stack. Idempotent. */
void worker_stop(struct worker *w);
/* Stop a whole group: every thread first, then the buffers in flight between them, the
 * NICs, the stacks, and last the pools (a worker may hold another's buffers). */
void worker_stop_group(struct worker *group, int n);

/* Claim local port `port` (proto 6/17) for w's socket (bind): 0, or -EADDRINUSE when
 * another worker owns it (unless shared: SO_REUSEADDR, then both hold it and the owner
 * keeps the datagrams until its last claim goes, when a remaining holder takes over).
 * Release drops one claim. No-ops with one worker. */
int worker_port_claim(struct worker *w, int proto, uint16_t port, bool shared);
void worker_port_release(struct worker *w, int proto, uint16_t port);
/* A TCP listening group on `port` (docs/workers.md): make it from w's own claim (join =
 * false) or join it with its key (join = true). 0 or -EADDRINUSE. Released as a claim. */
int worker_port_group(struct worker *w, uint16_t port, uint32_t key, enum stack_claim_op op);
/* The worker that owns a segment to local (laddr, lport) from (raddr, rport). */
int worker_port_owner(const struct worker *w, int proto, uint16_t lport, uint32_t laddr,
                      uint32_t raddr, uint16_t rport);

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
