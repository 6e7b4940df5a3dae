/* The other ways into the kernel that programs use for socket descriptors: libc's
 * syscall() (libuv, and so Node.js, closes with syscall(SYS_close, fd)), close_range and
 * closefrom; and the two ways into a seccomp sandbox (prctl, SYS_seccomp), after which
 * the library keeps to the system calls the program's own calls make. Each is routed to the interposer of the call it stands for, so a shmnet
 * socket closed (or used) this way is closed (or used) in shmnet too, not leaked behind a
 * closed placeholder. */
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include "libclient/preload_int.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

/* The interposer's bookkeeping for fds first..last that the kernel is about to close (or
 * mark close-on-exec, with cloexec): shmnet sockets are closed (marked) here. */
static void range_done(unsigned first, unsigned last, bool cloexec)
{
    unsigned top = last < FD_LIMIT - 1 ? last : FD_LIMIT - 1;

    for (unsigned fd = first; fd <= top; fd++) {
        if (cloexec) {
            if (sn((int)fd))
                fcntl((int)fd, F_SETFD, FD_CLOEXEC);
        } else if (sn((int)fd)) {
            close((int)fd);
        } else {
            fd_closed((int)fd);
        }
    }
}

EXPORT int close_range(unsigned first, unsigned last, int flags)
{
    if (first > last) {
        errno = EINVAL;
        return -1;
    }
    range_done(first, last, flags & CLOSE_RANGE_CLOEXEC);
    return REAL(close_range)(first, last, flags);
}

EXPORT void closefrom(int lowfd)
{
    if (lowfd < 0)
        lowfd = 0;
    range_done((unsigned)lowfd, ~0U, false);
    REAL(closefrom)(lowfd);
}

/* prctl(PR_SET_SECCOMP): the other way into a sandbox (libseccomp, OpenSSH). */
EXPORT int prctl(int option, ...)
{
    va_list ap;
    unsigned long a[4];

    va_start(ap, option);
    for (int i = 0; i < 4; i++)
        a[i] = va_arg(ap, unsigned long);
    va_end(ap);
    if (option == PR_SET_SECCOMP)
        shmnet__sandboxed();
    return REAL(prctl)(option, a[0], a[1], a[2], a[3]);
}

/* syscall(2): socket-related numbers go to their interposers (which pass kernel fds on to
 * the kernel), everything else to libc's syscall. The six argument words are read as
 * syscall() itself reads them; unused ones are ignored. */
EXPORT long syscall(long nr, ...)
{
    va_list ap;
    long a[6];

    va_start(ap, nr);
    for (int i = 0; i < 6; i++)
        a[i] = va_arg(ap, long);
    va_end(ap);
    int fd = (int)a[0];
    void *p1 = (void *)a[1], *p2 = (void *)a[2], *p3 = (void *)a[3], *p4 = (void *)a[4];

    switch (nr) {
    case SYS_seccomp: /* a sandbox: from now on the library keeps to the program's calls */
        if (a[0] == SECCOMP_SET_MODE_STRICT || a[0] == SECCOMP_SET_MODE_FILTER)
            shmnet__sandboxed();
        break;
    case SYS_close:
        return close(fd);
    case SYS_close_range:
        return close_range((unsigned)a[0], (unsigned)a[1], (int)a[2]);
    case SYS_socket:
        return socket(fd, (int)a[1], (int)a[2]);
    case SYS_dup:
        return dup(fd);
#ifdef SYS_dup2
    case SYS_dup2:
        return dup2(fd, (int)a[1]);
#endif
    case SYS_dup3:
        return dup3(fd, (int)a[1], (int)a[2]);
    case SYS_bind:
        return bind(fd, p1, (socklen_t)a[2]);
    case SYS_connect:
        return connect(fd, p1, (socklen_t)a[2]);
    case SYS_listen:
        return listen(fd, (int)a[1]);
#ifdef SYS_accept
    case SYS_accept:
        return accept(fd, p1, p2);
#endif
    case SYS_accept4:
        return accept4(fd, p1, p2, (int)a[3]);
    case SYS_shutdown:
        return shutdown(fd, (int)a[1]);
    case SYS_sendto:
        return sendto(fd, p1, (size_t)a[2], (int)a[3], p4, (socklen_t)a[5]);
    case SYS_recvfrom:
        return recvfrom(fd, p1, (size_t)a[2], (int)a[3], p4, (socklen_t *)a[5]);
    case SYS_sendmsg:
        return sendmsg(fd, p1, (int)a[2]);
    case SYS_recvmsg:
        return recvmsg(fd, p1, (int)a[2]);
    case SYS_sendmmsg:
        return sendmmsg(fd, p1, (unsigned)a[2], (int)a[3]);
    case SYS_recvmmsg:
        return recvmmsg(fd, p1, (unsigned)a[2], (int)a[3], p4);
    case SYS_getsockopt:
        return getsockopt(fd, (int)a[1], (int)a[2], p3, p4);
    case SYS_setsockopt:
        return setsockopt(fd, (int)a[1], (int)a[2], p3, (socklen_t)a[4]);
    case SYS_getsockname:
        return getsockname(fd, p1, p2);
    case SYS_getpeername:
        return getpeername(fd, p1, p2);
    case SYS_epoll_ctl:
        return epoll_ctl(fd, (int)a[1], (int)a[2], p3);
    case SYS_epoll_pwait:
        return epoll_pwait(fd, p1, (int)a[2], (int)a[3], p4);
#ifdef SYS_epoll_wait
    case SYS_epoll_wait:
        return epoll_wait(fd, p1, (int)a[2], (int)a[3]);
#endif
    case SYS_read:
    case SYS_write:
    case SYS_readv:
    case SYS_writev:
    case SYS_fcntl:
    case SYS_ioctl:
        if (sn(fd)) {
            switch (nr) {
            case SYS_read:
                return read(fd, p1, (size_t)a[2]);
            case SYS_write:
                return write(fd, p1, (size_t)a[2]);
            case SYS_readv:
                return readv(fd, p1, (int)a[2]);
            case SYS_writev:
                return writev(fd, p1, (int)a[2]);
            case SYS_fcntl:
                return fcntl(fd, (int)a[1], a[2]);
            default:
                return ioctl(fd, (unsigned long)a[1], a[2]);
            }
        }
        break;
    default:
        break;
    }
    return REAL(syscall)(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
}
