#!/usr/bin/env bash
# NAT traversal lab: builds a closed network of Linux network
# namespaces with NAT routers, runs `switchboard serve` on its "internet",
# checks that the NATs behave as designed (self-test), then runs
# `switchboard send`/`recv` across them and prints a results table.
#
#   tests/nat/lab.sh                 self-test + the whole matrix
#   tests/nat/lab.sh SCENARIO...     self-test + only these scenarios
#   tests/nat/lab.sh --self-test     build the lab and self-test it only
#   tests/nat/lab.sh --hold          build and self-test, then keep the lab up
#                                    (for debugging by hand) until interrupted
#   tests/nat/lab.sh --write-doc     the matrix, then write docs/nat-matrix.md
#   tests/nat/lab.sh --list          the scenarios
#
# Needs root. Exit status: 0 all passed, 1 a scenario failed, 2 bad usage,
# 3 the lab itself is broken (kernel lacks a feature, self-test failed).
#
# Environment:
#   SWITCHBOARD_BIN     binary under test (default target/debug/switchboard)
#   LAB_FILE_MB         file size for the transfer scenarios (default 4)
#   LAB_EIM_RUNS        how many transfers eim-eim runs; every one must go direct (default 10)
#   LAB_EIM_FILE_MB     file size for each eim-eim transfer (default 16)
#   LAB_CHANGE_FILE_MB  file size for the network-change scenario (default 16)
#   LAB_CHANGE_RATE     sender uplink in the network-change scenario (tc tbf rate, default 16mbit)
#   LAB_LOSS_PCT        random loss each way at r1 in the lossy scenario (default 2)
#   LAB_LOSS_FILE_MB    file size for the lossy scenario (default 5)
#   LAB_CLI_TIMEOUT     the CLI's --timeout in the transfer scenarios (default 20)
#   LAB_FAIL_TIMEOUT    the CLI's --timeout in the no-turn scenario (default 10)
#   LAB_OUTER_TIMEOUT   hard limit per CLI process, seconds (default 180)
#   LAB_ARTIFACTS       where logs go (default target/nat-lab)
#   LAB_CLI_LOG         RUST_LOG for the CLI processes (stderr is kept; default info)
#   LAB_BIN_COMMIT      commit the binary was built from, for --write-doc (default: this tree's HEAD)
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
cd "$REPO"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'nat lab: %s\n' "$*" >&2; exit 3; }
now_ms() { date +%s%3N; }

# shellcheck source=lib/net.sh
. "$HERE/lib/net.sh"
# shellcheck source=lib/selftest.sh
. "$HERE/lib/selftest.sh"
# shellcheck source=lib/scenarios.sh
. "$HERE/lib/scenarios.sh"

LAB_FILE_MB=${LAB_FILE_MB:-4}
LAB_EIM_RUNS=${LAB_EIM_RUNS:-10}
LAB_EIM_FILE_MB=${LAB_EIM_FILE_MB:-16}
LAB_CHANGE_FILE_MB=${LAB_CHANGE_FILE_MB:-16}
LAB_CHANGE_RATE=${LAB_CHANGE_RATE:-16mbit}
LAB_LOSS_PCT=${LAB_LOSS_PCT:-2}
LAB_LOSS_FILE_MB=${LAB_LOSS_FILE_MB:-5}
CLI_TIMEOUT=${LAB_CLI_TIMEOUT:-20}
LAB_FAIL_TIMEOUT=${LAB_FAIL_TIMEOUT:-10}
LAB_OUTER_TIMEOUT=${LAB_OUTER_TIMEOUT:-180}
LAB_ARTIFACTS=${LAB_ARTIFACTS:-$REPO/target/nat-lab}

usage() { sed -n '2,/^set -E/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

MODE=matrix WRITE_DOC=0 SELECTED=()
while [ $# -gt 0 ]; do
    case $1 in
        --self-test) MODE=selftest ;;
        --hold) MODE=hold ;;
        --write-doc) WRITE_DOC=1 ;;
        --list)
            for s in $SCENARIOS_DEFAULT $SCENARIOS_EXTRA; do printf '%-11s %s\n' "$s" "$(scenario_title "$s")"; done
            exit 0 ;;
        -h|--help) usage; exit 0 ;;
        -*) usage >&2; exit 2 ;;
        *)
            case " $SCENARIOS_DEFAULT $SCENARIOS_EXTRA " in
                *" $1 "*) SELECTED+=("$1") ;;
                *) echo "unknown scenario $1 (see --list)" >&2; exit 2 ;;
            esac ;;
    esac
    shift
done
# shellcheck disable=SC2206
[ ${#SELECTED[@]} -gt 0 ] || SELECTED=($SCENARIOS_DEFAULT)

BIN_SRC=${SWITCHBOARD_BIN:-target/debug/switchboard}
[ -x "$BIN_SRC" ] || die "switchboard binary not found at $BIN_SRC: run 'cargo build -p switchboard' or set SWITCHBOARD_BIN"

WORK="$LAB_ARTIFACTS/run-$(date +%Y%m%d-%H%M%S)-$$"
mkdir -p "$WORK"
# A private copy, so a rebuild of the shared target dir mid-run changes nothing.
LAB_BIN="$WORK/switchboard"
cp "$BIN_SRC" "$LAB_BIN"

cleanup() {
    local rc=$?
    trap - EXIT INT TERM ERR
    set +e
    if [ -n "${SCEN_PID:-}" ]; then
        kill -TERM "$SCEN_PID" 2>/dev/null
        wait "$SCEN_PID" 2>/dev/null
    fi
    if [ ${#LAB_NS[@]} -gt 0 ]; then
        log "tearing down the lab (${#LAB_NS[@]} namespaces)"
        teardown_lab
    fi
    # Received files were checked by hash; keep the logs, not megabytes.
    rm -f "$LAB_BIN" "$WORK"/data-*.bin
    find "$WORK" -path '*/out/*' -type f -delete 2>/dev/null
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'log "error at ${BASH_SOURCE[0]}:$LINENO: $BASH_COMMAND"' ERR

preflight
ROOT_LINKS_BEFORE=$(ip -o link show | wc -l)

log "building the lab ($LAB_PREFIX-*)"
build_lab

# The servers on the "internet":
#  main: signaling + STUN/TURN, relay address = its lab-public address. The
#    relay may send to 198.18.0.0/15 (RFC 2544 benchmarking range, refused by
#    default): that range is this lab's internet, including its own address,
#    which two relay candidates of the same server need.
#  stun2: a second STUN server on another address, for the mapping self-test.
#  noturn: signaling only.
start_serve() { # NAME IP ARGS...
    local name=$1 ip=$2; shift 2
    local pid
    spawn_in srv pid env RUST_LOG=info "$LAB_BIN" serve --listen "$ip:8080" "$@" \
        >"$WORK/serve-$name.log" 2>&1
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || die "serve $name exited at start: $(tail -n 5 "$WORK/serve-$name.log")"
        tcp_open srv "$ip" 8080 && return 0
        sleep 0.1
    done
    die "serve $name did not listen on $ip:8080 within 10 s"
}
start_serve main "$SRV_IP" --turn-listen "$SRV_IP:3478" --external-ip "$SRV_IP" --allow-peer "$INET_NET"
start_serve stun2 "$SRV2_IP" --turn-listen "$SRV2_IP:3478" --external-ip "$SRV2_IP" --allow-peer "$INET_NET"
start_serve noturn "$NOTURN_IP" --no-turn
for ip in "$SRV_IP" "$SRV2_IP"; do
    ok=0
    for ((i = 0; i < 50; i++)); do
        [ -n "$(stun_mapped srv "$ip")" ] && { ok=1; break; }
        sleep 0.1
    done
    [ $ok = 1 ] || die "serve on $ip answers no STUN on 3478"
done

if ! selftest 2>&1 | tee "$WORK/selftest.txt"; then
    die "lab self-test failed: the lab is broken, so no scenario was run (logs in $WORK)"
fi
grep -q FAIL "$WORK/selftest.txt" && die "lab self-test failed: the lab is broken, so no scenario was run (logs in $WORK)"
[ "$MODE" = selftest ] && { log "self-test only: done"; exit 0; }
if [ "$MODE" = hold ]; then
    # For debugging by hand: the lab stays up until this script is stopped.
    log "lab is up: namespaces $LAB_PREFIX-{inet,srv,r1..r6,p1a,p1b,p2..p6}; serve logs in $WORK; stop with Ctrl-C or kill -TERM $$"
    echo "$LAB_PREFIX" >"$WORK/prefix"
    while :; do sleep 1 & wait $!; done
fi

"$LAB_BIN" send --help >/dev/null 2>&1 \
    || die "$BIN_SRC has no 'send' command yet (docs/cli.md): the lab works, the CLI under test is missing"

# --- the matrix -------------------------------------------------------------
set +e +E
trap - ERR
for SCEN in "${SELECTED[@]}"; do
    SDIR="$WORK/$SCEN"
    mkdir -p "$SDIR"
    log "scenario $SCEN: $(scenario_title "$SCEN")"
    # Fresh NAT state per scenario: no mapping survives from the last one.
    for r in r1 r2 r3 r4 r5 r6; do in_ns "$r" conntrack -F >/dev/null 2>&1; done
    SEND_ARGS=() RECV_ARGS=() DURING=
    # In the background and waited for, so that a signal to this script is
    # handled at once (bash runs traps only between foreground commands).
    ( set +e; "scen_$SCEN" ) >"$SDIR/scenario.log" 2>&1 &
    SCEN_PID=$!
    wait "$SCEN_PID"
    SCEN_PID=
    if [ ! -s "$SDIR/result" ]; then
        printf 'FAIL\t%s\t-\t-\t-\t-\tscenario script error (see %s)\n' "$(scenario_expected "$SCEN")" "$SDIR/scenario.log" >"$SDIR/result"
    fi
    for role in send recv; do
        [ -f "$SDIR/$role.jsonl" ] || continue
        bad=$(non_json_lines "$SDIR/$role.jsonl")
        [ "$bad" = 0 ] || printf '%s printed %s non-JSON line(s) on stdout with --json\n' "$role" "$bad" >>"$SDIR/notes"
    done
    IFS=$'\t' read -r st _ pair path setup rate note <"$SDIR/result"
    log "  $st  $pair  data: $path  setup ${setup} ms  ${rate} MB/s${note:+  ($note)}"
done

# --- the table --------------------------------------------------------------
FAILED=0
table() { # md=0|1
    local md=$1 s st exp pair path setup rate note
    if [ "$md" = 1 ]; then
        echo "| scenario | expected | selected pair (send, recv: local<->remote) | data went (conntrack) | setup ms (send/recv) | MB/s | result |"
        echo "| --- | --- | --- | --- | --- | --- | --- |"
    else
        printf '%-11s | %-27s | %-46s | %-18s | %-9s | %-5s | %s\n' scenario expected "local/remote pair (send, recv)" "data went" "setup ms" "MB/s" result
        printf '%s\n' "------------+-----------------------------+------------------------------------------------+--------------------+-----------+-------+-------"
    fi
    for s in "${SELECTED[@]}"; do
        IFS=$'\t' read -r st exp pair path setup rate note <"$WORK/$s/result"
        if [ "$md" = 1 ]; then
            echo "| $s | $exp | $pair | $path | $setup | $rate | $st |"
        else
            printf '%-11s | %-27s | %-46s | %-18s | %-9s | %-5s | %s\n' "$s" "$exp" "$pair" "$path" "$setup" "$rate" "$st"
        fi
    done
}
notes() { # md=0|1
    local s st exp pair path setup rate note
    for s in "${SELECTED[@]}"; do
        IFS=$'\t' read -r st exp pair path setup rate note <"$WORK/$s/result"
        local extra=""
        [ -f "$WORK/$s/notes" ] && extra=$(tr '\n' ';' <"$WORK/$s/notes" | sed 's/;$//')
        [ -n "$note$extra" ] || continue
        if [ "$1" = 1 ]; then echo "- **$s** ($st): $note${extra:+ ($extra)}"
        else echo "  $s: $note${extra:+ ($extra)}"; fi
    done
}
for s in "${SELECTED[@]}"; do
    IFS=$'\t' read -r st _ <"$WORK/$s/result"
    [ "$st" = PASS ] || FAILED=$((FAILED + 1))
done

echo
table 0
echo
notes 0
echo
echo "logs: $WORK"
echo "$(( ${#SELECTED[@]} - FAILED )) passed, $FAILED failed"

if [ "$WRITE_DOC" = 1 ]; then
    . "$HERE/lib/doc.sh"
    write_doc >"$REPO/docs/nat-matrix.md"
    log "wrote docs/nat-matrix.md"
fi

[ "$FAILED" = 0 ]
