#!/usr/bin/env bash
# End-to-end test of the Netris-compatible REST API (issue: CloudStack drives StackFabric):
# a client in the lab's mgmt namespace replays over HTTP what CloudStack's Netris provider does,
# in CloudStack's order and with CloudStack's names; VMs plugged into the tiers CloudStack
# created are reached from the internet host through the static NAT and the port forward; then
# everything is torn down in CloudStack's order and nothing of it may remain (sfctl, etcd keys,
# VPC router namespaces). Robustness (401, bad JSON, idempotent retries, 404/409) is checked
# while the objects stand.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$REPO/tests/e2e/lib.sh"
lab_test sfr
# shellcheck source=deploy/lib/netlab.sh
source "$REPO/deploy/lib/netlab.sh"

REST=https://172.31.255.3:8080   # HTTPS with the lab CA ($STATE/pki/ca.pem)
ETCD=http://172.31.255.2:2379
T=Admin                      # the Netris admin tenant = the StackFabric tenant
V=D1-A2-Z1-V5-myvpc          # CloudStack's names are valid StackFabric names: kept as they are
N1=D1-A2-Z1-V5-N9-tier1
N2=D1-A2-Z1-V5-N10-tier2
client() { # client PHASE: the replay client, from the mgmt namespace
    X mgmt env REST_CA="$STATE/pki/ca.pem" python3 "$REPO/tests/e2e/cloudstack_client.py" "$REST" "$STATE/rest-password" "$1"
}
phase() { # phase PHASE DESCRIPTION
    if client "$1"; then pass "$2"; else fail "$2 (see the FAIL lines above)"; fi
}
last_client() { tail -n 1 "$STATE/logs/internet-http.log" | awk '{print $1}'; }
etcd_keys() { X etcd env ETCDCTL_API=3 etcdctl --endpoints "$ETCD" get --prefix /stackfabric/ --keys-only | grep -v '^$'; }

section "lab up (prefix $LAB_PREFIX)"
t0=$SECONDS
if ! L up --no-build; then fail "deploy/lab.sh up"; finish; exit 1; fi
pass "lab up in $((SECONDS - t0)) s"
check "REST password file is private" test "$(stat -c %a "$STATE/rest-password")" = 600
check "REST answers HTTPS with a certificate the lab CA verifies" X mgmt curl -s -o /dev/null --cacert "$STATE/pki/ca.pem" "$REST/api/auth"
check_not "REST does not answer plain HTTP" X mgmt curl -s -m 3 -o /dev/null "${REST/https:/http:}/api/auth"

section "1. CloudStack sets up the zone, a VPC, tiers, NAT, LB, ACLs and a route"
phase setup "CloudStack's setup sequence"
check_eq "sfctl shows the VPC with CloudStack's CIDR" "10.20.0.0/16" "$(S -o json vpc show $V --tenant $T | json "d['cidr']")"
check_eq "sfctl shows tier 1 with VNI 1500001" "1500001" "$(S -o json network show $N1 --tenant $T --vpc $V | json "d['vni']")"
check_eq "tier 2: VNI, CIDR, gateway" "1500002 10.20.2.0/24 10.20.2.1" "$(S -o json network show $N2 --tenant $T --vpc $V | json "d['vni'], d['cidr'], d['gateway'].split('/')[0]" | tr -d "(),'")"
check_eq "three NAT rules in StackFabric" "3" "$(S -o json nat list --tenant $T --vpc $V | json "len([r for r in d if r.get('vpc') == '$V'])")"
check "the static route is in StackFabric" bash -c "'$REPO/deploy/lab.sh' sfctl -o json route list --tenant $T --vpc $V | grep -q 192.168.60.0/24"
check "the load balancer is in StackFabric" bash -c "'$REPO/deploy/lab.sh' sfctl -o json lb list --tenant $T --vpc $V | grep -q 203.0.113.44"
check "the zone allocation adopted the lab pool (no second pool)" bash -c "[ \"\$('$REPO/deploy/lab.sh' sfctl -o json pool list | grep -c 203.0.113.0/24)\" = 1 ]"
VPC_ID=$(S -o json vpc show $V --tenant $T | json "d['id']")
check "VPC id allocated ($VPC_ID)" test -n "$VPC_ID" -a "$VPC_ID" != 0

section "2. VMs on the tiers CloudStack created, reached through its NAT"
check "vm-add cs-vm1 on hv1 ($N1)" L vm-add cs-vm1 hv1 $T $V $N1 10.20.1.11
check "vm-add cs-vm2 on hv2 ($N2)" L vm-add cs-vm2 hv2 $T $V $N2 10.20.2.11
check "cs-vm1 reaches cs-vm2 across tiers" wait_for 30 X cs-vm1 ping -c 1 -W 1 10.20.2.11
check "internet reaches cs-vm2 through its static NAT 203.0.113.42" wait_for 30 bash -c "[ \"\$('$REPO/deploy/lab.sh' exec internet curl -s -m 2 http://203.0.113.42/)\" = cs-vm2 ]"
check "internet reaches cs-vm1 through the port forward 203.0.113.41:8080" wait_for 30 bash -c "[ \"\$('$REPO/deploy/lab.sh' exec internet curl -s -m 2 http://203.0.113.41:8080/)\" = cs-vm1 ]"
check_eq "cs-vm1 reaches the internet" "internet" "$(X cs-vm1 curl -s -m 3 http://198.51.100.10/)"
check_eq "and leaves from the source NAT address" "203.0.113.40" "$(last_client)"
check_eq "cs-vm2 leaves from its static NAT address" "203.0.113.42" "$(X cs-vm2 curl -s -m 3 http://198.51.100.10/ >/dev/null; last_client)"
X cs-vm2 ip addr add 192.168.60.1/32 dev lo
check "cs-vm1 reaches 192.168.60.1 through CloudStack's static route" wait_for 20 X cs-vm1 ping -c 1 -W 1 192.168.60.1
check "internet reaches a backend through the load balancer 203.0.113.44" wait_for 30 bash -c "case \"\$('$REPO/deploy/lab.sh' exec internet curl -s -m 2 http://203.0.113.44/)\" in cs-vm1|cs-vm2) true;; *) false;; esac"

section "2a. a VM plugged the way CloudStack's KVM agent does it (its own brvx-1500002 on hv3)"
# modifyvxlan-evpn.sh's layout, made outside the agent (deploy/lib/netlab.sh), then a VM's
# vnet in it: the agent must adopt the bridge (keep it, not mark it its own) and carry it.
HV3=${LAB_PREFIX}hv3
check "CloudStack's agent creates vxlan1500002 in brvx-1500002 on hv3" netlab_vxlan_add "$HV3" 1500002 10.255.1.3
check "vm-plug cs-vm3 on hv3 into it (10.20.2.13, tier 2)" L vm-plug cs-vm3 hv3 1500002 10.20.2.13/24 10.20.2.1
check "cs-vm1 (hv1, tier 1) reaches cs-vm3 across tiers" wait_for 30 X cs-vm1 ping -c 1 -W 1 10.20.2.13
check_eq "cs-vm3 answers HTTP from cs-vm1" "cs-vm3" "$(X cs-vm1 curl -s -m 3 http://10.20.2.13/)"
check_not "the bridge stays CloudStack's (no StackFabric ownership mark)" bash -c "ip -n $HV3 -d link show brvx-1500002 | grep -q 'alias stackfabric'"

section "2b. CloudStack's ACL items are enforced on tier 1"
# Listeners on 8022 (short-lived by construction: timeout), killed before the VMs go.
X cs-vm1 timeout 300 python3 -m http.server 8022 --bind 0.0.0.0 >/dev/null 2>&1 & L1=$!
X cs-vm2 timeout 300 python3 -m http.server 8022 --bind 0.0.0.0 >/dev/null 2>&1 & L2=$!
http_ok() { X "$1" curl -s -m 3 -o /dev/null "http://$2/"; }
check "listener on cs-vm1:8022 is up (local)" wait_for 10 http_ok cs-vm1 127.0.0.1:8022
check "listener on cs-vm2:8022 is up (local)" wait_for 10 http_ok cs-vm2 127.0.0.1:8022
acl_json=$(S -o json acl list --tenant $T --vpc $V)
check_eq "sfctl: one derived list on tier 1 with 3 rules" "1 $N1 3" "$(json "len(d), d[0]['tiers'][0], len(d[0]['rules'])" <<<"$acl_json" | tr -d "(),'")"
check "ACL 1: cs-vm2 -> cs-vm1:80 allowed" http_ok cs-vm2 10.20.1.11:80
check_not "ACL 2: cs-vm2 -> cs-vm1:8022 dropped (ingress deny tcp)" http_ok cs-vm2 10.20.1.11:8022
check "cs-vm1 -> cs-vm2:80 allowed" http_ok cs-vm1 10.20.2.11:80
check_not "ACL 3: cs-vm1 -> cs-vm2:8022 dropped (tier 1 egress deny)" http_ok cs-vm1 10.20.2.11:8022
check "the internet still reaches cs-vm1:80 through the port forward" bash -c "[ \"\$('$REPO/deploy/lab.sh' exec internet curl -s -m 2 http://203.0.113.41:8080/)\" = cs-vm1 ]"
phase acl-open "CloudStack deletes ACL 2"
check "without ACL 2: cs-vm2 -> cs-vm1:8022 connects" wait_for 20 http_ok cs-vm2 10.20.1.11:8022
check_not "ACL 3 still drops cs-vm1 -> cs-vm2:8022" http_ok cs-vm1 10.20.2.11:8022
check_eq "sfctl: the list now has 2 rules" "2" "$(S -o json acl list --tenant $T --vpc $V | json "len(d[0]['rules'])")"
kill "$L1" "$L2" 2>/dev/null; wait "$L1" "$L2" 2>/dev/null

section "2c. the LB rule's source CIDRs (System-VPC LBACL records) hold on the gateway"
lb_answers() { case "$(X internet curl -s -m 2 http://203.0.113.44/)" in cs-vm1|cs-vm2) true ;; *) false ;; esac; }
phase lbacl-deny-internet "CloudStack limits the LB rule to 192.0.2.0/24"
check_eq "sfctl: the LB's source list is CloudStack's CIDR" "['192.0.2.0/24']" "$(S -o json lb list --tenant $T --vpc $V | json "[c for l in d for c in l.get('source_cidrs', [])]")"
check "the internet host (not listed) no longer reaches the VIP" wait_for 20 bash -c "! '$REPO/deploy/lab.sh' exec internet curl -s -m 2 -o /dev/null http://203.0.113.44/"
check "the port forward of the same VPC still answers" bash -c "[ \"\$('$REPO/deploy/lab.sh' exec internet curl -s -m 2 http://203.0.113.41:8080/)\" = cs-vm1 ]"
phase lbacl-permit-internet "CloudStack adds 198.51.100.10/32 to the LB rule's CIDRs"
check "the internet host, now listed, reaches the VIP" wait_for 20 lb_answers
phase lbacl-clear "CloudStack removes the LB rule's CIDR list"
check_eq "sfctl: the LB admits everyone again (no source list)" "[]" "$(S -o json lb list --tenant $T --vpc $V | json "[c for l in d for c in l.get('source_cidrs', [])]")"
check "the internet host still reaches the VIP" wait_for 20 lb_answers

section "2d. CloudStack changes the source NAT address and the LB's backends"
phase change "SNAT moved to 203.0.113.45, LB backends replaced by cs-vm2"
check "cs-vm1 now leaves from the new source NAT address" wait_for 20 bash -c "'$REPO/deploy/lab.sh' exec cs-vm1 curl -s -m 2 -o /dev/null http://198.51.100.10/ && [ \"\$(tail -n 1 '$STATE/logs/internet-http.log' | awk '{print \$1}')\" = 203.0.113.45 ]"
lb_only_vm2() { for _ in 1 2 3 4 5 6; do [ "$(X internet curl -s -m 2 http://203.0.113.44/)" = cs-vm2 ] || return 1; done; }
check "six connections to the VIP all land on the new backend cs-vm2" wait_for 20 lb_only_vm2

section "2e. CloudStack renames tier 2; an isolated network outside the VPC"
ISO=D1-A2-Z1-N20-isonet
phase rename "tier 2 renamed"
check "cs-vm2 on the renamed tier still answers through its static NAT" wait_for 10 bash -c "[ \"\$('$REPO/deploy/lab.sh' exec internet curl -s -m 2 http://203.0.113.42/)\" = cs-vm2 ]"
phase isolated "isolated network $ISO: its own controller VPC, tier and source NAT"
check "vm-add cs-vm4 on hv2 in the isolated network" L vm-add cs-vm4 hv2 $T $ISO $ISO 10.40.1.11
check "cs-vm4 reaches the internet from the isolated network's source NAT address" wait_for 30 bash -c "'$REPO/deploy/lab.sh' exec cs-vm4 curl -s -m 2 -o /dev/null http://198.51.100.10/ && [ \"\$(tail -n 1 '$STATE/logs/internet-http.log' | awk '{print \$1}')\" = 203.0.113.46 ]"
check_not "cs-vm4 cannot reach cs-vm1 in the VPC" X cs-vm4 ping -c 1 -W 1 10.20.1.11
check "vm-del cs-vm4" L vm-del cs-vm4
phase iso-teardown "the isolated network removed in CloudStack's order"
check_not "sfctl: its controller VPC is gone" S vpc show $ISO --tenant $T

section "2f. a routed dual-stack tier from CloudStack's IPv6 calls carries IPv6"
# CloudStack's shapes (cloudstack_client.py ipv6-*): the zone's IPv6 range is the lab's site
# pool 2001:db8:100::/40 (adopted), the VPC's IPv6 allocation a /48 of it, the tier an IPv6
# common subnet with globalRouting and a vnet with both gateways. The VMs are plugged the way
# CloudStack's KVM agent plugs them (its own brvx-<VNI>, no StackFabric port), so nothing but
# the REST calls told StackFabric about the IPv6 /64 the VMs configure.
V6=D1-A2-Z1-V6-dualvpc
W6=D1-A2-Z1-V6-N13-web6
A6=D1-A2-Z1-V6-N14-app6
INET6=2001:db8:ffff::10
# eui64 PREFIX MAC - the modified EUI-64 (SLAAC) address of MAC in PREFIX/64.
eui64() {
    python3 -c '
import ipaddress, sys
net = ipaddress.IPv6Network(sys.argv[1])
b = [int(x, 16) for x in sys.argv[2].split(":")]
print(ipaddress.IPv6Address(net.network_address.packed[:8] + bytes([b[0] ^ 2, b[1], b[2], 0xff, 0xfe, b[3], b[4], b[5]])))' "$1" "$2"
}
mac_of() { sed -n 's/^mac=//p' "$STATE/vms/$1/plug"; }
# slaac VM ADDR - VM holds ADDR as a dynamic (SLAAC) global address on eth0.
slaac() { X "$1" ip -6 addr show dev eth0 scope global dynamic | grep -q "inet6 $2/64"; }
# global6 VM - the VM's global IPv6 addresses on eth0.
global6() { X "$1" ip -6 -o addr show dev eth0 scope global | awk '{print $4}'; }
ping6() { X "$1" ping -6 -c1 -W1 "$2" >/dev/null; }
phase ipv6-setup "CloudStack's IPv6 calls: zone IPv6 range, VPC $V6 with a /48, tier N13 dual-stack, tier N14 IPv4"
check_eq "sfctl: tier N13 is dual-stack with the REST-given /64" "2001:db8:120:1::/64" "$(S -o json network show $W6 --tenant $T --vpc $V6 | json "d.get('ipv6_prefix')")"
check_eq "sfctl: the VPC's IPv6 range is the /48" "['2001:db8:120::/48']" "$(S -o json vpc show $V6 --tenant $T | json "d.get('ipv6_ranges')")"
check_eq "the zone's IPv6 allocation adopted the lab's IPv6 pool (no second pool)" "1" "$(S -o json pool list | json "len([p for p in d if p['cidr'] == '2001:db8:100::/40'])")"
check "CloudStack's agent creates vxlan1500011 in brvx-1500011 on hv1 and hv2" bash -c "
    . '$REPO/deploy/lib/netlab.sh' && netlab_vxlan_add ${LAB_PREFIX}hv1 1500011 10.255.1.1 && netlab_vxlan_add ${LAB_PREFIX}hv2 1500011 10.255.1.2"
check "vm-plug cs6-vm1 on hv1 (SLAAC on)" L vm-plug cs6-vm1 hv1 1500011 10.30.1.11/24 10.30.1.1 slaac
check "vm-plug cs6-vm2 on hv2 (SLAAC on)" L vm-plug cs6-vm2 hv2 1500011 10.30.1.12/24 10.30.1.1 slaac
E1=$(eui64 2001:db8:120:1::/64 "$(mac_of cs6-vm1)")
E2=$(eui64 2001:db8:120:1::/64 "$(mac_of cs6-vm2)")
check "cs6-vm1 configures $E1 (the REST /64) by SLAAC" wait_for 20 slaac cs6-vm1 "$E1"
check "cs6-vm2 configures $E2 by SLAAC" wait_for 20 slaac cs6-vm2 "$E2"
check_eq "cs6-vm1 holds no other global IPv6 address" "$E1/64" "$(global6 cs6-vm1)"
check "cs6-vm1 pings cs6-vm2 over IPv6 (hv1 -> hv2)" wait_for 10 ping6 cs6-vm1 "$E2"
check_eq "cs6-vm2 answers HTTP over IPv6 from cs6-vm1" "cs6-vm2" "$(X cs6-vm1 curl -s -m 3 "http://[$E2]/")"
check "the internet host learned the VPC's /48 from the fabric" wait_for 30 bash -c "ip -n ${LAB_PREFIX}internet -6 route show 2001:db8:120::/48 | grep -q ."
check "cs6-vm1 pings the internet host $INET6 (routed IPv6)" wait_for 10 ping6 cs6-vm1 "$INET6"
check_eq "cs6-vm2 fetches the internet's page over IPv6" "internet" "$(X cs6-vm2 curl -s -m 3 "http://[$INET6]/")"
check_eq "the internet's server saw cs6-vm2's own address (no NAT)" "$E2" "$(tail -n 1 "$STATE/logs/internet-http6.log" | awk '{print $1}')"
check_not "the internet host cannot open a connection to cs6-vm1:80 (router's IPv6 firewall)" \
    ip netns exec "${LAB_PREFIX}internet" curl -6 -s -m 3 --interface "$INET6" "http://[$E1]/"
check "CloudStack's agent creates vxlan1500012 in brvx-1500012 on hv3" bash -c "
    . '$REPO/deploy/lib/netlab.sh' && netlab_vxlan_add ${LAB_PREFIX}hv3 1500012 10.255.1.3"
check "vm-plug cs6-vm3 on hv3 into tier N14 (IPv4 only so far; SLAAC on)" L vm-plug cs6-vm3 hv3 1500012 10.30.2.13/24 10.30.2.1 slaac
E3=$(eui64 2001:db8:120:2::/64 "$(mac_of cs6-vm3)")
check "cs6-vm3 reaches cs6-vm1 over IPv4 across tiers" wait_for 20 X cs6-vm3 ping -c 1 -W 1 10.30.1.11
check_eq "cs6-vm3 has no global IPv6 address before the PUT" "" "$(global6 cs6-vm3)"
phase ipv6-put "CloudStack's PUT gives tier N14 its IPv6 gateway"
check_eq "sfctl: tier N14 is dual-stack now" "2001:db8:120:2::/64" "$(S -o json network show $A6 --tenant $T --vpc $V6 | json "d.get('ipv6_prefix')")"
check "cs6-vm3 configures $E3 by SLAAC after the PUT" wait_for 20 slaac cs6-vm3 "$E3"
check "cs6-vm3 pings cs6-vm1 over IPv6 across tiers" wait_for 10 ping6 cs6-vm3 "$E1"
check "cs6-vm3 pings the internet host" wait_for 10 ping6 cs6-vm3 "$INET6"
# CloudStack's IPv6 ACL of tier N13, as its IPv4 ACL of tier 1 (2b): permit TCP 80 from ::/0
# to the tier's /64, deny other TCP. Listeners on 8022 (short-lived by construction: timeout).
X cs6-vm1 timeout 300 python3 -m http.server 8022 --bind :: >/dev/null 2>&1 & L61=$!
http6() { X "$1" curl -6 -s -m 3 -o /dev/null "http://[$2]:$3/"; }
inet_http6() { ip netns exec "${LAB_PREFIX}internet" curl -6 -s -m 3 --interface "$INET6" "http://[$1]:$2/"; }
check "listener on cs6-vm1:8022 (IPv6) is up" wait_for 10 http6 cs6-vm1 ::1 8022
check "before the ACL: cs6-vm2 -> cs6-vm1:8022 connects over IPv6" http6 cs6-vm2 "$E1" 8022
phase ipv6-acl "CloudStack's IPv6 ACL on tier N13: permit tcp/80 from ::/0, deny other tcp"
acl6_json=$(S -o json acl list --tenant $T --vpc $V6)
check_eq "sfctl: one derived list on tier N13, 2 rules, both from ::/0" "1 $W6 2 ::/0 ::/0" \
    "$(json "len(d), d[0]['tiers'][0], len(d[0]['rules']), *[c for r in d[0]['rules'] for c in r['cidrs']]" <<<"$acl6_json" | tr -d "(),'")"
check "the internet host reaches cs6-vm1:80 over IPv6 (ACL 21 opens the router)" wait_for 20 bash -c "[ \"\$(ip netns exec ${LAB_PREFIX}internet curl -6 -s -m 3 --interface $INET6 'http://[$E1]:80/')\" = cs6-vm1 ]"
check_not "the internet host cannot open cs6-vm1:8022 (ACL 22)" inet_http6 "$E1" 8022
check "cs6-vm2 -> cs6-vm1:80 over IPv6 allowed (east-west, ACL 21)" http6 cs6-vm2 "$E1" 80
check_not "cs6-vm2 -> cs6-vm1:8022 over IPv6 dropped (east-west, ACL 22)" http6 cs6-vm2 "$E1" 8022
X cs6-vm1 ip -6 neigh flush dev eth0
X cs6-vm2 ip -6 neigh flush dev eth0
check "neighbour discovery after the ACL: cs6-vm1 pings cs6-vm2 with a flushed cache" wait_for 10 ping6 cs6-vm1 "$E2"
check "and cs6-vm2 pings cs6-vm1" wait_for 10 ping6 cs6-vm2 "$E1"
check "cs6-vm1 still holds its SLAAC address (the router's RAs pass)" slaac cs6-vm1 "$E1"
check "tier N14 (no ACL) still refuses the internet host's new connections to cs6-vm3" bash -c "! ip netns exec ${LAB_PREFIX}internet curl -6 -s -m 3 --interface $INET6 'http://[$E3]/' >/dev/null"
phase ipv6-acl-delete "CloudStack deletes the IPv6 ACL records"
check_eq "sfctl: no ACL list left in $V6" "0" "$(S -o json acl list --tenant $T --vpc $V6 | json "len(d)")"
check "without the ACL: cs6-vm2 -> cs6-vm1:8022 connects again" wait_for 20 http6 cs6-vm2 "$E1" 8022
check "without the ACL: the internet host can no longer open cs6-vm1:80" wait_for 20 bash -c "! ip netns exec ${LAB_PREFIX}internet curl -6 -s -m 3 --interface $INET6 'http://[$E1]:80/' >/dev/null"
kill "$L61" 2>/dev/null; wait "$L61" 2>/dev/null
for vm in cs6-vm1 cs6-vm2 cs6-vm3; do check "vm-del $vm" L vm-del $vm; done
check "CloudStack's agent removes its bridges" bash -c "
    for h in hv1 hv2; do ip -n ${LAB_PREFIX}\$h link del vxlan1500011 && ip -n ${LAB_PREFIX}\$h link del brvx-1500011 || exit 1; done
    ip -n ${LAB_PREFIX}hv3 link del vxlan1500012 && ip -n ${LAB_PREFIX}hv3 link del brvx-1500012"
phase ipv6-teardown "the dual-stack VPC and the zone's IPv6 range removed in CloudStack's order"
check_not "sfctl: VPC $V6 is gone" S vpc show $V6 --tenant $T
check "the lab's IPv6 pool is still there (adopted, not owned)" bash -c "'$REPO/deploy/lab.sh' sfctl -o json pool list | grep -q 2001:db8:100::/40"
check "the internet host's route to the /48 is withdrawn" wait_for 30 bash -c "! ip -n ${LAB_PREFIX}internet -6 route show 2001:db8:120::/48 | grep -q ."

section "3. robustness: sessions, malformed JSON, retries, conflicts, unknown ids"
phase check "robustness checks"
check_eq "still three NAT rules after the rejected and retried calls" "3" "$(S -o json nat list --tenant $T --vpc $V | json "len([r for r in d if r.get('vpc') == '$V'])")"

section "4. teardown in CloudStack's order"
check "vm-del cs-vm1" L vm-del cs-vm1
check "vm-del cs-vm2" L vm-del cs-vm2
check "vm-del cs-vm3" L vm-del cs-vm3
check "CloudStack's agent removes its brvx-1500002 from hv3" bash -c "ip -n $HV3 link del vxlan1500002 && ip -n $HV3 link del brvx-1500002"
phase teardown "CloudStack's teardown sequence"
check_not "sfctl: the VPC is gone" S vpc show $V --tenant $T

section "4b. the real Netris Java SDK replays CloudStack's calls (when the jar is present)"
# The SDK jar is not redistributable and not in the repository: $SF_NETRIS_SDK_JAR, default
# /work/sdk/netris-java-sdk-1.0.0.jar. tests/e2e/sdk/CloudStackReplay.java is our own code.
SDK_JAR=${SF_NETRIS_SDK_JAR:-/work/sdk/netris-java-sdk-1.0.0.jar}
if [ -f "$SDK_JAR" ] && command -v javac >/dev/null && command -v keytool >/dev/null; then
    rm -rf "$STATE/sdk" && mkdir -p "$STATE/sdk/classes"
    check "CloudStackReplay.java compiles against the SDK" javac -cp "$SDK_JAR" -d "$STATE/sdk/classes" "$REPO/tests/e2e/sdk/CloudStackReplay.java"
    keytool -importcert -noprompt -alias sf-lab-ca -file "$STATE/pki/ca.pem" -keystore "$STATE/sdk/trust.p12" -storetype PKCS12 -storepass sf-lab-ca >/dev/null 2>&1
    if X mgmt java -Djavax.net.ssl.trustStore="$STATE/sdk/trust.p12" -Djavax.net.ssl.trustStorePassword=sf-lab-ca \
        -cp "$SDK_JAR:$STATE/sdk/classes" CloudStackReplay "$REST" cloudstack "$(cat "$STATE/rest-password")" D1-A2-Z1 203.0.113; then
        pass "every SDK call of CloudStack's lifecycle succeeded (login, VPC, tiers incl. a routed dual-stack one, the zone IPv6 range, NAT, LB, ACL, IPv4 and IPv6 routes, teardown)"
    else
        fail "the SDK replay (see the FAIL lines above)"
    fi
else
    printf '  NOTE %s\n' "Netris Java SDK jar not found ($SDK_JAR) or no JDK: the SDK replay is skipped; the contract test (cargo test -p sf-coordinator --test rest_contract) still checks every answer's shape"
fi
check "sfctl: no network, NAT rule, route, LB or ACL list of it" bash -c "! '$REPO/deploy/lab.sh' sfctl -o json network list | grep -q D1-A2-Z1 && ! '$REPO/deploy/lab.sh' sfctl -o json nat list | grep -q D1-A2-Z1 && ! '$REPO/deploy/lab.sh' sfctl -o json route list | grep -q D1-A2-Z1 && ! '$REPO/deploy/lab.sh' sfctl -o json lb list | grep -q D1-A2-Z1 && ! '$REPO/deploy/lab.sh' sfctl -o json acl list | grep -q cs-acl-"
check "sfctl: the lab pools that the zone adopted are still there (IPv4 and IPv6)" bash -c "'$REPO/deploy/lab.sh' sfctl -o json pool list | grep -q 203.0.113.0/24 && '$REPO/deploy/lab.sh' sfctl -o json pool list | grep -q 2001:db8:100::/40"
keys=$(etcd_keys)
check "etcd holds keys (sanity)" grep -q /stackfabric/intent/vpcs/demo/blue <<<"$keys"
check_not "etcd: no key names CloudStack's objects" grep -E 'D1-A2-Z1|/alloc/vni/150000[12]$|/alloc/vpc-id/'"$VPC_ID"'$' <<<"$keys"
check_not "etcd: no REST object record remains" grep /stackfabric/rest/objects/ <<<"$keys"
check "no VPC router namespace for vpc id $VPC_ID" wait_for 20 bash -c "! ip netns list | grep -q '^${LAB_PREFIX}gw[0-9]-vpc$VPC_ID\b'"
check "no brvx-1500001/2 bridge left on the gateways" wait_for 20 bash -c "! ip -n ${LAB_PREFIX}gw1 link show brvx-1500001 2>/dev/null && ! ip -n ${LAB_PREFIX}gw2 link show brvx-1500001 2>/dev/null && ! ip -n ${LAB_PREFIX}gw1 link show brvx-1500002 2>/dev/null && ! ip -n ${LAB_PREFIX}gw2 link show brvx-1500002 2>/dev/null"
check "the demo still works" X blue-web-1 curl -s -m 3 http://10.10.1.12/

lab_finish
