// SPDX-License-Identifier: GPL-2.0
/*
 * The distributed pool across a network partition (issue 14): a worker on
 * another "machine" (a network namespace with a veth pair to ours, made
 * here; root only, else skipped) has its network cut off while it is alive
 * and holds a task. The cut is real: the veth's end on our side is set
 * down, so every packet between the namespace and the manager is dropped
 * silently, in both directions, and the worker's process goes on running
 * its task, knowing nothing. Healing sets it up again.
 *
 * Worker A (namespace 0) is started alone, takes the map's first chunk and
 * blocks in item K = 0 until the test lets it go; then the cut. Workers B
 * (namespace 1) do the rest. Every value says which worker made it, and
 * every run of K is logged, so the tests see who ran what.
 *
 * `make net-pool-partition` builds this with NET_POOL_PARTITION_LONG: the
 * cut then lasts longer than the manager's timeout (5 s), so that every
 * connection of the cut-off worker times out and is made again.
 */
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>

#include "kselftest_harness.h"
#include "helpers.h"
#include "net_helpers.h"

#define MS		NSEC_PER_MSEC
#define BOUND		(60 * NSEC_PER_SEC)
#define N		2001
#define CHUNK		10
#define K		0		/* the item A holds when cut off */
/* The item B holds, when asked to: alone in the last chunk, whose other
 * items' results would wait for it. */
#define HOLD		(N - 1)

#ifdef NET_POOL_PARTITION_LONG
#define CUT_MS		12000		/* > the manager's 5 s timeout */
#define TIMEOUT_S	90
#else
#define CUT_MS		0		/* healed as soon as the test may */
#define TIMEOUT_S	30		/* the harness's default */
#endif

/* The test's directory of marker files, shared by every namespace. */
static const char *dir(void)
{
	const char *d = getenv("MPQ_PART_DIR");

	return d ? d : "/nonexistent";
}

static char tag(void)
{
	const char *t = getenv("MPQ_PART_TAG");

	return t && *t ? *t : 'L';
}

static int exists(const char *name)
{
	char path[512];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", dir(), name);
	return stat(path, &st) == 0;
}

/* Append a line to dir/name (O_APPEND: whole lines from any process). */
static void note(const char *name, const char *fmt, ...)
{
	char path[512], line[128];
	va_list ap;
	int fd, n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	snprintf(path, sizeof(path), "%s/%s", dir(), name);
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0600);
	if (fd >= 0) {
		if (write(fd, line, n) != n)
			n = -1;
		close(fd);
	}
}

/* Block (outside the test process only) until dir/name exists. */
static void wait_file(const char *name)
{
	while (!exists(name))
		usleep(5000);
}

/* 3x+1 and who made it. A holds K until "release"; B holds HOLD until
 * "finish"; every run of K is logged in "runs" as "<tag> <pid>". */
static int gated(const void *arg, size_t len, struct mpq_task *t)
{
	uint64_t v[2], x;

	if (len != sizeof(x))
		return mpq_task_error(t, -EINVAL, "want 8 bytes");
	memcpy(&x, arg, sizeof(x));
	if (x == K) {
		note("runs", "%c %d\n", tag(), (int)getpid());
		if (tag() == 'A') {
			note("a-holds", "%d\n", (int)getpid());
			wait_file("release");
			note("a-done", "%d\n", (int)getpid());
		}
	}
	if (x == HOLD && tag() == 'B') {
		note("b-holds", "%d\n", (int)getpid());
		wait_file("finish");
	}
	v[0] = 3 * x + 1;
	v[1] = (uint64_t)tag();
	return mpq_task_return(t, v, sizeof(v));
}
MPQ_TASK(gated);

/* Who runs this: the worker's tag. */
static int whoami(const void *arg, size_t len, struct mpq_task *t)
{
	uint64_t v = (uint64_t)tag();

	return mpq_task_return(t, &v, sizeof(v));
}
MPQ_TASK(whoami);

static void __attribute__((constructor)) run_worker(void)
{
	mpq_init(NULL, NULL);
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

/* Wait (bounded) for a marker file; 0 when it is there. */
static int await_file(const char *name)
{
	int64_t end = now_ns() + BOUND;

	while (!exists(name)) {
		if (now_ns() > end)
			return -ETIMEDOUT;
		sleep_ms(5);
	}
	return 0;
}

/* The first number in dir/name, or -1. */
static int read_pid(const char *name)
{
	char path[512];
	FILE *f;
	int pid = -1;

	snprintf(path, sizeof(path), "%s/%s", dir(), name);
	f = fopen(path, "re");
	if (f) {
		if (fscanf(f, "%d", &pid) != 1)
			pid = -1;
		fclose(f);
	}
	return pid;
}

/* Runs of K logged by workers tagged t. */
static int runs_by(char t)
{
	char path[512], line[64];
	FILE *f;
	int n = 0;

	snprintf(path, sizeof(path), "%s/runs", dir());
	f = fopen(path, "re");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		n += line[0] == t;
	fclose(f);
	return n;
}

static void touch(const char *name)
{
	note(name, "");
}

#define NNS	2

FIXTURE(partition) {
	struct mpq_manager *m;
	struct mpq_pool *p;
	char url[NNS][128];
	char ns[NNS][32];
	char dir[64];
	int made, t, cut;
	pid_t a, b[2];
	uint64_t in[N];
	struct iovec iov[N];
};

FIXTURE_SETUP(partition)
{
	struct mpq_manager_attr ma = { 0 };
	struct mpq_pool_remote r = { .lease_ns = 500 * MS,
				     .flags = MPQ_POOL_REMOTE_ONLY };
	struct mpq_pool_attr pa = { .remote = &r };
	char addr[64];
	int t = (int)getpid() % 10000, i, port = 20000 + t;

	self->t = t;
	if (geteuid() != 0)
		SKIP(return, "network namespaces need root");
	if (sh("ip -V >/dev/null 2>&1"))
		SKIP(return, "no ip(8) (iproute2)");
	snprintf(self->dir, sizeof(self->dir), "/tmp/mpq-part-XXXXXX");
	ASSERT_NE(NULL, mkdtemp(self->dir));
	setenv("MPQ_PART_DIR", self->dir, 1);
	for (i = 0; i < NNS; i++) {
		int net = 160 + t / 250, sub = t % 250;

		snprintf(self->ns[i], sizeof(self->ns[i]), "mpqpart%d-%d", t, i);
		ASSERT_EQ(0, sh("ip netns add %s", self->ns[i]));
		self->made = i + 1;
		ASSERT_EQ(0, sh("ip link add mpqx%d-%d type veth peer name "
				"mpqy%d-%d", t, i, t, i));
		ASSERT_EQ(0, sh("ip link set mpqy%d-%d netns %s", t, i,
				self->ns[i]));
		ASSERT_EQ(0, sh("ip addr add 10.%d.%d.%d/30 dev mpqx%d-%d && "
				"ip link set mpqx%d-%d up", net, sub, 4 * i + 1,
				t, i, t, i));
		ASSERT_EQ(0, sh("ip -n %s addr add 10.%d.%d.%d/30 dev "
				"mpqy%d-%d && ip -n %s link set mpqy%d-%d up && "
				"ip -n %s link set lo up", self->ns[i], net, sub,
				4 * i + 2, t, i, self->ns[i], t, i,
				self->ns[i]));
		snprintf(self->url[i], sizeof(self->url[i]),
			 "tcp://10.%d.%d.%d:%d#mpq", net, sub, 4 * i + 1, port);
	}
	/* The manager listens on our side of every veth. */
	snprintf(addr, sizeof(addr), "tcp://0.0.0.0:%d", port);
	ma.address = addr;
	self->m = start_or_skip(_metadata, &ma);
	if (!self->m)
		return;
	r.manager = self->m;
	ASSERT_EQ(0, mpq_pool_new(&self->p, &pa));
	for (i = 0; i < N; i++) {
		self->in[i] = i;
		self->iov[i].iov_base = &self->in[i];
		self->iov[i].iov_len = 8;
	}
}

FIXTURE_TEARDOWN(partition)
{
	int i;

	if (self->cut)
		sh("ip link set mpqx%d-0 up", self->t);
	if (self->dir[0]) {
		/* Let every gated task go before the pool ends. */
		touch("release");
		touch("finish");
	}
	if (self->p)
		mpq_pool_free(self->p);
	for (i = 0; i < 3; i++) {
		pid_t pid = i ? self->b[i - 1] : self->a;

		if (pid > 0) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
		}
	}
	if (self->m)
		mpq_manager_shutdown(self->m);
	for (i = 0; i < self->made; i++)
		sh("ip netns del %s; ip link del mpqx%d-%d 2>/dev/null",
		   self->ns[i], self->t, i);
	if (self->dir[0])
		sh("rm -rf %s", self->dir);
}

/* This binary as a worker tagged tag in namespace i. */
static pid_t start_worker(FIXTURE_DATA(partition) *self, int i, char t)
{
	char exe[4096] = "", tg[2] = { t, 0 };
	pid_t pid = fork();

	if (pid)
		return pid;
	setenv("MPQ_WORKER", self->url[i], 1);
	setenv("MPQ_AUTHKEY", mpq_manager_authkey(self->m), 1);
	setenv("MPQ_PART_TAG", tg, 1);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	/* ip's own /proc/self/exe would be ip: name ours. */
	if (readlink("/proc/self/exe", exe, sizeof(exe) - 1) < 0)
		_exit(125);
	execlp("ip", "ip", "netns", "exec", self->ns[i], exe, (char *)NULL);
	_exit(126);
}

static void set_cut(FIXTURE_DATA(partition) *self, int cut)
{
	if (sh("ip link set mpqx%d-0 %s", self->t, cut ? "down" : "up") == 0)
		self->cut = cut;
}

/*
 * The start of every test: A alone takes the first chunk and blocks in K;
 * then A's network is cut and workers B start. On return K's lease is
 * A's and A cannot reach the manager.
 */
static void cut_a_holding_k(struct __test_metadata *_metadata,
			    FIXTURE_DATA(partition) *self)
{
	self->a = start_worker(self, 0, 'A');
	ASSERT_EQ(0, await_file("a-holds"));
	set_cut(self, 1);
	ASSERT_EQ(1, self->cut);
	self->b[0] = start_worker(self, 1, 'B');
	self->b[1] = start_worker(self, 1, 'B');
}

/* Every value of a finished map right (3i+1), and K's made by want. */
static void check_map(struct __test_metadata *_metadata,
		      struct mpq_async_result *r, char want_k)
{
	size_t i, len, bad = 0;
	const void *v;
	uint64_t y[2];

	for (i = 0; i < N; i++) {
		if (mpq_async_result_value(r, i, &v, &len) || len != 16) {
			bad++;
			continue;
		}
		memcpy(y, v, sizeof(y));
		bad += y[0] != 3 * i + 1;
		if (i == K && want_k)
			EXPECT_EQ(want_k, (char)y[1]);
	}
	EXPECT_EQ(0, bad);
}

TEST_F_TIMEOUT(partition, a_cut_off_workers_task_is_delivered_again_after_its_lease_and_the_map_completes, TIMEOUT_S)
{
	struct mpq_async_result *r = NULL;

	ASSERT_EQ(0, mpq_pool_map_async(self->p, gated, self->iov, N, CHUNK,
					NULL, &r));
	cut_a_holding_k(_metadata, self);
	touch("finish");
	/* A is cut off and still in K: only B can have finished it. */
	ASSERT_EQ(0, mpq_async_result_get(r, BOUND));
	check_map(_metadata, r, 'B');
	EXPECT_EQ(1, runs_by('A'));
	EXPECT_EQ(1, runs_by('B'));
	EXPECT_FALSE(exists("a-done"));
	mpq_async_result_free(r);
}

TEST_F_TIMEOUT(partition, a_result_the_cut_off_worker_sends_after_healing_is_applied_at_most_once, TIMEOUT_S)
{
	struct mpq_async_result *probe = NULL;
	struct mpq_pool_iter *it = NULL;
	static int seen[N];
	size_t idx, len, got = 0, bad = 0;
	const void *v;
	uint64_t y[2], who;
	pid_t other;
	int ret;

	memset(seen, 0, sizeof(seen));
	ASSERT_EQ(0, mpq_pool_imap_unordered(self->p, gated, self->iov, N,
					     CHUNK, &it));
	cut_a_holding_k(_metadata, self);
	/*
	 * K ran again in B (its lease ran out), and one B holds HOLD, so the
	 * map is still running. Only A may run what comes next: kill the
	 * other B (what it held goes back after its lease).
	 */
	ASSERT_EQ(0, await_file("b-holds"));
	for (int64_t end = now_ns() + BOUND; runs_by('B') < 1 && now_ns() < end;)
		sleep_ms(5);
	ASSERT_EQ(1, runs_by('B'));
	other = self->b[0] == read_pid("b-holds") ? self->b[1] : self->b[0];
	ASSERT_EQ(0, kill(other, SIGKILL));
	waitpid(other, NULL, 0);
	self->b[self->b[0] == other ? 0 : 1] = 0;
	if (CUT_MS)
		sleep_ms(CUT_MS);
	/* Heal; A finishes K and sends its result: the second for K. */
	set_cut(self, 0);
	ASSERT_EQ(0, self->cut);
	touch("release");
	/*
	 * A runs one thing at a time and sends a task's results before it
	 * takes the next, and the pool reads results in order: once A's
	 * answer to this probe is here, A's late result for K has been read.
	 */
	ASSERT_EQ(0, mpq_pool_apply_async(self->p, whoami, NULL, 0, NULL,
					  &probe));
	ASSERT_EQ(0, mpq_async_result_get(probe, BOUND));
	ASSERT_EQ(0, mpq_async_result_value(probe, 0, &v, &len));
	memcpy(&who, v, sizeof(who));
	EXPECT_EQ('A', (char)who);
	EXPECT_TRUE(exists("a-done"));
	mpq_async_result_free(probe);
	/* Every item but HOLD, each once; then nothing until HOLD is let go. */
	while (got < N - 1) {
		ret = mpq_pool_iter_next(it, BOUND, &v, &len, &idx);
		ASSERT_EQ(1, ret);
		ASSERT_NE(HOLD, idx);
		seen[idx]++;
		memcpy(y, v, sizeof(y));
		bad += len != 16 || y[0] != 3 * idx + 1;
		got++;
	}
	ret = mpq_pool_iter_next(it, 200 * MS, &v, &len, &idx);
	EXPECT_TRUE(ret == -ETIMEDOUT || ret == -EAGAIN) TH_LOG("%d", ret);
	touch("finish");
	ASSERT_EQ(1, mpq_pool_iter_next(it, BOUND, &v, &len, &idx));
	ASSERT_EQ(HOLD, idx);
	seen[idx]++;
	memcpy(y, v, sizeof(y));
	bad += len != 16 || y[0] != 3 * idx + 1;
	EXPECT_EQ(0, mpq_pool_iter_next(it, BOUND, &v, &len, &idx));
	EXPECT_EQ(0, bad);
	for (idx = 0; idx < N; idx++)
		bad += seen[idx] != 1;
	EXPECT_EQ(0, bad);
	/* K ran twice, once in each; it was applied once. */
	EXPECT_EQ(1, runs_by('A'));
	EXPECT_EQ(1, runs_by('B'));
	mpq_pool_iter_free(it);
}

TEST_F_TIMEOUT(partition, the_cut_off_worker_rejoins_after_healing_and_runs_a_whole_map, TIMEOUT_S)
{
	struct mpq_async_result *r = NULL;
	size_t i, len, bad = 0;
	const void *v;
	uint64_t y[2];

	ASSERT_EQ(0, mpq_pool_map_async(self->p, gated, self->iov, N, CHUNK,
					NULL, &r));
	cut_a_holding_k(_metadata, self);
	touch("finish");
	ASSERT_EQ(0, mpq_async_result_get(r, BOUND));
	check_map(_metadata, r, 'B');
	mpq_async_result_free(r);
	r = NULL;
	/* The B workers go; A, healed, is the pool's only worker. */
	for (i = 0; i < 2; i++) {
		kill(self->b[i], SIGKILL);
		waitpid(self->b[i], NULL, 0);
		self->b[i] = 0;
	}
	if (CUT_MS)
		sleep_ms(CUT_MS);
	set_cut(self, 0);
	ASSERT_EQ(0, self->cut);
	touch("release");
	ASSERT_EQ(0, mpq_pool_map_async(self->p, gated, self->iov + 1, N - 1,
					CHUNK, NULL, &r));
	ASSERT_EQ(0, mpq_async_result_get(r, BOUND));
	for (i = 0; i < N - 1; i++) {
		if (mpq_async_result_value(r, i, &v, &len) || len != 16) {
			bad++;
			continue;
		}
		memcpy(y, v, sizeof(y));
		bad += y[0] != 3 * (i + 1) + 1 || (char)y[1] != 'A';
	}
	EXPECT_EQ(0, bad);
	/* A's worker lived through it all. */
	EXPECT_EQ(0, waitpid(self->a, NULL, WNOHANG));
	mpq_async_result_free(r);
}

TEST_HARNESS_MAIN
