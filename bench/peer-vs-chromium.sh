#!/usr/bin/env bash
# Native peer vs Chromium, in one session on one machine:
#   - connection setup time, first createOffer -> data channel open, over
#     RUNS runs (median, p95), both sides in-process on loopback;
#   - throughput of one reliable ordered data channel, 64 KiB messages.
# Writes bench/results/peer-vs-chromium-DATE.md and prints it.
#
#   bench/peer-vs-chromium.sh [RUNS] [BYTES]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-20}
BYTES=${2:-1073741824}
BIN=target/release/switchboard
[ -x "$BIN" ] || cargo build --release -p switchboard
[ -d tests/e2e/node_modules/playwright-core ] || (cd tests/e2e && npm ci --no-audit --no-fund)
export SWITCHBOARD_BIN="$PWD/$BIN"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "native: switchboard bench peer --runs $RUNS --bytes $BYTES" >&2
"$BIN" bench peer --runs "$RUNS" --bytes "$BYTES" --json > "$tmp/native.json"
echo "chromium: node bench/chromium-peer.mjs --runs $RUNS --bytes $BYTES --no-serve" >&2
node bench/chromium-peer.mjs --runs "$RUNS" --bytes "$BYTES" --no-serve --json > "$tmp/chromium.json"

out="bench/results/peer-vs-chromium-$(date -u +%F).md"
python3 - "$tmp/native.json" "$tmp/chromium.json" "$RUNS" "$BYTES" > "$out" <<'PY'
import json, sys, subprocess, platform
n = json.load(open(sys.argv[1]))
c = json.load(open(sys.argv[2]))
runs, size = sys.argv[3], int(sys.argv[4])
# The Chromium script nests its in-page figures; accept both shapes.
cp = c.get("in_page", c)
cs = cp["setup_ms"]; ct = cp["throughput_mb_s"]
ns = n["setup_ms"]; nt = n["throughput_mb_s"]
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
print(f"# Native peer vs Chromium ({platform.node()}, commit {commit})\n")
print(f"One run of `bench/peer-vs-chromium.sh {runs} {size}`; both sides in one process each, loopback, host candidates only.")
print(f"Chromium: {c.get('chromium_version', '?')}.\n")
print("| figure | switchboard (str0m) | Chromium | ratio (switchboard / Chromium) |")
print("| --- | --- | --- | --- |")
print(f"| setup median, ms | {ns['median']:.1f} | {cs['median']:.1f} | {ns['median']/cs['median']:.2f} |")
print(f"| setup p95, ms | {ns['p95']:.1f} | {cs['p95']:.1f} | {ns['p95']/cs['p95']:.2f} |")
print(f"| throughput, MB/s ({size >> 20} MiB in 64 KiB messages) | {nt:.1f} | {ct:.1f} | {nt/ct:.2f} |")
PY
cat "$out"
