#!/usr/bin/env bash
# softgate-proof.sh - prove the SoftGate (VPC router in a network namespace on a
# gateway node) with real packets, using deploy/lib/netlab.sh.
#
#   sudo LAB_PREFIX=sfg- deploy/lib/softgate-proof.sh [--keep] [--agent BIN]
#
# Without --agent the VPC router is built by this script (the shell prototype of
# the design). With --agent BIN (target/release/sf-gateway-agent) the gateway
# node's L2 (VTEP, vxlan/brvx), the VPC router and gw1's FRR are built by the Rust
# agent from a NodeDesired JSON (its --apply-file debug path, run inside gw1 with
# `nsenter --net`, never in the host namespace), then the agent is run a second
# time and must report zero changes; then the lease rules are exercised (--lease
# unknown: no change; lost: stand down and withdraw; --stale: nothing brought up;
# held+fresh: router re-created and reachable).
#
# Topology (every namespace prefixed $LAB_PREFIX, default sfg-):
#   leaf1     AS 65101, lo 10.255.0.1, EVPN transit, eBGP unnumbered to all
#   hv1       AS 65001, VTEP 10.255.1.1, brvx-1000001 (CloudStack layout)
#   vm1       10.10.1.11/24 gw 10.10.1.1, on hv1 brvx-1000001 (HTTP :80)
#   vm2       10.10.1.12/24 gw 10.10.1.1, on hv1 brvx-1000001
#   gw1       AS 65011, VTEP 10.255.2.1, brvx-1000001; VPC id 7 router:
#   vpc-7     namespace ${P}vpc-7: t1000001 10.10.1.1/24 MAC 02:5f:00:00:00:07
#             (veth g7v1000001 in gw1's brvx-1000001), transit 198.18.0.15/31
#             <-> gw1:gx7 198.18.0.14/31; nftables NAT (table ip stackfabric)
#   internet  AS 65200, lo 198.51.100.10/32 (HTTP :80), default-originate to
#             leaf1 (which treats it as one more fabric neighbour)
# Public pool 203.0.113.0/24: SNAT 203.0.113.10, port forward
# 203.0.113.11:8080 -> 10.10.1.11:80, static NAT 203.0.113.12 <-> 10.10.1.11;
# gw1 routes the /32s into the VPC namespace and announces them with BGP.
# Exit 0 only if every check passes; cleanup on any exit unless --keep.
# shellcheck disable=SC2317  # functions invoked indirectly (trap, check, netlab_wait)
set -u -o pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export LAB_PREFIX=${LAB_PREFIX:-sfg-}
# shellcheck source=netlab.sh source-path=SCRIPTDIR
. "$HERE/netlab.sh"

KEEP=0
AGENT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --keep) KEEP=1 ;;
        --agent) AGENT=$(realpath "$2") || exit 2; shift ;;
        *) echo "usage: $0 [--keep] [--agent BIN]" >&2; exit 2 ;;
    esac
    shift
done
P=$LAB_PREFIX
VNI=1000001
VPC_ID=7
VPC_NS=${P}vpc-$VPC_ID
VPC_MAC=02:5f:00:00:00:07
# transit /31 of VPC id: 198.18.0.0 + 2*id (host side) / +1 (namespace side)
TR_HOST=198.18.0.14
TR_NS=198.18.0.15
FAIL=0

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
log() { printf '[%6d ms] %s\n' $(( $(now_ms) - T0 )) "$*"; }
check() { # check DESCRIPTION CMD...
    local d=$1; shift
    if "$@"; then log "PASS: $d"; else log "FAIL: $d"; FAIL=1; fi
}
finish() {
    local rc=$?
    if [ "$KEEP" = 1 ]; then
        echo "--keep: lab left running; clean with: . $HERE/netlab.sh; netlab_cleanup $P"
    else
        netlab_cleanup "$P"
        sleep 0.5
        if netlab_check_clean "$P"; then echo "cleanup: no namespace/process/dir left"; else rc=1; fi
    fi
    exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

bgp_conf() { # bgp_conf HOST ASN ID NEIGHBORS EXTRA_NETWORKS VTEP(0/1) TRANSIT(0/1)
    local host=$1 asn=$2 id=$3 nbrs=$4 nets=$5 vtep=$6 transit=$7 n
    echo "frr defaults datacenter"
    echo "hostname $host"
    [ "$transit" = 1 ] && { echo "ip forwarding"; echo "ipv6 forwarding"; }
    echo "!"
    echo "router bgp $asn"
    echo " bgp router-id $id"
    echo " no bgp ebgp-requires-policy"
    echo " bgp bestpath as-path multipath-relax"
    echo " neighbor FABRIC peer-group"
    echo " neighbor FABRIC remote-as external"
    for n in $nbrs; do echo " neighbor $n interface peer-group FABRIC"; done
    echo " !"
    echo " address-family ipv4 unicast"
    echo "  network $id/32"
    for n in $nets; do echo "  network $n"; done
    echo " exit-address-family"
    echo " !"
    echo " address-family l2vpn evpn"
    echo "  neighbor FABRIC activate"
    [ "$vtep" = 1 ] && echo "  advertise-all-vni"
    echo " exit-address-family"
    echo "exit"
    echo "!"
}

internet_conf() {
    cat <<'EOF'
frr defaults datacenter
hostname internet
!
router bgp 65200
 bgp router-id 198.51.100.10
 no bgp ebgp-requires-policy
 neighbor leaf1 interface remote-as external
 !
 address-family ipv4 unicast
  network 198.51.100.10/32
  neighbor leaf1 default-originate
 exit-address-family
exit
!
EOF
}

# The ruleset sf-gateway-agent's render_nft emits for this VPC (minus its digest comment).
vpc_nft() {
    cat <<'EOF'
table ip stackfabric
delete table ip stackfabric
table ip stackfabric {
	set inside {
		type ipv4_addr
		flags interval
		elements = { 10.10.0.0/16 }
	}
	map pf_tcp {
		type ipv4_addr . inet_service : ipv4_addr . inet_service
		elements = { 203.0.113.11 . 8080 : 10.10.1.11 . 80 }
	}
	map pf_udp {
		type ipv4_addr . inet_service : ipv4_addr . inet_service
	}
	map static_in {
		type ipv4_addr : ipv4_addr
		elements = { 203.0.113.12 : 10.10.1.11 }
	}
	map static_out {
		type ipv4_addr : ipv4_addr
		elements = { 10.10.1.11 : 203.0.113.12 }
	}
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		dnat ip to ip daddr . tcp dport map @pf_tcp
		dnat ip to ip daddr . udp dport map @pf_udp
		dnat ip to ip daddr map @static_in
	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "transit" snat ip to ip saddr map @static_out
		oifname "transit" ip saddr @inside snat ip to 203.0.113.10
		oifname != "transit" ct status dnat ip saddr @inside masquerade
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		ct state established,related accept
		iifname "transit" ct status dnat accept
		iifname "transit" drop
	}
}
EOF
}

# Shell prototype of the VPC router (what the agent does, as plain commands).
vpc_router_shell() {
    local g=${P}gw1 v=$VPC_NS ip
    netlab__own "$v" || return 1
    ip netns add "$v" || return 1
    ip -n "$v" link set lo up
    ip netns exec "$v" sysctl -qw net.ipv4.ip_forward=1 || return 1
    # tier: g<id>v<vni> in gw1's brvx-<vni>  <->  t<vni> in the VPC namespace
    ip -n "$g" link add "g${VPC_ID}v$VNI" type veth peer name "t$VNI" netns "$v" || return 1
    ip -n "$g" link set "g${VPC_ID}v$VNI" alias stackfabric addrgenmode none
    ip -n "$g" link set "g${VPC_ID}v$VNI" master "brvx-$VNI" up || return 1
    ip -n "$v" link set "t$VNI" address "$VPC_MAC" addrgenmode none || return 1
    ip -n "$v" addr add 10.10.1.1/24 dev "t$VNI" || return 1
    ip -n "$v" link set "t$VNI" up
    # transit
    ip -n "$g" link add "gx$VPC_ID" type veth peer name transit netns "$v" || return 1
    ip -n "$g" link set "gx$VPC_ID" alias stackfabric addrgenmode none
    ip -n "$v" link set transit addrgenmode none
    ip -n "$g" addr add "$TR_HOST/31" dev "gx$VPC_ID" || return 1
    ip -n "$v" addr add "$TR_NS/31" dev transit || return 1
    ip -n "$g" link set "gx$VPC_ID" up && ip -n "$v" link set transit up || return 1
    ip -n "$v" route add default via "$TR_HOST" dev transit || return 1
    vpc_nft | ip netns exec "$v" nft -f - || return 1
    # public /32s into the VPC, before FRR's `network` statements can activate
    for ip in 203.0.113.10 203.0.113.11 203.0.113.12; do
        ip -n "$g" route replace "$ip/32" via "$TR_NS" dev "gx$VPC_ID" || return 1
    done
}

desired_json() {
    cat <<EOF
{"node":"gw1","revision":1,"objects":{
 "net/$VNI":{"kind":"l2_network","vni":$VNI,"tenant":"acme","vpc":"prod","network":"web",
   "cidr":"10.10.1.0/24","gateway":"10.10.1.1","ports":[]},
 "underlay":{"kind":"underlay","asn":65011,"router_id":"10.255.2.1","loopback":"10.255.2.1",
   "neighbors":["leaf1"],"evpn":"vtep",
   "announce":["203.0.113.10/32","203.0.113.11/32","203.0.113.12/32"]},
 "vpc/$VPC_ID":{"kind":"vpc_router","tenant":"acme","vpc":"prod","id":$VPC_ID,"cidr":"10.10.0.0/16",
   "mac":"$VPC_MAC",
   "tiers":[{"name":"web","vni":$VNI,"cidr":"10.10.1.0/24","gateway":"10.10.1.1"}],
   "routes":[],"snat":"203.0.113.10",
   "port_forwards":[{"protocol":"tcp","public_ip":"203.0.113.11","public_port":8080,
                     "private_ip":"10.10.1.11","private_port":80}],
   "static_nats":[{"public_ip":"203.0.113.12","private_ip":"10.10.1.11"}]}}}
EOF
}

run_agent() { # run_agent LOGFILE [ARGS...] - one reconcile pass of the Rust agent inside gw1
    local out=$1; shift
    nsenter --net="/run/netns/${P}gw1" "$AGENT" --apply-file "$NETLAB_DIR/gw1-desired.json" \
        --node gw1 --frr-dir "$NETLAB_DIR/${P}gw1" --netns-prefix "${P}vpc-" "$@" >"$out" 2>&1
}

netlab_cleanup "$P"          # leftovers of an earlier aborted run
netlab_init "$P" || exit 1
T0=$(now_ms)
PY=$(python3 -c 'import sys; print(sys.executable)') || exit 1
cat >"$NETLAB_DIR/httpd.py" <<'EOF'
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = ("%s saw %s\n" % (sys.argv[1], self.client_address[0])).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a):
        pass
http.server.HTTPServer((sys.argv[2], int(sys.argv[3])), H).serve_forever()
EOF

# ---------------------------------------------------------------- topology
for n in leaf1 hv1 gw1 internet; do netlab_ns_add "$P$n" || exit 1; done
netlab_addr_lo "${P}leaf1" 10.255.0.1/32 || exit 1
netlab_addr_lo "${P}hv1" 10.255.1.1/32 || exit 1
netlab_addr_lo "${P}internet" 198.51.100.10/32 || exit 1
for n in hv1 gw1 internet; do netlab_link "$P$n" leaf1 "${P}leaf1" "$n" || exit 1; done
netlab_vxlan_add "${P}hv1" "$VNI" 10.255.1.1 || exit 1
netlab_vm_add "${P}vm1" "${P}hv1" "brvx-$VNI" 10.10.1.11/24 02:00:00:01:00:11 >/dev/null || exit 1
netlab_vm_add "${P}vm2" "${P}hv1" "brvx-$VNI" 10.10.1.12/24 02:00:00:01:00:12 >/dev/null || exit 1
for n in vm1 vm2; do ip -n "$P$n" route add default via 10.10.1.1 || exit 1; done
if [ -z "$AGENT" ]; then
    netlab_addr_lo "${P}gw1" 10.255.2.1/32 || exit 1
    netlab_vxlan_add "${P}gw1" "$VNI" 10.255.2.1 || exit 1
fi
log "topology built"

# ---------------------------------------------------------------- FRR
bgp_conf leaf1 65101 10.255.0.1 "hv1 gw1 internet" "" 0 1 >"$NETLAB_DIR/leaf1.conf"
bgp_conf hv1 65001 10.255.1.1 "leaf1" "" 1 0 >"$NETLAB_DIR/hv1.conf"
if [ -z "$AGENT" ]; then
    bgp_conf gw1 65011 10.255.2.1 "leaf1" "203.0.113.10/32 203.0.113.11/32 203.0.113.12/32" 1 0 >"$NETLAB_DIR/gw1.conf"
else
    # the agent renders and applies gw1's real configuration
    printf 'frr defaults datacenter\nhostname gw1\n!\n' >"$NETLAB_DIR/gw1.conf"
fi
internet_conf >"$NETLAB_DIR/internet.conf"
T_FRR0=$(now_ms)
for n in leaf1 hv1 gw1 internet; do
    netlab_frr_start "$P$n" "$NETLAB_DIR/$P$n" "$NETLAB_DIR/$n.conf" || exit 1
done
log "FRR started on leaf1 hv1 gw1 internet"

# ---------------------------------------------------------------- VPC router
T_R0=$(now_ms)
if [ -z "$AGENT" ]; then
    vpc_router_shell || { log "FAIL: shell VPC router"; exit 1; }
    log "VPC router (shell prototype) built in $(( $(now_ms) - T_R0 )) ms"
else
    desired_json >"$NETLAB_DIR/gw1-desired.json"
    if run_agent "$NETLAB_DIR/agent-1.log"; then
        log "agent pass 1 ok in $(( $(now_ms) - T_R0 )) ms: $(grep -E 'changes' "$NETLAB_DIR/agent-1.log" | tail -n1)"
    else
        log "FAIL: agent pass 1"; cat "$NETLAB_DIR/agent-1.log"; FAIL=1
    fi
fi

# HTTP servers
ip netns exec "${P}internet" setsid "$PY" "$NETLAB_DIR/httpd.py" internet 198.51.100.10 80 </dev/null >/dev/null 2>&1 &
ip netns exec "${P}vm1" setsid "$PY" "$NETLAB_DIR/httpd.py" vm1 0.0.0.0 80 </dev/null >/dev/null 2>&1 &

get() { # get NS URL -> body
    ip netns exec "$1" curl -s -m 2 "$2"
}
expect() { # expect NS URL BODY
    local out
    out=$(get "$1" "$2") || return 1
    [ "$out" = "$3" ] || { echo "    got '$out', want '$3'" >&2; return 1; }
}
if netlab_wait 90 expect "${P}vm1" http://198.51.100.10/ "internet saw 203.0.113.12"; then
    log "vm1 -> internet first success $(( $(now_ms) - T_FRR0 )) ms after FRR start"
else
    log "FAIL: vm1 never reached the internet host"; FAIL=1
fi
netlab_wait 30 expect "${P}internet" http://203.0.113.11:8080/ "vm1 saw 198.51.100.10" ||
    { log "FAIL: internet never reached 203.0.113.11:8080"; FAIL=1; }

# ---------------------------------------------------------------- proofs
G=$NETLAB_DIR/${P}gw1
echo "===== gw1: show bgp ipv4 unicast"; netlab_vtysh "$G" -c 'show bgp ipv4 unicast' | sed -n '/Network/,$p'
echo "===== internet: ip route"; ip -n "${P}internet" route
echo "===== gw1: ip route (public /32s into the VPC)"; ip -n "${P}gw1" route | grep -E '203\.0\.113|default'
echo "===== $VPC_NS: ip addr / route"; ip -n "$VPC_NS" -br addr; ip -n "$VPC_NS" link show "t$VNI" | sed -n 2p; ip -n "$VPC_NS" route
echo "===== $VPC_NS: nft list table ip stackfabric"; ip netns exec "$VPC_NS" nft list table ip stackfabric

check "vm1 -> internet leaves as static NAT 203.0.113.12" expect "${P}vm1" http://198.51.100.10/ "internet saw 203.0.113.12"
check "vm2 -> internet leaves as SNAT 203.0.113.10" expect "${P}vm2" http://198.51.100.10/ "internet saw 203.0.113.10"
check "internet -> 203.0.113.11:8080 port-forwarded to vm1:80" expect "${P}internet" http://203.0.113.11:8080/ "vm1 saw 198.51.100.10"
check "internet -> 203.0.113.12:80 static NAT to vm1" expect "${P}internet" http://203.0.113.12/ "vm1 saw 198.51.100.10"
check "vm2 -> 203.0.113.11:8080 hairpin to vm1 (source = tier gateway)" expect "${P}vm2" http://203.0.113.11:8080/ "vm1 saw 10.10.1.1"
check "vm2 -> 203.0.113.12:80 hairpin static NAT to vm1" expect "${P}vm2" http://203.0.113.12/ "vm1 saw 10.10.1.1"
check "vm1 -> its own public 203.0.113.12 (hairpin to itself)" expect "${P}vm1" http://203.0.113.12/ "vm1 saw 10.10.1.1"
check "internet -> 203.0.113.10:80 (SNAT address) is not forwarded" bash -c "! ip netns exec ${P}internet curl -s -m 2 http://203.0.113.10/ >/dev/null"
check "internet -> 203.0.113.11:22 (no forward) is not forwarded" bash -c "! ip netns exec ${P}internet curl -s -m 2 http://203.0.113.11:22/ >/dev/null"
check "vm1 learned the VPC virtual MAC for 10.10.1.1" \
    bash -c "ip -n ${P}vm1 neigh show 10.10.1.1 | grep -qi $VPC_MAC"
check "internet has BGP routes for the three /32s" \
    bash -c "[ \$(ip -n ${P}internet route | grep -cE '^203\.0\.113\.1[012] ') = 3 ]"

if [ -n "$AGENT" ]; then
    echo "===== agent pass 2 (must change nothing)"
    before=$(ip -n "$VPC_NS" -o link; ip -n "${P}gw1" -o link | grep -E 'g7v|gx7|brvx|vxlan'; ip netns exec "$VPC_NS" nft -a list table ip stackfabric | grep -E 'handle')
    T_R1=$(now_ms)
    check "agent pass 2 exits 0" run_agent "$NETLAB_DIR/agent-2.log"
    log "agent pass 2 took $(( $(now_ms) - T_R1 )) ms: $(grep -E 'changes' "$NETLAB_DIR/agent-2.log" | tail -n1)"
    check "agent pass 2 reports changes=0" grep -q 'changes=0 ' "$NETLAB_DIR/agent-2.log"
    after=$(ip -n "$VPC_NS" -o link; ip -n "${P}gw1" -o link | grep -E 'g7v|gx7|brvx|vxlan'; ip netns exec "$VPC_NS" nft -a list table ip stackfabric | grep -E 'handle')
    check "no link recreated, nft table not reloaded (ifindexes and rule handles equal)" [ "$before" = "$after" ]
    check "traffic still flows after pass 2" expect "${P}internet" http://203.0.113.11:8080/ "vm1 saw 198.51.100.10"

    echo "===== exclusivity (the lease): unknown keeps, lost stands down, stale waits, fresh serves"
    n_pub() { ip -n "${P}internet" route | grep -cE '^203\.0\.113\.1[012] '; }
    check "lease unknown: pass changes nothing" run_agent "$NETLAB_DIR/agent-u.log" --lease unknown
    check "lease unknown: changes=0, router still there" bash -c "grep -q 'changes=0 ' $NETLAB_DIR/agent-u.log && ip netns list | grep -q '^$VPC_NS'"
    T_L=$(now_ms)
    check "lease lost: stand down" run_agent "$NETLAB_DIR/agent-l.log" --lease lost
    check "lease lost: logged loudly" grep -q 'LEASE LOST' "$NETLAB_DIR/agent-l.log"
    check "lease lost: VPC namespace and gw1 routes gone" \
        bash -c "! ip netns list | grep -q '^$VPC_NS' && ! ip -n ${P}gw1 route | grep -q 203.0.113"
    if netlab_wait 10 bash -c "[ \$(ip -n ${P}internet route | grep -cE '^203\.0\.113\.1[012] ') = 0 ]"; then
        log "PASS: lease lost: internet lost the /32s $(( $(now_ms) - T_L )) ms after stand-down began"
    else
        log "FAIL: internet still has /32s after stand-down"; FAIL=1
    fi
    check "held, state not fresh: router not brought up" run_agent "$NETLAB_DIR/agent-s.log" --stale
    check "held, state not fresh: no namespace" bash -c "! ip netns list | grep -q '^$VPC_NS'"
    T_F=$(now_ms)
    check "held, fresh: router back" run_agent "$NETLAB_DIR/agent-f.log"
    if netlab_wait 20 expect "${P}internet" http://203.0.113.11:8080/ "vm1 saw 198.51.100.10"; then
        log "PASS: internet reaches vm1 through the re-created router $(( $(now_ms) - T_F )) ms after the pass began"
    else
        log "FAIL: router did not come back"; FAIL=1
    fi
    check "hairpin after re-creation" expect "${P}vm2" http://203.0.113.11:8080/ "vm1 saw 10.10.1.1"
    [ "$(n_pub)" = 3 ] || { log "FAIL: internet lacks the /32s after re-creation"; FAIL=1; }

    echo "----- agent pass 1 log"; cat "$NETLAB_DIR/agent-1.log"
    echo "----- agent pass 2 log"; cat "$NETLAB_DIR/agent-2.log"
fi

echo "===== summary"
[ "$FAIL" = 0 ] && echo "SOFTGATE PROOF${AGENT:+ (agent)}: ALL CHECKS PASSED" || echo "SOFTGATE PROOF${AGENT:+ (agent)}: SOME CHECKS FAILED"
exit "$FAIL"
