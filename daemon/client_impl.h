/* Internal interfaces of the daemon's client side (a session's part on one worker),
 * shared by its files:
 *   client.c          the socket table, ports and request dispatch
 *   client_fifo.c     the fifo arena of the shared region (pages, first fit)
 *   client_tcp.c      TCP over a socket's fifos, and TCP requests
 *   client_udp.c      UDP datagrams through the fifos, and UDP requests
 *   client_sockopt.c  socket options
 * The rules for what a client may write are in client.c's header comment. */
#ifndef SHMNET_DAEMON_CLIENT_IMPL_H
#define SHMNET_DAEMON_CLIENT_IMPL_H

#include "daemon/client.h"

#include <errno.h>
#include <linux/capability.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon/log.h"
#include "shm/shm_ring.h"
#include "stack/wire.h"

#define PAGE        4096u
#define CHAN_BUDGET 32 /* requests per channel per iteration: fairness between threads */
#define TX_BUDGET   64 /* datagrams per socket per iteration */

static inline uint32_t page_up(uint32_t v)
{
    return (v + PAGE - 1) & ~(PAGE - 1);
}

static inline struct shm_channel *chan(const struct client *cl, uint32_t i)
{
    return (struct shm_channel *)(cl->base + PAGE + (size_t)i * sizeof(struct shm_channel));
}

static inline uint32_t sock_off_of(uint32_t nchannels)
{
    return PAGE + page_up(nchannels * (uint32_t)sizeof(struct shm_channel));
}

static inline struct shm_sock *shsock(const struct client *cl, uint32_t idx)
{
    return (struct shm_sock *)(cl->base + sock_off_of(cl->nchannels)) + idx;
}

/* client.c */
void client_break(struct client *cl, const char *why);
void sock_notify(struct client *cl, struct dsock *ds);
void set_error(struct client *cl, struct dsock *ds, int err);
int sock_claim(struct client *cl, struct dsock *ds, uint16_t port);
void sock_unclaim(struct client *cl, struct dsock *ds);
int bind_allowed(const struct client *cl, uint16_t port);
int sock_join(struct client *cl, struct dsock *ds, uint16_t port, bool adopt);
int sock_group(struct client *cl, struct dsock *ds);
void sock_free(struct client *cl, struct dsock *ds, bool release);
struct dsock *sock_alloc(struct client *cl, uint32_t type, int *err);
void publish_names(struct client *cl, struct dsock *ds);
void txq_add(struct client *cl, struct dsock *ds);

/* client_fifo.c */
uint32_t fifo_alloc(struct client *cl, uint32_t bytes);
void fifo_free(struct client *cl, uint32_t off, uint32_t bytes, bool release);

/* client_tcp.c */
extern const struct tcp_buf_ops tcp_fifo_ops;
void tcp_event_cb(void *ctx, struct tcp_pcb *pcb, enum tcp_event ev, int err);
int tcp_accept_cb(void *lctx, struct tcp_pcb *listener, struct tcp_pcb *child);
void tcp_close_sock(struct client *cl, struct dsock *ds, bool abort);
int handle_tcp(struct client *cl, struct dsock *ds, const struct shm_req *r, struct shm_cpl *c);

/* client_udp.c */
int udp_deliver_cb(void *ctx, const struct udp_meta *m, const uint8_t *data, uint32_t len);
void udp_err_cb(void *ctx, int err);
bool tx_drain(struct client *cl, struct dsock *ds);
int handle_udp(struct client *cl, struct dsock *ds, const struct shm_req *r, struct shm_cpl *c);

/* client_sockopt.c */
int op_setsockopt(struct client *cl, struct dsock *ds, const struct shm_req *r);
int op_getsockopt(struct client *cl, struct dsock *ds, const struct shm_req *r, struct shm_cpl *c);

#endif
