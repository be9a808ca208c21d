// SPDX-License-Identifier: MIT
/*
 * mpq_lock: Python's multiprocessing.Lock and RLock, in shared memory,
 * that survive the death of their holder.
 *
 * The lock word is a robust PI futex word (robust.h): 0 when free, else
 * the holder's TID, with FUTEX_WAITERS while the kernel has waiters queued
 * on it. Taking a free lock is one CAS and releasing an uncontended one is
 * one CAS, with no system call; the robust list bookkeeping around them is
 * a few plain stores to this thread's own memory and to the lock's line.
 * Anything else is the kernel's: FUTEX_LOCK_PI2 to wait (with a
 * CLOCK_MONOTONIC deadline; FUTEX_LOCK_PI before Linux 5.14) and
 * FUTEX_UNLOCK_PI to let go when FUTEX_WAITERS is set.
 *
 * Why robust futexes, of the mechanisms at hand (DESIGN.md): the holder's
 * death has to wake a waiter that sleeps on a futex, and only the kernel's
 * exit path can do that for a dead process. The mpq module could notice
 * the death (->flush at exit) but cannot wake a futex; making waiters
 * sleep in the module instead would cost a system call per contended
 * release on the kmod backend only, and leave the memfd backend without
 * recovery; checking the holder's liveness from the waiter is a polling
 * loop that races with PID reuse. With robust futexes the kernel marks the
 * word FUTEX_OWNER_DIED the moment the holder's thread exits, on both
 * backends, and the TID in the word is exactly what it checks.
 *
 * Why PI futexes (issue 11, item 7). With plain ones a release set the
 * word to 0 and woke one waiter; from then until that waiter's CAS, the
 * fact "others still sleep" lived only in that waiter. Killed in between,
 * while a third process had taken the lock by the fast path (0 -> TID, no
 * FUTEX_WAITERS), it left the others asleep on a lock that its next
 * release would not wake them for: for ever with MPQ_FOREVER. The kernel's
 * pending-slot wake-up covers this only on kernels that have the 2025 fix
 * for a pending word owned by another (6.1.192 has it; the 6.18 test host
 * does not), and no layout of plain words we found closes it everywhere:
 * a waiter cannot name a "bell" in the pending slot while the slot must
 * name the lock word for its own CAS. With PI futexes the instant does not
 * exist: FUTEX_UNLOCK_PI makes the first queued waiter the holder in the
 * same step (the word holds its TID before it even runs), a waiter killed
 * while queued just leaves the queue, and a holder's death is handed on by
 * the kernel (exit_pi_state_list) to the next queued waiter, with
 * FUTEX_OWNER_DIED, which it turns into -EOWNERDEAD. Userspace takes the
 * word only from 0; a dead holder's word is the kernel's to take over, as
 * for glibc's robust PI mutexes. We also inherit priority inheritance.
 *
 * The cost (bench/lockbench.c, memfd, medians of 4 interleaved runs on a
 * 2-CPU machine shared with other jobs): uncontended, the same one CAS
 * each way, 44 ns per acquire+release before and after; contended, no
 * lock stealing once a waiter is queued, and a system call for every
 * release of a word the kernel handed over (it leaves FUTEX_WAITERS set):
 * 72 ns per contended pair before, 107 after (a robust pthread mutex: 68
 * and 73). Spinning before queueing (which goes on past FUTEX_WAITERS, see
 * mpq_lock_wait_for) keeps most contended acquires out of the kernel.
 *
 * All processes that share a lock must be in one PID namespace: the kernel
 * reads the word's TID in the waiter's namespace (a TID it cannot find
 * makes acquire fail with -EUCLEAN rather than wait for ever).
 *
 * Differences from Python, because a lock that can outlive its holder's
 * death must have a holder: a Lock is released only by the thread that
 * holds it (-EPERM otherwise; Python lets anyone release a Lock, use a
 * Semaphore for that), and taking a Lock one already holds is -EDEADLK
 * rather than a hang.
 */
#include <limits.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

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

/* FUTEX_LOCK_PI2 (Linux 5.14) takes a CLOCK_MONOTONIC deadline. */
#ifndef FUTEX_LOCK_PI2
#define FUTEX_LOCK_PI2		13
#endif

static int mpq_no_lock_pi2;	/* before Linux 5.14: FUTEX_LOCK_PI */

/*
 * Sleep in the kernel until it gives us the lock (it sets FUTEX_WAITERS on
 * the word and queues us on the holder, to whom it lends our priority), or
 * until the absolute CLOCK_MONOTONIC deadline (-1: none). Returns 0 (the
 * word holds our TID, maybe with FUTEX_OWNER_DIED), -ETIMEDOUT, or -EUCLEAN
 * (the word names a thread that does not exist, or is not one the kernel
 * can queue on: scribbled, or a holder that died where owner-died recovery
 * is not available).
 */
static int mpq_lock_pi(uint32_t *word, int64_t deadline)
{
	struct timespec ts, *tsp = NULL;
	long r;

	for (;;) {
		if (deadline >= 0) {
			int64_t d = deadline;

			if (load_relaxed(&mpq_no_lock_pi2)) {
				struct timespec rt;

				/* FUTEX_LOCK_PI's deadline is CLOCK_REALTIME. */
				clock_gettime(CLOCK_REALTIME, &rt);
				d = deadline - mpq_now_ns() +
				    rt.tv_sec * 1000000000LL + rt.tv_nsec;
			}
			ts.tv_sec = d / 1000000000;
			ts.tv_nsec = d % 1000000000;
			tsp = &ts;
		}
		if (!load_relaxed(&mpq_no_lock_pi2)) {
			r = syscall(SYS_futex, word, FUTEX_LOCK_PI2, 0, tsp,
				    NULL, 0);
			if (r && errno == ENOSYS) {
				__atomic_store_n(&mpq_no_lock_pi2, 1,
						 __ATOMIC_RELAXED);
				continue;
			}
		} else {
			r = syscall(SYS_futex, word, FUTEX_LOCK_PI, 0, tsp,
				    NULL, 0);
		}
		if (r == 0)
			return 0;
		switch (errno) {
		case EINTR:
		case EAGAIN:
			continue;
		case ETIMEDOUT:
			return -ETIMEDOUT;
		case EDEADLK:	/* ours after all: a TID reused, a scribble */
		default:
			return -EUCLEAN;
		}
	}
}

/* Give the lock to the kernel to hand on: FUTEX_WAITERS is set. */
static void mpq_unlock_pi(uint32_t *word)
{
	while (syscall(SYS_futex, word, FUTEX_UNLOCK_PI, 0, NULL, NULL, 0) &&
	       (errno == EINTR || errno == EAGAIN))
		;
}

/*
 * We hold the word now (linked or not). If the kernel took it over from a
 * holder that died, FUTEX_OWNER_DIED is set: clear it (the state's
 * INCONSISTENT bit is what stays) and say so.
 */
static int mpq_lock_took(struct mpq_lock *l)
{
	uint32_t v = mpq_lock_load(l);

	if (!(v & MPQ_RW_OWNER_DIED))
		return 0;
	__atomic_and_fetch(&l->rec->word, ~MPQ_RW_OWNER_DIED, __ATOMIC_RELAXED);
	__atomic_or_fetch(&l->rec->state, MPQ_LOCK_INCONSISTENT,
			  __ATOMIC_RELAXED);
	mpq_probe_lock_owner_died(l->oid, l->index);
	return -EOWNERDEAD;
}

/*
 * The contended path: spin while the holder is likely to let go soon, then
 * ask the kernel. Spinning goes on when FUTEX_WAITERS is set: the kernel
 * leaves that bit on the word it hands over even when nobody else is
 * queued, so the next release goes through the kernel and sets the word
 * to 0, which a spinner can take; stopping at the bit turned one moment
 * of contention into a convoy through the kernel (measured: 2.5 times the
 * cost of a contended pair). Userspace only ever takes a word from 0: a word a dead
 * holder left (FUTEX_OWNER_DIED) is the kernel's to take over, under its
 * own lock, as it is for glibc's robust PI mutexes.
 */
static int mpq_lock_wait_for(struct mpq_lock *l, pid_t tid, int64_t timeout_ns)
{
	int64_t deadline = mpq_deadline(timeout_ns), spin_end = 0;
	uint32_t v;
	int spins = 0, ret;

	if (l->spin_ns > 0 && timeout_ns != 0)
		spin_end = mpq_now_ns() + l->spin_ns;
	for (;;) {
		v = mpq_lock_load(l);
		if (v == 0) {
			if (__atomic_compare_exchange_n(&l->rec->word, &v,
							(uint32_t)tid, 0,
							__ATOMIC_ACQUIRE,
							__ATOMIC_RELAXED))
				return 0;
			continue;
		}
		if (!spin_end || v & MPQ_RW_OWNER_DIED)
			break;
		cpu_relax();
		if (++spins % 64 == 0 && mpq_now_ns() >= spin_end)
			break;
	}
	if (timeout_ns == 0) {
		/* Only a dead holder's lock is to be had without waiting. */
		if (v & MPQ_RW_TID)
			return -EAGAIN;
		if (syscall(SYS_futex, &l->rec->word, FUTEX_TRYLOCK_PI, 0,
			    NULL, NULL, 0))
			return errno == EWOULDBLOCK || errno == EAGAIN ||
			       errno == EINTR ? -EAGAIN : -EUCLEAN;
		return mpq_lock_took(l);
	}
	ret = mpq_lock_pi(&l->rec->word, deadline);
	return ret ? ret : mpq_lock_took(l);
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
	int ret = 0;

	if (l && unlikely(l->ext))
		return mpq_xl_acquire(l, timeout_ns);
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

	/*
	 * Named before the CAS or the system call, with the PI bit: a death
	 * after either gave us the word still releases it (the kernel marks
	 * it and hands it to the next in its queue).
	 */
	mpq_robust_pending_pi(&l->rec->word);
	if (!__atomic_compare_exchange_n(&l->rec->word, &v, (uint32_t)tid, 0,
					 __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
		ret = mpq_lock_wait(l, tid, timeout_ns);
		if (ret && ret != -EOWNERDEAD) {
			mpq_robust_clear_pending();
			return ret;
		}
	}
	if (mpq_robust_link_pi(&l->rec->word)) {
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
 * took, with nobody queued). The same steps as mpq_robust_pending_pi/
 * link_pi/unlink_pi, with the checks they repeat done once. Anything else
 * takes the general path.
 */
MPQ_EXPORT int mpq_lock_acquire(struct mpq_lock *l, int64_t timeout_ns)
{
	struct mpq_rthread *t = &mpq_rt;
	uint64_t tag, *prev;
	uint32_t v = 0;

	if (unlikely(!l || !l->rec || t->state != MPQ_RT_LINKED ||
		     t->nheld == t->cap))
		return mpq_lock_acquire_slow(l, timeout_ns);
	tag = mpq_rw_tag(&l->rec->word, 1);
	__atomic_store_n(&t->head->list_op_pending,
			 (struct robust_list *)(uintptr_t)tag, __ATOMIC_RELAXED);
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	if (unlikely(!__atomic_compare_exchange_n(&l->rec->word, &v,
						  (uint32_t)t->tid, 0,
						  __ATOMIC_ACQUIRE,
						  __ATOMIC_RELAXED)))
		return mpq_lock_acquire_slow(l, timeout_ns);
	prev = t->nheld ? mpq_rw_link(t->held[t->nheld - 1]) : &t->first.link;
	__atomic_store_n(mpq_rw_link(tag), (uint64_t)(uintptr_t)&t->last.link,
			 __ATOMIC_RELAXED);
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	__atomic_store_n(prev, tag, __ATOMIC_RELAXED);
	t->held[t->nheld++] = tag;
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

/*
 * Let the word go: a CAS from our bare TID to 0, or, when the kernel has
 * queued waiters (FUTEX_WAITERS), FUTEX_UNLOCK_PI, which makes the first
 * of them the holder in the same step. No instant exists where a waiter
 * was woken and does not hold the lock yet: the wake-up a death could
 * swallow is not there to lose.
 */
static inline void mpq_lock_let_go(struct mpq_lock *l, pid_t tid)
{
	uint32_t v = (uint32_t)tid;

	/* Release: what we wrote under the lock is seen by the next holder. */
	if (unlikely(!__atomic_compare_exchange_n(&l->rec->word, &v, 0, 0,
						  __ATOMIC_RELEASE,
						  __ATOMIC_RELAXED)))
		mpq_unlock_pi(&l->rec->word);
}

MPQ_EXPORT int mpq_lock_release(struct mpq_lock *l)
{
	struct mpq_rthread *t = &mpq_rt;
	uint64_t tag, *prev;

	if (unlikely(!l || !l->rec || l->recursive ||
		     t->state != MPQ_RT_LINKED || !t->nheld))
		return mpq_lock_release_slow(l);
	tag = mpq_rw_tag(&l->rec->word, 1);
	if (unlikely(t->held[t->nheld - 1] != tag ||
		     (load_relaxed(&l->rec->word) & MPQ_RW_TID) !=
		     (uint32_t)t->tid))
		return mpq_lock_release_slow(l);
	__atomic_store_n(&t->head->list_op_pending,
			 (struct robust_list *)(uintptr_t)tag, __ATOMIC_RELAXED);
	prev = t->nheld > 1 ? mpq_rw_link(t->held[t->nheld - 2]) :
			      &t->first.link;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	__atomic_store_n(prev, (uint64_t)(uintptr_t)&t->last.link,
			 __ATOMIC_RELAXED);
	t->nheld--;
	mpq_lock_let_go(l, t->tid);
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	__atomic_store_n(&t->head->list_op_pending,
			 (struct robust_list *)t->idle, __ATOMIC_RELAXED);
	return 0;
}

static int mpq_lock_release_slow(struct mpq_lock *l)
{
	uint32_t v;
	int ret;

	if (l && unlikely(l->ext))
		return MPQ_XL(l, release);
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
	mpq_robust_unlink_pi(&l->rec->word);
	mpq_lock_let_go(l, mpq_tid());
	/* Only now: a death before the word is let go leaves it to the kernel. */
	mpq_robust_clear_pending();
	return 0;
}

MPQ_EXPORT int mpq_lock_consistent(struct mpq_lock *l)
{
	int ret = mpq_lock_check(l);

	if (l && unlikely(l->ext))
		return MPQ_XL(l, consistent);
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

	if (l && unlikely(l->ext))
		return MPQ_XL(l, locked);
	if (ret)
		return ret;
	return (mpq_lock_load(l) & MPQ_RW_TID) != 0;
}

MPQ_EXPORT int mpq_lock_owned(struct mpq_lock *l)
{
	int ret = mpq_lock_check(l);

	if (l && unlikely(l->ext))
		return MPQ_XL(l, owned);
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
 * kernel releases a dead holder's: the next holder is told -EOWNERDEAD
 * (the state's INCONSISTENT bit, set while we still hold it; with nobody
 * queued the word is also left FUTEX_OWNER_DIED, as the kernel leaves it).
 * Unmapping it while linked would leave the kernel a list entry in memory
 * that is gone.
 */
static void mpq_lock_abandon(struct mpq_lock *l)
{
	uint32_t v = (uint32_t)mpq_tid();

	if (!mpq_lock_is_mine(l))
		return;
	__atomic_or_fetch(&l->rec->state, MPQ_LOCK_INCONSISTENT,
			  __ATOMIC_RELAXED);
	mpq_robust_unlink_pi(&l->rec->word);
	if (!__atomic_compare_exchange_n(&l->rec->word, &v, MPQ_RW_OWNER_DIED,
					 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED))
		mpq_unlock_pi(&l->rec->word);
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
	if (unlikely(l->ext))
		return mpq_xl_free(l);
	mpq_lock_fini(l);
	mpq_sync_free(&l->sync);
	free(l);
}

MPQ_EXPORT int mpq_lock_export(struct mpq_lock *l, char *buf, size_t len)
{
	if (l && unlikely(l->ext))
		return mpq_xl_export(l, buf, len);
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
	if (strncmp(handle, "mpq-lock:", 9) && strncmp(handle, "mpq-rlock:", 10))
		return mpq_ext_import(MPQ_EXT_LOCK, handle, out);
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
