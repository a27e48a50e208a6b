# shellcheck shell=bash
# Writes docs/nat-matrix.md from this run's results (lab.sh --write-doc).

write_doc() {
    local commit dirty version
    commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
    dirty=$(git -C "$REPO" status --porcelain --untracked-files=no -- crates Cargo.toml Cargo.lock 2>/dev/null | head -1)
    # A binary built elsewhere (say a worktree) says which commit it is.
    if [ -n "${LAB_BIN_COMMIT:-}" ]; then commit=$LAB_BIN_COMMIT; dirty=""; fi
    version=$("$LAB_BIN" --version 2>/dev/null || echo unknown)
    cat <<EOF
# NAT traversal matrix

Measured by \`tests/nat/lab.sh --write-doc\`: \`switchboard send\`
and \`switchboard recv\` (docs/cli.md) across real Linux NATs built from
network namespaces, with \`switchboard serve\` as signaling and STUN/TURN
server. This file is written by the lab from one real run; do not edit the
numbers by hand.

- run: $(date -u '+%Y-%m-%d %H:%M UTC')
- kernel: $(uname -sr), $(iptables --version 2>/dev/null)
- commit: ${commit}${dirty:+ (the work tree had uncommitted changes under crates/)}; binary: ${version}
- file: ${LAB_FILE_MB} MiB of random bytes per transfer (eim-eim runs ${LAB_EIM_RUNS} transfers of ${LAB_EIM_FILE_MB} MiB, each of which must end direct with at least 80% of its bytes direct; ${LAB_CHANGE_FILE_MB} MiB with a ${LAB_CHANGE_RATE} uplink in the network-change scenario); CLI \`--timeout ${CLI_TIMEOUT}\` (\`${LAB_FAIL_TIMEOUT}\` in no-turn)
- result: $(( ${#SELECTED[@]} - FAILED )) passed, $FAILED failed

## Results

EOF
    table 1
    cat <<'EOF'

"setup ms" is the CLI's `setup_ms` from its first `connected` event (first
offer/answer to ICE connected and data channel open), sender/receiver. "MB/s"
is 10^6 bytes per second over the receiver's `ms` in `file-received`. The pair
is the last `connected` event's `pair.local.type<->pair.remote.type` (the
pair the connection settled on; the CLI reports a new one whenever the
selected pair changes, and the notes list "pairs over time" when it did),
from the sender's and the receiver's side (`/tcp` marks a local relay
reached over TURN/TCP). "data went" is the lab's own record, independent of the
CLI: the byte counters of the sender's NAT router's conntrack table (flow
accounting on), as each path's share of the file size (the sender's
outgoing direction only, so packet headers put a whole transfer a few
percent over 100; shares under 5% are left out): `direct` to the
other NAT's public address, `TURN/udp` or `TURN/tcp` to serve, `none` when
nothing crossed the router. A connection that starts on a relay pair and moves
to a direct one shows both. Each scenario also fails when the sender's last
reported pair is direct but no data went directly, or through TURN but none
went through TURN, and when the sender's own count of bytes sent direct and
through TURN (`file-sent` `paths`, docs/cli.md) disagrees with conntrack on
which of the two carried data.

Notes from the run:

EOF
    notes 1
    cat <<EOF

## The lab

Every scenario checks both exit codes, that the receiver wrote exactly one
file whose SHA-256 equals the sent file's (and the \`file-sent\` /
\`file-received\` events agree), the final selected pair on both sides, and
where the bytes went by the routers' own counters.

| scenario | sender | receiver | checked |
| --- | --- | --- | --- |
| same-lan | p1a, LAN 10.0.1.0/24 behind EIM NAT r1 | p1b, same LAN | final pair host<->host on both sides; less than half the file crossed the router |
| eim-eim | p1a behind EIM NAT r1 | p2 behind EIM NAT r2 | ${LAB_EIM_RUNS} transfers, fresh NAT state each: every one must end on a direct pair on both sides (no relay; remote srflx or prflx) with at least 80% of the file directly between the NATs; the row is the last run, the note lists every run's setup time and data path |
| sym-eim | p3 behind symmetric NAT r3 | p2 behind EIM NAT r2 | connects; the pair is recorded (not host<->host) |
| sym-sym | p3 behind symmetric NAT r3 | p4 behind symmetric NAT r4 | final pair through TURN on both sides; at least half the file through TURN and nothing directly |
| tcp-only | p5 behind firewall r5 (only TCP 3478 and the signaling port out, no UDP) | p2 behind EIM NAT r2 | sender's final local candidate is relay with relay_protocol tcp; receiver's pair goes through TURN; at least half the file over TURN/TCP |
| no-turn | p1a behind r1 | p2 behind r2, signaling on a \`serve --no-turn\` | both exit 4 within \`--timeout\` + 10 s with an error event, no connected event, no file; an outer \`timeout\` catches a hang |
| browser | headless Chromium on \`/chat\` in p1a behind EIM NAT r1 (tests/nat/browser-chat.mjs, playwright-core) | \`switchboard recv\` in p2 behind EIM NAT r2 | the page gets a matching \`file-ack\`; recv's file has the right hash; the pairs and the data path are recorded, not required: Chromium is the newcomer, so it offers, is the controlling agent and picks the pair (libwebrtc's logic; str0m follows its nomination), and it often ends on its relay although the direct path works. The pair column shows the page's selected pair (getStats, at the end) and recv's; the note gives recv's bytes received direct and through TURN, and its UDP datagram count (recv's host keeps \`/proc/net/snmp\`, the routers \`ip -s link\`, in the logs) |
| net-change | p6 behind EIM NAT r6, uplink shaped with tc tbf | p2 behind r2 | once the receiver has a quarter of the file, r6 moves every mapping but the signaling WebSocket's (TCP to :8080) to a new public address and port range (SNAT 198.18.6.2:20000-29999) and deletes the conntrack entries of all UDP flows and of the TURN/TCP connection, so no candidate pair survives (the direct path, TURN/UDP and TURN/TCP all break) and only an ICE restart negotiated through serve can recover. Passes when the file completes with the right hash, one file-sent and one file-received, progress never going back (it resumed, not restarted), and a second \`connected\` event (ICE restart) on either side, and the last reported pairs must match where the data went after the change (conntrack): no side may still name the sender's old public address. Its "data went" is the path after the change (the change deleted the earlier flows) |
| lossy | p1a behind EIM NAT r1, which drops ${LAB_LOSS_PCT}% of everything it forwards, each way (iptables statistic in FORWARD: signaling, STUN and data alike) | p2 behind EIM NAT r2 | a ${LAB_LOSS_FILE_MB} MiB file arrives with the right hash over a direct pair within the outer timeout, and both CLIs' \`redundancy\` (docs/cli.md) shows copies sent and the peer's loss estimated within a factor of two of ${LAB_LOSS_PCT}%. How fast is bench/lossy-link.sh's business; its "data went" counts the copies |

Topology: an "internet" 198.18.0.0/15 (RFC 2544 benchmarking range) that is a
bridge inside one namespace; \`serve\` at 198.18.0.10 (signaling :8080,
STUN/TURN :3478, \`--external-ip 198.18.0.10 --allow-peer 198.18.0.0/15\`: the
relay refuses benchmarking ranges unless allowed), a second \`serve\` at
198.18.0.11 (a second STUN address for the self-test) and a \`serve --no-turn\`
at 198.18.0.12. Router N has WAN 198.18.N.1 and LAN 10.0.N.0/24. NAT kinds:

- **EIM** (r1, r2, r6): \`MASQUERADE\`. Linux keeps the source port when it
  can, so one internal ip:port has one public ip:port whatever the
  destination (endpoint-independent mapping). Filtering is conntrack's:
  only replies from the exact address and port sent to (port-restricted).
- **symmetric** (r3, r4): \`MASQUERADE --random-fully\`: a new random public
  port for every new destination (endpoint-dependent mapping).
- **firewall** (r5): FORWARD admits only TCP to port 3478 and to the signaling
  server's :8080 (as a web proxy would); all UDP is dropped; then EIM NAT.

No link reaches the root namespace (every veth is made with both ends inside
lab namespaces), IPv6 is disabled in every lab namespace, and ip_forward is on
only in the routers. The lab is torn down on exit, error or interrupt.

EOF
    cat <<'EOF'
### Why these pairs

- **symmetric + EIM relays.** The symmetric NAT gives its peer a new public
  port for every destination, so the port in its srflx candidate (learned
  towards the STUN server) is not the port its checks to the other peer come
  from. The EIM NAT filters by address *and* port (Linux conntrack admits only
  replies to what was sent), so it drops those checks: the other side has
  only sent to the srflx port. The other direction fails the same way, since
  the symmetric NAT admits only replies to its own per-destination mapping.
  So no direct pair can form in this lab; behind an EIM NAT with
  address-restricted or open filtering, the symmetric side's checks would get
  in and a peer-reflexive direct pair would be found.
- **Relay pairs are relay<->prflx.** Only one side needs a relay: the peer
  with the relay candidate sends through TURN, and the other peer answers the
  relay address from its host socket (the TURN permission is per IP, so the
  symmetric NAT's fresh port for that destination is let in), which the relay
  side learns as a peer-reflexive remote.
- **The local side is a base.** As docs/cli.md says, a pair's local candidate
  is `host` or `relay` (srflx is replaced by its base), so behind a NAT the
  reflexive type shows on the remote side.
- **net-change MB/s** includes the outage, and the sender's uplink is shaped
  to 16 Mbit/s so that the transfer has a middle.
- **More than 100% direct.** The CLI sends the first data-channel datagrams
  twice until it has seen the link is clean (`--redundancy auto`), so a
  clean 16 MiB transfer puts about 115% of the file on the wire, and the
  lossy scenario, with copies on throughout, about 220%.
- **When the browser row shows well over 100%**, that is Chromium
  resending: the debug-build `recv` in the lab sometimes cannot keep up
  and drops part of what Chromium sends (one run: 253% of the file, with
  recv's `redundancy.loss_in` at 32%; the next, 105%).

EOF
    cat <<EOF
### Self-test

Before any scenario, the lab checks itself; a failure here is reported as a
broken lab and no scenario runs. With a peer's ephemeral port range pinned to
one port, coturn's \`turnutils_stunclient\` asks the two STUN servers (two
internet addresses) and then the first again, from the same internal
ip:port. This run:

\`\`\`text
EOF
    cat "$WORK/selftest.txt"
    cat <<'EOF'
```

### Browser row

Chromium runs inside a lab host like any other program (`ip netns exec`),
headless, as root with `--no-sandbox`. One catch: the lab serves `/chat`
over plain http on a non-loopback address, which is not a secure context, so
the page would have no Origin Private File System to write received files to
and would keep them in memory instead. A deployment puts serve behind TLS;
the lab starts Chromium with
`--unsafely-treat-insecure-origin-as-secure=<the serve origin>` instead.

### Why a direct pair can trail a relayed one (eim-eim)

Both NATs filter inbound packets by address and port, so a direct check gets
through only after the other side has sent one the opposite way. When the
two sides' first checks to each other's srflx cross, both are dropped, while
a pair through TURN succeeds at once (each side's check to the other's relay
opened its own NAT for the relay's address). The controlling peer then
nominates the relayed pair, and the data moves to the direct pair when its
check is retransmitted and answered.

With str0m's 250 ms first retransmit and each trickled candidate delayed by
Nagle's algorithm on the signaling socket (about 40 ms, waiting for a delayed
ACK), a 4 MiB transfer usually finished before that: in one run of 10 4 MiB
transfers on the old build, 9 went direct with setup times of 303-322 ms,
and one went 93% through TURN. The native peer now retransmits unanswered
checks after 50 ms (`Config::ice_check_rto`) and its signaling socket has
Nagle off. Setup behind two EIM NATs dropped to about 110 ms. In 110 runs on
debug and release builds (4 and 16 MiB), every transfer ended on the direct
pair. In 3 of them the relay carried the start, 10-32% of a 4 MiB file,
for about 63 ms before the switch.

Two things in str0m's ICE agent (the `is` crate, 0.12) keep the remaining
delay at about 100 ms. Upstream changes would remove them:
- A pair that the controlling side nominates should have its check sent at
  once. Instead, `CandidatePair::nominate` keeps the cached time of the
  pair's next check, so the controlled side still waits for the retransmit.
- There are no triggered checks (RFC 8445 section 7.3.1.4). A check that
  arrives on a pair whose own check is in flight should retransmit that
  check at once, rather than waiting out the RTO behind the 50 ms pacing (Ta).
EOF
}
