#!/usr/bin/env bash
# shmnet test runner (`make test` builds first, then calls this).
#
#   tests/run.sh                    unit + integration (TAP, af_xdp, two workers) + fuzz
#   tests/run.sh unit|integration|integration-xdp|integration-w2|fuzz
#   tests/run.sh integration-xdp-w2   af_xdp with two workers (not in the default run)
#   tests/run.sh integration/ping   one integration script (tests/integration/ping.sh)
#   tests/run.sh integration-xdp/ping  the same on the af_xdp backend (veth pair)
#   tests/run.sh integration-w2/ping   the same with daemon.workers = 2
#   tests/run.sh unit/conf          one unit binary (build/san/tests/unit_conf)
#   tests/run.sh fuzz/fuzz_ip4      one fuzz target (build/fuzz/fuzz_ip4)
#
# Suites:
#   unit         every $UNIT_DIR/unit_* (Criterion, ASan+UBSan build); counts its tests
#                from the "Synthesis: Tested: N | Passing: N | ..." line.
#   integration  every tests/integration/*.sh; each prints "PASS name" / "FAIL name: why" /
#                "SKIP name: why" per check and exits non-zero if one failed
#                (tests/lib/harness.sh). Needs root (netns, TAP).
#   fuzz         every build/fuzz/fuzz_* for FUZZ_SMOKE_SECONDS with the seeds from
#                tests/fuzz/seeds/<target>/; a target passes when libFuzzer exits 0.
# The last line is "N passed, N failed"; the exit status is 1 if anything failed.
#
# Environment: SHMNETD (default build/san/shmnetd), SHMNETCTL (default build/shmnetctl),
# UNIT_DIR (build/san/tests), FUZZ_SMOKE_SECONDS (30), INTEGRATION_TIMEOUT (300 s per
# script), UNIT_TIMEOUT (600 s per binary), VERBOSE=1 (show every log).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1

export SHMNETD=${SHMNETD:-$ROOT/build/san/shmnetd}
export SHMNETCTL=${SHMNETCTL:-$ROOT/build/shmnetctl}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
UNIT_DIR=${UNIT_DIR:-build/san/tests}
FUZZ_SMOKE_SECONDS=${FUZZ_SMOKE_SECONDS:-30}
INTEGRATION_TIMEOUT=${INTEGRATION_TIMEOUT:-300}
UNIT_TIMEOUT=${UNIT_TIMEOUT:-600}
VERBOSE=${VERBOSE:-0}
LOGDIR=${TEST_LOGDIR:-build/test-logs}
mkdir -p "$LOGDIR"

TOTAL_PASS=0
TOTAL_FAIL=0
TOTAL_SKIP=0
FAILED=()
SKIPPED=()
SUMMARY=()

show_log() { # FILE: indented, at most 200 lines
    sed -e 's/\x1b\[[0-9;]*m//g' "$1" | tail -n 200 | sed 's/^/    /'
}

# ---------------------------------------------------------------- unit
run_unit_bin() { # BIN -> adds to S_PASS S_FAIL
    local bin=$1 name log rc line tested passing failed t0
    name=$(basename "$bin")
    log="$LOGDIR/$name.log"
    t0=$SECONDS
    timeout -k 10 "$UNIT_TIMEOUT" "$bin" --jobs 2 >"$log" 2>&1
    rc=$?
    line=$(sed -e 's/\x1b\[[0-9;]*m//g' "$log" | grep -a 'Synthesis: Tested:' | tail -n 1)
    if [[ $line =~ Tested:\ ([0-9]+)\ \|\ Passing:\ ([0-9]+) ]]; then
        tested=${BASH_REMATCH[1]}
        passing=${BASH_REMATCH[2]}
        failed=$((tested - passing))
    else
        tested=0 passing=0 failed=0
    fi
    # A binary that exits non-zero (crash, leak report at exit, timeout) fails once more
    # than its own count says, unless its failing tests explain the status already.
    if ((rc != 0 && failed == 0)); then
        failed=1
        FAILED+=("unit/$name: exit status $rc${line:+ }${line:-, no Criterion synthesis line}")
    fi
    S_PASS=$((S_PASS + passing))
    S_FAIL=$((S_FAIL + failed))
    printf '  %-32s %4d passed %4d failed  (%ds)\n' "$name" "$passing" "$failed" $((SECONDS - t0))
    if ((failed > 0)); then
        sed -e 's/\x1b\[[0-9;]*m//g' "$log" | grep -a -E '\[FAIL\]|Assertion|CRASH|crash|ERROR: ' |
            head -n 40 | sed 's/^/    /'
        local f
        while read -r f; do
            FAILED+=("unit/$name: $f")
        done < <(sed -e 's/\x1b\[[0-9;]*m//g' "$log" | grep -a -oE '\[FAIL\] [^ ]+' | sort -u |
            sed 's/\[FAIL\] //')
        [[ $VERBOSE == 1 ]] && show_log "$log"
    elif [[ $VERBOSE == 1 ]]; then
        show_log "$log"
    fi
}

suite_unit() { # [NAME]
    local bins=() b
    S_PASS=0 S_FAIL=0
    echo "== unit ($UNIT_DIR)"
    if [[ -n ${1:-} ]]; then
        bins=("$UNIT_DIR/unit_$1")
    else
        for b in "$UNIT_DIR"/unit_*; do
            [[ -f $b && -x $b && $b != *.d ]] && bins+=("$b")
        done
    fi
    if ((${#bins[@]} == 0)); then
        echo "  no unit test binaries in $UNIT_DIR (build them: make SAN=1 unit)"
        S_FAIL=1
        FAILED+=("unit: no test binaries in $UNIT_DIR")
    fi
    for b in "${bins[@]}"; do
        if [[ ! -x $b ]]; then
            echo "  $b: not built"
            S_FAIL=$((S_FAIL + 1))
            FAILED+=("unit/$(basename "$b"): not built")
            continue
        fi
        run_unit_bin "$b"
    done
    suite_done unit
}

# ---------------------------------------------------------------- integration
run_script() { # SCRIPT
    local script=$1 name log rc t0 np nf ns line
    name=$(basename "$script" .sh)
    log="$LOGDIR/$ISUITE-$name.log"
    t0=$SECONDS
    timeout -k 15 "$INTEGRATION_TIMEOUT" bash "$script" </dev/null >"$log" 2>&1
    rc=$?
    np=$(grep -c '^PASS ' "$log")
    nf=$(grep -c '^FAIL ' "$log")
    ns=$(grep -c '^SKIP ' "$log")
    while IFS= read -r line; do
        FAILED+=("$ISUITE/$name/${line#FAIL }")
    done < <(grep '^FAIL ' "$log")
    while IFS= read -r line; do
        SKIPPED+=("$ISUITE/$name/${line#SKIP }")
    done < <(grep '^SKIP ' "$log")
    if ((rc == 124 && nf > 0)); then
        FAILED+=("$ISUITE/$name: timed out after ${INTEGRATION_TIMEOUT}s")
    elif ((rc != 0 && nf == 0)); then
        nf=1
        if ((rc == 124 || rc == 137)); then
            FAILED+=("$ISUITE/$name: timed out after ${INTEGRATION_TIMEOUT}s")
        else
            FAILED+=("$ISUITE/$name: exit status $rc without a FAIL line")
        fi
    elif ((rc == 0 && np == 0 && ns == 0)); then
        nf=1
        FAILED+=("$ISUITE/$name: ran no check")
    fi
    S_PASS=$((S_PASS + np))
    S_FAIL=$((S_FAIL + nf))
    S_SKIP=$((S_SKIP + ns))
    printf '  %-32s %4d passed %4d failed %2d skipped  (%ds)\n' "$name" "$np" "$nf" "$ns" \
        $((SECONDS - t0))
    if ((nf > 0)) || [[ $VERBOSE == 1 ]]; then
        show_log "$log"
    fi
}

ISUITE=integration
suite_integration() { # [NAME]
    local scripts=() s
    S_PASS=0 S_FAIL=0 S_SKIP=0
    echo "== $ISUITE (SHMNETD=$SHMNETD SHMNETCTL=$SHMNETCTL${SHMNET_TEST_BACKEND:+ backend $SHMNET_TEST_BACKEND})"
    if ((EUID != 0)); then
        echo "  integration tests need root (network namespaces, TAP devices)"
    fi
    if [[ -n ${1:-} ]]; then
        scripts=("tests/integration/${1%.sh}.sh")
    else
        for s in tests/integration/*.sh; do
            [[ -f $s ]] && scripts+=("$s")
        done
    fi
    if ((${#scripts[@]} == 0)); then
        echo "  no integration scripts"
        S_FAIL=1
        FAILED+=("integration: no scripts in tests/integration")
    fi
    for s in "${scripts[@]}"; do
        if [[ ! -f $s ]]; then
            echo "  $s: no such script"
            S_FAIL=$((S_FAIL + 1))
            FAILED+=("integration: no script $s")
            continue
        fi
        run_script "$s"
    done
    suite_done "$ISUITE"
}

# The same scripts on the af_xdp backend (a veth pair stands in for the TAP,
# tests/lib/harness.sh); the ones that test the TAP itself skip.
suite_integration_xdp() { # [NAME]
    ISUITE=integration-xdp SHMNET_TEST_BACKEND=af_xdp suite_integration "$@"
    ISUITE=integration
}

# The same scripts with two workers (daemon.workers = 2, docs/workers.md).
suite_integration_w2() { # [NAME]
    ISUITE=integration-w2 SHMNET_TEST_WORKERS=2 suite_integration "$@"
    ISUITE=integration
}

# af_xdp with two workers: two queues on the veth, one AF_XDP socket each. Not in the
# default run (time: `make test` stays under 20 minutes); `make test-xdp-w2` runs it.
suite_integration_xdp_w2() { # [NAME]
    ISUITE=integration-xdp-w2 SHMNET_TEST_BACKEND=af_xdp SHMNET_TEST_WORKERS=2 \
        suite_integration "$@"
    ISUITE=integration
}

# ---------------------------------------------------------------- fuzz
run_fuzzer() { # BIN
    local bin=$1 name log rc t0 corpus seeds=() d
    name=$(basename "$bin")
    log="$LOGDIR/$name.log"
    corpus=$(mktemp -d "${TMPDIR:-/tmp}/shmnet-corpus-$name.XXXXXX")
    for d in "tests/fuzz/seeds/$name" "tests/fuzz/seeds/${name#fuzz_}"; do
        [[ -d $d ]] && seeds+=("$d")
    done
    t0=$SECONDS
    timeout -k 10 $((FUZZ_SMOKE_SECONDS + 120)) "$bin" -max_total_time="$FUZZ_SMOKE_SECONDS" \
        -timeout=25 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$LOGDIR/$name-" "$corpus" "${seeds[@]}" >"$log" 2>&1
    rc=$?
    rm -rf "$corpus"
    if ((rc == 0)); then
        S_PASS=$((S_PASS + 1))
        printf '  %-32s pass  (%ds, %s)\n' "$name" $((SECONDS - t0)) \
            "$(grep -aoE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' |
                sed 's/$/ runs/')"
    else
        S_FAIL=$((S_FAIL + 1))
        FAILED+=("fuzz/$name: libFuzzer exit status $rc (artifacts: $LOGDIR/$name-*)")
        printf '  %-32s FAIL  exit status %d\n' "$name" "$rc"
        grep -a -E -A 25 '==ERROR|runtime error|SUMMARY|deadly signal|Test unit written' "$log" |
            head -n 60 | sed 's/^/    /'
    fi
}

suite_fuzz() { # [NAME]
    local bins=() b srcs
    S_PASS=0 S_FAIL=0
    echo "== fuzz (${FUZZ_SMOKE_SECONDS}s per target)"
    if [[ -n ${1:-} ]]; then
        bins=("build/fuzz/$1")
    else
        for b in build/fuzz/fuzz_*; do
            [[ -f $b && -x $b ]] && bins+=("$b")
        done
    fi
    srcs=$(find tests/fuzz -maxdepth 1 -name 'fuzz_*.c' 2>/dev/null | wc -l)
    if ((${#bins[@]} == 0)); then
        if ((srcs > 0)); then
            echo "  $srcs fuzz sources but no binaries in build/fuzz (make fuzz-build)"
            S_FAIL=1
            FAILED+=("fuzz: targets not built")
        else
            echo "  no fuzz targets (tests/fuzz/fuzz_*.c)"
        fi
    fi
    for b in "${bins[@]}"; do
        if [[ ! -x $b ]]; then
            echo "  $b: not built"
            S_FAIL=$((S_FAIL + 1))
            FAILED+=("fuzz/$(basename "$b"): not built")
            continue
        fi
        run_fuzzer "$b"
    done
    suite_done fuzz
}

suite_done() {
    local line
    line=$(printf '%s: %d passed, %d failed' "$1" "$S_PASS" "$S_FAIL")
    [[ $1 == integration* ]] && line+=", ${S_SKIP:-0} skipped"
    echo "-- $line"
    SUMMARY+=("$line")
    TOTAL_PASS=$((TOTAL_PASS + S_PASS))
    TOTAL_FAIL=$((TOTAL_FAIL + S_FAIL))
    TOTAL_SKIP=$((TOTAL_SKIP + ${S_SKIP:-0}))
    S_SKIP=0
}

usage() {
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

# ---------------------------------------------------------------- main
T0=$SECONDS
[[ $# -eq 0 ]] && set -- unit integration integration-xdp integration-w2 fuzz
for arg in "$@"; do
    arg=${arg#tests/}
    case $arg in
    unit) suite_unit ;;
    integration) suite_integration ;;
    integration-xdp) suite_integration_xdp ;;
    integration-w2) suite_integration_w2 ;;
    integration-xdp-w2) suite_integration_xdp_w2 ;;
    fuzz) suite_fuzz ;;
    unit/*) suite_unit "${arg#unit/}" ;;
    integration/*) suite_integration "${arg#integration/}" ;;
    integration-xdp/*) suite_integration_xdp "${arg#integration-xdp/}" ;;
    integration-w2/*) suite_integration_w2 "${arg#integration-w2/}" ;;
    integration-xdp-w2/*) suite_integration_xdp_w2 "${arg#integration-xdp-w2/}" ;;
    fuzz/*) suite_fuzz "${arg#fuzz/}" ;;
    -h | --help) usage ;;
    *)
        echo "unknown suite: $arg" >&2
        usage
        ;;
    esac
done

echo
echo "== summary ($((SECONDS - T0))s; logs in $LOGDIR)"
for s in "${SUMMARY[@]}"; do
    echo "  $s"
done
if ((${#SKIPPED[@]} > 0)); then
    echo "skipped (not counted):"
    printf '  %s\n' "${SKIPPED[@]}"
fi
if ((${#FAILED[@]} > 0)); then
    echo "failed:"
    printf '  %s\n' "${FAILED[@]}"
fi
if ((TOTAL_PASS + TOTAL_FAIL == 0)); then
    echo "no test ran"
    TOTAL_FAIL=1
fi
echo "$TOTAL_PASS passed, $TOTAL_FAIL failed"
((TOTAL_FAIL == 0))
