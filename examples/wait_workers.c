// SPDX-License-Identifier: MIT
/*
 * wait_workers: multiprocessing.connection.wait over several workers.
 *
 *     readers = []
 *     for i in range(4):
 *         r, w = Pipe(duplex=False)
 *         Process(target=work, args=(i, w)).start(); w.close()
 *         readers.append(r)
 *     while readers:
 *         for r in wait(readers):
 *             try: print(r.recv_bytes())
 *             except EOFError: readers.remove(r)
 *
 * Four worker processes each send a few results at their own pace through
 * a one-way pipe and exit; the parent waits on all the pipes at once with
 * mpq_wait(), prints results as they come, and drops a pipe at its end of
 * file. Nothing is polled in a loop: the parent sleeps until a worker
 * sends or ends.
 *
 * Build (installed library):
 *     cc -o wait_workers wait_workers.c $(pkg-config --cflags --libs mpq)
 * In the source tree: make build/examples/wait_workers
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mpq.h>

#define WORKERS 4

static int fail(const char *what, int ret)
{
	fprintf(stderr, "%s: %s\n", what, strerror(-ret));
	return 1;
}

/* Worker i: three results, i + 1 tenths of a second apart. */
static int work(int i, struct mpq_conn *w)
{
	struct timespec pause = { 0, (i + 1) * 100000000L };
	char msg[64];
	int k, ret;

	for (k = 0; k < 3; k++) {
		nanosleep(&pause, NULL);
		snprintf(msg, sizeof(msg), "worker %d: result %d", i, k);
		ret = mpq_conn_send_bytes(w, msg, strlen(msg), MPQ_FOREVER);
		if (ret)
			return fail("worker: send", ret);
	}
	return 0;				/* exiting closes w: end of file */
}

int main(void)
{
	struct mpq_wait_item items[WORKERS];
	struct mpq_conn *r[WORKERS], *w[WORKERS];
	int who[WORKERS];	/* which worker each item is */
	int i, n = 0, ret, status, failed = 0;

	for (i = 0; i < WORKERS; i++) {
		ret = mpq_pipe(&r[i], &w[i], 0, NULL);	/* r receives, w sends */
		if (ret)
			return fail("mpq_pipe", ret);
		if (fork() == 0) {
			mpq_conn_close(r[i]);
			_exit(work(i, w[i]));
		}
		mpq_conn_close(w[i]);		/* only the worker holds it */
		items[n].kind = MPQ_WAIT_CONN;
		items[n].conn = r[i];
		who[n++] = i;
	}

	while (n) {				/* while some pipe is open */
		ret = mpq_wait(items, n, MPQ_FOREVER);
		if (ret < 0)
			return fail("mpq_wait", ret);
		for (i = n - 1; i >= 0; i--) {
			char msg[64];
			size_t len = sizeof(msg) - 1;

			if (!items[i].ready)
				continue;
			ret = mpq_conn_recv_bytes_into(items[i].conn, msg, &len, 0);
			if (ret == -EPIPE) {	/* this worker is done: drop it */
				printf("worker %d: end of file\n", who[i]);
				items[i] = items[--n];
				who[i] = who[n];
				continue;
			}
			if (ret)
				return fail("recv", ret);
			msg[len] = 0;
			printf("%s\n", msg);
		}
	}
	for (i = 0; i < WORKERS; i++) {
		if (wait(&status) < 0 || !WIFEXITED(status) || WEXITSTATUS(status))
			failed = 1;
		mpq_conn_free(r[i]);
		mpq_conn_free(w[i]);
	}
	return failed;
}
