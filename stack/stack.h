/* The TCP/IP stack instance of one worker.
 *
 * Pure protocol core: time is passed in (stack_poll sets st->now), frames come in through
 * stack_input() and leave through the interfaces' NICs in batches (stack_flush()). No
 * clock, no thread, no system call inside; the worker loop does the I/O. */
#ifndef SHMNET_STACK_H
#define SHMNET_STACK_H

#include <stdbool.h>
#include <stdint.h>
#include <net/if.h>

#include "nic/nic.h"
#include "core/counters.h"
#include "core/pktbuf.h"
#include "stack/timer.h"

#define STACK_MAX_IFS    8
#define STACK_MAX_ROUTES 64
#define STACK_MAX_RULES  64

enum hook_point {
    HOOK_PREROUTING = 0,
    HOOK_LOCAL_IN,
    HOOK_FORWARD,
    HOOK_LOCAL_OUT,
    HOOK_POSTROUTING,
    HOOK_NPOINTS
};
enum hook_action { HOOK_ACCEPT = 0, HOOK_DROP };
enum hook_verdict { HOOK_PASS = 0, HOOK_STOLEN_DROP };

/* One filter rule at a hook point: first match decides. */
struct hook_rule {
    enum hook_point point;
    enum hook_action action;
    uint8_t proto; /* 0 = any */
    uint32_t src;
    uint8_t src_plen; /* host order; plen 0 = any */
    uint32_t dst;
    uint8_t dst_plen;
    uint32_t rate_pps; /* 0: always; else the action applies above this rate */
    /* run-time state */
    uint64_t tokens_ts; /* token bucket: last refill (ns) */
    uint32_t tokens;
    uint64_t matches;
};

/* An interface as configured. */
struct stack_iface_params {
    char name[IFNAMSIZ];
    uint8_t mac[6];
    uint16_t mtu;
    uint32_t addr; /* host order */
    uint8_t plen;
    bool promiscuous;
    uint16_t vlan; /* 0 = untagged */
};

struct route_entry {
    uint32_t dst; /* host order, masked */
    uint8_t plen;
    uint32_t via; /* gateway, 0 = on-link */
    int ifidx;    /* stack interface index; -1 = pick from gateway */
    uint32_t metric;
    bool connected; /* derived from an interface address */
};

struct stack_params {
    uint32_t pktbufs;       /* small buffers per worker */
    uint32_t large_pktbufs; /* 64 KiB buffers (reassembly), default 32 */
    bool forwarding;
    uint8_t default_ttl;
    uint32_t frag_timeout_ms, frag_max_datagrams, frag_max_bytes;
    uint32_t icmp_ratelimit_pps;
    uint32_t arp_cache_size, arp_reachable_ms, arp_stale_ms, arp_retry_ms, arp_retries,
        arp_queue_len;
    bool arp_gratuitous;
    uint16_t udp_port_min, udp_port_max; /* ephemeral range (RFC 6056), default 32768-60999 */
    /* Several workers: this stack picks only ephemeral ports p with p % port_stride ==
     * port_offset, so the port names the worker (RSS by port, docs/workers.md). 0: all. */
    uint16_t port_stride, port_offset;
    /* TCP (defaults as Linux where it has one) */
    bool tcp_sack, tcp_timestamps, tcp_window_scaling, tcp_syncookies;
    char tcp_cc[16];             /* "cubic" (default) | "newreno" */
    uint32_t tcp_time_wait_ms;   /* 2*MSL, default 60000 */
    uint32_t tcp_fin_timeout_ms; /* orphaned FIN_WAIT_2, default 60000 */
    uint32_t tcp_syn_retries, tcp_synack_retries, tcp_retries2; /* 6, 5, 15 */
    uint32_t tcp_rto_min_ms, tcp_rto_max_ms, tcp_rto_init_ms;   /* 200, 120000, 1000 */
    uint32_t tcp_delack_ms;                                     /* 40 */
    uint32_t tcp_keepalive_time_s, tcp_keepalive_intvl_s, tcp_keepalive_probes; /* 7200 75 9 */
    uint32_t tcp_max_syn_backlog; /* SYN queue per listener before cookies, 256 */
    bool tcp_abort_on_overflow;   /* full accept queue: RST a completed handshake, not drop */
    uint32_t tcp_orphan_retries;  /* RTOs an orphaned connection survives, default 8 */
    uint32_t tcp_max_conns;       /* connection objects per worker, default 262144 */
    uint8_t tcp_rcv_wscale;       /* window scale we offer, default 7 */
    uint64_t secret[2];           /* ISN and SYN cookie key (the daemon fills it) */
    struct route_entry routes[STACK_MAX_ROUTES]; /* static routes (connected ones are added) */
    uint32_t n_routes;
    struct hook_rule rules[STACK_MAX_RULES];
    uint32_t n_rules;
};

void stack_params_defaults(struct stack_params *p);

struct stack_if {
    struct stack_iface_params p;
    uint32_t mask, bcast; /* derived */
    struct nic *nic;
    uint16_t queue;
    bool tso;                     /* the NIC takes TCP super-segments (pktbuf.gso_size) */
    struct pktbuf *tx[NIC_BURST]; /* TX batch for this interface */
    int ntx;
};

struct arp_cache;
struct ip4_frag_table;
struct udp_table;
struct tcp_table;
struct route_table {
    struct route_entry e[STACK_MAX_ROUTES + STACK_MAX_IFS]; /* sorted: longest prefix first */
    uint32_t n;
};

/* Upper-layer (UDP/TCP) delivery; later issues register handlers. pb data = L4 header on,
 * ip = the parsed IPv4 header. Handler owns pb. Return 0, or -EPROTONOSUPPORT/-ECONNREFUSED to
 * have the stack answer with ICMP unreachable (the stack then owns pb again). */
struct stack;
struct ip4_view;
typedef int (*stack_l4_input_fn)(struct stack *st, struct pktbuf *pb, const struct ip4_view *ip);
/* ICMP error delivered to the protocol of the quoted datagram (parsed and checked to be
 * one we sent). */
struct icmp_quote_view;
typedef void (*stack_l4_err_fn)(struct stack *st, uint8_t type, uint8_t code, uint32_t info,
                                const struct icmp_quote_view *q);

#define STACK_LO_MAX 4096 /* looped-back datagrams queued at most */

/* The claims of a local port a stack makes (stack_port_claim, stack_port_release,
 * stack_port_group); the worker keeps them (several workers). */
enum stack_claim_op {
    STACK_CLAIM_RELEASE = 0,  /* one claim less */
    STACK_CLAIM,              /* the port becomes this worker's */
    STACK_CLAIM_SHARED,       /* the same, shared with other SO_REUSEADDR claims */
    STACK_CLAIM_GROUP_MAKE,   /* the port this stack claimed becomes a group with key */
    STACK_CLAIM_GROUP_JOIN,   /* claim a port of the group with key */
    STACK_CLAIM_GROUP_ADOPT,  /* join, taking over a group whose session is gone */
    STACK_CLAIM_GROUP_ORPHAN, /* the session with key is gone: its group may be adopted */
};
struct stack {
    uint64_t now; /* ns; set by stack_poll() */
    struct stack_counters cnt;
    struct stack_params par;
    struct stack_if ifs[STACK_MAX_IFS];
    int nifs;
    struct route_table rt;
    struct arp_cache *arp;
    struct ip4_frag_table *frag;
    struct udp_table *udp;
    struct tcp_table *tcp;
    struct timer_wheel tw;
    struct pktbuf_pool pool;  /* frames */
    struct pktbuf_pool large; /* reassembled datagrams */
    struct pktbuf_pool rx64;  /* 64 KiB RX buffers for TSO interfaces (GSO frames in) */
    uint16_t ip_id;
    /* ICMP error rate limit (token bucket) */
    uint64_t icmp_tokens_ts;
    uint32_t icmp_tokens;
    /* echo replies to our own echo requests (stack_ping) */
    uint64_t ping_replies;
    uint16_t ping_last_seq;
    /* Datagrams for our own addresses (two local sockets talking): delivered on the next
     * stack_rx, never from inside the output path, so a protocol is not re-entered. */
    struct pktbuf_queue lo;
    stack_l4_input_fn l4_input[256];
    stack_l4_err_fn l4_err[256];
    void *user; /* owner (the worker) */
    /* Several workers (daemon.workers > 1; NULL with one, and in tests): steer hands a
     * datagram for a port another worker owns to that worker (true: taken); arp_fanout
     * shows every ARP frame received to the other workers' neighbour caches; port_taken
     * says another worker owns a local port (ephemeral choice skips it). */
    bool (*steer)(struct stack *st, struct pktbuf *pb, const struct ip4_view *ip);
    bool (*steer_frag)(struct stack *st, struct pktbuf *pb, const struct ip4_view *ip);
    void (*arp_fanout)(struct stack *st, int ifidx, const struct pktbuf *pb);
    bool (*port_taken)(struct stack *st, int proto, uint16_t port);
    /* a claim of a local port (enum stack_claim_op; key: a listening group's) */
    int (*port_claim)(struct stack *st, int proto, uint16_t port, enum stack_claim_op op,
                      uint32_t key);
};
/* The key of a listening group whose session is gone (no session has it). */
#define STACK_GROUP_ORPHANED UINT32_MAX

/* A packet another worker handed over: pktbuf.steered says why (enum pktbuf_steer). */
void stack_input_steered(struct stack *st, struct pktbuf *pb);
/* A socket binds local port `port` (proto 6 or 17) explicitly: with several workers the
 * port becomes this worker's (0), unless another worker has it (-EADDRINUSE; with shared,
 * as for SO_REUSEADDR, both hold it and the first keeps its datagrams). Release undoes one
 * claim. Both are no-ops with one worker. */
int stack_port_claim(struct stack *st, int proto, uint16_t port, bool shared);
void stack_port_release(struct stack *st, int proto, uint16_t port);
/* Several workers, TCP: make the port this stack claimed a listening group with `key`
 * (MAKE), or claim a port of the group with that key (JOIN: a listener of another worker,
 * or a connection it accepted). In a group, the worker of a connection is a hash of its
 * 4-tuple. When a session goes, its connections that live on as orphans keep their
 * claims: ORPHAN marks its group, and a listener of a new session that binds the port
 * with SO_REUSEADDR takes it over (ADOPT), as Linux lets a restarted server bind while
 * the old one's connections finish. 0, -EADDRINUSE, or -EOPNOTSUPP with one worker.
 * Released as a claim. */
int stack_port_group(struct stack *st, uint16_t port, uint32_t key, enum stack_claim_op op);
/* May this stack pick local port `port` (proto 6 or 17) as an ephemeral one? */
bool stack_port_ok(struct stack *st, int proto, uint16_t port);

/* Create a stack: allocates pools and tables. 0 or -errno. */
/* stack_destroy in two steps, for several workers whose buffers cross: first every
 * stack gives back what it holds, then the pools go. */
void stack_release(struct stack *st);
void stack_destroy_pools(struct stack *st);
int stack_init(struct stack *st, const struct stack_params *p, uint64_t now);
/* Add an interface bound to queue q of an opened NIC; returns its index or -errno.
 * Adds the connected route. Binds the stack's pool and counters to that NIC queue. */
int stack_add_if(struct stack *st, const struct stack_iface_params *ip, struct nic *nic,
                 uint16_t q);
/* Gratuitous ARP etc. once all interfaces are in. */
void stack_start(struct stack *st);
void stack_destroy(struct stack *st);

/* Advance time and run due timers. */
void stack_poll(struct stack *st, uint64_t now);
/* One received frame from interface ifidx; the stack owns pb from here. */
void stack_input(struct stack *st, int ifidx, struct pktbuf *pb);
/* Receive a burst from every interface (budget frames at most) and process it. Returns count. */
int stack_rx(struct stack *st, int budget);
/* Hand every batched TX frame to the NICs and flush them. */
void stack_flush(struct stack *st);
/* Earliest time stack_poll must run again (timers, delayed frames), or UINT64_MAX. */
uint64_t stack_next_deadline(const struct stack *st);

/* Send an ICMP echo request (for shmnetctl ping and tests); 0 or -errno. */
int stack_ping(struct stack *st, uint32_t dst, uint16_t id, uint16_t seq, uint32_t size);

/* Runtime changes from a config reload (tunables only). */
void stack_apply_tunables(struct stack *st, const struct stack_params *p);

/* Text reports for shmnetctl; write into buf (size cap), return bytes written. */
size_t stack_report_neigh(struct stack *st, char *buf, size_t cap);
size_t stack_report_routes(const struct stack *st, char *buf, size_t cap);

#endif
