#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Install what mpq needs to build and test, and fetch the test VM's kernel.
# Idempotent: with everything present it changes nothing and makes no
# network request. Needs root (apt-get) only when something is missing.
#
#   deps.sh          install what is missing
#   deps.sh --kver   print the kernel release the module and the VM use
#   deps.sh --debug-kernel
#                    also what building the debug kernel needs
#                    (scripts/debug-kernel.sh, make check-debug)
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
vmdir=${MPQ_VM_DIR:-$top/build/vm}

# systemtap-sdt-dev: <sys/sdt.h>, the USDT probes of libmpq; libelf-dev and
# zlib1g-dev: what the tools link with libbpf. libssl-dev (libcrypto's
# HMAC), libhiredis-dev and redis-server: libmpq-net and its tests.
pkgs=(build-essential pkg-config liburing-dev libbpf-dev bpftool clang llvm
      linux-headers-amd64 kmod qemu-system-x86 busybox-static cpio
      linux-source-6.1 python3 file gnuplot-nox
      systemtap-sdt-dev libelf-dev zlib1g-dev
      libssl-dev libhiredis-dev redis-server)

# The newest Debian amd64 headers installed: the VM kernel must match them.
kver() {
	local d
	d=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1)
	[ -n "$d" ] || return 1
	echo "${d#/usr/src/linux-headers-}"
}

if [ "${1:-}" = --kver ]; then
	kver || { echo "deps: no linux-headers-*-amd64 installed" >&2; exit 1; }
	exit 0
fi

# Only for the debug kernel: kconfig's parsers and what its build runs.
if [ "${1:-}" = --debug-kernel ]; then
	pkgs+=(flex bison bc libssl-dev libelf-dev)
fi

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
		missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	[ "$(id -u)" = 0 ] || { echo "deps: need root to install: ${missing[*]}" >&2; exit 1; }
	echo "deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

v=$(kver)
img=$vmdir/linux-image-$v
# Both the kernel and its modules: a kbuild "clean" with M= at the top of
# the tree deletes every *.ko below it, these included.
if [ ! -r "$img/boot/vmlinuz-$v" ] ||
   [ -z "$(find "$img/lib/modules" -name 9p.ko -print -quit 2>/dev/null)" ]; then
	echo "deps: fetching linux-image-$v for the test VM"
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	(cd "$tmp" && apt-get download -qq "linux-image-$v" 2>/dev/null ||
	 apt-get download -qq "linux-image-$v-unsigned")
	mkdir -p "$img.tmp"
	dpkg -x "$tmp"/linux-image-*.deb "$img.tmp"
	rm -rf "$img"
	mv "$img.tmp" "$img"
fi
