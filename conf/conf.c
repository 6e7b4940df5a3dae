/* shmnetd configuration loader and validator (libconfig).
 *
 * The file is parsed once by libconfig; then every group is walked with a table of known
 * keys (anything else is an error) and each value is type- and range-checked. Errors do
 * not stop the walk: every problem in the file is reported, each as "FILE:LINE: message",
 * with the line of the offending setting. */
#include "conf/conf.h"
#include "shm/shm.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <libconfig.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* sun_path size: the socket path and its NUL must fit. */
#define SUN_PATH_MAX ((int)sizeof(((struct sockaddr_un *)0)->sun_path))

#define DEFAULT_SOCKET "/run/shmnet/shmnetd.sock"

/* ------------------------------------------------------------------------------------ */
/* parsing helpers                                                                        */

int conf_parse_ip4(const char *s, uint32_t *out)
{
    struct in_addr a;

    /* inet_pton accepts only the strict dotted quad (no octal, no short forms). */
    if (!s || inet_pton(AF_INET, s, &a) != 1)
        return -EINVAL;
    *out = ntohl(a.s_addr);
    return 0;
}

int conf_parse_prefix(const char *s, uint32_t *addr, uint8_t *plen)
{
    char buf[INET_ADDRSTRLEN];
    const char *slash;
    unsigned long n = 32;

    if (!s)
        return -EINVAL;
    slash = strchr(s, '/');
    if (slash) {
        const char *p = slash + 1;
        char *end;

        /* strtoul alone would take "+8", " 8" or "": insist on 1-2 plain digits. */
        if (!isdigit((unsigned char)p[0]) || strlen(p) > 2)
            return -EINVAL;
        errno = 0;
        n = strtoul(p, &end, 10);
        if (*end || errno || n > 32)
            return -EINVAL;
        if ((size_t)(slash - s) >= sizeof(buf))
            return -EINVAL;
        memcpy(buf, s, (size_t)(slash - s));
        buf[slash - s] = '\0';
        s = buf;
    }
    if (conf_parse_ip4(s, addr) < 0)
        return -EINVAL;
    *plen = (uint8_t)n;
    return 0;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = (char)tolower((unsigned char)ch);
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

int conf_parse_mac(const char *s, uint8_t mac[6])
{
    uint8_t m[6];

    if (!s || strlen(s) != 17)
        return -EINVAL;
    for (int i = 0; i < 6; i++) {
        int hi = hexval(s[i * 3]), lo = hexval(s[i * 3 + 1]);

        if (hi < 0 || lo < 0 || (i < 5 && s[i * 3 + 2] != ':'))
            return -EINVAL;
        m[i] = (uint8_t)(hi << 4 | lo);
    }
    memcpy(mac, m, 6);
    return 0;
}

static const char *const log_names[] = {"error", "warn", "info", "debug"};

int conf_parse_log_level(const char *s, enum log_level *out)
{
    for (unsigned i = 0; s && i < sizeof(log_names) / sizeof(log_names[0]); i++) {
        if (!strcmp(s, log_names[i])) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -EINVAL;
}

const char *log_level_name(enum log_level l)
{
    if ((unsigned)l < sizeof(log_names) / sizeof(log_names[0]))
        return log_names[l];
    return "?";
}

static const char *const hook_names[HOOK_NPOINTS] = {
    "prerouting", "local_in", "forward", "local_out", "postrouting",
};

const char *hook_point_name(enum hook_point p)
{
    if ((unsigned)p < HOOK_NPOINTS)
        return hook_names[p];
    return "?";
}

static uint32_t plen_mask(uint8_t plen)
{
    return plen ? ~0u << (32 - plen) : 0;
}

/* ------------------------------------------------------------------------------------ */
/* defaults                                                                               */

void conf_defaults(struct conf *c)
{
    struct group *gr;

    memset(c, 0, sizeof(*c));
    snprintf(c->socket_path, sizeof(c->socket_path), "%s", DEFAULT_SOCKET);
    c->workers = 1;
    c->busy_poll_us = 50;
    c->rx_budget = 64;
    c->log_level = LOG_LVL_INFO;
    c->max_clients = 256;
    c->max_per_uid = 64;
    c->max_sockets = 4096;
    c->channels = 16;
    c->fifo_mb = 1024;  /* virtual: pages cost memory only while used */
    c->rcvbuf = 212992; /* Linux net.core.rmem_default */
    c->sndbuf = 212992;
    c->unprivileged_port_start = 1024; /* Linux net.ipv4.ip_unprivileged_port_start */
    c->allowed_uids[0] = 0;
    c->n_uids = 1;
    c->ctl_max_per_uid = 64;
    c->ctl_max_output = 1u << 20;
    /* The "shmnet" group is optional: only allowed when the system has it. */
    gr = getgrnam("shmnet");
    if (gr)
        c->allowed_gids[c->n_gids++] = (uint32_t)gr->gr_gid;
    stack_params_defaults(&c->stack);
}

/* ------------------------------------------------------------------------------------ */
/* error reporting and typed getters                                                      */

struct ld {
    struct conf *c;
    const char *path;
    const char *incdir; /* directory of path, for @include'd file names */
    conf_err_fn fn;
    void *ctx;
    int nerr;
};

static void emit(conf_err_fn fn, void *ctx, const char *msg)
{
    if (fn)
        fn(ctx, msg);
    else
        fprintf(stderr, "%s\n", msg);
}

/* libconfig 1.5 keeps an included file's name as written in @include, relative to the
 * include dir: give a path the user can open. */
static const char *shown_file(const struct ld *ld, const char *file, char *buf, size_t cap)
{
    size_t dl;

    if (!file)
        return ld->path;
    if (!ld->incdir || !strcmp(file, ld->path) || file[0] == '/')
        return file;
    dl = strlen(ld->incdir);
    if (!strncmp(file, ld->incdir, dl) && file[dl] == '/')
        return file;
    snprintf(buf, cap, "%s/%s", ld->incdir, file);
    return buf;
}

/* Report at the line of setting s (its own file when it came from an @include). */
__attribute__((format(printf, 3, 4))) static void err_at(struct ld *ld, const config_setting_t *s,
                                                         const char *fmt, ...)
{
    char msg[400], line[512], fbuf[CONF_PATH_MAX * 2];
    const char *file = NULL;
    unsigned lno = 0;
    va_list ap;

    if (s) {
        file = config_setting_source_file(s);
        lno = config_setting_source_line(s);
    }
    file = shown_file(ld, file, fbuf, sizeof(fbuf));
    /* The root setting has no line: point at the top of the file. */
    if (lno == 0)
        lno = 1;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(line, sizeof(line), "%s:%u: %s", file, lno, msg);
    emit(ld->fn, ld->ctx, line);
    ld->nerr++;
}

static const char *type_name(int type)
{
    switch (type) {
    case CONFIG_TYPE_GROUP:
        return "a group";
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64:
        return "an integer";
    case CONFIG_TYPE_FLOAT:
        return "a float";
    case CONFIG_TYPE_STRING:
        return "a string";
    case CONFIG_TYPE_BOOL:
        return "a boolean";
    case CONFIG_TYPE_ARRAY:
        return "an array";
    case CONFIG_TYPE_LIST:
        return "a list";
    default:
        return "nothing";
    }
}

/* "grp.key", or "key" at the top level. */
static void key_name(char *buf, size_t cap, const char *grp, const char *key)
{
    if (grp && *grp)
        snprintf(buf, cap, "%s.%s", grp, key);
    else
        snprintf(buf, cap, "%s", key);
}

/* Every member of group g must be in keys (NULL-terminated). */
static void check_keys(struct ld *ld, config_setting_t *g, const char *gname,
                       const char *const *keys)
{
    int n = config_setting_length(g);

    for (int i = 0; i < n; i++) {
        config_setting_t *s = config_setting_get_elem(g, (unsigned)i);
        const char *name = config_setting_name(s);
        bool known = false;

        for (const char *const *k = keys; *k && name; k++)
            if (!strcmp(*k, name)) {
                known = true;
                break;
            }
        if (known)
            continue;
        if (gname && *gname)
            err_at(ld, s, "unknown key '%s' in group '%s'", name ? name : "?", gname);
        else
            err_at(ld, s, "unknown key '%s' at top level", name ? name : "?");
    }
}

static bool is_int(const config_setting_t *s)
{
    int t = config_setting_type(s);

    return t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64;
}

/* Check an integer setting against [lo, hi]; name is its full key. */
static bool int_value(struct ld *ld, config_setting_t *s, const char *name, int64_t lo, int64_t hi,
                      int64_t *out)
{
    int64_t v;

    if (!is_int(s)) {
        err_at(ld, s, "%s: expected an integer, got %s", name, type_name(config_setting_type(s)));
        return false;
    }
    v = config_setting_get_int64(s);
    if (v < lo || v > hi) {
        err_at(ld, s, "%s: %lld is out of range %lld..%lld", name, (long long)v, (long long)lo,
               (long long)hi);
        return false;
    }
    *out = v;
    return true;
}

/* The getters below leave *out alone when the key is absent or wrong (then reported),
 * so the default stays; they return true only when a valid value was stored. */
static bool get_u32(struct ld *ld, config_setting_t *g, const char *gname, const char *key,
                    int64_t lo, int64_t hi, uint32_t *out)
{
    config_setting_t *s = config_setting_get_member(g, key);
    char name[96];
    int64_t v;

    if (!s)
        return false;
    key_name(name, sizeof(name), gname, key);
    if (!int_value(ld, s, name, lo, hi, &v))
        return false;
    *out = (uint32_t)v;
    return true;
}

static bool get_bool(struct ld *ld, config_setting_t *g, const char *gname, const char *key,
                     bool *out)
{
    config_setting_t *s = config_setting_get_member(g, key);
    char name[96];

    if (!s)
        return false;
    if (config_setting_type(s) != CONFIG_TYPE_BOOL) {
        key_name(name, sizeof(name), gname, key);
        err_at(ld, s, "%s: expected a boolean (true or false), got %s", name,
               type_name(config_setting_type(s)));
        return false;
    }
    *out = config_setting_get_bool(s);
    return true;
}

/* Integers are accepted where a float is expected (loss = 1;). */
static bool get_double(struct ld *ld, config_setting_t *g, const char *gname, const char *key,
                       double lo, double hi, double *out)
{
    config_setting_t *s = config_setting_get_member(g, key);
    char name[96];
    double v;

    if (!s)
        return false;
    key_name(name, sizeof(name), gname, key);
    if (is_int(s)) {
        v = (double)config_setting_get_int64(s);
    } else if (config_setting_type(s) == CONFIG_TYPE_FLOAT) {
        v = config_setting_get_float(s);
    } else {
        err_at(ld, s, "%s: expected a number, got %s", name, type_name(config_setting_type(s)));
        return false;
    }
    if (!(v >= lo && v <= hi)) { /* also catches NaN */
        err_at(ld, s, "%s: %g is out of range %g..%g", name, v, lo, hi);
        return false;
    }
    *out = v;
    return true;
}

/* Returns the string (owned by libconfig) or NULL when absent or not a string. */
static const char *get_str(struct ld *ld, config_setting_t *g, const char *gname, const char *key,
                           config_setting_t **where)
{
    config_setting_t *s = config_setting_get_member(g, key);
    char name[96];

    if (where)
        *where = s;
    if (!s)
        return NULL;
    if (config_setting_type(s) != CONFIG_TYPE_STRING) {
        key_name(name, sizeof(name), gname, key);
        err_at(ld, s, "%s: expected a string, got %s", name, type_name(config_setting_type(s)));
        return NULL;
    }
    return config_setting_get_string(s);
}

/* A member that must be a group / a list; NULL when absent or reported. */
static config_setting_t *get_container(struct ld *ld, config_setting_t *g, const char *gname,
                                       const char *key, int type)
{
    config_setting_t *s = config_setting_get_member(g, key);
    char name[96];

    if (!s)
        return NULL;
    if (config_setting_type(s) != type) {
        key_name(name, sizeof(name), gname, key);
        err_at(ld, s, "%s: expected %s, got %s", name, type_name(type),
               type_name(config_setting_type(s)));
        return NULL;
    }
    return s;
}

/* ------------------------------------------------------------------------------------ */
/* daemon = { ... }                                                                       */

static bool all_digits(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s))
            return false;
    return true;
}

/* allowed_users / allowed_groups: names (resolved now) or numeric ids. */
static void load_ids(struct ld *ld, config_setting_t *g, const char *key, bool users, uint32_t *ids,
                     uint32_t *n_ids)
{
    config_setting_t *s = config_setting_get_member(g, key);
    uint32_t out[CONF_MAX_IDS];
    uint32_t n = 0;
    bool ok = true;
    int len;

    if (!s)
        return;
    if (config_setting_type(s) != CONFIG_TYPE_ARRAY && config_setting_type(s) != CONFIG_TYPE_LIST) {
        err_at(ld, s, "daemon.%s: expected an array of names or ids, got %s", key,
               type_name(config_setting_type(s)));
        return;
    }
    len = config_setting_length(s);
    if (len > CONF_MAX_IDS) {
        err_at(ld, s, "daemon.%s: at most %d entries", key, CONF_MAX_IDS);
        return;
    }
    for (int i = 0; i < len; i++) {
        config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        char name[64];
        int64_t v;

        snprintf(name, sizeof(name), "daemon.%s[%d]", key, i);
        if (is_int(e)) {
            /* (uid_t)-1 means "no change" to the kernel: never a real id. */
            if (!int_value(ld, e, name, 0, UINT32_MAX - 1, &v)) {
                ok = false;
                continue;
            }
            out[n++] = (uint32_t)v;
        } else if (config_setting_type(e) == CONFIG_TYPE_STRING) {
            const char *str = config_setting_get_string(e);

            if (all_digits(str) && strlen(str) < 11 && strtoull(str, NULL, 10) < UINT32_MAX) {
                out[n++] = (uint32_t)strtoull(str, NULL, 10);
            } else if (users) {
                struct passwd *pw = getpwnam(str);

                if (!pw) {
                    err_at(ld, e, "%s: unknown user '%s'", name, str);
                    ok = false;
                    continue;
                }
                out[n++] = (uint32_t)pw->pw_uid;
            } else {
                struct group *gr = getgrnam(str);

                if (!gr) {
                    err_at(ld, e, "%s: unknown group '%s'", name, str);
                    ok = false;
                    continue;
                }
                out[n++] = (uint32_t)gr->gr_gid;
            }
        } else {
            err_at(ld, e, "%s: expected a name or a numeric id, got %s", name,
                   type_name(config_setting_type(e)));
            ok = false;
        }
    }
    if (ok) {
        memcpy(ids, out, n * sizeof(out[0]));
        *n_ids = n;
    }
}

/* An array or list of CPU numbers (0..1023), at most max: its length, or -1 after an error
 * was reported. */
static int load_cpus(struct ld *ld, config_setting_t *s, const char *name, int *out, int max)
{
    int t = config_setting_type(s), len = config_setting_length(s);
    bool ok = true;

    if (t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST) {
        err_at(ld, s, "%s: expected an array of integers, got %s", name, type_name(t));
        return -1;
    }
    if (len > max) {
        err_at(ld, s, "%s: at most %d entries", name, max);
        return -1;
    }
    for (int i = 0; i < len; i++) {
        config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        char ename[48];
        int64_t v;

        snprintf(ename, sizeof(ename), "%s[%d]", name, i);
        if (int_value(ld, e, ename, 0, 1023, &v))
            out[i] = (int)v;
        else
            ok = false;
    }
    return ok ? len : -1;
}

static void load_daemon(struct ld *ld, config_setting_t *g)
{
    static const char *const keys[] = {
        "socket",    "workers",         "busy_poll_us",
        "rx_budget", "log_level",       "pktbufs",
        "capture",   "allowed_users",   "allowed_groups",
        "cpus",      "ctl_max_per_uid", "ctl_max_output",
        NULL,
    };
    struct conf *c = ld->c;
    config_setting_t *s;
    const char *str;

    check_keys(ld, g, "daemon", keys);

    str = get_str(ld, g, "daemon", "socket", &s);
    if (str) {
        if (!*str)
            err_at(ld, s, "daemon.socket: must not be empty");
        else if ((int)strlen(str) >= SUN_PATH_MAX)
            err_at(ld, s, "daemon.socket: path is %zu bytes, at most %d fit a unix socket",
                   strlen(str), SUN_PATH_MAX - 1);
        else
            snprintf(c->socket_path, sizeof(c->socket_path), "%s", str);
    }
    get_u32(ld, g, "daemon", "workers", 1, 8, &c->workers); /* DAEMON_MAX_WORKERS */
    get_u32(ld, g, "daemon", "busy_poll_us", 0, 1000000, &c->busy_poll_us);
    get_u32(ld, g, "daemon", "rx_budget", 1, 4096, &c->rx_budget);
    get_u32(ld, g, "daemon", "pktbufs", 256, 1048576, &c->stack.pktbufs);

    str = get_str(ld, g, "daemon", "log_level", &s);
    if (str && conf_parse_log_level(str, &c->log_level) < 0)
        err_at(ld, s, "daemon.log_level: '%s' is not one of error, warn, info, debug", str);

    str = get_str(ld, g, "daemon", "capture", &s);
    if (str) {
        if (strlen(str) >= sizeof(c->capture))
            err_at(ld, s, "daemon.capture: path longer than %zu bytes", sizeof(c->capture) - 1);
        else
            snprintf(c->capture, sizeof(c->capture), "%s", str);
    }

    load_ids(ld, g, "allowed_users", true, c->allowed_uids, &c->n_uids);
    load_ids(ld, g, "allowed_groups", false, c->allowed_gids, &c->n_gids);
    /* 960: the control slots (CTL_MAX_CLIENTS) less those kept for root (CTL_ROOT_RESERVE). */
    get_u32(ld, g, "daemon", "ctl_max_per_uid", 1, 960, &c->ctl_max_per_uid);
    get_u32(ld, g, "daemon", "ctl_max_output", 4096, 1u << 30, &c->ctl_max_output);

    s = config_setting_get_member(g, "cpus");
    if (s) {
        int cpus[64];
        int len = load_cpus(ld, s, "daemon.cpus", cpus, 64);

        if (len >= 0) {
            memcpy(c->cpus, cpus, (size_t)len * sizeof(cpus[0]));
            c->n_cpus = (uint32_t)len;
        }
    }
}

/* ------------------------------------------------------------------------------------ */
/* interfaces = ( ... )                                                                   */

/* Why an interface address cannot be used, or NULL. */
static const char *bad_host_addr(uint32_t a, uint8_t plen)
{
    uint32_t m = plen_mask(plen);

    if (a == 0)
        return "is the unspecified address";
    if ((a >> 24) == 127)
        return "is a loopback address";
    if ((a >> 28) == 0xe)
        return "is a multicast address";
    if ((a >> 28) == 0xf)
        return "is a reserved (class E or broadcast) address";
    if ((a >> 24) == 0)
        return "is in 0.0.0.0/8 (this network)";
    /* /31 (RFC 3021) and /32 have no network or broadcast address. */
    if (plen < 31 && (a & ~m) == 0)
        return "is the network address of its subnet";
    if (plen < 31 && (a & ~m) == ~m)
        return "is the broadcast address of its subnet";
    return NULL;
}

/* A stable locally administered MAC from the interface name, when none is given. */
static void default_mac(const char *name, uint8_t mac[6])
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */

    for (const char *p = name; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    mac[0] = 0x02;
    for (int i = 1; i < 6; i++)
        mac[i] = (uint8_t)(h >> (8 * i));
}

static bool valid_ifname(const char *s)
{
    if (!strcmp(s, ".") || !strcmp(s, ".."))
        return false;
    for (; *s; s++)
        if (*s == '/' || *s == ':' || isspace((unsigned char)*s) || !isprint((unsigned char)*s))
            return false;
    return true;
}

static bool is_pow2(uint32_t v)
{
    return v && !(v & (v - 1));
}

static void load_fault(struct ld *ld, config_setting_t *g, const char *gname,
                       struct nic_fault_params *f)
{
    static const char *const keys[] = {
        "loss",      "duplicate", "reorder",   "corrupt", "delay_us",
        "jitter_us", "seed",      "direction", NULL,
    };
    config_setting_t *s;
    const char *str;

    check_keys(ld, g, gname, keys);
    get_double(ld, g, gname, "loss", 0.0, 1.0, &f->loss);
    get_double(ld, g, gname, "duplicate", 0.0, 1.0, &f->duplicate);
    get_double(ld, g, gname, "reorder", 0.0, 1.0, &f->reorder);
    get_double(ld, g, gname, "corrupt", 0.0, 1.0, &f->corrupt);
    get_u32(ld, g, gname, "delay_us", 0, 10000000, &f->delay_us);
    get_u32(ld, g, gname, "jitter_us", 0, 10000000, &f->jitter_us);

    s = config_setting_get_member(g, "seed");
    if (s) {
        char name[96];
        int64_t v;

        key_name(name, sizeof(name), gname, "seed");
        if (int_value(ld, s, name, 0, INT64_MAX, &v))
            f->seed = (uint64_t)v;
    }

    str = get_str(ld, g, gname, "direction", &s);
    if (str) {
        if (!strcmp(str, "rx")) {
            f->rx = true;
            f->tx = false;
        } else if (!strcmp(str, "tx")) {
            f->rx = false;
            f->tx = true;
        } else if (!strcmp(str, "both")) {
            f->rx = f->tx = true;
        } else {
            err_at(ld, s, "%s.direction: '%s' is not one of rx, tx, both", gname, str);
        }
    }
}

/* One interface; returns false when something in it was wrong. */
static bool load_iface(struct ld *ld, config_setting_t *g, int idx, struct conf_iface *ci)
{
    static const char *const keys[] = {
        "name",    "backend", "mac", "mtu",      "address",      "promiscuous", "vlan", "rx_ring",
        "tx_ring", "fault",   "tso", "xdp_mode", "xdp_zerocopy", "rps_cpus",    NULL,
    };
    int nerr0 = ld->nerr;
    struct stack_iface_params *ip = &ci->ip;
    struct nic_params *nic = &ci->nic;
    config_setting_t *s;
    const char *str;
    char gname[32];
    bool have_mac = false;
    uint32_t v;

    snprintf(gname, sizeof(gname), "interfaces[%d]", idx);
    memset(ci, 0, sizeof(*ci));
    ip->mtu = NIC_DEFAULT_MTU;
    snprintf(nic->backend, sizeof(nic->backend), "%s", NIC_DEFAULT_BACKEND);
    nic->nqueues = 1;
    nic->rx_ring = NIC_DEFAULT_RING;
    nic->tx_ring = NIC_DEFAULT_RING;
    nic->fault.seed = 1;
    nic->fault.rx = nic->fault.tx = true;

    if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
        err_at(ld, g, "%s: expected a group { name = ...; }, got %s", gname,
               type_name(config_setting_type(g)));
        return false;
    }
    check_keys(ld, g, gname, keys);

    str = get_str(ld, g, gname, "name", &s);
    if (!s)
        err_at(ld, g, "%s: missing required key 'name'", gname);
    else if (str && !*str)
        err_at(ld, s, "%s.name: must not be empty", gname);
    else if (str && strlen(str) >= IFNAMSIZ)
        err_at(ld, s, "%s.name: '%s' is longer than %d characters", gname, str, IFNAMSIZ - 1);
    else if (str && !valid_ifname(str))
        err_at(ld, s, "%s.name: '%s' is not a valid interface name", gname, str);
    else if (str)
        snprintf(ip->name, sizeof(ip->name), "%s", str);

    str = get_str(ld, g, gname, "backend", &s);
    if (str) {
        if (nic_find_ops(str))
            snprintf(nic->backend, sizeof(nic->backend), "%s", str);
        else
            err_at(ld, s, "%s.backend: '%s' is not one of " NIC_BACKEND_NAMES, gname, str);
    }

    str = get_str(ld, g, gname, "xdp_mode", &s);
    if (str) {
        if (!strcmp(str, "auto"))
            nic->xdp_mode = NIC_XDP_AUTO;
        else if (!strcmp(str, "copy"))
            nic->xdp_mode = NIC_XDP_COPY;
        else if (!strcmp(str, "native"))
            nic->xdp_mode = NIC_XDP_NATIVE;
        else
            err_at(ld, s, "%s.xdp_mode: '%s' is not one of auto, copy, native", gname, str);
        if (strcmp(nic->backend, "af_xdp"))
            err_at(ld, s, "%s.xdp_mode: only the af_xdp backend has it", gname);
    }

    str = get_str(ld, g, gname, "xdp_zerocopy", &s);
    if (str) {
        if (!strcmp(str, "auto"))
            nic->xdp_zc = NIC_XDP_ZC_AUTO;
        else if (!strcmp(str, "on"))
            nic->xdp_zc = NIC_XDP_ZC_ON;
        else if (!strcmp(str, "off"))
            nic->xdp_zc = NIC_XDP_ZC_OFF;
        else
            err_at(ld, s, "%s.xdp_zerocopy: '%s' is not one of auto, on, off", gname, str);
        if (strcmp(nic->backend, "af_xdp"))
            err_at(ld, s, "%s.xdp_zerocopy: only the af_xdp backend has it", gname);
        else if (nic->xdp_zc == NIC_XDP_ZC_ON && nic->xdp_mode == NIC_XDP_COPY)
            err_at(ld, s, "%s.xdp_zerocopy: \"on\" needs the driver: not with xdp_mode = \"copy\"",
                   gname);
    }

    str = get_str(ld, g, gname, "mac", &s);
    if (str) {
        uint8_t mac[6];
        static const uint8_t zero[6];

        if (conf_parse_mac(str, mac) < 0)
            err_at(ld, s, "%s.mac: '%s' is not a MAC address (xx:xx:xx:xx:xx:xx)", gname, str);
        else if (mac[0] & 1)
            err_at(ld, s, "%s.mac: '%s' is a multicast address; an interface needs a unicast one",
                   gname, str);
        else if (!memcmp(mac, zero, 6))
            err_at(ld, s, "%s.mac: the all-zero address is not valid", gname);
        else {
            memcpy(ip->mac, mac, 6);
            have_mac = true;
        }
    }
    if (!have_mac)
        default_mac(ip->name, ip->mac);

    if (get_u32(ld, g, gname, "mtu", 576, 9000, &v))
        ip->mtu = (uint16_t)v;

    str = get_str(ld, g, gname, "address", &s);
    if (!s) {
        err_at(ld, g, "%s: missing required key 'address' (e.g. \"10.0.0.2/24\")", gname);
    } else if (str) {
        uint32_t a;
        uint8_t plen;
        const char *why;

        if (!strchr(str, '/'))
            err_at(ld, s, "%s.address: '%s' needs a prefix length (e.g. \"%s/24\")", gname, str,
                   str);
        else if (conf_parse_prefix(str, &a, &plen) < 0)
            err_at(ld, s, "%s.address: '%s' is not an IPv4 address with prefix (a.b.c.d/n)", gname,
                   str);
        else if (plen == 0)
            err_at(ld, s, "%s.address: prefix length must be 1..32, not 0", gname);
        else if ((why = bad_host_addr(a, plen)))
            err_at(ld, s, "%s.address: '%s' %s", gname, str, why);
        else {
            ip->addr = a;
            ip->plen = plen;
        }
    }

    get_bool(ld, g, gname, "promiscuous", &ip->promiscuous);
    get_bool(ld, g, gname, "tso", &nic->tso);
    if (get_u32(ld, g, gname, "vlan", 0, 4094, &v))
        ip->vlan = (uint16_t)v;

    /* An AF_XDP socket's RX ring is the only buffer between the wire and us (a TAP has
     * its queue in the kernel besides): bursts of fragmented datagrams overflow 256. */
    if (strcmp(nic->backend, "af_xdp") == 0)
        nic->rx_ring = 2048;
    if (get_u32(ld, g, gname, "rx_ring", 16, 4096, &v)) {
        if (is_pow2(v))
            nic->rx_ring = v;
        else
            err_at(ld, config_setting_get_member(g, "rx_ring"),
                   "%s.rx_ring: %u is not a power of two", gname, v);
    }
    if (get_u32(ld, g, gname, "tx_ring", 16, 4096, &v)) {
        if (is_pow2(v))
            nic->tx_ring = v;
        else
            err_at(ld, config_setting_get_member(g, "tx_ring"),
                   "%s.tx_ring: %u is not a power of two", gname, v);
    }

    s = config_setting_get_member(g, "rps_cpus");
    if (s && config_setting_type(s) == CONFIG_TYPE_STRING) {
        str = config_setting_get_string(s);
        if (!strcmp(str, "auto"))
            nic->rps = NIC_RPS_AUTO;
        else if (!strcmp(str, "off"))
            nic->rps = NIC_RPS_OFF;
        else
            err_at(ld, s, "%s.rps_cpus: '%s' is not auto, off or an array of CPUs", gname, str);
    } else if (s) {
        char rname[48];
        int cpus[64];
        int len;

        snprintf(rname, sizeof(rname), "%s.rps_cpus", gname);
        len = load_cpus(ld, s, rname, cpus, 64);
        if (len == 0)
            err_at(ld, s, "%s: empty; \"off\" leaves the kernel's setting", rname);
        for (int i = 0; i < len; i++)
            CPU_SET(cpus[i], &nic->rps_cpus);
        nic->rps = NIC_RPS_LIST;
    }
    if (s && nic->rps == NIC_RPS_LIST && strcmp(nic->backend, "tap"))
        err_at(ld, s, "%s.rps_cpus: only the tap backend has it", gname);

    s = config_setting_get_member(g, "fault");
    if (s) {
        char fname[48];

        snprintf(fname, sizeof(fname), "%s.fault", gname);
        s = get_container(ld, g, gname, "fault", CONFIG_TYPE_GROUP);
        if (s)
            load_fault(ld, s, fname, &nic->fault);
    }
    nic->fault.enabled = nic->fault.loss > 0 || nic->fault.duplicate > 0 ||
                         nic->fault.reorder > 0 || nic->fault.corrupt > 0 ||
                         nic->fault.delay_us > 0 || nic->fault.jitter_us > 0;
    /* The kernel completes the checksums of super-segments: a corrupted one would reach the
     * peer with valid checksums. */
    if (nic->tso && nic->fault.corrupt > 0)
        err_at(ld, config_setting_get_member(g, "tso"),
               "%s.tso: cannot be combined with fault.corrupt (corruption would go unnoticed)",
               gname);
    if (nic->tso && strcmp(nic->backend, "tap"))
        err_at(ld, config_setting_get_member(g, "tso"), "%s.tso: only the tap backend has it",
               gname);

    /* The NIC is configured from the same name, MAC and MTU as the IP interface. */
    memcpy(nic->name, ip->name, sizeof(nic->name));
    memcpy(nic->mac, ip->mac, 6);
    nic->mtu = ip->mtu;
    nic->addr = ip->addr;
    return ld->nerr == nerr0;
}

/* Returns true when every interface is valid (so routes can be checked against them). */
static bool load_interfaces(struct ld *ld, config_setting_t *root)
{
    struct conf *c = ld->c;
    config_setting_t *l = config_setting_get_member(root, "interfaces");
    int n;
    bool ok = true;

    if (!l) {
        err_at(ld, root, "missing required list 'interfaces' (at least one interface)");
        return false;
    }
    if (config_setting_type(l) != CONFIG_TYPE_LIST) {
        err_at(ld, l, "interfaces: expected a list ( { ... }, ... ), got %s",
               type_name(config_setting_type(l)));
        return false;
    }
    n = config_setting_length(l);
    if (n == 0) {
        err_at(ld, l, "interfaces: at least one interface is required");
        return false;
    }
    if (n > CONF_MAX_IFS) {
        err_at(ld, config_setting_get_elem(l, CONF_MAX_IFS), "interfaces: at most %d interfaces",
               CONF_MAX_IFS);
        n = CONF_MAX_IFS;
        ok = false;
    }
    for (int i = 0; i < n; i++) {
        config_setting_t *g = config_setting_get_elem(l, (unsigned)i);
        struct conf_iface *ci = &c->ifs[i];

        if (!load_iface(ld, g, i, ci))
            ok = false;
        for (int j = 0; j < i; j++) {
            const struct conf_iface *o = &c->ifs[j];

            if (ci->ip.name[0] && !strcmp(ci->ip.name, o->ip.name)) {
                err_at(ld, config_setting_get_member(g, "name"),
                       "interfaces[%d].name: duplicate interface name '%s' (also "
                       "interfaces[%d])",
                       i, ci->ip.name, j);
                ok = false;
            }
            if (ci->ip.plen && ci->ip.addr == o->ip.addr) {
                err_at(ld, config_setting_get_member(g, "address"),
                       "interfaces[%d].address: same address as interfaces[%d]", i, j);
                ok = false;
            }
        }
    }
    c->n_ifs = (uint32_t)n;
    return ok;
}

/* ------------------------------------------------------------------------------------ */
/* routes = ( ... )                                                                       */

/* Interface whose subnet holds a (longest prefix wins), or -1. */
static int iface_for(const struct conf *c, uint32_t a)
{
    int best = -1;

    for (uint32_t i = 0; i < c->n_ifs; i++) {
        const struct stack_iface_params *p = &c->ifs[i].ip;
        uint32_t m = plen_mask(p->plen);

        if (p->plen && (a & m) == (p->addr & m) && (best < 0 || p->plen > c->ifs[best].ip.plen))
            best = (int)i;
    }
    return best;
}

static void load_route(struct ld *ld, config_setting_t *g, int idx, bool ifs_ok)
{
    static const char *const keys[] = {"to", "via", "dev", "metric", NULL};
    struct conf *c = ld->c;
    struct route_entry r = {.ifidx = -1};
    config_setting_t *s_to, *s_via, *s_dev;
    const char *to, *via, *dev;
    int nerr0 = ld->nerr;
    char gname[32];
    bool have_via = false;

    snprintf(gname, sizeof(gname), "routes[%d]", idx);
    if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
        err_at(ld, g, "%s: expected a group { to = ...; }, got %s", gname,
               type_name(config_setting_type(g)));
        return;
    }
    check_keys(ld, g, gname, keys);

    to = get_str(ld, g, gname, "to", &s_to);
    if (!s_to) {
        err_at(ld, g, "%s: missing required key 'to' (destination prefix)", gname);
    } else if (to) {
        if (conf_parse_prefix(to, &r.dst, &r.plen) < 0)
            err_at(ld, s_to, "%s.to: '%s' is not an IPv4 prefix (a.b.c.d/n)", gname, to);
        else if (r.dst & ~plen_mask(r.plen)) {
            struct in_addr na = {.s_addr = htonl(r.dst & plen_mask(r.plen))};
            char nb[INET_ADDRSTRLEN];

            inet_ntop(AF_INET, &na, nb, sizeof(nb));
            err_at(ld, s_to, "%s.to: '%s' has host bits set (did you mean %s/%u?)", gname, to, nb,
                   r.plen);
        }
    }

    via = get_str(ld, g, gname, "via", &s_via);
    if (via) {
        const char *why;

        if (conf_parse_ip4(via, &r.via) < 0)
            err_at(ld, s_via, "%s.via: '%s' is not an IPv4 address", gname, via);
        else if (r.via && (why = bad_host_addr(r.via, 32)))
            err_at(ld, s_via, "%s.via: gateway '%s' %s", gname, via, why);
        else
            have_via = r.via != 0;
    }

    dev = get_str(ld, g, gname, "dev", &s_dev);
    if (dev) {
        for (uint32_t i = 0; i < c->n_ifs; i++)
            if (!strcmp(c->ifs[i].ip.name, dev))
                r.ifidx = (int)i;
        if (r.ifidx < 0)
            err_at(ld, s_dev, "%s.dev: no interface named '%s'", gname, dev);
    }

    get_u32(ld, g, gname, "metric", 0, INT32_MAX, &r.metric);

    if (ld->nerr != nerr0)
        return;
    if (!have_via && !s_dev) {
        err_at(ld, g, "%s: an on-link route (no 'via') needs 'dev'", gname);
        return;
    }
    /* Gateway checks need valid interfaces; otherwise they would only repeat errors. */
    if (have_via && ifs_ok) {
        int i = iface_for(c, r.via);

        if (r.ifidx < 0 && i < 0) {
            err_at(ld, s_via, "%s.via: gateway %s is not in the subnet of any interface", gname,
                   via);
            return;
        }
        if (r.ifidx >= 0) {
            const struct stack_iface_params *p = &c->ifs[r.ifidx].ip;
            uint32_t m = plen_mask(p->plen);

            if ((r.via & m) != (p->addr & m)) {
                err_at(ld, s_via, "%s.via: gateway %s is not in the subnet of '%s'", gname, via,
                       p->name);
                return;
            }
        } else {
            r.ifidx = i;
        }
        if (r.via == c->ifs[r.ifidx].ip.addr) {
            err_at(ld, s_via, "%s.via: gateway %s is our own address", gname, via);
            return;
        }
    }
    for (uint32_t j = 0; j < c->stack.n_routes; j++) {
        const struct route_entry *o = &c->stack.routes[j];

        if (o->dst == r.dst && o->plen == r.plen && o->metric == r.metric) {
            err_at(ld, g, "%s: duplicate route to %s with metric %u", gname, to, r.metric);
            return;
        }
    }
    c->stack.routes[c->stack.n_routes++] = r;
}

static void load_routes(struct ld *ld, config_setting_t *root, bool ifs_ok)
{
    config_setting_t *l = get_container(ld, root, "", "routes", CONFIG_TYPE_LIST);
    int n;

    if (!l)
        return;
    n = config_setting_length(l);
    if (n > STACK_MAX_ROUTES) {
        err_at(ld, config_setting_get_elem(l, STACK_MAX_ROUTES), "routes: at most %d routes",
               STACK_MAX_ROUTES);
        n = STACK_MAX_ROUTES;
    }
    for (int i = 0; i < n; i++)
        load_route(ld, config_setting_get_elem(l, (unsigned)i), i, ifs_ok);
}

/* ------------------------------------------------------------------------------------ */
/* ip, arp, hooks                                                                         */

static void load_ip(struct ld *ld, config_setting_t *g)
{
    static const char *const keys[] = {
        "forwarding",
        "default_ttl",
        "frag_timeout_ms",
        "frag_max_datagrams",
        "frag_max_bytes",
        "icmp_ratelimit_pps",
        NULL,
    };
    struct stack_params *p = &ld->c->stack;
    uint32_t v;

    check_keys(ld, g, "ip", keys);
    get_bool(ld, g, "ip", "forwarding", &p->forwarding);
    if (get_u32(ld, g, "ip", "default_ttl", 1, 255, &v))
        p->default_ttl = (uint8_t)v;
    get_u32(ld, g, "ip", "frag_timeout_ms", 100, 600000, &p->frag_timeout_ms);
    get_u32(ld, g, "ip", "frag_max_datagrams", 1, 65536, &p->frag_max_datagrams);
    /* At least one maximum-size datagram must fit. */
    get_u32(ld, g, "ip", "frag_max_bytes", 65536, 1073741824, &p->frag_max_bytes);
    get_u32(ld, g, "ip", "icmp_ratelimit_pps", 0, 1000000, &p->icmp_ratelimit_pps);
}

static void load_clients(struct ld *ld, config_setting_t *g)
{
    static const char *const keys[] = {
        "max_clients", "max_per_uid", "max_sockets", "channels",
        "fifo_mb",     "rcvbuf",      "sndbuf",      "unprivileged_port_start",
        NULL};
    struct conf *c = ld->c;

    check_keys(ld, g, "clients", keys);
    get_u32(ld, g, "clients", "max_clients", 1, 4096, &c->max_clients);
    get_u32(ld, g, "clients", "max_per_uid", 1, 4096, &c->max_per_uid);
    get_u32(ld, g, "clients", "max_sockets", 1, 65535, &c->max_sockets);
    get_u32(ld, g, "clients", "channels", 1, SHM_MAX_CHANNELS, &c->channels);
    get_u32(ld, g, "clients", "fifo_mb", 1, 3072, &c->fifo_mb); /* the region size is 32-bit */
    get_u32(ld, g, "clients", "rcvbuf", 4096, 16u << 20, &c->rcvbuf);
    get_u32(ld, g, "clients", "sndbuf", 4096, 16u << 20, &c->sndbuf);
    get_u32(ld, g, "clients", "unprivileged_port_start", 0, 65535, &c->unprivileged_port_start);
    /* Two default-size fifos must fit the arena, or no socket could be made. */
    if ((uint64_t)c->rcvbuf + c->sndbuf + 2 * 4096 > (uint64_t)c->fifo_mb << 20)
        err_at(ld, g, "clients: rcvbuf + sndbuf must fit in fifo_mb");
}

static void load_udp(struct ld *ld, config_setting_t *g)
{
    static const char *const keys[] = {"port_min", "port_max", NULL};
    struct stack_params *p = &ld->c->stack;
    uint32_t lo = p->udp_port_min, hi = p->udp_port_max;

    check_keys(ld, g, "udp", keys);
    get_u32(ld, g, "udp", "port_min", 1024, 65535, &lo);
    get_u32(ld, g, "udp", "port_max", 1024, 65535, &hi);
    if (lo > hi)
        err_at(ld, g, "udp: port_min %u is above port_max %u", lo, hi);
    else {
        p->udp_port_min = (uint16_t)lo;
        p->udp_port_max = (uint16_t)hi;
    }
}

static void load_tcp(struct ld *ld, config_setting_t *g)
{
    static const char *const keys[] = {
        "sack",
        "timestamps",
        "window_scaling",
        "syncookies",
        "congestion",
        "time_wait_ms",
        "fin_timeout_ms",
        "syn_retries",
        "synack_retries",
        "retries2",
        "rto_min_ms",
        "rto_max_ms",
        "rto_init_ms",
        "delack_ms",
        "keepalive_time_s",
        "keepalive_intvl_s",
        "keepalive_probes",
        "max_syn_backlog",
        "abort_on_overflow",
        "orphan_retries",
        "max_connections",
        NULL,
    };
    struct stack_params *p = &ld->c->stack;
    config_setting_t *s;
    const char *str;

    check_keys(ld, g, "tcp", keys);
    get_bool(ld, g, "tcp", "sack", &p->tcp_sack);
    get_bool(ld, g, "tcp", "timestamps", &p->tcp_timestamps);
    get_bool(ld, g, "tcp", "window_scaling", &p->tcp_window_scaling);
    get_bool(ld, g, "tcp", "syncookies", &p->tcp_syncookies);
    str = get_str(ld, g, "tcp", "congestion", &s);
    if (str) {
        if (strcmp(str, "cubic") && strcmp(str, "newreno") && strcmp(str, "bbr"))
            err_at(ld, s, "tcp.congestion: '%s' is not one of cubic, newreno, bbr", str);
        else
            snprintf(p->tcp_cc, sizeof(p->tcp_cc), "%s", str);
    }
    get_u32(ld, g, "tcp", "time_wait_ms", 1000, 600000, &p->tcp_time_wait_ms);
    get_u32(ld, g, "tcp", "fin_timeout_ms", 1000, 600000, &p->tcp_fin_timeout_ms);
    get_u32(ld, g, "tcp", "syn_retries", 1, 127, &p->tcp_syn_retries);
    get_u32(ld, g, "tcp", "synack_retries", 1, 127, &p->tcp_synack_retries);
    get_u32(ld, g, "tcp", "retries2", 1, 127, &p->tcp_retries2);
    get_u32(ld, g, "tcp", "rto_min_ms", 1, 60000, &p->tcp_rto_min_ms);
    get_u32(ld, g, "tcp", "rto_max_ms", 100, 600000, &p->tcp_rto_max_ms);
    get_u32(ld, g, "tcp", "rto_init_ms", 10, 60000, &p->tcp_rto_init_ms);
    get_u32(ld, g, "tcp", "delack_ms", 1, 500, &p->tcp_delack_ms); /* RFC 9293 3.8.6.3: < 0.5 s */
    get_u32(ld, g, "tcp", "keepalive_time_s", 1, 32767, &p->tcp_keepalive_time_s);
    get_u32(ld, g, "tcp", "keepalive_intvl_s", 1, 32767, &p->tcp_keepalive_intvl_s);
    get_u32(ld, g, "tcp", "keepalive_probes", 1, 127, &p->tcp_keepalive_probes);
    get_u32(ld, g, "tcp", "max_syn_backlog", 1, 65535, &p->tcp_max_syn_backlog);
    get_bool(ld, g, "tcp", "abort_on_overflow", &p->tcp_abort_on_overflow);
    get_u32(ld, g, "tcp", "orphan_retries", 1, 127, &p->tcp_orphan_retries);
    get_u32(ld, g, "tcp", "max_connections", 1024, 16777216, &p->tcp_max_conns);
    if (p->tcp_rto_min_ms > p->tcp_rto_max_ms)
        err_at(ld, g, "tcp: rto_min_ms is above rto_max_ms");
}

static void load_arp(struct ld *ld, config_setting_t *g)
{
    static const char *const keys[] = {
        "cache_size", "reachable_ms", "stale_ms",   "retry_ms",
        "retries",    "queue_len",    "gratuitous", NULL,
    };
    struct stack_params *p = &ld->c->stack;

    check_keys(ld, g, "arp", keys);
    get_u32(ld, g, "arp", "cache_size", 16, 65536, &p->arp_cache_size);
    get_u32(ld, g, "arp", "reachable_ms", 1000, 3600000, &p->arp_reachable_ms);
    get_u32(ld, g, "arp", "stale_ms", 1000, 86400000, &p->arp_stale_ms);
    get_u32(ld, g, "arp", "retry_ms", 100, 60000, &p->arp_retry_ms);
    get_u32(ld, g, "arp", "retries", 1, 100, &p->arp_retries);
    get_u32(ld, g, "arp", "queue_len", 1, 1024, &p->arp_queue_len);
    get_bool(ld, g, "arp", "gratuitous", &p->arp_gratuitous);
}

/* src/dst of a rule: a prefix, or a bare address meaning /32. */
static void rule_prefix(struct ld *ld, config_setting_t *g, const char *gname, const char *key,
                        uint32_t *addr, uint8_t *plen)
{
    config_setting_t *s;
    const char *str = get_str(ld, g, gname, key, &s);
    uint32_t a;
    uint8_t l;

    if (!str)
        return;
    if (conf_parse_prefix(str, &a, &l) < 0)
        err_at(ld, s, "%s.%s: '%s' is not an IPv4 address or prefix", gname, key, str);
    else if (a & ~plen_mask(l))
        err_at(ld, s, "%s.%s: '%s' has host bits set", gname, key, str);
    else {
        *addr = a;
        *plen = l;
    }
}

static void load_hook(struct ld *ld, config_setting_t *g, int idx)
{
    static const char *const keys[] = {"point", "action", "proto", "src", "dst", "rate_pps", NULL};
    struct stack_params *p = &ld->c->stack;
    struct hook_rule r = {.point = HOOK_PREROUTING, .action = HOOK_ACCEPT};
    config_setting_t *s;
    const char *str;
    char gname[32];
    int nerr0 = ld->nerr;

    snprintf(gname, sizeof(gname), "hooks[%d]", idx);
    if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
        err_at(ld, g, "%s: expected a group { point = ...; }, got %s", gname,
               type_name(config_setting_type(g)));
        return;
    }
    check_keys(ld, g, gname, keys);

    str = get_str(ld, g, gname, "point", &s);
    if (!s) {
        err_at(ld, g, "%s: missing required key 'point'", gname);
    } else if (str) {
        int i;

        for (i = 0; i < HOOK_NPOINTS; i++)
            if (!strcmp(str, hook_names[i]))
                break;
        if (i == HOOK_NPOINTS)
            err_at(ld, s,
                   "%s.point: '%s' is not one of prerouting, local_in, forward, "
                   "local_out, postrouting",
                   gname, str);
        else
            r.point = (enum hook_point)i;
    }

    str = get_str(ld, g, gname, "action", &s);
    if (!s) {
        err_at(ld, g, "%s: missing required key 'action'", gname);
    } else if (str) {
        if (!strcmp(str, "accept"))
            r.action = HOOK_ACCEPT;
        else if (!strcmp(str, "drop"))
            r.action = HOOK_DROP;
        else
            err_at(ld, s, "%s.action: '%s' is not one of accept, drop", gname, str);
    }

    s = config_setting_get_member(g, "proto");
    if (s && config_setting_type(s) == CONFIG_TYPE_STRING) {
        str = config_setting_get_string(s);
        if (!strcmp(str, "any"))
            r.proto = 0;
        else if (!strcmp(str, "icmp"))
            r.proto = 1;
        else if (!strcmp(str, "tcp"))
            r.proto = 6;
        else if (!strcmp(str, "udp"))
            r.proto = 17;
        else
            err_at(ld, s, "%s.proto: '%s' is not one of any, icmp, tcp, udp or 0..255", gname, str);
    } else if (s && is_int(s)) {
        char name[48];
        int64_t v;

        snprintf(name, sizeof(name), "%s.proto", gname);
        if (int_value(ld, s, name, 0, 255, &v))
            r.proto = (uint8_t)v;
    } else if (s) {
        err_at(ld, s, "%s.proto: expected a protocol name or number, got %s", gname,
               type_name(config_setting_type(s)));
    }

    rule_prefix(ld, g, gname, "src", &r.src, &r.src_plen);
    rule_prefix(ld, g, gname, "dst", &r.dst, &r.dst_plen);
    get_u32(ld, g, gname, "rate_pps", 0, 10000000, &r.rate_pps);

    if (ld->nerr == nerr0)
        p->rules[p->n_rules++] = r;
}

static void load_hooks(struct ld *ld, config_setting_t *root)
{
    config_setting_t *l = get_container(ld, root, "", "hooks", CONFIG_TYPE_LIST);
    int n;

    if (!l)
        return;
    n = config_setting_length(l);
    if (n > STACK_MAX_RULES) {
        err_at(ld, config_setting_get_elem(l, STACK_MAX_RULES), "hooks: at most %d rules",
               STACK_MAX_RULES);
        n = STACK_MAX_RULES;
    }
    for (int i = 0; i < n; i++)
        load_hook(ld, config_setting_get_elem(l, (unsigned)i), i);
}

/* ------------------------------------------------------------------------------------ */
/* conf_load                                                                              */

#define CONF_MAX_INCLUDE_DEPTH 10 /* libconfig 1.5's own limit */

static const char *file_kind(mode_t m)
{
    if (S_ISFIFO(m))
        return "a FIFO";
    if (S_ISDIR(m))
        return "a directory";
    if (S_ISCHR(m))
        return "a character device";
    if (S_ISBLK(m))
        return "a block device";
    if (S_ISSOCK(m))
        return "a socket";
    return "a special file";
}

/* Open path for reading if it is a regular file. O_NONBLOCK: opening a FIFO must not wait
 * for a writer (and nothing is read from one). NULL with errno set, and *kind describing
 * the file when it exists but is not regular (errno EINVAL). */
static FILE *open_regular(const char *path, const char **kind)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    FILE *f;

    *kind = NULL;
    if (fd < 0)
        return NULL;
    if (fstat(fd, &st) == 0 && !S_ISREG(st.st_mode)) {
        *kind = file_kind(st.st_mode);
        errno = EINVAL;
    }
    f = *kind ? NULL : fdopen(fd, "r");
    if (!f) {
        int e = errno;

        close(fd);
        errno = e;
    }
    return f;
}

/* "PATH: cannot read: REASON", and the -errno to return. */
static int cannot_read(conf_err_fn err, void *ctx, const char *path, const char *kind, int e)
{
    char msg[512];

    if (kind)
        snprintf(msg, sizeof(msg), "%s: cannot read: %s, not a regular file", path, kind);
    else
        snprintf(msg, sizeof(msg), "%s: cannot read: %s", path, strerror(e));
    emit(err, ctx, msg);
    return -e;
}

/* libconfig opens @include files itself, with a blocking fopen: look at each one first (as
 * libconfig finds them: a line starting with @include "NAME", NAME under the include dir)
 * and refuse what is not a regular file. One it cannot open is left to libconfig to
 * report. -EINVAL after reporting, else 0. */
static int check_includes(FILE *f, const char *incdir, conf_err_fn err, void *ctx, int depth)
{
    char line[CONF_PATH_MAX * 2], name[CONF_PATH_MAX], full[CONF_PATH_MAX * 2];
    int rc = 0;

    while (fgets(line, sizeof(line), f)) {
        const char *p = line + strspn(line, " \t");
        size_t n = 0;

        if (strncmp(p, "@include", 8) || !strchr(" \t", p[8]) || !p[8])
            continue;
        p += 8 + strspn(p + 8, " \t");
        if (*p++ != '"')
            continue;
        for (; *p && *p != '"' && n + 1 < sizeof(name); p++) {
            if (*p == '\\' && (p[1] == '"' || p[1] == '\\'))
                p++;
            name[n++] = *p;
        }
        name[n] = '\0';
        if (*p != '"')
            continue;
        if (incdir)
            snprintf(full, sizeof(full), "%s/%s", incdir, name);
        else
            snprintf(full, sizeof(full), "%s", name);

        const char *kind;
        FILE *inc = open_regular(full, &kind);

        if (!inc) {
            if (kind)
                rc = cannot_read(err, ctx, full, kind, EINVAL);
            continue;
        }
        if (depth < CONF_MAX_INCLUDE_DEPTH && check_includes(inc, incdir, err, ctx, depth + 1) < 0)
            rc = -EINVAL;
        fclose(inc);
    }
    return rc;
}

int conf_load(struct conf *c, const char *path, conf_err_fn err, void *ctx)
{
    static const char *const top_keys[] = {"daemon", "interfaces", "routes", "ip",  "arp",
                                           "hooks",  "clients",    "udp",    "tcp", NULL};
    struct ld ld = {.c = c, .path = path, .fn = err, .ctx = ctx};
    config_setting_t *root, *g;
    char msg[512], dir[CONF_PATH_MAX];
    const char *slash, *kind, *incdir = NULL;
    config_t cfg;
    bool ifs_ok;
    FILE *f;
    int rc;

    conf_defaults(c);
    if (strlen(path) >= sizeof(c->path)) {
        snprintf(msg, sizeof(msg), "%.200s...: path too long", path);
        emit(err, ctx, msg);
        return -ENAMETOOLONG;
    }
    snprintf(c->path, sizeof(c->path), "%s", path);

    /* Read through our own descriptor: a FIFO (or a device) would block the control thread
     * on a reload, and libconfig reports only "file I/O error" where errno says more. */
    f = open_regular(path, &kind);
    if (!f)
        return cannot_read(err, ctx, path, kind, errno);

    /* @include "x" is relative to the config file's directory, not the cwd. */
    slash = strrchr(path, '/');
    if (slash) {
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
        incdir = slash == path ? "/" : dir;
        ld.incdir = slash == path ? "" : dir;
    }
    rc = check_includes(f, slash == path ? "" : incdir, err, ctx, 1);
    if (rc < 0) {
        fclose(f);
        return rc;
    }
    rewind(f);

    config_init(&cfg);
    if (incdir)
        config_set_include_dir(&cfg, incdir);
    errno = 0;
    if (!config_read(&cfg, f)) {
        rc = -EINVAL;
        if (config_error_type(&cfg) == CONFIG_ERR_FILE_IO) {
            rc = errno ? -errno : -EIO;
            snprintf(msg, sizeof(msg), "%s: cannot read: %s", path, strerror(-rc));
        } else {
            char fbuf[CONF_PATH_MAX * 2];

            snprintf(msg, sizeof(msg), "%s:%d: %s",
                     shown_file(&ld, config_error_file(&cfg), fbuf, sizeof(fbuf)),
                     config_error_line(&cfg), config_error_text(&cfg));
        }
        emit(err, ctx, msg);
        config_destroy(&cfg);
        fclose(f);
        return rc;
    }
    fclose(f);

    root = config_root_setting(&cfg);
    check_keys(&ld, root, "", top_keys);

    g = get_container(&ld, root, "", "daemon", CONFIG_TYPE_GROUP);
    if (g)
        load_daemon(&ld, g);
    ifs_ok = load_interfaces(&ld, root);
    /* Routes after interfaces whatever the file order: they refer to them. */
    load_routes(&ld, root, ifs_ok);
    g = get_container(&ld, root, "", "ip", CONFIG_TYPE_GROUP);
    if (g)
        load_ip(&ld, g);
    g = get_container(&ld, root, "", "arp", CONFIG_TYPE_GROUP);
    if (g)
        load_arp(&ld, g);
    load_hooks(&ld, root);
    g = get_container(&ld, root, "", "clients", CONFIG_TYPE_GROUP);
    if (g)
        load_clients(&ld, g);
    g = get_container(&ld, root, "", "udp", CONFIG_TYPE_GROUP);
    if (g)
        load_udp(&ld, g);
    g = get_container(&ld, root, "", "tcp", CONFIG_TYPE_GROUP);
    if (g)
        load_tcp(&ld, g);

    config_destroy(&cfg);
    return ld.nerr ? -EINVAL : 0;
}

/* ------------------------------------------------------------------------------------ */
/* conf_diff_static                                                                       */

struct diff {
    conf_err_fn fn;
    void *ctx;
    int n;
};

static void changed(struct diff *d, const char *key)
{
    char msg[160];

    snprintf(msg, sizeof(msg), "%s: cannot change while running; restart to apply", key);
    emit(d->fn, d->ctx, msg);
    d->n++;
}

static bool routes_equal(const struct stack_params *a, const struct stack_params *b)
{
    if (a->n_routes != b->n_routes)
        return false;
    for (uint32_t i = 0; i < a->n_routes; i++) {
        const struct route_entry *x = &a->routes[i], *y = &b->routes[i];

        if (x->dst != y->dst || x->plen != y->plen || x->via != y->via || x->ifidx != y->ifidx ||
            x->metric != y->metric || x->connected != y->connected)
            return false;
    }
    return true;
}

int conf_diff_static(const struct conf *old, const struct conf *nw, conf_err_fn report, void *ctx)
{
    struct diff d = {.fn = report, .ctx = ctx};

    if (strcmp(old->socket_path, nw->socket_path))
        changed(&d, "daemon.socket");
    if (old->workers != nw->workers)
        changed(&d, "daemon.workers");
    if (old->stack.pktbufs != nw->stack.pktbufs)
        changed(&d, "daemon.pktbufs");
    if (old->n_cpus != nw->n_cpus ||
        memcmp(old->cpus, nw->cpus, old->n_cpus * sizeof(old->cpus[0])))
        changed(&d, "daemon.cpus");

    if (old->n_ifs != nw->n_ifs) {
        changed(&d, "interfaces");
    } else {
        for (uint32_t i = 0; i < old->n_ifs; i++) {
            const struct conf_iface *a = &old->ifs[i], *b = &nw->ifs[i];
            char key[48];

#define IFDIFF(cond, field)                                                                        \
    do {                                                                                           \
        if (cond) {                                                                                \
            snprintf(key, sizeof(key), "interfaces[%u]." field, i);                                \
            changed(&d, key);                                                                      \
        }                                                                                          \
    } while (0)
            IFDIFF(strcmp(a->ip.name, b->ip.name), "name");
            IFDIFF(strcmp(a->nic.backend, b->nic.backend), "backend");
            IFDIFF(memcmp(a->ip.mac, b->ip.mac, 6), "mac");
            IFDIFF(a->ip.mtu != b->ip.mtu, "mtu");
            IFDIFF(a->ip.addr != b->ip.addr || a->ip.plen != b->ip.plen, "address");
            IFDIFF(a->ip.promiscuous != b->ip.promiscuous, "promiscuous");
            IFDIFF(a->ip.vlan != b->ip.vlan, "vlan");
            IFDIFF(a->nic.rx_ring != b->nic.rx_ring, "rx_ring");
            IFDIFF(a->nic.tx_ring != b->nic.tx_ring, "tx_ring");
            IFDIFF(a->nic.nqueues != b->nic.nqueues, "nqueues");
            IFDIFF(a->nic.xdp_mode != b->nic.xdp_mode, "xdp_mode");
            IFDIFF(a->nic.xdp_zc != b->nic.xdp_zc, "xdp_zerocopy");
            IFDIFF(a->nic.tso != b->nic.tso, "tso");
            IFDIFF(a->nic.rps != b->nic.rps || !CPU_EQUAL(&a->nic.rps_cpus, &b->nic.rps_cpus),
                   "rps_cpus");
#undef IFDIFF
            /* fault.* is a tunable: the injector is rebuilt on reload. */
        }
    }
    if (!routes_equal(&old->stack, &nw->stack))
        changed(&d, "routes");
    if (old->stack.forwarding != nw->stack.forwarding)
        changed(&d, "ip.forwarding");
    /* Table sizes: the stack allocates them once (stack_apply_tunables keeps them). */
    if (old->stack.frag_max_datagrams != nw->stack.frag_max_datagrams)
        changed(&d, "ip.frag_max_datagrams");
    if (old->stack.arp_cache_size != nw->stack.arp_cache_size)
        changed(&d, "arp.cache_size");
    if (old->stack.udp_port_min != nw->stack.udp_port_min ||
        old->stack.udp_port_max != nw->stack.udp_port_max)
        changed(&d, "udp");
    if (old->stack.tcp_max_conns != nw->stack.tcp_max_conns)
        changed(&d, "tcp.max_connections");
    /* clients.* apply to sessions attached after the reload. */
    return d.n;
}
