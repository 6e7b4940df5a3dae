#!/usr/bin/env bash
# shmnet-run, the launcher: it runs a program with the interposer on this daemon, refuses
# with a clear message when no daemon answers or the user may not attach, warns when the
# user a service switches to (--user) may not attach, and names programs LD_PRELOAD
# cannot reach (static, Go). About 3 s.
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"
harness_init lnch
harness_once "the launcher and the control socket do not depend on the NIC"

RUN=${SHMNET_RUN:-$REPO/build/shmnet-run}
[[ -x $RUN ]] || { fail lnch_setup "$RUN not built (make)"; exit 1; }
chmod 755 "$T" # uid 65534 reaches the socket
harness_write_conf "$T/d.conf"
harness_start_daemon "$T/d.conf" || exit 1

# The program runs preloaded: its datagram leaves through shmnet (udp_tx counts it).
udp_tx0=0
udp_sent() { (($(stat udp_tx) > udp_tx0)); }
runs_on_shmnet() {
    local out
    udp_tx0=$(stat udp_tx)
    out=$("$RUN" -s "$SOCK" "$PY" -c '
import os, socket
print(os.environ["LD_PRELOAD"], os.environ["SHMNET_SOCKET"])
socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("'"$PEER_IP"'", 9))
' 2>&1) || { echo "$out"; return 1; }
    echo "$out"
    grep -q "libshmnet_preload.so $SOCK$" <<<"$out" || return 1
    wait_until 5 udp_sent
}
check launcher_runs_the_program_on_shmnet runs_on_shmnet

# expect_fail WANT CMD...: CMD fails and says WANT.
expect_fail() {
    local want=$1 out
    shift
    if out=$("$@" 2>&1); then
        echo "succeeded: $out"
        return 1
    fi
    echo "$out"
    grep -q "$want" <<<"$out"
}
check launcher_refuses_without_daemon expect_fail "no shmnetd answers at $T/none" \
    "$RUN" -s "$T/none" true
check launcher_refuses_a_user_not_allowed expect_fail "refuses this user" \
    setpriv --reuid=65534 --regid=65534 --clear-groups "$RUN" -s "$SOCK" true

# --user: a service that switches to nobody is warned about, and still runs.
warns_user() {
    local out
    out=$("$RUN" -s "$SOCK" --user nobody sh -c 'echo ran' 2>&1) || { echo "$out"; return 1; }
    echo "$out"
    grep -q "^ran$" <<<"$out" && grep -q "user nobody may not attach" <<<"$out"
}
check launcher_warns_about_the_service_user warns_user
access_answers() { ctl access root | grep -q "^allowed: user root (uid 0)$" && ! ctl access nobody; }
check ctl_access_answers_for_a_user access_answers

# Programs LD_PRELOAD cannot reach: named before they run (and they run).
names_static() {
    local out
    out=$("$RUN" -s "$SOCK" /sbin/ldconfig --version 2>&1) || { echo "$out"; return 1; }
    echo "$out"
    grep -q "statically linked" <<<"$out"
}
if LC_ALL=C ldd /sbin/ldconfig 2>&1 | grep -q 'not a dynamic executable\|statically linked'; then
    check launcher_names_a_static_program names_static
else
    skip launcher_names_a_static_program "/sbin/ldconfig is not static here"
fi
names_go() {
    local out
    cp /bin/true "$T/gofake" && printf 'Go buildinf:' >>"$T/gofake" # the Go build-info magic
    out=$("$RUN" -s "$SOCK" "$T/gofake" 2>&1) || { echo "$out"; return 1; }
    echo "$out"
    grep -q "is a Go program" <<<"$out"
}
check launcher_names_a_go_program names_go
harness_stop_daemon
