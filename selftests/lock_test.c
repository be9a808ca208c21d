// SPDX-License-Identifier: GPL-2.0
/*
 * The promises of mpq_lock (Lock and RLock), one test each, on the backend
 * the environment selects: mutual exclusion across processes, Python's
 * errors, no system call when uncontended, and what happens when a holder
 * is killed: the next acquirer gets the lock with -EOWNERDEAD, a blocked
 * waiter wakes at once, glibc's own robust mutexes keep working beside
 * ours, and a SIGKILL storm loses no update.
 */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>

#include "kselftest_harness.h"
#include "helpers.h"

/* What the children of a test share with it. */
struct shared {
	int ready;
	int stop;
	int result;
	uint64_t counter;
	uint64_t intent;	/* roll-forward log for the storm */
	uint64_t intent_who;
	uint64_t per[8];
	pthread_mutex_t glibc;	/* a robust pshared glibc mutex */
};

FIXTURE(lock) {
	struct mpq_lock *l;
	struct shared *sh;
};

FIXTURE_SETUP(lock)
{
	ASSERT_EQ(0, mpq_lock_new(&self->l, NULL));
	self->sh = shared_alloc(sizeof(*self->sh));
	ASSERT_NE(NULL, self->sh);
}

FIXTURE_TEARDOWN(lock)
{
	mpq_lock_free(self->l);
	munmap(self->sh, sizeof(*self->sh));
}

TEST_F(lock, acquire_then_release)
{
	ASSERT_EQ(0, mpq_lock_locked(self->l));
	ASSERT_EQ(0, mpq_lock_acquire(self->l, MPQ_FOREVER));
	ASSERT_EQ(1, mpq_lock_locked(self->l));
	ASSERT_EQ(1, mpq_lock_owned(self->l));
	ASSERT_EQ(0, mpq_lock_release(self->l));
	ASSERT_EQ(0, mpq_lock_locked(self->l));
}

TEST_F(lock, holder_acquiring_again_is_edeadlk_or_eagain)
{
	ASSERT_EQ(0, mpq_lock_acquire(self->l, MPQ_FOREVER));
	ASSERT_EQ(-EDEADLK, mpq_lock_acquire(self->l, MPQ_FOREVER));
	ASSERT_EQ(-EAGAIN, mpq_lock_acquire(self->l, 0));
	ASSERT_EQ(0, mpq_lock_release(self->l));
}

TEST_F(lock, releasing_an_unlocked_lock_is_einval)
{
	ASSERT_EQ(-EINVAL, mpq_lock_release(self->l));
}

/* What acquire says in a child, which releases what it took. */
static int try_in_child(struct mpq_lock *l, int64_t timeout)
{
	pid_t pid = fork();
	int st, r;

	if (pid == 0) {
		r = mpq_lock_acquire(l, timeout);
		if ((r == 0 || r == -EOWNERDEAD) && mpq_lock_release(l))
			_exit(100);
		_exit(-r);
	}
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? -WEXITSTATUS(st) : 999;
}

static int release_in_child(struct mpq_lock *l)
{
	pid_t pid = fork();
	int st;

	if (pid == 0)
		_exit(-mpq_lock_release(l));
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? -WEXITSTATUS(st) : 999;
}

TEST_F(lock, another_process_cannot_take_a_held_lock)
{
	ASSERT_EQ(0, mpq_lock_acquire(self->l, MPQ_FOREVER));
	ASSERT_EQ(-EAGAIN, try_in_child(self->l, 0));
	ASSERT_EQ(-ETIMEDOUT, try_in_child(self->l, 20 * NSEC_PER_MSEC));
	ASSERT_EQ(0, mpq_lock_release(self->l));
	ASSERT_EQ(0, try_in_child(self->l, 0));
}

TEST_F(lock, release_by_another_process_is_eperm)
{
	ASSERT_EQ(0, mpq_lock_acquire(self->l, MPQ_FOREVER));
	ASSERT_EQ(-EPERM, release_in_child(self->l));
	ASSERT_EQ(1, mpq_lock_owned(self->l));
	ASSERT_EQ(0, mpq_lock_release(self->l));
}

TEST_F(lock, a_forked_child_does_not_hold_its_parents_lock)
{
	pid_t pid;

	ASSERT_EQ(0, mpq_lock_acquire(self->l, MPQ_FOREVER));
	pid = fork();
	if (pid == 0)
		_exit(mpq_lock_owned(self->l) == 0 &&
		      mpq_lock_acquire(self->l, 0) == -EAGAIN ? 0 : 1);
	ASSERT_EQ(0, wait_child(pid, 10000));
	ASSERT_EQ(0, mpq_lock_release(self->l));
}

TEST(rlock_counts_its_levels)
{
	struct mpq_lock *r;
	int i;

	ASSERT_EQ(0, mpq_rlock_new(&r, NULL));
	for (i = 0; i < 5; i++)
		ASSERT_EQ(0, mpq_lock_acquire(r, 0));
	for (i = 0; i < 4; i++) {
		ASSERT_EQ(0, mpq_lock_release(r));
		ASSERT_EQ(1, mpq_lock_owned(r));
		ASSERT_EQ(-EAGAIN, try_in_child(r, 0));
	}
	ASSERT_EQ(0, mpq_lock_release(r));
	ASSERT_EQ(0, mpq_lock_locked(r));
	ASSERT_EQ(-EPERM, mpq_lock_release(r));
	ASSERT_EQ(0, try_in_child(r, 0));
	mpq_lock_free(r);
}

TEST(rlock_release_by_a_non_owner_is_eperm)
{
	struct mpq_lock *r;

	ASSERT_EQ(0, mpq_rlock_new(&r, NULL));
	ASSERT_EQ(0, mpq_lock_acquire(r, MPQ_FOREVER));
	ASSERT_EQ(-EPERM, release_in_child(r));
	ASSERT_EQ(0, mpq_lock_release(r));
	mpq_lock_free(r);
}

TEST_F(lock, processes_exclude_each_other)
{
	enum { N = 4, ROUNDS = 20000 };
	pid_t pids[N];
	int i, j;

	for (i = 0; i < N; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			for (j = 0; j < ROUNDS; j++) {
				if (mpq_lock_acquire(self->l, MPQ_FOREVER))
					_exit(1);
				/* Not atomic: only the lock makes it exact. */
				self->sh->counter = self->sh->counter + 1;
				if (mpq_lock_release(self->l))
					_exit(2);
			}
			_exit(0);
		}
	}
	for (i = 0; i < N; i++)
		ASSERT_EQ(0, wait_child(pids[i], 120000));
	ASSERT_EQ((uint64_t)N * ROUNDS, self->sh->counter);
}

static int blocked_acquirer(void *arg)
{
	struct mpq_lock *l = arg;

	return -mpq_lock_acquire(l, MPQ_FOREVER);
}

TEST_F(lock, a_blocked_acquirer_gets_it_when_released)
{
	pid_t pid;

	ASSERT_EQ(0, mpq_lock_acquire(self->l, MPQ_FOREVER));
	pid = spawn(blocked_acquirer, self->l);
	sleep_ms(50);
	ASSERT_EQ(1, child_running(pid));
	ASSERT_EQ(0, mpq_lock_release(self->l));
	ASSERT_EQ(0, wait_child(pid, 10000));
}

/*
 * The uncontended path makes no system call at all: the child may call
 * nothing but exit_group (anything else fails with ENOSYS, and the test
 * sees the error).
 */
TEST_F(lock, uncontended_acquire_and_release_make_no_system_call)
{
	pid_t pid;
	int i, r = 0;

	self->sh->result = -1;
	pid = fork();
	if (pid == 0) {
		/* First use sets the thread up (gettid, robust list). */
		if (mpq_lock_acquire(self->l, 0) || mpq_lock_release(self->l))
			_exit(3);
		if (seccomp_allow_only_exit())
			_exit(4);
		for (i = 0; i < 1000 && !r; i++) {
			r = mpq_lock_acquire(self->l, MPQ_FOREVER);
			if (!r)
				r = mpq_lock_release(self->l);
		}
		self->sh->result = r;
		/* Raw exit: a sanitizer's _exit makes calls of its own. */
		syscall(SYS_exit_group, 0);
	}
	ASSERT_EQ(0, wait_child(pid, 10000));
	ASSERT_EQ(0, self->sh->result);
}

static int hold_until_killed(void *arg)
{
	struct mpq_lock *l = ((void **)arg)[0];
	struct shared *sh = ((void **)arg)[1];

	if (mpq_lock_acquire(l, MPQ_FOREVER))
		return 1;
	set_flag(&sh->ready, 1);
	for (;;)
		pause();
}

TEST_F(lock, holder_killed_next_acquirer_gets_eownerdead)
{
	void *arg[2] = { self->l, self->sh };
	pid_t pid = spawn(hold_until_killed, arg);

	ASSERT_EQ(1, wait_for_flag(&self->sh->ready, 10000));
	kill(pid, SIGKILL);
	ASSERT_EQ(128 + SIGKILL, wait_child(pid, 10000));
	ASSERT_EQ(-EOWNERDEAD, mpq_lock_acquire(self->l, 0));
	ASSERT_EQ(1, mpq_lock_owned(self->l));
	ASSERT_EQ(0, mpq_lock_release(self->l));
}

TEST_F(lock, eownerdead_is_sticky_until_marked_consistent)
{
	void *arg[2] = { self->l, self->sh };
	pid_t pid = spawn(hold_until_killed, arg);

	ASSERT_EQ(1, wait_for_flag(&self->sh->ready, 10000));
	kill(pid, SIGKILL);
	wait_child(pid, 10000);
	ASSERT_EQ(-EOWNERDEAD, mpq_lock_acquire(self->l, MPQ_FOREVER));
	ASSERT_EQ(0, mpq_lock_release(self->l));
	/* Nobody repaired it: the next holder is told too. */
	ASSERT_EQ(-EOWNERDEAD, try_in_child(self->l, MPQ_FOREVER));
	ASSERT_EQ(-EOWNERDEAD, mpq_lock_acquire(self->l, MPQ_FOREVER));
	ASSERT_EQ(0, mpq_lock_consistent(self->l));
	ASSERT_EQ(0, mpq_lock_release(self->l));
	ASSERT_EQ(0, try_in_child(self->l, MPQ_FOREVER));
	ASSERT_EQ(0, mpq_lock_acquire(self->l, MPQ_FOREVER));
	ASSERT_EQ(0, mpq_lock_release(self->l));
}

TEST_F(lock, consistent_needs_the_lock)
{
	ASSERT_EQ(-EPERM, mpq_lock_consistent(self->l));
}

/*
 * A waiter blocked without a timeout is woken by the kernel when the
 * holder dies: no polling. (The bound only catches a hang.)
 */
TEST_F(lock, a_blocked_waiter_wakes_when_the_holder_is_killed)
{
	void *arg[2] = { self->l, self->sh };
	pid_t holder = spawn(hold_until_killed, arg), waiter;

	ASSERT_EQ(1, wait_for_flag(&self->sh->ready, 10000));
	waiter = spawn(blocked_acquirer, self->l);
	sleep_ms(50);
	ASSERT_EQ(1, child_running(waiter));
	kill(holder, SIGKILL);
	wait_child(holder, 10000);
	ASSERT_EQ(EOWNERDEAD, wait_child(waiter, 10000));
}

TEST(rlock_holder_killed_at_depth_three)
{
	struct shared *sh = shared_alloc(sizeof(*sh));
	struct mpq_lock *r;
	pid_t pid;

	ASSERT_EQ(0, mpq_rlock_new(&r, NULL));
	pid = fork();
	if (pid == 0) {
		mpq_lock_acquire(r, 0);
		mpq_lock_acquire(r, 0);
		mpq_lock_acquire(r, 0);
		set_flag(&sh->ready, 1);
		for (;;)
			pause();
	}
	ASSERT_EQ(1, wait_for_flag(&sh->ready, 10000));
	kill(pid, SIGKILL);
	wait_child(pid, 10000);
	ASSERT_EQ(-EOWNERDEAD, mpq_lock_acquire(r, MPQ_FOREVER));
	ASSERT_EQ(0, mpq_lock_consistent(r));
	/* One level is ours now, not the dead holder's three. */
	ASSERT_EQ(0, mpq_lock_release(r));
	ASSERT_EQ(0, mpq_lock_locked(r));
	mpq_lock_free(r);
	munmap(sh, sizeof(*sh));
}

static void *thread_holds_and_exits(void *arg)
{
	mpq_lock_acquire(arg, MPQ_FOREVER);
	return NULL;
}

TEST_F(lock, a_thread_that_exits_holding_it_releases_it_as_dead)
{
	pthread_t t;

	ASSERT_EQ(0, pthread_create(&t, NULL, thread_holds_and_exits, self->l));
	ASSERT_EQ(0, pthread_join(t, NULL));
	ASSERT_EQ(-EOWNERDEAD, mpq_lock_acquire(self->l, 0));
	ASSERT_EQ(0, mpq_lock_consistent(self->l));
	ASSERT_EQ(0, mpq_lock_release(self->l));
}

TEST_F(lock, freeing_a_held_lock_releases_it_as_dead)
{
	char handle[MPQ_HANDLE_MAX];
	struct mpq_lock *other;
	pid_t pid;

	ASSERT_LT(0, mpq_lock_export(self->l, handle, sizeof(handle)));
	ASSERT_EQ(0, mpq_lock_import(&other, handle));
	pid = fork();
	if (pid == 0) {
		if (mpq_lock_acquire(other, 0))
			_exit(1);
		mpq_lock_free(other);
		/* Still alive, handle gone: the lock must be free. */
		set_flag(&self->sh->ready, 1);
		pause();
		_exit(0);
	}
	ASSERT_EQ(1, wait_for_flag(&self->sh->ready, 10000));
	ASSERT_EQ(-EOWNERDEAD, mpq_lock_acquire(self->l, 0));
	ASSERT_EQ(0, mpq_lock_consistent(self->l));
	ASSERT_EQ(0, mpq_lock_release(self->l));
	kill(pid, SIGKILL);
	wait_child(pid, 10000);
	mpq_lock_free(other);
}

/*
 * libmpq shares each thread's robust list with glibc. A process that dies
 * holding glibc robust mutexes and mpq locks, taken and released in mixed
 * order, must leave every one of them recoverable.
 */
TEST_F(lock, glibc_robust_mutexes_and_mpq_locks_both_recover)
{
	pthread_mutexattr_t ma;
	struct mpq_lock *l2;
	pthread_mutex_t *m2;
	pid_t pid;

	m2 = shared_alloc(sizeof(*m2));
	ASSERT_EQ(0, mpq_lock_new(&l2, NULL));
	pthread_mutexattr_init(&ma);
	pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
	pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
	ASSERT_EQ(0, pthread_mutex_init(&self->sh->glibc, &ma));
	ASSERT_EQ(0, pthread_mutex_init(m2, &ma));

	pid = fork();
	if (pid == 0) {
		pthread_mutex_t tmp;

		pthread_mutex_init(&tmp, &ma);
		/* glibc first, then ours, then glibc again, then ours. */
		pthread_mutex_lock(&self->sh->glibc);
		mpq_lock_acquire(self->l, 0);
		pthread_mutex_lock(&tmp);
		mpq_lock_acquire(l2, 0);
		pthread_mutex_lock(m2);
		/* Out of order releases on both sides. */
		pthread_mutex_unlock(&tmp);
		mpq_lock_release(self->l);
		mpq_lock_acquire(self->l, 0);
		set_flag(&self->sh->ready, 1);
		for (;;)
			pause();
	}
	ASSERT_EQ(1, wait_for_flag(&self->sh->ready, 10000));
	kill(pid, SIGKILL);
	wait_child(pid, 10000);
	ASSERT_EQ(EOWNERDEAD, pthread_mutex_trylock(&self->sh->glibc));
	ASSERT_EQ(EOWNERDEAD, pthread_mutex_trylock(m2));
	ASSERT_EQ(-EOWNERDEAD, mpq_lock_acquire(self->l, 0));
	ASSERT_EQ(-EOWNERDEAD, mpq_lock_acquire(l2, 0));
	pthread_mutex_consistent(&self->sh->glibc);
	pthread_mutex_consistent(m2);
	pthread_mutex_unlock(&self->sh->glibc);
	pthread_mutex_unlock(m2);
	ASSERT_EQ(0, mpq_lock_release(self->l));
	ASSERT_EQ(0, mpq_lock_release(l2));
	mpq_lock_free(l2);
	munmap(m2, sizeof(*m2));
}

TEST_F(lock, a_spawned_child_imports_the_lock_by_handle)
{
	char handle[MPQ_HANDLE_MAX];
	struct mpq_lock *l;

	ASSERT_LT(0, mpq_lock_export(self->l, handle, sizeof(handle)));
	ASSERT_EQ(0, strncmp(handle, "mpq-lock:fd=", 12));
	ASSERT_EQ(0, mpq_lock_import(&l, handle));
	ASSERT_EQ(0, mpq_lock_acquire(l, 0));
	ASSERT_EQ(1, mpq_lock_locked(self->l));
	ASSERT_EQ(0, mpq_lock_release(l));
	mpq_lock_free(l);
	ASSERT_EQ(-EINVAL, mpq_lock_import(&l, "mpq-queue:fd=3"));
	ASSERT_EQ(-EINVAL, mpq_lock_import(&l, "mpq-lock:fd=x"));
}

TEST(bad_arguments_are_einval_not_a_crash)
{
	struct mpq_lock_attr attr = { .flags = 1 };
	struct mpq_lock *l;

	ASSERT_EQ(-EINVAL, mpq_lock_new(NULL, NULL));
	ASSERT_EQ(-EINVAL, mpq_lock_new(&l, &attr));
	attr.flags = 0;
	attr.__reserved[2] = 1;
	ASSERT_EQ(-EINVAL, mpq_lock_new(&l, &attr));
	ASSERT_EQ(-EINVAL, mpq_lock_acquire(NULL, 0));
	ASSERT_EQ(-EINVAL, mpq_lock_release(NULL));
	ASSERT_EQ(-EINVAL, mpq_lock_locked(NULL));
	mpq_lock_free(NULL);
}

/*
 * The storm: three processes each make QUOTA updates of a counter under
 * the lock, through a roll-forward log (intent) so that a holder killed
 * in the middle of an update is repaired by the next holder; one of them
 * is SIGKILLed at a random instant. The others finish, and the counter is
 * exactly the sum of the per-process counts.
 */
static void storm_update(struct shared *sh, int who)
{
	/* Each step stored in order: the victim dies between any two. */
	__atomic_store_n(&sh->intent_who, who, __ATOMIC_RELEASE);
	__atomic_store_n(&sh->intent, sh->counter + 1, __ATOMIC_RELEASE);
	__atomic_store_n(&sh->counter, sh->intent, __ATOMIC_RELEASE);
	__atomic_store_n(&sh->per[who], sh->per[who] + 1, __ATOMIC_RELEASE);
	__atomic_store_n(&sh->intent, 0, __ATOMIC_RELEASE);
}

static void storm_repair(struct shared *sh)
{
	uint64_t want = sh->intent;

	if (!want)
		return;
	/* Roll forward whatever part of the update did not happen. */
	if (sh->counter != want) {
		sh->counter = want;
		sh->per[sh->intent_who]++;
	} else {
		uint64_t sum = 0;
		int i;

		for (i = 0; i < 8; i++)
			sum += sh->per[i];
		if (sum != want)
			sh->per[sh->intent_who]++;
	}
	sh->intent = 0;
}

static int storm_worker(struct mpq_lock *l, struct shared *sh, int who,
			int quota)
{
	int i, r;

	for (i = 0; i < quota; i++) {
		r = mpq_lock_acquire(l, 20 * NSEC_PER_SEC);
		if (r == -EOWNERDEAD) {
			storm_repair(sh);
			mpq_lock_consistent(l);
		} else if (r) {
			return 10;
		}
		storm_update(sh, who);
		if (mpq_lock_release(l))
			return 11;
	}
	return 0;
}

TEST_F(lock, sigkill_storm_loses_no_update)
{
	int iters = getenv("MPQ_IN_VM") ? 60 : 300, quota = 300, it, i;
	uint64_t seed = 0x9e3779b97f4a7c15ULL;

	for (it = 0; it < iters; it++) {
		struct shared *sh = self->sh;
		int victim = (int)(rnd(&seed) % 3);
		uint64_t sum = 0;
		pid_t pids[3];

		memset(sh, 0, sizeof(*sh));
		for (i = 0; i < 3; i++) {
			pids[i] = fork();
			if (pids[i] == 0)
				_exit(storm_worker(self->l, sh, i,
						   i == victim ? INT_MAX : quota));
		}
		usleep(rnd(&seed) % 3000);
		kill(pids[victim], SIGKILL);
		for (i = 0; i < 3; i++) {
			int st = wait_child(pids[i], 60000);

			if (i == victim) {
				ASSERT_EQ(128 + SIGKILL, st);
			} else {
				ASSERT_EQ(0, st);
			}
		}
		/* Whatever the victim left half done, repair it here. */
		i = mpq_lock_acquire(self->l, 0);
		ASSERT_TRUE(i == 0 || i == -EOWNERDEAD);
		storm_repair(sh);
		if (i)
			mpq_lock_consistent(self->l);
		ASSERT_EQ(0, mpq_lock_release(self->l));
		for (i = 0; i < 3; i++) {
			sum += sh->per[i];
			if (i != victim) {
				ASSERT_EQ((uint64_t)quota, sh->per[i]);
			}
		}
		ASSERT_EQ(sum, sh->counter);
	}
}

TEST_HARNESS_MAIN
