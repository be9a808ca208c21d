// SPDX-License-Identifier: GPL-2.0
/*
 * A JoinableQueue's count of unfinished tasks survives deaths (issue 12):
 * whoever dies, and wherever, the count is the messages that were
 * committed and not yet task_done'd, so join() returns once they are all
 * done and never waits for ever. On the backend the environment selects
 * (memfd natively, kmod in the VM).
 */
#include <stdio.h>

#include "kselftest_harness.h"
#include "helpers.h"

#define SEC		NSEC_PER_SEC
#define RING		1024	/* an unbounded queue's ring (lib/queue.c) */
#define PRODUCERS	48	/* killed per round */
#define PER_PRODUCER	4096	/* ids a producer may put */

/* Minutes under TCG or ASan. */
FIXTURE(slow) {};
FIXTURE_SETUP(slow) {}
FIXTURE_TEARDOWN(slow) {}

struct counts {
	uint64_t sent[PRODUCERS];	/* ids put and returned, per producer */
	uint8_t seen[PRODUCERS][PER_PRODUCER];
};

/* Put ids p:0, p:1, ... and note each one once the put returned. */
static void produce(struct mpq_queue *q, struct counts *c, int p)
{
	uint32_t i;

	for (i = 0; i < PER_PRODUCER; i++) {
		uint32_t v[2] = { (uint32_t)p, i };

		if (mpq_queue_put(q, v, sizeof(v), 20 * SEC))
			_exit(10);
		__atomic_store_n(&c->sent[p], i + 1, __ATOMIC_SEQ_CST);
	}
	_exit(0);
}

/*
 * The ring is filled first and nobody takes anything until every
 * producer is dead, so every producer's put goes into the overflow; each
 * producer is SIGKILLed at a random instant. Then everything is taken and
 * task_done'd: the count must be 0 and join return.
 */
TEST_F_TIMEOUT(slow, sigkill_of_producers_putting_into_the_overflow_keeps_the_count, 600)
{
	int rounds = getenv("MPQ_IN_VM") ? 8 : 30, round, bad = 0;
	uint64_t seed = 0x10b1ab1e;

	for (round = 0; round < rounds; round++) {
		struct mpq_queue_attr attr = { .maxsize = 0, .msgsize = 8,
			.flags = MPQ_QUEUE_F_JOINABLE };
		struct counts *c = shared_alloc(sizeof(*c));
		struct mpq_queue *q = NULL;
		uint64_t committed = RING, taken = 0;
		uint32_t v[2], i;
		int p, left;
		size_t len;

		ASSERT_NE(NULL, c);
		ASSERT_EQ(0, mpq_queue_new(&q, &attr));
		for (i = 0; i < RING; i++) {
			v[0] = UINT32_MAX;
			v[1] = i;
			ASSERT_EQ(0, mpq_queue_put_nowait(q, v, sizeof(v)));
		}
		for (p = 0; p < PRODUCERS; p++) {
			pid_t pid = fork();
			int st;

			ASSERT_LE(0, pid);
			if (pid == 0)
				produce(q, c, p);
			/* A random instant within its first ~thousand puts. */
			usleep((useconds_t)(rnd(&seed) % 400));
			kill(pid, SIGKILL);
			st = wait_child(pid, 20000);
			ASSERT_TRUE(st == 128 + SIGKILL || st == 0)
				TH_LOG("producer exited %d", st);
			committed += c->sent[p];
		}
		/* Take everything, and finish each one. */
		for (;;) {
			len = sizeof(v);
			if (mpq_queue_get(q, v, &len, 200 * NSEC_PER_MSEC))
				break;
			ASSERT_EQ(sizeof(v), len);
			if (v[0] != UINT32_MAX) {
				ASSERT_LT(v[0], PRODUCERS);
				ASSERT_LT(v[1], PER_PRODUCER);
				ASSERT_EQ(0, c->seen[v[0]][v[1]])
					TH_LOG("%u:%u taken twice", v[0], v[1]);
				c->seen[v[0]][v[1]] = 1;
			}
			taken++;
			ASSERT_EQ(0, mpq_queue_task_done(q));
		}
		/* Nothing committed lost (the last put of each may be in). */
		ASSERT_LE(committed, taken);
		ASSERT_GE(committed + PRODUCERS, taken);
		/* Braced: the harness's log and bail follow the assert. */
		for (p = 0; p < PRODUCERS; p++) {
			for (i = 0; i < c->sent[p]; i++) {
				ASSERT_EQ(1, c->seen[p][i])
					TH_LOG("%d:%u lost", p, i);
			}
		}
		left = mpq_queue_unfinished(q);
		if (left)
			bad++;
		EXPECT_EQ(0, left)
			TH_LOG("round %d: %d unfinished after every message was done (%llu taken)",
			       round, left, (unsigned long long)taken);
		EXPECT_EQ(0, mpq_queue_join(q, 1 * SEC));
		mpq_queue_free(q);
		munmap(c, sizeof(*c));
	}
	TH_LOG("%d of %d rounds left the count wrong", bad, rounds);
}

/*
 * Tasks waiting in the overflow are unfinished too: counted by
 * unfinished(), and join() waits for them to be taken and done by a
 * consumer that starts after the join.
 */
TEST(tasks_in_the_overflow_count_until_done)
{
	struct mpq_queue_attr attr = { .maxsize = 0, .msgsize = 8,
		.flags = MPQ_QUEUE_F_JOINABLE };
	struct mpq_queue *q = NULL;
	uint32_t i, n = 3 * RING;
	uint64_t v;
	size_t len;
	pid_t pid;

	ASSERT_EQ(0, mpq_queue_new(&q, &attr));
	for (i = 0; i < n; i++) {
		v = i;
		ASSERT_EQ(0, mpq_queue_put_nowait(q, &v, sizeof(v)));
	}
	ASSERT_EQ((int)n, mpq_queue_unfinished(q));
	/* The ring's done: what is left waits in the overflow. */
	for (i = 0; i < RING; i++) {
		len = sizeof(v);
		ASSERT_EQ(0, mpq_queue_get(q, &v, &len, 0));
		ASSERT_EQ(i, v);
		ASSERT_EQ(0, mpq_queue_task_done(q));
	}
	ASSERT_EQ((int)(n - RING), mpq_queue_unfinished(q));
	ASSERT_EQ(-EAGAIN, mpq_queue_join(q, 0));
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		sleep_ms(100);
		for (i = RING; i < n; i++) {
			len = sizeof(v);
			if (mpq_queue_get(q, &v, &len, 10 * SEC) || v != i ||
			    mpq_queue_task_done(q))
				_exit(1);
		}
		_exit(0);
	}
	ASSERT_EQ(0, mpq_queue_join(q, 60 * SEC));
	ASSERT_EQ(0, mpq_queue_unfinished(q));
	ASSERT_EQ(-EINVAL, mpq_queue_task_done(q));
	ASSERT_EQ(0, wait_child(pid, 20000));
	mpq_queue_free(q);
}

TEST_HARNESS_MAIN
