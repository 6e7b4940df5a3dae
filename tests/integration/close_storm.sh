#!/usr/bin/env bash
# Many connections closed at once with a small packet pool (daemon.pktbufs = 256): the
# FINs that find no buffer are sent later, so no connection is left in FIN_WAIT_1,
# LAST_ACK or CLOSING once the peer has answered.
#   close_storm_active    a preloaded program holds N connections to a kernel server and
#                         exits: every one ends in TIME_WAIT or closed, the kernel saw N EOFs
#   close_storm_passive   N kernel clients shut down their side; the preloaded server
#                         closes each at once: every one leaves LAST_ACK
# N = CLOSE_STORM_CONNS (default 20000). About 60 s.
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"
harness_init clst
harness_once "the TCP retry and the packet pool are the same on every backend and worker"

N=${CLOSE_STORM_CONNS:-20000}
P=4          # processes per side: a process may hold fewer than 20000 descriptors here
M=$((N / P)) # connections per process
N=$((M * P))
PRELOAD=${PRELOAD:-$REPO/build/libshmnet_preload.so}
[[ -f $PRELOAD ]] || { fail clst_setup "$PRELOAD not built (make)"; exit 1; }
HARNESS_DAEMON_OPTS="pktbufs = 256;" harness_write_conf "$T/d.conf" "" \
    "clients = { max_sockets = $((M + 100)); rcvbuf = 4096; sndbuf = 4096; fifo_mb = 128; };"
harness_start_daemon "$T/d.conf" || exit 1
harness_peer_ns || { fail peer_ns "cannot set up the peer namespace"; exit 1; }
harness_client_ns || { fail client_ns "cannot set up the client namespace"; exit 1; }
ulimit -n "$(ulimit -Hn)"
nsx sysctl -qw net.core.somaxconn=65535 net.ipv4.tcp_max_syn_backlog=65535 \
    net.ipv4.ip_local_port_range="10000 65000"

# Connections of ours in the states that must not stay (from `shmnetctl sockets`).
stuck() { ctl sockets | grep -cE '^(FIN_WAIT_1|LAST_ACK|CLOSING|SYN_RECEIVED)'; }
none_stuck() { [[ $(stuck) == 0 ]]; }
ours_open() { ctl sockets | grep -cE '^(ESTABLISHED|FIN_WAIT|LAST_ACK|CLOSING|CLOSE_WAIT)'; }
none_open() { [[ $(ours_open) == 0 ]]; }

# ---- active: we connect N times (P processes), then exit (every connection closes at once).
# A server of M connections on PORT: reads each until EOF, then closes it; prints
# "LISTENING", then "EOF M" when every connection is done. Run by the kernel (active
# phase) or preloaded (passive phase).
SERVER_PY='
import selectors, socket, sys
n = int(sys.argv[1])
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("0.0.0.0", int(sys.argv[2]))); ls.listen(65535); ls.setblocking(False)
sel = selectors.DefaultSelector(); sel.register(ls, selectors.EVENT_READ)
print("LISTENING", flush=True)
eof = 0
while eof < n:
    for key, _ in sel.select(timeout=120):
        s = key.fileobj
        if s is ls:
            while True:
                try:
                    c, _ = ls.accept()
                except BlockingIOError:
                    break
                c.setblocking(False); sel.register(c, selectors.EVENT_READ)
        else:
            try:
                b = s.recv(4096)
            except ConnectionError:
                b = b""
            if not b:
                eof += 1; sel.unregister(s); s.close()
print("EOF", eof, flush=True)
'
ksrv() { nsx "$PY" -c "$SERVER_PY" "$M" "$1"; }      # PORT
psrv() { "${PX[@]}" "$PY" -c "$SERVER_PY" "$M" "$1"; } # PORT
for i in $(seq 1 $P); do
    ksrv $((7300 + i)) >"$T/ksrv$i.out" 2>&1 &
    HARNESS_PIDS+=($!)
done
for i in $(seq 1 $P); do
    wait_until 10 grep -q LISTENING "$T/ksrv$i.out"
done
apids=()
for i in $(seq 1 $P); do
    timeout -k 5 300 "${PX[@]}" "$PY" -c '
import os, socket, sys
n = int(sys.argv[1])
ss = [socket.create_connection((sys.argv[2], int(sys.argv[3]))) for _ in range(n)]
print("OPEN", len(ss), flush=True)
os._exit(0)
' "$M" "$PEER_IP" $((7300 + i)) >"$T/act$i.out" 2>&1 &
    apids+=($!)
done
wait_pids_ok() { local p rc=0; for p in "$@"; do wait "$p" || rc=1; done; return $rc; }
all_lines() { # PATTERN FILES...: every file has a line matching PATTERN
    local pat=$1 f
    shift
    for f in "$@"; do grep -qx "$pat" "$f" || return 1; done
}
wait_pids_ok "${apids[@]}"
check close_storm_active_opened all_lines "OPEN $M" "$T"/act*.out
all_eof() { all_lines "EOF $M" "$T"/ksrv*.out; }
check close_storm_active_kernel_saw_every_eof wait_until 120 all_eof
check close_storm_active_none_stuck wait_until 30 none_stuck
check close_storm_active_none_open wait_until 30 none_open
ctl stats | grep -E 'tcp_xmit_retry|ip4_drop_nobuf' | detail

# ---- passive: N kernel clients, each sends its FIN; the preloaded servers close each.
for i in $(seq 1 $P); do
    psrv $((7310 + i)) >"$T/psrv$i.out" 2>&1 &
    HARNESS_PIDS+=($!)
done
for i in $(seq 1 $P); do
    wait_until 10 grep -q LISTENING "$T/psrv$i.out"
done
kpids=()
for i in $(seq 1 $P); do
    nsx timeout -k 5 300 "$PY" -c '
import socket, sys
n = int(sys.argv[1])
ss = [socket.create_connection((sys.argv[2], int(sys.argv[3]))) for _ in range(n)]
for s in ss:
    s.shutdown(socket.SHUT_WR)
got = 0
for s in ss:
    s.settimeout(60)
    if s.recv(10) == b"":
        got += 1
print("EOF", got, flush=True)
' "$M" "$DAEMON_IP" $((7310 + i)) >"$T/kcli$i.out" 2>&1 &
    kpids+=($!)
done
wait_pids_ok "${kpids[@]}"
all_closed() { all_lines "EOF $M" "$T"/psrv*.out; }
check close_storm_passive_server_closed_all wait_until 60 all_closed
check close_storm_passive_kernel_saw_every_fin all_lines "EOF $M" "$T"/kcli*.out
check close_storm_passive_none_stuck wait_until 30 none_stuck
harness_stop_daemon
