#!/usr/bin/env bash
# Many clients at once: 50 processes each doing UDP echo with content checks; 50 processes
# keeping traffic going while 10 of them (and a multithreaded client) are killed with
# SIGKILL: their sessions and sockets disappear from shmnetctl, the others carry on intact.
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"
harness_init cli

PROGS=${PROGS:-$(dirname "$SHMNETD")/tests/progs}
NCLIENTS=${NCLIENTS:-50}
NKILL=10
NSERVERS=4 # kernel echo servers on ports 7000..7003
for p in udp_echo_client udp_traffic udp_mt_client; do
    if [[ ! -x $PROGS/$p ]]; then
        fail cli_setup "$PROGS/$p not built (make progs)"
        exit 1
    fi
done
export SHMNET_SOCKET=$SOCK

declare -A BG_PID BG_OUT
# bg NAME CMD...: start CMD with stdout on a fifo read by this shell (fd in BG_OUT).
bg() {
    local name=$1 ofd
    shift
    mkfifo "$T/$name.out"
    "$@" </dev/null >"$T/$name.out" 2>"$T/$name.err" &
    BG_PID[$name]=$!
    HARNESS_PIDS+=("$!")
    exec {ofd}<"$T/$name.out"
    BG_OUT[$name]=$ofd
}
bg_line() { # NAME [TIMEOUT_S=10] -> $LINE
    LINE=""
    read -r -t "${2:-10}" -u "${BG_OUT[$1]}" LINE
}
bg_wait() { # NAME -> exit status; the rest of stdout in $REST
    local rc fd=${BG_OUT[$1]}
    wait "${BG_PID[$1]}"
    rc=$?
    REST=$(cat <&"$fd")
    exec {fd}<&-
    return $rc
}

harness_write_conf "$T/d.conf"
harness_start_daemon "$T/d.conf" || exit 1
harness_peer_ns || { fail peer_ns "cannot set up the peer namespace"; exit 1; }
# 50 clients' 60000-byte datagrams arrive at once as ~2000 interleaved fragments: more
# than the kernel's default 4 MB of reassembly memory (ipfrag_high_thresh), and more than
# ipfrag_max_dist (64) other fragments from our address between two of one datagram, which
# makes it drop that datagram as stale. Either is an IpReasmFails and a lost echo; the
# peer gets room for all of them and no disorder limit.
nsx sysctl -qw net.ipv4.ipfrag_high_thresh=$((64 << 20)) net.ipv4.ipfrag_max_dist=0

KECHO_PY=$(cd "$(dirname "$0")/../lib" && pwd)/kecho.py
servers_up() {
    local i
    for ((i = 0; i < NSERVERS; i++)); do
        bg "kecho$i" ip netns exec "$NS" "$PY" "$KECHO_PY" $((7000 + i))
        bg_line "kecho$i" && [[ $LINE == READY ]] || return 1
    done
}
check kernel_echo_servers servers_up || exit 1

nclients() { ctl clients | grep -c '^client '; }
nsockets() { ctl sockets | grep -c '^udp '; }
clients_are() { [[ $(nclients) == "$1" ]]; }
sockets_are() { [[ $(nsockets) == "$1" ]]; }

# On failure: our drops, and the peer kernel's IP and UDP error counters.
peer_diag() {
    ctl stats | grep -E 'drop|full|lost' | grep -v ' 0$'
    echo "peer kernel:"
    nsx nstat -az 2>/dev/null | grep -E 'Reasm|Errors|FragFails' | grep -vE ' 0 +0.0$'
}

# ---- 1: 50 echo clients at once, sizes 0..60000, every echo checked ----
SIZES=0,1,1472,1473,8000,60000
ROUNDS=3
many_echo() {
    local i pids=() bad=0 out exp
    exp="OK $((ROUNDS * 6)) $((ROUNDS * (0 + 1 + 1472 + 1473 + 8000 + 60000)))"
    for ((i = 0; i < NCLIENTS; i++)); do
        timeout 120 "$PROGS/udp_echo_client" -r "$ROUNDS" -s "$SIZES" -t 10000 \
            "$PEER_IP" $((7000 + i % NSERVERS)) >"$T/echo$i.out" 2>&1 &
        pids+=("$!")
    done
    for ((i = 0; i < NCLIENTS; i++)); do
        wait "${pids[i]}"
        out=$(cat "$T/echo$i.out")
        if [[ $out != "$exp" ]]; then
            echo "client $i: $out"
            bad=$((bad + 1))
        fi
    done
    echo "$((NCLIENTS - bad)) of $NCLIENTS clients: $exp"
    ((bad == 0)) && return 0
    peer_diag
    return 1
}
check "${NCLIENTS}_echo_clients_concurrent" many_echo
check sessions_gone_after_echo_clients wait_until 10 clients_are 0

# ---- 2: 50 clients with traffic in flight; SIGKILL 10 of them and a threaded client ----
traffic_up() {
    local i
    for ((i = 0; i < NCLIENTS; i++)); do
        bg "tr$i" "$PROGS/udp_traffic" -w 8 -l $((64 + i * 37)) -k 2 "$PEER_IP" $((7000 + i % NSERVERS))
    done
    for ((i = 0; i < NCLIENTS; i++)); do
        if ! bg_line "tr$i" 30 || [[ $LINE != RUNNING ]]; then
            echo "tr$i: '$LINE' $(cat "$T/tr$i.err")"
            peer_diag
            return 1
        fi
    done
}
check "${NCLIENTS}_traffic_clients_running" traffic_up || exit 1
all_listed() {
    local c s
    c=$(nclients) s=$(nsockets)
    echo "shmnetctl: $c clients, $s sockets"
    ((c == NCLIENTS && s == 2 * NCLIENTS))
}
check clients_and_sockets_listed all_listed

# A multithreaded client, killed while its threads are in the middle of their loops.
bg mt "$PROGS/udp_mt_client" -o 4 -S 4 -n 1000000 -l 900 "$PEER_IP" 7000
# 4 threads with a socket each, 4 threads sharing one: 5 sockets in one more session.
mt_listed() { clients_are $((NCLIENTS + 1)) && sockets_are $((2 * NCLIENTS + 5)); }
mt_listed_wait() {
    wait_until 10 mt_listed && return 0
    echo "shmnetctl: $(nclients) clients, $(nsockets) sockets; mt client: $(head -c 300 "$T/mt.err")"
    return 1
}
check mt_client_listed mt_listed_wait

kill_some() {
    local i
    for ((i = 0; i < NKILL; i++)); do
        kill -KILL "${BG_PID[tr$i]}"
    done
    kill -KILL "${BG_PID[mt]}"
    for ((i = 0; i < NKILL; i++)); do
        bg_wait "tr$i"
        (($? == 137)) || return 1
    done
    bg_wait mt
    (($? == 137))
}
check sigkill_mid_traffic kill_some
left=$((NCLIENTS - NKILL))
check sessions_of_killed_clients_gone wait_until 10 clients_are "$left"
check sockets_of_killed_clients_gone wait_until 10 sockets_are $((2 * left))

# The survivors are still moving data: a fresh client's echo works meanwhile, and each
# survivor, stopped with SIGTERM, reports its count with every echo verified.
check new_client_during_traffic timeout 60 "$PROGS/udp_echo_client" -r 2 -s "$SIZES" "$PEER_IP" 7001
survivors_intact() {
    local i bad=0 rc total=0
    for ((i = NKILL; i < NCLIENTS; i++)); do
        kill -TERM "${BG_PID[tr$i]}"
    done
    for ((i = NKILL; i < NCLIENTS; i++)); do
        bg_wait "tr$i"
        rc=$?
        if ((rc != 0)) || ! [[ $REST =~ ^OK\ ([0-9]+)$ ]] || ((BASH_REMATCH[1] < 8)); then
            echo "tr$i: rc $rc: $REST $(tail -c 200 "$T/tr$i.err")"
            bad=$((bad + 1))
        else
            total=$((total + BASH_REMATCH[1]))
        fi
    done
    echo "$left survivors, $bad bad, $total echoes verified"
    ((bad == 0))
}
check survivors_complete_intact survivors_intact

check all_sessions_gone wait_until 10 clients_are 0
no_sockets() { [[ -z $(ctl sockets) ]]; }
check all_sockets_gone wait_until 10 no_sockets

# ---- 3: a multithreaded client that completes ----
mt_ok() {
    local out
    out=$(timeout 120 "$PROGS/udp_mt_client" -o 6 -S 6 -n 300 -l 1200 "$PEER_IP" 7002)
    echo "$out"
    [[ $out == "OK 3600" ]]
}
check multithreaded_client_completes mt_ok

stats_ok() { ctl stats >/dev/null; }
check daemon_still_answers stats_ok
for ((i = 0; i < NSERVERS; i++)); do
    kill "${BG_PID[kecho$i]}"
done
harness_stop_daemon
