#!/usr/bin/env bash
# Instructions per connection of one worker, counted by callgrind: repeatable, unlike CPU time.
#   usage: ./callgrind-per-connection.sh [preforkd|c-prefork|both] [N1=500] [N2=2500] [conn|keepalive]
# Runs the server with one worker under valgrind twice (N1 and N2 exchanges) and reports
# (Ir(N2) - Ir(N1)) / (N2 - N1): the per-exchange cost with start-up and exit taken out.
# valgrind 3.19 cannot read the Swift binary's debug info, so it runs on a copy made
# with `objcopy --strip-debug`.
set -euo pipefail
cd "$(dirname "$0")"
WHICH=${1:-both}
N1=${2:-500}
N2=${3:-2500}
SCEN=${4:-conn}
PORT=${PORT:-21095}
ROOT=$(cd .. && pwd)
PREFORKD=${PREFORKD:-$ROOT/.build-release/release/preforkd}
# As root, preforkd serves as root only when told; what it runs as changes nothing measured here.
ROOT_FLAGS=(); [ "$(id -u)" = 0 ] && ROOT_FLAGS=(--allow-root)
[ -x build/loadgen ] && [ -x build/cprefork ] || make -s build
command -v valgrind >/dev/null || { apt-get install -y valgrind >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y valgrind >/dev/null; }; }

TMP=$(mktemp -d)
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

# worker_ir PEER N -> prints the worker's total Ir after N exchanges
worker_ir() {
  local peer=$1 n=$2 ka=() bin
  rm -f "$TMP"/cg.out.*
  case "$peer" in
    preforkd)
      [ -f "$TMP/preforkd" ] || objcopy --strip-debug "$PREFORKD" "$TMP/preforkd"
      [ "$SCEN" = keepalive ] && ka=(--echo-keep-alive)
      bin=("$TMP/preforkd" --listen "127.0.0.1:$PORT" --workers 1 "${ka[@]}" --log-level warning "${ROOT_FLAGS[@]}") ;;
    c-prefork)
      [ "$SCEN" = keepalive ] && ka=(--keep-alive)
      bin=(build/cprefork --listen "127.0.0.1:$PORT" --workers 1 "${ka[@]}") ;;
  esac
  valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$TMP/cg.out.%p" \
    "${bin[@]}" >/dev/null 2>"$TMP/vg.err" &
  SERVER_PID=$!
  local ok=
  for _ in $(seq 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then ok=1; break; fi
    sleep 0.1
  done
  [ -n "$ok" ] || { echo "server did not listen" >&2; cat "$TMP/vg.err" >&2; exit 1; }
  sleep 0.5
  build/loadgen --port "$PORT" --scenario "$SCEN" --concurrency 1 --warmup 0 --duration 120 \
    --max-exchanges "$n" --timeout-ms 5000 >"$TMP/lg.json"
  grep -q "\"exchanges\":$n," "$TMP/lg.json" || { echo "load generator: $(cat "$TMP/lg.json")" >&2; exit 1; }
  kill -TERM "$SERVER_PID"
  for _ in $(seq 300); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
  # The worker is the child: the file with the highest pid (forked after the supervisor). Not
  # "the most instructions": with cheap keep-alive exchanges the supervisor's start-up can weigh
  # more than the worker's whole run.
  local best=0 f ir pid top=0
  for f in "$TMP"/cg.out.*; do
    pid=${f##*.}
    [ "$pid" -gt "$top" ] || continue
    top=$pid
    best=$(awk '/^summary:/ {print $2}' "$f")
  done
  echo "$best"
}

peers=("$WHICH")
[ "$WHICH" = both ] && peers=(preforkd c-prefork)
declare -A per
for p in "${peers[@]}"; do
  if [ "$p" = preforkd ] && [ ! -x "$PREFORKD" ]; then echo "preforkd not built ($PREFORKD)"; continue; fi
  a=$(worker_ir "$p" "$N1"); b=$(worker_ir "$p" "$N2")
  per[$p]=$(( (b - a) / (N2 - N1) ))
  printf '%-10s %s: worker Ir %d @%d, %d @%d -> %d instructions per exchange (user space)\n' \
    "$p" "$SCEN" "$a" "$N1" "$b" "$N2" "${per[$p]}"
done
if [ -n "${per[preforkd]:-}" ] && [ -n "${per[c-prefork]:-}" ]; then
  echo "preforkd - c-prefork: $(( per[preforkd] - per[c-prefork] )) instructions per exchange of its own code"
fi
