#!/usr/bin/env bash
# deploy/lab.sh - StackFabric one-machine lab driver (docs/DESIGN.md section 4).
#
#   deploy/lab.sh up [--no-build] [--force] [--ha]   deps, cargo build, lab + demo tenant
#                                             (--ha: 3 etcd members with mTLS and auth, 3
#                                             coordinators; see "HA lab" in this file)
#   deploy/lab.sh down                        remove everything (also a crashed run)
#   deploy/lab.sh exec NAME CMD...            run CMD in namespace ${LAB_PREFIX}NAME
#   deploy/lab.sh sfctl ARGS...               sfctl (from ${LAB_PREFIX}mgmt) against the lab
#   deploy/lab.sh status                      sfctl status (--ha: etcd members and
#                                             coordinator replicas first), or "down"
#   deploy/lab.sh vm-add NAME HV TENANT VPC NETWORK IP
#   deploy/lab.sh vm-del NAME
#   deploy/lab.sh vm-plug NAME HV VNI IP/LEN GATEWAY [slaac]   (low level: plumbing +
#                                             HTTP server only, no sfctl, as CloudStack's
#                                             KVM agent plugs a VM; slaac: IPv6 by SLAAC too)
#   deploy/lab.sh agent-start|agent-stop|agent-kill NODE   (re)start, stop (SIGTERM)
#                                             or crash (SIGKILL) a node's agent
#   deploy/lab.sh coord-start|coord-stop|coord-kill [N]   start, stop (SIGTERM) or crash
#                                             (SIGKILL) the coordinator; --ha lab: replica
#                                             N (1-3), every replica without N
#   deploy/lab.sh etcd-start|etcd-stop|etcd-kill [N]   the same for etcd; --ha lab: member
#                                             N (etcd-start N rejoins with its data dir)
#   deploy/lab.sh etcdctl [--as USER] ARGS... etcdctl (from ${LAB_PREFIX}mgmt) against the
#                                             lab's etcd; --ha lab: TLS with USER's
#                                             certificate pki/USER.pem (default root)
#   deploy/lab.sh vm-http-stop|vm-http-start NAME   stop or start a VM's HTTP server
#
# Management network 172.31.255.0/24 (namespace ${LAB_PREFIX}mgmt is the bridge): mgmt .1,
# leaf1-2 .11-.12, spine1 .19, hv1-3 .21-.23, gw1-2 .31-.32; plain lab: etcd .2, coord .3;
# --ha lab instead: etcd1-3 .41-.43 (namespaces ${LAB_PREFIX}etcd1-3), coord1-3 .51-.53
# (${LAB_PREFIX}coord1-3).
#
# HA lab (`up --ha`, remembered in $STATE/mode for later subcommands): etcd members
# etcd1-3 serve clients on https://<ip>:2379 and peers on https://<ip>:2380, both requiring a
# certificate of the lab CA; etcd auth is on and the certificate's CN is the etcd user
# (etcd_auth_setup: root, coord1-3 with readwrite on /stackfabric/, each node with readwrite
# on /stackfabric/nodes/<node>/ only). Coordinators coord1-3 (gRPC :7443, REST :8080, metrics
# :9100, certificate CN coordN with DNS:coordinator) use their own certificate for etcd;
# agents get all three coordinators and all three etcd members. `sfctl` gets all three too
# (--endpoint a,b,c): it uses the first replica that accepts a connection, moves a read on to
# the next after a failure in transit, and sends a write at most once.
#
# Environment:
#   LAB_PREFIX          namespace prefix (default sflab-); runs with different
#                       prefixes are independent
#   SF_BIN_DIR          where the binaries are (default <repo>/target/release)
#   SF_LAB_NO_BINARIES=1  build only topology, etcd, PKI and FRR (no coordinator,
#                       agents, inventory or demo); also skips cargo build
#   SF_LAB_KEEP_ON_FAIL=1 do not clean up when `up` fails (for debugging)
#
# Everything lives in namespaces named ${LAB_PREFIX}* and in the state dir
# STATE=/tmp/sf-lab.${LAB_PREFIX%-} (mode, pki/, api-token, logs/, pids/, agents/<node>,
# etcd/ (--ha: etcd/etcd1-3), frr/<node>, vms/, netlab/). FRR's -N also creates /var/run/frr/<ns>.
# Nothing is created, addressed or routed in the host namespace.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

LAB_PREFIX=${LAB_PREFIX:-sflab-}
case "$LAB_PREFIX" in
    *[!A-Za-z0-9_.-]* | '' | [.-]*)
        echo "lab: bad LAB_PREFIX '$LAB_PREFIX' (letters, digits, _ . - only)" >&2
        exit 2
        ;;
esac
P=$LAB_PREFIX
STATE=/tmp/sf-lab.${LAB_PREFIX%-}
# shellcheck disable=SC2034  # used by lib/netlab.sh
NETLAB_DIR=$STATE/netlab
# shellcheck disable=SC2034  # used by lib/pki.sh
PKI_DIR=$STATE/pki
SF_BIN_DIR=${SF_BIN_DIR:-$ROOT/target/release}
NO_BINARIES=${SF_LAB_NO_BINARIES:-0}

# shellcheck source=lib/netlab.sh source-path=SCRIPTDIR disable=SC1091
. "$SCRIPT_DIR/lib/netlab.sh"
# shellcheck source=lib/pki.sh source-path=SCRIPTDIR disable=SC1091
. "$SCRIPT_DIR/lib/pki.sh"

MGMT_NET=172.31.255
# The etcd root of every binary (their default --etcd-root); the HA lab's etcd permissions
# are granted under it.
ETCD_ROOT=/stackfabric
# Lab mode: plain (one plain-HTTP etcd, one coordinator) or HA (`up --ha`: etcd members and
# coordinator replicas HA_IDS), remembered in $STATE/mode so every later subcommand acts on
# the lab that is up.
HA_IDS=(1 2 3)
HA=0
[ "$(cat "$STATE/mode" 2>/dev/null || true)" = ha ] && HA=1
SPINES=(spine1)
LEAVES=(leaf1 leaf2)
# Every switch runs sf-switch-agent: the spine is EVPN transit, a leaf becomes a VTEP when it
# hands server-facing ports (bare metal, Direct Connect) into VNIs.
SWITCHES=("${SPINES[@]}" "${LEAVES[@]}")
HVS=(hv1 hv2 hv3)
GWS=(gw1 gw2)
# The internet edge: FRR StackFabric does not manage, behind border leaf leaf1.
INTERNET_ASN=65200
INTERNET_IP=198.51.100.10
PUBLIC_POOL=203.0.113.0/24
# IPv6 (issue 21): the internet host's address (on its lo) and the lab site's IPv6 pool:
# a VPC range inside it is routed (announced by the serving gateway through the leaves).
INTERNET_IP6=2001:db8:ffff::10
PUBLIC_POOL6=2001:db8:100::/40
# Outside StackFabric too: bare-metal server bm1 on leaf1 port "bm1", and a customer's data
# centre router "cdc" on leaf2 port "cdc" (the Direct Connect hand-off), with its own FRR
# (static config) and a host "cdc-host" behind it. Both ports are untagged: this lab's kernel
# has no 802.1Q support (no 8021q module, no bridge VLAN filtering), so VLAN hand-offs are
# exercised by unit tests only (see docs/ARCHITECTURE.md).
CDC_ASN=65300
CDC_PEER=169.254.100.2/30

# name -> mgmt address (last octet)
mgmt_ip() {
    case "$1" in
        etcd) echo "$MGMT_NET.2" ;;
        coord) echo "$MGMT_NET.3" ;;
        etcd[1-9]) echo "$MGMT_NET.$((40 + ${1#etcd}))" ;;
        coord[1-9]) echo "$MGMT_NET.$((50 + ${1#coord}))" ;;
        leaf[0-9]) echo "$MGMT_NET.$((10 + ${1#leaf}))" ;;
        spine[0-9]) echo "$MGMT_NET.$((18 + ${1#spine}))" ;;
        hv[0-9]) echo "$MGMT_NET.$((20 + ${1#hv}))" ;;
        gw[0-9]) echo "$MGMT_NET.$((30 + ${1#gw}))" ;;
        *) return 1 ;;
    esac
}

# set_endpoints - the URLs of the lab's etcd and coordinator(s) for the current mode:
# ETCD_URLS/COORD_URLS (arrays, member/replica N at index N-1), ETCD_ENDPOINTS/
# COORD_ENDPOINTS (comma separated, as the binaries take them), ETCD_URL/COORD_URL (the
# first: the plain lab's only etcd and coordinator).
set_endpoints() {
    local i
    ETCD_URLS=()
    COORD_URLS=()
    if [ "$HA" = 1 ]; then
        for i in "${HA_IDS[@]}"; do
            ETCD_URLS+=("https://$(mgmt_ip "etcd$i"):2379")
            COORD_URLS+=("https://$(mgmt_ip "coord$i"):7443")
        done
    else
        ETCD_URLS=("http://$MGMT_NET.2:2379")
        COORD_URLS=("https://$MGMT_NET.3:7443")
    fi
    ETCD_URL=${ETCD_URLS[0]}
    COORD_URL=${COORD_URLS[0]}
    ETCD_ENDPOINTS=$(IFS=,; echo "${ETCD_URLS[*]}")
    COORD_ENDPOINTS=$(IFS=,; echo "${COORD_URLS[*]}")
}
set_endpoints

log() { echo "lab[$P]: $*" >&2; }
die() {
    echo "lab[$P]: ERROR: $*" >&2
    exit 1
}

lab_is_up() { [ -e "/run/netns/${P}mgmt" ]; }
any_ns_left() { ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${P//./\\.}." >/dev/null; }

python_bin() {
    if [ -x /usr/bin/python3 ]; then
        echo /usr/bin/python3
    else
        python3 -c 'import sys; print(sys.executable)'
    fi
}

# ---------------------------------------------------------------------------
# the parts: one file per concern under deploy/lib/lab/, each defining functions only
# shellcheck source=lib/lab/procs.sh source-path=SCRIPTDIR disable=SC1091
. "$SCRIPT_DIR/lib/lab/procs.sh"
# shellcheck source=lib/lab/sfctl.sh source-path=SCRIPTDIR disable=SC1091
. "$SCRIPT_DIR/lib/lab/sfctl.sh"
# shellcheck source=lib/lab/certs.sh source-path=SCRIPTDIR disable=SC1091
. "$SCRIPT_DIR/lib/lab/certs.sh"
# shellcheck source=lib/lab/topology.sh source-path=SCRIPTDIR disable=SC1091
. "$SCRIPT_DIR/lib/lab/topology.sh"
# shellcheck source=lib/lab/etcd-ha.sh source-path=SCRIPTDIR disable=SC1091
. "$SCRIPT_DIR/lib/lab/etcd-ha.sh"
# shellcheck source=lib/lab/control.sh source-path=SCRIPTDIR disable=SC1091
. "$SCRIPT_DIR/lib/lab/control.sh"
# shellcheck source=lib/lab/vms.sh source-path=SCRIPTDIR disable=SC1091
. "$SCRIPT_DIR/lib/lab/vms.sh"
# shellcheck source=lib/lab/updown.sh source-path=SCRIPTDIR disable=SC1091
. "$SCRIPT_DIR/lib/lab/updown.sh"
# shellcheck source=lib/lab/running.sh source-path=SCRIPTDIR disable=SC1091
. "$SCRIPT_DIR/lib/lab/running.sh"

# ---------------------------------------------------------------------------

usage() {
    sed -n '2,/^# Management network/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
}

main() {
    local cmd=${1:-}
    [ $# -gt 0 ] && shift
    case "$cmd" in
        up) cmd_up "$@" ;;
        down)
            [ "$(id -u)" = 0 ] || die "must run as root"
            do_down
            ;;
        exec)
            [ $# -ge 2 ] || die "usage: $0 exec NAME CMD..."
            local ns=${P}$1
            shift
            [ -e "/run/netns/$ns" ] || die "no such lab namespace: $ns"
            exec ip netns exec "$ns" "$@"
            ;;
        sfctl)
            lab_is_up || die "lab $P is down"
            sfctl_cmd "$@"
            ;;
        status)
            if lab_is_up && [ "$HA" = 1 ]; then
                ha_status "$@"
            elif lab_is_up; then
                sfctl_cmd status "$@"
            else
                echo "lab $P is down"
                exit 1
            fi
            ;;
        vm-add)
            [ $# -eq 6 ] || die "usage: $0 vm-add NAME HV TENANT VPC NETWORK IP"
            vm_add "$@" || die "vm-add $1 failed"
            ;;
        vm-del)
            [ $# -eq 1 ] || die "usage: $0 vm-del NAME"
            vm_del "$1" || die "vm-del $1 failed"
            ;;
        vm-plug)
            # A 6th argument `slaac`: the VM also takes its IPv6 address by SLAAC.
            [ $# -eq 5 ] || { [ $# -eq 6 ] && [ "$6" = slaac ]; } ||
                die "usage: $0 vm-plug NAME HV VNI IP/LEN GATEWAY [slaac]"
            valid_name "$1"
            lab_is_up || die "lab $P is down"
            vm_plug "$1" "$2" "brvx-$3" "$4" "$5" "$(vm_mac "$1")" "${6:-}" || {
                vm_unplug "$1"
                die "vm-plug $1 failed"
            }
            ;;
        vm-http-stop)
            [ $# -eq 1 ] || die "usage: $0 vm-http-stop NAME"
            stop_proc "vm-$1"
            ;;
        vm-http-start)
            [ $# -eq 1 ] || die "usage: $0 vm-http-start NAME"
            proc_alive "vm-$1" && die "$1's HTTP server is already running"
            # A dual-stack VM serves IPv6 too, as vm-add started it (`--bind ::`).
            bind=0.0.0.0
            [ -n "$(sed -n 's/^ip6=//p' "$STATE/vms/$1/plug")" ] && bind=::
            start_bg "vm-$1" "${P}$1" "$(python_bin)" -m http.server 80 --bind "$bind" \
                --directory "$STATE/vms/$1/www"
            wait_for 10 "vm-$1 http" ip netns exec "${P}$1" curl -s -m 1 -o /dev/null http://127.0.0.1/ ||
                die "$1's HTTP server did not come up"
            ;;
        agent-start)
            [ $# -eq 1 ] || die "usage: $0 agent-start NODE"
            lab_is_up || die "lab $P is down"
            proc_alive "$1" && die "$1's agent is already running"
            start_agent "$1"
            ;;
        agent-stop)
            [ $# -eq 1 ] || die "usage: $0 agent-stop NODE"
            stop_proc "$1"
            ;;
        agent-kill)
            [ $# -eq 1 ] || die "usage: $0 agent-kill NODE"
            kill_proc "$1"
            ;;
        coord-start | coord-stop | coord-kill) member_ctl coord "${cmd#coord-}" "$@" ;;
        etcd-start | etcd-stop | etcd-kill) member_ctl etcd "${cmd#etcd-}" "$@" ;;
        etcdctl)
            lab_is_up || die "lab $P is down"
            etcdctl_cmd "$@"
            ;;
        -h | --help | help | '') usage ;;
        *)
            echo "lab: unknown command '$cmd'" >&2
            usage
            ;;
    esac
}

main "$@"
