#!/usr/bin/env bash
# deploy/lib/failover-bench.sh - SoftGate failover outage next to a keepalived VRRP pair,
# measured the same way in the same run (called by deploy/bench.sh; needs root).
#
# Outage = the longest gap between echo replies of `ping -D -i 0.02` (a 20 ms probe) to the
# service address while the serving node fails.
#   keepalived: two namespaces running Debian's keepalived (VRRP, advert_int 1 s: what
#     CloudStack's redundant VR and Neutron's L3 HA use) holding a VIP on one segment; the
#     master's link goes down.
#   StackFabric: the lab (deploy/lab.sh up); an Elastic IP of the demo tenant; the gateway
#     serving it dies (agent killed, both fabric links down) or freezes (FRR and agent
#     SIGSTOPped, links up: only BFD can tell), with 1 and with 200 VPCs on that gateway.
# Prints `figure,value,baseline,ratio` lines. SF_BENCH_FAILOVER_VPCS (default 200) sets the
# second size; SF_BENCH_FAILOVER_SMOKE=1 runs 1 VPC and 5 VPCs only.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO" || exit 1
[ "$(id -u)" = 0 ] || { echo "failover benchmark needs root (network namespaces)"; exit 1; }
export LAB_PREFIX=${LAB_PREFIX:-sfbf$$-}
P=$LAB_PREFIX
STATE=/tmp/sf-lab.${P%-}
MANY=${SF_BENCH_FAILOVER_VPCS:-200}
[ "${SF_BENCH_FAILOVER_SMOKE:-0}" = 1 ] && MANY=5
EIP=203.0.113.12 # blue's static NAT
KA_DIR=$(mktemp -d /tmp/sf-bench-ka.XXXXXX)
# The keepalived pair's namespaces have their own prefix: lab.sh takes any namespace with the
# lab's prefix for a running lab.
KP=sfka$$-
KA_NS=("${KP}kc" "${KP}ka" "${KP}kb")

log() { printf '[failover-bench] %s\n' "$*" >&2; }
cleanup() {
    local ns pf
    for pf in "$KA_DIR"/*.pid; do
        [ -e "$pf" ] || continue
        kill "$(cat "$pf")" 2>/dev/null
    done
    sleep 0.5
    for ns in "${KA_NS[@]}"; do ip netns del "$ns" 2>/dev/null; done
    rm -rf "$KA_DIR"
    deploy/lab.sh down >/dev/null 2>&1 || true
}
trap cleanup EXIT

# gap_ms LOG - the longest gap between echo replies in a `ping -D` log.
gap_ms() {
    python3 -c '
import re, sys
t = [float(m.group(1)) for m in map(re.compile(r"^\[(\d+\.\d+)\].*bytes from").match, open(sys.argv[1])) if m]
print(int(max((b - a for a, b in zip(t, t[1:])), default=0) * 1000) if len(t) > 1 else -1)' "$1"
}
figure() { # NAME VALUE BASELINE
    python3 -c 'import sys; n,v,b=sys.argv[1:]; print(f"{n},{v},{b},{float(v)/float(b):.2f}" if float(b) > 0 else f"{n},{v},{b},")' "$@"
}

# --- keepalived -------------------------------------------------------------------------
keepalived_outage() {
    command -v keepalived >/dev/null ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends keepalived >/dev/null ||
        { log "keepalived not installable"; echo -1; return; }
    local ns n prio
    for ns in "${KA_NS[@]}"; do ip netns add "$ns" && ip -n "$ns" link set lo up; done
    ip -n "${KP}kc" link add br0 type bridge && ip -n "${KP}kc" link set br0 up
    ip -n "${KP}kc" addr add 10.77.0.1/24 dev br0
    for n in a b; do
        ip -n "${KP}kc" link add "k$n" type veth peer name eth0 netns "${KP}k$n"
        ip -n "${KP}kc" link set "k$n" master br0 up
        ip -n "${KP}k$n" link set eth0 up
        ip -n "${KP}k$n" addr add "10.77.0.1$([ $n = a ] && echo 1 || echo 2)/24" dev eth0
        prio=$([ $n = a ] && echo 150 || echo 100)
        cat >"$KA_DIR/$n.conf" <<EOF
global_defs {
    router_id k$n
}
vrrp_instance V {
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority $prio
    advert_int 1
    virtual_ipaddress {
        10.77.0.100/24
    }
}
EOF
        ip netns exec "${KP}k$n" keepalived -n -l -P -f "$KA_DIR/$n.conf" \
            -p "$KA_DIR/$n.main.pid" -r "$KA_DIR/$n.vrrp.pid" >"$KA_DIR/$n.log" 2>&1 &
        echo $! >"$KA_DIR/$n.pid"
    done
    local i
    for i in $(seq 100); do
        ip -n "${KP}ka" -br addr show eth0 | grep -q 10.77.0.100 && break
        sleep 0.2
    done
    ip netns exec "${KP}kc" ping -c 3 -W 1 10.77.0.100 >/dev/null || { log "VIP not answering"; echo -1; return; }
    ip netns exec "${KP}kc" ping -D -n -i 0.02 -w 12 10.77.0.100 >"$KA_DIR/ping.log" 2>&1 &
    local ping=$!
    sleep 2
    ip -n "${KP}ka" link set eth0 down
    wait "$ping"
    gap_ms "$KA_DIR/ping.log"
}

# --- StackFabric --------------------------------------------------------------------------
S() { deploy/lab.sh sfctl "$@"; }
X() { deploy/lab.sh exec "$@"; }
announcers() { # ADDR - gateways announcing ADDR/32 at leaf1
    vtysh --vty_socket "$STATE/frr/leaf1" -c "show ip bgp $1/32 json" 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(" ".join(sorted({(p.get("peer", {}).get("hostname") or "") for p in d.get("paths", [])} - {""})))'
}
anchors_from() { # NODE - anchor routes leaf1 has from NODE
    vtysh --vty_socket "$STATE/frr/leaf1" -c "show ip bgp json" 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin).get("routes", {})
origin = lambda p: any(n.get("hostname") == sys.argv[1] for n in p.get("nexthops", [])) and " " not in p.get("path", "").strip()
print(sum(1 for k, ps in d.items() if k.startswith("198.18.") and any(origin(p) for p in ps)))' "$1"
}
wait_until() { # SECONDS CMD...
    local end=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do [ $SECONDS -ge $end ] && return 1; sleep 0.5; done
}
serving() { announcers "$EIP"; }
other() { if [ "$1" = gw1 ]; then echo gw2; else echo gw1; fi; }
one_serving() { local a; a=$(serving); [ -n "$a" ] && [ "$a" = "${a%% *}" ]; }
namespaces_on() { ip netns list | grep -c "^${P}$1-vpc"; }

# sf_outage MODE TAG - kills (death) or freezes (freeze) the gateway serving blue; prints the
# outage (ms) and restores the node (it then stands by: no failback).
sf_outage() {
    local mode=$1 tag=$2 a b ms moved
    wait_until 60 one_serving || { log "$tag: no single announcer"; echo -1; return; }
    a=$(serving); b=$(other "$a")
    local n_a
    n_a=$(anchors_from "$a")
    X internet bash -c "ping -D -n -i 0.02 -w 10 $EIP" >"$STATE/ping-$tag.log" 2>&1 &
    local ping=$!
    sleep 2
    case $mode in
        death)
            deploy/lab.sh agent-kill "$a" >/dev/null
            X "$a" ip link set leaf1 down
            X "$a" ip link set leaf2 down
            ;;
        freeze)
            # shellcheck disable=SC2046
            kill -STOP $(cat "$STATE/frr/$a"/{zebra,bgpd,bfdd,staticd}.pid) \
                "$(cat "$STATE/pids/$a.pid")" "$(cat "$STATE/agents/$a/fence.pid")"
            ;;
    esac
    wait "$ping"
    ms=$(gap_ms "$STATE/ping-$tag.log")
    moved=$(grep -c "VPC router ACTIVE" "$STATE/logs/$b.log")
    log "$tag: $a ($n_a anchors) -> $b: Elastic IP outage $ms ms; $b's activations so far: $moved"
    grep "VPC router ACTIVE" "$STATE/logs/$b.log" | awk '{print substr($1, 12, 12)}' | uniq -c | tail -3 >&2
    case $mode in
        death)
            X "$a" ip link set leaf1 up
            X "$a" ip link set leaf2 up
            deploy/lab.sh agent-start "$a" >/dev/null
            ;;
        freeze)
            # shellcheck disable=SC2046
            kill -CONT $(cat "$STATE/frr/$a"/{zebra,bgpd,bfdd,staticd}.pid) \
                "$(cat "$STATE/pids/$a.pid")" "$(cat "$STATE/agents/$a/fence.pid")"
            ;;
    esac
    sleep 8 # the node returns and settles (it stands by)
    echo "$ms"
}

# many_vpcs N - N-1 more VPCs (one tier each) placed on the gateway serving blue, standby on
# the other; waits until both hold all routers.
many_vpcs() {
    local n=$1 a b i
    a=$(serving); b=$(other "$a")
    S gateway drain "$b" >/dev/null
    S tenant create bench >/dev/null || { log "tenant create bench failed"; return 1; }
    for i in $(seq 2 "$n"); do
        if ! { S vpc create "b$i" --tenant bench --cidr "10.$((100 + i / 250)).$((i % 250)).0/24" &&
            S network create t --tenant bench --vpc "b$i" --cidr "10.$((100 + i / 250)).$((i % 250)).0/25"; } >/dev/null; then
            log "creating VPC b$i failed"
            return 1
        fi
    done
    S gateway undrain "$b" >/dev/null
    wait_until 600 test "$(namespaces_on "$b")" -ge "$n" || log "$b holds $(namespaces_on "$b") routers"
    wait_until 600 test "$(anchors_from "$a")" -ge "$n" || log "$a announces $(anchors_from "$a") anchors"
    sleep 5
    log "$n VPCs on $a (standby $b)"
}

log "keepalived VRRP pair (advert 1 s), master link down"
KA=$(keepalived_outage)
log "keepalived outage: $KA ms"
log "lab up"
deploy/lab.sh up >"$KA_DIR/up.log" 2>&1 || { log "lab up failed:"; tail -20 "$KA_DIR/up.log" >&2; exit 1; }
S nat static eip --tenant demo --vpc blue --public-ip "$EIP" --private-ip 10.10.1.11 >/dev/null ||
    { log "static NAT failed"; exit 1; }
D1=$(sf_outage death one-death)
F1=$(sf_outage freeze one-freeze)
many_vpcs "$MANY" || exit 1
DN=$(sf_outage death many-death)
FN=$(sf_outage freeze many-freeze)
echo "figure,value,baseline,ratio"
figure "failover outage ms, node death, 1 VPC (vs keepalived VRRP, master link down)" "$D1" "$KA"
figure "failover outage ms, node death, $MANY VPCs (vs keepalived)" "$DN" "$KA"
figure "failover outage ms, frozen node (BFD), 1 VPC (vs keepalived)" "$F1" "$KA"
figure "failover outage ms, frozen node (BFD), $MANY VPCs (vs keepalived)" "$FN" "$KA"
