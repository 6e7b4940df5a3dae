#!/usr/bin/env bash
# daemon.workers = 1 against 2, each beside the kernel, in one run:
#   bench/workers.sh [BUILD_DIR=build]      (bench/backends.sh with VARY=workers)
#   BACKEND=af_xdp bench/workers.sh         (the same on AF_XDP, a veth with two queues)
VARY=workers exec "$(dirname "${BASH_SOURCE[0]}")/backends.sh" "$@"
