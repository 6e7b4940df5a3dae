/* The shared-memory contract between shmnetd and libshmnet (DESIGN.md section 4).
 *
 * Only constants exist so far; the region layout, rings and fifos come with the IPC work.
 * Both sides compile against this header, so every change bumps SHM_LAYOUT_VERSION. */
#ifndef SHMNET_SHM_H
#define SHMNET_SHM_H

#define SHM_MAGIC          0x73686d6e65740000ull /* "shmnet\0\0" */
#define SHM_LAYOUT_VERSION 0u
#define SHM_DEFAULT_SOCKET "/run/shmnet/shmnetd.sock"
#define SHM_SOCKET_ENV     "SHMNET_SOCKET"

#endif
