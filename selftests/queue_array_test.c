// SPDX-License-Identifier: GPL-2.0
/*
 * mpq_queue_put_array and mpq_queue_get_array, and the runs they make on
 * a queue with one producer and one consumer (lib/run.c, struct
 * mpq_slot_run): order, every way of taking a run apart, maxsize counted
 * in messages, lengths, JoinableQueue counts, and processes killed at
 * random points while they put and take runs. On the backend the
 * environment selects (memfd natively, kmod in the VM).
 */
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "kselftest_harness.h"
#include "helpers.h"

#define SPSC	(MPQ_QUEUE_F_ONE_PRODUCER | MPQ_QUEUE_F_ONE_CONSUMER)

/* The len of the slot at head: is a run there? */
static uint32_t head_len(struct mpq_queue *q)
{
	size_t size;
	struct mpq_queue_shm *shm = queue_map(q, &size);
	struct mpq_slot *s;
	uint32_t len;

	if (!shm)
		return 0;
	s = (struct mpq_slot *)((unsigned char *)shm + shm->data_off +
				(shm->head & (shm->capacity - 1)) *
				shm->slot_size);
	len = s->len;
	munmap(shm, size);
	return len;
}

/*
 * Values in order through put_array and get_array in batches of odd
 * sizes, over many laps of the ring (runs end at the ring's end and go
 * on from its start), on a plain queue (a slot per message) and on one
 * with one producer and one consumer (runs).
 */
TEST(arrays_keep_order_across_laps_on_both_kinds_of_queue)
{
	static const uint32_t flags[] = { 0, SPSC };
	static uint64_t in[5000], out[300];
	unsigned int f, i, put, got;

	for (i = 0; i < 5000; i++)
		in[i] = i * 0x9e3779b97f4a7c15ULL;
	for (f = 0; f < 2; f++) {
		struct mpq_queue *q = make_queue(64, 8, flags[f]);

		ASSERT_NE(NULL, q);
		for (put = got = 0; got < 5000;) {
			int r;

			if (put < 5000) {
				unsigned int n = 1 + (put * 7) % 97;

				if (n > 5000 - put)
					n = 5000 - put;
				r = mpq_queue_put_array(q, in + put, 8, n, 0);
				ASSERT_TRUE(r > 0 || r == -EAGAIN);
				if (r > 0)
					put += (unsigned int)r;
			}
			r = mpq_queue_get_array(q, out, 8,
						1 + (got * 5) % 41, 0);
			ASSERT_TRUE(r > 0 || r == -EAGAIN);
			for (i = 0; r > 0 && i < (unsigned int)r; i++)
				ASSERT_EQ(in[got + i], out[i]);
			if (r > 0)
				got += (unsigned int)r;
		}
		ASSERT_EQ(0, mpq_queue_qsize(q));
		mpq_queue_free(q);
	}
}

/*
 * A put_array of small messages on a queue with one producer and one
 * consumer is one run; it comes apart by every kind of take in turn
 * (get, get_many, get_array, peek and release), each message once, in
 * order, and qsize counts what is left of it.
 */
TEST(a_run_comes_apart_by_every_kind_of_take)
{
	uint64_t in[40], out[40], v;
	struct mpq_queue *q = make_queue(256, 8, SPSC);
	struct iovec iov[3];
	struct mpq_msg m = { 0 };
	unsigned int i, next = 0;
	size_t len;

	ASSERT_NE(NULL, q);
	for (i = 0; i < 40; i++)
		in[i] = 1000 + i;
	ASSERT_EQ(40, mpq_queue_put_array(q, in, 8, 40, 0));
	ASSERT_EQ(MPQ_SLOT_RUN, head_len(q));
	ASSERT_EQ(40, mpq_queue_qsize(q));

	len = sizeof(v);
	ASSERT_EQ(0, mpq_queue_get(q, &v, &len, 0));
	ASSERT_EQ(8, len);
	ASSERT_EQ(in[next++], v);
	for (i = 0; i < 3; i++) {
		iov[i].iov_base = &out[i];
		iov[i].iov_len = 8;
	}
	ASSERT_EQ(3, mpq_queue_get_many(q, iov, 3, 0));
	for (i = 0; i < 3; i++)
		ASSERT_EQ(in[next++], out[i]);
	ASSERT_EQ(5, mpq_queue_get_array(q, out, 8, 5, 0));
	for (i = 0; i < 5; i++)
		ASSERT_EQ(in[next++], out[i]);
	ASSERT_EQ(0, mpq_queue_peek(q, &m, 0));
	ASSERT_EQ(8, m.len);
	memcpy(&v, m.data, 8);
	ASSERT_EQ(in[next], v);
	ASSERT_EQ(0, mpq_queue_release(q, &m));
	next++;
	ASSERT_EQ(30, mpq_queue_qsize(q));
	/* More than is left: the rest of the run, and no more. */
	ASSERT_EQ(30, mpq_queue_get_array(q, out, 8, 40, 0));
	for (i = 0; i < 30; i++)
		ASSERT_EQ(in[next++], out[i]);
	ASSERT_EQ(0, mpq_queue_qsize(q));
	ASSERT_EQ(-EAGAIN, mpq_queue_get_array(q, out, 8, 1, 0));
	/* Spent and freed: the ring takes a run again, from its head. */
	ASSERT_EQ(40, mpq_queue_put_array(q, in, 8, 40, 0));
	ASSERT_EQ(40, mpq_queue_get_array(q, out, 8, 40, 0));
	ASSERT_EQ(0, memcmp(in, out, sizeof(in)));
	mpq_queue_free(q);
}

/*
 * maxsize counts messages, not the slots a run takes: a put_array fills
 * the queue to exactly maxsize, a put then waits; one message taken from
 * the run makes room for exactly one more.
 */
TEST(maxsize_counts_the_messages_of_runs_exactly)
{
	static uint64_t in[300], out[300];
	struct mpq_queue *q = make_queue(100, 8, SPSC);
	uint64_t v = 7;
	size_t len;
	int n;

	ASSERT_NE(NULL, q);
	for (n = 0; n < 300; n++)
		in[n] = (uint64_t)n;
	n = mpq_queue_put_array(q, in, 8, 300, 0);
	ASSERT_EQ(100, n);
	ASSERT_EQ(100, mpq_queue_qsize(q));
	ASSERT_EQ(1, mpq_queue_full(q));
	ASSERT_EQ(-EAGAIN, mpq_queue_put(q, &v, 8, 0));
	ASSERT_EQ(-EAGAIN, mpq_queue_put_array(q, in, 8, 2, 0));
	ASSERT_EQ(-ETIMEDOUT, mpq_queue_put_array(q, in, 8, 2,
						  NSEC_PER_MSEC));
	len = sizeof(v);
	ASSERT_EQ(0, mpq_queue_get(q, &v, &len, 0));
	ASSERT_EQ(0, v);
	ASSERT_EQ(0, mpq_queue_full(q));
	ASSERT_EQ(1, mpq_queue_put_array(q, in + 100, 8, 2, 0));
	ASSERT_EQ(100, mpq_queue_qsize(q));
	ASSERT_EQ(-EAGAIN, mpq_queue_put(q, &v, 8, 0));
	ASSERT_EQ(100, mpq_queue_get_array(q, out, 8, 300, 0));
	ASSERT_EQ(0, memcmp(in + 1, out, 100 * 8));
	/* Empty again: plain puts fill it to maxsize, not one more. */
	for (n = 0; n < 100; n++)
		ASSERT_EQ(0, mpq_queue_put(q, &v, 8, 0));
	ASSERT_EQ(-EAGAIN, mpq_queue_put(q, &v, 8, 0));
	mpq_queue_free(q);
}

/*
 * get_array takes only messages of the size it asks for: one of another
 * length ends the array and stays, -EMSGSIZE when it is the first; a
 * plain get takes it.
 */
TEST(get_array_stops_at_a_message_of_another_length)
{
	static const uint32_t flags[] = { 0, SPSC };
	uint64_t in[3] = { 1, 2, 3 }, out[10];
	unsigned int f;
	char buf[16];
	size_t len;

	for (f = 0; f < 2; f++) {
		struct mpq_queue *q = make_queue(16, 16, flags[f]);

		ASSERT_NE(NULL, q);
		ASSERT_EQ(3, mpq_queue_put_array(q, in, 8, 3, 0));
		ASSERT_EQ(0, mpq_queue_put(q, "four", 4, 0));
		ASSERT_EQ(3, mpq_queue_put_array(q, in, 8, 3, 0));
		ASSERT_EQ(3, mpq_queue_get_array(q, out, 8, 10, 0));
		ASSERT_EQ(0, memcmp(in, out, sizeof(in)));
		ASSERT_EQ(-EMSGSIZE, mpq_queue_get_array(q, out, 8, 10, 0));
		ASSERT_EQ(-EMSGSIZE, mpq_queue_get_array(q, out, 2, 10, 0));
		len = sizeof(buf);
		ASSERT_EQ(0, mpq_queue_get(q, buf, &len, 0));
		ASSERT_EQ(4, len);
		ASSERT_EQ(0, memcmp(buf, "four", 4));
		/* A run of another size: the same. */
		ASSERT_EQ(-EMSGSIZE, mpq_queue_get_array(q, out, 4, 10, 0));
		ASSERT_EQ(3, mpq_queue_get_array(q, out, 8, 10, 0));
		ASSERT_EQ(0, memcmp(in, out, sizeof(in)));
		mpq_queue_free(q);
	}
}

/* A JoinableQueue counts each message of a run as a task. */
TEST(a_joinable_queue_counts_each_message_of_a_run)
{
	struct mpq_queue_attr attr = { .maxsize = 64, .msgsize = 8,
				       .flags = SPSC };
	uint64_t in[50] = { 0 }, out[50];
	struct mpq_queue *q;
	int i;

	ASSERT_EQ(0, mpq_joinable_queue_new(&q, &attr));
	ASSERT_EQ(50, mpq_queue_put_array(q, in, 8, 50, 0));
	ASSERT_EQ(50, mpq_queue_unfinished(q));
	ASSERT_EQ(50, mpq_queue_get_array(q, out, 8, 50, 0));
	for (i = 0; i < 49; i++)
		ASSERT_EQ(0, mpq_queue_task_done(q));
	ASSERT_EQ(-ETIMEDOUT, mpq_queue_join(q, NSEC_PER_MSEC));
	ASSERT_EQ(0, mpq_queue_task_done(q));
	ASSERT_EQ(0, mpq_queue_join(q, 0));
	mpq_queue_free(q);
}

TEST(bad_array_arguments_are_einval)
{
	struct mpq_queue *q = make_queue(8, 8, SPSC);
	uint64_t v[2] = { 0 };

	ASSERT_NE(NULL, q);
	EXPECT_EQ(-EINVAL, mpq_queue_put_array(NULL, v, 8, 1, 0));
	EXPECT_EQ(-EINVAL, mpq_queue_put_array(q, NULL, 8, 1, 0));
	EXPECT_EQ(-EINVAL, mpq_queue_put_array(q, v, 8, 0, 0));
	EXPECT_EQ(-EINVAL, mpq_queue_get_array(NULL, v, 8, 1, 0));
	EXPECT_EQ(-EINVAL, mpq_queue_get_array(q, NULL, 8, 1, 0));
	EXPECT_EQ(-EINVAL, mpq_queue_get_array(q, v, 8, 0, 0));
	/* Larger than a slot: out of line, one per call. */
	EXPECT_EQ(1, mpq_queue_put_array(q, "0123456789abcdef", 16, 1, 0));
	mpq_queue_free(q);
}

/*
 * A dead producer's stale intent (a record that named positions, died,
 * and never claimed them) can name slots that a run later covers, whose
 * headers are then payload. A repairer must not take payload that
 * happens to read like a free slot's seq for a slot left stuck, and
 * publish it dropped over the run's messages: here each covered slot's
 * "seq" is its own position, a record dead with such an intent waits in
 * the queue, and a put that waits (the queue full) cleans up after the
 * dead. The run comes out intact.
 */
TEST(a_stale_intent_over_a_run_leaves_its_messages_alone)
{
	struct mpq_queue *q = make_queue(16, 8, SPSC);
	uint64_t in[16], out[16], v = 1;
	struct mpq_queue_shm *shm;
	struct mpq_queue_rec *r;
	uint32_t k;
	size_t size;
	int i;

	ASSERT_NE(NULL, q);
	/* 24-byte slots: covered slot i's header is message 3 (i - 1). */
	for (i = 0; i < 16; i++)
		in[i] = 0xabcd000000000000ULL | (uint64_t)(i * 977);
	for (i = 0; i < 16; i += 3)
		in[i] = 0xabcd000000000000ULL | (uint32_t)(i / 3 + 1);
	ASSERT_EQ(16, mpq_queue_put_array(q, in, 8, 16, 0));
	shm = queue_map(q, &size);
	ASSERT_NE(NULL, shm);
	ASSERT_EQ(24, shm->slot_size);
	ASSERT_EQ(0, shm->head);
	k = (uint32_t)shm->tail;
	ASSERT_EQ(7, k);
	/* The last record: dead, its intent the run's covered slots. */
	r = (struct mpq_queue_rec *)((unsigned char *)shm + MPQ_QUEUE_REC_OFF +
				     128 * (MPQ_QUEUE_NREC - 1));
	r->op = MPQ_REC_PUT;
	r->pos = 1;
	r->n = k - 1;
	__atomic_store_n(&r->word, 0x40000000U, __ATOMIC_RELEASE);
	/* Full (16 messages): the put waits, and repairs first. */
	ASSERT_EQ(-ETIMEDOUT, mpq_queue_put(q, &v, 8, NSEC_PER_MSEC));
	ASSERT_EQ(16, mpq_queue_get_array(q, out, 8, 16, 0));
	for (i = 0; i < 16; i++)
		ASSERT_EQ(in[i], out[i]);
	munmap(shm, size);
	mpq_queue_free(q);
}

/*
 * A consumer killed between a run's free and its sum leaves runs_put
 * ahead of runs_freed: the bound then counts more than there is, and the
 * one-message put of the one producer takes the general path. The first
 * put that finds the ring empty makes them equal again: the bound is
 * exact after it, and runs_out clear.
 */
TEST(run_sums_a_death_left_apart_heal_on_an_empty_ring)
{
	struct mpq_queue *q = make_queue(16, 8, SPSC);
	uint64_t in[16] = { 0 }, v = 0;
	struct mpq_queue_shm *shm;
	size_t size;
	int i;

	ASSERT_NE(NULL, q);
	ASSERT_EQ(16, mpq_queue_put_array(q, in, 8, 16, 0));
	ASSERT_EQ(16, mpq_queue_get_array(q, in, 8, 16, 0));
	shm = queue_map(q, &size);
	ASSERT_NE(NULL, shm);
	ASSERT_EQ(shm->runs_freed, shm->runs_put);
	ASSERT_NE(0, shm->runs_put);
	/* As a consumer killed after the free, before its sum, leaves it. */
	shm->runs_put += 1;
	shm->runs_out = 1;
	ASSERT_EQ(0, mpq_queue_put(q, &v, 8, 0));
	EXPECT_EQ(shm->runs_freed, shm->runs_put);
	EXPECT_EQ(0, shm->runs_out);
	for (i = 1; i < 16; i++)
		ASSERT_EQ(0, mpq_queue_put(q, &v, 8, 0));
	ASSERT_EQ(-EAGAIN, mpq_queue_put(q, &v, 8, 0));
	ASSERT_EQ(16, mpq_queue_qsize(q));
	munmap(shm, size);
	mpq_queue_free(q);
}

/*
 * A producer of runs SIGKILLed at random points, many times, each time
 * followed by a new producer (the one before is dead: one at a time):
 * every message the consumer gets is whole and comes once, in order;
 * none is lost but those of the put the kill cut short; the queue never
 * wedges. Messages carry their sequence number and its complement.
 */
struct rec {
	uint64_t seq, check;
};

static int producer(struct mpq_queue *q, uint64_t *next)
{
	struct rec batch[64];
	unsigned int i, n;

	for (;;) {
		uint64_t s = __atomic_load_n(next, __ATOMIC_ACQUIRE);
		int r;

		n = 1 + (unsigned int)(s % 64);
		for (i = 0; i < n; i++) {
			batch[i].seq = s + i;
			batch[i].check = ~(s + i);
		}
		r = mpq_queue_put_array(q, batch, sizeof(batch[0]), n,
					MPQ_FOREVER);
		if (r <= 0)
			_exit(10);
		/* Put: the next producer starts after them. */
		__atomic_store_n(next, s + (unsigned int)r, __ATOMIC_RELEASE);
	}
}

TEST(killed_producers_of_runs_lose_and_repeat_nothing)
{
	struct mpq_queue *q = make_queue(512, 16, SPSC);
	uint64_t *next = shared_alloc(sizeof(*next)), expect = 0;
	uint64_t seed = 0x5eed;
	struct rec out[128];
	int round, r, i;

	ASSERT_NE(NULL, q);
	ASSERT_NE(NULL, next);
	for (round = 0; round < 60; round++) {
		pid_t pid = fork();

		ASSERT_LE(0, pid);
		if (pid == 0)
			producer(q, next);
		/* Take some while it puts, then kill it anywhere. */
		for (i = 0; i < (int)(rnd(&seed) % 20); i++) {
			r = mpq_queue_get_array(q, out, sizeof(out[0]), 128,
						NSEC_PER_MSEC);
			ASSERT_TRUE(r > 0 || r == -ETIMEDOUT);
			for (int j = 0; j < r; j++) {
				ASSERT_EQ(~out[j].seq, out[j].check);
				ASSERT_EQ(expect, out[j].seq);
				expect++;
			}
		}
		usleep((useconds_t)(rnd(&seed) % 300));
		kill(pid, SIGKILL);
		ASSERT_EQ(pid, waitpid(pid, NULL, 0));
		/*
		 * Drain: what the killed put published comes out; a put it
		 * did not finish is dropped, so the next producer's first
		 * sequence number may be past what we saw last.
		 */
		for (;;) {
			r = mpq_queue_get_array(q, out, sizeof(out[0]), 128,
						NSEC_PER_MSEC);
			if (r == -ETIMEDOUT)
				break;
			ASSERT_LT(0, r);
			for (int j = 0; j < r; j++) {
				ASSERT_EQ(~out[j].seq, out[j].check);
				ASSERT_EQ(expect, out[j].seq);
				expect++;
			}
		}
		/* A put it cut short is the next one's to begin with. */
		*next = expect;
	}
	ASSERT_EQ(0, mpq_queue_qsize(q));
	/* Not wedged: a put and a get. */
	out[0].seq = 1;
	ASSERT_EQ(1, mpq_queue_put_array(q, out, sizeof(out[0]), 1, 0));
	ASSERT_EQ(1, mpq_queue_get_array(q, out, sizeof(out[0]), 1, 0));
	TH_LOG("%llu messages through 60 killed producers",
	       (unsigned long long)expect);
	mpq_queue_free(q);
}

/*
 * A consumer of runs SIGKILLed at random points, many times, with a
 * producer putting all along: no message is lost. The consumers take
 * straight into shared memory and count what they took there after each
 * call; after a kill, what the copy left past the count is kept too (it
 * may have been taken, or may come again; not in order, when a killed
 * consumer had claimed slots of their own: mpq_queue(3)). So the whole
 * record, and the drain at the end, holds every message put, and nothing
 * else.
 */
#define MAXREC	(1 << 18)

struct took {
	uint64_t n;
	struct rec r[MAXREC];
};

static void consumer(struct mpq_queue *q, struct took *t)
{
	unsigned int n = 1;

	for (;;) {
		uint64_t at = __atomic_load_n(&t->n, __ATOMIC_ACQUIRE);
		int r;

		if (at + 128 > MAXREC)
			_exit(12);
		r = mpq_queue_get_array(q, &t->r[at], sizeof(t->r[0]), n,
					MPQ_FOREVER);
		if (r <= 0)
			_exit(10);
		__atomic_store_n(&t->n, at + (unsigned int)r, __ATOMIC_RELEASE);
		n = n % 100 + 1;
	}
}

/* A whole record: its check word is its sequence number's complement. */
static int whole(const struct took *t, uint64_t k)
{
	return t->r[k].check == ~t->r[k].seq;
}

TEST(killed_consumers_of_runs_lose_nothing)
{
	struct mpq_queue *q = make_queue(512, 16, SPSC);
	struct took *t = shared_alloc(sizeof(*t));
	uint64_t seed = 0xc0ffee, sent = 0, k, again = 0;
	struct rec batch[64];
	unsigned char *seen;
	int round, st, r;

	ASSERT_NE(NULL, q);
	ASSERT_NE(NULL, t);
	for (round = 0; round < 60; round++) {
		pid_t pid = fork();
		int64_t until;

		ASSERT_LE(0, pid);
		if (pid == 0)
			consumer(q, t);
		until = now_ns() + (int64_t)(rnd(&seed) % 300) * 1000;
		while (now_ns() < until && sent < MAXREC / 4) {
			unsigned int n = 1 + (unsigned int)(sent % 64), i;

			for (i = 0; i < n; i++) {
				batch[i].seq = sent + i;
				batch[i].check = ~(sent + i);
			}
			r = mpq_queue_put_array(q, batch, sizeof(batch[0]), n,
						NSEC_PER_MSEC);
			ASSERT_TRUE(r > 0 || r == -ETIMEDOUT);
			if (r > 0)
				sent += (unsigned int)r;
		}
		kill(pid, SIGKILL);
		ASSERT_EQ(pid, waitpid(pid, &st, 0));
		ASSERT_TRUE(WIFSIGNALED(st));
		/*
		 * What its last copy left past its count is kept, up to the
		 * first record it did not finish (a copy it was killed in
		 * comes again; one it finished may not), and the rest
		 * cleared, so that no later look takes it for a new copy.
		 */
		for (k = t->n; k < MAXREC && whole(t, k); k++)
			;
		t->n = k;
		memset(&t->r[k], 0, sizeof(t->r[0]) *
		       (MAXREC - k < 256 ? MAXREC - k : 256));
	}
	/*
	 * A get that waits delivers what dead consumers held (one that does
	 * not wait looks for it at one empty call in 64: mpq_queue(3)).
	 */
	for (;;) {
		ASSERT_GT(MAXREC, t->n + 128);
		r = mpq_queue_get_array(q, &t->r[t->n], sizeof(t->r[0]), 128,
					NSEC_PER_MSEC);
		if (r == -ETIMEDOUT)
			break;
		ASSERT_LT(0, r);
		t->n += (unsigned int)r;
	}
	/*
	 * Every message, some twice: one a killed consumer had claimed in a
	 * slot of its own (a run that did not fit at the ring's end) comes
	 * again after those behind it (mpq_queue(3)), so not in order.
	 */
	seen = calloc(sent, 1);
	ASSERT_NE(NULL, seen);
	for (k = 0; k < t->n; k++) {
		ASSERT_EQ(~t->r[k].seq, t->r[k].check);
		ASSERT_GT(sent, t->r[k].seq);
		again += seen[t->r[k].seq];
		seen[t->r[k].seq] = 1;
	}
	for (k = 0; k < sent; k++) {
		if (!seen[k])
			TH_LOG("message %llu never came", (unsigned long long)k);
		ASSERT_EQ(1, seen[k]);
	}
	free(seen);
	TH_LOG("%llu messages through 60 killed consumers, %llu came again",
	       (unsigned long long)sent, (unsigned long long)again);
	mpq_queue_free(q);
}

TEST_HARNESS_MAIN
