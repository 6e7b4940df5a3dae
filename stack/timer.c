/* Hashed timing wheel: a timer lives in slot (expires / tick) % SLOTS; timers more than one
 * revolution away stay in their slot and are skipped until their round comes. */
#include "stack/timer.h"

#include <string.h>

void timer_wheel_init(struct timer_wheel *w, uint64_t tick_ns, uint64_t now)
{
    memset(w, 0, sizeof(*w));
    w->tick_ns = tick_ns ? tick_ns : 1000000;
    w->cur_tick = now / w->tick_ns;
    for (uint32_t i = 0; i < TIMER_SLOTS; i++)
        w->slot_min[i] = TIMER_NEVER;
}

static void unlink_timer(struct timer *t)
{
    *t->pprev = t->next;
    if (t->next)
        t->next->pprev = t->pprev;
    t->next = NULL;
    t->pprev = NULL;
}

void timer_arm(struct timer_wheel *w, struct timer *t, uint64_t expires)
{
    if (t->pprev)
        unlink_timer(t);
    else
        w->armed++;
    t->expires = expires;
    uint64_t tick = expires / w->tick_ns;
    if (tick < w->cur_tick)
        tick = w->cur_tick; /* already due: fire on the next run */
    struct timer **slot = &w->slots[tick & (TIMER_SLOTS - 1)];
    if (expires < w->slot_min[tick & (TIMER_SLOTS - 1)])
        w->slot_min[tick & (TIMER_SLOTS - 1)] = expires;
    t->next = *slot;
    if (t->next)
        t->next->pprev = &t->next;
    t->pprev = slot;
    *slot = t;
}

void timer_cancel(struct timer_wheel *w, struct timer *t)
{
    if (!t->pprev)
        return;
    unlink_timer(t);
    w->armed--;
}

unsigned timer_wheel_run(struct timer_wheel *w, uint64_t now, void *ctx)
{
    uint64_t end = now / w->tick_ns;
    unsigned fired = 0;
    if (end < w->cur_tick)
        return 0;
    if (!w->armed) {
        w->cur_tick = end;
        return 0;
    }
    /* After a long pause, one pass over every slot is enough. */
    uint64_t tick = end - w->cur_tick >= TIMER_SLOTS ? end - (TIMER_SLOTS - 1) : w->cur_tick;
    for (; tick <= end; tick++) {
        struct timer **slot = &w->slots[tick & (TIMER_SLOTS - 1)];
        uint64_t *smin = &w->slot_min[tick & (TIMER_SLOTS - 1)];
        *smin = TIMER_NEVER; /* recomputed from what stays (and what callbacks arm) */
        /* Detach the slot so callbacks may arm (into the slot) and cancel (anything, also
         * entries of this local list: pprev is kept valid) while we walk it. */
        struct timer *list = *slot;
        *slot = NULL;
        if (list)
            list->pprev = &list;
        while (list) {
            struct timer *t = list;
            unlink_timer(t);
            if (t->expires <= now) {
                w->armed--;
                fired++;
                t->fn(t, ctx, now);
            } else {
                /* a later round: back into its slot */
                if (t->expires < *smin)
                    *smin = t->expires;
                t->next = *slot;
                if (t->next)
                    t->next->pprev = &t->next;
                t->pprev = slot;
                *slot = t;
            }
        }
    }
    /* Stay on `end`: timers armed later for this same tick must still be found. */
    w->cur_tick = end;
    return fired;
}

uint64_t timer_wheel_next(const struct timer_wheel *w)
{
    if (!w->armed)
        return TIMER_NEVER;
    uint64_t best = TIMER_NEVER;
    for (uint64_t i = 0; i < TIMER_SLOTS; i++) {
        uint64_t m = w->slot_min[(w->cur_tick + i) & (TIMER_SLOTS - 1)];
        if (m < best)
            best = m;
        /* A slot whose earliest timer falls in this round bounds every later slot. */
        if (best != TIMER_NEVER && best / w->tick_ns <= w->cur_tick + i)
            return best;
    }
    return best;
}
