#!/usr/bin/env bash
# TCP segmentation offload on the TAP (interfaces[].tso = true, IFF_VNET_HDR): shmnet hands
# 60000-byte super-segments to the kernel, which cuts and checksums them. Checked with
# SHA-256 in both directions against the kernel peer; small frames (ping, ARP) still work.
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"
harness_init tso
harness_tap_only "TSO through the TAP virtio header"

PROGS=${PROGS:-$(dirname "$SHMNETD")/tests/progs}
XFER=$PROGS/tcp_xfer
[[ -x $XFER ]] || { fail tso_setup "$XFER not built (make progs)"; exit 1; }
export SHMNET_SOCKET=$SOCK
harness_write_conf "$T/d.conf" "tso = true;"
harness_start_daemon "$T/d.conf" || exit 1
harness_peer_ns || { fail peer_ns "cannot set up the peer namespace"; exit 1; }

cat >"$T/peer.py" <<'PYEOF'
import hashlib, socket, sys
port = int(sys.argv[2])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.200.0.1", port))
s.listen(4)
s.settimeout(60)
print("READY", flush=True)
c, _ = s.accept()
c.settimeout(120)
h, n = hashlib.sha256(), 0
while True:
    d = c.recv(1 << 20)
    if not d:
        break
    h.update(d)
    n += len(d)
print("recv", n, h.hexdigest(), flush=True)
c.close()
PYEOF

peer() { # MODE PORT [N] -> fd PEER_FD with the peer's stdout, waits for READY
    exec {PEER_FD}< <(ip netns exec "$NS" /usr/bin/python3 "$T/peer.py" "$@" 2>&1)
    local line
    read -r -t 10 -u "$PEER_FD" line && [[ $line == READY ]]
}

send_big() {
    peer sink 7300 || return 1
    local out want got
    out=$("$XFER" connect "$PEER_IP" 7300 --send $((50 << 20)) 2>&1) || { echo "$out"; return 1; }
    want=$(awk '/ sent /{ print $3, $4 }' <<<"$out")
    read -r -t 120 -u "$PEER_FD" got
    echo "shmnet sent: $want; kernel got: $got; $(grep time <<<"$out")"
    [[ "recv $want" == "$got" ]]
}
check tso_send_50MiB_intact send_big

ping_ok() { nsx ping -c 3 -W 1 "$DAEMON_IP" | grep -q ' 0% packet loss'; }
check small_frames_still_work ping_ok

counters() { [[ $(stat nic_tx_drop_error) == 0 ]]; }
check no_tx_errors counters

# The other way: the kernel sends GSO frames (64 KiB) with partial checksums to the daemon.
recv_big() {
    head -c $((20 << 20)) /dev/urandom >"$T/rand"
    "$XFER" listen 7301 --recv >"$T/x.out" 2>&1 &
    local xp=$!
    HARNESS_PIDS+=("$xp")
    wait_until 5 bash -c "'$SHMNETCTL' -s '$SOCK' sockets | grep -q 'LISTEN .*:7301 '" || return 1
    nsx /usr/bin/python3 -c "
import socket
s = socket.create_connection(('$DAEMON_IP', 7301), timeout=60)
s.sendall(open('$T/rand', 'rb').read())
s.shutdown(socket.SHUT_WR)
s.recv(1)
s.close()"
    wait "$xp"
    local want
    want=$(sha256sum "$T/rand" | cut -d' ' -f1)
    grep " recv " "$T/x.out"
    grep -q " recv $((20 << 20)) $want" "$T/x.out"
}
check tso_receive_20MiB_intact recv_big

# A pinned worker (daemon.cpus) with rps_cpus = "auto" (the default): while the worker is
# busy, the TAP's queue steers the kernel's work on the frames we write to the CPUs the
# worker is not on; idle, it is back inline (0). The same transfer, intact, either way.
restart_pinned() {
    harness_stop_daemon >/dev/null
    HARNESS_DAEMON_OPTS="cpus = [ 0 ];" harness_write_conf "$T/d2.conf" "tso = true;"
    harness_start_daemon "$T/d2.conf" || return 1
    ip link set "$TAP" netns "$NS" && ip -n "$NS" addr add "$PEER_IP/24" dev "$TAP" &&
        ip -n "$NS" link set "$TAP" up
}
rps_mask() { nsx cat "/sys/class/net/$TAP/queues/rx-0/rps_cpus"; }
rps_idle() {
    local m
    m=$(rps_mask | tr -d ,)
    [[ $(stat nic_rps_on) == 0 && -n $m ]] && ((16#$m == 0))
}
rps_auto() {
    local want
    want=$("$PY" -c 'import os; print(format(sum(1 << c for c in os.sched_getaffinity(0) if c), "x"))')
    grep "backend up" "$DLOG"
    echo "after the transfer: rps_cpus $(rps_mask), nic_rps_switch $(stat nic_rps_switch)"
    if [[ $want == 0 ]]; then # one CPU: nothing to steer to
        ! grep -q "rps_cpus" "$DLOG"
    else
        grep -q "tap backend up, rps_cpus $want when busy" "$DLOG" && wait_until 5 rps_idle
    fi
}
if restart_pinned; then
    check tso_receive_20MiB_intact_pinned recv_big
    check rps_cpus_auto_with_a_pinned_worker rps_auto
else
    fail rps_restart "daemon with daemon.cpus = [ 0 ] did not come up"
fi
