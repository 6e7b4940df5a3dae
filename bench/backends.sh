#!/usr/bin/env bash
# The same benchmarks on both NIC backends, TAP and AF_XDP, with the kernel beside each,
# in one run:
#
#   bench/backends.sh [BUILD_DIR=build]
#
# Runs bench/run.sh (native API; without the memory rows, MEM_CONNS="") and bench/apps.sh
# (LD_PRELOAD) once with BACKEND=tap and once with BACKEND=af_xdp (shmnetd on a veth pair
# through AF_XDP, copy mode on this machine's veth), then prints one table per suite with
# each backend's shmnet figure, the kernel's figure measured in the same script run, and
# their ratio (the two kernel columns differ between runs: that is the machine's noise).
# VARY=workers compares daemon.workers = 1 and 2 instead (bench/workers.sh), on BACKEND
# (tap unless set; af_xdp gets a veth with a queue per worker). Progress on stderr.
# Environment: as for the two scripts (TPUT_SECS, RR_N, DUR, ...); SUITES ("run apps")
# picks the suites.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
B=$(cd "${1:-$ROOT/build}" && pwd)
SUITES=${SUITES:-run apps}
# VARY=workers (bench/workers.sh): the same with WORKERS=1 and WORKERS=2 on BACKEND.
VARY=${VARY:-backend}
if [[ $VARY == workers ]]; then
    A=(WORKERS=1 "1 worker (${BACKEND:-tap})") Bv=(WORKERS=2 "2 workers (${BACKEND:-tap})")
else
    A=(BACKEND=tap TAP) Bv=(BACKEND=af_xdp AF_XDP)
fi
T=$(mktemp -d "/tmp/shmnet-bench-backends-$$.XXXXXX")
trap 'rm -rf "$T"' EXIT
rc=0
for s in $SUITES; do
    for v in a b; do
        if [[ $v == a ]]; then set -- "${A[@]}"; else set -- "${Bv[@]}"; fi
        echo "bench: $s.sh with $1" >&2
        env "$1" MEM_CONNS="" "$ROOT/bench/$s.sh" "$B" >"$T/$s.$v" || rc=1
    done
    echo
    echo "### bench/$s.sh, ${A[1]} and ${Bv[1]}"
    echo
    # Rows of the two tables (header and separator dropped), matched by position: the
    # same script makes the same rows.
    rows() { grep '^| ' "$1" | tail -n +2; }
    paste -d '\n' <(rows "$T/$s.a") <(rows "$T/$s.b") |
        awk -F' [|] ' -v la="${A[1]}" -v lb="${Bv[1]}" '
        BEGIN {
            printf "| benchmark | shmnet, %s | kernel | %s / kernel | shmnet, %s | kernel | %s / kernel |\n", la, la, lb, lb
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
