#!/usr/bin/env bash
# File transfer throughput on this machine's loopback, one run each:
#   CLI -> CLI (direct, and relay-only through serve's TURN),
#   CLI -> Chromium, Chromium -> CLI, Chromium -> Chromium (/chat, direct).
# One `switchboard serve` (release build), a file of $MIB MiB of random
# bytes, every transfer hash-checked by the receiver. MB/s is the file size
# over the receiver's own time for it: from its file-start to the verified
# SHA-256 (`ms` of the CLI's file-received event; for Chromium, the /chat
# card's first appearance to its verified state, seen by a
# MutationObserver in the page: bench/chat-recv.mjs).
#
# Knobs (environment): MIB (default 200), BIN (default
# target/release/switchboard), TIMEOUT (s per transfer, default 300),
# SKIP_BROWSER=1.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/target/release/switchboard}
MIB=${MIB:-200}
TIMEOUT=${TIMEOUT:-300}
[ -x "$BIN" ] || { echo "error: $BIN is missing (cargo build --release -p switchboard)" >&2; exit 1; }
log() { printf '==> %s\n' "$*" >&2; }

dir=$(mktemp -d)
SERVE=
cleanup() {
    kill $(jobs -p) 2>/dev/null || true
    [ -n "$SERVE" ] && kill "$SERVE" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

head -c $((MIB << 20)) /dev/urandom >"$dir/file.bin"
SIZE=$(stat -c %s "$dir/file.bin")
WANT=$(sha256sum "$dir/file.bin" | cut -d' ' -f1)

# Loopback relaying needs --allow-peer (TURN refuses loopback peers by default).
RUST_LOG=warn "$BIN" serve --listen 127.0.0.1:0 --turn-listen 127.0.0.1:0 --external-ip 127.0.0.1 \
    --allow-peer 127.0.0.0/8 >"$dir/serve.out" 2>"$dir/serve.err" &
SERVE=$!
for _ in $(seq 100); do
    ORIGIN=$(sed -n 's|^switchboard listening on \(http://[^ ]*\).*|\1|p' "$dir/serve.out")
    [ -n "$ORIGIN" ] && break
    sleep 0.1
done
[ -n "$ORIGIN" ] || { cat "$dir/serve.err" >&2; exit 1; }
log "serve on $ORIGIN; file $MIB MiB"

mbps() { awk -v b="$SIZE" -v ms="$1" 'BEGIN { if (ms > 0) printf "%.1f", b / 1e6 / (ms / 1000); else print "-" }'; }
ROWS=()
row() { ROWS+=("| $1 | $2 | $3 | $(mbps "$3") |"); log "$1 ($2): $3 ms, $(mbps "$3") MB/s"; }
n=0

# The CLI receiver's time for the file, after checking its hash.
cli_recv_ms() {
    local json=$1 got
    got=$(grep '"event":"file-received"' "$json" | tail -1)
    [[ "$got" == *"\"sha256\":\"$WANT\""* && "$got" == *'"ok":true'* ]] || { echo -; return; }
    sed -n 's/.*"ms":\([0-9]*\).*/\1/p' <<<"$got"
}

cli_to_cli() {
    local path=$1 extra=()
    [ "$path" = relay ] && extra=(--relay-only)
    n=$((n + 1))
    timeout "$TIMEOUT" "$BIN" recv --server "$ORIGIN" --room "t$n" --loopback --json "${extra[@]}" \
        --out "$dir/out$n" --count 1 >"$dir/recv$n.json" 2>/dev/null &
    local r=$!
    sleep 0.5
    timeout "$TIMEOUT" "$BIN" send --server "$ORIGIN" --room "t$n" --loopback --json "${extra[@]}" \
        "$dir/file.bin" >/dev/null 2>&1 || true
    wait "$r" || true
    row "CLI -> CLI" "$path" "$(cli_recv_ms "$dir/recv$n.json")"
    rm -rf "$dir/out$n"
}

cli_to_cli direct
cli_to_cli relay

if [ "${SKIP_BROWSER:-0}" != 1 ]; then
    browser_ms() { node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const l=s.trim().split("\n").pop();try{const j=JSON.parse(l);console.log(j.ok?j.ms:"-")}catch{console.log("-")}})'; }

    n=$((n + 1))
    node bench/chat-recv.mjs "$ORIGIN" "t$n" "$TIMEOUT" >"$dir/cr$n.json" 2>"$dir/cr$n.err" &
    cr=$!
    for _ in $(seq 300); do grep -q joined "$dir/cr$n.err" 2>/dev/null && break; sleep 0.1; done
    timeout "$TIMEOUT" "$BIN" send --server "$ORIGIN" --room "t$n" --loopback "$dir/file.bin" >/dev/null 2>&1 || true
    wait "$cr" || true
    row "CLI -> Chromium" direct "$(browser_ms <"$dir/cr$n.json")"

    n=$((n + 1))
    timeout "$TIMEOUT" "$BIN" recv --server "$ORIGIN" --room "t$n" --loopback --json \
        --out "$dir/out$n" --count 1 >"$dir/recv$n.json" 2>/dev/null &
    r=$!
    sleep 0.5
    node tests/nat/browser-chat.mjs "$ORIGIN" "t$n" "$dir/file.bin" "$TIMEOUT" >/dev/null 2>&1 || true
    wait "$r" || true
    row "Chromium -> CLI" direct "$(cli_recv_ms "$dir/recv$n.json")"
    rm -rf "$dir/out$n"

    n=$((n + 1))
    node bench/chat-recv.mjs "$ORIGIN" "t$n" "$TIMEOUT" >"$dir/cr$n.json" 2>"$dir/cr$n.err" &
    cr=$!
    for _ in $(seq 300); do grep -q joined "$dir/cr$n.err" 2>/dev/null && break; sleep 0.1; done
    node tests/nat/browser-chat.mjs "$ORIGIN" "t$n" "$dir/file.bin" "$TIMEOUT" >/dev/null 2>&1 || true
    wait "$cr" || true
    row "Chromium -> Chromium" direct "$(browser_ms <"$dir/cr$n.json")"
fi

echo "| sender -> receiver | path | receiver's ms for $MIB MiB | MB/s |"
echo "|---|---|---:|---:|"
printf '%s\n' "${ROWS[@]}"
