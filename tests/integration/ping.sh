#!/usr/bin/env bash
# ICMP echo, ARP, fragmentation both ways, flood, arping, static route via a gateway,
# shmnetctl ping/neigh/route. The Linux kernel in a netns is the peer.
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"
harness_init ping

harness_write_conf "$T/d.conf"
harness_start_daemon "$T/d.conf" || exit 1
harness_peer_ns || { fail peer_ns "cannot set up the peer namespace"; exit 1; }

check ping_3 nsx ping -c 3 -W 2 "$DAEMON_IP"

arp_entry() { ip -n "$NS" neigh show "$DAEMON_IP" dev "$TAP" | grep -qi "lladdr $DAEMON_MAC"; }
check kernel_arp_cache_has_daemon_mac arp_entry

# Fragmentation: the 8028-byte request arrives in fragments (reassembly), the reply leaves
# in fragments (fragmentation).
reasm0=$(stat ip4_reasm_ok)
fragc0=$(stat ip4_frag_created)
check ping_8000_fragmented nsx ping -c 3 -W 2 -s 8000 "$DAEMON_IP"
frag_counters() {
    local r f
    r=$(stat ip4_reasm_ok) && f=$(stat ip4_frag_created) || return 1
    echo "ip4_reasm_ok $reasm0 -> $r, ip4_frag_created $fragc0 -> $f"
    ((r >= reasm0 + 3 && f >= fragc0 + 3 * 6))
}
check frag_counters_increased frag_counters

flood() {
    local out
    out=$(nsx ping -f -c 10000 -q -W 2 "$DAEMON_IP" 2>&1)
    echo "$out"
    grep -q ' 0% packet loss' <<<"$out"
}
check flood_10000_no_loss flood

# Habets arping: one "... bytes from MAC (IP): index=N ..." line per reply.
arping_3() {
    local out n
    out=$(nsx arping -c 3 -w 5 -I "$TAP" "$DAEMON_IP" 2>&1)
    echo "$out"
    n=$(grep -ci "bytes from $DAEMON_MAC" <<<"$out")
    ((n == 3))
}
check arping_3_replies arping_3

# A second kernel-side subnet behind the gateway 10.200.0.1 (an address on lo in $NS; no
# dummy module needed): the daemon's replies to 10.201.0.1 only arrive if it uses its route
# "10.201.0.0/24 via 10.200.0.1" (10.201.0.1 is not on its link).
# arp_ignore=1: the kernel answers ARP only for addresses on the receiving interface, so a
# daemon that wrongly took 10.201.0.1 for on-link would get no answer.
ip -n "$NS" addr add 10.201.0.1/32 dev lo
nsx sysctl -qw net.ipv4.conf.all.arp_ignore=1 "net.ipv4.conf.$TAP.arp_ignore=1"
check ping_via_gateway_route nsx ping -c 3 -W 2 -I 10.201.0.1 "$DAEMON_IP"

ctl_ping() {
    local out
    out=$(ctl ping 10.201.0.1 3 2>&1)
    local rc=$?
    echo "$out"
    ((rc == 0)) || return 1
    # "3 packets transmitted, 3 received" or "3 replies" style: the reply count must be 3.
    grep -Eiq '(^|[^0-9])3 (packets )?(received|repl)' <<<"$out"
}
check shmnetctl_ping_via_route ctl_ping

neigh_has_gw() {
    local mac out
    mac=$(peer_mac) || return 1
    out=$(ctl neigh 2>&1) || { echo "$out"; return 1; }
    echo "$out"
    grep -i "$PEER_IP" <<<"$out" | grep -qi "$mac"
}
check shmnetctl_neigh_gateway neigh_has_gw
no_offlink_neigh() { ! ctl neigh | grep -q '10\.201\.0\.1[^0-9]'; }
check no_neigh_entry_for_offlink_host no_offlink_neigh

route_list() {
    local out
    out=$(ctl route 2>&1) || { echo "$out"; return 1; }
    echo "$out"
    grep '10\.201\.0\.0/24' <<<"$out" | grep -q '10\.200\.0\.1' &&
        grep -q '10\.200\.0\.0/24' <<<"$out"
}
check shmnetctl_route_lists_routes route_list
