// SPDX-License-Identifier: MIT
/*
 * manager_pool_bench: the distributed pool (a Pool on a Manager, its
 * workers local only) beside the local pool and CPython's
 * multiprocessing.Pool, in one interleaved run (medians of the rounds):
 *
 *   map      N trivial items (8 bytes in, 8 out), default chunking, two
 *            workers; tasks per second
 *   apply    one apply() round trip, one at a time; median microseconds
 *
 * Every result is checked.
 *     make build/bench/manager_pool_bench
 *     build/bench/manager_pool_bench [N [ROUNDS]]
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mpq_net.h>

#define SEC	1000000000LL

static int64_t now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * SEC + ts.tv_nsec;
}

static int inc(const void *arg, size_t len, struct mpq_task *t)
{
	uint64_t x;

	memcpy(&x, arg, sizeof(x));
	x++;
	return mpq_task_return(t, &x, sizeof(x));
}
MPQ_TASK(inc);

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp);
	return v[n / 2];
}

static double map_rate(struct mpq_pool *p, const struct iovec *iov, size_t n)
{
	struct mpq_async_result *r;
	const void *v;
	uint64_t y;
	int64_t t0 = now();
	size_t i;

	if (mpq_pool_map(p, inc, iov, n, 0, &r)) {
		fprintf(stderr, "map failed\n");
		exit(1);
	}
	t0 = now() - t0;
	for (i = 0; i < n; i++) {
		if (mpq_async_result_value(r, i, &v, NULL) ||
		    (memcpy(&y, v, 8), y != i + 1)) {
			fprintf(stderr, "item %zu wrong\n", i);
			exit(1);
		}
	}
	mpq_async_result_free(r);
	return (double)n * SEC / (double)t0;
}

static double apply_us(struct mpq_pool *p, int k)
{
	double *v = calloc((size_t)k, sizeof(*v)), m;
	uint64_t x = 41;
	void *out;
	int i;

	for (i = 0; i < k; i++) {
		int64_t t0 = now();

		if (mpq_pool_apply(p, inc, &x, sizeof(x), &out) != 8 ||
		    *(uint64_t *)out != 42) {
			fprintf(stderr, "apply failed\n");
			exit(1);
		}
		v[i] = (double)(now() - t0) / 1000.0;
		free(out);
	}
	m = median(v, k);
	free(v);
	return m;
}

/* CPython's Pool(2).map over range(n): tasks per second, or 0. */
static double cpython_rate(size_t n)
{
	char cmd[512];
	double rate = 0;
	FILE *f;

	snprintf(cmd, sizeof(cmd), "python3 -c '"
		 "import multiprocessing as mp, time\n"
		 "def inc(x): return x + 1\n"
		 "if __name__ == \"__main__\":\n"
		 " with mp.Pool(2) as p:\n"
		 "  p.map(inc, range(100))\n"
		 "  t = time.monotonic(); r = p.map(inc, range(%zu)); "
		 "t = time.monotonic() - t\n"
		 "  assert r == [i + 1 for i in range(%zu)]\n"
		 "  print(%zu / t)' 2>/dev/null", n, n, n);
	f = popen(cmd, "r");
	if (!f)
		return 0;
	if (fscanf(f, "%lf", &rate) != 1)
		rate = 0;
	pclose(f);
	return rate;
}

int main(int argc, char **argv)
{
	size_t n = argc > 1 ? strtoul(argv[1], NULL, 0) : 100000;
	int rounds = argc > 2 ? atoi(argv[2]) : 5, i;
	struct mpq_manager_attr ma = { 0 };
	struct mpq_pool_remote rem = { 0 };
	struct mpq_pool_attr la = { .processes = 2 };
	struct mpq_pool_attr da = { .processes = 2, .remote = &rem };
	struct mpq_manager *m;
	struct mpq_pool *lp, *dp;
	double *l, *d, *c, *al, *ad;
	uint64_t *in;
	struct iovec *iov;
	int ret;

	mpq_init(&argc, &argv);
	ret = mpq_manager_start(&m, &ma);
	if (ret) {
		fprintf(stderr, "manager: %s\n", mpq_strerror(ret));
		return 1;
	}
	rem.manager = m;
	in = calloc(n, sizeof(*in));
	iov = calloc(n, sizeof(*iov));
	l = calloc((size_t)rounds, sizeof(double));
	d = calloc((size_t)rounds, sizeof(double));
	c = calloc((size_t)rounds, sizeof(double));
	al = calloc((size_t)rounds, sizeof(double));
	ad = calloc((size_t)rounds, sizeof(double));
	for (size_t k = 0; k < n; k++) {
		in[k] = k;
		iov[k].iov_base = &in[k];
		iov[k].iov_len = 8;
	}
	if (mpq_pool_new(&lp, &la) || mpq_pool_new(&dp, &da)) {
		fprintf(stderr, "pools failed\n");
		return 1;
	}
	for (i = 0; i < rounds; i++) {
		l[i] = map_rate(lp, iov, n);
		d[i] = map_rate(dp, iov, n);
		c[i] = cpython_rate(n);
		al[i] = apply_us(lp, 200);
		ad[i] = apply_us(dp, 200);
	}
	printf("map of %zu trivial items, 2 workers, default chunking "
	       "(tasks/s, median of %d interleaved rounds)\n", n, rounds);
	printf("  local pool                     %12.0f\n", median(l, rounds));
	printf("  distributed pool (local only)  %12.0f\n", median(d, rounds));
	printf("  CPython multiprocessing.Pool   %12.0f\n", median(c, rounds));
	printf("  distributed / CPython          %12.2fx\n",
	       median(d, rounds) / median(c, rounds));
	printf("apply round trip (us, median)\n");
	printf("  local pool                     %12.1f\n", median(al, rounds));
	printf("  distributed pool               %12.1f\n", median(ad, rounds));
	mpq_pool_free(lp);
	mpq_pool_free(dp);
	mpq_manager_shutdown(m);
	return 0;
}
