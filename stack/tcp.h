/* TCP (RFC 9293) in the pure stack: connections, listeners, segments in and out.
 *
 * Byte storage is not the stack's: a connection reads the bytes it sends from the
 * owner's send buffer (the client's TX fifo in the daemon) and keeps them there until
 * they are acknowledged, and writes received bytes into the owner's receive buffer (the
 * client's RX fifo). struct tcp_buf_ops is that interface, so the protocol core runs
 * against plain memory in unit tests. */
#ifndef SHMNET_TCP_H
#define SHMNET_TCP_H

#include <stdbool.h>
#include <stdint.h>

#include "stack/stack.h"
#include "stack/timer.h"

enum tcp_state {
    TCPS_CLOSED = 0,
    TCPS_LISTEN,
    TCPS_SYN_SENT,
    TCPS_SYN_RECEIVED,
    TCPS_ESTABLISHED,
    TCPS_FIN_WAIT_1,
    TCPS_FIN_WAIT_2,
    TCPS_CLOSE_WAIT,
    TCPS_CLOSING,
    TCPS_LAST_ACK,
    TCPS_TIME_WAIT,
};
const char *tcp_state_name(enum tcp_state s);

struct tcp_pcb;

/* The owner's buffers. Offsets count from the first unacknowledged byte (snd_una). */
struct tcp_buf_ops {
    /* Bytes queued for sending, from snd_una on (sent-unacked + unsent). */
    uint32_t (*snd_len)(void *ctx);
    /* Copy len bytes starting off bytes after snd_una into dst. */
    void (*snd_copy)(void *ctx, uint32_t off, uint32_t len, uint8_t *dst);
    /* n bytes at snd_una were acknowledged: release them. */
    void (*snd_ack)(void *ctx, uint32_t n);
    /* Free space in the receive buffer (from the end of the committed bytes). A listener's
     * is the size of the buffer its connections get: their SYN-ACKs offer it. */
    uint32_t (*rcv_space)(void *ctx);
    /* Write bytes off bytes past the committed end (off + len <= rcv_space): out-of-order
     * data goes straight to its place in the buffer and waits there for the hole. */
    void (*rcv_write_at)(void *ctx, uint32_t off, const uint8_t *data, uint32_t len);
    /* Make n more bytes readable (they were written with rcv_write_at). */
    void (*rcv_commit)(void *ctx, uint32_t n);
};

/* Events for the owner. */
enum tcp_event {
    TCP_EV_CONNECTED,  /* active open completed */
    TCP_EV_READABLE,   /* new bytes in the receive buffer */
    TCP_EV_WRITABLE,   /* send buffer space freed (bytes acknowledged) */
    TCP_EV_FIN,        /* peer closed its direction: reads end after the buffered bytes */
    TCP_EV_ACCEPTABLE, /* a listener has a connection ready in its accept queue */
    TCP_EV_CLOSED,     /* the connection is gone (err = 0 after an orderly close) */
};
typedef void (*tcp_event_fn)(void *ctx, struct tcp_pcb *pcb, enum tcp_event ev, int err);
/* A listener got a connection (three-way handshake done): give it buffers and a context.
 * Return 0, or -ENOBUFS to refuse it (the peer gets a RST). */
typedef int (*tcp_accept_fn)(void *lctx, struct tcp_pcb *listener, struct tcp_pcb *child);

#define TCP_MAX_SACK 8 /* ranges the sender remembers as SACKed */
#define TCP_MAX_OOO  8 /* out-of-order ranges the receiver holds in the fifo */
#define TCP_CC_PRIV  112

struct tcp_range {
    uint32_t start, end; /* [start, end) in sequence space */
};

/* A range retransmitted in loss recovery, watched for a second loss (RACK, RFC 8985 6.2):
 * it was lost again if bytes first sent after it (at or beyond the SND.MAX of its
 * sending) are SACKed while it is not, or if it is not SACKed a reordering window after
 * a round trip (the RACK timer: nothing sent later may be left to be SACKed). */
#define TCP_MAX_RXT   16
#define TCP_RXT_TRIES 3 /* times the RACK timer resends one range; then the RTO's turn */
struct tcp_rxt {
    uint32_t start, end; /* [start, end); when lost, start is where sending it again resumes */
    uint32_t snd_max;    /* SND.MAX when it went out */
    uint32_t xmit_us;    /* when it went out (stack time, microseconds, wraps) */
    uint8_t tries;       /* sends of this range in this recovery */
    bool lost;
};

struct tcp_cc_ops;

struct tcp_pcb {
    struct tcp_pcb *hnext;   /* connection or listener hash chain */
    struct tcp_pcb *qnext;   /* listener's SYN / accept queue */
    struct tcp_pcb *parent;  /* listener, while queued there */
    struct tcp_pcb *fnext;   /* free list (pcbs are type-stable: docs/tcp.md) */
    struct tcp_pcb *ev_next; /* the stack's list of pcbs with events held (tcp_ev_hold) */
    enum tcp_state state;
    uint32_t laddr, raddr;
    uint16_t lport, rport;
    bool hashed, listen_hashed, owned, closed_by_app, in_accept_q, closed_sent, from_cookie;
    bool orphan; /* closed by its owner with data or a FIN still to deliver (tcp_orphans) */
    bool ev_queued, free_held; /* on the held-events list; to be freed after delivery */
    uint8_t ev_mask;           /* held events, bit per enum tcp_event */
    int ev_err;                /* err of a held TCP_EV_CLOSED */

    /* send sequence space (RFC 9293 3.3.1) */
    uint32_t iss, snd_una, snd_nxt, snd_max, snd_wl1, snd_wl2;
    uint32_t snd_wnd, max_snd_wnd;
    bool fin_queued; /* the application shut its direction: FIN after the data */
    bool fin_sent;   /* the FIN is in [snd_una, snd_nxt) (reset when an RTO rewinds snd_nxt) */
    bool fin_ever;   /* the FIN has its sequence number fin_seq (never reset) */
    uint32_t fin_seq;
    /* receive sequence space */
    uint32_t irs, rcv_nxt, rcv_adv; /* rcv_adv: right edge of the window we advertised */
    bool fin_rcvd;
    bool shut_rd;
    struct tcp_range ooo[TCP_MAX_OOO]; /* received beyond rcv_nxt, already in the fifo */
    uint8_t nooo;
    uint32_t ooo_fin_seq;            /* a FIN seen beyond a hole (0 = none) */
    uint32_t ooo_last;               /* first byte of the latest out-of-order segment */
    bool ooo_last_ok;                /* ... and no in-order data came after it */
    bool dsack;                      /* a duplicate arrived: report it once (RFC 2883) */
    uint32_t dsack_start, dsack_end; /* ... this range */
    uint8_t nsack_sent;
    struct tcp_range sack_sent[4]; /* the blocks of our last SACK option, in its order */
    bool ooo_fin;

    /* options */
    uint16_t mss;     /* our sending MSS (peer's MSS, route MTU, PMTU) */
    uint16_t adv_mss; /* what we advertised */
    bool tso;         /* the route's NIC cuts super-segments (TSO) */
    uint8_t snd_wscale, rcv_wscale;
    bool ws_ok, ts_ok, sack_ok;
    uint32_t ts_recent, ts_off;
    uint64_t ts_recent_age; /* ns */

    /* loss recovery */
    struct tcp_range sacked[TCP_MAX_SACK];
    uint8_t nsacked;
    uint8_t dupacks;
    bool in_recovery;
    bool loss_mode;    /* recovery after an RTO: every unSACKed byte below recover is lost */
    bool rack_pending; /* t_rtx is the RACK timer of a retransmission (RFC 8985 6.3) */
    uint32_t recover, high_rxt, high_sack;
    /* RFC 6937 proportional rate reduction: bytes delivered and sent in this recovery,
     * and the flight when it began */
    uint32_t prr_delivered, prr_out, recover_fs;
    /* RACK outside recovery (RFC 8985 6.2): SND.UNA when SACKs first showed it missing,
     * and when (stack ns): sent before data that arrived, it is lost a reordering window
     * later even when fewer than DupThresh segments are SACKed (a short flight, a tail) */
    uint32_t hole_seq;
    uint64_t hole_ns;
    /* Undo of a spurious recovery on D-SACKs (RFC 3708, as Linux): cwnd and ssthresh
     * before it, where it began, and its retransmissions not yet reported as duplicates */
    uint32_t undo_cwnd, undo_ssthresh, undo_marker, undo_retrans;
    bool undo_ok;
    struct tcp_rxt rxt[TCP_MAX_RXT]; /* oldest first */
    uint8_t nrxt;
    uint32_t rtx_count;    /* consecutive timeouts of the current head */
    uint8_t backoff;       /* RTO doublings (RFC 6298 5.5), kept until an RTT sample (Karn) */
    uint32_t karn_high;    /* SND.MAX at the last RTO: ACKs up to it give no RTT sample */
    uint64_t first_rtx_ns; /* when the current head was first retransmitted */

    /* RTT (RFC 6298), microseconds */
    uint32_t srtt_us, rttvar_us, rto_ms;
    uint32_t rtt_seq;
    uint64_t rtt_ts; /* ns; 0 = not timing */
    uint32_t min_rtt_us;
    uint32_t seg_rtt_us; /* the timed segment's latest round trip (exact; 0: none yet) */
    /* Pacing, when the congestion control sets a rate (BBR): new segments leave no
     * earlier than pace_next_ns, in bursts of at most a timer tick's worth. */
    uint64_t pacing_rate; /* bytes per second; 0: not paced */
    uint64_t pace_next_ns;

    /* congestion control */
    uint32_t cwnd, ssthresh;
    const struct tcp_cc_ops *cc;
    uint64_t cc_priv[TCP_CC_PRIV / 8];

    /* timers */
    struct timer t_rtx; /* retransmit, persist, SYN(-ACK) retries, TIME_WAIT, FIN_WAIT_2 */
    struct timer t_delack;
    struct timer t_keep; /* keepalive */
    struct timer t_pace; /* the next paced segment's departure */
    bool persist;        /* t_rtx is the zero-window probe timer */
    bool tlp_pending;    /* t_rtx is the tail loss probe timer (RFC 8985 7) */
    bool tlp_out;        /* a probe went out: none again before the ACK of tlp_high */
    uint32_t tlp_high;   /* SND.MAX after the probe */
    bool force_runt;     /* the SWS override timer fired: send a window-limited runt */
    bool xmit_retry;     /* t_rtx retries a transmit that failed for lack of buffers */

    /* ACK generation */
    bool ack_now;
    uint8_t quickacks; /* immediate ACKs left (start of connection, after loss) */
    uint16_t unacked_segs;

    /* socket options */
    bool nodelay, cork, keepalive;
    uint8_t ttl, tos;  /* IP_TTL (0: the stack's default), IP_TOS */
    uint16_t user_mss; /* TCP_MAXSEG: a cap on the MSS advertised and used (0: none) */
    uint32_t keep_idle_s, keep_intvl_s, keep_cnt, keep_probes;
    uint32_t user_timeout_ms;
    uint64_t last_rx_ns;

    /* listener */
    uint16_t backlog, syn_qlen, acc_qlen;
    struct tcp_pcb *syn_q;
    struct tcp_pcb *acc_head, *acc_tail;

    /* owner */
    const struct tcp_buf_ops *buf;
    void *ctx;
    tcp_event_fn ev;
    tcp_accept_fn accept_cb;
    void *lctx;
    int soft_err; /* last ICMP error, reported if the connection times out */

    /* statistics (TCP_INFO) */
    uint32_t total_retrans, retrans_out_segs, lost;
    uint64_t bytes_acked, bytes_received, segs_in, segs_out;
};

/* Congestion control behind an ops table (RFC 5681 NewReno, RFC 9438 CUBIC). */
struct tcp_cc_ops {
    const char *name;
    void (*init)(struct tcp_pcb *pcb);
    /* New data acknowledged (not in recovery): grow cwnd. */
    void (*on_ack)(struct tcp_pcb *pcb, uint32_t acked, uint64_t now_ns);
    /* Loss detected by dupacks/SACK: the new ssthresh. */
    uint32_t (*ssthresh)(struct tcp_pcb *pcb, uint64_t now_ns);
    /* Retransmission timeout. */
    void (*on_rto)(struct tcp_pcb *pcb, uint64_t now_ns);
    /* Optional: every ACK, in recovery too, after it was processed (a model-based
     * control's measurements; it may set pcb->pacing_rate). */
    void (*on_delivered)(struct tcp_pcb *pcb, uint64_t now_ns);
};
extern const struct tcp_cc_ops tcp_cc_newreno, tcp_cc_cubic, tcp_cc_bbr;
const struct tcp_cc_ops *tcp_cc_find(const char *name);

/* ---- API for the owner (daemon) ---- */
int tcp_init(struct stack *st);
void tcp_destroy(struct stack *st);

/* A new closed connection object with the owner's buffers and event callback. */
struct tcp_pcb *tcp_new(struct stack *st, const struct tcp_buf_ops *buf, tcp_event_fn ev,
                        void *ctx);
int tcp_bind(struct stack *st, struct tcp_pcb *pcb, uint32_t addr, uint16_t port);
/* Start listening; accept_cb gets each established connection (buffers, context). */
int tcp_listen(struct stack *st, struct tcp_pcb *pcb, int backlog, tcp_accept_fn accept_cb,
               void *lctx);
/* Take the oldest connection from the accept queue, or NULL. */
struct tcp_pcb *tcp_accept(struct stack *st, struct tcp_pcb *listener);
/* Active open: 0 (TCP_EV_CONNECTED or TCP_EV_CLOSED with an error follows) or -errno. */
int tcp_connect(struct stack *st, struct tcp_pcb *pcb, uint32_t addr, uint16_t port);
/* The application queued bytes: send what the windows allow. */
void tcp_output(struct stack *st, struct tcp_pcb *pcb);
/* The application consumed received bytes: maybe open the window. */
void tcp_rcvd(struct stack *st, struct tcp_pcb *pcb);
/* shutdown(2): SHUT_RD = 0, SHUT_WR = 1, SHUT_RDWR = 2. */
int tcp_shutdown(struct stack *st, struct tcp_pcb *pcb, int how);
/* close(2): graceful. The owner gets one last TCP_EV_CLOSED when the stack no longer
 * needs its buffers; the stack frees the object itself afterwards. */
void tcp_close(struct stack *st, struct tcp_pcb *pcb);
/* Abort with RST (SO_LINGER 0, owner gone); frees it now, no more events. */
void tcp_abort(struct stack *st, struct tcp_pcb *pcb);
int tcp_set_cc(struct tcp_pcb *pcb, const char *name);
/* Apply changed keepalive settings (SO_KEEPALIVE, TCP_KEEPIDLE...). */
void tcp_arm_keepalive(struct stack *st, struct tcp_pcb *pcb);
/* Counts for reports. */
uint32_t tcp_count(const struct stack *st);
/* One line per connection like `ss -tan`. */
size_t tcp_report(struct stack *st, char *buf, size_t cap);

#endif
