# shellcheck shell=bash
# deploy/lib/lab/updown.sh - part of deploy/lab.sh: lab up and lab down, and the summary printed after up.
# Sourced by deploy/lab.sh after its settings (P, STATE, HA, the node lists, log/die);
# not runnable on its own.

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
            echo "  coordinators       gRPC :7443, REST :8080, console :8443, metrics :9100; sfctl tries coord1 first"
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
  web console        https://$MGMT_NET.3:8443 (user cloudstack, password in $STATE/rest-password,
                     or the API token $STATE/api-token); see README "Console"
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
