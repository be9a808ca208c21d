// SPDX-License-Identifier: GPL-2.0
/*
 * The promises of the Manager's Event, Condition, Barrier, Value and
 * Array, Namespace and BoundedSemaphore (net/manager/{event,cond,barrier,
 * value,namespace,bsem}.c), one test each, against a real redis-server
 * started by mpq_manager_start: they do what the local types do, waiting
 * ends at the event and within the timeout, and a process SIGKILLed at a
 * random point (a Condition waiter, a notifier, the Condition's lock
 * holder, a Barrier party, a Value's lock holder, a semaphore taker)
 * wedges nobody; a key of another type is -EPROTOTYPE; a server killed
 * mid-wait ends the wait with an error.
 *
 * Leases here are short (300 ms) so that a dead process is seen quickly;
 * the whole file runs in a few seconds.
 */
#include <poll.h>
#include <stdio.h>
#include <hiredis/hiredis.h>

#include "kselftest_harness.h"
#include "helpers.h"
#include "mpq_net.h"

#define MS	NSEC_PER_MSEC
#define LEASE	(300 * MS)

FIXTURE(sync) {
	struct mpq_manager *m;
};

FIXTURE_SETUP(sync)
{
	int err = mpq_manager_start(&self->m, NULL);

	if (err == -ENOENT)
		SKIP(return, "no redis-server on PATH (make deps)");
	ASSERT_EQ(0, err);
}

FIXTURE_TEARDOWN(sync)
{
	if (self->m)
		mpq_manager_shutdown(self->m);
}

/* A raw command on the manager's server, as its namespace's user. */
static int raw(struct mpq_manager *m, const char *cmd)
{
	char path[256], *hash;
	redisContext *c;
	redisReply *r;
	int ok;

	snprintf(path, sizeof(path), "%s", mpq_manager_address(m) + 5);
	hash = strchr(path, '#');
	*hash = 0;
	c = redisConnectUnix(path);
	if (!c || c->err)
		return -1;
	r = redisCommand(c, "AUTH %s %s", hash + 1, mpq_manager_authkey(m));
	freeReplyObject(r);
	r = redisCommand(c, cmd);
	ok = r && r->type != REDIS_REPLY_ERROR;
	freeReplyObject(r);
	redisFree(c);
	return ok ? 0 : -1;
}

/* An integer reply of a raw command, or -1. */
static long long raw_int(struct mpq_manager *m, const char *cmd)
{
	char path[256], *hash;
	redisContext *c;
	redisReply *r;
	long long v = -1;

	snprintf(path, sizeof(path), "%s", mpq_manager_address(m) + 5);
	hash = strchr(path, '#');
	*hash = 0;
	c = redisConnectUnix(path);
	if (!c || c->err)
		return -1;
	r = redisCommand(c, "AUTH %s %s", hash + 1, mpq_manager_authkey(m));
	freeReplyObject(r);
	r = redisCommand(c, cmd);
	if (r && r->type == REDIS_REPLY_INTEGER)
		v = r->integer;
	freeReplyObject(r);
	redisFree(c);
	return v;
}

/* Until n processes wait on Condition name (its queue of waiters). */
static int waiters(struct mpq_manager *m, const char *name, int n)
{
	char cmd[128];
	int i;

	snprintf(cmd, sizeof(cmd), "LLEN mpq:mpq:c:%s:q", name);
	for (i = 0; i < 5000; i++) {
		if (raw_int(m, cmd) == n)
			return 0;
		sleep_ms(1);
	}
	return -1;
}

/* ---- Event ---- */

struct ev_arg {
	struct mpq_manager_event *e;
	struct mpq_manager_value *ready;
};

static int event_waiter(void *p)
{
	struct ev_arg *a = p;

	/* Connected and about to wait: two round trips from blocking. */
	if (mpq_manager_value_add(a->ready, 1, NULL))
		return 2;
	return mpq_manager_event_wait(a->e, 5000 * MS) ? 1 : 0;
}

TEST_F(sync, an_event_set_wakes_every_waiter_even_if_cleared_at_once)
{
	struct mpq_manager_event *e;
	struct ev_arg a;
	int64_t ready = 0;
	pid_t w[3];
	int i;

	ASSERT_EQ(0, mpq_manager_event(self->m, "e", &e));
	ASSERT_EQ(0, mpq_manager_value(self->m, "ready", 8, 0, 0, &a.ready));
	a.e = e;
	EXPECT_EQ(0, mpq_manager_event_is_set(e));
	EXPECT_EQ(-EAGAIN, mpq_manager_event_wait(e, 0));
	EXPECT_EQ(-ETIMEDOUT, mpq_manager_event_wait(e, 50 * MS));
	for (i = 0; i < 3; i++)
		w[i] = spawn(event_waiter, &a);
	for (i = 0; i < 5000 && ready < 3; i++) {
		sleep_ms(1);
		ASSERT_EQ(0, mpq_manager_value_get(a.ready, &ready));
	}
	sleep_ms(300);
	ASSERT_EQ(0, mpq_manager_event_set(e));
	ASSERT_EQ(0, mpq_manager_event_clear(e));
	for (i = 0; i < 3; i++)
		EXPECT_EQ(0, wait_child(w[i], 5000));
	EXPECT_EQ(0, mpq_manager_event_is_set(e));
	ASSERT_EQ(0, mpq_manager_event_set(e));
	EXPECT_EQ(1, mpq_manager_event_is_set(e));
	EXPECT_EQ(0, mpq_manager_event_wait(e, 0));
	EXPECT_EQ(0, mpq_manager_event_wait(e, MPQ_FOREVER));
	mpq_manager_value_free(a.ready);
	mpq_manager_event_free(e);
}

/* ---- Condition ---- */

struct cond_arg {
	struct mpq_manager_cond *c;
	struct mpq_manager_namespace *ns;
	const char *want;	/* wait until attribute "state" is this */
};

static int state_is(void *p)
{
	struct cond_arg *a = p;
	char buf[16];
	size_t len = sizeof(buf) - 1;

	if (mpq_manager_namespace_get(a->ns, "state", buf, &len))
		return 0;
	buf[len] = 0;
	return !strcmp(buf, a->want);
}

static int cond_waiter(void *p)
{
	struct cond_arg *a = p;
	int err;

	if (mpq_manager_cond_acquire(a->c, 5000 * MS))
		return 1;
	err = mpq_manager_cond_wait_for(a->c, state_is, a, 10000 * MS);
	if (err && err != -EOWNERDEAD)
		return 2;
	if (mpq_manager_cond_release(a->c))
		return 3;
	return 0;
}

static void set_state(struct __test_metadata *_metadata, struct cond_arg *a,
		      const char *v, int all)
{
	ASSERT_EQ(0, mpq_manager_cond_acquire(a->c, 5000 * MS));
	ASSERT_EQ(0, mpq_manager_namespace_set(a->ns, "state", v, strlen(v)));
	if (all) {
		ASSERT_EQ(0, mpq_manager_cond_notify_all(a->c));
	} else {
		ASSERT_EQ(0, mpq_manager_cond_notify(a->c, 1));
	}
	ASSERT_EQ(0, mpq_manager_cond_release(a->c));
}

TEST_F(sync, a_condition_wait_releases_the_lock_and_notify_wakes_n_waiters)
{
	struct cond_arg a = { .want = "go" };
	struct mpq_manager_lock *l;
	pid_t w[3];
	int i;

	ASSERT_EQ(0, mpq_manager_cond(self->m, "c", NULL, LEASE, &a.c));
	ASSERT_EQ(0, mpq_manager_namespace(self->m, "c", &a.ns));
	l = mpq_manager_cond_get_lock(a.c);
	ASSERT_NE(NULL, l);
	mpq_manager_lock_free(l);	/* the Condition's: does nothing */
	/* Without the lock: Python's RuntimeError. */
	EXPECT_EQ(-EPERM, mpq_manager_cond_wait(a.c, 0));
	EXPECT_EQ(-EPERM, mpq_manager_cond_notify(a.c, 1));
	ASSERT_EQ(0, mpq_manager_cond_acquire(a.c, 0));
	ASSERT_EQ(0, mpq_manager_cond_acquire(a.c, 0));	/* an RLock */
	EXPECT_EQ(-ETIMEDOUT, mpq_manager_cond_wait(a.c, 50 * MS));
	/* Held again, both levels. */
	EXPECT_EQ(0, mpq_manager_cond_release(a.c));
	EXPECT_EQ(0, mpq_manager_cond_release(a.c));
	EXPECT_EQ(-EPERM, mpq_manager_cond_release(a.c));

	for (i = 0; i < 3; i++)
		w[i] = spawn(cond_waiter, &a);
	ASSERT_EQ(0, waiters(self->m, "c", 3));
	/* One notify with the predicate true releases exactly one. */
	set_state(_metadata, &a, "go", 0);
	sleep_ms(150);
	{
		int done = 0, status;

		for (i = 0; i < 3; i++)
			if (waitpid(w[i], &status, WNOHANG) == w[i]) {
				EXPECT_EQ(0, WEXITSTATUS(status));
				w[i] = 0;
				done++;
			}
		EXPECT_EQ(1, done);
	}
	set_state(_metadata, &a, "go", 1);
	for (i = 0; i < 3; i++)
		if (w[i])
			EXPECT_EQ(0, wait_child(w[i], 5000));
	mpq_manager_namespace_free(a.ns);
	mpq_manager_cond_free(a.c);
}

static int notify_once(void *p)
{
	struct cond_arg *a = p;

	if (mpq_manager_cond_acquire(a->c, 5000 * MS) < 0 &&
	    mpq_manager_lock_consistent(mpq_manager_cond_get_lock(a->c)))
		return 1;
	mpq_manager_namespace_set(a->ns, "state", a->want, strlen(a->want));
	mpq_manager_cond_notify(a->c, 1);
	mpq_manager_cond_release(a->c);
	return 0;
}

/*
 * A waiter SIGKILLed at a random point of its wait, which notify(1)
 * then chooses (it waited first): its notification is handed on to the
 * living waiter. On odd rounds a notifier is SIGKILLed at a random
 * point too (perhaps holding the lock, perhaps mid-notify), and the next
 * notifier's notify(1) must still reach the living waiter.
 */
TEST_F(sync, a_condition_waiter_or_notifier_killed_at_random_points_wedges_nobody)
{
	struct cond_arg a;
	char want[16];
	pid_t dead, live, n;
	int round, err;

	ASSERT_EQ(0, mpq_manager_cond(self->m, "ck", NULL, LEASE, &a.c));
	ASSERT_EQ(0, mpq_manager_namespace(self->m, "ck", &a.ns));
	srand(getpid());
	for (round = 0; round < 6; round++) {
		snprintf(want, sizeof(want), "r%d", round);
		a.want = want;
		dead = spawn(cond_waiter, &a);
		ASSERT_EQ(0, waiters(self->m, "ck", 1));
		live = spawn(cond_waiter, &a);
		ASSERT_EQ(0, waiters(self->m, "ck", 2));
		sleep_ms(rand() % 40);
		kill(dead, SIGKILL);
		EXPECT_EQ(128 + SIGKILL, wait_child(dead, 5000));
		if (round & 1) {
			n = spawn(notify_once, &a);
			sleep_ms(rand() % 15);
			kill(n, SIGKILL);
			wait_child(n, 5000);
		}
		err = mpq_manager_cond_acquire(a.c, 5000 * MS);
		if (err == -EOWNERDEAD)
			err = mpq_manager_lock_consistent(
				mpq_manager_cond_get_lock(a.c));
		ASSERT_EQ(0, err);
		ASSERT_EQ(0, mpq_manager_namespace_set(a.ns, "state", want,
						       strlen(want)));
		ASSERT_EQ(0, mpq_manager_cond_notify(a.c, 1));
		ASSERT_EQ(0, mpq_manager_cond_release(a.c));
		EXPECT_EQ(0, wait_child(live, 5000)) TH_LOG("round %d", round);
	}
	mpq_manager_namespace_free(a.ns);
	mpq_manager_cond_free(a.c);
}

struct holder_arg {
	struct mpq_manager_cond *c;
};

static int notify_and_die(void *p)
{
	struct holder_arg *h = p;

	if (mpq_manager_cond_acquire(h->c, 5000 * MS))
		return 1;
	if (mpq_manager_cond_notify_all(h->c))
		return 2;
	kill(getpid(), SIGKILL);	/* holding the lock */
	return 3;
}

TEST_F(sync, a_condition_whose_lock_holder_dies_gives_the_waiter_eownerdead)
{
	struct holder_arg h;
	pid_t p;

	ASSERT_EQ(0, mpq_manager_cond(self->m, "cd", NULL, LEASE, &h.c));
	ASSERT_EQ(0, mpq_manager_cond_acquire(h.c, 0));
	p = spawn(notify_and_die, &h);
	/* The child waits for the lock until wait releases it, notifies,
	 * dies holding it; its lease ends and the waiter takes it. */
	EXPECT_EQ(-EOWNERDEAD, mpq_manager_cond_wait(h.c, 5000 * MS));
	EXPECT_EQ(128 + SIGKILL, wait_child(p, 5000));
	/* The waiter holds it; every acquirer is told until consistent. */
	EXPECT_EQ(0, mpq_manager_lock_consistent(mpq_manager_cond_get_lock(h.c)));
	EXPECT_EQ(0, mpq_manager_cond_release(h.c));
	EXPECT_EQ(0, mpq_manager_cond_acquire(h.c, 0));
	EXPECT_EQ(0, mpq_manager_cond_release(h.c));
	mpq_manager_cond_free(h.c);
}

/* ---- Barrier ---- */

static int action_runs;

static int count_action(void *arg)
{
	struct mpq_manager_value *v = arg;

	action_runs++;
	return mpq_manager_value_add(v, 1, NULL);
}

struct party_arg {
	struct mpq_manager_barrier *b;
	int64_t timeout_ns;
};

/* Exits with the arrival index, or 100 + errno. */
static int party(void *p)
{
	struct party_arg *a = p;
	int r = mpq_manager_barrier_wait(a->b, a->timeout_ns);

	return r >= 0 ? r : 100 + -r;
}

TEST_F(sync, a_barrier_releases_its_parties_with_distinct_indexes_once_all_arrive)
{
	struct mpq_manager_barrier *b;
	struct mpq_manager_value *runs;
	struct party_arg a;
	int seen = 0, i, round, r;
	int64_t n = 0;
	pid_t w[2];

	ASSERT_EQ(0, mpq_manager_value(self->m, "runs", 8, 0, 0, &runs));
	ASSERT_EQ(0, mpq_manager_barrier(self->m, "b", 3, count_action, runs,
					 LEASE, &b));
	EXPECT_EQ(3, mpq_manager_barrier_parties(b));
	a.b = b;
	a.timeout_ns = 5000 * MS;
	for (round = 0; round < 2; round++) {
		seen = 0;
		for (i = 0; i < 2; i++)
			w[i] = spawn(party, &a);
		r = mpq_manager_barrier_wait(b, 5000 * MS);
		ASSERT_GE(r, 0);
		seen |= 1 << r;
		for (i = 0; i < 2; i++) {
			r = wait_child(w[i], 5000);
			ASSERT_LT(r, 3);
			seen |= 1 << r;
		}
		EXPECT_EQ(7, seen);
	}
	/* The action ran once a round, in whichever party came last. */
	ASSERT_EQ(0, mpq_manager_value_get(runs, &n));
	EXPECT_EQ(2, n);
	EXPECT_EQ(0, mpq_manager_barrier_n_waiting(b));

	/* A wait that times out breaks it for the others. */
	w[0] = spawn(party, &a);
	EXPECT_EQ(-ETIMEDOUT, mpq_manager_barrier_wait(b, 200 * MS));
	EXPECT_EQ(100 + ECANCELED, wait_child(w[0], 5000));
	EXPECT_EQ(1, mpq_manager_barrier_broken(b));
	EXPECT_EQ(-ECANCELED, mpq_manager_barrier_wait(b, 0));
	ASSERT_EQ(0, mpq_manager_barrier_reset(b));
	EXPECT_EQ(0, mpq_manager_barrier_broken(b));
	/* abort; and a reset releases waiting parties with -ECANCELED. */
	w[0] = spawn(party, &a);
	for (i = 0; i < 5000 && mpq_manager_barrier_n_waiting(b) < 1; i++)
		sleep_ms(1);
	EXPECT_EQ(1, mpq_manager_barrier_n_waiting(b));
	ASSERT_EQ(0, mpq_manager_barrier_reset(b));
	EXPECT_EQ(100 + ECANCELED, wait_child(w[0], 5000));
	ASSERT_EQ(0, mpq_manager_barrier_abort(b));
	EXPECT_EQ(-ECANCELED, mpq_manager_barrier_wait(b, 0));
	mpq_manager_barrier_free(b);
	mpq_manager_value_free(runs);
}

/*
 * A party SIGKILLed at a random moment after it arrived, the others
 * arriving before or after: they get -ECANCELED (the dead party's lease
 * ran out), not their timeout and not a hang.
 */
TEST_F(sync, a_barrier_party_killed_while_others_wait_breaks_it)
{
	struct mpq_manager_barrier *b;
	struct party_arg forever, others;
	pid_t victim, w[2];
	int round, i, spins;

	ASSERT_EQ(0, mpq_manager_barrier(self->m, "bk", 4, NULL, NULL, LEASE,
					 &b));
	forever.b = others.b = b;
	forever.timeout_ns = MPQ_FOREVER;
	others.timeout_ns = 8000 * MS;
	srand(getpid());
	for (round = 0; round < 4; round++) {
		int before = round & 1;

		victim = spawn(party, &forever);
		for (spins = 0; mpq_manager_barrier_n_waiting(b) < 1 &&
		     spins < 2000; spins++)
			sleep_ms(1);
		if (before)
			for (i = 0; i < 2; i++)
				w[i] = spawn(party, &others);
		sleep_ms(rand() % 30);
		kill(victim, SIGKILL);
		EXPECT_EQ(128 + SIGKILL, wait_child(victim, 5000));
		if (!before)
			for (i = 0; i < 2; i++)
				w[i] = spawn(party, &others);
		for (i = 0; i < 2; i++) {
			EXPECT_EQ(100 + ECANCELED, wait_child(w[i], 10000))
				TH_LOG("round %d, party %d", round, i);
		}
		ASSERT_EQ(0, mpq_manager_barrier_reset(b));
	}
	mpq_manager_barrier_free(b);
}

/* ---- Value and Array ---- */

static int adder(void *p)
{
	int i;

	for (i = 0; i < 200; i++)
		if (mpq_manager_value_add(p, 1, NULL))
			return 1;
	return 0;
}

TEST_F(sync, a_value_and_an_array_copy_whole_by_element_and_by_slice)
{
	struct mpq_manager_value *v, *a, *again;
	int64_t x = 0, got = -1;
	int32_t e[5] = { 1, 2, 3, 4, 5 }, out[5] = { 0 }, one = 0;
	pid_t w[3];
	int i;

	ASSERT_EQ(0, mpq_manager_value(self->m, "v", 8, 0, 0, &v));
	EXPECT_EQ(8, mpq_manager_value_size(v));
	ASSERT_EQ(0, mpq_manager_value_get(v, &x));
	EXPECT_EQ(0, x);			/* zeroed */
	x = -5;
	ASSERT_EQ(0, mpq_manager_value_set(v, &x));
	ASSERT_EQ(0, mpq_manager_value_add(v, 3, &got));
	EXPECT_EQ(-2, got);
	ASSERT_EQ(0, mpq_manager_value_add(v, INT64_MAX, &got));
	EXPECT_EQ(INT64_MAX - 2, got);		/* 64-bit exact */
	ASSERT_EQ(0, mpq_manager_value_add(v, -(INT64_MAX - 2), &got));
	EXPECT_EQ(0, got);
	for (i = 0; i < 3; i++)
		w[i] = spawn(adder, v);
	for (i = 0; i < 3; i++)
		EXPECT_EQ(0, wait_child(w[i], 20000));
	ASSERT_EQ(0, mpq_manager_value_get(v, &x));
	EXPECT_EQ(600, x);			/* no add lost */
	/* Another shape under the same name. */
	EXPECT_EQ(-EINVAL, mpq_manager_value(self->m, "v", 4, 0, 0, &again));

	ASSERT_EQ(0, mpq_manager_array(self->m, "a", 4, 5, MPQ_VALUE_RAW, 0,
				       &a));
	EXPECT_EQ(NULL, mpq_manager_value_get_lock(a));
	EXPECT_EQ(5, mpq_manager_array_len(a));
	ASSERT_EQ(0, mpq_manager_value_set(a, e));
	one = 40;
	ASSERT_EQ(0, mpq_manager_array_set(a, 3, &one));
	ASSERT_EQ(0, mpq_manager_array_get(a, 3, &one));
	EXPECT_EQ(40, one);
	EXPECT_EQ(-ERANGE, mpq_manager_array_get(a, 5, &one));
	ASSERT_EQ(0, mpq_manager_array_get_slice(a, 1, 4, out));
	EXPECT_EQ(2, out[0]);
	EXPECT_EQ(3, out[1]);
	EXPECT_EQ(40, out[2]);
	ASSERT_EQ(0, mpq_manager_array_set_slice(a, 0, 2, &e[3]));
	ASSERT_EQ(0, mpq_manager_value_get(a, out));
	EXPECT_EQ(4, out[0]);
	EXPECT_EQ(5, out[1]);
	EXPECT_EQ(5, out[4]);
	EXPECT_EQ(-ERANGE, mpq_manager_array_get_slice(a, 3, 6, out));
	EXPECT_EQ(-ERANGE, mpq_manager_array_set_slice(a, 3, 2, out));
	EXPECT_EQ(-EINVAL, mpq_manager_array_add(a, 0, 1, NULL));
	mpq_manager_value_free(a);
	mpq_manager_value_free(v);
}

static int hold_value_lock_and_die(void *p)
{
	struct mpq_manager_value *v = p;
	int64_t x = 7;

	if (mpq_manager_lock_acquire(mpq_manager_value_get_lock(v), 0))
		return 1;
	/* Half-way through a step of several calls. */
	if (mpq_manager_value_set(v, &x))
		return 2;
	kill(getpid(), SIGKILL);
	return 3;
}

/*
 * Value(lock=True): a copy waits while another process holds the lock;
 * a holder SIGKILLed at a random point leaves it at its lease's end, and
 * the copy is then done with -EOWNERDEAD.
 */
TEST_F(sync, a_value_copy_waits_for_its_lock_and_a_dead_holder_is_eownerdead)
{
	struct mpq_manager_value *v;
	struct mpq_manager_lock *l;
	int64_t x = 0;
	pid_t p;
	int round, err;

	ASSERT_EQ(0, mpq_manager_value(self->m, "vl", 8, 0, LEASE, &v));
	l = mpq_manager_value_get_lock(v);
	ASSERT_NE(NULL, l);
	/* Holding it ourselves (an RLock): copies go through. */
	ASSERT_EQ(0, mpq_manager_lock_acquire(l, 0));
	ASSERT_EQ(0, mpq_manager_value_set(v, &x));
	ASSERT_EQ(0, mpq_manager_lock_release(l));
	srand(getpid());
	for (round = 0; round < 2; round++) {
		p = spawn(hold_value_lock_and_die, v);
		sleep_ms(rand() % 20);
		err = mpq_manager_value_get(v, &x);
		/* Before the child took it: 0; after: it waited out the
		 * dead holder's lease. */
		EXPECT_TRUE(err == 0 || err == -EOWNERDEAD) TH_LOG("%d", err);
		EXPECT_EQ(128 + SIGKILL, wait_child(p, 5000));
		err = mpq_manager_value_get(v, &x);
		EXPECT_EQ(-EOWNERDEAD, err);
		EXPECT_EQ(7, x);
		/* Repair: take the lock (told too), mark it consistent. */
		EXPECT_EQ(-EOWNERDEAD, mpq_manager_lock_acquire(l, 5000 * MS));
		ASSERT_EQ(0, mpq_manager_lock_consistent(l));
		ASSERT_EQ(0, mpq_manager_lock_release(l));
		EXPECT_EQ(0, mpq_manager_value_get(v, &x));
	}
	mpq_manager_value_free(v);
}

static int get_value(void *p)
{
	int64_t x;

	return mpq_manager_value_get(p, &x) ? 1 : 0;
}

static int take_value_lock(void *p)
{
	struct mpq_manager_value *v = p;
	struct mpq_manager_lock *l = mpq_manager_value_get_lock(v);

	return mpq_manager_lock_acquire(l, MPQ_FOREVER) ? 1 : 0;
}

/*
 * A copy blocked on the value's lock shares the lock's wake-up with the
 * lock's own acquirers: when it takes the release's wake-up, it passes it
 * on, and an acquirer blocked behind it gets the lock now, not when the
 * (30 s) lease of the holder that released it would have ended, nor at
 * its 10 s wake-up.
 */
TEST_F(sync, a_copy_that_waited_for_the_lock_passes_the_wake_up_on)
{
	struct mpq_manager_value *v;
	pid_t copier, taker;

	ASSERT_EQ(0, mpq_manager_value(self->m, "vw", 8, 0, 0, &v));
	ASSERT_EQ(0, mpq_manager_lock_acquire(mpq_manager_value_get_lock(v),
					      0));
	copier = spawn(get_value, v);
	sleep_ms(200);		/* the copier blocks first */
	taker = spawn(take_value_lock, v);
	sleep_ms(200);
	ASSERT_EQ(0, mpq_manager_lock_release(mpq_manager_value_get_lock(v)));
	EXPECT_EQ(0, wait_child(copier, 5000));
	EXPECT_EQ(0, wait_child(taker, 5000));
	mpq_manager_value_free(v);
}

/* ---- Namespace ---- */

static int collect_attr(const char *attr, void *arg)
{
	strcat(arg, attr);
	strcat(arg, ",");
	return 0;
}

TEST_F(sync, a_namespace_gets_sets_deletes_and_lists_attributes)
{
	struct mpq_manager_namespace *n, *n2;
	char buf[16], names[64] = "";
	size_t len = sizeof(buf);

	ASSERT_EQ(0, mpq_manager_namespace(self->m, "ns", &n));
	ASSERT_EQ(0, mpq_manager_namespace(self->m, "ns", &n2));
	EXPECT_EQ(-ENOENT, mpq_manager_namespace_get(n, "x", buf, &len));
	ASSERT_EQ(0, mpq_manager_namespace_set(n, "x", "a\0b", 3));
	len = sizeof(buf);
	ASSERT_EQ(0, mpq_manager_namespace_get(n2, "x", buf, &len));
	EXPECT_EQ(3, len);
	EXPECT_EQ(0, memcmp(buf, "a\0b", 3));
	len = 1;
	EXPECT_EQ(-EMSGSIZE, mpq_manager_namespace_get(n2, "x", buf, &len));
	EXPECT_EQ(3, len);
	ASSERT_EQ(0, mpq_manager_namespace_set(n, "y", "", 0));
	ASSERT_EQ(0, mpq_manager_namespace_list(n2, collect_attr, names));
	EXPECT_TRUE(!strcmp(names, "x,y,") || !strcmp(names, "y,x,"))
		TH_LOG("%s", names);
	EXPECT_EQ(0, mpq_manager_namespace_delete(n, "x"));
	EXPECT_EQ(-ENOENT, mpq_manager_namespace_delete(n, "x"));
	EXPECT_EQ(-EINVAL, mpq_manager_namespace_set(n, "", "a", 1));
	mpq_manager_namespace_free(n2);
	mpq_manager_namespace_free(n);
}

/* ---- BoundedSemaphore ---- */

static int bsem_take_and_die(void *p)
{
	if (mpq_manager_bounded_sem_acquire(p, 0))
		return 1;
	kill(getpid(), SIGKILL);
	return 2;
}

static int bsem_release(void *p)
{
	return mpq_manager_bounded_sem_release(p) ? 1 : 0;
}

TEST_F(sync, a_bounded_semaphore_refuses_a_release_past_its_value)
{
	struct mpq_manager_bsem *s, *s2, *np;
	pid_t p;

	ASSERT_EQ(0, mpq_manager_bounded_sem(self->m, "bs", 2, LEASE, &s));
	EXPECT_EQ(2, mpq_manager_bounded_sem_get_value(s));
	EXPECT_EQ(-EINVAL, mpq_manager_bounded_sem_release(s));	/* ValueError */
	ASSERT_EQ(0, mpq_manager_bounded_sem_acquire(s, 0));
	ASSERT_EQ(0, mpq_manager_bounded_sem_acquire(s, 0));
	EXPECT_EQ(0, mpq_manager_bounded_sem_get_value(s));
	EXPECT_EQ(-EAGAIN, mpq_manager_bounded_sem_acquire(s, 0));
	EXPECT_EQ(-ETIMEDOUT, mpq_manager_bounded_sem_acquire(s, 50 * MS));
	/* Any process may release. */
	p = spawn(bsem_release, s);
	EXPECT_EQ(0, wait_child(p, 5000));
	EXPECT_EQ(1, mpq_manager_bounded_sem_get_value(s));
	ASSERT_EQ(0, mpq_manager_bounded_sem_release(s));
	EXPECT_EQ(-EINVAL, mpq_manager_bounded_sem_release(s));
	/* A taker that dies: its unit is back at its lease's end. */
	p = spawn(bsem_take_and_die, s);
	EXPECT_EQ(128 + SIGKILL, wait_child(p, 5000));
	/* (A handle of its own, with leases longer than the wait.) */
	ASSERT_EQ(0, mpq_manager_bounded_sem(self->m, "bs", 2, 5000 * MS, &s2));
	ASSERT_EQ(0, mpq_manager_bounded_sem_acquire(s2, 0));
	EXPECT_EQ(-EOWNERDEAD, mpq_manager_bounded_sem_acquire(s2, 5000 * MS));
	ASSERT_EQ(0, mpq_manager_bounded_sem_release(s2));
	ASSERT_EQ(0, mpq_manager_bounded_sem_release(s2));
	EXPECT_EQ(-EINVAL, mpq_manager_bounded_sem_release(s2));
	mpq_manager_bounded_sem_free(s2);
	/* No leases: a unit is the semaphore's until released. */
	ASSERT_EQ(0, mpq_manager_bounded_sem(self->m, "bn", 1,
					     MPQ_MANAGER_NO_LEASE, &np));
	p = spawn(bsem_take_and_die, np);
	EXPECT_EQ(128 + SIGKILL, wait_child(p, 5000));
	EXPECT_EQ(-ETIMEDOUT, mpq_manager_bounded_sem_acquire(np, 100 * MS));
	ASSERT_EQ(0, mpq_manager_bounded_sem_release(np));
	EXPECT_EQ(0, mpq_manager_bounded_sem_acquire(np, 0));
	mpq_manager_bounded_sem_free(np);
	mpq_manager_bounded_sem_free(s);
}

/* ---- Bad keys, dead servers ---- */

TEST_F(sync, a_key_of_another_type_is_eprototype)
{
	struct mpq_manager_event *e;
	struct mpq_manager_barrier *b;
	struct mpq_manager_value *v;
	struct mpq_manager_namespace *n;
	struct mpq_manager_bsem *s;
	struct mpq_manager_cond *c;
	char buf[8];
	size_t len = sizeof(buf);

	ASSERT_EQ(0, raw(self->m, "RPUSH mpq:mpq:e:x:s 1"));
	ASSERT_EQ(0, raw(self->m, "RPUSH mpq:mpq:b:x:h 1"));
	ASSERT_EQ(0, raw(self->m, "RPUSH mpq:mpq:v:x:cfg 1"));
	ASSERT_EQ(0, raw(self->m, "RPUSH mpq:mpq:n:x 1"));
	ASSERT_EQ(0, raw(self->m, "RPUSH mpq:mpq:S:x:cfg 1"));
	ASSERT_EQ(0, raw(self->m, "SET mpq:mpq:c:x:q 1"));
	ASSERT_EQ(0, mpq_manager_event(self->m, "x", &e));
	EXPECT_EQ(-EPROTOTYPE, mpq_manager_event_set(e));
	EXPECT_EQ(-EPROTOTYPE, mpq_manager_event_wait(e, 100 * MS));
	EXPECT_EQ(-EPROTOTYPE, mpq_manager_barrier(self->m, "x", 2, NULL, NULL,
						   0, &b));
	EXPECT_EQ(-EPROTOTYPE, mpq_manager_value(self->m, "x", 8, 0, 0, &v));
	ASSERT_EQ(0, mpq_manager_namespace(self->m, "x", &n));
	EXPECT_EQ(-EPROTOTYPE, mpq_manager_namespace_get(n, "a", buf, &len));
	EXPECT_EQ(-EPROTOTYPE, mpq_manager_bounded_sem(self->m, "x", 1, 0, &s));
	ASSERT_EQ(0, mpq_manager_cond(self->m, "x", NULL, 0, &c));
	ASSERT_EQ(0, mpq_manager_cond_acquire(c, 0));
	EXPECT_EQ(-EPROTOTYPE, mpq_manager_cond_wait(c, 100 * MS));
	/* A wait that failed did not let go of the lock. */
	EXPECT_EQ(0, mpq_manager_cond_release(c));
	mpq_manager_cond_free(c);
	mpq_manager_namespace_free(n);
	mpq_manager_event_free(e);
}

static void server_dead(struct __test_metadata *_metadata,
			struct mpq_manager *m)
{
	struct pollfd p = { .fd = mpq_manager_pidfd(m), .events = POLLIN };

	ASSERT_EQ(1, poll(&p, 1, 5000));
}

static void kill_server_soon(pid_t server)
{
	if (fork() == 0) {
		sleep_ms(150);
		kill(server, SIGKILL);
		_exit(0);
	}
}

TEST_F(sync, a_server_killed_mid_wait_ends_every_kind_of_wait_with_an_error)
{
	struct mpq_manager_event *e;
	struct mpq_manager_barrier *b;
	struct mpq_manager_cond *c;
	pid_t server = mpq_manager_server_pid(self->m);
	int64_t t0;
	int err;

	ASSERT_EQ(0, mpq_manager_event(self->m, "e", &e));
	ASSERT_EQ(0, mpq_manager_cond(self->m, "c", NULL, 0, &c));
	ASSERT_EQ(0, mpq_manager_cond_acquire(c, 0));
	kill_server_soon(server);
	t0 = now_ns();
	err = mpq_manager_event_wait(e, MPQ_FOREVER);
	EXPECT_EQ(-ECONNRESET, err);
	EXPECT_LT(now_ns() - t0, 4 * NSEC_PER_SEC);
	/* Restart it; the next calls reconnect. */
	server_dead(_metadata, self->m);
	ASSERT_EQ(0, mpq_manager_restart(self->m));
	server = mpq_manager_server_pid(self->m);
	kill_server_soon(server);
	ASSERT_EQ(0, mpq_manager_cond_acquire(c, 0));
	err = mpq_manager_cond_wait(c, MPQ_FOREVER);
	EXPECT_EQ(-ECONNRESET, err);
	server_dead(_metadata, self->m);
	ASSERT_EQ(0, mpq_manager_restart(self->m));
	server = mpq_manager_server_pid(self->m);
	/* (Without an AOF the restarted server is empty: open it now.) */
	ASSERT_EQ(0, mpq_manager_barrier(self->m, "b", 2, NULL, NULL, 0, &b));
	kill_server_soon(server);
	err = mpq_manager_barrier_wait(b, MPQ_FOREVER);
	EXPECT_EQ(-ECONNRESET, err);
	mpq_manager_cond_free(c);
	mpq_manager_barrier_free(b);
	mpq_manager_event_free(e);
}

TEST_HARNESS_MAIN
