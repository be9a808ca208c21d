// SPDX-License-Identifier: GPL-2.0
/*
 * mpq_queue_put_array and mpq_queue_get_array, and the runs they (and
 * put_many of one-size messages) make on a bounded queue (lib/run.c,
 * struct mpq_slot_run): order, every way of taking a run apart, maxsize
 * counted in messages, lengths, JoinableQueue counts, two producers and
 * two consumers, and processes killed at random points while they put
 * and take runs; each on a queue of many producers and consumers (a
 * run's takes under its busy bit) and on one made with one producer and
 * one consumer. On the backend the environment selects (memfd natively,
 * kmod in the VM).
 */
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "kselftest_harness.h"
#include "helpers.h"

#define SPSC	(MPQ_QUEUE_F_ONE_PRODUCER | MPQ_QUEUE_F_ONE_CONSUMER)

/* Both kinds of queue: many producers and consumers, and one of each. */
static const uint32_t kinds[] = { 0, SPSC };
#define NKINDS	(sizeof(kinds) / sizeof(kinds[0]))

/*
 * The slot at head: its len (is a run there?), and the run's count in
 * *count when it is one (else 0).
 */
static uint32_t head_slot(struct mpq_queue *q, uint32_t *count)
{
	size_t size;
	struct mpq_queue_shm *shm = queue_map(q, &size);
	struct mpq_slot *s;
	uint32_t len;

	*count = 0;
	if (!shm)
		return 0;
	s = shm_head_slot(shm);
	len = s->len;
	if (len == MPQ_SLOT_RUN)
		*count = ((const struct mpq_slot_run_size *)
			  ((unsigned char *)s +
			   MPQ_RUN_SIZE_OFF(shm->slot_size)))->count;
	munmap(shm, size);
	return len;
}

static uint32_t head_len(struct mpq_queue *q)
{
	uint32_t count;

	return head_slot(q, &count);
}

/* The count of the run at head, or 0 when the slot there holds no run. */
static uint32_t head_run_count(struct mpq_queue *q)
{
	uint32_t count;

	head_slot(q, &count);
	return count;
}

/* Say that a consumer sleeps, as one does before its futex wait. */
static void consumer_sleeps(struct mpq_queue *q)
{
	size_t size;
	struct mpq_queue_shm *shm = queue_map(q, &size);

	if (!shm)
		return;
	__atomic_fetch_or(&shm->nonempty, MPQ_FUTEX_SLEEPING, __ATOMIC_SEQ_CST);
	munmap(shm, size);
}

/*
 * Put n values from in[*put] as one array, check the count of the run at
 * head (head_run_count()), take them back in order.
 */
static void array_through(struct __test_metadata *_metadata,
			  struct mpq_queue *q, const uint64_t *in,
			  unsigned int *put, unsigned int n, uint32_t head)
{
	static uint64_t out[1024];
	unsigned int got = 0, i;
	int r;

	ASSERT_EQ((int)n, mpq_queue_put_array(q, in + *put, 8, n, 0));
	EXPECT_EQ(head, head_run_count(q));
	while (got < n) {
		r = mpq_queue_get_array(q, out + got, 8, n - got, 0);
		ASSERT_GT(r, 0);
		got += (unsigned int)r;
	}
	for (i = 0; i < n; i++)
		ASSERT_EQ(in[*put + i], out[i]);
	*put += n;
}

/*
 * While a consumer sleeps, a batch goes a slot per message, so that the
 * consumer is woken at the first message rather than a whole run, and so
 * does a bound's worth after (maxsize messages); then batches are runs
 * again. Both kinds of queue; the messages keep their order throughout.
 */
TEST(a_sleeping_consumer_gets_a_slot_per_message_for_a_bound)
{
	static uint64_t in[2048];
	struct iovec iov[256];
	unsigned int f, i, put;

	for (i = 0; i < 2048; i++)
		in[i] = i * 0x9e3779b97f4a7c15ULL;
	for (f = 0; f < NKINDS; f++) {
		struct mpq_queue *q = make_queue(1024, 8, kinds[f]);

		ASSERT_NE(NULL, q);
		put = 0;
		array_through(_metadata, q, in, &put, 256, 256);
		consumer_sleeps(q);
		array_through(_metadata, q, in, &put, 256, 0);
		array_through(_metadata, q, in, &put, 512, 0);
		array_through(_metadata, q, in, &put, 256, 0);
		array_through(_metadata, q, in, &put, 256, 256);
		/* put_many's batches alike. */
		consumer_sleeps(q);
		for (i = 0; i < 256; i++) {
			iov[i].iov_base = &in[put + i];
			iov[i].iov_len = 8;
		}
		ASSERT_EQ(256, mpq_queue_put_many(q, iov, 256, 0));
		EXPECT_EQ(0, head_run_count(q));
		for (i = 0; i < 256; i++) {
			size_t len = 8;
			uint64_t v;

			ASSERT_EQ(0, mpq_queue_get(q, &v, &len, 0));
			ASSERT_EQ(in[put + i], v);
		}
		ASSERT_EQ(0, mpq_queue_qsize(q));
		mpq_queue_free(q);
	}
}

/*
 * A producer that never spins (spin_ns < 0) puts its batches a slot per
 * message, a consumer awake or not; its consumer's handle takes them
 * whatever its own spin. Both kinds of queue.
 */
TEST(a_producer_that_never_spins_puts_a_slot_per_message)
{
	static uint64_t in[1024];
	unsigned int f, i, put;

	for (i = 0; i < 1024; i++)
		in[i] = i * 0x9e3779b97f4a7c15ULL;
	for (f = 0; f < NKINDS; f++) {
		struct mpq_queue_attr attr = { .maxsize = 1024, .msgsize = 8,
					       .flags = kinds[f],
					       .spin_ns = -1 };
		struct mpq_queue *q = NULL;

		ASSERT_EQ(0, mpq_queue_new(&q, &attr));
		put = 0;
		array_through(_metadata, q, in, &put, 256, 0);
		array_through(_metadata, q, in, &put, 512, 0);
		ASSERT_EQ(0, mpq_queue_qsize(q));
		mpq_queue_free(q);
	}
}

/*
 * Values in order through put_array and get_array in batches of odd
 * sizes (a slot per message under 16, runs from 16), over many laps of
 * the ring (runs end at the ring's end and go on from its start), on both
 * kinds of queue.
 */
TEST(arrays_keep_order_across_laps_on_both_kinds_of_queue)
{
	static uint64_t in[5000], out[300];
	unsigned int f, i, put, got;

	for (i = 0; i < 5000; i++)
		in[i] = i * 0x9e3779b97f4a7c15ULL;
	for (f = 0; f < NKINDS; f++) {
		struct mpq_queue *q = make_queue(64, 8, kinds[f]);

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
 * A put_array of small messages is one run; it comes apart by every kind
 * of take in turn (get, get_many, get_array, peek and release), each
 * message once, in order, and qsize counts what is left of it.
 */
static void run_comes_apart(struct __test_metadata *_metadata, uint32_t flags)
{
	struct iovec iov_in[40], iov_out[40];
	uint64_t in[40], out[40], v;
	struct mpq_queue *q = make_queue(256, 8, flags);
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
	/* put_many of one size makes a run too; get_many takes past it. */
	for (i = 0; i < 40; i++) {
		iov_in[i].iov_base = &in[i];
		iov_in[i].iov_len = 8;
		iov_out[i].iov_base = &out[i];
		iov_out[i].iov_len = 8;
	}
	ASSERT_EQ(20, mpq_queue_put_many(q, iov_in, 20, 0));
	ASSERT_EQ(MPQ_SLOT_RUN, head_len(q));
	ASSERT_EQ(0, mpq_queue_put(q, &in[20], 8, 0));
	ASSERT_EQ(21, mpq_queue_get_many(q, iov_out, 40, 0));
	ASSERT_EQ(0, memcmp(in, out, 21 * 8));
	mpq_queue_free(q);
}

TEST(a_run_comes_apart_by_every_kind_of_take)
{
	unsigned int f;

	for (f = 0; f < NKINDS; f++)
		run_comes_apart(_metadata, kinds[f]);
}

/*
 * maxsize counts messages, not the slots a run takes: a put_array fills
 * the queue to exactly maxsize, a put then waits; one message taken from
 * the run makes room for exactly one more.
 */
static void maxsize_exact(struct __test_metadata *_metadata, uint32_t flags)
{
	static uint64_t in[300], out[300];
	struct mpq_queue *q = make_queue(100, 8, flags);
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

TEST(maxsize_counts_the_messages_of_runs_exactly)
{
	unsigned int f;

	for (f = 0; f < NKINDS; f++)
		maxsize_exact(_metadata, kinds[f]);
}

/*
 * get_array takes only messages of the size it asks for: one of another
 * length ends the array and stays, -EMSGSIZE when it is the first; a
 * plain get takes it.
 */
TEST(get_array_stops_at_a_message_of_another_length)
{
	uint64_t in[3] = { 1, 2, 3 }, out[10];
	unsigned int f;
	char buf[16];
	size_t len;

	for (f = 0; f < NKINDS; f++) {
		struct mpq_queue *q = make_queue(16, 16, kinds[f]);

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
	struct mpq_queue_attr attr = { .maxsize = 64, .msgsize = 8 };
	uint64_t in[50] = { 0 }, out[50];
	struct mpq_queue *q;
	unsigned int f;
	int i;

	for (f = 0; f < NKINDS; f++) {
		attr.flags = kinds[f];
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
static void stale_intent(struct __test_metadata *_metadata, uint32_t flags)
{
	struct mpq_queue *q = make_queue(16, 8, flags);
	uint64_t in[16], out[16], v = 1;
	struct mpq_queue_shm *shm;
	struct mpq_queue_rec *r;
	uint32_t k;
	size_t size;
	int i;

	ASSERT_NE(NULL, q);
	/*
	 * 16-byte slots: the run's header takes the first slot's data and
	 * the second's (whose own header keeps its seq, its position: a
	 * free slot's), and covered slot i >= 2's header is message
	 * 2 (i - 2).
	 */
	for (i = 0; i < 16; i++)
		in[i] = 0xabcd000000000000ULL | (uint64_t)(i * 977);
	for (i = 0; i < 16; i += 2)
		in[i] = 0xabcd000000000000ULL | (uint32_t)(i / 2 + 2);
	ASSERT_EQ(16, mpq_queue_put_array(q, in, 8, 16, 0));
	shm = queue_map(q, &size);
	ASSERT_NE(NULL, shm);
	ASSERT_EQ(16, shm->slot_size);
	ASSERT_EQ(0, shm->head);
	k = (uint32_t)shm->tail;
	ASSERT_EQ(10, k);
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

TEST(a_stale_intent_over_a_run_leaves_its_messages_alone)
{
	unsigned int f;

	for (f = 0; f < NKINDS; f++)
		stale_intent(_metadata, kinds[f]);
}

/* A run of 16 put into q (maxsize 16) and taken; *shm maps it. */
static void run_through(struct __test_metadata *_metadata,
			struct mpq_queue *q, struct mpq_queue_shm **shm,
			size_t *size)
{
	uint64_t in[16] = { 0 };

	ASSERT_NE(NULL, q);
	ASSERT_EQ(16, mpq_queue_put_array(q, in, 8, 16, 0));
	ASSERT_EQ(16, mpq_queue_get_array(q, in, 8, 16, 0));
	*shm = queue_map(q, size);
	ASSERT_NE(NULL, *shm);
}

/*
 * A consumer killed between a run's free and its sum leaves runs_put
 * ahead of runs_freed: the bound then counts more than there is, and the
 * one-message put of the one producer takes the general path. The first
 * put that finds the ring empty makes them equal again: the bound is
 * exact after it, and runs_out clear.
 */
static void sums_heal(struct __test_metadata *_metadata, uint32_t flags)
{
	struct mpq_queue *q = make_queue(16, 8, flags);
	struct mpq_queue_shm *shm = NULL;
	uint64_t v = 0;
	size_t size;
	int i;

	run_through(_metadata, q, &shm, &size);
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

TEST(run_sums_a_death_left_apart_heal_on_an_empty_ring)
{
	unsigned int f;

	for (f = 0; f < NKINDS; f++)
		sums_heal(_metadata, kinds[f]);
}

/*
 * Among many producers, a run counted and not yet claimed is a live
 * record's (MPQ_REC_RUN_COUNTED): a producer that finds the ring empty
 * leaves the sums apart while it lives, and heals them once it is dead.
 */
TEST(a_live_producers_counted_run_is_not_healed_away)
{
	struct mpq_queue *q = make_queue(16, 8, 0);
	struct mpq_queue_shm *shm = NULL;
	struct mpq_queue_rec *r;
	uint64_t v = 0, in[16] = { 0 };
	size_t size;

	run_through(_metadata, q, &shm, &size);
	/* A producer (this thread's TID: alive) counted 5 and claims next. */
	r = (struct mpq_queue_rec *)((unsigned char *)shm + MPQ_QUEUE_REC_OFF +
				     128 * (MPQ_QUEUE_NREC - 1));
	r->op = MPQ_REC_PUT | MPQ_REC_RUN_COUNTED;
	r->pos = shm->tail;
	r->n = 2;
	__atomic_store_n(&r->word, (uint32_t)gettid(), __ATOMIC_RELEASE);
	shm->runs_put += 5;
	shm->runs_out = 1;
	ASSERT_EQ(0, mpq_queue_put(q, &v, 8, 0));
	EXPECT_EQ(shm->runs_freed + 5, shm->runs_put);
	/* The bound counts them: 16 - 1 - 5 more fit. */
	ASSERT_EQ(10, mpq_queue_put_array(q, in, 8, 16, 0));
	ASSERT_EQ(-EAGAIN, mpq_queue_put(q, &v, 8, 0));
	ASSERT_EQ(11, mpq_queue_get_array(q, in, 8, 16, 0));
	/* Dead now: the next put that finds the ring empty heals. */
	__atomic_store_n(&r->word, 0x40000000U, __ATOMIC_RELEASE);
	ASSERT_EQ(0, mpq_queue_put(q, &v, 8, 0));
	EXPECT_EQ(shm->runs_freed, shm->runs_put);
	EXPECT_EQ(0, shm->runs_out);
	munmap(shm, size);
	mpq_queue_free(q);
}

/*
 * Two producers put runs (put_array and put_many of one size, batches of
 * 16 to 200) and single messages, two consumers take them with get_array,
 * get_many and get, all at once, on a queue of many producers and
 * consumers: every message comes exactly once, and each producer's in
 * the order it put them, to each consumer.
 */
#define MP_N	200000

struct mp_msg {
	uint32_t producer, pad;
	uint64_t seq;
};

static int mp_producer(struct mpq_queue *q, uint32_t id)
{
	static struct mp_msg batch[200];
	struct iovec iov[200];
	uint64_t s = 0, seed = 77 + id;
	unsigned int n, i;
	int r;

	while (s < MP_N) {
		n = 1 + (unsigned int)(rnd(&seed) % 200);
		if (n > MP_N - s)
			n = (unsigned int)(MP_N - s);
		for (i = 0; i < n; i++) {
			batch[i].producer = id;
			batch[i].pad = 0;
			batch[i].seq = s + i;
			iov[i].iov_base = &batch[i];
			iov[i].iov_len = sizeof(batch[i]);
		}
		switch (rnd(&seed) % 3) {
		case 0:
			r = mpq_queue_put_array(q, batch, sizeof(batch[0]), n,
						MPQ_FOREVER);
			break;
		case 1:
			r = mpq_queue_put_many(q, iov, n, MPQ_FOREVER);
			break;
		default:
			r = mpq_queue_put(q, batch, sizeof(batch[0]),
					  MPQ_FOREVER) ? -1 : 1;
		}
		if (r <= 0)
			return 1;
		s += (unsigned int)r;
	}
	return 0;
}

/* got[] gets each message's producer << 32 | seq, count in *n. */
static int mp_consumer(struct mpq_queue *q, uint64_t *got, uint64_t *n,
		       uint32_t id)
{
	static struct mp_msg buf[150];
	struct iovec iov[150];
	uint64_t seed = 99 + id, last[2] = { 0, 0 }, mine = 0;
	unsigned int i, want;
	size_t len;
	int r;

	for (;;) {
		want = 1 + (unsigned int)(rnd(&seed) % 150);
		for (i = 0; i < want; i++) {
			iov[i].iov_base = &buf[i];
			iov[i].iov_len = sizeof(buf[i]);
		}
		switch (rnd(&seed) % 3) {
		case 0:
			r = mpq_queue_get_array(q, buf, sizeof(buf[0]), want,
						200 * NSEC_PER_MSEC);
			break;
		case 1:
			r = mpq_queue_get_many(q, iov, want,
					       200 * NSEC_PER_MSEC);
			break;
		default:
			len = sizeof(buf[0]);
			r = mpq_queue_get(q, buf, &len, 200 * NSEC_PER_MSEC);
			r = r ? r : 1;
		}
		if (r == -ETIMEDOUT)
			break;
		if (r <= 0)
			return 1;
		for (i = 0; i < (unsigned int)r; i++) {
			uint32_t p = buf[i].producer;

			if (p > 1 || buf[i].pad || buf[i].seq >= MP_N)
				return 2;
			/* In each producer's order (seq + 1: 0 is "none"). */
			if (buf[i].seq + 1 <= last[p])
				return 3;
			last[p] = buf[i].seq + 1;
			got[mine++] = (uint64_t)p << 32 | buf[i].seq;
		}
		__atomic_store_n(n, mine, __ATOMIC_RELEASE);
	}
	return 0;
}

TEST(two_producers_and_two_consumers_pass_runs_exactly_once)
{
	struct mpq_queue *q = make_queue(1024, 16, 0);
	uint64_t *got[2], *n = shared_alloc(2 * sizeof(uint64_t)), k, total;
	unsigned char *seen;
	pid_t pid[4];
	int i, st;

	ASSERT_NE(NULL, q);
	ASSERT_NE(NULL, n);
	for (i = 0; i < 2; i++) {
		got[i] = shared_alloc(2 * MP_N * sizeof(uint64_t));
		ASSERT_NE(NULL, got[i]);
	}
	for (i = 0; i < 4; i++) {
		pid[i] = fork();
		ASSERT_LE(0, pid[i]);
		if (pid[i] == 0)
			_exit(i < 2 ? mp_producer(q, (uint32_t)i) :
				      mp_consumer(q, got[i - 2], &n[i - 2],
						  (uint32_t)i));
	}
	for (i = 0; i < 4; i++) {
		ASSERT_EQ(pid[i], waitpid(pid[i], &st, 0));
		ASSERT_TRUE(WIFEXITED(st));
		ASSERT_EQ(0, WEXITSTATUS(st));
	}
	seen = calloc(2 * MP_N, 1);
	ASSERT_NE(NULL, seen);
	total = 0;
	for (i = 0; i < 2; i++) {
		for (k = 0; k < n[i]; k++) {
			uint64_t m = got[i][k];
			uint64_t at = (m >> 32) * MP_N + (uint32_t)m;

			ASSERT_EQ(0, seen[at]);
			seen[at] = 1;
		}
		total += n[i];
	}
	ASSERT_EQ(2 * MP_N, total);
	TH_LOG("%llu and %llu messages to the two consumers",
	       (unsigned long long)n[0], (unsigned long long)n[1]);
	free(seen);
	ASSERT_EQ(0, mpq_queue_qsize(q));
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

static void killed_producers(struct __test_metadata *_metadata,
			     uint32_t flags)
{
	struct mpq_queue *q = make_queue(512, 16, flags);
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
	TH_LOG("%s: %llu messages through 60 killed producers",
	       flags ? "one producer, one consumer" : "many of each",
	       (unsigned long long)expect);
	mpq_queue_free(q);
}

TEST(killed_producers_of_runs_lose_and_repeat_nothing)
{
	unsigned int f;

	for (f = 0; f < NKINDS; f++)
		killed_producers(_metadata, kinds[f]);
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

static void killed_consumers(struct __test_metadata *_metadata,
			     uint32_t flags, struct took *t)
{
	struct mpq_queue *q = make_queue(512, 16, flags);
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
	TH_LOG("%s: %llu messages through 60 killed consumers, %llu came again",
	       flags ? "one producer, one consumer" : "many of each",
	       (unsigned long long)sent, (unsigned long long)again);
	mpq_queue_free(q);
}

TEST(killed_consumers_of_runs_lose_nothing)
{
	struct took *t = shared_alloc(sizeof(*t));
	unsigned int f;

	ASSERT_NE(NULL, t);
	for (f = 0; f < NKINDS; f++) {
		memset(t, 0, sizeof(*t));
		killed_consumers(_metadata, kinds[f], t);
	}
}

TEST_HARNESS_MAIN
