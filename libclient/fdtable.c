/* The fd table (fd -> socket), the socket object's life: created behind a placeholder fd,
 * released with the last name of the last process holding it; and dup for the interposer. */
#include "libclient/client_impl.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

static struct csock **fdt[FDT_PAGES];
static pthread_rwlock_t fdt_lock = PTHREAD_RWLOCK_INITIALIZER;

static void csock_free(struct csock *s)
{
    for (int i = 0; i < grp_n(s); i++)
        sock_put(s->grp[i]);
    free(s->opts);
    att_unref(s->att);
    free(s);
}

void sock_put(struct csock *s)
{
    /* acq_rel: all users' accesses happen before the free. */
    if (__atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) == 0)
        csock_free(s);
}

struct csock *fdt_lookup(int fd)
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

static void name_gone(struct csock *s);

static int fdt_insert(int fd, struct csock *s)
{
    struct csock *stale = NULL;
    int r = 0;

    if (fd >= FDT_PAGE * FDT_PAGES)
        return -EMFILE;
    pthread_rwlock_wrlock(&fdt_lock);
    struct csock ***page = &fdt[fd / FDT_PAGE];
    if (!*page)
        *page = calloc(FDT_PAGE, sizeof(**page));
    if (*page) {
        stale = (*page)[fd % FDT_PAGE];
        (*page)[fd % FDT_PAGE] = s;
    } else {
        r = -ENOMEM;
    }
    pthread_rwlock_unlock(&fdt_lock);
    /* The kernel gave out this number again, so the placeholder it named was closed
     * behind our back (a raw close system call): that name of the old socket is gone. */
    if (stale)
        name_gone(stale);
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
int sock_get(int fd, struct csock **out)
{
    *out = fdt_lookup(fd);
    if (*out)
        return 0;
    if (fd < 0 || fcntl(fd, F_GETFD) < 0)
        return -EBADF;
    return -ENOTSOCK;
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
int csock_new(struct attach *a, struct part *pt, uint32_t h, int type, bool nonblock, int *fdp,
              struct csock **out)
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
int csock_make(struct attach *a, struct part *pt, uint32_t h, int type, bool nonblock,
               struct csock **out)
{
    int fd = -1;
    int r = csock_new(a, pt, h, type, nonblock, &fd, out);
    return r < 0 ? r : fd;
}

/* Send the daemon the close of handle h (a socket this family no longer holds). With
 * async the request is posted and not waited for: requests of a channel run in order,
 * and the daemon runs what an exiting process left in its rings (drain_requests), so
 * only the port-freeing closes (listeners, bound or datagram sockets, whose port another
 * thread may bind right after close returns) need the round trip. */
void close_handle(struct attach *a, struct part *pt, uint32_t h, bool async)
{
    struct shm_req req = {.op = SHM_OP_CLOSE, .handle = h};
    struct shm_cpl cpl = {0};

    att_call(a, pt, &req, async ? NULL : &cpl);
}

/* The listener s goes (closed = true: in the daemon too; else only this process's hold). */
void members_release(struct csock *s, uint64_t me, bool closed)
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
void fam_sweep(struct attach *a)
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
/* One name (fd) of s went away: the socket goes with its last one. Drops the table's
 * reference. */
static void name_gone(struct csock *s)
{
    if (__atomic_sub_fetch(&s->fdrefs, 1, __ATOMIC_ACQ_REL) == 0)
        sock_release(s);
    sock_put(s);
}

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

/* fork (fork.c): the table is write-locked across fork, so no thread changes it while
 * the child's holds are marked and the child inherits a consistent copy. */
void fdt_fork_lock(void)
{
    pthread_rwlock_wrlock(&fdt_lock);
}

void fdt_fork_unlock(void)
{
    pthread_rwlock_unlock(&fdt_lock);
}

/* In the child: re-initialised, not unlocked: the child's thread has a new tid, and a
 * rwlock write-locked under the parent's tid cannot be unlocked by it. */
void fdt_fork_reinit(void)
{
    pthread_rwlock_init(&fdt_lock, NULL);
}

/* Mark process bit as a holder of every open socket of session a (and of a listener's
 * members), with the table locked. */
void fdt_fork_hold(struct attach *a, uint64_t bit)
{
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
