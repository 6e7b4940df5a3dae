/* ring_rtt: round trips of SHM_OP_NOP through one channel's request and completion rings.
 *
 *   ring_rtt [ROUNDS=200000] [WARMUP=20000]
 *
 * Attaches raw over $SHMNET_SOCKET (shm/shm.h: "attach" line, reply + SCM_RIGHTS), then
 * for each round publishes one NOP request (release store of req_tail, fetch_or of
 * req_pending, doorbell only when the worker says it sleeps - the same protocol as
 * libshmnet) and spins until its completion is visible. This is the floor of any
 * request that needs the daemon (socket calls, TX kicks): no system call is made while
 * the worker polls. Prints one line:
 *   ring_rtt rounds N median_ns X p99_ns Y p999_ns Z mean_ns M doorbells D */
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

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    long rounds = argc > 1 ? atol(argv[1]) : 200000, warm = argc > 2 ? atol(argv[2]) : 20000;
    const char *path = getenv(SHM_SOCKET_ENV);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path ? path : SHM_DEFAULT_SOCKET);
    int ctl = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (ctl < 0 || connect(ctl, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        perror("ring_rtt: connect");
        return 1;
    }
    if (write(ctl, SHM_ATTACH_LINE, strlen(SHM_ATTACH_LINE)) < 0)
        return 1;
    struct shm_attach_reply rep;
    int fds[1 + 2 * SHM_MAX_PARTS + SHM_MAX_CHANNELS], nfds = 0;
    char cbuf[CMSG_SPACE(sizeof(fds))];
    struct iovec iov = {.iov_base = &rep, .iov_len = sizeof(rep)};
    struct msghdr m = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
    if (recvmsg(ctl, &m, MSG_CMSG_CLOEXEC) != sizeof(rep) || rep.result != 0) {
        fprintf(stderr, "ring_rtt: attach refused (layout version %u expected)\n",
                SHM_LAYOUT_VERSION);
        return 1;
    }
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            nfds = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            memcpy(fds, CMSG_DATA(c), sizeof(int) * nfds);
        }
    if (nfds < 3 || rep.nparts < 1 || nfds < 1 + 2 * (int)rep.nparts)
        return 1;
    uint8_t *base = mmap(NULL, rep.region_size, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
    struct shm_state *st = mmap(NULL, rep.state_size, PROT_READ, MAP_SHARED, fds[rep.nparts], 0);
    if (base == MAP_FAILED || st == MAP_FAILED) {
        perror("ring_rtt: mmap");
        return 1;
    }
    struct shm_region *reg = (struct shm_region *)base;
    if (reg->magic != SHM_MAGIC || reg->version != SHM_LAYOUT_VERSION || !reg->nchannels)
        return 1;
    struct shm_channel *ch = (struct shm_channel *)(base + reg->chan_off);
    uint32_t tail = 0, head = 0, worker = reg->worker;
    uint64_t *lat = malloc(sizeof(uint64_t) * (size_t)rounds), doorbells = 0, sum = 0;
    for (long i = -warm; i < rounds; i++) {
        struct shm_req r = {.op = SHM_OP_NOP, .seq = (uint32_t)i};
        struct shm_cpl c;
        uint64_t t0 = now_ns();
        if (shm_req_push(ch, &tail, &r) < 0)
            return 1;
        __atomic_fetch_or(&reg->req_pending, 1ull, __ATOMIC_RELEASE);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        if (__atomic_load_n(&st->worker[worker].sleeping, __ATOMIC_SEQ_CST)) {
            uint64_t one = 1;
            if (write(fds[rep.nparts + 1], &one, sizeof(one)) == sizeof(one))
                doorbells++;
        }
        while (!shm_cpl_pop(ch, &head, &c))
            __builtin_ia32_pause();
        uint64_t dt = now_ns() - t0;
        if (c.seq != (uint32_t)i || c.result != 0) {
            fprintf(stderr, "ring_rtt: bad completion seq %u result %d\n", c.seq, c.result);
            return 1;
        }
        if (i >= 0) {
            lat[i] = dt;
            sum += dt;
        }
    }
    qsort(lat, (size_t)rounds, sizeof(*lat), cmp_u64);
    printf(
        "ring_rtt rounds %ld median_ns %llu p99_ns %llu p999_ns %llu mean_ns %llu doorbells %llu\n",
        rounds, (unsigned long long)lat[rounds / 2], (unsigned long long)lat[rounds * 99 / 100],
        (unsigned long long)lat[rounds * 999 / 1000], (unsigned long long)(sum / rounds),
        (unsigned long long)doorbells);
    return 0;
}
