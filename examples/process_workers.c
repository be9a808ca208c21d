// SPDX-License-Identifier: MIT
/*
 * process_workers: Python's Process, in C.
 *
 *     ps = [Process(target=square, args=(n,)) for n in (2, 3, 4)]     # fork
 *     ps.append(get_context("spawn").Process(target=greet, args=(q,)))
 *     ps.append(Process(target=stubborn))        # terminated: exitcode -15
 *     Process(target=forever, daemon=True).start()  # ends with the parent
 *     for p in ps: p.start()
 *     for p in ps: p.join(); print(p.name, p.pid, p.exitcode)
 *
 * The forked workers square their number and return it: a target's return
 * value is its process's exit code. The spawned worker is a fresh copy of
 * this program: main() calls mpq_init() first, which in that copy finds
 * the target by the name MPQ_TARGET() registered and runs it; the queue
 * reaches it as a handle (mpq_queue_export) in its argument bytes, and it
 * sends back a line naming itself and its parent. One worker would run
 * forever and is terminated (its exit code is minus the signal), and a
 * daemon is left running: libmpq terminates it when main() returns.
 *
 * Build (installed library):
 *     cc -o process_workers process_workers.c $(pkg-config --cflags --libs mpq)
 * In the source tree:
 *     make build/examples/process_workers
 *     (= cc -Iinclude -o build/examples/process_workers \
 *        examples/process_workers.c -Lbuild/lib -lmpq -Wl,-rpath,$PWD/build/lib)
 * Run:
 *     build/examples/process_workers
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mpq.h>

#define NSEC_PER_SEC	1000000000LL

static int fail(const char *what, int ret)
{
	fprintf(stderr, "process_workers: %s: %s\n", what, strerror(-ret));
	return 1;
}

/* Forked: the answer is the exit code (0..255 reach the parent). */
static int square(const void *arg, size_t len)
{
	int n;

	memcpy(&n, arg, sizeof(n));
	printf("  %s (pid %d) squares %d\n",
	       mpq_process_name(mpq_current_process()), (int)getpid(), n);
	return n * n;
}

/* Spawned: open the queue the handle names, and say who we are. */
static int greet(const void *arg, size_t len)
{
	struct mpq_process *parent = mpq_parent_process();
	char handle[MPQ_HANDLE_MAX], msg[256];
	struct mpq_queue *q;
	int n;

	if (len >= sizeof(handle))
		return 1;
	memcpy(handle, arg, len);
	handle[len] = '\0';
	if (mpq_queue_import(&q, handle))
		return 2;
	n = snprintf(msg, sizeof(msg),
		     "%s (pid %d), a fresh copy of the program, spawned by %s (pid %d)",
		     mpq_process_name(mpq_current_process()), (int)getpid(),
		     mpq_process_name(parent), (int)mpq_process_pid(parent));
	if (mpq_queue_put(q, msg, (size_t)n, 10 * NSEC_PER_SEC))
		return 3;
	mpq_queue_free(q);
	return 0;
}
MPQ_TARGET(greet);

static int forever(const void *arg, size_t len)
{
	for (;;)
		pause();
	return 0;
}

int main(int argc, char **argv)
{
	struct mpq_queue_attr qattr = { .maxsize = 4, .msgsize = 256 };
	struct mpq_process_attr spawn = {
		.name = "Greeter",
		.start_method = MPQ_START_SPAWN,
	};
	struct mpq_process_attr daemon = { .name = "Daemon", .daemon = 1 };
	struct mpq_process *ps[5], *d;
	char handle[MPQ_HANDLE_MAX], msg[256];
	int i, n, ret, code, np = 0, bad = 0;
	struct mpq_queue *q;
	size_t len;

	/* In the spawned copy this runs greet() and never returns. */
	ret = mpq_init(&argc, &argv);
	if (ret)
		return fail("mpq_init", ret);
	printf("main (pid %d): %d CPUs to run on\n", (int)getpid(),
	       mpq_cpu_count());

	for (n = 2; n <= 4; n++) {
		ret = mpq_process_new(&ps[np], square, &n, sizeof(n), NULL);
		if (ret)
			return fail("mpq_process_new", ret);
		np++;
	}
	ret = mpq_queue_new(&q, &qattr);
	if (ret)
		return fail("mpq_queue_new", ret);
	n = mpq_queue_export(q, handle, sizeof(handle));
	if (n < 0)
		return fail("mpq_queue_export", n);
	ret = mpq_process_new(&ps[np++], greet, handle, (size_t)n, &spawn);
	if (!ret)
		ret = mpq_process_new(&ps[np++], forever, NULL, 0, NULL);
	if (!ret)
		ret = mpq_process_new(&d, forever, NULL, 0, &daemon);
	if (ret)
		return fail("mpq_process_new", ret);

	for (i = 0; i < np; i++) {
		ret = mpq_process_start(ps[i]);
		if (ret)
			return fail("mpq_process_start", ret);
	}
	ret = mpq_process_start(d);
	if (ret)
		return fail("mpq_process_start", ret);

	len = sizeof(msg) - 1;
	ret = mpq_queue_get(q, msg, &len, 10 * NSEC_PER_SEC);
	if (ret)
		return fail("mpq_queue_get", ret);
	msg[len] = '\0';
	printf("  the greeter says: %s\n", msg);

	/* The one that would run forever: join briefly, then terminate. */
	ret = mpq_process_join(ps[np - 1], NSEC_PER_SEC / 10);
	printf("  %s still running after 100 ms (join: %s): terminate\n",
	       mpq_process_name(ps[np - 1]), strerror(-ret));
	mpq_process_terminate(ps[np - 1]);

	printf("%-10s %8s %9s\n", "name", "pid", "exitcode");
	for (i = 0; i < np; i++) {
		ret = mpq_process_join(ps[i], 10 * NSEC_PER_SEC);
		if (!ret)
			ret = mpq_process_exitcode(ps[i], &code);
		if (ret) {
			printf("%-10s %8d %9s\n", mpq_process_name(ps[i]),
			       (int)mpq_process_pid(ps[i]), strerror(-ret));
			bad++;
			continue;
		}
		printf("%-10s %8d %9d\n", mpq_process_name(ps[i]),
		       (int)mpq_process_pid(ps[i]), code);
		/* Squares 4, 9, 16; the greeter 0; the terminated -SIGTERM. */
		if (i < 3 ? code != (i + 2) * (i + 2) :
		    i == 3 ? code != 0 : code != -15)
			bad++;
		mpq_process_free(ps[i]);
	}
	printf("%s (pid %d) is left running: the exit handler terminates it\n",
	       mpq_process_name(d), (int)mpq_process_pid(d));
	mpq_queue_free(q);
	return bad ? 1 : 0;
}
