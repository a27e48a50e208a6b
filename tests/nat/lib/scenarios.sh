# shellcheck shell=bash
# The scenarios of the NAT matrix. Each runs `switchboard recv` in one lab
# host and `switchboard send` in another (docs/cli.md is the contract), then
# checks exit codes, the SHA-256 of what arrived, and the selected candidate
# pair from the `connected` events. Each writes one result line to
# $SDIR/result:
#   STATUS<TAB>EXPECTED<TAB>PAIR<TAB>DATA_PATH<TAB>SETUP_MS<TAB>MB_PER_S<TAB>NOTE
# DATA_PATH is where the bytes really went, from the sender's router's
# conntrack byte counters, independent of what the CLI reports: each path's
# share of the file size (what the sender's LAN host sent, headers included).
# Scenarios run in a subshell: a failure ends the scenario, never the lab.

SCENARIOS_DEFAULT="same-lan eim-eim sym-eim sym-sym tcp-only no-turn net-change lossy browser"
SCENARIOS_EXTRA="renumber"

SIGNAL_URL="http://$SRV_IP:8080"
NOTURN_URL="http://$NOTURN_IP:8080"

scenario_expected() {
    case $1 in
        same-lan)   echo "host <-> host" ;;
        eim-eim)    echo "srflx/prflx, no relay" ;;
        sym-eim)    echo "direct or relay (recorded)" ;;
        sym-sym)    echo "relay" ;;
        tcp-only)   echo "relay, TURN over TCP" ;;
        no-turn)    echo "exit 4 within --timeout" ;;
        net-change) echo "ICE restart, same transfer" ;;
        lossy)      echo "direct, right hash, copies on" ;;
        renumber)   echo "ICE restart after WAN renumber" ;;
        browser)    echo "Chromium /chat: recorded" ;;
        *)          echo "?" ;;
    esac
}

scenario_title() {
    case $1 in
        same-lan)   echo "both peers on the same LAN (behind EIM NAT r1)" ;;
        eim-eim)    echo "both behind endpoint-independent NATs" ;;
        sym-eim)    echo "symmetric NAT (sender) + EIM NAT (receiver)" ;;
        sym-sym)    echo "both behind symmetric NATs" ;;
        tcp-only)   echo "UDP blocked, only TCP 3478 open (sender) + EIM NAT" ;;
        no-turn)    echo "both behind EIM NATs, serve --no-turn (no STUN/TURN)" ;;
        net-change) echo "EIM NATs; sender's mappings (all but signaling) move mid-transfer" ;;
        lossy)      echo "EIM NATs; ${LAB_LOSS_PCT}% random loss each way at the sender's router" ;;
        renumber)   echo "EIM NATs; sender's router renumbered mid-transfer (TCP too)" ;;
        browser)    echo "headless Chromium /chat behind EIM NAT r1 -> recv behind EIM NAT r2" ;;
        *)          echo "$1" ;;
    esac
}

result() { # STATUS PAIR SETUP RATE NOTE (DATA_PATH from the global)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$(scenario_expected "$SCEN")" "$2" "${DATA_PATH:--}" "$3" "$4" "$5" >"$SDIR/result"
}

router_of() { local d=${1#p}; echo "${d%[ab]}"; }

# Saves both routers' flow tables; sets P_DIRECT, P_TURN_UDP, P_TURN_TCP
# (bytes through the sender's router) and DATA_PATH (their shares).
record_path() {
    local ns nr size
    ns=$(router_of "$SEND_NS"); nr=$(router_of "$RECV_NS")
    router_flows "$ns" >"$SDIR/flows-sender-r$ns.txt"
    router_flows "$nr" >"$SDIR/flows-receiver-r$nr.txt"
    read -r P_DIRECT P_TURN_UDP P_TURN_TCP _ < <(path_bytes "$ns")
    size=$(stat -c %s "$FILE")
    local parts=() name b
    for name in direct TURN/udp TURN/tcp; do
        case $name in direct) b=$P_DIRECT ;; TURN/udp) b=$P_TURN_UDP ;; TURN/tcp) b=$P_TURN_TCP ;; esac
        [ "$b" -ge $((size / 20)) ] && parts+=("$name $((b * 100 / size))%")
    done
    if [ ${#parts[@]} -eq 0 ]; then DATA_PATH="none"
    else DATA_PATH=$(IFS=,; echo "${parts[*]}" | sed 's/,/, /g'); fi
}

# Enough bytes to say data (not just ICE checks) took a path.
DATA_MIN=65536

# Whether the measured path fits $1, and whether it agrees with the pair the
# sender reported last. Echoes a problem or nothing.
#   LAN: less than half the file crossed the sender's router
#   direct: data went directly between the NATs
#   direct-80: at least 80% of the file went directly
#   TURN: most of the file went through serve, nothing directly
#   TURN/tcp: most of the file went over TURN/TCP
#   any: no requirement beyond consistency
path_problem() {
    local want=$1 size turn c
    size=$(stat -c %s "$FILE")
    turn=$((P_TURN_UDP + P_TURN_TCP))
    case $want in
        LAN) [ $((P_DIRECT + turn)) -lt $((size / 2)) ] || { echo "the data crossed the sender's router ($DATA_PATH), want it to stay in the LAN"; return; } ;;
        direct) [ "$P_DIRECT" -ge "$DATA_MIN" ] || { echo "no data went directly between the NATs ($DATA_PATH)"; return; } ;;
        direct-80) [ "$P_DIRECT" -ge $((size * 80 / 100)) ] || { echo "the data went $DATA_PATH, want at least 80% of it direct between the NATs"; return; } ;;
        TURN) { [ "$turn" -ge $((size / 2)) ] && [ "$P_DIRECT" -lt "$DATA_MIN" ]; } || { echo "the data went $DATA_PATH, want it all through TURN"; return; } ;;
        TURN/tcp) [ "$P_TURN_TCP" -ge $((size / 2)) ] || { echo "the data went $DATA_PATH, want it over TURN/TCP"; return; } ;;
    esac
    # The sender's own per-path count (file-sent .paths, docs/cli.md) must
    # agree with conntrack on which paths carried data. Direct traffic
    # inside a LAN never crosses the router, so LAN checks only the relay.
    # With $2 = since-change, conntrack holds only the flows after a change
    # that deleted the earlier ones, while the CLI counts the whole
    # transfer (which may have started through TURN): no comparison.
    local fs cd cr
    fs=$(last_event "$SDIR/send.jsonl" file-sent)
    if [ -n "$fs" ] && [ "${2:-}" != since-change ]; then
        cd=$(jq -r '.paths.direct.sent // 0' <<<"$fs"); cr=$(jq -r '.paths.relay.sent // 0' <<<"$fs")
        if [ "$want" != LAN ] && [ $((cd >= DATA_MIN)) != $((P_DIRECT >= DATA_MIN)) ]; then
            echo "send counted $cd bytes sent direct, but conntrack saw $P_DIRECT ($DATA_PATH)"; return
        fi
        if [ $((cr >= DATA_MIN)) != $((turn >= DATA_MIN)) ]; then
            echo "send counted $cr bytes sent through TURN, but conntrack saw $turn ($DATA_PATH)"; return
        fi
    fi
    c=$(last_event "$SDIR/send.jsonl" connected)
    [ -n "$c" ] || return 0
    if via_turn "$c"; then
        [ "$turn" -ge "$DATA_MIN" ] || echo "send's last pair $(pair_of "$c") is through TURN, but no data went through TURN ($DATA_PATH)"
    elif [ "$want" != LAN ]; then
        [ "$P_DIRECT" -ge "$DATA_MIN" ] || echo "send's last pair $(pair_of "$c") is direct, but no data went directly ($DATA_PATH)"
    fi
}

# --- JSON event helpers (one object per line on the CLI's stdout) ----------

# Every line of file $1 that parses as a JSON object with event $2, compact.
events() { jq -cR --arg e "$2" 'fromjson? | objects | select(.event == $e)' "$1" 2>/dev/null; }
count_events() { events "$1" "$2" | wc -l; }
first_event() { events "$1" "$2" | head -1; }
last_event() { events "$1" "$2" | tail -1; }
# How many lines of $1 are not JSON objects (docs/cli.md says none are).
non_json_lines() { jq -cR '(try fromjson catch null) | select(type != "object")' "$1" 2>/dev/null | wc -l; }

# "local<->remote" of a connected event, e.g. "relay/tcp<->srflx".
pair_of() {
    jq -r '"\(.pair.local.type)\(if .pair.local.relay_protocol then "/" + .pair.local.relay_protocol else "" end)<->\(.pair.remote.type)"' <<<"$1"
}
local_type()  { jq -r '.pair.local.type // "?"' <<<"$1"; }
remote_type() { jq -r '.pair.remote.type // "?"' <<<"$1"; }
local_relay_protocol() { jq -r '.pair.local.relay_protocol // ""' <<<"$1"; }
# Whether the pair goes through the TURN server at $SRV_IP (either end relay,
# or the remote address is the relay's, e.g. a peer-reflexive view of it).
via_turn() {
    jq -e --arg srv "$SRV_IP" '.pair.local.type == "relay" or .pair.remote.type == "relay"
        or ((.pair.remote.address // "") | split(":")[0]) == $srv' <<<"$1" >/dev/null
}

# --- running the CLI ------------------------------------------------------

# start_cli ROLE NS ARGS...: runs `switchboard ROLE ARGS` in lab host NS
# under an outer timeout, stdout to $SDIR/ROLE.jsonl, stderr to ROLE.err.
# Sets ROLE_pid and ROLE_t0 (ms).
start_cli() {
    local role=$1 where=$2; shift 2
    local t0; t0=$(now_ms)
    printf -v "${role}_t0" '%s' "$t0"
    echo "[$where] switchboard $role $*" >>"$SDIR/commands"
    in_ns "$where" env RUST_LOG="${LAB_CLI_LOG:-info}" timeout -k 5 "$LAB_OUTER_TIMEOUT" "$LAB_BIN" "$role" "$@" \
        >"$SDIR/$role.jsonl" 2>"$SDIR/$role.err" &
    printf -v "${role}_pid" '%s' "$!"
}

# wait_cli ROLE: waits for it; sets ROLE_rc and ROLE_secs.
wait_cli() {
    local role=$1 pidvar="${1}_pid" t0var="${1}_t0" rc=0
    wait "${!pidvar}" || rc=$?
    printf -v "${role}_rc" '%s' "$rc"
    printf -v "${role}_ms" '%s' "$(( $(now_ms) - ${!t0var} ))"
}

# Waits up to $2 seconds for an event $3 in file $1.
wait_event() {
    local f=$1 secs=$2 ev=$3 i
    for ((i = 0; i < secs * 10; i++)); do
        [ -n "$(first_event "$f" "$ev")" ] && return 0
        sleep 0.1
    done
    return 1
}

make_file() { # PATH MB
    head -c $(($2 * 1024 * 1024)) /dev/urandom >"$1"
}

# The common part: recv in $RECV_NS, send of $FILE from $SEND_NS, room of its
# own. Extra args in SEND_ARGS / RECV_ARGS. The hook `during` (if set) runs
# while the transfer is in flight.
transfer() {
    local url=$1
    ROOM="nat-$SCEN-$$-$RANDOM"
    mkdir -p "$SDIR/out"
    start_cli recv "$RECV_NS" --json --server "$url" --room "$ROOM" --name recv \
        --timeout "$CLI_TIMEOUT" --count 1 --out "$SDIR/out" "${RECV_ARGS[@]}"
    if ! wait_event "$SDIR/recv.jsonl" 15 joined; then
        echo "recv printed no joined event within 15 s" >>"$SDIR/notes"
    fi
    start_cli send "$SEND_NS" --json --server "$url" --room "$ROOM" --name send \
        --timeout "$CLI_TIMEOUT" "${SEND_ARGS[@]}" "$FILE"
    if [ -n "${DURING:-}" ]; then "$DURING"; fi
    wait_both
    record_path
}

# Waits for send and recv. Once one has exited, the other gets
# $LAB_GRACE seconds (default: the CLI's --timeout + 10) before it is stopped
# and noted as still running; the outer timeout bounds the whole.
wait_both() {
    local grace=${LAB_GRACE:-$((CLI_TIMEOUT + 10))} first="" i role other
    while :; do
        for role in send recv; do
            local pv="${role}_pid"
            if ! kill -0 "${!pv}" 2>/dev/null; then first=$role; break 2; fi
        done
        sleep 0.1
    done
    wait_cli "$first"
    other=recv; [ "$first" = recv ] && other=send
    local opv="${other}_pid"
    for ((i = 0; i < grace * 10; i++)); do
        kill -0 "${!opv}" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "${!opv}" 2>/dev/null; then
        local frc="${first}_rc"
        echo "$other was still running ${grace} s after $first exited with ${!frc}; stopped it" >>"$SDIR/notes"
        kill -TERM "${!opv}" 2>/dev/null
        printf -v "${other}_stopped" '%s' 1
    fi
    wait_cli "$other"
}

# Common checks of a finished transfer; echoes the first problem, or nothing.
transfer_problem() {
    local want got n
    want=$(sha256sum "$FILE" | cut -d' ' -f1)
    [ "$send_rc" = 124 ] || [ "$send_rc" = 137 ] && { echo "send hung: killed by the outer ${LAB_OUTER_TIMEOUT}s timeout"; return; }
    [ "$recv_rc" = 124 ] || [ "$recv_rc" = 137 ] && { echo "recv hung: killed by the outer ${LAB_OUTER_TIMEOUT}s timeout"; return; }
    [ -n "${send_stopped:-}" ] && { echo "send still running $((${LAB_GRACE:-$((CLI_TIMEOUT + 10))})) s after recv exited $recv_rc"; return; }
    [ -n "${recv_stopped:-}" ] && { echo "recv still running $((${LAB_GRACE:-$((CLI_TIMEOUT + 10))})) s after send exited $send_rc: $(err_summary send)"; return; }
    [ "$send_rc" = 0 ] || { echo "send exited $send_rc: $(err_summary send)"; return; }
    [ "$recv_rc" = 0 ] || { echo "recv exited $recv_rc: $(err_summary recv)"; return; }
    n=$(find "$SDIR/out" -type f | wc -l)
    [ "$n" = 1 ] || { echo "recv wrote $n files, want exactly 1"; return; }
    got=$(sha256sum "$(find "$SDIR/out" -type f)" | cut -d' ' -f1)
    [ "$got" = "$want" ] || { echo "sha256 of the received file $got != sent $want"; return; }
    local fr fs
    fr=$(last_event "$SDIR/recv.jsonl" file-received)
    fs=$(last_event "$SDIR/send.jsonl" file-sent)
    [ -n "$fr" ] || { echo "recv printed no file-received event"; return; }
    [ -n "$fs" ] || { echo "send printed no file-sent event"; return; }
    [ "$(jq -r .ok <<<"$fr")" = true ] && [ "$(jq -r .sha256 <<<"$fr")" = "$want" ] \
        || { echo "file-received event disagrees: $fr"; return; }
    [ "$(jq -r .ok <<<"$fs")" = true ] && [ "$(jq -r .sha256 <<<"$fs")" = "$want" ] \
        || { echo "file-sent event disagrees: $fs"; return; }
    [ -n "$(first_event "$SDIR/send.jsonl" connected)" ] || { echo "send printed no connected event"; return; }
    [ -n "$(first_event "$SDIR/recv.jsonl" connected)" ] || { echo "recv printed no connected event"; return; }
}

err_summary() { # ROLE: the error event's message, else the last stderr line
    local e; e=$(last_event "$SDIR/$1.jsonl" error)
    if [ -n "$e" ]; then jq -r '"code \(.code): \(.message)"' <<<"$e"
    else tail -n 1 "$SDIR/$1.err" 2>/dev/null | cut -c1-200; fi
}

# "send-pair | recv-pair" of the first connected events.
# The last pair each side reported (the one the connection settled on).
pairs_text() {
    local s r
    s=$(last_event "$SDIR/send.jsonl" connected); r=$(last_event "$SDIR/recv.jsonl" connected)
    printf 'send %s, recv %s' "$( [ -n "$s" ] && pair_of "$s" || echo -)" "$( [ -n "$r" ] && pair_of "$r" || echo -)"
}

setup_ms_text() {
    local s r
    s=$(first_event "$SDIR/send.jsonl" connected); r=$(first_event "$SDIR/recv.jsonl" connected)
    printf '%s/%s' "$( [ -n "$s" ] && jq -r '.setup_ms | floor' <<<"$s" || echo -)" \
        "$( [ -n "$r" ] && jq -r '.setup_ms | floor' <<<"$r" || echo -)"
}

rate_text() { # MB/s (10^6 bytes) of the received file, by the receiver's clock
    local fr; fr=$(last_event "$SDIR/recv.jsonl" file-received)
    [ -n "$fr" ] || { echo -; return; }
    jq -r 'if .ms > 0 then (.size / 1000000 / (.ms / 1000) * 100 | round / 100 | tostring) else "-" end' <<<"$fr"
}

# "send first X, recv first Y" when a side reported more than one pair.
pair_history() {
    local side n out=()
    for side in send recv; do
        n=$(count_events "$SDIR/$side.jsonl" connected)
        if [ "$n" -gt 1 ]; then
            local list=() c
            while read -r c; do list+=("$(pair_of "$c")"); done < <(events "$SDIR/$side.jsonl" connected)
            local joined; joined=$(printf '%s then ' "${list[@]}"); joined=${joined% then }
            out+=("$side: $joined")
        fi
    done
    [ ${#out[@]} -gt 0 ] && (IFS=';'; echo "pairs over time: ${out[*]}" | sed 's/;/; /g')
}

finish() { # PROBLEM (empty = pass) [NOTE]
    local status=PASS note=${2:-} hist
    hist=$(pair_history)
    [ -n "$hist" ] && note="${note:+$note; }$hist"
    if [ -n "$1" ]; then status=FAIL; note="$1${note:+ [$note]}"; fi
    result "$status" "$(pairs_text)" "$(setup_ms_text)" "$(rate_text)" "$note"
}

# --- the scenarios --------------------------------------------------------

# Pair check helpers; each echoes a problem or nothing.
both_sides() { # FUNC: applies FUNC SIDE CONNECTED_JSON (the last one) to send and recv
    local side c p
    for side in send recv; do
        c=$(last_event "$SDIR/$side.jsonl" connected)
        p=$("$1" "$side" "$c")
        [ -n "$p" ] && { echo "$p"; return; }
    done
}
want_host_host() {
    [ "$(local_type "$2")" = host ] && [ "$(remote_type "$2")" = host ] \
        || echo "$1 selected $(pair_of "$2"), want host<->host"
}
want_direct_reflexive() {
    if via_turn "$2"; then echo "$1 selected $(pair_of "$2") through TURN, want a direct pair"; return; fi
    case $(remote_type "$2") in srflx|prflx) ;; *) echo "$1 selected $(pair_of "$2"), want a srflx/prflx remote" ;; esac
}
want_not_host_host() {
    [ "$(local_type "$2")" = host ] && [ "$(remote_type "$2")" = host ] \
        && echo "$1 selected host<->host across two NATs (the lab leaks)"
}
want_turn() {
    via_turn "$2" || echo "$1 selected $(pair_of "$2"), want a pair through TURN"
}

run_pair_scenario() { # SEND_NS RECV_NS CHECK_FUNC PATH [FILE_MB]
    SEND_NS=$1 RECV_NS=$2
    local mb=${5:-$LAB_FILE_MB}
    FILE="$WORK/data-${mb}M.bin"
    [ -f "$FILE" ] || make_file "$FILE" "$mb"
    transfer "$SIGNAL_URL"
    local p; p=$(transfer_problem)
    [ -z "$p" ] && p=$(both_sides "$3")
    [ -z "$p" ] && p=$(path_problem "$4")
    finish "$p" "${NOTE:-}"
}

scen_same-lan()  { run_pair_scenario p1a p1b want_host_host LAN; }
# Behind two EIM NATs a direct srflx/prflx path exists and must carry the
# data. Each of LAB_EIM_RUNS transfers of LAB_EIM_FILE_MB, with fresh NAT
# state, must end on a direct pair on both sides and move at least 80% of
# the file directly (conntrack). The relay may carry the start: when both
# sides' first direct checks cross, both are dropped by address-and-port
# filtering and the direct pair succeeds on a retransmit (the peer's
# Config::ice_check_rto, 50 ms) after a relayed pair did. The row shows the
# last run; the note has the count, every run's setup time and data path.
scen_eim-eim() {
    local base=$SDIR k fails=0 first="" setups=() shares=() p
    # The checklist over time (is: str0m's ICE agent) in send.err and
    # recv.err of each run, to explain any run that went through TURN.
    LAB_CLI_LOG="${LAB_CLI_LOG:-info},is=debug,str0m=debug"
    for ((k = 1; k <= LAB_EIM_RUNS; k++)); do
        SDIR="$base/run-$k"
        mkdir -p "$SDIR"
        for r in r1 r2; do in_ns "$r" conntrack -F >/dev/null 2>&1; done
        run_pair_scenario p1a p2 want_direct_reflexive direct-80 "$LAB_EIM_FILE_MB"
        IFS=$'\t' read -r st _ _ path setup _ note <"$SDIR/result"
        setups+=("$setup")
        shares+=("$path")
        if [ "$st" != PASS ]; then
            fails=$((fails + 1))
            [ -z "$first" ] && first="run $k: $note"
        fi
    done
    # The last run's row, with the verdict over all runs.
    cp "$SDIR/result" "$base/last-run.result"
    IFS=$'\t' read -r _ _ pair path setup rate _ <"$SDIR/result"
    SDIR=$base
    DATA_PATH=$path
    p="$((LAB_EIM_RUNS - fails))/$LAB_EIM_RUNS runs direct; setup ms per run (send/recv): ${setups[*]}; data per run: $(IFS=';'; echo "${shares[*]}" | sed 's/;/; /g')"
    if [ "$fails" -eq 0 ]; then result PASS "$pair" "$setup" "$rate" "$p"
    else result FAIL "$pair" "$setup" "$rate" "$p; first failure: $first"; fi
}
scen_sym-sym()   { run_pair_scenario p3 p4 want_turn TURN; }

# Issue 15: a lossy link. r1 drops LAB_LOSS_PCT% of everything it forwards,
# each way (signaling, STUN and the data alike). The transfer must complete
# with the right hash over the direct path, and both CLIs must have seen the
# loss and sent copies (--redundancy auto, crate::redundancy in the peer).
# How fast is the benchmark's business (bench/lossy-link.sh); this only
# needs it done within the outer timeout.
scen_lossy() {
    local prob p fs fr
    prob=$(awk -v p="$LAB_LOSS_PCT" 'BEGIN { printf "%.4f", p / 100 }')
    in_ns r1 iptables -w -I FORWARD -m statistic --mode random --probability "$prob" -j DROP
    SEND_NS=p1a RECV_NS=p2
    FILE="$WORK/data-${LAB_LOSS_FILE_MB}M.bin"
    [ -f "$FILE" ] || make_file "$FILE" "$LAB_LOSS_FILE_MB"
    transfer "$SIGNAL_URL"
    in_ns r1 iptables -w -D FORWARD -m statistic --mode random --probability "$prob" -j DROP
    p=$(transfer_problem)
    [ -z "$p" ] && p=$(both_sides want_direct_reflexive)
    [ -z "$p" ] && p=$(path_problem direct)
    fs=$(last_event "$SDIR/send.jsonl" file-sent); fr=$(last_event "$SDIR/recv.jsonl" file-received)
    if [ -z "$p" ]; then
        local role ev
        for role in send recv; do
            ev=$fs; [ "$role" = recv ] && ev=$fr
            # The estimate is of the peer's datagrams: LAB_LOSS_PCT, within
            # a factor of two either way.
            jq -e --argjson p "$LAB_LOSS_PCT" '.redundancy.copies > 0
                and .redundancy.loss_in != null
                and .redundancy.loss_in * 100 >= $p / 2 and .redundancy.loss_in * 100 <= $p * 2' <<<"$ev" >/dev/null \
                || { p="$role's redundancy does not reflect ${LAB_LOSS_PCT}% loss: $(jq -c .redundancy <<<"$ev")"; break; }
        done
    fi
    finish "$p" "$( [ -n "$fs" ] && jq -r '"send: \(.redundancy.copies) copies, peer loss \(.redundancy.loss_in * 1000 | round / 10)%"' <<<"$fs")"
}

scen_sym-eim() {
    SEND_NS=p3 RECV_NS=p2
    FILE="$WORK/data-${LAB_FILE_MB}M.bin"
    [ -f "$FILE" ] || make_file "$FILE" "$LAB_FILE_MB"
    transfer "$SIGNAL_URL"
    local p c note=""; p=$(transfer_problem)
    [ -z "$p" ] && p=$(both_sides want_not_host_host)
    [ -z "$p" ] && p=$(path_problem any)
    c=$(last_event "$SDIR/send.jsonl" connected)
    if [ -n "$c" ]; then
        if via_turn "$c"; then note="relayed: the EIM side's NAT filters by address and port, so checks from the symmetric NAT's fresh port are dropped"
        else note="direct: a peer-reflexive pair through the symmetric NAT's per-destination port"; fi
    fi
    finish "$p" "$note"
}

scen_tcp-only() {
    SEND_NS=p5 RECV_NS=p2
    FILE="$WORK/data-${LAB_FILE_MB}M.bin"
    [ -f "$FILE" ] || make_file "$FILE" "$LAB_FILE_MB"
    transfer "$SIGNAL_URL"
    local p c; p=$(transfer_problem)
    if [ -z "$p" ]; then
        c=$(last_event "$SDIR/send.jsonl" connected)
        if [ "$(local_type "$c")" != relay ] || [ "$(local_relay_protocol "$c")" != tcp ]; then
            p="send (firewalled) selected $(pair_of "$c"), want a local relay reached over TCP"
        fi
    fi
    [ -z "$p" ] && p=$(want_turn recv "$(last_event "$SDIR/recv.jsonl" connected)")
    [ -z "$p" ] && p=$(path_problem TURN/tcp)
    finish "$p"
}

scen_no-turn() {
    SEND_NS=p1a RECV_NS=p2
    FILE="$WORK/data-${LAB_FILE_MB}M.bin"
    [ -f "$FILE" ] || make_file "$FILE" "$LAB_FILE_MB"
    CLI_TIMEOUT=$LAB_FAIL_TIMEOUT # scenarios run in a subshell: no restore needed
    transfer "$NOTURN_URL"
    local p="" role rc ms limit=$(( (LAB_FAIL_TIMEOUT + 10) * 1000 ))
    for role in send recv; do
        rc=${role}_rc ms=${role}_ms
        local stopped="${role}_stopped"
        if [ -n "${!stopped:-}" ]; then p="$role did not exit: still running $((CLI_TIMEOUT + 10)) s after the other gave up"; break; fi
        if [ "${!rc}" = 124 ] || [ "${!rc}" = 137 ]; then p="$role hung: killed by the outer ${LAB_OUTER_TIMEOUT}s timeout"; break; fi
        if [ "${!rc}" != 4 ]; then p="$role exited ${!rc}, want 4 (peer connection failed): $(err_summary "$role")"; break; fi
        if [ "${!ms}" -gt "$limit" ]; then p="$role took ${!ms} ms to give up, want <= $limit (--timeout $LAB_FAIL_TIMEOUT + 10 s)"; break; fi
        if [ -z "$(last_event "$SDIR/$role.jsonl" error)" ]; then p="$role exited 4 without an error event"; break; fi
        if [ -n "$(first_event "$SDIR/$role.jsonl" connected)" ]; then p="$role reported connected although no path exists"; break; fi
    done
    [ -z "$p" ] && [ "$(find "$SDIR/out" -type f | wc -l)" != 0 ] && p="recv wrote a file"
    DATA_PATH=-
    result "$([ -z "$p" ] && echo PASS || echo FAIL)" "none (send exit $send_rc, recv exit $recv_rc)" "-" "-" \
        "${p:-gave up after ${send_ms} ms / ${recv_ms} ms: $(err_summary send)}"
}

# Mid-transfer change for the network-change scenarios: waits until the
# receiver has a quarter of the file (or, without progress events, 3 s after
# connected), then runs $CHANGE and notes how far the transfer was.
during_change() {
    local size i bytes=0 changed=0
    size=$(stat -c %s "$FILE")
    for ((i = 0; i < LAB_OUTER_TIMEOUT * 10; i++)); do
        kill -0 "$send_pid" 2>/dev/null || break
        bytes=$(last_event "$SDIR/recv.jsonl" progress | jq -r '.bytes // 0' 2>/dev/null)
        bytes=${bytes:-0}
        if [ "$bytes" -ge $((size / 4)) ]; then changed=1; break; fi
        if [ -z "${connected_at:-}" ] && [ -n "$(first_event "$SDIR/recv.jsonl" connected)" ]; then connected_at=$i; fi
        if [ -n "${connected_at:-}" ] && [ $((i - connected_at)) -ge 30 ] \
            && [ -z "$(first_event "$SDIR/recv.jsonl" progress)" ]; then changed=1; break; fi
        sleep 0.1
    done
    if [ $changed = 1 ]; then
        if [ -n "$(first_event "$SDIR/recv.jsonl" file-received)" ]; then
            echo "the file had already arrived when the change was due" >"$SDIR/change"
            return
        fi
        local t0 n0 t1=""
        n0=$(count_events "$SDIR/recv.jsonl" connected)
        "$CHANGE"
        t0=$(now_ms)
        # Until the receiver reports a new connection (or the sender ends).
        while kill -0 "$send_pid" 2>/dev/null; do
            if [ "$(count_events "$SDIR/recv.jsonl" connected)" -gt "$n0" ]; then t1=$(now_ms); break; fi
            sleep 0.1
        done
        echo "changed at $bytes of $size bytes received${t1:+, recv connected again $((t1 - t0)) ms later}" >"$SDIR/change"
    else
        echo "no change made: the sender ended before the transfer was under way" >"$SDIR/change"
    fi
}

# The sender's router moves every mapping but one to a new public address
# and port range: all UDP (direct paths, STUN, TURN/UDP) and the TURN/TCP
# connection, whose conntrack entries are deleted so their next packets leave
# from 198.18.6.2 (the TURN server answers a mid-stream TCP segment from an
# unknown address with a reset). Only the signaling WebSocket (TCP to :8080)
# keeps its mapping. So no candidate pair of the connection survives, and
# only an ICE restart, negotiated through serve, can bring it back, as when a
# carrier-grade NAT rebalances a subscriber. (`renumber` also breaks the
# signaling connection.)
change_mapping() {
    ip -n "$(ns r6)" addr add "198.18.6.2/$INET_LEN" dev wan
    local ipt=(in_ns r6 iptables -w -t nat)
    "${ipt[@]}" -I POSTROUTING 1 -o wan -p tcp --dport 8080 -j MASQUERADE
    "${ipt[@]}" -I POSTROUTING 2 -o wan -p udp -j SNAT --to-source 198.18.6.2:20000-29999
    "${ipt[@]}" -I POSTROUTING 3 -o wan -p tcp -j SNAT --to-source 198.18.6.2:20000-29999
    in_ns r6 conntrack -D -p udp >/dev/null 2>&1 || true
    in_ns r6 conntrack -D -p tcp --orig-port-dst 3478 >/dev/null 2>&1 || true
    in_ns r6 conntrack -L 2>/dev/null >"$SDIR/conntrack-after" || true
}

change_renumber() { renumber_router 6; }

net_change_common() {
    SEND_NS=p6 RECV_NS=p2 SEND_ROUTER=6
    FILE="$WORK/data-${LAB_CHANGE_FILE_MB}M.bin"
    [ -f "$FILE" ] || make_file "$FILE" "$LAB_CHANGE_FILE_MB"
    # A slower uplink on the sender's router so the transfer has a middle.
    in_ns r6 tc qdisc replace dev wan root tbf rate "$LAB_CHANGE_RATE" burst 64kb latency 200ms
    DURING=during_change
    transfer "$SIGNAL_URL"
    DURING=
    # Evidence of where the flows ended up after the change.
    in_ns r6 conntrack -L -p udp >"$SDIR/conntrack-r6-end" 2>/dev/null
    in_ns r2 conntrack -L -p udp >"$SDIR/conntrack-r2-end" 2>/dev/null
    local p; p=$(transfer_problem)
    local change; change=$(cat "$SDIR/change" 2>/dev/null || echo "no change made")
    case $change in changed*) ;; *) [ -z "$p" ] && p="$change" ;; esac
    local sc rc; sc=$(count_events "$SDIR/send.jsonl" connected); rc=$(count_events "$SDIR/recv.jsonl" connected)
    # Resumed, not restarted: one file each way, progress never went back.
    if [ -z "$p" ]; then
        [ "$(count_events "$SDIR/send.jsonl" file-sent)" = 1 ] || p="send reported $(count_events "$SDIR/send.jsonl" file-sent) file-sent events"
    fi
    if [ -z "$p" ]; then
        [ "$(count_events "$SDIR/recv.jsonl" file-received)" = 1 ] || p="recv reported $(count_events "$SDIR/recv.jsonl" file-received) file-received events"
    fi
    local side
    for side in send recv; do
        [ -n "$p" ] && break
        if ! events "$SDIR/$side.jsonl" progress | jq -s -e '[.[].bytes] as $b | all(range(1; $b | length); $b[.] >= $b[. - 1])' >/dev/null; then
            p="$side progress went backwards (the transfer started over)"
        fi
    done
    if [ -z "$p" ] && [ "$sc" -lt 2 ] && [ "$rc" -lt 2 ]; then
        p="no ICE restart reported (connected events: send $sc, recv $rc) although the sender's mapping changed"
    fi
    # The pair reported last must be the one the data took after the change
    # (DATA_PATH is from conntrack, which the change flushed for UDP).
    local ls lr old_ip="198.18.${SEND_ROUTER}.1"
    ls=$(last_event "$SDIR/send.jsonl" connected); lr=$(last_event "$SDIR/recv.jsonl" connected)
    if [ -z "$p" ] && [ -n "$lr" ] && [ "$CHANGE" = change_mapping ] \
        && [ "$(jq -r '.pair.remote.address | split(":")[0]' <<<"$lr")" = "$old_ip" ]; then
        p="recv's last connected event names remote $(jq -r .pair.remote.address <<<"$lr"), the sender's pre-change mapping, which no longer exists (the data went $DATA_PATH)"
    fi
    [ -z "$p" ] && p=$(path_problem any since-change)
    finish "$p" "$change; connected events: send $sc, recv $rc; the data went $DATA_PATH after the change"
}

scen_net-change() { CHANGE=change_mapping net_change_common; }
scen_renumber()   { CHANGE=change_renumber net_change_common; }

# Headless Chromium on /chat (tests/nat/browser-chat.mjs) behind EIM NAT r1
# sends a file to `switchboard recv` behind EIM NAT r2.
scen_browser() {
    SEND_NS=p1a RECV_NS=p2
    local pwdir="$REPO/tests/e2e/node_modules/playwright-core"
    local missing=""
    command -v node >/dev/null || missing="node"
    [ -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ] || missing="$missing chromium"
    [ -d "$pwdir" ] || missing="$missing playwright-core (npm ci in tests/e2e)"
    if [ -n "$missing" ]; then
        result FAIL "-" "-" "-" "browser scenario needs:$missing (tests/run.sh installs them)"
        return
    fi
    FILE="$WORK/data-${LAB_FILE_MB}M.bin"
    [ -f "$FILE" ] || make_file "$FILE" "$LAB_FILE_MB"
    ROOM="nat-$SCEN-$$-$RANDOM"
    mkdir -p "$SDIR/out"
    in_ns "$RECV_NS" cat /proc/net/snmp >"$SDIR/snmp-recv-before.txt" 2>/dev/null
    start_cli recv "$RECV_NS" --json --server "$SIGNAL_URL" --room "$ROOM" --name recv \
        --timeout "$CLI_TIMEOUT" --count 1 --out "$SDIR/out"
    wait_event "$SDIR/recv.jsonl" 15 joined || echo "recv printed no joined event within 15 s" >>"$SDIR/notes"
    send_t0=$(now_ms)
    echo "[$SEND_NS] node tests/nat/browser-chat.mjs $SIGNAL_URL $ROOM $FILE" >>"$SDIR/commands"
    in_ns "$SEND_NS" env HOME="$SDIR" timeout -k 5 "$LAB_OUTER_TIMEOUT" node "$REPO/tests/nat/browser-chat.mjs" \
        "$SIGNAL_URL" "$ROOM" "$FILE" $((CLI_TIMEOUT * 3)) >"$SDIR/browser.json" 2>"$SDIR/browser.err" &
    send_pid=$!
    LAB_GRACE=$((CLI_TIMEOUT * 3 + 10)) wait_both
    record_path
    # Where packets were lost on the way, if anywhere: UDP receive-buffer
    # drops in recv's host, and drops on every interface of both routers.
    in_ns "$RECV_NS" cat /proc/net/snmp >"$SDIR/snmp-recv.txt" 2>/dev/null
    for r in r1 r2; do in_ns "$r" ip -s link >"$SDIR/links-$r.txt" 2>/dev/null; done
    local p="" b want got r
    b=$(tail -n 1 "$SDIR/browser.json")
    want=$(sha256sum "$FILE" | cut -d' ' -f1)
    if [ "$send_rc" != 0 ]; then
        p="Chromium side failed (exit $send_rc): $(jq -r '.error // .status // "no output"' <<<"${b:-null}" 2>/dev/null)"
    elif [ "$recv_rc" != 0 ]; then
        p="recv exited $recv_rc: $(err_summary recv)"
    elif [ "$(find "$SDIR/out" -type f | wc -l)" != 1 ]; then
        p="recv wrote $(find "$SDIR/out" -type f | wc -l) files, want 1"
    else
        got=$(sha256sum "$(find "$SDIR/out" -type f)" | cut -d' ' -f1)
        [ "$got" = "$want" ] || p="sha256 of the received file $got != sent $want"
    fi
    r=$(last_event "$SDIR/recv.jsonl" connected)
    [ -z "$p" ] && [ -z "$r" ] && p="recv printed no connected event"
    [ -z "$p" ] && p=$(want_not_host_host recv "$r")
    local bpair="-"
    [ -n "$b" ] && bpair=$(jq -r 'if .pair then "\(.pair.local.candidateType)\(if .pair.local.relayProtocol then "/" + .pair.local.relayProtocol else "" end)<->\(.pair.remote.candidateType)" else "-" end' <<<"$b" 2>/dev/null)
    # Chromium is the newcomer, so it offers and is the controlling agent:
    # libwebrtc picks the pair, str0m follows its nomination. The pair is
    # recorded, not required: Chromium often moves to its relay mid-transfer
    # (docs/nat-matrix.md). The note says which way each side sent.
    [ -z "$p" ] && p=$(path_problem any)
    local fr dgrams side="" ; fr=$(last_event "$SDIR/recv.jsonl" file-received)
    [ -n "$fr" ] && side=$(jq -r '.paths | "recv got \(.direct.received) bytes direct and \(.relay.received) through TURN"' <<<"$fr")
    # InDatagrams of recv's host during this scenario (the counters are the
    # namespace's, kept across scenarios).
    local in0 in1
    in0=$(awk '/^Udp:/ { if (h) print $2; h = 1 }' "$SDIR/snmp-recv-before.txt" 2>/dev/null)
    in1=$(awk '/^Udp:/ { if (h) print $2; h = 1 }' "$SDIR/snmp-recv.txt" 2>/dev/null)
    [ -n "$in0" ] && [ -n "$in1" ] && dgrams=$((in1 - in0))
    local setup="-"
    [ -n "$b" ] && setup="$(jq -r '.page_setup_ms // "-"' <<<"$b" 2>/dev/null)/$( [ -n "$r" ] && jq -r '.setup_ms | floor' <<<"$r" || echo -)"
    result "$([ -z "$p" ] && echo PASS || echo FAIL)" "chromium $bpair, recv $( [ -n "$r" ] && pair_of "$r" || echo -)" \
        "$setup" "$(rate_text)" "${p:-Chromium (controlling) chose the pair; ${side:-recv reported no paths}, in ${dgrams:-?} UDP datagrams; Chromium setup ms is page load to connected, the recv side is its setup_ms}"
}
