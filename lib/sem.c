// SPDX-License-Identifier: MIT
/*
 * mpq_sem: Python's multiprocessing.Semaphore and BoundedSemaphore. The
 * value is a futex word in shared memory: acquire takes one with a CAS
 * while it is above zero, release gives one back with an atomic add.
 * Sleepers count themselves in waiters before their last look at the
 * value, and a release reads waiters after its add (both sequentially
 * consistent), so a release makes a system call only when someone may
 * sleep, and never misses one.
 *
 * A semaphore has no holder, as in Python: a process that dies after
 * acquiring takes its unit with it. (Use a Lock where a dead holder must
 * be noticed.) A sleeper that dies leaves its count in waiters, which only
 * costs later releases a spare wake-up call.
 *
 * A sleeper that dies after a release woke it, before it took the unit,
 * must not take the wake-up with it: the unit stays in value and the
 * other sleepers would sleep beside it for ever. So a sleeper names the
 * record's bell (a futex word that is always 0) in its robust list's
 * pending slot from before its first look at value until it has taken a
 * unit or given up, and sleeps on value and bell at once (futex_waitv).
 * If it dies at any instant of that, the kernel, finding a pending word
 * that is 0, wakes one sleeper on the bell (robust.h), which looks at
 * value again; that one is covered the same way. The pending slot is free
 * for this: a semaphore holds no robust word. Without futex_waitv (Linux
 * before 5.16) sleepers sleep on value alone and a release wakes them
 * all, so that a dead one cannot swallow the only wake-up.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "sync.h"

/* Python's SEM_VALUE_MAX is INT_MAX; ours is the futex word's range. */
#define MPQ_SEM_VALUE_MAX	0x7fffffffU

struct mpq_sem_rec {
	uint32_t value;		/* futex word */
	uint32_t waiters;
	uint32_t bell;		/* futex word, always 0: rung at a death */
	uint32_t __pad[13];
};

static int mpq_sem_alloc(struct mpq_sem **out)
{
	if (!out)
		return -EINVAL;
	*out = calloc(1, sizeof(**out));
	return *out ? 0 : -ENOMEM;
}

static int mpq_sem_bind(struct mpq_sem *s)
{
	if (s->sync.block.bytes < MPQ_SYNC_REC * 2)
		return -EUCLEAN;
	s->rec = mpq_sync_rec(&s->sync, 0);
	s->bounded = !!(s->sync.flags & MPQ_SYNC_BOUNDED);
	s->bound = s->sync.param[0];
	if (s->bound > MPQ_SEM_VALUE_MAX)
		return -EUCLEAN;
	return 0;
}

static void mpq_sem_drop(struct mpq_sem **out)
{
	mpq_sync_drop(&(*out)->sync);
	*out = NULL;
}

static int mpq_sem_make(struct mpq_sem **out, unsigned int value,
			int bounded, const struct mpq_lock_attr *attr)
{
	uint32_t param[4] = { value };
	int ret;

	if (value > MPQ_SEM_VALUE_MAX)
		return -EINVAL;
	ret = mpq_lock_attr_get(&attr);
	if (ret)
		return ret;
	ret = mpq_sem_alloc(out);
	if (ret)
		return ret;
	ret = mpq_sync_create(&(*out)->sync, MPQ_SHM_KIND_SEM,
			      bounded ? MPQ_SYNC_BOUNDED : 0, param,
			      MPQ_SYNC_REC * 2, attr->backend, attr->spin_ns);
	if (!ret)
		ret = mpq_sem_bind(*out);
	if (ret) {
		mpq_sem_drop(out);
		return ret;
	}
	(*out)->rec->value = value;
	return 0;
}

MPQ_EXPORT int mpq_sem_new(struct mpq_sem **out, unsigned int value,
			   const struct mpq_lock_attr *attr)
{
	return mpq_sem_make(out, value, 0, attr);
}

MPQ_EXPORT int mpq_bounded_sem_new(struct mpq_sem **out, unsigned int value,
				   const struct mpq_lock_attr *attr)
{
	return mpq_sem_make(out, value, 1, attr);
}

/* Take one if there is one. Returns 0 or -EAGAIN. */
static int mpq_sem_try(struct mpq_sem *s)
{
	uint32_t v = load_relaxed(&s->rec->value);

	while (v > 0 && v <= MPQ_SEM_VALUE_MAX) {
		if (__atomic_compare_exchange_n(&s->rec->value, &v, v - 1, 0,
						__ATOMIC_ACQUIRE,
						__ATOMIC_RELAXED))
			return 0;
	}
	return -EAGAIN;
}

/* Sleep while value is 0 and the bell is not rung. */
static int mpq_sem_sleep(struct mpq_sem *s, int64_t deadline)
{
	const uint32_t *words[2] = { &s->rec->value, &s->rec->bell };
	static const uint32_t vals[2];

	if (mpq_futex_has_waitv())
		return mpq_futex_waitv(words, vals, 2, deadline);
	return mpq_futex_wait(&s->rec->value, 0, deadline);
}

MPQ_EXPORT int mpq_sem_acquire(struct mpq_sem *s, int64_t timeout_ns)
{
	int64_t deadline, spin_end;
	int ret, spins = 0;

	if (!s || !s->rec)
		return s && s->ext ? mpq_xs_acquire(s, timeout_ns) : -EINVAL;
	if (mpq_sem_try(s) == 0)
		return 0;
	if (timeout_ns == 0)
		return -EAGAIN;
	deadline = mpq_deadline(timeout_ns);
	spin_end = s->sync.spin_ns > 0 ? mpq_now_ns() + s->sync.spin_ns : 0;
	while (spin_end) {
		cpu_relax();
		if (mpq_sem_try(s) == 0)
			return 0;
		if (++spins % 64 == 0 && mpq_now_ns() >= spin_end)
			break;
	}
	__atomic_add_fetch(&s->rec->waiters, 1, __ATOMIC_SEQ_CST);
	/* From here until we hold a unit, our death rings the bell. */
	mpq_robust_setup();
	mpq_robust_bell(&s->rec->bell);
	for (;;) {
		ret = mpq_sem_try(s);
		if (ret == 0)
			break;
		ret = mpq_sem_sleep(s, deadline);
		if (ret == -ETIMEDOUT) {
			ret = mpq_sem_try(s) == 0 ? 0 : -ETIMEDOUT;
			break;
		}
	}
	mpq_robust_clear_pending();
	__atomic_sub_fetch(&s->rec->waiters, 1, __ATOMIC_RELAXED);
	return ret;
}

MPQ_EXPORT int mpq_sem_release(struct mpq_sem *s)
{
	uint32_t v, limit;

	if (!s || !s->rec)
		return s && s->ext ? MPQ_XS(s, release) : -EINVAL;
	limit = s->bounded ? s->bound : MPQ_SEM_VALUE_MAX;
	v = load_relaxed(&s->rec->value);
	do {
		/* Python's ValueError: released too many times. */
		if (v >= limit)
			return s->bounded ? -EINVAL : -EOVERFLOW;
	} while (!__atomic_compare_exchange_n(&s->rec->value, &v, v + 1, 0,
					      __ATOMIC_SEQ_CST,
					      __ATOMIC_RELAXED));
	if (load_relaxed(&s->rec->waiters))
		mpq_futex_wake(&s->rec->value,
			       mpq_futex_has_waitv() ? 1 : INT_MAX);
	return 0;
}

MPQ_EXPORT int mpq_sem_get_value(struct mpq_sem *s)
{
	uint32_t v;

	if (!s || !s->rec)
		return s && s->ext ? MPQ_XS(s, get_value) : -EINVAL;
	v = load_relaxed(&s->rec->value);
	return v > MPQ_SEM_VALUE_MAX ? -EUCLEAN : (int)v;
}

MPQ_EXPORT void mpq_sem_free(struct mpq_sem *s)
{
	if (!s)
		return;
	if (s->ext)
		return mpq_xs_free(s);
	mpq_sync_free(&s->sync);
	free(s);
}

MPQ_EXPORT int mpq_sem_export(struct mpq_sem *s, char *buf, size_t len)
{
	if (!s || !s->rec)
		return s && s->ext ? mpq_xs_export(s, buf, len) : -EINVAL;
	return mpq_sync_export(&s->sync, "sem", buf, len);
}

MPQ_EXPORT int mpq_sem_import(struct mpq_sem **out, const char *handle)
{
	int ret;

	if (out && handle && strncmp(handle, "mpq-sem:", 8))
		return mpq_ext_import(MPQ_EXT_SEM, handle, out);
	ret = mpq_sem_alloc(out);
	if (ret)
		return ret;
	ret = mpq_sync_import(&(*out)->sync, handle, "sem", MPQ_SHM_KIND_SEM);
	if (!ret)
		ret = mpq_sem_bind(*out);
	if (ret)
		mpq_sem_drop(out);
	return ret;
}
