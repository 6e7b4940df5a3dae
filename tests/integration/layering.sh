#!/usr/bin/env bash
# The folders' dependencies point one way (docs/design.md, "Layout"): every quoted
# #include of a product file names a folder its folder may use.
#
#   core/       core/ only (the packet buffer and the counters, below everything)
#   nic/        core/
#   stack/      core/, nic/
#   shm/        shm/ only (the contract between the daemon and the client library)
#   libclient/  shm/, core/clock.h (the clock)
#   conf/       core/, nic/, stack/, shm/ (it fills their parameter structures)
#   daemon/     anything but libclient/
#   tools/      shm/ (shmnetctl speaks the control protocol only)
# One check per folder; a FAIL line names each include that breaks the rule.
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"
TAG=layering
harness_once "a static check of the sources"

declare -A ALLOWED=(
    [core]="core"
    [nic]="core nic"
    [stack]="core nic stack"
    [shm]="shm"
    [libclient]="shm libclient core/clock.h"
    [conf]="conf core nic stack shm"
    [daemon]="daemon conf core nic stack shm"
    [tools]="tools shm"
)

cd "$REPO" || exit 1
for dir in core nic stack shm libclient conf daemon tools; do
    bad=()
    while IFS= read -r hit; do
        file=${hit%%:*}
        path=${hit#*\"}
        path=${path%\"}
        target=${path%%/*}
        # a folder, or one header of a folder, is allowed
        [[ " ${ALLOWED[$dir]} " == *" $target "* || " ${ALLOWED[$dir]} " == *" $path "* ]] ||
            bad+=("$file includes $path")
    done < <(grep -HoE '^#include "[a-z_]+/[a-z0-9_.]+"' "$dir"/*.[ch] 2>/dev/null)
    if ((${#bad[@]})); then
        fail "layering_$dir" "$(printf '%s; ' "${bad[@]}")"
    else
        pass "layering_$dir"
    fi
done
