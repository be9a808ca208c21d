/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Helpers shared by the selftests of libmpq-net (selftests/net_*_test.c).
 * Include after kselftest_harness.h: they SKIP and ASSERT as a TEST does.
 */
#ifndef MPQ_SELFTEST_NET_HELPERS_H
#define MPQ_SELFTEST_NET_HELPERS_H

#include <errno.h>

#include "mpq_net.h"

/*
 * A manager with real redis-servers (mpq_manager_start with a, NULL for
 * the defaults); the test is skipped where there is no redis-server, as
 * on a machine without `make deps`, and fails on any other error.
 */
static inline struct mpq_manager *
start_or_skip(struct __test_metadata *_metadata,
	      const struct mpq_manager_attr *a)
{
	struct mpq_manager *m = NULL;
	int err = mpq_manager_start(&m, a);

	if (err == -ENOENT)
		SKIP(return NULL, "no redis-server on PATH (make deps)");
	ASSERT_EQ(0, err);
	return m;
}

#endif /* MPQ_SELFTEST_NET_HELPERS_H */
