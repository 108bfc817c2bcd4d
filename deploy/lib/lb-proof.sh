#!/usr/bin/env bash
# lb-proof.sh - prove the gateway agent's Maglev load balancer with real packets, using
# deploy/lib/netlab.sh and the SoftGate topology of softgate-proof.sh.
#
#   sudo LAB_PREFIX=sfl- deploy/lib/lb-proof.sh --agent target/release/sf-gateway-agent [--keep]
#
# The gateway's VPC router is built by sf-gateway-agent from a NodeDesired JSON, run inside
# gw1 (`nsenter --net`) as `--apply-file FILE --hold SECONDS`: it keeps reconciling, runs the
# health checks from inside the VPC namespace and reinstalls a load balancer's map on every
# health flip.
#
# Topology (every namespace prefixed $LAB_PREFIX, default sfl-):
#   leaf1 (AS 65101) -- hv1 (VTEP 10.255.1.1, brvx-1000001), gw1 (AS 65011), internet
#   b1 b2 b3   backends 10.10.1.21-23 on hv1, each serving its name on :80 (HTTP, plus a
#              "hold" line protocol for long-lived flows); status code from a file
#   c1         10.10.1.30, a VM of the same VPC using the VIP (hairpin)
#   VPC 7      SNAT 203.0.113.10; load balancer web 203.0.113.20:80 -> b1 b2 b3,
#              Maglev 65,537 slots, TCP check 1 s / 0.5 s, rise 2 fall 2
# Proofs: 300 new connections spread ~1/3 each; stopping b2 removes it within
# interval x fall while 30 long-lived flows to b1/b3 keep working and new flows of b1/b3
# keep their backend (Maglev); hairpin from c1; b2 comes back; an HTTP check takes out a
# backend answering 500 that the TCP check keeps; no healthy backend -> connection refused;
# time to load a 65,537-slot map.
# Exit 0 only if every check passes; cleanup on any exit unless --keep.
# shellcheck disable=SC2317  # functions invoked indirectly (trap, check, netlab_wait)
set -u -o pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export LAB_PREFIX=${LAB_PREFIX:-sfl-}
# shellcheck source=netlab.sh source-path=SCRIPTDIR
. "$HERE/netlab.sh"

KEEP=0
AGENT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --keep) KEEP=1 ;;
        --agent) AGENT=$(realpath "$2") || exit 2; shift ;;
        *) echo "usage: $0 --agent BIN [--keep]" >&2; exit 2 ;;
    esac
    shift
done
[ -n "$AGENT" ] || { echo "usage: $0 --agent BIN [--keep]" >&2; exit 2; }
P=$LAB_PREFIX
VNI=1000001
VPC_NS=${P}vpc-7
VIP=203.0.113.20
FAIL=0
AGENT_PID=""
declare -A SRV_PID=()

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
log() { printf '[%6d ms] %s\n' $(( $(now_ms) - T0 )) "$*"; }
check() { # check DESCRIPTION CMD...
    local d=$1; shift
    if "$@"; then log "PASS: $d"; else log "FAIL: $d"; FAIL=1; fi
}
stop_agent() {
    if [ -n "$AGENT_PID" ]; then
        kill -TERM "$AGENT_PID" 2>/dev/null
        wait "$AGENT_PID" 2>/dev/null
        AGENT_PID=""
    fi
}
finish() {
    local rc=$?
    stop_agent
    for b in "${!SRV_PID[@]}"; do kill "${SRV_PID[$b]}" 2>/dev/null; done
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

bgp_conf() { # bgp_conf HOST ASN ID NEIGHBORS VTEP(0/1)
    local host=$1 asn=$2 id=$3 nbrs=$4 vtep=$5 n
    echo "frr defaults datacenter"
    echo "hostname $host"
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
    [ "$vtep" = 1 ] && echo "  advertise-all-vni"
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

desired_json() { # desired_json HEALTH_JSON
    cat <<EOF
{"node":"gw1","revision":1,"objects":{
 "net/$VNI":{"kind":"l2_network","vni":$VNI,"tenant":"acme","vpc":"prod","network":"web",
   "cidr":"10.10.1.0/24","gateway":"10.10.1.1","ports":[]},
 "underlay":{"kind":"underlay","asn":65011,"router_id":"10.255.2.1","loopback":"10.255.2.1",
   "neighbors":["leaf1"],"evpn":"vtep","announce":["203.0.113.10/32","$VIP/32"]},
 "vpc/7":{"kind":"vpc_router","tenant":"acme","vpc":"prod","id":7,"cidr":"10.10.0.0/16",
   "mac":"02:5f:00:00:00:07",
   "tiers":[{"name":"web","vni":$VNI,"cidr":"10.10.1.0/24","gateway":"10.10.1.1"}],
   "routes":[],"snat":"203.0.113.10","port_forwards":[],"static_nats":[],
   "load_balancers":[{"name":"web","vip":"$VIP","protocol":"tcp","port":80,
     "backends":[{"name":"10.10.1.21:80","ip":"10.10.1.21","port":80,"weight":1},
                 {"name":"10.10.1.22:80","ip":"10.10.1.22","port":80,"weight":1},
                 {"name":"10.10.1.23:80","ip":"10.10.1.23","port":80,"weight":1}],
     "health":$1,"table_size":65537,"public":true}]}}}
EOF
}
TCP_CHECK='{"type":"tcp","interval_ms":1000,"timeout_ms":500,"rise":2,"fall":2}'
HTTP_CHECK='{"type":"http","path":"/","expect_status":200,"interval_ms":1000,"timeout_ms":500,"rise":2,"fall":2}'

start_agent() { # start_agent LOG HEALTH_JSON
    desired_json "$2" >"$NETLAB_DIR/gw1-desired.json"
    nsenter --net="/run/netns/${P}gw1" "$AGENT" --apply-file "$NETLAB_DIR/gw1-desired.json" \
        --node gw1 --frr-dir "$NETLAB_DIR/${P}gw1" --netns-prefix "${P}vpc-" --hold 900 \
        >"$1" 2>&1 &
    AGENT_PID=$!
}

start_backend() { # start_backend bN IP
    ip netns exec "$P$1" setsid "$PY" "$NETLAB_DIR/backend.py" "$1" 80 "$NETLAB_DIR/$1.status" \
        </dev/null >/dev/null 2>&1 &
    SRV_PID[$1]=$!
}
stop_backend() { kill "${SRV_PID[$1]}" 2>/dev/null; wait "${SRV_PID[$1]}" 2>/dev/null; unset "SRV_PID[$1]"; }

lbsum() { ip netns exec "$VPC_NS" nft list set ip stackfabric lbsum 2>/dev/null | grep -o 'sf:lb0=[0-9a-f]*'; }
lb_status() { grep '^lb-status: ' "$1" | tail -n1 | sed 's/^lb-status: //'; }
backend_up() { # backend_up LOG NAME -> 0 if the latest lb-status says NAME is up
    lb_status "$1" | python3 -c "import json,sys; sys.exit(0 if json.load(sys.stdin)['acme/prod/web']['backends']['$2'] else 1)"
}
backend_down() { ! backend_up "$@"; }
wait_digest_change() { # wait_digest_change OLD TIMEOUT_S -> prints ms waited
    local old=$1 t0 end
    t0=$(now_ms); end=$(( t0 + $2 * 1000 ))
    while [ "$(now_ms)" -lt "$end" ]; do
        local cur; cur=$(lbsum)
        if [ -n "$cur" ] && [ "$cur" != "$old" ]; then echo $(( $(now_ms) - t0 )); return 0; fi
        sleep 0.05
    done
    return 1
}
spread() { # spread OUTFILE NS -> "sport backend" lines, 300 connections from fixed ports
    ip netns exec "$2" "$PY" "$NETLAB_DIR/client.py" spread "$VIP" 80 300 41000 >"$1"
}
counts() { awk '{print $2}' "$1" | sort | uniq -c | awk '{printf "%s=%s ", $2, $1}'; }

netlab_cleanup "$P"          # leftovers of an earlier aborted run
netlab_init "$P" || exit 1
T0=$(now_ms)
PY=$(python3 -c 'import sys; print(sys.executable)') || exit 1

cat >"$NETLAB_DIR/backend.py" <<'EOF'
# backend.py NAME PORT STATUSFILE - HTTP: answers "NAME saw PEER" with the status code in
# STATUSFILE (200 if absent). Line protocol: "hold" -> "NAME" per line, connection kept.
import asyncio, sys
name, port, status_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
async def handle(r, w):
    try:
        line = await r.readline()
        if line.startswith(b"GET"):
            while (await r.readline()) not in (b"\r\n", b"\n", b""):
                pass
            try:
                code = int(open(status_file).read().strip())
            except Exception:
                code = 200
            body = ("%s saw %s\n" % (name, w.get_extra_info("peername")[0])).encode()
            w.write(b"HTTP/1.0 %d X\r\nContent-Length: %d\r\n\r\n" % (code, len(body)) + body)
            await w.drain()
        else:
            while line:
                w.write((name + "\n").encode()); await w.drain()
                line = await r.readline()
    except Exception:
        pass
    finally:
        w.close()
async def main():
    s = await asyncio.start_server(handle, "0.0.0.0", port, reuse_address=True)
    async with s:
        await s.serve_forever()
asyncio.run(main())
EOF
cat >"$NETLAB_DIR/client.py" <<'EOF'
# client.py spread HOST PORT N SPORT0  - N sequential HTTP GETs from source ports SPORT0+i
# client.py hold HOST PORT N GOFILE     - N long-lived flows; once GOFILE exists, ask again
import socket, sys, time, os
mode, host, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def who(s):
    data = b""
    while b"\n" not in data:
        c = s.recv(256)
        if not c:
            raise OSError("closed")
        data += c
    return data.split(b"\n")[0].decode()
if mode == "spread":
    sport0 = int(sys.argv[5])
    for i in range(n):
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.settimeout(2)
        try:
            s.bind(("0.0.0.0", sport0 + i)); s.connect((host, port))
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while True:
                c = s.recv(4096)
                if not c: break
                data += c
            print(sport0 + i, data.split(b"\r\n\r\n", 1)[1].split()[0].decode())
        except Exception as e:
            print(sport0 + i, "FAIL")
        finally:
            s.close()
else:
    go = sys.argv[5]
    conns = []
    for i in range(n):
        s = socket.create_connection((host, port), timeout=2)
        s.sendall(b"hold\n"); conns.append((s, who(s)))
        print("before", i, conns[-1][1], flush=True)
    while not os.path.exists(go):
        time.sleep(0.1)
    for i, (s, name) in enumerate(conns):
        try:
            s.sendall(b"hold\n"); print("after", i, name, who(s), flush=True)
        except Exception:
            print("after", i, name, "FAIL", flush=True)
EOF

# ---------------------------------------------------------------- topology
for n in leaf1 hv1 gw1 internet; do netlab_ns_add "$P$n" || exit 1; done
netlab_addr_lo "${P}leaf1" 10.255.0.1/32 || exit 1
netlab_addr_lo "${P}hv1" 10.255.1.1/32 || exit 1
netlab_addr_lo "${P}internet" 198.51.100.10/32 || exit 1
for n in hv1 gw1 internet; do netlab_link "$P$n" leaf1 "${P}leaf1" "$n" || exit 1; done
netlab_vxlan_add "${P}hv1" "$VNI" 10.255.1.1 || exit 1
i=0
for vm in b1:21 b2:22 b3:23 c1:30; do
    i=$((i + 1))
    netlab_vm_add "$P${vm%:*}" "${P}hv1" "brvx-$VNI" "10.10.1.${vm#*:}/24" "02:00:00:01:00:${vm#*:}" >/dev/null || exit 1
    ip -n "$P${vm%:*}" route add default via 10.10.1.1 || exit 1
done
bgp_conf leaf1 65101 10.255.0.1 "hv1 gw1 internet" 0 >"$NETLAB_DIR/leaf1.conf"
bgp_conf hv1 65001 10.255.1.1 "leaf1" 1 >"$NETLAB_DIR/hv1.conf"
printf 'frr defaults datacenter\nhostname gw1\n!\n' >"$NETLAB_DIR/gw1.conf"
internet_conf >"$NETLAB_DIR/internet.conf"
for n in leaf1 hv1 gw1 internet; do
    netlab_frr_start "$P$n" "$NETLAB_DIR/$P$n" "$NETLAB_DIR/$n.conf" || exit 1
done
for b in b1 b2 b3; do start_backend "$b"; done
log "topology built, FRR and backends started"

# ---------------------------------------------------------------- agent
A1=$NETLAB_DIR/agent-tcp.log
start_agent "$A1" "$TCP_CHECK"
if netlab_wait 120 bash -c "ip netns exec ${P}internet curl -s -m 1 http://$VIP/ | grep -q saw"; then
    log "PASS: internet reaches the VIP $VIP:80"
else
    log "FAIL: VIP never answered"; FAIL=1; cat "$A1"; exit 1
fi
log "agent first pass: $(grep -m1 '^reconcile:' "$A1")"
echo "===== $VPC_NS: nft -t list table ip stackfabric (map elements not shown)"
ip netns exec "$VPC_NS" nft -t list table ip stackfabric

echo "===== 1. 300 new connections from the internet"
spread "$NETLAB_DIR/spread1" "${P}internet"
log "spread: $(counts "$NETLAB_DIR/spread1")"
check "300 connections, none failed" bash -c "[ \$(grep -vc FAIL $NETLAB_DIR/spread1) = 300 ]"
for b in b1 b2 b3; do
    check "$b got 100 +/- 30" bash -c "c=\$(grep -c ' $b\$' $NETLAB_DIR/spread1); [ \$c -ge 70 ] && [ \$c -le 130 ]"
done
check "hairpin: c1 -> VIP answered, backend sees the tier gateway" \
    bash -c "ip netns exec ${P}c1 curl -s -m 2 http://$VIP/ | grep -q 'saw 10.10.1.1\$'"

echo "===== 2. b2 stops: removed within interval x fall, other flows kept"
rm -f "$NETLAB_DIR/go"
ip netns exec "${P}internet" "$PY" "$NETLAB_DIR/client.py" hold "$VIP" 80 30 "$NETLAB_DIR/go" >"$NETLAB_DIR/hold" 2>&1 &
HOLD_PID=$!
netlab_wait 10 bash -c "[ \$(grep -c ^before $NETLAB_DIR/hold) = 30 ]" || { log "FAIL: long-lived flows not set up"; FAIL=1; }
log "long-lived flows: $(awk '/^before/{print $3}' "$NETLAB_DIR/hold" | sort | uniq -c | awk '{printf "%s=%s ", $2, $1}')"
D0=$(lbsum)
T_KILL=$(now_ms)
stop_backend b2
if wait_digest_change "$D0" 10 >/dev/null; then
    DETECT=$(( $(now_ms) - T_KILL ))
    log "b2 stopped -> map lb0 rewritten without b2 after $DETECT ms (check interval 1000 ms x fall 2 = 2000 ms + load)"
    check "detection + reinstall within interval x fall + 1 s" [ "$DETECT" -le 3000 ]
else
    log "FAIL: map never changed after b2 stopped"; FAIL=1
fi
grep -E 'backend DOWN|load balancer maps replaced' "$A1" | tail -n 2 | cut -c1-220
check "lb-status reports b2 down" netlab_wait 3 backend_down "$A1" 10.10.1.22:80
touch "$NETLAB_DIR/go"
wait "$HOLD_PID"
log "long-lived flows after: ok=$(awk '/^after/ && $3==$4' "$NETLAB_DIR/hold" | wc -l) broken=$(awk '/^after/ && $4=="FAIL"' "$NETLAB_DIR/hold" | wc -l)"
check "every long-lived flow to b1/b3 still answered by the same backend" \
    bash -c "[ -z \"\$(awk '/^after/ && \$3!=\"b2\" && \$3!=\$4' $NETLAB_DIR/hold)\" ]"
check "flows to the stopped b2 are broken (it is gone)" \
    bash -c "[ -z \"\$(awk '/^after/ && \$3==\"b2\" && \$4!=\"FAIL\"' $NETLAB_DIR/hold)\" ]"
spread "$NETLAB_DIR/spread2" "${P}internet"
log "spread without b2: $(counts "$NETLAB_DIR/spread2")"
check "no new connection goes to b2, none fails" bash -c "! grep -qE ' (b2|FAIL)\$' $NETLAB_DIR/spread2"
MOVED=$(join "$NETLAB_DIR/spread1" "$NETLAB_DIR/spread2" | awk '$2!="b2" && $2!=$3' | wc -l)
KEPT=$(join "$NETLAB_DIR/spread1" "$NETLAB_DIR/spread2" | awk '$2!="b2" && $2==$3' | wc -l)
log "Maglev: of the same 5-tuples that went to b1/b3, $KEPT kept their backend, $MOVED moved"
check "at least 95% of b1/b3 5-tuples keep their backend" [ $(( KEPT * 100 )) -ge $(( (KEPT + MOVED) * 95 )) ]

echo "===== 3. b2 comes back after rise x interval"
D1=$(lbsum); T_UP=$(now_ms)
start_backend b2
if wait_digest_change "$D1" 10 >/dev/null; then
    log "b2 back in the map after $(( $(now_ms) - T_UP )) ms (rise 2 x 1000 ms)"
    spread "$NETLAB_DIR/spread3" "${P}internet"
    check "b2 back: the original spread is restored exactly" cmp -s "$NETLAB_DIR/spread1" "$NETLAB_DIR/spread3"
else
    log "FAIL: b2 never came back"; FAIL=1
fi

echo "===== 4. b3 answers 500: a TCP check keeps it, an HTTP check takes it out"
echo 500 >"$NETLAB_DIR/b3.status"
sleep 4
check "TCP check: b3 (answering 500) still up after 4 s" backend_up "$A1" 10.10.1.23:80
spread "$NETLAB_DIR/spread35" "${P}internet"
check "TCP check: b3 still gets its share of new connections" bash -c "[ \$(grep -c ' b3\$' $NETLAB_DIR/spread35) -ge 70 ]"
stop_agent
A2=$NETLAB_DIR/agent-http.log
D2=$(lbsum); T_H=$(now_ms)
start_agent "$A2" "$HTTP_CHECK"
if wait_digest_change "$D2" 10 >/dev/null; then
    log "HTTP check: b3 out of the map $(( $(now_ms) - T_H )) ms after the agent restarted with it"
else
    log "FAIL: HTTP check did not remove b3"; FAIL=1
fi
log "restarted agent, first pass (health config is not part of the table): $(grep -m1 '^reconcile:' "$A2")"
check "restart with only the health check changed reloads nothing" bash -c "grep -m1 '^reconcile:' $A2 | grep -q 'changes=0 '"
sleep 0.5
check "HTTP check: lb-status reports b3 down" netlab_wait 3 backend_down "$A2" 10.10.1.23:80
check "HTTP check: lb-status reports b1, b2 up" bash -c "! grep -q '10.10.1.2[12]:80\":false' $A2"
spread "$NETLAB_DIR/spread4" "${P}internet"
log "spread with b3 out: $(counts "$NETLAB_DIR/spread4")"
check "no connection to b3" bash -c "! grep -qE ' (b3|FAIL)\$' $NETLAB_DIR/spread4"

echo "===== 5. no healthy backend: new connections refused at once"
echo 500 >"$NETLAB_DIR/b1.status"; echo 500 >"$NETLAB_DIR/b2.status"
netlab_wait 10 bash -c "grep -q '\"backends\":{\"10.10.1.21:80\":false,\"10.10.1.22:80\":false,\"10.10.1.23:80\":false}' $A2" ||
    { log "FAIL: not all backends reported down"; FAIL=1; }
sleep 0.5
T_R=$(now_ms)
ip netns exec "${P}internet" curl -s -m 3 "http://$VIP/" >/dev/null; RC=$?
log "curl to VIP with no backend: exit $RC after $(( $(now_ms) - T_R )) ms"
check "connection refused (curl exit 7), not a timeout" [ "$RC" = 7 ]
rm -f "$NETLAB_DIR"/b?.status
check "backends healthy again, VIP answers" \
    netlab_wait 10 bash -c "ip netns exec ${P}internet curl -s -m 1 http://$VIP/ | grep -q saw"

echo "===== 6. time to load a 65,537-slot map"
grep -E 'reconcile: changes=[1-9]' "$A1" "$A2" | sed 's/^.*reconcile/  reconcile/' | head -n 8
python3 - "$NETLAB_DIR/bench.nft" <<'EOF'
import sys
els = ", ".join(f"{i} : 10.10.1.{21 + i % 3} . 80" for i in range(65537))
open(sys.argv[1], "w").write("table ip sflbbench {\n map m { type mark : ipv4_addr . inet_service; }\n}\n"
    f"flush map ip sflbbench m\nadd element ip sflbbench m {{ {els} }}\n")
EOF
for k in 1 2 3; do
    T_B=$(now_ms)
    ip netns exec "$VPC_NS" nft -f "$NETLAB_DIR/bench.nft" || FAIL=1
    log "nft -f: flush + add 65,537 elements in one transaction (run $k): $(( $(now_ms) - T_B )) ms"
done
ip netns exec "$VPC_NS" nft delete table ip sflbbench

echo "===== summary"
[ "$FAIL" = 0 ] && echo "LB PROOF: ALL CHECKS PASSED" || echo "LB PROOF: SOME CHECKS FAILED"
exit "$FAIL"
