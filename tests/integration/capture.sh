#!/usr/bin/env bash
# pcap tap switched on and off at run time: shmnetctl capture start/stop, read with tcpdump.
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"
harness_init cap

harness_write_conf "$T/d.conf"
harness_start_daemon "$T/d.conf" || exit 1
harness_peer_ns || { fail peer_ns "cannot set up the peer namespace"; exit 1; }

PCAP="$T/c.pcap"
not_ok() { ! "$@"; }
check capture_start_unwritable_path_fails not_ok ctl capture start "$T/no/such/dir/c.pcap"
check capture_stop_when_none_running_fails not_ok ctl capture stop
check capture_start ctl capture start "$PCAP"
check ping_while_capturing nsx ping -c 3 -W 2 "$DAEMON_IP"
check capture_stop ctl capture stop

# Frames after the stop must not be recorded (the check below wants exactly 3 of each).
nsx ping -c 2 -W 2 "$DAEMON_IP" >/dev/null 2>&1

pcap_has_echo() {
    local out req rep
    out=$(tcpdump -nn -r "$PCAP" 2>&1) || { echo "$out"; return 1; }
    echo "$out"
    req=$(grep -c "$PEER_IP > $DAEMON_IP: ICMP echo request" <<<"$out")
    rep=$(grep -c "$DAEMON_IP > $PEER_IP: ICMP echo reply" <<<"$out")
    echo "echo requests $req, replies $rep"
    ((req == 3 && rep == 3))
}
check pcap_has_3_requests_3_replies pcap_has_echo

# A second capture into another file works after the first was stopped.
check capture_restart ctl capture start "$T/d.pcap"
check ping_second_capture nsx ping -c 1 -W 2 "$DAEMON_IP"
check capture_stop_again ctl capture stop
second() { tcpdump -nn -r "$T/d.pcap" 2>/dev/null | grep -q 'ICMP echo reply'; }
check second_pcap_has_reply second

