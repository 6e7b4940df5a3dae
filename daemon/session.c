/* Client sessions, control-thread side: see session.h. */
#include "daemon/session.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "daemon/client.h"
#include "stack/tcp.h"
#include "daemon/daemon.h"
#include "daemon/log.h"
#include "shm/shm.h"

/* One region of a session, served by one worker (docs/workers.md). */
struct part {
    struct worker *w;
    void *mem;
    size_t size;
    bool added;       /* on the worker's client list */
    uint32_t orphans; /* connections left delivering when the process went (remove_fn) */
    struct client cl; /* used by the worker between add and remove, and by its orphans */
};

struct session {
    struct session *next, **pprev;
    struct daemon *d;
    int fd;
    ev_io io;
    int chan_efd[SHM_MAX_CHANNELS]; /* channel i's eventfd, shared by every part */
    uint32_t nparts;
    struct part part[]; /* part k on worker k */
};

struct sessions {
    struct session *head;
    unsigned n;
    /* Sessions of departed processes whose connections still deliver what was written
     * (orphans): their regions stay mapped until the last one is done. */
    struct session *orphans;
    ev_timer reap;
    uint32_t next_id;
    int state_fd;
    struct shm_state *state;
    size_t state_size;
};

static struct sessions *S(struct daemon *d)
{
    return d->sessions;
}

static void reap_cb(struct ev_loop *loop, ev_timer *t, int revents);

int sessions_init(struct daemon *d)
{
    struct sessions *ss = calloc(1, sizeof(*ss));
    if (!ss)
        return -ENOMEM;
    ss->state_size = (sizeof(struct shm_state) + 4095) & ~(size_t)4095;
    ss->state_fd = memfd_create("shmnet-state", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (ss->state_fd < 0 || ftruncate(ss->state_fd, (off_t)ss->state_size) < 0)
        goto fail;
    ss->state = mmap(NULL, ss->state_size, PROT_READ | PROT_WRITE, MAP_SHARED, ss->state_fd, 0);
    if (ss->state == MAP_FAILED) {
        ss->state = NULL;
        goto fail;
    }
    ss->state->magic = SHM_MAGIC;
    ss->state->version = SHM_LAYOUT_VERSION;
    ss->state->nworkers = d->nworkers;
    /* Clients may map it read-only only: FUTURE_WRITE forbids new writable mappings (ours
     * stays); SHRINK/GROW make its size a fact we can rely on. */
    if (fcntl(ss->state_fd, F_ADD_SEALS,
              F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL) < 0)
        goto fail;
    ss->next_id = 1;
    ev_init(&ss->reap, reap_cb);
    ss->reap.repeat = 0.1;
    ss->reap.data = d;
    d->sessions = ss;
    for (unsigned i = 0; i < d->nworkers; i++)
        worker_set_shm_sleeping(&d->workers[i], &ss->state->worker[i].sleeping);
    return 0;
fail : {
    int e = -errno;
    if (ss->state)
        munmap(ss->state, ss->state_size);
    if (ss->state_fd >= 0)
        close(ss->state_fd);
    free(ss);
    return e ? e : -EIO;
}
}

/* ---- worker-side steps (run through the mailbox) ---- */

static int add_fn(struct worker *w, void *arg)
{
    struct part *pt = arg;
    client_attach(&pt->cl, &w->st);
    pt->cl.next = w->clients;
    w->clients = &pt->cl;
    return 0;
}

static int remove_fn(struct worker *w, void *arg)
{
    struct part *pt = arg;
    struct client **pp = &w->clients;
    while (*pp && *pp != &pt->cl)
        pp = &(*pp)->next;
    if (*pp)
        *pp = pt->cl.next;
    int n = (int)pt->cl.nopen;
    pt->orphans = client_close_all(&pt->cl);
    return n; /* sockets closed, for the log */
}

static int abort_orphans_fn(struct worker *w, void *arg)
{
    struct part *pt = arg;
    client_abort_orphans(&pt->cl);
    return 0;
}

static void session_free(struct session *s)
{
    for (uint32_t i = 0; i < SHM_MAX_CHANNELS; i++)
        if (s->chan_efd[i] >= 0)
            close(s->chan_efd[i]);
    for (uint32_t k = 0; k < s->nparts; k++) {
        client_fini(&s->part[k].cl);
        if (s->part[k].mem)
            munmap(s->part[k].mem, s->part[k].size);
    }
    if (s->fd >= 0)
        close(s->fd);
    free(s);
}

/* Take the session's parts off their workers; false if one did not answer (then its
 * region stays mapped: that worker may still look at it). */
static bool session_remove(struct session *s, int *nclosed)
{
    bool ok = true;
    for (uint32_t k = 0; k < s->nparts; k++) {
        struct part *pt = &s->part[k];
        if (!pt->added)
            continue;
        int rc = worker_call(pt->w, remove_fn, pt, DAEMON_CALL_TIMEOUT_MS);
        if (rc < 0) {
            log_error("client %u: worker %u did not release it (%s); keeping its memory", pt->cl.id,
                      k, strerror(-rc));
            ok = false;
            continue;
        }
        pt->added = false;
        *nclosed += rc;
    }
    return ok;
}

static void session_detach(struct session *s)
{
    struct daemon *d = s->d;
    int n = 0;
    ev_io_stop(d->loop, &s->io);
    *s->pprev = s->next;
    if (s->next)
        s->next->pprev = s->pprev;
    S(d)->n--;
    if (!session_remove(s, &n))
        return; /* leaked rather than pulled away from a worker */
    uint32_t orphans = 0;
    for (uint32_t k = 0; k < s->nparts; k++)
        orphans += s->part[k].orphans;
    if (!orphans) {
        log_info_rl("client %u (pid %d) detached: %d sockets closed", s->part[0].cl.id,
                    (int)s->part[0].cl.pid, n);
        session_free(s);
        return;
    }
    log_info_rl("client %u (pid %d) detached: %d sockets closed, %u connections still delivering",
                s->part[0].cl.id, (int)s->part[0].cl.pid, n, orphans);
    /* The region, the eventfds and the session connection (client_break may still shut
     * it down) stay until then. */
    s->next = S(d)->orphans;
    S(d)->orphans = s;
    if (!ev_is_active(&S(d)->reap))
        ev_timer_again(d->loop, &S(d)->reap);
}

/* Free the sessions whose orphans are all done. */
static void reap_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct daemon *d = t->data;
    struct session **pp = &S(d)->orphans;
    while (*pp) {
        struct session *s = *pp;
        bool done = true;
        for (uint32_t k = 0; k < s->nparts; k++)
            done &= client_orphans_done(&s->part[k].cl);
        if (!done) {
            pp = &s->next;
            continue;
        }
        *pp = s->next;
        log_debug("client %u: its last orphaned connection is done", s->part[0].cl.id);
        session_free(s);
    }
    if (!S(d)->orphans)
        ev_timer_stop(loop, t);
}

static void session_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct session *s = io->data;
    char buf[256];
    ssize_t n = recv(s->fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    /* EOF (the process exited or was killed), an error, or bytes a session never sends. */
    if (n > 0)
        log_warn_rl("client %u: unexpected data on the session connection", s->part[0].cl.id);
    session_detach(s);
}

static void send_reply(int fd, const struct shm_attach_reply *r, const int *fds, int nfds)
{
    struct iovec iov = {.iov_base = (void *)r, .iov_len = sizeof(*r)};
    union {
        char buf[CMSG_SPACE(sizeof(int) * (1 + 2 * SHM_MAX_PARTS + SHM_MAX_CHANNELS))];
        struct cmsghdr align;
    } u;
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds > 0) {
        memset(&u, 0, sizeof(u));
        m.msg_control = u.buf;
        m.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    /* The connection is non-blocking; the reply is small and the buffer empty, so it goes
     * in one call or the client is gone (then the session ends at the first EOF). */
    if (sendmsg(fd, &m, MSG_NOSIGNAL) != (ssize_t)sizeof(*r))
        log_debug("attach: sendmsg: %s", strerror(errno));
}

void session_refuse(int fd, int err)
{
    struct shm_attach_reply r = {.result = err, .version = SHM_LAYOUT_VERSION};
    send_reply(fd, &r, NULL, 0);
}

/* Answer an attach with an error; the connection stays open (see attach_fail). Rate-limited:
 * a local user can repeat a refused attach as fast as it likes. */
static void attach_refuse(int fd, int err, const char *why, const struct ucred *cred)
{
    log_warn_rl("attach from pid %d uid %u refused: %s", (int)cred->pid, (unsigned)cred->uid, why);
    session_refuse(fd, err);
}

static void attach_fail(int fd, int err, const char *why, const struct ucred *cred)
{
    attach_refuse(fd, err, why, cred);
    close(fd);
}

/* Create part k's region (memfd, sealed, mapped) and client; the memfd in *memfd. */
static int part_init(struct session *s, uint32_t k, uint32_t id, const struct ucred *cred, int fd,
                     int *memfd)
{
    const struct conf *c = s->d->conf;
    struct part *pt = &s->part[k];
    uint32_t fifo = c->fifo_mb << 20;
    pt->w = &s->d->workers[k];
    pt->size = client_region_size(c->channels, c->max_sockets, fifo);
    *memfd = memfd_create("shmnet-client", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (*memfd < 0 || ftruncate(*memfd, (off_t)pt->size) < 0)
        return -errno;
    /* The client must not shrink the file under our mapping (SIGBUS in the daemon). */
    if (fcntl(*memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
        return -errno;
    pt->mem = mmap(NULL, pt->size, PROT_READ | PROT_WRITE, MAP_SHARED, *memfd, 0);
    if (pt->mem == MAP_FAILED) {
        pt->mem = NULL;
        return -errno;
    }
    int rc = client_init(&pt->cl, pt->mem, pt->size, id, k, c->channels, c->max_sockets, fifo,
                         c->rcvbuf, c->sndbuf);
    if (rc < 0)
        return rc;
    pt->cl.part = k;
    pt->cl.nparts = s->nparts;
    pt->cl.pid = cred->pid;
    pt->cl.uid = cred->uid;
    client_set_bind_policy(&pt->cl, c->unprivileged_port_start);
    pt->cl.sess_fd = fd;
    memcpy(pt->cl.chan_efd, s->chan_efd, sizeof(s->chan_efd));
    return 0;
}

void session_attach(struct daemon *d, int fd, const struct ucred *cred)
{
    struct sessions *ss = S(d);
    const struct conf *c = d->conf;
    int fds[1 + 2 * SHM_MAX_PARTS + SHM_MAX_CHANNELS], nfds = 0, rc = 0;
    int memfd[SHM_MAX_PARTS];
    if (!ss) {
        attach_fail(fd, -ENOTSUP, "sessions unavailable", cred);
        return;
    }
    if (ss->n >= c->max_clients) {
        attach_fail(fd, -EUSERS, "clients.max_clients reached", cred);
        return;
    }
    /* One local user must not take every session from the others, nor from root: a
     * limit per uid, and the last slots kept for root (as for the control socket). */
    if (cred->uid != 0) {
        uint32_t reserve = c->max_clients / 16 ? c->max_clients / 16 : 1, mine = 0;
        if (ss->n + reserve >= c->max_clients) {
            attach_fail(fd, -EUSERS, "clients.max_clients reached (the last slots are root's)",
                        cred);
            return;
        }
        for (struct session *o = ss->head; o; o = o->next)
            mine += o->part[0].cl.uid == cred->uid;
        if (mine >= c->max_per_uid) {
            attach_fail(fd, -EUSERS, "clients.max_per_uid reached for this uid", cred);
            return;
        }
    }
    /* One part per worker: a client reaches sockets on every worker (docs/workers.md). */
    uint32_t np = d->nworkers ? d->nworkers : 1;
    _Static_assert(SHM_MAX_PARTS >= 8, "a part for each of daemon.workers' 8 workers");
    struct session *s = calloc(1, sizeof(*s) + np * sizeof(struct part));
    if (!s) {
        attach_fail(fd, -ENOMEM, "out of memory", cred);
        return;
    }
    s->d = d;
    s->fd = -1;
    s->nparts = np;
    for (uint32_t k = 0; k < np; k++)
        memfd[k] = -1;
    for (uint32_t i = 0; i < SHM_MAX_CHANNELS; i++)
        s->chan_efd[i] = -1;
    for (uint32_t i = 0; i < c->channels; i++) {
        s->chan_efd[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (s->chan_efd[i] < 0) {
            rc = -errno;
            goto fail;
        }
    }
    for (uint32_t k = 0; k < np; k++) {
        rc = part_init(s, k, ss->next_id, cred, fd, &memfd[k]);
        if (rc < 0)
            goto fail;
        fds[nfds++] = memfd[k];
    }
    fds[nfds++] = ss->state_fd;
    for (uint32_t k = 0; k < np; k++)
        fds[nfds++] = s->part[k].w->wake_fd; /* worker k's doorbell */
    for (uint32_t i = 0; i < c->channels; i++)
        fds[nfds++] = s->chan_efd[i];
    for (uint32_t k = 0; k < np; k++) {
        rc = worker_call(s->part[k].w, add_fn, &s->part[k], DAEMON_CALL_TIMEOUT_MS);
        if (rc < 0)
            goto fail;
        s->part[k].added = true;
    }
    struct shm_attach_reply r = {
        .result = 0,
        .version = SHM_LAYOUT_VERSION,
        .region_size = (uint32_t)s->part[0].size,
        .state_size = (uint32_t)ss->state_size,
        .nchannels = c->channels,
        .client_id = ss->next_id,
        .nparts = np,
        /* New sockets take turns over the workers by session (docs/workers.md). */
        .home = ss->next_id % np,
    };
    if (++ss->next_id == STACK_GROUP_ORPHANED) /* a group key no session has */
        ss->next_id = 1;
    s->fd = fd;
    s->next = ss->head;
    if (s->next)
        s->next->pprev = &s->next;
    s->pprev = &ss->head;
    ss->head = s;
    ss->n++;
    send_reply(fd, &r, fds, nfds);
    for (uint32_t k = 0; k < np; k++)
        close(memfd[k]); /* the mappings stay */
    ev_io_init(&s->io, session_io_cb, fd, EV_READ);
    s->io.data = s;
    ev_io_start(d->loop, &s->io);
    /* Rate-limited like the detach line: processes may come and go by the thousand. */
    log_info_rl("client %u attached: pid %d uid %u, %u channels, %u part(s) of %u sockets and "
                "%u MiB of fifos",
                r.client_id, (int)cred->pid, (unsigned)cred->uid, c->channels, np, c->max_sockets,
                c->fifo_mb);
    return;
fail:
    for (uint32_t k = 0; k < np; k++)
        if (memfd[k] >= 0)
            close(memfd[k]);
    {
        int n = 0;
        if (!session_remove(s, &n)) {
            /* Leaked: a worker may still look at it, and its parts name fd as their
             * session connection (client_break shuts it down), so fd stays open too. */
            attach_refuse(fd, rc, strerror(-rc), cred);
            return;
        }
    }
    session_free(s);
    attach_fail(fd, rc, strerror(-rc), cred);
}

void sessions_fini(struct daemon *d)
{
    struct sessions *ss = S(d);
    if (!ss)
        return;
    while (ss->head)
        session_detach(ss->head);
    /* Shutdown: the orphans still delivering are reset (the stacks go away next). */
    ev_timer_stop(d->loop, &ss->reap);
    while (ss->orphans) {
        struct session *s = ss->orphans;
        bool ok = true;
        ss->orphans = s->next;
        for (uint32_t k = 0; k < s->nparts; k++)
            if (s->part[k].orphans && worker_call(s->part[k].w, abort_orphans_fn, &s->part[k],
                                                  DAEMON_CALL_TIMEOUT_MS) < 0)
                ok = false;
        if (ok)
            session_free(s);
    }
    for (unsigned i = 0; i < d->nworkers; i++)
        worker_set_shm_sleeping(&d->workers[i], NULL);
    munmap(ss->state, ss->state_size);
    close(ss->state_fd);
    free(ss);
    d->sessions = NULL;
}

struct report_arg {
    struct sessions *ss;
    struct strbuf *out;
    bool sockets;
};

/* One report into out, straight into its buffer, retried with a larger one while it may
 * have been cut short (a line is under REPORT_LINE bytes): 100000 connections fit. */
#define REPORT_LINE 256
#define REPORT_MAX  (256u << 20)

typedef size_t (*report_fn_t)(const void *obj, char *buf, size_t cap);

static size_t rep_client(const void *o, char *b, size_t cap)
{
    return client_report(o, b, cap);
}
static size_t rep_sockets(const void *o, char *b, size_t cap)
{
    return client_report_sockets(o, b, cap);
}
static size_t rep_tcp(const void *o, char *b, size_t cap)
{
    return tcp_report((struct stack *)o, b, cap);
}

static void report_into(struct strbuf *out, report_fn_t fn, const void *obj)
{
    for (size_t cap = 65536; cap <= REPORT_MAX; cap *= 4) {
        char *b = sb_reserve(out, cap);
        if (!b)
            return; /* out->oom tells the reader */
        size_t n = fn(obj, b, cap);
        if (n + REPORT_LINE < cap || cap == REPORT_MAX) {
            out->len += n;
            if (out->len < out->cap)
                out->buf[out->len] = 0;
            return;
        }
    }
}

static int report_fn(struct worker *w, void *arg)
{
    struct report_arg *a = arg;
    for (struct client *cl = w->clients; cl; cl = cl->next)
        report_into(a->out, a->sockets ? rep_sockets : rep_client, cl);
    if (a->sockets) /* every TCP connection of the worker, like `ss -tan` */
        report_into(a->out, rep_tcp, &w->st);
    return 0;
}

int sessions_report(struct daemon *d, struct strbuf *out, bool sockets)
{
    struct report_arg a = {.ss = S(d), .out = out, .sockets = sockets};
    if (!a.ss)
        return -ENOTSUP;
    for (unsigned i = 0; i < d->nworkers; i++) {
        int rc = worker_call(&d->workers[i], report_fn, &a, DAEMON_CALL_TIMEOUT_MS);
        if (rc < 0)
            return rc;
    }
    return 0;
}
