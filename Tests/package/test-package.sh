#!/usr/bin/env bash
# Tests the Debian package the way a distribution would: installs it into a minimal Debian root
# (debootstrap, no Swift toolchain, cached by clean-root.sh) booted with systemd in a container,
# and checks what a user of the package sees:
#   the binary (hardening-check on the host; ldd in the root names only the root's libraries, and
#   not libsystemd, which it dlopens and names in its .note.dlopen and in Depends),
#   the man page's sections and options, the completions;
#   install: the socket enabled and listening, the service started by the first connection and
#   echoing with libsystemd loaded, --version and --check-config on the shipped conffile, the
#   daemon's journal entries;
#   upgrade to a package with a higher version under a bounded client load: 0 failed exchanges,
#   the socket never restarted, the service restarted, a locally edited conffile kept. The newer
#   package is this one repacked (dpkg-deb -R, -b) with a higher Version and a change to the
#   shipped conffile: the same binary, files and maintainer scripts, which dpkg runs for real;
#   remove: both units stopped, the socket gone; purge: nothing left (no unit, no /etc/preforkd,
#   no enablement, no dpkg record).
# Prints TAP-style `ok - …` / `not ok - …` lines and `N passed, M failed`; no check is skipped.
#
# Usage (root): Tests/package/test-package.sh DEB_DIR
#   DEB_DIR holds preforkd_VERSION_ARCH.deb as `make deb` (packaging/build-deb) leaves it.
# Environment: PREFORKD_TEST_KEEP=1 keeps the work directory (container log, client output).
set -uo pipefail

DEB_DIR=${1:-}
[ -n "$DEB_DIR" ] && [ -d "$DEB_DIR" ] || { echo "usage: $0 DEB_DIR" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "test-package: needs root (systemd-nspawn, dpkg in the container)" >&2; exit 2; }
for tool in systemd-nspawn dpkg-deb hardening-check python3; do
    command -v "$tool" >/dev/null || { echo "test-package: $tool missing: run scripts/install-deps and scripts/install-package-deps" >&2; exit 2; }
done

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DEB_DIR=$(realpath "$DEB_DIR")
CLIENT=$ROOT/Tests/e2e/echo_client.py
PORT=11000           # the packaged socket's port: the container has a network namespace of its own
STARTED_AT=$(date +%s.%N)

VERSION=$(dpkg-parsechangelog -l "$ROOT/packaging/debian/changelog" -S Version)
ARCH=$(dpkg --print-architecture)
DEB=$DEB_DIR/preforkd_${VERSION}_${ARCH}.deb
[ -f "$DEB" ] || { echo "test-package: $DEB not found: run make deb" >&2; exit 2; }
UPGRADE_VERSION=$VERSION+upgradetest1

# The clean root first, outside the test's own deadline: the first run on a machine debootstraps
# it (about a minute and a half; clean-root.sh bounds that itself).
CLEAN_ROOT=$("$HERE/clean-root.sh") || { echo "test-package: no clean Debian root (debootstrap failed)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/preforkd-test-package.XXXXXX)
LOG=$WORK/container.log
MACHINE=preforkd-package-$$

# --- reporting ---------------------------------------------------------------------------------
. "$HERE/../lib/nspawn-harness.sh"

harness_start 300 PREFORKD_TEST_KEEP

# wait_for SECONDS COMMAND…: polls COMMAND every 0.1 s until it succeeds; false at the deadline.
wait_for() {
    local limit=$1; shift
    local end=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -ge $end ] && return 1
        sleep 0.1
    done
}

# --- the binary, on the host --------------------------------------------------------------------
mkdir -p "$WORK/extracted"
dpkg-deb -x "$DEB" "$WORK/extracted"
BIN=$WORK/extracted/usr/bin/preforkd
hardening=$(hardening-check --nocfprotection "$BIN" 2>&1); rc=$?
if [ $rc -eq 0 ]; then
    ok "hardening-check --nocfprotection: $(printf '%s\n' "$hardening" | sed -n 's/^ *\([^:]*\): yes.*/\1/p' | paste -sd, | sed 's/,/, /g')"
else
    not_ok "hardening-check --nocfprotection /usr/bin/preforkd"; note "$hardening"
fi
check_version() { [ "$(dpkg-deb -f "$DEB" Version)" = "$VERSION" ] && [ "$("$BIN" --version)" = "$VERSION" ]; }
if check_version; then
    ok "the package's Version and preforkd --version are the changelog's $VERSION"
else
    not_ok "the package's Version and preforkd --version are the changelog's $VERSION"
    note "Version: $(dpkg-deb -f "$DEB" Version); --version: $("$BIN" --version 2>&1)"
fi
depends=$(dpkg-deb -f "$DEB" Depends)
if grep -q 'libsystemd0 (>= 227)' <<<"$depends" && grep -q 'libc6' <<<"$depends" &&
    ! grep -qE 'libstdc\+\+|libgcc' <<<"$depends"; then
    ok "Depends: the linked libraries (\${shlibs:Depends}) and libsystemd0, which preforkd dlopens: $depends"
else
    not_ok "Depends names the libraries the binary links (libc6, not the C++ runtime linked in) and libsystemd0 (>= 227), which it dlopens"
    note "Depends: $depends"
fi
# The dlopen'ed library, for tools that read ELF dlopen metadata: a .note.dlopen note naming it.
note_json=$(objcopy -O binary --only-section=.note.dlopen "$BIN" /dev/stdout 2>&1 | tr -d '\0')
if grep -q '"soname":\["libsystemd.so.0"\]' <<<"$note_json" && grep -q '"priority":"required"' <<<"$note_json"; then
    ok "the binary's .note.dlopen names libsystemd.so.0, required"
else
    not_ok "the binary's .note.dlopen names libsystemd.so.0, required"; note "$note_json"
fi

# The man page and the completions as shipped.
page=$(zcat "$WORK/extracted/usr/share/man/man8/preforkd.8.gz")
sections=$(printf '%s\n' "$page" | sed -n 's/^\.Sh "\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' | paste -sd, | sed 's/,/, /g')
missing=()
for name in NAME SYNOPSIS DESCRIPTION OPTIONS CONFIGURATION SIGNALS "EXIT STATUS" FILES; do
    grep -qxE "\.Sh \"?$name\"?" <<<"$page" || missing+=("$name")
done
for option in $("$BIN" --help | grep -oE -- '--[a-z][a-z0-9-]*' | sort -u); do
    # A here-string, not a pipe: grep -q stops reading at its match, and under pipefail the
    # writer's SIGPIPE would count as a miss.
    grep -qE -- "^\.It Fl (.* , )?-${option#--}( |$)" <<<"$page" || missing+=("$option")
done
if [ ${#missing[@]} -eq 0 ] && grep -qx '\.Dt PREFORKD 8' <<<"$page"; then
    ok "preforkd(8) has every option of --help and the sections $sections"
else
    not_ok "preforkd(8) misses: ${missing[*]}"
fi
completion=$(bash -c 'source "$1" && complete -p preforkd' bash "$WORK/extracted/usr/share/bash-completion/completions/preforkd" 2>&1)
if grep -q 'preforkd$' <<<"$completion" && ! head -1 "$WORK/extracted/usr/share/bash-completion/completions/preforkd" | grep -q '^#!' &&
    grep -q -- 'workers' "$WORK/extracted/usr/share/zsh/vendor-completions/_preforkd" &&
    grep -q -- 'workers' "$WORK/extracted/usr/share/fish/vendor_completions.d/preforkd.fish"; then
    ok "the bash completion loads ($completion); zsh and fish completions name the options"
else
    not_ok "the shell completions"; note "bash: $completion"
fi

# The upgrade: the same files and maintainer scripts under a higher version, and a change to the
# shipped conffile (as an upstream change would bring), so that dpkg has to decide about a
# locally edited one.
mkdir -p "$WORK/packages"
cp "$DEB" "$WORK/packages/"
dpkg-deb -R "$DEB" "$WORK/upgrade"
sed -i "s/^Version: .*/Version: $UPGRADE_VERSION/" "$WORK/upgrade/DEBIAN/control"
printf '\n# A line the upgrade test adds to the shipped file.\n' >> "$WORK/upgrade/etc/preforkd/preforkd.toml"
UPGRADE_DEB=preforkd_${UPGRADE_VERSION}_${ARCH}.deb
dpkg-deb --root-owner-group -b "$WORK/upgrade" "$WORK/packages/$UPGRADE_DEB" >/dev/null
if dpkg --compare-versions "$UPGRADE_VERSION" gt "$VERSION"; then
    ok "upgrade package built: $UPGRADE_DEB (version $UPGRADE_VERSION > $VERSION)"
else
    not_ok "upgrade package version $UPGRADE_VERSION > $VERSION"
fi

# --- boot a clean Debian root -------------------------------------------------------------------
if [ -d "$CLEAN_ROOT/opt/swift" ] || [ -e "$CLEAN_ROOT/usr/bin/swift" ]; then
    not_ok "the clean root has no Swift toolchain"
else
    ok "a clean Debian root without the Swift toolchain: $CLEAN_ROOT"
fi
# --volatile=overlay: writes go to a tmpfs over the cached root, which stays as debootstrap left it.
systemd-nspawn -D "$CLEAN_ROOT" --volatile=overlay --register=no --keep-unit --private-network \
    --machine="$MACHINE" --bind-ro="$WORK/packages":/packages \
    -b systemd.firstboot=off >"$LOG" 2>&1 </dev/null &
NSPID=$!

find_leader() {
    LEADER=$(pgrep -P "$NSPID" | head -1)
    [ -n "$LEADER" ] && [ "$(cat /proc/"$LEADER"/comm 2>/dev/null)" = systemd ]
}
IN() { nsenter -t "$LEADER" -m -u -i -n -p -r -w -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
booted() { case $(IN systemctl is-system-running 2>/dev/null) in running|degraded) return 0;; esac; return 1; }
prop() { IN systemctl show -p "$2" --value "$1" 2>/dev/null; }
prop_is() { [ "$(prop "$1" "$2")" = "$3" ]; }
# The client runs on the host, in the container's network namespace only.
client() { nsenter -t "$LEADER" -n -- timeout 40 python3 "$CLIENT" 127.0.0.1 "$PORT" "$@"; }
show_journal() { IN journalctl --no-pager -q -u preforkd.service -u preforkd.socket -n "${1:-15}" 2>/dev/null | sed 's/^/#   /'; }

if wait_for 20 find_leader && wait_for 60 booted; then
    ok "systemd boots the clean root ($(IN systemctl is-system-running 2>/dev/null))"
else
    not_ok "systemd boots the clean root"; note "$(tail -20 "$LOG")"
    echo "$passed passed, $failed failed"; exit 1
fi

DPKG=(env DEBIAN_FRONTEND=noninteractive dpkg --force-confdef --force-confold)

# --- install ------------------------------------------------------------------------------------
out=$(IN "${DPKG[@]}" -i "/packages/$(basename "$DEB")" 2>&1); rc=$?
if [ $rc -eq 0 ]; then ok "dpkg -i $(basename "$DEB")"; else not_ok "dpkg -i $(basename "$DEB") (exit $rc)"; note "$out"; fi

libs=$(IN ldd /usr/bin/preforkd 2>&1)
if ! grep -q 'not found' <<<"$libs" && ! grep -qi swift <<<"$libs" &&
    ! grep -q 'libsystemd.so.0' <<<"$libs" && ! grep -qE 'libstdc\+\+|libgcc_s' <<<"$libs"; then
    ok "ldd /usr/bin/preforkd in the clean root: $(printf '%s\n' "$libs" | awk '/=>/{print $1}' | paste -sd' ')"
else
    not_ok "ldd /usr/bin/preforkd in the clean root: every library found, none from Swift, not libsystemd (dlopen'ed), not the C++ runtime (linked in)"
    note "$libs"
fi
owners=$(for lib in $(printf '%s\n' "$libs" | awk '/=> \//{print $3}'); do IN dpkg -S "$(IN realpath "$lib")" 2>/dev/null || IN dpkg -S "$lib" 2>/dev/null || echo "NONE: $lib"; done)
if ! grep -q '^NONE' <<<"$owners"; then
    ok "every library it links belongs to a Debian package ($(printf '%s\n' "$owners" | cut -d: -f1 | sort -u | paste -sd' '))"
else
    not_ok "every library it links belongs to a Debian package"; note "$owners"
fi

files_ok=1; missing=()
for path in /lib/systemd/system/preforkd.service /lib/systemd/system/preforkd.socket \
    /lib/systemd/system/preforkd@.service /lib/systemd/system/preforkd@.socket \
    /etc/preforkd/preforkd.toml /usr/share/man/man8/preforkd.8.gz \
    /usr/share/bash-completion/completions/preforkd /usr/share/zsh/vendor-completions/_preforkd \
    /usr/share/fish/vendor_completions.d/preforkd.fish /usr/share/doc/preforkd/copyright \
    /usr/share/doc/preforkd/changelog.gz; do
    IN test -s "$path" || { files_ok=0; missing+=("$path"); }
done
check "the package installs the units, the config, the man page, completions, copyright" [ $files_ok = 1 ]
[ $files_ok = 1 ] || note "missing: ${missing[*]}"
# The units are systemd/'s, unchanged.
units_same=1
for unit in preforkd.service preforkd.socket preforkd@.service preforkd@.socket; do
    IN cat "/lib/systemd/system/$unit" | cmp -s - "$ROOT/systemd/$unit" || units_same=0
done
check "the installed units are those of systemd/, byte for byte" [ $units_same = 1 ]
conffiles=$(IN dpkg-query -W -f='${Conffiles}' preforkd)
check "/etc/preforkd/preforkd.toml is a conffile" grep -q '^ /etc/preforkd/preforkd.toml ' <<<"$conffiles"

if wait_for 10 prop_is preforkd.socket SubState listening && [ "$(IN systemctl is-enabled preforkd.socket 2>&1)" = enabled ] &&
    prop_is preforkd.service ActiveState inactive; then
    ok "after install: preforkd.socket enabled and listening, preforkd.service not started"
else
    not_ok "after install: preforkd.socket enabled and listening, preforkd.service not started"
    note "socket: $(IN systemctl is-enabled preforkd.socket 2>&1) $(prop preforkd.socket ActiveState)/$(prop preforkd.socket SubState); service: $(prop preforkd.service ActiveState)"
fi

first=$(client once --timeout 20 2>&1)
if grep -q '"ok": true' <<<"$first" && wait_for 20 prop_is preforkd.service SubState running; then
    ok "the first connection starts preforkd.service and gets its echo"
else
    not_ok "the first connection starts preforkd.service and gets its echo"; note "client: $first"; show_journal 20
fi
reply=$(printf 'hello<EOF>' | nsenter -t "$LEADER" -n -- timeout 10 nc -N 127.0.0.1 "$PORT" 2>&1)
check "printf 'hello<EOF>' | nc -N 127.0.0.1 $PORT answers hello<EOF> (got '$reply')" [ "$reply" = 'hello<EOF>' ]
# Socket-activated and logging to the journal, the service has loaded the root's libsystemd.
main_pid=$(prop preforkd.service MainPID)
mapped=$(IN grep -o '/[^ ]*libsystemd\.so\.0[^ ]*' "/proc/$main_pid/maps" 2>&1 | sort -u)
if grep -q '^/.*libsystemd\.so\.0' <<<"$mapped"; then
    ok "the activated service (pid $main_pid) has loaded $(head -1 <<<"$mapped")"
else
    not_ok "the activated service (pid $main_pid) has loaded libsystemd.so.0"; note "$mapped"
fi

out=$(IN preforkd --check-config --config /etc/preforkd/preforkd.toml 2>&1); rc=$?
if [ $rc -eq 0 ] && grep -q '^workers' <<<"$out"; then
    ok "preforkd --check-config passes on the shipped /etc/preforkd/preforkd.toml"
else
    not_ok "preforkd --check-config on the shipped config (exit $rc)"; note "$out"
fi
check "preforkd --version in the root says $VERSION" [ "$(IN preforkd --version 2>&1)" = "$VERSION" ]

# The daemon's own entries (not systemd's lines about the unit).
daemon_entries() {
    IN journalctl --no-pager -q -u preforkd.service -o json 2>/dev/null | python3 -c '
import json, sys
n = 0
for line in sys.stdin:
    try:
        entry = json.loads(line)
    except ValueError:
        continue
    if entry.get("SYSLOG_IDENTIFIER") == "preforkd" and entry.get("_PID") != "1":
        n += 1
print(n)'
}
if wait_for 10 test "$(daemon_entries)" -gt 0 && IN journalctl --no-pager -q -u preforkd -o cat | grep -q 'Ready'; then
    ok "journalctl -u preforkd has the daemon's entries ($(daemon_entries), SYSLOG_IDENTIFIER=preforkd, one saying Ready)"
else
    not_ok "journalctl -u preforkd has the daemon's entries"; show_journal 20
fi

# --- upgrade under load, with a locally edited conffile ------------------------------------------
IN sh -c 'sed -i "s/^log-level = .*/log-level = \"notice\"  # edited locally/" /etc/preforkd/preforkd.toml'
check "the conffile is edited locally" IN grep -q 'edited locally' /etc/preforkd/preforkd.toml
socket_since=$(prop preforkd.socket ActiveEnterTimestampMonotonic)
pid_before=$(prop preforkd.service MainPID)

# 4 clients, each making an exchange every 2 ms, until the stop file: from before dpkg starts until
# after the new service runs. Bounded (40 s, 100000 exchanges, 70 s in all) far above the ~2 s an
# upgrade takes here, so that only a hung upgrade, not a slow machine, reaches a bound.
load_out=$WORK/load-upgrade.json
stop_file=$WORK/stop-load
nsenter -t "$LEADER" -n -- timeout 70 python3 "$CLIENT" 127.0.0.1 "$PORT" load --stop-file "$stop_file" \
    --seconds 40 --max 100000 --threads 4 --interval 0.002 --timeout 10 >"$load_out" 2>&1 &
loader=$!
started() { grep -q '"event": "started"' "$load_out"; }
upgrade_rc=-
restarted() { prop_is preforkd.service SubState running && ! prop_is preforkd.service MainPID "$pid_before"; }
if wait_for 10 started; then
    out=$(IN "${DPKG[@]}" -i "/packages/$UPGRADE_DEB" 2>&1); upgrade_rc=$?
    wait_for 30 restarted
    sleep 0.3   # load after the restart, too
fi
touch "$stop_file"
wait "$loader"
load=$(tail -1 "$load_out")
if printf '%s' "$load" | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if d["failed"]==0 and d["ok"]>0 and d["stopped_by"]=="stop-file" else 1)' 2>/dev/null; then
    ok "upgrade $VERSION → $UPGRADE_VERSION under load: 0 failed exchanges ($load)"
else
    not_ok "upgrade $VERSION → $UPGRADE_VERSION under load: 0 failed exchanges"; note "$load"; show_journal 20
fi
if [ "$upgrade_rc" = 0 ] && [ "$(IN dpkg-query -W -f='${Version}' preforkd)" = "$UPGRADE_VERSION" ]; then
    ok "dpkg -i $UPGRADE_DEB: installed $UPGRADE_VERSION"
else
    not_ok "dpkg -i $UPGRADE_DEB (exit $upgrade_rc)"; note "${out:-}"
fi
# The socket's SubState is "running" while its service runs: ActiveState and the time it became
# active are what show it was never stopped.
if restarted && prop_is preforkd.socket ActiveEnterTimestampMonotonic "$socket_since" && prop_is preforkd.socket ActiveState active; then
    ok "the upgrade restarted preforkd.service (MainPID $pid_before → $(prop preforkd.service MainPID)) and never stopped preforkd.socket (active since the install)"
else
    not_ok "the upgrade restarts the service only (MainPID $pid_before → $(prop preforkd.service MainPID); socket active since $socket_since → $(prop preforkd.socket ActiveEnterTimestampMonotonic), $(prop preforkd.socket ActiveState))"
fi
if IN grep -q 'edited locally' /etc/preforkd/preforkd.toml && IN grep -q 'upgrade test adds' /etc/preforkd/preforkd.toml.dpkg-dist; then
    ok "the locally edited conffile is kept; the new one is beside it as preforkd.toml.dpkg-dist"
else
    not_ok "the locally edited conffile survives the upgrade"; note "$(IN ls -l /etc/preforkd/ 2>&1)"
fi
reply=$(client once --timeout 20 2>&1)
check "after the upgrade the service echoes" grep -q '"ok": true' <<<"$reply"

# --- remove, purge ------------------------------------------------------------------------------
out=$(IN "${DPKG[@]}" -r preforkd 2>&1); rc=$?
# Stopped by the time dpkg returns (the prerm waits for the stop), not some time later.
if [ $rc -eq 0 ] && prop_is preforkd.service ActiveState inactive && prop_is preforkd.socket ActiveState inactive; then
    ok "dpkg -r: preforkd.service and preforkd.socket stopped when it returns"
else
    not_ok "dpkg -r stops both units (exit $rc; service $(prop preforkd.service ActiveState), socket $(prop preforkd.socket ActiveState))"; note "$out"
fi
refused=$(client once --timeout 5 2>&1)
check "after remove nothing listens on 127.0.0.1:$PORT" grep -q 'refused' <<<"$refused"
check "after remove the edited conffile is still there (remove is not purge)" IN grep -q 'edited locally' /etc/preforkd/preforkd.toml

out=$(IN "${DPKG[@]}" -P preforkd 2>&1); rc=$?
check "dpkg -P preforkd" [ $rc -eq 0 ]
[ $rc -eq 0 ] || note "$out"
left=$(IN find / -xdev \( -path /proc -o -path /sys -o -path /run/systemd/journal -o -path /var/log/journal -o -path /packages \) -prune -o -name '*preforkd*' -print 2>/dev/null)
if [ -z "$left" ] && ! IN test -e /etc/preforkd; then
    ok "after purge no file named *preforkd* is left (no unit, no /etc/preforkd, no enablement link or state)"
else
    not_ok "after purge nothing is left"; note "$left"
fi
status=$(IN dpkg-query -W -f='${Status}' preforkd 2>&1)
check "dpkg knows nothing of preforkd any more ($status)" grep -qv 'installed\|config-files' <<<"$status"
enabled=$(IN systemctl is-enabled preforkd.socket 2>&1)
if ! prop_is preforkd.socket LoadState loaded && [ "$enabled" != enabled ]; then
    ok "systemd has no preforkd.socket any more (is-enabled: $enabled)"
else
    not_ok "systemd has no preforkd.socket any more (LoadState $(prop preforkd.socket LoadState), is-enabled $enabled)"
fi

echo "# took $(awk -v a="$STARTED_AT" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"
echo "1..$number"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
