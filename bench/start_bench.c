// SPDX-License-Identifier: MIT
/*
 * start_bench: what starting a process costs by each start method, as
 * Python's multiprocessing users choose between them: start + join of a
 * target that returns at once, by fork, spawn and forkserver, each with
 * the parent single-threaded and with 8 threads busy (the case forkserver
 * exists for: fork's price without forking a threaded process).
 *
 *   start_bench [-n N]     N starts per row (default 200)
 *
 * Prints one line per row: the median and the 90th percentile of start +
 * join, in microseconds. The forkserver row starts its server first
 * (mpq_forkserver_start), so that the execve paid once is not in it; that
 * one-off cost is its own row.
 */
#include <pthread.h>
#include <mpq.h>

#include "bench.h"

static int trivial(const void *arg, size_t len)
{
	return 0;
}
MPQ_TARGET(trivial);

static int stop;

static void *busy(void *unused)
{
	void *m;

	while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
		m = malloc(256);
		free(m);
	}
	return NULL;
}

static int one_start(int method)
{
	struct mpq_process_attr attr = { .start_method = method };
	struct mpq_process *p;
	int code = -1;

	if (mpq_process_new(&p, trivial, NULL, 0, &attr) ||
	    mpq_process_start(p) ||
	    mpq_process_join(p, 30 * 1000000000LL) ||
	    mpq_process_exitcode(p, &code) || code) {
		fprintf(stderr, "start_bench: a start by method %d failed\n",
			method);
		exit(1);
	}
	mpq_process_free(p);
	return 0;
}

static void row(const char *name, int method, int n, int threads)
{
	uint64_t *t = calloc((size_t)n, sizeof(*t)), t0;
	pthread_t th[8];
	int i;

	if (!t)
		exit(1);
	stop = 0;
	for (i = 0; i < threads; i++)
		pthread_create(&th[i], NULL, busy, NULL);
	one_start(method);	/* warm: page cache, the server's first fork */
	for (i = 0; i < n; i++) {
		t0 = bench_now_ns();
		one_start(method);
		t[i] = bench_now_ns() - t0;
	}
	__atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
	for (i = 0; i < threads; i++)
		pthread_join(th[i], NULL);
	qsort(t, (size_t)n, sizeof(*t), bench_cmp_u64);
	printf("%-34s %2d threads  median %8.1f us  p90 %8.1f us  (n=%d)\n",
	       name, threads, bench_percentile(t, (size_t)n, 50) / 1e3,
	       bench_percentile(t, (size_t)n, 90) / 1e3, n);
	free(t);
}

int main(int argc, char **argv)
{
	char machine[256];
	uint64_t t0;
	int n = 200, th;

	mpq_init(&argc, &argv);
	if (argc == 3 && !strcmp(argv[1], "-n"))
		n = atoi(argv[2]);
	if (n <= 0)
		n = 200;
	bench_machine(machine, sizeof(machine));
	printf("# start + join of a trivial child; %s\n", machine);
	t0 = bench_now_ns();
	if (mpq_forkserver_start()) {
		fprintf(stderr, "start_bench: no fork server\n");
		return 1;
	}
	printf("%-34s             once     %8.1f us\n",
	       "forkserver: starting the server", (bench_now_ns() - t0) / 1e3);
	for (th = 0; th <= 8; th += 8) {
		row("fork", MPQ_START_FORK, n, th);
		row("spawn", MPQ_START_SPAWN, n, th);
		row("forkserver", MPQ_START_FORKSERVER, n, th);
	}
	return 0;
}
