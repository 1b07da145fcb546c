#!/usr/bin/env bash
# End-to-end test of the shipped units under a real systemd as PID 1: boots systemd in a
# throw-away container (systemd-nspawn, tmpfs root, the host's /usr, a private network namespace)
# with systemd/preforkd.socket + systemd/preforkd.service, and checks socket activation, READY and
# STATUS=, echo, reload, in-place upgrade (USR2) and restart under load without a failed exchange,
# the journal's structured fields, and a draining stop; then (standalone-fd-store.sh) a copy of the service run without the
# socket unit, whose self-bound listener survives `systemctl restart` in systemd's fd store.
# Prints TAP-style `ok - …` / `not ok - …` lines and `N passed, M failed, K skipped`. A check may be
# skipped only because a capability is absent on this machine, and says which; any other skip is a
# failure, so that a run which checked less than it claims never passes.
#
# Usage (root; systemd-container from scripts/install-deps):  Tests/e2e/nspawn-e2e.sh BIN_DIR
#   BIN_DIR holds the preforkd binary, best a static build that runs without /opt/swift:
#     make release && Tests/e2e/nspawn-e2e.sh .build-release/release
# Environment: PREFORKD_E2E_KEEP=1 keeps the work directory (container log, journal dump) for inspection;
# PREFORKD_E2E_LOADS=FILE appends the reload and restart loads' counts to FILE, one JSON line each.
set -uo pipefail

BIN_DIR=${1:-}
[ -n "$BIN_DIR" ] && [ -x "$BIN_DIR/preforkd" ] || { echo "usage: $0 BIN_DIR   (BIN_DIR/preforkd must exist)" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "nspawn-e2e: needs root (systemd-nspawn)" >&2; exit 2; }
command -v systemd-nspawn >/dev/null || { echo "nspawn-e2e: systemd-nspawn missing: run scripts/install-deps (systemd-container)" >&2; exit 2; }

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN_DIR=$(realpath "$BIN_DIR")
SERVICE=preforkd.service
SOCKET=preforkd.socket
PORT=11000            # the socket unit's own port: the container has a network namespace of its own
ADDRESS=127.0.0.1:$PORT
STARTED_AT=$(date +%s.%N)

WORK=$(mktemp -d /tmp/preforkd-nspawn-e2e.XXXXXX)
LOG=$WORK/container.log
MACHINE=preforkd-e2e-$$

# --- reporting ---------------------------------------------------------------------------------
. "$HERE/../lib/nspawn-harness.sh"
skipped=0; absent=()
# skip WHAT CAPABILITY: WHAT cannot be checked because CAPABILITY is absent on this machine (the
# caller has just found it missing). Without a capability the skip is a failure.
skip() {
    number=$((number + 1))
    if [ -n "${2:-}" ]; then
        skipped=$((skipped + 1)); absent+=("$2")
        echo "ok $number - $1 # SKIP absent capability: $2"
    else
        failed=$((failed + 1))
        echo "not ok $number - $1 # skipped without naming an absent capability: counted as a failure"
    fi
}
summary() {
    echo "$passed passed, $failed failed, $skipped skipped"
    [ "$skipped" -eq 0 ] || printf '# skipped for want of: %s\n' "${absent[@]}"
}
harness_start 150 PREFORKD_E2E_KEEP

# --- the units, as shipped -----------------------------------------------------------------------
# Rewritten, and only this: ExecStart='s binary path /usr/bin/preforkd → /opt/preforkd/preforkd. The
# container's /usr is the host's, read-only, and the binary is not installed there; it is bound
# to /opt/preforkd instead (not under /tmp: DynamicUser= implies PrivateTmp=, which would hide it).
# The config path stays /etc/preforkd/preforkd.toml (the example config is bound there) and the
# port stays 11000 (the container has a network namespace of its own).
mkdir -p "$WORK/units" "$WORK/etc"
cp "$ROOT/systemd/$SERVICE" "$ROOT/systemd/$SOCKET" "$ROOT/systemd/preforkd@.service" "$ROOT/systemd/preforkd@.socket" "$WORK/units/"
sed -i 's|^ExecStart=/usr/bin/preforkd |ExecStart=/opt/preforkd/preforkd |' "$WORK/units/$SERVICE" "$WORK/units/preforkd@.service"
# The same service without the socket unit, for the fd store checks (see standalone-fd-store.sh).
. "$HERE/standalone-fd-store.sh"
standalone_unit "$WORK/units"
cp "$ROOT/systemd/preforkd.toml" "$WORK/etc/preforkd.toml"
cp "$ROOT/systemd/preforkd.toml" "$WORK/etc/second.toml"   # the config of instance "second"
# A boot target of the test's own: basic system + the socket, and nothing that starts the service.
cat > "$WORK/units/e2e.target" <<'EOF'
[Unit]
Description=preforkd end-to-end test boot target
Requires=basic.target preforkd.socket
After=basic.target preforkd.socket
AllowIsolate=yes
EOF

# Undo the one rewrite: what is left must be identical to systemd/.
unit_diff=$(for unit in "$SERVICE" "$SOCKET" preforkd@.service preforkd@.socket; do
    diff "$ROOT/systemd/$unit" <(sed 's|^ExecStart=/opt/preforkd/preforkd |ExecStart=/usr/bin/preforkd |' "$WORK/units/$unit")
done)
rewritten=$(grep -c '^ExecStart=/opt/preforkd/preforkd ' "$WORK/units/$SERVICE" "$WORK/units/preforkd@.service" | grep -c ':1$')
if [ -z "$unit_diff" ] && [ "$rewritten" -eq 2 ]; then
    ok "the units under test are those of systemd/ unchanged but for ExecStart's binary path"
else
    not_ok "the units under test differ from systemd/ beyond ExecStart's binary path"; note "$unit_diff"
fi
standalone_unit_check "$WORK/units"

# --- boot ---------------------------------------------------------------------------------------
# --register=no --keep-unit: no machined or bus needed on a host whose PID 1 is not systemd.
# systemd.firstboot=off: no interactive first-boot questions on the empty /etc.
binds=(--bind-ro="$WORK/units":/run/systemd/system --bind-ro="$BIN_DIR":/opt/preforkd
       --bind-ro="$HERE":/opt/e2e --bind-ro="$WORK/etc":/etc/preforkd)
[ -d /opt/swift ] && binds+=(--bind-ro=/opt/swift)   # a non-static build needs the Swift runtime
systemd-nspawn -D / --volatile=yes --register=no --keep-unit --private-network --machine="$MACHINE" \
    "${binds[@]}" -b systemd.unit=e2e.target systemd.firstboot=off >"$LOG" 2>&1 </dev/null &
NSPID=$!

# wait_for SECONDS COMMAND…: polls COMMAND every 0.1 s until it succeeds; false at the deadline.
# Once the container is up it also gives up at once when the service has failed for good
# (ActiveState=failed is final: Restart= goes through "activating"), so that a broken daemon
# fails every later check in seconds instead of after each full deadline.
FAIL_FAST=0
wait_for() {
    local limit=$1; shift
    local end=$((SECONDS + limit))
    while :; do
        "$@" >/dev/null 2>&1 && return 0
        [ $SECONDS -ge $end ] && return 1
        [ $FAIL_FAST = 1 ] && prop_is "$SERVICE" ActiveState failed && return 1
        sleep 0.1
    done
}

find_leader() {
    LEADER=$(pgrep -P "$NSPID" | head -1)
    [ -n "$LEADER" ] && [ "$(cat /proc/"$LEADER"/comm 2>/dev/null)" = systemd ]
}
IN() { nsenter -t "$LEADER" -m -u -i -n -p -- "$@"; }
booted() { case $(IN systemctl is-system-running 2>/dev/null) in running|degraded) return 0;; esac; return 1; }
prop() { IN systemctl show -p "$2" --value "$1" 2>/dev/null; }
prop_is() { [ "$(prop "$1" "$2")" = "$3" ]; }
client() { IN timeout 30 python3 /opt/e2e/echo_client.py 127.0.0.1 "$PORT" "$@"; }
journal_has() { IN journalctl --no-pager -q -u "$SERVICE" -o cat 2>/dev/null | grep -qF -- "$1"; }
show_journal() { IN journalctl --no-pager -q -u "$SERVICE" -o short-monotonic -n "${1:-15}" 2>/dev/null | sed 's/^/#   /'; }

if wait_for 20 find_leader && wait_for 40 booted; then
    ok "systemd boots in the container ($(IN systemctl is-system-running 2>/dev/null))"
    if [ "$(IN systemctl is-system-running 2>/dev/null)" = degraded ]; then note "failed units:" "$(IN systemctl --failed --no-legend 2>&1)"; fi
else
    not_ok "systemd boots in the container"; note "$(tail -20 "$LOG")"
    summary; exit 1
fi

FAIL_FAST=1

# --- socket activation --------------------------------------------------------------------------
if wait_for 10 prop_is "$SOCKET" SubState listening && prop_is "$SERVICE" ActiveState inactive; then
    ok "before any connection: $SOCKET is listening and $SERVICE is inactive"
else
    not_ok "before any connection: $SOCKET is listening and $SERVICE is inactive"
    note "socket: $(prop "$SOCKET" ActiveState)/$(prop "$SOCKET" SubState); service: $(prop "$SERVICE" ActiveState)/$(prop "$SERVICE" SubState)"
fi
first=$(client once --timeout 20 2>&1)
if grep -q '"ok": true' <<<"$first"; then
    ok "the first connection starts $SERVICE and gets its echo"
else
    not_ok "the first connection starts $SERVICE and gets its echo"; note "client: $first"; show_journal 20
fi
# NRestarts>0 here would mean the service failed and was restarted on the way.
if wait_for 20 prop_is "$SERVICE" ActiveState active && prop_is "$SERVICE" NRestarts 0; then
    ok "$SERVICE is active after the first connection, without a restart"
else
    not_ok "$SERVICE is active after the first connection, without a restart"
    note "state: $(prop "$SERVICE" ActiveState)/$(prop "$SERVICE" SubState) result=$(prop "$SERVICE" Result) restarts=$(prop "$SERVICE" NRestarts) exit=$(prop "$SERVICE" ExecMainStatus)"
    show_journal 20
fi

# --- READY, STATUS= ----------------------------------------------------------------------------
if wait_for 20 prop_is "$SERVICE" SubState running; then ok "READY=1 reached: SubState=running"; else not_ok "READY=1 reached: SubState=running (is $(prop "$SERVICE" SubState))"; fi
status_mentions_address() { prop "$SERVICE" StatusText | grep -qF "$ADDRESS"; }
if wait_for 10 status_mentions_address; then
    ok "StatusText mentions the listen address: $(prop "$SERVICE" StatusText)"
else
    not_ok "StatusText mentions the listen address $ADDRESS"; note "StatusText=$(prop "$SERVICE" StatusText)"
fi
# preforkd status reads the scoreboard the supervisor keeps in its RuntimeDirectory=.
status_table() { IN /opt/preforkd/preforkd status --runtime-directory /run/preforkd 2>&1; }
if table=$(status_table) && grep -q "^preforkd $(prop "$SERVICE" MainPID): up " <<<"$table"; then
    ok "preforkd status reads /run/preforkd/status: $(grep -c accepting <<<"$table") workers accepting"
else
    not_ok "preforkd status reads /run/preforkd/status"; note "$table"
fi
main_pid=$(prop "$SERVICE" MainPID)
if [ -n "$main_pid" ] && [ "$main_pid" != 0 ]; then
    status=$(IN cat /proc/"$main_pid"/status 2>/dev/null)
    uid=$(printf '%s\n' "$status" | awk '/^Uid:/{print $2}')
    nnp=$(printf '%s\n' "$status" | awk '/^NoNewPrivs:/{print $2}')
    seccomp=$(printf '%s\n' "$status" | awk '/^Seccomp:/{print $2}')
    capeff=$(printf '%s\n' "$status" | awk '/^CapEff:/{print $2}')
    if [ -n "$uid" ] && [ "$uid" != 0 ] && [ "$nnp" = 1 ] && [ "$seccomp" = 2 ] && [ "$capeff" = 0000000000000000 ]; then
        ok "the sandbox holds: dynamic uid $uid, no capabilities, NoNewPrivs, seccomp filter"
    else
        not_ok "the sandbox holds (uid=$uid NoNewPrivs=$nnp Seccomp=$seccomp CapEff=$capeff)"
    fi
else
    not_ok "the sandbox holds: no MainPID"
fi
if [ "$(prop "$SERVICE" WatchdogUSec)" = 10s ] && wait_for 5 journal_has "Watchdog on"; then
    ok "the watchdog is armed (WatchdogUSec=10s, the daemon pings)"
else
    not_ok "the watchdog is armed (WatchdogUSec=$(prop "$SERVICE" WatchdogUSec))"
fi

# --- echo ---------------------------------------------------------------------------------------
echo_ok=1; echo_notes=()
for size in 1 100 1500 70000; do   # 1500 and 70000 go past the initial read (1024 bytes) and one segment
    out=$(client once --size "$size" --timeout 10 2>&1)
    grep -q '"ok": true' <<<"$out" || { echo_ok=0; echo_notes+=("size $size: $out"); }
done
if [ $echo_ok = 1 ]; then ok "echo works (messages of 1, 100, 1500 and 70000 bytes)"; else not_ok "echo works"; note "${echo_notes[@]}"; fi

# --- a worker dies -----------------------------------------------------------------------------
# SIGKILL one worker: the supervisor replaces it (logged with the worker's fields); the service
# itself stays running, same MainPID, no restart.
main_pid=$(prop "$SERVICE" MainPID)
workers_before=$(IN pgrep -c -P "$main_pid" 2>/dev/null)
victim=$(IN pgrep -P "$main_pid" 2>/dev/null | head -1)
if [ -n "$victim" ]; then
    IN kill -KILL "$victim"
    replaced() {
        journal_has "died (killed by SIGKILL)" && [ "$(IN pgrep -c -P "$main_pid")" = "$workers_before" ] &&
            ! IN pgrep -P "$main_pid" | grep -qx "$victim"
    }
    if wait_for 15 replaced && prop_is "$SERVICE" SubState running && prop_is "$SERVICE" MainPID "$main_pid" &&
        prop_is "$SERVICE" NRestarts 0 && client once --timeout 10 | grep -q '"ok": true'; then
        ok "a worker killed with SIGKILL is replaced ($workers_before workers again); the service stays running and echoes"
    else
        not_ok "a worker killed with SIGKILL is replaced; the service stays running and echoes"
        note "workers: $(IN pgrep -a -P "$main_pid" | tr '\n' ' '); $(prop "$SERVICE" ActiveState)/$(prop "$SERVICE" SubState) MainPID=$(prop "$SERVICE" MainPID)"
        show_journal 10
    fi
else
    not_ok "a worker killed with SIGKILL is replaced: no worker process found under MainPID $main_pid"
fi

# --- reload and restart under load ---------------------------------------------------------------
# under_load NAME COMPLETE ACTION…: starts a bounded client loop (4 threads, 2 ms apart; ends on a
# stop file, or at the latest after 10 s or 8000 exchanges), runs ACTION once the loop has
# completed an exchange, waits (deadline 20 s) until COMPLETE holds, lets the load run a little
# past it, then stops the loop. The load thus spans the whole action. Sets ACTION_RC, COMPLETE_RC,
# LOAD_RESULT; true when no exchange failed and the stop file (not a bound) ended the loop.
under_load() {
    local name=$1 complete=$2; shift 2
    local out=$WORK/load-$name.json stop=/run/e2e-stop-$name
    IN rm -f "$stop"
    IN timeout 40 python3 /opt/e2e/echo_client.py 127.0.0.1 "$PORT" load --stop-file "$stop" \
        --seconds 10 --max 8000 --threads 4 --interval 0.002 --timeout 10 >"$out" 2>&1 &
    local loader=$!
    started() { grep -q '"event": "started"' "$out"; }
    ACTION_RC=-; COMPLETE_RC=-
    if wait_for 10 started; then
        "$@"; ACTION_RC=$?
        wait_for 20 "$complete"; COMPLETE_RC=$?
        sleep 0.3   # some load after the action has completed, too
    fi
    IN touch "$stop"
    wait "$loader"
    LOAD_RESULT=$(tail -1 "$out")
    # The fault suite (Tests/faults/faults.py --e2e-results) reports these counts in its table.
    [ -z "${PREFORKD_E2E_LOADS:-}" ] || printf '{"check": "%s", "load": %s}\n' "$name" "${LOAD_RESULT:-null}" >>"$PREFORKD_E2E_LOADS"
    printf '%s' "$LOAD_RESULT" | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if d["failed"]==0 and d["ok"]>0 and d["stopped_by"]=="stop-file" else 1)' 2>/dev/null
}

# systemctl reload: ExecReload= sends SIGHUP and returns; the daemon re-reads its config, reports
# RELOADING=1 and, once the new generation accepts, READY=1 again. The config changes before the
# reload (workers = 3) to see that it is re-read. Complete = active/running again, the journal
# shows generation 2 started with 3 workers, accepting, and generation 1 drained.
# (A top-level key must come before the [echo] table; a workers line already there is dropped.)
python3 - "$WORK/etc/preforkd.toml" <<'PY'
import sys
path = sys.argv[1]
text = open(path).read()
import re
text = re.sub(r"(?m)^workers *=.*\n", "", text)
head, sep, tail = text.partition("\n[echo]")
open(path, "w").write(head.rstrip("\n") + "\n\n# set by the end-to-end test before its reload\nworkers = 3\n" + sep + tail)
PY
pid_before=$(prop "$SERVICE" MainPID)
reloaded() {
    prop_is "$SERVICE" ActiveState active && prop_is "$SERVICE" SubState running &&
        journal_has "starting generation 2 with 3 workers" && journal_has "Generation 2 accepting" && journal_has "Generation 1 drained"
}
if under_load reload reloaded IN systemctl reload "$SERVICE"; then
    ok "systemctl reload under load: zero failed exchanges ($LOAD_RESULT)"
else
    not_ok "systemctl reload under load: zero failed exchanges"; note "$LOAD_RESULT"; show_journal 20
fi
if [ "$ACTION_RC" = 0 ] && [ "$COMPLETE_RC" = 0 ] && prop_is "$SERVICE" MainPID "$pid_before"; then
    ok "the reload completes: config re-read (3 workers), generation 2 accepting, generation 1 drained, active/running, same MainPID"
else
    not_ok "the reload completes (systemctl reload exit $ACTION_RC; $(prop "$SERVICE" ActiveState)/$(prop "$SERVICE" SubState); MainPID $pid_before → $(prop "$SERVICE" MainPID))"
    show_journal 20
fi

# systemctl kill -s USR2: an in-place upgrade. The supervisor re-executes its binary in the same
# process (the workers ignore USR2): MainPID stays, and so do the socket and the unit's state;
# the new image adopts generation 2, starts generation 3 and drains 2 once 3 accepts. systemd
# sees RELOADING=1, then READY=1 from the same MainPID (NotifyAccess=main would drop any other).
pid_before=$(prop "$SERVICE" MainPID)
upgraded() {
    prop_is "$SERVICE" ActiveState active && prop_is "$SERVICE" SubState running &&
        journal_has "upgraded in place; adopted" && journal_has "Generation 3 accepting" && journal_has "Generation 2 drained"
}
if under_load upgrade upgraded IN systemctl kill -s USR2 "$SERVICE"; then
    ok "systemctl kill -s USR2 under load: zero failed exchanges ($LOAD_RESULT)"
else
    not_ok "systemctl kill -s USR2 under load: zero failed exchanges"; note "$LOAD_RESULT"; show_journal 20
fi
if [ "$ACTION_RC" = 0 ] && [ "$COMPLETE_RC" = 0 ] && prop_is "$SERVICE" MainPID "$pid_before" && prop_is "$SERVICE" NRestarts 0; then
    ok "the in-place upgrade completes: same MainPID ($pid_before), generation 3 accepting, generation 2 drained, active/running"
else
    not_ok "the in-place upgrade completes (systemctl kill exit $ACTION_RC; $(prop "$SERVICE" ActiveState)/$(prop "$SERVICE" SubState); MainPID $pid_before → $(prop "$SERVICE" MainPID))"
    show_journal 20
fi

# systemctl restart: the old supervisor drains and exits, a new one starts; the socket unit keeps
# the listening socket meanwhile, so clients queue in its backlog instead of being refused.
pid_before=$(prop "$SERVICE" MainPID)
restarted() { prop_is "$SERVICE" SubState running && ! prop_is "$SERVICE" MainPID "$pid_before"; }
if under_load restart restarted IN systemctl restart "$SERVICE"; then
    ok "systemctl restart under load: zero refused or failed connections ($LOAD_RESULT)"
else
    not_ok "systemctl restart under load: zero refused or failed connections"; note "$LOAD_RESULT"; show_journal 25
fi
if [ "$ACTION_RC" = 0 ] && [ "$COMPLETE_RC" = 0 ] && prop_is "$SERVICE" NRestarts 0; then
    ok "the restart completes: running again with a new MainPID ($pid_before → $(prop "$SERVICE" MainPID))"
else
    not_ok "the restart completes (systemctl restart exit $ACTION_RC; $(prop "$SERVICE" ActiveState)/$(prop "$SERVICE" SubState); MainPID $pid_before → $(prop "$SERVICE" MainPID))"
    show_journal 20
fi

# --- the journal --------------------------------------------------------------------------------
IN journalctl --no-pager -q -u "$SERVICE" -o json >"$WORK/journal.json" 2>/dev/null
fields=$(python3 - "$WORK/journal.json" <<'EOF'
import json, sys
seen = {}
for line in open(sys.argv[1], errors="replace"):
    try:
        entry = json.loads(line)
    except ValueError:
        continue
    if entry.get("_COMM") == "systemd" or entry.get("_PID") == "1":
        continue  # the service manager's own lines about the unit
    for key in ("PRIORITY", "SYSLOG_IDENTIFIER", "CODE_FILE", "WORKER_PID", "WORKER_GENERATION", "LISTENER"):
        if key in entry:
            seen.setdefault(key, entry[key] if isinstance(entry[key], str) else "?")
    seen["_entries"] = seen.get("_entries", 0) + 1
print(" ".join("%s=%s" % (k, v) for k, v in sorted(seen.items())))
EOF
)
has_field() { grep -q " $1=" <<<" $fields"; }
if has_field PRIORITY && grep -q 'SYSLOG_IDENTIFIER=preforkd' <<<"$fields"; then
    ok "journalctl -u $SERVICE -o json: the daemon's entries carry PRIORITY and SYSLOG_IDENTIFIER=preforkd ($fields)"
else
    not_ok "journalctl -u $SERVICE -o json: the daemon's entries carry PRIORITY and SYSLOG_IDENTIFIER=preforkd"; note "seen: $fields"
fi
# Native journal entries carry CODE_FILE; lines written to the journal stream never do, nor the
# daemon's own fields: text logging under systemd fails here.
if has_field CODE_FILE && has_field WORKER_PID && has_field WORKER_GENERATION && has_field LISTENER; then
    ok "structured journal fields: CODE_FILE, WORKER_PID and WORKER_GENERATION (the killed worker's entry) and LISTENER present"
else
    not_ok "structured journal fields: CODE_FILE, WORKER_PID and WORKER_GENERATION (the killed worker's entry) and LISTENER present"
    note "seen: $fields"
fi

# --- draining stop ------------------------------------------------------------------------------
# A connection is mid-message when the stop begins; a draining stop lets the worker finish it.
slow_out=$WORK/slow.json
IN timeout 30 python3 /opt/e2e/echo_client.py 127.0.0.1 "$PORT" slow --delay 1.5 --timeout 15 >"$slow_out" 2>&1 &
slow=$!
sent() { grep -q '"event": "sent"' "$slow_out"; }
wait_for 10 sent
# (systemctl warns on stderr that the socket can start the service again: expected, kept for a failure note.)
stop_rc=0; IN timeout 60 systemctl stop "$SERVICE" 2>"$WORK/stop.err" || stop_rc=$?
wait "$slow"
if tail -1 "$slow_out" | grep -q '"ok": true'; then
    ok "systemctl stop drains: a connection in flight when the stop began got its whole echo"
else
    not_ok "systemctl stop drains: a connection in flight when the stop began got its whole echo"; note "client: $(cat "$slow_out")"; show_journal 15
fi
stopped() { prop_is "$SERVICE" ActiveState inactive; }
if [ "$stop_rc" = 0 ] && wait_for 20 stopped && prop_is "$SERVICE" Result success && prop_is "$SERVICE" ExecMainStatus 0 && journal_has "Stopped"; then
    ok "systemctl stop: inactive, Result=success, exit status 0"
else
    not_ok "systemctl stop: inactive, Result=success, exit status 0"
    note "$(cat "$WORK/stop.err")" "stop exit $stop_rc; $(prop "$SERVICE" ActiveState) Result=$(prop "$SERVICE" Result) ExecMainCode=$(prop "$SERVICE" ExecMainCode) ExecMainStatus=$(prop "$SERVICE" ExecMainStatus)"
    show_journal 15
fi
if prop_is "$SOCKET" SubState listening; then ok "$SOCKET keeps listening after the service stopped"; else not_ok "$SOCKET keeps listening after the service stopped ($(prop "$SOCKET" SubState))"; fi

# --- a second instance from the template ----------------------------------------------------------
# preforkd@second.socket listens on its default unix socket; its service reads /etc/preforkd/second.toml.
INSTANCE=preforkd@second
instance_ok=1; instance_notes=()
IN systemctl start "$INSTANCE.socket" 2>"$WORK/instance.err" || { instance_ok=0; instance_notes+=("start: $(cat "$WORK/instance.err")"); }
reply=$(IN timeout 30 python3 /opt/e2e/echo_client.py unix:/run/preforkd/second.sock 0 once --timeout 15 2>&1)
grep -q '"ok": true' <<<"$reply" || { instance_ok=0; instance_notes+=("client: $reply"); }
if [ $instance_ok = 1 ] && wait_for 15 prop_is "$INSTANCE.service" SubState running &&
    IN journalctl --no-pager -q -u "$INSTANCE.service" -o cat | grep -qF "Listening on unix:/run/preforkd/second.sock"; then
    ok "template: $INSTANCE.socket starts $INSTANCE.service on /run/preforkd/second.sock, which echoes"
else
    not_ok "template: $INSTANCE.socket starts $INSTANCE.service on /run/preforkd/second.sock, which echoes"
    note "${instance_notes[@]}" "$(prop "$INSTANCE.service" ActiveState)/$(prop "$INSTANCE.service" SubState)"
    IN journalctl --no-pager -q -u "$INSTANCE.service" -n 10 2>/dev/null | sed 's/^/#   /'
fi

# --- the fd store: the service without its socket unit (standalone-fd-store.sh) -------------------
standalone_checks

echo "# took $(awk -v a="$STARTED_AT" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"
echo "1..$number"
summary
[ "$failed" -eq 0 ]
