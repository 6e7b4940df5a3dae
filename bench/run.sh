#!/usr/bin/env bash
# shmnet benchmarks against the Linux kernel, side by side in one run (docs/bench.md).
#
#   bench/run.sh [BUILD_DIR=build]        (make bench: builds first, then calls this)
#
# Sets up its own namespaces: shmnetd (BUILD_DIR/shmnetd) on a TAP whose kernel side is
# in namespace shmb-p-PID (10.200.0.1), and two namespaces joined by a veth pair for the
# kernel-to-kernel comparison (10.210.0.1 <-> 10.210.0.2). The same program
# (bench/udp_bench.c) runs on libshmnet and on kernel sockets; the kernel-side servers are
# its kernel build in both cases. Writes a markdown table to stdout, progress to stderr.
# Environment: RR_N (20000 ping-pongs), TPUT_SECS (3), RING_ROUNDS (200000),
# BUSY_POLL_US (daemon.busy_poll_us, default 50), ROUNDS (paired runs per TCP row, 3), MEM_CONNS (idle connections for the
# memory rows, cumulative steps, default "10000 100000"; "" skips them), MEM_PER_PROC (15000),
# BACKEND (tap, or af_xdp: shmnetd on a veth pair through AF_XDP; bench/backends.sh runs both),
# WORKERS (daemon.workers, 1; bench/workers.sh compares 1 and 2), CPUS (daemon.cpus as
# "0,1", "" for unpinned; default: the first WORKERS CPUs if one is left over, bench/lib.sh).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
B=$(cd "${1:-$ROOT/build}" && pwd)
RR_N=${RR_N:-20000}
TPUT_SECS=${TPUT_SECS:-3}
RING_ROUNDS=${RING_ROUNDS:-200000}
BUSY_POLL_US=${BUSY_POLL_US:-50}
ROUNDS=${ROUNDS:-3}
for f in shmnetd shmnetctl bench/ring_rtt bench/udp_bench bench/udp_bench_kernel bench/tcp_bench bench/tcp_bench_kernel; do
    [[ -x $B/$f ]] || { echo "bench: $B/$f not built (make progs)" >&2; exit 1; }
done
((EUID == 0)) || { echo "bench: needs root (namespaces, TAP)" >&2; exit 1; }

NSP="shmb-p-$$" NSA="shmb-a-$$" NSB="shmb-b-$$" TAP="shmb$$" VA="shmbva$$" VB="shmbvb$$"
T=$(mktemp -d "/tmp/shmnet-bench-$$.XXXXXX")
SOCK=$T/shmnetd.sock
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
    done
    ip netns del "$NSP" 2>/dev/null
    ip netns del "$NSA" 2>/dev/null
    ip netns del "$NSB" 2>/dev/null
    ip link del "$TAP" 2>/dev/null
    ip link del "x$TAP" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { echo "bench: $*" >&2; }

# ---- shmnetd on a TAP, kernel side in $NSP ----
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
bench_backend
bench_cpus
cat >"$T/d.conf" <<EOF
daemon = { socket = "$SOCK"; log_level = "warn"; busy_poll_us = $BUSY_POLL_US; workers = ${WORKERS:-1}; $DCPUS };
clients = { max_sockets = 65535; fifo_mb = 3000; rcvbuf = 1048576; sndbuf = 1048576; };
interfaces = ( { name = "$DDEV"; $IFOPTS mac = "02:00:00:00:00:02"; mtu = 1500;
                 address = "10.200.0.2/24"; } );
EOF
"$B/shmnetd" -c "$T/d.conf" >"$T/shmnetd.log" 2>&1 &
DPID=$!
PIDS+=("$DPID")
# No notify socket here: wait (bounded) for the control socket and the TAP.
for ((i = 0; i < 100; i++)); do
    [[ -S $SOCK ]] && ip link show "$TAP" >/dev/null 2>&1 && break
    kill -0 "$DPID" 2>/dev/null || { cat "$T/shmnetd.log" >&2; exit 1; }
    sleep 0.05
done
if ! { ip netns add "$NSP" && ip -n "$NSP" link set lo up && ip link set "$TAP" netns "$NSP" &&
    ip -n "$NSP" addr add 10.200.0.1/24 dev "$TAP" && ip -n "$NSP" link set "$TAP" up; }; then
    log "cannot set up $NSP"
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

# start_srv NS MODE PORT: kernel-side udp_bench server, wait for READY on a fifo.
start_srv() {
    local fifo="$T/srv.$1.$2" fd line
    mkfifo "$fifo"
    ip netns exec "$1" "$B/bench/udp_bench_kernel" "$2" "$3" >"$fifo" 2>>"$T/srv.err" &
    PIDS+=("$!")
    exec {fd}<"$fifo"
    if ! read -r -t 10 -u "$fd" line || [[ $line != READY ]]; then
        log "server $1 $2 not ready"
        exit 1
    fi
}
start_srv "$NSP" echo 9000
start_srv "$NSP" sink 9001
start_srv "$NSB" echo 9000
start_srv "$NSB" sink 9001
# ARP warm-up both ways
ip netns exec "$NSP" ping -c 1 -W 2 10.200.0.2 >/dev/null
ip netns exec "$NSA" ping -c 1 -W 2 10.210.0.2 >/dev/null

export SHMNET_SOCKET=$SOCK
field() { awk -v k="$1" '{ for (i = 1; i < NF; i++) if ($i == k) { print $(i + 1); exit } }'; }
us() { awk -v n="$1" 'BEGIN { printf "%.2f", n / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'; }
# paired FIELD SHMNET_CMD KERNEL_CMD: ROUNDS rounds, each runs shmnet's side, then the
# kernel's, right after each other; sets S and K (medians) and R (median of the per-round
# ratios, then the rounds' ratios in brackets). The machine drifts between runs by tens of
# percent; pairs taken close together and a median keep that out of the ratio.
paired() {
    local f=$1 s_cmd=$2 k_cmd=$3 i s k ss="" ks="" rs=""
    for ((i = 0; i < ROUNDS; i++)); do
        s=$(eval "$s_cmd" | field "$f")
        k=$(eval "$k_cmd" | field "$f")
        ss+="$s " ks+="$k " rs+="$(ratio "$s" "$k") "
    done
    S=$(median <<<"$ss") K=$(median <<<"$ks")
    R="$(median <<<"$rs") [${rs% }]"
}

ROWS=()
# ---- ring round trip ----
log "ring_rtt ($RING_ROUNDS rounds)"
out=$("$B/bench/ring_rtt" "$RING_ROUNDS") || { log "ring_rtt failed"; exit 1; }
ROWS+=("| ring NOP round trip (median / p99) | $(us "$(field median_ns <<<"$out")") / $(us "$(field p99_ns <<<"$out")") µs | - | target median <= 1 µs |")

# ---- request/response ----
for size in 1 1024; do
    log "rr $size bytes x $RR_N"
    s=$("$B/bench/udp_bench" rr 10.200.0.1 9000 "$size" "$RR_N") || { log "rr shmnet failed"; exit 1; }
    k=$(ip netns exec "$NSA" "$B/bench/udp_bench_kernel" rr 10.210.0.2 9000 "$size" "$RR_N") ||
        { log "rr kernel failed"; exit 1; }
    sm=$(field median_ns <<<"$s") sp=$(field p99_ns <<<"$s")
    km=$(field median_ns <<<"$k") kp=$(field p99_ns <<<"$k")
    ROWS+=("| UDP ping-pong ${size} B, median / p99 | $(us "$sm") / $(us "$sp") µs | $(us "$km") / $(us "$kp") µs | median x$(ratio "$sm" "$km"), p99 x$(ratio "$sp" "$kp") (lost $(field lost <<<"$s")/$(field lost <<<"$k")) |")
done

# ---- one-way throughput ----
tput_cells() { # OUTPUT SIZE -> "sent/s | recv/s | Mbit/s" into globals
    local o=$1 size=$2 sent secs recv span
    sent=$(field sent <<<"$o") secs=$(field secs <<<"$o") recv=$(field recv <<<"$o") span=$(field recv_span_ns <<<"$o")
    SENT_RATE=$(awk -v n="$sent" -v t="$secs" 'BEGIN { printf "%.0f", n / t }')
    RECV_RATE=$(awk -v n="$recv" -v t="$span" 'BEGIN { if (t > 0) printf "%.0f", n / (t / 1e9); else print 0 }')
    MBIT=$(awk -v r="$RECV_RATE" -v s="$size" 'BEGIN { printf "%.1f", r * s * 8 / 1e6 }')
    RECV=$recv SENT=$sent
}
for size in 64 1400; do
    log "tput $size bytes, ${TPUT_SECS}s each"
    s=$("$B/bench/udp_bench" tput 10.200.0.1 9001 "$size" "$TPUT_SECS") || { log "tput shmnet failed"; exit 1; }
    tput_cells "$s" "$size"
    sr=$RECV_RATE smb=$MBIT ssent=$SENT srecv=$RECV sss=$SENT_RATE
    k=$(ip netns exec "$NSA" "$B/bench/udp_bench_kernel" tput 10.210.0.2 9001 "$size" "$TPUT_SECS") ||
        { log "tput kernel failed"; exit 1; }
    tput_cells "$k" "$size"
    ROWS+=("| UDP one-way ${size} B, received datagrams/s (Mbit/s payload) | $sr ($smb) | $RECV_RATE ($MBIT) | x$(ratio "$sr" "$RECV_RATE"); sent $ssent ($sss/s) recv $srecv vs sent $SENT recv $RECV |")
done


# ---- TCP ----
# tcp_srv NS MODE PORT [PORTS]: a kernel-side tcp_bench server (sink, echo, hold).
tcp_srv() {
    ip netns exec "$1" "$B/bench/tcp_bench_kernel" "$2" "$3" "${4:-1}" >>"$T/tcpsrv.out" 2>&1 &
    PIDS+=("$!")
}
tcp_srv "$NSP" sink 9100
tcp_srv "$NSB" sink 9100
# One echo port per round of the connection rate: each round leaves its connections in
# TIME_WAIT, which would hold the next round's ephemeral ports to the same port.
for ((r = 0; r < ROUNDS; r++)); do
    tcp_srv "$NSP" echo $((9102 + r))
    tcp_srv "$NSB" echo $((9102 + r))
done
wait_port() { # NS PORT: wait (bounded) until something listens there
    local i
    for ((i = 0; i < 100; i++)); do
        ip netns exec "$1" ss -ltnH "sport = :$2" | grep -q . && return 0
        sleep 0.05
    done
    return 1
}
wait_port "$NSP" 9100 && wait_port "$NSB" 9100 || { log "tcp servers not listening"; exit 1; }
for ((r = 0; r < ROUNDS; r++)); do
    wait_port "$NSP" $((9102 + r)) && wait_port "$NSB" $((9102 + r)) ||
        { log "tcp echo servers not listening"; exit 1; }
done
for n in 1 4; do
    log "tcp bulk send, $n stream(s), ${TPUT_SECS}s x $ROUNDS"
    paired gbit_per_s "'$B/bench/tcp_bench' bulk 10.200.0.1 9100 $TPUT_SECS $n" \
        "ip netns exec $NSA '$B/bench/tcp_bench_kernel' bulk 10.210.0.2 9100 $TPUT_SECS $n"
    ROWS+=("| TCP bulk, shmnet sends, $n stream(s) | $S Gbit/s | $K Gbit/s | x$R (target x0.5) |")
done
# shmnet receiving: its sink in the root namespace (libshmnet), the kernel sends.
"$B/bench/tcp_bench" sink 9101 >>"$T/tcpsink.out" 2>&1 &
PIDS+=("$!")
for ((i = 0; i < 100; i++)); do
    "$B/shmnetctl" sockets 2>/dev/null | grep -q ':9101 ' && break
    sleep 0.05
done
tcp_srv "$NSB" sink 9101
wait_port "$NSB" 9101 || { log "tcp sink 9101 not listening"; exit 1; }
for n in 1 4; do
    log "tcp bulk receive, $n stream(s), ${TPUT_SECS}s x $ROUNDS"
    paired gbit_per_s "ip netns exec $NSP '$B/bench/tcp_bench_kernel' bulk 10.200.0.2 9101 $TPUT_SECS $n" \
        "ip netns exec $NSA '$B/bench/tcp_bench_kernel' bulk 10.210.0.2 9101 $TPUT_SECS $n"
    ROWS+=("| TCP bulk, shmnet receives, $n stream(s) | $S Gbit/s | $K Gbit/s | x$R (target x0.5) |")
done
log "tcp connection rate, ${TPUT_SECS}s x $ROUNDS"
paired conn_per_s "'$B/bench/tcp_bench' rate 10.200.0.1 \$((9102 + i)) $TPUT_SECS" \
    "ip netns exec $NSA '$B/bench/tcp_bench_kernel' rate 10.210.0.2 \$((9102 + i)) $TPUT_SECS"
ROWS+=("| TCP connections/s (connect, 1-byte round trip, close) | $S | $K | x$R (target x1.0) |")

# Memory per idle connection: the daemon's RSS before and after opening N connections,
# for each N of MEM_CONNS (cumulative: the connections of one step stay open for the next).
# RLIMIT_NOFILE (here a hard limit of 20000, not raisable) bounds every process: a shmnet
# socket holds a placeholder fd and a kernel socket is one, so the connections are spread
# over openers of at most MEM_PER_PROC connections and kernel holders of one port each.
MEM_CONNS=${MEM_CONNS-10000 100000} # "" skips the memory rows
MEM_PER_PROC=${MEM_PER_PROC:-15000}
mem_max=0
for n in $MEM_CONNS; do ((n > mem_max)) && mem_max=$n; done
MEM_PORTS=$(((mem_max + MEM_PER_PROC - 1) / MEM_PER_PROC))
((MEM_PORTS < 8)) && MEM_PORTS=8
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$DPID/status"; }
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null
# Sessions attached after a reload get the new clients.* values: small fifos for this one.
sed -i 's/rcvbuf = 1048576; sndbuf = 1048576;/rcvbuf = 4096; sndbuf = 4096;/' "$T/d.conf"
kill -HUP "$DPID"
for ((i = 0; i < 100; i++)); do # the reload is done when the control socket answers again
    "$B/shmnetctl" version >/dev/null 2>&1 && break
    sleep 0.05
done
for ((p = 0; p < MEM_PORTS; p++)); do # one kernel holder per port (one fd per connection)
    tcp_srv "$NSP" hold $((9200 + p)) 1
done
wait_port "$NSP" $((9200 + MEM_PORTS - 1)) || { log "hold servers not listening"; exit 1; }
# The openers read stdin until EOF: one fifo, kept open for writing by this script.
mkfifo "$T/hold.fifo"
exec {hold_w}<>"$T/hold.fifo"
before=$(rss_kb)
opened=0 nproc_idle=0
for n in $MEM_CONNS; do
    log "opening idle connections up to $n"
    t_open=$SECONDS
    while ((opened < n)); do
        k=$((n - opened < MEM_PER_PROC ? n - opened : MEM_PER_PROC))
        nproc_idle=$((nproc_idle + 1))
        "$B/bench/tcp_bench" idle 10.200.0.1 9200 "$k" "$MEM_PORTS" <"$T/hold.fifo" \
            >"$T/idle.$nproc_idle.out" 2>&1 &
        PIDS+=("$!")
        opened=$((opened + k))
    done
    # Wait (bounded) until every opener has reported.
    for ((i = 0; i < 3000; i++)); do
        ((nrep = 0))
        for ((j = 1; j <= nproc_idle; j++)); do
            grep -q '^open' "$T/idle.$j.out" 2>/dev/null && nrep=$((nrep + 1))
        done
        ((nrep == nproc_idle)) && break
        sleep 0.1
    done
    after=$(rss_kb)
    got=$(cat "$T"/idle.*.out | awk '$1 == "open" { s += $2 } END { print s + 0 }')
    est=$(ip netns exec "$NSP" ss -tnH state established "( sport >= :9200 and sport < :$((9200 + MEM_PORTS)) )" | wc -l)
    log "$got open ($est established on the kernel side) in $((SECONDS - t_open)) s, daemon VmRSS $before -> $after kB"
    per=$(awk -v a="$after" -v b="$before" -v n="$got" 'BEGIN { if (n > 0) printf "%.0f", (a - b) * 1024 / n; else print "-" }')
    ROWS+=("| daemon memory per idle TCP connection ($got open, $est established at the kernel) | $per bytes | - | target < 4096 (fifo pages untouched while idle) |")
    ((got == n)) || { log "only $got of $n connections opened: $(cat "$T"/idle.*.out | grep -v '^open' | sort | uniq -c | head -n 3)"; break; }
done
exec {hold_w}>&-
kill -0 "$DPID" 2>/dev/null || { log "shmnetd died during the run"; cat "$T/shmnetd.log" >&2; exit 1; }
echo "shmnet benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $(uname -r), busy_poll_us=$BUSY_POLL_US, TCP rows: median of $ROUNDS paired rounds, workers ${WORKERS:-1} on CPUs ${CPUS:-any}"
echo
echo "| benchmark | shmnet (native, $BLABEL) | kernel (veth) | shmnet / kernel |"
echo "|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
