/* SPDX-License-Identifier: MIT */
/* What the files of libmpq-net share; nothing here is API. */
#ifndef MPQ_NET_INTERNAL_H
#define MPQ_NET_INTERNAL_H

#include <stdint.h>
#include <time.h>

#include "mpq_net.h"

/* Only what the version script names is visible: see net/mpq-net.map. */
#define MPQ_NET_EXPORT		__attribute__((visibility("default")))

static inline int64_t mpq_net_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* An absolute CLOCK_MONOTONIC deadline for a timeout; -1: none. */
static inline int64_t mpq_net_deadline(int64_t timeout_ns)
{
	int64_t now;

	if (timeout_ns < 0)
		return -1;
	now = mpq_net_now_ns();
	return timeout_ns > INT64_MAX - now ? -1 : now + timeout_ns;
}

/* What is left of a deadline, as a timeout for one call (-1: none). */
static inline int64_t mpq_net_left(int64_t deadline)
{
	int64_t left;

	if (deadline < 0)
		return -1;
	left = deadline - mpq_net_now_ns();
	return left > 0 ? left : 0;
}

#endif
