// SPDX-License-Identifier: GPL-2.0
/*
 * The queue, completed: zero-copy windows (reserve/commit, peek/release),
 * what happens when a process dies in the middle of a put, a get or a
 * window (the slot is reclaimed, nothing committed is lost), SIGKILL
 * storms with exact accounting of every message, JoinableQueue, close()
 * and an exact qsize. On the backend the environment selects.
 */
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>

#include "kselftest_harness.h"
#include "helpers.h"

#define SEC	NSEC_PER_SEC

/* --- Zero-copy ------------------------------------------------------- */

TEST(reserve_commit_then_peek_release_round_trips_in_place)
{
	struct mpq_queue *q = make_queue(8, 256, 0);
	struct mpq_msg w = { 0 }, r = { 0 };

	ASSERT_NE(NULL, q);
	ASSERT_EQ(0, mpq_queue_reserve(q, 100, &w, 0));
	ASSERT_EQ(256, w.len);
	memcpy(w.data, "in place", 9);
	ASSERT_EQ(0, mpq_queue_commit(q, &w, 9));
	ASSERT_EQ(1, mpq_queue_qsize(q));
	ASSERT_EQ(0, mpq_queue_peek(q, &r, 0));
	ASSERT_EQ(9, r.len);
	ASSERT_STREQ("in place", r.data);
	/* Peeked and not released: no longer in the queue. */
	ASSERT_EQ(0, mpq_queue_qsize(q));
	ASSERT_EQ(0, mpq_queue_release(q, &r));
	ASSERT_EQ(-EAGAIN, mpq_queue_peek(q, &r, 0));
	mpq_queue_free(q);
}

TEST(zero_copy_and_copying_calls_mix)
{
	struct mpq_queue *q = make_queue(8, 64, 0);
	struct mpq_msg m = { 0 };
	char buf[64];
	size_t len = sizeof(buf);

	ASSERT_EQ(0, mpq_queue_put(q, "copied", 6, 0));
	ASSERT_EQ(0, mpq_queue_reserve(q, 5, &m, 0));
	memcpy(m.data, "zero!", 5);
	ASSERT_EQ(0, mpq_queue_commit(q, &m, 5));
	ASSERT_EQ(0, mpq_queue_peek(q, &m, 0));
	ASSERT_EQ(6, m.len);
	ASSERT_EQ(0, memcmp(m.data, "copied", 6));
	ASSERT_EQ(0, mpq_queue_release(q, &m));
	ASSERT_EQ(0, mpq_queue_get(q, buf, &len, 0));
	ASSERT_EQ(5, len);
	ASSERT_EQ(0, memcmp(buf, "zero!", 5));
	mpq_queue_free(q);
}

TEST(cancelled_reservation_is_passed_over)
{
	struct mpq_queue *q = make_queue(8, 64, 0);
	struct mpq_msg m = { 0 };
	char buf[64];
	size_t len = sizeof(buf);

	ASSERT_EQ(0, mpq_queue_reserve(q, 10, &m, 0));
	ASSERT_EQ(0, mpq_queue_put(q, "after", 5, 0));
	ASSERT_EQ(0, mpq_queue_cancel(q, &m));
	ASSERT_EQ(1, mpq_queue_qsize(q));
	ASSERT_EQ(0, mpq_queue_get(q, buf, &len, 0));
	ASSERT_EQ(5, len);
	ASSERT_EQ(-EAGAIN, mpq_queue_get(q, buf, &len, 0));
	mpq_queue_free(q);
}

TEST(windows_are_checked)
{
	struct mpq_queue *q = make_queue(8, 64, 0), *q2 = make_queue(8, 64, 0);
	struct mpq_msg m = { 0 };

	ASSERT_EQ(-EINVAL, mpq_queue_commit(q, &m, 1));
	ASSERT_EQ(-EINVAL, mpq_queue_release(q, &m));
	ASSERT_EQ(-EINVAL, mpq_queue_cancel(q, &m));
	ASSERT_EQ(0, mpq_queue_reserve(q, 64, &m, 0));
	ASSERT_EQ(-EINVAL, mpq_queue_release(q, &m));	/* not a peek */
	ASSERT_EQ(-EINVAL, mpq_queue_commit(q2, &m, 1));	/* not q2's */
	ASSERT_EQ(-EMSGSIZE, mpq_queue_commit(q, &m, 65));
	ASSERT_EQ(0, mpq_queue_commit(q, &m, 64));
	/* Past the slot: a blob, with room for what was asked. */
	ASSERT_EQ(0, mpq_queue_reserve(q, 65, &m, 0));
	ASSERT_LE(65, m.len);
	ASSERT_EQ(-EMSGSIZE, mpq_queue_commit(q, &m, m.len + 1));
	ASSERT_EQ(0, mpq_queue_cancel(q, &m));
	ASSERT_EQ(-EINVAL, mpq_queue_commit(q, &m, 1));	/* closed */
	ASSERT_EQ(-EINVAL, mpq_queue_reserve(NULL, 1, &m, 0));
	ASSERT_EQ(-EINVAL, mpq_queue_peek(q, NULL, 0));
	mpq_queue_free(q);
	mpq_queue_free(q2);
}

TEST(two_windows_at_once_in_one_thread)
{
	struct mpq_queue *q = make_queue(8, 64, 0);
	struct mpq_msg a = { 0 }, b = { 0 };

	ASSERT_EQ(0, mpq_queue_reserve(q, 8, &a, 0));
	ASSERT_EQ(0, mpq_queue_reserve(q, 8, &b, 0));
	memcpy(b.data, "second", 6);
	memcpy(a.data, "first", 5);
	ASSERT_EQ(0, mpq_queue_commit(q, &b, 6));
	ASSERT_EQ(0, mpq_queue_commit(q, &a, 5));
	ASSERT_EQ(0, mpq_queue_peek(q, &a, 0));
	ASSERT_EQ(0, mpq_queue_peek(q, &b, 0));
	/* Order is the order of the claims. */
	ASSERT_EQ(0, memcmp(a.data, "first", 5));
	ASSERT_EQ(0, memcmp(b.data, "second", 6));
	ASSERT_EQ(0, mpq_queue_release(q, &b));
	ASSERT_EQ(0, mpq_queue_release(q, &a));
	ASSERT_EQ(0, mpq_queue_qsize(q));
	mpq_queue_free(q);
}

/* The mapping named like the queue's shared memory holds p. */
static int in_queue_memory(const void *p)
{
	unsigned long lo, hi, a = (unsigned long)p;
	char line[512];
	FILE *f = fopen("/proc/self/maps", "r");
	int found = 0;

	while (f && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && a >= lo && a < hi)
			found = strstr(line, "mpq-queue") != NULL;
	}
	if (f)
		fclose(f);
	return found;
}

TEST(a_1mib_message_goes_through_without_a_copy)
{
	struct mpq_queue *q = make_queue(4, 1 << 20, 0);
	struct mpq_msg m = { 0 };
	uint64_t sum = 0, got = 0;
	pid_t pid;
	size_t i;

	ASSERT_NE(NULL, q);
	pid = fork();
	if (pid == 0) {
		uint64_t *w;

		if (mpq_queue_reserve(q, 1 << 20, &m, 10 * SEC))
			_exit(1);
		if (!in_queue_memory(m.data))
			_exit(2);
		w = m.data;
		for (i = 0; i < (1 << 20) / 8; i++)
			w[i] = i * 0x9e3779b97f4a7c15ULL;
		_exit(mpq_queue_commit(q, &m, 1 << 20) ? 3 : 0);
	}
	ASSERT_EQ(0, mpq_queue_peek(q, &m, 10 * SEC));
	ASSERT_EQ(1 << 20, m.len);
	ASSERT_TRUE(in_queue_memory(m.data));
	for (i = 0; i < (1 << 20) / 8; i++) {
		sum += i * 0x9e3779b97f4a7c15ULL;
		got += ((uint64_t *)m.data)[i];
	}
	ASSERT_EQ(sum, got);
	ASSERT_EQ(0, mpq_queue_release(q, &m));
	ASSERT_EQ(0, wait_child(pid, 10000));
	mpq_queue_free(q);
}

/* --- Deaths in the middle ---------------------------------------------- */

struct shared {
	int ready;
	int done;
	uint32_t count[4096];	/* times each id was taken */
	uint64_t sent[4];	/* per producer: ids committed */
	int consumed;
	int in_get;		/* consume_alone is inside a get */
};

static struct shared *shared_new(void)
{
	struct shared *sh = shared_alloc(sizeof(*sh));

	memset(sh, 0, sizeof(*sh));
	return sh;
}

/*
 * A child that opens a zero-copy window (a reservation, or a peek with
 * peek set) and stays in it until killed; its pid once the window is
 * open, or -1.
 */
static pid_t window_holder(struct mpq_queue *q, struct shared *sh, int peek)
{
	pid_t pid = fork();

	if (pid == 0) {
		struct mpq_msg m = { 0 };

		if (peek)
			mpq_queue_peek(q, &m, 0);
		else
			mpq_queue_reserve(q, 8, &m, 0);
		set_flag(&sh->ready, 1);
		pause();
		_exit(0);
	}
	return wait_for_flag(&sh->ready, 10000) == 1 ? pid : -1;
}

static void reserve_killed(struct __test_metadata *_metadata, uint32_t flags)
{
	struct mpq_queue *q = make_queue(8, 64, flags);
	struct shared *sh = shared_new();
	char buf[64];
	size_t len;
	pid_t pid;
	int i;

	pid = window_holder(q, sh, 0);
	ASSERT_LT(0, pid);
	for (i = 0; i < 3; i++)
		ASSERT_EQ(0, mpq_queue_put(q, &i, sizeof(i), 0));
	kill(pid, SIGKILL);
	wait_child(pid, 10000);
	/* The dead one's slot comes first: it must not stop the rest. */
	for (i = 0; i < 3; i++) {
		len = sizeof(buf);
		ASSERT_EQ(0, mpq_queue_get(q, buf, &len, 10 * SEC));
		ASSERT_EQ(i, *(int *)buf);
	}
	ASSERT_EQ(0, mpq_queue_qsize(q));
	/* And the ring goes round past it. */
	for (i = 0; i < 20; i++) {
		ASSERT_EQ(0, mpq_queue_put(q, &i, sizeof(i), 0));
		len = sizeof(buf);
		ASSERT_EQ(0, mpq_queue_get(q, buf, &len, 0));
	}
	mpq_queue_free(q);
}

TEST(a_producer_killed_between_reserve_and_commit_does_not_wedge)
{
	reserve_killed(_metadata, 0);
}

static void peek_killed(struct __test_metadata *_metadata, uint32_t flags)
{
	struct mpq_queue *q = make_queue(4, 64, flags);
	struct shared *sh = shared_new();
	struct mpq_msg m = { 0 };
	char buf[64];
	size_t len;
	pid_t pid;
	int i;

	ASSERT_EQ(0, mpq_queue_put(q, "one", 3, 0));
	ASSERT_EQ(0, mpq_queue_put(q, "two", 3, 0));
	pid = window_holder(q, sh, 1);
	ASSERT_LT(0, pid);
	kill(pid, SIGKILL);
	wait_child(pid, 10000);
	/* "two" first (it was next), then "one" again. */
	len = sizeof(buf);
	ASSERT_EQ(0, mpq_queue_get(q, buf, &len, 10 * SEC));
	ASSERT_EQ(0, memcmp(buf, "two", 3));
	ASSERT_EQ(0, mpq_queue_peek(q, &m, 10 * SEC));
	ASSERT_EQ(3, m.len);
	ASSERT_EQ(0, memcmp(m.data, "one", 3));
	ASSERT_EQ(0, mpq_queue_release(q, &m));
	ASSERT_EQ(-EAGAIN, mpq_queue_get(q, buf, &len, 0));
	/* The ring is whole again: four puts fit. */
	for (i = 0; i < 4; i++)
		ASSERT_EQ(0, mpq_queue_put(q, "x", 1, 0));
	mpq_queue_free(q);
}

TEST(a_consumer_killed_between_peek_and_release_loses_nothing)
{
	peek_killed(_metadata, 0);
}

TEST(a_blocked_consumer_is_woken_for_a_dead_consumers_message)
{
	struct mpq_queue *q = make_queue(4, 64, 0);
	struct shared *sh = shared_new();
	pid_t victim, waiter;

	ASSERT_EQ(0, mpq_queue_put(q, "only", 4, 0));
	victim = window_holder(q, sh, 1);
	ASSERT_LT(0, victim);
	/* Asleep on an empty queue, without a timeout. */
	waiter = fork();
	if (waiter == 0) {
		char buf[64];
		size_t len = sizeof(buf);

		if (mpq_queue_get(q, buf, &len, MPQ_FOREVER))
			_exit(1);
		_exit(len == 4 && !memcmp(buf, "only", 4) ? 0 : 2);
	}
	sleep_ms(100);
	ASSERT_EQ(1, child_running(waiter));
	kill(victim, SIGKILL);
	wait_child(victim, 10000);
	/* The death wakes it: the deathbell (memfd), the module (kmod). */
	ASSERT_EQ(0, wait_child(waiter, 10000));
	mpq_queue_free(q);
}

/*
 * Producer storm: two producers put ids (one at a time, in batches, and
 * zero-copy) and note each one the call committed; one of them is
 * SIGKILLed at a random instant. A consumer takes everything. Nothing
 * committed is lost, nothing is taken twice, and nothing is taken that
 * was never put.
 */
static void produce(struct mpq_queue *q, struct shared *sh, int p, int n)
{
	uint32_t id, i;

	for (id = p; id < (uint32_t)n; id += 2) {
		int how = (id / 2) % 3;

		if (how == 0) {
			if (mpq_queue_put(q, &id, sizeof(id), 20 * SEC))
				_exit(10);
		} else if (how == 1) {
			struct mpq_msg m = { 0 };

			if (mpq_queue_reserve(q, 4, &m, 20 * SEC))
				_exit(11);
			memcpy(m.data, &id, 4);
			if (mpq_queue_commit(q, &m, 4))
				_exit(12);
		} else {
			uint32_t ids[2] = { id, id + 2 };
			struct iovec iov[2] = { { &ids[0], 4 }, { &ids[1], 4 } };
			int k = 0;

			while (k < 2 && ids[k] < (uint32_t)n) {
				int r = mpq_queue_put_many(q, iov + k,
					ids[1] < (uint32_t)n ? 2 - k : 1 - k,
					20 * SEC);
				if (r < 0)
					_exit(13);
				k += r;
			}
			for (i = 0; i < (uint32_t)k; i++)
				__atomic_store_n(&sh->sent[p], ids[i] + 1,
						 __ATOMIC_SEQ_CST);
			id += 2;
			continue;
		}
		__atomic_store_n(&sh->sent[p], id + 1, __ATOMIC_SEQ_CST);
	}
	_exit(0);
}

TEST(sigkill_storm_of_producers_loses_nothing_committed)
{
	int iters = getenv("MPQ_IN_VM") ? 30 : 150, n = 3000, it;
	uint64_t seed = 0x7ea1;

	for (it = 0; it < iters; it++) {
		struct mpq_queue *q = make_queue(16, 8, 0);
		struct shared *sh = shared_new();
		int victim = (int)(rnd(&seed) % 2), p, alive, id;
		pid_t pids[2];
		char buf[8];
		size_t len;

		for (p = 0; p < 2; p++) {
			pids[p] = fork();
			if (pids[p] == 0)
				produce(q, sh, p, n);
		}
		/* Take some, kill, take the rest. */
		for (id = 0; id < (int)(rnd(&seed) % 600); id++) {
			len = sizeof(buf);
			if (mpq_queue_get(q, buf, &len, 10 * SEC) == 0)
				sh->count[*(uint32_t *)buf]++;
		}
		kill(pids[victim], SIGKILL);
		alive = 1;
		/*
		 * Short waits: the survivor's puts wake a get at once, and
		 * a get that waits also repairs; 200 ms here made the test
		 * take 21-23 s of its 30 on an idle host, and time out on
		 * a busy one.
		 */
		while (alive || mpq_queue_qsize(q) > 0) {
			len = sizeof(buf);
			if (mpq_queue_get(q, buf, &len, 20 * NSEC_PER_MSEC) == 0) {
				uint32_t v = *(uint32_t *)buf;

				ASSERT_LT(v, (uint32_t)n);
				sh->count[v]++;
			}
			alive = child_running(pids[!victim]);
		}
		ASSERT_EQ(0, wait_child(pids[!victim], 10000));
		ASSERT_EQ(128 + SIGKILL, wait_child(pids[victim], 10000));
		/* Drain what a repair may still free. */
		len = sizeof(buf);
		while (mpq_queue_get(q, buf, &len, 20 * NSEC_PER_MSEC) == 0) {
			sh->count[*(uint32_t *)buf]++;
			len = sizeof(buf);
		}
		for (id = 0; id < n; id++) {
			int p2 = id % 2;

			ASSERT_LE(sh->count[id], 1) TH_LOG("id %d taken twice", id);
			/* Committed (noted after the call returned): taken. */
			if ((uint64_t)id < sh->sent[p2] || p2 != victim)
				ASSERT_EQ(1, sh->count[id]) TH_LOG("id %d lost (it %d)", id, it);
		}
		mpq_queue_free(q);
		munmap(sh, sizeof(*sh));
	}
}

/*
 * Consumer storm: a producer puts ids; two consumers take them by peek,
 * note them, release; one consumer is SIGKILLed at a random instant.
 * Every id is taken, at least once; only the one the victim held between
 * noting it and releasing it may be taken twice.
 */
static void consume(struct mpq_queue *q, struct shared *sh)
{
	struct mpq_msg m = { 0 };

	for (;;) {
		int r = mpq_queue_peek(q, &m, 20 * SEC);

		if (r)
			_exit(r == -ETIMEDOUT ? 0 : 20);
		__atomic_add_fetch(&sh->count[*(uint32_t *)m.data], 1,
				   __ATOMIC_SEQ_CST);
		if (mpq_queue_release(q, &m))
			_exit(21);
	}
}

static int all_taken(struct shared *sh, int n)
{
	int id;

	for (id = 0; id < n; id++)
		if (!__atomic_load_n(&sh->count[id], __ATOMIC_SEQ_CST))
			return 0;
	return 1;
}

TEST(sigkill_storm_of_consumers_delivers_every_message)
{
	int iters = getenv("MPQ_IN_VM") ? 30 : 150, n = 3000, it;
	uint64_t seed = 0xc0115;

	for (it = 0; it < iters; it++) {
		struct mpq_queue *q = make_queue(16, 8, 0);
		struct shared *sh = shared_new();
		int victim = (int)(rnd(&seed) % 2), c, twice = 0, id;
		pid_t pids[2];
		uint32_t v;

		for (c = 0; c < 2; c++) {
			pids[c] = fork();
			if (pids[c] == 0)
				consume(q, sh);
		}
		for (v = 0; v < (uint32_t)n; v++) {
			ASSERT_EQ(0, mpq_queue_put(q, &v, sizeof(v), 10 * SEC));
			if (v == (uint32_t)(rnd(&seed) % n))
				kill(pids[victim], SIGKILL);
		}
		kill(pids[victim], SIGKILL);
		/* The survivor takes everything, the victim's last included. */
		for (c = 0; c < 4000 && !all_taken(sh, n); c++)
			sleep_ms(5);
		kill(pids[!victim], SIGKILL);
		wait_child(pids[!victim], 10000);
		wait_child(pids[victim], 10000);
		for (id = 0; id < n; id++) {
			ASSERT_LE(1, sh->count[id]) TH_LOG("id %d lost (it %d)", id, it);
			if (sh->count[id] > 1)
				twice++;
		}
		ASSERT_LE(twice, 1);
		mpq_queue_free(q);
		munmap(sh, sizeof(*sh));
	}
}

/*
 * One producer, one consumer (MPQ_QUEUE_F_ONE_PRODUCER / _CONSUMER): the
 * claims move tail and head with a plain store, and deaths are recovered
 * as in a queue of many: a producer or consumer SIGKILLed at a random
 * instant is replaced by another, one at a time.
 */
#define ONE_BY_ONE	(MPQ_QUEUE_F_ONE_PRODUCER | MPQ_QUEUE_F_ONE_CONSUMER)

TEST(the_only_producer_killed_inside_a_reservation_does_not_wedge)
{
	reserve_killed(_metadata, ONE_BY_ONE);
}

TEST(the_only_consumer_killed_inside_a_peek_loses_nothing)
{
	peek_killed(_metadata, ONE_BY_ONE);
}

TEST(one_producer_one_consumer_carry_every_message_in_order)
{
	struct mpq_queue *q = make_queue(16, 64, ONE_BY_ONE);
	uint32_t v, i, n = 200000;
	size_t len;
	pid_t pid;

	ASSERT_NE(NULL, q);
	pid = fork();
	if (pid == 0) {
		for (v = 0; v < n; v++)
			if (mpq_queue_put(q, &v, sizeof(v), 20 * SEC))
				_exit(1);
		_exit(0);
	}
	for (i = 0; i < n; i++) {
		len = sizeof(v);
		ASSERT_EQ(0, mpq_queue_get(q, &v, &len, 20 * SEC));
		ASSERT_EQ(i, v);
	}
	ASSERT_EQ(0, wait_child(pid, 10000));
	ASSERT_EQ(0, mpq_queue_qsize(q));
	mpq_queue_free(q);
}

/* One producer's life: ids base.. in order, noting each committed one. */
static void produce_alone(struct mpq_queue *q, struct shared *sh, int life,
			  uint32_t base, uint32_t n)
{
	uint32_t id;

	for (id = base; id < base + n; id++) {
		if (id % 3 == 1) {
			struct mpq_msg m = { 0 };

			if (mpq_queue_reserve(q, 4, &m, 20 * SEC))
				_exit(11);
			memcpy(m.data, &id, 4);
			if (mpq_queue_commit(q, &m, 4))
				_exit(12);
		} else if (id % 3 == 2) {
			struct iovec iov = { &id, sizeof(id) };

			if (mpq_queue_put_many(q, &iov, 1, 20 * SEC) != 1)
				_exit(13);
		} else if (mpq_queue_put(q, &id, sizeof(id), 20 * SEC)) {
			_exit(10);
		}
		__atomic_store_n(&sh->sent[life], id + 1, __ATOMIC_SEQ_CST);
	}
	_exit(0);
}

TEST(one_producer_at_a_time_killed_and_replaced_loses_nothing_committed)
{
	int iters = getenv("MPQ_IN_VM") ? 15 : 60, it, life, k;
	const uint32_t n = 1000, lives = 3;
	uint64_t seed = 0x5b5c;

	for (it = 0; it < iters; it++) {
		struct mpq_queue *q = make_queue(16, 8, ONE_BY_ONE);
		struct shared *sh = shared_new();
		int64_t last[3] = { -1, -1, -1 };
		uint32_t v, id;
		char buf[8];
		size_t len;
		pid_t pid;

		ASSERT_NE(NULL, q);
		for (life = 0; life < (int)lives; life++) {
			int dies = life < (int)lives - 1;

			sh->sent[life] = (uint64_t)life * n;
			pid = fork();
			if (pid == 0)
				produce_alone(q, sh, life, (uint32_t)life * n, n);
			/* Take some, kill it mid-stream, and only then the next. */
			for (k = (int)(rnd(&seed) % 300); dies && k > 0; k--) {
				len = sizeof(buf);
				if (mpq_queue_get(q, buf, &len, 10 * SEC))
					continue;
				memcpy(&v, buf, 4);
				ASSERT_LT(v, lives * n);
				sh->count[v]++;
				/* Each life's messages come in its order. */
				ASSERT_LT(last[v / n], (int64_t)v);
				last[v / n] = v;
			}
			if (dies)
				kill(pid, SIGKILL);
			while (child_running(pid) || mpq_queue_qsize(q) > 0) {
				len = sizeof(buf);
				if (mpq_queue_get(q, buf, &len,
						  20 * NSEC_PER_MSEC))
					continue;
				memcpy(&v, buf, 4);
				ASSERT_LT(v, lives * n);
				sh->count[v]++;
				ASSERT_LT(last[v / n], (int64_t)v);
				last[v / n] = v;
			}
			ASSERT_EQ(dies ? 128 + SIGKILL : 0, wait_child(pid, 10000));
		}
		/* A repair may free the last dead one's slot late. */
		len = sizeof(buf);
		while (mpq_queue_get(q, buf, &len, 20 * NSEC_PER_MSEC) == 0) {
			memcpy(&v, buf, 4);
			ASSERT_LT(v, lives * n);
			sh->count[v]++;
			len = sizeof(buf);
		}
		for (id = 0; id < lives * n; id++) {
			ASSERT_LE(sh->count[id], 1) TH_LOG("id %u taken twice", id);
			if (id < sh->sent[id / n])
				ASSERT_EQ(1, sh->count[id])
					TH_LOG("id %u lost (it %d)", id, it);
		}
		mpq_queue_free(q);
		munmap(sh, sizeof(*sh));
	}
}

/* One consumer's life: get and peek by turns, noting each id taken. */
static void consume_alone(struct mpq_queue *q, struct shared *sh)
{
	uint32_t turn = 0, v;
	char buf[8];
	size_t len;

	for (;; turn++) {
		struct mpq_msg m = { 0 };
		int r;

		if (turn % 2) {
			r = mpq_queue_peek(q, &m, 20 * SEC);
			if (r)
				_exit(r == -ETIMEDOUT ? 0 : 20);
			memcpy(&v, m.data, 4);
		} else {
			__atomic_store_n(&sh->in_get, 1, __ATOMIC_SEQ_CST);
			len = sizeof(buf);
			r = mpq_queue_get(q, buf, &len, 20 * SEC);
			if (r)
				_exit(r == -ETIMEDOUT ? 0 : 22);
			memcpy(&v, buf, 4);
		}
		if (v >= 4096)
			_exit(23);
		__atomic_add_fetch(&sh->count[v], 1, __ATOMIC_SEQ_CST);
		__atomic_store_n(&sh->in_get, 0, __ATOMIC_SEQ_CST);
		if (turn % 2 && mpq_queue_release(q, &m))
			_exit(21);
	}
}

/* Every id taken, but for those in gone[0..ngone), which may be lost. */
static int all_taken_but(struct shared *sh, int n, const uint32_t *gone,
			 int ngone)
{
	int id, k;

	for (id = 0; id < n; id++) {
		if (__atomic_load_n(&sh->count[id], __ATOMIC_SEQ_CST))
			continue;
		for (k = 0; k < ngone; k++)
			if ((uint32_t)id == gone[k])
				break;
		if (k == ngone)
			return 0;
	}
	return 1;
}

/*
 * A get frees the message's slot, then wakes a waiting producer (a
 * system call) and returns: a victim killed on its way back from that
 * wake-up had the message, and it goes with it (mpq_queue(3)). Only
 * that one may be missing: the id after the highest one counted when a
 * victim died inside a get, its next message in a queue it alone
 * consumed in order (what comes again out of order was counted before).
 */
static uint32_t next_after_counted(struct shared *sh, int n)
{
	int id;

	for (id = n - 1; id >= 0; id--)
		if (sh->count[id])
			break;
	return (uint32_t)(id + 1);
}

TEST(one_consumer_at_a_time_killed_and_replaced_delivers_every_message)
{
	int iters = getenv("MPQ_IN_VM") ? 15 : 60, n = 3000, it, kills, id;
	uint64_t seed = 0x5c5c;

	for (it = 0; it < iters; it++) {
		struct mpq_queue *q = make_queue(16, 8, ONE_BY_ONE);
		struct shared *sh = shared_new();
		int twice = 0, c, k;
		uint32_t v, at[2], gone[2] = { ~0U, ~0U };
		pid_t pid;

		ASSERT_NE(NULL, q);
		at[0] = (uint32_t)(rnd(&seed) % n);
		at[1] = (uint32_t)(rnd(&seed) % n);
		kills = 0;
		pid = fork();
		if (pid == 0)
			consume_alone(q, sh);
		for (v = 0; v < (uint32_t)n; v++) {
			ASSERT_EQ(0, mpq_queue_put(q, &v, sizeof(v), 10 * SEC));
			if (v != at[0] && v != at[1])
				continue;
			/* Dead and reaped before the next one starts. */
			kill(pid, SIGKILL);
			ASSERT_EQ(128 + SIGKILL, wait_child(pid, 10000));
			if (sh->in_get)
				gone[kills] = next_after_counted(sh, n);
			sh->in_get = 0;
			kills++;
			pid = fork();
			if (pid == 0)
				consume_alone(q, sh);
		}
		/*
		 * Not for what a victim may have taken with it: waiting 20 s
		 * for each of those made the test outlive its timeout. And
		 * not past 10 s, so that a lost one is reported as lost.
		 */
		for (c = 0; c < 2000 && !all_taken_but(sh, n, gone, kills); c++)
			sleep_ms(5);
		kill(pid, SIGKILL);
		wait_child(pid, 10000);
		for (id = 0; id < n; id++) {
			for (k = 0; k < kills && !sh->count[id]; k++)
				if ((uint32_t)id == gone[k])
					break;
			if (!sh->count[id])
				ASSERT_LT(k, kills)
					TH_LOG("id %d lost (it %d)", id, it);
			if (sh->count[id] > 1)
				twice++;
		}
		/* Only what a victim held when it died comes again. */
		ASSERT_LE(twice, kills);
		mpq_queue_free(q);
		munmap(sh, sizeof(*sh));
	}
}

/*
 * The only producer publishes its slot before it moves tail, and the only
 * consumer frees its slot before it moves head, with no record between
 * (the one-message path): killed there, either leaves its cursor one
 * behind. queue_deaths_test kills them at every instruction and drains
 * through the same handle; here that state is set by hand in a second
 * mapping, as a death leaves it, and every other reader meets it: qsize,
 * full, mpq_wait(), and with the module read(2), write(2) and poll().
 */
static int cursor_ready(struct mpq_queue *q, short ev)
{
	struct mpq_wait_item it = { .kind = MPQ_WAIT_QUEUE, .queue = q };
	struct pollfd p = { .fd = mpq_queue_fileno(q), .events = ev };

	if (mpq_queue_backend(q) == MPQ_BACKEND_KMOD)
		return poll(&p, 1, 0) == 1 && (p.revents & ev);
	/* memfd: mpq_wait() for a message; for room, full() says. */
	return ev == POLLIN ? mpq_wait(&it, 1, 0) == 1 : !mpq_queue_full(q);
}

static int cursor_get(struct mpq_queue *q, char *c)
{
	size_t len = 1;

	if (mpq_queue_backend(q) == MPQ_BACKEND_KMOD)
		return read(mpq_queue_fileno(q), c, 1) == 1 ? 0 : -errno;
	return mpq_queue_get(q, c, &len, 0);
}

static int cursor_put(struct mpq_queue *q, char c)
{
	if (mpq_queue_backend(q) == MPQ_BACKEND_KMOD)
		return write(mpq_queue_fileno(q), &c, 1) == 1 ? 0 : -errno;
	return mpq_queue_put(q, &c, 1, 0);
}

TEST(a_cursor_the_only_producer_or_consumer_left_behind_is_moved_on)
{
	struct mpq_queue *q = make_queue(4, 8, ONE_BY_ONE);
	struct mpq_queue_shm *shm;
	size_t size, len;
	char c, buf[8];
	int i;

	ASSERT_NE(NULL, q);
	shm = queue_map(q, &size);
	ASSERT_NE(NULL, shm);
	/* read(2) of an empty queue: -EAGAIN, not a wait. */
	if (mpq_queue_backend(q) == MPQ_BACKEND_KMOD)
		ASSERT_EQ(0, fcntl(mpq_queue_fileno(q), F_SETFL, O_NONBLOCK));

	/* Tail left behind over its published message "a". */
	ASSERT_EQ(0, mpq_queue_put(q, "a", 1, 0));
	shm->tail--;
	EXPECT_EQ(1, mpq_queue_qsize(q));
	EXPECT_EQ(0, mpq_queue_full(q));
	EXPECT_TRUE(cursor_ready(q, POLLOUT));
	EXPECT_TRUE(cursor_ready(q, POLLIN));
	ASSERT_EQ(0, cursor_put(q, 'b'));
	EXPECT_EQ(2, shm->tail);
	EXPECT_EQ(2, mpq_queue_qsize(q));
	/* ... and over a message already taken: "c" after "a" and "b". */
	ASSERT_EQ(0, cursor_get(q, &c));
	EXPECT_EQ('a', c);
	ASSERT_EQ(0, cursor_get(q, &c));
	EXPECT_EQ('b', c);
	ASSERT_EQ(0, mpq_queue_put(q, "c", 1, 0));
	len = sizeof(buf);
	ASSERT_EQ(0, mpq_queue_get(q, buf, &len, 0));
	shm->tail--;
	EXPECT_EQ(0, mpq_queue_qsize(q));
	EXPECT_TRUE(cursor_ready(q, POLLOUT));
	ASSERT_EQ(0, cursor_put(q, 'd'));
	EXPECT_EQ(4, shm->tail);
	ASSERT_EQ(0, cursor_get(q, &c));
	EXPECT_EQ('d', c);

	/* Head left behind over the slot it freed. */
	EXPECT_EQ(4, shm->head);
	shm->head--;
	EXPECT_EQ(0, mpq_queue_qsize(q));
	EXPECT_EQ(1, mpq_queue_empty(q));
	EXPECT_EQ(-EAGAIN, cursor_get(q, &c));
	ASSERT_EQ(0, mpq_queue_put(q, "e", 1, 0));
	EXPECT_TRUE(cursor_ready(q, POLLIN));
	ASSERT_EQ(0, cursor_get(q, &c));
	EXPECT_EQ('e', c);
	EXPECT_EQ(5, shm->head);
	/* ... and over the slot refilled a lap later: the ring is full. */
	shm->head--;
	for (i = 0; i < 4; i++)
		ASSERT_EQ(0, cursor_put(q, (char)('f' + i)));
	EXPECT_EQ(1, mpq_queue_full(q));
	EXPECT_EQ(4, mpq_queue_qsize(q));
	EXPECT_TRUE(cursor_ready(q, POLLIN));
	for (i = 0; i < 4; i++) {
		ASSERT_EQ(0, cursor_get(q, &c));
		EXPECT_EQ('f' + i, c);
	}
	EXPECT_EQ(-EAGAIN, cursor_get(q, &c));
	munmap(shm, size);
	mpq_queue_free(q);
}

/*
 * A consumer that never waits gets past a dead producer's claim, and gets
 * a dead consumer's message (in a queue otherwise empty, nothing at the
 * head shows it: before, only a waiting call delivered it).
 */
static void never_waiting_get_takes(struct __test_metadata *_metadata,
				    int dead_consumer)
{
	const char *msg = dead_consumer ? "held" : "after";
	struct mpq_queue *q = make_queue(8, 64, 0);
	struct shared *sh = shared_new();
	char buf[64];
	size_t len;
	pid_t pid;
	int i, r = -EAGAIN;

	ASSERT_NE(NULL, q);
	if (dead_consumer)
		ASSERT_EQ(0, mpq_queue_put(q, msg, strlen(msg), 0));
	pid = window_holder(q, sh, dead_consumer);
	ASSERT_LT(0, pid);
	if (!dead_consumer)
		ASSERT_EQ(0, mpq_queue_put(q, msg, strlen(msg), 0));
	kill(pid, SIGKILL);
	ASSERT_EQ(128 + SIGKILL, wait_child(pid, 10000));
	for (i = 0; i < 1000 && r == -EAGAIN; i++) {
		len = sizeof(buf);
		r = mpq_queue_get_nowait(q, buf, &len);
		if (r == -EAGAIN)
			sleep_ms(1);
	}
	ASSERT_EQ(0, r);
	ASSERT_EQ(strlen(msg), len);
	ASSERT_EQ(0, memcmp(buf, msg, len));
	mpq_queue_free(q);
	munmap(sh, sizeof(*sh));
}

TEST(a_consumer_that_never_waits_gets_past_a_dead_producer)
{
	never_waiting_get_takes(_metadata, 0);
}

TEST(a_consumer_that_never_waits_gets_a_dead_consumers_message)
{
	never_waiting_get_takes(_metadata, 1);
}

/*
 * The same with a consumer that only peeks: it once looked only for dead
 * consumers' messages, and waited for good behind a dead producer's
 * claim when no other producer came.
 */
TEST(a_consumer_that_only_peeks_gets_past_a_dead_producer)
{
	struct mpq_queue *q = make_queue(8, 64, 0);
	struct shared *sh = shared_new();
	struct mpq_msg m = { 0 };
	pid_t pid;

	ASSERT_NE(NULL, q);
	pid = window_holder(q, sh, 0);
	ASSERT_LT(0, pid);
	ASSERT_EQ(0, mpq_queue_put(q, "after", 5, 0));
	kill(pid, SIGKILL);
	ASSERT_EQ(128 + SIGKILL, wait_child(pid, 10000));
	ASSERT_EQ(0, mpq_queue_peek(q, &m, 5 * SEC));
	ASSERT_EQ(5, m.len);
	ASSERT_EQ(0, memcmp(m.data, "after", 5));
	ASSERT_EQ(0, mpq_queue_release(q, &m));
	ASSERT_EQ(-EAGAIN, mpq_queue_peek(q, &m, 0));
	mpq_queue_free(q);
	munmap(sh, sizeof(*sh));
}

TEST(full_means_a_put_would_wait_even_behind_a_peek)
{
	struct mpq_queue *q = make_queue(2, 8, 0);
	struct mpq_msg m = { 0 };

	ASSERT_EQ(0, mpq_queue_put(q, "a", 1, 0));
	ASSERT_EQ(0, mpq_queue_full(q));
	ASSERT_EQ(0, mpq_queue_put(q, "b", 1, 0));
	ASSERT_EQ(1, mpq_queue_full(q));
	ASSERT_EQ(0, mpq_queue_peek(q, &m, 0));
	/* a's slot is still held by the window: no room yet. */
	ASSERT_EQ(1, mpq_queue_full(q));
	ASSERT_EQ(-EAGAIN, mpq_queue_put(q, "c", 1, 0));
	ASSERT_EQ(0, mpq_queue_release(q, &m));
	ASSERT_EQ(0, mpq_queue_full(q));
	ASSERT_EQ(0, mpq_queue_put(q, "c", 1, 0));
	mpq_queue_free(q);
}

/* Records held in q's shared memory: words with a TID. */
static int records_held(struct mpq_queue *q)
{
	size_t size;
	unsigned char *map = queue_map(q, &size);
	int i, n = 0;

	for (i = 0; i < MPQ_QUEUE_NREC; i++) {
		struct mpq_queue_rec *r = (void *)(map + MPQ_QUEUE_REC_OFF) + i * 128;

		if (__atomic_load_n(&r->word, __ATOMIC_ACQUIRE) & 0x3fffffff)
			n++;
	}
	munmap(map, size);
	return n;
}

TEST(a_thread_going_back_and_forth_between_queues_keeps_one_record_each)
{
	struct mpq_queue *qs[10];
	char buf[8];
	size_t len;
	int i, k;

	/* Handles 1 and 9 share a place in the thread's cache of records. */
	for (i = 0; i < 10; i++)
		ASSERT_NE(NULL, qs[i] = make_queue(8, 8, 0));
	for (k = 0; k < 200; k++) {
		for (i = 0; i < 10; i++) {
			ASSERT_EQ(0, mpq_queue_put(qs[i], "x", 1, 0));
			len = sizeof(buf);
			ASSERT_EQ(0, mpq_queue_get(qs[i], buf, &len, 0));
		}
	}
	for (i = 0; i < 10; i++) {
		ASSERT_LE(records_held(qs[i]), 1);
		mpq_queue_free(qs[i]);
	}
}

/* --- JoinableQueue, close, qsize --------------------------------------- */

TEST(joinable_counts_tasks_until_done)
{
	struct mpq_queue *q = make_queue(8, 16, MPQ_QUEUE_F_JOINABLE);
	char buf[16];
	size_t len;
	pid_t pid;

	ASSERT_EQ(0, mpq_queue_unfinished(q));
	ASSERT_EQ(0, mpq_queue_join(q, 0));
	ASSERT_EQ(-EINVAL, mpq_queue_task_done(q));
	ASSERT_EQ(0, mpq_queue_put(q, "a", 1, 0));
	ASSERT_EQ(0, mpq_queue_put(q, "b", 1, 0));
	ASSERT_EQ(2, mpq_queue_unfinished(q));
	ASSERT_EQ(-EAGAIN, mpq_queue_join(q, 0));
	ASSERT_EQ(-ETIMEDOUT, mpq_queue_join(q, 10 * NSEC_PER_MSEC));
	pid = fork();
	if (pid == 0) {
		int i;

		sleep_ms(50);
		for (i = 0; i < 2; i++) {
			len = sizeof(buf);
			if (mpq_queue_get(q, buf, &len, SEC) ||
			    mpq_queue_task_done(q))
				_exit(1);
		}
		_exit(0);
	}
	ASSERT_EQ(0, mpq_queue_join(q, 10 * SEC));
	ASSERT_EQ(0, mpq_queue_unfinished(q));
	ASSERT_EQ(0, wait_child(pid, 10000));
	ASSERT_EQ(-EINVAL, mpq_queue_task_done(q));
	mpq_queue_free(q);
}

TEST(joinable_counts_zero_copy_and_batches_too)
{
	struct mpq_queue *q = NULL;
	struct iovec iov[3] = { { "1", 1 }, { "2", 1 }, { "3", 1 } };
	struct mpq_msg m = { 0 };

	ASSERT_EQ(0, mpq_joinable_queue_new(&q, NULL));
	ASSERT_EQ(3, mpq_queue_put_many(q, iov, 3, 0));
	ASSERT_EQ(0, mpq_queue_reserve(q, 1, &m, 0));
	ASSERT_EQ(3, mpq_queue_unfinished(q));
	ASSERT_EQ(0, mpq_queue_commit(q, &m, 1));
	ASSERT_EQ(4, mpq_queue_unfinished(q));
	ASSERT_EQ(0, mpq_queue_reserve(q, 1, &m, 0));
	ASSERT_EQ(0, mpq_queue_cancel(q, &m));
	ASSERT_EQ(4, mpq_queue_unfinished(q));
	mpq_queue_free(q);
}

TEST(task_done_and_join_need_a_joinable_queue)
{
	struct mpq_queue *q = make_queue(8, 16, 0);

	ASSERT_EQ(-EINVAL, mpq_queue_task_done(q));
	ASSERT_EQ(-EINVAL, mpq_queue_join(q, 0));
	ASSERT_EQ(-EINVAL, mpq_queue_unfinished(q));
	mpq_queue_free(q);
}

TEST(close_stops_this_handle_only)
{
	char handle[MPQ_HANDLE_MAX], buf[16];
	struct mpq_queue *q = make_queue(8, 16, 0), *other;
	struct mpq_msg m = { 0 };
	size_t len = sizeof(buf);

	ASSERT_LT(0, mpq_queue_export(q, handle, sizeof(handle)));
	ASSERT_EQ(0, mpq_queue_import(&other, handle));
	ASSERT_EQ(-EINVAL, mpq_queue_join_thread(q));
	ASSERT_EQ(0, mpq_queue_close(q));
	ASSERT_EQ(-EBADF, mpq_queue_put(q, "x", 1, 0));
	ASSERT_EQ(-EBADF, mpq_queue_get(q, buf, &len, 0));
	ASSERT_EQ(-EBADF, mpq_queue_reserve(q, 1, &m, 0));
	ASSERT_EQ(-EBADF, mpq_queue_peek(q, &m, 0));
	ASSERT_EQ(0, mpq_queue_join_thread(q));
	ASSERT_EQ(0, mpq_queue_cancel_join_thread(q));
	ASSERT_EQ(0, mpq_queue_put(other, "y", 1, 0));
	ASSERT_EQ(0, mpq_queue_get(other, buf, &len, 0));
	mpq_queue_free(other);
	mpq_queue_free(q);
}

TEST(simple_queue_is_a_queue)
{
	struct mpq_queue *q;
	char buf[8];
	size_t len = sizeof(buf);

	ASSERT_EQ(0, mpq_simple_queue_new(&q, NULL));
	ASSERT_EQ(1, mpq_queue_empty(q));
	ASSERT_EQ(0, mpq_queue_put(q, "s", 1, MPQ_FOREVER));
	ASSERT_EQ(0, mpq_queue_empty(q));
	ASSERT_EQ(0, mpq_queue_get(q, buf, &len, MPQ_FOREVER));
	ASSERT_EQ(0, mpq_queue_close(q));
	mpq_queue_free(q);
}

TEST(qsize_counts_only_committed_messages)
{
	struct mpq_queue *q = make_queue(8, 16, 0);
	struct mpq_msg m = { 0 }, c = { 0 };
	int i;

	for (i = 0; i < 3; i++)
		ASSERT_EQ(0, mpq_queue_put(q, "x", 1, 0));
	ASSERT_EQ(0, mpq_queue_reserve(q, 1, &m, 0));	/* in progress */
	ASSERT_EQ(0, mpq_queue_reserve(q, 1, &c, 0));
	ASSERT_EQ(0, mpq_queue_cancel(q, &c));		/* dropped */
	ASSERT_EQ(3, mpq_queue_qsize(q));
	ASSERT_EQ(0, mpq_queue_full(q));
	ASSERT_EQ(0, mpq_queue_commit(q, &m, 1));
	ASSERT_EQ(4, mpq_queue_qsize(q));
	for (i = 0; i < 3; i++)
		ASSERT_EQ(0, mpq_queue_put(q, "x", 1, 0));
	ASSERT_EQ(1, mpq_queue_full(q));
	ASSERT_EQ(7, mpq_queue_qsize(q));
	mpq_queue_free(q);
}

TEST_HARNESS_MAIN
