/* Client sessions on the worker side: each attached process has a shared-memory region
 * (shm/shm.h), a socket table and the channels its threads use. Everything here runs on
 * the worker thread that serves the client; the control thread creates and destroys
 * sessions (daemon/session.c) and hands them over through the mailbox. */
#ifndef SHMNET_DAEMON_CLIENT_H
#define SHMNET_DAEMON_CLIENT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "shm/shm.h"
#include "stack/stack.h"
#include "stack/tcp.h"
#include "stack/udp.h"

struct client;

struct dsock {
    uint32_t gen; /* 0: slot free */
    uint32_t idx;
    uint32_t type;
    struct client *cl;
    struct udp_pcb pcb;  /* SOCK_DGRAM */
    struct tcp_pcb *tcp; /* SOCK_STREAM (owned by the stack, referenced here) */
    bool closing;        /* closed by the client; fifos in use until TCP lets go */
    bool unaccepted;     /* a connection in a listener's queue, not yet accepted */
    bool linger0;        /* SO_LINGER with zero timeout: close sends RST */
    bool reuseaddr;      /* SO_REUSEADDR as set (reported back; binds never need it) */
    bool want_ts;        /* UDP: SO_TIMESTAMP or SO_TIMESTAMPNS: records carry the time */
    uint16_t claim_port; /* several workers: the local port this socket claimed, or 0 */
    bool claim_group;    /* ... as a member of the client's TCP listening group */
    bool group_listen;   /* listens for the group: the client made its members */
    /* private copies of what the region says about this socket */
    uint32_t rx_off, rx_size, tx_off, tx_size;
    uint32_t rx_tail, tx_head; /* our indices */
    uint32_t rx_limit;         /* SO_RCVBUF: bytes the RX fifo may hold */
    int32_t so_error;
    bool shut_rd, shut_wr;
    bool tx_queued; /* on the client's TX drain list */
    struct dsock *tx_next;
};

struct client_stats {
    uint64_t requests, completions, wakeups, faults, tx_datagrams, rx_datagrams;
};

#define CLIENT_FIFO_EXT 64 /* freed fifo extents remembered before a release */

struct client {
    struct client *next;
    uint32_t id;           /* the session's: every part has it */
    uint32_t part, nparts; /* this part of the session (one per worker, docs/workers.md) */
    pid_t pid;
    uid_t uid;
    uint16_t bind_min; /* binding a port below it needs bind_low (unprivileged_port_start) */
    bool bind_low;     /* uid 0 or CAP_NET_BIND_SERVICE when the process attached */
    int sess_fd;       /* the control connection (owned by the control thread) */
    struct shm_region *reg;
    uint8_t *base;
    size_t size;
    uint32_t nchannels;
    int chan_efd[SHM_MAX_CHANNELS];
    /* daemon-private ring indices */
    uint32_t req_head[SHM_MAX_CHANNELS], cpl_tail[SHM_MAX_CHANNELS];
    uint64_t carry; /* channels with requests left for the next iteration */
    uint64_t wake;  /* channels to wake at the end of this iteration */
    struct dsock *socks;
    uint32_t nsocks, nopen, gen_next;
    /* fifo arena: page bitmap */
    uint32_t fifo_off, fifo_pages;
    uint64_t *fifo_map;
    uint32_t fifo_used_pages;
    uint32_t fifo_hint;  /* no free page below it */
    uint32_t fifo_dirty; /* freed pages not yet given back to the system (FIFO_DIRTY_MAX) */
    uint32_t fifo_next;  /* extents recorded in fifo_ext */
    struct {
        uint32_t first, n;
    } fifo_ext[CLIENT_FIFO_EXT]; /* freed extents not yet given back */
    uint32_t rcvbuf, sndbuf;
    struct dsock *txq; /* sockets whose TX fifo still holds records */
    bool broken;       /* misbehaved: no more service; the control thread detaches it */
    bool orphaned;     /* the process is gone; its connections finish (client_close_all) */
    bool orphans_done; /* ... and the last one is gone: the session may be freed */
    struct client_stats stats;
    struct stack *st;
};

/* Build the region layout for a new client in mem (already zeroed, `size` bytes) and
 * the private state; the caller (control thread) maps and seals the memfd. */
size_t client_region_size(uint32_t nchannels, uint32_t nsocks, uint32_t fifo_bytes);
int client_init(struct client *cl, void *mem, size_t size, uint32_t id, uint32_t worker,
                uint32_t nchannels, uint32_t nsocks, uint32_t fifo_bytes, uint32_t rcvbuf,
                uint32_t sndbuf);
/* Release what client_init allocated (not the mapping or the fds). */
void client_fini(struct client *cl);

/* Control thread, at attach: who may bind ports below clients.unprivileged_port_start. */
void client_set_bind_policy(struct client *cl, uint32_t unprivileged_port_start);
/* Worker side: attach to a stack / close every socket. */
void client_attach(struct client *cl, struct stack *st);
/* The process is gone: close every socket as close() would; returns how many connections
 * live on as orphans (delivering what was written, then the FIN). */
uint32_t client_close_all(struct client *cl);
/* Control thread: true once no orphan of an orphaned client is left. */
bool client_orphans_done(const struct client *cl);
/* Worker side, at shutdown: reset the orphans still there. */
void client_abort_orphans(struct client *cl);

/* Serve the client: requests (up to budget), TX drains. Returns work done. */
int client_poll(struct client *cl, int budget);
/* True if the client has requests waiting (checked before the worker sleeps). */
bool client_pending(const struct client *cl);
/* Write the eventfds of the channels that need a wake-up (end of an iteration). */
void client_flush_wakeups(struct client *cl);

/* One line for `shmnetctl clients`, and the socket lines for `shmnetctl sockets`. */
size_t client_report(const struct client *cl, char *buf, size_t cap);
size_t client_report_sockets(const struct client *cl, char *buf, size_t cap);

#endif
