#!/usr/bin/env bash
# strace -c -f on one worker of a pre-fork server for a bounded number of connections,
# then print syscalls per connection.
#   usage: ./strace-per-connection.sh [preforkd|c-prefork] [CONNECTIONS=2000] [conn|keepalive]
# The server runs with one worker on 127.0.0.1; the load generator makes exactly
# CONNECTIONS exchanges (bounded also to 30 s), then strace is detached.
set -euo pipefail
cd "$(dirname "$0")"
PEER=${1:-preforkd}
N=${2:-2000}
SCEN=${3:-conn}
PORT=${PORT:-21090}
ROOT=$(cd .. && pwd)
PREFORKD=${PREFORKD:-$ROOT/.build-release/release/preforkd}
# As root, preforkd serves as root only when told; what it runs as changes nothing measured here.
ROOT_FLAGS=(); [ "$(id -u)" = 0 ] && ROOT_FLAGS=(--allow-root)
[ -x build/loadgen ] && [ -x build/cprefork ] || make -s build
command -v strace >/dev/null || { apt-get install -y strace >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y strace >/dev/null; }; }

KA=()
case "$PEER" in
  preforkd)
    [ -x "$PREFORKD" ] || { echo "preforkd not built ($PREFORKD)"; exit 1; }
    [ "$SCEN" = keepalive ] && KA=(--echo-keep-alive)
    CMD=("$PREFORKD" --listen "127.0.0.1:$PORT" --workers 1 "${KA[@]}" --log-level warning "${ROOT_FLAGS[@]}") ;;
  c-prefork)
    [ "$SCEN" = keepalive ] && KA=(--keep-alive)
    CMD=(build/cprefork --listen "127.0.0.1:$PORT" --workers 1 "${KA[@]}") ;;
  *) echo "unknown peer $PEER"; exit 2 ;;
esac

TMP=$(mktemp -d)
SERVER_PID= STRACE_PID=
cleanup() {
  [ -n "$STRACE_PID" ] && kill -INT "$STRACE_PID" 2>/dev/null || true
  if [ -n "$SERVER_PID" ]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

"${CMD[@]}" >/dev/null 2>"$TMP/server.err" &
SERVER_PID=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.05
done
sleep 0.2
WORKER=$(ps -o pid= --ppid "$SERVER_PID" | head -1 | tr -d ' ')
[ -n "$WORKER" ] || { echo "no worker process under $SERVER_PID"; cat "$TMP/server.err"; exit 1; }

strace -c -f -o "$TMP/strace.txt" -p "$WORKER" 2>/dev/null &
STRACE_PID=$!
sleep 0.5
RES=$(taskset -c 1 build/loadgen --port "$PORT" --scenario "$SCEN" --concurrency 4 --warmup 0 \
      --duration 30 --max-exchanges "$N" --timeout-ms 5000)
sleep 0.2
kill -INT "$STRACE_PID"; wait "$STRACE_PID" 2>/dev/null || true; STRACE_PID=
EX=$(sed -n 's/.*"exchanges":\([0-9]*\).*/\1/p' <<<"$RES")
CONNS=$(sed -n 's/.*"connections":\([0-9]*\).*/\1/p' <<<"$RES")
ERRS=$(sed -n 's/.*"errors_total":\([0-9]*\).*/\1/p' <<<"$RES")
echo "$PEER worker $WORKER ($SCEN): $EX exchanges on $CONNS connections, $ERRS errors"
[ "${EX:-0}" -gt 0 ] || { echo "no exchanges"; exit 1; }
printf '%-16s %10s %15s %13s %8s\n' syscall calls per-connection per-exchange errors
awk -v ex="$EX" -v cn="${CONNS:-0}" '
  $1 ~ /^-+$/ { sep++; next }
  sep == 1 && NF >= 5 {
    name = $NF; calls = $4; errs = (NF == 6) ? $5 : 0
    printf "%-16s %10d %15.2f %13.2f %8s\n", name, calls, cn ? calls / cn : 0, calls / ex, errs; total += calls
  }
  END { printf "%-16s %10d %15.2f %13.2f\n", "total", total, cn ? total / cn : 0, total / ex }' "$TMP/strace.txt"
