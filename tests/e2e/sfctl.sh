#!/usr/bin/env bash
# End-to-end tests of sfctl's operator habits against a real lab (etcd, coordinator, agents,
# kernel dataplane, in namespaces of this run); every output is parsed, not just exit codes.
#   1. output formats: table, --no-headers, -o json, -o yaml, -o name;
#   2. `get` (alias of show) for every kind, read back field by field;
#   3. documented exit codes: not found 3, refused 1, unreachable 2, usage 64;
#   4. --dry-run: validated like the write (a bad one is refused the same way), nothing
#      written (the object is absent, the intent revision unchanged) and, with real packets,
#      an ACL that would block ICMP leaves the ping working;
#   5. --wait: the ACL applied with --wait blocks the ping at once (no polling after it), its
#      delete with --wait lets it through at once; with a hypervisor's agent frozen, --wait
#      gives up after --wait-timeout with exit code 4 and names the node;
#   6. status --watch prints the fleet status again when it changes;
#   7. shell completion, and a config file with contexts (no --endpoint/--ca/--token-file);
#   8. gRPC health (grpc.health.v1) and server reflection, as grpcurl uses them;
#   9. update in place: tenant, load balancer (real connections follow the new backend);
#  10. update in place: a route's next hop, a port forward's target (real connections from
#      the internet host follow it); a bad value is refused with the create's message.
#  11. IPv6 dual-stack intent (issue 21): --ipv6-range, --ipv6-prefix and --ipv6 are stored
#      and read back, refusals name the field, NAT refuses IPv6, and the agents stay in sync
#      with a dual-stack port bound (they ignore what they do not implement yet).
#
# Usage: tests/e2e/sfctl.sh   (as root; builds nothing: run after `cargo build --release`)
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$REPO/tests/e2e/lib.sh"
lab_test sfc

SFCTL=${SF_BIN_DIR:-$REPO/target/release}/sfctl
COORD=https://172.31.255.3:7443
FROZEN=
# A frozen agent is thawed whatever happens (lab_exit runs test_exit before lab down).
test_exit() { [ -z "$FROZEN" ] || kill -CONT "$FROZEN" 2>/dev/null; }

# rc CMD...: CMD's exit status (its output kept in $STATE/rc.out).
rc() {
    "$@" >"$STATE/rc.out" 2>&1
    echo $?
}
revision() { S -o json status | json "d['intent_revision']"; }
# api_writes: the coordinator's count of committed API writes (a dry run commits none; the
# etcd revision itself also moves with agents' status reports, so it cannot tell).
api_writes() {
    X mgmt curl -s -m 3 http://172.31.255.3:9100/metrics | awk '$1 == "sf_coordinator_api_writes_total" {print $2}'
}
# Debian's python3 (deps.sh installs python3-yaml through ansible-core, and python3-grpcio).
PY=/usr/bin/python3
# sfctl_to URL ARGS...: sfctl in the mgmt namespace against URL only, with the lab's CA and
# admin token.
sfctl_to() {
    local url=$1
    shift
    X mgmt "$SFCTL" --endpoint "$url" --ca "$STATE/pki/ca.pem" --token-file "$STATE/api-token" "$@"
}
# sfctl_plain ARGS...: sfctl in the mgmt namespace with nothing but ARGS (no lab flags).
sfctl_plain() { X mgmt env -u SF_ENDPOINT -u SF_CA -u SF_TOKEN_FILE "$SFCTL" "$@"; }

section "lab up (prefix $LAB_PREFIX)"
t0=$SECONDS
if ! L up --no-build; then
    fail "deploy/lab.sh up"
    finish
    exit 1
fi
pass "lab up in $((SECONDS - t0)) s"

section "1. output formats"
check_eq "table: header line first" "NAME  DESCRIPTION" "$(S tenant list | head -1)"
check_eq "--no-headers: only the rows" "demo  -" "$(S --no-headers tenant list)"
check_eq "-o json: an array of tenants" "['demo']" "$(S -o json tenant list | json "[t['name'] for t in d]")"
check_eq "-o yaml: the same documents" "['demo']" \
    "$(S -o yaml tenant list | "$PY" -c 'import sys, yaml; print([t["name"] for t in yaml.safe_load(sys.stdin)])')"
check_eq "-o name: KIND/NAME lines" "vpc/blue vpc/red" "$(S -o name vpc list --tenant demo | sort | xargs)"
check_eq "ls is list" "$(S -o name node list | sort | xargs)" "$(S -o name node ls | sort | xargs)"
check_eq "status -o name lists every node" "$(S -o name node list | sort | xargs)" "$(S -o name status | sort | xargs)"
check "status --no-headers: one row per node, no header" \
    bash -c "'$REPO/deploy/lab.sh' sfctl --no-headers status | grep -q '^hv1 ' && ! '$REPO/deploy/lab.sh' sfctl --no-headers status | grep -q NODE"
check_eq "a write's confirmation: -o name" "pool/spare" "$(S -o name pool create spare --cidr 198.51.100.0/28)"
check_eq "a write's confirmation: -o yaml has the revision" "True" \
    "$(S -o yaml pool delete spare | "$PY" -c 'import sys, yaml; print(yaml.safe_load(sys.stdin)["revision"] > 0)')"

section "2. get for every kind"
check "create route, SNAT rule and an ACL list to read back" bash -c "
    '$REPO/deploy/lab.sh' sfctl route create r1 --tenant demo --vpc blue --prefix 192.168.50.0/24 --nexthop 10.10.1.11 >/dev/null &&
    '$REPO/deploy/lab.sh' sfctl nat snat out --tenant demo --vpc blue --public-ip 203.0.113.40 >/dev/null &&
    '$REPO/deploy/lab.sh' sfctl acl apply open --tenant demo --vpc red --default allow >/dev/null"
getj() { S -o json "$@"; }
check_eq "tenant get demo" "demo" "$(getj tenant get demo | json "d['name']")"
check_eq "vpc get blue: cidr" "10.10.0.0/16" "$(getj vpc get blue --tenant demo | json "d['cidr']")"
check_eq "network get web: cidr and a pool VNI" "10.10.1.0/24 True" \
    "$(getj network get web --tenant demo --vpc blue | json "d['cidr'], 1000000 <= d['vni'] <= 2000000" | tr -d "(),'")"
check_eq "port get blue-web-1: node and IP" "hv1 10.10.1.11" "$(getj port get blue-web-1 --tenant demo | json "d['node'] + ' ' + d['ip']")"
check_eq "node get hv2: role" "hypervisor" "$(getj node get hv2 | json "d['role']")"
check_eq "pool get public: cidr" "203.0.113.0/24" "$(getj pool get public | json "d['cidr']")"
check_eq "nat get out: kind and public IP" "snat 203.0.113.40" "$(getj nat get out --tenant demo --vpc blue | json "d['kind'] + ' ' + d['public_ip']")"
check_eq "route get r1: prefix and next hop" "192.168.50.0/24 10.10.1.11" "$(getj route get r1 --tenant demo --vpc blue | json "d['prefix'] + ' ' + d['nexthop']")"
check_eq "acl get open: default" "allow" "$(getj acl get open --tenant demo --vpc red | json "d['default_action']")"
check_eq "lb list and dc list answer (empty)" "[] []" "$(getj lb list | tr -d ' \n') $(getj dc list | tr -d ' \n')"
check_eq "gateway list -o name names the VPCs" "vpc/blue vpc/red" "$(S -o name gateway list | sort | xargs)"

section "3. exit codes"
check_eq "not found: 3" 3 "$(rc S vpc get nope --tenant demo)"
check "  and the message names it" grep -q '"nope"' "$STATE/rc.out"
check_eq "dc get of a missing Direct Connect: 3" 3 "$(rc S dc get nope --tenant demo --vpc blue)"
check_eq "refused (invalid CIDR): 1" 1 "$(rc S vpc create bad --tenant demo --cidr 10.0.0.0/33)"
check_eq "refused (exists): 1" 1 "$(rc S tenant create demo)"
check_eq "unreachable: 2" 2 "$(rc sfctl_to https://172.31.255.3:1 --timeout 2 tenant list)"
check_eq "usage: 64" 64 "$(rc S tenant frobnicate)"
check_eq "--help: 0" 0 "$(rc "$SFCTL" --help)"
check "--help documents the exit codes" grep -q "64  usage error" "$STATE/rc.out"

section "4. --dry-run changes nothing"
W0=$(api_writes)
check "the coordinator counts API writes ($W0)" test -n "$W0"
R0=$(revision)
out=$(S --dry-run tenant create dryrun 2>&1)
check "dry-run create says so: $out" grep -q "^dry run: tenant dryrun would be created" <<<"$out"
check_eq "dry-run JSON: dry_run true, validated at the current revision" "True True" \
    "$(S -o json --dry-run tenant create dryrun | json "d['dry_run'], d['revision'] >= $R0" | tr -d "(),")"
check_eq "the tenant does not exist" 3 "$(rc S tenant get dryrun)"
check_eq "dry-run delete of route r1: validated" 0 "$(rc S --dry-run route delete r1 --tenant demo --vpc blue)"
check "  and r1 is still there" S route get r1 --tenant demo --vpc blue
check_eq "dry-run delete of VPC red (it has a network): refused, exit 1" 1 "$(rc S --dry-run vpc delete red --tenant demo)"
DRY_MSG=$(cat "$STATE/rc.out")
check_eq "  with the real delete's message" "$DRY_MSG" "$(S vpc delete red --tenant demo 2>&1)"
check "  and red is still there" S vpc get red --tenant demo
check_eq "an invalid dry run is refused like the write (exit 1)" 1 "$(rc S --dry-run vpc create bad --tenant demo --cidr 10.0.0.0/33)"
check "  with the write's message" grep -q "vpc.cidr" "$STATE/rc.out"
check_eq "a dry run of a missing object: 3" 3 "$(rc S --dry-run vpc delete nope --tenant demo)"
check_eq "a dry-run network create shows the VNI it would get, nothing more" 3 \
    "$(S --dry-run network create dry --tenant demo --vpc blue --cidr 10.10.9.0/24 >/dev/null; rc S network get dry --tenant demo --vpc blue)"
check_eq "the coordinator committed no API write during the dry runs" "$W0" "$(api_writes)"
check "blue-web-1 pings blue-web-2 before the ACL" X blue-web-1 ping -c 2 -W 1 10.10.1.12
ACL=(acl apply noicmp --tenant demo --vpc blue --tier web --default deny
    --rule "10 ingress deny icmp any 10.10.1.11/32" --rule "20 ingress allow all any 0.0.0.0/0"
    --rule "30 egress allow all any 0.0.0.0/0")
check "dry run of an ACL denying blue-web-1's ICMP" S --dry-run "${ACL[@]}"
sleep 2
check "blue-web-1 still pings blue-web-2 (real packets, nothing applied)" X blue-web-1 ping -c 3 -W 1 10.10.1.12
check_eq "still no API write" "$W0" "$(api_writes)"
check_eq "no ACL list was written" 3 "$(rc S acl get noicmp --tenant demo --vpc blue)"

section "5. --wait returns once the live nodes applied the write"
t0=$(date +%s.%N)
S --wait "${ACL[@]}" >"$STATE/wait.out" 2>"$STATE/wait.err"
check_eq "acl apply --wait: exit 0" 0 "$?"
printf '  note: acl apply --wait took %s s\n' "$(python3 -c "print(f'{$(date +%s.%N) - $t0:.2f}')")"
check "it says every live node applied it" grep -q "^applied by all [0-9]* live nodes" "$STATE/wait.err"
check_not "blue-web-1 cannot ping blue-web-2 at once (no polling after --wait)" X blue-web-1 ping -c 2 -W 1 10.10.1.12
check_eq "status right after: every live node in sync" "True" \
    "$(S -o json status | json "all(n['in_sync'] for n in d['nodes'] if n['lease'] == 'up')")"
check "acl delete --wait" S --wait acl delete noicmp --tenant demo --vpc blue
check "blue-web-1 pings blue-web-2 at once" X blue-web-1 ping -c 2 -W 1 10.10.1.12
FROZEN=$(cat "$STATE/pids/hv2.pid")
check "hv2's agent (pid $FROZEN) is the agent process" grep -q hypervisor-agent "/proc/$FROZEN/cmdline"
kill -STOP "$FROZEN"
t0=$SECONDS
check_eq "with hv2's agent frozen, --wait --wait-timeout 2 gives up: exit 4" 4 \
    "$(rc S --wait --wait-timeout 2 port create waitp --tenant demo --vpc blue --network web --node hv2 --ip 10.10.1.77)"
check "  and names hv2" grep -q "not applied by .*hv2" "$STATE/rc.out"
check "  after about 2 s ($((SECONDS - t0)) s)" test $((SECONDS - t0)) -le 5
kill -CONT "$FROZEN"
FROZEN=
check "the write itself was made (the port exists)" S port get waitp --tenant demo
check "with hv2 thawed, port delete --wait completes" S --wait --wait-timeout 30 port delete waitp --tenant demo

section "6. status --watch"
# timeout ends it (a kill of this background job would reach only its shell).
X mgmt timeout 7 "$SFCTL" --endpoint "$COORD" --ca "$STATE/pki/ca.pem" --token-file "$STATE/api-token" \
    -o json status --watch --interval 1 >"$STATE/watch.out" 2>&1 &
WATCH=$!
sleep 3
S tenant create watched >/dev/null
wait "$WATCH"
watch_docs() {
    python3 -c '
import json, sys
text, dec, i, revs = open(sys.argv[1]).read(), json.JSONDecoder(), 0, []
while i < len(text):
    if text[i].isspace():
        i += 1
        continue
    d, i = dec.raw_decode(text, i)
    revs.append(d["intent_revision"])
print(len(revs) >= 2 and revs[-1] > revs[0])' "$STATE/watch.out"
}
check_eq "the watch printed the status again after a write (later revision)" "True" "$(watch_docs)"

section "7. completion and config contexts"
check "bash completion loads and completes sfctl" \
    bash -c "source <('$SFCTL' completion bash) && complete -p sfctl | grep -q _sfctl"
check "zsh and fish scripts name the subcommands" \
    bash -c "'$SFCTL' completion zsh | grep -q 'tenant' && '$SFCTL' completion fish | grep -q 'dry-run'"
CFG=$STATE/sfctl-config.toml
cat >"$CFG" <<EOF
current-context = "broken"
[contexts.broken]
endpoints = ["https://172.31.255.3:1"]
ca = "$STATE/pki/ca.pem"
token-file = "$STATE/api-token"
[contexts.lab]
endpoints = ["https://172.31.255.3:1", "$COORD"]
ca = "$STATE/pki/ca.pem"
token-file = "$STATE/api-token"
EOF
check_eq "the current context (an unreachable endpoint) is used: exit 2" 2 "$(rc sfctl_plain --config "$CFG" --timeout 2 tenant list)"
check_eq "--context lab fails over to the live replica" "demo" \
    "$(sfctl_plain --config "$CFG" --context lab --timeout 2 -o name tenant get demo | cut -d/ -f2)"
check_eq "config use-context lab" "switched to context lab" "$(sfctl_plain --config "$CFG" config use-context lab)"
check_eq "config current-context" "lab" "$(sfctl_plain --config "$CFG" config current-context)"
check "config get-contexts marks it" bash -c "'$SFCTL' --config '$CFG' config get-contexts | grep -q '^\*  *lab '"
check_eq "now without --context" "tenant/demo" "$(sfctl_plain --config "$CFG" --timeout 2 -o name tenant get demo)"
check_eq "a context the file lacks: exit 3" 3 "$(rc sfctl_plain --config "$CFG" --context nope tenant list)"

section "8. gRPC health and reflection"
grpc_probe() {
    X mgmt "$PY" - "$1" "$STATE/pki/ca.pem" <<'EOF'
import sys, grpc
target, ca = sys.argv[1], open(sys.argv[2], "rb").read()
ch = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=ca),
                         options=[("grpc.ssl_target_name_override", "coordinator")])
raw = dict(request_serializer=lambda b: b, response_deserializer=lambda b: b)
check = ch.unary_unary("/grpc.health.v1.Health/Check", **raw)
def status(svc):
    # HealthCheckRequest{service} -> HealthCheckResponse{status}: 1 SERVING, 2 NOT_SERVING.
    req = b"" if not svc else b"\x0a" + bytes([len(svc)]) + svc.encode()
    resp = check(req, timeout=5)
    return resp[1] if len(resp) == 2 and resp[0] == 8 else None
refl = ch.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", **raw)
# ServerReflectionRequest{list_services: ""} (field 7), then {file_containing_symbol} (4).
sym = b"stackfabric.v1.FabricApi"
answers = list(refl(iter([b"\x3a\x00", b"\x22" + bytes([len(sym)]) + sym]), timeout=5))
both = b"".join(answers)
print(status(""), status("stackfabric.v1.FabricApi"), status("stackfabric.v1.AgentSync"),
      b"stackfabric.v1.FabricApi" in answers[0], b"grpc.health.v1.Health" in answers[0],
      b"GetTenant" in both)
EOF
}
check_eq "Health SERVING (server, FabricApi, AgentSync); reflection lists FabricApi and Health and describes GetTenant" \
    "1 1 1 True True True" "$(grpc_probe 172.31.255.3:7443 2>&1 | tail -1)"

section "9. update in place"
check "tenant update" S tenant update demo --description "the demo tenant"
check_eq "its description is read back" "the demo tenant" "$(S -o json tenant get demo | json "d['description']")"
check_eq "updating a missing tenant: not found (3)" 3 "$(rc S tenant update nobody --description x)"
lb_get() { S -o json lb get upd --tenant demo --vpc blue; }
# who VIP: the VM that answers an HTTP request from the internet host.
who() { X internet curl -s -m 2 "http://$1/"; }
check "lb create upd 203.0.113.30:80 -> blue-web-1" S lb create upd --tenant demo --vpc blue \
    --vip 203.0.113.30 --port 80 --backend 10.10.1.11:80 --health none
check "the VIP answers from blue-web-1" wait_for 30 bash -c "[ \"\$('$REPO/deploy/lab.sh' exec internet curl -s -m 2 http://203.0.113.30/)\" = blue-web-1 ]"
check "the gateway reports its Maglev digest" wait_for 15 bash -c \
    "'$REPO/deploy/lab.sh' sfctl -o json lb get upd --tenant demo --vpc blue | grep -q '\"table_digest\": \"[0-9a-f]'"
digest1=$(lb_get | json "d['table_digest']")
check_eq "a dry-run update writes nothing" "['10.10.1.11']" \
    "$(S --dry-run lb update upd --tenant demo --vpc blue --backend 10.10.1.12:80 >/dev/null && lb_get | json "[b['ip'] for b in d['backends']]")"
check_eq "an update with a backend outside every tier is refused (1)" 1 \
    "$(rc S lb update upd --tenant demo --vpc blue --backend 10.99.0.1:80)"
check "with the create's message" grep -q "is not a host address of any tier" "$STATE/rc.out"
check_eq "and changes nothing" "['10.10.1.11']" "$(lb_get | json "[b['ip'] for b in d['backends']]")"
check_eq "updating a missing load balancer: not found (3)" 3 \
    "$(rc S lb update nope --tenant demo --vpc blue --backend 10.10.1.12:80)"
check "lb update upd --backend blue-web-2" S lb update upd --tenant demo --vpc blue --backend 10.10.1.12:80
check_eq "the backends are read back" "['10.10.1.12']" "$(lb_get | json "[b['ip'] for b in d['backends']]")"
check_eq "the VIP, protocol and port are kept" "203.0.113.30 tcp 80" "$(lb_get | json "f\"{d['vip']} {d['protocol']} {d['port']}\"")"
check "new connections to the VIP reach blue-web-2" wait_for 30 bash -c "[ \"\$('$REPO/deploy/lab.sh' exec internet curl -s -m 2 http://203.0.113.30/)\" = blue-web-2 ]"
check_eq "ten more go to blue-web-2 only" "blue-web-2" \
    "$(for _ in $(seq 10); do who 203.0.113.30; echo; done | sort -u | xargs)"
check "the gateway's Maglev digest changed" wait_for 15 bash -c \
    "d=\$('$REPO/deploy/lab.sh' sfctl -o json lb get upd --tenant demo --vpc blue | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"table_digest\"])'); [ -n \"\$d\" ] && [ \"\$d\" != '$digest1' ]"
check "lb delete upd" S lb delete upd --tenant demo --vpc blue

section "10. NAT rules and routes update in place"
route_get() { S -o json route get r1 --tenant demo --vpc blue | json "d['prefix'] + ' ' + d['nexthop']"; }
check "route update r1 --nexthop blue-web-2" S route update r1 --tenant demo --vpc blue --nexthop 10.10.1.12
check_eq "the new next hop is read back, the prefix kept" "192.168.50.0/24 10.10.1.12" "$(route_get)"
check_eq "a next hop outside every tier is refused (1)" 1 \
    "$(rc S route update r1 --tenant demo --vpc blue --nexthop 10.99.0.1)"
check "with the create's message" grep -q "is not a host address of any tier" "$STATE/rc.out"
check_eq "and changes nothing" "192.168.50.0/24 10.10.1.12" "$(route_get)"
check_eq "updating a missing route: not found (3)" 3 \
    "$(rc S route update nope --tenant demo --vpc blue --nexthop 10.10.1.12)"
nat_get() { S -o json nat get pf --tenant demo --vpc blue | json "f\"{d['public_ip']}:{d['public_port']} {d['private_ip']}:{d['private_port']}\""; }
check "nat forward pf 203.0.113.40:8080 -> blue-web-1:80" S nat forward pf --tenant demo --vpc blue \
    --public-ip 203.0.113.40 --public-port 8080 --private-ip 10.10.1.11 --private-port 80
check "the internet host reaches blue-web-1 through it" wait_for 30 bash -c \
    "[ \"\$('$REPO/deploy/lab.sh' exec internet curl -s -m 2 http://203.0.113.40:8080/)\" = blue-web-1 ]"
check_eq "an update to a private address outside every tier is refused (1)" 1 \
    "$(rc S nat update pf --tenant demo --vpc blue --private-ip 10.99.0.1)"
check "with the create's message" grep -q "is not a host address of any tier" "$STATE/rc.out"
check_eq "a dry-run update writes nothing" "203.0.113.40:8080 10.10.1.11:80" \
    "$(S --dry-run nat update pf --tenant demo --vpc blue --private-ip 10.10.1.12 >/dev/null && nat_get)"
check "nat update pf --private-ip blue-web-2" S nat update pf --tenant demo --vpc blue --private-ip 10.10.1.12
check_eq "the new target is read back, the public side kept" "203.0.113.40:8080 10.10.1.12:80" "$(nat_get)"
check "the same public port now reaches blue-web-2" wait_for 30 bash -c \
    "[ \"\$('$REPO/deploy/lab.sh' exec internet curl -s -m 2 http://203.0.113.40:8080/)\" = blue-web-2 ]"
check_eq "an option the kind lacks is refused (SNAT has no private address)" 1 \
    "$(rc S nat update out --tenant demo --vpc blue --private-ip 10.10.1.12)"
check_eq "updating a missing NAT rule: not found (3)" 3 \
    "$(rc S nat update nope --tenant demo --vpc blue --public-ip 203.0.113.41)"
check "nat delete pf" S nat delete pf --tenant demo --vpc blue
section "11. IPv6 dual-stack intent"
check "vpc create green with two IPv6 ranges" S vpc create green --tenant demo --cidr 10.30.0.0/16 \
    --ipv6-range 2001:db8:300::/56 --ipv6-range fd00:30::/48
check_eq "vpc get green: its IPv6 ranges" "['2001:db8:300::/56', 'fd00:30::/48']" \
    "$(getj vpc get green --tenant demo | json "d['ipv6_ranges']")"
# (The demo VPCs are dual-stack now: an IPv4-only one of its own.)
check "vpc create plain4 (IPv4 only)" S vpc create plain4 --tenant demo --cidr 10.32.0.0/16
check_eq "an IPv4-only VPC's JSON has no IPv6 key" "False" "$(getj vpc get plain4 --tenant demo | json "'ipv6_ranges' in d")"
check "vpc delete plain4" S vpc delete plain4 --tenant demo
check_eq "a range longer than /64 is refused (1)" 1 \
    "$(rc S vpc create bad6 --tenant demo --cidr 10.31.0.0/16 --ipv6-range 2001:db8:301::/96)"
check "  naming the field" grep -q "vpc.ipv6_ranges\[0\]" "$STATE/rc.out"
check "network create gweb with a /64" S network create gweb --tenant demo --vpc green \
    --cidr 10.30.1.0/24 --ipv6-prefix 2001:db8:300:1::/64
check_eq "network get gweb: its /64" "2001:db8:300:1::/64" \
    "$(getj network get gweb --tenant demo --vpc green | json "d['ipv6_prefix']")"
check_eq "a /64 outside the VPC's ranges is refused (1)" 1 \
    "$(rc S network create gdb --tenant demo --vpc green --cidr 10.30.2.0/24 --ipv6-prefix 2001:db8:999:2::/64)"
check "  naming the field" grep -q "network.ipv6_prefix.*outside the VPC's IPv6 ranges" "$STATE/rc.out"
check_eq "an overlapping /64 is refused (1)" 1 \
    "$(rc S network create gdb --tenant demo --vpc green --cidr 10.30.2.0/24 --ipv6-prefix 2001:db8:300:1::/64)"
check "  naming the field" grep -q "network.ipv6_prefix.*overlaps" "$STATE/rc.out"
check_eq "the router's ::1 is refused as a port address (1)" 1 \
    "$(rc S port create g1 --tenant demo --vpc green --network gweb --node hv3 --ip 10.30.1.11 --ipv6 2001:db8:300:1::1)"
check "  naming the field" grep -q "port.ipv6" "$STATE/rc.out"
check "port create g1, dual-stack, on hv3" S port create g1 --tenant demo --vpc green --network gweb \
    --node hv3 --ip 10.30.1.11 --ipv6 2001:db8:300:1::11
check_eq "port get g1: both addresses" "10.30.1.11 2001:db8:300:1::11" \
    "$(getj port get g1 --tenant demo | json "d['ip'] + ' ' + d['ipv6']")"
check_eq "SNAT to an IPv6 address is refused (1)" 1 \
    "$(rc S nat snat out6 --tenant demo --vpc green --public-ip 2001:db8::40)"
check "  naming the field and why" grep -q "nat.public_ip.*IPv4 only" "$STATE/rc.out"
check "every live node applies the dual-stack port (agents ignore the IPv6 fields)" wait_for 20 bash -c \
    "'$REPO/deploy/lab.sh' sfctl -o json status | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(not all(n[\"in_sync\"] and not n[\"errors\"] for n in d[\"nodes\"] if n[\"lease\"] == \"up\"))'"
check "blue-web-1 still pings blue-web-2" X blue-web-1 ping -c 2 -W 1 10.10.1.12
check "delete the dual-stack port, network and VPC" bash -c "
    '$REPO/deploy/lab.sh' sfctl port delete g1 --tenant demo >/dev/null &&
    '$REPO/deploy/lab.sh' sfctl network delete gweb --tenant demo --vpc green >/dev/null &&
    '$REPO/deploy/lab.sh' sfctl vpc delete green --tenant demo >/dev/null"

lab_finish
