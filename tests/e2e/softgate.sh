#!/usr/bin/env bash
# End-to-end tests of SoftGate: VPC routing across tiers and static routes, SNAT,
# port forwarding, static NAT / Elastic IP, hairpin, validation, placement, drain, and gateway
# failover — with real packets between lab namespaces (VMs, gateways, an internet host).
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$REPO/tests/e2e/lib.sh"
lab_test sfs

placement() { S -o json gateway list | json "[v for v in d['vpcs'] if v['vpc']=='$1'][0]['$2']"; }
vpc_id() { S -o json vpc show "$1" --tenant demo | json "d['id']"; }
# Last client address the internet host's HTTP server logged.
last_client() { tail -n 1 "$STATE/logs/internet-http.log" | awk '{print $1}'; }
curl_i() { X internet curl -s -m 3 "$@"; }

section "lab up (prefix $LAB_PREFIX)"
t0=$SECONDS
if ! L up --no-build; then fail "deploy/lab.sh up"; finish; exit 1; fi
pass "lab up in $((SECONDS - t0)) s"

section "1. routing between tiers of a VPC, static routes, isolation"
check "add tier db to blue" S network create db --tenant demo --vpc blue --cidr 10.10.2.0/24
check "vm-add blue-db-1 on hv3" L vm-add blue-db-1 hv3 demo blue db 10.10.2.11
check "blue-web-1 reaches blue-db-1 across tiers" wait_for 30 X blue-web-1 ping -c 1 -W 1 10.10.2.11
check_eq "HTTP blue-web-1 -> blue-db-1" "blue-db-1" "$(X blue-web-1 curl -s -m 5 http://10.10.2.11/)"
check_not "red-web-1 cannot reach blue-db-1" X red-web-1 ping -c 2 -W 1 10.10.2.11
X blue-db-1 ip addr add 192.168.50.1/32 dev lo
check "static route 192.168.50.0/24 via blue-db-1" S route create lab-net --tenant demo --vpc blue --prefix 192.168.50.0/24 --nexthop 10.10.2.11
check "blue-web-1 reaches 192.168.50.1 through the static route" wait_for 20 X blue-web-1 ping -c 1 -W 1 192.168.50.1
check_not "red-web-1 does not have blue's static route" X red-web-1 ping -c 2 -W 1 192.168.50.1
# A converged router is not observed again until the kernel reports a change in it or its
# inputs move (issue 20): a change made behind the agent's back must still be repaired by the
# next resync (every 30 s here; the 5-minute full pass would be too late for this wait).
DRIFT_NS=$(placement blue primary)-vpc$(vpc_id blue)
check "drift: blue's static route deleted inside its router" X "$DRIFT_NS" ip route del 192.168.50.0/24
# (The table is recognised by the digest it carries in its comment, so a chain added inside
# it is not seen; the table deleted is.)
check "drift: blue's nftables table deleted" X "$DRIFT_NS" nft delete table ip stackfabric
check "the resync puts the static route back" wait_for 45 X "$DRIFT_NS" bash -c "ip route show 192.168.50.0/24 | grep -q via"
check "and loads the table again" wait_for 45 X "$DRIFT_NS" nft list table ip stackfabric
check "blue-web-1 reaches 192.168.50.1 again" wait_for 10 X blue-web-1 ping -c 1 -W 1 192.168.50.1

section "2. NAT: source NAT, port forwarding, static NAT, hairpin"
check "SNAT blue -> 203.0.113.10" S nat snat out --tenant demo --vpc blue --public-ip 203.0.113.10
check "port forward 203.0.113.11:8080 -> blue-web-2:80" S nat forward web --tenant demo --vpc blue --public-ip 203.0.113.11 --protocol tcp --public-port 8080 --private-ip 10.10.1.12 --private-port 80
check "static NAT 203.0.113.12 <-> blue-web-1" S nat static eip --tenant demo --vpc blue --public-ip 203.0.113.12 --private-ip 10.10.1.11
check "blue-web-2 reaches the internet" wait_for 30 X blue-web-2 curl -s -m 2 http://198.51.100.10/
check_eq "and leaves from the SNAT address" "203.0.113.10" "$(last_client)"
check "internet reaches blue-web-2 through the port forward" wait_for 30 bash -c "[ \"\$('$REPO/deploy/lab.sh' exec internet curl -s -m 2 http://203.0.113.11:8080/)\" = blue-web-2 ]"
# The static NAT was made one step before: give its table and the /32 announcement time to land,
# as for the port forward above (a one-shot curl failed here once under load).
check "internet reaches blue-web-1 through its Elastic IP" wait_for 30 bash -c "[ \"\$('$REPO/deploy/lab.sh' exec internet curl -s -m 2 http://203.0.113.12/)\" = blue-web-1 ]"
check_eq "blue-web-1 reaches the internet" "internet" "$(X blue-web-1 curl -s -m 3 http://198.51.100.10/)"
check_eq "and leaves from its Elastic IP" "203.0.113.12" "$(last_client)"
check_eq "hairpin: blue-web-1 reaches blue-web-2 via 203.0.113.11:8080" "blue-web-2" "$(X blue-web-1 curl -s -m 3 http://203.0.113.11:8080/)"
check_eq "hairpin: blue-db-1 reaches blue-web-1 via its Elastic IP" "blue-web-1" "$(X blue-db-1 curl -s -m 3 http://203.0.113.12/)"
check_not "red has no NAT: red-web-2 cannot reach the internet" X red-web-2 curl -s -m 2 http://198.51.100.10/

section "2b. established flows are cut when their translation goes or an ACL newly denies them"
# Seen at the gateway itself: its conntrack entries go, and its ACL re-checks the flow (the
# hypervisors also filter the tier, and an unrouted address also ends a stream).
BLUE_NS=$(placement blue primary)-vpc$(vpc_id blue)
WEB_VNI=$(S -o json network show web --tenant demo --vpc blue | json "d['vni']")
gw_conntrack() { X "$BLUE_NS" conntrack -L "$@" 2>/dev/null | grep -c "dst=$2"; }
gw_denied() {
    X "$BLUE_NS" nft -j list chain ip stackfabric "acl_in_$WEB_VNI" | python3 -c '
import json, sys
n = 0
for o in json.load(sys.stdin)["nftables"]:
    r = o.get("rule")
    if r and r.get("comment") == "ingress 10":
        n += sum(e["counter"]["packets"] for e in r["expr"] if "counter" in e)
print(n)'
}
gw_denied_some() { [ "$(gw_denied)" -gt 0 ]; }
echo_server blue-web-2 7000
echo_server blue-db-1 7000
check "port forward 203.0.113.11:7000 -> blue-web-2:7000" S nat forward echo --tenant demo --vpc blue --public-ip 203.0.113.11 --protocol tcp --public-port 7000 --private-ip 10.10.1.12 --private-port 7000
check "static NAT 203.0.113.14 <-> blue-db-1" S nat static eip2 --tenant demo --vpc blue --public-ip 203.0.113.14 --private-ip 10.10.2.11
check "the internet reaches both" wait_for 30 bash -c "X() { '$REPO/deploy/lab.sh' exec \"\$@\"; }; X internet curl -s -m 1 telnet://203.0.113.11:7000 </dev/null | grep -q hello; X internet curl -s -m 1 telnet://203.0.113.14:7000 </dev/null | grep -q hello"
stream pf internet 203.0.113.11 7000
stream eip internet 203.0.113.14 7000
stream keep internet 203.0.113.14 7000
check "streams through the port forward and the Elastic IP flow" wait_for 10 bash -c "grep -q '^ok 5$' '$STATE/pf.log' && grep -q '^ok 5$' '$STATE/eip.log'"
check "delete the port forward" S nat delete echo --tenant demo --vpc blue
check "its established stream is cut within 10 s" wait_for 10 grep -q "cut after" "$STATE/pf.log"
check_eq "the gateway keeps no conntrack entry of it" 0 "$(gw_conntrack --orig-dst 203.0.113.11 -p tcp --dport 7000)"
check "the Elastic IP streams are untouched" streamed eip 15
check "delete the static NAT" S nat delete eip2 --tenant demo --vpc blue
check "its established streams are cut within 10 s" wait_for 10 bash -c "grep -q 'cut after' '$STATE/eip.log' && grep -q 'cut after' '$STATE/keep.log'"
check_eq "the gateway keeps no conntrack entry of them" 0 "$(gw_conntrack --orig-dst 203.0.113.14)"
check "port forward 203.0.113.11:7000 again" S nat forward echo --tenant demo --vpc blue --public-ip 203.0.113.11 --protocol tcp --public-port 7000 --private-ip 10.10.1.12 --private-port 7000
check "the internet reaches it" wait_for 30 bash -c "'$REPO/deploy/lab.sh' exec internet curl -s -m 1 telnet://203.0.113.11:7000 </dev/null | grep -q hello"
check "ACL on web: allow all (rule 10), default allow" S acl apply cut --tenant demo --vpc blue --tier web --default allow --rule "10 ingress allow all any 0.0.0.0/0"
check "the internet reaches the port forward through the ACL" wait_for 20 bash -c "'$REPO/deploy/lab.sh' exec internet curl -s -m 1 telnet://203.0.113.11:7000 </dev/null | grep -q hello"
stream acl internet 203.0.113.11 7000
check "a stream through it flows" wait_for 10 streamed acl 5
check "change rule 10 to deny tcp 7000 from anywhere" S acl apply cut --tenant demo --vpc blue --tier web --default allow --rule "10 ingress deny tcp 7000 0.0.0.0/0"
check "the established stream the new rule denies is cut within 10 s" wait_for 10 grep -q "cut after" "$STATE/acl.log"
check "the gateway's rule 10 dropped its packets (re-checked there, not waved through)" wait_for 10 gw_denied_some
check_eq "the port forward on 8080 (allowed) still answers" "blue-web-2" "$(curl_i http://203.0.113.11:8080/)"
check "delete the ACL list and the port forward" bash -c "'$REPO/deploy/lab.sh' sfctl acl delete cut --tenant demo --vpc blue && '$REPO/deploy/lab.sh' sfctl nat delete echo --tenant demo --vpc blue"

section "3. bad input names the field and changes nothing"
before=$(S -o json nat list | json "len(d)")
bad() { # bad FIELD ARGS... : the create fails naming FIELD, with exit 1 (refused) or, for an
    # object that does not exist, 3 (sfctl's "not found")
    local field=$1; shift
    local out rc
    out=$(S nat "$@" 2>&1); rc=$?
    if { [ $rc -eq 1 ] || { [ $rc -eq 3 ] && grep -q "does not exist" <<<"$out"; }; } && grep -q "$field" <<<"$out"; then
        pass "rejected, names $field: $out"
    else
        fail "expected rejection naming $field, got rc=$rc: $out"
    fi
}
bad nat.public_ip forward x1 --tenant demo --vpc blue --public-ip 192.0.2.7 --public-port 80 --private-ip 10.10.1.12 --private-port 80
bad nat.public_port forward x2 --tenant demo --vpc blue --public-ip 203.0.113.11 --public-port 8080 --private-ip 10.10.1.11 --private-port 80
bad nat.private_ip forward x3 --tenant demo --vpc blue --public-ip 203.0.113.20 --public-port 80 --private-ip 10.10.9.9 --private-port 80
bad nat.public_ip snat x4 --tenant demo --vpc red --public-ip 203.0.113.11
bad nat.vpc snat x5 --tenant demo --vpc green --public-ip 203.0.113.30
check_eq "no NAT rule was added by the rejected requests" "$before" "$(S -o json nat list | json "len(d)")"

section "4. placement, drain and undrain"
PRIMARY=$(placement blue primary); STANDBY=$(placement blue standby)
check "blue has a primary and a different standby ($PRIMARY, $STANDBY)" test -n "$PRIMARY" -a -n "$STANDBY" -a "$PRIMARY" != "$STANDBY"
ID=$(vpc_id blue)
check "blue's router is built on $PRIMARY and warm on $STANDBY" bash -c "ip netns list | grep -q '^${LAB_PREFIX}$PRIMARY-vpc$ID\b' && ip netns list | grep -q '^${LAB_PREFIX}$STANDBY-vpc$ID\b'"
check "only $PRIMARY announces blue's port forward (leaves)" wait_for 20 announced_by 203.0.113.11 "$PRIMARY"
check "drain $PRIMARY" S gateway drain "$PRIMARY"
check_eq "blue moved to $STANDBY" "$STANDBY" "$(placement blue primary)"
check "traffic flows through $STANDBY: port forward" wait_for 20 bash -c "[ \"\$('$REPO/deploy/lab.sh' exec internet curl -s -m 2 http://203.0.113.11:8080/)\" = blue-web-2 ]"
check "and across tiers" wait_for 10 X blue-web-1 ping -c 1 -W 1 10.10.2.11
check "$PRIMARY no longer runs blue's router" wait_for 10 bash -c "! ip netns list | grep -q '^${LAB_PREFIX}$PRIMARY-vpc$ID\b'"
check "undrain $PRIMARY" S gateway undrain "$PRIMARY"
check "blue stays on $STANDBY (no failback), $PRIMARY becomes its standby again" wait_for 20 bash -c "[ \"\$('$REPO/deploy/lab.sh' sfctl -o json gateway list | python3 -c \"import json,sys; v=[v for v in json.load(sys.stdin)['vpcs'] if v['vpc']=='blue'][0]; print(v['primary'], v['standby'])\")\" = '$STANDBY $PRIMARY' ]"
check "only $STANDBY announces blue" wait_for 10 announced_by 203.0.113.11 "$STANDBY"
check "traffic flows through $STANDBY" wait_for 20 bash -c "[ \"\$('$REPO/deploy/lab.sh' exec internet curl -s -m 2 http://203.0.113.11:8080/)\" = blue-web-2 ]"
# From here on the serving gateway is PRIMARY in the tests below.
PRIMARY=$STANDBY

section "4b. an agent restarted within its lease TTL keeps the VPC in place"
NS_INODE=$(stat -L -c %i "/run/netns/${LAB_PREFIX}$PRIMARY-vpc$ID")
# shellcheck disable=SC2016  # expanded inside the lab host
X internet bash -c 'ok=0; for i in $(seq 40); do [ "$(curl -s -m 1 http://203.0.113.11:8080/)" = blue-web-2 ] && ok=$((ok+1)); sleep 0.1; done; echo $ok' >"$STATE/pf-restart.log" &
LOOP=$!
sleep 0.5
check "stop $PRIMARY's agent (SIGTERM)" L agent-stop "$PRIMARY"
check "start it again at once" L agent-start "$PRIMARY"
wait $LOOP
check_eq "every port-forward request during the restart succeeded" 40 "$(cat "$STATE/pf-restart.log")"
check_eq "blue stayed on $PRIMARY" "$PRIMARY" "$(placement blue primary)"
check_eq "its router namespace was not recreated" "$NS_INODE" "$(stat -L -c %i "/run/netns/${LAB_PREFIX}$PRIMARY-vpc$ID")"

section "4c. the serving gateway's agent dead past its grace: the fence hands blue over"
SERVING=$(announcers 203.0.113.11)
OTHER=$([ "$SERVING" = gw1 ] && echo gw2 || echo gw1)
check "kill -9 $SERVING's agent (node and links stay up)" L agent-kill "$SERVING"
check "the fence stands $SERVING down and $OTHER takes blue over" wait_for 15 announced_by 203.0.113.11 "$OTHER"
check "blue's router stays built on $SERVING (warm)" bash -c "ip netns list | grep -q '^${LAB_PREFIX}$SERVING-vpc$ID\b'"
check "the port forward works through $OTHER" wait_for 30 bash -c "[ \"\$('$REPO/deploy/lab.sh' exec internet curl -s -m 1 http://203.0.113.11:8080/)\" = blue-web-2 ]"
grep -h FENCE "$STATE"/agents/"$SERVING"/fence.log | sed 's/^/    /' | tail -2
check "restart $SERVING's agent" L agent-start "$SERVING"
check "$SERVING's lease up" wait_for 30 node_is "$SERVING" lease up
check "it takes nothing back: never two announcers" never_two 5 203.0.113.11
check_eq "$OTHER still announces blue alone" "$OTHER" "$(announcers 203.0.113.11)"
check "traffic flows" wait_for 30 bash -c "[ \"\$('$REPO/deploy/lab.sh' exec internet curl -s -m 1 http://203.0.113.11:8080/)\" = blue-web-2 ]"

section "5. node death of the serving gateway: the standby takes over, placement follows"
SERVING=$(announcers 203.0.113.11)
OTHER=$([ "$SERVING" = gw1 ] && echo gw2 || echo gw1)
# Power loss: its agent dies and its fabric links go down.
check "kill $SERVING's agent" L agent-kill "$SERVING"
X "$SERVING" ip link set leaf1 down; X "$SERVING" ip link set leaf2 down
t0=$SECONDS
check "internet reaches blue-web-2 again through $OTHER" wait_for 30 bash -c "[ \"\$('$REPO/deploy/lab.sh' exec internet curl -s -m 1 http://203.0.113.11:8080/)\" = blue-web-2 ]"
pass "traffic restored $((SECONDS - t0)) s after the node died"
check_eq "$OTHER announces blue" "$OTHER" "$(announcers 203.0.113.11)"
check "placement names $OTHER once $SERVING's lease expires" wait_for 20 bash -c "[ \"\$('$REPO/deploy/lab.sh' sfctl -o json gateway list | python3 -c \"import json,sys; print([v for v in json.load(sys.stdin)['vpcs'] if v['vpc']=='blue'][0]['primary'])\")\" = $OTHER ]"
check "blue-web-1 reaches blue-db-1 across tiers through $OTHER" wait_for 10 X blue-web-1 ping -c 1 -W 1 10.10.2.11
check "red is unaffected" X red-web-1 curl -s -m 3 http://10.10.1.12/

section "6. a gateway that comes back takes nothing back"
X "$SERVING" ip link set leaf1 up; X "$SERVING" ip link set leaf2 up
check "restart $SERVING's agent" L agent-start "$SERVING"
check "$SERVING lease up again" wait_for 20 node_is "$SERVING" lease up
check "one announcer for blue while it settles" never_two 6 203.0.113.11
check_eq "$OTHER still announces blue alone" "$OTHER" "$(announcers 203.0.113.11)"
check "port forward works after the return" wait_for 30 bash -c "[ \"\$('$REPO/deploy/lab.sh' exec internet curl -s -m 1 http://203.0.113.11:8080/)\" = blue-web-2 ]"

lab_finish
