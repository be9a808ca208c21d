// SPDX-License-Identifier: MIT
/*
 * producer_consumer: Python's classic multiprocessing example, in C.
 *
 *     q = multiprocessing.Queue()
 *     Process(target=consumer, args=(q,)).start()   # q.get() and print
 *     Process(target=producer, args=(q,)).start()   # q.put(item) ... q.put(None)
 *
 * The parent makes one mpq queue and forks two children that inherit it:
 * a producer that puts N messages (default 10, or argv[1]), each holding a
 * sequence number and the CLOCK_REALTIME time it was sent, then a "stop"
 * message; and a consumer that prints every message with its latency and
 * exits when it sees "stop". The parent waits for both and exits non-zero
 * if either failed.
 *
 * Every mpq call returns 0 or a negative errno, so strerror(-ret) says
 * what went wrong. The backend (the kernel module's /dev/mpq, or memfd +
 * futex where the module is not loaded) is chosen automatically; set
 * MPQ_BACKEND=memfd or MPQ_BACKEND=kmod to pick one.
 *
 * Build (installed library):
 *     cc -o producer_consumer producer_consumer.c $(pkg-config --cflags --libs mpq)
 * In the source tree:
 *     make build/examples/producer_consumer
 *     (= cc -Iinclude -o build/examples/producer_consumer \
 *        examples/producer_consumer.c -Lbuild/lib -lmpq -Wl,-rpath,$PWD/build/lib)
 * Run:
 *     build/examples/producer_consumer [N]
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mpq.h>

/* One message: a small fixed-size struct, copied into the queue as bytes. */
struct msg {
	uint32_t stop;		/* 1: no more messages (Python's None) */
	uint32_t seq;		/* 0, 1, 2, ... */
	int64_t sent_sec;	/* CLOCK_REALTIME when it was put */
	int64_t sent_nsec;
};

/* Report a failed call: mpq calls return -errno. */
static int fail(const char *who, const char *what, int ret)
{
	fprintf(stderr, "%s: %s: %s\n", who, what, strerror(-ret));
	return 1;
}

/* The producer child: put n messages, then the stop message. */
static int producer(struct mpq_queue *q, unsigned int n)
{
	struct msg m;
	struct timespec now;
	unsigned int i;
	int ret;

	for (i = 0; i <= n; i++) {
		memset(&m, 0, sizeof(m));
		m.stop = (i == n);
		m.seq = i;
		clock_gettime(CLOCK_REALTIME, &now);
		m.sent_sec = now.tv_sec;
		m.sent_nsec = now.tv_nsec;

		/* Blocks while the queue is full, like Queue.put(). */
		ret = mpq_queue_put(q, &m, sizeof(m), MPQ_FOREVER);
		if (ret)
			return fail("producer", "mpq_queue_put", ret);
	}
	return 0;
}

/* The consumer child: get and print messages until the stop message. */
static int consumer(struct mpq_queue *q)
{
	uint32_t expected = 0;

	for (;;) {
		struct msg m;
		size_t len = sizeof(m);	/* in: buffer size, out: message size */
		struct timespec now;
		struct tm tm;
		time_t sec;
		char hms[16];
		double latency_us;
		int ret;

		/* Blocks while the queue is empty, like Queue.get(). */
		ret = mpq_queue_get(q, &m, &len, MPQ_FOREVER);
		if (ret)
			return fail("consumer", "mpq_queue_get", ret);
		clock_gettime(CLOCK_REALTIME, &now);
		if (len != sizeof(m)) {
			fprintf(stderr, "consumer: message of %zu bytes, expected %zu\n",
				len, sizeof(m));
			return 1;
		}
		/* One producer's messages come out in the order it put them. */
		if (m.seq != expected) {
			fprintf(stderr, "consumer: got #%" PRIu32 ", expected #%" PRIu32 "\n",
				m.seq, expected);
			return 1;
		}
		expected++;
		if (m.stop) {
			printf("consumer: got stop after %" PRIu32 " messages\n", m.seq);
			return 0;
		}

		sec = (time_t)m.sent_sec;
		localtime_r(&sec, &tm);
		strftime(hms, sizeof(hms), "%H:%M:%S", &tm);
		latency_us = (double)(now.tv_sec - m.sent_sec) * 1e6 +
			     (double)(now.tv_nsec - m.sent_nsec) / 1e3;
		printf("consumer: got #%" PRIu32 " sent at %s.%06ld (latency %.1f us)\n",
		       m.seq, hms, (long)(m.sent_nsec / 1000), latency_us);
	}
}

/*
 * Like Process.join() on both children. If one fails, the other could wait
 * forever (for a stop message, or for room in the queue): stop it.
 * Returns 0 if both exited with status 0.
 */
static int join_both(pid_t prod, pid_t cons)
{
	int failed = 0;

	while (prod > 0 || cons > 0) {
		const char *name;
		int status;
		pid_t pid = waitpid(-1, &status, 0);

		if (pid < 0) {
			if (errno == EINTR)
				continue;
			perror("waitpid");
			return 1;
		}
		if (pid == prod) {
			name = "producer";
			prod = 0;
		} else if (pid == cons) {
			name = "consumer";
			cons = 0;
		} else {
			continue;
		}
		if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
			continue;
		if (WIFEXITED(status))
			fprintf(stderr, "%s exited with status %d\n", name,
				WEXITSTATUS(status));
		else
			fprintf(stderr, "%s killed by signal %d\n", name,
				WTERMSIG(status));
		failed = 1;
		if (prod > 0)
			kill(prod, SIGTERM);
		if (cons > 0)
			kill(cons, SIGTERM);
	}
	return failed;
}

int main(int argc, char **argv)
{
	struct mpq_queue *q;
	unsigned int n = 10;
	pid_t cons, prod;
	int ret, failed;

	if (argc > 1) {
		char *end;
		long v = strtol(argv[1], &end, 10);

		if (end == argv[1] || *end || v < 0 || v > 1000000) {
			fprintf(stderr, "usage: %s [N]   (0 <= N <= 1000000, default 10)\n",
				argv[0]);
			return 2;
		}
		n = (unsigned int)v;
	}

	/* NULL attr: default size and message limit, backend chosen for us. */
	ret = mpq_queue_new(&q, NULL);
	if (ret)
		return fail("main", "mpq_queue_new", ret);
	printf("queue backend: %s\n", mpq_backend_name(mpq_queue_backend(q)));

	/* Both children inherit the queue across fork(). */
	fflush(stdout);		/* or a child would print our buffer again */
	cons = fork();
	if (cons == 0) {
		ret = consumer(q);
		fflush(stdout);	/* _exit() does not flush stdio */
		_exit(ret);
	}
	if (cons < 0)
		return fail("main", "fork", -errno);
	prod = fork();
	if (prod == 0)
		_exit(producer(q, n));
	if (prod < 0) {
		ret = -errno;
		kill(cons, SIGTERM);	/* no stop message will come */
		join_both(0, cons);
		return fail("main", "fork", ret);
	}

	failed = join_both(prod, cons);
	mpq_queue_free(q);
	return failed;
}
