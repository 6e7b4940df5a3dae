/* Per-worker counters. Every drop has its own reason counter (name contains "_drop_").
 *
 * Single writer (the owning worker); the control thread reads them for `shmnetctl stats`.
 * Updates are relaxed atomic load+store (no lock prefix: one writer) so the concurrent
 * reads are well defined and never torn. */
#ifndef SHMNET_COUNTERS_H
#define SHMNET_COUNTERS_H

#include <stdint.h>

// clang-format off
#define STACK_COUNTERS(X)                                                                          \
    X(nic_rx_frames)                                                                               \
    X(nic_rx_bytes)                                                                                \
    X(nic_tx_frames)                                                                               \
    X(nic_tx_bytes)                                                                                \
    X(nic_rx_drop_nobuf)      /* pktbuf pool empty when refilling RX */                            \
    X(nic_rx_drop_error)      /* backend read error / truncated by the device */                   \
    X(nic_tx_drop_full)       /* backend TX ring full */                                           \
    X(nic_tx_drop_error)      /* backend write error */                                            \
    X(nic_dev_gone)           /* queues whose device was deleted under the daemon (no more RX) */  \
    X(nic_rps_on)             /* tap, rps_cpus auto: 1 while the kernel's side is steered away */  \
    X(nic_rps_switch)         /* tap, rps_cpus auto: times the steering was turned on or off */    \
    X(steer_out)              /* workers: datagrams handed to the worker owning their port */      \
    X(steer_in)               /* workers: datagrams taken over from another worker */              \
    X(steer_drop_full)        /* workers: the ring to the owning worker was full */                \
    X(steer_drop_invalid)     /* workers: a handed-over buffer no longer parses (cannot happen) */ \
    X(xdp_umem_free)          /* af_xdp gauge: UMEM frames free in the daemon */                   \
    X(xdp_umem_fill)          /* af_xdp gauge: frames in the fill ring */                          \
    X(xdp_umem_rx)            /* af_xdp gauge: taken from the fill ring, not yet received */       \
    X(xdp_umem_tx)            /* af_xdp gauge: in the TX ring or being sent */                     \
    X(xdp_umem_comp)          /* af_xdp gauge: sent, waiting in the completion ring */             \
    X(xdp_fill_empty)         /* af_xdp: kernel found the fill ring empty (XDP_STATISTICS) */      \
    X(xdp_rx_drop_kernel)     /* af_xdp: kernel dropped (no fill frame, too big) */                \
    X(xdp_rx_drop_ring_full)  /* af_xdp: kernel dropped, RX ring full */                           \
    X(xdp_rx_drop_invalid)    /* af_xdp: invalid fill descriptors */                               \
    X(xdp_tx_drop_invalid)    /* af_xdp: invalid TX descriptors */                                 \
    X(fault_drop_loss)                                                                             \
    X(fault_dup)                                                                                   \
    X(fault_reorder)                                                                               \
    X(fault_corrupt)                                                                               \
    X(fault_delay)                                                                                 \
    X(fault_drop_queue_full)                                                                       \
    X(pcap_frames)                                                                                 \
    X(pcap_drop_error)                                                                             \
    X(eth_rx)                                                                                      \
    X(eth_tx)                                                                                      \
    X(eth_drop_short)         /* shorter than an Ethernet header */                                \
    X(eth_drop_not_ours)      /* unicast to another MAC, not promiscuous */                        \
    X(eth_drop_vlan)          /* tagged with a VID this interface does not carry */                \
    X(eth_drop_proto)         /* ethertype not handled (IPv6, ...) */                              \
    X(eth_drop_src)           /* source MAC multicast, or our own */                               \
    X(arp_rx_request)                                                                              \
    X(arp_rx_reply)                                                                                \
    X(arp_tx_request)                                                                              \
    X(arp_tx_reply)                                                                                \
    X(arp_tx_gratuitous)                                                                           \
    X(arp_resolved)                                                                                \
    X(arp_queued)                                                                                  \
    X(arp_drop_short)                                                                              \
    X(arp_drop_format)                                                                             \
    X(arp_drop_wrong_subnet)  /* sender address outside the interface subnet */                    \
    X(arp_drop_bad_sender)    /* sender is broadcast/multicast/ours */                             \
    X(arp_drop_not_for_us)    /* request for an address not ours */                                \
    X(arp_drop_queue_full)    /* packet waiting on resolution, queue full */                       \
    X(arp_drop_unresolved)    /* resolution gave up: packets dropped */                            \
    X(arp_drop_cache_full)                                                                         \
    X(ip4_rx)                                                                                      \
    X(ip4_tx)                                                                                      \
    X(ip4_rx_local)                                                                                \
    X(ip4_forwarded)                                                                               \
    X(ip4_drop_short)                                                                              \
    X(ip4_drop_version)                                                                            \
    X(ip4_drop_ihl)                                                                                \
    X(ip4_drop_len)                                                                                \
    X(ip4_drop_csum)                                                                               \
    X(ip4_drop_bad_src)       /* martian source: multicast, broadcast, loopback, ours */           \
    X(ip4_drop_not_local)     /* not for us and forwarding is off */                               \
    X(ip4_drop_ttl)           /* TTL expired while forwarding */                                   \
    X(ip4_drop_no_route)                                                                           \
    X(ip4_drop_proto)                                                                              \
    X(ip4_drop_options)                                                                            \
    X(ip4_tx_local)           /* datagrams to our own addresses, looped back */                    \
    X(ip4_drop_local_full)    /* looped-back queue full (STACK_LO_MAX) */                          \
    X(ip4_drop_df)            /* too big, DF set: frag-needed sent */                              \
    X(ip4_drop_nobuf)         /* pktbuf pool empty on output */                                    \
    X(ip4_frag_created)                                                                            \
    X(ip4_frag_rx)                                                                                 \
    X(ip4_reasm_ok)                                                                                \
    X(ip4_frag_drop_overlap)                                                                       \
    X(ip4_frag_drop_too_big)                                                                       \
    X(ip4_frag_drop_timeout)                                                                       \
    X(ip4_frag_drop_mem)      /* reassembly memory or datagram limit reached */                    \
    X(ip4_frag_drop_bad)      /* inconsistent: MF on final length, zero-length, odd size */        \
    X(ip4_frag_drop_too_many) /* more pieces than one datagram may have */                         \
    X(ip4_frag_drop_dup)      /* exact duplicate of a piece already held */                        \
    X(icmp_rx)                                                                                     \
    X(icmp_tx)                                                                                     \
    X(icmp_rx_echo)                                                                                \
    X(icmp_tx_echo_reply)                                                                          \
    X(icmp_rx_echo_reply)                                                                          \
    X(icmp_tx_unreach)                                                                             \
    X(icmp_tx_time_exceeded)                                                                       \
    X(icmp_rx_error)                                                                               \
    X(icmp_drop_short)                                                                             \
    X(icmp_drop_csum)                                                                              \
    X(icmp_drop_type)                                                                              \
    X(icmp_drop_bcast)        /* echo to a broadcast address (ignored, like Linux) */              \
    X(icmp_drop_bad_error)    /* error quoting a header that is not ours/valid */                  \
    X(icmp_drop_ratelimit)    /* error not sent: rate limit (RFC 1812 4.3.2.8) */                  \
    X(hook_prerouting_pass)                                                                        \
    X(hook_prerouting_drop)                                                                        \
    X(hook_local_in_pass)                                                                          \
    X(hook_local_in_drop)                                                                          \
    X(hook_forward_pass)                                                                           \
    X(hook_forward_drop)                                                                           \
    X(hook_local_out_pass)                                                                         \
    X(hook_local_out_drop)                                                                         \
    X(hook_postrouting_pass)                                                                       \
    X(hook_postrouting_drop)                                                                       \
    X(udp_rx)                                                                                      \
    X(udp_drop_short)                                                                              \
    X(udp_drop_csum)                                                                               \
    X(udp_drop_no_port)       /* no socket on the port: port unreachable sent */                   \
    X(udp_drop_rcvbuf)        /* socket receive buffer full */                                     \
    X(udp_drop_bad_src)       /* IP_PKTINFO asked for a source address that is not ours */          \
    X(udp_delivered)                                                                               \
    X(udp_tx)                                                                                      \
    X(tcp_rx)                                                                                      \
    X(tcp_drop_short)                                                                              \
    X(tcp_drop_csum)                                                                               \
    X(tcp_drop_no_port)                                                                            \
    X(tcp_drop_bcast)         /* to a broadcast address: TCP is unicast only */                    \
    X(tcp_xmit_retry) /* a segment not sent for lack of buffers: retried by a timer */             \
    X(tcp_pmtu_resend) /* ICMP frag-needed lowered the MSS: the flight is resent */                \
    X(tcp_orphans)            /* gauge: closed connections still delivering data or a FIN */       \
    X(tcp_orphan_timeouts)    /* orphans given up after tcp.orphan_retries timeouts or probes */   \
    X(tcp_tx_rst)                                                                                  \
    X(tcp_tx)                                                                                      \
    X(tcp_rx_data_bytes)                                                                           \
    X(tcp_tx_data_bytes)                                                                           \
    X(tcp_active_opens)                                                                            \
    X(tcp_passive_opens)                                                                           \
    X(tcp_established)                                                                             \
    X(tcp_retrans_segs)                                                                            \
    X(tcp_rto)                                                                                     \
    X(tcp_fast_retrans)                                                                            \
    X(tcp_sack_recovery)                                                                           \
    X(tcp_syncookies_sent)                                                                         \
    X(tcp_syncookies_ok)                                                                           \
    X(tcp_challenge_ack)                                                                           \
    X(tcp_rx_rst)                                                                                  \
    X(tcp_timeouts)                                                                                \
    X(tcp_tw_reuse)                                                                                \
    X(tcp_zero_window_probes) /* persist timer probes of a closed window (RFC 9293 3.8.6.1) */     \
    X(tcp_lost_retrans)       /* retransmissions found lost by later SACKs and sent again */       \
    X(tcp_rack_timeouts)      /* retransmissions found lost by their RACK timer (RFC 8985) */      \
    X(tcp_dsack_rx)           /* D-SACK blocks received (RFC 2883) */                              \
    X(tcp_dsack_undo)         /* recoveries undone: every retransmission came back twice */         \
    X(tcp_rack_recovery)      /* recoveries a hole's RACK timer started (below DupThresh) */       \
    X(tcp_tlp)                /* tail loss probes sent (RFC 8985 7) instead of waiting for RTO */  \
    X(tcp_pace_waits)         /* a paced connection's segment waited for its time (BBR) */ \
    X(tcp_drop_bad_off)       /* data offset beyond the segment */                                 \
    X(tcp_drop_out_of_window) /* sequence number outside the window (ACKed) */                     \
    X(tcp_drop_paws)          /* timestamp older than ts_recent (RFC 7323) */                      \
    X(tcp_drop_bad_ack)       /* ACK outside the acceptable range (RFC 5961) */                    \
    X(tcp_drop_rst_inwindow)  /* RST not at RCV.NXT: challenge ACK (RFC 5961) */                   \
    X(tcp_drop_syn_inwindow)  /* SYN on a synchronized connection (RFC 5961) */                    \
    X(tcp_drop_accept_full)    /* SYN or final ACK dropped: accept queue full */                   \
    X(tcp_drop_listen_overflow)/* SYN or ACK when the queues are full */                           \
    X(tcp_drop_bad_cookie)    /* ACK to a listener that is not a valid SYN cookie */               \
    X(tcp_drop_ooo_full)      /* out-of-order data beyond the ranges we track */                   \
    X(tcp_drop_no_mem)        /* no connection object left */                                      \
    X(tcp_drop_rcv_closed)    /* data after shutdown(SHUT_RD) or close */                          \
    X(tcp_drop_rcv_full)      /* data (or part) beyond the receive buffer: past our window */      \
    X(timer_fired)
// clang-format on

struct stack_counters {
#define X(n) uint64_t n;
    STACK_COUNTERS(X)
#undef X
};

enum { STACK_NCOUNTERS = sizeof(struct stack_counters) / sizeof(uint64_t) };
extern const char *const stack_counter_names[STACK_NCOUNTERS];

/* Single-writer increment: see the header comment. */
#define CNT_ADD(c, field, n)                                                                       \
    __atomic_store_n(&(c)->field, __atomic_load_n(&(c)->field, __ATOMIC_RELAXED) + (n),            \
                     __ATOMIC_RELAXED)
#define CNT_INC(c, field) CNT_ADD(c, field, 1)
static inline uint64_t cnt_read(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

#endif
