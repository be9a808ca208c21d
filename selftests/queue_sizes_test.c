// SPDX-License-Identifier: GPL-2.0
/*
 * Queues sized as Python sizes them (issue 12), one test per promise, on
 * the backend the environment selects (memfd natively, kmod in the VM):
 *  - maxsize is exact: maxsize 3 holds 3, and qsize/full agree;
 *  - maxsize 0, the default, is unbounded: 100,000 puts before any
 *    consumer neither fail nor block;
 *  - a message larger than the slot goes through, out of line, up to
 *    hundreds of MiB, in place for reserve and peek; and a SIGKILL in the
 *    middle of a put or a get of one loses nothing committed, and leaves
 *    no blob behind once the queue has been drained.
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "kselftest_harness.h"
#include "helpers.h"

#define SEC	NSEC_PER_SEC

/* Tests that may take minutes under TCG or ASan. */
FIXTURE(slow) {};
FIXTURE_SETUP(slow) {}
FIXTURE_TEARDOWN(slow) {}

static struct mpq_queue *queue(uint32_t maxsize, uint32_t msgsize)
{
	struct mpq_queue_attr attr = { .maxsize = maxsize, .msgsize = msgsize };
	struct mpq_queue *q = NULL;

	if (mpq_queue_new(&q, &attr))
		return NULL;
	return q;
}

TEST(maxsize_is_exact_and_qsize_and_full_agree)
{
	static const uint32_t sizes[] = { 1, 2, 3, 5, 33, 64, 1000 };
	unsigned int i;

	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		struct mpq_queue *q = queue(sizes[i], 8);
		uint32_t n, v;
		char buf[8];
		size_t len;

		ASSERT_NE(NULL, q);
		ASSERT_EQ((int)sizes[i], mpq_queue_maxsize(q));
		for (n = 0; n < sizes[i]; n++) {
			ASSERT_EQ(0, mpq_queue_full(q));
			ASSERT_EQ(0, mpq_queue_put_nowait(q, &n, sizeof(n)))
				TH_LOG("maxsize %u: put %u refused", sizes[i], n);
			ASSERT_EQ((int)n + 1, mpq_queue_qsize(q));
		}
		ASSERT_EQ(1, mpq_queue_full(q)) TH_LOG("maxsize %u", sizes[i]);
		ASSERT_EQ(-EAGAIN, mpq_queue_put_nowait(q, &n, sizeof(n)))
			TH_LOG("maxsize %u holds more than %u", sizes[i], sizes[i]);
		ASSERT_EQ(-ETIMEDOUT, mpq_queue_put(q, &n, sizeof(n),
						    NSEC_PER_MSEC));
		/* A zero-copy reservation counts as a put. */
		{
			struct mpq_msg m = { 0 };

			ASSERT_EQ(-EAGAIN, mpq_queue_reserve(q, 4, &m, 0));
		}
		ASSERT_EQ((int)sizes[i], mpq_queue_qsize(q));
		/* One out, one in, again and again: still exactly maxsize. */
		for (n = 0; n < 3 * sizes[i] + 3; n++) {
			len = sizeof(buf);
			ASSERT_EQ(0, mpq_queue_get_nowait(q, buf, &len));
			memcpy(&v, buf, sizeof(v));
			ASSERT_EQ(n, v);
			ASSERT_EQ(0, mpq_queue_full(q));
			v = n + sizes[i];
			ASSERT_EQ(0, mpq_queue_put_nowait(q, &v, sizeof(v)));
			ASSERT_EQ(1, mpq_queue_full(q));
			ASSERT_EQ(-EAGAIN, mpq_queue_put_nowait(q, &v, sizeof(v)));
		}
		mpq_queue_free(q);
	}
}

static int take_all_in_order(struct mpq_queue *q, uint32_t n)
{
	uint32_t i, v;
	size_t len;

	for (i = 0; i < n; i++) {
		len = sizeof(v);
		if (mpq_queue_get(q, &v, &len, 30 * SEC))
			return 1;
		if (len != sizeof(v) || v != i)
			return 2;
	}
	len = sizeof(v);
	return mpq_queue_get_nowait(q, &v, &len) == -EAGAIN ? 0 : 3;
}

TEST_F_TIMEOUT(slow, the_default_queue_is_unbounded_100000_puts_before_any_consumer, 300)
{
	const uint32_t n = 100000;
	struct mpq_queue *q[2];
	uint32_t i;
	int k;

	ASSERT_EQ(0, mpq_queue_new(&q[0], NULL));
	ASSERT_EQ(0, mpq_simple_queue_new(&q[1], NULL));
	for (k = 0; k < 2; k++) {
		pid_t pid;

		ASSERT_EQ(0, mpq_queue_maxsize(q[k]));
		for (i = 0; i < n; i++) {
			ASSERT_EQ(0, mpq_queue_put_nowait(q[k], &i, sizeof(i)))
				TH_LOG("put %u of an unbounded queue failed", i);
		}
		ASSERT_EQ(0, mpq_queue_full(q[k]));
		ASSERT_EQ((int)n, mpq_queue_qsize(q[k]));
		/* Now the consumer starts, in another process. */
		pid = fork();
		if (pid == 0)
			_exit(take_all_in_order(q[k], n));
		ASSERT_EQ(0, wait_child(pid, 120000));
		ASSERT_EQ(1, mpq_queue_empty(q[k]));
		mpq_queue_free(q[k]);
	}
}

TEST_F_TIMEOUT(slow, an_unbounded_queue_keeps_fifo_while_it_overflows_and_drains, 300)
{
	struct mpq_queue *q;
	uint32_t put = 0, got = 0, v;
	uint64_t seed = 0xf1f0;
	size_t len;
	int round;

	ASSERT_EQ(0, mpq_queue_new(&q, NULL));
	/* Waves well past the ring and back to empty, interleaved. */
	for (round = 0; round < 40; round++) {
		uint32_t puts = (uint32_t)(rnd(&seed) % 5000);
		uint32_t gets = (uint32_t)(rnd(&seed) % 5000);

		while (puts--) {
			ASSERT_EQ(0, mpq_queue_put_nowait(q, &put, sizeof(put)));
			put++;
		}
		while (gets-- && got < put) {
			len = sizeof(v);
			ASSERT_EQ(0, mpq_queue_get_nowait(q, &v, &len));
			ASSERT_EQ(got, v);
			got++;
		}
		ASSERT_EQ((int)(put - got), mpq_queue_qsize(q));
	}
	while (got < put) {
		len = sizeof(v);
		ASSERT_EQ(0, mpq_queue_get(q, &v, &len, SEC));
		ASSERT_EQ(got, v);
		got++;
	}
	mpq_queue_free(q);
}

static void fill(void *p, size_t n, uint64_t seed)
{
	uint64_t *w = p;
	size_t i;

	for (i = 0; i < n / 8; i++)
		w[i] = (i + seed) * 0x9e3779b97f4a7c15ULL;
	for (i = n / 8 * 8; i < n; i++)
		((unsigned char *)p)[i] = (unsigned char)(i ^ seed);
}

/* Does p hold fill(p, n, seed) from byte 8 * from on? */
static int check_from(const void *p, size_t n, uint64_t seed, size_t from)
{
	const uint64_t *w = p;
	size_t i;

	for (i = from; i < n / 8; i++)
		if (w[i] != (i + seed) * 0x9e3779b97f4a7c15ULL)
			return 0;
	for (i = n / 8 * 8; i < n; i++)
		if (((const unsigned char *)p)[i] != (unsigned char)(i ^ seed))
			return 0;
	return 1;
}

static int check(const void *p, size_t n, uint64_t seed)
{
	return check_from(p, n, seed, 0);
}

TEST_F_TIMEOUT(slow, messages_larger_than_the_slot_go_through_up_to_256mib, 600)
{
	static const size_t sizes[] = { 65, 4093, 1 << 20, (16 << 20) + 5,
					256 << 20 };
	struct mpq_queue *q = queue(4, 64);
	unsigned int i;
	void *buf;
	pid_t pid;

	ASSERT_NE(NULL, q);
	ASSERT_EQ(64, mpq_queue_msgsize(q));
	buf = malloc(256 << 20);
	ASSERT_NE(NULL, buf);
	/* Copying put in another process, copying get here. */
	pid = fork();
	if (pid == 0) {
		for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
			fill(buf, sizes[i], i);
			if (mpq_queue_put(q, buf, sizes[i], 60 * SEC))
				_exit(10 + i);
		}
		_exit(0);
	}
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		size_t len = 10;

		/* Too small a buffer: its size, and the message stays. */
		ASSERT_EQ(-EMSGSIZE, mpq_queue_get(q, buf, &len, 60 * SEC));
		ASSERT_EQ(sizes[i], len);
		ASSERT_EQ(1, mpq_queue_qsize(q) >= 1);
		len = 256 << 20;
		ASSERT_EQ(0, mpq_queue_get(q, buf, &len, 60 * SEC));
		ASSERT_EQ(sizes[i], len);
		ASSERT_TRUE(check(buf, len, i)) TH_LOG("message %u corrupt", i);
	}
	ASSERT_EQ(0, wait_child(pid, 120000));
	/* In place: reserve past the slot size, peek it in place. */
	pid = fork();
	if (pid == 0) {
		struct mpq_msg m = { 0 };

		for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
			if (mpq_queue_reserve(q, sizes[i], &m, 60 * SEC))
				_exit(20 + i);
			if (m.len < sizes[i])
				_exit(30 + i);
			fill(m.data, sizes[i], 100 + i);
			if (mpq_queue_commit(q, &m, sizes[i]))
				_exit(40 + i);
		}
		_exit(0);
	}
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		struct mpq_msg m = { 0 };

		ASSERT_EQ(0, mpq_queue_peek(q, &m, 60 * SEC));
		ASSERT_EQ(sizes[i], m.len);
		ASSERT_TRUE(check(m.data, m.len, 100 + i));
		ASSERT_EQ(0, mpq_queue_release(q, &m));
	}
	ASSERT_EQ(0, wait_child(pid, 120000));
	ASSERT_EQ(1, mpq_queue_empty(q));
	free(buf);
	mpq_queue_free(q);
}

/* --- SIGKILL in the middle of large messages ----------------------------- */

#define STORM_N	400

struct storm {
	uint32_t count[STORM_N];	/* times each id was taken intact */
	uint32_t sent;			/* ids below it: put returned */
	uint32_t bad;			/* a message taken corrupt */
};

static size_t storm_size(uint32_t id)
{
	/* Mostly out of line, some in the slot; up to 3 MiB. */
	return id % 5 == 0 ? 8 + id % 50 : 100 + (id * 7919u) % (3 << 20);
}

static void storm_put(struct mpq_queue *q, struct storm *sh, void *buf)
{
	uint32_t id;

	for (id = 0; id < STORM_N; id++) {
		size_t n = storm_size(id);

		fill(buf, n, id);
		memcpy(buf, &id, sizeof(id));
		if (id % 2) {
			if (mpq_queue_put(q, buf, n, 20 * SEC))
				_exit(10);
		} else {
			struct mpq_msg m = { 0 };

			if (mpq_queue_reserve(q, n, &m, 20 * SEC))
				_exit(11);
			memcpy(m.data, buf, n);
			if (mpq_queue_commit(q, &m, n))
				_exit(12);
		}
		__atomic_store_n(&sh->sent, id + 1, __ATOMIC_SEQ_CST);
	}
	_exit(0);
}

static void note(struct storm *sh, const void *p, size_t len)
{
	uint32_t id;

	memcpy(&id, p, sizeof(id));
	/* The id overwrote the first word of the pattern: check the rest. */
	if (id >= STORM_N || len != storm_size(id) ||
	    !check_from(p, len, id, 1)) {
		__atomic_add_fetch(&sh->bad, 1, __ATOMIC_SEQ_CST);
		return;
	}
	__atomic_add_fetch(&sh->count[id], 1, __ATOMIC_SEQ_CST);
}

static void storm_get(struct mpq_queue *q, struct storm *sh, void *buf,
		      int peek)
{
	for (;;) {
		size_t len = 4 << 20;
		struct mpq_msg m = { 0 };
		int r;

		if (peek) {
			r = mpq_queue_peek(q, &m, 20 * SEC);
			if (r)
				_exit(r == -ETIMEDOUT ? 0 : 20);
			note(sh, m.data, m.len);
			if (mpq_queue_release(q, &m))
				_exit(21);
		} else {
			r = mpq_queue_get(q, buf, &len, 20 * SEC);
			if (r)
				_exit(r == -ETIMEDOUT ? 0 : 22);
			note(sh, buf, len);
		}
	}
}

TEST_F_TIMEOUT(slow, sigkill_mid_put_or_get_of_large_messages_loses_nothing, 900)
{
	int iters = getenv("MPQ_IN_VM") ? 12 : 40, it;
	uint64_t seed = 0x1a26e;
	void *buf = malloc(4 << 20);

	ASSERT_NE(NULL, buf);
	for (it = 0; it < iters; it++) {
		struct mpq_queue *q = queue(8, 64);
		struct storm *sh = shared_alloc(sizeof(*sh));
		int kill_consumer = it % 2, id, twice = 0, status;
		pid_t prod, cons[2];

		ASSERT_NE(NULL, q);
		memset(sh, 0, sizeof(*sh));
		prod = fork();
		if (prod == 0)
			storm_put(q, sh, buf);
		/*
		 * A consumer to be killed takes by peek, noting each message
		 * before it releases it: one killed after a copying get
		 * returned had the message, which the test cannot see.
		 */
		cons[0] = fork();
		if (cons[0] == 0)
			storm_get(q, sh, buf, kill_consumer || it % 4 < 2);
		/* Let it run a random while, then kill one side. */
		sleep_ms((int)(rnd(&seed) % 300));
		kill(kill_consumer ? cons[0] : prod, SIGKILL);
		/* A producer may have put all it had before the kill. */
		status = wait_child(kill_consumer ? cons[0] : prod, 10000);
		ASSERT_TRUE(status == 128 + SIGKILL ||
			    (!kill_consumer && status == 0))
			TH_LOG("victim's status %d", status);
		/* A survivor consumer takes the rest. */
		cons[1] = fork();
		if (cons[1] == 0)
			storm_get(q, sh, buf, it % 4 >= 2);
		if (kill_consumer)
			ASSERT_EQ(0, wait_child(prod, 120000));
		for (id = 0; id < 6000; id++) {
			uint32_t sent = __atomic_load_n(&sh->sent,
							__ATOMIC_SEQ_CST);
			int all = 1, k;

			for (k = 0; k < (int)sent; k++)
				if (!__atomic_load_n(&sh->count[k],
						     __ATOMIC_SEQ_CST))
					all = 0;
			if (all)
				break;
			sleep_ms(20);
		}
		kill(cons[1], SIGKILL);
		wait_child(cons[1], 10000);
		if (!kill_consumer) {
			kill(cons[0], SIGKILL);
			wait_child(cons[0], 10000);
		}
		ASSERT_EQ(0, sh->bad) TH_LOG("corrupt messages (it %d)", it);
		for (id = 0; id < STORM_N; id++) {
			if ((uint32_t)id < sh->sent)
				ASSERT_LE(1, sh->count[id])
					TH_LOG("id %d lost (it %d)", id, it);
			if (sh->count[id] > 1)
				twice++;
		}
		/* Only what a killed consumer held may come twice. */
		ASSERT_LE(twice, kill_consumer);
		mpq_queue_free(q);
		munmap(sh, sizeof(*sh));
	}
	free(buf);
}

/* Objects alive in the module, -1 without it. */
static long module_objects(void)
{
	FILE *f = fopen("/sys/module/mpq/parameters/objects", "r");
	long n = -1;

	if (!f)
		return -1;
	if (fscanf(f, "%ld", &n) != 1)
		n = -1;
	fclose(f);
	return n;
}

/*
 * Blobs the queue holds that its pool (struct mpq_queue_shm.blob_free
 * and blob_free_more) does not account for: with the module, objects
 * beyond the queue and the pooled blobs; with memfd, bytes allocated past
 * the ring beyond the pooled blobs' (an id's low 6 bits are its class:
 * 2^class pages).
 */
static long blobs_unaccounted(struct mpq_queue *q, long base_objects)
{
	int fd = mpq_queue_fileno(q);
	long page = sysconf(_SC_PAGESIZE), pooled = 0, pooled_bytes = 0;
	struct mpq_queue_shm *shm;
	size_t size = 4096;
	unsigned int i;
	long ret;

	if (mpq_queue_backend(q) == MPQ_BACKEND_KMOD)
		shm = queue_map(q, &size);
	else
		shm = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
	if (!shm || shm == MAP_FAILED)
		return -1;
	for (i = 0; i < (sizeof(shm->blob_free) +
			 sizeof(shm->blob_free_more)) / 8; i++) {
		uint64_t v = i < 8 ? shm->blob_free[i] :
			     shm->blob_free_more[i - 8];

		if (v) {
			pooled++;
			pooled_bytes += page << (v & 63);
		}
	}
	if (mpq_queue_backend(q) == MPQ_BACKEND_KMOD) {
		ret = module_objects() - base_objects - 1 - pooled;
	} else {
		/*
		 * Pages allocated past the ring: the file's blocks, the ring's
		 * own made whole first (st_blocks counts fallocated pages,
		 * which mincore and SEEK_DATA do not).
		 */
		struct stat st;

		if (fallocate(fd, 0, 0, (off_t)shm->map_size) || fstat(fd, &st))
			return -1;
		ret = (long)st.st_blocks * 512 - (long)shm->map_size -
		      pooled_bytes;
	}
	munmap(shm, size);
	return ret;
}

TEST_F_TIMEOUT(slow, sigkill_at_random_points_leaves_no_blob_behind, 900)
{
	int iters = getenv("MPQ_IN_VM") ? 10 : 30, it;
	uint64_t seed = 0xb10b5;
	void *buf = malloc(4 << 20);

	ASSERT_NE(NULL, buf);
	for (it = 0; it < iters; it++) {
		long base = module_objects(), left;
		struct mpq_queue *q = queue(8, 64);
		struct storm *sh = shared_alloc(sizeof(*sh));
		int first = (int)(rnd(&seed) % 2), id, twice = 0;
		pid_t pid[2];
		size_t len;
		int r;

		ASSERT_NE(NULL, q);
		ASSERT_NE(NULL, sh);
		memset(sh, 0, sizeof(*sh));
		pid[0] = fork();
		if (pid[0] == 0)
			storm_put(q, sh, buf);
		/* Peeks: a message is noted before it is released. */
		pid[1] = fork();
		if (pid[1] == 0)
			storm_get(q, sh, buf, 1);
		/* Both killed, one after the other, each at a random point. */
		sleep_ms(1 + (int)(rnd(&seed) % 80));
		kill(pid[first], SIGKILL);
		sleep_ms((int)(rnd(&seed) % 20));
		kill(pid[!first], SIGKILL);
		wait_child(pid[0], 10000);
		wait_child(pid[1], 10000);
		/* Drain: a get that waits cleans up after the dead first. */
		for (;;) {
			len = 4 << 20;
			r = mpq_queue_get(q, buf, &len, SEC / 20);
			if (r)
				break;
			note(sh, buf, len);
		}
		ASSERT_EQ(-ETIMEDOUT, r);
		ASSERT_EQ(0, sh->bad) TH_LOG("corrupt messages (it %d)", it);
		for (id = 0; id < STORM_N; id++) {
			if ((uint32_t)id < sh->sent)
				ASSERT_LE(1, sh->count[id])
					TH_LOG("id %d lost (it %d)", id, it);
			if (sh->count[id] > 1)
				twice++;
		}
		ASSERT_LE(twice, 1);
		left = blobs_unaccounted(q, base);
		ASSERT_EQ(0, left)
			TH_LOG("it %d: %ld %s of blobs left behind", it, left,
			       mpq_queue_backend(q) == MPQ_BACKEND_KMOD ?
			       "objects" : "bytes");
		mpq_queue_free(q);
		munmap(sh, sizeof(*sh));
	}
	free(buf);
}

/*
 * A queue of 8-byte messages packs them in 16-byte slots, four to a
 * cache line, and still takes a message of any length below 4 GiB: out
 * of line, its length in the slot's len and its blob's id in the slot's
 * 8 bytes; a reservation committed short enough for the slot goes in it
 * (the len then says where it is), and leaves no blob. 4 GiB or more is
 * EMSGSIZE there, with nothing put.
 */
TEST(a_queue_of_8_byte_messages_has_16_byte_slots_and_takes_any_length)
{
	static const size_t lens[] = { 0, 1, 8, 9, 16, 100, 4096, 70000 };
	long base = module_objects();	/* before the queue: it counts */
	struct mpq_queue *q = queue(4, 8);
	struct mpq_queue_shm *shm;
	char *buf = malloc(70000), *out = malloc(70000);
	struct mpq_msg m = { 0 };
	size_t size, len;
	unsigned int i;

	ASSERT_NE(NULL, q);
	ASSERT_NE(NULL, buf);
	ASSERT_NE(NULL, out);
	shm = queue_map(q, &size);
	ASSERT_NE(NULL, shm);
	ASSERT_EQ(16, shm->slot_size);
	for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		fill(buf, lens[i], i);
		ASSERT_EQ(0, mpq_queue_put(q, buf, lens[i], 0));
		/* The slot says the length, whichever way it is kept. */
		ASSERT_EQ(lens[i], shm_head_slot(shm)->len);
		len = 70000;
		ASSERT_EQ(0, mpq_queue_get(q, out, &len, 0));
		ASSERT_EQ(lens[i], len);
		ASSERT_TRUE(check(out, len, i)) TH_LOG("length %zu", lens[i]);
	}
	/* Reserved out of line, committed short: in the slot after all. */
	ASSERT_EQ(0, mpq_queue_reserve(q, 100, &m, 0));
	ASSERT_LE(100, m.len);
	fill(m.data, 5, 7);
	ASSERT_EQ(0, mpq_queue_commit(q, &m, 5));
	ASSERT_EQ(5, shm_head_slot(shm)->len);
	/* Committed longer than a slot: out of line, peeked in place. */
	ASSERT_EQ(0, mpq_queue_reserve(q, 100, &m, 0));
	fill(m.data, 50, 8);
	ASSERT_EQ(0, mpq_queue_commit(q, &m, 50));
	len = 8;
	ASSERT_EQ(0, mpq_queue_get(q, out, &len, 0));
	ASSERT_EQ(5, len);
	ASSERT_TRUE(check(out, 5, 7));
	ASSERT_EQ(50, shm_head_slot(shm)->len);
	ASSERT_EQ(0, mpq_queue_peek(q, &m, 0));
	ASSERT_EQ(50, m.len);
	ASSERT_TRUE(check(m.data, 50, 8));
	ASSERT_EQ(0, mpq_queue_release(q, &m));
	/* 4 GiB does not fit the slot's len, nor its 8 bytes both. */
	ASSERT_EQ(-EMSGSIZE, mpq_queue_put(q, buf, 1ULL << 32, 0));
	ASSERT_EQ(-EMSGSIZE, mpq_queue_put(q, buf, (1ULL << 32) - 3, 0));
	ASSERT_EQ(-EMSGSIZE, mpq_queue_reserve(q, 1ULL << 32, &m, 0));
	ASSERT_EQ(0, mpq_queue_qsize(q));
	ASSERT_EQ(0, blobs_unaccounted(q, base));
	munmap(shm, size);
	mpq_queue_free(q);
	free(buf);
	free(out);
}

/*
 * Where a slot has 16 bytes or more, a message of 4 GiB or more keeps its
 * whole descriptor there (len MPQ_SLOT_EXT): an out-of-line message
 * rewritten to that form comes out the same.
 */
TEST(an_out_of_line_message_in_the_long_form_comes_out_the_same)
{
	struct mpq_queue *q = queue(4, 16);
	struct mpq_slot_ext e = { .len = 100 };
	struct mpq_queue_shm *shm;
	char buf[100], out[200];
	struct mpq_slot *s;
	size_t size, len = sizeof(out);

	ASSERT_NE(NULL, q);
	shm = queue_map(q, &size);
	ASSERT_NE(NULL, shm);
	ASSERT_EQ(24, shm->slot_size);
	fill(buf, sizeof(buf), 3);
	ASSERT_EQ(0, mpq_queue_put(q, buf, sizeof(buf), 0));
	s = shm_head_slot(shm);
	ASSERT_EQ(100, s->len);
	memcpy(&e.id, s + 1, sizeof(e.id));
	memcpy(s + 1, &e, sizeof(e));
	s->len = MPQ_SLOT_EXT;
	ASSERT_EQ(0, mpq_queue_get(q, out, &len, 0));
	ASSERT_EQ(100, len);
	ASSERT_TRUE(check(out, len, 3));
	munmap(shm, size);
	mpq_queue_free(q);
}

/*
 * Two messages put, the first's len scribbled to MPQ_SLOT_EXT: its get
 * is -EUCLEAN, and the second comes out intact after it.
 */
static void scribble_long_form(struct __test_metadata *_metadata,
			       struct mpq_queue *q, struct mpq_queue_shm *shm)
{
	uint64_t v = 7, out = 0;
	size_t len = 8;

	ASSERT_EQ(0, mpq_queue_put(q, &v, 8, 0));
	ASSERT_EQ(0, mpq_queue_put(q, &v, 8, 0));
	shm_head_slot(shm)->len = MPQ_SLOT_EXT;
	ASSERT_EQ(-EUCLEAN, mpq_queue_get(q, &out, &len, 0));
	len = 8;
	ASSERT_EQ(0, mpq_queue_get(q, &out, &len, 0));
	ASSERT_EQ(7, out);
}

/*
 * In slots of 8 data bytes there is no room for the long form: a len of
 * MPQ_SLOT_EXT there is a scribble, and its descriptor would be read
 * from the next slot, or, in the ring's last slot, past the mapping. It
 * is dropped as corrupt (-EUCLEAN), nothing read beyond the slot, and
 * the queue goes on.
 */
TEST(a_long_form_descriptor_where_it_has_no_room_is_corrupt_not_a_crash)
{
	struct mpq_queue *q = queue(256, 8);
	struct mpq_queue_shm *shm;
	uint64_t v = 7, out;
	size_t size, len;
	int i;

	ASSERT_NE(NULL, q);
	shm = queue_map(q, &size);
	ASSERT_NE(NULL, shm);
	ASSERT_EQ(16, shm->slot_size);
	/* The ring ends where the mapping does: its last slot is last. */
	ASSERT_EQ(shm->map_size, shm->data_off + 256 * 16);
	/*
	 * In the middle of the ring the next slot's header would be read
	 * as the length: a published one's seq and len make it far more
	 * than the buffer, which would be EMSGSIZE, the slot kept.
	 */
	scribble_long_form(_metadata, q, shm);
	for (i = 2; i < 255; i++) {
		ASSERT_EQ(0, mpq_queue_put(q, &v, 8, 0));
		len = 8;
		ASSERT_EQ(0, mpq_queue_get(q, &out, &len, 0));
	}
	ASSERT_EQ(255, shm->head & 255);
	scribble_long_form(_metadata, q, shm);
	ASSERT_EQ(0, mpq_queue_qsize(q));
	munmap(shm, size);
	mpq_queue_free(q);
}

/*
 * An unbounded queue whose ring is full hands out a reservation with no
 * slot (it goes to the overflow at commit): committed short enough for a
 * slot it is put as a copy, longer it stays out of line; both come out
 * intact after the ring's messages, and no blob is left beyond the
 * overflow's one chunk, which a drained overflow keeps for its next.
 */
TEST(a_reservation_without_a_slot_committed_short_goes_as_a_copy)
{
	long base = module_objects(), kept;	/* before the queue */
	struct mpq_queue *q = queue(0, 8);
	struct mpq_msg m = { 0 };
	char out[100];
	uint64_t v = 0;
	size_t len;
	int i;

	ASSERT_NE(NULL, q);
	/* The overflow's chunk made once, drained, and counted. */
	for (i = 0; i < 1025; i++)
		ASSERT_EQ(0, mpq_queue_put(q, &v, 8, 0));
	for (i = 0; i < 1025; i++) {
		len = 8;
		ASSERT_EQ(0, mpq_queue_get(q, &v, &len, 0));
	}
	kept = blobs_unaccounted(q, base);
	ASSERT_LE(0, kept);
	for (i = 0; i < 1024; i++) {
		v = i;
		ASSERT_EQ(0, mpq_queue_put(q, &v, 8, 0));
	}
	ASSERT_EQ(0, mpq_queue_reserve(q, 100, &m, 0));
	fill(m.data, 5, 11);
	ASSERT_EQ(0, mpq_queue_commit(q, &m, 5));
	ASSERT_EQ(0, mpq_queue_reserve(q, 100, &m, 0));
	fill(m.data, 50, 12);
	ASSERT_EQ(0, mpq_queue_commit(q, &m, 50));
	for (i = 0; i < 1024; i++) {
		len = 8;
		ASSERT_EQ(0, mpq_queue_get(q, &v, &len, 0));
		ASSERT_EQ((uint64_t)i, v);
	}
	len = sizeof(out);
	ASSERT_EQ(0, mpq_queue_get(q, out, &len, 0));
	ASSERT_EQ(5, len);
	ASSERT_TRUE(check(out, 5, 11));
	len = sizeof(out);
	ASSERT_EQ(0, mpq_queue_get(q, out, &len, 0));
	ASSERT_EQ(50, len);
	ASSERT_TRUE(check(out, 50, 12));
	ASSERT_EQ(kept, blobs_unaccounted(q, base));
	mpq_queue_free(q);
}

TEST_HARNESS_MAIN
