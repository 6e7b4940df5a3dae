/* Bounds-checked views over raw packet bytes.
 *
 * Untrusted bytes are never cast to a struct. Each *_parse() checks the length it
 * needs first, then decodes fields byte by byte into a plain struct (the "view").
 * Writers encode the same way. All multi-byte fields are big-endian on the wire. */
#ifndef SHMNET_WIRE_H
#define SHMNET_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}
static inline uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void wr16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static inline void wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* ---- Internet checksum (RFC 1071) ---- */
/* Partial one's-complement sum; fold with csum_fold. */
uint32_t csum_partial(const void *data, size_t len, uint32_t sum);
static inline uint16_t csum_fold(uint32_t sum)
{
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}
static inline uint16_t csum(const void *data, size_t len)
{
    return csum_fold(csum_partial(data, len, 0));
}
/* Pseudo-header sum for TCP/UDP over IPv4 (RFC 768, RFC 9293 3.1); addresses host order. */
static inline uint32_t csum_pseudo4(uint32_t src, uint32_t dst, uint8_t proto, uint16_t len)
{
    return (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + proto + len;
}

/* ---- Ethernet / 802.1Q ---- */
#define ETH_ALEN       6
#define ETH_HLEN       14
#define ETH_VLAN_HLEN  4
#define ETH_MIN_FRAME  60 /* without FCS */
#define ETHERTYPE_IPV4 0x0800
#define ETHERTYPE_ARP  0x0806
#define ETHERTYPE_VLAN 0x8100
#define ETHERTYPE_IPV6 0x86dd

struct eth_view {
    const uint8_t *dst, *src; /* point into the frame, ETH_ALEN bytes each */
    uint16_t type;            /* ethertype after any 802.1Q tag */
    bool tagged;
    uint16_t vid; /* 802.1Q VLAN id (12 bits) when tagged */
    uint8_t pcp;
    uint32_t hlen; /* 14 or 18 */
};
/* 0, or -EBADMSG when shorter than the header (a second 802.1Q tag is not parsed). */
int eth_parse(const uint8_t *p, size_t len, struct eth_view *v);
/* Write an Ethernet header (with a tag if vid != 0) at p; returns bytes written. */
uint32_t eth_write(uint8_t *p, const uint8_t dst[ETH_ALEN], const uint8_t src[ETH_ALEN],
                   uint16_t vid, uint16_t type);
static inline bool eth_is_bcast(const uint8_t *m)
{
    return (m[0] & m[1] & m[2] & m[3] & m[4] & m[5]) == 0xff;
}
static inline bool eth_is_mcast(const uint8_t *m)
{
    return m[0] & 1;
}

/* ---- ARP for IPv4 over Ethernet (RFC 826) ---- */
#define ARP_LEN        28
#define ARP_OP_REQUEST 1
#define ARP_OP_REPLY   2
struct arp_view {
    uint16_t htype, ptype;
    uint8_t hlen, plen;
    uint16_t op;
    const uint8_t *sha, *tha; /* ETH_ALEN bytes each */
    uint32_t spa, tpa;        /* host order */
};
/* 0; -EBADMSG when short; -EPROTONOSUPPORT when not Ethernet/IPv4. */
int arp_parse(const uint8_t *p, size_t len, struct arp_view *v);
void arp_write(uint8_t *p, uint16_t op, const uint8_t sha[ETH_ALEN], uint32_t spa,
               const uint8_t tha[ETH_ALEN], uint32_t tpa);

/* ---- IPv4 (RFC 791) ---- */
#define IP4_HLEN      20
#define IP4_MAX_HLEN  60
#define IP4_DF        0x4000
#define IP4_MF        0x2000
#define IP4_OFFMASK   0x1fff
#define IPPROTO_ICMP_ 1
#define IPPROTO_TCP_  6
#define IPPROTO_UDP_  17

struct ip4_view {
    uint8_t ihl; /* header length in bytes */
    uint8_t tos;
    uint16_t tot_len;
    uint16_t id;
    uint16_t frag; /* flags + offset field as on the wire */
    uint8_t ttl;
    uint8_t proto;
    uint16_t csum;
    uint32_t src, dst; /* host order */
    const uint8_t *opts;
    uint32_t optlen;
};
enum ip4_parse_err {
    IP4_OK = 0,
    IP4_ERR_SHORT,   /* fewer bytes than a header */
    IP4_ERR_VERSION, /* version != 4 */
    IP4_ERR_IHL,     /* IHL < 5 or beyond the bytes present */
    IP4_ERR_LEN,     /* total length < IHL or > bytes present */
    IP4_ERR_CSUM,    /* header checksum wrong */
};
/* Validate per RFC 1122 3.2.1 / RFC 1812 5.2.2 and decode. */
enum ip4_parse_err ip4_parse(const uint8_t *p, size_t len, struct ip4_view *v);
/* The fields of a header this process parsed or wrote before (an ICMP error's subject,
 * a datagram to fragment, one another worker handed over): the version and bounds are
 * checked, the checksum and length are not. */
enum ip4_parse_err ip4_peek(const uint8_t *p, size_t len, struct ip4_view *v);
/* Rewrite fields of an IPv4 header in place; ip4_fix_csum afterwards. */
void ip4_set_ttl(uint8_t *p, uint8_t ttl);
void ip4_set_len_frag(uint8_t *p, uint16_t tot_len, uint16_t frag);
void ip4_fix_csum(uint8_t *p, uint8_t ihl);
static inline uint32_t ip4_frag_off(const struct ip4_view *v)
{
    return (uint32_t)(v->frag & IP4_OFFMASK) * 8;
}
static inline bool ip4_is_frag(const struct ip4_view *v)
{
    return (v->frag & (IP4_MF | IP4_OFFMASK)) != 0;
}
/* Write a 20-byte header with checksum at p. */
void ip4_write(uint8_t *p, uint8_t tos, uint16_t tot_len, uint16_t id, uint16_t frag, uint8_t ttl,
               uint8_t proto, uint32_t src, uint32_t dst);

/* ---- ICMPv4 (RFC 792) ---- */
#define ICMP_HLEN             8
#define ICMP_ECHOREPLY        0
#define ICMP_DEST_UNREACH     3
#define ICMP_SOURCE_QUENCH    4
#define ICMP_REDIRECT         5
#define ICMP_ECHO             8
#define ICMP_TIME_EXCEEDED    11
#define ICMP_PARAMPROB        12
#define ICMP_UNREACH_NET      0
#define ICMP_UNREACH_HOST     1
#define ICMP_UNREACH_PROTO    2
#define ICMP_UNREACH_PORT     3
#define ICMP_UNREACH_NEEDFRAG 4
#define ICMP_EXC_TTL          0
#define ICMP_EXC_FRAGTIME     1
struct icmp_view {
    uint8_t type, code;
    uint16_t csum;
    uint32_t rest;       /* id/seq for echo, next-hop MTU for frag-needed, ... */
    const uint8_t *body; /* bytes after the 8-byte header */
    uint32_t bodylen;
};
int icmp_parse(const uint8_t *p, size_t len, struct icmp_view *v);
/* Write an ICMP header (rest: the second word, id/seq or the next-hop MTU), checksum
 * zero: the caller sums the message and stores it at ICMP_CSUM_OFF. */
#define ICMP_CSUM_OFF 2
void icmp_write(uint8_t *p, uint8_t type, uint8_t code, uint32_t rest);

/* The datagram an ICMP error quotes (RFC 792, RFC 1812 4.3.2.3): an IPv4 header and at
 * least the first 8 bytes of what it carried, enough for the ports and, for TCP, the
 * sequence number. */
struct icmp_quote_view {
    uint32_t src, dst; /* host order */
    uint8_t proto;
    uint16_t sport, dport; /* the transport header's first 4 bytes */
    uint32_t l4_word1;     /* its bytes 4-7: TCP's sequence number */
};
/* 0, or -EBADMSG when it is shorter than a whole IPv4 header and 8 bytes, or not IPv4. */
int icmp_quote_parse(const uint8_t *q, size_t len, struct icmp_quote_view *v);

/* ---- UDP (RFC 768); TCP follows the same shape ---- */
#define UDP_HLEN 8
struct udp_view {
    uint16_t sport, dport, len, csum;
};
int udp_parse(const uint8_t *p, size_t len, struct udp_view *v);
/* Write a UDP header for len bytes (header included), checksum zero (UDP_CSUM_OFF). */
#define UDP_CSUM_OFF 6
void udp_write(uint8_t *p, uint16_t sport, uint16_t dport, uint16_t len);

#define TCP_HLEN 20
struct tcp_view {
    uint16_t sport, dport;
    uint32_t seq, ack;
    uint8_t doff; /* header length in bytes */
    uint8_t flags;
    uint16_t win, csum, urg;
    const uint8_t *opts;
    uint32_t optlen;
};
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_PSH 0x08
#define TCP_ACK 0x10
#define TCP_URG 0x20
int tcp_parse(const uint8_t *p, size_t len, struct tcp_view *v);
/* Write a TCP header of hlen bytes (options follow it, the caller's), checksum and urgent
 * pointer zero (TCP_CSUM_OFF). */
#define TCP_CSUM_OFF 16
void tcp_write(uint8_t *p, uint16_t sport, uint16_t dport, uint32_t seq, uint32_t ack, uint8_t hlen,
               uint8_t flags, uint16_t win);

/* TCP options (kinds, RFC 9293 3.1), and what a segment's options say. */
#define TCPOPT_EOL       0
#define TCPOPT_NOP       1
#define TCPOPT_MSS       2
#define TCPOPT_WS        3
#define TCPOPT_SACK_PERM 4
#define TCPOPT_SACK      5
#define TCPOPT_TS        8
struct tcp_opts {
    bool mss_ok, ws_ok, sack_perm, ts_ok;
    uint16_t mss;
    uint8_t ws; /* at most 14 (RFC 7323 2.3) */
    uint32_t tsval, tsecr;
    struct {
        uint32_t start, end;
    } sack[4];
    uint8_t nsack;
};
/* Options of a segment (syn: the ones only a SYN carries count). 0, or -EBADMSG for a
 * malformed list (what came before it stays parsed). */
int tcp_opts_parse(const uint8_t *p, uint32_t len, bool syn, struct tcp_opts *o);

/* Address helpers (host order). */
static inline uint32_t ip4_mask(uint8_t plen)
{
    return plen ? ~0u << (32 - plen) : 0;
}
/* Format "a.b.c.d" into buf (>= 16 bytes); returns buf. */
char *ip4_fmt(uint32_t a, char *buf);
char *mac_fmt(const uint8_t *m, char *buf); /* buf >= 18 bytes */

#endif
