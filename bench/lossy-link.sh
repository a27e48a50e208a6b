#!/usr/bin/env bash
# Data channels on a lossy link (issue 15): two network namespaces joined by
# one veth pair, random loss on every packet each way (iptables statistic
# on INPUT, so that no sender learns of a drop;
# this kernel has no netem), and one file moved across it per row:
#   - switchboard send -> switchboard recv (str0m's SCTP both ends);
#   - the same with --redundancy off on both (str0m's SCTP alone);
#   - Chromium /chat -> Chromium /chat (Chromium's SCTP both ends);
#   - Chromium /chat -> switchboard recv (Chromium's SCTP sending to str0m);
#   - plain TCP: curl from python3's http.server, the same file.
# `switchboard serve --no-turn` runs in the sender's namespace, so peers pair
# host candidates on the link; signaling crosses the lossy link too (TCP).
# One run, back to back (the CLI rows RUNS times each, median and range);
# prints a Markdown table (MB/s = 10^6 bytes per s,
# by the receiver's clock) and writes bench/results/lossy-link-DATE.md.
#
#   sudo bench/lossy-link.sh [LOSSES] [MIB_AT_0] [MIB_LOSSY]
#     LOSSES     percentages each way, default "0 1 5"
#     MIB_AT_0   file size at 0% loss, default 50
#     MIB_LOSSY  file size with loss, default 20
#   BIN=path/to/switchboard (default target/release/switchboard, built if missing)
#   TIMEOUT    seconds per transfer before it counts as stalled (default 300)
#   RUNS       transfers per CLI cell, reported as median (min-max); default 3
#   KEEP=1     keep the work directory (every process's output) for a look
#   CHROMIUM_PAIR=0  skip the Chromium -> Chromium row (on by default)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "needs root (network namespaces)" >&2; exit 2; }
LOSSES=${1:-"0 1 5"}
MIB0=${2:-50}
MIBL=${3:-}
TIMEOUT=${TIMEOUT:-300}
BIN=${BIN:-target/release/switchboard}
[ -x "$BIN" ] || cargo build --release -p switchboard
BIN=$(realpath "$BIN")
# What a fresh machine lacks comes from Debian, as in tests/run.sh.
missing=()
for pair in ip:iproute2 iptables:iptables curl:curl python3:python3 node:nodejs npm:npm jq:jq chromium:chromium; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}" >&2
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi
[ -d tests/e2e/node_modules/playwright-core ] || (cd tests/e2e && npm ci --no-audit --no-fund)

A=sbll-a B=sbll-b
IPA=10.77.0.1 IPB=10.77.0.2
work=""
cleanup() {
    local n
    for n in "$A" "$B"; do
        ip netns pids "$n" 2>/dev/null | xargs -r kill 2>/dev/null || true
        ip netns del "$n" 2>/dev/null || true
    done
    if [ -n "$work" ]; then
        if [ "${KEEP:-0}" = 1 ]; then echo "logs kept in $work" >&2; else rm -rf "$work"; fi
    fi
}
trap cleanup EXIT
cleanup
work=$(mktemp -d)
# Chromium's mDNS host names do not resolve from another namespace: the
# pages offer their real addresses instead.
export BROWSER_CHAT_ARGS=--disable-features=WebRtcHideLocalIpsWithMdns
ip netns add "$A"; ip netns add "$B"
ip link add sbll0 netns "$A" type veth peer name sbll1 netns "$B"
ip -n "$A" addr add "$IPA/24" dev sbll0; ip -n "$B" addr add "$IPB/24" dev sbll1
for n in "$A" "$B"; do ip -n "$n" link set lo up; done
ip -n "$A" link set sbll0 up; ip -n "$B" link set sbll1 up
# Chromium offers host candidates only for the interface of its default
# route (and hides them behind mDNS unless told not to): without a default
# route two browsers have nothing to pair.
ip -n "$A" route add default dev sbll0; ip -n "$B" route add default dev sbll1

loss() { # PERCENT: the same random drop on each side's way in
    # Dropped on the way *in* (INPUT), never out: a packet dropped in OUTPUT
    # fails the sender's sendmsg with EPERM, so the sender knows at once.
    # Chromium then resends it before its DTLS even numbers the next record
    # (4.9% dropped in OUTPUT, 0.24% of its records missing at recv), and
    # TCP retries at once: neither saw a lossy link (first runs, 2026-12-01).
    local p=$1 n dev
    for n in "$A" "$B"; do
        dev=sbll0; [ "$n" = "$B" ] && dev=sbll1
        ip netns exec "$n" iptables -w -F INPUT
        if [ "$p" != 0 ]; then
            ip netns exec "$n" iptables -w -A INPUT -i "$dev" -m statistic --mode random \
                --probability "$(awk -v p="$p" 'BEGIN { printf "%.4f", p / 100 }')" -j DROP
        fi
        # Counts what passed, so that the drop rule's share can be checked.
        ip netns exec "$n" iptables -w -A INPUT -i "$dev" -j ACCEPT
    done
}

ORIGIN="http://$IPA:8080"
ip netns exec "$A" "$BIN" serve --listen "$IPA:8080" --no-turn >"$work/serve.log" 2>&1 &
for _ in $(seq 50); do ip netns exec "$B" curl -fs "$ORIGIN/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

zero_counters() { local n; for n in "$A" "$B"; do ip netns exec "$n" iptables -w -Z INPUT; done; }
# What the drop rules really dropped since zero_counters, each way, as a
# check that the link did what the row says (stderr).
drop_share() {
    local n out=()
    for n in "$A" "$B"; do
        out+=("$(ip netns exec "$n" iptables -w -L INPUT -v -x -n | awk -v n="$n" '
            $3 == "DROP" { d = $1 } $3 == "ACCEPT" { a = $1 }
            END { t = d + a; printf "into %s %d, dropped %.2f%%", n, t, t ? 100 * d / t : 0 }')")
    done
    echo "      (${out[0]}; ${out[1]})" >&2
}

# RUNS transfers of one CLI cell -> "median (min-max)", or "stalled" if any
# did not finish. Args as for to_recv_row; ROOM gets a run number.
cli_cell() {
    local f=$1 room=$2 k v vals=()
    shift 2
    for ((k = 1; k <= ${RUNS:-3}; k++)); do
        v=$(to_recv_row "$f" "$room-$k" "${@//@ROOM@/$room-$k}")
        [ "$v" = stalled ] && { echo stalled; return; }
        vals+=("$v")
    done
    printf '%s\n' "${vals[@]}" | sort -g | awk '{ v[NR] = $1 } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        if (NR > 1) printf "%.2f (%.2f-%.2f)", m, v[1], v[NR]; else printf "%.2f", m }'
}

mbps() { awk -v b="$1" -v ms="$2" 'BEGIN { if (ms > 0) printf "%.2f", b / 1e6 / (ms / 1000); else print "-" }'; }

to_recv_row() { # FILE ROOM SENDER...: SENDER (in A) sends FILE to a recv in B -> MB/s or "stalled"
    local f=$1 room=$2 out="$work/out-$2" ms
    shift 2
    mkdir -p "$out"
    zero_counters
    ip netns exec "$B" timeout "$TIMEOUT" "$BIN" recv --json --server "$ORIGIN" --room "$room" --out "$out" --count 1 \
        --timeout 60 --redundancy "${REDUNDANCY:-auto}" >"$work/recv-$room.jsonl" 2>"$work/recv-$room.err" &
    local rp=$!
    sleep 0.5
    ip netns exec "$A" env HOME="$work" timeout "$TIMEOUT" "$@" >"$work/send-$room.out" 2>&1 || true
    wait "$rp" || true
    drop_share
    ms=$(jq -r 'select(.event == "file-received" and .ok) | .ms' "$work/recv-$room.jsonl" 2>/dev/null | tail -1)
    if [ -n "$ms" ]; then mbps "$(stat -c %s "$f")" "$ms"; else echo "stalled"; fi
}

chromium_row() { # FILE ROOM
    local f=$1 room=$2 ms
    zero_counters
    ip netns exec "$B" env HOME="$work/b" timeout "$TIMEOUT" node bench/chat-recv.mjs "$ORIGIN" "$room" "$TIMEOUT" \
        >"$work/chat-recv-$room.json" 2>"$work/chat-recv-$room.err" &
    local rp=$!
    for _ in $(seq 100); do grep -q joined "$work/chat-recv-$room.err" 2>/dev/null && break; sleep 0.1; done
    ip netns exec "$A" env HOME="$work" timeout "$TIMEOUT" node tests/nat/browser-chat.mjs "$ORIGIN" "$room" "$f" "$TIMEOUT" \
        >"$work/chromium-$room.json" 2>&1 || true
    wait "$rp" || true
    drop_share
    ms=$(jq -r 'select(.ok) | .ms' "$work/chat-recv-$room.json" 2>/dev/null | tail -1)
    if [ -n "$ms" ]; then mbps "$(stat -c %s "$f")" "$ms"; else echo "stalled"; fi
}

tcp_row() { # FILE
    local f=$1 dir
    dir=$(dirname "$f")
    ip netns exec "$A" python3 -m http.server 8099 --bind "$IPA" --directory "$dir" >/dev/null 2>&1 &
    local hp=$! i
    # Chromium may still be closing; wait for the server rather than guess.
    for i in $(seq 100); do ip netns exec "$B" curl -fsI -m 1 "http://$IPA:8099/" >/dev/null 2>&1 && break; sleep 0.1; done
    local s
    s=$(ip netns exec "$B" curl -s -o /dev/null -m "$TIMEOUT" -w '%{speed_download}' "http://$IPA:8099/$(basename "$f")" || echo 0)
    kill "$hp" 2>/dev/null || true
    awk -v s="$s" 'BEGIN { if (s > 0) printf "%.2f", s / 1e6; else print "stalled" }'
}

rows=()
for p in $LOSSES; do
    if [ "$p" = 0 ]; then mib=$MIB0
    elif [ -n "$MIBL" ]; then mib=$MIBL
    else mib=20; fi
    f="$work/file-$p/data.bin"
    mkdir -p "$(dirname "$f")"
    head -c $((mib * 1024 * 1024)) /dev/urandom >"$f"
    loss "$p"
    echo "loss $p% each way, $mib MiB" >&2
    c=$(cli_cell "$f" "cli-$p" "$BIN" send --json --server "$ORIGIN" --room @ROOM@ --timeout 60 "$f")
    echo "  CLI -> CLI          $c MB/s" >&2
    o=$(REDUNDANCY=off cli_cell "$f" "off-$p" "$BIN" send --json --server "$ORIGIN" --room @ROOM@ --timeout 60 --redundancy off "$f")
    echo "  CLI -> CLI, --redundancy off on both  $o MB/s" >&2
    b="not run"
    if [ "${CHROMIUM_PAIR:-1}" = 1 ]; then b=$(chromium_row "$f" "chrome-$p"); fi
    echo "  Chromium -> Chromium $b MB/s" >&2
    x=$(to_recv_row "$f" "x-$p" node tests/nat/browser-chat.mjs "$ORIGIN" "x-$p" "$f" "$TIMEOUT")
    echo "  Chromium -> CLI     $x MB/s" >&2
    t=$(tcp_row "$f");                      echo "  TCP                 $t MB/s" >&2
    rows+=("| $p% | $mib MiB | $c | $o | $b | $x | $t |")
done

out="bench/results/lossy-link-$(date -u +%F).md"
{
    echo "# Data channels on a lossy link ($(hostname), commit $(git rev-parse --short HEAD))"
    echo
    echo "One run of \`bench/lossy-link.sh\`: two namespaces, one veth, random loss on every packet each way (dropped on the way in), host candidates only. MB/s by the receiver's clock; CLI cells are the median (min-max) of ${RUNS:-3} transfers, the others one; \"stalled\" = not done within ${TIMEOUT} s."
    echo
    echo "| loss each way | file | CLI -> CLI | CLI -> CLI, \`--redundancy off\` | Chromium -> Chromium | Chromium -> CLI | TCP (curl) |"
    echo "| --- | --- | --- | --- | --- | --- | --- |"
    printf '%s\n' "${rows[@]}"
} >"$out"
cat "$out"
