# shellcheck shell=bash
# Sourced by nspawn-e2e.sh, not run on its own: it shares that script's container, helpers
# (IN, prop, prop_is, wait_for, client, under_load, …) and TAP counters.
#
# preforkd's file descriptor store under a real systemd: a copy of preforkd.service run WITHOUT
# preforkd.socket binds its listener itself and hands it to systemd (FDSTORE=1,
# FDNAME=stored-<address> with its ":" written "_"; the unit has FileDescriptorStoreMax=16). On the next start systemd
# passes it back (LISTEN_FDS/LISTEN_FDNAMES) and the daemon reuses it, so `systemctl restart`
# keeps the port and the connections queued on it: no client is refused meanwhile.
#
#   standalone_unit UNIT_DIR    before the boot: derives preforkd-standalone.service from the
#                               (binary-path-rewritten) UNIT_DIR/preforkd.service
#   standalone_checks           after the other checks: start, restart under load, stop + start

STANDALONE=preforkd-standalone.service
STANDALONE_PORT=11001
STANDALONE_ADDRESS=127.0.0.1:$STANDALONE_PORT

# The smallest honest change to the shipped unit, and only this:
# - Requires=/After=preforkd.socket dropped: this unit is the case the fd store is for, a service
#   with no socket unit (under preforkd.socket the daemon is handed the socket unit's sockets,
#   never binds one itself, and so never stores one);
# - `--listen 127.0.0.1:11001` added to ExecStart= (after --fd-store, which the shipped unit
#   already passes): the config file's default address, 127.0.0.1:11000, is held by
#   preforkd.socket in this same container; the command line wins over the config file.
# Everything else (Type=notify, watchdog, the whole sandbox, FileDescriptorStoreMax=16, the config
# path, Restart=) stays as shipped; standalone_unit_check verifies that.
standalone_unit() {
    local dir=$1
    sed -e '/^Requires=preforkd\.socket$/d' -e '/^After=preforkd\.socket$/d' \
        -e "s|^\(ExecStart=[^ ]*/preforkd --fd-store\) |\1 --listen $STANDALONE_ADDRESS |" \
        "$dir/preforkd.service" >"$dir/$STANDALONE"
}

# The diff against the unit under test must be exactly: the two dependency lines gone, and
# ExecStart= with `--listen 127.0.0.1:11001` inserted after `--fd-store`.
standalone_unit_check() {
    local dir=$1 removed added exec
    removed=$(diff "$dir/preforkd.service" "$dir/$STANDALONE" | sed -n 's/^< //p')
    added=$(diff "$dir/preforkd.service" "$dir/$STANDALONE" | sed -n 's/^> //p')
    exec=$(grep '^ExecStart=' "$dir/preforkd.service")
    if [ "$removed" = "Requires=preforkd.socket
After=preforkd.socket
$exec" ] && [ "$added" = "${exec/ --fd-store / --fd-store --listen $STANDALONE_ADDRESS }" ] &&
        [ "$added" != "$exec" ] && grep -qx 'FileDescriptorStoreMax=16' "$dir/$STANDALONE"; then
        ok "$STANDALONE is preforkd.service without Requires=/After=preforkd.socket, with --listen $STANDALONE_ADDRESS (FileDescriptorStoreMax=16 and the sandbox as shipped)"
    else
        not_ok "$STANDALONE differs from preforkd.service beyond the dropped socket dependency and --listen $STANDALONE_ADDRESS"
        note "$(diff "$dir/preforkd.service" "$dir/$STANDALONE")"
    fi
}

# origin_of PID: the origin of the listener on 127.0.0.1:11001 as the run whose supervisor is PID
# logged it ("Listening on 127.0.0.1:11001": the ORIGIN= field of a journal entry, or origin=… in
# a text line): bound, stored, activated; empty while that line is not in the journal.
# listening_line PID: that whole entry (MESSAGE and fields), for a failure note.
origin_of() {
    IN journalctl --no-pager -q -u "$STANDALONE" -o json 2>/dev/null | python3 -c '
import json, re, sys
pid, address, detail = sys.argv[1], sys.argv[2], len(sys.argv) > 3
line_re = re.compile(r"Listening on " + re.escape(address) + r"(\s|$)")
origin = ""
for line in sys.stdin:
    try:
        entry = json.loads(line)
    except ValueError:
        continue
    message = entry.get("MESSAGE")
    if entry.get("_PID") != pid or not isinstance(message, str) or not line_re.search(message):
        continue
    text = re.search(r"\borigin=(\S+)", message)
    origin = entry.get("ORIGIN") or (text.group(1) if text else "?")
    if detail:
        origin = " ".join("%s=%s" % (k, v) for k, v in sorted(entry.items())
                          if k in ("MESSAGE", "ORIGIN", "LISTENER", "ROLE", "_PID"))
print(origin)
' "$1" "$STANDALONE_ADDRESS" "${@:2}"
}
listening_line() { origin_of "$1" detail; }
origin_is() { [ "$(origin_of "$1")" = "$2" ]; }
standalone_journal() { IN journalctl --no-pager -q -u "$STANDALONE" -o short-monotonic -n "${1:-15}" 2>/dev/null | sed 's/^/#   /'; }
standalone_state() {
    echo "$(prop "$STANDALONE" ActiveState)/$(prop "$STANDALONE" SubState) Result=$(prop "$STANDALONE" Result)" \
        "MainPID=$(prop "$STANDALONE" MainPID) NRestarts=$(prop "$STANDALONE" NRestarts)" \
        "NFileDescriptorStore=$(prop "$STANDALONE" NFileDescriptorStore) ExecMainStatus=$(prop "$STANDALONE" ExecMainStatus)"
}

standalone_checks() {
    # The shared helpers act on $SERVICE and $PORT (fail-fast, client, under_load, journal_has):
    # from here on those are the standalone unit's.
    SERVICE=$STANDALONE
    PORT=$STANDALONE_PORT
    local start_rc=0 run1 run2 run3 reply store_after_stop origin3

    # --- start: READY, binding the address itself ---------------------------------------------
    # Type=notify: `systemctl start` returns once READY=1 came (or TimeoutStartSec=30 passed).
    IN timeout 40 systemctl start "$STANDALONE" 2>"$WORK/standalone-start.err" || start_rc=$?
    run1=$(prop "$STANDALONE" MainPID)
    reply=$(client once --timeout 10 2>&1)
    if [ "$start_rc" = 0 ] && wait_for 20 prop_is "$STANDALONE" SubState running && [ "${run1:-0}" != 0 ] &&
        wait_for 5 origin_is "$run1" bound && grep -q '"ok": true' <<<"$reply"; then
        ok "$STANDALONE (no socket unit) starts, reaches READY (SubState=running), binds $STANDALONE_ADDRESS itself (origin=bound) and echoes"
    else
        not_ok "$STANDALONE (no socket unit) starts, reaches READY (SubState=running), binds $STANDALONE_ADDRESS itself (origin=bound) and echoes"
        note "systemctl start exit $start_rc $(cat "$WORK/standalone-start.err")" "$(standalone_state)" \
            "logged by MainPID $run1: '$(listening_line "$run1")'" "client: $reply"
        standalone_journal 20
    fi
    if wait_for 5 prop_is "$STANDALONE" NFileDescriptorStore 1; then
        ok "the listener is in systemd's fd store while running: NFileDescriptorStore=1"
    else
        not_ok "the listener is in systemd's fd store while running: NFileDescriptorStore=1 (is '$(prop "$STANDALONE" NFileDescriptorStore)')"
        standalone_journal 10
    fi

    # --- restart under load: the stored socket keeps the port and its queue ----------------------
    # No socket unit holds the port: between the old supervisor's exit and the new one's start only
    # the copy in the fd store keeps it open, and connections wait in its accept queue.
    restarted_standalone() { prop_is "$STANDALONE" SubState running && ! prop_is "$STANDALONE" MainPID "$run1"; }
    if under_load standalone-restart restarted_standalone IN systemctl restart "$STANDALONE"; then
        ok "$STANDALONE: systemctl restart under load: zero refused or failed connections ($LOAD_RESULT)"
    else
        not_ok "$STANDALONE: systemctl restart under load: zero refused or failed connections"; note "$LOAD_RESULT"; standalone_journal 25
    fi
    run2=$(prop "$STANDALONE" MainPID)
    if [ "$ACTION_RC" = 0 ] && [ "$COMPLETE_RC" = 0 ] && [ "${run2:-0}" != 0 ] && [ "$run2" != "$run1" ] &&
        prop_is "$STANDALONE" NRestarts 0 && wait_for 5 origin_is "$run2" stored &&
        wait_for 5 prop_is "$STANDALONE" NFileDescriptorStore 1; then
        ok "the restart completes: new MainPID ($run1 → $run2), which reuses the stored socket (origin=stored); NFileDescriptorStore=1"
    else
        not_ok "the restart completes: new MainPID which reuses the stored socket (origin=stored)"
        note "systemctl restart exit $ACTION_RC, complete $COMPLETE_RC; MainPID $run1 → $run2" "$(standalone_state)" \
            "logged by MainPID $run2: '$(listening_line "$run2")'"
        if journal_has "Passed FDNAME= name is invalid"; then
            note "systemd refused the FDNAME= of FDSTORE=1 (':' separates LISTEN_FDNAMES entries and is not allowed in a name)" \
                "and stored the socket under its default name: the next run gets LISTEN_FDNAMES=stored, not stored:$STANDALONE_ADDRESS"
        fi
        standalone_journal 25
    fi

    # --- stop, then start again ------------------------------------------------------------------
    # As observed under systemd 252: a restart job keeps the fd store, a plain stop empties it once
    # the unit is inactive (NFileDescriptorStore=0), and the next start binds the address afresh
    # (origin=bound) and stores the new socket.
    local stop_rc=0; IN timeout 60 systemctl stop "$STANDALONE" 2>"$WORK/standalone-stop.err" || stop_rc=$?
    if [ "$stop_rc" = 0 ] && wait_for 20 prop_is "$STANDALONE" ActiveState inactive && prop_is "$STANDALONE" Result success; then
        store_after_stop=$(prop "$STANDALONE" NFileDescriptorStore)
        ok "$STANDALONE: systemctl stop: inactive, Result=success (NFileDescriptorStore=$store_after_stop once stopped)"
    else
        store_after_stop=$(prop "$STANDALONE" NFileDescriptorStore)
        not_ok "$STANDALONE: systemctl stop: inactive, Result=success"
        note "systemctl stop exit $stop_rc $(cat "$WORK/standalone-stop.err")" "$(standalone_state)"
        standalone_journal 15
    fi
    start_rc=0; IN timeout 40 systemctl start "$STANDALONE" 2>"$WORK/standalone-start2.err" || start_rc=$?
    run3=$(prop "$STANDALONE" MainPID)
    reply=$(client once --timeout 10 2>&1)
    wait_for 5 origin_is "$run3" bound
    origin3=$(origin_of "$run3")
    if [ "$start_rc" = 0 ] && prop_is "$STANDALONE" SubState running && [ "${run3:-0}" != 0 ] && [ "$run3" != "$run2" ] &&
        [ "$store_after_stop" = 0 ] && [ "$origin3" = bound ] && grep -q '"ok": true' <<<"$reply" &&
        wait_for 5 prop_is "$STANDALONE" NFileDescriptorStore 1; then
        ok "after a full stop the store was flushed (NFileDescriptorStore=0); start again: MainPID $run3 binds afresh (origin=bound), stores it again, echoes"
    else
        not_ok "after a full stop the store is flushed and a new start binds afresh (origin=bound) and echoes"
        note "NFileDescriptorStore once stopped: $store_after_stop; logged by MainPID $run3: '$(listening_line "$run3")'" \
            "systemctl start exit $start_rc $(cat "$WORK/standalone-start2.err")" "$(standalone_state)" "client: $reply"
        standalone_journal 20
    fi
    IN timeout 60 systemctl stop "$STANDALONE" 2>/dev/null
}
