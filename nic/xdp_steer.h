/* Shared between the XDP steering program (nic/xdp_steer.bpf.c) and nic/nic_xdp.c. */
#ifndef SHMNET_XDP_STEER_H
#define SHMNET_XDP_STEER_H

#define XDP_STEER_MAX_QUEUES 16 /* NIC_MAX_QUEUES */
#define XDP_STEER_PROG       "shmnet_steer"
#define XDP_STEER_XSKS       "shmnet_xsks"
#define XDP_STEER_CFG        "shmnet_cfg"

/* Entry 0 of the shmnet_cfg array map. */
struct xdp_steer_cfg {
    unsigned char mac[6]; /* shmnet's MAC on the interface */
    unsigned char ip4[4]; /* shmnet's IPv4 address, network order */
    unsigned char pad[6];
};

#endif
