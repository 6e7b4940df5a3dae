/* libshmnet: the native API of shmnet (DESIGN.md section 5).
 *
 * The socket calls (shmnet_socket, shmnet_bind, ... shmnet_poll) arrive with the
 * shared-memory IPC; today the library only identifies itself. */
#ifndef SHMNET_H
#define SHMNET_H

#ifdef __cplusplus
extern "C" {
#endif

/* Version string of the library, e.g. "0.1.0". */
const char *shmnet_version(void);

#ifdef __cplusplus
}
#endif

#endif
