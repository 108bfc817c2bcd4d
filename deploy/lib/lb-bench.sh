#!/usr/bin/env bash
# deploy/lib/lb-bench.sh - the Maglev load balancer against HAProxy (CloudStack's VR load
# balancer), same backends, same client, same path, same run (called by deploy/bench.sh part
# lb; needs root).
#
#   lb-bench.sh --bin DIR [--seconds S] [--connections C] [--latency-connections L] [--repeat R]
#
# Namespaces: client --(c0 | transit)-- router --(bridge br0: t0..t2)-- b0, b1, b2. The
# router holds the table the gateway agent renders for a load balancer 203.0.113.20:80 over
# the three backends (`dp_bench lb-table`: the real renderer, 65,537-slot map), and runs
# Debian's HAProxy on 203.0.113.21:80 (`mode tcp`, `balance roundrobin`, as CloudStack's VR
# configures a TCP load-balancing rule) over the same backends. Backends: `dp_bench
# http-serve` (a minimal HTTP server that closes after each answer). Client: Debian's wrk
# with `Connection: close`, so every request is a new connection: requests/s is new
# connections/s at C concurrent connections (default 32: both balancers saturate the CPU);
# p50 and p99 latency from wrk's distribution at L connections (default 1: one request at a
# time, so latency is the path's, not a queue's) and at C. Prints `figure,value,
# baseline,ratio` lines (median of R runs; the run order alternates).
#
# The ceiling: a third address, 203.0.113.22, that every backend holds and the router merely
# routes (ECMP hashed on the 5-tuple, untracked: no conntrack, no NAT, no balancer at all),
# measured the same way. No L4 balancer in this router can beat plain routing, so the ceiling
# over HAProxy is the most any of them could show on this machine, where client, router and
# backends share the CPUs. Each run also reads the machine's busy CPU time (/proc/stat) and
# divides it by the connections made: CPU per connection, and the balancer's own share of it
# (its path's cost minus the ceiling's).
set -euo pipefail
BIN=""
SECS=8
CONNS=32
LCONNS=1
REPEAT=3
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) BIN=$2; shift 2 ;;
        --seconds) SECS=$2; shift 2 ;;
        --connections) CONNS=$2; shift 2 ;;
        --latency-connections) LCONNS=$2; shift 2 ;;
        --repeat) REPEAT=$2; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "lb-bench needs root (network namespaces)" >&2; exit 1; }
DP=${BIN:?--bin DIR}/examples/dp_bench
[ -x "$DP" ] || { echo "missing $DP (cargo build --release -p sf-gateway-agent --example dp_bench)" >&2; exit 1; }
for c in haproxy wrk; do
    command -v "$c" >/dev/null ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$c" >/dev/null ||
        { echo "$c not installable" >&2; exit 1; }
done
P=${LAB_PREFIX:-sflb$$-}
NC=${P}cli NR=${P}rtr
NB=("${P}b0" "${P}b1" "${P}b2")
TMP=$(mktemp -d /tmp/sf-lb-bench.XXXXXX)
PIDS=()
cleanup() {
    local p ns
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.3
    for ns in "$NC" "$NR" "${NB[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
log() { printf '[lb-bench] %s\n' "$*" >&2; }

topology() {
    local ns i
    for ns in "$NC" "$NR" "${NB[@]}"; do ip netns add "$ns" && ip -n "$ns" link set lo up; done
    ip -n "$NC" link add c0 type veth peer name transit netns "$NR"
    ip -n "$NC" addr add 192.0.2.1/30 dev c0
    ip -n "$NC" link set c0 up
    ip -n "$NC" route add 203.0.113.0/24 via 192.0.2.2
    ip -n "$NR" addr add 192.0.2.2/30 dev transit
    ip -n "$NR" link set transit up
    ip -n "$NR" link add br0 type bridge
    ip -n "$NR" addr add 10.10.1.1/24 dev br0
    ip -n "$NR" link set br0 up
    ip -n "$NR" addr add 203.0.113.21/32 dev lo
    ip -n "$NR" route add default via 192.0.2.1
    for i in 0 1 2; do
        ip -n "$NR" link add "t$i" type veth peer name eth0 netns "${NB[$i]}"
        ip -n "$NR" link set "t$i" master br0 up
        ip -n "${NB[$i]}" addr add "10.10.1.2$i/24" dev eth0
        ip -n "${NB[$i]}" link set eth0 up
        ip -n "${NB[$i]}" route add default via 10.10.1.1
        ip -n "${NB[$i]}" addr add 203.0.113.22/32 dev lo
        ip netns exec "${NB[$i]}" "$DP" http-serve --port 80 --name "b$i" >/dev/null 2>&1 &
        PIDS+=($!)
    done
    ip netns exec "$NR" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=1
    # Many short connections: reuse TIME_WAIT ports on the connecting sides.
    for ns in "$NC" "$NR"; do
        ip netns exec "$ns" sysctl -qw net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range="1024 65000"
    done
    "$DP" lb-table --backends 3 | ip netns exec "$NR" nft -f -
    # The ceiling's path: routed to the three backends, never tracked, let in from transit.
    ip -n "$NR" route add 203.0.113.22/32 nexthop via 10.10.1.20 nexthop via 10.10.1.21 nexthop via 10.10.1.22
    ip netns exec "$NR" nft insert rule ip stackfabric forward iifname transit ip daddr 203.0.113.22 accept
    ip netns exec "$NR" nft -f - <<'NFT'
table ip bench_ceiling {
    chain raw {
        type filter hook prerouting priority raw; policy accept;
        ip daddr 203.0.113.22 notrack
        ip saddr 203.0.113.22 notrack
    }
}
NFT
    cat >"$TMP/haproxy.cfg" <<EOF
global
    maxconn 4096
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
listen web
    bind 203.0.113.21:80
    balance roundrobin
    server b0 10.10.1.20:80
    server b1 10.10.1.21:80
    server b2 10.10.1.22:80
EOF
    ip netns exec "$NR" haproxy -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 &
    PIDS+=($!)
    local vip
    for vip in 203.0.113.20 203.0.113.21 203.0.113.22; do
        for i in $(seq 50); do
            ip netns exec "$NC" curl -s -m 1 "http://$vip/" >/dev/null && break
            sleep 0.1
        done
        # Every backend answers through each balancer.
        local seen
        seen=$(for i in $(seq 12); do ip netns exec "$NC" curl -s -m 1 "http://$vip/"; done | sort -u | tr '\n' ' ')
        [ "$seen" = "b0 b1 b2 " ] || { log "$vip reaches [$seen], not b0 b1 b2"; exit 1; }
        # The ceiling's connections are untracked; the balancers' are.
        if [ "$vip" = 203.0.113.22 ]; then
            ! ip netns exec "$NR" conntrack -L -d 203.0.113.22 2>/dev/null | grep -q . ||
                { log "the ceiling's connections are tracked"; exit 1; }
        fi
    done
}

# busy_ticks: the machine's CPU time not idle, in clock ticks (/proc/stat, all CPUs).
busy_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }

# wrk_run VIP CONNECTIONS: "connections_per_s p50_ms p99_ms errors cpu_us_per_connection" of
# one wrk run.
wrk_run() {
    local before after
    before=$(busy_ticks)
    ip netns exec "$NC" wrk -t "$(($2 < 2 ? 1 : 2))" -c "$2" -d "${SECS}s" --latency -H "Connection: close" \
        "http://$1/" >"$TMP/wrk.out" 2>&1 || true
    after=$(busy_ticks)
    python3 - "$TMP/wrk.out" "$((after - before))" "$(getconf CLK_TCK)" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
busy_s = int(sys.argv[2]) / int(sys.argv[3])
def ms(label):
    m = re.search(r"^\s+%s\s+([\d.]+)(us|ms|s)\s*$" % label, t, re.M)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
rps = re.search(r"Requests/sec:\s+([\d.]+)", t)
errs = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", t))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
done = re.search(r"^\s*(\d+) requests in", t, re.M)
cpu_us = busy_s * 1e6 / int(done.group(1)) if done and int(done.group(1)) else float("nan")
print(f"{float(rps.group(1)) if rps else 0:.0f} {ms('50%'):.2f} {ms('99%'):.2f} {errs + (int(non2xx.group(1)) if non2xx else 0)} {cpu_us:.1f}")
PY
}

median() { sort -g | sed -n "$(( (REPEAT + 1) / 2 ))p"; }

topology
log "both balancers reach all three backends"
for kind in maglev haproxy ceiling; do : >"$TMP/$kind" && : >"$TMP/$kind.lat"; done
for i in $(seq "$REPEAT"); do
    order=(maglev haproxy ceiling)
    [ $((i % 2)) = 0 ] && order=(ceiling haproxy maglev)
    for kind in "${order[@]}"; do
        case $kind in
            maglev) vip=203.0.113.20 ;;
            haproxy) vip=203.0.113.21 ;;
            ceiling) vip=203.0.113.22 ;;
        esac
        for c in "$CONNS" "$LCONNS"; do
            r=$(wrk_run "$vip" "$c")
            log "$kind run $i, $c connections: conn/s p50_ms p99_ms errors cpu_us/conn = $r"
            if [ "$c" = "$CONNS" ]; then echo "$r" >>"$TMP/$kind"; else echo "$r" >>"$TMP/$kind.lat"; fi
            sleep 2
        done
    done
done
col() { awk -v c="$2" '{print $c}' "$TMP/$1" | median; }
ratio() { python3 -c 'import sys; a,b=map(float,sys.argv[1:]); print(f"{a/b:.2f}" if b > 0 else "")' "$@"; }
echo "figure,value,baseline,ratio"
m=$(col maglev 1) h=$(col haproxy 1)
echo "lb_new_connections_per_s_3_backends,$m,$h (HAProxy 2.6 mode tcp; same backends and client),$(ratio "$m" "$h")"
for f in maglev.lat:"$LCONNS" maglev:"$CONNS"; do
    k=${f%%:*} c=${f##*:} hk=haproxy${k#maglev}
    m=$(col "$k" 2) h=$(col "$hk" 2)
    echo "lb_request_p50_ms_${c}_connections,$m,$h (HAProxy),$(ratio "$m" "$h")"
    m=$(col "$k" 3) h=$(col "$hk" 3)
    echo "lb_request_p99_ms_${c}_connections,$m,$h (HAProxy),$(ratio "$m" "$h")"
done
m=$(col maglev.lat 1) h=$(col haproxy.lat 1)
echo "lb_new_connections_per_s_${LCONNS}_connections,$m,$h (HAProxy),$(ratio "$m" "$h")"
m=$(col maglev 1) c=$(col ceiling 1) h=$(col haproxy 1)
echo "lb_ceiling_new_connections_per_s_${CONNS}_connections,$c,$h (HAProxy; the ceiling: plain routing untracked),$(ratio "$c" "$h")"
echo "lb_maglev_share_of_ceiling_${CONNS}_connections,$m,$c (plain routing untracked),$(ratio "$m" "$c")"
m=$(col maglev 5) c=$(col ceiling 5) h=$(col haproxy 5)
echo "lb_machine_cpu_us_per_connection_${CONNS}_connections,$m,$h (HAProxy),$(ratio "$m" "$h")"
echo "lb_ceiling_cpu_us_per_connection_${CONNS}_connections,$c,,"
mb=$(python3 -c 'import sys; print(f"{float(sys.argv[1]) - float(sys.argv[2]):.1f}")' "$m" "$c")
hb=$(python3 -c 'import sys; print(f"{float(sys.argv[1]) - float(sys.argv[2]):.1f}")' "$h" "$c")
echo "lb_balancer_cpu_us_per_connection_over_ceiling_${CONNS}_connections,$mb,$hb (HAProxy),$(ratio "$mb" "$hb")"
echo "# wrk errors and non-2xx answers per run (median): Maglev $(col maglev 4), HAProxy $(col haproxy 4)"
