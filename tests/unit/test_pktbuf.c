/* pktbuf pools: allocation, and frees from other threads (several workers) coming back to
 * the owner through the lock-free remote list. */
#include <criterion/criterion.h>
#include <pthread.h>

#include "core/pktbuf.h"

#define N 512

Test(pktbuf, alloc_until_empty_and_back)
{
    struct pktbuf_pool p;
    cr_assert_eq(pktbuf_pool_init(&p, 4, 2048), 0);
    struct pktbuf *b[5];
    for (int i = 0; i < 4; i++)
        cr_assert_not_null(b[i] = pktbuf_alloc(&p));
    cr_assert_null(pktbuf_alloc(&p));
    cr_assert_eq(p.alloc_fail, 1);
    for (int i = 0; i < 4; i++)
        pktbuf_free(b[i]);
    cr_assert_eq(p.nfree, 4);
    pktbuf_pool_destroy(&p);
}

struct rel {
    struct pktbuf **b;
    int from, to;
};

static void *free_some(void *arg)
{
    struct rel *r = arg;
    pktbuf_thread_token = 9; /* another worker */
    for (int i = r->from; i < r->to; i++)
        pktbuf_free(r->b[i]);
    return NULL;
}

/* Two threads free half each of an owned pool's buffers while the owner allocates again:
 * every buffer comes back exactly once, none is lost or handed out twice. */
Test(pktbuf, remote_frees_return_to_the_owner)
{
    struct pktbuf_pool p;
    cr_assert_eq(pktbuf_pool_init(&p, N, 256), 0);
    p.owner = 1;
    pktbuf_thread_token = 1;
    static struct pktbuf *b[N];
    for (int i = 0; i < N; i++)
        cr_assert_not_null(b[i] = pktbuf_alloc(&p));
    cr_assert_null(pktbuf_alloc(&p));
    pthread_t t[2];
    struct rel r[2] = {{b, 0, N / 2}, {b, N / 2, N}};
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, free_some, &r[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    cr_assert_eq(p.remote_frees, N);
    cr_assert_eq(p.nfree, 0, "remote frees wait on the remote list");
    static bool seen[N];
    for (int i = 0; i < N; i++) {
        struct pktbuf *x = pktbuf_alloc(&p); /* the first one splices the remote list */
        cr_assert_not_null(x, "buffer %d", i);
        long k = x - p.hdrs;
        cr_assert(k >= 0 && k < N && !seen[k], "buffer %ld handed out twice", k);
        seen[k] = true;
    }
    cr_assert_null(pktbuf_alloc(&p));
    /* The owner's own frees stay local. */
    for (int i = 0; i < N; i++)
        pktbuf_free(&p.hdrs[i]);
    cr_assert_eq(p.nfree, N);
    cr_assert_eq(p.remote_frees, N);
    pktbuf_thread_token = 0;
    pktbuf_pool_destroy(&p);
}
