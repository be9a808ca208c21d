// SPDX-License-Identifier: MIT
/*
 * mpq_conn: Python's multiprocessing.Pipe and Connection, over shared
 * memory instead of a kernel pipe.
 *
 * A pipe is one shared region with a byte ring per direction (struct
 * mpq_pipe_shm in <linux/mpq.h>); ring i is written through end i. Each
 * ring has one writer and one reader, so positions move with plain
 * release stores. A message travels as frames: an 8-byte header (length,
 * FIRST/LAST flags), on the first frame the message's total length, then
 * the data padded to 8 bytes. A message larger than a frame may be is
 * streamed through the ring while the reader copies it out, so any size
 * that fits in memory goes through, copied once on each side. A frame is
 * published by its header, stored last (see struct mpq_frame): the reader
 * waits on the line where the next frame begins, not on tail.
 *
 * In a duplex pipe, a message of up to MPQ_PIPE_BOX_MAX bytes sent while
 * the ring is empty, and its answer sent likewise, go through the pipe's
 * box line instead (struct mpq_pipe_box): both directions in one line,
 * written only by sends, so a round trip moves one line back and forth,
 * as the spin floor does, not a line each way (bench/README.md). A writer
 * that only streams does not look for an empty ring (it would read the
 * reader's line each time) and so keeps to the ring.
 *
 * Hang-up is what the kernel knows and we cannot: that every holder of the
 * other end is gone, by close or by death.
 *  - kmod: each end is its own fd from /dev/mpq; the module marks an end
 *    closed when its last fd and mapping are gone and wakes the pollers of
 *    the other end. Sleepers sleep in poll() on their end's fd, which is
 *    also what fileno() hands out.
 *  - memfd: each end holds one side of an AF_UNIX socketpair, which the
 *    kernel closes with the end's last holder; the other side then polls
 *    readable with EOF. Sleepers sleep in poll() on an eventfd doorbell
 *    plus that socket.
 * Either way a reader gets every message completed before the hang-up,
 * then -EPIPE; a message cut short by it is dropped, never delivered.
 *
 * Timeouts bound the whole call. A send waits for room for all of a
 * message that fits in the ring before any of it is visible, so a timeout
 * withdraws it whole. A larger one streams; if its send times out with
 * part of it out, the rest can never follow: the end shuts its ring for
 * good (shut[] in <linux/mpq.h>, and an MPQ_FRAME_ABORT frame once there is
 * room), the receiver gets -ECONNABORTED for the cut message and -EPIPE
 * after it, and further sends are -EPIPE. A receive that times out in the
 * middle of a message keeps what it took (in the connection), and the
 * next receive goes on with the same message.
 *
 * Wake-ups follow the queue's rule: a sleeper announces itself (a bit in
 * its ring's "wanted" word, set by the kernel's ->poll() or by the sleeper)
 * before its last look; a writer or reader that moved a position issues a
 * full fence and only then reads "wanted", and makes a system call only if
 * someone asked for one.
 */
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

#define MPQ_PIPE_DEFAULT_RING	(256 * 1024)
#define MPQ_CONN_SPIN_NS	50000
/* memfd only: the reading end's fd is polled by the user (see fileno). */
#define MPQ_POLL_EXTERN		(1U << 8)

/* Both boxes in one line of their own (struct mpq_pipe_box). */
_Static_assert(offsetof(struct mpq_pipe_shm, box) % 64 == 0 &&
	       sizeof(((struct mpq_pipe_shm *)0)->box) == 64, "box line");

struct mpq_conn {
	struct mpq_pipe_shm *shm;
	struct mpq_ring *rx, *tx;	/* NULL where this end cannot go */
	struct mpq_pipe_box *rx_box, *tx_box;	/* beside rx and tx */
	int tx_boxed;			/* our last send went in the box */
	unsigned char *rx_data, *tx_data;
	uint64_t size;			/* of each ring; a power of two */
	uint64_t tx_head;		/* the reader's head as last seen: the
					   writer reads the line again only
					   when this says the ring is full */
	uint64_t max_frame;		/* data bytes in one frame */
	uint64_t map_size;
	int end;
	int backend;
	int closed;
	int fd;				/* kmod: the end; memfd: the memfd */
	int sock;			/* memfd: this end of the socketpair */
	int bell_rx, bell_tx;		/* memfd: data doorbell of rx, space of tx */
	int bell_rx_space, bell_tx_data;/* memfd: the doorbells we ring */
	int epfd;			/* memfd: fileno(), made on demand */
	int64_t spin_ns;
	/*
	 * A message that a timed-out receive took part of: its length, the
	 * bytes taken, and those bytes (a buffer of rx_total); rx_part NULL
	 * when they could not be kept: the rest of it is skipped.
	 */
	int rx_mid;
	uint64_t rx_total, rx_off;
	unsigned char *rx_part;
	/*
	 * Not NULL: a connection over a stream socket in Python's framing
	 * (conn_stream.c, mpq_conn_from_fd()); none of the above is used.
	 * Each call tests it once on entry, a branch the shared-memory path
	 * predicts and otherwise never sees.
	 */
	struct mpq_stream *stream;
};

/* shut[] of an end's ring: its ABORT frame is still to be written, or is. */
#define CONN_SHUT_PENDING	1U
#define CONN_SHUT_DONE		2U

static uint64_t align8(uint64_t x)
{
	return (x + 7) & ~(uint64_t)7;
}

/*
 * Positions of headers are 8-byte aligned and the ring a power of two of
 * at least 4096 bytes, so an 8-byte header never wraps: it is one store.
 */
static void *ring_at(unsigned char *data, uint64_t size, uint64_t pos)
{
	return data + (pos & (size - 1));
}

/*
 * The word at pos. Positions of words are 8-byte aligned by the rules;
 * one that a scribbler made odd still reads inside the ring (the last
 * ring ends the mapping), so the low bits go.
 */
static uint64_t *ring_word(unsigned char *data, uint64_t size, uint64_t pos)
{
	return ring_at(data, size, pos & ~(uint64_t)7);
}

/* A frame's header as the one word that publishes it; never 0. */
static uint64_t frame_word(uint32_t len, uint32_t flags)
{
	struct mpq_frame f = { .len = len, .flags = flags };
	uint64_t w;

	memcpy(&w, &f, sizeof(w));
	return w;
}

static struct mpq_frame word_frame(uint64_t w)
{
	struct mpq_frame f;

	memcpy(&f, &w, sizeof(f));
	return f;
}

/* Ring bytes of a frame: header, the total on a first one, padded data. */
static uint64_t frame_bytes(struct mpq_frame f)
{
	return sizeof(f) + (f.flags & MPQ_FRAME_FIRST ? sizeof(uint64_t) : 0) +
	       align8(f.len);
}

/*
 * Publish the frame whose body is written at pos: zero the word after it
 * (where the reader looks next), then the header, then tail. A writer
 * killed before the header sent nothing; between header and tail, the
 * next writer moves tail on (conn_tx_heal()).
 */
static void conn_publish(struct mpq_conn *c, uint64_t pos, uint64_t bytes,
			 uint64_t w)
{
	__atomic_store_n(&c->tx->tail_next, pos + bytes, __ATOMIC_RELAXED);
	__atomic_store_n(ring_word(c->tx_data, c->size, pos + bytes), 0,
			 __ATOMIC_RELAXED);
	/* Pairs with the acquire of the header in conn_ready(). */
	store_release(ring_word(c->tx_data, c->size, pos), w);
	store_release(&c->tx->tail, pos + bytes);
}

/*
 * Inline everywhere: once the lean paths called them too, gcc made
 * ring_write() and ring_read() functions of their own, and the general
 * paths called out to them. Under QEMU's TCG, where the module's
 * benchmarks run, that alone took the one-way 8 B stream to 0.6x
 * (bench/README.md); on the host no row moved either way.
 */
static inline __attribute__((always_inline))
void ring_write(struct mpq_conn *c, uint64_t pos, const void *src, size_t n)
{
	uint64_t off = pos & (c->size - 1), first = c->size - off;

	if (n <= first) {
		mpq_copy(c->tx_data + off, src, n);
	} else {
		memcpy(c->tx_data + off, src, first);
		memcpy(c->tx_data, (const unsigned char *)src + first, n - first);
	}
}

static inline __attribute__((always_inline))
void ring_read(struct mpq_conn *c, uint64_t pos, void *dst, size_t n)
{
	uint64_t off = pos & (c->size - 1), first = c->size - off;

	if (n <= first) {
		mpq_copy(dst, c->rx_data + off, n);
	} else {
		memcpy(dst, c->rx_data + off, first);
		memcpy((unsigned char *)dst + first, c->rx_data, n - first);
	}
}

static void bell_ring(int fd)
{
	uint64_t one = 1;

	if (write(fd, &one, sizeof(one)) < 0) {
		/* Only EAGAIN at a count of 2^64-2: it is rung already. */
	}
}

static int bell_drain(int fd)
{
	uint64_t v;

	return read(fd, &v, sizeof(v)) == sizeof(v);
}

/*
 * After moving a position in ring r, wake whoever asked: bit MPQ_POLL_IN
 * is the reader of r, MPQ_POLL_OUT its writer. The fence orders our
 * position store before the read of wanted; it pairs with the fence after
 * setting a wanted bit (the kernel's ->poll() or conn_wait() below).
 * old_tail: for a publish, where it started: memfd's external pollers are
 * told when data goes into an empty ring (the reader's head was there).
 */
static void conn_notify(struct mpq_conn *c, struct mpq_ring *r, uint32_t bit,
			uint64_t old_tail)
{
	uint32_t w;

	full_fence();
	w = load_relaxed(&r->wanted);
	if (likely(!(w & bit)) &&
	    !(bit == MPQ_POLL_IN && (w & MPQ_POLL_EXTERN) &&
	      load_acquire(&r->head) == old_tail))
		return;
	if (c->backend == MPQ_BACKEND_KMOD) {
		ioctl(c->fd, MPQ_IOC_PIPE_WAKE, (unsigned long)bit);
		return;
	}
	if (w & bit)
		__atomic_fetch_and(&r->wanted, ~bit, __ATOMIC_SEQ_CST);
	bell_ring(bit == MPQ_POLL_IN ? c->bell_tx_data : c->bell_rx_space);
}

/* Is the other end gone? Known for sure only from the kernel. */
static int conn_peer_gone(struct mpq_conn *c)
{
	struct pollfd p = { .fd = c->sock, .events = POLLIN };

	if (load_acquire(&c->shm->closed[!c->end]))
		return 1;
	if (c->backend == MPQ_BACKEND_KMOD)
		return 0;
	/* The peer never writes to the socket: readable means EOF. */
	return poll(&p, 1, 0) == 1;
}

/* The word at rx's head: a frame's header once one is published there. */
static const uint64_t *conn_rx_next(struct mpq_conn *c)
{
	return ring_word(c->rx_data, c->size, load_relaxed(&c->rx->head));
}

/*
 * Does a message wait in rx's box (its seq is not the one we took last)?
 * Acquire: its data and len are there.
 */
static inline int conn_box_full(const struct mpq_conn *c)
{
	return load_acquire(&c->rx_box->seq) !=
	       load_relaxed(&c->rx->box_taken);
}

/*
 * in: is a frame published at head, or a message in the box? !in: are
 * need bytes free in tx, and the word after them (see conn_publish())?
 */
static int conn_ready(struct mpq_conn *c, int in, uint64_t need)
{
	uint64_t tail;

	if (in)
		return load_acquire(conn_rx_next(c)) != 0 || conn_box_full(c);
	need += sizeof(uint64_t);
	/*
	 * Room by the head we saw last? Head only grows, so a stale copy
	 * errs on the side of "full"; only then is the reader's line read.
	 */
	tail = load_relaxed(&c->tx->tail);
	if (tail - c->tx_head <= c->size - need)
		return 1;
	c->tx_head = load_acquire(&c->tx->head);
	return tail - c->tx_head <= c->size - need;
}

/* Has the writer of rx shut it (see shut[] in <linux/mpq.h>)? */
static int conn_rx_shut(struct mpq_conn *c)
{
	return load_acquire(&c->shm->shut[!c->end]) != 0;
}

/*
 * Not ready: is it for good? -ESHUTDOWN (in: the writer shut rx and all
 * it wrote is taken), -EPIPE (the other end is gone), 0 (ready after all)
 * or 1 (worth waiting). The acquire of shut comes before the last look
 * at the ring: all that was written before the shut is seen.
 */
static int conn_final(struct mpq_conn *c, int in, uint64_t need)
{
	if (in && conn_rx_shut(c))
		return conn_ready(c, in, need) ? 0 : -ESHUTDOWN;
	if (conn_peer_gone(c))
		return conn_ready(c, in, need) ? 0 : -EPIPE;
	return 1;
}

/*
 * Wait until rx holds a frame (in) or tx has need bytes free (!in).
 * Returns 0, -EPIPE (the other end is gone; for in, once rx is empty),
 * -ESHUTDOWN (in: rx is empty and its writer shut it), -EAGAIN (the
 * deadline is passed already), -ETIMEDOUT, -EINTR never (retried).
 * *drained tells a memfd reader that it took the doorbell.
 */
static int conn_wait(struct mpq_conn *c, int in, uint64_t need,
		     int64_t deadline, int *drained)
{
	struct mpq_ring *r = in ? c->rx : c->tx;
	uint32_t bit = in ? MPQ_POLL_IN : MPQ_POLL_OUT;
	int64_t start, spun;
	unsigned int i;
	int ret, timed;

	if (likely(conn_ready(c, in, need)))
		return 0;
	/* After the first looks, the clock starts a pass later (queue.c). */
	timed = !(in && deadline < 0 && mpq_looked());
	start = timed ? mpq_now_ns() : 0;
	if (deadline == 0 || (deadline > 0 && deadline <= start)) {
		ret = conn_final(c, in, need);
		if (ret <= 0)
			return ret;
		if (in && c->backend == MPQ_BACKEND_MEMFD &&
		    bell_drain(c->bell_rx)) {
			/* A stale doorbell: see mpq_conn_fileno(). */
			*drained = 1;
			if (conn_ready(c, in, need))
				return 0;
		}
		return -EAGAIN;
	}

	/*
	 * Spin while the other side is likely to answer soon: see queue.c.
	 * A reader loads one line, the one the next frame's header lands in.
	 */
	for (spun = 0; c->spin_ns > 0 && spun < c->spin_ns;) {
		for (i = 0; i < 64; i++) {
			cpu_relax();
			if (conn_ready(c, in, need))
				return 0;
		}
		if (load_relaxed(&c->shm->closed[!c->end]) ||
		    (in && load_relaxed(&c->shm->shut[!c->end])))
			break;
		if (!timed) {
			start = mpq_now_ns();
			timed = 1;
			continue;
		}
		spun = mpq_now_ns() - start;
		if (spun > 500)
			sched_yield();
	}

	for (;;) {
		struct pollfd p[2];
		int64_t left = -1;
		struct timespec ts, *tsp = NULL;
		int n;

		/* After the fence that followed our last move of head. */
		if (in && conn_rx_shut(c))
			return conn_ready(c, in, need) ? 0 : -ESHUTDOWN;
		if (deadline >= 0) {
			left = deadline - mpq_now_ns();
			if (left <= 0)
				return conn_ready(c, in, need) ? 0 : -ETIMEDOUT;
			ts.tv_sec = left / 1000000000;
			ts.tv_nsec = left % 1000000000;
			tsp = &ts;
		}
		if (c->backend == MPQ_BACKEND_KMOD) {
			/* ->poll() sets our wanted bit, then looks. */
			p[0].fd = c->fd;
			p[0].events = in ? POLLIN : POLLOUT;
			n = ppoll(p, 1, tsp, NULL);
		} else {
			__atomic_fetch_or(&r->wanted, bit, __ATOMIC_SEQ_CST);
			if (conn_ready(c, in, need))
				return 0;
			p[0].fd = in ? c->bell_rx : c->bell_tx;
			p[0].events = POLLIN;
			p[1].fd = c->sock;
			p[1].events = POLLIN;
			n = ppoll(p, 2, tsp, NULL);
			if (n > 0 && p[0].revents & POLLIN && bell_drain(p[0].fd))
				*drained |= in;
		}
		if (conn_ready(c, in, need))
			return 0;
		if (n < 0 && errno != EINTR)
			return -errno;
		if (conn_peer_gone(c))
			return conn_ready(c, in, need) ? 0 : -EPIPE;
	}
}

static int conn_check(struct mpq_conn *c)
{
	if (!c)
		return -EINVAL;
	if (c->closed)
		return -EBADF;
	return 0;
}

/*
 * Bytes of ring a message of len bytes takes, in frames (see the send
 * loop), or UINT64_MAX if that is more than the ring.
 */
static uint64_t conn_frames_size(struct mpq_conn *c, uint64_t len)
{
	uint64_t full = len / c->max_frame, rest = len % c->max_frame;

	if (len >= c->size)
		return UINT64_MAX;
	return sizeof(uint64_t) + full * (sizeof(struct mpq_frame) + c->max_frame) +
	       (rest || !len ? sizeof(struct mpq_frame) + align8(rest) : 0);
}

/*
 * End this end's cut message with an MPQ_FRAME_ABORT frame, if that is
 * still to do and there is room; it stays in the ring for good, the end
 * of file of a shut ring that poll() and the module see as data.
 */
static void conn_tx_abort_frame(struct mpq_conn *c)
{
	uint64_t pos;

	if (load_relaxed(&c->shm->shut[c->end]) != CONN_SHUT_PENDING ||
	    !conn_ready(c, 0, sizeof(struct mpq_frame)))
		return;
	pos = c->tx->tail;
	conn_publish(c, pos, sizeof(struct mpq_frame),
		     frame_word(0, MPQ_FRAME_ABORT));
	store_release(&c->shm->shut[c->end], CONN_SHUT_DONE);
	conn_notify(c, c->tx, MPQ_POLL_IN, pos);
}

/*
 * A send gave up with part of its message out: the rest can never follow,
 * and nothing may follow it, so this end's ring is shut for good. A
 * reader that took everything and sleeps would never learn it from the
 * flag alone (with the module it sleeps in poll(), which sees only the
 * ring), so the ABORT frame wakes it; if the ring is full, the reader is
 * not asleep and sees the flag when it has emptied the ring: the flag is
 * stored, then the fence, then the look at head, as the reader moves
 * head, fences (conn_notify), then looks at the flag (conn_wait).
 */
static void conn_tx_shut(struct mpq_conn *c)
{
	store_release(&c->shm->shut[c->end], CONN_SHUT_PENDING);
	full_fence();
	conn_tx_abort_frame(c);
}

/*
 * Frames published at tail without tail moved past them: their writer,
 * another holder of this end, died between the stores of
 * conn_publish(). They were sent (the reader may have taken them): move
 * tail past them before writing. Only when tail_next says a writer
 * began to publish and did not finish (or the module wrote last) is the
 * word at tail read: it sits in the line the reader spins on, and
 * reading it on every send cost 20-30 ns of the round trip (the line
 * comes over to be read, then again to be written). -EUCLEAN if what
 * lies there is no frame a writer could have left.
 */
static int conn_tx_heal(struct mpq_conn *c)
{
	uint64_t tail = c->tx->tail, pos = tail, w;
	struct mpq_frame f;

	if (likely(load_relaxed(&c->tx->tail_next) == tail))
		return 0;
	while ((w = load_relaxed(ring_word(c->tx_data, c->size, pos)))) {
		f = word_frame(w);
		if (f.flags & ~(MPQ_FRAME_FIRST | MPQ_FRAME_LAST) ||
		    f.len > c->max_frame)
			return -EUCLEAN;
		pos += frame_bytes(f);
		if (pos - tail > c->size)
			return -EUCLEAN;
	}
	__atomic_store_n(&c->tx->tail_next, pos, __ATOMIC_RELAXED);
	if (pos != tail)
		store_release(&c->tx->tail, pos);
	return 0;
}

/*
 * A send goes in the ring: tell the other end which of its box messages
 * we took (ack, struct mpq_pipe_box), if that changed; a box send says it
 * with the message.
 */
static inline __attribute__((always_inline))
void conn_to_ring(struct mpq_conn *c)
{
	uint32_t taken;

	c->tx_boxed = 0;
	if (!c->tx_box)
		return;
	taken = load_relaxed(&c->rx->box_taken);
	if (load_relaxed(&c->tx_box->ack) != taken)
		__atomic_store_n(&c->tx_box->ack, taken, __ATOMIC_RELAXED);
}

/*
 * Put a message of len bytes in tx's box, if it may go there now: a
 * duplex pipe, it fits, the other end took what we put there before, and
 * the ring is empty (struct mpq_pipe_box). The ring is empty when tail is
 * where we last saw the reader's head; only an answer (answering: this
 * thread received last, so the other side likely waits) reads head again
 * to find out. 1 when sent, 0: the ring takes it. The caller checked
 * closed, shut and that nothing is left to heal.
 */
static inline __attribute__((always_inline))
int conn_box_send(struct mpq_conn *c, const void *buf, size_t len,
		  int answering)
{
	struct mpq_pipe_box *b = c->tx_box;
	uint64_t tail;
	uint32_t seq;

	if (!b || len > MPQ_PIPE_BOX_MAX)
		return 0;
	seq = load_relaxed(&b->seq);
	/* Acquire: the other end's copy of our last one is done. */
	if (load_acquire(&c->rx_box->ack) != seq)
		return 0;
	tail = load_relaxed(&c->tx->tail);
	if (tail != c->tx_head) {
		if (!answering)
			return 0;
		c->tx_head = load_acquire(&c->tx->head);
		if (tail != c->tx_head)
			return 0;
	}
	__atomic_store_n(&b->len, (uint32_t)len, __ATOMIC_RELAXED);
	mpq_copy(b->data, buf, len);
	__atomic_store_n(&b->ack, load_relaxed(&c->rx->box_taken),
			 __ATOMIC_RELAXED);
	/* Pairs with the acquire of seq in conn_box_full(). */
	store_release(&b->seq, seq + 1);
	c->tx_boxed = 1;
	/* The ring stays empty, head at tail: external pollers are told. */
	conn_notify(c, c->tx, MPQ_POLL_IN, tail);
	return 1;
}

/*
 * A send that answers (see mpq_first_looks()), inline and without the
 * loop: a message that fits one frame, room for it now, nothing to heal,
 * neither end gone or shut. 1 when sent; 0: the general path decides (it
 * waits, heals, fails).
 */
static inline __attribute__((always_inline))
int conn_send1(struct mpq_conn *c, const void *buf, size_t len)
{
	uint64_t tail, need, data, line_end, in_line;

	if (unlikely(len > c->max_frame))
		return 0;
	tail = load_relaxed(&c->tx->tail);
	need = sizeof(struct mpq_frame) + sizeof(uint64_t) + align8(len);
	if (unlikely(load_relaxed(&c->tx->tail_next) != tail ||
		     load_relaxed(&c->shm->closed[!c->end]) ||
		     load_relaxed(&c->shm->shut[c->end])))
		return 0;
	if (conn_box_send(c, buf, len, 1))
		return 1;
	if (unlikely(!conn_ready(c, 0, need)))
		return 0;
	conn_to_ring(c);
	/*
	 * The header's cache line last: the one waiting for this answer
	 * looks at that line, and takes it back each time it looks, so what
	 * goes there is written in one go, just before the header. The rest
	 * of a larger message first (1 KiB round trip p50 221-231 ns before
	 * the first looks, 231-250 with them, 210-220 with this order).
	 */
	data = tail + sizeof(struct mpq_frame) + sizeof(uint64_t);
	line_end = (tail | 63) + 1;
	in_line = data < line_end && len > line_end - data ?
		  line_end - data : 0;
	if (in_line)
		ring_write(c, data + in_line,
			   (const unsigned char *)buf + in_line, len - in_line);
	ring_write(c, data, buf, in_line ? in_line : len);
	*ring_word(c->tx_data, c->size, tail + sizeof(struct mpq_frame)) = len;
	conn_publish(c, tail, need,
		     frame_word((uint32_t)len, MPQ_FRAME_FIRST | MPQ_FRAME_LAST));
	conn_notify(c, c->tx, MPQ_POLL_IN, tail);
	return 1;
}

MPQ_EXPORT int mpq_conn_send_bytes(struct mpq_conn *c, const void *buf,
				   size_t len, int64_t timeout_ns)
{
	int64_t deadline = mpq_deadline(timeout_ns);
	const unsigned char *p = buf;
	uint64_t total = len, off = 0, all;
	int first = 1, drained = 0, ret;

	/*
	 * Only an answer (this thread received last) takes the lean way: a
	 * writer that only sends keeps the general path, because one that
	 * filled the ring sooner waited at the reader's heels and the 8 B
	 * streams lost a third (bench/README.md, "Round trip: the first
	 * looks").
	 */
	if (likely(c && !c->closed && !c->stream && c->tx && buf) &&
	    mpq_answering() && conn_send1(c, buf, len)) {
		mpq_sent();
		return 0;
	}
	ret = conn_check(c);
	if (ret)
		return ret;
	if (unlikely(c->stream))
		return mpq__stream_send(c->stream, buf, len, timeout_ns);
	if (!c->tx)
		return -EBADF;		/* the receiving end of a one-way pipe */
	if (!buf && len)
		return -EINVAL;
	if (load_relaxed(&c->shm->closed[!c->end]))
		return -EPIPE;
	if (load_relaxed(&c->shm->shut[c->end])) {
		conn_tx_abort_frame(c);	/* if there was no room for it then */
		return -EPIPE;
	}
	ret = conn_tx_heal(c);
	if (ret)
		return ret;
	if (buf && conn_box_send(c, buf, len, mpq_answering())) {
		mpq_sent();
		return 0;
	}
	conn_to_ring(c);

	/*
	 * With a timeout, a message that fits in the ring goes whole or not
	 * at all: room for all of it first, so that no timeout can cut it.
	 * A larger one streams, and cannot go without waiting for the
	 * reader: a deadline already passed refuses it before it begins.
	 */
	if (deadline >= 0) {
		all = conn_frames_size(c, total);
		if (all <= c->size - sizeof(uint64_t)) {
			ret = conn_wait(c, 0, all, deadline, &drained);
			if (ret)
				return ret;
		} else if (mpq_now_ns() >= deadline) {
			return conn_peer_gone(c) ? -EPIPE : -EAGAIN;
		}
	}

	do {
		uint64_t chunk = total - off, hdr, need, pos;
		uint32_t flags;

		if (chunk > c->max_frame)
			chunk = c->max_frame;
		hdr = sizeof(struct mpq_frame) + (first ? sizeof(total) : 0);
		need = hdr + align8(chunk);
		/* The deadline bounds the whole message, not its first frame. */
		ret = conn_wait(c, 0, need, deadline, &drained);
		if (ret && first)
			return ret;	/* nothing of it is visible: withdrawn */
		if (ret) {
			conn_tx_shut(c);
			return ret == -EAGAIN ? -ETIMEDOUT : ret;
		}
		pos = c->tx->tail;
		flags = (first ? MPQ_FRAME_FIRST : 0) |
			(off + chunk == total ? MPQ_FRAME_LAST : 0);
		if (first)
			*ring_word(c->tx_data, c->size,
				   pos + sizeof(struct mpq_frame)) = total;
		if (chunk)
			ring_write(c, pos + hdr, p + off, chunk);
		conn_publish(c, pos, need, frame_word((uint32_t)chunk, flags));
		conn_notify(c, c->tx, MPQ_POLL_IN, pos);
		off += chunk;
		first = 0;
	} while (off < total);
	mpq_sent();
	return 0;
}

/*
 * Read the frame published at head (conn_ready() said there is one); 0,
 * -ESHUTDOWN (an ABORT frame: the message is cut, the ring shut), or
 * -EUCLEAN if it cannot be right. A frame holds at most a quarter of the
 * ring, so whatever its writer put there, it is read from inside the ring.
 */
static int conn_frame(struct mpq_conn *c, uint64_t head, struct mpq_frame *f,
		      uint64_t *total, int first)
{
	/* Pairs with the release of the header in conn_publish(). */
	uint64_t w = load_acquire(ring_word(c->rx_data, c->size, head));

	if (!w)
		return -EUCLEAN;
	*f = word_frame(w);
	if (f->flags == MPQ_FRAME_ABORT && !f->len)
		return -ESHUTDOWN;
	if (!!(f->flags & MPQ_FRAME_FIRST) != first ||
	    f->flags & ~(MPQ_FRAME_FIRST | MPQ_FRAME_LAST) ||
	    f->len > c->max_frame)
		return -EUCLEAN;
	if (first)
		*total = *ring_word(c->rx_data, c->size, head + sizeof(*f));
	return 0;
}

/* Leave the doorbell rung if we took it and data remains: see fileno. */
static void conn_recv_done(struct mpq_conn *c, int drained)
{
	if (drained && conn_ready(c, 1, 0))
		bell_ring(c->bell_rx);
}

/*
 * A receive timed out with off bytes of a message of total taken into
 * dst: keep them in the connection for the next receive. A buffer of
 * ours is kept as it is (and taken into from then on, so that receives
 * that keep timing out copy nothing twice); the caller's is copied.
 * Without the memory the bytes are lost: -ENOMEM, and the next receive
 * skips the rest of the message.
 */
static int conn_rx_keep(struct mpq_conn *c, unsigned char *dst,
			uint64_t total, uint64_t off, int ours)
{
	c->rx_mid = 1;
	c->rx_total = total;
	c->rx_off = off;
	c->rx_part = NULL;
	if (!dst)
		return 0;		/* skipping already */
	if (ours) {
		c->rx_part = dst;
		return 0;
	}
	c->rx_part = malloc(total ? total : 1);
	if (!c->rx_part)
		return -ENOMEM;
	memcpy(c->rx_part, dst, off);
	return 0;
}

/*
 * Take the message waiting in rx's box, into buf, or a buffer of ours at
 * *(void **)buf (alloc). 0; -EMSGSIZE (it stays: *len says how long it
 * is), -ENOMEM, or -EUCLEAN (a length no writer could have stored: it is
 * dropped, so that the pipe goes on). Taken means box_taken says its seq,
 * on our own line; the writer hears of it with our next send.
 */
static int conn_box_take(struct mpq_conn *c, void *buf, size_t *len,
			 int alloc)
{
	struct mpq_pipe_box *b = c->rx_box;
	uint32_t seq = load_acquire(&b->seq), n = load_relaxed(&b->len);
	void *dst = buf;

	if (n > MPQ_PIPE_BOX_MAX) {
		store_release(&c->rx->box_taken, seq);
		return -EUCLEAN;
	}
	if (n > *len) {
		*len = n;
		return -EMSGSIZE;
	}
	if (alloc) {
		dst = malloc(n ? n : 1);
		if (!dst)
			return -ENOMEM;
		*(void **)buf = dst;
	}
	mpq_copy(dst, b->data, n);
	/* The copy is done: our next send may say so (ack). */
	store_release(&c->rx->box_taken, seq);
	*len = n;
	return 0;
}

/*
 * The common receive, inline: a whole message in one frame at head that
 * fits buf. 1 when taken; 0: the general path decides (it waits, checks
 * and reports).
 */
static inline __attribute__((always_inline))
int conn_recv1(struct mpq_conn *c, void *buf, size_t *len)
{
	uint64_t head = load_relaxed(&c->rx->head), w, total;
	struct mpq_frame f;

	/* Pairs with the release of the header in conn_publish(). */
	w = load_acquire(ring_word(c->rx_data, c->size, head));
	/* The ring's word, then the box: see struct mpq_pipe_box. */
	if (conn_box_full(c)) {
		total = load_relaxed(&c->rx_box->len);
		if (total > MPQ_PIPE_BOX_MAX || total > *len)
			return 0;	/* the general path says why */
		return conn_box_take(c, buf, len, 0) == 0;
	}
	f = word_frame(w);
	if (f.flags != (MPQ_FRAME_FIRST | MPQ_FRAME_LAST) ||
	    f.len > c->max_frame || f.len > *len)
		return 0;
	total = *ring_word(c->rx_data, c->size, head + sizeof(f));
	if (total != f.len)
		return 0;
	ring_read(c, head + sizeof(f) + sizeof(total), buf, f.len);
	/* Pairs with the acquire of head in conn_ready(). */
	store_release(&c->rx->head,
		      head + sizeof(f) + sizeof(total) + align8(f.len));
	conn_notify(c, c->rx, MPQ_POLL_OUT, 0);
	*len = f.len;
	return 1;
}

/*
 * See mpq_first_looks(): the word where the next frame's header lands,
 * and the box if our message went there (its answer likely comes there
 * too). Only then: a second look in each pass made the pass longer, and
 * 256 B to 1 KiB answers, which come as the passes end, 7-15% later.
 * Returns whether it looked.
 */
static inline __attribute__((always_inline))
int conn_first_looks(struct mpq_conn *c, int64_t timeout_ns)
{
	const uint64_t *w;
	uint32_t taken;
	unsigned int i;

	if (!mpq_first_looks(c->spin_ns, timeout_ns))
		return 0;
	w = conn_rx_next(c);
	if (!c->tx_boxed) {
		for (i = 1; !load_acquire(w) && i < MPQ_FIRST_LOOKS; i++)
			cpu_relax();
		return 1;
	}
	taken = load_relaxed(&c->rx->box_taken);
	for (i = 1; !load_acquire(w) &&
	     load_relaxed(&c->rx_box->seq) == taken && i < MPQ_FIRST_LOOKS; i++)
		cpu_relax();
	return 1;
}

static int conn_recv(struct mpq_conn *c, void *buf, size_t *len,
		     int64_t timeout_ns, int alloc)
{
	int64_t deadline = mpq_deadline(timeout_ns);
	uint64_t head, hdr, total, off;
	unsigned char *dst;
	struct mpq_frame f;
	int drained = 0, ret, first, have, skip, ours;

	ret = conn_check(c);
	if (ret)
		return ret;
	if (unlikely(c->stream))
		return mpq__stream_recv(c->stream, buf, len, timeout_ns, alloc);
	if (!c->rx)
		return -EBADF;		/* the sending end of a one-way pipe */
	if (!len || (!buf && !alloc))
		return -EINVAL;

again:
	total = off = 0;
	skip = 0;
	ours = alloc;			/* dst is a buffer of ours */
	dst = alloc ? NULL : buf;
	if (c->rx_mid) {
		/* Go on with the message a timed-out receive left. */
		total = c->rx_total;
		off = c->rx_off;
		if (!c->rx_part) {
			skip = 1;	/* lost (-ENOMEM then): skip the rest */
		} else if (total > *len) {
			*len = total;	/* it stays, as a whole one would */
			ret = -EMSGSIZE;
			goto out;
		}
		/* Into the kept buffer; the caller's gets it when whole. */
		dst = c->rx_part;
		ours = 1;
		c->rx_part = NULL;
		c->rx_mid = 0;
		head = load_relaxed(&c->rx->head);
		first = have = 0;
	} else {
		ret = conn_wait(c, 1, 0, deadline, &drained);
		if (ret)
			goto out;
		head = c->rx->head;
		/* After the look at the ring: see struct mpq_pipe_box. */
		if (conn_box_full(c)) {
			ret = conn_box_take(c, buf, len, alloc);
			goto out;
		}
		ret = conn_frame(c, head, &f, &total, 1);
		if (ret)
			goto out;
		if (total > *len) {
			*len = total;	/* the message stays for a bigger buffer */
			ret = -EMSGSIZE;
			goto out;
		}
		if (alloc) {
			dst = malloc(total ? total : 1);
			if (!dst) {
				ret = -ENOMEM;
				goto out;
			}
		}
		first = have = 1;
	}
	if (skip)
		dst = NULL;

	for (;; first = have = 0) {
		if (!have) {
			/* The rest is on its way; the deadline still holds. */
			ret = conn_wait(c, 1, 0, deadline, &drained);
			if (!ret)
				ret = conn_frame(c, head, &f, &total, 0);
			if (ret)
				break;
		}
		hdr = sizeof(f) + (first ? sizeof(total) : 0);
		if (off + f.len > total) {
			ret = -EUCLEAN;
			break;
		}
		if (dst)
			ring_read(c, head + hdr, dst + off, f.len);
		off += f.len;
		head += hdr + align8(f.len);
		/* Pairs with the acquire of head in conn_ready(). */
		store_release(&c->rx->head, head);
		conn_notify(c, c->rx, MPQ_POLL_OUT, 0);	/* old_tail unused */
		if (f.flags & MPQ_FRAME_LAST) {
			ret = off == total ? 0 : -EUCLEAN;
			break;
		}
	}
	if (ret == -ETIMEDOUT || ret == -EAGAIN) {
		/* Part-way: what was taken stays for the next receive. */
		if (conn_rx_keep(c, dst, total, off, ours))
			ret = -ENOMEM;
		goto out;
	}
	/*
	 * The cut message of a shut ring is -ECONNABORTED, once, and never a
	 * part of it; one already reported lost ends as the end of file.
	 */
	if (ret == -ESHUTDOWN && !skip)
		ret = -ECONNABORTED;
	if (ret) {
		if (ours)
			free(dst);
		goto out;
	}
	if (skip)
		goto again;		/* the lost message is gone: the next */
	if (alloc) {
		*(void **)buf = dst;
	} else if (ours) {
		memcpy(buf, dst, total);
		free(dst);
	}
	*len = total;
out:
	if (ret == -ESHUTDOWN)
		ret = -EPIPE;		/* between messages: nothing more comes */
	if (c->backend == MPQ_BACKEND_MEMFD)
		conn_recv_done(c, drained);
	return ret;
}

MPQ_EXPORT int mpq_conn_recv_bytes_into(struct mpq_conn *c, void *buf,
					size_t *len, int64_t timeout_ns)
{
	/*
	 * Only the second half of a round trip takes the lean way: a reader
	 * that only receives keeps the general path, because one that kept up
	 * with its writer sooner contended for the lines the writer was
	 * filling (bench/README.md, "Round trip: the first looks").
	 */
	if (likely(c && !c->closed && !c->stream && c->rx && !c->rx_mid &&
		   buf && len) && conn_first_looks(c, timeout_ns) &&
	    conn_recv1(c, buf, len))
		return 0;
	return conn_recv(c, buf, len, timeout_ns, 0);
}

MPQ_EXPORT ssize_t mpq_conn_recv_bytes(struct mpq_conn *c, void **out,
				       size_t maxlength, int64_t timeout_ns)
{
	size_t len = maxlength;
	int ret;

	if (!out)
		return -EINVAL;
	*out = NULL;
	if (c && !c->closed && !c->stream && c->rx && !c->rx_mid)
		conn_first_looks(c, timeout_ns);
	ret = conn_recv(c, out, &len, timeout_ns, 1);
	return ret ? ret : (ssize_t)len;
}

MPQ_EXPORT int mpq_conn_poll(struct mpq_conn *c, int64_t timeout_ns)
{
	int drained = 0, ret;

	ret = conn_check(c);
	if (ret)
		return ret;
	if (unlikely(c->stream))
		return mpq__stream_poll(c->stream, timeout_ns);
	if (!c->rx)
		return -EBADF;
	ret = conn_wait(c, 1, 0, mpq_deadline(timeout_ns), &drained);
	if (c->backend == MPQ_BACKEND_MEMFD)
		conn_recv_done(c, drained);
	/* Readable, or at end of file: recv will not block either way. */
	if (ret == 0 || ret == -EPIPE || ret == -ESHUTDOWN)
		return 1;
	if (ret == -EAGAIN || ret == -ETIMEDOUT)
		return 0;
	return ret;
}

/*
 * With the module the end's fd is pollable as it is. Without it, the fd
 * handed out is an epoll set of the data doorbell and the socket; from
 * then on writers ring the doorbell whenever they put data into an empty
 * ring (MPQ_POLL_EXTERN), and a reader that takes the doorbell rings it
 * again if it leaves data behind, so "data waiting" always means
 * "readable". A wake-up may be spurious: read with a zero timeout.
 */
MPQ_EXPORT int mpq_conn_fileno(struct mpq_conn *c)
{
	struct epoll_event ev = { .events = EPOLLIN };
	int ret = conn_check(c), fd;

	if (ret)
		return ret;
	if (c->stream)
		return mpq__stream_fd(c->stream);
	if (c->backend == MPQ_BACKEND_KMOD)
		return c->fd;
	if (c->epfd >= 0)
		return c->epfd;
	fd = epoll_create1(EPOLL_CLOEXEC);
	if (fd < 0)
		return -errno;
	if ((c->rx && epoll_ctl(fd, EPOLL_CTL_ADD, c->bell_rx, &ev)) ||
	    epoll_ctl(fd, EPOLL_CTL_ADD, c->sock, &ev)) {
		ret = -errno;
		close(fd);
		return ret;
	}
	if (c->rx) {
		__atomic_fetch_or(&c->rx->wanted, MPQ_POLL_EXTERN,
				  __ATOMIC_SEQ_CST);
		if (conn_ready(c, 1, 0))
			bell_ring(c->bell_rx);
	}
	c->epfd = fd;
	return fd;
}

/*
 * For mpq_wait(): 1 if a receive would not block now (a message, or the
 * end of file); else 0 with the fds to poll in p[] (*np of them), after
 * asking to be woken. Without the module the doorbell is taken here, after
 * asking and before the last look, and rung again if data is found, so
 * that a user's own poller on fileno() misses nothing.
 */
int mpq_conn_wait_prepare(struct mpq_conn *c, struct pollfd *p, int *np)
{
	int ret = conn_check(c);

	if (ret)
		return ret;
	if (c->stream)
		return mpq__stream_wait_prepare(c->stream, p, np);
	if (!c->rx)
		return -EBADF;
	*np = 0;
	if (conn_ready(c, 1, 0) || conn_rx_shut(c) || conn_peer_gone(c))
		return 1;
	if (c->backend == MPQ_BACKEND_KMOD) {
		p[0].fd = c->fd;	/* its ->poll() asks for the wake-up */
		p[0].events = POLLIN;
		*np = 1;
		return 0;
	}
	__atomic_fetch_or(&c->rx->wanted, MPQ_POLL_IN, __ATOMIC_SEQ_CST);
	bell_drain(c->bell_rx);
	if (conn_ready(c, 1, 0)) {
		bell_ring(c->bell_rx);
		return 1;
	}
	p[0].fd = c->bell_rx;
	p[0].events = POLLIN;
	p[1].fd = c->sock;		/* readable at the end of file */
	p[1].events = POLLIN;
	*np = 2;
	return 0;
}

static void conn_close_fds(struct mpq_conn *c)
{
	int *fds[] = { &c->fd, &c->sock, &c->bell_rx, &c->bell_tx,
		       &c->bell_rx_space, &c->bell_tx_data, &c->epfd };
	unsigned int i;

	for (i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
		if (*fds[i] >= 0)
			close(*fds[i]);
		*fds[i] = -1;
	}
}

MPQ_EXPORT int mpq_conn_close(struct mpq_conn *c)
{
	int ret = conn_check(c);

	if (ret)
		return ret;
	if (c->stream) {
		mpq__stream_close(c->stream);
		c->stream = NULL;
		c->closed = 1;
		return 0;
	}
	munmap(c->shm, c->map_size);
	c->shm = NULL;
	conn_close_fds(c);
	free(c->rx_part);		/* a message part-taken is dropped */
	c->rx_part = NULL;
	c->rx_mid = 0;
	c->closed = 1;
	return 0;
}

MPQ_EXPORT void mpq_conn_free(struct mpq_conn *c)
{
	if (!c)
		return;
	if (!c->closed)
		mpq_conn_close(c);
	free(c);
}

/* ---- making a pipe -------------------------------------------------- */

static struct mpq_conn *conn_alloc(int backend, int end, int64_t spin_ns)
{
	struct mpq_conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->backend = backend;
	c->end = end;
	c->fd = c->sock = c->bell_rx = c->bell_tx = -1;
	c->bell_rx_space = c->bell_tx_data = c->epfd = -1;
	c->spin_ns = spin_ns ? spin_ns :
		     sysconf(_SC_NPROCESSORS_ONLN) > 1 ? MPQ_CONN_SPIN_NS : -1;
	return c;
}

/* Map the region through fd and point the end at its rings. */
static int conn_map(struct mpq_conn *c, int fd, const struct mpq_pipe_geom *g,
		    int duplex)
{
	unsigned char *map;

	map = mmap(NULL, g->map_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		return -errno;
	/*
	 * The module writes the format it was built with; a pipe of another
	 * format is refused, as memfd.c refuses one (see MPQ_PIPE_VERSION).
	 */
	if (load_relaxed(&((struct mpq_pipe_shm *)map)->version) !=
	    MPQ_PIPE_VERSION) {
		munmap(map, g->map_size);
		return -EUCLEAN;
	}
	c->shm = (struct mpq_pipe_shm *)map;
	c->map_size = g->map_size;
	c->size = g->ring_size;
	c->max_frame = MPQ_FRAME_MAX(g->ring_size);
	/* One-way pipes: end 1 sends, end 0 receives (Python's order). */
	if (duplex || c->end == 1) {
		c->tx = &c->shm->ring[c->end];
		/* A one-way pipe's reader never sends, so never acks. */
		c->tx_box = duplex ? &c->shm->box[c->end] : NULL;
		c->tx_data = map + g->data_off[c->end];
	}
	if (duplex || c->end == 0) {
		c->rx = &c->shm->ring[!c->end];
		c->rx_box = &c->shm->box[!c->end];
		c->rx_data = map + g->data_off[!c->end];
	}
	return 0;
}

static int pipe_kmod(struct mpq_conn *c[2], uint32_t ring_size, int duplex)
{
	struct mpq_pipe_geom g;
	int fds[2], ret, i;

	ret = mpq_kmod_pipe_create(ring_size, duplex, fds);
	if (ret)
		return ret;
	ret = mpq_kmod_pipe_info(fds[0], &g, NULL, NULL);
	for (i = 0; i < 2; i++) {
		c[i]->fd = fds[i];
		if (!ret)
			ret = conn_map(c[i], fds[i], &g, duplex);
	}
	return ret;
}

static int pipe_memfd(struct mpq_conn *c[2], uint32_t ring_size, int duplex)
{
	struct mpq_pipe_geom g;
	int sv[2], bells[4], mfd, ret, i;

	ret = mpq_memfd_pipe_create(ring_size, duplex, &mfd, &g);
	if (ret)
		return ret;
	c[0]->fd = mfd;
	c[1]->fd = fcntl(mfd, F_DUPFD_CLOEXEC, 0);
	if (c[1]->fd < 0)
		return -errno;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		return -errno;
	c[0]->sock = sv[0];
	c[1]->sock = sv[1];
	/* bells[2r]: data in ring r; bells[2r + 1]: space in ring r. */
	for (i = 0; i < 4; i++) {
		bells[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (bells[i] < 0) {
			ret = -errno;
			while (i--)
				close(bells[i]);
			return ret;
		}
	}
	for (i = 0; i < 2; i++) {
		int me = i, peer = !i;

		c[i]->bell_rx = fcntl(bells[2 * peer], F_DUPFD_CLOEXEC, 0);
		c[i]->bell_rx_space = fcntl(bells[2 * peer + 1], F_DUPFD_CLOEXEC, 0);
		c[i]->bell_tx_data = fcntl(bells[2 * me], F_DUPFD_CLOEXEC, 0);
		c[i]->bell_tx = fcntl(bells[2 * me + 1], F_DUPFD_CLOEXEC, 0);
		if (c[i]->bell_rx < 0 || c[i]->bell_rx_space < 0 ||
		    c[i]->bell_tx_data < 0 || c[i]->bell_tx < 0)
			ret = -errno;
	}
	for (i = 0; i < 4; i++)
		close(bells[i]);
	for (i = 0; i < 2 && !ret; i++)
		ret = conn_map(c[i], c[i]->fd, &g, duplex);
	return ret;
}

/*
 * The ring sizes both backends take, checked before either is chosen and
 * with the module's errors: a power of two from MPQ_PIPE_RING_MIN, else
 * -EINVAL; above MPQ_PIPE_RING_MAX, -E2BIG. Each backend also bounds the
 * whole pipe (two rings and a page) as an object: see
 * mpq_memfd_pipe_create().
 */
static int mpq_pipe_ring_check(uint32_t ring_size)
{
	if (ring_size < MPQ_PIPE_RING_MIN || ring_size & (ring_size - 1))
		return -EINVAL;
	if (ring_size > MPQ_PIPE_RING_MAX)
		return -E2BIG;
	return 0;
}

MPQ_EXPORT int mpq_pipe(struct mpq_conn **c1, struct mpq_conn **c2,
			int duplex, const struct mpq_pipe_attr *attr)
{
	static const struct mpq_pipe_attr defaults;
	struct mpq_conn *c[2];
	uint32_t ring_size;
	int backend, ret, i;

	if (!c1 || !c2)
		return -EINVAL;
	if (!attr)
		attr = &defaults;
	if (attr->flags || attr->__pad)
		return -EINVAL;
	for (i = 0; i < 4; i++)
		if (attr->__reserved[i])
			return -EINVAL;
	ring_size = attr->bufsize ? attr->bufsize : MPQ_PIPE_DEFAULT_RING;
	ret = mpq_pipe_ring_check(ring_size);
	if (ret)
		return ret;
	backend = mpq_backend_resolve(attr->backend);
	if (backend < 0)
		return backend;

	c[0] = conn_alloc(backend, 0, attr->spin_ns);
	c[1] = conn_alloc(backend, 1, attr->spin_ns);
	if (!c[0] || !c[1]) {
		ret = -ENOMEM;
		goto err;
	}
	ret = backend == MPQ_BACKEND_KMOD ? pipe_kmod(c, ring_size, duplex) :
					    pipe_memfd(c, ring_size, duplex);
	if (ret)
		goto err;
	*c1 = c[0];
	*c2 = c[1];
	return 0;
err:
	for (i = 0; i < 2; i++) {
		if (!c[i])
			continue;
		if (c[i]->shm)
			munmap(c[i]->shm, c[i]->map_size);
		conn_close_fds(c[i]);
		free(c[i]);
	}
	return ret;
}

/*
 * Fault in this process's view of the pipe's memory now rather than page
 * by page as messages first reach it (each first touch is a fault in each
 * process). Best effort: MADV_POPULATE_WRITE came in Linux 5.14.
 */
void mpq_conn_prefault(struct mpq_conn *c)
{
	if (c && !c->closed && !c->stream)
		madvise(c->shm, c->map_size, MADV_POPULATE_WRITE);
}

MPQ_EXPORT int mpq_conn_backend(struct mpq_conn *c)
{
	if (c && c->stream)
		return -EOPNOTSUPP;	/* a socket: no shared memory */
	return c ? c->backend : -EINVAL;
}

/* ---- a connection over a socket (conn_stream.c) --------------------- */

MPQ_EXPORT int mpq_conn_from_fd(struct mpq_conn **out, int fd,
				uint32_t flags)
{
	struct mpq_conn *c;
	int ret;

	if (!out || flags)
		return -EINVAL;
	c = conn_alloc(MPQ_BACKEND_DEFAULT, 0, 0);
	if (!c)
		return -ENOMEM;
	ret = mpq__stream_open(&c->stream, fd);
	if (ret) {
		free(c);
		return ret;
	}
	*out = c;
	return 0;
}

/* ---- handing an end to a spawned child ------------------------------ */

/*
 * A handle names the fds an end is made of; mpq_conn_export() marks them
 * to be inherited by spawned children (see spawn.c), and the child's
 * mpq_conn_import() maps the end again from them:
 *   mpq-conn:kmod:FD                         the end's fd (the module
 *                                            knows which end it is)
 *   mpq-conn:memfd:END:MEMFD:SOCK:RX:RXS:TXD:TX
 *                                            the memfd, this end's
 *                                            socket and the four bells
 */
int mpq_conn_handle(struct mpq_conn *c, char *buf, size_t len, int *fds,
		    int *nfds)
{
	int ret = conn_check(c), n;

	if (ret)
		return ret;
	if (!buf)
		return -EINVAL;
	fds[0] = c->fd;
	*nfds = 1;
	if (c->stream) {
		fds[0] = mpq__stream_fd(c->stream);
		n = snprintf(buf, len, "mpq-conn:stream:%d", fds[0]);
	} else if (c->backend == MPQ_BACKEND_KMOD) {
		n = snprintf(buf, len, "mpq-conn:kmod:%d", c->fd);
	} else {
		fds[1] = c->sock;
		fds[2] = c->bell_rx;
		fds[3] = c->bell_rx_space;
		fds[4] = c->bell_tx_data;
		fds[5] = c->bell_tx;
		*nfds = 6;
		n = snprintf(buf, len, "mpq-conn:memfd:%d:%d:%d:%d:%d:%d:%d",
			     c->end, fds[0], fds[1], fds[2], fds[3], fds[4],
			     fds[5]);
	}
	if (n < 0 || (size_t)n >= len)
		return -ERANGE;
	return n;
}

MPQ_EXPORT int mpq_conn_export(struct mpq_conn *c, char *buf, size_t len)
{
	int fds[6], n, i, nfds, ret;

	n = mpq_conn_handle(c, buf, len, fds, &nfds);
	if (n < 0)
		return n;
	for (i = 0; i < nfds; i++) {
		ret = mpq_spawn_inherit_fd(fds[i]);
		if (ret)
			return ret;
	}
	return n;
}

static int conn_dup(int fd)
{
	int d = fcntl(fd, F_DUPFD_CLOEXEC, 0);

	return d < 0 ? -errno : d;
}

MPQ_EXPORT int mpq_conn_import(struct mpq_conn **out, const char *handle)
{
	int fds[6], end = 0, n = -1, ret, i, k;
	struct mpq_pipe_geom g;
	struct mpq_conn *c;
	uint32_t flags;

	if (!out || !handle)
		return -EINVAL;
	if (sscanf(handle, "mpq-conn:stream:%d%n", &fds[0], &n) == 1 &&
	    n == (int)strlen(handle)) {
		k = conn_dup(fds[0]);
		if (k < 0)
			return k;
		ret = mpq_conn_from_fd(out, k, 0);
		if (ret)
			close(k);
		return ret == -ENOTSOCK || ret == -EPROTOTYPE ? -EINVAL : ret;
	}
	if (sscanf(handle, "mpq-conn:kmod:%d%n", &fds[0], &n) == 1 &&
	    n == (int)strlen(handle)) {
		ret = mpq_kmod_pipe_info(fds[0], &g, &end, &flags);
		if (ret)
			return ret == -ENOTTY ? -EINVAL : ret;
		c = conn_alloc(MPQ_BACKEND_KMOD, end, 0);
		if (!c)
			return -ENOMEM;
		c->fd = conn_dup(fds[0]);
		ret = c->fd < 0 ? c->fd : 0;
	} else if (sscanf(handle, "mpq-conn:memfd:%d:%d:%d:%d:%d:%d:%d%n", &end,
			  &fds[0], &fds[1], &fds[2], &fds[3], &fds[4], &fds[5],
			  &n) == 7 && n == (int)strlen(handle) &&
		   (end == 0 || end == 1)) {
		ret = mpq_memfd_pipe_info(fds[0], &g, &flags);
		if (ret)
			return ret;
		c = conn_alloc(MPQ_BACKEND_MEMFD, end, 0);
		if (!c)
			return -ENOMEM;
		int *mine[6] = { &c->fd, &c->sock, &c->bell_rx,
				 &c->bell_rx_space, &c->bell_tx_data,
				 &c->bell_tx };

		for (i = 0, ret = 0; i < 6 && !ret; i++) {
			k = conn_dup(fds[i]);
			if (k < 0)
				ret = k;
			else
				*mine[i] = k;
		}
	} else {
		return -EINVAL;
	}
	if (!ret)
		ret = conn_map(c, c->fd, &g, flags & MPQ_PIPE_DUPLEX);
	if (ret) {
		if (c->shm)
			munmap(c->shm, c->map_size);
		conn_close_fds(c);
		free(c);
		return ret;
	}
	*out = c;
	return 0;
}
