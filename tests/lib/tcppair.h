/* Two stacks on a sim link with a TCP connection between them, for unit tests of TCP:
 * a client on stack a, a listener and its accepted connection on stack b. */
#ifndef SHMNET_TCPPAIR_H
#define SHMNET_TCPPAIR_H

#include "stack/tcp.h"
#include "tests/lib/stacktest.h"
#include "tests/lib/tcptest.h"

#define ADDR_B 0x0ac80003u
extern const uint8_t mac_b[6];

struct pair;
/* A link filter: true drops the frame (a_to_b tells the direction). */
typedef bool (*drop_fn)(struct pair *p, const uint8_t *f, uint32_t n, bool a_to_b);

struct pair {
    struct stest a, b;
    struct tbuf ca, sb; /* client on a, server connection on b */
    struct tbuf lb;     /* listener context */
    struct tcp_pcb *cli, *lis, *srv;
    drop_fn drop;      /* set: the NICs are not linked, step() carries frames through it */
    uint32_t drop_seq; /* state of the filters */
    int drop_seen;
};

/* The listener's accept callback: every child gets p->sb. */
int on_accept(void *lctx, struct tcp_pcb *l, struct tcp_pcb *child);
/* Advance a by ns and carry frames both ways (through the filter when set). */
void step(struct pair *p, uint64_t ns);
void pair_init(struct pair *p, const struct nic_fault_params *fp, uint32_t bufsz);
/* With drop set, frames pass through it instead of a direct link. */
void pair_init_filtered(struct pair *p, const struct nic_fault_params *fp, uint32_t bufsz,
                        drop_fn drop);
/* The same with the stacks' parameters (NULL: the defaults), and setup (may be NULL) called
 * with the client made but not yet connected (options to set). */
void pair_init_with(struct pair *p, const struct stack_params *sp,
                    const struct nic_fault_params *fp, uint32_t bufsz, drop_fn drop,
                    void (*setup)(struct pair *p));
void pair_fini(struct pair *p);
uint8_t pattern(uint64_t i);
/* Move total bytes a->b and b->a at once; verifies content; returns simulated ms. */
uint64_t transfer(struct pair *p, uint64_t total, uint64_t max_ms);

#endif
