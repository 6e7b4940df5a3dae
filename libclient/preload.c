/* libshmnet_preload.so: LD_PRELOAD interposition of the libc socket API (docs/preload.md).
 *
 * AF_INET SOCK_STREAM and SOCK_DGRAM sockets are libshmnet sockets; every other fd goes to
 * libc untouched. A shmnet socket is numbered with a real placeholder kernel fd (libshmnet
 * makes one), so numbering, select's FD_SETSIZE, dup and CLOEXEC behave. poll, select and
 * epoll take any mix of kernel fds and shmnet sockets: they spin briefly on the sockets,
 * then sleep in the kernel with the thread's channel eventfd among the fds.
 *
 * The copy of libshmnet linked in here calls libc through shmnet_sys_* (the Makefile
 * renames its calls with libclient/preload.syms), never through these interposers, so the
 * library's own waits and its fork handler cannot re-enter them. */
#include "libclient/preload_int.h"

/* ------------------------------------------------------------------ libc */

struct preload_libc real; /* the libc functions, resolved on first use (REAL) */

/* libshmnet's own libc calls (renamed in its object, see the file comment). */
EXPORT int shmnet_sys_socket(int d, int t, int p)
{
    return REAL(socket)(d, t, p);
}
EXPORT int shmnet_sys_close(int fd)
{
    return REAL(close)(fd);
}
EXPORT ssize_t shmnet_sys_read(int fd, void *b, size_t n)
{
    return REAL(read)(fd, b, n);
}
EXPORT ssize_t shmnet_sys_write(int fd, const void *b, size_t n)
{
    return REAL(write)(fd, b, n);
}
EXPORT int shmnet_sys_connect(int fd, const struct sockaddr *a, socklen_t l)
{
    return REAL(connect)(fd, a, l);
}
EXPORT ssize_t shmnet_sys_send(int fd, const void *b, size_t n, int f)
{
    return REAL(send)(fd, b, n, f);
}
EXPORT ssize_t shmnet_sys_recv(int fd, void *b, size_t n, int f)
{
    return REAL(recv)(fd, b, n, f);
}
EXPORT ssize_t shmnet_sys_recvmsg(int fd, struct msghdr *m, int f)
{
    return REAL(recvmsg)(fd, m, f);
}
EXPORT int shmnet_sys_setsockopt(int fd, int l, int o, const void *v, socklen_t n)
{
    return REAL(setsockopt)(fd, l, o, v, n);
}
EXPORT int shmnet_sys_fcntl(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    return REAL(fcntl)(fd, cmd, arg);
}
EXPORT int shmnet_sys_poll(struct pollfd *f, nfds_t n, int t)
{
    return REAL(poll)(f, n, t);
}
EXPORT int shmnet_sys_ppoll(struct pollfd *f, nfds_t n, const struct timespec *t, const sigset_t *m)
{
    return REAL(ppoll)(f, n, t, m);
}

/* ------------------------------------------------------------------ policy */

static bool inet6_kernel;    /* SHMNET_INET6=kernel: AF_INET6 sockets go to the kernel */
static bool fallback_kernel; /* SHMNET_FALLBACK=kernel: no daemon -> kernel sockets */

__attribute__((constructor)) static void preload_init(void)
{
    const char *v = getenv("SHMNET_INET6");
    inet6_kernel = v && !strcmp(v, "kernel");
    v = getenv("SHMNET_FALLBACK");
    fallback_kernel = v && !strcmp(v, "kernel");
    shmnet__set_warn_hint(fallback_kernel ? "; using kernel sockets (SHMNET_FALLBACK=kernel)"
                                          : "; AF_INET sockets fail with ENETUNREACH "
                                            "(SHMNET_FALLBACK=kernel uses kernel sockets)",
                          fallback_kernel ? "; using kernel sockets (SHMNET_FALLBACK=kernel)"
                                          : "; AF_INET sockets fail with EACCES");
}

/* ------------------------------------------------------------------ which fds are ours */

/* Per fd number: H_SN, a hint that it is a shmnet socket, so calls on kernel fds skip
 * libshmnet's table lock (the table decides; the hint can be stale after a close this
 * layer did not see); H_CLOEXEC, the close-on-exec flag as the program set it (the
 * placeholder itself is always close-on-exec: after exec it would be a bare eventfd). */
#define H_SN      1
#define H_CLOEXEC 2
static uint8_t hint[FD_LIMIT];

static void mark(int fd, bool cloexec)
{
    if (fd >= 0 && fd < FD_LIMIT)
        __atomic_store_n(&hint[fd], H_SN | (cloexec ? H_CLOEXEC : 0), __ATOMIC_RELAXED);
}

static void unmark(int fd)
{
    if (fd >= 0 && fd < FD_LIMIT)
        __atomic_store_n(&hint[fd], 0, __ATOMIC_RELAXED);
}

bool sn(int fd)
{
    return fd >= 0 && fd < FD_LIMIT && (__atomic_load_n(&hint[fd], __ATOMIC_RELAXED) & H_SN) &&
           shmnet_is_socket(fd);
}

/* ------------------------------------------------------------------ sockets */

EXPORT int socket(int domain, int type, int protocol)
{
    int base = type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC);

    if (domain == AF_INET6 && !inet6_kernel) {
        errno = EAFNOSUPPORT; /* programs fall back to AF_INET (docs/preload.md) */
        return -1;
    }
    if (domain != AF_INET || (base != SOCK_STREAM && base != SOCK_DGRAM))
        return REAL(socket)(domain, type, protocol);
    int fd = shmnet_socket(domain, type, protocol);
    if (fd >= 0) {
        mark(fd, type & SOCK_CLOEXEC);
        return fd;
    }
    int e = errno;
    if (e == ECONNREFUSED || e == ENAMETOOLONG || e == EACCES) {
        /* No daemon, or it refused this uid (libshmnet said which once on stderr, with the
         * hint). A refusal stays EACCES: "unreachable" would hide the policy. */
        if (fallback_kernel)
            return REAL(socket)(domain, type, protocol);
        errno = e == EACCES ? EACCES : ENETUNREACH;
    }
    return -1;
}

EXPORT int socketpair(int domain, int type, int protocol, int sv[2])
{
    return REAL(socketpair)(domain, type, protocol, sv);
}

static int sock_type(int fd)
{
    int t = 0;
    socklen_t l = sizeof(t);
    return shmnet_getsockopt(fd, SOL_SOCKET, SO_TYPE, &t, &l) < 0 ? -1 : t;
}

static bool is_loopback(const struct sockaddr *a, socklen_t l)
{
    const struct sockaddr_in *in = (const struct sockaddr_in *)a;
    return a && l >= sizeof(*in) && in->sin_family == AF_INET &&
           (ntohl(in->sin_addr.s_addr) >> 24) == 127;
}

/* shmnet has no loopback interface: a socket bound or connected to 127/8 becomes a kernel
 * socket under the same number (docs/preload.md). The options programs set before bind
 * or connect are carried over. Returns 0, or -1 with errno. */
int migrate(int fd)
{
    static const struct {
        int level, name;
    } opts[] = {{SOL_SOCKET, SO_REUSEADDR},
                {SOL_SOCKET, SO_KEEPALIVE},
                {IPPROTO_TCP, TCP_NODELAY},
                {SOL_SOCKET, SO_BROADCAST}};
    int type = sock_type(fd), fl = shmnet_fcntl(fd, F_GETFL);
    if (type < 0 || fl < 0)
        return -1;
    int k = REAL(socket)(AF_INET, type | SOCK_CLOEXEC, 0);
    if (k < 0)
        return -1;
    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
        int v = 0;
        socklen_t vl = sizeof(v);
        if ((opts[i].level != IPPROTO_TCP || type == SOCK_STREAM) &&
            shmnet_getsockopt(fd, opts[i].level, opts[i].name, &v, &vl) == 0 && v)
            REAL(setsockopt)(k, opts[i].level, opts[i].name, &v, sizeof(v));
    }
    if (fl & O_NONBLOCK)
        REAL(fcntl)(k, F_SETFL, O_NONBLOCK);
    bool cloexec = hint[fd] & H_CLOEXEC;
    if (REAL(dup3)(k, fd, cloexec ? O_CLOEXEC : 0) < 0) {
        int e = errno;
        REAL(close)(k);
        errno = e;
        return -1;
    }
    REAL(close)(k);
    unmark(fd);
    ep_migrate_fd(fd);
    shmnet__forget(fd);
    return 0;
}

/* Who serves bind or connect to address a: 1 shmnet, 0 the kernel (a kernel socket, or a
 * shmnet socket given a loopback address, which moves there first), -1 a failed move. */
static int served_by(int fd, const struct sockaddr *a, socklen_t l)
{
    if (sn(fd) && is_loopback(a, l) && migrate(fd) < 0)
        return -1;
    return sn(fd);
}

EXPORT int bind(int fd, const struct sockaddr *a, socklen_t l)
{
    int by = served_by(fd, a, l);
    return by < 0 ? -1 : by ? shmnet_bind(fd, a, l) : REAL(bind)(fd, a, l);
}

EXPORT int listen(int fd, int backlog)
{
    return sn(fd) ? shmnet_listen(fd, backlog) : REAL(listen)(fd, backlog);
}

/* accept on a shmnet listener: the new fd is a shmnet socket too. */
static int sn_accept(int fd, struct sockaddr *a, socklen_t *l, int flags)
{
    int c = shmnet_accept4(fd, a, l, flags);
    mark(c, flags & SOCK_CLOEXEC);
    return c;
}

EXPORT int accept4(int fd, struct sockaddr *a, socklen_t *l, int flags)
{
    return sn(fd) ? sn_accept(fd, a, l, flags) : REAL(accept4)(fd, a, l, flags);
}

EXPORT int accept(int fd, struct sockaddr *a, socklen_t *l)
{
    return sn(fd) ? sn_accept(fd, a, l, 0) : REAL(accept)(fd, a, l);
}

EXPORT int connect(int fd, const struct sockaddr *a, socklen_t l)
{
    int by = served_by(fd, a, l);
    return by < 0 ? -1 : by ? shmnet_connect(fd, a, l) : REAL(connect)(fd, a, l);
}

EXPORT int shutdown(int fd, int how)
{
    return sn(fd) ? shmnet_shutdown(fd, how) : REAL(shutdown)(fd, how);
}

EXPORT int getsockname(int fd, struct sockaddr *a, socklen_t *l)
{
    return sn(fd) ? shmnet_getsockname(fd, a, l) : REAL(getsockname)(fd, a, l);
}

EXPORT int getpeername(int fd, struct sockaddr *a, socklen_t *l)
{
    return sn(fd) ? shmnet_getpeername(fd, a, l) : REAL(getpeername)(fd, a, l);
}

EXPORT int getsockopt(int fd, int level, int name, void *v, socklen_t *l)
{
    return sn(fd) ? shmnet_getsockopt(fd, level, name, v, l)
                  : REAL(getsockopt)(fd, level, name, v, l);
}

/* Options programs set for tuning that shmnet has no use for: accepted without effect
 * (docs/preload.md), so a server does not refuse to start over them. */
static bool benign_opt(int level, int name)
{
    switch (level) {
    case SOL_SOCKET:
        return name == SO_REUSEPORT || name == SO_PRIORITY || name == SO_SNDLOWAT ||
               name == SO_OOBINLINE || name == SO_MAX_PACING_RATE || name == SO_BROADCAST ||
               name == SO_ZEROCOPY;
    case IPPROTO_TCP:
        return name == TCP_DEFER_ACCEPT || name == TCP_FASTOPEN || name == TCP_NOTSENT_LOWAT ||
               name == TCP_WINDOW_CLAMP || name == TCP_FASTOPEN_CONNECT ||
               name == TCP_THIN_LINEAR_TIMEOUTS || name == TCP_SYNCNT || name == TCP_LINGER2;
    case IPPROTO_IP:
        return name == IP_BIND_ADDRESS_NO_PORT || name == IP_RECVERR || name == IP_MTU_DISCOVER ||
               name == IP_FREEBIND;
    default:
        return false;
    }
}

EXPORT int setsockopt(int fd, int level, int name, const void *v, socklen_t l)
{
    if (!sn(fd))
        return REAL(setsockopt)(fd, level, name, v, l);
    int r = shmnet_setsockopt(fd, level, name, v, l);
    if (r < 0 && errno == ENOPROTOOPT && benign_opt(level, name))
        r = 0;
    return r;
}

/* ------------------------------------------------------------------ data */

EXPORT ssize_t send(int fd, const void *b, size_t n, int f)
{
    return sn(fd) ? shmnet_send(fd, b, n, f) : REAL(send)(fd, b, n, f);
}

EXPORT ssize_t recv(int fd, void *b, size_t n, int f)
{
    return sn(fd) ? shmnet_recv(fd, b, n, f) : REAL(recv)(fd, b, n, f);
}

EXPORT ssize_t sendto(int fd, const void *b, size_t n, int f, const struct sockaddr *a, socklen_t l)
{
    if (sn(fd) && is_loopback(a, l)) {
        struct sockaddr_in me;
        socklen_t ml = sizeof(me);
        /* an unbound datagram socket sending to 127/8 moves to the kernel */
        if (shmnet_getsockname(fd, (struct sockaddr *)&me, &ml) == 0 && me.sin_port == 0 &&
            migrate(fd) < 0)
            return -1;
    }
    if (!sn(fd))
        return REAL(sendto)(fd, b, n, f, a, l);
    return a ? shmnet_sendto(fd, b, n, f, a, l) : shmnet_send(fd, b, n, f);
}

EXPORT ssize_t recvfrom(int fd, void *b, size_t n, int f, struct sockaddr *a, socklen_t *l)
{
    return sn(fd) ? shmnet_recvfrom(fd, b, n, f, a, l) : REAL(recvfrom)(fd, b, n, f, a, l);
}

EXPORT ssize_t read(int fd, void *b, size_t n)
{
    return sn(fd) ? shmnet_recv(fd, b, n, 0) : REAL(read)(fd, b, n);
}

EXPORT ssize_t write(int fd, const void *b, size_t n)
{
    return sn(fd) ? shmnet_send(fd, b, n, 0) : REAL(write)(fd, b, n);
}

static size_t iov_total(const struct iovec *iov, size_t cnt)
{
    size_t t = 0;
    for (size_t i = 0; i < cnt; i++)
        t += iov[i].iov_len;
    return t;
}

/* Gather for one send: streams in chunks of up to 64 KiB (fewer, larger segments than a
 * send per iovec), a datagram whole. */
static ssize_t iov_send(int fd, const struct iovec *iov, size_t cnt, int flags,
                        const struct sockaddr *to, socklen_t tolen, uint32_t src)
{
    bool stream = sock_type(fd) == SOCK_STREAM;
    size_t total = iov_total(iov, cnt), done = 0, i = 0, off = 0;
    size_t cap = stream ? (total < 65536 ? total : 65536) : total;
    uint8_t small[4096], *buf = cap <= sizeof(small) ? small : malloc(cap);
    ssize_t r = 0;

    if (!buf) {
        errno = ENOMEM;
        return -1;
    }
    if (!stream && total > 65535) {
        if (buf != small)
            free(buf);
        errno = EMSGSIZE;
        return -1;
    }
    do {
        size_t n = 0;
        while (i < cnt && n < cap) {
            size_t k = iov[i].iov_len - off;
            if (k > cap - n)
                k = cap - n;
            if (k)
                memcpy(buf + n, (const uint8_t *)iov[i].iov_base + off, k);
            n += k;
            off += k;
            if (off == iov[i].iov_len) {
                i++;
                off = 0;
            }
        }
        r = src  ? shmnet__sendto_from(fd, buf, n, flags, to, tolen, src)
            : to ? shmnet_sendto(fd, buf, n, flags, to, tolen)
                 : shmnet_send(fd, buf, n, flags);
        if (r > 0)
            done += (size_t)r;
        if (r < (ssize_t)n || !stream)
            break;
    } while (done < total);
    if (buf != small)
        free(buf);
    if (r < 0 && done == 0)
        return -1;
    return stream ? (ssize_t)done : r;
}

/* Scatter from one receive. Streams: the first read may wait, later ones only take what is
 * there. Datagrams: one datagram; *trunc set if it did not fit. */
static ssize_t iov_recv(int fd, const struct iovec *iov, size_t cnt, int flags,
                        struct sockaddr *from, socklen_t *fromlen, bool *trunc,
                        struct shmnet_dgram_info *info)
{
    *trunc = false;
    if (sock_type(fd) == SOCK_STREAM) {
        ssize_t done = 0;
        for (size_t i = 0; i < cnt; i++) {
            if (!iov[i].iov_len)
                continue;
            /* MSG_WAITALL: every part waits, as one recv would. */
            int f = done && !(flags & MSG_WAITALL) ? flags | MSG_DONTWAIT : flags;
            ssize_t r = shmnet_recvfrom(fd, iov[i].iov_base, iov[i].iov_len, f, done ? NULL : from,
                                        done ? NULL : fromlen);
            if (r < 0)
                return done ? done : -1;
            done += r;
            if ((size_t)r < iov[i].iov_len || (flags & MSG_PEEK))
                break;
        }
        return done;
    }
    size_t total = iov_total(iov, cnt);
    size_t cap = total < 65536 ? total : 65536;
    uint8_t small[2048], *buf = cap <= sizeof(small) ? small : malloc(cap);
    if (!buf) {
        errno = ENOMEM;
        return -1;
    }
    struct shmnet_dgram_info none;
    ssize_t r =
        shmnet__recvfrom_info(fd, buf, cap, flags | MSG_TRUNC, from, fromlen, info ? info : &none);
    if (r >= 0) {
        size_t n = (size_t)r < cap ? (size_t)r : cap, pos = 0;
        *trunc = (size_t)r > cap;
        for (size_t i = 0; i < cnt && pos < n; i++) {
            size_t k = iov[i].iov_len < n - pos ? iov[i].iov_len : n - pos;
            memcpy(iov[i].iov_base, buf + pos, k);
            pos += k;
        }
        if (!(flags & MSG_TRUNC))
            r = (ssize_t)n;
    }
    if (buf != small)
        free(buf);
    return r;
}

EXPORT ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    if (!sn(fd))
        return REAL(writev)(fd, iov, cnt);
    if (cnt < 0 || cnt > IOV_MAX) {
        errno = EINVAL;
        return -1;
    }
    return iov_send(fd, iov, (size_t)cnt, 0, NULL, 0, 0);
}

EXPORT ssize_t readv(int fd, const struct iovec *iov, int cnt)
{
    bool trunc;

    if (!sn(fd))
        return REAL(readv)(fd, iov, cnt);
    if (cnt < 0 || cnt > IOV_MAX) {
        errno = EINVAL;
        return -1;
    }
    return iov_recv(fd, iov, (size_t)cnt, 0, NULL, NULL, &trunc, NULL);
}

/* The msghdr checks of sendmsg and recvmsg (false: errno set). */
static bool msg_ok(const struct msghdr *m)
{
    if (m && m->msg_iovlen <= IOV_MAX)
        return true;
    errno = m ? EMSGSIZE : EFAULT;
    return false;
}

EXPORT ssize_t sendmsg(int fd, const struct msghdr *m, int flags)
{
    if (!sn(fd))
        return REAL(sendmsg)(fd, m, flags);
    if (!msg_ok(m))
        return -1;
    uint32_t src;
    if (cmsg_source(m, &src) < 0) /* IP_PKTINFO: the source address; others are ignored */
        return -1;
    return iov_send(fd, m->msg_iov, m->msg_iovlen, flags, m->msg_name,
                    m->msg_name ? m->msg_namelen : 0, src);
}

EXPORT ssize_t recvmsg(int fd, struct msghdr *m, int flags)
{
    bool trunc;

    if (!sn(fd))
        return REAL(recvmsg)(fd, m, flags);
    if (!msg_ok(m))
        return -1;
    socklen_t nl = m->msg_name ? m->msg_namelen : 0;
    struct shmnet_dgram_info info = {0};
    ssize_t r = iov_recv(fd, m->msg_iov, m->msg_iovlen, flags, m->msg_name,
                         m->msg_name ? &nl : NULL, &trunc, &info);
    if (r >= 0) {
        if (m->msg_name)
            m->msg_namelen = nl;
        m->msg_flags = trunc ? MSG_TRUNC : 0;
        cmsg_put(m, &info); /* those IP_PKTINFO and IP_RECVTOS ask for, or none */
    }
    return r;
}

EXPORT int sendmmsg(int fd, struct mmsghdr *v, unsigned int n, int flags)
{
    if (!sn(fd))
        return REAL(sendmmsg)(fd, v, n, flags);
    unsigned int i;
    for (i = 0; i < n && i < UIO_MAXIOV; i++) {
        ssize_t r = sendmsg(fd, &v[i].msg_hdr, flags);
        if (r < 0)
            return i ? (int)i : -1;
        v[i].msg_len = (unsigned int)r;
    }
    return (int)i;
}

EXPORT int recvmmsg(int fd, struct mmsghdr *v, unsigned int n, int flags, struct timespec *t)
{
    if (!sn(fd))
        return REAL(recvmmsg)(fd, v, n, flags, t);
    unsigned int i;
    for (i = 0; i < n && i < UIO_MAXIOV; i++) {
        /* Only the first waits (MSG_WAITFORONE semantics; a timeout is not supported). */
        int f = i ? (flags & ~MSG_WAITFORONE) | MSG_DONTWAIT : flags & ~MSG_WAITFORONE;
        ssize_t r = recvmsg(fd, &v[i].msg_hdr, f);
        if (r < 0)
            return i ? (int)i : -1;
        v[i].msg_len = (unsigned int)r;
    }
    return (int)i;
}

/* sendfile with a shmnet socket: through a buffer, read from the file at an explicit
 * position (pread), so nothing is taken from the file that was not sent: with offset NULL
 * the file position ends just past what was sent, through short sends and EAGAIN. A short
 * send ends the call, as on a non-blocking kernel socket. As for Linux's sendfile, `in`
 * must be a file one can seek in: a socket or a pipe there gets EINVAL. */
static ssize_t copy_fds(int out, int in, off_t *offset, size_t count)
{
    uint8_t buf[65536];
    size_t done = 0;
    off_t pos = offset ? *offset : lseek(in, 0, SEEK_CUR);

    if (pos < 0) {
        if (errno == ESPIPE)
            errno = EINVAL;
        return -1;
    }
    while (done < count) {
        size_t want = count - done < sizeof(buf) ? count - done : sizeof(buf);
        ssize_t n = pread(in, buf, want, pos);
        if (n <= 0) {
            if (n < 0 && done == 0)
                return -1;
            break;
        }
        ssize_t w = write(out, buf, (size_t)n);
        if (w < 0) {
            if (done == 0)
                return -1;
            break;
        }
        done += (size_t)w;
        pos += w;
        if (w < n)
            break;
    }
    if (offset)
        *offset = pos;
    else
        lseek(in, pos, SEEK_SET);
    return (ssize_t)done;
}

EXPORT ssize_t sendfile(int out, int in, off_t *offset, size_t count)
{
    if (!sn(out) && !sn(in))
        return REAL(sendfile)(out, in, offset, count);
    return copy_fds(out, in, offset, count);
}

EXPORT ssize_t sendfile64(int out, int in, off64_t *offset, size_t count)
{
    if (!sn(out) && !sn(in))
        return REAL(sendfile64)(out, in, offset, count);
    return copy_fds(out, in, (off_t *)offset, count);
}

/* ------------------------------------------------------------------ fds */

void fd_closed(int fd)
{
    unmark(fd);
    ep_free_fd(fd);
}

EXPORT int close(int fd)
{
    if (sn(fd)) {
        unmark(fd);
        ep_forget_fd(fd);
        return shmnet_close(fd);
    }
    fd_closed(fd);
    return REAL(close)(fd);
}

static long fcntl_common(int (*f)(int, int, ...), int fd, int cmd, void *arg)
{
    if (!sn(fd))
        return f(fd, cmd, arg);
    switch (cmd) {
    case F_GETFL:
        return shmnet_fcntl(fd, F_GETFL);
    case F_SETFL:
        return shmnet_fcntl(fd, F_SETFL, (int)(long)arg);
    case F_DUPFD:
    case F_DUPFD_CLOEXEC: {
        int n = f(fd, F_DUPFD_CLOEXEC, arg); /* close-on-exec: see dup_done */
        if (n >= 0) {
            if (shmnet__dup(fd, n) < 0) {
                int e = errno;
                REAL(close)(n);
                errno = e;
                return -1;
            }
            mark(n, cmd == F_DUPFD_CLOEXEC);
        }
        return n;
    }
    case F_GETFD:
        return hint[fd] & H_CLOEXEC ? FD_CLOEXEC : 0;
    case F_SETFD:
        mark(fd, (long)arg & FD_CLOEXEC);
        return 0;
    default: /* F_SETOWN, ...: the placeholder's */
        return f(fd, cmd, arg);
    }
}

EXPORT int fcntl(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    return (int)fcntl_common(REAL(fcntl), fd, cmd, arg);
}

EXPORT int fcntl64(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    return (int)fcntl_common(REAL(fcntl64) ? REAL(fcntl64) : REAL(fcntl), fd, cmd, arg);
}

EXPORT int ioctl(int fd, unsigned long req, ...)
{
    va_list ap;
    va_start(ap, req);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    if (!sn(fd))
        return REAL(ioctl)(fd, req, arg);
    switch (req) {
    case FIONREAD: {
        int n = shmnet__nread(fd);
        if (n < 0)
            return -1;
        *(int *)arg = n;
        return 0;
    }
    case FIONBIO: {
        int fl = shmnet_fcntl(fd, F_GETFL);
        if (fl < 0)
            return -1;
        return shmnet_fcntl(fd, F_SETFL, *(int *)arg ? fl | O_NONBLOCK : fl & ~O_NONBLOCK);
    }
    default:
        if ((req & 0xff00) == 0x8900) { /* SIOC*: interface queries, as any socket answers */
            int k = REAL(socket)(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
            if (k < 0)
                return -1;
            int r = REAL(ioctl)(k, req, arg);
            int e = errno;
            REAL(close)(k);
            errno = e;
            return r;
        }
        errno = ENOTTY;
        return -1;
    }
}

/* newfd now names what oldfd names (after the kernel made it so). */
static int dup_done(int oldfd, int newfd, bool old_sn, bool new_sn, bool cloexec)
{
    if (newfd < 0)
        return newfd;
    if (new_sn) { /* the kernel closed newfd's placeholder: forget that name */
        unmark(newfd);
        ep_forget_fd(newfd);
        shmnet__forget(newfd);
    }
    if (old_sn) {
        /* The kernel fd stays close-on-exec whatever the program asked (its view is kept
         * in the hint): after exec it would be a bare eventfd, closed is the clear error. */
        REAL(fcntl)(newfd, F_SETFD, FD_CLOEXEC);
        if (shmnet__dup(oldfd, newfd) < 0) {
            int e = errno;
            REAL(close)(newfd);
            errno = e;
            return -1;
        }
        mark(newfd, cloexec);
    }
    return newfd;
}

EXPORT int dup(int fd)
{
    bool s = sn(fd);
    return dup_done(fd, REAL(dup)(fd), s, false, false);
}

EXPORT int dup2(int oldfd, int newfd)
{
    if (oldfd == newfd)
        return REAL(dup2)(oldfd, newfd);
    bool o = sn(oldfd), n = sn(newfd);
    return dup_done(oldfd, REAL(dup2)(oldfd, newfd), o, n, false);
}

EXPORT int dup3(int oldfd, int newfd, int flags)
{
    bool o = sn(oldfd), n = oldfd != newfd && sn(newfd);
    return dup_done(oldfd, REAL(dup3)(oldfd, newfd, flags), o, n, flags & O_CLOEXEC);
}

/* A socket reports itself as one (the placeholder is an eventfd). */
EXPORT int fstat(int fd, struct stat *st)
{
    int r = REAL(fstat)(fd, st);
    if (r == 0 && sn(fd))
        st->st_mode = S_IFSOCK | 0777;
    return r;
}

EXPORT int fstat64(int fd, struct stat64 *st)
{
    int r = REAL(fstat64)(fd, st);
    if (r == 0 && sn(fd))
        st->st_mode = S_IFSOCK | 0777;
    return r;
}

/* ------------------------------------------------------------------ poll, select */

static bool any_sn(const struct pollfd *fds, nfds_t n)
{
    for (nfds_t i = 0; i < n; i++)
        if (sn(fds[i].fd))
            return true;
    return false;
}

int64_t ts_ns(const struct timespec *t)
{
    if (!t)
        return -1;
    if (t->tv_sec < 0 || t->tv_nsec < 0 || t->tv_nsec >= 1000000000)
        return -2;
    if (t->tv_sec > INT64_MAX / 1000000000 - 1)
        return -1;
    return (int64_t)t->tv_sec * 1000000000 + t->tv_nsec;
}

EXPORT int poll(struct pollfd *fds, nfds_t n, int timeout)
{
    if (!fds || !any_sn(fds, n))
        return REAL(poll)(fds, n, timeout);
    return shmnet__poll(fds, n, timeout < 0 ? -1 : (int64_t)timeout * 1000000, NULL);
}

EXPORT int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *t, const sigset_t *m)
{
    if (!fds || !any_sn(fds, n))
        return REAL(ppoll)(fds, n, t, m);
    int64_t ns = ts_ns(t);
    if (ns == -2) {
        errno = EINVAL;
        return -1;
    }
    return shmnet__poll(fds, n, ns, m);
}

EXPORT int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t fdslen)
{
    if (fdslen / sizeof(*fds) < n)
        abort(); /* what glibc's __chk_fail does: a buffer overflow */
    return poll(fds, n, timeout);
}

EXPORT int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *t, const sigset_t *m,
                       size_t fdslen)
{
    if (fdslen / sizeof(*fds) < n)
        abort();
    return ppoll(fds, n, t, m);
}

static int do_select(int nfds, fd_set *r, fd_set *w, fd_set *e, int64_t ns, const sigset_t *m)
{
    struct pollfd small[64], *p = small;
    int n = 0, ready = 0;

    if (nfds < 0 || nfds > FD_SETSIZE) {
        errno = EINVAL;
        return -1;
    }
    for (int fd = 0; fd < nfds; fd++)
        n += (r && FD_ISSET(fd, r)) || (w && FD_ISSET(fd, w)) || (e && FD_ISSET(fd, e));
    if (n > 64 && !(p = calloc((size_t)n, sizeof(*p)))) {
        errno = ENOMEM;
        return -1;
    }
    n = 0;
    for (int fd = 0; fd < nfds; fd++) {
        short ev =
            (short)((r && FD_ISSET(fd, r) ? POLLIN : 0) | (w && FD_ISSET(fd, w) ? POLLOUT : 0) |
                    (e && FD_ISSET(fd, e) ? POLLPRI : 0));
        if (ev)
            p[n++] = (struct pollfd){.fd = fd, .events = ev};
    }
    int k = shmnet__poll(p, (nfds_t)n, ns, m);
    if (k >= 0) {
        for (int i = 0; i < n; i++)
            if (p[i].revents & POLLNVAL) {
                k = -1;
                errno = EBADF;
            }
    }
    if (k >= 0) {
        /* Linux's select: POLLHUP/POLLERR make a read-watched fd readable, POLLERR a
         * write-watched one writable. */
        for (int i = 0; i < n; i++) {
            int fd = p[i].fd;
            short re = p[i].revents;
            if (r && FD_ISSET(fd, r) && !(re & (POLLIN | POLLHUP | POLLERR)))
                FD_CLR(fd, r);
            if (w && FD_ISSET(fd, w) && !(re & (POLLOUT | POLLERR)))
                FD_CLR(fd, w);
            if (e && FD_ISSET(fd, e) && !(re & POLLPRI))
                FD_CLR(fd, e);
            ready += (r && FD_ISSET(fd, r)) + (w && FD_ISSET(fd, w)) + (e && FD_ISSET(fd, e));
        }
        k = ready;
    }
    if (p != small)
        free(p);
    return k;
}

static bool sets_have_sn(int nfds, fd_set *r, fd_set *w, fd_set *e)
{
    if (nfds > FD_SETSIZE)
        nfds = FD_SETSIZE;
    for (int fd = 0; fd < nfds; fd++)
        if (((r && FD_ISSET(fd, r)) || (w && FD_ISSET(fd, w)) || (e && FD_ISSET(fd, e))) && sn(fd))
            return true;
    return false;
}

EXPORT int select(int nfds, fd_set *r, fd_set *w, fd_set *e, struct timeval *tv)
{
    if (!sets_have_sn(nfds, r, w, e))
        return REAL(select)(nfds, r, w, e, tv);
    if (tv && (tv->tv_sec < 0 || tv->tv_usec < 0)) {
        errno = EINVAL;
        return -1;
    }
    int64_t ns = tv ? (int64_t)tv->tv_sec * 1000000000 + (int64_t)tv->tv_usec * 1000 : -1;
    int64_t t0 = (int64_t)clock_mono_ns();
    int k = do_select(nfds, r, w, e, ns, NULL);
    if (tv) { /* Linux reports the time not slept */
        int64_t left = ns - ((int64_t)clock_mono_ns() - t0);
        if (left < 0)
            left = 0;
        tv->tv_sec = left / 1000000000;
        tv->tv_usec = (left % 1000000000) / 1000;
    }
    return k;
}

EXPORT int pselect(int nfds, fd_set *r, fd_set *w, fd_set *e, const struct timespec *t,
                   const sigset_t *m)
{
    if (!sets_have_sn(nfds, r, w, e))
        return REAL(pselect)(nfds, r, w, e, t, m);
    int64_t ns = ts_ns(t);
    if (ns == -2) {
        errno = EINVAL;
        return -1;
    }
    return do_select(nfds, r, w, e, ns, m);
}

/* ------------------------------------------------------------------ fortified variants */

EXPORT ssize_t __read_chk(int fd, void *b, size_t n, size_t blen)
{
    if (n > blen)
        abort();
    return read(fd, b, n);
}

EXPORT ssize_t __recv_chk(int fd, void *b, size_t n, size_t blen, int f)
{
    if (n > blen)
        abort();
    return recv(fd, b, n, f);
}

EXPORT ssize_t __recvfrom_chk(int fd, void *b, size_t n, size_t blen, int f, struct sockaddr *a,
                              socklen_t *l)
{
    if (n > blen)
        abort();
    return recvfrom(fd, b, n, f, a, l);
}

EXPORT const char *shmnet_preload_version(void)
{
    return shmnet_version();
}
