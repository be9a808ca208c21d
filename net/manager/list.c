// SPDX-License-Identifier: MIT
/*
 * A managed list: one Redis list, "mpq:<ns>:l:<name>". pop(i) from the
 * middle is Lua (take the tail off, drop the item, put the tail back) so
 * that no other client sees the list half-changed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "manager/manager.h"

struct mpq_manager_list {
	struct mgr_obj o;	/* keys[0]: the list */
};

MPQ_NET_EXPORT int mpq_manager_list(struct mpq_manager *m, const char *name,
				    struct mpq_manager_list **out)
{
	struct mpq_manager_list *l;
	int err;

	if (!out)
		return -EINVAL;
	l = mpq__mgr_obj_new(m, 'l', name, NULL, 1, sizeof(*l), &err);
	if (l)
		*out = l;
	return err;
}

MPQ_NET_EXPORT void mpq_manager_list_free(struct mpq_manager_list *l)
{
	mpq__mgr_obj_free(l);
}

MPQ_NET_EXPORT int mpq_manager_list_extend(struct mpq_manager_list *l,
					   const struct iovec *vals,
					   unsigned int n)
{
	if (!l || (n && !vals))
		return -EINVAL;
	return mpq__mgr_command_chunked(l->o.m, "RPUSH", l->o.keys[0], &vals, 1,
					n);
}

MPQ_NET_EXPORT int mpq_manager_list_append(struct mpq_manager_list *l,
					   const void *val, size_t len)
{
	struct iovec v = { (void *)val, len };

	if (!val && len)
		return -EINVAL;
	return mpq_manager_list_extend(l, &v, 1);
}

MPQ_NET_EXPORT int64_t mpq_manager_list_len(struct mpq_manager_list *l)
{
	const char *argv[2];
	redisReply *r;
	long long n;
	int err;

	if (!l)
		return -EINVAL;
	argv[0] = "LLEN";
	argv[1] = l->o.keys[0];
	err = mpq__mgr_command(l->o.m, &r, 2, argv, NULL, 0);
	if (err)
		return err;
	err = mpq__mgr_reply_int(r, &n);
	freeReplyObject(r);
	return err ? err : n;
}

MPQ_NET_EXPORT int mpq_manager_list_get(struct mpq_manager_list *l,
					int64_t index, void *buf, size_t *len)
{
	const char *argv[3];
	char idx[32];
	redisReply *r;
	int err;

	if (!l)
		return -EINVAL;
	snprintf(idx, sizeof(idx), "%lld", (long long)index);
	argv[0] = "LINDEX";
	argv[1] = l->o.keys[0];
	argv[2] = idx;
	err = mpq__mgr_command(l->o.m, &r, 3, argv, NULL, 0);
	if (err)
		return err;
	err = mpq__mgr_copy_out(r, buf, len);
	freeReplyObject(r);
	return err == -ENOENT ? -ERANGE : err;
}

MPQ_NET_EXPORT int mpq_manager_list_set(struct mpq_manager_list *l,
					int64_t index, const void *val,
					size_t len)
{
	const char *argv[4];
	size_t lens[4];
	char idx[32];
	redisReply *r;
	int err;

	if (!l || (!val && len))
		return -EINVAL;
	snprintf(idx, sizeof(idx), "%lld", (long long)index);
	argv[0] = "LSET";
	argv[1] = l->o.keys[0];
	argv[2] = idx;
	argv[3] = val ? val : "";
	lens[0] = 4;
	lens[1] = strlen(l->o.keys[0]);
	lens[2] = strlen(idx);
	lens[3] = len;
	err = mpq__mgr_command(l->o.m, &r, 4, argv, lens, 0);
	if (err)
		/* LSET on a missing key says "no such key". */
		return err == -EREMOTEIO ? -ERANGE : err;
	freeReplyObject(r);
	return 0;
}

/* ARGV[1]: index (negative from the end). */
static struct mgr_script pop_lua = { .src =
	"local n = redis.call('LLEN', KEYS[1]) local i = tonumber(ARGV[1]) "
	"if i < 0 then i = i + n end "
	"if i < 0 or i >= n then return redis.error_reply('MPQ 34') end "
	"if i == n - 1 then return redis.call('RPOP', KEYS[1]) end "
	"if i == 0 then return redis.call('LPOP', KEYS[1]) end "
	"local tail = redis.call('LRANGE', KEYS[1], i, -1) "
	"redis.call('LTRIM', KEYS[1], 0, i - 1) "
	"for j = 2, #tail do redis.call('RPUSH', KEYS[1], tail[j]) end "
	"return tail[1]" };

MPQ_NET_EXPORT int mpq_manager_list_pop(struct mpq_manager_list *l,
					int64_t index, void *buf, size_t *len)
{
	const char *keys[1], *args[1];
	char idx[32];
	int err;

	if (!l)
		return -EINVAL;
	snprintf(idx, sizeof(idx), "%lld", (long long)index);
	keys[0] = l->o.keys[0];
	args[0] = idx;
	err = mpq__mgr_eval_bulk(l->o.m, &pop_lua, buf, len, 1, keys, 1, args,
				 NULL);
	return err == -ENOENT ? -ERANGE : err;
}

MPQ_NET_EXPORT int mpq_manager_list_slice(struct mpq_manager_list *l,
					  int64_t start, int64_t stop,
					  int (*fn)(const void *, size_t,
						    void *), void *arg)
{
	const char *argv[4];
	char a[32], b[32];
	int64_t n = mpq_manager_list_len(l), from, to, at;
	redisReply *r;
	size_t i, got;
	int err;

	if (!l || !fn)
		return -EINVAL;
	if (n < 0)
		return n;
	/* Python's slice bounds, made absolute. */
	from = start < 0 ? (start + n < 0 ? 0 : start + n) : start;
	to = stop < 0 ? stop + n : (stop > n ? n : stop);
	argv[0] = "LRANGE";
	argv[1] = l->o.keys[0];
	/* 256 items per reply, so a long list is not one huge reply. */
	for (at = from; at < to; at += 256) {
		int64_t last = at + 255 < to - 1 ? at + 255 : to - 1;

		snprintf(a, sizeof(a), "%lld", (long long)at);
		snprintf(b, sizeof(b), "%lld", (long long)last);
		argv[2] = a;
		argv[3] = b;
		err = mpq__mgr_command(l->o.m, &r, 4, argv, NULL, 0);
		if (err)
			return err;
		if (r->type != REDIS_REPLY_ARRAY) {
			freeReplyObject(r);
			return -EPROTO;
		}
		got = r->elements;
		for (i = 0; i < r->elements; i++) {
			if (r->element[i]->type != REDIS_REPLY_STRING) {
				freeReplyObject(r);
				return -EPROTO;
			}
			err = fn(r->element[i]->str, r->element[i]->len, arg);
			if (err) {
				freeReplyObject(r);
				return err;
			}
		}
		freeReplyObject(r);
		if (got == 0)
			break;	/* the list shrank meanwhile */
	}
	return 0;
}
