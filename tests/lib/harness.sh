# shellcheck shell=bash
# Integration-test harness, sourced by tests/integration/*.sh.
#
# Protocol with tests/run.sh: every named check prints one line on stdout,
#   "PASS name", "FAIL name: reason" or "SKIP name: reason",
# and the script exits non-zero if any check failed. Details (command output, daemon log
# excerpts) go to stderr prefixed with "  | ".
#
# Usage in a test:
#   . "$(dirname "$0")/../lib/harness.sh"
#   harness_init ping                 # names, temp dir, cleanup trap
#   harness_write_conf "$T/d.conf"    # default config: TAP $TAP, 10.200.0.2/24
#   harness_start_daemon "$T/d.conf" || exit 1
#   harness_peer_ns                   # kernel side of $TAP in $NS with 10.200.0.1/24
#   check ping_3 nsx ping -c 3 -W 2 10.200.0.2
#
# Environment: SHMNETD (default build/san/shmnetd), SHMNETCTL (default build/shmnetctl),
# READY_TIMEOUT (seconds, default 10), KEEP_TMP=1 keeps the temp dir,
# SHMNET_TEST_BACKEND=af_xdp runs the standard topology on a veth pair instead of the TAP:
# shmnetd owns x$TAP (root namespace) through AF_XDP and the kernel side, named $TAP as
# before, goes to $NS; SHMNET_TEST_WORKERS=N sets daemon.workers in the standard config.

HARNESS_LIB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HARNESS_LIB/../.." && pwd)
SHMNETD=${SHMNETD:-$REPO/build/san/shmnetd}
SHMNETCTL=${SHMNETCTL:-$REPO/build/shmnetctl}
PY=${PY:-/usr/bin/python3}           # Debian's python3: has scapy
READY_TIMEOUT=${READY_TIMEOUT:-10}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
SAN_PATTERN='ERROR: AddressSanitizer|LeakSanitizer|runtime error:'

# Fixed addresses of the test topology.
DAEMON_IP=10.200.0.2
DAEMON_MAC=02:00:00:00:00:02
PEER_IP=10.200.0.1

HARNESS_BACKEND=${SHMNET_TEST_BACKEND:-tap}
HARNESS_WORKERS=${SHMNET_TEST_WORKERS:-1}

HARNESS_PASS=0
HARNESS_FAIL=0
HARNESS_SKIP=0
DPID=""            # running daemon
DLOG=""            # its log (stderr+stdout)
HARNESS_NSTART=0   # daemons started so far
HN_PID=""          # notify listener
HN_FD=""           # fifo fd its lines arrive on
HARNESS_NETNS=()   # namespaces to delete
HARNESS_DEVS=()    # devices (root ns) to delete
HARNESS_PIDS=()    # helper processes to kill

# The script's own stdout/stderr, kept on fds of their own: results must reach the runner
# even when printed from a trap that fires inside a redirected command (check's output file).
exec {H_OUT}>&1 {H_ERR}>&2
detail() { sed 's/^/  | /' >&"$H_ERR"; }
pass() { echo "PASS $1" >&"$H_OUT"; HARNESS_PASS=$((HARNESS_PASS + 1)); }
fail() { echo "FAIL $1: ${2:-failed}" >&"$H_OUT"; HARNESS_FAIL=$((HARNESS_FAIL + 1)); }
skip() { echo "SKIP $1: ${2:-skipped}" >&"$H_OUT"; HARNESS_SKIP=$((HARNESS_SKIP + 1)); }

# check NAME CMD...: run CMD; PASS if it exits 0, else FAIL with its last output lines.
check() {
    local name=$1 out rc
    shift
    out="$T/check.$name.out"
    "$@" >"$out" 2>&1
    rc=$?
    if ((rc == 0)); then
        pass "$name"
    else
        fail "$name" "exit $rc: $(tail -n 3 "$out" | tr '\n' ' ' | cut -c1-300)"
        { echo "command: $*"; cat "$out"; } | detail
    fi
    return $rc
}

# Command in the peer namespace.
nsx() { ip netns exec "$NS" "$@"; }

# shmnetctl against this test's daemon.
ctl() { "$SHMNETCTL" -s "$SOCK" "$@"; }

# stat NAME: print the counter's value (exit 1 if there is no such counter).
stat() {
    ctl stats | awk -v n="$1" '$1 == n { print $2; found = 1; exit } END { exit !found }'
}

# wait_until TIMEOUT_S CMD...: bounded poll (for conditions that have no event).
wait_until() {
    local t=$1 end
    shift
    end=$(($(date +%s%N) + t * 1000000000))
    while true; do
        "$@" >/dev/null 2>&1 && return 0
        (($(date +%s%N) >= end)) && return 1
        sleep 0.05
    done
}

# stat_ge NAME MIN: counter NAME >= MIN.
stat_ge() { local v; v=$(stat "$1") && [[ $v =~ ^[0-9]+$ ]] && ((v >= $2)); }
# wait_stat_ge NAME MIN [TIMEOUT_S=5]
wait_stat_ge() { wait_until "${3:-5}" stat_ge "$1" "$2"; }

# harness_init TAG: unique names, temp dir, cleanup trap. TAG: 1-4 lowercase letters.
harness_init() {
    TAG=$1
    if ((EUID != 0)); then
        fail "${TAG}_setup" "integration tests need root (netns, TAP)"
        exit 1
    fi
    NS="shmn-$TAG-$$"
    TAP="st$TAG$$"                       # < 16 chars: 2 + 4 + 7
    DDEV=$TAP                            # the daemon's interface
    [[ $HARNESS_BACKEND == af_xdp ]] && DDEV="x$TAP"
    T=$(mktemp -d "/tmp/shmnet-$TAG-$$.XXXXXX")
    SOCK="$T/shmnetd.sock"
    trap harness_cleanup EXIT
    trap 'harness_signal INT 130' INT
    trap 'harness_signal TERM 143' TERM
    for b in "$SHMNETD" "$SHMNETCTL"; do
        if [[ ! -x $b ]]; then
            fail "${TAG}_setup" "$b not built"
            exit 1
        fi
    done
}

# harness_write_conf FILE [IFACE_EXTRA] [TOP_EXTRA] [LOG_LEVEL]: the standard test config.
harness_write_conf() {
    local f=$1 ifx=${2:-} top=${3:-} lvl=${4:-info}
    cat >"$f" <<EOF
daemon = { socket = "$SOCK"; log_level = "$lvl"; workers = $HARNESS_WORKERS; ${HARNESS_DAEMON_OPTS:-} };
interfaces = ( { name = "$DDEV"; backend = "$HARNESS_BACKEND"; mac = "$DAEMON_MAC"; mtu = 1500;
                 address = "$DAEMON_IP/24"; $ifx } );
routes = ( { to = "10.201.0.0/24"; via = "$PEER_IP"; } );
$top
EOF
}

# harness_veth: with the af_xdp backend, the veth pair that stands in for the TAP (once):
# x$TAP stays in the root namespace for shmnetd, $TAP is the kernel's side. The kernel
# side must not hand out partial checksums or GSO frames, which AF_XDP cannot carry
# (docs/nic.md): TX offloads off. One queue per worker on both ends (RSS: the kernel side's
# TX queue, chosen by flow hash, is our RX queue).
harness_veth() {
    [[ $HARNESS_BACKEND == af_xdp ]] || return 0
    ip link show "$DDEV" >/dev/null 2>&1 && return 0
    local q=$HARNESS_WORKERS
    ip link add "$DDEV" numtxqueues "$q" numrxqueues "$q" type veth \
        peer name "$TAP" numtxqueues "$q" numrxqueues "$q" || return 1
    HARNESS_DEVS+=("$DDEV")
    sysctl -qw "net.ipv6.conf.$DDEV.disable_ipv6=1" "net.ipv6.conf.$TAP.disable_ipv6=1"
    ethtool -K "$TAP" tx off >/dev/null 2>&1
    ip link set "$DDEV" up
}

# harness_tap_only REASON: a script that tests the TAP itself: skipped on another backend.
harness_tap_only() {
    [[ $HARNESS_BACKEND == tap ]] && return 0
    skip "${TAG}_backend" "$1 (backend $HARNESS_BACKEND)"
    exit 0
}

# harness_once REASON: a script whose subject depends on neither the backend nor the
# number of workers runs once, on the TAP with one worker; elsewhere it is skipped.
harness_once() {
    [[ $HARNESS_BACKEND == tap ]] && ((HARNESS_WORKERS == 1)) && return 0
    skip "${TAG}_backend" "$1 (run on the TAP with one worker)"
    exit 0
}

# harness_start_daemon CONF: start $SHMNETD -c CONF in the background, wait for READY=1
# from its NOTIFY_SOCKET (READY_TIMEOUT s). Returns 1 (after a FAIL line) otherwise.
harness_start_daemon() {
    local conf=$1 line end
    harness_veth || { fail "daemon_ready_veth" "cannot create the veth pair for af_xdp"; return 1; }
    HARNESS_NSTART=$((HARNESS_NSTART + 1))
    DLOG="$T/shmnetd.$HARNESS_NSTART.log"
    if [[ -z $HN_PID ]]; then
        mkfifo "$T/notify.fifo"
        exec {HN_FD}<>"$T/notify.fifo"
        "$PY" "$HARNESS_LIB/notify_wait.py" "$T/notify.sock" >"$T/notify.fifo" 2>"$T/notify.err" &
        HN_PID=$!
        if ! read -r -t 5 -u "$HN_FD" line || [[ $line != LISTENING ]]; then
            fail "daemon_ready_$HARNESS_NSTART" "notify listener did not start"
            detail <"$T/notify.err"
            return 1
        fi
    fi
    NOTIFY_SOCKET="$T/notify.sock" "$SHMNETD" -c "$conf" >"$DLOG" 2>&1 &
    DPID=$!
    end=$((SECONDS + READY_TIMEOUT))
    while ((SECONDS <= end)); do
        if read -r -t 0.5 -u "$HN_FD" line; then
            [[ $line == READY=1 ]] && return 0
            continue
        fi
        if ! kill -0 "$DPID" 2>/dev/null; then
            wait "$DPID"
            fail "daemon_ready_$HARNESS_NSTART" "shmnetd exited with $? before READY=1"
            DPID=""
            tail -n 40 "$DLOG" | detail
            return 1
        fi
    done
    fail "daemon_ready_$HARNESS_NSTART" "no READY=1 within ${READY_TIMEOUT}s"
    tail -n 40 "$DLOG" | detail
    harness_stop_daemon
    return 1
}

# wait_notify PATTERN [TIMEOUT_S=10]: wait for a notify line matching PATTERN (regex).
wait_notify() {
    local pat=$1 end=$((SECONDS + ${2:-10})) line
    while ((SECONDS <= end)); do
        if read -r -t 0.5 -u "$HN_FD" line && [[ $line =~ $pat ]]; then
            return 0
        fi
    done
    return 1
}

# harness_stop_daemon: SIGTERM, wait (10 s, then SIGKILL), one check that it exited 0 and
# its log holds no sanitizer report.
harness_stop_daemon() {
    local rc wd name="daemon_clean_exit_$HARNESS_NSTART"
    [[ -n $DPID ]] || return 0
    kill -TERM "$DPID" 2>/dev/null
    (
        sleep 10
        kill -KILL "$DPID" 2>/dev/null
    ) &
    wd=$!
    wait "$DPID"
    rc=$?
    kill "$wd" 2>/dev/null
    wait "$wd" 2>/dev/null
    DPID=""
    if ((rc != 0)); then
        fail "$name" "shmnetd exit status $rc after SIGTERM"
        tail -n 40 "$DLOG" | detail
    elif grep -Eq "$SAN_PATTERN" "$DLOG"; then
        fail "$name" "sanitizer report in the daemon log"
        grep -E -A 30 "$SAN_PATTERN" "$DLOG" | head -n 60 | detail
    else
        pass "$name"
        return 0
    fi
    return 1
}

# harness_peer_ns: namespace $NS, kernel side of $TAP moved there as $PEER_IP/24, lo up.
harness_peer_ns() {
    harness_veth || return 1
    ip netns add "$NS" || return 1
    HARNESS_NETNS+=("$NS")
    nsx sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 2>/dev/null
    ip -n "$NS" link set lo up &&
        ip link set "$TAP" netns "$NS" &&
        ip -n "$NS" addr add "$PEER_IP/24" dev "$TAP" &&
        ip -n "$NS" link set "$TAP" up
}

# harness_client_ns: namespace $CNS with only lo, where preloaded programs run: a call the
# interposer does not take cannot reach the peer through the kernel. PX is the command
# prefix that runs a program there under LD_PRELOAD=$PRELOAD with this daemon.
harness_client_ns() {
    CNS="shmn-${TAG}c-$$"
    ip netns add "$CNS" || return 1
    HARNESS_NETNS+=("$CNS")
    ip -n "$CNS" link set lo up || return 1
    PX=(ip netns exec "$CNS" env LD_PRELOAD="$PRELOAD" SHMNET_SOCKET="$SOCK")
}

# Kernel-side MAC of the TAP (in $NS).
peer_mac() { nsx cat "/sys/class/net/$TAP/address"; }

harness_signal() {
    fail "${TAG}_interrupted" "SIG$1 received"
    exit "$2"
}

harness_cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    [[ -n $DPID ]] && harness_stop_daemon
    for p in "${HARNESS_PIDS[@]}" $HN_PID; do
        kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
    done
    for p in "${HARNESS_NETNS[@]}"; do
        ip netns del "$p" 2>/dev/null
    done
    for p in "${HARNESS_DEVS[@]}" "$TAP"; do
        ip link del "$p" 2>/dev/null
    done
    if ((HARNESS_FAIL > 0 || rc != 0)) && [[ -n $T ]]; then
        for p in "$T"/shmnetd.*.log; do
            [[ -f $p ]] || continue
            echo "--- $p (last 30 lines)"
            tail -n 30 "$p"
        done | detail
    fi
    if [[ ${KEEP_TMP:-0} == 1 ]]; then
        echo "temp dir kept: $T" | detail
    elif [[ -n $T && -d $T ]]; then
        rm -rf "$T"
    fi
    echo "# ${TAG:-?}: $HARNESS_PASS passed, $HARNESS_FAIL failed, $HARNESS_SKIP skipped" >&"$H_ERR"
    if ((HARNESS_FAIL > 0)); then
        exit 1
    fi
    exit "$rc"
}
