/* UDP (RFC 768, RFC 1122 4.1): protocol control blocks, demultiplexing, output.
 *
 * The stack owns no sockets: the daemon embeds a struct udp_pcb in each of its sockets and
 * gets datagrams and errors through the callbacks. */
#ifndef SHMNET_UDP_H
#define SHMNET_UDP_H

#include <stdbool.h>
#include <stdint.h>

#include "stack/stack.h"

/* Where a received datagram came from and how it arrived (what IP_PKTINFO and IP_RECVTOS
 * report). Addresses host order. */
struct udp_meta {
    uint32_t src, dst; /* the IP header's */
    uint32_t spec_dst; /* the local address a reply comes from: dst, or for a broadcast the
                          receiving interface's address */
    uint16_t sport;
    uint8_t tos;
    uint8_t ifindex; /* the receiving interface, 1-based */
    bool bcast;      /* dst was a broadcast address */
};
/* A datagram for the socket; data points into the packet (valid during the call only).
 * Return 0, or -ENOBUFS when the receive buffer is full (counted as udp_drop_rcvbuf). */
typedef int (*udp_deliver_fn)(void *ctx, const struct udp_meta *m, const uint8_t *data,
                              uint32_t len);
/* An ICMP error for a connected socket (positive errno, e.g. ECONNREFUSED). */
typedef void (*udp_err_fn)(void *ctx, int err);

struct udp_pcb {
    struct udp_pcb *hnext; /* bucket of lport */
    uint32_t laddr, raddr; /* host order; 0 = any / not connected */
    uint16_t lport, rport;
    bool bound, connected, hashed;
    bool reuseaddr, broadcast;
    bool laddr_auto; /* laddr was chosen by connect, not bound */
    uint8_t ttl, tos;
    udp_deliver_fn deliver;
    udp_err_fn err;
    void *ctx;
};

int udp_init(struct stack *st);
void udp_destroy(struct stack *st);

void udp_pcb_init(struct stack *st, struct udp_pcb *pcb, udp_deliver_fn deliver, udp_err_fn err,
                  void *ctx);
/* Bind to addr (0 or one of ours) and port (0: ephemeral). 0, -EADDRINUSE, -EADDRNOTAVAIL,
 * -EINVAL (already bound), -EAGAIN (no ephemeral port left). */
int udp_bind(struct stack *st, struct udp_pcb *pcb, uint32_t addr, uint16_t port);
/* Set (addr != 0) or dissolve (addr == 0 && port == 0) the default peer; binds if needed. */
int udp_connect(struct stack *st, struct udp_pcb *pcb, uint32_t addr, uint16_t port);
void udp_close(struct stack *st, struct udp_pcb *pcb);
/* Send one datagram (data copied, optionally in two pieces). dst 0 = the connected peer.
 * 0 or -errno: -EDESTADDRREQ, -EMSGSIZE, -EACCES (broadcast without SO_BROADCAST),
 * -ENETUNREACH, -ENOBUFS. */
int udp_output(struct stack *st, struct udp_pcb *pcb, uint32_t dst, uint16_t dport,
               const uint8_t *data, uint32_t len);
/* The same from source address src (IP_PKTINFO's ipi_spec_dst; 0: the socket's or the
 * route's). -EINVAL when src is not one of ours. */
int udp_output_from(struct stack *st, struct udp_pcb *pcb, uint32_t src, uint32_t dst,
                    uint16_t dport, const uint8_t *data, uint32_t len);
/* Number of bound pcbs (for reports and tests). */
uint32_t udp_count(const struct stack *st);

#endif
