# shellcheck shell=bash
# The NAT lab's network: namespaces, veth links, NAT routers, teardown.
# Sourced by tests/nat/lab.sh; expects `die`, `log` and `LAB_*` from there.
#
# Topology (every address exists only inside the lab):
#
#   "internet" 198.18.0.0/15 (RFC 2544 benchmarking range), one L2 segment:
#   a bridge inside the namespace `inet`, which has no IP address of its own.
#
#     srv   198.18.0.10  switchboard serve: signaling :8080, STUN/TURN :3478
#           198.18.0.11  a second serve (second STUN address, for the self-test)
#           198.18.0.12  serve --no-turn (signaling only)
#     rN    198.18.N.1   WAN side of NAT router N (N = 1..6)
#
#   LAN N: 10.0.N.0/24 behind router N (router 10.0.N.1 on a bridge `lan`),
#   peers at 10.0.N.2, 10.0.N.3, each with a default route via the router.
#
# No link leaves the lab: every veth is created with both ends inside lab
# namespaces (`ip -n NS link add ... peer ... netns OTHER`), so none ever
# exists in the root namespace. IPv6 is disabled in every lab namespace
# before any link is added. ip_forward is set only in router namespaces.

LAB_PREFIX=${LAB_PREFIX:-sbnat$$}
LAB_NS=()       # every namespace made, in creation order
LAB_PIDS=()     # every background process started in the lab

INET_NET=198.18.0.0/15
INET_LEN=15
SRV_IP=198.18.0.10
SRV2_IP=198.18.0.11
NOTURN_IP=198.18.0.12

ns() { printf '%s-%s' "$LAB_PREFIX" "$1"; }

# Runs a command inside lab namespace $1.
in_ns() {
    local n; n=$(ns "$1"); shift
    ip netns exec "$n" "$@"
}

new_ns() {
    local name; name=$(ns "$1")
    ip netns add "$name" || die "cannot create network namespace $name"
    LAB_NS+=("$name")
    if [ -d /proc/sys/net/ipv6 ]; then
        ip netns exec "$name" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 \
            || die "cannot disable IPv6 in $name"
    fi
    ip -n "$name" link set dev lo up
}

# veth between namespace $1 (interface $2) and namespace $3 (interface $4).
veth() {
    ip -n "$(ns "$1")" link add name "$2" type veth peer name "$4" netns "$(ns "$3")" \
        || die "cannot create veth $1:$2 <-> $3:$4"
    if [ -d /proc/sys/net/ipv6 ]; then
        in_ns "$1" sysctl -qw "net.ipv6.conf.$2.disable_ipv6=1" 2>/dev/null || true
        in_ns "$3" sysctl -qw "net.ipv6.conf.$4.disable_ipv6=1" 2>/dev/null || true
    fi
}

# Attaches host namespace $1 to the internet bridge with interface eth0.
attach_inet() {
    local host=$1; shift
    veth inet "$host" "$host" eth0
    ip -n "$(ns inet)" link set dev "$host" master br0 up
    local a
    for a in "$@"; do ip -n "$(ns "$host")" addr add "$a/$INET_LEN" dev eth0; done
    ip -n "$(ns "$host")" link set dev eth0 up
}

# NAT router N of a kind: eim | sym | fw. WAN 198.18.N.1, LAN 10.0.N.1/24.
make_router() {
    local n=$1 kind=$2 r="r$1"
    new_ns "$r"
    veth inet "$r" "$r" wan
    ip -n "$(ns inet)" link set dev "$r" master br0 up
    ip -n "$(ns "$r")" addr add "198.18.$n.1/$INET_LEN" dev wan
    ip -n "$(ns "$r")" link set dev wan up
    ip -n "$(ns "$r")" link add name lan type bridge
    ip -n "$(ns "$r")" addr add "10.0.$n.1/24" dev lan
    ip -n "$(ns "$r")" link set dev lan up
    in_ns "$r" sysctl -qw net.ipv4.ip_forward=1
    local ipt=(in_ns "$r" iptables -w)
    # A NAT router forwards nothing unsolicited from the WAN into the LAN, and
    # drops (not rejects) unsolicited packets to itself. The drop matters:
    # an unsolicited packet that reached the router's own UDP stack would
    # leave a confirmed conntrack entry (peer -> router:port) behind, and the
    # LAN host's own later packet to that peer could then not keep its port
    # (the NAT tuple clashes), which breaks endpoint-independent mapping
    # exactly when ICE checks cross. Home routers drop such packets.
    "${ipt[@]}" -A FORWARD -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
    "${ipt[@]}" -A FORWARD -i wan -j DROP
    "${ipt[@]}" -A INPUT -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
    "${ipt[@]}" -A INPUT -i wan -j DROP
    # Byte counters per flow: the lab's own record of where the data went.
    in_ns "$r" sysctl -qw net.netfilter.nf_conntrack_acct=1 2>/dev/null \
        || die "cannot enable net.netfilter.nf_conntrack_acct in $r"
    case $kind in
        eim)
            # Endpoint-independent mapping: MASQUERADE keeps the source port
            # when it can, so one internal ip:port maps to one public ip:port
            # whatever the destination. (Filtering is address-and-port
            # dependent, as conntrack only admits replies: a "port-restricted
            # cone" in RFC 3489 words.)
            "${ipt[@]}" -t nat -A POSTROUTING -o wan -j MASQUERADE
            ;;
        sym)
            # Endpoint-dependent ("symmetric") mapping: every new conntrack
            # entry, i.e. every new destination, gets a random public port.
            "${ipt[@]}" -t nat -A POSTROUTING -o wan -j MASQUERADE --random-fully
            ;;
        fw)
            # A strict firewall in front of an EIM NAT: the LAN may open TCP
            # to port 3478 (STUN/TURN over TCP) anywhere, and TCP to the
            # signaling server's web port (as a web proxy would); all else,
            # UDP included, is dropped.
            "${ipt[@]}" -A FORWARD -i lan -o wan -p tcp --dport 3478 -j ACCEPT
            "${ipt[@]}" -A FORWARD -i lan -o wan -p tcp -d "$SRV_IP" --dport 8080 -j ACCEPT
            "${ipt[@]}" -A FORWARD -i lan -o wan -p tcp -d "$NOTURN_IP" --dport 8080 -j ACCEPT
            "${ipt[@]}" -A FORWARD -i lan -j DROP
            "${ipt[@]}" -t nat -A POSTROUTING -o wan -j MASQUERADE
            ;;
        *) die "unknown router kind $kind" ;;
    esac
}

# Peer namespace $1 in LAN N ($2) with host number $3 (address 10.0.N.$3).
make_peer() {
    local p=$1 n=$2 h=$3
    new_ns "$p"
    veth "r$n" "$p" "$p" eth0
    ip -n "$(ns "r$n")" link set dev "$p" master lan up
    ip -n "$(ns "$p")" addr add "10.0.$n.$h/24" dev eth0
    ip -n "$(ns "$p")" link set dev eth0 up
    ip -n "$(ns "$p")" route add default via "10.0.$n.1"
}

# The routers and peers every scenario draws from.
#   r1 eim: p1a, p1b      r2 eim: p2      r3 sym: p3      r4 sym: p4
#   r5 fw (TCP 3478 only): p5             r6 eim, renumbered mid-transfer: p6
build_lab() {
    new_ns inet
    ip -n "$(ns inet)" link add name br0 type bridge
    ip -n "$(ns inet)" link set dev br0 up
    new_ns srv
    attach_inet srv "$SRV_IP" "$SRV2_IP" "$NOTURN_IP"
    make_router 1 eim; make_peer p1a 1 2; make_peer p1b 1 3
    make_router 2 eim; make_peer p2 2 2
    make_router 3 sym; make_peer p3 3 2
    make_router 4 sym; make_peer p4 4 2
    make_router 5 fw;  make_peer p5 5 2
    make_router 6 eim; make_peer p6 6 2
}

# Router N gets a new WAN address 198.18.N.2 and loses the old one, and its
# conntrack table is flushed: every mapping of its LAN changes at once (an ISP
# renumbering the line). MASQUERADE picks the new address for new flows.
renumber_router() {
    local n=$1 r="r$1"
    ip -n "$(ns "$r")" addr add "198.18.$n.2/$INET_LEN" dev wan
    ip -n "$(ns "$r")" addr del "198.18.$n.1/$INET_LEN" dev wan
    in_ns "$r" conntrack -F >/dev/null 2>&1 || true
}

# Starts a command in the background inside namespace $1; its pid goes to
# LAB_PIDS (killed by teardown) and to the variable named $2.
spawn_in() {
    local where=$1 var=$2; shift 2
    in_ns "$where" "$@" &
    local spawned=$!
    LAB_PIDS+=("$spawned")
    printf -v "$var" '%s' "$spawned"
}

teardown_lab() {
    local pid n
    for pid in "${LAB_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    # Anything still running inside a lab namespace was started by this run.
    for n in "${LAB_NS[@]}"; do
        for pid in $(ip netns pids "$n" 2>/dev/null); do
            kill -TERM "$pid" 2>/dev/null || true
        done
    done
    sleep 0.3
    for n in "${LAB_NS[@]}"; do
        for pid in $(ip netns pids "$n" 2>/dev/null); do
            kill -KILL "$pid" 2>/dev/null || true
        done
    done
    for pid in "${LAB_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    for n in "${LAB_NS[@]}"; do
        ip netns del "$n" 2>/dev/null || true
    done
    LAB_NS=()
    LAB_PIDS=()
}

# Flows router N has NATed for its LAN, biggest first, one per line:
#   BYTES PROTO LAN_IP:PORT DST_IP:PORT   (bytes the LAN host sent)
router_flows() {
    in_ns "r$1" conntrack -L 2>/dev/null | awk -v lan="10.0.$1." '
        {
            proto = $1; src = ""; dst = ""; sport = ""; dport = ""; bytes = 0; seen = 0
            for (i = 2; i <= NF; i++) {
                split($i, kv, "=")
                if (kv[1] == "src" && src == "") src = kv[2]
                else if (kv[1] == "dst" && dst == "") dst = kv[2]
                else if (kv[1] == "sport" && sport == "") sport = kv[2]
                else if (kv[1] == "dport" && dport == "") dport = kv[2]
                else if (kv[1] == "bytes" && !seen) { bytes = kv[2]; seen = 1 } # the original (outgoing) direction
            }
            if (index(src, lan) == 1) print bytes, proto, src ":" sport, dst ":" dport
        }' | sort -rn
}

# Bytes router N carried for its LAN, by where they went:
#   "DIRECT TURN_UDP TURN_TCP LAN" (what the LAN hosts sent, per flow;
#   DIRECT is to another NAT's public address, TURN_* to the lab's serve,
#   LAN stays inside the LAN and only shows when br_netfilter is loaded).
path_bytes() {
    router_flows "$1" | awk -v srv="$SRV_IP" '
        { split($4, d, ":"); ip = d[1]
          if (ip == srv) { if ($2 == "tcp") tt += $1; else tu += $1 }
          else if (ip ~ /^10\./) lan += $1
          else direct += $1 }
        END { printf "%d %d %d %d\n", direct, tu, tt, lan }'
}
