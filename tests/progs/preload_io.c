/* preload_io: data and descriptor calls of an ordinary socket program, for the LD_PRELOAD
 * interposer (tests/integration/preload.sh runs it with LD_PRELOAD=libshmnet_preload.so).
 * Plain libc calls only: nothing here knows about shmnet.
 *
 *   preload_io TEST IP PORT [FILE]
 *
 * IP:PORT is the kernel peer of preload.sh (a line-command server: "ECHO", "SINK",
 * "SEND n delay_ms", "SHUTWR delay_ms", "HOLD"; UDP echo on the same port). Tests:
 *   tcp       socket/connect/write/read 1 MiB through the echo, getpeername/getsockname,
 *             writev/readv, sendmsg/recvmsg (MSG_WAITALL), MSG_PEEK, MSG_DONTWAIT,
 *             shutdown(SHUT_WR) -> EOF; prints "local A:P"
 *   udp       sendmsg/recvmsg with iovecs and addresses, sendto/recvfrom (0 and 1 byte),
 *             truncation (MSG_TRUNC in msg_flags and as a flag), connected UDP with
 *             write/read and writev/readv, sendmmsg/recvmmsg
 *   restart   SA_RESTART: a recv interrupted by a handler with it goes on; without it, or
 *             with SO_RCVTIMEO, EINTR
 *   lowat     SO_RCVLOWAT: poll waits for that many bytes
 *   pktinfo   a UDP socket on 0.0.0.0 with IP_PKTINFO and IP_RECVTOS: recvmsg's control
 *             messages (the local address, the echo's TOS 0x28, MSG_CTRUNC), sendmsg from the
 *             address IP_PKTINFO names
 *   sendfile  FILE to the SINK with sendfile (offset pointer, then the file position);
 *             prints the peer's "sink <bytes> <sha256>"
 *   sendfile_nb  FILE from the file position to a slow SINK on a non-blocking socket: the
 *             position follows what was sent through every EAGAIN; prints "sink ..."
 *   dup       dup/dup2/dup3/F_DUPFD/F_DUPFD_CLOEXEC of a connected socket: every copy works,
 *             close of a copy keeps the socket open, dup2 onto another socket closes that
 *             one; prints "eof-port P" for each connection the peer must see closed
 *   rawclose  sockets closed with syscall(SYS_close), close_range and closefrom; prints
 *             "eof-port P" for each connection the peer must see closed
 *   rawclose_asm  a socket closed by the bare system call, whose number a new socket
 *             takes: prints "eof-port P" and runs 3 s more
 *   fcntl     F_GETFL/F_SETFL O_NONBLOCK, ioctl FIONBIO, ioctl FIONREAD/SIOCINQ,
 *             SOCK_NONBLOCK connect (EINPROGRESS, POLLOUT, SO_ERROR), SO_RCVTIMEO
 *   cloexec   F_GETFD/F_SETFD: FD_CLOEXEC exactly as asked (socket, SOCK_CLOEXEC, F_SETFD)
 *   opts      SO_TYPE/SO_DOMAIN/SO_PROTOCOL/SO_ERROR/SO_ACCEPTCONN, TCP_NODELAY,
 *             SO_KEEPALIVE, SO_REUSEADDR round trips, SO_RCVBUF/SO_SNDBUF > 0,
 *             IPV6_V6ONLY on an AF_INET socket fails cleanly
 *   fstat     fstat() of a socket says S_ISSOCK
 * Prints "ok ..." per step and "PASS TEST"; the first failure prints "FAIL TEST: ..." and
 * exits 1. A 30 s alarm turns a hang into a failure naming the step. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static const char *test_name = "?";
static const char *step = "start";
static struct sockaddr_in peer;

static void fail(const char *fmt, ...)
{
    int e = errno;
    va_list ap;
    printf("FAIL %s: %s: ", test_name, step);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf(" (errno %s)\n", e ? strerrorname_np(e) : "0");
    exit(1);
}

static void on_alarm(int sig)
{
    char buf[256];
    int n = snprintf(buf, sizeof(buf), "FAIL %s: %s: timed out (30 s)\n", test_name, step);
    (void)sig;
    if (n > 0)
        (void)!write(1, buf, (size_t)n);
    _exit(1);
}

#define OKAY(...)                                                                                  \
    do {                                                                                           \
        printf("ok " __VA_ARGS__);                                                                 \
        printf("\n");                                                                              \
    } while (0)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The byte stream both sides agree on: byte i of a stream is (i * 131 + 7) mod 256. */
static void pattern(uint8_t *b, size_t n, size_t off)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)((off + i) * 131u + 7u);
}

static int tcp_connect(int flags)
{
    step = "socket";
    int fd = socket(AF_INET, SOCK_STREAM | flags, 0);
    if (fd < 0)
        fail("socket(AF_INET, SOCK_STREAM)");
    step = "connect";
    if (connect(fd, (struct sockaddr *)&peer, sizeof(peer)) < 0)
        fail("connect");
    return fd;
}

static void write_all(int fd, const void *b, size_t n)
{
    const uint8_t *p = b;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0)
            fail("write returned %zd", w);
        p += w;
        n -= (size_t)w;
    }
}

static void read_all(int fd, void *b, size_t n)
{
    uint8_t *p = b;
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0)
            fail("read");
        if (r == 0)
            fail("read: EOF with %zu bytes missing", n);
        p += r;
        n -= (size_t)r;
    }
}

static void command(int fd, const char *cmd)
{
    step = cmd;
    write_all(fd, cmd, strlen(cmd));
}

/* poll one fd for EV, at most MS milliseconds; 1 if ready. */
static int wait_fd(int fd, short ev, int ms)
{
    struct pollfd p = {.fd = fd, .events = ev};
    int r = poll(&p, 1, ms);
    if (r < 0)
        fail("poll");
    return r > 0 && (p.revents & ev);
}

static void expect_pattern(const uint8_t *b, size_t n, size_t off, const char *what)
{
    uint8_t *want = malloc(n);
    pattern(want, n, off);
    for (size_t i = 0; i < n; i++)
        if (b[i] != want[i])
            fail("%s: byte %zu is %u, want %u", what, off + i, b[i], want[i]);
    free(want);
}

static const char *addr_str(const struct sockaddr_in *a, char *buf, size_t cap)
{
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
    snprintf(buf, cap, "%s:%u", ip, ntohs(a->sin_port));
    return buf;
}

/* Advance an iovec array past N consumed bytes (for partial readv/writev). */
static void iov_advance(struct iovec **iov, int *cnt, size_t n)
{
    while (n > 0 && *cnt > 0) {
        if (n >= (*iov)->iov_len) {
            n -= (*iov)->iov_len;
            (*iov)++;
            (*cnt)--;
        } else {
            (*iov)->iov_base = (uint8_t *)(*iov)->iov_base + n;
            (*iov)->iov_len -= n;
            n = 0;
        }
    }
}

/* ------------------------------------------------------------------ tcp */

static void t_tcp(void)
{
    enum { CHUNK = 65536, TOTAL = 1 << 20 };
    uint8_t *out = malloc(CHUNK), *in = malloc(CHUNK);
    char a[64];
    int fd = tcp_connect(0);
    command(fd, "ECHO\n");

    step = "getpeername";
    struct sockaddr_in pa = {0}, la = {0};
    socklen_t l = sizeof(pa);
    if (getpeername(fd, (struct sockaddr *)&pa, &l) < 0)
        fail("getpeername");
    if (l != sizeof(pa) || pa.sin_family != AF_INET || pa.sin_addr.s_addr != peer.sin_addr.s_addr ||
        pa.sin_port != peer.sin_port)
        fail("getpeername gave %s", addr_str(&pa, a, sizeof(a)));
    step = "getsockname";
    l = sizeof(la);
    if (getsockname(fd, (struct sockaddr *)&la, &l) < 0)
        fail("getsockname");
    if (la.sin_family != AF_INET || la.sin_port == 0 || la.sin_addr.s_addr == 0)
        fail("getsockname gave %s", addr_str(&la, a, sizeof(a)));
    printf("local %s\n", addr_str(&la, a, sizeof(a)));

    /* 1 MiB through the echo, 64 KiB at a time (write, then read it back). */
    step = "write/read 1 MiB";
    for (size_t off = 0; off < TOTAL; off += CHUNK) {
        pattern(out, CHUNK, off);
        write_all(fd, out, CHUNK);
        read_all(fd, in, CHUNK);
        expect_pattern(in, CHUNK, off, "echo");
    }
    OKAY("write/read 1 MiB echoed intact");
    size_t off = TOTAL;

    /* writev of three pieces, readv into three differently cut pieces. */
    step = "writev/readv";
    size_t sz[3] = {10, 70000, 5}, rz[3] = {100, 50000, 19915};
    uint8_t *w[3], *r[3];
    struct iovec wv[3], rv[3];
    for (int i = 0; i < 3; i++) {
        w[i] = malloc(sz[i]);
        r[i] = malloc(rz[i]);
        pattern(w[i], sz[i], off);
        off += sz[i];
        wv[i] = (struct iovec){w[i], sz[i]};
        rv[i] = (struct iovec){r[i], rz[i]};
    }
    struct iovec *wp = wv, *rp = rv;
    int wc = 3, rc = 3;
    while (wc > 0) {
        ssize_t n = writev(fd, wp, wc);
        if (n <= 0)
            fail("writev returned %zd", n);
        iov_advance(&wp, &wc, (size_t)n);
    }
    int calls = 0;
    while (rc > 0) {
        ssize_t n = readv(fd, rp, rc);
        if (n <= 0)
            fail("readv returned %zd", n);
        iov_advance(&rp, &rc, (size_t)n);
        calls++;
    }
    size_t base = off - 70015;
    expect_pattern(r[0], 100, base, "readv piece 1");
    expect_pattern(r[1], 50000, base + 100, "readv piece 2");
    expect_pattern(r[2], 19915, base + 50100, "readv piece 3");
    OKAY("writev 3 pieces / readv 3 pieces: 70015 bytes intact (%d readv calls)", calls);

    /* sendmsg of four pieces, recvmsg with MSG_WAITALL into two. */
    step = "sendmsg/recvmsg";
    uint8_t m[4][1000], q[2][2000];
    struct iovec mv[4], qv[2];
    for (int i = 0; i < 4; i++) {
        pattern(m[i], sizeof(m[i]), off + 1000u * (size_t)i);
        mv[i] = (struct iovec){m[i], sizeof(m[i])};
    }
    for (int i = 0; i < 2; i++)
        qv[i] = (struct iovec){q[i], sizeof(q[i])};
    struct msghdr mh = {.msg_iov = mv, .msg_iovlen = 4};
    ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL);
    if (n != 4000)
        fail("sendmsg returned %zd, want 4000", n);
    struct msghdr rh = {.msg_iov = qv, .msg_iovlen = 2};
    n = recvmsg(fd, &rh, MSG_WAITALL);
    if (n != 4000)
        fail("recvmsg(MSG_WAITALL) returned %zd, want 4000", n);
    if (rh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
        fail("recvmsg msg_flags %#x", rh.msg_flags);
    expect_pattern(q[0], 2000, off, "recvmsg piece 1");
    expect_pattern(q[1], 2000, off + 2000, "recvmsg piece 2");
    off += 4000;
    OKAY("sendmsg 4 pieces / recvmsg MSG_WAITALL 2 pieces: 4000 bytes intact");

    /* MSG_PEEK leaves the bytes; the next recv gets the same ones. */
    step = "MSG_PEEK";
    uint8_t pk[8], pb[8], rb[8];
    pattern(pk, 8, off);
    if (send(fd, pk, 8, 0) != 8)
        fail("send 8");
    double t0 = now_s();
    for (;;) {
        if (!wait_fd(fd, POLLIN, 5000))
            fail("no echo of 8 bytes within 5 s");
        n = recv(fd, pb, 8, MSG_PEEK);
        if (n == 8)
            break;
        if (n <= 0 || now_s() - t0 > 5)
            fail("recv(MSG_PEEK) returned %zd", n);
        usleep(1000);
    }
    n = recv(fd, rb, 8, 0);
    if (n != 8 || memcmp(pb, rb, 8) || memcmp(pb, pk, 8))
        fail("recv after MSG_PEEK returned %zd / other bytes", n);
    off += 8;
    OKAY("MSG_PEEK then recv: the same 8 bytes");

    step = "MSG_DONTWAIT";
    n = recv(fd, rb, 8, MSG_DONTWAIT);
    if (n != -1 || (errno != EAGAIN && errno != EWOULDBLOCK))
        fail("recv(MSG_DONTWAIT) on an empty socket returned %zd", n);
    OKAY("recv(MSG_DONTWAIT) on an empty socket: EAGAIN");

    /* shutdown(SHUT_WR): the echo sees EOF, closes; we read EOF. */
    step = "shutdown";
    if (shutdown(fd, SHUT_WR) < 0)
        fail("shutdown(SHUT_WR)");
    n = read(fd, rb, 8);
    if (n != 0)
        fail("read after the peer closed returned %zd, want 0 (EOF)", n);
    step = "write after SHUT_WR";
    signal(SIGPIPE, SIG_IGN);
    n = send(fd, rb, 1, MSG_NOSIGNAL);
    if (n != -1 || errno != EPIPE)
        fail("send after shutdown(SHUT_WR) returned %zd, want EPIPE", n);
    OKAY("shutdown(SHUT_WR): EOF from the peer, EPIPE on send");
    step = "close";
    if (close(fd) < 0)
        fail("close");
    for (int i = 0; i < 3; i++) {
        free(w[i]);
        free(r[i]);
    }
    free(out);
    free(in);
}

/* ------------------------------------------------------------------ udp */

static void udp_wait(int fd)
{
    if (!wait_fd(fd, POLLIN, 5000))
        fail("no datagram within 5 s");
}

/* One IPPROTO_IP control message of recvmsg's result, or NULL. */
static struct cmsghdr *find_cmsg(struct msghdr *m, int type)
{
    for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c))
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == type)
            return c;
    return NULL;
}

/* Echo one datagram through the peer from a wildcard-bound socket; with src, send it
 * from that address (an IP_PKTINFO control message). Returns the reply's msghdr. */
static ssize_t pktinfo_echo(int fd, struct in_addr *src, struct msghdr *rh)
{
    union {
        struct cmsghdr h;
        uint8_t b[CMSG_SPACE(sizeof(struct in_pktinfo))];
    } cb;
    struct iovec v = {"pktinfo", 7};
    struct msghdr mh = {
        .msg_name = &peer, .msg_namelen = sizeof(peer), .msg_iov = &v, .msg_iovlen = 1};
    if (src) {
        memset(&cb, 0, sizeof(cb));
        mh.msg_control = cb.b;
        mh.msg_controllen = sizeof(cb.b);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = IPPROTO_IP;
        c->cmsg_type = IP_PKTINFO;
        c->cmsg_len = CMSG_LEN(sizeof(struct in_pktinfo));
        struct in_pktinfo pi = {.ipi_spec_dst = *src};
        memcpy(CMSG_DATA(c), &pi, sizeof(pi));
    }
    if (sendmsg(fd, &mh, 0) != 7)
        return -1;
    udp_wait(fd);
    return recvmsg(fd, rh, 0);
}

/* IP_PKTINFO and IP_RECVTOS on a socket bound to 0.0.0.0 (a DNS server's case): recvmsg
 * says which local address the datagram came to and its TOS, and sendmsg with
 * IP_PKTINFO sends from the address it names. */
static void t_pktinfo(void)
{
    char a[64];
    step = "our address";
    struct sockaddr_in me = {0}, any = {.sin_family = AF_INET};
    socklen_t ml = sizeof(me);
    int c = socket(AF_INET, SOCK_DGRAM, 0);
    if (c < 0 || connect(c, (struct sockaddr *)&peer, sizeof(peer)) < 0 ||
        getsockname(c, (struct sockaddr *)&me, &ml) < 0)
        fail("a connected UDP socket's local address");
    close(c);

    step = "options";
    int fd = socket(AF_INET, SOCK_DGRAM, 0), on = 1, v = 0;
    socklen_t vl = sizeof(v);
    if (fd < 0 || bind(fd, (struct sockaddr *)&any, sizeof(any)) < 0)
        fail("socket/bind 0.0.0.0");
    if (setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &on, sizeof(on)) < 0 ||
        setsockopt(fd, IPPROTO_IP, IP_RECVTOS, &on, sizeof(on)) < 0)
        fail("setsockopt IP_PKTINFO/IP_RECVTOS");
    if (getsockopt(fd, IPPROTO_IP, IP_PKTINFO, &v, &vl) < 0 || v != 1)
        fail("getsockopt IP_PKTINFO gives %d", v);
    if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMP, &on, sizeof(on)) < 0)
        fail("setsockopt SO_TIMESTAMP");

    step = "recvmsg control messages";
    uint8_t data[64], ctl[256];
    struct iovec rv = {data, sizeof(data)};
    struct msghdr rh = {
        .msg_iov = &rv, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl)};
    if (pktinfo_echo(fd, NULL, &rh) != 7)
        fail("the echo");
    struct cmsghdr *cp = find_cmsg(&rh, IP_PKTINFO), *ct = find_cmsg(&rh, IP_TOS);
    if (!cp || !ct)
        fail("control messages: IP_PKTINFO %s, IP_TOS %s (msg_controllen %zu)",
             cp ? "present" : "missing", ct ? "present" : "missing", (size_t)rh.msg_controllen);
    struct in_pktinfo pi;
    memcpy(&pi, CMSG_DATA(cp), sizeof(pi));
    if (pi.ipi_addr.s_addr != me.sin_addr.s_addr || pi.ipi_spec_dst.s_addr != me.sin_addr.s_addr ||
        pi.ipi_ifindex < 1)
        fail("IP_PKTINFO: addr %s, ifindex %d", addr_str(&me, a, sizeof(a)), pi.ipi_ifindex);
    if (*CMSG_DATA(ct) != 0x28)
        fail("IP_TOS %#x, want 0x28", *CMSG_DATA(ct));
    struct cmsghdr *cs = NULL;
    for (struct cmsghdr *x = CMSG_FIRSTHDR(&rh); x; x = CMSG_NXTHDR(&rh, x))
        if (x->cmsg_level == SOL_SOCKET && x->cmsg_type == SCM_TIMESTAMP)
            cs = x;
    struct timeval tv, now;
    gettimeofday(&now, NULL);
    if (!cs)
        fail("no SCM_TIMESTAMP control message");
    memcpy(&tv, CMSG_DATA(cs), sizeof(tv));
    if (tv.tv_sec < now.tv_sec - 5 || tv.tv_sec > now.tv_sec)
        fail("SCM_TIMESTAMP %ld s, now %ld s", (long)tv.tv_sec, (long)now.tv_sec);
    OKAY("IP_PKTINFO names %s, IP_TOS 0x28, SCM_TIMESTAMP within 5 s of now",
         inet_ntop(AF_INET, &pi.ipi_addr, a, sizeof(a)));

    step = "a control buffer too small";
    rh.msg_controllen = CMSG_LEN(1);
    if (pktinfo_echo(fd, NULL, &rh) != 7 || !(rh.msg_flags & MSG_CTRUNC))
        fail("no MSG_CTRUNC (flags %#x)", rh.msg_flags);
    OKAY("MSG_CTRUNC when the control messages do not fit");

    step = "sendmsg with IP_PKTINFO";
    rh.msg_controllen = sizeof(ctl);
    if (pktinfo_echo(fd, &pi.ipi_spec_dst, &rh) != 7)
        fail("the echo of a datagram sent from the address IP_PKTINFO named");
    OKAY("sendmsg from the address IP_PKTINFO names");
    close(fd);
}

static void t_udp(void)
{
    char a[64];
    step = "socket";
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0)
        fail("socket(AF_INET, SOCK_DGRAM)");

    /* sendmsg: three pieces to the peer's address; recvmsg: two pieces and the source. */
    step = "sendmsg/recvmsg";
    uint8_t p[3][400], r1[700], r2[700];
    struct iovec v[3], rv[2] = {{r1, sizeof(r1)}, {r2, sizeof(r2)}};
    for (int i = 0; i < 3; i++) {
        pattern(p[i], sizeof(p[i]), 400u * (size_t)i);
        v[i] = (struct iovec){p[i], sizeof(p[i])};
    }
    struct msghdr mh = {
        .msg_name = &peer, .msg_namelen = sizeof(peer), .msg_iov = v, .msg_iovlen = 3};
    ssize_t n = sendmsg(fd, &mh, 0);
    if (n != 1200)
        fail("sendmsg returned %zd, want 1200", n);
    udp_wait(fd);
    struct sockaddr_in src = {0};
    struct msghdr rh = {
        .msg_name = &src, .msg_namelen = sizeof(src), .msg_iov = rv, .msg_iovlen = 2};
    n = recvmsg(fd, &rh, 0);
    if (n != 1200)
        fail("recvmsg returned %zd, want 1200", n);
    if (rh.msg_namelen != sizeof(src) || src.sin_addr.s_addr != peer.sin_addr.s_addr ||
        src.sin_port != peer.sin_port)
        fail("recvmsg source %s", addr_str(&src, a, sizeof(a)));
    if (rh.msg_flags & MSG_TRUNC)
        fail("MSG_TRUNC on a datagram that fits");
    expect_pattern(r1, 700, 0, "datagram piece 1");
    expect_pattern(r2, 500, 700, "datagram piece 2");
    OKAY("sendmsg 3 pieces / recvmsg 2 pieces: 1200 bytes and the source address");

    step = "local address";
    struct sockaddr_in la = {0};
    socklen_t l = sizeof(la);
    if (getsockname(fd, (struct sockaddr *)&la, &l) < 0 || la.sin_port == 0)
        fail("getsockname after the first send: %s", addr_str(&la, a, sizeof(a)));
    printf("local %s\n", addr_str(&la, a, sizeof(a)));

    /* sendto/recvfrom: 1 byte and 0 bytes. */
    static const size_t lens[2] = {1, 0};
    for (int i = 0; i < 2; i++) {
        size_t len = lens[i];
        step = len ? "sendto/recvfrom 1 byte" : "sendto/recvfrom 0 bytes";
        uint8_t b = 0x5a, c = 0;
        if (sendto(fd, &b, len, 0, (struct sockaddr *)&peer, sizeof(peer)) != (ssize_t)len)
            fail("sendto");
        udp_wait(fd);
        l = sizeof(src);
        n = recvfrom(fd, &c, 1, 0, (struct sockaddr *)&src, &l);
        if (n != (ssize_t)len || (len && c != b) || src.sin_port != peer.sin_port)
            fail("recvfrom returned %zd", n);
    }
    OKAY("sendto/recvfrom: 1-byte and 0-byte datagrams");

    /* Truncation: 2000 bytes into 100 (MSG_TRUNC in msg_flags), then with MSG_TRUNC. */
    step = "truncation";
    uint8_t big[2000], small[100];
    pattern(big, sizeof(big), 0);
    for (int k = 0; k < 2; k++)
        if (sendto(fd, big, sizeof(big), 0, (struct sockaddr *)&peer, sizeof(peer)) != 2000)
            fail("sendto 2000");
    udp_wait(fd);
    struct iovec sv = {small, sizeof(small)};
    struct msghdr th = {.msg_iov = &sv, .msg_iovlen = 1};
    n = recvmsg(fd, &th, 0);
    if (n != 100 || !(th.msg_flags & MSG_TRUNC))
        fail("recvmsg of 2000 bytes into 100 returned %zd, msg_flags %#x", n, th.msg_flags);
    expect_pattern(small, 100, 0, "truncated datagram");
    udp_wait(fd);
    n = recv(fd, small, sizeof(small), MSG_TRUNC);
    if (n != 2000)
        fail("recv(MSG_TRUNC) returned %zd, want the real length 2000", n);
    OKAY("truncation: 100 of 2000 bytes with MSG_TRUNC in msg_flags; recv(MSG_TRUNC) = 2000");

    /* Connected: write/read and writev/readv. */
    step = "connected UDP";
    if (connect(fd, (struct sockaddr *)&peer, sizeof(peer)) < 0)
        fail("connect");
    uint8_t cw[300], cr[300];
    pattern(cw, sizeof(cw), 11);
    if (write(fd, cw, sizeof(cw)) != (ssize_t)sizeof(cw))
        fail("write");
    udp_wait(fd);
    if (read(fd, cr, sizeof(cr)) != (ssize_t)sizeof(cr) || memcmp(cw, cr, sizeof(cr)))
        fail("read of the echo");
    struct iovec wv2[2] = {{cw, 100}, {cw + 100, 200}}, rv2[2] = {{cr, 250}, {cr + 250, 50}};
    memset(cr, 0, sizeof(cr));
    if (writev(fd, wv2, 2) != 300)
        fail("writev");
    udp_wait(fd);
    if (readv(fd, rv2, 2) != 300 || memcmp(cw, cr, sizeof(cr)))
        fail("readv of the echo");
    OKAY("connected UDP: write/read and writev/readv");

    /* sendmmsg 4 datagrams, recvmmsg them (each echoed once). */
    step = "sendmmsg/recvmmsg";
    uint8_t md[4][64], mr[4][64];
    struct iovec miv[4], mriv[4];
    struct mmsghdr mm[4], mmr[4];
    memset(mm, 0, sizeof(mm));
    memset(mmr, 0, sizeof(mmr));
    for (int i = 0; i < 4; i++) {
        memset(md[i], 'A' + i, sizeof(md[i]));
        miv[i] = (struct iovec){md[i], sizeof(md[i])};
        mriv[i] = (struct iovec){mr[i], sizeof(mr[i])};
        mm[i].msg_hdr.msg_iov = &miv[i];
        mm[i].msg_hdr.msg_iovlen = 1;
        mmr[i].msg_hdr.msg_iov = &mriv[i];
        mmr[i].msg_hdr.msg_iovlen = 1;
    }
    int sent = sendmmsg(fd, mm, 4, 0);
    if (sent != 4)
        fail("sendmmsg returned %d, want 4", sent);
    int got = 0, seen = 0;
    double t0 = now_s();
    while (got < 4 && now_s() - t0 < 5) {
        udp_wait(fd);
        int k = recvmmsg(fd, mmr + got, 4u - (unsigned)got, MSG_DONTWAIT, NULL);
        if (k < 0 && errno != EAGAIN)
            fail("recvmmsg");
        for (int i = got; k > 0 && i < got + k; i++) {
            if (mmr[i].msg_len != 64 || mr[i][0] < 'A' || mr[i][0] > 'D' || mr[i][63] != mr[i][0])
                fail("recvmmsg datagram %d: %u bytes", i, mmr[i].msg_len);
            seen |= 1 << (mr[i][0] - 'A');
        }
        if (k > 0)
            got += k;
    }
    if (got != 4 || seen != 0xf)
        fail("recvmmsg got %d datagrams (mask %#x)", got, seen);
    OKAY("sendmmsg 4 / recvmmsg 4 datagrams");
    close(fd);
}

/* ------------------------------------------------------------------ sendfile */

static void t_sendfile(const char *path)
{
    step = "open";
    int f = open(path, O_RDONLY);
    if (f < 0)
        fail("open %s", path);
    struct stat st;
    if (fstat(f, &st) < 0)
        fail("fstat");
    size_t size = (size_t)st.st_size, half = size / 2;
    int fd = tcp_connect(0);
    command(fd, "SINK\n");

    /* First half through an offset pointer: the file position must not move. */
    step = "sendfile with an offset";
    off_t o = 0;
    while ((size_t)o < half) {
        ssize_t n = sendfile(fd, f, &o, half - (size_t)o);
        if (n <= 0)
            fail("sendfile(offset %lld) returned %zd", (long long)o, n);
    }
    if (lseek(f, 0, SEEK_CUR) != 0)
        fail("sendfile with an offset pointer moved the file position");
    OKAY("sendfile with an offset pointer: %zu bytes, file position unchanged", half);

    /* Second half from the file position (offset NULL): the position advances. */
    step = "sendfile from the file position";
    if (lseek(f, (off_t)half, SEEK_SET) < 0)
        fail("lseek");
    size_t left = size - half;
    while (left > 0) {
        ssize_t n = sendfile(fd, f, NULL, left);
        if (n <= 0)
            fail("sendfile(NULL) returned %zd", n);
        left -= (size_t)n;
    }
    if (lseek(f, 0, SEEK_CUR) != (off_t)size)
        fail("the file position is %lld, want %zu", (long long)lseek(f, 0, SEEK_CUR), size);
    OKAY("sendfile from the file position: %zu bytes, position at the end", size - half);

    step = "the sink's digest";
    if (shutdown(fd, SHUT_WR) < 0)
        fail("shutdown");
    char line[200] = {0};
    size_t got = 0;
    for (;;) {
        ssize_t n = read(fd, line + got, sizeof(line) - 1 - got);
        if (n < 0)
            fail("read");
        if (n == 0)
            break;
        got += (size_t)n;
    }
    line[strcspn(line, "\n")] = 0;
    printf("sink %s\n", line);
    close(fd);
    close(f);
}

/* sendfile from the file position to a non-blocking socket whose reader is slow: every
 * EAGAIN and short send must leave the position just past what was sent, or the peer
 * gets a file with holes. */
static void t_sendfile_nb(const char *path)
{
    step = "open";
    int f = open(path, O_RDONLY);
    struct stat st;
    if (f < 0 || fstat(f, &st) < 0)
        fail("open %s", path);
    size_t size = (size_t)st.st_size, sent = 0;
    unsigned eagain = 0;
    int fd = tcp_connect(0);
    command(fd, "SLOWSINK\n");
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
        fail("O_NONBLOCK");
    step = "sendfile(NULL) to a full socket";
    while (sent < size) {
        ssize_t n = sendfile(fd, f, NULL, size - sent);
        if (n < 0 && errno == EAGAIN) {
            eagain++;
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            poll(&p, 1, 5000);
        } else if (n <= 0) {
            fail("sendfile(NULL) returned %zd", n);
        } else {
            sent += (size_t)n;
        }
        if (lseek(f, 0, SEEK_CUR) != (off_t)sent)
            fail("after %zu bytes sent the file position is %lld", sent,
                 (long long)lseek(f, 0, SEEK_CUR));
    }
    if (!eagain)
        fail("the socket never filled: the test shows nothing");
    OKAY("sendfile(NULL) on a non-blocking socket: %zu bytes, %u EAGAIN, position exact", size,
         eagain);
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0)
        fail("blocking again");
    step = "the sink's digest";
    if (shutdown(fd, SHUT_WR) < 0)
        fail("shutdown");
    char line[200] = {0};
    size_t got = 0;
    for (ssize_t n; (n = read(fd, line + got, sizeof(line) - 1 - got)) != 0; got += (size_t)n)
        if (n < 0)
            fail("read");
    line[strcspn(line, "\n")] = 0;
    printf("sink %s\n", line);
    close(fd);
    close(f);
}

/* ------------------------------------------------------------------ dup */

static void echo_roundtrip(int wfd, int rfd, const char *what)
{
    char out[32], in[32];
    int n = snprintf(out, sizeof(out), "dup-check-%d-%d", wfd, rfd);
    step = what;
    write_all(wfd, out, (size_t)n);
    read_all(rfd, in, (size_t)n);
    if (memcmp(in, out, (size_t)n))
        fail("%s: other bytes came back", what);
}

static int cloexec(int fd)
{
    int f = fcntl(fd, F_GETFD);
    if (f < 0)
        fail("F_GETFD on %d", fd);
    return !!(f & FD_CLOEXEC);
}

static unsigned local_port(int fd)
{
    struct sockaddr_in la = {0};
    socklen_t l = sizeof(la);
    if (getsockname(fd, (struct sockaddr *)&la, &l) < 0)
        fail("getsockname");
    return ntohs(la.sin_port);
}

/* Sockets closed around libc's close: syscall(SYS_close) (as libuv does), close_range and
 * closefrom. Each must end its connection (the peer sees EOF) and free the socket. */
static void t_rawclose(void)
{
    int a = tcp_connect(0), b, c, d, t;
    command(a, "ECHO\n");
    step = "syscall(SYS_close)";
    printf("eof-port %u\n", local_port(a));
    if (syscall(SYS_close, a) != 0)
        fail("syscall(SYS_close) failed");
    if (fcntl(a, F_GETFD) >= 0 || errno != EBADF)
        fail("the fd is still open after syscall(SYS_close)");
    OKAY("syscall(SYS_close) closed the socket");

    step = "close_range";
    b = tcp_connect(0);
    command(b, "ECHO\n");
    c = fcntl(b, F_DUPFD, 900); /* two names of one socket, and a third socket */
    t = tcp_connect(0);
    d = dup2(t, 901);
    if (c != 900 || d != 901)
        fail("dup to 900/901: %d %d", c, d);
    close(t);
    command(d, "ECHO\n");
    printf("eof-port %u\neof-port %u\n", local_port(b), local_port(d));
    close(b); /* the socket lives on as 900 */
    if (close_range(900, 901, 0) != 0)
        fail("close_range");
    if (fcntl(900, F_GETFD) >= 0 || fcntl(901, F_GETFD) >= 0)
        fail("close_range left 900 or 901 open");
    OKAY("close_range closed its sockets");

    step = "closefrom";
    t = tcp_connect(0);
    int e = dup2(t, 950);
    close(t);
    command(e, "ECHO\n");
    printf("eof-port %u\n", local_port(e));
    closefrom(950);
    if (fcntl(950, F_GETFD) >= 0)
        fail("closefrom left 950 open");
    OKAY("closefrom closed its socket");
}

/* A close no library sees (the syscall instruction itself, as Go or a static helper
 * would): the socket goes when the kernel hands its number to a new socket, while the
 * program runs on (it stays 3 s after printing "eof-port P", so that an end that waits
 * for its exit comes too late for the caller). */
static void t_rawclose_asm(void)
{
    step = "a raw close, then a new socket";
    int t = tcp_connect(0);
    command(t, "ECHO\n");
    unsigned port = local_port(t);
#if defined(__x86_64__)
    long rc;
    __asm__ volatile("syscall"
                     : "=a"(rc)
                     : "0"((long)SYS_close), "D"((long)t)
                     : "rcx", "r11", "memory");
#else
    long rc = syscall(SYS_close, t);
#endif
    int u = tcp_connect(0);
    if (rc != 0 || u != t)
        fail("raw close returned %ld; the new socket is fd %d, the old one was %d", rc, u, t);
    command(u, "ECHO\n");
    OKAY("a new socket took the number of one closed behind the library's back");
    printf("eof-port %u\n", port);
    fflush(stdout);
    sleep(3);
    close(u);
}

static void t_dup(void)
{
    int fd = tcp_connect(0);
    command(fd, "ECHO\n");
    unsigned port = local_port(fd);

    step = "dup";
    int d1 = dup(fd);
    if (d1 < 0 || d1 == fd)
        fail("dup returned %d", d1);
    step = "dup2";
    if (fcntl(200, F_GETFD) >= 0)
        fail("fd 200 is already open");
    int d2 = dup2(fd, 200);
    if (d2 != 200)
        fail("dup2(fd, 200) returned %d", d2);
    step = "dup3";
    int d3 = dup3(fd, 201, O_CLOEXEC);
    if (d3 != 201)
        fail("dup3(fd, 201, O_CLOEXEC) returned %d", d3);
    step = "F_DUPFD_CLOEXEC";
    int d4 = fcntl(fd, F_DUPFD_CLOEXEC, 300);
    if (d4 < 300)
        fail("F_DUPFD_CLOEXEC returned %d", d4);
    step = "F_DUPFD";
    int d5 = fcntl(fd, F_DUPFD, 400);
    if (d5 < 400)
        fail("F_DUPFD returned %d", d5);
    step = "close-on-exec of the copies";
    if (cloexec(d1) || cloexec(d2) || !cloexec(d3) || !cloexec(d4) || cloexec(d5))
        fail("FD_CLOEXEC dup %d dup2 %d dup3 %d F_DUPFD_CLOEXEC %d F_DUPFD %d (want 0 0 1 1 0)",
             cloexec(d1), cloexec(d2), cloexec(d3), cloexec(d4), cloexec(d5));
    OKAY("dup=%d dup2=%d dup3=%d F_DUPFD_CLOEXEC=%d F_DUPFD=%d, FD_CLOEXEC as asked", d1, d2, d3,
         d4, d5);

    echo_roundtrip(d1, d2, "write through dup, read through dup2");
    echo_roundtrip(d3, d4, "write through dup3, read through F_DUPFD_CLOEXEC");
    step = "getpeername of a copy";
    struct sockaddr_in pa = {0};
    socklen_t l = sizeof(pa);
    if (getpeername(d5, (struct sockaddr *)&pa, &l) < 0 || pa.sin_port != peer.sin_port)
        fail("getpeername through F_DUPFD copy");
    OKAY("every copy reads, writes and names the same connection");

    step = "close the original";
    if (close(fd) < 0)
        fail("close");
    echo_roundtrip(d3, d1, "after closing the original");
    step = "close four copies";
    if (close(d1) < 0 || close(d2) < 0 || close(d3) < 0 || close(d4) < 0)
        fail("close of a copy");
    echo_roundtrip(d5, d5, "after closing four copies");
    step = "dup2 onto itself";
    if (dup2(d5, d5) != d5)
        fail("dup2(fd, fd)");
    OKAY("closing the original and four copies kept the socket open");

    /* dup2 onto another open socket closes that socket. */
    int a = tcp_connect(0);
    command(a, "ECHO\n");
    unsigned aport = local_port(a);
    step = "dup2 onto another socket";
    if (dup2(d5, a) != a)
        fail("dup2(d5, a)");
    echo_roundtrip(a, d5, "the dup2 target now is the first connection");
    OKAY("dup2 onto a connected socket replaced it");
    printf("eof-port %u\n", aport); /* the peer must have seen this one closed */

    step = "close the last copies";
    if (close(a) < 0 || close(d5) < 0)
        fail("close");
    step = "close twice";
    if (close(d5) != -1 || errno != EBADF)
        fail("a second close did not give EBADF");
    OKAY("last close: the connection ends; closing again: EBADF");
    printf("eof-port %u\n", port);
    fflush(stdout);
    usleep(300000); /* let the FIN out before exit (the peer logs the EOF) */
}

/* ------------------------------------------------------------------ fcntl, ioctl */

static void t_fcntl(void)
{
    int fd = tcp_connect(0);
    command(fd, "ECHO\n");
    char b[16];

    step = "F_GETFL";
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || (fl & O_ACCMODE) != O_RDWR || (fl & O_NONBLOCK))
        fail("F_GETFL = %#x, want O_RDWR without O_NONBLOCK", fl);
    step = "F_SETFL O_NONBLOCK";
    if (fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        fail("F_SETFL");
    if (!(fcntl(fd, F_GETFL) & O_NONBLOCK))
        fail("O_NONBLOCK not reported after F_SETFL");
    if (read(fd, b, sizeof(b)) != -1 || errno != EAGAIN)
        fail("read on an empty non-blocking socket did not give EAGAIN");
    if (recv(fd, b, sizeof(b), 0) != -1 || errno != EAGAIN)
        fail("recv on an empty non-blocking socket did not give EAGAIN");
    OKAY("F_SETFL O_NONBLOCK: reported, read/recv give EAGAIN");

    step = "FIONBIO";
    int zero = 0, one = 1;
    if (ioctl(fd, FIONBIO, &zero) < 0)
        fail("ioctl(FIONBIO, 0)");
    if (fcntl(fd, F_GETFL) & O_NONBLOCK)
        fail("O_NONBLOCK still reported after FIONBIO 0");
    if (ioctl(fd, FIONBIO, &one) < 0 || !(fcntl(fd, F_GETFL) & O_NONBLOCK))
        fail("FIONBIO 1 not reported by F_GETFL");
    if (read(fd, b, sizeof(b)) != -1 || errno != EAGAIN)
        fail("read after FIONBIO 1 did not give EAGAIN");
    if (ioctl(fd, FIONBIO, &zero) < 0)
        fail("ioctl(FIONBIO, 0)");
    OKAY("ioctl FIONBIO 0/1 agrees with F_GETFL");

    step = "FIONREAD";
    int avail = -1;
    if (ioctl(fd, FIONREAD, &avail) < 0 || avail != 0)
        fail("FIONREAD on an empty socket = %d", avail);
    write_all(fd, "0123456789", 10);
    double t0 = now_s();
    for (;;) {
        if (ioctl(fd, FIONREAD, &avail) < 0)
            fail("ioctl(FIONREAD)");
        if (avail == 10)
            break;
        if (avail > 10 || now_s() - t0 > 5)
            fail("FIONREAD = %d, want 10", avail);
        wait_fd(fd, POLLIN, 100);
        usleep(1000);
    }
    int inq = -1;
    if (ioctl(fd, SIOCINQ, &inq) < 0 || inq != 10)
        fail("SIOCINQ = %d, want 10", inq);
    read_all(fd, b, 10);
    if (memcmp(b, "0123456789", 10))
        fail("other bytes came back");
    if (ioctl(fd, FIONREAD, &avail) < 0 || avail != 0)
        fail("FIONREAD after reading = %d", avail);
    OKAY("FIONREAD/SIOCINQ: 0, 10 once the echo arrived, 0 after reading");

    step = "SO_RCVTIMEO";
    struct timeval tv = {.tv_sec = 0, .tv_usec = 300000};
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0)
        fail("setsockopt(SO_RCVTIMEO)");
    t0 = now_s();
    ssize_t n = recv(fd, b, sizeof(b), 0);
    double dt = now_s() - t0;
    if (n != -1 || (errno != EAGAIN && errno != EWOULDBLOCK))
        fail("recv with SO_RCVTIMEO returned %zd", n);
    if (dt < 0.25 || dt > 2)
        fail("recv with a 300 ms SO_RCVTIMEO returned after %.3f s", dt);
    OKAY("SO_RCVTIMEO 300 ms: EAGAIN after %.3f s", dt);
    close(fd);

    /* SOCK_NONBLOCK at creation: non-blocking connect. */
    step = "SOCK_NONBLOCK connect";
    int nb = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (nb < 0)
        fail("socket(SOCK_NONBLOCK)");
    if (!(fcntl(nb, F_GETFL) & O_NONBLOCK))
        fail("SOCK_NONBLOCK not reported by F_GETFL");
    int r = connect(nb, (struct sockaddr *)&peer, sizeof(peer));
    if (r < 0 && errno != EINPROGRESS)
        fail("non-blocking connect");
    if (r < 0 && !wait_fd(nb, POLLOUT, 5000))
        fail("no POLLOUT within 5 s after EINPROGRESS");
    int err = -1;
    socklen_t l = sizeof(err);
    if (getsockopt(nb, SOL_SOCKET, SO_ERROR, &err, &l) < 0 || err != 0)
        fail("SO_ERROR after connect = %d", err);
    command(nb, "ECHO\nxyz");
    if (!wait_fd(nb, POLLIN, 5000))
        fail("no echo within 5 s");
    t0 = now_s();
    size_t got = 0;
    while (got < 3 && now_s() - t0 < 5) {
        n = read(nb, b + got, 3 - got);
        if (n > 0)
            got += (size_t)n;
        else if (n == 0 || errno != EAGAIN)
            fail("read");
        else
            wait_fd(nb, POLLIN, 100);
    }
    if (got != 3 || memcmp(b, "xyz", 3))
        fail("echo on the non-blocking socket");
    OKAY("SOCK_NONBLOCK connect: %s, POLLOUT, SO_ERROR 0, echo intact",
         r < 0 ? "EINPROGRESS" : "immediate");
    close(nb);
}

static void t_cloexec(void)
{
    step = "socket without SOCK_CLOEXEC";
    int a = socket(AF_INET, SOCK_STREAM, 0), b = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (a < 0 || b < 0)
        fail("socket");
    if (cloexec(a))
        fail("FD_CLOEXEC reported on a socket created without SOCK_CLOEXEC");
    step = "socket with SOCK_CLOEXEC";
    if (!cloexec(b))
        fail("FD_CLOEXEC not reported on a socket created with SOCK_CLOEXEC");
    step = "F_SETFD";
    if (fcntl(a, F_SETFD, FD_CLOEXEC) < 0 || !cloexec(a))
        fail("F_SETFD FD_CLOEXEC not reported");
    if (fcntl(b, F_SETFD, 0) < 0 || cloexec(b))
        fail("F_SETFD 0 not reported");
    OKAY("FD_CLOEXEC: 0 without SOCK_CLOEXEC, 1 with it, F_SETFD both ways");
    close(a);
    close(b);
    step = "connected socket with SOCK_CLOEXEC"; /* and it is a shmnet socket (the counter) */
    int c = tcp_connect(SOCK_CLOEXEC);
    if (!cloexec(c))
        fail("FD_CLOEXEC not reported on a connected SOCK_CLOEXEC socket");
    close(c);
}

static int geti(int fd, int level, int name, const char *what)
{
    int v = -1;
    socklen_t l = sizeof(v);
    step = what;
    if (getsockopt(fd, level, name, &v, &l) < 0)
        fail("getsockopt(%s)", what);
    if (l != sizeof(v))
        fail("getsockopt(%s) length %u", what, (unsigned)l);
    return v;
}

static void seti(int fd, int level, int name, int v, const char *what)
{
    step = what;
    if (setsockopt(fd, level, name, &v, sizeof(v)) < 0)
        fail("setsockopt(%s, %d)", what, v);
}

/* SA_RESTART (signal(7)): a blocking recv interrupted by a handler installed with it goes
 * on; without it, or with SO_RCVTIMEO set, it fails with EINTR. */
static volatile sig_atomic_t usr1_runs;
static void on_usr1(int sig)
{
    (void)sig;
    usr1_runs++;
}

static void *usr1_later(void *arg)
{
    usleep(100000);
    pthread_kill(*(pthread_t *)arg, SIGUSR1);
    return NULL;
}

/* recv on fd while another thread signals this one 100 ms in; the peer's 5 bytes come
 * 400 ms in. Returns what recv returned (errno kept). */
static ssize_t recv_signalled(int fd, char *b, size_t n)
{
    pthread_t me = pthread_self(), k;
    command(fd, "SEND 5 400\n");
    if (pthread_create(&k, NULL, usr1_later, &me) != 0)
        fail("pthread_create");
    ssize_t r = recv(fd, b, n, 0);
    int e = errno;
    pthread_join(k, NULL);
    errno = e;
    return r;
}

static void t_restart(void)
{
    char b[16];
    int fd = tcp_connect(0);
    struct sigaction sa = {.sa_handler = on_usr1, .sa_flags = SA_RESTART}, o;
    sigemptyset(&sa.sa_mask);
    step = "sigaction";
    if (sigaction(SIGUSR1, &sa, NULL) < 0 || sigaction(SIGUSR1, NULL, &o) < 0)
        fail("sigaction");
    if (o.sa_handler != on_usr1 || !(o.sa_flags & SA_RESTART))
        fail("sigaction does not report the handler the program installed");
    step = "recv interrupted, SA_RESTART";
    ssize_t n = recv_signalled(fd, b, sizeof(b));
    if (n != 5 || usr1_runs != 1)
        fail("recv returned %zd after the handler ran %d times, want 5", n, (int)usr1_runs);
    OKAY("SA_RESTART: recv went on after the handler and returned the 5 bytes");

    step = "recv interrupted, no SA_RESTART";
    sa.sa_flags = 0;
    if (sigaction(SIGUSR1, &sa, NULL) < 0)
        fail("sigaction");
    n = recv_signalled(fd, b, sizeof(b));
    if (n != -1 || errno != EINTR)
        fail("recv returned %zd, want -1 EINTR", n);
    if (recv(fd, b, 5, MSG_WAITALL) != 5)
        fail("the 5 bytes after the EINTR");
    OKAY("no SA_RESTART: EINTR");

    step = "recv interrupted, SA_RESTART and SO_RCVTIMEO";
    sa.sa_flags = SA_RESTART;
    struct timeval tv = {5, 0};
    if (sigaction(SIGUSR1, &sa, NULL) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0)
        fail("sigaction / SO_RCVTIMEO");
    n = recv_signalled(fd, b, sizeof(b));
    if (n != -1 || errno != EINTR)
        fail("recv returned %zd, want -1 EINTR (a timeout is set)", n);
    OKAY("SA_RESTART with SO_RCVTIMEO set: EINTR, as signal(7) says");
    close(fd);
}

/* SO_RCVLOWAT: poll reports a connection readable only once that many bytes are in (or
 * the connection ended). (A blocking recv that has taken some bytes and waits for the
 * rest is not checked: Linux wakes it only when the mark's worth of new bytes has come.) */
static void t_lowat(void)
{
    char buf[100];
    int fd = tcp_connect(0);
    seti(fd, SOL_SOCKET, SO_RCVLOWAT, 20, "SO_RCVLOWAT");
    if (geti(fd, SOL_SOCKET, SO_RCVLOWAT, "SO_RCVLOWAT") != 20)
        fail("SO_RCVLOWAT not kept");
    step = "poll below the mark";
    command(fd, "SEND 10 0\n");
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r = poll(&p, 1, 300); /* the 10 bytes arrive within it, and stay below the mark */
    if (r != 0)
        fail("poll reported %d (revents %#x) with 10 of 20 bytes in", r, p.revents);
    command(fd, "SEND 10 0\n");
    step = "poll at the mark";
    if (poll(&p, 1, 5000) != 1 || !(p.revents & POLLIN))
        fail("not readable with 20 bytes in");
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n != 20)
        fail("recv returned %zd, want 20", n);
    OKAY("SO_RCVLOWAT 20: poll waits for 20 bytes");
    close(fd);
}

static void t_opts(void)
{
    int fd = tcp_connect(0);
    command(fd, "HOLD\n");
    if (geti(fd, SOL_SOCKET, SO_TYPE, "SO_TYPE") != SOCK_STREAM)
        fail("SO_TYPE is not SOCK_STREAM");
    if (geti(fd, SOL_SOCKET, SO_DOMAIN, "SO_DOMAIN") != AF_INET)
        fail("SO_DOMAIN is not AF_INET");
    if (geti(fd, SOL_SOCKET, SO_PROTOCOL, "SO_PROTOCOL") != IPPROTO_TCP)
        fail("SO_PROTOCOL is not IPPROTO_TCP");
    if (geti(fd, SOL_SOCKET, SO_ERROR, "SO_ERROR") != 0)
        fail("SO_ERROR is not 0");
    if (geti(fd, SOL_SOCKET, SO_ACCEPTCONN, "SO_ACCEPTCONN") != 0)
        fail("SO_ACCEPTCONN on a connected socket");
    OKAY("SO_TYPE, SO_DOMAIN, SO_PROTOCOL, SO_ERROR, SO_ACCEPTCONN of a connected socket");
    seti(fd, IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY");
    if (!geti(fd, IPPROTO_TCP, TCP_NODELAY, "TCP_NODELAY"))
        fail("TCP_NODELAY not kept");
    seti(fd, SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE");
    if (!geti(fd, SOL_SOCKET, SO_KEEPALIVE, "SO_KEEPALIVE"))
        fail("SO_KEEPALIVE not kept");
    if (geti(fd, SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF") <= 0 ||
        geti(fd, SOL_SOCKET, SO_SNDBUF, "SO_SNDBUF") <= 0)
        fail("SO_RCVBUF/SO_SNDBUF not positive");
    OKAY("TCP_NODELAY and SO_KEEPALIVE kept, SO_RCVBUF %d SO_SNDBUF %d",
         geti(fd, SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF"),
         geti(fd, SOL_SOCKET, SO_SNDBUF, "SO_SNDBUF"));
    struct tcp_info ti;
    socklen_t l = sizeof(ti);
    memset(&ti, 0, sizeof(ti));
    step = "TCP_INFO";
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) < 0)
        fail("getsockopt(TCP_INFO)");
    if (ti.tcpi_state != 1 /* TCP_ESTABLISHED */)
        fail("TCP_INFO state %u, want 1 (ESTABLISHED)", ti.tcpi_state);
    OKAY("TCP_INFO: ESTABLISHED, snd_mss %u", ti.tcpi_snd_mss);
    seti(fd, IPPROTO_IP, IP_TTL, 33, "IP_TTL");
    seti(fd, IPPROTO_IP, IP_TOS, 0x10, "IP_TOS");
    if (geti(fd, IPPROTO_IP, IP_TTL, "IP_TTL") != 33 ||
        geti(fd, IPPROTO_IP, IP_TOS, "IP_TOS") != 0x10)
        fail("IP_TTL / IP_TOS not kept: %d %#x", geti(fd, IPPROTO_IP, IP_TTL, "IP_TTL"),
             geti(fd, IPPROTO_IP, IP_TOS, "IP_TOS"));
    OKAY("IP_TTL 33 and IP_TOS 0x10 kept on a connection");
    close(fd);

    step = "TCP_MAXSEG before connect";
    fd = socket(AF_INET, SOCK_STREAM, 0);
    seti(fd, IPPROTO_TCP, TCP_MAXSEG, 1000, "TCP_MAXSEG");
    if (fd < 0 || connect(fd, (struct sockaddr *)&peer, sizeof(peer)) < 0)
        fail("connect");
    command(fd, "HOLD\n");
    int mss = geti(fd, IPPROTO_TCP, TCP_MAXSEG, "TCP_MAXSEG");
    if (mss <= 0 || mss > 1000)
        fail("TCP_MAXSEG 1000 before connect, %d after", mss);
    OKAY("TCP_MAXSEG 1000 before connect: the connection's MSS is %d", mss);
    close(fd);

    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0)
        fail("socket");
    seti(s, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
    if (!geti(s, SOL_SOCKET, SO_REUSEADDR, "SO_REUSEADDR"))
        fail("SO_REUSEADDR not kept");
    step = "IPV6_V6ONLY on AF_INET";
    int one = 1;
    if (setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != -1)
        fail("IPV6_V6ONLY on an AF_INET socket succeeded");
    if (errno != ENOPROTOOPT && errno != EOPNOTSUPP && errno != EINVAL)
        fail("IPV6_V6ONLY on an AF_INET socket: unexpected errno");
    OKAY("SO_REUSEADDR kept; IPV6_V6ONLY on AF_INET fails with %s", strerrorname_np(errno));
    step = "listen";
    struct sockaddr_in any = {.sin_family = AF_INET};
    if (bind(s, (struct sockaddr *)&any, sizeof(any)) < 0 || listen(s, 8) < 0)
        fail("bind/listen");
    if (geti(s, SOL_SOCKET, SO_ACCEPTCONN, "SO_ACCEPTCONN") != 1)
        fail("SO_ACCEPTCONN of a listener is not 1");
    OKAY("SO_ACCEPTCONN of a listener: 1");
    close(s);
}

static void t_fstat(void)
{
    int t = tcp_connect(0);
    command(t, "HOLD\n");
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    if (u < 0)
        fail("socket(SOCK_DGRAM)");
    struct stat st;
    step = "fstat";
    if (fstat(t, &st) < 0 || !S_ISSOCK(st.st_mode))
        fail("fstat of a TCP socket: mode %#o, not S_IFSOCK", (unsigned)st.st_mode);
    if (fstat(u, &st) < 0 || !S_ISSOCK(st.st_mode))
        fail("fstat of a UDP socket: mode %#o, not S_IFSOCK", (unsigned)st.st_mode);
    OKAY("fstat: S_ISSOCK for TCP and UDP sockets");
    close(t);
    close(u);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s tcp|udp|sendfile|dup|fcntl|cloexec|opts|fstat IP PORT [FILE]\n",
                argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_name = argv[1];
    signal(SIGALRM, on_alarm);
    alarm(30);
    peer.sin_family = AF_INET;
    peer.sin_port = htons((uint16_t)atoi(argv[3]));
    if (inet_pton(AF_INET, argv[2], &peer.sin_addr) != 1)
        return 2;
    if (!strcmp(test_name, "tcp"))
        t_tcp();
    else if (!strcmp(test_name, "udp"))
        t_udp();
    else if (!strcmp(test_name, "sendfile") && argc > 4)
        t_sendfile(argv[4]);
    else if (!strcmp(test_name, "sendfile_nb") && argc > 4)
        t_sendfile_nb(argv[4]);
    else if (!strcmp(test_name, "dup"))
        t_dup();
    else if (!strcmp(test_name, "restart"))
        t_restart();
    else if (!strcmp(test_name, "lowat"))
        t_lowat();
    else if (!strcmp(test_name, "pktinfo"))
        t_pktinfo();
    else if (!strcmp(test_name, "rawclose"))
        t_rawclose();
    else if (!strcmp(test_name, "rawclose_asm"))
        t_rawclose_asm();
    else if (!strcmp(test_name, "fcntl"))
        t_fcntl();
    else if (!strcmp(test_name, "cloexec"))
        t_cloexec();
    else if (!strcmp(test_name, "opts"))
        t_opts();
    else if (!strcmp(test_name, "fstat"))
        t_fstat();
    else {
        fprintf(stderr, "unknown test %s\n", test_name);
        return 2;
    }
    printf("PASS %s\n", test_name);
    return 0;
}
