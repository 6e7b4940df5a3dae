#!/usr/bin/env bash
# Two workers (daemon.workers = 2, docs/workers.md) on a multi-queue TAP (or, with
# SHMNET_TEST_BACKEND=af_xdp, a veth pair with two queues and one AF_XDP socket each): both serve a
# queue (stats per worker), sessions go to both, datagrams that the kernel puts on the
# other worker's queue cross over (steer_in = steer_out > 0) and every echo comes back
# intact, fragmented datagrams too; a port one worker holds cannot be bound on the other
# without SO_REUSEADDR on both; the kernel's TCP connections to a listener all complete.
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"
harness_init wrk

PROGS=${PROGS:-$(dirname "$SHMNETD")/tests/progs}
for p in udp_echo_server tcp_xfer; do
    [[ -x $PROGS/$p ]] || { fail workers_setup "$PROGS/$p not built (make progs)"; exit 1; }
done
export SHMNET_SOCKET=$SOCK
HARNESS_WORKERS=2 # the veth (af_xdp) gets a queue per worker too
harness_write_conf "$T/d.conf"
harness_start_daemon "$T/d.conf" || exit 1
harness_peer_ns || { fail peer_ns "cannot set up the peer namespace"; exit 1; }

two_workers() {
    grep -q "running: 1 interface(s), 2 worker(s)" "$DLOG" &&
        ctl stats | grep -q '^worker 0: nic_rx_frames' && ctl stats | grep -q '^worker 1: nic_rx_frames'
}
check two_workers_with_stats two_workers
check kernel_sees_two_queues nsx test -d "/sys/class/net/$TAP/queues/tx-1"

# Two echo servers, consecutive sessions: one on each worker.
start_echo() { # NAME PORT [FLAGS]
    "$PROGS/udp_echo_server" ${3:+"$3"} "$2" >"$T/$1.out" 2>"$T/$1.err" &
    HARNESS_PIDS+=("$!")
    wait_until 5 grep -q "READY $2" "$T/$1.out" || { cat "$T/$1.err"; return 1; }
}
two_echo() { start_echo e1 7300 && start_echo e2 7301; }
check echo_servers two_echo

# 64 flows (source ports) to each server, sizes up to a fragmented 3000 bytes.
flows() {
    nsx "$PY" - "$DAEMON_IP" <<'EOF'
import os, socket, sys
bad = 0
for port in (7300, 7301):
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(64)]
    for i, s in enumerate(socks):
        s.settimeout(3)
        d = os.urandom(1 + (i * 97) % 3000)
        s.sendto(d, (sys.argv[1], port))
        try:
            e, _ = s.recvfrom(65535)
        except socket.timeout:
            e = None
        if e != d:
            bad += 1
        s.close()
print("mismatched or missing echoes:", bad)
sys.exit(1 if bad else 0)
EOF
}
check udp_128_flows_echoed flows
steered() {
    local i o
    i=$(stat steer_in) o=$(stat steer_out)
    echo "steer_in $i steer_out $o; $(ctl stats | grep '^worker')"
    ((i > 0 && i == o)) && [[ $(stat steer_drop_full) == 0 ]]
}
check datagrams_crossed_between_workers steered
# The kernel spread the flows over both queues (RSS), so both workers received frames.
both_rx() {
    local w v
    for w in 0 1; do
        v=$(ctl stats | sed -n "s/^worker $w: .*nic_rx_frames \([0-9]*\).*/\1/p")
        echo "worker $w: nic_rx_frames ${v:-?}"
        [[ $v =~ ^[0-9]+$ ]] && ((v > 0)) || return 1
    done
}
check both_queues_received both_rx

# A port held on one worker: the other worker's session cannot take it.
held() {
    start_echo h1 7400 || return 1
    local out rc
    out=$(timeout 5 "$PROGS/udp_echo_server" 7400 2>&1)
    rc=$?
    echo "second bind: rc $rc: $out"
    ((rc == 1)) && [[ $out == *"Address already in use"* ]]
}
check bound_port_is_exclusive_across_workers held
shared() {
    start_echo s1 7401 -R && start_echo s2 7401 -R || return 1
    [[ $(ctl sockets | grep -c "local 0.0.0.0:7401 ") == 2 ]]
}
check reuseaddr_port_shared_across_workers shared

# The kernel opens 200 connections to one listening socket.
tcp_many() {
    "$PROGS/tcp_xfer" server 7500 200 >"$T/srv.out" 2>&1 &
    local pid=$!
    HARNESS_PIDS+=("$pid")
    wait_until 5 sh -c "'$SHMNETCTL' -s '$SOCK' sockets | grep -q ':7500 '" || return 1
    nsx "$PY" - "$DAEMON_IP" <<'EOF' || return 1
import hashlib, socket, sys
ok = 0
for i in range(200):
    s = socket.create_connection((sys.argv[1], 7500), timeout=10)
    d = bytes([i % 256]) * (1000 + i)
    s.sendall(d)
    s.shutdown(socket.SHUT_WR)
    back = b""
    while True:
        b = s.recv(4096)
        if not b:
            break
        back += b
    s.close()
    # tcp_xfer's digest-echo: every byte XOR 0x5a, then the SHA-256 of all of it.
    if back[:len(d)] == bytes(x ^ 0x5a for x in d) and \
            back[len(d):].strip() == hashlib.sha256(d).hexdigest().encode():
        ok += 1
print("connections with the right digest:", ok)
sys.exit(0 if ok == 200 else 1)
EOF
    wait "$pid"
}
check tcp_200_connections_to_one_listener tcp_many
# The listener accepts on every worker: each took the connections its flow hash picks.
accepted_on_both() {
    local w v
    for w in 0 1; do
        v=$(ctl stats | sed -n "s/^worker $w: .*tcp_passive_opens \([0-9]*\).*/\1/p")
        echo "worker $w: tcp_passive_opens ${v:-?}"
        [[ $v =~ ^[0-9]+$ ]] && ((v >= 20)) || return 1
    done
}
check listener_accepts_on_every_worker accepted_on_both
