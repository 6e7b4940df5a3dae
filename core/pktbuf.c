#include "core/pktbuf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

int pktbuf_pool_init(struct pktbuf_pool *p, uint32_t count, uint32_t bufsize)
{
    memset(p, 0, sizeof(*p));
    if (count == 0 || bufsize <= PKTBUF_HEADROOM)
        return -EINVAL;
    bufsize = (bufsize + 63u) & ~63u; /* keep every buffer cache-line aligned */
    size_t bytes = (size_t)count * bufsize;
    /* One mapping for all buffers: faulted in lazily, freed in one call. */
    void *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return -ENOMEM;
    p->hdrs = calloc(count, sizeof(*p->hdrs));
    if (!p->hdrs) {
        munmap(mem, bytes);
        return -ENOMEM;
    }
    p->mem = mem;
    p->count = count;
    p->bufsize = bufsize;
    for (uint32_t i = count; i-- > 0;) {
        struct pktbuf *pb = &p->hdrs[i];
        pb->pool = p;
        pb->buf = p->mem + (size_t)i * bufsize;
        pb->cap = bufsize;
        pb->next = p->free;
        p->free = pb;
    }
    p->nfree = count;
    return 0;
}

void pktbuf_pool_destroy(struct pktbuf_pool *p)
{
    if (p->mem)
        munmap(p->mem, (size_t)p->count * p->bufsize);
    free(p->hdrs);
    memset(p, 0, sizeof(*p));
}

__thread uint32_t pktbuf_thread_token;

/* Owner only: take every buffer other threads freed. Acquire pairs with the pushers'
 * release CAS: their last writes to the buffers happen before we reuse them. */
static void take_remote(struct pktbuf_pool *p)
{
    struct pktbuf *l = __atomic_exchange_n(&p->remote, NULL, __ATOMIC_ACQUIRE);
    while (l) {
        struct pktbuf *n = l->next;
        l->next = p->free;
        p->free = l;
        p->nfree++;
        l = n;
    }
}

struct pktbuf *pktbuf_alloc(struct pktbuf_pool *p)
{
    struct pktbuf *pb = p->free;
    if (!pb && __atomic_load_n(&p->remote, __ATOMIC_RELAXED)) {
        take_remote(p);
        pb = p->free;
    }
    if (!pb) {
        p->alloc_fail++;
        return NULL;
    }
    p->free = pb->next;
    p->nfree--;
    pb->next = NULL;
    pktbuf_reset(pb);
    return pb;
}

void pktbuf_free(struct pktbuf *pb)
{
    if (!pb)
        return;
    struct pktbuf_pool *p = pb->pool;
    if (p->owner && p->owner != pktbuf_thread_token) {
        /* Release: our use of the buffer is over before the owner can take it. */
        struct pktbuf *h = __atomic_load_n(&p->remote, __ATOMIC_RELAXED);
        do
            pb->next = h;
        while (!__atomic_compare_exchange_n(&p->remote, &h, pb, true, __ATOMIC_RELEASE,
                                            __ATOMIC_RELAXED));
        __atomic_fetch_add(&p->remote_frees, 1, __ATOMIC_RELAXED);
        return;
    }
    pb->next = p->free;
    p->free = pb;
    p->nfree++;
}

void pktbuf_free_chain(struct pktbuf *pb)
{
    while (pb) {
        struct pktbuf *n = pb->next;
        pktbuf_free(pb);
        pb = n;
    }
}
