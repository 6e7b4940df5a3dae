/* TCP transfers through libshmnet, checked with SHA-256 (tests/integration/tcp.sh,
 * tcp_scale.sh).
 *
 *   tcp_xfer connect IP PORT [options]   one connection (or --conns N in parallel threads)
 *   tcp_xfer listen PORT [options]       accept --conns N connections (default 1) and serve
 *                                        them one after the other
 *   tcp_xfer storm IP PORT N THREADS     N short connections: send "storm <i>\n", SHUT_WR,
 *                                        read until EOF, expect the same line back
 *   tcp_xfer refused IP PORT             expect connect to fail with ECONNREFUSED
 *   tcp_xfer reset IP PORT               connect, send "reset\n", expect ECONNRESET from recv
 *   tcp_xfer clients IP PORT N CONC BYTES  N connections, at most CONC open at once, all in one
 *                                        thread (non-blocking sockets, shmnet_poll), speaking
 *                                        the digest-echo protocol below; BYTES per connection
 *   tcp_xfer server PORT N               serve N digest-echo connections the same way
 *
 * Options: --send N (N bytes of a deterministic pattern) or --send-file F, --recv
 * (read until EOF), --recv-first (read until EOF before sending: a server facing a peer
 * that sends everything first), --chunk N (send size, default 65536), --nodelay.
 * Per connection the program sends, shuts down writing, then reads until EOF (half-close),
 * and prints "sent BYTES SHA256" and "recv BYTES SHA256" lines, then "time SECONDS MBPS".
 * The exit status is 0 only if every step succeeded.
 *
 * Digest-echo protocol (both directions checked per connection, also by the kernel-side
 * peer of tcp_scale.sh): the client sends its bytes (connection i: the pattern at offset
 * i << 40, so every connection carries other bytes), then SHUT_WR. The server sends back
 * every byte it receives XOR 0x5a as it arrives, and after the client's FIN the SHA-256 of
 * all it received as 64 hex digits and a newline, then closes. The client checks the echo
 * byte by byte and the digest against its own. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
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
    char cc[32]; /* asked while the connection is up */
    socklen_t cl = sizeof(cc);
    if (shmnet_getsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, cc, &cl) < 0)
        cl = 0;
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
    if (cl)
        printf("%s cc %.*s\n", who, (int)cl, cc); /* the socket's congestion control */
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
static int storm_n, storm_threads;

/* Thread k makes connections k, k + threads, ... one after the other. */
static void *storm_thread(void *arg)
{
    char msg[64], back[128];
    long fails = 0;

    for (int i = (int)(intptr_t)arg; i < storm_n; i += storm_threads) {
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

/* ---- many connections in one thread: digest-echo clients and server ---- */
#define ECHO_XOR   0x5a
#define DIGEST_LEN 65 /* 64 hex digits and '\n' */

enum mstate { M_FREE, M_CONNECTING, M_RUN, M_HUP };

struct mconn {
    int fd;
    enum mstate st;
    long id;
    uint64_t sent, got; /* client: pattern bytes sent, echo bytes checked */
    struct sha256 sha;  /* client: of what it sent; server: of what it received */
    char digest[DIGEST_LEN + 1];
    uint32_t dlen;
    bool wr_shut, eof;
    uint8_t *pend; /* server: echo bytes not yet taken by send */
    uint32_t plen, poff;
    double since; /* last progress, for the stall report */
};

static long m_fails;
/* Clients: connections established so far, and how many must be before any of them may
 * shut down writing (all of them when every connection is opened at once: then all are
 * open and established at the same moment, however fast the peer answers). */
static long m_established, m_barrier;

static void m_fail(struct mconn *c, const char *what, int err)
{
    if (m_fails++ < 20)
        fprintf(stderr, "conn %ld: %s%s%s (sent %llu, echo %llu, digest %u)\n", c->id, what,
                err ? ": " : "", err ? strerror(err) : "", (unsigned long long)c->sent,
                (unsigned long long)c->got, c->dlen);
}

static void m_close(struct mconn *c)
{
    if (c->fd >= 0)
        shmnet_close(c->fd);
    free(c->pend);
    memset(c, 0, sizeof(*c));
    c->fd = -1;
}

/* Each shmnet socket holds a placeholder kernel fd: allow as many as the hard limit. */
static void raise_nofile(void)
{
    struct rlimit r;

    if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
        r.rlim_cur = r.rlim_max;
        setrlimit(RLIMIT_NOFILE, &r);
    }
}

/* Client: returns 1 when the connection is finished (closed), 0 to go on. */
static int mc_step(struct mconn *c, short rev, uint64_t bytes, uint8_t *buf, uint8_t *ref)
{
    if (c->st == M_CONNECTING) {
        int err = 0;
        socklen_t l = sizeof(err);
        if (!(rev & (POLLOUT | POLLERR | POLLHUP)))
            return 0;
        if (shmnet_getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0)
            err = errno;
        if (err) {
            m_fail(c, "connect", err);
            m_close(c);
            return 1;
        }
        c->st = M_RUN;
        c->since = now_s();
        m_established++;
    }
    while (c->sent < bytes) {
        size_t k = bytes - c->sent < 65536 ? (size_t)(bytes - c->sent) : 65536;
        pattern(buf, ((uint64_t)c->id << 40) + c->sent, k);
        ssize_t w = shmnet_send(c->fd, buf, k, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR)
                break;
            m_fail(c, "send", errno);
            m_close(c);
            return 1;
        }
        sha_update(&c->sha, buf, (size_t)w);
        c->sent += (uint64_t)w;
        c->since = now_s();
    }
    if (c->sent == bytes && !c->wr_shut && m_established >= m_barrier) {
        if (shmnet_shutdown(c->fd, SHUT_WR) < 0) {
            m_fail(c, "shutdown", errno);
            m_close(c);
            return 1;
        }
        c->wr_shut = true;
    }
    for (;;) {
        ssize_t k = shmnet_recv(c->fd, buf, 65536, MSG_DONTWAIT);
        if (k < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return 0;
            m_fail(c, "recv", errno);
            m_close(c);
            return 1;
        }
        if (k == 0)
            break;
        c->since = now_s();
        size_t e = c->got < bytes ? (size_t)(bytes - c->got) : 0, off = 0;
        if (e > (size_t)k)
            e = (size_t)k;
        if (e) { /* the echo: our pattern XOR 0x5a */
            pattern(ref, ((uint64_t)c->id << 40) + c->got, e);
            for (size_t i = 0; i < e; i++)
                if ((uint8_t)(ref[i] ^ ECHO_XOR) != buf[i]) {
                    c->got += i;
                    m_fail(c, "echo differs from what was sent", 0);
                    m_close(c);
                    return 1;
                }
            c->got += e;
            off = e;
        }
        if ((size_t)k - off > DIGEST_LEN - c->dlen) {
            m_fail(c, "more bytes than echo and digest", 0);
            m_close(c);
            return 1;
        }
        memcpy(c->digest + c->dlen, buf + off, (size_t)k - off);
        c->dlen += (uint32_t)((size_t)k - off);
    }
    /* EOF: the whole echo and the peer's digest of what it received. */
    char want[65];
    sha_hex(&c->sha, want);
    bool ok = c->sent == bytes && c->got == bytes && c->dlen == DIGEST_LEN &&
              memcmp(c->digest, want, 64) == 0 && c->digest[64] == '\n';
    if (!ok)
        m_fail(c,
               c->got != bytes || c->dlen != DIGEST_LEN ? "short reply"
                                                        : "the peer received other bytes",
               0);
    if (shmnet_close(c->fd) < 0 && ok)
        m_fail(c, "close", errno);
    c->fd = -1;
    m_close(c);
    return 1;
}

static void m_report_stalled(struct mconn *cs, int n)
{
    int shown = 0;
    for (int i = 0; i < n && shown < 10; i++)
        if (cs[i].st != M_FREE) {
            fprintf(stderr, "stalled: conn %ld state %d sent %llu echo %llu digest %u eof %d\n",
                    cs[i].id, cs[i].st, (unsigned long long)cs[i].sent,
                    (unsigned long long)cs[i].got, cs[i].dlen, cs[i].eof);
            shown++;
        }
}

#define M_STALL_S 60.0 /* no progress on any connection for this long: give up */

static int run_clients(long n, int conc, uint64_t bytes)
{
    struct mconn *cs = calloc((size_t)conc, sizeof(*cs));
    struct pollfd *pf = calloc((size_t)conc, sizeof(*pf));
    int *map = calloc((size_t)conc, sizeof(*map));
    uint8_t *buf = malloc(65536), *ref = malloc(65536);
    long started = 0, done = 0, maxopen = 0, open = 0;
    double t0 = now_s(), last = t0;

    bool released = false;

    if (!cs || !pf || !map || !buf || !ref)
        return 1;
    for (int i = 0; i < conc; i++)
        cs[i].fd = -1;
    m_barrier = conc >= n ? n : 0;
    while (done < n) {
        if (m_barrier && !released && m_established >= m_barrier) {
            /* The last one is established: let every connection finish now. */
            released = true;
            for (int i = 0; i < conc; i++)
                if (cs[i].st == M_RUN && mc_step(&cs[i], 0, bytes, buf, ref)) {
                    done++;
                    open--;
                }
        }
        for (int i = 0; i < conc && started < n; i++) {
            if (cs[i].st != M_FREE)
                continue;
            struct mconn *c = &cs[i];
            memset(c, 0, sizeof(*c));
            c->id = started++;
            sha_init(&c->sha);
            c->fd = shmnet_socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            if (c->fd < 0) {
                m_fail(c, "socket", errno);
                done++;
                continue;
            }
            if (shmnet_connect(c->fd, (struct sockaddr *)&dst, sizeof(dst)) < 0 &&
                errno != EINPROGRESS) {
                m_fail(c, "connect", errno);
                m_close(c);
                done++;
                continue;
            }
            c->st = M_CONNECTING;
            c->since = now_s();
            open++;
        }
        if (open > maxopen)
            maxopen = open;
        int np = 0;
        for (int i = 0; i < conc; i++) {
            if (cs[i].st == M_FREE)
                continue;
            pf[np].fd = cs[i].fd;
            pf[np].events =
                (short)(POLLIN | (cs[i].st == M_CONNECTING || (cs[i].sent < bytes && !cs[i].wr_shut)
                                      ? POLLOUT
                                      : 0));
            map[np++] = i;
        }
        if (!np)
            continue;
        int r = shmnet_poll(pf, (nfds_t)np, 1000);
        if (r < 0 && errno != EINTR) {
            perror("poll");
            return 1;
        }
        double t = now_s();
        if (r > 0)
            last = t;
        for (int k = 0; k < np && r > 0; k++) {
            if (!pf[k].revents)
                continue;
            if (mc_step(&cs[map[k]], pf[k].revents, bytes, buf, ref)) {
                done++;
                open--;
            }
        }
        if (t - last > M_STALL_S) {
            fprintf(stderr, "no progress for %.0f s\n", M_STALL_S);
            m_report_stalled(cs, conc);
            m_fails += n - done;
            break;
        }
    }
    printf("clients %ld, %ld failed, at most %ld open at once%s, %llu bytes each way each, "
           "%.2f s\n",
           n, m_fails, maxopen, m_barrier ? " (all established before any finished)" : "",
           (unsigned long long)bytes, now_s() - t0);
    for (int i = 0; i < conc; i++)
        if (cs[i].st != M_FREE)
            m_close(&cs[i]);
    free(cs);
    free(pf);
    free(map);
    free(buf);
    free(ref);
    return m_fails ? 1 : 0;
}

/* Server: returns 1 when the connection is finished (closed), 0 to go on. */
static int ms_step(struct mconn *c, short rev)
{
    if (c->st == M_HUP) { /* our FIN is out: close once the peer acknowledged it */
        if (rev & (POLLHUP | POLLERR)) {
            m_close(c);
            return 1;
        }
        return 0;
    }
    for (;;) {
        /* Flush what waits, then read more only if all of it went out (backpressure). */
        while (c->poff < c->plen) {
            ssize_t w = shmnet_send(c->fd, c->pend + c->poff, c->plen - c->poff,
                                    MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    return 0;
                m_fail(c, "send", errno);
                m_close(c);
                return 1;
            }
            c->poff += (uint32_t)w;
            c->since = now_s();
        }
        c->poff = c->plen = 0;
        if (c->eof) {
            if (shmnet_shutdown(c->fd, SHUT_WR) < 0) {
                m_fail(c, "shutdown", errno);
                m_close(c);
                return 1;
            }
            c->st = M_HUP;
            return 0;
        }
        ssize_t k = shmnet_recv(c->fd, c->pend, 65536, MSG_DONTWAIT);
        if (k < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return 0;
            m_fail(c, "recv", errno);
            m_close(c);
            return 1;
        }
        c->since = now_s();
        if (k == 0) {
            char hex[65];
            sha_hex(&c->sha, hex);
            memcpy(c->pend, hex, 64);
            c->pend[64] = '\n';
            c->plen = DIGEST_LEN;
            c->eof = true;
            continue;
        }
        sha_update(&c->sha, c->pend, (size_t)k);
        c->got += (uint64_t)k;
        for (ssize_t i = 0; i < k; i++)
            c->pend[i] ^= ECHO_XOR;
        c->plen = (uint32_t)k;
    }
}

static int run_server(int port, long n)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int one = 1, l = shmnet_socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int cap = 4096;
    struct mconn *cs = calloc((size_t)cap, sizeof(*cs));
    struct pollfd *pf = calloc((size_t)cap + 1, sizeof(*pf));
    int *map = calloc((size_t)cap + 1, sizeof(*map));
    long accepted = 0, done = 0, maxopen = 0, open = 0;
    double t0 = now_s(), last = t0;

    if (!cs || !pf || !map)
        return 1;
    /* TCP_NODELAY on the listener: every accepted connection must have it (Linux copies
     * it to the child), whichever worker accepted it (docs/workers.md: the listener's
     * members get its options). */
    if (l < 0 || shmnet_setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        shmnet_setsockopt(l, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
        shmnet_bind(l, (struct sockaddr *)&sin, sizeof(sin)) < 0 || shmnet_listen(l, 4096) < 0) {
        perror("listen");
        return 1;
    }
    for (int i = 0; i < cap; i++)
        cs[i].fd = -1;
    printf("LISTENING\n");
    fflush(stdout);
    while (done < n) {
        int np = 0;
        if (accepted < n) {
            pf[np].fd = l;
            pf[np].events = POLLIN;
            map[np++] = -1;
        }
        for (int i = 0; i < cap; i++) {
            if (cs[i].st == M_FREE)
                continue;
            pf[np].fd = cs[i].fd;
            pf[np].events = cs[i].st == M_HUP ? 0 : cs[i].plen ? POLLOUT : POLLIN;
            map[np++] = i;
        }
        int r = shmnet_poll(pf, (nfds_t)np, 1000);
        if (r < 0 && errno != EINTR) {
            perror("poll");
            return 1;
        }
        double t = now_s();
        if (r > 0)
            last = t;
        for (int k = 0; k < np && r > 0; k++) {
            if (!pf[k].revents)
                continue;
            if (map[k] >= 0) {
                if (ms_step(&cs[map[k]], pf[k].revents)) {
                    done++;
                    open--;
                }
                continue;
            }
            /* The listener: take what is queued while there is a free slot. */
            for (int i = 0; i < cap && accepted < n; i++) {
                if (cs[i].st != M_FREE)
                    continue;
                int fd = shmnet_accept4(l, NULL, NULL, SOCK_NONBLOCK);
                if (fd < 0) {
                    if (errno != EAGAIN && errno != EINTR) {
                        perror("accept");
                        return 1;
                    }
                    break;
                }
                int nd = 0;
                socklen_t ndl = sizeof(nd);
                if (shmnet_getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nd, &ndl) < 0 || !nd) {
                    fprintf(stderr, "connection %ld: no TCP_NODELAY from the listener\n", accepted);
                    return 1;
                }
                struct mconn *c = &cs[i];
                memset(c, 0, sizeof(*c));
                c->fd = fd;
                c->id = accepted++;
                c->st = M_RUN;
                c->since = t;
                c->pend = malloc(65536);
                if (!c->pend)
                    return 1;
                sha_init(&c->sha);
                open++;
            }
        }
        if (open > maxopen)
            maxopen = open;
        if (t - last > M_STALL_S) {
            fprintf(stderr, "no progress for %.0f s (%ld accepted)\n", M_STALL_S, accepted);
            m_report_stalled(cs, cap);
            m_fails += n - done;
            break;
        }
    }
    shmnet_close(l);
    printf("served %ld, %ld failed, at most %ld open at once, %.2f s\n", n, m_fails, maxopen,
           now_s() - t0);
    for (int i = 0; i < cap; i++)
        if (cs[i].st != M_FREE)
            m_close(&cs[i]);
    free(cs);
    free(pf);
    free(map);
    return m_fails ? 1 : 0;
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
                    "       tcp_xfer storm IP PORT N THREADS | refused IP PORT | reset IP PORT\n"
                    "       tcp_xfer clients IP PORT N CONC BYTES | server PORT N\n");
    return 2;
}

int main(int argc, char **argv)
{
    int conns = 1, argi;

    if (argc < 3)
        return usage();
    const char *mode = argv[1];
    raise_nofile();
    if (!strcmp(mode, "clients")) {
        if (argc != 7 || parse_dst(argv[2], argv[3]) < 0 || atol(argv[4]) < 1 ||
            atoi(argv[5]) < 1 || atoi(argv[5]) > 65536)
            return usage();
        return run_clients(atol(argv[4]), atoi(argv[5]), strtoull(argv[6], NULL, 0));
    }
    if (!strcmp(mode, "server")) {
        if (argc != 4 || atol(argv[3]) < 1)
            return usage();
        return run_server(atoi(argv[2]), atol(argv[3]));
    }
    if (!strcmp(mode, "storm")) {
        if (argc != 6 || parse_dst(argv[2], argv[3]) < 0)
            return usage();
        storm_n = atoi(argv[4]);
        storm_threads = atoi(argv[5]);
        pthread_t th[64];
        long fails = 0;
        double t0 = now_s();
        if (storm_threads < 1 || storm_threads > 64)
            return usage();
        for (int k = 0; k < storm_threads; k++)
            if (pthread_create(&th[k], NULL, storm_thread, (void *)(intptr_t)k)) {
                perror("pthread_create");
                return 1;
            }
        for (int k = 0; k < storm_threads; k++) {
            void *f;
            pthread_join(th[k], &f);
            fails += (long)f;
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
    pthread_t *th = calloc((size_t)conns, sizeof(*th));
    int fails = 0;
    if (!th)
        return 1;
    if (!strcmp(mode, "connect")) {
        /* One thread per connection (each claims a channel of its own, up to
         * clients.channels); a single connection runs on the main thread. */
        if (conns == 1) {
            fails = client_thread(NULL) != NULL;
        } else {
            for (int i = 0; i < conns; i++)
                if (pthread_create(&th[i], NULL, client_thread, (void *)(intptr_t)i)) {
                    perror("pthread_create");
                    return 1;
                }
            for (int i = 0; i < conns; i++) {
                void *r;
                pthread_join(th[i], &r);
                fails += r != NULL;
            }
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
    free(th);
    return fails ? 1 : 0;
}
