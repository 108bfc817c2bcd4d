# shellcheck shell=bash
# Assertion helpers for StackFabric's end-to-end tests. Sourced by the test scripts.
# Every check prints PASS/FAIL with a reason; failures are counted and make the script fail.

E2E_FAILS=0
E2E_PASSES=0

pass() { E2E_PASSES=$((E2E_PASSES + 1)); printf '  PASS %s\n' "$*"; }
fail() { E2E_FAILS=$((E2E_FAILS + 1)); printf '  FAIL %s\n' "$*"; }

# check DESCRIPTION CMD... : passes when CMD succeeds.
check() {
    local what=$1; shift
    if "$@" >/tmp/e2e.$$.out 2>&1; then pass "$what"; else
        fail "$what: \`$*\` failed: $(tail -c 600 /tmp/e2e.$$.out)"; fi
}

# check_not DESCRIPTION CMD... : passes when CMD fails.
check_not() {
    local what=$1; shift
    if "$@" >/tmp/e2e.$$.out 2>&1; then fail "$what: \`$*\` unexpectedly succeeded: $(tail -c 300 /tmp/e2e.$$.out)"; else
        pass "$what"; fi
}

# check_eq DESCRIPTION EXPECTED ACTUAL
check_eq() {
    if [ "$2" = "$3" ]; then pass "$1"; else fail "$1: expected '$2', got '$3'"; fi
}

# wait_for TIMEOUT_S CMD... : polls CMD every 0.25 s until it succeeds.
wait_for() {
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -ge $deadline ] && return 1
        sleep 0.25
    done
}

section() { printf '\n== %s\n' "$*"; }

finish() {
    printf '\n%d passed, %d failed\n' "$E2E_PASSES" "$E2E_FAILS"
    rm -f /tmp/e2e.$$.out
    [ "$E2E_FAILS" -eq 0 ]
}

# ---------------------------------------------------------------------------
# Lab tests: the preamble every test that drives deploy/lab.sh shares.

REPO=${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
L() { "$REPO/deploy/lab.sh" "$@"; }
X() { L exec "$@"; }
S() { L sfctl "$@"; }
# Background pids the test started (killed on exit before the lab goes down).
BG=()

# lab_test DEFAULT - a test that drives a lab: exports LAB_PREFIX (default DEFAULT<pid>-),
# sets STATE (the lab's state dir), and on exit kills BG, runs the test's own `test_exit`
# when it defines one, and takes the lab down, also after a failure.
lab_test() {
    export LAB_PREFIX=${LAB_PREFIX:-$1$$-}
    # shellcheck disable=SC2034  # read by the tests
    STATE=/tmp/sf-lab.${LAB_PREFIX%-}
    trap lab_exit EXIT
}
lab_exit() {
    local p
    for p in "${BG[@]}"; do kill "$p" 2>/dev/null; done
    if declare -F test_exit >/dev/null; then test_exit; fi
    L down >/dev/null 2>&1 || true
}

# json EXPR - evaluates the Python expression EXPR with d = the JSON document on stdin.
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

# node_is NODE FIELD VALUE - `sfctl status` shows NODE's FIELD (lease, in_sync, ...) as VALUE
# (Python's spelling: True, False, up, down).
node_is() {
    [ "$(S -o json status 2>/dev/null | json "[n for n in d['nodes'] if n['name']=='$1'][0]['$2']")" = "$3" ]
}

# announcers ADDR - the gateways announcing ADDR/32 (an IPv6 ADDR: ADDR/128; a prefix with its
# length: that prefix), as BGP paths at leaf1 and leaf2 show them.
announcers() {
    local l p=$1 query
    case $p in */*) ;; *:*) p=$p/128 ;; *) p=$p/32 ;; esac
    query="show ip bgp $p json"
    [[ $p == *:* ]] && query="show bgp ipv6 unicast $p json"
    for l in leaf1 leaf2; do
        vtysh --vty_socket "$STATE/frr/$l" -c "$query" 2>/dev/null |
            python3 -c '
import json, sys
d = json.load(sys.stdin)
for p in d.get("paths", []):
    if " " in p.get("aspath", {}).get("string", "").strip():
        continue  # relayed by another node, not originated by this neighbour
    peer = p.get("peer", {})
    name = peer.get("hostname") or peer.get("interface") or peer.get("peerId")
    if name and name.startswith("gw"):
        print(name)'
    done | sort -u | tr '\n' ' ' | sed 's/ $//'
}
# announced_by ADDR NODE - NODE alone announces ADDR/32 (/128).
announced_by() { [ "$(announcers "$1")" = "$2" ]; }
one_announcer() { local a; a=$(announcers "$1"); [ -n "$a" ] && [ "$a" = "${a%% *}" ]; }

# never_two SECONDS ADDR - samples the leaves every 0.2 s: never more than one announcer.
never_two() {
    local end=$((SECONDS + $1)) a
    while [ $SECONDS -lt "$end" ]; do
        a=$(announcers "$2")
        if [ "$a" != "${a%% *}" ]; then
            echo "two announcers: $a" >&2
            return 1
        fi
        sleep 0.2
    done
}
# lb_maps VIP - for a failure's message: per router namespace of every gateway whose NAT
# table names VIP, how many slots of each load balancer map point at each backend, its lbsum
# digests, and the serving gateway's last map loads.
lb_maps() {
    local ns
    for ns in $(ip netns list | awk '{print $1}' | grep "^${LAB_PREFIX}gw[0-9]*-vpc"); do
        ip netns exec "$ns" nft list table ip stackfabric 2>/dev/null | grep -qF "$1" || continue
        echo "$ns:"
        ip netns exec "$ns" nft list set ip stackfabric lbsum 2>&1 | grep -o 'sf:[^"]*' | sed 's/^/  /'
        for m in $(ip netns exec "$ns" nft -t list maps ip 2>/dev/null | awk '$1 == "map" && $2 ~ /^lb[0-9]+$/ {print $2}'); do
            printf '  %s: ' "$m"
            ip netns exec "$ns" nft list map ip stackfabric "$m" 2>&1 |
                grep -o '[0-9]\+\.[0-9.]* \. [0-9]\+' | sort | uniq -c | tr -s ' \n' ' '
            echo
        done
    done
    grep -ah 'LoadLbMaps\|LoadNft\|backend \(UP\|DOWN\)' "$STATE"/logs/gw*.log 2>/dev/null | sort | tail -n 12 | cut -c1-300
}

# lab_finish - a lab test's last step: takes the lab down, checks that no namespace of this
# run remains, and prints the result (finish).
lab_finish() {
    section "lab down"
    lab_exit
    trap - EXIT
    check "no namespace of this run remains" bash -c "! ip netns list | grep -q '^$LAB_PREFIX'"
    finish
}

# echo_server VM PORT - a TCP server in VM answering a greeting, then "ok N" for each line
# read (killed with the VM's namespace at lab down).
echo_server() {
    X "$1" setsid python3 -c '
import socket, sys, threading
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[1]))); srv.listen(64)
def serve(c):
    c.sendall(b"hello\n"); n = 0
    for line in c.makefile("rb"):
        n += 1
        c.sendall(b"ok %d\n" % n)
    c.close()
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
' "$2" >/dev/null 2>&1 </dev/null &
}

# stream LOG FROM IP PORT - a client in FROM sending a line to IP:PORT every 0.2 s (for up to
# 40 s) and reading each answer; $STATE/LOG.log gains "ok N" per answer and ends with
# "cut after N" once the connection breaks (reset, or no answer within 2 s).
stream() {
    X "$2" python3 -c '
import socket, sys, time
n = 0
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
    s.settimeout(2)
    f = s.makefile("rb"); f.readline()
    for i in range(200):
        s.sendall(b"x\n")
        if not f.readline():
            raise OSError("closed")
        n += 1
        print("ok", n, flush=True)
        time.sleep(0.2)
    print("lived", flush=True)
except OSError as e:
    print("cut after", n, repr(e), flush=True)' "$3" "$4" >"$STATE/$1.log" 2>&1 &
    BG+=($!)
}
# streamed LOG N - the stream has had at least N answers and is not cut.
streamed() { grep -q "^ok $2\$" "$STATE/$1.log" && ! grep -q "cut after" "$STATE/$1.log"; }
