// SPDX-License-Identifier: GPL-2.0
/*
 * Managed Event, Condition, Barrier and Value of mpq's own types
 * (net/manager/proxy_sync.c, libmpq's mpq_ext.h): the same test bodies
 * run on a local object and on one from mpq_manager_*_open (variants
 * local and managed), with nothing but the mpq_event_*, mpq_cond_*,
 * mpq_barrier_* and mpq_value_* calls, across forked processes. Then
 * export/import through spawned and fork-server children, and what
 * cannot apply.
 *
 * Against real redis-servers started by mpq_manager_start.
 */
#include <stdio.h>

#include "kselftest_harness.h"
#include "helpers.h"
#include "mpq_net.h"
#include "net_helpers.h"

#define MS	NSEC_PER_MSEC

static void __attribute__((constructor)) run_spawned_target(void)
{
	mpq_init(NULL, NULL);
}

FIXTURE(obj) {
	struct mpq_manager *m;
};
FIXTURE_VARIANT(obj) {
	int managed;
};
FIXTURE_VARIANT_ADD(obj, local) {
	.managed = 0,
};
FIXTURE_VARIANT_ADD(obj, managed) {
	.managed = 1,
};

FIXTURE_SETUP(obj)
{
	self->m = variant->managed ? start_or_skip(_metadata, NULL) : NULL;
}

FIXTURE_TEARDOWN(obj)
{
	if (self->m)
		mpq_manager_shutdown(self->m);
}

/* Short leases: a killed party is seen within them. */
#define LEASE	(300 * MS)

static int new_event(struct mpq_manager *m, struct mpq_event **e)
{
	return m ? mpq_manager_event_open(m, "ev", e) : mpq_event_new(e, NULL);
}

static int new_cond(struct mpq_manager *m, struct mpq_cond **c)
{
	return m ? mpq_manager_cond_open(m, "cv", NULL, LEASE, c) :
		   mpq_cond_new(c, NULL, NULL);
}

static int new_barrier(struct mpq_manager *m, unsigned int parties,
		       struct mpq_barrier **b)
{
	return m ? mpq_manager_barrier_open(m, "bar", parties, NULL, NULL,
					    LEASE, b) :
		   mpq_barrier_new(b, parties, NULL, NULL, NULL);
}

static int new_array(struct mpq_manager *m, size_t elem, size_t count,
		     struct mpq_value **v)
{
	return m ? mpq_manager_array_open(m, "val", elem, count, 0, LEASE, v) :
		   mpq_array_new(v, elem, count, NULL);
}

/* ------------------------------------------------------------------ */
/* Event */

static struct mpq_event *ev;

static int event_waiter(void *arg)
{
	int err = mpq_event_wait(ev, 10000 * MS);

	(void)arg;
	return err ? 100 - err : 0;
}

TEST_F(obj, an_event_set_in_one_process_ends_the_waits_of_others)
{
	pid_t c[2];
	int64_t t0;

	ASSERT_EQ(0, new_event(self->m, &ev));
	EXPECT_EQ(0, mpq_event_is_set(ev));
	EXPECT_EQ(-EAGAIN, mpq_event_wait(ev, 0));
	t0 = now_ns();
	EXPECT_EQ(-ETIMEDOUT, mpq_event_wait(ev, 30 * MS));
	EXPECT_GE(now_ns() - t0, 30 * MS);
	c[0] = spawn(event_waiter, NULL);
	c[1] = spawn(event_waiter, NULL);
	sleep_ms(50);
	EXPECT_EQ(0, mpq_event_set(ev));
	EXPECT_EQ(0, wait_child(c[0], 10000));
	EXPECT_EQ(0, wait_child(c[1], 10000));
	EXPECT_EQ(1, mpq_event_is_set(ev));
	EXPECT_EQ(0, mpq_event_wait(ev, 0));
	EXPECT_EQ(0, mpq_event_clear(ev));
	EXPECT_EQ(0, mpq_event_is_set(ev));
	EXPECT_EQ(-EAGAIN, mpq_event_wait(ev, 0));
	mpq_event_free(ev);
}

/* ------------------------------------------------------------------ */
/* Condition */

static struct mpq_cond *cv;
static int *cv_ready;

static int ready(void *arg)
{
	(void)arg;
	return __atomic_load_n(cv_ready, __ATOMIC_SEQ_CST);
}

static int cond_waiter(void *arg)
{
	int err;

	(void)arg;
	if (mpq_cond_acquire(cv, 10000 * MS))
		return 1;
	err = mpq_cond_wait_for(cv, ready, NULL, 10000 * MS);
	if (mpq_cond_release(cv))
		return 2;
	return err ? 100 - err : 0;
}

TEST_F(obj, a_condition_waiter_wakes_when_notified_and_its_predicate_holds)
{
	pid_t c[2];

	cv_ready = shared_alloc(sizeof(*cv_ready));
	ASSERT_EQ(0, new_cond(self->m, &cv));
	ASSERT_NE(NULL, mpq_cond_get_lock(cv));
	/* Without the lock: Python's RuntimeError. */
	EXPECT_EQ(-EPERM, mpq_cond_wait(cv, 0));
	EXPECT_EQ(-EPERM, mpq_cond_notify(cv, 1));
	ASSERT_EQ(0, mpq_cond_acquire(cv, 0));
	EXPECT_EQ(-ETIMEDOUT, mpq_cond_wait(cv, 30 * MS));
	EXPECT_EQ(-ETIMEDOUT, mpq_cond_wait_for(cv, ready, NULL, 30 * MS));
	/* Still held after the waits: the lock's own calls say so. */
	EXPECT_EQ(1, mpq_lock_owned(mpq_cond_get_lock(cv)));
	ASSERT_EQ(0, mpq_cond_release(cv));
	c[0] = spawn(cond_waiter, NULL);
	c[1] = spawn(cond_waiter, NULL);
	/* A notify with the predicate still false wakes them to sleep on. */
	sleep_ms(50);
	ASSERT_EQ(0, mpq_cond_acquire(cv, 5000 * MS));
	EXPECT_EQ(0, mpq_cond_notify_all(cv));
	ASSERT_EQ(0, mpq_cond_release(cv));
	sleep_ms(50);
	ASSERT_EQ(0, mpq_cond_acquire(cv, 5000 * MS));
	__atomic_store_n(cv_ready, 1, __ATOMIC_SEQ_CST);
	EXPECT_EQ(0, mpq_cond_notify(cv, 1));
	EXPECT_EQ(0, mpq_cond_notify_all(cv));
	ASSERT_EQ(0, mpq_cond_release(cv));
	EXPECT_EQ(0, wait_child(c[0], 10000));
	EXPECT_EQ(0, wait_child(c[1], 10000));
	mpq_cond_free(cv);
}

/* ------------------------------------------------------------------ */
/* Barrier */

static struct mpq_barrier *bar;
static int *bar_out;

static int barrier_party(void *arg)
{
	int *slot = arg;

	*slot = mpq_barrier_wait(bar, 10000 * MS);
	return 0;
}

static int barrier_victim(void *arg)
{
	(void)arg;
	mpq_barrier_wait(bar, 10000 * MS);
	return 9;
}

/*
 * 3 parties: two arrive, one of them is SIGKILLed at a random moment
 * while it waits; the other gets -ECANCELED (BrokenBarrierError) and
 * the barrier is broken, as for a local barrier. After reset a full round
 * gives each party its own arrival index. Several times.
 */
TEST_F(obj, a_barrier_party_killed_while_waiting_breaks_it_for_the_others)
{
	int round, i, seen, sum;
	pid_t p, v;

	bar_out = shared_alloc(4 * sizeof(*bar_out));
	ASSERT_EQ(0, new_barrier(self->m, 3, &bar));
	EXPECT_EQ(3, mpq_barrier_parties(bar));
	srand(getpid());
	for (round = 0; round < 3; round++) {
		bar_out[0] = 1;
		p = spawn(barrier_party, &bar_out[0]);
		v = spawn(barrier_victim, NULL);
		for (i = 0; i < 1000 && mpq_barrier_n_waiting(bar) < 2; i++)
			sleep_ms(5);
		ASSERT_EQ(2, mpq_barrier_n_waiting(bar));
		sleep_ms(rand() % 40);
		kill(v, SIGKILL);
		EXPECT_EQ(128 + SIGKILL, wait_child(v, 5000));
		EXPECT_EQ(0, wait_child(p, 10000));
		EXPECT_EQ(-ECANCELED, bar_out[0]);
		EXPECT_EQ(1, mpq_barrier_broken(bar));
		EXPECT_EQ(-ECANCELED, mpq_barrier_wait(bar, 0));
		EXPECT_EQ(0, mpq_barrier_reset(bar));
		EXPECT_EQ(0, mpq_barrier_broken(bar));
	}
	/* A whole round: indexes 0, 1, 2, one each. */
	bar_out[0] = bar_out[1] = -1;
	p = spawn(barrier_party, &bar_out[0]);
	v = spawn(barrier_party, &bar_out[1]);
	bar_out[2] = mpq_barrier_wait(bar, 10000 * MS);
	EXPECT_EQ(0, wait_child(p, 10000));
	EXPECT_EQ(0, wait_child(v, 10000));
	for (i = 0, seen = 0, sum = 0; i < 3; i++) {
		ASSERT_GE(bar_out[i], 0);
		ASSERT_LT(bar_out[i], 3);
		seen |= 1 << bar_out[i];
		sum += bar_out[i];
	}
	EXPECT_EQ(7, seen);
	EXPECT_EQ(0, mpq_barrier_abort(bar));
	EXPECT_EQ(1, mpq_barrier_broken(bar));
	mpq_barrier_free(bar);
}

static int *actions;

static int count_action(void *arg)
{
	(void)arg;
	__atomic_add_fetch(actions, 1, __ATOMIC_SEQ_CST);
	return 0;
}

static int action_party(void *arg)
{
	struct mpq_barrier *b = arg;

	return mpq_barrier_wait(b, 10000 * MS) < 0 ? 1 : 0;
}

/* The action runs once a round, by the last party, before any leaves. */
TEST_F(obj, a_barrier_action_runs_once_per_round)
{
	struct mpq_barrier *b;
	pid_t c;
	int round;

	actions = shared_alloc(sizeof(*actions));
	ASSERT_EQ(0, self->m ?
		  mpq_manager_barrier_open(self->m, "act", 2, count_action,
					   NULL, LEASE, &b) :
		  mpq_barrier_new(&b, 2, count_action, NULL, NULL));
	for (round = 1; round <= 2; round++) {
		c = spawn(action_party, b);
		EXPECT_LE(0, mpq_barrier_wait(b, 10000 * MS));
		EXPECT_EQ(0, wait_child(c, 10000));
		EXPECT_EQ(round, __atomic_load_n(actions, __ATOMIC_SEQ_CST));
	}
	mpq_barrier_free(b);
}

/* ------------------------------------------------------------------ */
/* Value */

static struct mpq_value *val;

#define ADDS	15

/* Python's "with v.get_lock(): v.value += 1", through mpq's calls. */
static int value_adder(void *arg)
{
	struct mpq_lock *l = mpq_value_get_lock(val);
	int64_t x;
	int i;

	(void)arg;
	for (i = 0; i < ADDS; i++) {
		if (mpq_lock_acquire(l, 10000 * MS))
			return 1;
		if (mpq_array_get(val, 1, &x))
			return 2;
		x++;
		if (mpq_array_set(val, 1, &x))
			return 3;
		if (mpq_lock_release(l))
			return 4;
	}
	return 0;
}

TEST_F(obj, a_value_added_to_under_its_lock_by_several_processes_loses_nothing)
{
	int64_t a[3] = { 7, 0, 9 }, b[3], x;
	pid_t c[3];
	int i;

	ASSERT_EQ(0, new_array(self->m, 8, 3, &val));
	EXPECT_EQ(24, mpq_value_size(val));
	EXPECT_EQ(3, mpq_array_len(val));
	ASSERT_NE(NULL, mpq_value_get_lock(val));
	ASSERT_EQ(0, mpq_value_set(val, a));
	memset(b, 0xff, sizeof(b));
	ASSERT_EQ(0, mpq_value_get(val, b));
	EXPECT_EQ(0, memcmp(a, b, sizeof(a)));
	EXPECT_EQ(-ERANGE, mpq_array_get(val, 3, &x));
	EXPECT_EQ(-EINVAL, mpq_array_get(val, 0, NULL));
	for (i = 0; i < 3; i++)
		c[i] = spawn(value_adder, NULL);
	for (i = 0; i < 3; i++)
		EXPECT_EQ(0, wait_child(c[i], 20000));
	ASSERT_EQ(0, mpq_value_get(val, b));
	EXPECT_EQ(7, b[0]);
	EXPECT_EQ(3 * ADDS, b[1]);
	EXPECT_EQ(9, b[2]);
	/* Holding its RLock, the copies still work (they take it again). */
	ASSERT_EQ(0, mpq_lock_acquire(mpq_value_get_lock(val), 0));
	EXPECT_EQ(0, mpq_array_get(val, 1, &x));
	EXPECT_EQ(3 * ADDS, x);
	EXPECT_EQ(0, mpq_lock_release(mpq_value_get_lock(val)));
	mpq_value_free(val);
}

/* ------------------------------------------------------------------ */
/* Export and import, through a spawned child. */

struct handles {
	char e[MPQ_HANDLE_MAX];
	char c[MPQ_HANDLE_MAX];
	char b[MPQ_HANDLE_MAX];
	char v[MPQ_HANDLE_MAX];
};

static int one(void *arg)
{
	(void)arg;
	return 1;
}

static int imported_child(const void *arg, size_t len)
{
	const struct handles *h = arg;
	struct mpq_event *e;
	struct mpq_cond *c;
	struct mpq_barrier *b;
	struct mpq_value *v;
	int64_t x;

	if (len != sizeof(*h))
		return 10;
	if (mpq_event_import(&e, h->e) ||
	    mpq_cond_import(&c, h->c, NULL) ||
	    mpq_barrier_import(&b, h->b, NULL, NULL) ||
	    mpq_value_import(&v, h->v, NULL))
		return 11;
	if (mpq_barrier_parties(b) != 2 || mpq_array_len(v) != 1)
		return 12;
	x = 42;
	if (mpq_value_set(v, &x))
		return 13;
	/* The parent waits for both of us here. */
	if (mpq_barrier_wait(b, 10000 * MS) < 0)
		return 14;
	if (mpq_cond_acquire(c, 10000 * MS) ||
	    mpq_cond_wait_for(c, one, NULL, 0) || mpq_cond_notify_all(c) ||
	    mpq_cond_release(c))
		return 15;
	if (mpq_event_set(e))
		return 16;
	mpq_value_free(v);
	mpq_barrier_free(b);
	mpq_cond_free(c);
	mpq_event_free(e);
	return 0;
}
MPQ_TARGET(imported_child);

FIXTURE(mgr) {
	struct mpq_manager *m;
};

FIXTURE_SETUP(mgr)
{
	self->m = start_or_skip(_metadata, NULL);
}

FIXTURE_TEARDOWN(mgr)
{
	if (self->m)
		mpq_manager_shutdown(self->m);
}

FIXTURE(child) {
	struct mpq_manager *m;
};
FIXTURE_VARIANT(child) {
	int method;
};
FIXTURE_VARIANT_ADD(child, spawn) {
	.method = MPQ_START_SPAWN,
};
FIXTURE_VARIANT_ADD(child, forkserver) {
	.method = MPQ_START_FORKSERVER,
};

FIXTURE_SETUP(child)
{
	self->m = start_or_skip(_metadata, NULL);
}

FIXTURE_TEARDOWN(child)
{
	if (self->m)
		mpq_manager_shutdown(self->m);
}

TEST_F(child, export_gives_handles_that_a_child_imports)
{
	struct mpq_process_attr pa = { .start_method = variant->method };
	struct mpq_process *p;
	struct mpq_event *e;
	struct mpq_cond *c, *c2 = NULL;
	struct mpq_barrier *b;
	struct mpq_value *v, *v2 = NULL;
	struct mpq_lock *l;
	struct handles h;
	int64_t x = 0;
	int code = -1;

	ASSERT_EQ(0, mpq_manager_event_open(self->m, "xe", &e));
	ASSERT_EQ(0, mpq_manager_cond_open(self->m, "xc", NULL, 0, &c));
	ASSERT_EQ(0, mpq_manager_barrier_open(self->m, "xb", 2, NULL, NULL, 0,
					      &b));
	ASSERT_EQ(0, mpq_manager_value_open(self->m, "xv", 8, 0, 0, &v));
	ASSERT_LT(0, mpq_event_export(e, h.e, sizeof(h.e)));
	ASSERT_LT(0, mpq_cond_export(c, h.c, sizeof(h.c)));
	ASSERT_LT(0, mpq_barrier_export(b, h.b, sizeof(h.b)));
	ASSERT_LT(0, mpq_value_export(v, h.v, sizeof(h.v)));
	EXPECT_EQ(NULL, strstr(h.v, mpq_manager_authkey(self->m)));
	/* A handle of another kind, or with a lock it was not made with. */
	EXPECT_EQ(-EINVAL, mpq_event_import(&e, h.v));
	ASSERT_EQ(0, mpq_manager_lock_open(self->m, "xl", 0, &l));
	EXPECT_EQ(-EINVAL, mpq_cond_import(&c2, h.c, l));
	EXPECT_EQ(-EINVAL, mpq_value_import(&v2, h.v, l));
	ASSERT_EQ(0, mpq_process_new(&p, imported_child, &h, sizeof(h), &pa));
	ASSERT_EQ(0, mpq_process_start(p));
	EXPECT_LE(0, mpq_barrier_wait(b, 10000 * MS));
	EXPECT_EQ(0, mpq_event_wait(e, 10000 * MS));
	ASSERT_EQ(0, mpq_process_join(p, 20 * NSEC_PER_SEC));
	ASSERT_EQ(0, mpq_process_exitcode(p, &code));
	EXPECT_EQ(0, code);
	EXPECT_EQ(0, mpq_value_get(v, &x));
	EXPECT_EQ(42, x);
	mpq_process_free(p);
	mpq_lock_free(l);
	mpq_value_free(v);
	mpq_barrier_free(b);
	mpq_cond_free(c);
	mpq_event_free(e);
}

TEST_F(mgr, calls_that_cannot_apply_are_eopnotsupp_or_einval)
{
	struct mpq_value *v;
	struct mpq_cond *c = NULL;
	struct mpq_lock *local, *ml;

	struct mpq_value *raw;
	int64_t x = 5, y = 0;

	ASSERT_EQ(0, mpq_manager_value_open(self->m, "na", 8, 0, 0, &v));
	/* Its bytes are on the server. */
	EXPECT_EQ(NULL, mpq_value_ptr(v));
	/* A raw one has no lock, and copies all the same. */
	ASSERT_EQ(0, mpq_manager_value_open(self->m, "raw", 8, MPQ_VALUE_RAW,
					    0, &raw));
	EXPECT_EQ(NULL, mpq_value_get_lock(raw));
	EXPECT_EQ(0, mpq_value_set(raw, &x));
	EXPECT_EQ(0, mpq_value_get(raw, &y));
	EXPECT_EQ(5, y);
	mpq_value_free(raw);
	/* The server cannot wait on a local lock, nor libmpq on a managed. */
	ASSERT_EQ(0, mpq_lock_new(&local, NULL));
	EXPECT_EQ(-EINVAL, mpq_manager_cond_open(self->m, "na", local, 0, &c));
	EXPECT_EQ(NULL, c);
	/* With a managed lock of the caller's, it is that lock. */
	ASSERT_EQ(0, mpq_manager_lock_open(self->m, "na", 0, &ml));
	ASSERT_EQ(0, mpq_manager_cond_open(self->m, "na", ml, 0, &c));
	EXPECT_EQ(ml, mpq_cond_get_lock(c));
	ASSERT_EQ(0, mpq_cond_acquire(c, 0));
	EXPECT_EQ(1, mpq_lock_locked(ml));
	EXPECT_EQ(0, mpq_cond_notify(c, 1));
	EXPECT_EQ(0, mpq_cond_release(c));
	mpq_cond_free(c);
	mpq_lock_free(ml);
	mpq_lock_free(local);
	mpq_value_free(v);
}

TEST_HARNESS_MAIN
