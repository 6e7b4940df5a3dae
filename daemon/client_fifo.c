/* The fifo arena of a client's shared region: fifo pages handed out first fit from a page
 * bitmap, and given back to the system in bulk. */
#include "daemon/client_impl.h"

static bool page_used(const struct client *cl, uint32_t p)
{
    return cl->fifo_map[p / 64] >> (p % 64) & 1;
}

static void pages_mark(struct client *cl, uint32_t first, uint32_t n, bool used)
{
    for (uint32_t p = first; p < first + n; p++) {
        if (used)
            cl->fifo_map[p / 64] |= 1ull << (p % 64);
        else
            cl->fifo_map[p / 64] &= ~(1ull << (p % 64));
    }
    if (used)
        cl->fifo_used_pages += n;
    else
        cl->fifo_used_pages -= n;
}

/* Offset (from the region start) of `bytes` of fifo space, or 0 when the arena is full. */
uint32_t fifo_alloc(struct client *cl, uint32_t bytes)
{
    uint32_t n = page_up(bytes) / PAGE, run = 0;
    /* Every page below fifo_hint is in use: thousands of sockets do not rescan the front. */
    for (uint32_t p = cl->fifo_hint; p < cl->fifo_pages; p++) {
        if (cl->fifo_map[p / 64] == ~0ull && p % 64 == 0) {
            run = 0;
            p += 63;
            continue;
        }
        run = page_used(cl, p) ? 0 : run + 1;
        if (run == n) {
            uint32_t first = p + 1 - n;
            pages_mark(cl, first, n, true);
            if (first == cl->fifo_hint)
                cl->fifo_hint = first + n;
            return cl->fifo_off + first * PAGE;
        }
    }
    return 0;
}

/* Freed fifo pages are given back to the system in bulk: MADV_REMOVE on memory the client
 * maps too costs a TLB shootdown on every CPU, too much for each short connection. The
 * freed extents are remembered and, once FIFO_DIRTY_MAX pages or CLIENT_FIFO_EXT extents
 * piled up, the pages of them that are still free are released. First fit hands the
 * lowest free pages out again, so with short connections most extents are in use again
 * by then and cost nothing: their pages stay resident for the next socket. */
#define FIFO_DIRTY_MAX 8192 /* pages (32 MiB) */

static void fifo_release_free(struct client *cl)
{
    for (uint32_t e = 0; e < cl->fifo_next; e++) {
        uint32_t first = cl->fifo_ext[e].first, end = first + cl->fifo_ext[e].n, run = 0;
        for (uint32_t p = first; p <= end; p++) {
            if (p < end && !page_used(cl, p)) {
                run++;
                continue;
            }
            if (run)
                madvise(cl->base + cl->fifo_off + (size_t)(p - run) * PAGE, (size_t)run * PAGE,
                        MADV_REMOVE);
            run = 0;
        }
        /* Later extents may overlap this one: mark nothing; a second MADV_REMOVE of a
         * released range finds no pages and is cheap. */
    }
    cl->fifo_next = 0;
    cl->fifo_dirty = 0;
}

void fifo_free(struct client *cl, uint32_t off, uint32_t bytes, bool release)
{
    if (!off)
        return;
    uint32_t first = (off - cl->fifo_off) / PAGE, n = page_up(bytes) / PAGE;
    pages_mark(cl, first, n, false);
    if (first < cl->fifo_hint)
        cl->fifo_hint = first;
    if (!release)
        return;
    /* A closed socket's fifos cost no memory for long. */
    uint32_t e = 0;
    while (e < cl->fifo_next && (cl->fifo_ext[e].first != first || cl->fifo_ext[e].n != n))
        e++;
    if (e < cl->fifo_next) /* the same extent freed again is recorded once */
        return;
    cl->fifo_ext[cl->fifo_next].first = first;
    cl->fifo_ext[cl->fifo_next].n = n;
    cl->fifo_next++;
    cl->fifo_dirty += n;
    if (cl->fifo_dirty >= FIFO_DIRTY_MAX || cl->fifo_next == CLIENT_FIFO_EXT)
        fifo_release_free(cl);
}
