// SPDX-License-Identifier: GPL-2.0
/*
 * The promises of mpq_process, one test each: Python's Process semantics
 * (exit codes, signals, join timeouts, daemons, current and parent
 * process, active_children), both start methods, objects handed to a
 * spawned child, fork safety with threads, and bad input.
 *
 * Spawned children are this test binary executed again. The harness owns
 * main(), so mpq_init() runs from a constructor below, after MPQ_TARGET's
 * registrations (they have a higher priority): in a spawned child it runs
 * the target and exits before the harness starts. Spawned children do not
 * share the memory that shared_alloc() gives forked ones, so they report
 * through their exit codes or a queue.
 */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>

#include "kselftest_harness.h"
#include "helpers.h"

static void __attribute__((constructor)) run_spawned_target(void)
{
	mpq_init(NULL, NULL);
}

/* Memory that forked children report through. */
struct report {
	int ready;
	int go;
	int done;
	int pid;
	int value;
	char name[64];
};

static struct report *report_new(void)
{
	struct report *r = shared_alloc(sizeof(*r));

	if (r)
		memset(r, 0, sizeof(*r));
	return r;
}

static int arg_int(const void *arg, size_t len)
{
	int v = -1;

	if (len == sizeof(v))
		memcpy(&v, arg, sizeof(v));
	return v;
}

/* Exit with the int in arg. */
static int return_arg(const void *arg, size_t len)
{
	return arg_int(arg, len);
}
MPQ_TARGET(return_arg);

/* Be ended by the signal whose number is in arg. */
static int raise_arg(const void *arg, size_t len)
{
	raise(arg_int(arg, len));
	return 100;
}
MPQ_TARGET(raise_arg);

/*
 * Longer than any test runs, but bounded: were a test to fail before it
 * ends its children, none may outlive it for good, holding the runner's
 * output pipe open.
 */
static int sleep_a_minute(const void *arg, size_t len)
{
	sleep_ms(60000);
	return 0;
}
MPQ_TARGET(sleep_a_minute);

/* Sleep for the milliseconds in arg. */
static int sleep_arg_ms(const void *arg, size_t len)
{
	sleep_ms(arg_int(arg, len));
	return 0;
}
MPQ_TARGET(sleep_arg_ms);

/* Say ready, then wait for go (forked children: arg is a struct report *). */
static int ready_then_wait_for_go(const void *arg, size_t len)
{
	struct report *r = *(struct report *const *)arg;

	r->pid = getpid();
	set_flag(&r->ready, 1);
	return wait_for_flag(&r->go, 20000) ? 0 : 1;
}

static struct mpq_process *start(mpq_target_fn fn, const void *arg,
				 size_t len, int method, int daemon)
{
	struct mpq_process_attr attr = {
		.start_method = method,
		.daemon = daemon,
	};
	struct mpq_process *p;

	if (mpq_process_new(&p, fn, arg, len, &attr))
		return NULL;
	if (mpq_process_start(p)) {
		mpq_process_free(p);
		return NULL;
	}
	return p;
}

static struct mpq_process *start_int(mpq_target_fn fn, int v, int method)
{
	return start(fn, &v, sizeof(v), method, 0);
}

/* Join without a bound the harness could not report, then the exit code. */
static int join_exitcode(struct mpq_process *p)
{
	int code;

	if (mpq_process_join(p, 20 * NSEC_PER_SEC))
		return 1000;
	if (mpq_process_exitcode(p, &code))
		return 2000;
	return code;
}

/* The tests that both start methods must pass. */
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

TEST_F(method, exitcode_is_the_targets_return_value)
{
	static const int codes[] = { 0, 1, 42, 255 };
	struct mpq_process *p;
	unsigned int i;

	for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		p = start_int(return_arg, codes[i], variant->start_method);
		ASSERT_NE(NULL, p);
		EXPECT_EQ(codes[i], join_exitcode(p));
		EXPECT_EQ(0, mpq_process_is_alive(p));
		mpq_process_free(p);
	}
}

TEST_F(method, exitcode_is_minus_the_signal_that_ended_the_process)
{
	static const int sigs[] = { SIGUSR1, SIGKILL, SIGTERM };
	struct mpq_process *p;
	unsigned int i;

	for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		p = start_int(raise_arg, sigs[i], variant->start_method);
		ASSERT_NE(NULL, p);
		EXPECT_EQ(-sigs[i], join_exitcode(p));
		mpq_process_free(p);
	}
}

TEST_F(method, terminate_sends_sigterm_and_kill_sends_sigkill)
{
	struct mpq_process *p;

	p = start(sleep_a_minute, NULL, 0, variant->start_method, 0);
	ASSERT_NE(NULL, p);
	ASSERT_EQ(0, mpq_process_terminate(p));
	EXPECT_EQ(-SIGTERM, join_exitcode(p));
	mpq_process_free(p);

	p = start(sleep_a_minute, NULL, 0, variant->start_method, 0);
	ASSERT_NE(NULL, p);
	ASSERT_EQ(0, mpq_process_kill(p));
	EXPECT_EQ(-SIGKILL, join_exitcode(p));
	mpq_process_free(p);
}

/* Spawned: the name, daemon flag and parent pid arrive; returns a mask. */
static int check_self_and_parent(const void *arg, size_t len)
{
	struct mpq_process *me = mpq_current_process();
	struct mpq_process *parent = mpq_parent_process();
	int bad = 0, ppid = 0;

	if (len != 8 + sizeof(ppid) || memcmp(arg, "worker-7", 8))
		bad |= 1;
	else
		memcpy(&ppid, (const char *)arg + 8, sizeof(ppid));
	if (strcmp(mpq_process_name(me), "worker-7"))
		bad |= 2;
	if (mpq_process_pid(me) != getpid() || mpq_process_is_alive(me) != 1)
		bad |= 4;
	if (mpq_process_daemon(me) != 1)
		bad |= 8;
	if (!parent || strcmp(mpq_process_name(parent), "MainProcess"))
		return bad | 16;
	/* The starter, also for a fork server's child (getppid: the server). */
	if (mpq_process_pid(parent) != ppid)
		bad |= 32;
	if (mpq_process_is_alive(parent) != 1 ||
	    mpq_process_join(parent, 0) != -EAGAIN)
		bad |= 64;
	return bad;
}
MPQ_TARGET(check_self_and_parent);

TEST_F(method, a_child_knows_its_name_daemon_flag_and_parent)
{
	struct mpq_process_attr attr = {
		.name = "worker-7",
		.daemon = 1,
		.start_method = variant->start_method,
	};
	char arg[8 + sizeof(int)] = "worker-7";
	struct mpq_process *p;
	int me = getpid();

	memcpy(arg + 8, &me, sizeof(me));
	ASSERT_EQ(0, mpq_process_new(&p, check_self_and_parent, arg,
				     sizeof(arg), &attr));
	ASSERT_EQ(0, mpq_process_start(p));
	EXPECT_EQ(0, join_exitcode(p));
	EXPECT_STREQ("worker-7", mpq_process_name(p));
	EXPECT_EQ(1, mpq_process_daemon(p));
	mpq_process_free(p);
}

/* Returns 0 if arg holds "original", whatever the parent did since. */
static int check_arg_is_original(const void *arg, size_t len)
{
	return len == 9 && !memcmp(arg, "original", 9) ? 0 : 1;
}
MPQ_TARGET(check_arg_is_original);

TEST_F(method, arg_bytes_are_copied_when_the_process_is_made)
{
	struct mpq_process_attr attr = { .start_method = variant->start_method };
	char buf[9] = "original";
	struct mpq_process *p;

	ASSERT_EQ(0, mpq_process_new(&p, check_arg_is_original, buf,
				     sizeof(buf), &attr));
	memcpy(buf, "changed!", sizeof(buf));
	ASSERT_EQ(0, mpq_process_start(p));
	EXPECT_EQ(0, join_exitcode(p));
	mpq_process_free(p);
}

/* A daemon that tries to start a child: 0 if refused with -EPERM. */
static int daemon_starts_a_child(const void *arg, size_t len)
{
	struct mpq_process *c;
	int ret;

	if (mpq_process_new(&c, return_arg, NULL, 0, NULL))
		return 2;
	ret = mpq_process_start(c);
	mpq_process_free(c);
	return ret == -EPERM ? 0 : 1;
}
MPQ_TARGET(daemon_starts_a_child);

TEST_F(method, a_daemon_process_cannot_start_children)
{
	struct mpq_process *p;

	p = start(daemon_starts_a_child, NULL, 0, variant->start_method, 1);
	ASSERT_NE(NULL, p);
	EXPECT_EQ(0, join_exitcode(p));
	mpq_process_free(p);
}

/*
 * Forked middle process: start a daemon with the method in r->value,
 * report its pid, then wait to be killed.
 */
static int start_daemon_then_wait(const void *arg, size_t len)
{
	struct report *r = *(struct report *const *)arg;
	struct mpq_process *d;

	d = start(sleep_a_minute, NULL, 0, r->value, 1);
	if (!d)
		return 1;
	r->pid = mpq_process_pid(d);
	set_flag(&r->ready, 1);
	sleep_ms(60000);
	return 0;
}

TEST_F(method, a_daemon_dies_with_its_parent_even_when_the_parent_is_killed)
{
	struct report *r = report_new();
	struct mpq_process *middle;
	int dfd;

	ASSERT_NE(NULL, r);
	r->value = variant->start_method;
	middle = start(start_daemon_then_wait, &r, sizeof(r), MPQ_START_FORK, 0);
	ASSERT_NE(NULL, middle);
	ASSERT_EQ(1, wait_for_flag(&r->ready, 20000));
	dfd = pidfd_of(r->pid);
	ASSERT_LE(0, dfd);
	EXPECT_FALSE(readable_within(dfd, 0));
	/* No atexit here: only PR_SET_PDEATHSIG can end the daemon. */
	ASSERT_EQ(0, mpq_process_kill(middle));
	EXPECT_EQ(-SIGKILL, join_exitcode(middle));
	EXPECT_TRUE(readable_within(dfd, 10000));
	close(dfd);
	mpq_process_free(middle);
}

TEST(exitcode_and_pid_are_eagain_before_start_and_exitcode_while_running)
{
	struct report *r = report_new();
	struct mpq_process *p;
	int code = 12345;

	ASSERT_NE(NULL, r);
	ASSERT_EQ(0, mpq_process_new(&p, ready_then_wait_for_go, &r,
				     sizeof(r), NULL));
	EXPECT_EQ(-EAGAIN, mpq_process_exitcode(p, &code));
	EXPECT_EQ(-EAGAIN, mpq_process_pid(p));
	ASSERT_EQ(0, mpq_process_start(p));
	ASSERT_EQ(1, wait_for_flag(&r->ready, 20000));
	EXPECT_EQ(-EAGAIN, mpq_process_exitcode(p, &code));
	EXPECT_EQ(12345, code);
	set_flag(&r->go, 1);
	EXPECT_EQ(0, join_exitcode(p));
	mpq_process_free(p);
}

TEST(join_times_out_with_etimedout_on_time_and_zero_timeout_is_eagain)
{
	struct mpq_process *p = start(sleep_a_minute, NULL, 0, 0, 0);
	int64_t t0, dt;

	ASSERT_NE(NULL, p);
	t0 = now_ns();
	EXPECT_EQ(-EAGAIN, mpq_process_join(p, 0));
	EXPECT_LT(now_ns() - t0, NSEC_PER_SEC);
	t0 = now_ns();
	EXPECT_EQ(-ETIMEDOUT, mpq_process_join(p, 100 * NSEC_PER_MSEC));
	dt = now_ns() - t0;
	/* Never early; late only by scheduling (bound: no hang). */
	EXPECT_GE(dt, 100 * NSEC_PER_MSEC);
	EXPECT_LT(dt, 5 * NSEC_PER_SEC);
	EXPECT_EQ(1, mpq_process_is_alive(p));
	ASSERT_EQ(0, mpq_process_kill(p));
	EXPECT_EQ(0, mpq_process_join(p, MPQ_FOREVER));
	mpq_process_free(p);
}

TEST(join_returns_as_soon_as_the_process_ends)
{
	struct mpq_process *p = start_int(sleep_arg_ms, 100, 0);
	int64_t t0 = now_ns(), dt;

	ASSERT_NE(NULL, p);
	EXPECT_EQ(0, mpq_process_join(p, 20 * NSEC_PER_SEC));
	dt = now_ns() - t0;
	EXPECT_GE(dt, 90 * NSEC_PER_MSEC);
	EXPECT_LT(dt, 10 * NSEC_PER_SEC);
	/* A joined process joins again at once. */
	EXPECT_EQ(0, mpq_process_join(p, 0));
	mpq_process_free(p);
}

TEST(is_alive_is_true_from_start_until_the_end)
{
	struct report *r = report_new();
	struct mpq_process *p;

	ASSERT_NE(NULL, r);
	ASSERT_EQ(0, mpq_process_new(&p, ready_then_wait_for_go, &r,
				     sizeof(r), NULL));
	EXPECT_EQ(0, mpq_process_is_alive(p));
	ASSERT_EQ(0, mpq_process_start(p));
	EXPECT_EQ(1, mpq_process_is_alive(p));
	ASSERT_EQ(1, wait_for_flag(&r->ready, 20000));
	EXPECT_EQ(1, mpq_process_is_alive(p));
	set_flag(&r->go, 1);
	EXPECT_EQ(0, join_exitcode(p));
	EXPECT_EQ(0, mpq_process_is_alive(p));
	mpq_process_free(p);
}

TEST(pid_is_the_childs_own_pid_and_stays_after_the_end)
{
	struct report *r = report_new();
	struct mpq_process *p;

	ASSERT_NE(NULL, r);
	set_flag(&r->go, 1);
	p = start(ready_then_wait_for_go, &r, sizeof(r), 0, 0);
	ASSERT_NE(NULL, p);
	ASSERT_EQ(1, wait_for_flag(&r->ready, 20000));
	EXPECT_EQ(r->pid, mpq_process_pid(p));
	EXPECT_EQ(0, join_exitcode(p));
	EXPECT_EQ(r->pid, mpq_process_pid(p));
	mpq_process_free(p);
}

TEST(sentinel_becomes_readable_when_the_process_ends)
{
	struct report *r = report_new();
	struct mpq_process *p;
	int fd;

	ASSERT_NE(NULL, r);
	ASSERT_EQ(0, mpq_process_new(&p, ready_then_wait_for_go, &r,
				     sizeof(r), NULL));
	EXPECT_EQ(-EINVAL, mpq_process_sentinel(p));
	ASSERT_EQ(0, mpq_process_start(p));
	fd = mpq_process_sentinel(p);
	ASSERT_LE(0, fd);
	ASSERT_EQ(1, wait_for_flag(&r->ready, 20000));
	EXPECT_FALSE(readable_within(fd, 50));
	set_flag(&r->go, 1);
	EXPECT_TRUE(readable_within(fd, 20000));
	/* Not reaped by the sentinel: the exit code is still there. */
	EXPECT_EQ(0, join_exitcode(p));
	EXPECT_EQ(fd, mpq_process_sentinel(p));
	EXPECT_TRUE(readable_within(fd, 0));
	EXPECT_EQ(0, mpq_process_close(p));
	EXPECT_EQ(-EBADF, mpq_process_sentinel(p));
	mpq_process_free(p);
}

/* Forked: report our own name. */
static int report_name(const void *arg, size_t len)
{
	struct report *r = *(struct report *const *)arg;

	snprintf(r->name, sizeof(r->name), "%s",
		 mpq_process_name(mpq_current_process()));
	return 0;
}

/* Forked: start a grandchild with a default name, which reports it. */
static int start_named_grandchild(const void *arg, size_t len)
{
	struct mpq_process *g = start(report_name, arg, len, 0, 0);

	return g ? join_exitcode(g) : 1;
}

TEST(names_default_to_process_n_counted_per_parent_as_python_does)
{
	struct mpq_process_attr attr = { .name = "worker" };
	struct mpq_process *a, *b, *c;
	struct report *r = report_new();
	char want[80];

	ASSERT_NE(NULL, r);
	ASSERT_EQ(0, mpq_process_new(&a, return_arg, NULL, 0, NULL));
	ASSERT_EQ(0, mpq_process_new(&b, start_named_grandchild, &r,
				     sizeof(r), NULL));
	ASSERT_EQ(0, mpq_process_new(&c, report_name, &r, sizeof(r), &attr));
	ASSERT_EQ(0, strncmp(mpq_process_name(a), "Process-", 8));
	/* Python: Process-N, then Process-N+1 for the next one made. */
	snprintf(want, sizeof(want), "Process-%d",
		 atoi(mpq_process_name(a) + 8) + 1);
	EXPECT_STREQ(want, mpq_process_name(b));
	EXPECT_STREQ("worker", mpq_process_name(c));

	/* The grandchild of Process-N is Process-N:1. */
	ASSERT_EQ(0, mpq_process_start(b));
	EXPECT_EQ(0, join_exitcode(b));
	snprintf(want, sizeof(want), "%s:1", mpq_process_name(b));
	EXPECT_STREQ(want, r->name);
	/* A child's current process has the child's name. */
	ASSERT_EQ(0, mpq_process_start(c));
	EXPECT_EQ(0, join_exitcode(c));
	EXPECT_STREQ("worker", r->name);
	mpq_process_free(a);
	mpq_process_free(b);
	mpq_process_free(c);
}

TEST(the_main_process_is_mainprocess_and_has_no_parent)
{
	struct mpq_process *me = mpq_current_process();
	int code;

	ASSERT_NE(NULL, me);
	EXPECT_STREQ("MainProcess", mpq_process_name(me));
	EXPECT_EQ(getpid(), mpq_process_pid(me));
	EXPECT_EQ(1, mpq_process_is_alive(me));
	EXPECT_EQ(0, mpq_process_daemon(me));
	EXPECT_EQ(-EAGAIN, mpq_process_exitcode(me, &code));
	EXPECT_EQ(-EDEADLK, mpq_process_join(me, 0));
	EXPECT_EQ(-EINVAL, mpq_process_start(me));
	EXPECT_EQ(-EINVAL, mpq_process_terminate(me));
	EXPECT_EQ(-EINVAL, mpq_process_close(me));
	mpq_process_free(me);	/* the library's: ignored */
	EXPECT_EQ(me, mpq_current_process());
	EXPECT_EQ(NULL, mpq_parent_process());
}

/* Forked grandchild: wait for the parent to end, report what join saw. */
static int watch_parent(const void *arg, size_t len)
{
	struct report *r = *(struct report *const *)arg;
	struct mpq_process *parent = mpq_parent_process();
	int ret;

	if (!parent || mpq_process_sentinel(parent) < 0)
		return 1;
	r->pid = getpid();
	set_flag(&r->ready, 1);
	ret = mpq_process_join(parent, 20 * NSEC_PER_SEC);
	r->value = ret == 0 && mpq_process_is_alive(parent) == 0 &&
		   readable_within(mpq_process_sentinel(parent), 0);
	set_flag(&r->done, 1);
	return 0;
}

/* Forked: start watch_parent, wait until it watches, then vanish. */
static int start_watcher_then_vanish(const void *arg, size_t len)
{
	struct report *r = *(struct report *const *)arg;

	if (!start(watch_parent, arg, len, 0, 0))
		return 1;
	wait_for_flag(&r->ready, 20000);
	/* _exit: the exit handler would join the watcher, who waits for us. */
	_exit(0);
}

TEST(a_childs_parent_sentinel_becomes_readable_when_the_parent_ends)
{
	struct report *r = report_new();
	struct mpq_process *p;

	ASSERT_NE(NULL, r);
	/* The orphaned watcher comes to us, to be reaped. */
	ASSERT_EQ(0, prctl(PR_SET_CHILD_SUBREAPER, 1));
	p = start(start_watcher_then_vanish, &r, sizeof(r), 0, 0);
	ASSERT_NE(NULL, p);
	EXPECT_EQ(0, join_exitcode(p));
	ASSERT_EQ(1, wait_for_flag(&r->done, 20000));
	EXPECT_EQ(1, r->value);
	EXPECT_EQ(0, wait_child(r->pid, 20000));
	mpq_process_free(p);
}

static int in(struct mpq_process **list, int n, struct mpq_process *p)
{
	while (n--)
		if (list[n] == p)
			return 1;
	return 0;
}

TEST(active_children_lists_running_children_and_reaps_ended_ones)
{
	struct mpq_process *a, *b, *quick, *list[8];
	siginfo_t si;
	pid_t qpid;
	int code;

	a = start(sleep_a_minute, NULL, 0, 0, 0);
	b = start(sleep_a_minute, NULL, 0, 0, 0);
	quick = start_int(return_arg, 3, 0);
	ASSERT_TRUE(a && b && quick);
	qpid = mpq_process_pid(quick);
	/* Ended, not reaped: the sentinel says so without reaping. */
	ASSERT_TRUE(readable_within(mpq_process_sentinel(quick), 20000));
	ASSERT_EQ(2, mpq_active_children(list, 8));
	EXPECT_TRUE(in(list, 2, a) && in(list, 2, b));
	/* quick was reaped by that call, and its exit code kept. */
	EXPECT_EQ(-1, waitid(P_PID, qpid, &si, WEXITED | WNOHANG | WNOWAIT));
	EXPECT_EQ(ECHILD, errno);
	EXPECT_EQ(0, mpq_process_exitcode(quick, &code));
	EXPECT_EQ(3, code);
	/* The count is the whole count; out gets what fits. */
	EXPECT_EQ(2, mpq_active_children(NULL, 0));
	list[1] = NULL;
	EXPECT_EQ(2, mpq_active_children(list, 1));
	EXPECT_TRUE(in(list, 1, a) || in(list, 1, b));
	EXPECT_EQ(NULL, list[1]);
	EXPECT_EQ(-EINVAL, mpq_active_children(list, -1));
	EXPECT_EQ(-EINVAL, mpq_active_children(NULL, 1));
	mpq_process_kill(a);
	mpq_process_kill(b);
	EXPECT_EQ(0, mpq_process_join(a, MPQ_FOREVER));
	EXPECT_EQ(0, mpq_process_join(b, MPQ_FOREVER));
	EXPECT_EQ(0, mpq_active_children(list, 8));
	mpq_process_free(a);
	mpq_process_free(b);
	mpq_process_free(quick);
}

TEST(cpu_count_is_the_cpus_this_process_may_run_on)
{
	cpu_set_t set;
	int first;

	ASSERT_EQ(0, sched_getaffinity(0, sizeof(set), &set));
	EXPECT_EQ(CPU_COUNT(&set), mpq_cpu_count());
	for (first = 0; !CPU_ISSET(first, &set); first++)
		;
	CPU_ZERO(&set);
	CPU_SET(first, &set);
	ASSERT_EQ(0, sched_setaffinity(0, sizeof(set), &set));
	EXPECT_EQ(1, mpq_cpu_count());
}

/*
 * Forked middle process: start a daemon and a slow non-daemon, report the
 * daemon's pid, wait for go, then exit(3) and so run the exit handler.
 */
static int start_two_then_exit(const void *arg, size_t len)
{
	struct report *r = *(struct report *const *)arg;
	/*
	 * Still referenced when exit(3) runs LeakSanitizer: volatile, or
	 * the compiler drops the stores to a variable nothing reads.
	 */
	static struct mpq_process *volatile d, *volatile n;

	d = start(sleep_a_minute, NULL, 0, 0, 1);
	n = start(ready_then_wait_for_go, arg, len, 0, 0);
	if (!d || !n)
		return 1;
	wait_for_flag(&r->ready, 20000);
	r->value = mpq_process_pid(d);
	set_flag(&r->done, 1);
	wait_for_flag(&r->go, 20000);
	exit(7);
}

TEST(at_exit_daemons_are_terminated_and_other_children_joined)
{
	struct report *r = report_new();
	struct mpq_process *p;
	int dfd;

	ASSERT_NE(NULL, r);
	p = start(start_two_then_exit, &r, sizeof(r), 0, 0);
	ASSERT_NE(NULL, p);
	ASSERT_EQ(1, wait_for_flag(&r->done, 20000));
	dfd = pidfd_of(r->value);
	ASSERT_LE(0, dfd);
	/* One go lets both the middle and its non-daemon child end. */
	set_flag(&r->go, 1);
	EXPECT_EQ(7, join_exitcode(p));
	/* Both of the middle's children were reaped before it ended. */
	EXPECT_TRUE(readable_within(dfd, 0));
	EXPECT_EQ(-1, kill(r->pid, 0));
	EXPECT_EQ(-1, kill(r->value, 0));
	close(dfd);
	mpq_process_free(p);
}

/* Forked: a daemon that ignores SIGTERM, and exit; 0 if exit came soon. */
static int start_stubborn_daemon_then_return(const void *arg, size_t len)
{
	struct report *r = *(struct report *const *)arg;
	struct mpq_process *d;

	signal(SIGTERM, SIG_IGN);	/* inherited by the daemon */
	d = start(sleep_a_minute, NULL, 0, 0, 1);
	if (!d)
		return 1;
	r->value = mpq_process_pid(d);
	set_flag(&r->done, 1);
	return 0;
}

TEST(at_exit_a_daemon_that_ignores_sigterm_is_killed_after_a_grace)
{
	struct report *r = report_new();
	struct mpq_process *p;
	int64_t t0 = now_ns(), dt;

	ASSERT_NE(NULL, r);
	p = start(start_stubborn_daemon_then_return, &r, sizeof(r), 0, 0);
	ASSERT_NE(NULL, p);
	EXPECT_EQ(0, join_exitcode(p));
	dt = now_ns() - t0;
	EXPECT_EQ(1, r->done);
	EXPECT_EQ(-1, kill(r->value, 0));
	EXPECT_LT(dt, 10 * NSEC_PER_SEC);
	mpq_process_free(p);
}

static int touched;

/* 0 in a fresh copy of the program, 1 in a forked copy of the test. */
static int report_touched(const void *arg, size_t len)
{
	return touched;
}
MPQ_TARGET(report_touched);

TEST(spawn_runs_the_target_in_a_fresh_copy_of_the_program)
{
	struct mpq_process *p;

	touched = 1;
	p = start(report_touched, NULL, 0, MPQ_START_SPAWN, 0);
	ASSERT_NE(NULL, p);
	EXPECT_EQ(0, join_exitcode(p));
	mpq_process_free(p);
	p = start(report_touched, NULL, 0, MPQ_START_FORK, 0);
	ASSERT_NE(NULL, p);
	EXPECT_EQ(1, join_exitcode(p));
	mpq_process_free(p);
}

/* Never registered with MPQ_TARGET. */
static int unregistered(const void *arg, size_t len)
{
	return 0;
}

TEST(spawn_of_an_unregistered_target_is_enoent)
{
	struct mpq_process_attr attr = { .start_method = MPQ_START_SPAWN };
	struct mpq_process *p;
	int err, null;

	ASSERT_EQ(0, mpq_process_new(&p, unregistered, NULL, 0, &attr));
	EXPECT_EQ(-ENOENT, mpq_process_start(p));
	EXPECT_EQ(0, mpq_process_is_alive(p));
	EXPECT_EQ(0, mpq_active_children(NULL, 0));
	/*
	 * Registered only now, after mpq_init(): the parent starts it, but
	 * the fresh copy of the program does not know the name, says so on
	 * stderr (silenced here) and exits with 127.
	 */
	ASSERT_EQ(0, mpq_register_target("unregistered", unregistered));
	err = dup(STDERR_FILENO);
	null = open("/dev/null", O_WRONLY);
	ASSERT_LE(0, dup2(null, STDERR_FILENO));
	EXPECT_EQ(0, mpq_process_start(p));
	dup2(err, STDERR_FILENO);
	EXPECT_EQ(127, join_exitcode(p));
	mpq_process_free(p);
	close(err);
	close(null);
}

/* Spawned: open the queue the handle in arg names, put a greeting. */
static int put_into_imported_queue(const void *arg, size_t len)
{
	char handle[MPQ_HANDLE_MAX], msg[64];
	struct mpq_queue *q;
	int n;

	if (len >= sizeof(handle))
		return 1;
	memcpy(handle, arg, len);
	handle[len] = '\0';
	if (mpq_queue_import(&q, handle))
		return 2;
	n = snprintf(msg, sizeof(msg), "hello from %d", (int)getpid());
	if (mpq_queue_put(q, msg, (size_t)n, 10 * NSEC_PER_SEC))
		return 3;
	mpq_queue_free(q);
	return 0;
}
MPQ_TARGET(put_into_imported_queue);

TEST(a_queue_reaches_a_spawned_child_through_its_export_handle)
{
	struct mpq_queue_attr qattr = { .maxsize = 8, .msgsize = 64 };
	char handle[MPQ_HANDLE_MAX], buf[64], want[64];
	struct mpq_process *p;
	struct mpq_queue *q;
	size_t len = sizeof(buf);
	int n;

	ASSERT_EQ(0, mpq_queue_new(&q, &qattr));
	n = mpq_queue_export(q, handle, sizeof(handle));
	ASSERT_LT(0, n);
	EXPECT_EQ(strlen(handle), (size_t)n);
	EXPECT_EQ(0, strncmp(handle, "mpq-queue:fd=", 13));
	p = start(put_into_imported_queue, handle, (size_t)n,
		  MPQ_START_SPAWN, 0);
	ASSERT_NE(NULL, p);
	ASSERT_EQ(0, mpq_queue_get(q, buf, &len, 20 * NSEC_PER_SEC));
	snprintf(want, sizeof(want), "hello from %d", mpq_process_pid(p));
	EXPECT_EQ(strlen(want), len);
	EXPECT_EQ(0, memcmp(want, buf, len));
	EXPECT_EQ(0, join_exitcode(p));
	mpq_process_free(p);
	mpq_queue_free(q);
}

TEST(export_and_import_refuse_bad_handles_and_short_buffers)
{
	struct mpq_queue *q, *q2;
	char handle[MPQ_HANDLE_MAX], small[5], bad[64];
	int fds[2], dead;
	char buf[8];
	size_t len = sizeof(buf);

	ASSERT_EQ(0, mpq_queue_new(&q, NULL));
	EXPECT_EQ(-ERANGE, mpq_queue_export(q, small, sizeof(small)));
	EXPECT_EQ(-EINVAL, mpq_queue_export(NULL, handle, sizeof(handle)));
	EXPECT_EQ(-EINVAL, mpq_queue_export(q, NULL, 64));
	ASSERT_LT(0, mpq_queue_export(q, handle, sizeof(handle)));

	EXPECT_EQ(-EINVAL, mpq_queue_import(&q2, "nonsense"));
	EXPECT_EQ(-EINVAL, mpq_queue_import(&q2, "mpq-queue:fd="));
	EXPECT_EQ(-EINVAL, mpq_queue_import(&q2, "mpq-queue:fd=-1"));
	EXPECT_EQ(-EINVAL, mpq_queue_import(&q2, "mpq-queue:fd=3x"));
	EXPECT_EQ(-EINVAL, mpq_queue_import(&q2, "mpq-queue:fd= 3"));
	EXPECT_EQ(-EINVAL, mpq_queue_import(&q2, "mpq-conn:fd=3"));
	EXPECT_EQ(-EINVAL, mpq_queue_import(&q2, "mpq-queue:fd=99999999999"));
	EXPECT_EQ(-EINVAL, mpq_queue_import(&q2, NULL));
	EXPECT_EQ(-EINVAL, mpq_queue_import(NULL, handle));
	dead = dup(0);
	ASSERT_LE(0, dead);
	close(dead);
	snprintf(bad, sizeof(bad), "mpq-queue:fd=%d", dead);
	EXPECT_EQ(-EBADF, mpq_queue_import(&q2, bad));
	ASSERT_EQ(0, pipe(fds));
	snprintf(bad, sizeof(bad), "mpq-queue:fd=%d", fds[0]);
	EXPECT_EQ(-EINVAL, mpq_queue_import(&q2, bad));

	/* A good handle, in the same process: a second handle on q. */
	ASSERT_EQ(0, mpq_queue_import(&q2, handle));
	ASSERT_EQ(0, mpq_queue_put(q2, "x", 1, 0));
	ASSERT_EQ(0, mpq_queue_get(q, buf, &len, 0));
	EXPECT_EQ(1, len);
	mpq_queue_free(q2);
	mpq_queue_free(q);
	close(fds[0]);
	close(fds[1]);
}

TEST(spawn_reports_an_exec_failure_from_start)
{
	struct mpq_process_attr attr = { .start_method = MPQ_START_SPAWN };
	struct mpq_process *p;
	int code;

#ifndef __x86_64__
	SKIP(return, "the seccomp filter is written for x86-64");
#endif
	ASSERT_EQ(0, mpq_process_new(&p, return_arg, NULL, 0, &attr));
	ASSERT_EQ(0, seccomp_fail_syscall(__NR_execve, EACCES));
	EXPECT_EQ(-EACCES, mpq_process_start(p));
	EXPECT_EQ(0, mpq_process_is_alive(p));
	EXPECT_EQ(-EAGAIN, mpq_process_exitcode(p, &code));
	EXPECT_EQ(0, mpq_active_children(NULL, 0));
	mpq_process_free(p);
}

/* Forked without pidfds: 0 if the parent is seen alive without one. */
static int check_parent_without_pidfd(const void *arg, size_t len)
{
	struct mpq_process *parent = mpq_parent_process();

	if (!parent || mpq_process_sentinel(parent) != -ENOSYS)
		return 1;
	return mpq_process_is_alive(parent) == 1 &&
	       mpq_process_join(parent, 10 * NSEC_PER_MSEC) == -ETIMEDOUT ?
	       0 : 2;
}

TEST(without_pidfds_processes_still_join_signal_and_report)
{
	struct mpq_process *p;
	int fd;

#ifndef __x86_64__
	SKIP(return, "the seccomp filter is written for x86-64");
#endif
	/* As on a kernel before 5.3. */
	ASSERT_EQ(0, seccomp_fail_syscall(__NR_pidfd_open, ENOSYS));
	ASSERT_EQ(-1, pidfd_of(getpid()));

	p = start_int(return_arg, 5, MPQ_START_FORK);
	ASSERT_NE(NULL, p);
	EXPECT_EQ(5, join_exitcode(p));
	mpq_process_free(p);
	p = start_int(return_arg, 6, MPQ_START_SPAWN);
	ASSERT_NE(NULL, p);
	EXPECT_EQ(6, join_exitcode(p));
	mpq_process_free(p);
	p = start(check_parent_without_pidfd, NULL, 0, MPQ_START_FORK, 0);
	ASSERT_NE(NULL, p);
	EXPECT_EQ(0, join_exitcode(p));
	mpq_process_free(p);

	p = start(sleep_a_minute, NULL, 0, MPQ_START_FORK, 0);
	ASSERT_NE(NULL, p);
	fd = mpq_process_sentinel(p);
	ASSERT_LE(0, fd);
	EXPECT_EQ(-ETIMEDOUT, mpq_process_join(p, 50 * NSEC_PER_MSEC));
	EXPECT_FALSE(readable_within(fd, 0));
	EXPECT_EQ(0, mpq_process_terminate(p));
	EXPECT_EQ(-SIGTERM, join_exitcode(p));
	EXPECT_TRUE(readable_within(fd, 0));
	mpq_process_free(p);
}

TEST(start_twice_is_einval)
{
	struct mpq_process *p = start_int(return_arg, 0, 0);

	ASSERT_NE(NULL, p);
	EXPECT_EQ(-EINVAL, mpq_process_start(p));
	EXPECT_EQ(0, join_exitcode(p));
	EXPECT_EQ(-EINVAL, mpq_process_start(p));
	mpq_process_free(p);
}

TEST(a_process_not_started_cannot_be_joined_signalled_or_watched)
{
	struct mpq_process *p;

	ASSERT_EQ(0, mpq_process_new(&p, return_arg, NULL, 0, NULL));
	EXPECT_EQ(-EINVAL, mpq_process_join(p, 0));
	EXPECT_EQ(-EINVAL, mpq_process_terminate(p));
	EXPECT_EQ(-EINVAL, mpq_process_kill(p));
	EXPECT_EQ(-EINVAL, mpq_process_sentinel(p));
	EXPECT_EQ(0, mpq_process_is_alive(p));
	EXPECT_EQ(0, mpq_process_close(p));
	mpq_process_free(p);
}

TEST(signalling_a_process_that_has_ended_is_a_harmless_no_op)
{
	struct mpq_process *p = start_int(return_arg, 9, 0);

	ASSERT_NE(NULL, p);
	EXPECT_EQ(9, join_exitcode(p));
	EXPECT_EQ(0, mpq_process_terminate(p));
	EXPECT_EQ(0, mpq_process_kill(p));
	EXPECT_EQ(9, join_exitcode(p));
	mpq_process_free(p);
}

TEST(close_while_running_is_ebusy_and_calls_after_close_are_ebadf)
{
	struct mpq_process *p = start(sleep_a_minute, NULL, 0, 0, 0);
	int code;

	ASSERT_NE(NULL, p);
	EXPECT_EQ(-EBUSY, mpq_process_close(p));
	EXPECT_EQ(1, mpq_process_is_alive(p));
	ASSERT_EQ(0, mpq_process_kill(p));
	/* Ended but not joined: close reaps it. */
	ASSERT_TRUE(readable_within(mpq_process_sentinel(p), 20000));
	EXPECT_EQ(0, mpq_process_close(p));
	EXPECT_EQ(-EBADF, mpq_process_start(p));
	EXPECT_EQ(-EBADF, mpq_process_join(p, 0));
	EXPECT_EQ(-EBADF, mpq_process_is_alive(p));
	EXPECT_EQ(-EBADF, mpq_process_exitcode(p, &code));
	EXPECT_EQ(-EBADF, mpq_process_pid(p));
	EXPECT_EQ(-EBADF, mpq_process_terminate(p));
	EXPECT_EQ(-EBADF, mpq_process_kill(p));
	EXPECT_EQ(-EBADF, mpq_process_sentinel(p));
	EXPECT_EQ(-EBADF, mpq_process_close(p));
	/* Python keeps these readable. */
	EXPECT_EQ(0, strncmp(mpq_process_name(p), "Process-", 8));
	EXPECT_EQ(0, mpq_process_daemon(p));
	mpq_process_free(p);
}

static int nop_target(const void *arg, size_t len)
{
	return 0;
}

TEST(bad_arguments_are_einval_not_crashes)
{
	struct mpq_process_attr attr;
	struct mpq_process *p;
	char name[300];
	int code, argc = 1;

	EXPECT_EQ(-EINVAL, mpq_process_new(NULL, nop_target, NULL, 0, NULL));
	EXPECT_EQ(-EINVAL, mpq_process_new(&p, NULL, NULL, 0, NULL));
	EXPECT_EQ(-EINVAL, mpq_process_new(&p, nop_target, NULL, 1, NULL));
	memset(&attr, 0, sizeof(attr));
	attr.flags = 1;
	EXPECT_EQ(-EINVAL, mpq_process_new(&p, nop_target, NULL, 0, &attr));
	memset(&attr, 0, sizeof(attr));
	attr.__pad = 1;
	EXPECT_EQ(-EINVAL, mpq_process_new(&p, nop_target, NULL, 0, &attr));
	memset(&attr, 0, sizeof(attr));
	attr.__reserved[3] = 1;
	EXPECT_EQ(-EINVAL, mpq_process_new(&p, nop_target, NULL, 0, &attr));
	memset(&attr, 0, sizeof(attr));
	attr.daemon = 2;
	EXPECT_EQ(-EINVAL, mpq_process_new(&p, nop_target, NULL, 0, &attr));
	memset(&attr, 0, sizeof(attr));
	attr.start_method = 4;
	EXPECT_EQ(-EINVAL, mpq_process_new(&p, nop_target, NULL, 0, &attr));
	attr.start_method = -1;
	EXPECT_EQ(-EINVAL, mpq_process_new(&p, nop_target, NULL, 0, &attr));

	EXPECT_EQ(-EINVAL, mpq_process_start(NULL));
	EXPECT_EQ(-EINVAL, mpq_process_join(NULL, 0));
	EXPECT_EQ(-EINVAL, mpq_process_is_alive(NULL));
	EXPECT_EQ(-EINVAL, mpq_process_exitcode(NULL, &code));
	EXPECT_EQ(-EINVAL, mpq_process_pid(NULL));
	EXPECT_EQ(NULL, mpq_process_name(NULL));
	EXPECT_EQ(-EINVAL, mpq_process_daemon(NULL));
	EXPECT_EQ(-EINVAL, mpq_process_terminate(NULL));
	EXPECT_EQ(-EINVAL, mpq_process_kill(NULL));
	EXPECT_EQ(-EINVAL, mpq_process_sentinel(NULL));
	EXPECT_EQ(-EINVAL, mpq_process_close(NULL));
	mpq_process_free(NULL);
	ASSERT_EQ(0, mpq_process_new(&p, nop_target, NULL, 0, NULL));
	EXPECT_EQ(-EINVAL, mpq_process_exitcode(p, NULL));
	mpq_process_free(p);

	EXPECT_EQ(-EINVAL, mpq_register_target(NULL, nop_target));
	EXPECT_EQ(-EINVAL, mpq_register_target("", nop_target));
	EXPECT_EQ(-EINVAL, mpq_register_target("nop", NULL));
	memset(name, 'n', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	EXPECT_EQ(-EINVAL, mpq_register_target(name, nop_target));
	EXPECT_EQ(0, mpq_register_target("nop", nop_target));
	EXPECT_EQ(0, mpq_register_target("nop", nop_target));
	EXPECT_EQ(-EEXIST, mpq_register_target("nop", return_arg));
	EXPECT_EQ(-EINVAL, mpq_init(&argc, NULL));
}

/* Forked: what the objects the parent made say here; 0 if -ECHILD. */
static int use_the_parents_objects(const void *arg, size_t len)
{
	struct mpq_process *const *objs = arg;
	int code, bad = 0;

	if (mpq_process_start(objs[0]) != -ECHILD)
		bad |= 1;
	if (mpq_process_join(objs[1], 0) != -ECHILD ||
	    mpq_process_is_alive(objs[1]) != -ECHILD ||
	    mpq_process_exitcode(objs[1], &code) != -ECHILD)
		bad |= 2;
	if (mpq_process_terminate(objs[1]) != -ECHILD ||
	    mpq_process_kill(objs[1]) != -ECHILD)
		bad |= 4;
	/* They are the parent's children, not ours. */
	if (mpq_active_children(NULL, 0) != 0)
		bad |= 8;
	return bad;
}

TEST(a_process_object_belongs_to_the_process_that_made_it)
{
	struct mpq_process *objs[2], *p;

	ASSERT_EQ(0, mpq_process_new(&objs[0], nop_target, NULL, 0, NULL));
	objs[1] = start(sleep_a_minute, NULL, 0, 0, 0);
	ASSERT_NE(NULL, objs[1]);
	p = start(use_the_parents_objects, objs, sizeof(objs), 0, 0);
	ASSERT_NE(NULL, p);
	EXPECT_EQ(0, join_exitcode(p));
	EXPECT_EQ(1, mpq_process_is_alive(objs[1]));
	mpq_process_kill(objs[1]);
	EXPECT_EQ(-SIGKILL, join_exitcode(objs[1]));
	mpq_process_free(objs[0]);
	mpq_process_free(objs[1]);
	mpq_process_free(p);
}

TEST(freeing_a_running_process_leaves_it_running_and_it_is_reaped_later)
{
	struct report *r = report_new();
	struct mpq_process *p;
	siginfo_t si;
	pid_t pid;

	ASSERT_NE(NULL, r);
	p = start(ready_then_wait_for_go, &r, sizeof(r), 0, 0);
	ASSERT_NE(NULL, p);
	ASSERT_EQ(1, wait_for_flag(&r->ready, 20000));
	pid = mpq_process_pid(p);
	mpq_process_free(p);
	EXPECT_TRUE(child_running(pid));
	EXPECT_EQ(0, mpq_active_children(NULL, 0));
	set_flag(&r->go, 1);
	/* Ended: a zombie until the library reaps it. */
	memset(&si, 0, sizeof(si));
	ASSERT_EQ(0, waitid(P_PID, pid, &si, WEXITED | WNOWAIT));
	EXPECT_EQ(0, mpq_active_children(NULL, 0));
	EXPECT_EQ(-1, waitid(P_PID, pid, &si, WEXITED | WNOHANG | WNOWAIT));
	EXPECT_EQ(ECHILD, errno);
}

/* Forked: print a B through the stdio buffer we inherited. */
static int print_b(const void *arg, size_t len)
{
	printf("B");
	return 0;
}

TEST(output_buffered_before_a_fork_start_is_written_once)
{
	struct mpq_process *p;
	char buf[16] = { 0 };
	int fds[2];
	ssize_t n;

	ASSERT_EQ(0, pipe(fds));
	ASSERT_LE(0, dup2(fds[1], STDOUT_FILENO));
	close(fds[1]);
	setvbuf(stdout, NULL, _IOFBF, 4096);
	printf("A");
	p = start(print_b, NULL, 0, MPQ_START_FORK, 0);
	ASSERT_NE(NULL, p);
	EXPECT_EQ(0, join_exitcode(p));
	printf("C");
	fflush(stdout);
	n = read(fds[0], buf, sizeof(buf) - 1);
	EXPECT_EQ(3, n);
	EXPECT_STREQ("ABC", buf);
	mpq_process_free(p);
}

TEST(a_program_that_skips_mpq_init_cannot_start_spawned_children_again)
{
	struct mpq_process *p;

	/* What a spawned child that never called mpq_init() would see. */
	ASSERT_EQ(0, setenv("MPQ_SPAWN", "3", 1));
	ASSERT_EQ(0, mpq_process_new(&p, return_arg, NULL, 0, NULL));
	EXPECT_EQ(-EPROTO, mpq_process_start(p));
	unsetenv("MPQ_SPAWN");
	mpq_process_free(p);
}

/* The library's lock, taken over and over, as threads of a program might. */
static int stop_threads;

static int lock_user(const void *arg, size_t len)
{
	struct mpq_process *p;

	if (mpq_active_children(NULL, 0) < 0 ||
	    mpq_process_new(&p, nop_target, NULL, 0, NULL))
		return 1;
	mpq_process_free(p);
	return mpq_register_target("nop", nop_target) ? 2 : 0;
}

/*
 * Calls that take the library's lock and allocate nothing: a thread inside
 * malloc() at the fork would test the allocator, not libmpq (glibc's is
 * fork-safe; the libasan of GCC 12 is not, and its child hangs).
 */
static void *hammer_the_lock(void *unused)
{
	while (!__atomic_load_n(&stop_threads, __ATOMIC_RELAXED)) {
		mpq_active_children(NULL, 0);
		mpq_register_target("nop", nop_target);
	}
	return NULL;
}

static int lock_user_child(void *unused)
{
	return lock_user(NULL, 0);
}

TEST(forking_while_other_threads_use_the_library_never_deadlocks_the_child)
{
	pthread_t threads[4];
	struct mpq_process *p;
	unsigned int i;
	pid_t pid;
	int ret;

	ASSERT_EQ(0, mpq_register_target("nop", nop_target));
	for (i = 0; i < 4; i++)
		ASSERT_EQ(0, pthread_create(&threads[i], NULL, hammer_the_lock,
					    NULL));
	/*
	 * Were the lock copied while another thread held it, the child's
	 * first call into the library would never return.
	 */
	for (i = 0; i < 200; i++) {
		p = start(lock_user, NULL, 0, MPQ_START_FORK, 0);
		ASSERT_NE(NULL, p);
		ret = mpq_process_join(p, 10 * NSEC_PER_SEC);
		if (ret)
			mpq_process_kill(p);
		ASSERT_EQ(0, ret);
		ASSERT_EQ(0, join_exitcode(p));
		mpq_process_free(p);
	}
	for (i = 0; i < 100; i++) {
		pid = spawn(lock_user_child, NULL);
		ASSERT_LT(0, pid);
		ASSERT_EQ(0, wait_child(pid, 10000));
	}
	__atomic_store_n(&stop_threads, 1, __ATOMIC_RELAXED);
	for (i = 0; i < 4; i++)
		pthread_join(threads[i], NULL);
}

static int ignore_arg(const void *arg, size_t len)
{
	return 0;
}
MPQ_TARGET(ignore_arg);

struct forker {
	int stop;
	int n;
	pid_t pids[2048];
};

/*
 * Fork children that live until the test kills them, with fork(2) itself,
 * until told to stop.
 */
static void *fork_sleepers(void *arg)
{
	struct forker *f = arg;
	pid_t pid;

	while (!__atomic_load_n(&f->stop, __ATOMIC_RELAXED) &&
	       f->n < (int)(sizeof(f->pids) / sizeof(f->pids[0]))) {
		pid = fork();
		if (pid == 0) {
			for (;;)
				pause();
		}
		if (pid > 0)
			f->pids[f->n++] = pid;
		sleep_ms(1);
	}
	return NULL;
}

/* Slow under TCG (32 MiB bootstraps): a wide timeout, not a clock check. */
FIXTURE(slow) {};
FIXTURE_SETUP(slow) {}
FIXTURE_TEARDOWN(slow) {}

TEST_F_TIMEOUT(slow, a_spawn_does_not_wait_for_children_other_threads_fork_meanwhile,
	       300)
{
	size_t len = 32 << 20;	/* a long bootstrap write: a wide window */
	struct forker f = { 0 };
	struct mpq_process *p;
	pthread_t thread;
	char *big;
	int i;

	big = calloc(1, len);
	ASSERT_NE(NULL, big);
	ASSERT_EQ(0, pthread_create(&thread, NULL, fork_sleepers, &f));
	/*
	 * A child forked while the spawn is under way must not keep the
	 * exec-error pipe open: start() would wait for it, and it never ends
	 * until the test kills it (the harness's timeout would end the test
	 * first: a failure, with no clock read here).
	 */
	for (i = 0; i < 5; i++) {
		p = start(ignore_arg, big, len, MPQ_START_SPAWN, 0);
		ASSERT_NE(NULL, p);
		EXPECT_EQ(0, join_exitcode(p));
		mpq_process_free(p);
	}
	__atomic_store_n(&f.stop, 1, __ATOMIC_RELAXED);
	pthread_join(thread, NULL);
	EXPECT_LT(10, f.n);
	for (i = 0; i < f.n; i++) {
		kill(f.pids[i], SIGKILL);
		waitpid(f.pids[i], NULL, 0);
	}
	free(big);
}

TEST_HARNESS_MAIN
