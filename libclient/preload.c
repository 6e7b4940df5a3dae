/* libshmnet_preload.so: the LD_PRELOAD interposer. It interposes nothing yet (sockets go
 * to the kernel untouched); the socket calls move to shmnet once the native API exists. */
#include "libclient/shmnet.h"

__attribute__((visibility("default"))) const char *shmnet_preload_version(void)
{
    return shmnet_version();
}
