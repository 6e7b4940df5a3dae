#!/usr/bin/env bash
# Unmodified programs on shmnet (LD_PRELOAD) against the same programs on kernel sockets,
# side by side in one run (compare bench/run.sh for the native API).
#
#   bench/apps.sh [BUILD_DIR=build]
#
# shmnet: BUILD_DIR/shmnetd (release) on a TAP whose kernel side is in namespace
#   shmba-p-PID (10.200.0.1); the preloaded program (LD_PRELOAD=BUILD_DIR/libshmnet_preload.so)
#   runs in namespace shmba-c-PID, which has only `lo`, so nothing it does can reach the
#   network except through shmnet (10.200.0.2); the load generator is a kernel program in
#   shmba-p-PID.
# kernel: the same two programs in namespaces shmba-a-PID (10.210.0.1, load generator) and
#   shmba-b-PID (10.210.0.2, the program under test), joined by a veth pair.
# Rows: nginx (1 worker, 1 KiB file) under wrk, requests/s; redis-server under
# redis-benchmark (SET, GET), requests/s; redis-benchmark as the preloaded side against a
# kernel redis; iperf3 with the preloaded side sending and receiving, Gbit/s. Each shmnet
# row also shows the daemon's CPU time during that run (utime + stime from
# /proc/PID/stat; with busy polling the daemon spins while it waits, so this counts that too).
# Markdown table on stdout, progress on stderr; exit status 1 if a measurement failed
# (its cell says "failed").
# Environment: DUR (seconds per wrk/iperf3 run, 5), REDIS_N (requests per redis test, 300000:
# a 2-second run moved by tens of percent here),
# WRK_CONNS (32), PRELOAD (the interposer), BUSY_POLL_US (daemon.busy_poll_us, 50),
# BACKEND (tap, or af_xdp: shmnetd on a veth pair through AF_XDP; bench/backends.sh runs both),
# WORKERS (daemon.workers, 1; bench/workers.sh compares 1 and 2), CPUS (daemon.cpus as
# "0,1", "" for unpinned; default: the first WORKERS CPUs if one is left over, bench/lib.sh).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
B=$(cd "${1:-$ROOT/build}" && pwd)
PRELOAD=${PRELOAD:-$B/libshmnet_preload.so}
DUR=${DUR:-5}
REDIS_N=${REDIS_N:-300000}
WRK_CONNS=${WRK_CONNS:-32}
BUSY_POLL_US=${BUSY_POLL_US:-50}
PY=/usr/bin/python3
for f in "$B/shmnetd" "$B/shmnetctl" "$PRELOAD"; do
    [[ -e $f ]] || { echo "bench: $f not built (make)" >&2; exit 1; }
done
for t in nginx wrk redis-server redis-benchmark iperf3; do
    command -v "$t" >/dev/null || { echo "bench: $t missing (tests/lib/install-deps.sh)" >&2; exit 1; }
done
((EUID == 0)) || { echo "bench: needs root (namespaces, TAP)" >&2; exit 1; }

NSP="shmba-p-$$" NSC="shmba-c-$$" NSA="shmba-a-$$" NSB="shmba-b-$$"
TAP="shmba$$" VA="shmbaa$$" VB="shmbab$$"
T=$(mktemp -d "/tmp/shmnet-bench-apps-$$.XXXXXX")
SOCK=$T/shmnetd.sock
PIDS=()
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
    done
    sleep 0.2
    for p in "${PIDS[@]}"; do # what ignored SIGTERM (nginx workers: see track)
        kill -KILL "$p" 2>/dev/null
    done
    ip netns del "$NSP" 2>/dev/null
    ip netns del "$NSC" 2>/dev/null
    ip netns del "$NSA" 2>/dev/null
    ip netns del "$NSB" 2>/dev/null
    ip link del "$TAP" 2>/dev/null
    ip link del "x$TAP" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { echo "bench: $*" >&2; }
indent() { sed "s/^/  $1: /" >&2; } # stdin to stderr, each line prefixed
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY

# ---- shmnetd on a TAP, kernel side in $NSP, preloaded programs in $NSC ----
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
bench_backend
bench_cpus
cat >"$T/d.conf" <<EOF
daemon = { socket = "$SOCK"; log_level = "warn"; busy_poll_us = $BUSY_POLL_US; workers = ${WORKERS:-1}; $DCPUS };
clients = { max_sockets = 65535; rcvbuf = 1048576; sndbuf = 1048576; };
interfaces = ( { name = "$DDEV"; $IFOPTS mac = "02:00:00:00:00:02"; mtu = 1500;
                 address = "10.200.0.2/24"; } );
EOF
"$B/shmnetd" -c "$T/d.conf" >"$T/shmnetd.log" 2>&1 &
DPID=$!
PIDS+=("$DPID")
for ((i = 0; i < 100; i++)); do
    [[ -S $SOCK ]] && ip link show "$TAP" >/dev/null 2>&1 && break
    kill -0 "$DPID" 2>/dev/null || { cat "$T/shmnetd.log" >&2; exit 1; }
    sleep 0.05
done
if ! { ip netns add "$NSP" && ip -n "$NSP" link set lo up && ip link set "$TAP" netns "$NSP" &&
    ip -n "$NSP" addr add 10.200.0.1/24 dev "$TAP" && ip -n "$NSP" link set "$TAP" up &&
    ip netns add "$NSC" && ip -n "$NSC" link set lo up; }; then
    log "cannot set up $NSP / $NSC"
    exit 1
fi
# ---- kernel <-> kernel over veth ----
if ! { ip netns add "$NSA" && ip netns add "$NSB" &&
    ip link add "$VA" netns "$NSA" type veth peer name "$VB" netns "$NSB" &&
    ip -n "$NSA" addr add 10.210.0.1/24 dev "$VA" && ip -n "$NSB" addr add 10.210.0.2/24 dev "$VB" &&
    ip -n "$NSA" link set "$VA" up && ip -n "$NSB" link set "$VB" up &&
    ip -n "$NSA" link set lo up && ip -n "$NSB" link set lo up; }; then
    log "cannot set up the veth pair"
    exit 1
fi
ip netns exec "$NSP" ping -c 1 -W 2 10.200.0.2 >/dev/null
ip netns exec "$NSA" ping -c 1 -W 2 10.210.0.2 >/dev/null

# The two sides of each comparison: where the program under test runs (UT) and where its
# peer runs (LG), and the addresses.
PRE=(ip netns exec "$NSC" env LD_PRELOAD="$PRELOAD" SHMNET_SOCKET="$SOCK")
# sides s|k: UT (command prefix of the program under test), LG (of the load generator),
# UT_IP, LG_IP, UT_WHERE/LG_WHERE (for listening: s = the daemon's table, else a namespace).
sides() {
    if [[ $1 == s ]]; then
        UT=("${PRE[@]}") LG=(ip netns exec "$NSP") UT_IP=10.200.0.2 LG_IP=10.200.0.1
        UT_WHERE=s LG_WHERE=$NSP
    else
        UT=(ip netns exec "$NSB") LG=(ip netns exec "$NSA") UT_IP=10.210.0.2 LG_IP=10.210.0.1
        UT_WHERE=$NSB LG_WHERE=$NSA
    fi
}

TCK=$(getconf CLK_TCK)
dcpu() { awk -v t="$TCK" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / t }' "/proc/$DPID/stat"; }
now() { date +%s.%N; }
# cpu_note C0 T0: "daemon X s CPU in Y s (Z %)"
cpu_note() {
    local c1 t1
    c1=$(dcpu) t1=$(now)
    awk -v a="$1" -v b="$c1" -v s="$2" -v e="$t1" 'BEGIN { d = e - s; printf "%.2f s in %.1f s (%.0f%%)", b - a, d, (d > 0 ? 100 * (b - a) / d : 0) }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "x%.2f", a / b; else print "-" }'; }
FAILED=0
gone() {
    local s
    s=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
    [[ -z $s || $s == Z ]]
}
# listening WHERE PORT: something listens on PORT: WHERE s = the preloaded side (the
# daemon's socket table), else the name of a namespace (the kernel's).
listening() {
    if [[ $1 == s ]]; then
        "$B/shmnetctl" -s "$SOCK" sockets 2>/dev/null | grep -qE "^LISTEN +[0-9]+ +[0-9]+ [0-9.]+:$2 "
    else
        ip netns exec "$1" ss -ltnH "sport = :$2" | grep -q .
    fi
}
wait_listening() { # WHERE PORT PID
    local i
    for ((i = 0; i < 100; i++)); do
        listening "$1" "$2" && return 0
        gone "$3" && return 1
        sleep 0.1
    done
    return 1
}
start() { # NAME CMD...: background, pid in BG
    local name=$1
    shift
    "$@" </dev/null >"$T/$name.out" 2>"$T/$name.err" &
    BG=$!
    PIDS+=("$BG")
}
stop() { # PID
    kill "$1" 2>/dev/null
    for ((i = 0; i < 50; i++)); do gone "$1" && break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null
    wait "$1" 2>/dev/null
}
track() { local w; for w in $(pgrep -P "$1"); do PIDS+=("$w"); done; } # nginx workers

# ---- nginx + wrk ----
head -c 1024 /dev/urandom >"$T/1k"
nginx_conf() { # DIR
    mkdir -p "$1"
    cat >"$1/nginx.conf" <<EOF
daemon off; master_process on; worker_processes 1; user root;
pid $1/nginx.pid; error_log $1/error.log warn;
events { worker_connections 4096; }
http {
    access_log off; default_type application/octet-stream;
    sendfile on; tcp_nopush on; tcp_nodelay on; keepalive_requests 1000000;
    client_body_temp_path $1/body; proxy_temp_path $1/proxy; fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi; scgi_temp_path $1/scgi;
    server { listen 8080; root $T; }
}
EOF
}
bench_nginx() { # s|k -> RPS (or empty), CPU note
    local side=$1 pid out c0 t0
    sides "$side"
    nginx_conf "$T/ng$side"
    start "ng$side" "${UT[@]}" nginx -p "$T/ng$side" -c "$T/ng$side/nginx.conf" -e "$T/ng$side/error.log"
    pid=$BG
    RPS="" NOTE=""
    if ! wait_listening "$UT_WHERE" 8080 "$pid"; then
        log "nginx ($side) did not listen"
        stop "$pid"
        return 1
    fi
    sleep 0.3
    track "$pid"
    c0=$(dcpu) t0=$(now)
    out=$(timeout -k 5 $((DUR + 30)) "${LG[@]}" wrk -t2 -c"$WRK_CONNS" -d"${DUR}s" --timeout 5s \
        "http://$UT_IP:8080/1k" 2>&1)
    NOTE=$(cpu_note "$c0" "$t0")
    stop "$pid"
    indent wrk <<<"$out"
    if grep -qE 'Socket errors|Non-2xx' <<<"$out"; then
        log "nginx ($side): wrk reported errors"
        NOTE+="; $(grep -E 'Socket errors|Non-2xx' <<<"$out" | tr '\n' ' ')"
    fi
    RPS=$(awk '/^Requests\/sec:/ && $2 > 0 { printf "%.0f", $2 }' <<<"$out")
    [[ -n $RPS ]]
}

# ---- redis ----
# bench_redis SIDE ROLE: ROLE server = redis-server is the program under test (preloaded on
# the shmnet side); client = redis-benchmark is (against a kernel redis-server).
bench_redis() {
    local side=$1 role=$2 srv cli ip pid out c0 t0
    sides "$side"
    if [[ $role == server ]]; then
        srv=("${UT[@]}") cli=("${LG[@]}") ip=$UT_IP
    else
        srv=("${LG[@]}") cli=("${UT[@]}") ip=$LG_IP
    fi
    mkdir -p "$T/r$side$role"
    start "r$side$role" "${srv[@]}" redis-server --port 6379 --save '' --appendonly no \
        --bind 0.0.0.0 --protected-mode no --dir "$T/r$side$role" --daemonize no
    pid=$BG
    SETR="" GETR="" NOTE=""
    for ((i = 0; i < 100; i++)); do
        timeout 2 "${cli[@]}" redis-cli -h "$ip" PING 2>/dev/null | grep -q PONG && break
        gone "$pid" && break
        sleep 0.1
    done
    c0=$(dcpu) t0=$(now)
    out=$(timeout -k 5 300 "${cli[@]}" redis-benchmark -h "$ip" -q -n "$REDIS_N" -c 50 -t set,get 2>&1 |
        tr '\r' '\n' | grep -E '^(SET|GET): [0-9.]+ requests per second')
    NOTE=$(cpu_note "$c0" "$t0")
    stop "$pid"
    indent redis-benchmark <<<"$out"
    SETR=$(awk '/^SET:/ { printf "%.0f", $2 }' <<<"$out")
    GETR=$(awk '/^GET:/ { printf "%.0f", $2 }' <<<"$out")
    [[ -n $SETR && -n $GETR ]]
}

# ---- iperf3 ----
# bench_iperf SIDE DIR: DIR send = the program under test is the client and sends; recv =
# it is the server (-s -1) and the load generator sends to it.
bench_iperf() {
    local side=$1 dir=$2 srv cli ip pid out c0 t0 where port=5201
    sides "$side"
    if [[ $dir == send ]]; then
        srv=("${LG[@]}") cli=("${UT[@]}") ip=$LG_IP where=$LG_WHERE
    else
        srv=("${UT[@]}") cli=("${LG[@]}") ip=$UT_IP where=$UT_WHERE
    fi
    GBIT="" NOTE=""
    start "ip$side$dir" "${srv[@]}" iperf3 -s -1 -p "$port"
    pid=$BG
    wait_listening "$where" "$port" "$pid" || { log "iperf3 server ($side $dir) did not listen"; stop "$pid"; return 1; }
    c0=$(dcpu) t0=$(now)
    out=$(timeout -k 5 $((DUR + 30)) "${cli[@]}" iperf3 -c "$ip" -p "$port" -t "$DUR" --json 2>&1)
    NOTE=$(cpu_note "$c0" "$t0")
    stop "$pid"
    GBIT=$("$PY" -c '
import json, sys
try:
    j = json.loads(sys.stdin.read())
except Exception:
    sys.exit(1)
if "error" in j:
    print(j["error"], file=sys.stderr)
    sys.exit(1)
print("%.3f" % (j["end"]["sum_received"]["bits_per_second"] / 1e9))
' <<<"$out") || GBIT=""
    log "iperf3 $side $dir: ${GBIT:-failed} Gbit/s"
    [[ -n $GBIT ]]
}

ROWS=()
cell() { echo "${1:-failed}"; }
# need VALUE...: an empty value (a failed measurement) makes the exit status 1.
need() {
    local v
    for v in "$@"; do [[ -n $v ]] || FAILED=1; done
}

log "nginx + wrk, ${DUR}s each"
bench_nginx s
s_rps=$RPS s_note=$NOTE
bench_nginx k
k_rps=$RPS
need "$s_rps" "$k_rps"
ROWS+=("| nginx (1 worker) under wrk -c$WRK_CONNS, 1 KiB, requests/s | $(cell "$s_rps") | $(cell "$k_rps") | $(ratio "$s_rps" "$k_rps") | $s_note |")

for role in server client; do
    log "redis-benchmark -n $REDIS_N, preloaded $role"
    bench_redis s "$role"
    s_set=$SETR s_get=$GETR s_note=$NOTE
    bench_redis k "$role"
    k_set=$SETR k_get=$GETR
    need "$s_set" "$s_get" "$k_set" "$k_get"
    what="redis-server preloaded"
    [[ $role == client ]] && what="redis-benchmark preloaded"
    ROWS+=("| $what: SET requests/s | $(cell "$s_set") | $(cell "$k_set") | $(ratio "$s_set" "$k_set") | $s_note (SET+GET) |")
    ROWS+=("| $what: GET requests/s | $(cell "$s_get") | $(cell "$k_get") | $(ratio "$s_get" "$k_get") | |")
done

for dir in send recv; do
    log "iperf3 TCP, preloaded side ${dir}s, ${DUR}s"
    bench_iperf s "$dir"
    s_g=$GBIT s_note=$NOTE
    bench_iperf k "$dir"
    k_g=$GBIT
    need "$s_g" "$k_g"
    what="iperf3 TCP, preloaded client sends"
    [[ $dir == recv ]] && what="iperf3 TCP, preloaded server receives"
    ROWS+=("| $what, Gbit/s | $(cell "$s_g") | $(cell "$k_g") | $(ratio "$s_g" "$k_g") | $s_note |")
done

kill -0 "$DPID" 2>/dev/null || { log "shmnetd died during the run"; cat "$T/shmnetd.log" >&2; FAILED=1; }
echo "shmnet application benchmarks (LD_PRELOAD), $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $(uname -r), busy_poll_us=$BUSY_POLL_US, workers ${WORKERS:-1} on CPUs ${CPUS:-any}"
echo
echo "| benchmark | shmnet (LD_PRELOAD, $BLABEL) | kernel (veth) | shmnet / kernel | daemon CPU during the shmnet run |"
echo "|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
exit "$FAILED"
