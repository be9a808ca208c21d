// SPDX-License-Identifier: MIT
/*
 * A managed Namespace (Python's Manager().Namespace()): attributes by
 * name, each a byte string; one Redis hash, "mpq:<ns>:n:<name>". Every
 * step is one command, so atomic by itself.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "manager/manager.h"

struct mpq_manager_namespace {
	struct mgr_obj o;	/* keys[0]: the hash */
};

MPQ_NET_EXPORT int mpq_manager_namespace(struct mpq_manager *m,
					 const char *name,
					 struct mpq_manager_namespace **out)
{
	struct mpq_manager_namespace *n;
	int err;

	if (!out)
		return -EINVAL;
	n = mpq__mgr_obj_new(m, 'n', name, NULL, 1, sizeof(*n), &err);
	if (n)
		*out = n;
	return err;
}

MPQ_NET_EXPORT void mpq_manager_namespace_free(struct mpq_manager_namespace *n)
{
	mpq__mgr_obj_free(n);
}

/* "VERB hash attr [value]": argc 2 (no attr), 3 or 4. */
static int cmd(struct mpq_manager_namespace *n, redisReply **r,
	       const char *verb, const char *attr, const void *val,
	       size_t vlen, int argc)
{
	const char *argv[4];
	size_t lens[4];

	*r = NULL;
	if (!n || (argc > 2 && !mpq__mgr_name_ok(attr)) || (!val && vlen))
		return -EINVAL;
	argv[0] = verb;
	argv[1] = n->o.keys[0];
	argv[2] = attr;
	argv[3] = val ? val : "";
	lens[0] = strlen(verb);
	lens[1] = strlen(n->o.keys[0]);
	lens[2] = argc > 2 ? strlen(attr) : 0;
	lens[3] = vlen;
	return mpq__mgr_command(n->o.m, r, argc, argv, lens, 0);
}

MPQ_NET_EXPORT int mpq_manager_namespace_get(struct mpq_manager_namespace *n,
					     const char *attr, void *buf,
					     size_t *len)
{
	redisReply *r;
	int err;

	if (!len || (!buf && *len))
		return -EINVAL;
	err = cmd(n, &r, "HGET", attr, NULL, 0, 3);
	if (err)
		return err;
	err = mpq__mgr_copy_out(r, buf, len);
	freeReplyObject(r);
	return err;
}

MPQ_NET_EXPORT int mpq_manager_namespace_set(struct mpq_manager_namespace *n,
					     const char *attr,
					     const void *val, size_t len)
{
	redisReply *r;
	int err = cmd(n, &r, "HSET", attr, val, len, 4);

	if (!err)
		freeReplyObject(r);
	return err;
}

MPQ_NET_EXPORT int
mpq_manager_namespace_delete(struct mpq_manager_namespace *n, const char *attr)
{
	redisReply *r;
	long long v;
	int err = cmd(n, &r, "HDEL", attr, NULL, 0, 3);

	if (err)
		return err;
	err = mpq__mgr_reply_int(r, &v);
	freeReplyObject(r);
	if (err)
		return err;
	return v ? 0 : -ENOENT;	/* Python's AttributeError */
}

MPQ_NET_EXPORT int mpq_manager_namespace_list(struct mpq_manager_namespace *n,
					      int (*fn)(const char *attr,
							void *arg),
					      void *arg)
{
	redisReply *r;
	size_t i;
	int err;

	if (!fn)
		return -EINVAL;
	err = cmd(n, &r, "HKEYS", NULL, NULL, 0, 2);
	if (err)
		return err;
	if (r->type != REDIS_REPLY_ARRAY) {
		freeReplyObject(r);
		return -EPROTO;
	}
	for (i = 0; i < r->elements; i++)
		if (r->element[i]->type != REDIS_REPLY_STRING) {
			freeReplyObject(r);
			return -EPROTO;
		}
	/* hiredis ends every string with a NUL. */
	for (i = 0, err = 0; i < r->elements && !err; i++)
		err = fn(r->element[i]->str, arg);
	freeReplyObject(r);
	return err;
}
