/* udp_block_recv: what a client sees when shmnetd dies under it.
 *
 *   udp_block_recv ADDR PORT
 *
 * Opens a socket, prints "READY <local port>" and blocks in shmnet_recv (no timeout) while
 * a second thread blocks in shmnet_poll (infinite timeout) on a second socket. When the
 * daemon dies both must return: it prints
 *   "RECV <rc> <errno name>"    and "POLL <rc> <revents>"
 * then tries later calls on the first socket and prints
 *   "LATER send <rc> <errno name> recv <rc> <errno name>"
 * Then it reads one line from stdin (the test writes it once the daemon runs again), opens
 * a new socket (a new attach) and does one echo round trip with ADDR:PORT: "REATTACH ok" or
 * "REATTACH FAIL ...". Exit status 0 when the re-attach worked. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shmnet.h"

static int pfd;

static const char *ename(int e)
{
    switch (e) {
    case 0:
        return "0";
    case ECONNRESET:
        return "ECONNRESET";
    case ENOTCONN:
        return "ENOTCONN";
    case EPIPE:
        return "EPIPE";
    case EBADF:
        return "EBADF";
    case ECONNREFUSED:
        return "ECONNREFUSED";
    case EAGAIN:
        return "EAGAIN";
    case EINTR:
        return "EINTR";
    default:
        return strerror(e);
    }
}

static void *poller(void *arg)
{
    (void)arg;
    struct pollfd p = {.fd = pfd, .events = POLLIN};
    int r = shmnet_poll(&p, 1, -1);
    int e = errno;
    printf("POLL %d %#x %s\n", r, (unsigned)p.revents, r < 0 ? ename(e) : "");
    fflush(stdout);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    struct sockaddr_in srv = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &srv.sin_addr) != 1)
        return 2;
    int fd = shmnet_socket(AF_INET, SOCK_DGRAM, 0);
    pfd = shmnet_socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t al = sizeof(a);
    if (fd < 0 || pfd < 0 || shmnet_bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        shmnet_bind(pfd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        shmnet_getsockname(fd, (struct sockaddr *)&a, &al) < 0) {
        printf("FAIL setup: %s\n", strerror(errno));
        return 1;
    }
    pthread_t th;
    pthread_create(&th, NULL, poller, NULL);
    printf("READY %u\n", ntohs(a.sin_port));
    fflush(stdout);
    char buf[256];
    ssize_t r = shmnet_recv(fd, buf, sizeof(buf), 0);
    int e = errno;
    printf("RECV %zd %s\n", r, r < 0 ? ename(e) : "");
    fflush(stdout);
    pthread_join(th, NULL);
    errno = 0;
    ssize_t s = shmnet_sendto(fd, "x", 1, 0, (struct sockaddr *)&srv, sizeof(srv));
    int se = errno;
    errno = 0;
    ssize_t rr = shmnet_recv(fd, buf, sizeof(buf), 0);
    int re = errno;
    printf("LATER send %zd %s recv %zd %s\n", s, s < 0 ? ename(se) : "", rr,
           rr < 0 ? ename(re) : "");
    fflush(stdout);
    shmnet_close(fd);
    shmnet_close(pfd);

    if (!fgets(buf, sizeof(buf), stdin)) {
        printf("REATTACH FAIL no go-ahead on stdin\n");
        return 1;
    }
    int nfd = shmnet_socket(AF_INET, SOCK_DGRAM, 0);
    if (nfd < 0) {
        printf("REATTACH FAIL socket: %s\n", strerror(errno));
        return 1;
    }
    static const char msg[] = "after-restart-0123456789";
    if (shmnet_sendto(nfd, msg, sizeof(msg), 0, (struct sockaddr *)&srv, sizeof(srv)) !=
        (ssize_t)sizeof(msg)) {
        printf("REATTACH FAIL sendto: %s\n", strerror(errno));
        return 1;
    }
    struct pollfd p = {.fd = nfd, .events = POLLIN};
    if (shmnet_poll(&p, 1, 5000) != 1 || shmnet_recv(nfd, buf, sizeof(buf), 0) != sizeof(msg) ||
        memcmp(buf, msg, sizeof(msg)) != 0) {
        printf("REATTACH FAIL no correct echo: %s\n", strerror(errno));
        return 1;
    }
    shmnet_close(nfd);
    printf("REATTACH ok\n");
    return 0;
}
