/* Client sessions, control-thread side: attach (region, seals, eventfds, SCM_RIGHTS),
 * the session connection as the liveness signal, detach. See docs/ipc.md. */
#ifndef SHMNET_DAEMON_SESSION_H
#define SHMNET_DAEMON_SESSION_H

#include <sys/socket.h>

#include "daemon/strbuf.h"

struct daemon;

/* Create the daemon-wide state page. 0 or -errno. */
int sessions_init(struct daemon *d);
/* Detach every session and free the state page (shutdown). */
void sessions_fini(struct daemon *d);
/* Take over a control connection that asked "attach VERSION": the fd belongs to the session
 * from now on (closed on failure). */
void session_attach(struct daemon *d, int fd, const struct ucred *cred);
/* Answer "attach" on fd with -err and no session (the caller closes fd). */
void session_refuse(int fd, int err);
/* Reports for shmnetctl clients / sockets (through the worker mailbox). */
int sessions_report(struct daemon *d, struct strbuf *out, bool sockets);

#endif
