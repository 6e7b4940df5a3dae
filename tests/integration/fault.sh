#!/usr/bin/env bash
# Fault injector on the TAP interface: 10% loss each way must show up as end-to-end loss
# (about 19% for a request/reply pair) and in the fault_drop_loss counter.
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"
harness_init flt

harness_write_conf "$T/d.conf" 'fault = { loss = 0.1; seed = 7; direction = "both"; };'
harness_start_daemon "$T/d.conf" || exit 1
harness_peer_ns || { fail peer_ns "cannot set up the peer namespace"; exit 1; }

# Let ARP resolve first (its frames are subject to loss too): up to 10 tries.
warm() { nsx ping -c 10 -i 0.05 -W 1 -w 5 "$DAEMON_IP" | grep -q ' bytes from '; }
check first_echo_through_lossy_link warm

drops0=$(stat fault_drop_loss)
echo0=$(stat icmp_rx_echo)
reply0=$(stat icmp_tx_echo_reply)
RECEIVED=""
lossy_ping() {
    local out pct
    out=$(nsx ping -c 200 -i 0.01 -W 1 -q "$DAEMON_IP" 2>&1)
    echo "$out"
    RECEIVED=$(sed -nE 's/.* ([0-9]+) received.*/\1/p' <<<"$out")
    pct=$(sed -nE 's/.* ([0-9.]+)% packet loss.*/\1/p' <<<"$out")
    pct=${pct%%.*}
    echo "loss ${pct:-?}%"
    [[ -n $pct ]] && ((pct >= 8 && pct <= 35))
}
check ping_200_loss_between_8_and_35_percent lossy_ping

# Both directions lose frames: some of the 200 requests never reached ICMP (RX loss), and
# some replies the daemon sent never reached the kernel (TX loss).
both_ways() {
    local e r
    e=$(stat icmp_rx_echo) && r=$(stat icmp_tx_echo_reply) || return 1
    e=$((e - echo0)) r=$((r - reply0))
    echo "requests reaching the daemon: $e of 200; replies sent: $r; received: ${RECEIVED:-?}"
    [[ -n $RECEIVED ]] && ((e < 200 && RECEIVED < r))
}
check loss_in_both_directions both_ways

counted() {
    local d
    d=$(stat fault_drop_loss) || return 1
    echo "fault_drop_loss $drops0 -> $d"
    ((d - drops0 >= 10))
}
check fault_drop_loss_counted counted
