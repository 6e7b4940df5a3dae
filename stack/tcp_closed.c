/* Until TCP sockets exist, every port is closed: answer per RFC 9293 3.10.7.1 so peers get
 * an immediate "connection refused" instead of retrying SYNs. */
#include "stack/stack_impl.h"

#include <errno.h>

int tcp_closed_input(struct stack *st, struct pktbuf *pb, const struct ip4_view *ip)
{
    const uint8_t *p = pktbuf_data(pb) + ip->ihl;
    uint32_t len = pb->len - ip->ihl;
    struct tcp_view t;
    CNT_INC(&st->cnt, tcp_rx);
    if (tcp_parse(p, len, &t)) {
        CNT_INC(&st->cnt, tcp_drop_short);
        return -EBADMSG;
    }
    if (csum_fold(csum_partial(p, len,
                               csum_pseudo4(ip->src, ip->dst, IPPROTO_TCP_, (uint16_t)len))) != 0) {
        CNT_INC(&st->cnt, tcp_drop_csum);
        return -EBADMSG;
    }
    CNT_INC(&st->cnt, tcp_drop_no_port);
    if (t.flags & TCP_RST) /* never answer a reset */
        return -ECONNREFUSED;
    if (ip4_is_bcast(st, ip->dst))
        return -ECONNREFUSED;
    uint32_t seglen = len - t.doff + ((t.flags & TCP_SYN) ? 1 : 0) + ((t.flags & TCP_FIN) ? 1 : 0);
    uint32_t seq, ack;
    uint8_t flags;
    if (t.flags & TCP_ACK) {
        seq = t.ack; /* <SEQ=SEG.ACK><CTL=RST> */
        ack = 0;
        flags = TCP_RST;
    } else {
        seq = 0; /* <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK> */
        ack = t.seq + seglen;
        flags = TCP_RST | TCP_ACK;
    }
    uint32_t src = ip->dst, dst = ip->src;
    uint16_t sport = t.dport, dport = t.sport;
    /* Reuse the segment's buffer for the reset. */
    pktbuf_pull(pb, ip->ihl);
    pktbuf_trim(pb, TCP_HLEN);
    uint8_t *h = pktbuf_data(pb);
    wr16(h, sport);
    wr16(h + 2, dport);
    wr32(h + 4, seq);
    wr32(h + 8, ack);
    h[12] = (TCP_HLEN / 4) << 4;
    h[13] = flags;
    wr16(h + 14, 0);
    wr16(h + 16, 0);
    wr16(h + 18, 0);
    wr16(h + 16,
         csum_fold(csum_partial(h, TCP_HLEN, csum_pseudo4(src, dst, IPPROTO_TCP_, TCP_HLEN))));
    CNT_INC(&st->cnt, tcp_tx_rst);
    ip4_output(st, pb, src, dst, IPPROTO_TCP_, st->par.default_ttl, 0, true);
    return 0;
}
