/* NIC backends behind one ops table.
 *
 * Every backend exposes queues; a worker owns one or more (queue q of every interface it
 * serves). RX fills pktbufs from the pool bound to that queue; TX takes ownership of the
 * pktbufs it is given and returns them to their pool once the frame is gone (the seed
 * documents' TX completion). The generic wrappers nic_rx()/nic_tx() add what every
 * backend shares: the pcap tap, the fault injector and the counters. Callers never call
 * ops directly, so AF_XDP and multi-queue plug in without changing them. */
#ifndef SHMNET_NIC_H
#define SHMNET_NIC_H

#include <sched.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <net/if.h>

#include "core/counters.h"
#include "core/pktbuf.h"

#define NIC_MAX_QUEUES 16
#define NIC_BURST      64

struct nic;
struct pcap_tap;
struct nic_fault;

/* Fault injection rates are probabilities in [0,1]; delay in microseconds. */
struct nic_fault_params {
    bool enabled;
    uint64_t seed;
    double loss, duplicate, reorder, corrupt;
    uint32_t delay_us;  /* fixed extra latency for every frame */
    uint32_t jitter_us; /* uniform extra on top of delay_us */
    bool rx, tx;        /* directions it applies to */
};

/* af_xdp: where the steering program runs (docs/nic.md). */
enum nic_xdp_mode {
    NIC_XDP_AUTO = 0, /* native if the driver has it, else copy */
    NIC_XDP_COPY,     /* generic (SKB) XDP */
    NIC_XDP_NATIVE,   /* driver XDP; an error if the driver lacks it */
};

/* af_xdp: whether the socket is bound XDP_ZEROCOPY (the driver DMAs into UMEM). */
enum nic_xdp_zc {
    NIC_XDP_ZC_AUTO = 0, /* in native mode when the driver can, else copy */
    NIC_XDP_ZC_ON,       /* required: an error if it cannot be had */
    NIC_XDP_ZC_OFF,
};

/* tap: Receive Packet Steering of the frames we write (nic_tap.c, docs/config.md). */
enum nic_rps {
    NIC_RPS_AUTO = 0, /* the CPUs the workers are not pinned to, when they are pinned */
    NIC_RPS_OFF,      /* leave the queue's rps_cpus as the kernel has it */
    NIC_RPS_LIST,     /* rps_cpus from the config; an error if it cannot be set */
};

struct nic_params {
    char name[IFNAMSIZ];
    char backend[16]; /* "tap", "sim", "af_xdp" */
    uint8_t mac[6];
    uint16_t mtu;
    uint16_t nqueues; /* 1 unless multi-queue */
    uint32_t rx_ring; /* RX descriptors in flight per queue */
    uint32_t tx_ring; /* TX descriptors per queue */
    bool tso;         /* TCP segmentation offload: frames with pktbuf.gso_size may exceed
                       * the MTU (tap: IFF_VNET_HDR); the backend clears it if it cannot */
    struct nic_fault_params fault;
    enum nic_xdp_mode xdp_mode; /* af_xdp only */
    enum nic_xdp_zc xdp_zc;     /* af_xdp only */
    uint32_t addr;              /* our IPv4 address (host order): af_xdp steers ARP for it */
    enum nic_rps rps;           /* tap only; the worker turns AUTO into a set before open */
    cpu_set_t rps_cpus;         /* AUTO (resolved) or LIST: empty = nothing to set */
};

struct nic_ops {
    const char *name;
    int (*open)(struct nic *n, const struct nic_params *p);
    void (*close)(struct nic *n);
    /* Up to max received frames of queue q; each pktbuf has data = the whole frame. */
    int (*rx_burst)(struct nic *n, uint16_t q, struct pktbuf **pkts, int max);
    /* Queue cnt frames for transmit and take ownership of all of them; returns how many
     * were accepted (the rest were freed and should be counted by the caller). */
    int (*tx_burst)(struct nic *n, uint16_t q, struct pktbuf **pkts, int cnt);
    /* tap, rps_cpus = "auto": steer the kernel's work on queue q's written frames to the
     * rps_cpus (on) or leave it inline in the writer (off). NULL where there is none. */
    int (*steer)(struct nic *n, uint16_t q, bool on);
    /* Push queued TX to the device (end of a batch): one system call at most. */
    int (*tx_flush)(struct nic *n, uint16_t q);
    /* An fd that polls readable when queue q may have RX work (the io_uring fd for tap, the
     * xsk fd for AF_XDP, an eventfd for sim). The worker sleeps in one ppoll() over the fds
     * of all its queues plus its own wake eventfd; tx_flush has submitted everything by then. */
    int (*poll_fd)(struct nic *n, uint16_t q);
};

struct nic {
    const struct nic_ops *ops;
    struct nic_params params;
    int ifindex;                                /* kernel ifindex of the device, 0 for sim */
    struct pktbuf_pool *pool[NIC_MAX_QUEUES];   /* RX buffers of each queue */
    struct stack_counters *cnt[NIC_MAX_QUEUES]; /* where queue q counts */
    struct nic_fault *fault;                    /* queue 0's; NULL when fault injection is off */
    struct nic_fault *qfault[NIC_MAX_QUEUES];   /* one per queue (its worker's), [0] = fault */
    struct pcap_tap *pcap;                      /* switched by queue 0's worker; NULL = off */
    void *priv;                                 /* backend state */
    char errmsg[160]; /* why open failed, when the backend can say more than -errno */
    char mode[64];    /* how the backend runs, for the log ("native, zero-copy"), or "" */
    bool steer_auto;  /* rps_cpus = "auto" took effect: the worker switches it (nic_steer) */
};

/* The kernel's text form of a CPU mask (bitmap_parse: 32-bit hex words, most significant
 * first, comma-separated; "0" when empty) into buf. Returns its length or -ENOSPC. */
int nic_cpumask_hex(const cpu_set_t *set, char *buf, size_t len);

/* Look up a backend by name (one of NIC_BACKEND_NAMES); NULL if unknown. */
const struct nic_ops *nic_find_ops(const char *backend);
#define NIC_BACKEND_NAMES   "tap, sim, af_xdp" /* for messages */
#define NIC_DEFAULT_BACKEND "tap"
#define NIC_DEFAULT_RING    256u /* descriptors per ring when the config gives none */
#define NIC_DEFAULT_MTU     1500u

/* Open a NIC. Pools and counters per queue must be bound with nic_bind_queue() before the
 * first nic_rx() (the backend pre-posts RX buffers then). */
int nic_open(struct nic *n, const struct nic_params *p);
void nic_bind_queue(struct nic *n, uint16_t q, struct pktbuf_pool *pool,
                    struct stack_counters *cnt);
void nic_close(struct nic *n);

/* Switch the steering of queue q (steer_auto); counts nic_rps_switch. 0 or -errno. */
int nic_steer(struct nic *n, uint16_t q, bool on);

/* Adaptive steering (rps_cpus = "auto"). The kernel's work on the frames a worker writes
 * runs inline, cache-hot and without an IPI, unless the worker is saturated by bulk
 * traffic inline. Each window (100 ms) gives the worker's busy share (loop passes that
 * did work) and the frames and bytes it moved (both directions). Measured on the bench
 * machine, the inline busy share is what tells the cases apart: four streams into shmnet
 * are 84% busy inline and a quarter faster steered; one stream is 22% busy inline and
 * slower steered (the other CPU also runs the sender and the client), and steered its
 * busy share (18..51%) says nothing either way. So:
 * - inline, NIC_STEER_ON_WINDOWS windows in a row at NIC_STEER_ON_PCT busy or more with
 *   frames of NIC_STEER_BULK_BYTES or more on average turn steering on. Small frames never
 *   do: a request/response exchange waits for every IPI (steering took a connection rate
 *   from 6000 to 4100/s), and the kernel's work on a small frame is no larger than an IPI;
 * - steered, every NIC_STEER_PROBE windows with bulk traffic the worker goes inline for a
 *   probe: one window for the switch, then one measured; saturated again, it steers again;
 * - steered, small frames end it at once; idle windows change nothing. */
#define NIC_STEER_WINDOW_NS  100000000ull
#define NIC_STEER_ON_PCT     70u
#define NIC_STEER_ON_WINDOWS 3u
#define NIC_STEER_BULK_BYTES 4096u
#define NIC_STEER_PROBE      30u

struct nic_steer_state {
    bool on;
    uint8_t votes;  /* inline: saturated bulk windows in a row */
    uint8_t probe;  /* inline for a probe: windows left (2: the switch, 1: measured) */
    uint32_t since; /* steered: bulk windows since the last probe */
};

/* One window: busy_ns of window_ns, frames and bytes moved. Returns true if st->on
 * changed (the caller then switches the queues). Pure: tested in test_nic_sim.c. */
static inline bool nic_steer_step(struct nic_steer_state *st, uint64_t busy_ns, uint64_t window_ns,
                                  uint64_t frames, uint64_t bytes)
{
    if (!window_ns)
        return false;
    bool bulk = frames && bytes / frames >= NIC_STEER_BULK_BYTES;
    bool saturated = bulk && busy_ns * 100 / window_ns >= NIC_STEER_ON_PCT;
    if (st->on) {
        if (frames && !bulk) { /* small frames: inline at once */
            st->on = false;
            st->since = 0;
            return true;
        }
        if (!bulk || ++st->since < NIC_STEER_PROBE)
            return false;
        st->on = false; /* a probe of the inline busy share */
        st->since = 0;
        st->probe = 2;
        return true;
    }
    if (st->probe == 2) { /* the switching window tells nothing */
        st->probe = 1;
        return false;
    }
    if (st->probe == 1) { /* the measured one: saturated inline, steer again */
        st->probe = 0;
        st->on = saturated;
        return saturated;
    }
    st->votes = saturated ? (uint8_t)(st->votes + 1) : 0;
    if (st->votes < NIC_STEER_ON_WINDOWS)
        return false;
    st->votes = 0;
    st->on = true;
    return true;
}

/* RX burst through fault injector and pcap tap. now = current time in ns. */
int nic_rx(struct nic *n, uint16_t q, struct pktbuf **pkts, int max, uint64_t now);
/* TX burst through fault injector and pcap tap; always takes ownership. */
int nic_tx(struct nic *n, uint16_t q, struct pktbuf **pkts, int cnt, uint64_t now);
int nic_flush(struct nic *n, uint16_t q, uint64_t now);
/* Sleep in ppoll() until one of the n (nic, queue) pairs may have work, wake_fd (-1: none)
 * is readable, or timeout_ns (UINT64_MAX: none) passes. Returns 1 if wake_fd is readable
 * (the caller drains it), else 0, or -errno. */
int nic_wait(struct nic **nics, const uint16_t *qs, int n, int wake_fd, uint64_t timeout_ns);
/* Earliest time the fault injector must run again (delayed frames), or UINT64_MAX. */
uint64_t nic_next_event(const struct nic *n);
/* The same for queue q (each worker asks for its own). */
uint64_t nic_next_event_q(const struct nic *n, uint16_t q);

/* ---- pcap packet tap (libpcap file format, ns timestamps, LINKTYPE_ETHERNET) ---- */
struct pcap_tap *pcap_open(const char *path, uint32_t snaplen, int *err);
/* Record one frame; returns 0 or -errno. */
int pcap_write(struct pcap_tap *t, const uint8_t *frame, uint32_t len, uint64_t ts_ns);
void pcap_close(struct pcap_tap *t);

/* ---- fault injector (seeded, reproducible) ---- */
struct nic_fault *nic_fault_create(const struct nic_fault_params *p);
void nic_fault_destroy(struct nic_fault *f);
/* Pass frames through the injector in one direction: consumes in[0..n), writes the frames
 * to deliver now into out (capacity max) and returns their count. Frames held for delay or
 * reordering come out on later calls; dropped frames are freed and counted. */
int nic_fault_apply(struct nic_fault *f, bool tx, struct pktbuf **in, int n, struct pktbuf **out,
                    int max, uint64_t now, struct stack_counters *cnt);
uint64_t nic_fault_next(const struct nic_fault *f);
/* Does f impair this direction? false for NULL. */
bool nic_fault_on(const struct nic_fault *f, bool tx);

/* ---- sim backend extras (tests) ---- */
/* Connect two sim NICs: what one transmits, the other receives. */
void nic_sim_link(struct nic *a, struct nic *b);
/* Hand a raw frame to the stack as if received (copied into a pool buffer). */
int nic_sim_inject(struct nic *n, const uint8_t *frame, uint32_t len);
/* Take the oldest transmitted frame of an unlinked sim NIC (NULL if none); caller frees. */
struct pktbuf *nic_sim_take_tx(struct nic *n);
uint32_t nic_sim_tx_pending(const struct nic *n);

#endif
