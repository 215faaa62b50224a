#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
#
# End to end: a real Linux guest's arm-smmu-v3 driver probes an SMMUv3 that
# vsmmud emulates, through QEMU 10.2 patched with contrib/qemu/*.patch
# (-device arm-smmuv3-remote,primary-bus=pcie.0,vsmmud=PATH|socket=PATH).
#
#   1. builds vsmmud and libvsmmu.a (cargo, release);
#   2. builds qemu-system-aarch64 from QEMU 10.2.2 (Debian's +ds source
#      tarball, from the archive's pool) with the patches, cached outside
#      the clone under
#      ${XDG_CACHE_HOME:-$HOME/.cache}/vsmmu-qemu/<sha256 of the patches
#      and of the configure options>,
#      so a rerun with unchanged patches only relinks (if the library changed);
#   3. downloads Debian's arm64 kernel (linux-image-arm64's current
#      linux-image-6.1.0-*-arm64, and its virtio-pci and virtio-blk modules)
#      and busybox-static:arm64, cached likewise, and packs an initramfs
#      whose /init prints what the guest saw of the SMMU and powers off;
#   4. boots it seven times under TCG (-kernel; device tree unless said):
#        builtin  -device arm-smmuv3 (QEMU's own model), for reference;
#        spawn    -device arm-smmuv3-remote,vsmmud=..., QEMU starts vsmmud
#                 on a socketpair;
#                 these two also have QEMU's edu device at 01:00.1, behind
#                 the root port with no function 0 there, so Linux never
#                 enumerates it nor configures its StreamID (0x101, in a
#                 level-1 descriptor with Span 0); /init programs it
#                 through /dev/mem (ECAM; iomem=relaxed) to DMA 4 bytes;
#        socket   -device arm-smmuv3-remote,socket=..., vsmmud started here
#                 on a Unix socket;
#        acpi     as spawn, but UEFI (qemu-efi-aarch64) and acpi=force: the
#                 driver finds the SMMU through the IORT;
#        migrate  the dma boot's guest live-migrated to a second QEMU (its
#                 own vsmmud) after using its disk; it reads the disk again
#                 on the destination;
#        multi    as acpi, with a second root complex (pxb-pcie, bus 0x80)
#                 and a second arm-smmuv3-remote for it, its own vsmmud;
#        dma      as spawn, but with translated DMA domains (the four boots
#                 above use iommu.passthrough=1) and a virtio-blk-pci disk
#                 (iommu_platform=on) behind the root port: its DMA and the
#                 MSIs are translated by vsmmud (VSMMU_TRANSLATE) through
#                 the guest's stage-1 tables; /init checks that the disk
#                 holds the pattern the script wrote, writes another one
#                 (O_DIRECT, fsync) and reads it back;
#      vsmmud runs with its default seccomp mode, kill;
#   5. checks, for the four remote boots, the guest console (driver probe
#      line, cmdq/evtq allocation, wired interrupts, a PCI device added to an
#      IOMMU group, no SMMU error), vsmmud's seccomp status, and vsmmud's
#      counters (VSMMU_GET_STATS, printed by QEMU at exit through the
#      smmuv3_remote_stats trace event): the commands of Linux's reset
#      (CFGI_ALL, TLBI_NSNH_ALL, each followed by CMD_SYNC) and of the
#      device attach (CFGI_STE + CMD_SYNC) were consumed, without errors;
#      for dma also: the disk's content as the guest read it and as the host
#      finds it afterwards, the root port's MSI delivered (no pciehp
#      timeout), translations counted and no translation fault;
#      for builtin and spawn: edu's DMA ran and the guest's driver printed
#      exactly one event, C_BAD_STREAMID (0x02) of StreamID 0x101 (first
#      word 0x0000010100000002); for spawn also QEMU's abort on vsmmud's
#      verdict (TRANSLATE status 0x2) and vsmmud's counters (one model
#      event, one translation fault).
#
# Exits 0 only if every check passed; prints the time of each step and
# "N passed, N failed" last.
#
# Needs: Debian bookworm (apt), cargo, and the QEMU build dependencies
# (installed with apt-get when running as root and missing; set
# VSMMU_E2E_NO_INSTALL=1 to forbid that), meson from PyPI in a venv (QEMU
# 10.2 needs meson >= 1.5). The first run builds QEMU: about 10-15 minutes
# on 2 cores; later runs take well under a minute.
#
# Environment:
#   CARGO_TARGET_DIR           cargo's target directory (default: <repo>/target)
#   VSMMU_E2E_CACHE            cache root (default: $XDG_CACHE_HOME/vsmmu-qemu)
#   VSMMU_E2E_BOOT_TIMEOUT     seconds per guest boot (default: 180)
#   VSMMU_E2E_JOBS             parallel QEMU compile jobs (default: nproc)
#   VSMMU_E2E_NO_INSTALL=1     never run apt-get install / update
#   VSMMU_E2E_KEEP=1           keep the work directory (logs) afterwards
#   VSMMU_E2E_BENCH_SECS       seconds per guest benchmark phase (default: 2)
#   VSMMU_E2E_BENCH_ROUNDS     rounds of the benchmark's boots (default: 3)
#   VSMMU_E2E_BUILD_ONLY=1     build (or find) the patched QEMU, print
#                              QEMU=<path> and exit (the iommufd rig uses it)

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PATCH_DIR=$REPO/contrib/qemu
CACHE_ROOT=${VSMMU_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vsmmu-qemu}
BOOT_TIMEOUT=${VSMMU_E2E_BOOT_TIMEOUT:-180}
JOBS=${VSMMU_E2E_JOBS:-$(nproc)}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vsmmu-e2e.XXXXXX")
VSMMUD_SOCKET_PID=
BOOT_PID=
cleanup() {
    if [[ -n $BOOT_PID ]] && kill -0 "$BOOT_PID" 2>/dev/null; then
        kill -TERM "$BOOT_PID" 2>/dev/null || true
        wait "$BOOT_PID" 2>/dev/null || true
    fi
    if [[ -n $VSMMUD_SOCKET_PID ]] && kill -0 "$VSMMUD_SOCKET_PID" 2>/dev/null; then
        kill -TERM "$VSMMUD_SOCKET_PID" 2>/dev/null || true
        wait "$VSMMUD_SOCKET_PID" 2>/dev/null || true
    fi
    if [[ ${VSMMU_E2E_KEEP:-0} == 1 ]]; then
        echo "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# ---------------------------------------------------------------- reporting

PASSED=0
FAILED=0
TIMINGS=()
T_START=$(date +%s.%N)

log() { printf '[%6.1fs] %s\n' "$(elapsed "$T_START")" "$*"; }
elapsed() { awk -v a="$(date +%s.%N)" -v b="$1" 'BEGIN { printf "%.1f", a - b }'; }
die() { log "ERROR: $*"; echo "0 passed, 1 failed"; exit 1; }

# timed NAME CMD...: runs CMD (errexit applies inside), records its
# duration under NAME.
timed() {
    local name=$1 t0
    shift
    t0=$(date +%s.%N)
    "$@"
    TIMINGS+=("$(printf '%-28s %7.1f s' "$name" "$(elapsed "$t0")")")
}

check() { # check DESCRIPTION CONDITION-COMMAND...
    local what=$1
    shift
    if "$@"; then
        PASSED=$((PASSED + 1))
        echo "  PASS  $what"
    else
        FAILED=$((FAILED + 1))
        echo "  FAIL  $what"
    fi
}

# ------------------------------------------------------------ prerequisites

UEFI=/usr/share/qemu-efi-aarch64/QEMU_EFI.fd
SUDO_OK=0
[[ $(id -u) == 0 && ${VSMMU_E2E_NO_INSTALL:-0} != 1 ]] && SUDO_OK=1
APT_UPDATED=0
apt_update() {
    if [[ $APT_UPDATED == 0 ]]; then
        log "apt-get update"
        apt-get update -qq >"$WORK/apt-update.log" 2>&1 || die "apt-get update failed (see $WORK/apt-update.log)"
        APT_UPDATED=1
    fi
}

prerequisites() {
    local missing=() pkgs=()
    command -v cargo >/dev/null || die "cargo not found"
    local -A need=(
        [ninja]=ninja-build [meson]=meson [flex]=flex [bison]=bison
        [pkg-config]=pkg-config [cpio]=cpio [curl]=curl
        [gzip]=gzip [xz]=xz-utils [patch]=patch [python3]=python3
        [cc]=gcc [make]=make [aarch64-linux-gnu-gcc]=gcc-aarch64-linux-gnu
    )
    local cmd
    for cmd in "${!need[@]}"; do
        command -v "$cmd" >/dev/null || pkgs+=("${need[$cmd]}")
    done
    pkg-config --exists glib-2.0 2>/dev/null || pkgs+=(libglib2.0-dev)
    pkg-config --exists pixman-1 2>/dev/null || pkgs+=(libpixman-1-dev)
    [[ -e /usr/include/libfdt.h ]] || pkgs+=(libfdt-dev)
    # The guest benchmark (tests/e2e/guest/blkbench.c), static for aarch64.
    [[ -e /usr/aarch64-linux-gnu/lib/libc.a ]] || pkgs+=(libc6-dev-arm64-cross)
    [[ -e $UEFI ]] || pkgs+=(qemu-efi-aarch64)
    python3 -c 'import ensurepip, venv' 2>/dev/null || pkgs+=(python3-venv)
    if ((${#pkgs[@]})); then
        [[ $SUDO_OK == 1 ]] || die "missing packages: ${pkgs[*]} (apt-get install them)"
        apt_update
        log "apt-get install ${pkgs[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >"$WORK/apt-install.log" 2>&1 ||
            die "apt-get install failed (see $WORK/apt-install.log)"
    fi
    local out
    # arm64 binary packages (the guest's kernel and busybox).
    out=$(dpkg --print-foreign-architectures)
    if ! grep -qx arm64 <<<"$out"; then
        missing+=(arm64)
    fi
    if ((${#missing[@]})); then
        [[ $SUDO_OK == 1 ]] || die "apt needs: ${missing[*]} (dpkg --add-architecture arm64)"
        if [[ " ${missing[*]} " == *" arm64 "* ]]; then
            log "dpkg --add-architecture arm64"
            dpkg --add-architecture arm64
        fi
        APT_UPDATED=0
        apt_update
    fi
    # arm64 lists present (the architecture may have been added without an update).
    out=$(apt-cache policy linux-image-arm64:arm64 2>/dev/null) || true
    if ! grep -q 'Candidate: [0-9]' <<<"$out"; then
        [[ $SUDO_OK == 1 ]] || die "no arm64 package lists: run apt-get update"
        APT_UPDATED=0
        apt_update
    fi
}

# -------------------------------------------------------------------- cargo

build_rust() {
    log "cargo build -p vsmmu-capi -p vsmmu-server --release (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    (cd "$REPO" && cargo build -q -p vsmmu-capi -p vsmmu-server --release) ||
        die "cargo build failed"
    VSMMUD=$CARGO_TARGET_DIR/release/vsmmud
    LIBVSMMU=$CARGO_TARGET_DIR/release/libvsmmu.a
    [[ -x $VSMMUD && -f $LIBVSMMU ]] || die "missing $VSMMUD or $LIBVSMMU"
}

# --------------------------------------------------------------------- QEMU

# Copies $1 to $2 unless identical (keeps the mtime, so ninja does nothing).
install_if_changed() {
    if ! cmp -s "$1" "$2"; then
        cp "$1" "$2.tmp" && mv "$2.tmp" "$2"
        return 0
    fi
    return 1
}

# QEMU 10.2.2: Debian's +ds tarball from the archive's pool (the newest
# QEMU source the archive serves).
QEMU_TARBALL=qemu_10.2.2+ds.orig.tar.xz
QEMU_URL=${VSMMU_E2E_QEMU_URL:-http://deb.debian.org/debian/pool/main/q/qemu/$QEMU_TARBALL}

# QEMU's default aarch64 devices: with --without-default-devices, 10.2.2's
# virt (ACPI_CXL) fails to link hw/acpi/cxl.c without CONFIG_CXL, which
# has no prompt to set it by.
QEMU_CONFIGURE=(
    --target-list=aarch64-softmmu --disable-docs --disable-tools --disable-rust
    --without-default-features --enable-fdt=system --enable-tcg --disable-install-blobs
)

build_qemu() {
    local patches=("$PATCH_DIR"/*.patch) hash qdir src
    [[ -f ${patches[0]} ]] || die "no patches in $PATCH_DIR"
    # The cache key: the source, the patches, and how they are built.
    hash=$({
        echo "$QEMU_TARBALL"
        cat "${patches[@]}"
        printf '%s\n' "${QEMU_CONFIGURE[@]}"
    } | sha256sum | cut -d' ' -f1)
    qdir=$CACHE_ROOT/$hash
    QEMU=$qdir/build/qemu-system-aarch64
    mkdir -p "$CACHE_ROOT"
    # A run holds a shared lock on its build for its whole life, so that a
    # concurrent run with other patches (another clone, CI) does not delete
    # it as stale.
    exec {QEMU_LOCK_FD}>"$qdir.lock"
    flock -s "$QEMU_LOCK_FD"

    if [[ ! -f $qdir/.built ]]; then
        log "building QEMU for patch set ${hash:0:12} in $qdir (first run: 10-20 minutes)"
        rm -rf "$qdir"
        mkdir -p "$qdir/vsmmu/include" "$qdir/vsmmu/lib" "$qdir/build"
        # Older patch sets' builds are of no further use, unless a run is
        # using one now.
        local old
        for old in "$CACHE_ROOT"/*; do
            [[ -d $old && ${old##*/} =~ ^[0-9a-f]{64}$ && ${old##*/} != "$hash" ]] || continue
            flock -n -x "$old.lock" rm -rf "$old" "$old.lock" 2>/dev/null || true
        done
        cp "$REPO/client-shim/capi/include/vsmmu.h" "$qdir/vsmmu/include/"
        cp "$LIBVSMMU" "$qdir/vsmmu/lib/"
        if [[ ! -f $CACHE_ROOT/$QEMU_TARBALL ]]; then
            curl -sSfL -o "$CACHE_ROOT/$QEMU_TARBALL.tmp" "$QEMU_URL" ||
                die "cannot download $QEMU_URL"
            mv "$CACHE_ROOT/$QEMU_TARBALL.tmp" "$CACHE_ROOT/$QEMU_TARBALL"
        fi
        tar -C "$qdir" -xJf "$CACHE_ROOT/$QEMU_TARBALL" || die "cannot unpack $QEMU_TARBALL"
        src=$(find "$qdir" -mindepth 1 -maxdepth 1 -type d -name 'qemu-*' | head -1)
        [[ -n $src ]] || die "$QEMU_TARBALL unpacked nothing"
        local p
        for p in "${patches[@]}"; do
            patch -d "$src" -p1 --forward --batch --quiet <"$p" || die "$(basename "$p") does not apply to $(basename "$src")"
        done
        # The +ds tarball ships no firmware blobs: do not try to unpack them.
        sed -i 's/^    unpack_edk2_blobs = bzip2.found()/    unpack_edk2_blobs = false/' "$src/meson.build"
        # QEMU 10.2 needs meson >= 1.5 (bookworm has 1.0): from PyPI.
        python3 -m venv "$qdir/venv" >"$qdir/venv.log" 2>&1 &&
            "$qdir/venv/bin/pip" install -q 'meson==1.9.0' 'pycotap==1.3.1' >>"$qdir/venv.log" 2>&1 ||
            die "cannot install meson in a venv (see $qdir/venv.log)"
        (cd "$qdir/build" && "$src/configure" --python="$qdir/venv/bin/python3" "${QEMU_CONFIGURE[@]}" \
            --enable-vsmmu --vsmmu-libdir="$qdir/vsmmu/lib" \
            --vsmmu-includedir="$qdir/vsmmu/include") >"$qdir/configure.log" 2>&1 ||
            die "QEMU configure failed (see $qdir/configure.log)"
        ninja -C "$qdir/build" -j "$JOBS" qemu-system-aarch64 >"$qdir/build.log" 2>&1 ||
            { tail -30 "$qdir/build.log"; die "QEMU build failed (see $qdir/build.log)"; }
        touch "$qdir/.built"
    else
        log "QEMU for patch set ${hash:0:12} is cached in $qdir"
        # The library or header may have changed since: ninja relinks (or
        # recompiles the device) only then.
        install_if_changed "$REPO/client-shim/capi/include/vsmmu.h" "$qdir/vsmmu/include/vsmmu.h" || true
        install_if_changed "$LIBVSMMU" "$qdir/vsmmu/lib/libvsmmu.a" || true
        ninja -C "$qdir/build" -j "$JOBS" qemu-system-aarch64 >"$qdir/rebuild.log" 2>&1 ||
            { tail -30 "$qdir/rebuild.log"; die "QEMU relink failed (see $qdir/rebuild.log)"; }
        if grep -q 'Linking target' "$qdir/rebuild.log"; then
            log "relinked (libvsmmu.a changed)"
        fi
    fi
    [[ -x $QEMU ]] || die "no $QEMU"
    local devs
    devs=$("$QEMU" -device help 2>&1) || true
    grep -q '"arm-smmuv3-remote"' <<<"$devs" || die "$QEMU has no arm-smmuv3-remote"
}

# -------------------------------------------------------------------- guest

fetch_guest() {
    local kpkg kver gdir
    kpkg=$(apt-cache depends linux-image-arm64:arm64 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-6\.[0-9.]*-[0-9]*-arm64\)\(:arm64\)\?$/\1/p' | head -1)
    [[ -n $kpkg ]] || die "cannot resolve linux-image-arm64:arm64 to a kernel package"
    kver=$(apt-cache policy "$kpkg:arm64" | sed -n 's/^ *Candidate: //p')
    gdir=$CACHE_ROOT/guest/${kpkg}_$kver
    # The modules /init loads for the dma boot, in load order (Debian builds
    # them as modules; none needs another beyond this list).
    local modules=(virtio/virtio_pci_legacy_dev virtio/virtio_pci_modern_dev
        virtio/virtio_pci block/virtio_blk) m ko
    if [[ ! -f $gdir/.done || ! -f $gdir/modules/virtio_blk.ko ]]; then
        log "downloading $kpkg:arm64 $kver and busybox-static:arm64"
        rm -rf "$gdir" && mkdir -p "$gdir/dl"
        (cd "$gdir/dl" && apt-get download -qq "$kpkg:arm64" busybox-static:arm64) >"$gdir/download.log" 2>&1 ||
            die "apt-get download failed (see $gdir/download.log)"
        dpkg-deb -x "$gdir"/dl/linux-image-*.deb "$gdir/x"
        dpkg-deb -x "$gdir"/dl/busybox-static_*.deb "$gdir/x"
        cp "$gdir"/x/boot/vmlinuz-* "$gdir/Image"
        grep -h '^CONFIG_ARM_SMMU_V3=' "$gdir"/x/boot/config-* >"$gdir/smmu-config" || true
        cp "$gdir/x/bin/busybox" "$gdir/busybox"
        mkdir -p "$gdir/modules"
        for m in "${modules[@]}"; do
            ko=$(find "$gdir"/x/lib/modules/*/kernel/drivers "$gdir"/x/usr/lib/modules/*/kernel/drivers \
                -path "*/drivers/$m.ko" 2>/dev/null | head -1) || true
            [[ -n $ko ]] || die "$kpkg has no $m.ko"
            cp "$ko" "$gdir/modules/"
        done
        rm -rf "$gdir/x" "$gdir/dl"
        touch "$gdir/.done"
        # Older kernels are of no further use.
        find "$CACHE_ROOT/guest" -mindepth 1 -maxdepth 1 -type d ! -path "$gdir" -exec rm -rf {} + 2>/dev/null || true
    else
        log "guest kernel $kpkg $kver is cached"
    fi
    grep -q '=y' "$gdir/smmu-config" || die "$kpkg does not have CONFIG_ARM_SMMU_V3=y"
    KERNEL=$gdir/Image
    KERNEL_NAME="$kpkg $kver"

    # The dma boot's disk: 2 MiB of 64-byte lines, each numbered, so a
    # misplaced page or a stale one cannot match. DISK_IMAGE starts as
    # DISK_INITIAL (the initramfs has a copy to compare with); the guest
    # writes DISK_NEW (idem) over it.
    DISK_INITIAL=$WORK/disk-initial.bin
    DISK_NEW=$WORK/disk-new.bin
    DISK_IMAGE=$WORK/disk.img
    disk_pattern() {
        awk -v what="$1" 'BEGIN { for (i = 0; i < 32768; i++) printf "%-63s\n", sprintf("vsmmu e2e: %s, line %d", what, i) }'
    }
    disk_pattern "initial disk content" >"$DISK_INITIAL"
    disk_pattern "written by the guest" >"$DISK_NEW"

    local root=$WORK/initramfs
    mkdir -p "$root/bin" "$root/proc" "$root/sys" "$root/dev" "$root/lib"
    cp "$gdir/busybox" "$root/bin/busybox"
    for m in "${modules[@]}"; do
        cp "$gdir/modules/${m##*/}.ko" "$root/lib/"
    done
    cp "$DISK_INITIAL" "$root/expected"
    cp "$DISK_NEW" "$root/new"
    aarch64-linux-gnu-gcc -static -O2 -Wall -Wextra -Werror -o "$root/bin/blkbench" \
        "$REPO/tests/e2e/guest/blkbench.c" || die "cannot build blkbench"
    cat >"$root/init" <<'EOF'
#!/bin/busybox sh
bb=/bin/busybox
$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
echo "E2E: init"
# disk WHAT: virtio-blk's modules loaded, /dev/vda awaited (5 s at most).
disk() {
    $bb mount -t devtmpfs devtmpfs /dev
    for m in virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk; do
        $bb insmod /lib/$m.ko || echo "E2E: $1: insmod $m failed"
    done
    for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
        [ -b /dev/vda ] && break
        $bb sleep 0.25
    done
}
# bench boots: the guest benchmark on a scratch virtio-blk disk.
if $bb grep -q 'e2e\.bench' /proc/cmdline; then
    disk bench
    secs=$($bb sed -n 's/.*e2e\.bench=\([0-9.]*\).*/\1/p' /proc/cmdline)
    /bin/blkbench /dev/vda "${secs:-2}" || echo "E2E: bench: blkbench failed"
    $bb poweroff -f
fi
# dma boot: a virtio-blk disk holding /expected; write /new over it.
if $bb grep -q 'e2e\.disk' /proc/cmdline; then
    disk disk
    echo "E2E: disk: vda $($bb cat /sys/block/vda/size 2>&1) sectors"
    echo "E2E: disk: read md5 $($bb dd if=/dev/vda bs=64k 2>/dev/null | $bb md5sum)"
    if $bb cmp /dev/vda /expected; then
        echo "E2E: disk: read matches"
    else
        echo "E2E: disk: read MISMATCH"
    fi
    $bb dd if=/new of=/dev/vda bs=64k oflag=direct conv=fsync 2>&1 | $bb tail -1
    $bb sync
    if $bb dd if=/dev/vda bs=64k iflag=direct 2>/dev/null | $bb cmp - /new; then
        echo "E2E: disk: reread matches"
    else
        echo "E2E: disk: reread MISMATCH"
    fi
    # migrate boot: the host migrates the VM now; the read after it goes
    # through the destination's vsmmud, which has only the state it got.
    if $bb grep -q 'e2e\.migrate' /proc/cmdline; then
        echo "E2E: ready to migrate"
        $bb sleep 12
        echo 3 >/proc/sys/vm/drop_caches 2>/dev/null
        if $bb dd if=/dev/vda bs=64k iflag=direct 2>/dev/null | $bb cmp - /new; then
            echo "E2E: after migration: reread matches"
        else
            echo "E2E: after migration: reread MISMATCH"
        fi
    fi
fi
# builtin and spawn boots: QEMU's edu at function 1 behind the root port.
# Linux never enumerates it (no function 0), so its StreamID has no STE:
# program it by hand through ECAM and make it DMA 4 bytes, one transaction.
# (/dev/mem: Debian's kernel maps no busy resource, such as the ECAM,
# without iomem=relaxed on these boots' kernel line.)
if $bb grep -q 'e2e\.edu' /proc/cmdline; then
    $bb mount -t devtmpfs devtmpfs /dev
    echo "E2E: edu: Linux's PCI devices: $(echo $($bb ls /sys/bus/pci/devices))"
    ecam=0x$($bb sed -n 's/^ *\([0-9a-f]*\)-[0-9a-f]* : PCI ECAM$/\1/p' /proc/iomem)
    cfg() { printf '0x%x' $((ecam + ($1 << 20) + ($2 << 15) + ($3 << 12) + $4)); }
    rd() { printf '0x%x' $($bb devmem "$@"); }
    # The bus Linux gave the root port (00:01.0). The port is not
    # hotplug-capable in these boots, so Linux reserved no memory window
    # behind it: open one, 1 MiB near the top of the 32-bit MMIO window
    # (free: Linux allocates from the bottom), for BAR0.
    bus=$((($(rd $(cfg 0 1 0 0x18) 32) >> 8) & 0xff))
    bar=0x3ee00000
    $bb devmem $(cfg 0 1 0 0x20) 32 $(((bar >> 16) * 0x10001))
    echo "E2E: edu: ECAM $ecam, 0000:$(printf %02x $bus):00.1 ID $(rd $(cfg $bus 0 1 0) 32)"
    $bb devmem $(cfg $bus 0 1 0x10) 32 $bar
    # Memory space and bus master: without the latter QEMU drops the DMA.
    $bb devmem $(cfg $bus 0 1 4) 16 6
    bar0=$(rd $(cfg $bus 0 1 0x10) 32)
    echo "E2E: edu: BAR0 $bar0, identification $(rd $bar0 32)"
    # From edu's buffer (device address 0x40000) to IOVA 0xf000000 (edu
    # masks addresses to 28 bits; a hole in virt's memory map, should the
    # write get through); start, direction edu -> RAM.
    $bb devmem $((bar0 + 0x80)) 64 0x40000
    $bb devmem $((bar0 + 0x88)) 64 0xf000000
    $bb devmem $((bar0 + 0x90)) 64 4
    $bb devmem $((bar0 + 0x98)) 64 3
    # edu runs the DMA from a timer 100 ms later (then clears bit 0), and
    # the event follows at once: wait for it, 2 s at most.
    for i in $($bb seq 40); do
        $bb dmesg | $bb grep -q 'arm-smmu-v3 .*: event 0x' && break
        $bb sleep 0.05
    done
    echo "E2E: edu: DMA command register: $(rd $((bar0 + 0x98)) 64)"
fi
$bb dmesg | $bb grep -i -e smmu -e 'iommu group' -e 'domain type' -e pciehp -e virtio
echo "E2E: interrupts"
$bb grep -i -e smmu -e pciehp -e virtio /proc/interrupts
echo "E2E: iommus $($bb ls /sys/class/iommu)"
echo "E2E: done"
$bb poweroff -f
EOF
    chmod +x "$root/init"
    (cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$WORK/initramfs.gz"
    INITRD=$WORK/initramfs.gz
}

# ------------------------------------------------------------------- boots

# boot NAME SMMU-DEVICE KERNEL-ARGS [QEMU ARGS...]: console
# to $WORK/NAME.out, QEMU's and vsmmud's stderr to $WORK/NAME.err, exit code
# to $WORK/NAME.rc. While the guest runs, the Seccomp: field of
# /proc/PID/status of the vsmmud that QEMU spawned (if any) is sampled; the
# highest value seen goes to $WORK/NAME.seccomp (2 = filter mode), and its
# jail (CapEff and NoNewPrivs, last sample) to $WORK/NAME.jail.
boot() {
    local name=$1 smmu=$2 append=$3 rc=0 tpid qpid vpid mode max="" jail
    shift 3
    # The SMMU before any PCI device: devices find their DMA address space
    # (the SMMU's) when they are realized.
    timeout --kill-after=10 "$BOOT_TIMEOUT" "$QEMU" \
        -machine "virt,memory-backend=mem" \
        -object memory-backend-memfd,id=mem,share=on,size=512M \
        -cpu cortex-a57 -smp 1 -m 512M \
        -nographic -nic none -no-reboot \
        -device "$smmu" \
        -device pcie-root-port,id=rp0,chassis=1 \
        -kernel "$KERNEL" -initrd "$INITRD" \
        -append "console=ttyAMA0 panic=-1 $append" \
        "$@" </dev/null >"$WORK/$name.out" 2>"$WORK/$name.err" &
    tpid=$!
    BOOT_PID=$tpid
    # The seccomp/jail sampling below forks twice per round: the benchmark
    # boots, which check neither, look rarely, so as not to take CPU from
    # what they measure.
    local every=0.02
    [[ $name == bench-* ]] && every=1
    while kill -0 "$tpid" 2>/dev/null; do
        qpid=$(pgrep -P "$tpid" | head -1) || true
        vpid=""
        if [[ -n $qpid ]]; then
            vpid=$(pgrep -P "$qpid" -x vsmmud | head -1) || true
        fi
        if [[ -n $vpid ]]; then
            mode=$(awk '/^Seccomp:/ { print $2 }' "/proc/$vpid/status" 2>/dev/null) || true
            if [[ -n $mode ]] && [[ -z $max || $mode -gt $max ]]; then
                max=$mode
            fi
            if [[ $mode == 2 ]]; then
                # (The process may be gone by now: keep the last good sample.)
                jail=$(awk '/^CapEff:|^NoNewPrivs:/ { printf "%s%s", sep, $2; sep=" " }' \
                    "/proc/$vpid/status" 2>/dev/null) || true
                if [[ $jail == *" "* ]]; then
                    echo "$jail" >"$WORK/$name.jail"
                fi
            fi
        fi
        sleep "$every"
    done
    wait "$tpid" || rc=$?
    BOOT_PID=
    echo "$rc" >"$WORK/$name.rc"
    if [[ -n $max ]]; then
        echo "$max" >"$WORK/$name.seccomp"
    fi
}

# hmp SOCKET COMMAND: one HMP command on QEMU's monitor socket; prints
# the reply.
hmp() {
    python3 - "$1" "$2" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.settimeout(5)
def read_until_prompt():
    buf = b""
    while not buf.endswith(b"(qemu) "):
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    return buf.decode(errors="replace")
read_until_prompt()
s.sendall(sys.argv[2].encode() + b"\n")
print(read_until_prompt())
PY
}

# boot_migrate NAME: the dma boot's guest on a source QEMU, live-migrated
# (over a Unix socket) to a destination QEMU with its own vsmmud once the
# guest has used its disk; the guest reads the disk again on the
# destination. Consoles: NAME-src.out, NAME-dst.out; stderr: NAME-*.err.
boot_migrate() {
    local name=$1 src dst i st
    local common=(-machine "virt,memory-backend=mem"
        -object memory-backend-memfd,id=mem,share=on,size=512M
        -cpu cortex-a57 -smp 1 -m 512M -nographic -nic none -no-reboot
        -device "$REMOTE,vsmmud=$VSMMUD"
        -device pcie-root-port,id=rp0,chassis=1
        -kernel "$KERNEL" -initrd "$INITRD"
        -append "console=ttyAMA0 panic=-1 e2e.disk e2e.migrate"
        -drive "file=$DISK_IMAGE,format=raw,if=none,id=disk0"
        -device virtio-blk-pci,drive=disk0,bus=rp0,iommu_platform=on,disable-legacy=on
        -trace smmuv3_remote_migration -trace smmuv3_remote_stats -trace smmuv3_remote_iotlb)
    timeout --kill-after=10 "$BOOT_TIMEOUT" "$QEMU" "${common[@]}" \
        -incoming "unix:$WORK/$name.mig" </dev/null >"$WORK/$name-dst.out" 2>"$WORK/$name-dst.err" &
    dst=$!
    timeout --kill-after=10 "$BOOT_TIMEOUT" "$QEMU" "${common[@]}" \
        -monitor "unix:$WORK/$name.mon,server=on,wait=off" \
        </dev/null >"$WORK/$name-src.out" 2>"$WORK/$name-src.err" &
    src=$!
    BOOT_PID=$src
    for ((i = 0; i < BOOT_TIMEOUT * 10; i++)); do
        grep -aq '^E2E: ready to migrate' "$WORK/$name-src.out" && break
        kill -0 "$src" 2>/dev/null || break
        sleep 0.1
    done
    hmp "$WORK/$name.mon" "migrate -d unix:$WORK/$name.mig" >"$WORK/$name.hmp" 2>&1 || true
    for ((i = 0; i < 300; i++)); do
        st=$(hmp "$WORK/$name.mon" "info migrate" 2>/dev/null) || true
        grep -qE 'Status:[[:space:]]+(completed|failed|cancelled)' <<<"$st" && break
        sleep 0.1
    done
    echo "$st" >>"$WORK/$name.hmp"
    hmp "$WORK/$name.mon" quit >/dev/null 2>&1 || true
    wait "$src" || true
    BOOT_PID=$dst
    wait "$dst" && echo 0 >"$WORK/$name.rc" || echo $? >"$WORK/$name.rc"
    BOOT_PID=
}

console_line() { grep -a -m1 -E "$1" "$WORK/$2.out" | sed 's/^\[ *[0-9.]*\] //' | tr -d '\r'; }

# iotlb_of FILE: QEMU's IOTLB counters traced at exit (smmuv3_remote_iotlb)
# as HITS+MISSES, or 0+-1.
iotlb_of() {
    sed -n 's/.*smmuv3_remote_iotlb hits=\([0-9]*\) misses=\([0-9]*\).*/\1+\2/p' "$1" | tail -1 | grep . || echo 0+-1
}

stat_of() { # stat_of NAME KEY: a counter from the stats JSON
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$WORK/$1.stats" "$2" 2>/dev/null || echo -1
}

check_remote() {
    local name=$1 probe
    echo "== checks: $name"
    probe=$(console_line 'arm-smmu-v3 [^ ]+: ias [0-9]+-bit, oas [0-9]+-bit \(features 0x[0-9a-f]+\)' "$name") || true
    check "$name: QEMU exited 0 after the guest powered off" test "$(cat "$WORK/$name.rc")" = 0
    check "$name: guest init ran to the end" grep -aq '^E2E: done' "$WORK/$name.out"
    check "$name: driver probe line: ${probe:-<missing>}" test -n "$probe"
    check "$name: cmdq allocated" grep -aqE 'arm-smmu-v3 [^ ]+: allocated [0-9]+ entries for cmdq' "$WORK/$name.out"
    check "$name: evtq allocated" grep -aqE 'arm-smmu-v3 [^ ]+: allocated [0-9]+ entries for evtq' "$WORK/$name.out"
    check "$name: no SMMU error or probe failure" \
        bash -c "! grep -aiE 'arm-smmu-v3.*\\b(fail(ed|ure)?|timeout|error|abort)\\b|CMD_SYNC|probe of .*smmuv3 failed' '$WORK/$name.out'"
    check "$name: evtq and gerror interrupts requested" \
        bash -c "grep -aq 'arm-smmu-v3-evtq' '$WORK/$name.out' && grep -aq 'arm-smmu-v3-gerror' '$WORK/$name.out'"
    check "$name: IOMMU registered in sysfs (on the platform bus)" grep -aqE '^E2E: iommus smmu3\.0x0*c000000' "$WORK/$name.out"
    check "$name: PCIe root port added to an IOMMU group" grep -aqE 'pcieport 0000:00:01\.0: Adding to iommu group' "$WORK/$name.out"
    check "$name: no QEMU/vsmmud error on stderr" \
        bash -c "! grep -aE 'arm-smmuv3-remote:|seccomp: forbidden|panicked|ERROR' '$WORK/$name.err'"
    check "$name: vsmmud ran under seccomp filter (Seccomp: $(cat "$WORK/$name.seccomp" 2>/dev/null || echo ?))" \
        test "$(cat "$WORK/$name.seccomp" 2>/dev/null)" = 2
    check "$name: vsmmud jailed (CapEff NoNewPrivs: $(cat "$WORK/$name.jail" 2>/dev/null || echo ?))" \
        test "$(cat "$WORK/$name.jail" 2>/dev/null)" = "0000000000000000 1"
    sed -n 's/.*smmuv3_remote_stats \({.*}\).*/\1/p' "$WORK/$name.err" | tail -1 >"$WORK/$name.stats"
    echo "  stats: $(cat "$WORK/$name.stats")"
    # Linux's arm_smmu_device_reset(): CFGI_ALL, CMD_SYNC, TLBI_NSNH_ALL,
    # CMD_SYNC (no TLBI_EL2_ALL: vsmmud does not advertise IDR0.HYP); then
    # the root port's attach: CFGI_STE, CMD_SYNC.
    check "$name: stats: >= 6 commands consumed ($(stat_of "$name" cmds_consumed))" \
        test "$(stat_of "$name" cmds_consumed)" -ge 6
    check "$name: stats: >= 3 CMD_SYNCs completed ($(stat_of "$name" cmd_syncs))" \
        test "$(stat_of "$name" cmd_syncs)" -ge 3
    check "$name: stats: TLBI_NSNH_ALL reached the host ($(stat_of "$name" host_invalidate_entries) entries in $(stat_of "$name" host_invalidate_calls) calls)" \
        test "$(stat_of "$name" host_invalidate_entries)" -ge 1
    check "$name: stats: no command error ($(stat_of "$name" cmd_errors))" test "$(stat_of "$name" cmd_errors)" = 0
    check "$name: stats: no error reply, no failed posted write" \
        test "$(stat_of "$name" error_replies)/$(stat_of "$name" posted_errors)" = 0/0
}

# The dma boot: emulated DMA and MSIs translated by vsmmud.
check_dma() {
    local name=$1 md5_initial md5_new pciehp xl
    md5_initial=$(md5sum <"$DISK_INITIAL" | cut -d' ' -f1)
    md5_new=$(md5sum <"$DISK_NEW" | cut -d' ' -f1)
    echo "== checks: $name (emulated DMA translated by vsmmud)"
    check "$name: guest DMA domains translated (no passthrough): $(console_line 'iommu: Default domain type' "$name")" \
        grep -aq 'iommu: Default domain type: Translated' "$WORK/$name.out"
    check "$name: virtio-blk 0000:01:00.0 added to an IOMMU group" \
        grep -aqE 'virtio-pci 0000:01:00\.0: Adding to iommu group' "$WORK/$name.out"
    check "$name: its StreamID 0x100 attached to vsmmud (at its first DMA: bus 1 is numbered by the guest)" \
        grep -aqE 'smmuv3_remote_attach sid=0x100 rc=(0|-17)$' "$WORK/$name.err"
    check "$name: the guest read the disk's initial content through the SMMU (md5 $md5_initial)" \
        bash -c "grep -aq '^E2E: disk: read md5 $md5_initial' '$WORK/$name.out' && grep -aq '^E2E: disk: read matches' '$WORK/$name.out'"
    check "$name: the guest read back what it wrote (O_DIRECT)" grep -aq '^E2E: disk: reread matches' "$WORK/$name.out"
    check "$name: host: the disk image now holds the guest's pattern (md5 $md5_new)" cmp -s "$DISK_IMAGE" "$DISK_NEW"
    pciehp=$(grep -a -m1 -E '^ *[0-9]+: +[0-9]+ .*pciehp' "$WORK/$name.out" | awk '{ print $2 }') || true
    check "$name: the root port's MSI (pciehp) reached the guest through the SMMU (${pciehp:-?} interrupts)" \
        test "${pciehp:-0}" -ge 1
    check "$name: no pciehp command timeout" bash -c "! grep -aq 'pciehp: Timeout' '$WORK/$name.out'"
    check "$name: no SMMU event reported by the guest's driver" \
        bash -c "! grep -aqE 'arm-smmu-v3 [^ ]+: event 0x[0-9a-f]+ received' '$WORK/$name.out'"
    check "$name: no translation aborted in QEMU" bash -c "! grep -aq 'smmuv3_remote_translate_fault' '$WORK/$name.err'"
    # 2 MiB read, written and read again: at least one lookup per 4 KiB
    # page each time, plus the rings and MSIs; QEMU's IOTLB answers most of
    # them, vsmmud the misses (with the granules it reads ahead).
    local hm xl ahead
    hm=$(iotlb_of "$WORK/$name.err")
    xl=$(stat_of "$name" translations)
    ahead=$(stat_of "$name" translations_ahead)
    check "$name: >= 1536 lookups in QEMU's IOTLB (hits+misses $hm), the misses translated by vsmmud ($xl, $ahead read ahead)" \
        test "$((${hm/+/ + }))" -ge 1536 -a "${hm#*+}" = "$xl" -a "$xl" -ge 1 -a "$ahead" -ge 1
    check "$name: stats: no translation fault ($(stat_of "$name" translation_faults))" \
        test "$(stat_of "$name" translation_faults)" = 0
}

# events_of NAME: each SMMU event the guest's driver printed, as its type
# and the record's first word ("0x02 0x0000010100000002"), one per line.
# The console shows each kernel line twice (as printed, and in the dmesg
# /init prints): events are told apart by their timestamp.
events_of() {
    tr -d '\r' <"$WORK/$1.out" | awk '
        word { if (match($0, /0x[0-9a-f]+$/)) print key, type, substr($0, RSTART, RLENGTH); word = 0 }
        /arm-smmu-v3 [^ ]+: event 0x[0-9a-f]+ received:$/ {
            key = substr($0, 1, index($0, "]")); gsub(/ /, "", key)
            match($0, /event 0x[0-9a-f]+/); type = substr($0, RSTART + 6, RLENGTH - 6); word = 1
        }' | sort -u | cut -d' ' -f2-
}

# builtin and spawn: edu at 01:00.1, which Linux never enumerated, DMAs.
# StreamID 0x101 lies in the stream table's second level-1 descriptor,
# which Linux leaves with Span 0 (it only fills the first, for the root
# port's 0x8): C_BAD_STREAMID, whose record's first word holds the
# StreamID (bits 63:32) and the type.
check_edu() {
    local name=$1 events
    events=$(events_of "$name" | paste -sd,)
    check "$name: edu: not among Linux's PCI devices: $(console_line '^E2E: edu: Linux' "$name")" \
        test "$(console_line '^E2E: edu: Linux' "$name")" = "E2E: edu: Linux's PCI devices: 0000:00:00.0 0000:00:01.0"
    check "$name: edu: found through ECAM, BAR0 decoded: $(console_line '^E2E: edu: ECAM' "$name"); $(console_line '^E2E: edu: BAR0' "$name")" \
        test "$(console_line '^E2E: edu: ECAM' "$name")/$(console_line '^E2E: edu: BAR0' "$name")" = \
        "E2E: edu: ECAM 0x4010000000, 0000:01:00.1 ID 0x11e81234/E2E: edu: BAR0 0x3ee00000, identification 0x10000ed"
    check "$name: edu: its DMA ran: $(console_line '^E2E: edu: DMA' "$name")" \
        test "$(console_line '^E2E: edu: DMA' "$name")" = "E2E: edu: DMA command register: 0x2"
    check "$name: edu: exactly one SMMU event in the guest, C_BAD_STREAMID of StreamID 0x101 (type, first word: ${events:-none})" \
        test "$events" = "0x02 0x0000010100000002"
}

# --------------------------------------------------------------------- main

cd "$WORK"
timed "prerequisites" prerequisites
timed "cargo build (release)" build_rust
timed "QEMU build (or cache)" build_qemu
# The iommufd rig boots this same QEMU (with arm-smmuv3's x-s2fwb).
if [[ ${VSMMU_E2E_BUILD_ONLY:-0} == 1 ]]; then
    echo "QEMU=$QEMU"
    exit 0
fi
timed "guest kernel + initramfs" fetch_guest
log "QEMU: $QEMU"
log "guest kernel: $KERNEL_NAME"

# The first four boots keep the guest's DMA domains in passthrough, as with
# VFIO devices translated by the host; the fifth translates.
PT=iommu.passthrough=1

# The first two boots also have QEMU's edu at function 1 behind the root
# port (/init makes it DMA). The port without hotplug: pciehp would look
# for a function 0 there for 1.5 s, and poweroff waits for it. Nor a power
# controller: QEMU powers off a slot without function 0 at reset.
EDU=(-global pcie-root-port.hotplug=off -global pcie-root-port.power_controller_present=off
    -device edu,bus=rp0,addr=0.1)

REMOTE=arm-smmuv3-remote,primary-bus=pcie.0
log "boot 1/7: builtin (-device arm-smmuv3, QEMU's own SMMUv3), for reference"
timed "boot builtin" boot builtin arm-smmuv3,primary-bus=pcie.0 "$PT iomem=relaxed e2e.edu" "${EDU[@]}"

log "boot 2/7: spawn (-device arm-smmuv3-remote,vsmmud=..., QEMU starts vsmmud --seccomp kill)"
timed "boot remote (spawn)" boot spawn "$REMOTE,vsmmud=$VSMMUD" "$PT iomem=relaxed e2e.edu" "${EDU[@]}" \
    -trace smmuv3_remote_connected -trace smmuv3_remote_stats -trace smmuv3_remote_translate_fault

log "boot 3/7: socket (-device arm-smmuv3-remote,socket=..., vsmmud --socket-path, already running)"
SOCK=$WORK/vsmmu.sock
"$VSMMUD" --socket-path "$SOCK" 2>"$WORK/vsmmud-socket.log" &
VSMMUD_SOCKET_PID=$!
for ((i = 0; i < 200; i++)); do [[ -S $SOCK ]] && break; sleep 0.05; done
[[ -S $SOCK ]] || die "vsmmud did not create $SOCK: $(cat "$WORK/vsmmud-socket.log")"
timed "boot remote (socket)" boot socket "$REMOTE,socket=$SOCK" "$PT" \
    -trace smmuv3_remote_stats
awk '/^Seccomp:/ { print $2 }' "/proc/$VSMMUD_SOCKET_PID/status" >"$WORK/socket.seccomp" 2>/dev/null || true
awk '/^CapEff:|^NoNewPrivs:/ { printf "%s%s", sep, $2; sep=" " }' \
    "/proc/$VSMMUD_SOCKET_PID/status" >"$WORK/socket.jail" 2>/dev/null || true
kill -TERM "$VSMMUD_SOCKET_PID"
VSMMUD_RC=0
wait "$VSMMUD_SOCKET_PID" || VSMMUD_RC=$?
VSMMUD_SOCKET_PID=
cat "$WORK/vsmmud-socket.log" >>"$WORK/socket.err"

log "boot 4/7: acpi (as spawn, UEFI + acpi=force: the SMMU described by the IORT)"
timed "boot remote (spawn, ACPI)" boot acpi "$REMOTE,vsmmud=$VSMMUD" "$PT acpi=force" \
    -bios "$UEFI" -trace smmuv3_remote_connected -trace smmuv3_remote_stats

log "boot 5/7: dma (as spawn, translated DMA domains, virtio-blk disk behind the root port)"
cp "$DISK_INITIAL" "$DISK_IMAGE"
timed "boot remote (spawn, DMA)" boot dma "$REMOTE,vsmmud=$VSMMUD" e2e.disk \
    -drive "file=$DISK_IMAGE,format=raw,if=none,id=disk0" \
    -device virtio-blk-pci,drive=disk0,bus=rp0,iommu_platform=on,disable-legacy=on \
    -trace smmuv3_remote_connected -trace smmuv3_remote_stats -trace smmuv3_remote_iotlb \
    -trace smmuv3_remote_attach -trace smmuv3_remote_translate_fault

log "boot 6/7: multi (UEFI + ACPI: two remote SMMUs, one per root complex, each with its own vsmmud)"
timed "boot remote (two SMMUs, ACPI)" boot multi "$REMOTE,vsmmud=$VSMMUD" "$PT acpi=force" \
    -device pxb-pcie,id=pxb1,bus_nr=0x80,bus=pcie.0 \
    -device arm-smmuv3-remote,primary-bus=pxb1,vsmmud="$VSMMUD" \
    -device pcie-root-port,id=rp1,chassis=2,bus=pxb1 \
    -bios "$UEFI" -trace smmuv3_remote_connected -trace smmuv3_remote_stats

log "boot 7/7: migrate (the dma boot's guest live-migrated to a second QEMU and vsmmud)"
cp "$DISK_INITIAL" "$DISK_IMAGE"
timed "boot remote (migration)" boot_migrate migrate

# The guest benchmark (reported, not asserted): blkbench on a scratch
# virtio-blk disk with iommu_platform=on behind the root port, translated
# DMA domains, strict (iommu.strict=1: TLBI + CMD_SYNC at every unmap) and
# lazy (=0: batched flushes), behind QEMU's arm-smmuv3 and behind vsmmud
# (CMD_SYNC completion by MSI, its default, and polled with --no-msi).
# This machine's speed drifts by several percent from one boot to the
# next, so each mode runs BENCH_ROUNDS rounds of the three boots in a row,
# and the report takes the median of the rounds' ratios.
BENCH_SECS=${VSMMU_E2E_BENCH_SECS:-2}
BENCH_ROUNDS=${VSMMU_E2E_BENCH_ROUNDS:-3}
BENCH_IMG=$WORK/bench.img
truncate -s 64M "$BENCH_IMG"
BENCH_DISK=(-drive "file=$BENCH_IMG,format=raw,if=none,id=bench0"
    -device virtio-blk-pci,drive=bench0,bus=rp0,iommu_platform=on,disable-legacy=on)
BENCH_CONFIGS=(builtin remote remote-nomsi)
for mode in strict lazy; do
    strict=$([[ $mode == strict ]] && echo 1 || echo 0)
    for ((round = 1; round <= BENCH_ROUNDS; round++)); do
        log "bench round $round/$BENCH_ROUNDS, iommu.strict=$strict: builtin, vsmmud, vsmmud --no-msi"
        timed "bench builtin $mode r$round" boot "bench-builtin-$mode-r$round" \
            arm-smmuv3,primary-bus=pcie.0 \
            "e2e.bench=$BENCH_SECS iommu.strict=$strict" "${BENCH_DISK[@]}"
        timed "bench vsmmud $mode r$round" boot "bench-remote-$mode-r$round" \
            "$REMOTE,vsmmud=$VSMMUD" \
            "e2e.bench=$BENCH_SECS iommu.strict=$strict" "${BENCH_DISK[@]}" \
            -trace smmuv3_remote_iotlb -trace smmuv3_remote_stats
        timed "bench vsmmud --no-msi $mode r$round" boot "bench-remote-nomsi-$mode-r$round" \
            "$REMOTE,vsmmud=$VSMMUD,vsmmud-args=--no-msi" \
            "e2e.bench=$BENCH_SECS iommu.strict=$strict" "${BENCH_DISK[@]}" \
            -trace smmuv3_remote_iotlb -trace smmuv3_remote_stats
    done
done

echo "== checks: builtin (reference)"
BUILTIN=$(console_line 'arm-smmu-v3 [^ ]+: ias' builtin) || true
check "builtin: patched QEMU still probes its own SMMUv3: ${BUILTIN:-<missing>}" test -n "$BUILTIN"
check_edu builtin
check_remote spawn
check_edu spawn
# vsmmud's verdict (TRANSLATE status: the event type) and its event.
check "spawn: edu: QEMU aborted its DMA on vsmmud's C_BAD_STREAMID, the only fault: $(grep -a 'smmuv3_remote_translate_fault' "$WORK/spawn.err" | sed 's/.*smmuv3_remote_translate_fault //' | paste -sd,)" \
    test "$(grep -a 'smmuv3_remote_translate_fault' "$WORK/spawn.err" | sed 's/.*smmuv3_remote_translate_fault //')" = \
    "sid=0x101 iova=0xf000000 flag=2: status 0x2 (aborted)"
check "spawn: stats: one event raised by the model ($(stat_of spawn model_events)), one translation fault ($(stat_of spawn translation_faults))" \
    test "$(stat_of spawn model_events)/$(stat_of spawn translation_faults)" = 1/1
check_remote socket
check "socket: vsmmud exited 0 on SIGTERM after the client left (rc $VSMMUD_RC)" test "$VSMMUD_RC" = 0
check_remote acpi
check "acpi: the guest used the IORT" grep -aq 'ACPI: IORT' "$WORK/acpi.out"
check_remote dma
check_dma dma
echo "== checks: migrate (live migration with the sim host)"
check "migrate: the migration completed: $(grep -aoE 'Status:[[:space:]]*[a-z]*' "$WORK/migrate.hmp" | tail -1 | tr -s '\t ' ' ')" \
    grep -aqE 'Status:[[:space:]]+completed' "$WORK/migrate.hmp"
check "migrate: the source saved vsmmud's state: $(grep -ao 'smmuv3_remote_migration saved [0-9]* bytes' "$WORK/migrate-src.err")" \
    grep -aqE 'smmuv3_remote_migration saved [1-9][0-9]* bytes' "$WORK/migrate-src.err"
check "migrate: the destination loaded it: $(grep -ao 'smmuv3_remote_migration loaded [0-9]* bytes' "$WORK/migrate-dst.err")" \
    grep -aqE 'smmuv3_remote_migration loaded [1-9][0-9]* bytes' "$WORK/migrate-dst.err"
check "migrate: before: the guest read and wrote its disk through the SMMU" \
    bash -c "grep -aq '^E2E: disk: read matches' '$WORK/migrate-src.out' && grep -aq '^E2E: disk: reread matches' '$WORK/migrate-src.out'"
check "migrate: after: the guest read it again through the destination's vsmmud" \
    grep -aq '^E2E: after migration: reread matches' "$WORK/migrate-dst.out"
check "migrate: the destination QEMU exited 0 after the guest powered off" test "$(cat "$WORK/migrate.rc")" = 0
MIG_STATS=$(sed -n 's/.*smmuv3_remote_stats \({.*}\).*/\1/p' "$WORK/migrate-dst.err" | tail -1)
MIG_XL=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["translations"])' "$MIG_STATS" 2>/dev/null || echo -1)
MIG_XF=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["translation_faults"])' "$MIG_STATS" 2>/dev/null || echo -1)
MIG_HM=$(iotlb_of "$WORK/migrate-dst.err")
check "migrate: the destination translated the reread (>= 512 IOTLB lookups: $MIG_HM; vsmmud's misses $MIG_XL), no fault ($MIG_XF)" \
    test "$((${MIG_HM/+/ + }))" -ge 512 -a "${MIG_HM#*+}" = "$MIG_XL" -a "$MIG_XL" -ge 1 -a "$MIG_XF" = 0
check "migrate: no SMMU event or error in the guest on the destination" \
    bash -c "! grep -aiE 'arm-smmu-v3 [^ ]+: .*(event|error|timeout)|CMD_SYNC' '$WORK/migrate-dst.out'"

echo "== checks: multi (two remote SMMUs on two root complexes)"
check "multi: QEMU exited 0 after the guest powered off" test "$(cat "$WORK/multi.rc")" = 0
check "multi: two vsmmud spawned ($(grep -ac 'smmuv3_remote_connected spawn' "$WORK/multi.err"))" \
    test "$(grep -ac 'smmuv3_remote_connected spawn' "$WORK/multi.err")" = 2
# (The console shows the kernel's lines twice: as printed, and in the
# dmesg /init prints.)
MULTI_PROBES=$(grep -aoE 'arm-smmu-v3 arm-smmu-v3\.[0-9]\.auto: ias [0-9]+-bit' "$WORK/multi.out" | sort -u | wc -l)
check "multi: the guest probed two SMMUs through the IORT ($MULTI_PROBES)" test "$MULTI_PROBES" = 2
check "multi: both in sysfs, at the platform bus's first two SMMU frames" \
    bash -c "grep -aqE 'smmu3\.0x0*c000000' '$WORK/multi.out' && grep -aqE 'smmu3\.0x0*c020000' '$WORK/multi.out'"
check "multi: the root port on pcie.0 in an IOMMU group" \
    grep -aqE 'pcieport 0000:00:0[0-9a-f]\.0: Adding to iommu group' "$WORK/multi.out"
check "multi: the root port on the expander's bus 0x80 in an IOMMU group" \
    grep -aqE 'pcieport 0000:80:00\.0: Adding to iommu group' "$WORK/multi.out"
check "multi: both vsmmuds counted the guest's commands" \
    test "$(sed -n 's/.*smmuv3_remote_stats \({.*}\).*/\1/p' "$WORK/multi.err" | grep -c '"cmds_consumed":[1-9]')" = 2

echo "== checks: guest benchmark (figures reported, not asserted)"
for mode in strict lazy; do
    for ((round = 1; round <= BENCH_ROUNDS; round++)); do
        for cfg in "${BENCH_CONFIGS[@]}"; do
            name=bench-$cfg-$mode-r$round
            check "$name: blkbench ran ($(grep -a '^BLK:' "$WORK/$name.out" | tr -d '\r' | cut -c6-)), no SMMU event" \
                bash -c "grep -aq '^BLK: randread_iops=[0-9]' '$WORK/$name.out' && ! grep -aqE 'arm-smmu-v3 [^ ]+: event 0x' '$WORK/$name.out'"
        done
    done
done
GUEST_BENCH_JSON=$CARGO_TARGET_DIR/vsmmu-guest-bench.json
python3 "$REPO/tests/e2e/guest/bench-report.py" "$WORK" "$GUEST_BENCH_JSON" "$BENCH_SECS" "$BENCH_ROUNDS" "${BENCH_CONFIGS[@]}" ||
    log "the guest benchmark report failed"

echo "== what the guest's /init printed, remote (spawn):"
sed -n '/^E2E: init/,/^E2E: done/p' "$WORK/spawn.out" | sed 's/^/    /' | tr -d '\r'
echo "== what the guest's /init printed, remote with translated DMA (dma):"
sed -n '/^E2E: init/,/^E2E: done/p' "$WORK/dma.out" | sed 's/^/    /' | tr -d '\r'
echo "== probe lines: builtin vs remote"
echo "    builtin: ${BUILTIN:-<missing>}"
echo "    remote:  $(console_line 'arm-smmu-v3 [^ ]+: ias' spawn)"
echo "    acpi:    $(console_line 'arm-smmu-v3 [^ ]+: ias' acpi)"

echo "== timings"
printf '    %s\n' "${TIMINGS[@]}"
printf '    %-28s %7.1f s\n' "total" "$(elapsed "$T_START")"
if ((FAILED)); then
    log "logs: $WORK (kept)"
    VSMMU_E2E_KEEP=1
fi
echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
