#!/usr/bin/env bash
# End-to-end test of the switch fabric (issue: switch agent, bare-metal ports, Direct Connect):
# a spine and two leaves run sf-switch-agent; bare-metal server bm1 on leaf1 port bm1 joins
# blue's web tier by a switch port binding; the customer's data centre router `cdc` (an FRR
# StackFabric does not manage: static config written by deploy/lab.sh) on leaf2 port cdc peers
# eBGP with blue's VPC router over a Direct Connect (the port handed into its own VNI). Real
# packets, real FRR, real etcd; red has the same private range and must see none of it.
# Ports are untagged: this kernel has no 802.1Q (VLAN bindings are validated here and their
# planning is unit-tested).
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$REPO/tests/e2e/lib.sh"
lab_test sff
# shellcheck source=deploy/lib/netlab.sh
source "$REPO/deploy/lib/netlab.sh"

vtysh_in() { local n=$1; shift; vtysh --vty_socket "$STATE/frr/$n" "$@"; }
pings() { X "$1" ping -c 1 -W 1 "$2"; }
dc_field() { S -o json dc show cdc --tenant demo --vpc blue | json "$1"; }
# bgp_peers_up NODE N: NODE's FRR has at least N established BGP sessions.
bgp_peers_up() {
    vtysh_in "$1" -c 'show bgp summary json' | python3 -c '
import json, sys
d = json.load(sys.stdin)
peers = d.get("ipv4Unicast", {}).get("peers", {})
sys.exit(0 if sum(p.get("state") == "Established" for p in peers.values()) >= int(sys.argv[1]) else 1)' "$2"
}

section "lab up (prefix $LAB_PREFIX)"
t0=$SECONDS
if ! L up --no-build; then fail "deploy/lab.sh up"; finish; exit 1; fi
pass "lab up in $((SECONDS - t0)) s"
WEB_VNI=$(S -o json network show web --tenant demo --vpc blue | json "d['vni']")
BLUE_ID=$(S -o json vpc show blue --tenant demo | json "d['id']")
RED_ID=$(S -o json vpc show red --tenant demo | json "d['id']")
BLUE_GW=$(S -o json vpc show blue --tenant demo | json "d['primary_gateway']")
RED_GW=$(S -o json vpc show red --tenant demo | json "d['primary_gateway']")
BLUE_NS=${LAB_PREFIX}$BLUE_GW-vpc$BLUE_ID
RED_NS=${LAB_PREFIX}$RED_GW-vpc$RED_ID

section "1. spine and leaves: underlay and EVPN from inventory"
check "spine1 has eBGP up with both leaves" wait_for 30 bgp_peers_up spine1 2
check "spine1 is EVPN transit (no advertise-all-vni)" bash -c "! vtysh --vty_socket '$STATE/frr/spine1' -c 'show running-config' | grep -q advertise-all-vni"
check "leaf1 is transit while it hands no port into a VNI" bash -c "! vtysh --vty_socket '$STATE/frr/leaf1' -c 'show running-config' | grep -q advertise-all-vni"
check "leaf1 reaches leaf2's loopback over the fabric" X leaf1 ping -c 1 -W 1 -I 10.255.0.1 10.255.0.2
# The agents read their sessions from bgpd's vty socket (no vtysh process) into their status.
established_in_status() { # NODE N: sfctl bgp shows N Established sessions of NODE, with prefixes
    S -o json bgp "$1" | python3 -c '
import json, sys
d = [s for s in json.load(sys.stdin) if s["state"] == "Established"]
sys.exit(0 if len(d) >= int(sys.argv[1]) and all(any(p["received"] > 0 for p in s["prefixes"].values()) for s in d) else 1)' "$2"
}
check "hv1's status carries its 2 Established underlay sessions, with prefixes" wait_for 20 established_in_status hv1 2
check "gw1's status carries its Established underlay sessions" wait_for 20 established_in_status gw1 1

section "1a. a bgpd restarted from a file without our configuration gets it back within one resync (30 s)"
# frr-reload.py saves what the agent applies into frr.conf, so a daemon that restarts after a
# crash normally finds it there. Here the file holds only the lab's bootstrap (no BGP at all),
# as after a write that never happened or a package reinstalling its default: only a full
# reload by the agent brings the sessions back. The agent notices the daemon's new pid at
# its next pass (the 30 s resync) instead of waiting for its periodic full pass (5 min on a
# hypervisor, every 10th pass on a switch).
bootstrap_then_restart() { # NODE: frr.conf = bootstrap, then bgpd restarted by its pid
    printf 'frr defaults datacenter\nhostname %s\nip forwarding\nipv6 forwarding\n!\n' "$1" \
        >"$STATE/frr/$1/frr.conf" &&
        netlab_frr_restart "${LAB_PREFIX}$1" "$STATE/frr/$1" bgpd
}
t0=$SECONDS
check "hv2's bgpd restarted with the bootstrap file" bootstrap_then_restart hv2
check "hv2's 2 sessions are Established again within 40 s" wait_for 40 bgp_peers_up hv2 2
pass "hv2 back in $((SECONDS - t0)) s"
t0=$SECONDS
check "leaf2's bgpd restarted with the bootstrap file" bootstrap_then_restart leaf2
check "leaf2's 6 sessions (spine, 3 hypervisors, 2 gateways) are Established again within 40 s" wait_for 40 bgp_peers_up leaf2 6
pass "leaf2 back in $((SECONDS - t0)) s"
check "leaf1 reaches leaf2's loopback over the fabric again" wait_for 20 X leaf1 ping -c 1 -W 1 -I 10.255.0.1 10.255.0.2

section "1b. a leaf accepts from a hypervisor only its VTEP (rogue announcements are dropped)"
# hv1 is made to announce a foreign prefix and a public /32 (as a compromised hypervisor
# could, to pull traffic to itself); hv1 really sends them, and leaf1 must install neither,
# while hv1's VTEP route stays.
advertised_by_hv1() { vtysh_in hv1 -c 'show ip bgp neighbors leaf1 advertised-routes' | grep -q "$1"; }
leaf1_has() { vtysh_in leaf1 -c "show ip bgp $1 json" | grep -q '"paths"'; }
check "hv1 injects 192.0.2.0/24 and 203.0.113.99/32 (blackholes + network statements)" bash -c "
    ip -n ${LAB_PREFIX}hv1 route add blackhole 192.0.2.0/24 &&
    ip -n ${LAB_PREFIX}hv1 route add blackhole 203.0.113.99/32 &&
    vtysh --vty_socket '$STATE/frr/hv1' -c 'configure' -c 'router bgp 65001' -c 'address-family ipv4 unicast' \
        -c 'network 192.0.2.0/24' -c 'network 203.0.113.99/32'"
check "hv1 advertises 192.0.2.0/24 to leaf1" wait_for 10 advertised_by_hv1 192.0.2.0/24
check "hv1 advertises 203.0.113.99/32 to leaf1" wait_for 10 advertised_by_hv1 203.0.113.99/32
sleep 2
check "leaf1 did not accept 192.0.2.0/24 from hv1" bash -c "! vtysh --vty_socket '$STATE/frr/leaf1' -c 'show ip bgp 192.0.2.0/24 json' | grep -q '\"paths\"'"
check "leaf1 did not accept 203.0.113.99/32 from hv1" bash -c "! vtysh --vty_socket '$STATE/frr/leaf1' -c 'show ip bgp 203.0.113.99/32 json' | grep -q '\"paths\"'"
check "no kernel route to 192.0.2.0/24 on leaf1" bash -c "[ -z \"\$(ip -n ${LAB_PREFIX}leaf1 route show 192.0.2.0/24)\" ]"
check "leaf1 still has hv1's VTEP 10.255.1.1/32" leaf1_has 10.255.1.1/32
check "hv1 withdraws the rogue announcements" bash -c "
    vtysh --vty_socket '$STATE/frr/hv1' -c 'configure' -c 'router bgp 65001' -c 'address-family ipv4 unicast' \
        -c 'no network 192.0.2.0/24' -c 'no network 203.0.113.99/32' &&
    ip -n ${LAB_PREFIX}hv1 route del blackhole 192.0.2.0/24 &&
    ip -n ${LAB_PREFIX}hv1 route del blackhole 203.0.113.99/32"

section "1c. a leaf accepts from a hypervisor only EVPN routes of the VNIs it carries"
# hv2 carries blue only. Made to hold a VXLAN of red's VNI outside the agent's naming (so it is
# not reported as an observed bridge), its FRR announces a multicast (type 3) route for red:
# were it accepted, red's hypervisors would flood red's broadcasts to hv2.
RED_VNI=$(S -o json network show web --tenant demo --vpc red | json "d['vni']")
rt_on() { vtysh_in "$1" -c 'show bgp l2vpn evpn route detail' | grep -q "RT:65002:$RED_VNI\b"; }
check "hv2 does not carry red's VNI $RED_VNI" bash -c "! ip -n ${LAB_PREFIX}hv2 -d link show | grep -q 'vxlan id $RED_VNI '"
check "hv2 gets a rogue VXLAN of red's VNI in a bridge" bash -c "
    ip -n ${LAB_PREFIX}hv2 link add brrogue type bridge &&
    ip -n ${LAB_PREFIX}hv2 link add vxrogue type vxlan id $RED_VNI local 10.255.1.2 dstport 4789 nolearning &&
    ip -n ${LAB_PREFIX}hv2 link set vxrogue master brrogue &&
    ip -n ${LAB_PREFIX}hv2 link set brrogue up && ip -n ${LAB_PREFIX}hv2 link set vxrogue up"
check "hv2's FRR originates red's VNI (route target 65002:$RED_VNI)" wait_for 15 rt_on hv2
sleep 3
check "leaf1 did not accept hv2's route for red's VNI" bash -c "! vtysh --vty_socket '$STATE/frr/leaf1' -c 'show bgp l2vpn evpn route detail' | grep -q 'RT:65002:$RED_VNI\b'"
check "leaf2 did not accept hv2's route for red's VNI" bash -c "! vtysh --vty_socket '$STATE/frr/leaf2' -c 'show bgp l2vpn evpn route detail' | grep -q 'RT:65002:$RED_VNI\b'"
check "hv1 does not flood red's VNI to hv2" bash -c "! bridge -n ${LAB_PREFIX}hv1 fdb show dev vxlan$RED_VNI | grep -q 'dst 10.255.1.2 '"
check "hv1 still floods blue's VNI to hv2" bash -c "bridge -n ${LAB_PREFIX}hv1 fdb show dev vxlan$WEB_VNI | grep -q 'dst 10.255.1.2 '"
check "the rogue VXLAN is removed" bash -c "ip -n ${LAB_PREFIX}hv2 link del vxrogue && ip -n ${LAB_PREFIX}hv2 link del brrogue"
# A red VM placed on hv2: the leaves widen hv2's scope by one list line (no full reload) and
# take hv2's routes for red from then on (FRR re-reads them after its route-map delay).
check "red-web-3 on hv2 (red is new to hv2)" L vm-add red-web-3 hv2 demo red web 10.10.1.23
check "leaf1 now accepts hv2's routes for red's VNI" wait_for 30 bash -c "vtysh --vty_socket '$STATE/frr/leaf1' -c 'show bgp l2vpn evpn route detail' | grep -q 'RT:65002:$RED_VNI\b'"
check "red-web-1 reaches red-web-3 on hv2" wait_for 30 pings red-web-1 10.10.1.23
check "leaf1 applied hv2's new VNI as a list delta, not a full reload" bash -c "grep -h 'FRR list delta applied' '$STATE'/logs/*leaf1*.log | grep -q 'added=1'"
check "vm-del red-web-3" L vm-del red-web-3

section "1d. routed IPv6 through the leaves and the border (issue 21)"
# What an active VPC router's announcement looks like to gw1's FRR: an address on lo and a
# kernel route of a /64 inside the site's IPv6 pool (2001:db8:100::/40). The internet host
# must reach it over IPv6 and back. A route outside the pool on gw1, and any IPv6 route from
# hv1 (even inside the pool), must not reach leaf1.
V6_NET=2001:db8:100:ff::/64 V6_ADDR=2001:db8:100:ff::1 INET6=2001:db8:ffff::10
GW1_NS=${LAB_PREFIX}gw1 INET_NS=${LAB_PREFIX}internet
bgp6_has() { vtysh_in "$1" -c "show bgp ipv6 unicast $2 json" | grep -q '"paths"'; }
advertised6() { vtysh_in "$1" -c "show bgp ipv6 unicast neighbors leaf1 advertised-routes" | grep -q "$2"; }
GW1_ASN=$(vtysh_in gw1 -c 'show bgp summary json' | json "d['ipv4Unicast']['as']")
check "gw1 learned the internet's IPv6 default route from the fabric" wait_for 30 bash -c "ip -n $GW1_NS -6 route show default | grep -q 'proto bgp'"
check "gw1: $V6_ADDR on lo, kernel routes $V6_NET and 2001:db8:bad::/48 (outside the pool)" bash -c "
    ip -n $GW1_NS addr add $V6_ADDR/128 dev lo &&
    ip -n $GW1_NS -6 route add blackhole $V6_NET &&
    ip -n $GW1_NS -6 route add blackhole 2001:db8:bad::/48"
check "leaf1 installed $V6_NET from gw1" wait_for 20 bash -c "ip -n ${LAB_PREFIX}leaf1 -6 route show $V6_NET | grep -q 'proto bgp'"
check "the internet host learned $V6_NET from leaf1" wait_for 20 bash -c "ip -n $INET_NS -6 route show $V6_NET | grep -q 'proto bgp'"
check "the internet host pings $V6_ADDR (IPv6 both ways through the border)" wait_for 20 ip netns exec "$INET_NS" ping -6 -c 1 -W 1 -I "$INET6" "$V6_ADDR"
check_eq "gw1 fetches the internet's page over IPv6 from $V6_ADDR" internet "$(ip netns exec "$GW1_NS" curl -6 -s -m 3 --interface "$V6_ADDR" "http://[$INET6]/")"
check_eq "the internet's IPv6 HTTP server saw $V6_ADDR as the client" "$V6_ADDR" "$(tail -n 1 "$STATE/logs/internet-http6.log" | awk '{print $1}')"
check_not "gw1 does not announce 2001:db8:bad::/48 (outside the pool)" advertised6 gw1 2001:db8:bad::
# Made to announce it anyway (as a misconfigured or compromised gateway could), gw1 sends it
# and leaf1 must not take it.
check "gw1 is made to announce 2001:db8:bad::/48 (network statement)" vtysh_in gw1 -c configure -c "router bgp $GW1_ASN" -c 'address-family ipv6 unicast' -c 'network 2001:db8:bad::/48'
check "gw1 advertises 2001:db8:bad::/48 to leaf1" wait_for 10 advertised6 gw1 2001:db8:bad::/48
sleep 2
check_not "leaf1 did not accept 2001:db8:bad::/48 from gw1" bgp6_has leaf1 2001:db8:bad::/48
check "no route to 2001:db8:bad::/48 on leaf1" bash -c "[ -z \"\$(ip -n ${LAB_PREFIX}leaf1 -6 route show 2001:db8:bad::/48)\" ]"
# hv1 (a hypervisor) may announce nothing in IPv6, even inside the pool.
check "hv1 is made to announce 2001:db8:100:ee::/64 in IPv6 unicast" bash -c "
    ip -n ${LAB_PREFIX}hv1 -6 route add blackhole 2001:db8:100:ee::/64 &&
    vtysh --vty_socket '$STATE/frr/hv1' -c 'configure' -c 'router bgp 65001' -c 'address-family ipv6 unicast' \
        -c 'neighbor FABRIC activate' -c 'network 2001:db8:100:ee::/64'"
check "hv1 advertises 2001:db8:100:ee::/64 to leaf1" wait_for 30 advertised6 hv1 2001:db8:100:ee::/64
sleep 2
check_not "leaf1 did not accept 2001:db8:100:ee::/64 from hv1" bgp6_has leaf1 2001:db8:100:ee::/64
check "no route to 2001:db8:100:ee::/64 on leaf1" bash -c "[ -z \"\$(ip -n ${LAB_PREFIX}leaf1 -6 route show 2001:db8:100:ee::/64)\" ]"
check "leaf1 still has $V6_NET from gw1" bgp6_has leaf1 "$V6_NET"
check "hv1 and gw1 withdraw, gw1's address and routes are removed" bash -c "
    vtysh --vty_socket '$STATE/frr/hv1' -c 'configure' -c 'router bgp 65001' -c 'address-family ipv6 unicast' \
        -c 'no network 2001:db8:100:ee::/64' -c 'no neighbor FABRIC activate' &&
    ip -n ${LAB_PREFIX}hv1 -6 route del blackhole 2001:db8:100:ee::/64 &&
    vtysh --vty_socket '$STATE/frr/gw1' -c configure -c 'router bgp $GW1_ASN' \
        -c 'address-family ipv6 unicast' -c 'no network 2001:db8:bad::/48' &&
    ip -n $GW1_NS -6 route del blackhole 2001:db8:bad::/48 &&
    ip -n $GW1_NS -6 route del blackhole $V6_NET &&
    ip -n $GW1_NS addr del $V6_ADDR/128 dev lo"
check "leaf1 withdrew $V6_NET" wait_for 20 bash -c "! ip -n ${LAB_PREFIX}leaf1 -6 route show $V6_NET | grep -q ."
check "hv1's sessions are back (blue-web-1 reaches blue-web-2)" wait_for 30 pings blue-web-1 10.10.1.12

section "2. bare metal: bm1 (leaf1 port bm1) joins blue's web tier"
X bm1 ip addr add 10.10.1.50/24 dev leaf1
X bm1 ip route add default via 10.10.1.1
check_not "before the binding bm1 cannot reach blue-web-1" pings bm1 10.10.1.11
check "sfctl port create bm1 on leaf1 port bm1" S port create bm1 --tenant demo --vpc blue --network web --node leaf1 --interface bm1 --ip 10.10.1.50
check "bm1 reaches blue-web-1 (hv1)" wait_for 30 pings bm1 10.10.1.11
check "bm1 reaches blue-web-2 (hv2)" pings bm1 10.10.1.12
check "blue-web-1 reaches bm1" pings blue-web-1 10.10.1.50
check_eq "bm1 fetches blue-web-2's page" "blue-web-2" "$(X bm1 curl -s -m 3 http://10.10.1.12/)"
check "blue gets a source NAT address" S nat snat blue-snat --tenant demo --vpc blue --public-ip 203.0.113.10
check "bm1 reaches the internet through blue's router" wait_for 20 X bm1 curl -s -m 3 -o /dev/null http://198.51.100.10/
check "leaf1: bm1 is a port of brvx-$WEB_VNI" bash -c "ip -n ${LAB_PREFIX}leaf1 -j link show bm1 | grep -q '\"master\":\"brvx-$WEB_VNI\"'"
check "leaf1 now advertises its VNIs (advertise-all-vni)" bash -c "vtysh --vty_socket '$STATE/frr/leaf1' -c 'show running-config' | grep -q advertise-all-vni"
check_not "red-web-1 (same 10.10.1.0/24) cannot reach bm1" pings red-web-1 10.10.1.50
check_not "leaf1 carries no red VNI" bash -c "ip -n ${LAB_PREFIX}leaf1 link show | grep -q brvx-$(S -o json network show web --tenant demo --vpc red | json "d['vni']")"

section "3. bad input is refused, naming the field, and changes nothing"
ports_before=$(S -o json port list | json "len(d)")
bad() { # bad FIELD CMD...: CMD must fail and name FIELD
    local field=$1 out; shift
    if out=$(S "$@" 2>&1); then fail "accepted: $*"; return; fi
    if grep -q "invalid $field\|$field" <<<"$out"; then pass "refused naming $field: $(head -c 160 <<<"$out")"; else fail "refused without naming $field: $out"; fi
}
bad port.interface port create bm1b --tenant demo --vpc blue --network web --node leaf1 --interface bm1 --ip 10.10.1.51
bad port.interface port create bm1c --tenant demo --vpc blue --network web --node leaf1 --interface bm1 --vlan 100 --ip 10.10.1.52
bad port.interface port create bm1d --tenant demo --vpc blue --network web --node leaf1 --interface spine1 --vlan 5 --ip 10.10.1.53
bad port.vlan port create bm1e --tenant demo --vpc blue --network web --node leaf2 --interface cdc --vlan 4095 --ip 10.10.1.54
bad port.interface port create bm1f --tenant demo --vpc blue --network web --node hv1 --interface eth9 --ip 10.10.1.55
bad dc.interface dc create x --tenant demo --vpc blue --switch leaf1 --interface bm1 --local-address 169.254.101.1/30 --peer-address 169.254.101.2 --customer-asn 65300 --accept 192.168.0.0/16
bad dc.customer_asn dc create x --tenant demo --vpc blue --switch leaf2 --interface cdc --local-address 169.254.100.1/30 --peer-address 169.254.100.2 --customer-asn 23456 --accept 192.168.100.0/24
bad "dc.accept\[0\]" dc create x --tenant demo --vpc blue --switch leaf2 --interface cdc --local-address 169.254.100.1/30 --peer-address 169.254.100.2 --customer-asn 65300 --accept "192.168.100.5/24"
bad "dc.accept\[1\]" dc create x --tenant demo --vpc blue --switch leaf2 --interface cdc --local-address 169.254.100.1/30 --peer-address 169.254.100.2 --customer-asn 65300 --accept 192.168.100.0/24 --accept "10.0.0.0/8 le 7"
bad dc.switch dc create x --tenant demo --vpc blue --switch hv1 --interface cdc --local-address 169.254.100.1/30 --peer-address 169.254.100.2 --customer-asn 65300 --accept 192.168.100.0/24
bad dc.local_address dc create x --tenant demo --vpc blue --switch leaf2 --interface cdc --local-address 10.10.9.1/30 --peer-address 10.10.9.2 --customer-asn 65300 --accept 192.168.100.0/24
check_eq "no Direct Connect was created" "0" "$(S -o json dc list | json "len(d)")"
check_eq "no port was added" "$ports_before" "$(S -o json port list | json "len(d)")"

section "4. Direct Connect: blue peers eBGP with the customer's router over leaf2 port cdc"
check_not "before it, blue-web-1 cannot reach cdc-host" pings blue-web-1 192.168.100.10
check "sfctl dc create cdc" S dc create cdc --tenant demo --vpc blue --switch leaf2 --interface cdc --local-address 169.254.100.1/30 --peer-address 169.254.100.2 --customer-asn 65300 --accept 192.168.100.0/24
check "session Established in sfctl within 60 s" wait_for 60 bash -c "[ \"\$('$REPO/deploy/lab.sh' sfctl -o json dc show cdc --tenant demo --vpc blue | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"bgp_state\"])')\" = Established ]"
# Received counts what the customer sent before the accept filter: its two networks, plus
# blue's own tier echoed back by its FRR (dropped on our side by AS-path loop detection).
check "the counts settle: >= 2 received, 1 accepted, 1 sent" wait_for 20 bash -c "'$REPO/deploy/lab.sh' sfctl -o json dc show cdc --tenant demo --vpc blue | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if d[\"prefixes_received\"] >= 2 and (d[\"prefixes_accepted\"], d[\"prefixes_sent\"]) == (1, 1) else 1)'"
S dc list
check_eq "sfctl dc show: gateway is blue's" "$BLUE_GW" "$(dc_field "d['gateway']")"
check "the customer learned blue's tier 10.10.1.0/24" bash -c "vtysh --vty_socket '$STATE/frr/cdc' -c 'show ip route 10.10.1.0/24 json' | grep -q '\"protocol\":\"bgp\"'"
check "blue's router installed 192.168.100.0/24 from BGP" wait_for 10 bash -c "ip -n '$BLUE_NS' route show 192.168.100.0/24 | grep -q 'proto bgp'"
check_not "blue's router did not install 172.16.50.0/24 (not accepted)" bash -c "ip -n '$BLUE_NS' route show 172.16.50.0/24 | grep -q ."
check "blue-web-1 reaches cdc-host 192.168.100.10" wait_for 20 pings blue-web-1 192.168.100.10
check "cdc-host reaches blue-web-2 (HTTP, its customer address as source)" bash -c "[ \"\$('$REPO/deploy/lab.sh' exec cdc-host curl -s -m 3 --interface 192.168.100.10 http://10.10.1.12/)\" = blue-web-2 ]"
check "bm1 (bare metal in blue) reaches cdc-host too" pings bm1 192.168.100.10
check_not "blue-web-1 cannot reach 172.16.50.1 (prefix not accepted)" pings blue-web-1 172.16.50.1
check_not "red's router learned nothing (no 192.168.100.0/24)" bash -c "ip -n '$RED_NS' route show 192.168.100.0/24 | grep -q ."
check_not "red-web-1 (same private range) cannot reach cdc-host" pings red-web-1 192.168.100.10
check_not "cdc-host cannot reach red's 10.10.1.11 ... it reaches blue's" bash -c "[ \"\$('$REPO/deploy/lab.sh' exec cdc-host curl -s -m 3 http://10.10.1.11/)\" = red-web-1 ]"

section "4b. the session moves with the VPC when its gateway is drained"
check "sfctl gateway drain $BLUE_GW" S gateway drain "$BLUE_GW"
check "the Direct Connect is served by the other gateway, Established" wait_for 60 bash -c "'$REPO/deploy/lab.sh' sfctl -o json dc show cdc --tenant demo --vpc blue | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if d[\"gateway\"] not in (\"\", \"$BLUE_GW\") and d[\"bgp_state\"] == \"Established\" else 1)'"
check "blue-web-1 reaches cdc-host through the new gateway" wait_for 30 pings blue-web-1 192.168.100.10
check_not "the drained gateway runs no FRR for blue any more" bash -c "pgrep -f -- '-N [${LAB_PREFIX:0:1}]${LAB_PREFIX:1}$BLUE_GW-vpc$BLUE_ID' >/dev/null"
check "sfctl gateway undrain $BLUE_GW" S gateway undrain "$BLUE_GW"
check "it stays on the other gateway (no failback), Established" wait_for 60 bash -c "'$REPO/deploy/lab.sh' sfctl -o json dc show cdc --tenant demo --vpc blue | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if d[\"gateway\"] not in (\"\", \"$BLUE_GW\") and d[\"bgp_state\"] == \"Established\" else 1)'"
check "blue-web-1 reaches cdc-host again" wait_for 30 pings blue-web-1 192.168.100.10

section "5. removing the Direct Connect tears down the session and the routes, and nothing else"
DC_VNI=$(dc_field "d['vni']")
check "sfctl dc delete cdc" S dc delete cdc --tenant demo --vpc blue
check "the customer's session leaves Established" wait_for 30 bash -c "! vtysh --vty_socket '$STATE/frr/cdc' -c 'show bgp summary json' | grep -q '\"state\":\"Established\"'"
check "blue's router has no 192.168.100.0/24" wait_for 20 bash -c "! ip -n '$BLUE_NS' route show 192.168.100.0/24 | grep -q ."
check_not "blue-web-1 no longer reaches cdc-host" pings blue-web-1 192.168.100.10
check "leaf2's brvx-$DC_VNI is gone and port cdc released" wait_for 20 bash -c "! ip -n ${LAB_PREFIX}leaf2 link show brvx-$DC_VNI 2>/dev/null && ! ip -n ${LAB_PREFIX}leaf2 -j link show cdc | grep -q master"
check "the gateway's brvx-$DC_VNI is gone" wait_for 20 bash -c "! ip -n ${LAB_PREFIX}$BLUE_GW link show brvx-$DC_VNI 2>/dev/null"
check "bm1 still reaches blue-web-1" pings bm1 10.10.1.11
check "blue-web-1 still reaches the internet" X blue-web-1 curl -s -m 3 -o /dev/null http://198.51.100.10/

section "6. unbinding bm1 releases its switch port"
check "sfctl port delete bm1" S port delete bm1 --tenant demo
check "leaf1's port bm1 left brvx-$WEB_VNI" wait_for 20 bash -c "! ip -n ${LAB_PREFIX}leaf1 -j link show bm1 | grep -q master"
check "bm1 no longer reaches blue-web-1" wait_for 20 bash -c "! '$REPO/deploy/lab.sh' exec bm1 ping -c 1 -W 1 10.10.1.11"

section "lab down"
L down
check "no namespace of this run remains" bash -c "! ip netns list | grep -q '^$LAB_PREFIX'"
# (the bracket keeps pgrep from matching this check's own command line)
check "no FRR of this run remains" bash -c "! pgrep -f -- '-N [${LAB_PREFIX:0:1}]${LAB_PREFIX:1}' >/dev/null"
trap - EXIT
finish
