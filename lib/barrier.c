// SPDX-License-Identifier: MIT
/*
 * mpq_barrier: Python's multiprocessing.Barrier, in shared memory, broken
 * for everyone when a party dies waiting at it.
 *
 * One futex word holds the state: the generation (a round of `parties`
 * arrivals), a BROKEN bit, and the arrivals of this round. A party arrives
 * with a CAS that adds one; the last one runs the action, moves to the
 * next generation and wakes everyone. BROKEN is sticky until reset(): it
 * stops arrivals, and the parties waiting in its generation leave with
 * -ECANCELED. reset() also marks each waiting party's slot BROKEN before
 * it moves to a new generation, so that a party that wakes late knows its
 * round did not complete.
 *
 * Death. While a party is inside wait() it holds a slot: a robust futex
 * word (robust.h) with its TID and FUTEX_WAITERS. If it dies, SIGKILL
 * included, the kernel marks that word FUTEX_OWNER_DIED and wakes one
 * process asleep on it. Every waiter sleeps on the state word and on the
 * other slots' words at once (futex_waitv(2)), whether they are taken yet
 * or not: a wake-up goes to whoever sleeps on the address, so a waiter
 * that went to sleep before a party arrived still hears of its death. The
 * waiter woken breaks the barrier, which wakes the rest. A party that dies
 * outside wait() cannot be told from a slow one (as in Python): the others
 * wait for it until their timeout. futex_waitv takes
 * 128 words: with more than 127 other slots a waiter watches the 127 after
 * its own and also looks again every MPQ_BARRIER_RESCAN_NS.
 */
#include <limits.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "sync.h"

#define MPQ_BARRIER_COUNT	0xffffU
#define MPQ_BARRIER_BROKEN	(1U << 16)
#define MPQ_BARRIER_GEN_SHIFT	17
#define MPQ_BARRIER_MAX_PARTIES	32767U
#define MPQ_BARRIER_WATCH	127U
#define MPQ_BARRIER_RESCAN_NS	(100 * 1000000LL)

/* Slot outcome: set by reset() for each party of the round it cancels. */
#define MPQ_PARTY_BROKEN	1U

/*
 * The default timeout lives here, beside the state, so that it reaches
 * every process that imports the barrier (Python pickles it with the
 * barrier). A flag says it was set: a barrier made before 0.3 has zeros
 * here, which must not read as a default of 0 ns.
 */
#define MPQ_BARRIER_HAS_TIMEOUT	1U

struct mpq_barrier_rec {
	uint32_t state;		/* futex word */
	uint32_t flags;		/* MPQ_BARRIER_HAS_TIMEOUT */
	int64_t timeout_ns;	/* the default, if the flag is set */
	uint32_t __pad[12];
};

struct mpq_party_rec {
	uint32_t word;		/* robust: TID | WAITERS while in wait() */
	uint32_t gen;		/* the generation it waits in */
	uint32_t outcome;
	uint32_t __pad0[5];
	uint64_t link;
	uint64_t __pad1[3];
};
MPQ_ROBUST_RECORD(struct mpq_party_rec, word, link);

struct mpq_barrier {
	struct mpq_sync sync;
	struct mpq_barrier_rec *rec;
	struct mpq_party_rec *slots;
	uint32_t parties;
	uint32_t nslots;
	int (*action)(void *arg);
	void *arg;
	/* An extension's (mpq_ext.h): rec is NULL. */
	const struct mpq_ext_barrier_ops *ext;
	void *ext_obj;
};

MPQ_EXPORT int mpq_ext_barrier_new(struct mpq_barrier **out,
				   const struct mpq_ext_barrier_ops *ops,
				   void *obj)
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

MPQ_EXPORT void *mpq_ext_barrier_obj(struct mpq_barrier *b,
				     const struct mpq_ext_barrier_ops *ops)
{
	return b && ops && b->ext == ops ? b->ext_obj : NULL;
}

/* An extension's barrier: a call by its table's offset. */
static int mpq_xb(struct mpq_barrier *b, size_t off)
{
	mpq_x_fn fn;

	if (!b || !b->ext)
		return -EINVAL;
	fn = mpq_x_op(b->ext, b->ext->size, off);
	return fn ? fn(b->ext_obj) : -EOPNOTSUPP;
}

#define MPQ_XB(b, op)	mpq_xb((b), offsetof(struct mpq_ext_barrier_ops, op))

static int mpq_xb_wait(struct mpq_barrier *b, int64_t timeout_ns)
{
	int (*wait)(void *obj, int64_t timeout_ns);

	if (!b || !b->ext)
		return -EINVAL;
	wait = MPQ_X_FN(b->ext, wait);
	return wait ? wait(b->ext_obj, timeout_ns) : -EOPNOTSUPP;
}

static uint32_t mpq_gen(uint32_t s)
{
	return s >> MPQ_BARRIER_GEN_SHIFT;
}

static int mpq_barrier_alloc(struct mpq_barrier **out,
			     int (*action)(void *), void *arg)
{
	if (!out)
		return -EINVAL;
	*out = calloc(1, sizeof(**out));
	if (!*out)
		return -ENOMEM;
	(*out)->action = action;
	(*out)->arg = arg;
	return 0;
}

static void mpq_barrier_drop(struct mpq_barrier **out)
{
	mpq_sync_drop(&(*out)->sync);
	*out = NULL;
}

static int mpq_barrier_bind(struct mpq_barrier *b)
{
	uint32_t parties = b->sync.param[0], nslots = b->sync.param[1];

	if (!parties || parties > MPQ_BARRIER_MAX_PARTIES ||
	    nslots != 2 * parties ||
	    b->sync.block.bytes < MPQ_SYNC_REC * (2ULL + nslots))
		return -EUCLEAN;
	b->parties = parties;
	b->nslots = nslots;
	b->rec = mpq_sync_rec(&b->sync, 0);
	b->slots = mpq_sync_rec(&b->sync, 1);
	return 0;
}

MPQ_EXPORT int mpq_barrier_new(struct mpq_barrier **out, unsigned int parties,
			       int (*action)(void *arg), void *arg,
			       const struct mpq_lock_attr *attr)
{
	return mpq_barrier_new_timeout(out, parties, action, arg, MPQ_FOREVER,
				       attr);
}

MPQ_EXPORT int mpq_barrier_new_timeout(struct mpq_barrier **out,
				       unsigned int parties,
				       int (*action)(void *arg), void *arg,
				       int64_t timeout_ns,
				       const struct mpq_lock_attr *attr)
{
	uint32_t param[4] = { parties, 2 * parties };
	int ret;

	if (!parties || parties > MPQ_BARRIER_MAX_PARTIES ||
	    (timeout_ns < 0 && timeout_ns != MPQ_FOREVER))
		return -EINVAL;
	ret = mpq_lock_attr_get(&attr);
	if (ret)
		return ret;
	ret = mpq_barrier_alloc(out, action, arg);
	if (ret)
		return ret;
	ret = mpq_sync_create(&(*out)->sync, MPQ_SHM_KIND_BARRIER, 0, param,
			      MPQ_SYNC_REC * (2ULL + 2 * parties),
			      attr->backend, attr->spin_ns);
	if (!ret)
		ret = mpq_barrier_bind(*out);
	if (ret) {
		mpq_barrier_drop(out);
		return ret;
	}
	if (timeout_ns != MPQ_FOREVER) {
		(*out)->rec->timeout_ns = timeout_ns;
		__atomic_store_n(&(*out)->rec->flags, MPQ_BARRIER_HAS_TIMEOUT,
				 __ATOMIC_RELEASE);
	}
	return 0;
}

/*
 * The barrier's default timeout, for a wait given none. Shared memory:
 * whatever a participant wrote there, a negative value is no limit.
 */
static int64_t mpq_barrier_default(const struct mpq_barrier *b)
{
	int64_t t;

	if (!(__atomic_load_n(&b->rec->flags, __ATOMIC_ACQUIRE) &
	      MPQ_BARRIER_HAS_TIMEOUT))
		return MPQ_FOREVER;
	t = __atomic_load_n(&b->rec->timeout_ns, __ATOMIC_RELAXED);
	return t < 0 ? MPQ_FOREVER : t;
}

/*
 * Take a free slot for the time we are inside wait(): the robust word
 * takes our TID (and WAITERS, so that the kernel wakes a watcher if we
 * die). Slots outnumber parties two to one, for parties of the previous
 * round still on their way out; if all are taken, yield until one frees.
 */
static struct mpq_party_rec *mpq_barrier_take_slot(struct mpq_barrier *b,
						   pid_t tid, int64_t deadline)
{
	uint32_t start = ((uint32_t)tid * 2654435761U) % b->nslots, i;

	for (;;) {
		for (i = 0; i < b->nslots; i++) {
			struct mpq_party_rec *p =
				&b->slots[(start + i) % b->nslots];
			uint32_t v = 0;

			if (load_relaxed(&p->word))
				continue;
			mpq_robust_pending(&p->word);
			if (__atomic_compare_exchange_n(&p->word, &v,
							(uint32_t)tid |
							MPQ_RW_WAITERS, 0,
							__ATOMIC_ACQUIRE,
							__ATOMIC_RELAXED)) {
				if (mpq_robust_link(&p->word) == 0)
					return p;
				__atomic_store_n(&p->word, 0, __ATOMIC_RELEASE);
			}
			mpq_robust_clear_pending();
		}
		if (deadline >= 0 && mpq_now_ns() >= deadline)
			return NULL;
		sched_yield();
	}
}

static void mpq_barrier_put_slot(struct mpq_party_rec *p)
{
	mpq_robust_unlink(&p->word);
	__atomic_store_n(&p->word, 0, __ATOMIC_RELEASE);
	mpq_robust_clear_pending();
}

/*
 * Break generation gen (if it is still the current one and not broken):
 * abort, timeout, an action that failed, a party that died. Wakes all.
 */
static void mpq_barrier_break(struct mpq_barrier *b, uint32_t gen)
{
	uint32_t s = load_relaxed(&b->rec->state);

	while (mpq_gen(s) == gen && !(s & MPQ_BARRIER_BROKEN)) {
		if (__atomic_compare_exchange_n(&b->rec->state, &s,
						s | MPQ_BARRIER_BROKEN, 0,
						__ATOMIC_SEQ_CST,
						__ATOMIC_RELAXED)) {
			mpq_futex_wake(&b->rec->state, INT_MAX);
			return;
		}
	}
}

/*
 * Has a party died inside wait()? The kernel replaced its TID with
 * FUTEX_OWNER_DIED. Whatever round it was in (it may have died before it
 * could count itself in this one, or after it was released from the last
 * one), it will not arrive again: break the current round rather than
 * let the others wait for it. The dead slot is freed for reuse.
 */
static int mpq_barrier_reap(struct mpq_barrier *b, uint32_t gen)
{
	int died = 0;
	uint32_t i;

	for (i = 0; i < b->nslots; i++) {
		struct mpq_party_rec *p = &b->slots[i];
		uint32_t v = load_acquire(&p->word);

		if (!(v & MPQ_RW_OWNER_DIED) || v & MPQ_RW_TID)
			continue;
		if (__atomic_compare_exchange_n(&p->word, &v, 0, 0,
						__ATOMIC_RELAXED,
						__ATOMIC_RELAXED))
			died = 1;
	}
	if (died)
		mpq_barrier_break(b, gen);
	return died;
}

/*
 * Sleep until the state word moves or a watched party dies: the state
 * word and up to 127 other slots, each at the value it has now.
 */
static int mpq_barrier_sleep(struct mpq_barrier *b, struct mpq_party_rec *me,
			     uint32_t s, int64_t deadline)
{
	const uint32_t *words[1 + MPQ_BARRIER_WATCH];
	uint32_t vals[1 + MPQ_BARRIER_WATCH], i, n = 1, first;
	int64_t until = deadline;

	words[0] = &b->rec->state;
	vals[0] = s;
	first = (uint32_t)(me - b->slots);
	for (i = 1; i < b->nslots && n <= MPQ_BARRIER_WATCH; i++) {
		struct mpq_party_rec *p = &b->slots[(first + i) % b->nslots];

		words[n] = &p->word;
		vals[n++] = load_relaxed(&p->word);
	}
	if (b->nslots - 1 > MPQ_BARRIER_WATCH) {
		int64_t rescan = mpq_now_ns() + MPQ_BARRIER_RESCAN_NS;

		if (until < 0 || rescan < until)
			until = rescan;
	}
	return mpq_futex_waitv(words, vals, n, until);
}

/*
 * What a waiting party's round came to: 1 done, -ECANCELED, 0 not yet.
 * *seen is the state it was judged by: sleep only while it still holds.
 */
static int mpq_barrier_outcome(struct mpq_barrier *b, struct mpq_party_rec *me,
			       uint32_t gen, uint32_t *seen)
{
	uint32_t s = load_acquire(&b->rec->state);

	*seen = s;
	if (load_acquire(&me->outcome) == MPQ_PARTY_BROKEN)
		return -ECANCELED;
	if (mpq_gen(s) != gen)
		return 1;
	if (s & MPQ_BARRIER_BROKEN)
		return -ECANCELED;
	return 0;
}

static int mpq_barrier_wait_round(struct mpq_barrier *b,
				  struct mpq_party_rec *me, uint32_t gen,
				  int64_t timeout_ns, int64_t deadline)
{
	int64_t spin_end = 0;
	int r, spins = 0;
	uint32_t s;

	if (b->sync.spin_ns > 0 && timeout_ns != 0)
		spin_end = mpq_now_ns() + b->sync.spin_ns;
	for (;;) {
		r = mpq_barrier_outcome(b, me, gen, &s);
		if (r)
			return r;
		if (spin_end) {
			cpu_relax();
			if (++spins % 64 || mpq_now_ns() < spin_end)
				continue;
			spin_end = 0;
		}
		if (mpq_barrier_reap(b, gen))
			continue;
		if (deadline >= 0 && mpq_now_ns() >= deadline) {
			/* Python: a timeout breaks the barrier. */
			mpq_barrier_break(b, gen);
			r = mpq_barrier_outcome(b, me, gen, &s);
			return r == 1 ? 1 : -ETIMEDOUT;
		}
		/* With the state judged above: a change since wakes at once. */
		mpq_barrier_sleep(b, me, s, deadline);
	}
}

/* The last party: the action, then the next generation for everyone. */
static int mpq_barrier_complete(struct mpq_barrier *b, uint32_t s)
{
	uint32_t gen = mpq_gen(s), next;
	int r;

	if (mpq_barrier_reap(b, gen))
		return -ECANCELED;
	if (b->action) {
		r = b->action(b->arg);
		if (r) {
			mpq_barrier_break(b, gen);
			return r < 0 ? r : -ECANCELED;
		}
	}
	s = (gen << MPQ_BARRIER_GEN_SHIFT) | b->parties;
	next = ((gen + 1) << MPQ_BARRIER_GEN_SHIFT);
	if (!__atomic_compare_exchange_n(&b->rec->state, &s, next, 0,
					 __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
		return -ECANCELED;	/* broken while the action ran */
	mpq_futex_wake(&b->rec->state, INT_MAX);
	return 1;
}

MPQ_EXPORT int mpq_barrier_wait(struct mpq_barrier *b, int64_t timeout_ns)
{
	struct mpq_party_rec *me;
	uint32_t s, gen, idx;
	int64_t deadline;
	int r;

	if (unlikely(!b || !b->rec))
		return mpq_xb_wait(b, timeout_ns);
	if (timeout_ns == MPQ_BARRIER_DEFAULT_TIMEOUT)
		timeout_ns = mpq_barrier_default(b);
	deadline = mpq_deadline(timeout_ns);
	me = mpq_barrier_take_slot(b, mpq_tid(), deadline);
	if (!me)
		return -ETIMEDOUT;
	for (;;) {
		s = load_acquire(&b->rec->state);
		if (s & MPQ_BARRIER_BROKEN) {
			r = -ECANCELED;
			goto out;
		}
		if ((s & MPQ_BARRIER_COUNT) >= b->parties) {
			/* The round is full: wait for the next one. */
			mpq_futex_wait(&b->rec->state, s, deadline);
			if (deadline >= 0 && mpq_now_ns() >= deadline) {
				r = -ETIMEDOUT;
				goto out;
			}
			continue;
		}
		/* Who we are, before we count: a breaker must see it. */
		__atomic_store_n(&me->gen, mpq_gen(s), __ATOMIC_RELAXED);
		__atomic_store_n(&me->outcome, 0, __ATOMIC_RELEASE);
		if (__atomic_compare_exchange_n(&b->rec->state, &s, s + 1, 0,
						__ATOMIC_SEQ_CST,
						__ATOMIC_RELAXED))
			break;
	}
	gen = mpq_gen(s);
	idx = s & MPQ_BARRIER_COUNT;
	if (idx + 1 == b->parties)
		r = mpq_barrier_complete(b, s + 1);
	else
		r = mpq_barrier_wait_round(b, me, gen, timeout_ns, deadline);
	if (r == 1)
		r = (int)idx;
out:
	mpq_barrier_put_slot(me);
	return r;
}

MPQ_EXPORT int mpq_barrier_abort(struct mpq_barrier *b)
{
	if (unlikely(!b || !b->rec))
		return MPQ_XB(b, abort);
	mpq_barrier_break(b, mpq_gen(load_relaxed(&b->rec->state)));
	return 0;
}

/*
 * Back to an empty, unbroken barrier. Parties waiting in the current round
 * leave with -ECANCELED: BROKEN first (no more arrivals), then each
 * waiting party's slot is marked, then the next generation begins.
 */
MPQ_EXPORT int mpq_barrier_reset(struct mpq_barrier *b)
{
	uint32_t s, gen, i;

	if (unlikely(!b || !b->rec))
		return MPQ_XB(b, reset);
	for (;;) {
		s = load_relaxed(&b->rec->state);
		gen = mpq_gen(s);
		mpq_barrier_break(b, gen);
		s = load_acquire(&b->rec->state);
		if (mpq_gen(s) != gen || !(s & MPQ_BARRIER_BROKEN))
			continue;
		for (i = 0; i < b->nslots; i++) {
			struct mpq_party_rec *p = &b->slots[i];

			if (load_relaxed(&p->word) & MPQ_RW_TID &&
			    load_relaxed(&p->gen) == gen)
				__atomic_store_n(&p->outcome, MPQ_PARTY_BROKEN,
						 __ATOMIC_RELEASE);
		}
		if (__atomic_compare_exchange_n(&b->rec->state, &s,
						(gen + 1) << MPQ_BARRIER_GEN_SHIFT,
						0, __ATOMIC_SEQ_CST,
						__ATOMIC_RELAXED))
			break;
	}
	mpq_futex_wake(&b->rec->state, INT_MAX);
	return 0;
}

MPQ_EXPORT int mpq_barrier_parties(struct mpq_barrier *b)
{
	return b && b->rec ? (int)b->parties : MPQ_XB(b, parties);
}

MPQ_EXPORT int mpq_barrier_n_waiting(struct mpq_barrier *b)
{
	uint32_t s;

	if (unlikely(!b || !b->rec))
		return MPQ_XB(b, n_waiting);
	s = load_relaxed(&b->rec->state);
	if (s & MPQ_BARRIER_BROKEN)
		return 0;
	s &= MPQ_BARRIER_COUNT;
	return s > b->parties ? (int)b->parties : (int)s;
}

MPQ_EXPORT int mpq_barrier_broken(struct mpq_barrier *b)
{
	if (unlikely(!b || !b->rec))
		return MPQ_XB(b, broken);
	return !!(load_relaxed(&b->rec->state) & MPQ_BARRIER_BROKEN);
}

MPQ_EXPORT void mpq_barrier_free(struct mpq_barrier *b)
{
	void (*fn)(void *obj);

	if (!b)
		return;
	if (b->ext) {
		fn = MPQ_X_FN(b->ext, free);
		if (fn)
			fn(b->ext_obj);
		free(b);
		return;
	}
	mpq_sync_free(&b->sync);
	free(b);
}

MPQ_EXPORT int mpq_barrier_export(struct mpq_barrier *b, char *buf,
				  size_t len)
{
	int (*fn)(void *obj, char *buf, size_t len);

	if (b && b->ext && buf) {
		fn = MPQ_X_FN(b->ext, export);
		return fn ? fn(b->ext_obj, buf, len) : -EOPNOTSUPP;
	}
	if (!b || !b->rec)
		return -EINVAL;
	return mpq_sync_export(&b->sync, "barrier", buf, len);
}

MPQ_EXPORT int mpq_barrier_import(struct mpq_barrier **out, const char *handle,
				  int (*action)(void *arg), void *arg)
{
	struct mpq_ext_import_args args = {
		.out = out, .action = action, .arg = arg,
	};
	int ret;

	if (out && handle && strncmp(handle, "mpq-barrier:", 12))
		return mpq_ext_import(MPQ_EXT_BARRIER, handle, &args);
	ret = mpq_barrier_alloc(out, action, arg);
	if (ret)
		return ret;
	ret = mpq_sync_import(&(*out)->sync, handle, "barrier",
			      MPQ_SHM_KIND_BARRIER);
	if (!ret)
		ret = mpq_barrier_bind(*out);
	if (ret)
		mpq_barrier_drop(out);
	return ret;
}
