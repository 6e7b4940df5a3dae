/* TCP transfers through libshmnet, checked with SHA-256 (tests/integration/tcp.sh).
 *
 *   tcp_xfer connect IP PORT [options]   one connection (or --conns N in parallel threads)
 *   tcp_xfer listen PORT [options]       accept --conns N connections (default 1) and serve
 *                                        each in a thread
 *   tcp_xfer storm IP PORT N THREADS     N short connections: send "storm <i>\n", SHUT_WR,
 *                                        read until EOF, expect the same line back
 *   tcp_xfer refused IP PORT             expect connect to fail with ECONNREFUSED
 *   tcp_xfer reset IP PORT               connect, send "reset\n", expect ECONNRESET from recv
 *
 * Options: --send N (N bytes of a deterministic pattern) or --send-file F, --recv
 * (read until EOF), --recv-first (read until EOF before sending: a server facing a peer
 * that sends everything first), --chunk N (send size, default 65536), --nodelay.
 * Per connection the program sends, shuts down writing, then reads until EOF (half-close),
 * and prints "sent BYTES SHA256" and "recv BYTES SHA256" lines, then "time SECONDS MBPS".
 * The exit status is 0 only if every step succeeded.
 *
 * WORKAROUND (daemon bug, reported): the daemon lays channels out with a page-rounded
 * stride (daemon/client.c chan()) while shm.h and the library index struct shm_channel[],
 * so requests on any channel but 0 are never seen. Until that is fixed, parallel clients
 * are separate processes (fork: each attaches its own session and uses channel 0) and
 * the server serves its connections one after the other on the main thread. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shmnet.h"

/* ---- SHA-256 (FIPS 180-4), small and self-contained ---- */
struct sha256 {
    uint32_t h[8];
    uint64_t len;
    uint8_t buf[64];
    size_t n;
};

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha_block(struct sha256 *c, const uint8_t *p)
{
    uint32_t w[64], a, b, d, e, f, g, h, cc;

    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = c->h[0], b = c->h[1], cc = c->h[2], d = c->h[3];
    e = c->h[4], f = c->h[5], g = c->h[6], h = c->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 =
            h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & cc) ^ (b & cc));
        h = g, g = f, f = e, e = d + t1, d = cc, cc = b, b = a, a = t1 + t2;
    }
    c->h[0] += a, c->h[1] += b, c->h[2] += cc, c->h[3] += d;
    c->h[4] += e, c->h[5] += f, c->h[6] += g, c->h[7] += h;
}

static void sha_init(struct sha256 *c)
{
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(c->h, iv, sizeof(iv));
    c->len = 0;
    c->n = 0;
}

static void sha_update(struct sha256 *c, const uint8_t *p, size_t n)
{
    c->len += n;
    while (n) {
        if (c->n == 0 && n >= 64) {
            sha_block(c, p);
            p += 64;
            n -= 64;
            continue;
        }
        size_t k = 64 - c->n < n ? 64 - c->n : n;
        memcpy(c->buf + c->n, p, k);
        c->n += k;
        p += k;
        n -= k;
        if (c->n == 64) {
            sha_block(c, c->buf);
            c->n = 0;
        }
    }
}

static void sha_hex(struct sha256 *c, char out[65])
{
    uint64_t bits = c->len * 8;
    uint8_t pad[72] = {0x80};
    size_t padlen = (c->n < 56 ? 56 : 120) - c->n;

    for (int i = 0; i < 8; i++)
        pad[padlen + i] = (uint8_t)(bits >> (56 - 8 * i));
    sha_update(c, pad, padlen + 8);
    for (int i = 0; i < 8; i++)
        sprintf(out + 8 * i, "%08x", c->h[i]);
}

/* ---- the transfer ---- */
static const char *opt_file;
static uint64_t opt_send;
static int opt_recv, opt_nodelay, opt_recv_first;
static size_t opt_chunk = 65536;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Deterministic pattern: byte i of the stream (xorshift of the 8-byte block index). */
static void pattern(uint8_t *b, uint64_t off, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t x = (off + i) / 8 + 0x9e3779b97f4a7c15ull;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b[i] = (uint8_t)(x >> (8 * ((off + i) % 8)));
    }
}

static int send_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t k = shmnet_send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Read until EOF into the digest. */
static int recv_all(int fd, uint8_t *buf, struct sha256 *rx, uint64_t *got, const char *who)
{
    for (;;) {
        ssize_t k = shmnet_recv(fd, buf, 65536, 0);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "%s: recv after %llu bytes: %s\n", who, (unsigned long long)*got,
                    strerror(errno));
            return -1;
        }
        if (k == 0)
            break;
        sha_update(rx, buf, (size_t)k);
        *got += (uint64_t)k;
    }
    return 0;
}

/* Send (pattern or file), SHUT_WR, read until EOF. Returns 0 or -1 (message printed). */
static int xfer(int fd, const char *who)
{
    struct sha256 tx, rx;
    char htx[65], hrx[65];
    uint8_t *buf = malloc(opt_chunk > 65536 ? opt_chunk : 65536);
    uint64_t sent = 0, got = 0;
    double t0 = now_s();
    int rc = -1, ffd = -1;

    if (!buf)
        return -1;
    sha_init(&tx);
    sha_init(&rx);
    if (opt_recv_first && recv_all(fd, buf, &rx, &got, who) < 0)
        goto out;
    if (opt_file) {
        ffd = open(opt_file, O_RDONLY | O_CLOEXEC);
        if (ffd < 0) {
            perror(opt_file);
            goto out;
        }
        for (;;) {
            ssize_t k = read(ffd, buf, opt_chunk);
            if (k < 0) {
                perror("read file");
                goto out;
            }
            if (k == 0)
                break;
            sha_update(&tx, buf, (size_t)k);
            if (send_all(fd, buf, (size_t)k) < 0) {
                fprintf(stderr, "%s: send: %s\n", who, strerror(errno));
                goto out;
            }
            sent += (uint64_t)k;
        }
    } else {
        while (sent < opt_send) {
            size_t k = opt_send - sent < opt_chunk ? (size_t)(opt_send - sent) : opt_chunk;
            pattern(buf, sent, k);
            sha_update(&tx, buf, k);
            if (send_all(fd, buf, k) < 0) {
                fprintf(stderr, "%s: send: %s\n", who, strerror(errno));
                goto out;
            }
            sent += k;
        }
    }
    if (shmnet_shutdown(fd, SHUT_WR) < 0) {
        fprintf(stderr, "%s: shutdown: %s\n", who, strerror(errno));
        goto out;
    }
    if (!opt_recv_first && recv_all(fd, buf, &rx, &got, who) < 0)
        goto out;
    double dt = now_s() - t0;
    sha_hex(&tx, htx);
    sha_hex(&rx, hrx);
    pthread_mutex_lock(&out_lock);
    printf("%s sent %llu %s\n", who, (unsigned long long)sent, htx);
    if (opt_recv)
        printf("%s recv %llu %s\n", who, (unsigned long long)got, hrx);
    printf("%s time %.3f %.1f\n", who, dt, dt > 0 ? (double)(sent + got) / dt / 1e6 : 0.0);
    fflush(stdout);
    pthread_mutex_unlock(&out_lock);
    rc = 0;
out:
    if (ffd >= 0)
        close(ffd);
    free(buf);
    return rc;
}

static struct sockaddr_in dst;

static int do_connect(void)
{
    int fd = shmnet_socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        perror("socket");
        return -1;
    }
    if (opt_nodelay) {
        int one = 1;
        shmnet_setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    if (shmnet_connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0) {
        fprintf(stderr, "connect: %s\n", strerror(errno));
        shmnet_close(fd);
        return -1;
    }
    return fd;
}

static void *client_thread(void *arg)
{
    char who[32];
    int fd = do_connect();

    snprintf(who, sizeof(who), "c%ld", (long)(intptr_t)arg);
    if (fd < 0)
        return (void *)1;
    int r = xfer(fd, who);
    shmnet_close(fd);
    return (void *)(intptr_t)(r < 0);
}

static void *server_thread(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char who[32];

    snprintf(who, sizeof(who), "s%d", fd);
    int r = xfer(fd, who);
    shmnet_close(fd);
    return (void *)(intptr_t)(r < 0);
}

/* ---- storm ---- */
static int storm_n, storm_threads, storm_next, storm_n_one;

static void *storm_thread(void *unused)
{
    char msg[64], back[128];
    long fails = 0;

    for (;;) {
        if (storm_n_one-- <= 0)
            break;
        int i = storm_next;
        int len = snprintf(msg, sizeof(msg), "storm %d\n", i);
        int fd = do_connect();
        size_t got = 0;
        if (fd < 0) {
            fails++;
            continue;
        }
        if (send_all(fd, (const uint8_t *)msg, (size_t)len) < 0 ||
            shmnet_shutdown(fd, SHUT_WR) < 0) {
            fprintf(stderr, "storm %d: send: %s\n", i, strerror(errno));
            fails++;
            shmnet_close(fd);
            continue;
        }
        for (;;) {
            ssize_t k = shmnet_recv(fd, back + got, sizeof(back) - got, 0);
            if (k <= 0) {
                if (k < 0)
                    fprintf(stderr, "storm %d: recv: %s\n", i, strerror(errno));
                break;
            }
            got += (size_t)k;
        }
        if (got != (size_t)len || memcmp(back, msg, (size_t)len) != 0) {
            fprintf(stderr, "storm %d: got %zu bytes back, want %d\n", i, got, len);
            fails++;
        }
        shmnet_close(fd);
    }
    return (void *)fails;
}

static int parse_dst(const char *ip, const char *port)
{
    dst.sin_family = AF_INET;
    dst.sin_port = htons((uint16_t)atoi(port));
    return inet_pton(AF_INET, ip, &dst.sin_addr) == 1 ? 0 : -1;
}

static int usage(void)
{
    fprintf(stderr, "usage: tcp_xfer connect IP PORT | listen PORT [--send N|--send-file F]"
                    " [--recv] [--conns N] [--chunk N] [--nodelay]\n"
                    "       tcp_xfer storm IP PORT N THREADS | refused IP PORT | reset IP PORT\n");
    return 2;
}

int main(int argc, char **argv)
{
    int conns = 1, argi;

    if (argc < 3)
        return usage();
    const char *mode = argv[1];
    if (!strcmp(mode, "storm")) {
        if (argc != 6 || parse_dst(argv[2], argv[3]) < 0)
            return usage();
        storm_n = atoi(argv[4]);
        storm_threads = atoi(argv[5]);
        pid_t kids[64];
        long fails = 0;
        double t0 = now_s();
        if (storm_threads < 1 || storm_threads > 64)
            return usage();
        for (int k = 0; k < storm_threads; k++) {
            kids[k] = fork();
            if (kids[k] == 0) { /* this child: connections k, k + threads, ... */
                long f = 0;
                for (int i = k; i < storm_n; i += storm_threads) {
                    storm_next = i;
                    storm_n_one = 1;
                    f += (long)storm_thread(NULL);
                }
                _exit(f > 100 ? 100 : (int)f);
            }
        }
        for (int k = 0; k < storm_threads; k++) {
            int st;
            waitpid(kids[k], &st, 0);
            fails += WIFEXITED(st) ? WEXITSTATUS(st) : 1;
        }
        printf("storm %d connections, %ld failed, %.2f s\n", storm_n, fails, now_s() - t0);
        return fails ? 1 : 0;
    }
    if (!strcmp(mode, "refused") || !strcmp(mode, "reset")) {
        if (argc != 4 || parse_dst(argv[2], argv[3]) < 0)
            return usage();
        int fd = shmnet_socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) {
            perror("socket");
            return 1;
        }
        int r = shmnet_connect(fd, (struct sockaddr *)&dst, sizeof(dst));
        if (!strcmp(mode, "refused")) {
            int e = errno;
            printf("connect: %s\n", r == 0 ? "success" : strerror(e));
            shmnet_close(fd);
            return r < 0 && e == ECONNREFUSED ? 0 : 1;
        }
        if (r < 0) {
            perror("connect");
            return 1;
        }
        char b[64];
        if (send_all(fd, (const uint8_t *)"reset\n", 6) < 0) {
            perror("send");
            return 1;
        }
        ssize_t k;
        while ((k = shmnet_recv(fd, b, sizeof(b), 0)) > 0) {
        }
        int e = errno;
        printf("recv: %zd %s\n", k, k < 0 ? strerror(e) : "EOF");
        /* After the reset: send fails with EPIPE (MSG_NOSIGNAL), poll shows HUP. */
        ssize_t s = shmnet_send(fd, "x", 1, MSG_NOSIGNAL);
        int se = errno;
        struct pollfd p = {.fd = fd, .events = POLLIN | POLLOUT};
        int pr = shmnet_poll(&p, 1, 0);
        printf("send: %zd %s; poll %d revents 0x%x\n", s, s < 0 ? strerror(se) : "ok", pr,
               (unsigned)p.revents);
        shmnet_close(fd);
        return k < 0 && e == ECONNRESET && s < 0 && se == EPIPE && (p.revents & POLLHUP) ? 0 : 1;
    }
    if (!strcmp(mode, "connect")) {
        if (argc < 4 || parse_dst(argv[2], argv[3]) < 0)
            return usage();
        argi = 4;
    } else if (!strcmp(mode, "listen")) {
        argi = 3;
    } else {
        return usage();
    }
    for (; argi < argc; argi++) {
        const char *a = argv[argi], *v = argi + 1 < argc ? argv[argi + 1] : NULL;
        if (!strcmp(a, "--recv"))
            opt_recv = 1;
        else if (!strcmp(a, "--recv-first"))
            opt_recv = opt_recv_first = 1;
        else if (!strcmp(a, "--nodelay"))
            opt_nodelay = 1;
        else if (!strcmp(a, "--send") && v)
            opt_send = strtoull(v, NULL, 0), argi++;
        else if (!strcmp(a, "--send-file") && v)
            opt_file = v, argi++;
        else if (!strcmp(a, "--conns") && v)
            conns = atoi(v), argi++;
        else if (!strcmp(a, "--chunk") && v)
            opt_chunk = (size_t)strtoul(v, NULL, 0), argi++;
        else
            return usage();
    }
    if (conns < 1 || conns > 4096 || opt_chunk == 0 || opt_chunk > (16u << 20))
        return usage();
    pid_t *kids = calloc((size_t)conns, sizeof(*kids));
    int fails = 0;
    if (!kids)
        return 1;
    if (!strcmp(mode, "connect")) {
        for (int i = 0; i < conns; i++) {
            kids[i] = fork();
            if (kids[i] == 0)
                _exit(client_thread((void *)(intptr_t)i) != NULL);
        }
        for (int i = 0; i < conns; i++) {
            int st;
            waitpid(kids[i], &st, 0);
            fails += !WIFEXITED(st) || WEXITSTATUS(st) != 0;
        }
    } else {
        struct sockaddr_in sin = {.sin_family = AF_INET,
                                  .sin_port = htons((uint16_t)atoi(argv[2]))};
        int one = 1, l = shmnet_socket(AF_INET, SOCK_STREAM, 0);
        if (l < 0 || shmnet_setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
            shmnet_bind(l, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
            shmnet_listen(l, conns > 128 ? conns : 128) < 0) {
            perror("listen");
            return 1;
        }
        printf("LISTENING\n");
        fflush(stdout);
        for (int i = 0; i < conns; i++) {
            struct sockaddr_in peer;
            socklen_t pl = sizeof(peer);
            int c = shmnet_accept(l, (struct sockaddr *)&peer, &pl);
            if (c < 0) {
                perror("accept");
                return 1;
            }
            fails += server_thread((void *)(intptr_t)c) != NULL;
        }
        shmnet_close(l);
    }
    free(kids);
    return fails ? 1 : 0;
}
