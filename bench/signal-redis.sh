#!/usr/bin/env bash
# What --redis costs: the same signaling load against `switchboard serve`
# in memory (one node) and with --redis (one node, a local redis-server),
# one after the other in one run, on this machine's loopback.
#
# For each "CONNS:RATE" in $LOADS: CONNS connections in rooms of 2 relaying
# RATE candidate messages/s for $DURATION s (`switchboard bench signal`,
# protocol v1 clients). Reports relay latency p50/p99 (timestamp inside the
# payload), CPU per relayed message of the node (utime+stime from /proc) and,
# in Redis mode, of redis-server as well, plus loss and duplicates.
# Writes bench/results/signal-redis-<date>.md. Takes about a minute.
#
# Knobs: LOADS, DURATION (s), PIN (1: node on CPU 0, load generator and
# Redis on CPU 1), SKIP_BUILD=1, RESULTS_DIR, BASELINE_BIN (another build's
# binary, run in memory mode too, as a "baseline" row: e.g. a build from
# before a change).
set -euo pipefail
cd "$(dirname "$0")/.."

LOADS=${LOADS:-"1000:2000 2000:5000"}
DURATION=${DURATION:-10}
PIN=${PIN:-1}
RESULTS_DIR=${RESULTS_DIR:-bench/results}

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

command -v redis-server >/dev/null || die "redis-server is missing (Debian: apt-get install redis-server)"
command -v jq >/dev/null || die "jq is missing (Debian: apt-get install jq)"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "building switchboard (release)"
    cargo build --release -p switchboard >&2
fi
BIN=$PWD/target/release/switchboard
[ -x "$BIN" ] || die "$BIN is missing"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

PIN_SERVER=() PIN_OTHER=()
if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    PIN_SERVER=(taskset -c 0) PIN_OTHER=(taskset -c 1)
fi

tmp=$(mktemp -d)
SERVER_PID= REDIS_PID=
cleanup() {
    for p in $SERVER_PID $REDIS_PID; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
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
wait_port() {
    for _ in $(seq 200); do port_busy "$1" && return 0; sleep 0.05; done
    die "nothing listens on $1"
}
# CPU ticks (utime+stime) of a process.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

RPORT=$(free_port)
"${PIN_OTHER[@]}" redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$tmp" >/dev/null &
REDIS_PID=$!
wait_port "$RPORT"

# run MODE CONNS RATE: one bench run against a fresh node.
run() {
    local mode=$1 conns=$2 rate=$3 extra=() bin=$BIN
    [ "$mode" = redis ] && extra=(--redis "redis://127.0.0.1:$RPORT/")
    [ "$mode" = baseline ] && bin=$BASELINE_BIN
    PORT=$(free_port)
    RUST_LOG=warn "${PIN_SERVER[@]}" "$bin" serve --listen "127.0.0.1:$PORT" --no-turn \
        --max-connections 20000 "${extra[@]}" >/dev/null 2>"$tmp/server.err" &
    SERVER_PID=$!
    wait_port "$PORT"
    log "$mode: $conns connections, $rate msgs/s, $DURATION s"
    local r0; r0=$(ticks "$REDIS_PID")
    "${PIN_OTHER[@]}" "$BIN" bench signal --server "127.0.0.1:$PORT" --connections "$conns" \
        --room-size 2 --rate "$rate" --duration "$DURATION" --server-pid "$SERVER_PID" \
        >"$tmp/out" 2>"$tmp/err" || { cat "$tmp/out" "$tmp/err" "$tmp/server.err" >&2; die "bench failed"; }
    local r1; r1=$(ticks "$REDIS_PID")
    tail -n 1 "$tmp/out" >"$tmp/$mode-$conns-$rate.json"
    # Redis CPU over the whole run (connect, measure, drain), per message
    # received: an upper bound on what the measured interval cost it.
    local hz; hz=$(getconf CLK_TCK)
    jq -r --argjson t "$((r1 - r0))" --argjson hz "$hz" \
        'if .received > 0 then ($t / $hz * 1e6 / .received) else null end' \
        "$tmp/$mode-$conns-$rate.json" >"$tmp/$mode-$conns-$rate.redis"
    kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=
}

MODES="memory redis"
if [ -n "${BASELINE_BIN:-}" ]; then
    [ -x "$BASELINE_BIN" ] || die "BASELINE_BIN $BASELINE_BIN is not executable"
    MODES="baseline memory redis"
fi
for load in $LOADS; do
    for m in $MODES; do run "$m" "${load%%:*}" "${load##*:}"; done
done

j() { jq -r "try ($2) catch \"-\" | if . == null then \"-\" else . end" "$tmp/$1.json"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }
out=$tmp/tables.md
{
    echo "One switchboard node ($(git rev-parse --short HEAD 2>/dev/null || echo ?), release, --no-turn), in memory and with --redis (redis-server $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/'), local, no persistence), on 127.0.0.1; load: \`switchboard bench signal\`, rooms of 2, v1 clients.$([ ${#PIN_SERVER[@]} -gt 0 ] && echo " Node on CPU 0; load generator and Redis on CPU 1.")"
    echo
    echo "| load | store | p50 µs | p99 µs | node CPU µs/msg | redis CPU µs/msg | relayed / sent | loss | duplicates |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    for load in $LOADS; do
        c=${load%%:*} r=${load##*:}
        for m in $MODES; do
            f=$m-$c-$r
            rc=-; [ "$m" = redis ] && rc=$(awk '{printf "%.1f", $1}' "$tmp/$f.redis")
            echo "| $c conns, $r msgs/s | $m | $(j "$f" '.p50_us | round') | $(j "$f" '.p99_us | round') | $(j "$f" '.cpu_us_per_msg * 10 | round / 10') | $rc | $(j "$f" '.received') / $(j "$f" '.sent') | $(j "$f" '.loss') | $(j "$f" '.duplicates') |"
        done
        echo "| | redis / memory | $(ratio "$(j "redis-$c-$r" '.p50_us')" "$(j "memory-$c-$r" '.p50_us')") | $(ratio "$(j "redis-$c-$r" '.p99_us')" "$(j "memory-$c-$r" '.p99_us')") | $(ratio "$(j "redis-$c-$r" '.cpu_us_per_msg')" "$(j "memory-$c-$r" '.cpu_us_per_msg')") | | | | |"
    done
} >"$out"
mkdir -p "$RESULTS_DIR"
file=$RESULTS_DIR/signal-redis-$(date -u +%F).md
{
    echo "# signal-redis $(date -u +%FT%TZ)"
    echo
    echo "Command: LOADS=\"$LOADS\" DURATION=$DURATION PIN=$PIN${BASELINE_BIN:+ BASELINE_BIN=$BASELINE_BIN} bench/signal-redis.sh"
    echo
    cat "$out"
    echo
    echo "Raw JSON lines:"
    echo
    for f in "$tmp"/*.json; do echo "    $(basename "$f" .json): $(cat "$f")"; done
} >"$file"
cat "$out"
log "written to $file"
