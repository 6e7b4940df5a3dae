/* hostile: a client that attaches raw (shm/shm.h) and scribbles over its own region.
 *
 *   hostile SECONDS [SEED]
 *
 * Attaches over $SHMNET_SOCKET (connect, SHM_ATTACH_LINE, struct shm_attach_reply with
 * SCM_RIGHTS region/state/doorbell/channel fds), maps the region read-write, checks that
 * the daemon-wide state page cannot be mapped writable, then for SECONDS does a random mix
 * of: plausible requests (every op, random handles and arguments, on random channels, with
 * properly published ring indices, so the daemon goes past its index checks into the
 * handlers), sockets created and connected to 10.200.0.1 whose TX fifos receive random
 * records, random bytes over random parts of the region (headers, rings, socket table,
 * fifos), whole-region garbage, and doorbell writes. When the daemon hangs up (it detected
 * the damage) the client re-attaches and goes on.
 * Prints "ok state_page_read_only" (or FAIL) and at the end
 * "HOSTILE attaches <n> disconnects <n> iterations <n>"; exit 0 unless a check failed or
 * no attach ever worked. */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "shm/shm.h"
#include "shm/shm_ring.h"

struct att {
    int ctl, fds[1 + 2 * SHM_MAX_PARTS + SHM_MAX_CHANNELS], nfds;
    uint8_t *base;
    size_t size;
    struct shm_region *reg;
    struct shm_attach_reply rep;
};

static uint64_t rng;
static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int attach(struct att *a, int *state_checked)
{
    const char *path = getenv(SHM_SOCKET_ENV);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path ? path : SHM_DEFAULT_SOCKET);
    memset(a, 0, sizeof(*a));
    a->ctl = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (a->ctl < 0 || connect(a->ctl, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        goto fail;
    if (write(a->ctl, SHM_ATTACH_LINE, strlen(SHM_ATTACH_LINE)) != (ssize_t)strlen(SHM_ATTACH_LINE))
        goto fail;
    char cbuf[CMSG_SPACE(sizeof(a->fds))];
    struct iovec iov = {.iov_base = &a->rep, .iov_len = sizeof(a->rep)};
    struct msghdr m = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
    ssize_t n = recvmsg(a->ctl, &m, MSG_CMSG_CLOEXEC);
    if (n != sizeof(a->rep) || a->rep.result != 0)
        goto fail;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            a->nfds = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            memcpy(a->fds, CMSG_DATA(c), sizeof(int) * a->nfds);
        }
    }
    if (a->nfds < 3 || a->rep.nparts < 1 || a->nfds < 1 + 2 * (int)a->rep.nparts)
        goto fail;
    a->size = a->rep.region_size;
    a->base = mmap(NULL, a->size, PROT_READ | PROT_WRITE, MAP_SHARED, a->fds[0], 0);
    if (a->base == MAP_FAILED)
        goto fail;
    a->reg = (struct shm_region *)a->base;
    if (!*state_checked) {
        void *w = mmap(NULL, a->rep.state_size, PROT_READ | PROT_WRITE, MAP_SHARED,
                       a->fds[a->rep.nparts], 0);
        if (w != MAP_FAILED) {
            printf("FAIL state_page_read_only: the state page mapped writable\n");
            munmap(w, a->rep.state_size);
            *state_checked = -1;
        } else {
            printf("ok state_page_read_only (%s)\n", strerror(errno));
            *state_checked = 1;
        }
        fflush(stdout);
    }
    return 0;
fail:
    if (a->ctl >= 0)
        close(a->ctl);
    for (int i = 0; i < a->nfds; i++)
        close(a->fds[i]);
    return -1;
}

static void detach(struct att *a)
{
    munmap(a->base, a->size);
    for (int i = 0; i < a->nfds; i++)
        close(a->fds[i]);
    close(a->ctl);
}

static bool hung_up(struct att *a)
{
    struct pollfd p = {.fd = a->ctl, .events = POLLIN};
    if (poll(&p, 1, 0) == 1) {
        char c;
        return recv(a->ctl, &c, 1, MSG_DONTWAIT) <= 0;
    }
    return false;
}

static void ring_doorbell(struct att *a)
{
    uint64_t one = 1 + rnd() % 3;
    if (write(a->fds[a->rep.nparts + 1], &one, sizeof(one)) < 0) {
        /* saturated counter: fine */
    }
}

/* A request with a correctly published tail, so the daemon handles it. */
static void post(struct att *a, uint32_t ch, struct shm_req *r)
{
    struct shm_region *reg = a->reg;
    uint32_t nch = a->rep.nchannels;
    if (!nch || (uint64_t)reg->chan_off + (uint64_t)nch * sizeof(struct shm_channel) > a->size)
        return;
    struct shm_channel *c = (struct shm_channel *)(a->base + reg->chan_off) + ch % nch;
    uint32_t tail = __atomic_load_n(&c->req_tail, __ATOMIC_RELAXED);
    uint32_t head = __atomic_load_n(&c->req_head, __ATOMIC_ACQUIRE);
    if (tail - head >= SHM_RING_SIZE) {
        /* full: consume completions so the daemon can go on, or leave it stuck */
        __atomic_store_n(&c->cpl_head, __atomic_load_n(&c->cpl_tail, __ATOMIC_ACQUIRE),
                         __ATOMIC_RELEASE);
        return;
    }
    c->req[tail % SHM_RING_SIZE] = *r;
    __atomic_store_n(&c->req_tail, tail + 1, __ATOMIC_RELEASE);
    __atomic_store_n(&c->cpl_head, __atomic_load_n(&c->cpl_tail, __ATOMIC_ACQUIRE),
                     __ATOMIC_RELEASE);
    __atomic_fetch_or(&reg->req_pending, 1ull << (ch % nch), __ATOMIC_RELEASE);
}

static void plausible(struct att *a)
{
    struct shm_req r;
    memset(&r, 0, sizeof(r));
    r.op = (uint32_t)(rnd() % (SHM_OP_COUNT + 2));
    r.seq = (uint32_t)rnd();
    uint32_t nsocks = a->rep.region_size ? a->reg->nsocks : 0;
    uint32_t idx = (uint32_t)(rnd() % (nsocks ? nsocks + 2 : 4));
    r.handle = rnd() % 4 ? shm_handle(idx, 1 + (uint32_t)(rnd() % 3)) : (uint32_t)rnd();
    r.flags = rnd() % 4 ? 0 : (uint32_t)rnd();
    r.arg0 = r.op == SHM_OP_SOCKET ? (rnd() % 4 ? SOCK_DGRAM : (int)rnd()) : (int32_t)(rnd() % 300);
    r.arg1 = (int32_t)(rnd() % 70);
    r.addr = rnd() % 2 ? 0x0ac80001u : (uint32_t)rnd(); /* 10.200.0.1 or anything */
    r.port = (uint16_t)(rnd() % 2 ? 9 : rnd());
    r.optlen = (uint16_t)(rnd() % 40);
    for (unsigned i = 0; i < sizeof(r.opt); i++)
        r.opt[i] = (uint8_t)rnd();
    post(a, (uint32_t)rnd(), &r);
}

/* Random records into a live socket's TX fifo, then a TX kick. */
static void tx_garbage(struct att *a)
{
    struct shm_region *reg = a->reg;
    uint32_t nsocks = reg->nsocks, soff = reg->sock_off;
    if (!nsocks || (uint64_t)soff + (uint64_t)nsocks * sizeof(struct shm_sock) > a->size)
        return;
    uint32_t i = (uint32_t)(rnd() % (nsocks < 8 ? nsocks : 8));
    struct shm_sock *s = (struct shm_sock *)(a->base + soff) + i;
    uint32_t gen = s->gen, off = s->tx_off, size = s->tx_size;
    if (!gen || !size || (uint64_t)off + size > a->size)
        return;
    uint32_t tail = s->tx_tail, head = s->tx_head;
    struct shm_dgram h = {
        .len = (uint32_t)(rnd() % 3 ? rnd() % 2000 : rnd()), .addr = 0x0ac80001u, .port = 9};
    static uint8_t junk[2048];
    for (unsigned k = 0; k < 64; k++)
        junk[rnd() % sizeof(junk)] = (uint8_t)rnd();
    if (h.len <= sizeof(junk) &&
        shm_dgram_write(a->base + off, size, &tail, head, &h, junk, NULL, 0) == 0) {
        __atomic_store_n(&s->tx_tail, tail, __ATOMIC_RELEASE);
    } else {
        __atomic_store_n(&s->tx_tail, (uint32_t)(tail + rnd() % 64), __ATOMIC_RELEASE);
    }
    s->tx_kick = 1;
    struct shm_req r = {.op = SHM_OP_TX, .handle = shm_handle(i, gen)};
    post(a, (uint32_t)rnd(), &r);
}

static void scribble(struct att *a)
{
    size_t off = rnd() % a->size, len = 1 + rnd() % 512;
    if (off + len > a->size)
        len = a->size - off;
    for (size_t k = 0; k < len; k++)
        a->base[off + k] = (uint8_t)rnd();
}

static void scribble_all(struct att *a)
{
    uint64_t *p = (uint64_t *)a->base;
    for (size_t k = 0; k < a->size / 8; k += 1 + rnd() % 64)
        p[k] = rnd();
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    double secs = atof(argv[1]);
    rng = argc > 2 ? strtoull(argv[2], NULL, 0) : (uint64_t)getpid() * 0x9e3779b97f4a7c15ull;
    if (!rng)
        rng = 1;
    int state_checked = 0;
    unsigned long attaches = 0, disconnects = 0, iters = 0;
    double end = now() + secs;
    struct att a;
    while (now() < end) {
        if (attach(&a, &state_checked) < 0) {
            /* refused or daemon busy tearing down the last session: try again */
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
            continue;
        }
        attaches++;
        /* a few sockets, connected to the kernel peer, so TX fifos exist */
        for (int k = 0; k < 4; k++) {
            struct shm_req r = {.op = SHM_OP_SOCKET, .arg0 = SOCK_DGRAM, .seq = (uint32_t)k};
            post(&a, 0, &r);
            struct shm_req c = {.op = SHM_OP_CONNECT,
                                .handle = shm_handle((uint32_t)k, 1),
                                .addr = 0x0ac80001u,
                                .port = 9};
            post(&a, 0, &c);
        }
        ring_doorbell(&a);
        while (now() < end) {
            iters++;
            uint64_t what = rnd() % 100;
            if (what < 40)
                plausible(&a);
            else if (what < 70)
                tx_garbage(&a);
            else if (what < 97)
                scribble(&a);
            else if (what < 98)
                scribble_all(&a);
            if (what % 3 == 0)
                ring_doorbell(&a);
            else
                __atomic_fetch_or(&a.reg->req_pending, rnd(), __ATOMIC_RELEASE);
            if (iters % 64 == 0 && hung_up(&a)) {
                disconnects++;
                break;
            }
        }
        detach(&a);
    }
    printf("HOSTILE attaches %lu disconnects %lu iterations %lu\n", attaches, disconnects, iters);
    return state_checked == 1 && attaches > 0 ? 0 : 1;
}
