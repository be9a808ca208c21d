// SPDX-License-Identifier: MIT
/*
 * lockbench: the cost of a lock, mpq's beside a process-shared pthread
 * mutex (plain and robust) and, in cpython_bench.py, CPython's
 * multiprocessing.Lock. One cell per invocation, JSON rows on stdout, as
 * mpqbench does; bench/run.py runs them side by side.
 *
 *   lock            one process takes and releases the lock N times,
 *                   nobody else touching it. Metric ns_per_op, per
 *                   acquire+release pair. N: 20,000,000.
 *   lock-contended  two processes, pinned to different CPUs, each take the
 *                   lock N/2 times to increment a plain shared counter.
 *                   Timed from a common start to both having finished; the
 *                   count must come out exact. Metric ns_per_op = total
 *                   time / N pairs. N: 4,000,000.
 *
 *   lockbench --list [--quick]
 *   lockbench BENCH IMPL [--backend kmod|memfd] [--quick] [--count N]
 *   IMPL: mpq-lock, mpq-rlock, pthread-mutex, pthread-robust
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mpq.h>

struct shared {
	pthread_mutex_t mutex;
	volatile uint64_t counter;
	int ready;
	int go;
};

struct lockimpl {
	const char *name;
	bool mpq;
	bool robust;		/* pthread: PTHREAD_MUTEX_ROBUST */
	bool recursive;		/* mpq: an RLock */
};

static const struct lockimpl impls[] = {
	{ "mpq-lock", true, false, false },
	{ "mpq-rlock", true, false, true },
	{ "pthread-mutex", false, false, false },
	{ "pthread-robust", false, true, false },
};

static const char *const benches[] = { "lock", "lock-contended" };

struct cell {
	const char *bench;
	const struct lockimpl *impl;
	int backend;
	uint64_t count;
	bool quick;
};

struct lock {
	const struct lockimpl *impl;
	struct mpq_lock *l;
	pthread_mutex_t *m;
};

static int fail(const char *what, int err)
{
	fprintf(stderr, "lockbench: %s: %s\n", what, strerror(err));
	return -1;
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void pin(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu % CPU_SETSIZE, &set);
	sched_setaffinity(0, sizeof(set), &set);
}

static int lock_open(struct lock *k, const struct cell *cl, struct shared *sh)
{
	struct mpq_lock_attr attr = { .backend = cl->backend };
	pthread_mutexattr_t ma;
	int ret;

	k->impl = cl->impl;
	if (cl->impl->mpq) {
		ret = cl->impl->recursive ? mpq_rlock_new(&k->l, &attr) :
					    mpq_lock_new(&k->l, &attr);
		return ret ? fail("mpq_lock_new", -ret) : 0;
	}
	k->m = &sh->mutex;
	pthread_mutexattr_init(&ma);
	pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
	if (cl->impl->robust)
		pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
	ret = pthread_mutex_init(k->m, &ma);
	return ret ? fail("pthread_mutex_init", ret) : 0;
}

static inline int lock_take(struct lock *k)
{
	return k->l ? mpq_lock_acquire(k->l, MPQ_FOREVER) :
		      -pthread_mutex_lock(k->m);
}

static inline int lock_give(struct lock *k)
{
	return k->l ? mpq_lock_release(k->l) : -pthread_mutex_unlock(k->m);
}

static void row(const struct cell *cl, double ns, uint64_t n)
{
	printf("{\"bench\":\"%s\",\"impl\":\"%s\",\"backend\":", cl->bench,
	       cl->impl->name);
	if (cl->impl->mpq)
		printf("\"%s\"", mpq_backend_name(cl->backend));
	else
		printf("null");
	printf(",\"wait\":null,\"size\":8,\"batch\":1,\"metric\":\"ns_per_op\","
	       "\"value\":%.2f,\"count\":%" PRIu64 "}\n", ns, n);
}

static int run_uncontended(struct lock *k, const struct cell *cl)
{
	uint64_t n = cl->count, i;
	int64_t t0, t1;

	pin(0);
	for (i = 0; i < 100000; i++)		/* warm-up */
		if (lock_take(k) || lock_give(k))
			return fail("warm-up", EIO);
	t0 = now_ns();
	for (i = 0; i < n; i++) {
		lock_take(k);
		lock_give(k);
	}
	t1 = now_ns();
	if (lock_take(k) || lock_give(k))
		return fail("lock: left in a bad state", EIO);
	row(cl, (double)(t1 - t0) / n, n);
	return 0;
}

/* N/2 locked increments; the two sides start together on sh->go. */
static int increments(struct lock *k, struct shared *sh, uint64_t each)
{
	uint64_t i;

	for (i = 0; i < each; i++) {
		if (lock_take(k))
			return -1;
		sh->counter = sh->counter + 1;
		if (lock_give(k))
			return -1;
	}
	return 0;
}

static int run_contended(struct lock *k, const struct cell *cl,
			 struct shared *sh)
{
	uint64_t each = cl->count / 2;
	int64_t t0, t1;
	int status;
	pid_t pid;

	pid = fork();
	if (pid < 0)
		return fail("fork", errno);
	if (pid == 0) {
		pin(1);
		__atomic_store_n(&sh->ready, 1, __ATOMIC_RELEASE);
		while (!__atomic_load_n(&sh->go, __ATOMIC_ACQUIRE))
			;
		_exit(increments(k, sh, each) ? 1 : 0);
	}
	pin(0);
	while (!__atomic_load_n(&sh->ready, __ATOMIC_ACQUIRE))
		;
	t0 = now_ns();
	__atomic_store_n(&sh->go, 1, __ATOMIC_RELEASE);
	if (increments(k, sh, each))
		return fail("lock-contended: parent", EIO);
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
	    WEXITSTATUS(status))
		return fail("lock-contended: child", EIO);
	t1 = now_ns();
	if (sh->counter != 2 * each) {
		fprintf(stderr, "lockbench: count %" PRIu64 ", expected %" PRIu64 "\n",
			(uint64_t)sh->counter, 2 * each);
		return -1;
	}
	row(cl, (double)(t1 - t0) / (2 * each), 2 * each);
	return 0;
}

static bool have_kmod(void)
{
	return access("/dev/mpq", F_OK) == 0;
}

static void list(bool quick)
{
	unsigned int b, i, v;

	for (b = 0; b < 2; b++)
		for (i = 0; i < sizeof(impls) / sizeof(impls[0]); i++)
			for (v = 0; v < (impls[i].mpq ? 2 : 1); v++) {
				if (v == 1 && !have_kmod())
					continue;
				printf("{\"bench\":\"%s\",\"impl\":\"%s\"", benches[b],
				       impls[i].name);
				if (impls[i].mpq)
					printf(",\"backend\":\"%s\"", v ? "kmod" : "memfd");
				printf(",\"size\":8,\"batch\":1}\n");
			}
}

static void usage(FILE *f)
{
	fprintf(f, "usage: lockbench --list [--quick]\n"
		   "       lockbench lock|lock-contended IMPL [--backend kmod|memfd]"
		   " [--quick] [--count N]\n"
		   "  IMPL  mpq-lock, mpq-rlock, pthread-mutex, pthread-robust\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "list", no_argument, NULL, 'l' },
		{ "quick", no_argument, NULL, 'q' },
		{ "count", required_argument, NULL, 'n' },
		{ "backend", required_argument, NULL, 'b' },
		{ "size", required_argument, NULL, 's' },
		{ "batch", required_argument, NULL, 'B' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct cell cl = { 0 };
	bool do_list = false;
	struct shared *sh;
	struct lock k = { 0 };
	unsigned int i;
	int o;

	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'l': do_list = true; break;
		case 'q': cl.quick = true; break;
		case 'n': cl.count = strtoull(optarg, NULL, 10); break;
		case 'b':
			cl.backend = !strcmp(optarg, "kmod") ? MPQ_BACKEND_KMOD :
				     !strcmp(optarg, "memfd") ? MPQ_BACKEND_MEMFD : -1;
			if (cl.backend < 0) {
				usage(stderr);
				return 2;
			}
			break;
		case 's': case 'B': break;	/* run.py passes them: always 8, 1 */
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (do_list) {
		list(cl.quick);
		return 0;
	}
	if (argc - optind != 2) {
		usage(stderr);
		return 2;
	}
	cl.bench = NULL;
	for (i = 0; i < 2; i++)
		if (!strcmp(argv[optind], benches[i]))
			cl.bench = benches[i];
	for (i = 0; i < sizeof(impls) / sizeof(impls[0]); i++)
		if (!strcmp(argv[optind + 1], impls[i].name))
			cl.impl = &impls[i];
	if (!cl.bench || !cl.impl) {
		usage(stderr);
		return 2;
	}
	if (cl.impl->mpq && !cl.backend)
		cl.backend = MPQ_BACKEND_MEMFD;
	if (!cl.count) {
		cl.count = !strcmp(cl.bench, "lock") ? 20000000 : 4000000;
		if (cl.quick)
			cl.count /= 10;
	}
	if (cl.count < 2)
		cl.count = 2;
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		fail("mmap", errno);
		return 1;
	}
	if (lock_open(&k, &cl, sh))
		return 1;
	if (!strcmp(cl.bench, "lock"))
		return run_uncontended(&k, &cl) ? 1 : 0;
	return run_contended(&k, &cl, sh) ? 1 : 0;
}
