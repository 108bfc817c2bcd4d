#!/usr/bin/env bash
# deploy/package.sh - one Debian package per binary, from the release build:
#   sf-coordinator, sf-switch-agent, sf-hypervisor-agent, sf-gateway-agent, sfctl
# written to target/debian/<name>_<version>_<arch>.deb (override with SF_DEB_DIR).
#
# Each daemon package carries its hardened unit (deploy/systemd, installed in
# /lib/systemd/system), its settings file /etc/default/stackfabric-<name> (a conffile: an
# upgrade never overwrites the operator's copy), /etc/stackfabric (certificates, 0700) and the
# documentation its unit points at; state directories are made by systemd (StateDirectory=).
# Depends: lists what the binary runs (FRR with frr-pythontools for frr-reload.py, iproute2,
# nftables, python3) and the C library it was linked against (dpkg-shlibdeps).
# Installing does not start anything: a node needs its certificate and settings first
# (README "Installing on real hosts"); `systemctl enable --now sf-<name>` then starts it.
#
# Built with dpkg-deb (no extra tool); `apt install ./sf-*.deb` on a Debian 12 host pulls the
# dependencies. tests/e2e/systemd.sh installs them in a fresh root and boots it under systemd.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN_DIR=${SF_BIN_DIR:-$REPO/target/release}
OUT=${SF_DEB_DIR:-$REPO/target/debian}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/Cargo.toml" | head -n 1)-${SF_DEB_REVISION:-1}
ARCH=$(dpkg --print-architecture)
MAINTAINER="StackFabric developers <dev@stackfabric.invalid>"
FRR_DEPS="frr (>= 8.4), frr-pythontools, iproute2, python3"

# deps_of NAME: the Depends: line of a package.
deps_of() {
    case "$1" in
        sf-coordinator | sfctl) echo "" ;;
        sf-switch-agent) echo "$FRR_DEPS" ;;
        sf-hypervisor-agent) echo "$FRR_DEPS, nftables (>= 1.0.6)" ;;
        sf-gateway-agent) echo "$FRR_DEPS, nftables (>= 1.0.6)" ;;
    esac
}

description_of() {
    case "$1" in
        sf-coordinator) echo "StackFabric coordinator: FabricApi, AgentSync and the Netris-compatible REST API
 Stateless API server for StackFabric, scalable networking for Apache CloudStack. Keeps all
 intent in etcd, compiles it into one desired state per node and streams it to the agents." ;;
        sf-switch-agent) echo "StackFabric switch agent for Linux leaf/spine switches
 Programs the underlay links, FRR eBGP unnumbered and EVPN transit, bare-metal ports and
 Direct Connect hand-offs from the coordinator's desired state." ;;
        sf-hypervisor-agent) echo "StackFabric hypervisor agent for CloudStack KVM hosts
 Programs the VTEP, the vxlan<VNI>/brvx-<VNI> bridges CloudStack's KVM agent plugs VM NICs
 into, FRR EVPN and east-west ACLs (nftables)." ;;
        sf-gateway-agent) echo "StackFabric SoftGate gateway agent
 Serves the VPCs placed on this gateway: one router namespace per VPC with SNAT, port
 forwarding, Elastic IP, a Maglev L4 load balancer and ACLs (nftables), announced by FRR." ;;
        sfctl) echo "StackFabric command-line client
 Talks to the coordinator's gRPC API (TLS, bearer token): tenants, VPCs, networks, ports,
 NAT, load balancers, ACLs, routes, Direct Connect, inventory and fleet status." ;;
    esac
}

# env_file_of NAME: the /etc/default example the package installs (empty for sfctl).
env_file_of() {
    case "$1" in
        sf-coordinator) echo "$REPO/deploy/systemd/stackfabric-coordinator.env" ;;
        sf-*-agent) echo "$REPO/deploy/systemd/stackfabric-agent.env" ;;
        *) echo "" ;;
    esac
}

# shlib_deps BINARY: "libc6 (>= x), ..." from dpkg-shlibdeps.
shlib_deps() {
    local work
    work=$(mktemp -d)
    mkdir -p "$work/debian"
    printf 'Source: stackfabric\n\nPackage: stackfabric\nArchitecture: any\n' >"$work/debian/control"
    (cd "$work" && dpkg-shlibdeps -O "$1" 2>/dev/null) | sed -n 's/^shlibs:Depends=//p'
    rm -rf "$work"
}

build_one() {
    local name=$1 d env unit deps shlibs kind
    d=$(mktemp -d)
    chmod 0755 "$d"
    install -D -m 0755 "$BIN_DIR/$name" "$d/usr/bin/$name"
    strip --strip-unneeded "$d/usr/bin/$name"
    install -D -m 0644 "$REPO/LICENSE" "$d/usr/share/doc/$name/copyright"
    env=$(env_file_of "$name")
    unit=$REPO/deploy/systemd/$name.service
    if [ -f "$unit" ]; then
        install -D -m 0644 "$unit" "$d/lib/systemd/system/$name.service"
        install -D -m 0644 "$REPO/README.md" "$d/usr/share/doc/$name/README.md"
        install -D -m 0644 "$REPO/docs/ARCHITECTURE.md" "$d/usr/share/doc/$name/ARCHITECTURE.md"
        kind=${name#sf-}
        install -D -m 0644 "$env" "$d/etc/default/stackfabric-$kind"
        install -d -m 0700 "$d/etc/stackfabric"
        mkdir -p "$d/DEBIAN"
        echo "/etc/default/stackfabric-$kind" >"$d/DEBIAN/conffiles"
        maintainer_scripts "$name" "$d/DEBIAN"
    fi
    mkdir -p "$d/DEBIAN"
    shlibs=$(shlib_deps "$d/usr/bin/$name")
    deps=$(deps_of "$name")
    deps=${shlibs}${deps:+${shlibs:+, }$deps}
    {
        echo "Package: $name"
        echo "Version: $VERSION"
        echo "Architecture: $ARCH"
        echo "Maintainer: $MAINTAINER"
        echo "Section: net"
        echo "Priority: optional"
        echo "Homepage: https://github.com/stackfabric/stackfabric"
        [ -n "$deps" ] && echo "Depends: $deps"
        [ "$name" = sf-coordinator ] && echo "Suggests: etcd-server (>= 3.4)"
        echo "Installed-Size: $(du -sk --exclude=DEBIAN "$d" | cut -f1)"
        echo "Description: $(description_of "$name")"
    } >"$d/DEBIAN/control"
    (cd "$d" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | xargs -0 md5sum) >"$d/DEBIAN/md5sums"
    mkdir -p "$OUT"
    dpkg-deb --root-owner-group -Zgzip --build "$d" "$OUT/${name}_${VERSION}_${ARCH}.deb" >/dev/null
    rm -rf "$d"
    echo "$OUT/${name}_${VERSION}_${ARCH}.deb"
}

# maintainer_scripts NAME DIR: postinst/prerm/postrm for a daemon: systemd learns of the unit;
# nothing is enabled or started on install; removal stops the unit (for an agent that leaves
# the dataplane as it is: agents never flush on stop).
maintainer_scripts() {
    local name=$1 dir=$2
    cat >"$dir/postinst" <<EOF
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
    # An upgrade restarts a running service with the new binary (like the rollout playbook,
    # one node at a time is the operator's choice); a fresh install starts nothing.
    if [ "\$1" = configure ] && [ -n "\$2" ] && systemctl is-active --quiet $name.service; then
        systemctl restart $name.service || true
    fi
fi
EOF
    cat >"$dir/prerm" <<EOF
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "\$1" = remove ]; then
    systemctl stop $name.service >/dev/null 2>&1 || true
    systemctl disable $name.service >/dev/null 2>&1 || true
fi
EOF
    cat >"$dir/postrm" <<EOF
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
EOF
    chmod 0755 "$dir/postinst" "$dir/prerm" "$dir/postrm"
}

for b in sf-coordinator sf-switch-agent sf-hypervisor-agent sf-gateway-agent sfctl; do
    [ -x "$BIN_DIR/$b" ] || { echo "package: missing $BIN_DIR/$b (cargo build --release)" >&2; exit 1; }
done
rm -f "$OUT"/sf-*.deb "$OUT"/sfctl_*.deb
for b in sf-coordinator sf-switch-agent sf-hypervisor-agent sf-gateway-agent sfctl; do
    build_one "$b"
done
