// SPDX-License-Identifier: GPL-2.0
/*
 * The promises of the forkserver start method beyond those every method
 * keeps (process_test.c's method fixture runs those on it too): a threaded
 * parent's children never inherit its threads' locks, a server killed at
 * any point is replaced and never hangs a start nor runs a target twice,
 * a child killed before it runs is a start of a process killed,
 * a server ends with its parent and leaves no orphans, objects reach the
 * children by their handles.
 *
 * The server is this test binary executed again: mpq_init() runs from a
 * constructor below, after MPQ_TARGET's registrations, and serves there.
 */
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "kselftest_harness.h"
#include "helpers.h"

static void __attribute__((constructor)) run_spawned_target(void)
{
	mpq_init(NULL, NULL);
}

static struct mpq_process *fs_start(mpq_target_fn fn, const void *arg,
				    size_t len, int daemon, int *err)
{
	struct mpq_process_attr attr = {
		.start_method = MPQ_START_FORKSERVER,
		.daemon = daemon,
	};
	struct mpq_process *p;

	*err = mpq_process_new(&p, fn, arg, len, &attr);
	if (*err)
		return NULL;
	*err = mpq_process_start(p);
	if (*err) {
		mpq_process_free(p);
		return NULL;
	}
	return p;
}

/* ---- a threaded parent --------------------------------------------- */

/* Held nearly all the time by the parent's threads. */
static pthread_mutex_t busy = PTHREAD_MUTEX_INITIALIZER;
static int stop_threads;

static void *hold_locks(void *unused)
{
	void *m;

	while (!__atomic_load_n(&stop_threads, __ATOMIC_RELAXED)) {
		pthread_mutex_lock(&busy);
		/* malloc's arena locks too, at the moment of any start. */
		m = malloc(4096 + (rand() & 4095));
		free(m);
		usleep(200);
		pthread_mutex_unlock(&busy);
	}
	return NULL;
}

/* 0 if the lock the parent's threads hold is free here, and malloc works. */
static int lock_is_free(const void *arg, size_t len)
{
	void *m = malloc(1 << 20);

	if (!m)
		return 2;
	free(m);
	if (pthread_mutex_trylock(&busy))
		return 1;
	pthread_mutex_unlock(&busy);
	return 0;
}
MPQ_TARGET(lock_is_free);

TEST(a_threaded_parents_children_never_inherit_its_threads_locks)
{
	enum { NTHREADS = 8, NCHILDREN = 60 };
	struct mpq_process *p[NCHILDREN];
	pthread_t t[NTHREADS];
	int i, err, code;

	/* No server yet: the first start makes it, with threads running. */
	ASSERT_EQ(-ESRCH, mpq_forkserver_pid());
	for (i = 0; i < NTHREADS; i++)
		ASSERT_EQ(0, pthread_create(&t[i], NULL, hold_locks, NULL));
	for (i = 0; i < NCHILDREN; i++) {
		p[i] = fs_start(lock_is_free, NULL, 0, 0, &err);
		ASSERT_NE(NULL, p[i]) TH_LOG("start %d: %d", i, err);
	}
	for (i = 0; i < NCHILDREN; i++) {
		ASSERT_EQ(0, mpq_process_join(p[i], 20 * NSEC_PER_SEC));
		ASSERT_EQ(0, mpq_process_exitcode(p[i], &code));
		EXPECT_EQ(0, code) TH_LOG("child %d", i);
		mpq_process_free(p[i]);
	}
	__atomic_store_n(&stop_threads, 1, __ATOMIC_RELAXED);
	for (i = 0; i < NTHREADS; i++)
		pthread_join(t[i], NULL);
}

/* ---- the server, and its start ------------------------------------- */

TEST(an_explicit_start_makes_one_server_that_later_starts_reuse)
{
	struct mpq_process *p;
	pid_t pid;
	int err, code, v = 7;

	ASSERT_EQ(0, mpq_forkserver_start());
	pid = mpq_forkserver_pid();
	ASSERT_LT(0, pid);
	ASSERT_EQ(0, mpq_forkserver_start());
	EXPECT_EQ(pid, mpq_forkserver_pid());
	p = fs_start(lock_is_free, &v, sizeof(v), 0, &err);
	ASSERT_NE(NULL, p);
	ASSERT_EQ(0, mpq_process_join(p, 20 * NSEC_PER_SEC));
	ASSERT_EQ(0, mpq_process_exitcode(p, &code));
	EXPECT_EQ(0, code);
	mpq_process_free(p);
	EXPECT_EQ(pid, mpq_forkserver_pid());
}

/* Never registered with MPQ_TARGET. */
static int unregistered(const void *arg, size_t len)
{
	return 0;
}

TEST(a_target_the_server_does_not_know_is_enoent_and_nothing_runs)
{
	struct mpq_process *p;
	int err;

	p = fs_start(unregistered, NULL, 0, 0, &err);
	EXPECT_EQ(NULL, p);
	EXPECT_EQ(-ENOENT, err);
	/* Known here, but only after the server's mpq_init(): not there. */
	ASSERT_EQ(0, mpq_register_target("late", unregistered));
	p = fs_start(unregistered, NULL, 0, 0, &err);
	EXPECT_EQ(NULL, p);
	EXPECT_EQ(-ENOENT, err);
	EXPECT_EQ(0, mpq_active_children(NULL, 0));
}

/* Put {the int in arg, our pid} into the queue whose handle follows it. */
struct put_arg {
	int i;
	char handle[MPQ_HANDLE_MAX];
};

static int put_i_and_pid(const void *arg, size_t len)
{
	const struct put_arg *a = arg;
	struct mpq_queue *q;
	int msg[2];

	if (len != sizeof(*a) || mpq_queue_import(&q, a->handle))
		return 101;
	msg[0] = a->i;
	msg[1] = getpid();
	if (mpq_queue_put(q, msg, sizeof(msg), 5 * NSEC_PER_SEC))
		return 102;
	mpq_queue_free(q);
	return a->i & 0x7f;
}
MPQ_TARGET(put_i_and_pid);

TEST(objects_made_after_the_server_reach_children_by_their_handles)
{
	struct mpq_queue_attr qa = { .maxsize = 4, .msgsize = 64 };
	struct put_arg a = { .i = 5 };
	struct mpq_process *p;
	struct mpq_queue *q;
	int msg[2], err, code;
	size_t len = sizeof(msg);

	ASSERT_EQ(0, mpq_forkserver_start());
	/* Made and exported after the server started: sent with the request. */
	ASSERT_EQ(0, mpq_queue_new(&q, &qa));
	ASSERT_LT(0, mpq_queue_export(q, a.handle, sizeof(a.handle)));
	p = fs_start(put_i_and_pid, &a, sizeof(a), 0, &err);
	ASSERT_NE(NULL, p) TH_LOG("start: %d", err);
	ASSERT_EQ(0, mpq_queue_get(q, msg, &len, 20 * NSEC_PER_SEC));
	EXPECT_EQ(5, msg[0]);
	/* The pid the child has is the one its object gives. */
	EXPECT_EQ(mpq_process_pid(p), msg[1]);
	ASSERT_EQ(0, mpq_process_join(p, 20 * NSEC_PER_SEC));
	ASSERT_EQ(0, mpq_process_exitcode(p, &code));
	EXPECT_EQ(5, code);
	mpq_process_free(p);
	mpq_queue_free(q);
}

/* ---- a server killed at random points ------------------------------ */

struct killer {
	uint64_t seed;
	uint64_t max_us;	/* the longest delay before a kill */
	int rounds;
	int done;
};

/* SIGKILL the server after random delays of up to max_us, until done. */
static void *kill_server(void *arg)
{
	struct killer *k = arg;
	pid_t pid;

	while (!__atomic_load_n(&k->done, __ATOMIC_ACQUIRE)) {
		usleep(rnd(&k->seed) % k->max_us);
		pid = mpq_forkserver_pid();
		if (pid > 0) {
			kill(pid, SIGKILL);
			k->rounds++;
		}
	}
	return NULL;
}

TEST(a_killed_server_is_replaced_and_no_target_runs_twice)
{
	enum { N = 150 };
	struct mpq_queue_attr qa = { .maxsize = 256, .msgsize = 64 };
	struct killer k = { .seed = (uint64_t)now_ns() | 1 };
	static struct mpq_process *p[N];
	static int runs[N], known[N];
	struct put_arg a;
	struct mpq_queue *q;
	int i, err, code, msg[2], started = 0, lost = 0;
	size_t len;
	pthread_t t;

	int64_t t0;

	TH_LOG("seed %llu", (unsigned long long)k.seed);
	/*
	 * Kills spread over a few server lifetimes: under emulation a
	 * server takes far longer to start than natively.
	 */
	t0 = now_ns();
	ASSERT_EQ(0, mpq_forkserver_start());
	k.max_us = 3 * (uint64_t)(now_ns() - t0) / 1000 + 1000;
	ASSERT_EQ(0, mpq_queue_new(&q, &qa));
	ASSERT_LT(0, mpq_queue_export(q, a.handle, sizeof(a.handle)));
	ASSERT_EQ(0, pthread_create(&t, NULL, kill_server, &k));
	for (i = 0; i < N; i++) {
		a.i = i;
		p[i] = fs_start(put_i_and_pid, &a, sizeof(a), 0, &err);
		/* A new server each time; two deaths in one start: -ESRCH. */
		if (!p[i]) {
			ASSERT_EQ(-ESRCH, err) TH_LOG("start %d", i);
			continue;
		}
		started++;
	}
	__atomic_store_n(&k.done, 1, __ATOMIC_RELEASE);
	pthread_join(t, NULL);
	for (i = 0; i < N; i++) {
		if (!p[i])
			continue;
		/* Never a hang, whatever the server did. */
		ASSERT_EQ(0, mpq_process_join(p[i], 20 * NSEC_PER_SEC));
		err = mpq_process_exitcode(p[i], &code);
		if (err == -ECHILD) {
			lost++;	/* its server died with its status */
		} else {
			ASSERT_EQ(0, err);
			ASSERT_EQ(i & 0x7f, code) TH_LOG("child %d", i);
			known[i] = 1;
		}
		mpq_process_free(p[i]);
	}
	for (;;) {
		len = sizeof(msg);
		if (mpq_queue_get(q, msg, &len, 0))
			break;
		ASSERT_LE(0, msg[0]);
		ASSERT_GT(N, msg[0]);
		runs[msg[0]]++;
	}
	for (i = 0; i < N; i++) {
		ASSERT_GE(1, runs[i]) TH_LOG("target %d ran twice", i);
		if (known[i])
			ASSERT_EQ(1, runs[i]);
		if (!p[i])
			ASSERT_EQ(0, runs[i]);
	}
	TH_LOG("%d kills, %d of %d started, %d statuses lost", k.rounds,
	       started, N, lost);
	EXPECT_LT(0, k.rounds);
	mpq_queue_free(q);
}

/* ---- its children killed before they run -------------------------- */

struct child_killer {
	pid_t server;
	int kills;
	int done;
};

/* SIGKILL each child of the server as soon as it is seen, until done. */
static void *kill_children(void *arg)
{
	struct child_killer *k = arg;
	char path[64], buf[4096], *s, *end;
	ssize_t n;
	pid_t pid;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/children",
		 (int)k->server, (int)k->server);
	while (!__atomic_load_n(&k->done, __ATOMIC_ACQUIRE)) {
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			break;
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		buf[n > 0 ? n : 0] = '\0';
		for (s = buf; (pid = (pid_t)strtol(s, &end, 10)) > 0; s = end) {
			/* The pidfd keeps the kill on this process. */
			fd = (int)syscall(SYS_pidfd_open, pid, 0);
			if (fd < 0)
				continue;
			if (stat_ppid(pid) == k->server &&
			    !syscall(SYS_pidfd_send_signal, fd, SIGKILL, NULL,
				     0))
				k->kills++;
			close(fd);
		}
	}
	return NULL;
}

static int exit_7(const void *arg, size_t len)
{
	return 7;
}
MPQ_TARGET(exit_7);

/*
 * A child killed after the server forked it and before it said it runs
 * (waiting for "go", or between "go" and its answer) is a start that
 * succeeded, of a process that ended by SIGKILL, as with fork: the
 * server's status for it is not a failure to start, and the server lives
 * on.
 */
TEST(a_child_killed_before_it_runs_is_started_and_ended_by_the_signal)
{
	enum { N = 200 };
	struct child_killer k = { 0 };
	struct mpq_process *p;
	int i, err, code, killed = 0, ran = 0;
	pid_t server;
	pthread_t t;

	ASSERT_EQ(0, mpq_forkserver_start());
	server = mpq_forkserver_pid();
	k.server = server;
	ASSERT_EQ(0, pthread_create(&t, NULL, kill_children, &k));
	for (i = 0; i < N; i++) {
		p = fs_start(exit_7, NULL, 0, 0, &err);
		ASSERT_NE(NULL, p) TH_LOG("start %d: %d", i, err);
		ASSERT_EQ(0, mpq_process_join(p, 20 * NSEC_PER_SEC));
		ASSERT_EQ(0, mpq_process_exitcode(p, &code));
		if (code == -SIGKILL)
			killed++;
		else
			ASSERT_EQ(7, code) TH_LOG("child %d", i);
		ran += code == 7;
		mpq_process_free(p);
	}
	__atomic_store_n(&k.done, 1, __ATOMIC_RELEASE);
	pthread_join(t, NULL);
	TH_LOG("%d signals sent: %d of %d ended by SIGKILL, %d ran",
	       k.kills, killed, N, ran);
	EXPECT_LT(0, killed);
	EXPECT_EQ(server, mpq_forkserver_pid());
}

/* ---- a parent killed while its server forks ------------------------ */

static int sleep_a_minute(const void *arg, size_t len)
{
	sleep_ms(60000);
	return 0;
}
MPQ_TARGET(sleep_a_minute);

struct middle_report {
	int server;
	int started;
};

/* Forked: start daemons without end until killed. */
static int start_daemons_forever(const void *arg, size_t len)
{
	struct middle_report *r = *(struct middle_report *const *)arg;
	struct mpq_process *d;
	int err;

	if (mpq_forkserver_start())
		return 1;
	set_flag(&r->server, mpq_forkserver_pid());
	for (;;) {
		d = fs_start(sleep_a_minute, NULL, 0, 1, &err);
		if (!d)
			return 2;
		__atomic_add_fetch(&r->started, 1, __ATOMIC_RELEASE);
		mpq_process_free(d);
	}
}

static int do_nothing(const void *arg, size_t len)
{
	return 0;
}

TEST(a_server_ends_with_its_parent_and_leaves_no_orphans)
{
	struct middle_report *r = shared_alloc(sizeof(*r));
	uint64_t seed = (uint64_t)now_ns() | 1;
	struct mpq_process *middle;
	int round, sfd, code, left;
	int64_t end;
	pid_t pid;

	ASSERT_NE(NULL, r);
	TH_LOG("seed %llu", (unsigned long long)seed);
	/*
	 * The first start makes the program's SharedMemory anchor: on memfd
	 * a tracker process (anchor.c) that lives as long as we do. Made
	 * before we are a subreaper, it is init's, not an orphan to count.
	 */
	{
		struct mpq_process_attr attr = { .start_method = MPQ_START_FORK };

		ASSERT_EQ(0, mpq_process_new(&middle, do_nothing, NULL, 0, &attr));
		ASSERT_EQ(0, mpq_process_start(middle));
		ASSERT_EQ(0, mpq_process_join(middle, 20 * NSEC_PER_SEC));
		mpq_process_free(middle);
	}
	/* Orphans come to us, so that none can hide from the count. */
	ASSERT_EQ(0, prctl(PR_SET_CHILD_SUBREAPER, 1));
	for (round = 0; round < 12; round++) {
		memset(r, 0, sizeof(*r));
		middle = NULL;
		{
			struct mpq_process_attr attr = {
				.start_method = MPQ_START_FORK,
			};

			ASSERT_EQ(0, mpq_process_new(&middle,
						     start_daemons_forever,
						     &r, sizeof(r), &attr));
			ASSERT_EQ(0, mpq_process_start(middle));
		}
		ASSERT_LT(0, wait_for_flag(&r->server, 20000));
		sfd = pidfd_of(r->server);
		ASSERT_LE(0, sfd);
		/* Kill it at a random point of its starts. */
		usleep(rnd(&seed) % 20000);
		ASSERT_EQ(0, mpq_process_kill(middle));
		ASSERT_EQ(0, mpq_process_join(middle, 20 * NSEC_PER_SEC));
		ASSERT_EQ(0, mpq_process_exitcode(middle, &code));
		EXPECT_EQ(-SIGKILL, code);
		mpq_process_free(middle);
		/* The server notices at once, and its daemons die with it. */
		EXPECT_TRUE(readable_within(sfd, 10000));
		close(sfd);
		end = now_ns() + 10 * NSEC_PER_SEC;
		left = 0;
		for (;;) {
			pid = waitpid(-1, NULL, WNOHANG);
			if (pid < 0 && errno == ECHILD)
				break;
			if (now_ns() > end) {
				left = 1;
				break;
			}
			if (pid == 0)
				sleep_ms(5);
		}
		ASSERT_EQ(0, left) TH_LOG("round %d: %d daemons started, "
					  "orphans still running", round,
					  r->started);
	}
}

TEST_HARNESS_MAIN
