#!/usr/bin/env bash
# acl-proof.sh - prove network ACLs (CloudStack semantics) with real packets:
# east-west on the hypervisors (sf-hypervisor-agent, nft `table bridge
# stackfabric`) and north-south on the VPC router (sf-gateway-agent, nft `table ip
# stackfabric` forward chain). Both agents run their `--apply-file` debug path
# inside their node's namespace (nsenter --net), never in the host namespace.
#
#   sudo LAB_PREFIX=sfa- deploy/lib/acl-proof.sh [--keep] [--bin DIR]
#
# DIR (default target/release) holds sf-hypervisor-agent and sf-gateway-agent.
#
# Topology (every namespace prefixed $LAB_PREFIX, default sfa-):
#   leaf1 AS 65101 EVPN transit; hv1 AS 65001 VTEP 10.255.1.1; hv2 AS 65002 VTEP
#   10.255.1.2; gw1 AS 65011 VTEP 10.255.2.1 (VPC 7 router); internet AS 65200
#   VPC 10.10.0.0/16: tier web VNI 1000001 10.10.1.0/24 (no ACL),
#                     tier db  VNI 1000002 10.10.2.0/24, ACL "db":
#     ingress  5 deny  tcp 5432 from 10.10.1.66/32
#              10 allow tcp 5432 from 10.10.1.0/24
#              20 allow tcp 80   from 0.0.0.0/0
#              30 allow tcp 5201 from 10.10.2.0/24   (throughput test)
#              default deny
#     egress   10 deny  tcp 8443 to 0.0.0.0/0, 20 allow all, default deny
#   web1 10.10.1.11 hv1   web66 10.10.1.66 hv1   db2 10.10.2.22 hv1
#   db1  10.10.2.21 hv2 (listens on 5432, 22, 80, 5201)
#   port forwards 203.0.113.11:8080 -> db1:80, 203.0.113.11:2222 -> db1:22
# Exit 0 only if every check passes; cleanup on any exit unless --keep.
# shellcheck disable=SC2317  # functions invoked indirectly (trap, check, netlab_wait)
set -u -o pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export LAB_PREFIX=${LAB_PREFIX:-sfa-}
# shellcheck source=netlab.sh source-path=SCRIPTDIR
. "$HERE/netlab.sh"

KEEP=0
BIN=$(realpath "$HERE/../../target/release")
while [ $# -gt 0 ]; do
    case "$1" in
        --keep) KEEP=1 ;;
        --bin) BIN=$(realpath "$2") || exit 2; shift ;;
        *) echo "usage: $0 [--keep] [--bin DIR]" >&2; exit 2 ;;
    esac
    shift
done
HV_AGENT=$BIN/sf-hypervisor-agent
GW_AGENT=$BIN/sf-gateway-agent
if ! [ -x "$HV_AGENT" ] || ! [ -x "$GW_AGENT" ]; then echo "agents not built in $BIN" >&2; exit 2; fi
P=$LAB_PREFIX
WEB=1000001
DB=1000002
VPC_ID=7
VPC_NS=${P}vpc-$VPC_ID
FAIL=0

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
log() { printf '[%6d ms] %s\n' $(( $(now_ms) - T0 )) "$*"; }
check() { # check DESCRIPTION CMD...
    local d=$1; shift
    if "$@"; then log "PASS: $d"; else log "FAIL: $d"; FAIL=1; fi
}
finish() {
    local rc=$?
    if [ "$KEEP" = 1 ]; then
        echo "--keep: lab left running; clean with: . $HERE/netlab.sh; netlab_cleanup $P"
    else
        netlab_cleanup "$P"
        sleep 0.5
        if netlab_check_clean "$P"; then echo "cleanup: no namespace/process/dir left"; else rc=1; fi
    fi
    exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

bgp_conf() { # bgp_conf HOST ASN ID NEIGHBORS TRANSIT(0/1)
    local host=$1 asn=$2 id=$3 nbrs=$4 transit=$5 n
    echo "frr defaults datacenter"
    echo "hostname $host"
    [ "$transit" = 1 ] && { echo "ip forwarding"; echo "ipv6 forwarding"; }
    echo "!"
    echo "router bgp $asn"
    echo " bgp router-id $id"
    echo " no bgp ebgp-requires-policy"
    echo " bgp bestpath as-path multipath-relax"
    echo " neighbor FABRIC peer-group"
    echo " neighbor FABRIC remote-as external"
    for n in $nbrs; do echo " neighbor $n interface peer-group FABRIC"; done
    echo " !"
    echo " address-family ipv4 unicast"
    echo "  network $id/32"
    echo " exit-address-family"
    echo " !"
    echo " address-family l2vpn evpn"
    echo "  neighbor FABRIC activate"
    echo " exit-address-family"
    echo "exit"
    echo "!"
}

internet_conf() {
    cat <<'EOF'
frr defaults datacenter
hostname internet
!
router bgp 65200
 bgp router-id 198.51.100.10
 no bgp ebgp-requires-policy
 neighbor leaf1 interface remote-as external
 !
 address-family ipv4 unicast
  network 198.51.100.10/32
  neighbor leaf1 default-originate
 exit-address-family
exit
!
EOF
}

# gen.py NODE VARIANT [N_EXTRA] > json - NodeDesired of a node.
#   VARIANT base: the ACL above; changed: + rule 40 allow udp 53 and rule 25 allow
#   icmp (the web->db stream stays allowed); big1 / big: N_EXTRA deny rules with one /
#   two prefixes each before rule 30 (10,000-rule test; allow 5201 is then the last
#   rule); small: 10 rules in total.
write_gen() {
    cat >"$NETLAB_DIR/gen.py" <<'EOF'
import json, sys
node, variant = sys.argv[1], sys.argv[2]
extra = int(sys.argv[3]) if len(sys.argv) > 3 else 0
def rule(n, action, proto, ports=None, cidrs=(), **kw):
    r = {"number": n, "action": action, "protocol": proto, "cidrs": list(cidrs)}
    if ports: r["ports"] = list(ports)
    r.update(kw)
    return r
ingress = [rule(5, "deny", "tcp", (5432, 5432), ["10.10.1.66/32"]),
           rule(10, "allow", "tcp", (5432, 5432), ["10.10.1.0/24"]),
           rule(20, "allow", "tcp", (80, 80), ["0.0.0.0/0"])]
if variant == "changed":
    ingress.append(rule(25, "allow", "icmp", icmp_type=8, cidrs=["10.10.0.0/16"]))
if variant in ("big", "big1"):
    for i in range(extra):
        cidrs = ["172.%d.%d.%d/32" % (16 + i // 65536 % 16, i // 256 % 256, i % 256)]
        if variant == "big":
            cidrs.append("192.0.%d.0/24" % (i % 256))
        ingress.append(rule(100 + i, "deny", "tcp", (1000 + i % 60000, 1000 + i % 60000), cidrs))
n30 = 100 + extra if variant in ("big", "big1") else 30
ingress.append(rule(n30, "allow", "tcp", (5201, 5201), ["10.10.2.0/24"]))
if variant == "changed":
    ingress.append(rule(40, "allow", "udp", (53, 53), ["10.10.0.0/16"]))
if variant == "small":
    for i in range(10 - len(ingress)):
        ingress.insert(3, rule(21 + i, "deny", "tcp", (1000 + i, 1000 + i), ["172.16.0.%d/32" % i]))
egress = [rule(10, "deny", "tcp", (8443, 8443), ["0.0.0.0/0"]), rule(20, "allow", "all")]
acl = {"list": "db", "default_action": "deny", "ingress": ingress, "egress": egress}
tiers = {1000001: ("web", "10.10.1", None), 1000002: ("db", "10.10.2", acl)}
def net(vni):
    name, p, a = tiers[vni]
    n = {"kind": "l2_network", "vni": vni, "tenant": "acme", "vpc": "prod", "network": name,
         "cidr": p + ".0/24", "gateway": p + ".1", "ports": []}
    if a: n["acl"] = a
    n["peer_tiers"] = [dict({"vni": v, "cidr": tiers[v][1] + ".0/24"},
                            **({"acl": tiers[v][2]} if tiers[v][2] else {}))
                       for v in tiers if v != vni]
    return n
objs = {"net/%d" % v: net(v) for v in tiers}
if node.startswith("hv"):
    i = int(node[2:])
    objs["underlay"] = {"kind": "underlay", "asn": 65000 + i, "router_id": "10.255.1.%d" % i,
                        "loopback": "10.255.1.%d" % i, "neighbors": ["leaf1"], "evpn": "vtep"}
else:
    for v in objs.values():
        v.pop("acl", None); v.pop("peer_tiers", None)
    objs["underlay"] = {"kind": "underlay", "asn": 65011, "router_id": "10.255.2.1",
                        "loopback": "10.255.2.1", "neighbors": ["leaf1"], "evpn": "vtep",
                        "announce": ["203.0.113.10/32", "203.0.113.11/32"]}
    rt = lambda v: dict({"name": tiers[v][0], "vni": v, "cidr": tiers[v][1] + ".0/24",
                         "gateway": tiers[v][1] + ".1"}, **({"acl": tiers[v][2]} if tiers[v][2] else {}))
    objs["vpc/7"] = {"kind": "vpc_router", "tenant": "acme", "vpc": "prod", "id": 7,
        "cidr": "10.10.0.0/16", "mac": "02:5f:00:00:00:07", "tiers": [rt(v) for v in tiers],
        "routes": [], "snat": "203.0.113.10",
        "port_forwards": [
            {"protocol": "tcp", "public_ip": "203.0.113.11", "public_port": 8080,
             "private_ip": "10.10.2.21", "private_port": 80},
            {"protocol": "tcp", "public_ip": "203.0.113.11", "public_port": 2222,
             "private_ip": "10.10.2.21", "private_port": 22}],
        "static_nats": []}
print(json.dumps({"node": node, "revision": 1, "objects": objs}))
EOF
}

# servers: TCP listeners that greet, count what they receive and report the count
write_py() {
    cat >"$NETLAB_DIR/srv.py" <<'EOF'
import socket, sys, threading
def handle(c):
    n = 0
    try:
        c.sendall(b"hello\n")
        while True:
            d = c.recv(262144)
            if not d:
                break
            n += len(d)
        c.sendall(b"%d\n" % n)
    except OSError:
        pass
    finally:
        c.close()
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(128)
    while True:
        c, _ = s.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()
for p in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(p),), daemon=True).start()
threading.Event().wait()
EOF
    # cli.py HOST PORT [SECONDS] -> "ok" | "timeout" | "refused" | error; with SECONDS,
    # streams for that long and prints "ok <bytes> <MB/s> <max gap ms>" if the server
    # counted every byte.
    cat >"$NETLAB_DIR/cli.py" <<'EOF'
import socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
secs = float(sys.argv[3]) if len(sys.argv) > 3 else 0
try:
    s = socket.create_connection((host, port), timeout=2)
    s.settimeout(5)
    f = s.makefile("rb")
    if f.readline() != b"hello\n":
        print("bad greeting"); sys.exit(1)
    sent, buf, gap, last = 0, b"x" * 65536, 0.0, time.time()
    end = time.time() + secs
    while time.time() < end:
        s.sendall(buf); sent += len(buf)
        now = time.time(); gap = max(gap, now - last); last = now
    s.shutdown(socket.SHUT_WR)
    got = int(f.readline() or b"-1")
    if secs:
        print("ok %d %.1f %d" % (sent, sent / secs / 1e6, gap * 1000) if got == sent else "lost %d of %d" % (sent - got, sent))
    else:
        print("ok")
except socket.timeout:
    print("timeout")
except ConnectionRefusedError:
    print("refused")
except OSError as e:
    print("error %s" % e)
EOF
}

hv_apply() { # hv_apply N VARIANT [EXTRA] - one agent pass on hvN; prints the outcome line
    python3 "$NETLAB_DIR/gen.py" "hv$1" "$2" "${3:-0}" >"$NETLAB_DIR/hv$1.json" || return 1
    nsenter --net="/run/netns/${P}hv$1" "$HV_AGENT" --apply-file "$NETLAB_DIR/hv$1.json" \
        --node "hv$1" --frr-dir "$NETLAB_DIR/${P}hv$1" >"$NETLAB_DIR/hv$1-$2.log" 2>&1
    local rc=$?
    grep -E '^(reconcile|error)' "$NETLAB_DIR/hv$1-$2.log"
    return "$rc"
}
gw_apply() { # gw_apply VARIANT
    python3 "$NETLAB_DIR/gen.py" gw1 "$1" >"$NETLAB_DIR/gw1.json" || return 1
    nsenter --net="/run/netns/${P}gw1" "$GW_AGENT" --apply-file "$NETLAB_DIR/gw1.json" \
        --node gw1 --frr-dir "$NETLAB_DIR/${P}gw1" --netns-prefix "${P}vpc-" >"$NETLAB_DIR/gw1-$1.log" 2>&1
    local rc=$?
    grep -E '^(reconcile|error)' "$NETLAB_DIR/gw1-$1.log"
    return "$rc"
}
cli() { ip netns exec "$P$1" "$PY" "$NETLAB_DIR/cli.py" "${@:2}"; }
expect_cli() { # expect_cli WANT VM HOST PORT
    local got; got=$(cli "$2" "$3" "$4"); [ "$got" = "$1" ] || { echo "    got '$got', want '$1'" >&2; return 1; }
}
# counter NS FAMILY CHAIN COMMENT -> packets of the rule with that comment
counter() {
    ip netns exec "$1" nft list chain "$2" stackfabric "$3" 2>/dev/null |
        grep -F "comment \"$4\"" | sed -n 's/.*counter packets \([0-9]*\).*/\1/p' | head -n1
}

netlab_cleanup "$P"
netlab_init "$P" || exit 1
T0=$(now_ms)
PY=$(python3 -c 'import sys; print(sys.executable)') || exit 1
write_gen; write_py

# ---------------------------------------------------------------- topology + FRR
for n in leaf1 hv1 hv2 gw1 internet; do netlab_ns_add "$P$n" || exit 1; done
netlab_addr_lo "${P}leaf1" 10.255.0.1/32 || exit 1
netlab_addr_lo "${P}internet" 198.51.100.10/32 || exit 1
for n in hv1 hv2 gw1 internet; do netlab_link "$P$n" leaf1 "${P}leaf1" "$n" || exit 1; done
bgp_conf leaf1 65101 10.255.0.1 "hv1 hv2 gw1 internet" 1 >"$NETLAB_DIR/leaf1.conf"
internet_conf >"$NETLAB_DIR/internet.conf"
for n in hv1 hv2 gw1; do printf 'frr defaults datacenter\nhostname %s\n!\n' "$n" >"$NETLAB_DIR/$n.conf"; done
for n in leaf1 hv1 hv2 gw1 internet; do
    netlab_frr_start "$P$n" "$NETLAB_DIR/$P$n" "$NETLAB_DIR/$n.conf" || exit 1
done
log "topology and FRR up"

# agents: hypervisors build brvx/vxlan + FRR, the gateway builds the VPC router
for h in 1 2; do check "hv$h agent pass (links, FRR, no VM ports yet)" hv_apply "$h" base; done
check "gw1 agent pass (VPC router with db ACL)" gw_apply base
# CloudStack plugs the VM NICs afterwards
netlab_vm_add "${P}web1" "${P}hv1" "brvx-$WEB" 10.10.1.11/24 02:00:00:01:00:11 >/dev/null || exit 1
netlab_vm_add "${P}web66" "${P}hv1" "brvx-$WEB" 10.10.1.66/24 02:00:00:01:00:66 >/dev/null || exit 1
netlab_vm_add "${P}db2" "${P}hv1" "brvx-$DB" 10.10.2.22/24 02:00:00:02:00:22 >/dev/null || exit 1
netlab_vm_add "${P}db1" "${P}hv2" "brvx-$DB" 10.10.2.21/24 02:00:00:02:00:21 >/dev/null || exit 1
ip -n "${P}web1" route add default via 10.10.1.1; ip -n "${P}web66" route add default via 10.10.1.1
ip -n "${P}db1" route add default via 10.10.2.1; ip -n "${P}db2" route add default via 10.10.2.1
for h in 1 2; do check "hv$h agent pass (VM ports dispatched)" hv_apply "$h" base; done
for h in 1 2; do
    out=$(hv_apply "$h" base)
    check "hv$h pass again leaves the ACL table alone ($out)" bash -c "[[ '$out' == *acl_change_ms=-* ]]"
done

ip netns exec "${P}db1" setsid "$PY" "$NETLAB_DIR/srv.py" 5432 22 80 5201 </dev/null >/dev/null 2>&1 &
ip netns exec "${P}internet" setsid "$PY" "$NETLAB_DIR/srv.py" 8443 443 </dev/null >/dev/null 2>&1 &
if netlab_wait 90 expect_cli ok web1 10.10.2.21 5432; then
    log "web1 -> db1:5432 first success (EVPN + router converged)"
else
    log "FAIL: web1 never reached db1:5432"; FAIL=1
fi
netlab_wait 60 expect_cli ok db1 198.51.100.10 443 || { log "FAIL: db1 never reached the internet"; FAIL=1; }

echo "===== hv1: nft list table bridge stackfabric (before the checks)"
ip netns exec "${P}hv1" nft list table bridge stackfabric

# ---------------------------------------------------------------- east-west
echo "===== east-west (hypervisors)"
d0=$(counter "${P}hv1" bridge "in_$DB" "ingress default")
check "web1 -> db1:5432 connects, greeting (reply) arrives" expect_cli ok web1 10.10.2.21 5432
check "web1 -> db1:22 is dropped by the ACL (timeout, not refused; db1 listens on 22)" expect_cli timeout web1 10.10.2.21 22
d1=$(counter "${P}hv1" bridge "in_$DB" "ingress default")
check "hv1 (source) counted the drop in in_$DB 'ingress default' ($d0 -> $d1)" [ "${d1:-0}" -gt "${d0:-0}" ]
r5=$(counter "${P}hv1" bridge "in_$DB" "ingress 5")
check "web66 -> db1:5432: deny #5 wins over allow #10" expect_cli timeout web66 10.10.2.21 5432
r5b=$(counter "${P}hv1" bridge "in_$DB" "ingress 5")
check "hv1 counted it on rule 5 ($r5 -> $r5b)" [ "${r5b:-0}" -gt "${r5:-0}" ]
check "db2 -> db1:80 (same tier, allowed by rule 20) connects" expect_cli ok db2 10.10.2.21 80

echo "----- same tier across hypervisors: db2 (hv1) -> db1 (hv2) :22"
cap=$NETLAB_DIR/hv2-vxlan.pcap
ip netns exec "${P}hv2" timeout 6 tcpdump -n -i "vxlan$DB" -w "$cap" 'tcp port 22' >/dev/null 2>&1 &
TD=$!
sleep 1
h1a=$(counter "${P}hv1" bridge "in_$DB" "ingress default")
h2a=$(counter "${P}hv2" bridge "in_$DB" "ingress default")
check "db2 -> db1:22 times out" expect_cli timeout db2 10.10.2.21 22
h1b=$(counter "${P}hv1" bridge "in_$DB" "ingress default")
h2b=$(counter "${P}hv2" bridge "in_$DB" "ingress default")
wait "$TD"
n22=$(tcpdump -n -r "$cap" 2>/dev/null | wc -l)
check "dropped at the source: hv1 drop counter $h1a -> $h1b" [ "${h1b:-0}" -gt "${h1a:-0}" ]
check "never reached hv2: hv2 drop counter unchanged ($h2a -> $h2b), $n22 packets to port 22 on hv2's vxlan$DB" \
    [ "${h2b:-x}" = "${h2a:-y}" ] && [ "$n22" = 0 ]
check "db1 -> internet:8443 dropped by db egress #10" expect_cli timeout db1 198.51.100.10 8443
check "db1 -> internet:443 allowed by db egress #20" expect_cli ok db1 198.51.100.10 443

# ---------------------------------------------------------------- change under a stream
echo "===== ACL change under a running, still-allowed TCP stream (web1 -> db1:5432, 8 s)"
ip netns exec "${P}web1" "$PY" "$NETLAB_DIR/cli.py" 10.10.2.21 5432 8 >"$NETLAB_DIR/stream.out" 2>&1 &
SP=$!
sleep 2
h0=$(ip netns exec "${P}hv1" nft -a list chain bridge stackfabric "in_$DB" | grep -c handle)
T_C=$(now_ms)
check "hv1 applies the changed ACL" hv_apply 1 changed
check "hv2 applies the changed ACL" hv_apply 2 changed
check "gw1 applies the changed ACL" gw_apply changed
log "ACL change applied on hv1, hv2, gw1 in $(( $(now_ms) - T_C )) ms (stream running)"
check "the change reached hv1 (rule 25 present)" bash -c "ip netns exec ${P}hv1 nft list chain bridge stackfabric in_$DB | grep -q 'ingress 25'"
check "flow state survived the reload (web1<->db1 :5432 entries in orig_$WEB on hv1, reply_$DB on hv2)" \
    bash -c "ip netns exec ${P}hv1 nft list set bridge stackfabric orig_$WEB | grep -Eq '10.10.1.11 . 10.10.2.21 . (tcp|6) . [0-9]+ . (5432|postgresql)' &&
             ip netns exec ${P}hv2 nft list set bridge stackfabric reply_$DB | grep -Eq '10.10.2.21 . 10.10.1.11 . (tcp|6) . (5432|postgresql) . [0-9]+'"
wait "$SP"
s=$(cat "$NETLAB_DIR/stream.out")
log "stream result: $s (ok BYTES MB/s MAX_SEND_GAP_MS); old in_$DB rules: $h0"
check "stream completed with every byte counted by db1" bash -c "[[ '$s' == ok* ]]"
check "ICMP now allowed by new rule 25: web1 pings db1" ip netns exec "${P}web1" ping -c1 -W2 10.10.2.21

# ---------------------------------------------------------------- north-south
echo "===== north-south (gateway, VPC router $VPC_NS)"
check "internet -> 203.0.113.11:8080 -> db1:80 (ingress #20 at the router)" expect_cli ok internet 203.0.113.11 8080
g0=$(counter "$VPC_NS" ip "acl_in_$DB" "ingress default")
v0=$(counter "${P}hv2" bridge "in_$DB" "ingress default")
check "internet -> 203.0.113.11:2222 -> db1:22 dropped by the router" expect_cli timeout internet 203.0.113.11 2222
g1=$(counter "$VPC_NS" ip "acl_in_$DB" "ingress default")
v1=$(counter "${P}hv2" bridge "in_$DB" "ingress default")
check "router counted it in acl_in_$DB 'ingress default' ($g0 -> $g1); hv2 never saw it ($v0 -> $v1)" \
    bash -c "[ ${g1:-0} -gt ${g0:-0} ] && [ '${v1:-x}' = '${v0:-y}' ]"
echo "----- $VPC_NS: forward chain"
ip netns exec "$VPC_NS" nft list chain ip stackfabric forward
ip netns exec "$VPC_NS" nft list chain ip stackfabric "acl_in_$DB"

# ---------------------------------------------------------------- scale
echo "===== scale: 10 vs 10,000 rules (db2 hv1 -> db1 hv2 :5201, allow is the LAST rule)"
blast() { ip netns exec "${P}db2" "$PY" "$NETLAB_DIR/cli.py" 10.10.2.21 5201 4; }
connect_rate() { # 200 sequential new connections from one process; prints ms
    ip netns exec "${P}db2" "$PY" -c '
import socket, time
t = time.time()
for _ in range(200):
    s = socket.create_connection(("10.10.2.21", 5201), timeout=2); s.recv(6); s.close()
print(int((time.time() - t) * 1000))'
}
out_small=$(hv_apply 1 small) && hv_apply 2 small >/dev/null
r_small=$(ip netns exec "${P}hv1" nft list chain bridge stackfabric "in_$DB" | grep -c 'comment "ingress')
b_small=$(blast); c_small=$(connect_rate)
log "10 rules ($r_small in in_$DB): stream $b_small; 200 connects ${c_small} ms"
T_B=$(now_ms)
out=$(hv_apply 1 big1 10000); rc1=$?
T_B1=$(now_ms)
check "hv1 applies 10,000 ACL rules (one prefix each)" [ "$rc1" = 0 ]
log "hv1 10,000 rules: $out (wall $(( T_B1 - T_B )) ms incl. agent start + FRR check)"
out2=$(hv_apply 2 big1 10000) || { log "FAIL: hv2 big1"; FAIL=1; }
log "hv2 10,000 rules: $out2"
r_big=$(ip netns exec "${P}hv1" nft list chain bridge stackfabric "in_$DB" | grep -c 'comment "ingress')
t_again=$(now_ms); again=$(hv_apply 1 big1 10000); t_again=$(( $(now_ms) - t_again ))
log "hv1 pass with 10,000 rules unchanged: $again (wall ${t_again} ms)"
check "unchanged 10,000-rule pass leaves the ACL table alone" bash -c "[[ '$again' == *acl_change_ms=-* ]]"
b_big=$(blast); c_big=$(connect_rate)
log "10,000 rules ($r_big in in_$DB): stream $b_big; 200 connects ${c_big} ms"
check "stream with 10,000 rules completes" bash -c "[[ '$b_big' == ok* ]]"
check "web1 -> db1:22 still dropped with 10,000 rules" expect_cli timeout web1 10.10.2.21 22
w_big=$(hv_apply 1 big 10000) || { log "FAIL: hv1 big"; FAIL=1; }
log "hv1 10,000 rules with a two-prefix list each (10,000 named sets): $w_big"
check "web1 -> db1:5432 still connects" expect_cli ok web1 10.10.2.21 5432

echo "===== summary"
echo "apply 10 rules on hv1: $out_small"
echo "apply 10,000 rules on hv1: one prefix each: $out | two prefixes each: $w_big"
echo "throughput (python, 64 KiB sends, 4 s): 10 rules: $b_small | 10,000 rules: $b_big"
echo "200 sequential new connections (connect + greeting): 10 rules: ${c_small} ms | 10,000 rules: ${c_big} ms"
[ "$FAIL" = 0 ] && echo "ACL PROOF: ALL CHECKS PASSED" || echo "ACL PROOF: SOME CHECKS FAILED"
exit "$FAIL"
