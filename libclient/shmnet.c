#include "libclient/shmnet.h"

const char *shmnet_version(void)
{
    return "0.1.0";
}
