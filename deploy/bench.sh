#!/usr/bin/env bash
# deploy/bench.sh - StackFabric's benchmarks. Every figure is printed next to a baseline
# measured in the same run (figure,value,baseline,ratio), so numbers from a busy or slow
# machine still compare honestly. Figures are recorded in docs/PERFORMANCE.md.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"

echo "# Maglev: table build and disruption, baseline hash-mod-N and ideal 1/N"
cargo run --release --locked -q -p sf-core --example maglev_bench

echo
echo "# CloudStack's REST lists: GET /api/v2/vpc and /api/v2/nat, median of 5, in-memory store"
cargo test --release --locked -q -p sf-coordinator --test rest_contract \
    vpc_and_nat_lists_with_100_and_10000_objects -- --nocapture 2>/dev/null | grep -E '^(figure|rest )'

echo
echo "# Fleet fan-out and reconnect: real coordinator + etcd, simulated agents"
echo "# (the real agent runtime and Sync client, in-memory dataplane), N = ${SF_BENCH_AGENTS:-100,1000,5000}"
if [ "$(id -u)" = 0 ]; then
    # shellcheck source=deploy/deps.sh
    source "$REPO/deploy/deps.sh"
    sf_install_deps >/dev/null
fi
command -v etcd >/dev/null || [ -x /usr/bin/etcd ] || { echo "etcd not installed (run as root to install)"; exit 1; }
cargo build --release --locked -q -p sf-coordinator -p sf-bench
# One socket per agent in each of the simulator, the coordinator and etcd.
ulimit -n "$(ulimit -Hn)"
target/release/sf-bench --bin-dir target/release fanout --agents "${SF_BENCH_AGENTS:-100,1000,5000}"

echo
echo "# Intent scale: coordinator start-up and per-change cost, 1,000 vs 100,000 VPCs"
target/release/sf-bench --bin-dir target/release scale --vpcs "${SF_BENCH_VPCS:-1000,100000}"

echo
echo "# One hypervisor with ${SF_BENCH_NETWORKS:-5000} networks: agent vs one ip command per step"
if [ "$(id -u)" = 0 ]; then
    HV_LOG=$(mktemp)
    LAB_PREFIX="sfbh$$-" deploy/lib/hv-scale-proof.sh --networks "${SF_BENCH_NETWORKS:-5000}" >"$HV_LOG" 2>&1 || {
        tail -30 "$HV_LOG"
        rm -f "$HV_LOG"
        echo "hypervisor scale benchmark failed"
        exit 1
    }
    sed -n '/^figure,value/,$p' "$HV_LOG" | grep -v "HV SCALE PROOF"
    rm -f "$HV_LOG"
else
    echo "needs root (network namespaces); skipped"
fi

echo
echo "# Network ACLs: one hypervisor, 10 vs 10,000 rules (real FRR/EVPN lab in namespaces)"
[ "$(id -u)" = 0 ] || { echo "ACL benchmark needs root (network namespaces); skipped"; exit 0; }
ACL_LOG=$(mktemp)
trap 'rm -f "$ACL_LOG"' EXIT
LAB_PREFIX="sfbench$$-" deploy/lib/acl-proof.sh >"$ACL_LOG" 2>&1 || {
    tail -20 "$ACL_LOG"
    echo "ACL benchmark failed"
    exit 1
}
python3 - "$ACL_LOG" <<'PY'
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
print("figure,value,baseline,ratio")
print(f"acl_apply_ms_10000_rules,{big:.0f},{small:.0f} (10 rules),{big/small:.1f}")
print(f"acl_apply_ms_10000_rules_2_cidrs_each,{sets:.0f},{small:.0f} (10 rules),{sets/small:.1f}")
print(f"vm_to_vm_stream_MBps_10000_rules,{tp_big:.0f},{tp_small:.0f} (10 rules),{tp_big/tp_small:.2f}")
print(f"200_new_connections_ms_10000_rules,{c_big:.0f},{c_small:.0f} (10 rules),{c_big/c_small:.2f}")
PY

echo
echo "== SoftGate failover: outage (20 ms ping) vs a keepalived VRRP pair, same run"
deploy/lib/failover-bench.sh || echo "failover benchmark failed"
