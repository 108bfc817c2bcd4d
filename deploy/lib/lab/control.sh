# shellcheck shell=bash
# deploy/lib/lab/control.sh - part of deploy/lab.sh: coordinator(s), inventory, agents, the demo tenant.
# Sourced by deploy/lab.sh after its settings (P, STATE, HA, the node lists, log/die);
# not runnable on its own.

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
    log "coordinator in ${P}coord ($COORD_URL, Netris REST API on https://$MGMT_NET.3:8080, console https://$MGMT_NET.3:8443)"
    rest_users_init
    start_bg coordinator "${P}coord" "$SF_BIN_DIR/sf-coordinator" --listen 0.0.0.0:7443 \
        --etcd-endpoints "$ETCD_URL" \
        --tls-cert "$STATE/pki/coordinator.pem" --tls-key "$STATE/pki/coordinator.key" \
        --tls-ca "$STATE/pki/ca.pem" --api-token-file "$STATE/api-tokens" \
        --tls-ticket-key-file "$STATE/pki/tls-ticket.key" \
        --metrics-listen 0.0.0.0:9100 \
        --rest-listen 0.0.0.0:8080 --rest-users-file "$STATE/rest-users" --rest-site lab \
        --rest-tls-cert "$STATE/pki/coordinator.pem" --rest-tls-key "$STATE/pki/coordinator.key" \
        --console-listen 0.0.0.0:8443
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
    log "coordinator coord$i in ${P}coord$i (${COORD_URLS[i - 1]}, REST https://$ip:8080, console https://$ip:8443)"
    rest_users_init
    start_bg "coord$i" "${P}coord$i" "$SF_BIN_DIR/sf-coordinator" --name "coord$i" \
        --listen 0.0.0.0:7443 \
        --etcd-endpoints "$ETCD_ENDPOINTS" \
        --etcd-ca "$d/ca.pem" --etcd-cert "$d/coord$i.pem" --etcd-key "$d/coord$i.key" \
        --tls-cert "$d/coord$i.pem" --tls-key "$d/coord$i.key" \
        --tls-ca "$d/ca.pem" --api-token-file "$STATE/api-tokens" \
        --tls-ticket-key-file "$d/tls-ticket.key" \
        --metrics-listen 0.0.0.0:9100 \
        --rest-listen 0.0.0.0:8080 --rest-users-file "$STATE/rest-users" --rest-site lab \
        --rest-tls-cert "$d/coord$i.pem" --rest-tls-key "$d/coord$i.key" \
        --console-listen 0.0.0.0:8443
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
    # The site's pools first: an IPv6 pool turns on ipv6 unicast on every fabric session,
    # which resets the sessions once if they are already up (a new BGP capability).
    sfctl_cmd pool create public --cidr "$PUBLIC_POOL" >/dev/null || die "sfctl pool create"
    sfctl_cmd pool create public6 --cidr "$PUBLIC_POOL6" >/dev/null || die "sfctl pool create public6"
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
    # --bgp-status-frr-dir: the agent reports this FRR's underlay BGP sessions (systemd units
    # set SF_FRR_DIR, which both options read).
    # --rule-metrics per-rule: the lab's tests read single rules' counters (production keeps
    # the default, each chain kind summed).
    START_NSENTER=$nsenter start_bg "$n" "${P}$n" "$bin" --node "$n" \
        --coordinator "$COORD_ENDPOINTS" \
        --etcd-endpoints "$ETCD_ENDPOINTS" "${etcd_tls[@]}" \
        --tls-cert "$STATE/pki/$n.pem" --tls-key "$STATE/pki/$n.key" \
        --tls-ca "$STATE/pki/ca.pem" \
        --state-dir "$STATE/agents/$n" --frr-dir "$STATE/frr/$n" \
        --bgp-status-frr-dir "$STATE/frr/$n" \
        --metrics-listen 0.0.0.0:9101 --rule-metrics per-rule "${extra[@]}"
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
    sfctl_cmd tenant create demo >/dev/null || die "sfctl tenant create demo"
    # Dual-stack: both VPCs hold the same VPC-internal ULA range and web the same /64, like
    # their IPv4 10.10.1.0/24 (isolation is per VPC, in both families).
    for v in blue red; do
        sfctl_cmd vpc create "$v" --tenant demo --cidr 10.10.0.0/16 \
            --ipv6-range fd10:10::/48 >/dev/null || die "sfctl vpc create $v"
        sfctl_cmd network create web --tenant demo --vpc "$v" --cidr 10.10.1.0/24 \
            --ipv6-prefix fd10:10:0:1::/64 >/dev/null || die "sfctl network create web (vpc $v)"
    done
    vm_add blue-web-1 hv1 demo blue web 10.10.1.11 || die "vm-add blue-web-1"
    vm_add blue-web-2 hv2 demo blue web 10.10.1.12 || die "vm-add blue-web-2"
    vm_add red-web-1 hv1 demo red web 10.10.1.11 || die "vm-add red-web-1"
    vm_add red-web-2 hv3 demo red web 10.10.1.12 || die "vm-add red-web-2"
    log "waiting for blue-web-1 -> 10.10.1.12"
    wait_for 30 "blue-web-1 ping" ip netns exec "${P}blue-web-1" ping -c1 -W1 10.10.1.12 ||
        die "blue-web-1 cannot reach 10.10.1.12 after 30 s"
}
