// SPDX-License-Identifier: MIT
/*
 * manager_workers: Python's "distributed processes" example, in C.
 *
 *     # master                                  # worker, on any machine
 *     m = BaseManager(address=('', 5000), authkey=key); m.start()
 *     tasks.put(n) ...; results.get() ...       tasks.get(); results.put(n * n)
 *
 * The master starts a manager listening on TCP, writes its authkey to a
 * file (0600; copy it to the workers' machines as you would an ssh key),
 * puts N tasks and one "stop" per worker on the queue "tasks", and adds
 * up the N results from the queue "results". Workers are this program
 * started with the manager's address: each takes a task, squares it, puts
 * the result, and only then says the task is done, so a worker killed
 * mid-task loses nothing: its task goes to another worker when its lease
 * (5 s here) runs out.
 *
 * Build (installed library):
 *     cc -o manager_workers manager_workers.c $(pkg-config --cflags --libs mpq-net)
 * In the source tree:
 *     make build/examples/manager_workers
 * Run (two local workers; over a network, see README "Managers"):
 *     ex=build/examples/manager_workers
 *     $ex master tcp://127.0.0.1:7391 /tmp/mpq.key 1000 2 &
 *     sleep 1; $ex worker tcp://127.0.0.1:7391#mpq /tmp/mpq.key &
 *     $ex worker tcp://127.0.0.1:7391#mpq /tmp/mpq.key; wait
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mpq_net.h>

#define SEC	1000000000LL

static int die(const char *what, int err)
{
	fprintf(stderr, "manager_workers: %s: %s\n", what, strerror(-err));
	return 1;
}

static int master(const char *address, const char *keyfile, long n,
		  long workers)
{
	struct mpq_manager_attr attr = { .address = address };
	struct mpq_manager_queue_attr qa = { .lease_ns = 5 * SEC };
	struct mpq_manager_queue *tasks, *results;
	struct mpq_manager_msg msg;
	struct mpq_manager *m;
	long long sum = 0, want = 0;
	char buf[32];
	long i;
	int fd, err;

	err = mpq_manager_start(&m, &attr);
	if (err)
		return die("start", err);
	fd = open(keyfile, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, mpq_manager_authkey(m), 48) != 48) {
		mpq_manager_shutdown(m);
		return die(keyfile, -errno);
	}
	close(fd);
	printf("manager at %s, authkey in %s\n", mpq_manager_address(m),
	       keyfile);
	fflush(stdout);
	if ((err = mpq_manager_queue(m, "tasks", &qa, &tasks)) ||
	    (err = mpq_manager_queue(m, "results", &qa, &results)))
		goto out;
	for (i = 1; i <= n; i++) {
		snprintf(buf, sizeof(buf), "%ld", i);
		err = mpq_manager_queue_put(tasks, buf, strlen(buf), 10 * SEC);
		if (err)
			goto out;
		want += (long long)i * i;
	}
	for (i = 0; i < workers; i++) {
		err = mpq_manager_queue_put(tasks, "stop", 4, 10 * SEC);
		if (err)
			goto out;
	}
	/* A result taken is done at once: the master is the only reader. */
	for (i = 0; i < n; i++) {
		err = mpq_manager_queue_get(results, &msg, 60 * SEC);
		if (err)
			goto out;
		snprintf(buf, sizeof(buf), "%.*s", (int)msg.len,
			 (char *)msg.data);
		sum += atoll(buf);
		mpq_manager_msg_done(results, &msg);
	}
	/* Every task and stop done: the workers have all left. */
	err = mpq_manager_queue_join(tasks, 60 * SEC);
	printf("%ld results, sum of squares %lld (%s)\n", n, sum,
	       sum == want ? "right" : "WRONG");
	if (!err && sum != want)
		err = -EIO;
out:
	unlink(keyfile);
	mpq_manager_shutdown(m);
	return err ? die("master", err) : 0;
}

static int worker(const char *address, const char *keyfile)
{
	struct mpq_manager_queue *tasks, *results;
	struct mpq_manager_msg msg;
	struct mpq_manager *m;
	char key[49] = "", buf[32];
	long long x;
	int fd, err, done = 0;

	fd = open(keyfile, O_RDONLY);
	if (fd < 0 || read(fd, key, 48) != 48)
		return die(keyfile, -errno);
	close(fd);
	err = mpq_manager_connect(&m, address, key, 5 * SEC);
	if (err)
		return die("connect", err);
	if ((err = mpq_manager_queue(m, "tasks", NULL, &tasks)) ||
	    (err = mpq_manager_queue(m, "results", NULL, &results)))
		return die("queue", err);
	for (;;) {
		err = mpq_manager_queue_get(tasks, &msg, 60 * SEC);
		if (err)
			break;
		if (msg.len == 4 && !memcmp(msg.data, "stop", 4)) {
			err = mpq_manager_msg_done(tasks, &msg);
			break;
		}
		snprintf(buf, sizeof(buf), "%.*s", (int)msg.len,
			 (char *)msg.data);
		x = atoll(buf);
		snprintf(buf, sizeof(buf), "%lld", x * x);
		err = mpq_manager_queue_put(results, buf, strlen(buf),
					    10 * SEC);
		if (!err)
			err = mpq_manager_msg_done(tasks, &msg);
		if (err)
			break;
		done++;
	}
	printf("worker %d: %d tasks\n", (int)getpid(), done);
	mpq_manager_queue_free(tasks);
	mpq_manager_queue_free(results);
	mpq_manager_free(m);
	return err ? die("worker", err) : 0;
}

int main(int argc, char **argv)
{
	if (argc == 6 && !strcmp(argv[1], "master"))
		return master(argv[2], argv[3], atol(argv[4]), atol(argv[5]));
	if (argc == 4 && !strcmp(argv[1], "worker"))
		return worker(argv[2], argv[3]);
	fprintf(stderr, "usage: manager_workers master tcp://HOST:PORT KEYFILE NTASKS NWORKERS\n"
		"       manager_workers worker tcp://HOST:PORT#mpq KEYFILE\n");
	return 2;
}
