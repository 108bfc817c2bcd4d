# shellcheck shell=bash
# deploy/lib/lab/vms.sh - part of deploy/lab.sh: VMs: namespaces plugged into a hypervisor bridge, with an HTTP server.
# Sourced by deploy/lab.sh after its settings (P, STATE, HA, the node lists, log/die);
# not runnable on its own.

vm_mac() {
    local h
    h=$(printf '%s' "$1" | md5sum)
    echo "52:54:00:${h:0:2}:${h:2:2}:${h:4:2}"
}

# slaac_addr PREFIX/64 MAC - the VM's SLAAC address: the prefix with the modified EUI-64
# interface id of MAC (universal/local bit flipped, ff:fe in the middle), as the kernel
# and CloudStack compute it.
slaac_addr() {
    python3 -c '
import ipaddress, sys
net = ipaddress.IPv6Network(sys.argv[1], strict=False)
b = [int(x, 16) for x in sys.argv[2].split(":")]
iid = bytes([b[0] ^ 2, b[1], b[2], 0xff, 0xfe, b[3], b[4], b[5]])
print(ipaddress.IPv6Address(net.network_address.packed[:8] + iid))
' "$1" "$2"
}

valid_name() {
    case "$1" in
        '' | *[!A-Za-z0-9_.-]* | [.-]*) die "bad name '$1'" ;;
    esac
}

# vm_plug NAME HV BRIDGE IP/LEN GATEWAY MAC [IP6] - VM namespace + HTTP server; with IP6 (a
# dual-stack tier: the port's SLAAC address, or `slaac` when no port says which) the VM takes
# its IPv6 address and default route by SLAAC from the router's advertisements, and the HTTP
# server listens on IPv6 too.
vm_plug() {
    local name=$1 hv=$2 br=$3 ipl=$4 gw=$5 mac=$6 ip6=${7:-} vm=${P}$1 dir=$STATE/vms/$1 vnet
    local bind=0.0.0.0
    [ -e "/run/netns/$vm" ] && { log "namespace $vm already exists"; return 1; }
    vnet=$(netlab_vm_add "$vm" "${P}$hv" "$br" "$ipl" "$mac") || return 1
    if [ -n "$ip6" ]; then
        # netlab's namespaces forward, and a forwarding link ignores RAs: this VM is a host.
        # eth0 is flapped (before the IPv4 default route, which a down link would lose) so
        # it solicits a router at once instead of waiting for the next periodic RA.
        ip netns exec "$vm" sysctl -qw net.ipv6.conf.all.forwarding=0 \
            net.ipv6.conf.eth0.accept_ra=1 net.ipv6.conf.eth0.autoconf=1 || return 1
        ip -n "$vm" link set eth0 down && ip -n "$vm" link set eth0 up || return 1
        bind=::
    fi
    if [ -n "$gw" ]; then
        ip -n "$vm" route add default via "$gw" dev eth0 || return 1
    fi
    mkdir -p "$dir/www"
    printf '%s\n' "$name" >"$dir/www/index.html"
    printf 'hv=%s\nbridge=%s\nvnet=%s\nip=%s\nmac=%s\nip6=%s\n' "$hv" "$br" "$vnet" "$ipl" "$mac" \
        "$ip6" >"$dir/plug"
    # `--bind ::` serves IPv4 too (http.server's dual-stack socket).
    start_bg "vm-$name" "$vm" "$(python_bin)" -m http.server 80 --bind "$bind" \
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
    local name=$1 hv=$2 tenant=$3 vpc=$4 net=$5 ip=$6 mac json vni gw cidr len prefix6 ip6=""
    local v6args=()
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
    # A dual-stack tier: the port's IPv6 address is the SLAAC one of its MAC.
    prefix6=$(printf '%s' "$json" | json_get ipv6_prefix 2>/dev/null) || prefix6=""
    if [ -n "$prefix6" ]; then
        ip6=$(slaac_addr "$prefix6" "$mac") || { log "no SLAAC address in $prefix6"; return 1; }
        v6args=(--ipv6 "$ip6")
    fi
    log "vm $name: port on $hv ($tenant/$vpc/$net vni $vni) ip $ip/$len gw $gw mac $mac${ip6:+ ip6 $ip6}"
    sfctl_cmd port create "$name" --tenant "$tenant" --vpc "$vpc" --network "$net" \
        --node "$hv" --ip "$ip" --mac "$mac" "${v6args[@]}" >/dev/null ||
        { log "sfctl port create $name failed"; return 1; }
    mkdir -p "$STATE/vms/$name"
    printf 'tenant=%s\nvpc=%s\nnetwork=%s\nvni=%s\n' "$tenant" "$vpc" "$net" "$vni" >"$STATE/vms/$name/port"
    local ok=1
    if ! WAIT_PROCS=$hv wait_for 20 "bridge brvx-$vni on $hv" bridge_exists "${P}$hv" "brvx-$vni"; then
        log_tail "$hv" 20
        # Last, so a caller that keeps only the tail of the output still sees why.
        log "agent on $hv did not create brvx-$vni (timeout 20 s)"
        ok=0
    elif ! vm_plug "$name" "$hv" "brvx-$vni" "$ip/$len" "$gw" "$mac" "$ip6"; then
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
