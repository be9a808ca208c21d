// SPDX-License-Identifier: MIT
/*
 * A managed dict: one Redis hash, "mpq:<ns>:d:<name>". Single steps are
 * single commands; setdefault, pop and compare-and-set are Lua, so no
 * other client's command runs between their read and their write.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "manager/manager.h"

struct mpq_manager_dict {
	struct mgr_obj o;	/* keys[0]: the hash */
};

MPQ_NET_EXPORT int mpq_manager_dict(struct mpq_manager *m, const char *name,
				    struct mpq_manager_dict **out)
{
	struct mpq_manager_dict *d;
	int err;

	if (!out)
		return -EINVAL;
	d = mpq__mgr_obj_new(m, 'd', name, NULL, 1, sizeof(*d), &err);
	if (d)
		*out = d;
	return err;
}

MPQ_NET_EXPORT void mpq_manager_dict_free(struct mpq_manager_dict *d)
{
	mpq__mgr_obj_free(d);
}

/* HGET-like: argv[1] is the hash; one more key/arg in argv[2..]. */
static int cmd(struct mpq_manager_dict *d, redisReply **r, const char *verb,
	       const void *k, size_t klen, const void *v, size_t vlen,
	       int argc)
{
	const char *argv[4];
	size_t lens[4];

	*r = NULL;
	if (!d || (!k && klen))
		return -EINVAL;
	argv[0] = verb;
	argv[1] = d->o.keys[0];
	argv[2] = k ? k : "";
	argv[3] = v;
	lens[0] = strlen(verb);
	lens[1] = strlen(d->o.keys[0]);
	lens[2] = klen;
	lens[3] = vlen;
	return mpq__mgr_command(d->o.m, r, argc, argv, lens, 0);
}

/* cmd() of a command that answers an integer, put in *n. */
static int cmd_int(struct mpq_manager_dict *d, const char *verb,
		   const void *k, size_t klen, const void *v, size_t vlen,
		   int argc, long long *n)
{
	redisReply *r;
	int err = cmd(d, &r, verb, k, klen, v, vlen, argc);

	if (err)
		return err;
	err = mpq__mgr_reply_int(r, n);
	freeReplyObject(r);
	return err;
}

MPQ_NET_EXPORT int mpq_manager_dict_get(struct mpq_manager_dict *d,
					const void *key, size_t klen,
					void *buf, size_t *len)
{
	redisReply *r;
	int err = cmd(d, &r, "HGET", key, klen, NULL, 0, 3);

	if (err)
		return err;
	err = mpq__mgr_copy_out(r, buf, len);
	freeReplyObject(r);
	return err;
}

MPQ_NET_EXPORT int mpq_manager_dict_set(struct mpq_manager_dict *d,
					const void *key, size_t klen,
					const void *val, size_t vlen)
{
	redisReply *r;
	int err;

	if (!val && vlen)
		return -EINVAL;
	err = cmd(d, &r, "HSET", key, klen, val ? val : "", vlen, 4);
	if (!err)
		freeReplyObject(r);
	return err;
}

MPQ_NET_EXPORT int mpq_manager_dict_delete(struct mpq_manager_dict *d,
					   const void *key, size_t klen)
{
	long long n;
	int err = cmd_int(d, "HDEL", key, klen, NULL, 0, 3, &n);

	return err ? err : n > 0;
}

MPQ_NET_EXPORT int mpq_manager_dict_contains(struct mpq_manager_dict *d,
					     const void *key, size_t klen)
{
	long long n;
	int err = cmd_int(d, "HEXISTS", key, klen, NULL, 0, 3, &n);

	return err ? err : n > 0;
}

MPQ_NET_EXPORT int64_t mpq_manager_dict_len(struct mpq_manager_dict *d)
{
	long long n;
	int err = cmd_int(d, "HLEN", NULL, 0, NULL, 0, 2, &n);

	return err ? err : n;
}

MPQ_NET_EXPORT int mpq_manager_dict_add(struct mpq_manager_dict *d,
					const void *key, size_t klen,
					int64_t delta, int64_t *result)
{
	char num[32];
	long long n;
	int err;

	snprintf(num, sizeof(num), "%lld", (long long)delta);
	err = cmd_int(d, "HINCRBY", key, klen, num, strlen(num), 4, &n);
	if (err)
		return err == -EREMOTEIO ? -EINVAL : err;	/* not an int */
	if (result)
		*result = n;
	return 0;
}

static struct mgr_script setdefault_lua = { .src =
	"if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then "
	"return ARGV[2] end return redis.call('HGET', KEYS[1], ARGV[1])" };
static struct mgr_script pop_lua = { .src =
	"local v = redis.call('HGET', KEYS[1], ARGV[1]) "
	"if v then redis.call('HDEL', KEYS[1], ARGV[1]) end return v" };
/* ARGV: key, has-expected, expected, new value. */
static struct mgr_script cas_lua = { .src =
	"local v = redis.call('HGET', KEYS[1], ARGV[1]) "
	"if ARGV[2] == '1' then if v ~= ARGV[3] then return 0 end "
	"elseif v then return 0 end "
	"redis.call('HSET', KEYS[1], ARGV[1], ARGV[4]) return 1" };

MPQ_NET_EXPORT int mpq_manager_dict_setdefault(struct mpq_manager_dict *d,
					       const void *key, size_t klen,
					       const void *dflt, size_t dlen,
					       void *buf, size_t *len)
{
	const char *keys[1], *args[2] = { key, dflt ? dflt : "" };
	size_t alens[2] = { klen, dlen };

	if (!d || (!key && klen) || (!dflt && dlen))
		return -EINVAL;
	keys[0] = d->o.keys[0];
	return mpq__mgr_eval_bulk(d->o.m, &setdefault_lua, buf, len, 1, keys,
				  2, args, alens);
}

MPQ_NET_EXPORT int mpq_manager_dict_pop(struct mpq_manager_dict *d,
					const void *key, size_t klen,
					void *buf, size_t *len)
{
	const char *keys[1], *args[1] = { key };
	size_t alens[1] = { klen };

	if (!d || (!key && klen))
		return -EINVAL;
	keys[0] = d->o.keys[0];
	return mpq__mgr_eval_bulk(d->o.m, &pop_lua, buf, len, 1, keys, 1, args,
				  alens);
}

MPQ_NET_EXPORT int mpq_manager_dict_cas(struct mpq_manager_dict *d,
					const void *key, size_t klen,
					const void *expected, size_t elen,
					const void *val, size_t vlen)
{
	const char *keys[1], *args[4] = {
		key, expected ? "1" : "0", expected ? expected : "",
		val ? val : "" };
	size_t alens[4] = { klen, 1, expected ? elen : 0, vlen };
	long long n;
	int err;

	if (!d || (!key && klen) || (!val && vlen))
		return -EINVAL;
	keys[0] = d->o.keys[0];
	err = mpq__mgr_eval_int(d->o.m, &cas_lua, &n, 1, keys, 4, args, alens);
	return err ? err : n == 1;
}

MPQ_NET_EXPORT int mpq_manager_dict_update(struct mpq_manager_dict *d,
					   const struct iovec *keys,
					   const struct iovec *vals,
					   unsigned int n)
{
	const struct iovec *cols[2] = { keys, vals };

	if (!d || (n && (!keys || !vals)))
		return -EINVAL;
	return mpq__mgr_command_chunked(d->o.m, "HSET", d->o.keys[0], cols, 2,
					n);
}

MPQ_NET_EXPORT int mpq_manager_dict_foreach(struct mpq_manager_dict *d,
					    unsigned int batch,
					    int (*fn)(const void *, size_t,
						      const void *, size_t,
						      void *), void *arg)
{
	char cursor[32] = "0", count[16];
	const char *argv[5];
	redisReply *r, *items;
	size_t i;
	int err, ret;

	if (!d || !fn)
		return -EINVAL;
	snprintf(count, sizeof(count), "%u", batch ? batch : 100);
	argv[0] = "HSCAN";
	argv[1] = d->o.keys[0];
	argv[3] = "COUNT";
	argv[4] = count;
	do {
		argv[2] = cursor;
		err = mpq__mgr_command(d->o.m, &r, 5, argv, NULL, 0);
		if (err)
			return err;
		if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
		    r->element[0]->type != REDIS_REPLY_STRING ||
		    r->element[0]->len >= sizeof(cursor) ||
		    r->element[1]->type != REDIS_REPLY_ARRAY ||
		    r->element[1]->elements % 2) {
			freeReplyObject(r);
			return -EPROTO;
		}
		memcpy(cursor, r->element[0]->str, r->element[0]->len);
		cursor[r->element[0]->len] = 0;
		items = r->element[1];
		for (i = 0; i < items->elements; i += 2) {
			redisReply *k = items->element[i];
			redisReply *v = items->element[i + 1];

			if (k->type != REDIS_REPLY_STRING ||
			    v->type != REDIS_REPLY_STRING) {
				freeReplyObject(r);
				return -EPROTO;
			}
			ret = fn(k->str, k->len, v->str, v->len, arg);
			if (ret) {
				freeReplyObject(r);
				return ret;
			}
		}
		freeReplyObject(r);
	} while (strcmp(cursor, "0"));
	return 0;
}
