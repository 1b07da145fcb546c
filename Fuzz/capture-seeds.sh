#!/usr/bin/env bash
# Captures real clients' first bytes on loopback, as the seed corpus in Fuzz/corpus/ was made:
# openssl s_client, curl, Python urllib, OpenSSH's ssh, curl --haproxy-protocol and haproxy's
# send-proxy / send-proxy-v2. Writes into OUT_DIR (default: a new temporary directory); compare
# with or copy into Fuzz/corpus/ by hand. Needs: apt-get install -y openssl curl openssh-client haproxy
# Usage: Fuzz/capture-seeds.sh [OUT_DIR] [BASE_PORT]
set -euo pipefail
out=${1:-$(mktemp -d)}
port=${2:-21000}
mkdir -p "$out"
for tool in openssl curl ssh haproxy python3 nc ss; do
    command -v "$tool" >/dev/null || { echo "capture-seeds: $tool is missing" >&2; exit 1; }
done

# One connection on 127.0.0.1:PORT; keeps what arrives until the client pauses for WAIT seconds.
capture() {  # PORT FILE WAIT
    python3 - "$@" <<'PY' &
import socket, sys
port, path, wait = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", port))
server.listen(1)
server.settimeout(10)
client, _ = server.accept()
client.settimeout(wait)
data = b""
try:
    while len(data) < 65536:
        chunk = client.recv(65536)
        if not chunk:
            break
        data += chunk
except socket.timeout:
    pass
open(path, "wb").write(data)
PY
    capture_pid=$!
    # Ready once it listens (python starts slowly on a busy machine).
    for _ in $(seq 100); do
        ss -Hltn "sport = :$1" | grep -q . && return 0
        sleep 0.05
    done
}

capture $((port + 1)) "$out/tls-openssl-sni-alpn.bin" 1
openssl s_client -connect 127.0.0.1:$((port + 1)) -servername one.test -alpn h2,http/1.1 </dev/null >/dev/null 2>&1 || true
wait "$capture_pid" || echo "capture-seeds: a capture failed" >&2
capture $((port + 2)) "$out/tls-openssl-no-sni.bin" 1
openssl s_client -connect 127.0.0.1:$((port + 2)) -noservername </dev/null >/dev/null 2>&1 || true
wait "$capture_pid" || echo "capture-seeds: a capture failed" >&2
capture $((port + 3)) "$out/tls-openssl-tls1.2.bin" 1
openssl s_client -connect 127.0.0.1:$((port + 3)) -servername Two.Example.ORG -tls1_2 </dev/null >/dev/null 2>&1 || true
wait "$capture_pid" || echo "capture-seeds: a capture failed" >&2
capture $((port + 4)) "$out/tls-curl.bin" 1
curl -s -m 2 --resolve one.test:$((port + 4)):127.0.0.1 https://one.test:$((port + 4))/ >/dev/null || true
wait "$capture_pid" || echo "capture-seeds: a capture failed" >&2
capture $((port + 5)) "$out/http-curl.bin" 0.5
curl -s -m 2 http://127.0.0.1:$((port + 5))/ >/dev/null || true
wait "$capture_pid" || echo "capture-seeds: a capture failed" >&2
capture $((port + 6)) "$out/http-python-urllib.bin" 0.5
python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$((port + 6))/x', timeout=1)" 2>/dev/null || true
wait "$capture_pid" || echo "capture-seeds: a capture failed" >&2
capture $((port + 7)) "$out/proxy-curl-haproxy-protocol.bin" 0.5
curl -s -m 2 --haproxy-protocol http://127.0.0.1:$((port + 7))/ >/dev/null || true
wait "$capture_pid" || echo "capture-seeds: a capture failed" >&2
capture $((port + 8)) "$out/ssh-openssh.bin" 1
timeout 3 ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -p $((port + 8)) \
    127.0.0.1 true 2>/dev/null || true
wait "$capture_pid" || echo "capture-seeds: a capture failed" >&2

# haproxy in front of two capture listeners, one per PROXY version.
cat >"$out/haproxy.cfg" <<CFG
defaults
    mode tcp
    timeout connect 2s
    timeout client 3s
    timeout server 3s
frontend v1
    bind 127.0.0.1:$((port + 10))
    default_backend v1
backend v1
    server s 127.0.0.1:$((port + 11)) send-proxy
frontend v2
    bind [::1]:$((port + 12))
    unique-id-format %{+X}o\ %ci:%cp_%fi:%fp_%Ts_%rt
    default_backend v2
backend v2
    server s 127.0.0.1:$((port + 13)) send-proxy-v2 proxy-v2-options unique-id
CFG
haproxy -f "$out/haproxy.cfg" &
haproxy_pid=$!
trap 'kill $haproxy_pid 2>/dev/null || true' EXIT
sleep 0.5
capture $((port + 11)) "$out/proxy-haproxy-v1.bin" 0.5
printf 'GET / HTTP/1.0\r\nHost: one.test\r\n\r\n' | timeout 2 nc -q 1 127.0.0.1 $((port + 10)) >/dev/null || true
wait "$capture_pid" || echo "capture-seeds: a capture failed" >&2
capture $((port + 13)) "$out/proxy-haproxy-v2-tlvs.bin" 0.5
printf 'hello' | timeout 2 nc -q 1 ::1 $((port + 12)) >/dev/null || true
wait "$capture_pid" || echo "capture-seeds: a capture failed" >&2
ls -l "$out"
