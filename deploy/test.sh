#!/usr/bin/env bash
# deploy/test.sh - StackFabric's whole test suite, as CI runs it (as root, on Debian):
#   1. installs missing Debian packages (deploy/deps.sh),
#   2. the clean room (tests/cleanroom.sh): the README's quickstart in a fresh debootstrap
#      root with only the Rust toolchain; it also does the suite's release build (same
#      target directory), so a package missing from deps.sh fails here, not on a user's machine,
#   3. builds everything in release mode (one profile for tests and lab binaries; after 2. this
#      finds the build done),
#   4. the Debian packages (deploy/package.sh -> target/debian),
#   5. unit and conformance tests (the etcd half starts real etcd servers; required here),
#   6. the benchmarks at tiny sizes (deploy/bench.sh --smoke), so they cannot rot,
#   7. shell lint of every script (shellcheck; installed by 1., never skipped),
#   7b. the monitoring files (deploy/monitoring/check.sh: promtool check and test rules),
#   8. end-to-end tests with real packets (tests/e2e/*.sh), each in its own lab prefix; among
#      them tests/e2e/systemd.sh boots the packages under systemd in a container.
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

if [ "${SF_CLEANROOM:-1}" = 0 ]; then
    stage "clean room: SKIPPED (SF_CLEANROOM=0)"
else
    stage "clean room (fresh Debian root: deps.sh, build, lab up, a packet)"
    tests/cleanroom.sh
fi

stage "build (release)"
cargo build --release --locked --workspace --all-targets

stage "Debian packages"
deploy/package.sh

stage "unit and conformance tests"
SF_REQUIRE_ETCD=1 cargo test --release --locked --workspace

stage "benchmark smoke (deploy/bench.sh --smoke: every part at tiny sizes)"
deploy/bench.sh --smoke

stage "shellcheck"
shellcheck -x deploy/*.sh deploy/lib/*.sh deploy/lib/lab/*.sh deploy/monitoring/*.sh tests/*.sh tests/e2e/*.sh

stage "monitoring: promtool check and test rules, dashboard queries"
deploy/monitoring/check.sh

stage "end-to-end lab tests"
for t in tests/e2e/[0-9a-z]*.sh; do
    case "$t" in */lib.sh) continue ;; esac
    stage "e2e: $t"
    LAB_PREFIX="sft$$$(basename "$t" .sh | cut -c1-3)-" "$t"
done

stage "all tests passed in $((SECONDS - t_start)) s"
