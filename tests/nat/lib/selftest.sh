# shellcheck shell=bash
# Preflight (does the kernel and userland have what the lab needs?) and the
# lab self-test (does the built lab behave as designed?). A failure in either
# is reported as a broken lab, never as a peer failure.

# Commands the lab uses, as "command:debian-package".
LAB_TOOLS="ip:iproute2 iptables:iptables conntrack:conntrack tc:iproute2 turnutils_stunclient:coturn jq:jq timeout:coreutils sha256sum:coreutils"

install_tools() {
    local pair missing=()
    for pair in $LAB_TOOLS; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    # shellcheck disable=SC2207
    missing=($(printf '%s\n' "${missing[@]}" | sort -u))
    log "installing Debian packages: ${missing[*]}"
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    apt-get update -q >/dev/null || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
    for pair in $LAB_TOOLS; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || die "${pair%%:*} still missing after installing ${pair#*:}"
    done
}

# Tries each kernel feature in a throwaway namespace and says which one is
# missing. Nothing here is skipped: a kernel without one of these cannot run
# the lab, and the lab says so and fails.
preflight() {
    [ "$(id -u)" -eq 0 ] || die "the NAT lab needs root (network namespaces, iptables); run it as root"
    install_tools
    local p="$LAB_PREFIX-probe"
    local fail=""
    ip netns add "$p" 2>/dev/null || die "kernel/iproute2: cannot create a network namespace (CONFIG_NET_NS, or no CAP_SYS_ADMIN)"
    LAB_NS+=("$p")
    ip netns exec "$p" true || fail="cannot enter a network namespace (ip netns exec)"
    [ -z "$fail" ] && { ip -n "$p" link add name vprobe0 type veth peer name vprobe1 >/dev/null 2>&1 || fail="kernel lacks veth (CONFIG_VETH)"; }
    [ -z "$fail" ] && { ip -n "$p" link add name brprobe type bridge >/dev/null 2>&1 || fail="kernel lacks bridges (CONFIG_BRIDGE)"; }
    [ -z "$fail" ] && { ip netns exec "$p" sysctl -qw net.ipv4.ip_forward=1 || fail="cannot set net.ipv4.ip_forward in a namespace"; }
    [ -z "$fail" ] && { ip netns exec "$p" iptables -w -t nat -A POSTROUTING -o vprobe0 -j MASQUERADE >/dev/null 2>&1 \
        || fail="iptables nat table / MASQUERADE unavailable (CONFIG_NF_NAT, CONFIG_NETFILTER_XT_TARGET_MASQUERADE or nft_masq)"; }
    [ -z "$fail" ] && { ip netns exec "$p" iptables -w -t nat -A POSTROUTING -o vprobe1 -j MASQUERADE --random-fully >/dev/null 2>&1 \
        || fail="MASQUERADE --random-fully unavailable (kernel or iptables too old; the symmetric NAT needs it)"; }
    [ -z "$fail" ] && { ip netns exec "$p" iptables -w -A FORWARD -m conntrack --ctstate ESTABLISHED -j ACCEPT >/dev/null 2>&1 \
        || fail="iptables conntrack match unavailable (CONFIG_NETFILTER_XT_MATCH_CONNTRACK)"; }
    [ -z "$fail" ] && { ip netns exec "$p" conntrack -L >/dev/null 2>&1 \
        || fail="conntrack netlink unavailable (CONFIG_NF_CT_NETLINK): conntrack -L fails, the network-change scenario needs it"; }
    [ -z "$fail" ] && { ip netns exec "$p" tc qdisc add dev vprobe0 root tbf rate 8mbit burst 32kb latency 50ms >/dev/null 2>&1 \
        || fail="tc tbf qdisc unavailable (CONFIG_NET_SCH_TBF)"; }
    ip netns del "$p" 2>/dev/null || true
    LAB_NS=()
    [ -z "$fail" ] || die "kernel check failed: $fail"
    log "preflight: netns, veth, bridge, iptables nat (MASQUERADE, --random-fully), conntrack, tc tbf: ok ($(uname -r))"
}

SELFTEST_FAILS=0
st_ok()   { printf '  ok    %s\n' "$*"; }
st_fail() { printf '  FAIL  %s\n' "$*"; SELFTEST_FAILS=$((SELFTEST_FAILS + 1)); }

# Can namespace $1 open TCP to $2:$3 within 3 s?
tcp_open() {
    in_ns "$1" timeout 3 bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null
}

# The mapped address ("ip:port") turnutils_stunclient gets from STUN server
# $2 when run in namespace $1, or "" when no answer comes.
stun_mapped() {
    in_ns "$1" timeout 4 turnutils_stunclient -p 3478 "$2" 2>/dev/null \
        | sed -n 's/.*UDP reflexive addr: *\([0-9.]*:[0-9]*\).*/\1/p' | head -1
}

# Mapping behaviour of the NAT in front of peer $1: with the peer's ephemeral
# port range pinned to one port, every stunclient run uses the same internal
# ip:port, so the NAT sees one internal endpoint talking to two STUN servers
# (two internet addresses) and then to the first again.
# Prints "M1 M2 M1again".
probe_mapping() {
    local p=$1 saved
    saved=$(in_ns "$p" cat /proc/sys/net/ipv4/ip_local_port_range)
    in_ns "$p" sysctl -qw net.ipv4.ip_local_port_range="40000 40000"
    local m1 m2 m3
    m1=$(stun_mapped "$p" "$SRV_IP")
    m2=$(stun_mapped "$p" "$SRV2_IP")
    m3=$(stun_mapped "$p" "$SRV_IP")
    in_ns "$p" sysctl -qw net.ipv4.ip_local_port_range="$(echo "$saved" | tr '\t' ' ')"
    echo "${m1:-none} ${m2:-none} ${m3:-none}"
}

check_eim() {
    local p=$1 pub=$2 m1 m2 m3
    read -r m1 m2 m3 < <(probe_mapping "$p")
    if [ "$m1" = none ] || [ "$m2" = none ] || [ "$m3" = none ]; then
        st_fail "$p (EIM NAT): no STUN answer ($m1 $m2 $m3)"
    elif [ "$m1" = "$m2" ] && [ "$m1" = "$m3" ] && [ "$m1" = "$pub:40000" ]; then
        st_ok "$p (EIM NAT): 10.x:40000 maps to $m1 for both STUN servers (same mapping, port kept)"
    else
        st_fail "$p (EIM NAT): mappings $m1 / $m2 / $m3, want all $pub:40000"
    fi
}

check_sym() {
    local p=$1 pub=$2 m1 m2 m3
    read -r m1 m2 m3 < <(probe_mapping "$p")
    if [ "$m1" = none ] || [ "$m2" = none ] || [ "$m3" = none ]; then
        st_fail "$p (symmetric NAT): no STUN answer ($m1 $m2 $m3)"
    elif [ "${m1%:*}" = "$pub" ] && [ "${m2%:*}" = "$pub" ] && [ "$m1" != "$m2" ] && [ "$m1" = "$m3" ]; then
        st_ok "$p (symmetric NAT): 10.x:40000 maps to $m1 towards $SRV_IP and $m2 towards $SRV2_IP (new port per destination, stable per destination)"
    else
        st_fail "$p (symmetric NAT): mappings $m1 / $m2 / $m3, want two different ports on $pub and the first repeated"
    fi
}

selftest() {
    log "lab self-test"
    SELFTEST_FAILS=0
    local n
    # Isolation: the root namespace gained no link and no lab address.
    if [ "$(ip -o link show | wc -l)" = "$ROOT_LINKS_BEFORE" ]; then
        st_ok "root namespace has no lab link ($ROOT_LINKS_BEFORE links, as before)"
    else
        st_fail "root namespace link count changed: $ROOT_LINKS_BEFORE -> $(ip -o link show | wc -l)"
    fi
    if ip -o addr show | grep -q ' 198\.1[89]\.'; then
        st_fail "a 198.18.0.0/15 address is in the root namespace"
    else
        st_ok "no lab address in the root namespace"
    fi
    # No IPv6 and no default route out of the internet segment.
    local v6=0
    for n in "${LAB_NS[@]}"; do
        if ip netns exec "$n" ip -6 -o addr show 2>/dev/null | grep -q inet6; then v6=1; st_fail "$n has an IPv6 address"; fi
    done
    [ $v6 = 0 ] && st_ok "no IPv6 address in any lab namespace"
    local leak=0
    local other
    for n in srv r1 r2 r3 r4 r5 r6; do
        if in_ns "$n" ip route get 192.0.2.1 >/dev/null 2>&1; then leak=1; st_fail "$n has a route beyond the lab"; fi
        case $n in srv) other=1 ;; *) other=$(( ${n#r} % 6 + 1 )) ;; esac
        if in_ns "$n" ip route get "10.0.$other.2" >/dev/null 2>&1; then leak=1; st_fail "$n can route to LAN 10.0.$other.0/24"; fi
    done
    [ $leak = 0 ] && st_ok "servers and routers have no route out of the lab, nor into other LANs"
    # Signaling is reachable from every LAN, through every NAT kind.
    for n in p1a p1b p2 p3 p4 p5 p6; do
        if tcp_open "$n" "$SRV_IP" 8080; then st_ok "$n reaches signaling $SRV_IP:8080"
        else st_fail "$n cannot reach signaling $SRV_IP:8080"; fi
    done
    # Mapping behaviour, measured with coturn's turnutils_stunclient.
    check_eim p1a 198.18.1.1
    check_eim p2 198.18.2.1
    check_eim p6 198.18.6.1
    check_sym p3 198.18.3.1
    check_sym p4 198.18.4.1
    # The firewall LAN: no UDP at all, TCP only to port 3478 (and signaling).
    local m; m=$(stun_mapped p5 "$SRV_IP")
    if [ -z "$m" ]; then st_ok "p5 (firewall): UDP STUN to $SRV_IP:3478 gets no answer"
    else st_fail "p5 (firewall): UDP STUN got an answer ($m), UDP should be dropped"; fi
    if tcp_open p5 "$SRV_IP" 3478; then st_ok "p5 (firewall): TCP $SRV_IP:3478 opens"
    else st_fail "p5 (firewall): TCP $SRV_IP:3478 does not open"; fi
    if tcp_open p5 "$SRV2_IP" 8080; then st_fail "p5 (firewall): TCP $SRV2_IP:8080 opens, should be dropped"
    else st_ok "p5 (firewall): TCP to other ports ($SRV2_IP:8080) is dropped"; fi
    # The signaling-only server has no STUN.
    m=$(stun_mapped p2 "$NOTURN_IP")
    if [ -z "$m" ]; then st_ok "serve --no-turn on $NOTURN_IP answers no STUN"
    else st_fail "serve --no-turn on $NOTURN_IP answered STUN ($m)"; fi
    if [ "$SELFTEST_FAILS" -gt 0 ]; then
        return 1
    fi
    log "lab self-test: all checks passed"
}
