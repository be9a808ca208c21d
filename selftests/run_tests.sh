#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Every test of mpq, as `make check` runs them (after building):
#   1. the library tests natively on the memfd backend,
#   2. the same under AddressSanitizer + UndefinedBehaviorSanitizer,
#   3. in the test VM: the module's ABI tests and the library tests on the
#      kmod backend, with the VM's own checks (kernel log, rmmod),
#   4. make install, used through pkg-config by an example,
#   5. the module's style (checkpatch --strict) and its W=1 build.
# Prints each binary's TAP, then one line: N passed, N failed, N skipped.
# Exits non-zero if anything failed. The VM part never skips: a VM that
# cannot run is a failure.
#
#   run_tests.sh --vm-only   only part 3 (make check-debug: with
#                            MPQ_VM_KERNEL and MPQ_MODULE set)
set -u
vm_only=0
[ "${1:-}" = --vm-only ] && vm_only=1
top=$(cd "$(dirname "$0")/.." && pwd)
B=$top/build
pass=0 fail=0 skip=0
failed=()

# Add up the "# Totals:" lines of a TAP stream on stdin.
add_totals() {
	local name=$1 rc=$2 out=$3 p f s x e lines
	lines=$(grep '^# Totals:' <<<"$out")
	if [ -z "$lines" ]; then
		echo "not ok - $name: no TAP totals (exit $rc)"
		fail=$((fail + 1)); failed+=("$name")
		return
	fi
	while read -r l; do
		p=$(sed -n 's/.* pass:\([0-9]*\).*/\1/p' <<<"$l")
		f=$(sed -n 's/.* fail:\([0-9]*\).*/\1/p' <<<"$l")
		x=$(sed -n 's/.* xpass:\([0-9]*\).*/\1/p' <<<"$l")
		s=$(sed -n 's/.* skip:\([0-9]*\).*/\1/p' <<<"$l")
		e=$(sed -n 's/.* error:\([0-9]*\).*/\1/p' <<<"$l")
		pass=$((pass + p)); fail=$((fail + f + x + e)); skip=$((skip + s))
		[ $((f + x + e)) -gt 0 ] && failed+=("$name")
	done <<<"$lines"
}

run_tap() {
	local name=$1 out rc
	shift
	echo "# === $name"
	out=$("$@" 2>&1)
	rc=$?
	echo "$out"
	add_totals "$name" "$rc" "$out"
}

# One pass/fail check that is not a TAP binary.
check() {
	local name=$1 out rc
	shift
	out=$("$@" 2>&1)
	rc=$?
	if [ $rc = 0 ]; then
		echo "ok - $name"
		pass=$((pass + 1))
	else
		echo "$out" | tail -n 40
		echo "not ok - $name"
		fail=$((fail + 1)); failed+=("$name")
	fi
}

# The VM's kernel-log check itself (selftests/vm/splat.sh): kernel
# reports count, a user-space program's crash does not.
splat_case() { # WANT(0: a splat, 1: none) LINE...
	local want=$1 rc
	shift
	printf '%s\n' "$@" | "$top/selftests/vm/splat.sh" >/dev/null
	rc=$?
	[ $rc = "$want" ] || { printf 'splat.sh exit %s, wanted %s, for:\n' $rc "$want"; printf '  %s\n' "$@"; }
	[ $rc = "$want" ]
}
splat_tests() {
	local ok=0
	# User space: a crash, a trap, an abort. Not the kernel's.
	splat_case 1 \
		'[   12.345678] traps: kmod_test[123] general protection fault ip:401136 sp:7ffd1e0 error:0 in kmod_test[401000+2000]' \
		'[   12.345679] kmod_test[124]: segfault at 0 ip 0000000000401136 sp 00007ffe2b8 error 6 in kmod_test[401000+2000]' \
		'[   12.345680] traps: pool_test[125] trap invalid opcode ip:401136 sp:7ffd1e0 error:0 in pool_test[401000+2000]' \
		'[    0.000000] Linux version 6.1.0-57-amd64' \
		'[    0.100000] kasan: KernelAddressSanitizer initialized (generic)' || ok=1
	# The kernel: each report kind alone must count.
	local l
	for l in \
		'[   12.3] general protection fault, probably for non-canonical address 0xdffffc0000000001: 0000 [#1] PREEMPT SMP KASAN NOPTI' \
		'[   12.3] general protection fault: 0000 [#1] SMP PTI' \
		'[   12.3] BUG: KASAN: slab-out-of-bounds in mpq_pipe_read+0x1c/0x40 [mpq]' \
		'[   12.3] BUG: unable to handle page fault for address: ffffc90000a00000' \
		'[   12.3] BUG: sleeping function called from invalid context at mm/slab.h:723' \
		'[   12.3] kernel BUG at mm/filemap.c:1560!' \
		'[   12.3] WARNING: CPU: 1 PID: 88 at kmod/object.c:120 mpq_obj_put+0x2a/0x30 [mpq]' \
		'[   12.3] Oops: 0002 [#1] PREEMPT SMP NOPTI' \
		'[   12.3] UBSAN: shift-out-of-bounds in kmod/queue.c:42:7' \
		'[   12.3] WARNING: possible circular locking dependency detected' \
		'[   12.3] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:' \
		'[  240.1] INFO: task kmod_test:77 blocked for more than 120 seconds.' \
		'[  600.0] kmemleak: 2 new suspected memory leaks (see /sys/kernel/debug/kmemleak)'; do
		splat_case 0 "[    1.0] traps: x[1] general protection fault ip:1 sp:2 error:0 in x[1+1]" "$l" || ok=1
	done
	return $ok
}
check "vm: the splat check counts kernel reports, not user-space traps" splat_tests

# Every library test binary; kmod_*_test need the module and tools_test
# needs BPF and the module: they run in the VM.
[ $vm_only = 1 ] || for t in "$B"/selftests/*_test; do
	name=$(basename "$t")
	case $name in kmod_*|tools_test) continue ;; esac
	run_tap "$name (native, memfd)" env MPQ_BACKEND=memfd "$t"
	run_tap "$name (native, memfd, ASan+UBSan)" \
		env MPQ_BACKEND=memfd ASAN_OPTIONS=detect_leaks=1 "$B/asan/selftests/$name"
done

echo "# === VM: ${MPQ_VM_KERNEL:-$("$top/scripts/deps.sh" --kver 2>/dev/null || echo '?')}"
vm_out=$("$top/selftests/vm/run-vm.sh" -t "${MPQ_VM_TIMEOUT:-1500}" -- \
	"$top/selftests/vm/guest_tests.sh" "$B" 2>&1)
vm_rc=$?
echo "$vm_out"
add_totals "VM tests" "$vm_rc" "$vm_out"
if [ $vm_rc = 0 ]; then
	echo "ok - VM: kernel log clean, rmmod mpq succeeded"
	pass=$((pass + 1))
else
	echo "not ok - VM: the VM run failed (exit $vm_rc; see run-vm lines above)"
	fail=$((fail + 1)); failed+=("VM run")
fi
if [ $vm_only = 1 ]; then
	[ ${#failed[@]} -gt 0 ] && echo "# failed: ${failed[*]}"
	echo "$pass passed, $fail failed, $skip skipped"
	[ $fail = 0 ]
	exit
fi

check "kmod: checkpatch --strict clean" bash -c \
	"out=\$(make -s -C '$top' checkpatch); echo \"\$out\"; [ -z \"\$out\" ]"
# The tools on the host, where the module is never loaded: each missing
# requirement is one line on stderr and exit status 1.
one_line_exit1() {
	local want=$1 out rc
	shift
	out=$("$@" 2>&1 >/dev/null)
	rc=$?
	echo "$out"
	[ $rc = 1 ] && [ "$(printf '%s\n' "$out" | wc -l)" = 1 ] &&
		grep -q "$want" <<<"$out"
}
check "tools: mpqstat without the module says so in one line, exit 1" \
	one_line_exit1 "module is not loaded" "$B/tools/mpqstat"
check "tools: mpqsnoop without the module (or BTF) says so in one line, exit 1" \
	one_line_exit1 "not loaded\|no BTF" "$B/tools/mpqsnoop"
check "tools: mpqlat as a user without capabilities says what it needs in one line, exit 1" \
	one_line_exit1 "needs CAP_BPF and CAP_PERFMON" setpriv --reuid=65534 --regid=65534 \
	--clear-groups "$B/tools/mpqlat"
check "tools: mpqwait without its library says so in one line, exit 1" \
	one_line_exit1 "/nonexistent" "$B/tools/mpqwait" -l /nonexistent

# The benchmark programs check every message they move (order, count,
# content): run a few cells with few samples, for that and not for time.
for cell in "rtt mpq-queue --backend memfd --wait adaptive --count 2000" \
	    "stream mpq-queue --backend memfd --wait block --batch 32 --count 200000" \
	    "mpmc mpq-queue --backend memfd --wait adaptive --count 200000" \
	    "stream pipe --batch 8 --count 20000"; do
	check "bench: mpqbench $cell moves every message intact" \
		"$B/bench/mpqbench" $cell
done
# pool_bench checks every result of every map and apply it times.
for cell in "pool-map mpq-pool --batch 0 --count 200000" \
	    "pool-map mpq-pool-iov --batch 1 --count 20000" \
	    "pool-apply mpq-pool --batch 1 --count 20000" \
	    "pool-cpu mpq-pool --size 16384 --workers 2 --count 256"; do
	check "bench: pool_bench $cell gets every result right" \
		env MPQ_BACKEND=memfd "$B/bench/pool_bench" $cell
done
check "bench: cpython_bench.py rtt cpython-pipe runs" \
	/usr/bin/python3 "$top/bench/cpython_bench.py" rtt cpython-pipe --count 2000
# The peer libraries' programs check every message too (bench/peers/);
# iceoryx is left out: its RouDi daemon is one per machine.
for cell in "ck stream ck-ring-spsc --size 1024 --count 20000" \
	    "ck mpmc ck-ring-mpmc --count 20000" \
	    "boost mpmc boost-mq --count 20000" \
	    "zeromq stream zeromq-ipc --count 20000" \
	    "zeromq mpmc zeromq-ipc --count 20000"; do
	check "bench: peers/$cell moves every message intact" \
		env BENCH_TIMEOUT=60 "$B/bench/peers/${cell%% *}" ${cell#* }
done

check "lib: the static archives show only the version scripts' names" \
	"$top/selftests/static_names.sh" "$B"
check "make install: an example builds with pkg-config against it and runs" bash -c '
	d=$(mktemp -d) && trap "rm -rf $d" EXIT &&
	make -s -C "$0" install DESTDIR="$d" PREFIX=/opt/mpq LIBDIR=/opt/mpq/lib >/dev/null &&
	test -f "$d/opt/mpq/include/mpq.h" -a -f "$d/opt/mpq/lib/libmpq.a" &&
	test -L "$d/opt/mpq/lib/libmpq.so.0" &&
	flags=$(PKG_CONFIG_SYSROOT_DIR="$d" PKG_CONFIG_PATH="$d/opt/mpq/lib/pkgconfig" \
		pkg-config --cflags --libs mpq) &&
	cc -o "$d/pc" "$0/examples/producer_consumer.c" $flags -Wl,-rpath,"$d/opt/mpq/lib" &&
	MPQ_BACKEND=memfd "$d/pc" 3' "$top"

check "make uninstall removes everything make install put down" \
	"$top/selftests/install_uninstall.sh"
check "man: every page lints clean, every API function has one, ERRORS, mpq(7)" \
	"$top/selftests/man_lint.sh"
check "tools: the example outputs show no build machine's paths" bash -c \
	"! grep -nE '/work/|/home/|/tmp/|/build/' '$top'/tools/examples/*.txt"
check "CHANGELOG: a section for every version node of lib/mpq.map" bash -c "
	for n in \$(sed -n 's/^\(MPQ_[0-9.]*\) {.*/\1/p' '$top/lib/mpq.map'); do
		grep -q \"^\$n \" '$top/CHANGELOG' || { echo \"CHANGELOG: no section \$n\"; exit 1; }
	done"
check "licences: every tracked source file has an SPDX tag, LICENSES/ each text" \
	"$top/selftests/spdx.sh"

kdir=/usr/src/linux-headers-$("$top/scripts/deps.sh" --kver)
check "kmod: W=1 build has no warnings" bash -c \
	"rm -f '$top'/kmod/*.o '$top'/kmod/.*.o.cmd
	 out=\$(make -C '$kdir' M='$top' W=1 modules 2>&1); echo \"\$out\"
	 ! grep -q 'warning:' <<<\"\$out\""

[ ${#failed[@]} -gt 0 ] && echo "# failed: ${failed[*]}"
echo "$pass passed, $fail failed, $skip skipped"
[ $fail = 0 ]
