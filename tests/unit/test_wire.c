/* Wire views and pktbuf: literal packet bytes. */
#include <criterion/criterion.h>
#include <errno.h>

#include "core/pktbuf.h"
#include "stack/wire.h"

/* An ICMP echo request 10.200.0.1 -> 10.200.0.2 as Linux sends it (id 0x1c46, seq 1; ICMP part cut short). */
static const uint8_t ping_frame[] = {
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x6a, 0x1c, 0x9e, 0x7a, 0x3c, 0x01, 0x08, 0x00,
    0x45, 0x00, 0x00, 0x54, 0x8f, 0x2d, 0x40, 0x00, 0x40, 0x01, 0x95, 0xe9, 0x0a, 0xc8,
    0x00, 0x01, 0x0a, 0xc8, 0x00, 0x02, 0x08, 0x00, 0x00, 0x00, 0x1c, 0x46, 0x00, 0x01,
};

Test(wire, eth_parse_plain_and_vlan)
{
    struct eth_view e;
    cr_assert_eq(eth_parse(ping_frame, sizeof(ping_frame), &e), 0);
    cr_assert_eq(e.type, ETHERTYPE_IPV4);
    cr_assert_eq(e.hlen, 14);
    cr_assert_not(e.tagged);
    cr_assert_eq(e.src[0], 0x6a);
    cr_assert_eq(eth_parse(ping_frame, 13, &e), -EBADMSG);

    uint8_t f[18] = {0};
    uint32_t n = eth_write(f, ping_frame, ping_frame + 6, 42, ETHERTYPE_ARP);
    cr_assert_eq(n, 18);
    cr_assert_eq(eth_parse(f, 18, &e), 0);
    cr_assert(e.tagged);
    cr_assert_eq(e.vid, 42);
    cr_assert_eq(e.type, ETHERTYPE_ARP);
    cr_assert_eq(eth_parse(f, 17, &e), -EBADMSG, "tag without the inner type is short");
}

Test(wire, ip4_parse_valid_header)
{
    struct ip4_view ip;
    /* The frame is cut after 8 ICMP bytes; claim only what is there. */
    uint8_t h[28];
    memcpy(h, ping_frame + 14, 28);
    wr16(h + 2, 28);
    wr16(h + 10, 0);
    wr16(h + 10, csum(h, 20));
    cr_assert_eq(ip4_parse(h, sizeof(h), &ip), IP4_OK);
    cr_assert_eq(ip.src, 0x0ac80001);
    cr_assert_eq(ip.dst, 0x0ac80002);
    cr_assert_eq(ip.proto, 1);
    cr_assert_eq(ip.ttl, 64);
    cr_assert_eq(ip.frag, IP4_DF);
    cr_assert_not(ip4_is_frag(&ip));
}

Test(wire, ip4_parse_original_checksum)
{
    /* Literal header with the sender's checksum 0x95e9: must verify as is. */
    struct ip4_view ip;
    uint8_t h[84] = {0};
    memcpy(h, ping_frame + 14, 20);
    cr_assert_eq(ip4_parse(h, sizeof(h), &ip), IP4_OK);
    cr_assert_eq(ip.csum, 0x95e9);
    cr_assert_eq(ip.tot_len, 84);
}

Test(wire, ip4_parse_errors)
{
    uint8_t h[40];
    struct ip4_view ip;
    ip4_write(h, 0, 40, 1, 0, 64, 17, 0x01020304, 0x05060708);
    memset(h + 20, 0, 20);
    cr_assert_eq(ip4_parse(h, 19, &ip), IP4_ERR_SHORT);
    uint8_t b[40];
    memcpy(b, h, 40);
    b[0] = 0x65;
    cr_assert_eq(ip4_parse(b, 40, &ip), IP4_ERR_VERSION);
    memcpy(b, h, 40);
    b[0] = 0x43; /* IHL 12 bytes */
    cr_assert_eq(ip4_parse(b, 40, &ip), IP4_ERR_IHL);
    b[0] = 0x4f; /* IHL 60 > 40 bytes present */
    cr_assert_eq(ip4_parse(b, 40, &ip), IP4_ERR_IHL);
    memcpy(b, h, 40);
    wr16(b + 2, 41);
    cr_assert_eq(ip4_parse(b, 40, &ip), IP4_ERR_LEN);
    wr16(b + 2, 19);
    cr_assert_eq(ip4_parse(b, 40, &ip), IP4_ERR_LEN);
    memcpy(b, h, 40);
    b[10] ^= 1;
    cr_assert_eq(ip4_parse(b, 40, &ip), IP4_ERR_CSUM);
    cr_assert_eq(ip4_parse(h, 40, &ip), IP4_OK);
}

Test(wire, checksum_rfc1071_example)
{
    /* RFC 1071 section 3 example: the sum of these words is 0xddf2 -> checksum 0x220d. */
    const uint8_t d[] = {0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7};
    cr_assert_eq(csum(d, sizeof(d)), 0x220d);
    const uint8_t odd[] = {0x01};
    cr_assert_eq(csum(odd, 1), (uint16_t)~0x0100);
}

Test(wire, arp_icmp_udp_tcp_views)
{
    uint8_t a[ARP_LEN];
    arp_write(a, ARP_OP_REQUEST, ping_frame, 0x0a000001, ping_frame + 6, 0x0a000002);
    struct arp_view av;
    cr_assert_eq(arp_parse(a, ARP_LEN, &av), 0);
    cr_assert_eq(av.op, 1);
    cr_assert_eq(av.spa, 0x0a000001);
    cr_assert_eq(av.tpa, 0x0a000002);
    cr_assert_eq(arp_parse(a, ARP_LEN - 1, &av), -EBADMSG);
    a[5] = 16; /* IPv6-sized protocol address */
    cr_assert_eq(arp_parse(a, ARP_LEN, &av), -EPROTONOSUPPORT);

    struct icmp_view iv;
    cr_assert_eq(icmp_parse(ping_frame + 34, 8, &iv), 0);
    cr_assert_eq(iv.type, ICMP_ECHO);
    cr_assert_eq(iv.rest, 0x1c460001);
    cr_assert_eq(icmp_parse(ping_frame + 34, 7, &iv), -EBADMSG);

    uint8_t u[8] = {0x30, 0x39, 0x00, 0x35, 0x00, 0x08, 0, 0};
    struct udp_view uv;
    cr_assert_eq(udp_parse(u, 8, &uv), 0);
    cr_assert_eq(uv.sport, 12345);
    cr_assert_eq(uv.dport, 53);
    u[5] = 9; /* length beyond the bytes */
    cr_assert_eq(udp_parse(u, 8, &uv), -EBADMSG);

    uint8_t t[24] = {0};
    t[12] = 6 << 4; /* 24-byte header */
    struct tcp_view tv;
    cr_assert_eq(tcp_parse(t, 24, &tv), 0);
    cr_assert_eq(tv.optlen, 4);
    cr_assert_eq(tcp_parse(t, 23, &tv), -EBADMSG);
    t[12] = 4 << 4; /* data offset below 5 */
    cr_assert_eq(tcp_parse(t, 24, &tv), -EBADMSG);
}

Test(pktbuf, push_pull_put_limits)
{
    struct pktbuf_pool p;
    cr_assert_eq(pktbuf_pool_init(&p, 2, 2048), 0);
    struct pktbuf *a = pktbuf_alloc(&p), *b = pktbuf_alloc(&p);
    cr_assert(a && b);
    cr_assert_null(pktbuf_alloc(&p));
    cr_assert_eq(p.alloc_fail, 1);
    cr_assert_eq(pktbuf_headroom(a), PKTBUF_HEADROOM);
    cr_assert_not_null(pktbuf_put(a, 100));
    cr_assert_not_null(pktbuf_push(a, PKTBUF_HEADROOM));
    cr_assert_null(pktbuf_push(a, 1), "no headroom left");
    cr_assert_eq(a->len, 100 + PKTBUF_HEADROOM);
    cr_assert_null(pktbuf_pull(a, a->len + 1));
    cr_assert_not_null(pktbuf_pull(a, a->len));
    cr_assert_null(pktbuf_put(a, pktbuf_tailroom(a) + 1));
    pktbuf_free(a);
    pktbuf_free(b);
    cr_assert_eq(p.nfree, 2);
    pktbuf_pool_destroy(&p);
    cr_assert_eq(pktbuf_pool_init(&p, 0, 2048), -EINVAL);
}

/* The datagram an ICMP error quotes: an IPv4 header (options allowed) and 8 bytes. */
Test(wire, icmp_quote_view)
{
    uint8_t q[32] = {0};
    ip4_write(q, 0, 28, 5, 0, 64, 6, 0x0ac80002u, 0x0ac80001u);
    wr16(q + 20, 40000);
    wr16(q + 22, 80);
    wr32(q + 24, 0x01020304u);
    struct icmp_quote_view v;
    cr_assert_eq(icmp_quote_parse(q, 28, &v), 0);
    cr_assert_eq(v.src, 0x0ac80002u);
    cr_assert_eq(v.dst, 0x0ac80001u);
    cr_assert_eq(v.proto, 6);
    cr_assert_eq(v.sport, 40000);
    cr_assert_eq(v.dport, 80);
    cr_assert_eq(v.l4_word1, 0x01020304u);
    cr_assert_eq(icmp_quote_parse(q, 27, &v), -EBADMSG, "fewer than 8 bytes after the header");
    q[0] = 0x46; /* a 24-byte header: the 8 bytes end beyond what is quoted */
    cr_assert_eq(icmp_quote_parse(q, 28, &v), -EBADMSG);
    cr_assert_eq(icmp_quote_parse(q, 32, &v), 0);
    q[0] = 0x44; /* IHL below 5 */
    cr_assert_eq(icmp_quote_parse(q, 32, &v), -EBADMSG);
    q[0] = 0x65; /* not IPv4 */
    cr_assert_eq(icmp_quote_parse(q, 32, &v), -EBADMSG);
}

/* TCP options: what a SYN carries, the 14 cap of the window scale, SACK blocks only
 * outside SYNs, and a malformed list. */
Test(wire, tcp_options)
{
    const uint8_t syn[] = {
        TCPOPT_MSS, 4, 0x05, 0xb4, TCPOPT_SACK_PERM, 2,         TCPOPT_TS, 10, 0, 0, 0, 1,
        0,          0, 0,    0,    TCPOPT_NOP,       TCPOPT_WS, 3,         15};
    struct tcp_opts o;
    cr_assert_eq(tcp_opts_parse(syn, sizeof(syn), true, &o), 0);
    cr_assert(o.mss_ok && o.mss == 1460);
    cr_assert(o.sack_perm && o.ts_ok && o.tsval == 1 && o.tsecr == 0);
    cr_assert(o.ws_ok && o.ws == 14, "a shift above 14 is 14 (RFC 7323 2.3)");
    cr_assert_eq(tcp_opts_parse(syn, sizeof(syn), false, &o), 0);
    cr_assert(!o.mss_ok && !o.ws_ok && !o.sack_perm, "SYN-only options outside a SYN");
    const uint8_t sack[] = {TCPOPT_NOP, TCPOPT_NOP, TCPOPT_SACK, 10, 0, 0, 0, 100, 0, 0, 0, 200};
    cr_assert_eq(tcp_opts_parse(sack, sizeof(sack), false, &o), 0);
    cr_assert_eq(o.nsack, 1);
    cr_assert(o.sack[0].start == 100 && o.sack[0].end == 200);
    cr_assert_eq(tcp_opts_parse(sack, sizeof(sack), true, &o), 0);
    cr_assert_eq(o.nsack, 0, "no SACK blocks on a SYN");
    const uint8_t bad[] = {TCPOPT_MSS, 9, 0x05, 0xb4};
    cr_assert_eq(tcp_opts_parse(bad, sizeof(bad), true, &o), -EBADMSG);
    const uint8_t zero[] = {TCPOPT_TS, 0};
    cr_assert_eq(tcp_opts_parse(zero, sizeof(zero), false, &o), -EBADMSG, "length below 2");
}

/* Header writers and in-place rewrites give what the parsers read back. */
Test(wire, writers_read_back)
{
    uint8_t ip[24];
    ip4_write(ip, 0x10, 24, 7, 0, 64, 17, 0x0a000001u, 0x0a000002u);
    struct ip4_view v;
    cr_assert_eq(ip4_parse(ip, sizeof(ip), &v), IP4_OK);
    ip4_set_ttl(ip, 63);
    cr_assert_eq(ip4_parse(ip, sizeof(ip), &v), IP4_ERR_CSUM, "the old checksum");
    cr_assert_eq(ip4_peek(ip, sizeof(ip), &v), IP4_OK, "peek does not check it");
    ip4_set_len_frag(ip, 24, IP4_MF | 3);
    ip4_fix_csum(ip, IP4_HLEN);
    cr_assert_eq(ip4_parse(ip, sizeof(ip), &v), IP4_OK);
    cr_assert(v.ttl == 63 && v.frag == (IP4_MF | 3) && v.id == 7 && v.tos == 0x10);
    cr_assert_eq(ip4_peek(ip, 19, &v), IP4_ERR_SHORT);

    uint8_t t[20];
    tcp_write(t, 1234, 80, 1000, 2000, 20, TCP_SYN | TCP_ACK, 65535);
    struct tcp_view tv;
    cr_assert_eq(tcp_parse(t, sizeof(t), &tv), 0);
    cr_assert(tv.sport == 1234 && tv.dport == 80 && tv.seq == 1000 && tv.ack == 2000);
    cr_assert(tv.doff == 20 && tv.flags == (TCP_SYN | TCP_ACK) && tv.win == 65535 && !tv.csum);

    uint8_t u[8];
    udp_write(u, 53, 4000, 8);
    struct udp_view uv;
    cr_assert_eq(udp_parse(u, sizeof(u), &uv), 0);
    cr_assert(uv.sport == 53 && uv.dport == 4000 && uv.len == 8 && !uv.csum);

    uint8_t ic[8];
    icmp_write(ic, ICMP_ECHO, 0, 0x00010002u);
    struct icmp_view iv;
    cr_assert_eq(icmp_parse(ic, sizeof(ic), &iv), 0);
    cr_assert(iv.type == ICMP_ECHO && iv.code == 0 && iv.rest == 0x00010002u && !iv.csum);
}
