/* shmnetd configuration: schema, defaults, loading and validation (libconfig).
 *
 * conf_load() fills a struct conf with defaults, then overrides what the file gives.
 * Every problem is reported as "FILE:LINE: message" (one line each) through the error
 * callback; the load fails if there was any. Unknown keys are errors.
 * The stack's part of the config is a struct stack_params, so the daemon hands it over
 * as is. */
#ifndef SHMNET_CONF_H
#define SHMNET_CONF_H

#include <stdbool.h>
#include <stdint.h>
#include <net/if.h>

#include "nic/nic.h"
#include "stack/stack.h"

#define CONF_MAX_IFS  STACK_MAX_IFS
#define CONF_MAX_IDS  16
#define CONF_PATH_MAX 256

enum log_level { LOG_LVL_ERROR = 0, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

struct conf_iface {
    struct stack_iface_params ip; /* name, mac, mtu, address/prefix, promiscuous, vlan */
    struct nic_params nic;        /* backend, rings, fault (name/mac/mtu copied from ip) */
};

struct conf {
    char path[CONF_PATH_MAX]; /* file it came from */

    /* daemon = { ... } */
    char socket_path[CONF_PATH_MAX]; /* default /run/shmnet/shmnetd.sock */
    uint32_t workers;                /* 1..64, default 1 */
    uint32_t busy_poll_us;           /* 0..1000000, default 50 */
    uint32_t rx_budget;              /* 1..4096, default 64 */
    enum log_level log_level;        /* "error" | "warn" | "info" (default) | "debug" */
    char capture[CONF_PATH_MAX];     /* pcap file to capture into from start, "" = none */
    uint32_t allowed_uids[CONF_MAX_IDS];
    uint32_t n_uids;
    uint32_t allowed_gids[CONF_MAX_IDS];
    uint32_t n_gids;
    int cpus[64];
    uint32_t n_cpus;          /* worker pinning, empty = not pinned */
    uint32_t ctl_max_per_uid; /* control connections open at once per uid but 0, default 64 */
    uint32_t ctl_max_output;  /* bytes of one answer to a uid other than 0, default 1 MiB */

    /* clients = { ... }: shared-memory sessions (per client process) */
    uint32_t max_clients;    /* 1..4096, default 256 */
    uint32_t max_per_uid;    /* sessions of one uid other than 0, 1..4096, default 64 */
    uint32_t max_sockets;    /* per client, 1..65535, default 4096 */
    uint32_t channels;       /* per client (threads with their own rings), 1..64, default 16 */
    uint32_t fifo_mb;        /* fifo arena per client in MiB, 1..3072, default 1024 (virtual) */
    uint32_t rcvbuf, sndbuf; /* default socket fifo sizes, 4096..16 MiB, default 212992 */
    /* Ports below this need uid 0 or CAP_NET_BIND_SERVICE in the client, default 1024 */
    uint32_t unprivileged_port_start;

    /* interfaces = ( ... ): at least one */
    struct conf_iface ifs[CONF_MAX_IFS];
    uint32_t n_ifs;

    /* ip = {...}, arp = {...}, routes = (...), hooks = (...), pktbuf counts */
    struct stack_params stack;
};

typedef void (*conf_err_fn)(void *ctx, const char *msg);

/* Defaults only (no file). */
void conf_defaults(struct conf *c);
/* Load and validate FILE. Returns 0, or -EINVAL after reporting each error through err
 * (NULL: print to stderr), or -errno when the file cannot be read (also reported). FILE and
 * the files it includes must be regular files: anything else (a FIFO would block the
 * control thread) is refused with -EINVAL. */
int conf_load(struct conf *c, const char *path, conf_err_fn err, void *ctx);
/* For a reload: report through `report` each key that differs but cannot change while
 * running ("KEY: cannot change while running; restart to apply") and return how many. */
int conf_diff_static(const struct conf *old, const struct conf *nw, conf_err_fn report, void *ctx);

/* Parsing helpers, also used by tools: 0 or -EINVAL. */
int conf_parse_ip4(const char *s, uint32_t *out);
int conf_parse_prefix(const char *s, uint32_t *addr, uint8_t *plen);
int conf_parse_mac(const char *s, uint8_t mac[6]);
int conf_parse_log_level(const char *s, enum log_level *out);
const char *log_level_name(enum log_level l);
const char *hook_point_name(enum hook_point p);

#endif
