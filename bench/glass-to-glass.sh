#!/usr/bin/env bash
# Glass-to-glass delay from `switchboard play` to headless Chromium's /call
# page on loopback (method: bench/glass-to-glass.mjs and docs/benchmarks.md).
# Makes a SECS-long (default 23) 640x360 30 fps VP8 file whose frames carry
# their index as a barcode, plays it once, and prints the delay figures.
# BIN picks the binary (default target/release/switchboard); JSON=FILE
# keeps every frame's figures.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/switchboard}
SECS=${SECS:-23}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
# Bit i of the frame number N, in columns 40 px wide from the left.
bit='bitand(floor(N/pow(2,floor(X/40))),1)'
ffmpeg -loglevel error -y -f lavfi \
    -i "testsrc=size=640x360:rate=30:duration=$SECS,format=yuv420p,geq=lum='if(lt(Y,120),16+219*$bit,if(lt(Y,240),235-219*$bit,lum(X,Y)))':cb='if(lt(Y,240),128,cb(X,Y))':cr='if(lt(Y,240),128,cr(X,Y))'" \
    -c:v libvpx -g 60 -b:v 1000k -deadline realtime -cpu-used 8 "$dir/barcode.ivf"
SWITCHBOARD_BIN=$(realpath "$BIN") node bench/glass-to-glass.mjs --ivf "$dir/barcode.ivf" \
    ${JSON:+--json "$JSON"} "$@"
