#!/usr/bin/env bash
# evpn-proof.sh - prove BGP EVPN/VXLAN L2 between VM namespaces on different
# hypervisor namespaces, with real FRR, using deploy/lib/netlab.sh.
#
#   sudo LAB_PREFIX=sfp- deploy/lib/evpn-proof.sh [--keep]
#
# Topology (all inside namespaces prefixed $LAB_PREFIX):
#   mgmt: ${P}mgmt bridge, every node has mgmt0 172.31.255.x/24 (out of band)
#   leaf1 (AS 65101, 10.255.0.1), leaf2 (AS 65102, 10.255.0.2)
#   hvN (AS 6500N, VTEP 10.255.1.N on lo), links hvN:leafM <-> leafM:hvN,
#   eBGP unnumbered everywhere; VNI 1000001 + 1000002 on every hv
#   (CloudStack modifyvxlan-evpn.sh layout: vxlan<VNI> in brvx-<VNI>).
#   vm1 10.10.1.11 hv1 VNI 1000001     vm2 10.10.1.12 hv2 VNI 1000001
#   vm3 10.10.1.11 hv1 VNI 1000002     vm4 10.10.1.12 hv3 VNI 1000002
# Exit 0 only if every check passes. Cleanup runs on any exit (trap) unless
# --keep is given.
# shellcheck disable=SC2317  # functions invoked indirectly (trap, check, netlab_wait)
set -u -o pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export LAB_PREFIX=${LAB_PREFIX:-sfp-}
# shellcheck source=netlab.sh source-path=SCRIPTDIR
. "$HERE/netlab.sh"

KEEP=0
[ "${1:-}" = --keep ] && KEEP=1
P=$LAB_PREFIX
VNI1=1000001
VNI2=1000002
FAIL=0

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
log() { printf '[%6d ms] %s\n' $(( $(now_ms) - T0 )) "$*"; }
check() { # check DESCRIPTION CMD...
    local d=$1; shift
    if "$@"; then log "PASS: $d"; else log "FAIL: $d"; FAIL=1; fi
}
finish() {
    local rc=$?
    if [ "$KEEP" = 1 ]; then
        echo "--keep: lab left running; clean with: . $HERE/netlab.sh; netlab_cleanup $P"
    else
        netlab_cleanup "$P"
        sleep 0.5
        if netlab_check_clean "$P"; then echo "cleanup: no namespace/process/dir left"; else rc=1; fi
    fi
    exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

hv_conf() { # hv_conf N
    local n=$1
    cat <<EOF
frr defaults datacenter
hostname hv$n
!
router bgp 6500$n
 bgp router-id 10.255.1.$n
 no bgp ebgp-requires-policy
 bgp bestpath as-path multipath-relax
 neighbor FABRIC peer-group
 neighbor FABRIC remote-as external
 neighbor leaf1 interface peer-group FABRIC
 neighbor leaf2 interface peer-group FABRIC
 !
 address-family ipv4 unicast
  network 10.255.1.$n/32
 exit-address-family
 !
 address-family l2vpn evpn
  neighbor FABRIC activate
  advertise-all-vni
 exit-address-family
exit
!
EOF
}

leaf_conf() { # leaf_conf N
    local n=$1
    cat <<EOF
frr defaults datacenter
hostname leaf$n
ip forwarding
ipv6 forwarding
!
router bgp 6510$n
 bgp router-id 10.255.0.$n
 no bgp ebgp-requires-policy
 bgp bestpath as-path multipath-relax
 neighbor HV peer-group
 neighbor HV remote-as external
 neighbor hv1 interface peer-group HV
 neighbor hv2 interface peer-group HV
 neighbor hv3 interface peer-group HV
 !
 address-family ipv4 unicast
  network 10.255.0.$n/32
 exit-address-family
 !
 address-family l2vpn evpn
  neighbor HV activate
 exit-address-family
exit
!
EOF
}

netlab_cleanup "$P"          # leftovers of an earlier aborted run
netlab_init "$P" || exit 1
T0=$(now_ms)

# ---------------------------------------------------------------- topology
netlab_mgmt_init || exit 1
i=1
for n in leaf1 leaf2 hv1 hv2 hv3; do
    netlab_ns_add "$P$n" || exit 1
    netlab_mgmt_attach "$P$n" "172.31.255.$((10 + i))/24" || exit 1
    i=$((i + 1))
done
for l in 1 2; do netlab_addr_lo "${P}leaf$l" "10.255.0.$l/32" || exit 1; done
for h in 1 2 3; do
    netlab_addr_lo "${P}hv$h" "10.255.1.$h/32" || exit 1
    for l in 1 2; do netlab_link "${P}hv$h" "leaf$l" "${P}leaf$l" "hv$h" || exit 1; done
    for v in $VNI1 $VNI2; do netlab_vxlan_add "${P}hv$h" "$v" "10.255.1.$h" || exit 1; done
done
netlab_vm_add "${P}vm1" "${P}hv1" "brvx-$VNI1" 10.10.1.11/24 02:00:00:01:00:11 >/dev/null || exit 1
netlab_vm_add "${P}vm2" "${P}hv2" "brvx-$VNI1" 10.10.1.12/24 02:00:00:01:00:12 >/dev/null || exit 1
netlab_vm_add "${P}vm3" "${P}hv1" "brvx-$VNI2" 10.10.1.11/24 02:00:00:02:00:11 >/dev/null || exit 1
netlab_vm_add "${P}vm4" "${P}hv3" "brvx-$VNI2" 10.10.1.12/24 02:00:00:02:00:12 >/dev/null || exit 1
T_TOPO=$(now_ms)
log "topology built in $((T_TOPO - T0)) ms"

# ---------------------------------------------------------------- FRR
T_FRR0=$(now_ms)
for n in leaf1 leaf2; do
    leaf_conf "${n#leaf}" >"$NETLAB_DIR/$n.conf"
    netlab_frr_start "$P$n" "$NETLAB_DIR/$P$n" "$NETLAB_DIR/$n.conf" || exit 1
done
for h in 1 2 3; do
    hv_conf "$h" >"$NETLAB_DIR/hv$h.conf"
    netlab_frr_start "${P}hv$h" "$NETLAB_DIR/${P}hv$h" "$NETLAB_DIR/hv$h.conf" || exit 1
done
T_FRR1=$(now_ms)
log "FRR (3 daemons x 5 nodes) started in $((T_FRR1 - T_FRR0)) ms"

ping1() { ip netns exec "$1" ping -c1 -W1 -q "$2" >/dev/null 2>&1; }
if netlab_wait 90 ping1 "${P}vm1" 10.10.1.12; then
    T_PING=$(now_ms)
    log "vm1 -> vm2 first successful ping $((T_PING - T_FRR1)) ms after FRR started ($((T_PING - T_FRR0)) ms from first daemon start)"
else
    log "FAIL: vm1 never reached vm2"; FAIL=1
fi
netlab_wait 30 ping1 "${P}vm3" 10.10.1.12 || { log "FAIL: vm3 never reached vm4"; FAIL=1; }
T_ALL=$(now_ms)
log "both VNIs converged $((T_ALL - T_FRR0)) ms after first FRR start; total $((T_ALL - T0)) ms"

# ---------------------------------------------------------------- proofs
V1=$NETLAB_DIR/${P}hv1
echo "===== hv1: show bgp summary"; netlab_vtysh "$V1" -c 'show bgp summary'
echo "===== hv1: show evpn vni";    netlab_vtysh "$V1" -c 'show evpn vni'
echo "===== hv1: show bgp l2vpn evpn route"; netlab_vtysh "$V1" -c 'show bgp l2vpn evpn route'
echo "===== hv1: show evpn mac vni all"; netlab_vtysh "$V1" -c 'show evpn mac vni all'
echo "===== hv1: bridge fdb (vxlan)"; bridge -n "${P}hv1" fdb show | grep -E 'vxlan' | grep -v 'permanent$'
echo "===== leaf1: show bgp l2vpn evpn route (transit)"; netlab_vtysh "$NETLAB_DIR/${P}leaf1" -c 'show bgp l2vpn evpn route' | tail -n 25
echo "===== leaf1: ip route";      ip -n "${P}leaf1" route

echo "===== ping vm1 -> vm2 (VNI $VNI1)"
check "vm1 ping -c3 10.10.1.12" ip netns exec "${P}vm1" ping -c3 -W2 10.10.1.12
check "vm3 ping -c3 10.10.1.12 (VNI $VNI2, same IPs)" ip netns exec "${P}vm3" ping -c3 -W2 10.10.1.12
check "vm2 ping 1400-byte DF payload (underlay MTU ok)" ip netns exec "${P}vm2" ping -c2 -W2 -M 'do' -s 1400 10.10.1.11
mac_of() { ip -n "$1" neigh show 10.10.1.12 dev eth0 | awk '{print $3}'; }
m1=$(mac_of "${P}vm1"); m3=$(mac_of "${P}vm3")
log "vm1 resolves 10.10.1.12 -> $m1 (vm2=02:00:00:01:00:12); vm3 resolves -> $m3 (vm4=02:00:00:02:00:12)"
check "vm1 sees vm2's MAC" [ "$m1" = 02:00:00:01:00:12 ]
check "vm3 sees vm4's MAC" [ "$m3" = 02:00:00:02:00:12 ]
check "hv1 VNI $VNI1 has no vm4 MAC in FDB/EVPN" \
    bash -c "! bridge -n ${P}hv1 fdb show dev vxlan$VNI1 | grep -qi 02:00:00:02:00:12"
# force vm1 to send to vm4's MAC: VNI isolation means it must not arrive
ip -n "${P}vm1" neigh replace 10.10.1.12 lladdr 02:00:00:02:00:12 dev eth0 nud permanent
check "vm1 -> vm4's MAC does NOT get through (isolation)" \
    bash -c "! ip netns exec ${P}vm1 ping -c2 -W1 10.10.1.12 >/dev/null"
ip -n "${P}vm1" neigh del 10.10.1.12 dev eth0

# ---------------------------------------------------------------- config deltas
echo "===== config delta via vtysh -f (hv1: add a BGP neighbor description)"
check "netlab_frr_apply (vtysh -f)" netlab_frr_apply "$V1" - <<'EOF'
router bgp 65001
 neighbor leaf1 description delta-by-file
EOF
check "verify delta in running-config" netlab_frr_verify "$V1" 'neighbor leaf1 description delta-by-file'
check "netlab_frr_apply_cmds (-c ...)" netlab_frr_apply_cmds "$V1" 'router bgp 65001' 'neighbor leaf2 description delta-by-cmd'
check "verify delta in running-config" netlab_frr_verify "$V1" 'neighbor leaf2 description delta-by-cmd'
check "bad delta is reported as failure" bash -c ". $HERE/netlab.sh; ! netlab_frr_apply_cmds $V1 'router bgp 65001' 'neighbor leaf2 bogus-keyword' 2>/dev/null"

echo "===== frr-reload.py (full desired config -> diff -> apply)"
hv_conf 1 | sed 's/^ neighbor leaf2 interface peer-group FABRIC$/&\n neighbor leaf2 description via-frr-reload/' >"$NETLAB_DIR/hv1.new.conf"
chown frr:frr "$NETLAB_DIR/hv1.new.conf"
netlab_frr_reload "${P}hv1" "$V1" "$NETLAB_DIR/hv1.new.conf" --test 2>&1 | tail -n 8
check "frr-reload.py --reload with --vty_socket" netlab_frr_reload "${P}hv1" "$V1" "$NETLAB_DIR/hv1.new.conf"
check "reload: new description present" netlab_frr_verify "$V1" 'neighbor leaf2 description via-frr-reload'
check "reload: file-delta description removed" \
    bash -c "! vtysh --vty_socket $V1 -c 'show running-config' | grep -q delta-by-file"
check "ping still works after reload" netlab_wait 20 ping1 "${P}vm1" 10.10.1.12

echo "===== summary"
log "topology build: $((T_TOPO - T0)) ms; FRR start: $((T_FRR1 - T_FRR0)) ms; FRR-start->ping: $(( ${T_PING:-0} - T_FRR1 )) ms"
[ "$FAIL" = 0 ] && echo "EVPN PROOF: ALL CHECKS PASSED" || echo "EVPN PROOF: SOME CHECKS FAILED"
exit "$FAIL"
