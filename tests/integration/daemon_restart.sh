#!/usr/bin/env bash
# The daemon dies under a client: a native client blocked in recv (and a thread blocked in
# poll) returns -1 promptly (ECONNRESET/ENOTCONN/EPIPE) when shmnetd is killed with SIGKILL
# and, separately, stopped with SIGTERM; later calls fail too; once the daemon runs again a
# new socket in the same process works (re-attach).
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"
harness_init rst
harness_tap_only "the TAP device life cycle (tests/integration/xdp.sh restarts on AF_XDP)"

PROGS=${PROGS:-$(dirname "$SHMNETD")/tests/progs}
PROMPT_MS=${PROMPT_MS:-2000} # bound for "promptly"
if [[ ! -x $PROGS/udp_block_recv ]]; then
    fail rst_setup "$PROGS/udp_block_recv not built (make progs)"
    exit 1
fi
export SHMNET_SOCKET=$SOCK

harness_write_conf "$T/d.conf"
KECHO_PY=$(cd "$(dirname "$0")/../lib" && pwd)/kecho.py

# The TAP goes away with the daemon: each start needs the kernel side set up again (the
# namespace stays).
ip netns add "$NS" || { fail peer_ns "cannot create $NS"; exit 1; }
HARNESS_NETNS+=("$NS")
ip -n "$NS" link set lo up
peer_up() {
    ip link set "$TAP" netns "$NS" &&
        ip -n "$NS" addr add "$PEER_IP/24" dev "$TAP" &&
        ip -n "$NS" link set "$TAP" up
}
mkfifo "$T/kecho.out"
ip netns exec "$NS" "$PY" "$KECHO_PY" 7000 >"$T/kecho.out" 2>"$T/kecho.err" &
KECHO=$!
HARNESS_PIDS+=("$KECHO")
exec {KFD}<"$T/kecho.out"
kecho_ready() { read -r -t 10 -u "$KFD" line && [[ $line == READY ]]; }
check kernel_echo_ready kecho_ready || exit 1

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# one_case HOW: HOW = KILL or TERM
one_case() {
    local how=$1 c=${1,,} pid ofd ifd t0 dt rc
    harness_start_daemon "$T/d.conf" || return 1
    peer_up || { fail "${c}_peer" "cannot move $TAP into $NS"; return 1; }
    mkfifo "$T/$c.out" "$T/$c.in"
    exec {ifd}<>"$T/$c.in"
    "$PROGS/udp_block_recv" "$PEER_IP" 7000 <"$T/$c.in" >"$T/$c.out" 2>"$T/$c.err" &
    pid=$!
    HARNESS_PIDS+=("$pid")
    exec {ofd}<"$T/$c.out"
    ready() { read -r -t 10 -u "$ofd" LINE && [[ $LINE =~ ^READY\ [0-9]+$ ]]; }
    check "${c}_client_ready" ready || return 1
    # Blocked for real: both sockets exist in the daemon and recv has not returned.
    listed() { [[ $(ctl sockets | grep -c '^udp ') == 2 ]]; }
    check "${c}_sockets_listed" wait_until 5 listed
    still_blocked() { ! read -r -t 0.3 -u "$ofd" LINE; }
    check "${c}_recv_is_blocked" still_blocked

    t0=$(now_ms)
    if [[ $how == KILL ]]; then
        kill -KILL "$DPID"
        wait "$DPID"
        DPID=""
    else
        harness_stop_daemon # SIGTERM, checks exit status 0 and a clean log
    fi
    got_lines() {
        local l1 l2
        read -r -t 10 -u "$ofd" l1 && read -r -t 10 -u "$ofd" l2 || return 1
        dt=$(($(now_ms) - t0))
        echo "after ${dt} ms: '$l1' '$l2'"
        RECV_LINE=$(printf '%s\n%s\n' "$l1" "$l2" | grep '^RECV ')
        POLL_LINE=$(printf '%s\n%s\n' "$l1" "$l2" | grep '^POLL ')
        [[ -n $RECV_LINE && -n $POLL_LINE ]]
    }
    check "${c}_blocked_calls_return" got_lines || return 1
    prompt() { echo "$dt ms (bound $PROMPT_MS ms)"; ((dt <= PROMPT_MS)); }
    check "${c}_returned_promptly" prompt
    recv_err() {
        echo "$RECV_LINE"
        [[ $RECV_LINE =~ ^RECV\ -1\ (ECONNRESET|ENOTCONN|EPIPE)$ ]]
    }
    check "${c}_recv_fails_with_reset" recv_err
    poll_err() {
        echo "$POLL_LINE"
        # poll reports the dead connection as an error/hang-up on the socket (or -1)
        if [[ $POLL_LINE =~ ^POLL\ 1\ (0x[0-9a-f]+) ]]; then
            ((BASH_REMATCH[1] & 0x18)) # POLLERR | POLLHUP
        else
            [[ $POLL_LINE =~ ^POLL\ -1 ]]
        fi
    }
    check "${c}_poll_returns_error" poll_err
    later() {
        read -r -t 10 -u "$ofd" LINE || return 1
        echo "$LINE"
        [[ $LINE =~ ^LATER\ send\ -1\ (ECONNRESET|ENOTCONN|EPIPE)\ recv\ -1\ (ECONNRESET|ENOTCONN|EPIPE)$ ]]
    }
    check "${c}_later_calls_fail" later

    # The daemon again, then a new socket in the same process.
    harness_start_daemon "$T/d.conf" || return 1
    peer_up || { fail "${c}_peer_2" "cannot move $TAP into $NS"; return 1; }
    echo go >&"$ifd"
    reattach() {
        wait "$pid"
        rc=$?
        LINE=$(cat <&"$ofd")
        echo "rc $rc: $LINE"
        ((rc == 0)) && [[ $LINE == "REATTACH ok" ]]
    }
    check "${c}_reattach_new_socket_works" reattach
    exec {ofd}<&- {ifd}>&-
    harness_stop_daemon
}

one_case KILL
one_case TERM
kill "$KECHO"
