/* Internal interface between libshmnet and its LD_PRELOAD layer (libclient/preload.c).
 * Not installed; may change with any release. Same conventions as the API: -1 and errno. */
#ifndef SHMNET_INT_H
#define SHMNET_INT_H

#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

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

/* Busy-wait budget before sleeping (SHMNET_SPIN_US), in ns. */
int64_t shmnet__spin_ns(void);
/* One pause of such a busy wait: yields the CPU (see channel.c). */
void shmnet__spin_yield(void);

#endif
