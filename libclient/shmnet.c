/* libshmnet: the native client API over the shared-memory contract (shm/shm.h).
 * Design, threading and the wake-up protocol: docs/libshmnet.md.
 *
 * Objects:
 *   struct attach  one session with shmnetd: control socket, mapped region and state page,
 *                  eventfds, client-private ring indices per channel. Refcounted (the
 *                  current-session pointer, every socket and every thread's channel hold a
 *                  reference), so a dead session stays mapped until its last socket goes.
 *   struct csock   one socket: handle, private fifo indices (under rx_lock / tx_lock),
 *                  flags. Found through a two-level fd table under a rwlock.
 * Internal functions return a value >= 0 or -errno; the exported wrappers set errno. */
#include "core/clock.h"
#include "libclient/shmnet.h"
#include "libclient/shmnet_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

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
static int64_t spin_ns = SPIN_NS_DEFAULT;
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

/* Between two looks at a socket that is not ready yet. The data comes from the daemon or
 * from a peer process, either of which may be waiting for this CPU (more runnable tasks
 * than CPUs): yielding lets it run now rather than after our time slice, and costs one
 * system call that returns at once when nobody waits. (Completions of our own requests
 * come within a microsecond or two: those waits pause instead.) */
void shmnet__spin_yield(void)
{
    sched_yield();
}

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
    int32_t proc_pid[FAM_PROCS]; /* atomic: slot owner; 0 free; -pid reserved by a forker */
    uint32_t next_share;         /* atomic: round robin once all channels are claimed */
    int forked;                  /* atomic: a process of the family has forked */
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
};

/* TCP socket states as this library sees them (Linux's sock->state, roughly). */
enum { TS_NONE, TS_CONNECTING, TS_CONNECTED, TS_LISTEN };

/* ------------------------------------------------------------------ small helpers */

static long ret_errno(long r)
{
    if (r < 0) {
        errno = (int)-r;
        return -1;
    }
    return r;
}

static void put_sockaddr(struct sockaddr *sa, socklen_t *len, uint32_t addr, uint16_t port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};

    sin.sin_addr.s_addr = htonl(addr);
    sin.sin_port = htons(port);
    memcpy(sa, &sin, *len < sizeof(sin) ? *len : sizeof(sin));
    *len = sizeof(sin);
}

/* Validate a caller's (addr, addrlen) result pair. */
static int check_out_addr(const struct sockaddr *sa, const socklen_t *len)
{
    if (!sa || !len)
        return -EFAULT;
    if ((int)*len < 0)
        return -EINVAL;
    return 0;
}

/* Parse an AF_INET address argument into host-order addr/port. */
static int get_sockaddr(const struct sockaddr *sa, socklen_t len, uint32_t *addr, uint16_t *port)
{
    struct sockaddr_in sin;

    if (!sa)
        return -EFAULT;
    if (len < sizeof(sa_family_t))
        return -EINVAL;
    if (sa->sa_family != AF_INET)
        return -EAFNOSUPPORT;
    if (len < sizeof(sin))
        return -EINVAL;
    memcpy(&sin, sa, sizeof(sin));
    *addr = ntohl(sin.sin_addr.s_addr);
    *port = ntohs(sin.sin_port);
    return 0;
}

/* ------------------------------------------------------------------ sessions */

static void fam_sweep(struct attach *a);

static pthread_mutex_t att_lock = PTHREAD_MUTEX_INITIALIZER;
static struct attach *att_cur; /* under att_lock; holds one reference */
static int att_warned;         /* atomic: the "cannot reach" line was printed */

/* ------------------------------------------------------------------ the family area */

/* A robust, process-shared mutex: a process of the family that dies holding it does not
 * wedge the others. */
static void fam_mutex_init(pthread_mutex_t *m)
{
    pthread_mutexattr_t at;

    pthread_mutexattr_init(&at);
    pthread_mutexattr_setpshared(&at, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&at, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(m, &at);
    pthread_mutexattr_destroy(&at);
}

/* Lock; if the holder died, take the state it left (callers resync what they need). */
static int fam_lock(pthread_mutex_t *m)
{
    int r = pthread_mutex_lock(m);

    if (r == EOWNERDEAD) {
        pthread_mutex_consistent(m);
        return 1;
    }
    return 0;
}

/* Is process pid (of this family) still running? Zombies count as gone: their fds are. */
static bool proc_alive(int32_t pid)
{
    char path[64], buf[256];
    ssize_t n;
    int fd;

    if (pid < 0) /* reserved by a forker for a child that has not started yet */
        return true;
    if (pid == 0 || (kill(pid, 0) < 0 && errno == ESRCH))
        return false;
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return true;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return true;
    buf[n] = 0;
    const char *rp = strrchr(buf, ')'); /* "pid (comm) S ..." */
    return !(rp && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X'));
}

/* Does any process of holders (a bit per process slot) still run, besides me? */
static bool holders_alive(const struct attach *a, uint64_t holders)
{
    while (holders) {
        int i = __builtin_ctzll(holders);
        holders &= holders - 1;
        if (i != a->proc_slot &&
            proc_alive(__atomic_load_n(&a->fam->proc_pid[i], __ATOMIC_ACQUIRE)))
            return true;
    }
    return false;
}

static uint64_t proc_bit(const struct attach *a)
{
    return a->proc_slot >= 0 ? 1ull << a->proc_slot : 0;
}

/* Can thread tid of process pid still use its channel? */
static bool thread_alive(int32_t pid, int32_t tid)
{
    return !(syscall(SYS_tgkill, pid, tid, 0) < 0 && errno == ESRCH);
}

static int fam_create(struct attach *a)
{
    a->fam_size = sizeof(struct fam) + (size_t)a->nparts * a->nsocks * sizeof(struct sock_priv);
    void *p = mmap(NULL, a->fam_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        a->fam_size = 0;
        return -ENOMEM;
    }
    a->fam = p;
    a->cp = a->fam->ch[0];
    for (uint32_t k = 0; k < a->nparts; k++) {
        struct part *pt = &a->pt[k];
        pt->cp = a->fam->ch[k];
        pt->sp = &a->fam->sock[(size_t)k * a->nsocks];
        for (uint32_t i = 0; i < a->nchannels; i++) {
            fam_mutex_init(&pt->cp[i].lock);
            /* Start from what the daemon initialised ([C] fields, written before the reply). */
            pt->cp[i].req_tail = __atomic_load_n(&pt->chans[i].req_tail, __ATOMIC_RELAXED);
            pt->cp[i].cpl_head = __atomic_load_n(&pt->chans[i].cpl_head, __ATOMIC_RELAXED);
        }
    }
    a->fam->proc_pid[0] = getpid();
    a->proc_slot = 0;
    return 0;
}

static void att_ref(struct attach *a)
{
    __atomic_fetch_add(&a->refs, 1, __ATOMIC_RELAXED);
}

static void att_free(struct attach *a)
{
    for (uint32_t i = 0; i < a->nchannels; i++)
        close(a->chan_fd[i]);
    if (a->fam)
        munmap(a->fam, a->fam_size);
    for (uint32_t k = 0; k < SHM_MAX_PARTS; k++) {
        if (a->pt[k].region)
            munmap(a->pt[k].region, a->region_size);
        if (a->pt[k].doorbell_fd >= 0)
            close(a->pt[k].doorbell_fd);
    }
    if (a->state)
        munmap((void *)a->state, a->state_size);
    if (a->ctl_fd >= 0)
        close(a->ctl_fd);
    free(a);
}

static void att_unref(struct attach *a)
{
    /* acq_rel: every holder's use of the mapping happens before the last one unmaps it. */
    if (__atomic_sub_fetch(&a->refs, 1, __ATOMIC_ACQ_REL) == 0)
        att_free(a);
}

static bool att_dead(const struct attach *a)
{
    return __atomic_load_n(&a->dead, __ATOMIC_ACQUIRE);
}

static void att_mark_dead(struct attach *a)
{
    /* release: pairs with att_dead's acquire (nothing else to publish, but cheap). */
    __atomic_store_n(&a->dead, 1, __ATOMIC_RELEASE);
}

/* The control socket reported revents: hang-up, error or EOF ends the session. The daemon
 * sends nothing after the attach reply; stray bytes are read and ignored. */
static void att_ctl_event(struct attach *a, short revents)
{
    char buf[64];
    ssize_t n;

    if (revents & (POLLHUP | POLLERR | POLLNVAL)) {
        att_mark_dead(a);
        return;
    }
    if (!(revents & POLLIN))
        return;
    n = recv(a->ctl_fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
        att_mark_dead(a);
}

/* Is the session alive? Polls the control fd (one system call) when forced or when the
 * last check is older than ALIVE_CHECK_NS; otherwise trusts the dead flag. */
static bool att_alive(struct attach *a, bool force)
{
    if (att_dead(a))
        return false;
    int64_t t = (int64_t)clock_mono_ns();
    if (!force && t - __atomic_load_n(&a->last_check, __ATOMIC_RELAXED) < ALIVE_CHECK_NS)
        return true;
    __atomic_store_n(&a->last_check, t, __ATOMIC_RELAXED);
    struct pollfd p = {.fd = a->ctl_fd, .events = POLLIN};
    if (poll(&p, 1, 0) > 0)
        att_ctl_event(a, p.revents);
    fam_sweep(a);
    return !att_dead(a);
}

/* What happens instead (set by the preload layer): with no daemon, and on EACCES. */
static const char *warn_hint = "", *warn_hint_denied = "";
static char att_refusal[192]; /* the daemon's text answer to an attach (under att_lock) */

void shmnet__set_warn_hint(const char *unreachable, const char *denied)
{
    warn_hint = unreachable;
    warn_hint_denied = denied;
}

/* No daemon at path, or no permission on it. */
static void warn_once(const char *path, int err)
{
    if (__atomic_exchange_n(&att_warned, 1, __ATOMIC_RELAXED) == 0)
        fprintf(stderr, "shmnet: cannot attach to shmnetd at %s: %s%s\n", path, strerror(err),
                err == EACCES ? warn_hint_denied : warn_hint);
}

/* The daemon (or the socket's permissions) refused us: the line names the errno the caller
 * gets, and for the policy the uid and the keys that decide. */
static void warn_refused(const char *path, int err, const char *why)
{
    char buf[160];

    if (__atomic_exchange_n(&att_warned, 1, __ATOMIC_RELAXED))
        return;
    if (!why && err == EACCES) {
        snprintf(buf, sizeof(buf), "uid %u is not in daemon.allowed_users or daemon.allowed_groups",
                 (unsigned)geteuid());
        why = buf;
    } else if (!why && err == EUSERS) {
        why = "the daemon serves as many processes as clients.max_clients (or, for this uid, "
              "clients.max_per_uid) allow";
    } else if (!why) {
        why = strerror(err);
    }
    const char *name = strerrorname_np(err);
    fprintf(stderr, "shmnet: shmnetd at %s refused to attach this process: %s (%s)%s\n", path, why,
            name ? name : "?", err == EACCES ? warn_hint_denied : "");
}

/* A daemon that refuses a connection before reading the request answers in text
 * ("error: ..."): keep the reason, and map it to an errno. */
static int text_refusal(int fd, const char *head, size_t len)
{
    size_t cap = sizeof(att_refusal) - 1, n = len < cap ? len : cap;

    memcpy(att_refusal, head, n);
    while (n < cap && !memchr(att_refusal, '\n', n)) {
        ssize_t r = recv(fd, att_refusal + n, cap - n, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    att_refusal[n] = '\0';
    att_refusal[strcspn(att_refusal, "\n")] = '\0';
    for (char *p = att_refusal; *p; p++)
        if (*p < 0x20 || *p > 0x7e)
            *p = '?';
    if (strstr(att_refusal, "permission denied"))
        return -EACCES;
    if (strstr(att_refusal, "too many"))
        return -EAGAIN; /* a limit on connections at once: later it may work */
    return -ECONNREFUSED;
}

static int att_validate(struct attach *a, struct part *pt, const struct shm_attach_reply *rep)
{
    const struct shm_region *r = pt->region;
    uint64_t end;

    if (r->magic != SHM_MAGIC || r->version != SHM_LAYOUT_VERSION || r->size != a->region_size)
        return -EPROTO;
    if (r->nchannels != rep->nchannels || r->worker >= SHM_MAX_WORKERS ||
        r->worker != (uint32_t)(pt - a->pt) || r->client_id != rep->client_id)
        return -EPROTO;
    if (pt != a->pt && r->nsocks != a->nsocks)
        return -EPROTO; /* parts are alike */
    if (a->state_size < sizeof(struct shm_state) || a->state->magic != SHM_MAGIC ||
        a->state->version != SHM_LAYOUT_VERSION)
        return -EPROTO;
    end = (uint64_t)r->chan_off + (uint64_t)r->nchannels * sizeof(struct shm_channel);
    if (r->chan_off % SHM_CACHELINE || end > r->size)
        return -EPROTO;
    end = (uint64_t)r->sock_off + (uint64_t)r->nsocks * sizeof(struct shm_sock);
    if (r->sock_off % SHM_CACHELINE || end > r->size || r->nsocks > 0x10000)
        return -EPROTO;
    a->nchannels = r->nchannels;
    a->nsocks = r->nsocks;
    pt->worker = r->worker;
    pt->chans = (struct shm_channel *)((uint8_t *)pt->region + r->chan_off);
    pt->socks = (struct shm_sock *)((uint8_t *)pt->region + r->sock_off);
    return 0;
}

static void *map_fd(int fd, size_t size, int prot)
{
    struct stat st;

    if (size == 0 || fstat(fd, &st) < 0 || (uint64_t)st.st_size < size)
        return NULL;
    void *p = mmap(NULL, size, prot, MAP_SHARED, fd, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* Receive the attach reply and its fds. Returns the number of fds placed in fds[]. */
static int recv_reply(int fd, struct shm_attach_reply *rep, int *fds, int maxfds)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * (1 + 2 * SHM_MAX_PARTS + SHM_MAX_CHANNELS))];
        struct cmsghdr align;
    } cm;
    struct iovec iov = {.iov_base = rep, .iov_len = sizeof(*rep)};
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf, .msg_controllen = sizeof(cm.buf)};
    int nfds = 0;
    ssize_t n;

    do {
        n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return errno == EAGAIN ? -ETIMEDOUT : -errno;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < k; i++) {
            int f;
            memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(f));
            if (nfds < maxfds)
                fds[nfds++] = f;
            else
                close(f);
        }
    }
    if (n == 0 || (mh.msg_flags & MSG_CTRUNC)) {
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
        return n == 0 ? -ECONNREFUSED : -EPROTO;
    }
    /* A stream may split the reply: the fds came with the first byte, read the rest. */
    size_t got = (size_t)n;
    while (got < sizeof(*rep)) {
        n = recv(fd, (char *)rep + got, sizeof(*rep) - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    /* A binary reply never starts so: its result is 0 or negative. */
    if (got >= 6 && !memcmp(rep, "error:", 6)) {
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
        return text_refusal(fd, (const char *)rep, got);
    }
    if (got < sizeof(*rep)) {
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
        return n == 0 ? -ECONNREFUSED : -errno;
    }
    return nfds;
}

static int att_open(struct attach **out)
{
    const char *path = getenv(SHM_SOCKET_ENV);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    struct timeval tv = {.tv_sec = ATTACH_TIMEOUT_S};
    struct shm_attach_reply rep;
    int fds[1 + 2 * SHM_MAX_PARTS + SHM_MAX_CHANNELS], nfds = 0, err;
    struct attach *a = NULL;
    const char *spin = getenv("SHMNET_SPIN_US");

    if (spin && *spin) {
        long us = strtol(spin, NULL, 10);
        /* relaxed: a tuning value, read by any thread; a stale read only changes timing */
        __atomic_store_n(&spin_ns,
                         (us < 0         ? 0
                          : us > 1000000 ? 1000000
                                         : us) *
                             1000ll,
                         __ATOMIC_RELAXED);
    }

    if (!path || !*path)
        path = SHM_DEFAULT_SOCKET;
    if (strlen(path) >= sizeof(sun.sun_path)) {
        warn_once(path, ENAMETOOLONG);
        return -ENAMETOOLONG;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);
    a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    a->refs = 1;
    for (int k = 0; k < SHM_MAX_PARTS; k++)
        a->pt[k].doorbell_fd = -1;
    a->ctl_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (a->ctl_fd < 0) {
        err = -errno;
        free(a);
        return err;
    }
    if (connect(a->ctl_fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        err = errno;
        goto fail_connect;
    }
    /* Bounded handshake: a wedged daemon must not hang the caller. */
    setsockopt(a->ctl_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(a->ctl_fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    const char *line = SHM_ATTACH_LINE;
    ssize_t llen = (ssize_t)strlen(line);
    if (send(a->ctl_fd, line, (size_t)llen, MSG_NOSIGNAL) != llen) {
        err = errno ? errno : EPIPE;
        goto fail_connect;
    }
    att_refusal[0] = '\0';
    nfds = recv_reply(a->ctl_fd, &rep, fds, (int)(sizeof(fds) / sizeof(fds[0])));
    if (nfds < 0) {
        err = -nfds;
        nfds = 0;
        if (att_refusal[0] && err != ECONNREFUSED)
            goto refused;
        goto fail_connect;
    }
    if (rep.result < 0) {
        err = -rep.result;
        goto refused;
    }
    uint32_t np = rep.nparts;
    if (rep.version != SHM_LAYOUT_VERSION || rep.nchannels == 0 ||
        rep.nchannels > SHM_MAX_CHANNELS || np == 0 || np > SHM_MAX_PARTS || rep.home >= np ||
        nfds != 1 + 2 * (int)np + (int)rep.nchannels) {
        err = EPROTO;
        goto fail_connect;
    }
    tv.tv_sec = 0;
    setsockopt(a->ctl_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(a->ctl_fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    a->region_size = rep.region_size;
    a->state_size = rep.state_size;
    a->nparts = np;
    a->home = rep.home;
    bool mapped = true;
    for (uint32_t k = 0; k < np; k++) {
        a->pt[k].region = map_fd(fds[k], rep.region_size, PROT_READ | PROT_WRITE);
        mapped = mapped && a->pt[k].region;
        close(fds[k]);
        a->pt[k].doorbell_fd = fds[np + 1 + k];
    }
    a->state = map_fd(fds[np], rep.state_size, PROT_READ);
    close(fds[np]);
    a->nchannels = rep.nchannels; /* so att_free closes the channel fds */
    for (uint32_t i = 0; i < rep.nchannels; i++) {
        a->chan_fd[i] = fds[1 + 2 * np + i];
        /* Non-blocking reads: two threads sharing a channel may race for one wake-up.
         * (Status flags are shared with the daemon's copy; its writes never block.) */
        fcntl(a->chan_fd[i], F_SETFL, fcntl(a->chan_fd[i], F_GETFL) | O_NONBLOCK);
    }
    nfds = 0;
    err = !mapped || !a->state ? ENOMEM : 0;
    for (uint32_t k = 0; k < np && !err; k++)
        err = -att_validate(a, &a->pt[k], &rep);
    if (!err)
        err = -fam_create(a);
    if (err) {
        warn_once(path, err);
        att_free(a);
        return -err;
    }
    a->last_check = (int64_t)clock_mono_ns();
    *out = a;
    return 0;

fail_connect:
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    warn_once(path, err);
    close(a->ctl_fd);
    free(a);
    if (err == ENOENT || err == ENOTDIR || err == ECONNREFUSED || err == ECONNRESET || err == EPIPE)
        err = ECONNREFUSED;
    return -err;

refused:
    /* The daemon said no (rep.result, or its text): its errno, not "no daemon". */
    warn_refused(path, err,
                 !strncmp(att_refusal, "error: ", 7) ? att_refusal + 7
                 : att_refusal[0]                    ? att_refusal
                                                     : NULL);
    close(a->ctl_fd);
    free(a);
    return -err;
}

/* A referenced live session, attaching (again) if there is none or the last one died. */
static int att_get(struct attach **out)
{
    int r = 0;

    pthread_mutex_lock(&att_lock);
    if (att_cur && !att_alive(att_cur, true)) {
        att_unref(att_cur);
        att_cur = NULL;
    }
    if (!att_cur)
        r = att_open(&att_cur);
    if (r == 0) {
        att_ref(att_cur);
        *out = att_cur;
    }
    pthread_mutex_unlock(&att_lock);
    return r;
}

/* ------------------------------------------------------------------ channels */

/* This thread's channel in one session. The reference to the session keeps the channel's
 * memory mapped while the thread may still touch it. */
static __thread struct {
    struct attach *att;
    int ch;
    bool exclusive;
} tls;
static pthread_key_t tls_key;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;

static uint64_t owner_word(void)
{
    return (uint64_t)(uint32_t)getpid() << 32 | (uint32_t)gettid();
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
static int tls_channel(struct attach *a)
{
    uint64_t me;
    int ch = -1;

    if (tls.att == a)
        return tls.ch;
    me = owner_word(); /* two system calls: only when claiming */
    tls_release();
    pthread_once(&tls_once, tls_init);
    for (int pass = 0; pass < 2 && ch < 0; pass++) {
        for (uint32_t c = 0; c < a->nchannels && ch < 0; c++) {
            uint64_t o = __atomic_load_n(&a->cp[c].owner, __ATOMIC_RELAXED);
            if (o && (pass == 0 || thread_alive((int32_t)(o >> 32), (int32_t)o)))
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

/* Lock channel ch. If the last holder died mid-call, continue from the request index it
 * published (a request it wrote but did not publish is simply not sent). */
static void chan_lock(struct part *pt, int ch)
{
    if (fam_lock(&pt->cp[ch].lock))
        pt->cp[ch].req_tail = shm_load_acq(&pt->chans[ch].req_tail);
}

/* Announce (v = 1) or end a sleep on channel ch to every part's worker: any of them may
 * have an event for this thread. seq_cst when announcing: see sock_wait. */
static void chan_sleeping(struct attach *a, int ch, uint32_t v)
{
    for (uint32_t k = 0; k < a->nparts; k++)
        __atomic_store_n(&a->pt[k].chans[ch].client_sleeping, v,
                         v ? __ATOMIC_SEQ_CST : __ATOMIC_RELAXED);
}

/* Sleep on channel ch's eventfd and the control socket until either fires or timeout_ns
 * passes (< 0: no timeout). On a shared channel another thread may consume our wake-up,
 * so the sleep is capped. Returns 0, -EINTR, or E_DEAD. */
static int chan_sleep(struct attach *a, int ch, int64_t timeout_ns)
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
    int n = ppoll(p, 2, tsp, NULL);
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
static int att_call(struct attach *a, struct part *pt, struct shm_req *req, struct shm_cpl *out)
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

/* ------------------------------------------------------------------ the fd table */

static struct csock **fdt[FDT_PAGES];
static pthread_rwlock_t fdt_lock = PTHREAD_RWLOCK_INITIALIZER;

static void sock_put(struct csock *s);

/* How many listener members s has. acquire: pairs with listen_group's release, so the
 * members counted are in place (another thread may poll the socket while it listens). */
static int grp_n(const struct csock *s)
{
    return __atomic_load_n(&s->ngrp, __ATOMIC_ACQUIRE);
}

static void csock_free(struct csock *s)
{
    for (int i = 0; i < grp_n(s); i++)
        sock_put(s->grp[i]);
    free(s->opts);
    att_unref(s->att);
    free(s);
}

static void sock_put(struct csock *s)
{
    /* acq_rel: all users' accesses happen before the free. */
    if (__atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) == 0)
        csock_free(s);
}

static struct csock *fdt_lookup(int fd)
{
    struct csock *s = NULL;

    if (fd < 0 || fd >= FDT_PAGE * FDT_PAGES)
        return NULL;
    pthread_rwlock_rdlock(&fdt_lock);
    struct csock **page = fdt[fd / FDT_PAGE];
    if (page)
        s = page[fd % FDT_PAGE];
    if (s)
        __atomic_fetch_add(&s->refs, 1, __ATOMIC_RELAXED);
    pthread_rwlock_unlock(&fdt_lock);
    return s;
}

static int fdt_insert(int fd, struct csock *s)
{
    int r = 0;

    if (fd >= FDT_PAGE * FDT_PAGES)
        return -EMFILE;
    pthread_rwlock_wrlock(&fdt_lock);
    struct csock ***page = &fdt[fd / FDT_PAGE];
    if (!*page)
        *page = calloc(FDT_PAGE, sizeof(**page));
    if (*page)
        (*page)[fd % FDT_PAGE] = s;
    else
        r = -ENOMEM;
    pthread_rwlock_unlock(&fdt_lock);
    return r;
}

static struct csock *fdt_remove(int fd)
{
    struct csock *s = NULL;

    if (fd < 0 || fd >= FDT_PAGE * FDT_PAGES)
        return NULL;
    pthread_rwlock_wrlock(&fdt_lock);
    struct csock **page = fdt[fd / FDT_PAGE];
    if (page) {
        s = page[fd % FDT_PAGE];
        page[fd % FDT_PAGE] = NULL;
    }
    pthread_rwlock_unlock(&fdt_lock);
    return s;
}

/* The socket behind fd, referenced (sock_put when done), or -EBADF / -ENOTSOCK. */
static int sock_get(int fd, struct csock **out)
{
    *out = fdt_lookup(fd);
    if (*out)
        return 0;
    if (fd < 0 || fcntl(fd, F_GETFD) < 0)
        return -EBADF;
    return -ENOTSOCK;
}

/* ------------------------------------------------------------------ socket helpers */

static bool sock_closed(const struct csock *s)
{
    return __atomic_load_n(&s->closed, __ATOMIC_ACQUIRE);
}

static int sock_shut(const struct csock *s)
{
    return __atomic_load_n(&s->shut, __ATOMIC_ACQUIRE);
}

static bool sock_nonblock(const struct csock *s, int flags)
{
    return (flags & MSG_DONTWAIT) || __atomic_load_n(&s->nonblock, __ATOMIC_RELAXED);
}

/* errno for an operation on a socket whose session died (as for a reset connection). */
enum op_kind { OP_OTHER, OP_SEND, OP_RECV };
static int dead_err(const struct csock *s, enum op_kind k)
{
    if (k == OP_SEND)
        return -EPIPE;
    if (k == OP_RECV && __atomic_load_n(&s->connected, __ATOMIC_RELAXED))
        return -ECONNRESET;
    return -ENOTCONN;
}

/* One request about socket s, waiting for the completion. Returns 0 (cpl filled) or the
 * errno for a dead session. */
static int sock_call(struct csock *s, struct shm_req *req, struct shm_cpl *cpl, enum op_kind k)
{
    req->handle = s->handle;
    if (att_call(s->att, s->pt, req, cpl) < 0)
        return dead_err(s, k);
    return 0;
}

/* Wake this process's threads blocked on s (close, shutdown): their channel eventfds. */
static void sock_wake_local(struct csock *s)
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

/* Report and clear a pending asynchronous error (SO_ERROR), as Linux does on the next
 * send/recv. The daemon owns the value: asking it with GETSOCKOPT SO_ERROR clears it. */
static int sock_take_error(struct csock *s)
{
    struct shm_req req = {.op = SHM_OP_GETSOCKOPT, .arg0 = SOL_SOCKET, .arg1 = SO_ERROR};
    struct shm_cpl cpl = {0};
    int e;

    if (!__atomic_load_n(&s->sh->so_error, __ATOMIC_RELAXED))
        return 0;
    if (sock_call(s, &req, &cpl, OP_OTHER) < 0)
        return 0; /* the session died: the caller finds out next */
    if (cpl.result < 0 || cpl.optlen < sizeof(int))
        return __atomic_load_n(&s->sh->so_error, __ATOMIC_RELAXED);
    memcpy(&e, cpl.opt, sizeof(e));
    return e > 0 ? e : 0;
}

typedef bool (*ready_fn)(struct csock *s, uint32_t arg);

/* Set (seq_cst, see sock_wait) or clear (relaxed: the bit is only a hint for the daemon;
 * a stale one costs a spurious wake) our waiters bit on s and its listener members. */
static void sock_waiters(struct csock *s, uint64_t bit, bool set)
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
static int sock_wait(struct csock *s, ready_fn ready, uint32_t arg, int64_t deadline)
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
    if (!ready(s, arg))
        r = chan_sleep(a, ch, deadline ? deadline - (int64_t)clock_mono_ns() : -1);
    chan_sleeping(a, ch, 0);
    sock_waiters(s, bit, false);
    if (r == 0 && deadline && (int64_t)clock_mono_ns() >= deadline && !ready(s, arg))
        r = -EAGAIN;
    return r;
}

static int64_t deadline_of(int64_t timeo)
{
    if (timeo == 0)
        return 0;
    return (int64_t)clock_mono_ns() + (timeo < 0 ? 1 : timeo);
}

/* The tail of every blocking call's loop: -EAGAIN at once when the call does not block,
 * else wait for ready(s, arg) with lock (if any) released, until the deadline that
 * timeo (SO_RCVTIMEO/SO_SNDTIMEO) sets on the first wait. As sock_wait returns. */
static int wait_turn(struct csock *s, int flags, pthread_mutex_t *lock, ready_fn ready,
                     uint32_t arg, int64_t timeo, int64_t *deadline)
{
    if (sock_nonblock(s, flags))
        return -EAGAIN;
    if (!*deadline)
        *deadline = deadline_of(timeo);
    if (lock)
        pthread_mutex_unlock(lock);
    int r = sock_wait(s, ready, arg, *deadline);
    if (lock)
        fam_lock(lock);
    return r;
}

/* Free bytes in the TX fifo (the daemon's tx_head with acquire: it has finished reading
 * the space before it published the new head). */
static uint32_t tx_free(struct csock *s, uint32_t tail)
{
    uint32_t used = tail - shm_load_acq(&s->sh->tx_head);
    return used > s->tx_size ? 0 : s->tx_size - used;
}

static bool rx_nonempty(struct csock *s)
{
    return shm_load_acq(&s->sh->rx_tail) != __atomic_load_n(&s->sp->rx_head, __ATOMIC_RELAXED);
}

static bool sock_errored(struct csock *s)
{
    return __atomic_load_n(&s->sh->so_error, __ATOMIC_RELAXED) != 0;
}

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

/* Every record in the TX fifo was taken by the daemon (or waiting is pointless). */
static bool tx_drained(struct csock *s, uint32_t unused)
{
    return shm_load_acq(&s->sh->tx_head) == __atomic_load_n(&s->sp->tx_tail, __ATOMIC_RELAXED) ||
           att_dead(s->att);
}

/* ---- TCP helpers ---- */

/* The daemon's readiness bits. acquire: pairs with its release fetch_or, so what it
 * published before (names, so_error) is visible once we see the bit. */
static uint32_t sock_events(const struct csock *s)
{
    uint32_t ev = __atomic_load_n(&s->sh->events, __ATOMIC_ACQUIRE);
    for (int i = 0, n = grp_n(s); i < n; i++) /* a listener: ready when any member is */
        ev |= __atomic_load_n(&s->grp[i]->sh->events, __ATOMIC_ACQUIRE) & SHM_EV_IN;
    return ev;
}

static int sock_tstate(const struct csock *s)
{
    return __atomic_load_n(&s->tstate, __ATOMIC_ACQUIRE);
}

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

static bool tcp_rx_ready(struct csock *s, uint32_t unused)
{
    return rx_nonempty(s) || (sock_events(s) & (SHM_EV_RDHUP | SHM_EV_HUP | SHM_EV_ERR)) ||
           sock_closed(s) || (sock_shut(s) & 1) || sock_errored(s) || att_dead(s->att);
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
static bool tcp_tx_acked(struct csock *s, uint32_t unused)
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

/* ------------------------------------------------------------------ the API */

const char *shmnet_version(void)
{
    return "0.1.0";
}

int shmnet_is_socket(int fd)
{
    struct csock *s = fdt_lookup(fd);

    if (!s)
        return 0;
    sock_put(s);
    return 1;
}

static bool fifo_ok(const struct attach *a, uint32_t off, uint32_t size)
{
    /* every part's region has the same size */
    return size >= SHM_FIFO_ALIGN && size % SHM_FIFO_ALIGN == 0 && off % SHM_FIFO_ALIGN == 0 &&
           (uint64_t)off + size <= a->region_size;
}

/* A csock for the daemon's handle h in part pt (its slot filled, fifos described) behind
 * a new placeholder fd (none with fdp NULL: a listener's member). Takes one reference to a
 * (the caller's). On failure the handle is closed in the daemon, the reference dropped,
 * and -errno returned. */
static int csock_new(struct attach *a, struct part *pt, uint32_t h, int type, bool nonblock,
                     int *fdp, struct csock **out)
{
    uint32_t idx = shm_handle_idx(h);
    struct shm_sock *sh = idx < a->nsocks ? &pt->socks[idx] : NULL;
    struct shm_req cl = {.op = SHM_OP_CLOSE, .handle = h};
    struct shm_cpl cpl = {0};
    struct csock *s;
    int r, fd = -1;

    /* The slot was filled before the completion was published; the acquire load of
     * cpl_tail in shm_cpl_pop makes it visible here. */
    if (!sh || sh->gen != shm_handle_gen(h) || !fifo_ok(a, sh->rx_off, sh->rx_size) ||
        !fifo_ok(a, sh->tx_off, sh->tx_size)) {
        att_call(a, pt, &cl, &cpl);
        att_unref(a);
        return -EPROTO;
    }
    if (fdp)
        fd = eventfd(0, EFD_CLOEXEC);
    s = fdp && fd < 0 ? NULL : calloc(1, sizeof(*s));
    if (!s) {
        r = fdp && fd < 0 ? -errno : -ENOMEM;
        if (fd >= 0)
            close(fd);
        att_call(a, pt, &cl, &cpl);
        att_unref(a);
        return r;
    }
    s->refs = 1;
    s->fdrefs = 1;
    s->type = type;
    s->nonblock = nonblock;
    s->linger_s = -1;
    s->handle = h;
    s->att = a; /* takes the caller's reference */
    s->pt = pt;
    s->sh = sh;
    /* The slot is new: no process of the family can still hold its previous socket (the
     * daemon frees a slot only after the last holder closed it). */
    s->sp = &pt->sp[idx];
    fam_mutex_init(&s->sp->rx_lock);
    fam_mutex_init(&s->sp->tx_lock);
    /* Our indices start where the daemon initialised the [C] fields of the slot. */
    s->sp->rx_head = __atomic_load_n(&sh->rx_head, __ATOMIC_RELAXED);
    s->sp->tx_tail = __atomic_load_n(&sh->tx_tail, __ATOMIC_RELAXED);
    s->sp->handle = h;
    __atomic_store_n(&s->sp->holders, proc_bit(a), __ATOMIC_RELEASE);
    s->rx_base = (uint8_t *)pt->region + sh->rx_off;
    s->rx_size = sh->rx_size;
    s->tx_base = (uint8_t *)pt->region + sh->tx_off;
    s->tx_size = sh->tx_size;
    if (fdp) {
        r = fdt_insert(fd, s);
        if (r < 0) {
            att_call(a, pt, &cl, &cpl);
            close(fd);
            sock_put(s);
            return r;
        }
        *fdp = fd;
    }
    *out = s;
    return 0;
}

/* csock_new behind a new fd; returns the fd or -errno. */
static int csock_make(struct attach *a, struct part *pt, uint32_t h, int type, bool nonblock,
                      struct csock **out)
{
    int fd = -1;
    int r = csock_new(a, pt, h, type, nonblock, &fd, out);
    return r < 0 ? r : fd;
}

static int do_socket(int domain, int type, int protocol)
{
    int base = type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC);
    struct shm_req req = {.op = SHM_OP_SOCKET};
    struct shm_cpl cpl = {0};
    struct attach *a = NULL;
    struct csock *s;
    int r;

    if (domain != AF_INET)
        return -EAFNOSUPPORT;
    if (base == SOCK_DGRAM) {
        if (protocol != 0 && protocol != IPPROTO_UDP)
            return -EPROTONOSUPPORT;
    } else if (base == SOCK_STREAM) {
        if (protocol != 0 && protocol != IPPROTO_TCP)
            return -EPROTONOSUPPORT;
    } else {
        return base <= 0 || base > SOCK_PACKET ? -EINVAL : -EPROTONOSUPPORT;
    }
    req.arg0 = base;
    req.arg1 = protocol;
    for (int attempt = 0;; attempt++) {
        r = att_get(&a);
        if (r < 0)
            return r;
        if (att_call(a, &a->pt[a->home], &req, &cpl) == 0)
            break;
        att_unref(a);
        if (attempt) /* the daemon died twice in a row */
            return -ECONNREFUSED;
    }
    if (cpl.result < 0) {
        att_unref(a);
        return cpl.result;
    }
    return csock_make(a, &a->pt[a->home], (uint32_t)cpl.result, base, !!(type & SOCK_NONBLOCK), &s);
}

int shmnet_socket(int domain, int type, int protocol)
{
    return (int)ret_errno(do_socket(domain, type, protocol));
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

static int do_bind(struct csock *s, const struct sockaddr *sa, socklen_t len)
{
    struct shm_req req = {.op = SHM_OP_BIND};
    struct shm_cpl cpl = {0};
    int r = get_sockaddr(sa, len, &req.addr, &req.port);

    if (r == 0)
        r = sock_call(s, &req, &cpl, OP_OTHER);
    return r < 0 ? r : (cpl.result < 0 ? cpl.result : 0);
}

int shmnet_bind(int fd, const struct sockaddr *addr, socklen_t addrlen)
{
    return (int)WITH_SOCK(fd, s, do_bind(s, addr, addrlen));
}

/* TCP connect (Linux's __inet_stream_connect): -EINPROGRESS on a non-blocking socket,
 * else wait (up to SO_SNDTIMEO, then -EINPROGRESS) for the handshake's outcome. */
static int do_connect_stream(struct csock *s, const struct sockaddr *sa, socklen_t len)
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
        if (r == -EINTR)
            return -EINTR;
        if (r == E_DEAD)
            return -ENOTCONN;
    }
}

static int do_connect(struct csock *s, const struct sockaddr *sa, socklen_t len)
{
    struct shm_req req = {.op = SHM_OP_CONNECT};
    struct shm_cpl cpl = {0};
    bool dissolve = false;
    int r;

    if (!sa)
        return -EFAULT;
    if (s->type == SOCK_STREAM)
        return do_connect_stream(s, sa, len);
    if (len >= sizeof(sa_family_t) && sa->sa_family == AF_UNSPEC) {
        /* Dissolve the association (UDP connect(AF_UNSPEC)). */
        req.flags = SHM_REQ_UNSPEC;
        dissolve = true;
        r = 0;
    } else {
        r = get_sockaddr(sa, len, &req.addr, &req.port);
    }
    if (r == 0)
        r = sock_call(s, &req, &cpl, OP_OTHER);
    if (r < 0)
        return r;
    if (cpl.result < 0)
        return cpl.result;
    __atomic_store_n(&s->connected, !dissolve, __ATOMIC_RELAXED);
    return 0;
}

int shmnet_connect(int fd, const struct sockaddr *addr, socklen_t addrlen)
{
    return (int)WITH_SOCK(fd, s, do_connect(s, addr, addrlen));
}

static void close_handle(struct attach *a, struct part *pt, uint32_t h, bool async);
static void members_release(struct csock *s, uint64_t me, bool closed);

/* Close listener member m in the daemon; no process holds it any more. relaxed: the
 * sweep of another process may close it too; the daemon answers a second close of a
 * handle with -EBADF, harmlessly. */
static void member_close(struct attach *a, struct csock *m)
{
    __atomic_store_n(&m->sp->holders, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&m->closed, 1, __ATOMIC_RELEASE);
    if (!att_dead(a))
        close_handle(a, m->pt, m->handle, false);
}

/* One request to a listener member; its result. */
static int member_call(struct csock *m, struct shm_req *req)
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
    r = sock_call(s, &req, &cpl, OP_OTHER);
    if (r < 0)
        return r;
    if (cpl.result < 0)
        return cpl.result;
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
static ssize_t do_send_stream(struct csock *s, const uint8_t *buf, size_t len, int flags)
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
static ssize_t do_recv_stream(struct csock *s, uint8_t *buf, size_t len, int flags,
                              socklen_t *srclen)
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
            if (done == len || !waitall)
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
        r = wait_turn(s, flags, &s->sp->rx_lock, tcp_rx_ready, 0, s->rcvtimeo, &deadline);
        if (r == E_DEAD)
            continue; /* queued bytes are still delivered, then ECONNRESET */
        if (r < 0 && !rx_nonempty(s))
            break;
        r = 0;
    }
    pthread_mutex_unlock(&s->sp->rx_lock);
    return done ? (ssize_t)done : r;
}

static ssize_t do_sendto(struct csock *s, const void *buf, size_t len, int flags,
                         const struct sockaddr *dst, socklen_t dlen)
{
    struct shm_dgram h = {0};
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
    return WITH_SOCK(fd, s, do_sendto(s, buf, len, flags, dest, destlen));
}

ssize_t shmnet_send(int fd, const void *buf, size_t len, int flags)
{
    return WITH_SOCK(fd, s, do_sendto(s, buf, len, flags, NULL, 0));
}

static ssize_t do_recvfrom(struct csock *s, void *buf, size_t len, int flags, struct sockaddr *src,
                           socklen_t *srclen)
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
    return WITH_SOCK(fd, s, do_recvfrom(s, buf, len, flags, src, srclen));
}

ssize_t shmnet_recv(int fd, void *buf, size_t len, int flags)
{
    return WITH_SOCK(fd, s, do_recvfrom(s, buf, len, flags, NULL, NULL));
}

/* Send the daemon the close of handle h (a socket this family no longer holds). With
 * async the request is posted and not waited for: requests of a channel run in order,
 * and the daemon runs what an exiting process left in its rings (drain_requests), so
 * only the port-freeing closes (listeners, bound or datagram sockets, whose port another
 * thread may bind right after close returns) need the round trip. */
static void close_handle(struct attach *a, struct part *pt, uint32_t h, bool async)
{
    struct shm_req req = {.op = SHM_OP_CLOSE, .handle = h};
    struct shm_cpl cpl = {0};

    att_call(a, pt, &req, async ? NULL : &cpl);
}

/* The listener s goes (closed = true: in the daemon too; else only this process's hold). */
static void members_release(struct csock *s, uint64_t me, bool closed)
{
    struct attach *a = s->att;

    for (int i = 0; i < grp_n(s); i++) {
        struct csock *m = s->grp[i];
        /* acq_rel: as sock_release's exchange; a process that forked before listen()
         * holds the listener but not its members, so our bit may be the last one. */
        if (closed || !(__atomic_fetch_and(&m->sp->holders, ~me, __ATOMIC_ACQ_REL) & ~me))
            member_close(a, m);
    }
}

/* The last fd of this process naming s went away. The socket closes (in the daemon) only
 * when no other live process of the family holds it, as a kernel socket lives while any
 * process has a descriptor for it; otherwise the last holder to exit or close does it
 * (fam_sweep). */
static void sock_release(struct csock *s)
{
    struct attach *a = s->att;
    uint64_t me = proc_bit(a), h = __atomic_load_n(&s->sp->holders, __ATOMIC_ACQUIRE);
    bool others;

    /* acq_rel: one winner between us and a sweeping process (which swaps in 0 too). */
    do {
        others = holders_alive(a, h & ~me);
    } while (!__atomic_compare_exchange_n(&s->sp->holders, &h, others ? h & ~me : 0, false,
                                          __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
    if (!h && me) /* a sweep closed it meanwhile (a slotless child's own sockets have 0) */
        others = true;
    if (others && !att_dead(a)) {
        members_release(s, me, false);
        __atomic_store_n(&s->closed, 1, __ATOMIC_RELEASE);
        sock_wake_local(s);
        return;
    }
    members_release(s, me, true);
    /* Datagrams still in the TX fifo were accepted by sendto: let the daemon take them
     * before it frees the socket (Linux has sent them by the time close runs). Bounded, in
     * case the daemon cannot make progress. */
    if (!att_dead(a) && s->type == SOCK_DGRAM) {
        int64_t deadline = (int64_t)clock_mono_ns() + CLOSE_LINGER_NS;
        while (!tx_drained(s, 0) && sock_wait(s, tx_drained, 0, deadline) == 0) {
        }
    }
    /* TCP: the daemon sends what was written, then the FIN, whether the process lives on
     * or exits (the connection is an orphan then, as in Linux): close returns at once.
     * Only SO_LINGER with a time makes it wait, up to that time, until the peer has
     * acknowledged everything (socket(7)); not with unread data (the daemon resets). */
    if (!att_dead(a) && s->type == SOCK_STREAM && s->linger_s > 0 &&
        sock_tstate(s) == TS_CONNECTED && !rx_nonempty(s)) {
        int64_t deadline = (int64_t)clock_mono_ns() + s->linger_s * 1000000000ll;
        while (!tcp_tx_acked(s, 0) && sock_wait(s, tcp_tx_acked, 0, deadline) == 0) {
        }
    }
    /* release: a woken waiter that sees closed also sees the table entry gone. */
    __atomic_store_n(&s->closed, 1, __ATOMIC_RELEASE);
    if (!att_dead(a)) {
        int ts = sock_tstate(s);
        close_handle(a, s->pt, s->handle,
                     s->type == SOCK_STREAM && (ts == TS_CONNECTED || ts == TS_CONNECTING));
    }
    sock_wake_local(s);
}

/* Sockets that processes of the family held and left without a close (exit, crash) or
 * closed while another still held them: once no holder runs any more, close them, as the
 * kernel closes a socket with its last descriptor. Runs with the periodic liveness
 * check, only in families that forked. */
static void fam_sweep(struct attach *a)
{
    if (!__atomic_load_n(&a->fam->forked, __ATOMIC_RELAXED) || att_dead(a))
        return;
    for (uint32_t i = 0; i < a->nparts * a->nsocks; i++) {
        struct sock_priv *sp = &a->fam->sock[i];
        uint64_t h = __atomic_load_n(&sp->holders, __ATOMIC_ACQUIRE);
        if (!h || (h & proc_bit(a)) || holders_alive(a, h))
            continue;
        /* acq_rel: whoever wins the exchange sends the one close. */
        if (__atomic_compare_exchange_n(&sp->holders, &h, 0, false, __ATOMIC_ACQ_REL,
                                        __ATOMIC_RELAXED))
            close_handle(a, &a->pt[i / a->nsocks], sp->handle, false);
    }
}

/* Drop fd's name for its socket; the socket itself goes with its last name. With
 * close_fd the kernel placeholder is closed too (else the caller reused the number). */
static int fd_drop(int fd, bool close_fd)
{
    struct csock *s = fdt_remove(fd);

    if (!s)
        return fd < 0 || fcntl(fd, F_GETFD) < 0 ? -EBADF : -ENOTSOCK;
    if (__atomic_sub_fetch(&s->fdrefs, 1, __ATOMIC_ACQ_REL) == 0)
        sock_release(s);
    /* The placeholder goes last: its number cannot be reused while the table maps it. */
    if (close_fd)
        close(fd);
    sock_put(s);
    return 0;
}

int shmnet_close(int fd)
{
    return (int)ret_errno(fd_drop(fd, true));
}

static int do_shutdown(struct csock *s, int how)
{
    struct shm_req req = {.op = SHM_OP_SHUTDOWN, .arg0 = how};
    struct shm_cpl cpl = {0};
    int r;

    if (how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR)
        return -EINVAL;
    r = sock_call(s, &req, &cpl, OP_OTHER);
    if (r < 0)
        return r;
    /* Like Linux, even an unconnected datagram socket is marked and its blocked readers
     * are woken (a common way to stop a thread in recv), though ENOTCONN is returned. */
    __atomic_fetch_or(&s->shut, how + 1, __ATOMIC_RELEASE);
    sock_wake_local(s);
    if (cpl.result < 0)
        return cpl.result;
    return s->type == SOCK_DGRAM && !__atomic_load_n(&s->connected, __ATOMIC_RELAXED) ? -ENOTCONN
                                                                                      : 0;
}

int shmnet_shutdown(int fd, int how)
{
    return (int)WITH_SOCK(fd, s, do_shutdown(s, how));
}

static int64_t tv_to_ns(const struct timeval *tv)
{
    if (tv->tv_sec < 0)
        return -1;
    if (tv->tv_sec > INT64_MAX / 1000000000ll - 1)
        return 0;
    return (int64_t)tv->tv_sec * 1000000000ll + tv->tv_usec * 1000ll;
}

/* A TCP option the daemon took. Several workers: on a socket that may still listen
 * (neither connecting nor connected), remembered for the listener members listen() makes;
 * on a listener, passed on to its members (best effort, as on s). Only sockets that set
 * options before listen or connect pay for the log. */
static void opt_record(struct csock *s, const struct shm_req *req)
{
    int i = 0;

    if (s->att->nparts > 1 && sock_tstate(s) == TS_NONE) {
        /* the TX lock: two threads may set options at once, as on a kernel socket */
        fam_lock(&s->sp->tx_lock);
        if (!s->opts)
            s->opts = calloc(1, sizeof(*s->opts)); /* NULL: not replayed (best effort) */
        struct optlog *l = s->opts;
        while (l && i < l->n && (l->o[i].level != req->arg0 || l->o[i].name != req->arg1))
            i++;
        if (l && i < OPTLOG_MAX) {
            l->o[i].level = req->arg0;
            l->o[i].name = req->arg1;
            l->o[i].len = req->optlen;
            memcpy(l->o[i].val, req->opt, req->optlen);
            if (i == l->n)
                l->n++;
        }
        pthread_mutex_unlock(&s->sp->tx_lock);
    }
    for (int k = 0; k < grp_n(s); k++) {
        struct shm_req o = *req;
        member_call(s->grp[k], &o);
    }
}

static int do_setsockopt(struct csock *s, int level, int name, const void *val, socklen_t len)
{
    struct shm_req req = {.op = SHM_OP_SETSOCKOPT, .arg0 = level, .arg1 = name};
    struct shm_cpl cpl = {0};
    int r;

    if (!val && len)
        return -EFAULT;
    if (level == SOL_SOCKET && (name == SO_RCVTIMEO || name == SO_SNDTIMEO)) {
        struct timeval tv;
        if (!val)
            return -EFAULT;
        if (len < sizeof(tv))
            return -EINVAL;
        memcpy(&tv, val, sizeof(tv));
        if (tv.tv_usec < 0 || tv.tv_usec >= 1000000)
            return -EDOM;
        if (name == SO_RCVTIMEO)
            s->rcvtimeo = tv_to_ns(&tv);
        else
            s->sndtimeo = tv_to_ns(&tv);
        return 0;
    }
    if (len > SHM_OPT_MAX)
        return -EINVAL;
    req.optlen = (uint16_t)len;
    if (len)
        memcpy(req.opt, val, len);
    /* TCP_CORK and TCP_NODELAY on a connection cannot fail in the daemon, and servers flip
     * them around every response (nginx's tcp_nopush): post them like a TX kick, without
     * waiting for the completion. Requests of a channel are handled in order, so the bytes
     * sent before and after are corked or pushed as they would be. */
    if (level == IPPROTO_TCP && (name == TCP_CORK || name == TCP_NODELAY) && len >= sizeof(int) &&
        s->type == SOCK_STREAM && sock_tstate(s) == TS_CONNECTED) {
        req.handle = s->handle;
        return att_call(s->att, s->pt, &req, NULL) < 0 ? dead_err(s, OP_OTHER) : 0;
    }
    r = sock_call(s, &req, &cpl, OP_OTHER);
    if (r < 0)
        return r;
    if (cpl.result < 0)
        return cpl.result;
    if (s->type == SOCK_STREAM)
        opt_record(s, &req);
    if (level == SOL_SOCKET && name == SO_LINGER && len >= sizeof(struct linger)) {
        struct linger lg;
        memcpy(&lg, val, sizeof(lg));
        s->linger_s = lg.l_onoff ? (lg.l_linger < 0 ? 0 : lg.l_linger) : -1;
    }
    return 0;
}

int shmnet_setsockopt(int fd, int level, int optname, const void *optval, socklen_t optlen)
{
    return (int)WITH_SOCK(fd, s, do_setsockopt(s, level, optname, optval, optlen));
}

static void put_opt(void *val, socklen_t *len, const void *src, size_t n)
{
    if (*len < n)
        n = *len;
    memcpy(val, src, n);
    *len = (socklen_t)n;
}

static int do_getsockopt(struct csock *s, int level, int name, void *val, socklen_t *len)
{
    struct shm_req req = {.op = SHM_OP_GETSOCKOPT, .arg0 = level, .arg1 = name};
    struct shm_cpl cpl = {0};
    int r, v;

    if (!val || !len)
        return -EFAULT;
    if ((int)*len < 0)
        return -EINVAL;
    if (level == SOL_SOCKET) {
        switch (name) {
        case SO_RCVTIMEO:
        case SO_SNDTIMEO: {
            int64_t ns = name == SO_RCVTIMEO ? s->rcvtimeo : s->sndtimeo;
            struct timeval tv = {0};
            if (ns > 0) {
                tv.tv_sec = ns / 1000000000ll;
                tv.tv_usec = ns % 1000000000ll / 1000;
            }
            put_opt(val, len, &tv, sizeof(tv));
            return 0;
        }
        case SO_TYPE:
            v = s->type;
            put_opt(val, len, &v, sizeof(v));
            return 0;
        case SO_DOMAIN:
            v = AF_INET;
            put_opt(val, len, &v, sizeof(v));
            return 0;
        case SO_PROTOCOL:
            v = s->type == SOCK_DGRAM ? IPPROTO_UDP : IPPROTO_TCP;
            put_opt(val, len, &v, sizeof(v));
            return 0;
        default:
            break;
        }
    }
    r = sock_call(s, &req, &cpl, OP_OTHER);
    if (r < 0)
        return r;
    if (cpl.result < 0)
        return cpl.result;
    if (cpl.optlen > SHM_OPT_MAX)
        cpl.optlen = SHM_OPT_MAX;
    if (s->type == SOCK_STREAM && level == IPPROTO_TCP && name == TCP_INFO) {
        struct shm_tcp_info si = {0};
        struct tcp_info ti;
        memset(&ti, 0, sizeof(ti));
        memcpy(&si, cpl.opt, cpl.optlen < sizeof(si) ? cpl.optlen : sizeof(si));
        if (cpl.optlen) { /* 0: the connection is gone, all zero */
            ti.tcpi_state = si.state;
            ti.tcpi_ca_state = si.ca_state;
            ti.tcpi_retransmits = si.retransmits;
            ti.tcpi_options = si.options;
            ti.tcpi_snd_wscale = si.snd_wscale & 0xf;
            ti.tcpi_rcv_wscale = si.rcv_wscale & 0xf;
            ti.tcpi_rto = si.rto_us;
            ti.tcpi_snd_mss = si.snd_mss;
            ti.tcpi_rcv_mss = si.snd_mss;
            ti.tcpi_rtt = si.rtt_us;
            ti.tcpi_rttvar = si.rttvar_us;
            ti.tcpi_snd_cwnd = si.snd_cwnd;
            ti.tcpi_snd_ssthresh = si.snd_ssthresh;
        }
        put_opt(val, len, &ti, sizeof(ti));
        return 0;
    }
    if (s->type == SOCK_STREAM && level == IPPROTO_TCP && name == TCP_CONGESTION) {
        char cc[16] = {0}; /* Linux: TCP_CA_NAME_MAX bytes, NUL-padded */
        memcpy(cc, cpl.opt, cpl.optlen < sizeof(cc) - 1 ? cpl.optlen : sizeof(cc) - 1);
        put_opt(val, len, cc, sizeof(cc));
        return 0;
    }
    put_opt(val, len, cpl.opt, cpl.optlen);
    return 0;
}

int shmnet_getsockopt(int fd, int level, int optname, void *optval, socklen_t *optlen)
{
    return (int)WITH_SOCK(fd, s, do_getsockopt(s, level, optname, optval, optlen));
}

static int do_getname(struct csock *s, uint32_t op, struct sockaddr *sa, socklen_t *len)
{
    struct shm_req req = {.op = op};
    struct shm_cpl cpl = {0};
    int r = check_out_addr(sa, len);

    if (r == 0)
        r = sock_call(s, &req, &cpl, OP_OTHER);
    if (r < 0)
        return r;
    if (cpl.result < 0)
        return cpl.result;
    put_sockaddr(sa, len, cpl.addr, cpl.port);
    return 0;
}

int shmnet_getsockname(int fd, struct sockaddr *addr, socklen_t *addrlen)
{
    return (int)WITH_SOCK(fd, s, do_getname(s, SHM_OP_GETSOCKNAME, addr, addrlen));
}

int shmnet_getpeername(int fd, struct sockaddr *addr, socklen_t *addrlen)
{
    return (int)WITH_SOCK(fd, s, do_getname(s, SHM_OP_GETPEERNAME, addr, addrlen));
}

static int do_fcntl(struct csock *s, int fd, int cmd, long arg)
{
    switch (cmd) {
    case F_GETFL:
        return O_RDWR | (__atomic_load_n(&s->nonblock, __ATOMIC_RELAXED) ? O_NONBLOCK : 0);
    case F_SETFL:
        __atomic_store_n(&s->nonblock, !!(arg & O_NONBLOCK), __ATOMIC_RELAXED);
        return 0;
    case F_GETFD:
    case F_SETFD: {
        int r = fcntl(fd, cmd, (int)arg);
        return r < 0 ? -errno : r;
    }
    default:
        return -EINVAL;
    }
}

int shmnet_fcntl(int fd, int cmd, ...)
{
    va_list ap;
    long arg = 0;

    if (cmd == F_SETFL || cmd == F_SETFD) {
        va_start(ap, cmd);
        arg = va_arg(ap, int);
        va_end(ap);
    }
    return (int)WITH_SOCK(fd, s, do_fcntl(s, fd, cmd, arg));
}

/* ------------------------------------------------------------------ poll */

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
        if (rx_nonempty(s) || (shut & 1) ||
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

/* ------------------------------------------------------------------ preload support */

int shmnet__dup(int oldfd, int newfd)
{
    struct csock *s = fdt_lookup(oldfd); /* this reference becomes newfd's */
    int r;

    if (!s)
        return (int)ret_errno(-EBADF);
    __atomic_fetch_add(&s->fdrefs, 1, __ATOMIC_RELAXED);
    r = fdt_insert(newfd, s);
    if (r < 0) {
        __atomic_fetch_sub(&s->fdrefs, 1, __ATOMIC_RELAXED);
        sock_put(s);
    }
    return (int)ret_errno(r);
}

int shmnet__forget(int fd)
{
    return (int)ret_errno(fd_drop(fd, false));
}

void *shmnet__sock_ref(int fd)
{
    return fdt_lookup(fd);
}

void shmnet__sock_unref(void *sock)
{
    if (sock)
        sock_put(sock);
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

int64_t shmnet__spin_ns(void)
{
    return SPIN_NS;
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
    if (a && tls.att == a) {
        int ch = tls.ch;
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
            w = ppoll(k, m, tsp, mask);
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

/* ------------------------------------------------------------------ fork */

/* fork: the child continues the parent's session (docs/libshmnet.md: nginx's workers
 * accept on the master's listener). The region, the family area, the eventfds and the
 * control socket are inherited; the child gets a process slot of its own, reserved and
 * marked as a holder of every socket before the fork, so a parent that closes its copy
 * right after fork does not close the child's. The child's thread claims a channel of its
 * own on its first call. */
static int fork_slot = -1;
static struct attach *fork_att;

static void atfork_prepare(void)
{
    pthread_mutex_lock(&att_lock);
    pthread_rwlock_wrlock(&fdt_lock);
    fork_slot = -1;
    fork_att = att_cur && !att_dead(att_cur) && att_cur->proc_slot >= 0 ? att_cur : NULL;
    if (!fork_att)
        return;
    struct attach *a = fork_att;
    __atomic_store_n(&a->fam->forked, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < FAM_PROCS && fork_slot < 0; i++) {
        int32_t p = __atomic_load_n(&a->fam->proc_pid[i], __ATOMIC_ACQUIRE);
        if (p && (i == a->proc_slot || proc_alive(p)))
            continue;
        if (__atomic_compare_exchange_n(&a->fam->proc_pid[i], &p, -getpid(), false,
                                        __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
            fork_slot = i;
    }
    if (fork_slot < 0)
        return; /* more than FAM_PROCS processes: the child holds nothing (docs) */
    uint64_t bit = 1ull << fork_slot;
    /* A recycled slot: the previous process's holds are over. */
    for (uint32_t i = 0; i < a->nparts * a->nsocks; i++)
        if (__atomic_load_n(&a->fam->sock[i].holders, __ATOMIC_RELAXED) & bit)
            __atomic_fetch_and(&a->fam->sock[i].holders, ~bit, __ATOMIC_RELAXED);
    for (int p = 0; p < FDT_PAGES; p++) {
        for (int i = 0; fdt[p] && i < FDT_PAGE; i++) {
            struct csock *c = fdt[p][i];
            /* release: the bit is in place before the child exists. */
            if (c && c->att == a && !sock_closed(c)) {
                __atomic_fetch_or(&c->sp->holders, bit, __ATOMIC_RELEASE);
                for (int g = 0; g < grp_n(c); g++)
                    __atomic_fetch_or(&c->grp[g]->sp->holders, bit, __ATOMIC_RELEASE);
            }
        }
    }
}

static void atfork_parent(void)
{
    pthread_rwlock_unlock(&fdt_lock);
    pthread_mutex_unlock(&att_lock);
}

static void atfork_child(void)
{
    /* Only this thread exists in the child: the channel claims of the parent's threads
     * (this one's included) stay theirs. Drop our view of it without releasing it. */
    if (tls.att) {
        struct attach *t = tls.att;
        tls.att = NULL;
        att_unref(t);
    }
    if (fork_att) {
        fork_att->proc_slot = fork_slot;
        if (fork_slot >= 0)
            __atomic_store_n(&fork_att->fam->proc_pid[fork_slot], getpid(), __ATOMIC_RELEASE);
    }
    /* Re-initialised, not unlocked: the child's thread has a new tid, and a rwlock
     * write-locked under the parent's tid cannot be unlocked by it. */
    pthread_rwlock_init(&fdt_lock, NULL);
    pthread_mutex_init(&att_lock, NULL);
}

__attribute__((constructor)) static void shmnet_init(void)
{
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}
