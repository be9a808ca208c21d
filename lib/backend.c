// SPDX-License-Identifier: MIT
/*
 * Which backend an object is made with: the caller's choice, else the
 * MPQ_BACKEND environment variable, else the module where /dev/mpq exists
 * and memfd elsewhere, so that a program works on any machine.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

MPQ_EXPORT const char *mpq_backend_name(int backend)
{
	switch (backend) {
	case MPQ_BACKEND_KMOD:
		return "kmod";
	case MPQ_BACKEND_MEMFD:
		return "memfd";
	default:
		return "?";
	}
}

/* Returns MPQ_BACKEND_KMOD or MPQ_BACKEND_MEMFD, or -EINVAL. */
int mpq_backend_resolve(int requested)
{
	const char *env;

	if (requested == MPQ_BACKEND_KMOD || requested == MPQ_BACKEND_MEMFD)
		return requested;
	if (requested != MPQ_BACKEND_DEFAULT)
		return -EINVAL;

	env = getenv("MPQ_BACKEND");
	if (env && *env) {
		if (!strcmp(env, "kmod"))
			return MPQ_BACKEND_KMOD;
		if (!strcmp(env, "memfd"))
			return MPQ_BACKEND_MEMFD;
		return -EINVAL;
	}
	return access("/dev/" MPQ_DEVICE_NAME, F_OK) == 0 ?
		MPQ_BACKEND_KMOD : MPQ_BACKEND_MEMFD;
}
