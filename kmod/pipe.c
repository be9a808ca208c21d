// SPDX-License-Identifier: GPL-2.0
/*
 * The pipe object: two ends, each its own anon-inode fd, sharing one
 * region (see region.c) that holds a byte ring per direction (struct
 * mpq_pipe_shm in the uapi header). Messages move in userspace; the kernel
 * tracks the ends and answers poll().
 *
 * Hang-up: an end is gone when its file is released, that is when every
 * fd and every mapping of it is gone in every process, by close or by
 * death. The other end's pollers are then woken with EPOLLHUP. A futex
 * waiter could not be woken from here (nothing in kernel/futex is
 * exported), so libmpq sleeps on a pipe in poll() on its end's fd.
 *
 * read(2) and write(2) on an end (and so io_uring READ and WRITE, which
 * try them with IOCB_NOWAIT and otherwise wait for poll) move one whole
 * message, as the library does, in frames (struct mpq_frame). They take
 * messages up to half a ring: a larger one never lies whole in the ring,
 * and its frames must be moved while they stream (use the library).
 *
 * As for queues, nothing in the shared memory is trusted: positions are
 * read once and checked against the kernel's own geometry, frames are
 * parsed with every length checked, and an impossible ring is -EIO.
 * A frame is there when its header word is (see struct mpq_frame): the
 * kernel, as the library, never waits on tail. A small message may wait
 * in the ring's box instead (struct mpq_pipe_box), and then comes first;
 * the kernel takes it from there but never writes one.
 */
#include <linux/anon_inodes.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/kref.h>
#include <linux/mpq.h>
#include <linux/poll.h>
#include <linux/sched/signal.h>
#include <linux/sizes.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/uio.h>
#include <linux/wait.h>

#include "internal.h"
#include "trace.h"

#define MPQ_PIPE_CREATE_SIZE_VER0	56
#define MPQ_PIPE_INFO_SIZE_VER0		80

struct mpq_pipe;

struct mpq_end {
	struct mpq_pipe *pipe;
	unsigned int idx;
	struct mpq_mapref ref;
};

struct mpq_pipe {
	struct mpq_object obj;
	struct mpq_region region;
	struct mpq_pipe_shm *shm;
	struct kref ref;
	struct mpq_end end[2];
	wait_queue_head_t wq[2];	/* pollers of end i */
	bool closed[2];			/* end i is gone */
	u32 flags;
	u32 ring_size;
	u64 data_off[2];
	u64 map_size;
};

static void mpq_pipe_free(struct kref *ref)
{
	struct mpq_pipe *p = container_of(ref, struct mpq_pipe, ref);

	mpq_object_del(&p->obj);
	mpq_region_destroy(&p->region);
	kfree(p);
}

/* Wake the pollers and sleepers of end i. */
static void mpq_pipe_wake_up(struct mpq_pipe *p, unsigned int i, __poll_t key)
{
	mpq_object_woke(&p->obj, &p->wq[i], key);
	wake_up_interruptible_poll(&p->wq[i], key);
}

static void *mpq_ring_data(struct mpq_pipe *p, unsigned int r)
{
	return p->region.kaddr + p->data_off[r];
}

/* The 8-byte aligned word at pos of ring r: a frame's header, or 0. */
static u64 *mpq_ring_word(struct mpq_pipe *p, unsigned int r, u64 pos)
{
	return mpq_ring_data(p, r) + (pos & (p->ring_size - 1) & ~7ULL);
}

/* Is a frame published at ring r's head? */
static bool mpq_ring_ready(struct mpq_pipe *p, unsigned int r)
{
	u64 head = READ_ONCE(p->shm->ring[r].head);

	return READ_ONCE(*mpq_ring_word(p, r, head)) != 0;
}

/* Does a message wait in ring r's box (struct mpq_pipe_box)? */
static bool mpq_box_full(struct mpq_pipe *p, unsigned int r)
{
	/* Pairs with the writer's release of seq: len and data are there. */
	return smp_load_acquire(&p->shm->box[r].seq) !=
	       READ_ONCE(p->shm->ring[r].box_taken);
}

static __poll_t mpq_pipe_poll(struct file *file, poll_table *pt)
{
	struct mpq_end *e = file->private_data;
	struct mpq_pipe *p = e->pipe;
	struct mpq_ring *rx = &p->shm->ring[!e->idx];
	struct mpq_ring *tx = &p->shm->ring[e->idx];
	__poll_t want = poll_requested_events(pt), mask = 0;
	u64 used;

	mpq_count(&p->obj, MPQ_CNT_POLLS);
	poll_wait(file, &p->wq[e->idx], pt);
	/* Ask the other side to wake us; see mpq_queue_poll() for why always. */
	if (want & (EPOLLIN | EPOLLRDNORM))
		atomic_or(MPQ_POLL_IN, (atomic_t *)&rx->wanted);
	if (want & (EPOLLOUT | EPOLLWRNORM))
		atomic_or(MPQ_POLL_OUT, (atomic_t *)&tx->wanted);
	/* Pairs with the full fence in libmpq between moving a position and
	 * reading wanted.
	 */
	smp_mb__after_atomic();

	if (mpq_ring_ready(p, !e->idx) || mpq_box_full(p, !e->idx))
		mask |= EPOLLIN | EPOLLRDNORM;
	if (READ_ONCE(p->closed[!e->idx])) {
		mask |= EPOLLHUP;
		if (p->flags & MPQ_PIPE_DUPLEX || e->idx == 1)
			mask |= EPOLLERR;	/* no one reads what we write */
	} else {
		used = READ_ONCE(tx->tail) - READ_ONCE(tx->head);
		if (used <= p->ring_size - MPQ_PIPE_MIN_SPACE)
			mask |= EPOLLOUT | EPOLLWRNORM;
	}
	return mask;
}

/* Copy n bytes at position pos of ring r into dst, across the wrap. */
static void mpq_ring_peek(struct mpq_pipe *p, unsigned int r, u64 pos,
			  void *dst, size_t n)
{
	u64 off = pos & (p->ring_size - 1), first = p->ring_size - off;

	if (n <= first) {
		memcpy(dst, mpq_ring_data(p, r) + off, n);
	} else {
		memcpy(dst, mpq_ring_data(p, r) + off, first);
		memcpy(dst + first, mpq_ring_data(p, r), n - first);
	}
}

static size_t mpq_ring_to_iter(struct mpq_pipe *p, unsigned int r, u64 pos,
			       size_t n, struct iov_iter *to)
{
	u64 off = pos & (p->ring_size - 1), first = p->ring_size - off;

	if (n <= first)
		return copy_to_iter(mpq_ring_data(p, r) + off, n, to);
	return copy_to_iter(mpq_ring_data(p, r) + off, first, to) +
	       copy_to_iter(mpq_ring_data(p, r), n - first, to);
}

static size_t mpq_ring_from_iter(struct mpq_pipe *p, unsigned int r, u64 pos,
				 size_t n, struct iov_iter *from)
{
	u64 off = pos & (p->ring_size - 1), first = p->ring_size - off;

	if (n <= first)
		return copy_from_iter(mpq_ring_data(p, r) + off, n, from);
	return copy_from_iter(mpq_ring_data(p, r) + off, first, from) +
	       copy_from_iter(mpq_ring_data(p, r), n - first, from);
}

static void mpq_ring_poke(struct mpq_pipe *p, unsigned int r, u64 pos,
			  const void *src, size_t n)
{
	u64 off = pos & (p->ring_size - 1), first = p->ring_size - off;

	if (n <= first) {
		memcpy(mpq_ring_data(p, r) + off, src, n);
	} else {
		memcpy(mpq_ring_data(p, r) + off, src, first);
		memcpy(mpq_ring_data(p, r), src + first, n - first);
	}
}

/*
 * A walk of a ring's frames: a scribbler can fill the ring with empty
 * frames, up to ring_size / 8 of them (32M). Let others run, and end on a
 * signal: io_uring retries a read that poll calls ready 128 times in task
 * work, where SIGKILL is not acted on until the last retry returns.
 * The signal is looked at every 64 frames, so that a message written by
 * the rules (a few frames) is never cut short by one.
 */
static int mpq_ring_walk_step(unsigned int *frames)
{
	cond_resched();
	if (!(++*frames & 63) && signal_pending(current))
		return -ERESTARTSYS;
	return 0;
}

/*
 * Is a whole message waiting in ring r at head? 0 with its total length,
 * where it starts and the position after it; -EAGAIN if not all of it is
 * there, with *end where the frame still to come starts; -EMSGSIZE if it
 * is too large to ever lie whole in the ring; -EIO if the ring is not one
 * that a writer following the rules could have left; -ERESTARTSYS if a
 * signal came during a long walk. The walk follows published frames
 * (struct mpq_frame) and ends at a word that is 0, as a reader of the
 * library's does; tail is not looked at.
 */
static int mpq_ring_scan(struct mpq_pipe *p, unsigned int r, u64 *total,
			 u64 *start, u64 *end)
{
	u64 head = READ_ONCE(p->shm->ring[r].head) & ~7ULL;
	u64 pos = head, sum = 0, hdr, need, w;
	unsigned int frames = 0;
	struct mpq_frame f;
	bool first = true;

	for (;;) {
		if (mpq_ring_walk_step(&frames))
			return -ERESTARTSYS;
		/* Pairs with the writer's release of the header. */
		w = smp_load_acquire(mpq_ring_word(p, r, pos));
		if (!w) {
			*end = pos;
			return -EAGAIN;
		}
		memcpy(&f, &w, sizeof(f));
		if (!!(f.flags & MPQ_FRAME_FIRST) != first ||
		    f.flags & ~(MPQ_FRAME_FIRST | MPQ_FRAME_LAST) ||
		    f.len > MPQ_FRAME_MAX(p->ring_size))
			return -EIO;
		hdr = sizeof(f) + (first ? sizeof(*total) : 0);
		need = hdr + ALIGN((u64)f.len, 8);
		/* A message and the word after it never fill the ring. */
		if (pos + need - head > p->ring_size - sizeof(u64))
			return -EIO;
		if (first) {
			*total = READ_ONCE(*mpq_ring_word(p, r, pos + sizeof(f)));
			if (*total > p->ring_size / 2)
				return -EMSGSIZE;
		}
		sum += f.len;
		if (sum > *total)
			return -EIO;
		pos += need;
		if (f.flags & MPQ_FRAME_LAST) {
			if (sum != *total)
				return -EIO;
			*start = head;
			*end = pos;
			return 0;
		}
		first = false;
	}
}

/* Has ring r moved since the scan: head, or a frame published at stop? */
static bool mpq_ring_moved_from(struct mpq_pipe *p, unsigned int r, u64 head,
				u64 stop)
{
	return READ_ONCE(p->shm->ring[r].head) != head ||
	       READ_ONCE(*mpq_ring_word(p, r, stop)) != 0;
}

static bool mpq_end_can_read(struct mpq_end *e)
{
	return e->pipe->flags & MPQ_PIPE_DUPLEX || e->idx == 0;
}

static bool mpq_end_can_write(struct mpq_end *e)
{
	return e->pipe->flags & MPQ_PIPE_DUPLEX || e->idx == 1;
}

/* After moving a position of ring r, wake the other end if it asked. */
static void mpq_ring_moved(struct mpq_pipe *p, unsigned int r, u32 bit,
			   unsigned int other)
{
	struct mpq_ring *ring = &p->shm->ring[r];

	smp_mb();	/* the position before wanted: pairs with ->poll() */
	if (!(READ_ONCE(ring->wanted) & bit))
		return;
	atomic_andnot(bit, (atomic_t *)&ring->wanted);
	mpq_pipe_wake_up(p, other, bit == MPQ_POLL_IN ? EPOLLIN | EPOLLRDNORM :
			 EPOLLOUT | EPOLLWRNORM);
}

/*
 * Take the message waiting in ring r's box: a copy of it first, so that
 * what reaches the caller is what was checked; then say it is taken, on
 * the ring (box_taken) and to the writer (ack in the other box: we never
 * send, as the library's reader would). -EMSGSIZE leaves it for a larger
 * buffer; -EIO if its length is one no writer could have stored.
 */
static ssize_t mpq_box_read(struct mpq_pipe *p, unsigned int r,
			    struct iov_iter *to)
{
	struct mpq_pipe_box *b = &p->shm->box[r];
	u8 data[MPQ_PIPE_BOX_MAX];
	u32 seq, len;

	/* Pairs with the writer's release of seq: len and data are there. */
	seq = smp_load_acquire(&b->seq);
	len = READ_ONCE(b->len);
	if (len > MPQ_PIPE_BOX_MAX)
		return -EIO;
	if (len > iov_iter_count(to))
		return -EMSGSIZE;
	memcpy(data, b->data, len);
	if (copy_to_iter(data, len, to) != len)
		return -EFAULT;
	/* The copy is done, for a reader of the library's after us. */
	smp_store_release(&p->shm->ring[r].box_taken, seq);
	/* The copy is done: pairs with the writer's acquire of ack. */
	smp_store_release(&p->shm->box[!r].ack, seq);
	mpq_count(&p->obj, MPQ_CNT_READS);
	return len;
}

static ssize_t mpq_pipe_read_iter(struct kiocb *iocb, struct iov_iter *to)
{
	struct mpq_end *e = iocb->ki_filp->private_data;
	struct mpq_pipe *p = e->pipe;
	unsigned int r = !e->idx;
	u64 total = 0, start = 0, end = 0, pos, len;
	unsigned int frames = 0;
	struct mpq_frame f;
	bool first;
	int ret;

	if (!mpq_end_can_read(e))
		return -EBADF;
	for (;;) {
		u64 head = READ_ONCE(p->shm->ring[r].head);

		ret = mpq_ring_scan(p, r, &total, &start, &end);
		/*
		 * The box after the ring's word: a message waiting there came
		 * before every frame (struct mpq_pipe_box).
		 */
		if (ret != -ERESTARTSYS && mpq_box_full(p, r))
			return mpq_box_read(p, r, to);
		if (ret != -EAGAIN)
			break;
		if (READ_ONCE(p->closed[!e->idx])) {
			/* What was sent before the close is still read. */
			smp_rmb();
			ret = mpq_ring_scan(p, r, &total, &start, &end);
			if (ret != -ERESTARTSYS && mpq_box_full(p, r))
				return mpq_box_read(p, r, to);
			if (ret == -EAGAIN)
				return 0;	/* end of file */
			break;
		}
		if (mpq_nowait(iocb))
			return -EAGAIN;
		/*
		 * Anyone who maps the pipe can move the positions as fast as
		 * we look at them, so that we never sleep: the loop must
		 * still end when we are killed, or interrupted, as a sleep
		 * would. And it yields the CPU.
		 */
		if (signal_pending(current))
			return -ERESTARTSYS;
		cond_resched();
		atomic_or(MPQ_POLL_IN, (atomic_t *)&p->shm->ring[r].wanted);
		smp_mb__after_atomic();	/* pairs with the writer's fence */
		mpq_object_wait(&p->obj, MPQ_POLL_IN, true, 0);
		/*
		 * Sleep until a frame is published where the scan stopped
		 * (or another reader moved head): the (long) scan itself is
		 * not run as the wait's condition. A writer publishes the
		 * frame before it looks at wanted, so it is seen here or
		 * wakes us; one killed before looking is found when the
		 * death wakes us (mpq_pipe_participant_exit()).
		 */
		ret = wait_event_interruptible(p->wq[e->idx],
					       mpq_ring_moved_from(p, r, head,
								   end) ||
					       mpq_box_full(p, r) ||
					       READ_ONCE(p->closed[!e->idx]));
		mpq_object_wait(&p->obj, MPQ_POLL_IN, false, ret);
		if (ret)
			return ret;
	}
	if (ret)
		return ret;
	if (total > iov_iter_count(to))
		return -EMSGSIZE;	/* it stays, for a larger buffer */

	/*
	 * Copy the frames out. The writer could change them under us since
	 * the scan; every length is checked again, and each step moves on.
	 */
	first = true;
	for (pos = start, len = 0; (s64)(end - pos) > 0; first = false) {
		u64 hdr = sizeof(f) + (first ? sizeof(total) : 0);

		if (mpq_ring_walk_step(&frames))
			return -ERESTARTSYS;	/* nothing is taken yet */
		mpq_ring_peek(p, r, pos, &f, sizeof(f));
		if (f.len > MPQ_FRAME_MAX(p->ring_size) || len + f.len > total)
			return -EIO;
		if (mpq_ring_to_iter(p, r, pos + hdr, f.len, to) != f.len)
			return -EFAULT;
		len += f.len;
		pos += hdr + ALIGN((u64)f.len, 8);
	}
	smp_store_release(&p->shm->ring[r].head, end);	/* pairs: writer */
	mpq_count(&p->obj, MPQ_CNT_READS);
	mpq_ring_moved(p, r, MPQ_POLL_OUT, !e->idx);
	return len;
}

/*
 * Bytes of ring that a message of len bytes takes, in frames, and the
 * word after them, which must stay 0 until a frame is published there.
 */
static u64 mpq_frames_size(struct mpq_pipe *p, u64 len)
{
	u64 max = MPQ_FRAME_MAX(p->ring_size), n = 0, left = len;

	do {
		u64 chunk = min(left, max);

		n += sizeof(struct mpq_frame) + ALIGN(chunk, 8);
		left -= chunk;
	} while (left);
	return n + 2 * sizeof(u64);	/* the total; the word after */
}

static bool mpq_ring_has_room(struct mpq_pipe *p, unsigned int r, u64 need)
{
	struct mpq_ring *ring = &p->shm->ring[r];
	/* Acquire: the reader is done with what lies before head. */
	u64 used = READ_ONCE(ring->tail) - smp_load_acquire(&ring->head);

	/* A garbage position counts as room: the write then says -EIO. */
	return used > p->ring_size || p->ring_size - used >= need;
}

/*
 * Frames published at ring r's tail without tail moved past them: their
 * writer died between the two stores (see struct mpq_frame). They were
 * sent; move tail past them, as the library's next writer would. -EIO if
 * what lies at tail is no frame.
 */
static int mpq_ring_heal(struct mpq_pipe *p, unsigned int r)
{
	struct mpq_ring *ring = &p->shm->ring[r];
	u64 tail = READ_ONCE(ring->tail), pos = tail, w;
	unsigned int frames = 0;
	struct mpq_frame f;
	int ret;

	if (tail & 7)
		return -EIO;
	while ((w = READ_ONCE(*mpq_ring_word(p, r, pos)))) {
		ret = mpq_ring_walk_step(&frames);
		if (ret)
			return ret;
		memcpy(&f, &w, sizeof(f));
		if (f.flags & ~(MPQ_FRAME_FIRST | MPQ_FRAME_LAST) ||
		    f.len > MPQ_FRAME_MAX(p->ring_size))
			return -EIO;
		pos += sizeof(f) + (f.flags & MPQ_FRAME_FIRST ? sizeof(u64) : 0) +
		       ALIGN((u64)f.len, 8);
		if (pos - tail > p->ring_size)
			return -EIO;
	}
	if (pos != tail)
		smp_store_release(&ring->tail, pos);	/* pairs: reader */
	return 0;
}

static ssize_t mpq_pipe_write_iter(struct kiocb *iocb, struct iov_iter *from)
{
	struct mpq_end *e = iocb->ki_filp->private_data;
	struct mpq_pipe *p = e->pipe;
	unsigned int r = e->idx;
	struct mpq_ring *ring = &p->shm->ring[r];
	u64 total = iov_iter_count(from), need, tail, pos, off = 0, w = 0;
	u64 max = MPQ_FRAME_MAX(p->ring_size);
	bool first = true;
	int ret;

	if (!mpq_end_can_write(e))
		return -EBADF;
	if (total > p->ring_size / 2)
		return -EMSGSIZE;
	need = mpq_frames_size(p, total);
	for (;;) {
		if (READ_ONCE(p->closed[!e->idx]))
			return -EPIPE;
		ret = mpq_ring_heal(p, r);
		if (ret)
			return ret;
		if (mpq_ring_has_room(p, r, need))
			break;
		if (mpq_nowait(iocb))
			return -EAGAIN;
		/* The reader's head is anyone's too: see the read side. */
		if (signal_pending(current))
			return -ERESTARTSYS;
		cond_resched();
		atomic_or(MPQ_POLL_OUT, (atomic_t *)&ring->wanted);
		smp_mb__after_atomic();	/* pairs with the reader's fence */
		mpq_object_wait(&p->obj, MPQ_POLL_OUT, true, 0);
		ret = wait_event_interruptible(p->wq[e->idx],
					       mpq_ring_has_room(p, r, need) ||
					       READ_ONCE(p->closed[!e->idx]));
		mpq_object_wait(&p->obj, MPQ_POLL_OUT, false, ret);
		if (ret)
			return ret;
	}
	tail = READ_ONCE(ring->tail);
	/* Acquire: pairs with the reader's release of head. */
	if (tail & 7 || tail - smp_load_acquire(&ring->head) > p->ring_size)
		return -EIO;

	/*
	 * Nothing is visible to a reader until the first frame's header is
	 * stored, last: a fault part-way leaves nothing sent. The headers of
	 * the frames after it go before it, plain: a reader gets to them
	 * only through the first one's release.
	 */
	for (pos = tail; first || off < total; first = false) {
		struct mpq_frame f;
		u64 chunk = min(total - off, max);
		u64 hdr = sizeof(f) + (first ? sizeof(total) : 0);

		f.len = chunk;
		f.flags = (first ? MPQ_FRAME_FIRST : 0) |
			  (off + chunk == total ? MPQ_FRAME_LAST : 0);
		if (first) {
			memcpy(&w, &f, sizeof(w));
			mpq_ring_poke(p, r, pos + sizeof(f), &total,
				      sizeof(total));
		} else {
			mpq_ring_poke(p, r, pos, &f, sizeof(f));
		}
		if (mpq_ring_from_iter(p, r, pos + hdr, chunk, from) != chunk)
			return -EFAULT;
		off += chunk;
		pos += hdr + ALIGN(chunk, 8);
	}
	WRITE_ONCE(*mpq_ring_word(p, r, pos), 0);
	smp_store_release(mpq_ring_word(p, r, tail), w);  /* pairs: reader */
	smp_store_release(&ring->tail, pos);
	mpq_count(&p->obj, MPQ_CNT_WRITES);
	mpq_ring_moved(p, r, MPQ_POLL_IN, !e->idx);
	return total;
}

static long mpq_pipe_wake(struct mpq_end *e, unsigned long arg)
{
	struct mpq_pipe *p = e->pipe;
	__poll_t key = 0;

	if (arg & ~(unsigned long)MPQ_POLL_ALL)
		return -EINVAL;
	/* Clear before waking: a poller re-arming after this is not lost. */
	if (arg & MPQ_POLL_IN) {
		atomic_andnot(MPQ_POLL_IN,
			      (atomic_t *)&p->shm->ring[e->idx].wanted);
		key |= EPOLLIN | EPOLLRDNORM;
	}
	if (arg & MPQ_POLL_OUT) {
		atomic_andnot(MPQ_POLL_OUT,
			      (atomic_t *)&p->shm->ring[!e->idx].wanted);
		key |= EPOLLOUT | EPOLLWRNORM;
	}
	if (key)
		mpq_pipe_wake_up(p, !e->idx, key);
	return 0;
}

static long mpq_pipe_info(struct mpq_end *e, void __user *uarg)
{
	struct mpq_pipe *p = e->pipe;
	struct mpq_pipe_info info = {
		.size		= sizeof(info),
		.flags		= p->flags & MPQ_PIPE_DUPLEX,
		.ring_size	= p->ring_size,
		.end		= e->idx,
		.data_off	= { p->data_off[0], p->data_off[1] },
		.map_size	= p->map_size,
		.id		= p->obj.id,
	};

	return mpq_info_to_user(uarg, &info, sizeof(info), MPQ_PIPE_INFO_SIZE_VER0);
}

static long mpq_pipe_ioctl(struct file *file, unsigned int cmd,
			   unsigned long arg)
{
	struct mpq_end *e = file->private_data;

	switch (cmd) {
	case MPQ_IOC_PIPE_WAKE:
		return mpq_pipe_wake(e, arg);
	case MPQ_IOC_PIPE_INFO:
		return mpq_pipe_info(e, (void __user *)arg);
	default:
		return -ENOTTY;
	}
}

static int mpq_pipe_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct mpq_end *e = file->private_data;

	return mpq_region_mmap(&e->pipe->region, &e->ref, vma);
}

static int mpq_pipe_flush(struct file *file, fl_owner_t id)
{
	struct mpq_end *e = file->private_data;

	mpq_object_flush(&e->pipe->obj);
	return 0;
}

static int mpq_pipe_release(struct inode *inode, struct file *file)
{
	struct mpq_end *e = file->private_data;
	struct mpq_pipe *p = e->pipe;

	WRITE_ONCE(p->closed[e->idx], true);
	WRITE_ONCE(p->shm->closed[e->idx], 1);
	smp_mb();	/* the flag before the wake-up: pairs with libmpq's check */
	mpq_object_hangup(&p->obj, e->idx);
	mpq_pipe_wake_up(p, !e->idx, EPOLLHUP | EPOLLERR | EPOLLIN | EPOLLOUT);
	kref_put(&p->ref, mpq_pipe_free);
	return 0;
}

static const struct file_operations mpq_pipe_fops = {
	.owner		= THIS_MODULE,
	.flush		= mpq_pipe_flush,
	.release	= mpq_pipe_release,
	.poll		= mpq_pipe_poll,
	.read_iter	= mpq_pipe_read_iter,
	.write_iter	= mpq_pipe_write_iter,
	.unlocked_ioctl	= mpq_pipe_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
	.mmap		= mpq_pipe_mmap,
	.llseek		= noop_llseek,
};

static struct mpq_pipe *mpq_pipe_of(struct mpq_object *obj)
{
	return container_of(obj, struct mpq_pipe, obj);
}

/* Bytes waiting in one ring, clamped: both positions are anyone's. */
static u64 mpq_ring_used(struct mpq_pipe *p, unsigned int r)
{
	s64 used = READ_ONCE(p->shm->ring[r].tail) -
		   READ_ONCE(p->shm->ring[r].head);

	/* Negative for a moment: a frame is taken before tail moves. */
	return clamp_t(s64, used, 0, p->ring_size);
}

/* Bytes waiting in both directions (a one-way pipe uses ring 1 only). */
static u64 mpq_pipe_depth(struct mpq_object *obj)
{
	struct mpq_pipe *p = mpq_pipe_of(obj);

	return mpq_ring_used(p, 0) + mpq_ring_used(p, 1);
}

static u64 mpq_pipe_capacity(struct mpq_object *obj)
{
	return 2 * (u64)mpq_pipe_of(obj)->ring_size;
}

static unsigned int mpq_pipe_waiters(struct mpq_object *obj)
{
	struct mpq_pipe *p = mpq_pipe_of(obj);

	return mpq_wq_waiters(&p->wq[0]) + mpq_wq_waiters(&p->wq[1]);
}

/*
 * A participant died. Its ends hang up only once every holder is gone;
 * until then, let whoever sleeps on either end look again.
 */
static void mpq_pipe_participant_exit(struct mpq_object *obj, pid_t pid)
{
	struct mpq_pipe *p = mpq_pipe_of(obj);
	__poll_t all = EPOLLIN | EPOLLRDNORM | EPOLLOUT | EPOLLWRNORM;
	int i;

	for (i = 0; i < 2; i++) {
		mpq_object_woke(obj, &p->wq[i], all);
		__wake_up(&p->wq[i], TASK_NORMAL, 0, poll_to_key(all));
	}
}

static const struct mpq_object_ops mpq_pipe_ops = {
	.name			= "pipe",
	.type			= MPQ_OBJ_PIPE,
	.depth			= mpq_pipe_depth,
	.capacity		= mpq_pipe_capacity,
	.waiters		= mpq_pipe_waiters,
	.participant_exit	= mpq_pipe_participant_exit,
};

static int mpq_pipe_geometry(struct mpq_pipe *p,
			     const struct mpq_pipe_create *args)
{
	u64 total;

	if (args->flags & ~MPQ_PIPE_FLAGS || args->__pad)
		return -EINVAL;
	if (memchr_inv(args->reserved, 0, sizeof(args->reserved)))
		return -EINVAL;
	if (args->ring_size < MPQ_PIPE_RING_MIN ||
	    !is_power_of_2(args->ring_size))
		return -EINVAL;
	if (args->ring_size > MPQ_PIPE_RING_MAX)
		return -E2BIG;
	/*
	 * The header page, then the two rings. With pages larger than the
	 * smallest ring (16K, 64K), the rings end inside a page: the object
	 * is rounded up to whole pages, so that the kernel's mapping and
	 * every process's cover the whole layout.
	 */
	BUILD_BUG_ON(sizeof(struct mpq_pipe_shm) > PAGE_SIZE);
	/* Both boxes in one line of their own (struct mpq_pipe_box). */
	BUILD_BUG_ON(offsetof(struct mpq_pipe_shm, box) % 64 ||
		     sizeof(((struct mpq_pipe_shm *)0)->box) != 64);
	BUILD_BUG_ON(PAGE_ALIGN(PAGE_SIZE + 2 * (u64)MPQ_PIPE_RING_MAX) > SZ_1G);
	p->flags = args->flags;
	p->ring_size = args->ring_size;
	p->data_off[0] = PAGE_SIZE;
	p->data_off[1] = PAGE_SIZE + (u64)args->ring_size;
	total = PAGE_ALIGN(p->data_off[1] + args->ring_size);
	if (total > mpq_max_object_bytes)
		return -E2BIG;
	p->map_size = total;
	return 0;
}

static void mpq_pipe_format(struct mpq_pipe *p)
{
	struct mpq_pipe_shm *shm = p->region.kaddr;

	p->shm = shm;
	shm->magic = MPQ_PIPE_MAGIC;
	shm->version = MPQ_PIPE_VERSION;
	shm->flags = p->flags & MPQ_PIPE_DUPLEX;
	shm->ring_size = p->ring_size;
	shm->data_off[0] = p->data_off[0];
	shm->data_off[1] = p->data_off[1];
	shm->map_size = p->map_size;
}

/**
 * mpq_pipe_create() - MPQ_IOC_PIPE_CREATE: make a pipe, return its two ends
 * @uarg:	user pointer to struct mpq_pipe_create
 *
 * Return: 0 with fds[] filled in, or -EFAULT, -EINVAL (bad size, flags,
 * reserved fields, ring size), -E2BIG, -EDQUOT (over the caller's budget:
 * user.c), -ENOMEM, -EMFILE.
 */
long mpq_pipe_create(void __user *uarg)
{
	struct mpq_pipe_create args;
	struct mpq_pipe_create __user *u = uarg;
	struct file *files[2] = { NULL, NULL };
	int fds[2] = { -1, -1 };
	struct mpq_pipe *p;
	int ret, i;

	ret = mpq_args_from_user(&args, sizeof(args), uarg,
				 MPQ_PIPE_CREATE_SIZE_VER0);
	if (ret)
		return ret;

	p = kzalloc(sizeof(*p), GFP_KERNEL_ACCOUNT);
	if (!p)
		return -ENOMEM;
	ret = mpq_pipe_geometry(p, &args);
	if (ret)
		goto err_free;
	ret = mpq_region_init(&p->region, "mpq-pipe", p->map_size);
	if (ret)
		goto err_free;
	mpq_pipe_format(p);
	kref_init(&p->ref);	/* ours, until both ends exist */
	mpq_object_init(&p->obj, &mpq_pipe_ops, p->map_size);
	for (i = 0; i < 2; i++) {
		p->end[i].pipe = p;
		p->end[i].idx = i;
		p->end[i].ref.region = &p->region;
		p->end[i].ref.obj = &p->obj;
		init_waitqueue_head(&p->wq[i]);
	}
	/* Listed from here; the last kref_put takes it out again. */
	mpq_object_add(&p->obj);
	for (i = 0; i < 2; i++) {
		fds[i] = get_unused_fd_flags(O_RDWR |
			(args.flags & MPQ_CREATE_CLOEXEC ? O_CLOEXEC : 0));
		if (fds[i] < 0) {
			ret = fds[i];
			goto err_files;
		}
		files[i] = anon_inode_getfile("[mpq-pipe]", &mpq_pipe_fops,
					      &p->end[i], O_RDWR);
		if (IS_ERR(files[i])) {
			ret = PTR_ERR(files[i]);
			files[i] = NULL;
			goto err_files;
		}
		/* io_uring may try read and write without blocking first. */
		files[i]->f_mode |= FMODE_NOWAIT;
		kref_get(&p->ref);
	}
	if (put_user(fds[0], &u->fds[0]) || put_user(fds[1], &u->fds[1])) {
		ret = -EFAULT;
		goto err_files;
	}
	/* Nothing can fail from here: the fds become visible. */
	for (i = 0; i < 2; i++)
		fd_install(fds[i], files[i]);
	kref_put(&p->ref, mpq_pipe_free);
	return 0;

err_files:
	for (i = 0; i < 2; i++) {
		if (files[i])
			fput(files[i]);	/* its release drops its reference */
		if (fds[i] >= 0)
			put_unused_fd(fds[i]);
	}
	kref_put(&p->ref, mpq_pipe_free);
	return ret;

err_free:
	kfree(p);
	return ret;
}
