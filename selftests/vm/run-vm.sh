#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Boot Debian's 6.1 kernel in qemu with the host's root read-only over 9p,
# load mpq.ko, run a command inside, and return its output and exit status.
# After the command the guest unloads the module; the run fails if that
# fails or if the kernel logged a splat (selftests/vm/splat.sh: BUG,
# WARNING, Oops, KASAN, UBSAN, lockdep, RCU stall, hung task, kmemleak)
# or, on a kernel with kmemleak, if a scan after rmmod finds a leak.
#
#   run-vm.sh [-t SECONDS] [-o DIR] -- COMMAND [ARG...]
#                     run COMMAND in the guest; what it writes under
#                     /tmp/out/export there is copied to DIR afterwards
#   run-vm.sh -s      interactive shell
#
# Environment: MPQ_KVER (kernel release, default: scripts/deps.sh --kver,
# Debian's plain amd64 6.1, or 6.12 with MPQ_KSERIES=6.12), MPQ_VM_DIR
# (the kernel cache, only read: default build/vm; the initramfs and the
# run logs always go to this tree's own build/vm), MPQ_MODULE
# (default kmod/mpq.ko), MPQ_VM_ACCEL (kvm or tcg, default: probe),
# MPQ_VM_SMP (2), MPQ_VM_MEM (4G: the 1 GiB message test), MPQ_VM_KERNEL
# (a bzImage to boot instead of Debian's, with virtio-pci and 9p built in:
# the initramfs then loads no modules; e.g. scripts/debug-kernel.sh's).
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
vmdir=${MPQ_VM_DIR:-$top/build/vm}
# What this run writes (initramfs, logs) stays in this tree, apart from a
# shared cache: concurrent runs of other trees neither see nor prune it.
own=$top/build/vm
module=$(realpath "${MPQ_MODULE:-$top/kmod/mpq.ko}")
timeout_s=600
shell=0
export_dir=

die() { echo "run-vm: $*" >&2; exit 2; }

while getopts "so:t:" opt; do
	case $opt in
	s) shell=1 ;;
	o) export_dir=$OPTARG ;;
	t) timeout_s=$OPTARG ;;
	*) die "usage: run-vm.sh [-s] [-t SECONDS] -- COMMAND..." ;;
	esac
done
shift $((OPTIND - 1))
[ $shell = 1 ] || [ $# -gt 0 ] || die "no command given"

if [ -n "${MPQ_VM_KERNEL:-}" ]; then
	vmlinuz=$(realpath "$MPQ_VM_KERNEL")
	[ -r "$vmlinuz" ] || die "no kernel image at $vmlinuz"
	# The release, from the image's header ("version 6.1.192-mpqdebug ...").
	kver=${MPQ_KVER:-$(file -bL "$vmlinuz" | sed -n 's/.*version \([^ ]*\) .*/\1/p')}
	[ -n "$kver" ] || die "cannot read the kernel release of $vmlinuz"
	kimg=
	vm_mods=()
else
	kver=${MPQ_KVER:-$("$top/scripts/deps.sh" --kver)}
	kimg=$vmdir/linux-image-$kver
	vmlinuz=$kimg/boot/vmlinuz-$kver
	[ -r "$vmlinuz" ] || die "no kernel image at $vmlinuz: run 'make deps'"
	vm_mods=(virtio_pci 9pnet_virtio 9p)
fi
[ -r "$module" ] || die "no module at $module: run 'make'"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing: run 'make deps'"
modinfo -F vermagic "$module" | grep -q "^$kver " ||
	die "$module was not built for $kver (KDIR must match the VM kernel)"

# The initramfs: busybox, the modules that reach the host root over 9p, and
# init. Rebuilt when init or the kernel changes.
initrd=$own/initramfs-$kver.cpio
if [ ! -s "$initrd" ] || [ "$top/selftests/vm/init" -nt "$initrd" ]; then
	stage=$(mktemp -d)
	trap 'rm -rf "$stage"' EXIT
	mkdir -p "$own" "$stage"/{bin,proc,sys,dev,newroot,lib/modules}
	cp /bin/busybox "$stage/bin/busybox"
	file "$stage/bin/busybox" 2>/dev/null | grep -q dynamic &&
		die "/bin/busybox is dynamic: install busybox-static"
	cp "$top/selftests/vm/init" "$stage/init"
	chmod +x "$stage/init"
	moddir=$kimg/lib/modules/$kver
	order=()
	# 6.12 builds virtio_pci in and ships its modules xz-compressed,
	# which busybox's insmod does not read.
	add_mod() { # add a module after its dependencies, once
		local name=$1 path dep
		for m in "${order[@]}"; do [ "$m" = "$name" ] && return; done
		grep -qE "/$name\.ko\$" "$moddir/modules.builtin" 2>/dev/null && return
		path=$(find "$moddir" \( -name "$name.ko" -o -name "$name.ko.xz" \) -print -quit)
		[ -n "$path" ] || die "module $name not in $moddir"
		for dep in $(modinfo -F depends "$path" | tr ',' ' '); do
			add_mod "$dep"
		done
		case $path in
		*.xz) xz -dc "$path" > "$stage/lib/modules/$name.ko" ;;
		*) cp "$path" "$stage/lib/modules/" ;;
		esac
		order+=("$name")
	}
	for m in "${vm_mods[@]}"; do add_mod "$m"; done
	: > "$stage/lib/modules/order"
	[ ${#order[@]} = 0 ] || printf '%s\n' "${order[@]}" > "$stage/lib/modules/order"
	(cd "$stage" && find . | cpio -o -H newc --quiet) > "$initrd.tmp"
	mv "$initrd.tmp" "$initrd"
	rm -rf "$stage"
	trap - EXIT
fi

# KVM only where it really runs a guest: /dev/kvm can exist and hang.
accel=${MPQ_VM_ACCEL:-}
if [ -z "$accel" ]; then
	accel=tcg
	if [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo &&
	   timeout 10 qemu-system-x86_64 -accel kvm -nodefaults -display none \
		-no-reboot -m 256 -kernel "$vmlinuz" \
		-append "panic=-1 rdinit=/none init=/none" >/dev/null 2>&1; then
		accel=kvm
	fi
fi
case $accel in
kvm) accel_args=(-accel kvm -cpu host) ;;
tcg) accel_args=(-accel tcg,thread=multi -cpu max) ;;
*) die "MPQ_VM_ACCEL must be kvm or tcg" ;;
esac
append="console=ttyS0 loglevel=3 panic=-1 rdinit=/init"
# A kernel of our own under TCG: without acpi=noirq each ACPI PCI link
# times out and the boot takes minutes.
# And 4-level paging: a KASAN kernel on TCG's 5-level (la57) CPU was seen
# to report a wild access in an interrupt during early boot.
if [ -n "${MPQ_VM_KERNEL:-}" ] && [ "$accel" = tcg ]; then
	append+=" acpi=noirq"
	accel_args=(-accel tcg,thread=multi -cpu max,la57=off)
fi

mkdir -p "$own/runs"
# Keep the last 20 runs' logs for a look afterwards.
# (No runs yet: ls finds nothing, which pipefail must not make fatal.)
ls -1dt "$own"/runs/run.* 2>/dev/null | tail -n +20 | xargs -r rm -rf || true
run=$(mktemp -d "$own/runs/run.XXXXXX")
{
	printf 'MPQ_VM_MODULE=%q\n' "$module"
	printf 'MPQ_VM_CWD=%q\n' "$PWD"
	printf 'MPQ_VM_SRC=%q\n' "$top"
	printf 'MPQ_VM_SHELL=%s\n' "$shell"
} > "$run/env"
{
	echo 'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
	echo 'export HOME=/tmp TMPDIR=/tmp MPQ_IN_VM=1'
	printf 'export MPQ_VM_MODULE=%q\n' "$module"
	for v in MPQ_BACKEND ASAN_OPTIONS UBSAN_OPTIONS MPQ_UDEVADM; do
		[ -n "${!v:-}" ] && printf 'export %s=%q\n' "$v" "${!v}"
	done
	[ $# -gt 0 ] && printf 'exec' && printf ' %q' "$@" && echo
} > "$run/cmd.sh"

qemu=(qemu-system-x86_64 "${accel_args[@]}"
	-smp "${MPQ_VM_SMP:-2}" -m "${MPQ_VM_MEM:-4G}"
	-nodefaults -no-reboot -display none
	-kernel "$vmlinuz" -initrd "$initrd"
	-append "$append"
	-fsdev "local,id=root,path=/,readonly=on,security_model=none,multidevs=remap"
	-device virtio-9p-pci,fsdev=root,mount_tag=hostroot
	-fsdev "local,id=src,path=$top,readonly=on,security_model=none,multidevs=remap"
	-device virtio-9p-pci,fsdev=src,mount_tag=src
	-fsdev "local,id=out,path=$run,security_model=none"
	-device virtio-9p-pci,fsdev=out,mount_tag=out
	-device virtio-rng-pci)

if [ $shell = 1 ]; then
	"${qemu[@]}" -serial mon:stdio
	exit 0
fi

start=$(date +%s%N)
rc=0
timeout -k 5 "$timeout_s" "${qemu[@]}" -serial "file:$run/console.log" \
	</dev/null || rc=$?
ms=$((($(date +%s%N) - start) / 1000000))
secs=$((ms / 1000)).$(printf %03d $((ms % 1000)))

[ -f "$run/output" ] && cat "$run/output"
if [ -n "$export_dir" ] && [ -d "$run/export" ]; then
	mkdir -p "$export_dir"
	cp -r "$run/export/." "$export_dir/"
fi
fail() {
	echo "run-vm: FAIL: $*" >&2
	echo "run-vm: console log: $run/console.log (last lines below)" >&2
	tail -n 30 "$run/console.log" >&2 || true
	exit 3
}
[ $rc = 124 ] && fail "the VM did not finish within ${timeout_s}s ($accel)"
[ -f "$run/status" ] || fail "the guest command did not complete (qemu exit $rc)"
[ -f "$run/insmod" ] && fail "insmod $module failed in the guest"
status=$(cat "$run/status")
if "$top/selftests/vm/splat.sh" "$run/dmesg" >&2; then
	fail "the kernel logged a splat (see $run/dmesg)"
fi
if [ -s "$run/kmemleak" ]; then
	head -60 "$run/kmemleak" >&2
	fail "kmemleak found leaks after rmmod (see $run/kmemleak)"
fi
[ "$(cat "$run/rmmod" 2>/dev/null)" = 0 ] ||
	fail "rmmod mpq failed in the guest: $(cat "$run/rmmod.err" 2>/dev/null)"
echo "run-vm: guest exit $status, no kernel splat, rmmod ok ($accel, ${secs}s; $run)" >&2
exit "$status"
