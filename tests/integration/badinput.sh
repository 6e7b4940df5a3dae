#!/usr/bin/env bash
# Malformed and hostile frames from the peer namespace (scapy, tests/lib/badframes.py):
# each class must be dropped and counted under its own drop counter, and the daemon must
# keep answering afterwards.
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"
harness_init bad

# Short reassembly timeout so that abandoned datagrams time out within the test.
harness_write_conf "$T/d.conf" "" 'ip = { frag_timeout_ms = 1000; };'
harness_start_daemon "$T/d.conf" || exit 1
harness_peer_ns || { fail peer_ns "cannot set up the peer namespace"; exit 1; }

check ping_before nsx ping -c 1 -W 2 "$DAEMON_IP"

# expect_drop CASE COUNTER [INCREASE=1]: send CASE, COUNTER must grow by INCREASE.
expect_drop() {
    local case=$1 counter=$2 inc=${3:-1} before after
    if ! before=$(stat "$counter"); then
        fail "drop_${case}" "no counter $counter in shmnetctl stats"
        return
    fi
    if ! nsx "$PY" "$HARNESS_LIB/badframes.py" "$TAP" "$case" >"$T/send.out" 2>&1; then
        fail "drop_${case}" "could not send: $(tail -n 1 "$T/send.out")"
        return
    fi
    if wait_stat_ge "$counter" $((before + inc)) 5; then
        pass "drop_${case}"
    else
        after=$(stat "$counter")
        fail "drop_${case}" "$counter $before -> $after, expected +$inc"
    fi
}

# A frame shorter than an Ethernet header cannot reach the TAP from the kernel: the kernel's
# packet socket pads it to a full header (dev_validate_header), so eth_drop_short is covered
# by the unit tests only.
skip drop_eth_short "the kernel pads frames shorter than 14 bytes before they reach the TAP"
expect_drop ip_short ip4_drop_short
expect_drop ip_csum ip4_drop_csum
expect_drop ip_ihl3 ip4_drop_ihl
expect_drop ip_ihl15 ip4_drop_ihl
expect_drop ip_len ip4_drop_len
expect_drop icmp_csum icmp_drop_csum
expect_drop arp_wrong_subnet arp_drop_wrong_subnet
expect_drop frag_overlap ip4_frag_drop_overlap
expect_drop frag_many ip4_frag_drop_too_many
# 2000 never-completed datagrams against a table of frag_max_datagrams (64): the oldest
# are evicted and counted.
expect_drop frag_flood ip4_frag_drop_mem 100

# What is left in the table expires after frag_timeout_ms (1 s).
timeouts() { wait_stat_ge ip4_frag_drop_timeout 1 5; }
check frag_timeout_expires_leftovers timeouts

# The daemon is still healthy: echo, and reassembly still works after the flood.
check ping_after nsx ping -c 3 -W 2 "$DAEMON_IP"
check ping_fragmented_after nsx ping -c 2 -W 2 -s 4000 "$DAEMON_IP"
