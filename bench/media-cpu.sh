#!/usr/bin/env bash
# CPU cost of `switchboard play` and `switchboard record`, one peer each,
# on loopback: a 20 s 1280x720 VP8 file (1.5 Mbit/s) and a 20 s Opus tone
# (48 kbit/s) made with ffmpeg, played into a room where `record` keeps
# them. Prints each process's user+system CPU seconds over the run, read
# from /proc/PID/stat just before it ends. BIN picks the binary (default
# target/release/switchboard).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/switchboard}
SECS=${SECS:-20}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
ffmpeg -loglevel error -y -f lavfi -i "testsrc=size=1280x720:rate=30:duration=$SECS" \
    -c:v libvpx -g 60 -b:v 1500k -deadline realtime -cpu-used 8 "$dir/hd.ivf"
ffmpeg -loglevel error -y -f lavfi -i "sine=frequency=440:duration=$SECS" -c:a libopus -b:a 48k "$dir/tone.ogg"
port=$((20000 + RANDOM % 20000))
"$BIN" serve --listen "127.0.0.1:$port" --turn-listen 127.0.0.1:0 >"$dir/serve.log" 2>&1 &
sleep 1
common=(--server "http://127.0.0.1:$port" --room cpu --loopback --json)
"$BIN" record "${common[@]}" --out "$dir/rec" >"$dir/record.jsonl" 2>/dev/null &
rec=$!
sleep 1
"$BIN" play "${common[@]}" "$dir/hd.ivf" "$dir/tone.ogg" >"$dir/play.jsonl" 2>/dev/null &
play=$!
tick=$(getconf CLK_TCK)
cpu() { awk -v t="$tick" '{printf "%.2f", ($14 + $15) / t}' "/proc/$1/stat"; }
# play leaves when its files end; sample it just before.
sleep $((SECS - 1))
p=$(cpu $play 2>/dev/null || echo "?")
wait $play || true
r=$(cpu $rec)
kill -INT $rec; wait $rec || true
grep "\"stats\"" "$dir/record.jsonl" | tail -2 >&2
frames=$(grep '"done":true' "$dir/record.jsonl" | grep -o '"frames":[0-9]*' | tr '\n' ' ')
echo "play:   ${p} s CPU for ${SECS} s of 720p VP8 + Opus to one peer"
echo "record: ${r} s CPU for the same, written to IVF + Ogg ($frames)"
