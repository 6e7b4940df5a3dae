/* Internal interfaces of libshmnet_preload.so, shared by preload.c (the interposers of
 * the socket calls, poll and select, fds), preload_epoll.c (epoll), preload_cmsg.c
 * (control messages), preload_signal.c (SA_RESTART) and preload_syscall.c (syscall(),
 * close_range, closefrom). Everything here is
 * hidden: the library exports only the interposers (EXPORT) and libshmnet's API. */
#ifndef SHMNET_PRELOAD_INT_H
#define SHMNET_PRELOAD_INT_H

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
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
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "libclient/shmnet.h"
#include "libclient/shmnet_int.h"

#define EXPORT   __attribute__((visibility("default")))
#define FD_LIMIT (1 << 20) /* libshmnet numbers sockets below this */

#define INTERNAL __attribute__((visibility("hidden")))

/* libc's definitions of the calls this library interposes (REAL). */
struct preload_libc {
    int (*socket)(int, int, int);
    int (*socketpair)(int, int, int, int *);
    int (*fstat)(int, struct stat *);
    int (*fstat64)(int, struct stat64 *);
    int (*close)(int);
    ssize_t (*read)(int, void *, size_t);
    ssize_t (*write)(int, const void *, size_t);
    ssize_t (*readv)(int, const struct iovec *, int);
    ssize_t (*writev)(int, const struct iovec *, int);
    int (*bind)(int, const struct sockaddr *, socklen_t);
    int (*listen)(int, int);
    int (*accept)(int, struct sockaddr *, socklen_t *);
    int (*accept4)(int, struct sockaddr *, socklen_t *, int);
    int (*connect)(int, const struct sockaddr *, socklen_t);
    ssize_t (*send)(int, const void *, size_t, int);
    ssize_t (*recv)(int, void *, size_t, int);
    ssize_t (*sendto)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
    ssize_t (*recvfrom)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
    ssize_t (*sendmsg)(int, const struct msghdr *, int);
    ssize_t (*recvmsg)(int, struct msghdr *, int);
    int (*sendmmsg)(int, struct mmsghdr *, unsigned int, int);
    int (*recvmmsg)(int, struct mmsghdr *, unsigned int, int, struct timespec *);
    ssize_t (*sendfile)(int, int, off_t *, size_t);
    ssize_t (*sendfile64)(int, int, off64_t *, size_t);
    int (*shutdown)(int, int);
    int (*getsockopt)(int, int, int, void *, socklen_t *);
    int (*setsockopt)(int, int, int, const void *, socklen_t);
    int (*getsockname)(int, struct sockaddr *, socklen_t *);
    int (*getpeername)(int, struct sockaddr *, socklen_t *);
    int (*fcntl)(int, int, ...);
    int (*fcntl64)(int, int, ...);
    int (*ioctl)(int, unsigned long, ...);
    int (*dup)(int);
    int (*dup2)(int, int);
    int (*dup3)(int, int, int);
    int (*poll)(struct pollfd *, nfds_t, int);
    int (*ppoll)(struct pollfd *, nfds_t, const struct timespec *, const sigset_t *);
    int (*select)(int, fd_set *, fd_set *, fd_set *, struct timeval *);
    int (*pselect)(int, fd_set *, fd_set *, fd_set *, const struct timespec *, const sigset_t *);
    int (*epoll_create)(int);
    int (*epoll_create1)(int);
    int (*epoll_ctl)(int, int, int, struct epoll_event *);
    int (*epoll_wait)(int, struct epoll_event *, int, int);
    int (*epoll_pwait)(int, struct epoll_event *, int, int, const sigset_t *);
    int (*epoll_pwait2)(int, struct epoll_event *, int, const struct timespec *, const sigset_t *);
    long (*syscall)(long, ...);
    int (*close_range)(unsigned, unsigned, int);
    void (*closefrom)(int);
    int (*prctl)(int, ...);
    int (*sigaction)(int, const struct sigaction *, struct sigaction *);
};

extern struct preload_libc real INTERNAL;

/* The next definition of a libc function (resolved once; a race resolves it twice). */
#define REAL(f)                                                                                    \
    (__atomic_load_n(&real.f, __ATOMIC_RELAXED)                                                    \
         ? real.f                                                                                  \
         : (__atomic_store_n(&real.f, (__typeof__(real.f))dlsym(RTLD_NEXT, #f), __ATOMIC_RELAXED), \
            real.f))

/* preload.c */
INTERNAL bool sn(int fd); /* fd is a shmnet socket */
/* A socket bound or connected to 127/8 becomes a kernel socket under the same number. */
INTERNAL int migrate(int fd);
INTERNAL int64_t ts_ns(const struct timespec *t); /* ns; NULL: -1 (none), invalid: -2 */
/* A kernel fd is being closed by the kernel itself (close_range): forget what the
 * interposer knew of it. */
INTERNAL void fd_closed(int fd);

/* preload_cmsg.c: recvmsg's control messages from a datagram's info (m->msg_controllen
 * set, MSG_CTRUNC added to m->msg_flags when they do not fit), and the source address an
 * IP_PKTINFO control message of sendmsg asks for (network order, 0 if none): 0, or -1
 * with errno EINVAL for a malformed control buffer. */
INTERNAL void cmsg_put(struct msghdr *m, const struct shmnet_dgram_info *in);
INTERNAL int cmsg_source(const struct msghdr *m, uint32_t *src);

/* preload_epoll.c: the fds an epoll instance watches, as fds close, dup and move */
INTERNAL void ep_free_fd(int epfd);
INTERNAL void ep_forget_fd(int fd);
INTERNAL void ep_migrate_fd(int fd);

#endif
