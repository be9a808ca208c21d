#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The manual pages: each lints clean (man --warnings; mandoc -T lint at
# warning level where mandoc is installed), every function of the version
# script (lib/mpq.map) is named in a page's NAME section (so that
# man mpq_FUNCTION opens it), every section 3 page has ERRORS, and
# mpq(7) refers to every page.
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
fail=0
pages=(man/*.[1-9])

for p in "${pages[@]}"; do
	out=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l "$p" 2>&1 >/dev/null)
	[ -z "$out" ] || { echo "$p: man --warnings:"; echo "$out"; fail=1; }
	if command -v mandoc >/dev/null; then
		out=$(mandoc -T lint -W warning "$p" 2>&1 |
		      grep -v 'referenced manual not found')
		[ -z "$out" ] || { echo "$p: mandoc -T lint:"; echo "$out"; fail=1; }
	fi
done

names=$(for p in man/*.3; do
	sed -n '/^\.SH NAME/,/\\-/p' "$p" | sed 's/\\-.*//' | grep -o 'mpq_[a-z_0-9]*'
done | sort -u)
for fn in $(sed -n 's/^[[:space:]]*\(mpq_[a-z_0-9]*\);.*/\1/p' lib/mpq.map); do
	grep -qx "$fn" <<<"$names" || { echo "$fn: in lib/mpq.map, in no page's NAME"; fail=1; }
done

for p in man/*.3; do
	grep -q '^\.SH ERRORS' "$p" || { echo "$p: no ERRORS section"; fail=1; }
done

[ -f man/mpq.7 ] || { echo "man/mpq.7: no overview page"; fail=1; }
[ -f man/mpq.7 ] && for p in "${pages[@]}"; do
	b=${p#man/}
	[ "$b" = mpq.7 ] && continue
	grep -q "^\.BR ${b%.*} (${b##*.})" man/mpq.7 ||
		{ echo "man/mpq.7: no reference to ${b%.*}(${b##*.})"; fail=1; }
done
[ $fail = 0 ] && echo "${#pages[@]} pages lint clean"
exit $fail
