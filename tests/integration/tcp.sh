#!/usr/bin/env bash
# TCP through libshmnet against the Linux kernel across the TAP (tests/progs/tcp_xfer.c on
# the shmnet side, python3 in the peer namespace). Every transfer is checked with SHA-256
# in both directions (send, SHUT_WR, read until EOF):
#   1 byte, 1 MiB and BIG bytes with shmnet as client and as server; 100 concurrent
#   connections of 64 KiB each way; a storm of 2000 short connections; ECONNREFUSED; a
#   reset by the kernel (SO_LINGER 0) -> ECONNRESET; a kernel reader that stalls 10 s; the
#   1 MiB and 50 MiB transfers again with the fault injector on (loss, reordering,
#   duplication, corruption both ways), and the 50 MiB ones once more with BBR.
# BIG is 50 MiB by default (the suite runs the ASan daemon); TCP_BIG_MB=200 with the
# release daemon (SHMNETD=build/shmnetd) runs the 200 MiB transfers. Throughput of the big
# transfers is printed on stderr.
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"
harness_init tcp

PROGS=${PROGS:-$(dirname "$SHMNETD")/tests/progs}
XFER=$PROGS/tcp_xfer
BIG_MB=${TCP_BIG_MB:-50}
if [[ ! -x $XFER ]]; then
    fail tcp_setup "$XFER not built (make progs)"
    exit 1
fi
export SHMNET_SOCKET=$SOCK

harness_write_conf "$T/d.conf"
harness_start_daemon "$T/d.conf" || exit 1
harness_peer_ns || { fail peer_ns "cannot set up the peer namespace"; exit 1; }

# ---- the kernel peer ----
cat >"$T/peer.py" <<'EOF'
import hashlib, socket, struct, sys, threading, time
mode = sys.argv[1]

def drain(c):
    h, n = hashlib.sha256(), 0
    while True:
        d = c.recv(1 << 20)
        if not d:
            return n, h.hexdigest()
        h.update(d)
        n += len(d)

def send_file(c, path):
    with open(path, "rb") as f:
        while True:
            d = f.read(1 << 20)
            if not d:
                return
            c.sendall(d)

def listener(port, rcvbuf=0):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind(("0.0.0.0", port))
    s.listen(1024)
    s.settimeout(60)  # a missing connection fails the check instead of hanging the script
    print("READY", flush=True)
    return s

if mode == "serve":  # serve PORT COUNT FILE|-: per connection read to EOF, send back, close
    port, count, path = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    s, lock, bad = listener(port), threading.Lock(), []
    def one(c):
        try:
            if path == "-":
                data = b""
                while True:
                    d = c.recv(65536)
                    if not d:
                        break
                    data += d
                c.sendall(data)
            else:
                n, h = drain(c)
                with lock:
                    print("recv %d %s" % (n, h), flush=True)
                send_file(c, path)
            c.close()
        except Exception as e:
            with lock:
                bad.append(repr(e))
    th = []
    for _ in range(count):
        try:
            c, _ = s.accept()
        except socket.timeout:
            bad.append("accept timed out")
            break
        c.settimeout(120)
        t = threading.Thread(target=one, args=(c,))
        t.start()
        th.append(t)
    for t in th:
        t.join()
    print("done errors %d %s" % (len(bad), " ".join(bad[:3])), flush=True)
    sys.exit(1 if bad else 0)
elif mode == "client":  # client IP PORT FILE: send FILE, SHUT_WR, read to EOF
    t0 = time.time()
    c = socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=120)
    send_file(c, sys.argv[4])
    c.shutdown(socket.SHUT_WR)
    n, h = drain(c)
    print("recv %d %s" % (n, h), flush=True)
    print("time %.3f" % (time.time() - t0), flush=True)
elif mode == "rst":  # rst PORT: read one line, then close with SO_LINGER 0 (RST)
    s = listener(int(sys.argv[2]))
    c, _ = s.accept()
    c.recv(100)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
elif mode == "stall":  # stall PORT SECONDS: accept, read nothing for SECONDS, then drain
    s = listener(int(sys.argv[2]), 65536)
    c, _ = s.accept()
    print("ACCEPTED", flush=True)
    time.sleep(float(sys.argv[3]))
    n, h = drain(c)
    print("recv %d %s" % (n, h), flush=True)
    c.close()
EOF

# Data files for the kernel's side, and the expected digests.
head -c 1 /dev/urandom >"$T/f1"
head -c $((1 << 20)) /dev/urandom >"$T/f1m"
head -c $((64 << 10)) /dev/urandom >"$T/f64k"
head -c $((BIG_MB << 20)) /dev/urandom >"$T/fbig"
if ((BIG_MB == 50)); then ln -s "$T/fbig" "$T/f50m"; else head -c $((50 << 20)) /dev/urandom >"$T/f50m"; fi
sha() { sha256sum "$1" | cut -d' ' -f1; }
fsize() { wc -c <"$1" | tr -d " "; } # (the harness defines stat: counters)

# peer_bg NAME ARGS...: the python peer in $NS, stdout to $T/NAME.out; waits for READY
# (listeners) when the first argument is a listening mode.
peer_bg() {
    local name=$1 fd line
    shift
    mkfifo "$T/$name.fifo"
    nsx "$PY" -u "$T/peer.py" "$@" >"$T/$name.fifo" 2>"$T/$name.err" &
    PEER_PID=$!
    HARNESS_PIDS+=("$PEER_PID")
    exec {fd}<"$T/$name.fifo"
    PEER_FD=$fd
    if [[ $1 != client ]]; then
        read -r -t 10 -u "$fd" line && [[ $line == READY ]] || {
            echo "peer $name not ready: $(cat "$T/$name.err")"
            return 1
        }
    fi
}
# peer_done: wait for the background peer, its remaining output into $PEER_OUT.
peer_done() {
    local rc
    PEER_OUT=$(cat <&"$PEER_FD")
    wait "$PEER_PID"
    rc=$?
    exec {PEER_FD}<&-
    return $rc
}

PORT=5000
next_port() { PORT=$((PORT + 1)); }

# shmnet connects, sends BYTES of the pattern, the kernel sends FILE back.
client_xfer() { # NAME BYTES FILE [TIMING]
    local name=$1 bytes=$2 file=$3 out t0 t1 sent_line
    next_port
    peer_bg "$name" serve "$PORT" 1 "$file" || return 1
    t0=$(date +%s%N)
    out=$("$XFER" connect "$PEER_IP" "$PORT" --send "$bytes" --recv 2>&1)
    local rc=$?
    t1=$(date +%s%N)
    peer_done
    XFER_OUT=$out
    echo "$out"
    echo "peer: $PEER_OUT"
    ((rc == 0)) || return 1
    sent_line=$(grep ' sent ' <<<"$out" | awk '{print $3, $4}')
    grep -q "^recv $sent_line\$" <<<"$PEER_OUT" || { echo "kernel got other bytes than sent"; return 1; }
    grep -q " recv $(fsize "$file") $(sha "$file")\$" <<<"$out" ||
        { echo "shmnet got other bytes than the kernel sent"; return 1; }
    [[ -n ${4:-} ]] && echo "$name: $(((bytes + $(fsize "$file")) / 1048576)) MiB in $(((t1 - t0) / 1000000)) ms ($(grep ' time ' <<<"$out" | awk '{print $4}') MB/s both ways)" >&"$H_ERR"
    return 0
}

# The kernel connects and sends FILE; shmnet (listening) sends BYTES of the pattern back.
server_xfer() { # NAME BYTES FILE [TIMING]
    local name=$1 bytes=$2 file=$3 out fd line rc t0 t1
    next_port
    mkfifo "$T/$name.sfifo"
    "$XFER" listen "$PORT" --send "$bytes" --recv-first >"$T/$name.sfifo" 2>"$T/$name.serr" &
    local spid=$!
    HARNESS_PIDS+=("$spid")
    exec {fd}<"$T/$name.sfifo"
    read -r -t 10 -u "$fd" line && [[ $line == LISTENING ]] || { echo "no LISTENING: $(cat "$T/$name.serr")"; return 1; }
    t0=$(date +%s%N)
    local kout
    kout=$(nsx "$PY" -u "$T/peer.py" client "$DAEMON_IP" "$PORT" "$file" 2>&1)
    t1=$(date +%s%N)
    out=$(cat <&"$fd")
    wait "$spid"
    rc=$?
    exec {fd}<&-
    XFER_OUT=$out
    echo "shmnet: $out $(cat "$T/$name.serr")"
    echo "kernel: $kout"
    ((rc == 0)) || return 1
    grep -q " recv $(fsize "$file") $(sha "$file")\$" <<<"$out" ||
        { echo "shmnet got other bytes than the kernel sent"; return 1; }
    local sent_line
    sent_line=$(grep ' sent ' <<<"$out" | awk '{print $3, $4}')
    grep -q "^recv $sent_line\$" <<<"$kout" || { echo "kernel got other bytes than shmnet sent"; return 1; }
    [[ -n ${4:-} ]] && echo "$name: $(((bytes + $(fsize "$file")) / 1048576)) MiB in $(((t1 - t0) / 1000000)) ms" >&"$H_ERR"
    return 0
}

check client_1_byte client_xfer c1 1 "$T/f1"
check client_1MiB client_xfer c1m $((1 << 20)) "$T/f1m"
check "client_${BIG_MB}MiB" client_xfer cbig $((BIG_MB << 20)) "$T/fbig" timing
check server_1_byte server_xfer s1 1 "$T/f1"
check server_1MiB server_xfer s1m $((1 << 20)) "$T/f1m"
check "server_${BIG_MB}MiB" server_xfer sbig $((BIG_MB << 20)) "$T/fbig" timing

# 100 concurrent connections (threads of one process), 64 KiB each way.
concurrent() {
    local out n
    next_port
    peer_bg conc serve "$PORT" 100 "$T/f64k" || return 1
    out=$("$XFER" connect "$PEER_IP" "$PORT" --send 65536 --recv --conns 100 2>&1)
    local rc=$?
    peer_done
    echo "$out" | tail -n 5
    echo "peer: $(tail -n 2 <<<"$PEER_OUT")"
    ((rc == 0)) || return 1
    n=$(grep -c " recv 65536 $(sha "$T/f64k")\$" <<<"$out")
    echo "$n of 100 connections got the kernel's 64 KiB intact"
    ((n == 100)) || return 1
    # The kernel received 100 x the pattern's first 64 KiB: one digest, 100 times.
    local want
    want=$(grep ' sent ' <<<"$out" | head -n 1 | awk '{print $3, $4}')
    n=$(grep -c "^recv $want\$" <<<"$PEER_OUT")
    echo "$n of 100 connections delivered shmnet's 64 KiB intact"
    ((n == 100))
}
check concurrent_100x64KiB concurrent

storm() {
    local out t0
    next_port
    peer_bg storm serve "$PORT" 2000 - || return 1
    t0=$(date +%s%N)
    out=$("$XFER" storm "$PEER_IP" "$PORT" 2000 8 2>&1)
    local rc=$?
    peer_done
    echo "$out" | tail -n 5
    echo "peer: $PEER_OUT"
    echo "storm: 2000 connections in $((($(date +%s%N) - t0) / 1000000)) ms" >&2
    ((rc == 0)) && grep -q '^done errors 0' <<<"$PEER_OUT"
}
check storm_2000_short_connections storm

next_port
check econnrefused_closed_port "$XFER" refused "$PEER_IP" "$PORT"

reset() {
    next_port
    peer_bg rst rst "$PORT" || return 1
    "$XFER" reset "$PEER_IP" "$PORT"
    local rc=$?
    peer_done
    return $rc
}
check kernel_rst_gives_econnreset reset

# The kernel's application stops reading for 10 s (its window closes, shmnet probes the
# zero window), then reads everything: 8 MiB intact.
stall() {
    local out
    next_port
    peer_bg stall stall "$PORT" 10 || return 1
    out=$("$XFER" connect "$PEER_IP" "$PORT" --send $((8 << 20)) 2>&1)
    local rc=$?
    peer_done
    echo "$out"
    echo "peer: $PEER_OUT"
    ((rc == 0)) || return 1
    grep -q "^recv $(grep ' sent ' <<<"$out" | awk '{print $3, $4}')\$" <<<"$PEER_OUT"
}
check stalled_reader_10s_8MiB_intact stall

# ---- the same with the fault injector on (live reload, SIGHUP) ----
harness_write_conf "$T/d.conf" 'fault = { loss = 0.02; reorder = 0.01; duplicate = 0.01; corrupt = 0.005; seed = 11; direction = "both"; };'
kill -HUP "$DPID"
wait_notify 'READY=1' 10 || echo "no READY=1 after reload" | detail
drop0=$(stat fault_drop_loss)
check fault_client_1MiB client_xfer fc1m $((1 << 20)) "$T/f1m"
check fault_server_1MiB server_xfer fs1m $((1 << 20)) "$T/f1m"
check fault_client_50MiB client_xfer fcbig $((50 << 20)) "$T/f50m" timing
check fault_server_50MiB server_xfer fsbig $((50 << 20)) "$T/f50m" timing
faults_seen() {
    local d
    d=$(stat fault_drop_loss) || return 1
    echo "fault_drop_loss $drop0 -> $d"
    ((d > drop0))
}
check fault_injector_was_active faults_seen

# The same 50 MiB each way with BBR (tcp.congestion = "bbr", live reload): pacing and a
# window that random loss does not shrink, against the kernel's TCP, every byte checked.
# Once, on the TAP with one worker: it tests the TCP core, and time counts.
if [[ $HARNESS_BACKEND == tap ]] && ((HARNESS_WORKERS == 1)); then
    harness_write_conf "$T/d.conf" 'fault = { loss = 0.02; reorder = 0.01; duplicate = 0.01; corrupt = 0.005; seed = 12; direction = "both"; };' \
        'tcp = { congestion = "bbr"; };'
    kill -HUP "$DPID"
    wait_notify 'READY=1' 10 || echo "no READY=1 after reload" | detail
    # Each transfer prints its socket's TCP_CONGESTION: the reloaded default must be in use.
    bbr_used() { grep ' cc ' <<<"$XFER_OUT"; grep -q ' cc bbr$' <<<"$XFER_OUT"; }
    check fault_client_50MiB_bbr client_xfer fcbbr $((50 << 20)) "$T/f50m" timing
    check bbr_was_the_client_control bbr_used
    check fault_server_50MiB_bbr server_xfer fsbbr $((50 << 20)) "$T/f50m" timing
    check bbr_was_the_server_control bbr_used
fi

harness_stop_daemon
