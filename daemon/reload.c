/* Configuration reload (SIGHUP, `shmnetctl reload`): the new file is checked whole, what
 * may change while running goes to the workers (tunables, fault injectors, log level),
 * and what may not is kept and reported. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "daemon/daemon.h"
#include "daemon/log.h"
#include "daemon/sdnotify.h"
#include "nic/nic.h"

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
