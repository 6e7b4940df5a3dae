/* preload_wait: readiness calls over a MIX of a kernel pipe and a socket, for the LD_PRELOAD
 * interposer (tests/integration/preload.sh). Plain libc calls only.
 *
 *   preload_wait TEST IP PORT
 *
 * IP:PORT is preload.sh's kernel peer ("SEND n delay_ms" sends n pattern bytes after a
 * delay, "SHUTWR delay_ms" half-closes). TEST is one of
 *   poll ppoll select pselect epoll     the same three waits with each call:
 *       socket   the peer sends after 1 s: only the socket is reported, after ~1 s
 *       pipe     a thread writes the pipe after 1 s: only the pipe is reported
 *       timeout  nothing happens: 0 after the 500 ms timeout
 *     and in each wait the process's CPU time (getrusage, all threads) must stay below
 *     0.3 s per second blocked: blocking, not spinning. Plus POLLOUT at once on the socket.
 *   epoll_et       edge-triggered: one report per arrival; level-triggered reports again
 *   epoll_oneshot  EPOLLONESHOT: one report, silent until EPOLL_CTL_MOD re-arms it
 *   epoll_del      EPOLL_CTL_ADD twice (EEXIST), EPOLL_CTL_DEL (then ENOENT): a removed
 *                  socket is not reported, the pipe still in the set is
 *   rdhup          the peer's FIN: EPOLLRDHUP|EPOLLIN and POLLRDHUP, then read() = 0
 *   eintr          a signal handler runs while poll/select/epoll_wait block on {pipe, socket}:
 *                  -1 EINTR even with SA_RESTART (signal(7): never restarted), within 1 s;
 *                  a blocking recv() with a handler without SA_RESTART: -1 EINTR (servers
 *                  such as nginx leave their event loop on a signal this way)
 * Prints "ok ..." per step (with the time and CPU of each wait) and "PASS TEST"; a failure
 * prints "FAIL TEST: ..." and exits 1. A 30 s alarm turns a hang into a failure. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CPU_MAX_PER_S 0.3 /* CPU seconds allowed per second spent blocked */

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

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static int tcp_connect(void)
{
    step = "socket";
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        fail("socket");
    step = "connect";
    if (connect(fd, (struct sockaddr *)&peer, sizeof(peer)) < 0)
        fail("connect");
    return fd;
}

static void command(int fd, const char *cmd)
{
    size_t n = strlen(cmd);
    step = cmd;
    if (write(fd, cmd, n) != (ssize_t)n)
        fail("write of the command");
}

/* Read exactly N pattern bytes (stream offset OFF) that are known to be on their way. */
static void read_pattern(int fd, size_t n, size_t off)
{
    uint8_t b[256];
    double t0 = now_s();
    while (n > 0) {
        ssize_t r = recv(fd, b, n < sizeof(b) ? n : sizeof(b), MSG_DONTWAIT);
        if (r == 0)
            fail("EOF while reading the peer's bytes");
        if (r < 0) {
            if (errno != EAGAIN || now_s() - t0 > 5)
                fail("recv of the peer's bytes");
            usleep(1000);
            continue;
        }
        for (ssize_t i = 0; i < r; i++)
            if (b[i] != (uint8_t)((off + (size_t)i) * 131u + 7u))
                fail("byte %zu of the peer's stream differs", off + (size_t)i);
        off += (size_t)r;
        n -= (size_t)r;
    }
}

/* ------------------------------------------------------------------ the three waits */

struct delayed_write {
    int fd, ms;
};

static void *writer(void *arg)
{
    struct delayed_write *d = arg;
    usleep((useconds_t)d->ms * 1000);
    if (write(d->fd, "p", 1) != 1)
        abort();
    return NULL;
}

enum { R_NONE = 0, R_SOCK = 1, R_PIPE = 2 };

/* One wait with METHOD over {pipe read end, socket} for readability, TIMEOUT_MS. Returns
 * the set of ready fds (R_SOCK | R_PIPE). */
static int wait_mixed(const char *method, int pfd, int sfd, int timeout_ms)
{
    if (!strcmp(method, "poll") || !strcmp(method, "ppoll")) {
        struct pollfd p[2] = {{.fd = pfd, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
        int r;
        if (method[0] == 'p' && method[1] == 'p') {
            struct timespec ts = {timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000L};
            r = ppoll(p, 2, &ts, NULL);
        } else {
            r = poll(p, 2, timeout_ms);
        }
        if (r < 0)
            fail("%s", method);
        if ((p[0].revents | p[1].revents) & (POLLERR | POLLNVAL))
            fail("%s revents %#x %#x", method, p[0].revents, p[1].revents);
        int set = (p[0].revents & POLLIN ? R_PIPE : 0) | (p[1].revents & POLLIN ? R_SOCK : 0);
        if (r != __builtin_popcount((unsigned)set))
            fail("%s returned %d for %d ready fds", method, r, __builtin_popcount((unsigned)set));
        return set;
    }
    if (!strcmp(method, "select") || !strcmp(method, "pselect")) {
        fd_set rs;
        FD_ZERO(&rs);
        FD_SET(pfd, &rs);
        FD_SET(sfd, &rs);
        int nfds = (pfd > sfd ? pfd : sfd) + 1, r;
        if (method[0] == 'p') {
            struct timespec ts = {timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000L};
            r = pselect(nfds, &rs, NULL, NULL, &ts, NULL);
        } else {
            struct timeval tv = {timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000L};
            r = select(nfds, &rs, NULL, NULL, &tv);
        }
        if (r < 0)
            fail("%s", method);
        int set = (FD_ISSET(pfd, &rs) ? R_PIPE : 0) | (FD_ISSET(sfd, &rs) ? R_SOCK : 0);
        if (r != __builtin_popcount((unsigned)set))
            fail("%s returned %d for %d ready fds", method, r, __builtin_popcount((unsigned)set));
        return set;
    }
    /* epoll: a fresh set each time, level-triggered */
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        fail("epoll_create1");
    struct epoll_event e1 = {.events = EPOLLIN, .data.u32 = R_PIPE},
                       e2 = {.events = EPOLLIN, .data.u32 = R_SOCK}, out[4];
    if (epoll_ctl(ep, EPOLL_CTL_ADD, pfd, &e1) < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &e2) < 0)
        fail("epoll_ctl ADD");
    int r = epoll_wait(ep, out, 4, timeout_ms);
    if (r < 0)
        fail("epoll_wait");
    int set = 0;
    for (int i = 0; i < r; i++) {
        if (out[i].events & (EPOLLERR | EPOLLHUP))
            fail("epoll_wait events %#x", out[i].events);
        set |= (int)out[i].data.u32;
    }
    close(ep);
    return set;
}

/* Time one wait, check what woke it, when, and the CPU it cost. */
static void timed_wait(const char *method, int pfd, int sfd, int timeout_ms, int want, double min_s,
                       double max_s, const char *what)
{
    step = what;
    double t0 = now_s(), c0 = cpu_s();
    int got = wait_mixed(method, pfd, sfd, timeout_ms);
    double dt = now_s() - t0, cpu = cpu_s() - c0;
    if (got != want)
        fail("%s reported %s%s%s after %.3f s, want %s", method, got & R_SOCK ? "socket " : "",
             got & R_PIPE ? "pipe " : "", got ? "" : "nothing", dt,
             want == R_SOCK   ? "the socket"
             : want == R_PIPE ? "the pipe"
                              : "nothing");
    if (dt < min_s || dt > max_s)
        fail("%s returned after %.3f s, want %.1f..%.1f s", method, dt, min_s, max_s);
    if (cpu > CPU_MAX_PER_S * (dt > 1 ? dt : 1))
        fail("%s used %.3f s of CPU while blocked %.3f s: spinning", method, cpu, dt);
    printf("ok %s: %s after %.3f s, CPU %.3f s\n", method, what, dt, cpu);
}

static void t_waits(const char *method)
{
    int p[2];
    step = "pipe";
    if (pipe(p) < 0)
        fail("pipe");
    int s = tcp_connect();

    /* POLLOUT / writable at once on a connected socket. */
    step = "writable at once";
    struct pollfd w = {.fd = s, .events = POLLOUT};
    if (poll(&w, 1, 2000) != 1 || !(w.revents & POLLOUT))
        fail("no POLLOUT on a connected socket");
    fd_set ws;
    FD_ZERO(&ws);
    FD_SET(s, &ws);
    struct timeval tv0 = {2, 0};
    if (select(s + 1, NULL, &ws, NULL, &tv0) != 1 || !FD_ISSET(s, &ws))
        fail("select does not report the connected socket writable");
    printf("ok writable at once (poll POLLOUT, select writefds)\n");

    /* 1. the socket: the peer sends 5 bytes after 1 s. */
    command(s, "SEND 5 1000\n");
    timed_wait(method, p[0], s, 5000, R_SOCK, 0.8, 3.0, "the socket became readable");
    read_pattern(s, 5, 0);

    /* 2. the pipe: a thread writes it after 1 s. */
    struct delayed_write d = {.fd = p[1], .ms = 1000};
    pthread_t th;
    if (pthread_create(&th, NULL, writer, &d))
        fail("pthread_create");
    timed_wait(method, p[0], s, 5000, R_PIPE, 0.8, 3.0, "the pipe became readable");
    pthread_join(th, NULL);
    char c;
    if (read(p[0], &c, 1) != 1)
        fail("read of the pipe");

    /* 3. nothing: the timeout. */
    timed_wait(method, p[0], s, 500, R_NONE, 0.45, 2.0, "nothing: the 500 ms timeout");

    /* 4. both at once: the socket's data and the pipe, reported together. */
    command(s, "SEND 3 0\n");
    if (write(p[1], "q", 1) != 1)
        fail("write of the pipe");
    double t0 = now_s();
    int got = 0;
    while (got != (R_SOCK | R_PIPE) && now_s() - t0 < 5)
        got = wait_mixed(method, p[0], s, 1000);
    if (got != (R_SOCK | R_PIPE))
        fail("%s did not report both ready fds (got %d)", method, got);
    printf("ok %s: both ready fds reported together\n", method);
    read_pattern(s, 3, 5);
    close(s);
    close(p[0]);
    close(p[1]);
}

/* ------------------------------------------------------------------ epoll specifics */

static int ep_wait(int ep, int ms, uint32_t *events)
{
    struct epoll_event ev[4];
    int r = epoll_wait(ep, ev, 4, ms);
    if (r < 0)
        fail("epoll_wait");
    if (r > 1)
        fail("epoll_wait returned %d events for one fd", r);
    if (events)
        *events = r ? ev[0].events : 0;
    return r;
}

static void t_epoll_et(void)
{
    int s = tcp_connect();
    int et = epoll_create1(0), lt = epoll_create1(0);
    struct epoll_event e = {.events = EPOLLIN | EPOLLET, .data.fd = s};
    struct epoll_event l = {.events = EPOLLIN, .data.fd = s};
    step = "epoll_ctl";
    if (et < 0 || lt < 0 || epoll_ctl(et, EPOLL_CTL_ADD, s, &e) < 0 ||
        epoll_ctl(lt, EPOLL_CTL_ADD, s, &l) < 0)
        fail("epoll_create1/epoll_ctl");
    command(s, "SEND 4 200\n");
    step = "first arrival";
    uint32_t ev;
    if (ep_wait(et, 5000, &ev) != 1 || !(ev & EPOLLIN))
        fail("edge-triggered: no EPOLLIN for the first arrival");
    usleep(100000);
    step = "no new arrival";
    if (ep_wait(et, 300, NULL) != 0)
        fail("edge-triggered: reported again without a new arrival");
    if (ep_wait(lt, 0, &ev) != 1 || !(ev & EPOLLIN))
        fail("level-triggered: not reported while data is unread");
    if (ep_wait(lt, 0, &ev) != 1)
        fail("level-triggered: not reported a second time");
    printf("ok EPOLLET: one report per arrival; level-triggered: reported while unread\n");
    command(s, "SEND 6 200\n");
    step = "second arrival";
    if (ep_wait(et, 5000, &ev) != 1 || !(ev & EPOLLIN))
        fail("edge-triggered: no EPOLLIN for the second arrival");
    usleep(100000);
    read_pattern(s, 10, 0);
    step = "drained";
    if (ep_wait(lt, 200, NULL) != 0)
        fail("level-triggered: reported after everything was read");
    printf("ok EPOLLET: the second arrival reported again; drained: level-triggered silent\n");
    close(et);
    close(lt);
    close(s);
}

static void t_epoll_oneshot(void)
{
    int s = tcp_connect();
    int ep = epoll_create1(0);
    struct epoll_event e = {.events = EPOLLIN | EPOLLONESHOT, .data.fd = s};
    step = "epoll_ctl";
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, s, &e) < 0)
        fail("epoll_ctl ADD");
    command(s, "SEND 2 100\n");
    uint32_t ev;
    step = "first report";
    if (ep_wait(ep, 5000, &ev) != 1 || !(ev & EPOLLIN))
        fail("no EPOLLIN");
    command(s, "SEND 2 0\n");
    usleep(200000);
    step = "disarmed";
    if (ep_wait(ep, 300, NULL) != 0)
        fail("EPOLLONESHOT: reported again before EPOLL_CTL_MOD");
    step = "re-armed";
    if (epoll_ctl(ep, EPOLL_CTL_MOD, s, &e) < 0)
        fail("epoll_ctl MOD");
    if (ep_wait(ep, 2000, &ev) != 1 || !(ev & EPOLLIN))
        fail("EPOLLONESHOT: not reported after EPOLL_CTL_MOD with data unread");
    read_pattern(s, 4, 0);
    printf("ok EPOLLONESHOT: one report, silent until EPOLL_CTL_MOD, then reported\n");
    close(ep);
    close(s);
}

static void t_epoll_del(void)
{
    int s = tcp_connect();
    int ep = epoll_create1(0), p[2];
    if (pipe(p) < 0)
        fail("pipe");
    struct epoll_event e = {.events = EPOLLIN, .data.fd = s},
                       q = {.events = EPOLLIN, .data.fd = p[0]};
    step = "epoll_ctl";
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, s, &e) < 0 ||
        epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &q) < 0)
        fail("epoll_ctl ADD");
    step = "EEXIST";
    if (epoll_ctl(ep, EPOLL_CTL_ADD, s, &e) != -1 || errno != EEXIST)
        fail("adding the socket twice did not give EEXIST");
    step = "EPOLL_CTL_DEL";
    if (epoll_ctl(ep, EPOLL_CTL_DEL, s, NULL) < 0)
        fail("epoll_ctl DEL");
    if (epoll_ctl(ep, EPOLL_CTL_DEL, s, NULL) != -1 || errno != ENOENT)
        fail("deleting it again did not give ENOENT");
    command(s, "SEND 3 0\n");
    usleep(300000);
    step = "removed";
    if (ep_wait(ep, 300, NULL) != 0)
        fail("a removed socket was reported");
    if (write(p[1], "x", 1) != 1)
        fail("write of the pipe");
    struct epoll_event out[4];
    int r = epoll_wait(ep, out, 4, 2000);
    if (r != 1 || out[0].data.fd != p[0])
        fail("the pipe (still in the set) was not reported alone (%d events)", r);
    read_pattern(s, 3, 0);
    printf("ok EPOLL_CTL_DEL: EEXIST, ENOENT, removed socket silent, the pipe still reported\n");
    close(ep);
    close(s);
    close(p[0]);
    close(p[1]);
}

static void t_rdhup(void)
{
    int s = tcp_connect();
    int ep = epoll_create1(0);
    struct epoll_event e = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = s};
    step = "epoll_ctl";
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, s, &e) < 0)
        fail("epoll_ctl ADD");
    command(s, "SEND 7 0\nSHUTWR 500\n");
    step = "the data before the FIN";
    uint32_t ev = 0;
    if (ep_wait(ep, 5000, &ev) != 1 || !(ev & EPOLLIN))
        fail("no EPOLLIN for the data");
    read_pattern(s, 7, 0);
    step = "the FIN";
    double t0 = now_s();
    do {
        if (ep_wait(ep, 5000, &ev) != 1)
            fail("no event for the peer's FIN");
    } while (!(ev & EPOLLRDHUP) && now_s() - t0 < 5);
    if (!(ev & EPOLLRDHUP) || !(ev & EPOLLIN))
        fail("events %#x, want EPOLLIN|EPOLLRDHUP", ev);
    struct pollfd p = {.fd = s, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 1000) != 1 || !(p.revents & POLLRDHUP))
        fail("poll revents %#x, want POLLRDHUP", p.revents);
    char c;
    if (read(s, &c, 1) != 0)
        fail("read after the FIN is not 0 (EOF)");
    printf("ok the peer's FIN: EPOLLIN|EPOLLRDHUP (%#x), POLLRDHUP, read() = 0\n", ev);
    close(ep);
    close(s);
}

/* ------------------------------------------------------------------ EINTR */

static volatile sig_atomic_t got_signal;

static void on_usr1(int sig)
{
    (void)sig;
    got_signal = 1;
}

struct kicker {
    pthread_t target;
    int ms;
};

static void *kick(void *arg)
{
    struct kicker *k = arg;
    usleep((useconds_t)k->ms * 1000);
    pthread_kill(k->target, SIGUSR1);
    return NULL;
}

/* One blocking call (0 poll, 1 select, 2 epoll_wait, 3 recv) interrupted after 300 ms. */
static void interrupted(int which, int pfd, int s, int ep, int restart)
{
    static const char *names[] = {"poll", "select", "epoll_wait", "recv"};
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_usr1;
    sa.sa_flags = restart ? SA_RESTART : 0;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    step = names[which];
    got_signal = 0;
    struct kicker k = {.target = pthread_self(), .ms = 300};
    pthread_t th;
    if (pthread_create(&th, NULL, kick, &k))
        fail("pthread_create");
    double t0 = now_s();
    long r;
    char b[8];
    if (which == 0) {
        struct pollfd p[2] = {{.fd = pfd, .events = POLLIN}, {.fd = s, .events = POLLIN}};
        r = poll(p, 2, 5000);
    } else if (which == 1) {
        fd_set rs;
        FD_ZERO(&rs);
        FD_SET(pfd, &rs);
        FD_SET(s, &rs);
        struct timeval tv = {5, 0};
        r = select((pfd > s ? pfd : s) + 1, &rs, NULL, NULL, &tv);
    } else if (which == 2) {
        struct epoll_event ev[2];
        r = epoll_wait(ep, ev, 2, 5000);
    } else {
        r = recv(s, b, sizeof(b), 0);
    }
    int e = errno;
    double dt = now_s() - t0;
    pthread_join(th, NULL);
    errno = e;
    if (!got_signal)
        fail("%s: the handler did not run", names[which]);
    if (r != -1 || e != EINTR)
        fail("%s returned %ld after the signal (%.3f s), want -1 EINTR", names[which], r, dt);
    if (dt > 1.0)
        fail("%s returned EINTR only after %.3f s", names[which], dt);
    printf("ok %s%s: EINTR after %.3f s\n", names[which], restart ? " (SA_RESTART)" : "", dt);
}

static void t_eintr(void)
{
    int p[2];
    if (pipe(p) < 0)
        fail("pipe");
    int s = tcp_connect();
    int ep = epoll_create1(0);
    struct epoll_event e1 = {.events = EPOLLIN, .data.fd = p[0]},
                       e2 = {.events = EPOLLIN, .data.fd = s};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &e1) < 0 ||
        epoll_ctl(ep, EPOLL_CTL_ADD, s, &e2) < 0)
        fail("epoll_ctl");
    for (int which = 0; which < 3; which++)
        interrupted(which, p[0], s, ep, 1);
    interrupted(3, p[0], s, ep, 0);
    close(ep);
    close(s);
    close(p[0]);
    close(p[1]);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr,
                "usage: %s "
                "poll|ppoll|select|pselect|epoll|epoll_et|epoll_oneshot|epoll_del|rdhup|eintr "
                "IP PORT\n",
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
    const char *t = test_name;
    if (!strcmp(t, "poll") || !strcmp(t, "ppoll") || !strcmp(t, "select") ||
        !strcmp(t, "pselect") || !strcmp(t, "epoll"))
        t_waits(t);
    else if (!strcmp(t, "epoll_et"))
        t_epoll_et();
    else if (!strcmp(t, "epoll_oneshot"))
        t_epoll_oneshot();
    else if (!strcmp(t, "epoll_del"))
        t_epoll_del();
    else if (!strcmp(t, "rdhup"))
        t_rdhup();
    else if (!strcmp(t, "eintr"))
        t_eintr();
    else {
        fprintf(stderr, "unknown test %s\n", t);
        return 2;
    }
    printf("PASS %s\n", t);
    return 0;
}
