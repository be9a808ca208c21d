/* SPDX-License-Identifier: MIT */
/*
 * Private to libmpq: the handle layouts, the two backends' entry points,
 * and the small primitives (atomics, futex, clock) the fast paths use.
 */
#ifndef MPQ_INTERNAL_H
#define MPQ_INTERNAL_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>

#include <linux/mpq.h>

#include "mpq.h"
#include "mpq_ext.h"

#define MPQ_EXPORT		__attribute__((visibility("default")))
#define likely(x)		__builtin_expect(!!(x), 1)
#define unlikely(x)		__builtin_expect(!!(x), 0)

#define load_relaxed(p)		__atomic_load_n((p), __ATOMIC_RELAXED)
#define load_acquire(p)		__atomic_load_n((p), __ATOMIC_ACQUIRE)
#define store_release(p, v)	__atomic_store_n((p), (v), __ATOMIC_RELEASE)
/*
 * A full barrier. On x86 a locked add to the stack orders as mfence does
 * and costs less (the kernel's smp_mb() made the same choice).
 */
static inline void full_fence(void)
{
#if defined(__x86_64__)
	__asm__ __volatile__("lock; orl $0, -4(%%rsp)" ::: "memory", "cc");
#else
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
}

/*
 * memcpy for message bodies. Most messages are a few bytes, for which the
 * call into memcpy costs more than the copy: those are done with two
 * overlapping loads and stores of a width that covers them.
 */
static inline void mpq_copy(void *dst, const void *src, size_t n)
{
	unsigned char *d = dst;
	const unsigned char *s = src;

	if (n >= 8 && n <= 16) {
		uint64_t a, b;

		__builtin_memcpy(&a, s, 8);
		__builtin_memcpy(&b, s + n - 8, 8);
		__builtin_memcpy(d, &a, 8);
		__builtin_memcpy(d + n - 8, &b, 8);
	} else if (n >= 4 && n < 8) {
		uint32_t a, b;

		__builtin_memcpy(&a, s, 4);
		__builtin_memcpy(&b, s + n - 4, 4);
		__builtin_memcpy(d, &a, 4);
		__builtin_memcpy(d + n - 4, &b, 4);
	} else if (n < 4) {
		while (n--)
			*d++ = *s++;
	} else {
		__builtin_memcpy(d, s, n);
	}
}

/* Set at load (copy.c): the CPU's rep movsb is fast (CPUID ERMS). */
extern int mpq_copy_erms;

/*
 * A message body out of a slot that another CPU wrote, into the caller's
 * buffer, by a consumer keeping up with a stream. From 512 bytes to 4 KiB,
 * rep movsb where the CPU says it is fast: taking 1 KiB messages out of a
 * queue that way made the 1 KiB stream 1.4-1.6x faster here (AMD EPYC,
 * Zen 4; ck_ring's typed ring copies with rep movsq), where glibc 2.36
 * runs its vector loop below 2112 bytes. Above 4 KiB memcpy, which takes
 * rep movsb itself and knows where it stops paying (a 1 MiB stream lost
 * 17% to it). Not for a round trip's copy (mpq_queue_copy_msg), nor the
 * producer's (rep movsb there bought less, and lost the consumer's gain).
 */
#define MPQ_COPY_OUT_REP_MIN	512
#define MPQ_COPY_OUT_REP_MAX	4096
static inline void mpq_copy_out(void *dst, const void *src, size_t n)
{
#if defined(__x86_64__)
	if (n >= MPQ_COPY_OUT_REP_MIN && n < MPQ_COPY_OUT_REP_MAX &&
	    mpq_copy_erms) {
		__asm__ volatile("rep movsb"
				 : "+D" (dst), "+S" (src), "+c" (n)
				 : : "memory");
		return;
	}
#endif
	mpq_copy(dst, src, n);
}

/* Set at load (copy.c): the CPU has PREFETCHW (CPUID PRFCHW). */
extern int mpq_prefetch_w_ok;

/*
 * Ask for the lines of n bytes at p (at most MPQ_PREFETCH_W_MAX of them)
 * in the state a store needs, before reading what is there and writing
 * over it. A consumer that takes the rest of a run reads it, then frees
 * every slot under it, a store into each line it read: a read leaves a
 * line shared, and each store then waits for the other copy to go, a
 * second trip per line; asked for as a write at once, each line comes
 * once (batches of 256 8 B messages through put_many 1.42-1.51x, through
 * the array calls 1.22x here, bench/README.md). Past a few KiB the
 * slots' headers are too sparse for it to matter.
 */
#define MPQ_PREFETCH_W_MAX	4096
static inline void mpq_prefetch_w(const void *p, size_t n)
{
	const char *c = p;
	size_t off;

#if defined(__x86_64__)
	if (!mpq_prefetch_w_ok)
		return;
#endif
	if (n > MPQ_PREFETCH_W_MAX)
		n = MPQ_PREFETCH_W_MAX;
	for (off = 0; off < n; off += 64)
#if defined(__x86_64__)
		__asm__ volatile("prefetchw %0" : : "m" (c[off]));
#else
		__builtin_prefetch(c + off, 1);
#endif
}

/*
 * Whether the n bytes at p are all zero. An attr's reserved fields must
 * be, so that a later version can give them a meaning without an old
 * caller's garbage taking it.
 */
static inline int mpq_all_zero(const void *p, size_t n)
{
	const unsigned char *b = p;

	while (n--)
		if (*b++)
			return 0;
	return 1;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#else
	__asm__ __volatile__("" ::: "memory");
#endif
}

static inline int64_t mpq_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * The second half of a round trip: a get or receive that may wait, made
 * by a thread whose last such call was a put or send, first looks
 * MPQ_FIRST_LOOKS times, a pause apart, at the one word that says its
 * message is there, from the exported function itself, before the
 * general path and its spin (which starts with a clock read) are
 * entered; the message that lands goes the lean way. The answer arrives
 * while the caller is on its way into the wait: the queue's and the
 * Connection's round trips went from 106-137 ns to 73-101 ns (the mean
 * of 1,000,000, pinned) with these looks (bench/README.md, "Round trip:
 * the first looks"). A consumer that only receives does not look: right
 * behind its producer, it took 1 KiB streams down by a fifth. 16 pauses
 * are 350 ns here, well inside the spin; a caller that spins less, or
 * whose timeout is shorter, does not look.
 */
#define MPQ_FIRST_LOOKS		16
#define MPQ_FIRST_LOOKS_NS	10000

/*
 * Which of a put/send and a get/receive this thread made last; LOOKED is
 * a get or receive that made the first looks, until a wait takes it
 * (mpq_looked()) or the thread sends.
 */
#define MPQ_TURN_SENT		1
#define MPQ_TURN_RECEIVED	2
#define MPQ_TURN_LOOKED		3
extern __thread int mpq_turn __attribute__((tls_model("initial-exec")));

static inline void mpq_sent(void)
{
	mpq_turn = MPQ_TURN_SENT;
}

/* Is a send an answer: did this thread receive last? */
static inline int mpq_answering(void)
{
	return mpq_turn >= MPQ_TURN_RECEIVED;
}

/* For a get or receive: should it look first? It is one from now on. */
static inline int mpq_first_looks(int64_t spin_ns, int64_t timeout_ns)
{
	int due = mpq_turn == MPQ_TURN_SENT && spin_ns >= MPQ_FIRST_LOOKS_NS &&
		  (timeout_ns < 0 || timeout_ns >= MPQ_FIRST_LOOKS_NS);

	mpq_turn = due ? MPQ_TURN_LOOKED : MPQ_TURN_RECEIVED;
	return due;
}

/* For a wait: does it go on from the first looks? Asked once. */
static inline int mpq_looked(void)
{
	int looked = mpq_turn == MPQ_TURN_LOOKED;

	if (looked)
		mpq_turn = MPQ_TURN_RECEIVED;
	return looked;
}

/* Absolute CLOCK_MONOTONIC deadline for a timeout; -1 for MPQ_FOREVER. */
static inline int64_t mpq_deadline(int64_t timeout_ns)
{
	int64_t now;

	if (timeout_ns < 0)
		return -1;
	now = mpq_now_ns();
	return timeout_ns > INT64_MAX - now ? -1 : now + timeout_ns;
}

/* futex.c */
int mpq_futex_wait(uint32_t *word, uint32_t val, int64_t deadline);
void mpq_futex_wake(uint32_t *word, int n);
int mpq_futex_has_waitv(void);
int mpq_futex_waitv(const uint32_t *const *words, const uint32_t *vals,
		    unsigned int n, int64_t deadline);

/* Geometry of a queue's shared memory, as struct mpq_queue_info has it. */
struct mpq_geom {
	uint32_t flags;		/* MPQ_QUEUE_JOINABLE, MPQ_QUEUE_UNBOUNDED */
	uint32_t maxsize;	/* 0: unbounded */
	uint32_t capacity;
	uint32_t msg_max;
	uint32_t slot_size;
	uint32_t data_off;
	uint64_t map_size;
	uint64_t id;		/* the module's object id; 0 for memfd */
};

int mpq_geom_make(struct mpq_geom *g, uint32_t maxsize, uint32_t msgsize,
		  uint32_t ring);
int mpq_geom_check(const struct mpq_geom *g);

/* kmod.c: objects from /dev/mpq. */
int mpq_kmod_dev_ioctl(unsigned long cmd, void *args);

/* anchor.c: what ties a SharedMemory name to its program's lifetime. */
struct stat;
int mpq_anchor_ensure(int backend);
int mpq_anchor_dev_ioctl(unsigned long cmd, void *args);
int mpq_anchor_track_register(const char *name, const struct stat *st);
void mpq_anchor_track_unregister(const char *name, const struct stat *st);
size_t mpq_anchor_spawn(int *fds, char *buf, size_t len);
void mpq_anchor_adopt(void);
int mpq_kmod_queue_create(const struct mpq_geom *want, int *fd);
int mpq_kmod_blob(int fd, unsigned long cmd, uint64_t *id, uint64_t *bytes);
int mpq_kmod_queue_info(int fd, struct mpq_geom *g);
void mpq_kmod_queue_wake(int fd, uint32_t bits);

/* memfd.c: queues in a memfd, for machines without the module. */
int mpq_memfd_queue_create(const struct mpq_geom *g, int *fd);
int mpq_memfd_queue_info(int fd, struct mpq_geom *g);
uint64_t mpq_memfd_queue_id(int fd);

/* Geometry of a pipe's shared memory, as struct mpq_pipe_info has it. */
struct mpq_pipe_geom {
	uint32_t ring_size;
	uint64_t data_off[2];
	uint64_t map_size;
};

int mpq_kmod_pipe_create(uint32_t ring_size, int duplex, int fds[2]);
int mpq_kmod_pipe_info(int fd, struct mpq_pipe_geom *g, int *end,
		       uint32_t *flags);
int mpq_memfd_pipe_create(uint32_t ring_size, int duplex, int *fd,
			  struct mpq_pipe_geom *g);
int mpq_memfd_pipe_info(int fd, struct mpq_pipe_geom *g, uint32_t *flags);

int mpq_backend_resolve(int requested);

/*
 * block.c: the shared memory under sync objects, Values and SharedMemory:
 * one fd, mapped whole. bytes is the size asked for; map_size rounds it up
 * to pages. Everything but map is read-only after creation.
 */
struct mpq_block {
	void *map;
	uint64_t bytes;
	uint64_t map_size;
	uint64_t id;
	int fd;
	int backend;
};

#define MPQ_BLOCK_MAX_BYTES	(1ULL << 30)

int mpq_block_new(struct mpq_block *b, uint64_t bytes, int backend,
		  uint32_t kind);
int mpq_block_from_fd(struct mpq_block *b, int fd);
int mpq_block_named(struct mpq_block *b, const char *name, uint64_t bytes,
		    uint32_t flags, uint32_t mode, int backend);
int mpq_block_unlink(const char *name, int backend);
void mpq_block_free(struct mpq_block *b);

/* For mpq_wait(): see conn.c and queue.c. */
struct pollfd;
int mpq_conn_wait_prepare(struct mpq_conn *c, struct pollfd *p, int *np);

/* conn_stream.c: the Connection over a stream socket behind mpq_conn_from_fd
 * (mpq__: internal, though the static archive shows it). */
struct mpq_stream;
int mpq__stream_open(struct mpq_stream **out, int fd);
int mpq__stream_send(struct mpq_stream *s, const void *buf, size_t len,
		    int64_t timeout_ns);
int mpq__stream_recv(struct mpq_stream *s, void *buf, size_t *len,
		    int64_t timeout_ns, int alloc);
int mpq__stream_poll(struct mpq_stream *s, int64_t timeout_ns);
int mpq__stream_fd(struct mpq_stream *s);
int mpq__stream_wait_prepare(struct mpq_stream *s, struct pollfd *p, int *np);
void mpq__stream_close(struct mpq_stream *s);
int mpq_queue_wait_prepare(struct mpq_queue *q, struct pollfd *p);
int64_t mpq_queue_wait_until(struct mpq_queue *q, int64_t deadline);

/* A blob (qblob.c) as mapped here. */
struct mpq_qblob {
	void *map;
	size_t map_len;
	uint64_t id;
};

/*
 * Blobs this handle keeps mapped (qblob.c), so that a recycled blob is
 * not mapped and unmapped for every message. lock: a try-lock only (a
 * thread that finds it held maps on its own), so a fork that copies it
 * held cannot deadlock the child.
 */
#define MPQ_QBLOB_MAPS		64
struct mpq_qblob_maps {
	int lock;
	uint64_t tick;
	struct mpq_qblob m[MPQ_QBLOB_MAPS];
	uint64_t used[MPQ_QBLOB_MAPS];
};

struct mpq_queue {
	/* Read-only after creation; the fast paths use only these copies. */
	struct mpq_queue_shm *shm;
	struct mpq_queue_rec *recs;	/* MPQ_QUEUE_NREC operation records */
	unsigned char *slots;
	uint64_t mask;
	uint32_t capacity;
	uint32_t msg_max;
	uint32_t slot_size;
	uint32_t flags;		/* MPQ_QUEUE_JOINABLE, MPQ_QUEUE_UNBOUNDED */
	/*
	 * A bound below the ring's capacity (maxsize 3 in a ring of 4), or
	 * 0 when the ring's own fullness is the bound (maxsize a power of
	 * two) or there is none (unbounded).
	 */
	uint32_t limit;
	uint32_t maxsize;	/* 0: unbounded */
	/*
	 * MPQ_QUEUE_F_ONE_PRODUCER / _CONSUMER in effect: claims move tail
	 * or head with a plain store, nobody else moving it (mpq.h), and a
	 * one-message put or get takes no record (mpq_queue_put1_alone()).
	 */
	uint8_t one_producer, one_consumer;
	/*
	 * Both, on a bounded queue: put_array writes runs (run.c), and the
	 * bound counts messages while runs_out says a run may be in the ring.
	 */
	uint8_t runs;
	/*
	 * The tail from which this producer's batches go as runs again:
	 * maxsize on from where it last saw a consumer asleep
	 * (mpq_run_pays()).
	 */
	uint64_t run_resume;
	/*
	 * A dead consumer's message waits for a get (mpq_wait() saw it, the
	 * module's count of deaths moved past deaths_seen, or one empty
	 * non-blocking get in MPQ_DEAD_LOOK_EVERY looks): see
	 * mpq_queue_nowait().
	 */
	uint8_t dead_hint;
	uint32_t empty_looks;
	uint32_t deaths_seen;
	uint64_t head_seen;	/* a head we read: never ahead of the real one */
	/* Unbounded: the overflow's chunks mapped here (overflow.c). */
	struct mpq_qblob ovf_w, ovf_r;
	struct mpq_qblob_maps *bmaps;	/* qblob.c; NULL until needed */
	int fd;
	int bell;		/* memfd: eventfd for mpq_wait(), or -1 */
	int backend;
	int closed;		/* mpq_queue_close(): no more puts or gets */
	uint64_t hid;		/* this handle's: unique in this process */
	int64_t spin_ns;	/* how long a wait spins; <= 0: never */
	uint64_t map_size;
	uint64_t id;		/* for tracers: /proc/mpq's id (see probes.h) */
	/* An extension's queue (ext.c): its calls go to ext, with ext_obj. */
	const struct mpq_ext_queue_ops *ext;
	void *ext_obj;
};

static inline struct mpq_slot *mpq_slot_at(const struct mpq_queue *q,
					   uint64_t pos)
{
	return (struct mpq_slot *)(q->slots + (pos & q->mask) * q->slot_size);
}

/*
 * A slot's len that says its message is out of line (struct mpq_slot_ext
 * in <linux/mpq.h>): above msg_max and not a run's or a dropped slot's.
 */
static inline int mpq_len_ext(const struct mpq_queue *q, uint32_t len)
{
	return len > q->msg_max && len != MPQ_SLOT_DROPPED &&
	       len != MPQ_SLOT_RUN;
}

/*
 * Does q's slot have room for a whole struct mpq_slot_ext? Where it does
 * not, len MPQ_SLOT_EXT is a scribble, whose descriptor would be read
 * from the next slot, or past the ring's end.
 */
static inline int mpq_slot_ext_room(const struct mpq_queue *q)
{
	return q->slot_size >= sizeof(struct mpq_slot) +
			       sizeof(struct mpq_slot_ext);
}

/*
 * The descriptor of an out-of-line slot s of q whose len was read as len
 * (id 0, which names no blob, for a scribbled one).
 */
static inline void mpq_slot_ext_read(const struct mpq_queue *q,
				     const struct mpq_slot *s, uint32_t len,
				     struct mpq_slot_ext *e)
{
	if (len == MPQ_SLOT_EXT) {
		if (mpq_slot_ext_room(q)) {
			memcpy(e, s + 1, sizeof(*e));
		} else {
			e->id = 0;
			e->len = 0;
		}
	} else {
		memcpy(&e->id, s + 1, sizeof(e->id));
		e->len = len;
	}
}

/*
 * Write e (e->len above msg_max: mpq_slot_ext_fits()) into slot s, its
 * len included: the id alone with the length in len, or all of it.
 */
static inline void mpq_slot_ext_write(struct mpq_slot *s,
				      const struct mpq_slot_ext *e)
{
	if (e->len < MPQ_SLOT_RUN) {
		memcpy(s + 1, &e->id, sizeof(e->id));
		s->len = (uint32_t)e->len;
	} else {
		memcpy(s + 1, e, sizeof(*e));
		s->len = MPQ_SLOT_EXT;
	}
}

/* Can q's slots say an out-of-line message of len bytes? */
static inline int mpq_slot_ext_fits(const struct mpq_queue *q, uint64_t len)
{
	return len < MPQ_SLOT_RUN || mpq_slot_ext_room(q);
}

/* run.c: runs, batches of one size packed over slots (struct mpq_slot_run). */
#define MPQ_RUN_SLOTS_MAX	256
/*
 * A batch smaller than this goes a slot per message: a run's bookkeeping
 * (a record, the bound's sums, the consumers' line read for room) cost
 * batches of 8 0.88x of the slots' rate (bench/README.md).
 */
#define MPQ_RUN_MIN		16
/* Where a run's payload starts, from its first slot's start. */
#define MPQ_RUN_HDR(q)		MPQ_RUN_DATA_OFF((q)->slot_size)

/*
 * The count and size of the run at slot s (<linux/mpq.h>): in its first
 * slot, or its second's data with 16-byte slots. Only for a slot with
 * MPQ_RUN_HDR(q) bytes of ring from its start (mpq_run_head_fits()).
 */
static inline struct mpq_slot_run_size *
mpq_run_size_at(const struct mpq_queue *q, struct mpq_slot *s)
{
	return (struct mpq_slot_run_size *)(void *)((unsigned char *)s +
		MPQ_RUN_SIZE_OFF(q->slot_size));
}

/* Does a run's header at pos stay in the ring (a run never wraps)? */
static inline int mpq_run_head_fits(const struct mpq_queue *q, uint64_t pos)
{
	return (uint64_t)(q->capacity - (pos & q->mask)) * q->slot_size >=
	       MPQ_RUN_HDR(q);
}
struct mpq_run {
	uint32_t count, size, taken, k;	/* taken: without MPQ_RUN_BUSY */
	int busy;			/* a consumer is taking from it */
	int kernel;			/* that consumer is the module's */
	uint64_t word;			/* taken and lap, as read */
	struct mpq_slot_run *hdr;
	unsigned char *data;		/* the first message */
};
/*
 * mpq_run_get() and mpq_run_peek(): another consumer is taking from the
 * run at head (its busy bit). Not an errno: never returned to a caller.
 */
#define MPQ_RUN_HELD		(-4097)
int mpq_run_read(const struct mpq_queue *q, uint64_t pos, struct mpq_run *run);
int mpq_run_covers(const struct mpq_queue *q, uint64_t p);
uint32_t mpq_queue_count(const struct mpq_queue *q, uint64_t head,
			 uint64_t tail);
unsigned int mpq_run_room(struct mpq_queue *q, uint64_t pos, unsigned int n,
			  int producer);
int mpq_run_pays(struct mpq_queue *q);
int mpq_run_put(struct mpq_queue *q, const void *base,
		const struct iovec *msgs, uint32_t size, uint32_t count);
int mpq_run_get(struct mpq_queue *q, uint64_t pos, struct iovec *bufs,
		unsigned int n, void *arr, uint32_t *size, int waited);
int mpq_run_peek(struct mpq_queue *q, uint64_t pos, void **data,
		 uint32_t *len, struct mpq_queue_rec **rp);
void mpq_run_release(struct mpq_queue *q, uint64_t pos,
		     struct mpq_queue_rec *r);
void mpq_run_reclaim_take(struct mpq_queue *q, struct mpq_queue_rec *r,
			  uint64_t pos);
void mpq_run_drop(struct mpq_queue *q, uint64_t pos, uint32_t k);

/* May a run be in the ring (<linux/mpq.h>: runs_out)? */
static inline int mpq_runs_out(const struct mpq_queue *q)
{
	return load_relaxed(&q->shm->runs_out) != 0;
}

/* queue.c: a JoinableQueue's count of n tasks under r, and its settling. */
void mpq_queue_tasks_count(struct mpq_queue *q, struct mpq_queue_rec *r,
			   unsigned int n);
void mpq_queue_tasks_settled(struct mpq_queue *q, struct mpq_queue_rec *r);

/* reclaim.c: operation records, and cleaning up after dead participants. */
struct mpq_queue_rec *mpq_rec_take(struct mpq_queue *q);
struct mpq_queue_rec *mpq_rec_begin_slow(struct mpq_queue *q);
void mpq_rec_end_slow(struct mpq_queue_rec *r);
int mpq_rec_forget(struct mpq_queue *q);
void mpq_rec_drop(struct mpq_queue_rec *r);
int mpq_queue_reclaim(struct mpq_queue *q, struct iovec *bufs,
		      unsigned int n, uint32_t exact);
int mpq_queue_busy(struct mpq_queue *q);
int mpq_queue_dead_message(struct mpq_queue *q);
int mpq_queue_reclaim_peek(struct mpq_queue *q, struct mpq_msg *m);
/* queue.c: a peek window on the slot of pos, under record r. */
int mpq_queue_window(struct mpq_queue *q, struct mpq_msg *m,
		     struct mpq_queue_rec *r, uint64_t pos);
void mpq_queue_notify(struct mpq_queue *q, uint32_t *word, uint32_t poll_bit);
void mpq_queue_task_wake(struct mpq_queue *q);
/* reclaim.c: give our record up as dead, for a repairer to act on. */
void mpq_rec_giveup(struct mpq_queue *q, struct mpq_queue_rec *r);

/*
 * qblob.c: messages out of line. A blob is memory the queue owns by id
 * (the module's MPQ_IOC_QUEUE_BLOB_*; with memfd, pages of the queue's
 * own file past the ring), mapped here at map for len bytes.
 */
int mpq_qblob_new(struct mpq_queue *q, uint64_t bytes, struct mpq_qblob *b);
/* The same, held by record r (if not NULL) from before it exists. */
int mpq_qblob_new_held(struct mpq_queue *q, uint64_t bytes,
		       struct mpq_qblob *b, struct mpq_queue_rec *r);
int mpq_qblob_open(struct mpq_queue *q, uint64_t id, uint64_t bytes,
		   struct mpq_qblob *b);
void mpq_qblob_unmap(struct mpq_qblob *b);
void mpq_qblob_drop(struct mpq_queue *q, uint64_t id, uint64_t bytes);
/* Copy an out-of-line slot's message into buf (room *len), then drop it. */
int mpq_qblob_take(struct mpq_queue *q, const struct mpq_slot_ext *e,
		   void *buf);
/*
 * A blob holding a copy of msg, for a put: its id in *id, and in r's blob
 * (r may be NULL) from before it exists until the put hands it on.
 */
int mpq_qblob_copy_in(struct mpq_queue *q, const void *msg, size_t len,
		      uint64_t *id, struct mpq_queue_rec *r);
/* Free a blob's memory, never to the pool. */
void mpq_qblob_free(struct mpq_queue *q, uint64_t id);
/* Free (pool or drop) the blob that record r holds, if any. */
void mpq_qblob_release(struct mpq_queue *q, struct mpq_queue_rec *r);
void mpq_qblob_settle(struct mpq_queue *q, struct mpq_queue_rec *r);
/* The blob id the module's NEW wrote in a record's blob_arg, or 0. */
uint64_t mpq_qblob_from_arg(struct mpq_queue *q, uint64_t kid, uint64_t bytes);
/* reclaim.c: this thread's own record for q if idle (holding a blob). */
struct mpq_queue_rec *mpq_rec_own_idle(struct mpq_queue *q);
/* The put's blob is in the shared structure now: the record lets go. */
void mpq_rec_blob_handed(struct mpq_queue *q);
/* mpq_queue_close(): unmap what the handle kept mapped. */
void mpq_qblob_forget(struct mpq_queue *q);

/* overflow.c: an unbounded queue's messages past the ring. */
/* An iovec of a put whose base is a struct mpq_slot_ext: out of line. */
#define MPQ_IOV_EXT		((size_t)MPQ_SLOT_EXT)
int mpq_ovf_put(struct mpq_queue *q, const struct iovec *msg);
void mpq_ovf_forget(struct mpq_queue *q);
int mpq_queue_ring_fill(struct mpq_queue *q, const struct iovec *msgs,
			unsigned int n, uint64_t *posp, struct mpq_queue_rec **rp);
void mpq_queue_ring_publish(struct mpq_queue *q, struct mpq_queue_rec *r,
			    uint64_t pos, unsigned int k);
void mpq_ovf_settle(struct mpq_queue *q);
int mpq_rec_adopt_dead(struct mpq_queue_rec *r, uint32_t v);
int mpq_ovf_promote(struct mpq_queue *q);
static inline int mpq_ovf_active(const struct mpq_queue *q)
{
	return load_acquire(&q->shm->ovf_count) != 0;
}

/*
 * process.c and spawn.c: processes. One lock, mpq_proc_lock(), guards the
 * list of running children, the spawn targets and the exported fds; it is
 * held across every fork (pthread_atfork), so no child starts with it held.
 */
enum mpq_proc_state {
	MPQ_PROC_NEW,		/* made, not started */
	MPQ_PROC_STARTED,	/* running, or ended and not yet reaped */
	MPQ_PROC_ENDED,		/* reaped: exitcode holds */
	MPQ_PROC_CLOSED,	/* mpq_process_close(): only free is left */
};

struct mpq_process {
	uint32_t magic;		/* MPQ_PROC_MAGIC while usable */
	int state;		/* enum mpq_proc_state */
	int daemon;
	int start_method;	/* MPQ_START_FORK, _SPAWN or _FORKSERVER */
	pid_t owner;		/* who made it: the only one that may start,
				   join or signal it */
	pid_t pid;
	int sentinel;		/* pidfd, or a pipe's read end without pidfd
				   support; -1 with the reason in sentinel_err */
	int sentinel_err;
	int has_pidfd;
	int exitcode;		/* status, or -signal, once ENDED */
	int reap_err;		/* -ECHILD: someone else reaped it */
	int detached;		/* freed while running: reaped, then freed */
	mpq_target_fn target;
	void *arg;
	size_t arg_len;
	char *name;
	char *identity;		/* "1:2": start counters from the main process */
	int *keep_fds;		/* spawn: fds this child alone inherits */
	unsigned int nkeep_fds;
	int fs_status;		/* forkserver: the socket the server sends
				   the exit status on; -1 otherwise */
	int fs_eof;		/* forkserver: the server ended before it
				   sent the status */
	struct mpq_process *next;	/* in the running children's list */
};

/*
 * What a parent prepares for a child before it forks. While it is in
 * flight (prepare to parent/abort) any other fork closes its write ends
 * in the child it makes: only this launch's child may hold them.
 */
struct mpq_launch {
	pid_t parent_pid;
	int parent_pidfd;	/* the parent's own pidfd, for the child's
				   mpq_parent_process(); -1 without pidfds */
	int pipe[2];		/* without pidfds: the sentinel pipe */
	int err[2];		/* spawn: the exec-error pipe */
	struct mpq_launch *next;	/* launches in flight */
};

/* The environment variable that makes a process a spawned child. */
#define MPQ_SPAWN_ENV		"MPQ_SPAWN"

void mpq_proc_lock(void);
void mpq_proc_unlock(void);
int mpq_proc_create(struct mpq_process **out, mpq_target_fn target,
		    const void *arg, size_t arg_len, const char *name,
		    const char *identity, int daemon, int start_method);
int mpq_launch_prepare(struct mpq_launch *l, int spawn);
void mpq_launch_forked(struct mpq_launch *l);
void mpq_launch_child(const struct mpq_launch *l, int daemon);
void mpq_launch_parent(struct mpq_launch *l, struct mpq_process *p,
		       pid_t pid);
void mpq_launch_abort(struct mpq_launch *l);
const char *mpq_proc_self_name(void);
void mpq_proc_become(struct mpq_process *p, pid_t ppid, const char *pname,
		     int ppidfd);
__attribute__((noreturn)) void mpq_proc_run(struct mpq_process *p);

/* spawn.c */
int mpq_spawn_start(struct mpq_process *p);
/* The argv a re-executed program gets (NULL: out of memory). Lock held. */
char **mpq_spawn_argv_locked(void);
/* environ without MPQ_SPAWN and MPQ_FORKSERVER, plus ours (not copied). */
char **mpq_spawn_envp(const char *ours, const char *anchors);
/*
 * The fds a child of p must hold at their numbers: the exported ones and
 * p's own. *fds is malloc'ed with room for extra more.
 */
int mpq_spawn_fds(struct mpq_process *p, int **fds, size_t *nfds,
		  size_t extra);
/* The bootstrap of p into a new memfd (fd or -errno); see spawn.c. */
int mpq_boot_write(struct mpq_process *p, const char *target,
		   const struct mpq_launch *l);
/*
 * Run the process whose bootstrap is in fd, as its child; ppidfd >= -1
 * replaces the parent pidfd the bootstrap names. Never returns.
 */
__attribute__((noreturn)) void mpq_boot_run(int fd, int ppidfd, int override);

/* forkserver.c */
#define MPQ_FORKSERVER_ENV	"MPQ_FORKSERVER"
int mpq_forkserver_launch(struct mpq_process *p);
__attribute__((noreturn)) void mpq_forkserver_main(const char *val);
/* process.c: p, started by a fork server, joins the running children. */
void mpq_proc_started(struct mpq_process *p, pid_t pid, int pidfd,
		      int status_fd);
/*
 * Pass fds[0..n) to this one child if it is spawned (at their numbers),
 * unlike mpq_spawn_inherit_fd() which passes an fd to every spawned child.
 */
int mpq_process_keep_fds(struct mpq_process *p, const int *fds, unsigned int n);
/* A target's registered name (into buf), or the target of a name. */
int mpq_target_name_of(mpq_target_fn fn, char *buf, size_t len);
mpq_target_fn mpq_target_by(const char *name);
/* Let fd reach spawned children (at its number) while it stays open. */
int mpq_spawn_inherit_fd(int fd);
/* "mpq-<type>:fd=<fd>": handles for objects passed to spawned children. */
int mpq_handle_format(char *buf, size_t len, const char *type, int fd);
int mpq_handle_parse(const char *handle, const char *type, int *fd);
int mpq_handle_export(const char *type, int fd, char *buf, size_t len);

/*
 * conn.c: mpq_conn_export()'s handle without marking the fds for every
 * spawned child: the fds it names go to fds[] (room for 6), *nfds of them.
 */
int mpq_conn_handle(struct mpq_conn *c, char *buf, size_t len, int *fds,
		    int *nfds);
/* conn.c: fault in the pipe's memory now (for pools, which use it hard). */
void mpq_conn_prefault(struct mpq_conn *c);

/*
 * ext.c: objects of libmpq's types whose calls an extension serves
 * (mpq_ext.h). A public call takes one early branch on ->ext into these.
 */
int mpq_xq_put_many(struct mpq_queue *q, const struct iovec *msgs,
		    unsigned int n, int64_t timeout_ns);
int mpq_xq_get_many(struct mpq_queue *q, struct iovec *bufs, unsigned int n,
		    int64_t timeout_ns);
/* qsize, full, maxsize, task_done, unfinished, by the table's offset. */
int mpq_xq_call(struct mpq_queue *q, size_t off);
#define MPQ_XQ(q, op)	mpq_xq_call((q), offsetof(struct mpq_ext_queue_ops, op))
int mpq_xq_join(struct mpq_queue *q, int64_t timeout_ns);
int mpq_xq_export(struct mpq_queue *q, char *buf, size_t len);
void mpq_xq_free(struct mpq_queue *q);
/* Give a handle that is not libmpq's own to the extension it names. */
int mpq_ext_import(int kind, const char *handle, void *out);

#endif /* MPQ_INTERNAL_H */
