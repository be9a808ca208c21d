#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The test VM's kernel-log check: does a dmesg hold a kernel splat?
#
#   splat.sh [FILE]   read FILE (default stdin); print each splat line with
#                     its context and exit 0 if there is one, else exit 1
#
# Kernel reports only: a user-space program that crashes logs a "traps:"
# or "segfault at" line, which fails that program's own test and is not a
# kernel bug. The kernel's general protection fault reads
#   general protection fault, probably for non-canonical address 0x...: 0000 [#1] ...
#   general protection fault: 0000 [#1] ...
# while a user-space one reads
#   traps: prog[123] general protection fault ip:... sp:... error:0 in ...
set -u

patterns=(
	'BUG: '                                 # BUG: KASAN/sleeping/unable to handle/soft lockup...
	'kernel BUG at '
	'WARNING: '                             # WARN_ON, lockdep, suspicious RCU usage
	'Oops'
	'general protection fault(, probably for non-canonical address 0x[0-9a-f]+)?: [0-9a-f]+ \[#[0-9]+\]'
	'KASAN: '
	'UBSAN: '
	'possible recursive locking'
	'possible circular locking'
	'inconsistent lock state'
	'possible irq lock inversion'
	'suspicious RCU usage'
	'rcu: INFO: rcu_[a-z_]+ (self-)?detected stall'
	'INFO: task .* blocked for more than'
	'kmemleak: [0-9]+ new suspected memory leak'
	'unreferenced object 0x'
	'Call Trace:'
)
re=$(IFS='|'; echo "${patterns[*]}")
# A user-space trap line is never a splat, whatever it says after "traps:".
log=$(cat "${1:-/dev/stdin}")
hits=$(grep -n '' <<<"$log" | grep -v -E '^[0-9]+:(\[[^]]*\] )?(traps: |.*: segfault at )' |
	grep -E "^[0-9]+:.*($re)")
[ -n "$hits" ] || exit 1
# The first report with its context (the stack), then every matching line.
first=${hits%%:*}
sed -n "$((first > 2 ? first - 2 : 1)),$((first + 25))p" <<<"$log"
echo "--- every splat line:"
head -40 <<<"$hits"
exit 0
