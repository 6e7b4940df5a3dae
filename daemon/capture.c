/* Packet capture of every interface into one pcap file (`shmnetctl capture`): worker 0
 * points the NICs at the new tap, and a call to every other worker is the barrier after
 * which no queue writes to the old one. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "daemon/daemon.h"
#include "daemon/log.h"
#include "nic/nic.h"

static int set_pcap_fn(struct worker *w, void *arg)
{
    /* Worker 0 opened the NICs and switches their tap (release: the tap is set up before
     * any queue writes to it). The call on every other worker is the barrier that it has
     * finished the iteration that may have used the old one. */
    for (int i = 0; i < w->nnics && w->id == 0; i++)
        __atomic_store_n(&w->nics[i].pcap, (struct pcap_tap *)arg, __ATOMIC_RELEASE);
    return 0;
}

/* Point every NIC of every worker at t. On failure the workers already switched are put
 * back on `old`, so no NIC is left holding a tap that is about to be closed. */
static int swap_capture(struct daemon *d, struct pcap_tap *t, struct pcap_tap *old)
{
    for (unsigned i = 0; i < d->nworkers; i++) {
        int ret = worker_call(&d->workers[i], set_pcap_fn, t, DAEMON_CALL_TIMEOUT_MS);
        if (ret < 0) {
            for (unsigned k = 0; k < i; k++)
                worker_call(&d->workers[k], set_pcap_fn, old, DAEMON_CALL_TIMEOUT_MS);
            return ret;
        }
    }
    return 0;
}

int daemon_capture_start(struct daemon *d, const char *path, struct strbuf *out)
{
    struct pcap_tap *t, *old = d->capture;
    int err = 0, ret;

    /* Open here, not on the worker: file creation may block. */
    t = pcap_open(path, 65535, &err);
    if (!t) {
        err = err < 0 ? -err : err ? err : EIO;
        log_error("capture %s: %s", path, strerror(err));
        if (out)
            sb_printf(out, "error: capture %s: %s\n", path, strerror(err));
        return -err;
    }
    ret = swap_capture(d, t, old);
    if (ret < 0) {
        pcap_close(t);
        log_error("capture %s: worker did not answer: %s", path, strerror(-ret));
        if (out)
            sb_printf(out, "error: capture %s: %s\n", path, strerror(-ret));
        return ret;
    }
    /* The workers no longer reference old (the mailbox call completed): safe to close. */
    if (old)
        pcap_close(old);
    d->capture = t;
    snprintf(d->capture_path, sizeof(d->capture_path), "%s", path);
    log_info("capturing all interfaces to %s", path);
    return 0;
}

int daemon_capture_stop(struct daemon *d)
{
    int ret;

    if (!d->capture)
        return -ENOENT;
    ret = swap_capture(d, NULL, d->capture);
    if (ret < 0)
        return ret;
    pcap_close(d->capture);
    d->capture = NULL;
    log_info("capture to %s stopped", d->capture_path);
    d->capture_path[0] = '\0';
    return 0;
}
