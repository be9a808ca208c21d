// SPDX-License-Identifier: GPL-2.0
/*
 * The queue object: a bounded MPMC ring of fixed-size slots in a region
 * (see region.c), whose layout is struct mpq_queue_shm in the uapi header.
 *
 * Producers and consumers move messages entirely in userspace. The kernel
 * only reads the ring, to answer poll(), and never trusts it: any process
 * that maps the queue can write anything there. The geometry the kernel
 * uses is its own private copy; every shared field is read once and only
 * used to compute an index masked into the ring, so garbage yields a wrong
 * poll answer for the scribbler, never an access out of bounds.
 *
 * read(2) and write(2) on the fd (and so io_uring READ and WRITE) get and
 * put one message inside the kernel, by the same ring rules; which is why
 * libmpq, with the module, sleeps in poll() on the fd rather than on a
 * futex: the kernel can wake the one, not the other.
 *
 * A bounded queue holds exactly maxsize messages: the ring is maxsize
 * rounded up to a power of two and producers also keep tail - head within
 * maxsize (the kernel's write(2) as libmpq's put). A run (struct
 * mpq_slot_run: a batch packed over slots, which libmpq writes to
 * bounded queues) holds more messages than positions; read(2) takes them
 * one per call, under the run's busy bit as libmpq's consumers do, and
 * the bound counts them through runs_put and runs_freed. An unbounded queue
 * (MPQ_QUEUE_UNBOUNDED, Python's maxsize 0) has a ring and, past it, an
 * overflow that libmpq keeps in blobs and moves into the ring as it
 * drains: the kernel reads only ovf_count, for poll(). read(2) and
 * write(2) move in-line messages through the ring only: an out-of-line
 * message at the head is -EMSGSIZE to read(2) and stays; write(2) to an
 * unbounded queue whose overflow has messages waits as for a full ring,
 * so that it never passes them.
 *
 * Blobs (MPQ_IOC_QUEUE_BLOB_*): messages out of line, each an anonymous
 * SharedMemory block (shm.c), charged to whoever makes it, that the queue
 * holds in an xarray by id until a consumer drops it or the queue goes.
 * Ids count up and are never handed out twice (MPQ_QUEUE_BLOB_ID_MAX):
 * a slot, a pooled entry or a handle's kept mapping that still names a
 * dropped id can only miss, never reach another blob, as a 32-bit id
 * that wrapped after 2^32 blobs could. Any participant can open or drop
 * any id: it can rewrite the ring as well; the kernel only keeps its own
 * table straight.
 *
 * Waking pollers needs a system call, and the fast path must not make one
 * when nobody polls. ->poll() sets a bit in poll_wanted before it checks
 * the ring; a producer checks that bit after it publishes a message and,
 * only if it is set, calls MPQ_IOC_QUEUE_WAKE. One side always sees the
 * other (the handshake io_uring uses for IORING_SQ_NEED_WAKEUP).
 */
#include <linux/anon_inodes.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/futex.h>
#include <linux/log2.h>
#include <linux/mpq.h>
#include <linux/overflow.h>
#include <linux/poll.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/uio.h>
#include <linux/wait.h>
#include <linux/xarray.h>

#include "internal.h"
#include "trace.h"

#define MPQ_QUEUE_CREATE_SIZE_VER0	48
#define MPQ_QUEUE_INFO_SIZE_VER0	64
#define MPQ_QUEUE_MAX_CAPACITY		BIT(30)

struct mpq_queue {
	struct mpq_object obj;
	struct mpq_mapref ref;
	struct mpq_region region;
	struct mpq_queue_shm *shm;
	wait_queue_head_t wq;
	/* Blobs by id: struct file of an anonymous block each. */
	struct xarray blobs;
	atomic64_t blob_last;	/* the last id handed out */
	/*
	 * Non-zero while a participant that died in the middle of an
	 * operation may have left the ring held up: ->poll() then looks at
	 * the records (mpq_queue_dead_ready), and stops once none is left.
	 */
	atomic_t dead_left;
	/* Private, authoritative geometry. */
	u32 flags;		/* MPQ_QUEUE_JOINABLE, MPQ_QUEUE_UNBOUNDED */
	u32 maxsize;		/* 0: unbounded */
	u32 capacity;
	u32 msg_max;
	u32 slot_size;
	u32 data_off;
	u64 map_size;
};

static struct mpq_slot *mpq_queue_slot(struct mpq_queue *q, u64 pos)
{
	u64 idx = pos & (q->capacity - 1);

	return q->region.kaddr + q->data_off + idx * q->slot_size;
}

/* A run's header as read once (struct mpq_slot_run). */
struct mpq_run {
	u32 count, size, taken, k;	/* taken: without the busy bits */
	bool busy;
	u64 word;			/* taken and lap, as read */
};

/*
 * taken and lap are one 64-bit word (struct mpq_slot_run), at an 8-byte
 * aligned offset of the slot: read and written whole.
 */
static u64 *mpq_run_wordp(struct mpq_slot *s)
{
	return (u64 *)&((struct mpq_slot_run *)(s + 1))->taken;
}

static u64 mpq_run_word(u32 taken, u64 pos)
{
	struct { u32 taken, lap; } w = { taken, (u32)pos };
	u64 v;

	memcpy(&v, &w, sizeof(v));
	return v;
}

/*
 * A run's header at pos, read once and checked against the ring: false
 * if it is corrupt. Copies from the run stay in its own slots whatever a
 * participant wrote.
 */
static bool mpq_queue_run(struct mpq_queue *q, u64 pos, struct mpq_slot *s,
			  struct mpq_run *run)
{
	struct mpq_slot_run_size *z;
	struct { u32 taken, lap; } w;
	u64 slots;

	BUILD_BUG_ON((sizeof(struct mpq_slot) +
		      offsetof(struct mpq_slot_run, taken)) % 8 ||
		     offsetof(struct mpq_slot_run, lap) !=
		     offsetof(struct mpq_slot_run, taken) + 4 ||
		     MPQ_SLOT_ALIGN % 8);
	/*
	 * count and size may be in the next slot (16-byte slots): only
	 * where the ring goes on that far, since a run never wraps.
	 */
	if ((u64)(q->capacity - (pos & (q->capacity - 1))) * q->slot_size <
	    MPQ_RUN_DATA_OFF(q->slot_size))
		return false;
	z = (struct mpq_slot_run_size *)((u8 *)s +
					 MPQ_RUN_SIZE_OFF(q->slot_size));
	run->count = READ_ONCE(z->count);
	run->size = READ_ONCE(z->size);
	run->word = READ_ONCE(*mpq_run_wordp(s));
	memcpy(&w, &run->word, sizeof(w));
	run->busy = w.taken & MPQ_RUN_BUSY;
	run->taken = w.taken & ~(MPQ_RUN_BUSY | MPQ_RUN_KERNEL);
	if (!run->count || run->count >= MPQ_RUN_KERNEL || !run->size ||
	    run->size > q->msg_max || run->taken > run->count ||
	    w.lap != (u32)pos)
		return false;
	slots = DIV_ROUND_UP(MPQ_RUN_DATA_OFF(q->slot_size) +
			     (u64)run->count * run->size, q->slot_size);
	if (slots > q->capacity - (pos & (q->capacity - 1)))
		return false;
	run->k = slots;
	return true;
}

/*
 * What consumers took from the run at head, if one is there: head_taken,
 * while its lap is head's (struct mpq_queue_shm).
 */
static u32 mpq_queue_taken_at(struct mpq_queue *q, u64 head)
{
	/* Acquire: after runs_freed, as the freer wrote it before. */
	u64 v = smp_load_acquire(&q->shm->head_taken);
	struct { u32 taken, lap; } w;

	memcpy(&w, &v, sizeof(w));
	if (w.lap != (u32)head)
		return 0;
	return w.taken & ~(MPQ_RUN_BUSY | MPQ_RUN_KERNEL);
}

/*
 * Is there room for a put at tail pos beyond the ring's own rule? Bounded
 * below the capacity: tail - head within maxsize. With runs in the ring
 * (runs_put != runs_freed), a bounded queue holds more messages than
 * positions: tail - head + runs_put - runs_freed, less what was taken
 * from the run at head, within maxsize (see struct mpq_queue_shm).
 * Unbounded: not while the overflow has messages (a put in the ring
 * would pass them).
 */
static bool mpq_queue_room(struct mpq_queue *q, u64 pos)
{
	u64 head, put, freed;
	s64 used;

	if (q->flags & MPQ_QUEUE_UNBOUNDED)
		return !READ_ONCE(q->shm->ovf_count);
	put = READ_ONCE(q->shm->runs_put);
	/* Acquire: runs_freed is added to before head moves past a run. */
	head = smp_load_acquire(&q->shm->head);
	/* Acquire: a sum added, its run's first slot is freed. */
	freed = smp_load_acquire(&q->shm->runs_freed);
	if (put == freed || head == pos) {
		if (q->maxsize >= q->capacity)
			return true;
		return (s64)(pos - head) < (s64)q->maxsize;
	}
	used = pos - head + (put - freed) - mpq_queue_taken_at(q, head);
	return used < (s64)q->maxsize;
}

/*
 * A cursor left behind (see the ring rules in the uapi header): the only
 * producer or consumer was killed after publishing or freeing its slot
 * at pos and before moving tail or head past it. The slot's seq is then
 * ahead of pos by one of two amounts that no claim-first operation
 * leaves with the cursor still at pos.
 */
static bool mpq_queue_tail_behind(struct mpq_queue *q, u64 pos, u32 seq)
{
	return seq == (u32)(pos + 1) || seq == (u32)(pos + q->capacity);
}

static bool mpq_queue_head_behind(struct mpq_queue *q, u64 pos, u32 seq)
{
	return seq == (u32)(pos + q->capacity) ||
	       seq == (u32)(pos + q->capacity + 1);
}

/*
 * Is the message at head pos published, or is head left behind: would
 * read(2) find one, or move head on and look again? A run another
 * consumer holds (its busy bit) is not, until it lets go: it wakes the
 * waiters then.
 */
static bool mpq_queue_readable_at(struct mpq_queue *q, u64 pos)
{
	struct mpq_slot *s = mpq_queue_slot(q, pos);
	u32 seq = READ_ONCE(s->seq);
	struct mpq_run run;

	if (seq != (u32)(pos + 1))
		return mpq_queue_head_behind(q, pos, seq);
	/* Acquire: the header after the seq that published it. */
	smp_rmb();
	return READ_ONCE(s->len) != MPQ_SLOT_RUN ||
	       !mpq_queue_run(q, pos, s, &run) || !run.busy;
}

static bool mpq_queue_ring_readable(struct mpq_queue *q)
{
	return mpq_queue_readable_at(q, READ_ONCE(q->shm->head));
}

/* A dead get's positions looked at, at most: a bound on ->poll()'s work. */
#define MPQ_QUEUE_DEAD_LOOK	256

/*
 * Does a live record's intent of kind cover p? Then libmpq leaves p to
 * that claimer, which is slow, not dead, unless a dead record's claim of
 * p is the one that won (MPQ_REC_WON).
 */
static bool mpq_queue_live_covers(struct mpq_queue *q,
				  struct mpq_queue_rec *recs, u32 kind, u64 p)
{
	u32 i, n;

	for (i = 0; i < MPQ_QUEUE_NREC; i++) {
		if (!(READ_ONCE(recs[i].word) & FUTEX_TID_MASK))
			continue;
		n = READ_ONCE(recs[i].n);
		if (n && n <= q->capacity &&
		    (READ_ONCE(recs[i].op) & kind) &&
		    p - READ_ONCE(recs[i].pos) < n)
			return true;
	}
	return false;
}

/*
 * Would a get of libmpq's find something that a look at the head does
 * not show, because a participant died in the middle of an operation (see
 * struct mpq_queue_rec)? A put's claim at head that was never published
 * holds readers up; a get's message that was never freed is to be
 * delivered again. libmpq's get repairs both in the call that this
 * answer leads to, by the same rules; the kernel only reads, and stops
 * looking once no dead record is left. Shared memory: each field read
 * once; a forged record costs its scribbler a wrong answer, and a poll at
 * most MPQ_QUEUE_NREC * (MPQ_QUEUE_DEAD_LOOK + MPQ_QUEUE_NREC) reads.
 */
static bool mpq_queue_dead_ready(struct mpq_queue *q, u64 head)
{
	struct mpq_queue_rec *recs = q->region.kaddr + MPQ_QUEUE_REC_OFF;
	int gen = atomic_read(&q->dead_left);
	bool any = false;
	u32 i, k, n, op, word;
	u64 pos, p;

	if (!gen)
		return false;
	for (i = 0; i < MPQ_QUEUE_NREC; i++) {
		word = READ_ONCE(recs[i].word);
		if (!(word & FUTEX_OWNER_DIED) || (word & FUTEX_TID_MASK))
			continue;
		n = READ_ONCE(recs[i].n);
		op = READ_ONCE(recs[i].op);
		pos = READ_ONCE(recs[i].pos);
		if (!n || n > q->capacity)
			continue;
		any = true;
		if (op & MPQ_REC_PUT) {
			/* Claimed at head, never published. */
			p = head;
			if (p - pos >= n ||
			    READ_ONCE(mpq_queue_slot(q, p)->seq) != (u32)p ||
			    (s64)(READ_ONCE(q->shm->tail) - p) <= 0)
				continue;
		} else if ((op & (MPQ_REC_GET | MPQ_REC_RUN)) ==
			   (MPQ_REC_GET | MPQ_REC_RUN) && pos == head &&
			   READ_ONCE(mpq_queue_slot(q, pos)->seq) ==
			   (u32)(pos + 1)) {
			/*
			 * A take from the run at head: its busy bit stays
			 * set, so the head looks empty, until a get clears
			 * it and delivers the messages again.
			 */
			p = pos;
		} else if (op & MPQ_REC_GET) {
			/* Taken, never freed: the first such. */
			for (k = 0; k < min_t(u32, n, MPQ_QUEUE_DEAD_LOOK); k++) {
				p = pos + k;
				if (READ_ONCE(mpq_queue_slot(q, p)->seq) ==
				    (u32)(p + 1) && (s64)(head - p) > 0)
					break;
			}
			if (k == min_t(u32, n, MPQ_QUEUE_DEAD_LOOK))
				continue;
		} else {
			continue;
		}
		if ((op & MPQ_REC_WON) ||
		    !mpq_queue_live_covers(q, recs,
					   op & (MPQ_REC_PUT | MPQ_REC_GET), p))
			return true;
	}
	/* None left: stop, unless another death came since we began. */
	if (!any)
		atomic_cmpxchg(&q->dead_left, gen, 0);
	return false;
}

/* What a reader or writer would find now; see the ring rules in mpq.h. */
static __poll_t mpq_queue_ready(struct mpq_queue *q)
{
	__poll_t mask = 0;
	u64 pos;
	u32 seq;

	/*
	 * A cursor left behind reads as ready: the next read(2), write(2)
	 * or libmpq call moves it on.
	 */
	pos = READ_ONCE(q->shm->head);
	if (mpq_queue_readable_at(q, pos))
		mask |= EPOLLIN | EPOLLRDNORM;
	/* An unbounded queue's overflow: libmpq's get moves it in. */
	else if (q->flags & MPQ_QUEUE_UNBOUNDED && READ_ONCE(q->shm->ovf_count))
		mask |= EPOLLIN | EPOLLRDNORM;
	else if (mpq_queue_dead_ready(q, pos))
		mask |= EPOLLIN | EPOLLRDNORM;
	pos = READ_ONCE(q->shm->tail);
	seq = READ_ONCE(mpq_queue_slot(q, pos)->seq);
	if ((seq == (u32)pos && mpq_queue_room(q, pos)) ||
	    mpq_queue_tail_behind(q, pos, seq))
		mask |= EPOLLOUT | EPOLLWRNORM;
	return mask;
}

static __poll_t mpq_queue_poll(struct file *file, poll_table *pt)
{
	struct mpq_queue *q = file->private_data;
	__poll_t want = poll_requested_events(pt);
	u32 bits = 0;

	mpq_count(&q->obj, MPQ_CNT_POLLS);
	poll_wait(file, &q->wq, pt);

	/*
	 * Ask for a wake-up in every direction the poller wants, ready or
	 * not: an edge-triggered epoll does not call ->poll() again before it
	 * sleeps, so the request must already stand when it does.
	 */
	if (want & (EPOLLIN | EPOLLRDNORM))
		bits |= MPQ_POLL_IN;
	if (want & (EPOLLOUT | EPOLLWRNORM))
		bits |= MPQ_POLL_OUT;
	if (bits) {
		atomic_or(bits, (atomic_t *)&q->shm->poll_wanted);
		/*
		 * Pairs with the full fence in libmpq between publishing a
		 * slot and reading poll_wanted: either we see the slot below
		 * or the publisher sees our bit and wakes us.
		 */
		smp_mb__after_atomic();
	}
	return mpq_queue_ready(q);
}

static void mpq_queue_wake_up(struct mpq_queue *q, __poll_t key)
{
	mpq_object_woke(&q->obj, &q->wq, key);
	wake_up_interruptible_poll(&q->wq, key);
}

/* Wake the pollers that asked for bit, after the ring moved. */
static void mpq_queue_moved(struct mpq_queue *q, u32 bit)
{
	smp_mb();	/* the slot before wanted: pairs with ->poll() */
	if (!(READ_ONCE(q->shm->poll_wanted) & bit))
		return;
	atomic_andnot(bit, (atomic_t *)&q->shm->poll_wanted);
	mpq_queue_wake_up(q, bit == MPQ_POLL_IN ? EPOLLIN | EPOLLRDNORM :
			  EPOLLOUT | EPOLLWRNORM);
}

/* Other participants may move head and tail under us: this many tries. */
#define MPQ_QUEUE_TRIES		64

/*
 * A run at head pos is spent, and ours (its busy bit): free its slots
 * (the covered ones first), add what it held beyond its positions to
 * runs_freed, move head past it (see struct mpq_slot_run).
 */
static void mpq_queue_run_free(struct mpq_queue *q, u64 pos,
			       const struct mpq_run *run)
{
	u32 i;

	for (i = 1; i < run->k; i++) {
		/* Release: done with the slot; pairs with the producer. */
		smp_store_release(&mpq_queue_slot(q, pos + i)->seq,
				  (u32)(pos + i + q->capacity));
	}
	/* Release: the first after the rest (a producer checks it first). */
	smp_store_release(&mpq_queue_slot(q, pos)->seq,
			  (u32)(pos + q->capacity));
	/* None said taken from it (head_taken) once its sum is freed. */
	WRITE_ONCE(q->shm->head_taken, mpq_run_word(0, pos));
	/* Release: head_taken's 0 and the first slot before the sum. */
	smp_store_release(&q->shm->runs_freed,
			  READ_ONCE(q->shm->runs_freed) + run->count - run->k);
	/* Release: the sum before head (mpq_queue_room()). */
	cmpxchg_release(&q->shm->head, pos, pos + run->k);
	mpq_queue_moved(q, MPQ_POLL_OUT);
}

/*
 * Take the next message of the run at head pos, as libmpq does: set the
 * run's busy bit (with MPQ_RUN_KERNEL: no record is ours, and nothing
 * can kill us before we clear it), copy the message out, then move taken
 * on and clear the bit, or free the run after its last. A corrupt run's
 * first slot is dropped (-EIO), as libmpq drops it. Returns the length,
 * 0 to look again (spent and freed now, head moved on, or the bit taken
 * first), -EAGAIN if another consumer holds the run, -EMSGSIZE if the
 * message does not fit (it stays), -EFAULT if the copy failed (it stays
 * too).
 */
static ssize_t mpq_queue_take_run(struct mpq_queue *q, u64 pos,
				  struct mpq_slot *s, struct iov_iter *to)
{
	unsigned char *data = (unsigned char *)s +
			      MPQ_RUN_DATA_OFF(q->slot_size);
	u64 *wp = mpq_run_wordp(s), busy;
	struct mpq_run run;
	ssize_t ret;
	size_t copied;
	bool ok = mpq_queue_run(q, pos, s, &run);

	/*
	 * Acquire, head still at pos: what we read was this run's header,
	 * not the payload of a later lap's run over the same slots.
	 */
	if (smp_load_acquire(&q->shm->head) != pos)
		return 0;
	if (!ok) {
		if (cmpxchg(&q->shm->head, pos, pos + 1) == pos) {
			/* Release: dropped; pairs with the producer. */
			smp_store_release(&s->seq, (u32)(pos + q->capacity));
			mpq_queue_moved(q, MPQ_POLL_OUT);
		}
		return -EIO;
	}
	if (run.busy)
		return -EAGAIN;
	busy = mpq_run_word(run.taken | MPQ_RUN_BUSY | MPQ_RUN_KERNEL, pos);
	/* The word has the run's lap: a later run's never matches. */
	if (cmpxchg(wp, run.word, busy) != run.word)
		return 0;
	if (run.taken == run.count) {
		mpq_queue_run_free(q, pos, &run);
		return 0;
	}
	ret = run.size;
	if (run.size > iov_iter_count(to)) {
		ret = -EMSGSIZE;
	} else {
		copied = copy_to_iter(data + (size_t)run.taken * run.size,
				      run.size, to);
		if (copied != run.size)
			ret = -EFAULT;
	}
	if (ret < 0 || run.taken + 1 < run.count) {
		/* Taken said (head_taken) before the bit goes. */
		if (ret > 0)
			WRITE_ONCE(q->shm->head_taken,
				   mpq_run_word(run.taken + 1, pos));
		/* Release: the copy is done before taken says so. */
		smp_store_release(wp, mpq_run_word(run.taken + (ret > 0),
						   pos));
		/* Others may wait for the bit: they can take now. */
		mpq_queue_moved(q, MPQ_POLL_IN);
		if (ret > 0)
			mpq_queue_moved(q, MPQ_POLL_OUT);
	} else {
		/* Release: all taken before the slots are freed. */
		smp_store_release(wp, mpq_run_word(run.count | MPQ_RUN_BUSY |
						   MPQ_RUN_KERNEL, pos));
		mpq_queue_run_free(q, pos, &run);
		mpq_queue_moved(q, MPQ_POLL_IN);
	}
	return ret;
}

/*
 * Take the oldest message into to, as libmpq's get does (see the ring
 * rules in the uapi header): -EAGAIN if there is none, -EMSGSIZE if it
 * does not fit or is out of line (it stays: any len above msg_max but
 * the markers is an out-of-line message's), -EIO for a corrupt run
 * (dropped, as libmpq drops it), -EFAULT if the copy failed (the
 * message is lost). Slots a
 * dead producer left (MPQ_SLOT_DROPPED) are freed and passed over. The
 * kernel writes no operation record (struct mpq_queue_rec): it cannot die
 * between claiming a slot and finishing with it. A run's messages are
 * taken one per call, in place (mpq_queue_take_run()).
 */
static ssize_t mpq_queue_take(struct mpq_queue *q, struct iov_iter *to)
{
	struct mpq_slot *s;
	u64 pos = 0;
	size_t copied = 0;
	u32 len = 0;
	int tries;

	for (tries = 0; tries < MPQ_QUEUE_TRIES; tries++) {
		u32 seq;

		pos = READ_ONCE(q->shm->head);
		s = mpq_queue_slot(q, pos);
		/* Acquire: pairs with the producer's release of seq. */
		seq = smp_load_acquire(&s->seq);
		if (seq != (u32)(pos + 1)) {
			if (mpq_queue_head_behind(q, pos, seq)) {
				cmpxchg(&q->shm->head, pos, pos + 1);
				continue;
			}
			if (READ_ONCE(q->shm->head) == pos)
				return -EAGAIN;
			continue;
		}
		len = READ_ONCE(s->len);
		if (len == MPQ_SLOT_RUN) {
			ssize_t ret = mpq_queue_take_run(q, pos, s, to);

			if (ret)
				return ret;
			continue;	/* spent and freed, or moved on */
		}
		/* Above msg_max, but dropped: out of line (uapi). */
		if ((len <= q->msg_max && len > iov_iter_count(to)) ||
		    (len > q->msg_max && len != MPQ_SLOT_DROPPED)) {
			/* Unless head moved on: then len may be payload. */
			if (READ_ONCE(q->shm->head) != pos)
				continue;
			return -EMSGSIZE;
		}
		if (cmpxchg(&q->shm->head, pos, pos + 1) != pos)
			continue;
		if (len != MPQ_SLOT_DROPPED)
			break;
		/* A dead producer's slot, published empty: skip it. */
		smp_store_release(&s->seq, (u32)(pos + q->capacity));
		mpq_queue_moved(q, MPQ_POLL_OUT);
	}
	if (tries == MPQ_QUEUE_TRIES)
		return -EAGAIN;
	copied = copy_to_iter(s + 1, len, to);
	/* Release: we are done with the slot; pairs with the producer. */
	smp_store_release(&s->seq, (u32)(pos + q->capacity));
	mpq_queue_moved(q, MPQ_POLL_OUT);
	return copied == len ? len : -EFAULT;
}

/*
 * Put one message, as libmpq's put does: -EAGAIN if full. A copy that
 * fails after the slot is claimed cannot take the slot back: it is
 * published as a dead producer's claim is (MPQ_SLOT_DROPPED), which
 * readers pass over, and counts no task.
 */
static ssize_t mpq_queue_give(struct mpq_queue *q, struct iov_iter *from)
{
	size_t len = iov_iter_count(from), copied;
	struct mpq_slot *s;
	u64 pos = 0;
	int tries;

	for (tries = 0; tries < MPQ_QUEUE_TRIES; tries++) {
		u32 seq;

		pos = READ_ONCE(q->shm->tail);
		s = mpq_queue_slot(q, pos);
		seq = smp_load_acquire(&s->seq);	/* pairs: consumer */
		if (seq == (u32)pos && !mpq_queue_room(q, pos)) {
			if (READ_ONCE(q->shm->tail) == pos)
				return -EAGAIN;		/* maxsize in it */
			continue;
		}
		if (seq == (u32)pos) {
			if (cmpxchg(&q->shm->tail, pos, pos + 1) == pos)
				break;
			continue;
		}
		if ((s32)(seq - (u32)pos) < 0 && READ_ONCE(q->shm->tail) == pos)
			return -EAGAIN;			/* full */
		if (mpq_queue_tail_behind(q, pos, seq))
			cmpxchg(&q->shm->tail, pos, pos + 1);
	}
	if (tries == MPQ_QUEUE_TRIES)
		return -EAGAIN;
	copied = copy_from_iter(s + 1, len, from);
	WRITE_ONCE(s->len, copied == len ? (u32)len : MPQ_SLOT_DROPPED);
	/* A JoinableQueue counts the task before anyone can take it. */
	if ((q->flags & MPQ_QUEUE_JOINABLE) && copied == len)
		atomic_inc((atomic_t *)&q->shm->unfinished);
	/* Release: the message is there; pairs with the consumer. */
	smp_store_release(&s->seq, (u32)(pos + 1));
	mpq_queue_moved(q, MPQ_POLL_IN);
	return copied == len ? len : -EFAULT;
}

static ssize_t mpq_queue_read_iter(struct kiocb *iocb, struct iov_iter *to)
{
	struct mpq_queue *q = iocb->ki_filp->private_data;
	ssize_t ret;

	for (;;) {
		ret = mpq_queue_take(q, to);
		if (ret >= 0)
			mpq_count(&q->obj, MPQ_CNT_READS);
		if (ret != -EAGAIN || mpq_nowait(iocb))
			return ret;
		/*
		 * A participant that keeps rewriting the ring can make
		 * every slot look ready to the wait below and taken to
		 * the try above, for ever: end the loop on a signal, as a
		 * sleep would, and yield the CPU.
		 */
		if (signal_pending(current))
			return -ERESTARTSYS;
		cond_resched();
		atomic_or(MPQ_POLL_IN, (atomic_t *)&q->shm->poll_wanted);
		smp_mb__after_atomic();	/* pairs with the producer's fence */
		mpq_object_wait(&q->obj, MPQ_POLL_IN, true, 0);
		/* The ring only: an overflow is libmpq's to move in. */
		ret = wait_event_interruptible(q->wq,
					       mpq_queue_ring_readable(q));
		mpq_object_wait(&q->obj, MPQ_POLL_IN, false, ret);
		if (ret)
			return ret;
	}
}

static ssize_t mpq_queue_write_iter(struct kiocb *iocb, struct iov_iter *from)
{
	struct mpq_queue *q = iocb->ki_filp->private_data;
	ssize_t ret;

	if (iov_iter_count(from) > q->msg_max)
		return -EMSGSIZE;
	for (;;) {
		ret = mpq_queue_give(q, from);
		if (ret >= 0)
			mpq_count(&q->obj, MPQ_CNT_WRITES);
		if (ret != -EAGAIN || mpq_nowait(iocb))
			return ret;
		/* Forged slots can keep us here: see the read side. */
		if (signal_pending(current))
			return -ERESTARTSYS;
		cond_resched();
		atomic_or(MPQ_POLL_OUT, (atomic_t *)&q->shm->poll_wanted);
		smp_mb__after_atomic();	/* pairs with the consumer's fence */
		mpq_object_wait(&q->obj, MPQ_POLL_OUT, true, 0);
		ret = wait_event_interruptible(q->wq, mpq_queue_ready(q) &
					       EPOLLOUT);
		mpq_object_wait(&q->obj, MPQ_POLL_OUT, false, ret);
		if (ret)
			return ret;
	}
}

static long mpq_queue_wake(struct mpq_queue *q, unsigned long arg)
{
	__poll_t key = 0;

	if (arg & ~(unsigned long)MPQ_POLL_ALL)
		return -EINVAL;
	/* Clear before waking: a poller re-arming after this is not lost. */
	atomic_andnot(arg, (atomic_t *)&q->shm->poll_wanted);
	if (arg & MPQ_POLL_IN)
		key |= EPOLLIN | EPOLLRDNORM;
	if (arg & MPQ_POLL_OUT)
		key |= EPOLLOUT | EPOLLWRNORM;
	if (key)
		mpq_queue_wake_up(q, key);
	return 0;
}

static long mpq_queue_info(struct mpq_queue *q, void __user *uarg)
{
	struct mpq_queue_info info = {
		.size		= sizeof(info),
		.flags		= q->flags,
		.capacity	= q->capacity,
		.msg_max	= q->msg_max,
		.slot_size	= q->slot_size,
		.data_off	= q->data_off,
		.map_size	= q->map_size,
		.id		= q->obj.id,
	};

	info.maxsize = q->maxsize;
	return mpq_info_to_user(uarg, &info, sizeof(info), MPQ_QUEUE_INFO_SIZE_VER0);
}

/* The largest blob id: the uapi's, within an xarray index. */
static u64 mpq_queue_blob_id_max(void)
{
	return min_t(u64, MPQ_QUEUE_BLOB_ID_MAX, ULONG_MAX);
}

/*
 * MPQ_IOC_QUEUE_BLOB_*: a blob made, opened or dropped (see the top of
 * this file). The argument is read once into our copy; ids are only
 * looked up. Returns an fd (NEW, OPEN) or 0 (DROP), or -EFAULT, -EINVAL
 * (flags, reserved, a zero size), -ENOENT (no such id), -E2BIG, -EDQUOT,
 * -ENOMEM, -EBUSY (every id was handed out), -EMFILE.
 */
static long mpq_queue_blob(struct mpq_queue *q, unsigned int cmd,
			   void __user *uarg)
{
	struct mpq_queue_blob b;
	struct file *file;
	s64 last;
	int fd, ret;

	if (copy_from_user(&b, uarg, sizeof(b)))
		return -EFAULT;
	if (b.flags & ~MPQ_CREATE_CLOEXEC || b.reserved)
		return -EINVAL;
	if (cmd == MPQ_IOC_QUEUE_BLOB_DROP) {
		if (b.id > mpq_queue_blob_id_max())
			return -ENOENT;
		file = xa_erase(&q->blobs, (unsigned long)b.id);
		if (!file)
			return -ENOENT;
		fput(file);
		return 0;
	}
	if (cmd == MPQ_IOC_QUEUE_BLOB_NEW) {
		file = mpq_shm_anon_file(b.bytes);
		if (IS_ERR(file))
			return PTR_ERR(file);
		/* Never past the last id, so the counter never wraps either. */
		last = atomic64_fetch_add_unless(&q->blob_last, 1,
						 (s64)mpq_queue_blob_id_max());
		if (last >= (s64)mpq_queue_blob_id_max()) {
			fput(file);
			return -EBUSY;
		}
		b.id = (u64)last + 1;
		/* Fresh, so never there already; -ENOMEM at worst. */
		ret = xa_insert(&q->blobs, (unsigned long)b.id, file,
				GFP_KERNEL_ACCOUNT);
		if (ret < 0) {
			fput(file);
			return ret;
		}
	} else {
		if (b.id > mpq_queue_blob_id_max())
			return -ENOENT;
		xa_lock(&q->blobs);
		file = xa_load(&q->blobs, (unsigned long)b.id);
		if (file)
			get_file(file);
		xa_unlock(&q->blobs);
		if (!file)
			return -ENOENT;
		b.bytes = mpq_shm_file_bytes(file);
	}
	fd = get_unused_fd_flags(O_RDWR |
			(b.flags & MPQ_CREATE_CLOEXEC ? O_CLOEXEC : 0));
	if (fd < 0) {
		ret = fd;
		goto err;
	}
	if (copy_to_user(uarg, &b, sizeof(b))) {
		put_unused_fd(fd);
		ret = -EFAULT;
		goto err;
	}
	/* NEW: the table keeps its reference, the fd gets one of its own. */
	if (cmd == MPQ_IOC_QUEUE_BLOB_NEW)
		get_file(file);
	fd_install(fd, file);
	return fd;
err:
	if (cmd == MPQ_IOC_QUEUE_BLOB_NEW) {
		file = xa_erase(&q->blobs, (unsigned long)b.id);
		if (file)
			fput(file);
	} else {
		fput(file);
	}
	return ret;
}

static long mpq_queue_ioctl(struct file *file, unsigned int cmd,
			    unsigned long arg)
{
	struct mpq_queue *q = file->private_data;

	switch (cmd) {
	case MPQ_IOC_QUEUE_WAKE:
		return mpq_queue_wake(q, arg);
	case MPQ_IOC_QUEUE_INFO:
		return mpq_queue_info(q, (void __user *)arg);
	case MPQ_IOC_QUEUE_BLOB_NEW:
	case MPQ_IOC_QUEUE_BLOB_OPEN:
	case MPQ_IOC_QUEUE_BLOB_DROP:
		return mpq_queue_blob(q, cmd, (void __user *)arg);
	default:
		return -ENOTTY;
	}
}

static int mpq_queue_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct mpq_queue *q = file->private_data;

	return mpq_region_mmap(&q->region, &q->ref, vma);
}

static int mpq_queue_flush(struct file *file, fl_owner_t id)
{
	struct mpq_queue *q = file->private_data;

	mpq_object_flush(&q->obj);
	return 0;
}

static int mpq_queue_release(struct inode *inode, struct file *file)
{
	struct mpq_queue *q = file->private_data;
	struct file *blob;
	unsigned long id;

	xa_for_each(&q->blobs, id, blob)
		fput(blob);
	xa_destroy(&q->blobs);
	mpq_object_del(&q->obj);
	mpq_region_destroy(&q->region);
	kfree(q);
	return 0;
}

static const struct file_operations mpq_queue_fops = {
	.owner		= THIS_MODULE,
	.flush		= mpq_queue_flush,
	.release	= mpq_queue_release,
	.poll		= mpq_queue_poll,
	.read_iter	= mpq_queue_read_iter,
	.write_iter	= mpq_queue_write_iter,
	.unlocked_ioctl	= mpq_queue_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
	.mmap		= mpq_queue_mmap,
	.llseek		= noop_llseek,
};

static struct mpq_queue *mpq_queue_of(struct mpq_object *obj)
{
	return container_of(obj, struct mpq_queue, obj);
}

/*
 * Messages in the ring, for the listing: head and tail are anyone's to
 * write, so a tail behind head reads as empty and the caller clamps.
 */
static u64 mpq_queue_depth(struct mpq_object *obj)
{
	struct mpq_queue *q = mpq_queue_of(obj);
	u64 head = READ_ONCE(q->shm->head);
	u64 tail = READ_ONCE(q->shm->tail);

	return (s64)(tail - head) > 0 ? tail - head : 0;
}

static u64 mpq_queue_capacity(struct mpq_object *obj)
{
	return mpq_queue_of(obj)->capacity;
}

static unsigned int mpq_queue_waiters(struct mpq_object *obj)
{
	return mpq_wq_waiters(&mpq_queue_of(obj)->wq);
}

/*
 * A participant died. Whatever it left in the ring (a message published
 * without the wake-up that should have followed; later, slots the
 * recovery code reclaims) must be seen by those asleep in poll() and
 * read(2): wake them all, and each looks at the ring again.
 */
static void mpq_queue_participant_exit(struct mpq_object *obj, pid_t pid)
{
	struct mpq_queue *q = mpq_queue_of(obj);
	__poll_t all = EPOLLIN | EPOLLRDNORM | EPOLLOUT | EPOLLWRNORM;
	struct mpq_queue_rec *recs = q->region.kaddr + MPQ_QUEUE_REC_OFF;
	bool left = false;
	u32 i;

	/*
	 * Report what the dead left in the middle of an operation: records
	 * that the kernel's robust-futex processing has just marked
	 * FUTEX_OWNER_DIED and whose intent still names positions. libmpq
	 * reclaims them; this tells the tracers, has ->poll() look at them
	 * until they are gone, and bumps the header's deaths, which tells
	 * libmpq's gets that do not wait to look too. Shared memory: each
	 * field read once, nothing followed.
	 */
	for (i = 0; i < MPQ_QUEUE_NREC; i++) {
		u32 word = READ_ONCE(recs[i].word);

		if ((word & FUTEX_OWNER_DIED) && !(word & FUTEX_TID_MASK) &&
		    READ_ONCE(recs[i].n)) {
			mpq_object_owner_died(obj, pid, MPQ_DIED_SLOT,
					      READ_ONCE(recs[i].pos));
			left = true;
		}
	}
	if (left) {
		/* The records as read above, before either count moves. */
		smp_mb__before_atomic();
		atomic_inc(&q->dead_left);
		atomic_inc((atomic_t *)&q->shm->deaths);
	}

	mpq_object_woke(obj, &q->wq, all);
	/* nr_exclusive 0: exclusive waiters (EPOLLEXCLUSIVE) too, every one. */
	__wake_up(&q->wq, TASK_NORMAL, 0, poll_to_key(all));
}

static const struct mpq_object_ops mpq_queue_ops = {
	.name			= "queue",
	.type			= MPQ_OBJ_QUEUE,
	.depth			= mpq_queue_depth,
	.capacity		= mpq_queue_capacity,
	.waiters		= mpq_queue_waiters,
	.participant_exit	= mpq_queue_participant_exit,
};

/* Validate a create request and work out the queue's geometry. */
static int mpq_queue_geometry(struct mpq_queue *q,
			      const struct mpq_queue_create *args)
{
	u64 slot_size, ring, total;

	if (args->flags & ~MPQ_QUEUE_CREATE_FLAGS)
		return -EINVAL;
	if (memchr_inv(args->reserved, 0, sizeof(args->reserved)))
		return -EINVAL;
	if (!args->capacity || !args->msg_max)
		return -EINVAL;
	if (args->capacity > MPQ_QUEUE_MAX_CAPACITY)
		return -E2BIG;

	/* Room for an out-of-line blob id whatever msg_max is. */
	slot_size = ALIGN((u64)sizeof(struct mpq_slot) +
			  max_t(u32, args->msg_max, MPQ_SLOT_MIN_DATA),
			  MPQ_SLOT_ALIGN);
	/* Two at least: with one slot, full (seq p + 1) reads as free. */
	q->capacity = roundup_pow_of_two(max(args->capacity, 2U));
	q->maxsize = args->flags & MPQ_QUEUE_UNBOUNDED ? 0 : args->capacity;
	q->data_off = PAGE_ALIGN(MPQ_QUEUE_DATA_MIN);
	if (check_mul_overflow(slot_size, (u64)q->capacity, &ring) ||
	    check_add_overflow(ring, (u64)q->data_off, &total))
		return -E2BIG;
	total = PAGE_ALIGN(total);
	if (total > mpq_max_object_bytes || slot_size > U32_MAX)
		return -E2BIG;
	/* The header, the operation records, then the ring, page aligned. */
	BUILD_BUG_ON(sizeof(struct mpq_queue_shm) > MPQ_QUEUE_REC_OFF);
	BUILD_BUG_ON(sizeof(struct mpq_queue_rec) != 128);

	q->flags = args->flags & (MPQ_QUEUE_JOINABLE | MPQ_QUEUE_UNBOUNDED);
	q->msg_max = args->msg_max;
	q->slot_size = slot_size;
	q->map_size = total;
	return 0;
}

/* Write the shared header and number the slots, before anyone maps them. */
static void mpq_queue_format(struct mpq_queue *q)
{
	u32 i;

	q->shm = q->region.kaddr;
	q->shm->magic = MPQ_QUEUE_MAGIC;
	q->shm->version = MPQ_QUEUE_VERSION;
	q->shm->capacity = q->capacity;
	q->shm->msg_max = q->msg_max;
	q->shm->slot_size = q->slot_size;
	q->shm->data_off = q->data_off;
	q->shm->map_size = q->map_size;
	q->shm->maxsize = q->maxsize;
	q->shm->flags = q->flags;
	for (i = 0; i < q->capacity; i++) {
		mpq_queue_slot(q, i)->seq = i;
		/* Up to 2^26 slots in a GiB: let others run between pages. */
		if (!(i & 4095))
			cond_resched();
	}
}

/**
 * mpq_queue_create() - MPQ_IOC_QUEUE_CREATE: make a queue, return its fd
 * @uarg:	user pointer to struct mpq_queue_create
 *
 * Return: the new fd, or -EFAULT, -EINVAL (bad size, flags, reserved
 * fields, zero capacity or msg_max), -E2BIG (too large, or a longer struct
 * with non-zero trailing bytes), -EDQUOT (over the caller's budget:
 * user.c), -ENOMEM, -EMFILE.
 */
long mpq_queue_create(void __user *uarg)
{
	struct mpq_queue_create args;
	struct mpq_queue *q;
	struct file *file;
	int fd, ret;

	ret = mpq_args_from_user(&args, sizeof(args), uarg,
				 MPQ_QUEUE_CREATE_SIZE_VER0);
	if (ret)
		return ret;

	q = kzalloc(sizeof(*q), GFP_KERNEL_ACCOUNT);
	if (!q)
		return -ENOMEM;
	ret = mpq_queue_geometry(q, &args);
	if (ret)
		goto err_free;
	ret = mpq_region_init(&q->region, "mpq-queue", q->map_size);
	if (ret)
		goto err_free;
	mpq_queue_format(q);
	xa_init_flags(&q->blobs, XA_FLAGS_ACCOUNT);
	/* From 2^32: an id kept in 32 bits anywhere fails at once. */
	atomic64_set(&q->blob_last,
		     (s64)min_t(u64, U32_MAX, mpq_queue_blob_id_max() / 2));
	init_waitqueue_head(&q->wq);
	q->ref.region = &q->region;
	q->ref.obj = &q->obj;
	mpq_object_init(&q->obj, &mpq_queue_ops, q->map_size);

	fd = get_unused_fd_flags(O_RDWR |
			(args.flags & MPQ_CREATE_CLOEXEC ? O_CLOEXEC : 0));
	if (fd < 0) {
		ret = fd;
		goto err_region;
	}
	file = anon_inode_getfile("[mpq-queue]", &mpq_queue_fops, q, O_RDWR);
	if (IS_ERR(file)) {
		ret = PTR_ERR(file);
		goto err_fd;
	}
	/* io_uring may try read and write without blocking first. */
	file->f_mode |= FMODE_NOWAIT;
	mpq_object_add(&q->obj);
	fd_install(fd, file);
	return fd;

err_fd:
	put_unused_fd(fd);
err_region:
	mpq_region_destroy(&q->region);
err_free:
	kfree(q);
	return ret;
}
