#!/usr/bin/env bash
# End-to-end test of the coordinator's web console (https://<coordinator>:8443) in a real
# browser: headless Chromium (Debian's chromium + chromium-driver, driven by python3-selenium)
# runs inside the lab's mgmt namespace, never on the host network.
#   1. HTTPS with the coordinator's certificate (verified against the lab CA), assets compiled
#      in, no session no data, CSRF header required, a reader token cannot write;
#   2. in the browser (tests/e2e/console_browser.py): log in with the REST user; the topology
#      shows hv1..hv3 (green), the switches, gateways and the internet edge; the hv1-leaf1
#      link is green while BGP is Established at both ends, turns red when hv1's leaf1 port
#      is taken down inside its namespace, and green again when it is back up; draining the
#      serving gateway turns it grey and moves the VPC, undrain makes it green; a VPC created
#      through the form appears without a reload, a bad CIDR shows sfctl's message word for
#      word, a VPC sfctl creates appears live, a delete removes it; a port forward and a
#      load balancer created through the forms are listed (the LB with its gateway, Maglev
#      digest and both backends up by its TCP check), their delete buttons remove them;
#   3. a screenshot kept in $SF_E2E_ARTEFACTS/console/ (default <repo>/target/e2e-artefacts).
#
# Usage: tests/e2e/console.sh   (as root; builds nothing: run after `cargo build --release`)
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$REPO/tests/e2e/lib.sh"
lab_test con

SFCTL=${SF_BIN_DIR:-$REPO/target/release}/sfctl
ART=${SF_E2E_ARTEFACTS:-$REPO/target/e2e-artefacts}/console
URL=https://172.31.255.3:8443
JAR=
test_exit() { [ -z "$JAR" ] || rm -f "$JAR"; }

# curl_c ARGS...: curl in the mgmt namespace, verifying the console's certificate with the
# lab CA under the name the certificate carries.
curl_c() {
    X mgmt curl -s -m 10 --cacert "$STATE/pki/ca.pem" --resolve coordinator:8443:172.31.255.3 "$@"
}
# code ARGS...: the HTTP status of a console request.
code() { curl_c -o /dev/null -w '%{http_code}' "$@"; }

for tool in chromium chromedriver; do
    command -v "$tool" >/dev/null || { echo "console.sh: $tool missing (deploy/deps.sh installs it)" >&2; exit 1; }
done
# Debian's python3, where python3-selenium is installed (not a python3 earlier on PATH).
PY=/usr/bin/python3
"$PY" -c 'import selenium' || { echo "console.sh: python3-selenium missing" >&2; exit 1; }
mkdir -p "$ART"

section "lab up (prefix $LAB_PREFIX)"
t0=$SECONDS
if ! L up --no-build; then
    fail "deploy/lab.sh up"
    finish
    exit 1
fi
pass "lab up in $((SECONDS - t0)) s"

section "1. HTTPS, session, CSRF, roles"
check "the page is served over HTTPS with the coordinator's certificate (lab CA)" \
    bash -c "'$REPO/deploy/lab.sh' exec mgmt curl -sf -m 10 --cacert '$STATE/pki/ca.pem' \
        --resolve coordinator:8443:172.31.255.3 https://coordinator:8443/ | grep -q 'StackFabric console'"
check_eq "its script is compiled in" 200 "$(code https://coordinator:8443/app.js)"
check_eq "no session: the state is refused" 401 "$(code https://coordinator:8443/api/state)"
check_eq "a login without the X-SF-Console header is refused (CSRF)" 403 \
    "$(code -X POST -H 'Content-Type: application/json' -d '{"token":"x"}' https://coordinator:8443/api/login)"
JAR=$(mktemp)
reader=$(cat "$STATE/api-token-reader")
check_eq "the reader token logs in" 200 "$(code -c "$JAR" -X POST -H 'X-SF-Console: 1' \
    -H 'Content-Type: application/json' -d "{\"token\":\"$reader\"}" https://coordinator:8443/api/login)"
check_eq "with its session the state is served" 200 "$(code -b "$JAR" https://coordinator:8443/api/state)"
check_eq "the state's fleet lists hv1..hv3" "['hv1', 'hv2', 'hv3']" \
    "$(curl_c -b "$JAR" https://coordinator:8443/api/state | json "sorted(n['name'] for n in d['nodes'] if n['role']=='hypervisor')")"
answer=$(curl_c -b "$JAR" -X POST -H 'X-SF-Console: 1' -H 'Content-Type: application/json' \
    -d '{"action":"create_vpc","tenant":"demo","name":"nope","cidr":"10.99.0.0/16"}' \
    -w ' %{http_code}' https://coordinator:8443/api/action)
check_eq "a reader's write is refused with the API's role message" \
    "403 this token has the reader role; CreateVpc needs admin" \
    "${answer##* } $(echo "${answer% *}" | json "d['error']")"
check_not "nothing was written" S vpc get nope --tenant demo

section "2. the console in a real browser"
# The API's own message for a bad CIDR, as sfctl prints it, for the browser to compare.
bad=$(S vpc create badcidr --tenant demo --cidr 10.0.0.0/33 2>&1)
expect=$(printf '%s\n' "$bad" | sed -n 's/^.*\(invalid vpc\.cidr: .*\)$/\1/p' | head -1)
check "sfctl refuses the bad CIDR with a vpc.cidr message" test -n "$expect"
shot="$ART/console-$(date +%Y%m%dT%H%M%S).png"
sfctl_line="$SFCTL --endpoint https://172.31.255.3:7443 --ca $STATE/pki/ca.pem --token-file $STATE/api-token"
X mgmt env HOME="$STATE" "$PY" "$REPO/tests/e2e/console_browser.py" --url "$URL" \
    --password-file "$STATE/rest-password" --expect-error "$expect" \
    --sfctl "$sfctl_line" --screenshot "$shot" \
    --link-down "ip netns exec ${LAB_PREFIX}hv1 ip link set leaf1 down" \
    --link-up "ip netns exec ${LAB_PREFIX}hv1 ip link set leaf1 up" \
    >"$STATE/browser.out" 2>"$STATE/browser.err"
rc=$?
while IFS= read -r line; do
    case "$line" in
        PASS\ *) pass "${line#PASS }" ;;
        FAIL\ *) fail "${line#FAIL }" ;;
    esac
done <"$STATE/browser.out"
[ "$rc" -eq 0 ] || fail "the browser run exited $rc: $(tail -c 600 "$STATE/browser.err")"
check "the screenshot is a PNG" bash -c "head -c 8 '$shot' | grep -q PNG"
[ -s "$shot" ] && cp "$shot" "$ART/console-latest.png"
check "the console logged the browser's actions as the REST user" \
    grep -q 'console action.*user=cloudstack' "$STATE/logs/coordinator.log"

finish
