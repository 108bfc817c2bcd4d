#!/usr/bin/env bash
# End-to-end tests of the Maglev load balancer with real connections from the
# internet host to a public VIP on the SoftGate serving the VPC.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$REPO/tests/e2e/lib.sh"
lab_test sfb

lb_json() { S -o json lb show "$1" --tenant demo --vpc blue; }
backend_health() { lb_json "$1" | json "[b['health'] for b in d['backends'] if b['ip']=='$2'][0]"; }

# spread N VIP:PORT -> prints "name count" lines for N new connections from the internet host.
spread() {
    X internet bash -c "for i in \$(seq $1); do curl -s -m 2 http://$2/; done" | sort | uniq -c | awk '{print $2, $1}'
}
# by_port VIP FIRST COUNT -> "port backend" for connections from fixed client ports. The client
# closes with SO_LINGER 0 (RST, no TIME_WAIT) so the same 5-tuple can be reused at once.
by_port() {
    X internet python3 - "$1" "$2" "$3" <<'PY'
import socket, struct, sys
vip, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for p in range(first, first + count):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.settimeout(3)
    name = ""
    try:
        s.bind(("", p))
        s.connect((vip, 80))
        s.sendall(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        name = data.decode(errors="replace").strip().splitlines()[-1]
    except Exception as e:
        name = "error:" + type(e).__name__
    finally:
        s.close()
    print(p, name)
PY
}

section "lab up (prefix $LAB_PREFIX)"
if ! L up --no-build; then fail "deploy/lab.sh up"; finish; exit 1; fi
pass "lab up"
check "third backend blue-web-3 on hv3" L vm-add blue-web-3 hv3 demo blue web 10.10.1.13

section "1. 300 new connections spread evenly over three backends"
check "create LB web 203.0.113.20:80 with an HTTP check" S lb create web --tenant demo --vpc blue \
    --vip 203.0.113.20 --port 80 --backend 10.10.1.11:80 --backend 10.10.1.12:80 --backend 10.10.1.13:80 \
    --health http --path / --expect-status 200 --interval-ms 1000 --timeout-ms 500 --rise 2 --fall 2
check "VIP answers" wait_for 30 X internet curl -s -m 1 http://203.0.113.20/
check "all backends healthy" wait_for 15 bash -c "'$REPO/deploy/lab.sh' sfctl -o json lb show web --tenant demo --vpc blue | python3 -c \"import json,sys; sys.exit(0 if all(b['health']=='up' for b in json.load(sys.stdin)['backends']) else 1)\""
SPREAD=$(spread 300 203.0.113.20)
while read -r line; do echo "    $line"; done <<<"$SPREAD"
for b in blue-web-1 blue-web-2 blue-web-3; do
    n=$(awk -v b="$b" '$1==b {print $2}' <<<"$SPREAD"); n=${n:-0}
    check "$b got $n of 300 (33% +- 10% is 69-129)" test "$n" -ge 69 -a "$n" -le 129
done

section "2. a stopped backend leaves within interval x fall; other flows keep their backend"
# Hold 12 established connections (request not yet sent) across the change.
X internet python3 - >"$STATE/held.ready" 2>&1 <<'PY' &
import socket, time, sys
socks = []
for i in range(12):
    s = socket.create_connection(("203.0.113.20", 80), timeout=5)
    socks.append(s)
print("open", flush=True)
time.sleep(6)
alive = answered = 0
for s in socks:
    try:
        s.sendall(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
        data = s.recv(4096).decode(errors="replace")
        if data:
            answered += 1
            print("answer", data.strip().splitlines()[-1])
        else:
            print("closed")
    except Exception as e:
        print("error", type(e).__name__)
PY
HELD=$!
sleep 1.5
check "stop blue-web-3's server" L vm-http-stop blue-web-3
t0=$(date +%s.%N)
check "blue-web-3 is marked down" wait_for 10 bash -c "[ \"\$('$REPO/deploy/lab.sh' sfctl -o json lb show web --tenant demo --vpc blue | python3 -c \"import json,sys; print([b['health'] for b in json.load(sys.stdin)['backends'] if b['ip']=='10.10.1.13'][0])\")\" = down ]"
pass "detected down after $(python3 -c "import time; print(round(time.time()-$t0,1))") s (interval 1 s x fall 2, plus status reporting)"
# The flip rewrote only the slots that changed hands (about 1/3 of 65,537 here), not the
# whole map: the serving gateway logs each load as "lb0: K of 65537 slots" (a whole load is
# "lb0: all 65537 slots").
flip_slots() {
    grep -ao 'LoadLbMaps.*lb0: [0-9]* of 65537 slots' "$STATE/logs/$(lb_json web | json "d['gateway']").log" |
        tail -1 | grep -o '[0-9]* of 65537' | cut -d' ' -f1
}
K=$(flip_slots)
check "the flip rewrote ${K:-no} slots of 65537 (0 < K < half), not the whole map" \
    test "${K:-0}" -gt 0 -a "${K:-65537}" -lt 32768
AFTER=$(spread 60 203.0.113.20)
check "no new connection reaches blue-web-3 ($(echo "$AFTER" | tr '\n' ' '))" bash -c "! grep -q blue-web-3 <<<'$AFTER'"
wait $HELD
sed "s/^/    /" "$STATE/held.ready"
answered=$(grep -c '^answer' "$STATE/held.ready"); lost=$(grep -c '^error\|^closed' "$STATE/held.ready")
check "held connections on the healthy backends still answer from them ($answered answered, $lost were on the stopped one)" \
    test "$answered" -ge 1 -a $((answered + lost)) -eq 12
check "no held connection was answered by a different backend than it was bound to (only web-1/web-2 answer)" \
    bash -c "! grep '^answer' '$STATE/held.ready' | grep -q blue-web-3"
# A restarted agent starts each backend as the map it finds installed holds it: blue-web-3,
# DOWN before the restart, stays out instead of taking new connections until its probes fail
# again (interval x fall). A client opens a new connection every ~50 ms meanwhile.
GW=$(lb_json web | json "d['gateway']")
seeded() { grep -c 'backends start as installed.*lb=web' "$STATE/logs/$GW.log"; }
SEEDED=$(seeded)
# shellcheck disable=SC2016  # expanded inside the lab host
X internet bash -c 'for i in $(seq 120); do curl -s -m 1 http://203.0.113.20/ || echo failed; sleep 0.05; done' >"$STATE/restart.log" 2>&1 &
LOOP=$!
sleep 0.3
check "stop $GW's agent (SIGTERM) while blue-web-3 is down" L agent-stop "$GW"
check "start it again at once" L agent-start "$GW"
check "its first pass seeds web's backends from the installed map" wait_for 20 bash -c "[ \$(grep -c 'backends start as installed.*lb=web' '$STATE/logs/$GW.log') -gt $SEEDED ]"
wait $LOOP
RESTART=$(sort "$STATE/restart.log" | uniq -c | awk '{print $2 "=" $1}' | tr '\n' ' ')
check "all 120 new connections across the restart reached blue-web-1 or blue-web-2 ($RESTART)" \
    test "$(grep -c '^blue-web-[12]$' "$STATE/restart.log")" -eq 120
check_eq "blue-web-3 is still down after the restart" down "$(backend_health web 10.10.1.13)"
# A failover while blue-web-3 is down. The standby cannot check (its tier links are down
# while passive), so it builds its tables over the serving gateway's word (its status, compiled
# into the standby's router): blue-web-3 is out of its map before the failover, and the new
# gateway's checks start from it. Before, the standby's map held every backend and the new
# gateway sent new connections to the dead one until its first check (0.38 s in one run).
OLD=$(lb_json web | json "d['gateway']")
STANDBY=gw1; [ "$OLD" = gw1 ] && STANDBY=gw2
# blue's router on the standby: its namespace with a load balancer (web is blue's only one).
BLUE_NS=$(for ns in $(ip netns list | awk '{print $1}' | grep "^${LAB_PREFIX}$STANDBY-vpc"); do
    ip netns exec "$ns" nft list set ip stackfabric lbsum 2>/dev/null | grep -q 'sf:lb0=' && echo "$ns"
done | head -1)
# web_mask - the member mask of web's map (lb0) in BLUE_NS, from its lbsum comment (hex; bit
# 2 is blue-web-3, 10.10.1.13:80, the third backend in name order).
web_mask() {
    ip netns exec "$BLUE_NS" nft list set ip stackfabric lbsum 2>/dev/null | grep -o 'sf:lb0=[^"]*' | sed 's/.*-//'
}
no_web3() { local m; m=$(web_mask); [ -n "$m" ] && [ $((16#$m & 4)) -eq 0 ]; }
check "passive $STANDBY ($BLUE_NS) leaves blue-web-3 out of web's map" wait_for 10 no_web3
pass "its member mask is $(web_mask) (7 would hold all three)"
# Watch the standby's map through the drain (every 50 ms) while a client opens a new
# connection every ~50 ms.
# shellcheck disable=SC2016  # expanded inside the lab host
X internet bash -c 'for i in $(seq 100); do curl -s -m 3 http://203.0.113.20/ || echo failed; sleep 0.05; done' >"$STATE/drain.log" 2>&1 &
LOOP=$!
(while kill -0 "$LOOP" 2>/dev/null; do web_mask; sleep 0.05; done) >"$STATE/masks.log" 2>&1 &
WATCH=$!
sleep 0.3
check "drain $OLD while blue-web-3 is down" S gateway drain "$OLD"
check "the other gateway serves web" wait_for 20 bash -c "[ \"\$('$REPO/deploy/lab.sh' sfctl -o json lb show web --tenant demo --vpc blue | python3 -c \"import json,sys; d=json.load(sys.stdin); print(d['gateway'] not in ('', '$OLD'))\")\" = True ]"
NEW=$(lb_json web | json "d['gateway']")
check_eq "the standby took over" "$STANDBY" "$NEW"
wait $LOOP; wait $WATCH
MASKS=$(sort "$STATE/masks.log" | uniq -c | awk '{print $2 "x" $1}' | tr '\n' ' ')
check "$NEW's map never held blue-web-3 through the drain (masks seen: $MASKS)" \
    bash -c "[ -s '$STATE/masks.log' ] && ! grep -qv '^3$' '$STATE/masks.log'"
DRAIN=$(sort "$STATE/drain.log" | uniq -c | awk '{print $2 "=" $1}' | tr '\n' ' ')
check "all 100 new connections across the drain reached blue-web-1 or blue-web-2 ($DRAIN)" \
    test "$(grep -c '^blue-web-[12]$' "$STATE/drain.log")" -eq 100
check_eq "$NEW reports blue-web-3 down (its checks started from the old gateway's word)" down "$(backend_health web 10.10.1.13)"
check "undrain $OLD" S gateway undrain "$OLD"
check "start blue-web-3's server again" L vm-http-start blue-web-3
check "blue-web-3 returns (rise 2)" wait_for 15 bash -c "[ \"\$('$REPO/deploy/lab.sh' sfctl -o json lb show web --tenant demo --vpc blue | python3 -c \"import json,sys; print([b['health'] for b in json.load(sys.stdin)['backends'] if b['ip']=='10.10.1.13'][0])\")\" = up ]"
check "and receives new connections again" bash -c "'$REPO/deploy/lab.sh' exec internet bash -c 'for i in \$(seq 60); do curl -s -m 2 http://203.0.113.20/; done' | grep -q blue-web-3"

section "3. an HTTP check takes out a backend answering 500; a TCP check does not"
check "create LB web-tcp 203.0.113.21:80 with a TCP check" S lb create web-tcp --tenant demo --vpc blue \
    --vip 203.0.113.21 --port 80 --backend 10.10.1.11:80 --backend 10.10.1.12:80 --backend 10.10.1.13:80 \
    --health tcp --interval-ms 1000 --timeout-ms 500 --rise 2 --fall 2
check "web-tcp: all up" wait_for 15 bash -c "'$REPO/deploy/lab.sh' sfctl -o json lb show web-tcp --tenant demo --vpc blue | python3 -c \"import json,sys; sys.exit(0 if all(b['health']=='up' for b in json.load(sys.stdin)['backends']) else 1)\""
check "blue-web-2 now answers HTTP 500" L vm-http-stop blue-web-2
X blue-web-2 setsid python3 -c '
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(500); self.end_headers(); self.wfile.write(b"broken\n")
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("0.0.0.0", 80), H).serve_forever()' >/dev/null 2>&1 < /dev/null &
check "blue-web-2 answers 500" wait_for 5 bash -c "[ \"\$('$REPO/deploy/lab.sh' exec blue-web-2 curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1/)\" = 500 ]"
check "HTTP check: blue-web-2 down" wait_for 10 bash -c "[ \"\$('$REPO/deploy/lab.sh' sfctl -o json lb show web --tenant demo --vpc blue | python3 -c \"import json,sys; print([b['health'] for b in json.load(sys.stdin)['backends'] if b['ip']=='10.10.1.12'][0])\")\" = down ]"
sleep 3
check_eq "TCP check: blue-web-2 still up" "up" "$(backend_health web-tcp 10.10.1.12)"
AFTER=$(spread 60 203.0.113.20)
check "web sends no new connection to blue-web-2 ($(echo "$AFTER" | tr '\n' ' '))" bash -c "! grep -q blue-web-2 <<<'$AFTER'"

section "3b. a backend that goes down loses its established connections (cut at the gateway)"
# The backend's server keeps running and its established connection stays open at the VM; only
# the health checks (from the VPC router's addresses) are refused, so only the gateway can end
# the stream: it deletes the conntrack entries of a backend leaving the table.
backend_is() { [ "$(backend_health "$1" "$2")" = "$3" ]; }
echo_server blue-web-1 7000
check "create LB echo 203.0.113.23:7000 -> blue-web-1:7000 with a TCP check" S lb create echo --tenant demo --vpc blue \
    --vip 203.0.113.23 --port 7000 --backend 10.10.1.11:7000 --health tcp --interval-ms 1000 --timeout-ms 500 --rise 2 --fall 2
check "echo: blue-web-1 up" wait_for 20 backend_is echo 10.10.1.11 up
check "the VIP answers" wait_for 30 bash -c "'$REPO/deploy/lab.sh' exec internet curl -s -m 1 telnet://203.0.113.23:7000 </dev/null | grep -q hello"
stream lbecho internet 203.0.113.23 7000
check "a stream from the internet through the VIP flows" wait_for 10 streamed lbecho 5
check "blue-web-1 refuses new connections from inside the VPC (the health checks)" X blue-web-1 nft -f - <<'EOF2'
table inet sfcut {
    chain in {
        type filter hook input priority 0; policy accept;
        ip saddr 10.10.0.0/16 tcp dport 7000 tcp flags syn drop
    }
}
EOF2
check "echo: blue-web-1 down" wait_for 15 backend_is echo 10.10.1.11 down
check "the established stream through the VIP is cut within 10 s" wait_for 10 grep -q "cut after" "$STATE/lbecho.log"
check "clean up: LB echo and the VM's filter" bash -c "'$REPO/deploy/lab.sh' sfctl lb delete echo --tenant demo --vpc blue && '$REPO/deploy/lab.sh' exec blue-web-1 nft delete table inet sfcut"

section "4. same table on every gateway; a failover keeps each 5-tuple on its backend"
DIGEST1=$(lb_json web | json "d['table_digest']"); GW1=$(lb_json web | json "d['gateway']")
check "gateway $GW1 reports table digest $DIGEST1" test -n "$DIGEST1" -a -n "$GW1"
# Section 3b's clean-up (an LB deleted: the router's table reloaded) settles first: once,
# in CI, one of the 20 connections taken right after it was refused (not seen in other runs).
check "VIP answers before the failover" wait_for 30 X internet curl -s -m 1 http://203.0.113.20/
by_port 203.0.113.20 20000 20 >"$STATE/ports.before"
check "drain $GW1 (VPC moves to its standby)" S gateway drain "$GW1"
check "the other gateway serves the LB" wait_for 20 bash -c "[ \"\$('$REPO/deploy/lab.sh' sfctl -o json lb show web --tenant demo --vpc blue | python3 -c \"import json,sys; d=json.load(sys.stdin); print(d['gateway'] != '$GW1' and d['table_digest'] != '')\")\" = True ]"
GW2=$(lb_json web | json "d['gateway']")
check "VIP answers through $GW2" wait_for 30 X internet curl -s -m 1 http://203.0.113.20/
check "health settled on $GW2" wait_for 15 bash -c "[ \"\$('$REPO/deploy/lab.sh' sfctl -o json lb show web --tenant demo --vpc blue | python3 -c \"import json,sys; d=json.load(sys.stdin); print(d['table_digest'])\")\" = '$DIGEST1' ]"
check_eq "$GW2 reports the same table digest as $GW1" "$DIGEST1" "$(lb_json web | json "d['table_digest']")"
by_port 203.0.113.20 20000 20 >"$STATE/ports.after"
check_eq "all 20 client 5-tuples were answered by a backend before the failover" 20 "$(grep -c ' blue-web-[0-9]$' "$STATE/ports.before")"
check "every client 5-tuple reaches the same backend after the failover" diff "$STATE/ports.before" "$STATE/ports.after"
check "undrain $GW1" S gateway undrain "$GW1"

section "5. bad input names the field and changes nothing"
bad() {
    local field=$1; shift
    local out rc
    out=$(S lb create "$@" 2>&1); rc=$?
    if [ $rc -eq 1 ] && grep -q "$field" <<<"$out"; then pass "rejected, names $field: $out"; else fail "expected rejection naming $field, got rc=$rc: $out"; fi
}
bad "lb.backends\[0\].ip" x1 --tenant demo --vpc blue --vip 203.0.113.30 --port 80 --backend 10.10.9.9:80
bad lb.vip x2 --tenant demo --vpc blue --vip 203.0.113.20 --port 80 --backend 10.10.1.11:80
bad lb.port x3 --tenant demo --vpc blue --vip 203.0.113.30 --port 70000 --backend 10.10.1.11:80
bad lb.health.type x4 --tenant demo --vpc blue --vip 203.0.113.30 --port 80 --backend 10.10.1.11:80 --health icmp
check_eq "only the two load balancers exist" "2" "$(S -o json lb list | json "len(d)")"

section "6. source CIDRs: only listed sources reach the VIP; cleared, everyone does"
IDEV=$(X internet ip -o -4 addr show | awk '/198\.51\.100\.10\// {print $2; exit}')
check "second internet source 198.51.100.11 on $IDEV (inside the lab's internet namespace)" \
    X internet ip addr add 198.51.100.11/32 dev "$IDEV"
from() { X internet curl -s -m 2 --interface "$1" "http://$2/"; }
bad lb.source_cidrs\\[1\\] x5 --tenant demo --vpc blue --vip 203.0.113.22 --port 80 --backend 10.10.1.11:80 \
    --source-cidr 198.51.100.10/32 --source-cidr 198.51.100.10/24
check "create LB src 203.0.113.22:80 allowing 198.51.100.10/32 and 192.0.2.0/24" S lb create src --tenant demo --vpc blue \
    --vip 203.0.113.22 --port 80 --backend 10.10.1.11:80 --health none \
    --source-cidr 198.51.100.10/32 --source-cidr 192.0.2.0/24
check "lb show lists the sources" bash -c "'$REPO/deploy/lab.sh' sfctl lb show src --tenant demo --vpc blue | grep -q 'sources 198.51.100.10/32, 192.0.2.0/24'"
check "allowed source 198.51.100.10 reaches the VIP" wait_for 30 from 198.51.100.10 203.0.113.22
check "the same client still reaches the unrestricted VIP from 198.51.100.11" from 198.51.100.11 203.0.113.20
check "source 198.51.100.11 (not listed) does not reach the VIP" bash -c "! '$REPO/deploy/lab.sh' exec internet curl -s -m 2 --interface 198.51.100.11 http://203.0.113.22/"
check "and is not answered on a second try either" bash -c "! '$REPO/deploy/lab.sh' exec internet curl -s -m 2 --interface 198.51.100.11 http://203.0.113.22/"
# The drop is counted by the named rule in the serving gateway's VPC namespace.
src_drops() {
    local gw ns
    gw=$(lb_json src | json "d['gateway']")
    for ns in $(ip netns list | awk -v p="^${LAB_PREFIX}${gw}-vpc" '$1 ~ p {print $1}'); do
        ip netns exec "$ns" nft -j list chain ip stackfabric lb_source 2>/dev/null
    done | python3 -c "
import json, sys
n = 0
for line in sys.stdin:
    for e in json.loads(line).get('nftables', []):
        r = e.get('rule')
        if r and r.get('comment') == 'lb 203.0.113.22:80/tcp source':
            n += sum(x['counter']['packets'] for x in r['expr'] if 'counter' in x)
print(n)"
}
DROPS=$(src_drops)
check "the gateway's rule 'lb 203.0.113.22:80/tcp source' counted the dropped packets ($DROPS)" test "${DROPS:-0}" -ge 2
check "delete LB src" S lb delete src --tenant demo --vpc blue
check "recreate LB src without source CIDRs" S lb create src --tenant demo --vpc blue \
    --vip 203.0.113.22 --port 80 --backend 10.10.1.11:80 --health none
check "lb show: sources any" bash -c "'$REPO/deploy/lab.sh' sfctl lb show src --tenant demo --vpc blue | grep -q 'sources any'"
check "198.51.100.11 now reaches the VIP" wait_for 30 from 198.51.100.11 203.0.113.22
check "198.51.100.10 still does" from 198.51.100.10 203.0.113.22
check "delete LB src" S lb delete src --tenant demo --vpc blue
check_eq "again only the two load balancers exist" "2" "$(S -o json lb list | json "len(d)")"

lab_finish
