#!/usr/bin/env bash
# WebSocket signaling, switchboard vs peerjs-server (npm `peer`), on this
# machine's loopback.
#
# Installs `peer` from npm into bench/.peerjs/ when it is missing, then for
# each load starts a fresh server (switchboard serve --no-turn, release
# build, or peerjs-server under Node) on 127.0.0.1 and drives it with
# `switchboard bench signal` (protocol v1, or --peerjs):
#   - memory: $MEM_CONNS idle connections in rooms of 2; server RSS before
#     the first connect and with all connected, connect rate;
#   - relay: for each "CONNS:RATE" in $LOADS, CONNS connections in rooms of
#     2 relaying RATE candidate messages/s in total for $DURATION s; server
#     CPU per relayed message (utime+stime from /proc), relay latency
#     (timestamp inside the payload), loss and duplicates.
# Both servers run with their default flags except the connection caps
# (switchboard --max-connections, peerjs --concurrent_limit), raised to
# 20000. Both log every connection by default; the logs go to /dev/null.
# Prints Markdown tables and writes them to
# bench/results/signal-vs-peerjs-<date>.md. Takes about 3 minutes.
#
# Knobs (environment): MEM_CONNS, LOADS, DURATION (s), PIN (1: server on
# CPU 0, load generator on CPU 1), PEER_VERSION, SKIP_BUILD=1, RESULTS_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

MEM_CONNS=${MEM_CONNS:-18000}
LOADS=${LOADS:-"2000:3500 10000:20000"}
DURATION=${DURATION:-10}
PIN=${PIN:-1}
PEER_VERSION=${PEER_VERSION:-1.0.2}
RESULTS_DIR=${RESULTS_DIR:-bench/results}

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

command -v node >/dev/null || die "node is missing (Debian: apt-get install nodejs npm)"
PEERJS_DIR=$PWD/bench/.peerjs
PEERJS=$PEERJS_DIR/node_modules/peer/dist/bin/peerjs.js
if [ ! -f "$PEERJS" ] || ! grep -q "\"version\": \"$PEER_VERSION\"" "$PEERJS_DIR/node_modules/peer/package.json"; then
    log "installing peer@$PEER_VERSION from npm into $PEERJS_DIR"
    mkdir -p "$PEERJS_DIR"
    npm install --prefix "$PEERJS_DIR" --no-audit --no-fund --loglevel=error "peer@$PEER_VERSION" >&2
fi
[ -f "$PEERJS" ] || die "$PEERJS is missing after npm install"
# Installed packages are not part of the repository.
[ -f "$PEERJS_DIR/.gitignore" ] || printf '*\n' >"$PEERJS_DIR/.gitignore"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "building switchboard (release)"
    cargo build --release -p switchboard >&2
fi
BIN=$PWD/target/release/switchboard
[ -x "$BIN" ] || die "$BIN is missing"

# One socket per connection on each side.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

PIN_SERVER=() PIN_BENCH=()
if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    PIN_SERVER=(taskset -c 0) PIN_BENCH=(taskset -c 1)
fi

tmp=$(mktemp -d)
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

port_busy() { ss -Hlnt | awk '{print $4}' | grep -q ":$1\$"; }
free_port() {
    local p
    for _ in $(seq 200); do
        p=$(shuf -i 20000-29999 -n 1)
        port_busy "$p" || { echo "$p"; return 0; }
    done
    die "no free port found"
}

# start_server sb|peerjs: starts one on a free loopback port; sets
# SERVER_PID and PORT once it accepts connections.
start_server() {
    PORT=$(free_port)
    case $1 in
        sb) RUST_LOG=warn "${PIN_SERVER[@]}" "$BIN" serve --listen "127.0.0.1:$PORT" \
                --no-turn --max-connections 20000 >/dev/null 2>"$tmp/server.err" & ;;
        peerjs) "${PIN_SERVER[@]}" node "$PEERJS" --host 127.0.0.1 --port "$PORT" \
                --concurrent_limit 20000 >/dev/null 2>"$tmp/server.err" & ;;
    esac
    SERVER_PID=$!
    for _ in $(seq 200); do
        port_busy "$PORT" && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    cat "$tmp/server.err" >&2
    die "$1 server did not start"
}

stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

# run SERVER CONNS RATE SECS: one bench run against a fresh server; the
# bench's JSON line goes to $tmp/SERVER-CONNS-RATE.json.
run() {
    local server=$1 conns=$2 rate=$3 secs=$4 flags=()
    [ "$server" = peerjs ] && flags=(--peerjs)
    start_server "$server"
    log "$server: $conns connections, $rate msgs/s, $secs s"
    "${PIN_BENCH[@]}" "$BIN" bench signal "${flags[@]}" --server "127.0.0.1:$PORT" \
        --connections "$conns" --room-size 2 --rate "$rate" --duration "$secs" \
        --server-pid "$SERVER_PID" >"$tmp/out" 2>"$tmp/err" || {
        cat "$tmp/out" "$tmp/err" >&2
        die "bench signal against $server failed"
    }
    sed '$d' "$tmp/out" >&2
    tail -n 1 "$tmp/out" >"$tmp/$server-$conns-$rate.json"
    stop_server
}

# j FILE EXPR: a jq expression on a run's JSON ("-" when null).
j() { jq -r "try ($2) catch \"-\" | if . == null then \"-\" else . end" "$tmp/$1.json"; }
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'
}

for s in sb peerjs; do run "$s" "$MEM_CONNS" 0 2; done
for load in $LOADS; do
    for s in sb peerjs; do run "$s" "${load%%:*}" "${load##*:}" "$DURATION"; done
done

node_v=$(node --version)
sb_v=$(git rev-parse --short HEAD 2>/dev/null || echo "?")
out=$tmp/tables.md
{
    echo "Servers: switchboard serve ($sb_v, release, --no-turn) and peerjs-server $PEER_VERSION (Node $node_v), on 127.0.0.1; load generator: \`switchboard bench signal\`, rooms of 2.$([ ${#PIN_SERVER[@]} -gt 0 ] && echo " Server pinned to CPU 0, load generator to CPU 1.")"
    echo
    m=$MEM_CONNS-0
    echo "#### Memory and connect rate ($MEM_CONNS idle connections)"
    echo
    echo "| | switchboard | peerjs-server | switchboard / peerjs |"
    echo "| --- | --- | --- | --- |"
    a=$(j "sb-$m" '.server_rss_connected_kib / 1024 | floor') b=$(j "peerjs-$m" '.server_rss_connected_kib / 1024 | floor')
    echo "| server RSS, all connected | $a MiB | $b MiB | $(ratio "$a" "$b") |"
    a=$(j "sb-$m" '.rss_per_conn_kib * 100 | round / 100') b=$(j "peerjs-$m" '.rss_per_conn_kib * 100 | round / 100')
    echo "| RSS per connection (delta from before the first connect) | $a KiB | $b KiB | $(ratio "$a" "$b") |"
    a=$(j "sb-$m" '.connect_rate | round') b=$(j "peerjs-$m" '.connect_rate | round')
    echo "| connect rate (WebSocket + join/OPEN, 128 in flight) | $a /s | $b /s | $(ratio "$a" "$b") |"
    a=$(j "sb-$m" '.connect_p99_ms * 10 | round / 10') b=$(j "peerjs-$m" '.connect_p99_ms * 10 | round / 10')
    echo "| admission p99 | $a ms | $b ms | |"
    echo
    echo "#### Relayed candidate messages ($DURATION s each)"
    echo
    echo "| load | server | CPU µs per message | p50 µs | p99 µs | p99.9 µs | relayed / sent | loss | duplicates |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    for load in $LOADS; do
        c=${load%%:*} r=${load##*:}
        for s in sb peerjs; do
            f=$s-$c-$r
            name=switchboard; [ "$s" = peerjs ] && name=peerjs-server
            echo "| $c conns, $r msgs/s | $name | $(j "$f" '.cpu_us_per_msg * 10 | round / 10') | $(j "$f" '.p50_us | round') | $(j "$f" '.p99_us | round') | $(j "$f" '.p999_us | round') | $(j "$f" '.received') / $(j "$f" '.sent') | $(j "$f" '.loss') | $(j "$f" '.duplicates') |"
        done
    done
} >"$out"

mkdir -p "$RESULTS_DIR"
file=$RESULTS_DIR/signal-vs-peerjs-$(date -u +%F).md
{
    echo "# signal-vs-peerjs $(date -u +%FT%TZ)"
    echo
    echo "Command: MEM_CONNS=$MEM_CONNS LOADS=\"$LOADS\" DURATION=$DURATION PIN=$PIN bench/signal-vs-peerjs.sh"
    echo
    cat "$out"
    echo
    echo "Raw JSON lines:"
    echo
    for f in "$tmp"/*.json; do echo "    $(basename "$f" .json): $(cat "$f")"; done
} >"$file"
cat "$out"
log "written to $file"
