#!/usr/bin/env bash
# deploy/test.sh - StackFabric's whole test suite, as CI runs it (as root, on Debian):
#   1. installs missing Debian packages (deploy/deps.sh),
#   2. builds everything in release mode (one profile for tests and lab binaries),
#   3. unit and conformance tests (the etcd half starts real etcd servers; required here),
#   4. shell lint of the lab scripts (when shellcheck is installed),
#   5. end-to-end lab tests with real packets (tests/e2e/*.sh), each in its own lab prefix.
# Exits non-zero on the first failing stage; every lab is torn down even on failure.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"
[ "$(id -u)" = 0 ] || { echo "deploy/test.sh must run as root (network namespaces)" >&2; exit 1; }

stage() { printf '\n######## %s (%s)\n' "$*" "$(date +%T)"; }
t_start=$SECONDS

stage "dependencies"
# shellcheck source=deploy/deps.sh
source "$REPO/deploy/deps.sh"
sf_install_deps

stage "build (release)"
cargo build --release --locked --workspace --all-targets

stage "unit and conformance tests"
SF_REQUIRE_ETCD=1 cargo test --release --locked --workspace

if command -v shellcheck >/dev/null 2>&1; then
    stage "shellcheck"
    shellcheck -x deploy/*.sh deploy/lib/*.sh tests/e2e/*.sh
fi

stage "end-to-end lab tests"
for t in tests/e2e/[0-9a-z]*.sh; do
    case "$t" in */lib.sh) continue ;; esac
    stage "e2e: $t"
    LAB_PREFIX="sft$$$(basename "$t" .sh | cut -c1-3)-" "$t"
done

stage "all tests passed in $((SECONDS - t_start)) s"
