/* The shared-memory contract between shmnetd and libshmnet (docs/libshmnet.md, docs/design.md).
 *
 * Both sides compile against this header; every change bumps SHM_LAYOUT_VERSION.
 * Nothing here is a pointer: every reference is an offset or an index, and the daemon
 * reads anything a client can write exactly once, then bounds-checks it.
 *
 * Memory per client process: one memfd region (struct shm_region at offset 0) per worker,
 * mapped read-write by that client and by the daemon. Each region is a part of the
 * session served by one worker only: its channels' rings, its sockets and their fifos
 * (docs/workers.md). A client thread uses channel i of every part; a socket lives in one. Daemon-wide: one state page (struct
 * shm_state) that clients map read-only (sealed with F_SEAL_FUTURE_WRITE).
 *
 * Ownership of every field is marked: [D] written by the daemon only, [C] written by the
 * client only. The daemon never trusts [C] fields and never relies on [D] fields it
 * wrote (it keeps private copies); the client may trust [D] fields.
 *
 * Attach (over the control socket, SOCK_STREAM):
 *   client -> daemon: the line "attach V\n", V = SHM_LAYOUT_VERSION
 *   daemon -> client: struct shm_attach_reply (one sendmsg) carrying in SCM_RIGHTS, in
 *                     order: nparts region memfds (part k is served by worker k), the
 *                     state memfd, nparts doorbell eventfds (worker k's), then nchannels
 *                     channel eventfds (channel i's, shared by every part).
 *   The connection then stays open for the life of the session: its hang-up is how each
 *   side learns that the other died.
 */
#ifndef SHMNET_SHM_H
#define SHMNET_SHM_H

#include <stdalign.h>
#include <stdint.h>

#define SHM_MAGIC          0x73686d6e65743031ull /* "shmnet01" */
#define SHM_LAYOUT_V       4                     /* the one place the layout version is written */
#define SHM_LAYOUT_VERSION ((uint32_t)SHM_LAYOUT_V)
#define SHM_DEFAULT_SOCKET "/run/shmnet/shmnetd.sock"
#define SHM_SOCKET_ENV     "SHMNET_SOCKET"
#define SHM_STR_(x)        #x
#define SHM_STR(x)         SHM_STR_(x)
#define SHM_ATTACH_LINE    "attach " SHM_STR(SHM_LAYOUT_V) "\n"

#define SHM_CACHELINE    64
#define SHM_MAX_CHANNELS 64  /* channels per client: one per thread, shared beyond */
#define SHM_RING_SIZE    256 /* entries per request / completion ring (power of two) */
#define SHM_MAX_WORKERS  64
#define SHM_MAX_PARTS    8  /* regions per session: one per worker (daemon.workers <= 8) */
#define SHM_FIFO_ALIGN   64 /* fifo sizes and offsets are multiples of this */

#define SHM_CL alignas(SHM_CACHELINE)

/* ---- requests (client -> daemon) and completions (daemon -> client) ---- */
enum shm_op {
    SHM_OP_NOP = 0,     /* round trip only (benchmarks, liveness) */
    SHM_OP_SOCKET,      /* arg0 = type (SOCK_DGRAM/SOCK_STREAM), arg1 = protocol; -> handle */
    SHM_OP_BIND,        /* handle, addr, port */
    SHM_OP_CONNECT,     /* handle, addr, port; flags SHM_REQ_UNSPEC: dissolve (UDP AF_UNSPEC) */
    SHM_OP_CLOSE,       /* handle */
    SHM_OP_TX,          /* handle: the TX fifo has new records (see shm_sock.tx_kick) */
    SHM_OP_SETSOCKOPT,  /* handle, arg0 = level, arg1 = optname, optlen, opt[] */
    SHM_OP_GETSOCKOPT,  /* handle, arg0 = level, arg1 = optname; -> optlen, opt[] */
    SHM_OP_GETSOCKNAME, /* handle -> addr, port */
    SHM_OP_GETPEERNAME, /* handle -> addr, port */
    SHM_OP_SHUTDOWN,    /* handle, arg0 = how */
    SHM_OP_LISTEN,      /* handle, arg0 = backlog (TCP) */
    SHM_OP_ACCEPT,      /* handle -> new handle, addr, port (TCP); -EAGAIN when none */
    SHM_OP_RX_DONE,     /* handle: the client freed RX fifo space (window updates, TCP) */
    SHM_OP_COUNT
};

#define SHM_OPT_MAX    32
#define SHM_REQ_UNSPEC 0x1 /* shm_req.flags: connect(AF_UNSPEC) */
/* shm_req.flags, TCP. LISTEN: make the port a listening group, so that every worker
 * accepts connections to it (-> port; optlen 1, opt[0]: 1 the socket now listens for a
 * group, the client makes its members; 2 it already did; 0 no group). BIND (a socket of
 * another part): join this session's group on that port, then LISTEN. */
#define SHM_REQ_GROUP 0x2

struct shm_req {
    uint32_t op;     /* enum shm_op */
    uint32_t seq;    /* echoed in the completion */
    uint32_t handle; /* socket handle (index | generation << 16) */
    uint32_t flags;
    int32_t arg0, arg1;
    uint32_t addr; /* IPv4, host order */
    uint16_t port; /* host order */
    uint16_t optlen;
    uint8_t opt[SHM_OPT_MAX];
};
_Static_assert(sizeof(struct shm_req) == 64, "request entries are one cache line");

struct shm_cpl {
    uint32_t seq;
    int32_t result; /* >= 0 success (a handle for SOCKET/ACCEPT), else -errno */
    uint32_t handle;
    uint32_t addr;
    uint16_t port;
    uint16_t optlen;
    uint32_t pad;
    uint8_t opt[SHM_OPT_MAX];
    uint64_t pad2;
};
_Static_assert(sizeof(struct shm_cpl) == 64, "completion entries are one cache line");

/* One channel: an SPSC request ring and an SPSC completion ring. Indices are free-running
 * uint32_t; entry = ring[idx % SHM_RING_SIZE]. Producer and consumer indices sit on
 * separate cache lines so the two cores do not false-share.
 * Ordering: a producer fills the entry, then stores its tail with release; a consumer
 * loads the tail with acquire before reading the entry, and stores its head with release
 * after it is done with the entry. */
struct shm_channel {
    SHM_CL uint32_t req_tail; /* [C] */
    SHM_CL uint32_t req_head; /* [D] */
    SHM_CL uint32_t cpl_tail; /* [D] */
    SHM_CL uint32_t cpl_head; /* [C] */
    /* [C] 1 while the client thread sleeps on this channel's eventfd: the daemon writes
     * the eventfd after publishing a completion or an event only when this is set. */
    SHM_CL uint32_t client_sleeping;
    SHM_CL struct shm_req req[SHM_RING_SIZE];
    SHM_CL struct shm_cpl cpl[SHM_RING_SIZE];
};

/* ---- per-socket state and byte fifos ---- */
/* Readiness bits in shm_sock.events (same values as poll.h). */
#define SHM_EV_IN    0x001
#define SHM_EV_OUT   0x004
#define SHM_EV_ERR   0x008
#define SHM_EV_HUP   0x010
#define SHM_EV_RDHUP 0x2000

/* TCP sockets: CONNECT answers -EINPROGRESS; the socket's events then show SHM_EV_OUT
 * (connected) or SHM_EV_ERR with so_error. A listener shows SHM_EV_IN while its accept
 * queue is not empty. A connection shows SHM_EV_RDHUP after the peer's FIN (reads return
 * 0 once the fifo is empty) and SHM_EV_HUP when it is gone. TCP_INFO comes back in opt[]
 * as struct shm_tcp_info. */
struct shm_tcp_info {
    uint8_t state, ca_state, retransmits, options;
    uint8_t snd_wscale, rcv_wscale, pad[2];
    uint32_t rto_us, snd_mss, rtt_us, rttvar_us, snd_cwnd, snd_ssthresh;
};
_Static_assert(sizeof(struct shm_tcp_info) <= SHM_OPT_MAX, "fits a completion");

/* A fifo is a byte ring of `size` bytes at region offset `off`, with free-running uint32_t
 * indices (used = tail - head, never more than size). UDP fifos carry records:
 *   struct shm_dgram header, then `len` payload bytes, padded to 8 bytes. A record never
 *   wraps: if it does not fit before the end, the producer writes a header with
 *   len = SHM_DGRAM_WRAP there (or nothing, when fewer than 24 bytes remain) and
 *   continues at offset 0; the consumer skips the same way. Records start 8-aligned.
 * TCP fifos carry plain bytes. */
struct shm_dgram {
    uint32_t len;  /* payload bytes, or SHM_DGRAM_WRAP */
    uint32_t addr; /* peer IPv4, host order (source on RX, destination on TX; 0 = connected peer) */
    uint16_t port; /* peer port, host order */
    uint16_t flags; /* RX: SHM_DGRAM_TOS/IFINDEX/BCAST below; TX: 0 */
    /* RX: the local address a reply comes from (IP_PKTINFO's ipi_spec_dst: the destination,
     * or for a broadcast the receiving interface's address). TX: the source address to
     * send from (IP_PKTINFO on sendmsg), 0 = the socket's or the route's. Host order. */
    uint32_t local;
    /* RX: when the datagram arrived (CLOCK_REALTIME ns) if the socket asked for it
     * (SO_TIMESTAMP, SO_TIMESTAMPNS); else 0. TX: 0. */
    uint64_t ts;
};
#define SHM_DGRAM_TOS(f)     ((uint8_t)((f)&0x00fc)) /* RX: the IP header's TOS (no ECN) */
#define SHM_DGRAM_IFINDEX(f) (((f) >> 8) & 0x7f)     /* RX: the interface, 1-based */
#define SHM_DGRAM_BCAST      0x8000u                 /* RX: sent to a broadcast address */
_Static_assert(sizeof(struct shm_dgram) == 24, "datagram header");
#define SHM_DGRAM_WRAP 0xffffffffu
#define SHM_DGRAM_MAX  65507u /* IPv4 UDP payload limit */

static inline uint32_t shm_dgram_space(uint32_t len)
{
    return (uint32_t)sizeof(struct shm_dgram) + ((len + 7u) & ~7u);
}

struct shm_sock {
    /* [D], set when the socket is created (the client may rely on them) */
    uint32_t gen;  /* generation in the handle; 0 = slot free */
    uint32_t type; /* SOCK_DGRAM / SOCK_STREAM */
    uint32_t rx_off, rx_size;
    uint32_t tx_off, tx_size;
    /* [D] current readiness (SHM_EV_*) and pending error (SO_ERROR, positive errno) */
    SHM_CL uint32_t events;
    int32_t so_error;
    uint32_t local_addr, peer_addr;
    uint16_t local_port, peer_port;
    SHM_CL uint32_t rx_tail; /* [D] producer */
    SHM_CL uint32_t rx_head; /* [C] consumer */
    SHM_CL uint32_t tx_tail; /* [C] producer */
    SHM_CL uint32_t tx_head; /* [D] consumer */
    /* [C] set to 1 by the client when it posts SHM_OP_TX; the daemon clears it before it
     * drains the fifo, so one kick is in flight per burst of sends. */
    SHM_CL uint32_t tx_kick;
    /* [C] TCP: set to 1 when the client posts SHM_OP_RX_DONE after reading (the daemon
     * may open the receive window); cleared by the daemon, like tx_kick, but only while
     * the window is under half the fifo: otherwise it leaves 1 and reads post nothing. */
    uint32_t rx_kick;
    /* [C] bit i: channel i waits for an event on this socket (blocking call or poll). */
    SHM_CL uint64_t waiters;
};

/* ---- the region ---- */
struct shm_region {
    /* [D] layout, written once at attach */
    uint64_t magic;
    uint32_t version;
    uint32_t size; /* bytes of the whole region */
    uint32_t client_id;
    uint32_t nchannels;
    uint32_t chan_off; /* struct shm_channel[nchannels] */
    uint32_t nsocks;
    uint32_t sock_off;            /* struct shm_sock[nsocks] */
    uint32_t fifo_off, fifo_size; /* fifo arena */
    uint32_t worker;              /* which worker serves this client (index into shm_state) */
    /* [C] bit i set: channel i has new requests. The client sets it (fetch_or, release)
     * after publishing a request; the daemon exchanges it with 0 (acquire) and then
     * looks at those channels only. */
    SHM_CL uint64_t req_pending;
};

/* ---- daemon-wide state page, read-only for clients ---- */
struct shm_state {
    uint64_t magic;
    uint32_t version;
    uint32_t nworkers;
    /* [D] 1 while worker w sleeps: a client that queued a request writes the doorbell
     * eventfd only then. seq_cst on both sides (see libshmnet and daemon/worker.c). */
    struct {
        SHM_CL uint32_t sleeping;
    } worker[SHM_MAX_WORKERS];
};

/* The attach reply, sent with the file descriptors. */
struct shm_attach_reply {
    int32_t result; /* 0 or -errno (then no fds are sent) */
    uint32_t version;
    uint32_t region_size;
    uint32_t state_size;
    uint32_t nchannels;
    uint32_t client_id;
    uint32_t nparts; /* regions, one per worker */
    uint32_t home;   /* the part new sockets go to unless the client chooses */
};

/* Handles: slot index in the low 16 bits, generation in the high bits (1..0x7fff, so a
 * handle is a non-negative int32 and fits a completion's result). */
static inline uint32_t shm_handle(uint32_t idx, uint32_t gen)
{
    return idx | gen << 16;
}
static inline uint32_t shm_handle_idx(uint32_t h)
{
    return h & 0xffffu;
}
static inline uint32_t shm_handle_gen(uint32_t h)
{
    return h >> 16;
}

#endif
