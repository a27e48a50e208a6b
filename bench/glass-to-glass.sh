#!/usr/bin/env bash
# Glass-to-glass delay from `switchboard play` to headless Chromium's /call
# page on loopback (method: bench/glass-to-glass.mjs and docs/benchmarks.md).
# Makes a SECS-long (default 23) 640x360 30 fps VP8 file whose frames carry
# their index as a barcode and an Opus tone, plays them RUNS times (default
# 3, each in a fresh server, browser and room: the delay depends on where
# the sends fall between the compositor's frames, which differs per run)
# and prints each run's figures. BIN picks the binary (default
# target/release/switchboard); JSON=FILE keeps every frame's figures in
# FILE.1, FILE.2, ...
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/switchboard}
SECS=${SECS:-23}
RUNS=${RUNS:-3}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
# Bit i of the frame number N, in columns 40 px wide from the left.
bit='bitand(floor(N/pow(2,floor(X/40))),1)'
ffmpeg -loglevel error -y -f lavfi \
    -i "testsrc=size=640x360:rate=30:duration=$SECS,format=yuv420p,geq=lum='if(lt(Y,120),16+219*$bit,if(lt(Y,240),235-219*$bit,lum(X,Y)))':cb='if(lt(Y,240),128,cb(X,Y))':cr='if(lt(Y,240),128,cr(X,Y))'" \
    -c:v libvpx -g 60 -b:v 1000k -deadline realtime -cpu-used 8 "$dir/barcode.ivf"
# An audio track too: without one, headless Chromium's <video> stops
# presenting a video-only remote stream after its first frames.
ffmpeg -loglevel error -y -f lavfi -i "sine=frequency=440:duration=$SECS" -c:a libopus -b:a 48k "$dir/tone.ogg"
for ((r = 1; r <= RUNS; r++)); do
    echo "run $r of $RUNS (load $(cut -d' ' -f1-3 /proc/loadavg))"
    SWITCHBOARD_BIN=$(realpath "$BIN") node bench/glass-to-glass.mjs --ivf "$dir/barcode.ivf" --ogg "$dir/tone.ogg" \
        ${JSON:+--json "$JSON.$r"} "$@"
done
