# Shared by the shell tests that boot systemd as PID 1 in a container (Tests/e2e/nspawn-e2e.sh,
# Tests/package/test-package.sh): TAP lines, the container's clean-up, and a deadline for the
# whole run. Source it after setting WORK (the run's temporary directory); set NSPID
# (systemd-nspawn's pid) and LEADER (the container's init) once they exist, then call
# harness_start.

passed=0; failed=0; number=0
NSPID=
LEADER=
GUARD=

ok()     { number=$((number + 1)); passed=$((passed + 1)); echo "ok $number - $*"; }
not_ok() { number=$((number + 1)); failed=$((failed + 1)); echo "not ok $number - $*"; }
note()   { printf '%s\n' "$@" | sed 's/^/#   /'; }
check()  { local what=$1; shift; if "$@"; then ok "$what"; else not_ok "$what"; fi; }

# harness_start SECONDS KEEP_VARIABLE: clean up whatever happens, and end the run after SECONDS
# even if something unforeseen blocks. With the variable named KEEP_VARIABLE set to 1, WORK is
# kept for a look afterwards.
harness_start() {
    HARNESS_KEEP=$2
    trap harness_cleanup EXIT
    trap "echo '# interrupted (or the overall deadline of $1 s passed)' >&2; exit 130" INT TERM
    # The guard's output goes nowhere, so that its sleep never holds the caller's pipe open;
    # killed, it takes its sleep along.
    ( exec >/dev/null 2>&1; trap 'kill $nap 2>/dev/null; exit 0' TERM
      sleep "$1" & nap=$!; wait $nap && kill -TERM $$ ) &
    GUARD=$!
}

harness_cleanup() {
    local rc=$?
    trap - EXIT; trap '' INT TERM   # nothing may cut the clean-up short
    [ -n "$GUARD" ] && { kill "$GUARD" 2>/dev/null; wait "$GUARD" 2>/dev/null; }
    if [ -n "$NSPID" ] && kill -0 "$NSPID" 2>/dev/null; then
        # SIGTERM makes nspawn ask the container's systemd to power off; SIGKILL if it lingers.
        kill -TERM "$NSPID" 2>/dev/null
        for _ in $(seq 1 100); do kill -0 "$NSPID" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$NSPID" 2>/dev/null && { kill -KILL "$NSPID" 2>/dev/null; [ -n "$LEADER" ] && kill -KILL "$LEADER" 2>/dev/null; }
        wait "$NSPID" 2>/dev/null
    fi
    # nspawn leaves these behind; stale ones confuse the next run.
    rm -rf /run/systemd/nspawn
    rmdir /run/systemd/nspawn-root 2>/dev/null
    if [ "${!HARNESS_KEEP:-0}" = 1 ]; then echo "# kept $WORK" >&2; else rm -rf "$WORK"; fi
    exit $rc
}
