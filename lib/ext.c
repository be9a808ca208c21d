// SPDX-License-Identifier: MIT
/*
 * Objects of libmpq's types served by an extension (mpq_ext.h): what
 * libmpq-net's managed queues, locks and semaphores are. Such a handle is
 * the ordinary struct, with its shared memory absent and a table of the
 * extension's operations in ->ext. The public calls take one early branch
 * on it (the lock's and semaphore's fast paths need none: their record
 * pointer is NULL, which already sends them to the slow path, which
 * looks). libmpq itself holds no network code: only these pointers.
 *
 * An operation missing from a table (NULL, or past its size) is
 * -EOPNOTSUPP; so is every call with no operation at all (fileno, the
 * zero-copy window, mpq_wait).
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "mpq_ext.h"
#include "sync.h"

/* The int (*)(void *) at off in a table of size bytes, or NULL. */
mpq_x_fn mpq_x_op(const void *ops, size_t size, size_t off)
{
	mpq_x_fn fn;

	if (off + sizeof(fn) > size)
		return NULL;
	memcpy(&fn, (const char *)ops + off, sizeof(fn));
	return fn;
}

#define MPQ_X_HAS(ops, member) \
	((ops)->size >= offsetof(__typeof__(*(ops)), member) + \
	 sizeof((ops)->member) && (ops)->member)

/* ------------------------------------------------------------------ */

MPQ_EXPORT int mpq_ext_queue_new(struct mpq_queue **out,
				 const struct mpq_ext_queue_ops *ops,
				 void *obj)
{
	struct mpq_queue *q;

	if (!out || !ops || ops->size < sizeof(size_t))
		return -EINVAL;
	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	/* What the calls that read fields directly then say. */
	q->fd = -EOPNOTSUPP;
	q->backend = -EOPNOTSUPP;
	q->bell = -1;
	q->ext = ops;
	q->ext_obj = obj;
	*out = q;
	return 0;
}

MPQ_EXPORT void *mpq_ext_queue_obj(struct mpq_queue *q,
				   const struct mpq_ext_queue_ops *ops)
{
	return q && ops && q->ext == ops ? q->ext_obj : NULL;
}

int mpq_xq_put_many(struct mpq_queue *q, const struct iovec *msgs,
		    unsigned int n, int64_t timeout_ns)
{
	unsigned int i;

	if (q->closed)
		return -EBADF;
	if (!MPQ_X_HAS(q->ext, put_many))
		return -EOPNOTSUPP;
	for (i = 0; i < n; i++)
		if (!msgs[i].iov_base && msgs[i].iov_len)
			return -EINVAL;
	return q->ext->put_many(q->ext_obj, msgs, n, timeout_ns);
}

int mpq_xq_get_many(struct mpq_queue *q, struct iovec *bufs, unsigned int n,
		    int64_t timeout_ns)
{
	unsigned int i;

	if (q->closed)
		return -EBADF;
	if (!MPQ_X_HAS(q->ext, get_many))
		return -EOPNOTSUPP;
	for (i = 0; i < n; i++)
		if (!bufs[i].iov_base)
			return -EINVAL;
	return q->ext->get_many(q->ext_obj, bufs, n, timeout_ns);
}

int mpq_xq_call(struct mpq_queue *q, size_t off)
{
	mpq_x_fn fn = mpq_x_op(q->ext, q->ext->size, off);

	return fn ? fn(q->ext_obj) : -EOPNOTSUPP;
}

int mpq_xq_join(struct mpq_queue *q, int64_t timeout_ns)
{
	if (!MPQ_X_HAS(q->ext, join))
		return -EOPNOTSUPP;
	return q->ext->join(q->ext_obj, timeout_ns);
}

int mpq_xq_export(struct mpq_queue *q, char *buf, size_t len)
{
	if (!buf)
		return -EINVAL;
	if (!MPQ_X_HAS(q->ext, export))
		return -EOPNOTSUPP;
	return q->ext->export(q->ext_obj, buf, len);
}

void mpq_xq_free(struct mpq_queue *q)
{
	if (MPQ_X_HAS(q->ext, free))
		q->ext->free(q->ext_obj);
	free(q);
}

/* ------------------------------------------------------------------ */

MPQ_EXPORT int mpq_ext_lock_new(struct mpq_lock **out,
				const struct mpq_ext_lock_ops *ops, void *obj,
				int recursive)
{
	struct mpq_lock *l;

	if (!out || !ops || ops->size < sizeof(size_t))
		return -EINVAL;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->recursive = !!recursive;
	l->ext = ops;
	l->ext_obj = obj;
	*out = l;
	return 0;
}

MPQ_EXPORT void *mpq_ext_lock_obj(struct mpq_lock *l,
				  const struct mpq_ext_lock_ops *ops)
{
	return l && ops && l->ext == ops ? l->ext_obj : NULL;
}

int mpq_xl_acquire(struct mpq_lock *l, int64_t timeout_ns)
{
	if (!MPQ_X_HAS(l->ext, acquire))
		return -EOPNOTSUPP;
	return l->ext->acquire(l->ext_obj, timeout_ns);
}

int mpq_xl_call(struct mpq_lock *l, size_t off)
{
	mpq_x_fn fn = mpq_x_op(l->ext, l->ext->size, off);

	return fn ? fn(l->ext_obj) : -EOPNOTSUPP;
}

int mpq_xl_export(struct mpq_lock *l, char *buf, size_t len)
{
	if (!buf)
		return -EINVAL;
	if (!MPQ_X_HAS(l->ext, export))
		return -EOPNOTSUPP;
	return l->ext->export(l->ext_obj, buf, len);
}

void mpq_xl_free(struct mpq_lock *l)
{
	if (MPQ_X_HAS(l->ext, free))
		l->ext->free(l->ext_obj);
	free(l);
}

/* ------------------------------------------------------------------ */

MPQ_EXPORT int mpq_ext_sem_new(struct mpq_sem **out,
			       const struct mpq_ext_sem_ops *ops, void *obj)
{
	struct mpq_sem *s;

	if (!out || !ops || ops->size < sizeof(size_t))
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->ext = ops;
	s->ext_obj = obj;
	*out = s;
	return 0;
}

MPQ_EXPORT void *mpq_ext_sem_obj(struct mpq_sem *s,
				 const struct mpq_ext_sem_ops *ops)
{
	return s && ops && s->ext == ops ? s->ext_obj : NULL;
}

int mpq_xs_acquire(struct mpq_sem *s, int64_t timeout_ns)
{
	if (!MPQ_X_HAS(s->ext, acquire))
		return -EOPNOTSUPP;
	return s->ext->acquire(s->ext_obj, timeout_ns);
}

int mpq_xs_call(struct mpq_sem *s, size_t off)
{
	mpq_x_fn fn = mpq_x_op(s->ext, s->ext->size, off);

	return fn ? fn(s->ext_obj) : -EOPNOTSUPP;
}

int mpq_xs_export(struct mpq_sem *s, char *buf, size_t len)
{
	if (!buf)
		return -EINVAL;
	if (!MPQ_X_HAS(s->ext, export))
		return -EOPNOTSUPP;
	return s->ext->export(s->ext_obj, buf, len);
}

void mpq_xs_free(struct mpq_sem *s)
{
	if (MPQ_X_HAS(s->ext, free))
		s->ext->free(s->ext_obj);
	free(s);
}

/* ------------------------------------------------------------------ */

#define MPQ_EXT_IMPORTERS	8

static const struct mpq_ext_importer *mpq_importers[MPQ_EXT_IMPORTERS];

MPQ_EXPORT int mpq_ext_register(const struct mpq_ext_importer *imp)
{
	int i, ret = -ENOSPC;

	if (!imp || !imp->prefix || !*imp->prefix || !imp->import)
		return -EINVAL;
	/* Constructors run one at a time, but a late dlopen may not. */
	mpq_proc_lock();
	for (i = 0; i < MPQ_EXT_IMPORTERS; i++) {
		if (mpq_importers[i] == imp) {
			ret = 0;
			break;
		}
		if (!mpq_importers[i]) {
			__atomic_store_n(&mpq_importers[i], imp,
					 __ATOMIC_RELEASE);
			ret = 0;
			break;
		}
	}
	mpq_proc_unlock();
	return ret;
}

int mpq_ext_import(int kind, const char *handle, void *out)
{
	const struct mpq_ext_importer *imp;
	int i;

	if (!handle || !out)
		return -EINVAL;
	for (i = 0; i < MPQ_EXT_IMPORTERS; i++) {
		imp = __atomic_load_n(&mpq_importers[i], __ATOMIC_ACQUIRE);
		if (!imp)
			break;
		if (!strncmp(handle, imp->prefix, strlen(imp->prefix)))
			return imp->import(kind, handle, out);
	}
	return -EINVAL;
}

MPQ_EXPORT int mpq_ext_inherit_fd(int fd)
{
	if (fd < 0)
		return -EBADF;
	return mpq_spawn_inherit_fd(fd);
}
