/* shmnetd: process lifecycle. The main thread is the control thread (libev): signals,
 * the control socket (ctl.c), reload (reload.c), capture (capture.c), systemd notify and
 * watchdog. The data path runs in the worker thread(s) (worker.c). See docs/daemon.md. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#include <unistd.h>

#include "core/clock.h"
#include "daemon/ctl.h"
#include "daemon/daemon.h"
#include "daemon/log.h"
#include "daemon/session.h"
#include "daemon/sdnotify.h"

#define DEFAULT_CONF "/etc/shmnet/shmnetd.conf"

/* ---- signals and watchdog ---- */

static void on_stop(struct ev_loop *loop, ev_signal *w, int revents)
{
    log_info("%s: shutting down", strsignal(w->signum));
    ev_break(loop, EVBREAK_ALL);
}

static void on_hup(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct daemon *d = w->data;

    daemon_reload(d, NULL);
}

/* Every WATCHDOG_USEC/2: keep-alive only if every worker made progress since the last
 * tick. Each tick also kicks sleeping workers, so an idle but healthy worker runs one
 * iteration (and bumps its heartbeat) before the next tick looks. */
static void on_watchdog(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct daemon *d = t->data;
    int stuck = -1;

    for (unsigned i = 0; i < d->nworkers; i++) {
        uint64_t hb = worker_heartbeat(&d->workers[i]);
        if (d->wd_primed && hb == d->wd_hb[i])
            stuck = (int)i;
        d->wd_hb[i] = hb;
        worker_kick(&d->workers[i]);
    }
    d->wd_primed = true;
    if (stuck < 0) {
        if (d->wd_stuck)
            log_warn("workers responsive again: resuming the watchdog keep-alive");
        d->wd_stuck = false;
        sdnotify_send("WATCHDOG=1");
    } else if (!d->wd_stuck) {
        log_error("worker %d is not making progress: withholding the watchdog keep-alive", stuck);
        d->wd_stuck = true;
    }
}

/* ---- main ---- */

static void usage(FILE *f)
{
    fprintf(f, "usage: shmnetd [-c FILE] [--check-config]\n"
               "  -c, --config FILE   configuration file (default " DEFAULT_CONF ")\n"
               "  -t, --check-config  validate the configuration and exit (0 good, 1 bad)\n"
               "  -h, --help          this help\n"
               "  -V, --version       print the version\n"
               "Runs in the foreground and logs to stderr. SIGHUP reloads, SIGTERM stops.\n");
}

static int check_config(const char *path)
{
    struct conf *c = calloc(1, sizeof(*c));
    int ret;

    if (!c) {
        fprintf(stderr, "shmnetd: out of memory\n");
        return 1;
    }
    ret = conf_load(c, path, NULL, NULL); /* NULL: each error to stderr as FILE:LINE: msg */
    free(c);
    if (ret < 0)
        return 1;
    printf("%s: OK\n", path);
    return 0;
}

static int run(struct daemon *d)
{
    struct ev_loop *loop;
    sigset_t sigs, old;
    uint64_t wd_usec;
    int ret = 1;

    /* Block the signals the control loop handles before any thread exists, so workers
     * inherit the mask and only the control thread receives them. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, &old);
    signal(SIGPIPE, SIG_IGN);

    loop = d->loop = ev_default_loop(EVFLAG_AUTO);
    if (!loop) {
        log_error("cannot initialise libev");
        return 1;
    }
    unsigned nw = d->conf->workers ? d->conf->workers : 1;
    if (nw > DAEMON_MAX_WORKERS) {
        log_warn("daemon.workers = %u: at most %d workers, running %d", nw, DAEMON_MAX_WORKERS,
                 DAEMON_MAX_WORKERS);
        nw = DAEMON_MAX_WORKERS;
    }
    if (nw > 1 && !(d->port_owner = calloc(WORKER_SHARED_BYTES, 1))) {
        log_error("out of memory");
        goto out;
    }
    if (ctl_open(d, &d->ctl) < 0)
        goto out;
    if (d->conf->capture[0]) {
        int err = 0;
        d->capture = pcap_open(d->conf->capture, 65535, &err);
        if (!d->capture) {
            err = err < 0 ? -err : err ? err : EIO;
            log_error("capture %s: %s", d->conf->capture, strerror(err));
            goto out;
        }
        snprintf(d->capture_path, sizeof(d->capture_path), "%s", d->conf->capture);
    }
    for (unsigned i = 0; i < nw; i++) {
        if (worker_start_group(d->workers, (int)nw, (int)i, d->conf, d->capture, d->port_owner) <
            0) {
            log_error("worker %u failed to start", i);
            goto out;
        }
        d->nworkers++;
    }
    if (sessions_init(d) < 0) {
        log_error("cannot create the shared state page: %s", strerror(errno));
        goto out;
    }

    ev_signal_init(&d->sig_term, on_stop, SIGTERM);
    ev_signal_init(&d->sig_int, on_stop, SIGINT);
    ev_signal_init(&d->sig_hup, on_hup, SIGHUP);
    d->sig_hup.data = d;
    ev_signal_start(loop, &d->sig_term);
    ev_signal_start(loop, &d->sig_int);
    ev_signal_start(loop, &d->sig_hup);
    /* libev has installed its handlers; a signal that arrived during start-up is pending
     * and is delivered now. */
    pthread_sigmask(SIG_SETMASK, &old, NULL);

    wd_usec = sdnotify_watchdog_usec();
    if (wd_usec) {
        ev_timer_init(&d->wd_timer, on_watchdog, 0., (double)wd_usec / 2e6);
        d->wd_timer.data = d;
        ev_timer_start(loop, &d->wd_timer);
        log_info("systemd watchdog every %.1f s", (double)wd_usec / 2e6);
    }

    sdnotify_printf("READY=1\nSTATUS=running: %u interface(s), socket %s", d->conf->n_ifs,
                    d->conf->socket_path);
    log_info("shmnetd %s running: %u interface(s), %u worker(s)", SHMNET_VERSION, d->conf->n_ifs,
             d->nworkers);
    ev_run(loop, 0);
    sdnotify_send("STOPPING=1");
    ret = 0;

    ev_signal_stop(loop, &d->sig_term);
    ev_signal_stop(loop, &d->sig_int);
    ev_signal_stop(loop, &d->sig_hup);
    if (wd_usec)
        ev_timer_stop(loop, &d->wd_timer);
out:
    if (ret)
        sdnotify_send("STOPPING=1");
    /* Sessions and control clients first: both use the workers. */
    sessions_fini(d);
    ctl_close(d->ctl);
    d->ctl = NULL;
    worker_stop_group(d->workers, (int)d->nworkers);
    d->nworkers = 0;
    free(d->port_owner);
    d->port_owner = NULL;
    /* Workers are joined: nothing references the capture tap any more. */
    if (d->capture)
        pcap_close(d->capture);
    d->capture = NULL;
    ev_loop_destroy(loop);
    d->loop = NULL;
    if (!ret)
        log_info("stopped");
    return ret;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    struct daemon d = {0};
    const char *path = DEFAULT_CONF;
    bool check = false;
    int opt, ret;

    while ((opt = getopt_long(argc, argv, "c:thV", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 't':
            check = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("shmnetd %s\n", SHMNET_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "shmnetd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (check)
        return check_config(path);

    log_init();
    /* Every session holds its connection and one eventfd per channel: take all the file
     * descriptors the hard limit allows (systemd/shmnetd.service sets LimitNOFILE). */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    d.conf_path = path;
    d.conf = calloc(1, sizeof(*d.conf));
    if (!d.conf) {
        log_error("out of memory");
        return 1;
    }
    if (conf_load(d.conf, path, NULL, NULL) < 0) {
        log_error("invalid configuration %s (see above)", path);
        free(d.conf);
        return 1;
    }
    log_set_level(d.conf->log_level);
    ret = run(&d);
    free(d.conf);
    return ret;
}
