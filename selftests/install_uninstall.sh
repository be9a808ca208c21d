#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# make install into a DESTDIR, then make uninstall: nothing but empty
# directories may stay. Run by run_tests.sh after the build, when the
# tools and kmod/mpq.ko exist, so that those are part of what install
# puts down (each is required here, not skipped: make check builds them).
#
#   install_uninstall.sh [--lib-only]   --lib-only: no tools, no module
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
args=(DESTDIR="$d" PREFIX=/opt/mpq)

make -s -C "$top" install "${args[@]}" >/dev/null
n=$(find "$d" ! -type d | wc -l)
for f in opt/mpq/include/mpq.h opt/mpq/include/linux/mpq.h opt/mpq/include/mpq_net.h \
	 opt/mpq/include/mpq_ext.h opt/mpq/share/man/man3/mpq_manager_queue_open.3 \
	 opt/mpq/lib/libmpq.a opt/mpq/lib/libmpq.so.0 opt/mpq/lib/pkgconfig/mpq.pc \
	 opt/mpq/share/man/man3/mpq_queue.3 opt/mpq/share/man/man3/mpq_queue_put.3 \
	 opt/mpq/share/man/man8/mpqstat.8; do
	[ -e "$d/$f" ] || { echo "install did not put down $f"; exit 1; }
done
if [ "${1:-}" != --lib-only ]; then
	[ -x "$d/opt/mpq/sbin/mpqstat" ] || { echo "install did not put down the tools"; exit 1; }
	ls "$d"/lib/modules/*/updates/mpq.ko >/dev/null ||
		{ echo "install did not put down the module"; exit 1; }
fi

make -s -C "$top" uninstall "${args[@]}" >/dev/null
left=$(find "$d" ! -type d)
if [ -n "$left" ]; then
	echo "of $n entries install put down, $(wc -l <<<"$left") stay after uninstall:"
	sed "s|^$d||" <<<"$left" | head -n 30
	exit 1
fi
echo "install put down $n entries, uninstall removed them all"
