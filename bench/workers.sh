#!/usr/bin/env bash
# daemon.workers = 1 against 2 on the TAP, each beside the kernel, in one run:
#   bench/workers.sh [BUILD_DIR=build]      (bench/backends.sh with VARY=workers)
VARY=workers exec "$(dirname "${BASH_SOURCE[0]}")/backends.sh" "$@"
