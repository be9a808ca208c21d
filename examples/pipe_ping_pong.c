// SPDX-License-Identifier: MIT
/*
 * pipe_ping_pong: Python's Pipe between two processes, in C.
 *
 *     a, b = multiprocessing.Pipe()
 *     # child: while True: b.send_bytes(b.recv_bytes())
 *     # parent: a.send_bytes(b"ping"); a.recv_bytes(); ... a.close()
 *
 * The parent sends N messages (default 100000, or argv[1]) and the child
 * echoes each back; the parent checks every reply, prints the average
 * round trip, then closes its end: the child's recv returns -EPIPE (end
 * of file, Python's EOFError) and it exits.
 *
 * Build (installed library):
 *     cc -o pipe_ping_pong pipe_ping_pong.c $(pkg-config --cflags --libs mpq)
 * In the source tree: make build/examples/pipe_ping_pong
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mpq.h>

static int fail(const char *what, int ret)
{
	fprintf(stderr, "%s: %s\n", what, strerror(-ret));
	return 1;
}

/* The child: echo until the parent hangs up. */
static int echo(struct mpq_conn *c)
{
	char buf[64];

	for (;;) {
		size_t len = sizeof(buf);
		int ret = mpq_conn_recv_bytes_into(c, buf, &len, MPQ_FOREVER);

		if (ret == -EPIPE)
			return 0;		/* the parent closed its end */
		if (ret)
			return fail("child: recv", ret);
		ret = mpq_conn_send_bytes(c, buf, len, MPQ_FOREVER);
		if (ret)
			return fail("child: send", ret);
	}
}

int main(int argc, char **argv)
{
	long i, n = argc > 1 ? atol(argv[1]) : 100000;
	struct mpq_conn *a, *b;
	struct timespec t0, t1;
	int ret, status;
	pid_t pid;

	ret = mpq_pipe(&a, &b, 1, NULL);
	if (ret)
		return fail("mpq_pipe", ret);
	printf("pipe backend: %s\n", mpq_backend_name(mpq_conn_backend(a)));

	pid = fork();
	if (pid == 0) {
		mpq_conn_close(a);		/* the child uses b only */
		_exit(echo(b));
	}
	mpq_conn_close(b);			/* the parent uses a only */

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (i = 0; i < n; i++) {
		long reply;
		size_t len = sizeof(reply);

		ret = mpq_conn_send_bytes(a, &i, sizeof(i), MPQ_FOREVER);
		if (!ret)
			ret = mpq_conn_recv_bytes_into(a, &reply, &len, MPQ_FOREVER);
		if (ret)
			return fail("parent", ret);
		if (len != sizeof(reply) || reply != i) {
			fprintf(stderr, "parent: sent %ld, got back %ld\n", i, reply);
			return 1;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("%ld round trips, %.0f ns each on average\n", n,
	       ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / n);

	mpq_conn_free(a);			/* the child sees the end of file */
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
	    WEXITSTATUS(status)) {
		fprintf(stderr, "the child failed\n");
		return 1;
	}
	mpq_conn_free(b);
	return 0;
}
