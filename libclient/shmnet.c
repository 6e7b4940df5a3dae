/* libshmnet's API calls common to every socket type: socket, bind, connect (dispatch),
 * shutdown, names and fcntl, and the address helpers of the other calls.
 * Design, threading and the wake-up protocol: docs/libshmnet.md; objects: client_impl.h. */
#include "libclient/client_impl.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <unistd.h>

void put_sockaddr(struct sockaddr *sa, socklen_t *len, uint32_t addr, uint16_t port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};

    sin.sin_addr.s_addr = htonl(addr);
    sin.sin_port = htons(port);
    memcpy(sa, &sin, *len < sizeof(sin) ? *len : sizeof(sin));
    *len = sizeof(sin);
}

/* Validate a caller's (addr, addrlen) result pair. */
int check_out_addr(const struct sockaddr *sa, const socklen_t *len)
{
    if (!sa || !len)
        return -EFAULT;
    if ((int)*len < 0)
        return -EINVAL;
    return 0;
}

/* Parse an AF_INET address argument into host-order addr/port. */
int get_sockaddr(const struct sockaddr *sa, socklen_t len, uint32_t *addr, uint16_t *port)
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

/* Report and clear a pending asynchronous error (SO_ERROR), as Linux does on the next
 * send/recv. The daemon owns the value: asking it with GETSOCKOPT SO_ERROR clears it. */
int sock_take_error(struct csock *s)
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

const char *shmnet_version(void)
{
    return "0.1.0";
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

static int do_bind(struct csock *s, const struct sockaddr *sa, socklen_t len)
{
    struct shm_req req = {.op = SHM_OP_BIND};
    struct shm_cpl cpl = {0};
    int r = get_sockaddr(sa, len, &req.addr, &req.port);

    return r < 0 ? r : sock_request(s, &req, &cpl);
}

int shmnet_bind(int fd, const struct sockaddr *addr, socklen_t addrlen)
{
    return (int)WITH_SOCK(fd, s, do_bind(s, addr, addrlen));
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
        r = sock_request(s, &req, &cpl);
    if (r < 0)
        return r;
    __atomic_store_n(&s->connected, !dissolve, __ATOMIC_RELAXED);
    return 0;
}

int shmnet_connect(int fd, const struct sockaddr *addr, socklen_t addrlen)
{
    return (int)WITH_SOCK(fd, s, do_connect(s, addr, addrlen));
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

static int do_getname(struct csock *s, uint32_t op, struct sockaddr *sa, socklen_t *len)
{
    struct shm_req req = {.op = op};
    struct shm_cpl cpl = {0};
    int r = check_out_addr(sa, len);

    if (r == 0)
        r = sock_request(s, &req, &cpl);
    if (r < 0)
        return r;
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
