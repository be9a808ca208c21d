// SPDX-License-Identifier: GPL-2.0
/*
 * The promises of mpq_pool, one test each: Python's Pool semantics (map
 * and imap order, imap_unordered completeness, callbacks exactly once,
 * initializer once per worker, maxtasksperchild, chunksize, close, join,
 * terminate, timeouts) on both start methods, and what Python's Pool does
 * not keep: a worker killed or crashing mid-task fails only that task, and
 * nothing waits forever.
 *
 * Spawned workers are this test binary executed again: mpq_init() runs
 * from a constructor, after MPQ_TASK's registrations, and in a worker runs
 * it and exits before the harness starts. Workers report to the test
 * through mpq queues whose handles travel in the environment (a spawned
 * worker inherits environ and the exported fds; a forked one everything).
 * Waits are bounded so that a bug fails a test rather than hanging it;
 * nothing here measures time.
 */
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>

#include "kselftest_harness.h"
#include "helpers.h"

static void __attribute__((constructor)) run_spawned_worker(void)
{
	mpq_init(NULL, NULL);
}

#define BOUND		(60 * NSEC_PER_SEC)	/* a wait that must not hang */
#define PIDQ_ENV	"MPQ_POOL_TEST_PIDQ"
#define TOKENQ_ENV	"MPQ_POOL_TEST_TOKENS"
#define STORM_ENV	"MPQ_POOL_TEST_STORM"
#define INITBAD_ENV	"MPQ_POOL_TEST_INITBAD"

/* What an item of the "work" task does besides returning value + 1. */
enum role {
	ROLE_PLAIN,
	ROLE_FAIL,		/* fail with -EDOM and a message */
	ROLE_VICTIM,		/* report the pid on the pid queue, then pause */
	ROLE_TOKEN_VICTIM,	/* a victim only if it takes a token */
	ROLE_SEGV,		/* crash with SIGSEGV */
	ROLE_EXIT,		/* _exit(3) in the middle of the task */
	ROLE_SLEEP,		/* sleep value ms first */
	ROLE_PID,		/* return the worker's pid, not value + 1 */
	ROLE_STORM,		/* wait up to 1 ms for the killer to stop */
	ROLE_GATE,		/* wait for the same event, up to BOUND */
};

struct work {
	int64_t value;
	int32_t role;
	int32_t __pad;
};

static struct mpq_queue *queue_from_env(const char *name)
{
	struct mpq_queue *q;
	const char *h = getenv(name);

	if (!h || mpq_queue_import(&q, h))
		return NULL;
	return q;
}

static void report_pid_and_pause(void)
{
	struct mpq_queue *q = queue_from_env(PIDQ_ENV);
	pid_t pid = getpid();

	if (q)
		mpq_queue_put(q, &pid, sizeof(pid), MPQ_FOREVER);
	for (;;)
		pause();
}

/* A token from the token queue (its byte), or 0 if none is left. */
static char take_token(void)
{
	struct mpq_queue *q = queue_from_env(TOKENQ_ENV);
	char c = 0;
	size_t len = 1;

	if (!q)
		return 0;
	if (mpq_queue_get_nowait(q, &c, &len) || len != 1 || !c)
		c = 0;
	mpq_queue_free(q);
	return c;
}

/*
 * Wait up to timeout_ns for the event named by STORM_ENV. While the
 * killer runs, items take up to a millisecond each (the killer sets the
 * event when it stops), so that a map outlasts the storm; gated items
 * wait until the test opens the gate.
 */
static void storm_pace(int64_t timeout_ns)
{
	static struct mpq_event *over;
	const char *h = getenv(STORM_ENV);

	if (!over && h && mpq_event_import(&over, h))
		over = NULL;
	if (over)
		mpq_event_wait(over, timeout_ns);
}

/* The storm's initializer: slow while it lasts, so that kills land in it. */
static int storm_init(const void *arg, size_t len)
{
	storm_pace(NSEC_PER_MSEC);
	return 0;
}
MPQ_TARGET(storm_init);

static void crash(void)
{
	/* An address no sanitizer checks, so that the signal is what ends us. */
	static volatile uintptr_t where = 16;

	signal(SIGSEGV, SIG_DFL);
	*(volatile int *)where = 1;
}

static int work(const void *arg, size_t len, struct mpq_task *t)
{
	struct work w;
	int64_t v;
	int32_t pid;

	if (len != sizeof(w))
		return mpq_task_error(t, -EINVAL, "work: %zu bytes", len);
	memcpy(&w, arg, sizeof(w));
	switch (w.role) {
	case ROLE_FAIL:
		return mpq_task_error(t, -EDOM, "no good: %lld",
				      (long long)w.value);
	case ROLE_VICTIM:
		report_pid_and_pause();
		break;
	case ROLE_TOKEN_VICTIM:
		if (take_token())
			report_pid_and_pause();
		break;
	case ROLE_SEGV:
		crash();
		break;
	case ROLE_EXIT:
		_exit(3);
	case ROLE_SLEEP:
		sleep_ms((int)w.value);
		break;
	case ROLE_PID:
		pid = getpid();
		return mpq_task_return(t, &pid, sizeof(pid));
	case ROLE_STORM:
		storm_pace(NSEC_PER_MSEC);
		break;
	case ROLE_GATE:
		storm_pace(BOUND);
		break;
	}
	v = w.value + 1;
	return mpq_task_return(t, &v, sizeof(v));
}
MPQ_TASK(work);

static int64_t plus_one(int64_t x)
{
	return x + 1;
}
MPQ_TASK_VALUE(plus_one, int64_t, int64_t);

/*
 * Value tasks that die at one argument, inside the loop that
 * MPQ_TASK_VALUE() registers (mpq_register_task_loop()): the worker runs
 * a whole segment through it, with no call per item.
 */
#define LOOP_VICTIM	4321

static int64_t segv_at_victim(int64_t x)
{
	if (x == LOOP_VICTIM)
		crash();
	return x + 1;
}
MPQ_TASK_VALUE(segv_at_victim, int64_t, int64_t);

static int64_t killed_at_victim(int64_t x)
{
	if (x == LOOP_VICTIM)
		raise(SIGKILL);
	return x + 1;
}
MPQ_TASK_VALUE(killed_at_victim, int64_t, int64_t);

/* A map_values's arrays: in[i] = i, out[i] = -1 (untouched). 0 or -1. */
static int values_make(size_t n, int64_t **in, int64_t **out)
{
	size_t i;

	*in = calloc(n, sizeof(**in));
	*out = calloc(n, sizeof(**out));
	if (!*in || !*out)
		return -1;
	for (i = 0; i < n; i++) {
		(*in)[i] = (int64_t)i;
		(*out)[i] = -1;
	}
	return 0;
}

/* Slow enough (a fraction of a microsecond) that kills land in loops. */
static int64_t slow_plus_one(int64_t x)
{
	volatile int k;

	for (k = 0; k < 200; k++)
		;
	return x + 1;
}
MPQ_TASK_VALUE(slow_plus_one, int64_t, int64_t);

/* Never registered: a spawned worker cannot find them. */
static int unregistered(const void *arg, size_t len, struct mpq_task *t)
{
	return 0;
}

static int unregistered_init(const void *arg, size_t len)
{
	return 0;
}

/* starmap: the sum of a tuple of int64 values. */
static int tuple_sum(const void *arg, size_t len, struct mpq_task *t)
{
	struct iovec v[8];
	int64_t sum = 0, x;
	int n, i;

	n = mpq_task_args(arg, len, v, 8);
	if (n < 0 || n > 8)
		return mpq_task_error(t, -EINVAL, "not a tuple");
	for (i = 0; i < n; i++) {
		if (v[i].iov_len != sizeof(x))
			return mpq_task_error(t, -EINVAL, "element %d", i);
		memcpy(&x, v[i].iov_base, sizeof(x));
		sum += x;
	}
	return mpq_task_return(t, &sum, sizeof(sum));
}
MPQ_TASK(tuple_sum);

/* A large value built from a large argument: each byte + 1, written in place. */
static int bytes_plus_one(const void *arg, size_t len, struct mpq_task *t)
{
	const unsigned char *in = arg;
	unsigned char *out;
	size_t i;
	int ret;

	ret = mpq_task_result_buf(t, len, (void **)&out);
	if (ret)
		return ret;
	for (i = 0; i < len; i++)
		out[i] = (unsigned char)(in[i] + 1);
	return 0;
}
MPQ_TASK(bytes_plus_one);

/* The task API's misuse: a second value is -EALREADY. */
static int return_twice(const void *arg, size_t len, struct mpq_task *t)
{
	int x = 1, ret;

	ret = mpq_task_return(t, &x, sizeof(x));
	if (ret)
		return ret;
	ret = mpq_task_return(t, &x, sizeof(x));
	return ret == -EALREADY ? 0 : mpq_task_error(t, -EPROTO, "%d", ret);
}
MPQ_TASK(return_twice);

/* Initializer: note the worker's pid on the queue named in its argument. */
static int initialized;

static int note_init(const void *arg, size_t len)
{
	struct mpq_queue *q;
	char handle[MPQ_HANDLE_MAX] = "";
	pid_t pid = getpid();

	if (len >= sizeof(handle))
		return -EINVAL;
	memcpy(handle, arg, len);
	if (mpq_queue_import(&q, handle))
		return -EBADF;
	mpq_queue_put(q, &pid, sizeof(pid), MPQ_FOREVER);
	mpq_queue_free(q);
	initialized++;
	return 0;
}
MPQ_TARGET(note_init);

static int failing_init(const void *arg, size_t len)
{
	return -ENOTSUP;
}
MPQ_TARGET(failing_init);

/*
 * A fork server's worker, starting: its server dies, then it does, so
 * the exit status the pool asks for is lost with the server.
 */
static void kill_server_then_self(void)
{
	pid_t server = getppid();

	kill(server, SIGKILL);
	while (getppid() == server)
		usleep(1000);
	raise(SIGKILL);
}

/*
 * An initializer that goes wrong on demand. A token 'f' from the token
 * queue: it fails once (-ENOTSUP); 'p': it reports its pid and pauses,
 * to be killed; 'k': a fork server's worker kills its server and itself. While the event named by INITBAD_ENV is set, it fails
 * every time as its argument says: "f" returns -ENOTSUP (and puts its pid
 * on the pid queue, if there is one), "c" crashes.
 */
static int flaky_init(const void *arg, size_t len)
{
	const char *h = getenv(INITBAD_ENV);
	struct mpq_event *bad;
	int set = 0;

	if (h && !mpq_event_import(&bad, h)) {
		set = mpq_event_is_set(bad) == 1;
		mpq_event_free(bad);
	}
	if (set && len == 1 && *(const char *)arg == 'c')
		crash();
	if (set) {
		struct mpq_queue *q = queue_from_env(PIDQ_ENV);
		pid_t pid = getpid();

		/* Say so, if the test listens (never waiting for room). */
		if (q) {
			mpq_queue_put(q, &pid, sizeof(pid), 0);
			mpq_queue_free(q);
		}
		return -ENOTSUP;
	}
	switch (take_token()) {
	case 'f':
		return -ENOTSUP;
	case 'p':
		report_pid_and_pause();
		break;
	case 'k':
		kill_server_then_self();
	}
	return 0;
}
MPQ_TARGET(flaky_init);

/* The worker's pid, if the initializer ran in it exactly once. */
static int pid_if_initialized(const void *arg, size_t len, struct mpq_task *t)
{
	int32_t pid = getpid();

	if (initialized != 1)
		return mpq_task_error(t, -EPROTO, "initialized %d times",
				      initialized);
	return mpq_task_return(t, &pid, sizeof(pid));
}
MPQ_TASK(pid_if_initialized);

/* ---- helpers ------------------------------------------------------------ */

static struct mpq_pool *pool_make(int method, int processes, uint32_t maxtasks,
				  uint32_t flags)
{
	struct mpq_pool_attr attr = {
		.processes = processes,
		.start_method = method,
		.maxtasksperchild = maxtasks,
		.flags = flags,
	};
	struct mpq_pool *p;

	return mpq_pool_new(&p, &attr) ? NULL : p;
}

/* n work items (value i, role PLAIN) with their iovecs. */
struct items {
	struct work *w;
	struct iovec *iov;
	size_t n;
};

static int items_make(struct items *it, size_t n)
{
	size_t i;

	it->n = n;
	it->w = calloc(n ? n : 1, sizeof(*it->w));
	it->iov = calloc(n ? n : 1, sizeof(*it->iov));
	if (!it->w || !it->iov)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		it->w[i].value = (int64_t)i;
		it->iov[i].iov_base = &it->w[i];
		it->iov[i].iov_len = sizeof(it->w[i]);
	}
	return 0;
}

static void items_free(struct items *it)
{
	free(it->w);
	free(it->iov);
}

/* Item i of a complete result as an int64 (or the error code). */
static int64_t value_of(struct mpq_async_result *r, size_t i, int *err)
{
	const void *v;
	size_t len;
	int64_t x = -1;

	*err = mpq_async_result_value(r, i, &v, &len);
	if (!*err && len == sizeof(x))
		memcpy(&x, v, sizeof(x));
	else if (!*err)
		*err = -EMSGSIZE;
	return x;
}

/* How many items of r are not value i + 1 (skip: an index to leave out). */
static size_t wrong_values(struct mpq_async_result *r, size_t n, size_t skip)
{
	size_t i, wrong = 0;
	int err;

	for (i = 0; i < n; i++)
		if (i != skip && (value_of(r, i, &err) != (int64_t)i + 1 || err))
			wrong++;
	return wrong;
}

/* A queue exported to every spawned child and named in the environment. */
static struct mpq_queue *env_queue(const char *name, uint32_t maxsize)
{
	struct mpq_queue_attr qa = { .maxsize = maxsize, .msgsize = 64 };
	char handle[MPQ_HANDLE_MAX];
	struct mpq_queue *q;

	if (mpq_queue_new(&q, &qa))
		return NULL;
	if (mpq_queue_export(q, handle, sizeof(handle)) < 0 ||
	    setenv(name, handle, 1)) {
		mpq_queue_free(q);
		return NULL;
	}
	return q;
}

static pid_t get_pid(struct mpq_queue *q)
{
	pid_t pid = -1;
	size_t len = sizeof(pid);

	if (mpq_queue_get(q, &pid, &len, BOUND))
		return -1;
	return pid;
}

/* ---- the tests that both start methods must pass ------------------------- */

FIXTURE(method) {};
FIXTURE_SETUP(method) {}
FIXTURE_TEARDOWN(method) {}
FIXTURE_VARIANT(method) {
	int start_method;
};
FIXTURE_VARIANT_ADD(method, fork) {
	.start_method = MPQ_START_FORK,
};
FIXTURE_VARIANT_ADD(method, spawn) {
	.start_method = MPQ_START_SPAWN,
};
FIXTURE_VARIANT_ADD(method, forkserver) {
	.start_method = MPQ_START_FORKSERVER,
};

TEST_F(method, map_returns_results_in_the_order_of_the_arguments)
{
	static const size_t chunks[] = { 0, 1, 7, 100000 };
	struct mpq_async_result *r;
	struct mpq_pool *p;
	struct items it;
	unsigned int k;

	ASSERT_EQ(0, items_make(&it, 10000));
	p = pool_make(variant->start_method, 3, 0, 0);
	ASSERT_NE(NULL, p);
	for (k = 0; k < sizeof(chunks) / sizeof(chunks[0]); k++) {
		ASSERT_EQ(0, mpq_pool_map(p, work, it.iov, it.n, chunks[k], &r));
		EXPECT_EQ((ssize_t)it.n, mpq_async_result_count(r));
		EXPECT_EQ(0, wrong_values(r, it.n, SIZE_MAX));
		mpq_async_result_free(r);
	}
	mpq_pool_free(p);
	items_free(&it);
}

TEST_F(method, map_values_fills_fixed_size_results_in_order)
{
	int64_t *in = malloc(100000 * sizeof(*in));
	int64_t *out = calloc(100000, sizeof(*out));
	struct mpq_pool *p;
	size_t i, wrong = 0;

	ASSERT_NE(NULL, in);
	ASSERT_NE(NULL, out);
	for (i = 0; i < 100000; i++)
		in[i] = (int64_t)i * 3;
	p = pool_make(variant->start_method, 2, 0, 0);
	ASSERT_NE(NULL, p);
	ASSERT_EQ(0, mpq_pool_map_values(p, plus_one_task, in, sizeof(*in),
					 out, sizeof(*out), 100000, 0));
	for (i = 0; i < 100000; i++)
		wrong += out[i] != (int64_t)i * 3 + 1;
	EXPECT_EQ(0, wrong);
	/* A value of another size fails that item, not the others. */
	EXPECT_EQ(-EMSGSIZE, mpq_pool_map_values(p, plus_one_task, in,
						 sizeof(*in), out, 4, 10, 0));
	/* An argument of another size is the task's -EINVAL. */
	EXPECT_EQ(-EINVAL, mpq_pool_map_values(p, plus_one_task, in, 4, out,
					       sizeof(*out), 10, 0));
	mpq_pool_free(p);
	free(in);
	free(out);
}

TEST_F(method, imap_yields_results_in_the_order_of_the_arguments)
{
	struct mpq_pool_iter *iter;
	struct mpq_pool *p;
	struct items it;
	const void *v;
	size_t i, len, index, wrong = 0;
	int64_t x;
	int ret;

	ASSERT_EQ(0, items_make(&it, 300));
	/* Items finish out of order: the early ones sleep longest. */
	for (i = 0; i < 30; i++) {
		it.w[i].role = ROLE_SLEEP;
		it.w[i].value = (int64_t)(30 - i);
	}
	p = pool_make(variant->start_method, 3, 0, 0);
	ASSERT_NE(NULL, p);
	ASSERT_EQ(0, mpq_pool_imap(p, work, it.iov, it.n, 0, &iter));
	for (i = 0; i < it.n; i++) {
		ret = mpq_pool_iter_next(iter, BOUND, &v, &len, &index);
		ASSERT_EQ(1, ret);
		ASSERT_EQ(i, index);
		memcpy(&x, v, sizeof(x));
		wrong += x != it.w[i].value + 1;
	}
	EXPECT_EQ(0, wrong);
	EXPECT_EQ(0, mpq_pool_iter_next(iter, BOUND, &v, &len, &index));
	mpq_pool_iter_free(iter);
	mpq_pool_free(p);
	items_free(&it);
}

TEST_F(method, imap_unordered_yields_every_result_exactly_once)
{
	struct mpq_pool_iter *iter;
	unsigned char *seen;
	struct mpq_pool *p;
	struct items it;
	const void *v;
	size_t i, len, index, wrong = 0, dup = 0;
	int64_t x;

	ASSERT_EQ(0, items_make(&it, 5000));
	for (i = 0; i < 10; i++) {
		it.w[i].role = ROLE_SLEEP;
		it.w[i].value = 20;
	}
	seen = calloc(it.n, 1);
	ASSERT_NE(NULL, seen);
	p = pool_make(variant->start_method, 2, 0, 0);
	ASSERT_NE(NULL, p);
	ASSERT_EQ(0, mpq_pool_imap_unordered(p, work, it.iov, it.n, 3, &iter));
	for (i = 0; i < it.n; i++) {
		ASSERT_EQ(1, mpq_pool_iter_next(iter, BOUND, &v, &len, &index));
		ASSERT_LT(index, it.n);
		dup += seen[index]++;
		memcpy(&x, v, sizeof(x));
		wrong += x != it.w[index].value + 1;
	}
	EXPECT_EQ(0, dup);
	EXPECT_EQ(0, wrong);
	EXPECT_EQ(0, mpq_pool_iter_next(iter, 0, &v, &len, &index));
	mpq_pool_iter_free(iter);
	mpq_pool_free(p);
	free(seen);
	items_free(&it);
}

TEST_F(method, apply_returns_the_value_and_apply_async_gets_each_its_own)
{
	struct mpq_async_result *r[100];
	struct work w = { .value = 41 };
	struct mpq_pool *p;
	void *v = NULL;
	int i, err;

	p = pool_make(variant->start_method, 2, 0, 0);
	ASSERT_NE(NULL, p);
	ASSERT_EQ(8, mpq_pool_apply(p, work, &w, sizeof(w), &v));
	EXPECT_EQ(42, *(int64_t *)v);
	free(v);
	for (i = 0; i < 100; i++) {
		w.value = i * 10;
		/* The argument is copied: w may change at once. */
		ASSERT_EQ(0, mpq_pool_apply_async(p, work, &w, sizeof(w), NULL,
						  &r[i]));
	}
	for (i = 99; i >= 0; i--) {
		ASSERT_EQ(0, mpq_async_result_get(r[i], BOUND));
		EXPECT_EQ(1, mpq_async_result_ready(r[i]));
		EXPECT_EQ(1, mpq_async_result_successful(r[i]));
		EXPECT_EQ(i * 10 + 1, value_of(r[i], 0, &err));
		EXPECT_EQ(0, err);
		mpq_async_result_free(r[i]);
	}
	mpq_pool_free(p);
}

/*
 * A pool makes its small jobs in the memory of freed ones (lib/pool_slab.c):
 * after a map whose job is done and freed, and after bursts that outgrow
 * the first chunk and are all freed (the pool starts again from its first
 * chunk), each new job must start clean. One made in reused memory that
 * was not cleared read as ready, with no value, at once.
 */
TEST(jobs_made_where_freed_ones_were_start_clean)
{
	/* 5,000 jobs reach the first 2 MiB chunk (pool_slab.c). */
	static const size_t bursts[] = { 1, 5000, 3, 5000, 50 };
	struct mpq_async_result **r = calloc(5000, sizeof(*r));
	int64_t in[64], out[64];
	struct mpq_pool *p;
	struct work w = { 0 };
	size_t i, k, wrong;
	int err;

	ASSERT_NE(NULL, r);
	for (i = 0; i < 64; i++)
		in[i] = (int64_t)i;
	p = pool_make(MPQ_START_FORK, 2, 0, 0);
	ASSERT_NE(NULL, p);
	for (k = 0; k < sizeof(bursts) / sizeof(bursts[0]); k++) {
		ASSERT_EQ(0, mpq_pool_map_values(p, plus_one_task, in,
						 sizeof(*in), out, sizeof(*out),
						 64, 0));
		for (i = 0, wrong = 0; i < 64; i++)
			wrong += out[i] != in[i] + 1;
		EXPECT_EQ(0, wrong);
		for (i = 0; i < bursts[k]; i++) {
			w.value = (int64_t)i;
			ASSERT_EQ(0, mpq_pool_apply_async(p, work, &w, sizeof(w),
							  NULL, &r[i]));
		}
		for (i = 0, wrong = 0; i < bursts[k]; i++) {
			ASSERT_EQ(0, mpq_async_result_get(r[i], BOUND));
			wrong += value_of(r[i], 0, &err) != (int64_t)i + 1 || err;
			mpq_async_result_free(r[i]);
		}
		EXPECT_EQ(0, wrong) TH_LOG("burst %zu of %zu", k, bursts[k]);
	}
	mpq_pool_free(p);
	free(r);
}

/* Per call: how often each callback ran, and whether the result was ready. */
struct calls {
	int ok, err, code, ready_in_callback;
	char msg[128];
};

static void on_ok(struct mpq_async_result *r, void *data)
{
	struct calls *c = data;

	__atomic_add_fetch(&c->ok, 1, __ATOMIC_SEQ_CST);
	c->ready_in_callback = mpq_async_result_ready(r);
}

static void on_err(struct mpq_async_result *r, int err, const char *msg,
		   void *data)
{
	struct calls *c = data;

	c->code = err;
	snprintf(c->msg, sizeof(c->msg), "%s", msg);
	__atomic_add_fetch(&c->err, 1, __ATOMIC_SEQ_CST);
}

TEST_F(method, callback_or_error_callback_runs_exactly_once_before_get_returns)
{
	struct mpq_pool_callbacks cb = { .callback = on_ok,
					 .error_callback = on_err };
	struct mpq_async_result *r[200], *m[10];
	struct calls *c = calloc(210, sizeof(*c));
	struct mpq_pool *p;
	struct work w = { 0 };
	struct items it;
	int i, bad = 0;

	ASSERT_NE(NULL, c);
	ASSERT_EQ(0, items_make(&it, 50));
	it.w[17].role = ROLE_FAIL;
	p = pool_make(variant->start_method, 2, 0, 0);
	ASSERT_NE(NULL, p);
	for (i = 0; i < 200; i++) {
		w.value = i;
		w.role = i % 3 == 0 ? ROLE_FAIL : ROLE_PLAIN;
		cb.data = &c[i];
		ASSERT_EQ(0, mpq_pool_apply_async(p, work, &w, sizeof(w), &cb,
						  &r[i]));
	}
	for (i = 0; i < 10; i++) {
		cb.data = &c[200 + i];
		/* Every other map holds the failing item. */
		ASSERT_EQ(0, mpq_pool_map_async(p, work, it.iov,
						i % 2 ? it.n : 17, 4, &cb,
						&m[i]));
	}
	for (i = 0; i < 200; i++) {
		int want = i % 3 == 0 ? -EDOM : 0;

		EXPECT_EQ(want, mpq_async_result_get(r[i], BOUND));
		/* Python sets the result ready after the callback: it ran. */
		bad += c[i].ok + c[i].err != 1;
		bad += want ? c[i].err != 1 || c[i].code != -EDOM : c[i].ok != 1;
		bad += !want && c[i].ready_in_callback != 0;
		mpq_async_result_free(r[i]);
	}
	for (i = 0; i < 10; i++) {
		struct calls *k = &c[200 + i];

		EXPECT_EQ(i % 2 ? -EDOM : 0, mpq_async_result_get(m[i], BOUND));
		bad += k->ok + k->err != 1 || (i % 2 ? k->err : k->ok) != 1;
		if (i % 2)
			EXPECT_STREQ("no good: 17", k->msg);
		mpq_async_result_free(m[i]);
	}
	EXPECT_EQ(0, bad);
	/* Nothing runs twice after the results are gone either. */
	ASSERT_EQ(0, mpq_pool_close(p));
	ASSERT_EQ(0, mpq_pool_join(p, BOUND));
	for (i = 0, bad = 0; i < 210; i++)
		bad += c[i].ok + c[i].err != 1;
	EXPECT_EQ(0, bad);
	mpq_pool_free(p);
	items_free(&it);
	free(c);
}

TEST_F(method, a_failed_task_gives_its_code_and_message_to_get_and_the_item)
{
	struct mpq_async_result *r;
	struct mpq_pool *p;
	struct items it;
	const char *msg;
	const void *v;
	size_t len;
	int err;

	ASSERT_EQ(0, items_make(&it, 20));
	it.w[5].role = ROLE_FAIL;
	it.w[12].role = ROLE_FAIL;
	p = pool_make(variant->start_method, 2, 0, 0);
	ASSERT_NE(NULL, p);
	/* The first failed item by index is what map returns. */
	EXPECT_EQ(-EDOM, mpq_pool_map(p, work, it.iov, it.n, 1, &r));
	ASSERT_NE(NULL, r);
	EXPECT_EQ(0, mpq_async_result_successful(r));
	EXPECT_EQ(-EDOM, mpq_async_result_error(r, 5, &msg));
	EXPECT_STREQ("no good: 5", msg);
	EXPECT_EQ(-EDOM, mpq_async_result_value(r, 12, &v, &len));
	EXPECT_EQ(NULL, v);
	EXPECT_EQ(0, mpq_async_result_error(r, 6, &msg));
	EXPECT_STREQ("", msg);
	EXPECT_EQ(7, value_of(r, 6, &err));
	EXPECT_EQ(-ERANGE, mpq_async_result_value(r, 20, &v, &len));
	mpq_async_result_free(r);
	/* apply: the code is the return value. */
	EXPECT_EQ(-EDOM, mpq_pool_apply(p, work, &it.w[5], sizeof(it.w[5]),
					(void **)&v));
	EXPECT_EQ(NULL, v);
	mpq_pool_free(p);
	items_free(&it);
}

TEST_F(method, the_initializer_runs_once_in_every_worker)
{
	struct mpq_pool_attr attr = {
		.processes = 3,
		.start_method = variant->start_method,
		.initializer = note_init,
		.maxtasksperchild = 5,
	};
	struct mpq_queue_attr qa = { .maxsize = 4096, .msgsize = 8 };
	char handle[MPQ_HANDLE_MAX];
	pid_t inits[4096], pid;
	struct mpq_async_result *r;
	struct mpq_queue *q;
	struct mpq_pool *p;
	struct items it;
	size_t n = 0, i, k, len, unknown = 0, twice = 0;
	const void *v;

	ASSERT_EQ(0, mpq_queue_new(&q, &qa));
	ASSERT_LT(0, mpq_queue_export(q, handle, sizeof(handle)));
	attr.initarg = handle;
	attr.initarg_len = strlen(handle);
	ASSERT_EQ(0, mpq_pool_new(&p, &attr));
	ASSERT_EQ(0, items_make(&it, 60));
	ASSERT_EQ(0, mpq_pool_map(p, pid_if_initialized, it.iov, it.n, 1, &r));
	ASSERT_EQ(0, mpq_pool_close(p));
	ASSERT_EQ(0, mpq_pool_join(p, BOUND));
	for (;;) {
		len = sizeof(pid);
		if (mpq_queue_get_nowait(q, &pid, &len))
			break;
		for (k = 0; k < n; k++)
			twice += inits[k] == pid;
		inits[n++] = pid;
	}
	/* 60 tasks, at most 5 per worker: 12 workers at least. */
	EXPECT_LE(12, n);
	EXPECT_EQ(0, twice);
	for (i = 0; i < it.n; i++) {
		ASSERT_EQ(0, mpq_async_result_value(r, i, &v, &len));
		memcpy(&pid, v, sizeof(pid));
		for (k = 0; k < n && inits[k] != pid; k++)
			;
		unknown += k == n;
	}
	EXPECT_EQ(0, unknown);
	mpq_async_result_free(r);
	mpq_pool_free(p);
	mpq_queue_free(q);
	items_free(&it);
}

TEST_F(method, maxtasksperchild_replaces_a_worker_after_that_many_tasks)
{
	pid_t pids[64];
	int uses[64] = { 0 };
	struct mpq_async_result *r;
	struct mpq_pool *p;
	struct items it;
	size_t i, n = 0, k, len, over = 0;
	const void *v;
	pid_t pid;

	ASSERT_EQ(0, items_make(&it, 40));
	for (i = 0; i < it.n; i++)
		it.w[i].role = ROLE_PID;
	p = pool_make(variant->start_method, 2, 2, 0);
	ASSERT_NE(NULL, p);
	ASSERT_EQ(0, mpq_pool_map(p, work, it.iov, it.n, 1, &r));
	for (i = 0; i < it.n; i++) {
		ASSERT_EQ(0, mpq_async_result_value(r, i, &v, &len));
		ASSERT_EQ(sizeof(pid), len);
		memcpy(&pid, v, sizeof(pid));
		for (k = 0; k < n && pids[k] != pid; k++)
			;
		if (k == n)
			pids[n++] = pid;
		uses[k]++;
	}
	for (k = 0; k < n; k++)
		over += uses[k] > 2;
	EXPECT_EQ(0, over);
	EXPECT_LE(20, n);
	mpq_async_result_free(r);
	mpq_pool_free(p);
	items_free(&it);
}

TEST_F(method, the_default_chunksize_is_pythons)
{
	struct mpq_async_result *r;
	struct mpq_pool_iter *iter;
	struct mpq_pool *p;
	struct items it;
	size_t i, runs = 0, len, index;
	pid_t pid, last = 0;
	const void *v;

	ASSERT_EQ(0, items_make(&it, 100));
	for (i = 0; i < it.n; i++)
		it.w[i].role = ROLE_PID;
	/* One task (chunk) per worker: a new pid starts each chunk. */
	p = pool_make(variant->start_method, 2, 1, 0);
	ASSERT_NE(NULL, p);
	ASSERT_EQ(0, mpq_pool_map(p, work, it.iov, it.n, 0, &r));
	for (i = 0; i < it.n; i++) {
		ASSERT_EQ(0, mpq_async_result_value(r, i, &v, &len));
		memcpy(&pid, v, sizeof(pid));
		/* divmod(100, 2 * 4) = (12, 4): chunks of 13. */
		if (i % 13 == 0) {
			EXPECT_NE(last, pid);
			runs++;
		} else {
			EXPECT_EQ(last, pid);
		}
		last = pid;
	}
	EXPECT_EQ(8, runs);
	mpq_async_result_free(r);
	/* imap's default is 1, as in Python. */
	ASSERT_EQ(0, mpq_pool_imap(p, work, it.iov, 6, 0, &iter));
	for (i = 0, runs = 0; i < 6; i++) {
		ASSERT_EQ(1, mpq_pool_iter_next(iter, BOUND, &v, &len, &index));
		memcpy(&pid, v, sizeof(pid));
		runs += pid != last;
		last = pid;
	}
	EXPECT_EQ(6, runs);
	mpq_pool_iter_free(iter);
	mpq_pool_free(p);
	items_free(&it);
}

/* Run a 100,000-item map whose victim item is killed by the test. */
static void map_with_a_kill(struct __test_metadata *_metadata, int method,
			    uint32_t flags, int tokens, int want)
{
	struct mpq_queue *pidq, *tokq = NULL;
	struct mpq_async_result *r;
	uint64_t seed = (uint64_t)now_ns() | 1;
	struct mpq_pool *p;
	struct items it;
	size_t victim;
	const char *msg;
	pid_t pid;
	int i;

	ASSERT_EQ(0, items_make(&it, 100000));
	/*
	 * Not among the first 1000, which the map after the kill runs again:
	 * a victim there paused its new worker for ever, and that map with
	 * it (1 run in 100 of each start method).
	 */
	victim = 1000 + rnd(&seed) % (it.n - 1000);
	it.w[victim].role = tokens ? ROLE_TOKEN_VICTIM : ROLE_VICTIM;
	pidq = env_queue(PIDQ_ENV, 8);
	ASSERT_NE(NULL, pidq);
	if (tokens) {
		tokq = env_queue(TOKENQ_ENV, 8);
		ASSERT_NE(NULL, tokq);
		for (i = 0; i < tokens; i++)
			ASSERT_EQ(0, mpq_queue_put(tokq, "t", 1, 0));
	}
	p = pool_make(method, 3, 0, flags);
	ASSERT_NE(NULL, p);
	ASSERT_EQ(0, mpq_pool_map_async(p, work, it.iov, it.n, 0, NULL, &r));
	for (i = 0; i < (tokens ? tokens : 1); i++) {
		pid = get_pid(pidq);
		ASSERT_LT(0, pid);
		ASSERT_EQ(0, kill(pid, SIGKILL));
	}
	EXPECT_EQ(want, mpq_async_result_get(r, BOUND));
	EXPECT_EQ(0, wrong_values(r, it.n, want ? victim : SIZE_MAX));
	if (want) {
		EXPECT_EQ(-EOWNERDEAD, mpq_async_result_error(r, victim, &msg));
		EXPECT_NE(NULL, strstr(msg, "SIGKILL"));
		EXPECT_NE(NULL, strstr(msg, "PoolWorker-"));
	}
	mpq_async_result_free(r);
	/*
	 * The pool goes on with a new worker in the dead one's place. Bounded,
	 * and on a timeout the processes are shown, so that a hang says where.
	 */
	ASSERT_EQ(0, mpq_pool_map_async(p, work, it.iov, 1000, 0, NULL, &r));
	i = mpq_async_result_get(r, BOUND);
	if (i == -ETIMEDOUT) {
		char cmd[160];

		snprintf(cmd, sizeof(cmd), "ps -o pid,ppid,stat,wchan:24,args "
			 "-L --ppid %d --pid %d >&2", (int)getpid(),
			 (int)getpid());
		TH_LOG("the map after the kill did not complete within %lld s",
		       (long long)(BOUND / NSEC_PER_SEC));
		if (system(cmd) < 0)
			TH_LOG("ps failed");
	}
	ASSERT_EQ(0, i);
	EXPECT_EQ(0, wrong_values(r, 1000, SIZE_MAX));
	mpq_async_result_free(r);
	mpq_pool_free(p);
	mpq_queue_free(pidq);
	if (tokq)
		mpq_queue_free(tokq);
	items_free(&it);
}

/*
 * Chunks of a quick task may travel together (the pool merges them while
 * the work it estimates stays small): each item still has its own value,
 * its own error, and only the item a crash interrupts fails; the items
 * after it in its chunk are run again elsewhere, never lost.
 */
TEST_F_TIMEOUT(method, merged_chunks_keep_each_items_value_and_failure, 120)
{
	struct mpq_async_result *r;
	struct mpq_pool *p;
	struct items it;
	size_t i, wrong = 0, n = 100000;
	int64_t *in, *out;
	int err;

	ASSERT_EQ(0, items_make(&it, 3000));
	in = calloc(n, sizeof(*in));
	out = calloc(n, sizeof(*out));
	ASSERT_NE(NULL, in);
	ASSERT_NE(NULL, out);
	p = pool_make(variant->start_method, 2, 0, 0);
	ASSERT_NE(NULL, p);
	/* Once, so that the pool knows the task is quick. */
	ASSERT_EQ(0, mpq_pool_map(p, work, it.iov, 1000, 1, &r));
	mpq_async_result_free(r);
	it.w[1234].role = ROLE_SEGV;
	it.w[2345].role = ROLE_FAIL;
	ASSERT_EQ(0, mpq_pool_map_async(p, work, it.iov, it.n, 1, NULL, &r));
	EXPECT_EQ(-EOWNERDEAD, mpq_async_result_get(r, BOUND));
	for (i = 0; i < it.n; i++) {
		int64_t v = value_of(r, i, &err);

		if (i == 1234) {
			EXPECT_EQ(-EOWNERDEAD, err);
		} else if (i == 2345) {
			EXPECT_EQ(-EDOM, err);
		} else {
			wrong += err || v != (int64_t)i + 1;
		}
	}
	EXPECT_EQ(0, wrong);
	mpq_async_result_free(r);
	/* Fixed-size values, chunks of one: every value where it belongs. */
	for (i = 0; i < n; i++)
		in[i] = (int64_t)i * 3;
	ASSERT_EQ(0, mpq_pool_map_values(p, plus_one_task, in, sizeof(*in),
					 out, sizeof(*out), n, 1));
	for (i = 0, wrong = 0; i < n; i++)
		wrong += out[i] != (int64_t)i * 3 + 1;
	EXPECT_EQ(0, wrong);
	mpq_pool_free(p);
	items_free(&it);
	free(in);
	free(out);
}

TEST_F_TIMEOUT(method, a_worker_killed_mid_map_fails_only_the_task_it_ran, 240)
{
	map_with_a_kill(_metadata, variant->start_method, 0, 0, -EOWNERDEAD);
}

TEST_F_TIMEOUT(method, with_retry_once_a_killed_task_runs_again_and_succeeds, 240)
{
	map_with_a_kill(_metadata, variant->start_method,
			MPQ_POOL_RETRY_ONCE, 1, 0);
}

TEST_F_TIMEOUT(method, with_retry_once_a_task_killed_twice_fails, 240)
{
	map_with_a_kill(_metadata, variant->start_method,
			MPQ_POOL_RETRY_ONCE, 2, -EOWNERDEAD);
}

/*
 * The killer: a process that watches for new children of the test (the
 * pool's workers, forked or spawned) in /proc and SIGKILLs each one it
 * finds after a random delay, none to 20 ms, so that workers die
 * at every instant of their start (forked, before and after the exec of
 * a spawned one, in the initializer, right after READY) or in a task. It
 * stops after max kills, or when the test closes stop; then it sets
 * over and writes how many signals it sent.
 */
struct killer {
	pid_t pid;
	int stop[2];
	int res[2];
};

struct victim {
	int pidfd;
	int64_t at;
};

#define KILLER_SEEN	8192
#define KILLER_VICTIMS	64

/* A random delay: none a quarter of the time, else 10 us to 20 ms. */
static int64_t killer_delay(uint64_t *seed)
{
	uint64_t r = rnd(seed), d;

	if (r % 4 == 0)
		return 0;
	d = 10000ULL << (r >> 8) % 11;
	return (int64_t)(d + (r >> 32) % d);
}

static void killer_scan(pid_t target, pid_t *seen, size_t *nseen,
			struct victim *v, size_t *nv, uint64_t *seed)
{
	struct dirent *d;
	DIR *dir = opendir("/proc");
	size_t k;
	pid_t pid;
	int fd;

	if (!dir)
		return;
	while ((d = readdir(dir)) && *nv < KILLER_VICTIMS) {
		pid = (pid_t)atoi(d->d_name);
		/* A fork server's workers are its children, not ours. */
		if (pid <= 0 || pid == getpid() ||
		    (stat_ppid(pid) != target &&
		     stat_ppid(stat_ppid(pid)) != target))
			continue;
		for (k = 0; k < *nseen && seen[k] != pid; k++)
			;
		if (k < *nseen)
			continue;
		if (*nseen < KILLER_SEEN)
			seen[(*nseen)++] = pid;
		/* The pidfd keeps the kill on this process, whatever the pid. */
		fd = (int)syscall(SYS_pidfd_open, pid, 0);
		if (fd < 0)
			continue;
		if (stat_ppid(pid) != target &&
		    stat_ppid(stat_ppid(pid)) != target) {
			close(fd);
			continue;
		}
		v[*nv].pidfd = fd;
		v[*nv].at = now_ns() + killer_delay(seed);
		(*nv)++;
	}
	closedir(dir);
}

static int killer_main(pid_t target, int stopfd, int resfd, uint64_t seed,
		       int max, struct mpq_event *over)
{
	static pid_t seen[KILLER_SEEN];
	struct victim v[KILLER_VICTIMS];
	struct pollfd pfd = { .fd = stopfd, .events = POLLIN };
	size_t nseen = 0, nv = 0, k;
	int kills = 0;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	while (kills < max && poll(&pfd, 1, 0) == 0) {
		killer_scan(target, seen, &nseen, v, &nv, &seed);
		for (k = 0; k < nv && kills < max;) {
			if (now_ns() < v[k].at) {
				k++;
				continue;
			}
			if (!syscall(SYS_pidfd_send_signal, v[k].pidfd, SIGKILL,
				     NULL, 0))
				kills++;
			close(v[k].pidfd);
			v[k] = v[--nv];
		}
		usleep((useconds_t)(rnd(&seed) % 300));
	}
	mpq_event_set(over);
	return write(resfd, &kills, sizeof(kills)) == sizeof(kills) ? 0 : 1;
}

/* Start the killer (before the pool: no thread of ours is forked). */
static int killer_start(struct killer *k, struct mpq_event *over,
			uint64_t seed, int max)
{
	pid_t target = getpid();

	if (pipe2(k->stop, O_CLOEXEC) || pipe2(k->res, O_CLOEXEC))
		return -errno;
	k->pid = fork();
	if (k->pid < 0)
		return -errno;
	if (k->pid == 0) {
		/* Else its poll never sees the stop pipe's hang-up. */
		close(k->stop[1]);
		close(k->res[0]);
		_exit(killer_main(target, k->stop[0], k->res[1], seed, max,
				  over));
	}
	close(k->stop[0]);
	close(k->res[1]);
	return 0;
}

/* Stop it; the number of signals it sent, or -1. */
static int killer_stop(struct killer *k)
{
	int kills = -1;

	/* Its poll sees the hang-up (a write could meet a killer gone). */
	close(k->stop[1]);
	if (read(k->res[0], &kills, sizeof(kills)) != sizeof(kills))
		kills = -1;
	close(k->res[0]);
	if (wait_child(k->pid, 10000) != 0)
		return -1;
	return kills;
}

/*
 * A map of n items while the killer sends max SIGKILLs to whatever
 * workers it finds: every item has its value, or -EOWNERDEAD for an
 * item whose worker was killed running it (at most one per kill), and
 * the pool goes on once the killer stops.
 */
static void map_in_a_storm(struct __test_metadata *_metadata, int method,
			   size_t n, int max)
{
	struct mpq_pool_attr attr = {
		.processes = 2,
		.start_method = method,
		.initializer = storm_init,
	};
	uint64_t seed = (uint64_t)now_ns() | 1;
	char handle[MPQ_HANDLE_MAX];
	struct mpq_async_result *r;
	struct mpq_event *over;
	struct killer k;
	struct mpq_pool *p;
	struct items it;
	size_t i, dead = 0, wrong = 0;
	const char *msg;
	int err, kills;
	int64_t v;

	TH_LOG("killer seed %llu", (unsigned long long)seed);
	ASSERT_EQ(0, items_make(&it, n));
	for (i = 0; i < n; i++)
		it.w[i].role = ROLE_STORM;
	ASSERT_EQ(0, mpq_event_new(&over, NULL));
	ASSERT_LT(0, mpq_event_export(over, handle, sizeof(handle)));
	ASSERT_EQ(0, setenv(STORM_ENV, handle, 1));
	ASSERT_EQ(0, killer_start(&k, over, seed, max));
	ASSERT_EQ(0, mpq_pool_new(&p, &attr));
	ASSERT_EQ(0, mpq_pool_map_async(p, work, it.iov, n, 4, NULL, &r));
	ASSERT_EQ(0, mpq_async_result_wait(r, 4 * BOUND));
	kills = killer_stop(&k);
	ASSERT_LE(0, kills);
	for (i = 0; i < n; i++) {
		v = value_of(r, i, &err);
		/*
		 * A fork server's worker killed after its server was: the
		 * status went with the server, the death is still told.
		 */
		if (err == -EOWNERDEAD &&
		    mpq_async_result_error(r, i, &msg) == -EOWNERDEAD &&
		    (strstr(msg, "SIGKILL") ||
		     (method == MPQ_START_FORKSERVER &&
		      strstr(msg, "lost with its fork server")))) {
			dead++;
		} else if (err || v != (int64_t)i + 1) {
			if (wrong++ < 3)
				TH_LOG("item %zu: %d %s", i, err,
				       mpq_async_result_error(r, i, &msg) ? msg : "");
		}
	}
	TH_LOG("%d kills, %zu items died with their worker", kills, dead);
	EXPECT_EQ(0, wrong);
	EXPECT_LE(dead, (size_t)kills);
	mpq_async_result_free(r);
	/* The storm is over: the pool is whole. */
	for (i = 0; i < n; i++)
		it.w[i].role = ROLE_PLAIN;
	ASSERT_EQ(0, mpq_pool_map(p, work, it.iov, n, 0, &r));
	EXPECT_EQ(0, wrong_values(r, n, SIZE_MAX));
	mpq_async_result_free(r);
	mpq_pool_free(p);
	unsetenv(STORM_ENV);
	mpq_event_free(over);
	items_free(&it);
}

TEST_F_TIMEOUT(method, workers_killed_at_random_instants_of_their_start_are_replaced, 600)
{
	map_in_a_storm(_metadata, variant->start_method, 4000, 40);
}

/*
 * The storm again, over value tasks, whose workers run segments through
 * the task's loop: killed anywhere in it, or between two of its runs, a
 * worker loses no value and makes up none. Each value is right or, for
 * at most one item per kill, left as it was (-EOWNERDEAD).
 */
TEST_F_TIMEOUT(method, workers_killed_inside_value_loops_lose_no_value, 600)
{
	struct mpq_pool_attr attr = {
		.processes = 2,
		.start_method = variant->start_method,
	};
	uint64_t seed = (uint64_t)now_ns() | 1;
	size_t i, n = 400000, dead = 0, wrong = 0;
	struct mpq_event *over;
	struct mpq_pool *p;
	int64_t *in, *out;
	struct killer k;
	int kills, ret;

	TH_LOG("killer seed %llu", (unsigned long long)seed);
	ASSERT_EQ(0, values_make(n, &in, &out));
	ASSERT_EQ(0, mpq_event_new(&over, NULL));
	ASSERT_EQ(0, killer_start(&k, over, seed, 40));
	ASSERT_EQ(0, mpq_pool_new(&p, &attr));
	ret = mpq_pool_map_values(p, slow_plus_one_task, in, sizeof(*in), out,
				  sizeof(*out), n, 0);
	kills = killer_stop(&k);
	ASSERT_LE(0, kills);
	for (i = 0; i < n; i++) {
		if (out[i] == -1)
			dead++;
		else if (out[i] != (int64_t)i + 1 && wrong++ < 3)
			TH_LOG("item %zu: %lld", i, (long long)out[i]);
	}
	TH_LOG("%d kills, %zu items died with their worker", kills, dead);
	EXPECT_EQ(0, wrong);
	EXPECT_LE(dead, (size_t)kills);
	EXPECT_EQ(dead ? -EOWNERDEAD : 0, ret);
	/* The storm is over: the pool is whole. */
	for (i = 0; i < n; i++)
		out[i] = -1;
	ASSERT_EQ(0, mpq_pool_map_values(p, slow_plus_one_task, in,
					 sizeof(*in), out, sizeof(*out), n, 0));
	for (i = 0, wrong = 0; i < n; i++)
		wrong += out[i] != (int64_t)i + 1;
	EXPECT_EQ(0, wrong);
	mpq_pool_free(p);
	mpq_event_free(over);
	free(in);
	free(out);
}

/*
 * The pool's process killed in the middle of a map: its workers, whatever
 * they were doing (running a segment, sending results, waiting for room
 * in their pipe or for the next task message), see that the pool is gone
 * and exit. Half the rounds kill it at a random instant; the others stop
 * it first, so that its workers run on into whatever waits for it (a
 * value of 64 bytes per argument of 8 makes several results messages per
 * task message, enough to fill the pipe of a pool that reads none), then
 * kill it. Each round's pool and workers
 * are our descendants (we are their subreaper), so once the pool's
 * process is reaped, nothing of ours may be left after the bound.
 */
#define ORPHAN_ROUNDS	4

struct wide {
	int64_t v[8];
};

static struct wide widen(int64_t x)
{
	struct wide w;
	int i;

	for (i = 0; i < 8; i++)
		w.v[i] = x + i;
	return w;
}
MPQ_TASK_VALUE(widen, int64_t, struct wide);

/*
 * A worker's parent-death signal is SIGTERM (daemon processes): a worker
 * whose program ignores it, as many do, has only the pool's pipe and
 * staging to tell it that the pool is gone.
 */
static int ignore_sigterm(const void *arg, size_t len)
{
	signal(SIGTERM, SIG_IGN);
	return 0;
}
MPQ_TARGET(ignore_sigterm);

/* SIGKILL every process whose parent we are, and reap them. */
static void kill_children(void)
{
	struct dirent *e;
	DIR *d = opendir("/proc");
	char path[300], buf[512], *rp;
	int ppid;
	FILE *f;

	while (d && (e = readdir(d))) {
		if (e->d_name[0] < '1' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		/* pid (comm) state ppid: comm may hold spaces and ')'. */
		if (fgets(buf, sizeof(buf), f) && (rp = strrchr(buf, ')')) &&
		    sscanf(rp + 1, " %*c %d", &ppid) == 1 && ppid == getpid())
			kill(atoi(e->d_name), SIGKILL);
		fclose(f);
	}
	if (d)
		closedir(d);
	while (waitpid(-1, NULL, 0) > 0)
		;
}

static void map_then_die(int ready_fd, int start_method)
{
	struct mpq_pool_attr attr = {
		.processes = 2,
		.start_method = start_method,
		.initializer = ignore_sigterm,
	};
	size_t n = 400000;
	struct mpq_pool *p;
	struct wide *out;
	int64_t *in, *unused;
	char c = 1;

	out = calloc(n, sizeof(*out));
	if (!out || values_make(n, &in, &unused) || mpq_pool_new(&p, &attr))
		_exit(2);
	if (write(ready_fd, &c, 1) != 1)
		_exit(3);
	mpq_pool_map_values(p, widen_task, in, sizeof(*in), out, sizeof(*out),
			    n, 0);
	/* Finished before the kill: the next round waits less. */
	_exit(0);
}

TEST_F_TIMEOUT(method, workers_exit_when_their_pools_process_is_killed_mid_map,
	       240)
{
	uint64_t seed = (uint64_t)now_ns() | 1;
	int round, status, left;
	int64_t end;
	pid_t pid;

	TH_LOG("seed %llu", (unsigned long long)seed);
	ASSERT_EQ(0, prctl(PR_SET_CHILD_SUBREAPER, 1));
	for (round = 0; round < ORPHAN_ROUNDS; round++) {
		int fds[2];
		char c;

		ASSERT_EQ(0, pipe(fds));
		pid = fork();
		ASSERT_LE(0, pid);
		if (pid == 0) {
			close(fds[0]);
			map_then_die(fds[1], variant->start_method);
		}
		close(fds[1]);
		ASSERT_EQ(1, read(fds[0], &c, 1));
		close(fds[0]);
		/* Somewhere in the map, which takes some 10-50 ms here. */
		usleep(rnd(&seed) % 10000);
		if (round % 2) {
			kill(pid, SIGSTOP);
			sleep_ms(100);
		}
		kill(pid, SIGKILL);
		ASSERT_EQ(pid, waitpid(pid, &status, 0));
		/* Its workers (and a fork server) are ours now: all must go. */
		end = now_ns() + 20 * NSEC_PER_SEC;
		left = 1;
		while (now_ns() < end) {
			pid_t w = waitpid(-1, &status, WNOHANG);

			if (w < 0 && errno == ECHILD) {
				left = 0;
				break;
			}
			if (w == 0)
				sleep_ms(5);
		}
		EXPECT_EQ(0, left) {
			TH_LOG("round %d: processes of the killed pool are "
			       "still running", round);
			kill_children();
		}
	}
	prctl(PR_SET_CHILD_SUBREAPER, 0);
}

static void other_loop(const void *in, size_t in_stride, void *out, size_t n,
		       uint32_t *done)
{
}

TEST(a_task_loop_is_registered_once_and_bad_ones_are_refused)
{
	/* MPQ_TASK_VALUE() registered plus_one's: the same again is fine. */
	EXPECT_EQ(0, mpq_register_task_loop(plus_one_task, plus_one_task_loop,
					    sizeof(int64_t), sizeof(int64_t)));
	EXPECT_EQ(-EEXIST, mpq_register_task_loop(plus_one_task, other_loop,
						  sizeof(int64_t),
						  sizeof(int64_t)));
	EXPECT_EQ(-EEXIST, mpq_register_task_loop(plus_one_task,
						  plus_one_task_loop, 4,
						  sizeof(int64_t)));
	EXPECT_EQ(-EINVAL, mpq_register_task_loop(NULL, other_loop, 8, 8));
	EXPECT_EQ(-EINVAL, mpq_register_task_loop(work, NULL, 8, 8));
	EXPECT_EQ(-EINVAL, mpq_register_task_loop(work, other_loop, 0, 8));
	EXPECT_EQ(-EINVAL, mpq_register_task_loop(work, other_loop, 8, 0));
	EXPECT_EQ(-EINVAL, mpq_register_task_loop(work, other_loop, 4097, 8));
	/* Values that would not travel packed get no loop. */
	EXPECT_EQ(-EINVAL, mpq_register_task_loop(work, other_loop, 8, 257));
}

TEST_F(method, a_task_that_segfaults_fails_and_every_other_task_completes)
{
	struct mpq_async_result *r;
	struct mpq_pool *p;
	struct items it;
	const char *msg;

	ASSERT_EQ(0, items_make(&it, 2000));
	it.w[1234].role = ROLE_SEGV;
	p = pool_make(variant->start_method, 2, 0, 0);
	ASSERT_NE(NULL, p);
	EXPECT_EQ(-EOWNERDEAD, mpq_pool_map(p, work, it.iov, it.n, 0, &r));
	ASSERT_NE(NULL, r);
	EXPECT_EQ(0, wrong_values(r, it.n, 1234));
	EXPECT_EQ(-EOWNERDEAD, mpq_async_result_error(r, 1234, &msg));
	EXPECT_NE(NULL, strstr(msg, "SIGSEGV"));
	mpq_async_result_free(r);
	mpq_pool_free(p);
	items_free(&it);
}

/*
 * A value task's loop: a worker that dies in it (a crash, a SIGKILL)
 * fails the item it was in and that one alone; every value before it in
 * the loop is kept, every one after it is run again elsewhere.
 */
static void map_values_dying_at_victim(struct __test_metadata *_metadata,
				       struct mpq_pool *p, mpq_task_fn fn)
{
	size_t i, wrong = 0, n = 10000;
	int64_t *in, *out;

	ASSERT_EQ(0, values_make(n, &in, &out));
	EXPECT_EQ(-EOWNERDEAD, mpq_pool_map_values(p, fn, in, sizeof(*in),
						   out, sizeof(*out), n, 0));
	for (i = 0; i < n; i++)
		wrong += i == LOOP_VICTIM ? out[i] != -1 :
					    out[i] != (int64_t)i + 1;
	EXPECT_EQ(0, wrong);
	free(in);
	free(out);
}

/* One pool for both deaths: under TCG each replacement costs seconds. */
TEST_F(method, a_value_task_that_dies_in_its_loop_fails_that_item_alone)
{
	struct mpq_pool *p = pool_make(variant->start_method, 2, 0, 0);

	ASSERT_NE(NULL, p);
	map_values_dying_at_victim(_metadata, p, segv_at_victim_task);
	map_values_dying_at_victim(_metadata, p, killed_at_victim_task);
	mpq_pool_free(p);
}

TEST_F(method, a_task_that_exits_its_worker_fails_with_the_exit_status)
{
	struct mpq_async_result *r;
	struct mpq_pool *p;
	struct items it;
	const char *msg;

	ASSERT_EQ(0, items_make(&it, 500));
	it.w[99].role = ROLE_EXIT;
	it.w[400].role = ROLE_EXIT;
	p = pool_make(variant->start_method, 2, 0, 0);
	ASSERT_NE(NULL, p);
	EXPECT_EQ(-EOWNERDEAD, mpq_pool_map(p, work, it.iov, it.n, 10, &r));
	ASSERT_NE(NULL, r);
	EXPECT_EQ(-EOWNERDEAD, mpq_async_result_error(r, 99, &msg));
	EXPECT_NE(NULL, strstr(msg, "exited with status 3"));
	EXPECT_EQ(-EOWNERDEAD, mpq_async_result_error(r, 400, &msg));
	it.w[99].role = it.w[400].role = ROLE_PLAIN;
	EXPECT_EQ(2, wrong_values(r, it.n, SIZE_MAX));
	mpq_async_result_free(r);
	mpq_pool_free(p);
	items_free(&it);
}

TEST_F(method, terminate_with_tasks_in_flight_ends_them_with_ecanceled)
{
	struct mpq_pool_callbacks cb = { .callback = on_ok,
					 .error_callback = on_err };
	struct calls c[9] = { 0 };
	struct mpq_async_result *r[8], *m;
	struct work w = { .value = 60000, .role = ROLE_SLEEP };
	struct mpq_pool *p;
	struct items it;
	int i;

	ASSERT_EQ(0, items_make(&it, 100));
	for (i = 0; i < 100; i++) {
		it.w[i].role = ROLE_SLEEP;
		it.w[i].value = 60000;
	}
	p = pool_make(variant->start_method, 2, 0, 0);
	ASSERT_NE(NULL, p);
	for (i = 0; i < 8; i++) {
		cb.data = &c[i];
		ASSERT_EQ(0, mpq_pool_apply_async(p, work, &w, sizeof(w), &cb,
						  &r[i]));
	}
	cb.data = &c[8];
	ASSERT_EQ(0, mpq_pool_map_async(p, work, it.iov, it.n, 1, &cb, &m));
	/* Returns once the workers are gone, though they sleep a minute. */
	ASSERT_EQ(0, mpq_pool_terminate(p));
	EXPECT_EQ(0, mpq_active_children(NULL, 0));
	for (i = 0; i < 8; i++) {
		EXPECT_EQ(-ECANCELED, mpq_async_result_get(r[i], 0));
		EXPECT_EQ(1, c[i].err);
		EXPECT_EQ(0, c[i].ok);
		EXPECT_EQ(-ECANCELED, c[i].code);
		mpq_async_result_free(r[i]);
	}
	EXPECT_EQ(-ECANCELED, mpq_async_result_get(m, 0));
	EXPECT_EQ(1, c[8].err);
	mpq_async_result_free(m);
	/* After terminate: no new work; join returns at once. */
	EXPECT_EQ(-EBADF, mpq_pool_apply_async(p, work, &w, sizeof(w), NULL, &m));
	EXPECT_EQ(0, mpq_pool_join(p, 0));
	mpq_pool_free(p);
	items_free(&it);
}

TEST_F(method, get_and_wait_time_out_while_the_task_runs)
{
	struct work w = { .value = 60000, .role = ROLE_SLEEP };
	struct mpq_pool_iter *iter;
	struct mpq_async_result *r;
	struct mpq_pool *p;
	struct iovec iov = { &w, sizeof(w) };
	const void *v;
	size_t len, index = 0;

	p = pool_make(variant->start_method, 1, 0, 0);
	ASSERT_NE(NULL, p);
	ASSERT_EQ(0, mpq_pool_apply_async(p, work, &w, sizeof(w), NULL, &r));
	EXPECT_EQ(-EAGAIN, mpq_async_result_get(r, 0));
	EXPECT_EQ(-ETIMEDOUT, mpq_async_result_get(r, 20 * NSEC_PER_MSEC));
	EXPECT_EQ(-ETIMEDOUT, mpq_async_result_wait(r, 20 * NSEC_PER_MSEC));
	EXPECT_EQ(0, mpq_async_result_ready(r));
	EXPECT_EQ(-EAGAIN, mpq_async_result_successful(r));
	EXPECT_EQ(-EAGAIN, mpq_async_result_value(r, 0, &v, &len));
	ASSERT_EQ(0, mpq_pool_imap(p, work, &iov, 1, 0, &iter));
	EXPECT_EQ(-ETIMEDOUT, mpq_pool_iter_next(iter, 20 * NSEC_PER_MSEC,
						 &v, &len, &index));
	EXPECT_EQ(SIZE_MAX, index);
	EXPECT_EQ(-EAGAIN, mpq_pool_iter_next(iter, 0, &v, &len, &index));
	ASSERT_EQ(0, mpq_pool_terminate(p));
	EXPECT_EQ(-ECANCELED, mpq_pool_iter_next(iter, 0, &v, &len, &index));
	EXPECT_EQ(0, index);
	EXPECT_EQ(0, mpq_pool_iter_next(iter, 0, &v, &len, &index));
	mpq_pool_iter_free(iter);
	mpq_async_result_free(r);
	mpq_pool_free(p);
}

TEST_F(method, close_then_join_waits_for_every_result)
{
	struct mpq_async_result *r[40];
	struct work w = { .role = ROLE_SLEEP };
	struct mpq_pool *p;
	int i, err;

	p = pool_make(variant->start_method, 2, 0, 0);
	ASSERT_NE(NULL, p);
	EXPECT_EQ(-EINVAL, mpq_pool_join(p, 0));	/* still running */
	for (i = 0; i < 40; i++) {
		w.value = 5 + i % 3;
		ASSERT_EQ(0, mpq_pool_apply_async(p, work, &w, sizeof(w), NULL,
						  &r[i]));
	}
	ASSERT_EQ(0, mpq_pool_close(p));
	EXPECT_EQ(-EBADF, mpq_pool_apply_async(p, work, &w, sizeof(w), NULL,
					       &r[0]));
	ASSERT_EQ(0, mpq_pool_join(p, BOUND));
	EXPECT_EQ(0, mpq_active_children(NULL, 0));
	for (i = 0; i < 40; i++) {
		EXPECT_EQ(1, mpq_async_result_ready(r[i]));
		EXPECT_EQ(6 + i % 3, value_of(r[i], 0, &err));
		mpq_async_result_free(r[i]);
	}
	mpq_pool_free(p);
}

TEST_F(method, freeing_a_pool_with_work_in_flight_is_safe)
{
	struct work w = { .value = 60000, .role = ROLE_SLEEP };
	struct mpq_async_result *r[6];
	struct mpq_pool_iter *iter;
	struct mpq_pool *p;
	struct iovec iov = { &w, sizeof(w) };
	int i;

	p = pool_make(variant->start_method, 2, 0, 0);
	ASSERT_NE(NULL, p);
	for (i = 0; i < 6; i++)
		ASSERT_EQ(0, mpq_pool_apply_async(p, work, &w, sizeof(w), NULL,
						  i == 5 ? NULL : &r[i]));
	ASSERT_EQ(0, mpq_pool_imap_unordered(p, work, &iov, 1, 0, &iter));
	mpq_pool_free(p);
	EXPECT_EQ(0, mpq_active_children(NULL, 0));
	/* Results outlive the pool. */
	for (i = 0; i < 5; i++) {
		EXPECT_EQ(-ECANCELED, mpq_async_result_get(r[i], 0));
		mpq_async_result_free(r[i]);
	}
	EXPECT_EQ(-ECANCELED, mpq_pool_iter_next(iter, 0, NULL, NULL, NULL));
	mpq_pool_iter_free(iter);
}

TEST_F(method, large_arguments_and_values_arrive_intact)
{
	size_t sizes[] = { 0, 1, 65535, 65536, 65537, 4 << 20 };
	unsigned char *buf[6];
	struct iovec iov[6];
	struct mpq_async_result *r;
	struct mpq_pool *p;
	const unsigned char *v;
	size_t i, k, len, wrong = 0;

	for (i = 0; i < 6; i++) {
		buf[i] = malloc(sizes[i] + 1);
		ASSERT_NE(NULL, buf[i]);
		for (k = 0; k < sizes[i]; k++)
			buf[i][k] = (unsigned char)(k * 7 + i);
		iov[i].iov_base = buf[i];
		iov[i].iov_len = sizes[i];
	}
	p = pool_make(variant->start_method, 2, 0, 0);
	ASSERT_NE(NULL, p);
	ASSERT_EQ(0, mpq_pool_map(p, bytes_plus_one, iov, 6, 1, &r));
	for (i = 0; i < 6; i++) {
		ASSERT_EQ(0, mpq_async_result_value(r, i, (const void **)&v,
						    &len));
		ASSERT_EQ(sizes[i], len);
		EXPECT_EQ(0, (uintptr_t)v % 8);
		for (k = 0; k < len; k++)
			wrong += v[k] != (unsigned char)(buf[i][k] + 1);
	}
	EXPECT_EQ(0, wrong);
	mpq_async_result_free(r);
	mpq_pool_free(p);
	for (i = 0; i < 6; i++)
		free(buf[i]);
}

TEST_F(method, starmap_calls_the_task_with_each_tuple)
{
	int64_t x[30];
	struct iovec args[30];
	struct mpq_async_result *r;
	struct mpq_pool *p;
	int i, err;

	for (i = 0; i < 30; i++) {
		x[i] = i;
		args[i].iov_base = &x[i];
		args[i].iov_len = sizeof(x[i]);
	}
	p = pool_make(variant->start_method, 2, 0, 0);
	ASSERT_NE(NULL, p);
	/* Ten tuples of three: (0, 1, 2), (3, 4, 5), ... */
	ASSERT_EQ(0, mpq_pool_starmap(p, tuple_sum, args, 3, 10, 0, &r));
	for (i = 0; i < 10; i++)
		EXPECT_EQ(9 * i + 3, value_of(r, (size_t)i, &err));
	mpq_async_result_free(r);
	mpq_pool_free(p);
}

TEST_F(method, a_task_cannot_give_two_values)
{
	struct mpq_pool *p;
	void *v = NULL;

	p = pool_make(variant->start_method, 1, 0, 0);
	ASSERT_NE(NULL, p);
	EXPECT_EQ(sizeof(int), mpq_pool_apply(p, return_twice, NULL, 0, &v));
	free(v);
	mpq_pool_free(p);
}

TEST_F(method, an_initializer_that_fails_fails_pool_new_with_its_code)
{
	struct mpq_pool_attr attr = {
		.processes = 2,
		.start_method = variant->start_method,
		.initializer = failing_init,
	};
	struct mpq_pool *p = NULL;

	EXPECT_EQ(-ENOTSUP, mpq_pool_new(&p, &attr));
	EXPECT_EQ(NULL, p);
	EXPECT_EQ(0, mpq_active_children(NULL, 0));
}

static struct mpq_pool *flaky_pool(int method, int processes,
				   uint32_t maxtasks, const char *mode)
{
	struct mpq_pool_attr attr = {
		.processes = processes,
		.start_method = method,
		.initializer = flaky_init,
		.initarg = mode,
		.initarg_len = 1,
		.maxtasksperchild = maxtasks,
	};
	struct mpq_pool *p;

	return mpq_pool_new(&p, &attr) ? NULL : p;
}

/* The event that makes flaky_init fail every time, named in INITBAD_ENV. */
static struct mpq_event *initbad_event(void)
{
	char handle[MPQ_HANDLE_MAX];
	struct mpq_event *e;

	if (mpq_event_new(&e, NULL))
		return NULL;
	if (mpq_event_export(e, handle, sizeof(handle)) < 0 ||
	    setenv(INITBAD_ENV, handle, 1)) {
		mpq_event_free(e);
		return NULL;
	}
	return e;
}

/*
 * Failures that pass are tried again: one in mpq_pool_new, then four
 * among the replacements (maxtasksperchild 2), which may put one slot at
 * three in a row but never both: nothing fails.
 */
TEST_F_TIMEOUT(method, an_initializer_that_fails_now_and_then_is_run_again_and_nothing_fails, 120)
{
	struct mpq_async_result *r;
	struct mpq_queue *tokq;
	struct mpq_pool *p;
	struct items it;
	size_t len = 1;
	char c;
	int i;

	tokq = env_queue(TOKENQ_ENV, 8);
	ASSERT_NE(NULL, tokq);
	ASSERT_EQ(0, mpq_queue_put(tokq, "f", 1, 0));
	p = flaky_pool(variant->start_method, 2, 2, "f");
	ASSERT_NE(NULL, p);
	EXPECT_EQ(-EAGAIN, mpq_queue_get_nowait(tokq, &c, &len));
	for (i = 0; i < 4; i++)
		ASSERT_EQ(0, mpq_queue_put(tokq, "f", 1, 0));
	ASSERT_EQ(0, items_make(&it, 200));
	ASSERT_EQ(0, mpq_pool_map_async(p, work, it.iov, it.n, 1, NULL, &r));
	EXPECT_EQ(0, mpq_async_result_get(r, BOUND));
	EXPECT_EQ(0, wrong_values(r, it.n, SIZE_MAX));
	EXPECT_EQ(-EAGAIN, mpq_queue_get_nowait(tokq, &c, &len));
	mpq_async_result_free(r);
	mpq_pool_free(p);
	mpq_queue_free(tokq);
	unsetenv(TOKENQ_ENV);
	items_free(&it);
}

/*
 * Replacements whose initializer fails every time (mode "f": returns
 * -ENOTSUP; "c": crashes): the work waiting fails with code, its message
 * naming the initializer and how many times in a row it failed (three
 * or more: one place may fail again while the other gets there), rather
 * than waiting for ever; once the initializer works again, so does the
 * pool.
 */
static void init_breaks_pool(struct __test_metadata *_metadata, int method,
			     const char *mode, int code, const char *words)
{
	struct mpq_async_result *r;
	struct mpq_event *bad;
	struct mpq_pool *p;
	struct items it;
	size_t i, failed = 0, wrong = 0;
	int64_t end, v;
	const char *msg;
	int err, ret;

	bad = initbad_event();
	ASSERT_NE(NULL, bad);
	/* Each worker runs one task, then a replacement takes its place. */
	p = flaky_pool(method, 2, 1, mode);
	ASSERT_NE(NULL, p);
	ASSERT_EQ(0, mpq_event_set(bad));
	ASSERT_EQ(0, items_make(&it, 50));
	ASSERT_EQ(0, mpq_pool_map_async(p, work, it.iov, it.n, 1, NULL, &r));
	EXPECT_EQ(code, mpq_async_result_get(r, BOUND));
	for (i = 0; i < it.n; i++) {
		v = value_of(r, i, &err);
		if (!err && v == (int64_t)i + 1)
			continue;
		if (err == code && mpq_async_result_error(r, i, &msg) == code &&
		    strstr(msg, words) && strstr(msg, "times in a row"))
			failed++;
		else if (wrong++ == 0)
			TH_LOG("item %zu: %d %s", i, err,
			       mpq_async_result_error(r, i, &msg) ? msg : "");
	}
	/* Only the two workers that were ready ran a task. */
	EXPECT_EQ(0, wrong);
	EXPECT_LE(it.n - 2, failed);
	mpq_async_result_free(r);
	/* Fixed: a worker starts again, and the pool is whole. */
	ASSERT_EQ(0, mpq_event_clear(bad));
	end = now_ns() + BOUND;
	for (;;) {
		ASSERT_EQ(0, mpq_pool_map_async(p, work, it.iov, it.n, 1, NULL,
						&r));
		ret = mpq_async_result_get(r, BOUND);
		if (ret != code || now_ns() > end)
			break;
		/* Work given while none is ready yet fails as before. */
		mpq_async_result_free(r);
		sleep_ms(10);
	}
	EXPECT_EQ(0, ret);
	EXPECT_EQ(0, wrong_values(r, it.n, SIZE_MAX));
	mpq_async_result_free(r);
	mpq_pool_free(p);
	unsetenv(INITBAD_ENV);
	mpq_event_free(bad);
	items_free(&it);
}

TEST_F_TIMEOUT(method, an_initializer_that_always_fails_fails_the_work_waiting_and_says_why, 240)
{
	init_breaks_pool(_metadata, variant->start_method, "f", -ENOTSUP,
			 "the initializer returned -95");
}

TEST_F_TIMEOUT(method, an_initializer_that_always_crashes_fails_the_work_waiting_and_says_why, 240)
{
	init_breaks_pool(_metadata, variant->start_method, "c", -ECHILD,
			 "the initializer crashed with signal 11 (SIGSEGV)");
}

TEST_F_TIMEOUT(method, an_initializer_that_always_crashes_fails_pool_new_rather_than_hang, 120)
{
	struct mpq_event *bad = initbad_event();

	ASSERT_NE(NULL, bad);
	ASSERT_EQ(0, mpq_event_set(bad));
	EXPECT_EQ(NULL, flaky_pool(variant->start_method, 2, 0, "c"));
	EXPECT_EQ(0, mpq_active_children(NULL, 0));
	unsetenv(INITBAD_ENV);
	mpq_event_free(bad);
}

/*
 * One slot's initializer failing again and again does not break a pool
 * in which another slot can still start a worker: when the one ready
 * worker dies, the work waits for its replacement instead of failing.
 */
TEST_F_TIMEOUT(method, while_one_slot_can_start_a_worker_the_work_waits_for_it, 120)
{
	char handle[MPQ_HANDLE_MAX];
	struct mpq_async_result *r;
	struct mpq_queue *pidq;
	struct mpq_event *bad, *gate;
	struct mpq_pool *p;
	struct items it;
	pid_t pids[2] = { 0, 0 }, pid;
	size_t i, dead = 0, wrong = 0, len;
	const void *v;
	int err, k;

	pidq = env_queue(PIDQ_ENV, 16);
	ASSERT_NE(NULL, pidq);
	bad = initbad_event();
	ASSERT_NE(NULL, bad);
	ASSERT_EQ(0, mpq_event_new(&gate, NULL));
	ASSERT_LT(0, mpq_event_export(gate, handle, sizeof(handle)));
	ASSERT_EQ(0, setenv(STORM_ENV, handle, 1));
	p = flaky_pool(variant->start_method, 2, 0, "f");
	ASSERT_NE(NULL, p);
	/* The two workers' pids. */
	ASSERT_EQ(0, items_make(&it, 400));
	for (i = 0; i < 100; i++)
		it.w[i].role = ROLE_PID;
	ASSERT_EQ(0, mpq_pool_map(p, work, it.iov, 100, 1, &r));
	for (i = 0; i < 100; i++) {
		ASSERT_EQ(0, mpq_async_result_value(r, i, &v, &len));
		memcpy(&pid, v, sizeof(pid));
		if (pid != pids[0])
			pids[pids[0] ? 1 : 0] = pid;
	}
	mpq_async_result_free(r);
	ASSERT_LT(0, pids[1]);
	/* Work that waits at the gate; both workers hold some of it. */
	for (i = 0; i < it.n; i++)
		it.w[i].role = ROLE_GATE;
	ASSERT_EQ(0, mpq_pool_map_async(p, work, it.iov, it.n, 1, NULL, &r));
	/*
	 * The second worker's place fails three times in a row: its fourth
	 * try comes after the third failure was taken.
	 */
	ASSERT_EQ(0, mpq_event_set(bad));
	ASSERT_EQ(0, kill(pids[1], SIGKILL));
	for (k = 0; k < 4; k++)
		ASSERT_LT(0, get_pid(pidq));
	/* The one ready worker dies: the work waits for another. */
	ASSERT_EQ(0, kill(pids[0], SIGKILL));
	ASSERT_EQ(0, mpq_event_clear(bad));
	ASSERT_EQ(0, mpq_event_set(gate));
	ASSERT_EQ(0, mpq_async_result_wait(r, BOUND));
	for (i = 0; i < it.n; i++) {
		if (value_of(r, i, &err) == (int64_t)i + 1 && !err)
			continue;
		if (err == -EOWNERDEAD)
			dead++;
		else if (wrong++ == 0)
			TH_LOG("item %zu: %d", i, err);
	}
	/* Only the items the two killed workers were running. */
	EXPECT_EQ(0, wrong);
	EXPECT_GE(2, dead);
	mpq_async_result_free(r);
	mpq_pool_free(p);
	unsetenv(STORM_ENV);
	unsetenv(INITBAD_ENV);
	unsetenv(PIDQ_ENV);
	mpq_event_free(gate);
	mpq_event_free(bad);
	mpq_queue_free(pidq);
	items_free(&it);
}

/* The killer of workers paused in their initializer: n of them. */
static int kill_reported(void *arg)
{
	struct mpq_queue *pidq = arg;
	int i, n = 3;
	pid_t pid;

	/* A test that fails must not leave us holding the queue. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	for (i = 0; i < n; i++) {
		pid = get_pid(pidq);
		if (pid <= 0 || kill(pid, SIGKILL))
			return 1;
	}
	return 0;
}

TEST_F_TIMEOUT(method, workers_killed_in_their_initializer_are_replaced_in_pool_new, 120)
{
	struct mpq_queue *pidq, *tokq;
	struct mpq_async_result *r;
	struct mpq_pool *p;
	struct items it;
	size_t len = 1;
	pid_t killer;
	char c;
	int i;

	pidq = env_queue(PIDQ_ENV, 8);
	tokq = env_queue(TOKENQ_ENV, 8);
	ASSERT_NE(NULL, pidq);
	ASSERT_NE(NULL, tokq);
	for (i = 0; i < 3; i++)
		ASSERT_EQ(0, mpq_queue_put(tokq, "p", 1, 0));
	killer = spawn(kill_reported, pidq);
	ASSERT_LT(0, killer);
	p = flaky_pool(variant->start_method, 2, 0, "f");
	ASSERT_NE(NULL, p);
	EXPECT_EQ(0, wait_child(killer, 60000));
	EXPECT_EQ(-EAGAIN, mpq_queue_get_nowait(tokq, &c, &len));
	ASSERT_EQ(0, items_make(&it, 1000));
	ASSERT_EQ(0, mpq_pool_map(p, work, it.iov, it.n, 0, &r));
	EXPECT_EQ(0, wrong_values(r, it.n, SIZE_MAX));
	mpq_async_result_free(r);
	mpq_pool_free(p);
	mpq_queue_free(pidq);
	mpq_queue_free(tokq);
	unsetenv(PIDQ_ENV);
	unsetenv(TOKENQ_ENV);
	items_free(&it);
}

/* ---- one start method, or none ------------------------------------------ */

/*
 * A worker whose fork server dies before it, while it starts: its exit
 * status is lost with the server, and it is replaced as a killed worker
 * is, with a new server; mpq_pool_new succeeds and the pool works.
 */
TEST(a_worker_starting_when_its_fork_server_dies_is_replaced)
{
	struct mpq_async_result *r;
	struct mpq_queue *tokq;
	struct mpq_pool *p;
	struct items it;
	pid_t server;
	size_t len = 1;
	char c;

	/* The server's children have the environment it started with. */
	tokq = env_queue(TOKENQ_ENV, 8);
	ASSERT_NE(NULL, tokq);
	ASSERT_EQ(0, mpq_forkserver_start());
	server = mpq_forkserver_pid();
	ASSERT_LT(0, server);
	ASSERT_EQ(0, mpq_queue_put(tokq, "k", 1, 0));
	p = flaky_pool(MPQ_START_FORKSERVER, 2, 0, "k");
	ASSERT_NE(NULL, p);
	EXPECT_EQ(-EAGAIN, mpq_queue_get_nowait(tokq, &c, &len));
	EXPECT_NE(server, mpq_forkserver_pid());
	ASSERT_EQ(0, items_make(&it, 100));
	ASSERT_EQ(0, mpq_pool_map_async(p, work, it.iov, it.n, 1, NULL, &r));
	EXPECT_EQ(0, mpq_async_result_get(r, BOUND));
	EXPECT_EQ(0, wrong_values(r, it.n, SIZE_MAX));
	mpq_async_result_free(r);
	mpq_pool_free(p);
	mpq_queue_free(tokq);
	unsetenv(TOKENQ_ENV);
	items_free(&it);
}

TEST(a_spawn_pool_refuses_tasks_and_initializers_it_cannot_name)
{
	struct mpq_pool_attr attr = {
		.processes = 1,
		.start_method = MPQ_START_SPAWN,
		.initializer = unregistered_init,
	};
	struct mpq_async_result *r;
	struct mpq_pool *p;

	EXPECT_EQ(-ENOENT, mpq_pool_new(&p, &attr));
	p = pool_make(MPQ_START_SPAWN, 1, 0, 0);
	ASSERT_NE(NULL, p);
	EXPECT_EQ(-ENOENT, mpq_pool_apply_async(p, unregistered, NULL, 0, NULL,
						&r));
	mpq_pool_free(p);
	/* A forked worker runs any function of the program. */
	p = pool_make(MPQ_START_FORK, 1, 0, 0);
	ASSERT_NE(NULL, p);
	ASSERT_EQ(0, mpq_pool_apply_async(p, unregistered, NULL, 0, NULL, &r));
	EXPECT_EQ(0, mpq_async_result_get(r, BOUND));
	mpq_async_result_free(r);
	mpq_pool_free(p);
}

TEST(an_empty_map_is_ready_at_once_and_its_callback_runs)
{
	struct calls c = { 0 };
	struct mpq_pool_callbacks cb = { .callback = on_ok,
					 .error_callback = on_err,
					 .data = &c };
	struct mpq_async_result *r;
	struct mpq_pool *p;

	p = pool_make(MPQ_START_FORK, 1, 0, 0);
	ASSERT_NE(NULL, p);
	ASSERT_EQ(0, mpq_pool_map_async(p, work, NULL, 0, 0, &cb, &r));
	EXPECT_EQ(0, mpq_async_result_get(r, BOUND));
	EXPECT_EQ(0, mpq_async_result_count(r));
	EXPECT_EQ(1, c.ok);
	mpq_async_result_free(r);
	mpq_pool_free(p);
}

static struct mpq_async_result *other;
static int deadlock_seen;

static void wait_in_callback(struct mpq_async_result *r, void *data)
{
	deadlock_seen = mpq_async_result_get(other, MPQ_FOREVER);
}

TEST(waiting_for_a_result_from_a_callback_is_edeadlk)
{
	struct mpq_pool_callbacks cb = { .callback = wait_in_callback };
	struct work w = { .value = 60000, .role = ROLE_SLEEP };
	struct work q = { .value = 1 };
	struct mpq_async_result *r;
	struct mpq_pool *p;

	p = pool_make(MPQ_START_FORK, 2, 0, 0);
	ASSERT_NE(NULL, p);
	ASSERT_EQ(0, mpq_pool_apply_async(p, work, &w, sizeof(w), NULL, &other));
	ASSERT_EQ(0, mpq_pool_apply_async(p, work, &q, sizeof(q), &cb, &r));
	EXPECT_EQ(0, mpq_async_result_get(r, BOUND));
	EXPECT_EQ(-EDEADLK, deadlock_seen);
	mpq_async_result_free(r);
	mpq_async_result_free(other);
	mpq_pool_free(p);
}

/*
 * The same after the maker has used the pool (its pid is then known to
 * the library): a forked child is still told the pool is not its own.
 */
TEST(a_pool_used_before_a_fork_belongs_to_its_maker)
{
	struct work w = { .value = 1 };
	struct mpq_async_result *r;
	struct mpq_pool *p;
	pid_t pid;
	int status;

	p = pool_make(MPQ_START_FORK, 1, 0, 0);
	ASSERT_NE(NULL, p);
	ASSERT_EQ(0, mpq_pool_apply_async(p, work, &w, sizeof(w), NULL, &r));
	EXPECT_EQ(0, mpq_async_result_get(r, BOUND));
	mpq_async_result_free(r);
	pid = fork();
	if (pid == 0) {
		int bad = mpq_pool_apply_async(p, work, &w, sizeof(w), NULL,
					       &r) != -ECHILD;

		bad |= mpq_pool_close(p) != -ECHILD;
		mpq_pool_free(p);	/* only this process's copy */
		_exit(bad);
	}
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_EQ(0, status);
	mpq_pool_free(p);
}

TEST(a_pool_belongs_to_the_process_that_made_it)
{
	struct work w = { .value = 1 };
	struct mpq_async_result *r;
	struct mpq_pool *p;
	pid_t pid;
	int status;

	p = pool_make(MPQ_START_FORK, 1, 0, 0);
	ASSERT_NE(NULL, p);
	pid = fork();
	if (pid == 0) {
		int bad = mpq_pool_apply_async(p, work, &w, sizeof(w), NULL,
					       &r) != -ECHILD;

		bad |= mpq_pool_close(p) != -ECHILD;
		bad |= mpq_pool_join(p, 0) != -ECHILD;
		mpq_pool_free(p);	/* only this process's copy */
		_exit(bad);
	}
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_EQ(0, status);
	ASSERT_EQ(0, mpq_pool_apply_async(p, work, &w, sizeof(w), NULL, &r));
	EXPECT_EQ(0, mpq_async_result_get(r, BOUND));
	mpq_async_result_free(r);
	mpq_pool_free(p);
}

TEST(bad_arguments_are_errors_not_crashes)
{
	struct mpq_pool_attr attr = { 0 };
	struct work w = { 0 };
	struct iovec bad = { NULL, 8 };
	struct mpq_async_result *r;
	struct mpq_pool_iter *iter;
	struct mpq_pool *p;
	const void *v;
	void *out;

	EXPECT_EQ(-EINVAL, mpq_pool_new(NULL, NULL));
	attr.processes = -1;
	EXPECT_EQ(-EINVAL, mpq_pool_new(&p, &attr));
	attr.processes = 1;
	attr.flags = 1U << 7;
	EXPECT_EQ(-EINVAL, mpq_pool_new(&p, &attr));
	attr.flags = 0;
	attr.__reserved[2] = 1;
	EXPECT_EQ(-EINVAL, mpq_pool_new(&p, &attr));
	attr.__reserved[2] = 0;
	attr.start_method = 9;
	EXPECT_EQ(-EINVAL, mpq_pool_new(&p, &attr));
	attr.start_method = 0;
	attr.initarg_len = 3;
	EXPECT_EQ(-EINVAL, mpq_pool_new(&p, &attr));

	EXPECT_EQ(-EINVAL, mpq_pool_apply_async(NULL, work, &w, sizeof(w),
						NULL, &r));
	EXPECT_EQ(-EINVAL, mpq_pool_close(NULL));
	EXPECT_EQ(-EINVAL, mpq_pool_terminate(NULL));
	EXPECT_EQ(-EINVAL, mpq_pool_join(NULL, 0));
	mpq_pool_free(NULL);
	EXPECT_EQ(-EINVAL, mpq_async_result_get(NULL, 0));
	EXPECT_EQ(-EINVAL, mpq_async_result_wait(NULL, 0));
	EXPECT_EQ(-EINVAL, mpq_async_result_ready(NULL));
	EXPECT_EQ(-EINVAL, mpq_async_result_successful(NULL));
	EXPECT_EQ(-EINVAL, mpq_async_result_count(NULL));
	EXPECT_EQ(-EINVAL, mpq_async_result_value(NULL, 0, &v, NULL));
	EXPECT_EQ(-EINVAL, mpq_async_result_error(NULL, 0, NULL));
	mpq_async_result_free(NULL);
	EXPECT_EQ(-EINVAL, mpq_pool_iter_next(NULL, 0, NULL, NULL, NULL));
	mpq_pool_iter_free(NULL);
	EXPECT_EQ(-EINVAL, mpq_task_return(NULL, &w, 1));
	EXPECT_EQ(-EINVAL, mpq_task_result_buf(NULL, 1, &out));
	EXPECT_EQ(-EDOM, mpq_task_error(NULL, EDOM, "x"));

	p = pool_make(MPQ_START_FORK, 1, 0, 0);
	ASSERT_NE(NULL, p);
	EXPECT_EQ(-EINVAL, mpq_pool_apply_async(p, NULL, &w, sizeof(w), NULL,
						&r));
	EXPECT_EQ(-EINVAL, mpq_pool_apply_async(p, work, NULL, 8, NULL, &r));
	EXPECT_EQ(-EINVAL, mpq_pool_apply(p, work, &w, sizeof(w), NULL));
	EXPECT_EQ(-EINVAL, mpq_pool_map_async(p, work, NULL, 3, 0, NULL, &r));
	EXPECT_EQ(-EINVAL, mpq_pool_map_async(p, work, &bad, 1, 0, NULL, &r));
	EXPECT_EQ(-EINVAL, mpq_pool_starmap_async(p, work, &bad, 0, 1, 0,
						  NULL, &r));
	EXPECT_EQ(-EINVAL, mpq_pool_imap(p, work, &bad, 1, 0, &iter));
	EXPECT_EQ(-EINVAL, mpq_pool_imap(p, work, NULL, 0, 0, NULL));
	EXPECT_EQ(-EINVAL, mpq_pool_map_values(p, plus_one_task, NULL, 8,
					       &w, 8, 1, 0));
	ASSERT_EQ(0, mpq_pool_close(p));
	EXPECT_EQ(-EBADF, mpq_pool_map_async(p, work, NULL, 0, 0, NULL, &r));
	EXPECT_EQ(0, mpq_pool_join(p, BOUND));
	mpq_pool_free(p);
}

TEST(argument_tuples_pack_and_unpack)
{
	int64_t a = 5, b = -7;
	char c[3] = "xy";
	struct iovec in[3] = { { &a, 8 }, { c, 3 }, { &b, 8 } }, out[3];
	unsigned char buf[64];
	ssize_t n;

	n = mpq_args_pack(NULL, 0, in, 3);
	ASSERT_EQ(8 + 8 + 8 + 8 + 8 + 8, n);
	EXPECT_EQ(-ERANGE, mpq_args_pack(buf, 10, in, 3));
	ASSERT_EQ(n, mpq_args_pack(buf, sizeof(buf), in, 3));
	ASSERT_EQ(3, mpq_task_args(buf, (size_t)n, out, 3));
	EXPECT_EQ(8, out[0].iov_len);
	EXPECT_EQ(0, memcmp(out[0].iov_base, &a, 8));
	EXPECT_EQ(3, out[1].iov_len);
	EXPECT_STREQ("xy", out[1].iov_base);
	EXPECT_EQ(0, memcmp(out[2].iov_base, &b, 8));
	EXPECT_EQ(3, mpq_task_args(buf, (size_t)n, out, 1));	/* count only */
	EXPECT_EQ(-EINVAL, mpq_task_args(buf, (size_t)n - 1, out, 3));
	EXPECT_EQ(0, mpq_task_args(buf, 0, out, 3));
}

TEST_HARNESS_MAIN
