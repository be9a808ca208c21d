// SPDX-License-Identifier: GPL-2.0
/*
 * The promises of mpq_pipe and mpq_conn, one test each, on the backend the
 * environment selects (memfd natively, kmod in the VM). The pattern of
 * most: fork; the child keeps one end and the parent the other, each
 * closing the end it does not use, as with Python's Pipe.
 */
#include <dirent.h>
#include <poll.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>

#include "kselftest_harness.h"
#include "helpers.h"

/* Spawned children are this binary again: see process_test.c. */
static void __attribute__((constructor)) run_spawned_target(void)
{
	mpq_init(NULL, NULL);
}

/*
 * In a spawned child: open the end and the queue named by the handles in
 * arg ("CONN QUEUE"), reply on the end and put on the queue.
 */
static int spawned_replies(const void *arg, size_t len)
{
	char handles[256], *space;
	struct mpq_conn *c;
	struct mpq_queue *q;
	char buf[16];
	size_t n = sizeof(buf);

	if (len >= sizeof(handles))
		return 1;
	memcpy(handles, arg, len);
	handles[len] = 0;
	space = strchr(handles, ' ');
	if (!space)
		return 2;
	*space = 0;
	if (mpq_conn_import(&c, handles) || mpq_queue_import(&q, space + 1))
		return 3;
	if (mpq_conn_recv_bytes_into(c, buf, &n, 10 * NSEC_PER_SEC) ||
	    n != 4 || memcmp(buf, "ping", 4))
		return 4;
	if (mpq_conn_send_bytes(c, "pong", 4, MPQ_FOREVER) ||
	    mpq_queue_put(q, "queued", 6, MPQ_FOREVER))
		return 5;
	mpq_conn_free(c);
	mpq_queue_free(q);
	return 0;
}
MPQ_TARGET(spawned_replies);

/* Message i of a test: length and content both follow from i. */
static void fill(unsigned char *p, size_t n, uint64_t seed)
{
	size_t i;

	for (i = 0; i < n; i++)
		p[i] = (unsigned char)(rnd(&seed) >> 56);
}

static uint64_t checksum(const unsigned char *p, size_t n)
{
	uint64_t h = 1469598103934665603ULL;
	size_t i;

	for (i = 0; i < n; i++)
		h = (h ^ p[i]) * 1099511628211ULL;
	return h;
}

FIXTURE(pipe) {
	struct mpq_conn *a, *b;
};

FIXTURE_SETUP(pipe)
{
	ASSERT_EQ(0, mpq_pipe(&self->a, &self->b, 1, NULL));
}

FIXTURE_TEARDOWN(pipe)
{
	mpq_conn_free(self->a);
	mpq_conn_free(self->b);
}

TEST_F(pipe, duplex_ends_send_and_receive_both_ways)
{
	char buf[16];
	size_t len = sizeof(buf);

	ASSERT_EQ(0, mpq_conn_send_bytes(self->a, "ping", 4, MPQ_FOREVER));
	ASSERT_EQ(0, mpq_conn_recv_bytes_into(self->b, buf, &len, MPQ_FOREVER));
	ASSERT_EQ(4, len);
	ASSERT_EQ(0, memcmp(buf, "ping", 4));
	ASSERT_EQ(0, mpq_conn_send_bytes(self->b, "pong!", 5, MPQ_FOREVER));
	len = sizeof(buf);
	ASSERT_EQ(0, mpq_conn_recv_bytes_into(self->a, buf, &len, MPQ_FOREVER));
	ASSERT_EQ(5, len);
	ASSERT_EQ(0, memcmp(buf, "pong!", 5));
}

TEST(one_way_pipe_sends_from_the_second_end_only)
{
	struct mpq_conn *r, *w;
	char buf[8];
	size_t len = sizeof(buf);

	ASSERT_EQ(0, mpq_pipe(&r, &w, 0, NULL));
	ASSERT_EQ(-EBADF, mpq_conn_send_bytes(r, "x", 1, 0));
	ASSERT_EQ(-EBADF, mpq_conn_recv_bytes_into(w, buf, &len, 0));
	ASSERT_EQ(0, mpq_conn_send_bytes(w, "x", 1, 0));
	ASSERT_EQ(0, mpq_conn_recv_bytes_into(r, buf, &len, 0));
	ASSERT_EQ(1, len);
	mpq_conn_free(r);
	mpq_conn_free(w);
}

/*
 * Messages of every length through a small ring, checked byte for byte.
 * One way (!answer): the child only sends and long messages cross the
 * ring in many frames. Answers: the child sends each message back, so
 * its sends follow its receives and the parent's receives its sends:
 * both take the lean one-frame paths, whose send writes the header's
 * cache line last, here at every offset in the line and across the
 * ring's end.
 */
static void every_length(struct __test_metadata *_metadata, size_t max,
			 int answer)
{
	struct mpq_pipe_attr attr = { .bufsize = 4096 };
	static unsigned char in[20000], out[20000];
	struct mpq_conn *a, *b;
	size_t n, len;
	pid_t pid;

	ASSERT_LE(max, sizeof(in));
	ASSERT_EQ(0, mpq_pipe(&a, &b, 1, &attr));
	pid = fork();
	if (pid == 0) {
		mpq_conn_close(b);
		for (n = 0; n < max; n += answer ? 1 : 1 + n / 3) {
			len = sizeof(out);
			if (!answer)
				fill(out, n, n);
			else if (mpq_conn_recv_bytes_into(a, out, &len,
							  10 * NSEC_PER_SEC) ||
				 len != n)
				_exit(1);
			if (mpq_conn_send_bytes(a, out, n, 10 * NSEC_PER_SEC))
				_exit(1);
		}
		_exit(0);
	}
	mpq_conn_close(a);
	for (n = 0; n < max; n += answer ? 1 : 1 + n / 3) {
		fill(in, n, n);
		if (answer)
			ASSERT_EQ(0, mpq_conn_send_bytes(b, in, n, 10 * NSEC_PER_SEC));
		len = sizeof(out);
		memset(out, 0xa5, n);
		ASSERT_EQ(0, mpq_conn_recv_bytes_into(b, out, &len, 10 * NSEC_PER_SEC));
		ASSERT_EQ(n, len);
		ASSERT_EQ(0, memcmp(in, out, n)) TH_LOG("length %zu differs", n);
	}
	ASSERT_EQ(0, wait_child(pid, 10000));
	mpq_conn_free(a);
	mpq_conn_free(b);
}

TEST(every_length_crosses_a_small_ring_intact)
{
	every_length(_metadata, 20000, 0);
}

TEST(every_length_answers_intact)
{
	every_length(_metadata, 1200, 1);
}

TEST_F(pipe, short_buffer_is_emsgsize_with_the_size_and_keeps_the_message)
{
	char buf[64];
	size_t len = 5;

	ASSERT_EQ(0, mpq_conn_send_bytes(self->a, "0123456789", 10, 0));
	ASSERT_EQ(-EMSGSIZE, mpq_conn_recv_bytes_into(self->b, buf, &len, 0));
	ASSERT_EQ(10, len);
	len = sizeof(buf);
	ASSERT_EQ(0, mpq_conn_recv_bytes_into(self->b, buf, &len, 0));
	ASSERT_EQ(10, len);
	ASSERT_EQ(0, memcmp(buf, "0123456789", 10));
}

TEST_F(pipe, recv_bytes_allocates_and_honours_maxlength)
{
	void *p = (void *)1;

	ASSERT_EQ(0, mpq_conn_send_bytes(self->a, "hello world", 11, 0));
	ASSERT_EQ(-EMSGSIZE, mpq_conn_recv_bytes(self->b, &p, 4, 0));
	ASSERT_EQ(NULL, p);
	ASSERT_EQ(11, mpq_conn_recv_bytes(self->b, &p, 100, 0));
	ASSERT_EQ(0, memcmp(p, "hello world", 11));
	free(p);
	ASSERT_EQ(0, mpq_conn_send_bytes(self->a, NULL, 0, 0));	/* empty */
	ASSERT_EQ(0, mpq_conn_recv_bytes(self->b, &p, 100, 0));
	free(p);
}

TEST_F(pipe, recv_on_empty_is_eagain_then_etimedout_on_time)
{
	char buf[8];
	size_t len = sizeof(buf);
	int64_t t0;

	ASSERT_EQ(-EAGAIN, mpq_conn_recv_bytes_into(self->b, buf, &len, 0));
	t0 = now_ns();
	ASSERT_EQ(-ETIMEDOUT, mpq_conn_recv_bytes_into(self->b, buf, &len,
						       50 * NSEC_PER_MSEC));
	ASSERT_GE(now_ns() - t0, 50 * NSEC_PER_MSEC);
	ASSERT_LT(now_ns() - t0, 5 * NSEC_PER_SEC);
}

static void big_message(struct __test_metadata *_metadata, size_t size)
{
	struct mpq_conn *a, *b;
	unsigned char *in, *out;
	uint64_t sum;
	size_t len = size;
	pid_t pid;

	in = mmap(NULL, size, PROT_READ | PROT_WRITE,
		  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, in);
	fill(in, size, size);
	sum = checksum(in, size);
	ASSERT_EQ(0, mpq_pipe(&a, &b, 1, NULL));
	pid = fork();
	if (pid == 0) {
		mpq_conn_close(b);
		_exit(mpq_conn_send_bytes(a, in, size, MPQ_FOREVER) ? 1 : 0);
	}
	mpq_conn_close(a);
	munmap(in, size);
	out = mmap(NULL, size, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, out);
	ASSERT_EQ(0, mpq_conn_recv_bytes_into(b, out, &len, MPQ_FOREVER));
	ASSERT_EQ(size, len);
	ASSERT_EQ(sum, checksum(out, size));
	ASSERT_EQ(0, wait_child(pid, 60000));
	munmap(out, size);
	mpq_conn_free(a);
	mpq_conn_free(b);
}

FIXTURE(slow) {};
FIXTURE_SETUP(slow) {}
FIXTURE_TEARDOWN(slow) {}

TEST_F_TIMEOUT(slow, a_64_mib_message_arrives_intact, 300)
{
	big_message(_metadata, 64 << 20);
}

TEST_F_TIMEOUT(slow, a_1_gib_message_arrives_intact, 600)
{
	big_message(_metadata, 1UL << 30);
}

TEST_F(pipe, messages_sent_before_close_arrive_then_epipe)
{
	char buf[8];
	size_t len;
	int i;

	for (i = 0; i < 3; i++)
		ASSERT_EQ(0, mpq_conn_send_bytes(self->a, &i, sizeof(i), 0));
	ASSERT_EQ(0, mpq_conn_close(self->a));
	for (i = 0; i < 3; i++) {
		len = sizeof(buf);
		ASSERT_EQ(0, mpq_conn_recv_bytes_into(self->b, buf, &len, 0));
		ASSERT_EQ(i, *(int *)buf);
	}
	len = sizeof(buf);
	ASSERT_EQ(-EPIPE, mpq_conn_recv_bytes_into(self->b, buf, &len, 0));
	ASSERT_EQ(-EPIPE, mpq_conn_recv_bytes_into(self->b, buf, &len,
						   MPQ_FOREVER));
	ASSERT_EQ(1, mpq_conn_poll(self->b, 0));
	/*
	 * Sending to it: -EPIPE at once with the module (it marks the end
	 * closed); without it, at the latest when the ring is full.
	 */
	if (mpq_conn_backend(self->b) == MPQ_BACKEND_KMOD) {
		ASSERT_EQ(-EPIPE, mpq_conn_send_bytes(self->b, "x", 1, MPQ_FOREVER));
	} else {
		for (i = 0; i < 100000; i++)
			if (mpq_conn_send_bytes(self->b, buf, 8, MPQ_FOREVER))
				break;
		ASSERT_LT(i, 100000);
		ASSERT_EQ(-EPIPE, mpq_conn_send_bytes(self->b, "x", 1, MPQ_FOREVER));
	}
}

static int recv_until_eof(void *arg)
{
	struct mpq_conn **ends = arg;
	char buf[8];
	size_t len = sizeof(buf);

	mpq_conn_close(ends[0]);
	return mpq_conn_recv_bytes_into(ends[1], buf, &len, MPQ_FOREVER) ==
	       -EPIPE ? 0 : 1;
}

TEST_F(pipe, a_blocked_recv_wakes_at_once_when_the_peer_closes)
{
	struct mpq_conn *ends[2] = { self->a, self->b };
	pid_t pid = spawn(recv_until_eof, ends);

	sleep_ms(100);
	ASSERT_TRUE(child_running(pid));
	ASSERT_EQ(0, mpq_conn_close(self->a));	/* the last holder of a */
	ASSERT_EQ(0, wait_child(pid, 5000));
}

static int send_then_die_mid_message(void *arg)
{
	struct mpq_conn **ends = arg;
	static unsigned char big[1 << 20];
	int i;

	mpq_conn_close(ends[1]);
	for (i = 0; i < 3; i++)
		if (mpq_conn_send_bytes(ends[0], &i, sizeof(i), MPQ_FOREVER))
			return 1;
	/* Larger than the ring: blocks part-way until SIGKILL. */
	mpq_conn_send_bytes(ends[0], big, sizeof(big), MPQ_FOREVER);
	return 2;
}

TEST(peer_killed_mid_send_whole_messages_arrive_the_cut_one_never)
{
	struct mpq_pipe_attr attr = { .bufsize = 64 * 1024 };
	struct mpq_conn *ends[2];
	unsigned char *buf = malloc(1 << 20);
	size_t len;
	pid_t pid;
	int i;

	ASSERT_EQ(0, mpq_pipe(&ends[0], &ends[1], 1, &attr));
	pid = spawn(send_then_die_mid_message, ends);
	mpq_conn_close(ends[0]);
	/* Wait until the child is stuck in the big message, then kill it. */
	sleep_ms(300);
	ASSERT_TRUE(child_running(pid));
	kill(pid, SIGKILL);
	ASSERT_EQ(128 + SIGKILL, wait_child(pid, 5000));
	for (i = 0; i < 3; i++) {
		len = 1 << 20;
		ASSERT_EQ(0, mpq_conn_recv_bytes_into(ends[1], buf, &len, 0));
		ASSERT_EQ(sizeof(int), len);
		ASSERT_EQ(i, *(int *)buf);
	}
	len = 1 << 20;
	ASSERT_EQ(-EPIPE, mpq_conn_recv_bytes_into(ends[1], buf, &len,
						   MPQ_FOREVER));
	free(buf);
	mpq_conn_free(ends[0]);
	mpq_conn_free(ends[1]);
}

/* ---- timeouts bound the whole call ------------------------------------ */

/*
 * Wait up to ms for one byte on fd (a child's report). 1 if it came, 0 if
 * not: the hang guard of the timeout tests, so that a call that never
 * returns fails its test instead of wedging the run.
 */
static int report_within(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	char x;

	return poll(&p, 1, ms) == 1 && read(fd, &x, 1) == 1;
}

struct sender_report {
	int first, next, recv, last;	/* what the sender's calls returned */
	int64_t took_ns;		/* how long the timed-out send took */
};

/*
 * The sender: a message far larger than the ring, with a 200 ms timeout,
 * to a receiver that reads nothing; then a small one; report; then
 * receive one message the other way (the direction back still works).
 */
static int send_big_with_a_timeout(struct mpq_conn *c, struct sender_report *r,
				   int report_fd)
{
	size_t size = 4 << 20;
	void *big = calloc(1, size);
	char buf[8];
	size_t len = sizeof(buf);
	int64_t t0 = now_ns();

	r->first = mpq_conn_send_bytes(c, big, size, 200 * NSEC_PER_MSEC);
	r->took_ns = now_ns() - t0;
	r->next = mpq_conn_send_bytes(c, "x", 1, 0);
	if (write(report_fd, "r", 1) != 1)
		return 1;
	r->recv = mpq_conn_recv_bytes_into(c, buf, &len, 10 * NSEC_PER_SEC);
	if (!r->recv && (len != 1 || buf[0] != 'y'))
		r->recv = -EBADMSG;
	/* Now that the ring has room, this also ends the cut message. */
	r->last = mpq_conn_send_bytes(c, "x", 1, 0);
	if (write(report_fd, "r", 1) != 1)
		return 1;
	len = sizeof(buf);
	mpq_conn_recv_bytes_into(c, buf, &len, 10 * NSEC_PER_SEC);
	free(big);
	return 0;
}

/*
 * A receiver that stops reading in the middle of a message, after a
 * first message of before bytes: see the two tests below.
 */
static void cut_by_a_send_timeout(struct __test_metadata *_metadata,
				  size_t before)
{
	struct mpq_pipe_attr attr = { .bufsize = 64 * 1024 };
	struct pollfd pfd = { .events = POLLIN };
	static char buf[20000];
	struct sender_report *r;
	struct mpq_conn *a, *b;
	void *p = NULL;
	int rep[2];
	size_t len;
	pid_t pid;

	r = mmap(NULL, sizeof(*r), PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, r);
	ASSERT_EQ(0, pipe(rep));
	ASSERT_EQ(0, mpq_pipe(&a, &b, 1, &attr));
	ASSERT_EQ(0, mpq_conn_send_bytes(a, buf, before, 0));
	pfd.fd = mpq_conn_fileno(b);
	ASSERT_LE(0, pfd.fd);
	pid = fork();
	if (pid == 0) {
		mpq_conn_close(b);
		_exit(send_big_with_a_timeout(a, r, rep[1]));
	}
	mpq_conn_close(a);
	ASSERT_TRUE(report_within(rep[0], 10000)) {
		TH_LOG("the send with a 200 ms timeout did not return in 10 s");
		kill(pid, SIGKILL);
		wait_child(pid, 1000);
	}
	ASSERT_EQ(-ETIMEDOUT, r->first);
	ASSERT_GE(r->took_ns, 200 * NSEC_PER_MSEC);
	ASSERT_EQ(-EPIPE, r->next);
	/* The receiver: what came before, then the cut message as an error. */
	len = sizeof(buf);
	ASSERT_EQ(0, mpq_conn_recv_bytes_into(b, buf, &len, 0));
	ASSERT_EQ(before, len);
	ASSERT_EQ(-ECONNABORTED, mpq_conn_recv_bytes(b, &p, 8 << 20,
						     5 * NSEC_PER_SEC));
	ASSERT_EQ(NULL, p);
	ASSERT_EQ(1, mpq_conn_poll(b, 0));
	len = sizeof(buf);
	ASSERT_EQ(-EPIPE, mpq_conn_recv_bytes_into(b, buf, &len, MPQ_FOREVER));
	ASSERT_EQ(-EPIPE, mpq_conn_recv_bytes_into(b, buf, &len, 0));
	/*
	 * The module's poll() sees only the ring: the end of file shows
	 * there once the ABORT frame is in it, at once if there was room,
	 * else at the sender's next call (without the module a wake-up may
	 * be spurious: nothing to check before).
	 */
	if (mpq_conn_backend(b) == MPQ_BACKEND_KMOD)
		ASSERT_EQ(before > 1000 ? 0 : 1, poll(&pfd, 1, 0));
	/* The way back is not shut. */
	ASSERT_EQ(0, mpq_conn_send_bytes(b, "y", 1, 0));
	ASSERT_TRUE(report_within(rep[0], 10000));
	ASSERT_EQ(0, r->recv);
	ASSERT_EQ(-EPIPE, r->last);
	/* The sender is still there: the end of file is the ABORT frame. */
	ASSERT_EQ(1, poll(&pfd, 1, 0));
	ASSERT_EQ(1, mpq_conn_poll(b, 0));
	ASSERT_EQ(-EPIPE, mpq_conn_recv_bytes_into(b, buf, &len, 0));
	ASSERT_EQ(0, mpq_conn_send_bytes(b, "z", 1, 0));
	ASSERT_EQ(0, wait_child(pid, 10000));
	mpq_conn_free(a);
	mpq_conn_free(b);
	close(rep[0]);
	close(rep[1]);
	munmap(r, sizeof(*r));
}

/*
 * A receiver that stops reading in the middle of a message: the sender's
 * timeout still bounds its send (-ETIMEDOUT), and since part of the
 * message was out, its sending side is shut: its later sends are -EPIPE;
 * the receiver gets the messages before, then -ECONNABORTED for the cut
 * one (never a part of it), then -EPIPE; the other direction still works.
 */
TEST(send_timeout_bounds_a_message_the_receiver_stops_reading)
{
	cut_by_a_send_timeout(_metadata, 6);
}

/*
 * The same with the ring full when the send gives up (16 + 16328 bytes,
 * then frames of 16400 and 2 x 16392, and the 8-byte word that must
 * follow the last frame, fill 64 KiB): no room for the ABORT frame, so
 * the receiver learns of the cut from the flag, and the sender's next
 * call writes the frame.
 */
TEST(a_cut_message_in_a_full_ring_is_reported_all_the_same)
{
	cut_by_a_send_timeout(_metadata, 16328);
}

static int send_fitting_with_a_timeout(void *arg)
{
	struct mpq_conn **ends = arg;
	static char big[3000];
	int ret;

	mpq_conn_close(ends[1]);
	ret = mpq_conn_send_bytes(ends[0], big, sizeof(big),
				  200 * NSEC_PER_MSEC);
	if (ret != -ETIMEDOUT)
		return 10;
	ret = mpq_conn_send_bytes(ends[0], big, sizeof(big), 0);
	if (ret != -EAGAIN)
		return 11;
	return 0;
}

/*
 * A message that fits in the ring goes whole or not at all: a timeout
 * waiting for room (even with a part of the message that would fit) makes
 * nothing of it visible, and the stream goes on as if it was never sent.
 */
TEST(a_timed_out_message_that_fits_the_ring_is_withdrawn_whole)
{
	struct mpq_pipe_attr attr = { .bufsize = 4096 };
	static char filler[2000], buf[4096];
	struct mpq_conn *ends[2];
	size_t len;
	pid_t pid;

	ASSERT_EQ(0, mpq_pipe(&ends[0], &ends[1], 1, &attr));
	filler[0] = 'f';
	ASSERT_EQ(0, mpq_conn_send_bytes(ends[0], filler, sizeof(filler), 0));
	pid = spawn(send_fitting_with_a_timeout, ends);
	ASSERT_EQ(0, wait_child(pid, 10000));
	len = sizeof(buf);
	ASSERT_EQ(0, mpq_conn_recv_bytes_into(ends[1], buf, &len, 0));
	ASSERT_EQ(sizeof(filler), len);
	ASSERT_EQ('f', buf[0]);
	ASSERT_EQ(-EAGAIN, mpq_conn_recv_bytes_into(ends[1], buf, &len, 0));
	ASSERT_EQ(0, mpq_conn_send_bytes(ends[0], "z", 1, 0));
	len = sizeof(buf);
	ASSERT_EQ(0, mpq_conn_recv_bytes_into(ends[1], buf, &len, 0));
	ASSERT_EQ(1, len);
	ASSERT_EQ('z', buf[0]);
	mpq_conn_free(ends[0]);
	mpq_conn_free(ends[1]);
}

static int send_big_forever(void *arg)
{
	struct mpq_conn **ends = arg;
	size_t size = 4 << 20;
	unsigned char *big = malloc(size);

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	mpq_conn_close(ends[1]);
	fill(big, size, size);
	return mpq_conn_send_bytes(ends[0], big, size, MPQ_FOREVER) ? 1 : 0;
}

/*
 * The receiver's side: runs in a child so that a receive that never
 * returns is a failed test (the parent's bound), not a wedged run.
 * Returns 0, or the number of the step that went wrong.
 */
static int receive_across_a_stopped_sender(void *arg)
{
	struct mpq_conn **ends = arg;
	size_t size = 4 << 20, len;
	unsigned char *got = malloc(size), *want = malloc(size);
	void *p = NULL;
	int64_t t0;
	pid_t pid;
	int ret;

	pid = spawn(send_big_forever, ends);
	mpq_conn_close(ends[0]);
	/* Once the message has begun, stop the sender in the middle of it. */
	if (mpq_conn_poll(ends[1], 10 * NSEC_PER_SEC) != 1)
		return 1;
	kill(pid, SIGSTOP);
	t0 = now_ns();
	len = size;
	ret = mpq_conn_recv_bytes_into(ends[1], got, &len, 200 * NSEC_PER_MSEC);
	if (ret != -ETIMEDOUT)
		return 2;
	if (now_ns() - t0 < 200 * NSEC_PER_MSEC)
		return 3;
	/* Still stopped: a zero timeout says so at once, and keeps it. */
	if (mpq_conn_recv_bytes_into(ends[1], got, &len, 0) != -EAGAIN)
		return 4;
	kill(pid, SIGCONT);
	/* The message stays for a big enough buffer, as ever... */
	if (mpq_conn_recv_bytes(ends[1], &p, size - 1, 10 * NSEC_PER_SEC) !=
	    -EMSGSIZE || p)
		return 5;
	/* ...and continues where the timed-out receive left it, intact. */
	if (mpq_conn_recv_bytes(ends[1], &p, size, 10 * NSEC_PER_SEC) !=
	    (ssize_t)size)
		return 6;
	fill(want, size, size);
	if (memcmp(p, want, size))
		return 7;
	if (wait_child(pid, 10000) != 0)
		return 8;
	len = size;
	if (mpq_conn_recv_bytes_into(ends[1], got, &len, MPQ_FOREVER) != -EPIPE)
		return 9;
	free(p);
	free(got);
	free(want);
	return 0;
}

/*
 * A sender that stops in the middle of a message: the receiver's timeout
 * still bounds its receive (-ETIMEDOUT), it keeps what it has, and the
 * next receive continues the same message: nothing lost or reordered.
 */
TEST(recv_timeout_bounds_a_message_the_sender_stops_in)
{
	struct mpq_pipe_attr attr = { .bufsize = 64 * 1024 };
	struct mpq_conn *ends[2];
	pid_t pid;

	ASSERT_EQ(0, mpq_pipe(&ends[0], &ends[1], 1, &attr));
	pid = spawn(receive_across_a_stopped_sender, ends);
	mpq_conn_close(ends[0]);	/* the children hold the ends */
	mpq_conn_close(ends[1]);
	ASSERT_EQ(0, wait_child(pid, 30000));
	mpq_conn_free(ends[0]);
	mpq_conn_free(ends[1]);
}

/*
 * Receives that give up over and over in the middle of a message (zero
 * timeouts, alternating the two forms) still put it together whole.
 */
TEST(a_message_taken_by_many_zero_timeout_receives_arrives_intact)
{
	struct mpq_pipe_attr attr = { .bufsize = 16 * 1024 };
	struct mpq_conn *ends[2];
	size_t size = 4 << 20, len;
	unsigned char *got = malloc(size), *want = malloc(size);
	int n = 0, ret;
	void *p = NULL;
	pid_t pid;

	ASSERT_EQ(0, mpq_pipe(&ends[0], &ends[1], 1, &attr));
	pid = spawn(send_big_forever, ends);
	mpq_conn_close(ends[0]);
	for (;; n++) {
		len = size;
		if (n & 1) {
			ret = mpq_conn_recv_bytes(ends[1], &p, size, 0);
			if (ret == (ssize_t)size)
				break;
		} else {
			ret = mpq_conn_recv_bytes_into(ends[1], got, &len, 0);
			if (ret == 0)
				break;
		}
		ASSERT_EQ(-EAGAIN, ret);
	}
	fill(want, size, size);
	if (n & 1) {
		ASSERT_EQ(0, memcmp(p, want, size));
	} else {
		ASSERT_EQ(size, len);
		ASSERT_EQ(0, memcmp(got, want, size));
	}
	ASSERT_EQ(0, wait_child(pid, 10000));
	TH_LOG("%d receives", n);
	free(p);
	free(got);
	free(want);
	mpq_conn_free(ends[0]);
	mpq_conn_free(ends[1]);
}

static int fill_until_blocked(void *arg)
{
	struct mpq_conn **ends = arg;
	char block[1024] = { 0 };

	mpq_conn_close(ends[1]);
	for (;;) {
		int r = mpq_conn_send_bytes(ends[0], block, sizeof(block),
					    MPQ_FOREVER);

		if (r)
			return r == -EPIPE ? 0 : 1;
	}
}

TEST(a_blocked_send_wakes_with_epipe_when_the_reader_dies)
{
	struct mpq_pipe_attr attr = { .bufsize = 4096 };
	struct mpq_conn *ends[2];
	pid_t reader, writer;

	ASSERT_EQ(0, mpq_pipe(&ends[0], &ends[1], 1, &attr));
	writer = spawn(fill_until_blocked, ends);
	reader = fork();
	if (reader == 0) {
		mpq_conn_close(ends[0]);
		pause();		/* holds end 1, reads nothing */
		_exit(0);
	}
	mpq_conn_close(ends[0]);
	mpq_conn_close(ends[1]);
	sleep_ms(200);
	ASSERT_TRUE(child_running(writer));
	kill(reader, SIGKILL);
	ASSERT_EQ(128 + SIGKILL, wait_child(reader, 5000));
	ASSERT_EQ(0, wait_child(writer, 5000));
	mpq_conn_free(ends[0]);
	mpq_conn_free(ends[1]);
}

TEST_F(pipe, poll_says_whether_a_message_waits)
{
	char buf[8];
	size_t len = sizeof(buf);

	ASSERT_EQ(0, mpq_conn_poll(self->b, 0));
	ASSERT_EQ(0, mpq_conn_poll(self->b, 10 * NSEC_PER_MSEC));
	ASSERT_EQ(0, mpq_conn_send_bytes(self->a, "x", 1, 0));
	ASSERT_EQ(1, mpq_conn_poll(self->b, 0));
	ASSERT_EQ(0, mpq_conn_recv_bytes_into(self->b, buf, &len, 0));
	ASSERT_EQ(0, mpq_conn_poll(self->b, 0));
}

static uint64_t *pipe_word(struct mpq_pipe_shm *shm, int r, uint64_t pos)
{
	return (uint64_t *)((char *)shm + shm->data_off[r] +
			    (pos & (shm->ring_size - 1)));
}

/*
 * Leave in ring r what a writer killed between its two stores leaves: the
 * message published (total, data, the zero word after it, the header
 * last) and tail not moved past it. Returns the bytes the frame takes.
 */
static uint64_t publish_without_tail(struct mpq_pipe_shm *shm, int r,
				     const char *msg)
{
	struct mpq_frame f = {
		.len = strlen(msg),
		.flags = MPQ_FRAME_FIRST | MPQ_FRAME_LAST,
	};
	uint64_t tail = shm->ring[r].tail, word, n = 16 + ((f.len + 7) & ~7U);

	shm->ring[r].tail_next = tail + n;	/* as libmpq's writer does */
	*pipe_word(shm, r, tail + 8) = f.len;
	memcpy(pipe_word(shm, r, tail + 16), msg, f.len);
	*pipe_word(shm, r, tail + n) = 0;
	memcpy(&word, &f, sizeof(word));
	__atomic_store_n(pipe_word(shm, r, tail), word, __ATOMIC_RELEASE);
	return n;
}

/*
 * A writer killed after it published a frame and before it moved tail
 * past it (see struct mpq_frame) has sent the message: the reader gets
 * it, once, and poll() says so; the end's next writer moves tail past it
 * and its own message follows. Made by hand in the mapping, for each
 * next writer: the library, and with the module its write(2); read by
 * the library, and with the module by read(2).
 */
/*
 * A body that runs on the library (way 0) and, with the module, on read(2)
 * and write(2) of the ends (way 1): each way gets a duplex pipe, a to b,
 * and its mapping; way 1 is left out without the module.
 */
typedef void (*way_body)(struct __test_metadata *_metadata, int way,
			 struct mpq_conn *a, struct mpq_conn *b,
			 struct mpq_pipe_shm *shm);

static void each_way(struct __test_metadata *_metadata, way_body body)
{
	struct mpq_pipe_shm *shm;
	struct mpq_conn *a, *b;
	int way;

	for (way = 0; way < 2; way++) {
		ASSERT_EQ(0, mpq_pipe(&a, &b, 1, NULL));
		if (way == 1 && mpq_conn_backend(a) != MPQ_BACKEND_KMOD) {
			mpq_conn_free(a);
			mpq_conn_free(b);
			return;
		}
		shm = map_pipe(a);
		ASSERT_NE(NULL, shm);
		body(_metadata, way, a, b, shm);
		munmap(shm, shm->map_size);
		mpq_conn_free(a);
		mpq_conn_free(b);
	}
}

/* Longer than a box holds (MPQ_PIPE_BOX_MAX): these go in frames. */
#define ONE	"one: more than the pipe's box holds"
#define TWO	"two: more than the pipe's box holds"
#define THREE	"three: more than the pipe's box holds"

static void frame_without_tail(struct __test_metadata *_metadata, int way,
			       struct mpq_conn *a, struct mpq_conn *b,
			       struct mpq_pipe_shm *shm)
{
	char buf[64];
	uint64_t tail, n;
	size_t len;

	ASSERT_EQ(0, mpq_conn_send_bytes(a, ONE, strlen(ONE), 0));
	tail = shm->ring[0].tail;
	n = publish_without_tail(shm, 0, TWO);
	ASSERT_EQ(1, mpq_conn_poll(b, 0));
	if (way == 0) {
		/* The library on both sides. */
		len = sizeof(buf);
		ASSERT_EQ(0, mpq_conn_recv_bytes_into(b, buf, &len, 0));
		ASSERT_EQ(strlen(ONE), len);
		ASSERT_EQ(0, memcmp(buf, ONE, len));
		len = sizeof(buf);
		ASSERT_EQ(0, mpq_conn_recv_bytes_into(b, buf, &len, 0));
		ASSERT_EQ(strlen(TWO), len);
		ASSERT_EQ(0, memcmp(buf, TWO, len));
		ASSERT_EQ(0, mpq_conn_poll(b, 0));
		ASSERT_EQ(tail, shm->ring[0].tail);
		ASSERT_EQ(0, mpq_conn_send_bytes(a, THREE, strlen(THREE), 0));
	} else {
		/* The module: read(2) and write(2) on the ends. */
		struct pollfd pfd = { .fd = mpq_conn_fileno(b),
				      .events = POLLIN };

		ASSERT_EQ(strlen(ONE), read(pfd.fd, buf, sizeof(buf)));
		ASSERT_EQ(0, memcmp(buf, ONE, strlen(ONE)));
		ASSERT_EQ(1, poll(&pfd, 1, 0));
		ASSERT_EQ(strlen(TWO), read(pfd.fd, buf, sizeof(buf)));
		ASSERT_EQ(0, memcmp(buf, TWO, strlen(TWO)));
		ASSERT_EQ(0, poll(&pfd, 1, 0));
		ASSERT_EQ(strlen(THREE),
			  write(mpq_conn_fileno(a), THREE, strlen(THREE)));
	}
	ASSERT_EQ(tail + n + 16 + ((strlen(THREE) + 7) & ~7UL),
		  shm->ring[0].tail);
	len = sizeof(buf);
	ASSERT_EQ(0, mpq_conn_recv_bytes_into(b, buf, &len, 0));
	ASSERT_EQ(strlen(THREE), len);
	ASSERT_EQ(0, memcmp(buf, THREE, len));
	len = sizeof(buf);
	ASSERT_EQ(-EAGAIN, mpq_conn_recv_bytes_into(b, buf, &len, 0));
}

TEST(a_frame_whose_writer_died_before_moving_tail_arrives_once)
{
	each_way(_metadata, frame_without_tail);
}

/*
 * Positions are anyone's: a participant that sets the reader's head to
 * the last byte of the ring that ends the mapping gets an error from the
 * receive, never a read past the mapping. To make such a read fault for
 * sure, the reading end is opened again (mpq_conn_import()) into a hole
 * of the region's size just below a page the test keeps inaccessible:
 * mmap puts a new mapping at the top of the highest hole it fits.
 */
TEST(an_odd_head_at_the_end_of_the_mapping_is_an_error_not_a_fault)
{
	long page = sysconf(_SC_PAGESIZE);
	struct mpq_conn *a, *b, *a2;
	struct mpq_pipe_shm *shm;
	char handle[128], buf[64], *res;
	size_t len = sizeof(buf), size;

	ASSERT_EQ(0, mpq_pipe(&a, &b, 1, NULL));
	/* In a frame, not the box: more than a box holds. */
	ASSERT_EQ(0, mpq_conn_send_bytes(b, ONE, strlen(ONE), 0));
	shm = map_pipe(a);
	ASSERT_NE(NULL, shm);
	/* b writes ring 1, the last in the region; a reads it. */
	size = shm->map_size;
	ASSERT_EQ(size, shm->data_off[1] + shm->ring_size);
	__atomic_store_n(&shm->ring[1].head, 2 * (uint64_t)shm->ring_size - 1,
			 __ATOMIC_RELEASE);
	ASSERT_LT(0, mpq_conn_export(a, handle, sizeof(handle)));
	res = mmap(NULL, size + page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS,
		   -1, 0);
	ASSERT_NE(MAP_FAILED, res);
	ASSERT_EQ(0, munmap(res, size));
	ASSERT_EQ(0, mpq_conn_import(&a2, handle));
	/* a2's mapping is the one that ends at the guard page. */
	ASSERT_EQ(0, memcmp(res, shm, sizeof(*shm)));
	EXPECT_NE(0, mpq_conn_recv_bytes_into(a2, buf, &len, 0));
	mpq_conn_free(a2);
	munmap(res + size, page);
	munmap(shm, size);
	mpq_conn_free(a);
	mpq_conn_free(b);
}

/*
 * A small answer to a waiting asker goes through the pipe's box line
 * (struct mpq_pipe_box), not the ring: there it is seen by poll(), by a
 * receive, and with the module by poll(2) and read(2) on the end, which
 * say it is taken on the reader's line; the ring stays untouched. Then a
 * closed peer: what it answered still arrives, then the end of file.
 */
static void answer_in_the_box(struct __test_metadata *_metadata, int way,
			      struct mpq_conn *a, struct mpq_conn *b,
			      struct mpq_pipe_shm *shm)
{
	char buf[64];
	size_t len = sizeof(buf);

	/* b answers: it received last. */
	ASSERT_EQ(0, mpq_conn_send_bytes(a, ONE, strlen(ONE), 0));
	ASSERT_EQ(0, mpq_conn_recv_bytes_into(b, buf, &len, 0));
	ASSERT_EQ(0, mpq_conn_send_bytes(b, "answer", 6, 0));
	ASSERT_EQ(1, __atomic_load_n(&shm->box[1].seq,
				     __ATOMIC_ACQUIRE));
	ASSERT_EQ(0, shm->ring[1].box_taken);
	ASSERT_EQ(0, shm->ring[1].tail);
	ASSERT_EQ(1, mpq_conn_poll(a, 0));
	ASSERT_EQ(0, mpq_conn_close(b));
	len = sizeof(buf);
	if (way == 0) {
		ASSERT_EQ(0, mpq_conn_recv_bytes_into(a, buf, &len, 0));
		ASSERT_EQ(6, len);
	} else {
		struct pollfd pfd = { .fd = mpq_conn_fileno(a),
				      .events = POLLIN };

		ASSERT_EQ(1, poll(&pfd, 1, 0));
		ASSERT_EQ(6, read(pfd.fd, buf, sizeof(buf)));
	}
	ASSERT_EQ(0, memcmp(buf, "answer", 6));
	ASSERT_EQ(1, __atomic_load_n(&shm->ring[1].box_taken,
				     __ATOMIC_ACQUIRE));
	len = sizeof(buf);
	ASSERT_EQ(-EPIPE, mpq_conn_recv_bytes_into(a, buf, &len, 0));
}

TEST(a_small_answer_waits_in_the_box_line_and_is_read_from_there)
{
	each_way(_metadata, answer_in_the_box);
}

/*
 * A box whose length no writer stores (a scribbler's): the receive says
 * so and the pipe goes on; with the module, read(2) says -EIO and the
 * kernel reads nothing beyond the box.
 */
static void box_length_scribbled(struct __test_metadata *_metadata, int way,
				 struct mpq_conn *a, struct mpq_conn *b,
				 struct mpq_pipe_shm *shm)
{
	char buf[64];
	size_t len = sizeof(buf);

	shm->box[1].len = 0x7fffffff;
	__atomic_store_n(&shm->box[1].seq, 1, __ATOMIC_RELEASE);
	if (way == 0) {
		EXPECT_EQ(-EUCLEAN,
			  mpq_conn_recv_bytes_into(a, buf, &len, 0));
		/* Dropped: the next message comes through. */
		ASSERT_EQ(0, mpq_conn_send_bytes(b, "next", 4, 0));
		len = sizeof(buf);
		ASSERT_EQ(0, mpq_conn_recv_bytes_into(a, buf, &len, 0));
		ASSERT_EQ(4, len);
	} else {
		EXPECT_EQ(-1, read(mpq_conn_fileno(a), buf, sizeof(buf)));
		EXPECT_EQ(EIO, errno);
	}
}

TEST(a_box_with_a_length_no_writer_stores_is_an_error_not_a_fault)
{
	each_way(_metadata, box_length_scribbled);
}

/*
 * A writer that answers puts its first small message in the box and the
 * rest, while the box's last message is not known taken or the ring is
 * not empty, in the ring; the reader takes them all in order, whatever it
 * sees first (struct mpq_pipe_box). Bursts of mixed sizes, around the box's limit, each
 * after a go from the reader, which takes them at its own pace.
 */
#define BURSTS		3000
#define BURST		7

static const size_t burst_size[BURST] = { 8, 20, 21, 8, 100, 16, 8 };

static int answer_in_bursts(void *arg)
{
	struct mpq_conn **ends = arg;
	unsigned char msg[128];
	uint64_t seq = 0;
	size_t len;
	int i, j;

	mpq_conn_close(ends[0]);
	for (i = 0; i < BURSTS; i++) {
		len = sizeof(msg);
		if (mpq_conn_recv_bytes_into(ends[1], msg, &len, MPQ_FOREVER))
			return 1;
		for (j = 0; j < BURST; j++, seq++) {
			memset(msg, (int)(seq & 0xff), sizeof(msg));
			memcpy(msg, &seq, sizeof(seq));
			if (mpq_conn_send_bytes(ends[1], msg, burst_size[j],
						MPQ_FOREVER))
				return 2;
		}
	}
	return 0;
}

TEST(answers_through_the_box_and_the_ring_arrive_in_order)
{
	struct mpq_conn *ends[2];
	unsigned char msg[128];
	uint64_t seq = 0, got;
	size_t len, k;
	pid_t pid;
	int i, j;

	ASSERT_EQ(0, mpq_pipe(&ends[0], &ends[1], 1, NULL));
	pid = spawn(answer_in_bursts, ends);
	ASSERT_LT(0, pid);
	mpq_conn_close(ends[1]);
	for (i = 0; i < BURSTS; i++) {
		ASSERT_EQ(0, mpq_conn_send_bytes(ends[0], "go", 2,
						 MPQ_FOREVER));
		for (j = 0; j < BURST; j++, seq++) {
			/* Now and then late, so the burst piles up. */
			if ((i + j) % 5 == 0)
				for (k = 0; k < (size_t)(i % 7) * 3000; k++)
					__asm__ volatile("" ::: "memory");
			len = sizeof(msg);
			ASSERT_EQ(0, mpq_conn_recv_bytes_into(ends[0], msg,
							      &len,
							      10 * NSEC_PER_SEC));
			ASSERT_EQ(burst_size[j], len);
			memcpy(&got, msg, sizeof(got));
			ASSERT_EQ(seq, got);
			for (k = sizeof(got); k < len; k++)
				ASSERT_EQ(seq & 0xff, msg[k]);
		}
	}
	EXPECT_EQ(0, wait_child(pid, 10000));
	mpq_conn_free(ends[0]);
	mpq_conn_free(ends[1]);
}

static int send_later_then_exit(void *arg)
{
	struct mpq_conn **ends = arg;

	mpq_conn_close(ends[1]);
	sleep_ms(100);
	if (mpq_conn_send_bytes(ends[0], "hi", 2, MPQ_FOREVER))
		return 1;
	sleep_ms(100);
	return 0;			/* exiting closes the end */
}

/* The fd from fileno wakes an epoll sleeper for a message, then for EOF. */
TEST(fileno_wakes_epoll_for_a_message_and_for_the_end)
{
	struct mpq_conn *ends[2];
	struct epoll_event ev = { .events = EPOLLIN };
	char buf[8];
	size_t len;
	int ep, fd, n;
	pid_t pid;

	ASSERT_EQ(0, mpq_pipe(&ends[0], &ends[1], 1, NULL));
	fd = mpq_conn_fileno(ends[1]);
	ASSERT_LE(0, fd);
	ASSERT_EQ(fd, mpq_conn_fileno(ends[1]));
	ep = epoll_create1(0);
	ASSERT_EQ(0, epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev));
	pid = spawn(send_later_then_exit, ends);
	mpq_conn_close(ends[0]);
	for (;;) {
		n = epoll_wait(ep, &ev, 1, 5000);
		ASSERT_EQ(1, n);
		len = sizeof(buf);
		n = mpq_conn_recv_bytes_into(ends[1], buf, &len, 0);
		if (n == -EAGAIN)
			continue;	/* spurious, as documented */
		ASSERT_EQ(0, n);
		ASSERT_EQ(2, len);
		break;
	}
	for (;;) {
		n = epoll_wait(ep, &ev, 1, 5000);
		ASSERT_EQ(1, n);
		len = sizeof(buf);
		n = mpq_conn_recv_bytes_into(ends[1], buf, &len, 0);
		if (n == -EAGAIN)
			continue;
		ASSERT_EQ(-EPIPE, n);
		break;
	}
	ASSERT_EQ(0, wait_child(pid, 5000));
	close(ep);
	mpq_conn_free(ends[0]);
	mpq_conn_free(ends[1]);
}

TEST(closed_connections_are_ebadf_and_bad_arguments_einval)
{
	struct mpq_pipe_attr attr = { .bufsize = 1000 };
	struct mpq_conn *a, *b;
	char buf[8];
	size_t len = sizeof(buf);
	void *p;

	ASSERT_EQ(-EINVAL, mpq_pipe(NULL, &b, 1, NULL));
	ASSERT_EQ(-EINVAL, mpq_pipe(&a, &b, 1, &attr));	/* not a power of 2 */
	attr.bufsize = 0;
	attr.flags = 1;
	ASSERT_EQ(-EINVAL, mpq_pipe(&a, &b, 1, &attr));
	ASSERT_EQ(0, mpq_pipe(&a, &b, 1, NULL));
	ASSERT_EQ(-EINVAL, mpq_conn_send_bytes(a, NULL, 1, 0));
	ASSERT_EQ(-EINVAL, mpq_conn_recv_bytes_into(b, buf, NULL, 0));
	ASSERT_EQ(-EINVAL, mpq_conn_recv_bytes(b, NULL, 8, 0));
	ASSERT_EQ(-EINVAL, mpq_conn_send_bytes(NULL, "x", 1, 0));
	ASSERT_EQ(0, mpq_conn_close(a));
	ASSERT_EQ(-EBADF, mpq_conn_close(a));
	ASSERT_EQ(-EBADF, mpq_conn_send_bytes(a, "x", 1, 0));
	ASSERT_EQ(-EBADF, mpq_conn_recv_bytes_into(a, buf, &len, 0));
	ASSERT_EQ(-EBADF, mpq_conn_recv_bytes(a, &p, 8, 0));
	ASSERT_EQ(-EBADF, mpq_conn_poll(a, 0));
	ASSERT_EQ(-EBADF, mpq_conn_fileno(a));
	mpq_conn_free(a);
	mpq_conn_free(b);
	mpq_conn_free(NULL);
}

/* The largest object the backend makes: the module's parameter, or 1 GiB. */
static uint64_t max_object_bytes(int backend)
{
	unsigned long long v = 1ULL << 30;
	FILE *f;

	if (backend != MPQ_BACKEND_KMOD)
		return v;
	f = fopen("/sys/module/mpq/parameters/max_object_bytes", "r");
	if (f) {
		if (fscanf(f, "%llu", &v) != 1)
			v = 1ULL << 30;
		fclose(f);
	}
	return v;
}

/*
 * Both backends take the same ring sizes, with the module's errors: a
 * power of two from MPQ_PIPE_RING_MIN (else -EINVAL) to MPQ_PIPE_RING_MAX
 * (else -E2BIG), in a pipe (two rings and a page) no larger than the
 * largest object (else -E2BIG): by default 1 GiB, so 256 MiB rings.
 */
TEST(ring_sizes_are_limited_alike_on_both_backends)
{
	static const uint32_t sizes[] = {
		1U << 31, 1U << 30, 1U << 29, 1U << 28, 4096, 2048, 3 * 4096,
		(1U << 31) + 4096,
	};
	int backends[2] = { 0, MPQ_BACKEND_MEMFD }, i, k, want, got;
	uint64_t page = sysconf(_SC_PAGESIZE);

	for (k = 0; k < 2; k++) {
		struct mpq_pipe_attr attr = { .backend = backends[k] };
		struct mpq_conn *a, *b;
		int backend;

		ASSERT_EQ(0, mpq_pipe(&a, &b, 1, &attr));
		backend = mpq_conn_backend(a);
		mpq_conn_free(a);
		mpq_conn_free(b);
		for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
			uint32_t n = sizes[i];

			if (n < MPQ_PIPE_RING_MIN || n & (n - 1))
				want = -EINVAL;
			else if (n > MPQ_PIPE_RING_MAX ||
				 page + 2 * (uint64_t)n > max_object_bytes(backend))
				want = -E2BIG;
			else
				want = 0;
			attr.bufsize = n;
			got = mpq_pipe(&a, &b, 0, &attr);
			EXPECT_EQ(want, got) TH_LOG("backend %d, ring %u", backend, n);
			if (!got) {
				/* Taken, it works at both ends of the ring. */
				char buf[8];
				size_t len = sizeof(buf);

				EXPECT_EQ(0, mpq_conn_send_bytes(b, "ok", 2, 0));
				EXPECT_EQ(0, mpq_conn_recv_bytes_into(a, buf, &len, 0));
				mpq_conn_free(a);
				mpq_conn_free(b);
			}
		}
	}
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	if (!d)
		return -1;
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

/*
 * In a child with too little address space for a 64 MiB ring, on each
 * backend: the pipe fails with -ENOMEM and leaves no fd behind. Returns
 * 0, or the step that went wrong.
 */
static int pipe_without_address_space(void *arg)
{
	int backends[2] = { 0, MPQ_BACKEND_MEMFD }, k, before, ret;
	unsigned long vm_pages = 0;
	struct rlimit rl;
	FILE *f = fopen("/proc/self/statm", "r");

	if (!f || fscanf(f, "%lu", &vm_pages) != 1)
		return 1;
	fclose(f);
	rl.rlim_cur = rl.rlim_max = vm_pages * sysconf(_SC_PAGESIZE) + (16 << 20);
	if (setrlimit(RLIMIT_AS, &rl))
		return 2;
	for (k = 0; k < 2; k++) {
		struct mpq_pipe_attr attr = {
			.bufsize = 64 << 20, .backend = backends[k],
		};
		struct mpq_conn *a, *b;

		before = count_fds();
		ret = mpq_pipe(&a, &b, 1, &attr);
		if (ret != -ENOMEM)
			return 10 + k;
		if (count_fds() != before)
			return 20 + k;
	}
	return 0;
}

/* Every error path of making a pipe undoes what it made. */
TEST(a_pipe_that_cannot_be_mapped_fails_cleanly)
{
	ASSERT_EQ(0, wait_child(spawn(pipe_without_address_space, NULL), 10000));
}

static int echo(void *arg)
{
	struct mpq_conn **ends = arg;
	char buf[64];
	int i;

	mpq_conn_close(ends[0]);
	for (i = 0; i < 10000; i++) {
		size_t len = sizeof(buf);

		if (mpq_conn_recv_bytes_into(ends[1], buf, &len, 10 * NSEC_PER_SEC) ||
		    mpq_conn_send_bytes(ends[1], buf, len, 10 * NSEC_PER_SEC))
			return 1;
	}
	return 0;
}

/*
 * Both sides sleeping between messages: no wake-up may be lost. A lost
 * one fails an operation's 10 s timeout; the harness's own timeout is
 * only for a slow machine (20,000 sleeps and wake-ups under TCG).
 */
TEST_F_TIMEOUT(slow, ping_pong_with_sleeping_sides_loses_no_wake_up, 300)
{
	struct mpq_pipe_attr attr = { .spin_ns = -1 };
	struct mpq_conn *ends[2];
	char buf[64];
	pid_t pid;
	int i;

	ASSERT_EQ(0, mpq_pipe(&ends[0], &ends[1], 1, &attr));
	pid = spawn(echo, ends);
	mpq_conn_close(ends[1]);
	for (i = 0; i < 10000; i++) {
		size_t len = sizeof(buf);

		ASSERT_EQ(0, mpq_conn_send_bytes(ends[0], &i, sizeof(i),
						 10 * NSEC_PER_SEC));
		ASSERT_EQ(0, mpq_conn_recv_bytes_into(ends[0], buf, &len,
						      10 * NSEC_PER_SEC));
		ASSERT_EQ(i, *(int *)buf);
	}
	ASSERT_EQ(0, wait_child(pid, 10000));
	mpq_conn_free(ends[0]);
	mpq_conn_free(ends[1]);
}

/* Message k of the storm: its length and bytes follow from k. */
static size_t storm_len(uint64_t k)
{
	uint64_t s = k * 0x9e3779b97f4a7c15ULL + 1;

	return rnd(&s) % 3 == 0 ? 20000 + rnd(&s) % 50000 : rnd(&s) % 300;
}

static int storm_sender(void *arg)
{
	struct mpq_conn **ends = arg;
	static unsigned char buf[70000];
	uint64_t k;

	mpq_conn_close(ends[1]);
	for (k = 0;; k++) {
		size_t n = storm_len(k);

		fill(buf, n, k);
		if (mpq_conn_send_bytes(ends[0], buf, n, MPQ_FOREVER))
			return 1;
	}
}

/*
 * SIGKILL at a random instant, many times: whatever the sender was doing
 * (between messages, in the middle of a long one that streams through the
 * ring, or asleep waiting for room), the receiver gets whole, intact
 * messages in order, then -EPIPE, and never hangs.
 */
TEST_F_TIMEOUT(slow, sender_killed_at_random_instants_never_corrupts_or_wedges, 600)
{
	struct mpq_pipe_attr attr = { .bufsize = 16384 };
	static unsigned char got[70000], want[70000];
	uint64_t seed = 1234;
	int round;

	for (round = 0; round < 100; round++) {
		struct mpq_conn *ends[2];
		uint64_t k = 0;
		pid_t pid;
		int ret;

		ASSERT_EQ(0, mpq_pipe(&ends[0], &ends[1], 1, &attr));
		pid = spawn(storm_sender, ends);
		mpq_conn_close(ends[0]);
		/* Read for a random while (sometimes not at all), then kill. */
		int64_t until = now_ns() + (int64_t)(rnd(&seed) % 3000000);

		while (now_ns() < until) {
			size_t len = sizeof(got);

			ret = mpq_conn_recv_bytes_into(ends[1], got, &len, 0);
			if (ret == -EAGAIN)
				continue;
			ASSERT_EQ(0, ret);
			ASSERT_EQ(storm_len(k), len);
			fill(want, len, k);
			ASSERT_EQ(0, memcmp(want, got, len)) TH_LOG("message %lu", k);
			k++;
		}
		kill(pid, SIGKILL);
		ASSERT_EQ(128 + SIGKILL, wait_child(pid, 10000));
		for (;;) {
			size_t len = sizeof(got);

			ret = mpq_conn_recv_bytes_into(ends[1], got, &len,
						       10 * NSEC_PER_SEC);
			if (ret == -EPIPE)
				break;
			ASSERT_EQ(0, ret) TH_LOG("round %d message %lu", round, k);
			ASSERT_EQ(storm_len(k), len);
			fill(want, len, k);
			ASSERT_EQ(0, memcmp(want, got, len));
			k++;
		}
		mpq_conn_free(ends[0]);
		mpq_conn_free(ends[1]);
	}
}

static int storm_reader(void *arg)
{
	struct mpq_conn **ends = arg;
	static unsigned char buf[70000];

	mpq_conn_close(ends[0]);
	for (;;) {
		size_t len = sizeof(buf);

		if (mpq_conn_recv_bytes_into(ends[1], buf, &len, MPQ_FOREVER))
			return 1;
	}
}

/* The other way: the reader killed at random; the sender gets -EPIPE. */
TEST_F_TIMEOUT(slow, reader_killed_at_random_instants_never_wedges_the_sender, 600)
{
	struct mpq_pipe_attr attr = { .bufsize = 16384 };
	static unsigned char buf[70000];
	uint64_t seed = 4321;
	int round;

	for (round = 0; round < 100; round++) {
		struct mpq_conn *ends[2];
		uint64_t k;
		pid_t pid;
		int ret = 0;

		ASSERT_EQ(0, mpq_pipe(&ends[0], &ends[1], 1, &attr));
		pid = spawn(storm_reader, ends);
		mpq_conn_close(ends[1]);
		int64_t until = now_ns() + (int64_t)(rnd(&seed) % 3000000);

		for (k = 0; now_ns() < until; k++)
			ASSERT_EQ(0, mpq_conn_send_bytes(ends[0], buf, storm_len(k),
							 MPQ_FOREVER));
		kill(pid, SIGKILL);
		ASSERT_EQ(128 + SIGKILL, wait_child(pid, 10000));
		/* Sending on: -EPIPE once the ring is full at the latest. */
		for (; ret == 0 && k < 1000000; k++)
			ret = mpq_conn_send_bytes(ends[0], buf, storm_len(k),
						  10 * NSEC_PER_SEC);
		ASSERT_EQ(-EPIPE, ret) TH_LOG("round %d", round);
		mpq_conn_free(ends[0]);
		mpq_conn_free(ends[1]);
	}
}

/*
 * The round trip's own paths under SIGKILL: a thread that alternates
 * sends and receives takes the lean ones (an answer's one-frame send, a
 * receive that looks first), which the storms above, one-way, never do.
 * Requests are mostly one frame (the lean send), now and then larger
 * than one (the general path); each is k's bytes.
 */
static size_t rt_len(uint64_t k)
{
	uint64_t s = k * 0x9e3779b97f4a7c15ULL + 7;

	return rnd(&s) % 16 == 0 ? 5000 + rnd(&s) % 3000 : rnd(&s) % 1200;
}

/* Answer each request with its own bytes, for ever. */
static int rt_echo(void *arg)
{
	struct mpq_conn **ends = arg;
	static unsigned char buf[8192];

	mpq_conn_close(ends[0]);
	for (;;) {
		size_t len = sizeof(buf);

		if (mpq_conn_recv_bytes_into(ends[1], buf, &len, MPQ_FOREVER) ||
		    mpq_conn_send_bytes(ends[1], buf, len, MPQ_FOREVER))
			return 1;
	}
}

/* Ask, and check each answer, for ever. */
static int rt_ask(void *arg)
{
	struct mpq_conn **ends = arg;
	static unsigned char buf[8192], got[8192];
	uint64_t k;

	mpq_conn_close(ends[1]);
	for (k = 0;; k++) {
		size_t n = rt_len(k), len = sizeof(got);

		fill(buf, n, k);
		if (mpq_conn_send_bytes(ends[0], buf, n, MPQ_FOREVER) ||
		    mpq_conn_recv_bytes_into(ends[0], got, &len, MPQ_FOREVER))
			return 1;
		if (len != n || memcmp(buf, got, n))
			return 2;
	}
}

/* A process that SIGKILLs pid after a random while (0-3 ms). */
static pid_t kill_later(pid_t pid, uint64_t *seed)
{
	int64_t us = (int64_t)(rnd(seed) % 3000);
	pid_t k = fork();

	if (k == 0) {
		if (us)
			usleep((useconds_t)us);
		kill(pid, SIGKILL);
		_exit(0);
	}
	return k;
}

/*
 * 100 rounds: a duplex pipe whose other end, child() in a process of its
 * own, is SIGKILLed after 0-3 ms, while exchange() makes exchange k on
 * end ours until it fails, which must be -EPIPE (never a hang: 10 s
 * timeouts). Returns the exchanges made.
 */
typedef int (*rt_exchange_fn)(struct __test_metadata *_metadata,
			      struct mpq_conn *c, uint64_t k, int round);

static uint64_t rt_storm(struct __test_metadata *_metadata,
			 int (*child)(void *), int ours, uint64_t seed,
			 rt_exchange_fn exchange)
{
	struct mpq_pipe_attr attr = { .bufsize = 16384 };
	uint64_t made = 0, k;
	int round, ret;

	for (round = 0; round < 100; round++) {
		struct mpq_conn *ends[2];
		pid_t pid, killer;

		ASSERT_EQ(0, mpq_pipe(&ends[0], &ends[1], 1, &attr));
		pid = spawn(child, ends);
		mpq_conn_close(ends[!ours]);
		killer = kill_later(pid, &seed);
		for (k = 0; !(ret = exchange(_metadata, ends[ours], k, round)); k++)
			made++;
		ASSERT_EQ(-EPIPE, ret) TH_LOG("round %d after %lu exchanges", round, k);
		ASSERT_EQ(0, wait_child(killer, 10000));
		/* Killed, not exited: a child exits when it saw something wrong. */
		ASSERT_EQ(128 + SIGKILL, wait_child(pid, 10000));
		mpq_conn_free(ends[0]);
		mpq_conn_free(ends[1]);
	}
	TH_LOG("%lu exchanges in 100 rounds", made);
	return made;
}

/* Ask request k; its answer must be whole and ours. */
static int rt_ask_one(struct __test_metadata *_metadata, struct mpq_conn *c,
		      uint64_t k, int round)
{
	static unsigned char buf[8192], got[8192];
	size_t n = rt_len(k), len = sizeof(got);
	int ret;

	fill(buf, n, k);
	ret = mpq_conn_send_bytes(c, buf, n, 10 * NSEC_PER_SEC);
	if (!ret)
		ret = mpq_conn_recv_bytes_into(c, got, &len, 10 * NSEC_PER_SEC);
	if (ret)
		return ret;
	ASSERT_EQ(n, len) TH_LOG("round %d answer %lu", round, k);
	ASSERT_EQ(0, memcmp(buf, got, n)) TH_LOG("round %d answer %lu", round, k);
	return 0;
}

/* Answer request k, which must be whole and in order. */
static int rt_answer_one(struct __test_metadata *_metadata, struct mpq_conn *c,
			 uint64_t k, int round)
{
	static unsigned char want[8192], got[8192];
	size_t len = sizeof(got);
	int ret;

	ret = mpq_conn_recv_bytes_into(c, got, &len, 10 * NSEC_PER_SEC);
	if (!ret)
		ret = mpq_conn_send_bytes(c, got, len, 10 * NSEC_PER_SEC);
	if (ret)
		return ret;
	fill(want, rt_len(k), k);
	ASSERT_EQ(rt_len(k), len) TH_LOG("round %d request %lu", round, k);
	ASSERT_EQ(0, memcmp(want, got, len)) TH_LOG("round %d request %lu", round, k);
	return 0;
}

/*
 * The answering end killed at a random instant, many times, while we
 * ask: every answer that comes is whole and ours, then -EPIPE (on the
 * send or the receive), never a hang.
 */
TEST_F_TIMEOUT(slow, an_echo_killed_at_random_instants_answers_whole_or_not_at_all, 600)
{
	ASSERT_LT(100, rt_storm(_metadata, rt_echo, 0, 777, rt_ask_one));
}

/*
 * The asking end killed at a random instant, many times, while we answer:
 * every request that comes is whole and in order, then -EPIPE, never a
 * hang; the asker, alive, never saw a wrong answer.
 */
TEST_F_TIMEOUT(slow, an_asker_killed_at_random_instants_never_wedges_its_echo, 600)
{
	ASSERT_LT(100, rt_storm(_metadata, rt_ask, 1, 778, rt_answer_one));
}

/* Spawn: a fresh program, reached by an end and a queue through handles. */
TEST(a_spawned_child_gets_an_end_and_a_queue_through_handles)
{
	struct mpq_process_attr pa = { .start_method = MPQ_START_SPAWN };
	struct mpq_queue *q;
	struct mpq_conn *a, *b;
	struct mpq_process *p;
	char arg[256], buf[16];
	size_t len = sizeof(buf);
	int n, m, code = -1;

	ASSERT_EQ(0, mpq_pipe(&a, &b, 1, NULL));
	ASSERT_EQ(0, mpq_queue_new(&q, NULL));
	n = mpq_conn_export(b, arg, sizeof(arg));
	ASSERT_LT(0, n);
	arg[n++] = ' ';
	m = mpq_queue_export(q, arg + n, sizeof(arg) - n);
	ASSERT_LT(0, m);
	ASSERT_EQ(0, mpq_process_new(&p, spawned_replies, arg, n + m, &pa));
	ASSERT_EQ(0, mpq_process_start(p));
	mpq_conn_close(b);		/* the child holds the end now */
	ASSERT_EQ(0, mpq_conn_send_bytes(a, "ping", 4, MPQ_FOREVER));
	ASSERT_EQ(0, mpq_conn_recv_bytes_into(a, buf, &len, 20 * NSEC_PER_SEC));
	ASSERT_EQ(0, memcmp(buf, "pong", 4));
	len = sizeof(buf);
	ASSERT_EQ(0, mpq_queue_get(q, buf, &len, 20 * NSEC_PER_SEC));
	ASSERT_EQ(0, memcmp(buf, "queued", 6));
	ASSERT_EQ(0, mpq_process_join(p, 20 * NSEC_PER_SEC));
	ASSERT_EQ(0, mpq_process_exitcode(p, &code));
	ASSERT_EQ(0, code);
	/* Its end is gone with it: the end of file. */
	len = sizeof(buf);
	ASSERT_EQ(-EPIPE, mpq_conn_recv_bytes_into(a, buf, &len, 5 * NSEC_PER_SEC));
	mpq_process_free(p);
	mpq_queue_free(q);
	mpq_conn_free(a);
	mpq_conn_free(b);
}

TEST(import_refuses_what_is_not_an_end)
{
	struct mpq_conn *c;

	ASSERT_EQ(-EINVAL, mpq_conn_import(&c, "mpq-conn:kmod:"));
	ASSERT_EQ(-EINVAL, mpq_conn_import(&c, "mpq-conn:kmod:0 "));
	ASSERT_EQ(-EINVAL, mpq_conn_import(&c, "mpq-queue:fd=3"));
	ASSERT_EQ(-EINVAL, mpq_conn_import(&c, "mpq-conn:memfd:2:3:4:5:6:7:8"));
	ASSERT_EQ(-EINVAL, mpq_conn_import(&c, NULL));
	ASSERT_GT(0, mpq_conn_import(&c, "mpq-conn:kmod:0"));	/* stdin */
}

static int ask_then_wait_for_the_reply(void *arg)
{
	struct mpq_conn **ends = arg;
	char buf[16];
	size_t len = sizeof(buf);

	if (mpq_conn_send_bytes(ends[0], "ask", 3, MPQ_FOREVER))
		return 1;
	if (mpq_conn_recv_bytes_into(ends[0], buf, &len, MPQ_FOREVER))
		return 2;
	return len == 5 && !memcmp(buf, "reply", 5) ? 0 : 3;
}

/*
 * A receive right after a send looks first, then spins, and reads the
 * spin's clock a pass late (conn_wait()): its spin still ends, and it
 * sleeps (its ring's wanted bit) until the reply comes.
 */
TEST(a_receive_after_a_send_spins_then_sleeps_until_the_reply)
{
	struct mpq_pipe_attr attr = { .spin_ns = 2000000 };
	struct mpq_pipe_shm *shm;
	struct mpq_conn *ends[2];
	char buf[16];
	size_t len = sizeof(buf);
	int64_t end;
	pid_t pid;
	int sleeping;

	ASSERT_EQ(0, mpq_pipe(&ends[0], &ends[1], 1, &attr));
	shm = map_pipe(ends[1]);
	ASSERT_NE(NULL, shm);
	pid = spawn(ask_then_wait_for_the_reply, ends);
	/* End 0 reads ring 1. */
	end = now_ns() + 10 * NSEC_PER_SEC;
	while (!(sleeping = __atomic_load_n(&shm->ring[1].wanted,
					    __ATOMIC_ACQUIRE) & MPQ_POLL_IN) &&
	       now_ns() < end)
		sleep_ms(1);
	if (!sleeping)
		kill(pid, SIGKILL);	/* spinning for good */
	ASSERT_TRUE(sleeping);
	ASSERT_EQ(0, mpq_conn_recv_bytes_into(ends[1], buf, &len,
					      10 * NSEC_PER_SEC));
	ASSERT_EQ(3, len);
	ASSERT_EQ(0, mpq_conn_send_bytes(ends[1], "reply", 5, MPQ_FOREVER));
	EXPECT_EQ(0, wait_child(pid, 10000));
	munmap(shm, shm->map_size);
	mpq_conn_free(ends[0]);
	mpq_conn_free(ends[1]);
}

TEST_HARNESS_MAIN
