#!/usr/bin/env bash
# The packages and their systemd units, proven by running them under a real systemd (PID 1).
# A fresh `debootstrap --variant=minbase bookworm` root (deploy/lib/rootfs.sh) installs the
# .debs of deploy/package.sh with apt (which pulls their Depends: from Debian), then boots with
#   SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=0 systemd-nspawn --boot --private-network
# (the container has only its own loopback: nothing reaches the host's network). Inside it,
# from their units: Debian's etcd (TLS) and FRR, sf-coordinator, then
#   1. sf-hypervisor-agent under its real sandbox builds vxlan<VNI> in brvx-<VNI> with IPv6 off
#      and reports no error; `systemctl restart` recreates nothing; `systemctl stop` leaves the
#      dataplane as it is;
#   2. sf-gateway-agent serves a VPC router; `systemctl kill -s KILL` (every process of the
#      unit) is survived by the restart within the lease; `systemctl kill` (SIGTERM to every
#      process: a clean stop, no restart) is fenced; a crash that does not come back
#      (main process killed, Restart=no) is fenced: with KillMode=process the fence outlives
#      the agent and withdraws the router and its /32 within the lease; with systemd's default
#      KillMode=control-group (the control) systemd kills the fence and the router stays.
# Everything (container, root, mounts) is removed on exit, also after a failure.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$REPO/tests/e2e/lib.sh"
# shellcheck source=deploy/lib/rootfs.sh
source "$REPO/deploy/lib/rootfs.sh"
# shellcheck source=deploy/lib/pki.sh
source "$REPO/deploy/lib/pki.sh"

PREFIX=${LAB_PREFIX:-sfsd$$-}
MACHINE=$(echo "${PREFIX%-}" | tr -c 'A-Za-z0-9\n' -)
ROOT=/var/tmp/sf-systemd.$$
DEBS=${SF_DEB_DIR:-$REPO/target/debian}
PKI_DIR=$ROOT.pki
NSPAWN_PID=
C_PID=

# cx CMD...: run CMD inside the booted container (all its namespaces).
cx() { nsenter -t "$C_PID" -a -- "$@"; }
sfctl() {
    cx /usr/bin/sfctl --endpoint https://127.0.0.1:7443 --ca /etc/stackfabric/ca.pem \
        --server-name coordinator --token-file /etc/stackfabric/api-token "$@"
}
cleanup() {
    if [ "${SF_SYSTEMD_KEEP:-0}" = 1 ]; then # debugging: leave the container running
        echo "kept: nsenter -t $C_PID -a bash; remove: kill $NSPAWN_PID, then rootfs_remove $ROOT" >&2
        return
    fi
    if [ -n "$C_PID" ] && kill -0 "$C_PID" 2>/dev/null; then
        cx systemctl poweroff >/dev/null 2>&1 || true
        for _ in $(seq 1 60); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.5; done
    fi
    [ -z "$NSPAWN_PID" ] || kill -KILL "$NSPAWN_PID" 2>/dev/null || true
    rmdir "/run/systemd/nspawn/propagate/$MACHINE" 2>/dev/null || true
    rootfs_remove "$ROOT" || echo "systemd.sh: could not remove $ROOT" >&2
    rm -rf "$PKI_DIR" "$ROOT.console.log"
}
trap cleanup EXIT

section "packages"
if ! ls "$DEBS"/sf-coordinator_*.deb >/dev/null 2>&1; then
    check "deploy/package.sh builds the packages" "$REPO/deploy/package.sh"
fi
for p in sf-coordinator sf-switch-agent sf-hypervisor-agent sf-gateway-agent sfctl; do
    check "$p .deb exists" bash -c "ls '$DEBS'/${p}_*.deb"
done
check "the hypervisor agent depends on FRR with frr-pythontools (frr-reload.py) and nftables" \
    bash -c "dpkg-deb -f '$DEBS'/sf-hypervisor-agent_*.deb Depends | grep -q 'frr-pythontools' && dpkg-deb -f '$DEBS'/sf-hypervisor-agent_*.deb Depends | grep -q nftables"
check "the gateway agent's settings file is a conffile" \
    bash -c "dpkg-deb --ctrl-tarfile '$DEBS'/sf-gateway-agent_*.deb | tar -xO ./conffiles | grep -qx /etc/default/stackfabric-gateway-agent"

section "a fresh root installs them with apt"
check "fresh root at $ROOT" rootfs_create "$ROOT" || { finish; exit 1; }
rootfs_mount_api "$ROOT"
mkdir -p "$ROOT/tmp/debs" "$ROOT/var/cache/sf-test/debs"
cp "$DEBS"/*.deb "$ROOT/tmp/debs/"
# sf-switch-agent is left to the Ansible role's package task (section 3), as on a real host.
mv "$ROOT"/tmp/debs/sf-switch-agent_*.deb "$ROOT/var/cache/sf-test/debs/"
# procps, curl and ansible-core are the test's own tools, not dependencies of the packages.
check "apt install ./sf-*.deb (+ systemd, etcd-server) in the root" rootfs_chroot "$ROOT" bash -c \
    'export DEBIAN_FRONTEND=noninteractive; timeout 600 apt-get update -qq && timeout 900 apt-get install -y -qq --no-install-recommends systemd systemd-sysv dbus procps curl ansible-core python3-apt etcd-server etcd-client /tmp/debs/*.deb >/tmp/apt.log 2>&1 || { tail -n 20 /tmp/apt.log; exit 1; }' ||
    { finish; exit 1; }
check "apt pulled frr-reload.py (frr-pythontools) and nft" \
    test -e "$ROOT/usr/lib/frr/frr-reload.py" -a -x "$ROOT/usr/sbin/nft"
check "units installed in /lib/systemd/system" \
    test -f "$ROOT/lib/systemd/system/sf-gateway-agent.service" -a -f "$ROOT/lib/systemd/system/sf-coordinator.service"
check_eq "/etc/stackfabric is private" 700 "$(stat -c %a "$ROOT/etc/stackfabric")"
check_eq "installing started and enabled nothing of ours" "" \
    "$(find "$ROOT/etc/systemd/system" -name 'sf-*.service' 2>/dev/null)"
for m in run dev/pts dev sys proc; do umount "$ROOT/$m"; done
umount "$ROOT"
rm -f "$ROOT/usr/sbin/policy-rc.d"

section "configuration (certificates, etcd over TLS, FRR with bgpd, settings files)"
pki_init
pki_cert coordinator serverAuth,clientAuth "DNS:coordinator,IP:127.0.0.1"
pki_cert etcd serverAuth "DNS:localhost,IP:127.0.0.1"
for n in hv1 gw1; do pki_cert "$n" clientAuth "DNS:$n"; done
E=$ROOT/etc/stackfabric
cp "$PKI_DIR/ca.pem" "$PKI_DIR/coordinator.pem" "$PKI_DIR/coordinator.key" \
    "$PKI_DIR"/hv1.* "$PKI_DIR"/gw1.* "$E/"
openssl rand -hex 16 >"$E/api-token"
openssl rand -out "$E/tls-ticket.key" 32
printf 'cloudstack:%s\n' "$(openssl rand -hex 12 | rootfs_chroot "$ROOT" /usr/bin/sf-coordinator hash-password)" >"$E/rest-users"
chmod 600 "$E"/*.key "$E/api-token" "$E/rest-users"
mkdir -p "$ROOT/etc/etcd/tls"
cp "$PKI_DIR/ca.pem" "$PKI_DIR/etcd.pem" "$PKI_DIR/etcd.key" "$ROOT/etc/etcd/tls/"
rootfs_chroot "$ROOT" chown -R etcd:etcd /etc/etcd/tls
printf '127.0.0.1 localhost\n::1 localhost\n' >"$ROOT/etc/hosts"
cat >"$ROOT/etc/default/etcd" <<'EOF'
ETCD_NAME=sf
ETCD_DATA_DIR=/var/lib/etcd/default
ETCD_LISTEN_PEER_URLS=http://127.0.0.1:2380
ETCD_INITIAL_ADVERTISE_PEER_URLS=http://127.0.0.1:2380
ETCD_INITIAL_CLUSTER=sf=http://127.0.0.1:2380
ETCD_LISTEN_CLIENT_URLS=https://127.0.0.1:2379
ETCD_ADVERTISE_CLIENT_URLS=https://127.0.0.1:2379
ETCD_CERT_FILE=/etc/etcd/tls/etcd.pem
ETCD_KEY_FILE=/etc/etcd/tls/etcd.key
ETCD_TRUSTED_CA_FILE=/etc/etcd/tls/ca.pem
ETCD_CLIENT_CERT_AUTH=true
EOF
sed -i 's/^bgpd=no/bgpd=yes/; s/^bfdd=no/bfdd=yes/' "$ROOT/etc/frr/daemons"
cat >"$ROOT/etc/default/stackfabric-coordinator" <<'EOF'
SF_LISTEN=127.0.0.1:7443
SF_COORDINATOR_NAME=coord1
SF_ETCD_ENDPOINTS=https://127.0.0.1:2379
SF_REST_LISTEN=127.0.0.1:8080
SF_LOG_FORMAT=json
RUST_LOG=info
EOF
agent_env() { # agent_env NODE
    cat <<EOF
SF_NODE=$1
SF_COORDINATOR=https://127.0.0.1:7443
SF_TLS_SERVER_NAME=coordinator
SF_ETCD_ENDPOINTS=https://127.0.0.1:2379
SF_TLS_CERT=/etc/stackfabric/$1.pem
SF_TLS_KEY=/etc/stackfabric/$1.key
SF_TLS_CA=/etc/stackfabric/ca.pem
SF_ETCD_CA=/etc/stackfabric/ca.pem
SF_ETCD_CERT=/etc/stackfabric/$1.pem
SF_ETCD_KEY=/etc/stackfabric/$1.key
SF_LEASE_TTL=6
RUST_LOG=info
EOF
}
agent_env hv1 >"$ROOT/etc/default/stackfabric-hypervisor-agent"
agent_env gw1 >"$ROOT/etc/default/stackfabric-gateway-agent"
cp -a "$REPO/deploy/ansible" "$ROOT/var/cache/sf-test/ansible"
# The Ansible roles' package task, as site.yml and rollout.yml use it (section 3).
cat >"$ROOT/var/cache/sf-test/ansible/package-test.yml" <<'EOF'
- name: Install a StackFabric package with the roles' package task
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Install sf-switch-agent
      ansible.builtin.include_role:
        name: stackfabric_base
        tasks_from: package
      vars:
        sf_package: sf-switch-agent
        sf_deb_dir: /var/cache/sf-test/debs
EOF
pass "configured"

section "boot (systemd-nspawn --boot --private-network)"
SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=0 timeout 1200 systemd-nspawn -D "$ROOT" --register=no \
    --keep-unit --boot --private-network --machine "$MACHINE" --console=passive \
    >"$ROOT.console.log" 2>&1 &
NSPAWN_PID=$!
container_pid() { # the container's PID 1 (systemd), a child of systemd-nspawn
    local n
    n=$(pgrep -P "$NSPAWN_PID" -x systemd-nspawn || echo "$NSPAWN_PID")
    C_PID=$(pgrep -P "$n" -x systemd | head -n 1)
    [ -n "$C_PID" ]
}
check "systemd runs as the container's PID 1" wait_for 30 container_pid || { finish; exit 1; }
check_eq "PID 1 inside is systemd" systemd "$(cx cat /proc/1/comm)"
check "the container has no interface but its loopback" \
    bash -c "[ \"\$(nsenter -t $C_PID -n ip -o link show | awk -F': ' '{print \$2}' | tr '\n' ' ')\" = 'lo ' ]"
check "etcd (TLS) and FRR are active" wait_for 60 cx systemctl is-active --quiet etcd.service frr.service
check "sf-coordinator starts from its unit" cx systemctl start sf-coordinator.service
check "sfctl reaches the coordinator" wait_for 30 sfctl status
check "the unit serves the REST API over HTTPS with the coordinator's certificate" \
    cx curl -s -o /dev/null --cacert /etc/stackfabric/ca.pem https://127.0.0.1:8080/api/auth
check_not "and not over plain HTTP" cx curl -sf -m 3 -o /dev/null http://127.0.0.1:8080/api/auth

# node_json NODE: the node's entry in sfctl's fleet status (JSON).
node_field() { # node_field NODE PYEXPR  (n = the node's status entry)
    sfctl -o json status | python3 -c "import json,sys; n=[x for x in json.load(sys.stdin)['nodes'] if x['name']=='$1'][0]; print($2)"
}
in_sync() { [ "$(node_field "$1" "n['lease'] == 'up' and n['in_sync'] and not n['errors']")" = True ]; }

section "1. hypervisor agent under its sandbox"
cx ip link add leaf1 type veth peer name leaf1-peer
cx ip link set leaf1 up
hv_intent() {
    sfctl node create hv1 --role hypervisor --asn 65001 --loopback 10.255.1.1 --fabric-port leaf1 &&
        sfctl tenant create t1 && sfctl vpc create v1 --tenant t1 --cidr 10.10.0.0/16 &&
        sfctl network create web --tenant t1 --vpc v1 --cidr 10.10.1.0/24 &&
        sfctl port create vm1 --tenant t1 --vpc v1 --network web --node hv1 --ip 10.10.1.11
}
check "inventory and a tier with a port on hv1" hv_intent
VNI=$(sfctl -o json network show web --tenant t1 --vpc v1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["vni"])')
check "sf-hypervisor-agent starts from its unit" cx systemctl start sf-hypervisor-agent.service
bridged() { cx ip -d link show "vxlan$VNI" 2>/dev/null | grep -q "master brvx-$VNI"; }
check "vxlan$VNI is built in brvx-$VNI" wait_for 30 bridged
check_eq "IPv6 is off on brvx-$VNI and vxlan$VNI" "1 1" \
    "$(cx cat "/proc/sys/net/ipv6/conf/brvx-$VNI/disable_ipv6" "/proc/sys/net/ipv6/conf/vxlan$VNI/disable_ipv6" | tr '\n' ' ' | sed 's/ $//')"
check "hv1 reports lease up, in sync and no error" wait_for 30 in_sync hv1
check_eq "hv1's errors" "[]" "$(node_field hv1 "n['errors']")"
ifindexes() { cx cat "/sys/class/net/vxlan$VNI/ifindex" "/sys/class/net/brvx-$VNI/ifindex" | tr '\n' ' '; }
before=$(ifindexes)
rev=$(node_field hv1 "n['applied_revision']")
check "systemctl restart sf-hypervisor-agent" cx systemctl restart sf-hypervisor-agent.service
check "hv1 in sync again after the restart" wait_for 30 in_sync hv1
sleep 2
check_eq "the restart recreated nothing (same ifindexes)" "$before" "$(ifindexes)"
check_eq "same applied revision after the restart" "$rev" "$(node_field hv1 "n['applied_revision']")"
check "systemctl stop sf-hypervisor-agent" cx systemctl stop sf-hypervisor-agent.service
check_eq "stopping left the dataplane as it was" "$before" "$(ifindexes)"

section "2. gateway agent and its fence"
gw_intent() {
    sfctl node create gw1 --role gateway --asn 65011 --loopback 10.255.2.1 --fabric-port leaf1 &&
        sfctl pool create public --cidr 203.0.113.0/24 &&
        sfctl nat snat out --tenant t1 --vpc v1 --public-ip 203.0.113.10
}
check "gw1 in the inventory, a pool and a SNAT rule" gw_intent
# The container has no fabric: a route as BGP would install one stands in for it, so the
# failover controller sees a reachable fabric and activates the VPC router it is primary for.
check "a stand-in fabric route (proto bgp) in the container" cx ip route replace 10.255.0.1/32 dev lo proto bgp
check "sf-gateway-agent starts from its unit" cx systemctl start sf-gateway-agent.service
router() { cx ip netns list | grep -q '^sfvpc-'; }
# Announced: the active router's host route, redistributed into BGP.
announced() { cx vtysh -c 'show ip bgp' 2>/dev/null | grep -q '203.0.113.10/32'; }
withdrawn() { local c; c=$(cx vtysh -c 'show ip bgp') && ! grep -q 203.0.113.10/32 <<<"$c"; }
check "gw1 serves the VPC router (namespace sfvpc-*)" wait_for 40 router
check "gw1 announces the SNAT address 203.0.113.10/32 (FRR)" wait_for 30 announced
check "gw1 reports lease up, in sync and no error" wait_for 30 in_sync gw1
fence_pid() { cx pgrep -f -- 'sf-gateway-agent --fence' | head -n 1; }
has_fence() { [ -n "$(fence_pid)" ]; }
check "the fence runs beside the agent" wait_for 10 has_fence

# 2a. the literal `systemctl kill -s KILL` (every process of the unit, fence included):
# Restart=on-failure brings the agent back within the lease, so nothing moves.
check "systemctl kill -s KILL sf-gateway-agent" cx systemctl kill -s KILL sf-gateway-agent.service
gone=0
for _ in $(seq 1 40); do announced || gone=1; sleep 0.2; done
check_eq "the router stayed announced for 8 s across the kill" 0 "$gone"
check "the agent came back (Restart=on-failure)" wait_for 10 cx systemctl is-active --quiet sf-gateway-agent.service
check "gw1 in sync again" wait_for 30 in_sync gw1

# 2b. `systemctl kill` (SIGTERM to every process of the unit, systemctl's default): the agent
# stops cleanly, so it is not restarted, and the fence got the SIGTERM too. It must still
# stand the node down, or the coordinator moves the VPCs once the lease expires while this
# node keeps announcing them.
check "systemctl kill sf-gateway-agent (SIGTERM, every process)" cx systemctl kill sf-gateway-agent.service
check "the agent stopped and was not restarted" wait_for 15 bash -c "! nsenter -t $C_PID -a systemctl is-active --quiet sf-gateway-agent.service"
check "the fence ignored the SIGTERM and stood the node down (withdrew the /32)" wait_for 12 withdrawn
check "the router stays built, passive (warm)" router

# kill_main_no_restart KILLMODE [SETTING...]: a crash that does not come back: Restart=no,
# KillMode and SETTINGs as given (runtime drop-in), SIGKILL to the main process only.
kill_main_no_restart() {
    local mode=$1
    shift
    cx mkdir -p /run/systemd/system/sf-gateway-agent.service.d
    printf '[Service]\nRestart=no\nKillMode=%s\n%s\n' "$mode" "$*" |
        cx tee /run/systemd/system/sf-gateway-agent.service.d/test.conf >/dev/null
    cx systemctl daemon-reload
    cx systemctl restart sf-gateway-agent.service
    wait_for 40 router && wait_for 30 in_sync gw1 && wait_for 10 has_fence &&
        wait_for 20 announced || return 1
    sleep 1
    cx systemctl kill --kill-whom=main -s KILL sf-gateway-agent.service
}

# 2c. control: systemd's default KillMode=control-group ends the fence with the unit. The
# fence ignores SIGTERM, so systemd needs its stop timeout to SIGKILL it (15 s in the unit,
# long enough for the fence to act); 1 s here shows what KillMode=process protects against.
check "crash with KillMode=control-group, TimeoutStopSec=1s (control)" \
    kill_main_no_restart control-group TimeoutStopSec=1s
sleep 6
check_eq "control: systemd killed the fence along with the agent" "" "$(fence_pid)"
check "control: so the dead gateway keeps announcing (the hazard KillMode=process avoids)" announced

# 2d. the unit's KillMode=process: the fence survives and stands the node down.
check "crash with the unit's KillMode=process" kill_main_no_restart process
t0=$SECONDS
check "the fence survived the agent" has_fence
if wait_for 10 withdrawn; then
    pass "the fence withdrew the VPC router $((SECONDS - t0)) s after the crash (grace 4 s)"
else
    fail "the VPC router is still announced 10 s after the crash"
fi
check "the fence logged its stand-down" wait_for 10 cx grep -q "FENCE: stood down" /var/lib/stackfabric/gateway-agent/fence.log
check "the fence exited after standing down" wait_for 10 bash -c "[ -z \"\$(nsenter -t $C_PID -a pgrep -f -- 'sf-gateway-agent --fence')\" ]"

section "3. the Ansible roles install packages (stackfabric_base/tasks/package.yml)"
# A host installed the old way, by copies: its unit in /etc/systemd/system would shadow the
# package's.
cx cp /lib/systemd/system/sf-hypervisor-agent.service /etc/systemd/system/sf-switch-agent.service
cx cp /usr/bin/sfctl /usr/local/bin/sf-switch-agent
playbook() { cx env ANSIBLE_ROLES_PATH=/var/cache/sf-test/ansible/roles ANSIBLE_NOCOLOR=1 ansible-playbook -i localhost, /var/cache/sf-test/ansible/package-test.yml; }
out=$(playbook 2>&1)
if cx dpkg-query -W -f="\${Status}" sf-switch-agent 2>/dev/null | grep -q 'install ok installed'; then
    pass "the package task installs sf-switch-agent from its .deb"
else fail "the package task did not install sf-switch-agent: $(tail -n 12 <<<"$out")"; fi
check "it removed the copy-installed unit and binary" bash -c "! nsenter -t $C_PID -a test -e /etc/systemd/system/sf-switch-agent.service && ! nsenter -t $C_PID -a test -e /usr/local/bin/sf-switch-agent"
check "the unit is the package's" bash -c "nsenter -t $C_PID -a systemctl show -p FragmentPath sf-switch-agent.service | grep -qx FragmentPath=/lib/systemd/system/sf-switch-agent.service"
second=$(playbook 2>&1)
if grep -Eq 'localhost +: ok=[0-9]+ +changed=0 +unreachable=0 +failed=0 ' <<<"$second"; then pass "a second run changes nothing"; else
    fail "a second run changed or failed: $(grep -E '^(changed|fatal|failed)|localhost +:|msg' <<<"$second" | tail -n 12)"; fi

finish
