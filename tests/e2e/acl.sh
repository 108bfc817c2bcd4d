#!/usr/bin/env bash
# End-to-end tests of network ACLs: east-west on the hypervisors' VM ports and
# north-south on the SoftGate, with CloudStack semantics, proven with real connections.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$REPO/tests/e2e/lib.sh"
lab_test sfc

# listen VM PORT: a TCP server answering "VM:PORT" and then echoing "ok N" for each line read.
listen() {
    X "$1" setsid python3 -c '
import socket, sys, threading
port = int(sys.argv[2])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", port)); srv.listen(64)
def serve(c):
    c.sendall(("%s:%d\n" % (sys.argv[1], port)).encode())
    f = c.makefile("rb"); n = 0
    for line in f:
        n += 1
        c.sendall(b"ok %d\n" % n)
    c.close()
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
' "$1" "$2" >/dev/null 2>&1 </dev/null &
}
# connect FROM IP PORT: prints the server's greeting (fails on timeout/refusal).
connect() { X "$1" python3 -c '
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
print(s.makefile().readline().strip())' "$2" "$3"; }
apply_db_acl() { S acl apply db-acl --tenant demo --vpc blue --tier db --default deny "$@"; }

section "lab up (prefix $LAB_PREFIX)"
if ! L up --no-build; then fail "deploy/lab.sh up"; finish; exit 1; fi
pass "lab up"
check "tier db with blue-db-1 on hv3" bash -c "'$REPO/deploy/lab.sh' sfctl network create db --tenant demo --vpc blue --cidr 10.10.2.0/24 && '$REPO/deploy/lab.sh' vm-add blue-db-1 hv3 demo blue db 10.10.2.11"
listen blue-db-1 5432; listen blue-db-1 22
check "without an ACL blue-web-1 reaches db:5432" wait_for 30 connect blue-web-1 10.10.2.11 5432
check "without an ACL blue-web-1 reaches db:22 (the listener exists)" connect blue-web-1 10.10.2.11 22
check "port forward 203.0.113.13:2222 -> blue-db-1:22" S nat forward ssh --tenant demo --vpc blue --public-ip 203.0.113.13 --public-port 2222 --private-ip 10.10.2.11 --private-port 22
check "without an ACL the internet reaches db:22 through the port forward" wait_for 30 connect internet 203.0.113.13 2222

section "1. db allows TCP 5432 only from web"
check "apply db-acl" apply_db_acl --rule "10 ingress allow tcp 5432 10.10.1.0/24" --rule "20 egress allow all any 0.0.0.0/0"
check "the ACL takes effect: blue-web-1 -> db:22 is dropped" wait_for 15 bash -c "! '$REPO/deploy/lab.sh' exec blue-web-1 timeout 3 python3 -c 'import socket; socket.create_connection((\"10.10.2.11\", 22), timeout=2)'"
check_eq "blue-web-1 -> db:5432 connects" "blue-db-1:5432" "$(connect blue-web-1 10.10.2.11 5432)"
check_not "blue-web-1 -> db:22 times out (dropped, not refused)" connect blue-web-1 10.10.2.11 22

section "2. rule order: a deny numbered before an allow wins"
check "apply: 5 deny 5432 from blue-web-1, 10 allow 5432 from web" apply_db_acl --rule "5 ingress deny tcp 5432 10.10.1.11/32" --rule "10 ingress allow tcp 5432 10.10.1.0/24" --rule "20 egress allow all any 0.0.0.0/0"
check "blue-web-1 -> db:5432 now dropped" wait_for 15 bash -c "! '$REPO/deploy/lab.sh' exec blue-web-1 timeout 3 python3 -c 'import socket; socket.create_connection((\"10.10.2.11\", 5432), timeout=2)'"
check_eq "blue-web-2 -> db:5432 still allowed" "blue-db-1:5432" "$(connect blue-web-2 10.10.2.11 5432)"

section "3. replies pass; an inbound connection the rules do not allow is dropped even to a port forward"
check "apply: allow 5432 from web only" apply_db_acl --rule "10 ingress allow tcp 5432 10.10.1.0/24" --rule "20 egress allow all any 0.0.0.0/0"
check_eq "the reply of an allowed flow comes back (greeting read)" "blue-db-1:5432" "$(connect blue-web-1 10.10.2.11 5432)"
check_not "the internet cannot reach db:22 through the port forward" connect internet 203.0.113.13 2222

section "4. changing the list under a running allowed stream does not break it"
X blue-web-1 python3 -c '
import socket, time
s = socket.create_connection(("10.10.2.11", 5432), timeout=3)
f = s.makefile("rb"); f.readline()
for i in range(1, 61):
    s.sendall(b"x\n")
    assert f.readline().strip() == b"ok %d" % i, i
    time.sleep(0.1)
print("stream ok")' >"$STATE/stream.log" 2>&1 &
STREAM=$!
sleep 1.5
check "apply a changed list (new rule 15) while the stream runs" apply_db_acl --rule "10 ingress allow tcp 5432 10.10.1.0/24" --rule "15 ingress allow icmp any 10.10.1.0/24" --rule "20 egress allow all any 0.0.0.0/0"
check "wait for the ping the new rule allows" wait_for 15 X blue-web-1 ping -c 1 -W 1 10.10.2.11
wait "$STREAM"
check "the stream survived the change ($(tail -1 "$STATE/stream.log"))" grep -q "stream ok" "$STATE/stream.log"

section "5. same tier on two hypervisors: enforced at the source, never reaches the far one"
WEB_VNI=$(S -o json network show web --tenant demo --vpc blue | python3 -c "import json,sys; print(json.load(sys.stdin)['vni'])")
# counter HV COMMENT: packets counted by the rule with that comment in chain in_<web VNI>.
counter() {
    X "$1" nft -j list chain bridge stackfabric "in_$WEB_VNI" 2>/dev/null | python3 -c "
import json, sys
n = 0
for item in json.load(sys.stdin)['nftables']:
    r = item.get('rule')
    if r and r.get('comment') == '$2':
        for e in r['expr']:
            if 'counter' in e:
                n += e['counter']['packets']
print(n)" 2>/dev/null || echo 0
}
check "web-acl: 10 deny icmp from blue-web-1, 20 allow all" S acl apply web-acl --tenant demo --vpc blue --tier web --default deny \
    --rule "10 ingress deny icmp any 10.10.1.11/32" --rule "20 ingress allow all any 0.0.0.0/0" --rule "30 egress allow all any 0.0.0.0/0"
check "hv1 and hv2 hold the web ACL" wait_for 15 bash -c "'$REPO/deploy/lab.sh' exec hv1 nft list chain bridge stackfabric in_$WEB_VNI | grep -q 'ingress 10' && '$REPO/deploy/lab.sh' exec hv2 nft list chain bridge stackfabric in_$WEB_VNI | grep -q 'ingress 10'"
H1=$(counter hv1 "ingress 10"); H2=$(counter hv2 "ingress 10")
check_not "blue-web-1 (hv1) cannot ping blue-web-2 (hv2)" X blue-web-1 ping -c 3 -W 1 10.10.1.12
check "the drop is counted on the source hypervisor hv1 ($H1 -> $(counter hv1 "ingress 10"))" test "$(counter hv1 "ingress 10")" -ge $((H1 + 3))
check_eq "the far hypervisor hv2 never saw it" "$H2" "$(counter hv2 "ingress 10")"
# metric_ge HOST_IP VALUE: hv1's agent exports the rule's counter, at least VALUE.
metric_ge() {
    local v
    v=$(X mgmt curl -s -m 2 "http://$1:9101/metrics" | awk -v k="sf_rule_packets_total{scope=\"node\",chain=\"in_$WEB_VNI\",rule=\"ingress 10\"} " 'index($0, k) == 1 {print $NF}')
    [ -n "$v" ] && [ "$v" -ge "$2" ]
}
check "hv1's /metrics exports the rule's packets (sf_rule_packets_total, >= $((H1 + 3)))" wait_for 25 metric_ge 172.31.255.21 $((H1 + 3))
check "blue-web-2 still pings blue-web-1 (rule 10 only matches web-1 as the source)" X blue-web-2 ping -c 2 -W 1 10.10.1.11
check_eq "HTTP from blue-web-1 to blue-web-2 still works" "blue-web-2" "$(X blue-web-1 curl -s -m 3 http://10.10.1.12/)"

lab_finish
