// SPDX-License-Identifier: GPL-2.0
/*
 * The promises of mpq_queue, one test each, on whichever backend the
 * environment selects (MPQ_BACKEND=memfd natively, kmod in the VM): the
 * same code must keep them on both.
 */
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include "kselftest_harness.h"
#include "helpers.h"

FIXTURE(queue) {
	struct mpq_queue *q;
};

FIXTURE_SETUP(queue)
{
	struct mpq_queue_attr attr = { .maxsize = 64, .msgsize = 256 };

	ASSERT_EQ(0, mpq_queue_new(&self->q, &attr));
}

FIXTURE_TEARDOWN(queue)
{
	mpq_queue_free(self->q);
}

TEST_F(queue, put_then_get_returns_the_message)
{
	char buf[256];
	size_t len = sizeof(buf);

	ASSERT_EQ(0, mpq_queue_put(self->q, "hello", 5, MPQ_FOREVER));
	ASSERT_EQ(0, mpq_queue_get(self->q, buf, &len, MPQ_FOREVER));
	ASSERT_EQ(5, len);
	ASSERT_EQ(0, memcmp(buf, "hello", 5));
}

TEST_F(queue, every_length_from_zero_to_msgsize_round_trips)
{
	unsigned char in[256], out[256];
	size_t n, len;

	for (n = 0; n < sizeof(in); n++)
		in[n] = (unsigned char)(n * 7 + 3);
	for (n = 0; n <= 256; n++) {
		ASSERT_EQ(0, mpq_queue_put_nowait(self->q, in, n));
		len = sizeof(out);
		memset(out, 0, sizeof(out));
		ASSERT_EQ(0, mpq_queue_get_nowait(self->q, out, &len));
		ASSERT_EQ(n, len);
		ASSERT_EQ(0, memcmp(in, out, n));
	}
}

/*
 * Message bodies leave a slot by one of several copies by length (two
 * overlapping words, memcpy, or, for a get that finds its message there,
 * rep movsb from 512 bytes to 4 KiB where the CPU has ERMS): every length
 * across them, into a destination at every alignment, by the one-message
 * get of a plain and of a one-consumer queue and by get_many, arrives
 * exact, with not a byte written outside it.
 */
TEST(every_length_across_the_copy_strategies_arrives_exact)
{
	static const uint32_t flags[] = { 0, MPQ_QUEUE_F_ONE_PRODUCER |
					     MPQ_QUEUE_F_ONE_CONSUMER };
	static unsigned char in[4200 + 3], out[4200 + 64];
	unsigned int f, n, off, i;
	const unsigned char *msg;
	struct mpq_queue *q;
	struct iovec iov;
	size_t len;

	for (n = 0; n < sizeof(in); n++)
		in[n] = (unsigned char)(n * 13 + 5);
	for (f = 0; f < 2; f++) {
		struct mpq_queue_attr attr = { .maxsize = 4, .msgsize = 4200,
					       .flags = flags[f] };

		ASSERT_EQ(0, mpq_queue_new(&q, &attr));
		for (n = 0; n <= 4200; n++) {
			msg = in + n % 3;
			off = n % 61;
			memset(out, 0xa5, sizeof(out));
			ASSERT_EQ(0, mpq_queue_put_nowait(q, msg, n));
			len = sizeof(out) - off;
			if (n & 1) {
				ASSERT_EQ(0, mpq_queue_get_nowait(q, out + off, &len));
			} else {
				iov.iov_base = out + off;
				iov.iov_len = len;
				ASSERT_EQ(1, mpq_queue_get_many(q, &iov, 1, 0));
				len = iov.iov_len;
			}
			ASSERT_EQ(n, len);
			ASSERT_EQ(0, memcmp(out + off, msg, n))
				TH_LOG("flags %#x: length %u differs", flags[f], n);
			for (i = 0; i < sizeof(out); i++) {
				if (i >= off && i < off + n)
					continue;
				ASSERT_EQ(0xa5, out[i])
					TH_LOG("length %u: byte %u written", n, i);
			}
		}
		mpq_queue_free(q);
	}
}

TEST_F(queue, a_message_larger_than_the_slot_goes_out_of_line)
{
	char big[257] = { 0 }, out[300];
	size_t len = 256;

	big[256] = 'z';
	ASSERT_EQ(256, mpq_queue_msgsize(self->q));
	ASSERT_EQ(0, mpq_queue_put(self->q, big, 257, MPQ_FOREVER));
	ASSERT_EQ(1, mpq_queue_qsize(self->q));
	ASSERT_EQ(-EMSGSIZE, mpq_queue_get_nowait(self->q, out, &len));
	ASSERT_EQ(257, len);
	len = sizeof(out);
	ASSERT_EQ(0, mpq_queue_get_nowait(self->q, out, &len));
	ASSERT_EQ(257, len);
	ASSERT_EQ('z', out[256]);
}

TEST_F(queue, short_buffer_is_emsgsize_and_keeps_the_message)
{
	char buf[100];
	size_t len = 3;

	ASSERT_EQ(0, mpq_queue_put_nowait(self->q, "0123456789", 10));
	ASSERT_EQ(-EMSGSIZE, mpq_queue_get_nowait(self->q, buf, &len));
	ASSERT_EQ(10, len);
	ASSERT_EQ(1, mpq_queue_qsize(self->q));
	len = sizeof(buf);
	ASSERT_EQ(0, mpq_queue_get_nowait(self->q, buf, &len));
	ASSERT_EQ(10, len);
	ASSERT_EQ(0, memcmp(buf, "0123456789", 10));
}

TEST_F(queue, get_nowait_on_empty_is_eagain)
{
	char buf[8];
	size_t len = sizeof(buf);

	ASSERT_EQ(-EAGAIN, mpq_queue_get_nowait(self->q, buf, &len));
	ASSERT_EQ(-EAGAIN, mpq_queue_get(self->q, buf, &len, 0));
}

TEST_F(queue, put_nowait_on_full_is_eagain)
{
	int i, cap = mpq_queue_maxsize(self->q);

	ASSERT_EQ(64, cap);
	for (i = 0; i < cap; i++)
		ASSERT_EQ(0, mpq_queue_put_nowait(self->q, &i, sizeof(i)));
	ASSERT_EQ(-EAGAIN, mpq_queue_put_nowait(self->q, &i, sizeof(i)));
	ASSERT_EQ(-EAGAIN, mpq_queue_put(self->q, &i, sizeof(i), 0));
}

TEST_F(queue, qsize_empty_full_follow_the_contents)
{
	char buf[8];
	size_t len;
	int i;

	ASSERT_EQ(0, mpq_queue_qsize(self->q));
	ASSERT_EQ(1, mpq_queue_empty(self->q));
	ASSERT_EQ(0, mpq_queue_full(self->q));
	for (i = 1; i <= 64; i++) {
		ASSERT_EQ(0, mpq_queue_put_nowait(self->q, "x", 1));
		ASSERT_EQ(i, mpq_queue_qsize(self->q));
		ASSERT_EQ(0, mpq_queue_empty(self->q));
	}
	ASSERT_EQ(1, mpq_queue_full(self->q));
	len = sizeof(buf);
	ASSERT_EQ(0, mpq_queue_get_nowait(self->q, buf, &len));
	ASSERT_EQ(63, mpq_queue_qsize(self->q));
	ASSERT_EQ(0, mpq_queue_full(self->q));
}

TEST(maxsize_is_what_was_asked_not_a_power_of_two)
{
	struct mpq_queue_attr attr = { .maxsize = 1, .msgsize = 8 };
	struct mpq_queue *q;

	ASSERT_EQ(0, mpq_queue_new(&q, &attr));
	ASSERT_EQ(1, mpq_queue_maxsize(q));
	ASSERT_EQ(0, mpq_queue_full(q));
	ASSERT_EQ(0, mpq_queue_put_nowait(q, "a", 1));
	ASSERT_EQ(1, mpq_queue_full(q));
	ASSERT_EQ(-EAGAIN, mpq_queue_put_nowait(q, "b", 1));
	mpq_queue_free(q);
	attr.maxsize = 33;
	ASSERT_EQ(0, mpq_queue_new(&q, &attr));
	ASSERT_EQ(33, mpq_queue_maxsize(q));
	mpq_queue_free(q);
}

TEST_F(queue, get_times_out_with_etimedout_on_time)
{
	char buf[8];
	size_t len = sizeof(buf);
	int64_t t0 = now_ns(), dt;

	ASSERT_EQ(-ETIMEDOUT, mpq_queue_get(self->q, buf, &len,
					    100 * NSEC_PER_MSEC));
	dt = now_ns() - t0;
	/* Never early; late only by scheduling (bound: no hang). */
	ASSERT_GE(dt, 100 * NSEC_PER_MSEC);
	ASSERT_LT(dt, 5 * NSEC_PER_SEC);
}

TEST_F(queue, put_times_out_with_etimedout_when_full)
{
	int64_t t0, dt;
	int i;

	for (i = 0; i < 64; i++)
		ASSERT_EQ(0, mpq_queue_put_nowait(self->q, "x", 1));
	t0 = now_ns();
	ASSERT_EQ(-ETIMEDOUT, mpq_queue_put(self->q, "x", 1,
					    50 * NSEC_PER_MSEC));
	dt = now_ns() - t0;
	ASSERT_GE(dt, 50 * NSEC_PER_MSEC);
	ASSERT_LT(dt, 5 * NSEC_PER_SEC);
	ASSERT_EQ(64, mpq_queue_qsize(self->q));
}

TEST_F(queue, put_many_and_get_many_keep_order_and_lengths)
{
	struct iovec in[10], out[10];
	char data[10][32], buf[10][256];
	int i, j;

	for (i = 0; i < 10; i++) {
		snprintf(data[i], sizeof(data[i]), "message %d%*s", i, i, "");
		in[i].iov_base = data[i];
		in[i].iov_len = strlen(data[i]);
	}
	ASSERT_EQ(10, mpq_queue_put_many(self->q, in, 10, MPQ_FOREVER));
	ASSERT_EQ(10, mpq_queue_qsize(self->q));
	for (j = 0; j < 2; j++) {	/* two batches of five */
		for (i = 0; i < 5; i++) {
			out[i].iov_base = buf[i];
			out[i].iov_len = sizeof(buf[i]);
		}
		ASSERT_EQ(5, mpq_queue_get_many(self->q, out, 5, 0));
		for (i = 0; i < 5; i++) {
			ASSERT_EQ(in[j * 5 + i].iov_len, out[i].iov_len);
			ASSERT_EQ(0, memcmp(data[j * 5 + i], buf[i], out[i].iov_len));
		}
	}
	ASSERT_EQ(-EAGAIN, mpq_queue_get_many(self->q, out, 5, 0));
}

TEST_F(queue, put_many_puts_what_fits_and_get_many_what_is_there)
{
	struct iovec iov[100];
	char buf[100][8];
	int i;

	for (i = 0; i < 100; i++) {
		iov[i].iov_base = "abcdefgh";
		iov[i].iov_len = 8;
	}
	ASSERT_EQ(60, mpq_queue_put_many(self->q, iov, 60, 0));
	ASSERT_EQ(4, mpq_queue_put_many(self->q, iov, 100, 0));	/* 64 slots */
	ASSERT_EQ(-EAGAIN, mpq_queue_put_many(self->q, iov, 100, 0));
	ASSERT_EQ(-ETIMEDOUT, mpq_queue_put_many(self->q, iov, 1, NSEC_PER_MSEC));
	for (i = 0; i < 100; i++) {
		iov[i].iov_base = buf[i];
		iov[i].iov_len = 8;
	}
	ASSERT_EQ(64, mpq_queue_get_many(self->q, iov, 100, 0));
	ASSERT_EQ(0, mpq_queue_qsize(self->q));
}

TEST_F(queue, batches_stop_at_a_message_that_does_not_fit)
{
	char big[300] = { 0 }, b0[16], b1[16], b2[16];
	struct iovec in[3] = { { "one", 3 }, { "two", 3 }, { big, 300 } };
	struct iovec out[3] = { { b0, 16 }, { b1, 2 }, { b2, 16 } };

	/* Too long for a slot: the ones before it go, then it, alone. */
	ASSERT_EQ(2, mpq_queue_put_many(self->q, in, 3, 0));
	ASSERT_EQ(1, mpq_queue_put_many(self->q, &in[2], 1, 0));
	/* "two" does not fit a 2-byte buffer: the batch ends before it. */
	ASSERT_EQ(1, mpq_queue_get_many(self->q, out, 3, 0));
	ASSERT_EQ(3, out[0].iov_len);
	out[0].iov_len = 2;
	ASSERT_EQ(-EMSGSIZE, mpq_queue_get_many(self->q, out, 3, 0));
	ASSERT_EQ(3, out[0].iov_len);	/* the size needed */
	ASSERT_EQ(2, mpq_queue_qsize(self->q));
	/* An out-of-line message ends a batch too, and goes alone. */
	out[0].iov_len = 16;
	ASSERT_EQ(1, mpq_queue_get_many(self->q, out, 3, 0));
	out[0].iov_len = 16;
	ASSERT_EQ(-EMSGSIZE, mpq_queue_get_many(self->q, out, 3, 0));
	ASSERT_EQ(300, out[0].iov_len);
	ASSERT_EQ(1, mpq_queue_qsize(self->q));
	ASSERT_EQ(-EINVAL, mpq_queue_put_many(self->q, in, 0, 0));
	ASSERT_EQ(-EINVAL, mpq_queue_get_many(self->q, NULL, 1, 0));
}

static int get_many_forever(void *arg)
{
	struct mpq_queue *q = arg;
	char b[4][16];
	struct iovec out[4] = { { b[0], 16 }, { b[1], 16 }, { b[2], 16 },
				{ b[3], 16 } };
	int n = mpq_queue_get_many(q, out, 4, MPQ_FOREVER);

	return n >= 1 && out[0].iov_len == 4 && !memcmp(b[0], "wake", 4) ? 0 : 1;
}

TEST(blocking_get_many_sleeps_and_wakes_on_put)
{
	struct mpq_queue_attr attr = { .maxsize = 4, .msgsize = 16,
				       .spin_ns = -1 };
	struct mpq_queue *q;
	pid_t pid;

	ASSERT_EQ(0, mpq_queue_new(&q, &attr));
	pid = spawn(get_many_forever, q);
	sleep_ms(100);
	ASSERT_TRUE(child_running(pid));
	ASSERT_EQ(0, mpq_queue_put(q, "wake", 4, MPQ_FOREVER));
	ASSERT_EQ(0, wait_child(pid, 10000));
	mpq_queue_free(q);
}

static int get_one_forever(void *arg)
{
	struct mpq_queue *q = arg;
	char buf[16];
	size_t len = sizeof(buf);

	if (mpq_queue_get(q, buf, &len, MPQ_FOREVER))
		return 1;
	return len == 4 && !memcmp(buf, "wake", 4) ? 0 : 2;
}

/* Spinning disabled: the getter must really sleep and be woken. */
TEST(blocking_get_sleeps_and_wakes_on_put)
{
	struct mpq_queue_attr attr = { .maxsize = 4, .msgsize = 16,
				       .spin_ns = -1 };
	struct mpq_queue *q;
	pid_t pid;

	ASSERT_EQ(0, mpq_queue_new(&q, &attr));
	pid = spawn(get_one_forever, q);
	ASSERT_GT(pid, 0);
	sleep_ms(100);
	ASSERT_TRUE(child_running(pid));
	ASSERT_EQ(0, mpq_queue_put(q, "wake", 4, MPQ_FOREVER));
	ASSERT_EQ(0, wait_child(pid, 10000));
	mpq_queue_free(q);
}

static int put_one_forever(void *arg)
{
	return mpq_queue_put(arg, "late", 4, MPQ_FOREVER) ? 1 : 0;
}

TEST(full_queue_blocks_put_until_a_get)
{
	struct mpq_queue_attr attr = { .maxsize = 2, .msgsize = 16,
				       .spin_ns = -1 };
	struct mpq_queue *q;
	char buf[16];
	size_t len;
	pid_t pid;

	ASSERT_EQ(0, mpq_queue_new(&q, &attr));
	ASSERT_EQ(0, mpq_queue_put_nowait(q, "a", 1));
	ASSERT_EQ(0, mpq_queue_put_nowait(q, "b", 1));
	pid = spawn(put_one_forever, q);
	ASSERT_GT(pid, 0);
	sleep_ms(100);
	ASSERT_TRUE(child_running(pid));
	len = sizeof(buf);
	ASSERT_EQ(0, mpq_queue_get(q, buf, &len, MPQ_FOREVER));
	ASSERT_EQ(0, wait_child(pid, 10000));
	ASSERT_EQ(2, mpq_queue_qsize(q));
	len = sizeof(buf);
	ASSERT_EQ(0, mpq_queue_get_nowait(q, buf, &len));
	ASSERT_EQ('b', buf[0]);
	len = sizeof(buf);
	ASSERT_EQ(0, mpq_queue_get_nowait(q, buf, &len));
	ASSERT_EQ(0, memcmp(buf, "late", 4));
	mpq_queue_free(q);
}

static int put_one_spinning(void *arg)
{
	return mpq_queue_put(arg, "late", 4, 5 * NSEC_PER_SEC) ? 1 : 0;
}

/*
 * A put that spins on a full ring (here for good: spin_ns is the
 * longest) waits at first for a run of free slots, so as not to refill
 * at a streaming consumer's heels; a consumer that frees one slot and
 * stops must still let it through.
 */
TEST(spinning_put_on_a_full_queue_takes_the_one_slot_a_get_frees)
{
	struct mpq_queue_attr attr = { .maxsize = 1024, .msgsize = 16,
				       .spin_ns = INT64_MAX / 4 };
	struct mpq_queue *q;
	char buf[16];
	size_t len;
	pid_t pid;
	int i;

	ASSERT_EQ(0, mpq_queue_new(&q, &attr));
	for (i = 0; i < 1024; i++)
		ASSERT_EQ(0, mpq_queue_put_nowait(q, &i, sizeof(i)));
	pid = spawn(put_one_spinning, q);
	ASSERT_GT(pid, 0);
	sleep_ms(50);
	ASSERT_TRUE(child_running(pid));
	len = sizeof(buf);
	ASSERT_EQ(0, mpq_queue_get(q, buf, &len, 0));
	ASSERT_EQ(0, wait_child(pid, 10000));
	ASSERT_EQ(1024, mpq_queue_qsize(q));
	for (i = 1; i < 1024; i++) {
		int v;

		len = sizeof(buf);
		ASSERT_EQ(0, mpq_queue_get_nowait(q, buf, &len));
		memcpy(&v, buf, sizeof(v));
		ASSERT_EQ(i, v);
	}
	len = sizeof(buf);
	ASSERT_EQ(0, mpq_queue_get_nowait(q, buf, &len));
	ASSERT_EQ(0, memcmp(buf, "late", 4));
	mpq_queue_free(q);
}

/* Tests that may take longer than the harness's default 30 s under TCG. */
FIXTURE(slow) {};
FIXTURE_SETUP(slow) {}
FIXTURE_TEARDOWN(slow) {}

/* A message: who sent it, its number, and a checksum of both. */
struct tagged {
	uint32_t producer;
	uint32_t seq;
	uint64_t check;
};

static uint64_t tag_check(uint32_t producer, uint32_t seq)
{
	uint64_t s = ((uint64_t)producer << 32 | seq) + 0x9e3779b97f4a7c15ULL;

	return rnd(&s);
}

struct mpmc {
	struct mpq_queue *q;
	int producers, consumers;
	unsigned int batch;
	uint32_t per_producer;
	uint8_t *seen;		/* shared: one byte per (producer, seq) */
	int id;
};

static int mpmc_producer(void *arg)
{
	struct mpmc *m = arg;
	struct tagged t[64];
	struct iovec iov[64];
	uint32_t seq = 0;
	unsigned int i, n;
	int r;

	while (seq < m->per_producer) {
		n = m->batch;
		if (n > m->per_producer - seq)
			n = m->per_producer - seq;
		for (i = 0; i < n; i++) {
			t[i].producer = (uint32_t)m->id;
			t[i].seq = seq + i;
			t[i].check = tag_check(t[i].producer, t[i].seq);
			iov[i].iov_base = &t[i];
			iov[i].iov_len = sizeof(t[i]);
		}
		if (m->batch == 1)
			r = mpq_queue_put(m->q, &t[0], sizeof(t[0]),
					  60 * NSEC_PER_SEC) ? -1 : 1;
		else
			r = mpq_queue_put_many(m->q, iov, n, 60 * NSEC_PER_SEC);
		if (r < 1)
			return 1;
		seq += (uint32_t)r;	/* a partial batch: the rest again */
	}
	return 0;
}

/* Check one message; 0 to go on, 1 on the stop message, else an error. */
static int mpmc_check(struct mpmc *m, const struct tagged *t, size_t len,
		      int64_t *last)
{
	if (len == 1)				/* stop */
		return 1;
	if (len != sizeof(*t) || t->producer >= (uint32_t)m->producers ||
	    t->seq >= m->per_producer ||
	    t->check != tag_check(t->producer, t->seq))
		return 2;			/* corrupt */
	if ((int64_t)t->seq <= last[t->producer])
		return 3;			/* out of order */
	last[t->producer] = t->seq;
	if (__atomic_fetch_add(&m->seen[(size_t)t->producer * m->per_producer +
					t->seq], 1, __ATOMIC_RELAXED))
		return 4;			/* duplicate */
	return 0;
}

static int mpmc_consumer(void *arg)
{
	struct mpmc *m = arg;
	struct tagged t[16];
	struct iovec iov[16];
	int64_t last[64];
	int i, n, r;

	for (i = 0; i < m->producers; i++)
		last[i] = -1;
	for (;;) {
		for (i = 0; i < 16; i++) {
			iov[i].iov_base = &t[i];
			iov[i].iov_len = sizeof(t[i]);
		}
		if (m->batch == 1) {
			if (mpq_queue_get(m->q, &t[0], &iov[0].iov_len,
					  60 * NSEC_PER_SEC))
				return 1;
			n = 1;
		} else {
			n = mpq_queue_get_many(m->q, iov, 16, 60 * NSEC_PER_SEC);
			if (n < 1)
				return 1;
		}
		for (i = 0; i < n; i++) {
			r = mpmc_check(m, &t[i], iov[i].iov_len, last);
			if (r != 1 && r)
				return r;
			if (r != 1)
				continue;
			/* Stops only come after all data: hand the others on. */
			while (++i < n)
				if (iov[i].iov_len != 1 ||
				    mpq_queue_put(m->q, "", 1, 10 * NSEC_PER_SEC))
					return 5;
			return 0;
		}
	}
}

static void run_mpmc(struct __test_metadata *_metadata, int producers,
		     int consumers, uint32_t per_producer, uint32_t maxsize,
		     unsigned int batch)
{
	struct mpq_queue_attr attr = { .maxsize = maxsize,
				       .msgsize = sizeof(struct tagged) };
	size_t total = (size_t)producers * per_producer, i;
	struct mpmc m = { .producers = producers, .consumers = consumers,
			  .per_producer = per_producer, .batch = batch };
	pid_t pids[16];
	int k;

	ASSERT_EQ(0, mpq_queue_new(&m.q, &attr));
	m.seen = shared_alloc(total);
	ASSERT_NE(NULL, m.seen);
	for (k = 0; k < consumers; k++)
		pids[k] = spawn(mpmc_consumer, &m);
	for (k = 0; k < producers; k++) {
		m.id = k;
		pids[consumers + k] = spawn(mpmc_producer, &m);
	}
	for (k = 0; k < producers; k++)
		EXPECT_EQ(0, wait_child(pids[consumers + k], 280000));
	for (k = 0; k < consumers; k++)
		ASSERT_EQ(0, mpq_queue_put(m.q, "", 1, 10 * NSEC_PER_SEC));
	for (k = 0; k < consumers; k++)
		EXPECT_EQ(0, wait_child(pids[k], 30000));
	for (i = 0; i < total; i++)
		if (m.seen[i] != 1)
			break;
	ASSERT_EQ(total, i) {
		TH_LOG("message %zu (producer %zu seq %zu) seen %d times",
		       i, i / per_producer, i % per_producer, m.seen[i]);
	}
	ASSERT_EQ(0, mpq_queue_qsize(m.q));
	mpq_queue_free(m.q);
}

TEST(fifo_order_per_producer_two_producers_one_consumer)
{
	run_mpmc(_metadata, 2, 1, 20000, 16, 1);
}

TEST_F_TIMEOUT(slow, four_by_four_processes_pass_a_million_messages_exactly_once, 600)
{
	run_mpmc(_metadata, 4, 4, 250000, 1024, 1);
}

TEST_F_TIMEOUT(slow, batches_of_32_from_two_producers_to_two_consumers_exactly_once, 600)
{
	run_mpmc(_metadata, 2, 2, 200000, 256, 32);
}

static int put_from_inherited(void *arg)
{
	return mpq_queue_put(arg, "child", 5, MPQ_FOREVER) ? 1 : 0;
}

TEST_F(queue, handle_survives_fork)
{
	char buf[16];
	size_t len = sizeof(buf);
	pid_t pid = spawn(put_from_inherited, self->q);

	ASSERT_EQ(0, wait_child(pid, 10000));
	ASSERT_EQ(0, mpq_queue_get(self->q, buf, &len, 5 * NSEC_PER_SEC));
	ASSERT_EQ(0, memcmp(buf, "child", 5));
}

struct passing {
	struct mpq_queue *q;
	int sock;
};

static int put_from_passed_fd(void *arg)
{
	struct passing *p = arg;
	struct mpq_queue *q;
	int fd, ret;

	/* Forget the inherited handle: use only what came over the socket. */
	mpq_queue_free(p->q);
	fd = recv_fd(p->sock);
	if (fd < 0)
		return 1;
	ret = mpq_queue_from_fd(&q, fd);
	close(fd);
	if (ret)
		return 2;
	ret = mpq_queue_put(q, "passed", 6, MPQ_FOREVER);
	mpq_queue_free(q);
	return ret ? 3 : 0;
}

TEST_F(queue, fd_passed_over_a_unix_socket_reaches_the_same_queue)
{
	struct passing p = { .q = self->q };
	char buf[16];
	size_t len = sizeof(buf);
	int sv[2];
	pid_t pid;

	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	p.sock = sv[1];
	pid = spawn(put_from_passed_fd, &p);
	ASSERT_EQ(0, send_fd(sv[0], mpq_queue_fileno(self->q)));
	ASSERT_EQ(0, wait_child(pid, 10000));
	ASSERT_EQ(0, mpq_queue_get(self->q, buf, &len, 5 * NSEC_PER_SEC));
	ASSERT_EQ(0, memcmp(buf, "passed", 6));
	close(sv[0]);
	close(sv[1]);
}

TEST_F(queue, from_fd_sees_the_same_geometry)
{
	struct mpq_queue *q2;

	ASSERT_EQ(0, mpq_queue_from_fd(&q2, mpq_queue_fileno(self->q)));
	ASSERT_EQ(mpq_queue_maxsize(self->q), mpq_queue_maxsize(q2));
	ASSERT_EQ(mpq_queue_msgsize(self->q), mpq_queue_msgsize(q2));
	ASSERT_EQ(mpq_queue_backend(self->q), mpq_queue_backend(q2));
	ASSERT_EQ(0, mpq_queue_put_nowait(q2, "x", 1));
	ASSERT_EQ(1, mpq_queue_qsize(self->q));
	mpq_queue_free(q2);
}

TEST(from_fd_refuses_what_is_not_a_queue)
{
	struct mpq_queue *q;
	char junk[8192];
	int fd;

	ASSERT_EQ(-EBADF, mpq_queue_from_fd(&q, -1));
	fd = open("/dev/null", O_RDWR);
	ASSERT_EQ(-EINVAL, mpq_queue_from_fd(&q, fd));
	close(fd);
	fd = memfd_create("junk", 0);
	memset(junk, 0xa5, sizeof(junk));
	ASSERT_EQ(sizeof(junk), write(fd, junk, sizeof(junk)));
	ASSERT_EQ(-EINVAL, mpq_queue_from_fd(&q, fd));
	close(fd);
}

/* A memfd that claims to be a queue but whose geometry is impossible. */
TEST(from_fd_reports_a_corrupt_memfd_header_as_euclean)
{
	struct mpq_queue_shm hdr = {
		.magic = MPQ_QUEUE_MAGIC, .version = MPQ_QUEUE_VERSION,
		.capacity = 3, .msg_max = 8, .slot_size = 64,
		.data_off = 4096, .map_size = 8192,
	};
	struct mpq_queue *q;
	int fd = memfd_create("bad", 0);

	ASSERT_EQ(0, ftruncate(fd, 8192));
	ASSERT_EQ(sizeof(hdr), pwrite(fd, &hdr, sizeof(hdr), 0));
	ASSERT_EQ(-EUCLEAN, mpq_queue_from_fd(&q, fd));
	hdr.capacity = 4;
	hdr.map_size = 1ULL << 40;	/* slots past the end of the file */
	ASSERT_EQ(sizeof(hdr), pwrite(fd, &hdr, sizeof(hdr), 0));
	ASSERT_EQ(-EUCLEAN, mpq_queue_from_fd(&q, fd));
	/* A sound header, but the file could be shrunk under us: refused. */
	hdr.map_size = 8192;
	ASSERT_EQ(sizeof(hdr), pwrite(fd, &hdr, sizeof(hdr), 0));
	ASSERT_EQ(-EUCLEAN, mpq_queue_from_fd(&q, fd));
	close(fd);
}

/*
 * A queue of another layout version (a libmpq or module of layout 3 made
 * it, or a participant says so) is refused, on either backend: the two
 * layouts count a JoinableQueue's tasks and wake sleepers differently.
 */
TEST(from_fd_refuses_a_queue_of_another_layout_version)
{
	struct mpq_queue *q, *q2;
	struct mpq_queue_shm *shm;
	int fd;

	struct mpq_queue_info info = { .size = sizeof(info) };
	struct stat st;
	size_t len;

	ASSERT_EQ(0, mpq_queue_new(&q, NULL));
	fd = mpq_queue_fileno(q);
	ASSERT_LE(0, fd);
	/* The module maps a queue whole only; a memfd's size is its length. */
	if (ioctl(fd, MPQ_IOC_QUEUE_INFO, &info) == 0) {
		len = info.map_size;
	} else {
		ASSERT_EQ(0, fstat(fd, &st));
		len = st.st_size;
	}
	shm = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ASSERT_NE(MAP_FAILED, shm);
	ASSERT_EQ(MPQ_QUEUE_VERSION, shm->version);
	ASSERT_EQ(0, mpq_queue_from_fd(&q2, fd));
	mpq_queue_free(q2);
	shm->version = MPQ_QUEUE_VERSION - 1;
	EXPECT_EQ(-EUCLEAN, mpq_queue_from_fd(&q2, fd));
	shm->version = MPQ_QUEUE_VERSION;
	munmap(shm, len);
	mpq_queue_free(q);
}

/* Shrinking the memory under the other participants would be a SIGBUS. */
TEST_F(queue, the_queue_memory_cannot_be_truncated)
{
	char buf[8];
	size_t len = sizeof(buf);

	ASSERT_EQ(0, mpq_queue_put_nowait(self->q, "x", 1));
	/* It may grow (memfd: blobs live past the ring), never shrink. */
	ASSERT_EQ(-1, ftruncate(mpq_queue_fileno(self->q), 0));
	ASSERT_EQ(-1, ftruncate(mpq_queue_fileno(self->q), 4096));
	ASSERT_EQ(0, mpq_queue_get_nowait(self->q, buf, &len));
	ASSERT_EQ('x', buf[0]);
}

TEST(bad_arguments_are_einval_not_crashes)
{
	struct mpq_queue_attr attr = { 0 };
	struct mpq_queue *q;
	char buf[8];
	size_t len = sizeof(buf);

	ASSERT_EQ(-EINVAL, mpq_queue_new(NULL, NULL));
	attr.flags = 1U << 7;
	ASSERT_EQ(-EINVAL, mpq_queue_new(&q, &attr));
	attr.flags = 0;
	attr.__reserved[3] = 1;
	ASSERT_EQ(-EINVAL, mpq_queue_new(&q, &attr));
	attr.__reserved[3] = 0;
	attr.backend = 7;
	ASSERT_EQ(-EINVAL, mpq_queue_new(&q, &attr));
	attr.backend = 0;
	attr.maxsize = 1U << 31;
	ASSERT_EQ(-E2BIG, mpq_queue_new(&q, &attr));
	attr.maxsize = 1 << 20;
	attr.msgsize = 1 << 20;		/* 1 TiB */
	ASSERT_EQ(-E2BIG, mpq_queue_new(&q, &attr));

	ASSERT_EQ(-EINVAL, mpq_queue_put(NULL, "x", 1, 0));
	ASSERT_EQ(-EINVAL, mpq_queue_get(NULL, buf, &len, 0));
	ASSERT_EQ(-EINVAL, mpq_queue_qsize(NULL));
	ASSERT_EQ(-EINVAL, mpq_queue_fileno(NULL));
	ASSERT_EQ(0, mpq_queue_new(&q, NULL));
	ASSERT_EQ(-EINVAL, mpq_queue_put(q, NULL, 1, 0));
	ASSERT_EQ(-EINVAL, mpq_queue_get(q, NULL, &len, 0));
	ASSERT_EQ(-EINVAL, mpq_queue_get(q, buf, NULL, 0));
	mpq_queue_free(q);
	mpq_queue_free(NULL);
}

TEST(default_backend_is_kmod_exactly_when_dev_mpq_exists)
{
	int have = access("/dev/mpq", F_OK) == 0;
	struct mpq_queue_attr attr = { 0 };
	struct mpq_queue *q;

	unsetenv("MPQ_BACKEND");
	ASSERT_EQ(0, mpq_queue_new(&q, NULL));
	ASSERT_EQ(have ? MPQ_BACKEND_KMOD : MPQ_BACKEND_MEMFD,
		  mpq_queue_backend(q));
	mpq_queue_free(q);

	setenv("MPQ_BACKEND", "memfd", 1);
	ASSERT_EQ(0, mpq_queue_new(&q, NULL));
	ASSERT_EQ(MPQ_BACKEND_MEMFD, mpq_queue_backend(q));
	mpq_queue_free(q);

	setenv("MPQ_BACKEND", "kmod", 1);
	if (have) {
		ASSERT_EQ(0, mpq_queue_new(&q, NULL));
		ASSERT_EQ(MPQ_BACKEND_KMOD, mpq_queue_backend(q));
		mpq_queue_free(q);
	} else {
		ASSERT_EQ(-ENODEV, mpq_queue_new(&q, NULL));
	}

	setenv("MPQ_BACKEND", "bogus", 1);
	ASSERT_EQ(-EINVAL, mpq_queue_new(&q, NULL));
	attr.backend = MPQ_BACKEND_MEMFD;	/* the caller's choice wins */
	ASSERT_EQ(0, mpq_queue_new(&q, &attr));
	mpq_queue_free(q);
	ASSERT_STREQ("kmod", mpq_backend_name(MPQ_BACKEND_KMOD));
	ASSERT_STREQ("memfd", mpq_backend_name(MPQ_BACKEND_MEMFD));
}

/*
 * A participant that writes garbage over the queue's memory: every call
 * returns an answer from its contract (or -EUCLEAN), never crashes or
 * hangs, and the corruption is detected. With the module, poll() on the
 * scribbled queue must not upset the kernel either.
 */
TEST_F_TIMEOUT(slow, scribbled_shared_memory_is_reported_not_a_crash, 300)
{
	struct mpq_queue_attr attr = { .maxsize = 8, .msgsize = 64,
				       .spin_ns = -1 };
	uint64_t seed = 0x5eed;
	int iter, detected = 0;

	for (iter = 0; iter < 300; iter++) {
		struct mpq_queue *q;
		unsigned char *map, buf[64];
		size_t size, len, i, n;
		struct pollfd pfd;
		int r[6], k;

		ASSERT_EQ(0, mpq_queue_new(&q, &attr));
		for (k = 0; k < 5; k++)
			ASSERT_EQ(0, mpq_queue_put_nowait(q, "abcdefgh", 8));
		map = queue_map(q, &size);
		ASSERT_NE(NULL, map);

		/* Garbage over a few random bytes of the header and slots. */
		n = 1 + rnd(&seed) % 24;
		for (i = 0; i < n; i++) {
			size_t off = rnd(&seed) % 1024;

			if (rnd(&seed) & 1)
				off = 4096 + rnd(&seed) % (8 * 128);
			map[off] = (unsigned char)rnd(&seed);
		}
		if (iter % 4 == 0)	/* sometimes a whole random header */
			for (i = 0; i < 512; i++)
				map[i] = (unsigned char)rnd(&seed);

		len = sizeof(buf);
		r[0] = mpq_queue_get_nowait(q, buf, &len);
		ASSERT_LE(len, sizeof(buf));
		r[1] = mpq_queue_put_nowait(q, "x", 1);
		len = sizeof(buf);
		r[2] = mpq_queue_get(q, buf, &len, NSEC_PER_MSEC);
		ASSERT_LE(len, sizeof(buf));
		r[3] = mpq_queue_put(q, "y", 1, NSEC_PER_MSEC);
		r[4] = mpq_queue_qsize(q);
		r[5] = mpq_queue_full(q);
		for (k = 0; k < 6; k++) {
			ASSERT_TRUE(r[k] >= 0 || r[k] == -EAGAIN ||
				    r[k] == -ETIMEDOUT || r[k] == -EUCLEAN) {
				TH_LOG("iteration %d call %d returned %d",
				       iter, k, r[k]);
			}
			if (r[k] == -EUCLEAN)
				detected++;
		}
		ASSERT_LE(r[4], 8);
		pfd.fd = mpq_queue_fileno(q);
		pfd.events = POLLIN | POLLOUT;
		ASSERT_LE(0, poll(&pfd, 1, 0));
		munmap(map, size);
		mpq_queue_free(q);
	}
	/* The check must have caught something in 300 rounds of garbage. */
	ASSERT_GT(detected, 0);
	TH_LOG("corruption reported %d times", detected);
}

/*
 * From here on the calling process dies of SIGSYS if it makes a futex or
 * ioctl system call: the two ways the queue can sleep or wake.
 */
static int forbid_wait_and_wake_syscalls(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_futex, 2, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_ioctl, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
	};
	struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]), .filter = f };

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		return -1;
	return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
}

static int put_and_get_without_syscalls(void *arg)
{
	struct mpq_queue *q = arg;
	char buf[16];
	size_t len;
	int i;

	if (forbid_wait_and_wake_syscalls())
		return 1;
	for (i = 0; i < 10000; i++) {
		if (mpq_queue_put_nowait(q, "0123456789", 10) ||
		    mpq_queue_put(q, "abc", 3, MPQ_FOREVER))
			return 2;
		len = sizeof(buf);
		if (mpq_queue_get_nowait(q, buf, &len) || len != 10)
			return 3;
		len = sizeof(buf);
		if (mpq_queue_get(q, buf, &len, MPQ_FOREVER) || len != 3)
			return 4;
	}
	return 0;
}

TEST_F(queue, put_and_get_with_no_one_waiting_make_no_system_call)
{
	pid_t pid = spawn(put_and_get_without_syscalls, self->q);

	/* 128 + SIGSYS here would mean a futex or ioctl call was made. */
	ASSERT_EQ(0, wait_child(pid, 30000));
}

static int get_one(void *arg)
{
	char buf[16];
	size_t len = sizeof(buf);

	return mpq_queue_get(arg, buf, &len, MPQ_FOREVER) ? 1 : 0;
}

static int asleep(struct mpq_queue *q, struct mpq_queue_shm *shm)
{
	if (mpq_queue_backend(q) == MPQ_BACKEND_KMOD)
		return __atomic_load_n(&shm->poll_wanted, __ATOMIC_ACQUIRE) &
		       MPQ_POLL_IN;
	return __atomic_load_n(&shm->nonempty, __ATOMIC_ACQUIRE) &
	       MPQ_FUTEX_SLEEPING;
}

static int wake_once_then_put_quietly(void *arg)
{
	struct mpq_queue *q = arg;
	int i;

	if (mpq_queue_put_nowait(q, "wake", 4))	/* this one wakes */
		return 1;
	if (forbid_wait_and_wake_syscalls())
		return 2;
	for (i = 0; i < 100; i++)
		if (mpq_queue_put_nowait(q, "more", 4))
			return 3;
	return 0;
}

/*
 * A consumer asleep in get is woken by the first put; while it has not
 * run yet (here: it is stopped), further puts must not call FUTEX_WAKE
 * again: one system call per sleep, not one per message.
 */
TEST(a_sleeper_costs_one_wake_up_not_one_per_message)
{
	struct mpq_queue_attr attr = { .maxsize = 128, .msgsize = 16,
				       .spin_ns = -1 };
	struct mpq_queue_shm *shm;
	siginfo_t stopped = { 0 };
	struct mpq_queue *q;
	pid_t consumer, producer;
	int64_t end;
	size_t size;

	ASSERT_EQ(0, mpq_queue_new(&q, &attr));
	shm = queue_map(q, &size);
	ASSERT_NE(NULL, shm);
	consumer = spawn(get_one, q);
	/* Asleep: on the futex (memfd) or in poll() on the fd (kmod). */
	end = now_ns() + 10 * NSEC_PER_SEC;
	while (!asleep(q, shm) && now_ns() < end)
		sleep_ms(1);
	ASSERT_TRUE(asleep(q, shm));
	sleep_ms(20);
	ASSERT_EQ(0, kill(consumer, SIGSTOP));
	/*
	 * Stopped for good before the producer starts: a sleeper woken by
	 * the signal goes through poll() once more on its way to stopping,
	 * and that would ask for another wake-up.
	 */
	ASSERT_EQ(0, waitid(P_PID, consumer, &stopped, WSTOPPED | WNOWAIT));
	producer = spawn(wake_once_then_put_quietly, q);
	EXPECT_EQ(0, wait_child(producer, 30000));
	kill(consumer, SIGCONT);
	ASSERT_EQ(0, wait_child(consumer, 10000));
	ASSERT_EQ(100, mpq_queue_qsize(q));
	munmap(shm, size);
	mpq_queue_free(q);
}

struct answerer {
	struct mpq_queue *ask, *answer;
};

static int ask_then_wait_for_the_answer(void *arg)
{
	struct answerer *a = arg;
	char buf[16];
	size_t len = sizeof(buf);

	if (mpq_queue_put(a->ask, "ask", 3, MPQ_FOREVER))
		return 1;
	return mpq_queue_get(a->answer, buf, &len, MPQ_FOREVER) ? 2 : 0;
}

/*
 * A get right after a put looks first, then spins, and reads the spin's
 * clock a pass late (queue.c): its spin still ends, and it sleeps until
 * the answer comes.
 */
TEST(a_get_after_a_put_spins_then_sleeps_until_the_answer)
{
	struct mpq_queue_attr attr = { .maxsize = 8, .msgsize = 16,
				       .spin_ns = 2000000 };
	struct mpq_queue_shm *shm;
	struct answerer a;
	pid_t asker;
	int64_t end;
	size_t size;

	ASSERT_EQ(0, mpq_queue_new(&a.ask, &attr));
	ASSERT_EQ(0, mpq_queue_new(&a.answer, &attr));
	shm = queue_map(a.answer, &size);
	ASSERT_NE(NULL, shm);
	asker = spawn(ask_then_wait_for_the_answer, &a);
	end = now_ns() + 10 * NSEC_PER_SEC;
	while (!asleep(a.answer, shm) && now_ns() < end)
		sleep_ms(1);
	if (!asleep(a.answer, shm))
		kill(asker, SIGKILL);	/* spinning for good */
	ASSERT_TRUE(asleep(a.answer, shm));
	ASSERT_EQ(1, mpq_queue_qsize(a.ask));
	ASSERT_EQ(0, mpq_queue_put(a.answer, "answer", 6, MPQ_FOREVER));
	EXPECT_EQ(0, wait_child(asker, 10000));
	munmap(shm, size);
	mpq_queue_free(a.ask);
	mpq_queue_free(a.answer);
}

TEST_HARNESS_MAIN
