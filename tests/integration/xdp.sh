#!/usr/bin/env bash
# af_xdp backend on a veth pair: shmnetd owns $TAP (root namespace) through an AF_XDP socket
# and the steering program; the kernel side ${TAP}p is in $NS with 10.200.0.1/24. ICMP both
# ways, a flood with the UMEM frame accounting checked, UDP echo, the host still using the
# same interface (frames not ours pass), SIGKILL and restart, native mode, no XDP program
# left behind, and the error for a missing interface.
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"
harness_init xdp
harness_tap_only "sets up its own AF_XDP topology; run once, with the TAP suite"

PROGS=${PROGS:-$(dirname "$SHMNETD")/tests/progs}
PEER="${TAP}p"
HOST_IP=10.200.0.3 # the root namespace's own address on $TAP: traffic the program passes
export SHMNET_SOCKET=$SOCK

# xdp_conf FILE MODE [NAME] [EXTRA]
xdp_conf() {
    cat >"$1" <<EOF
daemon = { socket = "$SOCK"; log_level = "info"; };
interfaces = ( { name = "${3:-$TAP}"; backend = "af_xdp"; xdp_mode = "$2";
                 mac = "$DAEMON_MAC"; mtu = 1500; address = "$DAEMON_IP/24"; ${4:-} } );
EOF
}

# Prints the XDP attachment of $TAP (empty when there is none).
# (Spaces around the flag: the device's own name contains "xdp".)
xdp_attached() {
    ip link show dev "$TAP" | grep -Eo ' xdp(generic|drv|offload)? |prog/xdp id [0-9]+ name [a-z_]+' |
        sed 's/^ //; s/ $//'
}
no_xdp() {
    local a
    a=$(xdp_attached)
    [[ -z $a ]] || { echo "still attached: $a"; return 1; }
}

setup() {
    ip link add "$TAP" type veth peer name "$PEER" || return 1
    HARNESS_DEVS+=("$TAP")
    ip netns add "$NS" || return 1
    HARNESS_NETNS+=("$NS")
    nsx sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    sysctl -qw "net.ipv6.conf.$TAP.disable_ipv6=1"
    ip link set "$PEER" netns "$NS" &&
        ip -n "$NS" link set lo up &&
        ip -n "$NS" addr add "$PEER_IP/24" dev "$PEER" &&
        ip -n "$NS" link set "$PEER" up &&
        ip addr add "$HOST_IP/32" dev "$TAP" &&
        ip link set "$TAP" up &&
        ip route add "$PEER_IP/32" dev "$TAP" src "$HOST_IP" || return 1
    # The peer kernel would send partial checksums (veth TX offload) that AF_XDP cannot
    # flag, and GSO super-frames: a real NIC completes both before the wire (docs/nic.md).
    nsx ethtool -K "$PEER" tx off >/dev/null
}
command -v ethtool >/dev/null || { fail xdp_setup "ethtool not installed (make deps)"; exit 1; }
setup || { fail xdp_setup "cannot create the veth pair and namespace"; exit 1; }

xdp_conf "$T/copy.conf" copy
harness_start_daemon "$T/copy.conf" || exit 1

generic_attached() { xdp_attached | grep -q xdpgeneric && xdp_attached | grep -q shmnet_steer; }
check copy_mode_program_attached generic_attached
check kernel_pings_daemon nsx ping -c 3 -W 2 "$DAEMON_IP"

ctl_ping() {
    local out
    out=$(ctl ping "$PEER_IP" 3 2>&1) || { echo "$out"; return 1; }
    echo "$out"
    grep -q '3 sent, 3 received' <<<"$out"
}
check shmnetctl_ping_peer ctl_ping

# Frames for the root namespace's address (ARP broadcast for another IP, unicast to the
# kernel's MAC) pass: the host keeps working on the interface shmnet uses.
check host_still_answers_on_interface nsx ping -c 3 -W 2 "$HOST_IP"

flood() {
    local out
    out=$(nsx ping -f -c 2000 -q -W 2 "$DAEMON_IP" 2>&1)
    echo "$out"
    grep -q ' 0% packet loss' <<<"$out"
}
check flood_2000_no_loss flood

# Every UMEM frame is in exactly one place: 2 * rx_ring + tx_ring = 4352 with the defaults
# (af_xdp: rx_ring 2048, tx_ring 256).
frames_accounted() {
    local s sum=0 k v
    s=$(ctl stats) || return 1
    for k in xdp_umem_free xdp_umem_fill xdp_umem_rx xdp_umem_tx xdp_umem_comp; do
        v=$(awk -v n="$k" '$1 == n { print $2 }' <<<"$s")
        echo "$k $v"
        sum=$((sum + v))
    done
    echo "sum $sum"
    ((sum == 2 * 2048 + 256))
}
check umem_frames_accounted frames_accounted
no_drops() {
    local k v bad=0
    for k in nic_rx_drop_nobuf nic_rx_drop_error nic_tx_drop_full nic_tx_drop_error \
        xdp_rx_drop_kernel xdp_rx_drop_ring_full xdp_tx_drop_invalid; do
        v=$(stat "$k") || return 1
        echo "$k $v"
        ((v == 0)) || bad=1
    done
    ((bad == 0))
}
check no_nic_drops no_drops

udp_echo() {
    "$PROGS/udp_echo_server" -n 4 7000 >"$T/echo.out" 2>"$T/echo.err" &
    local pid=$! rc
    HARNESS_PIDS+=("$pid")
    wait_until 5 grep -q READY "$T/echo.out" || { cat "$T/echo.err"; return 1; }
    nsx "$PY" - "$DAEMON_IP" 7000 <<'EOF'
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
for size in (0, 1, 1472, 8000):
    d = os.urandom(size)
    s.sendto(d, (sys.argv[1], int(sys.argv[2])))
    e, a = s.recvfrom(65535)
    if e != d:
        sys.exit(f"size {size}: echo differs ({len(e)} bytes)")
print("OK")
EOF
    rc=$?
    ((rc == 0)) || kill "$pid" 2>/dev/null # it waits for 4 datagrams otherwise
    wait "$pid" || rc=1
    cat "$T/echo.out"
    return $rc
}
if [[ -x $PROGS/udp_echo_server ]]; then
    check udp_echo udp_echo
else
    skip udp_echo "$PROGS/udp_echo_server not built (make progs)"
fi

# SIGKILL leaves the program attached (nothing can run our close); the next daemon
# replaces it.
kill -KILL "$DPID"
wait "$DPID" 2>/dev/null
DPID=""
stale_left() { xdp_attached | grep -q shmnet_steer; }
check sigkill_leaves_stale_program stale_left
stale_id=$(xdp_attached | grep -o 'prog/xdp id [0-9]*')
harness_start_daemon "$T/copy.conf" || exit 1
one_prog() {
    local a
    a=$(xdp_attached)
    echo "before: $stale_id; now: $a"
    [[ $(grep -c 'prog/xdp' <<<"$a") == 1 ]] && ! grep -q "$stale_id " <<<"$a"
}
check restart_replaces_stale_program one_prog
check kernel_pings_daemon_after_restart nsx ping -c 3 -W 2 "$DAEMON_IP"
check shmnetctl_ping_after_restart ctl_ping
harness_stop_daemon
check no_xdp_after_stop no_xdp

# Native (driver) mode: veth has it.
xdp_conf "$T/native.conf" native
harness_start_daemon "$T/native.conf" || exit 1
native_attached() { xdp_attached | grep -qx xdp && xdp_attached | grep -q shmnet_steer; }
check native_mode_program_attached native_attached
check native_kernel_pings_daemon nsx ping -c 3 -W 2 "$DAEMON_IP"
check native_shmnetctl_ping ctl_ping
# xdp_zerocopy = "auto": veth has no zero-copy, so the bind falls back to XDP_COPY.
check native_zerocopy_auto_falls_back grep -q "af_xdp backend up, native, frames copied by the kernel" "$DLOG"
harness_stop_daemon
check no_xdp_after_native_stop no_xdp

# Zero-copy demanded where it cannot be had: a clear error, nothing left attached.
zc_refused() {
    local out rc
    xdp_conf "$T/zc.conf" native "" 'xdp_zerocopy = "on";'
    out=$(timeout 10 "$SHMNETD" -c "$T/zc.conf" 2>&1)
    rc=$?
    echo "exit $rc: $out"
    ((rc != 0 && rc != 124)) && grep -q "in zero-copy mode" <<<"$out" && no_xdp
}
check zerocopy_on_refused_by_veth zc_refused
zc_copy_conf() {
    local out rc
    xdp_conf "$T/zcc.conf" copy "" 'xdp_zerocopy = "on";'
    out=$(timeout 10 "$SHMNETD" -c "$T/zcc.conf" 2>&1)
    rc=$?
    echo "exit $rc: $out"
    ((rc != 0 && rc != 124)) && grep -q 'xdp_zerocopy: "on" needs the driver' <<<"$out"
}
check zerocopy_on_with_copy_mode_is_config_error zc_copy_conf

missing_iface() {
    local out rc
    xdp_conf "$T/missing.conf" auto "nosuch$$"
    out=$(timeout 10 "$SHMNETD" -c "$T/missing.conf" 2>&1)
    rc=$?
    echo "exit $rc: $out"
    ((rc != 0 && rc != 124)) && grep -q "no interface 'nosuch$$'" <<<"$out"
}
check missing_interface_error missing_iface
