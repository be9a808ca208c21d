// SPDX-License-Identifier: GPL-2.0
/*
 * The tools in tools/, each run against a workload whose counts and
 * timings the test knows: mpqlat's histogram holds every message with the
 * latency the consumer injected, mpqwait sees a blocked get with its time
 * and process, mpqsnoop prints create, attach, fork and death in order,
 * mpqtop counts a busy queue and a pool's tasks, mpqstat lists exactly the
 * objects alive, mpqsnoop -j and mpqtop -j print JSON lines, the BPF
 * tools check capabilities rather than the euid, and the tracepoint
 * contexts the tools read match the module's format files.
 *
 * Runs in the test VM (root, BTF, BPF, the module). This binary links
 * libmpq.so dynamically, from build/lib, which is the library the tools
 * trace by default: they find it as the loader does.
 */
#include <linux/types.h>
#include <signal.h>
#include <stdio.h>
#include <sys/sendfile.h>
#include <sys/stat.h>

#include "kselftest_harness.h"
#include "helpers.h"
#include "../tools/mpq_tp.h"

#define OUT_MAX		(1 << 20)

/* build/tools/<name>, from where this binary is (build/selftests). */
static const char *tool_path(const char *name)
{
	static char path[4096 + 64];
	char self[4096];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	char *slash;

	if (n < 0)
		return name;
	self[n] = 0;
	slash = strrchr(self, '/');
	if (slash)
		*slash = 0;
	snprintf(path, sizeof(path), "%s/../tools/%s", self, name);
	return path;
}

struct tool {
	pid_t pid;
	int out;	/* its stdout */
	int err;	/* its stderr */
};

/*
 * Start a tool and wait (up to 60 s: BPF loads slowly under TCG) until
 * it says "Tracing" on stderr, or exits. Returns 0 once it traces.
 */
static int tool_start(struct tool *t, char *const argv[])
{
	int out[2], err[2], n, len = 0;
	char buf[4096];
	int64_t end = now_ns() + 60 * NSEC_PER_SEC;

	if (pipe(out) || pipe(err))
		return -errno;
	t->pid = fork();
	if (t->pid == 0) {
		dup2(out[1], 1);
		dup2(err[1], 2);
		execv(argv[0], argv);
		_exit(127);
	}
	close(out[1]);
	close(err[1]);
	t->out = out[0];
	t->err = err[0];
	while (now_ns() < end) {
		if (!readable_within(t->err, 100))
			continue;
		n = read(t->err, buf + len, sizeof(buf) - 1 - len);
		if (n <= 0)
			return -EIO;		/* it exited */
		len += n;
		buf[len] = 0;
		if (strstr(buf, "Tracing"))
			return 0;
	}
	return -ETIMEDOUT;
}

/* Read fd to its end into a malloc'd, NUL-terminated buffer. */
static char *slurp(int fd)
{
	char *buf = calloc(1, OUT_MAX);
	size_t len = 0;
	ssize_t n;

	while (buf && len < OUT_MAX - 1 &&
	       (n = read(fd, buf + len, OUT_MAX - 1 - len)) > 0)
		len += n;
	close(fd);
	return buf;
}

/* Ctrl-C the tool, collect its stdout; its exit status in *status. */
static char *tool_stop(struct tool *t, int *status)
{
	char *out;

	kill(t->pid, SIGINT);
	out = slurp(t->out);
	*status = wait_child(t->pid, 30000);
	close(t->err);
	return out;
}

/* Run a tool to its end; its stdout, exit status in *status. */
static char *tool_run(char *const argv[], int *status, int merge_stderr)
{
	int out[2];
	pid_t pid;
	char *buf;

	if (pipe(out))
		return NULL;
	pid = fork();
	if (pid == 0) {
		dup2(out[1], 1);
		if (merge_stderr)
			dup2(out[1], 2);
		close(out[0]);
		execv(argv[0], argv);
		_exit(127);
	}
	close(out[1]);
	buf = slurp(out[0]);
	*status = wait_child(pid, 60000);
	return buf;
}

static uint64_t queue_id(struct mpq_queue *q)
{
	struct mpq_queue_info i = { .size = sizeof(i) };

	if (ioctl(mpq_queue_fileno(q), MPQ_IOC_QUEUE_INFO, &i))
		return 0;
	return i.id;
}

static int new_kmod_queue(struct mpq_queue **q, uint32_t maxsize)
{
	struct mpq_queue_attr a = { .maxsize = maxsize, .msgsize = 64,
				    .backend = MPQ_BACKEND_KMOD };

	return mpq_queue_new(q, &a);
}

/* The number after "key": in s, or -1. */
static long long json_num(const char *s, const char *key)
{
	char want[64];
	const char *p;

	snprintf(want, sizeof(want), "\"%s\": ", key);
	p = strstr(s, want);
	return p ? strtoll(p + strlen(want), NULL, 10) : -1;
}

#define LAT_MSGS	20
#define LAT_SLEEP_MS	20

/* Take each message LAT_SLEEP_MS after it arrives. */
static int slow_consumer(void *arg)
{
	struct mpq_queue *q = arg;
	char buf[64];
	size_t len;
	int i;

	for (i = 0; i < LAT_MSGS; i++) {
		while (mpq_queue_qsize(q) == 0)
			sleep_ms(1);
		sleep_ms(LAT_SLEEP_MS);
		len = sizeof(buf);
		if (mpq_queue_get(q, buf, &len, 0))
			return 1;
	}
	return 0;
}

TEST(mpqlat_counts_every_message_with_the_latency_injected)
{
	struct mpq_queue *q, *other;
	char id[32], *out, buf[64];
	struct tool t;
	const char *h, *p;
	long long in_range = 0, count, sum;
	pid_t pid;
	size_t len;
	int i, status;

	ASSERT_EQ(0, new_kmod_queue(&q, 4));
	ASSERT_EQ(0, new_kmod_queue(&other, 64));
	snprintf(id, sizeof(id), "%llu", (unsigned long long)queue_id(q));
	char *argv[] = { (char *)tool_path("mpqlat"), "-j", "-q", id, NULL };

	ASSERT_EQ(0, tool_start(&t, argv));
	pid = spawn(slow_consumer, q);
	for (i = 0; i < LAT_MSGS; i++) {
		ASSERT_EQ(0, mpq_queue_put(q, "m", 1, MPQ_FOREVER));
		/* Another queue's traffic, which -q must leave out. */
		ASSERT_EQ(0, mpq_queue_put(other, "o", 1, 0));
		len = sizeof(buf);
		ASSERT_EQ(0, mpq_queue_get(other, buf, &len, 0));
		while (mpq_queue_qsize(q) > 0)
			sleep_ms(1);
	}
	ASSERT_EQ(0, wait_child(pid, 30000));
	out = tool_stop(&t, &status);
	ASSERT_NE(NULL, out);
	ASSERT_EQ(0, status) TH_LOG("mpqlat: %s", out);

	count = json_num(out, "count");
	sum = json_num(out, "sum");
	ASSERT_EQ(LAT_MSGS, count) TH_LOG("mpqlat: %s", out);
	/* Microseconds: each waited LAT_SLEEP_MS and a little more. */
	ASSERT_LE(LAT_MSGS * LAT_SLEEP_MS * 1000LL, sum);
	ASSERT_GT(LAT_MSGS * 4 * LAT_SLEEP_MS * 1000LL, sum);
	h = strstr(out, "\"hist\": [");
	ASSERT_NE(NULL, h);
	/* Every bucket holding a message lies within 16.4 ms .. 65.5 ms. */
	for (p = strstr(h, "{\"low\": "); p; p = strstr(p + 1, "{\"low\": ")) {
		long long low = json_num(p, "low"), c = json_num(p, "count");

		ASSERT_LE(16384, low) TH_LOG("mpqlat: %s", out);
		ASSERT_GE(32768, low) TH_LOG("mpqlat: %s", out);
		in_range += c;
	}
	ASSERT_EQ(LAT_MSGS, in_range);
	free(out);
	mpq_queue_free(q);
	mpq_queue_free(other);
}

#define WAIT_MS		300

static int blocked_getter(void *arg)
{
	struct mpq_queue *q = arg;
	char buf[64];
	size_t len = sizeof(buf);

	return mpq_queue_get(q, buf, &len, MPQ_FOREVER) ? 1 : 0;
}

TEST(mpqwait_sees_a_blocked_get_with_its_time_and_process)
{
	struct mpq_queue *q;
	char id[32], *out, want[64];
	const char *row;
	struct tool t;
	long long total;
	pid_t pid;
	int status;

	ASSERT_EQ(0, new_kmod_queue(&q, 4));
	snprintf(id, sizeof(id), "%llu", (unsigned long long)queue_id(q));
	char *argv[] = { (char *)tool_path("mpqwait"), "-j", "-q", id, NULL };

	ASSERT_EQ(0, tool_start(&t, argv));
	pid = spawn(blocked_getter, q);
	sleep_ms(WAIT_MS);
	ASSERT_EQ(0, mpq_queue_put(q, "x", 1, 0));
	ASSERT_EQ(0, wait_child(pid, 10000));
	out = tool_stop(&t, &status);
	ASSERT_NE(NULL, out);
	ASSERT_EQ(0, status) TH_LOG("mpqwait: %s", out);

	snprintf(want, sizeof(want), "\"kind\": \"queue\", \"pid\": %d,", pid);
	row = strstr(out, want);
	ASSERT_NE(NULL, row) TH_LOG("mpqwait: %s", out);
	ASSERT_EQ(1, json_num(row, "count"));
	total = json_num(row, "total_ns");
	/* The getter started waiting a little after the clock started. */
	ASSERT_LE((WAIT_MS - 100) * NSEC_PER_MSEC, total) TH_LOG("%s", out);
	ASSERT_GE((WAIT_MS + 1000) * NSEC_PER_MSEC, total) TH_LOG("%s", out);
	free(out);
	mpq_queue_free(q);
}

/* Hold the lock for WAIT_MS, then let go. */
static int hold_lock_a_while(void *arg)
{
	struct mpq_lock *l = arg;

	if (mpq_lock_acquire(l, 0))
		return 1;
	sleep_ms(WAIT_MS);
	return mpq_lock_release(l) ? 2 : 0;
}

static int acquire_when_free(void *arg)
{
	struct mpq_lock *l = arg;

	/* Once the holder has it. */
	while (!mpq_lock_locked(l))
		sleep_ms(1);
	if (mpq_lock_acquire(l, 10 * NSEC_PER_SEC))
		return 1;
	return mpq_lock_release(l) ? 2 : 0;
}

TEST(mpqwait_sees_a_contended_lock_with_its_time_and_process)
{
	struct mpq_lock_attr attr = { .backend = MPQ_BACKEND_KMOD };
	char handle[MPQ_HANDLE_MAX], id[32], *out, want[64];
	struct mpq_lock *l;
	pid_t holder, waiter;
	long long total;
	const char *row;
	struct tool t;
	int status, fd;
	struct mpq_shm_info info = { .size = sizeof(info) };

	ASSERT_EQ(0, mpq_lock_new(&l, &attr));
	/* The lock's block is a module object: /proc/mpq's id is the key. */
	ASSERT_LT(0, mpq_lock_export(l, handle, sizeof(handle)));
	ASSERT_EQ(1, sscanf(handle, "mpq-lock:fd=%d", &fd));
	ASSERT_EQ(0, ioctl(fd, MPQ_IOC_SHM_INFO, &info));
	snprintf(id, sizeof(id), "%llu", (unsigned long long)info.id);
	char *argv[] = { (char *)tool_path("mpqwait"), "-j", "-q", id, NULL };

	ASSERT_EQ(0, tool_start(&t, argv));
	holder = spawn(hold_lock_a_while, l);
	waiter = spawn(acquire_when_free, l);
	ASSERT_EQ(0, wait_child(holder, 10000));
	ASSERT_EQ(0, wait_child(waiter, 10000));
	out = tool_stop(&t, &status);
	ASSERT_NE(NULL, out);
	ASSERT_EQ(0, status) TH_LOG("mpqwait: %s", out);

	snprintf(want, sizeof(want), "\"kind\": \"lock\", \"pid\": %d,", waiter);
	row = strstr(out, want);
	ASSERT_NE(NULL, row) TH_LOG("mpqwait: %s", out);
	ASSERT_EQ(1, json_num(row, "count"));
	total = json_num(row, "total_ns");
	/* It waited from just after the holder took it to WAIT_MS. */
	ASSERT_LE((WAIT_MS - 150) * NSEC_PER_MSEC, total) TH_LOG("%s", out);
	ASSERT_GE((WAIT_MS + 1000) * NSEC_PER_MSEC, total) TH_LOG("%s", out);
	free(out);
	mpq_lock_free(l);
}

static int hold_and_wait(void *arg)
{
	pause();
	return 0;
}

/* The next line of out (after *from) with these words in it, in order. */
static const char *line_with(const char **from, const char *const words[])
{
	const char *p = *from;

	while (p && *p) {
		const char *eol = strchr(p, '\n'), *q = p;
		size_t len = eol ? (size_t)(eol - p) : strlen(p);
		int k, ok = 1;

		for (k = 0; words[k]; k++) {
			const char *w = memmem(q, len - (q - p), words[k],
					       strlen(words[k]));

			if (!w) {
				ok = 0;
				break;
			}
			q = w + strlen(words[k]);
		}
		if (ok) {
			*from = p + len;
			return p;
		}
		p = eol ? eol + 1 : NULL;
	}
	return NULL;
}

TEST(mpqsnoop_prints_create_attach_fork_and_death_in_order)
{
	struct mpq_queue *q;
	char id[32], me[16], child[16], *out;
	const char *cur;
	struct tool t;
	pid_t pid;
	int status;
	char *argv[] = { (char *)tool_path("mpqsnoop"), NULL };

	ASSERT_EQ(0, tool_start(&t, argv));
	ASSERT_EQ(0, new_kmod_queue(&q, 4));
	snprintf(id, sizeof(id), " %llu ", (unsigned long long)queue_id(q));
	snprintf(me, sizeof(me), " %d ", getpid());
	pid = spawn(hold_and_wait, NULL);
	snprintf(child, sizeof(child), " %d ", pid);
	sleep_ms(100);
	kill(pid, SIGKILL);
	ASSERT_EQ(128 + SIGKILL, wait_child(pid, 10000));
	mpq_queue_free(q);
	sleep_ms(200);
	out = tool_stop(&t, &status);
	ASSERT_NE(NULL, out);
	ASSERT_EQ(0, status) TH_LOG("mpqsnoop: %s", out);

	cur = out;
	const char *create[] = { "create", id, "queue", me, NULL };
	const char *attach[] = { "attach", id, "queue", me, "mmap", NULL };
	const char *fork_[] = { "attach", id, "queue", " ? ", "fork by", NULL };
	const char *detach[] = { "detach", id, "queue", child, "mm gone", NULL };
	const char *died[] = { "died", id, "queue", child, NULL };
	const char *destroy[] = { "destroy", id, "queue", NULL };

	ASSERT_NE(NULL, line_with(&cur, create)) TH_LOG("mpqsnoop:\n%s", out);
	ASSERT_NE(NULL, line_with(&cur, attach)) TH_LOG("mpqsnoop:\n%s", out);
	ASSERT_NE(NULL, line_with(&cur, fork_)) TH_LOG("mpqsnoop:\n%s", out);
	ASSERT_NE(NULL, line_with(&cur, detach)) TH_LOG("mpqsnoop:\n%s", out);
	ASSERT_NE(NULL, line_with(&cur, died)) TH_LOG("mpqsnoop:\n%s", out);
	ASSERT_NE(NULL, line_with(&cur, destroy)) TH_LOG("mpqsnoop:\n%s", out);
	free(out);
}

static int hold_lock_until_killed(void *arg)
{
	if (mpq_lock_acquire(arg, 0))
		return 1;
	pause();
	return 0;
}

TEST(mpqsnoop_prints_the_death_of_a_lock_holder)
{
	struct mpq_lock_attr attr = { .backend = MPQ_BACKEND_KMOD };
	struct mpq_shm_info info = { .size = sizeof(info) };
	char handle[MPQ_HANDLE_MAX], id[32], dead[32], *out;
	char *argv[] = { (char *)tool_path("mpqsnoop"), NULL };
	struct mpq_lock *l;
	const char *cur;
	struct tool t;
	int status, fd;
	pid_t pid;

	ASSERT_EQ(0, tool_start(&t, argv));
	ASSERT_EQ(0, mpq_lock_new(&l, &attr));
	ASSERT_LT(0, mpq_lock_export(l, handle, sizeof(handle)));
	ASSERT_EQ(1, sscanf(handle, "mpq-lock:fd=%d", &fd));
	ASSERT_EQ(0, ioctl(fd, MPQ_IOC_SHM_INFO, &info));
	snprintf(id, sizeof(id), " %llu ", (unsigned long long)info.id);
	pid = spawn(hold_lock_until_killed, l);
	while (!mpq_lock_locked(l))
		sleep_ms(1);
	kill(pid, SIGKILL);
	ASSERT_EQ(128 + SIGKILL, wait_child(pid, 10000));
	snprintf(dead, sizeof(dead), "dead=%d lock", pid);
	/* The next holder recovers it. */
	ASSERT_EQ(-EOWNERDEAD, mpq_lock_acquire(l, 0));
	mpq_lock_free(l);
	sleep_ms(200);
	out = tool_stop(&t, &status);
	ASSERT_NE(NULL, out);
	ASSERT_EQ(0, status) TH_LOG("mpqsnoop: %s", out);
	cur = out;
	const char *died[] = { "ownerdead", id, "shm", dead, NULL };

	ASSERT_NE(NULL, line_with(&cur, died)) TH_LOG("mpqsnoop:\n%s", out);
	free(out);
}

/*
 * A busy queue until killed, so that a tool that loads slowly (TCG, a
 * loaded host) still sees traffic for its whole interval.
 */
static int busy_queue_until_killed(void *arg)
{
	struct mpq_queue *q = arg;
	char buf[64];
	size_t len;

	for (;;) {
		if (mpq_queue_put(q, "busy", 4, 0))
			return 1;
		len = sizeof(buf);
		if (mpq_queue_get(q, buf, &len, 0))
			return 2;
	}
}

TEST(mpqtop_shows_a_busy_queue_with_its_rates_and_depth)
{
	struct mpq_queue *q;
	char id[32], *out;
	const char *row;
	pid_t pid;
	int status;
	double puts = 0, gets = 0;
	char *argv[] = { (char *)tool_path("mpqtop"), "-C", "2", "1", NULL };

	ASSERT_EQ(0, new_kmod_queue(&q, 16));
	ASSERT_EQ(0, mpq_queue_put(q, "stays", 5, 0));	/* depth 1 */
	snprintf(id, sizeof(id), "\n%llu ", (unsigned long long)queue_id(q));
	pid = spawn(busy_queue_until_killed, q);
	out = tool_run(argv, &status, 0);
	kill(pid, SIGKILL);
	ASSERT_EQ(128 + SIGKILL, wait_child(pid, 30000));
	ASSERT_NE(NULL, out);
	ASSERT_EQ(0, status) TH_LOG("mpqtop: %s", out);
	row = strstr(out, id);
	ASSERT_NE(NULL, row) TH_LOG("mpqtop: %s", out);
	ASSERT_EQ(2, sscanf(row + strlen(id), " queue %lf %lf", &puts, &gets))
		TH_LOG("mpqtop: %s", out);
	ASSERT_LT(10, puts);
	ASSERT_LT(10, gets);
	/* The message that stays, and one of the loop's in flight or not. */
	ASSERT_TRUE(strstr(row, " 1/16 ") || strstr(row, " 2/16 "))
		TH_LOG("mpqtop: %s", out);
	free(out);
	mpq_queue_free(q);
}

static int64_t add_one(int64_t x)
{
	return x + 1;
}
MPQ_TASK_VALUE(add_one, int64_t, int64_t);

#define TOP_TASKS	1500
#define TOP_INTERVAL	"3"

TEST(mpqtop_counts_a_pools_tasks_started_and_finished)
{
	struct mpq_pool_attr attr = { .processes = 2 };
	static int64_t in[TOP_TASKS], res[TOP_TASKS];
	char *argv[] = { (char *)tool_path("mpqtop"), "-C", TOP_INTERVAL, "1",
			 NULL };
	double started = -1, finished = -1;
	struct mpq_pool *p;
	const char *row;
	struct tool t;
	int status, i, rows = 0;
	char *out;

	for (i = 0; i < TOP_TASKS; i++)
		in[i] = i;
	ASSERT_EQ(0, tool_start(&t, argv));
	/* Well inside the one interval, even under TCG: made, run, gone. */
	ASSERT_EQ(0, mpq_pool_new(&p, &attr));
	ASSERT_EQ(0, mpq_pool_map_values(p, add_one_task, in, sizeof(in[0]),
					 res, sizeof(res[0]), TOP_TASKS, 0));
	ASSERT_EQ(0, mpq_pool_close(p));
	ASSERT_EQ(0, mpq_pool_join(p, MPQ_FOREVER));
	mpq_pool_free(p);
	for (i = 0; i < TOP_TASKS; i++)
		ASSERT_EQ(i + 1, res[i]);
	out = slurp(t.out);
	status = wait_child(t.pid, 30000);
	close(t.err);
	ASSERT_NE(NULL, out);
	ASSERT_EQ(0, status) TH_LOG("mpqtop: %s", out);
	/* One pool row: every task started and finished, per second. */
	for (row = strstr(out, " pool "); row; row = strstr(row + 1, " pool ")) {
		ASSERT_EQ(2, sscanf(row, " pool %lf %lf", &started, &finished))
			TH_LOG("mpqtop: %s", out);
		rows++;
	}
	ASSERT_EQ(1, rows) TH_LOG("mpqtop: %s", out);
	ASSERT_EQ(TOP_TASKS / atoi(TOP_INTERVAL), (int)started)
		TH_LOG("mpqtop: %s", out);
	ASSERT_EQ(TOP_TASKS / atoi(TOP_INTERVAL), (int)finished)
		TH_LOG("mpqtop: %s", out);
	free(out);
}

/* Ids in mpqstat -j output, in order; returns how many. */
static int mpqstat_ids(uint64_t *ids, int max, char **text)
{
	char *argv[] = { (char *)tool_path("mpqstat"), "-j", NULL };
	int status, n = 0;
	char *out = tool_run(argv, &status, 1), *p;

	*text = out;
	if (!out || status)
		return -1;
	for (p = strstr(out, "{\"id\": "); p && n < max;
	     p = strstr(p + 1, "{\"id\": "))
		ids[n++] = strtoull(p + 7, NULL, 10);
	return n;
}

TEST(mpqstat_lists_exactly_the_objects_alive)
{
	struct mpq_queue *a, *b;
	struct mpq_conn *c0, *c1;
	struct mpq_pipe_attr ca = { .backend = MPQ_BACKEND_KMOD };
	uint64_t ids[16], want[3];
	char *text;
	int n;

	ASSERT_EQ(0, new_kmod_queue(&a, 4));
	ASSERT_EQ(0, new_kmod_queue(&b, 8));
	ASSERT_EQ(0, mpq_pipe(&c0, &c1, 1, &ca));
	want[0] = queue_id(a);
	want[1] = queue_id(b);
	n = mpqstat_ids(ids, 16, &text);
	ASSERT_EQ(3, n) TH_LOG("mpqstat: %s", text);
	ASSERT_EQ(want[0], ids[0]);
	ASSERT_EQ(want[1], ids[1]);
	ASSERT_LT(want[1], ids[2]);		/* the pipe, made last */
	ASSERT_NE(NULL, strstr(text, "\"type\": \"pipe\""));
	free(text);

	mpq_queue_free(a);
	mpq_queue_free(b);
	mpq_conn_free(c0);
	mpq_conn_free(c1);
	sleep_ms(50);				/* deferred fputs */
	n = mpqstat_ids(ids, 16, &text);
	ASSERT_EQ(0, n) TH_LOG("mpqstat: %s", text);
	free(text);
}

/*
 * A listing as a hostile name (or an older module that left control
 * bytes raw) would have it: mpqstat decodes \ooo and lets nothing a
 * terminal acts on through, in the table or in JSON.
 */
TEST(mpqstat_prints_hostile_names_safely)
{
	static const char listing[] =
		"id type name uid gid mode size depth capacity creator waiters nproc pids\n"
		"1 shm a\\033[2J\\040b\\134c\\303\\251\\377 0 0 0600 4096 0 0 1 0 0 -\n"
		"2 shm raw\033]0;x\007 0 0 0600 4096 0 0 1 0 0 -\n";
	char path[64], *argv[] = { (char *)tool_path("mpqstat"), "-f", path,
				   NULL, NULL };
	int fd = memfd_create("listing", 0), status;
	char *out, *c;

	ASSERT_LE(0, fd);
	ASSERT_EQ((ssize_t)sizeof(listing) - 1,
		  write(fd, listing, sizeof(listing) - 1));
	snprintf(path, sizeof(path), "/proc/%d/fd/%d", getpid(), fd);

	out = tool_run(argv, &status, 0);
	ASSERT_NE(NULL, out);
	ASSERT_EQ(0, status);
	for (c = out; *c == '\n' || (*c >= ' ' && *c < 0x7f); c++)
		;
	ASSERT_EQ(0, *c) TH_LOG("raw byte 0x%02x in: %s", (unsigned char)*c,
				out);
	ASSERT_NE(NULL, strstr(out, "a\\033[2J b")) TH_LOG("%s", out);
	ASSERT_NE(NULL, strstr(out, "raw\\033]0;x")) TH_LOG("%s", out);
	free(out);

	argv[3] = "-j";
	out = tool_run(argv, &status, 0);
	ASSERT_NE(NULL, out);
	ASSERT_EQ(0, status);
	ASSERT_NE(NULL, strstr(out, "\"name\": \"a\\u001b[2J b\\\\c\xc3\xa9\\u00ff\""))
		TH_LOG("%s", out);
	ASSERT_NE(NULL, strstr(out, "\"name\": \"raw\\u001b]0;x\\u0007\""))
		TH_LOG("%s", out);
	free(out);
	close(fd);
}

/* uid 0's row of mpqstat -u -j: its objects and bytes (0 without a row). */
static int mpqstat_root_usage(long long *objects, long long *bytes,
			      char **text)
{
	char *argv[] = { (char *)tool_path("mpqstat"), "-u", "-j", NULL };
	int status;
	char *out = tool_run(argv, &status, 1), *row;

	*text = out;
	if (!out || status || out[0] != '[')
		return -1;
	row = strstr(out, "{\"uid\": 0, ");
	*objects = row ? json_num(row, "objects") : 0;
	*bytes = row ? json_num(row, "bytes") : 0;
	return 0;
}

TEST(mpqstat_users_shows_what_each_user_holds)
{
	struct mpq_queue_info i = { .size = sizeof(i) };
	long long objects, bytes, objects2, bytes2;
	struct mpq_queue *q;
	char *text;

	ASSERT_EQ(0, mpqstat_root_usage(&objects, &bytes, &text))
		TH_LOG("mpqstat -u: %s", text);
	free(text);
	ASSERT_EQ(0, new_kmod_queue(&q, 4));
	ASSERT_EQ(0, ioctl(mpq_queue_fileno(q), MPQ_IOC_QUEUE_INFO, &i));
	ASSERT_EQ(0, mpqstat_root_usage(&objects2, &bytes2, &text));
	ASSERT_EQ(objects + 1, objects2) TH_LOG("mpqstat -u: %s", text);
	ASSERT_EQ(bytes + (long long)i.map_size, bytes2)
		TH_LOG("mpqstat -u: %s", text);
	ASSERT_NE(NULL, strstr(text, "\"max_objects\": "));
	ASSERT_NE(NULL, strstr(text, "\"names\": "));
	free(text);
	mpq_queue_free(q);
}

TEST(mpqlat_pins_its_maps_for_bpftool_and_removes_them)
{
	char *argv[] = { (char *)tool_path("mpqlat"), "-P", NULL };
	char *dump[] = { "/usr/sbin/bpftool", "map", "dump", "pinned",
			 "/sys/fs/bpf/mpq/mpqlat/hists", NULL };
	struct stat st;
	struct tool t;
	char *out;
	int status;

	ASSERT_EQ(0, tool_start(&t, argv));
	ASSERT_EQ(0, stat("/sys/fs/bpf/mpq/mpqlat/hists", &st));
	out = tool_run(dump, &status, 1);
	ASSERT_EQ(0, status) TH_LOG("bpftool: %s", out);
	free(out);
	out = tool_stop(&t, &status);
	ASSERT_EQ(0, status);
	free(out);
	ASSERT_EQ(-1, stat("/sys/fs/bpf/mpq/mpqlat", &st));
}

TEST(tools_say_in_one_line_when_the_library_is_missing)
{
	static const char *const tools[] = { "mpqlat", "mpqwait", "mpqtop" };
	unsigned int k;

	for (k = 0; k < 3; k++) {
		char *argv[] = { (char *)tool_path(tools[k]), "-l",
				 "/nonexistent/libmpq.so", NULL };
		int status;
		char *out = tool_run(argv, &status, 1);

		ASSERT_NE(NULL, out);
		ASSERT_EQ(1, status) TH_LOG("%s: %s", tools[k], out);
		ASSERT_NE(NULL, strstr(out, "/nonexistent/libmpq.so"));
		ASSERT_EQ(1, strchr(out, '\n') - out + 1 == (long)strlen(out))
			TH_LOG("%s: not one line: %s", tools[k], out);
		free(out);
	}
}

/*
 * Every line of out is one JSON value, as Python's json module parses
 * it (the strict check; the tests below look at the values by text).
 * Returns the number of lines, or -1 if one does not parse.
 */
static int json_lines(const char *out)
{
	FILE *py = popen("/usr/bin/python3 -c 'import json, sys\n"
			 "n = 0\n"
			 "for l in sys.stdin:\n"
			 "    json.loads(l); n += 1\n"
			 "sys.exit(min(n, 100))'", "w");
	int status;

	if (!py)
		return -1;
	fputs(out, py);
	status = pclose(py);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The line of out that holds every one of words, or NULL. */
static const char *json_line_with(const char *out, const char *const words[])
{
	const char *cur = out;

	return line_with(&cur, words);
}

TEST(mpqsnoop_json_prints_one_object_per_event)
{
	struct mpq_queue *q;
	char id[48], me[48], *out;
	struct tool t;
	int status, n;
	char *argv[] = { (char *)tool_path("mpqsnoop"), "-j", NULL };

	ASSERT_EQ(0, tool_start(&t, argv));
	ASSERT_EQ(0, new_kmod_queue(&q, 4));
	snprintf(id, sizeof(id), "\"id\": %llu,",
		 (unsigned long long)queue_id(q));
	snprintf(me, sizeof(me), "\"by_pid\": %d,", getpid());
	mpq_queue_free(q);
	sleep_ms(200);
	out = tool_stop(&t, &status);
	ASSERT_NE(NULL, out);
	ASSERT_EQ(0, status) TH_LOG("mpqsnoop -j: %s", out);

	/* No header: every line an event, and at least create and destroy. */
	n = json_lines(out);
	ASSERT_LE(2, n) TH_LOG("mpqsnoop -j: %s", out);
	const char *create[] = { "{\"time\": ", "\"event\": \"create\"", id,
				 "\"type\": \"queue\"", me, "\"size\": ", NULL };
	const char *destroy[] = { "\"event\": \"destroy\"", id, NULL };

	ASSERT_NE(NULL, json_line_with(out, create)) TH_LOG("mpqsnoop -j:\n%s", out);
	ASSERT_NE(NULL, json_line_with(out, destroy)) TH_LOG("mpqsnoop -j:\n%s", out);
	free(out);
}

TEST(mpqtop_json_prints_one_object_per_interval)
{
	struct mpq_queue *q;
	char id[48], *out;
	const char *row, *line;
	pid_t pid;
	int status;
	char *argv[] = { (char *)tool_path("mpqtop"), "-j", "1", "2", NULL };

	ASSERT_EQ(0, new_kmod_queue(&q, 16));
	ASSERT_EQ(0, mpq_queue_put(q, "stays", 5, 0));	/* depth 1 */
	snprintf(id, sizeof(id), "{\"id\": %llu, \"type\": \"queue\", ",
		 (unsigned long long)queue_id(q));
	pid = spawn(busy_queue_until_killed, q);
	out = tool_run(argv, &status, 0);
	kill(pid, SIGKILL);
	ASSERT_EQ(128 + SIGKILL, wait_child(pid, 30000));
	ASSERT_NE(NULL, out);
	ASSERT_EQ(0, status) TH_LOG("mpqtop -j: %s", out);
	/* Two intervals, two lines, and no screen-clearing escape. */
	ASSERT_EQ(2, json_lines(out)) TH_LOG("mpqtop -j: %s", out);
	ASSERT_EQ(NULL, strchr(out, '\033'));
	line = out;
	ASSERT_EQ(0, strncmp(line, "{\"time\": ", 9)) TH_LOG("mpqtop -j: %s", out);
	row = strstr(out, id);
	ASSERT_NE(NULL, row) TH_LOG("mpqtop -j: %s", out);
	ASSERT_LT(10, json_num(row, "puts_per_s")) TH_LOG("mpqtop -j: %s", out);
	ASSERT_LT(10, json_num(row, "gets_per_s"));
	ASSERT_EQ(16, json_num(row, "capacity")) TH_LOG("mpqtop -j: %s", out);
	/* The message that stays, and one of the loop's in flight or not. */
	ASSERT_LE(1, json_num(row, "depth"));
	ASSERT_GE(2, json_num(row, "depth"));
	free(out);
	mpq_queue_free(q);
}

/* A getter whose name has what JSON must escape: a quote, a backslash. */
static int hostile_blocked_getter(void *arg)
{
	prctl(PR_SET_NAME, "q\"\\\x01get", 0, 0, 0);
	return blocked_getter(arg);
}

TEST(mpqwait_json_escapes_a_process_name)
{
	struct mpq_queue *q;
	char id[32], *out;
	struct tool t;
	pid_t pid;
	int status;

	ASSERT_EQ(0, new_kmod_queue(&q, 4));
	snprintf(id, sizeof(id), "%llu", (unsigned long long)queue_id(q));
	char *argv[] = { (char *)tool_path("mpqwait"), "-j", "-q", id, NULL };

	ASSERT_EQ(0, tool_start(&t, argv));
	pid = spawn(hostile_blocked_getter, q);
	sleep_ms(100);
	ASSERT_EQ(0, mpq_queue_put(q, "x", 1, 0));
	ASSERT_EQ(0, wait_child(pid, 10000));
	out = tool_stop(&t, &status);
	ASSERT_NE(NULL, out);
	ASSERT_EQ(0, status) TH_LOG("mpqwait: %s", out);
	ASSERT_NE(NULL, strstr(out, "\"comm\": \"q\\\"\\\\\\u0001get\""))
		TH_LOG("mpqwait: %s", out);
	ASSERT_EQ(1, json_lines(out)) TH_LOG("mpqwait: %s", out);
	free(out);
	mpq_queue_free(q);
}

/* argv to run a tool as nobody with caps (setpriv's names, "" for none). */
#define AS_NOBODY(caps, ...)						\
	{ "/usr/bin/setpriv", "--reuid=65534", "--regid=65534",		\
	  "--clear-groups", "--inh-caps=" caps, "--ambient-caps=" caps,	\
	  "--", __VA_ARGS__, NULL }

/*
 * A copy of build/lib/libmpq.so.0 that the user nobody can read, in a
 * fresh directory under /tmp (path[] gets the file's name): the tree may
 * sit in a directory only root may enter (a clone under mktemp -d's
 * 0700), where nobody's mpqlat cannot open the library it is to trace.
 */
static int nobody_lib_copy(char *path, size_t len)
{
	char dir[] = "/tmp/mpq-tools.XXXXXX";
	int in, out, ret = 0;
	ssize_t n = 0;

	if (!mkdtemp(dir) || chmod(dir, 0755))
		return -errno;
	snprintf(path, len, "%s/libmpq.so.0", dir);
	in = open(tool_path("../lib/libmpq.so.0"), O_RDONLY | O_CLOEXEC);
	out = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	while (in >= 0 && out >= 0 && (n = sendfile(out, in, NULL, 1 << 20)) > 0)
		;
	if (in < 0 || out < 0 || n < 0)
		ret = -errno;
	if (in >= 0)
		close(in);
	if (out >= 0)
		close(out);
	return ret;
}

static void nobody_lib_remove(const char *path)
{
	char dir[4096];

	unlink(path);
	snprintf(dir, sizeof(dir), "%s", path);
	*strrchr(dir, '/') = 0;
	rmdir(dir);
}

/*
 * Capabilities, not the euid: as nobody without capabilities a tool says
 * what it needs in one line and exits 1; with CAP_BPF, CAP_PERFMON and
 * CAP_SYS_ADMIN (which Linux 6.1 asks for uprobes) mpqlat traces.
 */
TEST(bpf_tools_check_capabilities_not_the_euid)
{
	char lib[4096];

	ASSERT_EQ(0, nobody_lib_copy(lib, sizeof(lib)));
	char *none[] = AS_NOBODY("-all", (char *)tool_path("mpqlat"), "-l", lib,
				 "-j", "1", "1");
	char *all[] = AS_NOBODY("+bpf,+perfmon,+sys_admin",
				(char *)tool_path("mpqlat"), "-l", lib,
				"-j", "1", "1");
	char *two[] = AS_NOBODY("+bpf,+perfmon", (char *)tool_path("mpqlat"),
				"-l", lib, "-j", "1", "1");
	int status;
	char *out;

	out = tool_run(none, &status, 1);
	ASSERT_NE(NULL, out);
	ASSERT_EQ(1, status) TH_LOG("mpqlat without capabilities: %s", out);
	ASSERT_NE(NULL, strstr(out, "needs CAP_BPF and CAP_PERFMON")) TH_LOG("mpqlat: %s", out);
	ASSERT_EQ(1, strchr(out, '\n') - out + 1 == (long)strlen(out))
		TH_LOG("not one line: %s", out);
	free(out);

	out = tool_run(all, &status, 1);
	ASSERT_NE(NULL, out);
	ASSERT_EQ(0, status) TH_LOG("mpqlat as nobody with capabilities: %s", out);
	ASSERT_NE(NULL, strstr(out, "\"queues\": [")) TH_LOG("mpqlat: %s", out);
	free(out);

	/* The two alone: it traces, or names in one line what the kernel wants. */
	out = tool_run(two, &status, 1);
	ASSERT_NE(NULL, out);
	if (status) {
		ASSERT_EQ(1, status) TH_LOG("mpqlat: %s", out);
		ASSERT_NE(NULL, strstr(out, "CAP_SYS_ADMIN")) TH_LOG("mpqlat: %s", out);
		ASSERT_EQ(1, strchr(out, '\n') - out + 1 == (long)strlen(out))
			TH_LOG("not one line: %s", out);
	}
	free(out);
	nobody_lib_remove(lib);
}

/*
 * A tracepoint tool as a user: CAP_BPF and CAP_PERFMON, CAP_SYS_ADMIN
 * for Debian's kernel.perf_event_paranoid=3, and CAP_DAC_READ_SEARCH for
 * tracefs, which is root's alone.
 */
TEST(mpqsnoop_traces_as_a_user_with_capabilities)
{
	char *argv[] = AS_NOBODY("+bpf,+perfmon,+sys_admin,+dac_read_search",
				 (char *)tool_path("mpqsnoop"), "-j");
	char id[48], *out;
	struct mpq_queue *q;
	struct tool t;
	int status;

	ASSERT_EQ(0, tool_start(&t, argv));
	ASSERT_EQ(0, new_kmod_queue(&q, 4));
	snprintf(id, sizeof(id), "\"id\": %llu,", (unsigned long long)queue_id(q));
	mpq_queue_free(q);
	sleep_ms(200);
	out = tool_stop(&t, &status);
	ASSERT_NE(NULL, out);
	ASSERT_EQ(0, status) TH_LOG("mpqsnoop as nobody: %s", out);
	const char *create[] = { "\"event\": \"create\"", id, NULL };

	ASSERT_NE(NULL, json_line_with(out, create)) TH_LOG("mpqsnoop -j:\n%s", out);
	free(out);
}

/*
 * The hand-written contexts of tools/mpq_tp.h against the module's own
 * description of each event: a field that moved would make every tool
 * read garbage.
 */
struct field {
	const char *event, *name;
	size_t off, size;
};

#define F(ev, st, f) { ev, #f, offsetof(struct st, f), sizeof(((struct st *)0)->f) }

TEST(tracepoint_contexts_match_the_format_files)
{
	static const struct field fields[] = {
		F("mpq_obj_create", mpq_tp_create, id),
		F("mpq_obj_create", mpq_tp_create, type),
		F("mpq_obj_create", mpq_tp_create, pid),
		F("mpq_obj_create", mpq_tp_create, size),
		F("mpq_obj_create", mpq_tp_create, uid),
		F("mpq_obj_create", mpq_tp_create, mode),
		F("mpq_obj_destroy", mpq_tp_destroy, id),
		F("mpq_obj_destroy", mpq_tp_destroy, pid),
		F("mpq_attach", mpq_tp_member, id),
		F("mpq_attach", mpq_tp_member, pid),
		F("mpq_attach", mpq_tp_member, by),
		F("mpq_attach", mpq_tp_member, how),
		F("mpq_detach", mpq_tp_member, how),
		F("mpq_exit", mpq_tp_member, how),
		F("mpq_wait_begin", mpq_tp_wait, dir),
		F("mpq_wait_end", mpq_tp_wait, ret),
		F("mpq_poll_wake", mpq_tp_poll_wake, mask),
		F("mpq_poll_wake", mpq_tp_poll_wake, waiters),
		F("mpq_hangup", mpq_tp_hangup, end),
		F("mpq_owner_died", mpq_tp_owner_died, dead),
		F("mpq_owner_died", mpq_tp_owner_died, what),
		F("mpq_owner_died", mpq_tp_owner_died, pos),
	};
	unsigned int k;

	for (k = 0; k < sizeof(fields) / sizeof(fields[0]); k++) {
		const struct field *f = &fields[k];
		char path[256], line[512], want[64];
		unsigned int off = 0, size = 0;
		int found = 0;
		FILE *fp;

		snprintf(path, sizeof(path),
			 "/sys/kernel/tracing/events/mpq/%s/format", f->event);
		fp = fopen(path, "r");
		ASSERT_NE(NULL, fp) TH_LOG("%s: %s", path, strerror(errno));
		snprintf(want, sizeof(want), " %s;", f->name);
		while (fgets(line, sizeof(line), fp)) {
			char *p = strstr(line, want);

			if (!p || !strstr(line, "field:"))
				continue;
			ASSERT_EQ(2, sscanf(strstr(line, "offset:"),
					    "offset:%u;\tsize:%u;", &off, &size));
			found = 1;
		}
		fclose(fp);
		ASSERT_EQ(1, found) TH_LOG("%s has no field %s", f->event, f->name);
		ASSERT_EQ(f->off, off) TH_LOG("%s.%s", f->event, f->name);
		ASSERT_EQ(f->size, size) TH_LOG("%s.%s", f->event, f->name);
	}
}

TEST_HARNESS_MAIN
