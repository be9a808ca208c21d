// SPDX-License-Identifier: GPL-2.0
/*
 * The promises of mpq_barrier, one test each: arrival indices, the action
 * run once per round by one party, timeouts that break it, abort and
 * reset, and a party SIGKILLed at the barrier breaking it for the others
 * at once, many times over.
 */
#include <stdio.h>

#include "kselftest_harness.h"
#include "helpers.h"

struct shared {
	int actions;
	int index_seen[16];
	int results[16];
};

static int count_action(void *arg)
{
	__atomic_add_fetch(&((struct shared *)arg)->actions, 1,
			   __ATOMIC_SEQ_CST);
	return 0;
}

static int failing_action(void *arg)
{
	return -EIO;
}

FIXTURE(barrier) {
	struct mpq_barrier *b;
	struct shared *sh;
};

FIXTURE_SETUP(barrier)
{
	self->sh = shared_alloc(sizeof(*self->sh));
	memset(self->sh, 0, sizeof(*self->sh));
	ASSERT_EQ(0, mpq_barrier_new(&self->b, 3, count_action, self->sh,
				     NULL));
}

FIXTURE_TEARDOWN(barrier)
{
	mpq_barrier_free(self->b);
	munmap(self->sh, sizeof(*self->sh));
}

/* n parties in children, each waiting rounds times; results in sh. */
static void run_parties(struct mpq_barrier *b, struct shared *sh, pid_t *pids,
			int n, int rounds, int64_t timeout)
{
	int i, r, k;

	for (i = 0; i < n; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			for (k = 0; k < rounds; k++) {
				r = mpq_barrier_wait(b, timeout);
				sh->results[i] = r;
				if (r < 0)
					_exit(0);
				__atomic_or_fetch(&sh->index_seen[k % 16],
						  1 << r, __ATOMIC_SEQ_CST);
			}
			_exit(0);
		}
	}
}

static void join_all(pid_t *pids, int n)
{
	int i;

	for (i = 0; i < n; i++)
		wait_child(pids[i], 30000);
}

TEST_F(barrier, each_round_gives_every_index_once_and_runs_the_action_once)
{
	pid_t pids[3];
	int k;

	ASSERT_EQ(3, mpq_barrier_parties(self->b));
	run_parties(self->b, self->sh, pids, 3, 10, 20 * NSEC_PER_SEC);
	join_all(pids, 3);
	for (k = 0; k < 10; k++) {
		ASSERT_EQ(0x7, self->sh->index_seen[k]);
	}
	ASSERT_EQ(10, self->sh->actions);
	ASSERT_EQ(0, mpq_barrier_broken(self->b));
	ASSERT_EQ(0, mpq_barrier_n_waiting(self->b));
}

TEST_F(barrier, n_waiting_counts_the_parties_inside)
{
	pid_t pids[2];

	run_parties(self->b, self->sh, pids, 2, 1, 20 * NSEC_PER_SEC);
	while (mpq_barrier_n_waiting(self->b) < 2)
		sleep_ms(1);
	ASSERT_EQ(2, mpq_barrier_n_waiting(self->b));
	ASSERT_LE(0, mpq_barrier_wait(self->b, MPQ_FOREVER));
	join_all(pids, 2);
	ASSERT_EQ(0, mpq_barrier_n_waiting(self->b));
}

TEST_F(barrier, a_timeout_breaks_it_for_everyone)
{
	pid_t pids[1];

	run_parties(self->b, self->sh, pids, 1, 1, 20 * NSEC_PER_SEC);
	while (mpq_barrier_n_waiting(self->b) < 1)
		sleep_ms(1);
	ASSERT_EQ(-ETIMEDOUT, mpq_barrier_wait(self->b, 20 * NSEC_PER_MSEC));
	join_all(pids, 1);
	ASSERT_EQ(-ECANCELED, self->sh->results[0]);
	ASSERT_EQ(1, mpq_barrier_broken(self->b));
	ASSERT_EQ(-ECANCELED, mpq_barrier_wait(self->b, 0));
}

TEST_F(barrier, abort_breaks_it_until_reset)
{
	pid_t pids[2];

	run_parties(self->b, self->sh, pids, 2, 1, 20 * NSEC_PER_SEC);
	while (mpq_barrier_n_waiting(self->b) < 2)
		sleep_ms(1);
	ASSERT_EQ(0, mpq_barrier_abort(self->b));
	join_all(pids, 2);
	ASSERT_EQ(-ECANCELED, self->sh->results[0]);
	ASSERT_EQ(-ECANCELED, self->sh->results[1]);
	ASSERT_EQ(1, mpq_barrier_broken(self->b));
	ASSERT_EQ(-ECANCELED, mpq_barrier_wait(self->b, MPQ_FOREVER));
	ASSERT_EQ(0, mpq_barrier_reset(self->b));
	ASSERT_EQ(0, mpq_barrier_broken(self->b));
	memset(self->sh, 0, sizeof(*self->sh));
	run_parties(self->b, self->sh, pids, 2, 1, 20 * NSEC_PER_SEC);
	ASSERT_LE(0, mpq_barrier_wait(self->b, 20 * NSEC_PER_SEC));
	join_all(pids, 2);
	ASSERT_LE(0, self->sh->results[0]);
	ASSERT_LE(0, self->sh->results[1]);
}

TEST_F(barrier, reset_cancels_the_parties_waiting)
{
	pid_t pids[2];

	run_parties(self->b, self->sh, pids, 2, 1, 20 * NSEC_PER_SEC);
	while (mpq_barrier_n_waiting(self->b) < 2)
		sleep_ms(1);
	ASSERT_EQ(0, mpq_barrier_reset(self->b));
	join_all(pids, 2);
	ASSERT_EQ(-ECANCELED, self->sh->results[0]);
	ASSERT_EQ(-ECANCELED, self->sh->results[1]);
	ASSERT_EQ(0, mpq_barrier_broken(self->b));
	ASSERT_EQ(0, mpq_barrier_n_waiting(self->b));
}

TEST(a_failing_action_breaks_it_and_its_error_reaches_the_runner)
{
	struct shared *sh = shared_alloc(sizeof(*sh));
	struct mpq_barrier *b;
	pid_t pid;

	memset(sh, 0, sizeof(*sh));
	ASSERT_EQ(0, mpq_barrier_new(&b, 2, failing_action, NULL, NULL));
	pid = fork();
	if (pid == 0) {
		sh->results[0] = mpq_barrier_wait(b, 20 * NSEC_PER_SEC);
		_exit(0);
	}
	while (mpq_barrier_n_waiting(b) < 1)
		sleep_ms(1);
	/* We arrive last: we run the action. */
	ASSERT_EQ(-EIO, mpq_barrier_wait(b, 20 * NSEC_PER_SEC));
	wait_child(pid, 30000);
	ASSERT_EQ(-ECANCELED, sh->results[0]);
	ASSERT_EQ(1, mpq_barrier_broken(b));
	mpq_barrier_free(b);
}

TEST(a_party_killed_at_the_barrier_breaks_it_at_once)
{
	struct shared *sh = shared_alloc(sizeof(*sh));
	struct mpq_barrier *b;
	pid_t victim, other;

	memset(sh, 0, sizeof(*sh));
	ASSERT_EQ(0, mpq_barrier_new(&b, 3, NULL, NULL, NULL));
	other = fork();
	if (other == 0)
		_exit(-mpq_barrier_wait(b, MPQ_FOREVER));
	while (mpq_barrier_n_waiting(b) < 1)
		sleep_ms(1);
	/* The victim arrives after the other went to sleep. */
	victim = fork();
	if (victim == 0)
		_exit(-mpq_barrier_wait(b, MPQ_FOREVER));
	while (mpq_barrier_n_waiting(b) < 2)
		sleep_ms(1);
	sleep_ms(20);
	kill(victim, SIGKILL);
	ASSERT_EQ(128 + SIGKILL, wait_child(victim, 10000));
	/* No third party ever comes: only the death can wake it. */
	ASSERT_EQ(ECANCELED, wait_child(other, 10000));
	ASSERT_EQ(1, mpq_barrier_broken(b));
	mpq_barrier_free(b);
	munmap(sh, sizeof(*sh));
}

TEST(a_barrier_imported_by_handle_is_the_same_barrier)
{
	char handle[MPQ_HANDLE_MAX];
	struct mpq_barrier *b, *b2;
	struct shared *sh = shared_alloc(sizeof(*sh));
	pid_t pid;

	memset(sh, 0, sizeof(*sh));
	ASSERT_EQ(0, mpq_barrier_new(&b, 2, NULL, NULL, NULL));
	ASSERT_LT(0, mpq_barrier_export(b, handle, sizeof(handle)));
	ASSERT_EQ(0, mpq_barrier_import(&b2, handle, count_action, sh));
	ASSERT_EQ(2, mpq_barrier_parties(b2));
	pid = fork();
	if (pid == 0)
		_exit(mpq_barrier_wait(b, 20 * NSEC_PER_SEC) < 0);
	while (mpq_barrier_n_waiting(b2) < 1)
		sleep_ms(1);
	/* Last to arrive through b2: b2's action runs. */
	ASSERT_LE(0, mpq_barrier_wait(b2, 20 * NSEC_PER_SEC));
	ASSERT_EQ(0, wait_child(pid, 30000));
	ASSERT_EQ(1, sh->actions);
	mpq_barrier_free(b2);
	mpq_barrier_free(b);
}

/* Four parties meet once: 0, or what went wrong. */
static int full_round(struct mpq_barrier *b)
{
	pid_t pids[3];
	int i, bad = 0;

	for (i = 0; i < 3; i++) {
		pids[i] = fork();
		if (pids[i] == 0)
			_exit(mpq_barrier_wait(b, 20 * NSEC_PER_SEC) < 0);
	}
	if (mpq_barrier_wait(b, 20 * NSEC_PER_SEC) < 0)
		bad = 1;
	for (i = 0; i < 3; i++)
		if (wait_child(pids[i], 30000))
			bad = 1;
	return bad;
}

/*
 * The storm: four parties meet round after round; one of them is
 * SIGKILLed at a random instant. Killed inside wait() (nearly always: it
 * spends its time there), it breaks the barrier and the others leave
 * with -ECANCELED at once; killed between two waits, it is a party that
 * never comes, and the others leave when their timeout breaks the barrier,
 * as in Python. Either way nobody hangs, and after the storm reset makes
 * the barrier whole again: no slot was lost to the dead.
 */
FIXTURE(storm) {
	int unused;
};

FIXTURE_SETUP(storm)
{
}

FIXTURE_TEARDOWN(storm)
{
}

TEST_F_TIMEOUT(storm, sigkill_storm_never_leaves_a_party_hanging, 600)
{
	int iters = getenv("MPQ_IN_VM") ? 40 : 200, it, i;
	int64_t timeout = 1 * NSEC_PER_SEC;
	uint64_t seed = 0x2545f4914f6cdd1dULL;
	struct mpq_barrier *b;

	ASSERT_EQ(0, mpq_barrier_new(&b, 4, NULL, NULL, NULL));
	for (it = 0; it < iters; it++) {
		int victim = (int)(rnd(&seed) % 4);
		pid_t pids[4];

		ASSERT_EQ(0, mpq_barrier_reset(b));
		for (i = 0; i < 4; i++) {
			pids[i] = fork();
			if (pids[i] == 0) {
				int64_t t = i == victim ? MPQ_FOREVER : timeout;
				int r = 0;

				while (r >= 0)
					r = mpq_barrier_wait(b, t);
				_exit(r == -ECANCELED || r == -ETIMEDOUT ? 0 : 1);
			}
		}
		usleep(rnd(&seed) % 2000);
		kill(pids[victim], SIGKILL);
		for (i = 0; i < 4; i++) {
			int st = wait_child(pids[i], 30000);

			if (i == victim) {
				ASSERT_EQ(128 + SIGKILL, st);
			} else {
				ASSERT_EQ(0, st);
			}
		}
		ASSERT_EQ(1, mpq_barrier_broken(b));
	}
	ASSERT_EQ(0, mpq_barrier_reset(b));
	ASSERT_EQ(0, full_round(b));
	mpq_barrier_free(b);
}

/*
 * Python's Barrier(parties, action, timeout): the timeout given at
 * creation is what wait() uses when it is given none
 * (MPQ_BARRIER_DEFAULT_TIMEOUT), and it travels with the barrier to the
 * processes that import it, as Python pickles it with the barrier.
 */
TEST(wait_without_a_timeout_uses_the_one_given_at_creation)
{
	struct mpq_barrier *b;
	int64_t t0, took;

	ASSERT_EQ(0, mpq_barrier_new_timeout(&b, 2, NULL, NULL,
					     50 * NSEC_PER_MSEC, NULL));
	t0 = now_ns();
	ASSERT_EQ(-ETIMEDOUT,
		  mpq_barrier_wait(b, MPQ_BARRIER_DEFAULT_TIMEOUT));
	took = now_ns() - t0;
	EXPECT_LE(50 * NSEC_PER_MSEC, took);
	/* As in Python: the timeout broke it. */
	EXPECT_EQ(1, mpq_barrier_broken(b));
	/* A timeout given to wait() is that wait's own. */
	ASSERT_EQ(0, mpq_barrier_reset(b));
	t0 = now_ns();
	ASSERT_EQ(-ETIMEDOUT, mpq_barrier_wait(b, 0));
	EXPECT_GT(50 * NSEC_PER_MSEC, now_ns() - t0);
	mpq_barrier_free(b);
}

TEST(a_barrier_without_a_default_timeout_waits_for_ever_by_default)
{
	struct mpq_barrier *b;
	pid_t pid;

	ASSERT_EQ(0, mpq_barrier_new(&b, 2, NULL, NULL, NULL));
	pid = fork();
	if (pid == 0) {
		sleep_ms(200);
		_exit(mpq_barrier_wait(b, 20 * NSEC_PER_SEC) < 0);
	}
	/* Longer than the other party takes: no default, no timeout. */
	EXPECT_LE(0, mpq_barrier_wait(b, MPQ_BARRIER_DEFAULT_TIMEOUT));
	ASSERT_EQ(0, wait_child(pid, 30000));
	mpq_barrier_free(b);
	ASSERT_EQ(0, mpq_barrier_new_timeout(&b, 2, NULL, NULL,
					     MPQ_FOREVER, NULL));
	pid = fork();
	if (pid == 0) {
		sleep_ms(200);
		_exit(mpq_barrier_wait(b, 20 * NSEC_PER_SEC) < 0);
	}
	EXPECT_LE(0, mpq_barrier_wait(b, MPQ_BARRIER_DEFAULT_TIMEOUT));
	ASSERT_EQ(0, wait_child(pid, 30000));
	mpq_barrier_free(b);
}

TEST(the_default_timeout_travels_with_an_imported_barrier)
{
	char handle[MPQ_HANDLE_MAX];
	struct mpq_barrier *b, *b2;

	ASSERT_EQ(0, mpq_barrier_new_timeout(&b, 2, NULL, NULL,
					     30 * NSEC_PER_MSEC, NULL));
	ASSERT_LT(0, mpq_barrier_export(b, handle, sizeof(handle)));
	ASSERT_EQ(0, mpq_barrier_import(&b2, handle, NULL, NULL));
	ASSERT_EQ(-ETIMEDOUT,
		  mpq_barrier_wait(b2, MPQ_BARRIER_DEFAULT_TIMEOUT));
	mpq_barrier_free(b2);
	mpq_barrier_free(b);
}

TEST(bad_arguments_are_einval_not_a_crash)
{
	struct mpq_barrier *b;

	ASSERT_EQ(-EINVAL, mpq_barrier_new(&b, 0, NULL, NULL, NULL));
	ASSERT_EQ(-EINVAL, mpq_barrier_new(&b, 40000, NULL, NULL, NULL));
	ASSERT_EQ(-EINVAL, mpq_barrier_new(NULL, 2, NULL, NULL, NULL));
	ASSERT_EQ(-EINVAL, mpq_barrier_new_timeout(&b, 2, NULL, NULL, -5,
						   NULL));
	ASSERT_EQ(-EINVAL, mpq_barrier_new_timeout(&b, 0, NULL, NULL, 0,
						   NULL));
	ASSERT_EQ(-EINVAL, mpq_barrier_wait(NULL, 0));
	ASSERT_EQ(-EINVAL, mpq_barrier_abort(NULL));
	ASSERT_EQ(-EINVAL, mpq_barrier_reset(NULL));
	ASSERT_EQ(-EINVAL, mpq_barrier_parties(NULL));
	mpq_barrier_free(NULL);
}

TEST_HARNESS_MAIN
