#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Install what mpq needs to build and test, and fetch the test VM's kernel.
# Idempotent: with everything present it changes nothing and makes no
# network request. Needs root (apt-get) only when something is missing.
#
#   deps.sh          install what is missing
#   deps.sh --kver   print the kernel release the module and the VM use
#   deps.sh --kdir   print that kernel's headers (the KDIR to build with)
#   deps.sh --debug-kernel
#                    also what building the debug kernel needs
#                    (scripts/debug-kernel.sh, make check-debug)
#   deps.sh --deb    also what building the Debian packages needs (make deb)
#
# MPQ_KSERIES picks the kernel series: 6.1 (default, Debian 12's own
# kernel, what make check uses) or 6.12 (bookworm's newer kernel, make
# check-6.12). Of that series the newest plain amd64 flavour: never -rt
# or -cloud, whichever sorts last. Headers come from /usr/src; for a
# series whose headers are not installed there (6.12 on a 6.1 host),
# deps.sh unpacks them into the VM cache instead of installing them, so
# the host's own builds keep their kernel. MPQ_KVER names a release
# outright. MPQ_HEADERS (default /usr/src) is where headers are looked
# for: the tests point it at a fake tree.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
vmdir=${MPQ_VM_DIR:-$top/build/vm}
series=${MPQ_KSERIES:-6.1}
headers=${MPQ_HEADERS:-/usr/src}

# What building the library and the tools needs is debian/control's
# Build-Depends (read below); this list is what else the tests, the VM
# and the benchmarks need. redis-server: libmpq-net's tests.
pkgs=(build-essential llvm
      linux-headers-amd64 kmod qemu-system-x86 busybox-static cpio
      linux-source-6.1 python3 file gnuplot-nox
      redis-server
      # dwarves (pahole): the BTF of a module built for 6.12, whose headers ship vmlinux
      dwarves
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

# A plain amd64 flavour of SERIES: "6.1.0-57-amd64", "6.12.117+deb12-amd64"
# (Debian's two namings), not "6.1.0-57-rt-amd64" nor "...-cloud-amd64".
plain() { # SERIES < RELEASES
	local re=${1//./\\.}
	grep -E "^$re\.[0-9]+(-[0-9]+|\+(deb|bpo)[0-9]*)-amd64\$" | sort -V | tail -n 1
}

# The release of SERIES to use, from the headers installed or unpacked.
kver() {
	local v
	if [ -n "${MPQ_KVER:-}" ]; then
		echo "$MPQ_KVER"
		return
	fi
	v=$( (cd "$headers" 2>/dev/null && ls -d linux-headers-* 2>/dev/null
	      cd "$vmdir" 2>/dev/null && ls -d linux-headers-* 2>/dev/null) |
	    sed 's/^linux-headers-//' | plain "$series")
	[ -n "$v" ] || return 1
	echo "$v"
}

kdir() { # RELEASE
	local d=$headers/linux-headers-$1
	[ -r "$d/Makefile" ] || d=$vmdir/linux-headers-$1/usr/src/linux-headers-$1
	[ -r "$d/Makefile" ] || return 1
	echo "$d"
}

case ${1:-} in
--kver)
	kver || { echo "deps: no plain linux-headers-$series.*-amd64 installed: run 'make deps'${MPQ_KSERIES:+ MPQ_KSERIES=$series}" >&2; exit 1; }
	exit 0 ;;
--kdir)
	v=$(kver) && kdir "$v" ||
		{ echo "deps: no headers for the $series kernel: run 'make deps'" >&2; exit 1; }
	exit 0 ;;
esac

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

# A series whose headers are not installed: the newest plain amd64
# headers Debian has for it, unpacked into the cache with what they need
# (the -common part and kbuild's scripts), and pointed at each other.
if ! v=$(kver); then
	v=$(apt-cache pkgnames "linux-headers-$series." | sed 's/^linux-headers-//' | plain "$series")
	[ -n "$v" ] || { echo "deps: Debian has no plain linux-headers-$series.*-amd64" >&2; exit 1; }
	echo "deps: unpacking linux-headers-$v into $vmdir (not installed)"
	tmp=$(mktemp -d)
	chown _apt "$tmp" 2>/dev/null || true  # apt-get download runs as _apt
	trap 'rm -rf "$tmp"' EXIT
	common=$(apt-cache depends "linux-headers-$v" | sed -n 's/.*Depends: \(linux-headers-.*-common\)$/\1/p')
	kbuild=$(apt-cache depends "linux-headers-$v" | sed -n 's/.*Depends: \(linux-kbuild-.*\)$/\1/p')
	(cd "$tmp" && apt-get download -qq "linux-headers-$v" "$common" "$kbuild")
	hd=$vmdir/linux-headers-$v
	rm -rf "$hd.tmp" && mkdir -p "$hd.tmp"
	for deb in "$tmp"/*.deb; do dpkg -x "$deb" "$hd.tmp"; done
	# "include /usr/src/linux-headers-X-common/Makefile": the unpacked one.
	sed -i "s|^include /usr/src/|include $hd/usr/src/|" "$hd.tmp/usr/src/linux-headers-$v/Makefile"
	rm -rf "$hd" && mv "$hd.tmp" "$hd"
fi
img=$vmdir/linux-image-$v
# Both the kernel and its modules: a kbuild "clean" with M= at the top of
# the tree deletes every *.ko below it, these included. 6.12 ships them
# compressed (9p.ko.xz).
if [ ! -r "$img/boot/vmlinuz-$v" ] ||
   [ -z "$(find "$img/lib/modules" -name '9p.ko*' -print -quit 2>/dev/null)" ]; then
	echo "deps: fetching linux-image-$v for the test VM"
	tmp=$(mktemp -d)
	chown _apt "$tmp" 2>/dev/null || true  # apt-get download runs as _apt
	trap 'rm -rf "$tmp"' EXIT
	(cd "$tmp" && apt-get download -qq "linux-image-$v" 2>/dev/null ||
	 apt-get download -qq "linux-image-$v-unsigned")
	mkdir -p "$img.tmp"
	dpkg -x "$tmp"/linux-image-*.deb "$img.tmp"
	rm -rf "$img"
	mv "$img.tmp" "$img"
fi

# udevadm for the VM's test of 60-mpq.rules (udevadm test on /dev/mpq),
# unpacked beside the kernel rather than installed: the host needs no udev.
if [ ! -x "$vmdir/udev/bin/udevadm" ]; then
	echo "deps: fetching udev (udevadm) for the test VM"
	tmp=$(mktemp -d)
	chown _apt "$tmp" 2>/dev/null || true  # apt-get download runs as _apt
	trap 'rm -rf "$tmp"' EXIT
	(cd "$tmp" && apt-get download -qq udev)
	rm -rf "$vmdir/udev.tmp" && mkdir -p "$vmdir/udev.tmp"
	dpkg -x "$tmp"/udev_*.deb "$vmdir/udev.tmp"
	rm -rf "$vmdir/udev" && mv "$vmdir/udev.tmp" "$vmdir/udev"
fi
