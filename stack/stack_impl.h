/* Internal interfaces between the stack's layers (not for the daemon). */
#ifndef SHMNET_STACK_IMPL_H
#define SHMNET_STACK_IMPL_H

#include "stack/stack.h"
#include "stack/wire.h"

#define NS_PER_MS  1000000ull
#define NS_PER_SEC 1000000000ull

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* stack.c */
void stack_if_flush(struct stack *st, int ifidx);

/* eth.c */
void eth_input(struct stack *st, int ifidx, struct pktbuf *pb);
/* Prepend the Ethernet header (and the interface's VLAN tag) and queue for TX. */
void eth_output(struct stack *st, int ifidx, struct pktbuf *pb, const uint8_t dst[6],
                uint16_t type);

/* arp.c */
int arp_init(struct stack *st);
void arp_destroy(struct stack *st);
void arp_input(struct stack *st, int ifidx, struct pktbuf *pb);
/* Send an IPv4 packet (pb data = IP header on) to nexthop on ifidx: resolves, queues. */
void arp_output(struct stack *st, int ifidx, uint32_t nexthop, struct pktbuf *pb);
void arp_announce(struct stack *st, int ifidx); /* gratuitous ARP */
size_t arp_report(struct stack *st, char *buf, size_t cap);

/* route.c */
void route_table_init(struct route_table *rt);
int route_add(struct route_table *rt, const struct route_entry *e);
/* Longest-prefix match; fills ifidx and next hop. 0 or -ENETUNREACH. */
int route_lookup(const struct stack *st, uint32_t dst, int *ifidx, uint32_t *nexthop);

/* hook.c: true = accept */
bool hook_run(struct stack *st, enum hook_point pt, const struct ip4_view *ip, const uint8_t *l4,
              uint32_t l4len);

/* ip4.c */
void ip4_input(struct stack *st, int ifidx, struct pktbuf *pb);
/* pb data = the L4 header + payload. Adds the IPv4 header, routes, fragments, sends.
 * src 0 = the outgoing interface's address. Takes pb. 0 or -errno (counted). */
int ip4_output(struct stack *st, struct pktbuf *pb, uint32_t src, uint32_t dst, uint8_t proto,
               uint8_t ttl, uint8_t tos, bool df);
/* Is addr one we answer to on ifidx (address, subnet broadcast, limited broadcast)? */
bool ip4_is_local(const struct stack *st, uint32_t addr);
bool ip4_is_bcast(const struct stack *st, uint32_t addr);
/* Deliver a complete local datagram (pb data = IP header on). */
void ip4_local_deliver(struct stack *st, struct pktbuf *pb, const struct ip4_view *ip);
void ip4_frag_input(struct stack *st, struct pktbuf *pb, const struct ip4_view *frag);
/* Looped-back datagrams (to our own addresses): deliver up to budget; free all. */
int ip4_loop_input(struct stack *st, int budget);
void ip4_loop_flush(struct stack *st);

/* ip4_frag.c */
int ip4_frag_init(struct stack *st);
void ip4_frag_destroy(struct stack *st);
/* Takes a fragment (pb data = IP header on). Returns the reassembled datagram (data = IP
 * header on, in a large buffer, header fields updated) or NULL while incomplete/dropped. */
struct pktbuf *ip4_reasm(struct stack *st, struct pktbuf *pb, const struct ip4_view *ip);
uint32_t ip4_frag_count(const struct stack *st);

/* icmp.c */
void icmp_input(struct stack *st, struct pktbuf *pb, const struct ip4_view *ip);
/* Send an ICMP error about the datagram `orig` (data = its IP header on); orig is not taken.
 * Applies RFC 1122 3.2.2 (never about errors, broadcasts, non-first fragments) and the rate limit. */
void icmp_send_error(struct stack *st, const struct pktbuf *orig, uint8_t type, uint8_t code,
                     uint32_t info);

static inline bool ip4_is_mcast(uint32_t a)
{
    return (a >> 28) == 0xe;
}
static inline bool ip4_is_loopback(uint32_t a)
{
    return (a >> 24) == 127;
}

#endif
