#!/usr/bin/env bash
# deploy/bench.sh - StackFabric's benchmarks. Every figure is printed next to a baseline
# measured in the same run, as one CSV line `figure,value,baseline,ratio` (lines starting with
# `#` say what a part measures), so numbers from a busy or slow machine still compare
# honestly. Figures are recorded in docs/PERFORMANCE.md.
#
#   deploy/bench.sh [--only PART[,PART...]] [--smoke]
#
# PARTS: maglev, compile, rest, fanout, scale, hv, acl, failover, nat, lb, gw (default: all, in
# that order). gw: OLD_GW_AGENT=PATH adds the idle CPU of that build as a baseline; the
# agent's former process-based paths (SF_GW_EXECUTOR=iproute2) are the programming baseline.
# --smoke runs each part at tiny sizes (about two minutes in all): not figures, a check that the
# benchmarks still run and print their lines. deploy/test.sh runs it, so they cannot rot.
# fanout and scale start a real etcd and sf-coordinator; hv, acl, failover, nat, lb and gw
# build network-namespace labs and need root (they are skipped, and say so, without it);
# SF_BENCH_LAB_PREFIX names their namespaces (default sfbh<pid>-, sfbench<pid>-, sfbl<pid>-).
# The fanout part runs twice, the second time with the liveness intervals from before issue 22
# as its baseline (SF_BENCH_FANOUT_LEGACY=0 skips that run).
# SF_BENCH_ETCD_TMPFS=1 keeps the fanout and scale parts' etcd data on tmpfs (their figures
# then leave out this disk's fsync).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"

ALL_PARTS=(maglev compile rest fanout scale hv acl failover nat lb gw)
ONLY=""
SMOKE=0
usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --only) ONLY=${2:?--only needs a list of parts}; shift 2 ;;
        --only=*) ONLY=${1#--only=}; shift ;;
        --smoke) SMOKE=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
PARTS=("${ALL_PARTS[@]}")
if [ -n "$ONLY" ]; then
    IFS=, read -r -a PARTS <<<"$ONLY"
    for p in "${PARTS[@]}"; do
        case " ${ALL_PARTS[*]} " in
            *" $p "*) ;;
            *) echo "unknown part: $p (parts: ${ALL_PARTS[*]})" >&2; exit 2 ;;
        esac
    done
fi
# Sizes: full figures, or tiny ones for the smoke run.
if [ "$SMOKE" = 1 ]; then
    AGENTS=${SF_BENCH_AGENTS:-3,6}
    VPCS=${SF_BENCH_VPCS:-10,100}
    NETWORKS=${SF_BENCH_NETWORKS:-10}
    ROUTERS=${SF_BENCH_ROUTERS:-5}
else
    AGENTS=${SF_BENCH_AGENTS:-100,1000,5000}
    VPCS=${SF_BENCH_VPCS:-1000,100000}
    NETWORKS=${SF_BENCH_NETWORKS:-5000}
    ROUTERS=${SF_BENCH_ROUTERS:-1000}
fi
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release
TMP=$(mktemp -d)
# Namespaces a part creates are listed in $TMP/netns (parts run in a pipeline's subshell) and
# removed here, also after a failure.
cleanup() {
    local ns
    if [ -f "$TMP/netns" ]; then
        while read -r ns; do ip netns del "$ns" 2>/dev/null || true; done <"$TMP/netns"
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
# netns_add NAME: a namespace removed at exit.
netns_add() { ip netns add "$1" && echo "$1" >>"$TMP/netns"; }

# Keeps a part's figure lines and `#` comments; drops its own CSV header (this script prints
# one for all) and any progress lines.
rows() { grep -E '^([A-Za-z0-9_]+,|#)' | grep -v '^figure,value,baseline,ratio$' || true; }
is_root() { [ "$(id -u)" = 0 ]; }

part_maglev() {
    echo "# Maglev: table build and disruption, baseline hash-mod-N and ideal 1/N"
    local smoke=()
    [ "$SMOKE" = 1 ] && smoke=(--smoke)
    cargo run --release --locked -q -p sf-core --example maglev_bench -- "${smoke[@]}" | rows
}

part_compile() {
    echo "# Compiling one gateway and its leaf with N VPCs on the gateway pair, baseline linear from the smallest N"
    local smoke=()
    [ "$SMOKE" = 1 ] && smoke=(--smoke)
    cargo run --release --locked -q -p sf-core --example gateway_compile_bench -- "${smoke[@]}" | rows
}

part_rest() {
    echo "# CloudStack's REST lists: GET /api/v2/vpc and /api/v2/nat, median of 5, in-memory store"
    cargo test --release --locked -q -p sf-coordinator --test rest_contract \
        vpc_and_nat_lists_with_100_and_10000_objects -- --nocapture 2>/dev/null |
        grep -E '^rest ' |
        # "rest GET /api/v2/vpc ms at 10000 (baseline: at 100),v,b,r" -> one figure name.
        sed -E 's#^rest GET /api/v2/([a-z]+) ms at ([0-9]+) \(baseline: at ([0-9]+)\),([^,]+),([^,]+),#rest_get_\1_ms_\2_objects,\4,\5 (\3 objects),#' |
        rows
}

# The fleet benchmarks need etcd, the coordinator and sf-bench.
fleet_ready() {
    if is_root; then
        # shellcheck source=deploy/deps.sh
        source "$REPO/deploy/deps.sh"
        sf_install_deps >/dev/null
    fi
    command -v etcd >/dev/null || [ -x /usr/bin/etcd ] || {
        echo "etcd not installed (run as root to install)" >&2
        return 1
    }
    cargo build --release --locked -q -p sf-coordinator -p sf-bench
    # One socket per agent in each of the simulator, the coordinator and etcd.
    ulimit -n "$(ulimit -Hn)"
}

part_fanout() {
    echo "# Fleet fan-out and reconnect: real coordinator + etcd, simulated agents"
    echo "# (the real agent runtime and Sync client, in-memory dataplane), N = $AGENTS"
    fleet_ready
    local extra=()
    [ "$SMOKE" = 1 ] && extra=(--samples-all 2 --samples-one 3 --lease-ttl 5)
    "$BIN/sf-bench" --bin-dir "$BIN" fanout --agents "$AGENTS" "${extra[@]}" | rows
    # The same-run baseline: keep-alive and status flush as before issue 22 (pings every 5 s
    # from both ends, status flushed after 3 s); figures end in _legacy_liveness.
    if [ "$SMOKE" != 1 ] && [ "${SF_BENCH_FANOUT_LEGACY:-1}" = 1 ]; then
        echo "# Baseline: the same fleet with the old liveness intervals"
        "$BIN/sf-bench" --bin-dir "$BIN" fanout --agents "$AGENTS" --legacy-liveness | rows
    fi
}

part_scale() {
    echo "# Intent scale: coordinator start-up and per-change cost, VPCs = $VPCS"
    fleet_ready
    local extra=()
    [ "$SMOKE" = 1 ] && extra=(--samples 3)
    "$BIN/sf-bench" --bin-dir "$BIN" scale --vpcs "$VPCS" "${extra[@]}" | rows
}

part_hv() {
    echo "# One hypervisor with $NETWORKS networks: agent vs one ip command per step"
    is_root || { echo "# needs root (network namespaces); skipped"; return 0; }
    local log="$TMP/hv.log"
    LAB_PREFIX="${SF_BENCH_LAB_PREFIX:-sfbh$$-}" deploy/lib/hv-scale-proof.sh --bin "$BIN" --networks "$NETWORKS" >"$log" 2>&1 || {
        tail -30 "$log" >&2
        echo "hypervisor scale benchmark failed" >&2
        return 1
    }
    sed -n '/^figure,value/,$p' "$log" | grep -v "HV SCALE PROOF" | rows
}

part_acl() {
    echo "# Network ACLs: one hypervisor, 10 vs 10,000 rules (real FRR/EVPN lab in namespaces)"
    is_root || { echo "# needs root (network namespaces); skipped"; return 0; }
    # acl-proof.sh has one size (10 and 10,000 rules in a full FRR lab): minutes, too long
    # for the smoke run.
    if [ "$SMOKE" = 1 ]; then
        echo "# smoke: skipped (acl-proof.sh has no small size)"
        return 0
    fi
    local log="$TMP/acl.log"
    LAB_PREFIX="${SF_BENCH_LAB_PREFIX:-sfbench$$-}" deploy/lib/acl-proof.sh --bin "$BIN" >"$log" 2>&1 || {
        tail -20 "$log" >&2
        echo "ACL benchmark failed" >&2
        return 1
    }
    python3 - "$log" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def grab(pattern):
    m = re.search(pattern, text)
    return float(m.group(1)) if m else float("nan")
small = grab(r"apply 10 rules on hv1: .*?acl_change_ms=(\d+)")
big = grab(r"one prefix each: .*?acl_change_ms=(\d+)")
sets = grab(r"two prefixes each: .*?acl_change_ms=(\d+)")
tp_small = grab(r"10 rules: ok \d+ ([\d.]+)")
tp_big = grab(r"10,000 rules: ok \d+ ([\d.]+)")
c_small = grab(r"new connections.*?10 rules: (\d+) ms")
c_big = grab(r"10,000 rules: (\d+) ms")
print(f"acl_apply_ms_10000_rules,{big:.0f},{small:.0f} (10 rules),{big/small:.1f}")
print(f"acl_apply_ms_10000_rules_2_cidrs_each,{sets:.0f},{small:.0f} (10 rules),{sets/small:.1f}")
print(f"vm_to_vm_stream_MBps_10000_rules,{tp_big:.0f},{tp_small:.0f} (10 rules),{tp_big/tp_small:.2f}")
print(f"200_new_connections_ms_10000_rules,{c_big:.0f},{c_small:.0f} (10 rules),{c_big/c_small:.2f}")
PY
}

part_failover() {
    echo "# SoftGate failover: outage (20 ms ping) vs a keepalived VRRP pair, same run"
    is_root || { echo "# needs root (network namespaces); skipped"; return 0; }
    if [ "$SMOKE" = 1 ]; then
        echo "# smoke: skipped (a whole lab; SF_BENCH_FAILOVER_SMOKE=1 is its small size)"
        return 0
    fi
    # Its names read "failover outage ms, node death, 1 VPC (vs keepalived ...)": one name in
    # snake case, the "(vs ...)" moved to the baseline, so each line has four fields.
    deploy/lib/failover-bench.sh | grep -v '^figure,value,baseline,ratio$' | awk -F, '{
        r = $NF; b = $(NF - 1); v = $(NF - 2); n = $1
        for (i = 2; i <= NF - 3; i++) n = n "," $i
        base = ""
        if (match(n, /\(vs [^)]*\)/)) { base = substr(n, RSTART + 1, RLENGTH - 2); n = substr(n, 1, RSTART - 1) }
        gsub(/,/, ";", base); gsub(/[^A-Za-z0-9]+/, "_", n); sub(/_$/, "", n)
        print n "," v "," b (base == "" ? "" : " (" base ")") "," r
    }' || { echo "failover benchmark failed" >&2; return 1; }
}

# lab_bench WHAT CMD... - runs a lab benchmark script with its output in a log; prints its
# figure lines, or the log's tail when it fails.
lab_bench() {
    local what=$1 log
    shift
    log=$(mktemp "$TMP/bench.XXXXXX")
    "$@" >"$log" 2>&1 || {
        tail -20 "$log" >&2
        echo "$what benchmark failed" >&2
        return 1
    }
    rows <"$log"
}

part_nat() {
    echo "# NAT packet rate, every packet a new flow: SoftGate's nftables vs an iptables DNAT chain"
    is_root || { echo "# needs root (network namespaces); skipped"; return 0; }
    cargo build --release --locked -q -p sf-gateway-agent --example dp_bench
    local extra=()
    [ "$SMOKE" = 1 ] && extra=(--sizes "10,100" --seconds 0.5 --repeat 1)
    LAB_PREFIX="${SF_BENCH_LAB_PREFIX:-sfbn$$-}" \
        lab_bench NAT deploy/lib/nat-bench.sh --bin "$BIN" "${extra[@]}"
}

part_lb() {
    echo "# Load balancer: a health flip in a 65,537-slot Maglev map, slot diff vs whole-map reload"
    is_root || { echo "# needs root (network namespaces); skipped"; return 0; }
    cargo build --release --locked -q -p sf-gateway-agent --example dp_bench
    local prefix="${SF_BENCH_LAB_PREFIX:-sfbl$$-}" sizes=3,10 rounds=5
    [ "$SMOKE" = 1 ] && { sizes=3; rounds=1; }
    netns_add "${prefix}flip"
    "$BIN/examples/dp_bench" lb-flip --netns "${prefix}flip" --backends "$sizes" --rounds "$rounds" | rows
    ip netns del "${prefix}flip"
    echo "# Load balancer: new connections/s and latency through the Maglev VIP vs HAProxy (wrk, 3 backends)"
    local extra=()
    [ "$SMOKE" = 1 ] && extra=(--seconds 1 --repeat 1)
    LAB_PREFIX="$prefix" lab_bench "load balancer" deploy/lib/lb-bench.sh --bin "$BIN" "${extra[@]}"
}

part_gw() {
    echo "# One gateway's observation of $ROUTERS VPC routers: netlink sockets vs the iproute2 observer"
    is_root || { echo "# needs root (network namespaces); skipped"; return 0; }
    cargo build --release --locked -q -p sf-gateway-agent --example gw_observe_bench \
        --example gw_program_bench
    "$BIN/examples/gw_observe_bench" --routers "$ROUTERS" \
        --prefix "${SF_BENCH_LAB_PREFIX:-sfgw$$-}" | rows
    echo "# One gateway programming $ROUTERS VPC routers, and one change among them: netlink executor vs the ip executor"
    "$BIN/examples/gw_program_bench" --routers "$ROUTERS" \
        --prefix "${SF_BENCH_LAB_PREFIX:-sfgp$$-}p" | rows
    # The agent itself idle in a lab with SF_BENCH_GW_VPCS VPCs (default 200); the baseline
    # is OLD_GW_AGENT (another build), when given. Then one change among those VPCs on the
    # agent (a new tier), against the same agent on the ip executor. A whole lab: not in the
    # smoke run.
    if [ "$SMOKE" = 1 ]; then
        echo "# smoke: idle agent skipped (a whole lab)"
        return 0
    fi
    local log="$TMP/gw-idle.log"
    LAB_PREFIX="${SF_BENCH_LAB_PREFIX:-sfgi$$-}" SF_BIN_DIR="$BIN" \
        deploy/lib/gw-idle.sh --vpcs "${SF_BENCH_GW_VPCS:-200}" 2>"$log" | rows || {
        tail -20 "$log" >&2
        echo "gateway idle benchmark failed" >&2
        return 1
    }
}

# Checks that a part printed at least one well-formed figure line: in the smoke run a part
# that prints nothing (its output format changed, a grep no longer matches) fails here.
check_rows() {
    local part=$1 out=$2
    if ! grep -qE '^[A-Za-z0-9_]+,[^,]+,[^,]+,[^,]+$' "$out"; then
        echo "bench part $part printed no figure line" >&2
        return 1
    fi
}

echo "figure,value,baseline,ratio"
for p in "${PARTS[@]}"; do
    out="$TMP/$p.out"
    "part_$p" | tee "$out"
    if [ "$SMOKE" = 1 ] && ! grep -q '^# .*skipped' "$out"; then
        check_rows "$p" "$out"
    fi
done
