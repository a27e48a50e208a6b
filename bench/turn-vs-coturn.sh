#!/usr/bin/env bash
# Relayed TURN traffic, switchboard vs coturn vs a bare UDP forwarder, on
# this machine's loopback.
#
# Starts coturn's turnserver and `switchboard serve` (release build) on
# 127.0.0.1, then drives both with the same `switchboard bench turn` loads:
#   - throughput: closed loop (at most --window packets in flight per
#     allocation), the relayed round trips/s each server sustains;
#   - latency: the same fixed total packet rate ($RATE/s) for both servers;
#   - memory: RSS with 0 and with $HOLD_ALLOCS idle allocations.
# The throughput runs over UDP also drive `switchboard bench udp-forward`,
# a forwarder with the relay's I/O and no TURN logic (one thread, one
# outbound socket per flow as TURN has per allocation): the floor under
# the relay's CPU per packet.
# For each run the bench samples the server's CPU time (utime+stime from
# /proc/PID/stat, all threads) at the edges of its measured interval, and
# the server's RSS (--server-pid). Prints Markdown tables and writes them
# to bench/results/turn-vs-coturn-<date>.md. Takes about 4.5 minutes.
#
# Every run is repeated $REPEAT times, alternating servers, and the tables
# show the median of the repeats (shared VMs are noisy); every single run
# is listed at the end of the results file with the CPU steal time seen
# during it.
#
# Knobs (environment): DURATION (s, throughput runs), LAT_DURATION (s),
# WARMUP (s), REPEAT, RATE (total round trips/s in latency runs), SIZES,
# ALLOCS, TRANSPORTS ("udp tcp"), WINDOW, HOLD_ALLOCS, HOLD_SECS, PIN (1:
# server on CPU 0, load generator on CPU 1), SKIP_BUILD=1, BIN (the
# switchboard binary; default target/release/switchboard), SERVE_BIN (the
# one whose `serve` is measured, default BIN: an older build against the
# same load generator), RESULTS_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-2}
LAT_DURATION=${LAT_DURATION:-2}
WARMUP=${WARMUP:-0.5}
REPEAT=${REPEAT:-3}
RATE=${RATE:-10000}
SIZES=${SIZES:-"120 1200"}
ALLOCS=${ALLOCS:-"1 64"}
TRANSPORTS=${TRANSPORTS:-"udp tcp"}
HOLD_ALLOCS=${HOLD_ALLOCS:-1000}
HOLD_SECS=${HOLD_SECS:-4}
PIN=${PIN:-1}
WINDOW=${WINDOW:-16}

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        die "need root to run: $*"
    fi
}

if ! command -v turnserver >/dev/null; then
    log "installing coturn (Debian package)"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends coturn
fi
TURNSERVER=$(command -v turnserver)

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "building switchboard (release)"
    cargo build --release -p switchboard >&2
fi
BIN=${BIN:-$PWD/target/release/switchboard}
[ -x "$BIN" ] || die "$BIN is missing"
SERVE_BIN=${SERVE_BIN:-$BIN}

# Many sockets: 2 per allocation in the bench, 1-2 per allocation in servers.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

CPUS=$(nproc)
PIN_SERVER=() PIN_BENCH=()
if [ "$PIN" = 1 ] && [ "$CPUS" -ge 2 ] && command -v taskset >/dev/null; then
    PIN_SERVER=(taskset -c 0) PIN_BENCH=(taskset -c 1)
fi

tmp=$(mktemp -d)
SB_PID= CT_PID= BENCH_PID= FW_PID=
cleanup() {
    for p in $BENCH_PID $SB_PID $CT_PID $FW_PID; do kill "$p" 2>/dev/null || true; done
    for p in $BENCH_PID $SB_PID $CT_PID $FW_PID; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

# RSS of a process in KiB; 0 once it is gone.
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# median FORMAT VALUES...: median of the numeric values ("-" if none).
median() {
    local fmt=$1; shift
    printf '%s\n' "$@" | awk '/^[-+]?[0-9.]+([eE][-+]?[0-9]+)?$/' | sort -g |
        awk -v f="$fmt" '{ a[NR] = $1 } END {
            if (NR == 0) { print "-"; exit }
            m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
            printf f "\n", m }'
}
# jget KEY JSON: a number from the bench's flat JSON line.
jget() { sed -n "s/.*\"$1\":\([-0-9.eE+]*\).*/\1/p" <<<"$2"; }
calc() { awk "BEGIN { printf \"$1\", $2 }"; }
# ratio A B: A/B with two decimals, "-" when either is missing or B is 0.
ratio() {
    if [[ -z "$1" || -z "$2" || "$1" == - || "$2" == - ]]; then echo -; return; fi
    awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2f", a / b }'
}

port_busy() { ss -Hlnut | awk '{print $5}' | grep -q ":$1\$"; }
free_port() {
    local p
    for _ in $(seq 200); do
        p=$(shuf -i 20000-29999 -n 1)
        port_busy "$p" || { echo "$p"; return 0; }
    done
    die "no free port found"
}

# Beyond the flags that make loopback relaying possible (--allow-peer,
# --relay-bandwidth 0), the quotas are raised for the $HOLD_ALLOCS-allocation
# memory run, and so is the unauthenticated-request rate: every allocation
# starts with one unauthenticated Allocate (answered 401), and switchboard
# paces those at 20/s per source IP by default (reflector protection; the
# relayed traffic is not affected).
start_switchboard() {
    RUST_LOG=warn "${PIN_SERVER[@]}" "$SERVE_BIN" serve \
        --listen 127.0.0.1:0 --turn-listen 127.0.0.1:0 --external-ip 127.0.0.1 \
        --allow-peer 127.0.0.0/8 --turn-user bench:pw --relay-bandwidth 0 \
        --max-allocations 100000 --max-allocations-per-user 100000 --turn-unauth-rate 1000 \
        >"$tmp/sb.out" 2>"$tmp/sb.err" &
    SB_PID=$!
    for _ in $(seq 200); do
        SB_ADDR=$(sed -n 's/^switchboard TURN on udp+tcp //p' "$tmp/sb.out")
        [ -n "$SB_ADDR" ] && return 0
        kill -0 "$SB_PID" 2>/dev/null || break
        sleep 0.05
    done
    cat "$tmp/sb.err" >&2
    die "switchboard serve did not start"
}

start_coturn() {
    local port lo hi
    port=$(free_port)
    lo=$(( (port / 1000) * 1000 + 30000 ))   # 50000-59999 block, away from the listener
    hi=$(( lo + 999 + HOLD_ALLOCS > 65535 ? 65535 : lo + 999 + HOLD_ALLOCS ))
    "${PIN_SERVER[@]}" "$TURNSERVER" -n \
        --listening-ip=127.0.0.1 --listening-port="$port" --relay-ip=127.0.0.1 \
        --min-port="$lo" --max-port="$hi" \
        --lt-cred-mech --user=bench:pw --realm=bench --allow-loopback-peers \
        --no-cli --no-tls --no-dtls --log-file=stdout --simple-log \
        --pidfile="$tmp/turnserver.pid" --userdb="$tmp/turndb" \
        >"$tmp/ct.out" 2>&1 &
    CT_PID=$!
    for _ in $(seq 200); do
        if port_busy "$port"; then CT_ADDR=127.0.0.1:$port; sleep 0.2; return 0; fi
        kill -0 "$CT_PID" 2>/dev/null || break
        sleep 0.05
    done
    tail -20 "$tmp/ct.out" >&2
    die "turnserver did not start"
}

start_forwarder() {
    local port
    port=$(free_port)
    FW_ECHO=127.0.0.1:$(free_port)
    "${PIN_SERVER[@]}" "$BIN" bench udp-forward --listen "127.0.0.1:$port" --to "$FW_ECHO" \
        >"$tmp/fw.out" 2>&1 &
    FW_PID=$!
    for _ in $(seq 200); do
        if grep -q '^forwarding' "$tmp/fw.out"; then FW_ADDR=127.0.0.1:$port; return 0; fi
        kill -0 "$FW_PID" 2>/dev/null || break
        sleep 0.05
    done
    cat "$tmp/fw.out" >&2
    die "the forwarder did not start"
}

# run_forward FLOWS SIZE: the closed-loop load through the bare forwarder;
# sets R_OK R_PPS R_LOSS R_CPUPKT like run_bench.
run_forward() {
    local n=$1 size=$2 json
    R_OK=0 R_PPS=- R_LOSS=- R_CPUPKT=- R_P50=- R_P99=- R_CPU=- R_RSS=-
    if ! "${PIN_BENCH[@]}" "$BIN" bench udp-forward --server "$FW_ADDR" --echo "$FW_ECHO" \
        --flows "$n" --size "$size" --window "$WINDOW" --duration "$DURATION" --warmup "$WARMUP" \
        --server-pid "$FW_PID" >"$tmp/f.out" 2>"$tmp/f.err"; then
        log "forwarder bench failed: $(tail -2 "$tmp/f.err" | tr '\n' ' ')"
        return 0
    fi
    json=$(tail -1 "$tmp/f.out")
    R_OK=1
    R_PPS=$(jget pps "$json") R_LOSS=$(jget loss "$json") R_CPUPKT=$(jget server_cpu_us_per_rt "$json")
    R_P50=$(jget p50_us "$json") R_P99=$(jget p99_us "$json")
    log "$(printf '%-11s udp %3s flows %4s B tput: %8s rt/s loss %-8s %5s us/rt' \
        forwarder "$n" "$size" "$R_PPS" "$R_LOSS" "$R_CPUPKT")"
    ALL_ROWS+=("| forwarder | udp | $n | $size | tput | $R_PPS | $R_LOSS | $R_P50 | $R_P99 | - | $R_CPUPKT | - | - | - |")
}

# run_bench PID ADDR TRANSPORT ALLOCS SIZE MODE(tput|lat)
# Sets R_OK R_PPS R_LOSS R_P50 R_P99 R_CPU (server, % of one core) R_CPUPKT
# (µs of server CPU per relayed round trip) R_RSS (server MiB at the end of
# the interval) R_BCPU (the load generator's own CPU, % of one core)
# R_STEAL (% of all CPU time stolen by the hypervisor). The bench samples
# /proc itself at the edges of its measured interval (--server-pid).
run_bench() {
    local pid=$1 addr=$2 transport=$3 n=$4 size=$5 mode=$6 dur
    local args=(bench turn --server "$addr" --user bench --password pw --server-pid "$pid"
        --allocations "$n" --size "$size" --warmup "$WARMUP")
    [ "$transport" = tcp ] && args+=(--tcp)
    if [ "$mode" = lat ]; then
        dur=$LAT_DURATION
        args+=(--rate "$(calc %.3f "$RATE / $n")" --window 64)
    else
        dur=$DURATION
        args+=(--window "$WINDOW")
    fi
    args+=(--duration "$dur")
    R_OK=0 R_PPS=- R_LOSS=- R_P50=- R_P99=- R_CPU=- R_CPUPKT=- R_RSS=- R_STEAL=- R_BCPU=-
    if ! "${PIN_BENCH[@]}" "$BIN" "${args[@]}" >"$tmp/b.out" 2>"$tmp/b.err"; then
        log "bench failed: $(tail -2 "$tmp/b.err" | tr '\n' ' ')"
        return 0
    fi
    local json
    json=$(tail -1 "$tmp/b.out")
    R_OK=1
    R_PPS=$(jget pps "$json") R_LOSS=$(jget loss "$json")
    R_P50=$(jget p50_us "$json") R_P99=$(jget p99_us "$json")
    R_CPU=$(jget server_cpu_pct "$json") R_CPUPKT=$(jget server_cpu_us_per_rt "$json")
    R_RSS=$(calc %.1f "$(jget server_rss_kib "$json") / 1024")
    R_BCPU=$(jget bench_cpu_pct "$json") R_STEAL=$(jget steal_pct "$json")
    log "$(printf '%-11s %s %3s alloc %4s B %-4s: %8s rt/s loss %-8s p50 %7s us p99 %8s us CPU %5s%% %5s us/rt RSS %s MiB bench CPU %s%% steal %s%%' \
        "$CUR" "$transport" "$n" "$size" "$mode" "$R_PPS" "$R_LOSS" "$R_P50" "$R_P99" "$R_CPU" "$R_CPUPKT" "$R_RSS" "$R_BCPU" "$R_STEAL")"
    ALL_ROWS+=("| $CUR | $transport | $n | $size | $mode | $R_PPS | $R_LOSS | $R_P50 | $R_P99 | $R_CPU | $R_CPUPKT | $R_RSS | $R_BCPU | $R_STEAL |")
}

# hold PID ADDR -> HOLD_RSS_KIB: server RSS while $HOLD_ALLOCS idle
# allocations exist.
hold() {
    local pid=$1 addr=$2 json
    HOLD_RSS_KIB=-
    if "${PIN_BENCH[@]}" "$BIN" bench turn --server "$addr" --user bench --password pw \
        --allocations "$HOLD_ALLOCS" --hold "$HOLD_SECS" --server-pid "$pid" >"$tmp/h.out" 2>"$tmp/h.err"; then
        json=$(tail -1 "$tmp/h.out")
        HOLD_RSS_KIB=$(jget server_rss_kib "$json")
        [ -n "$HOLD_RSS_KIB" ] || HOLD_RSS_KIB=-
    else
        log "hold failed: $(tail -2 "$tmp/h.err" | tr '\n' ' ')"
    fi
}

log "starting servers"
start_switchboard
start_coturn
start_forwarder
sleep 1
log "switchboard TURN on $SB_ADDR (pid $SB_PID), coturn on $CT_ADDR (pid $CT_PID)"

# Memory per allocation first, on fresh processes.
log "memory: RSS with 0 and $HOLD_ALLOCS idle allocations"
SB_RSS0=$(rss_kib "$SB_PID"); CUR=switchboard hold "$SB_PID" "$SB_ADDR"; SB_RSSN=$HOLD_RSS_KIB
CT_RSS0=$(rss_kib "$CT_PID"); CUR=coturn hold "$CT_PID" "$CT_ADDR"; CT_RSSN=$HOLD_RSS_KIB
per_alloc() {
    if [ "$2" = - ]; then echo -; else calc %.2f "($2 - $1) / $HOLD_ALLOCS"; fi
}
SB_PER=$(per_alloc "$SB_RSS0" "$SB_RSSN")
CT_PER=$(per_alloc "$CT_RSS0" "$CT_RSSN")
log "switchboard $SB_RSS0 -> $SB_RSSN KiB ($SB_PER KiB/alloc), coturn $CT_RSS0 -> $CT_RSSN KiB ($CT_PER KiB/alloc)"

TPUT_ROWS=() LAT_ROWS=() ALL_ROWS=() FW_ROWS=() FAILED=0
for transport in $TRANSPORTS; do
    for n in $ALLOCS; do
        for size in $SIZES; do
            declare -A r=()
            for rep in $(seq "$REPEAT"); do
                for mode in tput lat; do
                    for srv in sb ct; do
                        if [ $srv = sb ]; then CUR=switchboard; pid=$SB_PID addr=$SB_ADDR
                        else CUR=coturn; pid=$CT_PID addr=$CT_ADDR; fi
                        run_bench "$pid" "$addr" "$transport" "$n" "$size" "$mode"
                        [ "$R_OK" = 1 ] || FAILED=$((FAILED + 1))
                        for k in PPS LOSS P50 P99 CPU CPUPKT RSS; do
                            v=R_$k; r[$mode.$srv.$k]="${r[$mode.$srv.$k]:-} ${!v}"
                        done
                    done
                done
                if [ "$transport" = udp ]; then
                    run_forward "$n" "$size"
                    [ "$R_OK" = 1 ] || FAILED=$((FAILED + 1))
                    for k in PPS LOSS CPUPKT; do
                        v=R_$k; r[tput.fw.$k]="${r[tput.fw.$k]:-} ${!v}"
                    done
                fi
            done
            # Medians over the repeats.
            declare -A m=()
            for key in "${!r[@]}"; do
                case $key in
                    *.PPS) f=%.0f ;; *.LOSS) f=%.5f ;; *.CPU) f=%.0f ;; *) f=%.1f ;;
                esac
                # shellcheck disable=SC2086
                m[$key]=$(median "$f" ${r[$key]})
            done
            TPUT_ROWS+=("| $transport | $n | $size | ${m[tput.sb.PPS]} | ${m[tput.ct.PPS]} | **$(ratio "${m[tput.sb.PPS]}" "${m[tput.ct.PPS]}")** | ${m[tput.sb.CPU]} | ${m[tput.ct.CPU]} | ${m[tput.sb.CPUPKT]} | ${m[tput.ct.CPUPKT]} | **$(ratio "${m[tput.sb.CPUPKT]}" "${m[tput.ct.CPUPKT]}")** | ${m[tput.sb.LOSS]} | ${m[tput.ct.LOSS]} | ${m[tput.sb.RSS]} | ${m[tput.ct.RSS]} |")
            if [ "$transport" = udp ]; then
                # Datagrams per CPU-second relative to the forwarder's: the
                # inverse ratio of CPU per round trip.
                FW_ROWS+=("| $n | $size | ${m[tput.sb.PPS]} | ${m[tput.ct.PPS]} | ${m[tput.fw.PPS]} | ${m[tput.sb.CPUPKT]} | ${m[tput.ct.CPUPKT]} | ${m[tput.fw.CPUPKT]} | **$(ratio "${m[tput.fw.CPUPKT]}" "${m[tput.sb.CPUPKT]}")** | $(ratio "${m[tput.fw.CPUPKT]}" "${m[tput.ct.CPUPKT]}") | ${m[tput.fw.LOSS]} |")
            fi
            LAT_ROWS+=("| $transport | $n | $size | ${m[lat.sb.PPS]} | ${m[lat.ct.PPS]} | ${m[lat.sb.P50]} | ${m[lat.ct.P50]} | **$(ratio "${m[lat.sb.P50]}" "${m[lat.ct.P50]}")** | ${m[lat.sb.P99]} | ${m[lat.ct.P99]} | **$(ratio "${m[lat.sb.P99]}" "${m[lat.ct.P99]}")** | ${m[lat.sb.CPUPKT]} | ${m[lat.ct.CPUPKT]} | **$(ratio "${m[lat.sb.CPUPKT]}" "${m[lat.ct.CPUPKT]}")** | ${m[lat.sb.LOSS]} | ${m[lat.ct.LOSS]} |")
            unset r m
        done
    done
done

DATE=$(date +%Y-%m-%d)
CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
MEM_GIB=$(awk '/^MemTotal:/ {printf "%.1f", $2 / 1048576}' /proc/meminfo)
REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
COTURN_VER=$("$TURNSERVER" --version 2>/dev/null | head -1 || true)
PINNING="none"
[ ${#PIN_SERVER[@]} -gt 0 ] && PINNING="server on CPU 0, load generator and echo peers on CPU 1 (taskset)"

RESULTS_DIR=${RESULTS_DIR:-bench/results}
mkdir -p "$RESULTS_DIR"
OUT=$RESULTS_DIR/turn-vs-coturn-$DATE.md
{
    echo "## TURN relay: switchboard vs coturn ($DATE)"
    echo
    echo "- machine: $CPUS CPUs ($CPU_MODEL), ${MEM_GIB} GiB RAM, Linux $(uname -r)"
    echo "- switchboard $REV (release build), coturn ${COTURN_VER:-?} (\`turnserver\` from Debian, default threads)"
    echo "- pinning: $PINNING"
    echo "- all traffic on 127.0.0.1; client transport as listed, relayed transport UDP; one echo peer per allocation"
    echo "- throughput: closed loop, window $WINDOW packets per allocation, ${DURATION} s measured after ${WARMUP} s warm-up"
    echo "- latency: fixed total rate $RATE round trips/s spread over the allocations, window 64, ${LAT_DURATION} s measured"
    echo "- each cell: median of $REPEAT runs, servers alternating; every run is listed under \"All runs\""
    echo "- rt = relayed round trip: client -> relay -> peer -> relay -> client (two relayed datagrams)"
    echo "- CPU: server utime+stime (all threads) over the measured interval, sampled by the bench; % of one core; µs per rt = CPU time / round trips echoed in the interval"
    echo
    echo "### Throughput (closed loop)"
    echo
    echo "| client | allocs | payload B | switchboard rt/s | coturn rt/s | rt/s ratio | sb CPU % | coturn CPU % | sb CPU µs/rt | coturn CPU µs/rt | CPU/rt ratio | sb loss | coturn loss | sb RSS MiB | coturn RSS MiB |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${TPUT_ROWS[@]}"
    echo
    if [ ${#FW_ROWS[@]} -gt 0 ]; then
        echo "### Against the bare forwarder (UDP, closed loop)"
        echo
        echo "\`switchboard bench udp-forward\`: the relay's I/O (batched receive, sendmmsg), one thread, one outbound socket per flow, no TURN logic. Its CPU per round trip is the floor; \"share\" is the relay's datagrams per CPU-second as a fraction of the forwarder's (forwarder CPU/rt ÷ relay CPU/rt)."
        echo
        echo "| allocs (flows) | payload B | sb rt/s | coturn rt/s | forwarder rt/s | sb CPU µs/rt | coturn CPU µs/rt | forwarder CPU µs/rt | sb share of forwarder | coturn share | forwarder loss |"
        echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        printf '%s\n' "${FW_ROWS[@]}"
        echo
    fi
    echo "### Latency at equal load ($RATE rt/s total)"
    echo
    echo "| client | allocs | payload B | sb rt/s | coturn rt/s | sb p50 µs | coturn p50 µs | p50 ratio | sb p99 µs | coturn p99 µs | p99 ratio | sb CPU µs/rt | coturn CPU µs/rt | CPU/rt ratio | sb loss | coturn loss |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${LAT_ROWS[@]}"
    echo
    echo "### Memory per allocation ($HOLD_ALLOCS idle allocations, each with a permission and a channel)"
    echo
    echo "| server | RSS idle KiB | RSS with $HOLD_ALLOCS allocations KiB | KiB per allocation |"
    echo "|---|---:|---:|---:|"
    echo "| switchboard | $SB_RSS0 | $SB_RSSN | $SB_PER |"
    echo "| coturn | $CT_RSS0 | $CT_RSSN | $CT_PER |"
    echo
    echo "Ratios are switchboard / coturn: above 1 is better for rt/s, below 1 is better for latency and CPU."
    echo
    echo "### All runs"
    echo
    echo "| server | client | allocs | payload B | mode | rt/s | loss | p50 µs | p99 µs | server CPU % | server CPU µs/rt | server RSS MiB | bench CPU % | steal % |"
    echo "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${ALL_ROWS[@]}"
} >"$OUT"
cat "$OUT"
log "written to $OUT"
if [ "$FAILED" -gt 0 ]; then
    log "$FAILED runs failed (marked -)"
    exit 1
fi
