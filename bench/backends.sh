#!/usr/bin/env bash
# The same benchmarks on both NIC backends, TAP and AF_XDP, with the kernel beside each,
# in one run (issue 6):
#
#   bench/backends.sh [BUILD_DIR=build]
#
# Runs bench/run.sh (native API; without the memory rows, MEM_CONNS="") and bench/apps.sh
# (LD_PRELOAD) once with BACKEND=tap and once with BACKEND=af_xdp (shmnetd on a veth pair
# through AF_XDP, copy mode on this machine's veth), then prints one table per suite with
# both shmnet columns, the kernel's figure from each run and the two ratios. Each kernel
# column is measured in the same script run as the shmnet column next to it (they differ
# between runs: that is the machine's noise). Progress on stderr. Environment: as for the
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
    # Rows of the two tables, matched by position (same script, same rows).
    paste -d '\n' <(grep '^| ' "$T/$s.tap" | tail -n +3) <(grep '^| ' "$T/$s.af_xdp" | tail -n +3) |
        awk -F' \\| ' '
        BEGIN {
            print "| benchmark | shmnet, TAP | shmnet, AF_XDP | kernel (TAP run / AF_XDP run) | TAP / kernel | AF_XDP / kernel |"
            print "|---|---|---|---|---|---|"
        }
        NR % 2 == 1 { name = $1; tap = $2; ktap = $3; rtap = $4; next }
        {
            sub(/^\| /, "", name)
            split(rtap, a, " "); split($4, b, " ")
            printf "| %s | %s | %s | %s / %s | %s | %s |\n", name, tap, $2, ktap, $3, a[1], b[1]
        }'
done
exit $rc
