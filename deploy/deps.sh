#!/usr/bin/env bash
# Installs every Debian package StackFabric's build, lab and test suite need, if missing.
# Idempotent; sourced (sf_install_deps) or run. Needs nothing but Debian 12 and the Rust
# toolchain: tests/e2e/cleanroom.sh runs this in a fresh `debootstrap --variant=minbase` root,
# so a package forgotten here fails CI instead of a new user's first command.
set -euo pipefail

# One line per reason, so a removal is a deliberate edit. --no-install-recommends is used,
# so every package a step runs is listed, not merely recommended by another.
SF_DEPS_BUILD=(gcc libc6-dev pkg-config ca-certificates
    protobuf-compiler libprotobuf-dev) # etcd-client's build script: protoc + descriptor.proto
SF_DEPS_LAB=(etcd-server etcd-client frr frr-pythontools nftables iproute2 iputils-ping curl
    openssl python3 procps psmisc kmod conntrack) # conntrack: tests read and write flows with it
SF_DEPS_TEST=(systemd ansible-core ansible-lint shellcheck    # unit verify, playbook lint, lint
    debootstrap systemd-container dpkg-dev                     # clean room, booted units, .debs
    prometheus         # promtool: deploy/monitoring/check.sh (19 MB; its service is not used)
    python3-grpcio     # tests/e2e/sfctl.sh asks the coordinator's gRPC health and reflection
    iptables           # deploy/bench.sh nat: the baseline, CloudStack VR's DNAT chain
    haproxy wrk        # deploy/bench.sh lb: the baseline (CloudStack VR's balancer), the client
    chromium chromium-driver python3-selenium) # tests/e2e/console.sh: the web console in a browser

sf_missing_pkgs() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
    done
}

sf_install_deps() {
    local missing
    mapfile -t missing < <(sf_missing_pkgs "${SF_DEPS_BUILD[@]}" "${SF_DEPS_LAB[@]}" "${SF_DEPS_TEST[@]}")
    if ((${#missing[@]})); then
        echo "installing: ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        timeout 600 apt-get update -qq
        timeout 1800 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    # Debian's packages start system-wide etcd/frr services; StackFabric runs its own inside lab
    # namespaces and never uses those, so they are left as the machine's owner configured them.
    if ! command -v cargo >/dev/null 2>&1; then
        echo "cargo (Rust toolchain) is required: https://rustup.rs" >&2
        return 1
    fi
}
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then sf_install_deps; fi
