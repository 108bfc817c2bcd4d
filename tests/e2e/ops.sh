#!/usr/bin/env bash
# Tests of the production packaging: the hardened systemd units in deploy/systemd and
# the ansible playbooks in deploy/ansible (which install the .debs of deploy/package.sh; the
# package task itself runs for real in tests/e2e/systemd.sh). No lab and no running systemd are needed; nothing is
# installed or enabled on this machine, and the one process started (a throwaway etcd on
# loopback, for 7.) is stopped when the script ends.
#   1. every unit passes `systemd-analyze verify` with no output at all (it exits 0 on
#      warnings such as unknown keys, so any output counts as a failure), against the built
#      binaries in SF_BIN_DIR (default target/release) since verify insists ExecStart exists;
#   2. the properties the units exist for: the gateway keeps its fence alive (KillMode=process)
#      and stays in the host mount namespace (VPC namespaces under /run/netns must be visible
#      to everyone), agents hold only the capabilities their comments justify, exposure scores
#      (`systemd-analyze security --offline`) stay under a ceiling;
#   3. every SF_* variable the units, example env files and ansible templates set is one the
#      binaries read (from their --help), so a renamed flag cannot silently be ignored;
#   4. `ansible-playbook --syntax-check` on every playbook and `ansible-lint` on deploy/ansible
#      with the production profile (the strictest of ansible-lint 6; pinned in
#      deploy/ansible/.ansible-lint, with offline: true so it never reaches Galaxy);
#   5. the PKI play really runs on the controller (localhost): a CA and one certificate per
#      node whose CN is the node name, verified against the CA, and a second run changes nothing;
#   6. etcd clients use TLS only: the rendered etcd configuration has no plain listener, and
#      the coordinators' and agents' settings point every binary at https endpoints with its
#      own certificate (whose CN is its etcd user);
#   7. the etcd role's auth tasks (roles/etcd/tasks/auth.yml) against a throwaway one-member
#      etcd on loopback, with the certificates of 5.: users, roles and auth on, a second run
#      changes nothing, and an agent's certificate may write its own keys only.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$REPO/tests/e2e/lib.sh"

SF_BIN_DIR=${SF_BIN_DIR:-$REPO/target/release}
UNITS=$REPO/deploy/systemd
ANSIBLE=$REPO/deploy/ansible
TMP=$(mktemp -d /tmp/sf-ops.XXXXXX)
ETCD_PID=
trap '[ -z "$ETCD_PID" ] || kill "$ETCD_PID" 2>/dev/null; rm -rf "$TMP"' EXIT

# unit_val UNIT KEY: the values of KEY= in UNIT (one per line, comments ignored).
unit_val() { sed -n "s/^$2=//p" "$1"; }

# verify_unit UNIT: systemd-analyze verify on a copy whose ExecStart points into SF_BIN_DIR;
# fails on any output (warnings included).
verify_unit() {
    local copy out
    copy=$TMP/units/$(basename "$1")
    mkdir -p "$TMP/units"
    sed "s#^ExecStart=/usr/bin/#ExecStart=$SF_BIN_DIR/#" "$1" >"$copy"
    out=$(systemd-analyze verify "$copy" 2>&1) || { echo "rc!=0: $out"; return 1; }
    [ -z "$out" ] || { echo "$out"; return 1; }
}

# exposure_at_most UNIT MAX: systemd-analyze's offline exposure score (0-100 scale, shown
# divided by 10) is at most MAX.
exposure_at_most() {
    systemd-analyze security --offline=yes --threshold="$2" "$TMP/units/$(basename "$1")"
}

# no_mount_namespace UNIT: none of the settings that make systemd give the service its own
# mount namespace (whose mounts never propagate back to the host).
no_mount_namespace() {
    ! grep -En '^(ProtectSystem|ProtectHome|PrivateTmp|PrivateDevices|PrivateMounts|PrivateIPC|ProtectKernelTunables|ProtectKernelModules|ProtectKernelLogs|ProtectControlGroups|ProtectClock|ProtectHostname|ProtectProc|ProcSubset|ReadWritePaths|ReadOnlyPaths|InaccessiblePaths|ExecPaths|NoExecPaths|BindPaths|BindReadOnlyPaths|TemporaryFileSystem|RootDirectory|RootImage|MountImages|ExtensionImages|ExtensionDirectories|MountFlags|DynamicUser|LogNamespace|NetworkNamespacePath|IPCNamespacePath)=' "$1"
}

# caps_within UNIT CAP...: the unit's CapabilityBoundingSet is set and lists only CAPs.
caps_within() {
    local unit=$1 c
    shift
    local set
    set=$(unit_val "$unit" CapabilityBoundingSet)
    [ -n "$set" ] || { echo "no CapabilityBoundingSet"; return 1; }
    for c in $set; do
        case " $* " in *" $c "*) ;; *) echo "unexpected capability $c"; return 1 ;; esac
    done
}

# restart_within_fence UNIT: RestartSec (seconds) < 4, i.e. inside 2/3 of the default 6 s lease
# TTL, after which the gateway's fence would stand the node down.
restart_within_fence() {
    local s
    s=$(unit_val "$1" RestartSec)
    s=${s%s}
    case "$s" in '' | *[!0-9]*) echo "RestartSec '$s' is not whole seconds"; return 1 ;; esac
    [ "$s" -lt 4 ]
}

# known_env FILE...: every SF_* variable set in FILEs (also commented-out examples and
# Environment= lines) is read by some binary, per their --help.
known_env() {
    local b known used v bad=0
    known=$(for b in sf-coordinator sf-switch-agent sf-hypervisor-agent sf-gateway-agent sfctl; do
        "$SF_BIN_DIR/$b" --help 2>/dev/null
    done | grep -o '\[env: SF_[A-Z0-9_]*' | sed 's/\[env: //' | sort -u)
    [ -n "$known" ] || { echo "no [env: SF_*] in the binaries' --help"; return 1; }
    used=$(sed -En 's/^#?(Environment=)?(SF_[A-Z0-9_]+)=.*/\2/p' "$@" | sort -u)
    [ -n "$used" ] || { echo "no SF_* variable found in $*"; return 1; }
    for v in $used; do
        grep -qx "$v" <<<"$known" || { echo "unknown variable $v"; bad=1; }
    done
    return $bad
}

section "tools"
check "systemd-analyze is installed" command -v systemd-analyze
check "ansible-playbook is installed (deploy/deps.sh: ansible-core)" command -v ansible-playbook
check "ansible-lint is installed (deploy/deps.sh: ansible-lint)" command -v ansible-lint
check "etcd and etcdctl are installed (deploy/deps.sh: etcd-server, etcd-client)" \
    bash -c 'command -v etcd && command -v etcdctl'
for b in sf-coordinator sf-switch-agent sf-hypervisor-agent sf-gateway-agent sfctl; do
    check "built binary $b" test -x "$SF_BIN_DIR/$b"
done

section "systemd units: systemd-analyze verify, no warnings"
units=("$UNITS"/*.service)
check_eq "four units" 4 "${#units[@]}"
for u in "${units[@]}"; do
    check "verify $(basename "$u")" verify_unit "$u"
    check "$(basename "$u") starts /usr/bin/$(basename "$u" .service)" \
        grep -qx "ExecStart=/usr/bin/$(basename "$u" .service)" "$u"
    check "$(basename "$u"): NoNewPrivileges=yes" grep -qx 'NoNewPrivileges=yes' "$u"
    check "$(basename "$u"): Restart=on-failure" grep -qx 'Restart=on-failure' "$u"
    check "$(basename "$u"): native syscalls only" grep -qx 'SystemCallArchitectures=native' "$u"
done

section "systemd units: the properties they exist for"
GW=$UNITS/sf-gateway-agent.service
check "gateway: KillMode=process (the fence outlives a crashed or stopped agent)" \
    grep -qx 'KillMode=process' "$GW"
check "gateway: no mount namespace (VPC namespaces under /run/netns visible to the host)" \
    no_mount_namespace "$GW"
check "gateway: restarts inside 2/3 of the lease TTL (before the fence fires)" \
    restart_within_fence "$GW"
check "gateway: capabilities NET_ADMIN, SYS_ADMIN (netns), DAC_OVERRIDE (/run/frr), and per-VPC FRR's only" \
    caps_within "$GW" CAP_NET_ADMIN CAP_SYS_ADMIN CAP_DAC_OVERRIDE CAP_CHOWN CAP_SETUID CAP_SETGID \
    CAP_NET_BIND_SERVICE CAP_NET_RAW CAP_KILL
check "gateway: no CAP_SYS_MODULE, CAP_SYS_PTRACE, CAP_SYS_TIME" \
    bash -c "! grep -E '^CapabilityBoundingSet=.*CAP_(SYS_MODULE|SYS_PTRACE|SYS_TIME)' '$GW'"
for k in switch hypervisor; do
    U=$UNITS/sf-$k-agent.service
    check "$k agent: capabilities NET_ADMIN, DAC_OVERRIDE only (no SYS_ADMIN)" \
        caps_within "$U" CAP_NET_ADMIN CAP_DAC_OVERRIDE
    check "$k agent: ProtectSystem=strict" grep -qx 'ProtectSystem=strict' "$U"
    check "$k agent: FRR's /run/frr writable" grep -qx 'ReadWritePaths=/run/frr' "$U"
    check "$k agent: state in /var/lib/stackfabric/$k-agent" \
        grep -qx "StateDirectory=stackfabric/$k-agent" "$U"
    check "$k agent: after FRR" grep -q '^After=.*frr.service' "$U"
    check "$k agent: restarts inside the lease TTL" restart_within_fence "$U"
done
C=$UNITS/sf-coordinator.service
check "coordinator: unprivileged (DynamicUser=yes)" grep -qx 'DynamicUser=yes' "$C"
check "coordinator: no capabilities" grep -qx 'CapabilityBoundingSet=' "$C"
check "coordinator: ProtectSystem=strict" grep -qx 'ProtectSystem=strict' "$C"
check "coordinator: exposure <= 2.0" exposure_at_most "$C" 20
check "switch agent: exposure <= 3.0" exposure_at_most "$UNITS/sf-switch-agent.service" 30
check "hypervisor agent: exposure <= 3.0" exposure_at_most "$UNITS/sf-hypervisor-agent.service" 30
check "gateway agent: exposure <= 6.0 (no filesystem sandbox, per-VPC FRR capabilities: see the unit)" exposure_at_most "$GW" 60

section "environment variables are the binaries' own"
check "units set only SF_* variables the binaries read" known_env "${units[@]}"
check "example env files set only SF_* variables the binaries read" known_env "$UNITS"/*.env
check "ansible templates set only SF_* variables the binaries read" \
    known_env "$ANSIBLE"/roles/*/templates/stackfabric-*.j2

section "ansible: syntax and lint"
# ansible.cfg (roles_path) is read from the working directory.
cd "$ANSIBLE" || exit 1
playbooks=("$ANSIBLE"/*.yml)
for p in "${playbooks[@]}"; do
    case "$(basename "$p")" in inventory*) continue ;; esac
    check "ansible-playbook --syntax-check $(basename "$p")" \
        ansible-playbook --syntax-check -i inventory.example.yml "$p"
done
check "site.yml and rollout.yml exist" test -f site.yml -a -f rollout.yml
check "rollout.yml: every play one node at a time (serial: 1)" \
    test "$(grep -c '^  serial: 1$' rollout.yml)" = "$(grep -c '^- name:' rollout.yml)"
check "rollout.yml: every play stops the rollout on any failure" \
    test "$(grep -c '^  any_errors_fatal: true$' rollout.yml)" = "$(grep -c '^- name:' rollout.yml)"
check "ansible-lint (production profile, .ansible-lint)" ansible-lint -p --offline --nocolor

section "ansible: nodes get packages, not copies"
# The old roles copied binaries to /usr/local/bin and units to /etc/systemd/system (which
# shadows a package's unit): no task may write there any more, only the migration removes.
check "no task copies a binary or a unit onto a node" bash -c \
    "! grep -rnE 'dest: .*(/usr/local/bin|/etc/systemd/system|sf_install_dir)' roles tasks ./*.yml"
check "the package task installs the .deb with apt, keeping the operator's conffiles" bash -c \
    "grep -q 'ansible.builtin.apt:' roles/stackfabric_base/tasks/package.yml && grep -q 'force-confold' roles/stackfabric_base/tasks/package.yml && grep -q 'deb: ' roles/stackfabric_base/tasks/package.yml"
for f in roles/coordinator/tasks/main.yml roles/agent/tasks/main.yml rollout.yml tasks/upgrade_agent.yml; do
    check "$f installs through the package task" bash -c \
        "grep -A2 'ansible.builtin.include_role:' '$f' | grep -q 'name: stackfabric_base' && grep -q 'tasks_from: package' '$f'"
done
check "the rollout skips agents already at the built package's version (dpkg-query)" \
    grep -q 'dpkg-query' tasks/upgrade_agent.yml

section "ansible: the PKI play on the controller"
PKI=$TMP/pki
pki_run() {
    ansible-playbook -i inventory.example.yml -i localhost, --limit localhost \
        -e "sf_pki_dir=$PKI" site.yml >"$TMP/pki.log" 2>&1 || { tail -30 "$TMP/pki.log"; return 1; }
}
check "site.yml (localhost: PKI) runs" pki_run
cn_is() { openssl x509 -in "$PKI/$1.pem" -noout -subject | grep -qx "subject=CN = $2"; }
for n in etcd1 etcd2 etcd3 coord1 coord2 leaf1 leaf2 hv1 hv2 hv3 gw1 gw2; do
    f=$n
    case "$n" in etcd*) f=$n.etcd ;; esac
    check "$f.pem: CN = $n" cn_is "$f" "$n"
    check "$f.pem is signed by the fabric CA" openssl verify -CAfile "$PKI/ca.pem" "$PKI/$f.pem"
done
check "root.etcdctl.pem: CN = root (etcd's root user)" cn_is root.etcdctl root
check "root.etcdctl.pem is signed by the fabric CA" openssl verify -CAfile "$PKI/ca.pem" "$PKI/root.etcdctl.pem"
check "root.etcdctl.pem is client-only" \
    bash -c "openssl x509 -in '$PKI/root.etcdctl.pem' -noout -ext extendedKeyUsage | grep -qx ' *TLS Web Client Authentication'"
check "coordinator certificate carries the name agents verify (DNS:coordinator)" \
    bash -c "openssl x509 -in '$PKI/coord1.pem' -noout -ext subjectAltName | grep -q 'DNS:coordinator'"
check "agent certificates are client-only" \
    bash -c "openssl x509 -in '$PKI/gw1.pem' -noout -ext extendedKeyUsage | grep -qx ' *TLS Web Client Authentication'"
check "CA key and API token are private (0600)" \
    test "$(stat -c %a "$PKI/ca.key" "$PKI/api-token" | sort -u)" = 600
check "second run issues nothing (idempotent)" pki_run
check "second run: changed=0" grep -q 'localhost *: ok=[0-9]* *changed=0 ' "$TMP/pki.log"

section "etcd: clients over TLS only, each binary with its own certificate"
# rendered_has HOST TEMPLATE EXTRA_VARS LINE...: TEMPLATE rendered on the controller with HOST's
# variables from inventory.example.yml (plus EXTRA_VARS, if not empty) has every LINE.
rendered_has() {
    local host=$1 tpl=$2 extra=$3 out l
    shift 3
    out=$(ansible -i inventory.example.yml "$host" -o ${extra:+-e "$extra"} -m ansible.builtin.debug \
        -a "msg={{ lookup('ansible.builtin.template', '$tpl') }}" 2>&1) || { echo "$out"; return 1; }
    # One-line output: the rendered text is a JSON string, its newlines written \n.
    for l in "$@"; do
        grep -qF "\\n$l\\n" <<<"$out" || { echo "no line '$l' in $tpl for $host: $out"; return 1; }
    done
}
ETCDS=https://10.0.0.11:2379,https://10.0.0.12:2379,https://10.0.0.13:2379
check "etcd: TLS client listeners only, client certificates required" \
    rendered_has etcd1 roles/etcd/templates/etcd.default.j2 "" \
    "ETCD_LISTEN_CLIENT_URLS=https://10.0.0.11:2379,https://127.0.0.1:2379" "ETCD_CLIENT_CERT_AUTH=true"
check "etcd: no plain listener anywhere in its configuration" \
    bash -c "! grep -n 'http://' roles/etcd/templates/etcd.default.j2"
check "coordinator settings: its replica name (= its certificate's CN), etcd over https" \
    rendered_has coord2 roles/coordinator/templates/stackfabric-coordinator.j2 "" \
    "SF_COORDINATOR_NAME=coord2" "SF_ETCD_ENDPOINTS=$ETCDS"
check "coordinator unit: its credentials are its etcd identity" \
    grep -qzP 'Environment=SF_ETCD_CA=%d/ca.pem\nEnvironment=SF_ETCD_CERT=%d/tls.pem\nEnvironment=SF_ETCD_KEY=%d/tls.key\n' "$C"
for hk in leaf1:switch hv1:hypervisor gw1:gateway; do
    check "${hk#*:} agent settings: every coordinator, etcd over https with the node's certificate" \
        rendered_has "${hk%:*}" roles/agent/templates/stackfabric-agent.j2 "agent_kind=${hk#*:}" \
        "SF_COORDINATOR=https://10.0.0.21:7443,https://10.0.0.22:7443" "SF_ETCD_ENDPOINTS=$ETCDS" \
        "SF_ETCD_CA=/etc/stackfabric/ca.pem" "SF_ETCD_CERT=/etc/stackfabric/node.pem" \
        "SF_ETCD_KEY=/etc/stackfabric/node.key"
done

section "etcd: the etcd role's users, roles and auth, on a throwaway etcd"
# One member on loopback (free ports), with etcd1's certificate from the PKI play above; the
# role's tasks run on the controller with etcdctl pointed at it (etcd_admin_ctl and
# etcd_member_ctl, the role's defaults, overridden).
read -r EP_CLIENT EP_PEER < <(python3 -c 'import socket
s=[socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1", 0)) for x in s]
print(*[x.getsockname()[1] for x in s])')
EURL=https://127.0.0.1:$EP_CLIENT
etcd --name etcd1 --data-dir "$TMP/etcd" --logger zap --log-outputs "$TMP/etcd.log" \
    --listen-client-urls "$EURL" --advertise-client-urls "$EURL" \
    --listen-peer-urls "http://127.0.0.1:$EP_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$EP_PEER" \
    --initial-cluster "etcd1=http://127.0.0.1:$EP_PEER" \
    --client-cert-auth --trusted-ca-file "$PKI/ca.pem" \
    --cert-file "$PKI/etcd1.etcd.pem" --key-file "$PKI/etcd1.etcd.key" >/dev/null 2>&1 &
ETCD_PID=$!
# ectl CERT ARGS...: etcdctl against it with the certificate CERT.{pem,key} of the PKI.
ectl() { etcdctl --endpoints "$EURL" --cacert "$PKI/ca.pem" --cert "$PKI/$1.pem" --key "$PKI/$1.key" "${@:2}"; }
check "etcd (one member, client TLS) starts" wait_for 30 ectl root.etcdctl endpoint health
cat >"$TMP/auth.yml" <<'PLAY'
---
- name: The etcd role's auth tasks, once
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Users, roles, auth
      ansible.builtin.import_role:
        name: etcd
        tasks_from: auth
      run_once: true
PLAY
python3 - "$EURL" "$PKI" >"$TMP/auth-vars.json" <<'PY'
import json, sys
url, pki = sys.argv[1:]
ctl = lambda c: ["etcdctl", "--endpoints", url, "--cacert", f"{pki}/ca.pem",
                 "--cert", f"{pki}/{c}.pem", "--key", f"{pki}/{c}.key"]
print(json.dumps({"etcd_admin_ctl": ctl("root.etcdctl"), "etcd_member_ctl": ctl("etcd1.etcd")}))
PY
auth_run() {
    ANSIBLE_ROLES_PATH=$ANSIBLE/roles ansible-playbook -i inventory.example.yml -i localhost, \
        --limit localhost -e "@$TMP/auth-vars.json" "$TMP/auth.yml" >"$TMP/auth.log" 2>&1 ||
        { tail -30 "$TMP/auth.log"; return 1; }
}
check "auth tasks run" auth_run
check_not "auth is on: a certificate of no etcd user may not list users" ectl etcd1.etcd user list
check_eq "root, coordinators and agents are etcd users" "coord1 coord2 gw1 gw2 hv1 hv2 hv3 leaf1 leaf2 root" \
    "$(ectl root.etcdctl user list 2>&1 | sort | xargs)"
user_roles() { ectl root.etcdctl user get "$1" 2>&1 | sed -n 's/^Roles: //p'; }
check_eq "root has role root" "root" "$(user_roles root)"
check_eq "coord1 has role coordinator" "coordinator" "$(user_roles coord1)"
check_eq "hv1 has role node-hv1 only" "node-hv1" "$(user_roles hv1)"
check "hv1 may write its own keys" ectl hv1 put /stackfabric/nodes/hv1/ops-check x
check_not "hv1 may not write hv2's keys" ectl hv1 put /stackfabric/nodes/hv2/ops-check x
check_not "hv1 may not write hv10's keys (the prefix ends with /)" ectl hv1 put /stackfabric/nodes/hv10/ops-check x
check_not "hv1 may not write intent" ectl hv1 put /stackfabric/intent/ops-check x
check "coord1 may write intent" ectl coord1 put /stackfabric/intent/ops-check x
check_eq "coord1 may read the nodes' keys" "x" \
    "$(ectl coord1 get /stackfabric/nodes/hv1/ops-check --print-value-only 2>&1)"
check_not "coord1 may not write outside /stackfabric/" ectl coord1 put /elsewhere x
check "second run changes nothing" auth_run
check "second run: changed=0" grep -q 'localhost *: ok=[0-9]* *changed=0 ' "$TMP/auth.log"
kill "$ETCD_PID" 2>/dev/null
wait "$ETCD_PID" 2>/dev/null
ETCD_PID=

finish
