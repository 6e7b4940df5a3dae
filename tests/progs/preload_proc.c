/* preload_proc: processes, threads, non-INET descriptors and the interposer's policies, for
 * the LD_PRELOAD interposer (tests/integration/preload.sh). Plain libc calls only.
 *
 *   preload_proc fork PORT [parent-closes]   listen on PORT, print LISTENING, fork: the child
 *                        accepts with the inherited listener and echoes (read to EOF, send it
 *                        all back); then the parent accepts a second connection with its own
 *                        copy. parent-closes: the parent closes its copy right after fork and
 *                        the child serves both connections.
 *   preload_proc fork_conn IP PORT           a connected socket (peer ECHO) used by the parent,
 *                        then by a forked child, then by the parent again after the child
 *                        exited: the child's exit does not close the parent's connection
 *   preload_proc fork_exec IP PORT           a connected close-on-exec socket (peer ECHO), fork, exec
 *                        in the child: the parent's close reaches the peer at once, while
 *                        the exec'd child runs; prints "eof-port P"
 *   preload_proc sandbox IP PORT             a connected socket (peer ECHO) used by a forked
 *                        child under OpenSSH's sandbox (RLIMIT_NOFILE 1; seccomp kills
 *                        sched_yield, kill, tgkill; refuses openat): poll, read, write work
 *   preload_proc threads PORT                one thread blocks in accept, hands the socket
 *                        to another thread that blocks in read, echoes, closes
 *   preload_proc unix PATH                   AF_UNIX (socketpair stream/dgram, a listener on
 *                        PATH), pipes, SCM_RIGHTS, eventfd, AF_NETLINK (getifaddrs), poll and
 *                        epoll over them, all passed through to the kernel while an AF_INET
 *                        socket is open
 *   preload_proc inet6 refuse|kernel         AF_INET6: EAFNOSUPPORT, or kernel sockets that
 *                        work on ::1 (SHMNET_INET6=kernel)
 *   preload_proc absent IP PORT LOOPPORT     no daemon: TCP to IP:PORT, TCP to 127.0.0.1:LOOPPORT
 *                        (where a kernel listener is) and UDP to IP:PORT all fail with
 *                        ECONNREFUSED or ENETUNREACH (at socket() or at connect()/sendto())
 *   preload_proc fallback LOOPPORT           no daemon, SHMNET_FALLBACK=kernel: TCP and UDP
 *                        echo with the kernel peer on 127.0.0.1:LOOPPORT
 *   preload_proc hold IP PORT                a TCP connection (peer HOLD) and a UDP socket
 *                        that sent one datagram; prints "tcp-local P" and "udp-local P", then
 *                        keeps both open until stdin reaches EOF
 * Prints "ok ..." per step and "PASS TEST"; a failure prints "FAIL TEST: ..." and exits 1.
 * A 30 s alarm turns a hang into a failure. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *test_name = "?";
static const char *step = "start";

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

static struct sockaddr_in sin4(const char *ip, int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", ip);
        exit(2);
    }
    return a;
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

static void roundtrip(int fd, const char *msg)
{
    char in[64];
    size_t n = strlen(msg);
    step = msg;
    write_all(fd, msg, n);
    read_all(fd, in, n);
    if (memcmp(in, msg, n))
        fail("other bytes came back");
}

static int listener(int port)
{
    step = "listen";
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    if (l < 0)
        fail("socket");
    if (setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
        fail("SO_REUSEADDR");
    struct sockaddr_in a = sin4("0.0.0.0", port);
    if (bind(l, (struct sockaddr *)&a, sizeof(a)) < 0)
        fail("bind 0.0.0.0:%d", port);
    if (listen(l, 16) < 0)
        fail("listen");
    printf("LISTENING\n");
    fflush(stdout);
    return l;
}

/* Accept one connection, read it to EOF, send it all back, close. */
static size_t serve_one(int l, const char *who)
{
    step = "accept";
    struct sockaddr_in pa = {0};
    socklen_t pl = sizeof(pa);
    int c = accept(l, (struct sockaddr *)&pa, &pl);
    if (c < 0)
        fail("%s: accept", who);
    if (pl != sizeof(pa) || pa.sin_family != AF_INET)
        fail("%s: accept gave no AF_INET peer address", who);
    step = "read to EOF";
    size_t cap = 1 << 20, n = 0;
    uint8_t *buf = malloc(cap);
    for (;;) {
        if (n == cap)
            buf = realloc(buf, cap *= 2);
        ssize_t r = read(c, buf + n, cap - n);
        if (r < 0)
            fail("%s: read", who);
        if (r == 0)
            break;
        n += (size_t)r;
    }
    step = "echo back";
    write_all(c, buf, n);
    if (close(c) < 0)
        fail("%s: close", who);
    free(buf);
    printf("ok %s (pid %d) served %zu bytes\n", who, (int)getpid(), n);
    fflush(stdout);
    return n;
}

/* In a forked child: its own 30 s limit (alarms are not inherited) and death with the
 * parent, so a child stuck in accept never outlives the test. */
static void child_limits(pid_t parent)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(1);
    alarm(30);
}

static int wait_child(pid_t pid, const char *what)
{
    int st;
    step = what;
    if (waitpid(pid, &st, 0) != pid)
        fail("waitpid");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        printf("FAIL %s: %s: child status %#x\n", test_name, what, st);
        exit(1);
    }
    return 0;
}

/* ------------------------------------------------------------------ fork */

static void t_fork(int port, int parent_closes)
{
    int l = listener(port);
    fflush(stdout);
    step = "fork";
    pid_t parent = getpid(), pid = fork();
    if (pid < 0)
        fail("fork");
    if (pid == 0) {
        child_limits(parent);
        test_name = "fork (child)";
        serve_one(l, "child");
        if (parent_closes)
            serve_one(l, "child");
        close(l);
        exit(0);
    }
    if (parent_closes) {
        step = "parent closes its copy";
        if (close(l) < 0)
            fail("close");
        printf("ok parent closed its copy of the listener\n");
        wait_child(pid, "the child's two connections");
        return;
    }
    wait_child(pid, "the child's connection");
    serve_one(l, "parent");
    close(l);
}

/* A TCP connection to the peer's ECHO (type: SOCK_STREAM with its flags) after one round
 * trip (msg); its local address in *me when me is not NULL. */
static int echo_conn(const char *ip, int port, int type, struct sockaddr_in *me, const char *msg)
{
    struct sockaddr_in a = sin4(ip, port);
    socklen_t ml = sizeof(*me);
    step = "connect";
    int s = socket(AF_INET, type, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        (me && getsockname(s, (struct sockaddr *)me, &ml) < 0))
        fail("socket/connect");
    write_all(s, "ECHO\n", 5);
    roundtrip(s, msg);
    return s;
}

static void t_fork_conn(const char *ip, int port)
{
    int s = echo_conn(ip, port, SOCK_STREAM, NULL, "parent-before-fork");
    fflush(stdout);
    step = "fork";
    pid_t parent = getpid(), pid = fork();
    if (pid < 0)
        fail("fork");
    if (pid == 0) {
        child_limits(parent);
        test_name = "fork_conn (child)";
        roundtrip(s, "child-on-the-inherited-socket");
        exit(0);
    }
    wait_child(pid, "the child's round trip");
    printf("ok the child used the inherited connection\n");
    roundtrip(s, "parent-after-the-child-exited");
    printf("ok the parent's connection survived the child's exit\n");
    close(s);
}

/* A connected close-on-exec socket, then fork and exec in the child (sleep): the exec'd
 * image holds nothing of the parent's, so the parent's close ends the connection at once
 * (the peer sees the FIN) while the child still runs, as with a kernel socket. Prints "eof-port P" and keeps the child alive
 * for 3 s more, so a FIN that waits for the child's end comes too late for the caller. */
static void t_fork_exec(const char *ip, int port)
{
    struct sockaddr_in me;
    int ready[2];
    char c;
    int s = echo_conn(ip, port, SOCK_STREAM | SOCK_CLOEXEC, &me, "before-fork");
    step = "fork and exec";
    if (pipe2(ready, O_CLOEXEC) < 0)
        fail("pipe2");
    fflush(stdout);
    pid_t parent = getpid(), pid = fork();
    if (pid < 0)
        fail("fork");
    if (pid == 0) {
        child_limits(parent);
        execl("/bin/sleep", "sleep", "20", (char *)NULL);
        _exit(127);
    }
    close(ready[1]);
    if (read(ready[0], &c, 1) != 0) /* EOF: the exec closed the child's copy */
        fail("the child did not exec");
    close(s);
    printf("ok closed after the child's exec\neof-port %u\n", ntohs(me.sin_port));
    fflush(stdout);
    sleep(3);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* The sandbox of OpenSSH's pre-authentication child: no new fds (RLIMIT_NOFILE 1), and a
 * seccomp filter that kills the process for sched_yield, kill and tgkill and refuses
 * openat. The interposer must keep to the calls the program makes itself. */
static void sandbox_self(void)
{
#define KILL_ON(nr)                                                                                \
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1),                                               \
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS)
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        KILL_ON(__NR_sched_yield),
        KILL_ON(__NR_kill),
        KILL_ON(__NR_tgkill),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_openat, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EACCES),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
#undef KILL_ON
    struct sock_fprog prog = {.len = (unsigned short)(sizeof(f) / sizeof(f[0])), .filter = f};
    struct rlimit one = {1, 1};
    if (setrlimit(RLIMIT_NOFILE, &one) < 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
        fail("sandbox");
}

/* A connected socket used by a forked child after it sandboxed itself: round trips that
 * wait in poll and in read. Killed by SIGSYS, or stuck on EINVAL, the child fails. */
static void t_sandbox(const char *ip, int port)
{
    int s = echo_conn(ip, port, SOCK_STREAM, NULL, "before-fork");
    fflush(stdout);
    pid_t parent = getpid(), pid = fork();
    if (pid < 0)
        fail("fork");
    if (pid == 0) {
        child_limits(parent);
        test_name = "sandbox (child)";
        sandbox_self();
        for (int i = 0; i < 20; i++) {
            struct pollfd p = {.fd = s, .events = POLLIN};
            char msg[32], in[32];
            int n = snprintf(msg, sizeof(msg), "sandboxed-%d", i);
            step = "write in the sandbox";
            write_all(s, msg, (size_t)n);
            step = "poll in the sandbox";
            if (poll(&p, 1, 5000) != 1 || !(p.revents & POLLIN))
                fail("poll: revents %#x", p.revents);
            step = "read in the sandbox";
            read_all(s, in, (size_t)n);
            if (memcmp(in, msg, (size_t)n))
                fail("other bytes came back");
        }
        _exit(0);
    }
    wait_child(pid, "the sandboxed child's round trips");
    printf("ok a sandboxed child (RLIMIT_NOFILE 1, seccomp) used the inherited connection\n");
    roundtrip(s, "after-the-child");
    close(s);
}

/* ------------------------------------------------------------------ threads */

static int handoff[2];

static void *accepter(void *arg)
{
    int l = *(int *)arg;
    step = "accept (thread A)";
    int c = accept(l, NULL, NULL);
    if (c < 0)
        fail("accept in thread A");
    if (write(handoff[1], &c, sizeof(c)) != sizeof(c))
        fail("handoff");
    return NULL;
}

static void *reader(void *arg)
{
    int c;
    (void)arg;
    step = "read (thread B)";
    if (read(handoff[0], &c, sizeof(c)) != sizeof(c))
        fail("handoff");
    size_t cap = 1 << 20, n = 0;
    uint8_t *buf = malloc(cap);
    for (;;) {
        if (n == cap)
            buf = realloc(buf, cap *= 2);
        ssize_t r = read(c, buf + n, cap - n);
        if (r < 0)
            fail("read in thread B");
        if (r == 0)
            break;
        n += (size_t)r;
    }
    write_all(c, buf, n);
    close(c);
    free(buf);
    printf("ok thread B read %zu bytes from the socket thread A accepted, echoed them\n", n);
    return NULL;
}

static void t_threads(int port)
{
    if (pipe(handoff) < 0)
        fail("pipe");
    int l = listener(port);
    pthread_t a, b;
    if (pthread_create(&b, NULL, reader, NULL) || pthread_create(&a, NULL, accepter, &l))
        fail("pthread_create");
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    close(l);
}

/* ------------------------------------------------------------------ unix, pipes, netlink */

static void t_unix(const char *path)
{
    step = "an AF_INET socket alongside";
    int inet = socket(AF_INET, SOCK_STREAM, 0);
    if (inet < 0)
        fail("socket(AF_INET)");

    step = "socketpair stream";
    int sv[2];
    char b[64];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
        fail("socketpair");
    if (sv[0] == inet || sv[1] == inet)
        fail("a kernel fd has the AF_INET socket's number");
    write_all(sv[0], "hello", 5);
    read_all(sv[1], b, 5);
    if (memcmp(b, "hello", 5))
        fail("other bytes");
    int dom = 0;
    socklen_t l = sizeof(dom);
    if (getsockopt(sv[0], SOL_SOCKET, SO_DOMAIN, &dom, &l) < 0 || dom != AF_UNIX)
        fail("SO_DOMAIN of a socketpair = %d", dom);
    printf("ok socketpair(AF_UNIX, SOCK_STREAM): data, SO_DOMAIN AF_UNIX\n");

    step = "socketpair dgram";
    int dv[2];
    if (socketpair(AF_UNIX, SOCK_DGRAM, 0, dv) < 0)
        fail("socketpair");
    if (send(dv[0], "ab", 2, 0) != 2 || send(dv[0], "cde", 3, 0) != 3)
        fail("send");
    if (recv(dv[1], b, sizeof(b), 0) != 2 || recv(dv[1], b, sizeof(b), 0) != 3)
        fail("datagram boundaries lost");
    printf("ok socketpair(AF_UNIX, SOCK_DGRAM): datagram boundaries\n");

    step = "AF_UNIX listener";
    struct sockaddr_un ua = {.sun_family = AF_UNIX};
    snprintf(ua.sun_path, sizeof(ua.sun_path), "%s", path);
    unlink(path);
    int ul = socket(AF_UNIX, SOCK_STREAM, 0), uc = socket(AF_UNIX, SOCK_STREAM, 0);
    if (ul < 0 || uc < 0 || bind(ul, (struct sockaddr *)&ua, sizeof(ua)) < 0 || listen(ul, 4) < 0)
        fail("bind/listen %s", path);
    if (connect(uc, (struct sockaddr *)&ua, sizeof(ua)) < 0)
        fail("connect");
    int ua2 = accept(ul, NULL, NULL);
    if (ua2 < 0)
        fail("accept");
    static uint8_t big[100000], got[100000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i * 7);
    /* 100 KB one way through a non-blocking writer and a poll loop (no deadlock). */
    size_t wo = 0, ro = 0;
    fcntl(uc, F_SETFL, O_NONBLOCK);
    double t0 = now_s();
    while (ro < sizeof(big) && now_s() - t0 < 10) {
        struct pollfd p[2] = {{.fd = uc, .events = wo < sizeof(big) ? POLLOUT : 0},
                              {.fd = ua2, .events = POLLIN}};
        if (poll(p, 2, 1000) < 0)
            fail("poll");
        if (p[0].revents & POLLOUT) {
            ssize_t w = write(uc, big + wo, sizeof(big) - wo);
            if (w > 0)
                wo += (size_t)w;
        }
        if (p[1].revents & POLLIN) {
            ssize_t r = read(ua2, got + ro, sizeof(got) - ro);
            if (r <= 0)
                fail("read");
            ro += (size_t)r;
        }
    }
    if (ro != sizeof(big) || memcmp(big, got, sizeof(big)))
        fail("100 KB over AF_UNIX: %zu bytes", ro);
    printf("ok AF_UNIX listener on a path: connect, accept, 100 KB with poll\n");

    step = "pipe";
    int p[2];
    if (pipe(p) < 0)
        fail("pipe");
    struct iovec wv[2] = {{"pi", 2}, {"pe", 2}};
    if (writev(p[1], wv, 2) != 4 || read(p[0], b, 4) != 4 || memcmp(b, "pipe", 4))
        fail("writev/read on a pipe");
    printf("ok pipe: writev, read\n");

    step = "SCM_RIGHTS";
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } cm;
    memset(&cm, 0, sizeof(cm));
    struct iovec one = {"x", 1};
    struct msghdr mh = {
        .msg_iov = &one, .msg_iovlen = 1, .msg_control = cm.buf, .msg_controllen = sizeof(cm.buf)};
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &p[1], sizeof(int));
    if (sendmsg(sv[0], &mh, 0) != 1)
        fail("sendmsg with SCM_RIGHTS");
    char xb;
    struct iovec rone = {&xb, 1};
    memset(&cm, 0, sizeof(cm));
    struct msghdr rh = {
        .msg_iov = &rone, .msg_iovlen = 1, .msg_control = cm.buf, .msg_controllen = sizeof(cm.buf)};
    if (recvmsg(sv[1], &rh, 0) != 1)
        fail("recvmsg");
    c = CMSG_FIRSTHDR(&rh);
    if (!c || c->cmsg_type != SCM_RIGHTS)
        fail("no SCM_RIGHTS received");
    int passed;
    memcpy(&passed, CMSG_DATA(c), sizeof(int));
    if (write(passed, "via", 3) != 3 || read(p[0], b, 3) != 3 || memcmp(b, "via", 3))
        fail("the passed pipe end does not reach the pipe");
    close(passed);
    printf("ok SCM_RIGHTS: a pipe end passed over AF_UNIX works\n");

    step = "eventfd";
    int ev = eventfd(0, 0);
    uint64_t v = 5, r = 0;
    if (ev < 0 || write(ev, &v, 8) != 8 || read(ev, &r, 8) != 8 || r != 5)
        fail("eventfd write/read");
    printf("ok eventfd: write, read\n");

    step = "poll and epoll over kernel fds";
    write_all(sv[0], "z", 1);
    struct pollfd pf[3] = {{.fd = sv[1], .events = POLLIN},
                           {.fd = p[0], .events = POLLIN},
                           {.fd = ev, .events = POLLIN}};
    if (poll(pf, 3, 1000) != 1 || !(pf[0].revents & POLLIN) || pf[1].revents || pf[2].revents)
        fail("poll: want only the socketpair readable");
    int ep = epoll_create1(0);
    struct epoll_event e1 = {.events = EPOLLIN, .data.fd = sv[1]},
                       e2 = {.events = EPOLLIN, .data.fd = p[0]}, out[4];
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, sv[1], &e1) < 0 ||
        epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &e2) < 0)
        fail("epoll_ctl");
    int n = epoll_wait(ep, out, 4, 1000);
    if (n != 1 || out[0].data.fd != sv[1])
        fail("epoll_wait: %d events", n);
    printf("ok poll and epoll over AF_UNIX, pipe, eventfd\n");

    step = "getifaddrs (AF_NETLINK)";
    struct ifaddrs *ifa, *i;
    int lo = 0;
    if (getifaddrs(&ifa) < 0)
        fail("getifaddrs");
    for (i = ifa; i; i = i->ifa_next)
        if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET && (i->ifa_flags & IFF_LOOPBACK))
            lo = 1;
    freeifaddrs(ifa);
    if (!lo)
        fail("getifaddrs lists no IPv4 loopback");
    printf("ok getifaddrs (AF_NETLINK) lists the loopback\n");

    step = "close";
    int fds[] = {sv[0], sv[1], dv[0], dv[1], ul, uc, ua2, p[0], p[1], ev, ep};
    for (size_t k = 0; k < sizeof(fds) / sizeof(fds[0]); k++)
        if (close(fds[k]) < 0)
            fail("close %d", fds[k]);
    if (close(sv[0]) != -1 || errno != EBADF)
        fail("a second close did not give EBADF");
    step = "the AF_INET socket after all that";
    int fl = fcntl(inet, F_GETFL);
    if (fl < 0)
        fail("F_GETFL");
    close(inet);
    unlink(path);
    printf("ok every kernel fd closed; the AF_INET socket unaffected\n");
}

/* ------------------------------------------------------------------ inet6 */

static void t_inet6(const char *mode)
{
    step = "socket(AF_INET6)";
    if (!strcmp(mode, "refuse")) {
        int s = socket(AF_INET6, SOCK_STREAM, 0);
        if (s >= 0 || errno != EAFNOSUPPORT)
            fail("socket(AF_INET6, SOCK_STREAM) returned %d, want EAFNOSUPPORT", s);
        s = socket(AF_INET6, SOCK_DGRAM, 0);
        if (s >= 0 || errno != EAFNOSUPPORT)
            fail("socket(AF_INET6, SOCK_DGRAM) returned %d, want EAFNOSUPPORT", s);
        printf("ok AF_INET6 stream and datagram sockets: EAFNOSUPPORT\n");
        return;
    }
    int l = socket(AF_INET6, SOCK_STREAM, 0), c = socket(AF_INET6, SOCK_STREAM, 0);
    if (l < 0 || c < 0)
        fail("socket(AF_INET6, SOCK_STREAM)");
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    socklen_t al = sizeof(a);
    step = "listen on [::1]";
    if (bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 4) < 0 ||
        getsockname(l, (struct sockaddr *)&a, &al) < 0)
        fail("bind/listen/getsockname [::1]:0");
    step = "connect to [::1]";
    if (connect(c, (struct sockaddr *)&a, sizeof(a)) < 0)
        fail("connect [::1]:%u", ntohs(a.sin6_port));
    int s = accept(l, NULL, NULL);
    if (s < 0)
        fail("accept");
    write_all(c, "over-ipv6", 9);
    char b[16];
    read_all(s, b, 9);
    if (memcmp(b, "over-ipv6", 9))
        fail("other bytes");
    printf("ok AF_INET6 TCP over [::1]:%u (kernel)\n", ntohs(a.sin6_port));
    int u = socket(AF_INET6, SOCK_DGRAM, 0);
    struct sockaddr_in6 ub = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    al = sizeof(ub);
    step = "UDP over [::1]";
    if (u < 0 || bind(u, (struct sockaddr *)&ub, sizeof(ub)) < 0 ||
        getsockname(u, (struct sockaddr *)&ub, &al) < 0)
        fail("UDP socket on [::1]");
    if (sendto(u, "d6", 2, 0, (struct sockaddr *)&ub, sizeof(ub)) != 2 || recv(u, b, 2, 0) != 2)
        fail("UDP to itself over [::1]");
    printf("ok AF_INET6 UDP over [::1] (kernel)\n");
    close(l);
    close(c);
    close(s);
    close(u);
}

/* ------------------------------------------------------------------ no daemon */

static int refused(int e)
{
    return e == ECONNREFUSED || e == ENETUNREACH;
}

static void t_absent(const char *ip, int port, int loopport)
{
    struct sockaddr_in dst[3] = {sin4(ip, port), sin4("127.0.0.1", loopport), sin4(ip, port)};
    const char *what[3] = {"TCP to the peer", "TCP to a kernel listener on 127.0.0.1",
                           "UDP to the peer"};
    double t0 = now_s();
    for (int i = 0; i < 3; i++) {
        step = what[i];
        int udp = i == 2;
        int s = socket(AF_INET, udp ? SOCK_DGRAM : SOCK_STREAM, 0);
        if (s < 0) {
            if (!refused(errno))
                fail("socket failed with an unexpected errno");
            printf("ok %s: socket() failed with %s\n", what[i], strerrorname_np(errno));
            continue;
        }
        int r = udp ? (int)sendto(s, "x", 1, 0, (struct sockaddr *)&dst[i], sizeof(dst[i]))
                    : connect(s, (struct sockaddr *)&dst[i], sizeof(dst[i]));
        if (r >= 0)
            fail("%s succeeded without the daemon (on a kernel socket?)",
                 udp ? "sendto" : "connect");
        if (!refused(errno))
            fail("%s failed with an unexpected errno", udp ? "sendto" : "connect");
        printf("ok %s: %s failed with %s\n", what[i], udp ? "sendto" : "connect",
               strerrorname_np(errno));
        close(s);
    }
    double dt = now_s() - t0;
    if (dt > 3)
        fail("the three failures took %.1f s", dt);
    printf("ok all three failed within %.3f s\n", dt);
}

static void t_fallback(int loopport)
{
    struct sockaddr_in a = sin4("127.0.0.1", loopport);
    step = "TCP on a kernel socket";
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof(a)) < 0)
        fail("socket/connect 127.0.0.1:%d", loopport);
    write_all(s, "ECHO\n", 5);
    static uint8_t out[65536], in[65536];
    for (size_t i = 0; i < sizeof(out); i++)
        out[i] = (uint8_t)(i * 131u + 7u);
    write_all(s, out, sizeof(out));
    read_all(s, in, sizeof(in));
    if (memcmp(in, out, sizeof(in)))
        fail("64 KiB echo differs");
    close(s);
    printf("ok TCP: 64 KiB echo through a kernel socket\n");
    step = "UDP on a kernel socket";
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    char b[16];
    if (u < 0 || sendto(u, "fallback", 8, 0, (struct sockaddr *)&a, sizeof(a)) != 8)
        fail("sendto");
    struct pollfd p = {.fd = u, .events = POLLIN};
    if (poll(&p, 1, 5000) != 1 || recv(u, b, sizeof(b), 0) != 8 || memcmp(b, "fallback", 8))
        fail("no UDP echo");
    close(u);
    printf("ok UDP: echo through a kernel socket\n");
}

/* ------------------------------------------------------------------ hold */

static void t_hold(const char *ip, int port)
{
    struct sockaddr_in a = sin4(ip, port), la = {0}, ua = {0};
    socklen_t l = sizeof(la);
    step = "TCP";
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof(a)) < 0)
        fail("socket/connect");
    write_all(s, "HOLD\n", 5);
    if (getsockname(s, (struct sockaddr *)&la, &l) < 0)
        fail("getsockname");
    step = "UDP";
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    char b[16];
    if (u < 0 || sendto(u, "hold", 4, 0, (struct sockaddr *)&a, sizeof(a)) != 4)
        fail("sendto");
    struct pollfd p = {.fd = u, .events = POLLIN};
    if (poll(&p, 1, 5000) != 1 || recv(u, b, sizeof(b), 0) != 4)
        fail("no UDP echo");
    l = sizeof(ua);
    if (getsockname(u, (struct sockaddr *)&ua, &l) < 0)
        fail("getsockname");
    printf("tcp-local %u\nudp-local %u\n", ntohs(la.sin_port), ntohs(ua.sin_port));
    fflush(stdout);
    step = "waiting for EOF on stdin";
    alarm(60);
    while (read(0, b, sizeof(b)) > 0)
        ;
    close(s);
    close(u);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr,
                "usage: %s "
                "fork|fork_conn|fork_exec|sandbox|threads|unix|inet6|absent|fallback|hold ...\n",
                argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_name = argv[1];
    signal(SIGALRM, on_alarm);
    alarm(30);
    const char *t = test_name;
    if (!strcmp(t, "fork"))
        t_fork(atoi(argv[2]), argc > 3 && !strcmp(argv[3], "parent-closes"));
    else if (!strcmp(t, "fork_conn") && argc > 3)
        t_fork_conn(argv[2], atoi(argv[3]));
    else if (!strcmp(t, "sandbox") && argc > 3)
        t_sandbox(argv[2], atoi(argv[3]));
    else if (!strcmp(t, "fork_exec") && argc > 3)
        t_fork_exec(argv[2], atoi(argv[3]));
    else if (!strcmp(t, "threads"))
        t_threads(atoi(argv[2]));
    else if (!strcmp(t, "unix"))
        t_unix(argv[2]);
    else if (!strcmp(t, "inet6"))
        t_inet6(argv[2]);
    else if (!strcmp(t, "absent") && argc > 4)
        t_absent(argv[2], atoi(argv[3]), atoi(argv[4]));
    else if (!strcmp(t, "fallback"))
        t_fallback(atoi(argv[2]));
    else if (!strcmp(t, "hold") && argc > 3)
        t_hold(argv[2], atoi(argv[3]));
    else {
        fprintf(stderr, "unknown test or missing arguments: %s\n", t);
        return 2;
    }
    printf("PASS %s\n", t);
    return 0;
}
