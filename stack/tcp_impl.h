/* Internal TCP interfaces shared by tcp.c, tcp_in.c, tcp_out.c, tcp_timer.c, tcp_cc.c. */
#ifndef SHMNET_TCP_IMPL_H
#define SHMNET_TCP_IMPL_H

#include "core/list.h"
#include "stack/stack_impl.h"
#include "stack/tcp.h"

#define SEQ_LT(a, b)  ((int32_t)((uint32_t)(a) - (uint32_t)(b)) < 0)
#define SEQ_LEQ(a, b) ((int32_t)((uint32_t)(a) - (uint32_t)(b)) <= 0)
#define SEQ_GT(a, b)  SEQ_LT(b, a)
#define SEQ_GEQ(a, b) SEQ_LEQ(b, a)

#define TCP_HASH            4096u
#define TCP_LHASH           256u
#define TCP_DEFAULT_MSS     536u
#define TCP_MAX_WIN         65535u
#define TCP_RTO_FALLBACK_MS 3000u /* RFC 6298 5.7: after a SYN timeout without a sample */
#define TCP_OPT_SPACE       40u

struct tcp_table {
    struct tcp_pcb *conn[TCP_HASH];
    struct tcp_pcb *lis[TCP_LHASH];
    struct tcp_pcb *free;
    struct tcp_pcb *ev_head, *ev_tail; /* pcbs with held events, in order of the first */
    uint32_t ev_hold;                  /* > 0: events are held (tcp_ev_hold) */
    void **chunks;
    uint32_t nchunks, allocated, in_use;
    uint32_t count; /* hashed connections */
    uint32_t port_cursor;
    uint64_t chal_ts;
    uint32_t chal_tokens;
};

/* A parsed, checksummed segment. */
struct tcp_seg {
    uint32_t src, dst;
    struct tcp_view h;
    struct tcp_opts o;
    const uint8_t *data;
    uint32_t len; /* data bytes */
    uint32_t seq, ack;
    uint8_t flags;
    uint32_t wnd; /* raw window field */
};

static inline uint64_t tcp_now_ms(const struct stack *st)
{
    return st->now / NS_PER_MS;
}
static inline uint32_t tcp_tsval(const struct stack *st, const struct tcp_pcb *pcb)
{
    return (uint32_t)tcp_now_ms(st) + pcb->ts_off;
}
static inline uint32_t tcp_flight(const struct tcp_pcb *pcb)
{
    return pcb->snd_max - pcb->snd_una;
}

/* tcp.c */
void tcp_hash_conn(struct stack *st, struct tcp_pcb *pcb);
void tcp_unhash(struct stack *st, struct tcp_pcb *pcb);
struct tcp_pcb *tcp_lookup(struct stack *st, uint32_t laddr, uint16_t lport, uint32_t raddr,
                           uint16_t rport);
struct tcp_pcb *tcp_lookup_listener(struct stack *st, uint32_t laddr, uint16_t lport);
struct tcp_pcb *tcp_alloc(struct stack *st);
void tcp_free(struct stack *st, struct tcp_pcb *pcb);
uint32_t tcp_isn(const struct stack *st, uint32_t la, uint16_t lp, uint32_t ra, uint16_t rp);
uint32_t tcp_cookie_make(const struct stack *st, const struct tcp_seg *s, uint16_t mss);
/* 0 if not a valid cookie, else the MSS it encodes. */
uint16_t tcp_cookie_check(const struct stack *st, const struct tcp_seg *s);
/* The connection is over: timers off, unhashed, owner told once; freed if unowned. */
void tcp_set_closed(struct stack *st, struct tcp_pcb *pcb, int err);
void tcp_notify_closed(struct stack *st, struct tcp_pcb *pcb, int err);
/* Owner events raised while a segment is processed are held and delivered, in enum
 * order, once it has been processed (tcp_ev_release), so the owner never frees its
 * context while the stack still works on the connection. Outside a hold they go at once. */
void tcp_ev_post(struct stack *st, struct tcp_pcb *pcb, enum tcp_event e, int err);
void tcp_ev_hold(struct stack *st);
void tcp_ev_release(struct stack *st);
void tcp_enter_time_wait(struct stack *st, struct tcp_pcb *pcb);
uint16_t tcp_route_mss(struct stack *st, uint32_t dst);
/* The MSS pcb offers toward dst: the route's, capped by TCP_MAXSEG. */
uint16_t tcp_own_mss(struct stack *st, const struct tcp_pcb *pcb, uint32_t dst);
bool tcp_route_tso(struct stack *st, uint32_t dst);
void tcp_init_pcb_timers(struct tcp_pcb *pcb);
bool tcp_challenge_ok(struct stack *st);

/* tcp_out.c */
void tcp_send_syn(struct stack *st, struct tcp_pcb *pcb);
void tcp_send_ack(struct stack *st, struct tcp_pcb *pcb);
/* A SYN-ACK for a SYN cookie: no state kept (tmp lives on the caller's stack). */
void tcp_send_synack_stateless(struct stack *st, struct tcp_pcb *tmp);
/* RST in answer to a segment without a connection (RFC 9293 3.10.7.1). */
void tcp_send_rst_for(struct stack *st, const struct tcp_seg *s);
void tcp_send_rst(struct stack *st, struct tcp_pcb *pcb);
void tcp_send_probe(struct stack *st, struct tcp_pcb *pcb);
/* The tail loss probe timer fired: one new segment, else the last one again. */
void tcp_send_tlp(struct stack *st, struct tcp_pcb *pcb);
/* Retransmit one segment starting at seq (<= mss bytes, stops at end). */
uint32_t tcp_retransmit(struct stack *st, struct tcp_pcb *pcb, uint32_t seq, uint32_t end);
uint32_t tcp_rcv_window(struct tcp_pcb *pcb);
/* SACK recovery retransmitted [start, end) (for the tries-th time): watch it for a second
 * loss. */
void tcp_rxt_note(struct stack *st, struct tcp_pcb *pcb, uint32_t start, uint32_t end,
                  uint8_t tries);
/* The RACK timer fired: mark the retransmissions not SACKed in time as lost, or, outside
 * recovery, start it for the hole at SND.UNA. */
void tcp_rack_timeout(struct stack *st, struct tcp_pcb *pcb);
/* Arm the RACK timer if it comes before the armed one (a retransmission went out, or
 * SACKs showed a hole). */
void tcp_rack_arm(struct stack *st, struct tcp_pcb *pcb);
/* Loss detected: fast retransmit and recovery (RFC 6675, NewReno without SACK). */
void tcp_enter_recovery(struct stack *st, struct tcp_pcb *pcb);
/* After an ACK in SACK recovery: forget what is acknowledged, mark what was lost again. */
void tcp_rxt_check(struct tcp_pcb *pcb);
void tcp_arm_rtx(struct stack *st, struct tcp_pcb *pcb);
/* RFC 6675 pipe: bytes in the network (sent, not SACKed, not marked lost). */
uint32_t tcp_sack_pipe(const struct tcp_pcb *pcb);

/* tcp_in.c */
int tcp_input(struct stack *st, struct pktbuf *pb, const struct ip4_view *ip);
void tcp_err_input(struct stack *st, uint8_t type, uint8_t code, uint32_t info,
                   const struct icmp_quote_view *q);
void tcp_update_rtt(struct stack *st, struct tcp_pcb *pcb, uint32_t rtt_us);
uint32_t tcp_sacked_bytes(const struct tcp_pcb *pcb);

/* tcp_timer.c */
void tcp_rtx_timer(struct timer *t, void *ctx, uint64_t now);
void tcp_delack_timer(struct timer *t, void *ctx, uint64_t now);
void tcp_pace_timer(struct timer *t, void *ctx, uint64_t now);
void tcp_keep_timer(struct timer *t, void *ctx, uint64_t now);
void tcp_arm_keepalive(struct stack *st, struct tcp_pcb *pcb);

#endif
