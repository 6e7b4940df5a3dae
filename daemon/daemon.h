/* shmnetd process state, shared by main.c (lifecycle, signals, reload, watchdog) and
 * ctl.c (control socket). Everything here belongs to the control thread. */
#ifndef SHMNET_DAEMON_DAEMON_H
#define SHMNET_DAEMON_DAEMON_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "conf/conf.h"
#include "daemon/strbuf.h"
#include "daemon/worker.h"

#ifndef SHMNET_VERSION
#define SHMNET_VERSION "0.1.0"
#endif

#define DAEMON_MAX_WORKERS     8 /* daemon.workers: one NIC queue each (docs/workers.md) */
#define DAEMON_CALL_TIMEOUT_MS 2000

struct ctl;
struct sessions;

struct daemon {
    struct ev_loop *loop;
    const char *conf_path;
    struct conf *conf; /* the configuration in effect */
    struct worker workers[DAEMON_MAX_WORKERS];
    unsigned nworkers;
    uint8_t *port_owner; /* several workers: which one owns each local port (worker.h) */
    struct ctl *ctl;
    struct sessions *sessions; /* attached client processes (daemon/session.c) */
    struct pcap_tap *capture;  /* current capture tap (all interfaces), or NULL */
    char capture_path[CONF_PATH_MAX];

    ev_signal sig_term, sig_int, sig_hup;
    ev_timer wd_timer; /* systemd watchdog keep-alive */
    uint64_t wd_hb[DAEMON_MAX_WORKERS];
    bool wd_primed, wd_stuck;
};

/* Reload the config file. Messages are logged and, when out != NULL, appended to it as
 * "error: ..." / "warning: ..." lines. 0 or -errno (the running config is kept). */
int daemon_reload(struct daemon *d, struct strbuf *out);
/* Start (or switch) the pcap capture of RX and TX of all interfaces into path. */
int daemon_capture_start(struct daemon *d, const char *path, struct strbuf *out);
/* Stop the capture; -ENOENT if none. */
int daemon_capture_stop(struct daemon *d);

#endif
