/* SPDX-License-Identifier: MIT */
/*
 * Robust futex words: shared-memory words that a thread holds and that the
 * kernel releases for it if the thread dies holding them.
 *
 * This is the mechanism behind mpq's owner-died recovery (locks, barrier
 * parties, queue slots in flight). The kernel keeps, per thread, a pointer
 * to a "robust list" (set_robust_list(2)); when the thread exits, for any
 * reason, SIGKILL included, the kernel walks that list and, for each entry
 * whose futex word holds the thread's TID, replaces the TID with
 * FUTEX_OWNER_DIED and wakes one waiter if FUTEX_WAITERS was set. It also
 * looks at the list's "pending" slot, which covers the instants between
 * taking a word and linking it (and between unlinking it and releasing
 * it): if that word is free, it wakes one waiter so that no wake-up is
 * lost. Only this exit path of the kernel can wake a futex on behalf of a
 * dead process: the mpq module cannot (nothing in kernel/futex is
 * exported), and a waiter polling the owner's liveness would wake late
 * and race with PID reuse. So mpq uses it, on both backends alike: the
 * words live in shmem pages (memfd or the module's), where shared futexes
 * work.
 *
 * A thread has one robust list, and glibc owns it: its robust pthread
 * mutexes live there. mpq shares it rather than replacing it. Once per
 * thread, two anchors of our own (in thread-local storage) are appended at
 * the tail of glibc's list; every word mpq holds is linked between them.
 * glibc only inserts at the head and unlinks its own entries, so it never
 * touches an entry between our anchors, and we never touch one of its.
 * That is what makes it safe: we keep the order of our entries privately
 * and only ever *write* the links that lie in shared memory, for the
 * kernel; a participant that scribbles over them can at worst make the
 * kernel stop its walk early (it checks every access), never make us
 * follow a bad pointer.
 *
 * An entry is the address of a link field; the kernel finds the word at
 * entry + futex_offset, which glibc sets to -32 (the layout of
 * pthread_mutex_t). So a robust word in shared memory has its link 32
 * bytes after it (MPQ_ROBUST_RECORD). Where a thread has no list (not made by
 * glibc's pthread_create), mpq registers one of its own with the same
 * offset; where the offset differs (another C library), words are taken
 * without being linked: they work as plain futex words, and owner-died
 * recovery is not available (mpq_robust_supported() says so).
 *
 * Locks are PI futexes (lock.c says why); the other words are plain ones.
 * The kernel learns which an entry is from bit 0 of the pointer to it (the
 * link before it, or the pending slot): set, the word is PI, and at the
 * holder's death the kernel hands it to the next waiter itself
 * (exit_pi_state_list) instead of waking one. So what we keep per entry,
 * and write into the link before it, is a tagged pointer: the address of
 * its link field, with bit 0 set for a PI word (MPQ_ROBUST_PI).
 *
 * Not async-signal-safe: do not take mpq locks from a signal handler that
 * may interrupt an mpq call in the same thread.
 */
#ifndef MPQ_ROBUST_H
#define MPQ_ROBUST_H

#include <errno.h>
#include <linux/futex.h>
#include <stdint.h>
#include <sys/types.h>

#define MPQ_RW_WAITERS		FUTEX_WAITERS		/* 0x80000000 */
#define MPQ_RW_OWNER_DIED	FUTEX_OWNER_DIED	/* 0x40000000 */
#define MPQ_RW_TID		FUTEX_TID_MASK		/* 0x3fffffff */

/* The distance from a word to its link, as glibc's futex_offset says. */
#define MPQ_ROBUST_OFFSET	32

/* Bit 0 of a robust list pointer: the entry it points at is PI. */
#define MPQ_ROBUST_PI		1ULL

/*
 * A robust record in shared memory starts with the futex word; 32 bytes
 * after it lies the link the kernel follows (a uint64_t). The bytes between
 * belong to the record. Records declare both fields and check the distance
 * with MPQ_ROBUST_RECORD().
 */
#define MPQ_ROBUST_RECORD(type, word, link)				\
	_Static_assert(__builtin_offsetof(type, link) -			\
		       __builtin_offsetof(type, word) == MPQ_ROBUST_OFFSET, \
		       #type ": the kernel finds the word 32 bytes before the link")

/*
 * Per-thread state. The anchors mimic the start of a pthread_mutex_t: a
 * word that is always 0 (so the kernel passes over them), glibc's prev
 * pointer 8 bytes before the link, and the link.
 */
struct mpq_anchor {
	uint32_t word;
	uint32_t __pad[5];
	uint64_t prev;		/* glibc's, written by glibc, never read */
	uint64_t link;
};

_Static_assert(sizeof(void *) == 8, "robust links are 64-bit pointers");

struct mpq_rthread {
	struct robust_list_head *head;	/* the list the kernel walks */
	uint64_t *idle;			/* the pending slot between calls */
	unsigned int windows;		/* zero-copy windows open */
	uint64_t *held;			/* our entries (tagged), in order */
	pid_t tid;
	int state;			/* MPQ_RT_* */
	unsigned int nheld, cap;
	struct mpq_anchor first, last;
	struct robust_list_head own;	/* when glibc registered none */
	uint64_t inline_held[8];
};

enum {
	MPQ_RT_NEW = 0,		/* not set up yet */
	MPQ_RT_LINKED,		/* anchors in the kernel's list */
	MPQ_RT_UNLINKED,	/* no usable list: words are not linked */
};

extern __thread struct mpq_rthread mpq_rt
	__attribute__((tls_model("initial-exec")));

int mpq_robust_setup(void);
int mpq_robust_supported(void);

/* The caller's thread ID, cached: what the robust words hold. */
static inline pid_t mpq_tid(void)
{
	if (__builtin_expect(mpq_rt.state == MPQ_RT_NEW, 0))
		mpq_robust_setup();
	return mpq_rt.tid;
}

/* The link of the record whose futex word is w: the list entry. */
static inline uint64_t *mpq_rw_entry(uint32_t *w)
{
	return (uint64_t *)(void *)((char *)w + MPQ_ROBUST_OFFSET);
}

/* The entry of w as the kernel's list holds it: tagged if pi. */
static inline uint64_t mpq_rw_tag(uint32_t *w, int pi)
{
	return (uint64_t)(uintptr_t)mpq_rw_entry(w) | (pi ? MPQ_ROBUST_PI : 0);
}

/* The link field a tagged entry names. */
static inline uint64_t *mpq_rw_link(uint64_t tag)
{
	return (uint64_t *)(uintptr_t)(tag & ~MPQ_ROBUST_PI);
}

static inline void mpq_robust_pending_tag(uint64_t tag)
{
	if (mpq_rt.state == MPQ_RT_LINKED)
		__atomic_store_n(&mpq_rt.head->list_op_pending,
				 (struct robust_list *)(uintptr_t)tag,
				 __ATOMIC_RELAXED);
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
}

/*
 * Before trying to take w: name it in the pending slot, so that a death
 * between taking it and linking it still releases it.
 */
static inline void mpq_robust_pending(uint32_t *w)
{
	mpq_robust_pending_tag(mpq_rw_tag(w, 0));
}

/* The same for a PI word (a lock's). */
static inline void mpq_robust_pending_pi(uint32_t *w)
{
	mpq_robust_pending_tag(mpq_rw_tag(w, 1));
}

/*
 * The operation is over: the pending slot goes back to what it holds
 * between calls, NULL unless a queue window is open (mpq_robust_bell).
 */
static inline void mpq_robust_clear_pending(void)
{
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	if (mpq_rt.state == MPQ_RT_LINKED)
		__atomic_store_n(&mpq_rt.head->list_op_pending,
				 (struct robust_list *)mpq_rt.idle,
				 __ATOMIC_RELAXED);
}

/*
 * Name bell, a futex word that is always 0, in the pending slot: if this
 * thread dies before the slot changes again, the kernel wakes one process
 * asleep on bell (handle_futex_death() wakes one waiter of a pending word
 * that is 0: the case of a thread that died before waking anyone). A queue names its deathbell this way for the length of each
 * operation, and a queue sleeper while it sleeps and until it has passed
 * a ring on; a semaphore's sleeper names its record's bell until it holds
 * a unit. That is the discipline for a wake-one hand-off: whoever may be
 * woken names a bell, which the others watch, until it has done what the
 * wake-up asked, so that its death at any instant wakes another.
 */
static inline void mpq_robust_bell(uint32_t *bell)
{
	mpq_robust_pending(bell);
}

/*
 * A zero-copy window opens (delta 1, bell the queue's deathbell) or closes
 * (-1): while one is open, the pending slot goes back to naming that bell
 * between calls, instead of NULL. With windows open on several queues it
 * names the latest one's.
 */
static inline void mpq_robust_window(uint32_t *bell, int delta)
{
	struct mpq_rthread *t = &mpq_rt;

	if (delta > 0) {
		t->windows++;
		t->idle = mpq_rw_entry(bell);
	} else if (t->windows && !--t->windows) {
		t->idle = NULL;
	}
}

int mpq_robust_grow(void);

/*
 * After taking w (its word holds our TID): link it at the end of our
 * entries, then clear the pending slot. The link is written before the
 * entry becomes reachable, so a walk at any instant sees a proper list.
 * Returns 0, or -ENOMEM (the word is held but not linked: released by the
 * kernel only through the pending slot, which stays set).
 */
static inline int mpq_robust_link_tag(uint64_t tag)
{
	struct mpq_rthread *t = &mpq_rt;
	uint64_t *prev;

	if (t->state != MPQ_RT_LINKED)
		return 0;
	if (__builtin_expect(t->nheld == t->cap, 0) && mpq_robust_grow())
		return -ENOMEM;
	prev = t->nheld ? mpq_rw_link(t->held[t->nheld - 1]) : &t->first.link;
	__atomic_store_n(mpq_rw_link(tag), (uint64_t)(uintptr_t)&t->last.link,
			 __ATOMIC_RELAXED);
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	__atomic_store_n(prev, tag, __ATOMIC_RELAXED);
	t->held[t->nheld++] = tag;
	mpq_robust_clear_pending();
	return 0;
}

static inline int mpq_robust_link(uint32_t *w)
{
	return mpq_robust_link_tag(mpq_rw_tag(w, 0));
}

/* The same for a PI word (a lock's). */
static inline int mpq_robust_link_pi(uint32_t *w)
{
	return mpq_robust_link_tag(mpq_rw_tag(w, 1));
}

void mpq_robust_unlink_slow(uint64_t tag);

static inline void mpq_robust_unlink_tag(uint64_t tag)
{
	struct mpq_rthread *t = &mpq_rt;

	mpq_robust_pending_tag(tag);
	if (t->state != MPQ_RT_LINKED)
		return;
	/* Usually the last taken is the first released. */
	if (__builtin_expect(t->nheld && t->held[t->nheld - 1] == tag, 1)) {
		uint64_t *prev = t->nheld > 1 ?
				 mpq_rw_link(t->held[t->nheld - 2]) :
				 &t->first.link;

		__atomic_store_n(prev, (uint64_t)(uintptr_t)&t->last.link,
				 __ATOMIC_RELAXED);
		t->nheld--;
		return;
	}
	mpq_robust_unlink_slow(tag);
}

/*
 * Before releasing w: name it in the pending slot and unlink it. After the
 * word is released (and its waiters woken), mpq_robust_clear_pending().
 */
static inline void mpq_robust_unlink(uint32_t *w)
{
	mpq_robust_unlink_tag(mpq_rw_tag(w, 0));
}

/* The same for a PI word (a lock's). */
static inline void mpq_robust_unlink_pi(uint32_t *w)
{
	mpq_robust_unlink_tag(mpq_rw_tag(w, 1));
}

/* Does this thread hold w, linked? (for assertions and the tests) */
int mpq_robust_holds(uint32_t *w);

#endif /* MPQ_ROBUST_H */
