#!/usr/bin/env bash
# hv-scale-proof.sh - one hypervisor namespace carrying 5,000 networks (more than VLAN ids
# allow), programmed by sf-hypervisor-agent, next to the same networks created the way
# CloudStack's per-network script does it: one `ip`/`bridge` process per command.
#
#   sudo LAB_PREFIX=sfh- deploy/lib/hv-scale-proof.sh [--keep] [--bin DIR] [--networks N]
#       [--idle-s S] [--nice L]
#
# DIR (default target/release) holds sf-hypervisor-agent (built with
# `cargo build --release -p sf-hypervisor-agent` if missing). N defaults to 5000, S (the idle
# CPU window) to 30. With OLD_AGENT=PATH (e.g. an agent built from an older commit), that
# agent's idle CPU is measured the same way right after, as a baseline. L (default 0) is the
# scheduling priority (`nice -n L`) of the agent and of the baseline alike: 0 is how the agent
# runs under its systemd unit (deploy/systemd, no Nice=), next to FRR at 0. Until session 41
# both ran at 10: with FRR's zebra and bgpd busy on both cores, a niced agent got a fraction
# of its share, and its programming time measured FRR's CPU more than its own.
#
# Two independent fabrics in namespaces (prefix $LAB_PREFIX, default sfh-), so neither run
# imports the other's routes:
#   agent:    leaf1 (AS 65101, EVPN transit) -- hv1 (AS 65001, VTEP 10.255.1.1)
#   baseline: leaf2 (AS 65102, EVPN transit) -- hv2 (AS 65002, VTEP 10.255.1.2)
# Both hypervisors start alike: the agent's `--apply-file` pass with zero networks renders
# and applies their FRR configuration (eBGP unnumbered, advertise-all-vni), so both FRRs
# carry exactly the agent's configuration before any network exists. Then, with the leaf
# sessions up:
#   1. hv1: the agent applies N networks (VNI 2000001.., one VM port each in the desired
#      state); timed until the apply returns (all links exist), until zebra on hv1 knows N
#      L2 VNIs and until leaf1 has received N EVPN routes (type-3, one per VNI) from hv1.
#   2. hv1: the same desired state applied again (nothing to change): the resync cost.
#   2b. hv1: one network more (N+1 in the desired state), --no-frr: the cost of a change of
#      one network among N: one agent process applies N, then N+1 (two --apply-file), so the
#      second pass is the delta path a running daemon takes (the link view kept from netlink
#      link messages, only the changed network planned); its own elapsed time.
#   2c. hv1: the agent as a daemon (desired state from its on-disk cache, coordinator and
#      etcd unreachable, so nothing but its own loop runs), idle: CPU over S seconds from
#      /proc/PID/stat (utime+stime), after its first pass.
#   3. hv2: the same N networks with one process per command, as CloudStack's per-network
#      script does, in the agent's own order and with the agent's own options (see
#      baseline.sh below; 8 processes per network on both sides), timed the same way
#      against leaf2.
# Both end states are then checked link by link (kind, VNI, VTEP, dstport, nolearning,
# master, bridge-port learning off / neigh_suppress on, up; bridges stp off, up), and the
# leaves' type-3 routes are checked to carry every VNI (route target ASN:VNI).
# Output ends with a CSV block (figure,value,baseline,ratio). Exit 0 only if every check
# passes; cleanup (namespaces, FRR, agent, temp files) on any exit unless --keep.
#
# Runtime about 4-6 minutes on 2 shared cores, plus the kernel's teardown of the 20,000
# links (about 90 s, waited for at the end). Mind a shared machine: during that teardown
# the kernel holds the RTNL lock, so link/address changes in EVERY namespace (the host's
# too) wait for it; see the report printed at cleanup.
# shellcheck disable=SC2317  # functions invoked indirectly (trap, netlab_wait)
set -u -o pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export LAB_PREFIX=${LAB_PREFIX:-sfh-}
# shellcheck source=netlab.sh source-path=SCRIPTDIR
. "$HERE/netlab.sh"

KEEP=0
N=5000
IDLE_S=30
NICE=0
BIN=
while [ $# -gt 0 ]; do
    case "$1" in
        --keep) KEEP=1 ;;
        --bin) BIN=$(realpath "$2") || exit 2; shift ;;
        --networks) N=$2; shift ;;
        --idle-s) IDLE_S=$2; shift ;;
        --nice) NICE=$2; shift ;;
        *) echo "usage: $0 [--keep] [--bin DIR] [--networks N] [--idle-s S] [--nice L]" >&2; exit 2 ;;
    esac
    shift
done
case "$N" in ''|*[!0-9]*|0) echo "bad --networks '$N'" >&2; exit 2 ;; esac
case "$IDLE_S" in ''|*[!0-9]*|0) echo "bad --idle-s '$IDLE_S'" >&2; exit 2 ;; esac
case "$NICE" in ''|*[!0-9]*) echo "bad --nice '$NICE' (0-19)" >&2; exit 2 ;; esac
if [ -z "$BIN" ]; then
    BIN=$(realpath "$HERE/../../target/release")
    if ! [ -x "$BIN/sf-hypervisor-agent" ]; then
        echo "building sf-hypervisor-agent (release)" >&2
        (cd "$HERE/../.." && nice -n 10 cargo build --release -p sf-hypervisor-agent) || exit 2
    fi
fi
HV_AGENT=$BIN/sf-hypervisor-agent
[ -x "$HV_AGENT" ] || { echo "sf-hypervisor-agent not built in $BIN" >&2; exit 2; }
for t in jq nsenter python3; do
    command -v "$t" >/dev/null || { echo "missing tool $t" >&2; exit 2; }
done
P=$LAB_PREFIX
VNI0=2000001
# Give up waiting for one phase (programming + advertising) after this many seconds.
PHASE_TIMEOUT_S=${PHASE_TIMEOUT_S:-280}
POLL_S=0.5
FAIL=0
BG_PIDS=()

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
log() { printf '[%6d ms] %s\n' $(( $(now_ms) - T0 )) "$*"; }
check() { # check DESCRIPTION CMD...
    local d=$1; shift
    if "$@"; then log "PASS: $d"; else log "FAIL: $d"; FAIL=1; fi
}
finish() {
    local rc=$? pid
    for pid in "${BG_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    if [ "$KEEP" = 1 ]; then
        echo "--keep: lab left running; clean with: . $HERE/netlab.sh; netlab_cleanup $P"
    else
        local t
        t=$(now_ms)
        netlab_cleanup "$P"
        # The kernel tears the namespaces down after `ip netns del` returns, holding the RTNL
        # (one rcu_barrier per bridge, br_multicast_dev_del): wait for it, so that this run
        # ends when the host's link changes run again (an `ip link` in a probe namespace).
        if ip netns add "${P}rtnl-probe" 2>/dev/null; then
            ip -n "${P}rtnl-probe" link set lo up
            ip netns del "${P}rtnl-probe"
        fi
        echo "cleanup: namespaces deleted and torn down by the kernel in $(( $(now_ms) - t )) ms"
        # FRR daemons holding thousands of interfaces exit only once that is done
        for _ in $(seq 60); do netlab_check_clean "$P" 2>/dev/null && break; sleep 1; done
        if netlab_check_clean "$P"; then echo "cleanup: no namespace/process/dir left"; else rc=1; fi
    fi
    exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

leaf_conf() { # leaf_conf K - EVPN transit leaf K with one hypervisor port hvK
    cat <<EOF
frr defaults datacenter
hostname leaf$1
ip forwarding
ipv6 forwarding
!
router bgp 6510$1
 bgp router-id 10.255.0.$1
 no bgp ebgp-requires-policy
 bgp bestpath as-path multipath-relax
 neighbor FABRIC peer-group
 neighbor FABRIC remote-as external
 neighbor hv$1 interface peer-group FABRIC
 !
 address-family ipv4 unicast
  network 10.255.0.$1/32
 exit-address-family
 !
 address-family l2vpn evpn
  neighbor FABRIC activate
 exit-address-family
exit
!
EOF
}

# gen.py NODE N FIRST_VNI > json - NodeDesired of hypervisor hvK (AS 6500K, VTEP
# 10.255.1.K, uplink leafK) with N networks, each its own VPC /24 with one VM port.
write_gen() {
    cat >"$NETLAB_DIR/gen.py" <<'EOF'
import json, sys
node, n, first = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
k = int(node[2:])
objs = {"underlay": {"kind": "underlay", "asn": 65000 + k, "router_id": "10.255.1.%d" % k,
                     "loopback": "10.255.1.%d" % k, "neighbors": ["leaf%d" % k],
                     "evpn": "vtep"}}
for i in range(n):
    vni = first + i
    p = "10.%d.%d" % (i // 256 % 256, i % 256)
    objs["net/%d" % vni] = {
        "kind": "l2_network", "vni": vni, "tenant": "scale", "vpc": "vpc%d" % i,
        "network": "tier%d" % i, "cidr": p + ".0/24", "gateway": p + ".1",
        "ports": [{"name": "vm%d-nic0" % i, "ip": p + ".11",
                   "mac": "02:00:%02x:%02x:%02x:11" % (i >> 16 & 255, i >> 8 & 255, i & 255)}]}
print(json.dumps({"node": node, "revision": 1, "objects": objs}))
EOF
}

# baseline.sh VTEP FIRST_VNI N - the same networks, one process per command, as CloudStack's
# modifyvxlan-evpn.sh creates a network (ip link add vxlan<VNI> type vxlan id <VNI> local
# <VTEP> dstport 4789 nolearning; ip link set up; sysctl -qw net.ipv6.conf.<dev>.disable_ipv6=1;
# ip link add brvx-<VNI> type bridge; ip link set up; sysctl ...; ip link set vxlan<VNI>
# master brvx-<VNI>), in the agent's order and with the agent's options: stp_state 0 and the
# bridge-port flags the agent sets (neigh_suppress on, learning off, with `ip link set type
# bridge_slave`, as the agent does). Left out: CloudStack's `bridge link show | grep` check
# per network. 8 processes per network; the agent runs none: the same 8 changes (the 6 link
# changes, an ownership alias on both links) as pipelined rtnetlink requests on one socket,
# and disable_ipv6 written to /proc.
write_baseline() {
    cat >"$NETLAB_DIR/baseline.sh" <<'EOF'
vtep=$1 first=$2 n=$3 fails=0
for ((v = first; v < first + n; v++)); do
    ip link add "brvx-$v" type bridge stp_state 0 || fails=$((fails + 1))
    sysctl -qw "net.ipv6.conf.brvx-$v.disable_ipv6=1" || fails=$((fails + 1))
    ip link set dev "brvx-$v" up || fails=$((fails + 1))
    ip link add "vxlan$v" type vxlan id "$v" dstport 4789 local "$vtep" nolearning || fails=$((fails + 1))
    sysctl -qw "net.ipv6.conf.vxlan$v.disable_ipv6=1" || fails=$((fails + 1))
    ip link set dev "vxlan$v" master "brvx-$v" || fails=$((fails + 1))
    ip link set dev "vxlan$v" type bridge_slave neigh_suppress on learning off || fails=$((fails + 1))
    ip link set dev "vxlan$v" up || fails=$((fails + 1))
done
echo "baseline: processes=$((n * 8)) failures=$fails"
[ "$fails" = 0 ]
EOF
}

agent_apply() { # agent_apply K JSON - one agent pass on hvK (inside its namespace)
    nice -n "$NICE" nsenter --net="/run/netns/${P}hv$1" "$HV_AGENT" --apply-file "$2" \
        --node "hv$1" --frr-dir "$NETLAB_DIR/${P}hv$1"
}
baseline_run() { # baseline_run K - the ip-per-command sequence inside hvK
    nice -n "$NICE" nsenter --net="/run/netns/${P}hv$1" bash "$NETLAB_DIR/baseline.sh" \
        "10.255.1.$1" "$VNI0" "$N"
}

# EVPN prefixes leafK has received from hvK (0 when the session is not up).
leaf_pfx() {
    netlab_vtysh "$NETLAB_DIR/${P}leaf$1" -c 'show bgp l2vpn evpn summary json' 2>/dev/null |
        jq -r --arg p "hv$1" '.peers[$p].pfxRcd // 0' 2>/dev/null || echo 0
}
session_up() {
    netlab_vtysh "$NETLAB_DIR/${P}leaf$1" -c 'show bgp l2vpn evpn summary json' 2>/dev/null |
        jq -e --arg p "hv$1" '.peers[$p].state == "Established"' >/dev/null
}
# L2 VNIs zebra on hvK knows (`show evpn`: "L2 VNIs: N", cheap whatever N).
zebra_vnis() {
    netlab_vtysh "$NETLAB_DIR/${P}hv$1" -c 'show evpn' 2>/dev/null |
        sed -n 's/^L2 VNIs: *\([0-9]*\).*/\1/p' | grep . || echo 0
}

# measure TAG K CMD... - run CMD in the background; poll zebra on hvK and leafK every
# POLL_S until leafK has N routes from hvK and CMD has returned (or PHASE_TIMEOUT_S).
# Sets M_CMD_MS (CMD's wall time), M_RC, M_ZEBRA_MS and M_ADV_MS (first poll that saw all
# N, measured from CMD's start; "timeout" if never) and M_CPU (CPU used by CMD and by the
# FRR daemons meanwhile). CMD's output: $NETLAB_DIR/TAG.log.
measure() {
    local tag=$1 k=$2 t0 now pid done_f z l deadline; shift 2
    done_f=$NETLAB_DIR/$tag.done
    rm -f "$done_f"
    t0=$(now_ms)
    local c0 c1
    c0=$(frr_cpu "$k")
    (
        TIMEFORMAT='%U %S'
        { time "$@" >"$NETLAB_DIR/$tag.log" 2>&1; } 2>"$NETLAB_DIR/$tag.cpu"
        echo "$? $(now_ms)" >"$done_f"
    ) &
    pid=$!
    BG_PIDS+=("$pid")
    M_ZEBRA_MS=timeout M_ADV_MS=timeout
    deadline=$(( t0 + PHASE_TIMEOUT_S * 1000 ))
    while :; do
        if [ "$M_ZEBRA_MS" = timeout ]; then
            z=$(zebra_vnis "$k"); now=$(now_ms)
            [ "${z:-0}" -ge "$N" ] && M_ZEBRA_MS=$(( now - t0 ))
        fi
        l=$(leaf_pfx "$k"); now=$(now_ms)
        [ "${l:-0}" -ge "$N" ] && M_ADV_MS=$(( now - t0 ))
        if [ -e "$done_f" ] && [ "$M_ADV_MS" != timeout ]; then break; fi
        if [ "$now" -gt "$deadline" ]; then
            log "$tag: gave up after ${PHASE_TIMEOUT_S}s (zebra VNIs ${z:-?}, leaf routes ${l:-?})"
            break
        fi
        sleep "$POLL_S"
    done
    if ! [ -e "$done_f" ]; then
        log "$tag: command still running after ${PHASE_TIMEOUT_S}s; stopping it"
        kill_ns_procs "$k"
    fi
    wait "$pid"
    if [ -e "$done_f" ]; then
        read -r M_RC now <"$done_f"
        M_CMD_MS=$(( now - t0 ))
    else
        M_RC=timeout M_CMD_MS=timeout
    fi
    c1=$(frr_cpu "$k")
    local u sy
    read -r u sy <"$NETLAB_DIR/$tag.cpu" 2>/dev/null
    M_CPU="CPU seconds during the phase: command + its children user ${u:-?} sys ${sy:-?};"
    M_CPU+=" $(awk -v a="$c0" -v b="$c1" 'BEGIN { split(a, x); split(b, y);
        printf "hv zebra %.1f, hv bgpd %.1f, leaf zebra %.1f, leaf bgpd %.1f",
            y[1] - x[1], y[2] - x[2], y[3] - x[3], y[4] - x[4] }')"
}
# frr_cpu K - CPU seconds (user+sys) used so far by zebra and bgpd of hvK and leafK
frr_cpu() {
    local d f pid hz
    hz=$(getconf CLK_TCK)
    for d in "hv$1" "leaf$1"; do
        for f in zebra bgpd; do
            pid=$(cat "$NETLAB_DIR/$P$d/$f.pid" 2>/dev/null)
            awk -v hz="$hz" '{ printf "%.2f ", ($14 + $15) / hz }' "/proc/${pid:-0}/stat" 2>/dev/null ||
                printf '0 '
        done
    done
}
kill_ns_procs() { # stop the agent / baseline shell inside hvK (our own processes, by pid)
    local pid
    for pid in $(ip netns pids "${P}hv$1"); do
        case "$(cat "/proc/$pid/comm" 2>/dev/null)" in
            sf-hypervisor-a*|bash|ip|bridge) kill -TERM "$pid" 2>/dev/null ;;
        esac
    done
}

# links_ok K - every network's links on hvK are in the agent's layout; prints the counts.
links_ok() {
    ip -n "${P}hv$1" -j -d link show | jq -r --argjson first "$VNI0" --argjson n "$N" \
        --arg vtep "10.255.1.$1" '
        def inrange(v): v >= $first and v < $first + $n;
        ([.[] | select(.linkinfo.info_kind == "vxlan") | .linkinfo as $i
             | select(inrange($i.info_data.id) and .ifname == "vxlan\($i.info_data.id)"
                 and $i.info_data.local == $vtep and $i.info_data.port == 4789
                 and $i.info_data.learning == false and .master == "brvx-\($i.info_data.id)"
                 and $i.info_slave_data.learning == false
                 and $i.info_slave_data.neigh_suppress == true
                 and (.flags | index("UP")) != null)] | length) as $vx
        | ([.[] | select(.linkinfo.info_kind == "bridge"
                 and (.ifname | startswith("brvx-"))
                 and inrange(.ifname | ltrimstr("brvx-") | tonumber)
                 and .linkinfo.info_data.stp_state == 0
                 and (.flags | index("UP")) != null)] | length) as $br
        | ([.[] | select(.ifalias == "stackfabric")] | length) as $owned
        | "\($vx) \($br) \($owned)"'
}

# ipv6_off K - brvx-*/vxlan* links of hvK with the host's IPv6 disabled
ipv6_off() {
    # shellcheck disable=SC2016  # expands in the inner sh
    ip netns exec "${P}hv$1" sh -c 'cd /proc/sys/net/ipv6/conf && cat brvx-*/disable_ipv6 vxlan*/disable_ipv6' |
        grep -c '^1$'
}

# leaf_vnis K - distinct VNIs (route target ASN:VNI of hvK) among the type-3 routes leafK
# holds with hvK's VTEP as originator.
leaf_vnis() {
    netlab_vtysh "$NETLAB_DIR/${P}leaf$1" -c 'show bgp l2vpn evpn route type multicast json' |
        python3 -c '
import json, re, sys
asn, vtep, first, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
d, vnis = json.load(sys.stdin), set()
for rd, prefixes in d.items():
    if not isinstance(prefixes, dict):
        continue
    for pfx, v in prefixes.items():
        if not isinstance(v, dict) or vtep not in pfx:
            continue
        for paths in v.get("paths", []):
            for p in paths if isinstance(paths, list) else [paths]:
                ec = p.get("extendedCommunity", {}).get("string", "")
                vnis.update(int(x) for x in re.findall(r"RT:%s:(\d+)" % asn, ec))
print(len([x for x in vnis if first <= x < first + n]))' "6500$1" "10.255.1.$1" "$VNI0" "$N"
}

zebra_alive() { # zebra_alive K - zebra of hvK still running, no netlink overrun logged
    local d=$NETLAB_DIR/${P}hv$1 pid
    pid=$(cat "$d/zebra.pid" 2>/dev/null) || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = zebra ] || return 1
    ! grep -qiE 'overrun|No buffer space' "$d/zebra.log" 2>/dev/null
}
link_actions() { # link actions an agent log reports (its text log is coloured)
    sed 's/\x1b\[[0-9;]*m//g' "$1" | grep -c ' applied object="links" action='
}
ratio2() { # ratio2 A B -> A/B for decimals, n/a unless both are numbers and B > 0
    awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 == a && b + 0 == b && b > 0) printf "%.2f", a / b; else print "n/a" }'
}
ratio() { # ratio A B -> A/B with two decimals, n/a if either is not a number
    case "$1$2" in *[!0-9]*|'') echo n/a; return ;; esac
    [ "$2" -gt 0 ] || { echo n/a; return; }
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'
}

# idle_cpu AGENT TAG - AGENT as a daemon in hv1 (desired state from its cache; coordinator
# and etcd unreachable); prints "<cpu ms> <window ms> <cpu ms with children>": CPU
# (utime+stime) it used over IDLE_S seconds, measured once its first pass is done, and the
# same with its finished child processes (cutime+cstime: ip, nft, vtysh).
idle_cpu() {
    local agent=$1 tag=$2 dir pid hz c0 c1 t0 t1 k0 k1
    dir=$NETLAB_DIR/$tag-state
    mkdir -p "$dir"
    jq -c '{desired: ., applied_revision: 0, applied_digest: ""}' "$NETLAB_DIR/hv1.json" >"$dir/desired.json"
    nsenter --net="/run/netns/${P}hv1" "$agent" --node hv1 --coordinator https://127.0.0.1:9 \
        --etcd-endpoints http://127.0.0.1:9 --tls-cert "$dir/none" --tls-key "$dir/none" \
        --tls-ca "$dir/none" --state-dir "$dir" --frr-dir "$NETLAB_DIR/${P}hv1" \
        >"$NETLAB_DIR/$tag.log" 2>&1 &
    pid=$!
    BG_PIDS+=("$pid")
    hz=$(getconf CLK_TCK)
    # its first pass (from the cache) is over once 2 s go by with under 5% of a core used
    for _ in $(seq 60); do
        c0=$(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null) || break
        sleep 2
        c1=$(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null) || break
        [ $(( (c1 - c0) * 100 / hz )) -lt 10 ] && break
    done
    read -r c0 k0 < <(awk '{ print $14 + $15, $14 + $15 + $16 + $17 }' "/proc/$pid/stat")
    t0=$(now_ms)
    sleep "$IDLE_S"
    read -r c1 k1 < <(awk '{ print $14 + $15, $14 + $15 + $16 + $17 }' "/proc/$pid/stat")
    t1=$(now_ms)
    kill -TERM "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    echo "$(( (c1 - c0) * 1000 / hz )) $(( t1 - t0 )) $(( (k1 - k0) * 1000 / hz ))"
}

# ---------------------------------------------------------------- lab
netlab_cleanup "$P"
netlab_init "$P" || exit 1
T0=$(now_ms)
write_gen; write_baseline
log "kernel $(uname -r), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); $N networks, VNI $VNI0..$((VNI0 + N - 1)); agent and baseline at nice $NICE"
for k in 1 2; do
    netlab_ns_add "${P}leaf$k" && netlab_ns_add "${P}hv$k" || exit 1
    netlab_addr_lo "${P}leaf$k" "10.255.0.$k/32" || exit 1
    netlab_link "${P}hv$k" "leaf$k" "${P}leaf$k" "hv$k" || exit 1
    leaf_conf "$k" >"$NETLAB_DIR/leaf$k.conf"
    printf 'frr defaults datacenter\nhostname hv%s\n!\n' "$k" >"$NETLAB_DIR/hv$k.conf"
    netlab_frr_start "${P}leaf$k" "$NETLAB_DIR/${P}leaf$k" "$NETLAB_DIR/leaf$k.conf" || exit 1
    netlab_frr_start "${P}hv$k" "$NETLAB_DIR/${P}hv$k" "$NETLAB_DIR/hv$k.conf" || exit 1
    python3 "$NETLAB_DIR/gen.py" "hv$k" 0 "$VNI0" >"$NETLAB_DIR/hv$k-empty.json" || exit 1
    # the agent with zero networks: VTEP on lo + its FRR configuration
    agent_apply "$k" "$NETLAB_DIR/hv$k-empty.json" >"$NETLAB_DIR/hv$k-empty.log" 2>&1 ||
        { cat "$NETLAB_DIR/hv$k-empty.log"; log "FAIL: agent pass with no networks on hv$k"; exit 1; }
done
python3 "$NETLAB_DIR/gen.py" hv1 "$N" "$VNI0" >"$NETLAB_DIR/hv1.json" || exit 1
for k in 1 2; do
    netlab_wait 90 session_up "$k" || { log "FAIL: leaf$k <-> hv$k EVPN session not up"; exit 1; }
done
log "two fabrics up (leaf1-hv1 agent, leaf2-hv2 baseline), EVPN sessions established," \
    "hv FRR configured by the agent; desired state $(stat -c %s "$NETLAB_DIR/hv1.json") bytes"

# ---------------------------------------------------------------- 1. agent
log "1. agent: hv1 applies $N networks"
measure agent 1 agent_apply 1 "$NETLAB_DIR/hv1.json"
A_MS=$M_CMD_MS A_ZEBRA=$M_ZEBRA_MS A_ADV=$M_ADV_MS
A_OUT=$(grep -E '^(reconcile|error)' "$NETLAB_DIR/agent.log" | head -5)
log "agent: rc=$M_RC wall ${A_MS} ms ($A_OUT); zebra knew $N VNIs at ${A_ZEBRA} ms;" \
    "leaf1 had $N routes from hv1 at ${A_ADV} ms"
log "agent: $M_CPU"
check "agent pass succeeded" [ "$M_RC" = 0 ]
check "zebra on hv1 alive, no netlink overrun" zebra_alive 1

# ---------------------------------------------------------------- 2. resync
log "2. agent: hv1 applies the same desired state again (no change)"
t=$(now_ms)
agent_apply 1 "$NETLAB_DIR/hv1.json" >"$NETLAB_DIR/resync.log" 2>&1; rc=$?
R_MS=$(( $(now_ms) - t ))
R_OUT=$(grep -E '^(reconcile|error)' "$NETLAB_DIR/resync.log" | head -5)
log "resync: rc=$rc wall ${R_MS} ms ($R_OUT)"
check "resync pass succeeded" [ "$rc" = 0 ]
check "resync changed no link ($(link_actions "$NETLAB_DIR/resync.log") link actions)" \
    [ "$(link_actions "$NETLAB_DIR/resync.log")" = 0 ]
t=$(now_ms)
nice -n "$NICE" nsenter --net="/run/netns/${P}hv1" "$HV_AGENT" --apply-file "$NETLAB_DIR/hv1.json" \
    --node hv1 --frr-dir "$NETLAB_DIR/${P}hv1" --no-frr >"$NETLAB_DIR/resync-nofrr.log" 2>&1
R2_MS=$(( $(now_ms) - t ))
log "resync without FRR (--no-frr: observe + plan + ACL check): wall ${R2_MS} ms" \
    "($(grep -E '^reconcile' "$NETLAB_DIR/resync-nofrr.log"))"

log "2b. agent: hv1 gets one network more ($((N + 1)) in the desired state, --no-frr)," \
    "applied by the agent that just applied the $N: its delta path, as the daemon runs it"
python3 "$NETLAB_DIR/gen.py" hv1 "$((N + 1))" "$VNI0" >"$NETLAB_DIR/hv1-plus1.json" || exit 1
nice -n "$NICE" nsenter --net="/run/netns/${P}hv1" "$HV_AGENT" --apply-file "$NETLAB_DIR/hv1.json" \
    --apply-file "$NETLAB_DIR/hv1-plus1.json" --node hv1 --frr-dir "$NETLAB_DIR/${P}hv1" \
    --no-frr >"$NETLAB_DIR/plus1.log" 2>&1; rc=$?
ONE_LINE=$(grep -E '^reconcile' "$NETLAB_DIR/plus1.log" | tail -n1)
ONE_US=$(sed -n 's/.*elapsed_us=\([0-9]*\).*/\1/p' <<<"$ONE_LINE")
ONE_MS=$(awk -v u="${ONE_US:-x}" 'BEGIN { if (u + 0 == u) printf "%.1f", u / 1000; else print "n/a" }')
log "one network more: rc=$rc $ONE_LINE; link actions $(link_actions "$NETLAB_DIR/plus1.log")"
check "one network more: pass succeeded with 6 link actions, on the delta path (scope=delta)" \
    [ "$rc/$(link_actions "$NETLAB_DIR/plus1.log")/$(grep -c 'scope=delta ' <<<"$ONE_LINE")" = 0/6/1 ]
# back to N, so the end-state checks below see exactly N networks
nice -n "$NICE" nsenter --net="/run/netns/${P}hv1" "$HV_AGENT" --apply-file "$NETLAB_DIR/hv1.json" \
    --node hv1 --frr-dir "$NETLAB_DIR/${P}hv1" --no-frr >"$NETLAB_DIR/minus1.log" 2>&1 ||
    { log "FAIL: removing the extra network"; FAIL=1; }

log "2c. agent: idle daemon with $N networks, CPU over ${IDLE_S} s"
pct() { awk -v c="$1" -v w="$2" 'BEGIN { printf "%.2f", 100 * c / w }'; }
read -r IDLE_CPU_MS IDLE_WIN_MS IDLE_ALL_MS <<<"$(idle_cpu "$HV_AGENT" idle)"
IDLE_PCT=$(pct "$IDLE_CPU_MS" "$IDLE_WIN_MS") IDLE_ALL_PCT=$(pct "$IDLE_ALL_MS" "$IDLE_WIN_MS")
log "idle agent: ${IDLE_CPU_MS} ms CPU in ${IDLE_WIN_MS} ms = ${IDLE_PCT}% of a core;" \
    "with its child processes ${IDLE_ALL_MS} ms = ${IDLE_ALL_PCT}%" \
    "($(link_actions "$NETLAB_DIR/idle.log") link actions in its log)"
check "idle agent made no link change" [ "$(link_actions "$NETLAB_DIR/idle.log")" = 0 ]
OLD_IDLE_PCT=n/a OLD_IDLE_ALL_PCT=n/a
if [ -n "${OLD_AGENT:-}" ] && [ -x "$OLD_AGENT" ]; then
    read -r c w a <<<"$(idle_cpu "$OLD_AGENT" idle-old)"
    OLD_IDLE_PCT=$(pct "$c" "$w") OLD_IDLE_ALL_PCT=$(pct "$a" "$w")
    log "idle agent, OLD_AGENT=$OLD_AGENT: ${c} ms CPU in ${w} ms = ${OLD_IDLE_PCT}% of a core;" \
        "with its child processes ${a} ms = ${OLD_IDLE_ALL_PCT}%"
fi

# ---------------------------------------------------------------- 3. baseline
log "3. baseline: hv2 creates the same $N networks, one process per command (ip, sysctl)"
measure baseline 2 baseline_run 2
B_MS=$M_CMD_MS B_ZEBRA=$M_ZEBRA_MS B_ADV=$M_ADV_MS
log "baseline: rc=$M_RC wall ${B_MS} ms ($(tail -n1 "$NETLAB_DIR/baseline.log"));" \
    "zebra knew $N VNIs at ${B_ZEBRA} ms; leaf2 had $N routes from hv2 at ${B_ADV} ms"
log "baseline: $M_CPU"
check "baseline sequence succeeded" [ "$M_RC" = 0 ]
check "zebra on hv2 alive, no netlink overrun" zebra_alive 2

# ---------------------------------------------------------------- end states
for k in 1 2; do
    read -r vx br owned <<<"$(links_ok "$k")"
    check "hv$k: $vx/$N vxlan (VNI, VTEP, 4789, nolearning, in brvx, port learning off, neigh_suppress on, up), $br/$N bridges (stp off, up), $owned links owned (alias stackfabric)" \
        [ "$vx$br" = "$N$N" ]
    v=$(ipv6_off "$k")
    check "hv$k: host IPv6 disabled on $v/$((2 * N)) of its bridges and vxlans" [ "$v" = $((2 * N)) ]
    v=$(leaf_vnis "$k")
    check "leaf$k holds type-3 routes from hv$k's VTEP for $v/$N VNIs (RT 6500$k:VNI)" [ "$v" = "$N" ]
done
log "hv1 zebra: $(grep -ciE 'overrun|No buffer space' "$NETLAB_DIR/${P}hv1/zebra.log") overrun lines;" \
    "hv2 zebra: $(grep -ciE 'overrun|No buffer space' "$NETLAB_DIR/${P}hv2/zebra.log")"
log "agent log lines: $(wc -l <"$NETLAB_DIR/agent.log"); link actions: $(link_actions "$NETLAB_DIR/agent.log")"

echo "===== summary ($N networks, VNIs $VNI0..$((VNI0 + N - 1)))"
echo "agent program (no process: 8 netlink requests per network, pipelined on one socket): ${A_MS} ms"
echo "one process per command (8 per network: 6 ip commands + 2 sysctl, same options): ${B_MS} ms"
echo "advertised (leaf holds all type-3 routes), from the start: agent ${A_ADV} ms, baseline ${B_ADV} ms"
echo "zebra knows all VNIs, from the start: agent ${A_ZEBRA} ms, baseline ${B_ZEBRA} ms"
echo "resync no-op: ${R_MS} ms (with FRR reload), ${R2_MS} ms (--no-frr)"
echo "figure,value,baseline,ratio"
echo "hv_program_${N}_networks_ms,$A_MS,$B_MS (ip per network),$(ratio "$A_MS" "$B_MS")"
echo "hv_advertise_${N}_vnis_ms,$A_ADV,$B_ADV,$(ratio "$A_ADV" "$B_ADV")"
echo "hv_resync_${N}_networks_noop_ms,$R_MS,$A_MS (first apply),$(ratio "$R_MS" "$A_MS")"
echo "hv_one_network_more_among_${N}_ms,${ONE_MS:-n/a},$A_MS (first apply),$(ratio2 "${ONE_MS:-x}" "$A_MS")"
echo "hv_idle_cpu_pct_${N}_networks,$IDLE_PCT,$OLD_IDLE_PCT (OLD_AGENT),$(ratio2 "$IDLE_PCT" "$OLD_IDLE_PCT")"
echo "hv_idle_cpu_pct_with_children_${N}_networks,$IDLE_ALL_PCT,$OLD_IDLE_ALL_PCT (OLD_AGENT),$(ratio2 "$IDLE_ALL_PCT" "$OLD_IDLE_ALL_PCT")"
[ "$FAIL" = 0 ] && echo "HV SCALE PROOF: ALL CHECKS PASSED" || echo "HV SCALE PROOF: SOME CHECKS FAILED"
exit "$FAIL"
