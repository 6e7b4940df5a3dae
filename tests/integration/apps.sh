#!/usr/bin/env bash
# Unmodified programs on shmnet through LD_PRELOAD: every program below is the
# Debian binary, run as `LD_PRELOAD=$PRELOAD SHMNET_SOCKET=$SOCK prog ...` against the
# Linux kernel across the TAP (the kernel side in $NS, 10.200.0.1; shmnet is 10.200.0.2).
# Every transfer is checked by content (SHA-256 of bodies and files, values read back),
# and the daemon's TCP counters must move (the traffic really went through shmnet).
#
#   curl / wget        GET 50 MiB from a kernel nginx; curl POSTs 10 MiB to a kernel
#                      python receiver that answers with the body's SHA-256
#   nginx              preloaded (master + 2 workers, :8080): curl 20 MiB from $NS, wrk for
#                      5 s (every body compared), `nginx -s reload` while wrk runs, clean quit
#   redis              preloaded redis-server driven by redis-benchmark (SET/GET/INCR/LPUSH,
#                      then the counts read back) and redis-cli from $NS; preloaded
#                      redis-cli against a kernel redis-server (SET/GET/INCR x1000/--pipe)
#   iperf3             preloaded client and server (-s -1), TCP and UDP (-u -b 100M), JSON
#   ncat / socat       both roles, 5 MiB; socat TCP echo both ways; socat UDP echo
#   python3            `-m http.server` preloaded serving curl; urllib preloaded fetching
#   both preloaded     socat <- ncat, curl -> nginx, redis-cli -> redis-server, all through
#                      10.200.0.2 (the daemon's own address)
#
# Where the preloaded programs run: in a namespace of their own ($CNS) that has only `lo`.
# They reach the daemon through its control socket (a path, so any namespace), and a call
# the interposer does not take fails at once (ENETUNREACH) instead of leaving the machine
# through the root namespace's default route. Ports only need to be unique within shmnet.
#
# Environment:
#   PRELOAD          the interposer (default build/libshmnet_preload.so, the release build;
#                    the daemon is the ASan build as in every integration test)
#   SELFTEST_KERNEL  1: run the same checks with the would-be-preloaded programs on kernel
#                    sockets ($CNS gets 10.200.0.2 on a veth into $NS): validates the tests
#                    themselves; the "went through shmnet" conditions are skipped
#   LISTEN_TIMEOUT   seconds to wait for a preloaded server to listen (default 10)
#   APPS_BIG_MB      the big GET (default 50)
# The whole script takes about 1.5 minutes when everything passes, < 4 when nothing does.
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"
harness_init apps

PRELOAD=${PRELOAD:-$REPO/build/libshmnet_preload.so}
SELFTEST_KERNEL=${SELFTEST_KERNEL:-0}
LISTEN_TIMEOUT=${LISTEN_TIMEOUT:-10}
BIG_MB=${APPS_BIG_MB:-50}

missing=()
for tool in nginx redis-server redis-cli redis-benchmark wrk iperf3 curl wget ncat socat ss; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]} > 0)); then
    fail apps_setup "missing ${missing[*]} (tests/lib/install-deps.sh)"
    exit 1
fi
if ((!SELFTEST_KERNEL)) && [[ ! -f $PRELOAD ]]; then
    fail apps_setup "$PRELOAD not built (make)"
    exit 1
fi
# Nothing here may go through a proxy (curl, wget and urllib honour these).
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY ftp_proxy FTP_PROXY
export no_proxy='*' NO_PROXY='*'

harness_write_conf "$T/d.conf"
harness_start_daemon "$T/d.conf" || exit 1
harness_peer_ns || { fail peer_ns "cannot set up the peer namespace"; exit 1; }

# ---- the preloaded programs' namespace ----
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
if ((SELFTEST_KERNEL)); then
    PX=(ip netns exec "$CNS" env)
    echo "SELFTEST_KERNEL=1: the preloaded programs run on kernel sockets over a veth" | detail
else
    PX=(ip netns exec "$CNS" env LD_PRELOAD="$PRELOAD" SHMNET_SOCKET="$SOCK")
fi
KX=(ip netns exec "$NS")
# tpx/tkx SECONDS CMD...: time-bounded, preloaded / in the kernel's namespace.
tpx() { local s=$1; shift; timeout -k 5 "$s" "${PX[@]}" "$@"; }
tkx() { local s=$1; shift; timeout -k 5 "$s" "${KX[@]}" "$@"; }

# ---- helpers ----
sha() { sha256sum "$1" 2>/dev/null | cut -d' ' -f1; }
fsize() { wc -c <"$1" 2>/dev/null | tr -d ' ' || echo 0; } # (the harness defines stat)
# same_file GOT WANT: equal SHA-256, both printed.
same_file() {
    local g w
    g=$(sha "$1") w=$(sha "$2")
    echo "sha256 got ${g:-none} ($(fsize "$1") bytes), want $w ($(fsize "$2") bytes)"
    [[ -n $g && $g == "$w" ]]
}
info() { echo "$*" >&"$H_ERR"; } # a result line on the script's stderr, even inside check

# Counters that prove the traffic went through shmnet (not checked in the kernel self-test).
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
    echo "$1 did not move ($2 -> $now): this traffic did not go through shmnet"
    return 1
}

# bg NAME CMD...: CMD in the background (stdout $T/NAME.out, stderr $T/NAME.err), killed by
# the harness's cleanup; its pid in BG_PID. CMD must be a program, not a shell function.
bg() {
    local name=$1
    shift
    "$@" </dev/null >"$T/$name.out" 2>"$T/$name.err" &
    BG_PID=$!
    HARNESS_PIDS+=("$BG_PID")
}
gone() { # PID: exited (or a zombie not yet reaped)
    local s
    s=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
    [[ -z $s || $s == Z ]]
}
# wait_exit PID SECONDS: the background child's exit status; 124 if it had to be killed.
wait_exit() {
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
# wait_listen PORT [PID] [tcp|udp]: a preloaded program listens on PORT: shmnet's socket
# table shows it (self-test: the kernel's, in $CNS). Gives up early if PID exited.
wait_listen() {
    local port=$1 pid=${2:-} proto=${3:-tcp} end=$((SECONDS + LISTEN_TIMEOUT))
    while ((SECONDS <= end)); do
        if [[ -n $pid ]] && gone "$pid"; then
            echo "pid $pid exited before it listened on $proto port $port"
            return 1
        fi
        if ((SELFTEST_KERNEL)); then
            ip netns exec "$CNS" ss -lnH "-${proto:0:1}" "sport = :$port" | grep -q . && return 0
        elif [[ $proto == tcp ]]; then
            ctl sockets 2>/dev/null | grep -qE "^LISTEN +[0-9]+ +[0-9]+ [0-9.]+:$port " && return 0
        else
            ctl sockets 2>/dev/null | grep -qE "^udp .* local [0-9.]+:$port " && return 0
        fi
        sleep 0.1
    done
    echo "nothing listens on $proto port $port through shmnet after ${LISTEN_TIMEOUT}s"
    ((SELFTEST_KERNEL)) || ctl sockets 2>&1 | head -n 20
    return 1
}
ns_listening() { nsx ss -lnH "-${2:-t}" "sport = :$1" | grep -q .; }
# wait_listen_ns PORT [t|u]: a kernel program listens in $NS.
wait_listen_ns() {
    wait_until 10 ns_listening "$@" || { echo "nothing listens on port $1 in $NS"; return 1; }
}
declare -A UP=()
up() { # NAME: the server NAME was started successfully (else dependent checks fail at once)
    [[ ${UP[$1]:-0} == 1 ]] && return 0
    echo "$1 is not running (see its start check)"
    return 1
}
# The last lines of a server's own log, for the details of a failed check.
logs() { local f; for f in "$@"; do [[ -s $f ]] && { echo "--- $f"; tail -n 15 "$f"; }; done; }

# ---- data ----
W=$T/www
mkdir -p "$W"
head -c $((BIG_MB << 20)) /dev/urandom >"$W/big"
head -c $((20 << 20)) /dev/urandom >"$W/f20m"
head -c $((5 << 20)) /dev/urandom >"$W/f5m"
head -c 4096 /dev/urandom >"$W/small"
head -c $((10 << 20)) /dev/urandom >"$T/post10m"

# nginx_conf DIR LISTEN WORKERS: a self-contained nginx.conf (pid, logs, temp dirs in DIR).
nginx_conf() {
    local d=$1
    mkdir -p "$d"
    cat >"$d/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes $3;
user root;                 # the files are in a 0700 temp dir
pid $d/nginx.pid;
error_log $d/error.log notice;
events { worker_connections 1024; }
http {
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 60;
    keepalive_requests 1000000;
    client_body_temp_path $d/body;
    proxy_temp_path $d/proxy;
    fastcgi_temp_path $d/fastcgi;
    uwsgi_temp_path $d/uwsgi;
    scgi_temp_path $d/scgi;
    server {
        listen $2;
        root $W;
    }
}
EOF
}
nginx_bad_log() { # DIR: alert/crit/emerg lines in its error log
    grep -E '\[(alert|crit|emerg)\]' "$1/error.log"
}

# wrk with every body compared to FILE (lua response hook); one RESULT line at the end.
cat >"$T/check.lua" <<'EOF'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
    local f = assert(io.open(args[1], "rb"))
    expect = f:read("*a")
    f:close()
    good, bad, non200 = 0, 0, 0
end
function response(status, headers, body)
    if status ~= 200 then non200 = non200 + 1
    elseif body == expect then good = good + 1
    else bad = bad + 1 end
end
function done(summary, latency, requests)
    local g, b, s = 0, 0, 0
    for _, t in ipairs(threads) do
        g = g + t:get("good"); b = b + t:get("bad"); s = s + t:get("non200")
    end
    local e = summary.errors
    io.write(string.format("RESULT requests=%d good=%d bad=%d non200=%d connect=%d read=%d " ..
        "write=%d status=%d timeout=%d duration_us=%d bytes=%d\n", summary.requests, g, b, s,
        e.connect, e.read, e.write, e.status, e.timeout, summary.duration, summary.bytes))
end
EOF
# wrk_field FILE KEY: a value of the RESULT line.
wrk_field() { grep '^RESULT' "$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k { print $2 }'; }
wrk_rps() { awk -v n="$(wrk_field "$1" requests)" -v d="$(wrk_field "$1" duration_us)" 'BEGIN { if (d > 0) printf "%.0f", n / (d / 1e6); else print 0 }'; }

# ---------------------------------------------------------------- curl, wget -> kernel nginx
nginx_conf "$T/ngk" 8081 1
start_kernel_nginx() {
    bg ngk "${KX[@]}" nginx -p "$T/ngk" -c "$T/ngk/nginx.conf" -e "$T/ngk/error.log"
    wait_listen_ns 8081 || { logs "$T/ngk/error.log" "$T/ngk.err"; return 1; }
    UP[ngk]=1
}
check kernel_nginx_start start_kernel_nginx

# preloaded_get NAME TOOL...: TOOL writes the big file to $T/NAME.got.
preloaded_get() {
    local name=$1 a0 rc t0 t1
    shift
    up ngk || return 1
    a0=$(ctr tcp_active_opens)
    t0=$(date +%s%N)
    tpx 70 "$@"
    rc=$?
    t1=$(date +%s%N)
    ((rc == 0)) || { echo "$1 exit status $rc"; return 1; }
    same_file "$T/$name.got" "$W/big" || return 1
    rm -f "$T/$name.got"
    info "$name: $BIG_MB MiB in $(((t1 - t0) / 1000000)) ms"
    went_through tcp_active_opens "$a0"
}
check "curl_get_${BIG_MB}MiB_from_kernel_nginx" preloaded_get curl \
    curl -sS --fail --connect-timeout 10 --max-time 60 -o "$T/curl.got" "http://$PEER_IP:8081/big"
check "wget_get_${BIG_MB}MiB_from_kernel_nginx" preloaded_get wget \
    wget -q --no-hsts -T 20 -t 1 -O "$T/wget.got" "http://$PEER_IP:8081/big"

# A kernel-side receiver: answers a POST with "<bytes> <sha256>".
cat >"$T/post_srv.py" <<'EOF'
import hashlib, http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # answers "Expect: 100-continue" (curl sends it)
    def do_POST(self):
        left = int(self.headers.get("Content-Length", "0"))
        h, n = hashlib.sha256(), 0
        while left > 0:
            d = self.rfile.read(min(left, 1 << 20))
            if not d:
                break
            h.update(d)
            n += len(d)
            left -= len(d)
        body = ("%d %s\n" % (n, h.hexdigest())).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
EOF
curl_post() {
    local out a0 want
    bg postsrv "${KX[@]}" "$PY" "$T/post_srv.py" 8082
    wait_listen_ns 8082 || { cat "$T/postsrv.err"; return 1; }
    a0=$(ctr tcp_active_opens)
    out=$(tpx 40 curl -sS --fail --connect-timeout 10 --max-time 30 --data-binary "@$T/post10m" \
        -H 'Content-Type: application/octet-stream' "http://$PEER_IP:8082/upload") ||
        { echo "curl failed: $out"; return 1; }
    want="$(fsize "$T/post10m") $(sha "$T/post10m")"
    echo "receiver: $out"
    echo "want:     $want"
    [[ $out == "$want" ]] || return 1
    went_through tcp_active_opens "$a0"
}
check curl_post_10MiB_to_kernel_receiver curl_post

# ---------------------------------------------------------------- nginx preloaded
nginx_conf "$T/ngp" 8080 2
NGP=(nginx -p "$T/ngp" -c "$T/ngp/nginx.conf" -e "$T/ngp/error.log")
workers() { pgrep -P "$NGP_PID" | sort | tr '\n' ' '; }
# Workers outlive a master that had to be killed: the harness's cleanup kills them too.
track_workers() {
    local w
    for w in $(workers); do HARNESS_PIDS+=("$w"); done
}
start_nginx() {
    local n
    bg ngp "${PX[@]}" "${NGP[@]}"
    NGP_PID=$BG_PID
    wait_listen 8080 "$NGP_PID" || { logs "$T/ngp/error.log" "$T/ngp.err"; return 1; }
    wait_until 5 test "$(pgrep -cP "$NGP_PID")" -eq 2
    track_workers
    n=$(pgrep -cP "$NGP_PID")
    echo "master $NGP_PID, workers: $(workers)"
    ((n == 2)) || { echo "$n workers, want 2"; logs "$T/ngp/error.log"; return 1; }
    # A first request, bounded: if nginx does not serve, the checks that need it fail at once.
    tkx 15 curl -sS --fail --max-time 10 -o "$T/ng1.got" "http://$DAEMON_IP:8080/small" ||
        { echo "nginx does not serve"; logs "$T/ngp/error.log"; return 1; }
    same_file "$T/ng1.got" "$W/small" || return 1
    UP[ngp]=1
}
check nginx_preload_start_and_serve start_nginx

# curl in $NS: the 20 MiB file, then two more files on the same keep-alive connection.
nginx_curl() {
    local p0
    up ngp || return 1
    p0=$(ctr tcp_passive_opens)
    tkx 40 curl -sS --fail --connect-timeout 10 --max-time 30 -o "$T/ng20.got" "http://$DAEMON_IP:8080/f20m" \
        -o "$T/ngs.got" "http://$DAEMON_IP:8080/small" -o "$T/ng5.got" "http://$DAEMON_IP:8080/f5m" ||
        { logs "$T/ngp/error.log"; return 1; }
    same_file "$T/ng20.got" "$W/f20m" && same_file "$T/ngs.got" "$W/small" &&
        same_file "$T/ng5.got" "$W/f5m" || return 1
    rm -f "$T"/ng*.got
    went_through tcp_passive_opens "$p0"
}
check nginx_preload_curl_20MiB_from_ns nginx_curl

# Requests on one keep-alive connection, a large and a small response in turn; each
# request reaches nginx in the segment that acknowledges the end of the previous response.
# An edge-triggered epoll that lost that edge (libclient, shmnet__sock_revents) left nginx
# waiting for a request it never read (about one connection in 80 with two workers).
nginx_keepalive() {
    local n=$1 args=() i ok=0
    up ngp || return 1
    for ((i = 0; i < n; i++)); do
        args+=(-o "$T/nkb$i.got" "http://$DAEMON_IP:8080/f5m" -o "$T/nks$i.got" "http://$DAEMON_IP:8080/small")
    done
    tkx 100 curl -sS --fail --max-time 10 "${args[@]}" || { logs "$T/ngp/error.log"; return 1; }
    for ((i = 0; i < n; i++)); do
        [[ $(sha "$T/nkb$i.got") == "$(sha "$W/f5m")" && $(sha "$T/nks$i.got") == "$(sha "$W/small")" ]] &&
            ok=$((ok + 1))
    done
    rm -f "$T"/nk*.got
    echo "$ok of $n pairs intact"
    ((ok == n))
}
check nginx_preload_keepalive_${KA_N:-100}_pairs nginx_keepalive "${KA_N:-100}"

# wrk_check NAME OUT MAX_RW_ERRORS: the RESULT line of a wrk run: bodies all intact, no
# non-200, no connect/status/timeout errors, read+write errors <= MAX_RW_ERRORS.
wrk_check() {
    local name=$1 out=$2 max=$3 k v rw
    cat "$out"
    grep -q '^RESULT' "$out" || { echo "no RESULT line from wrk"; return 1; }
    for k in good bad non200 connect read write status timeout; do
        v=$(wrk_field "$out" "$k")
        [[ $v =~ ^[0-9]+$ ]] || { echo "wrk: no $k"; return 1; }
        case $k in
        good) ((v > 0)) || { echo "no intact response"; return 1; } ;;
        read | write) ;;
        *) ((v == 0)) || { echo "wrk: $k = $v"; return 1; } ;;
        esac
    done
    rw=$(($(wrk_field "$out" read) + $(wrk_field "$out" write)))
    ((rw <= max)) || { echo "wrk: $rw read/write errors (at most $max allowed)"; return 1; }
    grep -q 'Non-2xx' "$out" && { echo "wrk reports non-2xx responses"; return 1; }
    info "$name: $(wrk_rps "$out") requests/s, $(wrk_field "$out" good) intact bodies, $rw read/write errors"
    return 0
}
nginx_wrk() { # SECONDS
    local p0
    up ngp || return 1
    p0=$(ctr tcp_passive_opens)
    tkx $(($1 + 30)) wrk -t2 -c16 -d"$1"s --timeout 10s -s "$T/check.lua" \
        "http://$DAEMON_IP:8080/small" -- "$W/small" >"$T/wrk.out" 2>&1
    wrk_check "nginx_wrk_${1}s" "$T/wrk.out" 0 || { logs "$T/ngp/error.log"; return 1; }
    went_through tcp_passive_opens "$p0"
}
check nginx_preload_wrk_5s nginx_wrk 5

# `nginx -s reload` 2 s into a 6 s wrk run: the old workers finish (closing their keep-alive
# connections: wrk counts those as read/write errors, at most one per connection and a few
# more, as on the kernel), new workers serve, and every response body is intact.
workers_replaced() { # OLD...: two workers, none of them old
    local now w
    now=$(workers)
    (($(wc -w <<<"$now") == 2)) || return 1
    for w in "$@"; do [[ " $now " == *" $w "* ]] && return 1; done
    return 0
}
nginx_reload() {
    local old wpid rc
    up ngp || return 1
    # shellcheck disable=SC2207 # pids: one word each
    old=($(workers))
    bg wrkr "${KX[@]}" wrk -t2 -c16 -d6s --timeout 10s -s "$T/check.lua" \
        "http://$DAEMON_IP:8080/small" -- "$W/small"
    wpid=$BG_PID
    sleep 2
    tpx 10 "${NGP[@]}" -s reload || { echo "nginx -s reload failed"; return 1; }
    wait_exit "$wpid" 40
    rc=$?
    ((rc == 0)) || { echo "wrk exit status $rc: $(cat "$T/wrkr.err")"; return 1; }
    wrk_check nginx_wrk_during_reload "$T/wrkr.out" 40 || { logs "$T/ngp/error.log"; return 1; }
    wait_until 10 workers_replaced "${old[@]}"
    track_workers
    workers_replaced "${old[@]}" ||
        { echo "workers before: ${old[*]}, after: $(workers)"; logs "$T/ngp/error.log"; return 1; }
    echo "workers before: ${old[*]}, after: $(workers)"
}
check nginx_preload_reload_under_wrk nginx_reload
check nginx_preload_after_reload_curl nginx_curl
check nginx_preload_after_reload_wrk_2s nginx_wrk 2

# Both ends preloaded: curl -> nginx through the daemon's own address.
pair_curl_nginx() {
    local a0 p0
    up ngp || return 1
    a0=$(ctr tcp_active_opens) p0=$(ctr tcp_passive_opens)
    tpx 40 curl -sS --fail --connect-timeout 10 --max-time 30 -o "$T/pair20.got" \
        "http://$DAEMON_IP:8080/f20m" || return 1
    same_file "$T/pair20.got" "$W/f20m" || return 1
    rm -f "$T/pair20.got"
    went_through tcp_active_opens "$a0" && went_through tcp_passive_opens "$p0"
}
check both_preloaded_curl_to_nginx pair_curl_nginx

stop_nginx() {
    local rc bad
    up ngp || return 1
    tpx 10 "${NGP[@]}" -s quit || echo "nginx -s quit failed"
    wait_exit "$NGP_PID" 20
    rc=$?
    UP[ngp]=0
    bad=$(nginx_bad_log "$T/ngp")
    [[ -n $bad ]] && echo "error log: $bad"
    if ((rc != 0)) || [[ -n $bad ]]; then
        logs "$T/ngp/error.log"
        return 1
    fi
}
check nginx_preload_quit_clean stop_nginx

# ---------------------------------------------------------------- redis
RCLI=(redis-cli -h "$DAEMON_IP" -p 6379)
start_redis() {
    mkdir -p "$T/rsp"
    bg rsp "${PX[@]}" redis-server --port 6379 --save '' --appendonly no --bind 0.0.0.0 \
        --protected-mode no --dir "$T/rsp" --logfile "$T/rsp/redis.log" --daemonize no
    RSP_PID=$BG_PID
    wait_listen 6379 "$RSP_PID" || { logs "$T/rsp/redis.log" "$T/rsp.err"; return 1; }
    [[ $(tkx 10 "${RCLI[@]}" PING) == PONG ]] || { echo "no PONG"; return 1; }
    UP[rsp]=1
}
check redis_preload_start start_redis

redis_bench() {
    local out n p0 v line
    up rsp || return 1
    p0=$(ctr tcp_passive_opens)
    tkx 120 redis-benchmark -h "$DAEMON_IP" -p 6379 -q -n 20000 -t set,get,incr,lpush \
        >"$T/rbench.raw" 2>&1
    out=$(tr '\r' '\n' <"$T/rbench.raw" | grep -vE 'rps=|^ *$')
    echo "$out"
    if grep -qiE 'error|could not|refused|reset' <<<"$out"; then
        echo "redis-benchmark reported errors"
        return 1
    fi
    for t in SET GET INCR LPUSH; do
        line=$(grep -E "^$t: [0-9.]+ requests per second" <<<"$out") || { echo "no $t result"; return 1; }
        info "redis-benchmark against preloaded redis: $line"
    done
    # What the benchmark left behind: its counts, read back.
    v=$(tkx 10 "${RCLI[@]}" GET 'counter:__rand_int__') n=$(tkx 10 "${RCLI[@]}" LLEN mylist)
    echo "INCR counter: $v, LPUSH list length: $n"
    [[ $v == 20000 && $n == 20000 ]] || return 1
    v=$(tkx 10 "${RCLI[@]}" STRLEN 'key:__rand_int__')
    [[ $v == 3 ]] || { echo "SET value length $v, want 3"; return 1; }
    went_through tcp_passive_opens "$p0"
}
check redis_benchmark_against_preloaded_redis redis_bench

# A 1 MiB value (base64 text, sent with -x) and what GET prints for it (value + newline).
head -c $((768 << 10)) /dev/urandom | base64 -w0 >"$T/bigval"
BIGVAL_SHA=$({ cat "$T/bigval"; echo; } | sha256sum | cut -d' ' -f1)
# redis_fill CLI...: FLUSHALL, 100 keys with MSET, the big value, INCR cnt 1000 times.
redis_fill() {
    local args=() i out
    out=$("$@" PING) || { echo "PING: exit status $? '$out'"; return 1; }
    [[ $out == PONG ]] || { echo "PING: '$out'"; return 1; }
    [[ $("$@" FLUSHALL) == OK ]] || { echo "FLUSHALL failed"; return 1; }
    for ((i = 0; i < 100; i++)); do args+=("k$i" "value-$i-$RANDOM$RANDOM"); done
    printf '%s\n' "${args[@]}" >"$T/redis_kv"
    [[ $("$@" MSET "${args[@]}") == OK ]] || { echo "MSET failed"; return 1; }
    [[ $("$@" -x SET big <"$T/bigval") == OK ]] || { echo "SET big failed"; return 1; }
    out=$(yes 'INCR cnt' | head -n 1000 | "$@" | tail -n 1)
    [[ $out == 1000 ]] || { echo "1000 x INCR ended at '$out'"; return 1; }
}
# redis_verify CLI...: everything redis_fill wrote, read back, DBSIZE 102.
redis_verify() {
    local i k v got n
    got=$("$@" PING) || { echo "PING: exit status $? '$got'"; return 1; }
    [[ $got == PONG ]] || { echo "PING: '$got'"; return 1; }
    i=0
    while read -r k && read -r v; do
        got=$("$@" GET "$k")
        [[ $got == "$v" ]] || { echo "GET $k: '$got', want '$v'"; return 1; }
        i=$((i + 1))
    done <"$T/redis_kv"
    [[ $("$@" GET cnt) == 1000 ]] || { echo "GET cnt: $("$@" GET cnt), want 1000"; return 1; }
    got=$("$@" GET big | sha256sum | cut -d' ' -f1)
    [[ $got == "$BIGVAL_SHA" ]] || { echo "GET big: sha256 $got, want $BIGVAL_SHA"; return 1; }
    n=$("$@" DBSIZE)
    echo "$i keys intact, cnt 1000, 1 MiB value intact, DBSIZE $n"
    [[ $n == 102 ]]
}
# redis_pipe CLI...: 10000 SETs in the RESP protocol through --pipe, DBSIZE 10102 after.
redis_pipe() {
    local out
    # shellcheck disable=SC2016 # python, not shell
    "$PY" -c '
import sys
w = sys.stdout.buffer
for i in range(10000):
    k, v = b"p%d" % i, b"v%d" % (i * 7)
    w.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(v), v))
' >"$T/pipe.resp"
    out=$("$@" --pipe <"$T/pipe.resp" 2>&1)
    echo "$out" | tail -n 1
    grep -q 'errors: 0, replies: 10000' <<<"$out" || return 1
    [[ $("$@" DBSIZE) == 10102 && $("$@" GET p9999) == v69993 ]] ||
        { echo "after --pipe: DBSIZE $("$@" DBSIZE), p9999 = $("$@" GET p9999)"; return 1; }
}
# Every redis-cli call is bounded (a connection that hangs fails the check, not the script).
rk() { tkx 15 "${RCLI[@]}" "$@"; }       # redis-cli in $NS -> preloaded redis
rp() { tpx 15 "${RCLI[@]}" "$@"; }       # preloaded redis-cli -> preloaded redis
redis_kernel_cli() {
    up rsp || return 1
    local p0
    p0=$(ctr tcp_passive_opens)
    redis_fill rk && redis_verify rk || return 1
    went_through tcp_passive_opens "$p0"
}
check redis_cli_from_ns_to_preloaded_redis redis_kernel_cli
redis_pair() {
    up rsp || return 1
    local a0
    a0=$(ctr tcp_active_opens)
    redis_verify rp && redis_pipe rp || return 1
    went_through tcp_active_opens "$a0"
}
check both_preloaded_redis_cli_to_redis redis_pair

# Preloaded redis-cli against a kernel redis-server in $NS.
RKCLI=(redis-cli -h "$PEER_IP" -p 6379)
rpk() { tpx 15 "${RKCLI[@]}" "$@"; }
rkk() { tkx 15 "${RKCLI[@]}" "$@"; }
redis_preload_cli() {
    local a0
    mkdir -p "$T/rsk"
    bg rsk "${KX[@]}" redis-server --port 6379 --save '' --appendonly no --bind "$PEER_IP" \
        --protected-mode no --dir "$T/rsk" --logfile "$T/rsk/redis.log" --daemonize no
    wait_listen_ns 6379 || { logs "$T/rsk/redis.log"; return 1; }
    a0=$(ctr tcp_active_opens)
    redis_fill rpk || return 1
    echo "read back by the kernel's redis-cli:"
    redis_verify rkk || return 1
    echo "read back by the preloaded redis-cli:"
    redis_verify rpk && redis_pipe rpk || return 1
    went_through tcp_active_opens "$a0"
}
check redis_preloaded_cli_to_kernel_redis redis_preload_cli

stop_redis() {
    local rc
    up rsp || return 1
    rk SHUTDOWN NOSAVE >/dev/null 2>&1
    wait_exit "$RSP_PID" 15
    rc=$?
    UP[rsp]=0
    echo "redis-server exit status $rc"
    ((rc == 0)) || { logs "$T/rsp/redis.log"; return 1; }
}
check redis_preload_shutdown_clean stop_redis

# ---------------------------------------------------------------- iperf3
# iperf_json FILE tcp|udp [client|server]: no "error", data moved; prints a summary line.
# (The receiving server's own JSON counts nothing as sent: UDP bytes 0, only datagrams.)
iperf_json() {
    "$PY" - "$1" "$2" "${3:-client}" <<'EOF'
import json, sys
path, proto, role = sys.argv[1], sys.argv[2], sys.argv[3]
try:
    j = json.load(open(path))
except Exception as e:
    print("%s: no JSON (%s): %s" % (path, e, open(path, errors="replace").read()[-300:]))
    sys.exit(1)
if "error" in j:
    print("%s: error: %s" % (path, j["error"]))
    sys.exit(1)
end = j.get("end", {})
if proto == "tcp":
    s, r = end.get("sum_sent", {}), end.get("sum_received", {})
    sb, rb = s.get("bytes", 0), r.get("bytes", 0)
    print("sent %d received %d bytes, %.3f Gbit/s (receiver), retransmits %s"
          % (sb, rb, r.get("bits_per_second", 0) / 1e9, s.get("retransmits", "-")))
    sys.exit(0 if rb > 0 and (sb > 0 or role == "server") else 1)
s = end.get("sum", {})
b, pk, lost = s.get("bytes", 0), s.get("packets", 0), s.get("lost_packets", 0)
print("%d bytes, %d datagrams, %d lost (%.2f%%), %.3f Gbit/s, jitter %.3f ms"
      % (b, pk, lost, s.get("lost_percent", 0), s.get("bits_per_second", 0) / 1e9,
         s.get("jitter_ms", 0)))
sys.exit(0 if pk > lost and (b > 0 or role == "server") else 1)
EOF
}
start_iperf_kernel() {
    bg ipk "${KX[@]}" iperf3 -s -p 5201
    wait_listen_ns 5201 || { cat "$T/ipk.err" "$T/ipk.out"; return 1; }
    UP[ipk]=1
}
check kernel_iperf3_server_start start_iperf_kernel
iperf_client() { # tcp|udp
    local a0 s args=()
    up ipk || return 1
    [[ $1 == udp ]] && args=(-u -b 100M)
    a0=$(ctr tcp_active_opens)
    tpx 40 iperf3 -c "$PEER_IP" -p 5201 -t 3 "${args[@]}" --json >"$T/ipc.$1.json" 2>"$T/ipc.$1.err"
    local rc=$?
    echo "iperf3 exit status $rc"
    if ((rc == 124)) && [[ $1 == udp ]]; then
        # iperf3 3.12 sets up a UDP stream with one datagram each way and no retransmission:
        # if either is lost (UDP may lose, here about 1 run in 10), it waits forever. Once
        # more, said out loud; a second hang fails.
        echo "iperf3 UDP hung (stream setup datagram lost?): once more"
        tpx 40 iperf3 -c "$PEER_IP" -p 5201 -t 3 "${args[@]}" --json >"$T/ipc.$1.json" 2>"$T/ipc.$1.err"
        echo "iperf3 exit status $?"
    fi
    s=$(iperf_json "$T/ipc.$1.json" "$1") || { echo "$s"; cat "$T/ipc.$1.err"; return 1; }
    echo "$s"
    info "iperf3 preloaded client $1 -> kernel: $s"
    went_through tcp_active_opens "$a0"
}
check iperf3_preloaded_client_tcp iperf_client tcp
check iperf3_preloaded_client_udp iperf_client udp
iperf_server() { # tcp|udp PORT
    local p0 s spid rc args=()
    [[ $1 == udp ]] && args=(-u -b 100M)
    bg "ips.$1" "${PX[@]}" iperf3 -s -1 -p "$2" --json
    spid=$BG_PID
    wait_listen "$2" "$spid" || { cat "$T/ips.$1.err" "$T/ips.$1.out"; return 1; }
    p0=$(ctr tcp_passive_opens)
    tkx 40 iperf3 -c "$DAEMON_IP" -p "$2" -t 3 "${args[@]}" --json >"$T/ipk.$1.json" 2>&1
    wait_exit "$spid" 15
    rc=$?
    echo "preloaded iperf3 -s -1 exit status $rc"
    s=$(iperf_json "$T/ipk.$1.json" "$1") || { echo "kernel client: $s"; return 1; }
    echo "kernel client: $s"
    info "iperf3 kernel client $1 -> preloaded server: $s"
    s=$(iperf_json "$T/ips.$1.out" "$1" server) || { echo "preloaded server: $s"; return 1; }
    echo "preloaded server: $s"
    ((rc == 0)) || return 1
    went_through tcp_passive_opens "$p0"
}
check iperf3_preloaded_server_tcp iperf_server tcp 5202
check iperf3_preloaded_server_udp iperf_server udp 5203

# ---------------------------------------------------------------- ncat, socat (5 MiB)
# preloaded_receiver NAME PORT SENDER...: a preloaded receiver (started by the caller as
# $BG_PID, writing $T/NAME.out) gets the 5 MiB file from SENDER in $NS.
preloaded_receiver() {
    local name=$1 port=$2 spid=$BG_PID p0 rc
    shift 2
    wait_listen "$port" "$spid" || { cat "$T/$name.err"; return 1; }
    p0=$(ctr tcp_passive_opens)
    tkx 60 "$@" <"$W/f5m" || { echo "kernel sender failed"; return 1; }
    wait_exit "$spid" 30
    rc=$?
    ((rc == 0)) || { echo "receiver exit status $rc: $(cat "$T/$name.err")"; return 1; }
    same_file "$T/$name.out" "$W/f5m" || return 1
    went_through tcp_passive_opens "$p0"
}
# preloaded_sender NAME PORT SENDER...: a kernel receiver in $NS (started by the caller as
# $BG_PID, writing $T/NAME.out) gets the file from the preloaded SENDER.
preloaded_sender() {
    local name=$1 port=$2 rpid=$BG_PID a0 rc
    shift 2
    wait_listen_ns "$port" || { cat "$T/$name.err"; return 1; }
    a0=$(ctr tcp_active_opens)
    tpx 60 "$@" <"$W/f5m" || { echo "preloaded sender failed"; return 1; }
    wait_exit "$rpid" 30
    rc=$?
    ((rc == 0)) || { echo "kernel receiver exit status $rc: $(cat "$T/$name.err")"; return 1; }
    same_file "$T/$name.out" "$W/f5m" || return 1
    went_through tcp_active_opens "$a0"
}
ncat_listen() {
    # -4: ncat 7.93 `-l` without it exits with "close: Bad file descriptor" after the first
    # connection when socket(AF_INET6) fails (EAFNOSUPPORT, the interposer's default; the same
    # on kernel sockets): it closes the -1 of the listener it could not open.
    bg ncl "${PX[@]}" ncat -4 -l -p 7001 --recv-only
    preloaded_receiver ncl 7001 ncat --send-only "$DAEMON_IP" 7001
}
check ncat_preloaded_listen_5MiB ncat_listen
ncat_connect() {
    bg nck "${KX[@]}" ncat -l -p 7002 --recv-only
    preloaded_sender nck 7002 ncat --send-only "$PEER_IP" 7002
}
check ncat_preloaded_connect_5MiB ncat_connect
socat_listen() {
    bg socl "${PX[@]}" socat -u TCP-LISTEN:7003,reuseaddr STDOUT
    preloaded_receiver socl 7003 socat -u STDIN "TCP:$DAEMON_IP:7003"
}
check socat_preloaded_listen_5MiB socat_listen
socat_connect() {
    bg sock "${KX[@]}" socat -u TCP-LISTEN:7004,reuseaddr STDOUT
    preloaded_sender sock 7004 socat -u STDIN "TCP:$PEER_IP:7004"
}
check socat_preloaded_connect_5MiB socat_connect
# Echo both ways at once: the preloaded socat pipes what it reads back to the sender.
socat_echo() {
    local spid p0
    bg soce "${PX[@]}" socat -t 10 TCP-LISTEN:7005,reuseaddr PIPE
    spid=$BG_PID
    wait_listen 7005 "$spid" || { cat "$T/soce.err"; return 1; }
    p0=$(ctr tcp_passive_opens)
    tkx 60 socat -t 10 STDIO "TCP:$DAEMON_IP:7005" <"$W/f5m" >"$T/soce.got" ||
        { echo "kernel socat failed"; return 1; }
    wait_exit "$spid" 15 || { echo "preloaded socat: $(cat "$T/soce.err")"; return 1; }
    same_file "$T/soce.got" "$W/f5m" || return 1
    went_through tcp_passive_opens "$p0"
}
check socat_preloaded_tcp_echo_5MiB socat_echo
# UDP: the preloaded socat echoes datagrams (UDP-LISTEN: recvfrom MSG_PEEK, connect, PIPE).
socat_udp() {
    local spid u0 got want
    bg socu "${PX[@]}" socat -T 5 UDP-LISTEN:7006 PIPE
    spid=$BG_PID
    wait_listen 7006 "$spid" udp || { cat "$T/socu.err"; return 1; }
    u0=$(ctr udp_delivered)
    want="datagram-$RANDOM-$RANDOM-through-shmnet"
    got=$(echo "$want" | tkx 10 socat -T 2 - "UDP:$DAEMON_IP:7006")
    echo "sent '$want', echoed '$got'"
    wait_exit "$spid" 10 >/dev/null
    [[ $got == "$want" ]] || return 1
    went_through udp_delivered "$u0"
}
check socat_preloaded_udp_echo socat_udp

# ---------------------------------------------------------------- python3
py_server() {
    local spid p0
    bg pys "${PX[@]}" "$PY" -m http.server 8000 --directory "$W"
    spid=$BG_PID
    wait_listen 8000 "$spid" || { cat "$T/pys.err"; return 1; }
    p0=$(ctr tcp_passive_opens)
    tkx 40 curl -sS --fail --connect-timeout 10 --max-time 30 -o "$T/pys.got" \
        "http://$DAEMON_IP:8000/f20m" ||
        { tail -n 5 "$T/pys.err"; return 1; }
    same_file "$T/pys.got" "$W/f20m" || return 1
    rm -f "$T/pys.got"
    went_through tcp_passive_opens "$p0"
}
check python_http_server_preloaded_20MiB py_server
py_urllib() {
    local a0
    bg pyk "${KX[@]}" "$PY" -m http.server 8001 --bind "$PEER_IP" --directory "$W"
    wait_listen_ns 8001 || { cat "$T/pyk.err"; return 1; }
    a0=$(ctr tcp_active_opens)
    tpx 60 "$PY" -c '
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=30) as r, open(sys.argv[2], "wb") as f:
    while True:
        d = r.read(1 << 20)
        if not d:
            break
        f.write(d)
' "http://$PEER_IP:8001/f20m" "$T/pyu.got" || return 1
    same_file "$T/pyu.got" "$W/f20m" || return 1
    rm -f "$T/pyu.got"
    went_through tcp_active_opens "$a0"
}
check python_urllib_preloaded_20MiB py_urllib

# ---------------------------------------------------------------- both ends preloaded
# A preloaded ncat sends to a preloaded socat.
pair_socat_ncat() {
    local spid a0 p0 rc
    bg pairs "${PX[@]}" socat -u TCP-LISTEN:7010,reuseaddr STDOUT
    spid=$BG_PID
    wait_listen 7010 "$spid" || { cat "$T/pairs.err"; return 1; }
    a0=$(ctr tcp_active_opens) p0=$(ctr tcp_passive_opens)
    tpx 60 ncat --send-only "$DAEMON_IP" 7010 <"$W/f5m" || { echo "preloaded ncat failed"; return 1; }
    wait_exit "$spid" 30
    rc=$?
    ((rc == 0)) || { echo "preloaded socat exit status $rc: $(cat "$T/pairs.err")"; return 1; }
    same_file "$T/pairs.out" "$W/f5m" || return 1
    went_through tcp_active_opens "$a0" && went_through tcp_passive_opens "$p0"
}
check both_preloaded_ncat_to_socat_5MiB pair_socat_ncat

harness_stop_daemon
