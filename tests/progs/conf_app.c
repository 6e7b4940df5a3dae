/* conf_app: the application side of the TCP conformance harness (tests/conformance/).
 * Plain libc socket calls only: it runs with LD_PRELOAD=libshmnet_preload.so, so every
 * call below goes through shmnet, and the harness's engine (tests/conformance/tcpconf.py)
 * decides at which moment each call is made.
 *
 * Line protocol: one command per line on stdin, exactly one answer line on stdout per
 * command (flushed). Answers start with "ok", "err NAME" (errno name), "eof", "timeout"
 * or "bad". File descriptors are the process's own numbers.
 *
 *   listen PORT BACKLOG         bind 0.0.0.0:PORT, listen, O_NONBLOCK  -> ok FD
 *   accept LFD [TIMEOUT_MS]     poll + accept (default 5000 ms)        -> ok FD PEERPORT
 *   connect IP PORT             blocking connect                       -> ok FD LOCALPORT
 *   write FD N                  N bytes of the pattern, all of them    -> ok N | err NAME SENT
 *   writeclose FD N             write N bytes, then close at once      -> ok N
 *   read FD N [TIMEOUT_MS]      read until N bytes (default 5000 ms)   -> ok N | eof GOT |
 *                               err NAME GOT | timeout GOT | bad OFFSET
 *   readeof FD [TIMEOUT_MS]     read until EOF                         -> eof GOT | ...
 *   close FD                    close(2)                               -> ok
 *   shutdown FD wr|rd|rdwr      shutdown(2)                            -> ok
 *   linger FD ON SECS           SO_LINGER                              -> ok
 *   nodelay FD 0|1              TCP_NODELAY                            -> ok
 *   sockerr FD                  SO_ERROR                               -> ok NAME | ok 0
 *   sleep MS                                                           -> ok
 *   exit                        answers "ok", then exit(0) without closing any socket
 *
 * Data pattern: byte i of a connection's stream (each direction counted on its own) is
 * (i % 251). Writes continue the pattern per descriptor; reads check it ("bad OFFSET" at
 * the first wrong byte), so the engine sends the same pattern. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXFD 1024

static uint64_t wr_off[MAXFD], rd_off[MAXFD];

static const char *ename(int e)
{
    const char *n = strerrorname_np(e);
    return n ? n : "EUNKNOWN";
}

static void reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void reply(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int fd_ok(int fd)
{
    return fd >= 0 && fd < MAXFD;
}

static void do_listen(int port, int backlog)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || !fd_ok(fd)) {
        reply("err %s", ename(errno));
        return;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, backlog)) {
        reply("err %s", ename(errno));
        close(fd);
        return;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    reply("ok %d", fd);
}

static void do_accept(int lfd, int timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    for (;;) {
        struct sockaddr_in a;
        socklen_t al = sizeof(a);
        int fd = accept(lfd, (struct sockaddr *)&a, &al);
        if (fd >= 0) {
            if (!fd_ok(fd)) {
                close(fd);
                reply("err EMFILE");
                return;
            }
            wr_off[fd] = rd_off[fd] = 0;
            reply("ok %d %u", fd, ntohs(a.sin_port));
            return;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            reply("err %s", ename(errno));
            return;
        }
        int64_t left = end - now_ms();
        if (left <= 0) {
            reply("err ETIMEDOUT");
            return;
        }
        struct pollfd p = {.fd = lfd, .events = POLLIN};
        poll(&p, 1, (int)left);
    }
}

static void do_connect(const char *ip, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || !fd_ok(fd)) {
        reply("err %s", ename(errno));
        return;
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a))) {
        reply("err %s", ename(errno));
        close(fd);
        return;
    }
    struct sockaddr_in l;
    socklen_t ll = sizeof(l);
    getsockname(fd, (struct sockaddr *)&l, &ll);
    wr_off[fd] = rd_off[fd] = 0;
    reply("ok %d %u", fd, ntohs(l.sin_port));
}

/* Returns the bytes written; *err = errno of the failure, or 0. */
static size_t write_n(int fd, size_t n, int *err)
{
    static uint8_t buf[65536];
    size_t done = 0;
    *err = 0;
    while (done < n) {
        size_t k = n - done < sizeof(buf) ? n - done : sizeof(buf);
        for (size_t i = 0; i < k; i++)
            buf[i] = (uint8_t)((wr_off[fd] + i) % 251);
        ssize_t w = write(fd, buf, k);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            *err = errno;
            break;
        }
        wr_off[fd] += (uint64_t)w;
        done += (size_t)w;
    }
    return done;
}

static void do_read(int fd, long n, int timeout_ms)
{
    static uint8_t buf[65536];
    int64_t end = now_ms() + timeout_ms;
    long got = 0;
    while (n < 0 || got < n) {
        int64_t left = end - now_ms();
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int pr = poll(&p, 1, left > 0 ? (int)left : 0);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr == 0) {
            reply("timeout %ld", got);
            return;
        }
        size_t want = n < 0 || (size_t)(n - got) > sizeof(buf) ? sizeof(buf) : (size_t)(n - got);
        ssize_t r = read(fd, buf, want);
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            reply("err %s %ld", ename(errno), got);
            return;
        }
        if (r == 0) {
            reply("eof %ld", got);
            return;
        }
        for (ssize_t i = 0; i < r; i++) {
            if (buf[i] != (uint8_t)((rd_off[fd] + (uint64_t)i) % 251)) {
                reply("bad %llu", (unsigned long long)(rd_off[fd] + (uint64_t)i));
                return;
            }
        }
        rd_off[fd] += (uint64_t)r;
        got += r;
    }
    reply("ok %ld", got);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, stdin) > 0) {
        char cmd[32] = "", s1[64] = "";
        long a = 0, b = 0, c = 0;
        int n = sscanf(line, "%31s %63s %ld %ld", cmd, s1, &b, &c);
        if (n < 1)
            continue;
        a = strtol(s1, NULL, 10);
        int fd = (int)a, err;
        if (!strcmp(cmd, "listen") && n >= 3) {
            do_listen((int)a, (int)b);
        } else if (!strcmp(cmd, "accept") && n >= 2) {
            do_accept(fd, n >= 3 ? (int)b : 5000);
        } else if (!strcmp(cmd, "connect") && n >= 3) {
            do_connect(s1, (int)b);
        } else if (!strcmp(cmd, "write") && n >= 3 && fd_ok(fd)) {
            size_t w = write_n(fd, (size_t)b, &err);
            if (err)
                reply("err %s %zu", ename(err), w);
            else
                reply("ok %zu", w);
        } else if (!strcmp(cmd, "writeclose") && n >= 3 && fd_ok(fd)) {
            size_t w = write_n(fd, (size_t)b, &err);
            int rc = close(fd);
            if (err)
                reply("err %s %zu", ename(err), w);
            else if (rc)
                reply("err %s %zu", ename(errno), w);
            else
                reply("ok %zu", w);
        } else if (!strcmp(cmd, "read") && n >= 3 && fd_ok(fd)) {
            do_read(fd, b, n >= 4 ? (int)c : 5000);
        } else if (!strcmp(cmd, "readeof") && n >= 2 && fd_ok(fd)) {
            do_read(fd, -1, n >= 3 ? (int)b : 5000);
        } else if (!strcmp(cmd, "close") && n >= 2) {
            if (close(fd))
                reply("err %s", ename(errno));
            else
                reply("ok");
        } else if (!strcmp(cmd, "shutdown") && n >= 2) {
            char how[16] = "";
            sscanf(line, "%*s %*s %15s", how);
            int h = !strcmp(how, "rd") ? SHUT_RD : !strcmp(how, "rdwr") ? SHUT_RDWR : SHUT_WR;
            if (shutdown(fd, h))
                reply("err %s", ename(errno));
            else
                reply("ok");
        } else if (!strcmp(cmd, "linger") && n >= 4) {
            struct linger l = {.l_onoff = (int)b, .l_linger = (int)c};
            if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l)))
                reply("err %s", ename(errno));
            else
                reply("ok");
        } else if (!strcmp(cmd, "nodelay") && n >= 3) {
            int v = (int)b;
            if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof(v)))
                reply("err %s", ename(errno));
            else
                reply("ok");
        } else if (!strcmp(cmd, "sockerr") && n >= 2) {
            int e = 0;
            socklen_t el = sizeof(e);
            if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el))
                reply("err %s", ename(errno));
            else if (e)
                reply("ok %s", ename(e));
            else
                reply("ok 0");
        } else if (!strcmp(cmd, "sleep") && n >= 2) {
            usleep((useconds_t)a * 1000);
            reply("ok");
        } else if (!strcmp(cmd, "exit")) {
            reply("ok");
            exit(0);
        } else {
            reply("err EINVAL unknown command or bad arguments: %s", cmd);
        }
    }
    return 0;
}
