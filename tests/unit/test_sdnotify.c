/* sd_notify without libsystemd (daemon/sdnotify.c), and shmnetd's notifications end to end:
 * READY=1 once running, WATCHDOG=1, RELOADING=1/READY=1 around a reload, STOPPING=1. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The module is libc-only and not part of the core library: compile it in. */
#include "daemon/sdnotify.c"

static char tmpdir[64];

static void mk_tmpdir(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/shmnet-sdn-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

static void rm_tmpdir(void)
{
    char cmd[128];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    cr_assert_eq(system(cmd), 0);
}

/* A datagram socket bound at name (abstract when name[0] == '@'). */
static int bind_dgram(const char *name, double timeout_s)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct timeval tv = {.tv_sec = (time_t)timeout_s,
                         .tv_usec = (suseconds_t)((timeout_s - (time_t)timeout_s) * 1e6)};
    size_t len = strlen(name);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    cr_assert_geq(fd, 0);
    cr_assert_lt(len, sizeof(sa.sun_path));
    memcpy(sa.sun_path, name, len);
    if (name[0] == '@')
        sa.sun_path[0] = '\0';
    socklen_t sl =
        (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (name[0] == '@' ? 0 : 1));
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sl), 0, "bind %s: %s", name, strerror(errno));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

/* Receive one datagram as a string; "" on timeout. */
static const char *recv_msg(int fd, char *buf, size_t cap)
{
    ssize_t n = recv(fd, buf, cap - 1, 0);

    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

Test(sdnotify, unset_is_noop)
{
    unsetenv("NOTIFY_SOCKET");
    cr_assert_eq(sdnotify_send("READY=1"), 0);
    setenv("NOTIFY_SOCKET", "", 1);
    cr_assert_eq(sdnotify_send("READY=1"), 0);
}

Test(sdnotify, relative_path_rejected)
{
    setenv("NOTIFY_SOCKET", "relative/sock", 1);
    cr_assert_eq(sdnotify_send("READY=1"), -EINVAL);
}

Test(sdnotify, path_socket)
{
    char path[128], buf[256];

    mk_tmpdir();
    snprintf(path, sizeof(path), "%s/notify", tmpdir);
    int fd = bind_dgram(path, 2);
    setenv("NOTIFY_SOCKET", path, 1);
    cr_assert_eq(sdnotify_send("READY=1"), 1);
    cr_assert_str_eq(recv_msg(fd, buf, sizeof(buf)), "READY=1");
    cr_assert_eq(sdnotify_printf("STATUS=%d interfaces\nWATCHDOG=1", 2), 1);
    cr_assert_str_eq(recv_msg(fd, buf, sizeof(buf)), "STATUS=2 interfaces\nWATCHDOG=1");
    close(fd);
    rm_tmpdir();
}

Test(sdnotify, path_socket_gone)
{
    char path[128];

    mk_tmpdir();
    snprintf(path, sizeof(path), "%s/nobody", tmpdir);
    setenv("NOTIFY_SOCKET", path, 1);
    cr_assert_eq(sdnotify_send("READY=1"), -ENOENT);
    rm_tmpdir();
}

Test(sdnotify, abstract_socket)
{
    char name[64], buf[256];

    snprintf(name, sizeof(name), "@shmnet-sdn-test-%d", (int)getpid());
    int fd = bind_dgram(name, 2);
    setenv("NOTIFY_SOCKET", name, 1);
    cr_assert_eq(sdnotify_send("STOPPING=1"), 1);
    cr_assert_str_eq(recv_msg(fd, buf, sizeof(buf)), "STOPPING=1");
    close(fd);
}

Test(sdnotify, watchdog_env)
{
    char pid[32];

    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    cr_assert_eq(sdnotify_watchdog_usec(), 0);
    setenv("WATCHDOG_USEC", "10000000", 1);
    cr_assert_eq(sdnotify_watchdog_usec(), 10000000);
    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    setenv("WATCHDOG_PID", pid, 1);
    cr_assert_eq(sdnotify_watchdog_usec(), 10000000);
    snprintf(pid, sizeof(pid), "%d", (int)getpid() + 1);
    setenv("WATCHDOG_PID", pid, 1);
    cr_assert_eq(sdnotify_watchdog_usec(), 0, "meant for another process");
    unsetenv("WATCHDOG_PID");
    setenv("WATCHDOG_USEC", "junk", 1);
    cr_assert_eq(sdnotify_watchdog_usec(), 0);
}

/* ---- shmnetd end to end (sim backend: no root needed) ---- */

static bool find_daemon(char *out, size_t cap)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

    if (n <= 0)
        return false;
    self[n] = '\0';
    /* build/tests/unit_sdnotify -> build/shmnetd (build/san/... for the SAN=1 build) */
    snprintf(out, cap, "%s/../shmnetd", dirname(self));
    return access(out, X_OK) == 0;
}

static const char *ctl_request(const char *sock, const char *req, char *buf, size_t cap)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    size_t len = 0;

    cr_assert_lt(strlen(sock), sizeof(sa.sun_path));
    memcpy(sa.sun_path, sock, strlen(sock));
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "connect: %s",
                 strerror(errno));
    cr_assert_eq(write(fd, req, strlen(req)), (ssize_t)strlen(req));
    for (ssize_t n; len < cap - 1 && (n = read(fd, buf + len, cap - 1 - len)) > 0;)
        len += (size_t)n;
    buf[len] = '\0';
    close(fd);
    return buf;
}

Test(sdnotify, daemon_ready_watchdog_reload_stopping, .timeout = 60)
{
    char bin[PATH_MAX], conf[128], sock[128], notify[128], logf[128], buf[4096];
    int status;

    if (!find_daemon(bin, sizeof(bin)))
        cr_skip_test("shmnetd not built next to the tests (%s)", bin);
    mk_tmpdir();
    snprintf(conf, sizeof(conf), "%s/shmnetd.conf", tmpdir);
    snprintf(sock, sizeof(sock), "%s/run/ctl.sock", tmpdir); /* parent dir created by shmnetd */
    snprintf(notify, sizeof(notify), "%s/notify", tmpdir);
    snprintf(logf, sizeof(logf), "%s/log", tmpdir);
    FILE *f = fopen(conf, "w");
    cr_assert_not_null(f);
    fprintf(f,
            "daemon = { socket = \"%s\"; log_level = \"info\"; };\n"
            "interfaces = ( { name = \"sim0\"; backend = \"sim\"; mac = \"02:00:00:00:00:02\";\n"
            "                 mtu = 1500; address = \"10.201.0.2/24\"; } );\n"
            "routes = ( { to = \"0.0.0.0/0\"; via = \"10.201.0.1\"; } );\n",
            sock);
    fclose(f);
    int nfd = bind_dgram(notify, 10);

    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int lfd = open(logf, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(lfd, 2);
        setenv("NOTIFY_SOCKET", notify, 1);
        setenv("WATCHDOG_USEC", "200000", 1);
        unsetenv("WATCHDOG_PID");
        execl(bin, "shmnetd", "-c", conf, (char *)NULL);
        _exit(127);
    }
    recv_msg(nfd, buf, sizeof(buf));
    cr_assert(strstr(buf, "READY=1") != NULL, "first notification: '%s'", buf);
    /* The socket is up by READY. */
    cr_assert(strncmp(ctl_request(sock, "version\n", buf, sizeof(buf)), "shmnetd ", 8) == 0,
              "version answer: '%s'", buf);
    /* Watchdog keep-alive every WATCHDOG_USEC/2 while the worker makes progress. */
    recv_msg(nfd, buf, sizeof(buf));
    cr_assert_str_eq(buf, "WATCHDOG=1");

    /* Reload: RELOADING=1 with MONOTONIC_USEC, then READY=1 (watchdog pings interleave). */
    cr_assert_eq(kill(pid, SIGHUP), 0);
    bool reloading = false, ready = false;
    for (int i = 0; i < 20 && !ready; i++) {
        recv_msg(nfd, buf, sizeof(buf));
        if (!strncmp(buf, "RELOADING=1\nMONOTONIC_USEC=", 27))
            reloading = true;
        else if (reloading && !strcmp(buf, "READY=1"))
            ready = true;
    }
    cr_assert(reloading && ready, "reload notifications");

    cr_assert_eq(kill(pid, SIGTERM), 0);
    bool stopping = false;
    for (int i = 0; i < 20 && !stopping; i++)
        stopping = !strcmp(recv_msg(nfd, buf, sizeof(buf)), "STOPPING=1");
    cr_assert(stopping, "STOPPING=1");
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status %d", status);
    cr_assert_neq(access(sock, F_OK), 0, "control socket removed at exit");
    close(nfd);
    rm_tmpdir();
}
