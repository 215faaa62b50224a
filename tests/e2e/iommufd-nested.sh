#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
#
# The iommufd rig: vsmmud --host iommufd against a real Linux kernel.
#
#   L0  qemu-system-aarch64 (QEMU 10.2.2 with contrib/qemu/*.patch, the
#       build tests/e2e/linux-boot.sh makes; TCG) -M virt,gic-version=3,
#       iommu=smmuv3: QEMU's SMMUv3 with nested stage 1 + stage 2, with
#       x-s2fwb=on (IDR3.FWB: Linux allows a vIOMMU only with S2FWB or
#       CANWBS), and QEMU's `edu` PCI device behind it;
#   L1  Linux 7.3 with CONFIG_IOMMUFD, ARM_SMMU_V3_IOMMUFD, VFIO_DEVICE_CDEV;
#       /init binds edu to vfio-pci and runs tests/src/bin/vsmmu-rig-vmm.rs
#       twice: it plays the VMM (opens /dev/iommu and the cdev, spawns an
#       aarch64 vsmmud --host iommufd --iommufd-fd 4 under seccomp kill,
#       shares a sealed memfd as guest RAM, boots the SMMU with the model
#       guest driver, attaches edu as vSID 8, writes stage-1 tables and
#       drives edu's DMA through its VFIO region), checking exact values.
#
# Everything it builds is cached outside the clone
# (${VSMMU_RIG_CACHE:-$XDG_CACHE_HOME/vsmmu-rig}, keyed by its inputs; see
# iommufd-nested/build.sh). First run: QEMU ~20 min, Linux ~5 min, the
# chroot ~2 min, vsmmud ~4 min on 2 cores; cached runs: the aarch64
# rebuild of what changed plus the boot (about 2-4 minutes).
#
# Prints every check and "N passed, N failed" last; exits 0 only when all
# passed.
#
# Environment: VSMMU_RIG_CACHE, VSMMU_RIG_JOBS, VSMMU_RIG_NO_INSTALL=1,
# VSMMU_RIG_TIMEOUT (seconds for the boot, default 900), VSMMU_RIG_KEEP=1
# (keep the work directory with the console log), VSMMU_RIG_SECCOMP
# (vsmmud's --seccomp in L1, default kill; `trap` names a forbidden call),
# VSMMU_RIG_QEMU_ARGS (more L0 QEMU options, e.g. `-trace smmu* -D FILE`).

set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=iommufd-nested/build.sh
source "$HERE/iommufd-nested/build.sh"
TIMEOUT=${VSMMU_RIG_TIMEOUT:-900}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vsmmu-rig.XXXXXX")
QEMU_PID=
cleanup() {
    if [[ -n $QEMU_PID ]] && kill -0 "$QEMU_PID" 2>/dev/null; then
        kill -TERM "$QEMU_PID" 2>/dev/null || true
        wait "$QEMU_PID" 2>/dev/null || true
    fi
    if [[ ${VSMMU_RIG_KEEP:-0} == 1 ]]; then
        log "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

t_start=$SECONDS
step() { log "$1 ($((SECONDS - t_start)) s so far)"; }

host_deps
step "L0 QEMU"
QEMU=$(build_qemu)
step "L1 kernel"
IMAGE=$(build_linux)
step "busybox"
BUSYBOX=$(build_busybox)
step "chroot"
CHROOT=$(build_chroot)
step "aarch64 vsmmud and vsmmu-rig-vmm"
BIN=$(build_vsmmu_aarch64 "$CHROOT")

step "initramfs"
ROOT=$WORK/initramfs
mkdir -p "$ROOT"/{bin,dev,proc,sys,tmp}
cp "$BUSYBOX" "$ROOT/bin/busybox"
cp "$HERE/iommufd-nested/init" "$ROOT/init"
cp "$BIN/vsmmud" "$BIN/vsmmu-rig-vmm" "$ROOT/"
chmod 755 "$ROOT/init" "$ROOT/bin/busybox"
(cd "$ROOT" && find . | cpio -o -H newc --quiet | gzip -1) >"$WORK/initrd.gz"

step "booting L1 (TCG)"
CONSOLE=$WORK/console.log
timeout "$TIMEOUT" "$QEMU" -M virt,gic-version=3,iommu=smmuv3 -global arm-smmuv3.x-s2fwb=on \
    -cpu cortex-a57 -smp 1 -m 1024 \
    -nographic -no-reboot -kernel "$IMAGE" -initrd "$WORK/initrd.gz" \
    -append "console=ttyAMA0 panic=-1 quiet loglevel=4 rig.seccomp=${VSMMU_RIG_SECCOMP:-kill}" \
    -nic none -device edu ${VSMMU_RIG_QEMU_ARGS:-} </dev/null >"$WORK/console.raw" 2>&1 &
QEMU_PID=$!
wait "$QEMU_PID" || true
QEMU_PID=
tr -d '\r' <"$WORK/console.raw" >"$CONSOLE"
boot_s=$((SECONDS - t_start))

# The guest's console: its report and vsmmud's log.
cat "$CONSOLE"

passed=0
failed=0
for run in 1 2; do
    line=$(awk -v r="$run" '$0 ~ "^RIG: run "r"$" {on=1; next} on && /^[0-9]+ passed, [0-9]+ failed/ {print; exit}' "$CONSOLE")
    rc=$(sed -n "s/^RIG-EXIT $run \([0-9]*\).*/\1/p" "$CONSOLE")
    if [[ -n $line ]]; then
        p=$(echo "$line" | sed 's/ passed.*//')
        f=$(echo "$line" | sed 's/.* passed, \([0-9]*\) failed.*/\1/')
        passed=$((passed + p))
        failed=$((failed + f))
    fi
    if [[ $rc == 0 ]]; then
        echo "ok - run $run of the rig VMM exited 0"
        passed=$((passed + 1))
    else
        echo "not ok - run $run of the rig VMM: exit '${rc:-none}'"
        failed=$((failed + 1))
    fi
done
if grep -q "Kernel panic\|Unable to handle kernel\|BUG:" "$CONSOLE"; then
    echo "not ok - L1 kernel oops or panic"
    failed=$((failed + 1))
fi
log "done in $((SECONDS - t_start)) s (boot and checks ended at ${boot_s} s)"
echo "rig: $passed passed, $failed failed"
[[ $failed == 0 ]]
