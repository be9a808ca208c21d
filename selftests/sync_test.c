// SPDX-License-Identifier: GPL-2.0
/*
 * The promises of mpq_cond (Condition), mpq_sem (Semaphore and
 * BoundedSemaphore) and mpq_event (Event), one test each, across
 * processes, on the backend the environment selects.
 */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>

#include "kselftest_harness.h"
#include "helpers.h"

struct shared {
	int ready;
	int woken;
	int value;
	int flag;
};

static struct shared *shared_new(void)
{
	struct shared *sh = shared_alloc(sizeof(*sh));

	memset(sh, 0, sizeof(*sh));
	return sh;
}

static int exit_code(pid_t pid)
{
	return wait_child(pid, 20000);
}

/* --- Condition --------------------------------------------------------- */

FIXTURE(cond) {
	struct mpq_cond *c;
	struct shared *sh;
};

FIXTURE_SETUP(cond)
{
	ASSERT_EQ(0, mpq_cond_new(&self->c, NULL, NULL));
	self->sh = shared_new();
}

FIXTURE_TEARDOWN(cond)
{
	mpq_cond_free(self->c);
	munmap(self->sh, sizeof(*self->sh));
}

TEST_F(cond, its_own_lock_is_an_rlock)
{
	struct mpq_lock *l = mpq_cond_get_lock(self->c);

	ASSERT_NE(NULL, l);
	ASSERT_EQ(0, mpq_cond_acquire(self->c, MPQ_FOREVER));
	ASSERT_EQ(0, mpq_lock_acquire(l, 0));
	ASSERT_EQ(0, mpq_lock_release(l));
	ASSERT_EQ(0, mpq_cond_release(self->c));
	ASSERT_EQ(0, mpq_lock_locked(l));
}

TEST_F(cond, wait_and_notify_need_the_lock)
{
	ASSERT_EQ(-EPERM, mpq_cond_wait(self->c, 0));
	ASSERT_EQ(-EPERM, mpq_cond_notify(self->c, 1));
	ASSERT_EQ(-EPERM, mpq_cond_notify_all(self->c));
}

TEST_F(cond, wait_times_out_holding_the_lock_again)
{
	ASSERT_EQ(0, mpq_cond_acquire(self->c, MPQ_FOREVER));
	ASSERT_EQ(-ETIMEDOUT, mpq_cond_wait(self->c, 20 * NSEC_PER_MSEC));
	ASSERT_EQ(1, mpq_lock_owned(mpq_cond_get_lock(self->c)));
	ASSERT_EQ(-ETIMEDOUT, mpq_cond_wait(self->c, 0));
	ASSERT_EQ(0, mpq_cond_release(self->c));
}

/* A waiter child: waits for flag under the condition, counts its wake. */
static int cond_waiter(struct mpq_cond *c, struct shared *sh, int64_t t)
{
	int r;

	if (mpq_cond_acquire(c, MPQ_FOREVER))
		return 1;
	__atomic_add_fetch(&sh->ready, 1, __ATOMIC_SEQ_CST);
	r = mpq_cond_wait(c, t);
	if (r == 0)
		__atomic_add_fetch(&sh->woken, 1, __ATOMIC_SEQ_CST);
	if (mpq_cond_release(c))
		return 2;
	return r == 0 ? 0 : 3;
}

/* Wait until n waiters are inside wait(), asleep with the lock free. */
static void wait_for_waiters(struct mpq_cond *c, struct shared *sh, int n)
{
	while (__atomic_load_n(&sh->ready, __ATOMIC_SEQ_CST) < n)
		sleep_ms(1);
	/* Each released the lock to sleep; taking it proves they did. */
	mpq_cond_acquire(c, MPQ_FOREVER);
	mpq_cond_release(c);
	sleep_ms(50);
}

TEST_F(cond, notify_wakes_one_waiter)
{
	pid_t pids[3];
	int i, done = 0;

	for (i = 0; i < 3; i++) {
		pids[i] = fork();
		if (pids[i] == 0)
			_exit(cond_waiter(self->c, self->sh, 3 * NSEC_PER_SEC));
	}
	wait_for_waiters(self->c, self->sh, 3);
	ASSERT_EQ(0, mpq_cond_acquire(self->c, MPQ_FOREVER));
	ASSERT_EQ(0, mpq_cond_notify(self->c, 1));
	ASSERT_EQ(0, mpq_cond_release(self->c));
	sleep_ms(200);
	ASSERT_EQ(1, __atomic_load_n(&self->sh->woken, __ATOMIC_SEQ_CST));
	/* The other two time out. */
	for (i = 0; i < 3; i++)
		done += exit_code(pids[i]) == 0;
	ASSERT_EQ(1, done);
	ASSERT_EQ(1, self->sh->woken);
}

TEST_F(cond, notify_n_wakes_n_and_notify_all_the_rest)
{
	pid_t pids[4];
	int i;

	for (i = 0; i < 4; i++) {
		pids[i] = fork();
		if (pids[i] == 0)
			_exit(cond_waiter(self->c, self->sh, 20 * NSEC_PER_SEC));
	}
	wait_for_waiters(self->c, self->sh, 4);
	ASSERT_EQ(0, mpq_cond_acquire(self->c, MPQ_FOREVER));
	ASSERT_EQ(0, mpq_cond_notify(self->c, 2));
	ASSERT_EQ(0, mpq_cond_release(self->c));
	sleep_ms(200);
	ASSERT_EQ(2, __atomic_load_n(&self->sh->woken, __ATOMIC_SEQ_CST));
	ASSERT_EQ(0, mpq_cond_acquire(self->c, MPQ_FOREVER));
	ASSERT_EQ(0, mpq_cond_notify_all(self->c));
	ASSERT_EQ(0, mpq_cond_release(self->c));
	for (i = 0; i < 4; i++)
		ASSERT_EQ(0, exit_code(pids[i]));
	ASSERT_EQ(4, self->sh->woken);
}

static int flag_is_set(void *arg)
{
	return __atomic_load_n((int *)arg, __ATOMIC_SEQ_CST) == 3;
}

TEST_F(cond, wait_for_returns_once_the_predicate_holds)
{
	pid_t pid;
	int i;

	pid = fork();
	if (pid == 0) {
		if (mpq_cond_acquire(self->c, MPQ_FOREVER))
			_exit(1);
		_exit(-mpq_cond_wait_for(self->c, flag_is_set, &self->sh->flag,
					 20 * NSEC_PER_SEC));
	}
	for (i = 1; i <= 3; i++) {
		sleep_ms(20);
		ASSERT_EQ(0, mpq_cond_acquire(self->c, MPQ_FOREVER));
		self->sh->flag = i;
		ASSERT_EQ(0, mpq_cond_notify_all(self->c));
		ASSERT_EQ(0, mpq_cond_release(self->c));
	}
	ASSERT_EQ(0, exit_code(pid));
}

TEST_F(cond, wait_for_times_out_when_the_predicate_never_holds)
{
	ASSERT_EQ(0, mpq_cond_acquire(self->c, MPQ_FOREVER));
	ASSERT_EQ(-ETIMEDOUT, mpq_cond_wait_for(self->c, flag_is_set,
						&self->sh->flag,
						30 * NSEC_PER_MSEC));
	ASSERT_EQ(0, mpq_cond_release(self->c));
}

TEST(cond_with_a_lock_of_the_callers)
{
	struct mpq_lock *l;
	struct mpq_cond *c;

	ASSERT_EQ(0, mpq_lock_new(&l, NULL));
	ASSERT_EQ(0, mpq_cond_new(&c, l, NULL));
	ASSERT_EQ(l, mpq_cond_get_lock(c));
	ASSERT_EQ(0, mpq_lock_acquire(l, MPQ_FOREVER));
	ASSERT_EQ(-ETIMEDOUT, mpq_cond_wait(c, 10 * NSEC_PER_MSEC));
	ASSERT_EQ(1, mpq_lock_owned(l));
	ASSERT_EQ(0, mpq_lock_release(l));
	mpq_cond_free(c);
	mpq_lock_free(l);
}

TEST_F(cond, wait_restores_every_level_of_the_rlock)
{
	struct mpq_lock *l = mpq_cond_get_lock(self->c);
	pid_t pid;

	ASSERT_EQ(0, mpq_lock_acquire(l, MPQ_FOREVER));
	ASSERT_EQ(0, mpq_lock_acquire(l, MPQ_FOREVER));
	pid = fork();
	if (pid == 0) {
		/* It must be free while the parent waits. */
		if (mpq_lock_acquire(l, 10 * NSEC_PER_SEC))
			_exit(1);
		mpq_cond_notify(self->c, 1);
		mpq_lock_release(l);
		_exit(0);
	}
	ASSERT_EQ(0, mpq_cond_wait(self->c, 10 * NSEC_PER_SEC));
	ASSERT_EQ(0, exit_code(pid));
	ASSERT_EQ(0, mpq_lock_release(l));
	ASSERT_EQ(1, mpq_lock_owned(l));
	ASSERT_EQ(0, mpq_lock_release(l));
	ASSERT_EQ(0, mpq_lock_locked(l));
}

TEST_F(cond, a_waiter_killed_asleep_does_not_swallow_a_notify)
{
	pid_t victim, other;

	victim = fork();
	if (victim == 0)
		_exit(cond_waiter(self->c, self->sh, MPQ_FOREVER));
	other = fork();
	if (other == 0)
		_exit(cond_waiter(self->c, self->sh, 20 * NSEC_PER_SEC));
	wait_for_waiters(self->c, self->sh, 2);
	kill(victim, SIGKILL);
	exit_code(victim);
	ASSERT_EQ(0, mpq_cond_acquire(self->c, MPQ_FOREVER));
	ASSERT_EQ(0, mpq_cond_notify(self->c, 1));
	ASSERT_EQ(0, mpq_cond_release(self->c));
	ASSERT_EQ(0, exit_code(other));
}

/* --- Semaphore --------------------------------------------------------- */

TEST(sem_counts_down_and_up)
{
	struct mpq_sem *s;

	ASSERT_EQ(0, mpq_sem_new(&s, 2, NULL));
	ASSERT_EQ(2, mpq_sem_get_value(s));
	ASSERT_EQ(0, mpq_sem_acquire(s, 0));
	ASSERT_EQ(0, mpq_sem_acquire(s, 0));
	ASSERT_EQ(0, mpq_sem_get_value(s));
	ASSERT_EQ(-EAGAIN, mpq_sem_acquire(s, 0));
	ASSERT_EQ(-ETIMEDOUT, mpq_sem_acquire(s, 20 * NSEC_PER_MSEC));
	ASSERT_EQ(0, mpq_sem_release(s));
	ASSERT_EQ(1, mpq_sem_get_value(s));
	/* Unbounded: more releases than acquires are fine. */
	ASSERT_EQ(0, mpq_sem_release(s));
	ASSERT_EQ(0, mpq_sem_release(s));
	ASSERT_EQ(3, mpq_sem_get_value(s));
	mpq_sem_free(s);
}

TEST(bounded_sem_over_release_is_einval)
{
	struct mpq_sem *s;

	ASSERT_EQ(0, mpq_bounded_sem_new(&s, 1, NULL));
	ASSERT_EQ(-EINVAL, mpq_sem_release(s));
	ASSERT_EQ(0, mpq_sem_acquire(s, 0));
	ASSERT_EQ(0, mpq_sem_release(s));
	ASSERT_EQ(-EINVAL, mpq_sem_release(s));
	ASSERT_EQ(1, mpq_sem_get_value(s));
	mpq_sem_free(s);
}

TEST(sem_release_wakes_a_blocked_acquirer_in_another_process)
{
	struct mpq_sem *s;
	pid_t pid;

	ASSERT_EQ(0, mpq_sem_new(&s, 0, NULL));
	pid = fork();
	if (pid == 0)
		_exit(-mpq_sem_acquire(s, MPQ_FOREVER));
	sleep_ms(50);
	ASSERT_EQ(1, child_running(pid));
	ASSERT_EQ(0, mpq_sem_release(s));
	ASSERT_EQ(0, exit_code(pid));
	ASSERT_EQ(0, mpq_sem_get_value(s));
	mpq_sem_free(s);
}

TEST(sem_bounds_how_many_are_inside)
{
	enum { N = 6, K = 2, ROUNDS = 3000 };
	struct mpq_sem *s;
	int *inside = shared_alloc(2 * sizeof(int)), i, j;
	pid_t pids[N];

	ASSERT_EQ(0, mpq_sem_new(&s, K, NULL));
	inside[0] = inside[1] = 0;
	for (i = 0; i < N; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			for (j = 0; j < ROUNDS; j++) {
				int n;

				if (mpq_sem_acquire(s, MPQ_FOREVER))
					_exit(1);
				n = __atomic_add_fetch(&inside[0], 1,
						       __ATOMIC_SEQ_CST);
				if (n > K)
					__atomic_store_n(&inside[1], n,
							 __ATOMIC_SEQ_CST);
				__atomic_sub_fetch(&inside[0], 1,
						   __ATOMIC_SEQ_CST);
				if (mpq_sem_release(s))
					_exit(2);
			}
			_exit(0);
		}
	}
	for (i = 0; i < N; i++)
		ASSERT_EQ(0, exit_code(pids[i]));
	ASSERT_EQ(0, inside[1]);
	ASSERT_EQ(K, mpq_sem_get_value(s));
	mpq_sem_free(s);
}

TEST(sem_and_event_import_by_handle)
{
	char h1[MPQ_HANDLE_MAX], h2[MPQ_HANDLE_MAX];
	struct mpq_event *e, *e2;
	struct mpq_sem *s, *s2;

	ASSERT_EQ(0, mpq_sem_new(&s, 5, NULL));
	ASSERT_EQ(0, mpq_event_new(&e, NULL));
	ASSERT_LT(0, mpq_sem_export(s, h1, sizeof(h1)));
	ASSERT_LT(0, mpq_event_export(e, h2, sizeof(h2)));
	ASSERT_EQ(-EINVAL, mpq_sem_import(&s2, h2));
	ASSERT_EQ(-EINVAL, mpq_event_import(&e2, h1));
	ASSERT_EQ(0, mpq_sem_import(&s2, h1));
	ASSERT_EQ(0, mpq_event_import(&e2, h2));
	ASSERT_EQ(5, mpq_sem_get_value(s2));
	ASSERT_EQ(0, mpq_event_set(e2));
	ASSERT_EQ(1, mpq_event_is_set(e));
	mpq_sem_free(s2);
	mpq_event_free(e2);
	mpq_sem_free(s);
	mpq_event_free(e);
}

/* --- Event ------------------------------------------------------------- */

TEST(event_set_clear_is_set)
{
	struct mpq_event *e;

	ASSERT_EQ(0, mpq_event_new(&e, NULL));
	ASSERT_EQ(0, mpq_event_is_set(e));
	ASSERT_EQ(-EAGAIN, mpq_event_wait(e, 0));
	ASSERT_EQ(-ETIMEDOUT, mpq_event_wait(e, 20 * NSEC_PER_MSEC));
	ASSERT_EQ(0, mpq_event_set(e));
	ASSERT_EQ(1, mpq_event_is_set(e));
	ASSERT_EQ(0, mpq_event_wait(e, 0));
	ASSERT_EQ(0, mpq_event_clear(e));
	ASSERT_EQ(0, mpq_event_is_set(e));
	mpq_event_free(e);
}

TEST(event_set_wakes_every_waiting_process)
{
	struct mpq_event *e;
	pid_t pids[4];
	int i;

	ASSERT_EQ(0, mpq_event_new(&e, NULL));
	for (i = 0; i < 4; i++) {
		pids[i] = fork();
		if (pids[i] == 0)
			_exit(-mpq_event_wait(e, MPQ_FOREVER));
	}
	sleep_ms(50);
	for (i = 0; i < 4; i++)
		ASSERT_EQ(1, child_running(pids[i]));
	ASSERT_EQ(0, mpq_event_set(e));
	for (i = 0; i < 4; i++)
		ASSERT_EQ(0, exit_code(pids[i]));
	mpq_event_free(e);
}

TEST(a_set_cleared_at_once_still_ends_the_waits_it_found)
{
	struct mpq_event *e;
	pid_t pids[3];
	int i;

	ASSERT_EQ(0, mpq_event_new(&e, NULL));
	for (i = 0; i < 3; i++) {
		pids[i] = fork();
		if (pids[i] == 0)
			_exit(-mpq_event_wait(e, 20 * NSEC_PER_SEC));
	}
	sleep_ms(100);
	ASSERT_EQ(0, mpq_event_set(e));
	ASSERT_EQ(0, mpq_event_clear(e));
	for (i = 0; i < 3; i++)
		ASSERT_EQ(0, exit_code(pids[i]));
	ASSERT_EQ(0, mpq_event_is_set(e));
	mpq_event_free(e);
}

/*
 * Uncontended, the other objects make no system call either: the child
 * may call nothing but exit (as lock_test checks for locks).
 */
TEST(sem_event_and_cond_uncontended_make_no_system_call)
{
	struct mpq_event *e;
	struct mpq_cond *c;
	struct mpq_sem *s;
	int *res = shared_alloc(sizeof(int)), i, r = 0;
	pid_t pid;

	ASSERT_EQ(0, mpq_sem_new(&s, 1, NULL));
	ASSERT_EQ(0, mpq_event_new(&e, NULL));
	ASSERT_EQ(0, mpq_cond_new(&c, NULL, NULL));
	*res = -1;
	pid = fork();
	if (pid == 0) {
		/* First use sets the thread up (gettid, robust list). */
		mpq_cond_acquire(c, 0);
		mpq_cond_release(c);
		if (seccomp_allow_only_exit())
			_exit(4);
		for (i = 0; i < 1000 && !r; i++) {
			r = mpq_sem_acquire(s, MPQ_FOREVER);
			r = r ? r : mpq_sem_release(s);
			r = r ? r : mpq_event_set(e);
			r = r ? r : mpq_event_wait(e, MPQ_FOREVER);
			r = r ? r : mpq_event_clear(e);
			r = r ? r : mpq_cond_acquire(c, MPQ_FOREVER);
			r = r ? r : mpq_cond_notify_all(c);
			r = r ? r : mpq_cond_release(c);
		}
		*res = r;
		syscall(SYS_exit_group, 0);
	}
	ASSERT_EQ(0, wait_child(pid, 10000));
	ASSERT_EQ(0, *res);
	mpq_sem_free(s);
	mpq_event_free(e);
	mpq_cond_free(c);
}

TEST(bad_arguments_are_einval_not_a_crash)
{
	struct mpq_lock_attr attr = { .flags = 2 };
	struct mpq_event *e;
	struct mpq_cond *c;
	struct mpq_sem *s;

	ASSERT_EQ(-EINVAL, mpq_cond_new(NULL, NULL, NULL));
	ASSERT_EQ(-EINVAL, mpq_cond_new(&c, NULL, &attr));
	ASSERT_EQ(-EINVAL, mpq_sem_new(&s, 0, &attr));
	ASSERT_EQ(-EINVAL, mpq_sem_new(&s, 0x80000000U, NULL));
	ASSERT_EQ(-EINVAL, mpq_event_new(&e, &attr));
	ASSERT_EQ(-EINVAL, mpq_cond_wait(NULL, 0));
	ASSERT_EQ(-EINVAL, mpq_cond_notify(NULL, 1));
	ASSERT_EQ(-EINVAL, mpq_sem_acquire(NULL, 0));
	ASSERT_EQ(-EINVAL, mpq_sem_release(NULL));
	ASSERT_EQ(-EINVAL, mpq_event_set(NULL));
	ASSERT_EQ(-EINVAL, mpq_event_wait(NULL, 0));
	ASSERT_EQ(NULL, mpq_cond_get_lock(NULL));
	mpq_cond_free(NULL);
	mpq_sem_free(NULL);
	mpq_event_free(NULL);
}

TEST_HARNESS_MAIN
