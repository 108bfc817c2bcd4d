# shellcheck shell=bash
# Assertion helpers for StackFabric's end-to-end tests. Sourced by the test scripts.
# Every check prints PASS/FAIL with a reason; failures are counted and make the script fail.

E2E_FAILS=0
E2E_PASSES=0

pass() { E2E_PASSES=$((E2E_PASSES + 1)); printf '  PASS %s\n' "$*"; }
fail() { E2E_FAILS=$((E2E_FAILS + 1)); printf '  FAIL %s\n' "$*"; }

# check DESCRIPTION CMD... : passes when CMD succeeds.
check() {
    local what=$1; shift
    if "$@" >/tmp/e2e.$$.out 2>&1; then pass "$what"; else
        fail "$what: \`$*\` failed: $(tail -c 600 /tmp/e2e.$$.out)"; fi
}

# check_not DESCRIPTION CMD... : passes when CMD fails.
check_not() {
    local what=$1; shift
    if "$@" >/tmp/e2e.$$.out 2>&1; then fail "$what: \`$*\` unexpectedly succeeded: $(tail -c 300 /tmp/e2e.$$.out)"; else
        pass "$what"; fi
}

# check_eq DESCRIPTION EXPECTED ACTUAL
check_eq() {
    if [ "$2" = "$3" ]; then pass "$1"; else fail "$1: expected '$2', got '$3'"; fi
}

# wait_for TIMEOUT_S CMD... : polls CMD every 0.25 s until it succeeds.
wait_for() {
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -ge $deadline ] && return 1
        sleep 0.25
    done
}

section() { printf '\n== %s\n' "$*"; }

finish() {
    printf '\n%d passed, %d failed\n' "$E2E_PASSES" "$E2E_FAILS"
    rm -f /tmp/e2e.$$.out
    [ "$E2E_FAILS" -eq 0 ]
}
