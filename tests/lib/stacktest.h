/* Helpers for unit tests: stacks on sim NICs with an injected clock, frame builders. */
#ifndef SHMNET_STACKTEST_H
#define SHMNET_STACKTEST_H

#include "nic/nic.h"
#include "stack/stack.h"
#include "stack/wire.h"

#define T_MS  1000000ull
#define T_SEC 1000000000ull

extern const uint8_t st_mac_a[6];    /* 02:00:00:00:00:02, the stack under test */
extern const uint8_t st_mac_peer[6]; /* 02:00:00:00:00:01, the test playing the peer */
#define ST_ADDR_A    0x0ac80002u     /* 10.200.0.2 */
#define ST_ADDR_PEER 0x0ac80001u     /* 10.200.0.1 */

struct stest {
    struct stack st;
    struct nic nic;
    uint64_t now;
};

/* A stack with one sim interface 10.200.0.2/24 (mac st_mac_a); params may be NULL. */
void stest_init(struct stest *t, const struct stack_params *p);
/* Same with explicit address/mac (for a second stack). */
void stest_init_addr(struct stest *t, const struct stack_params *p, uint32_t addr,
                     const uint8_t mac[6], const struct nic_fault_params *fault);
void stest_fini(struct stest *t);
/* Advance the clock by ns, run timers, receive, flush. */
void stest_step(struct stest *t, uint64_t ns);
/* Inject a raw frame and process it (rx + flush). */
void stest_rx(struct stest *t, const uint8_t *frame, uint32_t len);
/* Take the next transmitted frame into buf; returns its length or 0 if none. */
uint32_t stest_tx(struct stest *t, uint8_t *buf, uint32_t cap);
uint32_t stest_tx_count(struct stest *t);
/* Like stest_tx, but skips ARP frames (probes of stale entries). */
uint32_t stest_tx_ip(struct stest *t, uint8_t *buf, uint32_t cap);
/* Discard everything transmitted so far. */
void stest_tx_drain(struct stest *t);
uint64_t stest_cnt(struct stest *t, const char *name);
/* Teach the stack the peer's MAC (so output needs no ARP exchange). */
void stest_learn_peer(struct stest *t);

/* Frame builders: return the frame length. */
uint32_t build_ip4(uint8_t *f, const uint8_t dmac[6], const uint8_t smac[6], uint32_t src,
                   uint32_t dst, uint8_t proto, uint16_t id, uint16_t frag, uint8_t ttl,
                   const uint8_t *l4, uint32_t l4len);
uint32_t build_echo(uint8_t *f, uint32_t src, uint32_t dst, uint16_t id, uint16_t seq,
                    uint32_t datalen);
uint32_t build_arp(uint8_t *f, uint16_t op, const uint8_t sha[6], uint32_t spa,
                   const uint8_t tha[6], uint32_t tpa, const uint8_t eth_dst[6]);

#endif
