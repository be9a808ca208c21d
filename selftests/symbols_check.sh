#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The Debian symbols files list exactly the names the version scripts
# export, each under its node: a name added to lib/mpq.map or
# net/mpq-net.map and forgotten in debian/ would reach users of the
# package with no minimum version (dpkg-gensymbols only warns).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
fail=0

# name@NODE for every global name in a version script.
mapped() {
	awk '/^[A-Z_0-9.]+ *\{/ { node = $1 }
	     /^[ \t]+mpq_[a-z0-9_]+;/ { gsub(/[ \t;]/, ""); print $0 "@" node }' "$1" | sort -u
}

listed() {
	sed -n 's/^ \(mpq_[a-z0-9_]*@[A-Z_0-9.]*\) .*/\1/p' "$1" | sort -u
}

for pair in "lib/mpq.map debian/libmpq0.symbols" \
	    "net/mpq-net.map debian/libmpq-net0.symbols"; do
	set -- $pair
	missing=$(comm -23 <(mapped "$top/$1") <(listed "$top/$2"))
	extra=$(comm -13 <(mapped "$top/$1") <(listed "$top/$2"))
	for s in $missing; do
		echo "$2: $s is exported by $1 but not listed"; fail=1
	done
	for s in $extra; do
		echo "$2: $s is listed but $1 does not export it"; fail=1
	done
done
exit $fail
