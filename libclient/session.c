/* The session with shmnetd: attach over the control socket, the mapped region and state
 * page, liveness, and the family area that forked processes share. */
#include "libclient/client_impl.h"

#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

pthread_mutex_t att_lock = PTHREAD_MUTEX_INITIALIZER;
struct attach *att_cur;
static int att_warned; /* atomic: the "cannot reach" line was printed */

/* A robust, process-shared mutex: a process of the family that dies holding it does not
 * wedge the others. */
void fam_mutex_init(pthread_mutex_t *m)
{
    pthread_mutexattr_t at;

    pthread_mutexattr_init(&at);
    pthread_mutexattr_setpshared(&at, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&at, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(m, &at);
    pthread_mutexattr_destroy(&at);
}

/* Lock; if the holder died, take the state it left (callers resync what they need). */
int fam_lock(pthread_mutex_t *m)
{
    int r = pthread_mutex_lock(m);

    if (r == EOWNERDEAD) {
        pthread_mutex_consistent(m);
        return 1;
    }
    return 0;
}

/* Where process pid's image lies in memory (its code and its stack), folded into
 * one word, from /proc/PID/stat: exec changes it (a new image, placed anew). 0 when
 * unknown: the fields read as 0 for a process we may not trace (not dumpable). With
 * zombie (may be NULL): whether it has exited and only waits to be reaped. */
static uint64_t proc_stat(int32_t pid, bool *zombie)
{
    char path[64], buf[1024];
    uint64_t img = 0;
    ssize_t n;
    int fd;

    /* pid 0 is this process: a forked child registers itself before it may call anything
     * but async-signal-safe functions, so no formatting there. */
    if (pid)
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    fd = open(pid ? path : "/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    const char *p = strrchr(buf, ')'); /* "pid (comm) S ...": field 3 follows */
    if (!p || p[1] != ' ')
        return 0;
    if (zombie)
        *zombie = p[2] == 'Z' || p[2] == 'X';
    p += 2;
    /* proc(5): field 26 startcode, 28 startstack; both fixed for the life of an image
     * (unlike arg_start, which a process renaming itself may move). */
    for (int field = 3; *p && field <= 28; field++) {
        if (field == 26 || field == 28) {
            uint64_t v = 0;
            for (const char *d = p; *d >= '0' && *d <= '9'; d++)
                v = v * 10 + (uint64_t)(*d - '0');
            img = img * 1000003u ^ v;
        }
        p = strchr(p, ' ');
        if (!p)
            break;
        p++;
    }
    return img;
}

/* This process takes family slot `slot`: its image first, then its pid (release: a
 * reader that sees the pid sees the image that goes with it). */
void proc_register(struct fam *f, int slot)
{
    __atomic_store_n(&f->proc_img[slot], proc_stat(0, NULL), __ATOMIC_RELAXED);
    __atomic_store_n(&f->proc_pid[slot], getpid(), __ATOMIC_RELEASE);
}

/* Is the process in family slot `slot` still one of us? Not if it has gone, is a zombie
 * (its fds are), or has exec'd another image: the exec closed its placeholders (they are
 * close-on-exec), so it holds none of the family's sockets any more. */
bool proc_alive(const struct fam *f, int slot)
{
    int32_t pid = __atomic_load_n(&f->proc_pid[slot], __ATOMIC_ACQUIRE);
    uint64_t img = __atomic_load_n(&f->proc_img[slot], __ATOMIC_RELAXED), now;
    bool zombie = false;

    if (pid < 0) /* reserved by a forker for a child that has not started yet */
        return true;
    if (pid == 0)
        return false;
    if (__atomic_load_n(&sandboxed, __ATOMIC_RELAXED))
        return true; /* kill() and /proc may be out of bounds: assume it lives */
    if (kill(pid, 0) < 0 && errno == ESRCH)
        return false;
    now = proc_stat(pid, &zombie);
    return !zombie && !(img && now && img != now);
}

/* Does any process of holders (a bit per process slot) still run, besides me? */
bool holders_alive(const struct attach *a, uint64_t holders)
{
    while (holders) {
        int i = __builtin_ctzll(holders);
        holders &= holders - 1;
        if (i != a->proc_slot && proc_alive(a->fam, i))
            return true;
    }
    return false;
}

uint64_t proc_bit(const struct attach *a)
{
    return a->proc_slot >= 0 ? 1ull << a->proc_slot : 0;
}

/* Can thread tid of process pid still use its channel? */
bool thread_alive(int32_t pid, int32_t tid)
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
    proc_register(a->fam, 0);
    a->proc_slot = 0;
    return 0;
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

void att_unref(struct attach *a)
{
    /* acq_rel: every holder's use of the mapping happens before the last one unmaps it. */
    if (__atomic_sub_fetch(&a->refs, 1, __ATOMIC_ACQ_REL) == 0)
        att_free(a);
}

static void att_mark_dead(struct attach *a)
{
    /* release: pairs with att_dead's acquire (nothing else to publish, but cheap). */
    __atomic_store_n(&a->dead, 1, __ATOMIC_RELEASE);
}

/* The control socket reported revents: hang-up, error or EOF ends the session. The daemon
 * sends nothing after the attach reply; stray bytes are read and ignored. */
void att_ctl_event(struct attach *a, short revents)
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
bool att_alive(struct attach *a, bool force)
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
int att_get(struct attach **out)
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
