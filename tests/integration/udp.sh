#!/usr/bin/env bash
# UDP through libshmnet against the Linux kernel across the TAP: echo both ways with sizes
# 0..60000 (fragmented above 1472), connected and unconnected, ECONNREFUSED from ICMP,
# a multithreaded client, shmnetctl sockets while open and after exit, SO_REUSEADDR and
# EADDRINUSE, ephemeral ports in the configured range, the receive-buffer limit (exact
# delivered/dropped counts and udp_drop_rcvbuf).
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"
harness_init udp

PROGS=${PROGS:-$(dirname "$SHMNETD")/tests/progs}
SIZES=0,1,1472,1473,8000,60000
EPH_MIN=40000
EPH_MAX=40099
RCVBUF=212992 # the daemon's default datagram fifo (clients.rcvbuf)

for p in udp_echo_client udp_echo_server udp_refused udp_mt_client; do
    if [[ ! -x $PROGS/$p ]]; then
        fail udp_setup "$PROGS/$p not built (make progs)"
        exit 1
    fi
done
export SHMNET_SOCKET=$SOCK

# ---- background processes with a line protocol on stdout (and stdin) ----
declare -A BG_PID BG_OUT BG_IN
# bg NAME CMD...: start CMD with stdin and stdout on fifos owned by this shell.
bg() {
    local name=$1 ofd ifd
    shift
    mkfifo "$T/$name.out" "$T/$name.in"
    exec {ifd}<>"$T/$name.in"
    "$@" <"$T/$name.in" >"$T/$name.out" 2>"$T/$name.err" &
    BG_PID[$name]=$!
    HARNESS_PIDS+=("$!")
    exec {ofd}<"$T/$name.out"
    BG_OUT[$name]=$ofd
    BG_IN[$name]=$ifd
}
# bg_line NAME [TIMEOUT_S=10]: next stdout line of NAME into $LINE (1 on timeout/EOF).
bg_line() {
    LINE=""
    if ! read -r -t "${2:-10}" -u "${BG_OUT[$1]}" LINE; then
        echo "no line from $1 (stderr: $(tail -c 300 "$T/$1.err"))"
        return 1
    fi
    echo "$1: $LINE"
}
bg_say() { echo "$2" >&"${BG_IN[$1]}"; }
# bg_wait NAME: exit status of NAME; the rest of its stdout into $REST.
bg_wait() {
    local rc ofd=${BG_OUT[$1]} ifd=${BG_IN[$1]}
    wait "${BG_PID[$1]}"
    rc=$?
    REST=$(cat <&"$ofd")
    exec {ofd}<&- {ifd}>&-
    return $rc
}

harness_write_conf "$T/d.conf" "" "udp = { port_min = $EPH_MIN; port_max = $EPH_MAX; };"
harness_start_daemon "$T/d.conf" || exit 1
harness_peer_ns || { fail peer_ns "cannot set up the peer namespace"; exit 1; }

# Kernel-side echo server (big receive buffer: the native side may burst).
KECHO_PY=$(cd "$(dirname "$0")/../lib" && pwd)/kecho.py
# Kernel-side driver for the native echo server: sizes x rounds, each echo checked.
cat >"$T/kdrive.py" <<'EOF'
import os, socket, sys
host, port, sizes, rounds = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
n = b = 0
for r in range(rounds):
    for size in map(int, sizes.split(",")):
        d = os.urandom(size)
        s.sendto(d, (host, port))
        try:
            e, a = s.recvfrom(65535)
        except TimeoutError:
            sys.exit(f"FAIL round {r} size {size}: no echo within 5 s")
        if e != d or a != (host, port):
            sys.exit(f"FAIL round {r} size {size}: got {len(e)} bytes from {a}, equal={e == d}")
        n += 1
        b += size
print(f"OK {n} {b}")
EOF
# Kernel-side burst for the receive-buffer test: COUNT datagrams of LEN bytes, then wait
# for exactly EXPECT echoes (ids 0..EXPECT-1, in order, content checked) and no more.
cat >"$T/kburst.py" <<'EOF'
import socket, sys
host, port, count, size, expect = sys.argv[1], int(sys.argv[2]), *map(int, sys.argv[3:6])
def dg(i):
    return i.to_bytes(4, "big") + bytes((i * 7 + k) & 255 for k in range(size - 4))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)
for i in range(count):
    s.sendto(dg(i), (host, port))
print("SENT", flush=True)
s.settimeout(10)
for i in range(expect):
    e, a = s.recvfrom(65535)
    if e != dg(i):
        sys.exit(f"FAIL echo {i}: got id {int.from_bytes(e[:4], 'big')} len {len(e)}")
s.setblocking(False)
try:
    e, a = s.recvfrom(65535)
    sys.exit(f"FAIL an extra echo arrived: id {int.from_bytes(e[:4], 'big')}")
except BlockingIOError:
    pass
print(f"OK {expect}", flush=True)
EOF

bg kecho ip netns exec "$NS" "$PY" "$KECHO_PY" 7000
check kernel_echo_ready bg_line kecho

# ---- native client -> kernel echo ----
client_echo() {
    local out
    out=$(timeout 60 "$PROGS/udp_echo_client" "$@" "$PEER_IP" 7000)
    echo "$out"
    local n
    n=$(tr ',' '\n' <<<"$SIZES" | wc -l)
    [[ $out == "OK $((n * 3)) $((3 * (0 + 1 + 1472 + 1473 + 8000 + 60000)))" ]]
}
reasm0=$(stat ip4_reasm_ok)
check client_echo_sizes_unconnected client_echo -r 3 -s "$SIZES"
check client_echo_sizes_connected client_echo -c -r 3 -s "$SIZES"
reasm_grew() {
    local r
    r=$(stat ip4_reasm_ok)
    echo "ip4_reasm_ok $reasm0 -> $r"
    ((r >= reasm0 + 12)) # 8000 and 60000 came back fragmented, 3 rounds x 2 runs
}
check client_echo_reassembled_fragments reasm_grew

# ---- kernel -> native echo server ----
sockets_show() { ctl sockets | grep -q "local 0.0.0.0:7100 "; }
server_echo() {
    local total=$((2 * 6)) bytes=$((2 * (0 + 1 + 1472 + 1473 + 8000 + 60000)))
    bg srv1 "$PROGS/udp_echo_server" -n "$total" 7100 || return 1
    bg_line srv1 && [[ $LINE == "READY 7100" ]] || return 1
    wait_until 5 sockets_show || { echo "shmnetctl sockets: $(ctl sockets)"; return 1; }
    ctl sockets
    nsx "$PY" "$T/kdrive.py" "$DAEMON_IP" 7100 "$SIZES" 2 || return 1
    bg_wait srv1 || { echo "server: $REST"; return 1; }
    echo "server: $REST"
    [[ $REST == "DONE $total $bytes" ]]
}
check server_echo_sizes server_echo
# The server exited: its session and socket must go away (no event for it: poll).
no_sockets() { [[ -z $(ctl sockets) && -z $(ctl clients) ]]; }
check sockets_gone_after_exit wait_until 5 no_sockets

# ---- ICMP port unreachable -> ECONNREFUSED ----
check econnrefused timeout 60 "$PROGS/udp_refused" "$PEER_IP" 7999 7000

# ---- multithreaded client: own sockets and one shared socket ----
mt() {
    local out
    out=$(timeout 60 "$PROGS/udp_mt_client" -o 4 -S 4 -n 300 -l 700 "$PEER_IP" 7000) || { echo "$out"; return 1; }
    echo "$out"
    [[ $out == "OK 2400" ]]
}
check multithreaded_client mt

# ---- SO_REUSEADDR / EADDRINUSE ----
addrinuse() {
    local out rc
    bg a1 "$PROGS/udp_echo_server" 7200 && bg_line a1 && [[ $LINE == "READY 7200" ]] || return 1
    out=$(timeout 5 "$PROGS/udp_echo_server" -R 7200)
    rc=$?
    echo "second bind (-R, the first without): rc $rc: $out"
    kill "${BG_PID[a1]}"
    bg_wait a1
    ((rc == 1)) && [[ $out == "FAIL bind: Address already in use" ]]
}
check eaddrinuse_without_reuseaddr addrinuse
reuse_both() {
    bg r1 "$PROGS/udp_echo_server" -R 7201 && bg_line r1 && [[ $LINE == "READY 7201" ]] || return 1
    bg r2 "$PROGS/udp_echo_server" -R 7201 && bg_line r2 && [[ $LINE == "READY 7201" ]] || return 1
    local n
    n=$(ctl sockets | grep -c "local 0.0.0.0:7201 ")
    echo "sockets on 7201: $n"
    kill "${BG_PID[r1]}" "${BG_PID[r2]}"
    bg_wait r1
    bg_wait r2
    ((n == 2))
}
check reuseaddr_both_bind reuse_both

# ---- ephemeral ports from udp.port_min..port_max ----
ephemeral() {
    local i p ports=()
    for i in 1 2 3 4; do
        bg "e$i" "$PROGS/udp_echo_server" 0 && bg_line "e$i" || return 1
        p=${LINE#READY }
        ports+=("$p")
    done
    echo "ephemeral ports: ${ports[*]} (range $EPH_MIN-$EPH_MAX)"
    for i in 1 2 3 4; do
        kill "${BG_PID[e$i]}"
        bg_wait "e$i"
    done
    for p in "${ports[@]}"; do
        [[ $p =~ ^[0-9]+$ ]] && ((p >= EPH_MIN && p <= EPH_MAX)) || return 1
    done
    (($(printf '%s\n' "${ports[@]}" | sort -u | wc -l) == 4))
}
check ephemeral_ports_in_range ephemeral
# Port from the range seen on the wire too: the kernel echo reaches the client.
check ephemeral_port_client_echo timeout 60 "$PROGS/udp_echo_client" -s 100 "$PEER_IP" 7000

# ---- receive-buffer limit: exact delivered / dropped counts ----
# 300 datagrams of 1000 bytes at a socket that does not read: each takes
# 24 + 1000 (8-aligned) = 1024 bytes of the 212992-byte fifo, so exactly 208 fit.
rcvbuf_limit() {
    local count=300 len=1000 fit drop0 deliv0 d v
    fit=$((RCVBUF / (24 + (len + 7) / 8 * 8))) # the record header (shm/shm.h) and the payload
    drop0=$(stat udp_drop_rcvbuf) && deliv0=$(stat udp_delivered) || return 1
    bg hold "$PROGS/udp_echo_server" -H 7300 && bg_line hold && [[ $LINE == "READY 7300" ]] ||
        return 1
    bg burst ip netns exec "$NS" "$PY" "$T/kburst.py" "$DAEMON_IP" 7300 "$count" "$len" "$fit" || return 1
    bg_line burst && [[ $LINE == SENT ]] || return 1
    if ! wait_stat_ge udp_drop_rcvbuf $((drop0 + count - fit)) 10; then
        echo "udp_drop_rcvbuf $drop0 -> $(stat udp_drop_rcvbuf), expected +$((count - fit))"
        return 1
    fi
    d=$(($(stat udp_drop_rcvbuf) - drop0))
    v=$(($(stat udp_delivered) - deliv0))
    echo "fit $fit: delivered +$v, udp_drop_rcvbuf +$d"
    bg_say hold go
    bg_wait hold || { echo "server: $REST"; return 1; }
    echo "server: $REST"
    [[ $REST == "DRAINED $fit $((fit * len))" ]] || return 1
    bg_line burst && [[ $LINE == "OK $fit" ]] || return 1
    bg_wait burst || return 1
    ((d == count - fit && v == fit))
}
check rcvbuf_full_drops_counted rcvbuf_limit

# A datagram larger than the socket's SO_RCVBUF limit (8192 -> 16384 bytes) is dropped and
# counted; a small one after it is delivered. The small one is sent once the drop is
# counted: with several workers the big one's fragments may be reassembled on another
# worker and handed over, so it could arrive after a datagram sent later (UDP has no order).
cat >"$T/kbig.py" <<'EOF'
import socket, sys
host, port, what = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
if what == "big":
    s.sendto(b"B" * 20000, (host, port))
    sys.exit(0)
s.sendto(b"small-one", (host, port))
e, a = s.recvfrom(65535)
if e != b"small-one":
    sys.exit(f"FAIL got {len(e)} bytes")
print("OK")
EOF
big_dropped() {
    local drop0 d
    drop0=$(stat udp_drop_rcvbuf) || return 1
    bg big "$PROGS/udp_echo_server" -b 8192 -n 1 7400 && bg_line big || return 1
    nsx "$PY" "$T/kbig.py" "$DAEMON_IP" 7400 big || return 1
    wait_stat_ge udp_drop_rcvbuf $((drop0 + 1)) || { echo "no udp_drop_rcvbuf"; return 1; }
    nsx "$PY" "$T/kbig.py" "$DAEMON_IP" 7400 small || return 1
    bg_wait big || return 1
    echo "server: $REST"
    [[ $REST == "DONE 1 9" ]] || return 1
    d=$(($(stat udp_drop_rcvbuf) - drop0))
    echo "udp_drop_rcvbuf +$d"
    ((d == 1))
}
check datagram_over_so_rcvbuf_dropped big_dropped

check sockets_empty_at_end wait_until 5 no_sockets
kill "${BG_PID[kecho]}"
harness_stop_daemon
