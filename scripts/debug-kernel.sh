#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Build a debug kernel for the test VM from Debian's linux-source-6.1 (the
# VM kernel's version): KASAN, lockdep, DEBUG_ATOMIC_SLEEP, kmemleak and
# UBSAN, with virtio-pci and 9p built in so that the VM's initramfs loads
# no modules. Cached: the tree is rebuilt only when the recipe below (this
# file) or the source package changes.
#
#   debug-kernel.sh [DIR]   build into DIR (default build/debug-kernel) and
#                           print the kernel tree's path (KDIR for M=)
#
# The tree's arch/x86/boot/bzImage is what run-vm.sh boots with
# MPQ_VM_KERNEL; a module builds against the tree with M=.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
out=$(realpath -m "${1:-$top/build/debug-kernel}")
src_tar=/usr/src/linux-source-6.1.tar.xz
tree=$out/linux-source-6.1
stamp=$out/stamp

[ -r "$src_tar" ] || { echo "debug-kernel: no $src_tar: run 'make deps'" >&2; exit 1; }
for t in flex bison bc; do
	command -v $t >/dev/null ||
		{ echo "debug-kernel: $t missing: run 'scripts/deps.sh --debug-kernel'" >&2; exit 1; }
done

# The recipe: what scripts/config changes after x86_64_defconfig and
# kvm_guest.config. -e enables, -d disables, --set-val sets.
r() { printf '%s\n' "$@"; }
recipe() {
	# What the VM runner needs, built in: the console, virtio-pci, 9p over
	# virtio for the host root, tmpfs and devtmpfs, an entropy source.
	r -e VIRTIO_PCI -e NET_9P -e NET_9P_VIRTIO -e 9P_FS -e 9P_FS_POSIX_ACL
	r -e HW_RANDOM -e HW_RANDOM_VIRTIO
	r -e TMPFS -e TMPFS_POSIX_ACL -e TMPFS_XATTR -e DEVTMPFS -e DEVTMPFS_MOUNT
	r -e BLK_DEV_INITRD -e RD_GZIP
	r -e MODULES -e MODULE_UNLOAD -e MODULE_FORCE_UNLOAD -d MODULE_SIG
	r -d MODVERSIONS
	# What the tests use: io_uring, namespaces, seccomp, memcg, SysV IPC,
	# pidfds, and tracing for the module's tracepoints and the USDT tools.
	r -e IO_URING -e SYSVIPC -e POSIX_MQUEUE -e NAMESPACES -e UTS_NS
	r -e IPC_NS -e USER_NS -e PID_NS -e NET_NS -e CGROUPS -e MEMCG
	r -e SECCOMP -e SECCOMP_FILTER -e FHANDLE -e EVENTFD -e SHMEM
	r -e TRANSPARENT_HUGEPAGE -e USERFAULTFD -e CHECKPOINT_RESTORE
	r -e BPF_SYSCALL -e BPF_JIT -e BPF_EVENTS -e FTRACE -e EVENT_TRACING
	r -e KPROBES -e KPROBE_EVENTS -e UPROBES -e UPROBE_EVENTS
	r -e DEBUG_FS -e DEBUG_FS_ALLOW_ALL
	r -e DEBUG_INFO_NONE -d DEBUG_INFO -d DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT
	# The checkers.
	r -e KASAN -e KASAN_GENERIC -e KASAN_INLINE -e KASAN_VMALLOC
	r -e PROVE_LOCKING -e DEBUG_ATOMIC_SLEEP -e DEBUG_LOCK_ALLOC
	r -e DEBUG_KMEMLEAK -e DEBUG_KMEMLEAK_AUTO_SCAN
	r -d DEBUG_KMEMLEAK_DEFAULT_OFF
	r --set-val DEBUG_KMEMLEAK_MEM_POOL_SIZE 64000
	r -e DEBUG_LIST -e DEBUG_OBJECTS -e DEBUG_OBJECTS_FREE
	r -e DEBUG_OBJECTS_TIMERS -e DEBUG_OBJECTS_WORK -e DEBUG_VM
	r -e UBSAN -e UBSAN_BOUNDS -e UBSAN_SHIFT -d UBSAN_SANITIZE_ALL
	r -e DETECT_HUNG_TASK -e SOFTLOCKUP_DETECTOR
	r -e SCHED_STACK_END_CHECK -e HARDENED_USERCOPY
	r -d PANIC_ON_OOPS -d BUG_ON_DATA_CORRUPTION
	# What the VM never uses: off, for a shorter build.
	r -d DRM -d SOUND -d USB_SUPPORT -d WLAN -d WIRELESS -d CFG80211
	r -d MAC80211 -d RFKILL -d ETHERNET -d WAN -d NETFILTER -d IPV6
	r -d ATA -d SCSI -d MD -d BLK_DEV_DM -d EXT4_FS -d ISO9660_FS
	r -d MSDOS_FS -d VFAT_FS -d NFS_FS -d NFSD -d AUTOFS_FS -d QUOTA
	r -d INPUT_MOUSE -d INPUT_JOYSTICK -d INPUT_TABLET -d INPUT_TOUCHSCREEN
	r -d HID -d AGP -d FB -d VGA_CONSOLE -d FRAMEBUFFER_CONSOLE
	r -d HIBERNATION -d SUSPEND -d CPU_FREQ -d X86_MCE -d PERF_EVENTS_INTEL_UNCORE
	r -d DRM_VIRTIO_GPU -d VIRTIO_INPUT -d SCSI_VIRTIO -d SECURITY_SELINUX
	r -d KVM -d XEN -d HYPERV -d ACPI_APEI -d EFI -d MICROCODE
	r --set-str LOCALVERSION -mpqdebug -d LOCALVERSION_AUTO
}

# The key: the recipe and the source package's version.
key=$( (recipe; stat -c '%s %Y' "$src_tar") | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ] &&
   [ -s "$tree/arch/x86/boot/bzImage" ]; then
	echo "$tree"
	exit 0
fi

rm -rf "$out"
mkdir -p "$out"
echo "debug-kernel: extracting $src_tar" >&2
tar -xJf "$src_tar" -C "$out"
cd "$tree"
make -s x86_64_defconfig >&2
make -s kvm_guest.config >&2
# shellcheck disable=SC2046
scripts/config $(recipe)
make -s olddefconfig >&2
# Check that what the recipe asks for survived olddefconfig's dependency
# resolution: a checker silently dropped would make a green run meaningless.
for c in KASAN KASAN_INLINE PROVE_LOCKING DEBUG_ATOMIC_SLEEP DEBUG_KMEMLEAK \
	 UBSAN VIRTIO_PCI NET_9P_VIRTIO 9P_FS IO_URING DEBUG_FS MODULES; do
	grep -qx "CONFIG_$c=y" .config ||
		{ echo "debug-kernel: CONFIG_$c is not y after olddefconfig" >&2; exit 1; }
done
echo "debug-kernel: building bzImage (this takes minutes)" >&2
start=$(date +%s)
make -s -j"$(nproc)" bzImage modules_prepare >&2
# The exported symbols, for modpost when a module builds with M= (no
# in-tree module is built, so no Module.symvers is made otherwise).
cp vmlinux.symvers Module.symvers
echo "debug-kernel: built $(cat include/config/kernel.release) in $(($(date +%s) - start))s" >&2
echo "$key" > "$stamp"
echo "$tree"
