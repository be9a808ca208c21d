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
#   deps.sh --deb    also what building the Debian packages needs (make deb)
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
vmdir=${MPQ_VM_DIR:-$top/build/vm}

# What building the library and the tools needs is debian/control's
# Build-Depends (read below); this list is what else the tests, the VM
# and the benchmarks need. redis-server: libmpq-net's tests.
pkgs=(build-essential llvm
      linux-headers-amd64 kmod qemu-system-x86 busybox-static cpio
      linux-source-6.1 python3 file gnuplot-nox
      redis-server
      # the peers make bench measures (bench/peers/); iceoryx: RouDi
      libck-dev libboost-dev libzmq3-dev iceoryx libiceoryx-binding-c-dev)

# debian/control's Build-Depends, one name a line, without versions or
# alternatives. Read rather than apt-get build-dep ./, which would also
# install debhelper and dh-dkms for every make check, and rather than
# mk-build-deps, which needs devscripts and equivs and leaves a package.
build_deps() {
	sed -n '/^Build-Depends:/,/^[A-Z]/{/^Build-Depends:/s/^[^:]*://;/^[A-Z]/d;p}' \
		"$top/debian/control" | tr ',' '\n' | sed 's/[[(<|].*//; s/[[:space:]]//g' |
		grep -v '^$'
}

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
deb_pkgs=()
# The Build-Depends; debhelper's and dh-dkms's virtual names only for
# make deb, which also needs dpkg-buildpackage and lintian.
for p in $(build_deps); do
	case $p in
	debhelper-compat) deb_pkgs+=(debhelper) ;;
	dh-sequence-dkms) deb_pkgs+=(dh-dkms) ;;
	*) pkgs+=("$p") ;;
	esac
done
if [ "${1:-}" = --deb ]; then
	pkgs+=("${deb_pkgs[@]}" dpkg-dev lintian)
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
