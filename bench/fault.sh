#!/usr/bin/env bash
# TCP loss recovery under a fault profile: shmnet against the kernel on the same faulty
# link, in one run (docs/bench.md, "Loss recovery under faults").
#
#   bench/fault.sh [BUILD_DIR=build]        (make bench-fault: builds first, then calls this)
#   MIB=32 ROUNDS=1 bench/fault.sh          (a quick look: about 30 s)
#
# shmnetd (BUILD_DIR/shmnetd, one worker) on a TAP whose kernel side is in namespace
# shmf-p-PID (10.200.0.1 kernel, 10.200.0.2 shmnet), with the NIC's fault injector on in
# both directions (every frame shmnet receives and every frame it sends, data and ACKs):
#   loss 2%, reorder 1%, duplicate 1%, corrupt 0.5%, delay_us 200 (FAULT overrides it).
# The kernel has no netem here, so a kernel-to-kernel run over a veth cannot get the same
# faults; the comparison is the two directions over this one link:
#   shmnet sends:   socat preloaded with libshmnet_preload.so (root namespace)
#                   -> kernel socat in the peer namespace | sha256sum
#   kernel sends:   kernel socat in the peer namespace
#                   -> socat preloaded with libshmnet_preload.so | sha256sum
# The same program and the same file (MIB MiB of random bytes) both ways; every transfer
# is checked by SHA-256 and byte count. Time: from the sender's start to the receiver's
# EOF. Each side sends once per congestion control of its list (the socket's
# TCP_CONGESTION): shmnet per SHMNET_CC ("cubic bbr"), the kernel per KERNEL_CC (cubic
# and the namespace's default, bbr on the bench machine). A ratio compares the two
# senders on the same algorithm (the target, >= 0.8, for each): CUBIC backs off on every
# loss, BBR does not slow down for random loss. ROUNDS paired rounds (every variant once
# per round); the table gives the medians, the medians of the rounds' ratios
# shmnet/kernel, and per row the medians of shmnet's TCP counters (shmnetctl stats) and of
# the peer namespace's kernel counters (nstat), as deltas over the transfer.
# Environment: MIB (256), ROUNDS (3), XFER_TIMEOUT (seconds per transfer, default
# max(120, 2 x MIB)): a transfer that does not finish in time is reported as failed, and
# the script exits non-zero after printing what it has. SHMNET_CC ("cubic bbr"),
# KERNEL_CC ("cubic" and the namespace's default), FAULT (the fault group's keys), SEED (fault seed, 1), TSO (false:
# MTU-sized frames, so a lost frame is one segment, not a 64 KiB super-frame), BUSY_POLL_US
# (50), CPUS (daemon.cpus as in bench/run.sh, bench/lib.sh). The binaries are copied at
# the start (a concurrent rebuild of BUILD_DIR does not mix versions within a run).
# Writes a markdown table to stdout, progress to stderr.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
B=$(cd "${1:-$ROOT/build}" && pwd)
MIB=${MIB:-256}
ROUNDS=${ROUNDS:-3}
XFER_TIMEOUT=${XFER_TIMEOUT:-$((MIB * 2 > 120 ? MIB * 2 : 120))}
BUSY_POLL_US=${BUSY_POLL_US:-50}
SEED=${SEED:-1}
TSO=${TSO:-false}
FAULT=${FAULT:-loss = 0.02; reorder = 0.01; duplicate = 0.01; corrupt = 0.005; delay_us = 200;}
for f in shmnetd shmnetctl libshmnet_preload.so; do
    [[ -e $B/$f ]] || { echo "bench: $B/$f not built (make all)" >&2; exit 1; }
done
for c in socat sha256sum nstat timeout; do
    command -v "$c" >/dev/null || { echo "bench: $c not found" >&2; exit 1; }
done
((EUID == 0)) || { echo "bench: needs root (namespaces, TAP)" >&2; exit 1; }

NSP="shmf-p-$$" TAP="shmf$$"
T=$(mktemp -d "/tmp/shmnet-fault-$$.XXXXXX")
SOCK=$T/shmnetd.sock
PIDS=()
SPID="" RPID="" # the running transfer's sender and receiver (their timeout processes)
cleanup() {
    local p
    for p in $SPID $RPID "${PIDS[@]}"; do
        kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
    done
    ip netns del "$NSP" 2>/dev/null
    ip link del "$TAP" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { echo "bench: $*" >&2; }
T_START=$SECONDS
# A private copy of the binaries: the preload library is loaded again by every transfer,
# and a rebuild of BUILD_DIR during the run must not mix versions (daemon and library).
mkdir -p "$T/bin"
cp "$B/shmnetd" "$B/shmnetctl" "$B/libshmnet_preload.so" "$T/bin/" || exit 1
B=$T/bin
PRELOAD=$B/libshmnet_preload.so
REV=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)

# ---- shmnetd on a faulty TAP, kernel side in $NSP ----
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
bench_cpus
cat >"$T/d.conf" <<EOF
daemon = { socket = "$SOCK"; log_level = "warn"; busy_poll_us = $BUSY_POLL_US; workers = 1; $DCPUS };
interfaces = ( { name = "$TAP"; backend = "tap"; tso = $TSO; mac = "02:00:00:00:00:02"; mtu = 1500;
                 address = "10.200.0.2/24";
                 fault = { $FAULT seed = $SEED; direction = "both"; }; } );
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
    ip -n "$NSP" addr add 10.200.0.1/24 dev "$TAP" && ip -n "$NSP" link set "$TAP" up; }; then
    log "cannot set up $NSP"
    exit 1
fi
# The kernel's congestion control for its sending socket: cubic first (shmnet's default,
# so the ratio compares loss recovery, not algorithms), then the namespace's default if it
# is another one (bbr on the bench machine).
KDEF=$(ip netns exec "$NSP" sysctl -n net.ipv4.tcp_congestion_control)
KERNEL_CC=${KERNEL_CC:-cubic$([[ $KDEF != cubic ]] && echo " $KDEF")}
SHMNET_CC=${SHMNET_CC:-cubic bbr}
# ARP both ways (a lost ping is retried: 2% loss each way)
ip netns exec "$NSP" ping -c 3 -i 0.2 -W 2 10.200.0.2 >/dev/null ||
    { log "no ping to shmnet"; exit 1; }

# ---- the data ----
log "generating $MIB MiB of random bytes"
head -c $((MIB << 20)) /dev/urandom >"$T/data"
WANT_SHA=$(sha256sum <"$T/data" | cut -d' ' -f1)
WANT_N=$((MIB << 20))
mkfifo "$T/rx.fifo"

export SHMNET_SOCKET=$SOCK
ctl_stats() { "$B/shmnetctl" stats 2>/dev/null; }
# The counters reported per transfer (deltas): shmnet's (shmnetctl stats) and the peer
# namespace's kernel TCP (nstat: Tcp* from /proc/net/snmp, TcpExt* from /proc/net/netstat).
S_KEYS="tcp_rto tcp_retrans_segs tcp_fast_retrans tcp_sack_recovery tcp_tlp tcp_lost_retrans tcp_drop_csum tcp_drop_ooo_full fault_drop_loss fault_corrupt fault_drop_queue_full"
K_KEYS="TcpExtTCPTimeouts TcpRetransSegs TcpExtTCPFastRetrans TcpExtTCPSackRecovery TcpExtTCPLossProbes TcpExtTCPLostRetransmit TcpExtTCPSpuriousRTOs TcpExtTCPSACKReorder TcpExtTCPDSACKRecv TcpExtTCPDSACKOfoSent TcpExtTCPOFOQueue TcpInCsumErrors"
snap_s() { ctl_stats | awk -v keys="$S_KEYS" 'BEGIN { n = split(keys, k, " "); for (i = 1; i <= n; i++) want[k[i]] = 1 }
    { for (i = 1; i < NF; i++) if ($i in want) v[$i] = $(i + 1) }
    END { for (i = 1; i <= n; i++) printf "%s ", v[k[i]] + 0; print "" }'; }
snap_k() { ip netns exec "$NSP" nstat -asz 2>/dev/null | awk -v keys="$K_KEYS" 'BEGIN { n = split(keys, k, " "); for (i = 1; i <= n; i++) want[k[i]] = 1 }
    $1 in want { v[$1] = $2 }
    END { for (i = 1; i <= n; i++) printf "%s ", v[k[i]] + 0; print "" }'; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { n = split(a, x, " "); split(b, y, " "); for (i = 1; i <= n; i++) printf "%d ", y[i] - x[i]; print "" }'; }

wait_kport() { # PORT: a kernel listener in $NSP
    local i
    for ((i = 0; i < 100; i++)); do
        ip netns exec "$NSP" ss -ltnH "sport = :$1" | grep -q . && return 0
        sleep 0.05
    done
    return 1
}
wait_sport() { # PORT: a shmnet listener
    local i
    for ((i = 0; i < 100; i++)); do
        "$B/shmnetctl" sockets 2>/dev/null | grep LISTEN | grep -qE ":$1( |\$)" && return 0
        sleep 0.05
    done
    return 1
}

# xfer DIR PORT [CC]: one transfer; DIR s (shmnet sends) or k (kernel sends, its socket with
# congestion control CC through TCP_CONGESTION: a namespace's default can only be one of
# the host's tcp_allowed_congestion_control, root's socket may take any). Sets SECS, MBIT,
# OK (1 if the SHA-256 and byte count match), SD and KD (counter deltas), and XERR.
# The sender reads the file, shuts its socket down for writing at EOF and then waits (-t)
# for the receiver's EOF, which comes after the receiver has read everything: the sender's
# end is the transfer's end. (socat -u exits right after its last write without a close;
# before 5766bc8 shmnetd reset an exiting process's connections and the tail was lost.)
SOCAT_B=131072
SND_SRC="OPEN:$T/data,rdonly!!OPEN:/dev/null,wronly"
xfer() {
    local dir=$1 port=$2 cc=${3:-} rcv snd s0 k0 s1 k1 t0 t1 n sha rc
    rm -f "$T/recv.sha" "$T/recv.n" "$T/socat.err"
    if [[ $dir == s ]]; then
        rcv=(ip netns exec "$NSP" socat -b "$SOCAT_B" -u "TCP-LISTEN:$port,reuseaddr" STDOUT)
        snd=(env LD_PRELOAD="$PRELOAD" socat -b "$SOCAT_B" -t "$XFER_TIMEOUT" "$SND_SRC" "TCP:10.200.0.1:$port${cc:+,setsockopt-string=6:13:$cc}")
    else
        rcv=(env LD_PRELOAD="$PRELOAD" socat -b "$SOCAT_B" -u "TCP-LISTEN:$port,reuseaddr" STDOUT)
        snd=(ip netns exec "$NSP" socat -b "$SOCAT_B" -t "$XFER_TIMEOUT" "$SND_SRC" "TCP:10.200.0.2:$port,setsockopt-string=6:13:$cc")
    fi
    # The receiver: to EOF, SHA-256 and byte count of what came (tee to both).
    # The receiver to EOF, through a fifo to the SHA-256 and the byte count. The sender's
    # timeout bounds the transfer (it waits for the receiver's EOF); the receiver's, 10 s
    # later, only ends a receiver left hanging.
    timeout -k 5 $((XFER_TIMEOUT + 10)) "${rcv[@]}" >"$T/rx.fifo" 2>>"$T/socat.err" &
    RPID=$!
    { tee >(sha256sum | cut -d' ' -f1 >"$T/recv.sha") <"$T/rx.fifo" | wc -c >"$T/recv.n"; } &
    local hpid=$!
    if [[ $dir == s ]]; then wait_kport "$port"; else wait_sport "$port"; fi || {
        XERR="receiver not listening"
        kill "$RPID" 2>/dev/null
        wait "$RPID" "$hpid"
        OK=0 SECS=0 MBIT=0 SD="" KD="" RPID=""
        return 1
    }
    s0=$(snap_s) k0=$(snap_k)
    t0=$(date +%s.%N)
    timeout -k 5 "$XFER_TIMEOUT" "${snd[@]}" 2>>"$T/socat.err" &
    SPID=$!
    wait "$SPID"
    rc=$?
    wait "$RPID" "$hpid"
    t1=$(date +%s.%N)
    SPID="" RPID=""
    for ((i = 0; i < 50; i++)); do # the sha256sum of the process substitution
        [[ -s $T/recv.sha ]] && break
        sleep 0.02
    done
    s1=$(snap_s) k1=$(snap_k)
    SD=$(sub "$s0" "$s1") KD=$(sub "$k0" "$k1")
    n=$(tr -d ' \n' <"$T/recv.n" 2>/dev/null) sha=$(cat "$T/recv.sha" 2>/dev/null)
    SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    MBIT=$(awk -v n="${n:-0}" -v t="$SECS" 'BEGIN { if (t > 0) printf "%.1f", n * 8 / t / 1e6; else print 0 }')
    OK=0 XERR=""
    if [[ $n == "$WANT_N" && $sha == "$WANT_SHA" ]]; then
        OK=1
    elif ((rc == 124 || rc == 137)); then
        XERR="timed out after ${XFER_TIMEOUT}s with ${n:-0} of $WANT_N bytes"
    else
        XERR="got ${n:-0} of $WANT_N bytes, sha ${sha:0:12} (want ${WANT_SHA:0:12}), sender exit $rc"
        [[ -s $T/socat.err ]] && XERR+=" ($(tr '\n' ' ' <"$T/socat.err" | cut -c1-300))"
    fi
    ((OK))
}

median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
# colmed "ROW ROW ..." I: median of field I (1-based) over rows separated by '|'
colmed() { tr '|' '\n' <<<"$1" | awk -v i="$2" 'NF { print $i }' | median; }

FAILS=0
declare -A SECS_L MBIT_OF SDS KDS ERRS
# Variants per round: "s:CC" for each CC of SHMNET_CC (shmnet sends, its socket on that
# congestion control), then "k:CC" for each CC of KERNEL_CC (the kernel sends); 6:13 is
# IPPROTO_TCP:TCP_CONGESTION, which both sides take.
VARIANTS=()
for cc in $SHMNET_CC; do VARIANTS+=("s:$cc"); done
for cc in $KERNEL_CC; do VARIANTS+=("k:$cc"); done
label() { [[ $1 == s:* ]] && echo "shmnet (${1#s:}) sends -> kernel receives" || echo "kernel (${1#k:}) sends -> shmnet receives"; }
port=9400
for ((r = 0; r < ROUNDS; r++)); do
    for v in "${VARIANTS[@]}"; do
        port=$((port + 1))
        log "round $((r + 1))/$ROUNDS: $(label "$v"), $MIB MiB (port $port, timeout ${XFER_TIMEOUT}s)"
        if xfer "${v:0:1}" "$port" "${v#?:}"; then
            log "  $SECS s, $MBIT Mbit/s; shmnet [$S_KEYS] = [$SD]; kernel [$K_KEYS] = [$KD]"
        else
            FAILS=$((FAILS + 1))
            ERRS[$v]+="round $((r + 1)): $XERR; "
            log "  FAILED: $XERR"
            MBIT=0
        fi
        SECS_L[$v]+="$SECS " MBIT_OF[$v$r]=$MBIT
        SDS[$v]+="$SD|" KDS[$v]+="$KD|"
        kill -0 "$DPID" 2>/dev/null || { log "shmnetd died"; cat "$T/shmnetd.log" >&2; exit 1; }
    done
done

# Counter cells: "name median" for the non-zero medians of a variant.
cells() { # KEYS ROWS
    local keys i out="" v
    read -ra keys <<<"$1"
    for ((i = 0; i < ${#keys[@]}; i++)); do
        v=$(colmed "$2" $((i + 1)))
        [[ -n $v && $v != 0 ]] && out+="${keys[i]} $v, "
    done
    echo "${out%, }"
}

echo "shmnet loss recovery under faults, $(date -u '+%Y-%m-%d %H:%M UTC'), tree $REV, $(nproc) CPUs, $(uname -r), TAP (tso = $TSO), one worker on CPUs ${CPUS:-any}, fault { $FAULT seed = $SEED; } both directions, $MIB MiB per transfer, median of $ROUNDS paired rounds, run time $((SECONDS - T_START)) s"
echo
echo "| row | goodput, Mbit/s (median) | time, s (median) | rounds, Mbit/s | shmnet counters (median deltas) | kernel counters in the peer namespace (median deltas) |"
echo "|---|---|---|---|---|---|"
n=0
for v in "${VARIANTS[@]}"; do
    n=$((n + 1))
    m=""
    for ((i = 0; i < ROUNDS; i++)); do m+="${MBIT_OF[$v$i]} "; done
    m=${m% }
    echo "| $n. $(label "$v") | $(median <<<"$m") | $(median <<<"${SECS_L[$v]}") | $m | $(cells "$S_KEYS" "${SDS[$v]}") | $(cells "$K_KEYS" "${KDS[$v]}") |"
done
# The ratios: each shmnet variant against the kernel on the same congestion control.
for v in "${VARIANTS[@]}"; do
    [[ $v == s:* && " ${VARIANTS[*]} " == *" k:${v#s:} "* ]] || continue
    n=$((n + 1))
    rs=""
    for ((i = 0; i < ROUNDS; i++)); do rs+="$(ratio "${MBIT_OF[$v$i]}" "${MBIT_OF[k:${v#s:}$i]}") "; done
    echo "| $n. ratio shmnet (${v#s:}) sends / kernel (${v#s:}) sends (target >= 0.8) | x$(median <<<"$rs") | | [${rs% }] | | |"
done
for v in "${VARIANTS[@]}"; do
    [[ -n ${ERRS[$v]:-} ]] && echo && echo "failed ($(label "$v")): ${ERRS[$v]}"
done
((FAILS == 0))
