/* Wire views: length checks first, then byte-wise decoding. See wire.h. */
#include "stack/wire.h"

#include <errno.h>
#include <stdio.h>

uint32_t csum_partial(const void *data, size_t len, uint32_t sum)
{
    const uint8_t *p = data;
    /* 64-bit accumulator: no carry handling inside the loop. */
    uint64_t s = sum;
    while (len >= 2) {
        s += rd16(p);
        p += 2;
        len -= 2;
    }
    if (len)
        s += (uint32_t)p[0] << 8; /* odd byte padded with zero (RFC 1071) */
    while (s >> 32)
        s = (s & 0xffffffffu) + (s >> 32);
    /* Fold to 32 bits without losing carries; csum_fold finishes the job. */
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    return (uint32_t)s;
}

int eth_parse(const uint8_t *p, size_t len, struct eth_view *v)
{
    if (len < ETH_HLEN)
        return -EBADMSG;
    v->dst = p;
    v->src = p + ETH_ALEN;
    v->type = rd16(p + 12);
    v->hlen = ETH_HLEN;
    v->tagged = false;
    v->vid = 0;
    v->pcp = 0;
    if (v->type == ETHERTYPE_VLAN) {
        if (len < ETH_HLEN + ETH_VLAN_HLEN)
            return -EBADMSG;
        uint16_t tci = rd16(p + 14);
        v->tagged = true;
        v->vid = tci & 0x0fff;
        v->pcp = (uint8_t)(tci >> 13);
        v->type = rd16(p + 16);
        v->hlen = ETH_HLEN + ETH_VLAN_HLEN;
    }
    return 0;
}

uint32_t eth_write(uint8_t *p, const uint8_t dst[ETH_ALEN], const uint8_t src[ETH_ALEN],
                   uint16_t vid, uint16_t type)
{
    memcpy(p, dst, ETH_ALEN);
    memcpy(p + ETH_ALEN, src, ETH_ALEN);
    if (vid) {
        wr16(p + 12, ETHERTYPE_VLAN);
        wr16(p + 14, vid & 0x0fff);
        wr16(p + 16, type);
        return ETH_HLEN + ETH_VLAN_HLEN;
    }
    wr16(p + 12, type);
    return ETH_HLEN;
}

int arp_parse(const uint8_t *p, size_t len, struct arp_view *v)
{
    if (len < 8)
        return -EBADMSG;
    v->htype = rd16(p);
    v->ptype = rd16(p + 2);
    v->hlen = p[4];
    v->plen = p[5];
    v->op = rd16(p + 6);
    if (v->htype != 1 || v->ptype != ETHERTYPE_IPV4 || v->hlen != ETH_ALEN || v->plen != 4)
        return -EPROTONOSUPPORT;
    if (len < ARP_LEN)
        return -EBADMSG;
    v->sha = p + 8;
    v->spa = rd32(p + 14);
    v->tha = p + 18;
    v->tpa = rd32(p + 24);
    return 0;
}

void arp_write(uint8_t *p, uint16_t op, const uint8_t sha[ETH_ALEN], uint32_t spa,
               const uint8_t tha[ETH_ALEN], uint32_t tpa)
{
    wr16(p, 1);
    wr16(p + 2, ETHERTYPE_IPV4);
    p[4] = ETH_ALEN;
    p[5] = 4;
    wr16(p + 6, op);
    memcpy(p + 8, sha, ETH_ALEN);
    wr32(p + 14, spa);
    memcpy(p + 18, tha, ETH_ALEN);
    wr32(p + 24, tpa);
}

static void ip4_fields(const uint8_t *p, struct ip4_view *v)
{
    v->tot_len = rd16(p + 2);
    v->tos = p[1];
    v->id = rd16(p + 4);
    v->frag = rd16(p + 6);
    v->ttl = p[8];
    v->proto = p[9];
    v->csum = rd16(p + 10);
    v->src = rd32(p + 12);
    v->dst = rd32(p + 16);
    v->opts = p + IP4_HLEN;
    v->optlen = v->ihl - IP4_HLEN;
}

enum ip4_parse_err ip4_peek(const uint8_t *p, size_t len, struct ip4_view *v)
{
    if (len < IP4_HLEN)
        return IP4_ERR_SHORT;
    if (p[0] >> 4 != 4)
        return IP4_ERR_VERSION;
    v->ihl = (uint8_t)((p[0] & 0x0f) * 4);
    if (v->ihl < IP4_HLEN || v->ihl > len)
        return IP4_ERR_IHL;
    ip4_fields(p, v);
    return IP4_OK;
}

void ip4_set_ttl(uint8_t *p, uint8_t ttl)
{
    p[8] = ttl;
}

void ip4_set_len_frag(uint8_t *p, uint16_t tot_len, uint16_t frag)
{
    wr16(p + 2, tot_len);
    wr16(p + 6, frag);
}

void ip4_fix_csum(uint8_t *p, uint8_t ihl)
{
    wr16(p + 10, 0);
    wr16(p + 10, csum(p, ihl));
}

enum ip4_parse_err ip4_parse(const uint8_t *p, size_t len, struct ip4_view *v)
{
    enum ip4_parse_err e = ip4_peek(p, len, v);
    if (e != IP4_OK)
        return e;
    if (v->tot_len < v->ihl || v->tot_len > len)
        return IP4_ERR_LEN;
    /* Verify over the header as received: a correct header sums to zero (RFC 1071). */
    if (csum(p, v->ihl) != 0)
        return IP4_ERR_CSUM;
    return IP4_OK;
}

void ip4_write(uint8_t *p, uint8_t tos, uint16_t tot_len, uint16_t id, uint16_t frag, uint8_t ttl,
               uint8_t proto, uint32_t src, uint32_t dst)
{
    p[0] = 0x45;
    p[1] = tos;
    wr16(p + 2, tot_len);
    wr16(p + 4, id);
    wr16(p + 6, frag);
    p[8] = ttl;
    p[9] = proto;
    wr16(p + 10, 0);
    wr32(p + 12, src);
    wr32(p + 16, dst);
    wr16(p + 10, csum(p, IP4_HLEN));
}

int icmp_parse(const uint8_t *p, size_t len, struct icmp_view *v)
{
    if (len < ICMP_HLEN)
        return -EBADMSG;
    v->type = p[0];
    v->code = p[1];
    v->csum = rd16(p + 2);
    v->rest = rd32(p + 4);
    v->body = p + ICMP_HLEN;
    v->bodylen = (uint32_t)(len - ICMP_HLEN);
    return 0;
}

int icmp_quote_parse(const uint8_t *q, size_t len, struct icmp_quote_view *v)
{
    if (len < IP4_HLEN + 8 || q[0] >> 4 != 4)
        return -EBADMSG;
    uint32_t ihl = (q[0] & 0x0fu) * 4u;
    if (ihl < IP4_HLEN || len < ihl + 8)
        return -EBADMSG;
    v->src = rd32(q + 12);
    v->dst = rd32(q + 16);
    v->proto = q[9];
    v->sport = rd16(q + ihl);
    v->dport = rd16(q + ihl + 2);
    v->l4_word1 = rd32(q + ihl + 4);
    return 0;
}

void icmp_write(uint8_t *p, uint8_t type, uint8_t code, uint32_t rest)
{
    p[0] = type;
    p[1] = code;
    wr16(p + ICMP_CSUM_OFF, 0);
    wr32(p + 4, rest);
}

void udp_write(uint8_t *p, uint16_t sport, uint16_t dport, uint16_t len)
{
    wr16(p, sport);
    wr16(p + 2, dport);
    wr16(p + 4, len);
    wr16(p + UDP_CSUM_OFF, 0);
}

void tcp_write(uint8_t *p, uint16_t sport, uint16_t dport, uint32_t seq, uint32_t ack, uint8_t hlen,
               uint8_t flags, uint16_t win)
{
    wr16(p, sport);
    wr16(p + 2, dport);
    wr32(p + 4, seq);
    wr32(p + 8, ack);
    p[12] = (uint8_t)((hlen / 4) << 4);
    p[13] = flags;
    wr16(p + 14, win);
    wr16(p + TCP_CSUM_OFF, 0);
    wr16(p + 18, 0);
}

int udp_parse(const uint8_t *p, size_t len, struct udp_view *v)
{
    if (len < UDP_HLEN)
        return -EBADMSG;
    v->sport = rd16(p);
    v->dport = rd16(p + 2);
    v->len = rd16(p + 4);
    v->csum = rd16(p + 6);
    if (v->len < UDP_HLEN || v->len > len)
        return -EBADMSG;
    return 0;
}

int tcp_parse(const uint8_t *p, size_t len, struct tcp_view *v)
{
    if (len < TCP_HLEN)
        return -EBADMSG;
    v->sport = rd16(p);
    v->dport = rd16(p + 2);
    v->seq = rd32(p + 4);
    v->ack = rd32(p + 8);
    v->doff = (uint8_t)((p[12] >> 4) * 4);
    v->flags = p[13];
    v->win = rd16(p + 14);
    v->csum = rd16(p + 16);
    v->urg = rd16(p + 18);
    if (v->doff < TCP_HLEN || v->doff > len)
        return -EBADMSG;
    v->opts = p + TCP_HLEN;
    v->optlen = v->doff - TCP_HLEN;
    return 0;
}

/* RFC 9293 3.1, RFC 7323, RFC 2018. */
int tcp_opts_parse(const uint8_t *p, uint32_t len, bool syn, struct tcp_opts *o)
{
    memset(o, 0, sizeof(*o));
    uint32_t i = 0;
    while (i < len) {
        uint8_t kind = p[i];
        if (kind == TCPOPT_EOL)
            break;
        if (kind == TCPOPT_NOP) {
            i++;
            continue;
        }
        if (i + 1 >= len || p[i + 1] < 2 || i + p[i + 1] > len)
            return -EBADMSG; /* malformed: RFC 9293 3.1 says ignore the rest; we stop */
        uint8_t olen = p[i + 1];
        const uint8_t *v = p + i + 2;
        switch (kind) {
        case TCPOPT_MSS:
            if (olen == 4 && syn) {
                o->mss_ok = true;
                o->mss = rd16(v);
            }
            break;
        case TCPOPT_WS:
            if (olen == 3 && syn) {
                o->ws_ok = true;
                o->ws = v[0] > 14 ? 14 : v[0]; /* RFC 7323 2.3: larger shifts mean 14 */
            }
            break;
        case TCPOPT_SACK_PERM:
            if (olen == 2 && syn)
                o->sack_perm = true;
            break;
        case TCPOPT_TS:
            if (olen == 10) {
                o->ts_ok = true;
                o->tsval = rd32(v);
                o->tsecr = rd32(v + 4);
            }
            break;
        case TCPOPT_SACK:
            if (olen >= 10 && (olen - 2) % 8 == 0 && !syn) {
                for (uint32_t k = 0; k < (olen - 2u) / 8 && o->nsack < 4; k++) {
                    o->sack[o->nsack].start = rd32(v + 8 * k);
                    o->sack[o->nsack].end = rd32(v + 8 * k + 4);
                    o->nsack++;
                }
            }
            break;
        default:
            break; /* unknown options are ignored (RFC 9293 3.2) */
        }
        i += olen;
    }
    return 0;
}

char *ip4_fmt(uint32_t a, char *buf)
{
    snprintf(buf, 16, "%u.%u.%u.%u", a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255);
    return buf;
}

char *mac_fmt(const uint8_t *m, char *buf)
{
    snprintf(buf, 18, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
    return buf;
}
