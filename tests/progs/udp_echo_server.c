/* udp_echo_server: native shmnet UDP echo server.
 *
 *   udp_echo_server [-n COUNT] [-R] [-b RCVBUF] [-H] PORT
 *
 * Binds 0.0.0.0:PORT (SO_REUSEADDR with -R, SO_RCVBUF with -b), prints "READY <port>"
 * (flushed), then echoes every datagram back to its sender with the same payload. With -n
 * it exits 0 after COUNT datagrams, printing "DONE <count> <bytes>"; otherwise it runs
 * until killed. With -H (hold) it reads nothing until a line arrives on stdin, then echoes
 * what is queued (MSG_DONTWAIT until EAGAIN), prints "DRAINED <count> <bytes>" and exits. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shmnet.h"

int main(int argc, char **argv)
{
    long count = -1;
    int reuse = 0, rcvbuf = 0, hold = 0, opt;
    while ((opt = getopt(argc, argv, "n:Rb:H")) != -1) {
        if (opt == 'n')
            count = atol(optarg);
        else if (opt == 'R')
            reuse = 1;
        else if (opt == 'b')
            rcvbuf = atoi(optarg);
        else if (opt == 'H')
            hold = 1;
        else
            return 2;
    }
    if (argc - optind != 1)
        return 2;
    int fd = shmnet_socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) {
        printf("FAIL socket: %s\n", strerror(errno));
        return 1;
    }
    int one = 1;
    if (reuse && shmnet_setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0) {
        printf("FAIL SO_REUSEADDR: %s\n", strerror(errno));
        return 1;
    }
    if (rcvbuf && shmnet_setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)) < 0) {
        printf("FAIL SO_RCVBUF: %s\n", strerror(errno));
        return 1;
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[optind]))};
    if (shmnet_bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        printf("FAIL bind: %s\n", strerror(errno));
        return 1;
    }
    socklen_t al = sizeof(a);
    if (shmnet_getsockname(fd, (struct sockaddr *)&a, &al) < 0) {
        printf("FAIL getsockname: %s\n", strerror(errno));
        return 1;
    }
    printf("READY %u\n", ntohs(a.sin_port));
    fflush(stdout);
    static char buf[65536];
    long n = 0;
    unsigned long long bytes = 0;
    if (hold) {
        char line[64];
        if (!fgets(line, sizeof(line), stdin)) {
            printf("FAIL no go-ahead on stdin\n");
            return 1;
        }
    }
    while (count < 0 || n < count) {
        struct sockaddr_in from;
        socklen_t fl = sizeof(from);
        ssize_t got = shmnet_recvfrom(fd, buf, sizeof(buf), hold ? MSG_DONTWAIT : 0,
                                      (struct sockaddr *)&from, &fl);
        if (got < 0 && hold && errno == EAGAIN)
            break;
        if (got < 0) {
            printf("FAIL recvfrom: %s\n", strerror(errno));
            return 1;
        }
        ssize_t w = shmnet_sendto(fd, buf, (size_t)got, 0, (struct sockaddr *)&from, fl);
        if (w != got) {
            printf("FAIL sendto %zd bytes: %zd %s\n", got, w, strerror(errno));
            return 1;
        }
        n++;
        bytes += (unsigned long long)got;
    }
    shmnet_close(fd);
    printf("%s %ld %llu\n", hold ? "DRAINED" : "DONE", n, bytes);
    return 0;
}
