#!/usr/bin/env bash
# The same benchmarks on both NIC backends, TAP and AF_XDP, with the kernel beside each,
# in one run (issue 6):
#
#   bench/backends.sh [BUILD_DIR=build]
#
# Runs bench/run.sh (native API; without the memory rows, MEM_CONNS="") and bench/apps.sh
# (LD_PRELOAD) once with BACKEND=tap and once with BACKEND=af_xdp (shmnetd on a veth pair
# through AF_XDP, copy mode on this machine's veth), then prints one table per suite with
# each backend's shmnet figure, the kernel's figure measured in the same script run, and
# their ratio (the two kernel columns differ between runs: that is the machine's noise). Progress on stderr. Environment: as for the
# two scripts (TPUT_SECS, RR_N, DUR, ...); SUITES ("run apps") picks the suites.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
B=$(cd "${1:-$ROOT/build}" && pwd)
SUITES=${SUITES:-run apps}
T=$(mktemp -d "/tmp/shmnet-bench-backends-$$.XXXXXX")
trap 'rm -rf "$T"' EXIT
rc=0
for s in $SUITES; do
    for b in tap af_xdp; do
        echo "bench: $s.sh with BACKEND=$b" >&2
        BACKEND=$b MEM_CONNS="" "$ROOT/bench/$s.sh" "$B" >"$T/$s.$b" || rc=1
    done
    echo
    echo "### bench/$s.sh, TAP and AF_XDP"
    echo
    # Rows of the two tables (header and separator dropped), matched by position: the
    # same script makes the same rows.
    rows() { grep '^| ' "$1" | tail -n +2; }
    paste -d '\n' <(rows "$T/$s.tap") <(rows "$T/$s.af_xdp") |
        awk -F' [|] ' '
        BEGIN {
            print "| benchmark | shmnet, TAP | kernel | TAP / kernel | shmnet, AF_XDP | kernel | AF_XDP / kernel |"
            print "|---|---|---|---|---|---|---|"
        }
        NR % 2 == 1 { name = $1; tap = $2; ktap = $3; rtap = $4; next }
        {
            sub(/^[|] /, "", name)
            sub(/ [|]$/, "", rtap); r = $4; sub(/ [|]$/, "", r)
            printf "| %s | %s | %s | %s | %s | %s | %s |\n", name, tap, ktap, rtap, $2, $3, r
        }'
done
exit $rc
