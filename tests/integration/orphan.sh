#!/usr/bin/env bash
# Data written before close() or exit is delivered (orphaned connections, as in Linux):
# a preloaded sender writes, closes or exits at once, and a kernel reader that starts
# reading late gets every byte and then FIN, never RST. Also under the fault injector
# (loss, reordering, duplication, corruption, delay), and the daemon's orphan gauge
# (tcp_orphans) returns to 0.
#
#   orphan_close_200k      python: sendall(200000 B), close(), exit; reader starts after 3 s
#   orphan_exit_200k       python: sendall(200000 B), os._exit() without close
#   orphan_socat_exit_2M   socat -u FILE TCP: (exits without close)
#   orphan_faults_64M      the same with 64 MiB under the fault profile
# About 40 s.
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"
harness_init orph

PRELOAD=${PRELOAD:-$REPO/build/libshmnet_preload.so}
if [[ ! -f $PRELOAD ]]; then
    fail orph_setup "$PRELOAD not built (make)"
    exit 1
fi
harness_write_conf "$T/d.conf"
harness_start_daemon "$T/d.conf" || exit 1
harness_peer_ns || { fail peer_ns "cannot set up the peer namespace"; exit 1; }

harness_client_ns || { fail client_ns "cannot set up the client namespace"; exit 1; }

# A kernel reader in $NS that starts late: accepts one connection on PORT (listen) or
# connects to shmnet's PORT (connect), waits DELAY s, reads until EOF and prints
# "BYTES SHA256 eof" (or "reset", "timeout").
late_peer() { # listen|connect PORT DELAY OUT
    nsx "$PY" -c '
import hashlib, socket, sys, time
mode, port, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
if mode == "listen":
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(1)
    print("LISTENING", flush=True)
    c, _ = s.accept()
else:
    s.connect((sys.argv[4], port)); c = s
time.sleep(delay)
h, n, end = hashlib.sha256(), 0, "eof"
c.settimeout(60)
while True:
    try:
        b = c.recv(1 << 16)
    except ConnectionResetError:
        end = "reset"; break
    except socket.timeout:
        end = "timeout"; break
    if not b:
        break
    h.update(b); n += len(b)
print(n, h.hexdigest(), end, flush=True)
' "$1" "$2" "$3" "$DAEMON_IP" >"$4" 2>&1 &
    HARNESS_PIDS+=($!)
    [[ $1 != listen ]] || wait_until 5 grep -q LISTENING "$4"
}
late_reader() { late_peer listen "$@"; } # PORT DELAY OUT

# expect_delivery NAME OUT FILE: the reader got exactly FILE, then EOF.
expect_delivery() {
    local name=$1 out=$2 file=$3 want got
    want="$(wc -c <"$file") $(sha256sum "$file" | cut -d' ' -f1) eof"
    if ! wait_until 120 grep -qE '^[0-9]+ ' "$out"; then
        fail "$name" "the reader did not finish"
        return 1
    fi
    got=$(grep -E '^[0-9]+ ' "$out")
    if [[ $got != "$want" ]]; then
        fail "$name" "reader got '$got', want '$want'"
        ctl stats | grep -E 'tcp_(orphan|rto|timeouts|tx_rst)' | detail
        return 1
    fi
    pass "$name"
}

orphans_zero() { [[ $(stat tcp_orphans) == 0 ]]; }

head -c 200000 /dev/urandom >"$T/200k"
head -c $((2 << 20)) /dev/urandom >"$T/2M"

# A python sender: write all, then close and exit, or exit without close.
py_send() { # PORT FILE close|exit
    timeout -k 5 30 "${PX[@]}" "$PY" -c '
import os, socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.sendall(open(sys.argv[3], "rb").read())
if sys.argv[4] == "close":
    s.close()
os._exit(0)
' "$PEER_IP" "$1" "$2" "$3"
}

late_reader 7101 3 "$T/r1" || fail orph_reader "the kernel reader did not start"
if py_send 7101 "$T/200k" close; then
    expect_delivery orphan_close_200k "$T/r1" "$T/200k"
else
    fail orphan_close_200k "the sender failed"
fi

late_reader 7102 3 "$T/r2"
if py_send 7102 "$T/200k" exit; then
    expect_delivery orphan_exit_200k "$T/r2" "$T/200k"
else
    fail orphan_exit_200k "the sender failed"
fi

late_reader 7103 2 "$T/r3"
if timeout -k 5 30 "${PX[@]}" socat -u "FILE:$T/2M" "TCP:$PEER_IP:7103"; then
    expect_delivery orphan_socat_exit_2M "$T/r3" "$T/2M"
else
    fail orphan_socat_exit_2M "socat failed"
fi

# A server that exits while its accepted connection still holds unsent data (an orphan)
# is restarted on the same port with SO_REUSEADDR, as Linux allows: the new one binds and
# serves, and the orphan still delivers everything. With several workers the orphan holds
# a claim of the old process's listening group; the new process takes the group over.
late_client() { late_peer connect "$@"; } # PORT DELAY OUT
py_server() { # PORT FILE|- OUT: listen (SO_REUSEADDR), serve one connection, exit
    timeout -k 5 30 "${PX[@]}" "$PY" -c '
import os, socket, sys
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    ls.bind(("0.0.0.0", int(sys.argv[1])))
except OSError as e:
    print("BIND", e, flush=True); os._exit(1)
ls.listen(8); print("LISTENING", flush=True)
c, _ = ls.accept()
if sys.argv[2] == "-":
    c.sendall(b"second server\n"); c.close()
else:
    c.sendall(open(sys.argv[2], "rb").read())
os._exit(0)
' "$1" "$2" >"$3" 2>&1 &
    SERVER_PID=$!
    HARNESS_PIDS+=("$SERVER_PID")
    wait_until 5 grep -qE "LISTENING|BIND" "$3"
}
first_done() { ! kill -0 "$1" 2>/dev/null; }
py_server 7105 "$T/200k" "$T/s1"
late_client 7105 4 "$T/c1"
if check orph_restart_first_served wait_until 10 first_done "$SERVER_PID"; then
    py_server 7105 - "$T/s2"
    if grep -q LISTENING "$T/s2"; then
        pass orphan_restart_rebinds
        got=$(nsx timeout 10 "$PY" -c '
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
print(c.makefile().readline().strip())' "$DAEMON_IP" 7105 2>&1)
        if [[ $got == "second server" ]]; then
            pass orphan_restart_serves
        else
            fail orphan_restart_serves "the new server answered '$got'"
        fi
    else
        fail orphan_restart_rebinds "$(cat "$T/s2")"
    fi
    expect_delivery orphan_restart_old_data "$T/c1" "$T/200k"
fi
check orphan_gauge_back_to_zero wait_until 10 orphans_zero

# The same under faults: the fault profile on the interface (live, SIGHUP). Once, on the
# TAP with one worker: it takes most of the script's time and tests the TCP core.
if [[ $HARNESS_BACKEND != tap ]] || ((HARNESS_WORKERS > 1)); then
    harness_stop_daemon
    exit 0
fi
# The same under faults: the fault profile on the interface (live, SIGHUP).
harness_write_conf "$T/d.conf" 'fault = { loss = 0.02; reorder = 0.01; duplicate = 0.01;
    corrupt = 0.005; delay_us = 200; seed = 7; };'
reloads() { grep -c 'configuration reloaded' "$DLOG"; }
r0=$(reloads)
kill -HUP "$DPID"
reloaded() { (($(reloads) > r0)); }
check orph_fault_profile_applied wait_until 5 reloaded
head -c $((64 << 20)) /dev/urandom >"$T/64M"
late_reader 7104 1 "$T/r4"
if timeout -k 5 300 "${PX[@]}" socat -u "FILE:$T/64M" "TCP:$PEER_IP:7104"; then
    expect_delivery orphan_faults_64M "$T/r4" "$T/64M"
else
    fail orphan_faults_64M "socat failed"
fi
check orphan_faults_gauge_back_to_zero wait_until 30 orphans_zero
harness_stop_daemon
