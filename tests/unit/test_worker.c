/* The workers' shared port table (daemon/worker.c, docs/workers.md): exclusive and shared
 * claims, TCP listening groups (made from a claim, joined by key only, gone with their
 * last claim) and which worker owns a segment. No threads: two worker structs share the
 * tables as two running workers would. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>

#include "daemon/worker.h"

static struct worker W[2];
static uint8_t *shared;

static void setup(void)
{
    shared = calloc(WORKER_SHARED_BYTES, 1);
    cr_assert(shared);
    for (int i = 0; i < 2; i++) {
        W[i].id = i;
        W[i].group = W;
        W[i].ngroup = 2;
        W[i].port_owner = shared;
        W[i].port_group = (uint32_t *)(shared + WORKER_PORTS);
        W[i].port_refs = calloc(WORKER_PORTS, sizeof(uint16_t));
        cr_assert(W[i].port_refs);
    }
}

static void teardown(void)
{
    for (int i = 0; i < 2; i++)
        free(W[i].port_refs);
    free(shared);
}

TestSuite(worker, .init = setup, .fini = teardown);

#define LADDR 0x0a000001u

Test(worker, explicit_claims_exclusive_unless_both_share)
{
    cr_assert_eq(worker_port_claim(&W[0], 17, 5000, false), 0);
    cr_assert_eq(worker_port_claim(&W[1], 17, 5000, false), -EADDRINUSE);
    cr_assert_eq(worker_port_owner(&W[1], 17, 5000, LADDR, 1, 1), 0);
    worker_port_release(&W[0], 17, 5000);
    cr_assert_eq(worker_port_owner(&W[0], 17, 5000, LADDR, 1, 1), 5000 % 2, "unclaimed: port % N");
    cr_assert_eq(worker_port_claim(&W[0], 6, 80, true), 0);
    cr_assert_eq(worker_port_claim(&W[1], 6, 80, true), 0);
    worker_port_release(&W[0], 6, 80);
    cr_assert_eq(worker_port_owner(&W[0], 6, 80, LADDR, 1, 1), 1, "the sharer takes it over");
}

Test(worker, listening_group_spreads_connections_by_flow_hash)
{
    cr_assert_eq(worker_port_group(&W[0], 8080, 7, STACK_CLAIM_GROUP_MAKE), -EADDRINUSE,
                 "needs our claim");
    cr_assert_eq(worker_port_claim(&W[0], 6, 8080, false), 0);
    cr_assert_eq(worker_port_group(&W[0], 8080, 7, STACK_CLAIM_GROUP_MAKE), 0);
    cr_assert_eq(worker_port_group(&W[1], 8080, 8, STACK_CLAIM_GROUP_JOIN), -EADDRINUSE,
                 "another session's key");
    cr_assert_eq(worker_port_claim(&W[1], 6, 8080, true), -EADDRINUSE, "a plain bind");
    cr_assert_eq(worker_port_group(&W[1], 8080, 7, STACK_CLAIM_GROUP_JOIN), 0);
    int n[2] = {0};
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t raddr = 0x0a000100u + (i & 15);
        uint16_t rport = (uint16_t)(40000 + i);
        int o = worker_port_owner(&W[0], 6, 8080, LADDR, raddr, rport);
        cr_assert(o == 0 || o == 1);
        cr_assert_eq(worker_port_owner(&W[1], 6, 8080, LADDR, raddr, rport), o,
                     "every worker agrees");
        n[o]++;
    }
    cr_assert(n[0] > 64 && n[1] > 64, "spread: %d / %d", n[0], n[1]);
    /* UDP on the same number is not part of the TCP group. */
    cr_assert_eq(worker_port_owner(&W[0], 17, 8080, LADDR, 1, 1), 8080 % 2);
}

Test(worker, group_ends_with_its_last_claim_on_any_worker)
{
    cr_assert_eq(worker_port_claim(&W[1], 6, 9000, false), 0);
    cr_assert_eq(worker_port_group(&W[1], 9000, 3, STACK_CLAIM_GROUP_MAKE), 0);
    cr_assert_eq(worker_port_group(&W[0], 9000, 3, STACK_CLAIM_GROUP_JOIN), 0);
    cr_assert_eq(worker_port_group(&W[0], 9000, 3, STACK_CLAIM_GROUP_JOIN),
                 0); /* an accepted connection */
    worker_port_release(&W[1], 6, 9000);
    worker_port_release(&W[0], 6, 9000);
    cr_assert_eq(worker_port_claim(&W[1], 6, 9000, false), -EADDRINUSE, "still held");
    worker_port_release(&W[0], 6, 9000);
    cr_assert_eq(worker_port_claim(&W[1], 6, 9000, false), 0, "free again");
    cr_assert_eq(worker_port_group(&W[0], 9000, 3, STACK_CLAIM_GROUP_JOIN), -EADDRINUSE,
                 "no group any more");
}

/* A group takes connections by hash from every worker: it is made only from a claim that
 * is the port's only one, so no other socket (another session's, or a second address of
 * ours) loses its connections to it. */
Test(worker, group_only_from_the_ports_only_claim)
{
    cr_assert_eq(worker_port_claim(&W[0], 6, 7000, false), 0);
    cr_assert_eq(worker_port_claim(&W[0], 6, 7000, false), 0, "a second socket here");
    cr_assert_eq(worker_port_group(&W[0], 7000, 5, STACK_CLAIM_GROUP_MAKE), -EADDRINUSE);
    worker_port_release(&W[0], 6, 7000);
    cr_assert_eq(worker_port_group(&W[0], 7000, 5, STACK_CLAIM_GROUP_MAKE), 0);
    worker_port_release(&W[0], 6, 7000);
    cr_assert_eq(worker_port_claim(&W[1], 6, 7000, false), 0, "the group went with it");

    cr_assert_eq(worker_port_claim(&W[0], 6, 7001, true), 0);
    cr_assert_eq(worker_port_claim(&W[1], 6, 7001, true), 0, "shared with worker 1");
    cr_assert_eq(worker_port_group(&W[0], 7001, 5, STACK_CLAIM_GROUP_MAKE), -EADDRINUSE);
    cr_assert_eq(worker_port_claim(&W[1], 6, 7001, true), 0, "still shared after the refusal");
}

Test(worker, failed_join_leaves_no_claim_behind)
{
    cr_assert_eq(worker_port_group(&W[1], 7100, 9, STACK_CLAIM_GROUP_JOIN), -EADDRINUSE,
                 "no group there");
    cr_assert_eq(worker_port_claim(&W[0], 6, 7100, false), 0, "nothing held by worker 1");
    cr_assert_eq(worker_port_group(&W[0], 7100, 9, STACK_CLAIM_GROUP_MAKE), 0);
    cr_assert_eq(worker_port_group(&W[1], 7100, 10, STACK_CLAIM_GROUP_JOIN), -EADDRINUSE,
                 "wrong key");
    worker_port_release(&W[0], 6, 7100);
    cr_assert_eq(worker_port_claim(&W[1], 6, 7100, false), 0,
                 "free: the refused join held nothing");
}

/* A session goes while connections of its group live on as orphans: only a listener of a
 * new session that asks to adopt (SO_REUSEADDR) takes the group over, and the port is
 * free once the last claim, old or new, is gone. */
Test(worker, orphaned_group_is_adopted_by_a_new_session)
{
    cr_assert_eq(worker_port_claim(&W[0], 6, 7200, false), 0);
    cr_assert_eq(worker_port_group(&W[0], 7200, 11, STACK_CLAIM_GROUP_MAKE), 0);
    cr_assert_eq(worker_port_group(&W[1], 7200, 11, STACK_CLAIM_GROUP_JOIN), 0); /* a member */
    cr_assert_eq(worker_port_group(&W[1], 7200, 11, STACK_CLAIM_GROUP_JOIN), 0); /* accepted */
    worker_port_release(&W[0], 6, 7200); /* the session goes: its listeners close */
    worker_port_release(&W[1], 6, 7200);
    cr_assert_eq(worker_port_group(&W[0], 7200, 12, STACK_CLAIM_GROUP_ADOPT), -EADDRINUSE,
                 "the old session may still be there");
    cr_assert_eq(worker_port_group(&W[1], 7200, 99, STACK_CLAIM_GROUP_ORPHAN), -ENOENT,
                 "not its group");
    cr_assert_eq(worker_port_group(&W[1], 7200, 11, STACK_CLAIM_GROUP_ORPHAN), 0);
    cr_assert_eq(worker_port_group(&W[0], 7200, 12, STACK_CLAIM_GROUP_JOIN), -EADDRINUSE,
                 "a join without SO_REUSEADDR does not adopt");
    cr_assert_eq(worker_port_claim(&W[0], 6, 7200, true), -EADDRINUSE, "nor a plain bind");
    cr_assert_eq(worker_port_group(&W[0], 7200, 12, STACK_CLAIM_GROUP_ADOPT), 0);
    cr_assert_eq(worker_port_group(&W[1], 7200, 13, STACK_CLAIM_GROUP_ADOPT), -EADDRINUSE,
                 "one session adopts it");
    cr_assert_eq(worker_port_group(&W[1], 7200, 12, STACK_CLAIM_GROUP_JOIN), 0, "its members");
    cr_assert_eq(worker_port_group(&W[1], 7200, 11, STACK_CLAIM_GROUP_ORPHAN), -ENOENT,
                 "the old key does not take it back");
    worker_port_release(&W[1], 6, 7200); /* the orphan is done */
    worker_port_release(&W[0], 6, 7200);
    cr_assert_eq(worker_port_claim(&W[0], 6, 7200, false), -EADDRINUSE, "the new member holds it");
    worker_port_release(&W[1], 6, 7200);
    cr_assert_eq(worker_port_claim(&W[0], 6, 7200, false), 0, "free again");
}
