// SPDX-License-Identifier: MIT
/*
 * A managed Value and Array, with mpq_value's methods and meaning: size
 * bytes (an array: count elements of elem_size bytes), zeroed at first,
 * copied out and in whole or by element or slice, and an atomic add on
 * 8-byte little-endian integers.
 *
 * Keys, under "mpq:<ns>:v:<name>":
 *   :d      string the bytes
 *   :cfg    hash   size, count (the first opener's)
 *
 * Every copy is one script, so it is atomic by itself. As Python's
 * Value(lock=True), a value has a lock (the managed RLock "<name>/value",
 * mpq_manager_value_get_lock) for steps of several calls; each copy
 * respects it: while another process holds it, the copy waits (blocked
 * on the lock's wake list, not polling); a holder that died leaves it at
 * the end of its lease, and the copy then gets -EOWNERDEAD (done: the
 * data may be half-written), as every acquirer does until the lock is
 * marked consistent. MPQ_VALUE_RAW: no lock, no waiting.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "manager/manager.h"

#define V_MAX_BYTES	((size_t)256 << 20)

struct mpq_manager_value {
	struct mgr_obj o;	/* keys: :d, :cfg */
	struct mpq_manager_lock *lock;	/* NULL: raw */
	size_t elem, count;
};

#define V_KEYS "local LH, LW, D, CFG = KEYS[1], KEYS[2], KEYS[3], KEYS[4]\n"

/* ARGV: elem, count. {elem, count, strlen} of the first opener. */
static struct mgr_script open_lua = { .src = V_KEYS
	"redis.call('HSETNX', CFG, 'elem', ARGV[1]) "
	"redis.call('HSETNX', CFG, 'count', ARGV[2]) "
	"local h = redis.call('HMGET', CFG, 'elem', 'count') "
	"local n = tonumber(h[1]) * tonumber(h[2]) "
	"if redis.call('EXISTS', D) == 0 then "
	"redis.call('SET', D, string.rep('\\0', n)) end "
	"return {tonumber(h[1]), tonumber(h[2]), redis.call('STRLEN', D)}" };

/*
 * ARGV: me, op (g get, s set, a add), offset, length or data, delta low
 * and high 32 bits, locked, waited. {1, died, bytes} when done; {0, ms
 * until the holder's lease ends} while another holds the lock. A copy
 * that waited took the release's wake-up from the lock's wake list, which
 * the lock's own acquirers block on too: it passes it on.
 */
static struct mgr_script op_lua = { .src = MGR_LUA_NOW V_KEYS
	"local died = 0 "
	"if ARGV[7] == '1' then "
	"local h = redis.call('HMGET', LH, 'owner', 'deadline', 'dirty') "
	"if h[1] and h[1] ~= ARGV[1] then local now = now_ms() "
	"if tonumber(h[2]) > now then return {0, tonumber(h[2]) - now} end "
	"redis.call('HSET', LH, 'dirty', 1) "
	"redis.call('HDEL', LH, 'owner', 'token', 'deadline', 'count') "
	"if redis.call('LLEN', LW) == 0 then redis.call('RPUSH', LW, 1) end "
	"died = 1 "
	"elseif not h[1] and ARGV[8] == '1' and "
	"redis.call('LLEN', LW) == 0 then redis.call('RPUSH', LW, 1) end "
	"if h[3] and h[1] ~= ARGV[1] then died = 1 end end "
	"local off = tonumber(ARGV[3]) "
	"if ARGV[2] == 'g' then return {1, died, "
	"redis.call('GETRANGE', D, off, off + tonumber(ARGV[4]) - 1)} end "
	"if ARGV[2] == 's' then redis.call('SETRANGE', D, off, ARGV[4]) "
	"return {1, died, ''} end "
	"local lo, hi = struct.unpack('<I4I4', "
	"redis.call('GETRANGE', D, off, off + 7)) "
	"lo = lo + tonumber(ARGV[5]) local c = math.floor(lo / 4294967296) "
	"lo = lo % 4294967296 "
	"hi = (hi + tonumber(ARGV[6]) + c) % 4294967296 "
	"local s = struct.pack('<I4I4', lo, hi) "
	"redis.call('SETRANGE', D, off, s) return {1, died, s}" };

MPQ_NET_EXPORT void mpq_manager_value_free(struct mpq_manager_value *v)
{
	if (v && v->lock) {
		mpq__mgr_lock_set_owned(v->lock, 0);
		mpq_manager_lock_free(v->lock);
	}
	mpq__mgr_obj_free(v);
}

MPQ_NET_EXPORT int mpq_manager_array(struct mpq_manager *m, const char *name,
				     size_t elem_size, size_t count,
				     unsigned int flags, int64_t lease_ns,
				     struct mpq_manager_value **out)
{
	static const char *const sfx[2] = { ":d", ":cfg" };
	struct mpq_manager_value *v;
	char e[24], n[24], *lname;
	const char *args[2] = { e, n }, *keys[4];
	redisReply *r;
	int err;

	if (!out || !elem_size || !count || elem_size > UINT32_MAX ||
	    count > UINT32_MAX || (flags & ~MPQ_VALUE_RAW) || lease_ns < 0)
		return -EINVAL;
	if (elem_size * count > V_MAX_BYTES)
		return -E2BIG;
	v = mpq__mgr_obj_new(m, 'v', name, sfx, 2, sizeof(*v), &err);
	if (!v)
		return err;
	if (!(flags & MPQ_VALUE_RAW)) {
		if (asprintf(&lname, "%s/value", name) < 0) {
			err = -ENOMEM;
			goto fail;
		}
		err = mpq_manager_lock(m, lname, 1, lease_ns, &v->lock);
		free(lname);
		if (err)
			goto fail;
		mpq__mgr_lock_set_owned(v->lock, 1);
	}
	snprintf(e, sizeof(e), "%zu", elem_size);
	snprintf(n, sizeof(n), "%zu", count);
	keys[0] = keys[1] = v->o.keys[0];
	keys[2] = v->o.keys[0];
	keys[3] = v->o.keys[1];
	err = mpq__mgr_eval(m, &open_lua, &r, 4, keys, 2, args, NULL);
	if (err)
		goto fail;
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
	    r->element[0]->type != REDIS_REPLY_INTEGER ||
	    r->element[1]->type != REDIS_REPLY_INTEGER ||
	    r->element[2]->type != REDIS_REPLY_INTEGER)
		err = -EPROTO;
	else if ((size_t)r->element[0]->integer != elem_size ||
		 (size_t)r->element[1]->integer != count)
		err = -EINVAL;	/* the name is a value of another shape */
	else if ((size_t)r->element[2]->integer != elem_size * count)
		err = -EPROTO;	/* its bytes were written by another hand */
	freeReplyObject(r);
	if (err)
		goto fail;
	v->elem = elem_size;
	v->count = count;
	*out = v;
	return 0;
fail:
	mpq_manager_value_free(v);
	return err;
}

MPQ_NET_EXPORT int mpq_manager_value(struct mpq_manager *m, const char *name,
				     size_t size, unsigned int flags,
				     int64_t lease_ns,
				     struct mpq_manager_value **out)
{
	return mpq_manager_array(m, name, size, 1, flags, lease_ns, out);
}

/*
 * Run op on bytes [off, off + len) (data: what set writes; delta: what
 * add adds), waiting while another process holds the lock. The bytes the
 * script answers (get, add) go to out.
 */
static int op(struct mpq_manager_value *v, char code, size_t off,
	      size_t len, const void *data, int64_t delta, void *out)
{
	char offs[24], lens[24], lo[16], hi[16], opc[2] = { code, 0 };
	const char *args[8], *keys[4], *wait_key = NULL;
	size_t alens[8];
	int64_t wait_ns = 0;
	redisReply *r;
	struct mgr_obj *lo_obj;
	int err, i, died;

	snprintf(offs, sizeof(offs), "%zu", off);
	snprintf(lens, sizeof(lens), "%zu", len);
	snprintf(lo, sizeof(lo), "%u", (unsigned int)((uint64_t)delta &
						      0xffffffffU));
	snprintf(hi, sizeof(hi), "%u", (unsigned int)((uint64_t)delta >> 32));
	args[0] = mpq__mgr_owner(v->o.m);
	args[1] = opc;
	args[2] = offs;
	args[3] = code == 's' ? data : lens;
	args[4] = lo;
	args[5] = hi;
	args[6] = v->lock ? "1" : "0";
	args[7] = "0";
	for (i = 0; i < 8; i++)
		alens[i] = i == 3 && code == 's' ? len : strlen(args[i]);
	if (v->lock) {
		lo_obj = mpq__mgr_lock_obj(v->lock);
		keys[0] = lo_obj->keys[0];
		keys[1] = lo_obj->keys[2];
	} else {
		keys[0] = keys[1] = v->o.keys[0];
	}
	keys[2] = v->o.keys[0];
	keys[3] = v->o.keys[1];
	for (;;) {
		err = mpq__mgr_eval_after(v->o.m, wait_key, wait_ns, &op_lua,
					  &r, 4, keys, 8, args, alens);
		if (err)
			return err;
		if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
		    r->element[0]->type != REDIS_REPLY_INTEGER ||
		    r->element[1]->type != REDIS_REPLY_INTEGER) {
			freeReplyObject(r);
			return -EPROTO;
		}
		if (r->element[0]->integer == 1)
			break;
		/* Until a release wakes us, or the holder's lease ends. */
		wait_ns = r->element[1]->integer * 1000000LL;
		if (wait_ns <= 0 || wait_ns > MGR_MAX_BLOCK_NS)
			wait_ns = MGR_MAX_BLOCK_NS;
		wait_key = keys[1];
		args[7] = "1";
		freeReplyObject(r);
	}
	died = r->element[1]->integer != 0;
	err = 0;
	if (r->elements != 3 || r->element[2]->type != REDIS_REPLY_STRING ||
	    (code != 's' && r->element[2]->len != (code == 'a' ? 8 : len)))
		err = -EPROTO;
	else if (out && code != 's')
		memcpy(out, r->element[2]->str, r->element[2]->len);
	freeReplyObject(r);
	if (err)
		return err;
	return died ? -EOWNERDEAD : 0;
}

MPQ_NET_EXPORT int mpq_manager_value_get(struct mpq_manager_value *v,
					 void *out)
{
	if (!v || !out)
		return -EINVAL;
	return op(v, 'g', 0, v->elem * v->count, NULL, 0, out);
}

MPQ_NET_EXPORT int mpq_manager_value_set(struct mpq_manager_value *v,
					 const void *in)
{
	if (!v || !in)
		return -EINVAL;
	return op(v, 's', 0, v->elem * v->count, in, 0, NULL);
}

MPQ_NET_EXPORT int mpq_manager_array_get(struct mpq_manager_value *v,
					 size_t i, void *out)
{
	if (!v || !out)
		return -EINVAL;
	if (i >= v->count)
		return -ERANGE;
	return op(v, 'g', i * v->elem, v->elem, NULL, 0, out);
}

MPQ_NET_EXPORT int mpq_manager_array_set(struct mpq_manager_value *v,
					 size_t i, const void *in)
{
	if (!v || !in)
		return -EINVAL;
	if (i >= v->count)
		return -ERANGE;
	return op(v, 's', i * v->elem, v->elem, in, 0, NULL);
}

MPQ_NET_EXPORT int mpq_manager_array_get_slice(struct mpq_manager_value *v,
					       size_t start, size_t stop,
					       void *out)
{
	if (!v || (!out && stop > start))
		return -EINVAL;
	if (start > stop || stop > v->count)
		return -ERANGE;
	if (start == stop)
		return 0;
	return op(v, 'g', start * v->elem, (stop - start) * v->elem, NULL, 0,
		  out);
}

MPQ_NET_EXPORT int mpq_manager_array_set_slice(struct mpq_manager_value *v,
					       size_t start, size_t stop,
					       const void *in)
{
	if (!v || (!in && stop > start))
		return -EINVAL;
	if (start > stop || stop > v->count)
		return -ERANGE;
	if (start == stop)
		return 0;
	return op(v, 's', start * v->elem, (stop - start) * v->elem, in, 0,
		  NULL);
}

/* Two's complement, little-endian, as x86 and arm64 keep int64_t. */
static int add_at(struct mpq_manager_value *v, size_t off, int64_t delta,
		  int64_t *result)
{
	unsigned char b[8];
	uint64_t u = 0;
	int err, i;

	err = op(v, 'a', off, 8, NULL, delta, b);
	if (err && err != -EOWNERDEAD)
		return err;
	for (i = 7; i >= 0; i--)
		u = u << 8 | b[i];
	if (result)
		*result = (int64_t)u;
	return err;
}

MPQ_NET_EXPORT int mpq_manager_value_add(struct mpq_manager_value *v,
					 int64_t delta, int64_t *result)
{
	if (!v || v->elem != 8 || v->count != 1)
		return -EINVAL;
	return add_at(v, 0, delta, result);
}

MPQ_NET_EXPORT int mpq_manager_array_add(struct mpq_manager_value *v,
					 size_t i, int64_t delta,
					 int64_t *result)
{
	if (!v || v->elem != 8)
		return -EINVAL;
	if (i >= v->count)
		return -ERANGE;
	return add_at(v, i * 8, delta, result);
}

MPQ_NET_EXPORT size_t mpq_manager_value_size(struct mpq_manager_value *v)
{
	return v ? v->elem * v->count : 0;
}

MPQ_NET_EXPORT long mpq_manager_array_len(struct mpq_manager_value *v)
{
	return v ? (long)v->count : -EINVAL;
}

MPQ_NET_EXPORT struct mpq_manager_lock *
mpq_manager_value_get_lock(struct mpq_manager_value *v)
{
	return v ? v->lock : NULL;
}
