// SPDX-License-Identifier: MIT
/*
 * Runs: a batch of messages of one size packed over consecutive slots of
 * a queue's ring (struct mpq_slot_run in <linux/mpq.h> has the layout and
 * the rules). A slot per message costs each message a header, a seq
 * published and a seq freed: eight bytes of messages moved in 16 (24
 * before slots of 8 data bytes), and a batched stream a tenth of what a
 * packed ring does (bench/README.md). A run moves them with one copy
 * each way and one seq for the lot.
 *
 * Every bounded queue takes runs (an unbounded one's overflow keeps a
 * message per entry). Consumers take from a run without moving head, one
 * at a time: under the run's busy bit (MPQ_RUN_BUSY), set with a
 * compare-and-swap under an operation record, so that a consumer killed
 * while it holds the bit is found out and its messages delivered again
 * (reclaim.c); the only consumer of a queue made with
 * MPQ_QUEUE_F_ONE_CONSUMER needs neither. A run holds more messages than
 * positions, so the bound is kept with sums of what runs hold beyond
 * their positions (mpq_run_room()).
 */
#include <string.h>

#include "probes.h"
#include "record.h"

/*
 * A claim that lost to another producer tries again at the new tail this
 * many times before the caller puts a message the plain way.
 */
#define MPQ_RUN_CLAIM_TRIES	4

/* taken and lap are one word, read and written whole (<linux/mpq.h>). */
typedef uint64_t __attribute__((may_alias)) mpq_run_word_t;
_Static_assert(offsetof(struct mpq_slot_run, lap) ==
	       offsetof(struct mpq_slot_run, taken) + 4 &&
	       (sizeof(struct mpq_slot) + offsetof(struct mpq_slot_run, taken)) %
	       8 == 0 && MPQ_SLOT_ALIGN % 8 == 0,
	       "a run's taken and lap are one aligned 64-bit word");

static inline mpq_run_word_t *mpq_run_wordp(struct mpq_slot_run *h)
{
	return (mpq_run_word_t *)(void *)&h->taken;
}

/* The word of taken (with MPQ_RUN_BUSY or not) for the run at pos. */
static inline uint64_t mpq_run_word(uint32_t taken, uint64_t pos)
{
	struct { uint32_t taken, lap; } w = { taken, (uint32_t)pos };
	uint64_t v;

	memcpy(&v, &w, sizeof(v));
	return v;
}

static inline uint32_t mpq_run_word_taken(uint64_t v)
{
	struct { uint32_t taken, lap; } w;

	memcpy(&w, &v, sizeof(w));
	return w.taken;
}

static inline uint32_t mpq_run_word_lap(uint64_t v)
{
	struct { uint32_t taken, lap; } w;

	memcpy(&w, &v, sizeof(w));
	return w.lap;
}

/* Slots a run of count messages of size bytes takes. */
static uint64_t mpq_run_slots(const struct mpq_queue *q, uint64_t count,
			      uint32_t size)
{
	return (MPQ_RUN_HDR(q) + count * size + q->slot_size - 1) /
	       q->slot_size;
}

/*
 * The run that starts at pos (its slot published, len MPQ_SLOT_RUN): its
 * header read once and checked against the ring, so that no copy from it
 * leaves the run's own slots whatever a participant wrote there. Returns
 * 0 or -EUCLEAN.
 */
int mpq_run_read(const struct mpq_queue *q, uint64_t pos, struct mpq_run *run)
{
	struct mpq_slot *s = mpq_slot_at(q, pos);
	struct mpq_slot_run *h = (struct mpq_slot_run *)(s + 1);
	struct mpq_slot_run_size *z = mpq_run_size_at(q, s);
	uint64_t k;
	uint32_t t;

	if (!mpq_run_head_fits(q, pos))
		return -EUCLEAN;
	run->hdr = h;
	run->count = load_relaxed(&z->count);
	run->size = load_relaxed(&z->size);
	run->word = __atomic_load_n(mpq_run_wordp(h), __ATOMIC_ACQUIRE);
	t = mpq_run_word_taken(run->word);
	run->busy = !!(t & MPQ_RUN_BUSY);
	run->kernel = !!(t & MPQ_RUN_KERNEL);
	run->taken = t & ~(MPQ_RUN_BUSY | MPQ_RUN_KERNEL);
	if (!run->count || run->count >= MPQ_RUN_KERNEL || !run->size ||
	    run->size > q->msg_max || run->taken > run->count ||
	    mpq_run_word_lap(run->word) != (uint32_t)pos)
		return -EUCLEAN;
	k = mpq_run_slots(q, run->count, run->size);
	if (k > q->capacity - (pos & q->mask))
		return -EUCLEAN;
	run->k = (uint32_t)k;
	run->data = (unsigned char *)s + MPQ_RUN_HDR(q);
	return 0;
}

/*
 * A run claimed at pos and not yet published: its slots, from the record
 * whose op says RUN (set before the payload covers the slots' headers),
 * or 0.
 */
static uint32_t mpq_run_claimed(const struct mpq_queue *q, uint64_t pos)
{
	unsigned int i;

	for (i = 0; i < MPQ_QUEUE_NREC; i++) {
		struct mpq_queue_rec *r = &q->recs[i];
		uint32_t n = load_acquire(&r->n);

		if (n && (load_relaxed(&r->op) & (MPQ_REC_PUT | MPQ_REC_RUN)) ==
			 (MPQ_REC_PUT | MPQ_REC_RUN) &&
		    load_relaxed(&r->pos) == pos &&
		    n <= q->capacity - (pos & q->mask))
			return n;
	}
	return 0;
}

/*
 * Is position p inside a run, past its first slot, so that the slot's
 * header is payload (the run published, or being put)? Found by walking
 * from head, a run at a time: head is always at a slot's start. For the
 * repairers (reclaim.c), before they read such a slot's seq.
 */
int mpq_run_covers(const struct mpq_queue *q, uint64_t p)
{
	uint64_t head = load_acquire(&q->shm->head), at = head;
	struct mpq_run run;

	if ((int64_t)(p - head) <= 0 || p - head > q->capacity)
		return 0;
	while ((int64_t)(p - at) > 0) {
		struct mpq_slot *s = mpq_slot_at(q, at);
		uint32_t seq = load_acquire(&s->seq), k = 0;

		if (seq == (uint32_t)(at + 1) &&
		    load_relaxed(&s->len) == MPQ_SLOT_RUN &&
		    !mpq_run_read(q, at, &run))
			k = run.k;
		else if (seq == (uint32_t)at)
			k = mpq_run_claimed(q, at);
		if (k > 1 && (int64_t)(at + k - p) > 0)
			return 1;
		at += k ? k : 1;
	}
	return 0;
}

/*
 * Messages published between head and tail (and at tail, a tail left
 * behind over its message): a slot's message counts one, a run what is
 * left of it; slots claimed and not yet published, and dropped ones,
 * none. Exact when nothing moves; under churn, what the slots held as
 * they were looked at. Stops at 2^32 - 1.
 */
uint32_t mpq_queue_count(const struct mpq_queue *q, uint64_t head,
			 uint64_t tail)
{
	uint64_t n = 0, p = head;
	struct mpq_run run;

	while ((int64_t)(tail + 1 - p) > 0 && p - head <= q->capacity) {
		struct mpq_slot *s = mpq_slot_at(q, p);
		uint32_t len;

		if (load_acquire(&s->seq) != (uint32_t)(p + 1)) {
			/* A run being put: its other slots are payload. */
			uint32_t k = mpq_run_claimed(q, p);

			p += k ? k : 1;
			continue;
		}
		len = load_relaxed(&s->len);
		if (len == MPQ_SLOT_RUN && !mpq_run_read(q, p, &run)) {
			n += run.count - run.taken;
			p += run.k;
			continue;
		}
		if (len != MPQ_SLOT_DROPPED && len != MPQ_SLOT_RUN)
			n++;
		p++;
	}
	return n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
}

/*
 * What consumers took from the run at head, if there is one: the only
 * run that can be partly taken (head stays at a run until it is spent).
 * From head_taken, on the consumers' line the bound reads anyway: a
 * producer that polled the run's own header, while its holder took from
 * it, cost batches of 256 on a queue of many consumers a quarter of
 * their rate (bench/README.md).
 */
static uint32_t mpq_run_taken_at(const struct mpq_queue *q, uint64_t head)
{
	uint64_t w = load_acquire(&q->shm->head_taken);

	if (mpq_run_word_lap(w) != (uint32_t)head)
		return 0;
	return mpq_run_word_taken(w) & ~(MPQ_RUN_BUSY | MPQ_RUN_KERNEL);
}

/* Say how many were taken from the run at head pos (head_taken). */
static void mpq_run_taken_say(struct mpq_queue *q, uint64_t pos,
			      uint32_t taken)
{
	__atomic_store_n(&q->shm->head_taken, mpq_run_word(taken, pos),
			 __ATOMIC_RELEASE);
}

/*
 * Is a live producer between counting a run in runs_put and claiming its
 * positions (its record's op MPQ_REC_RUN_COUNTED)? Then a ring found
 * empty still has that run's count to come, which a heal must not undo.
 */
static int mpq_run_counting(const struct mpq_queue *q)
{
	unsigned int i;

	for (i = 0; i < MPQ_QUEUE_NREC; i++) {
		struct mpq_queue_rec *r = &q->recs[i];
		uint32_t v = load_acquire(&r->word);

		if (v & MPQ_RW_TID && load_relaxed(&r->n) &&
		    load_relaxed(&r->op) & MPQ_REC_RUN_COUNTED)
			return 1;
	}
	return 0;
}

/*
 * The ring is empty at pos (head == tail == pos) and runs_put (put) is
 * not runs_freed (freed): no run is in it, so what is between them is a
 * death's (a run counted and never claimed, or freed and never summed).
 * Make them equal, unless a live producer's run is counted and not yet
 * claimed. Returns runs_put as it is now.
 */
static uint64_t mpq_run_heal(struct mpq_queue *q, uint64_t pos, uint64_t put,
			     uint64_t freed)
{
	if (q->one_producer) {
		/* Nobody else counts: a plain store. */
		__atomic_store_n(&q->shm->runs_put, freed, __ATOMIC_RELAXED);
		return freed;
	}
	/*
	 * A producer that counts after our look at the records either
	 * changed runs_put before our CAS (which then fails) or adds to
	 * what we leave; one that counted before it is in its record, read
	 * after runs_put (x86: loads in order; and its record is written
	 * before it counts, with a locked add).
	 */
	if (mpq_run_counting(q) || load_acquire(&q->shm->tail) != pos)
		return put;
	if (__atomic_compare_exchange_n(&q->shm->runs_put, &put, freed, 0,
					__ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
		return freed;
	return put;
}

/*
 * runs_out: no run may be in the ring now (the sums are equal). The only
 * producer clears it alone; among many, a producer that counts a run
 * between our look at the sums and the clear has set it already, so we
 * look at the sums again after the clear and set it back if they differ.
 */
static void mpq_run_out_clear(struct mpq_queue *q)
{
	__atomic_store_n(&q->shm->runs_out, 0, __ATOMIC_RELAXED);
	if (q->one_producer)
		return;
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (load_acquire(&q->shm->runs_put) !=
	    load_acquire(&q->shm->runs_freed))
		__atomic_store_n(&q->shm->runs_out, 1, __ATOMIC_RELAXED);
}

/*
 * How many of n more messages the bound leaves room for at tail pos, with
 * runs in the ring: maxsize less tail - head + runs_put - runs_freed -
 * what was taken from the run at head (<linux/mpq.h>). head and
 * runs_freed share the consumers' line: one read of it. A producer
 * about to claim at pos (producer set) also keeps the sums: a ring it
 * finds empty holds no run, so runs_put is made equal to runs_freed,
 * whatever a death left between them (mpq_run_heal()), and runs_out is
 * cleared once they are equal.
 */
unsigned int mpq_run_room(struct mpq_queue *q, uint64_t pos, unsigned int n,
			  int producer)
{
	uint64_t put = load_acquire(&q->shm->runs_put), head, freed;
	int64_t used;

	head = load_acquire(&q->shm->head);
	/* After head: a run's sum goes before head moves past it. */
	freed = load_acquire(&q->shm->runs_freed);
	if (producer && head == pos && put != freed)
		put = mpq_run_heal(q, pos, put, freed);
	if (producer && put == freed && load_relaxed(&q->shm->runs_out))
		mpq_run_out_clear(q);
	if ((int64_t)(pos - head) < 0)
		return n;	/* pos is stale: the claim fails and looks again */
	used = (int64_t)(pos - head + (put - freed));
	if (used >= (int64_t)q->maxsize)
		used -= mpq_run_taken_at(q, head);
	if (used < 0)
		used = 0;	/* scribbled sums */
	if (used >= (int64_t)q->maxsize)
		return 0;
	return n < q->maxsize - used ? n : (unsigned int)(q->maxsize - used);
}

/*
 * Whether a batch goes as runs now. Runs pay when both ends keep up
 * awake: a run of 256 costs one record, claim and free where slots cost
 * 256. Ends that sleep lost by them: a sleeping consumer is woken only
 * when a whole run is published, and the producer, once it fills the
 * bound, only when a whole run is taken; with a wake-up of tens of
 * microseconds (50 in the VMs measured) and a bound filled or drained in
 * a few, each side woke to a queue the other had filled or emptied and
 * gone to sleep on, one wake-up a side per bound (bench/README.md, "A
 * batch a slot per message while a consumer sleeps"). A message a slot
 * reaches the consumer as soon as it is written, and frees room as soon
 * as it is taken: the two overlap. So batches go a slot each, as before
 * runs, from a producer that never spins (spin_ns < 0: it sleeps at once,
 * as its consumers are likely to), and from any producer while a
 * consumer sleeps (the SLEEPING bit of nonempty, or a poller's
 * MPQ_POLL_IN) and until tail has moved a bound's worth (maxsize
 * positions: as many messages, a slot each) on. A spinning consumer sets
 * no bit. Only a hint: threads may race on run_resume, and a scribbled
 * tail only picks runs or slots.
 */
int mpq_run_pays(struct mpq_queue *q)
{
	uint64_t tail;

	if (q->spin_ns < 0)
		return 0;
	tail = load_relaxed(&q->shm->tail);
	if ((load_relaxed(&q->shm->nonempty) & MPQ_FUTEX_SLEEPING) ||
	    (load_relaxed(&q->shm->poll_wanted) & MPQ_POLL_IN)) {
		__atomic_store_n(&q->run_resume, tail + q->maxsize,
				 __ATOMIC_RELAXED);
		return 0;
	}
	return (int64_t)(tail - __atomic_load_n(&q->run_resume,
						 __ATOMIC_RELAXED)) >= 0;
}

/*
 * The largest run at tail pos for count messages of size bytes: within
 * the ring's end (a run never wraps), MPQ_RUN_SLOTS_MAX slots and the
 * slots found free. Returns its messages, with its slots in *kp; 0 when a
 * run would not save a slot there (a plain put takes the message).
 */
static uint32_t mpq_run_fit(struct mpq_queue *q, uint64_t pos, uint32_t size,
			    uint32_t count, uint32_t *kp)
{
	uint64_t room = q->capacity - (pos & q->mask), c, k, i;
	const unsigned char *b = (const unsigned char *)mpq_slot_at(q, pos);

	if (room > MPQ_RUN_SLOTS_MAX)
		room = MPQ_RUN_SLOTS_MAX;
	if (room * q->slot_size <= MPQ_RUN_HDR(q))
		return 0;
	c = (room * q->slot_size - MPQ_RUN_HDR(q)) / size;
	if (c > count)
		c = count;
	k = mpq_run_slots(q, c, size);
	/*
	 * Free, in order: a slot's seq is read only once the one before it
	 * was found free, so it is never a run's payload of a lap ago. (A
	 * stale pos, behind tail, may read this lap's payload as a seq:
	 * its claim then fails.) A pointer that strides, not a mask and a
	 * multiply per slot: put_many x256 1.06x with 16-byte slots.
	 */
	for (i = 0; i < k; i++, b += q->slot_size)
		if (load_acquire(&((const struct mpq_slot *)(const void *)b)->seq)
		    != (uint32_t)(pos + i))
			break;
	if (i < k) {
		k = i;
		c = k * q->slot_size > MPQ_RUN_HDR(q) ?
		    (k * q->slot_size - MPQ_RUN_HDR(q)) / size : 0;
	}
	if (c <= k)
		return 0;
	*kp = (uint32_t)k;
	return (uint32_t)c;
}

/* Add (or take back) a run's count beyond its positions in runs_put. */
static void mpq_run_count(struct mpq_queue *q, int64_t d)
{
	if (q->one_producer)
		__atomic_store_n(&q->shm->runs_put,
				 load_relaxed(&q->shm->runs_put) + (uint64_t)d,
				 __ATOMIC_RELAXED);
	else
		__atomic_add_fetch(&q->shm->runs_put, (uint64_t)d,
				   __ATOMIC_SEQ_CST);
}

/*
 * Claim the k positions of a run of c messages at tail pos, under r:
 * counted in runs_put first (so that no producer's bound counts less
 * than there will be), taken back if another producer moved tail first.
 * Returns 0, or -EAGAIN with *posp the tail to try at next.
 */
static int mpq_run_claim(struct mpq_queue *q, struct mpq_queue_rec *r,
			 uint64_t *posp, uint32_t c, uint32_t k)
{
	uint64_t pos = *posp;

	mpq_rec_intent(r, MPQ_REC_PUT | MPQ_REC_RUN_COUNTED, pos, k);
	if (!load_relaxed(&q->shm->runs_out))
		__atomic_store_n(&q->shm->runs_out, 1, __ATOMIC_RELAXED);
	mpq_run_count(q, c - k);
	/* Release: the intent is seen before the claim. */
	if (q->one_producer) {
		store_release(&q->shm->tail, pos + k);
		return 0;
	}
	if (__atomic_compare_exchange_n(&q->shm->tail, posp, pos + k, 0,
					__ATOMIC_RELEASE, __ATOMIC_RELAXED))
		return 0;
	mpq_run_count(q, -(int64_t)(c - k));
	return -EAGAIN;
}

/*
 * Put up to count messages of size bytes (<= msg_max) as one run: from
 * base, one after the other, or from msgs, an iovec each (all of size
 * bytes), without waiting. Returns the messages put (>= 2), 0 when a
 * run does not pay or cannot be made now (no record, the slot at tail
 * not free, the bound leaving room for one, other producers' claims
 * winning MPQ_RUN_CLAIM_TRIES times: a plain put of the first message
 * does), or -EAGAIN (the bound is reached).
 *
 * Under a record whose intent names the k positions before the claim,
 * and says RUN (after the claim is won) before the payload covers the
 * slots' headers: a producer killed before the publish leaves them to be
 * published as k dropped slots (reclaim.c).
 */
int mpq_run_put(struct mpq_queue *q, const void *base,
		const struct iovec *msgs, uint32_t size, uint32_t count)
{
	uint64_t pos = load_relaxed(&q->shm->tail);
	struct mpq_queue_rec *r = NULL;
	struct mpq_slot_run_size *z;
	struct mpq_slot_run *h;
	struct mpq_slot *s;
	unsigned int room, tries;
	unsigned char *p;
	uint32_t c, k = 0, i;

	for (tries = 0; tries < MPQ_RUN_CLAIM_TRIES; tries++) {
		c = mpq_run_fit(q, pos, size, count, &k);
		if (!c)
			break;
		room = mpq_run_room(q, pos, c, 1);
		if (!room) {
			if (r)
				mpq_rec_end(q, r);
			return -EAGAIN;
		}
		if (room < c) {
			c = room;
			k = (uint32_t)mpq_run_slots(q, c, size);
			if (c <= k)
				break;
		}
		if (!r)
			r = mpq_rec_begin(q);
		if (!r)
			return 0;
		if (!mpq_run_claim(q, r, &pos, c, k))
			goto claimed;
	}
	if (r)
		mpq_rec_end(q, r);
	return 0;
claimed:
	s = mpq_slot_at(q, pos);
	h = (struct mpq_slot_run *)(s + 1);
	z = mpq_run_size_at(q, s);
	/*
	 * RUN before the payload covers the slots' headers, the count
	 * before the tasks are counted: a repairer reads both (reclaim.c).
	 */
	__atomic_store_n(&r->op, MPQ_REC_PUT | MPQ_REC_WON | MPQ_REC_RUN,
			 __ATOMIC_RELAXED);
	z->count = c;
	z->size = size;
	__atomic_store_n(mpq_run_wordp(h), mpq_run_word(0, pos),
			 __ATOMIC_RELAXED);
	/* Those stores before any below (on x86, the compiler's order). */
	__atomic_thread_fence(__ATOMIC_RELEASE);
	mpq_queue_tasks_count(q, r, c);
	p = (unsigned char *)s + MPQ_RUN_HDR(q);
	if (base) {
		memcpy(p, base, (size_t)c * size);
	} else {
		/* Small ones inline: a memcpy call each cost a third. */
		for (i = 0; i < c; i++, p += size)
			mpq_copy(p, msgs[i].iov_base, size);
	}
	s->len = MPQ_SLOT_RUN;
	/* Pairs with the consumer's acquire of seq: all of it is there. */
	store_release(&s->seq, (uint32_t)(pos + 1));
	mpq_probe_queue_put(q->id, pos, (uint64_t)c * size);
	mpq_queue_tasks_settled(q, r);
	mpq_rec_end(q, r);
	mpq_queue_notify(q, &q->shm->nonempty, MPQ_POLL_IN);
	return (int)c;
}

/*
 * The run at head pos is spent (taken == count, busy), and ours (under
 * r, the record we hold it with or adopted a dead holder's with; NULL
 * for the only consumer): free its slots, count it freed, move head past
 * it. The covered slots go first, the first slot after them: a producer
 * checks a run's first slot before the slots after it, so none is
 * refilled before the first is free. None said taken from it before its
 * sum goes (a producer that sees the sum gone must not take them off
 * again): said here, beside the sum and head on the consumers' line,
 * which the producer may be reading; said before the slots' frees it
 * cost the one-producer queue's batches a tenth. The sum goes before
 * head moves past the run (one that sees head past it sees the sum gone,
 * and a producer that finds the ring empty heals the sums: runs_put
 * must then equal runs_freed).
 *
 * The only consumer frees the first slot, then moves head: killed
 * between, head is a cursor left behind, moved on by the next get.
 *
 * Among many consumers, head moves before the first slot is freed, with
 * a store. While the first slot still holds the run, busy, no other
 * consumer moves head (it waits for the bit), and no producer reaches
 * the run's slots; freed first, a consumer could find head left behind
 * over it and move head on under us, so the move had to be a
 * compare-and-swap, a locked instruction after the run's 86 stores (a
 * batch of 256 8 B messages), which stalled until every one of them had
 * its line: the default queue's batches of 256 8 B messages went 1.40x
 * faster with a store (bench/README.md). Killed after head moved, the first slot is left
 * published behind head, a spent run still busy: whoever finds our
 * record dead frees it (mpq_run_reclaim_take()). The sum needs no
 * repair then, but one killed before head moved may have stored it or
 * not: so the sum is said in our record first (run_word, and
 * MPQ_REC_RUN_SUMMED in op), and a repairer stores that same value. No
 * other run is freed while this one is at head, so it is still right.
 */
static void mpq_run_free(struct mpq_queue *q, uint64_t pos,
			 const struct mpq_run *run, struct mpq_queue_rec *r)
{
	struct mpq_slot *first = mpq_slot_at(q, pos);
	uint64_t freed;
	uint32_t i;

	for (i = 1; i < run->k; i++)
		store_release(&mpq_slot_at(q, pos + i)->seq,
			      (uint32_t)(pos + i + q->capacity));
	if (!r) {
		store_release(&first->seq, (uint32_t)(pos + q->capacity));
		mpq_run_taken_say(q, pos, 0);
		__atomic_store_n(&q->shm->runs_freed,
				 load_relaxed(&q->shm->runs_freed) +
				 (run->count - run->k), __ATOMIC_RELEASE);
		store_release(&q->shm->head, pos + run->k);
		return;
	}
	mpq_run_taken_say(q, pos, 0);
	if (load_relaxed(&r->op) & MPQ_REC_RUN_SUMMED) {
		freed = load_relaxed(&r->run_word);
	} else {
		freed = load_relaxed(&q->shm->runs_freed) +
			(run->count - run->k);
		__atomic_store_n(&r->run_word, freed, __ATOMIC_RELAXED);
		/* Release: the value before the flag that says it is there. */
		__atomic_store_n(&r->op, MPQ_REC_GET | MPQ_REC_RUN |
				 MPQ_REC_RUN_SUMMED, __ATOMIC_RELEASE);
	}
	__atomic_store_n(&q->shm->runs_freed, freed, __ATOMIC_RELEASE);
	store_release(&q->shm->head, pos + run->k);
	store_release(&first->seq, (uint32_t)(pos + q->capacity));
}

/*
 * A corrupt run at head pos: its first slot is dropped so the ring goes
 * on (the payload after it is seen as slots, most of them corrupt too).
 */
static int mpq_run_corrupt(struct mpq_queue *q, uint64_t pos)
{
	uint64_t p = pos;

	store_release(&mpq_slot_at(q, pos)->seq, (uint32_t)(pos + q->capacity));
	__atomic_compare_exchange_n(&q->shm->head, &p, pos + 1, 0,
				    __ATOMIC_RELEASE, __ATOMIC_RELAXED);
	mpq_queue_notify(q, &q->shm->nonfull, MPQ_POLL_OUT);
	return -EUCLEAN;
}

/*
 * Read the run at head pos, whose slot was seen published with len
 * MPQ_SLOT_RUN, and make it ours to take from: for one of many
 * consumers, its busy bit set under a record (*rp), whose run_word is the
 * busy word. Returns 1, 0 (head moved on, or another consumer set the
 * bit first: look again), MPQ_RUN_HELD (another consumer holds it), or
 * -EUCLEAN (corrupt: dropped).
 */
static int mpq_run_hold(struct mpq_queue *q, uint64_t pos, struct mpq_run *run,
			struct mpq_queue_rec **rp)
{
	struct mpq_queue_rec *r;
	uint64_t busy, old;
	int ret = mpq_run_read(q, pos, run);

	*rp = NULL;
	if (q->one_consumer)
		return ret ? mpq_run_corrupt(q, pos) : 1;
	/*
	 * Head still at pos: what we read was the run's header, not the
	 * payload of a later lap's run over the same slots (a consumer
	 * late by a lap), and we may act on it.
	 */
	if (load_acquire(&q->shm->head) != pos)
		return 0;
	if (ret)
		return mpq_run_corrupt(q, pos);
	if (run->busy)
		return MPQ_RUN_HELD;
	r = mpq_rec_begin(q);
	if (!r)
		return MPQ_RUN_HELD;	/* no record now: wait as for the bit */
	busy = mpq_run_word(run->taken | MPQ_RUN_BUSY, pos);
	__atomic_store_n(&r->run_word, busy, __ATOMIC_RELAXED);
	mpq_rec_intent(r, MPQ_REC_GET | MPQ_REC_RUN, pos, 1);
	old = run->word;
	/*
	 * Release: the intent before the bit (a repairer that sees the bit
	 * finds whose it is). The word has the run's lap: a later run over
	 * the same slot never has the one we expect.
	 */
	if (!__atomic_compare_exchange_n(mpq_run_wordp(run->hdr), &old, busy,
					 0, __ATOMIC_ACQ_REL,
					 __ATOMIC_RELAXED)) {
		mpq_rec_end(q, r);
		return 0;
	}
	run->word = busy;
	*rp = r;
	return 1;
}

/*
 * Done with the run at pos, which we hold: j more of its messages taken.
 * The rest stays for the next consumer (the bit cleared, and a consumer
 * that waited for it woken), or the run is spent and freed.
 */
static void mpq_run_done(struct mpq_queue *q, uint64_t pos,
			 struct mpq_run *run, struct mpq_queue_rec *r,
			 uint32_t j)
{
	uint64_t w;

	if (run->taken + j < run->count) {
		/*
		 * head_taken before the bit goes, so that no later holder's
		 * count is undone (killed between, the repairer says what is
		 * left); the only consumer, whose death nobody repairs,
		 * says it after taken: never more than there is.
		 */
		if (j && !q->one_consumer)
			mpq_run_taken_say(q, pos, run->taken + j);
		/* Release: the copy is done before taken says so. */
		__atomic_store_n(mpq_run_wordp(run->hdr),
				 mpq_run_word(run->taken + j, pos),
				 __ATOMIC_RELEASE);
		if (j && q->one_consumer)
			mpq_run_taken_say(q, pos, run->taken + j);
	} else {
		/* Spent, and kept busy: a repairer finishes a dead freer's. */
		w = mpq_run_word(run->count | MPQ_RUN_BUSY, pos);
		__atomic_store_n(mpq_run_wordp(run->hdr), w, __ATOMIC_RELEASE);
		mpq_run_free(q, pos, run, r);
	}
	if (r)
		mpq_rec_end(q, r);
	/* Others may have waited for the bit, or for what follows the run. */
	if (!q->one_consumer)
		mpq_queue_notify(q, &q->shm->nonempty, MPQ_POLL_IN);
	mpq_queue_notify(q, &q->shm->nonfull, MPQ_POLL_OUT);
}

/*
 * Take up to n messages from the run at head pos, whose slot was seen
 * published with len MPQ_SLOT_RUN: packed into arr (exact: the run's size
 * must be size), or one into each of bufs (iov_len in: room, out: the
 * length). Returns the count (>= 1), 0 (look again: it was spent and
 * freed now, or head moved on), MPQ_RUN_HELD (another consumer is taking
 * from it), -EMSGSIZE (the first does not fit, or is not size bytes:
 * bufs[0].iov_len or *size says how long it is), or -EUCLEAN (a corrupt
 * run: its first slot is dropped so the ring goes on).
 *
 * taken moves after the copy, so a consumer killed in the middle leaves
 * the messages it was copying first in the run, for the next consumer
 * (see struct mpq_slot_run).
 */
int mpq_run_get(struct mpq_queue *q, uint64_t pos, struct iovec *bufs,
		unsigned int n, void *arr, uint32_t *size, int waited)
{
	struct mpq_queue_rec *r;
	struct mpq_run run;
	uint32_t j, left;
	int ret = mpq_run_hold(q, pos, &run, &r);

	if (ret != 1)
		return ret;
	left = run.count - run.taken;
	if (!left) {
		/* A freer killed before the first slot was free. */
		mpq_run_done(q, pos, &run, r, 0);
		return 0;
	}
	j = n < left ? n : left;
	/* The rest: we free its slots after the copy (mpq_prefetch_w()). */
	if (j == left)
		mpq_prefetch_w(mpq_slot_at(q, pos), (size_t)run.k * q->slot_size);
	if (arr) {
		if (run.size != *size) {
			*size = run.size;
			ret = -EMSGSIZE;
			goto unhold;
		}
		if (waited)
			memcpy(arr, run.data + (size_t)run.taken * run.size,
			       (size_t)j * run.size);
		else
			mpq_copy_out(arr, run.data +
				     (size_t)run.taken * run.size,
				     (size_t)j * run.size);
	} else {
		uint32_t i;

		for (i = 0; i < j && bufs[i].iov_len >= run.size; i++) {
			mpq_copy(bufs[i].iov_base,
				 run.data + (size_t)(run.taken + i) * run.size,
				 run.size);
			bufs[i].iov_len = run.size;
		}
		if (!i) {
			bufs[0].iov_len = run.size;
			ret = -EMSGSIZE;
			goto unhold;
		}
		j = i;
	}
	mpq_probe_queue_get(q->id, pos, (uint64_t)j * run.size);
	mpq_run_done(q, pos, &run, r, j);
	return (int)j;
unhold:
	if (r)
		mpq_run_done(q, pos, &run, r, 0);
	return ret;
}

/*
 * A peek's window on the next message of the run at head pos: 1 with
 * *data and *len set (and, for one of many consumers, the run held under
 * *rp until mpq_run_release()), 0 (look again), MPQ_RUN_HELD or -EUCLEAN
 * (corrupt, dropped). The message stays first in the run until the
 * window is released.
 */
int mpq_run_peek(struct mpq_queue *q, uint64_t pos, void **data,
		 uint32_t *len, struct mpq_queue_rec **rp)
{
	struct mpq_run run;
	int ret = mpq_run_hold(q, pos, &run, rp);

	if (ret != 1)
		return ret;
	if (run.taken == run.count) {
		mpq_run_done(q, pos, &run, *rp, 0);
		*rp = NULL;
		return 0;
	}
	*data = run.data + (size_t)run.taken * run.size;
	*len = run.size;
	return 1;
}

/*
 * Release a run window's message at head pos: taken moves on by one. r:
 * the window's record (we hold the run), or NULL for the only consumer.
 */
void mpq_run_release(struct mpq_queue *q, uint64_t pos,
		     struct mpq_queue_rec *r)
{
	struct mpq_run run;

	if (load_acquire(&mpq_slot_at(q, pos)->seq) != (uint32_t)(pos + 1) ||
	    mpq_run_read(q, pos, &run) || run.taken == run.count) {
		/* Rewritten under the window: nothing to do but let go. */
		if (r)
			mpq_rec_end(q, r);
		return;
	}
	mpq_run_done(q, pos, &run, r, 1);
}

/*
 * A dead consumer's take from the run at pos (record r, adopted by us;
 * its run_word the busy word it set): if the run still has that word,
 * the bit is cleared and the messages it was copying stay first in the
 * run; if the run is spent and still busy, its freer died in the free,
 * which we finish: all of it if head is still at the run, the first
 * slot if head moved past it (mpq_run_free()). Any other word is someone
 * else's (a live holder's record keeps us from acting: mpq_rec_token()
 * in reclaim.c). r is dropped.
 */
void mpq_run_reclaim_take(struct mpq_queue *q, struct mpq_queue_rec *r,
			  uint64_t pos)
{
	uint64_t mine = load_relaxed(&r->run_word), head;
	struct mpq_slot *s = mpq_slot_at(q, pos);
	struct mpq_run run;
	uint32_t seq = (uint32_t)(pos + 1);

	if (load_acquire(&s->seq) != seq ||
	    load_relaxed(&s->len) != MPQ_SLOT_RUN ||
	    mpq_run_read(q, pos, &run) || !run.busy)
		goto out;
	head = load_acquire(&q->shm->head);
	if (head == pos && run.word == mine && run.taken < run.count) {
		uint64_t w = run.word;

		/* It may have said more before it died. */
		mpq_run_taken_say(q, pos, run.taken);
		if (__atomic_compare_exchange_n(mpq_run_wordp(run.hdr), &w,
						mpq_run_word(run.taken, pos),
						0, __ATOMIC_RELEASE,
						__ATOMIC_RELAXED)) {
			mpq_probe_queue_reclaim(q->id, pos, 2);
			mpq_queue_notify(q, &q->shm->nonempty, MPQ_POLL_IN);
		}
	} else if (run.taken == run.count && !run.kernel &&
		   (head == pos ||
		    ((int64_t)(head - pos) >= run.k &&
		     (int64_t)(head - pos) <= (int64_t)q->capacity))) {
		if (head == pos)
			mpq_run_free(q, pos, &run, r);
		else if (!__atomic_compare_exchange_n(&s->seq, &seq,
						     (uint32_t)(pos +
								q->capacity),
						     0, __ATOMIC_RELEASE,
						     __ATOMIC_RELAXED))
			goto out;
		mpq_probe_queue_reclaim(q->id, pos, 2);
		mpq_queue_notify(q, &q->shm->nonempty, MPQ_POLL_IN);
		mpq_queue_notify(q, &q->shm->nonfull, MPQ_POLL_OUT);
	}
out:
	mpq_rec_drop(r);
}

/* A dead producer's run, never published: its k slots go out dropped. */
void mpq_run_drop(struct mpq_queue *q, uint64_t pos, uint32_t k)
{
	uint32_t i;

	/* The covered slots first: a consumer reads them after the first. */
	for (i = k; i-- > 0;) {
		struct mpq_slot *s = mpq_slot_at(q, pos + i);

		__atomic_store_n(&s->len, MPQ_SLOT_DROPPED, __ATOMIC_RELAXED);
		store_release(&s->seq, (uint32_t)(pos + i + 1));
	}
}
