/* SPDX-License-Identifier: MIT */
/*
 * The driver shared by the peer benchmarks in bench/peers/: the libraries a
 * C programmer would pick instead of mpq, measured the way mpqbench
 * measures mpq, so that bench/run.py can put their rows in the same
 * interleaved run. Each peer is one file that fills in a struct peer_ops
 * (how to open, send and receive with that library, the way its own
 * documentation does it) and calls peer_main(); this header does the rest:
 *
 *   PEER --list [--quick]
 *   PEER BENCH IMPL [--size BYTES] [--quick] [--count N]
 *
 * Rows are mpqbench's JSON rows ("backend" and "wait" null, "batch" 1).
 *
 * Benches (the same counts, warm-up and checks as mpqbench's)
 *   rtt     ping-pong, 1,000 warm-up exchanges then 100,000 (up to 4 KiB;
 *           2,000 above; --quick /10), each timed by the initiator:
 *           rtt_p50_ns ... rtt_max_ns. The answer must carry the ping's
 *           sequence number.
 *   stream  one producer, one consumer, one message per call, 2,000,000
 *           messages (or the peer's stream_max; --quick /10), checked in
 *           order; timed by the consumer from the end of its first
 *           receive to the last:
 *           msgs_per_s, bytes_per_s, and cpu_ns_per_msg.
 *   mpmc    2 producers, 2 consumers, 8-byte messages tagged (producer,
 *           seq), 2,000,000 in all (--quick /10); every message must be
 *           seen exactly once and in each producer's order. Each producer
 *           ends with stop messages carrying its number, sent until both
 *           consumers have seen one (a transport that spreads messages
 *           over the consumers, like ZeroMQ's PUSH, may give one consumer
 *           both); a consumer stops when it has seen a stop from each
 *           producer. Timed from the start signal to the later consumer's
 *           last stop: msgs_per_s and cpu_ns_per_msg.
 *
 * CPU per message: every process of the run takes getrusage(RUSAGE_SELF)
 * (user + system, all its threads: ZeroMQ's I/O thread counts) right
 * before its first message and after its last one is through and it has
 * let go of the library (a ZeroMQ producer's close waits for its queued
 * messages to leave), and the driver
 * divides the sum over all processes by the messages. A library's daemon
 * (iceoryx's RouDi) is not on the data path and is not counted.
 *
 * Every process is a child of the driver, pinned like mpqbench's (the two
 * sides of a pair on different CPUs); the parent only coordinates.
 */
#ifndef MPQ_PEER_H
#define MPQ_PEER_H

#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <sys/mman.h>

#include "../bench.h"

#define PEER_WARMUP	1000
#define PEER_NPROD	2
#define PEER_NCONS	2
#define PEER_STOP	(1ull << 63)	/* mpmc: a stop, | the producer */
#define PEER_SEQ_BITS	56
#define PEER_SEQ_MASK	((1ull << PEER_SEQ_BITS) - 1)
/* Messages a queue holds: 1024 like an mpq queue, fewer above 4 KiB. */
#define PEER_SLOTS	1024u
#define PEER_RING_BYTES	(4ul << 20)

enum peer_bench { PEER_RTT, PEER_STREAM, PEER_MPMC, PEER_NBENCH };
static const char *const peer_bench_name[PEER_NBENCH] = { "rtt", "stream", "mpmc" };

/* A process's part: rtt initiator/echo, stream or mpmc producer/consumer. */
enum peer_role { PEER_INITIATOR, PEER_ECHO, PEER_PRODUCER, PEER_CONSUMER };

struct peer {
	const struct peer_ops *ops;
	enum peer_bench bench;
	size_t size;
	unsigned int slots;	/* how many messages a queue should hold */
	enum peer_role role;
	unsigned int index;	/* which producer or consumer (mpmc) */
	void *priv;		/* the library's own state */
};

struct peer_ops {
	const char *name;
	/* Which cells this impl has; NULL if it has the cell. */
	const char *(*unsupported)(enum peer_bench bench, size_t size);
	/* In the parent, before any fork (shared queues, daemons). */
	int (*open)(struct peer *p);
	/* In each process, after fork: take its end(s) for p->role. */
	int (*attach)(struct peer *p);
	/* One message of p->size bytes, waiting while the queue is full. */
	int (*send)(struct peer *p, const unsigned char *msg);
	/* The same without waiting: 0, -EAGAIN if full, or another error. */
	int (*try_send)(struct peer *p, const unsigned char *msg);
	/* One message into msg (p->size bytes), waiting for it. */
	int (*recv)(struct peer *p, unsigned char *msg);
	/* In each process, after its last message. */
	void (*detach)(struct peer *p);
	/* In the parent, after every process is done. */
	void (*close)(struct peer *p);
	/* Most messages of a stream (0: no cap), for a peer that slow. */
	uint64_t stream_max;
	/*
	 * End each process with exit() rather than _exit(): for a library
	 * whose static destructors say goodbye to a daemon (iceoryx's
	 * runtime deregisters from RouDi).
	 */
	bool exit_normally;
};

/* The control page every process of a run shares. */
struct peer_shm {
	uint32_t ready __attribute__((aligned(64)));
	uint32_t go;
	uint32_t ack[PEER_NCONS][PEER_NPROD] __attribute__((aligned(64)));
	uint64_t stop_ns[PEER_NCONS] __attribute__((aligned(64)));
	uint64_t count[PEER_NCONS];
	uint64_t first_ns, first_n, last_ns;	/* stream consumer */
	uint64_t cpu_ns[PEER_NPROD + PEER_NCONS];
	/* then the mpmc consumers' seen-bitmaps */
};

static inline uint64_t peer_get_seq(const unsigned char *msg)
{
	uint64_t v;

	memcpy(&v, msg, sizeof(v));
	return v;
}

static inline void peer_put_seq(unsigned char *msg, uint64_t v)
{
	memcpy(msg, &v, sizeof(v));
}

static inline int peer_fail(const char *what, const char *why)
{
	fprintf(stderr, "peer: %s: %s\n", what, why);
	return -1;
}

static inline uint64_t peer_cpu_ns(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru))
		return 0;
	return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000ull +
	       (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000ull;
}

static inline unsigned int peer_slots_for(size_t size)
{
	unsigned int n = PEER_SLOTS;

	while (n > 2 && (uint64_t)n * size > PEER_RING_BYTES)
		n /= 2;
	return n;
}

/* Every process attached: then all start at once. */
static inline void peer_barrier(struct peer_shm *sh, uint32_t n)
{
	__atomic_add_fetch(&sh->ready, 1, __ATOMIC_SEQ_CST);
	while (__atomic_load_n(&sh->ready, __ATOMIC_ACQUIRE) < n)
		sched_yield();
}

static inline void peer_row(const struct peer *p, const char *metric,
			    double value, uint64_t count)
{
	printf("{\"bench\":\"%s\",\"impl\":\"%s\",\"backend\":null,\"wait\":null,"
	       "\"size\":%zu,\"batch\":1,\"metric\":\"%s\",\"value\":%.0f,"
	       "\"count\":%" PRIu64 "}\n", peer_bench_name[p->bench],
	       p->ops->name, p->size, metric, value, count);
}

/* ---- the processes ----------------------------------------------------- */

static int peer_rtt_side(struct peer *p, struct peer_shm *sh, uint64_t n,
			 uint64_t *samples)
{
	unsigned char *buf = (unsigned char *)calloc(1, p->size);
	uint64_t i, t0;

	if (!buf)
		return peer_fail("calloc", strerror(ENOMEM));
	peer_barrier(sh, 2);
	for (i = 0; i < PEER_WARMUP + n; i++) {
		if (p->role == PEER_INITIATOR) {
			t0 = bench_now_ns();
			peer_put_seq(buf, i);
			if (p->ops->send(p, buf) || p->ops->recv(p, buf))
				return -1;
			if (peer_get_seq(buf) != i)
				return peer_fail("rtt", "the answer carries the wrong sequence number");
			if (i >= PEER_WARMUP)
				samples[i - PEER_WARMUP] = bench_now_ns() - t0;
		} else {
			if (p->ops->recv(p, buf))
				return -1;
			if (peer_get_seq(buf) != i)
				return peer_fail("rtt", "a ping carries the wrong sequence number");
			if (p->ops->send(p, buf))
				return -1;
		}
	}
	free(buf);
	return 0;
}

static int peer_stream_side(struct peer *p, struct peer_shm *sh, uint64_t m)
{
	unsigned char *buf = (unsigned char *)malloc(p->size);
	uint64_t i;

	if (!buf)
		return peer_fail("malloc", strerror(ENOMEM));
	memset(buf, 0xa5, p->size);
	peer_barrier(sh, 2);
	sh->cpu_ns[p->role == PEER_CONSUMER] = peer_cpu_ns();
	for (i = 0; i < m; i++) {
		if (p->role == PEER_PRODUCER) {
			peer_put_seq(buf, i);
			if (p->ops->send(p, buf))
				return -1;
			continue;
		}
		if (p->ops->recv(p, buf))
			return -1;
		if (peer_get_seq(buf) != i) {
			fprintf(stderr, "peer: stream: message %" PRIu64 " carries %"
				PRIu64 " (lost, duplicated or out of order)\n",
				i, peer_get_seq(buf));
			return -1;
		}
		if (!i)
			sh->first_ns = bench_now_ns();
	}
	if (p->role == PEER_CONSUMER) {
		sh->last_ns = bench_now_ns();
		sh->first_n = 1;
	}
	free(buf);
	return 0;
}

static int peer_mpmc_produce(struct peer *p, struct peer_shm *sh, uint64_t per)
{
	unsigned char msg[8];
	unsigned int c;
	uint64_t i;
	int ret;

	peer_barrier(sh, PEER_NPROD + PEER_NCONS);
	while (!__atomic_load_n(&sh->go, __ATOMIC_ACQUIRE))
		sched_yield();
	sh->cpu_ns[p->index] = peer_cpu_ns();
	for (i = 0; i < per; i++) {
		peer_put_seq(msg, (uint64_t)p->index << PEER_SEQ_BITS | i);
		if (p->ops->send(p, msg))
			return -1;
	}
	/* Stops until every consumer has had one of ours. */
	peer_put_seq(msg, PEER_STOP | p->index);
	for (;;) {
		for (c = 0; c < PEER_NCONS; c++)
			if (!__atomic_load_n(&sh->ack[c][p->index], __ATOMIC_ACQUIRE))
				break;
		if (c == PEER_NCONS)
			break;
		ret = p->ops->try_send(p, msg);
		if (ret && ret != -EAGAIN)
			return -1;
		sched_yield();
	}
	return 0;
}

static int peer_mpmc_consume(struct peer *p, struct peer_shm *sh,
			     uint64_t *seen, uint64_t per)
{
	int64_t last[PEER_NPROD];
	unsigned int q, stops = 0;
	unsigned char msg[8];
	uint64_t v, seq, bit, count = 0;

	for (q = 0; q < PEER_NPROD; q++)
		last[q] = -1;
	peer_barrier(sh, PEER_NPROD + PEER_NCONS);
	sh->cpu_ns[PEER_NPROD + p->index] = peer_cpu_ns();
	while (stops < PEER_NPROD) {
		if (p->ops->recv(p, msg))
			return -1;
		v = peer_get_seq(msg);
		if (v & PEER_STOP) {
			q = (unsigned int)(v & PEER_SEQ_MASK);
			if (q >= PEER_NPROD)
				return peer_fail("mpmc", "a bogus stop");
			if (!sh->ack[p->index][q]) {
				__atomic_store_n(&sh->ack[p->index][q], 1, __ATOMIC_RELEASE);
				stops++;
			}
			continue;
		}
		q = (unsigned int)(v >> PEER_SEQ_BITS);
		seq = v & PEER_SEQ_MASK;
		if (q >= PEER_NPROD || seq >= per)
			return peer_fail("mpmc", "a bogus message");
		if ((int64_t)seq <= last[q])
			return peer_fail("mpmc", "a message out of order or duplicated");
		last[q] = (int64_t)seq;
		bit = q * per + seq;
		if (seen[bit / 64] & (1ull << (bit % 64)))
			return peer_fail("mpmc", "a message received twice");
		seen[bit / 64] |= 1ull << (bit % 64);
		count++;
	}
	sh->stop_ns[p->index] = bench_now_ns();
	sh->count[p->index] = count;
	return 0;
}

/* ---- a cell -------------------------------------------------------------- */

static int peer_run(struct peer *p, uint64_t count, bool quick, const char *what)
{
	uint32_t nproc = p->bench == PEER_MPMC ? PEER_NPROD + PEER_NCONS : 2;
	size_t page = (size_t)sysconf(_SC_PAGESIZE), head, len, words = 0;
	uint64_t n = count, per = 0, *samples = NULL, *seen[PEER_NCONS];
	uint64_t t0 = 0, t_end = 0, total = 0, cpu = 0, w;
	struct peer_shm *sh;
	unsigned int i;
	pid_t pid;
	int err = 0;

	if (!n) {
		if (p->bench == PEER_RTT)
			n = p->size <= 4096 ? 100000 : 2000;
		else
			n = 2000000;
		if (p->bench == PEER_STREAM && p->ops->stream_max &&
		    n > p->ops->stream_max)
			n = p->ops->stream_max;
		if (quick)
			n /= 10;
	}
	if (p->bench == PEER_MPMC) {
		per = (n + PEER_NPROD - 1) / PEER_NPROD;
		n = per * PEER_NPROD;
		words = (n + 63) / 64;
	}
	head = (sizeof(*sh) + page - 1) / page * page;
	len = head + PEER_NCONS * words * sizeof(uint64_t);
	if (p->bench == PEER_RTT)
		len += (n * sizeof(uint64_t) + page - 1) / page * page;
	sh = (struct peer_shm *)mmap(NULL, len, PROT_READ | PROT_WRITE,
				     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		return peer_fail("mmap", strerror(errno));
	for (i = 0; i < PEER_NCONS; i++)
		seen[i] = (uint64_t *)((unsigned char *)sh + head) + i * words;
	samples = (uint64_t *)((unsigned char *)sh + head);
	p->slots = peer_slots_for(p->size);
	if (p->ops->open(p))
		return -1;

	for (i = 0; i < nproc; i++) {
		pid = bench_fork_member(what);
		if (pid < 0) {
			bench_kill_group();
			p->ops->close(p);
			return -1;
		}
		if (pid)
			continue;
		if (p->bench == PEER_RTT)
			p->role = i ? PEER_ECHO : PEER_INITIATOR;
		else if (p->bench == PEER_STREAM)
			p->role = i ? PEER_CONSUMER : PEER_PRODUCER;
		else
			p->role = i < PEER_NPROD ? PEER_PRODUCER : PEER_CONSUMER;
		p->index = p->bench != PEER_MPMC ? 0 :
			   i >= PEER_NPROD ? i - PEER_NPROD : i;
		if (p->ops->attach(p))
			_exit(1);
		if (p->bench == PEER_RTT)
			err = peer_rtt_side(p, sh, n, samples);
		else if (p->bench == PEER_STREAM)
			err = peer_stream_side(p, sh, n);
		else if (p->role == PEER_PRODUCER)
			err = peer_mpmc_produce(p, sh, per);
		else
			err = peer_mpmc_consume(p, sh, seen[p->index], per);
		p->ops->detach(p);
		/*
		 * CPU until after detach: ZeroMQ's I/O thread is still
		 * moving a producer's last messages when its sends return.
		 */
		if (!err && p->bench != PEER_RTT) {
			unsigned int slot = p->bench == PEER_STREAM ?
					    p->role == PEER_CONSUMER :
					    p->role == PEER_CONSUMER ?
					    PEER_NPROD + p->index : p->index;

			sh->cpu_ns[slot] = peer_cpu_ns() - sh->cpu_ns[slot];
		}
		fflush(stderr);
		if (p->ops->exit_normally)
			exit(err ? 1 : 0);
		_exit(err ? 1 : 0);
	}
	if (p->bench == PEER_MPMC) {
		while (__atomic_load_n(&sh->ready, __ATOMIC_ACQUIRE) < nproc)
			sched_yield();
		t0 = bench_now_ns();
		__atomic_store_n(&sh->go, 1, __ATOMIC_RELEASE);
	}
	if (bench_wait_group())
		err = -1;
	p->ops->close(p);
	if (err)
		goto out;

	for (i = 0; i < nproc; i++)
		cpu += sh->cpu_ns[i];
	if (p->bench == PEER_RTT) {
		static const char *const metric[4] = {
			"rtt_p50_ns", "rtt_p90_ns", "rtt_p99_ns", "rtt_p999_ns",
		};
		static const double pct[4] = { 50, 90, 99, 99.9 };

		qsort(samples, n, sizeof(*samples), bench_cmp_u64);
		for (i = 0; i < 4; i++)
			peer_row(p, metric[i], (double)bench_percentile(samples, n, pct[i]), n);
		peer_row(p, "rtt_max_ns", (double)samples[n - 1], n);
	} else if (p->bench == PEER_STREAM) {
		double rate;

		if (sh->last_ns <= sh->first_ns || n <= sh->first_n) {
			err = peer_fail(what, "too few messages to time: raise --count");
			goto out;
		}
		rate = (double)(n - sh->first_n) * 1e9 /
		       (double)(sh->last_ns - sh->first_ns);
		peer_row(p, "msgs_per_s", rate, n);
		peer_row(p, "bytes_per_s", rate * (double)p->size, n);
		peer_row(p, "cpu_ns_per_msg", (double)cpu / (double)n, n);
	} else {
		for (w = 0; w < words; w++) {
			uint64_t all = w == words - 1 && n % 64 ?
				       (1ull << (n % 64)) - 1 : ~0ull;

			if ((seen[0][w] & seen[1][w]) || (seen[0][w] | seen[1][w]) != all) {
				fprintf(stderr, "peer: %s: messages %" PRIu64 "..%" PRIu64
					" lost or seen by both consumers\n", what,
					w * 64, w * 64 + 63);
				err = -1;
				goto out;
			}
		}
		for (i = 0; i < PEER_NCONS; i++) {
			total += sh->count[i];
			if (sh->stop_ns[i] > t_end)
				t_end = sh->stop_ns[i];
		}
		if (total != n || t_end <= t0) {
			err = peer_fail(what, "the consumers' counts do not add up");
			goto out;
		}
		peer_row(p, "msgs_per_s", (double)n * 1e9 / (double)(t_end - t0), n);
		peer_row(p, "cpu_ns_per_msg", (double)cpu / (double)n, n);
	}
out:
	munmap(sh, len);
	return err;
}

static inline uint64_t peer_num(const char *s, const char *opt)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s || *end || !v) {
		fprintf(stderr, "peer: %s: a positive number, not \"%s\"\n", opt, s);
		exit(2);
	}
	return v;
}

/* The cells each impl lists: the rows of the comparison. */
static void peer_list(const struct peer_ops *const *impls, unsigned int nimpl)
{
	static const struct { enum peer_bench bench; size_t size; } cells[] = {
		{ PEER_RTT, 8 }, { PEER_RTT, 1048576 },
		{ PEER_STREAM, 8 }, { PEER_STREAM, 1024 }, { PEER_MPMC, 8 },
	};
	unsigned int i, k;

	for (i = 0; i < nimpl; i++)
		for (k = 0; k < sizeof(cells) / sizeof(cells[0]); k++)
			if (!impls[i]->unsupported(cells[k].bench, cells[k].size))
				printf("{\"bench\":\"%s\",\"impl\":\"%s\",\"backend\":null,"
				       "\"wait\":null,\"size\":%zu,\"batch\":1}\n",
				       peer_bench_name[cells[k].bench], impls[i]->name,
				       cells[k].size);
}

static inline int peer_main(int argc, char **argv,
			    const struct peer_ops *const *impls, unsigned int nimpl)
{
	static const struct option opts[] = {
		{ "list", no_argument, NULL, 'l' },
		{ "quick", no_argument, NULL, 'q' },
		{ "size", required_argument, NULL, 's' },
		{ "batch", required_argument, NULL, 'b' },
		{ "count", required_argument, NULL, 'n' },
		{ NULL, 0, NULL, 0 },
	};
	bool list = false, quick = false;
	uint64_t count = 0;
	struct peer p;
	const char *why;
	char what[160];
	unsigned int i;
	int opt, ret;

	memset(&p, 0, sizeof(p));
	p.size = 8;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 'l':
			list = true;
			break;
		case 'q':
			quick = true;
			break;
		case 's':
			p.size = peer_num(optarg, "--size");
			break;
		case 'b':
			if (peer_num(optarg, "--batch") != 1) {
				fprintf(stderr, "peer: one message per call only\n");
				return 2;
			}
			break;
		case 'n':
			count = peer_num(optarg, "--count");
			break;
		default:
			fprintf(stderr, "usage: %s --list [--quick] | BENCH IMPL "
				"[--size BYTES] [--quick] [--count N]\n", argv[0]);
			return 2;
		}
	}
	if (list) {
		peer_list(impls, nimpl);
		return fflush(stdout) ? 1 : 0;
	}
	if (argc - optind != 2) {
		fprintf(stderr, "peer: BENCH IMPL expected\n");
		return 2;
	}
	for (i = 0; i < PEER_NBENCH && strcmp(argv[optind], peer_bench_name[i]); i++)
		;
	if (i == PEER_NBENCH) {
		fprintf(stderr, "peer: no bench \"%s\"\n", argv[optind]);
		return 2;
	}
	p.bench = (enum peer_bench)i;
	for (i = 0; i < nimpl && strcmp(argv[optind + 1], impls[i]->name); i++)
		;
	if (i == nimpl) {
		fprintf(stderr, "peer: no impl \"%s\"\n", argv[optind + 1]);
		return 2;
	}
	p.ops = impls[i];
	if (p.size < 8 || p.size > (64ul << 20))
		why = "--size: 8 bytes to 64 MiB";
	else
		why = p.ops->unsupported(p.bench, p.size);
	if (why) {
		fprintf(stderr, "peer: %s %s: %s\n", peer_bench_name[p.bench],
			p.ops->name, why);
		return 2;
	}
	snprintf(what, sizeof(what), "%s %s, %zu B", peer_bench_name[p.bench],
		 p.ops->name, p.size);
	bench_install_handlers();
	bench_pin_init();
	bench_what = what;
	alarm(bench_timeout_s);
	ret = peer_run(&p, count, quick, what);
	alarm(0);
	if (fflush(stdout))
		return 1;
	return ret ? 1 : 0;
}

#endif /* MPQ_PEER_H */
