#!/usr/bin/env bash
# TCP at scale against the Linux kernel across the TAP (tests/progs/tcp_xfer.c on the
# shmnet side, python3 asyncio in the peer namespace), every connection checked both ways
# with the digest-echo protocol (tcp_xfer.c): the client sends its own bytes and SHUT_WR,
# the server streams each byte back XOR 0x5a and then the SHA-256 of what it received; the
# client compares the echo byte by byte and the digest with its own.
#   - 1000 concurrent connections, SCALE_BYTES (64 KiB) each way, shmnet as client and as
#     server; no client shuts down writing before all 1000 are established, so all are
#     open at once (checked: the "at most N open" figure of the shmnet side);
#   - a storm of 10000 short connections (100 bytes each way), shmnet as client (it holds
#     the TIME_WAITs: 10000 of the 28232 ephemeral ports) and as server (the kernel client
#     holds them; tcp_tw_reuse on in the peer namespace);
#   - a kernel reader that stops reading for 30 s: the zero window is probed all along
#     (tcp_zero_window_probes grows during the stall, the connection stays ESTABLISHED with
#     swnd 0), then 8 MiB arrive intact (SHA-256).
# SCALE_CONNS / STORM_CONNS / STALL_S override the sizes, SCALE_ONLY="conc storm stall"
# picks parts (for quick runs by hand).
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"
harness_init scal

PROGS=${PROGS:-$(dirname "$SHMNETD")/tests/progs}
XFER=$PROGS/tcp_xfer
CONNS=${SCALE_CONNS:-1000}
BYTES=${SCALE_BYTES:-65536}
STORM=${STORM_CONNS:-10000}
STALL_S=${STALL_S:-30}
ONLY=" ${SCALE_ONLY:-conc storm stall} "
if [[ ! -x $XFER ]]; then
    fail scal_setup "$XFER not built (make progs)"
    exit 1
fi
export SHMNET_SOCKET=$SOCK

# Room for 1000 sockets of one process with default-sized fifos (the defaults would do;
# stated so the test does not depend on them), and SYN backlog for a burst of 1000 SYNs.
harness_write_conf "$T/d.conf" "" \
    'clients = { max_sockets = 8192; fifo_mb = 2048; };
tcp = { max_syn_backlog = 2048; };'
harness_start_daemon "$T/d.conf" || exit 1
harness_peer_ns || { fail peer_ns "cannot set up the peer namespace"; exit 1; }
# The kernel side as a busy server would be: backlog, TIME_WAIT reuse for its own
# connects, and the whole ephemeral range.
nsx sysctl -qw net.core.somaxconn=8192 net.ipv4.tcp_max_syn_backlog=8192 \
    net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range="1024 65000"

cat >"$T/peer.py" <<'EOF'
import asyncio, hashlib, os, resource, socket, sys, time
X = bytes(b ^ 0x5A for b in range(256))
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
mode = sys.argv[1]

async def serve(port, count):
    """Digest-echo server for COUNT connections; prints READY, then a summary."""
    left, bad, errs, done = [count], [0], [], asyncio.Event()
    async def one(r, w):
        h = hashlib.sha256()
        try:
            while True:
                d = await r.read(65536)
                if not d:
                    break
                h.update(d)
                w.write(d.translate(X))
                await w.drain()
            w.write(h.hexdigest().encode() + b"\n")
            await w.drain()
            w.close()
            await w.wait_closed()
        except Exception as e:
            bad[0] += 1
            errs.append(repr(e))
            w.transport.abort()
        left[0] -= 1
        if left[0] == 0:
            done.set()
    srv = await asyncio.start_server(one, "0.0.0.0", port, backlog=8192, reuse_address=True)
    print("READY", flush=True)
    try:
        await asyncio.wait_for(done.wait(), 300)
    except asyncio.TimeoutError:
        errs.append("timed out with %d connections left" % left[0])
        bad[0] += left[0]
    srv.close()
    print("served %d bad %d %s" % (count, bad[0], " ".join(errs[:3])), flush=True)
    return 1 if bad[0] else 0

async def clients(ip, port, count, conc, nbytes):
    """COUNT digest-echo clients, CONC at a time; each sends its own slice of random bytes.
    With CONC >= COUNT none shuts down writing before all are connected (all open at once)."""
    blob = os.urandom(max(nbytes, 1) + 65536)
    sem, bad, errs, nopen, maxopen = asyncio.Semaphore(conc), [0], [], [0], [0]
    nconn, all_in = [0], asyncio.Event()
    async def one(i):
        async with sem:
            o = (i * 7919) % 65536
            data = blob[o:o + nbytes]
            want = data.translate(X) + hashlib.sha256(data).hexdigest().encode() + b"\n"
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection(ip, port), 60)
                nopen[0] += 1
                maxopen[0] = max(maxopen[0], nopen[0])
                nconn[0] += 1
                if nconn[0] == count:
                    all_in.set()
                w.write(data)
                await w.drain()
                if conc >= count:
                    await asyncio.wait_for(all_in.wait(), 120)
                w.write_eof()
                got = await asyncio.wait_for(r.read(), 120)
                w.close()
                nopen[0] -= 1
                if got != want:
                    bad[0] += 1
                    errs.append("conn %d: %d bytes back, want %d%s" % (i, len(got), len(want),
                                " (same length, other bytes)" if len(got) == len(want) else ""))
            except Exception as e:
                bad[0] += 1
                errs.append("conn %d: %r" % (i, e))
    t0 = time.time()
    await asyncio.gather(*(one(i) for i in range(count)))
    print("clients %d bad %d at most %d open, %.2f s %s" % (count, bad[0], maxopen[0],
          time.time() - t0, " ".join(errs[:3])), flush=True)
    return 1 if bad[0] else 0

def stall(port, secs):
    """Accept one connection, read nothing for SECS, then drain it: length and SHA-256."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.bind(("0.0.0.0", port))
    s.listen(1)
    s.settimeout(60)
    print("READY", flush=True)
    c, _ = s.accept()
    print("ACCEPTED", flush=True)
    time.sleep(max(secs - 2, 0))
    print("LATE", flush=True)  # the stall's last seconds: the window is still closed
    time.sleep(min(secs, 2))
    print("READING", flush=True)
    h, n = hashlib.sha256(), 0
    c.settimeout(120)
    while True:
        d = c.recv(1 << 20)
        if not d:
            break
        h.update(d)
        n += len(d)
    print("recv %d %s" % (n, h.hexdigest()), flush=True)
    return 0

if mode == "server":
    sys.exit(asyncio.run(serve(int(sys.argv[2]), int(sys.argv[3]))))
elif mode == "clients":
    sys.exit(asyncio.run(clients(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                                 int(sys.argv[5]), int(sys.argv[6]))))
elif mode == "stall":
    sys.exit(stall(int(sys.argv[2]), float(sys.argv[3])))
EOF

# peer_bg NAME ARGS...: the python peer in $NS, stdout to a fifo read on $PEER_FD; waits
# for READY.
peer_bg() {
    local name=$1 line
    shift
    mkfifo "$T/$name.fifo"
    nsx "$PY" -u "$T/peer.py" "$@" >"$T/$name.fifo" 2>"$T/$name.err" &
    PEER_PID=$!
    HARNESS_PIDS+=("$PEER_PID")
    exec {PEER_FD}<"$T/$name.fifo"
    read -r -t 10 -u "$PEER_FD" line && [[ $line == READY ]] || {
        echo "peer $name not ready: $(cat "$T/$name.err")"
        return 1
    }
}
# peer_done: wait for the background peer; its remaining output into $PEER_OUT.
peer_done() {
    local rc
    PEER_OUT=$(cat <&"$PEER_FD")
    wait "$PEER_PID"
    rc=$?
    exec {PEER_FD}<&-
    [[ -s $T/$PEER_NAME.err ]] && head -n 5 "$T/$PEER_NAME.err"
    return $rc
}

PORT=6000
# shmnet connects N times (CONC at once) to a kernel digest-echo server.
shmnet_clients() { # NAME N CONC BYTES
    local out rc
    PORT=$((PORT + 1)) PEER_NAME=$1
    peer_bg "$1" server "$PORT" "$2" || return 1
    out=$("$XFER" clients "$PEER_IP" "$PORT" "$2" "$3" "$4" 2>&1)
    rc=$?
    peer_done
    echo "shmnet: $(tail -n 12 <<<"$out")"
    echo "kernel: $PEER_OUT"
    ((rc == 0)) && grep -q "^clients $2, 0 failed" <<<"$out" && grep -q "^served $2 bad 0" <<<"$PEER_OUT" ||
        { stats_brief; return 1; }
    OPEN_MAX=$(sed -n 's/.*at most \([0-9]*\) open.*/\1/p' <<<"$out")
}
# The kernel connects N times (CONC at once) to a shmnet digest-echo server.
kernel_clients() { # NAME N CONC BYTES
    local fd line out kout rc spid
    PORT=$((PORT + 1))
    mkfifo "$T/$1.sfifo"
    "$XFER" server "$PORT" "$2" >"$T/$1.sfifo" 2>"$T/$1.serr" &
    spid=$!
    HARNESS_PIDS+=("$spid")
    exec {fd}<"$T/$1.sfifo"
    read -r -t 10 -u "$fd" line && [[ $line == LISTENING ]] || { echo "no LISTENING: $(cat "$T/$1.serr")"; return 1; }
    kout=$(nsx "$PY" -u "$T/peer.py" clients "$DAEMON_IP" "$PORT" "$2" "$3" "$4" 2>&1)
    local krc=$?
    out=$(cat <&"$fd")
    wait "$spid"
    rc=$?
    exec {fd}<&-
    echo "shmnet: $out $(head -n 12 "$T/$1.serr")"
    echo "kernel: $kout"
    ((rc == 0 && krc == 0)) && grep -q "^served $2, 0 failed" <<<"$out" && grep -q "^clients $2 bad 0" <<<"$kout" ||
        { stats_brief; return 1; }
    OPEN_MAX=$(sed -n 's/.*at most \([0-9]*\) open.*/\1/p' <<<"$out")
}
# On failure: what the daemon counted (drops, recovery).
stats_brief() {
    ctl stats | grep -E '^(tcp_(rto|tlp|sack_recovery|lost_retrans|retrans_segs|timeouts|tx_rst|rx_rst|drop_[a-z_]+)|nic_[a-z_]*drop[a-z_]*) ' |
        grep -v ' 0$' | tr '\n' ' '
    echo
}
# all_open N: the run really had N connections open at the same time.
all_open() {
    echo "at most $OPEN_MAX of $1 connections open at once"
    ((OPEN_MAX == $1))
}

if [[ $ONLY == *" conc "* ]]; then
t0=$SECONDS
check "concurrent_${CONNS}_shmnet_client" shmnet_clients cc "$CONNS" "$CONNS" "$BYTES" &&
    check "concurrent_${CONNS}_shmnet_client_all_open" all_open "$CONNS"
echo "shmnet client, $CONNS x $BYTES B each way: $((SECONDS - t0)) s" | detail
t0=$SECONDS
check "concurrent_${CONNS}_shmnet_server" kernel_clients cs "$CONNS" "$CONNS" "$BYTES" &&
    check "concurrent_${CONNS}_shmnet_server_all_open" all_open "$CONNS"
echo "shmnet server, $CONNS x $BYTES B each way: $((SECONDS - t0)) s; syn cookies sent $(stat tcp_syncookies_sent)" | detail
fi

if [[ $ONLY == *" storm "* ]]; then
est0=$(stat tcp_established)
t0=$SECONDS
check "storm_${STORM}_shmnet_client" shmnet_clients sc "$STORM" 32 100
echo "storm, shmnet client: $STORM connections in $((SECONDS - t0)) s" | detail
t0=$SECONDS
check "storm_${STORM}_shmnet_server" kernel_clients ss "$STORM" 32 100
echo "storm, shmnet server: $STORM connections in $((SECONDS - t0)) s; TIME_WAIT reused $(stat tcp_tw_reuse)" | detail
# Every one of them was a real handshake on the shmnet side.
storm_counted() {
    local est
    est=$(stat tcp_established) || return 1
    echo "tcp_established $est0 -> $est (want +$((2 * STORM)))"
    ((est - est0 >= 2 * STORM))
}
check storm_connections_counted storm_counted
fi

# ---- zero window for STALL_S seconds ----
zwp() { stat tcp_zero_window_probes; }
window_closed() { ctl sockets | grep -q "^ESTAB .*:$PORT .* swnd 0\$"; }
stalled() {
    local out line pid rc p0 p1 p2 sent_line
    PORT=$((PORT + 1)) PEER_NAME=stall
    peer_bg stall stall "$PORT" "$STALL_S" || return 1
    p0=$(zwp) || { echo "no counter tcp_zero_window_probes"; return 1; }
    "$XFER" connect "$PEER_IP" "$PORT" --send $((8 << 20)) >"$T/stall.out" 2>&1 &
    pid=$!
    HARNESS_PIDS+=("$pid")
    read -r -t 10 -u "$PEER_FD" line && [[ $line == ACCEPTED ]] || { echo "no connection"; return 1; }
    # The kernel's window closes within a few seconds (its buffer fills); the first probes
    # follow at once, the later ones back off (RFC 6298 doubling, capped at 60 s).
    if ! wait_until 10 window_closed; then
        echo "the window did not close:"
        ctl sockets | grep -v TIME-WAIT | head -n 5
        return 1
    fi
    wait_stat_ge tcp_zero_window_probes $((p0 + 1)) 10 || { echo "no zero-window probe"; return 1; }
    p1=$(zwp)
    # Probing goes on through the stall: near its end, still established with the window
    # closed, and more probes went out.
    read -r -t $((STALL_S + 10)) -u "$PEER_FD" line && [[ $line == LATE ]] || { echo "no LATE from the peer"; return 1; }
    p2=$(zwp)
    window_closed || { echo "not established with a closed window near the end of the stall"; return 1; }
    read -r -t 10 -u "$PEER_FD" line && [[ $line == READING ]] || { echo "peer did not resume"; return 1; }
    echo "zero-window probes: $((p1 - p0)) once the window closed, $((p2 - p0)) $((STALL_S - 2)) s into the ${STALL_S} s stall"
    wait "$pid"
    rc=$?
    peer_done
    cat "$T/stall.out"
    echo "kernel: $PEER_OUT"
    ((rc == 0)) || return 1
    ((p2 > p1)) || { echo "probing stopped during the stall"; return 1; }
    sent_line=$(grep ' sent ' "$T/stall.out" | awk '{print $3, $4}')
    [[ $sent_line == "$((8 << 20)) "* ]] || return 1
    grep -q "^recv $sent_line\$" <<<"$PEER_OUT" || { echo "the kernel got other bytes"; return 1; }
}
[[ $ONLY == *" stall "* ]] && check "zero_window_${STALL_S}s_then_8MiB_intact" stalled

harness_stop_daemon
