/* ICMPv4 (RFC 792, RFC 1122 3.2.2): echo, errors out (rate-limited), errors in. */
#include "stack/stack_impl.h"

#include <errno.h>

/* Token bucket over all ICMP errors: icmp_ratelimit_pps per second, one second of burst
 * (RFC 1812 4.3.2.8 asks for a limit; Linux's icmp_ratelimit is the same idea). */
static bool icmp_rate_ok(struct stack *st)
{
    uint32_t pps = st->par.icmp_ratelimit_pps;
    if (!pps)
        return true;
    uint64_t add = (st->now - st->icmp_tokens_ts) * pps / NS_PER_SEC;
    if (add) {
        uint64_t t = st->icmp_tokens + add;
        st->icmp_tokens = (uint32_t)(t > pps ? pps : t);
        st->icmp_tokens_ts = st->now;
    }
    if (!st->icmp_tokens)
        return false;
    st->icmp_tokens--;
    return true;
}

void icmp_send_error(struct stack *st, const struct pktbuf *orig, uint8_t type, uint8_t code,
                     uint32_t info)
{
    const uint8_t *oh = pktbuf_data(orig);
    struct ip4_view ip;
    if (ip4_peek(oh, orig->len, &ip) != IP4_OK)
        return;
    uint32_t ihl = ip.ihl, src = ip.src, dst = ip.dst;
    /* RFC 1122 3.2.2: never about an ICMP error, a non-first fragment, a broadcast or
     * multicast datagram, or one whose source is not a unicast host. */
    if ((ip.frag & IP4_OFFMASK) || ip4_is_bcast(st, dst) || ip4_is_mcast(dst) ||
        ip4_is_bcast(st, src) || ip4_is_mcast(src) || src == 0)
        return;
    if (ip.proto == IPPROTO_ICMP_ && orig->len >= ihl + 1) {
        uint8_t t = oh[ihl];
        if (t != ICMP_ECHO && t != ICMP_ECHOREPLY && t != 13 && t != 14)
            return;
    }
    if (!icmp_rate_ok(st)) {
        CNT_INC(&st->cnt, icmp_drop_ratelimit);
        return;
    }
    /* Quote the IP header and the first 8 bytes of its payload (RFC 792). */
    uint32_t qlen = orig->len < ihl + 8 ? orig->len : ihl + 8;
    struct pktbuf *pb = pktbuf_alloc(&st->pool);
    if (!pb) {
        CNT_INC(&st->cnt, ip4_drop_nobuf);
        return;
    }
    uint8_t *p = pktbuf_put(pb, ICMP_HLEN + qlen);
    /* Frag-needed carries the next-hop MTU in the low 16 bits (RFC 1191 4). */
    icmp_write(p, type, code,
               type == ICMP_DEST_UNREACH && code == ICMP_UNREACH_NEEDFRAG ? (info & 0xffff) : info);
    memcpy(p + ICMP_HLEN, oh, qlen);
    wr16(p + ICMP_CSUM_OFF, csum(p, ICMP_HLEN + qlen));
    CNT_INC(&st->cnt, icmp_tx);
    if (type == ICMP_TIME_EXCEEDED)
        CNT_INC(&st->cnt, icmp_tx_time_exceeded);
    else
        CNT_INC(&st->cnt, icmp_tx_unreach);
    /* Reply from the address the datagram was sent to if it is ours (RFC 1812 4.3.2.4). */
    uint32_t from = ip4_is_local(st, dst) && !ip4_is_bcast(st, dst) ? dst : 0;
    ip4_output(st, pb, from, src, IPPROTO_ICMP_, st->par.default_ttl, 0xc0, false);
}

static void icmp_error_input(struct stack *st, const struct icmp_view *ic)
{
    /* The quoted datagram must be one we sent: a full IP header plus 8 bytes of L4. */
    struct icmp_quote_view q;
    if (icmp_quote_parse(ic->body, ic->bodylen, &q) < 0) {
        CNT_INC(&st->cnt, icmp_drop_bad_error);
        return;
    }
    bool ours = false;
    for (int i = 0; i < st->nifs; i++)
        ours |= st->ifs[i].p.addr == q.src;
    if (!ours) {
        CNT_INC(&st->cnt, icmp_drop_bad_error);
        return;
    }
    CNT_INC(&st->cnt, icmp_rx_error);
    if (st->l4_err[q.proto])
        st->l4_err[q.proto](st, ic->type, ic->code, ic->rest, &q);
}

void icmp_input(struct stack *st, struct pktbuf *pb, const struct ip4_view *ip)
{
    CNT_INC(&st->cnt, icmp_rx);
    uint8_t *p = pktbuf_data(pb) + ip->ihl;
    uint32_t len = pb->len - ip->ihl;
    struct icmp_view ic;
    if (icmp_parse(p, len, &ic)) {
        CNT_INC(&st->cnt, icmp_drop_short);
        goto drop;
    }
    if (csum(p, len) != 0) {
        CNT_INC(&st->cnt, icmp_drop_csum);
        goto drop;
    }
    switch (ic.type) {
    case ICMP_ECHO: {
        CNT_INC(&st->cnt, icmp_rx_echo);
        /* Like Linux's icmp_echo_ignore_broadcasts=1 (smurf amplification). */
        if (ip4_is_bcast(st, ip->dst)) {
            CNT_INC(&st->cnt, icmp_drop_bcast);
            goto drop;
        }
        /* Turn the request into the reply in place (RFC 792: same data, id, seq). */
        icmp_write(p, ICMP_ECHOREPLY, 0, rd32(p + 4));
        wr16(p + ICMP_CSUM_OFF, csum(p, len));
        uint32_t to = ip->src, from = ip->dst;
        uint8_t tos = ip->tos;
        pktbuf_pull(pb, ip->ihl);
        CNT_INC(&st->cnt, icmp_tx);
        CNT_INC(&st->cnt, icmp_tx_echo_reply);
        ip4_output(st, pb, from, to, IPPROTO_ICMP_, st->par.default_ttl, tos, false);
        return;
    }
    case ICMP_ECHOREPLY:
        CNT_INC(&st->cnt, icmp_rx_echo_reply);
        st->ping_replies++;
        goto drop;
    case ICMP_DEST_UNREACH:
    case ICMP_SOURCE_QUENCH:
    case ICMP_TIME_EXCEEDED:
    case ICMP_PARAMPROB:
        icmp_error_input(st, &ic);
        goto drop;
    default:
        CNT_INC(&st->cnt, icmp_drop_type);
        goto drop;
    }
drop:
    pktbuf_free(pb);
}

/* An echo request from the stack itself (shmnetctl ping; the reply is counted). */
int stack_ping(struct stack *st, uint32_t dst, uint16_t id, uint16_t seq, uint32_t size)
{
    if (size > 65507 - ICMP_HLEN)
        return -EMSGSIZE;
    struct pktbuf_pool *pool =
        size + ICMP_HLEN + 64 > st->pool.bufsize - PKTBUF_HEADROOM ? &st->large : &st->pool;
    struct pktbuf *pb = pktbuf_alloc(pool);
    if (!pb) {
        CNT_INC(&st->cnt, ip4_drop_nobuf);
        return -ENOBUFS;
    }
    uint8_t *p = pktbuf_put(pb, ICMP_HLEN + size);
    icmp_write(p, ICMP_ECHO, 0, (uint32_t)id << 16 | seq);
    for (uint32_t i = 0; i < size; i++)
        p[ICMP_HLEN + i] = (uint8_t)i;
    wr16(p + ICMP_CSUM_OFF, csum(p, ICMP_HLEN + size));
    st->ping_last_seq = seq;
    CNT_INC(&st->cnt, icmp_tx);
    return ip4_output(st, pb, 0, dst, IPPROTO_ICMP_, st->par.default_ttl, 0, false);
}
