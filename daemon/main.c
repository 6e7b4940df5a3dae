/* shmnetd: process lifecycle. The main thread is the control thread (libev): signals,
 * control socket, reload, systemd notify and watchdog. The data path runs in the worker
 * thread(s) (worker.c). See docs/daemon.md. */
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

/* ---- capture ---- */

static int set_pcap_fn(struct worker *w, void *arg)
{
    /* Worker 0 opened the NICs and switches their tap (release: the tap is set up before
     * any queue writes to it). The call on every other worker is the barrier that it has
     * finished the iteration that may have used the old one. */
    for (int i = 0; i < w->nnics && w->id == 0; i++)
        __atomic_store_n(&w->nics[i].pcap, (struct pcap_tap *)arg, __ATOMIC_RELEASE);
    return 0;
}

/* Point every NIC of every worker at t. On failure the workers already switched are put
 * back on `old`, so no NIC is left holding a tap that is about to be closed. */
static int swap_capture(struct daemon *d, struct pcap_tap *t, struct pcap_tap *old)
{
    for (unsigned i = 0; i < d->nworkers; i++) {
        int ret = worker_call(&d->workers[i], set_pcap_fn, t, DAEMON_CALL_TIMEOUT_MS);
        if (ret < 0) {
            for (unsigned k = 0; k < i; k++)
                worker_call(&d->workers[k], set_pcap_fn, old, DAEMON_CALL_TIMEOUT_MS);
            return ret;
        }
    }
    return 0;
}

int daemon_capture_start(struct daemon *d, const char *path, struct strbuf *out)
{
    struct pcap_tap *t, *old = d->capture;
    int err = 0, ret;

    /* Open here, not on the worker: file creation may block. */
    t = pcap_open(path, 65535, &err);
    if (!t) {
        err = err < 0 ? -err : err ? err : EIO;
        log_error("capture %s: %s", path, strerror(err));
        if (out)
            sb_printf(out, "error: capture %s: %s\n", path, strerror(err));
        return -err;
    }
    ret = swap_capture(d, t, old);
    if (ret < 0) {
        pcap_close(t);
        log_error("capture %s: worker did not answer: %s", path, strerror(-ret));
        if (out)
            sb_printf(out, "error: capture %s: %s\n", path, strerror(-ret));
        return ret;
    }
    /* The workers no longer reference old (the mailbox call completed): safe to close. */
    if (old)
        pcap_close(old);
    d->capture = t;
    snprintf(d->capture_path, sizeof(d->capture_path), "%s", path);
    log_info("capturing all interfaces to %s", path);
    return 0;
}

int daemon_capture_stop(struct daemon *d)
{
    int ret;

    if (!d->capture)
        return -ENOENT;
    ret = swap_capture(d, NULL, d->capture);
    if (ret < 0)
        return ret;
    pcap_close(d->capture);
    d->capture = NULL;
    log_info("capture to %s stopped", d->capture_path);
    d->capture_path[0] = '\0';
    return 0;
}

/* ---- reload ---- */

struct reload_ctx {
    struct strbuf *out;
    const char *prefix;
    enum log_level lvl;
};

static void reload_msg(void *ctx, const char *msg)
{
    struct reload_ctx *r = ctx;

    log_msg(r->lvl, "%s", msg);
    if (r->out)
        sb_printf(r->out, "%s: %s\n", r->prefix, msg);
}

struct tunables_req {
    const struct stack_params *sp;
    const struct conf *nc;
    int fault_errors;
};

/* Field by field: padding bytes of the two copies need not match. */
static bool fault_equal(const struct nic_fault_params *a, const struct nic_fault_params *b)
{
    return a->enabled == b->enabled && a->seed == b->seed && a->loss == b->loss &&
           a->duplicate == b->duplicate && a->reorder == b->reorder && a->corrupt == b->corrupt &&
           a->delay_us == b->delay_us && a->jitter_us == b->jitter_us && a->rx == b->rx &&
           a->tx == b->tx;
}

/* Worker side of a reload: stack tunables, and the fault injectors rebuilt when their
 * parameters changed (the injector keeps no state worth carrying over). */
static int apply_tunables_fn(struct worker *w, void *arg)
{
    struct tunables_req *r = arg;

    stack_apply_tunables(&w->st, r->sp);
    for (int i = 0; i < w->nnics && i < (int)r->nc->n_ifs; i++) {
        /* Each worker rebuilds the injector of its own queue of the (shared) NIC. */
        struct nic *n = w->nicp[i];
        uint16_t q = w->qs[i];
        struct nic_fault_params fp = r->nc->ifs[i].nic.fault;

        if (fault_equal(&w->fault_par[i], &fp))
            continue;
        struct nic_fault_params qp = fp;
        qp.seed += q;
        struct nic_fault *f = fp.enabled ? nic_fault_create(&qp) : NULL;
        if (fp.enabled && !f) {
            r->fault_errors++;
            continue;
        }
        nic_fault_destroy(n->qfault[q]);
        n->qfault[q] = f;
        if (q == 0)
            n->fault = f;
        w->fault_par[i] = fp;
    }
    return 0;
}

/* Keys that cannot change while running (conf_diff_static reports them) keep the values
 * in effect, so `cur` always describes what runs. */
static void keep_static(const struct conf *cur, struct conf *nc)
{
    struct nic_fault_params fault[CONF_MAX_IFS] = {0};
    bool same_ifs = cur->n_ifs == nc->n_ifs;

    memcpy(nc->socket_path, cur->socket_path, sizeof(nc->socket_path));
    nc->workers = cur->workers;
    memcpy(nc->cpus, cur->cpus, sizeof(nc->cpus));
    nc->n_cpus = cur->n_cpus;
    nc->stack.pktbufs = cur->stack.pktbufs;
    nc->stack.large_pktbufs = cur->stack.large_pktbufs;
    nc->stack.forwarding = cur->stack.forwarding;
    nc->stack.arp_cache_size = cur->stack.arp_cache_size;
    nc->stack.frag_max_datagrams = cur->stack.frag_max_datagrams;
    memcpy(nc->stack.routes, cur->stack.routes, sizeof(nc->stack.routes));
    nc->stack.n_routes = cur->stack.n_routes;
    for (uint32_t i = 0; i < nc->n_ifs && same_ifs; i++)
        fault[i] = nc->ifs[i].nic.fault;
    memcpy(nc->ifs, cur->ifs, sizeof(nc->ifs));
    nc->n_ifs = cur->n_ifs;
    for (uint32_t i = 0; i < nc->n_ifs && same_ifs; i++)
        nc->ifs[i].nic.fault = fault[i];
}

int daemon_reload(struct daemon *d, struct strbuf *out)
{
    struct reload_ctx ectx = {.out = out, .prefix = "error", .lvl = LOG_LVL_ERROR};
    struct reload_ctx wctx = {.out = out, .prefix = "warning", .lvl = LOG_LVL_WARN};
    struct conf *nc;
    int ret, nstatic;

    sdnotify_printf("RELOADING=1\nMONOTONIC_USEC=%llu",
                    (unsigned long long)(clock_mono_ns() / 1000));
    log_info("reloading %s", d->conf_path);
    nc = calloc(1, sizeof(*nc));
    if (!nc) {
        ret = -ENOMEM;
        reload_msg(&ectx, "out of memory");
        goto done;
    }
    ret = conf_load(nc, d->conf_path, reload_msg, &ectx);
    if (ret < 0) {
        log_error("reload failed: keeping the running configuration");
        goto done;
    }
    nstatic = conf_diff_static(d->conf, nc, reload_msg, &wctx);

    /* Sizes the stack fixed at start; conf_diff_static does not cover them. */
    if (nc->stack.large_pktbufs != d->conf->stack.large_pktbufs)
        reload_msg(&wctx, "daemon.large_pktbufs: cannot change while running; restart to apply");
    if (nc->stack.arp_cache_size != d->conf->stack.arp_cache_size)
        reload_msg(&wctx, "arp.cache_size: cannot change while running; restart to apply");
    if (nc->stack.frag_max_datagrams != d->conf->stack.frag_max_datagrams)
        reload_msg(&wctx, "ip.frag_max_datagrams: cannot change while running; restart to apply");
    keep_static(d->conf, nc);

    log_set_level(nc->log_level);
    for (unsigned i = 0; i < d->nworkers; i++) {
        struct tunables_req tr = {.sp = &nc->stack, .nc = nc};

        worker_set_tunables(&d->workers[i], nc->busy_poll_us, nc->rx_budget);
        int r = worker_call(&d->workers[i], apply_tunables_fn, &tr, DAEMON_CALL_TIMEOUT_MS);
        if (r < 0) {
            char msg[128];
            snprintf(msg, sizeof(msg), "worker %u: stack tunables not applied: %s", i,
                     strerror(-r));
            reload_msg(&wctx, msg);
        } else if (tr.fault_errors) {
            reload_msg(&wctx, "fault injector: out of memory, old settings kept");
        }
    }
    /* daemon.capture: follow a change of the configured file. */
    if (strcmp(nc->capture, d->conf->capture)) {
        if (nc->capture[0])
            daemon_capture_start(d, nc->capture, out);
        else if (d->capture)
            daemon_capture_stop(d);
    }
    free(d->conf);
    d->conf = nc;
    nc = NULL;
    log_info("configuration reloaded (log level %s%s)", log_level_name(log_get_level()),
             nstatic ? "; some changes need a restart" : "");
done:
    free(nc);
    sdnotify_send("READY=1");
    return ret;
}

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
