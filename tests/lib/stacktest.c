#include "tests/lib/stacktest.h"

#include <criterion/criterion.h>
#include <string.h>

const uint8_t st_mac_a[6] = {2, 0, 0, 0, 0, 2};
const uint8_t st_mac_peer[6] = {2, 0, 0, 0, 0, 1};

void stest_init_addr(struct stest *t, const struct stack_params *p, uint32_t addr,
                     const uint8_t mac[6], const struct nic_fault_params *fault)
{
    struct stack_params def;
    if (!p) {
        stack_params_defaults(&def);
        def.pktbufs = 1024;
        p = &def;
    }
    memset(t, 0, sizeof(*t));
    t->now = 1000 * T_SEC;
    cr_assert_eq(stack_init(&t->st, p, t->now), 0);
    struct nic_params np = {0};
    strcpy(np.name, "sim0");
    strcpy(np.backend, "sim");
    memcpy(np.mac, mac, 6);
    np.mtu = 1500;
    np.nqueues = 1;
    np.rx_ring = 256;
    np.tx_ring = 256;
    if (fault)
        np.fault = *fault;
    cr_assert_eq(nic_open(&t->nic, &np), 0);
    struct stack_iface_params ip = {0};
    strcpy(ip.name, "sim0");
    memcpy(ip.mac, mac, 6);
    ip.mtu = 1500;
    ip.addr = addr;
    ip.plen = 24;
    cr_assert_eq(stack_add_if(&t->st, &ip, &t->nic, 0), 0);
}

void stest_init(struct stest *t, const struct stack_params *p)
{
    stest_init_addr(t, p, ST_ADDR_A, st_mac_a, NULL);
}

void stest_fini(struct stest *t)
{
    stest_tx_drain(t);
    /* The NIC returns frames it still holds to the stack's pool: close it first. */
    nic_close(&t->nic);
    stack_destroy(&t->st);
}

void stest_step(struct stest *t, uint64_t ns)
{
    t->now += ns;
    stack_poll(&t->st, t->now);
    while (stack_rx(&t->st, 64) > 0)
        ;
    stack_flush(&t->st);
}

void stest_rx(struct stest *t, const uint8_t *frame, uint32_t len)
{
    cr_assert_eq(nic_sim_inject(&t->nic, frame, len), 0);
    stest_step(t, 0);
}

uint32_t stest_tx(struct stest *t, uint8_t *buf, uint32_t cap)
{
    struct pktbuf *pb = nic_sim_take_tx(&t->nic);
    if (!pb)
        return 0;
    uint32_t n = pb->len < cap ? pb->len : cap;
    memcpy(buf, pktbuf_data(pb), n);
    pktbuf_free(pb);
    return n;
}

uint32_t stest_tx_ip(struct stest *t, uint8_t *buf, uint32_t cap)
{
    uint32_t n;
    while ((n = stest_tx(t, buf, cap)) && n >= 14 && rd16(buf + 12) == ETHERTYPE_ARP)
        ;
    return n;
}

uint32_t stest_tx_count(struct stest *t)
{
    return nic_sim_tx_pending(&t->nic);
}

void stest_tx_drain(struct stest *t)
{
    struct pktbuf *pb;
    while ((pb = nic_sim_take_tx(&t->nic)))
        pktbuf_free(pb);
}

uint64_t stest_cnt(struct stest *t, const char *name)
{
    const uint64_t *c = (const uint64_t *)&t->st.cnt;
    for (int i = 0; i < STACK_NCOUNTERS; i++)
        if (!strcmp(stack_counter_names[i], name))
            return c[i];
    cr_assert_fail("no counter %s", name);
    return 0;
}

void stest_learn_peer(struct stest *t)
{
    uint8_t f[64];
    uint32_t n = build_arp(f, ARP_OP_REQUEST, st_mac_peer, ST_ADDR_PEER, (const uint8_t[6]){0},
                           ST_ADDR_A, (const uint8_t[6]){0xff, 0xff, 0xff, 0xff, 0xff, 0xff});
    stest_rx(t, f, n);
    stest_tx_drain(t);
}

uint32_t build_ip4(uint8_t *f, const uint8_t dmac[6], const uint8_t smac[6], uint32_t src,
                   uint32_t dst, uint8_t proto, uint16_t id, uint16_t frag, uint8_t ttl,
                   const uint8_t *l4, uint32_t l4len)
{
    uint32_t h = eth_write(f, dmac, smac, 0, ETHERTYPE_IPV4);
    ip4_write(f + h, 0, (uint16_t)(IP4_HLEN + l4len), id, frag, ttl, proto, src, dst);
    memcpy(f + h + IP4_HLEN, l4, l4len);
    return h + IP4_HLEN + l4len;
}

uint32_t build_echo(uint8_t *f, uint32_t src, uint32_t dst, uint16_t id, uint16_t seq,
                    uint32_t datalen)
{
    uint8_t l4[1600];
    l4[0] = ICMP_ECHO;
    l4[1] = 0;
    wr16(l4 + 2, 0);
    wr16(l4 + 4, id);
    wr16(l4 + 6, seq);
    for (uint32_t i = 0; i < datalen; i++)
        l4[8 + i] = (uint8_t)(i * 7);
    wr16(l4 + 2, csum(l4, 8 + datalen));
    return build_ip4(f, st_mac_a, st_mac_peer, src, dst, IPPROTO_ICMP_, seq, 0, 64, l4,
                     8 + datalen);
}

uint32_t build_arp(uint8_t *f, uint16_t op, const uint8_t sha[6], uint32_t spa,
                   const uint8_t tha[6], uint32_t tpa, const uint8_t eth_dst[6])
{
    uint32_t h = eth_write(f, eth_dst, sha, 0, ETHERTYPE_ARP);
    arp_write(f + h, op, sha, spa, tha, tpa);
    memset(f + h + ARP_LEN, 0, 60 - h - ARP_LEN);
    return 60;
}
