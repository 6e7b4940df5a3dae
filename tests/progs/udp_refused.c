/* udp_refused: ICMP port unreachable reaches a connected UDP socket as ECONNREFUSED.
 *
 *   udp_refused ADDR CLOSED_PORT ECHO_PORT
 *
 * 1. connected to ADDR:CLOSED_PORT, send; poll reports POLLERR (within 3 s); the next recv
 *    fails with ECONNREFUSED; the error is then cleared (recv MSG_DONTWAIT: EAGAIN).
 * 2. the same, but the next send fails with ECONNREFUSED.
 * 3. unconnected: sendto CLOSED_PORT, then sendto ECHO_PORT (an echo server): the echo
 *    arrives and no error is reported (Linux reports ICMP errors on connected sockets
 *    only). The kernel answers the first datagram before it sees the second, so the ICMP
 *    error has arrived before the echo: no waiting on a timeout.
 * Prints "ok <check>" per check, "FAIL <check>: why" on failure; exit 0 only if all pass. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shmnet.h"

static int failed;

#define CHECK(name, cond, ...)                                                                     \
    do {                                                                                           \
        if (cond) {                                                                                \
            printf("ok %s\n", name);                                                               \
        } else {                                                                                   \
            printf("FAIL %s: ", name);                                                             \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
            failed = 1;                                                                            \
        }                                                                                          \
    } while (0)

static int connected_sock(const struct sockaddr_in *dst)
{
    int fd = shmnet_socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0 || shmnet_connect(fd, (const struct sockaddr *)dst, sizeof(*dst)) < 0) {
        printf("FAIL setup: %s\n", strerror(errno));
        exit(1);
    }
    return fd;
}

static short wait_err(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int n = shmnet_poll(&p, 1, 3000);
    return n == 1 ? p.revents : 0;
}

int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    struct sockaddr_in closed = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    struct sockaddr_in echo = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
    if (inet_pton(AF_INET, argv[1], &closed.sin_addr) != 1)
        return 2;
    echo.sin_addr = closed.sin_addr;
    char buf[64];

    /* 1: recv reports the error */
    int fd = connected_sock(&closed);
    ssize_t r = shmnet_send(fd, "x", 1, 0);
    CHECK("send_to_closed_port", r == 1, "send returned %zd (%s)", r, strerror(errno));
    short ev = wait_err(fd);
    CHECK("poll_pollerr", ev & POLLERR, "revents %#x after 3 s", ev);
    errno = 0;
    r = shmnet_recv(fd, buf, sizeof(buf), 0);
    CHECK("recv_econnrefused", r == -1 && errno == ECONNREFUSED, "recv returned %zd errno %s", r,
          strerror(errno));
    errno = 0;
    r = shmnet_recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    CHECK("error_cleared_after_report", r == -1 && errno == EAGAIN, "recv returned %zd errno %s", r,
          strerror(errno));
    shmnet_close(fd);

    /* 2: send reports the error */
    fd = connected_sock(&closed);
    r = shmnet_send(fd, "y", 1, 0);
    ev = wait_err(fd);
    CHECK("poll_pollerr_2", r == 1 && (ev & POLLERR), "send %zd revents %#x", r, ev);
    int soerr = -1;
    socklen_t sl = sizeof(soerr);
    errno = 0;
    r = shmnet_send(fd, "z", 1, 0);
    CHECK("send_econnrefused", r == -1 && errno == ECONNREFUSED, "send returned %zd errno %s", r,
          strerror(errno));
    int g = shmnet_getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
    CHECK("so_error_cleared", g == 0 && soerr == 0, "getsockopt %d SO_ERROR %d", g, soerr);
    shmnet_close(fd);

    /* 3: unconnected sockets do not get the error */
    fd = shmnet_socket(AF_INET, SOCK_DGRAM, 0);
    r = shmnet_sendto(fd, "u", 1, 0, (struct sockaddr *)&closed, sizeof(closed));
    ssize_t r2 = shmnet_sendto(fd, "echo-me", 7, 0, (struct sockaddr *)&echo, sizeof(echo));
    ev = 0;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (r == 1 && r2 == 7 && shmnet_poll(&p, 1, 5000) == 1)
        ev = p.revents;
    errno = 0;
    r = shmnet_recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    CHECK("unconnected_no_error", r == 7 && memcmp(buf, "echo-me", 7) == 0 && !(ev & POLLERR),
          "revents %#x recv %zd errno %s", ev, r, strerror(errno));
    shmnet_close(fd);
    return failed;
}
