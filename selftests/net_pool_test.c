// SPDX-License-Identifier: GPL-2.0
/*
 * The distributed pool's promises (a Pool made with a manager: lib/
 * pool_remote.c, net/pool/), one test each, against a real redis-server
 * started by mpq_manager_start. Workers are this test binary again in
 * worker mode (MPQ_WORKER; mpq_init() runs from a constructor below,
 * after MPQ_TASK's registrations); "machines" are network namespaces with
 * a veth pair to ours, made by the test (root only, else skipped).
 * Every result of every map is checked.
 */
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <hiredis/hiredis.h>

#include "kselftest_harness.h"
#include "helpers.h"
#include "mpq_net.h"
#include "net_helpers.h"

#define MS		NSEC_PER_MSEC
#define BOUND		(60 * NSEC_PER_SEC)
#define EXTRA_ENV	"MPQ_NET_POOL_TEST_EXTRA"

static int triple(const void *arg, size_t len, struct mpq_task *t)
{
	uint64_t x, y;

	if (len != sizeof(x))
		return mpq_task_error(t, -EINVAL, "want 8 bytes");
	memcpy(&x, arg, sizeof(x));
	y = 3 * x + 1;
	return mpq_task_return(t, &y, sizeof(y));
}
MPQ_TASK(triple);

/* triple, slowly: a worker is likely to be killed in the middle. */
static int slow_triple(const void *arg, size_t len, struct mpq_task *t)
{
	usleep(2000);
	return triple(arg, len, t);
}
MPQ_TASK(slow_triple);

/* Item 5 kills whoever runs it (mid-chunk: the items after it must still be run). */
static int poison_5(const void *arg, size_t len, struct mpq_task *t)
{
	uint64_t x;

	memcpy(&x, arg, sizeof(x));
	if (x == 5)
		raise(SIGKILL);
	return triple(arg, len, t);
}
MPQ_TASK(poison_5);

/* Appends a byte to $MPQ_NET_POOL_TEST_RUNS per run, then outlives leases. */
static int long_once(const void *arg, size_t len, struct mpq_task *t)
{
	const char *path = getenv("MPQ_NET_POOL_TEST_RUNS");
	int fd = path ? open(path, O_WRONLY | O_APPEND) : -1;

	if (fd < 0 || write(fd, "r", 1) != 1)
		return mpq_task_error(t, -EIO, "no runs file");
	close(fd);
	usleep(1200000);
	return triple(arg, len, t);
}
MPQ_TASK(long_once);

/* A value of 200 KiB (a local worker's memfd path): byte i is x + i. */
static int big(const void *arg, size_t len, struct mpq_task *t)
{
	unsigned char *buf;
	uint64_t x;
	size_t i;
	int ret;

	memcpy(&x, arg, sizeof(x));
	ret = mpq_task_result_buf(t, 200 << 10, (void **)&buf);
	if (ret)
		return ret;
	for (i = 0; i < 200 << 10; i++)
		buf[i] = (unsigned char)(x + i);
	return 0;
}
MPQ_TASK(big);

/* starmap: the sum of two uint64_t arguments. */
static int add2(const void *arg, size_t len, struct mpq_task *t)
{
	struct iovec a[2];
	uint64_t x, y;

	if (mpq_task_args(arg, len, a, 2) != 2 || a[0].iov_len != 8 ||
	    a[1].iov_len != 8)
		return mpq_task_error(t, -EINVAL, "want two uint64_t");
	memcpy(&x, a[0].iov_base, 8);
	memcpy(&y, a[1].iov_base, 8);
	x += y;
	return mpq_task_return(t, &x, sizeof(x));
}
MPQ_TASK(add2);

/*
 * The initializer: keeps its argument for "inited" and appends this
 * process's pid to $MPQ_NET_POOL_TEST_INITS, one line per run. An
 * argument of 0 fails it.
 */
static uint64_t init_arg;
static uint64_t init_tasks;	/* tasks run by this process image */

static int init_mark(const void *arg, size_t len)
{
	const char *path = getenv("MPQ_NET_POOL_TEST_INITS");
	char line[32];
	int fd, n;

	if (len != sizeof(init_arg))
		return -EINVAL;
	memcpy(&init_arg, arg, sizeof(init_arg));
	if (!init_arg)
		return -EPERM;
	fd = path ? open(path, O_WRONLY | O_APPEND) : -1;
	if (fd < 0)
		return -EIO;
	n = snprintf(line, sizeof(line), "%d\n", (int)getpid());
	if (write(fd, line, n) != n)
		n = -1;
	close(fd);
	return n < 0 ? -EIO : 0;
}
MPQ_TARGET(init_mark);

/* Registered by the test in its own process only: workers lack it. */
static int init_other(const void *arg, size_t len)
{
	return 0;
}

/* What the initializer left, the pid, and the how-manyth task this is. */
static int inited(const void *arg, size_t len, struct mpq_task *t)
{
	uint64_t out[3] = { init_arg, (uint64_t)getpid(), ++init_tasks };

	return mpq_task_return(t, out, sizeof(out));
}
MPQ_TASK(inited);

static int extra(const void *arg, size_t len, struct mpq_task *t)
{
	return 0;
}

/* Another version of the program: one task more. */
static void __attribute__((constructor(101))) maybe_extra(void)
{
	if (getenv(EXTRA_ENV))
		mpq_register_task("extra", extra);
}

static void __attribute__((constructor)) run_worker(void)
{
	mpq_init(NULL, NULL);
}

/* start_or_skip() on a given address (NULL: a private Unix socket). */
static struct mpq_manager *start_at(struct __test_metadata *_metadata,
				    const char *address)
{
	struct mpq_manager_attr a = { .address = address };

	return start_or_skip(_metadata, &a);
}

/* This binary as a worker of m's pool "pool"; stderr to errfd if >= 0. */
static pid_t start_worker(struct mpq_manager *m, const char *url,
			  const char *netns, int extra_task, int errfd)
{
	pid_t pid = fork();

	if (pid)
		return pid;
	setenv("MPQ_WORKER", url ? url : mpq_manager_address(m), 1);
	setenv("MPQ_AUTHKEY", mpq_manager_authkey(m), 1);
	if (extra_task)
		setenv(EXTRA_ENV, "1", 1);
	if (errfd >= 0)
		dup2(errfd, 2);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (netns) {
		char exe[4096] = "";

		/* ip's own /proc/self/exe would be ip: name ours. */
		if (readlink("/proc/self/exe", exe, sizeof(exe) - 1) < 0)
			_exit(125);
		execlp("ip", "ip", "netns", "exec", netns, exe, (char *)NULL);
		_exit(126);
	}
	execl("/proc/self/exe", "net_pool_test", (char *)NULL);
	_exit(127);
}

static void stop_worker(pid_t pid)
{
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

/*
 * A worker started (with the extra task: another program version) and
 * run to its end: its exit status, its stderr in err; -1 if killed.
 */
static int worker_exit_status(struct mpq_manager *m, int extra_task,
			      char *err, size_t len)
{
	int fds[2], status = 0;
	ssize_t n;
	pid_t w;

	if (pipe(fds))
		return -1;
	w = start_worker(m, NULL, NULL, extra_task, fds[1]);
	close(fds[1]);
	n = read(fds[0], err, len - 1);
	err[n > 0 ? n : 0] = 0;
	close(fds[0]);
	if (waitpid(w, &status, 0) != w || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

static int make_pool(struct mpq_pool **p, struct mpq_manager *m,
		     int local, int64_t lease_ns, uint32_t maxdeliv)
{
	struct mpq_pool_remote r = {
		.manager = m, .lease_ns = lease_ns,
		.max_deliveries = maxdeliv,
		.flags = local ? 0 : MPQ_POOL_REMOTE_ONLY,
	};
	struct mpq_pool_attr a = { .processes = local, .remote = &r };

	return mpq_pool_new(p, &a);
}

/* Map task over 0..n-1 and check every item is 3i+1. */
static void map_and_check(struct __test_metadata *_metadata,
			  struct mpq_pool *p, mpq_task_fn task, size_t n,
			  size_t chunksize)
{
	uint64_t *in = calloc(n, sizeof(*in));
	struct iovec *iov = calloc(n, sizeof(*iov));
	struct mpq_async_result *r = NULL;
	size_t i;

	ASSERT_NE(NULL, in);
	ASSERT_NE(NULL, iov);
	for (i = 0; i < n; i++) {
		in[i] = i;
		iov[i].iov_base = &in[i];
		iov[i].iov_len = sizeof(in[i]);
	}
	ASSERT_EQ(0, mpq_pool_map(p, task, iov, n, chunksize, &r));
	EXPECT_EQ(0, wrong_triples(r, n));
	mpq_async_result_free(r);
	free(in);
	free(iov);
}

/* Keys under the manager's namespace, counted by a raw client. */
static long long count_keys(struct mpq_manager *m)
{
	char ns[64];
	redisContext *c = raw_connect(m, ns, sizeof(ns));
	redisReply *r;
	long long n = -1;

	if (!c)
		return -1;
	r = redisCommand(c, "DBSIZE");
	if (r && r->type == REDIS_REPLY_INTEGER)
		n = r->integer;
	if (r)
		freeReplyObject(r);
	redisFree(c);
	return n;
}

TEST(a_map_with_local_workers_gives_every_result)
{
	struct mpq_manager *m = start_at(_metadata, NULL);
	struct mpq_pool *p = NULL;

	if (!m)
		return;
	ASSERT_EQ(0, make_pool(&p, m, 2, 0, 0));
	map_and_check(_metadata, p, triple, 20000, 0);
	map_and_check(_metadata, p, triple, 300, 1);
	EXPECT_EQ(0, mpq_pool_close(p));
	EXPECT_EQ(0, mpq_pool_join(p, BOUND));
	mpq_pool_free(p);
	/* The pool ended: it left nothing in the manager. */
	EXPECT_EQ(0, count_keys(m));
	mpq_manager_shutdown(m);
}

static void on_value(struct mpq_async_result *r, void *data)
{
	__atomic_add_fetch((int *)data, 1, __ATOMIC_SEQ_CST);
}

TEST(apply_async_callbacks_and_imap_unordered_work_as_on_a_local_pool)
{
	struct mpq_manager *m = start_at(_metadata, NULL);
	struct mpq_pool_callbacks cb = { .callback = on_value };
	struct mpq_async_result *r[50];
	struct mpq_pool_iter *it = NULL;
	struct mpq_pool *p = NULL;
	uint64_t x, y, in[100], seen[100] = { 0 };
	struct iovec iov[100];
	const void *v;
	size_t len, idx, i;
	int called = 0, ret;

	if (!m)
		return;
	cb.data = &called;
	ASSERT_EQ(0, make_pool(&p, m, 2, 0, 0));
	for (i = 0; i < 50; i++) {
		x = i;
		ASSERT_EQ(0, mpq_pool_apply_async(p, triple, &x, sizeof(x),
						  &cb, &r[i]));
	}
	for (i = 0; i < 50; i++) {
		ASSERT_EQ(0, mpq_async_result_get(r[i], BOUND));
		ASSERT_EQ(0, mpq_async_result_value(r[i], 0, &v, &len));
		memcpy(&y, v, sizeof(y));
		EXPECT_EQ(3 * i + 1, y);
		mpq_async_result_free(r[i]);
	}
	EXPECT_EQ(50, called);
	for (i = 0; i < 100; i++) {
		in[i] = i;
		iov[i].iov_base = &in[i];
		iov[i].iov_len = 8;
	}
	ASSERT_EQ(0, mpq_pool_imap_unordered(p, triple, iov, 100, 3, &it));
	while ((ret = mpq_pool_iter_next(it, BOUND, &v, &len, &idx)) == 1) {
		memcpy(&y, v, sizeof(y));
		EXPECT_EQ(3 * idx + 1, y);
		seen[idx]++;
	}
	EXPECT_EQ(0, ret);
	for (i = 0; i < 100; i++)
		EXPECT_EQ(1, seen[i]);
	mpq_pool_iter_free(it);
	mpq_pool_free(p);
	mpq_manager_shutdown(m);
}

TEST(a_task_that_kills_every_worker_fails_with_EOWNERDEAD_and_the_map_goes_on)
{
	struct mpq_manager *m = start_at(_metadata, NULL);
	struct mpq_async_result *r = NULL;
	struct mpq_pool *p = NULL;
	uint64_t in[40], y;
	struct iovec iov[40];
	const char *msg;
	const void *v;
	size_t i, len;

	if (!m)
		return;
	ASSERT_EQ(0, make_pool(&p, m, 2, 300 * MS, 3));
	for (i = 0; i < 40; i++) {
		in[i] = i;
		iov[i].iov_base = &in[i];
		iov[i].iov_len = 8;
	}
	EXPECT_EQ(-EOWNERDEAD, mpq_pool_map(p, poison_5, iov, 40, 4, &r));
	ASSERT_NE(NULL, r);
	for (i = 0; i < 40; i++) {
		if (i == 5)
			continue;
		ASSERT_EQ(0, mpq_async_result_value(r, i, &v, &len)) {
			mpq_async_result_error(r, i, &msg);
			TH_LOG("item %zu: %s", i, msg);
		}
		memcpy(&y, v, sizeof(y));
		EXPECT_EQ(3 * i + 1, y);
	}
	EXPECT_EQ(-EOWNERDEAD, mpq_async_result_error(r, 5, &msg));
	EXPECT_NE(NULL, strstr(msg, "\"poison_5\"")) TH_LOG("%s", msg);
	EXPECT_NE(NULL, strstr(msg, "delivered 3 times")) TH_LOG("%s", msg);
	mpq_async_result_free(r);
	/* And the pool still works. */
	map_and_check(_metadata, p, triple, 100, 0);
	mpq_pool_free(p);
	mpq_manager_shutdown(m);
}

TEST(a_worker_of_another_program_version_is_refused_with_a_clear_error)
{
	struct mpq_manager *m = start_at(_metadata, NULL);
	struct mpq_pool *p = NULL;
	char err[1024] = "";

	if (!m)
		return;
	ASSERT_EQ(0, make_pool(&p, m, 1, 0, 0));
	EXPECT_EQ(3, worker_exit_status(m, 1, err, sizeof(err)));
	EXPECT_NE(NULL, strstr(err, "refused by pool \"pool\"")) TH_LOG("%s", err);
	EXPECT_NE(NULL, strstr(err, "another version")) TH_LOG("%s", err);
	/* The pool goes on with the workers that fit. */
	map_and_check(_metadata, p, triple, 1000, 0);
	mpq_pool_free(p);
	mpq_manager_shutdown(m);
}

/*
 * A pool of an older libmpq-net (its announcement has no seventh field:
 * protocol version 1, task messages on a leased managed queue) hands out
 * tasks where this worker would never look: refused, saying why, not
 * idle for ever.
 */
TEST(a_worker_of_another_libmpq_net_protocol_is_refused_with_a_clear_error)
{
	struct mpq_manager *m = start_at(_metadata, NULL);
	char err[1024] = "", ns[64];
	redisContext *c;
	redisReply *r;

	if (!m)
		return;
	c = raw_connect(m, ns, sizeof(ns));
	ASSERT_NE(NULL, c);
	r = redisCommand(c, "SET mpq:%s:P:pool %s", ns,
			 "0123456789abcdef 0000000000000001 1 10000 3 0");
	ASSERT_NE(NULL, r);
	EXPECT_EQ(REDIS_REPLY_STATUS, r->type);
	freeReplyObject(r);
	EXPECT_EQ(3, worker_exit_status(m, 0, err, sizeof(err)));
	EXPECT_NE(NULL, strstr(err, "refused by pool \"pool\"")) TH_LOG("%s", err);
	EXPECT_NE(NULL, strstr(err, "protocol version 1")) TH_LOG("%s", err);
	redisFree(c);
	mpq_manager_shutdown(m);
}

TEST(a_task_longer_than_its_lease_runs_once_while_its_worker_lives)
{
	struct mpq_manager *m = start_at(_metadata, NULL);
	char path[] = "/tmp/mpq-net-pool-runs-XXXXXX";
	struct mpq_pool *p = NULL;
	struct stat st;
	int fd;

	if (!m)
		return;
	fd = mkstemp(path);
	ASSERT_LE(0, fd);
	close(fd);
	setenv("MPQ_NET_POOL_TEST_RUNS", path, 1);
	/*
	 * Two tasks of 1.2 s, a lease of 0.3 s, and idle workers asking for
	 * work all along: a lease not renewed would hand a task out again.
	 */
	ASSERT_EQ(0, make_pool(&p, m, 4, 300 * MS, 0));
	map_and_check(_metadata, p, long_once, 2, 1);
	mpq_pool_free(p);
	ASSERT_EQ(0, stat(path, &st));
	EXPECT_EQ(2, st.st_size);
	unlink(path);
	unsetenv("MPQ_NET_POOL_TEST_RUNS");
	mpq_manager_shutdown(m);
}

/* The wire format of net/pool/pool.c's task messages. */
struct task_hdr {
	uint32_t magic;
	uint16_t version;
	uint16_t name_len;
	uint64_t table, job, first;
	uint32_t count, deliveries;
};

static size_t task_msg(unsigned char *buf, const char *name, uint64_t first,
		       uint64_t arglen, uint64_t x)
{
	struct task_hdr h = { 0x5471706dU, 2, (uint16_t)strlen(name), 0, 1,
			      first, 1, 0 };
	size_t off = sizeof(h);

	memset(buf, 0, 256);
	memcpy(buf, &h, sizeof(h));
	memcpy(buf + off, name, strlen(name));
	off += (strlen(name) + 7) & ~(size_t)7;
	memcpy(buf + off, &arglen, 8);
	memcpy(buf + off + 8, &x, 8);
	return off + 16;
}

TEST(an_unknown_task_or_a_malformed_message_fails_its_item_and_no_worker)
{
	struct mpq_manager *m = start_at(_metadata, NULL);
	struct mpq_async_result *r = NULL;
	struct mpq_pool *p = NULL;
	unsigned char a[256], b[256];
	struct iovec iov[3];
	uint64_t in[3] = { 0, 1, 2 }, y;
	char id[24], ns[64], ready[160];
	const char *argv[6] = { "RPUSH", ready };
	size_t lens[6];
	redisReply *taken[3] = { 0 }, *rr;
	redisContext *c;
	const char *msg;
	const void *v;
	size_t len;
	int i, got = 0, tries;
	pid_t w;

	if (!m)
		return;
	ASSERT_EQ(0, make_pool(&p, m, 0, 10 * NSEC_PER_SEC, 3));
	for (i = 0; i < 3; i++) {
		iov[i].iov_base = &in[i];
		iov[i].iov_len = 8;
	}
	ASSERT_EQ(0, mpq_pool_map_async(p, triple, iov, 3, 1, NULL, &r));
	/* No worker yet: take the pool's three messages, put ours. */
	ASSERT_EQ(0, pool_id(m, id, sizeof(id)));
	c = raw_connect(m, ns, sizeof(ns));
	ASSERT_NE(NULL, c);
	snprintf(ready, sizeof(ready), "mpq:%s:P:pool.%s.ready", ns, id);
	for (tries = 0; got < 3 && tries < 3000; tries++) {
		rr = redisCommand(c, "LPOP %s", ready);
		ASSERT_NE(NULL, rr);
		if (rr->type == REDIS_REPLY_STRING) {
			taken[got++] = rr;
			continue;
		}
		freeReplyObject(rr);
		usleep(10000);
	}
	ASSERT_EQ(3, got);
	argv[2] = (const char *)a;
	lens[2] = task_msg(a, "no_such_task", 0, 8, 0);
	argv[3] = (const char *)b;
	lens[3] = task_msg(b, "triple", 1, 100, 1);	/* cut short */
	argv[4] = "junk!";
	lens[4] = 5;
	for (i = 0; i < 3; i++) {
		uint64_t first;

		memcpy(&first, taken[i]->str + 24, 8);
		if (first == 2) {
			argv[5] = taken[i]->str;
			lens[5] = taken[i]->len;
		}
	}
	lens[0] = 5;
	lens[1] = strlen(ready);
	rr = redisCommandArgv(c, 6, argv, lens);
	ASSERT_NE(NULL, rr);
	EXPECT_EQ(REDIS_REPLY_INTEGER, rr->type);
	freeReplyObject(rr);
	for (i = 0; i < 3; i++)
		freeReplyObject(taken[i]);
	w = start_worker(m, NULL, NULL, 0, -1);
	ASSERT_EQ(-ENOENT, mpq_async_result_get(r, BOUND));
	EXPECT_EQ(-ENOENT, mpq_async_result_error(r, 0, &msg));
	EXPECT_NE(NULL, strstr(msg, "\"no_such_task\"")) TH_LOG("%s", msg);
	EXPECT_EQ(-EPROTO, mpq_async_result_error(r, 1, &msg));
	EXPECT_NE(NULL, strstr(msg, "malformed")) TH_LOG("%s", msg);
	ASSERT_EQ(0, mpq_async_result_value(r, 2, &v, &len));
	memcpy(&y, v, sizeof(y));
	EXPECT_EQ(7, y);
	/* The worker lived through all of it. */
	EXPECT_EQ(0, waitpid(w, NULL, WNOHANG));
	stop_worker(w);
	redisFree(c);
	mpq_async_result_free(r);
	mpq_pool_free(p);
	mpq_manager_shutdown(m);
}

TEST(large_values_and_starmap_arguments_travel_whole)
{
	struct mpq_manager *m = start_at(_metadata, NULL);
	struct mpq_async_result *r = NULL;
	struct mpq_pool *p = NULL;
	uint64_t in[6] = { 0, 1, 2, 3, 4, 5 }, sum;
	struct iovec iov[6], star[400];
	static uint64_t a[200], b[200];
	const unsigned char *v;
	size_t i, k, len, bad = 0;

	if (!m)
		return;
	ASSERT_EQ(0, make_pool(&p, m, 2, 0, 0));
	for (i = 0; i < 200; i++) {
		a[i] = i;
		b[i] = 1000 * i;
		star[2 * i] = (struct iovec){ &a[i], 8 };
		star[2 * i + 1] = (struct iovec){ &b[i], 8 };
	}
	ASSERT_EQ(0, mpq_pool_starmap(p, add2, star, 2, 200, 7, &r));
	for (i = 0; i < 200; i++) {
		ASSERT_EQ(0, mpq_async_result_value(r, i, (const void **)&v,
						    &len));
		memcpy(&sum, v, 8);
		bad += sum != 1001 * i;
	}
	EXPECT_EQ(0, bad);
	mpq_async_result_free(r);
	r = NULL;
	for (i = 0; i < 6; i++) {
		iov[i].iov_base = &in[i];
		iov[i].iov_len = 8;
	}
	ASSERT_EQ(0, mpq_pool_map(p, big, iov, 6, 1, &r));
	for (i = 0; i < 6; i++) {
		ASSERT_EQ(0, mpq_async_result_value(r, i, (const void **)&v,
						    &len));
		ASSERT_EQ(200 << 10, len);
		for (k = 0; k < len; k++)
			bad += v[k] != (unsigned char)(i + k);
	}
	EXPECT_EQ(0, bad);
	mpq_async_result_free(r);
	mpq_pool_free(p);
	mpq_manager_shutdown(m);
}

TEST(terminate_cancels_what_is_left_and_removes_the_pools_keys)
{
	struct mpq_manager *m = start_at(_metadata, NULL);
	struct mpq_async_result *r = NULL;
	struct mpq_pool *p = NULL;
	static uint64_t in[3000];
	static struct iovec iov[3000];
	size_t i, cancelled = 0, ok = 0;
	const void *v;

	if (!m)
		return;
	ASSERT_EQ(0, make_pool(&p, m, 2, 0, 0));
	for (i = 0; i < 3000; i++) {
		in[i] = i;
		iov[i].iov_base = &in[i];
		iov[i].iov_len = 8;
	}
	ASSERT_EQ(0, mpq_pool_map_async(p, slow_triple, iov, 3000, 1, NULL,
					&r));
	sleep_ms(100);
	EXPECT_EQ(0, mpq_pool_terminate(p));
	EXPECT_EQ(0, mpq_pool_join(p, BOUND));
	EXPECT_EQ(0, mpq_async_result_wait(r, 0));
	for (i = 0; i < 3000; i++) {
		int e = mpq_async_result_value(r, i, &v, NULL);

		cancelled += e == -ECANCELED;
		ok += e == 0;
	}
	EXPECT_EQ(3000, cancelled + ok);
	EXPECT_LT(0, cancelled);
	mpq_async_result_free(r);
	mpq_pool_free(p);
	EXPECT_EQ(0, count_keys(m));
	mpq_manager_shutdown(m);
}

static int caller_dies(void *arg)
{
	struct mpq_manager *m = arg;
	struct mpq_async_result *r;
	struct mpq_pool *p;
	static uint64_t in[2000];
	static struct iovec iov[2000];
	size_t i;

	if (make_pool(&p, m, 2, 300 * MS, 0))
		return 1;
	for (i = 0; i < 2000; i++) {
		in[i] = i;
		iov[i].iov_base = &in[i];
		iov[i].iov_len = 8;
	}
	if (mpq_pool_map_async(p, slow_triple, iov, 2000, 1, NULL, &r))
		return 1;
	raise(SIGKILL);
	return 0;
}

TEST(the_callers_death_leaves_nothing_in_the_manager)
{
	struct mpq_manager *m = start_at(_metadata, NULL);
	int64_t end;
	pid_t pid;
	int status;

	if (!m)
		return;
	pid = spawn(caller_dies, m);
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_TRUE(WIFSIGNALED(status));
	EXPECT_LT(0, count_keys(m));
	/* Its keys expire (2 leases and a second); bounded, not timed. */
	end = now_ns() + BOUND;
	while (count_keys(m) != 0 && now_ns() < end)
		sleep_ms(100);
	EXPECT_EQ(0, count_keys(m));
	mpq_manager_shutdown(m);
}

static int sh(const char *fmt, ...)
{
	char cmd[512];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/*
 * The manager SIGKILLed 300 ms into a map and started again from its AOF:
 * the pool and its workers connect again, the pool puts again what the
 * server lost, and the map completes with every result right. (With the
 * leased managed queue of DP_VERSION 1 the map did not complete in about
 * 1 run of 6; with the pool's own keys 14 runs of 14 did.)
 */
TEST(a_manager_restarted_with_its_aof_mid_map_and_the_map_completes)
{
	char dir[] = "/tmp/mpq-net-pool-aof-XXXXXX";
	struct mpq_manager_attr ma = { .aof = 1 };
	struct mpq_async_result *r = NULL;
	struct mpq_manager *m = NULL;
	struct mpq_pool *p = NULL;
	static uint64_t in[2000];
	static struct iovec iov[2000];
	struct pollfd pfd;
	size_t i;
	int err;

	ASSERT_NE(NULL, mkdtemp(dir));
	ma.dir = dir;
	err = mpq_manager_start(&m, &ma);
	if (err == -ENOENT)
		SKIP(return, "no redis-server on PATH (make deps)");
	ASSERT_EQ(0, err);
	ASSERT_EQ(0, make_pool(&p, m, 2, 500 * MS, 0));
	for (i = 0; i < 2000; i++) {
		in[i] = i;
		iov[i].iov_base = &in[i];
		iov[i].iov_len = 8;
	}
	ASSERT_EQ(0, mpq_pool_map_async(p, slow_triple, iov, 2000, 10, NULL,
					&r));
	sleep_ms(300);
	ASSERT_EQ(0, kill(mpq_manager_server_pid(m), SIGKILL));
	pfd.fd = mpq_manager_pidfd(m);
	pfd.events = POLLIN;
	ASSERT_EQ(1, poll(&pfd, 1, 10000));
	ASSERT_EQ(0, mpq_manager_restart(m));
	ASSERT_EQ(0, mpq_async_result_get(r, BOUND));
	EXPECT_EQ(0, wrong_triples(r, 2000));
	mpq_async_result_free(r);
	mpq_pool_free(p);
	mpq_manager_shutdown(m);
	sh("rm -rf %s", dir);
}

/* ---- machines: network namespaces -------------------------------------- */

#define NNS	2

/* A pool of local workers and attr's initializer, maxtasks; remote_only. */
static int make_init_pool(struct mpq_pool **p, struct mpq_manager *m,
			  int local, mpq_target_fn init, uint64_t *arg,
			  uint32_t maxtasks)
{
	struct mpq_pool_remote r = {
		.manager = m, .flags = local ? 0 : MPQ_POOL_REMOTE_ONLY,
	};
	struct mpq_pool_attr a = {
		.processes = local, .remote = &r, .initializer = init,
		.initarg = arg, .initarg_len = sizeof(*arg),
		.maxtasksperchild = maxtasks,
	};

	return mpq_pool_new(p, &a);
}

/* The pids in the inits file, one a line; how many lines. */
static int read_inits(const char *path, pid_t *pids, int max)
{
	FILE *f = fopen(path, "r");
	int n = 0, pid;

	if (!f)
		return -1;
	while (n < max && fscanf(f, "%d", &pid) == 1)
		pids[n++] = pid;
	fclose(f);
	return n;
}

/* Map inited over n items one a chunk; every result's three fields. */
static void map_inited(struct __test_metadata *_metadata, struct mpq_pool *p,
		       size_t n, uint64_t (*out)[3])
{
	struct iovec *iov = calloc(n, sizeof(*iov));
	struct mpq_async_result *r = NULL;
	const void *v;
	uint64_t x = 0;
	size_t i, len;

	ASSERT_NE(NULL, iov);
	for (i = 0; i < n; i++) {
		iov[i].iov_base = &x;
		iov[i].iov_len = sizeof(x);
	}
	ASSERT_EQ(0, mpq_pool_map(p, inited, iov, n, 1, &r));
	for (i = 0; i < n; i++) {
		ASSERT_EQ(0, mpq_async_result_value(r, i, &v, &len));
		ASSERT_EQ(sizeof(out[i]), len);
		memcpy(out[i], v, len);
	}
	mpq_async_result_free(r);
	free(iov);
}

static void make_inits_file(char *path)
{
	int fd = mkstemp(path);

	if (fd >= 0)
		close(fd);
	setenv("MPQ_NET_POOL_TEST_INITS", path, 1);
}

TEST(an_initializer_runs_once_in_each_worker_local_or_remote_before_its_tasks)
{
	struct mpq_manager *m = start_at(_metadata, NULL);
	char path[] = "/tmp/mpq-net-pool-inits-XXXXXX";
	static uint64_t out[300][3];
	struct mpq_pool *p = NULL;
	uint64_t arg = 77;
	pid_t w[2], pids[64];
	int n, i, k, found;

	if (!m)
		return;
	make_inits_file(path);
	ASSERT_EQ(0, make_init_pool(&p, m, 1, init_mark, &arg, 0));
	w[0] = start_worker(m, NULL, NULL, 0, -1);
	w[1] = start_worker(m, NULL, NULL, 0, -1);
	map_inited(_metadata, p, 300, out);
	map_inited(_metadata, p, 300, out);
	n = read_inits(path, pids, 64);
	/* One local and two remote workers: each ran it once, no more. */
	EXPECT_LE(1, n);
	EXPECT_GE(3, n);
	for (i = 0; i < n; i++)
		for (k = i + 1; k < n; k++)
			EXPECT_NE(pids[i], pids[k]);
	/* Every task ran after its worker's initializer, in that worker. */
	for (i = 0; i < 300; i++) {
		EXPECT_EQ(77, out[i][0]);
		for (k = 0, found = 0; k < n; k++)
			found |= (uint64_t)pids[k] == out[i][1];
		EXPECT_TRUE(found) TH_LOG("item %d ran in %llu, no initializer",
					  i, (unsigned long long)out[i][1]);
	}
	mpq_pool_free(p);
	stop_worker(w[0]);
	stop_worker(w[1]);
	unlink(path);
	unsetenv("MPQ_NET_POOL_TEST_INITS");
	mpq_manager_shutdown(m);
}

TEST(maxtasksperchild_gives_local_and_remote_workers_a_fresh_process)
{
	struct mpq_manager *m = start_at(_metadata, NULL);
	char path[] = "/tmp/mpq-net-pool-inits-XXXXXX";
	static uint64_t out[60][3];
	struct mpq_pool *p = NULL;
	uint64_t arg = 5;
	pid_t w, pids[256];
	int n, i, remote = 0;

	if (!m)
		return;
	make_inits_file(path);
	ASSERT_EQ(0, make_init_pool(&p, m, 1, init_mark, &arg, 3));
	w = start_worker(m, NULL, NULL, 0, -1);
	map_inited(_metadata, p, 60, out);
	/*
	 * No process image ran more than 3 tasks, each ran the initializer
	 * first: 60 tasks took at least 20 images, each in the inits file.
	 * The remote worker starts again in the same pid (exec).
	 */
	for (i = 0; i < 60; i++) {
		EXPECT_EQ(5, out[i][0]);
		EXPECT_GE(3, out[i][2]) TH_LOG("item %d: task %llu of its "
					       "process", i,
					       (unsigned long long)out[i][2]);
		remote += out[i][1] == (uint64_t)w;
	}
	n = read_inits(path, pids, 256);
	EXPECT_LE(20, n);
	for (i = 0; i < n; i++)
		remote += pids[i] == w ? 1000 : 0;
	/* The remote worker did tasks, and more than 3: it restarted. */
	TH_LOG("remote worker: %d tasks, %d initializer runs", remote % 1000,
	       remote / 1000);
	mpq_pool_free(p);
	stop_worker(w);
	unlink(path);
	unsetenv("MPQ_NET_POOL_TEST_INITS");
	mpq_manager_shutdown(m);
}

/*
 * Start a remote worker on m and wait for it to end: its exit status (-1
 * if it did not exit), with what it wrote on stderr in err.
 */
TEST(a_worker_whose_initializer_fails_or_is_missing_exits_4_saying_why)
{
	struct mpq_manager *m = start_at(_metadata, NULL);
	char path[] = "/tmp/mpq-net-pool-inits-XXXXXX";
	struct mpq_pool *p = NULL;
	char err[1024] = "";
	uint64_t arg = 0;

	if (!m)
		return;
	make_inits_file(path);
	/* Fails: init_mark with 0 returns -EPERM. */
	ASSERT_EQ(0, make_init_pool(&p, m, 0, init_mark, &arg, 0));
	ASSERT_EQ(4, worker_exit_status(m, 0, err, sizeof(err)));
	EXPECT_NE(NULL, strstr(err, "\"init_mark\"")) TH_LOG("%s", err);
	EXPECT_NE(NULL, strstr(err, "returned -1")) TH_LOG("%s", err);
	mpq_pool_free(p);
	/* Missing: registered here, not in the worker. */
	ASSERT_EQ(0, mpq_register_target("init_other", init_other));
	ASSERT_EQ(0, make_init_pool(&p, m, 0, init_other, &arg, 0));
	ASSERT_EQ(4, worker_exit_status(m, 0, err, sizeof(err)));
	EXPECT_NE(NULL, strstr(err, "\"init_other\"")) TH_LOG("%s", err);
	EXPECT_NE(NULL, strstr(err, "does not register")) TH_LOG("%s", err);
	mpq_pool_free(p);
	unlink(path);
	unsetenv("MPQ_NET_POOL_TEST_INITS");
	mpq_manager_shutdown(m);
}

FIXTURE(machines) {
	struct mpq_manager *m;
	char url[NNS][128];
	char ns[NNS][32];
	int made;
};

FIXTURE_SETUP(machines)
{
	int t = (int)getpid() % 10000;
	char addr[64];
	int i;

	if (geteuid() != 0)
		SKIP(return, "network namespaces need root");
	if (sh("ip -V >/dev/null 2>&1"))
		SKIP(return, "no ip(8) (iproute2)");
	for (i = 0; i < NNS; i++) {
		snprintf(self->ns[i], sizeof(self->ns[i]), "mpqpool%d-%d", t, i);
		ASSERT_EQ(0, sh("ip netns add %s", self->ns[i]));
		self->made = i + 1;
		ASSERT_EQ(0, sh("ip link add mpqp%d-%d type veth peer name "
				"mpqq%d-%d", t, i, t, i));
		ASSERT_EQ(0, sh("ip link set mpqq%d-%d netns %s", t, i,
				self->ns[i]));
		ASSERT_EQ(0, sh("ip addr add 10.%d.%d.%d/30 dev mpqp%d-%d && "
				"ip link set mpqp%d-%d up", 100 + t / 250, t % 250,
				4 * i + 1, t, i, t, i));
		ASSERT_EQ(0, sh("ip -n %s addr add 10.%d.%d.%d/30 dev "
				"mpqq%d-%d && ip -n %s link set mpqq%d-%d up && "
				"ip -n %s link set lo up", self->ns[i],
				100 + t / 250, t % 250, 4 * i + 2, t, i,
				self->ns[i], t, i, self->ns[i]));
	}
	/*
	 * The manager listens on our side of every veth, on a port below
	 * the ephemeral range (32768-60999), where the kernel would give it
	 * to some other program's connection.
	 */
	snprintf(addr, sizeof(addr), "tcp://0.0.0.0:%d",
		 20000 + (int)getpid() % 10000);
	self->m = start_at(_metadata, addr);
	/* Each namespace reaches it by the address of its own veth's peer. */
	for (i = 0; i < NNS; i++)
		snprintf(self->url[i], sizeof(self->url[i]),
			 "tcp://10.%d.%d.%d:%d#mpq", 100 + t / 250, t % 250,
			 4 * i + 1, 20000 + (int)getpid() % 10000);
}

FIXTURE_TEARDOWN(machines)
{
	int i;

	if (self->m)
		mpq_manager_shutdown(self->m);
	for (i = 0; i < self->made; i++)
		sh("ip netns del %s; ip link del mpqp%d-%d 2>/dev/null",
		   self->ns[i], (int)getpid() % 10000, i);
}

TEST_F(machines, workers_in_other_namespaces_sigkilled_mid_task_lose_nothing)
{
	struct mpq_async_result *r = NULL;
	struct mpq_pool *p = NULL;
	static uint64_t in[3000];
	static struct iovec iov[3000];
	pid_t w[NNS][2];
	size_t i;
	int k, j, kills = 0;

	ASSERT_EQ(0, make_pool(&p, self->m, 0, 500 * MS, 0));
	for (k = 0; k < NNS; k++)
		for (j = 0; j < 2; j++) {
			w[k][j] = start_worker(self->m, self->url[k],
					       self->ns[k], 0, -1);
		}
	for (i = 0; i < 3000; i++) {
		in[i] = i;
		iov[i].iov_base = &in[i];
		iov[i].iov_len = 8;
	}
	ASSERT_EQ(0, mpq_pool_map_async(p, slow_triple, iov, 3000, 10, NULL,
					&r));
	/* Kill a worker at a random moment, again and again; replace it. */
	srand((unsigned int)getpid());
	while (mpq_async_result_wait(r, 0) == -EAGAIN && kills < 8) {
		sleep_ms(50 + rand() % 200);
		k = rand() % NNS;
		j = rand() % 2;
		stop_worker(w[k][j]);
		kills++;
		w[k][j] = start_worker(self->m, self->url[k], self->ns[k], 0,
				       -1);
	}
	ASSERT_EQ(0, mpq_async_result_get(r, BOUND));
	EXPECT_EQ(0, wrong_triples(r, 3000));
	TH_LOG("%d workers killed", kills);
	mpq_async_result_free(r);
	mpq_pool_free(p);
	for (k = 0; k < NNS; k++)
		for (j = 0; j < 2; j++)
			stop_worker(w[k][j]);
}

TEST_HARNESS_MAIN
