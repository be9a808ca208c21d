#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The static archives show nothing but their API: run by run_tests.sh.
#   1. nm of libmpq.a and libmpq-net.a: every defined global is a name
#      of the version script (lib/mpq.map, net/mpq-net.map), or sdt.h's
#      _.stapsdt.base, which every object with USDT probes shares;
#   2. a program that defines every internal name of both libraries
#      itself (pool_check, mpq_block_new, ...: each global of the
#      compiled objects that the scripts do not export) links against
#      both archives and runs: a queue, a pool task, libmpq-net's
#      version, and its own pool_check is the one it calls.
#
#   static_names.sh [BUILD_DIR]     (default: build)
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
B=${1:-$top/build}
CC=${CC:-cc}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

map_syms() {
	sed -n 's/^[[:space:]]*\([A-Za-z_][A-Za-z0-9_]*\);.*/\1/p' "$1" | sort -u
}
defined_globals() {
	nm -g --defined-only "$@" 2>/dev/null | awk 'NF == 3 { print $3 }' | sort -u
}

for lib in "libmpq:lib/mpq.map" "libmpq-net:net/mpq-net.map"; do
	name=${lib%%:*} map=$top/${lib#*:}
	map_syms "$map" >"$tmp/$name.map"
	[ -s "$tmp/$name.map" ] || { echo "no names in $map"; exit 1; }
	defined_globals "$B/lib/$name.a" | grep -vx '_\.stapsdt\.base' |
		comm -23 - "$tmp/$name.map" >"$tmp/$name.extra" || true
	if [ -s "$tmp/$name.extra" ]; then
		echo "$name.a: $(wc -l <"$tmp/$name.extra") globals not in ${lib#*:}:"
		sed 's/^/  /' "$tmp/$name.extra" | head -n 20
		fail=1
	fi
done

# The internal names: the compiled objects' globals that no script exports.
objs=$(find "$B/lib" "$B/net" -name '*.o' ! -name '*.a.o' 2>/dev/null)
defined_globals $objs | grep -v '\.' |
	comm -23 - <(sort -u "$tmp/libmpq.map" "$tmp/libmpq-net.map") >"$tmp/internal"
n=$(wc -l <"$tmp/internal")
grep -qx pool_check "$tmp/internal" || { echo "pool_check is not among the internal names"; exit 1; }

{
	cat <<-'EOF'
	#include <stdint.h>
	#include <stdio.h>
	#include <string.h>
	#include <mpq.h>
	#include <mpq_net.h>

	static int64_t square(int64_t x) { return x * x; }
	MPQ_TASK_VALUE(square, int64_t, int64_t);
	EOF
	i=0
	while read -r s; do
		i=$((i + 1))
		echo "int $s(void); int $s(void) { return $((1000 + i)); }"
	done <"$tmp/internal"
	cat <<-EOF
	int main(void)
	{
		struct mpq_pool_attr pa = { .processes = 1, .backend = MPQ_BACKEND_MEMFD };
		struct mpq_queue_attr qa = { .backend = MPQ_BACKEND_MEMFD };
		struct mpq_queue *q;
		struct mpq_pool *p;
		char buf[16];
		size_t len = sizeof(buf);
		int64_t x = 7, *y = NULL;
		ssize_t n;

		if (pool_check() != $((1000 + $(grep -nx pool_check "$tmp/internal" | cut -d: -f1))))
			return 10;
		if (mpq_queue_new(&q, &qa) || mpq_queue_put(q, "hello", 5, -1) ||
		    mpq_queue_get(q, buf, &len, -1) || len != 5 || memcmp(buf, "hello", 5))
			return 11;
		mpq_queue_free(q);
		if (mpq_pool_new(&p, &pa))
			return 12;
		n = mpq_pool_apply(p, square_task, &x, sizeof(x), (void **)&y);
		if (n != sizeof(*y) || *y != 49)
			return 13;
		free(y);
		mpq_pool_close(p);
		mpq_pool_join(p, -1);
		mpq_pool_free(p);
		if (!mpq_net_version()[0])
			return 14;
		printf("%d internal names of the program's own; libmpq ran\n", $n);
		return 0;
	}
	EOF
} >"$tmp/prog.c"

if ! "$CC" -std=gnu11 -D_GNU_SOURCE -include stdlib.h -I"$top/include" -o "$tmp/prog" "$tmp/prog.c" \
	"$B/lib/libmpq-net.a" "$B/lib/libmpq.a" -lcrypto -lhiredis -luring -lpthread 2>"$tmp/ld.err"; then
	echo "a program with the $n internal names of its own does not link:"
	grep -v '^/usr/bin/ld: .*: in function' "$tmp/ld.err" | head -n 20
	exit 1
fi
MPQ_BACKEND=memfd "$tmp/prog" || { echo "the program exited $?"; exit 1; }
exit $fail
