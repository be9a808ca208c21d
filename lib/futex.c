// SPDX-License-Identifier: MIT
/*
 * Shared (not FUTEX_PRIVATE) futex waits and wakes: the words live in
 * memory mapped by several processes, memfd or /dev/mpq shmem, both file
 * pages, which is what a shared futex needs.
 */
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

/*
 * Sleep while *word == val, until woken or the absolute CLOCK_MONOTONIC
 * deadline (-1: none). Returns 0 when woken or when *word had changed
 * (callers re-check their condition either way), -ETIMEDOUT, or -EINTR.
 */
int mpq_futex_wait(uint32_t *word, uint32_t val, int64_t deadline)
{
	struct timespec ts, *tsp = NULL;
	long r;

	if (deadline >= 0) {
		ts.tv_sec = deadline / 1000000000;
		ts.tv_nsec = deadline % 1000000000;
		tsp = &ts;
	}
	/* WAIT_BITSET takes an absolute time, so a loop keeps one deadline. */
	r = syscall(SYS_futex, word, FUTEX_WAIT_BITSET, val, tsp, NULL,
		    FUTEX_BITSET_MATCH_ANY);
	if (r == 0 || errno == EAGAIN)
		return 0;
	return -errno;
}

void mpq_futex_wake(uint32_t *word, int n)
{
	syscall(SYS_futex, word, FUTEX_WAKE, n, NULL, NULL, 0);
}

/*
 * Does this kernel have futex_waitv(2) (Linux 5.16)? Asked once: with no
 * futex at all it is EINVAL there, ENOSYS before. Every process on the
 * machine gets the same answer, which is what lets a waker rely on how
 * the sleepers sleep.
 */
int mpq_futex_has_waitv(void)
{
	static int known;	/* 0 not asked, 1 yes, 2 no */
	int k = __atomic_load_n(&known, __ATOMIC_RELAXED);

	if (!k) {
		long r = syscall(SYS_futex_waitv, NULL, 0, 0, NULL,
				 CLOCK_MONOTONIC);

		k = r < 0 && errno == ENOSYS ? 2 : 1;
		__atomic_store_n(&known, k, __ATOMIC_RELAXED);
	}
	return k == 1;
}

/*
 * Sleep until any of words[i] != vals[i] is woken, or the absolute
 * CLOCK_MONOTONIC deadline (-1: none) passes: futex_waitv(2), Linux 5.16.
 * Shared futexes, 32-bit words; at most 128. Returns the index of the
 * word whose wake-up woke us (the highest, if several did), 0 when a word
 * had changed (the caller re-checks either way), -ETIMEDOUT, -EINTR,
 * -ENOSYS.
 */
int mpq_futex_waitv(const uint32_t *const *words, const uint32_t *vals,
		    unsigned int n, int64_t deadline)
{
	struct futex_waitv w[128];
	struct timespec ts, *tsp = NULL;
	unsigned int i;
	long r;

	if (n > 128)
		return -EINVAL;
	for (i = 0; i < n; i++) {
		w[i].val = vals[i];
		w[i].uaddr = (uint64_t)(uintptr_t)words[i];
		w[i].flags = FUTEX_32;
		w[i].__reserved = 0;
	}
	if (deadline >= 0) {
		ts.tv_sec = deadline / 1000000000;
		ts.tv_nsec = deadline % 1000000000;
		tsp = &ts;
	}
	r = syscall(SYS_futex_waitv, w, n, 0, tsp, CLOCK_MONOTONIC);
	if (r >= 0)
		return (int)r;
	if (errno == EAGAIN)
		return 0;
	return -errno;
}
