/* XDP steering program of the af_xdp backend (nic/nic_xdp.c).
 *
 * Redirects to the AF_XDP socket of the receiving queue only the frames shmnet owns:
 * unicast to shmnet's MAC (which differs from the kernel's MAC of the interface), and
 * broadcast ARP requests for shmnet's address. Everything else is XDP_PASS, so the host
 * keeps using the same interface. Built with clang -target bpf, embedded in shmnetd and
 * attached through libxdp (multiprog dispatcher when the kernel and bpffs allow it). */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "nic/xdp_steer.h"

struct {
    __uint(type, BPF_MAP_TYPE_XSKMAP);
    __uint(max_entries, XDP_STEER_MAX_QUEUES);
    __type(key, __u32);
    __type(value, __u32);
} shmnet_xsks SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct xdp_steer_cfg);
} shmnet_cfg SEC(".maps");

struct vlan_hdr {
    __be16 tci;
    __be16 proto;
};

/* ARP for Ethernet/IPv4: the fixed part plus sender and target addresses. */
struct arp_ip4 {
    __be16 htype, ptype;
    __u8 hlen, plen;
    __be16 op;
    __u8 sha[6];
    __u8 spa[4];
    __u8 tha[6];
    __u8 tpa[4];
} __attribute__((packed));

static __always_inline int mac_eq(const __u8 *a, const __u8 *b)
{
    return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] &&
           a[5] == b[5];
}

SEC("xdp")
int shmnet_steer(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    __u32 key = 0;

    if ((void *)(eth + 1) > end)
        return XDP_PASS;
    struct xdp_steer_cfg *cfg = bpf_map_lookup_elem(&shmnet_cfg, &key);
    if (!cfg)
        return XDP_PASS;
    if (mac_eq(eth->h_dest, cfg->mac))
        goto ours;
    static const __u8 bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    if (!mac_eq(eth->h_dest, bcast))
        return XDP_PASS; /* another unicast or a multicast: the host's */

    /* Broadcast: only an ARP request for our address is ours (the host may run ARP or
     * DHCP on the same interface). One 802.1Q tag is looked through. */
    __be16 proto = eth->h_proto;
    void *l3 = eth + 1;
    if (proto == bpf_htons(ETH_P_8021Q)) {
        struct vlan_hdr *vh = l3;
        if ((void *)(vh + 1) > end)
            return XDP_PASS;
        proto = vh->proto;
        l3 = vh + 1;
    }
    if (proto != bpf_htons(ETH_P_ARP))
        return XDP_PASS;
    struct arp_ip4 *arp = l3;
    if ((void *)(arp + 1) > end)
        return XDP_PASS;
    if (__builtin_memcmp(arp->tpa, cfg->ip4, 4) != 0)
        return XDP_PASS;
ours:
    /* No socket bound on this queue (yet, or any more): the frame goes to the host. */
    return bpf_redirect_map(&shmnet_xsks, ctx->rx_queue_index, XDP_PASS);
}

char _license[] SEC("license") = "GPL";
