// SPDX-License-Identifier: MIT
/*
 * mpq_event: Python's multiprocessing.Event. A flag in shared memory, and
 * beside it a futex word that every set() bumps: wait() sleeps while the
 * flag is clear and the word has not moved, so a set() that a clear()
 * follows at once still ends the waits it found (Python's wait returns
 * True for a set "after the wait starts"). Sleepers count themselves
 * first, so set() makes a system call only when someone may be asleep
 * (the same handshake as the semaphore's, in sem.c).
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "sync.h"

struct mpq_event_rec {
	uint32_t flag;		/* 0 or 1 */
	uint32_t waiters;
	uint32_t sets;		/* futex word: bumped by each set() */
	uint32_t __pad[13];
};

struct mpq_event {
	struct mpq_sync sync;
	struct mpq_event_rec *rec;	/* NULL: an extension's (ext) */
	const struct mpq_ext_event_ops *ext;
	void *ext_obj;
};

/* An extension's event (mpq_ext.h): a call by its table's offset. */
static int mpq_xe(struct mpq_event *e, size_t off)
{
	mpq_x_fn fn;

	if (!e || !e->ext)
		return -EINVAL;
	fn = mpq_x_op(e->ext, e->ext->size, off);
	return fn ? fn(e->ext_obj) : -EOPNOTSUPP;
}

#define MPQ_XE(e, op)	mpq_xe((e), offsetof(struct mpq_ext_event_ops, op))

MPQ_EXPORT int mpq_ext_event_new(struct mpq_event **out,
				 const struct mpq_ext_event_ops *ops, void *obj)
{
	if (!out || !ops || ops->size < sizeof(size_t))
		return -EINVAL;
	*out = calloc(1, sizeof(**out));
	if (!*out)
		return -ENOMEM;
	(*out)->ext = ops;
	(*out)->ext_obj = obj;
	return 0;
}

MPQ_EXPORT void *mpq_ext_event_obj(struct mpq_event *e,
				   const struct mpq_ext_event_ops *ops)
{
	return e && ops && e->ext == ops ? e->ext_obj : NULL;
}

static int mpq_event_alloc(struct mpq_event **out)
{
	if (!out)
		return -EINVAL;
	*out = calloc(1, sizeof(**out));
	return *out ? 0 : -ENOMEM;
}

static void mpq_event_drop(struct mpq_event **out)
{
	mpq_sync_drop(&(*out)->sync);
	*out = NULL;
}

static int mpq_event_bind(struct mpq_event *e)
{
	if (e->sync.block.bytes < MPQ_SYNC_REC * 2)
		return -EUCLEAN;
	e->rec = mpq_sync_rec(&e->sync, 0);
	return 0;
}

MPQ_EXPORT int mpq_event_new(struct mpq_event **out,
			     const struct mpq_lock_attr *attr)
{
	static const uint32_t param[4];
	int ret;

	ret = mpq_lock_attr_get(&attr);
	if (ret)
		return ret;
	ret = mpq_event_alloc(out);
	if (ret)
		return ret;
	ret = mpq_sync_create(&(*out)->sync, MPQ_SHM_KIND_EVENT, 0, param,
			      MPQ_SYNC_REC * 2, attr->backend, attr->spin_ns);
	if (!ret)
		ret = mpq_event_bind(*out);
	if (ret)
		mpq_event_drop(out);
	return ret;
}

MPQ_EXPORT int mpq_event_is_set(struct mpq_event *e)
{
	if (unlikely(!e || !e->rec))
		return MPQ_XE(e, is_set);
	return load_acquire(&e->rec->flag) != 0;
}

MPQ_EXPORT int mpq_event_set(struct mpq_event *e)
{
	if (unlikely(!e || !e->rec))
		return MPQ_XE(e, set);
	__atomic_store_n(&e->rec->flag, 1, __ATOMIC_SEQ_CST);
	__atomic_add_fetch(&e->rec->sets, 1, __ATOMIC_SEQ_CST);
	if (load_relaxed(&e->rec->waiters))
		mpq_futex_wake(&e->rec->sets, INT_MAX);
	return 0;
}

MPQ_EXPORT int mpq_event_clear(struct mpq_event *e)
{
	if (unlikely(!e || !e->rec))
		return MPQ_XE(e, clear);
	__atomic_store_n(&e->rec->flag, 0, __ATOMIC_RELEASE);
	return 0;
}

MPQ_EXPORT int mpq_event_wait(struct mpq_event *e, int64_t timeout_ns)
{
	int64_t deadline, spin_end;
	int ret = 0, spins = 0;
	uint32_t sets;
	int (*wait)(void *obj, int64_t timeout_ns);

	if (unlikely(!e || !e->rec)) {
		if (!e || !e->ext)
			return -EINVAL;
		wait = MPQ_X_FN(e->ext, wait);
		return wait ? wait(e->ext_obj, timeout_ns) : -EOPNOTSUPP;
	}
	sets = load_acquire(&e->rec->sets);
	if (load_acquire(&e->rec->flag))
		return 0;
	if (timeout_ns == 0)
		return -EAGAIN;
	deadline = mpq_deadline(timeout_ns);
	spin_end = e->sync.spin_ns > 0 ? mpq_now_ns() + e->sync.spin_ns : 0;
	while (spin_end) {
		cpu_relax();
		if (load_acquire(&e->rec->sets) != sets ||
		    load_acquire(&e->rec->flag))
			return 0;
		if (++spins % 64 == 0 && mpq_now_ns() >= spin_end)
			break;
	}
	__atomic_add_fetch(&e->rec->waiters, 1, __ATOMIC_SEQ_CST);
	while (__atomic_load_n(&e->rec->sets, __ATOMIC_SEQ_CST) == sets &&
	       !__atomic_load_n(&e->rec->flag, __ATOMIC_SEQ_CST)) {
		ret = mpq_futex_wait(&e->rec->sets, sets, deadline);
		if (ret == -ETIMEDOUT) {
			ret = load_acquire(&e->rec->sets) != sets ||
			      load_acquire(&e->rec->flag) ? 0 : -ETIMEDOUT;
			break;
		}
		ret = 0;
	}
	__atomic_sub_fetch(&e->rec->waiters, 1, __ATOMIC_RELAXED);
	return ret;
}

MPQ_EXPORT void mpq_event_free(struct mpq_event *e)
{
	void (*fn)(void *obj);

	if (!e)
		return;
	if (e->ext) {
		fn = MPQ_X_FN(e->ext, free);
		if (fn)
			fn(e->ext_obj);
		free(e);
		return;
	}
	mpq_sync_free(&e->sync);
	free(e);
}

MPQ_EXPORT int mpq_event_export(struct mpq_event *e, char *buf, size_t len)
{
	int (*fn)(void *obj, char *buf, size_t len);

	if (e && e->ext && buf) {
		fn = MPQ_X_FN(e->ext, export);
		return fn ? fn(e->ext_obj, buf, len) : -EOPNOTSUPP;
	}
	if (!e || !e->rec)
		return -EINVAL;
	return mpq_sync_export(&e->sync, "event", buf, len);
}

MPQ_EXPORT int mpq_event_import(struct mpq_event **out, const char *handle)
{
	int ret;

	if (!out || !handle)
		return -EINVAL;
	if (strncmp(handle, "mpq-event:", 10))
		return mpq_ext_import(MPQ_EXT_EVENT, handle, out);
	ret = mpq_event_alloc(out);

	if (ret)
		return ret;
	ret = mpq_sync_import(&(*out)->sync, handle, "event",
			      MPQ_SHM_KIND_EVENT);
	if (!ret)
		ret = mpq_event_bind(*out);
	if (ret)
		mpq_event_drop(out);
	return ret;
}
