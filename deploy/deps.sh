#!/usr/bin/env bash
# Installs what StackFabric's lab and tests need on Debian, if missing. Idempotent; sourced or run.
set -euo pipefail
sf_install_deps() {
    local pkgs=(etcd-server etcd-client frr nftables iproute2 iputils-ping curl openssl
        protobuf-compiler python3 procps psmisc systemd ansible-core ansible-lint)
    local missing=()
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if ((${#missing[@]})); then
        echo "installing: ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    # Debian's packages start system-wide etcd/frr services; StackFabric runs its own inside lab
    # namespaces and never uses those, so they are left as the machine's owner configured them.
    if ! command -v cargo >/dev/null 2>&1; then
        echo "cargo (Rust toolchain) is required: https://rustup.rs" >&2
        return 1
    fi
}
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then sf_install_deps; fi
