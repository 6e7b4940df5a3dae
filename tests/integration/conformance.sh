#!/usr/bin/env bash
# Wire-level TCP conformance (docs/conformance.md): the engine tests/conformance/tcpconf.py
# is the only peer of shmnetd on the TAP (its kernel side sits in a namespace of its own
# with no address, so the kernel never answers and never resets a scripted connection);
# it sends segments with exact sequence numbers, flags, options and timing and checks
# what comes back against the RFCs and Linux. The application side of each case is
# tests/progs/conf_app under LD_PRELOAD, driven line by line by the engine.
#
# One check per case ("PASS name" / "FAIL name: why").
#
# It runs once, on the TAP with one worker: the rules are the stack's, the same on every
# backend (`SHMNET_TEST_BACKEND=af_xdp` or `SHMNET_TEST_WORKERS=2` are skipped).
#
# Environment: CONFORMANCE_CASES="glob ..." runs only the matching cases;
# PRELOAD (default build/libshmnet_preload.so), PRELOAD_PROGS (default build/tests/progs:
# a release-built program, see preload.sh). About 25 s (40 s on a loaded machine).
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"
harness_init conf
harness_once "the TCP rules it checks are the stack's, the same on every backend and worker"

PRELOAD=${PRELOAD:-$REPO/build/libshmnet_preload.so}
P=${PRELOAD_PROGS:-$REPO/build/tests/progs}
ENGINE=$REPO/tests/conformance/tcpconf.py
for f in "$P/conf_app" "$PRELOAD"; do
    if [[ ! -e $f ]]; then
        fail conformance_setup "$f not built (make all progs)"
        exit 1
    fi
done

# Timers the cases depend on: delayed ACKs long enough to tell "at once" (< delack/2)
# from "delayed" on a noisy machine; the rest are the defaults, passed to the engine.
DELACK_MS=100
RTO_MIN_MS=200
harness_write_conf "$T/d.conf" "" \
    "tcp = { delack_ms = $DELACK_MS; rto_min_ms = $RTO_MIN_MS; rto_init_ms = 1000; };"
harness_start_daemon "$T/d.conf" || exit 1

# The TAP's kernel side in a namespace of its own, up, without any address: the kernel
# has nothing to answer with (no ARP, no RST, no ICMP; IPv6 off so it sends nothing).
conf_ns() {
    ip netns add "$NS" || return 1
    HARNESS_NETNS+=("$NS")
    nsx sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 \
        net.ipv4.ip_forward=0 >/dev/null 2>&1
    ip -n "$NS" link set lo up &&
        ip link set "$TAP" netns "$NS" &&
        ip -n "$NS" link set "$TAP" up &&
        ! ip -n "$NS" -4 addr show dev "$TAP" | grep -q inet
}
conf_ns || { fail conformance_setup "cannot set up namespace $NS"; exit 1; }

t0=$SECONDS
ncase=0
done_line=""
# shellcheck disable=SC2086 # CONFORMANCE_CASES is a list of globs
while IFS= read -r line; do
    case $line in
    PASS\ *)
        name=${line#PASS }
        ncase=$((ncase + 1))
        pass "$name"
        ;;
    FAIL\ *)
        rest=${line#FAIL }
        name=${rest%%: *}
        why=${rest#*: }
        ncase=$((ncase + 1))
        fail "$name" "$why"
        ;;
    DONE\ *) done_line=$line ;;
    *) echo "$line" | detail ;;
    esac
done < <(timeout -k 5 170 ip netns exec "$NS" "$PY" "$ENGINE" --iface "$TAP" --app "$P/conf_app" \
    --preload "$PRELOAD" --sock "$SOCK" --ctl "$SHMNETCTL" --delack-ms "$DELACK_MS" \
    --rto-min-ms "$RTO_MIN_MS" ${CONFORMANCE_CASES:-} 2>"$T/engine.err")
# The engine's details (per case time, the trace of each failing case) after the verdicts:
# written while the verdicts are, they would interleave with them in the log.
detail <"$T/engine.err"
echo "conformance: $ncase cases in $((SECONDS - t0)) s" | detail
if [[ $done_line != "DONE $ncase" ]]; then
    fail conformance_engine "the engine stopped after $ncase cases (${done_line:-no DONE line}; timeout 170 s?)"
fi
if ! kill -0 "$DPID" 2>/dev/null; then
    fail conformance_daemon_alive "shmnetd exited during the run"
fi
