// SPDX-License-Identifier: GPL-2.0
/*
 * Managed objects of mpq's own types (net/manager/proxy.c, libmpq's
 * mpq_ext.h): the promise is that code written for a local object runs
 * on a managed one. So the same test bodies run on a local queue or lock
 * and on one from mpq_manager_*_open (variants local and managed), with
 * nothing but the mpq_queue_* and mpq_lock_* calls. Then what only a
 * managed one can show: a holder SIGKILLed at random points gives the
 * next mpq_lock_acquire -EOWNERDEAD; export/import through spawned and
 * fork-server children; -EOPNOTSUPP where mpq_manager_proxy(3) says.
 *
 * Against real redis-servers started by mpq_manager_start. Spawned
 * children are this binary executed again (process_test.c's scheme).
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

/* ------------------------------------------------------------------ */
/* One body, two kinds of object. */

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

static int new_queue(struct mpq_manager *m, const char *name, int joinable,
		     unsigned int maxsize, struct mpq_queue **q)
{
	struct mpq_queue_attr a = { .maxsize = maxsize, .msgsize = 64 };
	struct mpq_manager_queue_attr ma = { .maxsize = maxsize,
					     .lease_ns = 5000 * MS };

	if (!m)
		return joinable ? mpq_joinable_queue_new(q, &a) :
				  mpq_queue_new(q, &a);
	return joinable ? mpq_manager_joinable_queue_open(m, name, &ma, q) :
			  mpq_manager_queue_open(m, name, &ma, q);
}

static int new_lock(struct mpq_manager *m, const char *name, int recursive,
		    struct mpq_lock **l)
{
	if (!m)
		return recursive ? mpq_rlock_new(l, NULL) : mpq_lock_new(l, NULL);
	return recursive ? mpq_manager_rlock_open(m, name, 300 * MS, l) :
			   mpq_manager_lock_open(m, name, 300 * MS, l);
}

static int get_str(struct mpq_queue *q, char *buf, size_t room,
		   int64_t timeout)
{
	size_t len = room - 1;
	int err = mpq_queue_get(q, buf, &len, timeout);

	buf[err ? 0 : len] = 0;
	return err;
}

/* The body written for a local Queue: FIFO, batches, bounds, timeouts. */
TEST_F(obj, a_queue_keeps_the_local_queues_promises)
{
	char buf[64], small[2];
	struct iovec in[3] = { { "b", 1 }, { "c", 1 }, { "d", 1 } };
	struct iovec out[3] = { { buf, 8 }, { buf + 8, 8 }, { buf + 16, 8 } };
	struct mpq_queue *q;
	size_t len;
	int64_t t0;

	ASSERT_EQ(0, new_queue(self->m, "q", 0, 4, &q));
	EXPECT_EQ(4, mpq_queue_maxsize(q));
	EXPECT_EQ(1, mpq_queue_empty(q));
	EXPECT_EQ(-EAGAIN, get_str(q, buf, sizeof(buf), 0));
	t0 = now_ns();
	EXPECT_EQ(-ETIMEDOUT, get_str(q, buf, sizeof(buf), 50 * MS));
	EXPECT_GE(now_ns() - t0, 50 * MS);
	ASSERT_EQ(0, mpq_queue_put(q, "a", 1, 0));
	ASSERT_EQ(3, mpq_queue_put_many(q, in, 3, 0));
	EXPECT_EQ(4, mpq_queue_qsize(q));
	EXPECT_EQ(1, mpq_queue_full(q));
	EXPECT_EQ(-EAGAIN, mpq_queue_put(q, "x", 1, 0));
	EXPECT_EQ(-ETIMEDOUT, mpq_queue_put(q, "x", 1, 20 * MS));
	/* Too small a buffer: -EMSGSIZE, the size, and the message stays. */
	len = 0;
	EXPECT_EQ(-EMSGSIZE, mpq_queue_get(q, small, &len, 0));
	EXPECT_EQ(1, len);
	EXPECT_EQ(0, get_str(q, buf, sizeof(buf), 0));
	EXPECT_STREQ("a", buf);
	ASSERT_EQ(3, mpq_queue_get_many(q, out, 3, 0));
	EXPECT_EQ(0, memcmp(buf, "b", 1));
	EXPECT_EQ(0, memcmp(buf + 8, "c", 1));
	EXPECT_EQ(0, memcmp(buf + 16, "d", 1));
	EXPECT_EQ(1, out[2].iov_len);
	/* A plain Queue is not joinable. */
	EXPECT_EQ(-EINVAL, mpq_queue_task_done(q));
	EXPECT_EQ(-EINVAL, mpq_queue_join(q, 0));
	EXPECT_EQ(0, mpq_queue_close(q));
	EXPECT_EQ(-EBADF, mpq_queue_put(q, "x", 1, 0));
	EXPECT_EQ(0, mpq_queue_join_thread(q));
	mpq_queue_free(q);
}

static int *put_done;

/* Take one, then see the blocked put finish: woken by the get, not by
 * its own timeout (which is longer than this wait). */
static int take_one_later(void *arg)
{
	struct mpq_queue *q = arg;
	char buf[8];
	size_t len = sizeof(buf);

	sleep_ms(100);
	if (mpq_queue_get(q, buf, &len, 5000 * MS))
		return 1;
	return wait_for_flag(put_done, 4000) ? 0 : 2;
}

TEST_F(obj, a_blocking_put_waits_for_room_that_a_get_makes)
{
	struct mpq_queue *q;
	pid_t c;

	put_done = shared_alloc(sizeof(*put_done));
	ASSERT_EQ(0, new_queue(self->m, "room", 0, 1, &q));
	ASSERT_EQ(0, mpq_queue_put(q, "a", 1, 0));
	c = spawn(take_one_later, q);
	EXPECT_EQ(0, mpq_queue_put(q, "b", 1, 10000 * MS));
	set_flag(put_done, 1);
	EXPECT_EQ(0, wait_child(c, 10000));
	EXPECT_EQ(1, mpq_queue_qsize(q));
	mpq_queue_free(q);
}

static int consume_all(void *arg)
{
	struct mpq_queue *q = arg;
	char buf[8];
	size_t len;
	int i;

	for (i = 0; i < 3; i++) {
		len = sizeof(buf);
		if (mpq_queue_get(q, buf, &len, 5000 * MS))
			return 1;
		sleep_ms(20);
		if (mpq_queue_task_done(q))
			return 2;
	}
	return 0;
}

TEST_F(obj, a_joinable_queue_joins_when_a_consumer_finished_every_task)
{
	struct mpq_queue *q;
	pid_t c;

	ASSERT_EQ(0, new_queue(self->m, "jq", 1, 0, &q));
	EXPECT_EQ(-EINVAL, mpq_queue_task_done(q));	/* nothing taken */
	ASSERT_EQ(0, mpq_queue_put(q, "1", 1, 0));
	ASSERT_EQ(0, mpq_queue_put(q, "2", 1, 0));
	ASSERT_EQ(0, mpq_queue_put(q, "3", 1, 0));
	EXPECT_EQ(3, mpq_queue_unfinished(q));
	EXPECT_EQ(-EAGAIN, mpq_queue_join(q, 0));
	EXPECT_EQ(-ETIMEDOUT, mpq_queue_join(q, 20 * MS));
	c = spawn(consume_all, q);
	EXPECT_EQ(0, mpq_queue_join(q, 10000 * MS));
	EXPECT_EQ(0, mpq_queue_unfinished(q));
	EXPECT_EQ(0, wait_child(c, 5000));
	mpq_queue_free(q);
}

TEST_F(obj, a_lock_keeps_the_local_locks_promises)
{
	struct mpq_lock *l, *r;

	ASSERT_EQ(0, new_lock(self->m, "L", 0, &l));
	ASSERT_EQ(0, new_lock(self->m, "R", 1, &r));
	EXPECT_EQ(0, mpq_lock_locked(l));
	EXPECT_EQ(-EINVAL, mpq_lock_release(l));	/* not held */
	ASSERT_EQ(0, mpq_lock_acquire(l, MPQ_FOREVER));
	EXPECT_EQ(1, mpq_lock_locked(l));
	EXPECT_EQ(1, mpq_lock_owned(l));
	EXPECT_EQ(-EAGAIN, mpq_lock_acquire(l, 0));
	EXPECT_EQ(-EDEADLK, mpq_lock_acquire(l, 10 * MS));
	EXPECT_EQ(0, mpq_lock_release(l));
	EXPECT_EQ(0, mpq_lock_owned(l));
	/* An RLock counts its levels. */
	ASSERT_EQ(0, mpq_lock_acquire(r, 0));
	ASSERT_EQ(0, mpq_lock_acquire(r, 0));
	EXPECT_EQ(0, mpq_lock_release(r));
	EXPECT_EQ(1, mpq_lock_owned(r));
	EXPECT_EQ(0, mpq_lock_release(r));
	EXPECT_EQ(0, mpq_lock_owned(r));
	EXPECT_EQ(-EPERM, mpq_lock_release(r));
	EXPECT_EQ(-EPERM, mpq_lock_consistent(l));
	mpq_lock_free(r);
	mpq_lock_free(l);
}

static int hold_and_die(void *arg)
{
	struct mpq_lock *l = arg;

	if (mpq_lock_acquire(l, 2000 * MS))
		return 1;
	kill(getpid(), SIGKILL);
	return 2;
}

TEST_F(obj, a_lock_whose_holder_is_killed_goes_to_the_next_acquirer_with_eownerdead)
{
	struct mpq_lock *l;
	pid_t c;

	ASSERT_EQ(0, new_lock(self->m, "dead", 0, &l));
	c = spawn(hold_and_die, l);
	EXPECT_EQ(128 + SIGKILL, wait_child(c, 5000));
	EXPECT_EQ(-EOWNERDEAD, mpq_lock_acquire(l, 5000 * MS));
	EXPECT_EQ(1, mpq_lock_owned(l));
	EXPECT_EQ(0, mpq_lock_release(l));
	/* Every acquirer is told until one calls consistent. */
	EXPECT_EQ(-EOWNERDEAD, mpq_lock_acquire(l, 5000 * MS));
	EXPECT_EQ(0, mpq_lock_consistent(l));
	EXPECT_EQ(0, mpq_lock_release(l));
	EXPECT_EQ(0, mpq_lock_acquire(l, 0));
	EXPECT_EQ(0, mpq_lock_release(l));
	mpq_lock_free(l);
}

/* ------------------------------------------------------------------ */
/* What only a managed object shows. */

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

/*
 * Workers loop on a managed lock through mpq_lock_*, marking a shared
 * word while inside; each is SIGKILLed at a random moment, inside or
 * out. An acquirer after a death inside is told -EOWNERDEAD (and repairs
 * the mark); mutual exclusion holds throughout.
 */
struct storm {
	int inside;
	int violations;
	int repairs;
};

static struct mpq_lock *storm_lock;
static struct storm *storm_st;

static int storm_worker(void *arg)
{
	int err, me = getpid();

	(void)arg;
	for (;;) {
		err = mpq_lock_acquire(storm_lock, 10000 * MS);
		if (err == -EOWNERDEAD) {
			__atomic_add_fetch(&storm_st->repairs, 1,
					   __ATOMIC_SEQ_CST);
			__atomic_store_n(&storm_st->inside, 0,
					 __ATOMIC_SEQ_CST);
			if (mpq_lock_consistent(storm_lock))
				return 3;
		} else if (err) {
			return 1;
		}
		if (__atomic_exchange_n(&storm_st->inside, me,
					__ATOMIC_SEQ_CST) != 0)
			__atomic_add_fetch(&storm_st->violations, 1,
					   __ATOMIC_SEQ_CST);
		sleep_ms(rand() % 3);
		__atomic_store_n(&storm_st->inside, 0, __ATOMIC_SEQ_CST);
		err = mpq_lock_release(storm_lock);
		if (err && err != -ESTALE)	/* descheduled past the lease */
			return 2;
	}
}

TEST_F(mgr, a_sigkill_storm_on_mpq_lock_holders_keeps_mutual_exclusion)
{
	pid_t w[3];
	int i, k, dead = 0;

	storm_st = shared_alloc(sizeof(*storm_st));
	ASSERT_EQ(0, mpq_manager_lock_open(self->m, "storm", 150 * MS,
					   &storm_lock));
	srand(getpid());
	for (k = 0; k < 3; k++)
		w[k] = spawn(storm_worker, NULL);
	for (i = 0; i < 10; i++) {
		k = rand() % 3;
		sleep_ms(20 + rand() % 60);
		kill(w[k], SIGKILL);
		EXPECT_EQ(128 + SIGKILL, wait_child(w[k], 5000));
		dead++;
		w[k] = spawn(storm_worker, NULL);
	}
	for (k = 0; k < 3; k++) {
		kill(w[k], SIGKILL);
		wait_child(w[k], 5000);
	}
	EXPECT_EQ(0, storm_st->violations);
	/* A kill inside the lock happened in some rounds: it was noticed. */
	TH_LOG("%d kills, %d repairs", dead, storm_st->repairs);
	/* Whoever comes last finds the lock usable. */
	i = mpq_lock_acquire(storm_lock, 5000 * MS);
	EXPECT_TRUE(i == 0 || i == -EOWNERDEAD);
	if (i == -EOWNERDEAD)
		EXPECT_EQ(0, mpq_lock_consistent(storm_lock));
	EXPECT_EQ(0, mpq_lock_release(storm_lock));
	mpq_lock_free(storm_lock);
}

/* A spawned child: a queue's and a lock's handle in its argument. */
struct handles {
	char q[MPQ_HANDLE_MAX];
	char r[MPQ_HANDLE_MAX];
	char l[MPQ_HANDLE_MAX];
	char s[MPQ_HANDLE_MAX];
};

static int imported_child(const void *arg, size_t len)
{
	const struct handles *h = arg;
	struct mpq_queue *q, *r;
	struct mpq_lock *l;
	struct mpq_sem *s;
	char buf[16];
	size_t n = sizeof(buf);

	if (len != sizeof(*h))
		return 10;
	if (mpq_queue_import(&q, h->q) || mpq_queue_import(&r, h->r) ||
	    mpq_lock_import(&l, h->l) ||
	    mpq_sem_import(&s, h->s))
		return 11;
	if (mpq_queue_get(q, buf, &n, 5000 * MS) || n != 4 ||
	    memcmp(buf, "ping", 4))
		return 12;
	/* The parent holds the lock and the semaphore's only unit. */
	if (mpq_lock_acquire(l, 0) != -EAGAIN ||
	    mpq_sem_acquire(s, 0) != -EAGAIN)
		return 13;
	if (mpq_queue_put(r, "pong", 4, 0) || mpq_queue_task_done(q))
		return 14;
	if (mpq_lock_acquire(l, 5000 * MS))
		return 15;
	mpq_lock_release(l);
	mpq_queue_free(r);
	mpq_queue_free(q);
	mpq_lock_free(l);
	mpq_sem_free(s);
	return 0;
}
MPQ_TARGET(imported_child);

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

TEST_F(child, export_gives_a_handle_that_a_child_imports_through_the_manager)
{
	struct mpq_process_attr pa = { .start_method = variant->method };
	struct mpq_queue *q, *r;
	struct mpq_lock *l;
	struct mpq_sem *s;
	struct mpq_process *p;
	struct handles h;
	char buf[16];
	size_t n = sizeof(buf);
	int code = -1;

	ASSERT_EQ(0, mpq_manager_joinable_queue_open(self->m, "ex", NULL, &q));
	ASSERT_EQ(0, mpq_manager_queue_open(self->m, "res", NULL, &r));
	ASSERT_LT(0, mpq_queue_export(r, h.r, sizeof(h.r)));
	ASSERT_EQ(0, mpq_manager_lock_open(self->m, "ex", 0, &l));
	ASSERT_EQ(0, mpq_manager_sem_open(self->m, "ex", 1, 0, &s));
	ASSERT_LT(0, mpq_queue_export(q, h.q, sizeof(h.q)));
	ASSERT_LT(0, mpq_lock_export(l, h.l, sizeof(h.l)));
	ASSERT_LT(0, mpq_sem_export(s, h.s, sizeof(h.s)));
	/* The secret is not in what a command line or log might show. */
	EXPECT_EQ(NULL, strstr(h.q, mpq_manager_authkey(self->m)));
	EXPECT_EQ(NULL, strstr(h.q, mpq_manager_address(self->m)));
	EXPECT_EQ(-EINVAL, mpq_lock_import(&l, h.q));	/* not a lock's */
	ASSERT_EQ(0, mpq_lock_acquire(l, 0));
	ASSERT_EQ(0, mpq_sem_acquire(s, 0));
	ASSERT_EQ(0, mpq_queue_put(q, "ping", 4, 0));
	ASSERT_EQ(0, mpq_process_new(&p, imported_child, &h, sizeof(h), &pa));
	ASSERT_EQ(0, mpq_process_start(p));
	/* The child answers only after its get; then the lock is its. */
	ASSERT_EQ(0, mpq_queue_get(r, buf, &n, 10000 * MS));
	EXPECT_EQ(0, memcmp(buf, "pong", 4));
	/* Its task_done of "ping" reached the same queue. */
	EXPECT_EQ(0, mpq_queue_join(q, 10000 * MS));
	EXPECT_EQ(0, mpq_lock_release(l));
	ASSERT_EQ(0, mpq_process_join(p, 20 * NSEC_PER_SEC));
	ASSERT_EQ(0, mpq_process_exitcode(p, &code));
	EXPECT_EQ(0, code);
	mpq_process_free(p);
	mpq_sem_free(s);
	mpq_lock_free(l);
	mpq_queue_free(r);
	mpq_queue_free(q);
}

/* Work longer than the lease: renewed, it is not handed to another. */
TEST_F(mgr, renewed_leases_keep_a_long_task_and_a_long_hold)
{
	struct mpq_manager_queue_attr qa = { .lease_ns = 500 * MS };
	struct mpq_queue *q, *other;
	struct mpq_lock *l, *local;
	char buf[8];
	size_t len = sizeof(buf);
	int i;

	ASSERT_EQ(0, mpq_manager_joinable_queue_open(self->m, "long", &qa, &q));
	ASSERT_EQ(0, mpq_manager_joinable_queue_open(self->m, "long", &qa,
						     &other));
	ASSERT_EQ(0, mpq_manager_lock_open(self->m, "long", 500 * MS, &l));
	ASSERT_EQ(0, mpq_queue_put(q, "t", 1, 0));
	ASSERT_EQ(0, mpq_queue_get(q, buf, &len, 0));
	ASSERT_EQ(0, mpq_lock_acquire(l, 0));
	for (i = 0; i < 4; i++) {
		sleep_ms(200);
		EXPECT_EQ(0, mpq_manager_queue_renew(q));
		EXPECT_EQ(0, mpq_manager_lock_renew_lease(l));
	}
	len = sizeof(buf);
	EXPECT_EQ(-EAGAIN, mpq_queue_get(other, buf, &len, 0));
	EXPECT_EQ(1, mpq_lock_locked(l));
	EXPECT_EQ(0, mpq_queue_task_done(q));
	EXPECT_EQ(0, mpq_lock_release(l));
	/* Not renewed: the message goes back, and task_done says so. */
	ASSERT_EQ(0, mpq_queue_put(q, "u", 1, 0));
	len = sizeof(buf);
	ASSERT_EQ(0, mpq_queue_get(q, buf, &len, 0));
	sleep_ms(700);
	len = sizeof(buf);
	EXPECT_EQ(0, mpq_queue_get(other, buf, &len, 0));
	EXPECT_EQ(-ESTALE, mpq_queue_task_done(q));
	EXPECT_EQ(0, mpq_queue_task_done(other));
	/* Only a managed object has leases. */
	ASSERT_EQ(0, mpq_lock_new(&local, NULL));
	EXPECT_EQ(-EINVAL, mpq_manager_lock_renew_lease(local));
	mpq_lock_free(local);
	mpq_lock_free(l);
	mpq_queue_free(other);
	mpq_queue_free(q);
}

TEST_F(mgr, calls_that_cannot_apply_are_eopnotsupp)
{
	struct mpq_wait_item it = { .kind = MPQ_WAIT_QUEUE };
	struct mpq_queue *q;
	struct mpq_lock *l;
	struct mpq_sem *s;
	struct mpq_cond *c = NULL;
	struct mpq_msg msg;

	ASSERT_EQ(0, mpq_manager_queue_open(self->m, "na", NULL, &q));
	ASSERT_EQ(0, mpq_manager_lock_open(self->m, "na", 0, &l));
	ASSERT_EQ(0, mpq_manager_sem_open(self->m, "na", 2, 0, &s));
	EXPECT_EQ(-EOPNOTSUPP, mpq_queue_fileno(q));
	EXPECT_EQ(-EOPNOTSUPP, mpq_queue_backend(q));
	EXPECT_EQ(-EOPNOTSUPP, mpq_queue_msgsize(q));
	EXPECT_EQ(-EOPNOTSUPP, mpq_queue_reserve(q, 1, &msg, 0));
	EXPECT_EQ(-EOPNOTSUPP, mpq_queue_peek(q, &msg, 0));
	it.queue = q;
	EXPECT_EQ(-EOPNOTSUPP, mpq_wait(&it, 1, 0));
	EXPECT_EQ(-EOPNOTSUPP, mpq_wait_fd(&it));
	EXPECT_EQ(-EOPNOTSUPP, mpq_epoll_add(0, &it, 0));
	EXPECT_EQ(-EOPNOTSUPP, mpq_sem_get_value(s));
	EXPECT_EQ(-EOPNOTSUPP, mpq_cond_new(&c, l, NULL));
	EXPECT_EQ(NULL, c);
	/* The semaphore's own calls work. */
	EXPECT_EQ(0, mpq_sem_acquire(s, 0));
	EXPECT_EQ(0, mpq_sem_acquire(s, 0));
	EXPECT_EQ(-EAGAIN, mpq_sem_acquire(s, 0));
	EXPECT_EQ(0, mpq_sem_release(s));
	EXPECT_EQ(0, mpq_sem_release(s));
	EXPECT_EQ(-EPERM, mpq_sem_release(s));
	mpq_sem_free(s);
	mpq_lock_free(l);
	mpq_queue_free(q);
}

TEST_HARNESS_MAIN
