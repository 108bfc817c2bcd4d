# shellcheck shell=bash
# deploy/lib/lab/certs.sh - part of deploy/lab.sh: the lab's certificates and API token (pki_all).
# Sourced by deploy/lab.sh after its settings (P, STATE, HA, the node lists, log/die);
# not runnable on its own.
#
# PKI: pki_init, pki_cert (deploy/lib/pki.sh), into $PKI_DIR

# pki_all - the lab CA, the coordinator's certificate (HA lab: coord1-3's, CN coordN with
# DNS:coordinator, the name agents and sfctl verify, and the replica's IP; they are also the
# coordinators' etcd client certificates), one client certificate per node (CN = node name;
# HA lab: also its etcd client certificate), and the API tokens (admin and reader). HA lab also: etcd1-3 (server
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
    # api-token: sfctl's admin token; api-token-reader: a read-only one; api-tokens: the
    # coordinator's token file with both ("<token> [admin|reader]" per line).
    (
        umask 077
        printf '%s' "$(openssl rand -hex 16)" >"$STATE/api-token"
        printf '%s' "$(openssl rand -hex 16)" >"$STATE/api-token-reader"
        printf '%s admin\n%s reader\n' "$(cat "$STATE/api-token")" \
            "$(cat "$STATE/api-token-reader")" >"$STATE/api-tokens"
    )
    chmod 600 "$STATE/api-token" "$STATE/api-token-reader" "$STATE/api-tokens"
}
