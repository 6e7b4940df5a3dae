#!/usr/bin/env bash
# TCP under attack from the peer namespace, with the Linux kernel also as the legitimate
# client:
#   - a SYN flood (hping3, spoofed random sources) at a listening shmnet socket whose SYN
#     queue is small: SYN cookies answer, and a kernel client still connects and gets its
#     data through intact;
#   - blind injection into an established connection (RFC 5961): an in-window RST with the
#     wrong sequence number and a SYN get challenge ACKs, the connection survives;
#   - segments with a bad checksum or a bad data offset are dropped and counted.
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"
harness_init tcpatk

PROGS=${PROGS:-$(dirname "$SHMNETD")/tests/progs}
XFER=$PROGS/tcp_xfer
if [[ ! -x $XFER ]]; then
    fail tcp_attack_setup "$XFER not built (make progs)"
    exit 1
fi
if ! command -v hping3 >/dev/null; then
    skip syn_flood "hping3 is not installed (tests/lib/install-deps.sh installs it)"
fi
export SHMNET_SOCKET=$SOCK
harness_write_conf "$T/d.conf" "" "tcp = { max_syn_backlog = 16; };"
harness_start_daemon "$T/d.conf" || exit 1
harness_peer_ns || { fail peer_ns "cannot set up the peer namespace"; exit 1; }
PY=/usr/bin/python3

# A shmnet server that serves N connections: reads until EOF, answers with its own bytes.
serve() { # PORT N
    "$XFER" listen "$1" --conns "$2" --recv-first --send 4096 >"$T/srv.$1.out" 2>&1 &
    SRV_PID=$!
    HARNESS_PIDS+=("$SRV_PID")
    wait_until 5 bash -c "'$SHMNETCTL' -s '$SOCK' sockets | grep -q 'LISTEN .*:$1 '"
}

flood() {
    serve 7000 1 || return 1
    # The flood: SYNs from random spoofed sources, as fast as hping3 goes, for 3 s. Our
    # SYN-ACKs to those sources go nowhere (no route), as on a real network.
    nsx timeout 3 hping3 -S -p 7000 --flood --rand-source -q 10.200.0.2 >/dev/null 2>&1 &
    local hp=$!
    wait_stat_ge tcp_syncookies_sent 1 5 || { kill "$hp"; echo "no SYN cookies sent"; return 1; }
    # During the flood, a legitimate client connects and exchanges data.
    local out
    out=$(nsx "$PY" - <<'PYEOF'
import socket, hashlib
s = socket.create_connection(("10.200.0.2", 7000), timeout=10)
data = bytes(range(256)) * 64
s.sendall(data)
s.shutdown(socket.SHUT_WR)
back = b""
while True:
    d = s.recv(65536)
    if not d:
        break
    back += d
print("ok", len(back))
PYEOF
    )
    wait "$hp" 2>/dev/null
    echo "client: $out; syncookies sent $(stat tcp_syncookies_sent) ok $(stat tcp_syncookies_ok)"
    wait "$SRV_PID"
    local rc=$?
    cat "$T/srv.7000.out"
    grep -q ' recv 16384 ' "$T/srv.7000.out" && ((rc == 0)) && [[ $out == "ok 4096" ]]
}
if command -v hping3 >/dev/null; then
    check syn_flood_legit_client_connects flood
fi

# Blind injection into an established connection (scapy in the peer namespace sees the
# real connection's ports, but not its sequence numbers: it guesses in the window).
inject() {
    serve 7001 1 || return 1
    local before_rst before_syn
    before_rst=$(stat tcp_drop_rst_inwindow)
    before_syn=$(stat tcp_drop_syn_inwindow)
    local out
    out=$(nsx "$PY" - "$TAP" <<'PYEOF'
import socket, sys, time
from scapy.all import AsyncSniffer, Ether, IP, TCP, sendp, conf
conf.verb = 0
iface = sys.argv[1]
sn = AsyncSniffer(iface=iface, filter="tcp and src host 10.200.0.1 and dst port 7001")
sn.start()
time.sleep(0.3)
s = socket.create_connection(("10.200.0.2", 7001), timeout=10)
s.sendall(b"a" * 1000)
time.sleep(0.3)
sn.stop()
sport = s.getsockname()[1]
mac = open("/sys/class/net/%s/address" % iface).read().strip()
# The attacker learns where the window is from what it saw (seq + length of the last
# segment = the daemon's RCV.NXT), then aims inside it, but not exactly at it.
last = [p for p in sn.results if TCP in p and p[TCP].sport == sport][-1]
nxt = last[TCP].seq + len(last[TCP].payload)
for flags, seq in (("R", nxt + 100), ("S", nxt + 200)):
    sendp(Ether(src=mac, dst="02:00:00:00:00:02") /
          IP(src="10.200.0.1", dst="10.200.0.2") /
          TCP(sport=sport, dport=7001, flags=flags, seq=seq), iface=iface)
time.sleep(0.2)
s.sendall(b"b" * 1000)
s.shutdown(socket.SHUT_WR)
n = 0
while True:
    d = s.recv(65536)
    if not d:
        break
    n += len(d)
print("ok", n)
PYEOF
    )
    wait "$SRV_PID"
    local rc=$?
    echo "client: $out; rst_inwindow $(stat tcp_drop_rst_inwindow) syn_inwindow $(stat tcp_drop_syn_inwindow) challenge $(stat tcp_challenge_ack)"
    cat "$T/srv.7001.out"
    ((rc == 0)) && [[ $out == "ok 4096" ]] && grep -q ' recv 2000 ' "$T/srv.7001.out" &&
        (($(stat tcp_drop_rst_inwindow) > before_rst && $(stat tcp_drop_syn_inwindow) > before_syn))
}
check blind_injection_survives inject

# Bad segments: a wrong checksum and a data offset beyond the segment.
badseg() {
    local c0 o0
    c0=$(stat tcp_drop_csum)
    o0=$(stat tcp_drop_bad_off)
    nsx "$PY" - "$TAP" <<'PYEOF'
import sys
from scapy.all import Ether, IP, TCP, Raw, sendp, conf
conf.verb = 0
iface = sys.argv[1]
mac = open("/sys/class/net/%s/address" % iface).read().strip()
eth = Ether(src=mac, dst="02:00:00:00:00:02")
sendp(eth / IP(src="10.200.0.1", dst="10.200.0.2") / TCP(sport=1234, dport=7002, flags="S", chksum=0x1234), iface=iface)
p = IP(src="10.200.0.1", dst="10.200.0.2") / TCP(sport=1234, dport=7002, flags="S", dataofs=15)
sendp(eth / p, iface=iface)
PYEOF
    wait_stat_ge tcp_drop_csum $((c0 + 1)) 5 && wait_stat_ge tcp_drop_bad_off $((o0 + 1)) 5
}
check bad_segments_counted badseg

