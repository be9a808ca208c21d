// SPDX-License-Identifier: MIT
/*
 * mpq_value: Python's multiprocessing.Value and Array (and RawValue and
 * RawArray): C data in shared memory, with a lock to guard it or without.
 *
 * The block holds the header, then the lock's record (an RLock, as
 * Python's default, unless the value is raw or the caller passes a lock of
 * its own), then the data, aligned to 64 bytes so that the data does not
 * share a cache line with the lock word. The data is plain memory: the
 * caller reads and writes it through mpq_value_ptr() under the lock, or
 * uses mpq_value_get()/mpq_value_set() and mpq_array_get()/_set(), which
 * take the lock around a copy as Python's .value does.
 */
#include <stdlib.h>
#include <string.h>

#include "sync.h"

struct mpq_value {
	struct mpq_sync sync;
	void *data;
	uint64_t size;		/* elem_size * count */
	uint32_t elem_size;
	uint32_t count;
	struct mpq_lock own;	/* the block's own lock, if it has one */
	struct mpq_lock *lock;	/* NULL for a raw value */
	/* An extension's (mpq_ext.h): data is NULL; lock is the extension's. */
	const struct mpq_ext_value_ops *ext;
	void *ext_obj;
};

MPQ_EXPORT int mpq_ext_value_new(struct mpq_value **out,
				 const struct mpq_ext_value_ops *ops,
				 void *obj, size_t elem_size, size_t count,
				 struct mpq_lock *lock)
{
	if (!out || !ops || ops->size < sizeof(size_t) || !elem_size ||
	    !count || elem_size > UINT32_MAX || count > UINT32_MAX)
		return -EINVAL;
	*out = calloc(1, sizeof(**out));
	if (!*out)
		return -ENOMEM;
	(*out)->size = (uint64_t)elem_size * count;
	(*out)->elem_size = (uint32_t)elem_size;
	(*out)->count = (uint32_t)count;
	(*out)->lock = lock;
	(*out)->ext = ops;
	(*out)->ext_obj = obj;
	return 0;
}

MPQ_EXPORT void *mpq_ext_value_obj(struct mpq_value *v,
				   const struct mpq_ext_value_ops *ops)
{
	return v && ops && v->ext == ops ? v->ext_obj : NULL;
}

/* Copy elements [start, stop) of an extension's value out or in. */
static int mpq_xv_copy(struct mpq_value *v, size_t start, size_t stop,
		       void *buf, int in)
{
	int (*get)(void *obj, size_t start, size_t stop, void *out);
	int (*set)(void *obj, size_t start, size_t stop, const void *in);

	if (!v || !v->ext || !buf)
		return -EINVAL;
	if (start >= v->count)
		return -ERANGE;
	if (in) {
		set = MPQ_X_FN(v->ext, set);
		return set ? set(v->ext_obj, start, stop, buf) : -EOPNOTSUPP;
	}
	get = MPQ_X_FN(v->ext, get);
	return get ? get(v->ext_obj, start, stop, buf) : -EOPNOTSUPP;
}

static int mpq_value_alloc(struct mpq_value **out)
{
	if (!out)
		return -EINVAL;
	*out = calloc(1, sizeof(**out));
	return *out ? 0 : -ENOMEM;
}

static void mpq_value_drop(struct mpq_value **out)
{
	mpq_sync_drop(&(*out)->sync);
	*out = NULL;
}

/* param[0] element size, param[1] count; data after record 0. */
static int mpq_value_bind(struct mpq_value *v, struct mpq_lock *lock)
{
	uint64_t size = (uint64_t)v->sync.param[0] * v->sync.param[1];

	if (!v->sync.param[0] || !v->sync.param[1] ||
	    v->sync.block.bytes < MPQ_SYNC_REC * 2 + size)
		return -EUCLEAN;
	/* The lock it was made with must come back with it, and only then. */
	if (!(v->sync.flags & MPQ_SYNC_EXT_LOCK) != !lock)
		return -EINVAL;
	v->elem_size = v->sync.param[0];
	v->count = v->sync.param[1];
	v->size = size;
	v->data = mpq_sync_rec(&v->sync, 1);
	if (v->sync.flags & MPQ_SYNC_OWN_LOCK) {
		mpq_lock_borrow(&v->own, &v->sync, 0,
				!!(v->sync.flags & MPQ_SYNC_RLOCK));
		v->lock = &v->own;
	} else {
		v->lock = lock;
	}
	return 0;
}

MPQ_EXPORT int mpq_array_new(struct mpq_value **out, size_t elem_size,
			     size_t count, const struct mpq_value_attr *attr)
{
	static const struct mpq_value_attr defaults;
	uint32_t param[4] = { (uint32_t)elem_size, (uint32_t)count };
	uint32_t flags = 0;
	uint64_t size;
	int ret;

	if (!attr)
		attr = &defaults;
	if (attr->flags & ~MPQ_VALUE_RAW ||
	    (attr->flags & MPQ_VALUE_RAW && attr->lock))
		return -EINVAL;
	if (!mpq_all_zero(attr->__reserved, sizeof(attr->__reserved)))
		return -EINVAL;
	if (!elem_size || !count || elem_size > UINT32_MAX || count > UINT32_MAX)
		return -EINVAL;
	if (__builtin_mul_overflow((uint64_t)elem_size, (uint64_t)count, &size) ||
	    size > MPQ_BLOCK_MAX_BYTES - MPQ_SYNC_REC * 2)
		return -E2BIG;
	if (attr->lock)
		flags = MPQ_SYNC_EXT_LOCK;
	else if (!(attr->flags & MPQ_VALUE_RAW))
		flags = MPQ_SYNC_OWN_LOCK | MPQ_SYNC_RLOCK;
	ret = mpq_value_alloc(out);
	if (ret)
		return ret;
	ret = mpq_sync_create(&(*out)->sync, MPQ_SHM_KIND_VALUE, flags, param,
			      MPQ_SYNC_REC * 2 + size, attr->backend,
			      attr->spin_ns);
	if (!ret)
		ret = mpq_value_bind(*out, attr->lock);
	if (ret)
		mpq_value_drop(out);
	return ret;
}

MPQ_EXPORT int mpq_value_new(struct mpq_value **out, size_t size,
			     const struct mpq_value_attr *attr)
{
	return mpq_array_new(out, size, 1, attr);
}

MPQ_EXPORT void *mpq_value_ptr(struct mpq_value *v)
{
	return v ? v->data : NULL;
}

MPQ_EXPORT size_t mpq_value_size(struct mpq_value *v)
{
	return v ? (size_t)v->size : 0;
}

MPQ_EXPORT long mpq_array_len(struct mpq_value *v)
{
	return v && (v->data || v->ext) ? (long)v->count : -EINVAL;
}

MPQ_EXPORT struct mpq_lock *mpq_value_get_lock(struct mpq_value *v)
{
	return v ? v->lock : NULL;
}

/*
 * Copy n bytes at off in or out, under the lock if there is one. A lock
 * whose holder died is taken all the same (the copy is what the caller
 * asked for) and reported: the data may be half-written.
 */
static int mpq_value_copy(struct mpq_value *v, uint64_t off, void *buf,
			  uint64_t n, int in)
{
	int ret = 0, r;

	if (v->lock) {
		ret = mpq_lock_acquire(v->lock, MPQ_FOREVER);
		if (ret && ret != -EOWNERDEAD)
			return ret;
	}
	if (in)
		memcpy((char *)v->data + off, buf, n);
	else
		memcpy(buf, (char *)v->data + off, n);
	if (v->lock) {
		r = mpq_lock_release(v->lock);
		if (r)
			return r;
	}
	return ret;
}

MPQ_EXPORT int mpq_value_get(struct mpq_value *v, void *out)
{
	if (unlikely(!v || !v->data || !out))
		return mpq_xv_copy(v, 0, v ? v->count : 0, (void *)out, 0);
	return mpq_value_copy(v, 0, out, v->size, 0);
}

MPQ_EXPORT int mpq_value_set(struct mpq_value *v, const void *in)
{
	if (unlikely(!v || !v->data || !in))
		return mpq_xv_copy(v, 0, v ? v->count : 0, (void *)in, 1);
	return mpq_value_copy(v, 0, (void *)in, v->size, 1);
}

MPQ_EXPORT int mpq_array_get(struct mpq_value *v, size_t i, void *out)
{
	if (unlikely(!v || !v->data || !out))
		return mpq_xv_copy(v, i, i + 1, (void *)out, 0);
	if (i >= v->count)
		return -ERANGE;
	return mpq_value_copy(v, (uint64_t)i * v->elem_size, out,
			      v->elem_size, 0);
}

MPQ_EXPORT int mpq_array_set(struct mpq_value *v, size_t i, const void *in)
{
	if (unlikely(!v || !v->data || !in))
		return mpq_xv_copy(v, i, i + 1, (void *)in, 1);
	if (i >= v->count)
		return -ERANGE;
	return mpq_value_copy(v, (uint64_t)i * v->elem_size, (void *)in,
			      v->elem_size, 1);
}

MPQ_EXPORT void mpq_value_free(struct mpq_value *v)
{
	void (*fn)(void *obj);

	if (!v)
		return;
	if (v->ext) {
		fn = MPQ_X_FN(v->ext, free);
		if (fn)
			fn(v->ext_obj);
		free(v);
		return;
	}
	if (v->lock == &v->own)
		mpq_lock_fini(&v->own);
	mpq_sync_free(&v->sync);
	free(v);
}

MPQ_EXPORT int mpq_value_export(struct mpq_value *v, char *buf, size_t len)
{
	int (*fn)(void *obj, char *buf, size_t len);

	if (v && v->ext && buf) {
		fn = MPQ_X_FN(v->ext, export);
		return fn ? fn(v->ext_obj, buf, len) : -EOPNOTSUPP;
	}
	if (!v || !v->data)
		return -EINVAL;
	return mpq_sync_export(&v->sync, "value", buf, len);
}

MPQ_EXPORT int mpq_value_import(struct mpq_value **out, const char *handle,
				struct mpq_lock *lock)
{
	struct mpq_ext_import_args args = { .out = out, .lock = lock };
	int ret;

	if (out && handle && strncmp(handle, "mpq-value:", 10))
		return mpq_ext_import(MPQ_EXT_VALUE, handle, &args);
	ret = mpq_value_alloc(out);
	if (ret)
		return ret;
	ret = mpq_sync_import(&(*out)->sync, handle, "value",
			      MPQ_SHM_KIND_VALUE);
	if (!ret)
		ret = mpq_value_bind(*out, lock);
	if (ret)
		mpq_value_drop(out);
	return ret;
}
