/* SPDX-License-Identifier: MIT */
/*
 * The fast path of a queue operation's record (reclaim.c has the rest):
 * this thread's own record for the queue handle, from a small cache in
 * thread-local storage, and the deathbell named in the robust list's
 * pending slot for the length of the operation (robust.h).
 */
#ifndef MPQ_RECORD_H
#define MPQ_RECORD_H

#include "internal.h"
#include "robust.h"

#define MPQ_REC_CACHE	8

struct mpq_rec_own {
	uint64_t id;			/* the handle's; 0: empty */
	struct mpq_queue_rec *rec;
	int busy;			/* its intent is in use (a window) */
};

extern __thread struct mpq_rec_own mpq_rec_own[MPQ_REC_CACHE]
	__attribute__((tls_model("initial-exec")));

static inline struct mpq_rec_own *mpq_rec_slot(struct mpq_queue *q)
{
	return &mpq_rec_own[q->hid % MPQ_REC_CACHE];
}

/*
 * Start an operation: our own record for q if it is idle, else one for
 * this operation alone; NULL when none is free (more than MPQ_QUEUE_NREC
 * threads at once: the operation goes on unprotected).
 */
/* The record this thread keeps for q, taken; NULL if it has none free. */
static inline struct mpq_queue_rec *mpq_rec_cached(struct mpq_queue *q)
{
	struct mpq_rec_own *o = mpq_rec_slot(q);

	if (likely(o->id == q->hid && o->rec && !o->busy)) {
		o->busy = 1;
		mpq_robust_bell(&q->shm->deathbell);
		return o->rec;
	}
	return NULL;
}

static inline struct mpq_queue_rec *mpq_rec_begin(struct mpq_queue *q)
{
	struct mpq_queue_rec *r = mpq_rec_cached(q);

	return likely(r) ? r : mpq_rec_begin_slow(q);
}

/*
 * Say what we are about to claim. Release: a repairer that sees the claim
 * (tail or head moved, with release) sees this intent too.
 */
static inline void mpq_rec_intent(struct mpq_queue_rec *r, uint32_t op,
				  uint64_t pos, uint32_t n)
{
	__atomic_store_n(&r->op, op, __ATOMIC_RELAXED);
	__atomic_store_n(&r->pos, pos, __ATOMIC_RELAXED);
	__atomic_store_n(&r->n, n, __ATOMIC_RELEASE);
}

/* End it: no intent any more, the pending slot back to idle. */
static inline void mpq_rec_end(struct mpq_queue *q, struct mpq_queue_rec *r)
{
	struct mpq_rec_own *o = mpq_rec_slot(q);

	if (likely(r && o->rec == r && o->id == q->hid)) {
		__atomic_store_n(&r->n, 0, __ATOMIC_RELEASE);
		o->busy = 0;
		mpq_robust_clear_pending();
		return;
	}
	mpq_rec_end_slow(r);
}

#endif /* MPQ_RECORD_H */
