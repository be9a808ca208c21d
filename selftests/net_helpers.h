/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Helpers shared by the selftests of libmpq-net (selftests/net_*_test.c).
 * Include after kselftest_harness.h: they SKIP and ASSERT as a TEST does.
 */
#ifndef MPQ_SELFTEST_NET_HELPERS_H
#define MPQ_SELFTEST_NET_HELPERS_H

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <hiredis/hiredis.h>

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

/*
 * A raw client of m's server, logged in as m's user; *ns its namespace.
 * For what no API shows: a pool's keys, as a hostile peer would see them.
 */
static inline redisContext *raw_connect(struct mpq_manager *m, char *ns,
					size_t len)
{
	const char *a = mpq_manager_address(m);
	char path[256], *hash;
	redisContext *c;
	redisReply *r;

	snprintf(path, sizeof(path), "%s", a + 5);
	hash = strchr(path, '#');
	if (!hash || strlen(hash + 1) >= len)
		return NULL;
	*hash = 0;
	snprintf(ns, len, "%s", hash + 1);
	c = redisConnectUnix(path);
	if (!c || c->err) {
		if (c)
			redisFree(c);
		return NULL;
	}
	r = redisCommand(c, "AUTH %s %s", ns, mpq_manager_authkey(m));
	if (!r || r->type != REDIS_REPLY_STATUS) {
		if (r)
			freeReplyObject(r);
		redisFree(c);
		return NULL;
	}
	freeReplyObject(r);
	return c;
}

/* The pool's id, from its announcement (a raw client: no API for it). */
static inline int pool_id(struct mpq_manager *m, char *id, size_t len)
{
	char ns[64];
	redisContext *c = raw_connect(m, ns, sizeof(ns));
	redisReply *r;
	int ret = -1;

	if (!c)
		return -1;
	r = redisCommand(c, "GET mpq:%s:P:pool", ns);
	if (r && r->type == REDIS_REPLY_STRING &&
	    sscanf(r->str, "%23s", id) == 1 && strlen(id) < len)
		ret = 0;
	if (r)
		freeReplyObject(r);
	redisFree(c);
	return ret;
}

/*
 * How many of items [0, n) of r are not the 8-byte value 3i + 1 that the
 * tests' triple tasks give (an error counts too).
 */
static inline size_t wrong_triples(struct mpq_async_result *r, size_t n)
{
	size_t i, len, bad = 0;
	const void *v;
	uint64_t y;

	for (i = 0; i < n; i++) {
		if (mpq_async_result_value(r, i, &v, &len) || len != 8) {
			bad++;
			continue;
		}
		memcpy(&y, v, sizeof(y));
		bad += y != 3 * i + 1;
	}
	return bad;
}

#endif /* MPQ_SELFTEST_NET_HELPERS_H */
