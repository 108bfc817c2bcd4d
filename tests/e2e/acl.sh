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
t0 = time.time()
s = socket.create_connection(("10.10.2.11", 5432), timeout=3)
f = s.makefile("rb"); f.readline()
for i in range(1, 61):
    try:
        s.sendall(b"x\n")
        assert f.readline().strip() == b"ok %d" % i, i
    except Exception as e:
        print("broke at line %d, %.2f s after the start: %r" % (i, time.time() - t0, e))
        raise
    time.sleep(0.1)
print("stream ok")' >"$STATE/stream.log" 2>&1 &
STREAM=$!
sleep 1.5
check "apply a changed list (new rule 15) while the stream runs" apply_db_acl --rule "10 ingress allow tcp 5432 10.10.1.0/24" --rule "15 ingress allow icmp any 10.10.1.0/24" --rule "20 egress allow all any 0.0.0.0/0"
check "wait for the ping the new rule allows" wait_for 15 X blue-web-1 ping -c 1 -W 1 10.10.2.11
wait "$STREAM"
check "the stream survived the change ($(tail -1 "$STATE/stream.log"))" grep -q "stream ok" "$STATE/stream.log"
if ! grep -q "stream ok" "$STATE/stream.log"; then
    # For the record (the ACL was applied about 1.5 s after the start).
    cat "$STATE/stream.log"
    tail -n 15 "$STATE/logs/hv1.log" "$STATE/logs/hv3.log"
fi

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

# ---------------------------------------------------------------- hypervisor dataplane hardening
DB_VNI=$(S -o json network show db --tenant demo --vpc blue | python3 -c "import json,sys; print(json.load(sys.stdin)['vni'])")
mac_of() { X "$1" cat /sys/class/net/eth0/address; }
# hv3_counter COMMENT [CHAIN]: packets counted by the rules with that comment on hv3.
hv3_counter() {
    X hv3 nft -j list table bridge stackfabric 2>/dev/null | python3 -c "
import json, sys
n = 0
for item in json.load(sys.stdin)['nftables']:
    r = item.get('rule')
    if r and r.get('comment') == sys.argv[1] and sys.argv[2] in ('', r['chain']):
        n += sum(e['counter']['packets'] for e in r['expr'] if 'counter' in e)
print(n)" "$1" "${2:-}" 2>/dev/null || echo 0
}
# frames.py: `recv SECONDS` counts marked frames arriving on eth0; `send SRC_MAC DST_MAC
# KIND...` sends crafted frames (AF_PACKET, through the real bridge and table).
cat >"$STATE/frames.py" <<'EOF'
import socket, struct, sys, time
def mac(s): return bytes.fromhex(s.replace(":", ""))
def ip(s): return socket.inet_aton(s)
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
def udp(src, dst, sport, dport, payload):
    u = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(u), 1, 0, 64, 17, 0, ip(src), ip(dst))
    h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
    return h + u
if sys.argv[1] == "recv":
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    s.bind(("eth0", 0)); s.settimeout(0.2)
    seen = {}
    end = time.time() + float(sys.argv[2])
    while time.time() < end:
        try: f = s.recv(2048)
        except socket.timeout: continue
        if f[12:14] == b"\x08\x06" and f[28:32] == ip("10.10.2.99"): seen["arp-spoof"] = seen.get("arp-spoof", 0) + 1
        for m in (b"sf-legit", b"sf-spoof-ip", b"sf-spoof-mac", b"sf-dhcp", b"sf-stray", b"sf-second"):
            if m in f: seen[m.decode()] = seen.get(m.decode(), 0) + 1
    print(" ".join("%s=%d" % kv for kv in sorted(seen.items())) or "nothing")
    sys.exit(0)
_, _, src_mac, dst_mac, src_ip, *kinds = sys.argv
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
eth = lambda d, sm, t: mac(d) + mac(sm) + struct.pack("!H", t)
for k in kinds:
    for _ in range(3):
        if k == "legit": s.send(eth(dst_mac, src_mac, 0x800) + udp(src_ip, "10.10.2.11", 40000, 9999, b"sf-legit"))
        if k == "stray": s.send(eth(dst_mac, src_mac, 0x800) + udp(src_ip, "10.10.2.11", 40000, 9999, b"sf-stray"))
        if k == "second": s.send(eth(dst_mac, src_mac, 0x800) + udp("10.10.2.98", "10.10.2.11", 40000, 9999, b"sf-second"))
        if k == "spoof-ip": s.send(eth(dst_mac, src_mac, 0x800) + udp("10.10.2.99", "10.10.2.11", 40000, 9999, b"sf-spoof-ip"))
        if k == "spoof-mac": s.send(eth(dst_mac, "52:54:00:de:ad:01", 0x800) + udp(src_ip, "10.10.2.11", 40000, 9999, b"sf-spoof-mac"))
        if k == "dhcp": s.send(eth("ff:ff:ff:ff:ff:ff", src_mac, 0x800) + udp("0.0.0.0", "255.255.255.255", 68, 67, b"sf-dhcp"))
        if k == "arp-spoof":
            a = struct.pack("!HHBBH6s4s6s4s", 1, 0x800, 6, 4, 2, mac(src_mac), ip("10.10.2.99"), mac(dst_mac), ip("10.10.2.11"))
            s.send(eth(dst_mac, src_mac, 0x806) + a)
        time.sleep(0.05)
EOF
# frames_to_db1 FROM_VM KIND...: what blue-db-1 received of the frames FROM_VM sent.
frames_to_db1() {
    local from=$1 out
    shift
    X blue-db-1 python3 "$STATE/frames.py" recv 3 >"$STATE/recv.out" 2>&1 &
    local rp=$!
    sleep 0.7
    X "$from" python3 "$STATE/frames.py" send "$(mac_of "$from")" "$(mac_of blue-db-1)" "$(X "$from" ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1)" "$@"
    wait "$rp"
    out=$(cat "$STATE/recv.out")
    echo "$out"
}

section "6. anti-spoofing: each VM port is pinned to its MAC and IPv4 address (ARP too)"
check "blue-db-2 on hv3 (10.10.2.12)" L vm-add blue-db-2 hv3 demo blue db 10.10.2.12
check "the tap follows libvirt's MAC convention (fe:...)" bash -c "ip -n ${LAB_PREFIX}hv3 -br link show master brvx-$DB_VNI | grep -q ' fe:'"
check "db-acl: udp 9999 allowed inside the tier (so only anti-spoofing can stop it)" apply_db_acl --rule "10 ingress allow udp 9999 10.10.2.0/24" --rule "20 egress allow all any 0.0.0.0/0"
check "the new list is on hv3" wait_for 15 bash -c "'$REPO/deploy/lab.sh' exec hv3 nft list chain bridge stackfabric in_$DB_VNI | grep -q 'dport 9999'"
S0=$(hv3_counter "spoofed IPv4 source"); M0=$(hv3_counter "spoofed source MAC"); A0=$(hv3_counter "spoofed ARP")
got=$(frames_to_db1 blue-db-2 legit spoof-ip spoof-mac arp-spoof dhcp)
echo "  blue-db-1 received: $got"
check "control: blue-db-2's own address and MAC arrive" grep -q "sf-legit=" <<<"$got"
check "a DHCP request from 0.0.0.0 passes" grep -q "sf-dhcp=" <<<"$got"
check_not "a spoofed IPv4 source (10.10.2.99) never arrives" grep -q "sf-spoof-ip" <<<"$got"
check_not "a spoofed source MAC never arrives" grep -q "sf-spoof-mac" <<<"$got"
check_not "an ARP claiming 10.10.2.99 never arrives" grep -q "arp-spoof" <<<"$got"
check "hv3 counted the drops (IPv4 $S0 -> $(hv3_counter "spoofed IPv4 source"), MAC $M0 -> $(hv3_counter "spoofed source MAC"), ARP $A0 -> $(hv3_counter "spoofed ARP"))" \
    test "$(hv3_counter "spoofed IPv4 source")" -ge $((S0 + 3)) -a "$(hv3_counter "spoofed source MAC")" -ge $((M0 + 3)) -a "$(hv3_counter "spoofed ARP")" -ge $((A0 + 3))
check "a second port with blue-db-2's MAC (a secondary IP, 10.10.2.98)" S port create blue-db-2-b --tenant demo --vpc blue --network db --node hv3 --ip 10.10.2.98 --mac "$(L exec blue-db-2 cat /sys/class/net/eth0/address)"
check "hv3 pins blue-db-2's tap to both addresses" wait_for 15 bash -c "'$REPO/deploy/lab.sh' exec hv3 nft list chain bridge stackfabric pin | grep -q '10.10.2.98'"
got=$(frames_to_db1 blue-db-2 second spoof-ip)
echo "  blue-db-1 received: $got"
check "the secondary address now arrives" grep -q "sf-second=" <<<"$got"
check_not "10.10.2.99 still does not" grep -q "sf-spoof-ip" <<<"$got"
check "blue-db-2 still reaches blue-db-1 by ARP and IPv4 (udp 9999 via the kernel)" X blue-db-2 python3 -c '
import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b"x", ("10.10.2.11", 9999))'

section "7. fail closed: a tap no port claims gets nothing through"
check "vm-plug blue-db-9 into db on hv3 without a port record (10.10.2.19)" L vm-plug blue-db-9 hv3 "$DB_VNI" 10.10.2.19/24 10.10.2.1
check "hv3's agent has seen the tap (it is dispatched as stray)" wait_for 15 bash -c "'$REPO/deploy/lab.sh' exec hv3 nft list chain bridge stackfabric forward | grep -q 'no port has this tap'"
got=$(frames_to_db1 blue-db-9 stray)
echo "  blue-db-1 received: $got"
check_not "its frames (allowed by the ACL: udp 9999 from the tier) never arrive" grep -q "sf-stray" <<<"$got"
check "hv3 counted them as a tap no port claims" test "$(hv3_counter "no port has this tap's MAC")" -ge 3
check "vm-del blue-db-9" L vm-del blue-db-9

section "8. IPv6: neighbour discovery passes, other IPv6 gets the tier's default (deny)"
X blue-db-1 ip -6 addr add fd00:db::11/64 dev eth0 nodad
X blue-db-2 ip -6 addr add fd00:db::12/64 dev eth0 nodad
X blue-db-1 sysctl -qw net.ipv6.conf.all.disable_ipv6=0 2>/dev/null
check_not "blue-db-2 -> blue-db-1 ping over IPv6 is dropped (default deny; rules are IPv4-only)" X blue-db-2 ping -6 -c 2 -W 1 fd00:db::11
check "but neighbour discovery resolved blue-db-1's MAC" bash -c "'$REPO/deploy/lab.sh' exec blue-db-2 ip -6 neigh show fd00:db::11 | grep -q lladdr"
# Counted with ND resolved, so every echo leaves at once (the first ping's echoes may wait
# in the neighbour queue, and one can be lost there).
V6_0=$(hv3_counter "non-IPv4 default")
X blue-db-2 ping -6 -c 3 -i 0.2 -W 1 fd00:db::11 >/dev/null 2>&1
check "hv3 counted 3 more IPv6 drops under the tier's default (from $V6_0)" test "$(hv3_counter "non-IPv4 default")" -ge $((V6_0 + 3))

section "9. bounded flow state: 300,000 short connections through a default-deny tier, then a new one"
check "db-acl: tcp 5432-5441 within the tier, both ways; default deny" apply_db_acl --rule "10 ingress allow tcp 5432-5441 10.10.2.0/24" --rule "20 egress allow tcp 5432-5441 10.10.2.0/24"
check "the new list is on hv3" wait_for 15 bash -c "'$REPO/deploy/lab.sh' exec hv3 nft list chain bridge stackfabric eg_$DB_VNI | grep -q 'egress 20'"
check_eq "before: blue-db-2 -> blue-db-1:5432 connects" "blue-db-1:5432" "$(connect blue-db-2 10.10.2.11 5432)"
N0=$(hv3_counter "new flow" "new_$DB_VNI")
T0=$SECONDS
# SYNs from blue-db-2's own address (raw socket: the kernel routes and resolves), source
# ports 1024-32767 (below the ephemeral range the final real connection uses) x 10 ports;
# blue-db-1's kernel answers SYN-ACK (5432) or RST, blue-db-2's kernel resets the SYN-ACKs.
X blue-db-2 python3 -c '
import socket, struct, time
src, dst = socket.inet_aton("10.10.2.12"), socket.inet_aton("10.10.2.11")
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
n = 0
for dport in range(5432, 5442):
    for sport in range(1024, 31024):
        h = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x02, 64240, 0, 0)
        c = csum(src + dst + struct.pack("!BBH", 0, 6, 20) + h)
        s.sendto(h[:16] + struct.pack("!H", c) + h[18:], ("10.10.2.11", 0))
        n += 1
        if n % 200 == 0: time.sleep(0.002)
print(n)' >"$STATE/churn.out" 2>&1
sleep 1
N1=$(hv3_counter "new flow" "new_$DB_VNI")
echo "  sent $(cat "$STATE/churn.out") SYNs in $((SECONDS - T0)) s; hv3 admitted $((N1 - N0)) new flows; flow table full drops: $(hv3_counter "flow table full")"
check "hv3 admitted at least 290,000 of the 300,000 connections" test $((N1 - N0)) -ge 290000
# set_size NAME: elements in hv3's set NAME_<db VNI> ("none" when there is no such set).
set_size() {
    X hv3 nft -j list set bridge stackfabric "$1_$DB_VNI" 2>/dev/null | python3 -c "import json,sys; print(sum(len(i['set'].get('elem', [])) for i in json.load(sys.stdin)['nftables'] if 'set' in i))" 2>/dev/null || echo none
}
ORIG=$(set_size orig)
echo "  flow sets on hv3 after the churn: orig $ORIG, reply $(set_size reply), (before this change: flows $(set_size flows))"
check "the flow set stays bounded: $ORIG entries left in orig_$DB_VNI (a RST deletes its flow)" test "$ORIG" -lt 10000
check_eq "after the churn a new real connection blue-db-2 -> blue-db-1:5432 still works" "blue-db-1:5432" "$(connect blue-db-2 10.10.2.11 5432)"

section "10. an ACL change that denies a running flow cuts it; an allowed one survives"
listen blue-db-1 5433
check "blue-db-1 listens on 5433 too" wait_for 10 connect blue-db-2 10.10.2.11 5433
# stream PORT: 80 lines over 8 s to blue-db-1:PORT, each answered within 2 s.
stream() {
    X blue-db-2 python3 -c '
import socket, sys, time
s = socket.create_connection(("10.10.2.11", int(sys.argv[1])), timeout=2)
f = s.makefile("rb"); f.readline()
for i in range(1, 81):
    try:
        s.sendall(b"x\n")
        assert f.readline().strip() == b"ok %d" % i
    except Exception as e:
        print("stream cut at line %d (%s)" % (i, type(e).__name__)); sys.exit(1)
    time.sleep(0.1)
print("stream ok")' "$1"
}
stream 5432 >"$STATE/stream-5432.log" 2>&1 &
SA=$!
stream 5433 >"$STATE/stream-5433.log" 2>&1 &
SB=$!
sleep 1.5
check "apply db-acl allowing only tcp 5433 inside the tier (5432 now denied)" apply_db_acl --rule "10 ingress allow tcp 5433 10.10.2.0/24" --rule "20 egress allow tcp 5433 10.10.2.0/24"
wait "$SA" "$SB"
check "the denied stream to 5432 was cut ($(tail -1 "$STATE/stream-5432.log"))" grep -q "stream cut" "$STATE/stream-5432.log"
check "the still-allowed stream to 5433 survived ($(tail -1 "$STATE/stream-5433.log"))" grep -q "stream ok" "$STATE/stream-5433.log"
check_not "a new connection to 5432 is refused by the ACL" connect blue-db-2 10.10.2.11 5432


section "11. IPv6 on a dual-stack tier: sources and ND targets pinned per port, RA guard"
# Its own dual-stack VPC (ULA range) and tier, three VMs on hv3 whose ports carry IPv6
# addresses; the VMs use static addresses (nodad). The VPC's router also serves the tier
# (RAs, so the VMs gain SLAAC addresses their ports do not name): the checks name the fake RA
# by its prefix and s6-b's link-local, and ping from the ports' own addresses.
check "vpc v6acl with fd40:40::/48" S vpc create v6acl --tenant demo --cidr 10.40.0.0/16 --ipv6-range fd40:40::/48
check "tier s6 with fd40:40:0:1::/64" S network create s6 --tenant demo --vpc v6acl --cidr 10.40.1.0/24 --ipv6-prefix fd40:40:0:1::/64
S6_VNI=$(S -o json network show s6 --tenant demo --vpc v6acl | python3 -c "import json,sys; print(json.load(sys.stdin)['vni'])")
# lab_mac NAME: the MAC deploy/lab.sh gives a VM (vm_mac).
lab_mac() { local h; h=$(printf '%s' "$1" | md5sum); echo "52:54:00:${h:0:2}:${h:2:2}:${h:4:2}"; }
# vm6 NAME N: port NAME (10.40.1.N, fd40:40:0:1::N) on hv3, then the VM plugged into it.
vm6() {
    S port create "$1" --tenant demo --vpc v6acl --network s6 --node hv3 --ip "10.40.1.$2" \
        --mac "$(lab_mac "$1")" --ipv6 "fd40:40:0:1::$2" >/dev/null &&
        wait_for 15 ip -n "${LAB_PREFIX}hv3" link show "brvx-$S6_VNI" &&
        L vm-plug "$1" hv3 "$S6_VNI" "10.40.1.$2/24" 10.40.1.1 >/dev/null &&
        X "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.eth0.disable_ipv6=0 \
            net.ipv6.conf.eth0.accept_ra=1 net.ipv6.conf.all.forwarding=0 &&
        X "$1" ip -6 addr add "fd40:40:0:1::$2/64" dev eth0 nodad
}
for v in "s6-a 11" "s6-b 12" "s6-c 13"; do
    # shellcheck disable=SC2086  # NAME N
    check "VM ${v% *} on hv3 with fd40:40:0:1::${v#* }" vm6 $v
done
check "hv3 pins the tier's ports in IPv6" wait_for 15 bash -c "'$REPO/deploy/lab.sh' exec hv3 nft list chain bridge stackfabric pin6 | grep -q 'fd40:40:0:1::13'"
check "s6-b pings s6-a over IPv6 (no ACL: neighbour discovery under the pinning)" wait_for 10 X s6-b ping -6 -c 1 -W 1 -I fd40:40:0:1::12 fd40:40:0:1::11
check "s6-b resolved s6-a by neighbour discovery" bash -c "'$REPO/deploy/lab.sh' exec s6-b ip -6 neigh show fd40:40:0:1::11 | grep -q lladdr"
check "s6-a's link-local (DAD from ::, then its own) answers s6-c" wait_for 10 X s6-c ping -6 -c 1 -W 1 "$(X s6-a ip -6 -o addr show dev eth0 scope link | awk '{print $4}' | cut -d/ -f1)%eth0"
# frames6.py: `recv SECONDS` reports what arrives on eth0; `send SRC_MAC DST_MAC SRC_LL
# DST_IP KIND...` sends crafted IPv6 frames (AF_PACKET, through the real bridge and table).
cat >"$STATE/frames6.py" <<'EOF'
import socket, struct, sys, time
def mac(s): return bytes.fromhex(s.replace(":", ""))
def ip6(s): return socket.inet_pton(socket.AF_INET6, s)
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
def ipv6(src, dst, nh, payload, hops=64, cs_at=None):
    if cs_at is not None:  # checksum over the pseudo-header (RFC 8200 8.1)
        pseudo = ip6(src) + ip6(dst) + struct.pack("!I3xB", len(payload), nh)
        c = csum(pseudo + payload)
        payload = payload[:cs_at] + struct.pack("!H", c) + payload[cs_at + 2:]
    return struct.pack("!IHBB", 0x60000000, len(payload), nh, hops) + ip6(src) + ip6(dst) + payload
def udp(src, dst, sport, dport, data):
    return ipv6(src, dst, 17, struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data, cs_at=6)
def na(src, dst, target, src_mac):
    body = struct.pack("!BBHI", 136, 0, 0, 0x20000000) + ip6(target) + struct.pack("!BB", 2, 1) + mac(src_mac)
    return ipv6(src, dst, 58, body, hops=255, cs_at=2)
def ra(src, src_mac):
    body = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0) + struct.pack("!BB", 1, 1) + mac(src_mac)
    body += struct.pack("!BBBBIII", 3, 4, 64, 0xc0, 86400, 14400, 0) + ip6("fd40:40:0:99::")
    return ipv6(src, "ff02::1", 58, body, hops=255, cs_at=2)
if sys.argv[1] == "recv":
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    s.bind(("eth0", 0)); s.settimeout(0.2)
    seen = {}
    def count(k): seen[k] = seen.get(k, 0) + 1
    end = time.time() + float(sys.argv[2])
    while time.time() < end:
        try: f = s.recv(2048)
        except socket.timeout: continue
        if f[12:14] != b"\x86\xdd": continue
        if f[20] == 58 and f[54] == 134 and ip6("fd40:40:0:99::") in f: count("ra")
        if f[20] == 58 and f[54] == 136 and f[62:78] == ip6("fd40:40:0:1::77"): count("na-spoof")
        if f[20] == 58 and f[54] == 136 and f[62:78] == ip6("fd40:40:0:1::12"): count("na-legit")
        for m in (b"sf6-legit", b"sf6-ll", b"sf6-spoof", b"sf6-dhcp6", b"sf6-slaac", b"sf6-outside", b"sf6-fakell"):
            if m in f: count(m.decode())
    print(" ".join("%s=%d" % kv for kv in sorted(seen.items())) or "nothing")
    sys.exit(0)
_, _, src_mac, dst_mac, src_ll, dst, *kinds = sys.argv
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
eth = lambda d: mac(d) + mac(src_mac) + b"\x86\xdd"
m6 = mac(src_mac)  # its SLAAC address in the tier: the /64 and the modified EUI-64
slaac = socket.inet_ntop(socket.AF_INET6, ip6("fd40:40:0:1::")[:8] + bytes([m6[0] ^ 2]) + m6[1:3] + b"\xff\xfe" + m6[3:])
for k in kinds:
    for _ in range(3):
        if k == "legit": s.send(eth(dst_mac) + udp("fd40:40:0:1::12", dst, 40000, 9999, b"sf6-legit"))
        if k == "ll": s.send(eth(dst_mac) + udp(src_ll, dst, 40000, 9999, b"sf6-ll"))
        if k == "spoof": s.send(eth(dst_mac) + udp("fd40:40:0:1::99", dst, 40000, 9999, b"sf6-spoof"))
        if k == "slaac": s.send(eth(dst_mac) + udp(slaac, dst, 40000, 9999, b"sf6-slaac"))
        if k == "outside": s.send(eth(dst_mac) + udp("2001:db8:77::1", dst, 40000, 9999, b"sf6-outside"))
        if k == "fakell": s.send(eth(dst_mac) + udp("fe80::dead", dst, 40000, 9999, b"sf6-fakell"))
        if k == "na-legit": s.send(eth(dst_mac) + na("fd40:40:0:1::12", dst, "fd40:40:0:1::12", src_mac))
        if k == "na-spoof": s.send(eth(dst_mac) + na("fd40:40:0:1::12", dst, "fd40:40:0:1::77", src_mac))
        if k == "ra": s.send(eth("33:33:00:00:00:01") + ra(src_ll, src_mac))
        if k == "dhcp6": s.send(eth(dst_mac) + udp(src_ll, dst, 547, 546, b"sf6-dhcp6"))
        time.sleep(0.05)
EOF
# frames6_to_a KIND...: what s6-a received of the frames s6-b sent it (controls last: one
# that arrives shows the receiver was still listening when the frames before it came).
frames6_to_a() {
    X s6-a python3 "$STATE/frames6.py" recv 6 >"$STATE/recv6.out" 2>&1 &
    local rp=$!
    sleep 0.7
    X s6-b python3 "$STATE/frames6.py" send "$(mac_of s6-b)" "$(mac_of s6-a)" \
        "$(X s6-b ip -6 -o addr show dev eth0 scope link | awk '{print $4}' | cut -d/ -f1)" fd40:40:0:1::11 "$@"
    wait "$rp"
    cat "$STATE/recv6.out"
}
P0=$(hv3_counter "spoofed IPv6 source"); T0=$(hv3_counter "spoofed ND target"); R0=$(hv3_counter "RA guard"); D0=$(hv3_counter "DHCPv6 server on a VM port")
got=$(frames6_to_a spoof na-spoof fakell slaac outside legit ll na-legit)
echo "  s6-a received: $got"
check "control: s6-b's own IPv6 address arrives" grep -q "sf6-legit=" <<<"$got"
check "control: s6-b's own link-local arrives" grep -q "sf6-ll=" <<<"$got"
check "control: an advertisement of s6-b's own address arrives" grep -q "na-legit=" <<<"$got"
check_not "a spoofed IPv6 source (fd40:40:0:1::99) never arrives" grep -q "sf6-spoof" <<<"$got"
check_not "an advertisement for another address (::77) never arrives" grep -q "na-spoof" <<<"$got"
check_not "another link-local source (fe80::dead) never arrives" grep -q "sf6-fakell" <<<"$got"
check "s6-b's SLAAC address (its MAC's EUI-64 in the /64, not named by its port) arrives" grep -q "sf6-slaac=" <<<"$got"
check "a source outside the VPC's ranges (2001:db8:77::1, routed by the VM) arrives" grep -q "sf6-outside=" <<<"$got"
check "hv3 counted them (source $P0 -> $(hv3_counter "spoofed IPv6 source"), ND target $T0 -> $(hv3_counter "spoofed ND target"))" \
    test "$(hv3_counter "spoofed IPv6 source")" -ge $((P0 + 3)) -a "$(hv3_counter "spoofed ND target")" -ge $((T0 + 3))
got=$(frames6_to_a ra dhcp6 legit)
echo "  s6-a received: $got"
check "control: s6-b's own IPv6 address still arrives" grep -q "sf6-legit=" <<<"$got"
check_not "a router advertisement from s6-b never arrives" grep -q "ra=" <<<"$got"
check_not "a DHCPv6 server message from s6-b never arrives" grep -q "sf6-dhcp6" <<<"$got"
S6B_LL=$(X s6-b ip -6 -o addr show dev eth0 scope link | awk '{print $4}' | cut -d/ -f1)
check_not "s6-a has no default route learnt from it (via $S6B_LL)" bash -c "'$REPO/deploy/lab.sh' exec s6-a ip -6 route show default | grep -q 'via $S6B_LL '"
check_not "nor s6-c (no address from its prefix)" bash -c "'$REPO/deploy/lab.sh' exec s6-c ip -6 addr show | grep -q 'fd40:40:0:99:'"
check "hv3 counted the RA guard's drops (RA $R0 -> $(hv3_counter "RA guard"), DHCPv6 $D0 -> $(hv3_counter "DHCPv6 server on a VM port"))" \
    test "$(hv3_counter "RA guard")" -ge $((R0 + 3)) -a "$(hv3_counter "DHCPv6 server on a VM port")" -ge $((D0 + 3))
check "s6-b still reaches s6-a over IPv6 afterwards" X s6-b ping -6 -c 1 -W 1 -I fd40:40:0:1::12 fd40:40:0:1::11

section "12. ACL rules in IPv6: TCP 80 allowed, the rest denied, both ways; ND still works"
# listen6 VM PORT: an IPv6-only TCP server answering "VM:PORT" (beside the VM's IPv4 one).
listen6() {
    X "$1" setsid python3 -c '
import socket, sys
srv = socket.socket(socket.AF_INET6); srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("::", int(sys.argv[2]))); srv.listen(64)
while True:
    c, _ = srv.accept(); c.sendall(("%s:%s\n" % (sys.argv[1], sys.argv[2])).encode()); c.close()
' "$1" "$2" >/dev/null 2>&1 </dev/null &
}
for v in s6-a s6-b; do listen6 "$v" 80; listen6 "$v" 22; done
# connect6 VM DST PORT: like connect, from the port's own address (the VMs also hold SLAAC
# addresses from the router's RAs, which their ports do not name: anti-spoofing drops those).
connect6() {
    local src
    case $1 in s6-a) src=fd40:40:0:1::11 ;; s6-b) src=fd40:40:0:1::12 ;; esac
    X "$1" python3 -c '
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2, source_address=(sys.argv[3], 0))
print(s.makefile().readline().strip())' "$2" "$3" "$src"
}
check "without an ACL s6-b reaches s6-a:22 over IPv6 (the listener exists)" wait_for 10 connect6 s6-b fd40:40:0:1::11 22
check "apply s6-acl: tcp 80 within the tier's /64 both ways, default deny" \
    S acl apply s6-acl --tenant demo --vpc v6acl --tier s6 --default deny \
    --rule "10 ingress allow tcp 80 fd40:40:0:1::/64" --rule "20 egress allow tcp 80 fd40:40:0:1::/64"
check "the list's IPv6 rules are on hv3" wait_for 15 bash -c "'$REPO/deploy/lab.sh' exec hv3 nft list chain bridge stackfabric in6_$S6_VNI | grep -q 'tcp dport 80 ip6 saddr fd40:40:0:1::/64'"
check_eq "s6-b -> s6-a:80 connects over IPv6" "s6-a:80" "$(connect6 s6-b fd40:40:0:1::11 80)"
check_eq "s6-a -> s6-b:80 connects over IPv6 (the other direction)" "s6-b:80" "$(connect6 s6-a fd40:40:0:1::12 80)"
check_not "s6-b -> s6-a:22 is dropped" connect6 s6-b fd40:40:0:1::11 22
check_not "s6-a -> s6-b:22 is dropped" connect6 s6-a fd40:40:0:1::12 22
X s6-b ip -6 neigh flush dev eth0
check_not "ping over IPv6 is denied (no rule allows ICMPv6 echo)" X s6-b ping -6 -c 2 -W 1 -I fd40:40:0:1::12 fd40:40:0:1::11
check "but neighbour discovery resolved s6-a again under the ACL" bash -c "'$REPO/deploy/lab.sh' exec s6-b ip -6 neigh show fd40:40:0:1::11 | grep -q lladdr"
check_eq "and port 80 still connects after that" "s6-a:80" "$(connect6 s6-b fd40:40:0:1::11 80)"
check "hv3 counted the denials under the tier's default (in6 or eg6)" \
    test "$(( $(hv3_counter "ingress default" "in6_$S6_VNI") + $(hv3_counter "egress default" "eg6_$S6_VNI") ))" -ge 4

lab_finish
