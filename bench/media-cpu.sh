#!/usr/bin/env bash
# CPU cost of `switchboard play` and `switchboard record` on loopback,
# per stream: a SECS-long (default 20) 1280x720 30 fps VP8 file
# (1.5 Mbit/s, a keyframe every 2 s) and an Opus tone (48 kbit/s) made
# with ffmpeg, played into a room where RECEIVERS `record` processes
# (default 1) keep them. Three cases: video and audio together, video
# only, audio only; each RUNS times (default 3), the median printed.
#
# Each process's user+system CPU time is read from /proc/PID/stat every
# 0.2 s; the last reading before it ends counts (play leaves when the file
# ends; record is read just before its SIGINT, once play is gone). Besides
# the total (which includes joining, ICE and DTLS), the steady rate is the
# CPU used from 2 s after play started to its last reading, as a share of
# one core. BIN picks the binary (default target/release/switchboard).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/switchboard}
SECS=${SECS:-20}
RUNS=${RUNS:-3}
RECEIVERS=${RECEIVERS:-1}
CASES=${CASES:-"av video audio"}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
ffmpeg -loglevel error -y -f lavfi -i "testsrc=size=1280x720:rate=30:duration=$SECS" \
    -c:v libvpx -g 60 -b:v 1500k -deadline realtime -cpu-used 8 "$dir/hd.ivf"
ffmpeg -loglevel error -y -f lavfi -i "sine=frequency=440:duration=$SECS" -c:a libopus -b:a 48k "$dir/tone.ogg"
tick=$(getconf CLK_TCK)
# CPU seconds (user+system) of a live process, or nothing.
cpu() { awk -v t="$tick" '{printf "%.3f", ($14 + $15) / t}' "/proc/$1/stat" 2>/dev/null || true; }
now() { date +%s.%N; }

# One run: prints "play_total play_steady_pct record_total_per_proc record_steady_pct frames".
run_once() {
    local files=() port rec=() play p_last p_mark t_mark t_last r_mark r_end i c
    case $1 in
        av) files=("$dir/hd.ivf" "$dir/tone.ogg") ;;
        video) files=("$dir/hd.ivf") ;;
        audio) files=("$dir/tone.ogg") ;;
    esac
    port=$((20000 + RANDOM % 20000))
    "$BIN" serve --listen "127.0.0.1:$port" --turn-listen 127.0.0.1:0 >"$dir/serve.log" 2>&1 &
    local serve=$!
    sleep 1
    local common=(--server "http://127.0.0.1:$port" --room cpu --loopback --json)
    for ((i = 0; i < RECEIVERS; i++)); do
        "$BIN" record "${common[@]}" --out "$dir/rec-$i" >"$dir/record-$i.jsonl" 2>/dev/null &
        rec+=($!)
    done
    sleep 1
    "$BIN" play "${common[@]}" "${files[@]}" >"$dir/play.jsonl" 2>/dev/null &
    play=$!
    local start
    start=$(now)
    p_mark="" r_mark=0
    while c=$(cpu $play) && [ -n "$c" ]; do
        p_last=$c
        t_last=$(now)
        if [ -z "$p_mark" ] && awk -v a="$t_last" -v b="$start" 'BEGIN { exit !(a - b >= 2) }'; then
            p_mark=$c t_mark=$t_last
            for i in "${rec[@]}"; do r_mark=$(awk -v a="$r_mark" -v b="$(cpu "$i")" 'BEGIN { print a + b }'); done
        fi
        sleep 0.2
    done
    wait $play || true
    r_end=0
    for i in "${rec[@]}"; do r_end=$(awk -v a="$r_end" -v b="$(cpu "$i")" 'BEGIN { print a + b }'); done
    local t_end
    t_end=$(now)
    for i in "${rec[@]}"; do kill -INT "$i"; done
    for i in "${rec[@]}"; do wait "$i" || true; done
    kill $serve; wait $serve 2>/dev/null || true
    local frames
    frames=$(cat "$dir"/record-*.jsonl | grep '"done":true' |
        sed -n 's/.*"kind":"\([a-z]*\)".*"frames":\([0-9]*\).*/\1 \2/p' |
        awk '{ n[$1] += $2 } END { printf "%s/%s", n["video"] + 0, n["audio"] + 0 }')
    rm -rf "$dir"/rec-*
    awk -v pt="$p_last" -v pm="$p_mark" -v tm="$t_mark" -v tl="$t_last" -v re="$r_end" -v rm="$r_mark" \
        -v te="$t_end" -v n="$RECEIVERS" -v f="$frames" 'BEGIN {
        printf "%.3f %.2f %.3f %.2f %s\n", pt, 100 * (pt - pm) / (tl - tm), re / n, 100 * (re - rm) / n / (te - tm), f }'
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

echo "binary: $BIN; ${SECS} s files; $RECEIVERS receiver(s); $RUNS runs per case; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-6s %-12s %-10s %-16s %-12s %s\n' case "play CPU s" "play %" "record CPU s/proc" "record %" "recorded video frames/Opus packets (all receivers, each run)"
for c in $CASES; do
    : >"$dir/$c.txt"
    for ((r = 0; r < RUNS; r++)); do run_once "$c" >>"$dir/$c.txt"; done
    printf '%-6s %-12s %-10s %-16s %-12s %s\n' "$c" \
        "$(cut -d' ' -f1 "$dir/$c.txt" | median)" "$(cut -d' ' -f2 "$dir/$c.txt" | median)" \
        "$(cut -d' ' -f3 "$dir/$c.txt" | median)" "$(cut -d' ' -f4 "$dir/$c.txt" | median)" \
        "$(cut -d' ' -f5 "$dir/$c.txt" | paste -sd' ')"
    sed 's/^/    run: /' "$dir/$c.txt" >&2
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
