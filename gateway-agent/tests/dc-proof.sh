#!/usr/bin/env bash
# dc-proof.sh - ad-hoc proof of Direct Connect on the gateway (not wired into CI): the
# agent's per-VPC FRR peers with a customer router over the hand-off segment brvx-<VNI>.
#
#   sudo gateway-agent/tests/dc-proof.sh [--agent target/release/sf-gateway-agent] [--keep]
#
# Topology (every namespace prefixed sfdc<pid>-, nothing in the host namespace):
#   gw    gateway node: host FRR (no neighbors), the agent (nsenter --net, --apply-file),
#         brvx-1000001 (tier web 10.10.1.0/24) and brvx-1000100 (DC hq) made by the agent
#   vpc-7 VPC router made by the agent: t1000001 10.10.1.1/24, d1000100 169.254.100.1/30,
#         per-VPC FRR (AS 65010) in <state>/vpc-frr/<prefix>vpc-7
#   vm1   10.10.1.11 on brvx-1000001
#   cust  customer router on brvx-1000100: 169.254.100.2/30, AS 65100, announces
#         192.168.100.0/24 (accepted) and 172.16.50.0/24 (filtered)
#   lan   a host behind the customer router: 192.168.100.10 and 172.16.50.10
# Exit 0 only if every check passes; everything is cleaned up on any exit unless --keep.
# shellcheck disable=SC2317  # functions invoked indirectly (trap, check)
set -u -o pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
export LAB_PREFIX=${LAB_PREFIX:-sfdc$$-}
# shellcheck source=../../deploy/lib/netlab.sh source-path=SCRIPTDIR
. "$ROOT/deploy/lib/netlab.sh"

KEEP=0
AGENT=$ROOT/target/release/sf-gateway-agent
while [ $# -gt 0 ]; do
    case "$1" in
        --keep) KEEP=1 ;;
        --agent) AGENT=$(realpath "$2") || exit 2; shift ;;
        *) echo "usage: $0 [--agent BIN] [--keep]" >&2; exit 2 ;;
    esac
    shift
done
[ -x "$AGENT" ] || { echo "no agent binary $AGENT" >&2; exit 2; }
P=$LAB_PREFIX
GW=${P}gw
VPC=${P}vpc-7
CUST=${P}cust
VM=${P}vm1
LAN=${P}lan
STATE=/tmp/netlab.$P/gw-state
VPCFRR=$STATE/vpc-frr/$VPC
FAIL=0
AGENT_PID=""
SRV_PID=""

log() { printf '[%s] %s\n' "$(date +%T.%N | cut -c1-12)" "$*"; }
check() { # check DESCRIPTION CMD...
    local d=$1; shift
    if "$@"; then log "PASS: $d"; else log "FAIL: $d"; FAIL=1; fi
}
stop_agent() {
    if [ -n "$AGENT_PID" ]; then
        kill -TERM "$AGENT_PID" 2>/dev/null
        wait "$AGENT_PID" 2>/dev/null
        AGENT_PID=""
    fi
}
finish() {
    local rc=$?
    stop_agent
    [ -n "$SRV_PID" ] && kill "$SRV_PID" 2>/dev/null
    [ "$FAIL" = 0 ] || rc=1
    if [ "$KEEP" = 1 ]; then
        echo "--keep: left running; clean with: . $ROOT/deploy/lib/netlab.sh; netlab_cleanup $P"
    else
        # The agent's per-VPC FRR first (by pid file), then everything of the lab.
        [ -d "$VPCFRR" ] && netlab_frr_stop "$VPCFRR"
        netlab_cleanup "$P"
        sleep 0.5
        if netlab_check_clean "$P"; then echo "cleanup: no namespace/process/dir left"; else rc=1; fi
    fi
    [ "$rc" = 0 ] && echo "dc-proof: ALL PASSED" || echo "dc-proof: FAILED"
    exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

desired_json() { # desired_json WITH_DC(0/1)
    local dc='' net=''
    if [ "$1" = 1 ]; then
        net='"net/1000100":{"kind":"l2_network","vni":1000100,"tenant":"acme","vpc":"prod",
   "network":"dc-hq","cidr":"169.254.100.0/30","gateway":"169.254.100.1","ports":[]},'
        dc=',"direct_connects":[{"name":"hq","vni":1000100,"local":"169.254.100.1/30",
   "peer":"169.254.100.2","local_asn":65010,"peer_asn":65100,
   "accept":[{"prefix":"192.168.100.0/24"}],"announce":["10.10.1.0/24"]}]'
    fi
    cat <<EOF
{"node":"gw","revision":1,"objects":{
 "net/1000001":{"kind":"l2_network","vni":1000001,"tenant":"acme","vpc":"prod","network":"web",
   "cidr":"10.10.1.0/24","gateway":"10.10.1.1","ports":[]},
 $net
 "underlay":{"kind":"underlay","asn":65011,"router_id":"10.255.2.1","loopback":"10.255.2.1",
   "neighbors":[],"evpn":"vtep","announce":["203.0.113.10/32"]},
 "vpc/7":{"kind":"vpc_router","tenant":"acme","vpc":"prod","id":7,"cidr":"10.10.0.0/16",
   "mac":"02:5f:00:00:00:07",
   "tiers":[{"name":"web","vni":1000001,"cidr":"10.10.1.0/24","gateway":"10.10.1.1"}],
   "routes":[],"snat":"203.0.113.10","port_forwards":[],"static_nats":[],
   "load_balancers":[]$dc}}}
EOF
}

agent() { # agent FILE ARGS... : one apply in gw, output on stdout
    local f=$1; shift
    nsenter --net="/run/netns/$GW" "$AGENT" --apply-file "$f" --node gw \
        --frr-dir "$NETLAB_DIR/$GW" --netns-prefix "${P}vpc-" --state-dir "$STATE" "$@"
}

vtysh_vpc() { vtysh --vty_socket "$VPCFRR" "$@"; }
peer_state() {
    vtysh_vpc -c 'show bgp ipv4 unicast summary json' 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["peers"]["169.254.100.2"]["state"])' 2>/dev/null
}
established() { [ "$(peer_state)" = Established ]; }
established_count() {
    vtysh_vpc -c 'show bgp ipv4 unicast summary json' 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["peers"]["169.254.100.2"]["connectionsEstablished"])' 2>/dev/null
}
vpc_route() { ip -n "$VPC" -4 route show "$1" | grep -q "via 169.254.100.2 dev d1000100 proto bgp"; }
no_vpc_route() { ! ip -n "$VPC" -4 route show "$1" | grep -q .; }
cust_route() { ip -n "$CUST" -4 route show 10.10.1.0/24 | grep -q "via 169.254.100.1"; }
dc_status() { grep '^dc-status: ' "$1" | tail -n1 | sed 's/^dc-status: //'; }
dc_status_is() { # dc_status_is LOG STATE MIN_RECEIVED ACCEPTED SENT
    dc_status "$1" | python3 -c "
import json,sys
s=json.load(sys.stdin)['acme/prod/hq']
sys.exit(0 if (s['state'],s['accepted'],s['sent'])==('$2',$4,$5) and s['received']>=$3 else 1)"
}
vpc_frr_procs() { pgrep -f -- "-N $VPC " || true; }
no_vpc_frr() { [ -z "$(vpc_frr_procs)" ]; }
alive_pidfile() { local p; p=$(cat "$1" 2>/dev/null) && [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

netlab_cleanup "$P"
netlab_init "$P" || exit 1
log "prefix $P, agent $AGENT"

# Gateway node with its own FRR (the agent applies the underlay config to it).
netlab_ns_add "$GW" || exit 1
netlab_addr_lo "$GW" 10.255.2.1/32 || exit 1
printf 'frr defaults datacenter\nhostname gw\n!\n' >"$NETLAB_DIR/gw.conf"
netlab_frr_start "$GW" "$NETLAB_DIR/$GW" "$NETLAB_DIR/gw.conf" "zebra bgpd" || exit 1

desired_json 1 >"$NETLAB_DIR/dc.json"
desired_json 0 >"$NETLAB_DIR/nodc.json"

log "--- first apply (router with one DC), holding 300 s"
# Started directly (not through a shell function) so that $! is the agent itself.
nsenter --net="/run/netns/$GW" "$AGENT" --apply-file "$NETLAB_DIR/dc.json" --node gw \
    --frr-dir "$NETLAB_DIR/$GW" --netns-prefix "${P}vpc-" --state-dir "$STATE" \
    --hold 300 >"$NETLAB_DIR/agent.log" 2>&1 &
AGENT_PID=$!
check "agent made brvx-1000100 and the VPC router" \
    netlab_wait 30 ip -n "$GW" link show brvx-1000100
netlab_wait 30 ip -n "$VPC" link show d1000100 || true
check "DC link d1000100 in the VPC with 169.254.100.1/30" \
    sh -c "ip -n '$VPC' -4 addr show dev d1000100 | grep -q '169.254.100.1/30'"
check "per-VPC FRR runs (zebra, bgpd) in $VPCFRR" \
    netlab_wait 30 sh -c "kill -0 \$(cat '$VPCFRR/zebra.pid') && kill -0 \$(cat '$VPCFRR/bgpd.pid')"
check "per-VPC FRR runs inside the VPC namespace" \
    sh -c "ip netns pids '$VPC' | grep -qx \"\$(cat '$VPCFRR/bgpd.pid')\""

# Customer router on the hand-off segment, plus a VM on the tier.
netlab_ns_add "$CUST" || exit 1
netlab_link "$CUST" eth0 "$GW" cust0 1500 || exit 1
ip -n "$GW" link set cust0 master brvx-1000100 || exit 1
ip -n "$CUST" addr add 169.254.100.2/30 dev eth0
# A host behind the customer router, on both customer networks.
netlab_ns_add "$LAN" || exit 1
netlab_link "$CUST" lan0 "$LAN" eth0 1500 || exit 1
ip -n "$CUST" addr add 192.168.100.1/24 dev lan0
ip -n "$CUST" addr add 172.16.50.1/24 dev lan0
ip -n "$LAN" addr add 192.168.100.10/24 dev eth0
ip -n "$LAN" addr add 172.16.50.10/24 dev eth0
ip -n "$LAN" route add default via 192.168.100.1
cat >"$NETLAB_DIR/cust.conf" <<'EOF'
frr defaults datacenter
hostname cust
!
router bgp 65100
 bgp router-id 169.254.100.2
 no bgp ebgp-requires-policy
 neighbor 169.254.100.1 remote-as 65010
 address-family ipv4 unicast
  network 192.168.100.0/24
  network 172.16.50.0/24
 exit-address-family
exit
!
EOF
netlab_frr_start "$CUST" "$NETLAB_DIR/$CUST" "$NETLAB_DIR/cust.conf" "zebra bgpd" || exit 1
netlab_vm_add "$VM" "$GW" brvx-1000001 10.10.1.11/24 02:00:00:00:01:11 >/dev/null || exit 1
ip -n "$VM" route add default via 10.10.1.1

T=$(date +%s%N)
check "BGP session Established" netlab_wait 60 established
log "session Established after $(( ($(date +%s%N) - T) / 1000000 )) ms (customer attached)"
check "192.168.100.0/24 installed in the VPC (via 169.254.100.2, proto bgp)" \
    netlab_wait 20 vpc_route 192.168.100.0/24
check "172.16.50.0/24 NOT installed (accept filter)" no_vpc_route 172.16.50.0/24
check "customer receives the tier prefix 10.10.1.0/24" netlab_wait 20 cust_route
check "customer receives nothing else (OUT filter)" \
    sh -c "[ \$(ip -n '$CUST' -4 route show proto bgp | wc -l) = 1 ]"
log "VPC routes: $(ip -n "$VPC" -4 route | tr '\n' ';')"
log "customer routes: $(ip -n "$CUST" -4 route | tr '\n' ';')"
# received is FRR's pre-policy count: the customer's 2 prefixes, plus (with an FRR customer)
# our own 10.10.1.0/24 echoed back, which the AS-path loop check then drops.
check "dc-status reports Established received>=2 accepted=1 sent=1 within 10 s" \
    netlab_wait 10 dc_status_is "$NETLAB_DIR/agent.log" Established 2 1 1
log "$(grep '^dc-status' "$NETLAB_DIR/agent.log" | tail -n3 | tr '\n' ' ')"

check "ping VPC (10.10.1.1) -> 192.168.100.10 behind the customer" \
    ip netns exec "$VPC" ping -c2 -W2 -I 10.10.1.1 192.168.100.10
check "ping vm1 (10.10.1.11) -> 192.168.100.10" ip netns exec "$VM" ping -c2 -W2 192.168.100.10
check "172.16.50.10 (not accepted) is not reached through the DC" \
    sh -c "! ip netns exec '$VM' ping -c1 -W1 172.16.50.10 >/dev/null"
# No NAT: the customer sees the VM's own address.
ip netns exec "$LAN" setsid python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("192.168.100.10", 7000)); s.listen(8)
while True:
    c, a = s.accept(); c.sendall(a[0].encode()); c.close()
' </dev/null >/dev/null 2>&1 &
SRV_PID=$!
sleep 0.5
SEEN=$(ip netns exec "$VM" python3 -c '
import socket
c = socket.create_connection(("192.168.100.10", 7000), timeout=3); print(c.recv(64).decode())')
log "customer saw the VM's connection from: $SEEN"
check "no source NAT towards the customer (seen as 10.10.1.11)" [ "$SEEN" = 10.10.1.11 ]
ip netns exec "$VPC" sysctl -qw net.ipv4.conf.all.rp_filter=1
check "strict rp_filter in the VPC: 192.168.100.10 -> vm1 still works" \
    ip netns exec "$LAN" ping -c2 -W2 10.10.1.11
ip netns exec "$VPC" sysctl -qw net.ipv4.conf.all.rp_filter=0
ip -n "$CUST" route add default via 169.254.100.1
check "the VPC router drops DC -> transit" sh -c \
    "ip netns exec '$VPC' nft list chain ip stackfabric forward | grep -q 'iifname \"d1000100\" oifname \"transit\" drop'"
check "customer cannot use the VPC as transit (-> gateway host 10.255.2.1 dropped)" \
    sh -c "! ip netns exec '$CUST' ping -c2 -W1 -I 192.168.100.1 10.255.2.1 >/dev/null"
ip -n "$CUST" route del default via 169.254.100.1

log "--- killing the per-VPC bgpd: the poller sees it, the agent restarts it"
OLD=$(cat "$VPCFRR/bgpd.pid")
kill -KILL "$OLD"
T=$(date +%s%N)
check "bgpd restarted" netlab_wait 20 sh -c "[ \"\$(cat '$VPCFRR/bgpd.pid' 2>/dev/null)\" != '$OLD' ] && kill -0 \$(cat '$VPCFRR/bgpd.pid')"
check "session Established again" netlab_wait 60 established
log "restarted and Established after $(( ($(date +%s%N) - T) / 1000000 )) ms"
stop_agent

log "--- second apply of the same state: nothing to change"
EST=$(established_count)
OUT=$(agent "$NETLAB_DIR/dc.json" 2>/dev/null)
log "$OUT"
check "idempotent (changes=0 errors=0)" sh -c "echo '$OUT' | grep -q 'changes=0 errors=0'"
check "session not reset by the second apply" [ "$(established_count)" = "$EST" ]

log "--- DC removed from the desired state"
OUT=$(agent "$NETLAB_DIR/nodc.json" 2>/dev/null)
log "$OUT"
check "per-VPC FRR stopped" no_vpc_frr
check "its directory removed" [ ! -e "$VPCFRR" ]
check "DC link gone, router kept" \
    sh -c "! ip -n '$VPC' link show d1000100 >/dev/null 2>&1 && ip -n '$VPC' link show t1000001 >/dev/null"
check "learned route gone with the speaker" no_vpc_route 192.168.100.0/24

log "--- DC back, then the lease is lost (stand-down, as the fence runs it)"
OUT=$(agent "$NETLAB_DIR/dc.json" 2>/dev/null); log "$OUT"
ip -n "$GW" link set cust0 master brvx-1000100   # the segment's bridge was re-created
check "per-VPC FRR back" alive_pidfile "$VPCFRR/bgpd.pid"
check "session Established again" netlab_wait 60 established
OUT=$(agent "$NETLAB_DIR/dc.json" --lease lost 2>&1 | grep -v '^ *$' | grep -E 'reconcile:|FRR|namespace' | tail -n 5)
log "$OUT"
check "stand-down: VPC namespace deleted" [ ! -e "/run/netns/$VPC" ]
check "stand-down: no per-VPC FRR left" no_vpc_frr
check "stand-down: per-VPC FRR directories removed" \
    sh -c "[ ! -e '$VPCFRR' ] && [ ! -e '/var/run/frr/$VPC' ]"
