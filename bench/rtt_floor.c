// SPDX-License-Identifier: MIT
/*
 * rtt_floor: what a round trip between two processes can cost, beside what
 * mpq's round trips cost, in one interleaved run, as means.
 *
 * The suite (run.py) reports round trips as percentiles of trips timed one
 * by one, two clock reads each. Here a run times N trips (default
 * 1,000,000) as a whole, after 1,000 warm-up ones, and prints the mean: no
 * clock per trip. Two processes, pinned to different CPUs (bench.h), 8-byte
 * messages, every side spinning:
 *
 *   floor       one cache line both sides write: the suite's spin floor,
 *               the one the goals are set against
 *   floor-2     a counter in a line each way: the least two channels (a
 *               request queue and an answer queue, or a pipe's two rings)
 *               can do, since each side writes only its own
 *   ring        two minimal rings of 1,024 64-byte slots: the producer
 *               writes a message and its slot's seq, the consumer reads
 *               them and moves a head of its own, which the producer reads
 *               only when the ring looks full. Nothing survives a death.
 *   ring-free   the same, but the consumer frees each slot by its seq (as
 *               mpq's queue and the MPMC rings do), not by a head
 *   line-duplex a mailbox each way, both in one line: a slot (seq, len,
 *               data) that the reader marks taken by its seq, so each
 *               side writes the line it just read, as in floor. What a
 *               duplex channel could do if a small message waiting alone
 *               went where the answer will be written.
 *   mpq-queue, mpq-queue-spsc (MPQ_QUEUE_F_ONE_PRODUCER | _ONE_CONSUMER),
 *   mpq-conn    libmpq's put and get with MPQ_FOREVER, or send and receive
 *
 * Rounds run every variant in turn (so the machine's slow and fast spells
 * fall on all of them); the report is each variant's median over the
 * rounds, its min-max, and its ratio to floor and to floor-2.
 *
 * Usage: rtt_floor [-n N] [-r ROUNDS] [-k]
 *   -k  mpq's objects on the module's backend (default memfd)
 * Exits 1 if a message came back wrong or a call failed.
 */
#include <getopt.h>
#include <sys/mman.h>

#include <mpq.h>

#include "bench.h"

#define RING_SLOTS	1024
#define WARMUP		1000

struct floor_slot {
	uint32_t seq;
	uint32_t len;
	uint64_t data;
	char __pad[48];
};

struct floor_ring {
	struct floor_slot slot[RING_SLOTS];
	uint64_t head __attribute__((aligned(64)));
};

struct floor_shm {
	uint64_t line[8] __attribute__((aligned(64)));	/* floor */
	uint64_t ping[8] __attribute__((aligned(64)));	/* floor-2 */
	uint64_t pong[8] __attribute__((aligned(64)));
	struct floor_box {
		uint32_t seq;	/* 2n: free for message n; 2n + 1: holds it */
		uint32_t len;
		uint64_t data;
	} box[2] __attribute__((aligned(64)));	/* line-duplex */
	struct floor_ring ring[2];
};

/* One side's view of a minimal ring (its own copies of the cursors). */
struct floor_end {
	struct floor_ring *r;
	uint64_t pos;		/* tail (producer) or head (consumer) */
	uint64_t head_seen;	/* producer: the consumer's head, last read */
	int free_seq;		/* ring-free */
};

enum { V_FLOOR, V_FLOOR2, V_RING, V_RING_FREE, V_LINE_DUPLEX, V_QUEUE,
	V_QUEUE_SPSC, V_CONN, V_N };
static const char *const vname[V_N] = {
	"floor", "floor-2", "ring", "ring-free", "line-duplex", "mpq-queue",
	"mpq-queue-spsc", "mpq-conn"
};

#define LOAD(p)		__atomic_load_n(p, __ATOMIC_ACQUIRE)
#define STORE(p, v)	__atomic_store_n(p, v, __ATOMIC_RELEASE)

static void ring_put(struct floor_end *e, uint64_t v)
{
	struct floor_slot *s = &e->r->slot[e->pos % RING_SLOTS];

	if (e->free_seq) {
		while (LOAD(&s->seq) != (uint32_t)e->pos)
			__builtin_ia32_pause();
	} else if (e->pos - e->head_seen >= RING_SLOTS) {
		while (e->pos - (e->head_seen = LOAD(&e->r->head)) >=
		       RING_SLOTS)
			__builtin_ia32_pause();
	}
	s->len = sizeof(v);
	s->data = v;
	STORE(&s->seq, (uint32_t)(e->pos + 1));
	e->pos++;
}

static uint64_t ring_get(struct floor_end *e)
{
	struct floor_slot *s = &e->r->slot[e->pos % RING_SLOTS];
	uint64_t v;

	while (LOAD(&s->seq) != (uint32_t)(e->pos + 1))
		__builtin_ia32_pause();
	v = s->data;
	if (e->free_seq)
		STORE(&s->seq, (uint32_t)(e->pos + RING_SLOTS));
	else
		STORE(&e->r->head, e->pos + 1);
	e->pos++;
	return v;
}

/* line-duplex: message n into box b, and out of it. */
static void box_put(struct floor_box *b, uint64_t n, uint64_t v)
{
	while (LOAD(&b->seq) != (uint32_t)(2 * n))
		__builtin_ia32_pause();
	b->len = sizeof(v);
	b->data = v;
	STORE(&b->seq, (uint32_t)(2 * n + 1));
}

static uint64_t box_get(struct floor_box *b, uint64_t n)
{
	uint64_t v;

	while (LOAD(&b->seq) != (uint32_t)(2 * n + 1))
		__builtin_ia32_pause();
	v = b->data;
	STORE(&b->seq, (uint32_t)(2 * n + 2));
	return v;
}

static void ring_init(struct floor_ring *r, int free_seq)
{
	uint32_t i;

	memset(r, 0, sizeof(*r));
	/* Free for lap 0: seq == pos (ring-free), or not pos + 1 (ring). */
	for (i = 0; i < RING_SLOTS; i++)
		r->slot[i].seq = free_seq ? i : i - RING_SLOTS + 1;
}

/* Everything one run's two sides share, made before the fork. */
struct floor_run {
	int v;
	struct floor_shm *shm;
	struct mpq_queue *q[2];
	struct mpq_conn *c[2];
};

/* Answer side: each message comes back plus one. 0, or 1 on a failure. */
static int answer(struct floor_run *run, uint64_t trips)
{
	struct floor_shm *m = run->shm;
	struct floor_end in = { &m->ring[0], 0, 0, run->v == V_RING_FREE };
	struct floor_end out = { &m->ring[1], 0, 0, run->v == V_RING_FREE };
	uint64_t i, x;
	size_t len;

	for (i = 0; i < trips; i++) {
		switch (run->v) {
		case V_FLOOR:
			while (LOAD(&m->line[0]) != 2 * i + 1)
				__builtin_ia32_pause();
			STORE(&m->line[0], 2 * i + 2);
			break;
		case V_FLOOR2:
			while (LOAD(&m->ping[0]) != i + 1)
				__builtin_ia32_pause();
			STORE(&m->pong[0], i + 1);
			break;
		case V_RING:
		case V_RING_FREE:
			ring_put(&out, ring_get(&in) + 1);
			break;
		case V_LINE_DUPLEX:
			box_put(&m->box[1], i, box_get(&m->box[0], i) + 1);
			break;
		case V_CONN:
			len = sizeof(x);
			if (mpq_conn_recv_bytes_into(run->c[1], &x, &len,
						     MPQ_FOREVER))
				return 1;
			x++;
			if (mpq_conn_send_bytes(run->c[1], &x, sizeof(x),
						MPQ_FOREVER))
				return 1;
			break;
		default:
			len = sizeof(x);
			if (mpq_queue_get(run->q[0], &x, &len, MPQ_FOREVER))
				return 1;
			x++;
			if (mpq_queue_put(run->q[1], &x, sizeof(x), MPQ_FOREVER))
				return 1;
		}
	}
	return 0;
}

/* Asking side: trips round trips, the mean of the last n in ns, or < 0. */
static double ask(struct floor_run *run, uint64_t trips, uint64_t n)
{
	struct floor_shm *m = run->shm;
	struct floor_end out = { &m->ring[0], 0, 0, run->v == V_RING_FREE };
	struct floor_end in = { &m->ring[1], 0, 0, run->v == V_RING_FREE };
	uint64_t i, x = 0, t0 = 0;
	size_t len;

	for (i = 0; i < trips; i++) {
		if (i == trips - n)
			t0 = bench_now_ns();
		switch (run->v) {
		case V_FLOOR:
			STORE(&m->line[0], 2 * i + 1);
			while (LOAD(&m->line[0]) != 2 * i + 2)
				__builtin_ia32_pause();
			x = i + 1;
			break;
		case V_FLOOR2:
			STORE(&m->ping[0], i + 1);
			while (LOAD(&m->pong[0]) != i + 1)
				__builtin_ia32_pause();
			x = i + 1;
			break;
		case V_RING:
		case V_RING_FREE:
			ring_put(&out, i);
			x = ring_get(&in);
			break;
		case V_LINE_DUPLEX:
			box_put(&m->box[0], i, i);
			x = box_get(&m->box[1], i);
			break;
		case V_CONN:
			x = i;
			len = sizeof(x);
			if (mpq_conn_send_bytes(run->c[0], &x, sizeof(x),
						MPQ_FOREVER) ||
			    mpq_conn_recv_bytes_into(run->c[0], &x, &len,
						     MPQ_FOREVER))
				return -1;
			break;
		default:
			x = i;
			len = sizeof(x);
			if (mpq_queue_put(run->q[0], &x, sizeof(x), MPQ_FOREVER) ||
			    mpq_queue_get(run->q[1], &x, &len, MPQ_FOREVER))
				return -1;
		}
		if (x != i + 1)
			return -1;
	}
	return (double)(bench_now_ns() - t0) / (double)n;
}

static int make_objects(struct floor_run *run, int backend)
{
	struct mpq_queue_attr qa = { .maxsize = RING_SLOTS, .msgsize = 64,
				     .backend = backend };
	struct mpq_pipe_attr pa = { .backend = backend };

	switch (run->v) {
	case V_QUEUE_SPSC:
		qa.flags = MPQ_QUEUE_F_ONE_PRODUCER | MPQ_QUEUE_F_ONE_CONSUMER;
		/* fall through */
	case V_QUEUE:
		if (mpq_queue_new(&run->q[0], &qa) ||
		    mpq_queue_new(&run->q[1], &qa))
			return -1;
		return 0;
	case V_CONN:
		return mpq_pipe(&run->c[0], &run->c[1], 1, &pa) ? -1 : 0;
	case V_RING:
	case V_RING_FREE:
		ring_init(&run->shm->ring[0], run->v == V_RING_FREE);
		ring_init(&run->shm->ring[1], run->v == V_RING_FREE);
		return 0;
	default:
		memset(run->shm, 0, offsetof(struct floor_shm, ring));
		return 0;
	}
}

static void free_objects(struct floor_run *run)
{
	int i;

	for (i = 0; i < 2; i++) {
		if (run->q[i])
			mpq_queue_free(run->q[i]);
		if (run->c[i])
			mpq_conn_close(run->c[i]);
		run->q[i] = NULL;
		run->c[i] = NULL;
	}
}

/* One run of variant v: its mean round trip in ns, or < 0. */
static double one_run(struct floor_shm *shm, int v, uint64_t n, int backend)
{
	struct floor_run run = { .v = v, .shm = shm };
	double mean = -1;
	pid_t pid;

	if (make_objects(&run, backend)) {
		fprintf(stderr, "rtt_floor: %s: cannot make its objects\n",
			vname[v]);
		free_objects(&run);
		return -1;
	}
	bench_nforked = 0;	/* each run: its one child on the next CPU */
	pid = bench_fork(vname[v]);
	if (pid == 0)
		_exit(answer(&run, n + WARMUP));
	if (pid > 0) {
		mean = ask(&run, n + WARMUP, n);
		if (mean < 0)
			bench_kill(pid);
		else if (bench_wait(pid, NULL))
			mean = -1;
	}
	free_objects(&run);
	return mean;
}

int main(int argc, char **argv)
{
	static double mean[V_N][64];
	uint64_t n = 1000000;
	int rounds = 5, backend = MPQ_BACKEND_MEMFD, opt, r, v;
	struct floor_shm *shm;
	double med[V_N], lo[V_N], hi[V_N];
	char machine[512];

	while ((opt = getopt(argc, argv, "n:r:k")) != -1) {
		switch (opt) {
		case 'n':
			n = strtoull(optarg, NULL, 10);
			break;
		case 'r':
			rounds = atoi(optarg);
			break;
		case 'k':
			backend = MPQ_BACKEND_KMOD;
			break;
		default:
			fprintf(stderr, "usage: rtt_floor [-n N] [-r ROUNDS] [-k]\n");
			return 2;
		}
	}
	if (!n || rounds < 1 || rounds > 64) {
		fprintf(stderr, "rtt_floor: N >= 1, 1 <= ROUNDS <= 64\n");
		return 2;
	}
	shm = mmap(NULL, sizeof(*shm), PROT_READ | PROT_WRITE,
		   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shm == MAP_FAILED) {
		perror("rtt_floor: mmap");
		return 1;
	}
	bench_install_handlers();
	bench_pin_init();
	bench_machine(machine, sizeof(machine));
	printf("rtt_floor: %s; placement %s; %llu round trips of 8 B per run, "
	       "%d rounds, means\n", machine, bench_placement(),
	       (unsigned long long)n, rounds);
	for (r = 0; r < rounds; r++) {
		for (v = 0; v < V_N; v++) {
			mean[v][r] = one_run(shm, v, n, backend);
			if (mean[v][r] < 0)
				return 1;
		}
	}
	for (v = 0; v < V_N; v++) {
		lo[v] = hi[v] = mean[v][0];
		for (r = 1; r < rounds; r++) {
			lo[v] = mean[v][r] < lo[v] ? mean[v][r] : lo[v];
			hi[v] = mean[v][r] > hi[v] ? mean[v][r] : hi[v];
		}
		med[v] = bench_median(mean[v], (size_t)rounds);
	}
	printf("%-16s %9s %17s %7s %9s\n", "variant", "mean", "min-max",
	       "/floor", "/floor-2");
	for (v = 0; v < V_N; v++)
		printf("%-16s %6.1f ns %7.1f-%-6.1f ns %6.2fx %8.2fx\n",
		       vname[v], med[v], lo[v], hi[v], med[v] / med[V_FLOOR],
		       med[v] / med[V_FLOOR2]);
	return 0;
}
