#!/usr/bin/env bash
# End-to-end tests of dual-stack VPCs on the gateway side (issue 21), with real packets: the
# demo tenant's blue and red hold the same ULA range fd10:10::/48 and web the same /64.
#   1. SLAAC: blue-web-1 configures its EUI-64 address from the router's advertisements, with
#      a default route via the router's stable link-local
#   2. blue-web-1 <-> blue-web-2 across hypervisors (ping, HTTP); blue-web-1 -> the router's ::1
#   3. a second dual-stack tier (db) with a VM, reached across tiers through the router
#   4. red with identical prefixes stays isolated
#   5. gateway failover (the serving gateway's agent killed, its links down): the VM keeps its
#      default route, and IPv6 through the router resumes within seconds
#   static routes: an IPv6 route via a VM of a tier carries traffic from another tier, and stops
#      when deleted
#   load balancer: a public IPv6 VIP from the site's pool over blue's web tier, reached from
#      the internet host; a stopped backend leaves within the health check's fall time; across
#      a gateway failover (the serving agent hung) the VIP's /128 moves to the new gateway
#      alone, new connections spread over both backends through it, and the old gateway's
#      return takes nothing back
#   pool blackholes: the leaves originate the site's IPv6 pool over a blackhole and the
#      gateways hold it, so an unused address of the pool dies at the edge, even when a stale
#      leaf route points it at a gateway (no hop-limit loop)
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$REPO/tests/e2e/lib.sh"
lab_test sf6

vpc_id() { S -o json vpc show "$1" --tenant demo | json "d['id']"; }
mac_of() { sed -n 's/^mac=//p' "$STATE/vms/$1/plug"; }
# eui64 PREFIX MAC - the modified EUI-64 (SLAAC) address of MAC in PREFIX/64.
eui64() {
    python3 -c '
import ipaddress, sys
net = ipaddress.IPv6Network(sys.argv[1])
b = [int(x, 16) for x in sys.argv[2].split(":")]
iid = bytes([b[0] ^ 2, b[1], b[2], 0xff, 0xfe, b[3], b[4], b[5]])
print(ipaddress.IPv6Address(net.network_address.packed[:8] + iid))' "$1" "$2"
}
# router_ll ID - the VPC router's link-local: modified EUI-64 of its virtual MAC 02:5f:<id>.
router_ll() {
    python3 -c '
import ipaddress, sys
b = int(sys.argv[1]).to_bytes(4, "big")
print(ipaddress.IPv6Address(bytes([0xfe, 0x80] + [0] * 6 + [0, 0x5f, b[0], 0xff, 0xfe, b[1], b[2], b[3]])))' "$1"
}
# slaac VM ADDR - VM holds ADDR as a dynamic (SLAAC) global address on eth0.
slaac() { X "$1" ip -6 addr show dev eth0 scope global dynamic | grep -q "inet6 $2/64"; }
# default_via VM LL - VM's IPv6 default route goes via LL, learnt from an RA.
default_via() { X "$1" ip -6 route show default | grep -q "via $2 dev eth0 proto ra"; }
ping6() { X "$1" ping -6 -c1 -W1 "$2" >/dev/null; }
http6() { [ "$(X "$1" curl -s -m 2 "http://[$2]/")" = "$3" ]; }
# serving ID - the gateway whose tier link of router ID is up.
serving() {
    local g
    for g in gw1 gw2; do
        ip -n "${LAB_PREFIX}$g" -br link show 2>/dev/null | grep "^g${1}v" | grep -q ' UP ' &&
            { echo "$g"; return; }
    done
}
other() { if [ "$1" = gw1 ]; then echo gw2; else echo gw1; fi; }
outage() {
    python3 -c '
import re, sys
t = [float(m.group(1)) for m in map(re.compile(r"^\[(\d+\.\d+)\].*bytes from").match, open(sys.argv[1])) if m]
print(int(max((b - a for a, b in zip(t, t[1:])), default=0) * 1000))' "$1"
}

section "lab up (prefix $LAB_PREFIX)"
t0=$SECONDS
if ! L up --no-build; then fail "deploy/lab.sh up"; finish; exit 1; fi
pass "lab up in $((SECONDS - t0)) s"

section "1. SLAAC: blue-web-1 takes its EUI-64 address and the router's link-local as default"
BLUE=$(vpc_id blue)
LL=$(router_ll "$BLUE")
W1=$(eui64 fd10:10:0:1::/64 "$(mac_of blue-web-1)")
W2=$(eui64 fd10:10:0:1::/64 "$(mac_of blue-web-2)")
RED2=$(eui64 fd10:10:0:1::/64 "$(mac_of red-web-2)")
check "blue-web-1 configures $W1 by SLAAC" wait_for 20 slaac blue-web-1 "$W1"
check "its default route goes via the router's stable link-local $LL" wait_for 5 default_via blue-web-1 "$LL"
check "blue-web-2 configures $W2 by SLAAC" wait_for 20 slaac blue-web-2 "$W2"
if [ "$E2E_FAILS" -gt 0 ]; then
    fail "no SLAAC: the rest needs it"
    lab_finish
    exit 1
fi

section "2. within the tier, across hypervisors, and to the router"
check "blue-web-1 pings blue-web-2 ($W2, hv1 -> hv2)" wait_for 10 ping6 blue-web-1 "$W2"
check "blue-web-1 fetches blue-web-2's page over IPv6" http6 blue-web-1 "$W2" blue-web-2
check "blue-web-1 pings the router's fd10:10:0:1::1" wait_for 5 ping6 blue-web-1 fd10:10:0:1::1

section "3. a second dual-stack tier, reached through the router"
check "add tier db to blue (fd10:10:0:2::/64)" S network create db --tenant demo --vpc blue --cidr 10.10.2.0/24 --ipv6-prefix fd10:10:0:2::/64
check "vm-add blue-db-1 on hv3" L vm-add blue-db-1 hv3 demo blue db 10.10.2.11
D1=$(eui64 fd10:10:0:2::/64 "$(mac_of blue-db-1)")
check "blue-db-1 configures $D1 by SLAAC" wait_for 20 slaac blue-db-1 "$D1"
check "blue-web-1 pings blue-db-1 across tiers" wait_for 10 ping6 blue-web-1 "$D1"
check "blue-db-1 fetches blue-web-1's page" http6 blue-db-1 "$W1" blue-web-1

section "4. red holds the same prefixes, isolated"
R1=$(eui64 fd10:10:0:1::/64 "$(mac_of red-web-1)")
check "red-web-1 configures $R1 by SLAAC" wait_for 20 slaac red-web-1 "$R1"
check "red-web-1 pings red-web-2 ($RED2)" wait_for 10 ping6 red-web-1 "$RED2"
check_not "blue-web-1 cannot reach red-web-2's address" ping6 blue-web-1 "$RED2"
check_not "red-web-1 cannot reach blue-db-1's address" ping6 red-web-1 "$D1"

section "5. failover: the VM keeps its default route, IPv6 through the router resumes"
A=$(serving "$BLUE")
if [ -z "$A" ]; then
    fail "no gateway serves blue"
else
    B=$(other "$A")
    pass "$A serves blue, $B stands by"
    X blue-web-1 bash -c "ping -6 -D -n -i 0.05 -w 12 $D1" >"$STATE/ping6-failover.log" 2>&1 &
    PING=$!
    BG+=("$PING")
    sleep 2
    L agent-kill "$A"
    X "$A" ip link set leaf1 down
    X "$A" ip link set leaf2 down
    check "blue-web-1 still has its default route via $LL (no RA needed)" default_via blue-web-1 "$LL"
    check "$B takes over blue's tiers" wait_for 10 bash -c "[ \"\$(ip -n ${LAB_PREFIX}$B -br link show | grep '^g${BLUE}v' | grep -c ' UP ')\" -ge 2 ]"
    check "blue-web-1 -> blue-db-1 across tiers again within 5 s" wait_for 5 ping6 blue-web-1 "$D1"
    wait "$PING"
    MS=$(outage "$STATE/ping6-failover.log")
    if [ "$MS" -gt 0 ] && [ "$MS" -lt 8000 ]; then
        pass "IPv6 outage across tiers: $MS ms without replies"
    else
        fail "IPv6 outage across tiers: $MS ms (the ping never resumed?)"
    fi
    check "blue-web-1 still has its default route via $LL after the failover" default_via blue-web-1 "$LL"
fi

# ---------------------------------------------------------------------------------------
# 6. (v6edge) routed IPv6 between a VM and the internet host, through the VPC router's
# stateful IPv6 firewall (table ip6 stackfabric6). Self-contained: it brings back a gateway
# an earlier section took down, creates VPC edge6 with a range inside the site pool
# 2001:db8:100::/40 (routed: the active gateway announces it, the leaves let it through to
# the internet edge) and one VM, and removes them again.
section "6. routed IPv6: a VM and the internet host, through the router's IPv6 firewall"
INET6=2001:db8:ffff::10
E_RANGE=2001:db8:100::/48 E_TIER=2001:db8:100:1::/64
# inet_tcp ADDR PORT - the internet host opens a new TCP connection to [ADDR]:PORT and reads
# the page there.
inet_tcp() { ip netns exec "${LAB_PREFIX}internet" curl -6 -s -m 3 --interface "$INET6" "http://[$1]:$2/"; }
# fw_count ID COMMENT [CHAIN] - packets counted by rule COMMENT of router ID's IPv6 table,
# chain CHAIN (default forward), on the gateway serving it.
fw_count() {
    local g n
    g=$(serving "$1")
    n=$(ip netns exec "${LAB_PREFIX}$g-vpc$1" nft list chain ip6 stackfabric6 "${3:-forward}" 2>/dev/null |
        sed -n "s/.*counter packets \([0-9]*\) .*comment \"$2\".*/\1/p")
    echo "${n:-0}"
}
for g in gw1 gw2; do
    if ! ip -n "${LAB_PREFIX}$g" -br link show leaf1 | grep -q ' UP '; then
        X "$g" ip link set leaf1 up
        X "$g" ip link set leaf2 up
        check "$g back (links up, agent started)" L agent-start "$g"
    fi
done
gws_in_sync() { node_is gw1 in_sync True && node_is gw2 in_sync True; }
check "both gateways in sync" wait_for 60 gws_in_sync
check "VPC edge6 with the routed range $E_RANGE" S vpc create edge6 --tenant demo --cidr 10.60.0.0/16 --ipv6-range "$E_RANGE"
check "tier web of edge6 with $E_TIER" S network create web --tenant demo --vpc edge6 --cidr 10.60.1.0/24 --ipv6-prefix "$E_TIER"
check "vm-add edge6-web-1 on hv2" L vm-add edge6-web-1 hv2 demo edge6 web 10.60.1.11
EDGE=$(vpc_id edge6)
E1=$(eui64 "$E_TIER" "$(mac_of edge6-web-1)")
check "edge6-web-1 configures $E1 by SLAAC" wait_for 20 slaac edge6-web-1 "$E1"
check "the internet host learned $E_RANGE from the fabric" wait_for 30 bash -c "ip -n ${LAB_PREFIX}internet -6 route show $E_RANGE | grep -q ."
check "edge6-web-1 pings the internet host $INET6" wait_for 10 ping6 edge6-web-1 "$INET6"
check "edge6-web-1 fetches the internet's page over IPv6" http6 edge6-web-1 "$INET6" internet
check_eq "the internet's server saw the VM's own address (no NAT)" "$E1" "$(tail -n 1 "$STATE/logs/internet-http6.log" | awk '{print $1}')"
DROPS=$(fw_count "$EDGE" "new inbound")
check_not "the internet host cannot open a TCP connection to edge6-web-1:80" inet_tcp "$E1" 80
check_not "nor ping it (a new flow from the internet)" ip netns exec "${LAB_PREFIX}internet" ping -6 -c 1 -W 1 -I "$INET6" "$E1"
check "the router's IPv6 firewall counted them as new inbound drops" bash -c "[ $(fw_count "$EDGE" "new inbound") -gt $DROPS ]"
check "edge6-web-1 still fetches the internet's page (replies pass)" http6 edge6-web-1 "$INET6" internet
# A tier ACL in IPv6: TCP 80 in from ::/0 allowed, the rest denied (the list's default);
# replies and neighbour discovery keep working.
ip netns exec "${LAB_PREFIX}edge6-web-1" python3 -m http.server 8080 --bind :: >/dev/null 2>&1 &
SRV8080=$!
BG+=("$SRV8080")
check "edge6-web-1 serves port 8080 too" wait_for 10 X edge6-web-1 curl -s -m 2 -o /dev/null "http://[$E1]:8080/"
check "ACL web6 on edge6's web: 10 ingress allow tcp 80 ::/0, 20 egress allow all ::/0, default deny" \
    S acl apply web6 --tenant demo --vpc edge6 --tier web --default deny \
    --rule "10 ingress allow tcp 80 ::/0" --rule "20 egress allow all any ::/0"
check_eq "the internet host opens a connection to edge6-web-1:80 (allowed by the ACL)" edge6-web-1 "$(wait_for 20 inet_tcp "$E1" 80; inet_tcp "$E1" 80)"
DENIED=$(fw_count "$EDGE" "ingress default" "acl6_in_$(S -o json network show web --tenant demo --vpc edge6 | json "d['vni']")")
check_not "nor to edge6-web-1:8080 (the ACL's default deny)" inet_tcp "$E1" 8080
check "the ACL's ingress default counted it" bash -c "[ $(fw_count "$EDGE" "ingress default" "acl6_in_$(S -o json network show web --tenant demo --vpc edge6 | json "d['vni']")") -gt $DENIED ]"
check "edge6-web-1 still fetches the internet's page (egress allowed, replies pass)" http6 edge6-web-1 "$INET6" internet
check "neighbour discovery still works: edge6-web-1 resolves its router again" bash -c "
    $REPO/deploy/lab.sh exec edge6-web-1 ip -6 neigh flush dev eth0 &&
    $REPO/deploy/lab.sh exec edge6-web-1 ping -6 -c 1 -W 2 $INET6 >/dev/null &&
    $REPO/deploy/lab.sh exec edge6-web-1 ip -6 neigh show dev eth0 | grep -Eq 'REACHABLE|STALE|DELAY|PROBE'"
kill "$SRV8080" 2>/dev/null
check "remove ACL web6" S acl delete web6 --tenant demo --vpc edge6
check "remove edge6-web-1" L vm-del edge6-web-1
check "remove tier web of edge6" S network delete web --tenant demo --vpc edge6
check "remove VPC edge6" S vpc delete edge6 --tenant demo
check "the internet host's route to $E_RANGE is withdrawn" wait_for 30 bash -c "! ip -n ${LAB_PREFIX}internet -6 route show $E_RANGE | grep -q ."

# ---- Static IPv6 routes (issue 21, v6rest) -------------------------------------------------
# blue-web-2 holds fd10:10:99::1 on lo, outside every tier; a route fd10:10:99::/64 via
# blue-web-2's port address makes the router deliver to it. A ping shows the address is
# reached; a UDP responder on blue-web-2 that answers from its port address shows it is
# blue-web-2 that got the request (sent to fd10:10:99::1, which only the route leads to).
section "static IPv6 routes: through a VM of the tier, from another tier"
# The responder: answers what arrives for fd10:10:99::1 from the port address (argv[1]).
UDP6_SERVER='
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("fd10:10:99::1", 5399))
r = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
r.bind((sys.argv[1], 0))
while True:
    d, a = s.recvfrom(100)
    r.sendto(b"got " + d + b" on fd10:10:99::1", a[:2])'
# udp6_ask VM - VM asks fd10:10:99::1 and prints the answer and who sent it.
udp6_ask() {
    X "$1" python3 -c '
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.settimeout(1)
s.sendto(b"q", ("fd10:10:99::1", 5399))
d, a = s.recvfrom(100)
print(d.decode(), "from", a[0])'
}
routed6() { [ "$(udp6_ask "$1")" = "got q on fd10:10:99::1 from $W2" ]; }
# refused6 PREFIX NEXTHOP - sfctl refuses the route and names route.nexthop.
refused6() {
    local out
    out=$(S route create r6-bad --tenant demo --vpc blue --prefix "$1" --nexthop "$2" 2>&1) && return 1
    grep -q route.nexthop <<<"$out"
}
check "blue-web-2 holds fd10:10:99::1 on lo" X blue-web-2 ip -6 addr add fd10:10:99::1/128 dev lo
# lab.sh exec execs into the command: $! is timeout's pid (it passes the kill on), and
# timeout bounds the responder even if the kill is missed.
X blue-web-2 timeout 150 python3 -c "$UDP6_SERVER" "$W2" >"$STATE/udp6.log" 2>&1 &
BG+=("$!")
sleep 0.5
check_not "without a route, blue-db-1 gets no answer from fd10:10:99::1" wait_for 3 routed6 blue-db-1
check "route fd10:10:99::/64 via blue-web-2 ($W2)" S route create r6-99 --tenant demo --vpc blue --prefix fd10:10:99::/64 --nexthop "$W2"
check_eq "sfctl shows the IPv6 route" "fd10:10:99::/64 $W2" "$(S -o json route show r6-99 --tenant demo --vpc blue | json "d['prefix']+' '+d['nexthop']")"
check "blue-db-1 (tier db) pings fd10:10:99::1 through the route" wait_for 10 ping6 blue-db-1 fd10:10:99::1
check "blue-db-1's request reaches blue-web-2, answered by $W2" wait_for 5 routed6 blue-db-1
check "blue-web-1 (same tier, via the router) reaches it too" wait_for 5 routed6 blue-web-1
# Inside the VPC, fd10:10:99::1 is a legitimate source (the route makes it one; the ping's
# reply above crossed the router between tiers, where no source is checked). Towards the
# internet it is not: the router's anti-spoofing drops it whatever the packet, also an
# ICMPv6 error (a type the router always accepts), which got through before the check
# came first.
spoof_icmp6() {
    X blue-web-2 python3 -c '
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.bind(("fd10:10:99::1", 0))
# destination unreachable (port), quoting the start of an IPv6 header
s.sendto(bytes([1, 4, 0, 0, 0, 0, 0, 0, 0x60]) + bytes(39), ("2001:db8:ffff::10", 0))'
}
SPOOF0=$(fw_count "$BLUE" "egress not from a tier")
spoof_dropped() { [ "$(fw_count "$BLUE" "egress not from a tier")" -gt "$SPOOF0" ]; }
check "blue-web-2 sends an ICMPv6 error from fd10:10:99::1 to the internet host" spoof_icmp6
check "blue's router drops it as egress not from a tier" wait_for 3 spoof_dropped
check "a route with an IPv4 next hop is refused, naming route.nexthop" refused6 fd10:10:98::/64 10.10.1.12
check "route delete r6-99" S route delete r6-99 --tenant demo --vpc blue
check_not "after the delete, blue-db-1 gets no answer" wait_for 3 routed6 blue-db-1
check_not "nor a ping reply" ping6 blue-db-1 fd10:10:99::1

# ---- IPv6 load balancer (issue 21) ---------------------------------------------------------
# A public VIP from the site's IPv6 pool 2001:db8:100::/40, outside every VPC's range: the
# gateway serving blue routes it (/128) into blue's router and announces it; the router
# spreads new connections over blue-web-1 and blue-web-2 (Maglev, table ip6 stackfabric6)
# by DNAT to their ULA addresses.
section "IPv6 load balancer: a public VIP from the site's pool over blue's web tier"
VIP6=2001:db8:1ff::80
INET6=2001:db8:ffff::10
# spread6 N - "name count" for N new connections from the internet host to [VIP6]:80; a
# connection that fails counts as FAILED.
spread6() {
    ip netns exec "${LAB_PREFIX}internet" bash -c "for i in \$(seq $1); do curl -6 -g -s -m 2 --interface $INET6 http://[$VIP6]/ || echo FAILED; done" |
        sort | uniq -c | awk '{print $2, $1}'
}
# health6 ADDR - the health sfctl shows for backend ADDR of web6.
health6() { S -o json lb show web6 --tenant demo --vpc blue | json "[b['health'] for b in d['backends'] if b['ip']=='$1'][0]"; }
all_up6() { [ "$(health6 "$W1")" = up ] && [ "$(health6 "$W2")" = up ]; }
# refused_lb6 FIELD ARGS... - sfctl refuses the load balancer, naming FIELD.
refused_lb6() {
    local field=$1 out
    shift
    out=$(S lb create bad6 --tenant demo --vpc blue --port 80 "$@" 2>&1) && return 1
    grep -qF "$field" <<<"$out"
}
check "create LB web6 [$VIP6]:80 over [$W1]:80 and [$W2]:80, TCP check every 500 ms, fall 2" \
    S lb create web6 --tenant demo --vpc blue --vip "$VIP6" --port 80 --backend "[$W1]:80" \
    --backend "[$W2]:80" --health tcp --interval-ms 500 --timeout-ms 300 --rise 2 --fall 2
check "the internet host learned $VIP6/128 from the fabric" wait_for 30 bash -c "ip -n ${LAB_PREFIX}internet -6 route show $VIP6 | grep -q ."
check "both backends are up" wait_for 15 all_up6
check "the VIP answers the internet host" wait_for 20 bash -c "ip netns exec ${LAB_PREFIX}internet curl -6 -g -s -m 2 --interface $INET6 http://[$VIP6]/ | grep -q blue-web"
# dnat6_count - packets counted by web6's DNAT rule in the serving router's IPv6 table.
dnat6_count() {
    local n
    n=$(ip netns exec "${LAB_PREFIX}$(serving "$BLUE")-vpc$BLUE" nft list chain ip6 stackfabric6 prerouting 2>/dev/null |
        grep -F "comment \"lb [$VIP6]:80/tcp\"" | sed -n 's/.*counter packets \([0-9]*\) .*/\1/p')
    echo "${n:-0}"
}
D0=$(dnat6_count)
SPREAD6=$(spread6 40)
while read -r line; do echo "    $line"; done <<<"$SPREAD6"
check_eq "40 connections reach both backends, none fails" "blue-web-1 blue-web-2" \
    "$(awk '$2 > 0 {print $1}' <<<"$SPREAD6" | sort | tr '\n' ' ' | sed 's/ $//')"
check "the router's DNAT rule counted them ($D0 before, $(dnat6_count) after)" test "$(dnat6_count)" -ge $((D0 + 40))
check "stop blue-web-2's server" L vm-http-stop blue-web-2
w2_down6() { [ "$(health6 "$W2")" = down ]; }
check "blue-web-2 is marked down (interval 500 ms x fall 2)" wait_for 10 w2_down6
AFTER6=$(spread6 30)
while read -r line; do echo "    $line"; done <<<"$AFTER6"
check_eq "then all 30 new connections succeed, all on blue-web-1" "blue-web-1 30" "$AFTER6"
check "start blue-web-2's server again" L vm-http-start blue-web-2

# The VIP across a gateway failover: the serving gateway's agent hangs (SIGSTOP, as
# failover.sh section 5), its fence stands blue's router down (host routes withdrawn, the
# gateway's FRR still up and peering), the standby activates it. The /128 must leave the old
# gateway's announcement and kernel and come from the new one, with packets through it.
section "IPv6 load balancer across a gateway failover: the /128 follows blue's router"
# vip6_held GW - GW's kernel routes VIP6/128 into a VPC router (the agent's route, proto
# boot; a route learned from the leaves is proto bgp and does not count).
vip6_held() { ip -n "${LAB_PREFIX}$1" -6 route show "$VIP6/128" proto boot | grep -q .; }
# vip6_only GW - GW alone holds the VIP's route.
vip6_only() { vip6_held "$1" && ! vip6_held "$(other "$1")"; }
# leaf1_via GW - border leaf leaf1 (the internet host's next hop) routes the VIP to GW only.
leaf1_via() {
    local r
    r=$(ip -n "${LAB_PREFIX}leaf1" -6 route show "$VIP6/128")
    grep -q "dev $1 " <<<"$r" && ! grep -q "dev $(other "$1") " <<<"$r"
}
agent_pid() { cat "$STATE/pids/$1.pid"; }
A=$(serving "$BLUE")
B=$(other "$A")
if [ -z "$A" ]; then
    fail "no gateway serves blue"
else
    pass "$A serves blue and web6, $B stands by"
    check "both backends are up again" wait_for 15 all_up6
    check "$A alone announces $VIP6/128 (leaves)" wait_for 10 announced_by "$VIP6" "$A"
    check "$A alone holds the VIP's route" vip6_only "$A"
    check "leaf1 routes $VIP6 to $A" leaf1_via "$A"
    STOPPED=$(agent_pid "$A")
    # Whatever happens below, the agent is not left stopped (lab down kills it anyway).
    test_exit() { kill -CONT "$STOPPED" 2>/dev/null; }
    kill -STOP "$STOPPED"
    check "$B alone announces $VIP6/128 once $A's fence stands it down" wait_for 20 announced_by "$VIP6" "$B"
    check "leaf1 routes $VIP6 to $B, no longer to $A" wait_for 10 leaf1_via "$B"
    # The /128 reaches the internet host one BGP hop after leaf1: the fence withdraws it
    # before the standby announces it (never two announcers), so the host may have lost it
    # for that moment (its packets still reach leaf1 by the pool's /40) and gets it back
    # once leaf1's update arrives.
    check "the internet host has its route to $VIP6 again (through leaf1)" \
        wait_for 10 bash -c "ip -n ${LAB_PREFIX}internet -6 route show $VIP6 | grep -q ."
    check "$B alone holds the VIP's route ($A's was withdrawn)" vip6_only "$B"
    check_eq "$B's tier links are the ones up" "$B" "$(serving "$BLUE")"
    D0=$(dnat6_count)
    SPREADF=$(spread6 30)
    while read -r line; do echo "    $line"; done <<<"$SPREADF"
    check_eq "30 new connections from the internet host reach both backends, none fails" \
        "blue-web-1 blue-web-2" "$(awk '$2 > 0 {print $1}' <<<"$SPREADF" | sort | tr '\n' ' ' | sed 's/ $//')"
    check "through $B: its router's DNAT rule counted them ($D0 before, $(dnat6_count) after)" \
        test "$(dnat6_count)" -ge $((D0 + 30))
    check "never two announcers of $VIP6 over 3 s" never_two 3 "$VIP6"
    kill -CONT "$STOPPED"
    check "$A's agent resumes: never two announcers of $VIP6 over 8 s" never_two 8 "$VIP6"
    check_eq "$VIP6/128 stays with $B" "$B" "$(announcers "$VIP6")"
    check "$B alone still holds the VIP's route" vip6_only "$B"
    check "the VIP still answers the internet host" bash -c "ip netns exec ${LAB_PREFIX}internet curl -6 -g -s -m 2 --interface $INET6 http://[$VIP6]/ | grep -q blue-web"
fi
check "an IPv6 VIP with an IPv4 backend is refused, naming lb.backends[0].ip" \
    refused_lb6 "lb.backends[0].ip" --vip 2001:db8:1ff::81 --backend 10.10.1.12:80
check "an IPv4 VIP with an IPv6 backend is refused, naming lb.backends[0].ip" \
    refused_lb6 "lb.backends[0].ip" --vip 203.0.113.81 --backend "[$W2]:80"
check "an IPv6 VIP in no pool and no range of blue is refused, naming lb.vip" \
    refused_lb6 "lb.vip" --vip 2001:db8:ffff::81 --backend "[$W2]:80"
check "delete LB web6" S lb delete web6 --tenant demo --vpc blue
check "the internet host's route to $VIP6 is withdrawn" wait_for 30 bash -c "! ip -n ${LAB_PREFIX}internet -6 route show $VIP6 | grep -q ."

# ---- IPv6 pool blackholes ------------------------------------------------------------------
# As the IPv4 pools: the leaves announce the site's IPv6 pool backed by a blackhole (proto
# 245), the gateways hold the blackhole unannounced. A packet for an address of the pool
# nobody serves dies at the first edge node that has no more specific route: at the border
# leaf, or at a gateway a stale leaf route still points to (a failover's window), which
# without its blackhole would send it back up its default route to the leaf, round and
# round until the hop limit runs out.
section "IPv6 pool blackholes: an unused address of the pool never loops"
POOL6=2001:db8:100::/40
UNUSED6=2001:db8:1ff::99
# blackholed NODE - NODE's kernel holds our blackhole route for the pool.
blackholed() { ip -n "${LAB_PREFIX}$1" -6 route show type blackhole proto 245 | grep -q "^blackhole $POOL6 "; }
# silent_ping - the internet host sends 3 echo requests to UNUSED6: none is answered, and
# nothing comes back (no "Time exceeded" from a loop, no unreachable; ping sent them all).
silent_ping() {
    local out
    out=$(ip netns exec "${LAB_PREFIX}internet" ping -6 -n -c 3 -i 0.3 -W 1 -I "$INET6" "$UNUSED6" 2>&1)
    echo "$out"
    grep -q "3 packets transmitted, 0 received" <<<"$out" && ! grep -q "^From " <<<"$out"
}
for n in leaf1 leaf2 gw1 gw2; do
    check "$n holds the blackhole $POOL6 (proto 245)" wait_for 10 blackholed "$n"
done
check "the internet host learned $POOL6 from the fabric (the leaves originate it)" \
    wait_for 30 bash -c "ip -n ${LAB_PREFIX}internet -6 route show $POOL6 | grep -q 'proto bgp'"
check_eq "no gateway announces the pool itself" "" "$(announcers "$POOL6")"
check "a ping to the unused $UNUSED6 dies at the border leaf: no reply, nothing back" silent_ping
# A stale route on leaf1 pointing UNUSED6 at gw1, as a VIP's /128 does for a moment after its
# gateway stopped serving it.
GW1_LL=$(ip -n "${LAB_PREFIX}gw1" -6 -br addr show dev leaf1 scope link | awk '{sub("/.*", "", $3); print $3}')
check "leaf1 gets a stale route $UNUSED6/128 via gw1 ($GW1_LL)" \
    ip -n "${LAB_PREFIX}leaf1" -6 route add "$UNUSED6/128" via "$GW1_LL" dev gw1
check "the internet host's ping to $UNUSED6 dies at gw1: no reply, no hop limit exceeded" silent_ping
check "remove the stale route" ip -n "${LAB_PREFIX}leaf1" -6 route del "$UNUSED6/128" via "$GW1_LL" dev gw1

lab_finish
