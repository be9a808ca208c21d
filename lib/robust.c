// SPDX-License-Identifier: MIT
/*
 * Robust futex words, the slow and rare paths: setting up a thread (our
 * anchors at the tail of its robust list), unlinking an entry that is not
 * the last one taken, growing the array of entries, and forgetting it all
 * in a forked child. See robust.h for the mechanism and why it is safe
 * next to glibc.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"
#include "robust.h"

/* The kernel stops its own walk after this many entries. */
#define MPQ_ROBUST_LIST_LIMIT	2048

__thread struct mpq_rthread mpq_rt __attribute__((tls_model("initial-exec")));

static uint64_t mpq_u64(const void *p)
{
	return (uint64_t)(uintptr_t)p;
}

/*
 * Find the entry of head's list whose link points back at the head: the
 * tail, after which our anchors go. Returns its link field, the head's own
 * for an empty list, or NULL for a list we cannot make sense of (longer
 * than the kernel would walk, or circular elsewhere).
 */
static uint64_t *mpq_robust_tail(struct robust_list_head *head)
{
	uint64_t *link = (uint64_t *)&head->list.next;
	unsigned int n;

	for (n = 0; n < MPQ_ROBUST_LIST_LIMIT; n++) {
		/* Bit 0 of a link marks a PI mutex as the next entry. */
		uint64_t next = __atomic_load_n(link, __ATOMIC_RELAXED) & ~1ULL;

		if (next == mpq_u64(&head->list))
			return link;
		if (!next)
			return NULL;
		link = (uint64_t *)(uintptr_t)next;
	}
	return NULL;
}

/*
 * Once per thread: find the robust list the kernel walks for us (glibc's,
 * or one of our own if there is none), and append our two anchors at its
 * tail. Every word mpq links later goes between them. The anchors' links
 * are written before the tail's link makes them reachable: a walk at any
 * instant sees a proper list. Returns 0, or -EOPNOTSUPP when words cannot
 * be linked (they still work, without owner-died recovery).
 */
int mpq_robust_setup(void)
{
	struct mpq_rthread *t = &mpq_rt;
	struct robust_list_head *head = NULL;
	uint64_t *tail;
	size_t len;

	if (t->state != MPQ_RT_NEW)
		return t->state == MPQ_RT_LINKED ? 0 : -EOPNOTSUPP;
	t->tid = (pid_t)syscall(SYS_gettid);
	t->held = t->inline_held;
	t->cap = sizeof(t->inline_held) / sizeof(t->inline_held[0]);
	t->nheld = 0;
	t->state = MPQ_RT_UNLINKED;

	if (syscall(SYS_get_robust_list, 0, &head, &len) || !head) {
		t->own.list.next = &t->own.list;
		t->own.futex_offset = -MPQ_ROBUST_OFFSET;
		t->own.list_op_pending = NULL;
		if (syscall(SYS_set_robust_list, &t->own, sizeof(t->own)))
			return -EOPNOTSUPP;
		head = &t->own;
	}
	if (head->futex_offset != -MPQ_ROBUST_OFFSET)
		return -EOPNOTSUPP;
	tail = mpq_robust_tail(head);
	if (!tail)
		return -EOPNOTSUPP;

	t->first.word = 0;
	t->last.word = 0;
	t->first.prev = mpq_u64(tail);
	t->first.link = mpq_u64(&t->last.link);
	t->last.prev = mpq_u64(&t->first.link);
	t->last.link = mpq_u64(&head->list);
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	__atomic_store_n(tail, mpq_u64(&t->first.link), __ATOMIC_RELAXED);
	t->head = head;
	t->state = MPQ_RT_LINKED;
	return 0;
}

MPQ_EXPORT int mpq_robust_supported(void)
{
	return mpq_robust_setup() == 0;
}

/* Room for more entries than the inline array has: deep nesting only. */
int mpq_robust_grow(void)
{
	struct mpq_rthread *t = &mpq_rt;
	unsigned int cap = t->cap * 2;
	uint64_t *held = malloc(cap * sizeof(*held));

	if (!held)
		return -ENOMEM;
	memcpy(held, t->held, t->nheld * sizeof(*held));
	if (t->held != t->inline_held)
		free(t->held);
	t->held = held;
	t->cap = cap;
	return 0;
}

/* Unlink an entry that is not the last one taken (released out of order). */
void mpq_robust_unlink_slow(uint64_t tag)
{
	struct mpq_rthread *t = &mpq_rt;
	uint64_t *prev, next;
	unsigned int i;

	for (i = t->nheld; i-- > 0;)
		if (t->held[i] == tag)
			break;
	if (i == (unsigned int)-1)
		return;		/* never linked (ENOMEM at link time) */
	prev = i ? mpq_rw_link(t->held[i - 1]) : &t->first.link;
	/* The next entry's pointer, with its PI bit. */
	next = i + 1 < t->nheld ? t->held[i + 1] : mpq_u64(&t->last.link);
	__atomic_store_n(prev, next, __ATOMIC_RELAXED);
	memmove(&t->held[i], &t->held[i + 1],
		(t->nheld - i - 1) * sizeof(t->held[0]));
	t->nheld--;
}

int mpq_robust_holds(uint32_t *w)
{
	struct mpq_rthread *t = &mpq_rt;
	unsigned int i;

	for (i = 0; i < t->nheld; i++)
		if (mpq_rw_link(t->held[i]) == mpq_rw_entry(w))
			return 1;
	return 0;
}

/*
 * In a forked child: glibc has emptied the child's list (it owns none of
 * its parent's mutexes, and neither does it own our words), and the TID is
 * new. Start over on the next use.
 */
static void mpq_robust_atfork_child(void)
{
	struct mpq_rthread *t = &mpq_rt;

	if (t->held && t->held != t->inline_held)
		free(t->held);
	memset(t, 0, sizeof(*t));
}

static void __attribute__((constructor)) mpq_robust_init(void)
{
	pthread_atfork(NULL, NULL, mpq_robust_atfork_child);
}
