#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Every tracked source file names its licence with an SPDX tag in its
# first lines, and every licence (or exception) a tag names has its text
# in LICENSES/, laid out as the kernel's (preferred/, exceptions/).
# Not sources, so not tagged: prose and data (*.md, CHANGELOG, the tools'
# example outputs), the licence texts, .gitignore, and debian/'s metadata
# whose formats have no comments (changelog, copyright: DEP-5, which names
# the licences itself; source/format; the symbols file).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
git rev-parse --git-dir >/dev/null 2>&1 || { echo "spdx.sh: not a git checkout"; exit 1; }

fail=0 n=0
declare -A seen
while IFS= read -r -d '' f; do
	case $f in
	*.md | CHANGELOG | COPYING | .gitignore | LICENSES/* | tools/examples/*.txt | \
	debian/changelog | debian/copyright | debian/source/* | debian/*symbols | \
	debian/*.install | debian/*.manpages | debian/*.links | debian/*.dkms | \
	debian/*.docs | debian/*.examples | debian/*.lintian-overrides | \
	debian/clean | debian/not-installed | debian/watch | debian/upstream/*)
		continue ;;
	esac
	[ -f "$f" ] || continue
	n=$((n + 1))
	tag=$(head -n 5 "$f" | sed -n 's/.*SPDX-License-Identifier: *\(.*\)$/\1/p' |
	      sed 's| *\*/ *$||' | head -n 1)
	if [ -z "$tag" ]; then
		echo "$f: no SPDX-License-Identifier in its first 5 lines"
		fail=1
		continue
	fi
	for id in $(tr '()' '  ' <<<"$tag"); do
		case $id in OR | AND | WITH) continue ;; esac
		seen[$id]=1
	done
done < <(git ls-files -z)

for id in "${!seen[@]}"; do
	if [ ! -f "LICENSES/preferred/$id" ] && [ ! -f "LICENSES/exceptions/$id" ]; then
		echo "$id: named by an SPDX tag, but no LICENSES/preferred/$id or LICENSES/exceptions/$id"
		fail=1
	fi
done
[ $fail = 0 ] && echo "$n tracked files tagged; licences: ${!seen[*]}"
exit $fail
