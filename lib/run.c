// SPDX-License-Identifier: MIT
/*
 * Runs: a batch of messages of one size packed over consecutive slots of
 * a queue's ring (struct mpq_slot_run in <linux/mpq.h> has the layout and
 * the rules). A slot per message costs each message a header, a seq
 * published and a seq freed: eight bytes of messages moved in 24, and a
 * batched stream a tenth of what a packed ring does (bench/README.md). A
 * run moves them with one copy each way and one seq for the lot.
 *
 * Only a bounded queue made with one producer and one consumer gets runs
 * (mpq_queue_put_array() on any other puts a slot per message): consumers
 * take from a run without moving head, so two at once could both take a
 * message; and a run holds more messages than positions, so the bound is
 * kept with sums of what runs hold beyond their positions, the one the
 * producer adds to its own (mpq_run_room()).
 */
#include <string.h>

#include "probes.h"
#include "record.h"

/* A slot header and a run header before the first message. */
#define MPQ_RUN_HDR	(sizeof(struct mpq_slot) + sizeof(struct mpq_slot_run))

/* Slots a run of count messages of size bytes takes. */
static uint64_t mpq_run_slots(const struct mpq_queue *q, uint64_t count,
			      uint32_t size)
{
	return (MPQ_RUN_HDR + count * size + q->slot_size - 1) / q->slot_size;
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
	uint64_t k;

	run->hdr = h;
	run->count = load_relaxed(&h->count);
	run->size = load_relaxed(&h->size);
	run->taken = load_relaxed(&h->taken);
	if (!run->count || !run->size || run->size > q->msg_max ||
	    run->taken > run->count)
		return -EUCLEAN;
	k = mpq_run_slots(q, run->count, run->size);
	if (k > q->capacity - (pos & q->mask))
		return -EUCLEAN;
	run->k = (uint32_t)k;
	run->data = (unsigned char *)(h + 1);
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

		if (n && load_relaxed(&r->op) & MPQ_REC_RUN &&
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
 */
static uint32_t mpq_run_taken_at(const struct mpq_queue *q, uint64_t head)
{
	struct mpq_slot *s = mpq_slot_at(q, head);
	struct mpq_run run;

	if (load_acquire(&s->seq) != (uint32_t)(head + 1) ||
	    load_relaxed(&s->len) != MPQ_SLOT_RUN || mpq_run_read(q, head, &run))
		return 0;
	return run.taken;
}

/*
 * How many of n more messages the bound leaves room for at tail pos, with
 * runs in the ring: maxsize less tail - head + runs_put - runs_freed -
 * what was taken from the run at head (<linux/mpq.h>). head and
 * runs_freed share the consumers' line: one read of it. For the only
 * producer (producer set), also the keeper of the sums: a ring it finds
 * empty holds no run, so runs_put is made equal to runs_freed, whatever
 * a death left between them, and runs_out is cleared once they are
 * equal.
 */
unsigned int mpq_run_room(struct mpq_queue *q, uint64_t pos, unsigned int n,
			  int producer)
{
	uint64_t put = load_relaxed(&q->shm->runs_put), head, freed;
	int64_t used;

	head = load_acquire(&q->shm->head);
	/* After head: a run's sum goes before head moves past it. */
	freed = load_acquire(&q->shm->runs_freed);
	if (producer && head == pos && put != freed) {
		__atomic_store_n(&q->shm->runs_put, freed, __ATOMIC_RELAXED);
		put = freed;
	}
	if (producer && put == freed && load_relaxed(&q->shm->runs_out))
		__atomic_store_n(&q->shm->runs_out, 0, __ATOMIC_RELAXED);
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
 * The largest run at tail pos for count messages of size bytes: within
 * the ring's end (a run never wraps), MPQ_RUN_SLOTS_MAX slots and the
 * slots found free. Returns its messages, with its slots in *kp; 0 when a
 * run would not save a slot there (a plain put takes the message).
 */
static uint32_t mpq_run_fit(struct mpq_queue *q, uint64_t pos, uint32_t size,
			    uint32_t count, uint32_t *kp)
{
	uint64_t room = q->capacity - (pos & q->mask), c, k, i;

	if (room > MPQ_RUN_SLOTS_MAX)
		room = MPQ_RUN_SLOTS_MAX;
	if (room * q->slot_size <= MPQ_RUN_HDR)
		return 0;
	c = (room * q->slot_size - MPQ_RUN_HDR) / size;
	if (c > count)
		c = count;
	k = mpq_run_slots(q, c, size);
	/* Free, in order: a slot's seq is read only once the one before it
	 * was found free, so it is never a run's payload of a lap ago. */
	for (i = 0; i < k; i++)
		if (load_acquire(&mpq_slot_at(q, pos + i)->seq) !=
		    (uint32_t)(pos + i))
			break;
	if (i < k) {
		k = i;
		c = k * q->slot_size > MPQ_RUN_HDR ?
		    (k * q->slot_size - MPQ_RUN_HDR) / size : 0;
	}
	if (c <= k)
		return 0;
	*kp = (uint32_t)k;
	return (uint32_t)c;
}

/*
 * Put up to count messages of size bytes (<= msg_max) from base as one
 * run, for the only producer of a queue that takes runs (q->runs), without
 * waiting. Returns the messages put (>= 2), 0 when a run does not pay or
 * cannot be made now (no record, the slot at tail not free, the bound
 * leaving room for one: a plain put of the first message does), or
 * -EAGAIN (the bound is reached).
 *
 * Under a record whose intent names the k positions and says RUN before
 * the payload covers the slots' headers: a producer killed before the
 * publish leaves them to be published as k dropped slots (reclaim.c).
 */
int mpq_run_put(struct mpq_queue *q, const void *base, uint32_t size,
		uint32_t count)
{
	uint64_t pos = load_relaxed(&q->shm->tail);
	struct mpq_slot *s = mpq_slot_at(q, pos);
	struct mpq_slot_run *h = (struct mpq_slot_run *)(s + 1);
	struct mpq_queue_rec *r;
	uint32_t c, k = 0;
	unsigned int room;

	c = mpq_run_fit(q, pos, size, count, &k);
	if (!c)
		return 0;
	room = mpq_run_room(q, pos, c, 1);
	if (!room)
		return -EAGAIN;
	if (room < c) {
		c = room;
		k = (uint32_t)mpq_run_slots(q, c, size);
		if (c <= k)
			return 0;
	}
	r = mpq_rec_begin(q);
	if (!r)
		return 0;
	mpq_rec_intent(r, MPQ_REC_PUT, pos, k);
	/* The only producer: nobody else moves tail. */
	store_release(&q->shm->tail, pos + k);
	/*
	 * RUN before the payload covers the slots' headers, the count
	 * before the tasks are counted: a repairer reads both (reclaim.c).
	 */
	__atomic_store_n(&r->op, MPQ_REC_PUT | MPQ_REC_WON | MPQ_REC_RUN,
			 __ATOMIC_RELAXED);
	h->count = c;
	h->size = size;
	h->taken = 0;
	h->__pad = 0;
	/* Those stores before any below (on x86, the compiler's order). */
	__atomic_thread_fence(__ATOMIC_RELEASE);
	/* Counted before it can be seen: the bound never counts less. */
	__atomic_store_n(&q->shm->runs_put,
			 load_relaxed(&q->shm->runs_put) + (c - k),
			 __ATOMIC_RELAXED);
	if (!load_relaxed(&q->shm->runs_out))
		__atomic_store_n(&q->shm->runs_out, 1, __ATOMIC_RELAXED);
	mpq_queue_tasks_count(q, r, c);
	memcpy(h + 1, base, (size_t)c * size);
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
 * The run at head pos is spent (taken == count): free its slots, the
 * covered ones first (a producer checks the first before them, so none is
 * refilled before the first is free), count it freed, move head past it.
 */
static void mpq_run_free(struct mpq_queue *q, uint64_t pos,
			 const struct mpq_run *run)
{
	uint32_t i;

	for (i = 1; i < run->k; i++)
		store_release(&mpq_slot_at(q, pos + i)->seq,
			      (uint32_t)(pos + i + q->capacity));
	store_release(&mpq_slot_at(q, pos)->seq, (uint32_t)(pos + q->capacity));
	/*
	 * After the first slot is freed (a producer that sees the sum gone
	 * sees no run at head to take what it took from), before head
	 * moves (one that sees head past the run sees the sum gone).
	 */
	__atomic_store_n(&q->shm->runs_freed,
			 load_relaxed(&q->shm->runs_freed) +
			 (run->count - run->k), __ATOMIC_RELEASE);
	if (q->one_consumer) {
		store_release(&q->shm->head, pos + run->k);
	} else {
		uint64_t p = pos;

		/* Another consumer (a broken promise) moved it: theirs. */
		__atomic_compare_exchange_n(&q->shm->head, &p, pos + run->k, 0,
					    __ATOMIC_RELEASE, __ATOMIC_RELAXED);
	}
}

/*
 * Take up to n messages from the run at head pos, whose slot was seen
 * published with len MPQ_SLOT_RUN: packed into arr (exact: the run's size
 * must be size), or one into each of bufs (iov_len in: room, out: the
 * length). Returns the count (>= 1), 0 (it was spent: freed now, look
 * again), -EMSGSIZE (the first does not fit, or is not size bytes:
 * bufs[0].iov_len or *size says how long it is), or -EUCLEAN (a corrupt
 * run: its first slot is dropped so the ring goes on).
 *
 * No record: head stays at the run until it is spent, and taken moves
 * after the copy, so a consumer killed in the middle leaves the messages
 * it was copying first in the run, for the next consumer (see
 * struct mpq_slot_run).
 */
int mpq_run_get(struct mpq_queue *q, uint64_t pos, struct iovec *bufs,
		unsigned int n, void *arr, uint32_t *size, int waited)
{
	struct mpq_run run;
	uint32_t j, left;

	if (mpq_run_read(q, pos, &run)) {
		uint64_t p = pos;

		store_release(&mpq_slot_at(q, pos)->seq,
			      (uint32_t)(pos + q->capacity));
		__atomic_compare_exchange_n(&q->shm->head, &p, pos + 1, 0,
					    __ATOMIC_RELEASE, __ATOMIC_RELAXED);
		mpq_queue_notify(q, &q->shm->nonfull, MPQ_POLL_OUT);
		return -EUCLEAN;
	}
	left = run.count - run.taken;
	if (!left) {
		mpq_run_free(q, pos, &run);
		mpq_queue_notify(q, &q->shm->nonfull, MPQ_POLL_OUT);
		return 0;
	}
	j = n < left ? n : left;
	if (arr) {
		if (run.size != *size) {
			*size = run.size;
			return -EMSGSIZE;
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
			return -EMSGSIZE;
		}
		j = i;
	}
	mpq_probe_queue_get(q->id, pos, (uint64_t)j * run.size);
	if (j < left) {
		/* Release: the copy is done before taken says so. */
		store_release(&run.hdr->taken, run.taken + j);
	} else {
		store_release(&run.hdr->taken, run.count);
		mpq_run_free(q, pos, &run);
	}
	mpq_queue_notify(q, &q->shm->nonfull, MPQ_POLL_OUT);
	return (int)j;
}

/*
 * A peek's window on the next message of the run at head pos: 1 with
 * *data and *len set, 0 (spent: freed, look again) or -EUCLEAN (corrupt,
 * dropped). The message stays first in the run until the window is
 * released (mpq_run_release()).
 */
int mpq_run_peek(struct mpq_queue *q, uint64_t pos, void **data,
		 uint32_t *len)
{
	struct iovec none = { 0 };
	struct mpq_run run;
	int ret;

	if (mpq_run_read(q, pos, &run) || run.taken == run.count) {
		ret = mpq_run_get(q, pos, &none, 1, NULL, NULL, 0);
		return ret == -EUCLEAN ? ret : 0;
	}
	*data = run.data + (size_t)run.taken * run.size;
	*len = run.size;
	return 1;
}

/* Release a run window's message at head pos: taken moves on by one. */
void mpq_run_release(struct mpq_queue *q, uint64_t pos)
{
	struct mpq_run run;

	if (load_acquire(&mpq_slot_at(q, pos)->seq) != (uint32_t)(pos + 1) ||
	    mpq_run_read(q, pos, &run) || run.taken == run.count)
		return;		/* rewritten under the window: nothing to do */
	if (run.taken + 1 < run.count) {
		store_release(&run.hdr->taken, run.taken + 1);
	} else {
		store_release(&run.hdr->taken, run.count);
		mpq_run_free(q, pos, &run);
	}
	mpq_queue_notify(q, &q->shm->nonfull, MPQ_POLL_OUT);
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
