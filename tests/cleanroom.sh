#!/usr/bin/env bash
# Clean-room test: the README's quickstart on a fresh Debian 12 with nothing but the Rust
# toolchain. A `debootstrap --variant=minbase bookworm` root (cached tarball, deploy/lib/
# rootfs.sh) gets the host's Rust toolchain and this repository bind-mounted at their own
# paths; inside it, as a new user would:
#   1. deploy/deps.sh installs every package (a package it forgets fails the next steps),
#   2. the workspace builds (the suite's own build: the target directory is this repository's,
#      at the same path, so the host's later `cargo build` finds it done),
#   3. deploy/lab.sh up brings up the lab and its demo tenant, and a packet crosses it (blue-web-1
#      reaches blue-web-2 on another hypervisor over EVPN/VXLAN), then deploy/lab.sh down.
# The root, its mounts and every process in it are removed on exit, also after a failure.
# It would have caught both fresh-machine failures seen before (no descriptor.proto from
# libprotobuf-dev; no frr-reload.py without frr-pythontools): deps.sh ran in a root that
# lacked them.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$REPO/tests/e2e/lib.sh"
# shellcheck source=deploy/lib/rootfs.sh
source "$REPO/deploy/lib/rootfs.sh"

PREFIX=${LAB_PREFIX:-sfcr$$-}
ROOT=${SF_CLEANROOM_ROOT:-/var/tmp/sf-cleanroom.$$}
RUSTUP_DIR=${RUSTUP_HOME:-/root/.rustup}
CARGO_DIR=${CARGO_HOME:-/root/.cargo}

inside() { rootfs_chroot "$ROOT" "$@"; }
cleanup() {
    if [ -d "$ROOT/proc/self" ]; then
        inside env LAB_PREFIX="$PREFIX" "$REPO/deploy/lab.sh" down >/dev/null 2>&1 || true
    fi
    rootfs_remove "$ROOT" || echo "cleanroom: could not remove $ROOT" >&2
    rm -f "$ROOT".*.log
}
trap cleanup EXIT

# timed NAME CMD...: runs CMD, prints its duration, records PASS/FAIL; output kept in a log
# (its tail is shown on failure).
timed() {
    local what=$1 t0=$SECONDS log
    shift
    log=$ROOT.$(echo "$what" | tr -c 'a-z0-9' _).log
    if "$@" >"$log" 2>&1; then
        pass "$what ($((SECONDS - t0)) s)"
    else
        fail "$what ($((SECONDS - t0)) s): $(tail -n 25 "$log")"
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
}

section "clean root (debootstrap --variant=minbase $SF_ROOTFS_SUITE)"
timed "fresh root at $ROOT" rootfs_create "$ROOT" || { finish; exit 1; }
check "the root lacks what deps.sh must install (frr-reload.py, descriptor.proto, shellcheck)" \
    bash -c "! [ -e '$ROOT/usr/lib/frr/frr-reload.py' ] && ! [ -e '$ROOT/usr/include/google/protobuf/descriptor.proto' ] && ! [ -e '$ROOT/usr/bin/shellcheck' ]"
rootfs_mount_api "$ROOT"
rootfs_bind "$RUSTUP_DIR" "$ROOT" ro
rootfs_bind "$CARGO_DIR" "$ROOT"
rootfs_bind "$REPO" "$ROOT"
check "the Rust toolchain is usable in the root" inside cargo --version

section "README quickstart, inside the root"
timed "deploy/deps.sh installs the packages" inside "$REPO/deploy/deps.sh" || { finish; exit 1; }
check "frr-reload.py, descriptor.proto, shellcheck and promtool are now present" \
    bash -c "[ -e '$ROOT/usr/lib/frr/frr-reload.py' ] && [ -e '$ROOT/usr/include/google/protobuf/descriptor.proto' ] && [ -x '$ROOT/usr/bin/shellcheck' ] && [ -x '$ROOT/usr/bin/promtool' ]"
timed "the workspace builds (cargo build --release --locked --workspace --all-targets)" \
    inside bash -c "cd '$REPO' && cargo build --release --locked --workspace --all-targets" ||
    { finish; exit 1; }
timed "deploy/lab.sh up (fabric + demo tenant)" \
    inside env LAB_PREFIX="$PREFIX" "$REPO/deploy/lab.sh" up || { finish; exit 1; }
check "a packet crosses the lab: blue-web-1 pings blue-web-2 (other hypervisor)" \
    inside env LAB_PREFIX="$PREFIX" "$REPO/deploy/lab.sh" exec blue-web-1 ping -c 2 -W 2 10.10.1.12
check_eq "HTTP from blue-web-1 to 10.10.1.12 answers blue-web-2" blue-web-2 \
    "$(inside env LAB_PREFIX="$PREFIX" "$REPO/deploy/lab.sh" exec blue-web-1 curl -s -m 5 http://10.10.1.12/)"
timed "deploy/lab.sh down" inside env LAB_PREFIX="$PREFIX" "$REPO/deploy/lab.sh" down
check_eq "no lab namespace is left in the root" "" "$(find "$ROOT/run/netns" -maxdepth 1 -name "$PREFIX*" 2>/dev/null)"
check_eq "no process is left in the root" "" "$(rootfs_procs "$ROOT" | tr '\n' ' ')"

finish
