#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
#
# Builds what the iommufd rig boots, each cached outside the clone under
# $CACHE/<name>-<key>, the key being a hash of everything that goes into it:
#
#   qemu    L0: the patched QEMU 10.2.2 that tests/e2e/linux-boot.sh builds
#           (VSMMU_E2E_BUILD_ONLY=1); the rig sets arm-smmuv3's x-s2fwb
#   linux   L1: Linux 7.3 (trixie-backports' linux-source-7.3) cross-built
#           for arm64 from allnoconfig plus kernel.config
#   chroot  a Debian trixie chroot with trixie-backports' rustc/cargo and
#           the arm64 std, for cross-building vsmmud (the rustup toolchain
#           here has no aarch64 std)
#   busybox busybox-static:arm64 for L1's /init
#
# and, every run (incrementally, target dir in the cache), the aarch64
# vsmmud and vsmmu-rig-vmm, static.
#
# Sourced by iommufd-nested.sh; each build_* function prints the path it
# produced on stdout as its last line.

RIG_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$RIG_DIR/../../.." && pwd)
CACHE=${VSMMU_RIG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vsmmu-rig}
# A new machine has none yet: the QEMU step logs into it first.
mkdir -p "$CACHE"
JOBS=${VSMMU_RIG_JOBS:-$(nproc)}
DEBIAN_MIRROR=${VSMMU_RIG_MIRROR:-http://deb.debian.org/debian}

LINUX_PKG=linux-source-7.3
RUST_SUITE=trixie-backports

log() { printf '[rig %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

key_of() { cat "$@" | sha256sum | cut -c1-16; }

# A private apt configuration over trixie and trixie-backports: used only
# for `apt-get download`, never as the system's sources.
apt_private() {
    local d=$CACHE/dl/apt
    mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
    if [[ ! -f $d/sources.list ]]; then
        cat >"$d/sources.list" <<EOF
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $DEBIAN_MIRROR trixie-backports main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $DEBIAN_MIRROR trixie main
EOF
    fi
    local opts=(-o "Dir::Etc::sourcelist=$d/sources.list" -o Dir::Etc::sourceparts=/dev/null
        -o "Dir::State::Lists=$d/lists" -o "Dir::Cache=$d/cache" -o APT::Sandbox::User=root
        -o APT::Architectures::=amd64 -o APT::Architectures::=arm64)
    if [[ ! -f $d/lists/.updated-amd64-arm64 ]]; then
        apt-get "${opts[@]}" update -qq >&2 && touch "$d/lists/.updated-amd64-arm64"
    fi
    apt-get "${opts[@]}" "$@"
}

host_deps() {
    local need=()
    command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
    command -v debootstrap >/dev/null || need+=(debootstrap)
    command -v dtc >/dev/null || need+=(device-tree-compiler)
    command -v ninja >/dev/null || need+=(ninja-build)
    command -v flex >/dev/null || need+=(flex)
    command -v bison >/dev/null || need+=(bison)
    command -v bc >/dev/null || need+=(bc)
    command -v cpio >/dev/null || need+=(cpio)
    dpkg -s libglib2.0-dev libpixman-1-dev libfdt-dev zlib1g-dev python3-venv libelf-dev libssl-dev \
        >/dev/null 2>&1 || need+=(libglib2.0-dev libpixman-1-dev libfdt-dev zlib1g-dev python3-venv libelf-dev libssl-dev)
    ((${#need[@]} == 0)) && return 0
    [[ ${VSMMU_RIG_NO_INSTALL:-0} == 1 ]] && die "missing build dependencies: ${need[*]}"
    log "installing ${need[*]}"
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
}

# L0 QEMU: the one tests/e2e/linux-boot.sh builds (QEMU 10.2.2 with
# contrib/qemu/*.patch, cached by their hash); the rig needs only
# arm-smmuv3's x-s2fwb from it.
build_qemu() {
    local out
    out=$(VSMMU_E2E_BUILD_ONLY=1 "$REPO/tests/e2e/linux-boot.sh" </dev/null 2>&1 | tee "$CACHE/qemu-build.log" |
        sed -n 's/^QEMU=//p' | tail -1) || true
    [[ -x $out ]] || { tail -20 "$CACHE/qemu-build.log" >&2; die "no QEMU from linux-boot.sh"; }
    echo "$out"
}

build_linux() {
    local key out deb
    key=$(echo "$LINUX_PKG" | key_of - "$RIG_DIR/kernel.config" <(declare -f build_linux))
    out=$CACHE/linux-$key
    if [[ ! -f $out/Image ]]; then
        log "building Linux 7.3 for arm64 (first run only: ~10-20 minutes on 2 cores)"
        mkdir -p "$CACHE/dl"
        deb=$(ls "$CACHE"/dl/${LINUX_PKG}_*_all.deb 2>/dev/null | tail -1 || true)
        if [[ -z $deb ]]; then
            (cd "$CACHE/dl" && apt_private download "$LINUX_PKG" >&2)
            deb=$(ls "$CACHE"/dl/${LINUX_PKG}_*_all.deb | tail -1)
        fi
        local b=$CACHE/build-linux
        rm -rf "$b" && mkdir -p "$b/x"
        dpkg -x "$deb" "$b/x"
        tar -C "$b" -xJf "$b/x/usr/src/$LINUX_PKG.tar.xz"
        rm -rf "$b/x"
        local src=$b/$LINUX_PKG
        local mk=(make -C "$src" ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- -j"$JOBS")
        "${mk[@]}" allnoconfig >&2
        "$src/scripts/kconfig/merge_config.sh" -m -O "$src" "$src/.config" "$RIG_DIR/kernel.config" >&2
        "${mk[@]}" olddefconfig >&2
        # Every requested option must have survived (a missing dependency
        # would silently drop it).
        local opt val
        while IFS='=' read -r opt val; do
            [[ $opt == CONFIG_* ]] || continue
            grep -qx "$opt=$val" "$src/.config" || die "kernel option $opt=$val did not stick"
        done <"$RIG_DIR/kernel.config"
        "${mk[@]}" Image >&2 || die "kernel build failed"
        mkdir -p "$out.tmp"
        cp "$src/arch/arm64/boot/Image" "$src/.config" "$out.tmp/"
        rm -rf "$out" && mv "$out.tmp" "$out"
        rm -rf "$b"
    fi
    echo "$out/Image"
}

build_busybox() {
    local out=$CACHE/busybox-arm64
    if [[ ! -x $out/busybox ]]; then
        local b=$CACHE/build-busybox
        rm -rf "$b" && mkdir -p "$b"
        (cd "$b" && apt_private download busybox-static:arm64 >&2)
        dpkg -x "$b"/busybox-static_*.deb "$b/x"
        mkdir -p "$out.tmp"
        cp "$b/x/usr/bin/busybox" "$out.tmp/" 2>/dev/null || cp "$b/x/bin/busybox" "$out.tmp/" ||
            die "no busybox in busybox-static:arm64"
        rm -rf "$out" && mv "$out.tmp" "$out" && rm -rf "$b"
    fi
    echo "$out/busybox"
}

CHROOT_PKGS="rustc cargo libstd-rust-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross"

build_chroot() {
    local key out
    key=$(echo "trixie $RUST_SUITE $CHROOT_PKGS" | key_of - <(declare -f build_chroot))
    out=$CACHE/chroot-$key
    if [[ ! -x $out/usr/bin/cargo ]]; then
        log "creating the trixie chroot with $RUST_SUITE's Rust (first run only: ~2 minutes)"
        rm -rf "$out"
        debootstrap --variant=minbase trixie "$out" "$DEBIAN_MIRROR" >&2 || die "debootstrap failed"
        echo "deb $DEBIAN_MIRROR $RUST_SUITE main" >"$out/etc/apt/sources.list.d/backports.list"
        chroot "$out" dpkg --add-architecture arm64
        chroot "$out" apt-get update -qq >&2
        # shellcheck disable=SC2086
        chroot "$out" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            -t "$RUST_SUITE" $CHROOT_PKGS >&2 || die "chroot packages failed"
        chroot "$out" apt-get clean
    fi
    echo "$out"
}

# Cross-builds vsmmud and vsmmu-rig-vmm for aarch64 (static) inside the
# chroot, from a copy of the repository's sources; the target dir persists
# in the cache so reruns are incremental.
build_vsmmu_aarch64() {
    local root=$1 stage
    stage=$root/build/vsmmu
    mkdir -p "$stage/src" "$stage/target" "$stage/cargo-home"
    # Vendor the registry crates through the host cargo (the chroot has no
    # crates.io config of its own; this keeps one Cargo.lock).
    rm -rf "$stage/src" && mkdir -p "$stage/src"
    (cd "$REPO" && tar --exclude=./target --exclude=./.git --exclude=./fuzz -cf - .) | tar -C "$stage/src" -xf -
    (cd "$stage/src" && cargo vendor --locked --versioned-dirs -q "$stage/vendor" >/dev/null) ||
        die "cargo vendor failed"
    mkdir -p "$stage/src/.cargo"
    cat >"$stage/src/.cargo/config.toml" <<'EOF'
[source.crates-io]
replace-with = "vendored-sources"

[source.vendored-sources]
directory = "/build/vsmmu/vendor"

[target.aarch64-unknown-linux-gnu]
linker = "aarch64-linux-gnu-gcc"
rustflags = ["-C", "target-feature=+crt-static"]
EOF
    log "cross-building vsmmud and vsmmu-rig-vmm for aarch64"
    chroot "$root" env -i PATH=/usr/bin:/bin HOME=/build CARGO_HOME=/build/vsmmu/cargo-home \
        CARGO_TARGET_DIR=/build/vsmmu/target \
        sh -c 'cd /build/vsmmu/src && cargo build --offline --release --target aarch64-unknown-linux-gnu \
            -p vsmmu-server --bin vsmmud -p vsmmu-tests --bin vsmmu-rig-vmm' >&2 ||
        die "aarch64 build failed"
    echo "$stage/target/aarch64-unknown-linux-gnu/release"
}
