/* udp_traffic: keeps echo traffic going until killed.
 *
 *   udp_traffic [-w WINDOW] [-l LEN] [-k SOCKETS] ADDR PORT
 *
 * Opens SOCKETS (default 2) sockets; on each in turn it sends WINDOW (default 8)
 * datagrams of LEN bytes (default 1000) and then receives the WINDOW echoes, checking each
 * byte for byte (echoes may be reordered within a window, never altered or lost). Prints
 * "RUNNING" (flushed) after the first complete window, so a test knows traffic is flowing
 * and data sits in the fifos when it kills the process. On SIGTERM/SIGINT it stops after
 * the current window and prints "OK <datagrams>". Any error prints "FAIL ..." and exits 1. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shmnet.h"

static volatile sig_atomic_t stop;
static void on_sig(int s)
{
    (void)s;
    stop = 1;
}

static void fill(uint8_t *b, uint32_t len, uint32_t id)
{
    uint32_t x = id * 2246822519u + 1u;
    for (uint32_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        b[i] = (uint8_t)x;
    }
    memcpy(b, &id, 4);
}

int main(int argc, char **argv)
{
    int win = 8, len = 1000, nsock = 2, opt;
    while ((opt = getopt(argc, argv, "w:l:k:")) != -1) {
        switch (opt) {
        case 'w':
            win = atoi(optarg);
            break;
        case 'l':
            len = atoi(optarg);
            break;
        case 'k':
            nsock = atoi(optarg);
            break;
        default:
            return 2;
        }
    }
    if (argc - optind != 2 || win < 1 || win > 64 || len < 4 || len > 65507 || nsock < 1 ||
        nsock > 64)
        return 2;
    struct sockaddr_in srv = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[optind + 1]))};
    if (inet_pton(AF_INET, argv[optind], &srv.sin_addr) != 1)
        return 2;
    struct sigaction sa = {.sa_handler = on_sig};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    int fds[64];
    for (int i = 0; i < nsock; i++) {
        fds[i] = shmnet_socket(AF_INET, SOCK_DGRAM, 0);
        if (fds[i] < 0 || shmnet_connect(fds[i], (struct sockaddr *)&srv, sizeof(srv)) < 0) {
            printf("FAIL socket/connect: %s\n", strerror(errno));
            return 1;
        }
    }
    /* static: reachable at exit, so LeakSanitizer does not flag a program killed mid-run */
    static uint8_t *tx, *rx, *exp;
    tx = malloc(len), rx = malloc(65536), exp = malloc(len);
    uint32_t base = (uint32_t)getpid() << 12, id = 0;
    unsigned long long n = 0;
    int announced = 0;
    while (!stop) {
        int fd = fds[(n / win) % nsock];
        uint64_t pending = 0; /* bit i: datagram id0 + i not echoed yet */
        uint32_t id0 = id;
        for (int i = 0; i < win; i++, id++) {
            fill(tx, len, base + id);
            if (shmnet_send(fd, tx, len, 0) != len) {
                printf("FAIL send: %s\n", strerror(errno));
                return 1;
            }
            pending |= 1ull << i;
        }
        while (pending) {
            struct pollfd p = {.fd = fd, .events = POLLIN};
            int pr = shmnet_poll(&p, 1, 5000);
            if (pr < 0 && errno == EINTR)
                continue;
            if (pr != 1) {
                printf("FAIL no echo within 5 s (%d missing in window at %llu)\n",
                       __builtin_popcountll(pending), n);
                return 1;
            }
            ssize_t got = shmnet_recv(fd, rx, 65536, 0);
            uint32_t rid;
            if (got != len || (memcpy(&rid, rx, 4), rid - base - id0 >= (uint32_t)win) ||
                !(pending >> (rid - base - id0) & 1)) {
                printf("FAIL unexpected echo (%zd bytes)\n", got);
                return 1;
            }
            fill(exp, len, rid);
            if (memcmp(exp, rx, len)) {
                printf("FAIL echo content differs\n");
                return 1;
            }
            pending &= ~(1ull << (rid - base - id0));
            n++;
        }
        if (!announced) {
            printf("RUNNING\n");
            fflush(stdout);
            announced = 1;
        }
    }
    printf("OK %llu\n", n);
    return 0;
}
