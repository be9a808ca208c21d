// SPDX-License-Identifier: MIT
/*
 * pool_bench: mpq_pool, one measurement cell per invocation, printed as
 * JSON rows on stdout (diagnostics on stderr), beside cpython_bench.py's
 * multiprocessing.Pool cells in bench/run.py.
 *
 *   pool_bench --list [--quick]
 *   pool_bench BENCH IMPL [--batch N] [--size N] [--workers N]
 *              [--backend kmod|memfd] [--quick] [--count N]
 *
 * Row: {"bench","impl","backend","wait":null,"size","batch","workers",
 * "metric","value","count"}. Exit 0 on success; 1 on a wrong result or any
 * failed call; the cell is killed (SIGALRM) after 300 s, and the workers,
 * daemons, die with it.
 *
 * Benches (the pool is made and warmed with a small map first; only the
 * measured calls are timed, results are checked after the clock stops):
 *   pool-map    Pool(2).map(x + 1) over N int64 values (1,000,000; --quick
 *               100,000), --batch is the chunksize (0: Python's default,
 *               N / 8 here). impl mpq-pool: mpq_pool_map_values (values in
 *               one array, out in another, the C form of a list of ints);
 *               impl mpq-pool-iov: mpq_pool_map over one iovec per item,
 *               results read per item (the general bytes API); impl
 *               pthread-pool: the yardstick, an in-process pool of
 *               --workers threads (made and warmed like the others) that
 *               hands out the same chunks and writes each x + 1, called
 *               through a function pointer, straight into out. tasks_per_s,
 *               and cpu_ns_per_task: the CPU time of the caller and the
 *               workers over N, less what a pool that only starts, warms
 *               up (1,000 items) and ends costs.
 *   pool-apply  Pool(2): N apply_async(x + 1) (100,000; --quick 10,000),
 *               then get() on each, timed together as cpython_bench.py
 *               does. tasks_per_s and cpu_ns_per_task.
 *   pool-cpu    Pool(--workers).map of a CPU-bound task: each item is a
 *               --size byte block (16 KiB), hashed 16 times over with
 *               FNV-1a 64; N blocks (4,096; --quick 1,024), chunksize 1.
 *               tasks_per_s and bytes_per_s (bytes hashed once), for 1, 2
 *               and 4 workers: the scaling with workers, on this machine's
 *               CPUs. worker_cpus: the workers' CPU time over the map's
 *               wall time (from their rusage once reaped; the warm-up map
 *               is in it too, and is tiny), which says how many CPUs they
 *               got when other work shares the machine.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <mpq.h>

#include "bench.h"

#define TIMEOUT_S	300
#define CPU_ROUNDS	16

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t inc(int64_t x)
{
	return x + 1;
}
MPQ_TASK_VALUE(inc, int64_t, int64_t);

/* The same x + 1 through the bytes API. */
static int inc_bytes(const void *arg, size_t len, struct mpq_task *t)
{
	int64_t x;

	if (len != sizeof(x))
		return mpq_task_error(t, -EINVAL, "%zu bytes", len);
	memcpy(&x, arg, sizeof(x));
	x++;
	return mpq_task_return(t, &x, sizeof(x));
}
MPQ_TASK(inc_bytes);

static uint64_t fnv1a(const unsigned char *p, size_t n, uint64_t h)
{
	size_t i;

	for (i = 0; i < n; i++) {
		h ^= p[i];
		h *= 1099511628211ULL;
	}
	return h;
}

/* CPU-bound: the block hashed CPU_ROUNDS times, each round seeded by the last. */
static int hash_block(const void *arg, size_t len, struct mpq_task *t)
{
	uint64_t h = 14695981039346656037ULL;
	int r;

	for (r = 0; r < CPU_ROUNDS; r++)
		h = fnv1a(arg, len, h);
	return mpq_task_return(t, &h, sizeof(h));
}
MPQ_TASK(hash_block);

struct cell {
	const char *bench;
	const char *impl;
	int backend;
	size_t size;
	long batch;
	int workers;
	int quick;
	uint64_t count;
};

static int fail(const char *what, int err)
{
	fprintf(stderr, "pool_bench: %s: %s\n", what, mpq_strerror(err));
	return 1;
}

/* The in-process pool has no backend: null, as its --list line says. */
static int in_process(const char *impl)
{
	return !strcmp(impl, "pthread-pool");
}

static void row(const struct cell *c, const char *metric, double value,
		uint64_t count)
{
	printf("{\"bench\":\"%s\",\"impl\":\"%s\",\"backend\":%s%s%s,"
	       "\"wait\":null,\"size\":%zu,\"batch\":%ld,\"workers\":%d,"
	       "\"metric\":\"%s\",\"value\":%.*f,\"count\":%" PRIu64 "}\n",
	       c->bench, c->impl, in_process(c->impl) ? "" : "\"",
	       in_process(c->impl) ? "null" : mpq_backend_name(c->backend),
	       in_process(c->impl) ? "" : "\"", c->size,
	       c->batch, c->workers, metric,
	       /* CPU per task is a few ns: whole ns would hide a 10% change. */
	       value < 100 ? 2 : 0, value, count);
}

/* The reaped workers' CPU time over the wall time dt: CPUs kept busy. */
static void row_cpus(const struct cell *c, int64_t dt)
{
	struct rusage ru;
	double cpu;

	if (getrusage(RUSAGE_CHILDREN, &ru))
		return;
	cpu = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
	      (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
	printf("{\"bench\":\"%s\",\"impl\":\"%s\",\"backend\":\"%s\","
	       "\"wait\":null,\"size\":%zu,\"batch\":%ld,\"workers\":%d,"
	       "\"metric\":\"worker_cpus\",\"value\":%.3f,"
	       "\"count\":%" PRIu64 "}\n", c->bench, c->impl,
	       mpq_backend_name(c->backend), c->size, c->batch, c->workers,
	       cpu * 1e9 / dt, c->count);
}

static struct mpq_pool *pool_make(const struct cell *c)
{
	struct mpq_pool_attr attr = {
		.processes = c->workers,
		.backend = c->backend,
	};
	struct mpq_pool *p;
	int64_t warm_in[1000], warm_out[1000];
	int ret, i;

	ret = mpq_pool_new(&p, &attr);
	if (ret) {
		fail("mpq_pool_new", ret);
		return NULL;
	}
	for (i = 0; i < 1000; i++)
		warm_in[i] = i;
	ret = mpq_pool_map_values(p, inc_task, warm_in, 8, warm_out, 8, 1000, 0);
	if (ret) {
		fail("warm-up map", ret);
		mpq_pool_free(p);
		return NULL;
	}
	return p;
}

/*
 * What a pool's start, warm-up and end cost in CPU, on a pool that does
 * only those: subtracted from a run's CPU time, so that cpu_ns_per_task is
 * the tasks' own (the workers are reaped only when their pool is freed).
 */
static uint64_t pool_overhead_ns(const struct cell *c)
{
	uint64_t cpu = bench_cpu_ns();
	struct mpq_pool *p = pool_make(c);

	if (!p)
		return 0;
	mpq_pool_free(p);
	return bench_cpu_ns() - cpu;
}

static double per_task(const struct cell *c, uint64_t cpu, uint64_t base)
{
	return cpu > base ? (double)(cpu - base) / (double)c->count : 0;
}

static int check_inc(const int64_t *out, uint64_t n)
{
	uint64_t i;

	for (i = 0; i < n; i++)
		if (out[i] != (int64_t)i + 1)
			return fail("a wrong result", -EPROTO);
	return 0;
}

static int run_map_values(struct mpq_pool *p, const struct cell *c,
			  int64_t *in, int64_t *out, int64_t *dt)
{
	int64_t t0 = now_ns();
	int ret = mpq_pool_map_values(p, inc_task, in, 8, out, 8, c->count,
				      (size_t)c->batch);

	*dt = now_ns() - t0;
	return ret ? fail("mpq_pool_map_values", ret) : 0;
}

static int run_map_iov(struct mpq_pool *p, const struct cell *c, int64_t *in,
		       int64_t *out, int64_t *dt)
{
	struct iovec *iov = malloc(c->count * sizeof(*iov));
	struct mpq_async_result *r;
	const void *v;
	size_t len;
	uint64_t i;
	int64_t t0;
	int ret;

	if (!iov)
		return fail("malloc", -ENOMEM);
	for (i = 0; i < c->count; i++) {
		iov[i].iov_base = &in[i];
		iov[i].iov_len = sizeof(in[i]);
	}
	/* Timed: the map and reading every value, as a Python list is read. */
	t0 = now_ns();
	ret = mpq_pool_map(p, inc_bytes, iov, c->count, (size_t)c->batch, &r);
	for (i = 0; !ret && i < c->count; i++) {
		ret = mpq_async_result_value(r, i, &v, &len);
		if (!ret)
			memcpy(&out[i], v, sizeof(out[i]));
	}
	*dt = now_ns() - t0;
	mpq_async_result_free(r);
	free(iov);
	return ret ? fail("mpq_pool_map", ret) : 0;
}

/*
 * The in-process yardstick: a plain pthread pool of c->workers threads.
 * A map is published under the mutex; the threads take chunks of
 * chunksize items with one atomic add each, run fn on each item straight
 * into out, and the last one to finish a chunk that completes the map
 * wakes the caller, which sleeps on a condition variable as a caller of
 * any thread pool does.
 */
struct tpool {
	pthread_mutex_t lock;
	pthread_cond_t work, done;
	pthread_t thr[64];
	int nthr;
	int quit;
	uint64_t gen;			/* bumped for each map */
	int64_t (*fn)(int64_t);
	const int64_t *in;
	int64_t *out;
	uint64_t n, chunk;
	uint64_t next;			/* atomic: next item to hand out */
	uint64_t left;			/* atomic: items not yet done */
};

static void *tpool_main(void *arg)
{
	struct tpool *tp = arg;
	uint64_t seen = 0, i, k, end;

	for (;;) {
		pthread_mutex_lock(&tp->lock);
		while (!tp->quit && tp->gen == seen)
			pthread_cond_wait(&tp->work, &tp->lock);
		if (tp->quit) {
			pthread_mutex_unlock(&tp->lock);
			return NULL;
		}
		seen = tp->gen;
		pthread_mutex_unlock(&tp->lock);
		for (;;) {
			i = __atomic_fetch_add(&tp->next, tp->chunk,
					       __ATOMIC_ACQUIRE);
			if (i >= tp->n)
				break;
			end = i + tp->chunk < tp->n ? i + tp->chunk : tp->n;
			for (k = i; k < end; k++)
				tp->out[k] = tp->fn(tp->in[k]);
			if (__atomic_sub_fetch(&tp->left, end - i,
					       __ATOMIC_ACQ_REL) == 0) {
				pthread_mutex_lock(&tp->lock);
				pthread_cond_signal(&tp->done);
				pthread_mutex_unlock(&tp->lock);
			}
		}
	}
}

static void tpool_map(struct tpool *tp, int64_t (*fn)(int64_t),
		      const int64_t *in, int64_t *out, uint64_t n,
		      uint64_t chunk)
{
	pthread_mutex_lock(&tp->lock);
	tp->fn = fn;
	tp->in = in;
	tp->out = out;
	tp->n = n;
	tp->chunk = chunk ? chunk : 1;
	__atomic_store_n(&tp->left, n, __ATOMIC_RELAXED);
	/* Last: a thread still taking chunks of the last map sees the rest. */
	__atomic_store_n(&tp->next, 0, __ATOMIC_RELEASE);
	tp->gen++;
	pthread_cond_broadcast(&tp->work);
	while (__atomic_load_n(&tp->left, __ATOMIC_ACQUIRE))
		pthread_cond_wait(&tp->done, &tp->lock);
	pthread_mutex_unlock(&tp->lock);
}

static void tpool_free(struct tpool *tp)
{
	int i;

	pthread_mutex_lock(&tp->lock);
	tp->quit = 1;
	pthread_cond_broadcast(&tp->work);
	pthread_mutex_unlock(&tp->lock);
	for (i = 0; i < tp->nthr; i++)
		pthread_join(tp->thr[i], NULL);
	free(tp);
}

/* Made and warmed with 1,000 items, as pool_make() does the mpq pool. */
static struct tpool *tpool_make(const struct cell *c)
{
	struct tpool *tp = calloc(1, sizeof(*tp));
	int64_t warm_in[1000], warm_out[1000];
	int i;

	if (!tp)
		return NULL;
	pthread_mutex_init(&tp->lock, NULL);
	pthread_cond_init(&tp->work, NULL);
	pthread_cond_init(&tp->done, NULL);
	for (i = 0; i < c->workers; i++) {
		if (pthread_create(&tp->thr[i], NULL, tpool_main, tp)) {
			tpool_free(tp);
			return NULL;
		}
		tp->nthr++;
	}
	for (i = 0; i < 1000; i++)
		warm_in[i] = i;
	tpool_map(tp, inc, warm_in, warm_out, 1000, 1000 / (4 * c->workers));
	return tp;
}

/* Python's default chunksize, as mpq's: ceil(n / (4 * workers)). */
static uint64_t tpool_chunk(const struct cell *c)
{
	uint64_t per = 4 * (uint64_t)c->workers;

	return c->batch ? (uint64_t)c->batch : (c->count + per - 1) / per;
}

static int bench_map_pthread(const struct cell *c)
{
	int64_t *in = malloc(c->count * 8), *out = calloc(c->count, 8), t0, dt;
	uint64_t i, cpu, base;
	struct tpool *tp;
	int ret = 1;

	if (!in || !out)
		goto out;
	for (i = 0; i < c->count; i++)
		in[i] = (int64_t)i;
	cpu = bench_cpu_ns();
	tp = tpool_make(c);
	if (!tp)
		goto out;
	tpool_free(tp);
	base = bench_cpu_ns() - cpu;
	cpu = bench_cpu_ns();
	tp = tpool_make(c);
	if (!tp)
		goto out;
	t0 = now_ns();
	tpool_map(tp, inc, in, out, c->count, tpool_chunk(c));
	dt = now_ns() - t0;
	tpool_free(tp);
	cpu = bench_cpu_ns() - cpu;
	ret = check_inc(out, c->count);
	if (!ret) {
		row(c, "tasks_per_s", c->count * 1e9 / dt, c->count);
		row(c, "cpu_ns_per_task", per_task(c, cpu, base), c->count);
	}
out:
	free(in);
	free(out);
	return ret;
}

static int bench_map(const struct cell *c)
{
	int64_t *in = malloc(c->count * 8), *out = calloc(c->count, 8), dt = 0;
	struct mpq_pool *p = NULL;
	uint64_t i, cpu, base;
	int ret = 1;

	if (!in || !out)
		goto out;
	for (i = 0; i < c->count; i++)
		in[i] = (int64_t)i;
	base = pool_overhead_ns(c);
	cpu = bench_cpu_ns();
	p = pool_make(c);
	if (!p)
		goto out;
	if (!strcmp(c->impl, "mpq-pool"))
		ret = run_map_values(p, c, in, out, &dt);
	else
		ret = run_map_iov(p, c, in, out, &dt);
	if (!ret)
		ret = check_inc(out, c->count);
	if (!ret) {
		mpq_pool_free(p);
		p = NULL;
		cpu = bench_cpu_ns() - cpu;
		row(c, "tasks_per_s", c->count * 1e9 / dt, c->count);
		row(c, "cpu_ns_per_task", per_task(c, cpu, base), c->count);
	}
out:
	mpq_pool_free(p);
	free(in);
	free(out);
	return ret;
}

static int bench_apply(const struct cell *c)
{
	struct mpq_async_result **r = calloc(c->count, sizeof(*r));
	uint64_t base = pool_overhead_ns(c), cpu = bench_cpu_ns();
	struct mpq_pool *p = pool_make(c);
	int64_t x, t0, dt = 1, *out = calloc(c->count, 8);
	const void *v;
	size_t len;
	uint64_t i, n = 0;
	int ret = 1;

	if (!r || !p || !out)
		goto out;
	t0 = now_ns();
	for (n = 0; n < c->count; n++) {
		x = (int64_t)n;
		ret = mpq_pool_apply_async(p, inc_task, &x, sizeof(x), NULL,
					   &r[n]);
		if (ret) {
			fail("mpq_pool_apply_async", ret);
			goto out;
		}
	}
	for (i = 0; i < n; i++) {
		ret = mpq_async_result_get(r[i], MPQ_FOREVER);
		if (!ret)
			ret = mpq_async_result_value(r[i], 0, &v, &len);
		if (ret) {
			fail("get", ret);
			goto out;
		}
		memcpy(&out[i], v, sizeof(out[i]));
	}
	dt = now_ns() - t0;
	ret = check_inc(out, c->count);
out:
	for (i = 0; r && i < n; i++)
		mpq_async_result_free(r[i]);
	mpq_pool_free(p);
	if (!ret) {
		cpu = bench_cpu_ns() - cpu;
		row(c, "tasks_per_s", c->count * 1e9 / dt, c->count);
		row(c, "cpu_ns_per_task", per_task(c, cpu, base), c->count);
	}
	free(r);
	free(out);
	return ret;
}

static int bench_cpu(const struct cell *c)
{
	unsigned char *blocks = malloc(c->count * c->size);
	uint64_t *out = calloc(c->count, 8), want, i;
	struct mpq_pool *p = pool_make(c);
	int64_t t0, dt;
	int ret = 1, r;

	if (!blocks || !out || !p)
		goto out;
	for (i = 0; i < c->count * c->size; i++)
		blocks[i] = (unsigned char)(i * 2654435761U >> 13);
	t0 = now_ns();
	ret = mpq_pool_map_values(p, hash_block, blocks, c->size, out, 8,
				  c->count, 1);
	dt = now_ns() - t0;
	if (ret) {
		fail("mpq_pool_map_values", ret);
		goto out;
	}
	for (i = 0; i < c->count; i += c->count / 16 + 1) {
		want = 14695981039346656037ULL;
		for (r = 0; r < CPU_ROUNDS; r++)
			want = fnv1a(blocks + i * c->size, c->size, want);
		if (out[i] != want) {
			ret = fail("a wrong hash", -EPROTO);
			goto out;
		}
	}
	row(c, "tasks_per_s", c->count * 1e9 / dt, c->count);
	row(c, "bytes_per_s", (double)c->count * c->size * 1e9 / dt, c->count);
	mpq_pool_free(p);
	p = NULL;
	row_cpus(c, dt);
out:
	mpq_pool_free(p);
	free(blocks);
	free(out);
	return ret;
}

static uint64_t default_count(const struct cell *c)
{
	uint64_t n;

	if (!strcmp(c->bench, "pool-map"))
		n = 1000000;
	else if (!strcmp(c->bench, "pool-apply"))
		n = 100000;
	else
		n = 4096;
	return c->quick ? n / (!strcmp(c->bench, "pool-cpu") ? 4 : 10) : n;
}

static void list_one(const char *bench, const char *impl, int backend,
		     size_t size, long batch, int workers)
{
	printf("{\"bench\":\"%s\",\"impl\":\"%s\",\"backend\":%s%s%s,"
	       "\"size\":%zu,\"batch\":%ld,\"workers\":%d}\n", bench, impl,
	       in_process(impl) ? "" : "\"",
	       in_process(impl) ? "null" : mpq_backend_name(backend),
	       in_process(impl) ? "" : "\"", size, batch, workers);
}

static void list_cells(void)
{
	int backends[2] = { MPQ_BACKEND_MEMFD, MPQ_BACKEND_KMOD }, b, k;
	int nb = access("/dev/mpq", F_OK) == 0 ? 2 : 1;
	static const int workers[] = { 1, 2, 4 };

	for (b = 0; b < nb; b++) {
		list_one("pool-map", "mpq-pool", backends[b], 8, 0, 2);
		list_one("pool-map", "mpq-pool", backends[b], 8, 1, 2);
		list_one("pool-map", "mpq-pool-iov", backends[b], 8, 0, 2);
		list_one("pool-map", "mpq-pool-iov", backends[b], 8, 1, 2);
		/* In-process, no backend: listed once. */
		if (!b) {
			list_one("pool-map", "pthread-pool", backends[b], 8, 0, 2);
			list_one("pool-map", "pthread-pool", backends[b], 8, 1, 2);
		}
		list_one("pool-apply", "mpq-pool", backends[b], 8, 1, 2);
		for (k = 0; k < 3; k++)
			list_one("pool-cpu", "mpq-pool", backends[b], 16384, 1,
				 workers[k]);
	}
}

static int parse(int argc, char **argv, struct cell *c, int *list)
{
	static const struct option opts[] = {
		{ "list", no_argument, NULL, 'l' },
		{ "quick", no_argument, NULL, 'q' },
		{ "batch", required_argument, NULL, 'b' },
		{ "size", required_argument, NULL, 's' },
		{ "workers", required_argument, NULL, 'w' },
		{ "backend", required_argument, NULL, 'B' },
		{ "count", required_argument, NULL, 'n' },
		{ "wait", required_argument, NULL, 'W' },
		{ 0 }
	};
	int o;

	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'l': *list = 1; break;
		case 'q': c->quick = 1; break;
		case 'b': c->batch = strtol(optarg, NULL, 10); break;
		case 's': c->size = strtoul(optarg, NULL, 10); break;
		case 'w': c->workers = atoi(optarg); break;
		case 'n': c->count = strtoull(optarg, NULL, 10); break;
		case 'W': break;	/* run.py's field; pools have no wait mode */
		case 'B':
			c->backend = !strcmp(optarg, "kmod") ? MPQ_BACKEND_KMOD :
				     !strcmp(optarg, "memfd") ? MPQ_BACKEND_MEMFD : -1;
			break;
		default: return -1;
		}
	}
	if (*list)
		return 0;
	if (argc - optind != 2 || c->backend < 0 || c->batch < 0 ||
	    c->workers < 1 || c->workers > 64)
		return -1;
	c->bench = argv[optind];
	c->impl = argv[optind + 1];
	return 0;
}

int main(int argc, char **argv)
{
	struct cell c = { .backend = MPQ_BACKEND_MEMFD, .size = 8,
			  .batch = 1, .workers = 2 };
	int list = 0;

	mpq_init(&argc, &argv);
	if (parse(argc, argv, &c, &list)) {
		fprintf(stderr, "usage: pool_bench --list [--quick] | BENCH IMPL "
			"[--batch N] [--size N] [--workers N] "
			"[--backend kmod|memfd] [--quick] [--count N]\n");
		return 2;
	}
	if (list) {
		list_cells();
		return 0;
	}
	if (!c.count)
		c.count = default_count(&c);
	alarm(TIMEOUT_S);
	if (!strcmp(c.bench, "pool-map") &&
	    (!strcmp(c.impl, "mpq-pool") || !strcmp(c.impl, "mpq-pool-iov")))
		return bench_map(&c);
	if (!strcmp(c.bench, "pool-map") && !strcmp(c.impl, "pthread-pool"))
		return bench_map_pthread(&c);
	if (!strcmp(c.bench, "pool-apply") && !strcmp(c.impl, "mpq-pool"))
		return bench_apply(&c);
	if (!strcmp(c.bench, "pool-cpu") && !strcmp(c.impl, "mpq-pool")) {
		if (c.size < 8 || c.size > (1 << 20))
			return 2;
		return bench_cpu(&c);
	}
	fprintf(stderr, "pool_bench: no cell %s %s\n", c.bench, c.impl);
	return 2;
}
