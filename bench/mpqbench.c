// SPDX-License-Identifier: MIT
/*
 * mpqbench: one measurement cell per invocation, between processes (fork,
 * never threads), printed as JSON rows on stdout; diagnostics on stderr.
 * An orchestrator calls it many times, interleaving the alternatives.
 *
 *   mpqbench --list [--quick]
 *   mpqbench BENCH IMPL [--size BYTES] [--batch N] [--backend kmod|memfd]
 *            [--wait spin|adaptive|block|epoll] [--quick] [--count N] [-v]
 *
 * Row: {"bench","impl","backend","wait","size","batch","metric","value",
 * "count"}; backend and wait are null except for mpq-queue. Exit 0 on
 * success; non-zero on any failed call, lost, duplicated or out-of-order
 * message, or a run that does not finish within BENCH_TIMEOUT (120 s).
 *
 * Benches
 *   rtt     Ping-pong between two processes, --size bytes each way. 1,000
 *           warm-up exchanges, then N (100,000 up to 4 KiB, 20,000 up to
 *           64 KiB, 2,000 above; --quick /10) each timed with
 *           CLOCK_MONOTONIC in the initiator; p50/p90/p99/p99.9/max of all
 *           samples. Every message is copied in full by the transport and
 *           its receiver checks the sequence number in its first 8 bytes.
 *   stream  One producer sends M messages (2,000,000, fewer for big ones so
 *           that M * size stays within 2 GiB, rounded down to thousands, at
 *           least 2,000; --quick /10) in calls of --batch messages; the
 *           consumer checks their first 8 bytes are 0..M-1 in order and
 *           times from the end of its first receive call to the last
 *           message: msgs_per_s and bytes_per_s; cpu_ns_per_msg is the
 *           CPU time (getrusage, user + system) of both processes over M.
 *   mpmc    2 producers and 2 consumers (4 processes), 8-byte messages
 *           tagged (producer, seq), M (2,000,000; --quick /10) in total.
 *           Each consumer checks per-producer order and marks a seen-bitmap
 *           of its own in shared memory; the parent checks every message
 *           was seen exactly once. The producer finishing last puts one
 *           stop message per consumer behind all the data. msgs_per_s is M
 *           over the time from the start signal to the later consumer's
 *           stop message (which comes right behind its last message);
 *           cpu_ns_per_msg: the CPU time of all 4 processes over M.
 *   memcpy  One process copies a 256 MiB buffer (64 MiB quick) into another
 *           in --size chunks (1 MiB), once to warm up, then --count passes
 *           (4): bytes_per_s, the reference for the copying API.
 *
 * Impls (each a "channel": one direction of messages, open before fork,
 * then each side keeps its end)
 *   spin-floor-2 The spin floor's round trip with a line each way (rtt,
 *                8 B only): the initiator writes its counter in one line
 *                and spins on the other, the echo the reverse, as any
 *                two channels (two queues, a pipe's two rings) must.
 *   spin-floor   The floor nothing beats. rtt (8 B only): both processes
 *                spin with pause on one counter in one cache line of
 *                MAP_SHARED|MAP_ANONYMOUS memory. stream: an SPSC ring in
 *                such memory, both sides spin, the tail is published once
 *                per batch; every size is listed (slots are sized for it).
 *   pipe         Two pipes for rtt; one pipe for stream (a batch is one
 *                write of the packed messages, read back exactly) and for
 *                mpmc (shared by all 4 processes: 8-byte writes are atomic).
 *   unix-socket  socketpair(AF_UNIX, SOCK_STREAM), one per direction,
 *                exact writes and reads as for the pipe.
 *   eventfd      The SPSC ring in shared memory with eventfds as doorbells:
 *                the sender copies the batch in, publishes the tail and
 *                write()s the "data" eventfd once per batch; the receiver,
 *                finding the ring empty, blocks in read() on it, then copies
 *                out all it may take. In a stream the receiver also write()s
 *                a "space" eventfd after each take, which a sender that
 *                found the ring full reads (blocking). In ping-pong the ring
 *                never fills and the space doorbell is not used.
 *   futex        The same ring with futex words (shared, not PRIVATE) as
 *                doorbells: the waiter sleeps in FUTEX_WAIT until the word
 *                changes, the sender bumps it and FUTEX_WAKEs after every
 *                batch whether anyone sleeps or not: the raw "always sleep"
 *                path the blocking goal compares against.
 *   posix-mq     mq_open queues (unlinked at once), mq_send/mq_receive, one
 *                message per call (a batch is a loop), mq_maxmsg the
 *                system's msg_max; sizes up to fs.mqueue.msgsize_max only.
 *   mpq-queue    mpq queues, msgsize = size, maxsize 1024 or fewer so a
 *                queue stays within 4 MiB (1 MiB: 4). Batch 1 uses
 *                mpq_queue_put/get, larger batches put_many/get_many. Per
 *                backend (memfd; kmod where /dev/mpq exists) and wait mode:
 *                spin (spin_ns INT64_MAX/4, never sleeps), adaptive
 *                (spin_ns 0, the library's default), block (spin_ns -1,
 *                sleeps at once), epoll (kmod only, spin_ns -1: the
 *                receiver tries get with timeout 0 and, on -EAGAIN,
 *                epoll_waits for EPOLLIN on mpq_queue_fileno()).
 *   mpq-queue-exact      the same with maxsize one less (1023: not a
 *                power of two), so the bound beside the ring is checked
 *                on every put: the bounded fast path's price for an exact
 *                maxsize (issue 12).
 *   mpq-queue-unbounded  maxsize 0 (Python's default): the ring, and the
 *                overflow when the producer runs ahead.
 *   mpq-queue-spsc       the same as mpq-queue, made with
 *                MPQ_QUEUE_F_ONE_PRODUCER | MPQ_QUEUE_F_ONE_CONSUMER: the
 *                claims without a CAS (8 B and 1 KiB, adaptive wait);
 *                batches go through mpq_queue_put_array/get_array, which
 *                on this queue pack a batch of small messages into one
 *                run (lib/run.c) instead of a slot each.
 *   mpq-queue-array      mpq-queue (many producers and consumers),
 *                its batches through mpq_queue_put_array/get_array, which
 *                pack a batch of small messages into one run as on
 *                mpq-queue-spsc, taken under the run's busy bit (stream
 *                batches, 8 B and 1 KiB, adaptive wait; mpmc batches of
 *                256, adaptive and block). mpq-queue's own
 *                batches go through put_many/get_many: runs too, with
 *                an iovec per message.
 *   mpq-queue-ool        msgsize 64 whatever --size is: every message
 *                larger than that goes out of line (a blob each), beside
 *                mpq-queue (msgsize = size, in the slot) and mpq-conn.
 *   mpq-conn     a one-way mpq_pipe per channel (rtt: one duplex pipe, a
 *                direction each way, as Python's Pipe() makes), each side
 *                closing the end it does not use; one message per call
 *                (no batches); the same backends and wait modes, epoll on
 *                both backends.
 *   memcpy       The memcpy bench only.
 *
 * Rings (spin-floor stream, eventfd, futex) have as many slots as an mpq
 * queue of that message size, so the alternatives buffer alike; slots are
 * packed (size bytes each) and a batch goes in or out with one memcpy (two
 * where it wraps), so a batched ring is a real floor, not a padded one.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/futex.h>
#include <mqueue.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <mpq.h>

#include "bench.h"

#define WARMUP		1000
#define KIB		1024ul
#define MIB		(1024ul * 1024)
#define GIB		(1024ul * 1024 * 1024)
/*
 * Most bytes a ring or queue holds. Small enough to stay in cache: a
 * 1 MiB stream through 2 slots measured 23.6 GB/s, through 32 slots
 * (32 MiB, out of cache) 5.7 GB/s; a user moving 1 MiB messages would keep
 * a few in flight, not dozens.
 */
#define RING_BYTES	(4 * MIB)
#define RING_SLOTS	1024		/* most messages it holds */
#define MAX_BUF		(64 * MIB)	/* most bytes of one send or receive */
#define STOP		UINT64_MAX	/* mpmc: the end of the messages */
#define NPROD		2
#define NCONS		2

#define load_acquire(p)		__atomic_load_n((p), __ATOMIC_ACQUIRE)
#define load_seq(p)		__atomic_load_n((p), __ATOMIC_SEQ_CST)
#define store_release(p, v)	__atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define CACHELINE		__attribute__((aligned(64)))

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#else
	__asm__ __volatile__("" ::: "memory");
#endif
}

/* Print "mpqbench: what: error" and return -1. */
static int fail(const char *what, int err)
{
	fprintf(stderr, "mpqbench: %s: %s\n", what, strerror(err));
	return -1;
}

static int fail_msg(const char *what)
{
	fprintf(stderr, "mpqbench: %s\n", what);
	return -1;
}

static void *map_shared(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		fail("mmap", errno);
		return NULL;
	}
	return p;
}

static uint64_t get_seq(const unsigned char *msg)
{
	uint64_t v;

	memcpy(&v, msg, sizeof(v));
	return v;
}

static void put_seq(unsigned char *msg, uint64_t v)
{
	memcpy(msg, &v, sizeof(v));
}

/* Messages a ring or queue holds: 1024, fewer so it stays in RING_BYTES. */
static uint32_t slots_for(size_t size)
{
	uint32_t n = RING_SLOTS;

	while (n > 2 && (uint64_t)n * size > RING_BYTES)
		n /= 2;
	return n;
}

static long read_proc_long(const char *path)
{
	long v = -1;
	FILE *f = fopen(path, "r");

	if (!f)
		return -1;
	if (fscanf(f, "%ld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

/* ---- channels --------------------------------------------------------- */

enum wait_mode { WAIT_NONE, WAIT_SPIN, WAIT_ADAPTIVE, WAIT_BLOCK, WAIT_EPOLL };
static const char *const wait_name[] = { NULL, "spin", "adaptive", "block", "epoll" };

enum ring_kind { RING_SPIN, RING_EVENTFD, RING_FUTEX };
enum { BELL_DATA, BELL_SPACE };

/* The shared part of a ring; the slots follow on the next page. */
struct ring_shm {
	uint64_t tail CACHELINE;	/* messages published by the sender */
	uint32_t data_word;		/* futex doorbell: bumped per batch */
	uint64_t head CACHELINE;	/* messages taken by the receiver */
	uint32_t space_word;		/* futex doorbell: bumped per take */
};

struct impl;

/* One direction of messages of `size` bytes, sent `batch` at most at once. */
struct chan {
	const struct impl *impl;
	size_t size;
	unsigned int batch;
	bool flow;		/* the ring may fill: use the space doorbell */
	bool array;		/* mpq: put_array/get_array (in the padding) */
	int backend;		/* mpq: enum mpq_backend, resolved on open */
	enum wait_mode wmode;	/* mpq */
	int fd[2];		/* pipe, socket: read end, write end;
				   eventfd: data, space */
	mqd_t mq;
	struct mpq_queue *q;
	struct mpq_conn *cr, *cw;	/* mpq-conn: receiving, sending end */
	bool shares;		/* mpq-conn rtt: the ping chan's pipe */
	int epfd;
	struct iovec *iov;
	struct ring_shm *ring;
	unsigned char *slots;
	size_t map_len;
	uint64_t cap;
	uint64_t pos;		/* ring: our own index (tail or head) */
	uint64_t peer;		/* ring: the other side's index, as last seen */
};

enum side { RECEIVER, SENDER };

struct impl {
	const char *name;
	unsigned int benches;	/* 1 << enum bench */
	int ring_kind;
	int (*open)(struct chan *c);
	int (*keep)(struct chan *c, enum side side);	/* after fork */
	/* Send n messages packed in buf; 0 or -1. */
	int (*send)(struct chan *c, const unsigned char *buf, unsigned int n);
	/* Receive 1..n messages into buf; the count or -1. */
	int (*recv)(struct chan *c, unsigned char *buf, unsigned int n);
	/* After every sender is gone: 0 if nothing is left in it. */
	int (*left)(struct chan *c);
	void (*close)(struct chan *c);
};

/* -- pipe and unix-socket: a pair of fds, read end and write end */

static int fds_open_pipe(struct chan *c)
{
	return pipe(c->fd) ? fail("pipe", errno) : 0;
}

static int fds_open_socket(struct chan *c)
{
	return socketpair(AF_UNIX, SOCK_STREAM, 0, c->fd) ?
		fail("socketpair", errno) : 0;
}

static int fds_keep(struct chan *c, enum side side)
{
	int drop = side == SENDER ? 0 : 1;

	if (c->fd[drop] >= 0)
		close(c->fd[drop]);
	c->fd[drop] = -1;
	return 0;
}

static int fds_send(struct chan *c, const unsigned char *buf, unsigned int n)
{
	return bench_write_full(c->fd[1], buf, n * c->size);
}

static int fds_recv(struct chan *c, unsigned char *buf, unsigned int n)
{
	return bench_read_full(c->fd[0], buf, n * c->size) ? -1 : (int)n;
}

static int fds_left(struct chan *c)
{
	char b;
	ssize_t n;

	do
		n = read(c->fd[0], &b, 1);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return fail("read", errno);
	return n ? fail_msg("bytes left over in the channel") : 0;
}

static void fds_close(struct chan *c)
{
	int i;

	for (i = 0; i < 2; i++) {
		if (c->fd[i] >= 0)
			close(c->fd[i]);
		c->fd[i] = -1;
	}
}

/* -- rings: spin-floor (stream), eventfd, futex */

static long sys_futex(uint32_t *word, int op, uint32_t val)
{
	return syscall(SYS_futex, word, op, val, NULL, NULL, 0);
}

static int ring_open(struct chan *c)
{
	int i;

	c->cap = slots_for(c->size);
	c->map_len = (size_t)sysconf(_SC_PAGESIZE) + c->cap * c->size;
	c->ring = map_shared(c->map_len);
	if (!c->ring)
		return -1;
	c->slots = (unsigned char *)c->ring + sysconf(_SC_PAGESIZE);
	if (c->impl->ring_kind != RING_EVENTFD)
		return 0;
	for (i = 0; i < 2; i++) {
		c->fd[i] = eventfd(0, EFD_CLOEXEC);
		if (c->fd[i] < 0)
			return fail("eventfd", errno);
	}
	return 0;
}

static int ring_keep(struct chan *c, enum side side)
{
	return 0;
}

/*
 * Copy k messages between buf and the ring from position pos on: slots are
 * packed (size bytes each), so that is one memcpy, two where it wraps.
 */
static void ring_copy(struct chan *c, uint64_t pos, unsigned char *buf,
		      uint64_t k, bool in)
{
	while (k) {
		uint64_t at = pos & (c->cap - 1), run = c->cap - at;
		unsigned char *slot = c->slots + at * c->size;
		size_t len;

		if (run > k)
			run = k;
		len = run * c->size;
		if (in)
			memcpy(slot, buf, len);
		else
			memcpy(buf, slot, len);
		buf += len;
		pos += run;
		k -= run;
	}
}

/* Tell the other side that the ring changed: which is BELL_DATA/SPACE. */
static int ring_bell(struct chan *c, int which)
{
	uint32_t *word = which == BELL_DATA ? &c->ring->data_word :
					      &c->ring->space_word;
	uint64_t one = 1;

	switch (c->impl->ring_kind) {
	case RING_EVENTFD:
		return bench_write_full(c->fd[which], &one, sizeof(one));
	case RING_FUTEX:
		__atomic_fetch_add(word, 1, __ATOMIC_SEQ_CST);
		if (sys_futex(word, FUTEX_WAKE, 1) < 0)
			return fail("futex wake", errno);
		return 0;
	}
	return 0;
}

/*
 * Wait until the index *idx is no longer old (the sender's tail moved past
 * our head, or the receiver's head past tail - cap); *now gets it.
 */
static int ring_wait(struct chan *c, int which, uint64_t *idx, uint64_t old,
		     uint64_t *now)
{
	uint32_t *word = which == BELL_DATA ? &c->ring->data_word :
					      &c->ring->space_word;
	uint64_t v, cnt;
	uint32_t w;

	while ((v = load_seq(idx)) == old) {
		switch (c->impl->ring_kind) {
		case RING_SPIN:
			cpu_relax();
			break;
		case RING_EVENTFD:
			/* A stale count only makes us look again. */
			if (read(c->fd[which], &cnt, sizeof(cnt)) < 0 &&
			    errno != EINTR)
				return fail("read(eventfd)", errno);
			break;
		case RING_FUTEX:
			/* Read the word, then look again: pairs with the
			 * sender's index store, then bump. */
			w = load_seq(word);
			if (load_seq(idx) != old)
				break;
			if (sys_futex(word, FUTEX_WAIT, w) < 0 &&
			    errno != EAGAIN && errno != EINTR)
				return fail("futex wait", errno);
			break;
		}
	}
	*now = v;
	return 0;
}

static int ring_send(struct chan *c, const unsigned char *buf, unsigned int n)
{
	struct ring_shm *r = c->ring;
	uint64_t tail = c->pos, room, k;

	while (n) {
		if (tail - c->peer >= c->cap)
			c->peer = load_acquire(&r->head);
		while (tail - c->peer >= c->cap) {
			if (tail - c->peer != c->cap)
				return fail_msg("ring: head ahead of tail");
			if (!c->flow)
				return fail_msg("ring: full in a ping-pong");
			/* Publish what we have, then wait for room. */
			if (tail != c->pos) {
				store_release(&r->tail, tail);
				c->pos = tail;
				if (ring_bell(c, BELL_DATA))
					return -1;
			}
			if (ring_wait(c, BELL_SPACE, &r->head, tail - c->cap,
				      &c->peer))
				return -1;
		}
		/* As many as there is room for, in one go. */
		room = c->cap - (tail - c->peer);
		k = room < n ? room : n;
		ring_copy(c, tail, (unsigned char *)buf, k, true);
		buf += k * c->size;
		tail += k;
		n -= (unsigned int)k;
	}
	store_release(&r->tail, tail);
	c->pos = tail;
	return ring_bell(c, BELL_DATA);
}

static int ring_recv(struct chan *c, unsigned char *buf, unsigned int n)
{
	struct ring_shm *r = c->ring;
	uint64_t head = c->pos, avail, k;

	if (c->peer == head)
		c->peer = load_acquire(&r->tail);
	if (c->peer == head && ring_wait(c, BELL_DATA, &r->tail, head, &c->peer))
		return -1;
	avail = c->peer - head;
	if (avail > c->cap)
		return fail_msg("ring: tail more than a lap ahead");
	k = avail < n ? avail : n;
	ring_copy(c, head, buf, k, false);
	store_release(&r->head, head + k);
	c->pos = head + k;
	if (c->flow && ring_bell(c, BELL_SPACE))
		return -1;
	return (int)k;
}

static int ring_left(struct chan *c)
{
	return load_acquire(&c->ring->tail) != c->pos ?
		fail_msg("messages left over in the ring") : 0;
}

static void ring_close(struct chan *c)
{
	fds_close(c);
	if (c->ring)
		munmap(c->ring, c->map_len);
	c->ring = NULL;
}

/* -- posix-mq */

static int mq_open_chan(struct chan *c)
{
	static unsigned int serial;
	struct mq_attr attr;
	char name[64];
	long maxmsg = read_proc_long("/proc/sys/fs/mqueue/msg_max");

	memset(&attr, 0, sizeof(attr));
	attr.mq_maxmsg = maxmsg > 0 ? maxmsg : 10;
	attr.mq_msgsize = (long)c->size;
	snprintf(name, sizeof(name), "/mpqbench.%ld.%u", (long)getpid(), serial++);
	c->mq = mq_open(name, O_RDWR | O_CREAT | O_EXCL, 0600, &attr);
	if (c->mq == (mqd_t)-1)
		return fail("mq_open", errno);
	/* The descriptor lives on (and is inherited); the name is not needed. */
	if (mq_unlink(name))
		return fail("mq_unlink", errno);
	return 0;
}

static int mq_keep(struct chan *c, enum side side)
{
	return 0;
}

static int mq_send_chan(struct chan *c, const unsigned char *buf, unsigned int n)
{
	unsigned int i;

	for (i = 0; i < n; i++) {
		while (mq_send(c->mq, (const char *)buf + (size_t)i * c->size,
			       c->size, 0)) {
			if (errno != EINTR)
				return fail("mq_send", errno);
		}
	}
	return 0;
}

static int mq_recv_chan(struct chan *c, unsigned char *buf, unsigned int n)
{
	unsigned int i;
	ssize_t r;

	for (i = 0; i < n; i++) {
		do
			r = mq_receive(c->mq, (char *)buf + (size_t)i * c->size,
				       c->size, NULL);
		while (r < 0 && errno == EINTR);
		if (r < 0)
			return fail("mq_receive", errno);
		if ((size_t)r != c->size)
			return fail_msg("mq_receive: a message of the wrong size");
	}
	return (int)n;
}

static int mq_left(struct chan *c)
{
	struct mq_attr attr;

	if (mq_getattr(c->mq, &attr))
		return fail("mq_getattr", errno);
	return attr.mq_curmsgs ? fail_msg("messages left over in the mqueue") : 0;
}

static void mq_close_chan(struct chan *c)
{
	if (c->mq != (mqd_t)-1)
		mq_close(c->mq);
	c->mq = (mqd_t)-1;
}

/* -- mpq-queue */

static int mpq_open(struct chan *c)
{
	struct mpq_queue_attr attr;
	int ret;

	memset(&attr, 0, sizeof(attr));
	attr.maxsize = slots_for(c->size);
	attr.msgsize = (uint32_t)c->size;
	/* Issue 12's variants (see the top). */
	if (!strcmp(c->impl->name, "mpq-queue-exact"))
		attr.maxsize -= 1;
	else if (!strcmp(c->impl->name, "mpq-queue-unbounded"))
		attr.maxsize = 0;
	else if (!strcmp(c->impl->name, "mpq-queue-ool"))
		attr.msgsize = 64;
	else if (!strcmp(c->impl->name, "mpq-queue-spsc"))
		attr.flags = MPQ_QUEUE_F_ONE_PRODUCER | MPQ_QUEUE_F_ONE_CONSUMER;
	/* Batches of one size: the array calls, runs on this queue. */
	c->array = c->batch > 1 &&
		   (!strcmp(c->impl->name, "mpq-queue-spsc") ||
		    !strcmp(c->impl->name, "mpq-queue-array"));
	attr.backend = c->backend;
	attr.spin_ns = c->wmode == WAIT_SPIN ? INT64_MAX / 4 :
		       c->wmode == WAIT_ADAPTIVE ? 0 : -1;
	ret = mpq_queue_new(&c->q, &attr);
	if (ret)
		return fail("mpq_queue_new", -ret);
	c->backend = mpq_queue_backend(c->q);
	if (c->wmode == WAIT_EPOLL && c->backend != MPQ_BACKEND_KMOD)
		return fail_msg("--wait epoll needs the kmod backend (a pollable fd)");
	c->iov = calloc(c->batch, sizeof(*c->iov));
	if (!c->iov)
		return fail("calloc", ENOMEM);
	return 0;
}

static int mpq_keep(struct chan *c, enum side side)
{
	struct epoll_event ev = { .events = EPOLLIN };

	if (side != RECEIVER || c->wmode != WAIT_EPOLL)
		return 0;
	/* Made after fork: each receiver has an epoll instance of its own. */
	c->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (c->epfd < 0)
		return fail("epoll_create1", errno);
	if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, mpq_queue_fileno(c->q), &ev))
		return fail("epoll_ctl", errno);
	return 0;
}

static void mpq_fill_iov(struct chan *c, const unsigned char *buf,
			 unsigned int n)
{
	unsigned int i;

	for (i = 0; i < n; i++) {
		c->iov[i].iov_base = (void *)(buf + (size_t)i * c->size);
		c->iov[i].iov_len = c->size;
	}
}

static int mpq_send(struct chan *c, const unsigned char *buf, unsigned int n)
{
	unsigned int done = 0, i;
	int ret;

	if (c->batch == 1) {
		for (i = 0; i < n; i++) {
			ret = mpq_queue_put(c->q, buf + (size_t)i * c->size,
					    c->size, MPQ_FOREVER);
			if (ret)
				return fail("mpq_queue_put", -ret);
		}
		return 0;
	}
	if (c->array) {
		while (done < n) {
			ret = mpq_queue_put_array(c->q, buf + (size_t)done *
						  c->size, c->size, n - done,
						  MPQ_FOREVER);
			if (ret < 0)
				return fail("mpq_queue_put_array", -ret);
			if (ret == 0 || (unsigned int)ret > n - done)
				return fail_msg("mpq_queue_put_array: a count out of range");
			done += (unsigned int)ret;
		}
		return 0;
	}
	mpq_fill_iov(c, buf, n);
	while (done < n) {
		ret = mpq_queue_put_many(c->q, c->iov + done, n - done,
					 MPQ_FOREVER);
		if (ret < 0)
			return fail("mpq_queue_put_many", -ret);
		if (ret == 0 || (unsigned int)ret > n - done)
			return fail_msg("mpq_queue_put_many: a count out of range");
		done += (unsigned int)ret;
	}
	return 0;
}

static int mpq_recv(struct chan *c, unsigned char *buf, unsigned int n)
{
	int64_t timeout = c->epfd >= 0 ? 0 : MPQ_FOREVER;
	struct epoll_event ev;
	size_t len;
	int ret, i;

	for (;;) {
		if (c->batch == 1) {
			n = 1;
			len = c->size;
			ret = mpq_queue_get(c->q, buf, &len, timeout);
			if (ret == 0) {
				ret = 1;
				c->iov[0].iov_len = len;
			}
		} else if (c->array) {
			/* Each exactly size bytes, or -EMSGSIZE. */
			ret = mpq_queue_get_array(c->q, buf, c->size, n,
						  timeout);
			if (ret > 0 && (unsigned int)ret <= n)
				return ret;
		} else {
			mpq_fill_iov(c, buf, n);
			ret = mpq_queue_get_many(c->q, c->iov, n, timeout);
		}
		if (ret > 0)
			break;
		if (ret == 0)
			return fail_msg("mpq_queue_get_many: took nothing");
		if (ret != -EAGAIN || c->epfd < 0)
			return fail(c->batch == 1 ? "mpq_queue_get" :
				    "mpq_queue_get_many", -ret);
		if (epoll_wait(c->epfd, &ev, 1, -1) < 0 && errno != EINTR)
			return fail("epoll_wait", errno);
	}
	if ((unsigned int)ret > n)
		return fail_msg("mpq_queue_get_many: a count out of range");
	for (i = 0; i < ret; i++)
		if (c->iov[i].iov_len != c->size)
			return fail_msg("mpq_queue_get: a message of the wrong size");
	return ret;
}

static int mpq_left(struct chan *c)
{
	int n = mpq_queue_qsize(c->q);

	if (n < 0)
		return fail("mpq_queue_qsize", -n);
	return n ? fail_msg("messages left over in the mpq queue") : 0;
}

static void mpq_close(struct chan *c)
{
	if (c->epfd >= 0)
		close(c->epfd);
	c->epfd = -1;
	mpq_queue_free(c->q);
	c->q = NULL;
	free(c->iov);
	c->iov = NULL;
}

/*
 * -- mpq-queue-zc: the zero-copy calls. The sender reserves a slot, writes
 * the message's sequence number in place and commits the whole size; the
 * receiver peeks, reads the sequence number in place and releases. No
 * byte of the payload is copied by anyone: the use the calls are for,
 * data made or consumed where it lies (a read(2) straight into the slot,
 * a parser that reads it in place). Batches are one window per message.
 */

static int zc_send(struct chan *c, const unsigned char *buf, unsigned int n)
{
	struct mpq_msg m = { 0 };
	unsigned int i;
	int ret;

	for (i = 0; i < n; i++) {
		ret = mpq_queue_reserve(c->q, c->size, &m, MPQ_FOREVER);
		if (ret)
			return fail("mpq_queue_reserve", -ret);
		put_seq(m.data, get_seq(buf + (size_t)i * c->size));
		ret = mpq_queue_commit(c->q, &m, c->size);
		if (ret)
			return fail("mpq_queue_commit", -ret);
	}
	return 0;
}

static int zc_recv(struct chan *c, unsigned char *buf, unsigned int n)
{
	int64_t timeout = c->epfd >= 0 ? 0 : MPQ_FOREVER;
	struct mpq_msg m = { 0 };
	struct epoll_event ev;
	int ret;

	for (;;) {
		ret = mpq_queue_peek(c->q, &m, timeout);
		if (ret == 0)
			break;
		if (ret != -EAGAIN || c->epfd < 0)
			return fail("mpq_queue_peek", -ret);
		if (epoll_wait(c->epfd, &ev, 1, -1) < 0 && errno != EINTR)
			return fail("epoll_wait", errno);
	}
	if (m.len != c->size)
		return fail_msg("mpq_queue_peek: a message of the wrong size");
	put_seq(buf, get_seq(m.data));
	ret = mpq_queue_release(c->q, &m);
	if (ret)
		return fail("mpq_queue_release", -ret);
	return 1;
}

/* -- mpq-conn: a one-way mpq_pipe per channel; rtt: one duplex pipe */

static void conn_attr(const struct chan *c, struct mpq_pipe_attr *attr)
{
	memset(attr, 0, sizeof(*attr));
	/* Frames hold a quarter ring: a 1 MiB message in one frame. */
	attr->bufsize = c->size >= 65536 ? RING_BYTES : 256 * 1024;
	attr->backend = c->backend;
	attr->spin_ns = c->wmode == WAIT_SPIN ? INT64_MAX / 4 :
			c->wmode == WAIT_ADAPTIVE ? 0 : -1;
}

/* c's pipe: one-way (end 0 receives, as Python's), or duplex. */
static int conn_pipe_open(struct chan *c, int duplex)
{
	struct mpq_pipe_attr attr;
	int ret;

	conn_attr(c, &attr);
	ret = mpq_pipe(&c->cr, &c->cw, duplex, &attr);
	if (ret)
		return fail("mpq_pipe", -ret);
	c->backend = mpq_conn_backend(c->cr);
	return 0;
}

static int conn_open(struct chan *c)
{
	return conn_pipe_open(c, 0);
}

/*
 * A round trip over one duplex pipe, as Python's Pipe() makes by default
 * and as a request and its answer travel: ping from end 1 to end 0, pong
 * back, so that a small message and its answer cross in the pipe's box
 * line (mpq_pipe(3)). ping owns the ends, pong shares them.
 */
static int conn_duplex_open(struct chan *ping, struct chan *pong)
{
	if (conn_pipe_open(ping, 1))
		return -1;
	pong->cr = ping->cw;
	pong->cw = ping->cr;
	pong->shares = true;
	pong->backend = ping->backend;
	return 0;
}

static int conn_keep(struct chan *c, enum side side)
{
	struct epoll_event ev = { .events = EPOLLIN };
	int fd;

	/* Each side closes the end it does not use, as with Python's Pipe. */
	if (!c->shares)
		mpq_conn_close(side == RECEIVER ? c->cw : c->cr);
	if (side != RECEIVER || c->wmode != WAIT_EPOLL)
		return 0;
	fd = mpq_conn_fileno(c->cr);
	c->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (fd < 0 || c->epfd < 0 ||
	    epoll_ctl(c->epfd, EPOLL_CTL_ADD, fd, &ev))
		return fail("epoll on mpq_conn_fileno", fd < 0 ? -fd : errno);
	return 0;
}

static int conn_send(struct chan *c, const unsigned char *buf, unsigned int n)
{
	unsigned int i;
	int ret;

	for (i = 0; i < n; i++) {
		ret = mpq_conn_send_bytes(c->cw, buf + (size_t)i * c->size,
					  c->size, MPQ_FOREVER);
		if (ret)
			return fail("mpq_conn_send_bytes", -ret);
	}
	return 0;
}

/* One message per call: a connection has no batch receive. */
static int conn_recv(struct chan *c, unsigned char *buf, unsigned int n)
{
	int64_t timeout = c->epfd >= 0 ? 0 : MPQ_FOREVER;
	struct epoll_event ev;
	size_t len;
	int ret;

	for (;;) {
		len = c->size;
		ret = mpq_conn_recv_bytes_into(c->cr, buf, &len, timeout);
		if (ret == 0)
			break;
		if (ret != -EAGAIN || c->epfd < 0)
			return fail("mpq_conn_recv_bytes_into", -ret);
		if (epoll_wait(c->epfd, &ev, 1, -1) < 0 && errno != EINTR)
			return fail("epoll_wait", errno);
	}
	if (len != c->size)
		return fail_msg("mpq_conn_recv_bytes_into: a message of the wrong size");
	return 1;
}

static int conn_left(struct chan *c)
{
	unsigned char b[8];
	size_t len = sizeof(b);
	int ret = mpq_conn_recv_bytes_into(c->cr, b, &len, 0);

	if (ret == -EAGAIN || ret == -EPIPE)
		return 0;
	return fail_msg("messages left over in the mpq connection");
}

static void conn_close(struct chan *c)
{
	if (c->epfd >= 0)
		close(c->epfd);
	c->epfd = -1;
	if (!c->shares) {
		mpq_conn_free(c->cr);
		mpq_conn_free(c->cw);
	}
	c->cr = c->cw = NULL;
}

/* ---- the table --------------------------------------------------------- */

enum bench { BENCH_RTT, BENCH_STREAM, BENCH_MPMC, BENCH_MEMCPY, NBENCH };
static const char *const bench_name[NBENCH] = { "rtt", "stream", "mpmc", "memcpy" };

#define B(x)	(1u << BENCH_##x)
#define RING_OPS	ring_open, ring_keep, ring_send, ring_recv, ring_left, ring_close
#define FD_OPS		fds_keep, fds_send, fds_recv, fds_left, fds_close

static const struct impl impls[] = {
	{ "spin-floor", B(RTT) | B(STREAM), RING_SPIN, RING_OPS },
	{ "spin-floor-2", B(RTT), RING_SPIN, RING_OPS },
	{ "pipe", B(RTT) | B(STREAM) | B(MPMC), 0, fds_open_pipe, FD_OPS },
	{ "unix-socket", B(RTT) | B(STREAM), 0, fds_open_socket, FD_OPS },
	{ "eventfd", B(RTT) | B(STREAM), RING_EVENTFD, RING_OPS },
	{ "futex", B(RTT) | B(STREAM), RING_FUTEX, RING_OPS },
	{ "posix-mq", B(RTT) | B(STREAM) | B(MPMC), 0, mq_open_chan, mq_keep,
	  mq_send_chan, mq_recv_chan, mq_left, mq_close_chan },
	{ "mpq-queue", B(RTT) | B(STREAM) | B(MPMC), 0, mpq_open, mpq_keep,
	  mpq_send, mpq_recv, mpq_left, mpq_close },
	{ "mpq-queue-zc", B(RTT) | B(STREAM), 0, mpq_open, mpq_keep,
	  zc_send, zc_recv, mpq_left, mpq_close },
	{ "mpq-queue-exact", B(RTT) | B(STREAM), 0, mpq_open, mpq_keep,
	  mpq_send, mpq_recv, mpq_left, mpq_close },
	{ "mpq-queue-unbounded", B(RTT) | B(STREAM), 0, mpq_open, mpq_keep,
	  mpq_send, mpq_recv, mpq_left, mpq_close },
	{ "mpq-queue-ool", B(RTT) | B(STREAM), 0, mpq_open, mpq_keep,
	  mpq_send, mpq_recv, mpq_left, mpq_close },
	{ "mpq-queue-spsc", B(RTT) | B(STREAM), 0, mpq_open, mpq_keep,
	  mpq_send, mpq_recv, mpq_left, mpq_close },
	{ "mpq-queue-array", B(STREAM) | B(MPMC), 0, mpq_open, mpq_keep,
	  mpq_send, mpq_recv, mpq_left, mpq_close },
	{ "mpq-conn", B(RTT) | B(STREAM), 0, conn_open, conn_keep, conn_send,
	  conn_recv, conn_left, conn_close },
	{ "memcpy", B(MEMCPY), 0, NULL, NULL, NULL, NULL, NULL, NULL },
	{ "memcpy-dram", B(MEMCPY), 0, NULL, NULL, NULL, NULL, NULL, NULL },
};

#define NIMPL	(sizeof(impls) / sizeof(impls[0]))

static bool is_impl(const struct impl *im, const char *name)
{
	return !strcmp(im->name, name);
}

/* mpq's own objects: they have a backend and a wait mode. */
static bool is_mpq(const struct impl *im)
{
	return !strncmp(im->name, "mpq-", 4);
}

/* A channel's fields, nothing opened yet. */
static void chan_init(struct chan *c, const struct impl *im, size_t size,
		      unsigned int batch, bool flow, int backend,
		      enum wait_mode wmode)
{
	memset(c, 0, sizeof(*c));
	c->impl = im;
	c->size = size;
	c->batch = batch;
	c->flow = flow;
	c->backend = backend;
	c->wmode = wmode;
	c->fd[0] = c->fd[1] = c->epfd = -1;
	c->mq = (mqd_t)-1;
}

static int chan_open(struct chan *c, const struct impl *im, size_t size,
		     unsigned int batch, bool flow, int backend,
		     enum wait_mode wmode)
{
	chan_init(c, im, size, batch, flow, backend, wmode);
	if (im->open(c)) {
		im->close(c);
		return -1;
	}
	return 0;
}

/* ---- cells ------------------------------------------------------------ */

struct cell {
	enum bench bench;
	const struct impl *impl;
	int backend;		/* mpq-queue: enum mpq_backend */
	enum wait_mode wmode;	/* mpq-queue */
	size_t size;
	unsigned int batch;
	uint64_t count;		/* 0: the default */
	bool quick, verbose;
};

static bool have_kmod(void)
{
	return access("/dev/mpq", F_OK) == 0;
}

/* Largest posix-mq message, 0 if POSIX message queues are unavailable. */
static size_t mq_size_max(void)
{
	long v = read_proc_long("/proc/sys/fs/mqueue/msgsize_max");

	return v > 0 ? (size_t)v : 0;
}

static void print_cell_head(const struct cell *cl)
{
	const bool mpq = is_mpq(cl->impl);

	printf("{\"bench\":\"%s\",\"impl\":\"%s\",\"backend\":", bench_name[cl->bench],
	       cl->impl->name);
	if (mpq)
		printf("\"%s\",\"wait\":\"%s\"", mpq_backend_name(cl->backend),
		       wait_name[cl->wmode]);
	else
		printf("null,\"wait\":null");
	printf(",\"size\":%zu,\"batch\":%u", cl->size, cl->batch);
}

static void row(const struct cell *cl, const char *metric, double value,
		uint64_t count)
{
	print_cell_head(cl);
	printf(",\"metric\":\"%s\",\"value\":%.0f,\"count\":%" PRIu64 "}\n",
	       metric, value, count);
}

/* Can this machine run the cell? (Listing and command line alike.) */
static const char *cell_unsupported(const struct cell *cl)
{
	const char *im = cl->impl->name;

	if (!(cl->impl->benches & (1u << cl->bench)))
		return "this impl has no such bench";
	if (!is_mpq(cl->impl) &&
	    (cl->wmode != WAIT_NONE || cl->backend != MPQ_BACKEND_DEFAULT))
		return "--wait and --backend are for mpq objects only";
	if (cl->bench == BENCH_MEMCPY)
		return cl->size && cl->batch == 1 ? NULL : "memcpy: batch 1 only";
	if (cl->size < 8)
		return "--size: 8 bytes at least (the sequence number)";
	if (cl->size > 64 * MIB || (uint64_t)cl->size * cl->batch > MAX_BUF)
		return "--size * --batch: 64 MiB at most";
	if (cl->batch < 1)
		return "--batch: 1 at least";
	if (cl->bench != BENCH_STREAM && cl->batch != 1 &&
	    !(cl->bench == BENCH_MPMC && !strcmp(im, "mpq-queue-array")))
		return "batches are for the stream bench (and mpmc mpq-queue-array) only";
	if (cl->bench == BENCH_MPMC && cl->size != 8)
		return "mpmc: 8-byte messages only";
	if (!strcmp(im, "spin-floor") && cl->bench == BENCH_RTT && cl->size != 8)
		return "spin-floor rtt: 8 bytes only (one counter)";
	if (!strcmp(im, "spin-floor-2") && cl->size != 8)
		return "spin-floor-2: 8 bytes only (a counter each way)";
	if (!strcmp(im, "posix-mq") && cl->size > mq_size_max())
		return "posix-mq: larger than fs.mqueue.msgsize_max (or no mqueue)";
	if (!is_mpq(cl->impl))
		return NULL;
	if (cl->size > UINT32_MAX)
		return "mpq: message too large";
	if (cl->backend == MPQ_BACKEND_KMOD && !have_kmod())
		return "kmod backend: no /dev/mpq here";
	if (!strcmp(im, "mpq-conn") && cl->bench == BENCH_STREAM && cl->batch != 1)
		return "mpq-conn: a message per call, no batches";
	/* A memfd connection's fd polls; a memfd queue's does not. */
	if (cl->wmode == WAIT_EPOLL && cl->backend != MPQ_BACKEND_KMOD &&
	    strncmp(im, "mpq-queue", 9) == 0)
		return "--wait epoll: kmod backend only (--backend kmod)";
	/* Issue 12's variants: the cells that compare them, adaptive only. */
	if ((!strcmp(im, "mpq-queue-exact") ||
	     !strcmp(im, "mpq-queue-unbounded")) &&
	    (cl->size != 8 || cl->wmode != WAIT_ADAPTIVE))
		return "mpq-queue-exact/-unbounded: 8 B, adaptive wait";
	if (!strcmp(im, "mpq-queue-spsc") &&
	    ((cl->size != 8 && cl->size != 1024) ||
	     cl->wmode != WAIT_ADAPTIVE))
		return "mpq-queue-spsc: 8 B and 1 KiB, adaptive wait";
	if (!strcmp(im, "mpq-queue-array") &&
	    ((cl->size != 8 && cl->size != 1024) || cl->batch == 1 ||
	     (cl->wmode != WAIT_ADAPTIVE &&
	      (cl->bench != BENCH_MPMC || cl->wmode != WAIT_BLOCK))))
		return "mpq-queue-array: batches, 8 B and 1 KiB, adaptive wait "
		       "(mpmc: block too)";
	if (!strcmp(im, "mpq-queue-ool") &&
	    (cl->size < 65536 || cl->batch != 1 || cl->wmode != WAIT_ADAPTIVE))
		return "mpq-queue-ool: 64 KiB and up, batch 1, adaptive wait";
	/* Zero-copy: the sizes the goal is about, a window per message. */
	if (!strcmp(im, "mpq-queue-zc") &&
	    (cl->batch != 1 || (cl->size != 64 && cl->size != 1048576) ||
	     cl->wmode != WAIT_ADAPTIVE))
		return "mpq-queue-zc: 64 B and 1 MiB, batch 1, adaptive wait";
	return NULL;
}

static void list_cells(void)
{
	static const size_t rtt_sizes[] = { 8, 64, 256, 1024, 4096, 65536, 1048576 };
	static const struct { size_t size; unsigned int batch; } stream_cells[] = {
		{ 8, 1 }, { 8, 8 }, { 8, 32 }, { 8, 256 },
		{ 64, 1 }, { 1024, 1 }, { 65536, 1 }, { 1048576, 1 },
	};
	static const int backends[] = { MPQ_BACKEND_MEMFD, MPQ_BACKEND_KMOD };
	static const enum wait_mode waits[] = {
		WAIT_SPIN, WAIT_ADAPTIVE, WAIT_BLOCK, WAIT_EPOLL,
	};
	unsigned int b, i, k, v, nshape;
	struct cell cl;

	for (b = 0; b < NBENCH; b++) {
		nshape = b == BENCH_RTT ? 7 : b == BENCH_STREAM ? 8 : 1;
		for (i = 0; i < NIMPL; i++) {
			const bool mpq = is_mpq(&impls[i]);
			/* mpq: backend x wait mode; the rest: one variant */
			unsigned int nvar = mpq ? 8 : 1;

			for (v = 0; v < nvar; v++) {
				for (k = 0; k < nshape; k++) {
					memset(&cl, 0, sizeof(cl));
					cl.bench = b;
					cl.impl = &impls[i];
					cl.batch = 1;
					cl.size = b == BENCH_RTT ? rtt_sizes[k] :
						  b == BENCH_STREAM ? stream_cells[k].size :
						  b == BENCH_MPMC ? 8 : MIB;
					if (b == BENCH_STREAM)
						cl.batch = stream_cells[k].batch;
					/* 2P2C in batches: runs under their busy bit. */
					if (b == BENCH_MPMC &&
					    is_impl(cl.impl, "mpq-queue-array"))
						cl.batch = 256;
					if (mpq) {
						cl.backend = backends[v / 4];
						cl.wmode = waits[v % 4];
						if (b == BENCH_MPMC && cl.wmode != WAIT_ADAPTIVE &&
						    cl.batch == 1)
							continue;
					}
					if (cell_unsupported(&cl))
						continue;
					print_cell_head(&cl);
					printf("}\n");
				}
			}
		}
	}
}

/* ---- rtt ---------------------------------------------------------------- */

/*
 * Both directions of a ping-pong: two channels, or a spin floor's counter
 * lines: pings go to line, answers to back (the same line for spin-floor,
 * which counts by step 2, one count for each; the next one for
 * spin-floor-2, step 1).
 */
struct link {
	struct chan ping, pong;
	uint64_t *line, *back, step;
	unsigned char *buf;
	size_t size;
};

/* Spin until *w holds want; the only other value it may hold is want - 1. */
static int spin_until(uint64_t *w, uint64_t want)
{
	uint64_t v;

	while ((v = load_acquire(w)) != want) {
		if (v != want - 1)
			return fail_msg("spin-floor: the counter jumped");
		cpu_relax();
	}
	return 0;
}

/* The initiator's exchange number i: send, wait for the answer, check. */
static int rtt_exchange(struct link *l, uint64_t i)
{
	uint64_t ping = l->step * i + 1;

	if (l->line) {
		store_release(l->line, ping);
		return spin_until(l->back, ping + l->step - 1);
	}
	put_seq(l->buf, i);
	if (l->ping.impl->send(&l->ping, l->buf, 1) ||
	    l->pong.impl->recv(&l->pong, l->buf, 1) != 1)
		return -1;
	if (get_seq(l->buf) != i)
		return fail_msg("rtt: the answer carries the wrong sequence number");
	return 0;
}

/* The echo's side of exchange i. */
static int rtt_answer(struct link *l, uint64_t i)
{
	uint64_t ping = l->step * i + 1;

	if (l->line) {
		if (spin_until(l->line, ping))
			return -1;
		store_release(l->back, ping + l->step - 1);
		return 0;
	}
	if (l->ping.impl->recv(&l->ping, l->buf, 1) != 1)
		return -1;
	if (get_seq(l->buf) != i)
		return fail_msg("rtt: a ping carries the wrong sequence number");
	return l->pong.impl->send(&l->pong, l->buf, 1);
}

static int link_keep(struct link *l, bool initiator)
{
	if (l->line)
		return 0;
	if (l->ping.impl->keep(&l->ping, initiator ? SENDER : RECEIVER))
		return -1;
	return l->pong.impl->keep(&l->pong, initiator ? RECEIVER : SENDER);
}

static void link_close(struct link *l)
{
	if (l->line) {
		munmap(l->line, 4096);
		return;
	}
	l->ping.impl->close(&l->ping);
	l->pong.impl->close(&l->pong);
}

static int run_rtt(struct cell *cl, char *what)
{
	static const char *const metric[5] = {
		"rtt_p50_ns", "rtt_p90_ns", "rtt_p99_ns", "rtt_p999_ns", "rtt_max_ns",
	};
	static const double pct[4] = { 50, 90, 99, 99.9 };
	uint64_t n = cl->count, i, t0, *samples;
	struct rusage ru = { 0 };
	struct link l;
	long sleeps;
	pid_t pid;
	int err = 0, k;

	if (!n) {
		n = cl->size <= 4 * KIB ? 100000 : cl->size <= 64 * KIB ? 20000 : 2000;
		if (cl->quick)
			n /= 10;
	}
	if (n > 10000000)
		return fail_msg("--count: 10,000,000 round trips at most");
	samples = malloc(n * sizeof(*samples));
	memset(&l, 0, sizeof(l));
	l.size = cl->size;
	l.buf = aligned_alloc(64, (cl->size + 63) & ~(size_t)63);
	if (!samples || !l.buf)
		return fail("malloc", ENOMEM);
	if (is_impl(cl->impl, "spin-floor") ||
	    is_impl(cl->impl, "spin-floor-2")) {
		l.line = map_shared(4096);
		if (!l.line)
			return -1;
		l.back = l.line;
		l.step = 2;
		/* 128 bytes on: past the adjacent-line prefetcher's pair. */
		if (is_impl(cl->impl, "spin-floor-2")) {
			l.back = l.line + 128 / sizeof(*l.line);
			l.step = 1;
		}
	} else if (is_impl(cl->impl, "mpq-conn")) {
		chan_init(&l.ping, cl->impl, cl->size, 1, false, cl->backend,
			  cl->wmode);
		chan_init(&l.pong, cl->impl, cl->size, 1, false, cl->backend,
			  cl->wmode);
		if (conn_duplex_open(&l.ping, &l.pong))
			return -1;
		cl->backend = l.ping.backend;
	} else {
		if (chan_open(&l.ping, cl->impl, cl->size, 1, false, cl->backend,
			      cl->wmode))
			return -1;
		if (chan_open(&l.pong, cl->impl, cl->size, 1, false, cl->backend,
			      cl->wmode))
			return -1;
		cl->backend = l.ping.backend;
	}

	sleeps = bench_sleeps();
	pid = bench_fork(what);
	if (pid < 0)
		return -1;
	if (pid == 0) {
		if (link_keep(&l, false))
			_exit(1);
		for (i = 0; i < WARMUP + n; i++)
			if (rtt_answer(&l, i))
				_exit(1);
		_exit(0);
	}
	err = link_keep(&l, true);
	for (i = 0; !err && i < WARMUP + n; i++) {
		t0 = bench_now_ns();
		if (rtt_exchange(&l, i)) {
			err = -1;
			break;
		}
		if (i >= WARMUP)
			samples[i - WARMUP] = bench_now_ns() - t0;
	}
	if (err)
		bench_kill(pid);
	else if (bench_wait(pid, &ru))
		err = -1;
	link_close(&l);
	free(l.buf);
	if (err) {
		free(samples);
		return -1;
	}
	if (cl->verbose)
		fprintf(stderr, "mpqbench: %s: sleeps: initiator %ld, echo %ld\n",
			what, bench_sleeps() - sleeps, ru.ru_nvcsw);
	qsort(samples, n, sizeof(*samples), bench_cmp_u64);
	for (k = 0; k < 4; k++)
		row(cl, metric[k], (double)bench_percentile(samples, n, pct[k]), n);
	row(cl, metric[4], (double)samples[n - 1], n);
	free(samples);
	return 0;
}

/* ---- stream ------------------------------------------------------------- */

static int stream_produce(struct chan *c, uint64_t m, unsigned int batch)
{
	unsigned char *buf = aligned_alloc(64, ((size_t)batch * c->size + 63) & ~(size_t)63);
	uint64_t i = 0;
	unsigned int j, k;

	if (!buf)
		return fail("malloc", ENOMEM);
	memset(buf, 0xa5, (size_t)batch * c->size);
	while (i < m) {
		k = m - i < batch ? (unsigned int)(m - i) : batch;
		for (j = 0; j < k; j++)
			put_seq(buf + (size_t)j * c->size, i + j);
		if (c->impl->send(c, buf, k))
			return -1;
		i += k;
	}
	free(buf);
	return 0;
}

static int run_stream(struct cell *cl, char *what)
{
	uint64_t m = cl->count, got = 0, first_n = 0, t_first = 0, t_last, v, cpu;
	unsigned char *buf;
	struct rusage ru = { 0 };
	struct chan c;
	double rate;
	long sleeps;
	pid_t pid;
	int err = 0, k, j;

	if (!m) {
		m = GIB * 2 / cl->size / 1000 * 1000;
		if (m > 2000000)
			m = 2000000;
		if (m < 2000)
			m = 2000;
		if (cl->quick)
			m /= 10;
	}
	buf = aligned_alloc(64, ((size_t)cl->batch * cl->size + 63) & ~(size_t)63);
	if (!buf)
		return fail("malloc", ENOMEM);
	if (chan_open(&c, cl->impl, cl->size, cl->batch, true, cl->backend,
		      cl->wmode))
		return -1;
	cl->backend = c.backend;

	sleeps = bench_sleeps();
	cpu = bench_cpu_ns();
	pid = bench_fork(what);
	if (pid < 0)
		return -1;
	if (pid == 0) {
		_exit(c.impl->keep(&c, SENDER) ||
		      stream_produce(&c, m, cl->batch) ? 1 : 0);
	}
	err = c.impl->keep(&c, RECEIVER);
	while (!err && got < m) {
		unsigned int want = m - got < cl->batch ? (unsigned int)(m - got) :
							  cl->batch;

		k = c.impl->recv(&c, buf, want);
		if (k <= 0 || (unsigned int)k > want) {
			err = k <= 0 ? -1 : fail_msg("received more than asked for");
			break;
		}
		if (!got) {
			t_first = bench_now_ns();
			first_n = (uint64_t)k;
		}
		for (j = 0; j < k; j++) {
			v = get_seq(buf + (size_t)j * cl->size);
			if (v != got + (uint64_t)j) {
				fprintf(stderr, "mpqbench: %s: message %" PRIu64
					" carries %" PRIu64 " (lost, duplicated or out of order)\n",
					what, got + (uint64_t)j, v);
				err = -1;
				break;
			}
		}
		if (err)
			break;
		got += (uint64_t)k;
	}
	t_last = bench_now_ns();
	if (err)
		bench_kill(pid);
	else if (bench_wait(pid, &ru) || c.impl->left(&c))
		err = -1;
	cpu = bench_cpu_ns() - cpu;
	c.impl->close(&c);
	free(buf);
	if (err)
		return -1;
	if (m <= first_n || t_last <= t_first)
		return fail_msg("too few messages to time: raise --count");
	if (cl->verbose)
		fprintf(stderr, "mpqbench: %s: sleeps: consumer %ld, producer %ld\n",
			what, bench_sleeps() - sleeps, ru.ru_nvcsw);
	rate = (double)(m - first_n) * 1e9 / (double)(t_last - t_first);
	row(cl, "msgs_per_s", rate, m);
	row(cl, "bytes_per_s", rate * (double)cl->size, m);
	row(cl, "cpu_ns_per_msg", (double)cpu / (double)m, m);
	return 0;
}

/* ---- mpmc --------------------------------------------------------------- */

struct mpmc_shm {
	uint32_t ready CACHELINE;	/* children set up */
	uint32_t go;			/* producers may start */
	uint32_t producers_done CACHELINE;
	struct {
		uint64_t count;
		uint64_t stop_ns;
	} cons[NCONS] CACHELINE;
	/* then NCONS seen-bitmaps of `words` uint64_t each, page aligned */
};

#define SEQ_BITS	56
#define SEQ_MASK	((1ull << SEQ_BITS) - 1)

static int mpmc_produce(struct chan *c, struct mpmc_shm *sh, unsigned int p,
			uint64_t per, unsigned char *buf)
{
	unsigned char msg[8];
	uint64_t i;
	unsigned int j, n;

	__atomic_add_fetch(&sh->ready, 1, __ATOMIC_SEQ_CST);
	while (!load_acquire(&sh->go))
		sched_yield();
	for (i = 0; i < per; i += n) {
		n = per - i < c->batch ? (unsigned int)(per - i) : c->batch;
		for (j = 0; j < n; j++)
			put_seq(buf + (size_t)j * 8, (uint64_t)p << SEQ_BITS | (i + j));
		if (c->impl->send(c, buf, n))
			return -1;
	}
	/* The last producer out puts the stops behind everyone's messages. */
	if (__atomic_add_fetch(&sh->producers_done, 1, __ATOMIC_SEQ_CST) == NPROD) {
		put_seq(msg, STOP);
		for (i = 0; i < NCONS; i++)
			if (c->impl->send(c, msg, 1))
				return -1;
	}
	return 0;
}

/* One message of producer p's: in its order, seen once. */
static int mpmc_check(uint64_t v, uint64_t *seen, int64_t *last, uint64_t per)
{
	unsigned int p = (unsigned int)(v >> SEQ_BITS);
	uint64_t seq = v & SEQ_MASK, bit;

	if (p >= NPROD || seq >= per) {
		fprintf(stderr, "mpqbench: mpmc: a bogus message %#" PRIx64 "\n", v);
		return -1;
	}
	if ((int64_t)seq <= last[p]) {
		fprintf(stderr, "mpqbench: mpmc: producer %u's message %" PRIu64
			" after its %" PRId64 " (out of order or duplicated)\n",
			p, seq, last[p]);
		return -1;
	}
	last[p] = (int64_t)seq;
	bit = p * per + seq;
	if (seen[bit / 64] & (1ull << (bit % 64))) {
		fprintf(stderr, "mpqbench: mpmc: message (%u, %" PRIu64
			") received twice\n", p, seq);
		return -1;
	}
	seen[bit / 64] |= 1ull << (bit % 64);
	return 0;
}

/*
 * Take batches of up to c->batch until a stop. The stops come after
 * every message; a consumer whose batch held more than one puts the
 * others back for the rest.
 */
static int mpmc_consume(struct chan *c, struct mpmc_shm *sh, uint64_t *seen,
			unsigned int me, uint64_t per, unsigned char *buf)
{
	int64_t last[NPROD];
	uint64_t v, count = 0;
	unsigned int p, stops = 0;
	int k, j;

	for (p = 0; p < NPROD; p++)
		last[p] = -1;
	__atomic_add_fetch(&sh->ready, 1, __ATOMIC_SEQ_CST);
	while (!stops) {
		k = c->impl->recv(c, buf, c->batch);
		if (k < 1 || (unsigned int)k > c->batch)
			return -1;
		for (j = 0; j < k; j++) {
			v = get_seq(buf + (size_t)j * 8);
			if (v == STOP) {
				stops++;
				continue;
			}
			if (mpmc_check(v, seen, last, per))
				return -1;
			count++;
		}
	}
	sh->cons[me].stop_ns = bench_now_ns();
	sh->cons[me].count = count;
	put_seq(buf, STOP);
	while (--stops)
		if (c->impl->send(c, buf, 1))
			return -1;
	return 0;
}

static int run_mpmc(struct cell *cl, char *what)
{
	uint64_t m = cl->count, per, words, w, total = 0, t0, t_end = 0, cpu;
	size_t page = (size_t)sysconf(_SC_PAGESIZE), head, len;
	struct mpmc_shm *sh;
	uint64_t *seen[NCONS];
	unsigned char *buf;
	struct chan c;
	unsigned int i;
	pid_t pid;
	int err = 0;

	if (!m)
		m = cl->quick ? 200000 : 2000000;
	if (m > 1000000000)
		return fail_msg("--count: 1,000,000,000 messages at most");
	per = (m + NPROD - 1) / NPROD;
	m = per * NPROD;
	words = (m + 63) / 64;
	head = (sizeof(*sh) + page - 1) / page * page;
	len = head + NCONS * words * sizeof(uint64_t);
	sh = map_shared(len);
	if (!sh)
		return -1;
	for (i = 0; i < NCONS; i++)
		seen[i] = (uint64_t *)((unsigned char *)sh + head) + i * words;
	if (chan_open(&c, cl->impl, 8, cl->batch, true, cl->backend,
		      cl->wmode))
		return -1;
	cl->backend = c.backend;
	buf = malloc((size_t)cl->batch * 8);
	if (!buf)
		return fail("malloc", ENOMEM);

	cpu = bench_cpu_ns();
	for (i = 0; i < NPROD + NCONS; i++) {
		pid = bench_fork_member(what);
		if (pid < 0) {
			bench_kill_group();
			return -1;
		}
		if (pid == 0) {
			bool prod = i < NPROD;

			if (c.impl->keep(&c, prod ? SENDER : RECEIVER))
				_exit(1);
			_exit(prod ? (mpmc_produce(&c, sh, i, per, buf) ? 1 : 0) :
			       (mpmc_consume(&c, sh, seen[i - NPROD], i - NPROD,
					     per, buf) ? 1 : 0));
		}
	}
	/* The parent keeps no write end: left() then sees the end of file. */
	if (c.impl->keep(&c, RECEIVER)) {
		bench_kill_group();
		return -1;
	}
	while (load_acquire(&sh->ready) < NPROD + NCONS)
		sched_yield();
	t0 = bench_now_ns();
	store_release(&sh->go, 1);
	if (bench_wait_group() || c.impl->left(&c))
		err = -1;
	cpu = bench_cpu_ns() - cpu;
	c.impl->close(&c);
	free(buf);
	/* Every message seen exactly once, by one consumer. */
	for (w = 0; !err && w < words; w++) {
		uint64_t all = w == words - 1 && m % 64 ? (1ull << (m % 64)) - 1 : ~0ull;

		if ((seen[0][w] & seen[1][w]) || (seen[0][w] | seen[1][w]) != all) {
			fprintf(stderr, "mpqbench: %s: messages %" PRIu64 "..%" PRIu64
				" lost or seen by both consumers\n", what, w * 64, w * 64 + 63);
			err = -1;
		}
	}
	for (i = 0; i < NCONS; i++) {
		total += sh->cons[i].count;
		if (sh->cons[i].stop_ns > t_end)
			t_end = sh->cons[i].stop_ns;
	}
	munmap(sh, len);
	if (err)
		return -1;
	if (total != m || t_end <= t0)
		return fail_msg("mpmc: the consumers' counts do not add up");
	row(cl, "msgs_per_s", (double)m * 1e9 / (double)(t_end - t0), m);
	row(cl, "cpu_ns_per_msg", (double)cpu / (double)m, m);
	return 0;
}

/* ---- memcpy ------------------------------------------------------------- */

/*
 * One core copying in chunks of --size: "memcpy" within RING_BYTES, the
 * working set of a stream through a ring or queue, so in cache like them;
 * "memcpy-dram" through 256 MiB, out of cache (the single-core figure,
 * about 12 GB/s on these machines).
 */
static int run_memcpy(struct cell *cl)
{
	bool dram = is_impl(cl->impl, "memcpy-dram");
	size_t total = !dram ? RING_BYTES : cl->quick ? 64 * MIB : 256 * MIB;
	size_t chunk = cl->size, off, n;
	uint64_t passes = cl->count ? cl->count : dram ? 4 : 256, p, t0 = 0, t1;
	unsigned char *src, *dst;

	if (chunk > total)
		return fail_msg("memcpy: --size larger than the buffer");
	src = mmap(NULL, total, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	dst = mmap(NULL, total, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (src == MAP_FAILED || dst == MAP_FAILED)
		return fail("mmap", errno);
	memset(src, 0x5a, total);
	for (p = 0; p <= passes; p++) {
		if (p == 1)
			t0 = bench_now_ns();
		for (off = 0; off < total; off += chunk) {
			n = total - off < chunk ? total - off : chunk;
			memcpy(dst + off, src + off, n);
		}
		__asm__ __volatile__("" ::: "memory");
	}
	t1 = bench_now_ns();
	if (memcmp(src, dst, total))
		return fail_msg("memcpy: the copy differs");
	munmap(src, total);
	munmap(dst, total);
	row(cl, "bytes_per_s", (double)total * (double)passes * 1e9 / (double)(t1 - t0),
	    passes * ((total + chunk - 1) / chunk));
	return 0;
}

/* ---- main --------------------------------------------------------------- */

static uint64_t parse_num(const char *s, const char *opt)
{
	unsigned long long v;
	char *end;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || !*s || s[0] == '-' || v == 0) {
		fprintf(stderr, "mpqbench: %s: expected a positive number, got \"%s\"\n",
			opt, s);
		exit(2);
	}
	return v;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: mpqbench --list [--quick]\n"
		"       mpqbench BENCH IMPL [--size BYTES] [--batch N] [--backend kmod|memfd]\n"
		"                [--wait spin|adaptive|block|epoll] [--quick] [--count N] [-v]\n"
		"  BENCH  rtt, stream, mpmc, memcpy\n"
		"  IMPL   spin-floor, spin-floor-2, pipe, unix-socket, eventfd, futex,\n"
		"         posix-mq, mpq-queue, mpq-conn, memcpy, memcpy-dram\n"
		"  --count  round trips (rtt), messages (stream, mpmc), passes (memcpy)\n"
		"  -v       how often each side slept, on stderr\n"
		"One JSON row per metric on stdout. BENCH_TIMEOUT (s) bounds the run.\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "list", no_argument, NULL, 'l' },
		{ "quick", no_argument, NULL, 'q' },
		{ "size", required_argument, NULL, 's' },
		{ "batch", required_argument, NULL, 'b' },
		{ "backend", required_argument, NULL, 'B' },
		{ "wait", required_argument, NULL, 'w' },
		{ "count", required_argument, NULL, 'n' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct cell cl;
	bool list = false, mpq;
	const char *why;
	char what[160];
	unsigned int i;
	int opt, ret;

	memset(&cl, 0, sizeof(cl));
	cl.batch = 1;
	while ((opt = getopt_long(argc, argv, "vh", opts, NULL)) != -1) {
		switch (opt) {
		case 'l':
			list = true;
			break;
		case 'q':
			cl.quick = true;
			break;
		case 's':
			cl.size = parse_num(optarg, "--size");
			break;
		case 'b':
			if (parse_num(optarg, "--batch") > 65536) {
				fprintf(stderr, "mpqbench: --batch: 65536 at most\n");
				return 2;
			}
			cl.batch = (unsigned int)parse_num(optarg, "--batch");
			break;
		case 'B':
			if (!strcmp(optarg, "kmod"))
				cl.backend = MPQ_BACKEND_KMOD;
			else if (!strcmp(optarg, "memfd"))
				cl.backend = MPQ_BACKEND_MEMFD;
			else {
				fprintf(stderr, "mpqbench: --backend: kmod or memfd\n");
				return 2;
			}
			break;
		case 'w':
			for (i = WAIT_SPIN; i <= WAIT_EPOLL; i++)
				if (!strcmp(optarg, wait_name[i]))
					cl.wmode = i;
			if (cl.wmode == WAIT_NONE) {
				fprintf(stderr, "mpqbench: --wait: spin, adaptive, block or epoll\n");
				return 2;
			}
			break;
		case 'n':
			cl.count = parse_num(optarg, "--count");
			break;
		case 'v':
			cl.verbose = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (list) {
		if (optind != argc) {
			usage(stderr);
			return 2;
		}
		list_cells();
		return fflush(stdout) ? 1 : 0;
	}
	if (argc - optind != 2) {
		usage(stderr);
		return 2;
	}
	for (i = 0; i < NBENCH && strcmp(argv[optind], bench_name[i]); i++)
		;
	if (i == NBENCH) {
		fprintf(stderr, "mpqbench: no bench \"%s\"\n", argv[optind]);
		return 2;
	}
	cl.bench = i;
	for (i = 0; i < NIMPL && !is_impl(&impls[i], argv[optind + 1]); i++)
		;
	if (i == NIMPL) {
		fprintf(stderr, "mpqbench: no impl \"%s\"\n", argv[optind + 1]);
		return 2;
	}
	cl.impl = &impls[i];
	mpq = is_mpq(cl.impl);
	if (!cl.size)
		cl.size = cl.bench == BENCH_MEMCPY ? MIB : 8;
	if (mpq && cl.wmode == WAIT_NONE)
		cl.wmode = WAIT_ADAPTIVE;
	why = cell_unsupported(&cl);
	if (why) {
		fprintf(stderr, "mpqbench: %s %s: %s\n", bench_name[cl.bench],
			cl.impl->name, why);
		return 2;
	}
	snprintf(what, sizeof(what), "%s %s%s%s%s%s, %zu B, batch %u",
		 bench_name[cl.bench], cl.impl->name, mpq ? " " : "",
		 !mpq ? "" : cl.backend ? mpq_backend_name(cl.backend) : "default",
		 mpq ? " " : "", mpq ? wait_name[cl.wmode] : "", cl.size, cl.batch);

	bench_install_handlers();
	bench_pin_init();
	bench_what = what;
	alarm(bench_timeout_s);	/* the whole cell, set up included */
	switch (cl.bench) {
	case BENCH_RTT:
		ret = run_rtt(&cl, what);
		break;
	case BENCH_STREAM:
		ret = run_stream(&cl, what);
		break;
	case BENCH_MPMC:
		ret = run_mpmc(&cl, what);
		break;
	default:
		ret = run_memcpy(&cl);
		break;
	}
	alarm(0);
	if (fflush(stdout))
		return 1;
	return ret ? 1 : 0;
}
