#!/usr/bin/env bash
# Prints the path of a minimal Debian root that boots with systemd (debootstrap --variant=minbase
# plus systemd, systemd-sysv, dbus), creating it on first use and reusing it afterwards. Tests boot
# it with `systemd-nspawn --volatile=overlay`, so it stays as debootstrap left it.
#
# Usage: Tests/package/clean-root.sh
# To start from a newer snapshot of the suite, delete the cached directory; the next run makes it.
# Environment: PREFORKD_ROOT_CACHE  where roots are cached [/var/cache/preforkd-package-test]
#              PREFORKD_SUITE       the Debian suite [bookworm]
#              PREFORKD_MIRROR      [the first deb.debian.org-style URI of the host's apt sources]
set -euo pipefail

CACHE=${PREFORKD_ROOT_CACHE:-/var/cache/preforkd-package-test}
SUITE=${PREFORKD_SUITE:-bookworm}
INCLUDE=systemd,systemd-sysv,dbus
# The name says what is in the root: a change of suite or packages makes a new one.
ROOT=$CACHE/$SUITE-minbase-${INCLUDE//,/+}
command -v debootstrap >/dev/null || { echo "clean-root: debootstrap missing: run scripts/install-package-deps" >&2; exit 1; }

mirror=${PREFORKD_MIRROR:-}
if [ -z "$mirror" ]; then
    # The host's Debian archive (the one whose path ends in /debian), as apt is configured.
    mirror=$(grep -rhoE '^(URIs:|deb) +[^ ]+' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null |
        awk '{print $2}' | grep -E '/debian/?$' | head -1 || true)
    mirror=${mirror:-http://deb.debian.org/debian}
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock -w 600 9 || { echo "clean-root: $CACHE/.lock held for 10 minutes" >&2; exit 1; }
if [ ! -f "$ROOT/.complete" ]; then
    rm -rf "$ROOT" "$ROOT.new"
    started=$SECONDS
    echo "clean-root: debootstrap --variant=minbase --include=$INCLUDE $SUITE ($mirror), once" >&2
    if ! timeout 900 debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$ROOT.new" "$mirror" >"$CACHE/debootstrap.log" 2>&1; then
        tail -20 "$CACHE/debootstrap.log" >&2
        echo "clean-root: debootstrap failed (log: $CACHE/debootstrap.log)" >&2
        exit 1
    fi
    echo "clean-root: took $((SECONDS - started)) s" >&2
    mv "$ROOT.new" "$ROOT"
    touch "$ROOT/.complete"
fi
echo "$ROOT"
