/* SPDX-License-Identifier: MIT */
/*
 * USDT probes of libmpq (provider "mpq"), for tracers that attach to the
 * library (tools/mpqlat, mpqwait, mpqtop; bpftrace; perf probe) on the
 * fast paths that never enter the kernel.
 *
 * Each probe has a semaphore (sys/sdt.h's _SDT_HAS_SEMAPHORES) that the
 * kernel increments while a uprobe is attached to it. Call sites test it
 * with MPQ_PROBE_ON() and do nothing else when no tracer is there: one
 * load and a predicted branch per call, and no clock read. Build with
 * -DMPQ_NO_PROBES (or without <sys/sdt.h>) and every probe is gone.
 *
 * Probes, with their arguments (ids are those of /proc/mpq for kmod
 * objects; memfd queues use 1 << 63 | the memfd's inode number):
 *
 *   queue_put(u64 id, u64 pos, u32 len, s64 ts)
 *	a message was published at ring position pos; ts is its
 *	CLOCK_MONOTONIC time in ns, read only while a tracer is attached
 *   queue_get(u64 id, u64 pos, u32 len, s64 ts)
 *	the message at pos was taken and its slot freed; (id, pos) matches
 *	it to its put, so get.ts - put.ts is its time in the queue. A run
 *	(lib/run.c: a batch packed over slots) is one queue_put at its
 *	first position, len all its bytes, and a queue_get there for each
 *	take from it, len the bytes taken: a tracer that matches by
 *	position times a run to its first take, and counts it one put
 *   queue_wait_begin(u64 id, u32 dir)
 *   queue_wait_end(u64 id, u32 dir, s32 ret)
 *	a put (dir MPQ_POLL_OUT) or get (MPQ_POLL_IN) found the queue full
 *	or empty and waits (spins, then sleeps); ret is what it returns
 *   lock_wait_begin(u64 id, u32 index)
 *   lock_wait_end(u64 id, u32 index, s32 ret)
 *	a lock acquire waits for the lock at index of object id; ret is 0,
 *	-EOWNERDEAD (acquired, the holder died) or -ETIMEDOUT
 *   lock_owner_died(u64 id, u32 index)
 *	an acquire got the lock of a holder that died (-EOWNERDEAD)
 *   queue_reclaim(u64 id, u64 pos, u32 what)
 *	a waiter cleaned up after a participant that died mid-operation:
 *	what 1, the dead producer's slot at pos published empty; what 2,
 *	the dead consumer's message at pos delivered again
 *   pool_task_start(u64 pool, u64 task)
 *   pool_task_end(u64 pool, u64 task, s32 ret)
 *	a pool worker runs a task; ret is what the task function returned.
 *	pool is 3 << 62 | the maker's pid << 24 | its count of pools; task
 *	is the pool's number of the task message << 32 | the item's place
 *	in it (start and end of one task carry the same pair)
 *
 * Their names and arguments are the ABI tools rely on.
 */
#ifndef MPQ_PROBES_H
#define MPQ_PROBES_H

#if !defined(MPQ_NO_PROBES) && defined(__has_include)
#if __has_include(<sys/sdt.h>)
#define MPQ_HAVE_PROBES 1
#endif
#endif

#ifdef MPQ_HAVE_PROBES
#define _SDT_HAS_SEMAPHORES 1
#include <sys/sdt.h>

/* One per probe, in the .probes section; defined in probes.c. */
#define MPQ_PROBE_SEMAPHORE(name) \
	extern unsigned short mpq_##name##_semaphore
MPQ_PROBE_SEMAPHORE(queue_put);
MPQ_PROBE_SEMAPHORE(queue_get);
MPQ_PROBE_SEMAPHORE(queue_wait_begin);
MPQ_PROBE_SEMAPHORE(queue_wait_end);
MPQ_PROBE_SEMAPHORE(lock_wait_begin);
MPQ_PROBE_SEMAPHORE(lock_wait_end);
MPQ_PROBE_SEMAPHORE(lock_owner_died);
MPQ_PROBE_SEMAPHORE(queue_reclaim);
MPQ_PROBE_SEMAPHORE(pool_task_start);
MPQ_PROBE_SEMAPHORE(pool_task_end);

/* Is a tracer attached to probe name? The kernel writes the semaphore. */
#define MPQ_PROBE_ON(name) \
	__builtin_expect(__atomic_load_n(&mpq_##name##_semaphore, \
					 __ATOMIC_RELAXED) != 0, 0)
#define MPQ_PROBE2(name, a, b)		STAP_PROBE2(mpq, name, a, b)
#define MPQ_PROBE3(name, a, b, c)	STAP_PROBE3(mpq, name, a, b, c)
#define MPQ_PROBE4(name, a, b, c, d)	STAP_PROBE4(mpq, name, a, b, c, d)
#else
/* Never taken (MPQ_PROBE_ON is 0); the arguments only count as used. */
#define MPQ_PROBE_ON(name)		0
#define MPQ_PROBE2(name, a, b)		((void)(a), (void)(b))
#define MPQ_PROBE3(name, a, b, c)	((void)(a), (void)(b), (void)(c))
#define MPQ_PROBE4(name, a, b, c, d) \
	((void)(a), (void)(b), (void)(c), (void)(d))
#endif

/* The call sites: each is nothing but the semaphore test when untraced. */
#define mpq_probe_queue_put(id, pos, len)				\
	do {								\
		if (MPQ_PROBE_ON(queue_put))				\
			MPQ_PROBE4(queue_put, (uint64_t)(id),		\
				   (uint64_t)(pos), (uint32_t)(len),	\
				   mpq_now_ns());			\
	} while (0)
#define mpq_probe_queue_get(id, pos, len)				\
	do {								\
		if (MPQ_PROBE_ON(queue_get))				\
			MPQ_PROBE4(queue_get, (uint64_t)(id),		\
				   (uint64_t)(pos), (uint32_t)(len),	\
				   mpq_now_ns());			\
	} while (0)
#define mpq_probe_queue_wait_begin(id, dir)				\
	do {								\
		if (MPQ_PROBE_ON(queue_wait_begin))			\
			MPQ_PROBE2(queue_wait_begin, (uint64_t)(id),	\
				   (uint32_t)(dir));			\
	} while (0)
#define mpq_probe_queue_wait_end(id, dir, ret)				\
	do {								\
		if (MPQ_PROBE_ON(queue_wait_end))			\
			MPQ_PROBE3(queue_wait_end, (uint64_t)(id),	\
				   (uint32_t)(dir), (int32_t)(ret));	\
	} while (0)
#define mpq_probe_lock_wait_begin(id, index)				\
	do {								\
		if (MPQ_PROBE_ON(lock_wait_begin))			\
			MPQ_PROBE2(lock_wait_begin, (uint64_t)(id),	\
				   (uint32_t)(index));			\
	} while (0)
#define mpq_probe_lock_wait_end(id, index, ret)				\
	do {								\
		if (MPQ_PROBE_ON(lock_wait_end))			\
			MPQ_PROBE3(lock_wait_end, (uint64_t)(id),	\
				   (uint32_t)(index), (int32_t)(ret));	\
	} while (0)
#define mpq_probe_pool_task_start(pool, task)				\
	do {								\
		if (MPQ_PROBE_ON(pool_task_start))			\
			MPQ_PROBE2(pool_task_start, (uint64_t)(pool),	\
				   (uint64_t)(task));			\
	} while (0)
#define mpq_probe_lock_owner_died(id, index)				\
	do {								\
		if (MPQ_PROBE_ON(lock_owner_died))			\
			MPQ_PROBE2(lock_owner_died, (uint64_t)(id),	\
				   (uint32_t)(index));			\
	} while (0)
#define mpq_probe_queue_reclaim(id, pos, what)				\
	do {								\
		if (MPQ_PROBE_ON(queue_reclaim))			\
			MPQ_PROBE3(queue_reclaim, (uint64_t)(id),	\
				   (uint64_t)(pos), (uint32_t)(what));	\
	} while (0)
#define mpq_probe_pool_task_end(pool, task, ret)			\
	do {								\
		if (MPQ_PROBE_ON(pool_task_end))			\
			MPQ_PROBE3(pool_task_end, (uint64_t)(pool),	\
				   (uint64_t)(task), (int32_t)(ret));	\
	} while (0)

#endif /* MPQ_PROBES_H */
