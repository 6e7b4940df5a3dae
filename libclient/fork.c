/* fork: the child continues the parent's session. */
#include "libclient/client_impl.h"

#include <pthread.h>
#include <unistd.h>

/* fork: the child continues the parent's session (docs/libshmnet.md: nginx's workers
 * accept on the master's listener). The region, the family area, the eventfds and the
 * control socket are inherited; the child gets a process slot of its own, reserved and
 * marked as a holder of every socket before the fork, so a parent that closes its copy
 * right after fork does not close the child's. The child's thread claims a channel of its
 * own on its first call. */
static int fork_slot = -1;
static struct attach *fork_att;

static void atfork_prepare(void)
{
    pthread_mutex_lock(&att_lock);
    fdt_fork_lock();
    fork_slot = -1;
    fork_att = att_cur && !att_dead(att_cur) && att_cur->proc_slot >= 0 ? att_cur : NULL;
    if (!fork_att)
        return;
    struct attach *a = fork_att;
    __atomic_store_n(&a->fam->forked, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < FAM_PROCS && fork_slot < 0; i++) {
        int32_t p = __atomic_load_n(&a->fam->proc_pid[i], __ATOMIC_ACQUIRE);
        if (p && (i == a->proc_slot || proc_alive(a->fam, i)))
            continue;
        if (__atomic_compare_exchange_n(&a->fam->proc_pid[i], &p, -getpid(), false,
                                        __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
            fork_slot = i;
    }
    if (fork_slot < 0)
        return; /* more than FAM_PROCS processes: the child holds nothing (docs) */
    uint64_t bit = 1ull << fork_slot;
    /* A recycled slot: the previous process's holds are over. */
    for (uint32_t i = 0; i < a->nparts * a->nsocks; i++)
        if (__atomic_load_n(&a->fam->sock[i].holders, __ATOMIC_RELAXED) & bit)
            __atomic_fetch_and(&a->fam->sock[i].holders, ~bit, __ATOMIC_RELAXED);
    fdt_fork_hold(a, bit);
}

static void atfork_parent(void)
{
    fdt_fork_unlock();
    pthread_mutex_unlock(&att_lock);
}

static void atfork_child(void)
{
    /* Only this thread exists in the child: the channel claims of the parent's threads
     * (this one's included) stay theirs. Drop our view of it without releasing it. */
    chan_forget_tls();
    if (fork_att) {
        fork_att->proc_slot = fork_slot;
        if (fork_slot >= 0)
            proc_register(fork_att->fam, fork_slot);
    }
    /* Re-initialised, not unlocked: the child's thread has a new tid. */
    fdt_fork_reinit();
    pthread_mutex_init(&att_lock, NULL);
}

__attribute__((constructor)) static void shmnet_init(void)
{
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}
