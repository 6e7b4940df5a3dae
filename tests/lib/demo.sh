#!/usr/bin/env bash
# `make run`: shmnetd on the TAP "shmdemo0", its kernel side in the namespace "shmnet-demo"
# as 10.200.0.1/24; the daemon is 10.200.0.2. Ctrl-C (or the daemon's exit) stops the
# daemon and removes the namespace and the temp dir.
#
#   tests/lib/demo.sh [BUILD_DIR=build]
set -uo pipefail

LIB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$LIB/../.." && pwd)
BUILD=${1:-build}
[[ $BUILD == /* ]] || BUILD="$ROOT/$BUILD"
SHMNETD="$BUILD/shmnetd"
SHMNETCTL="$BUILD/shmnetctl"
NS=shmnet-demo
TAP=shmdemo0
PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3

die() { echo "demo: $*" >&2; exit 1; }

((EUID == 0)) || die "needs root (TAP device, network namespace): sudo make run"
[[ -x $SHMNETD && -x $SHMNETCTL ]] || die "$SHMNETD or $SHMNETCTL not built (make)"
if ip netns list | grep -qw "$NS"; then
    die "namespace $NS exists: another demo running? If not: ip netns del $NS"
fi
if ip link show "$TAP" >/dev/null 2>&1; then
    die "device $TAP exists: another demo running? If not: ip link del $TAP"
fi

T=$(mktemp -d /tmp/shmnet-demo.XXXXXX)
SOCK="$T/shmnetd.sock"
DPID=""
NPID=""
WPID=""
NS_MADE=0

cleanup() {
    local rc=${1:-0}
    trap - EXIT INT TERM HUP
    echo
    if [[ -n $DPID ]] && kill -0 "$DPID" 2>/dev/null; then
        echo "demo: stopping shmnetd"
        kill -TERM "$DPID" 2>/dev/null
        wait "$DPID"
        rc=$?
    fi
    [[ -n $NPID ]] && kill "$NPID" 2>/dev/null && wait "$NPID" 2>/dev/null
    [[ -n $WPID ]] && kill "$WPID" 2>/dev/null && wait "$WPID" 2>/dev/null
    ((NS_MADE)) && ip netns del "$NS" 2>/dev/null && echo "demo: namespace $NS removed"
    ip link del "$TAP" 2>/dev/null
    rm -rf "$T"
    exit "$rc"
}
trap 'cleanup $?' EXIT
trap 'cleanup 0' INT TERM HUP

cat >"$T/shmnetd.conf" <<EOF
# shmnet demo (make run)
daemon = { socket = "$SOCK"; log_level = "info"; };
interfaces = ( { name = "$TAP"; backend = "tap"; mac = "02:00:00:00:00:02"; mtu = 1500;
                 address = "10.200.0.2/24"; } );
routes = ( { to = "0.0.0.0/0"; via = "10.200.0.1"; } );
EOF

# sd_notify listener: READY=1 arrives on the fifo.
mkfifo "$T/notify.fifo"
exec {NFD}<>"$T/notify.fifo"
"$PY" "$LIB/notify_wait.py" "$T/notify.sock" >"$T/notify.fifo" &
NPID=$!
if ! read -r -t 5 -u "$NFD" line || [[ $line != LISTENING ]]; then
    die "notify listener did not start"
fi

NOTIFY_SOCKET="$T/notify.sock" "$SHMNETD" -c "$T/shmnetd.conf" &
DPID=$!
ready=0
end=$((SECONDS + 10))
while ((SECONDS <= end)); do
    if read -r -t 0.5 -u "$NFD" line; then
        [[ $line == READY=1 ]] && { ready=1; break; }
    elif ! kill -0 "$DPID" 2>/dev/null; then
        break
    fi
done
((ready)) || die "shmnetd did not become ready"

ip netns add "$NS" || die "cannot create namespace $NS"
NS_MADE=1
ip -n "$NS" link set lo up
if ! { ip link set "$TAP" netns "$NS" && ip -n "$NS" addr add 10.200.0.1/24 dev "$TAP" &&
    ip -n "$NS" link set "$TAP" up; }; then
    die "cannot move $TAP into $NS"
fi

# A web server on the kernel side, for the LD_PRELOAD example.
mkdir -p "$T/www"
echo "hello from the Linux kernel's side of the TAP" >"$T/www/hello.txt"
ip netns exec "$NS" "$PY" -m http.server -d "$T/www" -b 10.200.0.1 8000 >/dev/null 2>&1 &
WPID=$!
PRELOAD=$(cd "$(dirname "$SHMNETD")" && pwd)/libshmnet_preload.so
for _ in 1 2 3 4 5 6 7 8 9 10; do
    ip netns exec "$NS" "$PY" -c 'import socket; socket.create_connection(("10.200.0.1", 8000), 1)' \
        2>/dev/null && break
    sleep 0.2
done
if got=$(SHMNET_SOCKET=$SOCK LD_PRELOAD=$PRELOAD curl -s --max-time 5 http://10.200.0.1:8000/hello.txt); then
    echo "demo: curl under LD_PRELOAD, through shmnet, got: $got"
fi

cat <<EOF

shmnet demo is running: shmnetd (pid $DPID) is 10.200.0.2 on $TAP; the Linux kernel in
the namespace $NS is 10.200.0.1 on the other end of the TAP. Try, in another shell:

    ip netns exec $NS ping 10.200.0.2
    ip netns exec $NS ping -s 8000 -c 3 10.200.0.2        # fragmented both ways
    SHMNET_SOCKET=$SOCK $SHMNETCTL stats
    SHMNET_SOCKET=$SOCK $SHMNETCTL neigh
    SHMNET_SOCKET=$SOCK $SHMNETCTL ping 10.200.0.1 3
    SHMNET_SOCKET=$SOCK $SHMNETCTL capture start /tmp/demo.pcap   (then: capture stop)

Any program on shmnet (a web server runs on the kernel side at 10.200.0.1:8000):

    SHMNET_SOCKET=$SOCK LD_PRELOAD=$PRELOAD curl http://10.200.0.1:8000/hello.txt
    SHMNET_SOCKET=$SOCK $SHMNETCTL sockets     # while a program runs

Press Ctrl-C to stop (daemon stopped, namespace removed).
EOF

wait "$DPID"
rc=$?
DPID=""
echo "demo: shmnetd exited with status $rc"
cleanup "$rc"
