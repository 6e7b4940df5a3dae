/* shmnetctl: operator CLI for shmnetd. Sends one request line on the control socket and
 * prints the answer. Exit status 1 when the answer starts with "error:" or the daemon
 * cannot be reached. */
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_SOCKET "/run/shmnet/shmnetd.sock"
#define MAX_REQUEST    1024

static void usage(FILE *f)
{
    fprintf(f, "usage: shmnetctl [-s SOCKET] COMMAND [ARG...]\n"
               "  -s SOCKET   control socket (default $SHMNET_SOCKET, else " DEFAULT_SOCKET ")\n"
               "commands (shmnetctl help asks the daemon for the full list):\n"
               "  stats | neigh | route | capture start FILE | capture stop\n"
               "  ping ADDR [COUNT] | reload | version | help\n");
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *path = getenv("SHMNET_SOCKET");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char req[MAX_REQUEST + 2], cwd[PATH_MAX], abs[PATH_MAX + MAX_REQUEST];
    size_t len = 0;
    int opt, fd, is_error = 0;

    if (!path || !*path)
        path = DEFAULT_SOCKET;
    while ((opt = getopt(argc, argv, "+s:h")) != -1) {
        switch (opt) {
        case 's':
            path = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    /* The daemon opens capture files itself, from its own working directory. */
    if (argc - optind == 3 && !strcmp(argv[optind], "capture") &&
        !strcmp(argv[optind + 1], "start") && argv[optind + 2][0] != '/') {
        if (!getcwd(cwd, sizeof(cwd))) {
            fprintf(stderr, "shmnetctl: getcwd: %s\n", strerror(errno));
            return 1;
        }
        snprintf(abs, sizeof(abs), "%s/%s", cwd, argv[optind + 2]);
        argv[optind + 2] = abs;
    }
    for (int i = optind; i < argc; i++) {
        int n = snprintf(req + len, sizeof(req) - len, "%s%s", i > optind ? " " : "", argv[i]);
        if (n < 0 || (size_t)n >= sizeof(req) - len || strchr(argv[i], '\n')) {
            fprintf(stderr, "shmnetctl: request too long or malformed\n");
            return 1;
        }
        len += (size_t)n;
    }
    req[len++] = '\n';

    if (strlen(path) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "shmnetctl: socket path too long: %s\n", path);
        return 1;
    }
    memcpy(sa.sun_path, path, strlen(path));
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        fprintf(stderr, "shmnetctl: cannot reach shmnetd at %s: %s\n", path, strerror(errno));
        return 1;
    }
    int ret = write_all(fd, req, len);
    if (ret < 0) {
        fprintf(stderr, "shmnetctl: cannot reach shmnetd at %s: %s\n", path, strerror(-ret));
        close(fd);
        return 1;
    }
    shutdown(fd, SHUT_WR);

    char buf[8192];
    size_t seen = 0;
    char head[6];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "shmnetctl: reading from shmnetd at %s: %s\n", path, strerror(errno));
            close(fd);
            return 1;
        }
        if (n == 0)
            break;
        for (ssize_t i = 0; i < n && seen < sizeof(head); i++)
            head[seen++] = buf[i];
        fwrite(buf, 1, (size_t)n, stdout);
    }
    close(fd);
    fflush(stdout);
    is_error = seen == sizeof(head) && !memcmp(head, "error:", 6);
    return is_error ? 1 : 0;
}
