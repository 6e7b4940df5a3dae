/* Internal interface between libshmnet and its LD_PRELOAD layer (libclient/preload.c).
 * Not installed; may change with any release. Same conventions as the API: -1 and errno. */
#ifndef SHMNET_INT_H
#define SHMNET_INT_H

#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

/* newfd (already a kernel dup of the placeholder oldfd) names oldfd's socket too. */
int shmnet__dup(int oldfd, int newfd);
/* fd stops naming its socket without closing the kernel fd (dup2/dup3 replaced it). */
int shmnet__forget(int fd);

/* A reference to fd's socket (NULL if fd is not one), kept by an epoll set while the fd is
 * registered so readiness checks skip the fd table. shmnet__sock_revents: its readiness
 * for `events` (poll bits, POLLERR/POLLHUP always); *sig (may be NULL) changes whenever
 * data, space or state arrives, so edge-triggered waiters report again when it changes. */
void *shmnet__sock_ref(int fd);
void shmnet__sock_unref(void *sock);
int shmnet__sock_revents(void *sock, short events, uint64_t *sig);

/* A received datagram's ancillary data, for recvmsg's control messages. */
#define SHMNET_WANT_PKTINFO 1 /* IP_PKTINFO is on */
#define SHMNET_WANT_TOS     2 /* IP_RECVTOS is on */
#define SHMNET_WANT_TS      4 /* SO_TIMESTAMP is on (struct timeval) */
#define SHMNET_WANT_TSNS    8 /* SO_TIMESTAMPNS is on (struct timespec) */
struct shmnet_dgram_info {
    unsigned want;     /* SHMNET_WANT_*: what the socket asked for */
    uint32_t dst;      /* network order: the datagram's destination (ipi_addr) */
    uint32_t spec_dst; /* network order: the local address a reply comes from */
    int ifindex;       /* the receiving interface, 1-based */
    uint8_t tos;
    uint64_t ts_ns; /* when it arrived (CLOCK_REALTIME), 0 if unknown */
};
/* recvfrom that also fills *info (a datagram socket; a stream socket leaves it zero). */
ssize_t shmnet__recvfrom_info(int fd, void *buf, size_t len, int flags, struct sockaddr *src,
                              socklen_t *srclen, struct shmnet_dgram_info *info);
/* sendto from source address src (network order, IP_PKTINFO's ipi_spec_dst; 0: as sendto).
 * A source that is not the daemon's fails later, as SO_ERROR EINVAL. */
ssize_t shmnet__sendto_from(int fd, const void *buf, size_t len, int flags,
                            const struct sockaddr *dst, socklen_t dlen, uint32_t src);

/* Bytes readable (stream) or the size of the next datagram (0 if none). */
int shmnet__nread(int fd);

/* poll(2) over any mix of shmnet sockets and kernel fds. timeout_ns < 0 waits forever;
 * sigmask as for ppoll. Spins briefly, then sleeps in the kernel with the thread's
 * channel eventfd among the fds. */
int shmnet__poll(struct pollfd *fds, nfds_t n, int64_t timeout_ns, const sigset_t *sigmask);

/* For waits that sleep elsewhere (epoll): announce this thread as a waiter on the shmnet
 * sockets fds[0..n), after which the caller re-checks readiness and sleeps with wake_fds
 * (the thread's channel eventfd and the session's control socket; -1 if none) in its
 * wait, for at most *cap_ns (< 0: no cap). shmnet__disarm undoes it after the wait and
 * consumes the wake-up. Returns 0, or -1 if none of fds is a live shmnet socket. */
int shmnet__arm(const int *fds, size_t n, int wake_fds[2], int64_t *cap_ns);
void shmnet__disarm(const int *fds, size_t n);

/* Text appended to the one "cannot attach" line on stderr (what the caller does instead):
 * when no daemon answers, and when the attach fails with EACCES. */
void shmnet__set_warn_hint(const char *unreachable, const char *denied);

/* The process installed a seccomp filter: from now on the library makes no system call the
 * program's own socket calls would not (no sched_yield in spins, no tgkill, no reading of
 * /proc to tell whether other processes of the family live). */
void shmnet__sandboxed(void);

/* SA_RESTART for the interposer, which knows the program's signal handlers: fn(0) is
 * called before a blocking call sleeps, fn(1) when the sleep ended in EINTR, and returns
 * nonzero when the handler that ran has SA_RESTART, so the call goes on waiting. */
void shmnet__set_restart_hook(int (*fn)(int phase));

/* Busy-wait budget before sleeping (SHMNET_SPIN_US), in ns. */
int64_t shmnet__spin_ns(void);
/* One pause of such a busy wait: yields the CPU (see channel.c). */
void shmnet__spin_yield(void);

#endif
