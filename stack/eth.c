/* Ethernet: MAC filter, promiscuous mode, 802.1Q, demux by ethertype; TX batching. */
#include "stack/stack_impl.h"

void eth_input(struct stack *st, int ifidx, struct pktbuf *pb)
{
    struct stack_if *ifp = &st->ifs[ifidx];
    struct eth_view e;
    CNT_INC(&st->cnt, eth_rx);
    if (eth_parse(pktbuf_data(pb), pb->len, &e)) {
        CNT_INC(&st->cnt, eth_drop_short);
        goto drop;
    }
    /* A tag with VID 0 is a priority tag only (802.1Q 9.6): treat as untagged. */
    uint16_t vid = e.tagged ? e.vid : 0;
    if (vid != ifp->p.vlan) {
        CNT_INC(&st->cnt, eth_drop_vlan);
        goto drop;
    }
    bool to_us = memcmp(e.dst, ifp->p.mac, ETH_ALEN) == 0;
    if (!to_us && !eth_is_mcast(e.dst) && !ifp->p.promiscuous) {
        CNT_INC(&st->cnt, eth_drop_not_ours);
        goto drop;
    }
    /* A multicast source address is invalid (IEEE 802.3 3.2.3); our own source is a loop. */
    if (eth_is_mcast(e.src) || memcmp(e.src, ifp->p.mac, ETH_ALEN) == 0) {
        CNT_INC(&st->cnt, eth_drop_src);
        goto drop;
    }
    pb->vlan = vid;
    pktbuf_pull(pb, e.hlen);
    pb->l3off = pb->off;
    switch (e.type) {
    case ETHERTYPE_IPV4:
        /* Promiscuous mode lets us see other hosts' unicast; only our own is IP input. */
        if (!to_us && !eth_is_mcast(e.dst)) {
            CNT_INC(&st->cnt, eth_drop_not_ours);
            goto drop;
        }
        ip4_input(st, ifidx, pb);
        return;
    case ETHERTYPE_ARP:
        arp_input(st, ifidx, pb);
        return;
    default:
        CNT_INC(&st->cnt, eth_drop_proto);
        goto drop;
    }
drop:
    pktbuf_free(pb);
}

void eth_output(struct stack *st, int ifidx, struct pktbuf *pb, const uint8_t dst[6], uint16_t type)
{
    struct stack_if *ifp = &st->ifs[ifidx];
    uint32_t hlen = ifp->p.vlan ? ETH_HLEN + ETH_VLAN_HLEN : ETH_HLEN;
    uint8_t *h = pktbuf_push(pb, hlen);
    if (!h) { /* cannot happen with PKTBUF_HEADROOM; counted rather than trusted */
        CNT_INC(&st->cnt, ip4_drop_nobuf);
        pktbuf_free(pb);
        return;
    }
    eth_write(h, dst, ifp->p.mac, ifp->p.vlan, type);
    /* Pad to the Ethernet minimum (IEEE 802.3): TAP would send runts as they are. */
    if (pb->len < ETH_MIN_FRAME) {
        uint32_t pad = ETH_MIN_FRAME - pb->len;
        uint8_t *t = pktbuf_put(pb, pad);
        if (t)
            memset(t, 0, pad);
    }
    pb->ifindex = (uint16_t)ifidx;
    CNT_INC(&st->cnt, eth_tx);
    ifp->tx[ifp->ntx++] = pb;
    if (ifp->ntx == NIC_BURST)
        stack_if_flush(st, ifidx);
}
