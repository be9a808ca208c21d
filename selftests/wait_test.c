// SPDX-License-Identifier: GPL-2.0
/*
 * The promises of mpq_wait(): like multiprocessing.connection.wait, it
 * returns the objects that are ready, among connections, queues and fds
 * (a process sentinel is an fd), and sleeps until one is.
 */
#include <pthread.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/syscall.h>

#include "kselftest_harness.h"
#include "helpers.h"

#define NPIPES 100

static void conn_item(struct mpq_wait_item *it, struct mpq_conn *c)
{
	memset(it, 0, sizeof(*it));
	it->kind = MPQ_WAIT_CONN;
	it->conn = c;
}

/*
 * mpq_wait() for WOKEN_NS at most, as a wake-up's test: at its deadline
 * mpq_wait() looks once more, and an event (a message, a death) it was
 * never woken for would then pass as a slow 1. So a return at the
 * deadline counts as 0.
 */
#define WOKEN_NS	(10 * NSEC_PER_SEC)

static int wait_woken(struct mpq_wait_item *it, unsigned int n)
{
	int64_t end = now_ns() + WOKEN_NS;
	int ret = mpq_wait(it, n, WOKEN_NS);

	return now_ns() < end ? ret : 0;
}

TEST(wait_marks_exactly_the_ready_connections)
{
	struct mpq_conn *r[3], *w[3];
	struct mpq_wait_item it[3];
	int i;

	for (i = 0; i < 3; i++) {
		ASSERT_EQ(0, mpq_pipe(&r[i], &w[i], 0, NULL));
		conn_item(&it[i], r[i]);
	}
	ASSERT_EQ(0, mpq_wait(it, 3, 0));
	ASSERT_EQ(0, mpq_conn_send_bytes(w[1], "x", 1, 0));
	ASSERT_EQ(1, mpq_wait(it, 3, 0));
	ASSERT_EQ(0, it[0].ready);
	ASSERT_EQ(1, it[1].ready);
	ASSERT_EQ(0, it[2].ready);
	ASSERT_EQ(0, mpq_conn_send_bytes(w[2], "y", 1, 0));
	ASSERT_EQ(2, mpq_wait(it, 3, MPQ_FOREVER));
	for (i = 0; i < 3; i++) {
		mpq_conn_free(r[i]);
		mpq_conn_free(w[i]);
	}
}

TEST(wait_with_nothing_ready_times_out_on_time)
{
	struct mpq_conn *r, *w;
	struct mpq_wait_item it;
	int64_t t0 = now_ns();

	ASSERT_EQ(0, mpq_pipe(&r, &w, 0, NULL));
	conn_item(&it, r);
	ASSERT_EQ(0, mpq_wait(&it, 1, 50 * NSEC_PER_MSEC));
	ASSERT_GE(now_ns() - t0, 50 * NSEC_PER_MSEC);
	ASSERT_LT(now_ns() - t0, 5 * NSEC_PER_SEC);
	mpq_conn_free(r);
	mpq_conn_free(w);
}

struct later {
	struct mpq_conn *w;
	struct mpq_queue *q;
	int wfd;
	int close_only;
};

static int act_later(void *arg)
{
	struct later *l = arg;

	sleep_ms(100);
	if (l->close_only)
		return 0;		/* exiting hangs up the end */
	if (l->w && mpq_conn_send_bytes(l->w, "late", 4, MPQ_FOREVER))
		return 1;
	if (l->q && mpq_queue_put(l->q, "late", 4, MPQ_FOREVER))
		return 2;
	if (l->wfd >= 0 && write(l->wfd, "x", 1) != 1)
		return 3;
	return 0;
}

TEST(wait_sleeps_until_another_process_sends)
{
	struct later l = { .wfd = -1 };
	struct mpq_conn *r;
	struct mpq_wait_item it;
	pid_t pid;

	ASSERT_EQ(0, mpq_pipe(&r, &l.w, 0, NULL));
	conn_item(&it, r);
	pid = spawn(act_later, &l);
	mpq_conn_close(l.w);
	ASSERT_EQ(1, wait_woken(&it, 1));
	ASSERT_EQ(1, it.ready);
	ASSERT_EQ(0, wait_child(pid, 5000));
	mpq_conn_free(r);
	mpq_conn_free(l.w);
}

TEST(wait_counts_the_end_of_file_as_ready)
{
	struct later l = { .wfd = -1, .close_only = 1 };
	struct mpq_conn *r;
	struct mpq_wait_item it;
	char buf[8];
	size_t len = sizeof(buf);
	pid_t pid;

	ASSERT_EQ(0, mpq_pipe(&r, &l.w, 0, NULL));
	conn_item(&it, r);
	pid = spawn(act_later, &l);
	mpq_conn_close(l.w);
	ASSERT_EQ(1, wait_woken(&it, 1));
	ASSERT_EQ(-EPIPE, mpq_conn_recv_bytes_into(r, buf, &len, 0));
	ASSERT_EQ(0, wait_child(pid, 5000));
	mpq_conn_free(r);
	mpq_conn_free(l.w);
}

TEST(wait_on_a_queue_wakes_on_a_put_from_another_process)
{
	struct mpq_queue_attr attr = { .maxsize = 4, .msgsize = 8 };
	struct later l = { .wfd = -1 };
	struct mpq_wait_item it = { .kind = MPQ_WAIT_QUEUE };
	pid_t pid;

	ASSERT_EQ(0, mpq_queue_new(&l.q, &attr));
	it.queue = l.q;
	ASSERT_EQ(0, mpq_wait(&it, 1, 0));
	pid = spawn(act_later, &l);
	ASSERT_EQ(1, wait_woken(&it, 1));
	ASSERT_EQ(1, it.ready);
	ASSERT_EQ(0, wait_child(pid, 5000));
	mpq_queue_free(l.q);
}

/*
 * A child that opens a window on q (a reservation, or a peek if peek),
 * says so in *flag, and is SIGKILLed in it after linger_ms (0: at once,
 * before the parent looks). Its pid.
 */
static pid_t dies_in_a_window(struct mpq_queue *q, int *flag, int peek,
			      int linger_ms)
{
	pid_t pid = fork();

	if (pid == 0) {
		struct mpq_msg m = { 0 };

		if (peek ? mpq_queue_peek(q, &m, 0) :
			   mpq_queue_reserve(q, 8, &m, 0))
			_exit(1);
		set_flag(flag, 1);
		sleep_ms(linger_ms);
		raise(SIGKILL);
	}
	return pid;
}

/* Runs are made of MPQ_RUN_MIN messages at least (lib/run.c). */
#define RUN_N	16

/* Does the slot at q's head start a run? */
static int head_is_a_run(struct mpq_queue *q)
{
	struct mpq_queue_shm *shm;
	struct mpq_slot *s;
	size_t size;
	int run;

	shm = queue_map(q, &size);
	if (!shm)
		return -1;
	s = shm_head_slot(shm);
	run = s->len == MPQ_SLOT_RUN;
	munmap(shm, size);
	return run;
}

/*
 * What a get would take is ready, even when a dead participant hides it
 * from a look at the head: a message put behind a dead producer's claim,
 * or a dead consumer's message, delivered again (mpq_queue(3)). Whether
 * the death came before the wait or during its sleep. With use_fd, the
 * wait is the program's own poll() on the queue's fd (the module's
 * ->poll()): it polls readable, a get that does not wait takes the message
 * at once, and then the empty queue no longer polls readable. Without the
 * module a queue has no such fd. With run (a peek only), the consumer's
 * message is the first of a run of that many, put with put_array.
 */
static void wait_sees_past_a_death(struct __test_metadata *_metadata,
				   int peek, int linger_ms, int use_fd, int run)
{
	struct mpq_queue_attr attr = { .maxsize = run ? 2 * RUN_N : 4,
				       .msgsize = 8 };
	struct mpq_wait_item it = { .kind = MPQ_WAIT_QUEUE };
	int *flag = shared_alloc(sizeof(*flag));
	struct pollfd pfd = { .fd = -1, .events = POLLIN };
	char buf[8], arr[RUN_N * 8] = "taken";
	size_t len = sizeof(buf);
	pid_t pid;

	ASSERT_NE(NULL, flag);
	*flag = 0;
	ASSERT_EQ(0, mpq_queue_new(&it.queue, &attr));
	if (use_fd) {
		pfd.fd = mpq_wait_fd(&it);
		if (mpq_queue_backend(it.queue) != MPQ_BACKEND_KMOD) {
			EXPECT_EQ(-EOPNOTSUPP, pfd.fd);
			goto out;
		}
		ASSERT_LE(0, pfd.fd);
	}
	if (peek && run) {
		ASSERT_EQ(RUN_N, mpq_queue_put_array(it.queue, arr, 8, RUN_N, 0));
		ASSERT_EQ(1, head_is_a_run(it.queue));
	} else if (peek) {
		ASSERT_EQ(0, mpq_queue_put(it.queue, "taken", 5, 0));
	}
	pid = dies_in_a_window(it.queue, flag, peek, linger_ms);
	ASSERT_EQ(1, wait_for_flag(flag, 5000));
	if (!peek)
		ASSERT_EQ(0, mpq_queue_put(it.queue, "behind", 6, 0));
	if (!linger_ms)
		ASSERT_EQ(128 + SIGKILL, wait_child(pid, 5000));
	if (use_fd) {
		/* Long enough that a wedge shows as 0, not as a slow 1. */
		ASSERT_EQ(1, poll(&pfd, 1, 5000));
		ASSERT_TRUE(pfd.revents & POLLIN);
	} else {
		ASSERT_EQ(1, wait_woken(&it, 1));
		ASSERT_EQ(1, it.ready);
	}
	ASSERT_EQ(0, mpq_queue_get(it.queue, buf, &len, 0));
	ASSERT_EQ(0, memcmp(buf, peek ? "taken" : "behind", peek ? 5 : 6));
	if (linger_ms)
		ASSERT_EQ(128 + SIGKILL, wait_child(pid, 5000));
	/* The rest of the run, then nothing. */
	for (; run > 1; run--) {
		len = sizeof(buf);
		ASSERT_EQ(0, mpq_queue_get(it.queue, buf, &len, 0));
	}
	if (use_fd)
		EXPECT_EQ(0, poll(&pfd, 1, 0));
out:
	mpq_queue_free(it.queue);
	munmap(flag, sizeof(*flag));
}

TEST(wait_on_a_queue_sees_a_message_behind_a_dead_producer)
{
	wait_sees_past_a_death(_metadata, 0, 0, 0, 0);
}

TEST(wait_on_a_queue_wakes_when_a_producer_dies_ahead_of_a_message)
{
	wait_sees_past_a_death(_metadata, 0, 300, 0, 0);
}

TEST(wait_on_a_queue_sees_a_dead_consumers_message)
{
	wait_sees_past_a_death(_metadata, 1, 0, 0, 0);
}

TEST(wait_on_a_queue_wakes_when_a_consumer_dies_with_a_message)
{
	wait_sees_past_a_death(_metadata, 1, 300, 0, 0);
}

/* A thread that opens a window on q and ends in it after linger_ms. */
struct window_thread {
	struct mpq_queue *q;
	int peek;
	int linger_ms;
	int opened;
};

static void *ends_in_a_window(void *arg)
{
	struct window_thread *w = arg;
	struct mpq_msg m = { 0 };

	if (w->peek ? mpq_queue_peek(w->q, &m, 0) :
		      mpq_queue_reserve(w->q, 8, &m, 0))
		return NULL;
	__atomic_store_n(&w->opened, 1, __ATOMIC_RELEASE);
	sleep_ms(w->linger_ms);
	/* Its records are left to the kernel's robust-list walk: dead. */
	pthread_exit(NULL);
}

/*
 * As above, the participant a thread that ends while mpq_wait() sleeps,
 * in a process that lives on: the module hears of a process's end, not
 * of a thread's, so the wait must look again by itself while someone is
 * inside an operation, as a get's sleep does.
 */
static void wait_sees_past_a_thread(struct __test_metadata *_metadata,
				    int peek)
{
	struct mpq_queue_attr attr = { .maxsize = 4, .msgsize = 8 };
	struct mpq_wait_item it = { .kind = MPQ_WAIT_QUEUE };
	struct window_thread w = { .peek = peek, .linger_ms = 300 };
	char buf[8];
	size_t len = sizeof(buf);
	pthread_t t;
	int i;

	ASSERT_EQ(0, mpq_queue_new(&it.queue, &attr));
	w.q = it.queue;
	if (peek)
		ASSERT_EQ(0, mpq_queue_put(it.queue, "taken", 5, 0));
	ASSERT_EQ(0, pthread_create(&t, NULL, ends_in_a_window, &w));
	for (i = 0; i < 5000 && !__atomic_load_n(&w.opened, __ATOMIC_ACQUIRE);
	     i++)
		sleep_ms(1);
	ASSERT_EQ(1, w.opened);
	if (!peek)
		ASSERT_EQ(0, mpq_queue_put(it.queue, "behind", 6, 0));
	ASSERT_EQ(1, wait_woken(&it, 1));
	ASSERT_EQ(1, it.ready);
	ASSERT_EQ(0, mpq_queue_get(it.queue, buf, &len, 0));
	ASSERT_EQ(0, memcmp(buf, peek ? "taken" : "behind", peek ? 5 : 6));
	pthread_join(t, NULL);
	mpq_queue_free(it.queue);
}

TEST(wait_on_a_queue_sees_a_producer_thread_end_in_its_window)
{
	wait_sees_past_a_thread(_metadata, 0);
}

TEST(wait_on_a_queue_sees_a_consumer_thread_end_in_its_window)
{
	wait_sees_past_a_thread(_metadata, 1);
}

/*
 * The same in the program's own poll loop, on the queue's fd (the
 * module's ->poll()): see wait_sees_past_a_death().
 */
TEST(queue_fd_polls_readable_with_a_message_behind_a_dead_producer)
{
	wait_sees_past_a_death(_metadata, 0, 0, 1, 0);
}

TEST(queue_fd_wakes_its_poller_when_a_producer_dies_ahead_of_a_message)
{
	wait_sees_past_a_death(_metadata, 0, 300, 1, 0);
}

TEST(queue_fd_polls_readable_with_a_dead_consumers_message)
{
	wait_sees_past_a_death(_metadata, 1, 0, 1, 0);
}

TEST(queue_fd_wakes_its_poller_when_a_consumer_dies_with_a_message)
{
	wait_sees_past_a_death(_metadata, 1, 300, 1, 0);
}

/*
 * The same with the dead consumer's peek in a run (RUN_N messages
 * packed over slots): it held the run's busy bit, so the run stays at head,
 * busy, and a look at the head finds nothing to take; a get clears the
 * dead one's bit and takes the message it was looking at.
 */
TEST(wait_on_a_queue_sees_a_dead_consumers_message_in_a_run)
{
	wait_sees_past_a_death(_metadata, 1, 0, 0, RUN_N);
}

TEST(queue_fd_polls_readable_with_a_dead_consumers_message_in_a_run)
{
	wait_sees_past_a_death(_metadata, 1, 0, 1, RUN_N);
}

TEST(queue_fd_wakes_its_poller_when_a_consumer_dies_in_a_run)
{
	wait_sees_past_a_death(_metadata, 1, 300, 1, RUN_N);
}

/* A plain fd and a process sentinel (a pidfd) in the same wait. */
TEST(wait_takes_plain_fds_and_process_sentinels)
{
	struct mpq_wait_item it[2] = { { .kind = MPQ_WAIT_FD },
				       { .kind = MPQ_WAIT_FD } };
	struct later l = { .close_only = 1 };
	int fds[2];
	pid_t pid;

	ASSERT_EQ(0, pipe(fds));
	pid = spawn(act_later, &l);
	it[0].fd = fds[0];
	it[1].fd = syscall(SYS_pidfd_open, pid, 0);
	ASSERT_LE(0, it[1].fd);
	ASSERT_EQ(1, wait_woken(it, 2));
	ASSERT_EQ(0, it[0].ready);
	ASSERT_EQ(1, it[1].ready);	/* the child ended */
	ASSERT_EQ(1, write(fds[1], "x", 1));
	ASSERT_EQ(2, mpq_wait(it, 2, 0));
	ASSERT_EQ(0, wait_child(pid, 5000));
	close(it[1].fd);
	close(fds[0]);
	close(fds[1]);
}

struct many {
	struct mpq_conn *w[NPIPES];
	int per_pipe[NPIPES];
	int total;
};

/* Send the planned number of messages to each pipe, in a random order. */
static int send_randomly(void *arg)
{
	struct many *m = arg;
	int left[NPIPES], remaining = m->total, i;
	uint64_t seed = 77;

	memcpy(left, m->per_pipe, sizeof(left));
	while (remaining) {
		i = (int)(rnd(&seed) % NPIPES);
		if (!left[i])
			continue;
		if (mpq_conn_send_bytes(m->w[i], &i, sizeof(i), MPQ_FOREVER))
			return 1;
		left[i]--;
		remaining--;
		if (rnd(&seed) % 16 == 0)
			sleep_ms(1);	/* let the reader sleep sometimes */
	}
	return 0;
}

TEST(wait_over_100_connections_with_random_readiness_misses_nothing)
{
	struct mpq_pipe_attr attr = { .bufsize = 4096 };
	struct mpq_wait_item it[NPIPES];
	struct mpq_conn *r[NPIPES];
	struct many m = { .total = 0 };
	int got[NPIPES] = { 0 }, received = 0, i;
	uint64_t seed = 5;
	pid_t pid;

	for (i = 0; i < NPIPES; i++) {
		ASSERT_EQ(0, mpq_pipe(&r[i], &m.w[i], 0, &attr));
		conn_item(&it[i], r[i]);
		m.per_pipe[i] = (int)(rnd(&seed) % 50);
		m.total += m.per_pipe[i];
	}
	pid = spawn(send_randomly, &m);
	while (received < m.total) {
		int n = wait_woken(it, NPIPES);

		ASSERT_LT(0, n);
		for (i = 0; i < NPIPES; i++) {
			int v;
			size_t len = sizeof(v);

			if (!it[i].ready)
				continue;
			ASSERT_EQ(0, mpq_conn_recv_bytes_into(r[i], &v, &len, 0));
			ASSERT_EQ(i, v);
			got[i]++;
			received++;
		}
	}
	for (i = 0; i < NPIPES; i++)
		ASSERT_EQ(m.per_pipe[i], got[i]);
	ASSERT_EQ(0, wait_child(pid, 10000));
	for (i = 0; i < NPIPES; i++) {
		mpq_conn_free(r[i]);
		mpq_conn_free(m.w[i]);
	}
}

TEST(epoll_add_puts_a_connection_in_the_callers_own_loop)
{
	struct later l = { .wfd = -1 };
	struct mpq_conn *r;
	struct mpq_wait_item it;
	struct epoll_event ev;
	int ep = epoll_create1(0), n;
	pid_t pid;

	ASSERT_EQ(0, mpq_pipe(&r, &l.w, 0, NULL));
	conn_item(&it, r);
	ASSERT_EQ(0, mpq_epoll_add(ep, &it, 42));
	pid = spawn(act_later, &l);
	mpq_conn_close(l.w);
	do {
		n = epoll_wait(ep, &ev, 1, 10000);
		ASSERT_EQ(1, n);
		ASSERT_EQ(42, ev.data.u64);
	} while (mpq_conn_poll(r, 0) == 0);	/* a spurious wake-up may come */
	ASSERT_EQ(0, wait_child(pid, 5000));
	close(ep);
	mpq_conn_free(r);
	mpq_conn_free(l.w);
}

TEST(wait_refuses_bad_items)
{
	struct mpq_wait_item it = { .kind = 99 };
	struct mpq_conn *r, *w;

	ASSERT_EQ(-EINVAL, mpq_wait(NULL, 1, 0));
	ASSERT_EQ(-EINVAL, mpq_wait(&it, 1, 0));
	it.kind = MPQ_WAIT_FD;
	it.fd = -1;
	ASSERT_EQ(-EBADF, mpq_wait(&it, 1, 0));
	ASSERT_EQ(0, mpq_pipe(&r, &w, 0, NULL));
	conn_item(&it, r);
	mpq_conn_close(r);
	ASSERT_EQ(-EBADF, mpq_wait(&it, 1, 0));
	conn_item(&it, w);		/* the sending end cannot be read */
	ASSERT_EQ(-EBADF, mpq_wait(&it, 1, 0));
	ASSERT_EQ(0, mpq_wait(NULL, 0, 0));
	mpq_conn_free(r);
	mpq_conn_free(w);
}

TEST_HARNESS_MAIN
