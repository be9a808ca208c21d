// SPDX-License-Identifier: MIT
/*
 * manager_pool_bench: the distributed pool (a Pool on a Manager) beside
 * the local pool, CPython's multiprocessing.Pool and Python's own
 * distributed pattern, in one interleaved run (medians of the rounds):
 *
 *   map      N trivial items (8 bytes in, 8 out), default chunking;
 *            tasks per second
 *   apply    one apply() round trip, one at a time; median microseconds
 *
 * The cells: the local pool (2 workers) and CPython's Pool(2), for scale;
 * the distributed pool with its 2 local workers; and the distributed
 * pool with MPQ_POOL_REMOTE_ONLY and 1, 2 and 4 remote workers (this
 * program again, started with --mpq-worker=ADDRESS as on another
 * machine, over TCP loopback), each beside bench/manager_pool_cpython.py
 * with as many workers: a BaseManager on TCP loopback with a task queue
 * and a result queue, one task per item as the pattern is written
 * ("classic") and in lists of Pool's default chunksize ("chunked").
 * Python's cells run NPY items (fewer: its classic pattern is slow).
 *
 * Every result is checked. NPY 0: no Python cells (an A/B of mpq alone).
 *     make build/bench/manager_pool_bench
 *     build/bench/manager_pool_bench [N [ROUNDS [NPY]]]
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
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

/* bench/ of the tree this binary was built in (build/bench/../../bench). */
static const char *bench_dir(void)
{
	static char dir[4096];
	ssize_t len;
	char *s;

	if (dir[0])
		return dir;
	len = readlink("/proc/self/exe", dir, sizeof(dir) - 16);
	dir[len > 0 ? len : 0] = 0;
	s = strrchr(dir, '/');
	if (s)
		strcpy(s, "/../../bench");
	return dir;
}

/* Python's distributed pattern with nw workers: classic, chunked, rtt. */
static int cpython_dist(int nw, size_t n, double out[3])
{
	char cmd[4600];
	FILE *f;
	int ok;

	snprintf(cmd, sizeof(cmd), "python3 %s/manager_pool_cpython.py %d %zu"
		 " 2>/dev/null", bench_dir(), nw, n);
	f = popen(cmd, "r");
	if (!f)
		return -1;
	ok = fscanf(f, "%lf %lf %lf", &out[0], &out[1], &out[2]) == 3;
	pclose(f);
	if (!ok)
		out[0] = out[1] = out[2] = 0;
	return ok ? 0 : -1;
}

/* This program in worker mode, serving pool "pool": as on a machine. */
static pid_t start_worker(struct mpq_manager *m, const char *pool)
{
	char opt[512];
	pid_t pid = fork();

	if (pid)
		return pid;
	snprintf(opt, sizeof(opt), "--mpq-worker=%s", mpq_manager_address(m));
	setenv("MPQ_AUTHKEY", mpq_manager_authkey(m), 1);
	setenv("MPQ_WORKER_POOL", pool, 1);
	execl("/proc/self/exe", "manager_pool_bench", opt, (char *)NULL);
	_exit(127);
}

/* One Redis round trip (PING) on the manager's connection: median us. */
static double ping_us(struct mpq_manager *m, int k)
{
	double *v = calloc((size_t)k, sizeof(*v)), r;
	int i;

	for (i = 0; i < k; i++) {
		int64_t t0 = now();

		if (mpq_manager_ping(m)) {
			fprintf(stderr, "ping failed\n");
			exit(1);
		}
		v[i] = (double)(now() - t0) / 1000.0;
	}
	r = median(v, k);
	free(v);
	return r;
}

/*
 * The least any client can do for one task with the manager in between,
 * by hand: two queues without leases (native commands, no script), a
 * process that gets from one and puts to the other, and the caller's put
 * and blocking get. Its floor is two Redis round trips, the apply goal.
 */
static pid_t echo_start(struct mpq_manager *m)
{
	struct mpq_manager_queue_attr qa = { .lease_ns = MPQ_MANAGER_NO_LEASE };
	struct mpq_manager_queue *a, *b;
	struct mpq_manager_msg msg;
	struct mpq_manager *c;
	pid_t pid = fork();

	if (pid)
		return pid;
	if (mpq_manager_connect(&c, mpq_manager_address(m),
				mpq_manager_authkey(m), 0) ||
	    mpq_manager_queue(c, "echo.in", &qa, &a) ||
	    mpq_manager_queue(c, "echo.out", &qa, &b))
		_exit(1);
	for (;;) {
		int ret = mpq_manager_queue_get(a, &msg, -1);

		if (ret == -ETIMEDOUT || ret == -EAGAIN)
			continue;
		if (ret < 0 || mpq_manager_queue_put(b, msg.data, msg.len, -1))
			_exit(1);
		mpq_manager_msg_free(&msg);
	}
}

static double echo_us(struct mpq_manager_queue *a,
		      struct mpq_manager_queue *b, int k)
{
	double *v = calloc((size_t)k, sizeof(*v)), r;
	struct mpq_manager_msg msg;
	uint64_t x = 41;
	int i;

	for (i = 0; i < k; i++) {
		int64_t t0 = now();

		if (mpq_manager_queue_put(a, &x, sizeof(x), -1) ||
		    mpq_manager_queue_get(b, &msg, 10 * SEC) < 0) {
			fprintf(stderr, "echo failed\n");
			exit(1);
		}
		v[i] = (double)(now() - t0) / 1000.0;
		mpq_manager_msg_free(&msg);
	}
	r = median(v, k);
	free(v);
	return r;
}

/*
 * The floor under every client: hiredis itself, as a client written for
 * this one exchange would use it. The caller sends RPUSH and BLPOP in
 * one write; a process blocked in BLPOP gets the task, and sends its
 * RPUSH and its next BLPOP in one write. No script, no transaction, no
 * check of the connection between commands: four one-way trips through
 * the server and two of its command loops, the least the pattern costs.
 * Keys in the manager's namespace, as its ACL allows.
 */
static redisContext *raw_connect(struct mpq_manager *m, char *ns,
				 size_t nslen)
{
	const char *a = mpq_manager_address(m), *h = strchr(a, '#');
	char host[64];
	int port;
	redisContext *c;
	redisReply *r;

	if (strncmp(a, "tcp://", 6) || !h ||
	    sscanf(a + 6, "%63[^:]:%d", host, &port) != 2)
		return NULL;
	snprintf(ns, nslen, "%s", h + 1);
	c = redisConnect(host, port);
	if (!c || c->err)
		return NULL;
	r = redisCommand(c, "AUTH %s %s", ns, mpq_manager_authkey(m));
	if (!r || r->type == REDIS_REPLY_ERROR) {
		freeReplyObject(r);
		redisFree(c);
		return NULL;
	}
	freeReplyObject(r);
	return c;
}

static pid_t raw_echo_start(struct mpq_manager *m)
{
	redisContext *c;
	redisReply *r;
	char ns[64];
	pid_t pid = fork();

	if (pid)
		return pid;
	c = raw_connect(m, ns, sizeof(ns));
	if (!c)
		_exit(1);
	redisAppendCommand(c, "BLPOP mpq:%s:raw.in 0", ns);
	for (;;) {
		if (redisGetReply(c, (void **)&r) != REDIS_OK ||
		    r->type != REDIS_REPLY_ARRAY || r->elements != 2)
			_exit(1);
		redisAppendCommand(c, "RPUSH mpq:%s:raw.out %b", ns,
				   r->element[1]->str, r->element[1]->len);
		redisAppendCommand(c, "BLPOP mpq:%s:raw.in 0", ns);
		freeReplyObject(r);
		if (redisGetReply(c, (void **)&r) != REDIS_OK)
			_exit(1);
		freeReplyObject(r);
	}
}

static double raw_echo_us(redisContext *c, const char *ns, int k)
{
	double *v = calloc((size_t)k, sizeof(*v)), res;
	redisReply *r1, *r2;
	uint64_t x = 41;
	int i;

	for (i = 0; i < k; i++) {
		int64_t t0 = now();

		redisAppendCommand(c, "RPUSH mpq:%s:raw.in %b", ns, &x,
				   sizeof(x));
		redisAppendCommand(c, "BLPOP mpq:%s:raw.out 10", ns);
		if (redisGetReply(c, (void **)&r1) != REDIS_OK ||
		    redisGetReply(c, (void **)&r2) != REDIS_OK ||
		    r2->type != REDIS_REPLY_ARRAY || r2->elements != 2 ||
		    r2->element[1]->len != sizeof(x) ||
		    memcmp(r2->element[1]->str, &x, sizeof(x))) {
			fprintf(stderr, "raw echo failed\n");
			exit(1);
		}
		v[i] = (double)(now() - t0) / 1000.0;
		freeReplyObject(r1);
		freeReplyObject(r2);
		x++;
	}
	res = median(v, k);
	free(v);
	return res;
}

static const int nremote[] = { 1, 2, 4 };
#define NR	3

int main(int argc, char **argv)
{
	size_t n = argc > 1 ? strtoul(argv[1], NULL, 0) : 100000;
	int rounds = argc > 2 ? atoi(argv[2]) : 5, i, k, w;
	size_t npy = argc > 3 ? strtoul(argv[3], NULL, 0) : 20000;
	struct mpq_manager_attr ma = { 0 };
	struct mpq_pool_remote rr[NR];
	struct mpq_pool_attr ra[NR];
	struct mpq_pool *rp[NR];
	double *rmap[NR], *rapp[NR], *pyc[NR], *pyk[NR], *pyr[NR], py[3];
	pid_t wpid[8];
	int nw = 0;
	char addr[64], pname[NR][16];
	struct mpq_pool_remote rem = { 0 };
	struct mpq_pool_attr la = { .processes = 2 };
	struct mpq_pool_attr da = { .processes = 2, .remote = &rem };
	struct mpq_manager *m, *pm;
	struct mpq_pool *lp, *dp;
	double *l, *d, *c, *al, *ad, *pg, *ec, *rw;
	redisContext *raw;
	pid_t raw_echo;
	char raw_ns[64];
	struct mpq_manager_queue_attr eqa = { .lease_ns = MPQ_MANAGER_NO_LEASE };
	struct mpq_manager_queue *ea, *eb;
	pid_t echo;
	uint64_t *in;
	struct iovec *iov;
	int ret;

	mpq_init(&argc, &argv);
	/* TCP loopback, as Python's BaseManager and as other machines. */
	for (i = 0; i < 20; i++) {
		snprintf(addr, sizeof(addr), "tcp://127.0.0.1:%d",
			 20000 + (getpid() * 7 + i * 131) % 30000);
		ma.address = addr;
		ret = mpq_manager_start(&m, &ma);
		if (ret != -EADDRINUSE)
			break;
	}
	if (ret) {
		fprintf(stderr, "manager: %s\n", mpq_strerror(ret));
		return 1;
	}
	rem.manager = m;
	/* A client of the TCP address, as the pool and its workers are. */
	ret = mpq_manager_connect(&pm, mpq_manager_address(m),
				  mpq_manager_authkey(m), 0);
	if (ret) {
		fprintf(stderr, "connect: %s\n", mpq_strerror(ret));
		return 1;
	}
	in = calloc(n, sizeof(*in));
	iov = calloc(n, sizeof(*iov));
	l = calloc((size_t)rounds, sizeof(double));
	d = calloc((size_t)rounds, sizeof(double));
	c = calloc((size_t)rounds, sizeof(double));
	al = calloc((size_t)rounds, sizeof(double));
	ad = calloc((size_t)rounds, sizeof(double));
	pg = calloc((size_t)rounds, sizeof(double));
	ec = calloc((size_t)rounds, sizeof(double));
	rw = calloc((size_t)rounds, sizeof(double));
	for (size_t x = 0; x < n; x++) {
		in[x] = x;
		iov[x].iov_base = &in[x];
		iov[x].iov_len = 8;
	}
	echo = echo_start(m);
	if (mpq_manager_queue(pm, "echo.in", &eqa, &ea) ||
	    mpq_manager_queue(pm, "echo.out", &eqa, &eb)) {
		fprintf(stderr, "echo queues failed\n");
		return 1;
	}
	raw_echo = raw_echo_start(m);
	raw = raw_connect(m, raw_ns, sizeof(raw_ns));
	if (!raw) {
		fprintf(stderr, "hiredis connection failed\n");
		return 1;
	}
	if (mpq_pool_new(&lp, &la) || mpq_pool_new(&dp, &da)) {
		fprintf(stderr, "pools failed\n");
		return 1;
	}
	/*
	 * One pool per worker count, each with its own remote workers (a
	 * worker serves the pool it is named): processes = k, so that the
	 * default chunksize is Python's for k workers.
	 */
	for (k = 0; k < NR; k++) {
		snprintf(pname[k], sizeof(pname[k]), "bench%d", nremote[k]);
		memset(&rr[k], 0, sizeof(rr[k]));
		memset(&ra[k], 0, sizeof(ra[k]));
		rr[k].manager = m;
		rr[k].name = pname[k];
		rr[k].flags = MPQ_POOL_REMOTE_ONLY;
		ra[k].processes = nremote[k];
		ra[k].remote = &rr[k];
		if (mpq_pool_new(&rp[k], &ra[k])) {
			fprintf(stderr, "remote pool failed\n");
			return 1;
		}
		for (w = 0; w < nremote[k]; w++)
			wpid[nw++] = start_worker(m, pname[k]);
		rmap[k] = calloc((size_t)rounds, sizeof(double));
		rapp[k] = calloc((size_t)rounds, sizeof(double));
		pyc[k] = calloc((size_t)rounds, sizeof(double));
		pyk[k] = calloc((size_t)rounds, sizeof(double));
		pyr[k] = calloc((size_t)rounds, sizeof(double));
		/* Every worker joined before we measure: a warm-up map. */
		map_rate(rp[k], iov, n < 1000 ? n : 1000);
	}
	for (i = 0; i < rounds; i++) {
		l[i] = map_rate(lp, iov, n);
		d[i] = map_rate(dp, iov, n);
		c[i] = npy ? cpython_rate(n) : 0;
		al[i] = apply_us(lp, 200);
		ad[i] = apply_us(dp, 200);
		pg[i] = ping_us(pm, 200);
		ec[i] = echo_us(ea, eb, 200);
		rw[i] = raw_echo_us(raw, raw_ns, 200);
		for (k = 0; k < NR; k++) {
			rmap[k][i] = map_rate(rp[k], iov, n);
			rapp[k][i] = apply_us(rp[k], 200);
			if (npy)
				cpython_dist(nremote[k], npy, py);
			else
				py[0] = py[1] = py[2] = 0;
			pyc[k][i] = py[0];
			pyk[k][i] = py[1];
			pyr[k][i] = py[2];
		}
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
	printf("  one Redis round trip (PING)    %12.1f   (%s)\n",
	       median(pg, rounds), mpq_manager_address(m));
	printf("  by hand: put, get, put, get    %12.1f   (two queues, a "
	       "process between)\n", median(ec, rounds));
	printf("  floor: the same by hiredis     %12.1f   (pipelined, "
	       "no script: %.2fx a PING)\n", median(rw, rounds),
	       median(rw, rounds) / median(pg, rounds));
	printf("remote workers (--mpq-worker, TCP loopback) vs Python's "
	       "BaseManager task/result queues\n"
	       "(map: mpq %zu items, Python %zu; tasks/s; apply/rtt: us)\n",
	       n, npy);
	printf("  workers  mpq map   py classic  py chunked  mpq/classic "
	       "mpq/chunked  mpq apply  py rtt\n");
	for (k = 0; k < NR; k++) {
		double a = median(rmap[k], rounds), b = median(pyc[k], rounds);
		double c2 = median(pyk[k], rounds);

		printf("  %7d %9.0f %12.0f %11.0f %11.1fx %10.1fx %10.1f %7.1f\n",
		       nremote[k], a, b, c2, b > 0 ? a / b : 0,
		       c2 > 0 ? a / c2 : 0, median(rapp[k], rounds),
		       median(pyr[k], rounds));
	}
	printf("apply, 1 remote worker: %.2fx a Redis round trip (goal: at "
	       "most 2x), %.2fx the same exchange by hand, %.2fx its floor "
	       "by hiredis\n",
	       median(rapp[0], rounds) / median(pg, rounds),
	       median(rapp[0], rounds) / median(ec, rounds),
	       median(rapp[0], rounds) / median(rw, rounds));
	kill(echo, SIGKILL);
	waitpid(echo, NULL, 0);
	kill(raw_echo, SIGKILL);
	waitpid(raw_echo, NULL, 0);
	redisFree(raw);
	mpq_manager_queue_free(ea);
	mpq_manager_queue_free(eb);
	for (k = 0; k < NR; k++)
		mpq_pool_free(rp[k]);
	for (w = 0; w < nw; w++) {
		kill(wpid[w], SIGTERM);
		waitpid(wpid[w], NULL, 0);
	}
	mpq_pool_free(lp);
	mpq_pool_free(dp);
	mpq_manager_free(pm);
	mpq_manager_shutdown(m);
	return 0;
}
