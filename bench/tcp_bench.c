/* TCP benchmark, built twice: against libshmnet (tcp_bench) and against the kernel's
 * sockets (tcp_bench_kernel, -DBENCH_KERNEL), so both sides run the same code.
 *
 *   tcp_bench sink PORT                  accept connections, read to EOF, print bytes
 *   tcp_bench bulk HOST PORT SECONDS [N] N streams writing for SECONDS: Gbit/s
 *   tcp_bench echo PORT                  accept, echo 1 byte per round until EOF
 *   tcp_bench rate HOST PORT SECONDS     connect, 1-byte round trip, close: conn/s
 *   tcp_bench idle HOST PORT N [PORTS]   open N connections (over PORTS consecutive server
 *                                        ports), print "open N", hold them until stdin closes
 *   tcp_bench hold PORT [PORTS]          accept on PORTS ports and keep every connection
 * Output: one line "key value" for scripts. Every descriptor counts against RLIMIT_NOFILE
 * (a shmnet socket holds a placeholder fd too): the soft limit is raised to the hard one,
 * and bench/run.sh spreads 100000 connections over several processes. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifdef BENCH_KERNEL
#define S_socket     socket
#define S_bind       bind
#define S_listen     listen
#define S_accept     accept
#define S_connect    connect
#define S_send       send
#define S_recv       recv
#define S_close      close
#define S_setsockopt setsockopt
#else
#include "shmnet.h"
#define S_socket     shmnet_socket
#define S_bind       shmnet_bind
#define S_listen     shmnet_listen
#define S_accept     shmnet_accept
#define S_connect    shmnet_connect
#define S_send       shmnet_send
#define S_recv       shmnet_recv
#define S_close      shmnet_close
#define S_setsockopt shmnet_setsockopt
#endif

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static struct sockaddr_in addr_of(const char *host, int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", host);
        exit(2);
    }
    return a;
}

static int listen_on(int port)
{
    int s = S_socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    S_setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (s < 0 || S_bind(s, (struct sockaddr *)&a, sizeof(a)) || S_listen(s, 1024)) {
        perror("listen");
        exit(1);
    }
    return s;
}

static int connect_to(const char *host, int port)
{
    struct sockaddr_in a = addr_of(host, port);
    int s = S_socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0 || S_connect(s, (struct sockaddr *)&a, sizeof(a))) {
        perror("connect");
        return -1;
    }
    return s;
}

struct sink_arg {
    int fd;
};

static void *sink_conn(void *p)
{
    int fd = ((struct sink_arg *)p)->fd;
    free(p);
    static char buf[1 << 17];
    uint64_t n = 0;
    double t0 = now_s();
    ssize_t r;
    while ((r = S_recv(fd, buf, sizeof(buf), 0)) > 0)
        n += (uint64_t)r;
    double el = now_s() - t0;
    printf("received %llu bytes in %.3f s: %.3f Gbit/s\n", (unsigned long long)n, el,
           n * 8 / el / 1e9);
    fflush(stdout);
    S_close(fd);
    return NULL;
}

static void run_sink(int port)
{
    int l = listen_on(port);
    for (;;) {
        int c = S_accept(l, NULL, NULL);
        if (c < 0)
            continue;
        struct sink_arg *a = malloc(sizeof(*a));
        a->fd = c;
        pthread_t t;
        pthread_create(&t, NULL, sink_conn, a);
        pthread_detach(t);
    }
}

struct bulk_arg {
    const char *host;
    int port;
    double secs;
    uint64_t bytes;
};

static void *bulk_one(void *p)
{
    struct bulk_arg *a = p;
    int s = connect_to(a->host, a->port);
    if (s < 0)
        return NULL;
    static __thread char buf[1 << 16];
    memset(buf, 'x', sizeof(buf));
    double end = now_s() + a->secs;
    while (now_s() < end) {
        ssize_t w = S_send(s, buf, sizeof(buf), MSG_NOSIGNAL);
        if (w <= 0)
            break;
        a->bytes += (uint64_t)w;
    }
    S_close(s);
    return NULL;
}

static void run_bulk(const char *host, int port, double secs, int n)
{
    pthread_t t[16];
    struct bulk_arg a[16];
    if (n < 1 || n > 16)
        n = 1;
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        a[i] = (struct bulk_arg){host, port, secs, 0};
        pthread_create(&t[i], NULL, bulk_one, &a[i]);
    }
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(t[i], NULL);
        total += a[i].bytes;
    }
    double el = now_s() - t0;
    printf("gbit_per_s %.3f\n", total * 8 / el / 1e9);
}

static void run_echo(int port)
{
    int l = listen_on(port);
    for (;;) {
        int c = S_accept(l, NULL, NULL);
        if (c < 0)
            continue;
        int one = 1;
        S_setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        char b;
        while (S_recv(c, &b, 1, 0) == 1 && S_send(c, &b, 1, MSG_NOSIGNAL) == 1)
            ;
        S_close(c);
    }
}

static void run_rate(const char *host, int port, double secs)
{
    struct sockaddr_in sa = addr_of(host, port);
    uint64_t n = 0, fail = 0;
    double t0 = now_s(), end = t0 + secs;
    double ph[4] = {0}; /* socket, connect, send+recv, close: where a connection's time goes */
    while (now_s() < end) {
        double t[5];
        t[0] = now_s();
        int s = S_socket(AF_INET, SOCK_STREAM, 0);
        t[1] = now_s();
        if (s < 0 || S_connect(s, (struct sockaddr *)&sa, sizeof(sa))) {
            perror("connect");
            if (s >= 0)
                S_close(s);
            fail++;
            continue;
        }
        t[2] = now_s();
        char c = 'x';
        if (S_send(s, &c, 1, MSG_NOSIGNAL) == 1 && S_recv(s, &c, 1, 0) == 1)
            n++;
        else
            fail++;
        t[3] = now_s();
        S_close(s);
        t[4] = now_s();
        for (int i = 0; i < 4; i++)
            ph[i] += t[i + 1] - t[i];
    }
    double k = n + fail ? (double)(n + fail) / 1e6 : 1;
    printf("conn_per_s %.1f\nfailed %llu\n", n / (now_s() - t0), (unsigned long long)fail);
    printf("socket_us %.1f\nconnect_us %.1f\nrtt_us %.1f\nclose_us %.1f\n", ph[0] / k, ph[1] / k,
           ph[2] / k, ph[3] / k);
}

static void run_idle(const char *host, int port, int n, int ports)
{
    int ok = 0;
    for (int i = 0; i < n; i++) { /* the first failure (connect_to printed it) ends it */
        if (connect_to(host, port + i % (ports > 0 ? ports : 1)) < 0)
            break;
        ok++;
    }
    printf("open %d\n", ok);
    fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0)
        ;
}

static void *hold_port(void *p)
{
    int l = listen_on((int)(intptr_t)p);
    for (;;) /* accepted connections are kept open (never read, never closed) */
        S_accept(l, NULL, NULL);
    return NULL;
}

static void run_hold(int port, int ports)
{
    pthread_t t;
    for (int i = 1; i < ports; i++)
        pthread_create(&t, NULL, hold_port, (void *)(intptr_t)(port + i));
    printf("READY\n");
    hold_port((void *)(intptr_t)port);
}

int main(int argc, char **argv)
{
    struct rlimit rl;
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (argc >= 3 && !strcmp(argv[1], "sink"))
        run_sink(atoi(argv[2]));
    else if (argc >= 5 && !strcmp(argv[1], "bulk"))
        run_bulk(argv[2], atoi(argv[3]), atof(argv[4]), argc > 5 ? atoi(argv[5]) : 1);
    else if (argc >= 3 && !strcmp(argv[1], "echo"))
        run_echo(atoi(argv[2]));
    else if (argc >= 5 && !strcmp(argv[1], "rate"))
        run_rate(argv[2], atoi(argv[3]), atof(argv[4]));
    else if (argc >= 5 && !strcmp(argv[1], "idle"))
        run_idle(argv[2], atoi(argv[3]), atoi(argv[4]), argc > 5 ? atoi(argv[5]) : 1);
    else if (argc >= 3 && !strcmp(argv[1], "hold"))
        run_hold(atoi(argv[2]), argc > 3 ? atoi(argv[3]) : 1);
    else {
        fprintf(stderr, "usage: see the comment at the top of bench/tcp_bench.c\n");
        return 2;
    }
    return 0;
}
