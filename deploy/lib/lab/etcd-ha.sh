# shellcheck shell=bash
# deploy/lib/lab/etcd-ha.sh - part of deploy/lab.sh: the HA lab's etcd cluster etcd1-3 with TLS and auth.
# Sourced by deploy/lab.sh after its settings (P, STATE, HA, the node lists, log/die);
# not runnable on its own.
#
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
