/* udp_mt_client: multithreaded UDP echo client.
 *
 *   udp_mt_client [-o OWN_THREADS] [-S SHARED_THREADS] [-n PER_THREAD] [-l LEN] ADDR PORT
 *
 * OWN_THREADS threads (default 4) each open their own socket and do PER_THREAD (default
 * 200) echo round trips, checking every byte. SHARED_THREADS threads (default 4) share one
 * socket: each sends a datagram and then receives one - not necessarily its own, since the
 * threads race for the replies - and checks it; every (thread, seq) must come back exactly
 * once in the end. Datagrams are self-describing: a header (thread, seq, len) and bytes
 * derived from it. Prints "OK <datagrams>" and exits 0 only if all checks pass. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shmnet.h"

#define MAXT 64

static struct sockaddr_in srv;
static int per_thread = 200, dlen = 512, nown = 4, nshared = 4;
static int shared_fd;
static uint8_t *seen; /* [shared thread][seq] */
static int failed;

struct hdr {
    uint32_t tid, seq, len, magic;
};

static void fill(uint8_t *b, uint32_t tid, uint32_t seq, uint32_t len)
{
    struct hdr h = {tid, seq, len, 0x5eedf00d};
    memcpy(b, &h, sizeof(h));
    uint32_t x = tid * 1000003u + seq * 7919u + len + 1u;
    for (uint32_t i = sizeof(h); i < len; i++) {
        x = x * 1103515245u + 12345u;
        b[i] = (uint8_t)(x >> 16);
    }
}

static void fail(const char *fmt, uint32_t a, uint32_t b, long c)
{
    printf("FAIL ");
    printf(fmt, a, b, c);
    printf("\n");
    fflush(stdout);
    __atomic_store_n(&failed, 1, __ATOMIC_RELAXED);
}

/* Check one received datagram; return its header through *h. */
static int verify(const uint8_t *b, ssize_t got, struct hdr *h)
{
    static __thread uint8_t exp[65536];
    if (got < (ssize_t)sizeof(*h))
        return -1;
    memcpy(h, b, sizeof(*h));
    if (h->magic != 0x5eedf00d || h->len != (uint32_t)got || h->len > sizeof(exp))
        return -1;
    fill(exp, h->tid, h->seq, h->len);
    return memcmp(exp, b, (size_t)got) ? -1 : 0;
}

static void *own_thread(void *arg)
{
    uint32_t tid = (uint32_t)(uintptr_t)arg;
    uint8_t *tx = malloc(dlen), *rx = malloc(65536);
    int fd = shmnet_socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0 || shmnet_connect(fd, (struct sockaddr *)&srv, sizeof(srv)) < 0) {
        fail("own thread %u: socket/connect failed (%u) errno %ld", tid, 0, errno);
        return NULL;
    }
    for (uint32_t s = 0; s < (uint32_t)per_thread; s++) {
        fill(tx, tid, s, (uint32_t)dlen);
        if (shmnet_send(fd, tx, dlen, 0) != dlen) {
            fail("own thread %u seq %u: send errno %ld", tid, s, errno);
            break;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (shmnet_poll(&p, 1, 5000) != 1) {
            fail("own thread %u seq %u: no echo within 5 s (%ld)", tid, s, 0);
            break;
        }
        ssize_t got = shmnet_recv(fd, rx, 65536, 0);
        struct hdr h;
        if (verify(rx, got, &h) || h.tid != tid || h.seq != s) {
            fail("own thread %u seq %u: bad echo (%ld bytes)", tid, s, (long)got);
            break;
        }
    }
    shmnet_close(fd);
    free(tx);
    free(rx);
    return NULL;
}

static void *shared_thread(void *arg)
{
    uint32_t tid = (uint32_t)(uintptr_t)arg;
    uint8_t *tx = malloc(dlen), *rx = malloc(65536);
    for (uint32_t s = 0; s < (uint32_t)per_thread; s++) {
        fill(tx, tid, s, (uint32_t)dlen);
        if (shmnet_sendto(shared_fd, tx, dlen, 0, (struct sockaddr *)&srv, sizeof(srv)) != dlen) {
            fail("shared thread %u seq %u: sendto errno %ld", tid, s, errno);
            break;
        }
        struct pollfd p = {.fd = shared_fd, .events = POLLIN};
        ssize_t got;
        for (;;) { /* another thread may take the datagram poll announced: poll again */
            if (shmnet_poll(&p, 1, 5000) != 1) {
                fail("shared thread %u seq %u: nothing received within 5 s (%ld)", tid, s, 0);
                goto out;
            }
            got = shmnet_recv(shared_fd, rx, 65536, MSG_DONTWAIT);
            if (got >= 0 || errno != EAGAIN)
                break;
        }
        struct hdr h;
        if (verify(rx, got, &h) || h.tid >= (uint32_t)nshared || h.seq >= (uint32_t)per_thread) {
            fail("shared thread %u seq %u: bad datagram (%ld bytes)", tid, s, (long)got);
            break;
        }
        if (__atomic_fetch_add(&seen[h.tid * per_thread + h.seq], 1, __ATOMIC_RELAXED) != 0) {
            fail("shared: datagram thread %u seq %u received twice (%ld)", h.tid, h.seq, 0);
            break;
        }
    }
out:
    free(tx);
    free(rx);
    return NULL;
}

int main(int argc, char **argv)
{
    int opt;
    while ((opt = getopt(argc, argv, "o:S:n:l:")) != -1) {
        switch (opt) {
        case 'o':
            nown = atoi(optarg);
            break;
        case 'S':
            nshared = atoi(optarg);
            break;
        case 'n':
            per_thread = atoi(optarg);
            break;
        case 'l':
            dlen = atoi(optarg);
            break;
        default:
            return 2;
        }
    }
    if (argc - optind != 2 || nown + nshared > MAXT || dlen < (int)sizeof(struct hdr) ||
        dlen > 65507)
        return 2;
    srv.sin_family = AF_INET;
    srv.sin_port = htons(atoi(argv[optind + 1]));
    if (inet_pton(AF_INET, argv[optind], &srv.sin_addr) != 1)
        return 2;
    seen = calloc((size_t)nshared * per_thread + 1, 1);
    shared_fd = shmnet_socket(AF_INET, SOCK_DGRAM, 0);
    if (shared_fd < 0) {
        printf("FAIL socket: %s\n", strerror(errno));
        return 1;
    }
    pthread_t th[MAXT];
    int n = 0;
    for (int i = 0; i < nown; i++)
        pthread_create(&th[n++], NULL, own_thread, (void *)(uintptr_t)(1000 + i));
    for (int i = 0; i < nshared; i++)
        pthread_create(&th[n++], NULL, shared_thread, (void *)(uintptr_t)i);
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    long missing = 0;
    for (long i = 0; i < (long)nshared * per_thread; i++)
        missing += seen[i] != 1;
    if (missing) {
        printf("FAIL shared socket: %ld of %ld datagrams not received exactly once\n", missing,
               (long)nshared * per_thread);
        failed = 1;
    }
    shmnet_close(shared_fd);
    if (failed)
        return 1;
    printf("OK %ld\n", (long)(nown + nshared) * per_thread);
    return 0;
}
