#!/usr/bin/env bash
# Static checks of the systemd units in systemd/, in a few seconds, without a running systemd:
#   - `systemd-analyze verify` on every unit, the template as an instance, and on every unit with
#     each drop-in example of systemd/examples/ applied; any diagnostic at all is a failure
#     (verify exits 0 on unknown keys and unparsable values, it only prints them);
#   - `systemd-analyze security --offline=true` on every service: exposure at most 1.5.
#
# Usage: Tests/e2e/check-units.sh [PREFORKD_BINARY]
# verify needs ExecStart='s binary to exist: the units are checked as copies whose /usr/bin/preforkd
# is replaced by PREFORKD_BINARY (default: a build in the work tree, else /bin/true — the checks
# are of the units, not of the daemon).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
UNITS=$ROOT/systemd
EXAMPLES=$UNITS/examples
# systemd-analyze security's --threshold is on a 0-100 scale: 15 is an exposure of 1.5.
THRESHOLD=${PREFORKD_SECURITY_THRESHOLD:-15}
INSTANCE=second

BIN=${1:-}
if [ -z "$BIN" ]; then
    for candidate in "$ROOT/.build-release/release/preforkd" "$ROOT/.build/release/preforkd" "$ROOT/.build/debug/preforkd" /bin/true; do
        [ -x "$candidate" ] && { BIN=$candidate; break; }
    done
fi
[ -x "$BIN" ] || { echo "check-units: not an executable: $BIN" >&2; exit 2; }
BIN=$(realpath "$BIN")
command -v systemd-analyze >/dev/null || { echo "check-units: systemd-analyze not found" >&2; exit 2; }

WORK=$(mktemp -d /tmp/preforkd-check-units.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

failures=0
checks=0
fail() { echo "not ok - $*"; failures=$((failures + 1)); }
pass() { echo "ok - $*"; }

# A fresh copy of all units in directory $1, ExecStart pointing at $BIN.
stage() {
    rm -rf "$1"; mkdir -p "$1"
    cp "$UNITS"/preforkd.service "$UNITS"/preforkd.socket "$UNITS"/preforkd@.service "$UNITS"/preforkd@.socket "$1"/
    sed -i "s|/usr/bin/preforkd|$BIN|g" "$1"/*.service
}

# verify DIR LABEL UNIT…: passes only when verify exits 0 and says nothing.
verify() {
    local dir=$1 label=$2; shift 2
    local out rc
    checks=$((checks + 1))
    # --man=no: Documentation=man:preforkd(8) is installed with the package, not on this machine.
    out=$(cd "$dir" && systemd-analyze verify --man=no "${@/#/./}" 2>&1); rc=$?
    if [ $rc -ne 0 ] || [ -n "$out" ]; then
        fail "verify $label (exit $rc)"
        printf '%s\n' "$out" | sed 's/^/#   /'
    else
        pass "verify $label"
    fi
}

# security DIR LABEL UNIT: exposure ≤ THRESHOLD/10.
security() {
    local dir=$1 label=$2 unit=$3
    local out rc score
    checks=$((checks + 1))
    out=$(cd "$dir" && systemd-analyze security --offline=true --threshold="$THRESHOLD" "./$unit" 2>&1); rc=$?
    score=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\) .*/\1/p' | tail -1)
    if [ $rc -ne 0 ] || [ -z "$score" ]; then
        fail "security $label: exposure ${score:-?} above $(awk "BEGIN{print $THRESHOLD/10}") (exit $rc)"
        printf '%s\n' "$out" | grep -E '^✗' | head -12 | sed 's/^/#   /'
        printf '%s\n' "$out" | grep -E 'Overall' | sed 's/^/#   /'
    else
        pass "security $label: exposure $score"
    fi
}

echo "# units: $UNITS; ExecStart binary: $BIN"

# 1. The units as shipped (the template as an instance: a template itself cannot be loaded).
stage "$WORK/units"
verify "$WORK/units" "preforkd.socket + preforkd.service" preforkd.socket preforkd.service
verify "$WORK/units" "preforkd@$INSTANCE.socket + preforkd@$INSTANCE.service" "preforkd@$INSTANCE.socket" "preforkd@$INSTANCE.service"
security "$WORK/units" preforkd.service preforkd.service
security "$WORK/units" "preforkd@$INSTANCE.service" "preforkd@$INSTANCE.service"

# 2. Each drop-in example applied to the unit its header names ("Drop-in for UNIT: …").
for example in "$EXAMPLES"/*.conf; do
    [ -e "$example" ] || continue
    name=$(basename "$example")
    target=$(sed -n 's/^# Drop-in for \([^ :]*\).*/\1/p' "$example" | head -1)
    target=${target/@NAME./@$INSTANCE.}
    case $target in
        *.service|*.socket) ;;
        *) checks=$((checks + 1)); fail "examples/$name: no '# Drop-in for UNIT:' header line"; continue ;;
    esac
    dir=$WORK/example-$name
    stage "$dir"
    mkdir -p "$dir/$target.d"
    sed "s|/usr/bin/preforkd|$BIN|g" "$example" > "$dir/$target.d/$name"
    if [[ $target == preforkd@* ]]; then
        verify "$dir" "examples/$name on $target" "preforkd@$INSTANCE.socket" "preforkd@$INSTANCE.service"
    else
        verify "$dir" "examples/$name on $target" preforkd.socket preforkd.service
    fi
    # A service drop-in must not weaken the sandbox.
    [[ $target == *.service ]] && security "$dir" "$target with examples/$name" "$target"
done

echo "$((checks - failures)) passed, $failures failed"
if [ $failures -ne 0 ]; then
    echo "check-units: FAILED: $failures of $checks unit checks (see 'not ok' lines above)" >&2
    exit 1
fi
