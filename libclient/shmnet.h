/* libshmnet: the native API of shmnet (docs/libshmnet.md).
 *
 * The calls mirror the BSD socket API: same signatures, same semantics, -1 and errno on
 * error. A shmnet socket is numbered with a real (placeholder) kernel fd, so its number
 * never collides with other descriptors; it must be closed with shmnet_close. Only
 * AF_INET is supported: SOCK_DGRAM (UDP) and SOCK_STREAM (TCP).
 *
 * The first call attaches the process to shmnetd through its control socket
 * ($SHMNET_SOCKET, else /run/shmnet/shmnetd.sock). If the daemon dies, blocked calls
 * return -1 promptly and later calls on its sockets fail; a new shmnet_socket attaches
 * again once the daemon is back. */
#ifndef SHMNET_H
#define SHMNET_H

#include <poll.h>
#include <sys/socket.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

int shmnet_socket(int domain, int type, int protocol);
int shmnet_bind(int fd, const struct sockaddr *addr, socklen_t addrlen);
int shmnet_listen(int fd, int backlog);
int shmnet_accept(int fd, struct sockaddr *addr, socklen_t *addrlen);
/* flags: SOCK_NONBLOCK, SOCK_CLOEXEC (the placeholder is always close-on-exec). */
int shmnet_accept4(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags);
int shmnet_connect(int fd, const struct sockaddr *addr, socklen_t addrlen);
ssize_t shmnet_send(int fd, const void *buf, size_t len, int flags);
ssize_t shmnet_recv(int fd, void *buf, size_t len, int flags);
ssize_t shmnet_sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *dest,
                      socklen_t destlen);
ssize_t shmnet_recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *src,
                        socklen_t *srclen);
int shmnet_close(int fd);
int shmnet_shutdown(int fd, int how);
int shmnet_setsockopt(int fd, int level, int optname, const void *optval, socklen_t optlen);
int shmnet_getsockopt(int fd, int level, int optname, void *optval, socklen_t *optlen);
int shmnet_getsockname(int fd, struct sockaddr *addr, socklen_t *addrlen);
int shmnet_getpeername(int fd, struct sockaddr *addr, socklen_t *addrlen);

/* poll(2) over shmnet sockets. Entries with fd < 0 are ignored; other fds that are not
 * shmnet sockets get POLLNVAL. */
int shmnet_poll(struct pollfd *fds, nfds_t nfds, int timeout_ms);

/* F_GETFL / F_SETFL (O_NONBLOCK only; other status flags are ignored), F_GETFD / F_SETFD
 * (the placeholder's FD_CLOEXEC). Other commands: EINVAL. */
int shmnet_fcntl(int fd, int cmd, ...);

/* 1 if fd is an open shmnet socket, else 0. */
int shmnet_is_socket(int fd);

/* Version string of the library, e.g. "0.1.0". */
const char *shmnet_version(void);

#ifdef __cplusplus
}
#endif

#endif
