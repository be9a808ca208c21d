// SPDX-License-Identifier: MIT
/*
 * mpq_cond: Python's multiprocessing.Condition. A sequence word in shared
 * memory that notify bumps and waiters sleep on (a futex), and a lock:
 * an RLock of its own in the same block, or a lock the caller passes.
 *
 * wait() counts itself a waiter and notes the sequence while holding the
 * lock, releases the lock (every level of an RLock), sleeps while the
 * sequence is unchanged, and takes the lock back. notify(n) turns up to n
 * waiters not yet signalled into pending signals, bumps the sequence and
 * wakes that many sleepers; a waiter back under the lock takes a pending
 * signal if there is one (it was notified), else it timed out, or sleeps
 * again. Counting under the lock makes the count of notified waiters
 * exact, whoever of them wakes first; an unwatched sequence word alone
 * would let one notify release every waiter whose sleep it interrupted.
 *
 * A waiter that dies asleep takes nothing with it: the kernel only wakes
 * live sleepers, so no wake-up is lost on a dead process (a condition
 * variable that hands wake-ups out in tickets would lose the one the dead
 * waiter held). It stays counted as a waiter, so a later notify_all may
 * leave a signal nobody takes, and a later waiter takes it and returns
 * early: the spurious wake-up that pthread_cond_wait also allows.
 *
 * A waiter that dies after a notify woke it, before it is back under the
 * lock with the signal, must not take the notification with it either.
 * So notify wakes every sleeper, not n: each takes the lock in turn, the
 * first n find a signal, the others sleep again. Whoever of them dies, the
 * signal stays for the live ones, all awake. Waking only n cannot be made
 * safe: the woken waiter's death would have to wake another (the kernel
 * does that only for the word named in the robust list's pending slot),
 * and between its wake-up and its return that slot must name the lock
 * while it takes it (lock.c); a waiter killed while queued for the lock
 * would leave no trace. The price is a herd: notify(1) with w waiters
 * costs w wake-ups and w turns of the lock instead of one.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "sync.h"

struct mpq_cond_rec {
	uint32_t seq;		/* futex word: bumped by each notify */
	uint32_t waiters;	/* under the lock: waiting, not signalled */
	uint32_t signals;	/* under the lock: notified, not yet taken */
	uint32_t __pad[13];
};

struct mpq_cond {
	struct mpq_sync sync;
	struct mpq_cond_rec *rec;
	struct mpq_lock own;	/* the block's own lock, if it has one */
	struct mpq_lock *lock;	/* the lock in use: &own or the caller's */
	/* An extension's (mpq_ext.h): rec is NULL; lock is the extension's. */
	const struct mpq_ext_cond_ops *ext;
	void *ext_obj;
};

MPQ_EXPORT int mpq_ext_cond_new(struct mpq_cond **out,
				const struct mpq_ext_cond_ops *ops, void *obj,
				struct mpq_lock *lock)
{
	if (!out || !ops || ops->size < sizeof(size_t) || !lock)
		return -EINVAL;
	*out = calloc(1, sizeof(**out));
	if (!*out)
		return -ENOMEM;
	(*out)->lock = lock;
	(*out)->ext = ops;
	(*out)->ext_obj = obj;
	return 0;
}

MPQ_EXPORT void *mpq_ext_cond_obj(struct mpq_cond *c,
				  const struct mpq_ext_cond_ops *ops)
{
	return c && ops && c->ext == ops ? c->ext_obj : NULL;
}

/* wait, wait_for, notify of an extension's condition. */
static int mpq_xc_wait(struct mpq_cond *c, int (*pred)(void *arg), void *arg,
		       int64_t timeout_ns, int for_pred)
{
	int (*wait)(void *obj, int64_t timeout_ns);
	int (*wait_for)(void *obj, int (*pred)(void *arg), void *arg,
			int64_t timeout_ns);

	if (!c || !c->ext)
		return -EINVAL;
	if (!for_pred) {
		wait = MPQ_X_FN(c->ext, wait);
		return wait ? wait(c->ext_obj, timeout_ns) : -EOPNOTSUPP;
	}
	if (!pred)
		return -EINVAL;
	wait_for = MPQ_X_FN(c->ext, wait_for);
	return wait_for ? wait_for(c->ext_obj, pred, arg, timeout_ns) :
		-EOPNOTSUPP;
}

static int mpq_xc_notify(struct mpq_cond *c, int n)
{
	int (*notify)(void *obj, int n);
	mpq_x_fn all;

	if (!c || !c->ext || n < 0)
		return -EINVAL;
	all = mpq_x_op(c->ext, c->ext->size,
		       offsetof(struct mpq_ext_cond_ops, notify_all));
	if (n == INT_MAX && all)
		return all(c->ext_obj);
	notify = MPQ_X_FN(c->ext, notify);
	return notify ? notify(c->ext_obj, n) : -EOPNOTSUPP;
}

static int mpq_cond_alloc(struct mpq_cond **out)
{
	if (!out)
		return -EINVAL;
	*out = calloc(1, sizeof(**out));
	return *out ? 0 : -ENOMEM;
}

/* Point the handle at its records; the block's header is checked. */
static int mpq_cond_bind(struct mpq_cond *c, struct mpq_lock *lock)
{
	uint64_t need = MPQ_SYNC_REC * 3;

	if (c->sync.block.bytes < need)
		return -EUCLEAN;
	/* It sleeps and wakes in shared memory, beside its lock's record. */
	if (lock && lock->ext)
		return -EOPNOTSUPP;
	if (!(c->sync.flags & MPQ_SYNC_OWN_LOCK) != !!lock)
		return -EINVAL;
	c->rec = mpq_sync_rec(&c->sync, 0);
	if (lock) {
		c->lock = lock;
	} else {
		mpq_lock_borrow(&c->own, &c->sync, 1,
				!!(c->sync.flags & MPQ_SYNC_RLOCK));
		c->lock = &c->own;
	}
	return 0;
}

MPQ_EXPORT int mpq_cond_new(struct mpq_cond **out, struct mpq_lock *lock,
			    const struct mpq_lock_attr *attr)
{
	static const uint32_t param[4];
	struct mpq_cond *c;
	int ret;

	ret = mpq_lock_attr_get(&attr);
	if (ret)
		return ret;
	ret = mpq_cond_alloc(out);
	if (ret)
		return ret;
	c = *out;
	ret = mpq_sync_create(&c->sync, MPQ_SHM_KIND_COND,
			      lock ? 0 : MPQ_SYNC_OWN_LOCK | MPQ_SYNC_RLOCK,
			      param, MPQ_SYNC_REC * 3, attr->backend,
			      attr->spin_ns);
	if (!ret)
		ret = mpq_cond_bind(c, lock);
	if (ret) {
		mpq_sync_drop(&c->sync);
		*out = NULL;
	}
	return ret;
}

MPQ_EXPORT struct mpq_lock *mpq_cond_get_lock(struct mpq_cond *c)
{
	return c ? c->lock : NULL;
}

static int mpq_cond_check(struct mpq_cond *c)
{
	if (!c || !c->rec)
		return -EINVAL;
	return mpq_lock_is_mine(c->lock) ? 0 : -EPERM;
}

MPQ_EXPORT int mpq_cond_acquire(struct mpq_cond *c, int64_t timeout_ns)
{
	return c ? mpq_lock_acquire(c->lock, timeout_ns) : -EINVAL;
}

MPQ_EXPORT int mpq_cond_release(struct mpq_cond *c)
{
	return c ? mpq_lock_release(c->lock) : -EINVAL;
}

/* Sleep, without the lock, while the sequence is still seq. */
static int mpq_cond_sleep(struct mpq_cond *c, uint32_t seq, int64_t deadline)
{
	int r = 0;

	if (deadline >= 0 && mpq_now_ns() >= deadline)
		return -ETIMEDOUT;
	while (load_acquire(&c->rec->seq) == seq) {
		r = mpq_futex_wait(&c->rec->seq, seq, deadline);
		if (r == -ETIMEDOUT)
			break;
		r = 0;
	}
	return r;
}

MPQ_EXPORT int mpq_cond_wait(struct mpq_cond *c, int64_t timeout_ns)
{
	int64_t deadline = timeout_ns == 0 ? 0 : mpq_deadline(timeout_ns);
	int ret, slept, dead = 0;
	uint32_t seq, depth;

	if (unlikely(!c || !c->rec))
		return mpq_xc_wait(c, NULL, NULL, timeout_ns, 0);
	ret = mpq_cond_check(c);
	if (ret)
		return ret;
	c->rec->waiters++;
	for (;;) {
		/* Under the lock: a notify after this point changes seq. */
		seq = load_relaxed(&c->rec->seq);
		ret = mpq_lock_release_save(c->lock, &depth);
		if (ret) {
			c->rec->waiters--;
			return ret;
		}
		slept = mpq_cond_sleep(c, seq, deadline);
		ret = mpq_lock_acquire_restore(c->lock, depth);
		if (ret == -EOWNERDEAD)
			dead = 1;
		else if (ret)
			return ret;
		if (c->rec->signals) {
			c->rec->signals--;
			break;
		}
		if (slept == -ETIMEDOUT) {
			ret = -ETIMEDOUT;
			break;
		}
	}
	if (c->rec->waiters)
		c->rec->waiters--;
	/* A lock whose holder died is news the caller needs first. */
	return dead ? -EOWNERDEAD : ret;
}

MPQ_EXPORT int mpq_cond_wait_for(struct mpq_cond *c,
				 int (*pred)(void *arg), void *arg,
				 int64_t timeout_ns)
{
	int64_t deadline = mpq_deadline(timeout_ns), left = timeout_ns;
	int ret;

	if (unlikely(!c || !c->rec))
		return mpq_xc_wait(c, pred, arg, timeout_ns, 1);
	ret = mpq_cond_check(c);
	if (ret)
		return ret;
	if (!pred)
		return -EINVAL;
	while (!pred(arg)) {
		if (deadline >= 0) {
			left = deadline - mpq_now_ns();
			if (left <= 0)
				return -ETIMEDOUT;
		}
		ret = mpq_cond_wait(c, left);
		if (ret && ret != -ETIMEDOUT)
			return ret;
	}
	return 0;
}

MPQ_EXPORT int mpq_cond_notify(struct mpq_cond *c, int n)
{
	uint32_t waiting, k;
	int ret;

	if (unlikely(!c || !c->rec))
		return mpq_xc_notify(c, n);
	ret = mpq_cond_check(c);
	if (ret)
		return ret;
	if (n < 0)
		return -EINVAL;
	waiting = c->rec->waiters > c->rec->signals ?
		  c->rec->waiters - c->rec->signals : 0;
	k = (uint32_t)n < waiting ? (uint32_t)n : waiting;
	if (!k)
		return 0;
	c->rec->signals += k;
	__atomic_add_fetch(&c->rec->seq, 1, __ATOMIC_RELEASE);
	/* All, not k: a woken waiter that dies must not take one along. */
	mpq_futex_wake(&c->rec->seq, INT_MAX);
	return 0;
}

MPQ_EXPORT int mpq_cond_notify_all(struct mpq_cond *c)
{
	return mpq_cond_notify(c, INT_MAX);
}

MPQ_EXPORT void mpq_cond_free(struct mpq_cond *c)
{
	void (*fn)(void *obj);

	if (!c)
		return;
	if (c->ext) {
		fn = MPQ_X_FN(c->ext, free);
		if (fn)
			fn(c->ext_obj);
		free(c);
		return;
	}
	if (c->lock == &c->own)
		mpq_lock_fini(&c->own);
	mpq_sync_free(&c->sync);
	free(c);
}

MPQ_EXPORT int mpq_cond_export(struct mpq_cond *c, char *buf, size_t len)
{
	int (*fn)(void *obj, char *buf, size_t len);

	if (c && c->ext && buf) {
		fn = MPQ_X_FN(c->ext, export);
		return fn ? fn(c->ext_obj, buf, len) : -EOPNOTSUPP;
	}
	if (!c || !c->rec)
		return -EINVAL;
	return mpq_sync_export(&c->sync, "cond", buf, len);
}

MPQ_EXPORT int mpq_cond_import(struct mpq_cond **out, const char *handle,
			       struct mpq_lock *lock)
{
	struct mpq_ext_import_args args = { .out = out, .lock = lock };
	struct mpq_cond *c;
	int ret;

	if (out && handle && strncmp(handle, "mpq-cond:", 9))
		return mpq_ext_import(MPQ_EXT_COND, handle, &args);
	ret = mpq_cond_alloc(out);
	if (ret)
		return ret;
	c = *out;
	ret = mpq_sync_import(&c->sync, handle, "cond", MPQ_SHM_KIND_COND);
	if (!ret)
		ret = mpq_cond_bind(c, lock);
	if (ret) {
		mpq_sync_drop(&c->sync);
		*out = NULL;
	}
	return ret;
}
