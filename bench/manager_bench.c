// SPDX-License-Identifier: MIT
/*
 * manager_bench: the Manager on a private redis-server over TCP loopback,
 * in the cells bench/manager_cpython.py measures for Python's BaseManager
 * (a remote queue.Queue and dict), so the two print side by side:
 *
 *   rtt      two processes ping-pong one 64 B message through two queues
 *            (put, get, done on each side); median and p99 microseconds
 *   single   a producer process puts N 64 B messages one call each; the
 *            parent gets and dones each; messages per second
 *   batched  the same with put_many / get_many / done_many of 256
 *   dict     dict_set then dict_get of N keys, one call each; ops/s
 *
 * The queue cells run twice: with leases (get + done per message, the
 * at-least-once default) and with MPQ_MANAGER_NO_LEASE ("/nl": a get is
 * for good, as in Python's managed queue.Queue, so no done is sent).
 *
 * Every message is checked (sequence number in its first bytes).
 *     make build/bench/manager_bench
 *     build/bench/manager_bench [PORT] [event|rtt]   (those cells alone)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mpq_net.h>

#define SEC	1000000000LL

static int64_t now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * SEC + ts.tv_nsec;
}

static int cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

static struct mpq_manager *attach(struct mpq_manager *m)
{
	struct mpq_manager *p;

	if (mpq_manager_connect(&p, mpq_manager_address(m),
				mpq_manager_authkey(m), 5 * SEC))
		exit(3);
	return p;
}

static int64_t lease = 0;	/* the cells' queues: leased or not */

static struct mpq_manager_queue *q_open(struct mpq_manager *m,
					const char *name)
{
	struct mpq_manager_queue_attr a = { .lease_ns = lease };
	struct mpq_manager_queue *q;
	char full[64];

	snprintf(full, sizeof(full), "%s%s", name, lease ? "-nolease" : "");
	if (mpq_manager_queue(m, full, &a, &q))
		exit(3);
	return q;
}

static void fail(const char *what, int err)
{
	fprintf(stderr, "manager_bench: %s: %s\n", what, strerror(-err));
	exit(1);
}

static void rtt(struct mpq_manager *m, int n)
{
	struct mpq_manager_msg msg;
	char buf[64] = { 0 };
	int64_t *t = calloc(n, sizeof(*t)), t0;
	pid_t child = fork();
	int i, err;

	if (child == 0) {
		struct mpq_manager *p = attach(m);
		struct mpq_manager_queue *ping = q_open(p, "ping");
		struct mpq_manager_queue *pong = q_open(p, "pong");

		for (i = 0; i < n + 100; i++) {
			if (mpq_manager_queue_get(ping, &msg, 10 * SEC) ||
			    mpq_manager_queue_put(pong, msg.data, msg.len, 10 * SEC))
				_exit(1);
			/* Without leases, as Python's queue.Queue: no done
			 * (it would only count for join). */
			if (lease == MPQ_MANAGER_NO_LEASE) {
				mpq_manager_msg_free(&msg);
				err = 0;
			} else {
				err = mpq_manager_msg_done(ping, &msg);
			}
			if (err)
				_exit(1);
		}
		_exit(0);
	}
	{
		struct mpq_manager *p = attach(m);
		struct mpq_manager_queue *ping = q_open(p, "ping");
		struct mpq_manager_queue *pong = q_open(p, "pong");

		for (i = -100; i < n; i++) {
			memcpy(buf, &i, sizeof(i));
			t0 = now();
			err = mpq_manager_queue_put(ping, buf, sizeof(buf), 10 * SEC);
			if (!err)
				err = mpq_manager_queue_get(pong, &msg, 10 * SEC);
			if (err)
				fail("rtt", err);
			if (msg.len != 64 || memcmp(msg.data, &i, sizeof(i)))
				fail("rtt: wrong message", -EIO);
			if (lease == MPQ_MANAGER_NO_LEASE) {
				mpq_manager_msg_free(&msg);
			} else {
				err = mpq_manager_msg_done(pong, &msg);
				if (err)
					fail("rtt done", err);
			}
			if (i >= 0)
				t[i] = now() - t0;
		}
		waitpid(child, NULL, 0);
		qsort(t, n, sizeof(*t), cmp64);
		printf("rtt%-7s %8.1f us p50  %8.1f us p99  (%d round trips)\n",
		       lease ? "/nl" : "", t[n / 2] / 1e3,
		       t[n * 99 / 100] / 1e3, n);
		mpq_manager_free(p);
	}
	free(t);
}

static void stream(struct mpq_manager *m, int n, unsigned int batch,
		   const char *name)
{
	struct mpq_manager_msg *msgs = calloc(batch, sizeof(*msgs));
	struct iovec *v = calloc(batch, sizeof(*v));
	char (*bufs)[64] = calloc(batch, 64);
	int64_t t0 = 0;
	int got = 0, i, k;
	pid_t child = fork();

	if (child == 0) {
		struct mpq_manager_queue *q = q_open(attach(m), name);

		for (i = 0; i < n; i += k) {
			k = n - i < (int)batch ? n - i : (int)batch;
			for (int j = 0; j < k; j++) {
				int seq = i + j;

				memcpy(bufs[j], &seq, sizeof(seq));
				v[j] = (struct iovec){ bufs[j], 64 };
			}
			if (batch == 1) {
				if (mpq_manager_queue_put(q, bufs[0], 64, 10 * SEC))
					_exit(1);
			} else {
				int off = 0;

				while (off < k) {
					int r = mpq_manager_queue_put_many(q, v + off, k - off, 10 * SEC);

					if (r < 0)
						_exit(1);
					off += r;
				}
			}
		}
		_exit(0);
	}
	{
		struct mpq_manager_queue *q = q_open(attach(m), name);

		while (got < n) {
			int r = mpq_manager_queue_get_many(q, msgs, batch, 10 * SEC);

			if (r < 0)
				fail(name, r);
			if (!t0)
				t0 = now();
			for (i = 0; i < r; i++) {
				int seq;

				memcpy(&seq, msgs[i].data, sizeof(seq));
				if (seq != got + i || msgs[i].len != 64)
					fail("stream: order", -EIO);
			}
			if (lease == MPQ_MANAGER_NO_LEASE) {
				for (i = 0; i < r; i++)
					mpq_manager_msg_free(&msgs[i]);
			} else if (batch == 1) {
				if (mpq_manager_msg_done(q, &msgs[0]))
					fail("done", -EIO);
			} else if (mpq_manager_msg_done_many(q, msgs, r) != r) {
				fail("done_many", -EIO);
			}
			got += r;
		}
		printf("%-7s%-3s %10.0f msgs/s  (%d messages of 64 B, batch %u)\n",
		       name, lease ? "/nl" : "", (n - 1) / ((now() - t0) / 1e9),
		       n, batch);
		waitpid(child, NULL, 0);
	}
	free(msgs);
	free(v);
	free(bufs);
}

static void dict(struct mpq_manager *m, int n)
{
	struct mpq_manager_dict *d;
	char k[32], v[64] = { 0 }, out[64];
	size_t len;
	int64_t t0;
	int i;

	if (mpq_manager_dict(m, "bench", &d))
		exit(3);
	t0 = now();
	for (i = 0; i < n; i++) {
		snprintf(k, sizeof(k), "key%d", i);
		if (mpq_manager_dict_set(d, k, strlen(k), v, sizeof(v)))
			fail("dict set", -EIO);
	}
	printf("dict set   %10.0f ops/s\n", n / ((now() - t0) / 1e9));
	t0 = now();
	for (i = 0; i < n; i++) {
		snprintf(k, sizeof(k), "key%d", i);
		len = sizeof(out);
		if (mpq_manager_dict_get(d, k, strlen(k), out, &len) || len != 64)
			fail("dict get", -EIO);
	}
	printf("dict get   %10.0f ops/s\n", n / ((now() - t0) / 1e9));
	mpq_manager_dict_free(d);
}

/*
 * Event ping-pong: the parent sets "ping" and waits for "pong"; the child
 * waits for "ping", clears it, sets "pong". A round trip is a set, a
 * wait (woken by the other's set) and a clear on each side.
 */
static void event_rtt(struct mpq_manager *m, int n)
{
	struct mpq_manager_event *ping, *pong;
	int64_t *t = calloc(n, sizeof(*t)), t0;
	pid_t child;
	int i, err;

	child = fork();
	if (child == 0) {
		struct mpq_manager *p = attach(m);

		if (mpq_manager_event(p, "ping", &ping) ||
		    mpq_manager_event(p, "pong", &pong))
			_exit(1);
		for (i = 0; i < n + 100; i++)
			if (mpq_manager_event_wait(ping, 10 * SEC) ||
			    mpq_manager_event_clear(ping) ||
			    mpq_manager_event_set(pong))
				_exit(1);
		_exit(0);
	}
	{
		struct mpq_manager *p = attach(m);

		if (mpq_manager_event(p, "ping", &ping) ||
		    mpq_manager_event(p, "pong", &pong))
			exit(3);
		for (i = -100; i < n; i++) {
			t0 = now();
			err = mpq_manager_event_set(ping);
			if (!err)
				err = mpq_manager_event_wait(pong, 10 * SEC);
			if (!err)
				err = mpq_manager_event_clear(pong);
			if (err)
				fail("event rtt", err);
			if (i >= 0)
				t[i] = now() - t0;
		}
		waitpid(child, NULL, 0);
		qsort(t, n, sizeof(*t), cmp64);
		printf("event rtt  %8.1f us p50  %8.1f us p99  (%d round trips)\n",
		       t[n / 2] / 1e3, t[n * 99 / 100] / 1e3, n);
		mpq_manager_event_free(ping);
		mpq_manager_event_free(pong);
		mpq_manager_free(p);
	}
	free(t);
}

int main(int argc, char **argv)
{
	char addr[64];
	struct mpq_manager_attr a = { .address = addr };
	struct mpq_manager *m;
	int err;

	snprintf(addr, sizeof(addr), "tcp://127.0.0.1:%s",
		 argc > 1 ? argv[1] : "7399");
	err = mpq_manager_start(&m, &a);
	if (err)
		fail("start", err);
	printf("# mpq Manager, redis-server on %s\n", addr);
	if (argc > 2 && !strcmp(argv[2], "event")) {	/* that cell alone */
		event_rtt(m, 3000);
		mpq_manager_shutdown(m);
		return 0;
	}
	if (argc > 2 && !strcmp(argv[2], "rtt")) {	/* round trips alone */
		rtt(m, 5000);
		lease = MPQ_MANAGER_NO_LEASE;
		rtt(m, 5000);
		mpq_manager_shutdown(m);
		return 0;
	}
	printf("# leased queues (get, then done: at-least-once)\n");
	rtt(m, 5000);
	stream(m, 20000, 1, "single");
	stream(m, 300000, 256, "batched");
	printf("# /nl: MPQ_MANAGER_NO_LEASE (Python's semantics: a get is for good)\n");
	lease = MPQ_MANAGER_NO_LEASE;
	rtt(m, 5000);
	stream(m, 20000, 1, "single");
	stream(m, 300000, 256, "batched");
	dict(m, 20000);
	event_rtt(m, 3000);
	mpq_manager_shutdown(m);
	return 0;
}
