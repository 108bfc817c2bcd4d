#!/usr/bin/env bash
# End-to-end robustness of the coordinator's APIs (issue 18): the REST API's limits (a 10 MB
# body answers 413 with the envelope, sessions are capped, logins are rate limited with 429 +
# Retry-After) and a bounded black-box fuzz run (FUZZ_SECS, default 60) of malformed and
# mutated requests against every REST route and the gRPC API (tests/e2e/api_fuzz.py): every
# answer must be a 4xx with the envelope / a bad-input gRPC status, the stored intent and every
# REST list must be byte-identical before and after, and the coordinator must still run.
#
# Usage: tests/e2e/fuzz.sh   (as root; run after `cargo build --release`)
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$REPO/tests/e2e/lib.sh"
lab_test sfz

FUZZ_SECS=${FUZZ_SECS:-60}
ETCD=http://172.31.255.2:2379
# A small session cap so the cap can be seen with a few logins (read by sf-coordinator).
export SF_REST_MAX_SESSIONS=3

api() { # api MODE [ARGS]: tests/e2e/api_fuzz.py from the mgmt namespace
    X mgmt env REST=https://172.31.255.3:8080 REST_CA="$STATE/pki/ca.pem" \
        REST_PASSWORD_FILE="$STATE/rest-password" GRPC=172.31.255.3:7443 \
        GRPC_TOKEN_FILE="$STATE/api-token" python3 "$REPO/tests/e2e/api_fuzz.py" "$@"
}
phase() { # phase DESCRIPTION MODE [ARGS]
    local what=$1
    shift
    if api "$@"; then pass "$what"; else fail "$what (see the FAIL lines above)"; fi
}
state() { # the stored intent, inventory, allocations and REST records, and every REST list
    local p
    for p in intent inventory alloc rest; do
        X etcd env ETCDCTL_API=3 etcdctl --endpoints "$ETCD" get --prefix "/stackfabric/$p/"
    done
    api snapshot
}
coord_alive() { # the pid the lab recorded is a live sf-coordinator (not a zombie)
    local pid
    pid=$(cat "$STATE/pids/coordinator.pid" 2>/dev/null) || return 1
    grep -q sf-coordinator "/proc/$pid/cmdline" 2>/dev/null &&
        ! grep -q '^State:.*Z' "/proc/$pid/status"
}

section "lab up (prefix $LAB_PREFIX)"
t0=$SECONDS
if ! L up --no-build; then fail "deploy/lab.sh up"; finish; exit 1; fi
pass "lab up in $((SECONDS - t0)) s"
check "the coordinator process is found" coord_alive

section "1. REST limits: body size and session cap"
phase "a large body answers 413 with the envelope; the session cap ends unused sessions" limits
# curl sends `Expect: 100-continue` for a large upload: the 413 comes before any of it is sent.
head -c $((10 << 20)) /dev/zero | tr '\0' x >"$STATE/big-body"
check_eq "curl (Expect: 100-continue) gets 413 with the envelope for 10 MB" "413 False" \
    "$(X mgmt curl -s -o "$STATE/big-answer" -w '%{http_code}' --cacert "$STATE/pki/ca.pem" \
        -H 'Content-Type: application/json' --data-binary @"$STATE/big-body" \
        https://172.31.255.3:8080/api/auth) $(json "d['isSuccess']" <"$STATE/big-answer")"
rm -f "$STATE/big-body" "$STATE/big-answer"

section "2. fuzzing both APIs for $FUZZ_SECS s"
state >/dev/null # the first GET /api/tenants records the admin tenant: before the baseline
before=$(state)
check "the baseline state was read" test -n "$before"
phase "every malformed request was refused cleanly" fuzz "$FUZZ_SECS"
check "the coordinator is still running" coord_alive
after=$(state)
check "stored state and REST lists are byte-identical before and after" test "$before" = "$after"
if [ "$before" != "$after" ]; then diff <(echo "$before") <(echo "$after") | head -20; fi
check "sfctl still answers" S status

section "3. login rate limit"
phase "wrong passwords from one address are throttled with 429 and Retry-After" throttle
check "the coordinator is still running" coord_alive

lab_finish
