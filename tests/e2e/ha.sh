#!/usr/bin/env bash
# End-to-end tests of production operations on `deploy/lab.sh up --ha`: three etcd
# members (mutual TLS, etcd auth with a user per node) and three coordinator replicas.
#   1. a node's etcd credentials reach its own keys only;
#   2. killing the leader coordinator under a stream of API writes: another replica leads
#      within seconds, every acknowledged write is there, agents reconnect, pings keep flowing;
#   3. killing an etcd member (the raft leader): API writes and agent leases keep working; the
#      member rejoins with what was written meanwhile;
#   4. the gateway rollout procedure (drain, restart, wait for sync, undrain) under continuous
#      new connections through the gateways: none fails;
#   5. metrics: one leader among the replicas, the latency histogram after a change.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$REPO/tests/e2e/lib.sh"
lab_test sfha

# note TEXT: a figure for the log, not a check.
note() { printf '  note: %s\n' "$*"; }
status_get() { S -o json status | json "$1"; }
NODES=(spine1 leaf1 leaf2 hv1 hv2 hv3 gw1 gw2)
COORD_IPS=(172.31.255.51 172.31.255.52 172.31.255.53)
# metric NAME IP - the value of an unlabelled metric of the coordinator at IP ("" if down).
metric() { X mgmt curl -s -m 2 "http://$2:9100/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
streams_are() { [ "$(streams_total)" = "$1" ]; }
streams_total() {
    local ip n t=0
    for ip in "${COORD_IPS[@]}"; do
        n=$(metric sf_coordinator_agent_streams "$ip")
        t=$((t + ${n:-0}))
    done
    echo "$t"
}
# all_in_sync: every node's lease is up and it applied its desired revision and digest.
all_in_sync() {
    S -o json status | python3 -c "
import json, sys
d = json.load(sys.stdin)
ok = [n for n in d['nodes'] if n['lease'] == 'up' and n['in_sync'] and not n['errors']]
sys.exit(0 if len(ok) == $1 else 1)"
}

section "lab up --ha (prefix $LAB_PREFIX)"
t0=$SECONDS
if ! L up --ha --no-build; then fail "deploy/lab.sh up --ha"; finish; exit 1; fi
pass "HA lab up in $((SECONDS - t0)) s"

section "0. three etcd members, three coordinator replicas, one leader"
check_eq "etcd: 3 healthy members" 3 "$(L etcdctl endpoint health --cluster 2>&1 | grep -c 'is healthy')"
check "status lists 3 replicas" wait_for 10 bash -c "[ \"\$('$REPO/deploy/lab.sh' sfctl -o json status | python3 -c 'import json,sys; print(len(json.load(sys.stdin)[\"replicas\"]))')\" = 3 ]"
LEADER=$(status_get "d['leader']")
check "a leader is elected ($LEADER)" test -n "$LEADER"
check "all ${#NODES[@]} nodes up and in sync" wait_for 60 all_in_sync "${#NODES[@]}"
check_eq "the ${#NODES[@]} agents are connected across the replicas" "${#NODES[@]}" "$(streams_total)"
SPREAD=$(for ip in "${COORD_IPS[@]}"; do metric sf_coordinator_agent_streams "$ip"; done | tr '\n' ' ')
check "agents spread over more than one replica (streams per replica: $SPREAD)" test "$(for ip in "${COORD_IPS[@]}"; do metric sf_coordinator_agent_streams "$ip"; done | grep -cv '^0$')" -ge 2

section "1. a node's etcd credentials reach its own keys only"
check "hv1 writes its own key" L etcdctl --as hv1 put /stackfabric/nodes/hv1/probe x
check "hv1 deletes its own key" L etcdctl --as hv1 del /stackfabric/nodes/hv1/probe
expect_denied() {
    local what=$1 out; shift
    out=$(L etcdctl "$@" 2>&1)
    if grep -q 'permission denied' <<<"$out"; then pass "$what: permission denied"; else fail "$what: expected permission denied, got: $out"; fi
}
expect_denied "hv1 writes hv2's status" --as hv1 put /stackfabric/nodes/hv2/status forged
expect_denied "hv1 deletes hv2's heartbeat" --as hv1 del /stackfabric/nodes/hv2/heartbeat
expect_denied "gw1 writes intent" --as gw1 put /stackfabric/intent/tenants/evil '{"name":"evil"}'
expect_denied "gw1 writes placement" --as gw1 put /stackfabric/placement/demo/blue '{}'
expect_denied "leaf1 reads intent" --as leaf1 get --prefix /stackfabric/intent/
expect_denied "hv1 takes the coordinator leadership" --as hv1 put /stackfabric/coordinators/leader hv1
check "hv2's heartbeat is still its own (written under its lease)" bash -c "'$REPO/deploy/lab.sh' etcdctl get /stackfabric/nodes/hv2/heartbeat -w json | grep -q '\"lease\"'"
check_not "without a client certificate etcd refuses" X mgmt timeout 10 etcdctl --endpoints https://172.31.255.41:2379 --cacert "$STATE/pki/ca.pem" --dial-timeout 2s --command-timeout 3s get /stackfabric/intent/tenants/demo

section "2. kill the leader coordinator under a stream of API writes"
# Pings across hypervisors (blue-web-1 on hv1 -> blue-web-2 on hv2) for the whole section.
X blue-web-1 ping -i 0.2 -c 150 -W 1 10.10.1.12 >"$STATE/ha-ping.log" 2>&1 &
PING=$!; BG+=("$PING")
: >"$STATE/ha-acked"
touch "$STATE/ha-writing"
(
    i=0
    while [ -f "$STATE/ha-writing" ]; do
        i=$((i + 1))
        if "$REPO/deploy/lab.sh" sfctl tenant create "ha-$i" >/dev/null 2>>"$STATE/ha-write-errors"; then
            echo "ha-$i" >>"$STATE/ha-acked"
        fi
    done
) &
WRITER=$!; BG+=("$WRITER")
sleep 3
N=${LEADER#coord}
t_kill=$(date +%s.%N)
check "kill -9 the leader $LEADER" L coord-kill "$N"
new_leader() {
    local l
    l=$(S -o json status 2>/dev/null | json "d['leader']") || return 1
    [ -n "$l" ] && [ "$l" != "$LEADER" ] && echo "$l"
}
check "another replica leads" wait_for 30 new_leader
t_led=$(date +%s.%N)
NEW_LEADER=$(new_leader)
TAKEOVER=$(python3 -c "print(f'{$t_led - $t_kill:.1f}')")
check "$NEW_LEADER took over in ${TAKEOVER} s (leader lease 5 s)" python3 -c "import sys; sys.exit(0 if $TAKEOVER < 10 else 1)"
sleep 4
rm -f "$STATE/ha-writing"
wait "$WRITER"
ACKED=$(wc -l <"$STATE/ha-acked")
check "writes succeeded before and after the kill ($ACKED acknowledged)" test "$ACKED" -ge 10
S -o json tenant list | json "'\n'.join(t['name'] for t in d)" | sort >"$STATE/ha-present"
MISSING=$(sort "$STATE/ha-acked" | comm -23 - "$STATE/ha-present" | wc -l)
check_eq "every acknowledged write is present (missing: $(sort "$STATE/ha-acked" | comm -23 - "$STATE/ha-present" | tr '\n' ' '))" 0 "$MISSING"
FAILED=$(grep -c . "$STATE/ha-write-errors" 2>/dev/null || true)
note "writes refused during the takeover (reported to the client, so not in the acknowledged list): ${FAILED:-0} lines of errors"
check "agents reconnected: ${#NODES[@]} streams on the live replicas" wait_for 30 streams_are "${#NODES[@]}"
check "a write after the takeover reaches every node (all in sync)" S tenant create ha-after
check "all nodes in sync at the new revision" wait_for 30 all_in_sync "${#NODES[@]}"
wait "$PING"
SENT=$(awk '/packets transmitted/ {print $1}' "$STATE/ha-ping.log")
RECV=$(awk '/packets transmitted/ {print $4}' "$STATE/ha-ping.log")
check_eq "pings kept flowing through the kill ($RECV of $SENT answered)" "$SENT" "$RECV"
check "restart the killed replica" L coord-start "$N"
check "it rejoins as a follower" wait_for 20 bash -c "[ \"\$('$REPO/deploy/lab.sh' sfctl -o json status | python3 -c 'import json,sys; d=json.load(sys.stdin); print(len(d[\"replicas\"]), d[\"leader\"])')\" = '3 $NEW_LEADER' ]"
# A clean stop (SIGTERM, as systemd and the rollout do) hands the leadership over at once.
LEADER=$NEW_LEADER
t_stop=$(date +%s.%N)
check "stop the leader $LEADER with SIGTERM" L coord-stop "${LEADER#coord}"
check "a follower leads within 3 s of the stop (the leader resigned its lease)" wait_for 3 new_leader
note "handover after SIGTERM: $(python3 -c "print(f'{$(date +%s.%N) - $t_stop:.1f}')") s (includes the stop and the status poll)"
check "restart $LEADER" L coord-start "${LEADER#coord}"

section "2b. writes through two replicas at once"
# par_writes IP PREFIX: 15 tenant creates straight to the replica at IP; failures listed.
par_writes() {
    local i
    for i in $(seq 15); do
        X mgmt "${SF_BIN_DIR:-$REPO/target/release}/sfctl" --endpoint "https://$1:7443" --ca "$STATE/pki/ca.pem" \
            --token-file "$STATE/api-token" tenant create "$2-$i" >/dev/null 2>>"$STATE/par-errors" ||
            echo "$2-$i" >>"$STATE/par-failed"
    done
}
: >"$STATE/par-failed"
par_writes "${COORD_IPS[0]}" par-a &
PA=$!
par_writes "${COORD_IPS[1]}" par-b &
PB=$!
wait "$PA" "$PB"
check_eq "30 concurrent writes through coord1 and coord2 all succeeded (errors: $(head -c 300 "$STATE/par-errors" 2>/dev/null))" 0 "$(wc -l <"$STATE/par-failed")"
check_eq "and all 30 are there" 30 "$(S -o json tenant list | json "sum(1 for t in d if t['name'].startswith('par-'))")"

section "2c. a REST (CloudStack) session works on every replica"
# rest IP CURL-ARGS...: status code of /api/auth on the replica at IP, with the session cookie
# once there is one (sent explicitly: curl's jar keeps a cookie for the host that set it).
rest() {
    local ip=$1 cookie=()
    shift
    [ -s "$STATE/rest-sid" ] && cookie=(-H "Cookie: connect.sid=$(cat "$STATE/rest-sid")")
    X mgmt curl -s -o /dev/null -w '%{http_code}' --cacert "$STATE/pki/ca.pem" \
        -c "$STATE/rest-jar" "${cookie[@]}" "$@" "https://$ip:8080/api/auth"
}
check_eq "log in through coord1" 200 "$(rest "${COORD_IPS[0]}" -H 'Content-Type: application/json' -d "{\"user\":\"cloudstack\",\"password\":\"$(cat "$STATE/rest-password")\"}")"
awk '$6 == "connect.sid" {print $7}' "$STATE/rest-jar" >"$STATE/rest-sid"
check "coord1 set a session cookie" test -s "$STATE/rest-sid"
check_eq "the session is valid on coord1" 200 "$(rest "${COORD_IPS[0]}")"
check_eq "and on coord2" 200 "$(rest "${COORD_IPS[1]}")"
check_eq "and on coord3" 200 "$(rest "${COORD_IPS[2]}")"
check_eq "log out through coord3" 200 "$(rest "${COORD_IPS[2]}" -X DELETE)"
session_gone() { [ "$(rest "${COORD_IPS[0]}")" = 401 ]; }
check "coord1 refuses the session within 15 s of the logout" wait_for 15 session_gone

section "2d. a hung replica (SIGSTOP): sfctl moves on to the next"
# The lab hands sfctl all three replicas, coord1 first. A stopped process still has its
# listening socket, so the kernel completes the TCP handshake and only TLS hangs: sfctl must
# give up on coord1 after --timeout and use coord2, for a write (never sent to coord1) and a read.
HUNG=$(cat "$STATE/pids/coord1.pid")
check "coord1 (pid $HUNG) is the coordinator process" grep -q coordinator "/proc/$HUNG/cmdline"
check "SIGSTOP coord1" kill -STOP "$HUNG"
only_coord1() {
    X mgmt "${SF_BIN_DIR:-$REPO/target/release}/sfctl" --endpoint "https://${COORD_IPS[0]}:7443" \
        --ca "$STATE/pki/ca.pem" --token-file "$STATE/api-token" --timeout 2 "$@"
}
check_not "coord1 alone does not answer (it is hung, not gone)" only_coord1 status
t0=$(date +%s.%N)
check "a write through the replica list succeeds with coord1 hung" S --timeout 3 tenant create ha-hung
note "write with coord1 hung: $(python3 -c "print(f'{$(date +%s.%N) - $t0:.1f}')") s (--timeout 3 on coord1 first)"
check "a read through the replica list sees it" bash -c "'$REPO/deploy/lab.sh' sfctl --timeout 3 -o json tenant list | grep -q '\"ha-hung\"'"
check "SIGCONT coord1" kill -CONT "$HUNG"
check "coord1 answers again" wait_for 20 only_coord1 status
check "three replicas again" wait_for 30 bash -c "[ \"\$('$REPO/deploy/lab.sh' sfctl -o json status | python3 -c 'import json,sys; print(len(json.load(sys.stdin)[\"replicas\"]))')\" = 3 ]"
check "delete the tenant through coord1 first" S tenant delete ha-hung

section "2e. a replica cut off from etcd stops serving agents; they move on"
# The replica serving the most agents loses etcd (its packets to 2379 are dropped inside its
# own namespace): its index can no longer be confirmed current, so it must report unhealthy
# and end its agents' streams rather than keep feeding them a frozen state; the agents move to
# the other replicas.
CUT=0 MOST=-1
for i in 0 1 2; do
    n=$(metric sf_coordinator_agent_streams "${COORD_IPS[$i]}")
    if [ "${n:-0}" -gt "$MOST" ]; then CUT=$i MOST=${n:-0}; fi
done
CUT_NS=coord$((CUT + 1)) CUT_IP=${COORD_IPS[$CUT]}
healthz_is() { [ "$(X mgmt curl -s -o /dev/null -w '%{http_code}' -m 2 "http://$CUT_IP:9100/healthz")" = "$1" ]; }
cut_streams_are() { [ "$(metric sf_coordinator_agent_streams "$CUT_IP")" = "$1" ]; }
check "$CUT_NS serves agent streams before ($MOST)" test "$MOST" -gt 0
check "$CUT_NS is healthy before" healthz_is 200
check "cut $CUT_NS off from etcd" X "$CUT_NS" nft -f - <<'EOF2'
table inet sfha_cut {
    chain out {
        type filter hook output priority 0; policy accept;
        tcp dport 2379 drop
    }
}
EOF2
check "$CUT_NS reports unhealthy within 15 s" wait_for 15 healthz_is 503
check "$CUT_NS serves no agent stream within 15 s" wait_for 15 cut_streams_are 0
check "all ${#NODES[@]} agents are connected to the other replicas" wait_for 30 streams_are "${#NODES[@]}"
check "a change made now reaches every node (ACL list on blue web)" S acl apply ha-cut --tenant demo --vpc blue --tier web --default allow --rule "10 ingress allow all any 0.0.0.0/0"
check "all ${#NODES[@]} nodes apply it" wait_for 30 all_in_sync "${#NODES[@]}"
check "reconnect $CUT_NS to etcd" X "$CUT_NS" nft delete table inet sfha_cut
check "$CUT_NS is healthy again within 20 s" wait_for 20 healthz_is 200
check "delete the ACL list" S acl delete ha-cut --tenant demo --vpc blue

section "3. kill one etcd member (the raft leader)"
ETCD_LEADER=$(L status 2>/dev/null | awk '/^ *etcd[0-9]/ && /leader/ {print $1; exit}' | tr -d ':')
check "found the etcd raft leader ($ETCD_LEADER)" test -n "$ETCD_LEADER"
EN=${ETCD_LEADER#etcd}
check "kill -9 $ETCD_LEADER" L etcd-kill "$EN"
t_kill=$SECONDS
raft_leader() { L status 2>/dev/null | grep -E '^ *etcd[0-9]' | grep -v "^ *$ETCD_LEADER " | grep -q leader; }
check "the two remaining members elect a raft leader" wait_for 20 raft_leader
note "raft leader re-elected within $((SECONDS - t_kill)) s (polled through lab.sh status)"
ok=0
for i in 1 2 3 4 5; do S tenant create "etcdkill-$i" >/dev/null 2>>"$STATE/ha-etcd-errors" && ok=$((ok + 1)); done
check_eq "API writes keep working (5 of 5; errors: $(head -c 600 "$STATE/ha-etcd-errors" 2>/dev/null))" 5 "$ok"
sleep 14 # more than twice the agents' lease TTL (6 s)
check "agent leases kept alive: all nodes up and in sync" wait_for 10 all_in_sync "${#NODES[@]}"
check_eq "no node lost its heartbeat" "${#NODES[@]}" "$(L etcdctl get --prefix /stackfabric/nodes/ --keys-only 2>/dev/null | grep -c '/heartbeat$')"
check "restart $ETCD_LEADER" L etcd-start "$EN"
check_eq "3 healthy members again" 3 "$(L etcdctl endpoint health --cluster 2>&1 | grep -c 'is healthy')"
check "the rejoined member serves what was written while it was down" bash -c "X() { '$REPO/deploy/lab.sh' exec \"\$@\"; }; X mgmt etcdctl --endpoints https://172.31.255.4$EN:2379 --cacert $STATE/pki/ca.pem --cert $STATE/pki/root.pem --key $STATE/pki/root.key get --consistency=s /stackfabric/intent/tenants/etcdkill-5 | grep -q etcdkill-5"

section "4. gateway rollout, one gateway at a time, under continuous new connections"
check "port forward 203.0.113.11:8080 -> blue-web-2" S nat forward pf-ha --tenant demo --vpc blue --public-ip 203.0.113.11 --public-port 8080 --private-ip 10.10.1.12 --private-port 80
check "it answers from the internet" wait_for 30 bash -c "[ \"\$('$REPO/deploy/lab.sh' exec internet curl -s -m 2 http://203.0.113.11:8080/)\" = blue-web-2 ]"
touch "$STATE/ha-traffic"
# One new TCP connection every 0.1 s; a connection that does not complete within 10 s (SYN
# retransmits included) or gets no answer is a failed new connection.
# shellcheck disable=SC2016  # expanded inside the internet namespace
X internet bash -c 'while [ -f "$1" ]; do r=$(curl -s -m 10 -w " %{http_code} %{time_total}" http://203.0.113.11:8080/ | tr -d "\n"); echo "$r"; sleep 0.1; done' _ "$STATE/ha-traffic" >"$STATE/ha-conns.log" 2>&1 &
TRAFFIC=$!; BG+=("$TRAFFIC")
sleep 2
for g in gw1 gw2; do
    check "$g: drain" S gateway drain "$g"
    check "$g: no VPC has it as primary" bash -c "'$REPO/deploy/lab.sh' sfctl -o json gateway list | python3 -c \"import json,sys; sys.exit(any(v['primary']=='$g' for v in json.load(sys.stdin)['vpcs']))\""
    check "$g: restart its agent (the binary replacement)" bash -c "'$REPO/deploy/lab.sh' agent-stop $g && '$REPO/deploy/lab.sh' agent-start $g"
    check "$g: synced at its desired revision" wait_for 60 all_in_sync "${#NODES[@]}"
    check "$g: undrain" S gateway undrain "$g"
    check "$g: back in placement" wait_for 20 bash -c "'$REPO/deploy/lab.sh' sfctl -o json gateway list | python3 -c \"import json,sys; sys.exit('$g' in json.load(sys.stdin)['drained'])\""
    sleep 3
done
rm -f "$STATE/ha-traffic"
wait "$TRAFFIC"
TOTAL=$(grep -c . "$STATE/ha-conns.log")
GOOD=$(grep -c '^blue-web-2 200 ' "$STATE/ha-conns.log")
SLOWEST=$(awk '{print $NF}' "$STATE/ha-conns.log" | sort -g | tail -1)
check "many new connections during the rollout ($TOTAL)" test "$TOTAL" -ge 50
check_eq "no failed new connection (slowest took ${SLOWEST} s; $(awk '$NF > 0.5' "$STATE/ha-conns.log" | wc -l) took over 0.5 s; failures: $(grep -v '^blue-web-2 200 ' "$STATE/ha-conns.log" | head -3 | tr '\n' '|'))" "$TOTAL" "$GOOD"
if [ "$TOTAL" != "$GOOD" ]; then
    # What the routers' conntrack still holds of the port forward beyond closed flows: a
    # connection that fails for 10 s while the next ones succeed points at one 5-tuple's state.
    for ns in $(ip netns list | awk '{print $1}' | grep "^${LAB_PREFIX}gw[0-9]*-vpc"); do
        echo "    $ns:"
        ip netns exec "$ns" conntrack -L -p tcp 2>/dev/null | grep -v TIME_WAIT | grep '8080\|sport=80 ' | sed 's/^/      /' | head -20
    done
    grep -ah 'VPC router ACTIVE\|VPC router passive' "$STATE"/logs/gw*.log 2>/dev/null | sort | tail -n 12 | cut -c1-220 | sed 's/^/    /'
fi

section "5. metrics"
LEADERS=0
for ip in "${COORD_IPS[@]}"; do
    v=$(metric sf_coordinator_is_leader "$ip")
    LEADERS=$((LEADERS + ${v:-0}))
done
check_eq "exactly one replica reports sf_coordinator_is_leader 1" 1 "$LEADERS"
check "the intent-to-ack histogram has observations on a replica" bash -c "for ip in ${COORD_IPS[*]}; do '$REPO/deploy/lab.sh' exec mgmt curl -s -m 2 http://\$ip:9100/metrics | awk '\$1 == \"sf_coordinator_intent_to_ack_seconds_count\" && \$2 > 0 {f=1} END {exit !f}' && exit 0; done; exit 1"

# pf_packets IP: the port forward's packets on the gateway at IP ("" when it serves none).
pf_packets() {
    X mgmt curl -s -m 2 "http://$1:9101/metrics" | awk '/^sf_rule_packets_total\{/ && /rule="port-forward tcp"/ {n += $NF} END {print n + 0}'
}
pf_counted() { [ $(($(pf_packets 172.31.255.31) + $(pf_packets 172.31.255.32))) -gt 0 ]; }
check "the gateways export per-rule NAT counters (port forward packets > 0)" wait_for 25 pf_counted

finish
