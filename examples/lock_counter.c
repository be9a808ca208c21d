// SPDX-License-Identifier: MIT
/*
 * lock_counter: a counter that several processes increment, Python's
 *
 *     counter = Value('l', 0)
 *     def work():
 *         for _ in range(N):
 *             with counter.get_lock():
 *                 counter.value += 1
 *     ps = [Process(target=work) for _ in range(4)]
 *     for p in ps: p.start()
 *     for p in ps: p.join()
 *     print(counter.value)            # 4 * N, exactly
 *
 * The counter is an mpq_value in shared memory that the forked workers
 * inherit; mpq_value_get_lock() is its lock (an RLock of its own). An
 * increment reads, adds and writes back: without the lock, two processes
 * can read the same old value and one increment is lost. To show that,
 * the workers also increment a RawValue (no lock) beside it; what that
 * one loses varies from run to run (on one CPU it may lose nothing). The
 * program exits 0 if the locked counter is exact.
 *
 * Build (installed library):
 *     cc -o lock_counter lock_counter.c $(pkg-config --cflags --libs mpq)
 * In the source tree:
 *     make build/examples/lock_counter
 *     (= cc -Iinclude -o build/examples/lock_counter \
 *        examples/lock_counter.c -Lbuild/lib -lmpq -Wl,-rpath,$PWD/build/lib)
 * Run:
 *     build/examples/lock_counter
 */
#include <errno.h>
#include <stdio.h>

#include <mpq.h>

#define WORKERS		4
#define ROUNDS		100000
#define NSEC_PER_SEC	1000000000LL

static struct mpq_value *counter;	/* Value('l', 0): with a lock */
static struct mpq_value *unlocked;	/* RawValue('l', 0): none */

static int fail(const char *what, int ret)
{
	fprintf(stderr, "lock_counter: %s: %s\n", what, mpq_strerror(ret));
	return 1;
}

/* A worker, in a forked child: ROUNDS increments of each counter. */
static int work(const void *arg, size_t len)
{
	struct mpq_lock *l = mpq_value_get_lock(counter);
	long *n = mpq_value_ptr(counter);
	volatile long *raw = mpq_value_ptr(unlocked);
	int i, ret;

	for (i = 0; i < ROUNDS; i++) {
		/* Read, add, write, with another process free to do the same. */
		*raw = *raw + 1;

		/* A timeout, so that a lock that is never let go fails loudly. */
		ret = mpq_lock_acquire(l, 10 * NSEC_PER_SEC);
		if (ret == -EOWNERDEAD) {
			/*
			 * A holder was killed (nobody is, here). An increment
			 * is one store: it happened or it did not, so the
			 * counter is whole. Say so, or every later acquirer
			 * would be told the same.
			 */
			mpq_lock_consistent(l);
		} else if (ret) {
			return fail("mpq_lock_acquire", ret);
		}
		*n = *n + 1;
		ret = mpq_lock_release(l);
		if (ret)
			return fail("mpq_lock_release", ret);
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct mpq_value_attr raw = { .flags = MPQ_VALUE_RAW };
	struct mpq_process *ps[WORKERS];
	long total, lost;
	int i, ret, code, bad = 0;

	ret = mpq_init(&argc, &argv);
	if (ret)
		return fail("mpq_init", ret);
	/* Made before the workers start: they inherit them across fork. */
	ret = mpq_value_new(&counter, sizeof(long), NULL);
	if (!ret)
		ret = mpq_value_new(&unlocked, sizeof(long), &raw);
	if (ret)
		return fail("mpq_value_new", ret);

	for (i = 0; i < WORKERS; i++) {
		ret = mpq_process_new(&ps[i], work, NULL, 0, NULL);
		if (!ret)
			ret = mpq_process_start(ps[i]);
		if (ret)
			return fail("mpq_process_start", ret);
	}
	for (i = 0; i < WORKERS; i++) {
		ret = mpq_process_join(ps[i], 60 * NSEC_PER_SEC);
		if (!ret)
			ret = mpq_process_exitcode(ps[i], &code);
		if (ret || code) {
			fprintf(stderr, "lock_counter: %s failed\n",
				mpq_process_name(ps[i]));
			bad = 1;
		}
		mpq_process_free(ps[i]);
	}

	/* Everyone has finished: the lock is not needed to read. */
	total = *(long *)mpq_value_ptr(counter);
	lost = (long)WORKERS * ROUNDS - *(long *)mpq_value_ptr(unlocked);
	printf("%d processes, %d increments each\n", WORKERS, ROUNDS);
	printf("  under get_lock(): %ld (%s)\n", total,
	       total == (long)WORKERS * ROUNDS ? "exact" : "WRONG");
	printf("  without a lock:   %ld (%ld increments lost)\n",
	       *(long *)mpq_value_ptr(unlocked), lost);

	mpq_value_free(unlocked);
	mpq_value_free(counter);
	return bad || total != (long)WORKERS * ROUNDS;
}
