// SPDX-License-Identifier: MIT
/*
 * A queue's operation records, and what happens to the slots of a
 * participant that died in the middle of a put or a get (see struct
 * mpq_queue_rec in <linux/mpq.h>).
 *
 * Every put and get takes a record for its length: a robust futex word
 * (robust.h) that the kernel marks FUTEX_OWNER_DIED if the thread dies,
 * and an intent, written before the claim of positions, that says which
 * ones. A slot the dead left claimed but unpublished would stop the
 * consumers there for good; one they took and never freed would stop the
 * producers a lap later. Waiters look for that before they sleep, and
 * when a death wakes them (the deathbell, or the module's wake-up at a
 * participant's exit):
 *  - a dead producer's unpublished slot is published as MPQ_SLOT_DROPPED,
 *    which consumers pass over: what it had not committed is not a
 *    message, and nothing behind it is lost;
 *  - a dead consumer's unfinished message is delivered again, to the
 *    consumer that found it: it never reached the dead one's caller.
 * Only a record whose holder died is acted upon, and only for slots that
 * no live record's intent covers: a live claimer is a slow one, not a
 * dead one. An intent is written before its claim and may be stale (the
 * claim failed and the thread died before writing the next one), so two
 * dead records can cover one slot; the lowest-numbered acts for it, and
 * it acts only after adopting that record with a CAS, so one repairer
 * acts, once. A repairer that dies in turn leaves the adopted record dead
 * again, with an intent that is still true.
 */
#include <limits.h>
#include <pthread.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "probes.h"
#include "record.h"

/* Where this thread looks first for a free record. */
static __thread unsigned int mpq_rec_hint = UINT_MAX;

/*
 * This thread's own record in each queue handle it used lately (the fast
 * path is in internal.h): taken and linked once, kept for the thread's
 * life (the kernel marks it dead when the thread exits, and it is
 * recycled), so that an operation costs a few plain stores and no atomic.
 * Keyed by the handle's id, which is never reused, so a freed handle's
 * entry can only miss. The fast path trusts this entry rather than read
 * the record back from shared memory, which cost more than the rest of
 * the bookkeeping (measured). A forked child forgets the entries: its TID
 * is not the one in the words.
 */
__thread struct mpq_rec_own mpq_rec_own[MPQ_REC_CACHE]
	__attribute__((tls_model("initial-exec")));

static int mpq_rec_dead(uint32_t v)
{
	return (v & MPQ_RW_OWNER_DIED) && !(v & MPQ_RW_TID);
}

/* Is the slot of p still waiting for what the dead did not finish? */
static int mpq_slot_stuck(struct mpq_queue *q, uint64_t p, uint32_t kind)
{
	uint32_t seq = load_acquire(&mpq_slot_at(q, p)->seq);

	/*
	 * Claimed, never published; not a slot inside a run, whose header
	 * is payload (a stale intent of a dead producer can name one).
	 */
	if (kind == MPQ_REC_PUT)
		return seq == (uint32_t)p &&
		       (int64_t)(load_acquire(&q->shm->tail) - p) > 0 &&
		       !mpq_run_covers(q, p);
	/* taken, never freed */
	return seq == (uint32_t)(p + 1) &&
	       (int64_t)(load_acquire(&q->shm->head) - p) > 0;
}

/*
 * A dead holder's blob (r adopted or taken by us, before its intent is
 * acted on). The record's blob is the holder's alone unless its message
 * went on:
 *  - a put (op PUT|WON, a claim that succeeded) whose slot is no longer
 *    stuck published it: the message has it;
 *  - a get whose claimed slot, still stuck, names it: the message is
 *    delivered again, blob and all.
 * A put that never claimed or whose slot is stuck (published dropped
 * next), or a get that freed its slot, leaves it to us: it goes. The
 * kernel may also have written a new blob's id into blob_arg, the holder
 * killed before it took it.
 */
static void mpq_rec_blob_reap(struct mpq_queue *q, struct mpq_queue_rec *r)
{
	uint64_t id, pos, kid;
	uint32_t op = load_relaxed(&r->op), n = load_relaxed(&r->n), k;

	/* A blob on its way between r and the pool goes one way first. */
	mpq_qblob_settle(q, r);
	id = load_acquire(&r->blob);
	kid = load_relaxed(&r->blob_arg.id);

	if (kid) {
		__atomic_store_n(&r->blob_arg.id, 0, __ATOMIC_RELAXED);
		kid = mpq_qblob_from_arg(q, kid,
					 load_relaxed(&r->blob_arg.bytes));
		if (!id)
			id = kid;
		else if (kid && kid != id)
			mpq_qblob_free(q, kid);
	}
	if (!id)
		return;
	__atomic_store_n(&r->blob, 0, __ATOMIC_RELAXED);
	pos = load_relaxed(&r->pos);
	if (n > q->capacity)
		n = 0;
	if ((op & (MPQ_REC_PUT | MPQ_REC_WON)) == (MPQ_REC_PUT | MPQ_REC_WON) &&
	    (!n || !mpq_slot_stuck(q, pos, MPQ_REC_PUT)))
		return;
	if (op & MPQ_REC_GET) {
		for (k = 0; k < n; k++) {
			struct mpq_slot *s = mpq_slot_at(q, pos + k);
			uint64_t sid;

			if (!mpq_slot_stuck(q, pos + k, MPQ_REC_GET) ||
			    !mpq_len_ext(q, load_relaxed(&s->len)))
				continue;
			/* The id is first in the slot's data, either way. */
			memcpy(&sid, s + 1, sizeof(sid));
			if (sid == id)
				return;
		}
	}
	mpq_qblob_free(q, id);
}

/*
 * Take a free record (or one whose holder died with nothing to finish):
 * the CAS of its word to our TID, under the pending slot, then linked in
 * our robust list. Returns NULL when every record is in use.
 */
static struct mpq_queue_rec *mpq_rec_grab(struct mpq_queue *q)
{
	uint32_t tid = (uint32_t)mpq_tid(), i, k;

	if (mpq_rec_hint >= MPQ_QUEUE_NREC)
		mpq_rec_hint = (tid * 2654435761U) % MPQ_QUEUE_NREC;
	for (k = 0; k < MPQ_QUEUE_NREC; k++) {
		struct mpq_queue_rec *r;
		uint32_t v;

		i = (mpq_rec_hint + k) % MPQ_QUEUE_NREC;
		r = &q->recs[i];
		v = load_acquire(&r->word);
		if (v && !(mpq_rec_dead(v) && !load_relaxed(&r->n)))
			continue;
		mpq_robust_pending(&r->word);
		if (!__atomic_compare_exchange_n(&r->word, &v, tid, 0,
						 __ATOMIC_ACQUIRE,
						 __ATOMIC_RELAXED))
			continue;
		__atomic_store_n(&r->n, 0, __ATOMIC_RELEASE);
		if (mpq_robust_link(&r->word)) {
			__atomic_store_n(&r->word, 0, __ATOMIC_RELEASE);
			break;
		}
		r->last = tid;
		mpq_rec_hint = (i + 1) % MPQ_QUEUE_NREC;
		if (v)
			mpq_rec_blob_reap(q, r);
		return r;
	}
	mpq_robust_clear_pending();
	return NULL;
}

/* A record for the length of one operation (for a second window). */
struct mpq_queue_rec *mpq_rec_take(struct mpq_queue *q)
{
	struct mpq_queue_rec *r = mpq_rec_grab(q);

	if (r)
		mpq_robust_bell(&q->shm->deathbell);
	return r;
}

/*
 * The slow path of mpq_rec_begin(): our record for q is busy (a window is
 * open: this operation gets one of its own), or we have none yet.
 */
struct mpq_queue_rec *mpq_rec_begin_slow(struct mpq_queue *q)
{
	struct mpq_rec_own *o = mpq_rec_slot(q);
	struct mpq_queue_rec *r;

	if (o->id == q->hid && o->rec)
		return mpq_rec_take(q);
	/*
	 * The entry holds another handle's record: let that one go (or the
	 * thread would gather records, one per switch between handles). Its
	 * memory is still mapped: a handle freed by this thread cleared its
	 * entry, and one freed by another thread stayed mapped because this
	 * thread held a record in it (mpq_rec_forget). One in a window stays.
	 */
	if (o->rec && !o->busy)
		mpq_rec_drop(o->rec);
	r = mpq_rec_grab(q);
	if (!r)
		return NULL;
	o->id = q->hid;
	o->rec = r;
	o->busy = 1;
	mpq_robust_bell(&q->shm->deathbell);
	return r;
}

/*
 * This thread's own record for q, idle, for a put to hold its blob in
 * (the put's operation then takes the same record: the fast path), or
 * NULL (a window of ours is open on it, or no record is free).
 */
struct mpq_queue_rec *mpq_rec_own_idle(struct mpq_queue *q)
{
	struct mpq_rec_own *o = mpq_rec_slot(q);
	struct mpq_queue_rec *r;

	if (o->id == q->hid && o->rec)
		return o->busy ? NULL : o->rec;
	r = mpq_rec_begin_slow(q);
	if (!r)
		return NULL;
	mpq_rec_end(q, r);
	return o->id == q->hid && o->rec == r ? r : NULL;
}

void mpq_rec_blob_handed(struct mpq_queue *q)
{
	struct mpq_rec_own *o = mpq_rec_slot(q);

	if (o->id == q->hid && o->rec)
		__atomic_store_n(&o->rec->blob, 0, __ATOMIC_RELEASE);
}

/* The slow path of mpq_rec_end(): no record, or one of its own. */
void mpq_rec_end_slow(struct mpq_queue_rec *r)
{
	if (r)
		mpq_rec_drop(r);
	else
		mpq_robust_clear_pending();
}

/*
 * The handle goes: let this thread's own record go too (unlinked: its
 * memory is about to be unmapped). Returns 1 if another live thread of
 * this process still holds a record in it: that thread's robust list
 * points into the mapping, which must then stay.
 */
int mpq_rec_forget(struct mpq_queue *q)
{
	struct mpq_rec_own *o = mpq_rec_slot(q);
	pid_t pid = getpid(), tid = mpq_tid();
	int others = 0;
	unsigned int i;

	if (o->id == q->hid && o->rec) {
		if (load_relaxed(&o->rec->word) == (uint32_t)tid)
			mpq_rec_drop(o->rec);
		memset(o, 0, sizeof(*o));
	}
	for (i = 0; i < MPQ_QUEUE_NREC; i++) {
		uint32_t v = load_relaxed(&q->recs[i].word) & MPQ_RW_TID;

		if (v && v != (uint32_t)tid &&
		    syscall(SYS_tgkill, pid, (pid_t)v, 0) == 0)
			others = 1;
	}
	return others;
}

/* Done: no intent, unlinked, free for the next operation. */
void mpq_rec_drop(struct mpq_queue_rec *r)
{
	__atomic_store_n(&r->n, 0, __ATOMIC_RELEASE);
	mpq_robust_unlink(&r->word);
	__atomic_store_n(&r->word, 0, __ATOMIC_RELEASE);
	mpq_robust_clear_pending();
}

/* Give an adopted record back as dead: its intent still needs acting on. */
static void mpq_rec_orphan(struct mpq_queue_rec *r)
{
	mpq_robust_unlink(&r->word);
	__atomic_store_n(&r->word, MPQ_RW_OWNER_DIED, __ATOMIC_RELEASE);
	mpq_robust_clear_pending();
}

/*
 * We cannot finish what r's intent claims now (an out-of-line message we
 * could not map): leave it as a dead holder's record, whose claim the
 * next consumer that looks for the dead delivers. If it was this thread's
 * own cached record, the cache forgets it.
 */
void mpq_rec_giveup(struct mpq_queue *q, struct mpq_queue_rec *r)
{
	struct mpq_rec_own *o = mpq_rec_slot(q);

	if (o->rec == r && o->id == q->hid)
		memset(o, 0, sizeof(*o));
	mpq_rec_orphan(r);
	/* Whoever sleeps now looks for the dead. */
	mpq_queue_notify(q, &q->shm->nonempty, MPQ_POLL_IN);
}

/* A dead record, seen with word v: make it ours, linked, or fail. */
static int mpq_rec_adopt(struct mpq_queue_rec *r, uint32_t v)
{
	uint32_t tid = (uint32_t)mpq_tid();

	mpq_robust_pending(&r->word);
	if (!__atomic_compare_exchange_n(&r->word, &v, tid, 0,
					 __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
		mpq_robust_clear_pending();
		return -EAGAIN;
	}
	if (mpq_robust_link(&r->word)) {
		__atomic_store_n(&r->word, v, __ATOMIC_RELEASE);
		mpq_robust_clear_pending();
		return -ENOMEM;
	}
	return 0;
}

/* For the overflow's lock holder (overflow.c): a dead promote's record. */
int mpq_rec_adopt_dead(struct mpq_queue_rec *r, uint32_t v)
{
	return mpq_rec_adopt(r, v);
}

/* The intent of record r as its fields say, n 0 if it makes no sense. */
static void mpq_rec_read(struct mpq_queue *q, struct mpq_queue_rec *r,
			 uint32_t *op, uint64_t *pos, uint32_t *n)
{
	*n = load_acquire(&r->n);
	*op = load_relaxed(&r->op);
	*pos = load_relaxed(&r->pos);
	if (*n > q->capacity || !(*op & (MPQ_REC_PUT | MPQ_REC_GET)))
		*n = 0;
}

/*
 * Who acts for position p of kind (MPQ_REC_PUT or _GET): the record whose
 * claim of it succeeded (WON: there is one at most, its intent is true),
 * else the lowest whose intent covers it (stale ones: a claim that failed,
 * or one that succeeded and died before it said so), as long as every
 * record covering it is dead or is self (adopted by us). Returns the
 * index, or -1 for "nobody now" (a live record covers it: that claimer is
 * slow, not dead). The winner acts so that what it counted for p (a
 * JoinableQueue's task) is taken back by the one that drops p.
 */
static int mpq_rec_token(struct mpq_queue *q, uint64_t p, uint32_t kind,
			 int self)
{
	int token = -1, won = -1, i;

	for (i = 0; i < (int)MPQ_QUEUE_NREC; i++) {
		struct mpq_queue_rec *r = &q->recs[i];
		uint32_t op, n, v = load_acquire(&r->word);
		uint64_t pos;

		mpq_rec_read(q, r, &op, &pos, &n);
		if (!(op & kind) || p - pos >= n)
			continue;
		if (i != self && !mpq_rec_dead(v))
			return -1;
		if (token < 0)
			token = i;
		if (won < 0 && op & MPQ_REC_WON)
			won = i;
	}
	return won >= 0 ? won : token;
}

/*
 * A dead producer's run (struct mpq_slot_run): its first slot stuck, the
 * k slots go out dropped together (the others' headers may be payload
 * now), and what it counted goes back: the run's count, written before
 * the tally's bit 0 was set. Published, its tasks stand.
 */
static void mpq_reclaim_run(struct mpq_queue *q, int i, uint64_t pos,
			    uint32_t k, uint64_t t)
{
	struct mpq_queue_rec *r = &q->recs[i];
	struct mpq_slot_run_size *z = mpq_run_size_at(q, mpq_slot_at(q, pos));
	int stuck = mpq_slot_stuck(q, pos, MPQ_REC_PUT) &&
		    mpq_rec_token(q, pos, MPQ_REC_PUT, i) == i;
	uint64_t dropped = 0;

	if (k > q->capacity - (pos & q->mask))
		k = 0;		/* scribbled: not a run's */
	if (t & 1) {
		/* A run's header is in the ring, unless scribbled. */
		if (stuck && mpq_run_head_fits(q, pos)) {
			dropped = load_relaxed(&z->count);
			if ((t >> 1) < dropped)	/* scribbled */
				dropped = t >> 1;
		}
		__atomic_store_n(&r->tasks, (t & ~1ULL) - 2ULL * dropped,
				 __ATOMIC_SEQ_CST);
		if (dropped)
			mpq_queue_task_wake(q);
	}
	if (stuck && k) {
		mpq_run_drop(q, pos, k);
		mpq_probe_queue_reclaim(q->id, pos, 1);
	}
	mpq_rec_drop(r);
	if (stuck && k)
		mpq_queue_notify(q, &q->shm->nonempty, MPQ_POLL_IN);
}

/*
 * A dead producer's claim: publish each stuck slot it acts for as
 * MPQ_SLOT_DROPPED. What it counted for them (a JoinableQueue's tasks,
 * the tally's bit 0 says it did) goes first, in one store that also
 * clears the bit: killed after it, the repairer's successor drops the
 * slots and takes back nothing more.
 */
static void mpq_reclaim_put(struct mpq_queue *q, int i, uint32_t op,
			    uint64_t pos, uint32_t n)
{
	struct mpq_queue_rec *r = &q->recs[i];
	uint64_t t = load_acquire(&r->tasks);
	uint32_t dropped = 0, k;

	if (op & MPQ_REC_RUN) {
		mpq_reclaim_run(q, i, pos, n, t);
		return;
	}
	if (t & 1) {
		for (k = 0; k < n; k++)
			if (mpq_slot_stuck(q, pos + k, MPQ_REC_PUT) &&
			    mpq_rec_token(q, pos + k, MPQ_REC_PUT, i) == i)
				dropped++;
		if ((t >> 1) < dropped)	/* scribbled */
			dropped = (uint32_t)(t >> 1);
		__atomic_store_n(&r->tasks, (t & ~1ULL) - 2ULL * dropped,
				 __ATOMIC_SEQ_CST);
		if (dropped)
			mpq_queue_task_wake(q);
		dropped = 0;
	}
	for (k = 0; k < n; k++) {
		struct mpq_slot *s = mpq_slot_at(q, pos + k);

		if (!mpq_slot_stuck(q, pos + k, MPQ_REC_PUT) ||
		    mpq_rec_token(q, pos + k, MPQ_REC_PUT, i) != i)
			continue;
		__atomic_store_n(&s->len, MPQ_SLOT_DROPPED, __ATOMIC_RELAXED);
		store_release(&s->seq, (uint32_t)(pos + k + 1));
		mpq_probe_queue_reclaim(q->id, pos + k, 1);
		dropped++;
	}
	mpq_rec_drop(r);
	if (dropped)
		mpq_queue_notify(q, &q->shm->nonempty, MPQ_POLL_IN);
}

/*
 * A dead consumer's claim: deliver its stuck messages into bufs, as many
 * as fit (and, with exact, only those of exact bytes: get_array), oldest
 * first, and free their slots. What does not fit stays with the record,
 * given back as dead for the next consumer. Returns the count, or
 * -EMSGSIZE when the first did not fit exact.
 */
static int mpq_reclaim_get(struct mpq_queue *q, int i, uint64_t pos,
			   uint32_t n, struct iovec *bufs, unsigned int nbufs,
			   uint32_t exact)
{
	struct mpq_queue_rec *r = &q->recs[i];
	unsigned int got = 0;
	int other = 0;
	uint32_t k;

	for (k = 0; k < n; k++) {
		struct mpq_slot *s = mpq_slot_at(q, pos + k);
		struct mpq_slot_ext e = { 0 };
		int ext = 0;
		uint32_t len;

		if (!mpq_slot_stuck(q, pos + k, MPQ_REC_GET) ||
		    mpq_rec_token(q, pos + k, MPQ_REC_GET, i) != i)
			continue;
		len = load_relaxed(&s->len);
		if (mpq_len_ext(q, len)) {
			/* Out of line: from its blob, which then goes. */
			mpq_slot_ext_read(q, s, len, &e);
			if (got == nbufs || e.len > bufs[got].iov_len ||
			    (exact && e.len != exact)) {
				other = got < nbufs;
				break;
			}
			ext = mpq_qblob_take(q, &e, bufs[got].iov_base);
			if (ext && ext != -EUCLEAN)
				break;	/* not now: it stays */
			if (!ext) {
				bufs[got++].iov_len = e.len;
				ext = 1;
			}
		} else if (len <= q->msg_max) {
			if (got == nbufs || len > bufs[got].iov_len ||
			    (exact && len != exact)) {
				other = got < nbufs;
				break;
			}
			mpq_copy(bufs[got].iov_base, s + 1, len);
			bufs[got++].iov_len = len;
		}
		/*
		 * Corrupt or dropped: freed, not delivered. The blob is
		 * ours (the record's) before the slot lets it go.
		 */
		if (ext == 1)
			__atomic_store_n(&r->blob, e.id, __ATOMIC_RELEASE);
		store_release(&s->seq, (uint32_t)(pos + k + q->capacity));
		if (ext == 1)
			mpq_qblob_release(q, r);
		mpq_probe_queue_reclaim(q->id, pos + k, 2);
		/* From here on the intent covers only what is left. */
		mpq_rec_intent(r, MPQ_REC_GET | MPQ_REC_WON, pos + k + 1,
			       n - k - 1);
	}
	if (k < n)
		mpq_rec_orphan(r);
	else
		mpq_rec_drop(r);
	if (got)
		mpq_queue_notify(q, &q->shm->nonfull, MPQ_POLL_OUT);
	if (!got && other && exact)
		return -EMSGSIZE;
	return (int)got;
}

/*
 * Clean up after dead participants. A producer calls it with no buffers
 * (it only publishes dead producers' slots as dropped); a consumer gives
 * buffers for the dead consumers' messages (exact: of exact bytes only).
 * Returns how many messages it delivered into bufs, or -EMSGSIZE if none
 * and the first it found was not of exact bytes.
 */
int mpq_queue_reclaim(struct mpq_queue *q, struct iovec *bufs, unsigned int n,
		      uint32_t exact)
{
	int got = 0, i, ret;

	for (i = 0; i < (int)MPQ_QUEUE_NREC; i++) {
		struct mpq_queue_rec *r = &q->recs[i];
		uint32_t v = load_acquire(&r->word), op, cnt;
		uint64_t pos;

		if (!mpq_rec_dead(v))
			continue;
		mpq_rec_read(q, r, &op, &pos, &cnt);
		/*
		 * A promote past its commit point is finished by the
		 * overflow's next lock holder, never dropped (overflow.c).
		 */
		if (cnt && op & MPQ_REC_FILLED && op & MPQ_REC_WON) {
			mpq_ovf_settle(q);
			continue;
		}
		/*
		 * A take from a run: the dead one's busy bit goes (or its
		 * free is finished), by whoever finds it, once no live
		 * record covers the run.
		 */
		if (cnt && (op & (MPQ_REC_GET | MPQ_REC_RUN)) ==
			   (MPQ_REC_GET | MPQ_REC_RUN)) {
			if (mpq_rec_token(q, pos, MPQ_REC_GET, i) != i ||
			    mpq_rec_adopt(r, v))
				continue;
			mpq_run_reclaim_take(q, r, pos);
			continue;
		}
		/* A consumer's leftovers wait for a consumer. */
		if (cnt && op & MPQ_REC_GET && (!bufs || (unsigned int)got == n))
			continue;
		if (mpq_rec_adopt(r, v))
			continue;
		mpq_rec_blob_reap(q, r);
		if (!cnt)
			mpq_rec_drop(r);
		else if (op & MPQ_REC_PUT)
			mpq_reclaim_put(q, i, op, pos, cnt);
		else {
			ret = mpq_reclaim_get(q, i, pos, cnt, bufs + got,
					      n - (unsigned int)got, exact);
			if (ret < 0 && !got)
				return ret;
			got += ret > 0 ? ret : 0;
		}
	}
	return got;
}

/*
 * The first of record i's positions pos..pos+n that a consumer took and
 * never freed, and that i acts for (dead, or adopted by us); n if none.
 */
static uint32_t mpq_rec_first_stuck_get(struct mpq_queue *q, int i,
					uint64_t pos, uint32_t n)
{
	uint32_t k;

	for (k = 0; k < n; k++)
		if (mpq_slot_stuck(q, pos + k, MPQ_REC_GET) &&
		    mpq_rec_token(q, pos + k, MPQ_REC_GET, i) == i)
			break;
	return k;
}

/*
 * For a peek: hand one dead consumer's unfinished message to the caller,
 * in place. The message's position moves to a record of our own (its
 * intent written before the dead one's is narrowed, so that it is always
 * covered), which the caller holds for its window; the rest of the dead
 * record goes back to the dead for the next consumer. Returns 1 with m
 * filled in, or 0.
 */
int mpq_queue_reclaim_peek(struct mpq_queue *q, struct mpq_msg *m)
{
	int i;

	/*
	 * A dead producer's claim, or a dead consumer's promote from the
	 * overflow, holds up a peek as much as a get: settle those first,
	 * as a get's look does. Consumers that only peeked once waited for
	 * good behind one.
	 */
	mpq_queue_reclaim(q, NULL, 0, 0);
	for (i = 0; i < (int)MPQ_QUEUE_NREC; i++) {
		struct mpq_queue_rec *d = &q->recs[i], *mine;
		uint32_t v = load_acquire(&d->word), op, n, k;
		uint64_t pos;

		if (!mpq_rec_dead(v))
			continue;
		mpq_rec_read(q, d, &op, &pos, &n);
		/* A take from a run: mpq_queue_reclaim() above. */
		if (n && (!(op & MPQ_REC_GET) || op & MPQ_REC_RUN))
			continue;
		if (mpq_rec_adopt(d, v))
			continue;
		mpq_rec_blob_reap(q, d);
		k = mpq_rec_first_stuck_get(q, i, pos, n);
		if (k == n) {
			mpq_rec_drop(d);	/* nothing left to deliver */
			continue;
		}
		mine = mpq_rec_take(q);
		if (!mine) {
			mpq_rec_orphan(d);
			return 0;
		}
		mpq_rec_intent(mine, MPQ_REC_GET | MPQ_REC_WON, pos + k, 1);
		mpq_rec_intent(d, MPQ_REC_GET | MPQ_REC_WON, pos + k + 1,
			       n - k - 1);
		if (k + 1 < n)
			mpq_rec_orphan(d);
		else
			mpq_rec_drop(d);
		/*
		 * Our pending slot names the deathbell again (taking mine did,
		 * and dropping d reset it): the window below keeps it so.
		 */
		mpq_robust_bell(&q->shm->deathbell);
		mpq_probe_queue_reclaim(q->id, pos + k, 2);
		/* An out-of-line message that cannot be mapped now stays. */
		return mpq_queue_window(q, m, mine, pos + k) ? 0 : 1;
	}
	return 0;
}

/*
 * Does a dead consumer hold a message that a get would deliver again now
 * (for mpq_wait(), which must call such a queue ready)?
 */
int mpq_queue_dead_message(struct mpq_queue *q)
{
	int i;

	for (i = 0; i < (int)MPQ_QUEUE_NREC; i++) {
		struct mpq_queue_rec *r = &q->recs[i];
		uint32_t v = load_acquire(&r->word), op, n;
		uint64_t pos;

		if (!mpq_rec_dead(v))
			continue;
		mpq_rec_read(q, r, &op, &pos, &n);
		if (op & MPQ_REC_GET && mpq_rec_first_stuck_get(q, i, pos, n) < n)
			return 1;
	}
	return 0;
}

/* Is anyone in the middle of an operation (or a window) now? */
int mpq_queue_busy(struct mpq_queue *q)
{
	unsigned int i;

	for (i = 0; i < MPQ_QUEUE_NREC; i++)
		if (load_relaxed(&q->recs[i].word) & MPQ_RW_TID &&
		    load_relaxed(&q->recs[i].n))
			return 1;
	return 0;
}

/* A forked child's records are not its parent's. */
static void mpq_rec_atfork_child(void)
{
	memset(mpq_rec_own, 0, sizeof(mpq_rec_own));
}

static void __attribute__((constructor)) mpq_rec_init(void)
{
	pthread_atfork(NULL, NULL, mpq_rec_atfork_child);
}
