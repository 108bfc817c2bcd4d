#!/usr/bin/env bash
# deploy/lib/rootfs.sh - minimal Debian 12 roots for the clean-room and booted-systemd tests
# (sourced). A root is made from a cached `debootstrap --variant=minbase bookworm` tarball, so
# only the first run on a machine downloads the base system (~40 MB); later runs unpack it.
#
#   rootfs_create ROOT            fresh root at ROOT (must not exist)
#   rootfs_mount_api ROOT         /proc, /sys, /dev, /dev/pts, /run (tmpfs) for chroot use
#   rootfs_bind SRC ROOT [ro]     bind SRC at the same path inside ROOT
#   rootfs_chroot ROOT CMD...     run CMD in ROOT (clean environment, PATH with cargo)
#   rootfs_remove ROOT            end every process whose root is ROOT, unmount everything
#                                 below ROOT, then delete it (never crossing a mount)
#
# Safety: nothing here touches the host's network. A chroot shares the host's network
# namespace, so daemons must never start in it: every root gets a policy-rc.d that refuses
# service starts during package installation, and the lab run inside creates its own
# namespaces like any lab. Package downloads use the host's apt sources (the machine's mirror).
# (sourced: leaves the caller's shell options alone)

SF_ROOTFS_CACHE=${SF_ROOTFS_CACHE:-/var/cache/stackfabric}
SF_ROOTFS_SUITE=bookworm
SF_ROOTFS_MIRROR=${SF_ROOTFS_MIRROR:-http://deb.debian.org/debian}

rootfs_log() { echo "rootfs: $*" >&2; }

# rootfs_tarball - path of the cached base tarball, made once (under a lock, so two runs never
# build it at the same time).
rootfs_tarball() {
    local tgz arch
    arch=$(dpkg --print-architecture)
    tgz=$SF_ROOTFS_CACHE/debootstrap-$SF_ROOTFS_SUITE-minbase-$arch.tgz
    mkdir -p "$SF_ROOTFS_CACHE"
    (
        flock -w 900 9 || { rootfs_log "timed out waiting for the tarball lock"; exit 1; }
        if [ ! -s "$tgz" ]; then
            local work
            work=$(mktemp -d "$SF_ROOTFS_CACHE/make.XXXXXX")
            rootfs_log "caching the $SF_ROOTFS_SUITE minbase tarball (first run on this machine)"
            if ! timeout 900 debootstrap --variant=minbase --make-tarball="$work/base.tgz" \
                "$SF_ROOTFS_SUITE" "$work/root" "$SF_ROOTFS_MIRROR" >"$work/log" 2>&1; then
                tail -n 20 "$work/log" >&2
                rm -rf --one-file-system "$work"
                exit 1
            fi
            mv "$work/base.tgz" "$tgz"
            rm -rf --one-file-system "$work"
        fi
    ) 9>"$SF_ROOTFS_CACHE/.lock" || return 1
    echo "$tgz"
}

rootfs_create() {
    local root=$1 tgz
    [ ! -e "$root" ] || { rootfs_log "$root exists"; return 1; }
    tgz=$(rootfs_tarball) || return 1
    mkdir -p "$root"
    if ! timeout 900 debootstrap --variant=minbase --unpack-tarball="$tgz" \
        "$SF_ROOTFS_SUITE" "$root" "$SF_ROOTFS_MIRROR" >"$root.debootstrap.log" 2>&1; then
        tail -n 20 "$root.debootstrap.log" >&2
        return 1
    fi
    rm -f "$root.debootstrap.log"
    # The machine's apt sources and access settings (its mirror), nothing else of the host.
    rm -f "$root/etc/apt/sources.list"
    cp /etc/apt/sources.list.d/*.sources "$root/etc/apt/sources.list.d/" 2>/dev/null || true
    [ -f /etc/apt/sources.list ] && cp /etc/apt/sources.list "$root/etc/apt/"
    [ -f /etc/apt/apt.conf.d/99artifact-registry ] &&
        cp /etc/apt/apt.conf.d/99artifact-registry "$root/etc/apt/apt.conf.d/"
    cp -L /etc/resolv.conf "$root/etc/resolv.conf"
    # No service may start while packages are installed in the root: in a chroot it would
    # run in the host's network namespace.
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 755 "$root/usr/sbin/policy-rc.d"
}

rootfs_mount_api() {
    local root=$1
    # The root must be a mount point of its own (`ip netns exec` runs `mount --make-rslave /`),
    # private so that nothing mounted below it propagates to the host.
    mount --bind "$root" "$root" &&
        mount --make-rprivate "$root" &&
        mount -t proc proc "$root/proc" &&
        mount -t sysfs sysfs "$root/sys" &&
        mount --bind /dev "$root/dev" &&
        mount -t devpts -o newinstance,ptmxmode=0666 devpts "$root/dev/pts" &&
        mount -t tmpfs -o mode=755 tmpfs "$root/run" || return 1
    mkdir -p "$root/run/lock"
}

rootfs_bind() {
    local src=$1 root=$2 mode=${3:-rw}
    mkdir -p "$root$src"
    mount --bind "$src" "$root$src"
    [ "$mode" = ro ] && mount -o remount,bind,ro "$root$src"
    return 0
}

rootfs_chroot() {
    local root=$1
    shift
    chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
        PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        "$@"
}

# rootfs_procs ROOT - pids of processes whose root directory is ROOT.
rootfs_procs() {
    local root p r
    root=$(readlink -f "$1")
    for p in /proc/[0-9]*; do
        r=$(readlink "$p/root" 2>/dev/null) || continue
        [ "$r" = "$root" ] && echo "${p#/proc/}"
    done
    return 0
}

rootfs_remove() {
    local root=$1 pids m t
    [ -d "$root" ] || return 0
    root=$(readlink -f "$root")
    for _ in 1 2 3; do
        mapfile -t pids < <(rootfs_procs "$root")
        ((${#pids[@]})) || break
        kill -KILL "${pids[@]}" 2>/dev/null || true
        sleep 1
    done
    # Deepest mount first; a busy one is detached lazily.
    for _ in 1 2 3; do
        mapfile -t m < <(findmnt -rn -o TARGET | awk -v r="$root" 'index($0, r "/") == 1 || $0 == r' | sort -r)
        ((${#m[@]})) || break
        for t in "${m[@]}"; do
            umount "$t" 2>/dev/null || umount -l "$t" 2>/dev/null || true
        done
    done
    if findmnt -rn -o TARGET | awk -v r="$root" 'index($0, r "/") == 1 {f=1} END {exit !f}'; then
        rootfs_log "mounts remain below $root; not deleting it"
        return 1
    fi
    rm -rf --one-file-system "$root"
}
