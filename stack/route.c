/* Routing table: kept sorted longest prefix first (then lowest metric), so the first match
 * of a linear scan is the longest-prefix match. Tables are small (interfaces + config). */
#include "stack/stack_impl.h"

#include <errno.h>

void route_table_init(struct route_table *rt)
{
    rt->n = 0;
}

int route_add(struct route_table *rt, const struct route_entry *e)
{
    if (rt->n >= sizeof(rt->e) / sizeof(rt->e[0]))
        return -ENOSPC;
    if (e->plen > 32)
        return -EINVAL;
    struct route_entry ne = *e;
    ne.dst &= ip4_mask(e->plen);
    uint32_t i = rt->n;
    while (i > 0) {
        const struct route_entry *p = &rt->e[i - 1];
        if (p->plen > ne.plen || (p->plen == ne.plen && p->metric <= ne.metric))
            break;
        rt->e[i] = *p;
        i--;
    }
    rt->e[i] = ne;
    rt->n++;
    return 0;
}

int route_lookup(const struct stack *st, uint32_t dst, int *ifidx, uint32_t *nexthop)
{
    const struct route_table *rt = &st->rt;
    /* The limited broadcast goes out of the first interface, on-link. */
    if (dst == 0xffffffffu && st->nifs > 0) {
        *ifidx = 0;
        *nexthop = dst;
        return 0;
    }
    for (uint32_t i = 0; i < rt->n; i++) {
        const struct route_entry *e = &rt->e[i];
        if ((dst & ip4_mask(e->plen)) != e->dst || e->ifidx < 0 || e->ifidx >= st->nifs)
            continue;
        *ifidx = e->ifidx;
        *nexthop = e->via ? e->via : dst;
        return 0;
    }
    return -ENETUNREACH;
}
