// SPDX-License-Identifier: MIT
/*
 * barrier_workers: workers that meet at a Barrier round after round,
 * Python's
 *
 *     rounds = Value('i', 0, lock=False)
 *     def action(): rounds.value += 1; print("round", rounds.value)
 *     b = Barrier(4, action=action)
 *     def work(i):
 *         for r in range(3):
 *             index = b.wait(timeout=10)
 *             print("worker", i, "arrived", index)
 *
 * Four forked workers each wait at the barrier three times. In each round
 * the last one to arrive runs the action before anyone is released: it
 * counts the round in a RawValue, which needs no lock because every other
 * party is waiting meanwhile. Each wait returns the party's arrival index
 * in its round (0 first, 3 last); the workers note theirs in a RawArray,
 * and the parent checks that every round gave each index once and that
 * the action ran once per round.
 *
 * The timeout matters where a worker may die: one that dies inside wait
 * breaks the barrier for the others at once (-ECANCELED), but one that
 * dies elsewhere only looks slow, and the others would wait for it
 * without end.
 *
 * Build (installed library):
 *     cc -o barrier_workers barrier_workers.c $(pkg-config --cflags --libs mpq)
 * In the source tree:
 *     make build/examples/barrier_workers
 *     (= cc -Iinclude -o build/examples/barrier_workers \
 *        examples/barrier_workers.c -Lbuild/lib -lmpq -Wl,-rpath,$PWD/build/lib)
 * Run:
 *     build/examples/barrier_workers
 */
#include <stdio.h>

#include <mpq.h>

#define WORKERS		4
#define ROUNDS		3
#define NSEC_PER_SEC	1000000000LL

static struct mpq_barrier *barrier;
static struct mpq_value *rounds;	/* RawValue: rounds completed */
static struct mpq_value *arrivals;	/* RawArray [ROUNDS][WORKERS] */
static int me = -1;			/* this process's worker number */

static int fail(const char *what, int ret)
{
	fprintf(stderr, "barrier_workers: %s: %s\n", what, mpq_strerror(ret));
	return 1;
}

/* Run once per round, by the last party to arrive, in its process. */
static int action(void *arg)
{
	int *n = mpq_value_ptr(rounds);

	*n += 1;
	printf("round %d: all %d here; worker %d, the last, runs the action\n",
	       *n, WORKERS, me);
	return 0;	/* a negative errno would break the barrier */
}

static int work(const void *arg, size_t len)
{
	int i = *(const int *)arg, r, index;
	int *seen = mpq_value_ptr(arrivals);

	me = i;		/* a global of its own: each worker is a process */
	for (r = 0; r < ROUNDS; r++) {
		index = mpq_barrier_wait(barrier, 10 * NSEC_PER_SEC);
		if (index < 0)
			return fail("mpq_barrier_wait", index);
		seen[r * WORKERS + i] = index;
		printf("  round %d: worker %d arrived #%d\n", r + 1, i, index);
	}
	return 0;
}

/* Did each round give every index once? */
static int check(void)
{
	int *seen = mpq_value_ptr(arrivals), r, i, mask;

	for (r = 0; r < ROUNDS; r++) {
		mask = 0;
		for (i = 0; i < WORKERS; i++)
			mask |= 1 << seen[r * WORKERS + i];
		if (mask != (1 << WORKERS) - 1)
			return 1;
	}
	return *(int *)mpq_value_ptr(rounds) != ROUNDS;
}

int main(int argc, char **argv)
{
	struct mpq_value_attr raw = { .flags = MPQ_VALUE_RAW };
	struct mpq_process *ps[WORKERS];
	int i, ret, code, bad = 0;

	ret = mpq_init(&argc, &argv);
	if (ret)
		return fail("mpq_init", ret);
	/* Lines from several processes: write each one whole, at once. */
	setvbuf(stdout, NULL, _IOLBF, 0);

	/* All made before the workers start, which inherit them. */
	ret = mpq_barrier_new(&barrier, WORKERS, action, NULL, NULL);
	if (ret)
		return fail("mpq_barrier_new", ret);
	ret = mpq_value_new(&rounds, sizeof(int), &raw);
	if (!ret)
		ret = mpq_array_new(&arrivals, sizeof(int), ROUNDS * WORKERS,
				    &raw);
	if (ret)
		return fail("mpq_value_new", ret);

	for (i = 0; i < WORKERS; i++) {
		/* The argument bytes are copied: i can change at once. */
		ret = mpq_process_new(&ps[i], work, &i, sizeof(i), NULL);
		if (!ret)
			ret = mpq_process_start(ps[i]);
		if (ret)
			return fail("mpq_process_start", ret);
	}
	for (i = 0; i < WORKERS; i++) {
		ret = mpq_process_join(ps[i], 60 * NSEC_PER_SEC);
		if (!ret)
			ret = mpq_process_exitcode(ps[i], &code);
		if (ret || code)
			bad = 1;
		mpq_process_free(ps[i]);
	}
	if (!bad)
		bad = check();
	printf("%s\n", bad ? "something went wrong" :
	       "every round gave each index once, and ran the action once");

	mpq_value_free(arrivals);
	mpq_value_free(rounds);
	mpq_barrier_free(barrier);
	return bad;
}
