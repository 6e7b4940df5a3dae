#!/usr/bin/env bash
# Config validation (--check-config) and reload with SIGHUP: a good change is applied, a
# broken file is reported and the daemon keeps running with the old config.
# shellcheck source=tests/lib/harness.sh
. "$(dirname "$0")/../lib/harness.sh"
harness_init conf

check check_config_shipped_file "$SHMNETD" --check-config -c "$REPO/conf/shmnetd.conf"

BAD="$T/bad.conf"
cat >"$BAD" <<EOF
daemon = { socket = "$T/bad.sock"; };
interfaces = ( {
    name = "$TAP"; backend = "tap"; no_such_key = 1;
    mac = "02:00:00:00:00:02";
    address = "10.200.0.300/24";
} );
EOF
bad_config() {
    local out rc
    out=$("$SHMNETD" --check-config -c "$BAD" 2>&1)
    rc=$?
    echo "$out"
    echo "exit status $rc"
    ((rc != 0)) && grep -q "^$BAD:3: " <<<"$out" && grep -q "^$BAD:5: " <<<"$out"
}
check check_config_reports_each_error_with_line bad_config

missing_config() {
    local out rc
    out=$("$SHMNETD" --check-config -c "$T/does-not-exist.conf" 2>&1)
    rc=$?
    echo "$out"
    ((rc != 0)) && [[ -n $out ]]
}
check check_config_missing_file_fails missing_config

# ---- reload ----
CONF="$T/d.conf"
harness_write_conf "$CONF"
harness_start_daemon "$CONF" || exit 1
harness_peer_ns || { fail peer_ns "cannot set up the peer namespace"; exit 1; }
check ping_before_reload nsx ping -c 1 -W 2 "$DAEMON_IP"

log_has() { grep -Eiq "$1" "$DLOG"; }

no_debug_yet() { ctl stats >/dev/null && ! log_has ': debug: '; }
check no_debug_messages_at_info no_debug_yet

# A good change: log_level info -> debug.
harness_write_conf "$CONF" "" "" debug
kill -HUP "$DPID"
reload_applied() { wait_until 5 log_has 'log.?level.*debug'; }
check sighup_applies_log_level reload_applied
# The new level is in force: a control request is now logged at debug level.
debug_logged() { ctl stats >/dev/null && wait_until 5 log_has ': debug: '; }
check debug_messages_after_reload debug_logged
check ping_after_reload nsx ping -c 1 -W 2 "$DAEMON_IP"

# A broken file: error reported with FILE:LINE, old config kept.
printf 'daemon = { socket = "%s"; log_level = "debug"; };\ninterfaces = ( { name = ;\n' \
    "$SOCK" >"$CONF"
kill -HUP "$DPID"
reload_error_logged() { wait_until 5 log_has "$CONF:[0-9]+:"; }
check sighup_broken_file_logs_error reload_error_logged
alive() { kill -0 "$DPID"; }
check sighup_broken_file_keeps_running alive
check ping_after_broken_reload nsx ping -c 3 -W 2 "$DAEMON_IP"
check stats_after_broken_reload stat ip4_rx

# A config path that is not a regular file (a FIFO blocks the reader until a writer comes):
# refused at once, by --check-config and by a reload, which must not hang the control thread.
mkfifo "$T/fifo.conf"
fifo_check_config() {
    local out rc
    out=$(timeout -k 1 5 "$SHMNETD" --check-config -c "$T/fifo.conf" 2>&1)
    rc=$?
    echo "$out"
    echo "exit status $rc"
    ((rc == 1)) && grep -q "^$T/fifo.conf: cannot read: a FIFO, not a regular file" <<<"$out"
}
check check_config_fifo_refused fifo_check_config
INC="$T/inc.conf"
printf '@include "fifo.conf"\n' >"$INC"
fifo_include() {
    local out rc
    out=$(timeout -k 1 5 "$SHMNETD" --check-config -c "$INC" 2>&1)
    rc=$?
    echo "$out"
    echo "exit status $rc"
    ((rc == 1)) && grep -q "^$T/fifo.conf: cannot read: a FIFO, not a regular file" <<<"$out"
}
check check_config_fifo_include_refused fifo_include
# The running daemon's file replaced by a FIFO, then SIGHUP: reported, config kept, and the
# control socket still answers.
harness_write_conf "$CONF"
cp "$CONF" "$T/good.conf"
rm -f "$CONF"
mkfifo "$CONF"
kill -HUP "$DPID"
fifo_reload_logged() { wait_until 5 log_has "$CONF: cannot read: a FIFO, not a regular file"; }
check sighup_fifo_reported fifo_reload_logged
ctl_answers() { timeout -k 1 5 "$SHMNETCTL" -s "$SOCK" version | grep -q '^shmnetd '; }
check sighup_fifo_control_socket_answers ctl_answers
check ping_after_fifo_reload nsx ping -c 1 -W 2 "$DAEMON_IP"
# Release a reader stuck in open() (a writer opens and closes: it reads EOF), then put the
# regular file back.
: <>"$CONF"
rm -f "$CONF"
cp "$T/good.conf" "$CONF"
