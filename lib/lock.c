// SPDX-License-Identifier: MIT
/*
 * mpq_lock: Python's multiprocessing.Lock and RLock, in shared memory,
 * that survive the death of their holder.
 *
 * The lock word follows the kernel's robust futex ABI (robust.h): 0 when
 * free, else the holder's TID, with FUTEX_WAITERS while someone sleeps on
 * it. Taking a free lock is one CAS and releasing an uncontended one is
 * one exchange, with no system call; the robust list bookkeeping around
 * them is a few plain stores to this thread's own memory and to the lock's
 * line.
 *
 * Why robust futexes, of the mechanisms at hand (DESIGN.md): the holder's
 * death has to wake a waiter that sleeps on a futex, and only the kernel's
 * exit path can do that for a dead process. The mpq module could notice
 * the death (->flush at exit) but cannot wake a futex; making waiters
 * sleep in the module instead would cost a system call per contended
 * release on the kmod backend only, and leave the memfd backend without
 * recovery; checking the holder's liveness from the waiter is a polling
 * loop that races with PID reuse. With robust futexes the kernel marks the
 * word FUTEX_OWNER_DIED and wakes one waiter the moment the holder's
 * thread exits, on both backends, and the TID in the word is exactly what
 * it checks.
 *
 * Differences from Python, because a lock that can outlive its holder's
 * death must have a holder: a Lock is released only by the thread that
 * holds it (-EPERM otherwise; Python lets anyone release a Lock, use a
 * Semaphore for that), and taking a Lock one already holds is -EDEADLK
 * rather than a hang.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "probes.h"
#include "sync.h"

/* Where the module looks for a lock block's word (<linux/mpq.h>). */
_Static_assert(MPQ_SYNC_REC == MPQ_SHM_LOCK_WORD_OFF,
	       "a Lock block's record 0 is where the module reads its word");

void mpq_lock_init_rec(struct mpq_lock_rec *rec)
{
	memset(rec, 0, sizeof(*rec));
}

/* A lock handle on record index of another object's block. */
void mpq_lock_borrow(struct mpq_lock *l, struct mpq_sync *owner,
		     unsigned int index, int recursive)
{
	memset(l, 0, sizeof(*l));
	l->sync.block.fd = -1;
	l->rec = mpq_sync_rec(owner, index);
	l->oid = owner->block.id;
	l->index = index;
	l->recursive = recursive;
	l->borrowed = 1;
	l->spin_ns = owner->spin_ns;
}

static int mpq_lock_alloc(struct mpq_lock **out, int recursive)
{
	if (!out)
		return -EINVAL;
	*out = calloc(1, sizeof(**out));
	if (!*out)
		return -ENOMEM;
	(*out)->recursive = recursive;
	return 0;
}

/* A Lock of its own block: the first record is its. */
static void mpq_lock_own_bind(struct mpq_lock *l)
{
	l->rec = mpq_sync_rec(&l->sync, 0);
	l->oid = l->sync.block.id;
	l->spin_ns = l->sync.spin_ns;
}

static int mpq_lock_make(struct mpq_lock **out, int recursive,
			 const struct mpq_lock_attr *attr)
{
	static const uint32_t param[4];
	uint32_t kind = recursive ? MPQ_SHM_KIND_RLOCK : MPQ_SHM_KIND_LOCK;
	struct mpq_lock *l;
	int ret;

	ret = mpq_lock_attr_get(&attr);
	if (ret)
		return ret;
	ret = mpq_lock_alloc(out, recursive);
	if (ret)
		return ret;
	l = *out;
	ret = mpq_sync_create(&l->sync, kind, 0, param,
			      MPQ_SYNC_REC * 2, attr->backend, attr->spin_ns);
	if (ret) {
		free(l);
		*out = NULL;
		return ret;
	}
	mpq_lock_own_bind(l);
	return 0;
}

MPQ_EXPORT int mpq_lock_new(struct mpq_lock **out,
			    const struct mpq_lock_attr *attr)
{
	return mpq_lock_make(out, 0, attr);
}

MPQ_EXPORT int mpq_rlock_new(struct mpq_lock **out,
			     const struct mpq_lock_attr *attr)
{
	return mpq_lock_make(out, 1, attr);
}

static uint32_t mpq_lock_load(struct mpq_lock *l)
{
	return load_relaxed(&l->rec->word);
}

int mpq_lock_is_mine(struct mpq_lock *l)
{
	return (mpq_lock_load(l) & MPQ_RW_TID) == (uint32_t)mpq_tid();
}

/*
 * Try once to take a lock whose owner part is 0: free, or marked by the
 * kernel because its holder died. with keeps FUTEX_WAITERS set on what we
 * take (a woken waiter does that: others may still sleep, and our release
 * must wake one). Returns 0, -EOWNERDEAD (taken from a dead holder), or
 * -EAGAIN (someone else was faster).
 */
static int mpq_lock_grab(struct mpq_lock *l, uint32_t v, pid_t tid,
			 uint32_t with)
{
	uint32_t want = (uint32_t)tid | (v & MPQ_RW_WAITERS) | with;

	if (!__atomic_compare_exchange_n(&l->rec->word, &v, want, 0,
					 __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
		return -EAGAIN;
	if (v & MPQ_RW_OWNER_DIED) {
		__atomic_or_fetch(&l->rec->state, MPQ_LOCK_INCONSISTENT,
				  __ATOMIC_RELAXED);
		mpq_probe_lock_owner_died(l->oid, l->index);
		return -EOWNERDEAD;
	}
	return 0;
}

/*
 * A waiter that gives up after being woken may have taken the wake-up
 * meant to make someone acquire: make sure the next release wakes a
 * sleeper, or wake one now if the lock is already free.
 */
static void mpq_lock_pass_on(struct mpq_lock *l)
{
	uint32_t v = mpq_lock_load(l);

	while (v & MPQ_RW_TID) {
		if (v & MPQ_RW_WAITERS)
			return;
		if (__atomic_compare_exchange_n(&l->rec->word, &v,
						v | MPQ_RW_WAITERS, 0,
						__ATOMIC_RELAXED,
						__ATOMIC_RELAXED))
			return;
	}
	mpq_futex_wake(&l->rec->word, 1);
}

/*
 * The contended path: spin while the holder is likely to let go soon,
 * then announce a waiter (FUTEX_WAITERS) and sleep on the word. The
 * holder's release or the kernel, at the holder's death, wakes one.
 */
static int mpq_lock_wait_for(struct mpq_lock *l, pid_t tid, int64_t timeout_ns)
{
	int64_t deadline = mpq_deadline(timeout_ns), spin_end = 0;
	uint32_t with = 0, v;
	int woken = 0, ret, spins = 0;

	if (l->spin_ns > 0 && timeout_ns != 0)
		spin_end = mpq_now_ns() + l->spin_ns;
	for (;;) {
		v = mpq_lock_load(l);
		if (!(v & MPQ_RW_TID)) {
			ret = mpq_lock_grab(l, v, tid, with);
			if (ret != -EAGAIN)
				return ret;
			continue;
		}
		if (spin_end) {
			cpu_relax();
			if (++spins % 64 || mpq_now_ns() < spin_end)
				continue;
			spin_end = 0;
		}
		if (timeout_ns == 0)
			return -EAGAIN;
		if (!(v & MPQ_RW_WAITERS) &&
		    !__atomic_compare_exchange_n(&l->rec->word, &v,
						 v | MPQ_RW_WAITERS, 0,
						 __ATOMIC_RELAXED,
						 __ATOMIC_RELAXED))
			continue;
		ret = mpq_futex_wait(&l->rec->word, v | MPQ_RW_WAITERS,
				     deadline);
		/* From now on take it with WAITERS: others may sleep still. */
		with = MPQ_RW_WAITERS;
		if (ret == 0)
			woken = 1;
		if (ret == -ETIMEDOUT) {
			v = mpq_lock_load(l);
			if (!(v & MPQ_RW_TID)) {
				ret = mpq_lock_grab(l, v, tid, with);
				if (ret != -EAGAIN)
					return ret;
			}
			if (woken)
				mpq_lock_pass_on(l);
			return -ETIMEDOUT;
		}
	}
}

/* A contended acquire, as tracers see it (lock_wait_* in probes.h). */
static int mpq_lock_wait(struct mpq_lock *l, pid_t tid, int64_t timeout_ns)
{
	int ret;

	mpq_probe_lock_wait_begin(l->oid, l->index);
	ret = mpq_lock_wait_for(l, tid, timeout_ns);
	mpq_probe_lock_wait_end(l->oid, l->index, ret);
	return ret;
}

static int mpq_lock_check(struct mpq_lock *l)
{
	return l && l->rec ? 0 : -EINVAL;
}

static int mpq_lock_acquire_slow(struct mpq_lock *l, int64_t timeout_ns)
{
	uint32_t v = 0;
	pid_t tid;
	int ret;

	ret = mpq_lock_check(l);
	if (ret)
		return ret;
	/* The fast path may have named the lock in the pending slot. */
	mpq_robust_clear_pending();
	tid = mpq_tid();
	if ((mpq_lock_load(l) & MPQ_RW_TID) == (uint32_t)tid) {
		if (!l->recursive)
			return timeout_ns == 0 ? -EAGAIN : -EDEADLK;
		if (l->rec->count == UINT32_MAX)
			return -EAGAIN;
		l->rec->count++;
		return 0;
	}

	/* Named before the CAS: a death right after it still releases. */
	mpq_robust_pending(&l->rec->word);
	if (!__atomic_compare_exchange_n(&l->rec->word, &v, (uint32_t)tid, 0,
					 __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
		ret = mpq_lock_wait(l, tid, timeout_ns);
		if (ret && ret != -EOWNERDEAD) {
			mpq_robust_clear_pending();
			return ret;
		}
	}
	if (mpq_robust_link(&l->rec->word)) {
		/* Cannot be released at our death: do not keep it. */
		mpq_lock_release(l);
		return -ENOMEM;
	}
	if (l->recursive)
		l->rec->count = 1;
	if (ret == 0 && load_relaxed(&l->rec->state) & MPQ_LOCK_INCONSISTENT)
		ret = -EOWNERDEAD;
	return ret;
}

/*
 * The uncontended path, which must cost about what a process-shared
 * pthread mutex costs: the thread is set up and has room in its array of
 * held words, the lock is free (or, releasing, ours and the last one we
 * took). The same steps as mpq_robust_pending/link/unlink, with the
 * checks they repeat done once. Anything else takes the general path.
 */
MPQ_EXPORT int mpq_lock_acquire(struct mpq_lock *l, int64_t timeout_ns)
{
	struct mpq_rthread *t = &mpq_rt;
	uint64_t *entry, *prev;
	uint32_t v = 0;

	if (unlikely(!l || !l->rec || t->state != MPQ_RT_LINKED ||
		     t->nheld == t->cap))
		return mpq_lock_acquire_slow(l, timeout_ns);
	entry = mpq_rw_entry(&l->rec->word);
	__atomic_store_n(&t->head->list_op_pending,
			 (struct robust_list *)entry, __ATOMIC_RELAXED);
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	if (unlikely(!__atomic_compare_exchange_n(&l->rec->word, &v,
						  (uint32_t)t->tid, 0,
						  __ATOMIC_ACQUIRE,
						  __ATOMIC_RELAXED)))
		return mpq_lock_acquire_slow(l, timeout_ns);
	prev = t->nheld ? t->held[t->nheld - 1] : &t->first.link;
	__atomic_store_n(entry, (uint64_t)(uintptr_t)&t->last.link,
			 __ATOMIC_RELAXED);
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	__atomic_store_n(prev, (uint64_t)(uintptr_t)entry, __ATOMIC_RELAXED);
	t->held[t->nheld++] = entry;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	__atomic_store_n(&t->head->list_op_pending,
			 (struct robust_list *)t->idle, __ATOMIC_RELAXED);
	if (l->recursive)
		l->rec->count = 1;
	if (unlikely(load_relaxed(&l->rec->state) & MPQ_LOCK_INCONSISTENT))
		return -EOWNERDEAD;
	return 0;
}

static int mpq_lock_release_slow(struct mpq_lock *l);

MPQ_EXPORT int mpq_lock_release(struct mpq_lock *l)
{
	struct mpq_rthread *t = &mpq_rt;
	uint64_t *entry, *prev;
	uint32_t old;

	if (unlikely(!l || !l->rec || l->recursive ||
		     t->state != MPQ_RT_LINKED || !t->nheld))
		return mpq_lock_release_slow(l);
	entry = mpq_rw_entry(&l->rec->word);
	if (unlikely(t->held[t->nheld - 1] != entry ||
		     (load_relaxed(&l->rec->word) & MPQ_RW_TID) !=
		     (uint32_t)t->tid))
		return mpq_lock_release_slow(l);
	__atomic_store_n(&t->head->list_op_pending,
			 (struct robust_list *)entry, __ATOMIC_RELAXED);
	prev = t->nheld > 1 ? t->held[t->nheld - 2] : &t->first.link;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	__atomic_store_n(prev, (uint64_t)(uintptr_t)&t->last.link,
			 __ATOMIC_RELAXED);
	t->nheld--;
	/* Release: what we wrote under the lock is seen by the next holder. */
	old = __atomic_exchange_n(&l->rec->word, 0, __ATOMIC_RELEASE);
	if (unlikely(old & MPQ_RW_WAITERS))
		mpq_futex_wake(&l->rec->word, 1);
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	__atomic_store_n(&t->head->list_op_pending,
			 (struct robust_list *)t->idle, __ATOMIC_RELAXED);
	return 0;
}

static int mpq_lock_release_slow(struct mpq_lock *l)
{
	uint32_t old, v;
	int ret;

	ret = mpq_lock_check(l);
	if (ret)
		return ret;
	v = mpq_lock_load(l);
	if ((v & MPQ_RW_TID) != (uint32_t)mpq_tid())
		return !l->recursive && !(v & MPQ_RW_TID) ? -EINVAL : -EPERM;
	if (l->recursive) {
		if (l->rec->count > 1) {
			l->rec->count--;
			return 0;
		}
		l->rec->count = 0;
	}
	mpq_robust_unlink(&l->rec->word);
	/* Release: what we wrote under the lock is seen by the next holder. */
	old = __atomic_exchange_n(&l->rec->word, 0, __ATOMIC_RELEASE);
	if (old & MPQ_RW_WAITERS)
		mpq_futex_wake(&l->rec->word, 1);
	/* Only now: a death before the wake-up leaves it to the kernel. */
	mpq_robust_clear_pending();
	return 0;
}

MPQ_EXPORT int mpq_lock_consistent(struct mpq_lock *l)
{
	int ret = mpq_lock_check(l);

	if (ret)
		return ret;
	if (!mpq_lock_is_mine(l))
		return -EPERM;
	__atomic_and_fetch(&l->rec->state, ~MPQ_LOCK_INCONSISTENT,
			   __ATOMIC_RELAXED);
	return 0;
}

MPQ_EXPORT int mpq_lock_locked(struct mpq_lock *l)
{
	int ret = mpq_lock_check(l);

	if (ret)
		return ret;
	return (mpq_lock_load(l) & MPQ_RW_TID) != 0;
}

MPQ_EXPORT int mpq_lock_owned(struct mpq_lock *l)
{
	int ret = mpq_lock_check(l);

	if (ret)
		return ret;
	return mpq_lock_is_mine(l);
}

/*
 * For Condition.wait: let go of every level of a lock we hold, and take
 * it back with the same depth afterwards (Python's _release_save and
 * _acquire_restore).
 */
int mpq_lock_release_save(struct mpq_lock *l, uint32_t *count)
{
	if (!mpq_lock_is_mine(l))
		return -EPERM;
	*count = l->recursive ? l->rec->count : 1;
	if (l->recursive)
		l->rec->count = 1;
	return mpq_lock_release(l);
}

int mpq_lock_acquire_restore(struct mpq_lock *l, uint32_t count)
{
	int ret = mpq_lock_acquire(l, MPQ_FOREVER);

	if ((ret == 0 || ret == -EOWNERDEAD) && l->recursive)
		l->rec->count = count ? count : 1;
	return ret;
}

/*
 * Free a handle. A lock this thread still holds is released the way the
 * kernel releases a dead holder's: marked FUTEX_OWNER_DIED, a waiter
 * woken, and the next holder told -EOWNERDEAD. Unmapping it while linked
 * would leave the kernel a list entry in memory that is gone.
 */
static void mpq_lock_abandon(struct mpq_lock *l)
{
	if (!mpq_lock_is_mine(l))
		return;
	mpq_robust_unlink(&l->rec->word);
	__atomic_store_n(&l->rec->word, MPQ_RW_OWNER_DIED | MPQ_RW_WAITERS,
			 __ATOMIC_RELEASE);
	mpq_futex_wake(&l->rec->word, 1);
	mpq_robust_clear_pending();
}

void mpq_lock_fini(struct mpq_lock *l)
{
	if (l->rec)
		mpq_lock_abandon(l);
}

MPQ_EXPORT void mpq_lock_free(struct mpq_lock *l)
{
	if (!l || l->borrowed)
		return;
	mpq_lock_fini(l);
	mpq_sync_free(&l->sync);
	free(l);
}

MPQ_EXPORT int mpq_lock_export(struct mpq_lock *l, char *buf, size_t len)
{
	if (mpq_lock_check(l) || l->borrowed)
		return -EINVAL;
	return mpq_sync_export(&l->sync, l->recursive ? "rlock" : "lock", buf,
			       len);
}

MPQ_EXPORT int mpq_lock_import(struct mpq_lock **out, const char *handle)
{
	int recursive, ret;
	struct mpq_lock *l;

	if (!out || !handle)
		return -EINVAL;
	recursive = !strncmp(handle, "mpq-rlock:", 10);
	ret = mpq_lock_alloc(out, recursive);
	if (ret)
		return ret;
	l = *out;
	ret = mpq_sync_import(&l->sync, handle, recursive ? "rlock" : "lock",
			      recursive ? MPQ_SHM_KIND_RLOCK : MPQ_SHM_KIND_LOCK);
	if (!ret && l->sync.block.bytes < MPQ_SYNC_REC * 2)
		ret = -EUCLEAN;
	if (ret) {
		mpq_sync_drop(&l->sync);
		*out = NULL;
		return ret;
	}
	mpq_lock_own_bind(l);
	return 0;
}
