/* libshmnet (libclient/): argument validation and behaviour without a daemon, and
 * the whole client side against a fake daemon thread that implements the shm.h contract
 * (attach over a unix socket, memfd region, request/completion rings, a loopback UDP
 * "stack" that moves TX records of one socket into the RX fifo of the socket bound to the
 * destination port). Criterion runs every test in its own process, so the library's
 * global state starts fresh each time. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* The library's internals (the current session, its channel claims). */
#include "libclient/client_impl.h"

/* ------------------------------------------------------------------ the fake daemon */

#define F_NCH          4
#define F_NSOCK        16
#define F_FIFO         65536u
#define F_ADDR         0x0a000001u /* 10.0.0.1: every socket's local address */
#define F_PORT_REFUSED 7           /* datagrams to this port set ECONNREFUSED on the sender */

struct fsock {
    uint32_t gen, laddr, paddr, rx_tail, tx_head;
    uint16_t lport, pport;
};

struct fake {
    char dir[64], path[108];
    int lfd, cfd, doorbell, chfd[F_NCH];
    struct shm_region *reg;
    struct shm_state *st;
    size_t reg_size;
    pthread_t thr;
    int stop, die, pause_tx; /* atomics set by the test */
    int attach_result;       /* reply with this error instead */
    uint32_t req_head[F_NCH], cpl_tail[F_NCH], gen;
    struct fsock s[F_NSOCK];
    int nreq[SHM_OP_COUNT]; /* atomic counters */
    int ndelivered;
};

static struct shm_channel *f_chan(struct fake *f, int i)
{
    return (struct shm_channel *)((uint8_t *)f->reg + f->reg->chan_off) + i;
}

static struct shm_sock *f_sock(struct fake *f, int i)
{
    return (struct shm_sock *)((uint8_t *)f->reg + f->reg->sock_off) + i;
}

static void f_wake_chan(struct fake *f, int i)
{
    uint64_t one = 1;

    /* seq_cst pairs with the client's client_sleeping store + fence. */
    if (__atomic_load_n(&f_chan(f, i)->client_sleeping, __ATOMIC_SEQ_CST))
        cr_assert_eq(write(f->chfd[i], &one, 8), 8);
}

static void f_wake_waiters(struct fake *f, int i)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST); /* our fifo/so_error update before the loads */
    uint64_t w = __atomic_load_n(&f_sock(f, i)->waiters, __ATOMIC_SEQ_CST);
    for (int c = 0; c < F_NCH; c++)
        if (w & (1ull << c))
            f_wake_chan(f, c);
}

static int f_find_port(struct fake *f, uint16_t port)
{
    for (int i = 0; i < F_NSOCK; i++)
        if (f->s[i].gen && f->s[i].lport == port)
            return i;
    return -1;
}

static void f_autobind(struct fake *f, int i)
{
    if (!f->s[i].lport) {
        f->s[i].lport = (uint16_t)(40000 + i);
        f->s[i].laddr = F_ADDR;
    }
}

static void f_deliver(struct fake *f, int from, uint32_t daddr, uint16_t dport, const uint8_t *p,
                      uint32_t len)
{
    int to = f_find_port(f, dport);

    if (dport == F_PORT_REFUSED && f->s[from].pport == F_PORT_REFUSED) {
        __atomic_store_n(&f_sock(f, from)->so_error, ECONNREFUSED, __ATOMIC_RELAXED);
        f_wake_waiters(f, from);
        return;
    }
    if (to < 0)
        return;
    struct shm_sock *d = f_sock(f, to);
    struct shm_dgram h = {.len = len, .addr = f->s[from].laddr, .port = f->s[from].lport};
    uint32_t head = shm_load_acq(&d->rx_head);
    if (shm_dgram_write((uint8_t *)f->reg + d->rx_off, d->rx_size, &f->s[to].rx_tail, head, &h, p,
                        NULL, 0) < 0)
        return; /* RX full: dropped, as UDP does */
    shm_store_rel(&d->rx_tail, f->s[to].rx_tail);
    __atomic_add_fetch(&f->ndelivered, 1, __ATOMIC_RELAXED);
    f_wake_waiters(f, to);
}

static void f_drain_tx(struct fake *f, int i)
{
    struct shm_sock *ss = f_sock(f, i);
    static uint8_t buf[SHM_DGRAM_MAX];

    /* Clear the kick before reading the tail (seq_cst, see the client's send path). */
    __atomic_exchange_n(&ss->tx_kick, 0, __ATOMIC_SEQ_CST);
    uint32_t tail = shm_load_acq(&ss->tx_tail);
    for (;;) {
        struct shm_dgram h;
        uint32_t pos, next;
        int n = shm_dgram_peek((uint8_t *)f->reg + ss->tx_off, ss->tx_size, f->s[i].tx_head, tail,
                               &h, &pos, &next);
        if (n < 0) {
            cr_assert_eq(n, -EAGAIN, "bad TX record");
            break;
        }
        shm_fifo_get((uint8_t *)f->reg + ss->tx_off, ss->tx_size, pos, buf, (uint32_t)n);
        f->s[i].tx_head = next;
        f_autobind(f, i);
        if (h.addr == 0 && h.port == 0)
            f_deliver(f, i, f->s[i].paddr, f->s[i].pport, buf, (uint32_t)n);
        else
            f_deliver(f, i, h.addr, h.port, buf, (uint32_t)n);
    }
    shm_store_rel(&ss->tx_head, f->s[i].tx_head);
    f_wake_waiters(f, i);
}

static int f_slot(struct fake *f, uint32_t handle)
{
    uint32_t i = shm_handle_idx(handle);
    return i < F_NSOCK && f->s[i].gen && f->s[i].gen == shm_handle_gen(handle) ? (int)i : -1;
}

static void f_handle(struct fake *f, const struct shm_req *q, struct shm_cpl *c)
{
    int i = q->op == SHM_OP_SOCKET || q->op == SHM_OP_NOP ? 0 : f_slot(f, q->handle);

    __atomic_add_fetch(&f->nreq[q->op < SHM_OP_COUNT ? q->op : 0], 1, __ATOMIC_RELAXED);
    c->result = 0;
    if (i < 0) {
        c->result = -EBADF;
        return;
    }
    switch (q->op) {
    case SHM_OP_NOP:
        break;
    case SHM_OP_SOCKET:
        c->result = -EMFILE;
        for (int k = 0; k < F_NSOCK; k++) {
            if (f->s[k].gen)
                continue;
            struct shm_sock *ss = f_sock(f, k);
            f->s[k] = (struct fsock){.gen = ++f->gen};
            memset(ss, 0, sizeof(*ss));
            ss->type = (uint32_t)q->arg0;
            ss->rx_off = f->reg->fifo_off + (uint32_t)k * 2 * F_FIFO;
            ss->rx_size = F_FIFO;
            ss->tx_off = ss->rx_off + F_FIFO;
            ss->tx_size = F_FIFO;
            ss->gen = f->s[k].gen;
            c->result = (int32_t)shm_handle((uint32_t)k, f->s[k].gen);
            break;
        }
        break;
    case SHM_OP_BIND:
        if (f->s[i].lport) {
            c->result = -EINVAL;
        } else if (q->port && f_find_port(f, q->port) >= 0) {
            c->result = -EADDRINUSE;
        } else {
            f->s[i].lport = q->port ? q->port : (uint16_t)(40000 + i);
            f->s[i].laddr = q->addr ? q->addr : F_ADDR;
        }
        break;
    case SHM_OP_CONNECT:
        f_autobind(f, i);
        f->s[i].paddr = q->addr; /* 0/0 dissolves */
        f->s[i].pport = q->port;
        break;
    case SHM_OP_CLOSE:
        f->s[i].gen = 0;
        f_sock(f, i)->gen = 0;
        break;
    case SHM_OP_TX:
        if (!__atomic_load_n(&f->pause_tx, __ATOMIC_ACQUIRE))
            f_drain_tx(f, i);
        break;
    case SHM_OP_GETSOCKNAME:
        c->addr = f->s[i].laddr;
        c->port = f->s[i].lport;
        break;
    case SHM_OP_GETPEERNAME:
        if (!f->s[i].pport)
            c->result = -ENOTCONN;
        c->addr = f->s[i].paddr;
        c->port = f->s[i].pport;
        break;
    case SHM_OP_GETSOCKOPT:
        if (q->arg0 == SOL_SOCKET && q->arg1 == SO_ERROR) {
            int e = __atomic_exchange_n(&f_sock(f, i)->so_error, 0, __ATOMIC_RELAXED);
            memcpy(c->opt, &e, sizeof(e));
            c->optlen = sizeof(e);
        } else {
            c->result = -ENOPROTOOPT;
        }
        break;
    case SHM_OP_SETSOCKOPT:
        c->result = q->arg0 == SOL_SOCKET && q->arg1 == SO_REUSEADDR ? 0 : -ENOPROTOOPT;
        break;
    case SHM_OP_SHUTDOWN:
        c->result = f->s[i].pport ? 0 : -ENOTCONN;
        break;
    default:
        c->result = -EOPNOTSUPP;
    }
}

static void f_setup_region(struct fake *f)
{
    uint32_t chan_off = 4096, sock_off = chan_off + F_NCH * sizeof(struct shm_channel);
    uint32_t fifo_off = (sock_off + F_NSOCK * sizeof(struct shm_sock) + 4095) & ~4095u;
    int rfd = memfd_create("fake-region", MFD_CLOEXEC), sfd = memfd_create("fake-state", 0);

    f->reg_size = fifo_off + F_NSOCK * 2 * F_FIFO;
    cr_assert(rfd >= 0 && sfd >= 0);
    cr_assert_eq(ftruncate(rfd, (off_t)f->reg_size), 0);
    cr_assert_eq(ftruncate(sfd, sizeof(struct shm_state)), 0);
    f->reg = mmap(NULL, f->reg_size, PROT_READ | PROT_WRITE, MAP_SHARED, rfd, 0);
    f->st = mmap(NULL, sizeof(struct shm_state), PROT_READ | PROT_WRITE, MAP_SHARED, sfd, 0);
    cr_assert(f->reg != MAP_FAILED && f->st != MAP_FAILED);
    *f->reg = (struct shm_region){.magic = SHM_MAGIC,
                                  .version = SHM_LAYOUT_VERSION,
                                  .size = (uint32_t)f->reg_size,
                                  .client_id = 1,
                                  .nchannels = F_NCH,
                                  .chan_off = chan_off,
                                  .nsocks = F_NSOCK,
                                  .sock_off = sock_off,
                                  .fifo_off = fifo_off,
                                  .fifo_size = F_NSOCK * 2 * F_FIFO,
                                  .worker = 0};
    f->st->magic = SHM_MAGIC;
    f->st->version = SHM_LAYOUT_VERSION;
    f->st->nworkers = 1;
    f->doorbell = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    for (int i = 0; i < F_NCH; i++)
        f->chfd[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

    /* The reply: region, state, doorbell, channels. */
    struct shm_attach_reply rep = {.result = 0,
                                   .version = SHM_LAYOUT_VERSION,
                                   .region_size = (uint32_t)f->reg_size,
                                   .state_size = sizeof(struct shm_state),
                                   .nchannels = F_NCH,
                                   .client_id = 1,
                                   .nparts = 1};
    int fds[3 + F_NCH] = {rfd, sfd, f->doorbell};
    for (int i = 0; i < F_NCH; i++)
        fds[3 + i] = f->chfd[i];
    union {
        char buf[CMSG_SPACE(sizeof(fds))];
        struct cmsghdr a;
    } cm;
    struct iovec iov = {.iov_base = &rep, .iov_len = sizeof(rep)};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (f->attach_result) {
        rep.result = f->attach_result;
    } else {
        mh.msg_control = cm.buf;
        mh.msg_controllen = sizeof(cm.buf);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(fds));
        memcpy(CMSG_DATA(c), fds, sizeof(fds));
    }
    cr_assert_eq(sendmsg(f->cfd, &mh, MSG_NOSIGNAL), (ssize_t)sizeof(rep));
    close(rfd);
    close(sfd);
}

static void *f_main(void *arg)
{
    struct fake *f = arg;
    char line[32] = {0};

    f->cfd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
    cr_assert_geq(f->cfd, 0);
    /* The library sends "attach <layout version>", which daemon/ctl.c checks (shm.h's
     * SHM_ATTACH_LINE still says 1: reported). */
    char want[32];
    snprintf(want, sizeof(want), "attach %u\n", SHM_LAYOUT_VERSION);
    cr_assert_eq(recv(f->cfd, line, sizeof(line) - 1, 0), (ssize_t)strlen(want));
    cr_assert_str_eq(line, want);
    f_setup_region(f);
    if (f->attach_result) {
        close(f->cfd);
        return NULL;
    }
    while (!__atomic_load_n(&f->stop, __ATOMIC_ACQUIRE) &&
           !__atomic_load_n(&f->die, __ATOMIC_ACQUIRE)) {
        uint64_t pend = __atomic_exchange_n(&f->reg->req_pending, 0, __ATOMIC_ACQUIRE);
        for (int ch = 0; ch < F_NCH; ch++) {
            struct shm_req q;
            if (!(pend & (1ull << ch)))
                continue;
            while (shm_req_pop_checked(f_chan(f, ch), &f->req_head[ch], &q) > 0) {
                struct shm_cpl c = {.seq = q.seq, .handle = q.handle};
                f_handle(f, &q, &c);
                cr_assert_eq(shm_cpl_push_checked(f_chan(f, ch), &f->cpl_tail[ch], &c), 0);
                __atomic_thread_fence(__ATOMIC_SEQ_CST);
                f_wake_chan(f, ch);
            }
        }
        if (!__atomic_load_n(&f->pause_tx, __ATOMIC_ACQUIRE))
            for (int i = 0; i < F_NSOCK; i++) /* TX kicks that arrived while paused */
                if (f->s[i].gen && __atomic_load_n(&f_sock(f, i)->tx_kick, __ATOMIC_SEQ_CST))
                    f_drain_tx(f, i);
        if (pend)
            continue;
        /* Sleep: announce, re-check (Dekker with the client's chan_kick), wait. */
        __atomic_store_n(&f->st->worker[0].sleeping, 1, __ATOMIC_SEQ_CST);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        if (!__atomic_load_n(&f->reg->req_pending, __ATOMIC_SEQ_CST)) {
            struct pollfd p[2] = {{.fd = f->doorbell, .events = POLLIN},
                                  {.fd = f->cfd, .events = POLLIN}};
            uint64_t v;
            poll(p, 2, 20);
            if (p[0].revents && read(f->doorbell, &v, 8) < 0) {
            }
            if (p[1].revents) /* the client went away */
                __atomic_store_n(&f->stop, 1, __ATOMIC_RELEASE);
        }
        __atomic_store_n(&f->st->worker[0].sleeping, 0, __ATOMIC_RELAXED);
    }
    close(f->cfd); /* death or end of test: the client sees the hang-up */
    return NULL;
}

static struct fake *fake_start(const char *reuse_dir, int attach_result)
{
    struct fake *f = calloc(1, sizeof(*f));
    struct sockaddr_un sun = {.sun_family = AF_UNIX};

    cr_assert_not_null(f);
    if (reuse_dir) {
        snprintf(f->dir, sizeof(f->dir), "%s", reuse_dir);
    } else {
        snprintf(f->dir, sizeof(f->dir), "/tmp/shmnet-lc-XXXXXX");
        cr_assert_not_null(mkdtemp(f->dir));
    }
    snprintf(f->path, sizeof(f->path), "%s/d.sock", f->dir);
    unlink(f->path);
    f->attach_result = attach_result;
    f->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    memcpy(sun.sun_path, f->path, strlen(f->path) + 1);
    cr_assert_eq(bind(f->lfd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    cr_assert_eq(listen(f->lfd, 4), 0);
    setenv(SHM_SOCKET_ENV, f->path, 1);
    cr_assert_eq(pthread_create(&f->thr, NULL, f_main, f), 0);
    return f;
}

/* kill: the daemon "dies" (thread ends, control connection closed). */
static void fake_stop(struct fake *f, bool kill)
{
    __atomic_store_n(kill ? &f->die : &f->stop, 1, __ATOMIC_RELEASE);
    pthread_join(f->thr, NULL);
    close(f->lfd);
    unlink(f->path);
    if (f->reg) {
        munmap(f->reg, f->reg_size);
        munmap(f->st, sizeof(struct shm_state));
        close(f->doorbell);
        for (int i = 0; i < F_NCH; i++)
            close(f->chfd[i]);
    }
}

static void fake_free(struct fake *f)
{
    rmdir(f->dir);
    free(f);
}

/* ------------------------------------------------------------------ helpers */

static struct sockaddr_in sin4(uint32_t addr, uint16_t port)
{
    struct sockaddr_in s = {.sin_family = AF_INET};
    s.sin_addr.s_addr = htonl(addr);
    s.sin_port = htons(port);
    return s;
}

static int64_t ms_since(int64_t t0)
{
    return ((int64_t)clock_mono_ns() - t0) / 1000000;
}

static int udp_bound(uint16_t port)
{
    int fd = shmnet_socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = sin4(0, port);

    cr_assert_geq(fd, 0, "socket: %s", strerror(errno));
    cr_assert_eq(shmnet_bind(fd, (struct sockaddr *)&a, sizeof(a)), 0, "bind: %s", strerror(errno));
    return fd;
}

/* ------------------------------------------------------------------ without a daemon */

Test(libclient, version)
{
    cr_assert_str_eq(shmnet_version(), "0.1.0");
}

Test(libclient, no_daemon_econnrefused_once)
{
    char tmpl[] = "/tmp/shmnet-lc-errXXXXXX", buf[512] = {0};
    int efd = mkstemp(tmpl), saved = dup(2);

    setenv(SHM_SOCKET_ENV, "/nonexistent/shmnetd.sock", 1);
    dup2(efd, 2);
    int64_t t0 = (int64_t)clock_mono_ns();
    int r1 = shmnet_socket(AF_INET, SOCK_DGRAM, 0), e1 = errno;
    int r2 = shmnet_socket(AF_INET, SOCK_DGRAM, 0), e2 = errno;
    dup2(saved, 2);
    cr_assert_eq(r1, -1);
    cr_assert_eq(e1, ECONNREFUSED, "%s", strerror(e1));
    cr_assert_eq(r2, -1);
    cr_assert_eq(e2, ECONNREFUSED);
    cr_assert_lt(ms_since(t0), 1000);
    cr_assert_gt(pread(efd, buf, sizeof(buf) - 1, 0), 0);
    cr_assert_not_null(strstr(buf, "/nonexistent/shmnetd.sock"), "%s", buf);
    cr_assert_eq(strchr(buf, '\n'), strrchr(buf, '\n'), "one line only: %s", buf);
    unlink(tmpl);
}

Test(libclient, socket_argument_errors)
{
    setenv(SHM_SOCKET_ENV, "/nonexistent/shmnetd.sock", 1);
    errno = 0;
    cr_assert_eq(shmnet_socket(AF_INET6, SOCK_DGRAM, 0), -1);
    cr_assert_eq(errno, EAFNOSUPPORT);
    cr_assert_eq(shmnet_socket(AF_INET, SOCK_STREAM, IPPROTO_UDP), -1);
    cr_assert_eq(errno, EPROTONOSUPPORT);
    cr_assert_eq(shmnet_socket(AF_INET, SOCK_DGRAM, IPPROTO_TCP), -1);
    cr_assert_eq(errno, EPROTONOSUPPORT);
    cr_assert_eq(shmnet_socket(AF_INET, SOCK_RAW, 0), -1);
    cr_assert_eq(errno, EPROTONOSUPPORT);
    cr_assert_eq(shmnet_socket(AF_INET, 0x7777, 0), -1);
    cr_assert_eq(errno, EINVAL);
}

Test(libclient, bad_fds)
{
    struct sockaddr_in a = sin4(0, 1);
    socklen_t l = sizeof(a);
    char b[4];
    int v, p[2];

    cr_assert_eq(pipe(p), 0);
    int fds[] = {-1, 999999, p[0]};
    int want[] = {EBADF, EBADF, ENOTSOCK};
    for (int i = 0; i < 3; i++) {
        int fd = fds[i], e = want[i];
        errno = 0;
        cr_assert_eq(shmnet_bind(fd, (struct sockaddr *)&a, sizeof(a)), -1);
        cr_assert_eq(errno, e, "fd %d: %s", fd, strerror(errno));
        cr_assert_eq(shmnet_connect(fd, (struct sockaddr *)&a, sizeof(a)), -1);
        cr_assert_eq(errno, e);
        cr_assert_eq(shmnet_sendto(fd, b, 1, 0, (struct sockaddr *)&a, sizeof(a)), -1);
        cr_assert_eq(errno, e);
        cr_assert_eq(shmnet_send(fd, b, 1, 0), -1);
        cr_assert_eq(errno, e);
        cr_assert_eq(shmnet_recv(fd, b, 1, 0), -1);
        cr_assert_eq(errno, e);
        cr_assert_eq(shmnet_recvfrom(fd, b, 1, 0, NULL, NULL), -1);
        cr_assert_eq(errno, e);
        cr_assert_eq(shmnet_getsockname(fd, (struct sockaddr *)&a, &l), -1);
        cr_assert_eq(errno, e);
        cr_assert_eq(shmnet_getpeername(fd, (struct sockaddr *)&a, &l), -1);
        cr_assert_eq(errno, e);
        cr_assert_eq(shmnet_getsockopt(fd, SOL_SOCKET, SO_ERROR, &v, &l), -1);
        cr_assert_eq(errno, e);
        cr_assert_eq(shmnet_setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &v, sizeof(v)), -1);
        cr_assert_eq(errno, e);
        cr_assert_eq(shmnet_shutdown(fd, SHUT_RDWR), -1);
        cr_assert_eq(errno, e);
        cr_assert_eq(shmnet_listen(fd, 1), -1);
        cr_assert_eq(errno, e);
        cr_assert_eq(shmnet_accept(fd, NULL, NULL), -1);
        cr_assert_eq(errno, e);
        cr_assert_eq(shmnet_fcntl(fd, F_GETFL), -1);
        cr_assert_eq(errno, e);
        cr_assert_eq(shmnet_close(fd), -1);
        cr_assert_eq(errno, e);
        cr_assert_eq(shmnet_is_socket(fd), 0);
    }
    /* poll: kernel fds are POLLNVAL, negative fds ignored, no daemon needed */
    struct pollfd pf[2] = {{.fd = p[1], .events = POLLOUT}, {.fd = -1, .events = POLLIN}};
    cr_assert_eq(shmnet_poll(pf, 2, 1000), 1);
    cr_assert_eq(pf[0].revents, POLLNVAL);
    cr_assert_eq(pf[1].revents, 0);
    pf[0].fd = -1;
    int64_t t0 = (int64_t)clock_mono_ns();
    cr_assert_eq(shmnet_poll(pf, 2, 50), 0);
    cr_assert_geq(ms_since(t0), 45);
    cr_assert_eq(shmnet_poll(NULL, 1, 0), -1);
    cr_assert_eq(errno, EFAULT);
    close(p[0]);
    close(p[1]);
}

/* ------------------------------------------------------------------ with the fake daemon */

Test(libclient, attach_refused_by_daemon)
{
    struct fake *f = fake_start(NULL, -EPERM);

    cr_assert_eq(shmnet_socket(AF_INET, SOCK_DGRAM, 0), -1);
    cr_assert_eq(errno, EPERM, "%s", strerror(errno));
    fake_stop(f, false);
    fake_free(f);
}

Test(libclient, socket_bind_names_and_validation)
{
    struct fake *f = fake_start(NULL, 0);
    int fd = shmnet_socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), v;
    struct sockaddr_in a = sin4(0, 5000), b;
    socklen_t l = sizeof(b);

    cr_assert_geq(fd, 0, "%s", strerror(errno));
    cr_assert_eq(shmnet_is_socket(fd), 1);
    cr_assert_eq(fcntl(fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC, "a real placeholder fd");
    /* argument validation */
    cr_assert_eq(shmnet_bind(fd, NULL, sizeof(a)), -1);
    cr_assert_eq(errno, EFAULT);
    cr_assert_eq(shmnet_bind(fd, (struct sockaddr *)&a, 4), -1);
    cr_assert_eq(errno, EINVAL);
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6};
    cr_assert_eq(shmnet_bind(fd, (struct sockaddr *)&a6, sizeof(a6)), -1);
    cr_assert_eq(errno, EAFNOSUPPORT);
    cr_assert_eq(shmnet_getsockname(fd, NULL, &l), -1);
    cr_assert_eq(errno, EFAULT);
    cr_assert_eq(shmnet_shutdown(fd, 7), -1);
    cr_assert_eq(errno, EINVAL);
    cr_assert_eq(shmnet_listen(fd, 5), -1);
    cr_assert_eq(errno, EOPNOTSUPP);
    cr_assert_eq(shmnet_accept(fd, NULL, NULL), -1);
    cr_assert_eq(errno, EOPNOTSUPP);
    /* bind, getsockname, double bind, address in use */
    cr_assert_eq(shmnet_bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(shmnet_getsockname(fd, (struct sockaddr *)&b, &l), 0);
    cr_assert_eq(l, sizeof(b));
    cr_assert_eq(b.sin_family, AF_INET);
    cr_assert_eq(ntohs(b.sin_port), 5000);
    cr_assert_eq(ntohl(b.sin_addr.s_addr), F_ADDR);
    cr_assert_eq(shmnet_bind(fd, (struct sockaddr *)&a, sizeof(a)), -1);
    cr_assert_eq(errno, EINVAL);
    int fd2 = shmnet_socket(AF_INET, SOCK_DGRAM, IPPROTO_UDP);
    cr_assert_eq(shmnet_bind(fd2, (struct sockaddr *)&a, sizeof(a)), -1);
    cr_assert_eq(errno, EADDRINUSE);
    cr_assert_eq(shmnet_getpeername(fd2, (struct sockaddr *)&b, &l), -1);
    cr_assert_eq(errno, ENOTCONN);
    /* options: local ones, SO_ERROR from the daemon, unknown ones refused by it */
    l = sizeof(v);
    cr_assert_eq(shmnet_getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &l), 0);
    cr_assert_eq(v, SOCK_DGRAM);
    cr_assert_eq(shmnet_getsockopt(fd, SOL_SOCKET, SO_ERROR, &v, &l), 0);
    cr_assert_eq(v, 0);
    cr_assert_eq(l, sizeof(v));
    v = 1;
    cr_assert_eq(shmnet_setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &v, sizeof(v)), 0);
    cr_assert_eq(shmnet_setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &v, sizeof(v)), -1);
    cr_assert_eq(errno, ENOPROTOOPT);
    struct timeval tv = {.tv_sec = 0, .tv_usec = 2000000};
    cr_assert_eq(shmnet_setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), -1);
    cr_assert_eq(errno, EDOM);
    /* fcntl */
    cr_assert_eq(shmnet_fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
    cr_assert_eq(shmnet_fcntl(fd, F_SETFL, O_NONBLOCK), 0);
    cr_assert_eq(shmnet_fcntl(fd, F_GETFL) & O_NONBLOCK, O_NONBLOCK);
    cr_assert_eq(shmnet_fcntl(fd, F_DUPFD, 0), -1);
    cr_assert_eq(errno, EINVAL);
    /* close releases the placeholder */
    cr_assert_eq(shmnet_close(fd), 0);
    cr_assert_eq(shmnet_is_socket(fd), 0);
    cr_assert_eq(shmnet_close(fd), -1);
    cr_assert_eq(errno, EBADF);
    cr_assert_eq(shmnet_close(fd2), 0);
    cr_assert_eq(__atomic_load_n(&f->nreq[SHM_OP_CLOSE], __ATOMIC_RELAXED), 2);
    fake_stop(f, false);
    fake_free(f);
}

Test(libclient, datagrams_loopback)
{
    struct fake *f = fake_start(NULL, 0);
    int rx = udp_bound(6000), tx = shmnet_socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in to = sin4(F_ADDR, 6000), from;
    socklen_t fl = sizeof(from);
    static char big[SHM_DGRAM_MAX + 1];
    char buf[64];

    cr_assert_eq(shmnet_send(tx, "x", 1, 0), -1);
    cr_assert_eq(errno, EDESTADDRREQ);
    cr_assert_eq(shmnet_sendto(tx, big, SHM_DGRAM_MAX + 1, 0, (struct sockaddr *)&to, sizeof(to)),
                 -1);
    cr_assert_eq(errno, EMSGSIZE);
    cr_assert_eq(shmnet_sendto(tx, NULL, 3, 0, (struct sockaddr *)&to, sizeof(to)), -1);
    cr_assert_eq(errno, EFAULT);
    cr_assert_eq(shmnet_sendto(tx, "hello", 5, 0, (struct sockaddr *)&to, sizeof(to)), 5);
    cr_assert_eq(shmnet_sendto(tx, "", 0, 0, (struct sockaddr *)&to, sizeof(to)), 0);
    cr_assert_eq(shmnet_sendto(tx, "0123456789", 10, 0, (struct sockaddr *)&to, sizeof(to)), 10);
    memset(big, 'B', sizeof(big));
    cr_assert_eq(shmnet_sendto(tx, big, 30000, 0, (struct sockaddr *)&to, sizeof(to)), 30000);

    /* blocking receive of what was sent; peek leaves it */
    cr_assert_eq(shmnet_recvfrom(rx, buf, sizeof(buf), MSG_PEEK, (struct sockaddr *)&from, &fl), 5);
    cr_assert_eq(shmnet_recvfrom(rx, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fl), 5);
    cr_assert_eq(memcmp(buf, "hello", 5), 0);
    cr_assert_eq(fl, sizeof(from));
    cr_assert_eq(ntohs(from.sin_port), 40000 + 1, "auto-bound port of the sender's slot");
    cr_assert_eq(shmnet_recv(rx, buf, sizeof(buf), 0), 0, "0-byte datagram");
    /* truncation, MSG_TRUNC gives the real length */
    cr_assert_eq(shmnet_recv(rx, buf, 4, MSG_TRUNC), 10);
    cr_assert_eq(memcmp(buf, "0123", 4), 0);
    static char rbig[40000];
    cr_assert_eq(shmnet_recv(rx, rbig, sizeof(rbig), 0), 30000);
    cr_assert_eq(rbig[29999], 'B');
    /* empty: EAGAIN for MSG_DONTWAIT, O_NONBLOCK, and SO_RCVTIMEO */
    cr_assert_eq(shmnet_recv(rx, buf, sizeof(buf), MSG_DONTWAIT), -1);
    cr_assert_eq(errno, EAGAIN);
    cr_assert_eq(shmnet_recv(tx, buf, sizeof(buf), 0), -1);
    cr_assert_eq(errno, EAGAIN);
    struct timeval tv = {.tv_usec = 100000};
    cr_assert_eq(shmnet_setsockopt(rx, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
    int64_t t0 = (int64_t)clock_mono_ns();
    cr_assert_eq(shmnet_recv(rx, buf, sizeof(buf), 0), -1);
    cr_assert_eq(errno, EAGAIN);
    cr_assert_geq(ms_since(t0), 95);
    cr_assert_lt(ms_since(t0), 1000);

    /* many datagrams through the fifos (wrap-around on both sides) */
    for (int i = 0; i < 2000; i++) {
        char m[700];
        memset(m, (char)i, sizeof(m));
        ssize_t n = shmnet_sendto(tx, m, (size_t)(i % 700), 0, (struct sockaddr *)&to, sizeof(to));
        if (n < 0) { /* TX full (non-blocking): let the receiver catch up */
            cr_assert_eq(errno, EAGAIN);
            i--;
        }
        while (shmnet_recv(rx, m, sizeof(m), MSG_DONTWAIT) >= 0) {
        }
    }
    shmnet_close(rx);
    shmnet_close(tx);
    fake_stop(f, false);
    fake_free(f);
}

Test(libclient, connected_socket_and_so_error)
{
    struct fake *f = fake_start(NULL, 0);
    int rx = udp_bound(6001), c = shmnet_socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in to = sin4(F_ADDR, 6001), p;
    socklen_t pl = sizeof(p);
    char buf[16];

    cr_assert_eq(shmnet_connect(c, (struct sockaddr *)&to, sizeof(to)), 0);
    cr_assert_eq(shmnet_getpeername(c, (struct sockaddr *)&p, &pl), 0);
    cr_assert_eq(ntohs(p.sin_port), 6001);
    cr_assert_eq(shmnet_send(c, "abc", 3, 0), 3);
    cr_assert_eq(shmnet_recv(rx, buf, sizeof(buf), 0), 3);
    /* dissolve, then connect to the port that refuses: the error arrives asynchronously */
    struct sockaddr uns = {.sa_family = AF_UNSPEC};
    cr_assert_eq(shmnet_connect(c, &uns, sizeof(uns)), 0);
    cr_assert_eq(shmnet_send(c, "abc", 3, 0), -1);
    cr_assert_eq(errno, EDESTADDRREQ);
    to.sin_port = htons(F_PORT_REFUSED);
    cr_assert_eq(shmnet_connect(c, (struct sockaddr *)&to, sizeof(to)), 0);
    cr_assert_eq(shmnet_send(c, "abc", 3, 0), 3);
    /* blocking recv is woken by the error and reports it once */
    cr_assert_eq(shmnet_recv(c, buf, sizeof(buf), 0), -1);
    cr_assert_eq(errno, ECONNREFUSED);
    cr_assert_eq(shmnet_recv(c, buf, sizeof(buf), MSG_DONTWAIT), -1);
    cr_assert_eq(errno, EAGAIN);
    /* poll shows POLLERR for a pending error; SO_ERROR reads and clears it */
    cr_assert_eq(shmnet_send(c, "abc", 3, 0), 3);
    struct pollfd pf = {.fd = c, .events = POLLIN};
    cr_assert_eq(shmnet_poll(&pf, 1, 2000), 1);
    cr_assert_eq(pf.revents, POLLERR);
    int v = 0;
    socklen_t vl = sizeof(v);
    cr_assert_eq(shmnet_getsockopt(c, SOL_SOCKET, SO_ERROR, &v, &vl), 0);
    cr_assert_eq(v, ECONNREFUSED);
    cr_assert_eq(shmnet_poll(&pf, 1, 0), 0);
    shmnet_close(rx);
    shmnet_close(c);
    fake_stop(f, false);
    fake_free(f);
}

struct sender_arg {
    int fd, delay_ms, n;
    uint16_t port;
};

static void *sender(void *p)
{
    struct sender_arg *a = p;
    struct sockaddr_in to = sin4(F_ADDR, a->port);

    usleep((useconds_t)a->delay_ms * 1000);
    for (int i = 0; i < a->n; i++)
        cr_assert_eq(shmnet_sendto(a->fd, &i, sizeof(i), 0, (struct sockaddr *)&to, sizeof(to)),
                     sizeof(i));
    return NULL;
}

Test(libclient, blocking_recv_and_poll_wake_up)
{
    struct fake *f = fake_start(NULL, 0);
    int rx = udp_bound(6002), tx = shmnet_socket(AF_INET, SOCK_DGRAM, 0), v;
    struct sender_arg sa = {.fd = tx, .delay_ms = 150, .n = 1, .port = 6002};
    pthread_t t;

    /* recv sleeps (past the spin) and is woken through the channel eventfd */
    pthread_create(&t, NULL, sender, &sa);
    int64_t t0 = (int64_t)clock_mono_ns();
    cr_assert_eq(shmnet_recv(rx, &v, sizeof(v), 0), sizeof(v));
    cr_assert_geq(ms_since(t0), 100);
    pthread_join(t, NULL);
    cr_assert_eq(__atomic_load_n(&f_sock(f, 0)->waiters, __ATOMIC_RELAXED), 0, "bit cleared");
    /* poll likewise, over two sockets */
    struct pollfd pf[2] = {{.fd = tx, .events = POLLIN}, {.fd = rx, .events = POLLIN}};
    pthread_create(&t, NULL, sender, &sa);
    t0 = (int64_t)clock_mono_ns();
    cr_assert_eq(shmnet_poll(pf, 2, 5000), 1);
    cr_assert_geq(ms_since(t0), 100);
    cr_assert_eq(pf[0].revents, 0);
    cr_assert_eq(pf[1].revents, POLLIN);
    pthread_join(t, NULL);
    pf[1].events = POLLIN | POLLOUT;
    cr_assert_eq(shmnet_poll(pf, 2, 0), 1);
    cr_assert_eq(pf[1].revents, POLLIN | POLLOUT);
    cr_assert_eq(shmnet_recv(rx, &v, sizeof(v), 0), sizeof(v));
    /* poll timeout */
    pf[1].events = POLLIN;
    t0 = (int64_t)clock_mono_ns();
    cr_assert_eq(shmnet_poll(pf, 2, 80), 0);
    cr_assert_geq(ms_since(t0), 75);
    shmnet_close(rx);
    shmnet_close(tx);
    fake_stop(f, false);
    fake_free(f);
}

static void *close_later(void *p)
{
    usleep(150000);
    cr_assert_eq(shmnet_shutdown(*(int *)p, SHUT_RD), -1); /* unconnected: ENOTCONN ... */
    cr_assert_eq(errno, ENOTCONN);
    return NULL;
}

Test(libclient, shutdown_wakes_blocked_reader)
{
    struct fake *f = fake_start(NULL, 0);
    int rx = udp_bound(6003);
    pthread_t t;
    char b[4];

    pthread_create(&t, NULL, close_later, &rx);
    cr_assert_eq(shmnet_recv(rx, b, sizeof(b), 0), 0, "... but the reader sees EOF");
    pthread_join(t, NULL);
    shmnet_close(rx);
    fake_stop(f, false);
    fake_free(f);
}

static void *unpause_later(void *p)
{
    usleep(100000);
    __atomic_store_n(&((struct fake *)p)->pause_tx, 0, __ATOMIC_RELEASE);
    return NULL;
}

Test(libclient, tx_fifo_full_blocks_until_drained)
{
    struct fake *f = fake_start(NULL, 0);
    int tx = shmnet_socket(AF_INET, SOCK_DGRAM, 0), n = 0;
    struct sockaddr_in to = sin4(F_ADDR, 9); /* nobody: dropped after draining */
    static char m[8000];

    __atomic_store_n(&f->pause_tx, 1, __ATOMIC_RELEASE);
    while (shmnet_sendto(tx, m, sizeof(m), MSG_DONTWAIT, (struct sockaddr *)&to, sizeof(to)) > 0)
        n++;
    cr_assert_eq(errno, EAGAIN);
    cr_assert_geq(n, 6);
    struct pollfd pf = {.fd = tx, .events = POLLOUT};
    cr_assert_eq(shmnet_poll(&pf, 1, 0), 0);
    struct timeval tv = {.tv_usec = 50000};
    cr_assert_eq(shmnet_setsockopt(tx, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)), 0);
    cr_assert_eq(shmnet_sendto(tx, m, sizeof(m), 0, (struct sockaddr *)&to, sizeof(to)), -1);
    cr_assert_eq(errno, EAGAIN);
    tv.tv_usec = 0;
    cr_assert_eq(shmnet_setsockopt(tx, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)), 0);
    /* resume draining 100 ms from now: the blocked send completes */
    pthread_t t;
    pthread_create(&t, NULL, unpause_later, f);
    int64_t t0 = (int64_t)clock_mono_ns();
    cr_assert_eq(shmnet_sendto(tx, m, sizeof(m), 0, (struct sockaddr *)&to, sizeof(to)),
                 (ssize_t)sizeof(m));
    cr_assert_geq(ms_since(t0), 90);
    pthread_join(t, NULL);
    shmnet_close(tx);
    fake_stop(f, false);
    fake_free(f);
}

/* More threads than channels: the first F_NCH own one each, the rest share. Each thread
 * has its own pair of sockets and bounces datagrams through the fake daemon. */
static void *worker(void *p)
{
    int id = (int)(intptr_t)p, v;
    int rx = udp_bound((uint16_t)(7000 + id)), tx = shmnet_socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in to = sin4(F_ADDR, (uint16_t)(7000 + id));

    for (int i = 0; i < 300; i++) {
        cr_assert_eq(shmnet_sendto(tx, &i, sizeof(i), 0, (struct sockaddr *)&to, sizeof(to)),
                     sizeof(i));
        cr_assert_eq(shmnet_recv(rx, &v, sizeof(v), 0), sizeof(v));
        cr_assert_eq(v, i);
    }
    shmnet_close(rx);
    shmnet_close(tx);
    return NULL;
}

Test(libclient, threads_beyond_channels)
{
    struct fake *f = fake_start(NULL, 0);
    pthread_t t[2 * F_NCH];

    for (int i = 0; i < 2 * F_NCH; i++)
        pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i);
    for (int i = 0; i < 2 * F_NCH; i++)
        pthread_join(t[i], NULL);
    /* thread exit released every channel (pthread key destructor) */
    for (int i = 0; i < F_NCH; i++) {
        cr_assert_eq(__atomic_load_n(&att_cur->cp[i].owner, __ATOMIC_RELAXED), 0);
        cr_assert_eq(att_cur->cp[i].users, 0);
    }
    fake_stop(f, false);
    fake_free(f);
}

struct blocked {
    int fd, err;
    ssize_t r;
    int64_t ms;
};

static void *blocked_recv(void *p)
{
    struct blocked *b = p;
    char c;

    b->r = shmnet_recv(b->fd, &c, 1, 0);
    b->err = errno;
    return NULL;
}

Test(libclient, daemon_death_and_reattach)
{
    struct fake *f = fake_start(NULL, 0);
    int rx = udp_bound(6004), c = shmnet_socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in to = sin4(F_ADDR, 6004);
    struct blocked b1 = {.fd = rx}, b2 = {.fd = c};
    pthread_t t1, t2;
    char x = 0;

    cr_assert_eq(shmnet_connect(c, (struct sockaddr *)&to, sizeof(to)), 0);
    pthread_create(&t1, NULL, blocked_recv, &b1);
    pthread_create(&t2, NULL, blocked_recv, &b2);
    usleep(100000);
    int64_t t0 = (int64_t)clock_mono_ns();
    fake_stop(f, true);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    cr_assert_lt(ms_since(t0), 1000, "blocked calls return promptly");
    cr_assert_eq(b1.r, -1);
    cr_assert_eq(b1.err, ENOTCONN, "%s", strerror(b1.err));
    cr_assert_eq(b2.r, -1);
    cr_assert_eq(b2.err, ECONNRESET, "%s", strerror(b2.err));
    /* later calls on the old sockets fail */
    cr_assert_eq(shmnet_send(c, &x, 1, 0), -1);
    cr_assert_eq(errno, EPIPE);
    cr_assert_eq(shmnet_sendto(rx, &x, 1, 0, (struct sockaddr *)&to, sizeof(to)), -1);
    cr_assert_eq(errno, EPIPE);
    cr_assert_eq(shmnet_bind(c, (struct sockaddr *)&to, sizeof(to)), -1);
    cr_assert_eq(errno, ENOTCONN);
    struct pollfd pf = {.fd = rx, .events = POLLIN};
    cr_assert_eq(shmnet_poll(&pf, 1, -1), 1);
    cr_assert_eq(pf.revents, POLLIN | POLLERR | POLLHUP);
    /* no daemon: a new socket is refused */
    cr_assert_eq(shmnet_socket(AF_INET, SOCK_DGRAM, 0), -1);
    cr_assert_eq(errno, ECONNREFUSED);
    /* the daemon is back: a new session, while the old sockets still fail */
    struct fake *g = fake_start(f->dir, 0);
    int n = udp_bound(6004);
    cr_assert_eq(shmnet_sendto(n, &x, 1, 0, (struct sockaddr *)&to, sizeof(to)), 1);
    cr_assert_eq(shmnet_recv(n, &x, 1, 0), 1);
    cr_assert_eq(shmnet_recv(rx, &x, 1, 0), -1);
    cr_assert_eq(errno, ENOTCONN);
    cr_assert_eq(shmnet_close(rx), 0);
    cr_assert_eq(shmnet_close(c), 0);
    cr_assert_eq(shmnet_close(n), 0);
    fake_stop(g, false);
    fake_free(g);
    fake_free(f);
}

/* Stream sockets: the checks the library makes before (or instead of) asking the daemon. */
Test(libclient, stream_argument_validation)
{
    struct fake *f = fake_start(NULL, 0);
    int fd = shmnet_socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, IPPROTO_TCP), v;
    socklen_t l = sizeof(v);
    struct sockaddr_in a = sin4(0x0a000002u, 80);
    char b[4];

    cr_assert_geq(fd, 0, "%s", strerror(errno));
    cr_assert_eq(shmnet_getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &l), 0);
    cr_assert_eq(v, SOCK_STREAM);
    cr_assert_eq(shmnet_accept(fd, NULL, NULL), -1, "not listening");
    cr_assert_eq(errno, EINVAL);
    cr_assert_eq(shmnet_accept4(fd, NULL, NULL, 0x4000000), -1);
    cr_assert_eq(errno, EINVAL);
    cr_assert_eq(shmnet_recv(fd, b, sizeof(b), 0), -1);
    cr_assert_eq(errno, ENOTCONN);
    cr_assert_eq(shmnet_send(fd, "x", 1, MSG_NOSIGNAL), -1);
    cr_assert_eq(errno, ENOTCONN);
    cr_assert_eq(shmnet_send(fd, "x", 1, MSG_OOB), -1);
    cr_assert_eq(errno, EOPNOTSUPP);
    cr_assert_eq(shmnet_connect(fd, NULL, sizeof(a)), -1);
    cr_assert_eq(errno, EFAULT);
    struct sockaddr_in a6 = {.sin_family = AF_UNSPEC};
    cr_assert_eq(shmnet_connect(fd, (struct sockaddr *)&a6, sizeof(a6)), -1);
    cr_assert_eq(errno, EOPNOTSUPP);
    /* The fake daemon answers CONNECT with 0: connected at once; then EISCONN. */
    cr_assert_eq(shmnet_connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(shmnet_connect(fd, (struct sockaddr *)&a, sizeof(a)), -1);
    cr_assert_eq(errno, EISCONN);
    cr_assert_eq(shmnet_listen(fd, 5), -1, "listen on a connected socket");
    cr_assert_eq(errno, EINVAL);
    cr_assert_eq(shmnet_recv(fd, b, 0, 0), 0, "zero-length read");
    cr_assert_eq(shmnet_close(fd), 0);

    int u = shmnet_socket(AF_INET, SOCK_DGRAM, 0);
    cr_assert_geq(u, 0);
    cr_assert_eq(shmnet_accept4(u, NULL, NULL, SOCK_NONBLOCK), -1);
    cr_assert_eq(errno, EOPNOTSUPP);
    cr_assert_eq(shmnet_close(u), 0);
    fake_stop(f, false);
    fake_free(f);
}
