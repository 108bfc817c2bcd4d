#!/usr/bin/env bash
# End-to-end tests of SoftGate failover decided by the fabric: a warm standby holds every VPC
# router built; BFD on the gateways' fabric sessions withdraws a silent gateway's routes; the
# standby takes over when its VPC's anchor leaves the fabric. For each fault, with real
# packets: exactly one gateway announces the VPC's public /32 (read at both leaves), traffic
# flows, and an established flow through a port forward survives.
#   1. warm standby: both gateways hold blue's router, one announces it
#   2. a frozen primary (FRR and agent SIGSTOPped, links up): BFD detects it, outage measured
#   3. management-network partition of the serving gateway: it keeps serving, nothing moves
#   4. its agent restarted while partitioned: still one announcer
#   5. a hung agent (SIGSTOP): the fence stands the node down, the standby takes over; the
#      agent resumes and does not take its VPC back
#   6. node death (links down) and return: takeover, no failback
#   7. a hung vtysh on the standby (its reconcile pass stuck) does not delay its takeover
#   8. a flapping standby (links down/up three times) moves nothing
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$REPO/tests/e2e/lib.sh"
lab_test sff

PF=203.0.113.11 # blue's port forward :8080 -> blue-web-2:80
EIP=203.0.113.12 # blue's static NAT (Elastic IP) of blue-web-1

vpc_id() { S -o json vpc show "$1" --tenant demo | json "d['id']"; }
serving() { announcers "$PF"; }
other() { if [ "$1" = gw1 ]; then echo gw2; else echo gw1; fi; }
pf_ok() { [ "$(X internet curl -s -m 1 "http://$PF:8080/")" = blue-web-2 ]; }
# outage LOG - longest gap (ms) between echo replies in a `ping -D -i 0.02` log.
outage() {
    python3 -c '
import re, sys
t = [float(m.group(1)) for m in map(re.compile(r"^\[(\d+\.\d+)\].*bytes from").match, open(sys.argv[1])) if m]
print(int(max((b - a for a, b in zip(t, t[1:])), default=0) * 1000))' "$1"
}
fabric_pids() { cat "$STATE/frr/$1"/{zebra,bgpd,bfdd,staticd}.pid 2>/dev/null; }
agent_pid() { cat "$STATE/pids/$1.pid"; }
fence_pid() { cat "$STATE/agents/$1/fence.pid" 2>/dev/null; }

section "lab up (prefix $LAB_PREFIX)"
t0=$SECONDS
if ! L up --no-build; then fail "deploy/lab.sh up"; finish; exit 1; fi
pass "lab up in $((SECONDS - t0)) s"

section "1. warm standby: both gateways hold blue's router, exactly one announces it"
check "port forward $PF:8080 -> blue-web-2:80" S nat forward web --tenant demo --vpc blue --public-ip "$PF" --protocol tcp --public-port 8080 --private-ip 10.10.1.12 --private-port 80
check "static NAT $EIP <-> blue-web-1" S nat static eip --tenant demo --vpc blue --public-ip "$EIP" --private-ip 10.10.1.11
ID=$(vpc_id blue)
check "both gateways hold blue's router namespace" wait_for 30 bash -c "ip netns list | grep -q '^${LAB_PREFIX}gw1-vpc$ID\b' && ip netns list | grep -q '^${LAB_PREFIX}gw2-vpc$ID\b'"
check "exactly one gateway announces $PF (leaves)" wait_for 30 one_announcer "$PF"
check "and $EIP" one_announcer "$EIP"
A=$(serving); B=$(other "$A")
if [ -z "$A" ]; then fail "nobody serves blue"; lab_finish; exit 1; fi
pass "$A serves blue, $B stands by"
check "the standby's tier link is down (its virtual MAC is not on the tier)" bash -c "ip -n ${LAB_PREFIX}$B -br link show | grep '^g${ID}v' | grep -qv ' UP '"
check "port forward works" wait_for 20 pf_ok
echo_server blue-web-1 9000
check "an echo server behind the Elastic IP" wait_for 10 X internet bash -c "exec 3<>/dev/tcp/$EIP/9000 && head -n 1 <&3 | grep -q hello"

section "2. a frozen primary ($A: FRR and agent stopped, links up): BFD, then the standby"
stream frozen internet "$EIP" 9000
check "an established flow through the Elastic IP" wait_for 5 streamed frozen 3
X internet bash -c "ping -D -n -i 0.02 -w 12 $EIP" >"$STATE/ping-frozen.log" 2>&1 &
PING=$!
sleep 2
# shellcheck disable=SC2046
kill -STOP $(fabric_pids "$A") "$(agent_pid "$A")" "$(fence_pid "$A")"
check "$B announces $PF alone within 3 s" wait_for 3 announced_by "$PF" "$B"
wait "$PING"
MS=$(outage "$STATE/ping-frozen.log")
pass "Elastic IP outage: $MS ms without replies (ping every 20 ms; BFD 100 ms x 5)"
check "the outage was under 3 s" test "$MS" -lt 3000
check "port forward works through $B" wait_for 10 pf_ok
N=$(grep -c '^ok' "$STATE/frozen.log")
check "the established Elastic IP flow survived the failover" wait_for 5 streamed frozen $((N + 5))
check "never two announcers over 3 s" never_two 3 "$PF"
# shellcheck disable=SC2046
kill -CONT $(fabric_pids "$A") "$(agent_pid "$A")" "$(fence_pid "$A")"
check "$A returns and does not take blue back (one announcer: $B)" never_two 8 "$PF"
check_eq "still served by $B" "$B" "$(announcers "$PF")"
check "port forward works" wait_for 10 pf_ok

section "3. management partition of the serving gateway ($B): it keeps serving"
A=$(serving); B=$(other "$A")
X "$A" ip link set mgmt0 down
check "no second announcer for 12 s (past the lease TTL)" never_two 12 "$PF"
check_eq "$A still serves blue" "$A" "$(announcers "$PF")"
check "port forward works through the partitioned $A" wait_for 5 pf_ok

section "4. $A's agent restarted while partitioned"
check "kill -9 $A's agent" L agent-kill "$A"
check "start it again (no etcd, no coordinator)" L agent-start "$A"
check "no second announcer for 10 s" never_two 10 "$PF"
check "port forward works" wait_for 5 pf_ok
X "$A" ip link set mgmt0 up
check "$A's lease is up again after the partition" wait_for 30 node_is "$A" lease up
check "one announcer after healing" never_two 4 "$PF"
check_eq "$A still serves blue after healing" "$A" "$(announcers "$PF")"

section "5. a hung agent on the serving gateway: the fence hands blue over"
A=$(serving); B=$(other "$A")
stream hung internet "$EIP" 9000
check "an established flow through the Elastic IP" wait_for 5 streamed hung 3
kill -STOP "$(agent_pid "$A")"
check "$B takes blue over once the fence stands $A down" wait_for 15 announced_by "$PF" "$B"
check "port forward works through $B" wait_for 10 pf_ok
check "the fence logged it" grep -q "FENCE: agent hung" "$STATE/agents/$A/fence.log"
N=$(grep -c '^ok' "$STATE/hung.log")
check "the established Elastic IP flow survived the hand-over" wait_for 5 streamed hung $((N + 5))
kill -CONT "$(agent_pid "$A")"
check "$A resumes and stays passive" never_two 6 "$PF"
check_eq "blue stays on $B" "$B" "$(announcers "$PF")"

section "6. node death of the serving gateway ($B): links down; its return takes nothing back"
A=$(serving); B=$(other "$A")
X internet bash -c "ping -D -n -i 0.02 -w 8 $EIP" >"$STATE/ping-death.log" 2>&1 &
PING=$!
sleep 2
L agent-kill "$A"
X "$A" ip link set leaf1 down
X "$A" ip link set leaf2 down
check "$B announces blue" wait_for 5 announced_by "$PF" "$B"
wait "$PING"
MS=$(outage "$STATE/ping-death.log")
pass "Elastic IP outage: $MS ms without replies (node death)"
check "port forward works through $B" wait_for 10 pf_ok
X "$A" ip link set leaf1 up
X "$A" ip link set leaf2 up
check "restart $A's agent" L agent-start "$A"
check "$A's lease up" wait_for 30 node_is "$A" lease up
check "never two announcers while $A returns" never_two 10 "$PF"
check_eq "blue stays on $B" "$B" "$(announcers "$PF")"
check "port forward works" wait_for 10 pf_ok

section "7. a hung vtysh on the standby ($A) does not delay its takeover"
A=$(serving); B=$(other "$A")
# staticd stopped: every vtysh that asks it (frr-reload's `show running-config`) hangs, so
# the standby's reconcile pass hangs in its FRR step; the failover controller runs beside it.
kill -STOP "$(cat "$STATE/frr/$B/staticd.pid")"
check "a pass on $B that changes its FRR (a new pool) starts" S pool create extra --cidr 100.64.50.0/24
check "$B's FRR step is stuck (vtysh waits on staticd)" wait_for 10 pgrep -f "(vtysh|frr-reload).*$STATE/frr/$B( |$)"
L agent-kill "$A"
X "$A" ip link set leaf1 down
X "$A" ip link set leaf2 down
t0=$(date +%s%N)
check "$B takes blue over within 3 s all the same" wait_for 3 announced_by "$PF" "$B"
pass "takeover $(( ($(date +%s%N) - t0) / 1000000 )) ms after $A died"
check "port forward works through $B" wait_for 10 pf_ok
kill -CONT "$(cat "$STATE/frr/$B/staticd.pid")"
X "$A" ip link set leaf1 up
X "$A" ip link set leaf2 up
check "restart $A's agent" L agent-start "$A"
check "$A's lease up" wait_for 30 node_is "$A" lease up

section "8. a flapping standby ($A) moves nothing"
for _ in 1 2 3; do
    X "$A" ip link set leaf1 down
    X "$A" ip link set leaf2 down
    sleep 1
    X "$A" ip link set leaf1 up
    X "$A" ip link set leaf2 up
    sleep 2
done
check "never two announcers while it settles" never_two 8 "$PF"
check_eq "blue stays on $B" "$B" "$(announcers "$PF")"
check "port forward works" wait_for 10 pf_ok

lab_finish
