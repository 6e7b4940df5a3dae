/* shmnetd control socket: AF_UNIX stream, one text request line per connection.
 * See docs/daemon.md for the protocol and the commands. */
#ifndef SHMNET_DAEMON_CTL_H
#define SHMNET_DAEMON_CTL_H

#include <stdbool.h>
#include <sys/types.h>

#include "conf/conf.h"

struct daemon;
struct ctl;

#define CTL_MAX_REQUEST   1024 /* bytes, newline included */
#define CTL_READ_TIMEOUT  5.0  /* s: a client must send its request within this */
#define CTL_WRITE_TIMEOUT 10.0 /* s: without progress while sending the answer */
#define CTL_MAX_CLIENTS   1024 /* pending control connections (attaches in a burst) */
#define CTL_ROOT_RESERVE  64   /* of those, slots only uid 0 may take */

/* Create the socket (parent directory, stale socket, mode 0666) and start accepting. */
int ctl_open(struct daemon *d, struct ctl **out);
/* Drop every client, close and unlink the socket. */
void ctl_close(struct ctl *c);
/* Access policy: uid 0, or uid in allowed_uids, or gid or a supplementary group in
 * allowed_gids. groups/ngroups: the peer's supplementary groups, or ngroups < 0 to look
 * the user's groups up in the group database. */
bool ctl_peer_allowed(const struct conf *c, uid_t uid, gid_t gid, const gid_t *groups, int ngroups);

#endif
