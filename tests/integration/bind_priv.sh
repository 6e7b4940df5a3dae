#!/usr/bin/env bash
# Ports below clients.unprivileged_port_start (default 1024, as Linux's
# net.ipv4.ip_unprivileged_port_start) need a client running as root or with
# CAP_NET_BIND_SERVICE: a preloaded program of another uid gets EACCES for them, TCP and
# UDP, and binds higher ports; with the capability, or with the key set to 0, it binds
# them. About 5 s.
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"
harness_init bprv
harness_once "the control plane and client credentials do not depend on the NIC"

PRELOAD=${PRELOAD:-$REPO/build/libshmnet_preload.so}
[[ -f $PRELOAD ]] || { fail bprv_setup "$PRELOAD not built (make)"; exit 1; }
USER_ID=65534
chmod 755 "$T" # the other uid reaches the socket
CONF=$T/d.conf
HARNESS_DAEMON_OPTS="allowed_users = [ 0, $USER_ID ];" harness_write_conf "$CONF"
harness_start_daemon "$CONF" || exit 1

# bind_as UID CAPS PORT...: a preloaded python binds TCP and UDP sockets to each port and
# prints "tcp PORT ok|ERRNO" and "udp PORT ok|ERRNO" lines. CAPS: "" or a setpriv cap list.
bind_as() {
    local u=$1 caps=$2
    shift 2
    local capargs=()
    [[ -n $caps ]] && capargs=(--inh-caps="$caps" --ambient-caps="$caps")
    setpriv --reuid="$u" --regid="$u" --clear-groups "${capargs[@]}" \
        env LD_PRELOAD="$PRELOAD" SHMNET_SOCKET="$SOCK" "$PY" -c '
import errno, socket, sys
for p in sys.argv[1:]:
    for name, kind in (("tcp", socket.SOCK_STREAM), ("udp", socket.SOCK_DGRAM)):
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind(("0.0.0.0", int(p)))
            if kind == socket.SOCK_STREAM:
                s.listen(1)
            print(name, p, "ok")
        except OSError as e:
            print(name, p, errno.errorcode.get(e.errno, e.errno))
        s.close()
' "$@" 2>&1
}

expect() { # OUTPUT LINE...: every LINE is in OUTPUT
    local out=$1 l
    shift
    for l in "$@"; do
        grep -qx "$l" <<<"$out" || { echo "missing '$l' in:"; echo "$out"; return 1; }
    done
}

user_refused_low() {
    expect "$(bind_as $USER_ID "" 80 1023 1024 8080)" "tcp 80 EACCES" "udp 80 EACCES" \
        "tcp 1023 EACCES" "udp 1023 EACCES" "tcp 1024 ok" "udp 1024 ok" "tcp 8080 ok" "udp 8080 ok"
}
check bind_low_port_unprivileged_eacces user_refused_low

user_with_cap() {
    expect "$(bind_as $USER_ID +net_bind_service 80)" "tcp 80 ok" "udp 80 ok"
}
check bind_low_port_with_cap_net_bind_service user_with_cap

root_binds() { expect "$(bind_as 0 "" 81)" "tcp 81 ok" "udp 81 ok"; }
check bind_low_port_root root_binds

# clients.* applies to sessions attached after a reload.
HARNESS_DAEMON_OPTS="allowed_users = [ 0, $USER_ID ];" harness_write_conf "$CONF" "" \
    "clients = { unprivileged_port_start = 0; };"
reloads() { grep -c 'configuration reloaded' "$DLOG"; }
r0=$(reloads)
kill -HUP "$DPID"
reloaded() { (($(reloads) > r0)); }
check bprv_reload wait_until 5 reloaded
user_any_port() { expect "$(bind_as $USER_ID "" 80)" "tcp 80 ok" "udp 80 ok"; }
check bind_low_port_with_start_0 user_any_port
harness_stop_daemon
