// SPDX-License-Identifier: MIT
/*
 * queue_vs_pipe: an mpq queue against a C pipe, side by side in one run,
 * between two processes (fork), 8-byte messages.
 *
 *   round trip  The parent sends a sequence number on "ping", a child
 *               sends it back on "pong" (two queues, or two pipes). After
 *               1,000 warm-up exchanges, N round trips (default 100,000)
 *               are each timed with CLOCK_MONOTONIC in the parent; p50,
 *               p90, p99, p99.9 and max come from every sample (sorted).
 *   stream      A child sends M messages (default 2,000,000) as fast as it
 *               can, the parent receives them, checks they are 0..M-1 in
 *               order, and reports messages/s from the first message it
 *               received to the last. Pipe: one write() per message, reads
 *               of exactly 8 bytes. mpq: one put and one get per message.
 *
 * mpq calls block with MPQ_FOREVER (the library spins briefly, then sleeps
 * on a futex); queues are made with maxsize 1024, msgsize 64, the backend
 * from MPQ_BACKEND or the automatic choice. Pipe and mpq runs alternate
 * (pipe, mpq, pipe, mpq) and each figure is the median over the rounds.
 *
 * Usage: queue_vs_pipe [-q] [-n N] [-m M] [-r ROUNDS] [-o FILE] [-v]
 *   -q (or QUICK=1)  quick: N = 20,000, M = 200,000, one round each
 *   -n N             measured round trips per run
 *   -m M             stream messages per run
 *   -r ROUNDS        rounds of each alternative (default 2, quick 1)
 *   -o FILE          also write the results as JSON lines to FILE
 *   -v               print every run, not only the medians, with how many
 *                    times each side slept (voluntary context switches,
 *                    parent + child)
 * Exits 1 if any call failed or any message was lost or out of order.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mpq.h>

#include "bench.h"

#define MSG_SIZE	8
#define WARMUP		1000
#define MAX_ROUNDS	16

enum impl { IMPL_PIPE, IMPL_MPQ };

static const char *const impl_label[] = { "pipe", "mpq queue" };
static const char *const impl_json[] = { "pipe", "mpq-queue" };

/* One direction of a channel: a pipe or an mpq queue. */
struct chan {
	enum impl impl;
	int fd[2];		/* pipe: read end, write end */
	struct mpq_queue *q;
};

static struct mpq_queue_attr queue_attr(void)
{
	struct mpq_queue_attr attr;

	memset(&attr, 0, sizeof(attr));
	attr.maxsize = 1024;
	attr.msgsize = 64;
	return attr;
}

static int chan_open(struct chan *c, enum impl impl)
{
	struct mpq_queue_attr attr = queue_attr();
	int ret;

	memset(c, 0, sizeof(*c));
	c->impl = impl;
	c->fd[0] = c->fd[1] = -1;
	if (impl == IMPL_PIPE) {
		if (pipe(c->fd) < 0) {
			fprintf(stderr, "pipe: %s\n", strerror(errno));
			return -1;
		}
		return 0;
	}
	ret = mpq_queue_new(&c->q, &attr);
	if (ret) {
		fprintf(stderr, "mpq_queue_new: %s\n", strerror(-ret));
		return -1;
	}
	return 0;
}

static void chan_close(struct chan *c)
{
	if (c->fd[0] >= 0)
		close(c->fd[0]);
	if (c->fd[1] >= 0)
		close(c->fd[1]);
	c->fd[0] = c->fd[1] = -1;
	mpq_queue_free(c->q);
	c->q = NULL;
}

/* After fork: this process only reads (end 0) or only writes (end 1). */
static void chan_keep(struct chan *c, int end)
{
	if (c->impl == IMPL_PIPE && c->fd[!end] >= 0) {
		close(c->fd[!end]);
		c->fd[!end] = -1;
	}
}

static int chan_send(struct chan *c, uint64_t v)
{
	int ret;

	if (c->impl == IMPL_MPQ) {
		ret = mpq_queue_put(c->q, &v, sizeof(v), MPQ_FOREVER);
		if (ret)
			fprintf(stderr, "mpq_queue_put: %s\n", strerror(-ret));
		return ret ? -1 : 0;
	}
	/* One write() per message; a pipe write of 8 bytes is atomic. */
	return bench_write_full(c->fd[1], &v, sizeof(v));
}

static int chan_recv(struct chan *c, uint64_t *v)
{
	size_t len;
	int ret;

	if (c->impl == IMPL_MPQ) {
		len = sizeof(*v);
		ret = mpq_queue_get(c->q, v, &len, MPQ_FOREVER);
		if (ret) {
			fprintf(stderr, "mpq_queue_get: %s\n", strerror(-ret));
			return -1;
		}
		if (len != sizeof(*v)) {
			fprintf(stderr, "mpq_queue_get: got %zu bytes, sent %zu\n",
				len, sizeof(*v));
			return -1;
		}
		return 0;
	}
	/* Exactly 8 bytes: loop on short reads. */
	return bench_read_full(c->fd[0], v, sizeof(*v));
}

/* ---- round trip ---------------------------------------------------- */

struct rtt_result {
	uint64_t p50, p90, p99, p999, max;
};

/* How often each side slept during a run (voluntary context switches). */
struct sleeps {
	long parent, child;
};

/* The child: send back every message, warm-up included. */
static int rtt_echo(struct chan *ping, struct chan *pong, size_t total)
{
	uint64_t v;
	size_t i;

	for (i = 0; i < total; i++) {
		if (chan_recv(ping, &v) || chan_send(pong, v))
			return 1;
	}
	return 0;
}

static int rtt_run(enum impl impl, size_t n, uint64_t *samples,
		   struct rtt_result *res, struct sleeps *sl)
{
	struct rusage ru = { 0 };
	struct chan ping, pong;
	size_t i, total = WARMUP + n;
	pid_t pid;
	int err = 0;

	if (chan_open(&ping, impl))
		return -1;
	if (chan_open(&pong, impl)) {
		chan_close(&ping);
		return -1;
	}
	sl->parent = bench_sleeps();
	bench_nforked = 0;	/* each run: its one child on the next CPU */
	pid = bench_fork(impl == IMPL_PIPE ? "round trip, pipe" :
			 "round trip, mpq queue");
	if (pid == 0) {
		chan_keep(&ping, 0);
		chan_keep(&pong, 1);
		_exit(rtt_echo(&ping, &pong, total));
	}
	if (pid < 0) {
		chan_close(&ping);
		chan_close(&pong);
		return -1;
	}
	chan_keep(&ping, 1);
	chan_keep(&pong, 0);

	for (i = 0; i < total; i++) {
		uint64_t t0, t1, v;

		t0 = bench_now_ns();
		if (chan_send(&ping, i) || chan_recv(&pong, &v)) {
			err = -1;
			break;
		}
		t1 = bench_now_ns();
		if (v != i) {
			fprintf(stderr, "round trip, %s: sent %zu, got back %" PRIu64 "\n",
				impl_label[impl], i, v);
			err = -1;
			break;
		}
		if (i >= WARMUP)
			samples[i - WARMUP] = t1 - t0;
	}
	if (err)
		bench_kill(pid);
	else if (bench_wait(pid, &ru))
		err = -1;
	sl->parent = bench_sleeps() - sl->parent;
	sl->child = ru.ru_nvcsw;
	chan_close(&ping);
	chan_close(&pong);
	if (err)
		return -1;

	qsort(samples, n, sizeof(*samples), bench_cmp_u64);
	res->p50 = bench_percentile(samples, n, 50);
	res->p90 = bench_percentile(samples, n, 90);
	res->p99 = bench_percentile(samples, n, 99);
	res->p999 = bench_percentile(samples, n, 99.9);
	res->max = samples[n - 1];
	return 0;
}

/* ---- stream -------------------------------------------------------- */

static int stream_produce(struct chan *c, uint64_t m)
{
	uint64_t i;

	for (i = 0; i < m; i++)
		if (chan_send(c, i))
			return 1;
	return 0;
}

static int stream_run(enum impl impl, uint64_t m, double *rate,
		      struct sleeps *sl)
{
	struct rusage ru = { 0 };
	struct chan c;
	uint64_t i, v, first = 0, last = 0;
	pid_t pid;
	int err = 0;

	if (chan_open(&c, impl))
		return -1;
	sl->parent = bench_sleeps();
	bench_nforked = 0;
	pid = bench_fork(impl == IMPL_PIPE ? "stream, pipe" : "stream, mpq queue");
	if (pid == 0) {
		chan_keep(&c, 1);
		_exit(stream_produce(&c, m));
	}
	if (pid < 0) {
		chan_close(&c);
		return -1;
	}
	chan_keep(&c, 0);

	for (i = 0; i < m; i++) {
		if (chan_recv(&c, &v)) {
			err = -1;
			break;
		}
		if (v != i) {
			fprintf(stderr, "stream, %s: message %" PRIu64 " carries %" PRIu64
				" (lost or out of order)\n", impl_label[impl], i, v);
			err = -1;
			break;
		}
		if (i == 0)
			first = bench_now_ns();
	}
	last = bench_now_ns();
	if (err)
		bench_kill(pid);
	else if (bench_wait(pid, &ru))
		err = -1;
	sl->parent = bench_sleeps() - sl->parent;
	sl->child = ru.ru_nvcsw;
	/* The child is gone: nothing may be left behind in the channel. */
	if (!err && impl == IMPL_MPQ && mpq_queue_qsize(c.q) != 0) {
		fprintf(stderr, "stream, mpq queue: %d messages left over\n",
			mpq_queue_qsize(c.q));
		err = -1;
	}
	if (!err && impl == IMPL_PIPE && read(c.fd[0], &v, 1) != 0) {
		fprintf(stderr, "stream, pipe: bytes left over\n");
		err = -1;
	}
	chan_close(&c);
	if (err)
		return -1;
	*rate = m > 1 && last > first ? (double)(m - 1) * 1e9 / (double)(last - first) : 0;
	return 0;
}

/* ---- report -------------------------------------------------------- */

/* ns as microseconds, e.g. "12.3 us" or "0.41 us". */
static const char *fmt_us(char *buf, size_t size, double ns)
{
	double us = ns / 1000.0;

	snprintf(buf, size, us < 10 ? "%.2f us" : "%.1f us", us);
	return buf;
}

static void json_row(FILE *f, const char *bench, enum impl impl,
		     const char *backend, const char *metric, double value,
		     uint64_t count, int rounds)
{
	if (!f)
		return;
	fprintf(f, "{\"bench\":\"%s\",\"impl\":\"%s\",\"backend\":", bench,
		impl_json[impl]);
	if (impl == IMPL_MPQ)
		fprintf(f, "\"%s\"", backend);
	else
		fputs("null", f);
	fprintf(f, ",\"size\":%d,\"metric\":\"%s\",\"count\":%" PRIu64
		",\"rounds\":%d,\"value\":%.0f}\n", MSG_SIZE, metric, count,
		rounds, value);
}

static uint64_t parse_count(const char *s, const char *opt)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || !*s || v == 0 || s[0] == '-') {
		fprintf(stderr, "%s: expected a positive number, got \"%s\"\n", opt, s);
		exit(2);
	}
	return v;
}

static void usage(const char *argv0)
{
	fprintf(stderr,
		"usage: %s [-q] [-n ROUNDTRIPS] [-m MESSAGES] [-r ROUNDS] [-o FILE] [-v]\n"
		"  -q          quick (also QUICK=1): 20000 round trips, 200000 messages, 1 round\n"
		"  -n N        measured round trips per run (default 100000)\n"
		"  -m M        stream messages per run (default 2000000)\n"
		"  -r ROUNDS   runs of each alternative, interleaved (default 2)\n"
		"  -o FILE     write the results as JSON lines to FILE\n"
		"  -v          print every run\n", argv0);
}

int main(int argc, char **argv)
{
	const char *env = getenv("QUICK"), *out = NULL, *backend;
	bool quick = env && *env && strcmp(env, "0"), verbose = false;
	uint64_t n = 0, m = 0, rounds = 0;
	struct rtt_result rtt[2][MAX_ROUNDS];
	struct sleeps sl;
	double rate[2][MAX_ROUNDS], med_rate[2], v[MAX_ROUNDS];
	double med_rtt[2][5];
	struct mpq_queue_attr attr = queue_attr();
	struct mpq_queue *probe;
	uint64_t *samples;
	char machine[512], b[5][32];
	FILE *json = NULL;
	unsigned int r, k;
	int opt, ret, i;

	while ((opt = getopt(argc, argv, "qn:m:r:o:vh")) != -1) {
		switch (opt) {
		case 'q':
			quick = true;
			break;
		case 'n':
			n = parse_count(optarg, "-n");
			break;
		case 'm':
			m = parse_count(optarg, "-m");
			break;
		case 'r':
			rounds = parse_count(optarg, "-r");
			break;
		case 'o':
			out = optarg;
			break;
		case 'v':
			verbose = true;
			break;
		default:
			usage(argv[0]);
			return opt == 'h' ? 0 : 2;
		}
	}
	if (optind < argc) {
		usage(argv[0]);
		return 2;
	}
	if (!n)
		n = quick ? 20000 : 100000;
	if (!m)
		m = quick ? 200000 : 2000000;
	if (!rounds)
		rounds = quick ? 1 : 2;
	if (rounds > MAX_ROUNDS) {
		fprintf(stderr, "-r: at most %d rounds\n", MAX_ROUNDS);
		return 2;
	}

	/* Which backend the queues will get: make one and ask it. */
	ret = mpq_queue_new(&probe, &attr);
	if (ret) {
		fprintf(stderr, "mpq_queue_new: %s\n", strerror(-ret));
		return 1;
	}
	backend = mpq_backend_name(mpq_queue_backend(probe));
	mpq_queue_free(probe);

	samples = malloc(n * sizeof(*samples));
	if (!samples) {
		fprintf(stderr, "out of memory for %" PRIu64 " samples\n", n);
		return 1;
	}
	if (out) {
		json = fopen(out, "w");
		if (!json) {
			fprintf(stderr, "%s: %s\n", out, strerror(errno));
			return 1;
		}
	}
	bench_install_handlers();
	bench_pin_init();	/* as the suite: the two sides on different CPUs */

	bench_machine(machine, sizeof(machine));
	printf("machine: %s, backend %s\n", machine, backend);
	printf("%" PRIu64 " round trips (after %d warm-up), %" PRIu64
	       " stream messages, %" PRIu64 " round%s of each, interleaved, median shown\n\n",
	       n, WARMUP, m, rounds, rounds > 1 ? "s" : "");

	/* Round trips: pipe, mpq, pipe, mpq, ... */
	for (r = 0; r < rounds; r++) {
		for (k = IMPL_PIPE; k <= IMPL_MPQ; k++) {
			if (rtt_run(k, n, samples, &rtt[k][r], &sl))
				return 1;
			if (verbose)
				printf("  [round %u] round trip %-9s p50 %" PRIu64 " ns, p99 %"
				       PRIu64 " ns, max %" PRIu64 " ns; sleeps %ld + %ld\n",
				       r + 1, impl_label[k], rtt[k][r].p50, rtt[k][r].p99,
				       rtt[k][r].max, sl.parent, sl.child);
		}
	}
	/* Streams, the same way. */
	for (r = 0; r < rounds; r++) {
		for (k = IMPL_PIPE; k <= IMPL_MPQ; k++) {
			if (stream_run(k, m, &rate[k][r], &sl))
				return 1;
			if (verbose)
				printf("  [round %u] stream %-9s %.0f msgs/s; sleeps %ld + %ld\n",
				       r + 1, impl_label[k], rate[k][r], sl.parent,
				       sl.child);
		}
	}
	if (verbose)
		printf("\n");
	free(samples);

	/* Medians over rounds, each percentile on its own. */
	for (k = IMPL_PIPE; k <= IMPL_MPQ; k++) {
		for (i = 0; i < 5; i++) {
			for (r = 0; r < rounds; r++) {
				const struct rtt_result *x = &rtt[k][r];
				const uint64_t p[5] = { x->p50, x->p90, x->p99,
							x->p999, x->max };

				v[r] = (double)p[i];
			}
			med_rtt[k][i] = bench_median(v, rounds);
		}
		for (r = 0; r < rounds; r++)
			v[r] = rate[k][r];
		med_rate[k] = bench_median(v, rounds);
	}

	printf("%-32s %10s %10s %10s %10s %10s\n", "round trip, 8 B, processes",
	       "p50", "p90", "p99", "p99.9", "max");
	for (k = IMPL_PIPE; k <= IMPL_MPQ; k++) {
		for (i = 0; i < 5; i++)
			fmt_us(b[i], sizeof(b[i]), med_rtt[k][i]);
		printf("  %-30s %10s %10s %10s %10s %10s\n", impl_label[k],
		       b[0], b[1], b[2], b[3], b[4]);
	}
	if (med_rtt[IMPL_PIPE][0] > 0 && med_rtt[IMPL_MPQ][0] > 0) {
		double ratio = med_rtt[IMPL_MPQ][0] / med_rtt[IMPL_PIPE][0];

		printf("  %-30s %9.3gx   (mpq %.1fx %s)\n", "mpq / pipe (p50)", ratio,
		       ratio <= 1 ? 1 / ratio : ratio, ratio <= 1 ? "faster" : "slower");
	}
	printf("\n%-32s %10s\n", "stream, 8 B, 1 producer 1 consumer", "msgs/s");
	for (k = IMPL_PIPE; k <= IMPL_MPQ; k++)
		printf("  %-30s %10.0f\n", impl_label[k], med_rate[k]);
	if (med_rate[IMPL_PIPE] > 0)
		printf("  %-30s %9.1fx\n", "mpq / pipe",
		       med_rate[IMPL_MPQ] / med_rate[IMPL_PIPE]);

	if (json) {
		static const char *const metric[5] = {
			"rtt_p50_ns", "rtt_p90_ns", "rtt_p99_ns",
			"rtt_p999_ns", "rtt_max_ns",
		};

		for (k = IMPL_PIPE; k <= IMPL_MPQ; k++) {
			for (i = 0; i < 5; i++)
				json_row(json, "rtt", k, backend, metric[i],
					 med_rtt[k][i], n, (int)rounds);
			json_row(json, "stream", k, backend, "msgs_per_s",
				 med_rate[k], m, (int)rounds);
		}
		if (fclose(json)) {
			fprintf(stderr, "%s: %s\n", out, strerror(errno));
			return 1;
		}
		printf("\nresults written to %s\n", out);
	}
	return 0;
}
