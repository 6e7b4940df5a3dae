/* Hashed timing wheel (one per worker): O(1) arm and cancel.
 *
 * Time is passed in (ns); the wheel never reads a clock, so tests drive it directly. */
#ifndef SHMNET_TIMER_H
#define SHMNET_TIMER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TIMER_SLOTS 512u /* power of two */
#define TIMER_NEVER UINT64_MAX

struct timer;
typedef void (*timer_fn)(struct timer *t, void *ctx, uint64_t now);

struct timer {
    struct timer *next, **pprev; /* slot list; pprev == NULL when not armed */
    uint64_t expires;            /* ns */
    timer_fn fn;
};

struct timer_wheel {
    struct timer *slots[TIMER_SLOTS];
    /* A lower bound of the expiry times in each slot (TIMER_NEVER when empty): lowered on
     * arm, recomputed when the slot is run; a cancel may leave it low (an early wake-up at
     * most). Keeps timer_wheel_next() at 512 steps however many timers are armed. */
    uint64_t slot_min[TIMER_SLOTS];
    uint64_t tick_ns;
    uint64_t cur_tick; /* next tick to process */
    uint32_t armed;
};

void timer_wheel_init(struct timer_wheel *w, uint64_t tick_ns, uint64_t now);
static inline void timer_init(struct timer *t, timer_fn fn)
{
    t->next = NULL;
    t->pprev = NULL;
    t->expires = 0;
    t->fn = fn;
}
static inline bool timer_armed(const struct timer *t)
{
    return t->pprev != NULL;
}
/* (Re)arm to fire at `expires` (ns). */
void timer_arm(struct timer_wheel *w, struct timer *t, uint64_t expires);
void timer_cancel(struct timer_wheel *w, struct timer *t);
/* Run every timer due at or before now; returns how many fired. */
unsigned timer_wheel_run(struct timer_wheel *w, uint64_t now, void *ctx);
/* A lower bound on the next deadline (TIMER_NEVER when nothing is armed). */
uint64_t timer_wheel_next(const struct timer_wheel *w);

#endif
