/* Config loader: defaults, the documented configs, every error class with its FILE:LINE,
 * and the live/static split of conf_diff_static. Run with cwd = repository root. */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf/conf.h"

#define FIX      "tests/unit/conf/"
#define MAX_MSGS 64

struct msgs {
    int n;
    char m[MAX_MSGS][512];
    char all[MAX_MSGS * 520];
};

static void collect(void *ctx, const char *msg)
{
    struct msgs *e = ctx;

    if (e->n < MAX_MSGS)
        snprintf(e->m[e->n], sizeof(e->m[0]), "%s", msg);
    e->n++;
    strncat(e->all, msg, sizeof(e->all) - strlen(e->all) - 2);
    strcat(e->all, "\n");
}

/* Some message starts with "FILE:LINE: " and contains sub. */
static bool has_msg(const struct msgs *e, const char *file, int line, const char *sub)
{
    char pfx[300];

    snprintf(pfx, sizeof(pfx), "%s:%d: ", file, line);
    for (int i = 0; i < e->n && i < MAX_MSGS; i++)
        if (!strncmp(e->m[i], pfx, strlen(pfx)) && strstr(e->m[i] + strlen(pfx), sub))
            return true;
    return false;
}

static struct conf *cf;
static struct msgs *ms;

static void setup(void)
{
    cf = calloc(1, sizeof(*cf));
    ms = calloc(1, sizeof(*ms));
    cr_assert(cf && ms);
}

static void teardown(void)
{
    free(cf);
    free(ms);
}

static int load(const char *path)
{
    return conf_load(cf, path, collect, ms);
}

/* Write text to a fresh temporary .conf file; the caller unlinks it. */
static char *tmpconf(const char *text)
{
    char *path = strdup("/tmp/shmnet_test_conf_XXXXXX.conf");
    int fd = mkstemps(path, 5);
    FILE *f;

    cr_assert(fd >= 0);
    f = fdopen(fd, "w");
    cr_assert(f);
    fputs(text, f);
    fclose(f);
    return path;
}

/* Load text from a temporary file; returns conf_load's result, path in *pathp (freed). */
static int load_text(const char *text, char **pathp)
{
    char *p = tmpconf(text);
    int rc = load(p);

    unlink(p);
    *pathp = p;
    return rc;
}

#define IF0 "interfaces = ( { name = \"shm0\"; address = \"10.200.0.2/24\"; } );\n"

#define EXPECT_ERR(file, line, sub)                                                                \
    cr_assert(has_msg(ms, file, line, sub), "expected %s:%d: ...%s... in:\n%s", file, line, sub,   \
              ms->all)

TestSuite(conf, .init = setup, .fini = teardown);

/* ---- defaults and good configs ---- */

Test(conf, defaults)
{
    conf_defaults(cf);
    cr_assert_str_eq(cf->socket_path, "/run/shmnet/shmnetd.sock");
    cr_assert_eq(cf->workers, 1);
    cr_assert_eq(cf->busy_poll_us, 50);
    cr_assert_eq(cf->rx_budget, 64);
    cr_assert_eq(cf->log_level, LOG_LVL_INFO);
    cr_assert_str_eq(cf->capture, "");
    cr_assert_eq(cf->n_uids, 1);
    cr_assert_eq(cf->allowed_uids[0], 0);
    cr_assert_eq(cf->n_cpus, 0);
    cr_assert_eq(cf->ctl_max_per_uid, 64);
    cr_assert_eq(cf->ctl_max_output, 1u << 20);
    cr_assert_eq(cf->n_ifs, 0);
    cr_assert_eq(cf->stack.pktbufs, 8192);
    cr_assert_eq(cf->stack.large_pktbufs, 32);
    cr_assert_not(cf->stack.forwarding);
    cr_assert_eq(cf->stack.default_ttl, 64);
    cr_assert_eq(cf->stack.frag_timeout_ms, 30000);
    cr_assert_eq(cf->stack.frag_max_bytes, 4u << 20);
    cr_assert_eq(cf->stack.icmp_ratelimit_pps, 1000);
    cr_assert_eq(cf->stack.arp_cache_size, 1024);
    cr_assert_eq(cf->stack.arp_retries, 3);
    cr_assert(cf->stack.arp_gratuitous);
    cr_assert_eq(cf->stack.n_routes, 0);
    cr_assert_eq(cf->stack.n_rules, 0);
}

Test(conf, minimal_design_config)
{
    const struct conf_iface *i;
    const struct route_entry *r;

    cr_assert_eq(load(FIX "minimal.conf"), 0, "%s", ms->all);
    cr_assert_eq(ms->n, 0);
    cr_assert_str_eq(cf->path, FIX "minimal.conf");
    cr_assert_str_eq(cf->socket_path, "/run/shmnet/shmnetd.sock");
    cr_assert_eq(cf->n_ifs, 1);
    i = &cf->ifs[0];
    cr_assert_str_eq(i->ip.name, "shm0");
    cr_assert_str_eq(i->nic.name, "shm0");
    cr_assert_str_eq(i->nic.backend, "tap");
    cr_assert_arr_eq(i->ip.mac, ((uint8_t[]){2, 0, 0, 0, 0, 2}), 6);
    cr_assert_arr_eq(i->nic.mac, i->ip.mac, 6);
    cr_assert_eq(i->ip.mtu, 1500);
    cr_assert_eq(i->nic.mtu, 1500);
    cr_assert_eq(i->ip.addr, 0x0ac80002);
    cr_assert_eq(i->ip.plen, 24);
    cr_assert_not(i->ip.promiscuous);
    cr_assert_eq(i->ip.vlan, 0);
    cr_assert_eq(i->nic.nqueues, 1);
    cr_assert_eq(i->nic.rx_ring, 256);
    cr_assert_eq(i->nic.tx_ring, 256);
    cr_assert_not(i->nic.fault.enabled);
    cr_assert_eq(i->nic.fault.seed, 1);
    cr_assert(i->nic.fault.rx && i->nic.fault.tx);
    cr_assert_eq(cf->stack.n_routes, 1);
    r = &cf->stack.routes[0];
    cr_assert_eq(r->dst, 0);
    cr_assert_eq(r->plen, 0);
    cr_assert_eq(r->via, 0x0ac80001);
    cr_assert_eq(r->ifidx, 0, "gateway resolved to the interface whose subnet holds it");
    cr_assert_eq(r->metric, 0);
    cr_assert_not(r->connected);
    /* Everything not in the file keeps its default. */
    cr_assert_eq(cf->workers, 1);
    cr_assert_eq(cf->stack.pktbufs, 8192);
    cr_assert_eq(cf->stack.arp_queue_len, 101);
}

Test(conf, shipped_config_loads)
{
    cr_assert_eq(load("conf/shmnetd.conf"), 0, "%s", ms->all);
    cr_assert_eq(ms->n, 0);
    cr_assert_eq(cf->n_ifs, 1);
    cr_assert_str_eq(cf->ifs[0].ip.name, "shm0");
    cr_assert_eq(cf->stack.n_routes, 1);
    /* The shipped file documents the defaults: it must not change any. */
    cr_assert_eq(cf->workers, 1);
    cr_assert_eq(cf->busy_poll_us, 50);
    cr_assert_eq(cf->stack.default_ttl, 64);
    cr_assert_eq(cf->stack.n_rules, 0);
}

Test(conf, every_key)
{
    const struct conf_iface *a, *b;
    const struct route_entry *r;
    const struct hook_rule *h;

    cr_assert_eq(load(FIX "full.conf"), 0, "%s", ms->all);
    cr_assert_str_eq(cf->socket_path, "/tmp/shmnet-test.sock");
    cr_assert_eq(cf->workers, 4);
    cr_assert_eq(cf->busy_poll_us, 0);
    cr_assert_eq(cf->rx_budget, 128);
    cr_assert_eq(cf->log_level, LOG_LVL_DEBUG);
    cr_assert_eq(cf->stack.pktbufs, 16384);
    cr_assert_str_eq(cf->capture, "/tmp/shmnet-test.pcap");
    cr_assert_eq(cf->n_uids, 2);
    cr_assert_eq(cf->allowed_uids[0], 0);
    cr_assert_eq(cf->allowed_uids[1], 1234);
    cr_assert_eq(cf->n_gids, 2);
    cr_assert_eq(cf->allowed_gids[0], 0);
    cr_assert_eq(cf->allowed_gids[1], 4321);
    cr_assert_eq(cf->n_cpus, 3);
    cr_assert_eq(cf->cpus[2], 1023);

    cr_assert_eq(cf->n_ifs, 2);
    a = &cf->ifs[0];
    cr_assert_str_eq(a->nic.backend, "sim");
    cr_assert_arr_eq(a->ip.mac, ((uint8_t[]){0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee}), 6);
    cr_assert_eq(a->ip.mtu, 9000);
    cr_assert_eq(a->nic.mtu, 9000);
    cr_assert_eq(a->ip.addr, 0xc0a80701);
    cr_assert_eq(a->ip.plen, 31);
    cr_assert(a->ip.promiscuous);
    cr_assert_eq(a->ip.vlan, 42);
    cr_assert_eq(a->nic.rx_ring, 1024);
    cr_assert_eq(a->nic.tx_ring, 16);
    cr_assert(a->nic.fault.enabled);
    cr_assert_float_eq(a->nic.fault.loss, 0.25, 1e-9);
    cr_assert_float_eq(a->nic.fault.duplicate, 1.0, 1e-9);
    cr_assert_float_eq(a->nic.fault.reorder, 0.5, 1e-9);
    cr_assert_float_eq(a->nic.fault.corrupt, 0.0, 1e-9);
    cr_assert_eq(a->nic.fault.delay_us, 100);
    cr_assert_eq(a->nic.fault.jitter_us, 20);
    cr_assert_eq(a->nic.fault.seed, 12345678901ull);
    cr_assert(!a->nic.fault.rx && a->nic.fault.tx);

    b = &cf->ifs[1];
    cr_assert_str_eq(b->nic.backend, "tap");
    cr_assert_eq(b->ip.mac[0], 0x02, "default MAC is locally administered unicast");
    cr_assert_arr_neq(b->ip.mac, a->ip.mac, 6);
    cr_assert_eq(b->nic.fault.seed, 7);
    cr_assert_not(b->nic.fault.enabled, "a seed alone does not enable the injector");

    cr_assert_eq(cf->stack.n_routes, 4);
    r = &cf->stack.routes[0];
    cr_assert_eq(r->via, 0x0a01fffe);
    cr_assert_eq(r->ifidx, 1);
    r = &cf->stack.routes[1];
    cr_assert_eq(r->dst, 0xac100000);
    cr_assert_eq(r->plen, 12);
    cr_assert_eq(r->ifidx, 0);
    cr_assert_eq(r->metric, 10);
    r = &cf->stack.routes[2];
    cr_assert_eq(r->dst, 0x0a090909);
    cr_assert_eq(r->plen, 32);
    cr_assert_eq(r->via, 0);
    cr_assert_eq(r->ifidx, 1);
    r = &cf->stack.routes[3];
    cr_assert_eq(r->via, 0, "via 0.0.0.0 is on-link");
    cr_assert_eq(r->ifidx, 1);
    cr_assert_eq(r->metric, 5);

    cr_assert(cf->stack.forwarding);
    cr_assert_eq(cf->stack.default_ttl, 32);
    cr_assert_eq(cf->stack.frag_timeout_ms, 5000);
    cr_assert_eq(cf->stack.frag_max_datagrams, 8);
    cr_assert_eq(cf->stack.frag_max_bytes, 65536);
    cr_assert_eq(cf->stack.icmp_ratelimit_pps, 0);
    cr_assert_eq(cf->stack.arp_cache_size, 16);
    cr_assert_eq(cf->stack.arp_reachable_ms, 1000);
    cr_assert_eq(cf->stack.arp_stale_ms, 2000);
    cr_assert_eq(cf->stack.arp_retry_ms, 100);
    cr_assert_eq(cf->stack.arp_retries, 1);
    cr_assert_eq(cf->stack.arp_queue_len, 1);
    cr_assert_not(cf->stack.arp_gratuitous);

    cr_assert_eq(cf->stack.n_rules, 3);
    h = &cf->stack.rules[0];
    cr_assert_eq(h->point, HOOK_LOCAL_IN);
    cr_assert_eq(h->action, HOOK_DROP);
    cr_assert_eq(h->proto, 1);
    cr_assert_eq(h->src, 0x0a090000);
    cr_assert_eq(h->src_plen, 16);
    cr_assert_eq(h->dst, 0x0ac80002);
    cr_assert_eq(h->dst_plen, 32);
    h = &cf->stack.rules[1];
    cr_assert_eq(h->point, HOOK_POSTROUTING);
    cr_assert_eq(h->action, HOOK_ACCEPT);
    cr_assert_eq(h->proto, 132);
    cr_assert_eq(h->src, 0x01020304);
    cr_assert_eq(h->src_plen, 32, "a bare address is a /32");
    cr_assert_eq(h->dst_plen, 0, "absent dst matches any");
    cr_assert_eq(h->rate_pps, 100);
    h = &cf->stack.rules[2];
    cr_assert_eq(h->point, HOOK_FORWARD);
    cr_assert_eq(h->proto, 0);
}

/* ---- each error class, with its line ---- */

Test(conf, syntax_error_has_line)
{
    cr_assert_eq(load(FIX "err_syntax.conf"), -EINVAL);
    cr_assert_eq(ms->n, 1, "%s", ms->all);
    EXPECT_ERR(FIX "err_syntax.conf", 3, "syntax error");
}

Test(conf, missing_file)
{
    cr_assert_eq(load(FIX "does_not_exist.conf"), -ENOENT);
    cr_assert_eq(ms->n, 1);
    cr_assert(strstr(ms->m[0], FIX "does_not_exist.conf: "), "%s", ms->all);
    cr_assert(strstr(ms->m[0], "No such file"), "%s", ms->all);
}

/* A FIFO would block the reader until a writer comes (a reload would hang the control
 * thread): refused at once, like a directory or a device. */
Test(conf, not_a_regular_file, .timeout = 10)
{
    char dir[] = "/tmp/shmnet_conf_fifo_XXXXXX";
    char fifo[64], msg[128];

    cr_assert(mkdtemp(dir));
    snprintf(fifo, sizeof(fifo), "%s/fifo.conf", dir);
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    cr_assert_eq(load(fifo), -EINVAL);
    cr_assert_eq(ms->n, 1, "%s", ms->all);
    snprintf(msg, sizeof(msg), "%s: cannot read: a FIFO, not a regular file", fifo);
    cr_assert_str_eq(ms->m[0], msg);

    memset(ms, 0, sizeof(*ms));
    cr_assert_eq(load(dir), -EINVAL);
    snprintf(msg, sizeof(msg), "%s: cannot read: a directory, not a regular file", dir);
    cr_assert_str_eq(ms->m[0], msg);

    memset(ms, 0, sizeof(*ms));
    cr_assert_eq(load("/dev/zero"), -EINVAL);
    cr_assert_str_eq(ms->m[0], "/dev/zero: cannot read: a character device, not a regular file");
    unlink(fifo);
    rmdir(dir);
}

/* libconfig opens included files itself: a FIFO there is refused before it would. */
Test(conf, include_not_a_regular_file, .timeout = 10)
{
    char dir[] = "/tmp/shmnet_conf_incfifo_XXXXXX";
    char main_path[64], mid_path[64], fifo[64], msg[160];
    FILE *f;

    cr_assert(mkdtemp(dir));
    snprintf(main_path, sizeof(main_path), "%s/main.conf", dir);
    snprintf(mid_path, sizeof(mid_path), "%s/mid.conf", dir);
    snprintf(fifo, sizeof(fifo), "%s/fifo.conf", dir);
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    /* Nested: main includes mid, which includes the FIFO. */
    f = fopen(mid_path, "w");
    fputs("  @include \"fifo.conf\"\n", f);
    fclose(f);
    f = fopen(main_path, "w");
    fputs(IF0 "@include \"mid.conf\"\n", f);
    fclose(f);
    cr_assert_eq(load(main_path), -EINVAL);
    cr_assert_eq(ms->n, 1, "%s", ms->all);
    snprintf(msg, sizeof(msg), "%s: cannot read: a FIFO, not a regular file", fifo);
    cr_assert_str_eq(ms->m[0], msg);
    /* A regular file there loads. */
    unlink(fifo);
    f = fopen(fifo, "w");
    fputs("ip = { default_ttl = 7; };\n", f);
    fclose(f);
    memset(ms, 0, sizeof(*ms));
    cr_assert_eq(load(main_path), 0, "%s", ms->all);
    cr_assert_eq(cf->stack.default_ttl, 7);
    unlink(fifo);
    unlink(mid_path);
    unlink(main_path);
    rmdir(dir);
}

Test(conf, unknown_key)
{
    cr_assert_eq(load(FIX "err_unknown.conf"), -EINVAL);
    cr_assert_eq(ms->n, 1, "%s", ms->all);
    EXPECT_ERR(FIX "err_unknown.conf", 4, "unknown key 'x' in group 'ip'");
}

Test(conf, wrong_type)
{
    cr_assert_eq(load(FIX "err_type.conf"), -EINVAL);
    cr_assert_eq(ms->n, 1, "%s", ms->all);
    EXPECT_ERR(FIX "err_type.conf", 4, "interfaces[0].mtu: expected an integer, got a string");
}

Test(conf, bad_address)
{
    cr_assert_eq(load(FIX "err_address.conf"), -EINVAL);
    cr_assert_eq(ms->n, 1, "%s", ms->all);
    EXPECT_ERR(FIX "err_address.conf", 3, "interfaces[0].address: '10.200.0.300/24' is not");
}

Test(conf, bad_prefix)
{
    cr_assert_eq(load(FIX "err_prefix.conf"), -EINVAL);
    cr_assert_eq(ms->n, 1, "%s", ms->all);
    EXPECT_ERR(FIX "err_prefix.conf", 4, "prefix length must be 1..32");
}

Test(conf, bad_mac)
{
    cr_assert_eq(load(FIX "err_mac.conf"), -EINVAL);
    cr_assert_eq(ms->n, 1, "%s", ms->all);
    EXPECT_ERR(FIX "err_mac.conf", 3, "interfaces[0].mac: '02:00:00:00:0g:02' is not a MAC");
}

Test(conf, multicast_mac)
{
    cr_assert_eq(load(FIX "err_mac_mcast.conf"), -EINVAL);
    cr_assert_eq(ms->n, 1, "%s", ms->all);
    EXPECT_ERR(FIX "err_mac_mcast.conf", 4, "multicast");
}

Test(conf, out_of_range)
{
    cr_assert_eq(load(FIX "err_range.conf"), -EINVAL);
    cr_assert_eq(ms->n, 1, "%s", ms->all);
    EXPECT_ERR(FIX "err_range.conf", 3, "daemon.workers: 65 is out of range 1..8");
}

Test(conf, duplicate_interface_name)
{
    cr_assert_eq(load(FIX "err_dup_name.conf"), -EINVAL);
    cr_assert_eq(ms->n, 1, "%s", ms->all);
    EXPECT_ERR(FIX "err_dup_name.conf", 4, "duplicate interface name 'shm0'");
}

Test(conf, unreachable_gateway)
{
    cr_assert_eq(load(FIX "err_gateway.conf"), -EINVAL);
    cr_assert_eq(ms->n, 1, "%s", ms->all);
    EXPECT_ERR(FIX "err_gateway.conf", 5, "gateway 10.99.0.1 is not in the subnet of any");
}

Test(conf, bad_hook_point)
{
    cr_assert_eq(load(FIX "err_hook_point.conf"), -EINVAL);
    cr_assert_eq(ms->n, 1, "%s", ms->all);
    EXPECT_ERR(FIX "err_hook_point.conf", 4, "hooks[1].point: 'input' is not one of");
}

Test(conf, all_errors_reported)
{
    const char *f = FIX "err_multi.conf";

    cr_assert_eq(load(f), -EINVAL);
    EXPECT_ERR(f, 2, "daemon.workers: 0 is out of range");
    EXPECT_ERR(f, 3, "daemon.log_level: 'loud'");
    EXPECT_ERR(f, 4, "unknown key 'colour' in group 'daemon'");
    EXPECT_ERR(f, 7, "is the network address");
    EXPECT_ERR(f, 7, "multicast");
    EXPECT_ERR(f, 8, "rx_ring: 100 is not a power of two");
    EXPECT_ERR(f, 10, "routes[0].to: '10.0.0.1/8' has host bits set (did you mean 10.0.0.0/8?)");
    EXPECT_ERR(f, 11, "arp.retries: expected an integer, got a string");
    EXPECT_ERR(f, 12, "hooks[0].action: 'reject'");
    EXPECT_ERR(f, 12, "hooks[0].proto: 'sctp'");
    cr_assert_eq(ms->n, 10, "exactly the errors above:\n%s", ms->all);
}

Test(conf, null_callback_prints_and_fails)
{
    /* err = NULL goes to stderr; the result must still be the failure. */
    cr_redirect_stderr();
    cr_assert_eq(conf_load(cf, FIX "err_range.conf", NULL, NULL), -EINVAL);
    fflush(stderr);
    cr_assert_stderr_eq_str(FIX "err_range.conf:3: daemon.workers: 65 is out of range 1..8\n");
}

/* ---- more error classes from generated files ---- */

Test(conf, missing_interfaces)
{
    char *p;

    cr_assert_eq(load_text("daemon = { workers = 2; };\n", &p), -EINVAL);
    EXPECT_ERR(p, 1, "missing required list 'interfaces'");
    free(p);
    memset(ms, 0, sizeof(*ms));
    cr_assert_eq(load_text("\ninterfaces = ();\n", &p), -EINVAL);
    EXPECT_ERR(p, 2, "at least one interface");
    free(p);
}

Test(conf, interface_required_keys_and_names)
{
    char *p;

    cr_assert_eq(load_text("interfaces = (\n { address = \"10.0.0.1/8\"; },\n"
                           " { name = \"shm1\"; },\n"
                           " { name = \"a-name-way-too-long\"; address = \"10.2.0.1/16\"; },\n"
                           " { name = \"\"; address = \"10.3.0.1/16\"; }\n);\n",
                           &p),
                 -EINVAL);
    EXPECT_ERR(p, 2, "interfaces[0]: missing required key 'name'");
    EXPECT_ERR(p, 3, "interfaces[1]: missing required key 'address'");
    EXPECT_ERR(p, 4, "longer than 15");
    EXPECT_ERR(p, 5, "interfaces[3].name: must not be empty");
    cr_assert_eq(ms->n, 4, "%s", ms->all);
    free(p);
}

Test(conf, interface_addresses)
{
    static const struct {
        const char *addr, *msg;
    } cases[] = {
        {"10.200.0.255/24", "broadcast address"},
        {"10.200.0.0/24", "network address"},
        {"0.0.0.0/8", "unspecified"},
        {"127.0.0.1/8", "loopback"},
        {"224.0.0.5/24", "multicast"},
        {"10.0.0.1/33", "is not an IPv4 address with prefix"},
        {"10.0.0.1/", "is not an IPv4 address with prefix"},
        {"10.0.0.1", "needs a prefix length"},
        {"10.0.01.1/8", "is not an IPv4 address with prefix"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[200], *p;

        memset(ms, 0, sizeof(*ms));
        snprintf(text, sizeof(text), "interfaces = (\n { name = \"s\";\n address = \"%s\"; }\n);\n",
                 cases[i].addr);
        cr_assert_eq(load_text(text, &p), -EINVAL, "%s accepted", cases[i].addr);
        EXPECT_ERR(p, 3, cases[i].msg);
        cr_assert_eq(ms->n, 1, "%s", ms->all);
        free(p);
    }
}

Test(conf, point_to_point_prefixes_are_fine)
{
    char *p;

    /* /31 and /32 have no network or broadcast address. */
    cr_assert_eq(load_text("interfaces = ( { name = \"a\"; address = \"10.0.0.0/31\"; },\n"
                           " { name = \"b\"; address = \"10.1.0.255/32\"; } );\n",
                           &p),
                 0, "%s", ms->all);
    free(p);
}

Test(conf, interface_values)
{
    char *p;

    cr_assert_eq(
        load_text("interfaces = ( {\n"
                  " name = \"s\"; address = \"10.0.0.1/8\";\n"
                  " backend = \"xdp\";\n"
                  " mac = \"00:00:00:00:00:00\";\n"
                  " mtu = 575;\n"
                  " vlan = 4095;\n"
                  " tx_ring = 8192;\n"
                  " promiscuous = 1;\n"
                  " fault = { loss = 1.5; direction = \"up\"; delay_us = -1; bogus = 0; };\n"
                  " backend2 = \"x\";\n"
                  "} );\n",
                  &p),
        -EINVAL);
    EXPECT_ERR(p, 3, "'xdp' is not one of tap, sim, af_xdp");
    EXPECT_ERR(p, 4, "all-zero");
    EXPECT_ERR(p, 5, "interfaces[0].mtu: 575 is out of range 576..9000");
    EXPECT_ERR(p, 6, "interfaces[0].vlan: 4095 is out of range 0..4094");
    EXPECT_ERR(p, 7, "interfaces[0].tx_ring: 8192 is out of range 16..4096");
    EXPECT_ERR(p, 8, "interfaces[0].promiscuous: expected a boolean");
    EXPECT_ERR(p, 9, "interfaces[0].fault.loss: 1.5 is out of range 0..1");
    EXPECT_ERR(p, 9, "interfaces[0].fault.direction: 'up'");
    EXPECT_ERR(p, 9, "interfaces[0].fault.delay_us: -1 is out of range");
    EXPECT_ERR(p, 9, "unknown key 'bogus' in group 'interfaces[0].fault'");
    EXPECT_ERR(p, 10, "unknown key 'backend2' in group 'interfaces[0]'");
    cr_assert_eq(ms->n, 11, "%s", ms->all);
    free(p);
}

Test(conf, af_xdp_backend)
{
    char *p;

    cr_assert_eq(load_text("interfaces = ( { name = \"veth0\"; address = \"10.0.0.2/24\";\n"
                           " backend = \"af_xdp\"; xdp_mode = \"native\"; } );\n",
                           &p),
                 0, "%s", ms->all);
    free(p);
    cr_assert_str_eq(cf->ifs[0].nic.backend, "af_xdp");
    cr_assert_eq(cf->ifs[0].nic.xdp_mode, NIC_XDP_NATIVE);
    cr_assert_eq(cf->ifs[0].nic.addr, 0x0a000002u);

    cr_assert_eq(load_text("interfaces = ( { name = \"veth0\"; address = \"10.0.0.2/24\";\n"
                           " backend = \"af_xdp\"; } );\n",
                           &p),
                 0, "%s", ms->all);
    free(p);
    cr_assert_eq(cf->ifs[0].nic.xdp_mode, NIC_XDP_AUTO);

    cr_assert_eq(load_text("interfaces = ( { name = \"veth0\"; address = \"10.0.0.2/24\";\n"
                           " backend = \"af_xdp\";\n"
                           " xdp_mode = \"zerocopy\"; } );\n",
                           &p),
                 -EINVAL);
    EXPECT_ERR(p, 3, "interfaces[0].xdp_mode: 'zerocopy' is not one of auto, copy, native");
    free(p);

    cr_assert_eq(load_text("interfaces = ( { name = \"shm0\"; address = \"10.0.0.2/24\";\n"
                           " xdp_mode = \"copy\"; } );\n",
                           &p),
                 -EINVAL);
    EXPECT_ERR(p, 2, "interfaces[0].xdp_mode: only the af_xdp backend has it");
    free(p);
}

Test(conf, af_xdp_zerocopy_and_rings)
{
    char *p;

    /* Defaults: zero-copy where the driver can, a deep RX ring (the only burst buffer). */
    cr_assert_eq(load_text("interfaces = ( { name = \"veth0\"; address = \"10.0.0.2/24\";\n"
                           " backend = \"af_xdp\"; } );\n",
                           &p),
                 0, "%s", ms->all);
    free(p);
    cr_assert_eq(cf->ifs[0].nic.xdp_zc, NIC_XDP_ZC_AUTO);
    cr_assert_eq(cf->ifs[0].nic.rx_ring, 2048);
    cr_assert_eq(cf->ifs[0].nic.tx_ring, 256);

    cr_assert_eq(load_text("interfaces = ( { name = \"veth0\"; address = \"10.0.0.2/24\";\n"
                           " backend = \"af_xdp\"; xdp_zerocopy = \"off\"; rx_ring = 512; } );\n",
                           &p),
                 0, "%s", ms->all);
    free(p);
    cr_assert_eq(cf->ifs[0].nic.xdp_zc, NIC_XDP_ZC_OFF);
    cr_assert_eq(cf->ifs[0].nic.rx_ring, 512);

    cr_assert_eq(load_text("interfaces = ( { name = \"veth0\"; address = \"10.0.0.2/24\";\n"
                           " backend = \"af_xdp\"; xdp_mode = \"copy\";\n"
                           " xdp_zerocopy = \"on\"; } );\n",
                           &p),
                 -EINVAL);
    EXPECT_ERR(p, 3,
               "interfaces[0].xdp_zerocopy: \"on\" needs the driver: not with xdp_mode = \"copy\"");
    free(p);

    cr_assert_eq(load_text("interfaces = ( { name = \"veth0\"; address = \"10.0.0.2/24\";\n"
                           " backend = \"af_xdp\"; xdp_zerocopy = \"yes\"; } );\n",
                           &p),
                 -EINVAL);
    EXPECT_ERR(p, 2, "interfaces[0].xdp_zerocopy: 'yes' is not one of auto, on, off");
    free(p);

    cr_assert_eq(load_text("interfaces = ( { name = \"shm0\"; address = \"10.0.0.2/24\";\n"
                           " xdp_zerocopy = \"off\"; } );\n",
                           &p),
                 -EINVAL);
    EXPECT_ERR(p, 2, "interfaces[0].xdp_zerocopy: only the af_xdp backend has it");
    free(p);
    /* The TAP keeps its shallow default: the kernel queues in front of it. */
    cr_assert_eq(
        load_text("interfaces = ( { name = \"shm0\"; address = \"10.0.0.2/24\"; } );\n", &p), 0,
        "%s", ms->all);
    free(p);
    cr_assert_eq(cf->ifs[0].nic.rx_ring, 256);
}

/* Load one interface with the given extra keys (line 2 of the file). */
static int load_if(const char *backend, const char *extra, char **pathp)
{
    char text[512];

    snprintf(text, sizeof(text),
             "interfaces = ( { name = \"shm0\"; address = \"10.0.0.2/24\"; backend = \"%s\";\n"
             " %s } );\n",
             backend, extra);
    return load_text(text, pathp);
}

/* rps_cpus: "auto" unless set; "off"; a CPU list for the TAP only. */
Test(conf, rps_cpus)
{
    static const struct {
        const char *backend, *extra, *err;
    } bad[] = {
        {"tap", "rps_cpus = \"all\";",
         "interfaces[0].rps_cpus: 'all' is not auto, off or an array of CPUs"},
        {"tap", "rps_cpus = [ 0, 2048 ];",
         "interfaces[0].rps_cpus[1]: 2048 is out of range 0..1023"},
        {"tap", "rps_cpus = [ ];", "interfaces[0].rps_cpus: empty"},
        {"af_xdp", "rps_cpus = [ 1 ];", "interfaces[0].rps_cpus: only the tap backend has it"},
    };
    char *p;

    cr_assert_eq(load_text(IF0, &p), 0, "%s", ms->all);
    free(p);
    cr_assert_eq(cf->ifs[0].nic.rps, NIC_RPS_AUTO);
    cr_assert_eq(CPU_COUNT(&cf->ifs[0].nic.rps_cpus), 0);

    cr_assert_eq(load_if("tap", "rps_cpus = [ 1, 3 ];", &p), 0, "%s", ms->all);
    free(p);
    cr_assert_eq(cf->ifs[0].nic.rps, NIC_RPS_LIST);
    cr_assert_eq(CPU_COUNT(&cf->ifs[0].nic.rps_cpus), 2);
    cr_assert(CPU_ISSET(1, &cf->ifs[0].nic.rps_cpus) && CPU_ISSET(3, &cf->ifs[0].nic.rps_cpus));

    cr_assert_eq(load_if("tap", "rps_cpus = \"off\";", &p), 0, "%s", ms->all);
    free(p);
    cr_assert_eq(cf->ifs[0].nic.rps, NIC_RPS_OFF);

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(load_if(bad[i].backend, bad[i].extra, &p), -EINVAL, "%s", bad[i].extra);
        EXPECT_ERR(p, 2, bad[i].err);
        free(p);
    }
}

Test(conf, workers)
{
    char *p;

    cr_assert_eq(load_text("daemon = { workers = 2; };\n"
                           "interfaces = ( { name = \"shm0\"; address = \"10.0.0.2/24\"; } );\n",
                           &p),
                 0, "%s", ms->all);
    free(p);
    cr_assert_eq(cf->workers, 2);
    cr_assert_eq(load_text("daemon = { workers = 9; };\n"
                           "interfaces = ( { name = \"shm0\"; address = \"10.0.0.2/24\"; } );\n",
                           &p),
                 -EINVAL);
    EXPECT_ERR(p, 1, "daemon.workers: 9 is out of range");
    free(p);
    cr_assert_eq(load_text("daemon = { workers = 2; };\n"
                           "interfaces = ( { name = \"veth0\"; address = \"10.0.0.2/24\";\n"
                           " backend = \"af_xdp\"; } );\n",
                           &p),
                 0, "%s", ms->all); /* one AF_XDP socket per worker's queue */
    free(p);
    cr_assert_eq(cf->workers, 2);
}

Test(conf, too_many_interfaces)
{
    char text[2048] = "interfaces = (\n", *p;

    for (int i = 0; i < 9; i++) {
        char line[128];

        snprintf(line, sizeof(line), " { name = \"s%d\"; address = \"10.%d.0.1/16\"; }%s\n", i, i,
                 i < 8 ? "," : "");
        strcat(text, line);
    }
    strcat(text, ");\n");
    cr_assert_eq(load_text(text, &p), -EINVAL);
    EXPECT_ERR(p, 10, "at most 8 interfaces");
    free(p);
}

Test(conf, route_errors)
{
    char *p;

    cr_assert_eq(load_text(IF0 "routes = (\n"
                               " { to = \"10.9.0.0/16\"; },\n"                 /* 3 */
                               " { to = \"10.9.0.0/16\"; dev = \"nope\"; },\n" /* 4 */
                               " { to = \"10.9.0.0/16\"; via = \"10.1.1.1\"; dev = \"shm0\"; },\n"
                               " { to = \"10.9.0.0/16\"; via = \"10.200.0.2\"; },\n" /* 6 */
                               " { to = \"10.9.0.0/99\"; dev = \"shm0\"; },\n"       /* 7 */
                               " { via = \"10.200.0.1\"; },\n"                       /* 8 */
                               " { to = \"0.0.0.0/0\"; via = \"10.200.0.1\"; metric = -1; },\n"
                               " { to = \"0.0.0.0/0\"; via = \"10.200.0.1\"; },\n" /* 10 */
                               " { to = \"0.0.0.0/0\"; via = \"10.200.0.3\"; }\n"  /* 11 */
                               ");\n",
                           &p),
                 -EINVAL);
    EXPECT_ERR(p, 3, "routes[0]: an on-link route (no 'via') needs 'dev'");
    EXPECT_ERR(p, 4, "routes[1].dev: no interface named 'nope'");
    EXPECT_ERR(p, 5, "routes[2].via: gateway 10.1.1.1 is not in the subnet of 'shm0'");
    EXPECT_ERR(p, 6, "routes[3].via: gateway 10.200.0.2 is our own address");
    EXPECT_ERR(p, 7, "routes[4].to: '10.9.0.0/99' is not an IPv4 prefix");
    EXPECT_ERR(p, 8, "routes[5]: missing required key 'to'");
    EXPECT_ERR(p, 9, "routes[6].metric: -1 is out of range");
    EXPECT_ERR(p, 11, "routes[8]: duplicate route to 0.0.0.0/0 with metric 0");
    cr_assert_eq(ms->n, 8, "%s", ms->all);
    free(p);
}

Test(conf, gateway_check_skipped_when_interfaces_are_wrong)
{
    char *p;

    /* A bad interface must not cascade into "gateway unreachable" errors. */
    cr_assert_eq(load_text("interfaces = ( { name = \"s\"; address = \"10.0.0.0/8\"; } );\n"
                           "routes = ( { to = \"0.0.0.0/0\"; via = \"10.0.0.1\"; } );\n",
                           &p),
                 -EINVAL);
    cr_assert_eq(ms->n, 1, "%s", ms->all);
    EXPECT_ERR(p, 1, "network address");
    free(p);
}

Test(conf, hook_errors)
{
    char *p;

    cr_assert_eq(load_text(IF0
                           "hooks = (\n"
                           " { action = \"drop\"; },\n"   /* 3 */
                           " { point = \"forward\"; },\n" /* 4 */
                           " { point = \"forward\"; action = \"drop\"; proto = 256; },\n"
                           " { point = \"forward\"; action = \"drop\"; src = \"10.0.0.1/8\"; },\n"
                           " { point = \"forward\"; action = \"drop\"; dst = \"nowhere\"; },\n"
                           " { point = \"forward\"; action = \"drop\"; proto = 1.5; }\n"
                           ");\n",
                           &p),
                 -EINVAL);
    EXPECT_ERR(p, 3, "hooks[0]: missing required key 'point'");
    EXPECT_ERR(p, 4, "hooks[1]: missing required key 'action'");
    EXPECT_ERR(p, 5, "hooks[2].proto: 256 is out of range 0..255");
    EXPECT_ERR(p, 6, "hooks[3].src: '10.0.0.1/8' has host bits set");
    EXPECT_ERR(p, 7, "hooks[4].dst: 'nowhere' is not an IPv4 address");
    EXPECT_ERR(p, 8, "hooks[5].proto: expected a protocol name or number, got a float");
    cr_assert_eq(ms->n, 6, "%s", ms->all);
    cr_assert_eq(cf->stack.n_rules, 0);
    free(p);
}

Test(conf, daemon_errors)
{
    char *p;
    char text[1024];
    char longpath[200];

    memset(longpath, 'a', sizeof(longpath) - 1);
    longpath[0] = '/';
    longpath[sizeof(longpath) - 1] = '\0';
    snprintf(text, sizeof(text),
             IF0 "daemon = {\n"
                 " socket = \"%s\";\n" /* 3 */
                 " allowed_users = [ \"no-such-user-xyzzy\" ];\n"
                 " allowed_groups = [ \"no-such-group-xyzzy\" ];\n"
                 " cpus = [ 0, 1024 ];\n" /* 6 */
                 " rx_budget = 0;\n"      /* 7 */
                 " busy_poll_us = 1.5;\n" /* 8 */
                 " pktbufs = 100;\n"      /* 9 */
                 "};\n"
                 "ip = { default_ttl = 0; forwarding = \"yes\"; };\n" /* 11 */
                 "arp = 5;\n"                                         /* 12 */
                 "extra = 1;\n",
             longpath);
    cr_assert_eq(load_text(text, &p), -EINVAL);
    EXPECT_ERR(p, 3, "daemon.socket: path is 199 bytes, at most 107");
    EXPECT_ERR(p, 4, "daemon.allowed_users[0]: unknown user 'no-such-user-xyzzy'");
    EXPECT_ERR(p, 5, "daemon.allowed_groups[0]: unknown group 'no-such-group-xyzzy'");
    EXPECT_ERR(p, 6, "daemon.cpus[1]: 1024 is out of range 0..1023");
    EXPECT_ERR(p, 7, "daemon.rx_budget: 0 is out of range 1..4096");
    EXPECT_ERR(p, 8, "daemon.busy_poll_us: expected an integer, got a float");
    EXPECT_ERR(p, 9, "daemon.pktbufs: 100 is out of range 256..1048576");
    EXPECT_ERR(p, 11, "ip.default_ttl: 0 is out of range 1..255");
    EXPECT_ERR(p, 11, "ip.forwarding: expected a boolean");
    EXPECT_ERR(p, 12, "arp: expected a group, got an integer");
    EXPECT_ERR(p, 13, "unknown key 'extra' at top level");
    cr_assert_eq(ms->n, 11, "%s", ms->all);
    /* Rejected values leave the defaults in place. */
    cr_assert_str_eq(cf->socket_path, "/run/shmnet/shmnetd.sock");
    cr_assert_eq(cf->n_cpus, 0);
    cr_assert_eq(cf->n_uids, 1);
    free(p);
}

Test(conf, control_limits)
{
    char *p;

    cr_assert_eq(load_text(IF0 "daemon = { ctl_max_per_uid = 1; ctl_max_output = 4096; };\n", &p),
                 0, "%s", ms->all);
    cr_assert_eq(cf->ctl_max_per_uid, 1);
    cr_assert_eq(cf->ctl_max_output, 4096);
    free(p);
    cr_assert_eq(
        load_text(IF0 "daemon = { ctl_max_per_uid = 960; ctl_max_output = 1073741824; };\n", &p), 0,
        "%s", ms->all);
    cr_assert_eq(cf->ctl_max_per_uid, 960);
    cr_assert_eq(cf->ctl_max_output, 1u << 30);
    free(p);
    cr_assert_eq(load_text(IF0 "daemon = {\n"
                               " ctl_max_per_uid = 0;\n"   /* 3 */
                               " ctl_max_output = 4095;\n" /* 4 */
                               "};\n"
                               "daemon2 = 1;\n",
                           &p),
                 -EINVAL);
    EXPECT_ERR(p, 3, "daemon.ctl_max_per_uid: 0 is out of range 1..960");
    EXPECT_ERR(p, 4, "daemon.ctl_max_output: 4095 is out of range 4096..1073741824");
    free(p);
    memset(ms, 0, sizeof(*ms));
    cr_assert_eq(load_text(IF0 "daemon = { ctl_max_per_uid = 961; };\n", &p), -EINVAL);
    EXPECT_ERR(p, 2, "daemon.ctl_max_per_uid: 961 is out of range 1..960");
    free(p);
}

Test(conf, include_relative_to_config_dir)
{
    char dir[] = "/tmp/shmnet_conf_inc_XXXXXX";
    char main_path[64], inc_path[64];
    FILE *f;

    cr_assert(mkdtemp(dir));
    snprintf(main_path, sizeof(main_path), "%s/main.conf", dir);
    snprintf(inc_path, sizeof(inc_path), "%s/ifs.conf", dir);
    f = fopen(inc_path, "w");
    fputs("interfaces = ( { name = \"shm0\";\n  address = \"10.1.1.0/24\"; } );\n", f);
    fclose(f);
    f = fopen(main_path, "w");
    fputs("daemon = { workers = 2; };\n@include \"ifs.conf\"\n", f);
    fclose(f);
    cr_assert_eq(load(main_path), -EINVAL);
    /* The error points into the included file, at its own line. */
    EXPECT_ERR(inc_path, 2, "network address");
    /* Same for a syntax error inside the included file. */
    memset(ms, 0, sizeof(*ms));
    f = fopen(inc_path, "w");
    fputs("\n\ninterfaces = ( { name = ; } );\n", f);
    fclose(f);
    cr_assert_eq(load(main_path), -EINVAL);
    EXPECT_ERR(inc_path, 3, "syntax error");
    unlink(inc_path);
    unlink(main_path);
    rmdir(dir);
}

/* ---- parsing helpers ---- */

Test(conf, helpers)
{
    uint32_t a;
    uint8_t plen, mac[6];
    enum log_level l;

    cr_assert_eq(conf_parse_ip4("192.168.1.2", &a), 0);
    cr_assert_eq(a, 0xc0a80102);
    cr_assert_eq(conf_parse_ip4("192.168.1", &a), -EINVAL);
    cr_assert_eq(conf_parse_ip4("192.168.1.256", &a), -EINVAL);
    cr_assert_eq(conf_parse_ip4(" 1.2.3.4", &a), -EINVAL);
    cr_assert_eq(conf_parse_prefix("10.0.0.0/8", &a, &plen), 0);
    cr_assert_eq(a, 0x0a000000);
    cr_assert_eq(plen, 8);
    cr_assert_eq(conf_parse_prefix("10.0.0.7", &a, &plen), 0);
    cr_assert_eq(plen, 32);
    cr_assert_eq(conf_parse_prefix("0.0.0.0/0", &a, &plen), 0);
    cr_assert_eq(plen, 0);
    cr_assert_eq(conf_parse_prefix("10.0.0.0/+8", &a, &plen), -EINVAL);
    cr_assert_eq(conf_parse_prefix("10.0.0.0/8x", &a, &plen), -EINVAL);
    cr_assert_eq(conf_parse_prefix("10.0.0.0/033", &a, &plen), -EINVAL);
    cr_assert_eq(conf_parse_mac("02:0A:bc:00:ff:10", mac), 0);
    cr_assert_arr_eq(mac, ((uint8_t[]){0x02, 0x0a, 0xbc, 0x00, 0xff, 0x10}), 6);
    cr_assert_eq(conf_parse_mac("02-0a-bc-00-ff-10", mac), -EINVAL);
    cr_assert_eq(conf_parse_mac("02:0a:bc:00:ff:1", mac), -EINVAL);
    cr_assert_eq(conf_parse_log_level("warn", &l), 0);
    cr_assert_eq(l, LOG_LVL_WARN);
    cr_assert_eq(conf_parse_log_level("WARN", &l), -EINVAL);
    cr_assert_str_eq(log_level_name(LOG_LVL_DEBUG), "debug");
    cr_assert_str_eq(hook_point_name(HOOK_LOCAL_OUT), "local_out");
    cr_assert_str_eq(hook_point_name(HOOK_NPOINTS), "?");
}

/* ---- reload: what may change live ---- */

static struct conf *load_new(const char *text)
{
    struct conf *c = calloc(1, sizeof(*c));
    char *p = tmpconf(text);

    cr_assert(c);
    cr_assert_eq(conf_load(c, p, collect, ms), 0, "%s", ms->all);
    unlink(p);
    free(p);
    return c;
}

#define BASE_IFS                                                                                   \
    "interfaces = ( { name = \"shm0\"; mac = \"02:00:00:00:00:02\"; address = \"10.200.0.2/24\"; " \
    "mtu = 1500; },\n { name = \"shm1\"; address = \"10.201.0.2/24\"; } );\n"
#define BASE_ROUTES "routes = ( { to = \"0.0.0.0/0\"; via = \"10.200.0.1\"; } );\n"

Test(conf, diff_static_same_config_is_clean)
{
    struct conf *a = load_new(BASE_IFS BASE_ROUTES), *b = load_new(BASE_IFS BASE_ROUTES);

    cr_assert_eq(conf_diff_static(a, b, collect, ms), 0, "%s", ms->all);
    cr_assert_eq(ms->n, 0);
    free(a);
    free(b);
}

Test(conf, diff_static_tunables_are_live)
{
    struct conf *a = load_new(BASE_IFS BASE_ROUTES);
    struct conf *b = load_new(
        "daemon = { log_level = \"debug\"; busy_poll_us = 0; rx_budget = 8; capture = \"/x\";\n"
        "  allowed_users = [ 0, 1000 ]; allowed_groups = [ 5 ]; };\n"
        "interfaces = ( { name = \"shm0\"; mac = \"02:00:00:00:00:02\"; address = "
        "\"10.200.0.2/24\";"
        " mtu = 1500; fault = { loss = 0.5; delay_us = 10; }; },\n"
        " { name = \"shm1\"; address = \"10.201.0.2/24\"; } );\n" BASE_ROUTES
        "ip = { default_ttl = 10; frag_timeout_ms = 1000; icmp_ratelimit_pps = 5; };\n"
        "arp = { reachable_ms = 5000; retries = 9; gratuitous = false; };\n"
        "hooks = ( { point = \"forward\"; action = \"drop\"; } );\n");

    cr_assert_eq(conf_diff_static(a, b, collect, ms), 0, "%s", ms->all);
    free(a);
    free(b);
}

Test(conf, diff_static_reports_each_static_key)
{
    struct conf *a = load_new(BASE_IFS BASE_ROUTES);
    struct conf *b = load_new(
        "daemon = { socket = \"/tmp/other.sock\"; workers = 2; pktbufs = 1024; cpus = [ 1 ]; };\n"
        "interfaces = ( { name = \"shm0\"; mac = \"02:00:00:00:00:03\"; address = "
        "\"10.200.0.2/24\";"
        " mtu = 9000; },\n"
        " { name = \"shm1\"; address = \"10.201.0.3/24\"; vlan = 5; rx_ring = 512; } );\n"
        "routes = ( { to = \"0.0.0.0/0\"; via = \"10.200.0.254\"; } );\n"
        "ip = { forwarding = true; frag_max_datagrams = 5; };\n"
        "arp = { cache_size = 64; };\n");

    cr_assert_eq(conf_diff_static(a, b, collect, ms), 13, "%s", ms->all);
    static const char *const keys[] = {
        "daemon.socket",         "daemon.workers",
        "daemon.pktbufs",        "daemon.cpus",
        "interfaces[0].mac",     "interfaces[0].mtu",
        "interfaces[1].address", "interfaces[1].vlan",
        "interfaces[1].rx_ring", "routes",
        "ip.forwarding",         "ip.frag_max_datagrams",
        "arp.cache_size",
    };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        char want[128];

        snprintf(want, sizeof(want), "%s: cannot change while running; restart to apply", keys[i]);
        cr_assert_str_eq(ms->m[i], want, "all:\n%s", ms->all);
    }
    free(a);
    free(b);
}

Test(conf, diff_static_interface_count)
{
    struct conf *a = load_new(BASE_IFS BASE_ROUTES);
    struct conf *b = load_new("interfaces = ( { name = \"shm0\"; mac = \"02:00:00:00:00:02\"; "
                              "address = \"10.200.0.2/24\";"
                              " mtu = 1500; } );\n" BASE_ROUTES);

    cr_assert_eq(conf_diff_static(a, b, collect, ms), 1, "%s", ms->all);
    cr_assert_str_eq(ms->m[0], "interfaces: cannot change while running; restart to apply");
    free(a);
    free(b);
}
