# Real peers from Debian's packages, for the forward handler's tests: sourced, not run.
#
#   . Tests/forward/peers.sh
#   peers_init "$(mktemp -d)"; trap peers_cleanup EXIT
#   start_sshd "$(free_port)"; start_nginx "$(free_port)"; …
#
# Every peer runs in the foreground of its own session (its process group: forked children
# included), with its config, keys, pid file and logs under $PEERS_DIR, on 127.0.0.1 only, and is
# stopped by peers_cleanup. Every wait has a deadline. The configs of the proxies themselves
# (preforkd, haproxy, sslh) come from peerconf.py, which the benchmark shares.

PEERS_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PEERS_STARTED=()
declare -gA UPSTREAM_PORT=()

# peers_init DIR — DIR holds everything the peers write; peers_cleanup removes it.
peers_init() {
    PEERS_DIR=$1
    PEERS_STARTED=()
    UPSTREAM_PORT=()
}

# Stops every peer's process group, the last started first (preforkd before the receiver of its
# notifications, the load balancer before what it balances): TERM, then KILL after 5 s. Then
# removes $PEERS_DIR (kept for a look at the logs with PEERS_KEEP=1).
peers_cleanup() {
    local i pid deadline
    for ((i = ${#PEERS_STARTED[@]} - 1; i >= 0; i--)); do
        pid=${PEERS_STARTED[i]}
        kill -TERM -- "-$pid" 2>/dev/null || true
        deadline=$((SECONDS + 5))
        while kill -0 -- "-$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do
            sleep 0.05
        done
        kill -KILL -- "-$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    PEERS_STARTED=()
    if [ "${PEERS_KEEP:-0}" = 1 ]; then
        echo "# PEERS_KEEP=1: logs and configs kept in $PEERS_DIR" >&2
    elif [ -n "${PEERS_DIR:-}" ]; then
        rm -rf "$PEERS_DIR"
    fi
    return 0
}

# peer_start NAME COMMAND… — COMMAND in its own session, output in $PEERS_DIR/NAME.log; the
# session leader's pid is left in PEER_PID.
peer_start() {
    local name=$1
    shift
    setsid "$@" </dev/null >"$PEERS_DIR/$name.log" 2>&1 &
    PEER_PID=$!
    PEERS_STARTED+=("$PEER_PID")
}

# wait_until SECONDS WHAT COMMAND… — polls COMMAND every 50 ms until it succeeds; on the deadline
# prints why and fails.
wait_until() {
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" 2>/dev/null; do
        if [ $SECONDS -ge $deadline ]; then
            echo "timed out after ${seconds} s waiting for $what" >&2
            return 1
        fi
        sleep 0.05
    done
}

port_open() { timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

# wait_listening NAME PID HOST PORT — the peer's port accepts, or the peer died (its log shown).
wait_listening() {
    local name=$1 pid=$2 host=$3 port=$4
    local deadline=$((SECONDS + 15))
    until port_open "$host" "$port"; do
        if ! kill -0 "$pid" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
            echo "$name did not start listening on $host:$port; its log:" >&2
            tail -n 20 "$PEERS_DIR/$name.log" >&2 || true
            return 1
        fi
        sleep 0.05
    done
}

# An unused loopback port (the kernel's choice; a peer that binds it later races only with others
# doing the same).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# make_cert NAME — a self-signed P-256 certificate for NAME: $PEERS_DIR/NAME.crt and .key.
make_cert() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=$1" -addext "subjectAltName=DNS:$1" \
        -keyout "$PEERS_DIR/$1.key" -out "$PEERS_DIR/$1.crt" >/dev/null 2>&1
}

# start_sshd PORT — OpenSSH's server as the current user, with a throw-away host key and a
# throw-away client key authorized for that user. Sets SSH_ARGS: the client options that log in
# with that key and accept only that host key (under the alias sshd.test, whatever the port).
start_sshd() {
    local port=$1 dir=$PEERS_DIR
    [ "$(id -u)" -eq 0 ] && mkdir -p /run/sshd # privilege separation directory, checked at start
    ssh-keygen -q -t ed25519 -N '' -C sshd.test -f "$dir/ssh_host_ed25519_key"
    ssh-keygen -q -t ed25519 -N '' -C client.test -f "$dir/client_key"
    cp "$dir/client_key.pub" "$dir/authorized_keys"
    chmod 644 "$dir/authorized_keys"
    echo "sshd.test $(cut -d' ' -f1,2 "$dir/ssh_host_ed25519_key.pub")" >"$dir/known_hosts"
    cat >"$dir/sshd_config" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $dir/ssh_host_ed25519_key
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
EOF
    # absolute path: sshd re-executes itself for every connection
    peer_start sshd /usr/sbin/sshd -D -e -f "$dir/sshd_config"
    wait_listening sshd "$PEER_PID" 127.0.0.1 "$port"
    SSH_ARGS=(-F /dev/null -i "$dir/client_key" -o BatchMode=yes -o IdentitiesOnly=yes
        -o StrictHostKeyChecking=yes -o "UserKnownHostsFile=$dir/known_hosts" -o HostKeyAlias=sshd.test
        -o ConnectTimeout=5 -o LogLevel=ERROR)
}

# start_nginx PORT — nginx answering every request with "nginx host=<Host header>": no files to
# serve, so its unprivileged worker needs no access to $PEERS_DIR.
start_nginx() {
    local port=$1 dir=$PEERS_DIR/nginx
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 256; }
http {
    access_log $dir/access.log;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    server {
        listen 127.0.0.1:$port;
        location / { default_type text/plain; return 200 "nginx host=\$host\n"; }
    }
}
EOF
    # -e: the error log opens before the config is read
    peer_start nginx nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" -g 'daemon off;'
    wait_listening nginx "$PEER_PID" 127.0.0.1 "$port"
}

# start_s_server NAME PORT — `openssl s_server -www` with NAME's certificate (make_cert first).
# ALPN: http/1.1 preferred (curl then speaks HTTP/1.1, which -www serves), h2 accepted.
start_s_server() {
    local name=$1 port=$2
    peer_start "s_server-$name" openssl s_server -accept "127.0.0.1:$port" -naccept 1000000 \
        -cert "$PEERS_DIR/$name.crt" -key "$PEERS_DIR/$name.key" -alpn http/1.1,h2 -www -quiet
    wait_listening "s_server-$name" "$PEER_PID" 127.0.0.1 "$port"
}

# start_upstreams MODE… — upstreams.py serving each MODE on a port of its own; fills
# UPSTREAM_PORT[MODE] from the ports file it writes once every listener is bound.
start_upstreams() {
    local ports=$PEERS_DIR/upstream-ports mode port
    peer_start upstreams python3 "$PEERS_HERE/upstreams.py" --ready-file "$ports" "$@"
    wait_until 10 "upstreams.py's ports file" test -s "$ports"
    while read -r mode port; do
        UPSTREAM_PORT[$mode]=$port
    done <"$ports"
}

# start_lb_haproxy PORT BACKEND — haproxy as a load balancer in TCP mode: clients connect to
# 127.0.0.1:PORT, and BACKEND (host:port) gets each connection behind a PROXY v2 header.
start_lb_haproxy() {
    local port=$1 backend=$2
    cat >"$PEERS_DIR/lb-haproxy.cfg" <<EOF
global
    maxconn 1000
defaults
    mode tcp
    timeout connect 3s
    timeout client 30s
    timeout server 30s
frontend lb
    bind 127.0.0.1:$port
    default_backend behind
backend behind
    server behind $backend send-proxy-v2
EOF
    peer_start lb-haproxy haproxy -db -f "$PEERS_DIR/lb-haproxy.cfg"
    wait_listening lb-haproxy "$PEER_PID" 127.0.0.1 "$port"
}

# start_proxy KIND PORT ROUTES_FILE [peerconf options…] — the proxy under test, listening on
# 127.0.0.1:PORT, configured by peerconf.py from ROUTES_FILE: KIND is preforkd (PREFORKD_BIN),
# haproxy, sslh (sslh-fork) or sslh-select. preforkd is ready at READY=1 on its NOTIFY_SOCKET,
# the others once the port accepts.
start_proxy() {
    local kind=$1 port=$2 routes=$3
    shift 3
    local config=$PEERS_DIR/$kind.conf
    case $kind in
        preforkd)
            python3 "$PEERS_HERE/peerconf.py" preforkd --listen "127.0.0.1:$port" "$@" <"$routes" >"$config"
            mkdir -p "$PEERS_DIR/run"
            peer_start notify python3 "$PEERS_HERE/notify_recv.py" "$PEERS_DIR/notify.sock" "$PEERS_DIR/notify.log"
            wait_until 10 "the notification socket" test -S "$PEERS_DIR/notify.sock"
            NOTIFY_SOCKET=$PEERS_DIR/notify.sock peer_start preforkd "$PREFORKD_BIN" --config "$config"
            local pid=$PEER_PID deadline=$((SECONDS + 20))
            until grep -qx READY=1 "$PEERS_DIR/notify.log" 2>/dev/null; do
                if ! kill -0 "$pid" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
                    echo "preforkd sent no READY=1 (it $(kill -0 "$pid" 2>/dev/null && echo "is still starting after 20 s" || echo exited)); its log:" >&2
                    tail -n 20 "$PEERS_DIR/preforkd.log" >&2
                    return 1
                fi
                sleep 0.05
            done
            ;;
        haproxy)
            python3 "$PEERS_HERE/peerconf.py" haproxy --listen "127.0.0.1:$port" "$@" <"$routes" >"$config"
            peer_start haproxy haproxy -db -f "$config"
            wait_listening haproxy "$PEER_PID" 127.0.0.1 "$port"
            ;;
        sslh | sslh-select)
            python3 "$PEERS_HERE/peerconf.py" sslh --listen "127.0.0.1:$port" "$@" <"$routes" >"$config"
            peer_start "$kind" "/usr/sbin/$kind" -F"$config"
            wait_listening "$kind" "$PEER_PID" 127.0.0.1 "$port"
            ;;
        *)
            echo "start_proxy: unknown proxy $kind" >&2
            return 1
            ;;
    esac
}
