// SPDX-License-Identifier: MIT
/*
 * Which backend an object is made with: the caller's choice, else the
 * MPQ_BACKEND environment variable, else the module where /dev/mpq exists
 * and memfd elsewhere, so that a program works on any machine.
 *
 * The two differ in what users see (a module block outlives nothing but
 * its handles, its fds are pollable; see mpq(3)'s pages), so the choice
 * is never silent: mpq_backend_default() says which one objects get and
 * why, and MPQ_BACKEND=kmod where the module is absent fails (-ENODEV,
 * whose mpq_strerror() names the module and /dev/mpq) rather than falling
 * back to memfd.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define MPQ_DEV		"/dev/" MPQ_DEVICE_NAME

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

/*
 * The default and the reason for it: MPQ_BACKEND_KMOD, MPQ_BACKEND_MEMFD,
 * -EINVAL (MPQ_BACKEND names no backend), or -ENODEV (MPQ_BACKEND=kmod
 * and no /dev/mpq).
 */
static int mpq_backend_pick(const char **why)
{
	const char *env = getenv("MPQ_BACKEND");

	if (env && *env) {
		if (!strcmp(env, "memfd")) {
			*why = "MPQ_BACKEND=memfd in the environment";
			return MPQ_BACKEND_MEMFD;
		}
		if (strcmp(env, "kmod")) {
			*why = "MPQ_BACKEND in the environment is neither "
			       "\"kmod\" nor \"memfd\"";
			return -EINVAL;
		}
		if (access(MPQ_DEV, F_OK)) {
			*why = "MPQ_BACKEND=kmod in the environment, but there "
			       "is no " MPQ_DEV ": the mpq kernel module is not "
			       "loaded (modprobe mpq)";
			return -ENODEV;
		}
		*why = "MPQ_BACKEND=kmod in the environment, and " MPQ_DEV
		       " exists";
		return MPQ_BACKEND_KMOD;
	}
	if (access(MPQ_DEV, F_OK)) {
		*why = "no " MPQ_DEV ": the mpq kernel module is not loaded, "
		       "so objects use memfd (no pollable queues; shared "
		       "memory as the memfd backend keeps it)";
		return MPQ_BACKEND_MEMFD;
	}
	if (access(MPQ_DEV, R_OK | W_OK)) {
		*why = MPQ_DEV " exists (the mpq kernel module is loaded) but "
		       "this user may not open it: objects fail with -EACCES "
		       "(MPQ_BACKEND=memfd chooses memfd)";
		return MPQ_BACKEND_KMOD;
	}
	*why = MPQ_DEV " exists: the mpq kernel module is loaded";
	return MPQ_BACKEND_KMOD;
}

MPQ_EXPORT int mpq_backend_default(const char **why)
{
	const char *reason;
	int ret = mpq_backend_pick(&reason);

	if (why)
		*why = reason;
	return ret;
}

/* Returns MPQ_BACKEND_KMOD or MPQ_BACKEND_MEMFD, -EINVAL or -ENODEV. */
int mpq_backend_resolve(int requested)
{
	const char *why;

	if (requested == MPQ_BACKEND_KMOD || requested == MPQ_BACKEND_MEMFD)
		return requested;
	if (requested != MPQ_BACKEND_DEFAULT)
		return -EINVAL;
	return mpq_backend_pick(&why);
}
