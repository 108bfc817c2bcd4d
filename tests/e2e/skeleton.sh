#!/usr/bin/env bash
# End-to-end tests of the walking skeleton, with real packets through a real lab:
# real etcd, coordinator, agents, FRR, kernel VXLAN and bridges, in namespaces of this run.
#
# Usage: tests/e2e/skeleton.sh   (as root; builds nothing: run after `cargo build --release`)
# LAB_PREFIX defaults to a per-run prefix; the lab is always torn down, also on failure.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$REPO/tests/e2e/lib.sh"
lab_test sft

# jq-like field extraction with python3: json EXPR < json
node_status() { L sfctl -o json status | json "[n for n in d['nodes'] if n['name']=='$1'][0]$2"; }
vni_of() { L sfctl -o json network show "$1" --tenant demo --vpc "$2" | json "d['vni']"; }
ifindex() { X "$1" cat "/sys/class/net/$2/ifindex" 2>/dev/null; }
mac_of() { X "$1" cat /sys/class/net/eth0/address; }

section "lab up (prefix $LAB_PREFIX)"
t0=$SECONDS
if ! L up --no-build; then
    fail "deploy/lab.sh up"
    finish
    exit 1
fi
pass "lab up in $((SECONDS - t0)) s"

section "1. blue-web-1 reaches blue-web-2 across hypervisors over EVPN"
check "ping blue-web-1 -> 10.10.1.12" X blue-web-1 ping -c 3 -W 2 10.10.1.12
check_eq "HTTP from blue-web-1 to 10.10.1.12 answers blue-web-2" "blue-web-2" "$(X blue-web-1 curl -s -m 5 http://10.10.1.12/)"
check_eq "HTTP from red-web-1 to 10.10.1.12 answers red-web-2" "red-web-2" "$(X red-web-1 curl -s -m 5 http://10.10.1.12/)"
BLUE_VNI=$(vni_of web blue); RED_VNI=$(vni_of web red)
check "VNIs come from the 1,000,000-2,000,000 pool ($BLUE_VNI, $RED_VNI)" \
    python3 -c "import sys; a,b=$BLUE_VNI,$RED_VNI; sys.exit(0 if a!=b and all(1000000<=v<=2000000 for v in (a,b)) else 1)"
check "hv1 carries vxlan$BLUE_VNI in brvx-$BLUE_VNI (CloudStack layout)" \
    bash -c "'$REPO/deploy/lab.sh' exec hv1 ip -d link show vxlan$BLUE_VNI | grep -q 'master brvx-$BLUE_VNI' && '$REPO/deploy/lab.sh' exec hv1 ip -d link show vxlan$BLUE_VNI | grep -q 'dstport 4789'"
check "vxlan port has neigh_suppress on, learning off" \
    bash -c "'$REPO/deploy/lab.sh' exec hv1 bridge -d link show dev vxlan$BLUE_VNI | grep -q 'neigh_suppress on' && '$REPO/deploy/lab.sh' exec hv1 bridge -d link show dev vxlan$BLUE_VNI | grep -q 'learning off'"

section "2. nothing crosses between blue and red"
BLUE2_MAC=$(mac_of blue-web-2); RED2_MAC=$(mac_of red-web-2)
X blue-web-1 ping -c 1 -W 2 10.10.1.12 >/dev/null 2>&1
check_eq "blue-web-1 resolves 10.10.1.12 to blue-web-2's MAC" "$BLUE2_MAC" \
    "$(X blue-web-1 ip -j neigh show 10.10.1.12 | json "d[0]['lladdr']")"
X red-web-1 ping -c 1 -W 2 10.10.1.12 >/dev/null 2>&1
check_eq "red-web-1 resolves 10.10.1.12 to red-web-2's MAC" "$RED2_MAC" \
    "$(X red-web-1 ip -j neigh show 10.10.1.12 | json "d[0]['lladdr']")"
# A second address of red-web-2 is declared as a port with its MAC first: hypervisors pin a
# VM's sources to its ports (anti-spoofing), as CloudStack's security groups do.
check "declare red-web-2's second address 10.10.1.99" S port create red-web-2-b --tenant demo --vpc red --network web --node hv3 --ip 10.10.1.99 --mac "$RED2_MAC"
X red-web-2 ip addr add 10.10.1.99/24 dev eth0
check "red-web-1 reaches red-only address 10.10.1.99" wait_for 15 X red-web-1 ping -c 1 -W 1 10.10.1.99
check_not "blue-web-1 cannot reach red-only address 10.10.1.99" X blue-web-1 ping -c 3 -W 1 10.10.1.99
X blue-web-1 ip neigh replace 10.10.1.12 lladdr "$RED2_MAC" dev eth0 nud permanent
check_not "a frame from blue addressed to red-web-2's MAC is not delivered" X blue-web-1 ping -c 3 -W 1 10.10.1.12
X blue-web-1 ip neigh del 10.10.1.12 dev eth0
check_not "hv2 (blue only) has no trace of red-web-2's MAC" bash -c "'$REPO/deploy/lab.sh' exec hv2 bridge fdb show | grep -qi '$RED2_MAC'"
X red-web-2 ip addr del 10.10.1.99/24 dev eth0
check "remove the second address's port" S port delete red-web-2-b --tenant demo

section "3. a tier created with sfctl while the lab runs is reachable, and its deletion cleans up"
check "sfctl network create app" L sfctl network create app --tenant demo --vpc blue --cidr 10.10.3.0/24
APP_VNI=$(vni_of app blue)
check "vm-add blue-app-1 on hv3" L vm-add blue-app-1 hv3 demo blue app 10.10.3.11
check "vm-add blue-app-2 on hv1" L vm-add blue-app-2 hv1 demo blue app 10.10.3.12
check "blue-app-1 reaches blue-app-2 (hv3 -> hv1), no restart" wait_for 20 X blue-app-1 ping -c 1 -W 1 10.10.3.12
check_eq "HTTP answers blue-app-2" "blue-app-2" "$(X blue-app-1 curl -s -m 5 http://10.10.3.12/)"
check "vm-del blue-app-1" L vm-del blue-app-1
check "vm-del blue-app-2" L vm-del blue-app-2
check "sfctl network delete app" L sfctl network delete app --tenant demo --vpc blue
for hv in hv1 hv3; do
    check "$hv removed vxlan$APP_VNI and brvx-$APP_VNI" wait_for 15 bash -c \
        "! '$REPO/deploy/lab.sh' exec $hv ip link show vxlan$APP_VNI && ! '$REPO/deploy/lab.sh' exec $hv ip link show brvx-$APP_VNI"
done
check "blue web tier is unaffected" X blue-web-1 ping -c 2 -W 2 10.10.1.12

section "4. restarting a hypervisor agent loses no packet and recreates no interface"
IDX_VX=$(ifindex hv1 "vxlan$BLUE_VNI"); IDX_BR=$(ifindex hv1 "brvx-$BLUE_VNI")
X blue-web-1 ping -c 60 -i 0.1 -W 1 10.10.1.12 >"$STATE/ping4.log" 2>&1 &
PING=$!
sleep 1
check "stop hv1's agent" L agent-stop hv1
sleep 1
check "start hv1's agent" L agent-start hv1
wait $PING
check "no packet lost across the restart ($(grep -o '[0-9.]*% packet loss' "$STATE/ping4.log"))" grep -q ' 0% packet loss' "$STATE/ping4.log"
check_eq "vxlan$BLUE_VNI keeps ifindex" "$IDX_VX" "$(ifindex hv1 "vxlan$BLUE_VNI")"
check_eq "brvx-$BLUE_VNI keeps ifindex" "$IDX_BR" "$(ifindex hv1 "brvx-$BLUE_VNI")"
check "hv1 back in sync" wait_for 20 node_is hv1 in_sync True

section "5. coordinator down: dataplane keeps forwarding, API fails clearly, agents resume"
declare -A SNAP RES
for n in hv1 hv2 hv3 leaf1 leaf2; do
    SNAP[$n]=$(node_status "$n" "['status']['counters'].get('snapshots',0)")
    RES[$n]=$(node_status "$n" "['status']['counters'].get('resumes',0)")
done
check "stop the coordinator" L coord-stop
X blue-web-1 ping -c 20 -i 0.1 -W 1 10.10.1.12 >"$STATE/ping5.log" 2>&1
check "pings flow without the coordinator ($(grep -o '[0-9.]*% packet loss' "$STATE/ping5.log"))" grep -q ' 0% packet loss' "$STATE/ping5.log"
L sfctl tenant list >"$STATE/api5.log" 2>&1; rc=$?
check_eq "API call fails with exit code 2 while the coordinator is down" 2 "$rc"
check "and says the coordinator cannot be reached" grep -q "cannot reach coordinator" "$STATE/api5.log"
check "start the coordinator" L coord-start
check "every node back in sync" wait_for 40 bash -c "'$REPO/deploy/lab.sh' sfctl -o json status | python3 -c \"import json,sys; d=json.load(sys.stdin); sys.exit(0 if all(n['in_sync'] and (n['status'] or {}).get('counters',{}).get('resumes',0)>0 for n in d['nodes']) else 1)\""
resumed_since() { # resumed_since NODE N: the node's resume counter went past N
    [ "$(node_status "$1" "['status']['counters'].get('resumes',0)")" -gt "$2" ]
}
for n in hv1 hv2 hv3 leaf1 leaf2; do
    # Counters survive in status only from the agent's last report: wait for this node's
    # own report of the new session (a node restarted earlier may already show resumes > 0).
    wait_for 20 resumed_since "$n" "${RES[$n]}"
    s=$(node_status "$n" "['status']['counters'].get('snapshots',0)")
    r=$(node_status "$n" "['status']['counters'].get('resumes',0)")
    check "$n resumed from its revision (resumes ${RES[$n]} -> $r, snapshots ${SNAP[$n]} -> $s)" \
        test "$r" -gt "${RES[$n]}" -a "$s" -eq "${SNAP[$n]}"
done
check "API works again" L sfctl tenant list

section "6. a killed agent's lease expires within its TTL and status shows it down"
check "kill -9 hv3's agent" L agent-kill hv3
t0=$SECONDS
check "hv3 shows lease down" wait_for 12 node_is hv3 lease down
pass "hv3 seen down after $((SECONDS - t0)) s (lease TTL 6 s)"
check "red-web-1 still reaches red-web-2 on hv3 while its agent is dead" X red-web-1 ping -c 2 -W 2 10.10.1.12
check "start hv3's agent" L agent-start hv3
check "hv3 lease up again" wait_for 15 node_is hv3 lease up

section "6b. metrics: every binary serves /metrics and /healthz, with intent-to-dataplane latency"
metric() { # metric HOST PORT NAME: the value of a sample line NAME from HOST's /metrics
    X mgmt curl -s -m 3 "http://$1:$2/metrics" | awk -v n="$3" '$1 == n {print $2}'
}
check "coordinator /healthz answers 200" X mgmt curl -sf -m 3 -o /dev/null http://172.31.255.3:9100/healthz
check "hv1 /healthz answers 200 (lease held)" X mgmt curl -sf -m 3 -o /dev/null http://172.31.255.21:9101/healthz
before=$(metric 172.31.255.21 9101 sf_agent_intent_to_dataplane_seconds_count)
acks_before=$(metric 172.31.255.3 9100 sf_coordinator_intent_to_ack_seconds_count)
check "create a port on hv1 (a change for hv1)" L sfctl port create metrics-probe --tenant demo --vpc blue --network web --node hv1 --ip 10.10.1.99
check "hv1's intent-to-dataplane histogram counts the change" wait_for 15 bash -c "[ \"\$('$REPO/deploy/lab.sh' exec mgmt curl -s -m 3 http://172.31.255.21:9101/metrics | awk '\$1 == \"sf_agent_intent_to_dataplane_seconds_count\" {print \$2}')\" -gt '${before:-0}' ]"
check "the coordinator's intent-to-ack histogram counts it too" wait_for 15 bash -c "[ \"\$('$REPO/deploy/lab.sh' exec mgmt curl -s -m 3 http://172.31.255.3:9100/metrics | awk '\$1 == \"sf_coordinator_intent_to_ack_seconds_count\" {print \$2}')\" -gt '${acks_before:-0}' ]"
sum=$(metric 172.31.255.21 9101 sf_agent_intent_to_dataplane_seconds_sum)
count=$(metric 172.31.255.21 9101 sf_agent_intent_to_dataplane_seconds_count)
pass "hv1 intent-to-dataplane: $count revisions, mean $(python3 -c "print(round(1000*$sum/max($count,1), 1))") ms"
same_revision() { [ "$(node_status hv1 "['applied_revision']")" = "$(metric 172.31.255.21 9101 sf_agent_applied_revision)" ]; }
check "hv1's applied-revision gauge matches its status" wait_for 10 same_revision
check "the coordinator counts the open agent streams (>= 8 nodes)" test "$(metric 172.31.255.3 9100 sf_coordinator_agent_streams)" -ge 8
check "leaf1 serves metrics too" bash -c "'$REPO/deploy/lab.sh' exec mgmt curl -s -m 3 http://172.31.255.11:9101/metrics | grep -q '^sf_agent_lease_up 1'"
check "delete the probe port" L sfctl port delete metrics-probe --tenant demo

section "6c. API roles: a reader token reads, and cannot write"
check "sfctl status with the reader token" env LAB_TOKEN=reader "$REPO/deploy/lab.sh" sfctl status
check "sfctl network list with the reader token" env LAB_TOKEN=reader "$REPO/deploy/lab.sh" sfctl network list
out=$(LAB_TOKEN=reader "$REPO/deploy/lab.sh" sfctl tenant create reader-probe 2>&1)
check "a write with the reader token is refused naming its role" grep -q "reader role; CreateTenant needs admin" <<<"$out"
check "and changes nothing" bash -c "! '$REPO/deploy/lab.sh' sfctl tenant list | grep -q reader-probe"
check "the admin token still writes" L sfctl tenant create reader-probe
check "and deletes" L sfctl tenant delete reader-probe

section "7. a node using another node's certificate gets no one else's scope"
ONCE=(/usr/bin/env "$REPO/target/release/sf-hypervisor-agent" --once --coordinator https://172.31.255.3:7443
    --tls-ca "$STATE/pki/ca.pem" --tls-cert "$STATE/pki/hv1.pem" --tls-key "$STATE/pki/hv1.key" --state-dir "$STATE/once")
X hv1 "${ONCE[@]}" --node hv2 >"$STATE/once-hv2.log" 2>&1; rc=$?
check "hv1's certificate asking for hv2's scope is refused" test "$rc" -ne 0
check "with PermissionDenied" grep -q "PermissionDenied" "$STATE/once-hv2.log"
check "and receives no snapshot" bash -c "! grep -q snapshot '$STATE/once-hv2.log'"
X hv1 "${ONCE[@]}" --node hv1 >"$STATE/once-live.log" 2>&1; rc=$?
check "a second live stream for hv1 (its agent is connected) is refused" test "$rc" -ne 0
check "with AlreadyExists" grep -q "AlreadyExists" "$STATE/once-live.log"
check "stop hv1's agent" L agent-stop hv1
check "with hv1's agent stopped, its certificate gets hv1's scope" \
    wait_for 10 bash -c "ip netns exec '${LAB_PREFIX}hv1' ${ONCE[*]} --node hv1 >'$STATE/once-hv1.log' 2>&1"
check "hv1's own scope has blue-web-1" grep -q '"blue-web-1"' "$STATE/once-hv1.log"
check "hv1's own scope has red-web-1" grep -q '"red-web-1"' "$STATE/once-hv1.log"
check "hv1's scope has nothing of hv2 or hv3" bash -c "! grep -qE '\"(blue-web-2|red-web-2)\"' '$STATE/once-hv1.log'"
check "start hv1's agent again" L agent-start hv1
check "hv1 back in sync" wait_for 30 node_is hv1 in_sync True

lab_finish
