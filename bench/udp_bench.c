/* udp_bench: UDP request/response latency and one-way throughput.
 *
 * Built twice from this file: build/bench/udp_bench (libshmnet, native API) and
 * build/bench/udp_bench_kernel (-DBENCH_KERNEL: the same code on the kernel's sockets), so
 * both sides of a comparison run identical code.
 *
 *   udp_bench echo PORT                      echo server (runs until killed)
 *   udp_bench sink PORT                      counts datagrams; a datagram starting with
 *                                            "END!" is answered with "count bytes span_ns"
 *                                            for the burst since the last END!, then reset
 *   udp_bench rr ADDR PORT SIZE N            N ping-pongs of SIZE bytes (after N/10 warm-up):
 *        "rr size S n N median_ns X p99_ns Y lost L"
 *   udp_bench tput ADDR PORT SIZE SECONDS    send SIZE-byte datagrams for SECONDS, then ask
 *                                            the sink: "tput size S sent N secs T recv R
 *                                            recv_span_ns D"
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifdef BENCH_KERNEL
#define S_socket     socket
#define S_bind       bind
#define S_sendto     sendto
#define S_recvfrom   recvfrom
#define S_poll       poll
#define S_close      close
#define S_setsockopt setsockopt
#else
#include "shmnet.h"
#define S_socket     shmnet_socket
#define S_bind       shmnet_bind
#define S_sendto     shmnet_sendto
#define S_recvfrom   shmnet_recvfrom
#define S_poll       shmnet_poll
#define S_close      shmnet_close
#define S_setsockopt shmnet_setsockopt
#endif

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int sock_bound(int port)
{
    int fd = S_socket(AF_INET, SOCK_DGRAM, 0);
    int big = 8 << 20;
    S_setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
#ifdef BENCH_KERNEL
    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big));
#endif
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (fd < 0 || S_bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        perror("udp_bench: bind");
        exit(1);
    }
    return fd;
}

static char buf[65536];

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "echo")) {
        int fd = sock_bound(atoi(argv[2]));
        printf("READY\n");
        fflush(stdout);
        for (;;) {
            struct sockaddr_in f;
            socklen_t fl = sizeof(f);
            ssize_t n = S_recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&f, &fl);
            if (n >= 0)
                S_sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&f, fl);
        }
    }
    if (argc >= 3 && !strcmp(argv[1], "sink")) {
        int fd = sock_bound(atoi(argv[2]));
        printf("READY\n");
        fflush(stdout);
        uint64_t count = 0, bytes = 0, first = 0, last = 0;
        for (;;) {
            struct sockaddr_in f;
            socklen_t fl = sizeof(f);
            ssize_t n = S_recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&f, &fl);
            if (n < 0)
                continue;
            if (n >= 4 && !memcmp(buf, "END!", 4)) {
                char r[128];
                int l = snprintf(r, sizeof(r), "%llu %llu %llu", (unsigned long long)count,
                                 (unsigned long long)bytes, (unsigned long long)(last - first));
                S_sendto(fd, r, (size_t)l, 0, (struct sockaddr *)&f, fl);
                count = bytes = first = last = 0;
                continue;
            }
            last = now_ns();
            if (!count)
                first = last;
            count++;
            bytes += (uint64_t)n;
        }
    }
    if (argc < 6)
        return 2;
    struct sockaddr_in srv = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
    if (inet_pton(AF_INET, argv[2], &srv.sin_addr) != 1)
        return 2;
    size_t size = strtoul(argv[4], NULL, 10);
    int fd = sock_bound(0);
    if (!strcmp(argv[1], "rr")) {
        long n = atol(argv[5]), warm = n / 10, lost = 0;
        uint64_t *lat = malloc(sizeof(uint64_t) * (size_t)n);
        memset(buf, 'r', size);
        for (long i = -warm; i < n; i++) {
            uint64_t t0 = now_ns();
            S_sendto(fd, buf, size, 0, (struct sockaddr *)&srv, sizeof(srv));
            struct pollfd p = {.fd = fd, .events = POLLIN};
            if (S_poll(&p, 1, 1000) != 1) {
                lost++;
                i--;
                continue;
            }
            S_recvfrom(fd, buf, sizeof(buf), 0, NULL, NULL);
            if (i >= 0)
                lat[i] = now_ns() - t0;
        }
        qsort(lat, (size_t)n, sizeof(*lat), cmp_u64);
        printf("rr size %zu n %ld median_ns %llu p99_ns %llu lost %ld\n", size, n,
               (unsigned long long)lat[n / 2], (unsigned long long)lat[n * 99 / 100], lost);
        return 0;
    }
    if (!strcmp(argv[1], "tput")) {
        double secs = atof(argv[5]);
        memset(buf, 't', size);
        uint64_t sent = 0, t0 = now_ns(), end = t0 + (uint64_t)(secs * 1e9), t;
        do {
            for (int k = 0; k < 64; k++)
                if (S_sendto(fd, buf, size, 0, (struct sockaddr *)&srv, sizeof(srv)) ==
                    (ssize_t)size)
                    sent++;
            t = now_ns();
        } while (t < end);
        for (int tries = 0; tries < 20; tries++) {
            S_sendto(fd, "END!", 4, 0, (struct sockaddr *)&srv, sizeof(srv));
            struct pollfd p = {.fd = fd, .events = POLLIN};
            if (S_poll(&p, 1, 500) == 1) {
                ssize_t r = S_recvfrom(fd, buf, sizeof(buf) - 1, 0, NULL, NULL);
                if (r > 0) {
                    buf[r] = 0;
                    unsigned long long rc, rb, span;
                    if (sscanf(buf, "%llu %llu %llu", &rc, &rb, &span) == 3) {
                        printf("tput size %zu sent %llu secs %.3f recv %llu recv_span_ns %llu\n",
                               size, (unsigned long long)sent, (double)(t - t0) / 1e9, rc, span);
                        return 0;
                    }
                }
            }
        }
        fprintf(stderr, "udp_bench: no answer from the sink\n");
        return 1;
    }
    return 2;
}
