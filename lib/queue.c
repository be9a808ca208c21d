// SPDX-License-Identifier: MIT
/*
 * mpq_queue: an MPMC queue of byte messages in shared memory.
 *
 * The ring is Dmitry Vyukov's bounded MPMC queue (see struct mpq_queue_shm
 * in <linux/mpq.h>): a producer claims a position with a CAS on tail,
 * copies the message into that position's slot and publishes it by storing
 * the slot's seq; a consumer claims with a CAS on head, copies out and frees
 * the slot with another seq store. The same code runs on both backends; a
 * backend only makes the memory and, for the module, wakes pollers.
 *
 * Sleeping, memfd: a waiter sets the SLEEPING bit of a futex word (a full
 * barrier), looks at the ring once more, then sleeps on the word. A
 * publisher issues a full fence after its seq store and reads the word;
 * only if the bit is set does it clear it, bump the word and wake the
 * sleepers. Each side sees the other's store, so no wake-up is lost, and
 * a put or get makes a system call only when someone sleeps, once per
 * sleep rather than once per message. With the module a waiter sleeps in
 * poll() on the fd instead, by the same handshake on poll_wanted: the
 * module cannot wake a futex, and it puts and gets itself for read(2),
 * write(2) and io_uring. Before sleeping a blocking call
 * spins for spin_ns, because a sleep and wake-up costs tens of
 * microseconds in a VM.
 *
 * The shared memory is writable by every participant, so nothing read from
 * it is trusted: indices are masked with our own copy of the capacity, a
 * message length is checked against our own msg_max, and a ring state that
 * cannot arise (a seq that no sequence of puts and gets produces) is
 * reported as -EUCLEAN rather than followed into a loop.
 *
 * Sizes, as Python has them (issue 12). Three promises, one design on
 * both backends:
 *
 * 1. maxsize is exact. The ring stays a power of two (the index is a mask,
 *    and Vyukov's seq rule needs two slots at least), and a bounded queue
 *    whose maxsize is below the ring's capacity also keeps tail - head
 *    within maxsize (q->limit). The check reads a head this handle saw
 *    before, which is never ahead of the real one, so while it says there
 *    is room there is; the consumers' cache line is read again only when
 *    it says full: about once per maxsize puts in a queue that keeps up.
 *    A maxsize that is a power of two pays nothing (limit 0: the ring's
 *    own fullness is the bound), which is why the ring was kept rather
 *    than indexed by a modulo. The module knows maxsize too (write(2),
 *    EPOLLOUT).
 *
 * 2. maxsize 0, the default, is unbounded. The ring (1024 slots) is the
 *    fast path still; a put that finds it full, or finds the overflow not
 *    empty, appends to the overflow (overflow.c): a FIFO of chunks, each
 *    a blob, under a robust lock in the header. Consumers never read the
 *    overflow: one that finds the ring empty moves the overflow's oldest
 *    messages into the ring and takes them there. A producer's messages
 *    keep its order (once one went to the overflow, the next ones go
 *    there too until it is drained into the ring), and everything else a
 *    ring does (zero-copy, batches, recovery from deaths, poll) works on
 *    the ring alone. Memory is the limit: a put that cannot have a chunk
 *    fails with -ENOMEM (memfd) or -EDQUOT/-ENOMEM (the module's per-user
 *    budget), and puts nothing. A bounded queue pays one predictable
 *    branch on a field of the handle (maxsize 0?) per put and per empty
 *    get; the overflow is only ever looked at in an unbounded queue.
 *    Considered: chained ring segments (growth in the ring itself, but
 *    the module's region is one pinned, vmapped block that the kernel
 *    reads for poll(), so it cannot grow in place, and every slot index
 *    would need a segment lookup); a sparse ring populated on use (a ring
 *    keeps touching new slots as positions advance, so it ends fully
 *    populated anyway).
 *
 * 3. A message larger than a slot goes out of line: into a blob of its
 *    own, whose id the slot holds with the length in its len (above
 *    msg_max: struct mpq_slot_ext), so that 8 bytes of data say it and
 *    a queue of 8 B messages keeps 16-byte slots. A blob is memory the
 *    queue owns by id (qblob.c): with the module an anonymous
 *    SharedMemory block it holds in a table, charged to the per-user
 *    budget like any block; with memfd pages of the queue's own file
 *    past the ring, allocated with fallocate and punched out when
 *    taken. reserve() past the slot size hands out the blob to write in
 *    place and peek() maps it in place:
 *    zero-copy both ways; put() and get() copy once each. An out-of-line
 *    message is claimed alone (it ends a batch). Deaths are the ring's:
 *    a dead producer's claim is published dropped (its blob leaks until
 *    the queue goes: nothing was committed), a dead consumer's claim is
 *    delivered again, blob and all; the blob is dropped only after the
 *    slot was freed, so a death in between leaks it and loses nothing.
 *    msgsize is now what decides in line or out of line, not a limit.
 */
#include <fcntl.h>
#include <linux/membarrier.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "probes.h"
#include "record.h"

/* An unbounded queue's ring: messages past it go to the overflow. */
#define MPQ_QUEUE_DEFAULT_RING		1024
#define MPQ_QUEUE_DEFAULT_MSGSIZE	1024
#define MPQ_QUEUE_MAX_CAPACITY		(1U << 30)
#define MPQ_QUEUE_MAX_BYTES		(1ULL << 30)
#define MPQ_DEFAULT_SPIN_NS		50000
#define MPQ_SPIN_YIELD_NS		500
/* A sleeper's longest sleep while someone is inside an operation. */
#define MPQ_RECHECK_NS			(100 * 1000000LL)
/* Largest batch one call moves; more is a loop of calls for the caller. */
#define MPQ_BATCH_MAX			256

static uint64_t mpq_page_size(void)
{
	return (uint64_t)sysconf(_SC_PAGESIZE);
}

static uint64_t mpq_align(uint64_t x, uint64_t a)
{
	return (x + a - 1) & ~(a - 1);
}

/*
 * The same geometry the module computes for MPQ_IOC_QUEUE_CREATE: maxsize
 * messages (0: unbounded, in a ring of ring slots), msgsize bytes in a
 * slot (and room for an out-of-line descriptor whatever it is).
 */
int mpq_geom_make(struct mpq_geom *g, uint32_t maxsize, uint32_t msgsize,
		  uint32_t ring)
{
	uint64_t cap = 2, slot, total, want = maxsize ? maxsize : ring;

	if (!want || !msgsize)
		return -EINVAL;
	if (want > MPQ_QUEUE_MAX_CAPACITY)
		return -E2BIG;
	/* A power of two, and two at least: see struct mpq_queue_shm. */
	while (cap < want)
		cap <<= 1;
	slot = mpq_align(sizeof(struct mpq_slot) +
			 (uint64_t)(msgsize > MPQ_SLOT_MIN_DATA ? msgsize :
				    MPQ_SLOT_MIN_DATA), MPQ_SLOT_ALIGN);
	if (__builtin_mul_overflow(slot, cap, &total))
		return -E2BIG;
	total = mpq_align(total + mpq_align(MPQ_QUEUE_DATA_MIN, mpq_page_size()),
			  mpq_page_size());
	if (total > MPQ_QUEUE_MAX_BYTES)
		return -E2BIG;
	g->flags = maxsize ? 0 : MPQ_QUEUE_UNBOUNDED;
	g->maxsize = maxsize;
	g->capacity = (uint32_t)cap;
	g->msg_max = msgsize;
	g->slot_size = (uint32_t)slot;
	g->data_off = (uint32_t)mpq_align(MPQ_QUEUE_DATA_MIN, mpq_page_size());
	g->map_size = total;
	g->id = 0;
	return 0;
}

/* Is g a geometry the ring code can use without leaving the mapping? */
int mpq_geom_check(const struct mpq_geom *g)
{
	uint64_t ring, end;

	if (g->capacity < 2 || (g->capacity & (g->capacity - 1)) ||
	    g->capacity > MPQ_QUEUE_MAX_CAPACITY || !g->msg_max)
		return -EUCLEAN;
	if (g->slot_size < sizeof(struct mpq_slot) + (uint64_t)g->msg_max ||
	    g->slot_size < sizeof(struct mpq_slot) + MPQ_SLOT_MIN_DATA ||
	    g->slot_size % MPQ_SLOT_ALIGN)
		return -EUCLEAN;
	/* The header and the operation records come before the ring. */
	if (g->data_off < MPQ_QUEUE_DATA_MIN ||
	    g->data_off % MPQ_SLOT_ALIGN ||
	    g->flags & ~(MPQ_QUEUE_JOINABLE | MPQ_QUEUE_UNBOUNDED))
		return -EUCLEAN;
	/* Unbounded, or bounded by at most the ring: nothing else. */
	if (!(g->flags & MPQ_QUEUE_UNBOUNDED) == !g->maxsize ||
	    g->maxsize > g->capacity)
		return -EUCLEAN;
	if (__builtin_mul_overflow((uint64_t)g->slot_size, g->capacity, &ring) ||
	    __builtin_add_overflow(ring, (uint64_t)g->data_off, &end) ||
	    end > g->map_size || g->map_size > SIZE_MAX / 2)
		return -EUCLEAN;
	return 0;
}

/*
 * Spin only where another CPU exists at all. Not our affinity mask: a
 * process pinned to one CPU still has a peer spinning or running on
 * another.
 */
static int64_t mpq_default_spin(void)
{
	return sysconf(_SC_NPROCESSORS_ONLN) > 1 ? MPQ_DEFAULT_SPIN_NS : -1;
}

static int mpq_asym_init(void);
static void mpq_asym_lost(struct mpq_queue *q);

/* Handle ids: records cached per thread are keyed by them (reclaim.c). */
static uint64_t mpq_queue_ids;

static int mpq_queue_map(struct mpq_queue **out, int fd, int backend,
			 const struct mpq_geom *g, int64_t spin_ns)
{
	struct mpq_queue *q;
	void *map;

	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	map = mmap(NULL, g->map_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		   fd, 0);
	if (map == MAP_FAILED) {
		free(q);
		return -errno;
	}
	q->shm = map;
	/*
	 * The module writes the layout it was built with; a queue of
	 * another layout is refused, as memfd.c refuses one (a participant
	 * can scribble the word, but then it can break the queue anyway).
	 */
	if (backend == MPQ_BACKEND_KMOD &&
	    load_relaxed(&q->shm->version) != MPQ_QUEUE_VERSION) {
		munmap(map, g->map_size);
		free(q);
		return -EUCLEAN;
	}
	q->recs = (struct mpq_queue_rec *)((unsigned char *)map +
					   MPQ_QUEUE_REC_OFF);
	q->slots = (unsigned char *)map + g->data_off;
	q->flags = g->flags & (MPQ_QUEUE_JOINABLE | MPQ_QUEUE_UNBOUNDED);
	q->maxsize = g->maxsize;
	q->limit = g->maxsize < g->capacity ? g->maxsize : 0;
	/* Runs in any bounded queue: its bound counts their messages. */
	q->runs = !!g->maxsize;
	q->capacity = g->capacity;
	q->mask = g->capacity - 1;
	q->msg_max = g->msg_max;
	q->slot_size = g->slot_size;
	q->map_size = g->map_size;
	q->fd = fd;
	q->bell = -1;
	q->hid = __atomic_add_fetch(&mpq_queue_ids, 1, __ATOMIC_RELAXED);
	q->id = g->id ? g->id : mpq_memfd_queue_id(fd);
	q->backend = backend;
	q->spin_ns = spin_ns ? spin_ns : mpq_default_spin();
	/* Before our first publish: see mpq_queue_notify(). */
	if (backend == MPQ_BACKEND_MEMFD && mpq_asym_init() != 1)
		mpq_asym_lost(q);
	*out = q;
	return 0;
}

MPQ_EXPORT int mpq_queue_new(struct mpq_queue **out,
			     const struct mpq_queue_attr *attr)
{
	static const struct mpq_queue_attr defaults;
	struct mpq_geom g;
	int backend, fd, ret;

	if (!out)
		return -EINVAL;
	if (!attr)
		attr = &defaults;
	if (attr->flags & ~(MPQ_QUEUE_F_JOINABLE | MPQ_QUEUE_F_ONE_PRODUCER |
			    MPQ_QUEUE_F_ONE_CONSUMER))
		return -EINVAL;
	if (!mpq_all_zero(attr->__reserved, sizeof(attr->__reserved)))
		return -EINVAL;
	backend = mpq_backend_resolve(attr->backend);
	if (backend < 0)
		return backend;
	ret = mpq_geom_make(&g, attr->maxsize,
			    attr->msgsize ? attr->msgsize :
			    MPQ_QUEUE_DEFAULT_MSGSIZE, MPQ_QUEUE_DEFAULT_RING);
	if (ret)
		return ret;
	if (attr->flags & MPQ_QUEUE_F_JOINABLE)
		g.flags |= MPQ_QUEUE_JOINABLE;

	if (backend == MPQ_BACKEND_KMOD) {
		ret = mpq_kmod_queue_create(&g, &fd);
		/* The kernel's geometry is the one to use. */
		if (!ret)
			ret = mpq_kmod_queue_info(fd, &g);
	} else {
		ret = mpq_memfd_queue_create(&g, &fd);
	}
	if (ret)
		return ret;
	if (mpq_geom_check(&g))
		ret = -EUCLEAN;
	else
		ret = mpq_queue_map(out, fd, backend, &g, attr->spin_ns);
	if (ret) {
		close(fd);
		return ret;
	}
	/*
	 * Only this handle and its forked copies: one opened by its fd claims
	 * with a CAS, which is right whoever else puts or gets. An unbounded
	 * queue's consumers put too (moving the overflow into the ring).
	 */
	(*out)->one_producer = attr->maxsize &&
			       (attr->flags & MPQ_QUEUE_F_ONE_PRODUCER);
	(*out)->one_consumer = !!(attr->flags & MPQ_QUEUE_F_ONE_CONSUMER);
	/*
	 * Without the module, mpq_wait() sleeps on an eventfd that whoever
	 * puts rings when a waiter asked for it; it reaches the processes
	 * forked from here (not those that open the queue by its fd).
	 */
	if (backend == MPQ_BACKEND_MEMFD) {
		(*out)->bell = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if ((*out)->bell < 0) {
			ret = -errno;
			mpq_queue_free(*out);
			*out = NULL;
		}
	}
	return ret;
}

MPQ_EXPORT int mpq_joinable_queue_new(struct mpq_queue **out,
				      const struct mpq_queue_attr *attr)
{
	struct mpq_queue_attr a = { 0 };

	if (attr)
		a = *attr;
	a.flags |= MPQ_QUEUE_F_JOINABLE;
	return mpq_queue_new(out, &a);
}

MPQ_EXPORT int mpq_simple_queue_new(struct mpq_queue **out,
				    const struct mpq_queue_attr *attr)
{
	return mpq_queue_new(out, attr);
}

MPQ_EXPORT int mpq_queue_from_fd(struct mpq_queue **out, int fd)
{
	struct mpq_geom g;
	int backend, ret, dup;

	if (!out)
		return -EINVAL;
	if (fd < 0)
		return -EBADF;
	ret = mpq_kmod_queue_info(fd, &g);
	if (ret == 0) {
		backend = MPQ_BACKEND_KMOD;
	} else if (ret == -ENOTTY || ret == -EINVAL) {
		backend = MPQ_BACKEND_MEMFD;
		ret = mpq_memfd_queue_info(fd, &g);
	}
	if (ret)
		return ret;
	if (mpq_geom_check(&g))
		return -EUCLEAN;
	dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (dup < 0)
		return -errno;
	ret = mpq_queue_map(out, dup, backend, &g, 0);
	if (ret)
		close(dup);
	return ret;
}

MPQ_EXPORT void mpq_queue_free(struct mpq_queue *q)
{
	if (!q)
		return;
	if (unlikely(q->ext))
		return mpq_xq_free(q);
	/*
	 * Another thread of ours that used the queue has its record linked
	 * in its robust list, which the kernel walks when that thread exits:
	 * the memory must stay mapped for it (a small leak, not a wild write
	 * into whatever is mapped there next).
	 */
	mpq_ovf_forget(q);
	mpq_qblob_forget(q);
	if (!mpq_rec_forget(q))
		munmap(q->shm, q->map_size);
	close(q->fd);
	if (q->bell >= 0)
		close(q->bell);
	free(q);
}

/*
 * Wake everyone asleep on word. Only the publisher whose CAS clears the
 * SLEEPING bit makes the system call; all sleepers are woken because the
 * bit no longer says how many there are (each re-sets it if it must sleep
 * again). A sleeper that set the bit again after a clear is seen by the
 * loop.
 */
static __attribute__((noinline)) void mpq_wake_sleepers(uint32_t *word)
{
	uint32_t v = load_relaxed(word);

	while (v & MPQ_FUTEX_SLEEPING) {
		/* v + 1 clears bit 0 and carries into the wake-up count. */
		if (__atomic_compare_exchange_n(word, &v, v + 1, 0,
						__ATOMIC_SEQ_CST,
						__ATOMIC_RELAXED)) {
			mpq_futex_wake(word, INT32_MAX);
			return;
		}
	}
}

/* Someone polls (the module's ->poll() or mpq_wait()) and asked for this. */
static __attribute__((noinline)) void
mpq_queue_wake_pollers(struct mpq_queue *q, uint32_t bit)
{
	uint64_t one = 1;

	if (q->backend == MPQ_BACKEND_KMOD) {
		mpq_kmod_queue_wake(q->fd, bit);
		return;
	}
	__atomic_fetch_and(&q->shm->poll_wanted, ~bit, __ATOMIC_SEQ_CST);
	if (q->bell >= 0 && write(q->bell, &one, sizeof(one)) < 0) {
		/* EAGAIN only at a count of 2^64 - 2: it is rung already. */
	}
}

/*
 * The wake-up check without a fence (memfd queues): the asymmetric
 * Dekker. A publisher stores the slot's seq and then reads "is anyone
 * asleep?" (the futex word, poll_wanted). Those two accesses are a store
 * then a load of another line, which every CPU may reorder: with a fence
 * in between (the classic handshake) it costs a locked instruction per
 * put and per get, a third of a put+get on one CPU and more across two.
 * Here the sleeper pays instead: after it announces itself (the SLEEPING
 * bit, a poll_wanted bit) it calls membarrier(GLOBAL_EXPEDITED), which
 * returns only after every CPU running a thread of a registered process
 * has executed a full barrier (an IPI), and every other CPU went through
 * the scheduler's. So for a publisher in a registered process the
 * compiler barrier between its store and its load acts as a full one in
 * this pairing: either its load comes after that barrier and sees the
 * announcement, or its store came before it and the sleeper's look at
 * the ring after membarrier() returns sees the message.
 *
 * The publisher only skips the fence when its own process is registered
 * (mpq_asym 1: a promise about itself that it can check), so a process
 * that could not register, or that runs a libmpq without this, still
 * publishes with the fence. The sleeper is the side that must be able to
 * pay: a process that cannot (membarrier filtered, or failing at sleep
 * time) marks the queue MPQ_POLL_FENCE, a bit of poll_wanted that makes
 * every publisher fence again from the moment it sees it, and bounds its
 * own sleeps by MPQ_RECHECK_NS for the publishes that were under way
 * before the bit could be seen. The module's queues keep the fence: their
 * sleepers are also the kernel's ->poll(), read(2) and write(2), which
 * pair with an smp_mb() and cannot ask for membarrier().
 *
 * Registration is per process (per mm), inherited by fork and undone by
 * exec: every process that maps a queue asks at its first map. With more
 * than one thread it costs the kernel a synchronize_rcu(), once.
 */
#define MPQ_POLL_FENCE		(1U << 31)	/* memfd only: see above */

static int mpq_asym;		/* 0 not asked, 1 registered, 2 cannot */

static long mpq_membarrier(int cmd)
{
	return syscall(SYS_membarrier, cmd, 0, 0);
}

/*
 * Register this process, and try the command a sleeper issues (a seccomp
 * filter may allow one and not the other). Every thread may race here:
 * registering twice is harmless.
 */
static int mpq_asym_init(void)
{
	int k = __atomic_load_n(&mpq_asym, __ATOMIC_ACQUIRE);
	long cmds;

	if (k)
		return k;
	k = 2;
	cmds = mpq_membarrier(MEMBARRIER_CMD_QUERY);
	if (cmds > 0 && (cmds & MEMBARRIER_CMD_GLOBAL_EXPEDITED) &&
	    (cmds & MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) &&
	    !mpq_membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) &&
	    !mpq_membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED))
		k = 1;
	__atomic_store_n(&mpq_asym, k, __ATOMIC_RELEASE);
	return k;
}

/* Our publishes need the fence: from now on, for every queue. */
static void mpq_asym_lost(struct mpq_queue *q)
{
	__atomic_store_n(&mpq_asym, 2, __ATOMIC_RELAXED);
	if (!(load_relaxed(&q->shm->poll_wanted) & MPQ_POLL_FENCE))
		__atomic_fetch_or(&q->shm->poll_wanted, MPQ_POLL_FENCE,
				  __ATOMIC_SEQ_CST);
}

/*
 * The sleeper's half, between announcing itself and its last look at the
 * ring. Returns 1 when a publisher racing with us is sure to see us or
 * be seen; 0 when it may not be (we could not pay: the caller bounds its
 * sleep). The module's queues are fenced on both sides: 1.
 */
static int mpq_queue_sleep_fence(struct mpq_queue *q)
{
	if (q->backend != MPQ_BACKEND_MEMFD)
		return 1;
	if (load_relaxed(&mpq_asym) == 1 &&
	    !mpq_membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED))
		return 1;
	mpq_asym_lost(q);
	return 0;
}

/*
 * Tell sleepers and pollers on the other side that the ring changed. Our
 * seq store must be ordered before the reads of the futex word and
 * poll_wanted: by a fence, which pairs with the fetch_or in
 * mpq_queue_sleep_memfd() and, for the module's pollers, with the
 * smp_mb__after_atomic() in its ->poll(); or, in a memfd queue of a
 * registered process, by the sleeper's membarrier() (see above), unless
 * the queue has a participant that cannot issue it.
 */
static __attribute__((noinline)) void
mpq_queue_notify_slow(struct mpq_queue *q, uint32_t *word, uint32_t poll_bit)
{
	uint32_t wanted;

	full_fence();
	wanted = load_relaxed(&q->shm->poll_wanted);
	if (load_relaxed(word) & MPQ_FUTEX_SLEEPING)
		mpq_wake_sleepers(word);
	if (wanted & poll_bit)
		mpq_queue_wake_pollers(q, poll_bit);
}

/* Inline in the fast paths: most calls are two loads that find nobody. */
static inline __attribute__((always_inline)) void
mpq_queue_notify_fast(struct mpq_queue *q, uint32_t *word, uint32_t poll_bit)
{
	uint32_t wanted;

	if (unlikely(q->backend != MPQ_BACKEND_MEMFD ||
		     load_relaxed(&mpq_asym) != 1)) {
		mpq_queue_notify_slow(q, word, poll_bit);
		return;
	}
	__asm__ __volatile__("" ::: "memory");
	wanted = load_relaxed(&q->shm->poll_wanted);
	if (unlikely(wanted & MPQ_POLL_FENCE)) {
		mpq_queue_notify_slow(q, word, poll_bit);
		return;
	}
	if (unlikely(load_relaxed(word) & MPQ_FUTEX_SLEEPING))
		mpq_wake_sleepers(word);
	if (unlikely(wanted & poll_bit))
		mpq_queue_wake_pollers(q, poll_bit);
}

void mpq_queue_notify(struct mpq_queue *q, uint32_t *word, uint32_t poll_bit)
{
	mpq_queue_notify_fast(q, word, poll_bit);
}

/*
 * A cursor left behind by the only producer or consumer, killed between
 * publishing or freeing its slot and moving the cursor (the one-message
 * path below takes no record): tail at pos over a slot already published
 * (seq pos + 1) or already taken (pos + capacity); head at pos over a
 * slot already freed (pos + capacity) or already refilled (pos + capacity
 * + 1). A claim moves its cursor before it touches the slot, so no live
 * operation leaves either: whoever finds one moves it on, with a CAS in
 * case another participant does too (the module's read(2), write(2) and
 * poll() follow the same rule).
 */
static inline int mpq_tail_behind(const struct mpq_queue *q, uint64_t pos,
				  uint32_t seq)
{
	return seq == (uint32_t)(pos + 1) || seq == (uint32_t)(pos + q->capacity);
}

static inline int mpq_head_behind(const struct mpq_queue *q, uint64_t pos,
				  uint32_t seq)
{
	return seq == (uint32_t)(pos + q->capacity) ||
	       seq == (uint32_t)(pos + q->capacity + 1);
}

static __attribute__((noinline)) void mpq_cursor_move_on(__u64 *cursor,
							 uint64_t pos)
{
	__atomic_compare_exchange_n(cursor, &pos, pos + 1, 0,
				    __ATOMIC_RELEASE, __ATOMIC_RELAXED);
}

/*
 * How many of k positions from pos a bounded queue's maxsize leaves room
 * for, when it is below the ring's capacity (q->limit). The head we saw
 * last is never ahead of the real one, so while it says there is room
 * there is: the consumers' line is read only when it says full, about
 * once per limit puts in a queue that keeps up, and on every put of one
 * that is full (where a put waits anyway).
 */
static inline unsigned int mpq_queue_room(struct mpq_queue *q, uint64_t pos,
					  unsigned int k)
{
	uint64_t h = load_relaxed(&q->head_seen);
	int64_t used = (int64_t)(pos - h);

	if (likely(used >= 0 && used + k <= q->limit))
		return k;
	h = load_acquire(&q->shm->head);
	__atomic_store_n(&q->head_seen, h, __ATOMIC_RELAXED);
	used = (int64_t)(pos - h);
	if (used < 0)		/* pos is stale: the CAS fails, we look again */
		return k;
	if (used >= (int64_t)q->limit)
		return 0;
	return used + k <= q->limit ? k : q->limit - (unsigned int)used;
}

/*
 * Claim up to n free positions after tail, with one CAS, under an
 * operation record whose intent names them (reclaim.c: what a dead
 * producer leaves behind is published as dropped). Returns the count k
 * (>= 1) with the first position in *posp and the record, its intent
 * marked WON, in *rp; or -EAGAIN (full, or every record in use),
 * -EUCLEAN.
 */
static inline __attribute__((always_inline))
int mpq_claim_put(struct mpq_queue *q, unsigned int n, uint64_t *posp,
			 struct mpq_queue_rec **rp)
{
	uint64_t pos = load_relaxed(&q->shm->tail);
	struct mpq_queue_rec *r = NULL;
	int ret, begun = 0;
	unsigned int k;

	*rp = NULL;
	for (;;) {
		int64_t dif = 0;
		uint64_t now;

		for (k = 0; k < n; k++) {
			dif = (int32_t)(load_acquire(&mpq_slot_at(q, pos + k)->seq) -
					(uint32_t)(pos + k));
			if (dif)
				break;
		}
		if (k && unlikely(q->runs) && mpq_runs_out(q)) {
			/* Runs in the ring: the bound counts messages. */
			k = mpq_run_room(q, pos, k, 1);
			if (!k) {
				ret = -EAGAIN;
				goto fail;
			}
		} else if (k && q->limit) {
			k = mpq_queue_room(q, pos, k);
			if (!k) {
				ret = -EAGAIN;	/* maxsize messages in it */
				goto fail;
			}
		}
		if (k) {
			if (!begun) {
				r = mpq_rec_begin(q);
				begun = 1;
			}
			if (r)
				mpq_rec_intent(r, MPQ_REC_PUT, pos, k);
			/*
			 * Release: the intent is seen before the claim. The
			 * only producer needs no CAS: nobody else moves tail.
			 */
			if (q->one_producer) {
				store_release(&q->shm->tail, pos + k);
				break;
			}
			if (__atomic_compare_exchange_n(&q->shm->tail, &pos,
							pos + k, 1,
							__ATOMIC_RELEASE,
							__ATOMIC_RELAXED))
				break;
			continue;
		}
		/*
		 * Behind us: the slot still holds the message put one lap
		 * ago (seq pos - cap + 1), or its producer has not published
		 * it yet (seq pos - cap). Nothing else is possible.
		 */
		if (dif < 0) {
			ret = dif == -(int64_t)q->capacity ||
			      dif == 1 - (int64_t)q->capacity ? -EAGAIN : -EUCLEAN;
			/*
			 * Unless pos is stale (another producer moved tail):
			 * what we read may be a run's payload then. Looked
			 * at only before crying corruption: in the loop of a
			 * full ring the extra look cost a zero-copy stream
			 * 0.6x (a stale pos's -EAGAIN is retried by a put
			 * that waits).
			 */
			if (ret == -EUCLEAN && !q->one_producer) {
				now = load_relaxed(&q->shm->tail);
				if (now != pos) {
					pos = now;
					continue;
				}
			}
			goto fail;
		}
		/* Ahead: another producer took pos; tail must have moved. */
		now = load_relaxed(&q->shm->tail);
		if (now == pos) {
			/* Unless it was left behind (mpq_tail_behind()). */
			if (!mpq_tail_behind(q, pos, (uint32_t)(pos + dif))) {
				ret = -EUCLEAN;
				goto fail;
			}
			mpq_cursor_move_on(&q->shm->tail, pos);
			now = load_relaxed(&q->shm->tail);
		}
		pos = now;
	}
	if (r)
		__atomic_store_n(&r->op, MPQ_REC_PUT | MPQ_REC_WON,
				 __ATOMIC_RELAXED);
	*posp = pos;
	*rp = r;
	return (int)k;
fail:
	if (begun)
		mpq_rec_end(q, r);
	return ret;
}

/*
 * A JoinableQueue counts its messages before anyone can take them, in the
 * record's own tally: the count and the mark that this operation made it
 * are one word, so a death leaves both or neither (reclaim.c takes back
 * what a dead producer counted and never published). Without a record,
 * in the header's word.
 */
static inline void mpq_queue_task_count(struct mpq_queue *q, struct mpq_queue_rec *r,
				 unsigned int k)
{
	uint64_t t;

	if (!(q->flags & MPQ_QUEUE_JOINABLE))
		return;
	if (!r) {
		__atomic_add_fetch(&q->shm->unfinished, k, __ATOMIC_RELAXED);
		return;
	}
	t = load_relaxed(&r->tasks) & ~1ULL;
	__atomic_store_n(&r->tasks, (t + 2ULL * k) | 1, __ATOMIC_RELAXED);
}

/* Published: the tally no longer speaks for the intent. */
static inline void mpq_queue_task_settled(struct mpq_queue *q,
				   struct mpq_queue_rec *r)
{
	if (r && q->flags & MPQ_QUEUE_JOINABLE)
		__atomic_store_n(&r->tasks, load_relaxed(&r->tasks) & ~1ULL,
				 __ATOMIC_RELAXED);
}

void mpq_queue_tasks_count(struct mpq_queue *q, struct mpq_queue_rec *r,
			   unsigned int n)
{
	mpq_queue_task_count(q, r, n);
}

void mpq_queue_tasks_settled(struct mpq_queue *q, struct mpq_queue_rec *r)
{
	mpq_queue_task_settled(q, r);
}

/* Fill the claimed slots, publish them, let the record go, notify once. */
static inline __attribute__((always_inline))
void mpq_queue_publish(struct mpq_queue *q, struct mpq_queue_rec *r,
			      uint64_t pos, const struct iovec *msgs,
			      unsigned int k, int count)
{
	unsigned int i;

	if (count)
		mpq_queue_task_count(q, r, k);
	for (i = 0; i < k; i++) {
		struct mpq_slot *s = mpq_slot_at(q, pos + i);
		size_t len = msgs[i].iov_len;

		if (unlikely(len == MPQ_IOV_EXT)) {
			/* Out of line: the descriptor goes in the slot. */
			mpq_slot_ext_write(s, msgs[i].iov_base);
			len = ((const struct mpq_slot_ext *)
			       msgs[i].iov_base)->len;
		} else {
			s->len = (uint32_t)len;
			mpq_copy(s + 1, msgs[i].iov_base, len);
		}
		/* Pairs with the acquire of seq in try_get: the data is there. */
		store_release(&s->seq, (uint32_t)(pos + i + 1));
		/* Tracing: published at pos (see probes.h). */
		mpq_probe_queue_put(q->id, pos + i, len);
	}
	if (count)
		mpq_queue_task_settled(q, r);
	mpq_rec_end(q, r);
	mpq_queue_notify_fast(q, &q->shm->nonempty, MPQ_POLL_IN);
}

/* Put up to n messages without waiting. Returns the count put (>= 1),
 * -EAGAIN (full) or -EUCLEAN. */
static inline __attribute__((always_inline))
int mpq_queue_try_put_n(struct mpq_queue *q, const struct iovec *msgs,
			unsigned int n)
{
	struct mpq_queue_rec *r;
	uint64_t pos;
	int k;

	/* Unbounded: behind the overflow while it has messages (FIFO). */
	if (unlikely(!q->maxsize) && mpq_ovf_active(q))
		return mpq_ovf_put(q, msgs);
	k = mpq_claim_put(q, n, &pos, &r);
	/* One slot, the common claim: its loop folds away. */
	if (likely(k == 1))
		mpq_queue_publish(q, r, pos, msgs, 1, 1);
	else if (k > 0)
		mpq_queue_publish(q, r, pos, msgs, (unsigned int)k, 1);
	else if (k == -EAGAIN && !q->maxsize)
		return mpq_ovf_put(q, msgs);
	return k;
}

/*
 * A batch of put_many whose messages are all of one size goes as a run
 * (run.c) where one pays: one header and one seq for the lot, the
 * messages gathered from their iovecs. Returns 0 when it does not.
 */
static int mpq_queue_try_put_run(struct mpq_queue *q, const struct iovec *msgs,
				 unsigned int n)
{
	size_t size = msgs[0].iov_len;
	unsigned int i;

	if (!size || size > q->msg_max)
		return 0;
	for (i = 1; i < n; i++)
		if (msgs[i].iov_len != size)
			return 0;
	return mpq_run_put(q, NULL, msgs, (uint32_t)size, n);
}

/*
 * A batch: as much of it as goes now. A run ends where the ring does, or
 * the bound; what is left goes on without waiting, as runs or slots.
 */
static int mpq_queue_try_put(struct mpq_queue *q, const struct iovec *msgs,
			     unsigned int n)
{
	unsigned int done = 0;
	int ret;

	while (q->runs && n - done >= MPQ_RUN_MIN && mpq_run_pays(q)) {
		ret = mpq_queue_try_put_run(q, msgs + done, n - done);
		if (ret <= 0) {
			if (ret < 0 && !done)
				return ret;
			if (ret < 0)
				return (int)done;
			/* No run here: a message the plain way, then on. */
			ret = mpq_queue_try_put_n(q, msgs + done, 1);
			if (ret <= 0)
				return done ? (int)done : ret;
		}
		done += (unsigned int)ret;
	}
	if (done == n)
		return (int)done;
	ret = mpq_queue_try_put_n(q, msgs + done, n - done);
	if (ret <= 0)
		return done ? (int)done : ret;
	return (int)done + ret;
}

/*
 * For the overflow's promote (overflow.c), under its lock: claim up to n
 * slots and write the messages into them, unpublished, counted as tasks
 * as they leave the overflow (where ovf_count counted them). Returns the
 * count (>= 1) with the first position in *posp and the record in *rp
 * (NULL: none was free), or -EAGAIN (full) or -EUCLEAN. The caller marks
 * the record MPQ_REC_FILLED, commits the overflow and then publishes with
 * mpq_queue_ring_publish(): so a death at any instant delivers each
 * message once (reclaim.c, overflow.c).
 */
int mpq_queue_ring_fill(struct mpq_queue *q, const struct iovec *msgs,
			unsigned int n, uint64_t *posp, struct mpq_queue_rec **rp)
{
	int k = mpq_claim_put(q, n, posp, rp);
	unsigned int i;

	if (k <= 0)
		return k;
	for (i = 0; i < (unsigned int)k; i++) {
		struct mpq_slot *s = mpq_slot_at(q, *posp + i);
		size_t len = msgs[i].iov_len;

		if (len == MPQ_IOV_EXT) {
			mpq_slot_ext_write(s, msgs[i].iov_base);
		} else {
			s->len = (uint32_t)len;
			mpq_copy(s + 1, msgs[i].iov_base, len);
		}
	}
	mpq_queue_task_count(q, *rp, (unsigned int)k);
	return k;
}

/* Publish k filled slots from pos (mpq_queue_ring_fill), let r go. */
void mpq_queue_ring_publish(struct mpq_queue *q, struct mpq_queue_rec *r,
			    uint64_t pos, unsigned int k)
{
	unsigned int i;

	for (i = 0; i < k; i++) {
		struct mpq_slot *s = mpq_slot_at(q, pos + i);
		uint64_t len = s->len;

		if (len == MPQ_SLOT_EXT)
			len = ((struct mpq_slot_ext *)(s + 1))->len;

		/* Read before: once published, a consumer may take it. */
		store_release(&s->seq, (uint32_t)(pos + i + 1));
		mpq_probe_queue_put(q->id, pos + i, len);
	}
	mpq_queue_task_settled(q, r);
	mpq_rec_end(q, r);
	mpq_queue_notify_fast(q, &q->shm->nonempty, MPQ_POLL_IN);
}

/*
 * Claim the published slots after head, with one CAS, under a record:
 * messages for up to n buffers (whose sizes they must fit; bufs NULL: no
 * check, for a peek), and the dropped slots among and before them, which
 * are claimed to be freed and not delivered. While head == pos none of
 * these slots can change, so the lengths read before the CAS (into len[])
 * are those of what we claim. Returns the count of slots (>= 1; *msgs of
 * them messages), -EAGAIN (empty, or no free record), -EMSGSIZE (the
 * first message does not fit: bufs[0].iov_len set to its size) or
 * -EUCLEAN (the ring is corrupt). Every len above msg_max but the
 * markers is an out-of-line message's: a scribbled one names a blob that
 * is not there, dropped when taken (mpq_queue_take_ext()).
 */
/*
 * Returned when head is at a run (struct mpq_slot_run), nothing claimed:
 * *posp is its position, for mpq_run_get(). Not an errno: never returned
 * to a caller.
 */
#define MPQ_CLAIM_RUN		(-4096)

/*
 * A consumer's pos that another moved head past (never the only
 * consumer's): what it read there may be the payload of a later lap's
 * run over the same slots, and says nothing. Moves *posp to head.
 */
static inline int mpq_head_stale(struct mpq_queue *q, uint64_t *posp)
{
	uint64_t now;

	if (q->one_consumer)
		return 0;
	now = load_relaxed(&q->shm->head);
	if (now == *posp)
		return 0;
	*posp = now;
	return 1;
}

static inline __attribute__((always_inline))
int mpq_claim_get(struct mpq_queue *q, struct iovec *bufs,
			 unsigned int n, uint64_t *posp,
			 struct mpq_queue_rec **rp, uint32_t *len,
			 unsigned int *msgs, uint32_t exact)
{
	uint64_t pos = load_relaxed(&q->shm->head);
	struct mpq_queue_rec *r = NULL;
	int ret, begun = 0;
	unsigned int k, m;

	*rp = NULL;
	for (;;) {
		int64_t dif = 0;
		uint64_t now;

look:
		for (k = 0, m = 0; k < MPQ_BATCH_MAX && m < n; k++) {
			struct mpq_slot *s = mpq_slot_at(q, pos + k);

			dif = (int32_t)(load_acquire(&s->seq) -
					(uint32_t)(pos + k + 1));
			if (dif)
				break;
			len[k] = load_relaxed(&s->len);
			/* Above msg_max: not a message in its slot. One test
			 * for the common case, the kinds sorted out after. */
			if (unlikely(len[k] > q->msg_max)) {
				uint64_t xl;

				if (len[k] == MPQ_SLOT_DROPPED)
					continue;
				if (len[k] == MPQ_SLOT_RUN) {
					/* Taken in place, never claimed:
					 * alone. */
					if (k)
						break;
					*posp = pos;
					ret = MPQ_CLAIM_RUN;
					goto fail;
				}
				/* Out of line: claimed alone, first. */
				if (k)
					break;
				xl = len[k];
				if (xl == MPQ_SLOT_EXT)
					xl = mpq_slot_ext_room(q) ?
					     load_relaxed(&((struct mpq_slot_ext *)
							    (s + 1))->len) : 0;
				if (bufs && (xl > bufs[0].iov_len ||
					     (exact && xl != exact))) {
					if (mpq_head_stale(q, &pos))
						goto look;
					bufs[0].iov_len = xl > SIZE_MAX ?
							  SIZE_MAX : xl;
					ret = -EMSGSIZE;
					goto fail;
				}
				m = 1;
				k = 1;
				break;
			}
			if (bufs && (len[k] > bufs[m].iov_len ||
				     (exact && len[k] != exact))) {
				if (k == 0) {
					if (mpq_head_stale(q, &pos))
						goto look;
					bufs[0].iov_len = len[0];
					ret = -EMSGSIZE;
					goto fail;
				}
				break;
			}
			m++;
		}
		if (k) {
			if (!begun) {
				r = mpq_rec_begin(q);
				begun = 1;
			}
			if (r)
				mpq_rec_intent(r, MPQ_REC_GET, pos, k);
			if (q->one_consumer) {
				store_release(&q->shm->head, pos + k);
				break;
			}
			if (__atomic_compare_exchange_n(&q->shm->head, &pos,
							pos + k, 1,
							__ATOMIC_RELEASE,
							__ATOMIC_RELAXED))
				break;
			continue;
		}
		/* Empty (seq pos), or a consumer a lap ago still copying. */
		if (dif < 0) {
			ret = dif == -1 || dif == -(int64_t)q->capacity ?
			      -EAGAIN : -EUCLEAN;
			/* A stale pos: as for the producers' (claim_put). */
			if (ret == -EUCLEAN && mpq_head_stale(q, &pos))
				continue;
			goto fail;
		}
		now = load_relaxed(&q->shm->head);
		if (now == pos) {
			if (!mpq_head_behind(q, pos, (uint32_t)(pos + 1 + dif))) {
				ret = -EUCLEAN;
				goto fail;
			}
			mpq_cursor_move_on(&q->shm->head, pos);
			now = load_relaxed(&q->shm->head);
		}
		pos = now;
	}
	if (r)
		__atomic_store_n(&r->op, MPQ_REC_GET | MPQ_REC_WON,
				 __ATOMIC_RELAXED);
	*posp = pos;
	*rp = r;
	*msgs = m;
	return (int)k;
fail:
	if (begun)
		mpq_rec_end(q, r);
	return ret;
}

/* Free claimed slots for the next lap; pairs with the acquire in try_put. */
static inline void mpq_queue_free_slots(struct mpq_queue *q, uint64_t pos,
				 unsigned int k)
{
	unsigned int i;

	for (i = 0; i < k; i++)
		store_release(&mpq_slot_at(q, pos + i)->seq,
			      (uint32_t)(pos + i + q->capacity));
}

/*
 * Our claim of pos is an out-of-line message: copy it from its blob into
 * bufs[0], free the slot, then let the blob go (killed before the slot is
 * freed, the message is delivered again; after, the blob's memory stays
 * until the queue goes: nothing is lost either way). A blob that cannot
 * be mapped now (-ENOMEM) leaves the message where it is, for the next
 * get: the record is given up as a dead one's, whose message a repairer
 * delivers again. A descriptor that names no blob, or more than bufs[0]
 * holds (it was checked before the claim: someone rewrote it), is
 * corrupt: dropped, -EUCLEAN.
 */
static int mpq_queue_take_ext(struct mpq_queue *q, struct mpq_queue_rec *r,
			      uint64_t pos, struct iovec *bufs, uint32_t len)
{
	struct mpq_slot_ext e;
	int ret = -EUCLEAN;

	mpq_slot_ext_read(q, mpq_slot_at(q, pos), len, &e);
	if (e.len <= bufs[0].iov_len)
		ret = mpq_qblob_take(q, &e, bufs[0].iov_base);
	if (ret && ret != -EUCLEAN && r) {
		mpq_rec_giveup(q, r);
		return ret;
	}
	/* The blob is the record's before the slot lets it go (reclaim.c). */
	if (!ret && r)
		__atomic_store_n(&r->blob, e.id, __ATOMIC_RELEASE);
	mpq_queue_free_slots(q, pos, 1);
	mpq_probe_queue_get(q->id, pos, e.len);
	if (!ret && r)
		mpq_qblob_release(q, r);
	else if (!ret)
		mpq_qblob_drop(q, e.id, e.len);
	mpq_rec_end(q, r);
	mpq_queue_notify_fast(q, &q->shm->nonfull, MPQ_POLL_OUT);
	if (ret)
		return ret;
	bufs[0].iov_len = e.len;
	return 1;
}

/*
 * A message out of its slot into the caller's buffer. A get that found it
 * there (a backlog: the consumer keeps up with a stream) copies with
 * mpq_copy_out(), which pays for a stream from 512 bytes on; a get that
 * waited for it (a round trip, where the copy is on the critical path)
 * with memcpy, which starts faster: rep movsb put 1 KiB round trips 4-9%
 * behind, and keeping it from the gets that waited cost the stream
 * nothing (bench/README.md).
 */
static inline __attribute__((always_inline))
void mpq_queue_copy_msg(void *buf, const struct mpq_slot *s, uint32_t len,
			int waited)
{
	if (waited)
		mpq_copy(buf, s + 1, len);
	else
		mpq_copy_out(buf, s + 1, len);
}

/*
 * Our claim of k slots from pos, of lengths len[]: copy the messages into
 * bufs, free the slots, let the record go, notify once.
 */
static inline __attribute__((always_inline))
void mpq_queue_take(struct mpq_queue *q, struct mpq_queue_rec *r,
		    uint64_t pos, struct iovec *bufs, const uint32_t *len,
		    unsigned int k, int waited)
{
	unsigned int i, j;

	for (i = 0, j = 0; i < k; i++) {
		if (len[i] == MPQ_SLOT_DROPPED)
			continue;
		mpq_queue_copy_msg(bufs[j].iov_base, mpq_slot_at(q, pos + i),
				   len[i], waited);
		bufs[j++].iov_len = len[i];
	}
	mpq_queue_free_slots(q, pos, k);
	/* Tracing: the messages put at pos... are taken (probes.h). */
	for (i = 0; i < k; i++)
		if (len[i] != MPQ_SLOT_DROPPED)
			mpq_probe_queue_get(q->id, pos + i, len[i]);
	mpq_rec_end(q, r);
	mpq_queue_notify_fast(q, &q->shm->nonfull, MPQ_POLL_OUT);
}

/*
 * Another consumer holds the run at head (its busy bit, for the length
 * of a copy): look again a while, then say empty for now. A call that
 * waits goes on spinning and sleeping, and the holder's release wakes
 * sleepers; one that does not may see an empty queue (as a non-blocking
 * get of Python's Queue does while another process holds its lock).
 */
#define MPQ_RUN_HELD_LOOKS	128

static int mpq_run_held_again(unsigned int *looks)
{
	if (++*looks > MPQ_RUN_HELD_LOOKS)
		return 0;
	cpu_relax();
	return 1;
}

/*
 * Take up to n messages without waiting, into bufs (iov_len in: room,
 * out: length). Returns the count (>= 1), -EAGAIN (empty), -EMSGSIZE
 * (the first does not fit: bufs[0].iov_len is its size) or -EUCLEAN (a
 * corrupt message, dropped so the ring can go on).
 */
static inline __attribute__((always_inline))
int mpq_queue_try_get_n(struct mpq_queue *q, struct iovec *bufs,
			unsigned int n, int waited, uint32_t exact)
{
	uint32_t len[MPQ_BATCH_MAX];
	struct mpq_queue_rec *r;
	unsigned int m, looks = 0;
	uint64_t pos;
	int k;

	do {
		m = 0;
		k = mpq_claim_get(q, bufs, n, &pos, &r, len, &m, exact);
		if (unlikely(k == MPQ_CLAIM_RUN)) {
			/* exact: bufs are consecutive cells of one array. */
			k = exact ? mpq_run_get(q, pos, NULL, n,
						bufs[0].iov_base, &exact,
						waited) :
				    mpq_run_get(q, pos, bufs, n, NULL, NULL,
						waited);
			if (k == -EMSGSIZE && exact)
				bufs[0].iov_len = exact;
			if (k == MPQ_RUN_HELD) {
				if (mpq_run_held_again(&looks))
					continue;
				return -EAGAIN;
			}
			if (k)
				return k;
			continue;	/* spent: look again */
		}
		if (k < 0) {
			/* Unbounded: an empty ring may have an overflow. */
			if (k == -EAGAIN && !q->maxsize && mpq_ovf_active(q) &&
			    mpq_ovf_promote(q) > 0)
				continue;
			return k;
		}
		if (unlikely(mpq_len_ext(q, len[0])))
			return mpq_queue_take_ext(q, r, pos, bufs, len[0]);
		/* One slot, the common claim: the loops fold away. */
		if (likely(k == 1))
			mpq_queue_take(q, r, pos, bufs, len, 1, waited);
		else
			mpq_queue_take(q, r, pos, bufs, len, (unsigned int)k,
				       waited);
		/* Only dropped slots: look again. */
	} while (!m);
	return (int)m;
}

/*
 * A batch: what is there now. A claim stops where a run starts, and a
 * take from a run where it ends: the rest is taken on, without waiting.
 */
static int mpq_queue_try_get(struct mpq_queue *q, struct iovec *bufs,
			     unsigned int n, int waited)
{
	int got = mpq_queue_try_get_n(q, bufs, n, waited, 0), ret;

	while (got > 0 && (unsigned int)got < n && q->runs &&
	       mpq_runs_out(q)) {
		ret = mpq_queue_try_get_n(q, bufs + got, n - (unsigned int)got,
					  0, 0);
		if (ret <= 0)
			break;
		got += ret;
	}
	return got;
}

/*
 * The one-message put and get, written for latency: in a round trip the
 * whole of a get after the message lands and of the put that answers it
 * is on the critical path, so these do only what the protocol needs (the
 * same record, claim, copy and publish as above, in the same order, so a
 * death anywhere leaves what it leaves there) with the slot's address
 * taken once and no batch bookkeeping. Anything else (a full or contended
 * ring, a slot that is not a plain message, no cached record, a bound
 * below the ring's size, a JoinableQueue's count) returns 0: the general
 * path above takes it from the start.
 */
static inline int mpq_queue_lean(const struct mpq_queue *q)
{
	return !(q->closed | q->limit | (q->flags & MPQ_QUEUE_JOINABLE));
}

/*
 * Under the cached record, with op's intent for pos: move tail or head
 * (word) from pos to pos + 1 by a CAS. Returns the record, its intent
 * WON, or NULL (no record, or someone else moved word first).
 */
static inline __attribute__((always_inline))
struct mpq_queue_rec *mpq_lean_begin(struct mpq_queue *q, uint32_t op,
				     __u64 *word, __u64 pos)
{
	struct mpq_queue_rec *r = mpq_rec_cached(q);

	if (unlikely(!r))
		return NULL;
	mpq_rec_intent(r, op, pos, 1);
	if (unlikely(!__atomic_compare_exchange_n(word, &pos, pos + 1, 0,
						  __ATOMIC_RELEASE,
						  __ATOMIC_RELAXED))) {
		mpq_rec_end(q, r);
		return NULL;
	}
	__atomic_store_n(&r->op, op | MPQ_REC_WON, __ATOMIC_RELAXED);
	return r;
}

/*
 * The only producer and the only consumer take no record here: the put
 * publishes its slot before it moves tail, the get frees its slot after
 * the copy and moves head last. Killed before the publish, a put left
 * nothing (seq still says free); before the free, a get leaves its
 * message at head, to be delivered again (as a dead consumer's is). Killed
 * between, either leaves its cursor one behind a slot that is already
 * past it, which whoever comes next moves on (mpq_tail_behind()). A
 * record costs a third of a one-message put or get: TLS, the robust
 * list's pending slot and four stores (bench/README.md).
 */
static inline __attribute__((always_inline))
void mpq_queue_put1_alone(struct mpq_queue *q, struct mpq_slot *s,
			  uint64_t pos, const void *msg, uint32_t len)
{
	s->len = len;
	mpq_copy(s + 1, msg, len);
	store_release(&s->seq, (uint32_t)(pos + 1));
	mpq_probe_queue_put(q->id, pos, len);
	store_release(&q->shm->tail, pos + 1);
	mpq_queue_notify_fast(q, &q->shm->nonempty, MPQ_POLL_IN);
}

static inline __attribute__((always_inline))
void mpq_queue_get1_alone(struct mpq_queue *q, struct mpq_slot *s,
			  uint64_t pos, void *buf, uint32_t len, int waited)
{
	mpq_queue_copy_msg(buf, s, len, waited);
	store_release(&s->seq, (uint32_t)(pos + q->capacity));
	mpq_probe_queue_get(q->id, pos, len);
	store_release(&q->shm->head, pos + 1);
	mpq_queue_notify_fast(q, &q->shm->nonfull, MPQ_POLL_OUT);
}

/* Put msg (len <= msg_max): 1, or 0 for the general path. */
static inline __attribute__((always_inline))
int mpq_queue_put1(struct mpq_queue *q, const void *msg, uint32_t len)
{
	uint64_t pos = load_relaxed(&q->shm->tail);
	struct mpq_slot *s = mpq_slot_at(q, pos);
	struct mpq_queue_rec *r;

	if (load_acquire(&s->seq) != (uint32_t)pos)
		return 0;
	if (q->one_producer) {		/* bounded: no overflow */
		/* Runs in the ring: the bound counts messages. */
		if (unlikely(mpq_runs_out(q)))
			return 0;
		mpq_queue_put1_alone(q, s, pos, msg, len);
		return 1;
	}
	if (unlikely(!q->maxsize) && mpq_ovf_active(q))
		return 0;
	/* Runs in the ring: the bound counts messages. */
	if (unlikely(q->runs && mpq_runs_out(q)))
		return 0;
	r = mpq_lean_begin(q, MPQ_REC_PUT, &q->shm->tail, pos);
	if (unlikely(!r))
		return 0;
	s->len = len;
	mpq_copy(s + 1, msg, len);
	store_release(&s->seq, (uint32_t)(pos + 1));
	mpq_probe_queue_put(q->id, pos, len);
	mpq_rec_end(q, r);
	mpq_queue_notify_fast(q, &q->shm->nonempty, MPQ_POLL_IN);
	return 1;
}

/*
 * Take one message into buf (*lenp bytes of room; out: its length): 1,
 * -EAGAIN (a bounded ring empty), or 0 for the general path.
 */
static inline __attribute__((always_inline))
int mpq_queue_get1(struct mpq_queue *q, void *buf, size_t *lenp, int waited)
{
	uint64_t pos = load_relaxed(&q->shm->head);
	struct mpq_slot *s = mpq_slot_at(q, pos);
	uint32_t seq = load_acquire(&s->seq), len;
	struct mpq_queue_rec *r;

	if (seq != (uint32_t)(pos + 1))
		return seq == (uint32_t)pos && q->maxsize ? -EAGAIN : 0;
	/* Above msg_max: dropped, out of line or corrupt, all general. */
	len = load_relaxed(&s->len);
	if (unlikely(len > q->msg_max || len > *lenp))
		return 0;
	if (q->one_consumer) {
		mpq_queue_get1_alone(q, s, pos, buf, len, waited);
		*lenp = len;
		return 1;
	}
	r = mpq_lean_begin(q, MPQ_REC_GET, &q->shm->head, pos);
	if (unlikely(!r))
		return 0;
	mpq_queue_copy_msg(buf, s, len, waited);
	store_release(&s->seq, (uint32_t)(pos + q->capacity));
	mpq_probe_queue_get(q->id, pos, len);
	mpq_rec_end(q, r);
	mpq_queue_notify_fast(q, &q->shm->nonfull, MPQ_POLL_OUT);
	*lenp = len;
	return 1;
}

/* A put or a get of a batch, or a zero-copy one, retried while waiting. */
struct mpq_op {
	struct mpq_queue *q;
	struct iovec *iov;
	unsigned int n;
	int is_get;
	struct mpq_msg *zc;	/* reserve or peek */
	struct mpq_qblob *blob;	/* reserve: out of line, in this blob */
	int waited;		/* past the first look (mpq_queue_copy_msg) */
	void *arr;		/* put_array, get_array: n of asize bytes */
	uint32_t asize;
};

static int mpq_queue_try_put_array(struct mpq_queue *q, const void *base,
				   uint32_t size, unsigned int count);
static int mpq_queue_try_get_array(struct mpq_queue *q, void *buf,
				   uint32_t size, unsigned int max, int waited);

static int mpq_zc_reserve(struct mpq_queue *q, struct mpq_msg *m,
			  struct mpq_qblob *blob);
static int mpq_zc_peek(struct mpq_queue *q, struct mpq_msg *m);

static int mpq_op_try(struct mpq_op *op)
{
	if (op->zc)
		return op->is_get ? mpq_zc_peek(op->q, op->zc) :
				    mpq_zc_reserve(op->q, op->zc, op->blob);
	if (op->arr)
		return op->is_get ?
		       mpq_queue_try_get_array(op->q, op->arr, op->asize,
					       op->n, op->waited) :
		       mpq_queue_try_put_array(op->q, op->arr, op->asize,
					       op->n);
	if (op->is_get) {
		/* A spin's looks: the message that lands goes the lean way. */
		if (op->n == 1 && mpq_queue_lean(op->q)) {
			int ret = mpq_queue_get1(op->q, op->iov[0].iov_base,
						 &op->iov[0].iov_len,
						 op->waited);

			if (ret)
				return ret;
		}
		return mpq_queue_try_get(op->q, op->iov, op->n, op->waited);
	}
	return mpq_queue_try_put(op->q, op->iov, op->n);
}

/*
 * Before sleeping, and after each wake-up: clean up after participants
 * that died mid-operation (reclaim.c). A consumer may be handed the
 * messages a dead consumer never finished with: that is its result.
 */
static int mpq_op_reclaim(struct mpq_op *op)
{
	struct iovec cell;

	if (!op->is_get)
		return mpq_queue_reclaim(op->q, NULL, 0, 0);
	if (op->zc)
		return mpq_queue_reclaim_peek(op->q, op->zc);
	if (op->arr) {
		/* One of exact size, into the array's first cell. */
		cell.iov_base = op->arr;
		cell.iov_len = op->asize;
		return mpq_queue_reclaim(op->q, &cell, 1, op->asize);
	}
	return mpq_queue_reclaim(op->q, op->iov, op->n, 0);
}

/*
 * A put that found the ring full, and spins, waits at first for
 * MPQ_QUEUE_SLIP free slots rather than one. Refilled one at a time, at
 * the heels of a consumer that keeps the queue full, each slot pulls the
 * consumer's current cache line away from it between its read and its
 * free, and the producer, a little faster, stays there; started a run of
 * slots behind it, the producer writes lines the consumer is done with,
 * and stays behind. The wait is MPQ_QUEUE_SLIP_LOOKS looks (a few
 * microseconds), so a consumer that has stopped delays a put by no more
 * than that, and it comes before the spin's clock starts: counted in the
 * spin, it made the spin yield the CPU at 0.5 us, which with a busy CPU
 * shared gave it away for a whole time slice (a stream beside a CPU hog
 * fell from 11 to 0.3-2 M/s in one run in three, the consumer asleep 4
 * ms at a time). A queue whose maxsize is below its ring's size slips by
 * its bound the same way: it once did not, and with 8-byte messages in
 * 16-byte slots, four to a line, its producer refilled the slot just
 * behind the consumer's, mostly in the consumer's line: 5 M/s, against
 * 42 with the slip (bench/README.md).
 */
#define MPQ_QUEUE_SLIP		64
#define MPQ_QUEUE_SLIP_LOOKS	64

static int mpq_queue_slipped(struct mpq_queue *q)
{
	uint64_t bound = q->limit ? q->limit : q->capacity;
	uint64_t pos = load_relaxed(&q->shm->tail) + MPQ_QUEUE_SLIP - 1 -
		       bound;

	/*
	 * Taken and freed (seq pos + capacity, or a later lap's): the put
	 * at tail + MPQ_QUEUE_SLIP - 1 is within the bound. Its slot, not
	 * head, which the consumer writes on every get: read in this loop,
	 * head's line went back and forth, and the stream ran at half the
	 * rate (10.7 M/s).
	 */
	return (int32_t)(load_acquire(&mpq_slot_at(q, pos)->seq) -
			 (uint32_t)(pos + q->capacity)) >= 0;
}

static void mpq_queue_slip(struct mpq_op *op)
{
	struct mpq_queue *q = op->q;
	unsigned int i;

	if (op->is_get || op->zc || !q->maxsize ||
	    q->maxsize < 4 * MPQ_QUEUE_SLIP)
		return;
	for (i = 0; i < MPQ_QUEUE_SLIP_LOOKS; i++) {
		if (mpq_queue_slipped(q))
			return;
		cpu_relax();
	}
}

/*
 * A getter spinning on the slot at head also loads the slot's last word
 * when that is in the next cache line (a slot of 24 bytes straddles two
 * lines one time in three): the producer writes both, and the second
 * line's miss is then taken while spinning, beside the first, not after
 * the seq says the message is there. Loads only, as conn.c's spin does.
 * Only slots of a line or less: in a larger one the data is most of the
 * lines, and loading them while the producer writes them made the 64 B
 * round trip slower (811 -> 962 ns p50 here), not faster.
 */
static inline void mpq_queue_touch_slot(const struct mpq_queue *q)
{
	uintptr_t s = (uintptr_t)mpq_slot_at(q, load_relaxed(&q->shm->head));
	uintptr_t end = s + q->slot_size - sizeof(uint64_t);

	if (q->slot_size <= 64 && (s ^ end) & ~(uintptr_t)63)
		(void)load_relaxed((const uint64_t *)end);
}

/*
 * Retry op for up to spin_ns before sleeping. A wake-up through the kernel
 * costs about 5 us when both processes share a CPU and 40-60 us across
 * CPUs in the VMs measured (PERF.md), so while the other side answers
 * sooner than that, spinning is what makes a round trip take 200 ns
 * instead of 50 us. After MPQ_SPIN_YIELD_NS the loop also yields the CPU
 * at each pass: if the other side is waiting for our CPU (pinned to it,
 * or an overloaded machine) it runs now rather than at the end of our
 * time slice. (An average of past spins that shortened the spin was tried
 * and dropped: once one side of a ping-pong slept, the other's spins
 * failed too, and both settled into sleeping every time.)
 *
 * A get that made the first looks (mpq_first_looks()) and has no
 * deadline reads the clock after a pass of the spin, not before: a read
 * is 20 ns on the host but 700 ns in a TCG guest whose clock source is
 * the HPET (a system call and an emulated device read), and a message
 * that lands while it runs waits for it. Read on the way in, it fell at
 * a fixed moment after the looks, where a 1-4 KiB answer arrived: those
 * round trips took 1.2-1.9 us longer there (bench/README.md, "The clock
 * after the first looks"). Other waits keep the clock from the start:
 * a stream's consumer spinning a pass longer before its first yield
 * took its producer's lines more often (1 KiB streams 0.84x here).
 */
static int mpq_queue_spin(struct mpq_op *op, int64_t deadline)
{
	int64_t start = 0, limit = op->q->spin_ns, spun;
	int timed = !(op->is_get && deadline < 0 && mpq_looked());
	unsigned int i;
	int ret;

	/* Not timed: the spin's yield comes after 0.5 us of looking. */
	mpq_queue_slip(op);
	if (timed) {
		start = mpq_now_ns();
		if (deadline >= 0 && deadline - start < limit)
			limit = deadline - start;
	}
	for (;;) {
		for (i = 0; i < 64; i++) {
			cpu_relax();
			if (op->is_get)
				mpq_queue_touch_slot(op->q);
			ret = mpq_op_try(op);
			if (ret != -EAGAIN)
				return ret;
		}
		if (!timed) {
			start = mpq_now_ns();
			timed = 1;
			continue;
		}
		spun = mpq_now_ns() - start;
		if (spun > MPQ_SPIN_YIELD_NS)
			sched_yield();
		if (spun >= limit)
			return -EAGAIN;
	}
}

/*
 * How long one sleep may last: to the deadline, except that while someone
 * is inside an operation or a zero-copy window, a sleeper looks again
 * every MPQ_RECHECK_NS. Deaths inside put and get ring the deathbell
 * (memfd) and the module wakes pollers when a participant exits (kmod);
 * this bounds the rest (a window's thread that exits alone, a bell that
 * glibc's own robust mutexes overwrote).
 */
static int64_t mpq_queue_sleep_until(struct mpq_queue *q, int64_t deadline)
{
	int64_t recheck;

	if (!mpq_queue_busy(q))
		return deadline;
	recheck = mpq_now_ns() + MPQ_RECHECK_NS;
	return deadline < 0 || recheck < deadline ? recheck : deadline;
}

/*
 * With the module, sleep in poll() on the queue's fd: its ->poll() sets
 * our wanted bit before it looks, and puts and gets wake pollers that
 * asked. The module cannot wake a futex, and read(2), write(2) and
 * io_uring on the fd put and get inside the kernel: a sleeper there is one
 * they can wake. Returns 0 to try again, or -errno.
 */
static int mpq_queue_sleep_kmod(struct mpq_op *op, int64_t until)
{
	struct pollfd p = { .fd = op->q->fd,
			    .events = op->is_get ? POLLIN : POLLOUT };
	struct timespec ts, *tsp = NULL;

	if (until >= 0) {
		int64_t left = until - mpq_now_ns();

		if (left < 0)
			left = 0;
		ts.tv_sec = left / 1000000000;
		ts.tv_nsec = left % 1000000000;
		tsp = &ts;
	}
	if (ppoll(&p, 1, tsp, NULL) < 0 && errno != EINTR)
		return -errno;
	return 0;
}

/*
 * Without it, on the futex word: announce, make sure a racing publisher
 * sees us or is seen (mpq_queue_sleep_fence(): membarrier, or a bounded
 * sleep), then look again (pairs with mpq_queue_notify(); if we then do
 * not sleep the bit stays
 * set, costing one spare wake-up call, never a lost one), and sleep on the
 * deathbell too, which the kernel rings when a participant dies in the
 * middle of an operation (robust.h).
 *
 * The kernel rings it once: it wakes one sleeper. So that this sleeper's
 * own death cannot swallow the news, our pending slot names the deathbell
 * from before we sleep until, woken by it, we have woken every other
 * sleeper: dead at any instant of that, we ring it again (the deathbell
 * is always 0, the word the kernel wakes for). We wake them on the words
 * they sleep on beside it, not on the deathbell itself: one woken that way
 * would pass it on in turn, and two sleepers would wake each other for
 * ever (seen as a SIGKILL storm test slowed to a timeout). Once all are
 * awake, each cleans up after the dead (mpq_op_reclaim) before it sleeps
 * again, and any one of them that lives is enough. (Without this, a lost
 * ring cost a sleeper up to MPQ_RECHECK_NS, not a wedge: see
 * mpq_queue_sleep_until.)
 */
static int mpq_queue_sleep_memfd(struct mpq_op *op, uint32_t *word,
				 int64_t until)
{
	const uint32_t *words[2] = { word, &op->q->shm->deathbell };
	static int no_waitv;	/* before Linux 5.16 */
	uint32_t vals[2];
	int ret;

	vals[0] = __atomic_fetch_or(word, MPQ_FUTEX_SLEEPING,
				    __ATOMIC_SEQ_CST) | MPQ_FUTEX_SLEEPING;
	vals[1] = 0;
	if (!mpq_queue_sleep_fence(op->q)) {
		int64_t recheck = mpq_now_ns() + MPQ_RECHECK_NS;

		if (until < 0 || recheck < until)
			until = recheck;
	}
	ret = mpq_op_try(op);
	if (ret != -EAGAIN)
		return ret;
	if (!load_relaxed(&no_waitv)) {
		mpq_robust_bell(&op->q->shm->deathbell);
		ret = mpq_futex_waitv(words, vals, 2, until);
		if (ret == 1) {	/* the deathbell: pass it on to all */
			mpq_futex_wake(&op->q->shm->nonempty, INT32_MAX);
			mpq_futex_wake(&op->q->shm->nonfull, INT32_MAX);
		}
		mpq_robust_clear_pending();
		if (ret != -ENOSYS)
			return ret < 0 && ret != -ETIMEDOUT && ret != -EINTR ?
			       ret : 0;
		__atomic_store_n(&no_waitv, 1, __ATOMIC_RELAXED);
	}
	/* No deathbell then: look again at least every MPQ_RECHECK_NS. */
	ret = mpq_futex_wait(word, vals[0], mpq_queue_sleep_until(op->q, until));
	return ret == -ETIMEDOUT || ret == -EINTR ? 0 : ret;
}

/*
 * Block until op succeeds or fails for another reason than -EAGAIN, or the
 * deadline passes: spin first, then sleep, and clean up after the dead
 * each time before sleeping.
 */
static int mpq_queue_wait_for(struct mpq_op *op, uint32_t *word,
			      int64_t timeout_ns)
{
	int64_t deadline = mpq_deadline(timeout_ns);
	int ret;

	if (op->q->spin_ns > 0) {
		ret = mpq_queue_spin(op, deadline);
		if (ret != -EAGAIN)
			return ret;
	}
	for (;;) {
		/*
		 * How long to sleep is decided before looking for the dead:
		 * one in the middle of an operation now that dies after the
		 * look makes the sleep a short one (MPQ_RECHECK_NS). The other
		 * order lost a death between the look and the decision (the
		 * deathbell rings only for those already asleep, and a dead
		 * record no longer counts as busy): the waiter slept for good.
		 */
		int64_t until = mpq_queue_sleep_until(op->q, deadline);

		ret = mpq_op_reclaim(op);
		if (ret)	/* delivered, or -EMSGSIZE (get_array) */
			return ret;
		ret = mpq_op_try(op);
		if (ret != -EAGAIN)
			return ret;
		if (deadline >= 0 && mpq_now_ns() >= deadline)
			return -ETIMEDOUT;
		if (op->q->backend == MPQ_BACKEND_KMOD)
			ret = mpq_queue_sleep_kmod(op, until);
		else
			ret = mpq_queue_sleep_memfd(op, word, until);
		if (ret != 0 && ret != -EAGAIN)
			return ret;
	}
}

/*
 * Does the ring look held up by a slot in progress (a claim not yet
 * published at head, for a get; a slot not yet freed at tail, for a put)?
 * A call that does not wait cleans up after the dead only then: so that
 * a caller that never waits is not stopped for good by a dead process,
 * and an empty or full queue costs a non-blocking call no more than it
 * did.
 */
static int mpq_queue_held_up(struct mpq_queue *q, int is_get)
{
	uint64_t head = load_acquire(&q->shm->head);
	uint64_t tail = load_acquire(&q->shm->tail);

	if (is_get)
		return head != tail;
	return tail - head < (q->limit ? q->limit : q->capacity);
}

/*
 * A dead consumer's message, in a ring otherwise empty, shows nothing at
 * the head: a get that does not wait looks for one when mpq_wait() saw it
 * on this handle (so that a wait's "ready" is a get's message, not a loop
 * of wake-ups), when the module counted a death with an operation
 * unfinished since this handle last looked (so that a program's own poll
 * loop, which the module tells of such a message, gets it at its next
 * get), and at one empty call in MPQ_DEAD_LOOK_EVERY otherwise (a look at
 * every record; the rest cost one more read, of the deaths word).
 */
#define MPQ_DEAD_LOOK_EVERY	64

static int mpq_queue_dead_look(struct mpq_queue *q)
{
	uint32_t n, d;

	/* No locked instruction: a count that threads race on is still one. */
	if (__atomic_load_n(&q->dead_hint, __ATOMIC_RELAXED)) {
		__atomic_store_n(&q->dead_hint, 0, __ATOMIC_RELAXED);
		return 1;
	}
	d = load_relaxed(&q->shm->deaths);
	if (d != __atomic_load_n(&q->deaths_seen, __ATOMIC_RELAXED)) {
		__atomic_store_n(&q->deaths_seen, d, __ATOMIC_RELAXED);
		return mpq_queue_dead_message(q);
	}
	n = __atomic_load_n(&q->empty_looks, __ATOMIC_RELAXED) + 1;
	__atomic_store_n(&q->empty_looks, n, __ATOMIC_RELAXED);
	return n % MPQ_DEAD_LOOK_EVERY == 0 && mpq_queue_dead_message(q);
}

static int mpq_queue_nowait(struct mpq_op *op, int ret)
{
	int got;

	if (ret != -EAGAIN)
		return ret;
	if (!mpq_queue_held_up(op->q, op->is_get) &&
	    !(op->is_get && mpq_queue_dead_look(op->q)))
		return ret;
	got = mpq_op_reclaim(op);
	return got ? got : mpq_op_try(op);
}

/* A wait, as tracers see it (queue_wait_begin/end in probes.h). */
static int mpq_queue_wait(struct mpq_op *op, uint32_t *word,
			  int64_t timeout_ns)
{
	uint32_t dir = op->is_get ? MPQ_POLL_IN : MPQ_POLL_OUT;
	int ret;

	mpq_probe_queue_wait_begin(op->q->id, dir);
	op->waited = 1;
	ret = mpq_queue_wait_for(op, word, timeout_ns);
	mpq_probe_queue_wait_end(op->q->id, dir, ret);
	return ret;
}

static int mpq_queue_op(struct mpq_op *op, int64_t timeout_ns)
{
	struct mpq_queue *q = op->q;
	uint32_t *word = op->is_get ? &q->shm->nonempty : &q->shm->nonfull;
	int ret;

	if (q->closed)
		return -EBADF;
	ret = mpq_op_try(op);
	if (likely(ret != -EAGAIN))
		return ret;
	if (timeout_ns == 0)
		return mpq_queue_nowait(op, ret);
	return mpq_queue_wait(op, word, timeout_ns);
}

/* A put or get that found no room or nothing: return, or wait. */
static __attribute__((noinline)) int
mpq_queue_op_blocked(struct mpq_queue *q, struct iovec *iov, unsigned int n,
		     int is_get, int64_t timeout_ns)
{
	struct mpq_op op = { .q = q, .iov = iov, .n = n, .is_get = is_get };

	if (timeout_ns == 0)
		return mpq_queue_nowait(&op, -EAGAIN);
	return mpq_queue_wait(&op, is_get ? &q->shm->nonempty :
					    &q->shm->nonfull, timeout_ns);
}

static int mpq_queue_put_op(struct mpq_queue *q, struct iovec *msgs,
			    unsigned int n, int64_t timeout_ns)
{
	int ret;

	if (unlikely(q->closed))
		return -EBADF;
	/* One message, the common call: the batch loops fold away. */
	ret = likely(n == 1) ? mpq_queue_try_put_n(q, msgs, 1) :
			       mpq_queue_try_put(q, msgs, n);
	if (likely(ret != -EAGAIN))
		return ret;
	return mpq_queue_op_blocked(q, msgs, n, 0, timeout_ns);
}

static int mpq_queue_get_op(struct mpq_queue *q, struct iovec *bufs,
			    unsigned int n, int64_t timeout_ns)
{
	int ret;

	if (unlikely(q->closed))
		return -EBADF;
	ret = likely(n == 1) ? mpq_queue_try_get_n(q, bufs, 1, 0, 0) :
			       mpq_queue_try_get(q, bufs, n, 0);
	if (likely(ret != -EAGAIN))
		return ret;
	return mpq_queue_op_blocked(q, bufs, n, 1, timeout_ns);
}

/*
 * A message larger than a slot: copied into a blob of its own, whose
 * descriptor is put as the message. If the put fails (full, timed out)
 * the blob goes: nothing was put.
 */
static int mpq_queue_put_ext(struct mpq_queue *q, const void *msg, size_t len,
			     int64_t timeout_ns)
{
	struct mpq_slot_ext e = { .len = len };
	struct iovec iov = { .iov_base = &e, .iov_len = MPQ_IOV_EXT };
	struct mpq_queue_rec *r;
	uint64_t id;
	int ret;

	if (q->closed)
		return -EBADF;
	if (!mpq_slot_ext_fits(q, len))
		return -EMSGSIZE;
	/*
	 * The blob is our record's until the put publishes it (reclaim.c
	 * tells which from the record's op, so no stale one is left).
	 */
	r = mpq_rec_own_idle(q);
	if (r)
		__atomic_store_n(&r->op, 0, __ATOMIC_RELAXED);
	ret = mpq_qblob_copy_in(q, msg, len, &id, r);
	if (ret)
		return ret;
	e.id = id;
	ret = mpq_queue_put_op(q, &iov, 1, timeout_ns);
	if (r && ret >= 0)
		__atomic_store_n(&r->blob, 0, __ATOMIC_RELEASE);
	else if (r)
		mpq_qblob_release(q, r);
	else if (ret < 0)
		mpq_qblob_drop(q, e.id, len);
	return ret;
}

/*
 * Everything but the lean put, out of line: the exported call then saves
 * and restores none of the registers that this needs.
 */
static __attribute__((noinline)) int
mpq_queue_put_slow(struct mpq_queue *q, const void *msg, size_t len,
		   int64_t timeout_ns)
{
	struct iovec iov = { .iov_base = (void *)msg, .iov_len = len };
	int ret;

	if (!q || (!msg && len))
		return -EINVAL;
	if (unlikely(q->ext))
		ret = mpq_xq_put_many(q, &iov, 1, timeout_ns);
	else if (unlikely(len > q->msg_max))
		ret = mpq_queue_put_ext(q, msg, len, timeout_ns);
	else
		ret = mpq_queue_put_op(q, &iov, 1, timeout_ns);
	if (ret < 0)
		return ret;
	mpq_sent();
	return 0;
}

MPQ_EXPORT int mpq_queue_put(struct mpq_queue *q, const void *msg, size_t len,
			     int64_t timeout_ns)
{
	if (likely(q && msg && len <= q->msg_max && !q->ext &&
		   mpq_queue_lean(q) && mpq_queue_put1(q, msg, (uint32_t)len))) {
		mpq_sent();
		return 0;
	}
	return mpq_queue_put_slow(q, msg, len, timeout_ns);
}

MPQ_EXPORT int mpq_queue_put_nowait(struct mpq_queue *q, const void *msg,
				    size_t len)
{
	return mpq_queue_put(q, msg, len, 0);
}

MPQ_EXPORT int mpq_queue_put_many(struct mpq_queue *q,
				  const struct iovec *msgs, unsigned int n,
				  int64_t timeout_ns)
{
	unsigned int i;
	int ret;

	if (!q || !msgs || !n)
		return -EINVAL;
	if (n > MPQ_BATCH_MAX)
		n = MPQ_BATCH_MAX;
	if (unlikely(q->ext))
		return mpq_xq_put_many(q, msgs, n, timeout_ns);
	for (i = 0; i < n; i++) {
		if (!msgs[i].iov_base && msgs[i].iov_len)
			return -EINVAL;
		if (msgs[i].iov_len > q->msg_max) {
			/* Out of line, alone: the next call puts it. */
			if (i == 0)
				return mpq_queue_put_ext(q, msgs[0].iov_base,
							 msgs[0].iov_len,
							 timeout_ns);
			n = i;
			break;
		}
	}
	ret = mpq_queue_put_op(q, (struct iovec *)msgs, n, timeout_ns);
	if (ret > 0)
		mpq_sent();
	return ret;
}

/* Everything but the lean get (lean: what it returned), out of line. */
static __attribute__((noinline)) int
mpq_queue_get_slow(struct mpq_queue *q, void *buf, size_t *len,
		   int64_t timeout_ns, int lean)
{
	struct iovec iov;
	int ret;

	if (!q || !buf || !len)
		return -EINVAL;
	iov.iov_base = buf;
	iov.iov_len = *len;
	if (lean == -EAGAIN) {
		/* Empty: straight to the wait, whose looks are lean too. */
		ret = mpq_queue_op_blocked(q, &iov, 1, 1, timeout_ns);
	} else if (unlikely(q->ext)) {
		ret = mpq_xq_get_many(q, &iov, 1, timeout_ns);
	} else {
		ret = mpq_queue_get_op(q, &iov, 1, timeout_ns);
	}
	if (ret > 0 || ret == -EMSGSIZE)
		*len = iov.iov_len;
	return ret < 0 ? ret : 0;
}

__thread int mpq_turn __attribute__((tls_model("initial-exec")));

/*
 * See mpq_first_looks(): the seq of the slot at head, while it says
 * empty. A bounded ring only: an unbounded queue's message may be in
 * the overflow instead. Returns whether it waited (mpq_queue_copy_msg()).
 */
static inline __attribute__((always_inline))
int mpq_queue_first_looks(struct mpq_queue *q, int64_t timeout_ns)
{
	uint64_t pos;
	const uint32_t *seq;
	unsigned int i;

	if (!mpq_first_looks(q->spin_ns, timeout_ns))
		return 0;
	if (!q->maxsize) {
		mpq_looked();	/* none made: the wait's clock as usual */
		return 0;
	}
	pos = load_relaxed(&q->shm->head);
	seq = &mpq_slot_at(q, pos)->seq;
	for (i = 1; load_acquire(seq) == (uint32_t)pos && i < MPQ_FIRST_LOOKS;
	     i++)
		cpu_relax();
	return i > 1;
}

MPQ_EXPORT int mpq_queue_get(struct mpq_queue *q, void *buf, size_t *len,
			     int64_t timeout_ns)
{
	int lean = 0;

	if (likely(q && buf && len && !q->ext && mpq_queue_lean(q))) {
		lean = mpq_queue_get1(q, buf, len,
				      mpq_queue_first_looks(q, timeout_ns));
		if (likely(lean > 0))
			return 0;
	}
	return mpq_queue_get_slow(q, buf, len, timeout_ns, lean);
}

MPQ_EXPORT int mpq_queue_get_nowait(struct mpq_queue *q, void *buf,
				    size_t *len)
{
	return mpq_queue_get(q, buf, len, 0);
}

MPQ_EXPORT int mpq_queue_get_many(struct mpq_queue *q, struct iovec *bufs,
				  unsigned int n, int64_t timeout_ns)
{
	unsigned int i;

	if (!q || !bufs || !n)
		return -EINVAL;
	if (n > MPQ_BATCH_MAX)
		n = MPQ_BATCH_MAX;
	if (unlikely(q->ext))
		return mpq_xq_get_many(q, bufs, n, timeout_ns);
	for (i = 0; i < n; i++)
		if (!bufs[i].iov_base)
			return -EINVAL;
	return mpq_queue_get_op(q, bufs, n, timeout_ns);
}

/*
 * Arrays: count messages of size bytes each, one after the other in the
 * caller's memory. A queue that takes runs (run.c) moves a batch of them
 * with one copy each way; any other puts a slot per message, as put_many
 * does.
 */
static int mpq_queue_try_put_array(struct mpq_queue *q, const void *base,
				   uint32_t size, unsigned int count)
{
	struct iovec iov[MPQ_BATCH_MAX];
	unsigned int i, n;
	int ret;

	n = count < MPQ_BATCH_MAX ? count : MPQ_BATCH_MAX;
	if (q->runs && size && count >= MPQ_RUN_MIN && mpq_run_pays(q)) {
		ret = mpq_run_put(q, base, NULL, size, count);
		if (ret)
			return ret;
		/* No run here (the ring's last slot, say): one message. */
		n = 1;
	}
	for (i = 0; i < n; i++) {
		iov[i].iov_base = (unsigned char *)base + (size_t)i * size;
		iov[i].iov_len = size;
	}
	return mpq_queue_try_put_n(q, iov, n);
}

static int mpq_queue_try_get_array(struct mpq_queue *q, void *buf,
				   uint32_t size, unsigned int max, int waited)
{
	uint64_t pos = load_relaxed(&q->shm->head);
	struct mpq_slot *s = mpq_slot_at(q, pos);
	struct iovec iov[MPQ_BATCH_MAX];
	unsigned int i, n;
	int ret;

	/* A run at head: straight to it, with no cells laid out. */
	if (load_acquire(&s->seq) == (uint32_t)(pos + 1) &&
	    load_relaxed(&s->len) == MPQ_SLOT_RUN) {
		uint32_t sz = size;

		ret = mpq_run_get(q, pos, NULL, max, buf, &sz, waited);
		if (ret && ret != MPQ_RUN_HELD)
			return ret;
	}
	n = max < MPQ_BATCH_MAX ? max : MPQ_BATCH_MAX;
	for (i = 0; i < n; i++) {
		iov[i].iov_base = (unsigned char *)buf + (size_t)i * size;
		iov[i].iov_len = size;
	}
	return mpq_queue_try_get_n(q, iov, n, waited, size);
}

/*
 * The first step may wait (op); the rest only take what is there now, so
 * that a call moves as much as it can without waiting twice.
 */
static int mpq_queue_array_op(struct mpq_op *op, int64_t timeout_ns)
{
	unsigned char *p = op->arr;
	unsigned int total = op->n;
	int ret, done = 0;

	ret = mpq_queue_op(op, timeout_ns);
	while (ret > 0) {
		done += ret;
		if ((unsigned int)done == total)
			break;
		ret = op->is_get ?
		      mpq_queue_try_get_array(op->q, p + (size_t)done *
					      op->asize, op->asize,
					      total - (unsigned int)done, 0) :
		      mpq_queue_try_put_array(op->q, p + (size_t)done *
					      op->asize, op->asize,
					      total - (unsigned int)done);
	}
	return done ? done : ret;
}

MPQ_EXPORT int mpq_queue_put_array(struct mpq_queue *q, const void *base,
				   size_t size, unsigned int count,
				   int64_t timeout_ns)
{
	struct mpq_op op = { .q = q, .arr = (void *)base, .n = count };
	int ret;

	if (!q || !count || (!base && size))
		return -EINVAL;
	if (unlikely(q->ext))
		return -EOPNOTSUPP;
	if (count > INT32_MAX)
		op.n = count = INT32_MAX;
	if (size > q->msg_max) {
		/* Out of line: a blob each, one per call. */
		ret = mpq_queue_put_ext(q, base, size, timeout_ns);
	} else {
		op.asize = (uint32_t)size;
		ret = mpq_queue_array_op(&op, timeout_ns);
	}
	if (ret > 0)
		mpq_sent();
	return ret;
}

MPQ_EXPORT int mpq_queue_get_array(struct mpq_queue *q, void *buf,
				   size_t size, unsigned int max,
				   int64_t timeout_ns)
{
	struct mpq_op op = { .q = q, .arr = buf, .n = max, .is_get = 1 };

	if (!q || !buf || !max)
		return -EINVAL;
	if (unlikely(q->ext))
		return -EOPNOTSUPP;
	if (max > INT32_MAX)
		op.n = INT32_MAX;
	/* Larger than any message: none is that long. */
	op.asize = size > UINT32_MAX - 1 ? UINT32_MAX - 1 : (uint32_t)size;
	return mpq_queue_array_op(&op, timeout_ns);
}

/*
 * Zero-copy: a window on one slot. reserve claims a slot and hands out
 * its data area to write in place; commit publishes it (cancel publishes
 * it dropped). peek claims the oldest message and hands out its bytes in
 * place; release frees the slot. The slot's operation record stays held
 * for the length of the window, so that a process killed inside it does
 * not wedge the queue: the reserved slot is published dropped, the peeked
 * message is delivered again (reclaim.c). The pending slot of the robust
 * list names the queue's deathbell meanwhile (robust.h), so that sleepers
 * hear of such a death at once.
 *
 * Out of line, the window is on a blob instead (mapped here, m->len
 * bytes: the caller must not change m->len), and the slot holds its
 * descriptor. An unbounded queue whose ring is full, or whose overflow
 * has messages, reserves a blob alone (DETACHED: no slot yet, the blob's
 * id in __pos): commit puts its descriptor as any put would.
 */
/*
 * A peek of a run's message (PEEKRUN) claims nothing: the message stays
 * first in its run until release moves the run's taken on (run.c), so a
 * process killed inside the window leaves it to be delivered again, as a
 * slot's peek does. One of many consumers holds the run's busy bit for
 * the window, under a record (__rec; other consumers wait for the run
 * meanwhile); the only consumer holds nothing (__rec is the queue).
 */
enum { MPQ_ZC_NONE, MPQ_ZC_RESERVED, MPQ_ZC_PEEKED, MPQ_ZC_DETACHED,
       MPQ_ZC_PEEKRUN };

/* Is p in the ring (an in-line window), not in a blob? */
static int mpq_in_ring(const struct mpq_queue *q, const void *p)
{
	const unsigned char *c = p;

	return c >= q->slots && c < (const unsigned char *)q->shm + q->map_size;
}

/*
 * A window's bookkeeping, and the deathbell named in the robust list's
 * pending slot for its length (closed by mpq_zc_close()).
 */
static void mpq_zc_hold(struct mpq_queue *q, struct mpq_msg *m, uint64_t pos,
			void *rec, uint32_t kind)
{
	m->__pos = pos;
	m->__rec = rec;
	m->__q = q;
	m->__kind = kind;
	mpq_robust_window(&q->shm->deathbell, 1);
}

/*
 * Open the window. A peeked out-of-line message is mapped here: if that
 * cannot be done now the record is given up, so that the message is
 * delivered again, and the error returned; if its blob is not there the
 * descriptor is corrupt: -EUCLEAN, with the slot freed.
 */
static int mpq_zc_open(struct mpq_queue *q, struct mpq_msg *m,
		       struct mpq_queue_rec *r, uint64_t pos, uint32_t kind,
		       const struct mpq_qblob *blob)
{
	struct mpq_slot *s = mpq_slot_at(q, pos);

	m->data = s + 1;
	m->len = kind == MPQ_ZC_RESERVED ? q->msg_max : s->len;
	if (blob) {
		/* Ours till commit: the blob's id, for cancel. */
		memcpy(s + 1, &blob->id, sizeof(blob->id));
		m->data = blob->map;
		m->len = blob->map_len;
	} else if (kind == MPQ_ZC_PEEKED && mpq_len_ext(q, m->len)) {
		struct mpq_slot_ext e;
		struct mpq_qblob b;
		int ret;

		mpq_slot_ext_read(q, s, (uint32_t)m->len, &e);
		ret = mpq_qblob_open(q, e.id, e.len, &b);
		if (ret && ret != -EUCLEAN && r) {
			mpq_rec_giveup(q, r);
			return ret;
		}
		if (!ret)
			m->__pad = (uint32_t)(b.map_len /
					      (size_t)sysconf(_SC_PAGESIZE));
		if (ret) {
			mpq_queue_free_slots(q, pos, 1);
			mpq_rec_end(q, r);
			mpq_queue_notify_fast(q, &q->shm->nonfull, MPQ_POLL_OUT);
			return -EUCLEAN;
		}
		m->data = b.map;
		m->len = e.len;
	}
	mpq_zc_hold(q, m, pos, r, kind);
	return 0;
}

int mpq_queue_window(struct mpq_queue *q, struct mpq_msg *m,
		     struct mpq_queue_rec *r, uint64_t pos)
{
	return mpq_zc_open(q, m, r, pos, MPQ_ZC_PEEKED, NULL);
}

static void mpq_zc_close(struct mpq_msg *m)
{
	m->__kind = MPQ_ZC_NONE;
	m->__rec = NULL;
	m->data = NULL;
	mpq_robust_window(NULL, -1);
}

/*
 * Unmap an out-of-line window: the pages its blob was mapped with
 * (m->__pad, a recycled blob or one of the module's is mapped whole), or
 * m->len bytes' worth.
 */
static void mpq_zc_unmap(struct mpq_queue *q, struct mpq_msg *m)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	struct mpq_qblob b = { .map = m->data };

	if (mpq_in_ring(q, m->data))
		return;
	b.map_len = m->len ? m->len : 1;
	b.map_len = (b.map_len + page - 1) & ~(page - 1);
	if (m->__pad)
		b.map_len = (size_t)m->__pad * page;
	m->__pad = 0;
	mpq_qblob_unmap(&b);
}

static int mpq_zc_reserve(struct mpq_queue *q, struct mpq_msg *m,
			  struct mpq_qblob *blob)
{
	struct mpq_queue_rec *r;
	uint64_t pos;
	int k;

	/* Unbounded, ring full or behind the overflow: a blob alone. */
	if (unlikely(!q->maxsize) && blob && mpq_ovf_active(q))
		k = -EAGAIN;
	else
		k = mpq_claim_put(q, 1, &pos, &r);
	if (k == -EAGAIN && !q->maxsize && blob) {
		m->data = blob->map;
		m->len = blob->map_len;
		m->__pos = blob->id;
		m->__rec = q;
		m->__q = q;
		m->__kind = MPQ_ZC_DETACHED;
		return 1;
	}
	if (k < 0)
		return k;
	mpq_zc_open(q, m, r, pos, MPQ_ZC_RESERVED, blob);
	return 1;
}

/*
 * Claim the oldest message for a peek. Dropped slots claimed with it are
 * freed at once, and the record's intent narrowed to the message's slot.
 */
static int mpq_zc_peek(struct mpq_queue *q, struct mpq_msg *m)
{
	uint32_t len[MPQ_BATCH_MAX];
	struct mpq_queue_rec *r;
	unsigned int msgs, looks = 0;
	uint64_t pos;
	int k;

	for (;;) {
		msgs = 0;
		k = mpq_claim_get(q, NULL, 1, &pos, &r, len, &msgs, 0);
		if (k == MPQ_CLAIM_RUN) {
			void *data;
			uint32_t rlen;

			k = mpq_run_peek(q, pos, &data, &rlen, &r);
			if (k == MPQ_RUN_HELD) {
				if (mpq_run_held_again(&looks))
					continue;
				return -EAGAIN;
			}
			if (!k)
				continue;	/* spent: look again */
			if (k < 0)
				return k;
			m->data = data;
			m->len = rlen;
			/*
			 * The run held under r for the window; the only
			 * consumer holds no record: the holder is q itself.
			 */
			mpq_zc_hold(q, m, pos, r ? (void *)r : (void *)q,
				    MPQ_ZC_PEEKRUN);
			return 1;
		}
		if (k == -EAGAIN && !q->maxsize && mpq_ovf_active(q) &&
		    mpq_ovf_promote(q) > 0)
			continue;
		if (k < 0)
			return k;
		if (msgs)
			break;
		mpq_queue_free_slots(q, pos, (unsigned int)k);
		mpq_rec_end(q, r);
		mpq_queue_notify_fast(q, &q->shm->nonfull, MPQ_POLL_OUT);
	}
	/* The message is the last slot claimed; the dropped ones go now. */
	if (k > 1) {
		mpq_rec_intent(r, MPQ_REC_GET | MPQ_REC_WON, pos + k - 1, 1);
		mpq_queue_free_slots(q, pos, (unsigned int)k - 1);
		mpq_queue_notify_fast(q, &q->shm->nonfull, MPQ_POLL_OUT);
	}
	k = mpq_zc_open(q, m, r, pos + k - 1, MPQ_ZC_PEEKED, NULL);
	return k ? k : 1;
}

static int mpq_zc_check(struct mpq_queue *q, struct mpq_msg *m, uint32_t kind)
{
	if (!q || !m)
		return -EINVAL;
	if (m->__q != q || !m->__rec)
		return -EINVAL;
	if (m->__kind != kind &&
	    !(kind == MPQ_ZC_RESERVED && m->__kind == MPQ_ZC_DETACHED) &&
	    !(kind == MPQ_ZC_PEEKED && m->__kind == MPQ_ZC_PEEKRUN))
		return -EINVAL;
	return 0;
}

/* Is the ring full: would a put into it wait now? */
static int mpq_queue_full_ring(struct mpq_queue *q)
{
	uint64_t tail = load_acquire(&q->shm->tail);
	uint32_t seq = load_acquire(&mpq_slot_at(q, tail)->seq);

	/* A tail left behind is not full: the next put moves it on. */
	if (seq != (uint32_t)tail && !mpq_tail_behind(q, tail, seq))
		return 1;
	/* Runs in the ring: maxsize messages (run.c). */
	if (q->runs && mpq_runs_out(q))
		return !mpq_run_room(q, tail, 1, 0);
	return q->limit && (int64_t)(tail - load_acquire(&q->shm->head)) >=
			   (int64_t)q->limit;
}

MPQ_EXPORT int mpq_queue_reserve(struct mpq_queue *q, size_t size,
				 struct mpq_msg *m, int64_t timeout_ns)
{
	struct mpq_op op = { .q = q, .zc = m };
	struct mpq_queue_rec *r = NULL;
	struct mpq_qblob b = { 0 };
	uint32_t mapped = 0;
	int ret;

	if (!q || !m)
		return -EINVAL;
	if (unlikely(q->ext))
		return -EOPNOTSUPP;
	if (q->closed)
		return -EBADF;
	/*
	 * Out of line when it does not fit a slot, and in an unbounded
	 * queue whose ring may be full (its overflow takes blobs).
	 */
	if (size > q->msg_max || (!q->maxsize && (mpq_ovf_active(q) ||
						  mpq_queue_full_ring(q)))) {
		/*
		 * Held by our record, which the claim then takes (as in
		 * put_ext) and the window keeps till commit (zc_publish).
		 */
		if (!mpq_slot_ext_fits(q, size))
			return -EMSGSIZE;
		r = mpq_rec_own_idle(q);
		if (r)
			__atomic_store_n(&r->op, 0, __ATOMIC_RELAXED);
		ret = mpq_qblob_new_held(q, size, &b, r);
		if (ret)
			return ret;
		mapped = (uint32_t)(b.map_len / (size_t)sysconf(_SC_PAGESIZE));
		b.map_len = size;	/* the room */
		op.blob = &b;
	}
	ret = mpq_queue_op(&op, timeout_ns);
	if (ret >= 0 && op.blob)
		m->__pad = mapped;
	if (ret < 0 && op.blob) {
		struct mpq_msg w = { .data = b.map, .len = size,
				     .__pad = mapped };

		mpq_zc_unmap(q, &w);
		if (r)
			mpq_qblob_release(q, r);
		else
			mpq_qblob_drop(q, b.id, size);
	} else if (r && m->__rec != r) {
		/* No slot (detached) or not our record: the window is not. */
		__atomic_store_n(&r->blob, 0, __ATOMIC_RELEASE);
	}
	return ret < 0 ? ret : 0;
}

/* Publish a reserved slot with len bytes, or (len MPQ_SLOT_DROPPED) none. */
static int mpq_zc_publish(struct mpq_queue *q, struct mpq_msg *m, uint32_t len,
			  uint64_t xlen)
{
	struct mpq_queue_rec *r = m->__rec;
	struct mpq_slot *s = mpq_slot_at(q, m->__pos);
	int ext = !mpq_in_ring(q, m->data);

	if (len != MPQ_SLOT_DROPPED)
		mpq_queue_task_count(q, r, 1);
	if (ext) {
		struct mpq_slot_ext e = { .len = xlen };

		memcpy(&e.id, s + 1, sizeof(e.id));
		/*
		 * What fits the slot goes in it: a len of msg_max or less
		 * says the message is there (<linux/mpq.h>).
		 */
		if (len != MPQ_SLOT_DROPPED && xlen <= q->msg_max) {
			memcpy(s + 1, m->data, xlen);
			len = (uint32_t)xlen;
		}
		mpq_zc_unmap(q, m);
		if (len != MPQ_SLOT_DROPPED && xlen > q->msg_max) {
			mpq_slot_ext_write(s, &e);
			len = s->len;
		} else {
			if (r)	/* ours alone again: not twice */
				__atomic_store_n(&r->blob, 0, __ATOMIC_RELEASE);
			mpq_qblob_drop(q, e.id, m->len);
		}
	}
	s->len = len;
	store_release(&s->seq, (uint32_t)(m->__pos + 1));
	if (len != MPQ_SLOT_DROPPED)
		mpq_queue_task_settled(q, r);
	/* Published: the message has the blob now (reclaim.c). */
	if (ext && r)
		__atomic_store_n(&r->blob, 0, __ATOMIC_RELEASE);
	if (len != MPQ_SLOT_DROPPED)
		mpq_probe_queue_put(q->id, m->__pos, ext ? xlen : len);
	mpq_zc_close(m);
	mpq_rec_end(q, r);
	mpq_queue_notify_fast(q, &q->shm->nonempty, MPQ_POLL_IN);
	return 0;
}

/* Commit or cancel a reservation that has no slot: a put of the blob. */
static int mpq_zc_detached(struct mpq_queue *q, struct mpq_msg *m,
			   size_t len, int cancel)
{
	struct mpq_slot_ext e = { .id = m->__pos, .len = len };
	struct iovec iov = { .iov_base = &e, .iov_len = MPQ_IOV_EXT };
	size_t room = m->len;
	int ret = 0, copy = len <= q->msg_max;

	/*
	 * What fits a slot is put as a copy, from the blob before it is
	 * unmapped: a len of msg_max or less says the message is in its slot.
	 */
	if (copy) {
		iov.iov_base = m->data;
		iov.iov_len = len;
	}
	if (!cancel)
		ret = mpq_queue_put_op(q, &iov, 1, MPQ_FOREVER);
	mpq_zc_unmap(q, m);
	m->__kind = MPQ_ZC_NONE;
	m->__rec = NULL;
	m->data = NULL;
	if (cancel || ret < 0 || copy)
		mpq_qblob_drop(q, e.id, room);
	return ret < 0 ? ret : 0;
}

MPQ_EXPORT int mpq_queue_commit(struct mpq_queue *q, struct mpq_msg *m,
				size_t len)
{
	int ret = mpq_zc_check(q, m, MPQ_ZC_RESERVED);

	if (ret)
		return ret;
	if (len > (mpq_in_ring(q, m->data) ? q->msg_max : m->len))
		return -EMSGSIZE;
	if (m->__kind == MPQ_ZC_DETACHED)
		return mpq_zc_detached(q, m, len, 0);
	return mpq_zc_publish(q, m, (uint32_t)(len > q->msg_max ? 0 : len),
			      len);
}

MPQ_EXPORT int mpq_queue_cancel(struct mpq_queue *q, struct mpq_msg *m)
{
	int ret = mpq_zc_check(q, m, MPQ_ZC_RESERVED);

	if (ret)
		return ret;
	if (m->__kind == MPQ_ZC_DETACHED)
		return mpq_zc_detached(q, m, 0, 1);
	return mpq_zc_publish(q, m, MPQ_SLOT_DROPPED, 0);
}

MPQ_EXPORT int mpq_queue_peek(struct mpq_queue *q, struct mpq_msg *m,
			      int64_t timeout_ns)
{
	struct mpq_op op = { .q = q, .zc = m, .is_get = 1 };
	int ret;

	if (!q || !m)
		return -EINVAL;
	if (unlikely(q->ext))
		return -EOPNOTSUPP;
	ret = mpq_queue_op(&op, timeout_ns);
	return ret < 0 ? ret : 0;
}

MPQ_EXPORT int mpq_queue_release(struct mpq_queue *q, struct mpq_msg *m)
{
	struct mpq_queue_rec *r;
	struct mpq_slot_ext e = { 0 };
	int ret = mpq_zc_check(q, m, MPQ_ZC_PEEKED), ext;

	if (ret)
		return ret;
	if (m->__kind == MPQ_ZC_PEEKRUN) {
		mpq_run_release(q, m->__pos, m->__rec == (void *)q ? NULL :
					     m->__rec);
		mpq_zc_close(m);
		return 0;
	}
	r = m->__rec;
	ext = !mpq_in_ring(q, m->data);
	if (ext) {
		struct mpq_slot *s = mpq_slot_at(q, m->__pos);

		mpq_slot_ext_read(q, s, s->len, &e);
		mpq_zc_unmap(q, m);
		if (r)
			__atomic_store_n(&r->blob, e.id, __ATOMIC_RELEASE);
	}
	mpq_queue_free_slots(q, m->__pos, 1);
	mpq_probe_queue_get(q->id, m->__pos, m->len);
	if (ext && r)
		mpq_qblob_release(q, r);
	else if (ext)
		mpq_qblob_drop(q, e.id, e.len);
	mpq_zc_close(m);
	mpq_rec_end(q, r);
	mpq_queue_notify_fast(q, &q->shm->nonfull, MPQ_POLL_OUT);
	return 0;
}

/*
 * JoinableQueue: task_done and join over the count of unfinished tasks, a
 * futex word in the queue's header.
 */
static int mpq_queue_joinable(struct mpq_queue *q)
{
	if (!q)
		return -EINVAL;
	return q->flags & MPQ_QUEUE_JOINABLE ? 0 : -EINVAL;
}

/*
 * The tasks the records' tallies hold, mod 2^32 (mpq_queue_task_count).
 * Read after unfinished, with acquire: a task done after a put counted it
 * in a tally is seen with that count.
 */
static uint32_t mpq_queue_tallied(struct mpq_queue *q)
{
	uint64_t sum = 0;
	unsigned int i;

	for (i = 0; i < MPQ_QUEUE_NREC; i++)
		sum += load_acquire(&q->recs[i].tasks) >> 1;
	return (uint32_t)sum;
}

/* Unfinished tasks in the ring and taken: the header's word and the tallies. */
static uint32_t mpq_queue_tasks(struct mpq_queue *q)
{
	uint32_t v = load_acquire(&q->shm->unfinished);
	int32_t t = (int32_t)(v + mpq_queue_tallied(q));

	return t < 0 ? 0 : (uint32_t)t;	/* only a scribbled count */
}

/* The count may have reached 0: joiners look again. */
void mpq_queue_task_wake(struct mpq_queue *q)
{
	__atomic_add_fetch(&q->shm->join_seq, 1, __ATOMIC_SEQ_CST);
	mpq_futex_wake(&q->shm->join_seq, INT32_MAX);
}

/* Take one task off the count, not below 0; wake the joiners at 0. */
static int mpq_queue_task_sub(struct mpq_queue *q)
{
	uint32_t v = load_acquire(&q->shm->unfinished), sum;

	do {
		sum = mpq_queue_tallied(q);
		if ((int32_t)(v + sum) <= 0)
			return -EINVAL;
	} while (!__atomic_compare_exchange_n(&q->shm->unfinished, &v, v - 1,
					      0, __ATOMIC_SEQ_CST,
					      __ATOMIC_ACQUIRE));
	if (!mpq_queue_tasks(q))
		mpq_queue_task_wake(q);
	return 0;
}

MPQ_EXPORT int mpq_queue_task_done(struct mpq_queue *q)
{
	int ret = mpq_queue_joinable(q);

	if (q && unlikely(q->ext))
		return MPQ_XQ(q, task_done);
	return ret ? ret : mpq_queue_task_sub(q);
}

/*
 * The tasks in an unbounded queue's overflow: they are counted there, by
 * ovf_count, until a promote counts them in unfinished (overflow.c).
 * Read first: a promote adds to unfinished before it takes off ovf_count
 * (release), so a reader that sees them gone from here sees them there.
 */
static uint32_t mpq_queue_ovf_tasks(struct mpq_queue *q)
{
	return q->maxsize ? 0 : load_acquire(&q->shm->ovf_count);
}

MPQ_EXPORT int mpq_queue_join(struct mpq_queue *q, int64_t timeout_ns)
{
	int64_t deadline = mpq_deadline(timeout_ns);
	int ret = mpq_queue_joinable(q);
	uint32_t v, o, seq;

	if (q && unlikely(q->ext))
		return mpq_xq_join(q, timeout_ns);
	if (ret)
		return ret;
	for (;;) {
		int64_t until = deadline;

		/* Before the count: a task_done that makes it 0 bumps it. */
		seq = load_acquire(&q->shm->join_seq);
		o = mpq_queue_ovf_tasks(q);
		v = mpq_queue_tasks(q);
		if (!v && !o)
			return 0;
		if (timeout_ns == 0)
			return -EAGAIN;
		/*
		 * Tasks in the overflow only: they are promoted, taken and
		 * done without the count ever being seen at 0 by us (nor
		 * join_seq bumped if the overflow still had some); look
		 * again now and then.
		 */
		if (!v && (until < 0 ||
			   until > mpq_now_ns() + MPQ_RECHECK_NS))
			until = mpq_now_ns() + MPQ_RECHECK_NS;
		/*
		 * A module's write(2) counts in unfinished and wakes nobody:
		 * it only ever raises the count.
		 */
		ret = mpq_futex_wait(&q->shm->join_seq, seq, until);
		if (ret == -ETIMEDOUT && until == deadline)
			return mpq_queue_ovf_tasks(q) || mpq_queue_tasks(q) ?
			       -ETIMEDOUT : 0;
	}
}

MPQ_EXPORT int mpq_queue_unfinished(struct mpq_queue *q)
{
	int ret = mpq_queue_joinable(q);
	uint64_t v;

	if (q && unlikely(q->ext))
		return MPQ_XQ(q, unfinished);
	if (ret)
		return ret;
	v = mpq_queue_ovf_tasks(q);
	v += mpq_queue_tasks(q);
	return v > INT32_MAX ? -EUCLEAN : (int)v;
}

/*
 * Python's close(), join_thread() and cancel_join_thread(). There is no
 * feeder thread: a put has finished with the message when it returns. So
 * close() only stops this handle (later puts and gets are -EBADF: Python's
 * ValueError), join_thread() has nothing to wait for once closed, and
 * cancel_join_thread() nothing to cancel.
 */
MPQ_EXPORT int mpq_queue_close(struct mpq_queue *q)
{
	if (!q)
		return -EINVAL;
	q->closed = 1;
	return 0;
}

MPQ_EXPORT int mpq_queue_join_thread(struct mpq_queue *q)
{
	if (!q)
		return -EINVAL;
	return q->closed ? 0 : -EINVAL;
}

MPQ_EXPORT int mpq_queue_cancel_join_thread(struct mpq_queue *q)
{
	return q ? 0 : -EINVAL;
}

/* Is the oldest message published, ready to be taken? (as the module's ->poll) */
static int mpq_queue_readable(struct mpq_queue *q)
{
	uint64_t pos = load_relaxed(&q->shm->head);
	uint32_t seq;

	if (!q->maxsize && mpq_ovf_active(q))
		return 1;
	seq = load_acquire(&mpq_slot_at(q, pos)->seq);
	/* Or a head left behind, that a get moves on. */
	return seq == (uint32_t)(pos + 1) || mpq_head_behind(q, pos, seq);
}

/*
 * For mpq_wait(), what a get does before it sleeps, short of taking: a
 * dead producer's claim at the head hides what was put after it, so its
 * slots are dropped; and a dead consumer's message is one a get would
 * deliver again. 1 if a get would find a message now. Without it a
 * waiter on such a queue slept to its deadline, for ever with none.
 */
static int mpq_queue_wait_repair(struct mpq_queue *q)
{
	mpq_queue_reclaim(q, NULL, 0, 0);
	if (mpq_queue_readable(q))
		return 1;
	if (!mpq_queue_dead_message(q))
		return 0;
	__atomic_store_n(&q->dead_hint, 1, __ATOMIC_RELAXED);
	return 1;
}

/*
 * For mpq_wait(): how long it may sleep on q. While someone is inside an
 * operation it looks again every MPQ_RECHECK_NS, as a get's sleep does,
 * with the module or without: without it a death rings no fd that it
 * polls, and the module wakes the queue's pollers when a process ends,
 * not when one of its threads does in the middle of an operation.
 */
int64_t mpq_queue_wait_until(struct mpq_queue *q, int64_t deadline)
{
	return mpq_queue_sleep_until(q, deadline);
}

/*
 * For mpq_wait(): 1 if a get would find a message now; else 0 with the fd
 * to poll in *p, after asking to be woken; -EOPNOTSUPP for a memfd queue
 * opened by its fd, which has no doorbell.
 */
int mpq_queue_wait_prepare(struct mpq_queue *q, struct pollfd *p)
{
	uint64_t v;

	if (!q)
		return -EINVAL;
	if (unlikely(q->ext))
		return -EOPNOTSUPP;
	if (mpq_queue_readable(q) || mpq_queue_wait_repair(q))
		return 1;
	if (q->backend == MPQ_BACKEND_KMOD) {
		p->fd = q->fd;		/* its ->poll() asks for the wake-up */
		p->events = POLLIN;
		return 0;
	}
	if (q->bell < 0)
		return -EOPNOTSUPP;
	/*
	 * Ask, take a stale ring, look once more: pairs with
	 * mpq_queue_notify(), as a futex sleeper does. (A process that cannot
	 * issue membarrier() marks the queue fenced at its first map, so the
	 * publishes that could miss this are those under way then.)
	 */
	__atomic_fetch_or(&q->shm->poll_wanted, MPQ_POLL_IN, __ATOMIC_SEQ_CST);
	if (read(q->bell, &v, sizeof(v)) < 0) {
		/* EAGAIN: nothing was rung. */
	}
	mpq_queue_sleep_fence(q);
	if (mpq_queue_readable(q))
		return 1;
	p->fd = q->bell;
	p->events = POLLIN;
	return 0;
}

/*
 * The messages in the queue: published and not yet taken, counted slot by
 * slot between head and tail (a run by what is left in it), so that slots
 * claimed but not yet published (a put in progress) and slots a dead
 * producer left dropped are not counted. Exact when nothing moves; under churn, what the slots held as
 * they were looked at.
 */
MPQ_EXPORT int mpq_queue_qsize(struct mpq_queue *q)
{
	uint64_t head, tail;
	int n, tries;
	uint32_t c;

	if (!q)
		return -EINVAL;
	if (unlikely(q->ext))
		return MPQ_XQ(q, qsize);
	/*
	 * tail - head is only meaningful for a head and a tail seen at one
	 * moment: read head on both sides of tail until it holds still.
	 */
	for (tries = 0; tries < 16; tries++) {
		head = load_acquire(&q->shm->head);
		tail = load_acquire(&q->shm->tail);
		if (load_acquire(&q->shm->head) == head)
			break;
	}
	/*
	 * The only consumer moves head after it frees its slot, and the only
	 * producer moves tail after it publishes (whose message may be taken
	 * first): a death between leaves either one behind.
	 */
	if (mpq_head_behind(q, head, load_acquire(&mpq_slot_at(q, head)->seq)))
		head++;
	if (head - tail == 1)
		tail = head;
	if (tail - head > q->capacity)
		return tries == 16 ? (int)q->capacity : -EUCLEAN;
	/* To tail too: a tail left behind over its published message. */
	c = mpq_queue_count(q, head, tail);
	n = c > INT32_MAX ? INT32_MAX : (int)c;
	/* An unbounded queue's overflow, behind the ring. */
	if (!q->maxsize) {
		uint32_t o = load_acquire(&q->shm->ovf_count);

		n = o > (uint32_t)(INT32_MAX - n) ? INT32_MAX : n + (int)o;
	}
	return n;
}

MPQ_EXPORT int mpq_queue_empty(struct mpq_queue *q)
{
	int n = mpq_queue_qsize(q);

	return n < 0 ? n : n == 0;
}

/*
 * Full: a put would have to wait now. Not tail - head: a slot taken by a
 * peek (or by a consumer that died) stays unavailable after head moved
 * past it; what counts is whether the slot at tail is free for it.
 */
MPQ_EXPORT int mpq_queue_full(struct mpq_queue *q)
{
	if (!q)
		return -EINVAL;
	if (unlikely(q->ext))
		return MPQ_XQ(q, full);
	/* Unbounded: never (memory is the limit, and a put says so). */
	return q->maxsize ? mpq_queue_full_ring(q) : 0;
}

/* Python's maxsize: 0 for an unbounded queue. */
MPQ_EXPORT int mpq_queue_maxsize(struct mpq_queue *q)
{
	if (q && unlikely(q->ext))
		return MPQ_XQ(q, maxsize);
	return q ? (int)q->maxsize : -EINVAL;
}

MPQ_EXPORT long mpq_queue_msgsize(struct mpq_queue *q)
{
	if (q && unlikely(q->ext))
		return -EOPNOTSUPP;
	return q ? (long)q->msg_max : -EINVAL;
}

MPQ_EXPORT int mpq_queue_backend(struct mpq_queue *q)
{
	return q ? q->backend : -EINVAL;
}

MPQ_EXPORT int mpq_queue_fileno(struct mpq_queue *q)
{
	return q ? q->fd : -EINVAL;
}
