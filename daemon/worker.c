/* shmnetd worker thread: see worker.h and docs/daemon.md. */
#include "core/clock.h"
#include "daemon/worker.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "daemon/client.h"
#include "daemon/log.h"
#include "stack/wire.h"

static void close_nics(struct worker *w)
{
    for (int i = 0; i < w->nnics && w->id == 0; i++) { /* worker 0 opened them */
        /* The capture tap belongs to the control thread, which closes it after we are gone. */
        w->nics[i].pcap = NULL;
        nic_close(&w->nics[i]);
    }
    w->nnics = 0;
}

/* ---- several workers: steering (docs/workers.md) ---- */

#define PORT_OWNER_MASK   0x7fu /* owner id + 1 */
#define PORT_OWNER_SHARED 0x80u /* its claims allow SO_REUSEADDR sharing */
#define PORT_OWNER_GROUP  0x7fu /* TCP listening group: every worker, by flow hash */

/* Index of (proto, port) in port_owner and port_refs. */
static uint32_t port_slot(int proto, uint16_t port)
{
    return (proto == 17 ? 65536u : 0u) + port;
}

/* Owner id + 1 of a claimed port, 0 if unclaimed. Relaxed: a claim is published before
 * its socket can receive anything (the bind returns first); a stale read steers one
 * datagram of a port in transition. */
static uint8_t port_claimer(const struct worker *w, int proto, uint16_t port)
{
    return __atomic_load_n(&w->port_owner[port_slot(proto, port)], __ATOMIC_RELAXED) &
           PORT_OWNER_MASK;
}

/* The worker of a connection on a listening group's port: a hash of the 4-tuple, the same
 * for every segment of it wherever it lands (docs/workers.md). */
static int group_owner(const struct worker *w, uint32_t laddr, uint16_t lport, uint32_t raddr,
                       uint16_t rport)
{
    uint64_t h = ((uint64_t)raddr << 16 | rport) * 0x9e3779b97f4a7c15ull;
    h ^= ((uint64_t)laddr << 16 | lport) * 0xc2b2ae3d27d4eb4full;
    h ^= h >> 31;
    return (int)(h % (uint64_t)w->ngroup);
}

int worker_port_owner(const struct worker *w, int proto, uint16_t port, uint32_t laddr,
                      uint32_t raddr, uint16_t rport)
{
    uint8_t o = port_claimer(w, proto, port);
    if (o == PORT_OWNER_GROUP && proto == 6)
        return group_owner(w, laddr, port, raddr, rport);
    return o ? o - 1 : port % w->ngroup;
}

/* The worker that owns this datagram's destination, or -1: handle it here. */
static int steer_owner(const struct worker *w, const struct pktbuf *pb, const struct ip4_view *ip)
{
    const uint8_t *l4 = pktbuf_data(pb) + ip->ihl;
    uint32_t len = pb->len - ip->ihl;
    if ((ip->frag & 0x1fff) || len < 4) /* a fragment here is a bug upstream: keep it */
        return -1;
    if (ip->proto == 6 || ip->proto == 17)
        return worker_port_owner(w, ip->proto, (uint16_t)(l4[2] << 8 | l4[3]), ip->dst, ip->src,
                                 (uint16_t)(l4[0] << 8 | l4[1]));
    if (ip->proto != 1)
        return -1;
    if (l4[0] == 0) /* echo reply: our pings go out from worker 0 (shmnetctl ping) */
        return 0;
    if ((l4[0] == 3 || l4[0] == 11 || l4[0] == 12) && len >= 8 + 20 + 4) {
        /* An error quoting one of our datagrams: its source port is ours (RFC 792). */
        const uint8_t *in = l4 + 8;
        uint32_t ihl = (in[0] & 0x0fu) * 4u;
        if (ihl >= 20 && len >= 8 + ihl + 4 && (in[9] == 6 || in[9] == 17))
            return worker_port_owner(w, in[9], (uint16_t)(in[ihl] << 8 | in[ihl + 1]),
                                     rd32(in + 12), rd32(in + 16),
                                     (uint16_t)(in[ihl + 2] << 8 | in[ihl + 3]));
    }
    return -1;
}

static bool steer_push(struct worker *w, int to, struct pktbuf *pb)
{
    struct steer_ring *r = &w->group[to].inq[w->id];
    uint32_t tail = r->tail; /* ours */
    /* Acquire: the receiver is done with the slots it released. */
    if (tail - __atomic_load_n(&r->head, __ATOMIC_ACQUIRE) >= WORKER_STEER_RING) {
        CNT_INC(&w->st.cnt, steer_drop_full);
        pktbuf_free(pb);
        return false;
    }
    r->slot[tail % WORKER_STEER_RING] = pb;
    /* Release: the slot and the buffer's contents are visible before the new tail. */
    __atomic_store_n(&r->tail, tail + 1, __ATOMIC_RELEASE);
    CNT_INC(&w->st.cnt, steer_out);
    w->kick |= 1u << to;
    return true;
}

static bool worker_steer(struct stack *st, struct pktbuf *pb, const struct ip4_view *ip)
{
    struct worker *w = st->user;
    int to = steer_owner(w, pb, ip);
    if (to < 0 || to == w->id)
        return false;
    pb->steered = PKTBUF_STEER_DELIVER;
    steer_push(w, to, pb);
    return true;
}

static bool worker_steer_frag(struct stack *st, struct pktbuf *pb, const struct ip4_view *ip)
{
    struct worker *w = st->user;
    /* The reassembly key (RFC 791): every fragment of a datagram picks the same worker. */
    uint64_t h = ((uint64_t)ip->src * 0x9e3779b97f4a7c15ull) ^ ((uint64_t)ip->dst << 16) ^
                 ((uint64_t)ip->id << 8) ^ ip->proto;
    h ^= h >> 29;
    int to = (int)(h % (uint64_t)w->ngroup);
    if (to == w->id)
        return false;
    pb->steered = PKTBUF_STEER_FRAG;
    steer_push(w, to, pb);
    return true;
}

static void worker_arp_fanout(struct stack *st, int ifidx, const struct pktbuf *pb)
{
    struct worker *w = st->user;
    for (int v = 0; v < w->ngroup; v++) {
        if (v == w->id)
            continue;
        struct pktbuf *c = pktbuf_alloc(&st->pool);
        if (!c || !pktbuf_put(c, pb->len)) {
            if (c)
                pktbuf_free(c);
            CNT_INC(&st->cnt, steer_drop_full);
            continue;
        }
        memcpy(pktbuf_data(c), pktbuf_data(pb), pb->len);
        c->ifindex = (uint16_t)ifidx;
        c->steered = PKTBUF_STEER_ARP;
        steer_push(w, v, c);
    }
}

static bool worker_port_taken(struct stack *st, int proto, uint16_t port)
{
    struct worker *w = st->user;
    uint8_t o = port_claimer(w, proto, port);
    return o && o != (uint8_t)(w->id + 1);
}

/* Is TCP port `port` a listening group with this key? */
static bool group_is(const struct worker *w, uint16_t port, uint32_t key)
{
    /* seq_cst: the second half of the Dekker handshakes in group_join (count, then look)
     * against worker_port_release (count, then look); acquire for the key, published
     * before the group marker (group_make). */
    return __atomic_load_n(&w->port_owner[port_slot(6, port)], __ATOMIC_SEQ_CST) ==
               PORT_OWNER_GROUP &&
           __atomic_load_n(&w->port_group[port], __ATOMIC_ACQUIRE) == key;
}

/* A claim of a port that a listening group holds: only for its members (key), or with
 * adopt for a new session's listener when the group's session is gone. */
static int group_join(struct worker *w, uint16_t port, uint32_t key, bool adopt)
{
    uint32_t k = port_slot(6, port);
    if (adopt && !group_is(w, port, key) && group_is(w, port, STACK_GROUP_ORPHANED)) {
        /* acq_rel: of two sessions adopting at once, one wins; the key is what joiners
         * of the new session compare with. */
        uint32_t old = STACK_GROUP_ORPHANED;
        __atomic_compare_exchange_n(&w->port_group[port], &old, key, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE);
    }
    if (!group_is(w, port, key) || w->port_refs[k] == UINT16_MAX)
        return -EADDRINUSE; /* not the group, or its count would wrap */
    /* Count first, then look again (seq_cst both): a worker dropping the group's last
     * claim at the same time either sees our count and keeps the group, or we see the
     * port free and take our count back (worker_port_release ends the group if we held
     * it up). */
    __atomic_store_n(&w->port_refs[k], (uint16_t)(w->port_refs[k] + 1), __ATOMIC_SEQ_CST);
    if (!group_is(w, port, key)) {
        worker_port_release(w, 6, port);
        return -EADDRINUSE;
    }
    return 0;
}

/* Turn the listener's claim of TCP port `port` into a listening group with this key: from
 * now on every worker takes connections to it, each the ones its flow hash picks. Only
 * when that claim is the port's only one, on every worker: the group's hash would take
 * another socket's connections away (another session's, or a second socket of ours bound
 * to another address; those listen without a group). */
static int group_make(struct worker *w, uint16_t port, uint32_t key)
{
    uint32_t k = port_slot(6, port);
    uint8_t me = (uint8_t)(w->id + 1);
    uint8_t cur = __atomic_load_n(&w->port_owner[k], __ATOMIC_RELAXED);
    if ((cur & PORT_OWNER_MASK) != me || cur == PORT_OWNER_GROUP || w->port_refs[k] != 1)
        return -EADDRINUSE;
    /* No new sharers from here: a worker that joins a shared claim re-checks the owner
     * byte after counting (worker_port_claim), and we look at the counts after this
     * store (seq_cst both, Dekker). */
    if (!__atomic_compare_exchange_n(&w->port_owner[k], &cur, me, false, __ATOMIC_SEQ_CST,
                                     __ATOMIC_RELAXED))
        return -EADDRINUSE;
    for (int v = 0; v < w->ngroup; v++) {
        if (v != w->id && __atomic_load_n(&w->group[v].port_refs[k], __ATOMIC_SEQ_CST)) {
            __atomic_store_n(&w->port_owner[k], cur, __ATOMIC_RELEASE); /* shared again */
            return -EADDRINUSE;
        }
    }
    __atomic_store_n(&w->port_group[port], key, __ATOMIC_RELAXED);
    /* Release: the key is visible to a joiner that sees the group (group_is). */
    __atomic_store_n(&w->port_owner[k], PORT_OWNER_GROUP, __ATOMIC_RELEASE);
    return 0;
}

int worker_port_claim(struct worker *w, int proto, uint16_t port, bool shared)
{
    if (w->ngroup <= 1 || !port)
        return 0;
    uint32_t k = port_slot(proto, port);
    uint8_t me = (uint8_t)(w->id + 1), cur = 0;
    uint8_t want = (uint8_t)(me | (shared ? PORT_OWNER_SHARED : 0));
    bool sharer = false;
    if (w->port_refs[k] == UINT16_MAX)
        return -EADDRINUSE; /* the count would wrap and free a port still held */
    /* acq_rel: one owner per port among the workers. */
    if (!__atomic_compare_exchange_n(&w->port_owner[k], &cur, want, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE)) {
        if (cur == PORT_OWNER_GROUP) {
            return -EADDRINUSE; /* a listening group: members join with its key */
        } else if ((cur & PORT_OWNER_MASK) == me) {
            if (!shared) /* one of ours does not share: nobody else may join */
                __atomic_store_n(&w->port_owner[k], me, __ATOMIC_RELEASE);
        } else if (!shared || !(cur & PORT_OWNER_SHARED)) {
            return -EADDRINUSE; /* as Linux: sharing needs SO_REUSEADDR on both */
        } else {
            sharer = true;
        }
    }
    /* seq_cst: others peek at our count when handing the port over or making a group. */
    __atomic_store_n(&w->port_refs[k], (uint16_t)(w->port_refs[k] + 1), __ATOMIC_SEQ_CST);
    if (sharer) {
        /* Look again after counting (seq_cst, Dekker with group_make): the owner may have
         * stopped sharing meanwhile. */
        uint8_t now = __atomic_load_n(&w->port_owner[k], __ATOMIC_SEQ_CST);
        if (now == PORT_OWNER_GROUP || !(now & PORT_OWNER_SHARED)) {
            worker_port_release(w, proto, port);
            return -EADDRINUSE;
        }
    }
    return 0;
}

void worker_port_release(struct worker *w, int proto, uint16_t port)
{
    if (w->ngroup <= 1 || !port)
        return;
    uint32_t k = port_slot(proto, port);
    if (!w->port_refs[k])
        return;
    /* seq_cst, with the loads of the others' counts below: of two workers dropping a
     * group's last claims at once, at least one sees both counts at zero (Dekker). */
    __atomic_store_n(&w->port_refs[k], (uint16_t)(w->port_refs[k] - 1), __ATOMIC_SEQ_CST);
    uint8_t me = (uint8_t)(w->id + 1);
    uint8_t cur = __atomic_load_n(&w->port_owner[k], __ATOMIC_SEQ_CST);
    if (!w->port_refs[k] && cur == PORT_OWNER_GROUP) {
        for (int v = 0; v < w->ngroup; v++)
            if (__atomic_load_n(&w->group[v].port_refs[k], __ATOMIC_SEQ_CST))
                return;
        /* The group's last claim: the port is free again. A CAS, so a racing worker that
         * did the same, or a new binder after it, is not undone. */
        __atomic_compare_exchange_n(&w->port_owner[k], &cur, 0, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_RELAXED);
        return;
    }
    if (w->port_refs[k] || (cur & PORT_OWNER_MASK) != me)
        return;
    /* Our last claim of a port we own: a worker that shares it (SO_REUSEADDR) takes it
     * over, else nobody owns it. */
    uint8_t next = 0;
    for (int v = 0; v < w->ngroup && !next; v++)
        if (v != w->id && __atomic_load_n(&w->group[v].port_refs[k], __ATOMIC_RELAXED))
            next = (uint8_t)(v + 1) | PORT_OWNER_SHARED;
    __atomic_store_n(&w->port_owner[k], next, __ATOMIC_RELEASE);
}

/* The session with key is gone, and its orphaned connections hold the group's claims. */
static int group_orphan(struct worker *w, uint16_t port, uint32_t key)
{
    if (!group_is(w, port, key))
        return -ENOENT;
    /* acq_rel: a CAS, so a group another session adopted meanwhile stays its own. */
    __atomic_compare_exchange_n(&w->port_group[port], &key, STACK_GROUP_ORPHANED, false,
                                __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
    return 0;
}

int worker_port_group(struct worker *w, uint16_t port, uint32_t key, enum stack_claim_op op)
{
    if (w->ngroup <= 1 || !port)
        return -EINVAL;
    switch (op) {
    case STACK_CLAIM_GROUP_MAKE:
        return group_make(w, port, key);
    case STACK_CLAIM_GROUP_JOIN:
    case STACK_CLAIM_GROUP_ADOPT:
        return group_join(w, port, key, op == STACK_CLAIM_GROUP_ADOPT);
    case STACK_CLAIM_GROUP_ORPHAN:
        return group_orphan(w, port, key);
    default:
        break;
    }
    return -EINVAL;
}

static int worker_port_claim_hook(struct stack *st, int proto, uint16_t port,
                                  enum stack_claim_op op, uint32_t key)
{
    struct worker *w = st->user;
    switch (op) {
    case STACK_CLAIM_RELEASE:
        worker_port_release(w, proto, port);
        return 0;
    case STACK_CLAIM:
    case STACK_CLAIM_SHARED:
        return worker_port_claim(w, proto, port, op == STACK_CLAIM_SHARED);
    default:
        return proto != 6 ? -EINVAL : worker_port_group(w, port, key, op);
    }
}

/* Take what the other workers handed us. */
static int steer_poll(struct worker *w, int budget)
{
    int n = 0;
    for (int src = 0; src < w->ngroup && n < budget; src++) {
        struct steer_ring *r = &w->inq[src];
        uint32_t head = r->head;
        /* Acquire pairs with the sender's release of tail. */
        uint32_t tail = __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE);
        while (head != tail && n < budget) {
            struct pktbuf *pb = r->slot[head % WORKER_STEER_RING];
            head++;
            n++;
            CNT_INC(&w->st.cnt, steer_in);
            stack_input_steered(&w->st, pb);
        }
        /* Release: our reads of the slots are done before the sender reuses them. */
        __atomic_store_n(&r->head, head, __ATOMIC_RELEASE);
    }
    return n;
}

static bool steer_pending(const struct worker *w)
{
    for (int src = 0; src < w->ngroup; src++)
        if (__atomic_load_n(&w->inq[src].tail, __ATOMIC_SEQ_CST) != w->inq[src].head)
            return true;
    return false;
}

/* Wake the workers we handed datagrams to in this iteration. */
static void steer_kick(struct worker *w)
{
    if (!w->kick)
        return;
    /* seq_cst: the tails we published are ordered before the loads of their sleeping
     * flags in worker_kick (Dekker with their set_sleeping + steer_pending). */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    for (uint32_t k = w->kick; k; k &= k - 1)
        worker_kick(&w->group[__builtin_ctz(k)]);
    w->kick = 0;
}

/* rps_cpus = "auto": when the workers are pinned, the CPUs this process may run on that
 * no worker is pinned to (the kernel's work on the frames we write may go there,
 * nic_tap.c). Unpinned workers may run anywhere, so then nothing (an empty set). */
static void rps_auto(const struct conf *c, int nworkers, cpu_set_t *set)
{
    if (!c->n_cpus || sched_getaffinity(0, sizeof(*set), set) < 0) {
        CPU_ZERO(set);
        return;
    }
    for (int i = 0; i < nworkers; i++)
        CPU_CLR(c->cpus[(uint32_t)i % c->n_cpus], set);
}

/* Build the stack and open every interface's NIC (queue 0). Runs on the worker thread so
 * the backends' per-thread resources (io_uring submitter) belong to it. */
static int worker_init(struct worker *w)
{
    const struct conf *c = w->conf;
    int ret;

    /* The key of ISNs (RFC 6528) and SYN cookies: fresh per run, never from config. */
    struct stack_params sp = c->stack;
    if (w->id > 0) { /* one key for the group: a SYN cookie checks on any worker */
        memcpy(sp.secret, w->group[0].st.par.secret, sizeof(sp.secret));
    } else if (getrandom(sp.secret, sizeof(sp.secret), 0) != (ssize_t)sizeof(sp.secret)) {
        sp.secret[0] = clock_mono_ns() ^ (uint64_t)getpid() << 32;
        sp.secret[1] = (uint64_t)(uintptr_t)&sp ^ clock_mono_ns() * 0x9e3779b97f4a7c15ull;
    }
    if (w->ngroup > 1) { /* ephemeral ports name their worker */
        sp.port_stride = (uint16_t)w->ngroup;
        sp.port_offset = (uint16_t)w->id;
    }
    ret = stack_init(&w->st, &sp, clock_mono_ns());
    if (ret < 0) {
        log_error("worker %d: stack init: %s", w->id, strerror(-ret));
        return ret;
    }
    w->st_ready = true;
    w->st.user = w;
    for (uint32_t i = 0; i < c->n_ifs; i++) {
        const struct conf_iface *ci = &c->ifs[i];
        struct nic *n = &w->nics[w->nnics];

        if (w->id == 0) {
            struct nic_params np = ci->nic;
            np.nqueues = (uint16_t)w->ngroup; /* one queue per worker */
            if (np.rps == NIC_RPS_AUTO)
                rps_auto(c, w->ngroup, &np.rps_cpus);
            memset(n, 0, sizeof(*n));
            ret = nic_open(n, &np);
            if (ret < 0) {
                log_error("interface %s: cannot open %s backend%s: %s%s%s", ci->ip.name,
                          ci->nic.backend, w->ngroup > 1 ? " with one queue per worker" : "",
                          n->errmsg, n->errmsg[0] ? ": " : "", strerror(-ret));
                return ret;
            }
        } else {
            n = &w->group[0].nics[w->nnics]; /* worker 0 opened it; we serve queue id */
        }
        w->nicp[w->nnics] = n;
        w->qs[w->nnics] = (uint16_t)w->id;
        w->fault_par[w->nnics] = ci->nic.fault;
        w->nnics++;
        ret = stack_add_if(&w->st, &ci->ip, n, (uint16_t)w->id);
        if (ret < 0) {
            log_error("interface %s: cannot add to the stack: %s", ci->ip.name, strerror(-ret));
            return ret;
        }
        if (w->id == 0)
            n->pcap = w->capture; /* queue 0's worker owns the capture (nic.h) */
        w->ifs[w->nifs].p = ci->ip;
        snprintf(w->ifs[w->nifs].backend, sizeof(w->ifs[w->nifs].backend), "%s", ci->nic.backend);
        w->ifs[w->nifs].ifindex = n->ifindex;
        w->nifs++;
        log_info("interface %s: %s backend up%s%s, mtu %u", ci->ip.name, ci->nic.backend,
                 n->mode[0] ? ", " : "", n->mode, (unsigned)ci->ip.mtu);
    }
    if (w->ngroup > 1) {
        w->st.steer = worker_steer;
        w->st.steer_frag = worker_steer_frag;
        w->st.arp_fanout = worker_arp_fanout;
        w->st.port_taken = worker_port_taken;
        w->st.port_claim = worker_port_claim_hook;
        /* Buffers steered to another worker come back through the remote free list. */
        uint32_t tok = (uint32_t)w->id + 1;
        w->st.pool.owner = w->st.large.owner = w->st.rx64.owner = tok;
    }
    stack_start(&w->st);
    if (w->cpu >= 0) {
        cpu_set_t set;

        CPU_ZERO(&set);
        CPU_SET(w->cpu, &set);
        ret = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
        if (ret)
            log_warn("worker %d: cannot pin to cpu %d: %s", w->id, w->cpu, strerror(ret));
        else
            log_info("worker %d: pinned to cpu %d", w->id, w->cpu);
    }
    return 0;
}

static void worker_fini(struct worker *w)
{
    /* NICs first: they hold RX buffers from the stack's pool. */
    close_nics(w);
    if (w->st_ready)
        stack_destroy(&w->st);
    w->st_ready = false;
}

/* Run a posted request, if any. */
static bool mailbox_run(struct worker *w)
{
    struct worker_req *r;
    int ret;

    /* Cheap relaxed peek first: the common case is an empty slot. */
    if (!__atomic_load_n(&w->req, __ATOMIC_RELAXED))
        return false;
    /* Acquire pairs with the release in worker_call's store: fn/arg/the data arg points to
     * are visible before we run it. Exchange (not load+store) so a retraction by the control
     * thread on timeout and our take cannot both succeed. */
    r = __atomic_exchange_n(&w->req, NULL, __ATOMIC_ACQUIRE);
    if (!r)
        return false;
    ret = r->fn(w, r->arg);
    /* The mutex orders our writes (ret, results behind arg) before the caller sees done. */
    pthread_mutex_lock(&w->mb_lock);
    r->ret = ret;
    r->done = true;
    pthread_cond_broadcast(&w->mb_cond);
    pthread_mutex_unlock(&w->mb_lock);
    return true;
}

static int clients_poll(struct worker *w, int budget)
{
    int work = 0;
    for (struct client *cl = w->clients; cl; cl = cl->next)
        work += client_poll(cl, budget);
    return work;
}

static bool clients_pending(const struct worker *w)
{
    for (const struct client *cl = w->clients; cl; cl = cl->next)
        if (client_pending(cl))
            return true;
    return false;
}

static void set_sleeping(struct worker *w, uint32_t v)
{
    /* seq_cst: the store must be ordered before the loads of the mailbox and of the
     * clients' req_pending words that follow (Dekker with worker_call and with clients,
     * which publish a request and then load this flag to decide on a doorbell). */
    __atomic_store_n(&w->sleeping, (int)v, __ATOMIC_SEQ_CST);
    uint32_t *f = __atomic_load_n(&w->shm_sleeping, __ATOMIC_RELAXED);
    if (f)
        __atomic_store_n(f, v, __ATOMIC_SEQ_CST);
}

/* rps_cpus = "auto": once a window, steer the kernel's side of our queues away while we
 * are saturated by bulk traffic inline, back when not (nic_steer_step). A sysfs write per
 * switch, rare. The frame and byte counts are our own counters' deltas over the window. */
static void steer_window(struct worker *w, uint64_t now)
{
    uint64_t span = now - w->win_start;
    if (span < NIC_STEER_WINDOW_NS)
        return;
    const struct stack_counters *c = &w->st.cnt;
    uint64_t frames = cnt_read(&c->nic_rx_frames) + cnt_read(&c->nic_tx_frames);
    uint64_t bytes = cnt_read(&c->nic_rx_bytes) + cnt_read(&c->nic_tx_bytes);
    if (nic_steer_step(&w->steer, w->busy_ns, span, frames - w->win_frames, bytes - w->win_bytes)) {
        log_debug("worker %d: rps_cpus %s (busy %u%%, %u frames)", w->id,
                  w->steer.on ? "on" : "off", (unsigned)(w->busy_ns * 100 / span),
                  (unsigned)(frames - w->win_frames));
        for (int i = 0; i < w->nnics; i++) {
            int rc = nic_steer(w->nicp[i], w->qs[i], w->steer.on);
            if (rc < 0 && rc != -EOPNOTSUPP)
                log_warn("worker %d: rps_cpus %s: %s", w->id, w->steer.on ? "on" : "off",
                         strerror(-rc));
        }
    }
    w->win_frames = frames;
    w->win_bytes = bytes;
    w->win_start = now;
    w->busy_ns = 0;
}

static void worker_loop(struct worker *w)
{
    struct stack *st = &w->st;
    uint64_t now = clock_mono_ns(), last_work = now, prev = now;
    bool worked = false, steer = false;

    for (int i = 0; i < w->nnics; i++)
        steer |= w->nicp[i]->steer_auto;
    w->win_start = now;
    while (!__atomic_load_n(&w->stop, __ATOMIC_RELAXED)) {
        /* Relaxed: a progress indicator for the watchdog; single writer. */
        __atomic_store_n(&w->heartbeat, __atomic_load_n(&w->heartbeat, __ATOMIC_RELAXED) + 1,
                         __ATOMIC_RELAXED);
        now = clock_mono_ns();
        if (steer) { /* the last pass was busy time if it did work (no extra clock read) */
            if (worked)
                w->busy_ns += now - prev;
            prev = now;
            worked = false;
            steer_window(w, now);
        }
        stack_poll(st, now);
        int budget = (int)__atomic_load_n(&w->rx_budget, __ATOMIC_RELAXED);
        int n = stack_rx(st, budget);
        if (w->ngroup > 1)
            n += steer_poll(w, budget);
        bool m = mailbox_run(w);
        n += clients_poll(w, budget);
        /* Wake the clients before the NIC flush: a TAP write runs the peer's stack inline
         * and can take tens of µs, while a sleeping client needs about as long to get its
         * CPU back; both then proceed at once. The second pass catches what the flush
         * produced (nothing may stay pending when we go to sleep). */
        for (struct client *cl = w->clients; cl; cl = cl->next)
            client_flush_wakeups(cl);
        stack_flush(st);
        for (struct client *cl = w->clients; cl; cl = cl->next)
            client_flush_wakeups(cl);
        steer_kick(w);
        if (n > 0 || m) {
            last_work = now;
            worked = true;
            continue;
        }
        uint64_t spin_ns = (uint64_t)__atomic_load_n(&w->busy_poll_us, __ATOMIC_RELAXED) * 1000;
        if (now - last_work < spin_ns) {
            /* Busy polling, but yielding: where the clients and the kernel peer outnumber
             * the CPUs, a task woken on ours would otherwise wait for our time slice
             * (measured: 128 µs average scheduling delay for redis-server). With nobody
             * waiting it returns at once. redis-server preloaded: about 9% more
             * requests/s; connection rate unchanged. */
            sched_yield();
            continue;
        }

        /* Going to sleep. Dekker-style handshake with worker_call/worker_kick and with the
         * clients: we store sleeping=1 then load req/stop/req_pending; the other side stores
         * its request then loads sleeping. All seq_cst, so at least one side sees the other's
         * store: either we see the work here and do not sleep, or the other side sees
         * sleeping=1 and writes the eventfd, which ends nic_wait. No lost wake-up. */
        set_sleeping(w, 1);
        if (__atomic_load_n(&w->req, __ATOMIC_SEQ_CST) ||
            __atomic_load_n(&w->stop, __ATOMIC_SEQ_CST) || clients_pending(w) ||
            (w->ngroup > 1 && steer_pending(w))) {
            set_sleeping(w, 0);
            continue;
        }
        /* Going idle: a good time to report a deleted device, once (nic_dev_gone). */
        uint64_t gone = cnt_read(&st->cnt.nic_dev_gone);
        if (gone != w->dev_gone_seen) {
            w->dev_gone_seen = gone;
            log_error("worker %d: a device of ours was deleted: its interface receives "
                      "nothing more until shmnetd is restarted",
                      w->id);
        }
        uint64_t dl = stack_next_deadline(st);
        uint64_t timeout = dl == UINT64_MAX ? UINT64_MAX : (dl > now ? dl - now : 0);
        int ret = nic_wait(w->nicp, w->qs, w->nnics, w->wake_fd, timeout);
        if (ret < 0 && ret != -EINTR)
            log_debug("worker %d: nic_wait: %s", w->id, strerror(-ret));
        /* The flags only tell others whether an eventfd write is needed; a stale 1 costs
         * one spurious write. */
        set_sleeping(w, 0);
        if (ret == 1) { /* woken by the control thread or a client doorbell: drain it */
            uint64_t v;
            ssize_t r = read(w->wake_fd, &v, sizeof(v));
            (void)r;
        }
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    char name[16];
    int ret;

    snprintf(name, sizeof(name), "shmnet-w%d", w->id);
    pthread_setname_np(pthread_self(), name);
    if (w->ngroup > 1)
        pktbuf_thread_token = (uint32_t)w->id + 1;
    ret = worker_init(w);
    pthread_mutex_lock(&w->mb_lock);
    w->init_state = ret < 0 ? ret : 1;
    pthread_cond_broadcast(&w->mb_cond);
    pthread_mutex_unlock(&w->mb_lock);
    if (ret == 0) {
        log_debug("worker %d: running", w->id);
        worker_loop(w);
    }
    if (w->ngroup <= 1 || ret < 0)
        worker_fini(w); /* a group is taken down by worker_stop_group */
    return NULL;
}

/* What worker_start_group allocated for w besides the thread. */
static void worker_release(struct worker *w)
{
    if (w->wake_fd >= 0) {
        pthread_cond_destroy(&w->mb_cond);
        pthread_mutex_destroy(&w->mb_lock);
        close(w->wake_fd);
    }
    w->wake_fd = -1;
    free(w->port_refs);
    free(w->inq);
    w->port_refs = NULL;
    w->inq = NULL;
}

/* Ask a running worker to leave its loop. seq_cst: same handshake as worker_call (see
 * worker_loop); the eventfd is written unconditionally, so a worker already inside
 * nic_wait wakes too. */
static void worker_signal_stop(struct worker *w)
{
    uint64_t one = 1;

    __atomic_store_n(&w->stop, 1, __ATOMIC_SEQ_CST);
    ssize_t r = write(w->wake_fd, &one, sizeof(one));
    (void)r;
}

int worker_start(struct worker *w, int id, const struct conf *c, struct pcap_tap *capture)
{
    return worker_start_group(w - id, 1, id, c, capture, NULL);
}

int worker_start_group(struct worker *group, int n, int id, const struct conf *c,
                       struct pcap_tap *capture, uint8_t *port_owner)
{
    struct worker *w = &group[id];
    pthread_condattr_t ca;
    int ret;

    memset(w, 0, sizeof(*w));
    w->wake_fd = -1;
    w->group = group;
    w->ngroup = n;
    w->port_owner = port_owner;
    w->port_group = port_owner ? (uint32_t *)(port_owner + WORKER_PORTS) : NULL;
    if (n > 1) {
        w->port_refs = calloc(WORKER_PORTS, sizeof(*w->port_refs));
        if (posix_memalign((void **)&w->inq, 64, (size_t)n * sizeof(*w->inq)))
            w->inq = NULL;
        if (!w->port_refs || !w->inq || !port_owner) {
            worker_release(w);
            return -ENOMEM;
        }
        memset(w->inq, 0, (size_t)n * sizeof(*w->inq));
    }
    w->id = id;
    w->conf = c;
    w->capture = capture;
    w->cpu = c->n_cpus ? c->cpus[(uint32_t)id % c->n_cpus] : -1; /* docs/config.md */
    w->busy_poll_us = c->busy_poll_us;
    w->rx_budget = c->rx_budget;
    w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->wake_fd < 0) {
        ret = -errno;
        worker_release(w);
        return ret;
    }
    pthread_mutex_init(&w->mb_lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->mb_cond, &ca);
    pthread_condattr_destroy(&ca);

    ret = pthread_create(&w->thr, NULL, worker_main, w);
    if (ret) {
        ret = -ret;
        goto fail;
    }
    pthread_mutex_lock(&w->mb_lock);
    while (w->init_state == 0)
        pthread_cond_wait(&w->mb_cond, &w->mb_lock);
    ret = w->init_state < 0 ? w->init_state : 0;
    pthread_mutex_unlock(&w->mb_lock);
    if (ret < 0) {
        pthread_join(w->thr, NULL);
        goto fail;
    }
    w->running = true;
    return 0;
fail:
    worker_release(w);
    return ret;
}

void worker_stop_group(struct worker *group, int n)
{
    if (n <= 1) {
        if (n == 1)
            worker_stop(&group[0]);
        return;
    }
    for (int i = 0; i < n; i++)
        if (group[i].running)
            worker_signal_stop(&group[i]);
    for (int i = 0; i < n; i++)
        if (group[i].running)
            pthread_join(group[i].thr, NULL);
    /* Every thread is gone: buffers still on the rings go back to their pools, then the
     * NICs (worker 0's) give back their RX buffers, then each stack what it holds, and
     * only then the pools go (a stack may hold another worker's buffers). */
    for (int i = 0; i < n; i++)
        for (int src = 0; src < n && group[i].inq; src++) {
            struct steer_ring *r = &group[i].inq[src];
            for (; r->head != r->tail; r->head++)
                pktbuf_free(r->slot[r->head % WORKER_STEER_RING]);
        }
    for (int i = n; i-- > 0;)
        close_nics(&group[i]);
    for (int i = 0; i < n; i++)
        if (group[i].st_ready)
            stack_release(&group[i].st);
    for (int i = 0; i < n; i++) {
        struct worker *w = &group[i];
        if (w->st_ready)
            stack_destroy_pools(&w->st);
        w->st_ready = false;
        if (!w->running)
            continue;
        w->running = false;
        worker_release(w);
    }
}

void worker_stop(struct worker *w)
{
    if (!w->running)
        return;
    worker_signal_stop(w);
    pthread_join(w->thr, NULL);
    w->running = false;
    worker_release(w);
}

void worker_kick(struct worker *w)
{
    uint64_t one = 1;

    /* seq_cst pairs with the worker's sleeping store/req load (see worker_loop). Exchange
     * so only one waker pays for the eventfd write per sleep. */
    if (__atomic_exchange_n(&w->sleeping, 0, __ATOMIC_SEQ_CST)) {
        ssize_t r = write(w->wake_fd, &one, sizeof(one));
        (void)r;
    }
}

int worker_call(struct worker *w, worker_fn fn, void *arg, int timeout_ms)
{
    struct worker_req r = {.fn = fn, .arg = arg};
    struct timespec dl;
    bool timed = true;
    int ret;

    if (!w->running)
        return -ESRCH;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    /* Release publishes fn/arg (and what arg points to) to the worker's acquire exchange;
     * seq_cst also orders it before the sleeping exchange in worker_kick (no lost wake). */
    __atomic_store_n(&w->req, &r, __ATOMIC_SEQ_CST);
    worker_kick(w);

    pthread_mutex_lock(&w->mb_lock);
    while (!r.done) {
        int rc = timed ? pthread_cond_timedwait(&w->mb_cond, &w->mb_lock, &dl)
                       : pthread_cond_wait(&w->mb_cond, &w->mb_lock);
        if (rc == ETIMEDOUT && !r.done) {
            struct worker_req *exp = &r;
            /* Take the request back. If the worker already took it, it is running our fn
             * (short, non-blocking) and r lives on our stack: wait for it to finish. */
            if (__atomic_compare_exchange_n(&w->req, &exp, NULL, false, __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE)) {
                pthread_mutex_unlock(&w->mb_lock);
                return -ETIMEDOUT;
            }
            timed = false;
        }
    }
    ret = r.ret;
    pthread_mutex_unlock(&w->mb_lock);
    return ret;
}

void worker_set_shm_sleeping(struct worker *w, uint32_t *flag)
{
    /* Release: the state page is initialised before the worker may store into it. */
    __atomic_store_n(&w->shm_sleeping, flag, __ATOMIC_RELEASE);
}

void worker_set_tunables(struct worker *w, uint32_t busy_poll_us, uint32_t rx_budget)
{
    /* Relaxed: independent values, read fresh by the worker every iteration. */
    __atomic_store_n(&w->busy_poll_us, busy_poll_us, __ATOMIC_RELAXED);
    __atomic_store_n(&w->rx_budget, rx_budget, __ATOMIC_RELAXED);
}
