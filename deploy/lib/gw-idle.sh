#!/usr/bin/env bash
# deploy/lib/gw-idle.sh - idle CPU of a gateway agent holding N VPC routers (called by
# deploy/bench.sh gw; needs root). The lab (deploy/lab.sh up --no-build) gets N-1 VPCs more
# (one tier each) next to the demo tenant's; once both gateways hold them all and gw1's
# agent has settled, its CPU (utime+stime, and with its finished children: ip, nft, vtysh)
# is read from /proc/PID/stat over S seconds (one 30 s resync falls in). The baseline is
# the same measurement, same lab, of OLD_GW_AGENT (another build of sf-gateway-agent, e.g.
# the one before the netlink observer); without it the baseline is empty.
# Then one change among the N routers: a new tier in one VPC (a bridge and a VXLAN device on
# the host, a veth pair into the router's namespace, its address, the router's nftables),
# five times, each once gw1 made no pass for 5 s, each timed by gw1's own
# sf_agent_intent_to_dataplane_seconds (the coordinator's
# stamp of the write to gw1's clean pass); the baseline is the same with gw1's agent restarted
# on the former `ip` executor (SF_GW_EXECUTOR=iproute2: one process per action), and, with
# OLD_GW_AGENT, with gw1 running that build. Medians.
#
#   gw-idle.sh [--vpcs N] [--idle-s S]     (defaults 200 and 30)
# Prints `figure,value,baseline,ratio` lines. LAB_PREFIX names the lab (default sfgi<pid>-).
# GW_IDLE_PERF_OUT=FILE: after the measurement, `perf record -g` gw1 for GW_IDLE_PERF_S (60) s
# and write the report to FILE (self time) and FILE.children (inclusive time).
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO" || exit 1
[ "$(id -u)" = 0 ] || { echo "gw-idle.sh needs root (network namespaces)" >&2; exit 1; }
N=200
IDLE_S=30
while [ $# -gt 0 ]; do
    case "$1" in
        --vpcs) N=$2; shift 2 ;;
        --idle-s) IDLE_S=$2; shift 2 ;;
        *) echo "usage: $0 [--vpcs N] [--idle-s S]" >&2; exit 2 ;;
    esac
done
export LAB_PREFIX=${LAB_PREFIX:-sfgi$$-}
P=$LAB_PREFIX
STATE=/tmp/sf-lab.${P%-}
BIN=${SF_BIN_DIR:-$REPO/target/release}
OLD=${OLD_GW_AGENT:-}
OLD_DIR=$(mktemp -d /tmp/sf-gw-idle.XXXXXX)

log() { printf '[gw-idle] %s\n' "$*" >&2; }
cleanup() {
    deploy/lab.sh down >/dev/null 2>&1 || true
    rm -rf "$OLD_DIR"
}
trap cleanup EXIT
S() { deploy/lab.sh sfctl "$@"; }
wait_until() { # SECONDS CMD...
    local end=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do [ $SECONDS -ge $end ] && return 1; sleep 1; done
}
namespaces_on() { ip netns list | grep -c "^${P}$1-vpc"; }
holds_all() { [ "$(namespaces_on gw1)" -ge "$N" ] && [ "$(namespaces_on gw2)" -ge "$N" ]; }
stat_of() { # PID -> "own own+children" in clock ticks
    awk '{ print $14 + $15, $14 + $15 + $16 + $17 }' "/proc/$1/stat"
}

# gw1's agent's metrics.
metrics() { ip netns exec "${P}gw1" curl -s -m 3 localhost:9101/metrics; }
# Passes gw1's agent made, from its sf_agent_pass_triggers_total (0 for a build without that
# metric): every one, or with `busy` all but its 30 s resync (deliveries, wakeups, lease moves).
passes() {
    metrics | awk -v busy="${1:-}" \
        '/^sf_agent_pass_triggers_total/ && !(busy && /resync/) { n += $2 } END { print n + 0 }'
}
busy_passes() { passes busy; }
# Whether gw1 made no such pass for 30 s. Holding every router is not idle yet: the peer
# gateway's announcements reach gw1 over minutes after both hold them all (BGP through the
# leaves), and each one moves gw1's failover status, which wakes a whole pass.
settled() {
    local before after
    before=$(busy_passes)
    sleep 30
    after=$(busy_passes)
    [ "$before" = "$after" ]
}

# idle PID - "<own %> <own+children %>" of a core over IDLE_S s, once the agent used under
# 5% over 2 s (its first pass is over).
idle() {
    local pid=$1 hz c0 c1 k0 k1 t0 t1
    hz=$(getconf CLK_TCK)
    for _ in $(seq 90); do
        read -r _ k0 < <(stat_of "$pid") || return 1
        sleep 2
        read -r _ k1 < <(stat_of "$pid") || return 1
        [ $(((k1 - k0) * 100 / hz)) -lt 10 ] && break
    done
    read -r c0 k0 < <(stat_of "$pid")
    t0=$(date +%s%N)
    sleep "$IDLE_S"
    read -r c1 k1 < <(stat_of "$pid")
    t1=$(date +%s%N)
    awk -v c="$((c1 - c0))" -v k="$((k1 - k0))" -v hz="$hz" -v ns="$((t1 - t0))" \
        'BEGIN { w = ns / 1e9; printf "%.2f %.2f\n", c / hz / w * 100, k / hz / w * 100 }'
}

log "lab up ($BIN)"
SF_BIN_DIR=$BIN deploy/lab.sh up --no-build >"$OLD_DIR/up.log" 2>&1 ||
    { tail -20 "$OLD_DIR/up.log" >&2; log "lab up failed"; exit 1; }
S tenant create bench >/dev/null || { log "tenant create bench failed"; exit 1; }
for i in $(seq 2 "$N"); do
    { S vpc create "b$i" --tenant bench --cidr "10.$((100 + i / 250)).$((i % 250)).0/24" &&
        S network create t --tenant bench --vpc "b$i" \
            --cidr "10.$((100 + i / 250)).$((i % 250)).0/25"; } >/dev/null ||
        { log "creating VPC b$i failed"; exit 1; }
done
wait_until 900 holds_all || { log "gw1 $(namespaces_on gw1), gw2 $(namespaces_on gw2) routers"; exit 1; }
log "gw1 holds $(namespaces_on gw1) routers, gw2 $(namespaces_on gw2)"
settle0=$SECONDS
wait_until 1200 settled || log "gw1 still woken by changes after 1,200 s: measuring anyway"
log "gw1 settled $((SECONDS - settle0)) s later (no pass but the resync for 30 s)"
read -r NEW_OWN NEW_ALL < <(idle "$(cat "$STATE/pids/gw1.pid")")
log "gw1 agent idle: ${NEW_OWN}% own, ${NEW_ALL}% with children"
if [ -n "${GW_IDLE_PERF_OUT:-}" ]; then # where gw1's idle time goes (perf report, text)
    log "perf record of gw1 for ${GW_IDLE_PERF_S:-60} s"
    timeout $((${GW_IDLE_PERF_S:-60} + 30)) perf record -F 999 -g -o "$OLD_DIR/perf.data" \
        -p "$(cat "$STATE/pids/gw1.pid")" -- sleep "${GW_IDLE_PERF_S:-60}" >/dev/null 2>&1
    timeout 300 perf report -i "$OLD_DIR/perf.data" --no-children --percent-limit 0.5 \
        --stdio >"$GW_IDLE_PERF_OUT" 2>/dev/null
    timeout 300 perf report -i "$OLD_DIR/perf.data" --children --percent-limit 2 \
        --stdio -g none >"$GW_IDLE_PERF_OUT.children" 2>/dev/null
fi
# gw1's metric NAME.
metric() { metrics | awk -v n="$1" '$1 == n { print $2 }'; }
# Waits (up to 90 s) until gw1 made no pass for 5 s: a change then meets no pass in flight
# (a resync converging every router, the first passes of a restarted agent).
quiet() {
    local end=$((SECONDS + 90)) a b
    while [ $SECONDS -lt $end ]; do
        a=$(passes); sleep 5; b=$(passes)
        [ "$a" = "$b" ] && return 0
    done
    log "gw1 still making passes after 90 s: measuring anyway"
}
# one_change FIRST - a new tier in VPCs bFIRST..bFIRST+4, one at a time, each once gw1 is
# quiet; prints the median of gw1's intent-to-dataplane for each (ms), or nothing on a failure.
one_change() {
    local v s0 c0 s1 c1 t0 out=()
    for v in $(seq "$1" $(($1 + 4))); do
        quiet
        s0=$(metric sf_agent_intent_to_dataplane_seconds_sum)
        c0=$(metric sf_agent_intent_to_dataplane_seconds_count)
        t0=$SECONDS
        S network create t2 --tenant bench --vpc "b$v" \
            --cidr "10.$((100 + v / 250)).$((v % 250)).128/25" >/dev/null ||
            { log "tier in b$v failed"; return 1; }
        while [ "$(metric sf_agent_intent_to_dataplane_seconds_count)" = "$c0" ]; do
            [ $((SECONDS - t0)) -gt 60 ] && { log "b$v: gw1 did not apply it in 60 s"; return 1; }
            sleep 0.05
        done
        s1=$(metric sf_agent_intent_to_dataplane_seconds_sum)
        c1=$(metric sf_agent_intent_to_dataplane_seconds_count)
        out+=("$(awk -v a="$s0" -v b="$s1" -v n="$((c1 - c0))" 'BEGIN { printf "%.0f", (b - a) / n * 1000 }')")
    done
    log "one change (ms): ${out[*]}"
    printf '%s\n' "${out[@]}" | sort -n | sed -n 3p
}
ONE_NEW=$(one_change $((N / 2)))
OLD_OWN="" OLD_ALL="" ONE_OLD=""
if [ -n "$OLD" ]; then
    for b in "$BIN"/*; do ln -s "$b" "$OLD_DIR/"; done
    rm -f "$OLD_DIR/sf-gateway-agent"
    ln -s "$OLD" "$OLD_DIR/sf-gateway-agent"
    deploy/lab.sh agent-stop gw1 >/dev/null
    SF_BIN_DIR=$OLD_DIR deploy/lab.sh agent-start gw1 >/dev/null || { log "old agent did not start"; exit 1; }
    read -r OLD_OWN OLD_ALL < <(idle "$(cat "$STATE/pids/gw1.pid")")
    log "gw1 old agent idle: ${OLD_OWN}% own, ${OLD_ALL}% with children"
    ONE_OLD=$(one_change $((N / 2 + 20)))
fi
log "gw1 agent restarted on the ip executor (SF_GW_EXECUTOR=iproute2), same build"
deploy/lab.sh agent-stop gw1 >/dev/null
SF_GW_EXECUTOR=iproute2 SF_BIN_DIR=$BIN deploy/lab.sh agent-start gw1 >/dev/null ||
    { log "the agent did not start on the ip executor"; exit 1; }
idle "$(cat "$STATE/pids/gw1.pid")" >/dev/null # its first pass over
ONE_IP=$(one_change $((N / 2 + 10)))
ratio() { [ -n "$2" ] && awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0) printf "%.1f", b / a }'; }
echo "figure,value,baseline,ratio"
echo "gw_one_change_intent_to_dataplane_ms_${N}_vpcs,${ONE_NEW:-n/a},${ONE_IP:-n/a} (ip executor),$(ratio "${ONE_NEW:-0}" "$ONE_IP")"
[ -n "$OLD" ] && echo "gw_one_change_intent_to_dataplane_ms_${N}_vpcs_vs_old,${ONE_NEW:-n/a},${ONE_OLD:-n/a} (OLD_GW_AGENT),$(ratio "${ONE_NEW:-0}" "$ONE_OLD")"
echo "gw_idle_agent_cpu_pct_${N}_vpcs_own,$NEW_OWN,${OLD_OWN:-n/a},$(ratio "$NEW_OWN" "$OLD_OWN")"
echo "gw_idle_agent_cpu_pct_${N}_vpcs_with_children,$NEW_ALL,${OLD_ALL:-n/a},$(ratio "$NEW_ALL" "$OLD_ALL")"
