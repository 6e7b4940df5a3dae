/* shmnetd control socket: see ctl.h and docs/daemon.md.
 *
 * One connection = one request. The client sends a line, we answer with text and close.
 * All I/O is non-blocking under libev on the control thread. Commands that need the
 * stack's state go through the worker mailbox (worker_call); ping is asynchronous. */
#include "core/clock.h"
#include "daemon/ctl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "daemon/daemon.h"
#include "daemon/log.h"
#include "daemon/session.h"
#include "shm/shm.h"
#include "daemon/strbuf.h"

#define CTL_MAX_ARGS   16
#define PING_MAX_COUNT 20
#define PING_POLL_S    0.010
#define PING_WAIT_NS   1000000000ull
#define REPORT_CAP     (256 * 1024)

struct ctl_client;

struct ctl_ping {
    ev_timer tick;
    uint32_t dst; /* host order */
    uint16_t id, seq;
    int count, sent, received;
    uint64_t base;   /* st->ping_replies when the current request was sent */
    uint64_t t_sent; /* ns */
};

enum cl_state { CL_READ, CL_BUSY, CL_WRITE };

/* Control connections open per uid, sorted by uid: at most CTL_MAX_CLIENTS uids. */
struct uid_count {
    uint32_t uid, n;
};

/* What the control socket refused or dropped (shmnetctl stats: ctl_*). */
struct ctl_counters {
    uint64_t refused_full;       /* no slot left for this uid (CTL_MAX_CLIENTS, root's reserve) */
    uint64_t refused_uid_limit;  /* daemon.ctl_max_per_uid connections already open */
    uint64_t refused_permission; /* not in daemon.allowed_users / allowed_groups */
    uint64_t drop_output_limit;  /* answer larger than daemon.ctl_max_output */
    uint64_t drop_slow_reader;   /* answer not read within CTL_WRITE_TIMEOUT */
    uint64_t accept_paused;      /* accept() out of descriptors or memory: paused 100 ms */
};

#define CTL_HANDOVER 2 /* a command took the connection over */

struct ctl_client {
    struct ctl_client *next, **pprev;
    struct ctl *ctl;
    int fd;
    ev_io io;
    ev_timer tmo;
    struct ucred cred;
    bool denied; /* by the access policy: only told so once the request is in */
    enum cl_state state;
    char in[CTL_MAX_REQUEST + 1];
    size_t inlen;
    struct strbuf out;
    size_t outoff;
    struct ctl_ping *ping;
};

struct ctl {
    struct daemon *d;
    int lfd;
    ev_io lio;
    ev_timer lpause; /* accept paused: out of descriptors (accept_cb) */
    char path[CONF_PATH_MAX];
    struct ctl_client *clients;
    unsigned nclients;
    uint16_t ping_id;
    struct uid_count uids[CTL_MAX_CLIENTS];
    unsigned nuids;
    struct ctl_counters cnt;
};

/* A command: fills c->out and returns 0, or returns 1 when it completes later by itself
 * (ctl_reply). Add new requests here. */
struct ctl_cmd {
    const char *name;
    const char *usage;
    const char *help;
    int (*fn)(struct ctl_client *c, int argc, char **argv);
};

static void client_free(struct ctl_client *c);
static void client_reply(struct ctl_client *c);

static struct ev_loop *ctl_loop(const struct ctl_client *c)
{
    return c->ctl->d->loop;
}

/* ---- policy ---- */

static bool id_in(const uint32_t *ids, uint32_t n, uint32_t id)
{
    for (uint32_t i = 0; i < n; i++)
        if (ids[i] == id)
            return true;
    return false;
}

bool ctl_peer_allowed(const struct conf *c, uid_t uid, gid_t gid, const gid_t *groups, int ngroups)
{
    if (uid == 0 || id_in(c->allowed_uids, c->n_uids, uid))
        return true;
    if (!c->n_gids)
        return false;
    if (id_in(c->allowed_gids, c->n_gids, gid))
        return true;

    /* Supplementary groups: the peer's own (SO_PEERGROUPS) when known, else the user's
     * groups from the group database, as login would set them. */
    struct passwd pw, *pwp = NULL;
    char pwbuf[4096];
    gid_t dbgroups[256];

    if (ngroups < 0) {
        ngroups = (int)(sizeof(dbgroups) / sizeof(dbgroups[0]));
        if (getpwuid_r(uid, &pw, pwbuf, sizeof(pwbuf), &pwp) != 0 || !pwp)
            return false;
        if (getgrouplist(pw.pw_name, pw.pw_gid, dbgroups, &ngroups) < 0)
            ngroups = (int)(sizeof(dbgroups) / sizeof(dbgroups[0])); /* truncated: use it */
        groups = dbgroups;
    }
    for (int i = 0; i < ngroups; i++)
        if (id_in(c->allowed_gids, c->n_gids, groups[i]))
            return true;
    return false;
}

/* ---- connections per uid ---- */

/* Index of uid in ctl->uids, or where it would go. */
static unsigned uid_index(const struct ctl *ctl, uint32_t uid)
{
    unsigned lo = 0, hi = ctl->nuids;

    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2;
        if (ctl->uids[mid].uid < uid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static uint32_t uid_conns(const struct ctl *ctl, uint32_t uid)
{
    unsigned i = uid_index(ctl, uid);

    return i < ctl->nuids && ctl->uids[i].uid == uid ? ctl->uids[i].n : 0;
}

/* Every connection counts once (nclients <= CTL_MAX_CLIENTS), so the table never fills. */
static void uid_get(struct ctl *ctl, uint32_t uid)
{
    unsigned i = uid_index(ctl, uid);

    if (i < ctl->nuids && ctl->uids[i].uid == uid) {
        ctl->uids[i].n++;
        return;
    }
    memmove(&ctl->uids[i + 1], &ctl->uids[i], (ctl->nuids - i) * sizeof(ctl->uids[0]));
    ctl->uids[i] = (struct uid_count){.uid = uid, .n = 1};
    ctl->nuids++;
}

static void uid_put(struct ctl *ctl, uint32_t uid)
{
    unsigned i = uid_index(ctl, uid);

    if (i >= ctl->nuids || ctl->uids[i].uid != uid || --ctl->uids[i].n)
        return;
    ctl->nuids--;
    memmove(&ctl->uids[i], &ctl->uids[i + 1], (ctl->nuids - i) * sizeof(ctl->uids[0]));
}

/* The connecting process's supplementary groups; -1 when the kernel cannot tell. */
static int peer_groups(int fd, gid_t *groups, int max)
{
#ifdef SO_PEERGROUPS
    socklen_t len = (socklen_t)(max * (int)sizeof(gid_t));

    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) == 0)
        return (int)(len / sizeof(gid_t));
#endif
    return -1;
}

/* ---- mailbox functions (run on the worker thread) ---- */

struct report_req {
    char *buf;
    size_t cap, len;
};

static int neigh_fn(struct worker *w, void *arg)
{
    struct report_req *r = arg;

    r->len = stack_report_neigh(&w->st, r->buf, r->cap);
    return 0;
}

static int route_fn(struct worker *w, void *arg)
{
    struct report_req *r = arg;

    r->len = stack_report_routes(&w->st, r->buf, r->cap);
    return 0;
}

struct ping_req {
    uint32_t dst;
    uint16_t id, seq;
    bool send;
    uint64_t replies; /* out: st->ping_replies (before sending) */
};

static int ping_fn(struct worker *w, void *arg)
{
    struct ping_req *p = arg;

    p->replies = w->st.ping_replies;
    if (!p->send)
        return 0;
    return stack_ping(&w->st, p->dst, p->id, p->seq, 56);
}

/* ---- commands ---- */

static int cmd_help(struct ctl_client *c, int argc, char **argv);

static int cmd_version(struct ctl_client *c, int argc, char **argv)
{
    sb_printf(&c->out, "shmnetd %s\n", SHMNET_VERSION);
    return 0;
}

static void ip4_str(uint32_t a, char *buf, size_t len)
{
    snprintf(buf, len, "%u.%u.%u.%u", a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255);
}

static int cmd_stats(struct ctl_client *c, int argc, char **argv)
{
    struct daemon *d = c->ctl->d;
    uint64_t sum[STACK_NCOUNTERS] = {0};

    /* Counters are single-writer relaxed atomics (counters.h): read them directly. */
    for (unsigned i = 0; i < d->nworkers; i++) {
        const uint64_t *v = (const uint64_t *)&d->workers[i].st.cnt;
        for (int k = 0; k < STACK_NCOUNTERS; k++)
            sum[k] += cnt_read(&v[k]);
    }
    for (int k = 0; k < STACK_NCOUNTERS; k++)
        sb_printf(&c->out, "%s %llu\n", stack_counter_names[k], (unsigned long long)sum[k]);
    const struct ctl_counters *cc = &c->ctl->cnt;
    const struct {
        const char *name;
        uint64_t v;
    } ctlc[] = {
        {"ctl_connections", c->ctl->nclients},
        {"ctl_refused_full", cc->refused_full},
        {"ctl_refused_uid_limit", cc->refused_uid_limit},
        {"ctl_refused_permission", cc->refused_permission},
        {"ctl_drop_output_limit", cc->drop_output_limit},
        {"ctl_drop_slow_reader", cc->drop_slow_reader},
        {"ctl_accept_paused", cc->accept_paused},
    };
    for (size_t k = 0; k < sizeof(ctlc) / sizeof(ctlc[0]); k++)
        sb_printf(&c->out, "%s %llu\n", ctlc[k].name, (unsigned long long)ctlc[k].v);
    for (unsigned i = 0; i < d->nworkers; i++) {
        const struct worker *w = &d->workers[i];
        for (int k = 0; k < w->nifs; k++) {
            const struct worker_ifinfo *f = &w->ifs[k];
            const uint8_t *m = f->p.mac;
            char a[16];

            ip4_str(f->p.addr, a, sizeof(a));
            sb_printf(&c->out,
                      "interface %s backend=%s ifindex=%d mac=%02x:%02x:%02x:%02x:%02x:%02x "
                      "mtu=%u address=%s/%u vlan=%u promiscuous=%s worker=%u\n",
                      f->p.name, f->backend, f->ifindex, m[0], m[1], m[2], m[3], m[4], m[5],
                      (unsigned)f->p.mtu, a, (unsigned)f->p.plen, (unsigned)f->p.vlan,
                      f->p.promiscuous ? "yes" : "no", i);
        }
    }
    /* Several workers: each one's share, one line per worker. */
    static const char *const per_worker[] = {
        "nic_rx_frames", "nic_tx_frames", "steer_in",          "steer_out", "steer_drop_full",
        "tcp_rx",        "tcp_tx",        "tcp_passive_opens", "udp_rx",    "udp_tx"};
    for (unsigned i = 0; d->nworkers > 1 && i < d->nworkers; i++) {
        const uint64_t *v = (const uint64_t *)&d->workers[i].st.cnt;
        sb_printf(&c->out, "worker %u:", i);
        for (size_t j = 0; j < sizeof(per_worker) / sizeof(per_worker[0]); j++)
            for (int k = 0; k < STACK_NCOUNTERS; k++)
                if (!strcmp(stack_counter_names[k], per_worker[j]))
                    sb_printf(&c->out, " %s %llu", per_worker[j],
                              (unsigned long long)cnt_read(&v[k]));
        sb_printf(&c->out, "\n");
    }
    sb_printf(&c->out, "drops:\n");
    for (int k = 0; k < STACK_NCOUNTERS; k++)
        if (sum[k] && strstr(stack_counter_names[k], "_drop_"))
            /* "name: value" so `awk '$1 == name'` on the output finds the main line only. */
            sb_printf(&c->out, "  %s: %llu\n", stack_counter_names[k], (unsigned long long)sum[k]);
    for (size_t k = 0; k < sizeof(ctlc) / sizeof(ctlc[0]); k++)
        if (ctlc[k].v && strstr(ctlc[k].name, "_drop_"))
            sb_printf(&c->out, "  %s: %llu\n", ctlc[k].name, (unsigned long long)ctlc[k].v);
    return 0;
}

static int cmd_report(struct ctl_client *c, worker_fn fn, const char *what)
{
    struct daemon *d = c->ctl->d;
    struct report_req r = {.cap = REPORT_CAP};

    r.buf = malloc(r.cap);
    if (!r.buf) {
        sb_printf(&c->out, "error: out of memory\n");
        return 0;
    }
    for (unsigned i = 0; i < d->nworkers; i++) {
        r.len = 0;
        int ret = worker_call(&d->workers[i], fn, &r, DAEMON_CALL_TIMEOUT_MS);
        if (ret < 0) {
            sb_printf(&c->out, "error: %s: worker %u: %s\n", what, i, strerror(-ret));
            break;
        }
        sb_append(&c->out, r.buf, r.len < r.cap ? r.len : r.cap);
    }
    free(r.buf);
    return 0;
}

static int cmd_neigh(struct ctl_client *c, int argc, char **argv)
{
    return cmd_report(c, neigh_fn, "neigh");
}

static int cmd_route(struct ctl_client *c, int argc, char **argv)
{
    /* The route table is immutable after start, but the mailbox keeps it simple and safe. */
    struct daemon *d = c->ctl->d;
    struct report_req r = {.cap = REPORT_CAP};

    if (!d->nworkers)
        return 0;
    r.buf = malloc(r.cap);
    if (!r.buf) {
        sb_printf(&c->out, "error: out of memory\n");
        return 0;
    }
    int ret = worker_call(&d->workers[0], route_fn, &r, DAEMON_CALL_TIMEOUT_MS);
    if (ret < 0)
        sb_printf(&c->out, "error: route: %s\n", strerror(-ret));
    else
        sb_append(&c->out, r.buf, r.len < r.cap ? r.len : r.cap);
    free(r.buf);
    return 0;
}

static int cmd_capture(struct ctl_client *c, int argc, char **argv)
{
    struct daemon *d = c->ctl->d;

    if (argc == 3 && !strcmp(argv[1], "start")) {
        /* The file is created by the daemon with its privileges: root callers only. */
        if (c->cred.uid != 0) {
            sb_printf(&c->out, "error: capture start requires root\n");
            return 0;
        }
        if (argv[2][0] != '/') {
            sb_printf(&c->out, "error: capture file must be an absolute path\n");
            return 0;
        }
        if (daemon_capture_start(d, argv[2], &c->out) == 0)
            sb_printf(&c->out, "capturing to %s\n", argv[2]);
        return 0;
    }
    if (argc == 2 && !strcmp(argv[1], "stop")) {
        char path[CONF_PATH_MAX];

        snprintf(path, sizeof(path), "%s", d->capture_path);
        int ret = daemon_capture_stop(d);
        if (ret == -ENOENT)
            sb_printf(&c->out, "error: no capture running\n");
        else if (ret < 0)
            sb_printf(&c->out, "error: capture stop: %s\n", strerror(-ret));
        else
            sb_printf(&c->out, "capture stopped (%s)\n", path);
        return 0;
    }
    sb_printf(&c->out, "error: usage: capture start FILE | capture stop\n");
    return 0;
}

static int cmd_reload(struct ctl_client *c, int argc, char **argv)
{
    struct strbuf msgs = {0};
    int ret = daemon_reload(c->ctl->d, &msgs);

    /* Errors first so the answer starts with "error:" when the reload failed. */
    if (msgs.len)
        sb_append(&c->out, msgs.buf, msgs.len);
    if (ret == 0)
        sb_printf(&c->out, "reloaded\n");
    sb_free(&msgs);
    return 0;
}

/* ping: one request at a time; poll the reply counter every 10 ms, up to 1 s each. */
static void ping_finish(struct ctl_client *c)
{
    struct ctl_ping *p = c->ping;
    char a[16];

    ev_timer_stop(ctl_loop(c), &p->tick);
    ip4_str(p->dst, a, sizeof(a));
    if (p->sent)
        sb_printf(&c->out, "%s: %d sent, %d received, %d%% loss\n", a, p->sent, p->received,
                  (p->sent - p->received) * 100 / p->sent);
    free(p);
    c->ping = NULL;
    client_reply(c);
}

static int ping_send(struct ctl_client *c)
{
    struct ctl_ping *p = c->ping;
    struct ping_req r = {.dst = p->dst, .id = p->id, .seq = (uint16_t)(p->seq + 1), .send = true};
    char a[16];
    int ret;

    ret = worker_call(&c->ctl->d->workers[0], ping_fn, &r, DAEMON_CALL_TIMEOUT_MS);
    if (ret < 0) {
        ip4_str(p->dst, a, sizeof(a));
        sb_printf(&c->out, "error: ping %s: %s\n", a, strerror(-ret));
        return ret;
    }
    p->seq++;
    p->sent++;
    p->base = r.replies;
    p->t_sent = clock_mono_ns();
    return 0;
}

static void ping_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct ctl_client *c = t->data;
    struct ctl_ping *p = c->ping;
    struct ping_req r = {0};
    uint64_t now;
    char a[16];
    int ret;

    ret = worker_call(&c->ctl->d->workers[0], ping_fn, &r, DAEMON_CALL_TIMEOUT_MS);
    now = clock_mono_ns();
    ip4_str(p->dst, a, sizeof(a));
    if (ret < 0) {
        sb_printf(&c->out, "error: ping %s: %s\n", a, strerror(-ret));
        ping_finish(c);
        return;
    }
    if (r.replies > p->base) {
        p->received++;
        sb_printf(&c->out, "reply from %s: seq=%u time=%.3f ms\n", a, (unsigned)p->seq,
                  (double)(now - p->t_sent) / 1e6);
    } else if (now - p->t_sent >= PING_WAIT_NS) {
        sb_printf(&c->out, "no reply from %s: seq=%u\n", a, (unsigned)p->seq);
    } else {
        return;
    }
    if (p->sent >= p->count || ping_send(c) < 0)
        ping_finish(c);
}

static int cmd_ping(struct ctl_client *c, int argc, char **argv)
{
    struct ctl_ping *p;
    struct in_addr ia;
    long count = 3;
    char *end;

    if (argc < 2 || argc > 3) {
        sb_printf(&c->out, "error: usage: ping ADDR [COUNT]\n");
        return 0;
    }
    if (inet_pton(AF_INET, argv[1], &ia) != 1) {
        sb_printf(&c->out, "error: ping: bad IPv4 address '%s'\n", argv[1]);
        return 0;
    }
    if (argc == 3) {
        errno = 0;
        count = strtol(argv[2], &end, 10);
        if (errno || *end || count < 1 || count > PING_MAX_COUNT) {
            sb_printf(&c->out, "error: ping: COUNT must be 1..%d\n", PING_MAX_COUNT);
            return 0;
        }
    }
    if (!c->ctl->d->nworkers) {
        sb_printf(&c->out, "error: ping: no worker\n");
        return 0;
    }
    p = calloc(1, sizeof(*p));
    if (!p) {
        sb_printf(&c->out, "error: out of memory\n");
        return 0;
    }
    p->dst = ntohl(ia.s_addr);
    p->id = (uint16_t)((unsigned)getpid() ^ ++c->ctl->ping_id);
    p->count = (int)count;
    c->ping = p;
    if (ping_send(c) < 0) {
        free(p);
        c->ping = NULL;
        return 0;
    }
    ev_timer_init(&p->tick, ping_tick, PING_POLL_S, PING_POLL_S);
    p->tick.data = c;
    ev_timer_start(ctl_loop(c), &p->tick);
    return 1;
}

/* access USER: may USER (a name or a uid) attach? For a service that starts as one user
 * and drops privileges to another (memcached -u nobody): the launcher asks before. */
static int cmd_access(struct ctl_client *c, int argc, char **argv)
{
    struct passwd pw, *pwp = NULL;
    char buf[4096], *end = NULL;

    if (argc != 2) {
        sb_printf(&c->out, "error: usage: access USER\n");
        return 0;
    }
    unsigned long id = strtoul(argv[1], &end, 10);
    int rc = argv[1][0] >= '0' && argv[1][0] <= '9' && !*end && id <= UINT32_MAX
                 ? getpwuid_r((uid_t)id, &pw, buf, sizeof(buf), &pwp)
                 : getpwnam_r(argv[1], &pw, buf, sizeof(buf), &pwp);
    if (rc != 0 || !pwp) {
        sb_printf(&c->out, "error: access: no user %.64s\n", argv[1]);
        return 0;
    }
    if (ctl_peer_allowed(c->ctl->d->conf, pw.pw_uid, pw.pw_gid, NULL, -1))
        sb_printf(&c->out, "allowed: user %.64s (uid %u)\n", pw.pw_name, (unsigned)pw.pw_uid);
    else
        sb_printf(&c->out,
                  "error: denied: user %.64s (uid %u) is not in daemon.allowed_users or "
                  "daemon.allowed_groups\n",
                  pw.pw_name, (unsigned)pw.pw_uid);
    return 0;
}

static int cmd_attach(struct ctl_client *c, int argc, char **argv)
{
    char want[16];
    snprintf(want, sizeof(want), "%u", SHM_LAYOUT_VERSION);
    if (argc != 2 || strcmp(argv[1], want)) {
        sb_printf(&c->out, "error: attach: this daemon speaks layout version %u\n",
                  SHM_LAYOUT_VERSION);
        return 0;
    }
    return CTL_HANDOVER;
}

static int cmd_sessions(struct ctl_client *c, bool sockets)
{
    int rc = sessions_report(c->ctl->d, &c->out, sockets);
    if (rc < 0)
        sb_printf(&c->out, "error: %s\n", strerror(-rc));
    return 0;
}

static int cmd_clients(struct ctl_client *c, int argc, char **argv)
{
    return cmd_sessions(c, false);
}
static int cmd_sockets(struct ctl_client *c, int argc, char **argv)
{
    return cmd_sessions(c, true);
}

static const struct ctl_cmd ctl_cmds[] = {
    {"attach", "attach VERSION", "start a libshmnet session (binary reply; used by the library)",
     cmd_attach},
    {"clients", "clients", "attached client processes", cmd_clients},
    {"sockets", "sockets", "open sockets of all clients", cmd_sockets},
    {"stats", "stats", "all counters, interfaces, then nonzero drops by reason", cmd_stats},
    {"neigh", "neigh", "the ARP (neighbour) table", cmd_neigh},
    {"route", "route", "the routing table", cmd_route},
    {"capture", "capture start FILE | capture stop",
     "pcap of RX and TX on all interfaces (FILE absolute; root only)", cmd_capture},
    {"ping", "ping ADDR [COUNT]", "send COUNT (default 3) ICMP echo requests from the stack",
     cmd_ping},
    {"reload", "reload", "re-read the configuration file (same as SIGHUP)", cmd_reload},
    {"version", "version", "the daemon's version", cmd_version},
    {"access", "access USER", "may USER (name or uid) attach? (for services that change user)",
     cmd_access},
    {"help", "help", "this list", cmd_help},
};

static int cmd_help(struct ctl_client *c, int argc, char **argv)
{
    sb_printf(&c->out, "commands:\n");
    for (size_t i = 0; i < sizeof(ctl_cmds) / sizeof(ctl_cmds[0]); i++)
        sb_printf(&c->out, "  %-34s %s\n", ctl_cmds[i].usage, ctl_cmds[i].help);
    return 0;
}

/* Run one request line. 0: the answer is in c->out; 1: it completes asynchronously. */
static int ctl_dispatch(struct ctl_client *c, char *line)
{
    char *argv[CTL_MAX_ARGS + 1], *save = NULL, *tok;
    int argc = 0;

    for (tok = strtok_r(line, " \t\r", &save); tok; tok = strtok_r(NULL, " \t\r", &save)) {
        if (argc == CTL_MAX_ARGS) {
            sb_printf(&c->out, "error: too many arguments\n");
            return 0;
        }
        argv[argc++] = tok;
    }
    argv[argc] = NULL;
    if (!argc) {
        sb_printf(&c->out, "error: empty request (try help)\n");
        return 0;
    }
    for (size_t i = 0; i < sizeof(ctl_cmds) / sizeof(ctl_cmds[0]); i++)
        if (!strcmp(argv[0], ctl_cmds[i].name)) {
            log_debug("control: uid %u pid %d: %s", (unsigned)c->cred.uid, (int)c->cred.pid,
                      argv[0]);
            return ctl_cmds[i].fn(c, argc, argv);
        }
    /* Do not echo arbitrary bytes back verbatim: keep printable ASCII only. */
    for (char *s = argv[0]; *s; s++)
        if (*s < 0x20 || *s > 0x7e)
            *s = '?';
    sb_printf(&c->out, "error: unknown command '%.64s' (try help)\n", argv[0]);
    return 0;
}

/* ---- connection handling ---- */

static void client_free(struct ctl_client *c)
{
    struct ev_loop *loop = ctl_loop(c);
    char junk[4096];

    if (c->ping) {
        ev_timer_stop(loop, &c->ping->tick);
        free(c->ping);
    }
    ev_io_stop(loop, &c->io);
    ev_timer_stop(loop, &c->tmo);
    /* Drain unread input (bounded) so close() does not reset the peer before it reads our
     * answer (AF_UNIX reports ECONNRESET when unread data is discarded). fd < 0: the
     * connection was handed over to a session. */
    for (int i = 0; c->fd >= 0 && i < 16 && recv(c->fd, junk, sizeof(junk), MSG_DONTWAIT) > 0; i++)
        ;
    if (c->fd >= 0)
        close(c->fd);
    *c->pprev = c->next;
    if (c->next)
        c->next->pprev = c->pprev;
    c->ctl->nclients--;
    uid_put(c->ctl, c->cred.uid);
    sb_free(&c->out);
    free(c);
}

/* Send what is left of c->out; close when done or on error. */
static void client_write(struct ctl_client *c)
{
    while (c->outoff < c->out.len) {
        ssize_t n = send(c->fd, c->out.buf + c->outoff, c->out.len - c->outoff, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) {
            client_free(c);
            return;
        }
        c->outoff += (size_t)n;
        ev_timer_again(ctl_loop(c), &c->tmo); /* progress: restart the write timeout */
    }
    client_free(c);
}

/* The answer in c->out is complete: switch to writing it. */
static void client_reply(struct ctl_client *c)
{
    struct ev_loop *loop = ctl_loop(c);

    if (c->out.oom) {
        sb_free(&c->out);
        sb_printf(&c->out, "error: out of memory\n");
    }
    /* Bounded for everyone but root: a peer that asks for big answers and never reads them
     * must not make the daemon hold ctl_max_output times its connections. */
    uint32_t max = c->ctl->d->conf->ctl_max_output;
    if (c->cred.uid != 0 && c->out.len > max) {
        size_t len = c->out.len;

        c->ctl->cnt.drop_output_limit++;
        log_warn_rl("control: uid %u pid %d: answer of %zu bytes dropped (daemon.ctl_max_output "
                    "%u)",
                    (unsigned)c->cred.uid, (int)c->cred.pid, len, max);
        sb_free(&c->out);
        sb_printf(&c->out,
                  "error: the answer is %zu bytes, more than daemon.ctl_max_output (%u); ask as "
                  "root\n",
                  len, max);
    }
    /* Reports reserve room in big steps: keep only what is sent. */
    if (c->out.cap > c->out.len + 1) {
        char *b = realloc(c->out.buf, c->out.len + 1);
        if (b) {
            c->out.buf = b;
            c->out.cap = c->out.len + 1;
        }
    }
    c->state = CL_WRITE;
    ev_io_stop(loop, &c->io);
    ev_io_set(&c->io, c->fd, EV_WRITE);
    ev_io_start(loop, &c->io);
    c->tmo.repeat = CTL_WRITE_TIMEOUT;
    ev_timer_again(loop, &c->tmo);
    client_write(c);
}

/* A peer the policy refuses, once its request is in: the library's attach reads a binary
 * reply and gets EACCES from it; anything else the reason as text. */
static void client_denied(struct ctl_client *c)
{
    size_t n = strcspn(c->in, " \t\r");

    if (n == 6 && !strncmp(c->in, "attach", 6)) {
        session_refuse(c->fd, -EACCES);
        client_free(c);
        return;
    }
    sb_printf(&c->out,
              "error: permission denied: uid %u is not in daemon.allowed_users or "
              "daemon.allowed_groups\n",
              (unsigned)c->cred.uid);
    client_reply(c);
}

static void client_read(struct ctl_client *c)
{
    struct ev_loop *loop = ctl_loop(c);
    bool eof = false;
    char *nl;

    for (;;) {
        ssize_t n = recv(c->fd, c->in + c->inlen, sizeof(c->in) - 1 - c->inlen, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n < 0) {
            client_free(c);
            return;
        }
        if (n == 0) {
            eof = true;
            break;
        }
        c->inlen += (size_t)n;
        c->in[c->inlen] = '\0';
        if (memchr(c->in, '\n', c->inlen) || c->inlen == sizeof(c->in) - 1)
            break;
    }
    c->in[c->inlen] = '\0';
    nl = memchr(c->in, '\n', c->inlen);
    if (!nl && c->inlen >= CTL_MAX_REQUEST) {
        sb_printf(&c->out, "error: request too long (max %d bytes)\n", CTL_MAX_REQUEST);
        client_reply(c);
        return;
    }
    if (!nl && !eof)
        return; /* wait for the rest of the line */
    if (!nl && c->inlen == 0) {
        client_free(c); /* connected and hung up without asking anything */
        return;
    }
    size_t linelen = nl ? (size_t)(nl - c->in) : c->inlen;
    c->in[linelen] = '\0';
    if (strlen(c->in) != linelen) { /* embedded NUL: not a text request */
        sb_printf(&c->out, "error: malformed request\n");
        client_reply(c);
        return;
    }
    /* Request complete: stop reading and the read timeout; the command answers. */
    ev_io_stop(loop, &c->io);
    ev_timer_stop(loop, &c->tmo);
    c->state = CL_BUSY;
    if (c->denied) {
        client_denied(c);
        return;
    }
    int r = ctl_dispatch(c, c->in);
    if (r == 0) {
        client_reply(c);
    } else if (r == CTL_HANDOVER) {
        /* "attach": the connection becomes a client session (daemon/session.c). */
        struct daemon *d = c->ctl->d;
        struct ucred cred = c->cred;
        int fd = c->fd;
        c->fd = -1;
        client_free(c);
        session_attach(d, fd, &cred);
    }
}

static void client_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct ctl_client *c = w->data;

    if (c->state == CL_READ)
        client_read(c);
    else if (c->state == CL_WRITE)
        client_write(c);
}

static void client_tmo_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct ctl_client *c = t->data;

    if (c->state == CL_READ) {
        log_debug_rl("control: client pid %d sent no request in time", (int)c->cred.pid);
        sb_printf(&c->out, "error: timeout waiting for the request\n");
        client_reply(c);
        return;
    }
    c->ctl->cnt.drop_slow_reader++;
    log_warn_rl("control: uid %u pid %d did not read its answer within %.0f s: closed",
                (unsigned)c->cred.uid, (int)c->cred.pid, CTL_WRITE_TIMEOUT);
    client_free(c);
}

/* Refused before it got a slot: one best-effort line, then closed. */
static void refuse_now(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void refuse_now(int fd, const char *fmt, ...)
{
    char msg[256], junk[1024];
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n > 0)
        (void)!send(fd, msg, (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1,
                    MSG_NOSIGNAL | MSG_DONTWAIT);
    /* Unread input would make close() reset the connection before the peer reads the line. */
    (void)!recv(fd, junk, sizeof(junk), MSG_DONTWAIT);
    close(fd);
}

static void accept_resume(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct ctl *ctl = t->data;
    ev_io_start(loop, &ctl->lio);
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct ctl *ctl = w->data;

    for (;;) {
        int fd = accept4(ctl->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                log_warn_rl("control: accept: %s", strerror(errno));
            /* Out of descriptors or memory: the pending connection stays queued and the
             * listener readable, so a level-triggered watcher would call us again at
             * once, for ever. Pause a moment instead. */
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                ctl->cnt.accept_paused++;
                ev_io_stop(loop, &ctl->lio);
                ev_timer_set(&ctl->lpause, 0.1, 0.);
                ev_timer_start(loop, &ctl->lpause);
            }
            return;
        }
        const struct conf *cf = ctl->d->conf;
        struct ctl_client *c = NULL;
        struct ucred cred;
        gid_t groups[256];
        socklen_t sl = sizeof(cred);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &sl) < 0) {
            log_warn_rl("control: SO_PEERCRED: %s", strerror(errno));
            close(fd);
            continue;
        }
        /* Slots: the last CTL_ROOT_RESERVE are root's, so no other user can take them all;
         * each other uid has at most ctl_max_per_uid. */
        if (ctl->nclients >= CTL_MAX_CLIENTS ||
            (cred.uid != 0 && ctl->nclients >= CTL_MAX_CLIENTS - CTL_ROOT_RESERVE)) {
            ctl->cnt.refused_full++;
            log_warn_rl("control: %u connections open, refusing uid %u pid %d", ctl->nclients,
                        (unsigned)cred.uid, (int)cred.pid);
            refuse_now(fd, "error: too many control connections, try again later\n");
            continue;
        }
        if (cred.uid != 0 && uid_conns(ctl, cred.uid) >= cf->ctl_max_per_uid) {
            ctl->cnt.refused_uid_limit++;
            log_warn_rl("control: uid %u has %u connections open (daemon.ctl_max_per_uid), "
                        "refusing pid %d",
                        (unsigned)cred.uid, cf->ctl_max_per_uid, (int)cred.pid);
            refuse_now(fd,
                       "error: too many control connections from uid %u "
                       "(daemon.ctl_max_per_uid = %u)\n",
                       (unsigned)cred.uid, cf->ctl_max_per_uid);
            continue;
        }
        c = calloc(1, sizeof(*c));
        if (!c) {
            log_warn_rl("control: out of memory, refusing a connection");
            refuse_now(fd, "error: out of memory\n");
            continue;
        }
        c->ctl = ctl;
        c->fd = fd;
        c->cred = cred;
        c->next = ctl->clients;
        if (c->next)
            c->next->pprev = &c->next;
        c->pprev = &ctl->clients;
        ctl->clients = c;
        ctl->nclients++;
        uid_get(ctl, cred.uid);
        ev_io_init(&c->io, client_io_cb, fd, EV_READ);
        c->io.data = c;
        ev_init(&c->tmo, client_tmo_cb);
        c->tmo.repeat = CTL_READ_TIMEOUT;
        c->tmo.data = c;
        c->state = CL_READ;
        /* A refused peer still sends its request first: an attach is answered in binary. */
        if (!ctl_peer_allowed(cf, cred.uid, cred.gid, groups,
                              peer_groups(fd, groups, (int)(sizeof(groups) / sizeof(groups[0]))))) {
            c->denied = true;
            ctl->cnt.refused_permission++;
            log_warn_rl("control: refused uid %u gid %u pid %d: not in daemon.allowed_users or "
                        "daemon.allowed_groups",
                        (unsigned)cred.uid, (unsigned)cred.gid, (int)cred.pid);
        }
        ev_io_start(loop, &c->io);
        ev_timer_again(loop, &c->tmo);
    }
}

/* ---- socket setup ---- */

static int mkdir_p(const char *dir, mode_t mode)
{
    char tmp[CONF_PATH_MAX];

    if (snprintf(tmp, sizeof(tmp), "%s", dir) >= (int)sizeof(tmp))
        return -ENAMETOOLONG;
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, mode) < 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(tmp, mode) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

int ctl_open(struct daemon *d, struct ctl **out)
{
    const char *path = d->conf->socket_path;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct ctl *ctl;
    struct stat stt;
    char dir[CONF_PATH_MAX];
    char *slash;
    int ret;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        log_error("control socket path too long: %s", path);
        return -ENAMETOOLONG;
    }
    memcpy(sa.sun_path, path, strlen(path));
    snprintf(dir, sizeof(dir), "%s", path);
    slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        ret = mkdir_p(dir, 0755);
        if (ret < 0) {
            log_error("cannot create %s: %s", dir, strerror(-ret));
            return ret;
        }
    }
    ctl = calloc(1, sizeof(*ctl));
    if (!ctl)
        return -ENOMEM;
    ctl->d = d;
    snprintf(ctl->path, sizeof(ctl->path), "%s", path);
    ctl->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (ctl->lfd < 0) {
        ret = -errno;
        goto fail;
    }
    /* A socket left by a daemon that died: remove it, unless a live daemon answers there.
     * Anything that is not a socket is left alone. */
    if (lstat(path, &stt) == 0) {
        if (!S_ISSOCK(stt.st_mode)) {
            log_error("%s exists and is not a socket", path);
            ret = -EEXIST;
            goto fail;
        }
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
            close(probe);
            log_error("another shmnetd is listening on %s", path);
            ret = -EADDRINUSE;
            goto fail;
        }
        if (probe >= 0)
            close(probe);
        unlink(path);
    }
    if (bind(ctl->lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        ret = -errno;
        log_error("control socket %s: bind: %s", path, strerror(errno));
        goto fail;
    }
    /* Everyone may connect; SO_PEERCRED enforces the policy per connection. */
    if (chmod(path, 0666) < 0 || listen(ctl->lfd, 64) < 0) {
        ret = -errno;
        log_error("control socket %s: %s", path, strerror(errno));
        unlink(path);
        goto fail;
    }
    ev_io_init(&ctl->lio, accept_cb, ctl->lfd, EV_READ);
    ctl->lio.data = ctl;
    ev_init(&ctl->lpause, accept_resume);
    ctl->lpause.data = ctl;
    ev_io_start(d->loop, &ctl->lio);
    log_info("control socket %s", path);
    *out = ctl;
    return 0;
fail:
    if (ctl->lfd >= 0)
        close(ctl->lfd);
    free(ctl);
    return ret;
}

void ctl_close(struct ctl *ctl)
{
    if (!ctl)
        return;
    while (ctl->clients) {
        struct ctl_client *c = ctl->clients;

        /* Best effort: tell a client still waiting why its answer ends here. */
        if (c->state != CL_WRITE) {
            sb_printf(&c->out, "error: shmnetd is shutting down\n");
            if (c->out.len > c->outoff)
                (void)!send(c->fd, c->out.buf + c->outoff, c->out.len - c->outoff,
                            MSG_NOSIGNAL | MSG_DONTWAIT);
        }
        client_free(c);
    }
    ev_io_stop(ctl->d->loop, &ctl->lio);
    ev_timer_stop(ctl->d->loop, &ctl->lpause);
    close(ctl->lfd);
    unlink(ctl->path);
    free(ctl);
}
