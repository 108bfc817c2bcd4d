# shellcheck shell=bash
# deploy/lib/lab/running.sh - part of deploy/lab.sh: subcommands on a running lab: etcd and coordinator(s), etcdctl, status.
# Sourced by deploy/lab.sh after its settings (P, STATE, HA, the node lists, log/die);
# not runnable on its own.
#
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
