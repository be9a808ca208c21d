// SPDX-License-Identifier: MIT
/*
 * What the CPU offers for copying message bodies, asked once at load:
 * mpq_copy_out() (internal.h) uses rep movsb where CPUID says it is fast
 * (ERMS, "enhanced rep movsb/stosb"), and glibc's memcpy elsewhere.
 */
#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include "internal.h"

int mpq_copy_erms;

static void __attribute__((constructor)) mpq_copy_setup(void)
{
#if defined(__x86_64__)
	unsigned int a, b, c, d;

	/* Leaf 7, subleaf 0: EBX bit 9 is ERMS. */
	if (__get_cpuid_count(7, 0, &a, &b, &c, &d))
		mpq_copy_erms = !!(b & (1U << 9));
#endif
}
