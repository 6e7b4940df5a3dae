/* Netfilter-style hook points (Linux netfilter's PRE_ROUTING, LOCAL_IN, FORWARD,
 * LOCAL_OUT, POST_ROUTING). Rules: first match decides; a rule with rate_pps applies its
 * action only to traffic beyond that rate (a token bucket), e.g. an ICMP policer. */
#include "stack/stack_impl.h"

static bool rule_matches(const struct hook_rule *r, const struct ip4_view *ip)
{
    if (r->proto && r->proto != ip->proto)
        return false;
    if (r->src_plen && (ip->src & ip4_mask(r->src_plen)) != (r->src & ip4_mask(r->src_plen)))
        return false;
    if (r->dst_plen && (ip->dst & ip4_mask(r->dst_plen)) != (r->dst & ip4_mask(r->dst_plen)))
        return false;
    return true;
}

/* true while the rule's rate is not exceeded */
static bool within_rate(struct hook_rule *r, uint64_t now)
{
    uint64_t el = now - r->tokens_ts;
    uint64_t add = el * r->rate_pps / NS_PER_SEC;
    if (add) {
        uint64_t t = r->tokens + add;
        r->tokens = (uint32_t)(t > r->rate_pps ? r->rate_pps : t); /* burst = one second */
        r->tokens_ts = now;
    }
    if (r->tokens) {
        r->tokens--;
        return true;
    }
    return false;
}

bool hook_run(struct stack *st, enum hook_point pt, const struct ip4_view *ip, const uint8_t *l4,
              uint32_t l4len)
{
    bool accept = true;
    for (uint32_t i = 0; i < st->par.n_rules; i++) {
        struct hook_rule *r = &st->par.rules[i];
        if (r->point != pt || !rule_matches(r, ip))
            continue;
        r->matches++;
        if (r->rate_pps && within_rate(r, st->now))
            break; /* under the rate: the rule does not apply */
        accept = r->action == HOOK_ACCEPT;
        break;
    }
    struct stack_counters *c = &st->cnt;
    switch (pt) {
    case HOOK_PREROUTING:
        if (accept)
            CNT_INC(c, hook_prerouting_pass);
        else
            CNT_INC(c, hook_prerouting_drop);
        break;
    case HOOK_LOCAL_IN:
        if (accept)
            CNT_INC(c, hook_local_in_pass);
        else
            CNT_INC(c, hook_local_in_drop);
        break;
    case HOOK_FORWARD:
        if (accept)
            CNT_INC(c, hook_forward_pass);
        else
            CNT_INC(c, hook_forward_drop);
        break;
    case HOOK_LOCAL_OUT:
        if (accept)
            CNT_INC(c, hook_local_out_pass);
        else
            CNT_INC(c, hook_local_out_drop);
        break;
    default:
        if (accept)
            CNT_INC(c, hook_postrouting_pass);
        else
            CNT_INC(c, hook_postrouting_drop);
        break;
    }
    return accept;
}
