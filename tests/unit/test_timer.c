#include <criterion/criterion.h>

#include "stack/timer.h"

#define MS 1000000ull

static int order[16], nfired;
static void rec(struct timer *t, void *ctx, uint64_t now)
{
    order[nfired++] = (int)(t->expires / MS);
}

Test(timer, fires_in_time_and_not_before)
{
    struct timer_wheel w;
    timer_wheel_init(&w, MS, 0);
    struct timer a, b, c;
    timer_init(&a, rec);
    timer_init(&b, rec);
    timer_init(&c, rec);
    nfired = 0;
    timer_arm(&w, &a, 5 * MS);
    timer_arm(&w, &b, 3 * MS);
    timer_arm(&w, &c, 10 * MS);
    cr_assert_eq(timer_wheel_next(&w), 3 * MS);
    cr_assert_eq(timer_wheel_run(&w, 2 * MS, NULL), 0);
    cr_assert_eq(timer_wheel_run(&w, 5 * MS, NULL), 2);
    cr_assert_eq(order[0] + order[1], 8);
    cr_assert(timer_armed(&c));
    timer_cancel(&w, &c);
    cr_assert_not(timer_armed(&c));
    cr_assert_eq(timer_wheel_run(&w, 20 * MS, NULL), 0);
    cr_assert_eq(timer_wheel_next(&w), TIMER_NEVER);
}

Test(timer, beyond_one_revolution)
{
    struct timer_wheel w;
    timer_wheel_init(&w, MS, 0);
    struct timer a;
    timer_init(&a, rec);
    nfired = 0;
    uint64_t far = (TIMER_SLOTS * 3 + 7) * MS;
    timer_arm(&w, &a, far);
    for (uint64_t t = 0; t < far; t += 50 * MS)
        cr_assert_eq(timer_wheel_run(&w, t, NULL), 0, "fired early at %llu", (unsigned long long)t);
    cr_assert_eq(timer_wheel_run(&w, far, NULL), 1);
}

Test(timer, long_pause_fires_everything_once)
{
    struct timer_wheel w;
    timer_wheel_init(&w, MS, 0);
    struct timer t[10];
    nfired = 0;
    for (int i = 0; i < 10; i++) {
        timer_init(&t[i], rec);
        timer_arm(&w, &t[i], (uint64_t)(i * 97 + 1) * MS);
    }
    cr_assert_eq(timer_wheel_run(&w, 100000 * MS, NULL), 10);
    cr_assert_eq(w.armed, 0);
}

static struct timer_wheel *g_w;
static int rearms;
static void rearm(struct timer *t, void *ctx, uint64_t now)
{
    if (++rearms < 3)
        timer_arm(g_w, t, now + MS);
}

Test(timer, rearm_from_callback)
{
    struct timer_wheel w;
    g_w = &w;
    rearms = 0;
    timer_wheel_init(&w, MS, 0);
    struct timer a;
    timer_init(&a, rearm);
    timer_arm(&w, &a, MS);
    for (uint64_t now = 0; now <= 10 * MS; now += MS)
        timer_wheel_run(&w, now, NULL);
    cr_assert_eq(rearms, 3);
    cr_assert_not(timer_armed(&a));
}

static struct timer *victim;
static void cancel_other(struct timer *t, void *ctx, uint64_t now)
{
    timer_cancel(g_w, victim);
}

Test(timer, cancel_other_in_same_slot_from_callback)
{
    struct timer_wheel w;
    g_w = &w;
    timer_wheel_init(&w, MS, 0);
    struct timer a, b;
    timer_init(&a, cancel_other);
    timer_init(&b, rec);
    victim = &b;
    nfired = 0;
    timer_arm(&w, &b, 4 * MS);
    timer_arm(&w, &a, 4 * MS); /* a is first in the slot list */
    cr_assert_eq(timer_wheel_run(&w, 4 * MS, NULL), 1);
    cr_assert_eq(nfired, 0, "cancelled timer must not fire");
    cr_assert_eq(w.armed, 0);
}
