// SPDX-License-Identifier: MIT
/*
 * mpq_strerror(): what a negative errno from libmpq means, in the words of
 * the Python exception it stands for where there is one (see mpq.h).
 */
#include <string.h>

#include "internal.h"

MPQ_EXPORT const char *mpq_strerror(int err)
{
	switch (err) {
	case 0:
		return "success";
	case -EAGAIN:
		return "would block (queue.Empty / queue.Full)";
	case -ETIMEDOUT:
		return "timed out";
	case -EPIPE:
		return "the other end is gone (EOFError)";
	case -EMSGSIZE:
		return "message too large or buffer too short";
	case -ECANCELED:
		return "broken barrier (BrokenBarrierError)";
	case -EOWNERDEAD:
		return "the holder died (a lock: acquired, the state it guards "
		       "needs repair; a pool task: its worker died running it)";
	case -EUCLEAN:
		return "shared memory corrupted by a participant";
	case -ENODEV:
		/* Only ever this, from libmpq: no silent fallback to memfd. */
		return "no /dev/mpq: the mpq kernel module is not loaded "
		       "(modprobe mpq), and the kmod backend was asked for "
		       "(MPQ_BACKEND=kmod or MPQ_BACKEND_KMOD)";
	case -EDQUOT:
		/* From the module: over a per-user limit, not out of memory. */
		return "over this user's mpq budget (bytes, objects or "
		       "persistent names: see /proc/mpq_users)";
	default:
		break;
	}
	if (err >= 0 || err < -4095)
		return "not an error code";
	/* Static strings, unlike strerror()'s "Unknown error N" buffer. */
	return strerrordesc_np(-err) ? strerrordesc_np(-err) : "unknown error";
}
