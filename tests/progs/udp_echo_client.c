/* udp_echo_client: native shmnet UDP client against an echo server.
 *
 *   udp_echo_client [-c] [-r ROUNDS] [-s SIZES] [-t TIMEOUT_MS] [-p LOCAL_PORT] ADDR PORT
 *
 * For each round and each size in SIZES (comma separated, default 0,1,1472,1473,8000,60000)
 * it sends one datagram whose bytes derive from (pid, round, size), waits for the echo
 * (shmnet_poll, TIMEOUT_MS, default 5000) and compares it byte for byte, and checks that
 * it came from ADDR:PORT. -c connects the socket and uses send/recv instead of
 * sendto/recvfrom. Prints "OK <datagrams> <bytes>" and exits 0 only if every echo
 * matched; any mismatch, timeout or error prints "FAIL ..." and exits 1. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shmnet.h"

#define MAXDG 65507

static void fill(uint8_t *b, size_t n, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 0x9e3779b9u;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        b[i] = (uint8_t)x;
    }
    if (n >= 4) /* the first bytes name the datagram: a stale echo cannot pass */
        memcpy(b, &seed, 4);
}

int main(int argc, char **argv)
{
    const char *sizes_arg = "0,1,1472,1473,8000,60000";
    int rounds = 1, timeout_ms = 5000, connected = 0, lport = 0, opt;
    while ((opt = getopt(argc, argv, "cr:s:t:p:")) != -1) {
        switch (opt) {
        case 'c':
            connected = 1;
            break;
        case 'r':
            rounds = atoi(optarg);
            break;
        case 's':
            sizes_arg = optarg;
            break;
        case 't':
            timeout_ms = atoi(optarg);
            break;
        case 'p':
            lport = atoi(optarg);
            break;
        default:
            return 2;
        }
    }
    if (argc - optind != 2) {
        fprintf(stderr, "usage: %s [-c] [-r N] [-s SIZES] [-t MS] [-p LPORT] ADDR PORT\n", argv[0]);
        return 2;
    }
    size_t sizes[64];
    int nsizes = 0;
    char *dup = strdup(sizes_arg), *save = NULL;
    for (char *t = strtok_r(dup, ",", &save); t && nsizes < 64; t = strtok_r(NULL, ",", &save))
        sizes[nsizes++] = strtoul(t, NULL, 10);
    free(dup);

    struct sockaddr_in srv = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[optind + 1]))};
    if (inet_pton(AF_INET, argv[optind], &srv.sin_addr) != 1)
        return 2;
    int fd = shmnet_socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) {
        printf("FAIL socket: %s\n", strerror(errno));
        return 1;
    }
    if (lport) {
        struct sockaddr_in la = {.sin_family = AF_INET, .sin_port = htons(lport)};
        if (shmnet_bind(fd, (struct sockaddr *)&la, sizeof(la)) < 0) {
            printf("FAIL bind %d: %s\n", lport, strerror(errno));
            return 1;
        }
    }
    if (connected && shmnet_connect(fd, (struct sockaddr *)&srv, sizeof(srv)) < 0) {
        printf("FAIL connect: %s\n", strerror(errno));
        return 1;
    }
    static uint8_t tx[MAXDG], rx[MAXDG + 1]; /* static: every exit path is leak-free */
    unsigned long long n = 0, bytes = 0;
    uint32_t pid = (uint32_t)getpid();
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < nsizes; i++) {
            size_t len = sizes[i];
            uint32_t seed = pid * 7919u + (uint32_t)r * 65599u + (uint32_t)len;
            fill(tx, len, seed);
            ssize_t w = connected
                            ? shmnet_send(fd, tx, len, 0)
                            : shmnet_sendto(fd, tx, len, 0, (struct sockaddr *)&srv, sizeof(srv));
            if (w != (ssize_t)len) {
                printf("FAIL send round %d size %zu: %zd %s\n", r, len, w, strerror(errno));
                return 1;
            }
            struct pollfd p = {.fd = fd, .events = POLLIN};
            int pr = shmnet_poll(&p, 1, timeout_ms);
            if (pr != 1 || !(p.revents & POLLIN)) {
                printf("FAIL no echo within %d ms: round %d size %zu (poll %d revents %#x %s)\n",
                       timeout_ms, r, len, pr, p.revents, pr < 0 ? strerror(errno) : "");
                return 1;
            }
            struct sockaddr_in from;
            socklen_t fl = sizeof(from);
            ssize_t got =
                connected ? shmnet_recv(fd, rx, MAXDG + 1, 0)
                          : shmnet_recvfrom(fd, rx, MAXDG + 1, 0, (struct sockaddr *)&from, &fl);
            if (got < 0) {
                printf("FAIL recv round %d size %zu: %s\n", r, len, strerror(errno));
                return 1;
            }
            if ((size_t)got != len || memcmp(tx, rx, len) != 0) {
                size_t k = 0;
                while (k < len && k < (size_t)got && tx[k] == rx[k])
                    k++;
                printf("FAIL echo mismatch round %d: sent %zu bytes, got %zd, first difference "
                       "at %zu\n",
                       r, len, got, k);
                return 1;
            }
            if (!connected && (fl != sizeof(from) || from.sin_addr.s_addr != srv.sin_addr.s_addr ||
                               from.sin_port != srv.sin_port)) {
                printf("FAIL echo from the wrong address %s:%u\n", inet_ntoa(from.sin_addr),
                       ntohs(from.sin_port));
                return 1;
            }
            n++;
            bytes += len;
        }
    }
    if (shmnet_close(fd) < 0) {
        printf("FAIL close: %s\n", strerror(errno));
        return 1;
    }
    printf("OK %llu %llu\n", n, bytes);
    return 0;
}
