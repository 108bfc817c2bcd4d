#!/usr/bin/env bash
# deploy/lab.sh - StackFabric one-machine lab driver (DESIGN.md section 4).
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
#   deploy/lab.sh vm-plug NAME HV VNI IP/LEN GATEWAY   (low level: plumbing + HTTP
#                                             server only, no sfctl; for debugging)
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
# agents get all three coordinators and all three etcd members. `sfctl` asks coord1 and moves
# to the next replica when coord1 cannot be reached (for a command that may write: only when
# it could not connect at all, so that a write is never sent twice).
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
# process bookkeeping: $STATE/pids/<name>.pid (+ <name>.cmd = argv, one per line)

# start_bg NAME NS CMD... - start CMD in namespace NS in its own session, logs to
# $STATE/logs/NAME.log, record its pid.
start_bg() {
    local name=$1 ns=$2 pid
    shift 2
    mkdir -p "$STATE/pids" "$STATE/logs"
    printf '%s\n' "$@" >"$STATE/pids/$name.cmd"
    if [ "${START_NSENTER:-0}" = 1 ]; then
        # nsenter joins only the network namespace: unlike `ip netns exec` it keeps the host
        # mount namespace, so namespaces the process creates (gateway VPC routers) are
        # visible to everyone and outlive the process.
        nsenter --net="/run/netns/$ns" setsid "$@" >"$STATE/logs/$name.log" 2>&1 </dev/null &
    else
        ip netns exec "$ns" setsid "$@" >"$STATE/logs/$name.log" 2>&1 </dev/null &
    fi
    pid=$!
    echo "$pid" >"$STATE/pids/$name.pid"
}

# pid_matches PID CMDFILE - /proc/PID is alive (not zombie) and its argv ends
# with the recorded argv (it may still be `ip netns exec NS setsid CMD...`).
pid_matches() {
    local pid=$1 cmdfile=$2 cur rec
    case "$pid" in '' | *[!0-9]*) return 1 ;; esac
    [ -r "/proc/$pid/cmdline" ] || return 1
    grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null && return 1
    cur=$(tr '\0' '\n' 2>/dev/null <"/proc/$pid/cmdline") || return 1
    rec=$(cat "$cmdfile" 2>/dev/null) || return 1
    [ -n "$rec" ] && [ -n "$cur" ] && [[ "$cur" == *"$rec" ]]
}

# proc_alive NAME
proc_alive() {
    local pf=$STATE/pids/$1.pid
    [ -f "$pf" ] && pid_matches "$(cat "$pf" 2>/dev/null)" "$STATE/pids/$1.cmd"
}

# stop_proc NAME - SIGTERM, wait up to 5 s, SIGKILL; only if still ours.
stop_proc() {
    local name=$1 pf=$STATE/pids/$1.pid cf=$STATE/pids/$1.cmd pid i
    [ -f "$pf" ] || return 0
    pid=$(cat "$pf" 2>/dev/null || true)
    if pid_matches "$pid" "$cf"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            pid_matches "$pid" "$cf" || break
            sleep 0.1
        done
        if pid_matches "$pid" "$cf"; then
            log "$name (pid $pid) did not stop on SIGTERM, killing"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pf" "$cf"
}

log_tail() {
    local f=$STATE/logs/$1.log
    [ -s "$f" ] || return 0
    echo "----- last lines of $f -----" >&2
    tail -n "${2:-15}" "$f" >&2 || true
}

# check_procs [NAME...] - every recorded process (or each NAME that has a pid
# file) must still be running.
check_procs() {
    local pf name pfs=()
    if [ $# -gt 0 ]; then
        for name in "$@"; do pfs+=("$STATE/pids/$name.pid"); done
    else
        pfs=("$STATE"/pids/*.pid)
    fi
    for pf in "${pfs[@]}"; do
        [ -e "$pf" ] || continue
        name=$(basename "$pf" .pid)
        if ! proc_alive "$name"; then
            log "process '$name' is no longer running"
            log_tail "$name" 30
            return 1
        fi
    done
}

# wait_for TIMEOUT_S DESCRIPTION CMD... - poll CMD (quietly) until it succeeds;
# return 1 on timeout, 2 early if a recorded process died (only those named in
# $WAIT_PROCS if set, else all).
wait_for() {
    local t=$1 desc=$2 end
    shift 2
    end=$(($(date +%s) + t))
    until "$@" >/dev/null 2>&1; do
        # shellcheck disable=SC2086  # WAIT_PROCS is a word list
        check_procs ${WAIT_PROCS:-} || { log "while waiting for $desc"; return 2; }
        [ "$(date +%s)" -lt "$end" ] || return 1
        sleep 0.3
    done
}

# ---------------------------------------------------------------------------
# sfctl

sfctl_bin() {
    [ -x "$SF_BIN_DIR/sfctl" ] || die "missing $SF_BIN_DIR/sfctl (build with cargo build --release --bins)"
}

# sfctl_at URL ARGS... - sfctl (from ${P}mgmt) against the coordinator at URL.
sfctl_at() {
    local url=$1
    shift
    sfctl_bin
    ip netns exec "${P}mgmt" "$SF_BIN_DIR/sfctl" --endpoint "$url" --ca "$STATE/pki/ca.pem" \
        --token-file "$STATE/api-token" "$@"
}

# sfctl_unreachable MESSAGE - sfctl's error MESSAGE (exit status 2) says the coordinator could
# not be reached or used (as opposed to a local setup error such as a missing token file).
sfctl_unreachable() {
    case "$1" in *"cannot reach coordinator at "*) return 0 ;; esac
    return 1
}

# sfctl_not_sent MESSAGE - sfctl's error MESSAGE (exit status 2) says it never got a
# connection to the coordinator (TCP connect refused/unreachable, or the connect + TLS
# handshake timed out: "timed out after Ns"), so no request went out. Failures once connected
# (reset, "Timeout expired" mid-call, h2 errors) are not matched: the request may have been
# received and applied.
sfctl_not_sent() {
    sfctl_unreachable "$1" || return 1
    case "$1" in
        *"tcp connect error"* | *"Connection refused"* | *"No route to host"* | \
            *"Network is unreachable"* | *"timed out after "*) return 0 ;;
    esac
    return 1
}

# sfctl_read_only ARGS... - the sfctl command in ARGS only reads: `status`, `<object> list`
# or `<object> show` (global options before the command are skipped; anything not
# recognised counts as a write).
sfctl_read_only() {
    local words=()
    while [ $# -gt 0 ] && [ ${#words[@]} -lt 2 ]; do
        case "$1" in
            --endpoint | --ca | --server-name | --token-file | --token | -o | --output | --timeout)
                [ $# -ge 2 ] || return 1
                shift 2
                ;;
            -*) shift ;;
            *)
                words+=("$1")
                shift
                ;;
        esac
    done
    [ "${words[0]:-}" = status ] && return 0
    case "${words[1]:-}" in list | show) return 0 ;; esac
    return 1
}

# sfctl_cmd ARGS... - sfctl against the lab. Plain lab: its coordinator. HA lab: coord1 first;
# the next replica (coord2, then coord3) is tried only when coord1 could not be reached
# (sfctl exits 2, "cannot reach coordinator at URL: ..."), and for a command that may write
# only when the failure shows the request never left (sfctl_not_sent: no connection), so a
# write is sent at most once; a read (sfctl_read_only) also moves on after a failure once
# connected (e.g. "Timeout expired"). An answer from a coordinator (exit 1: rejected, not
# found) ends the loop with that replica's status and message. When no replica could be
# used, every replica's message is printed.
sfctl_cmd() {
    if [ "$HA" != 1 ]; then
        sfctl_at "$COORD_URL" "$@"
        return
    fi
    local url err errs="" rc=0 ro=0
    sfctl_bin
    sfctl_read_only "$@" && ro=1
    for url in "${COORD_URLS[@]}"; do
        rc=0
        # stdout passes through (fd 3); stderr is kept to decide whether to try the next one
        { err=$(sfctl_at "$url" "$@" 2>&1 1>&3 3>&-); } 3>&1 || rc=$?
        if [ "$rc" = 2 ] && { sfctl_not_sent "$err" || { [ "$ro" = 1 ] && sfctl_unreachable "$err"; }; }; then
            errs+="$err"$'\n'
            continue
        fi
        [ -z "$err" ] || printf '%s\n' "$err" >&2
        return "$rc"
    done
    printf '%s' "$errs" >&2
    return "$rc"
}

# json_get FIELD - read a JSON object on stdin, print FIELD (a top-level key,
# or inside a single wrapping object such as {"network": {...}}).
json_get() {
    python3 -c '
import json, sys
d = json.load(sys.stdin)
k = sys.argv[1]
def find(o):
    if isinstance(o, dict):
        if k in o:
            return o[k]
        for v in o.values():
            r = find(v)
            if r is not None:
                return r
    return None
v = find(d)
if v is None or v == "":
    sys.exit(1)
print(v)
' "$1"
}

# leases_up NODE... - `sfctl -o json status` lists each NODE with "lease":"up".
leases_up() {
    local out
    out=$(sfctl_cmd -o json status 2>/dev/null) || return 1
    printf '%s' "$out" | python3 -c '
import json, sys
want = set(sys.argv[1:])
d = json.load(sys.stdin)
up = set()
def walk(o, key=None):
    if isinstance(o, dict):
        name = o.get("name", o.get("node"))
        if name is None and "lease" in o:
            name = key
        if isinstance(name, str) and str(o.get("lease", "")).lower() == "up":
            up.add(name)
        for k, v in o.items():
            walk(v, k)
    elif isinstance(o, list):
        for v in o:
            walk(v)
nodes = d.get("nodes") if isinstance(d, dict) else None
walk(nodes if nodes is not None else d)
sys.exit(0 if want <= up else 1)
' "$@"
}

# ---------------------------------------------------------------------------
# PKI: pki_init, pki_cert (deploy/lib/pki.sh), into $PKI_DIR

# pki_all - the lab CA, the coordinator's certificate (HA lab: coord1-3's, CN coordN with
# DNS:coordinator, the name agents and sfctl verify, and the replica's IP; they are also the
# coordinators' etcd client certificates), one client certificate per node (CN = node name;
# HA lab: also its etcd client certificate), and the API token. HA lab also: etcd1-3 (server
# and peer: SAN the member's IP and 127.0.0.1) and root (etcd administration).
pki_all() {
    local n i
    pki_init
    if [ "$HA" = 1 ]; then
        for i in "${HA_IDS[@]}"; do
            pki_cert "etcd$i" serverAuth,clientAuth "IP:$(mgmt_ip "etcd$i"),IP:127.0.0.1"
            pki_cert "coord$i" serverAuth,clientAuth "DNS:coordinator,IP:$(mgmt_ip "coord$i")"
        done
        pki_cert root clientAuth "DNS:root"
    else
        pki_cert coordinator serverAuth,clientAuth "DNS:coordinator,IP:$MGMT_NET.3"
    fi
    for n in "${SWITCHES[@]}" "${HVS[@]}" "${GWS[@]}"; do
        pki_cert "$n" clientAuth "DNS:$n"
    done
    (
        umask 077
        printf '%s' "$(openssl rand -hex 16)" >"$STATE/api-token"
    )
    chmod 600 "$STATE/api-token"
}

# ---------------------------------------------------------------------------
# topology

frr_node_start() {
    local node=$1 dir=$STATE/frr/$1
    mkdir -p "$dir"
    cat >"$dir/frr.conf" <<EOF
frr defaults datacenter
hostname $node
ip forwarding
ipv6 forwarding
!
EOF
    : >"$dir/vtysh.conf"
    netlab_frr_start "${P}$node" "$dir" "$dir/frr.conf" || die "FRR failed to start on $node"
}

# internet_start - the internet edge: an FRR StackFabric does not manage (static config), eBGP
# unnumbered to border leaf leaf1, announcing a default route and its own address, and an
# HTTP server on $INTERNET_IP answering "internet" (tests read client addresses from its log).
internet_start() {
    local dir=$STATE/frr/internet
    mkdir -p "$dir" "$STATE/internet"
    cat >"$dir/frr.conf" <<EOF
frr defaults datacenter
hostname internet
ip forwarding
!
router bgp $INTERNET_ASN
 bgp router-id $INTERNET_IP
 no bgp ebgp-requires-policy
 neighbor leaf1 interface remote-as external
 !
 address-family ipv4 unicast
  network $INTERNET_IP/32
  neighbor leaf1 default-originate
 exit-address-family
exit
!
EOF
    : >"$dir/vtysh.conf"
    netlab_frr_start "${P}internet" "$dir" "$dir/frr.conf" || die "FRR failed to start on internet"
    printf 'internet\n' >"$STATE/internet/index.html"
    start_bg internet-http "${P}internet" "$(python_bin)" -m http.server 80 \
        --bind "$INTERNET_IP" --directory "$STATE/internet"
}

# cdc_start - the customer's data centre: a router StackFabric does not manage, with a static
# FRR config (as a customer's would be): eBGP to the VPC side of its Direct Connect over its
# link to leaf2, announcing its host network 192.168.100.0/24 and also
# 172.16.50.0/24, which the Direct Connect does not accept. cdc-host (192.168.100.10) sits
# behind it.
cdc_start() {
    local dir=$STATE/frr/cdc
    mkdir -p "$dir"
    cat >"$dir/frr.conf" <<EOF
frr defaults datacenter
hostname cdc
ip forwarding
!
router bgp $CDC_ASN
 bgp router-id ${CDC_PEER%/*}
 no bgp ebgp-requires-policy
 neighbor ${CDC_PEER%.*}.1 remote-as 64512
 !
 address-family ipv4 unicast
  network 192.168.100.0/24
  network 172.16.50.0/24
 exit-address-family
exit
!
EOF
    : >"$dir/vtysh.conf"
    netlab_frr_start "${P}cdc" "$dir" "$dir/frr.conf" || die "FRR failed to start on cdc"
}

build_topology() {
    local n l h g
    # shellcheck disable=SC2119  # no argument: keep our LAB_PREFIX and NETLAB_DIR
    netlab_init || die "netlab_init failed"
    log "namespaces and management network $MGMT_NET.0/24"
    netlab_mgmt_init || die "mgmt namespace"
    ip -n "${P}mgmt" addr add "$MGMT_NET.1/24" dev "$NETLAB_MGMT_BR" || die "mgmt address"
    local infra=(etcd coord)
    if [ "$HA" = 1 ]; then
        infra=()
        for n in "${HA_IDS[@]}"; do infra+=("etcd$n"); done
        for n in "${HA_IDS[@]}"; do infra+=("coord$n"); done
    fi
    for n in "${infra[@]}" "${SWITCHES[@]}" "${HVS[@]}" "${GWS[@]}"; do
        netlab_ns_add "${P}$n" || die "namespace ${P}$n"
        netlab_mgmt_attach "${P}$n" "$(mgmt_ip "$n")/24" || die "mgmt attach $n"
    done
    for n in internet bm1 cdc cdc-host; do
        netlab_ns_add "${P}$n" || die "namespace ${P}$n"
    done
    log "fabric links and loopbacks"
    for h in "${HVS[@]}"; do
        for l in "${LEAVES[@]}"; do
            netlab_link "${P}$h" "$l" "${P}$l" "$h" || die "link $h:$l <-> $l:$h"
        done
    done
    for g in "${GWS[@]}"; do
        for l in "${LEAVES[@]}"; do
            netlab_link "${P}$g" "$l" "${P}$l" "$g" || die "link $g:$l <-> $l:$g"
        done
        netlab_addr_lo "${P}$g" "10.255.2.${g#gw}/32" || die "loopback $g"
    done
    for l in "${LEAVES[@]}"; do
        netlab_link "${P}spine1" "$l" "${P}$l" spine1 || die "link spine1 <-> $l"
    done
    netlab_addr_lo "${P}spine1" "10.255.0.101/32" || die "loopback spine1"
    netlab_link "${P}internet" leaf1 "${P}leaf1" internet || die "link internet <-> leaf1"
    # bm1: its NIC "leaf1" (the switch port binding decides the tier; the test addresses it).
    netlab_link "${P}bm1" leaf1 "${P}leaf1" bm1 1500 || die "link bm1 <-> leaf1"
    # The customer's router on leaf2 port "cdc", its host network behind it.
    netlab_link "${P}cdc" leaf2 "${P}leaf2" cdc 1500 || die "link cdc <-> leaf2"
    ip -n "${P}cdc" addr add "$CDC_PEER" dev leaf2 || die "cdc peer address"
    netlab_link "${P}cdc" host "${P}cdc-host" cdc 1500 || die "link cdc <-> cdc-host"
    ip -n "${P}cdc" addr add 192.168.100.1/24 dev host || die "cdc host network"
    # A second customer network (no dummy links on this kernel: a second address will do).
    ip -n "${P}cdc" addr add 172.16.50.1/24 dev host || die "cdc other network"
    ip -n "${P}cdc-host" addr add 192.168.100.10/24 dev cdc || die "cdc-host address"
    ip -n "${P}cdc-host" route add default via 192.168.100.1 || die "cdc-host route"
    netlab_addr_lo "${P}internet" "$INTERNET_IP/32" || die "loopback internet"
    for l in "${LEAVES[@]}"; do
        netlab_addr_lo "${P}$l" "10.255.0.${l#leaf}/32" || die "loopback $l"
    done
    for h in "${HVS[@]}"; do
        netlab_addr_lo "${P}$h" "10.255.1.${h#hv}/32" || die "loopback $h"
    done
    log "FRR (minimal config) on switches, hypervisors and gateways; internet edge, customer DC"
    for n in "${SWITCHES[@]}" "${HVS[@]}" "${GWS[@]}"; do
        frr_node_start "$n"
    done
    internet_start
    cdc_start
}

etcd_healthy() {
    ip netns exec "${P}mgmt" env ETCDCTL_API=3 etcdctl --endpoints "$ETCD_URL" \
        --dial-timeout=1s --command-timeout=2s endpoint health
}

start_etcd() {
    log "etcd in ${P}etcd ($ETCD_URL)"
    mkdir -p "$STATE/etcd"
    chmod 700 "$STATE/etcd"
    start_bg etcd "${P}etcd" "$(command -v etcd)" --name lab --data-dir "$STATE/etcd" \
        --listen-client-urls "$ETCD_URL,http://127.0.0.1:2379" \
        --advertise-client-urls "$ETCD_URL" \
        --listen-peer-urls http://127.0.0.1:2380 \
        --initial-advertise-peer-urls http://127.0.0.1:2380 \
        --initial-cluster lab=http://127.0.0.1:2380
    wait_for 30 "etcd health" etcd_healthy || {
        log_tail etcd 30
        die "etcd not healthy after 30 s"
    }
}

# ---------------------------------------------------------------------------
# HA lab: etcd cluster etcd1-3 with TLS and auth

# etcdctl_as USER ENDPOINTS ARGS... - etcdctl from ${P}mgmt. HA lab: TLS with USER's
# certificate pki/USER.pem (client-cert auth: its CN is the etcd user); plain lab: no TLS, no
# user.
etcdctl_as() {
    local user=$1 eps=$2 tls=()
    shift 2
    if [ "$HA" = 1 ]; then
        tls=(--cacert "$STATE/pki/ca.pem" --cert "$STATE/pki/$user.pem" --key "$STATE/pki/$user.key")
    fi
    ip netns exec "${P}mgmt" env ETCDCTL_API=3 etcdctl --endpoints "$eps" "${tls[@]}" "$@"
}

# etcd_member_healthy N... - each member N answers a quorum read (as root).
etcd_member_healthy() {
    local i eps=""
    for i in "$@"; do eps+="${eps:+,}${ETCD_URLS[i - 1]}"; done
    etcdctl_as root "$eps" --dial-timeout=1s --command-timeout=2s endpoint health
}

# start_etcd_member N new|existing - member etcdN in ${P}etcdN, data in $STATE/etcd/etcdN.
# Clients (https://IP:2379, also 127.0.0.1 inside the namespace) and peers (https://IP:2380)
# must present a certificate of the lab CA; etcd uses its own certificate for both.
# `existing`: a restart with the member's data dir (the cluster flags are then ignored).
start_etcd_member() {
    local i=$1 cstate=$2 ip cluster="" j d=$STATE/pki
    ip=$(mgmt_ip "etcd$i")
    for j in "${HA_IDS[@]}"; do
        cluster+="${cluster:+,}etcd$j=https://$(mgmt_ip "etcd$j"):2380"
    done
    mkdir -p "$STATE/etcd/etcd$i"
    chmod 700 "$STATE/etcd" "$STATE/etcd/etcd$i"
    start_bg "etcd$i" "${P}etcd$i" "$(command -v etcd)" --name "etcd$i" \
        --data-dir "$STATE/etcd/etcd$i" \
        --listen-client-urls "https://$ip:2379,https://127.0.0.1:2379" \
        --advertise-client-urls "https://$ip:2379" \
        --listen-peer-urls "https://$ip:2380" \
        --initial-advertise-peer-urls "https://$ip:2380" \
        --initial-cluster "$cluster" --initial-cluster-token "${P}etcd" \
        --initial-cluster-state "$cstate" \
        --client-cert-auth --trusted-ca-file "$d/ca.pem" \
        --cert-file "$d/etcd$i.pem" --key-file "$d/etcd$i.key" \
        --peer-client-cert-auth --peer-trusted-ca-file "$d/ca.pem" \
        --peer-cert-file "$d/etcd$i.pem" --peer-key-file "$d/etcd$i.key"
}

# etcd_member_wait N - wait until member N is healthy, or fail with its log.
etcd_member_wait() {
    WAIT_PROCS="etcd$1" wait_for 30 "etcd$1 health" etcd_member_healthy "$1" || {
        log_tail "etcd$1" 30
        die "etcd$1 not healthy after 30 s"
    }
}

start_etcd_cluster() {
    local i names=()
    for i in "${HA_IDS[@]}"; do names+=("etcd$i"); done
    log "etcd cluster ${names[*]} (mTLS): $ETCD_ENDPOINTS"
    for i in "${HA_IDS[@]}"; do
        start_etcd_member "$i" new
    done
    WAIT_PROCS="${names[*]}" wait_for 40 "etcd cluster health" \
        etcd_member_healthy "${HA_IDS[@]}" || {
        for i in "${names[@]}"; do log_tail "$i" 15; done
        die "etcd cluster not healthy after 40 s"
    }
    etcd_auth_setup
    etcd_auth_check
}

etcd_admin() {
    etcdctl_as root "$ETCD_ENDPOINTS" "$@" >/dev/null || die "etcdctl $* failed"
}

# etcd_auth_setup - access control of StackFabric's etcd: the reference procedure (run once,
# as etcd's root, on a fresh cluster whose members require client certificates:
# --client-cert-auth --trusted-ca-file). With client-cert auth etcd takes the user name from
# the certificate's CN, so the users have no password (--no-password) and nobody can log in
# with one:
#   root           role root: administration (etcdctl --cert root.pem); needed to enable auth
#   coord1..coordN role coordinator: readwrite on $ETCD_ROOT/ (intent, inventory, allocations,
#                  every node's status); coordinator certificates have CN coord1..coordN
#   <node>         role node-<node>: readwrite on $ETCD_ROOT/nodes/<node>/ only (the
#                  heartbeat and status keys under the node's lease); the agent's certificate
#                  has CN <node>, so it can neither read intent nor touch another node's keys
# $ETCD_ROOT is the --etcd-root of the binaries (default /stackfabric); adding a node later:
# the role/user pair below for it, with auth already on (as root).
etcd_auth_setup() {
    local n i r=$ETCD_ROOT
    log "etcd auth: users root, coord1-${#HA_IDS[@]}, one per node (CN of their certificates)"
    etcd_admin user add root --no-password
    etcd_admin user grant-role root root
    etcd_admin role add coordinator
    etcd_admin role grant-permission coordinator --prefix=true readwrite "$r/"
    for i in "${HA_IDS[@]}"; do
        etcd_admin user add "coord$i" --no-password
        etcd_admin user grant-role "coord$i" coordinator
    done
    for n in "${SWITCHES[@]}" "${HVS[@]}" "${GWS[@]}"; do
        etcd_admin role add "node-$n"
        etcd_admin role grant-permission "node-$n" --prefix=true readwrite "$r/nodes/$n/"
        etcd_admin user add "$n" --no-password
        etcd_admin user grant-role "$n" "node-$n"
    done
    etcd_admin auth enable
}

# etcd_auth_check - auth is in force: hv1's certificate may write under nodes/hv1/ but is
# refused ("permission denied") under nodes/hv2/ and intent/.
etcd_auth_check() {
    local k out
    k=$ETCD_ROOT/nodes/hv1/lab-auth-check
    etcdctl_as hv1 "$ETCD_ENDPOINTS" put "$k" ok >/dev/null || die "etcd auth: hv1 cannot write $k"
    etcdctl_as hv1 "$ETCD_ENDPOINTS" del "$k" >/dev/null || die "etcd auth: hv1 cannot delete $k"
    for k in "$ETCD_ROOT/nodes/hv2/lab-auth-check" "$ETCD_ROOT/intent/lab-auth-check"; do
        if out=$(etcdctl_as hv1 "$ETCD_ENDPOINTS" put "$k" x 2>&1); then
            etcdctl_as root "$ETCD_ENDPOINTS" del "$k" >/dev/null 2>&1 || true
            die "etcd auth: hv1 could write $k"
        fi
        case "$out" in
            *"permission denied"*) ;;
            *) die "etcd auth: hv1 writing $k: expected permission denied, got: $out" ;;
        esac
    done
    log "etcd auth: checked (hv1 writes nodes/hv1/, is denied nodes/hv2/ and intent/)"
}

# ---------------------------------------------------------------------------
# coordinator(s)

# rest_users_init - REST (CloudStack's Netris provider): user `cloudstack`, password in
# $STATE/rest-password; one users file for every coordinator.
rest_users_init() {
    if [ ! -s "$STATE/rest-users" ]; then
        (
            umask 077
            openssl rand -hex 12 >"$STATE/rest-password"
            printf 'cloudstack:%s\n' \
                "$("$SF_BIN_DIR/sf-coordinator" hash-password <"$STATE/rest-password")" \
                >"$STATE/rest-users"
        ) || die "creating the REST user"
        chmod 600 "$STATE/rest-password" "$STATE/rest-users"
    fi
}

start_coordinator() {
    log "coordinator in ${P}coord ($COORD_URL, Netris REST API on https://$MGMT_NET.3:8080)"
    rest_users_init
    start_bg coordinator "${P}coord" "$SF_BIN_DIR/sf-coordinator" --listen 0.0.0.0:7443 \
        --etcd-endpoints "$ETCD_URL" \
        --tls-cert "$STATE/pki/coordinator.pem" --tls-key "$STATE/pki/coordinator.key" \
        --tls-ca "$STATE/pki/ca.pem" --api-token-file "$STATE/api-token" \
        --metrics-listen 0.0.0.0:9100 \
        --rest-listen 0.0.0.0:8080 --rest-users-file "$STATE/rest-users" --rest-site lab \
        --rest-tls-cert "$STATE/pki/coordinator.pem" --rest-tls-key "$STATE/pki/coordinator.key"
    wait_for 20 "coordinator" sfctl_cmd status || {
        log_tail coordinator 30
        sfctl_cmd status || true
        die "coordinator not answering sfctl status after 20 s"
    }
}

# start_coord_replica N - HA coordinator coordN in ${P}coordN: as start_coordinator, with its
# own name and certificate (also its etcd client certificate: etcd user coordN), all etcd
# members over TLS.
start_coord_replica() {
    local i=$1 d=$STATE/pki ip
    ip=$(mgmt_ip "coord$i")
    log "coordinator coord$i in ${P}coord$i (${COORD_URLS[i - 1]}, REST https://$ip:8080)"
    rest_users_init
    start_bg "coord$i" "${P}coord$i" "$SF_BIN_DIR/sf-coordinator" --name "coord$i" \
        --listen 0.0.0.0:7443 \
        --etcd-endpoints "$ETCD_ENDPOINTS" \
        --etcd-ca "$d/ca.pem" --etcd-cert "$d/coord$i.pem" --etcd-key "$d/coord$i.key" \
        --tls-cert "$d/coord$i.pem" --tls-key "$d/coord$i.key" \
        --tls-ca "$d/ca.pem" --api-token-file "$STATE/api-token" \
        --metrics-listen 0.0.0.0:9100 \
        --rest-listen 0.0.0.0:8080 --rest-users-file "$STATE/rest-users" --rest-site lab \
        --rest-tls-cert "$d/coord$i.pem" --rest-tls-key "$d/coord$i.key"
}

# coord_replica_wait N - wait until coordN itself answers sfctl status.
coord_replica_wait() {
    WAIT_PROCS="coord$1" wait_for 20 "coord$1" sfctl_at "${COORD_URLS[$1 - 1]}" status || {
        log_tail "coord$1" 30
        sfctl_at "${COORD_URLS[$1 - 1]}" status || true
        die "coord$1 not answering sfctl status after 20 s"
    }
}

start_coord_replicas() {
    local i
    for i in "${HA_IDS[@]}"; do start_coord_replica "$i"; done
    for i in "${HA_IDS[@]}"; do coord_replica_wait "$i"; done
}

create_inventory() {
    local l h g border
    log "inventory: nodes"
    sfctl_cmd node create spine1 --role switch --asn 65100 --loopback 10.255.0.101 \
        --fabric-port leaf1 --fabric-port leaf2 >/dev/null || die "sfctl node create spine1"
    for l in "${LEAVES[@]}"; do
        border=()
        [ "$l" = leaf1 ] && border=(--fabric-port internet)
        sfctl_cmd node create "$l" --role switch --asn "6510${l#leaf}" \
            --loopback "10.255.0.${l#leaf}" \
            --fabric-port hv1 --fabric-port hv2 --fabric-port hv3 \
            --fabric-port gw1 --fabric-port gw2 --fabric-port spine1 "${border[@]}" >/dev/null ||
            die "sfctl node create $l"
    done
    for h in "${HVS[@]}"; do
        sfctl_cmd node create "$h" --role hypervisor --asn "6500${h#hv}" \
            --loopback "10.255.1.${h#hv}" \
            --fabric-port leaf1 --fabric-port leaf2 >/dev/null ||
            die "sfctl node create $h"
    done
    for g in "${GWS[@]}"; do
        sfctl_cmd node create "$g" --role gateway --asn "6501${g#gw}" \
            --loopback "10.255.2.${g#gw}" \
            --fabric-port leaf1 --fabric-port leaf2 >/dev/null ||
            die "sfctl node create $g"
    done
}

# start_agent NODE - the node's agent inside its namespace (switch or hypervisor).
start_agent() {
    local n=$1 bin extra=() etcd_tls=() nsenter=0
    case "$n" in
        leaf* | spine*) bin=$SF_BIN_DIR/sf-switch-agent ;;
        hv*) bin=$SF_BIN_DIR/sf-hypervisor-agent ;;
        gw*)
            bin=$SF_BIN_DIR/sf-gateway-agent
            extra=(--netns-prefix "${P}$n-vpc")
            nsenter=1
            ;;
        *) die "no agent for node '$n'" ;;
    esac
    # HA lab: the node's certificate is also its etcd client certificate (etcd user <node>)
    if [ "$HA" = 1 ]; then
        etcd_tls=(--etcd-ca "$STATE/pki/ca.pem" --etcd-cert "$STATE/pki/$n.pem"
            --etcd-key "$STATE/pki/$n.key")
    fi
    mkdir -p "$STATE/agents/$n"
    START_NSENTER=$nsenter start_bg "$n" "${P}$n" "$bin" --node "$n" \
        --coordinator "$COORD_ENDPOINTS" \
        --etcd-endpoints "$ETCD_ENDPOINTS" "${etcd_tls[@]}" \
        --tls-cert "$STATE/pki/$n.pem" --tls-key "$STATE/pki/$n.key" \
        --tls-ca "$STATE/pki/ca.pem" \
        --state-dir "$STATE/agents/$n" --frr-dir "$STATE/frr/$n" \
        --metrics-listen 0.0.0.0:9101 "${extra[@]}"
}

# kill_proc NAME - SIGKILL (a crash, for tests), only if the pid is still ours.
kill_proc() {
    local pf=$STATE/pids/$1.pid pid
    [ -f "$pf" ] || die "$1 is not running"
    pid=$(cat "$pf")
    pid_matches "$pid" "$STATE/pids/$1.cmd" || die "$1 is not running"
    kill -KILL "$pid"
    rm -f "$pf" "$STATE/pids/$1.cmd"
}

start_agents() {
    local n
    log "agents"
    for n in "${SWITCHES[@]}" "${HVS[@]}" "${GWS[@]}"; do
        start_agent "$n"
    done
    wait_for 40 "agent leases" leases_up "${SWITCHES[@]}" "${HVS[@]}" "${GWS[@]}" || {
        sfctl_cmd status || true
        die "not every node has lease up after 40 s"
    }
}

create_demo() {
    local v
    log "demo tenant"
    sfctl_cmd pool create public --cidr "$PUBLIC_POOL" >/dev/null || die "sfctl pool create"
    sfctl_cmd tenant create demo >/dev/null || die "sfctl tenant create demo"
    for v in blue red; do
        sfctl_cmd vpc create "$v" --tenant demo --cidr 10.10.0.0/16 >/dev/null ||
            die "sfctl vpc create $v"
        sfctl_cmd network create web --tenant demo --vpc "$v" --cidr 10.10.1.0/24 >/dev/null ||
            die "sfctl network create web (vpc $v)"
    done
    vm_add blue-web-1 hv1 demo blue web 10.10.1.11 || die "vm-add blue-web-1"
    vm_add blue-web-2 hv2 demo blue web 10.10.1.12 || die "vm-add blue-web-2"
    vm_add red-web-1 hv1 demo red web 10.10.1.11 || die "vm-add red-web-1"
    vm_add red-web-2 hv3 demo red web 10.10.1.12 || die "vm-add red-web-2"
    log "waiting for blue-web-1 -> 10.10.1.12"
    wait_for 30 "blue-web-1 ping" ip netns exec "${P}blue-web-1" ping -c1 -W1 10.10.1.12 ||
        die "blue-web-1 cannot reach 10.10.1.12 after 30 s"
}

# ---------------------------------------------------------------------------
# VMs

vm_mac() {
    local h
    h=$(printf '%s' "$1" | md5sum)
    echo "52:54:00:${h:0:2}:${h:2:2}:${h:4:2}"
}

valid_name() {
    case "$1" in
        '' | *[!A-Za-z0-9_.-]* | [.-]*) die "bad name '$1'" ;;
    esac
}

# vm_plug NAME HV BRIDGE IP/LEN GATEWAY MAC - VM namespace + HTTP server.
vm_plug() {
    local name=$1 hv=$2 br=$3 ipl=$4 gw=$5 mac=$6 vm=${P}$1 dir=$STATE/vms/$1 vnet
    [ -e "/run/netns/$vm" ] && { log "namespace $vm already exists"; return 1; }
    vnet=$(netlab_vm_add "$vm" "${P}$hv" "$br" "$ipl" "$mac") || return 1
    if [ -n "$gw" ]; then
        ip -n "$vm" route add default via "$gw" dev eth0 || return 1
    fi
    mkdir -p "$dir/www"
    printf '%s\n' "$name" >"$dir/www/index.html"
    printf 'hv=%s\nbridge=%s\nvnet=%s\nip=%s\nmac=%s\n' "$hv" "$br" "$vnet" "$ipl" "$mac" >"$dir/plug"
    start_bg "vm-$name" "$vm" "$(python_bin)" -m http.server 80 --bind 0.0.0.0 \
        --directory "$dir/www"
    local i out
    for ((i = 0; i < 50; i++)); do
        out=$(ip netns exec "$vm" curl -s -m 1 http://127.0.0.1/ 2>/dev/null) || out=""
        [ "$out" = "$name" ] && return 0
        proc_alive "vm-$name" || break
        sleep 0.2
    done
    log "HTTP server in $vm did not come up"
    log_tail "vm-$name"
    return 1
}

# vm_unplug NAME - stop the HTTP server, delete the VM namespace.
vm_unplug() {
    local name=$1 vm=${P}$1 pid
    stop_proc "vm-$name"
    if [ -e "/run/netns/$vm" ]; then
        # deleting eth0 removes the hypervisor's vnet end synchronously
        ip -n "$vm" link del eth0 2>/dev/null || true
        for pid in $(ip netns pids "$vm" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
        ip netns del "$vm" || log "could not delete namespace $vm"
    fi
    rm -rf "${STATE:?}/vms/$name"
    rm -f "$STATE/logs/vm-$name.log"
}

bridge_exists() { ip -n "$1" link show "$2" >/dev/null 2>&1; }

# vm_add NAME HV TENANT VPC NETWORK IP (returns non-zero on failure, after undoing)
vm_add() {
    local name=$1 hv=$2 tenant=$3 vpc=$4 net=$5 ip=$6 mac json vni gw cidr len
    valid_name "$name"
    lab_is_up || { log "lab is down"; return 1; }
    [ -e "/run/netns/${P}$hv" ] || { log "no hypervisor namespace ${P}$hv"; return 1; }
    [ -e "/run/netns/${P}$name" ] && { log "VM $name already exists"; return 1; }
    mac=$(vm_mac "$name")
    json=$(sfctl_cmd -o json network show "$net" --tenant "$tenant" --vpc "$vpc") ||
        { log "sfctl network show $net failed"; return 1; }
    vni=$(printf '%s' "$json" | json_get vni) || { log "no vni in: $json"; return 1; }
    gw=$(printf '%s' "$json" | json_get gateway) || { log "no gateway in: $json"; return 1; }
    cidr=$(printf '%s' "$json" | json_get cidr 2>/dev/null) || cidr=""
    case "$gw" in */*) len=${gw#*/}; gw=${gw%/*} ;; *) len=${cidr#*/} ;; esac
    case "$len" in '' | *[!0-9]*) len=24 ;; esac
    log "vm $name: port on $hv ($tenant/$vpc/$net vni $vni) ip $ip/$len gw $gw mac $mac"
    sfctl_cmd port create "$name" --tenant "$tenant" --vpc "$vpc" --network "$net" \
        --node "$hv" --ip "$ip" --mac "$mac" >/dev/null || { log "sfctl port create $name failed"; return 1; }
    mkdir -p "$STATE/vms/$name"
    printf 'tenant=%s\nvpc=%s\nnetwork=%s\nvni=%s\n' "$tenant" "$vpc" "$net" "$vni" >"$STATE/vms/$name/port"
    local ok=1
    if ! WAIT_PROCS=$hv wait_for 20 "bridge brvx-$vni on $hv" bridge_exists "${P}$hv" "brvx-$vni"; then
        log_tail "$hv" 20
        # Last, so a caller that keeps only the tail of the output still sees why.
        log "agent on $hv did not create brvx-$vni (timeout 20 s)"
        ok=0
    elif ! vm_plug "$name" "$hv" "brvx-$vni" "$ip/$len" "$gw" "$mac"; then
        ok=0
    fi
    if [ "$ok" = 0 ]; then
        vm_unplug "$name"
        sfctl_cmd port delete "$name" --tenant "$tenant" >/dev/null 2>&1 || true
        return 1
    fi
}

vm_del() {
    local name=$1 tenant=""
    valid_name "$name"
    if [ -f "$STATE/vms/$name/port" ]; then
        tenant=$(sed -n 's/^tenant=//p' "$STATE/vms/$name/port")
    fi
    vm_unplug "$name"
    if [ -n "$tenant" ] && lab_is_up; then
        sfctl_cmd port delete "$name" --tenant "$tenant" || return 1
    fi
}

# ---------------------------------------------------------------------------
# down

do_down() {
    local pf name d i
    if [ -d "$STATE/pids" ]; then
        for pf in "$STATE"/pids/vm-*.pid; do
            [ -e "$pf" ] && stop_proc "$(basename "$pf" .pid)"
        done
        for name in "${GWS[@]}" "${HVS[@]}" "${SWITCHES[@]}"; do stop_proc "$name"; done
        for pf in "$STATE"/pids/*.pid; do
            [ -e "$pf" ] || continue
            name=$(basename "$pf" .pid)
            case "$name" in coordinator | coord[0-9]* | etcd | etcd[0-9]*) ;; *) stop_proc "$name" ;; esac
        done
        stop_proc coordinator
        for i in "${HA_IDS[@]}"; do stop_proc "coord$i"; done
        stop_proc etcd
        for i in "${HA_IDS[@]}"; do stop_proc "etcd$i"; done
    fi
    for d in "$STATE"/frr/*/; do
        [ -d "$d" ] && { netlab_frr_stop "${d%/}" || true; }
    done
    # FRR instances gateway agents started inside VPC routers (Direct Connect BGP); a stopped
    # agent leaves its VPC routers serving, so they are ended here, before their namespaces go.
    if [ -d "$STATE/agents" ]; then
        while IFS= read -r pf; do
            netlab_frr_stop "$(dirname "$pf")" || true
        done < <(find "$STATE/agents" -name zebra.pid 2>/dev/null)
    fi
    netlab_cleanup "$P" || true
    rm -rf "${STATE:?}"
    if any_ns_left; then
        log "WARNING: namespaces left: $(ip netns list | awk '{print $1}' | grep -E "^${P//./\\.}." | tr '\n' ' ')"
        return 1
    fi
    return 0
}

# ---------------------------------------------------------------------------
# up

UP_DONE=0
up_exit() {
    local rc=$?
    [ "$UP_DONE" = 1 ] && return 0
    trap - EXIT INT TERM
    echo "lab[$P]: 'up' failed (rc=$rc)" >&2
    if [ "${SF_LAB_KEEP_ON_FAIL:-0}" = 1 ]; then
        echo "lab[$P]: SF_LAB_KEEP_ON_FAIL=1: left as is; logs in $STATE/logs; clean with: $0 down" >&2
    else
        local f
        for f in "$STATE"/logs/*.log; do
            [ -s "$f" ] && log_tail "$(basename "$f" .log)" 10
        done
        echo "lab[$P]: cleaning up" >&2
        do_down || true
    fi
    exit $((rc == 0 ? 1 : rc))
}

check_tools() {
    local t
    for t in ip bridge vtysh etcd etcdctl openssl python3 curl ping md5sum setsid; do
        command -v "$t" >/dev/null 2>&1 || die "missing tool: $t"
    done
}

cmd_up() {
    local build=1 force=0 ha=0 a b
    for a in "$@"; do
        case "$a" in
            --no-build) build=0 ;;
            --force) force=1 ;;
            --ha) ha=1 ;;
            *) die "up: unknown option $a" ;;
        esac
    done
    [ "$(id -u)" = 0 ] || die "must run as root"
    if lab_is_up || any_ns_left; then
        if [ "$force" = 1 ]; then
            log "a lab with prefix $P exists; --force: taking it down first"
            do_down || die "could not remove the existing lab"
        else
            die "a lab with prefix $P is already up (use '$0 down' or 'up --force')"
        fi
    elif [ -e "$STATE" ]; then
        log "removing leftovers of an earlier run ($STATE)"
        do_down || die "could not clean leftovers"
    fi

    log "dependencies (deploy/deps.sh)"
    if ! "$ROOT/deploy/deps.sh"; then
        if [ "$build" = 0 ] || [ "$NO_BINARIES" = 1 ]; then
            log "deploy/deps.sh failed; continuing without build"
        else
            die "deploy/deps.sh failed"
        fi
    fi
    check_tools
    if [ "$NO_BINARIES" = 1 ]; then
        log "SF_LAB_NO_BINARIES=1: skipping build, coordinator, agents and demo"
    else
        if [ "$build" = 1 ]; then
            log "cargo build --release --bins"
            (cd "$ROOT" && cargo build --release --bins) || die "cargo build failed"
        fi
        for b in sf-coordinator sf-switch-agent sf-hypervisor-agent sfctl; do
            [ -x "$SF_BIN_DIR/$b" ] || die "missing binary $SF_BIN_DIR/$b"
        done
    fi

    trap up_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    mkdir -p "$STATE"
    chmod 755 "$STATE"
    mkdir -p "$STATE/logs" "$STATE/pids" "$STATE/agents" "$STATE/frr" "$STATE/vms"
    HA=$ha
    set_endpoints
    if [ "$HA" = 1 ]; then
        echo ha >"$STATE/mode"
        log "HA lab: etcd members and coordinators ${HA_IDS[*]}"
    else
        echo plain >"$STATE/mode"
    fi
    build_topology
    log "PKI and API token"
    pki_all
    if [ "$HA" = 1 ]; then
        start_etcd_cluster
    else
        start_etcd
    fi
    if [ "$NO_BINARIES" != 1 ]; then
        if [ "$HA" = 1 ]; then
            start_coord_replicas
        else
            start_coordinator
        fi
        create_inventory
        start_agents
        create_demo
    fi
    UP_DONE=1
    trap - EXIT INT TERM
    summary
}

summary() {
    local me=$0 i
    if [ "$HA" = 1 ]; then
        cat <<EOF

StackFabric HA lab is up (prefix $P, state $STATE).
  management net     $MGMT_NET.0/24: mgmt .1, etcd1-3 .41-.43, coord1-3 .51-.53,
                     leaf1-2 .11-.12, spine1 .19, hv1-3 .21-.23, gw1-2 .31-.32
  etcd (mTLS, auth)  client certificate CN = etcd user (root, coord1-3, one per node)
EOF
        for i in "${HA_IDS[@]}"; do
            printf '    etcd%s            %s  peer https://%s:2380  ns %s\n' "$i" \
                "${ETCD_URLS[i - 1]}" "$(mgmt_ip "etcd$i")" "${P}etcd$i"
        done
        if [ "$NO_BINARIES" = 1 ]; then
            echo "  coordinators       (none: SF_LAB_NO_BINARIES=1)"
        else
            echo "  coordinators       gRPC :7443, REST :8080, metrics :9100; sfctl tries coord1 first"
            for i in "${HA_IDS[@]}"; do
                printf '    coord%s           %s  ns %s\n' "$i" "${COORD_URLS[i - 1]}" "${P}coord$i"
            done
        fi
        echo "  logs               $STATE/logs/"
    else
        cat <<EOF

StackFabric lab is up (prefix $P, state $STATE).
  management net     $MGMT_NET.0/24: mgmt .1, etcd .2, coord .3, leaf1-2 .11-.12, hv1-3 .21-.23
  coordinator        $COORD_URL   etcd $ETCD_URL
  logs               $STATE/logs/
EOF
    fi
    if [ "$NO_BINARIES" = 1 ]; then
        echo "  (SF_LAB_NO_BINARIES=1: no coordinator, agents or demo VMs)"
    else
        cat <<EOF
  demo tenant        demo: vpc blue + red (10.10.0.0/16), network web 10.10.1.0/24 in each
                     blue-web-1 hv1 10.10.1.11, blue-web-2 hv2 10.10.1.12
                     red-web-1  hv1 10.10.1.11, red-web-2  hv3 10.10.1.12
EOF
    fi
    cat <<EOF

  $me exec blue-web-1 curl -s http://10.10.1.12/     # -> blue-web-2
  $me exec leaf1 vtysh --vty_socket $STATE/frr/leaf1 -c 'show bgp summary'
  $me status                                      # sfctl status
  $me sfctl node list
  $me vm-add NAME HV TENANT VPC NETWORK IP / vm-del NAME
EOF
    if [ "$HA" = 1 ]; then
        cat <<EOF
  $me etcdctl member list -w table          # as root; --as NODE: with NODE's certificate
  $me etcd-kill N | etcd-start N | coord-kill N | coord-stop N | coord-start N
EOF
    fi
    echo "  $me down"
}

# ---------------------------------------------------------------------------
# subcommands on a running lab: etcd and coordinator(s), status

# replica_ids WHAT [N] - the member/replica numbers a coord-*/etcd-* subcommand of the HA lab
# acts on: N (checked), or every one.
replica_ids() {
    local what=$1 i
    shift
    [ $# -le 1 ] || die "usage: $0 $what [N]"
    if [ $# -eq 0 ]; then
        echo "${HA_IDS[*]}"
        return
    fi
    for i in "${HA_IDS[@]}"; do
        [ "$1" = "$i" ] && { echo "$i"; return; }
    done
    die "$what: no number '$1' (this lab has ${HA_IDS[*]})"
}

# Hooks of member_ctl: start the single (plain lab) process, start HA member N, wait for
# members after a start.
coord_start_single() { start_coordinator; }
coord_start_member() {
    start_coord_replica "$1"
    coord_replica_wait "$1"
}
coord_wait_members() { :; }
etcd_start_single() { start_etcd; }
etcd_start_member() {
    [ -d "$STATE/etcd/etcd$1/member" ] || die "etcd$1 has no data dir ($STATE/etcd/etcd$1)"
    log "etcd$1: restart with its data dir (${ETCD_URLS[$1 - 1]})"
    start_etcd_member "$1" existing
}
etcd_wait_members() {
    local i
    for i in "$@"; do etcd_member_wait "$i"; done
}

# member_ctl coord|etcd start|stop|kill [N] - coord-*/etcd-* subcommands. Plain lab: the one
# process (`coordinator` or `etcd`); HA lab: member N, or every member without N. etcd-start
# N restarts member N from its data dir (it rejoins: --initial-cluster-state existing).
member_ctl() {
    local kind=$1 action=$2 single ids i
    shift 2
    single=$kind
    [ "$kind" = coord ] && single=coordinator
    if [ "$HA" != 1 ]; then
        [ $# -eq 0 ] || die "$kind-$action: this lab has one $single (numbers are for 'up --ha')"
        case "$action" in
            start)
                lab_is_up || die "lab $P is down"
                proc_alive "$single" && die "the $single is already running"
                "${kind}_start_single"
                ;;
            stop) stop_proc "$single" ;;
            kill) kill_proc "$single" ;;
        esac
        return 0
    fi
    ids=$(replica_ids "$kind-$action" "$@")
    [ "$action" = stop ] || lab_is_up || die "lab $P is down"
    for i in $ids; do
        case "$action" in
            start)
                if proc_alive "$kind$i"; then
                    [ $# -eq 0 ] && continue
                    die "$kind$i is already running"
                fi
                "${kind}_start_member" "$i"
                ;;
            stop) stop_proc "$kind$i" ;;
            kill)
                [ $# -eq 0 ] && ! proc_alive "$kind$i" && continue
                kill_proc "$kind$i"
                ;;
        esac
    done
    if [ "$action" = start ]; then
        # shellcheck disable=SC2086  # ids is a list of numbers
        "${kind}_wait_members" $ids
    fi
}

# etcdctl_cmd [--as USER] ARGS... - the `etcdctl` subcommand: every etcd endpoint of the lab
# (ARGS may override with --endpoints); HA lab: as USER (default root) with pki/USER.pem.
etcdctl_cmd() {
    local user=root
    if [ "${1:-}" = --as ]; then
        [ $# -ge 2 ] || die "usage: $0 etcdctl [--as USER] ARGS..."
        [ "$HA" = 1 ] || die "etcdctl --as: the plain lab's etcd has no TLS or users (see 'up --ha')"
        user=$2
        shift 2
        valid_name "$user"
        [ -f "$STATE/pki/$user.pem" ] || die "no certificate $STATE/pki/$user.pem"
    fi
    etcdctl_as "$user" "$ETCD_ENDPOINTS" "$@"
}

# proc_state NAME - "running (pid N)" or "stopped"
proc_state() {
    if proc_alive "$1"; then
        echo "running (pid $(cat "$STATE/pids/$1.pid"))"
    else
        echo stopped
    fi
}

# ha_status - etcd members (process, health, leader) and coordinator replicas (process,
# answering sfctl), then `sfctl status` (HA: via sfctl_cmd's replica choice).
ha_status() {
    local i url st health role any=0
    echo "etcd members:"
    for i in "${HA_IDS[@]}"; do
        url=${ETCD_URLS[i - 1]}
        health=unhealthy
        etcd_member_healthy "$i" >/dev/null 2>&1 && health=healthy
        role=""
        if st=$(etcdctl_as root "$url" --dial-timeout=1s --command-timeout=2s \
            endpoint status 2>/dev/null); then
            # url, id, version, db size, is leader, is learner, raft term, raft index, ...
            case "$(printf '%s' "$st" | awk -F', ' '{print $5}')" in
                true) role=", leader" ;;
                false) role=", follower" ;;
            esac
        fi
        printf '  etcd%s   %-28s %-20s %s%s\n' "$i" "$url" "$(proc_state "etcd$i")" "$health" "$role"
    done
    echo "coordinators:"
    for i in "${HA_IDS[@]}"; do
        url=${COORD_URLS[i - 1]}
        st=$(proc_state "coord$i")
        health=""
        if [ "$st" != stopped ]; then
            any=1
            if [ -x "$SF_BIN_DIR/sfctl" ]; then
                health="not answering"
                sfctl_at "$url" --timeout 2 status >/dev/null 2>&1 && health=answering
            fi
        fi
        printf '  coord%s  %-28s %-20s %s\n' "$i" "$url" "$st" "$health"
    done
    [ "$any" = 1 ] || { echo "(no coordinator running)"; return 0; }
    echo
    sfctl_cmd status "$@"
}

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
            [ $# -eq 5 ] || die "usage: $0 vm-plug NAME HV VNI IP/LEN GATEWAY"
            valid_name "$1"
            lab_is_up || die "lab $P is down"
            vm_plug "$1" "$2" "brvx-$3" "$4" "$5" "$(vm_mac "$1")" || {
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
            start_bg "vm-$1" "${P}$1" "$(python_bin)" -m http.server 80 --bind 0.0.0.0 \
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
