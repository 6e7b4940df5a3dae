/* libshmnet's private header: the objects every part of the library shares, the small
 * inline accessors of the hot paths, and the functions one part calls in another. Not
 * installed. Internal functions return a value >= 0 or -errno; the exported wrappers set
 * errno. Design, threading and the wake-up protocol: docs/libshmnet.md.
 *
 * Objects:
 *   struct attach  one session with shmnetd: control socket, mapped region and state page,
 *                  eventfds, client-private ring indices per channel. Refcounted (the
 *                  current-session pointer, every socket and every thread's channel hold a
 *                  reference), so a dead session stays mapped until its last socket goes.
 *   struct csock   one socket: handle, private fifo indices (under rx_lock / tx_lock),
 *                  flags. Found through a two-level fd table under a rwlock.
 *
 * Parts (one file each): session.c (attach, family area), channel.c (rings, waiting),
 * fdtable.c (fd table, socket lifetime), shmnet.c (generic calls), stream.c, dgram.c,
 * sockopt.c, poll.c, fork.c. */
#ifndef SHMNET_CLIENT_IMPL_H
#define SHMNET_CLIENT_IMPL_H

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "core/clock.h"
#include "libclient/shmnet.h"
#include "libclient/shmnet_int.h"
#include "shm/shm.h"
#include "shm/shm_ring.h"

/* Busy-wait before sleeping: 200 us, longer than a round trip to a kernel peer here (60 to
 * 100 us), so a request/response client rarely pays a wake-up (about 60 us on this VM);
 * the wait yields the CPU (shmnet__spin_yield), so it costs co-located tasks little. */
#define SPIN_NS_DEFAULT 200000ll
/* A completion from an awake daemon comes within a microsecond or two: pause-spin that
 * long before yielding. */
#define PAUSE_NS 5000ll
/* SHMNET_SPIN_US overrides the busy-wait (latency vs CPU), read once at the first attach. */
extern int64_t spin_ns __attribute__((visibility("hidden")));
#define SPIN_NS          __atomic_load_n(&spin_ns, __ATOMIC_RELAXED)
#define SHARED_CAP_NS    1000000ll    /* sleep cap on a shared channel (see docs) */
#define ALIVE_CHECK_NS   100000000ll  /* non-blocking paths poll the control fd this often */
#define ATTACH_TIMEOUT_S 5            /* the attach handshake never hangs longer */
#define CLOSE_LINGER_NS  1000000000ll /* close waits this long for a datagram TX fifo to drain */
#define FDT_PAGE         1024
#define FDT_PAGES        1024 /* fds below 1M can be shmnet sockets */

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define cpu_relax() __asm__ __volatile__("" ::: "memory")
#endif

/* Internal result for "the session with the daemon is gone"; callers turn it into the
 * errno POSIX would give for a reset connection (ECONNRESET / EPIPE / ENOTCONN). */
#define E_DEAD (-ESHUTDOWN)

/* Per-channel client state. It lives in the family area (below), shared by every
 * process forked from the one that attached, so a child can post requests on the
 * session's channels without corrupting a parent's rings. */
struct chan_priv {
    pthread_mutex_t lock; /* robust, process-shared: posting and the wait for completion */
    uint32_t req_tail;    /* producer index of the request ring */
    uint32_t cpl_head;    /* consumer index of the completion ring */
    uint32_t seq;
    int users;      /* threads on this channel, family-wide (atomic) */
    uint64_t owner; /* atomic: exclusive claim, pid << 32 | tid; 0 = free */
};

/* Per-socket-slot client state, in the family area for the same reason: the fifo indices
 * a forked child continues from, and which processes hold the socket. */
struct sock_priv {
    pthread_mutex_t rx_lock, tx_lock; /* robust, process-shared */
    uint32_t rx_head;                 /* under rx_lock (read atomically by poll) */
    uint32_t tx_tail;                 /* under tx_lock (read atomically by waits) */
    uint32_t handle;                  /* the handle these fields belong to */
    uint64_t holders;                 /* atomic: bit per process slot holding the socket */
};

#define FAM_PROCS 64
/* The family area: MAP_SHARED | MAP_ANONYMOUS, created at attach, inherited by fork.
 * Processes of one family trust each other (they are one program). */
struct fam {
    int32_t proc_pid[FAM_PROCS];  /* atomic: slot owner; 0 free; -pid reserved by a forker */
    uint64_t proc_img[FAM_PROCS]; /* the owner's image when it took the slot (proc_register) */
    uint32_t next_share;          /* atomic: round robin once all channels are claimed */
    int forked;                   /* atomic: a process of the family has forked */
    /* ring state per part and channel; the claim (owner, users) is in part 0's */
    struct chan_priv ch[SHM_MAX_PARTS][SHM_MAX_CHANNELS];
    struct sock_priv sock[]; /* part k's slot i at k * nsocks + i */
};

/* One region of the session, served by one worker: its channels' rings, its sockets. */
struct part {
    struct shm_region *region;
    struct shm_channel *chans;
    struct shm_sock *socks;
    uint32_t worker;
    int doorbell_fd;      /* its worker's */
    struct chan_priv *cp; /* fam->ch[k] */
    struct sock_priv *sp; /* its slots' share of fam->sock */
};

struct attach {
    int refs; /* atomic */
    int dead; /* atomic: 1 once the control connection is known to be gone */
    int ctl_fd;
    int chan_fd[SHM_MAX_CHANNELS];
    uint32_t nchannels, nsocks; /* per part */
    uint32_t nparts, home;      /* home: the part new sockets go to */
    size_t region_size;         /* of each part */
    struct part pt[SHM_MAX_PARTS];
    const struct shm_state *state;
    size_t state_size;
    int64_t last_check; /* atomic: last liveness poll of ctl_fd (ns) */
    struct fam *fam;
    size_t fam_size;
    struct chan_priv *cp; /* fam->ch[0]: the channel claims */
    int proc_slot;        /* this process's slot in fam->proc_pid, -1 if none */
};

/* Options set on a TCP socket before listen, replayed on the listener's members. */
#define OPTLOG_MAX 8
struct optlog {
    int n;
    struct {
        int level, name;
        uint16_t len;
        uint8_t val[SHM_OPT_MAX];
    } o[OPTLOG_MAX];
};

struct csock {
    int refs;   /* atomic: the fd table's references + one per call in progress */
    int fdrefs; /* atomic: fd numbers of this process naming it (dup) */
    int type;
    int nonblock; /* atomic */
    int closed;   /* atomic */
    int shut;     /* atomic: bit 0 SHUT_RD, bit 1 SHUT_WR, as set by this client */
    int connected;
    int tstate;   /* atomic, TCP only: TS_* below */
    int linger_s; /* TCP: SO_LINGER as set here: -1 off, else l_linger (close waits) */
    uint32_t handle;
    struct attach *att;
    struct part *pt; /* the part (worker) the socket lives in */
    struct shm_sock *sh;
    /* A listener on several workers (docs/workers.md): its members in the other parts,
     * held by this socket and invisible to the application. */
    struct csock *grp[SHM_MAX_PARTS];
    int ngrp;
    struct optlog *opts;  /* TCP, before connect or listen: see opt_record */
    unsigned acc_next;    /* atomic: where accept_pick starts */
    struct sock_priv *sp; /* its slot's state in the family area */
    uint8_t *rx_base, *tx_base;
    uint32_t rx_size, tx_size;
    int64_t rcvtimeo, sndtimeo; /* ns; 0 = none, < 0 = expire at once */
    unsigned want; /* atomic: SHMNET_WANT_* control messages asked for (IP_PKTINFO, ...) */
    int rcvlowat;  /* atomic: SO_RCVLOWAT as set (0 = 1) */
};

/* TCP socket states as this library sees them (Linux's sock->state, roughly). */
enum { TS_NONE, TS_CONNECTING, TS_CONNECTED, TS_LISTEN };

static inline long ret_errno(long r)
{
    if (r < 0) {
        errno = (int)-r;
        return -1;
    }
    return r;
}

static inline void att_ref(struct attach *a)
{
    __atomic_fetch_add(&a->refs, 1, __ATOMIC_RELAXED);
}

static inline bool att_dead(const struct attach *a)
{
    return __atomic_load_n(&a->dead, __ATOMIC_ACQUIRE);
}

/* How many listener members s has. acquire: pairs with listen_group's release, so the
 * members counted are in place (another thread may poll the socket while it listens). */
static inline int grp_n(const struct csock *s)
{
    return __atomic_load_n(&s->ngrp, __ATOMIC_ACQUIRE);
}

static inline bool sock_closed(const struct csock *s)
{
    return __atomic_load_n(&s->closed, __ATOMIC_ACQUIRE);
}

static inline int sock_shut(const struct csock *s)
{
    return __atomic_load_n(&s->shut, __ATOMIC_ACQUIRE);
}

static inline bool sock_nonblock(const struct csock *s, int flags)
{
    return (flags & MSG_DONTWAIT) || __atomic_load_n(&s->nonblock, __ATOMIC_RELAXED);
}

typedef bool (*ready_fn)(struct csock *s, uint32_t arg);

/* Free bytes in the TX fifo (the daemon's tx_head with acquire: it has finished reading
 * the space before it published the new head). */
static inline uint32_t tx_free(struct csock *s, uint32_t tail)
{
    uint32_t used = tail - shm_load_acq(&s->sh->tx_head);
    return used > s->tx_size ? 0 : s->tx_size - used;
}

/* Bytes readable in a stream socket's RX fifo (0 if the daemon's tail is impossible). */
static inline uint32_t rx_avail(struct csock *s)
{
    uint32_t n = shm_load_acq(&s->sh->rx_tail) - __atomic_load_n(&s->sp->rx_head, __ATOMIC_RELAXED);
    return n > s->rx_size ? 0 : n;
}

/* SO_RCVLOWAT in bytes: at least 1, at most half the fifo (Linux caps it by the buffer). */
static inline uint32_t rcv_lowat(const struct csock *s)
{
    int v = __atomic_load_n(&s->rcvlowat, __ATOMIC_RELAXED);
    uint32_t cap = s->rx_size / 2 ? s->rx_size / 2 : 1;
    return v <= 1 ? 1 : (uint32_t)v < cap ? (uint32_t)v : cap;
}

static inline bool rx_nonempty(struct csock *s)
{
    return shm_load_acq(&s->sh->rx_tail) != __atomic_load_n(&s->sp->rx_head, __ATOMIC_RELAXED);
}

static inline bool sock_errored(struct csock *s)
{
    return __atomic_load_n(&s->sh->so_error, __ATOMIC_RELAXED) != 0;
}

/* Every record in the TX fifo was taken by the daemon (or waiting is pointless). */
static inline bool tx_drained(struct csock *s, uint32_t unused)
{
    return shm_load_acq(&s->sh->tx_head) == __atomic_load_n(&s->sp->tx_tail, __ATOMIC_RELAXED) ||
           att_dead(s->att);
}

/* The daemon's readiness bits. acquire: pairs with its release fetch_or, so what it
 * published before (names, so_error) is visible once we see the bit. */
static inline uint32_t sock_events(const struct csock *s)
{
    uint32_t ev = __atomic_load_n(&s->sh->events, __ATOMIC_ACQUIRE);
    for (int i = 0, n = grp_n(s); i < n; i++) /* a listener: ready when any member is */
        ev |= __atomic_load_n(&s->grp[i]->sh->events, __ATOMIC_ACQUIRE) & SHM_EV_IN;
    return ev;
}

static inline int sock_tstate(const struct csock *s)
{
    return __atomic_load_n(&s->tstate, __ATOMIC_ACQUIRE);
}

/* Common frame of the fd-taking calls: look up, run, release. */
#define WITH_SOCK(fd, s, expr)                                                                     \
    ({                                                                                             \
        struct csock *s;                                                                           \
        long r_ = sock_get(fd, &s);                                                                \
        if (r_ == 0) {                                                                             \
            r_ = (expr);                                                                           \
            sock_put(s);                                                                           \
        }                                                                                          \
        ret_errno(r_);                                                                             \
    })

/* ------------------------------------------------------------------ between the parts */

#pragma GCC visibility push(hidden) /* none of these leaves the library */

/* session.c */
extern pthread_mutex_t att_lock;
extern struct attach *att_cur; /* under att_lock; holds one reference */
int att_get(struct attach **out);
void att_unref(struct attach *a);
bool att_alive(struct attach *a, bool force);
void att_ctl_event(struct attach *a, short revents);
void fam_mutex_init(pthread_mutex_t *m);
int fam_lock(pthread_mutex_t *m);
bool proc_alive(const struct fam *f, int slot);
void proc_register(struct fam *f, int slot);
bool holders_alive(const struct attach *a, uint64_t holders);
uint64_t proc_bit(const struct attach *a);
bool thread_alive(int32_t pid, int32_t tid);

/* channel.c */
extern int sandboxed; /* atomic: a seccomp filter is on (shmnet__sandboxed) */
/* ppoll of p[0..n) whose last `extra` fds are the library's own (channel eventfd, control
 * socket): when more fds than RLIMIT_NOFILE allows (EINVAL), ours are dropped and the
 * wait lasts at most 1 ms, so the caller re-checks what they would have said. */
int ppoll_fit(struct pollfd *p, nfds_t n, nfds_t extra, const struct timespec *ts,
              const sigset_t *mask);
enum op_kind { OP_OTHER, OP_SEND, OP_RECV }; /* picks the errno for a dead session */
int tls_channel(struct attach *a);
int chan_current(const struct attach *a);
void chan_forget_tls(void);
void chan_sleeping(struct attach *a, int ch, uint32_t v);
int chan_sleep(struct attach *a, int ch, int64_t timeout_ns);
int att_call(struct attach *a, struct part *pt, struct shm_req *req, struct shm_cpl *out);
int dead_err(const struct csock *s, enum op_kind k);
int sock_call(struct csock *s, struct shm_req *req, struct shm_cpl *cpl, enum op_kind k);
int sock_request(struct csock *s, struct shm_req *req, struct shm_cpl *cpl);
void sock_wake_local(struct csock *s);
void sock_waiters(struct csock *s, uint64_t bit, bool set);
int sock_wait(struct csock *s, ready_fn ready, uint32_t arg, int64_t deadline);
int64_t deadline_of(int64_t timeo);
/* SA_RESTART (the interposer's hook): eintr_arm before a sleep; after it ended in EINTR,
 * eintr_restarts says whether the call goes on (never with a timeout set). */
void eintr_arm(void);
bool eintr_restarts(int64_t timeo);
int wait_turn(struct csock *s, int flags, pthread_mutex_t *lock, ready_fn ready, uint32_t arg,
              int64_t timeo, int64_t *deadline);

/* fdtable.c */
struct csock *fdt_lookup(int fd);
int sock_get(int fd, struct csock **out);
void sock_put(struct csock *s);
int csock_new(struct attach *a, struct part *pt, uint32_t h, int type, bool nonblock, int *fdp,
              struct csock **out);
int csock_make(struct attach *a, struct part *pt, uint32_t h, int type, bool nonblock,
               struct csock **out);
void close_handle(struct attach *a, struct part *pt, uint32_t h, bool async);
void members_release(struct csock *s, uint64_t me, bool closed);
void fam_sweep(struct attach *a);
void fdt_fork_lock(void);
void fdt_fork_unlock(void);
void fdt_fork_reinit(void);
void fdt_fork_hold(struct attach *a, uint64_t bit);

/* shmnet.c */
void put_sockaddr(struct sockaddr *sa, socklen_t *len, uint32_t addr, uint16_t port);
int check_out_addr(const struct sockaddr *sa, const socklen_t *len);
int get_sockaddr(const struct sockaddr *sa, socklen_t len, uint32_t *addr, uint16_t *port);
int sock_take_error(struct csock *s);

/* stream.c */
int do_connect_stream(struct csock *s, const struct sockaddr *sa, socklen_t len);
ssize_t do_send_stream(struct csock *s, const uint8_t *buf, size_t len, int flags);
ssize_t do_recv_stream(struct csock *s, uint8_t *buf, size_t len, int flags, socklen_t *srclen);
bool tcp_tx_acked(struct csock *s, uint32_t unused);
void member_close(struct attach *a, struct csock *m);
int member_call(struct csock *m, struct shm_req *req);

#pragma GCC visibility pop

#endif
