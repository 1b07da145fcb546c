#!/usr/bin/env bash
# The forward handler against real peers from Debian's packages, on loopback.
#
#   Tests/forward/real-peers.sh PREFORKD_BIN          # through preforkd's forward handler
#   MODE=direct Tests/forward/real-peers.sh           # every client straight to its upstream
#   MODE=haproxy|sslh|sslh-select Tests/forward/real-peers.sh   # through another proxy
#
# One port of the proxy carries every check: ssh to sshd, curl to nginx by Host, TLS to two
# `openssl s_server`s by SNI (and ALPN), PROXY v2 from a haproxy load balancer in front with the
# client's address passed on as v1/v2 to the upstream, 1 GiB each way checked by SHA-256, a
# half-closing client, a burst of 500 connects, and a silent client routed on its silence.
# MODE=direct proves the peers and the checks work before any proxy is involved; haproxy passes
# every check too, sslh shows the checks catch what it gets wrong (half-close, burst, PROXY).
# Prints "ok - NAME" or "not ok - NAME: why" per check; exits 1 if any failed. Knobs:
# FORWARD_BULK_BYTES (1073741824), BURST (500).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PREFORKD_BIN=${1:-}
MODE=${MODE:-$([ -n "$PREFORKD_BIN" ] && echo preforkd || echo direct)}
BULK_BYTES=${FORWARD_BULK_BYTES:-1073741824}
BURST=${BURST:-500}
PROBE_TIMEOUT=1

case $MODE in
    direct | haproxy | sslh | sslh-select) ;;
    preforkd)
        [ -x "$PREFORKD_BIN" ] || {
            echo "usage: $0 PREFORKD_BIN (or MODE=direct $0)" >&2
            exit 2
        }
        PREFORKD_BIN=$(cd "$(dirname "$PREFORKD_BIN")" && pwd)/$(basename "$PREFORKD_BIN")
        ;;
    *)
        echo "$0: MODE must be direct, preforkd, haproxy, sslh or sslh-select" >&2
        exit 2
        ;;
esac

# A missing package is a failure, not a skip: install what is missing first.
"$ROOT/scripts/install-deps" openssh-server openssh-client nginx-light haproxy curl openssl sslh \
    netcat-openbsd python3

. "$HERE/peers.sh"
peers_init "$(mktemp -d /tmp/forward-real-peers.XXXXXX)"
trap peers_cleanup EXIT
trap 'exit 130' INT TERM

FAILED=0
ok() { echo "ok - $1"; }
not_ok() {
    echo "not ok - $1: $2"
    FAILED=1
}

# check NAME EXPECTED_PATTERN COMMAND… — runs COMMAND (its own deadline inside) and passes if it
# exits 0 and its output matches the extended regular expression EXPECTED_PATTERN.
check() {
    local name=$1 pattern=$2 output status=0
    shift 2
    output=$("$@" 2>&1) || status=$?
    if [ $status -eq 0 ] && grep -Eq -- "$pattern" <<<"$output"; then
        ok "$name"
    else
        not_ok "$name" "exit $status, output: $(tr '\n' ' ' <<<"$output" | cut -c1-300)"
    fi
}

# --- the peers ----------------------------------------------------------------------------------
SSHD_PORT=$(free_port)
NGINX_PORT=$(free_port)
TLS_A_PORT=$(free_port)
TLS_B_PORT=$(free_port)
start_sshd "$SSHD_PORT"
start_nginx "$NGINX_PORT"
make_cert a.example.org
make_cert b.example.com
start_s_server a.example.org "$TLS_A_PORT"
start_s_server b.example.com "$TLS_B_PORT"
start_upstreams echo sink source halfclose banner proxy-report

# The route table every proxy gets (first match wins).
ROUTES=$PEERS_DIR/routes
cat >"$ROUTES" <<EOF
ssh       127.0.0.1:$SSHD_PORT protocol=ssh
site-a    127.0.0.1:$TLS_A_PORT protocol=tls sni=a.example.org alpn=h2,http/1.1
site-b    127.0.0.1:$TLS_B_PORT protocol=tls sni=*.example.com
web       127.0.0.1:$NGINX_PORT protocol=http host=web.test
whoami2   127.0.0.1:${UPSTREAM_PORT[proxy-report]} prefix=whoami2 send-proxy=v2
whoami    127.0.0.1:${UPSTREAM_PORT[proxy-report]} prefix=whoami send-proxy=v1
upload    127.0.0.1:${UPSTREAM_PORT[sink]} prefix=upload:
download  127.0.0.1:${UPSTREAM_PORT[source]} prefix=download:
halfclose 127.0.0.1:${UPSTREAM_PORT[halfclose]} prefix=halfclose
quiet     127.0.0.1:${UPSTREAM_PORT[banner]} protocol=timeout
default   127.0.0.1:${UPSTREAM_PORT[echo]}
EOF

# target ROUTE — the port a client uses for ROUTE's upstream: the upstream itself in direct mode,
# the proxy's one port otherwise.
PROXY_PORT=
target() {
    if [ "$MODE" != direct ]; then
        echo "$PROXY_PORT"
        return
    fi
    awk -v route="$1" '$1 == route { sub(/.*:/, "", $2); print $2 }' "$ROUTES"
}

LB_PORT=$(free_port)
if [ "$MODE" = direct ]; then
    start_lb_haproxy "$LB_PORT" "127.0.0.1:${UPSTREAM_PORT[proxy-report]}"
else
    PROXY_PORT=$(free_port)
    BEHIND_LB_PORT=$(free_port)
    start_proxy "$MODE" "$PROXY_PORT" "$ROUTES" --lb "127.0.0.1:$BEHIND_LB_PORT" \
        --lb-from 127.0.0.1/32 --lb-from ::1/128 --probe-timeout "$PROBE_TIMEOUT" \
        --initial-timeout "$PROBE_TIMEOUT" --runtime-directory "$PEERS_DIR/run" --workers 4
    start_lb_haproxy "$LB_PORT" "127.0.0.1:$BEHIND_LB_PORT"
fi
echo "# mode $MODE; peers in $PEERS_DIR"

# --- 1. ssh -------------------------------------------------------------------------------------
check "ssh logs in to sshd and runs a command" '^hello$' \
    timeout 20 ssh "${SSH_ARGS[@]}" -p "$(target ssh)" "$(id -un)@127.0.0.1" echo hello

# --- 2. HTTP by Host ----------------------------------------------------------------------------
check "curl reaches nginx by its Host header" '^nginx host=web\.test$' \
    curl -sS --max-time 10 -H 'Host: web.test' "http://127.0.0.1:$(target web)/"

# --- 3. TLS by SNI and ALPN ---------------------------------------------------------------------
# --cacert NAME.crt (no -k): the handshake verifies only against the server holding NAME's key.
for name in a.example.org b.example.com; do
    route=$([ $name = a.example.org ] && echo site-a || echo site-b)
    port=$(target $route)
    check "curl https://$name reaches the s_server with $name's certificate" "s_server .*$name\\.crt" \
        curl -sS --max-time 10 --resolve "$name:$port:127.0.0.1" --cacert "$PEERS_DIR/$name.crt" \
        "https://$name:$port/"
done
check "s_client -servername a.example.org -alpn h2 gets a.example.org's certificate and h2" \
    'subject=CN ?= ?a\.example\.org.*ALPN protocol: h2' \
    bash -c 'timeout 10 openssl s_client -connect "127.0.0.1:$1" -servername a.example.org -alpn h2 \
        </dev/null 2>&1 | tr "\n" " "' _ "$(target site-a)"

# --- 4. PROXY protocol from a load balancer, and to the upstream ---------------------------------
# whoami: the client, bound to 127.0.0.2, connects to haproxy; the upstream reports the source
# address of the PROXY header it got, which must be the client's own.
whoami_check() {
    local line=$1 version=$2 output
    output=$(timeout 15 python3 - "$LB_PORT" "$line" <<'EOF'
import socket, sys
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10, source_address=("127.0.0.2", 0)) as s:
    port = s.getsockname()[1]
    s.sendall(sys.argv[2].encode() + b"\n")
    reply = b""
    while chunk := s.recv(4096):
        reply += chunk
print(port, reply.decode().strip())
EOF
    ) || true
    local client_port=${output%% *}
    if [[ $output =~ ^[0-9]+\ PROXY\ $version\ 127\.0\.0\.2\ ([0-9]+)$ ]] && [ "${BASH_REMATCH[1]}" = "$client_port" ]; then
        ok "PROXY $version to the upstream carries the client's 127.0.0.2:$client_port through the load balancer"
    else
        not_ok "PROXY $version to the upstream carries the client's address through the load balancer" \
            "client port and upstream's report: ${output:-nothing}"
    fi
}
if [ "$MODE" = direct ]; then
    whoami_check whoami v2
else
    whoami_check whoami v1
    whoami_check whoami2 v2
fi
# accept-proxy-from: a peer outside 127.0.0.1/32 gets nothing relayed from preforkd's lb listener.
if [ "$MODE" = preforkd ]; then
    check "the PROXY listener closes a peer outside accept-proxy-from" '^closed, nothing relayed$' \
        timeout 15 python3 - "$BEHIND_LB_PORT" <<'EOF'
import socket, sys
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10, source_address=("127.0.0.3", 0)) as s:
    try:
        s.sendall(b"PROXY TCP4 192.0.2.1 127.0.0.1 1234 80\r\nwhoami\n")
        reply = s.recv(4096)
    except ConnectionError:
        reply = b""
print("closed, nothing relayed" if not reply else f"relayed: {reply!r}")
EOF
fi

# --- 5. 1 GiB each way --------------------------------------------------------------------------
check "$BULK_BYTES bytes up arrive whole (SHA-256)" '^[0-9]+ bytes up' \
    python3 "$HERE/clients.py" upload 127.0.0.1 "$(target upload)" "$BULK_BYTES" upload:
check "$BULK_BYTES bytes down arrive whole (SHA-256)" '^[0-9]+ bytes down' \
    python3 "$HERE/clients.py" download 127.0.0.1 "$(target download)" "$BULK_BYTES"

# --- 6. half-close ------------------------------------------------------------------------------
# nc -N shuts its write side down after the request; the upstream replies only after that EOF.
halfclose_check() {
    local reply=$PEERS_DIR/halfclose.reply
    printf 'halfclose\n' | timeout 10 nc -N 127.0.0.1 "$(target halfclose)" >"$reply" || true
    local size last
    size=$(stat -c %s "$reply")
    last=$(tail -c 7 "$reply" | tr -cd '[:print:]')
    if [ "$size" -eq $((262144 + 7)) ] && [ "$last" = "END 10" ]; then
        ok "a half-closed client gets the whole reply sent after its EOF"
    else
        not_ok "a half-closed client gets the whole reply sent after its EOF" \
            "got $size bytes (wanted 262151), last line '${last:0:40}'"
    fi
}
halfclose_check

# --- 7. a burst of connects ---------------------------------------------------------------------
check "a burst of $BURST connects is accepted and answered" "^$BURST/$BURST answered" \
    python3 "$HERE/clients.py" burst 127.0.0.1 "$(target default)" "$BURST" 6

# --- 8. a client that says nothing --------------------------------------------------------------
check "a silent client reaches the server-speaks-first upstream" "^'220 " \
    python3 "$HERE/clients.py" silent 127.0.0.1 "$(target quiet)" $((PROBE_TIMEOUT * 2 + 4))

# --- 9. preforkd names the route and upstream of each connection ------------------------------
# Text logs carry route=NAME upstream=ADDR, JSON "route":"NAME", the journal ROUTE= and UPSTREAM=.
# (No grep -q inside the pipe: it would quit early and, under pipefail, fail the pipe on SIGPIPE.)
if [ "$MODE" = preforkd ]; then
    while read -r route upstream _; do
        # behind the load balancer, the client is the PROXY header's source
        client=$([[ $route == whoami* ]] && echo 127.0.0.2: || echo 127.0.0.1:)
        if grep -Ei "route[\"=: ]+\"?$route([^[:alnum:]_-]|\$)" "$PEERS_DIR/preforkd.log" |
            grep -F "$upstream" | grep -F "$client" >/dev/null; then
            ok "preforkd logs route $route with its upstream $upstream and client $client…"
        else
            not_ok "preforkd logs route $route with its upstream $upstream and client $client…" \
                "no such line in its log"
        fi
    done <"$ROUTES"
fi

if [ $FAILED -ne 0 ] && [ "$MODE" != direct ]; then
    echo "# the last lines of $MODE's log:"
    tail -n 25 "$PEERS_DIR/$MODE.log" | sed 's/^/#   /'
fi
exit $FAILED
