// SPDX-License-Identifier: MIT
/*
 * An unbounded queue's overflow: the messages put while its ring was full
 * (see lib/queue.c for the design). A FIFO of chunks, each a blob
 * (qblob.c) that holds records back to back, under one robust lock in the
 * queue's header (a Lock's record: the kernel hands it on if its holder
 * dies, and the next holder repairs what it left).
 *
 * Producers of an unbounded queue put here while ovf_count is not zero,
 * and when the ring is full: so a producer's messages stay in its order
 * (its later ones never pass its earlier ones into the ring). Consumers
 * never read the overflow: one that finds the ring empty moves the oldest
 * messages from the overflow into the ring (promote), and takes them
 * there like any other, with the ring's zero-copy, batches and recovery
 * from deaths. So the kernel, poll() and read(2) see only the ring, and
 * the ring's fast path is the only one that a queue which keeps up uses.
 *
 * A chunk starts with struct mpq_ovf_chunk; its records are 8-byte
 * aligned, each a struct mpq_ovf_rec and len bytes (MPQ_OVF_EXT: a struct
 * mpq_slot_ext, the message in a blob of its own). Commit points, so that
 * a holder's death at any instant leaves a state the next holder can
 * repair (ovf_repair) and loses nothing committed:
 *  - put: the record is written past used, then used moves past it; a new
 *    chunk is linked by the old tail's next (or by ovf_head when there
 *    was none), then ovf_tail follows; ovf_count is recounted on repair;
 *  - promote: the records are written into claimed ring slots, left
 *    unpublished; then the ring's operation record is marked
 *    MPQ_REC_FILLED (the commit: one store), with the chunk and the
 *    offset the overflow's ovf_off moves to in the record; then ovf_off
 *    and ovf_count move past them; then the slots are published. Killed
 *    before the mark, the claim is a dead producer's (reclaim.c drops its
 *    slots) and the messages are still here, promoted again later; after
 *    it, the next holder of the lock (who alone acts on a FILLED record:
 *    reclaim.c hands such a death to it) moves ovf_off if it had not
 *    moved and publishes what was not. Each message is delivered once:
 *    never twice, so never a second time after its blob went back to
 *    the pool and into another message (issue 12).
 * A drained chunk is dropped after ovf_head moved past it (a death there
 * leaks it until the queue goes, loses nothing).
 * A JoinableQueue's tasks in the overflow are ovf_count itself, not yet in
 * unfinished: a put that counted its task apart from its commit would,
 * killed between the two, leave the count one too high for ever (join
 * would never return), or too low; ovf_count is exact after any death, as
 * the repair recounts it. A promote counts them in unfinished as the
 * ring's puts do (its dead producers' counts are taken back with their
 * slots, reclaim.c) before ovf_count lets them go. join() and
 * unfinished() add the two (queue.c).
 *
 * Everything in the chunks and the header is as hostile as the rest of
 * the shared memory: offsets and lengths are checked against our own
 * mapping's size; a chain that makes no sense is reported -EUCLEAN and
 * the overflow emptied, rather than followed.
 */
#include <string.h>
#include <unistd.h>

#include "record.h"
#include "sync.h"

#define MPQ_OVF_MAGIC		0x6d70714fU	/* "Oqpm" */
#define MPQ_OVF_CHUNK_MIN	(64 * 1024)
#define MPQ_OVF_BATCH		64
#define MPQ_OVF_EXT		1U
/* A repair walks at most this many chunks. */
#define MPQ_OVF_MAX_CHUNKS	(1U << 24)

struct mpq_ovf_chunk {
	uint32_t magic;
	uint32_t drained;	/* 1: taken to its end, being passed (ovf_pass) */
	uint64_t next;		/* id of the next chunk; 0: none yet */
	uint64_t used;		/* bytes of records and this header */
	uint64_t size;		/* of the chunk */
};

struct mpq_ovf_rec {
	uint32_t len;
	uint32_t kind;		/* 0, or MPQ_OVF_EXT */
};

static uint64_t mpq_ovf_rec_size(uint32_t len)
{
	return (sizeof(struct mpq_ovf_rec) + (uint64_t)len + 7) & ~7ULL;
}

static uint64_t mpq_ovf_chunk_size(const struct mpq_queue *q)
{
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	uint64_t want = 4 * mpq_ovf_rec_size(q->msg_max) +
			sizeof(struct mpq_ovf_chunk);

	if (want < MPQ_OVF_CHUNK_MIN)
		want = MPQ_OVF_CHUNK_MIN;
	return (want + page - 1) & ~(page - 1);
}

/* The chunk id mapped in cache c (ovf_w or ovf_r), mapping it if need be. */
static struct mpq_ovf_chunk *mpq_ovf_map(struct mpq_queue *q,
					 struct mpq_qblob *c, uint64_t id)
{
	struct mpq_ovf_chunk *h;

	if (!id)
		return NULL;
	if (c->map && c->id != id)
		mpq_qblob_unmap(c);
	if (!c->map && mpq_qblob_open(q, id, mpq_ovf_chunk_size(q), c))
		return NULL;
	h = c->map;
	if (load_relaxed(&h->magic) != MPQ_OVF_MAGIC) {
		mpq_qblob_unmap(c);
		return NULL;
	}
	return h;
}

/* used, believed only if it is within our mapping and aligned. */
static uint64_t mpq_ovf_used(const struct mpq_qblob *c)
{
	const struct mpq_ovf_chunk *h = c->map;
	uint64_t used = load_acquire(&h->used);

	if (used < sizeof(*h) || used > c->map_len || used % 8)
		return 0;
	return used;
}

void mpq_ovf_forget(struct mpq_queue *q)
{
	mpq_qblob_unmap(&q->ovf_w);
	mpq_qblob_unmap(&q->ovf_r);
}

/* Make the overflow empty (a corrupt one: what it held is lost). */
static void mpq_ovf_reset(struct mpq_queue *q)
{
	struct mpq_queue_shm *shm = q->shm;

	__atomic_store_n(&shm->ovf_head, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&shm->ovf_tail, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&shm->ovf_off, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&shm->ovf_count, 0, __ATOMIC_RELEASE);
}

/*
 * Move past the drained head chunk h (id head) to next, and let h go. h
 * is marked first: a holder killed anywhere in this leaves ovf_head at
 * the marked h, which the repair passes as here, or at next with ovf_off
 * at its start. Resetting ovf_off while ovf_head still named h, unmarked,
 * made the repair count h's records again and promote them a second time.
 * Killed after ovf_head moved, h leaks until the queue goes.
 */
static void mpq_ovf_pass(struct mpq_queue *q, struct mpq_ovf_chunk *h,
			 uint64_t head, uint64_t next)
{
	struct mpq_queue_shm *shm = q->shm;

	store_release(&h->drained, 1);
	__atomic_store_n(&shm->ovf_off, sizeof(*h), __ATOMIC_RELEASE);
	store_release(&shm->ovf_head, next);
	mpq_qblob_unmap(&q->ovf_r);
	if (q->ovf_w.map && q->ovf_w.id == head)
		mpq_qblob_unmap(&q->ovf_w);
	mpq_qblob_drop(q, head, mpq_ovf_chunk_size(q));
}

/* The head chunk h (id head) a holder had begun to pass: pass it. */
static int mpq_ovf_passing(struct mpq_queue *q, struct mpq_ovf_chunk *h,
			   uint64_t head)
{
	uint64_t next;

	if (!load_acquire(&h->drained))
		return 0;
	next = load_acquire(&h->next);
	if (!next)
		return 0;	/* hostile: walked as it is */
	mpq_ovf_pass(q, h, head, next);
	return 1;
}

/*
 * After a holder died: walk the chain from ovf_head, let ovf_tail be its
 * last chunk and ovf_count the records after ovf_off.
 */
static int mpq_ovf_repair(struct mpq_queue *q)
{
	struct mpq_queue_shm *shm = q->shm;
	uint64_t id = load_relaxed(&shm->ovf_head), off, last = 0;
	uint32_t count = 0, chunks = 0;
	struct mpq_ovf_chunk *first = mpq_ovf_map(q, &q->ovf_r, id);

	if (first && mpq_ovf_passing(q, first, id))
		id = load_relaxed(&shm->ovf_head);
	off = load_relaxed(&shm->ovf_off);
	while (id) {
		struct mpq_ovf_chunk *h = mpq_ovf_map(q, &q->ovf_r, id);
		uint64_t used;

		if (!h || ++chunks > MPQ_OVF_MAX_CHUNKS)
			goto corrupt;
		used = mpq_ovf_used(&q->ovf_r);
		if (!used || off < sizeof(*h) || off > used)
			goto corrupt;
		while (off < used) {
			struct mpq_ovf_rec *r = (void *)((char *)h + off);

			if (used - off < sizeof(*r))
				goto corrupt;
			off += mpq_ovf_rec_size(r->kind == MPQ_OVF_EXT ?
				sizeof(struct mpq_slot_ext) : r->len);
			if (off > used || (r->len > q->msg_max &&
					   r->kind != MPQ_OVF_EXT))
				goto corrupt;
			count++;
		}
		last = id;
		id = load_relaxed(&h->next);
		off = sizeof(*h);
	}
	__atomic_store_n(&shm->ovf_tail, last, __ATOMIC_RELAXED);
	__atomic_store_n(&shm->ovf_count, count, __ATOMIC_RELEASE);
	return 0;
corrupt:
	mpq_ovf_reset(q);
	return -EUCLEAN;
}

/*
 * A promote whose holder died after its commit point (MPQ_REC_FILLED):
 * finish it. Under the lock, which that holder had: so ovf_off is as it
 * left it, before or after its move, and nobody else acts on the record.
 */
static void mpq_ovf_finish_promotes(struct mpq_queue *q)
{
	struct mpq_queue_shm *shm = q->shm;
	unsigned int i, k;

	for (i = 0; i < MPQ_QUEUE_NREC; i++) {
		struct mpq_queue_rec *r = &q->recs[i];
		uint32_t v = load_acquire(&r->word), op, n;
		uint64_t pos, off;

		if (!(v & MPQ_RW_OWNER_DIED) || v & MPQ_RW_TID)
			continue;
		n = load_acquire(&r->n);
		op = load_acquire(&r->op);
		if (!n || n > q->capacity || (op & (MPQ_REC_PUT | MPQ_REC_WON |
		    MPQ_REC_FILLED)) != (MPQ_REC_PUT | MPQ_REC_WON |
					  MPQ_REC_FILLED))
			continue;
		if (mpq_rec_adopt_dead(r, v))
			continue;
		pos = load_relaxed(&r->pos);
		off = load_relaxed(&r->ovf_off);
		if (load_relaxed(&shm->ovf_head) == load_relaxed(&r->ovf_chunk) &&
		    load_relaxed(&shm->ovf_off) < off)
			__atomic_store_n(&shm->ovf_off, off, __ATOMIC_RELEASE);
		for (k = 0; k < n; k++) {
			struct mpq_slot *s = mpq_slot_at(q, pos + k);

			if (load_acquire(&s->seq) == (uint32_t)(pos + k) &&
			    (int64_t)(load_acquire(&shm->tail) - (pos + k)) > 0)
				store_release(&s->seq, (uint32_t)(pos + k + 1));
		}
		/* Published: what the tally counted stands. */
		__atomic_store_n(&r->tasks, load_relaxed(&r->tasks) & ~1ULL,
				 __ATOMIC_RELEASE);
		mpq_rec_drop(r);
		mpq_queue_notify(q, &shm->nonempty, MPQ_POLL_IN);
	}
}

static int mpq_ovf_lock(struct mpq_queue *q, struct mpq_lock *l)
{
	int ret;

	memset(l, 0, sizeof(*l));
	l->sync.block.fd = -1;
	l->rec = (struct mpq_lock_rec *)q->shm->ovf_lock;
	l->borrowed = 1;
	l->spin_ns = q->spin_ns;
	l->oid = q->id;
	ret = mpq_lock_acquire(l, MPQ_FOREVER);
	if (ret == -EOWNERDEAD) {
		mpq_ovf_finish_promotes(q);
		mpq_ovf_repair(q);
		mpq_lock_consistent(l);
		ret = 0;
	}
	return ret;
}

/*
 * A dead promote found by whoever cleans up after the dead (reclaim.c):
 * the lock's next holder finishes it, so take the lock once.
 */
void mpq_ovf_settle(struct mpq_queue *q)
{
	struct mpq_lock l;

	if (mpq_ovf_lock(q, &l))
		return;
	/* Again: a record the repair could not adopt then (no memory). */
	mpq_ovf_finish_promotes(q);
	mpq_lock_release(&l);
}

/*
 * Put one message (or an out-of-line descriptor: iov_len MPQ_IOV_EXT)
 * at the overflow's tail. Returns 1, or -ENOMEM/-EDQUOT (no memory for a
 * chunk: nothing put), -EUCLEAN.
 */
int mpq_ovf_put(struct mpq_queue *q, const struct iovec *msg)
{
	struct mpq_queue_shm *shm = q->shm;
	int ext = msg->iov_len == MPQ_IOV_EXT;
	uint32_t len = ext ? sizeof(struct mpq_slot_ext) :
		       (uint32_t)msg->iov_len;
	uint64_t need = mpq_ovf_rec_size(len), tail, used = 0;
	struct mpq_ovf_chunk *h = NULL;
	struct mpq_ovf_rec *r;
	struct mpq_lock l;
	int ret = mpq_ovf_lock(q, &l);

	if (ret)
		return ret;
	tail = load_relaxed(&shm->ovf_tail);
	if (tail) {
		h = mpq_ovf_map(q, &q->ovf_w, tail);
		if (h)
			used = mpq_ovf_used(&q->ovf_w);
		if (!h || !used) {
			mpq_ovf_reset(q);
			ret = -EUCLEAN;
			goto out;
		}
		/*
		 * Drained to its end, the only chunk: written again from its
		 * start (a full one kept while a new one is taken would hold
		 * its memory for nothing until the next promote).
		 */
		if (tail == load_relaxed(&shm->ovf_head) &&
		    load_relaxed(&shm->ovf_off) == used &&
		    !load_relaxed(&shm->ovf_count) && used > sizeof(*h)) {
			/*
			 * used first: killed between the two, off past used
			 * reads as corrupt to the repair, which empties the
			 * overflow: right, it is empty. The other order would
			 * bring the taken records back.
			 */
			store_release(&h->used, sizeof(*h));
			__atomic_store_n(&shm->ovf_off, sizeof(*h),
					 __ATOMIC_RELEASE);
			used = sizeof(*h);
		}
	}
	if (!h || used + need > q->ovf_w.map_len) {
		struct mpq_qblob b;
		struct mpq_ovf_chunk *n;

		ret = mpq_qblob_new(q, mpq_ovf_chunk_size(q), &b);
		if (ret)
			goto out;
		n = b.map;
		n->magic = MPQ_OVF_MAGIC;
		n->drained = 0;	/* a pooled blob may say anything */
		n->next = 0;
		n->size = b.map_len;
		r = (void *)(n + 1);
		r->len = len;
		r->kind = ext ? MPQ_OVF_EXT : 0;
		memcpy(r + 1, msg->iov_base, len);
		n->used = sizeof(*n) + need;
		/* Ours no more (a death from here to the commit leaks it). */
		if (ext)
			mpq_rec_blob_handed(q);
		/* The commit: linked from the old tail, or the head. */
		if (h) {
			store_release(&h->next, b.id);
		} else {
			__atomic_store_n(&shm->ovf_off, sizeof(*n),
					 __ATOMIC_RELAXED);
			store_release(&shm->ovf_head, b.id);
		}
		__atomic_store_n(&shm->ovf_tail, b.id, __ATOMIC_RELAXED);
		mpq_qblob_unmap(&q->ovf_w);
		q->ovf_w = b;
	} else {
		r = (void *)((char *)h + used);
		r->len = len;
		r->kind = ext ? MPQ_OVF_EXT : 0;
		memcpy(r + 1, msg->iov_base, len);
		if (ext)
			mpq_rec_blob_handed(q);
		store_release(&h->used, used + need);	/* the commit */
	}
	__atomic_add_fetch(&shm->ovf_count, 1, __ATOMIC_RELEASE);
	ret = 1;
out:
	mpq_lock_release(&l);
	if (ret == 1)
		mpq_queue_notify(q, &shm->nonempty, MPQ_POLL_IN);
	return ret;
}

/*
 * Move the oldest messages of the overflow into the ring, as many as it
 * has room for, up to MPQ_OVF_BATCH and the end of the head chunk.
 * Returns how many (0: none there, or no room in the ring), or -errno.
 */
int mpq_ovf_promote(struct mpq_queue *q)
{
	struct mpq_queue_shm *shm = q->shm;
	struct iovec iov[MPQ_OVF_BATCH];
	uint64_t offs[MPQ_OVF_BATCH + 1];
	struct mpq_queue_rec *rec;
	struct mpq_ovf_chunk *h;
	uint64_t head, off, used, pos;
	struct mpq_lock l;
	int ret = mpq_ovf_lock(q, &l), n = 0, k = 0;

	if (ret)
		return ret;
	for (;;) {
		head = load_relaxed(&shm->ovf_head);
		if (!head || !load_relaxed(&shm->ovf_count))
			goto out;
		h = mpq_ovf_map(q, &q->ovf_r, head);
		used = h ? mpq_ovf_used(&q->ovf_r) : 0;
		off = load_relaxed(&shm->ovf_off);
		if (!used || off < sizeof(*h) || off > used) {
			ret = mpq_ovf_repair(q);
			if (ret)
				goto out;
			continue;
		}
		if (mpq_ovf_passing(q, h, head))
			continue;
		if (off < used)
			break;
		/* Drained: on to the next chunk, and this one goes. */
		{
			uint64_t next = load_acquire(&h->next);

			if (!next) {
				/*
				 * Caught up with the puts: nothing to move,
				 * and the chunk is written again from its
				 * start rather than kept full while a new one
				 * is taken (its memory would be held twice).
				 */
				__atomic_store_n(&shm->ovf_count, 0,
						 __ATOMIC_RELEASE);
				store_release(&h->used, sizeof(*h));
				__atomic_store_n(&shm->ovf_off, sizeof(*h),
						 __ATOMIC_RELEASE);
				goto out;
			}
			mpq_ovf_pass(q, h, head, next);
		}
	}
	offs[0] = off;
	while (n < MPQ_OVF_BATCH && off < used) {
		struct mpq_ovf_rec *r = (void *)((char *)h + off);
		uint32_t len;

		if (used - off < sizeof(*r))
			break;
		len = load_relaxed(&r->len);
		if (r->kind == MPQ_OVF_EXT)
			len = sizeof(struct mpq_slot_ext);
		else if (len > q->msg_max)
			break;
		if (mpq_ovf_rec_size(len) > used - off)
			break;
		iov[n].iov_base = r + 1;
		iov[n].iov_len = r->kind == MPQ_OVF_EXT ? MPQ_IOV_EXT : len;
		off += mpq_ovf_rec_size(len);
		offs[++n] = off;
	}
	if (!n) {
		/* A record that makes no sense at the head: start over. */
		mpq_ovf_reset(q);
		ret = -EUCLEAN;
		goto out;
	}
	/*
	 * Counted as tasks now (a JoinableQueue), before ovf_count lets
	 * them go: a joiner never sees them in neither.
	 */
	k = mpq_queue_ring_fill(q, iov, (unsigned int)n, &pos, &rec);
	if (k <= 0) {
		ret = k == -EAGAIN ? 0 : k;
		goto out;
	}
	if (!rec) {
		/* No record to say so: published first (at least once). */
		mpq_queue_ring_publish(q, rec, pos, (unsigned int)k);
		__atomic_store_n(&shm->ovf_off, offs[k], __ATOMIC_RELEASE);
		__atomic_sub_fetch(&shm->ovf_count, (uint32_t)k,
				   __ATOMIC_RELEASE);
		ret = k;
		goto out;
	}
	/* The commit point: from here on the ring has them (see the top). */
	__atomic_store_n(&rec->ovf_chunk, head, __ATOMIC_RELAXED);
	__atomic_store_n(&rec->ovf_off, offs[k], __ATOMIC_RELAXED);
	__atomic_store_n(&rec->op, MPQ_REC_PUT | MPQ_REC_WON | MPQ_REC_FILLED,
			 __ATOMIC_RELEASE);
	__atomic_store_n(&shm->ovf_off, offs[k], __ATOMIC_RELEASE);
	__atomic_sub_fetch(&shm->ovf_count, (uint32_t)k, __ATOMIC_RELEASE);
	mpq_queue_ring_publish(q, rec, pos, (unsigned int)k);
	ret = k;
out:
	mpq_lock_release(&l);
	return ret;
}
