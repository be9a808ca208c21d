// SPDX-License-Identifier: MIT
/*
 * Managed Event, Condition, Barrier, Value and Array as mpq's own types
 * (mpq_manager_proxy.3): a struct mpq_event *, mpq_cond *, mpq_barrier *
 * or mpq_value * whose calls libmpq hands to the tables here (mpq_ext.h),
 * which run them on the managed objects of event.c, cond.c, barrier.c and
 * value.c. Export and import as proxy.c's (a sealed memfd).
 *
 * What differs from a local object, and why:
 *   Condition  its lock is a managed lock: its own RLock "<name>/cond",
 *              or one from mpq_manager_lock_open/rlock_open (a local
 *              lock cannot be waited on by the server: -EINVAL).
 *   Barrier    no default timeout of its own: MPQ_BARRIER_DEFAULT_TIMEOUT
 *              waits for ever; a party that dies breaks the barrier when
 *              its lease runs out, not at once.
 *   Value      mpq_value_ptr() is NULL (its bytes are on the server):
 *              get and set copy, under its lock ("<name>/value", which
 *              mpq_value_get_lock returns as a managed RLock) as locally.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "manager/proxy.h"

/* ------------------------------------------------------------------ */
/* Event */

struct px_event {
	struct px_common c;
	struct mpq_manager_event *e;
};

#define PXE(obj)	(((struct px_event *)(obj))->e)

static int pxe_set(void *obj)
{
	return mpq_manager_event_set(PXE(obj));
}

static int pxe_clear(void *obj)
{
	return mpq_manager_event_clear(PXE(obj));
}

static int pxe_is_set(void *obj)
{
	return mpq_manager_event_is_set(PXE(obj));
}

static int pxe_wait(void *obj, int64_t timeout_ns)
{
	/* Locally any negative timeout waits for ever. */
	return mpq_manager_event_wait(PXE(obj), timeout_ns < 0 ?
				      MPQ_FOREVER : timeout_ns);
}

static void pxe_free(void *obj)
{
	struct px_event *p = obj;

	if (!p)
		return;
	mpq_manager_event_free(p->e);
	mpq__px_common_fini(&p->c);
	free(p);
}

static const struct mpq_ext_event_ops pxe_ops = {
	.size = sizeof(struct mpq_ext_event_ops),
	.set = pxe_set,
	.clear = pxe_clear,
	.is_set = pxe_is_set,
	.wait = pxe_wait,
	.export = mpq__px_export,
	.free = pxe_free,
};

static int pxe_open(struct mpq_manager *m, int own_m, const char *name,
		    struct mpq_event **out)
{
	struct px_event *p;
	int err;

	if (!m || !out || !mpq__mgr_name_ok(name))
		return -EINVAL;
	*out = NULL;
	p = mpq__px_new(sizeof(*p), m, PX_EVENT, name);
	if (!p)
		return -ENOMEM;
	err = mpq_manager_event(m, name, &p->e);
	if (!err)
		err = mpq_ext_event_new(out, &pxe_ops, p);
	return mpq__px_opened(p, own_m, err, pxe_free);
}

MPQ_NET_EXPORT int mpq_manager_event_open(struct mpq_manager *m,
					  const char *name,
					  struct mpq_event **out)
{
	return pxe_open(m, 0, name, out);
}

/* ------------------------------------------------------------------ */
/* Condition */

struct px_cond {
	struct px_common c;		/* extra: 1 if the lock is the caller's */
	struct mpq_manager_cond *cv;
	struct mpq_lock *own;		/* its own lock's handle, or NULL */
};

#define PXC(obj)	(((struct px_cond *)(obj))->cv)

static int pxc_wait(void *obj, int64_t timeout_ns)
{
	return mpq_manager_cond_wait(PXC(obj), timeout_ns < 0 ?
				     MPQ_FOREVER : timeout_ns);
}

static int pxc_wait_for(void *obj, int (*pred)(void *arg), void *arg,
			int64_t timeout_ns)
{
	return mpq_manager_cond_wait_for(PXC(obj), pred, arg, timeout_ns < 0 ?
					 MPQ_FOREVER : timeout_ns);
}

static int pxc_notify(void *obj, int n)
{
	return mpq_manager_cond_notify(PXC(obj), n);
}

static int pxc_notify_all(void *obj)
{
	return mpq_manager_cond_notify_all(PXC(obj));
}

static void pxc_free(void *obj)
{
	struct px_cond *p = obj;

	if (!p)
		return;
	mpq_lock_free(p->own);
	mpq_manager_cond_free(p->cv);
	mpq__px_common_fini(&p->c);
	free(p);
}

static const struct mpq_ext_cond_ops pxc_ops = {
	.size = sizeof(struct mpq_ext_cond_ops),
	.wait = pxc_wait,
	.wait_for = pxc_wait_for,
	.notify = pxc_notify,
	.notify_all = pxc_notify_all,
	.export = mpq__px_export,
	.free = pxc_free,
};

static int pxc_open(struct mpq_manager *m, int own_m, const char *name,
		    struct mpq_lock *lock, int64_t lease_ns,
		    struct mpq_cond **out)
{
	struct mpq_manager_lock *ml = NULL;
	struct px_cond *p;
	char *lname;
	int err;

	if (!m || !out || !mpq__mgr_name_ok(name) || lease_ns < 0)
		return -EINVAL;
	*out = NULL;
	/* The server waits on its own locks only. */
	if (lock) {
		ml = mpq__px_lock_of(lock);
		if (!ml)
			return -EINVAL;
	}
	p = mpq__px_new(sizeof(*p), m, PX_COND, name);
	if (!p)
		return -ENOMEM;
	err = mpq_manager_cond(m, name, ml, lease_ns, &p->cv);
	if (!err && !lock) {
		if (asprintf(&lname, "%s/cond", name) < 0) {
			err = -ENOMEM;
		} else {
			err = mpq__px_lock_wrap(m,
						mpq_manager_cond_get_lock(p->cv),
						lname, lease_ns, &p->own);
			free(lname);
		}
	}
	if (!err) {
		p->c.lease_ns = lease_ns;
		p->c.extra = !!lock;
		err = mpq_ext_cond_new(out, &pxc_ops, p, lock ? lock : p->own);
	}
	return mpq__px_opened(p, own_m, err, pxc_free);
}

MPQ_NET_EXPORT int mpq_manager_cond_open(struct mpq_manager *m,
					 const char *name,
					 struct mpq_lock *lock,
					 int64_t lease_ns,
					 struct mpq_cond **out)
{
	return pxc_open(m, 0, name, lock, lease_ns, out);
}

/* ------------------------------------------------------------------ */
/* Barrier */

struct px_barrier {
	struct px_common c;		/* num: parties */
	struct mpq_manager_barrier *b;
};

#define PXB(obj)	(((struct px_barrier *)(obj))->b)

static int pxb_wait(void *obj, int64_t timeout_ns)
{
	/* No default timeout of its own: the default is for ever. */
	return mpq_manager_barrier_wait(PXB(obj), timeout_ns < 0 ?
					MPQ_FOREVER : timeout_ns);
}

static int pxb_abort(void *obj)
{
	return mpq_manager_barrier_abort(PXB(obj));
}

static int pxb_reset(void *obj)
{
	return mpq_manager_barrier_reset(PXB(obj));
}

static int pxb_parties(void *obj)
{
	return mpq_manager_barrier_parties(PXB(obj));
}

static int pxb_n_waiting(void *obj)
{
	return mpq_manager_barrier_n_waiting(PXB(obj));
}

static int pxb_broken(void *obj)
{
	return mpq_manager_barrier_broken(PXB(obj));
}

static void pxb_free(void *obj)
{
	struct px_barrier *p = obj;

	if (!p)
		return;
	mpq_manager_barrier_free(p->b);
	mpq__px_common_fini(&p->c);
	free(p);
}

static const struct mpq_ext_barrier_ops pxb_ops = {
	.size = sizeof(struct mpq_ext_barrier_ops),
	.wait = pxb_wait,
	.abort = pxb_abort,
	.reset = pxb_reset,
	.parties = pxb_parties,
	.n_waiting = pxb_n_waiting,
	.broken = pxb_broken,
	.export = mpq__px_export,
	.free = pxb_free,
};

static int pxb_open(struct mpq_manager *m, int own_m, const char *name,
		    unsigned int parties, int (*action)(void *arg), void *arg,
		    int64_t lease_ns, struct mpq_barrier **out)
{
	struct px_barrier *p;
	int err;

	if (!m || !out || !mpq__mgr_name_ok(name) || lease_ns < 0)
		return -EINVAL;
	*out = NULL;
	p = mpq__px_new(sizeof(*p), m, PX_BARRIER, name);
	if (!p)
		return -ENOMEM;
	err = mpq_manager_barrier(m, name, parties, action, arg, lease_ns,
				  &p->b);
	if (!err) {
		p->c.num = parties;
		p->c.lease_ns = lease_ns;
		err = mpq_ext_barrier_new(out, &pxb_ops, p);
	}
	return mpq__px_opened(p, own_m, err, pxb_free);
}

MPQ_NET_EXPORT int mpq_manager_barrier_open(struct mpq_manager *m,
					    const char *name,
					    unsigned int parties,
					    int (*action)(void *arg),
					    void *arg, int64_t lease_ns,
					    struct mpq_barrier **out)
{
	return pxb_open(m, 0, name, parties, action, arg, lease_ns, out);
}

/* ------------------------------------------------------------------ */
/* Value and Array */

struct px_value {
	struct px_common c;	/* num: elem_size; max_deliveries: count;
				 * extra: flags */
	struct mpq_manager_value *v;
	struct mpq_lock *own;	/* its lock's handle, or NULL (raw) */
};

static int pxv_get(void *obj, size_t start, size_t stop, void *out)
{
	return mpq_manager_array_get_slice(((struct px_value *)obj)->v, start,
					   stop, out);
}

static int pxv_set(void *obj, size_t start, size_t stop, const void *in)
{
	return mpq_manager_array_set_slice(((struct px_value *)obj)->v, start,
					   stop, in);
}

static void pxv_free(void *obj)
{
	struct px_value *p = obj;

	if (!p)
		return;
	mpq_lock_free(p->own);
	mpq_manager_value_free(p->v);
	mpq__px_common_fini(&p->c);
	free(p);
}

static const struct mpq_ext_value_ops pxv_ops = {
	.size = sizeof(struct mpq_ext_value_ops),
	.get = pxv_get,
	.set = pxv_set,
	.export = mpq__px_export,
	.free = pxv_free,
};

static int pxv_open(struct mpq_manager *m, int own_m, const char *name,
		    size_t elem_size, size_t count, unsigned int flags,
		    int64_t lease_ns, struct mpq_value **out)
{
	struct mpq_manager_lock *ml;
	struct px_value *p;
	char *lname;
	int err;

	if (!m || !out || !mpq__mgr_name_ok(name) || lease_ns < 0 ||
	    !elem_size || !count || elem_size > UINT32_MAX ||
	    count > UINT32_MAX || (flags & ~MPQ_VALUE_RAW))
		return -EINVAL;
	*out = NULL;
	p = mpq__px_new(sizeof(*p), m, PX_VALUE, name);
	if (!p)
		return -ENOMEM;
	err = mpq_manager_array(m, name, elem_size, count, flags, lease_ns,
				&p->v);
	ml = err ? NULL : mpq_manager_value_get_lock(p->v);
	if (ml) {
		if (asprintf(&lname, "%s/value", name) < 0) {
			err = -ENOMEM;
		} else {
			err = mpq__px_lock_wrap(m, ml, lname, lease_ns,
						&p->own);
			free(lname);
		}
	}
	if (!err) {
		/* The first opener's shape, as mpq_manager_array's. */
		elem_size = mpq_manager_value_size(p->v) /
			    (size_t)mpq_manager_array_len(p->v);
		count = (size_t)mpq_manager_array_len(p->v);
		p->c.num = elem_size;
		p->c.max_deliveries = (uint32_t)count;
		p->c.extra = flags;
		p->c.lease_ns = lease_ns;
		err = mpq_ext_value_new(out, &pxv_ops, p, elem_size, count,
					p->own);
	}
	return mpq__px_opened(p, own_m, err, pxv_free);
}

MPQ_NET_EXPORT int mpq_manager_array_open(struct mpq_manager *m,
					  const char *name, size_t elem_size,
					  size_t count, unsigned int flags,
					  int64_t lease_ns,
					  struct mpq_value **out)
{
	return pxv_open(m, 0, name, elem_size, count, flags, lease_ns, out);
}

MPQ_NET_EXPORT int mpq_manager_value_open(struct mpq_manager *m,
					  const char *name, size_t size,
					  unsigned int flags, int64_t lease_ns,
					  struct mpq_value **out)
{
	return pxv_open(m, 0, name, size, 1, flags, lease_ns, out);
}

/* ------------------------------------------------------------------ */
/* Import */

int mpq__px_sync_import(struct mpq_manager *m, int k,
			const struct px_fields *f, void *out)
{
	struct mpq_ext_import_args *a = out;

	if (f->lease_ns < 0)
		return -EINVAL;
	switch (k) {
	case PX_EVENT:
		return pxe_open(m, 1, f->name, out);
	case PX_COND:
		/* With the caller's lock if it was made with one, as locally. */
		if (!!f->extra != !!a->lock)
			return -EINVAL;
		return pxc_open(m, 1, f->name, a->lock, f->lease_ns, a->out);
	case PX_BARRIER:
		if (!f->num || f->num > 32767)
			return -EINVAL;
		return pxb_open(m, 1, f->name, (unsigned int)f->num, a->action,
				a->arg, f->lease_ns, a->out);
	case PX_VALUE:
		/* A managed value's lock is its own. */
		if (a->lock)
			return -EINVAL;
		return pxv_open(m, 1, f->name, (size_t)f->num, f->count,
				(unsigned int)f->extra, f->lease_ns, a->out);
	}
	return -EINVAL;
}
