#!/usr/bin/env bash
# The control socket against local users who abuse it (tests/lib/ctlflood.py):
#   - one allowed uid opens 1100 connections (more than the daemon's 1024 slots) that send
#     nothing: it gets daemon.ctl_max_per_uid of them, and root's shmnetctl and attach and
#     another user's shmnetctl still work;
#   - it opens 1100 that ask for a large `sockets` answer and never read: 64 are served,
#     the daemon's memory stays bounded, the unread answers are dropped after the write
#     timeout (ctl_drop_slow_reader);
#   - daemon.ctl_max_output: a larger answer to a uid other than root is refused;
#   - a uid that is not allowed floods 2000 connections: a few log lines, then
#     "N messages suppressed", not one line per connection;
#   - that uid's preloaded program gets EACCES from socket() (the native API too) and one
#     stderr line naming the uid and daemon.allowed_users/allowed_groups; its shmnetctl
#     says the same; SHMNET_FALLBACK=kernel still falls back;
#   - at clients.max_clients the attach fails with EUSERS and the line says so.
# Environment: PRELOAD, LIBSHMNET (default build/: release, so that python can load them).
# About 15 s (the write timeout is 10 s).
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"
harness_init ctla
harness_once "the control plane and client credentials do not depend on the NIC"

PRELOAD=${PRELOAD:-$REPO/build/libshmnet_preload.so}
LIBSHMNET=${LIBSHMNET:-$REPO/build/libshmnet.so}
FLOOD=$HARNESS_LIB/ctlflood.py
ATTACKER=65534 # allowed; floods
OTHER=65533    # allowed; must still get through
STRANGER=65532 # not allowed
NFLOOD=1100    # more than the daemon's 1024 control slots
HOLD_SOCKETS=4000
for f in "$PRELOAD" "$LIBSHMNET"; do
    [[ -f $f ]] || { fail ctla_setup "$f not built (make)"; exit 1; }
done

asu() { # UID: the command prefix that runs as that uid, without groups
    AS=(setpriv --reuid="$1" --regid="$1" --clear-groups)
}
as() { # UID CMD...
    local AS
    asu "$1"
    shift
    "${AS[@]}" "$@"
}
bgrun() { # NAME CMD...: background, stdout/stderr in $T/NAME.out/.err, pid in BG_PID
    local name=$1
    shift
    "$@" </dev/null >"$T/$name.out" 2>"$T/$name.err" &
    BG_PID=$!
    HARNESS_PIDS+=("$BG_PID")
}
has_line() { grep -Eq "$2" "$1" 2>/dev/null; }
rss_kb() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$DPID/status"; }
reloads() { grep -c 'configuration reloaded' "$DLOG"; }
reloaded_since() { (($(reloads) > $1)); }
reload_with() { # DAEMON_OPTS [CLIENTS_OPTS]: rewrite the config, SIGHUP, wait for it to apply
    local n
    n=$(reloads)
    HARNESS_DAEMON_OPTS=$1 harness_write_conf "$CONF" "" "clients = { $CLIENTS ${2:-} };"
    kill -HUP "$DPID"
    wait_until 10 reloaded_since "$n"
}
# A preloaded python as uid U: NSOCK socket() calls, each printing "ok" or the errno name.
sockets_as() { # UID NSOCK [ENV...]
    local u=$1 n=$2
    shift 2
    as "$u" env LD_PRELOAD="$PRELOAD" SHMNET_SOCKET="$SOCK" "$@" "$PY" -c '
import errno, socket, sys
for _ in range(int(sys.argv[1])):
    try:
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        print("ok")
    except OSError as e:
        print(errno.errorcode.get(e.errno, e.errno))' "$n"
}

OPTS="allowed_users = [ 0, $ATTACKER, $OTHER ];"
# Small socket buffers: the holder's many sockets fit one process's fifo arena.
CLIENTS="rcvbuf = 4096; sndbuf = 4096;"
CONF=$T/d.conf
chmod 755 "$T" # the other uids reach the socket and the scripts
# ASan's quarantine of freed memory would count in the daemon's RSS: keep it small.
export ASAN_OPTIONS=$ASAN_OPTIONS:quarantine_size_mb=8
HARNESS_DAEMON_OPTS=$OPTS harness_write_conf "$CONF" "" "clients = { $CLIENTS };"
harness_start_daemon "$CONF" || exit 1

# Root holds a session with many sockets: `sockets` answers are then larger than the
# kernel's socket buffer, so a reader that does not read keeps its connection open.
bgrun holder env LD_PRELOAD="$PRELOAD" SHMNET_SOCKET="$SOCK" "$PY" -u -c '
import signal, socket, sys
s = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(int(sys.argv[1]))]
print("READY", len(s), flush=True)
signal.pause()' "$HOLD_SOCKETS"
HOLDER=$BG_PID
holder_ready() {
    wait_until 60 has_line "$T/holder.out" '^READY' || { cat "$T/holder.err"; return 1; }
    local n
    n=$(ctl sockets | wc -c)
    echo "sockets answer: $n bytes"
    ((n > 262144))
}
check ctla_holder_with_big_sockets_answer holder_ready || exit 1

# ---- one allowed uid takes every control slot it can ----
# Connections that send nothing hold a slot for the 5 s read timeout: the checks run within it.
asu "$ATTACKER"
bgrun lockout "${AS[@]}" "$PY" -u "$FLOOD" "$SOCK" "$NFLOOD" "" open
LOCKOUT_PID=$BG_PID
lockout_ready() {
    wait_until 30 has_line "$T/lockout.out" '^OPEN' || { cat "$T/lockout.err"; return 1; }
    cat "$T/lockout.out"
}
check ctla_lockout_connected lockout_ready
root_ctl() { ctl stats | grep -q '^udp_rx '; }
check ctl_root_shmnetctl_during_flood root_ctl
other_ctl() { as "$OTHER" "$SHMNETCTL" -s "$SOCK" version | grep -q '^shmnetd '; }
check ctl_other_user_shmnetctl_during_flood other_ctl
root_attach() { [[ $(sockets_as 0 1) == ok ]]; }
check ctl_root_attach_during_flood root_attach
check ctl_flood_refused_per_uid wait_until 10 stat_ge ctl_refused_uid_limit $((NFLOOD - 64))
kill "$LOCKOUT_PID" 2>/dev/null
wait "$LOCKOUT_PID" 2>/dev/null

# Connections that ask for the large answer and never read it: the daemon holds at most
# ctl_max_per_uid answers of at most ctl_max_output bytes for them (64 MiB by default).
RSS0=$(rss_kb)
bgrun flood "${AS[@]}" "$PY" -u "$FLOOD" "$SOCK" "$NFLOOD" sockets hold
FLOOD_PID=$BG_PID
flood_ready() {
    wait_until 60 has_line "$T/flood.out" '^READY' || { cat "$T/flood.err"; return 1; }
    cat "$T/flood.out"
}
check ctla_flood_connected flood_ready
per_uid() { # of the connections the flood holds, 64 were served (the others refused)
    local f
    read -ra f <"$T/flood.out"
    echo "flood: ${f[*]}"
    ((f[2] - f[6] - f[8] == 64))
}
check ctl_flood_served_per_uid per_uid
mem_bounded() {
    local rss1
    rss1=$(rss_kb)
    echo "daemon VmRSS ${RSS0} kB before the flood, ${rss1} kB during it"
    ((rss1 - RSS0 < 64 * 1024))
}
check ctl_flood_memory_bounded mem_bounded
# Nobody reads: the answers are dropped after the write timeout, and counted.
check ctl_slow_readers_dropped wait_until 20 stat_ge ctl_drop_slow_reader 64
kill "$FLOOD_PID" 2>/dev/null
wait "$FLOOD_PID" 2>/dev/null

# ---- an answer larger than ctl_max_output, to a uid other than root ----
reload_with "$OPTS ctl_max_output = 65536;" || fail ctla_reload "output limit not applied"
too_large() {
    local out
    out=$(as "$ATTACKER" "$SHMNETCTL" -s "$SOCK" sockets) && return 1
    echo "$out"
    grep -q '^error: the answer is [0-9]* bytes, more than daemon.ctl_max_output (65536)' <<<"$out" &&
        stat_ge ctl_drop_output_limit 1 && (($(ctl sockets | wc -c) > 65536))
}
check ctl_max_output_refuses_large_answer too_large
reload_with "$OPTS" || fail ctla_reload "config not restored"

# ---- a uid that is not allowed: few log lines for many refusals ----
refusals() { echo $(($(stat ctl_refused_permission) + $(stat ctl_refused_uid_limit))); }
refusals_ge() { (($(refusals) >= $1)); }
log_flood() {
    local before after r0
    before=$(grep -c "uid $STRANGER" "$DLOG")
    r0=$(refusals 2>/dev/null)
    as "$STRANGER" "$PY" -u "$FLOOD" "$SOCK" 2000 stats close || return 1
    # Every connection refused (and logged, or not) before the count.
    wait_until 10 refusals_ge $((r0 + 2000))
    after=$(grep -c "uid $STRANGER" "$DLOG")
    echo "log lines about uid $STRANGER: $((after - before)) for 2000 refused connections"
    grep "uid $STRANGER" "$DLOG" | tail -n 3
    ((after - before <= 40))
}
check ctl_refusals_log_rate_limited log_flood
refuse_and_look() {
    as "$STRANGER" "$SHMNETCTL" -s "$SOCK" version >/dev/null 2>&1
    grep -q 'messages suppressed' "$DLOG"
}
suppressed() {
    wait_until 15 refuse_and_look || return 1
    grep 'messages suppressed' "$DLOG" | head -n 3
}
check ctl_refusals_log_reports_suppressed suppressed

# ---- refused for its credentials: EACCES, and a line that says why ----
denied_preload() {
    local out n
    out=$(sockets_as "$STRANGER" 3 2>"$T/denied.err")
    echo "$out"
    echo "stderr:"
    cat "$T/denied.err"
    [[ $(tr '\n' ' ' <<<"$out") == "EACCES EACCES EACCES " ]] || return 1
    n=$(wc -l <"$T/denied.err")
    ((n == 1)) || { echo "$n lines on stderr, want 1"; return 1; }
    grep "uid $STRANGER" "$T/denied.err" | grep 'daemon.allowed_users' |
        grep 'daemon.allowed_groups' | grep -q 'EACCES'
}
check ctl_denied_preload_socket_eacces denied_preload
denied_native() {
    local out
    out=$(as "$STRANGER" env SHMNET_SOCKET="$SOCK" "$PY" -c '
import ctypes, errno, sys
lib = ctypes.CDLL(sys.argv[1], use_errno=True)
r = lib.shmnet_socket(2, 2, 0)
print(r, errno.errorcode.get(ctypes.get_errno(), ctypes.get_errno()))' "$LIBSHMNET" 2>&1)
    echo "$out"
    grep -q '^-1 EACCES$' <<<"$out" && grep -q "uid $STRANGER is not in daemon.allowed_users" <<<"$out"
}
check ctl_denied_native_socket_eacces denied_native
denied_ctl() {
    local out
    out=$(as "$STRANGER" "$SHMNETCTL" -s "$SOCK" stats) && return 1
    echo "$out"
    [[ $out == "error: permission denied: uid $STRANGER is not in daemon.allowed_users or daemon.allowed_groups" ]]
}
check ctl_denied_shmnetctl_says_why denied_ctl
denied_fallback() {
    local out
    out=$(sockets_as "$STRANGER" 1 SHMNET_FALLBACK=kernel 2>"$T/fallback.err")
    echo "$out"
    cat "$T/fallback.err"
    [[ $out == ok ]] && grep "uid $STRANGER" "$T/fallback.err" | grep -q 'using kernel sockets'
}
check ctl_denied_fallback_kernel denied_fallback

# ---- clients.max_clients: the holder is the one client ----
reload_with "$OPTS" "max_clients = 1;" || fail ctla_reload "max_clients not applied"
max_clients() {
    local out
    out=$(sockets_as 0 2 2>"$T/users.err")
    echo "$out"
    cat "$T/users.err"
    [[ $(tr '\n' ' ' <<<"$out") == "EUSERS EUSERS " ]] &&
        grep 'clients.max_clients' "$T/users.err" | grep -q '(EUSERS)' &&
        ! grep -q 'ENETUNREACH' "$T/users.err"
}
check ctl_max_clients_eusers_agrees max_clients

# ---- clients.max_per_uid, and the slots kept for root (the last sixteenth, at least one)
nclients() { ctl clients | grep -c '^client '; }
hold_as() { # NAME UID: a process of uid UID with one socket (an attached session), kept
    bgrun "$1" as "$2" env LD_PRELOAD="$PRELOAD" SHMNET_SOCKET="$SOCK" "$PY" -u -c '
import errno, signal, socket
try:
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    print("HELD", flush=True)
    signal.pause()
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno), flush=True)'
    wait_until 10 has_line "$T/$1.out" '^(HELD|E[A-Z]+)$'
}
base=$(nclients)
reload_with "$OPTS" "max_clients = $((base + 8)); max_per_uid = 2;" ||
    fail ctla_reload "max_per_uid not applied"
per_uid() { # two processes of OTHER attach, a third is refused
    hold_as o1 "$OTHER" && hold_as o2 "$OTHER" && hold_as o3 "$OTHER"
    cat "$T"/o[123].out "$T/o3.err"
    has_line "$T/o1.out" '^HELD$' && has_line "$T/o2.out" '^HELD$' &&
        has_line "$T/o3.out" '^EUSERS$' && grep -q 'clients.max_per_uid' "$T/o3.err"
}
check ctl_max_per_uid_eusers per_uid
base=$(nclients)
reload_with "$OPTS" "max_clients = $((base + 2)); max_per_uid = 64;" ||
    fail ctla_reload "max_clients not applied"
root_reserve() { # two slots left: the attacker gets one, the last is root's
    hold_as a1 "$ATTACKER" && hold_as a2 "$ATTACKER" && hold_as r1 0
    cat "$T"/a[12].out "$T/r1.out"
    has_line "$T/a1.out" '^HELD$' && has_line "$T/a2.out" '^EUSERS$' && has_line "$T/r1.out" '^HELD$'
}
check ctl_max_clients_root_reserve root_reserve

# ---- out of descriptors: accept pauses instead of spinning on the pending connection
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$DPID/stat"; }
nofile=$(($(ls "/proc/$DPID/fd" | wc -l) + 4))
prlimit --pid "$DPID" --nofile="$nofile:$nofile"
bgrun fdhog "$PY" -c '
import socket, sys, time
ss = []
for _ in range(16):
    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); ss.append(s)
print("OPEN", flush=True)
time.sleep(3)' "$SOCK"
FDHOG=$BG_PID
emfile_no_spin() {
    local t0 t1
    wait_until 10 has_line "$T/fdhog.out" '^OPEN' || return 1
    t0=$(cpu_ticks)
    sleep 1
    t1=$(cpu_ticks)
    echo "daemon CPU in 1 s at the descriptor limit: $((t1 - t0)) ticks"
    ((t1 - t0 < 10))
}
check ctl_emfile_accept_does_not_spin emfile_no_spin
wait "$FDHOG" 2>/dev/null
prlimit --pid "$DPID" --nofile=65536:65536 2>/dev/null || prlimit --pid "$DPID" --nofile=4096:4096
emfile_recovers() { wait_until 5 stat_ge ctl_accept_paused 1 && ctl stats >/dev/null; }
check ctl_emfile_counted_and_recovers emfile_recovers

kill "$HOLDER" 2>/dev/null
wait "$HOLDER" 2>/dev/null
harness_stop_daemon
