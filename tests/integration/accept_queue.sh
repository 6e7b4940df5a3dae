#!/usr/bin/env bash
# Connections that die while they wait in a preloaded listener's accept queue:
#   rst_storm       300 kernel clients complete the handshake and abort at once (SO_LINGER
#                   0) while 40 others send unique messages to the same listener, which
#                   accepts slowly and echoes: 40/40 echoes intact, no accepted socket reads
#                   another connection's bytes, the accept queue empties and the session's
#                   socket count returns to the listener alone;
#   listener_close  a listener closed with connections in its queue resets each of them
#                   once, with a sequence number the peer accepts (ECONNRESET on read);
#   owner_killed    the listener's process is killed with connections queued: the peers
#                   are reset and the daemon frees every socket of the session.
# About 20 s.
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"
harness_init accq

PRELOAD=${PRELOAD:-$REPO/build/libshmnet_preload.so}
[[ -f $PRELOAD ]] || { fail accq_setup "$PRELOAD not built (make)"; exit 1; }
harness_write_conf "$T/d.conf"
harness_start_daemon "$T/d.conf" || exit 1
harness_peer_ns || { fail peer_ns "cannot set up the peer namespace"; exit 1; }
harness_client_ns || { fail client_ns "cannot set up the client namespace"; exit 1; }

# The preloaded listener: accepts one connection every DELAY s; reads what comes within
# 2 s and echoes it; prints "data MSG", "eof", "reset" or "timeout" per connection.
# With HOLD=1 it never accepts (the queue stays full) and waits for a line on stdin,
# then closes the listener.
listener() { # PORT DELAY MAX HOLD
    "${PX[@]}" "$PY" -c '
import socket, sys, time
port, delay, maxc, hold = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
ls = socket.socket(); ls.bind(("0.0.0.0", port)); ls.listen(1024)
print("LISTENING", flush=True)
if hold:
    sys.stdin.readline(); ls.close(); print("CLOSED", flush=True); time.sleep(3600)
for _ in range(maxc):
    c, _ = ls.accept()
    c.settimeout(2)
    try:
        b = c.recv(4096)
        if b:
            c.sendall(b); print("data", b.decode(errors="replace"), flush=True)
        else:
            print("eof", flush=True)
    except ConnectionResetError:
        print("reset", flush=True)
    except socket.timeout:
        print("timeout", flush=True)
    c.close()
    time.sleep(delay)
print("DONE", flush=True)
time.sleep(3600)
' "$@"
}

# Kernel side: NABORT connections aborted at once, and NECHO that each send a unique
# message and expect it back. Prints "echo ok N" / "echo bad I GOT" and "aborted N".
storm() { # PORT NABORT NECHO
    nsx timeout -k 5 120 "$PY" -c '
import os, socket, struct, sys, threading
port, nab, nec = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
dst = (sys.argv[4], port)
ab = []
for _ in range(nab):
    s = socket.create_connection(dst, timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ab.append(s)
ok, bad, lock = [0], [], threading.Lock()
def echo(i):
    msg = ("msg-%d-%s" % (i, os.urandom(6).hex())).encode()
    try:
        s = socket.create_connection(dst, timeout=30)
        s.settimeout(60)
        s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            b = s.recv(4096)
            if not b:
                break
            got += b
        s.close()
    except OSError as e:
        got = str(e).encode()
    with lock:
        if got == msg: ok[0] += 1
        else: bad.append((i, got))
th = [threading.Thread(target=echo, args=(i,)) for i in range(nec)]
for t in th[: nec // 2]: t.start()
for s in ab: s.close()
for t in th[nec // 2 :]: t.start()
for t in th: t.join()
print("aborted", nab)
print("echo ok", ok[0])
for i, g in bad: print("echo bad", i, g)
' "$1" "$2" "$3" "$DAEMON_IP"
}

# The session's open sockets (shmnetctl clients: "sockets N/M").
nsockets() { ctl clients | sed -n 's/^client .* sockets \([0-9]*\)\/.*/\1/p' | head -n 1; }
lis_recvq() { # PORT: the listener's accept queue length (summed over a listening group's
    # members, one per worker); nothing when nothing listens there
    ctl sockets | awk -v p=":$1" '$1 == "LISTEN" && index($4, p) { n += $2; f = 1 }
        END { if (f) print n }'
}

# bgp NAME CMD...: CMD in the background, stdin from the fifo $T/NAME.in (write to fd
# ${NAME}_IN), stdout to $T/NAME.out.
bgp() {
    local name=$1 fd
    shift
    mkfifo "$T/$name.in"
    exec {fd}<>"$T/$name.in"
    printf -v "${name}_IN" %s "$fd"
    "$@" <"$T/$name.in" >"$T/$name.out" 2>&1 &
    HARNESS_PIDS+=($!)
    printf -v "${name}_PID" %s "$!"
}
stop_bg() { # PID: the process bgp started and its child (the program)
    pkill -KILL -P "$1" 2>/dev/null
    kill -KILL "$1" 2>/dev/null
    wait "$1" 2>/dev/null
}
has() { grep -Eq "$2" "$T/$1.out"; }
count() { grep -Ec "$2" "$T/$1.out"; }

# ---- RST storm
bgp lis listener 7201 0.01 340 0
wait_until 10 has lis LISTENING || fail accq_listener "the preloaded listener did not start"
storm 7201 300 40 >"$T/storm.out" 2>&1
detail <"$T/storm.out"
check rst_storm_40_echoes_intact grep -qx "echo ok 40" "$T/storm.out"
# What the listener read: each message once, and only from its own connection (the
# client compared the echo), nothing else.
drained() { (($(count lis '^data ') >= 40)) && [[ $(lis_recvq 7201) == 0 ]]; }
check rst_storm_queue_empties wait_until 30 drained
msgs_unique() {
    local n u
    n=$(count lis '^data ')
    u=$(grep '^data ' "$T/lis.out" | sort -u | wc -l)
    ((n == 40 && u == 40)) &&
        ! grep -v -E '^(LISTENING|DONE|data msg-[0-9]+-[0-9a-f]{12}|eof|reset|timeout)$' "$T/lis.out"
}
check rst_storm_each_message_once_on_its_own_connection msgs_unique
socks_back() { [[ $(nsockets) == 1 ]]; }
check rst_storm_socket_count_back_to_listener wait_until 20 socks_back
stop_bg "$lis_PID"

# Kernel peers: N connections wait in the queue; after a line on stdin each reads and
# prints "reset", "timeout" or what it got.
queued_peers() { # PORT N
    nsx "$PY" -c '
import socket, sys
ss = [socket.create_connection((sys.argv[3], int(sys.argv[1])), timeout=5) for _ in range(int(sys.argv[2]))]
print("CONNECTED", flush=True)
sys.stdin.readline()
for s in ss:
    s.settimeout(10)
    try:
        print("got", s.recv(10), flush=True)
    except ConnectionResetError:
        print("reset", flush=True)
    except socket.timeout:
        print("timeout", flush=True)
print("END", flush=True)
' "$1" "$2" "$DAEMON_IP"
}

# ---- Listener closed with a full queue: each queued peer reads ECONNRESET.
bgp hold listener 7202 0 0 1
wait_until 10 has hold LISTENING
bgp peers queued_peers 7202 5
wait_until 10 has peers CONNECTED
queued5() { [[ $(lis_recvq 7202) == 5 ]]; }
check listener_close_queue_holds_5 wait_until 5 queued5
rst0=$(stat tcp_tx_rst)
echo close >&"$hold_IN"
wait_until 10 has hold CLOSED
rsts5() { (($(stat tcp_tx_rst) - rst0 >= 5)); }
check listener_close_resets_each wait_until 5 rsts5
echo go >&"$peers_IN"
wait_until 30 has peers END
check listener_close_peers_read_econnreset [ "$(count peers '^reset$')" = 5 ]
exactly5() { (($(stat tcp_tx_rst) - rst0 == 5)); }
check listener_close_one_rst_each exactly5
stop_bg "$hold_PID"

# ---- Owner killed with a queue: peers reset, sockets freed.
bgp hold2 listener 7203 0 0 1
wait_until 10 has hold2 LISTENING
bgp peers2 queued_peers 7203 5
wait_until 10 has peers2 CONNECTED
queued5b() { [[ $(lis_recvq 7203) == 5 ]]; }
check owner_killed_queue_holds_5 wait_until 5 queued5b
stop_bg "$hold2_PID"
no_client() { [[ -z $(nsockets) && -z $(lis_recvq 7203) ]]; }
check owner_killed_session_freed wait_until 10 no_client
echo go >&"$peers2_IN"
wait_until 30 has peers2 END
check owner_killed_peers_read_econnreset [ "$(count peers2 '^reset$')" = 5 ]
harness_stop_daemon
