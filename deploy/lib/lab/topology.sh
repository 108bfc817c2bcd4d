# shellcheck shell=bash
# deploy/lib/lab/topology.sh - part of deploy/lab.sh: namespaces, FRR nodes, the internet and customer DC edges, the plain etcd.
# Sourced by deploy/lab.sh after its settings (P, STATE, HA, the node lists, log/die);
# not runnable on its own.

frr_node_start() {
    local node=$1 dir=$STATE/frr/$1 daemons="zebra bgpd staticd"
    # bfdd on switches and gateways: BFD watches the gateways' fabric sessions.
    case "$node" in hv*) ;; *) daemons="$daemons bfdd" ;; esac
    mkdir -p "$dir"
    cat >"$dir/frr.conf" <<EOF
frr defaults datacenter
hostname $node
ip forwarding
ipv6 forwarding
!
EOF
    : >"$dir/vtysh.conf"
    netlab_frr_start "${P}$node" "$dir" "$dir/frr.conf" "$daemons" || die "FRR failed to start on $node"
}

# internet_start - the internet edge: an FRR StackFabric does not manage (static config), eBGP
# unnumbered to border leaf leaf1, announcing a default route and its own address in IPv4 and
# IPv6 (the fabric takes IPv6 unicast once the site has an IPv6 pool), and an HTTP server on
# $INTERNET_IP and one on $INTERNET_IP6 answering "internet" (tests read client addresses
# from their logs, internet-http.log and internet-http6.log).
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
 !
 address-family ipv6 unicast
  network $INTERNET_IP6/128
  neighbor leaf1 activate
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
    start_bg internet-http6 "${P}internet" "$(python_bin)" -m http.server 80 \
        --bind "$INTERNET_IP6" --directory "$STATE/internet"
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
    netlab_addr_lo "${P}internet" "$INTERNET_IP6/128" || die "loopback internet (IPv6)"
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
