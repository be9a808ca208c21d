// SPDX-License-Identifier: MIT
/*
 * Listener/Client round trip, mpq at both ends: a parent listens (with an
 * authkey), a forked child connects, and one message of SIZE bytes goes
 * there and back COUNT times over the socket kind named by the impl. Its
 * twin is bench/listener_bench.py, CPython's multiprocessing.connection at
 * both ends over the same socket kinds; bench/run.py runs both.
 *
 *   listener_bench --list [--quick]
 *   listener_bench net-rtt mpq-listener-unix|mpq-listener-tcp --size N
 *                  [--quick] [--count N]
 *
 * Prints one JSON row per metric (rtt_p50_ns, rtt_p99_ns, msgs_per_s, and
 * cpu_ns_per_msg: both processes' CPU time per exchange, warm-up included).
 * Build: make bench-bin (links libmpq-net).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "mpq_net.h"

#define KEY	"bench key"

static int fail(const char *what, int err)
{
	fprintf(stderr, "listener_bench: %s: %s\n", what, mpq_strerror(err));
	return 1;
}

static const char *const impls[] = { "mpq-listener-unix", "mpq-listener-tcp" };
static const size_t sizes[] = { 8, 65536 };

static uint64_t default_count(size_t size, int quick)
{
	uint64_t n = size > 4096 ? 20000 : 100000;

	return quick ? n / 10 : n;
}

static void row(const char *impl, size_t size, const char *metric,
		double value, uint64_t count)
{
	printf("{\"bench\":\"net-rtt\",\"impl\":\"%s\",\"backend\":null,"
	       "\"wait\":null,\"size\":%zu,\"batch\":1,\"metric\":\"%s\","
	       "\"value\":%.0f,\"count\":%" PRIu64 "}\n", impl, size, metric,
	       value, count);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

/* The child: connect, then send back whatever comes, until the end. */
static int echo(const char *addr, size_t size)
{
	unsigned char *buf = malloc(size ? size : 1);
	struct mpq_conn *c;
	size_t len;
	int ret;

	ret = mpq_client(&c, addr, KEY, sizeof(KEY) - 1, 10LL * 1000000000);
	if (ret)
		return fail("client", ret);
	for (;;) {
		len = size;
		ret = mpq_conn_recv_bytes_into(c, buf, &len, MPQ_FOREVER);
		if (ret == -EPIPE)
			break;
		if (ret)
			return fail("child recv", ret);
		ret = mpq_conn_send_bytes(c, buf, len, MPQ_FOREVER);
		if (ret)
			return fail("child send", ret);
	}
	mpq_conn_free(c);
	free(buf);
	return 0;
}

static int run(const char *impl, size_t size, uint64_t count)
{
	const char *where = strstr(impl, "tcp") ? "127.0.0.1:0" : NULL;
	uint64_t warm = count / 10 + 10, i, *lat;
	unsigned char *buf = calloc(1, size ? size : 1);
	struct mpq_listener *l;
	struct mpq_conn *c;
	char addr[128];
	uint64_t t0, t1, start, cpu;
	size_t len;
	pid_t pid;
	int ret, st;

	lat = calloc(count, sizeof(*lat));
	if (!buf || !lat)
		return fail("calloc", -ENOMEM);
	ret = mpq_listener_new(&l, where, KEY, sizeof(KEY) - 1, NULL);
	if (ret)
		return fail("listener", ret);
	ret = mpq_listener_address(l, addr, sizeof(addr));
	if (ret < 0)
		return fail("address", ret);
	/* Both processes' CPU, over every exchange (warm-up included). */
	cpu = bench_cpu_ns();
	pid = fork();
	if (pid == 0)
		_exit(echo(addr, size));
	ret = mpq_listener_accept(l, &c, 10LL * 1000000000);
	if (ret)
		return fail("accept", ret);
	start = bench_now_ns();
	for (i = 0; i < warm + count; i++) {
		t0 = bench_now_ns();
		ret = mpq_conn_send_bytes(c, buf, size, MPQ_FOREVER);
		if (ret)
			return fail("send", ret);
		len = size;
		ret = mpq_conn_recv_bytes_into(c, buf, &len, MPQ_FOREVER);
		if (ret)
			return fail("recv", ret);
		t1 = bench_now_ns();
		if (i == warm)
			start = t0;
		if (i >= warm)
			lat[i - warm] = (uint64_t)(t1 - t0);
	}
	t1 = bench_now_ns();
	mpq_conn_free(c);
	waitpid(pid, &st, 0);
	cpu = bench_cpu_ns() - cpu;
	mpq_listener_free(l);
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		return fail("child", -ECHILD);
	qsort(lat, count, sizeof(*lat), cmp_u64);
	row(impl, size, "rtt_p50_ns", (double)bench_percentile(lat, count, 50), count);
	row(impl, size, "rtt_p99_ns", (double)bench_percentile(lat, count, 99), count);
	row(impl, size, "msgs_per_s", count * 1e9 / (double)(t1 - start), count);
	row(impl, size, "cpu_ns_per_msg", (double)cpu / (double)(warm + count), count);
	free(lat);
	free(buf);
	return 0;
}

int main(int argc, char **argv)
{
	const char *impl = NULL;
	uint64_t count = 0;
	size_t size = 8;
	int quick = 0, list = 0, i;
	unsigned int k, j;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--list"))
			list = 1;
		else if (!strcmp(argv[i], "--quick"))
			quick = 1;
		else if (!strcmp(argv[i], "--size") && i + 1 < argc)
			size = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
			i++;		/* always 1: one message per trip */
		else if (!strcmp(argv[i], "--count") && i + 1 < argc)
			count = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "net-rtt"))
			;
		else if (argv[i][0] != '-' && !impl)
			impl = argv[i];
		else
			goto usage;
	}
	if (list) {
		for (k = 0; k < sizeof(impls) / sizeof(impls[0]); k++)
			for (j = 0; j < sizeof(sizes) / sizeof(sizes[0]); j++)
				printf("{\"bench\":\"net-rtt\",\"impl\":\"%s\","
				       "\"size\":%zu,\"batch\":1}\n", impls[k], sizes[j]);
		return 0;
	}
	if (!impl || (strcmp(impl, impls[0]) && strcmp(impl, impls[1])))
		goto usage;
	return run(impl, size, count ? count : default_count(size, quick));
usage:
	fprintf(stderr, "usage: listener_bench --list [--quick] | net-rtt "
		"mpq-listener-unix|mpq-listener-tcp --size N [--quick] [--count N]\n");
	return 2;
}
