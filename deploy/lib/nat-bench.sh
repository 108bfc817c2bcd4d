#!/usr/bin/env bash
# deploy/lib/nat-bench.sh - NAT packet rate through one VPC router, our nftables against
# CloudStack's virtual-router layout, same topology, same run (called by deploy/bench.sh
# part nat; needs root).
#
#   nat-bench.sh --bin DIR [--sizes 10,10000] [--seconds S] [--repeat R]
#
# Three namespaces: internet --(i0 | transit)-- router --(t1 | eth0)-- vm (10.10.1.11). The
# router holds, in turn, the table the gateway agent renders for N UDP port forwards
# (`dp_bench nat-table`, the real renderer) and, as the baseline, the same N forwards as
# iptables DNAT rules, one per forward in PREROUTING (as CloudStack's VR writes them). The
# generator (`dp_bench udp-flood`, AF_PACKET) sends 60-byte UDP frames round robin over the
# forwards, every packet a new 5-tuple, so every packet walks the NAT rules (conntrack
# serves the later packets of a connection, which pay for no rule: this is the worst case).
# Counted: packets the vm's eth0 received (packets the router did not translate are routed
# back to the internet side, never to the vm). The router's UDP conntrack timeout is 1 s
# so its table stays small. Prints `figure,value,baseline,ratio` lines (median of R runs).
set -euo pipefail
BIN=""
SIZES=10,10000
SECONDS_EACH=3
REPEAT=3
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) BIN=$2; shift 2 ;;
        --sizes) SIZES=$2; shift 2 ;;
        --seconds) SECONDS_EACH=$2; shift 2 ;;
        --repeat) REPEAT=$2; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "nat-bench needs root (network namespaces)" >&2; exit 1; }
DP=${BIN:?--bin DIR}/examples/dp_bench
[ -x "$DP" ] || { echo "missing $DP (cargo build --release -p sf-gateway-agent --example dp_bench)" >&2; exit 1; }
command -v iptables-restore >/dev/null ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends iptables >/dev/null ||
    { echo "iptables not installable" >&2; exit 1; }
P=${LAB_PREFIX:-sfnb$$-}
NI=${P}inet NR=${P}rtr NV=${P}vm
TMP=$(mktemp -d /tmp/sf-nat-bench.XXXXXX)
cleanup() {
    local ns
    for ns in "$NI" "$NR" "$NV"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
log() { printf '[nat-bench] %s\n' "$*" >&2; }

topology() {
    local ns
    for ns in "$NI" "$NR" "$NV"; do ip netns add "$ns" && ip -n "$ns" link set lo up; done
    ip -n "$NI" link add i0 type veth peer name transit netns "$NR"
    ip -n "$NR" link add t1 type veth peer name eth0 netns "$NV"
    ip -n "$NI" addr add 192.0.2.1/30 dev i0
    ip -n "$NR" addr add 192.0.2.2/30 dev transit
    ip -n "$NR" addr add 10.10.1.1/24 dev t1
    ip -n "$NV" addr add 10.10.1.11/24 dev eth0
    ip -n "$NI" link set i0 up
    ip -n "$NR" link set transit up
    ip -n "$NR" link set t1 up
    ip -n "$NV" link set eth0 up
    ip -n "$NR" route add default via 192.0.2.1
    ip -n "$NV" route add default via 10.10.1.1
    ip netns exec "$NR" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
        net.ipv4.conf.transit.rp_filter=0
    # The vm drops what it receives (no socket, so no ICMP errors back through the router).
    ip netns exec "$NV" nft -f - <<'EOF'
table ip sink {
    chain in {
        type filter hook prerouting priority raw; policy drop;
        udp dport 5000-65535 counter
    }
}
EOF
    ip netns exec "$NR" ping -c 1 -W 2 10.10.1.11 >/dev/null 2>&1 || true # the router learns the vm's MAC
    RMAC=$(ip -n "$NR" -j link show transit | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])')
}

# load KIND N: the router's NAT for N forwards, nothing else (KIND nft or iptables).
load() {
    ip netns exec "$NR" nft flush ruleset
    case $1 in
        nft) "$DP" nat-table --forwards "$2" | ip netns exec "$NR" nft -f - ;;
        iptables) "$DP" nat-table --forwards "$2" --iptables | ip netns exec "$NR" iptables-restore ;;
    esac
    # Conntrack is loaded for the namespace now; entries of the previous run expire in 1 s.
    ip netns exec "$NR" sysctl -qw net.netfilter.nf_conntrack_udp_timeout=1
    sleep 2
}

rx() { ip netns exec "$NV" cat /sys/class/net/eth0/statistics/rx_packets; }

# rate KIND N: packets per second the vm received, median of REPEAT runs.
rate() {
    local kind=$1 n=$2 i r0 r1 sent v=()
    load "$kind" "$n"
    for i in $(seq "$REPEAT"); do
        r0=$(rx)
        sent=$(ip netns exec "$NI" "$DP" udp-flood --dev i0 --dst-mac "$RMAC" --forwards "$n" --seconds "$SECONDS_EACH")
        sleep 0.3
        r1=$(rx)
        v+=("$(python3 -c "print(int(($r1 - $r0) / $SECONDS_EACH))")")
        log "$kind, $n forwards, run $i: sent $sent, vm received $((r1 - r0))"
        sleep 1.2
    done
    printf '%s\n' "${v[@]}" | sort -n | sed -n "$(( (REPEAT + 1) / 2 ))p"
}

topology
declare -A NFT IPT
IFS=, read -r -a NS <<<"$SIZES"
for n in "${NS[@]}"; do
    NFT[$n]=$(rate nft "$n")
    IPT[$n]=$(rate iptables "$n")
done
ratio() { python3 -c 'import sys; a,b=map(float,sys.argv[1:]); print(f"{a/b:.2f}" if b > 0 else "")' "$@"; }
echo "figure,value,baseline,ratio"
for n in "${NS[@]}"; do
    echo "nat_new_flow_pps_${n}_forwards,${NFT[$n]},${IPT[$n]} (iptables DNAT chain as in CloudStack's VR),$(ratio "${NFT[$n]}" "${IPT[$n]}")"
done
first=${NS[0]} last=${NS[${#NS[@]} - 1]}
if [ "$first" != "$last" ]; then
    echo "nat_new_flow_pps_${last}_vs_${first}_forwards,${NFT[$last]},${NFT[$first]} (ours at $first forwards),$(ratio "${NFT[$last]}" "${NFT[$first]}")"
fi
