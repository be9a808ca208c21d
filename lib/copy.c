// SPDX-License-Identifier: MIT
/*
 * What the CPU offers for copying message bodies, asked once at load:
 * mpq_copy_out() (internal.h) uses rep movsb where CPUID says it is fast
 * (ERMS, "enhanced rep movsb/stosb"), and glibc's memcpy elsewhere;
 * mpq_prefetch_w() PREFETCHW where CPUID has it (PRFCHW: a CPU that does
 * not list it does not promise it).
 *
 * Except under QEMU's TCG, which advertises ERMS (-cpu max) but emulates
 * rep movsb a byte at a time: in the test VM the module's 1 KiB stream
 * went from 2.20 to 0.60 M/s with it (bench/README.md). ERMS speaks for
 * the silicon, and under an emulator nothing runs on it.
 */
#include <string.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include "internal.h"

int mpq_copy_erms;
int mpq_prefetch_w_ok;

#if defined(__x86_64__)
/* CPUID leaf 1 ECX bit 31 says a hypervisor; its leaf names it. */
static int mpq_copy_emulated(void)
{
	unsigned int a, b, c, d;
	char sig[12];

	__cpuid(1, a, b, c, d);
	if (!(c & (1U << 31)))
		return 0;
	__cpuid(0x40000000, a, b, c, d);
	memcpy(sig, &b, 4);
	memcpy(sig + 4, &c, 4);
	memcpy(sig + 8, &d, 4);
	return !memcmp(sig, "TCGTCGTCGTCG", 12);
}
#endif

static void __attribute__((constructor)) mpq_copy_setup(void)
{
#if defined(__x86_64__)
	unsigned int a, b, c, d;

	/* Leaf 7, subleaf 0: EBX bit 9 is ERMS. */
	if (__get_cpuid_count(7, 0, &a, &b, &c, &d))
		mpq_copy_erms = !!(b & (1U << 9)) && !mpq_copy_emulated();
	/* Leaf 0x80000001: ECX bit 8 is PRFCHW (PREFETCHW). */
	if (__get_cpuid(0x80000001, &a, &b, &c, &d))
		mpq_prefetch_w_ok = !!(c & (1U << 8));
#endif
}
