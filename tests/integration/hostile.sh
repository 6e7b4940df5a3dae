#!/usr/bin/env bash
# Hostile clients: processes that attach raw (shm/shm.h) and write random bytes over their
# whole region (headers, rings, socket table, fifos), post plausible and absurd requests and
# ring the doorbell, for several seconds, while normal clients do UDP echo with content
# checks. The daemon must stay up (ping, shmnetctl stats), the normal traffic must complete
# intact, the hostile clients must be disconnected (log) and the state page must not be
# writable by a client. With the ASan build the final stop checks the log for reports.
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"
harness_init hos

PROGS=${PROGS:-$(dirname "$SHMNETD")/tests/progs}
HOSTILE_SECONDS=${HOSTILE_SECONDS:-6}
NHOSTILE=3
NNORMAL=4
for p in hostile udp_echo_client udp_traffic; do
    if [[ ! -x $PROGS/$p ]]; then
        fail hos_setup "$PROGS/$p not built (make progs)"
        exit 1
    fi
done
export SHMNET_SOCKET=$SOCK

harness_write_conf "$T/d.conf"
harness_start_daemon "$T/d.conf" || exit 1
harness_peer_ns || { fail peer_ns "cannot set up the peer namespace"; exit 1; }

KECHO_PY=$(cd "$(dirname "$0")/../lib" && pwd)/kecho.py
mkfifo "$T/kecho.out"
ip netns exec "$NS" "$PY" "$KECHO_PY" 7000 >"$T/kecho.out" 2>"$T/kecho.err" &
KECHO=$!
HARNESS_PIDS+=("$KECHO")
exec {KFD}<"$T/kecho.out"
kecho_ready() { read -r -t 10 -u "$KFD" line && [[ $line == READY ]]; }
check kernel_echo_ready kecho_ready || exit 1

# The hostile processes and, at the same time, normal clients: udp_traffic (continuous,
# content checked, stopped with SIGTERM after the attack) and repeated echo clients with
# the full size list.
storm() {
    local i hp=() tp=() rc bad=0 out runs=0
    for ((i = 0; i < NHOSTILE; i++)); do
        "$PROGS/hostile" "$HOSTILE_SECONDS" $((i * 7919 + 17)) >"$T/hostile$i.out" 2>&1 &
        hp+=("$!")
    done
    for ((i = 0; i < NNORMAL; i++)); do
        "$PROGS/udp_traffic" -w 4 -l $((200 + 300 * i)) "$PEER_IP" 7000 >"$T/traffic$i.out" 2>&1 &
        tp+=("$!")
    done
    # echo clients back to back for as long as the hostile processes run
    while kill -0 "${hp[0]}" 2>/dev/null; do
        out=$(timeout 60 "$PROGS/udp_echo_client" -r 1 -s 0,1,1472,1473,8000,60000 "$PEER_IP" 7000)
        runs=$((runs + 1))
        if [[ $out != "OK 6 70946" ]]; then
            echo "echo client run $runs: $out"
            bad=$((bad + 1))
        fi
    done
    echo "echo client: $runs runs during the attack, $bad bad"
    for ((i = 0; i < NHOSTILE; i++)); do
        wait "${hp[i]}"
        rc=$?
        echo "hostile $i: rc $rc: $(tr '\n' ' ' <"$T/hostile$i.out")"
        ((rc == 0)) || bad=$((bad + 1))
    done
    for ((i = 0; i < NNORMAL; i++)); do
        kill -TERM "${tp[i]}"
        wait "${tp[i]}"
        rc=$?
        out=$(cat "$T/traffic$i.out")
        echo "traffic $i: rc $rc: $(tr '\n' ' ' <<<"$out")"
        if ((rc != 0)) || ! grep -Eq '^OK [1-9][0-9]*$' <<<"$out"; then
            bad=$((bad + 1))
        fi
    done
    ((bad == 0 && runs > 0))
}
check normal_traffic_intact_under_attack storm

state_ro() { cat "$T"/hostile*.out | grep -c '^ok state_page_read_only' | grep -qx "$NHOSTILE"; }
check state_page_not_writable state_ro
disconnected() {
    local n
    n=$(grep -c 'disconnecting it' "$DLOG")
    echo "hostile clients disconnected $n times; log excerpt:"
    grep 'disconnecting it' "$DLOG" | sed 's/.*: client/client/' | sort | uniq -c | sort -rn | head -n 8
    # Random scribbling is not certain to produce an impossible index within the run for
    # every client (a plausible-looking region is served normally), so at least one
    # detection is required; staying up and serving the others is checked separately.
    ((n >= 1))
}
check hostile_clients_disconnected disconnected
alive() { kill -0 "$DPID"; }
check daemon_alive alive
check daemon_answers_ping nsx ping -c 3 -W 2 "$DAEMON_IP"
stats_ok() { ctl stats | grep -q '^udp_rx '; }
check shmnetctl_stats_works stats_ok
no_sessions() { [[ -z $(ctl clients) && -z $(ctl sockets) ]]; }
check hostile_sessions_released wait_until 10 no_sessions
check echo_after_attack timeout 60 "$PROGS/udp_echo_client" -r 2 "$PEER_IP" 7000

kill "$KECHO"
harness_stop_daemon
