#!/usr/bin/env bash
# API semantics of the LD_PRELOAD interposer: small ordinary socket programs
# (tests/progs/preload_*.c: plain libc calls, nothing shmnet-specific) run with
# LD_PRELOAD=$PRELOAD SHMNET_SOCKET=$SOCK against the Linux kernel across the TAP (the
# kernel peer is tests/lib-style python in $NS, 10.200.0.1; shmnet is 10.200.0.2).
#
#   preload_io     TCP read/write/readv/writev/sendmsg/recvmsg/MSG_PEEK/MSG_DONTWAIT/
#                  shutdown, UDP sendmsg/recvmsg/sendto/recvfrom/truncation/connected/
#                  sendmmsg/recvmmsg, sendfile (SHA-256 by the peer), dup/dup2/dup3/F_DUPFD
#                  (closing a copy keeps the socket; the last close reaches the peer),
#                  fcntl O_NONBLOCK, FIONBIO, FIONREAD, SOCK_NONBLOCK connect, SO_RCVTIMEO,
#                  FD_CLOEXEC, socket options, fstat S_ISSOCK
#   preload_wait   poll/ppoll/select/pselect/epoll over a kernel pipe AND a socket: blocks
#                  until one is ready, < 0.3 s CPU per second blocked; EPOLLET, EPOLLONESHOT,
#                  EPOLL_CTL_DEL, EPOLLRDHUP/POLLRDHUP, EINTR from a signal handler
#   preload_proc   fork (the child accepts on the inherited listener; the parent closing its
#                  copy), a connection used across fork, accept in one thread and read in
#                  another, AF_UNIX/pipe/SCM_RIGHTS/eventfd/netlink passthrough, AF_INET6 per
#                  SHMNET_INET6, no daemon (ECONNREFUSED/ENETUNREACH and one stderr line),
#                  SHMNET_FALLBACK=kernel, and sockets listed by `shmnetctl sockets`
# Every check that moves data also requires the daemon's counters to move (tcp_active_opens,
# tcp_passive_opens, udp_delivered): the socket really went through shmnet.
#
# The programs run in a namespace of their own ($CNS, only `lo`): a call the interposer does
# not take fails (ENETUNREACH) instead of reaching anything through the root namespace.
#
# Environment: PRELOAD (default build/libshmnet_preload.so), PRELOAD_PROGS (default
# build/tests/progs: the release build; an ASan-built program cannot be LD_PRELOADed with a
# library that precedes the ASan runtime), SELFTEST_KERNEL=1 (the programs on kernel sockets
# over a veth, without LD_PRELOAD: validates the programs and the peer; shmnet-only checks
# are skipped). About 40 s.
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"
harness_init prel

PRELOAD=${PRELOAD:-$REPO/build/libshmnet_preload.so}
P=${PRELOAD_PROGS:-$REPO/build/tests/progs}
SELFTEST_KERNEL=${SELFTEST_KERNEL:-0}
for b in preload_io preload_wait preload_proc; do
    if [[ ! -x $P/$b ]]; then
        fail prel_setup "$P/$b not built (make progs)"
        exit 1
    fi
done
if ((!SELFTEST_KERNEL)) && [[ ! -f $PRELOAD ]]; then
    fail prel_setup "$PRELOAD not built (make)"
    exit 1
fi

harness_write_conf "$T/d.conf"
harness_start_daemon "$T/d.conf" || exit 1
harness_peer_ns || { fail peer_ns "cannot set up the peer namespace"; exit 1; }

# ---- the preloaded programs' namespace (see tests/integration/apps.sh) ----
CNS="shmn-${TAG}c-$$"
client_ns() {
    ip netns add "$CNS" || return 1
    HARNESS_NETNS+=("$CNS")
    ip -n "$CNS" link set lo up || return 1
    if ((SELFTEST_KERNEL)); then
        local vc="vc$TAG$$" vn="vn$TAG$$"
        ip link add "$vc" netns "$CNS" type veth peer name "$vn" netns "$NS" &&
            ip -n "$CNS" addr add "$DAEMON_IP/24" dev "$vc" && ip -n "$CNS" link set "$vc" up &&
            ip -n "$NS" link set "$vn" up && ip -n "$NS" route add "$DAEMON_IP/32" dev "$vn"
    fi
}
client_ns || { fail client_ns "cannot set up namespace $CNS"; exit 1; }
# ::1 for the SHMNET_INET6=kernel check
ip netns exec "$CNS" sysctl -qw net.ipv6.conf.lo.disable_ipv6=0 2>/dev/null
if ((SELFTEST_KERNEL)); then
    PX=(ip netns exec "$CNS" env)
    echo "SELFTEST_KERNEL=1: the programs run on kernel sockets over a veth" | detail
else
    PX=(ip netns exec "$CNS" env LD_PRELOAD="$PRELOAD" SHMNET_SOCKET="$SOCK")
fi
KX=(ip netns exec "$NS")
tpx() { local s=$1; shift; timeout -k 5 "$s" "${PX[@]}" "$@"; }
tkx() { local s=$1; shift; timeout -k 5 "$s" "${KX[@]}" "$@"; }

sha() { sha256sum "$1" 2>/dev/null | cut -d' ' -f1; }
fsize() { wc -c <"$1" 2>/dev/null | tr -d ' ' || echo 0; }
ctr() {
    if ((SELFTEST_KERNEL)); then echo 0; else stat "$1" 2>/dev/null || echo 0; fi
}
went_through() { # COUNTER BEFORE
    ((SELFTEST_KERNEL)) && return 0
    local now
    now=$(ctr "$1")
    if ((now > $2)); then
        echo "$1: $2 -> $now"
        return 0
    fi
    echo "$1 did not move ($2 -> $now): this socket did not go through shmnet"
    return 1
}
bg() { # NAME CMD...: background, stdout/stderr in $T/NAME.out/.err, pid in BG_PID
    local name=$1
    shift
    "$@" </dev/null >"$T/$name.out" 2>"$T/$name.err" &
    BG_PID=$!
    HARNESS_PIDS+=("$BG_PID")
}
gone() {
    local s
    s=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
    [[ -z $s || $s == Z ]]
}
wait_exit() { # PID SECONDS: exit status of a background child, 124 if it had to be killed
    local p=$1 end=$((SECONDS + $2))
    while ! gone "$p"; do
        if ((SECONDS >= end)); then
            kill -TERM "$p" 2>/dev/null
            sleep 0.5
            kill -KILL "$p" 2>/dev/null
            wait "$p" 2>/dev/null
            echo "pid $p still running after $2 s: killed"
            return 124
        fi
        sleep 0.05
    done
    wait "$p"
}
has_line() { grep -q "$2" "$1" 2>/dev/null; } # FILE REGEX

# ---- the kernel peer: line commands over TCP, UDP echo on the same port; "client" mode ----
cat >"$T/peer.py" <<'EOF'
import hashlib, socket, sys, threading, time

BLOCK = bytes(((i * 131 + 7) & 0xFF) for i in range(256))
lock = threading.Lock()

def log(*a):
    with lock:
        print(*a, flush=True)

def pattern(off, n):
    s = off % 256
    return (BLOCK * ((s + n) // 256 + 1))[s:s + n]

def conn(c, addr):
    port, buf, sent, n = addr[1], b"", 0, 0
    try:
        while True:
            while b"\n" not in buf:
                d = c.recv(65536)
                if not d:
                    log("eof", port, 0)
                    return
                buf += d
            line, buf = buf.split(b"\n", 1)
            cmd = line.decode().split()
            if cmd[0] == "ECHO":
                n = len(buf)
                c.sendall(buf)
                while True:
                    d = c.recv(1 << 20)
                    if not d:
                        break
                    n += len(d)
                    c.sendall(d)
                log("eof", port, n)
                return
            if cmd[0] in ("SINK", "SLOWSINK", "HOLD"):
                h, n = hashlib.sha256(buf), len(buf)
                slow = cmd[0] == "SLOWSINK"  # small reads with pauses: the sender fills up
                while True:
                    d = c.recv(16384 if slow else 1 << 20)
                    if not d:
                        break
                    h.update(d)
                    n += len(d)
                    if slow:
                        time.sleep(0.001)
                if cmd[0] != "HOLD":
                    c.sendall(b"%d %s\n" % (n, h.hexdigest().encode()))
                    log("sink", port, n, h.hexdigest())
                log("eof", port, n)
                return
            if cmd[0] == "SEND":
                time.sleep(int(cmd[2]) / 1000)
                c.sendall(pattern(sent, int(cmd[1])))
                sent += int(cmd[1])
            elif cmd[0] == "SHUTWR":
                time.sleep(int(cmd[1]) / 1000)
                c.shutdown(socket.SHUT_WR)
            else:
                log("bad command", line)
                return
    except Exception as e:
        log("error", port, repr(e))
    finally:
        c.close()

def udp_echo(u):
    while True:
        d, a = u.recvfrom(65535)
        u.sendto(d, a)

if sys.argv[1] == "client":  # client IP PORT FILE: send FILE, SHUT_WR, read to EOF
    c = socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=30)
    with open(sys.argv[4], "rb") as f:
        c.sendall(f.read())
    c.shutdown(socket.SHUT_WR)
    h, n = hashlib.sha256(), 0
    while True:
        d = c.recv(1 << 20)
        if not d:
            break
        h.update(d)
        n += len(d)
    print("recv %d %s" % (n, h.hexdigest()), flush=True)
    sys.exit(0)

host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port))
s.listen(128)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x28)  # the echo's TOS, for IP_RECVTOS
u.bind((host, port))
threading.Thread(target=udp_echo, args=(u,), daemon=True).start()
log("READY")
while True:
    c, a = s.accept()
    threading.Thread(target=conn, args=(c, a), daemon=True).start()
EOF
PORT=6000
bg peer "${KX[@]}" "$PY" -u "$T/peer.py" 0.0.0.0 "$PORT"
if ! wait_until 10 has_line "$T/peer.out" '^READY'; then
    fail peer_start "the kernel peer did not start: $(cat "$T/peer.err")"
    exit 1
fi
nsx ping -c 1 -W 2 "$DAEMON_IP" >/dev/null 2>&1 # ARP both ways before the first test

# prog NAME COUNTER CMD...: run a test program preloaded (bounded); PASS line required and
# COUNTER must move. The program's output stays in $T/NAME.out for further checks.
prog() {
    local name=$1 counter=$2 c0 rc
    shift 2
    c0=$(ctr "$counter")
    tpx 45 "$@" >"$T/$name.out" 2>"$T/$name.err"
    rc=$?
    cat "$T/$name.out"
    [[ -s $T/$name.err ]] && { echo "stderr:"; cat "$T/$name.err"; }
    ((rc == 0)) || { echo "exit status $rc"; return 1; }
    grep -q '^PASS ' "$T/$name.out" || { echo "no PASS line"; return 1; }
    went_through "$counter" "$c0"
}
# prog_plain NAME CMD...: the same for a program that moves no data through shmnet (only
# its own verdict counts).
prog_plain() {
    local name=$1 rc
    shift
    tpx 45 "$@" >"$T/$name.out" 2>"$T/$name.err"
    rc=$?
    cat "$T/$name.out"
    [[ -s $T/$name.err ]] && { echo "stderr:"; cat "$T/$name.err"; }
    ((rc == 0)) || { echo "exit status $rc"; return 1; }
    grep -q '^PASS ' "$T/$name.out" || { echo "no PASS line"; return 1; }
}

# ---------------------------------------------------------------- preload_io
io_tcp() {
    prog io_tcp tcp_active_opens "$P/preload_io" tcp "$PEER_IP" "$PORT" || return 1
    # The local address is shmnet's (10.200.0.2), and the peer saw the whole stream end.
    grep -q "^local $DAEMON_IP:" "$T/io_tcp.out" || { echo "local address is not $DAEMON_IP"; return 1; }
}
check preload_tcp_io io_tcp
check preload_udp_io prog io_udp udp_delivered "$P/preload_io" udp "$PEER_IP" "$PORT"
check preload_udp_pktinfo_recvtos prog io_pktinfo udp_delivered "$P/preload_io" pktinfo "$PEER_IP" "$PORT"

head -c $((3 << 20)) /dev/urandom >"$T/sf"
head -c 12345 /dev/urandom >>"$T/sf"
io_sendfile() {
    local want
    prog io_sendfile tcp_active_opens "$P/preload_io" sendfile "$PEER_IP" "$PORT" "$T/sf" || return 1
    want="sink $(fsize "$T/sf") $(sha "$T/sf")"
    echo "want: $want"
    grep -qx "$want" "$T/io_sendfile.out"
}
check preload_sendfile_sha256 io_sendfile
io_sendfile_nb() {
    local want
    prog io_sendfile_nb tcp_active_opens "$P/preload_io" sendfile_nb "$PEER_IP" "$PORT" "$T/sf" ||
        return 1
    want="sink $(fsize "$T/sf") $(sha "$T/sf")"
    echo "want: $want"
    grep -qx "$want" "$T/io_sendfile_nb.out"
}
check preload_sendfile_nonblocking_sha256 io_sendfile_nb

# peer_saw_ends NAME N: the program printed N "eof-port P" lines, and the peer logged the
# end ("eof PORT BYTES") of each of those connections.
peer_saw_ends() {
    local p ports
    mapfile -t ports < <(awk '$1 == "eof-port" { print $2 }' "$T/$1.out")
    ((${#ports[@]} == $2)) || { echo "want $2 eof-port lines"; return 1; }
    for p in "${ports[@]}"; do
        if ! wait_until 5 has_line "$T/peer.out" "^eof $p "; then
            echo "the peer never saw connection :$p end"
            return 1
        fi
        echo "peer: $(grep "^eof $p " "$T/peer.out")"
    done
}
io_dup() {
    prog io_dup tcp_active_opens "$P/preload_io" dup "$PEER_IP" "$PORT" || return 1
    # Each connection the program closed for good (dup2 onto it, the last copy) ended.
    peer_saw_ends io_dup 2
}
io_rawclose() {
    prog io_rawclose tcp_active_opens "$P/preload_io" rawclose "$PEER_IP" "$PORT" || return 1
    peer_saw_ends io_rawclose 4
}
check preload_dup_dup2_dup3_close io_dup
check preload_close_by_syscall_close_range_closefrom io_rawclose
# ends_while_running NAME CMD...: CMD (preloaded, in the background) prints "eof-port P"
# and then keeps running 3 s; the peer must log the end of connection :P within 2 s, so
# an end that waits for the program's exit comes too late.
ends_while_running() {
    local name=$1 pid port rc=0
    shift
    "${PX[@]}" "$@" >"$T/$name.out" 2>"$T/$name.err" &
    pid=$!
    if wait_until 10 has_line "$T/$name.out" "^eof-port "; then
        port=$(awk '$1 == "eof-port" { print $2 }' "$T/$name.out")
        wait_until 2 has_line "$T/peer.out" "^eof $port " || { echo "no end while it ran"; rc=1; }
    else
        echo "no eof-port line"
        rc=1
    fi
    wait "$pid" || rc=1
    cat "$T/$name.out" "$T/$name.err"
    grep -q '^PASS ' "$T/$name.out" || rc=1
    return $rc
}
# A close by the bare system call: the socket ends when its number is given out again,
# while the program runs. The interposer's bookkeeping: once, on the TAP with one worker.
if [[ $HARNESS_BACKEND == tap ]] && ((HARNESS_WORKERS == 1)); then
    check preload_raw_close_then_reused_number ends_while_running io_rca \
        "$P/preload_io" rawclose_asm "$PEER_IP" "$PORT"
fi
check preload_fcntl_ioctl_nonblock prog io_fcntl tcp_active_opens "$P/preload_io" fcntl "$PEER_IP" "$PORT"
check preload_fd_cloexec prog io_cloexec tcp_active_opens "$P/preload_io" cloexec "$PEER_IP" "$PORT"
check preload_socket_options prog io_opts tcp_active_opens "$P/preload_io" opts "$PEER_IP" "$PORT"
check preload_sa_restart prog io_restart tcp_active_opens "$P/preload_io" restart "$PEER_IP" "$PORT"
check preload_so_rcvlowat prog io_lowat tcp_active_opens "$P/preload_io" lowat "$PEER_IP" "$PORT"
check preload_fstat_is_socket prog io_fstat tcp_active_opens "$P/preload_io" fstat "$PEER_IP" "$PORT"

# ---------------------------------------------------------------- preload_wait
for t in poll ppoll select pselect epoll; do
    check "preload_${t}_pipe_and_socket_no_spin" prog "w_$t" tcp_active_opens \
        "$P/preload_wait" "$t" "$PEER_IP" "$PORT"
done
check preload_epoll_edge_triggered prog w_et tcp_active_opens "$P/preload_wait" epoll_et "$PEER_IP" "$PORT"
check preload_epoll_oneshot prog w_os tcp_active_opens "$P/preload_wait" epoll_oneshot "$PEER_IP" "$PORT"
check preload_epoll_ctl_del prog w_del tcp_active_opens "$P/preload_wait" epoll_del "$PEER_IP" "$PORT"
check preload_epollrdhup_pollrdhup prog w_rdhup tcp_active_opens "$P/preload_wait" rdhup "$PEER_IP" "$PORT"
check preload_signal_interrupts_waits prog w_eintr tcp_active_opens "$P/preload_wait" eintr "$PEER_IP" "$PORT"

# ---------------------------------------------------------------- preload_proc
head -c $((1 << 20)) /dev/urandom >"$T/f1m"
# serve_kernel NAME LPORT CONNECTIONS CMD...: CMD (preloaded, in the background) prints
# LISTENING and serves LPORT; the kernel connects CONNECTIONS times in turn, sending 1 MiB
# and reading it back (SHA-256 compared each time).
serve_kernel() {
    local name=$1 lport=$2 conns=$3 spid p0 i out rc want
    shift 3
    p0=$(ctr tcp_passive_opens)
    bg "$name" "${PX[@]}" "$@"
    spid=$BG_PID
    wait_until 10 has_line "$T/$name.out" '^LISTENING' ||
        { echo "no LISTENING"; cat "$T/$name.out" "$T/$name.err"; return 1; }
    want="recv $(fsize "$T/f1m") $(sha "$T/f1m")"
    for ((i = 1; i <= conns; i++)); do
        out=$(tkx 30 "$PY" -u "$T/peer.py" client "$DAEMON_IP" "$lport" "$T/f1m" 2>&1)
        echo "kernel client $i: $out"
        [[ $out == "$want" ]] || { echo "want: $want"; wait_exit "$spid" 1 >/dev/null; cat "$T/$name.out" "$T/$name.err"; return 1; }
    done
    wait_exit "$spid" 20
    rc=$?
    cat "$T/$name.out"
    [[ -s $T/$name.err ]] && { echo "stderr:"; cat "$T/$name.err"; }
    ((rc == 0)) || { echo "exit status $rc"; return 1; }
    grep -q '^PASS ' "$T/$name.out" || { echo "no PASS line"; return 1; }
    went_through tcp_passive_opens "$p0"
}
check preload_fork_child_accepts_inherited_listener \
    serve_kernel p_fork 6101 2 "$P/preload_proc" fork 6101
check preload_fork_parent_closes_child_serves \
    serve_kernel p_forkc 6102 2 "$P/preload_proc" fork 6102 parent-closes
check preload_fork_connection_shared prog p_fconn tcp_active_opens \
    "$P/preload_proc" fork_conn "$PEER_IP" "$PORT"
# fork + exec: the parent's close sends its FIN while the exec'd child still runs (the
# program keeps the child 3 s after its close; the peer must see the end within 2 s).
# The interposer's bookkeeping, not the backend's: once, on the TAP with one worker.
if [[ $HARNESS_BACKEND == tap ]] && ((HARNESS_WORKERS == 1)); then
    check preload_fork_exec_parent_close_ends_the_connection ends_while_running p_fexec \
        "$P/preload_proc" fork_exec "$PEER_IP" "$PORT"
fi
check preload_sandboxed_child_uses_the_socket prog p_sandbox tcp_active_opens \
    "$P/preload_proc" sandbox "$PEER_IP" "$PORT"
check preload_accept_in_one_thread_read_in_another \
    serve_kernel p_thr 6103 1 "$P/preload_proc" threads 6103
check preload_unix_pipe_netlink_passthrough prog_plain p_unix "$P/preload_proc" unix "$T/unix.sock"

if ((SELFTEST_KERNEL)); then
    check preload_inet6_kernel prog_plain p_inet6k "$P/preload_proc" inet6 kernel
    for c in preload_inet6_default_eafnosupport preload_sockets_listed_by_shmnetctl \
        preload_no_daemon_fails_once preload_no_daemon_fallback_kernel; do
        skip "$c" "shmnet only (SELFTEST_KERNEL=1)"
    done
    harness_stop_daemon
    exit
fi

check preload_inet6_default_eafnosupport prog_plain p_inet6r "$P/preload_proc" inet6 refuse
check preload_inet6_kernel_with_SHMNET_INET6 prog_plain p_inet6k \
    env SHMNET_INET6=kernel "$P/preload_proc" inet6 kernel

# The sockets of a running program appear in `shmnetctl sockets`, and go away after it.
# The program keeps its sockets until its stdin (a fifo held open here) reaches EOF.
no_longer_listed() { # TCP-PORT UDP-PORT
    local s
    s=$(ctl sockets) || return 1
    ! grep -qE "^ESTAB[A-Z]* .* $DAEMON_IP:$1 " <<<"$s" && ! grep -qE "^udp .* local [0-9.]+:$2 " <<<"$s"
}
listed() {
    local fd spid tp up s
    mkfifo "$T/hold.in"
    "${PX[@]}" "$P/preload_proc" hold "$PEER_IP" "$PORT" <"$T/hold.in" >"$T/hold.out" 2>"$T/hold.err" &
    spid=$!
    HARNESS_PIDS+=("$spid")
    exec {fd}>"$T/hold.in"
    wait_until 10 has_line "$T/hold.out" '^udp-local' ||
        { exec {fd}>&-; cat "$T/hold.out" "$T/hold.err"; return 1; }
    tp=$(awk '$1 == "tcp-local" { print $2 }' "$T/hold.out")
    up=$(awk '$1 == "udp-local" { print $2 }' "$T/hold.out")
    s=$(ctl sockets)
    echo "$s"
    grep -qE "^ESTAB[A-Z]* .* $DAEMON_IP:$tp $PEER_IP:$PORT " <<<"$s" ||
        { echo "no ESTAB $DAEMON_IP:$tp -> $PEER_IP:$PORT"; exec {fd}>&-; return 1; }
    grep -qE "^udp .* local [0-9.]+:$up " <<<"$s" ||
        { echo "no UDP socket on port $up"; exec {fd}>&-; return 1; }
    echo "listed: TCP :$tp and UDP :$up"
    exec {fd}>&-
    wait_exit "$spid" 10 || { cat "$T/hold.out" "$T/hold.err"; return 1; }
    wait_until 5 no_longer_listed "$tp" "$up" ||
        { echo "still listed after the program exited:"; ctl sockets; return 1; }
    echo "gone after the program exited"
}
check preload_sockets_listed_by_shmnetctl listed

# No daemon: a kernel listener on 127.0.0.1 in the programs' namespace shows whether a
# connection slipped through to the kernel.
NOWHERE=$T/no-such-shmnetd.sock
LPORT=6200
start_loop_peer() {
    bg looppeer ip netns exec "$CNS" "$PY" -u "$T/peer.py" 127.0.0.1 "$LPORT"
    wait_until 10 has_line "$T/looppeer.out" '^READY' || { cat "$T/looppeer.err"; return 1; }
}
check kernel_loopback_peer_start start_loop_peer
absent() {
    local rc n
    timeout -k 5 20 ip netns exec "$CNS" env LD_PRELOAD="$PRELOAD" SHMNET_SOCKET="$NOWHERE" \
        "$P/preload_proc" absent "$PEER_IP" "$PORT" "$LPORT" >"$T/absent.out" 2>"$T/absent.err"
    rc=$?
    cat "$T/absent.out"
    echo "stderr:"
    cat "$T/absent.err"
    ((rc == 0)) || { echo "exit status $rc"; return 1; }
    grep -q '^PASS ' "$T/absent.out" || { echo "no PASS line"; return 1; }
    n=$(wc -l <"$T/absent.err")
    ((n == 1)) || { echo "$n lines on stderr for three failed sockets, want exactly 1"; return 1; }
    ! has_line "$T/looppeer.out" '^eof' || { echo "a connection reached the kernel listener"; return 1; }
}
check preload_no_daemon_fails_once absent
fallback() {
    local rc n
    timeout -k 5 20 ip netns exec "$CNS" env LD_PRELOAD="$PRELOAD" SHMNET_SOCKET="$NOWHERE" \
        SHMNET_FALLBACK=kernel "$P/preload_proc" fallback "$LPORT" >"$T/fallback.out" 2>"$T/fallback.err"
    rc=$?
    cat "$T/fallback.out"
    echo "stderr:"
    cat "$T/fallback.err"
    ((rc == 0)) || { echo "exit status $rc"; return 1; }
    grep -q '^PASS ' "$T/fallback.out" || { echo "no PASS line"; return 1; }
    n=$(wc -l <"$T/fallback.err")
    ((n <= 1)) || { echo "$n lines on stderr, want at most 1"; return 1; }
    wait_until 5 has_line "$T/looppeer.out" '^eof .* 65536$' ||
        { echo "the kernel listener did not get the 64 KiB"; cat "$T/looppeer.out"; return 1; }
}
check preload_no_daemon_fallback_kernel fallback

harness_stop_daemon
