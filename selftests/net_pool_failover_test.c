// SPDX-License-Identifier: GPL-2.0
/*
 * The distributed pool on a Redis primary with a replica, watched by
 * Redis Sentinel (issue 14): the primary is SIGKILLed in the middle of a
 * map, Sentinel promotes the replica, and the pool, which knows its
 * manager only as "sentinel://.../mpqm", must find the new primary and
 * complete the map with every result right.
 *
 * Replication is asynchronous, so the promoted replica may have missed
 * the primary's last writes: task messages the pool put (the pool puts
 * them again: net/pool/pool.c), leases, dones and results (tasks run
 * again, results applied once). On loopback the replica is rarely behind
 * by more than a write or two; to lose writes for sure, the replica
 * reaches the primary through a relay in this process, which the test
 * freezes (the primary's replication stream piles up in it) before the
 * map starts and drops when the primary dies: the replica has none of the
 * map's writes. Every run of every item is logged, and what the pool put
 * again is read from its stderr, so each run says what was lost and what
 * ran twice.
 *
 * The servers are this machine's redis-server (as a sentinel too:
 * `redis-server FILE --sentinel`), on loopback ports; skipped without it.
 * `make net-pool-failover` builds this with NET_POOL_FAILOVER_LONG: three
 * sentinels (quorum 2) and ten failovers of each kind (the replica frozen
 * behind, the replica as replication left it, and a manual failover that
 * demotes the live primary), each measured.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <hiredis/hiredis.h>

#include "kselftest_harness.h"
#include "helpers.h"
#include "net_helpers.h"

#define MS		NSEC_PER_MSEC
#define BOUND		(60 * NSEC_PER_SEC)
#define N		3000
#define CHUNK		10

#ifdef NET_POOL_FAILOVER_LONG
#define NSENT		3
#define QUORUM		2
#define RUNS		10
#else
#define NSENT		1
#define QUORUM		1
#define RUNS		1
#endif
#define NSRV		(2 + NSENT)	/* primary, replica, sentinels */

/* 3x+1, slowly, with a record of the run: the item, 8 bytes, appended. */
static int logged_triple(const void *arg, size_t len, struct mpq_task *t)
{
	const char *path = getenv("MPQ_FAILOVER_RUNS");
	uint64_t x, y;
	int fd;

	if (len != sizeof(x))
		return mpq_task_error(t, -EINVAL, "want 8 bytes");
	memcpy(&x, arg, sizeof(x));
	fd = path ? open(path, O_WRONLY | O_APPEND) : -1;
	if (fd < 0 || write(fd, &x, sizeof(x)) != sizeof(x))
		return mpq_task_error(t, -EIO, "no runs file");
	close(fd);
	usleep(getenv("MPQ_FAILOVER_SLOW") ? 4000 : 1000);
	y = 3 * x + 1;
	return mpq_task_return(t, &y, sizeof(y));
}
MPQ_TASK(logged_triple);

static void __attribute__((constructor)) run_worker(void)
{
	mpq_init(NULL, NULL);
}

/* ---- a relay on the replication link, which the test can freeze ------ */

struct relay {
	int lfd, to_port;
	int frozen, cut;	/* set by the test */
	int frozen_seen;	/* the relay reads no more from the primary */
	pthread_t th;
};

static int write_all(int fd, const char *p, ssize_t n)
{
	ssize_t w;

	while (n > 0) {
		w = write(fd, p, n);
		if (w <= 0)
			return -1;
		p += w;
		n -= w;
	}
	return 0;
}

static int connect_port(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a))) {
		close(fd);
		fd = -1;
	}
	return fd;
}

/*
 * Pairs of (replica side, primary side). Frozen: nothing is read from
 * the primary (its stream waits in the sockets); cut: every pair is
 * closed, what waited is gone, and no new connection is taken.
 */
static void *relay_main(void *arg)
{
	struct relay *rl = arg;
	struct pollfd pfd[1 + 2 * 8];
	int fds[2 * 8], npair = 0, i, k, n;
	char buf[65536];
	ssize_t got;

	while (!__atomic_load_n(&rl->cut, __ATOMIC_ACQUIRE)) {
		int frozen = __atomic_load_n(&rl->frozen, __ATOMIC_ACQUIRE);

		/* Polled without the primary's side from now on. */
		__atomic_store_n(&rl->frozen_seen, frozen, __ATOMIC_RELEASE);

		pfd[0].fd = rl->lfd;
		pfd[0].events = POLLIN;
		for (i = 0; i < 2 * npair; i++) {
			pfd[1 + i].fd = fds[i];
			pfd[1 + i].events = (i % 2 && frozen) ? 0 : POLLIN;
		}
		n = poll(pfd, 1 + 2 * npair, 20);
		if (n <= 0)
			continue;
		if (pfd[0].revents & POLLIN && npair < 8) {
			int c = accept4(rl->lfd, NULL, NULL, SOCK_CLOEXEC);
			int s = c >= 0 ? connect_port(rl->to_port) : -1;

			if (s >= 0) {
				fds[2 * npair] = c;
				fds[2 * npair + 1] = s;
				npair++;
			} else if (c >= 0) {
				close(c);
			}
		}
		for (i = 0; i < 2 * npair; i++) {
			if (!(pfd[1 + i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			got = read(fds[i], buf, sizeof(buf));
			if (got > 0 && !write_all(fds[i ^ 1], buf, got))
				continue;
			/* One side closed: the pair ends. */
			k = i / 2;
			close(fds[2 * k]);
			close(fds[2 * k + 1]);
			fds[2 * k] = fds[2 * (npair - 1)];
			fds[2 * k + 1] = fds[2 * (npair - 1) + 1];
			npair--;
			break;
		}
	}
	for (i = 0; i < 2 * npair; i++)
		close(fds[i]);
	close(rl->lfd);
	return NULL;
}

/* A loopback TCP port nothing listens on now (the kernel's pick). */
static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

	if (fd >= 0 && !bind(fd, (struct sockaddr *)&a, sizeof(a)) &&
	    !getsockname(fd, (struct sockaddr *)&a, &len))
		port = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

/* A relay listening on a port of the kernel's pick, to to_port. */
static int relay_start(struct relay *rl, int to_port)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);

	memset(rl, 0, sizeof(*rl));
	rl->to_port = to_port;
	rl->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (rl->lfd < 0 || bind(rl->lfd, (struct sockaddr *)&a, sizeof(a)) ||
	    getsockname(rl->lfd, (struct sockaddr *)&a, &len) ||
	    listen(rl->lfd, 8) || pthread_create(&rl->th, NULL, relay_main, rl))
		return -1;
	return ntohs(a.sin_port);
}

static void relay_stop(struct relay *rl)
{
	__atomic_store_n(&rl->cut, 1, __ATOMIC_RELEASE);
	pthread_join(rl->th, NULL);
}

/* ---- the servers ------------------------------------------------------- */

FIXTURE(failover) {
	char dir[64];
	int ports[NSRV];	/* primary, replica, sentinels */
	pid_t srv[NSRV];
	struct relay relay;
	int relay_up;
	int saved_err;		/* the test's stderr while the pool's is a file */
	char err[128];
	char url[256];
};

/* redis-server with these arguments, its output to dir/log<i>. */
static pid_t run_server(FIXTURE_DATA(failover) *self, int i, ...)
{
	const char *argv[32];
	char log[128];
	va_list ap;
	int n = 0, fd;
	pid_t pid;

	argv[n++] = "redis-server";
	va_start(ap, i);
	while (n < 31 && (argv[n] = va_arg(ap, const char *)))
		n++;
	va_end(ap);
	argv[n] = NULL;
	snprintf(log, sizeof(log), "%s/log%d", self->dir, i);
	pid = fork();
	if (pid)
		return pid;
	fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
	if (fd >= 0) {
		dup2(fd, 1);
		dup2(fd, 2);
	}
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	execvp("redis-server", (char **)argv);
	_exit(127);
}

/* One command to 127.0.0.1:port; the reply (NULL if none). */
static redisReply *ask(int port, const char *fmt, ...)
{
	struct timeval tv = { 1, 0 };
	redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
	redisReply *r = NULL;
	va_list ap;

	if (!c || c->err) {
		if (c)
			redisFree(c);
		return NULL;
	}
	redisSetTimeout(c, tv);
	va_start(ap, fmt);
	r = redisvCommand(c, fmt, ap);
	va_end(ap);
	redisFree(c);
	return r;
}

/* Does the reply (a status, string or array of them) hold want? */
static int reply_has(redisReply *r, const char *want)
{
	size_t i;

	if (!r)
		return 0;
	if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS)
		return strstr(r->str, want) != NULL;
	if (r->type == REDIS_REPLY_ARRAY)
		for (i = 0; i < r->elements; i++)
			if (reply_has(r->element[i], want))
				return 1;
	return 0;
}

/* Wait (bounded) until port answers fmt with a reply holding want. */
static int await_reply(int port, const char *want, const char *fmt,
		       const char *arg)
{
	int64_t end = now_ns() + 20 * NSEC_PER_SEC;
	redisReply *r;
	int ok;

	do {
		r = ask(port, fmt, arg);
		ok = reply_has(r, want);
		if (r)
			freeReplyObject(r);
		if (ok)
			return 0;
		sleep_ms(20);
	} while (now_ns() < end);
	return -ETIMEDOUT;
}

static char *str(char *buf, int v)
{
	sprintf(buf, "%d", v);
	return buf;
}

/* A sentinel's number for the master (SENTINEL master mpqm), or -1. */
static long long master_field(int port, const char *field)
{
	redisReply *r = ask(port, "SENTINEL master mpqm");
	long long v = -1;
	size_t k;

	for (k = 0; r && r->type == REDIS_REPLY_ARRAY && k + 1 < r->elements;
	     k += 2)
		if (!strcmp(r->element[k]->str, field))
			v = atoll(r->element[k + 1]->str);
	if (r)
		freeReplyObject(r);
	return v;
}

static void cluster_down(FIXTURE_DATA(failover) *self)
{
	int i;

	for (i = 0; i < NSRV; i++)
		if (self->srv[i] > 0) {
			kill(self->srv[i], SIGKILL);
			waitpid(self->srv[i], NULL, 0);
			self->srv[i] = 0;
		}
	if (self->relay_up)
		relay_stop(&self->relay);
	self->relay_up = 0;
}

/*
 * A primary, a replica (through the relay) and NSENT sentinels, fresh,
 * each ready: the replica in sync, every sentinel knowing it and (ready
 * to fail over) the replica's state and the other sentinels.
 */
static void cluster_up(struct __test_metadata *_metadata,
		       FIXTURE_DATA(failover) *self, int ready)
{
	char pp[16], rp[16], lp[16], path[128], *p;
	int64_t end;
	FILE *f;
	int i, relay_port;

	for (i = 0; i < NSRV; i++)
		ASSERT_LT(0, self->ports[i] = free_port());
	str(pp, self->ports[0]);
	str(rp, self->ports[1]);
	self->srv[0] = run_server(self, 0, "--port", pp, "--bind", "127.0.0.1",
				  "--save", "", "--appendonly", "no", "--dir",
				  self->dir, "--dbfilename", "p.rdb",
				  "--repl-diskless-sync-delay", "0", NULL);
	ASSERT_EQ(0, await_reply(self->ports[0], "PONG", "PING%s", ""));
	relay_port = relay_start(&self->relay, self->ports[0]);
	ASSERT_LT(0, relay_port);
	self->relay_up = 1;
	str(lp, relay_port);
	self->srv[1] = run_server(self, 1, "--port", rp, "--bind", "127.0.0.1",
				  "--save", "", "--appendonly", "no", "--dir",
				  self->dir, "--dbfilename", "r.rdb",
				  "--replicaof", "127.0.0.1", lp, NULL);
	ASSERT_EQ(0, await_reply(self->ports[1], "master_link_status:up",
				 "INFO %s", "replication"));
	p = self->url + sprintf(self->url, "sentinel://");
	for (i = 0; i < NSENT; i++) {
		snprintf(path, sizeof(path), "%s/s%d.conf", self->dir, i);
		f = fopen(path, "w");
		ASSERT_NE(NULL, f);
		fprintf(f, "port %d\nbind 127.0.0.1\ndir %s\n"
			"sentinel monitor mpqm 127.0.0.1 %d %d\n"
			"sentinel down-after-milliseconds mpqm 400\n"
			"sentinel failover-timeout mpqm 4000\n"
			"sentinel known-replica mpqm 127.0.0.1 %d\n",
			self->ports[2 + i], self->dir, self->ports[0], QUORUM,
			self->ports[1]);
		fclose(f);
		self->srv[2 + i] = run_server(self, 2 + i, path, "--sentinel",
					      NULL);
		p += sprintf(p, "%s127.0.0.1:%d", i ? "," : "",
			     self->ports[2 + i]);
	}
	sprintf(p, "/mpqm");
	for (i = 0; i < NSENT && !ready; i++)
		ASSERT_EQ(0, await_reply(self->ports[2 + i], "PONG", "PING%s",
					 ""));
	for (i = 0; i < NSENT && ready; i++) {
		ASSERT_EQ(0, await_reply(self->ports[2 + i], "slave",
					 "SENTINEL replicas %s", "mpqm"));
		end = now_ns() + 20 * NSEC_PER_SEC;
		while (master_field(self->ports[2 + i], "num-other-sentinels") <
		       NSENT - 1 && now_ns() < end)
			sleep_ms(50);
		ASSERT_EQ(NSENT - 1, master_field(self->ports[2 + i],
						  "num-other-sentinels"));
	}
}

FIXTURE_SETUP(failover)
{
	self->saved_err = -1;
	snprintf(self->dir, sizeof(self->dir), "/tmp/mpq-failover-XXXXXX");
	ASSERT_NE(NULL, mkdtemp(self->dir));
	if (system("redis-server --version >/dev/null 2>&1"))
		SKIP(return, "no redis-server on PATH (make deps)");
}

FIXTURE_TEARDOWN(failover)
{
	char cmd[128], buf[4096];
	ssize_t n;
	off_t size;
	int fd;

	/*
	 * An assertion failed while stderr was the pool's file: its message
	 * went there too. Back to the test's stderr, and show the file's end.
	 */
	if (self->saved_err >= 0) {
		fflush(stderr);
		dup2(self->saved_err, 2);
		close(self->saved_err);
		self->saved_err = -1;
		fd = open(self->err, O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			size = lseek(fd, 0, SEEK_END);
			lseek(fd, size > (off_t)sizeof(buf) ?
			      size - (off_t)sizeof(buf) : 0, SEEK_SET);
			fprintf(stderr, "# the end of %s:\n", self->err);
			while ((n = read(fd, buf, sizeof(buf))) > 0)
				if (write(2, buf, n) != n)
					break;
			close(fd);
		}
	}
	cluster_down(self);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", self->dir);
	if (system(cmd))
		TH_LOG("could not remove %s", self->dir);
}

/* This binary as a worker of the pool at url (the sentinels', or one). */
static pid_t start_worker(const char *url)
{
	pid_t pid = fork();

	if (pid)
		return pid;
	setenv("MPQ_WORKER", url, 1);
	setenv("MPQ_AUTHKEY", "", 1);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	execl("/proc/self/exe", "net_pool_failover_test", (char *)NULL);
	_exit(127);
}

/* The port the first sentinel names as the primary now (0: none). */
static int primary_port(FIXTURE_DATA(failover) *self)
{
	redisReply *r = ask(self->ports[2], "SENTINEL get-master-addr-by-name "
			    "mpqm");
	int port = 0;

	if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2)
		port = atoi(r->element[1]->str);
	if (r)
		freeReplyObject(r);
	return port;
}

/* What the pool printed: "had lost N task message(s)", summed. */
static size_t relost(const char *path)
{
	char line[512], *p;
	size_t n = 0;
	FILE *f = fopen(path, "re");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if ((p = strstr(line, "had lost ")))
			n += strtoul(p + 9, NULL, 10);
	fclose(f);
	return n;
}

/*
 * How many task messages the server at port holds (ready, or in a
 * worker's list: net/pool/pool.c's keys).
 */
static long long held_msgs(int port)
{
	redisReply *r = ask(port, "EVAL %s 0", "local n = 0 "
			    "for _, k in ipairs(redis.call('KEYS', '*:P:*')) "
			    "do if (string.find(k, '%.ready$') or "
			    "string.find(k, '%.w%.')) and "
			    "redis.call('TYPE', k).ok == 'list' then "
			    "n = n + redis.call('LLEN', k) end end return n");
	long long n = -1;

	if (r && r->type == REDIS_REPLY_INTEGER)
		n = r->integer;
	if (r)
		freeReplyObject(r);
	return n;
}

/* The first sentinel's log, its last len - 1 bytes, for a failure. */
static const char *sentinel_log(FIXTURE_DATA(failover) *self, char *buf,
				size_t len)
{
	char path[128];
	ssize_t n = 0;
	off_t size;
	int fd;

	snprintf(path, sizeof(path), "%s/log2", self->dir);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		size = lseek(fd, 0, SEEK_END);
		lseek(fd, size > (off_t)len - 1 ? size - (off_t)len + 1 : 0,
		      SEEK_SET);
		n = read(fd, buf, len - 1);
		close(fd);
	}
	buf[n > 0 ? n : 0] = 0;
	return buf;
}

struct outcome {
	size_t twice, relost, bad, never;
	int64_t promoted_ms, done_ms;
	int straddled;		/* the map was still running after it */
};

enum how { LIVE, FROZEN, MANUAL };

static const char *const how_name[] = {
	"live replica", "frozen replica", "manual failover",
};

/*
 * One map through the sentinels on a fresh cluster, the primary SIGKILLed
 * kill_ms into it; the sentinels promote the replica. FROZEN: the replica
 * gets none of the map's writes. MANUAL: no kill, SENTINEL FAILOVER (the
 * old primary lives on, demoted to a replica, and its clients are cut).
 * Every result checked.
 */
static void one_failover(struct __test_metadata *_metadata,
			 FIXTURE_DATA(failover) *self, int run, enum how how,
			 int kill_ms, struct outcome *out)
{
	char runs[128], *err = self->err;
	struct mpq_pool_remote pr = { .lease_ns = 1000 * MS };
	struct mpq_pool_attr pa = { .processes = 2, .remote = &pr };
	struct mpq_async_result *r = NULL;
	struct mpq_manager *m = NULL;
	struct mpq_pool *p = NULL;
	static uint64_t in[N];
	static struct iovec iov[N];
	static unsigned char count[N];
	int64_t t_kill, end;
	long long held;
	static char log[4096];
	int fd;
	size_t i;
	uint64_t x;
	pid_t w;

	memset(out, 0, sizeof(*out));
	cluster_up(_metadata, self, 1);
	snprintf(runs, sizeof(runs), "%s/runs%d", self->dir, run);
	snprintf(err, sizeof(self->err), "%s/stderr%d", self->dir, run);
	fd = open(runs, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ASSERT_LE(0, fd);
	close(fd);
	setenv("MPQ_FAILOVER_RUNS", runs, 1);
	/* A manual failover is quicker: tasks of 4 ms, so that the map
	 * goes on well after it (the workers inherit this). */
	if (how == MANUAL)
		setenv("MPQ_FAILOVER_SLOW", "1", 1);
	else
		unsetenv("MPQ_FAILOVER_SLOW");
	/* The pool's messages on stderr go to a file, read below. */
	fflush(stderr);
	self->saved_err = dup(2);
	fd = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ASSERT_LE(0, fd);
	dup2(fd, 2);
	close(fd);
	ASSERT_EQ(0, mpq_manager_connect(&m, self->url, "", 0));
	pr.manager = m;
	ASSERT_EQ(0, mpq_pool_new(&p, &pa));
	w = start_worker(self->url);
	for (i = 0; i < N; i++) {
		in[i] = i;
		iov[i].iov_base = &in[i];
		iov[i].iov_len = 8;
	}
	if (how == FROZEN) {
		__atomic_store_n(&self->relay.frozen, 1, __ATOMIC_RELEASE);
		/* Not one byte of the map's may pass it. */
		while (!__atomic_load_n(&self->relay.frozen_seen,
					__ATOMIC_ACQUIRE))
			sleep_ms(1);
	}
	ASSERT_EQ(0, mpq_pool_map_async(p, logged_triple, iov, N, CHUNK, NULL,
					&r));
	sleep_ms(kill_ms);
	/*
	 * The pool's thread puts the map's messages, not map_async: on a
	 * loaded machine it may not have run yet. A kill before the
	 * primary holds any of them loses nothing (they go to the new
	 * primary, first puts), and a replica "that missed its tasks"
	 * would have missed none: wait for them, however long it takes.
	 */
	end = now_ns() + 20 * NSEC_PER_SEC;
	while ((held = held_msgs(self->ports[0])) <= 0 && now_ns() < end)
		sleep_ms(5);
	ASSERT_LT(0, held);
	/*
	 * And the sentinel has not failed over on its own (a primary
	 * unanswering for down-after-milliseconds on a loaded machine):
	 * then the run would not be the failover it says. (A sentinel
	 * slow to answer, 0, is not a failover.)
	 */
	ASSERT_NE(self->ports[1], primary_port(self))
		TH_LOG("the sentinel failed over before the test asked: %s",
		       sentinel_log(self, log, sizeof(log)));
	t_kill = now_ns();
	if (how == MANUAL) {
		redisReply *rr = ask(self->ports[2], "SENTINEL FAILOVER mpqm");

		ASSERT_TRUE(reply_has(rr, "OK"));
		freeReplyObject(rr);
	} else {
		ASSERT_EQ(0, kill(self->srv[0], SIGKILL));
		waitpid(self->srv[0], NULL, 0);
		self->srv[0] = 0;
		/* What the relay held back dies with the primary's link. */
		relay_stop(&self->relay);
		self->relay_up = 0;
	}
	/* When the sentinels name the replica: Sentinel's part of the time. */
	while (primary_port(self) != self->ports[1] &&
	       now_ns() - t_kill < 30 * NSEC_PER_SEC)
		sleep_ms(10);
	out->promoted_ms = (now_ns() - t_kill) / MS;
	out->straddled = mpq_async_result_ready(r) == 0;
	/* Bounded below the test's timeout, so that a hang says so. */
	ASSERT_EQ(0, mpq_async_result_get(r, 30 * NSEC_PER_SEC));
	out->done_ms = (now_ns() - t_kill) / MS;
	out->bad += wrong_triples(r, N);
	/* The replica took over. */
	EXPECT_EQ(self->ports[1], primary_port(self));
	mpq_async_result_free(r);
	mpq_pool_free(p);
	mpq_manager_free(m);
	kill(w, SIGKILL);
	waitpid(w, NULL, 0);
	fflush(stderr);
	dup2(self->saved_err, 2);
	close(self->saved_err);
	self->saved_err = -1;
	memset(count, 0, sizeof(count));
	fd = open(runs, O_RDONLY);
	ASSERT_LE(0, fd);
	while (read(fd, &x, sizeof(x)) == sizeof(x))
		if (x < N && count[x] < 255)
			count[x]++;
	close(fd);
	for (i = 0; i < N; i++) {
		out->twice += count[i] > 1;
		out->never += count[i] == 0;
	}
	out->relost = relost(err);
	TH_LOG("%s run %d: %s %d ms into a map of %d items; "
	       "replica promoted %lld ms later, map done %lld ms later%s, %zu "
	       "wrong or missing; %zu items ran twice; %zu task messages put "
	       "again (lost by the failover)",
	       how_name[how], run,
	       how == MANUAL ? "failover asked" : "primary killed", kill_ms, N,
	       (long long)out->promoted_ms, (long long)out->done_ms,
	       out->straddled ? "" : " (before the promotion was seen)",
	       out->bad,
	       out->twice, out->relost);
	cluster_down(self);
}

/*
 * The replica frozen behind: it has none of the map's task messages when
 * it is promoted. The pool puts them again and the map completes.
 */
TEST_F_TIMEOUT(failover, a_map_completes_when_sentinel_promotes_a_replica_that_missed_its_tasks, 60 * RUNS)
{
	struct outcome o;
	size_t twice = 0, relost_sum = 0;
	int run;

	srand((unsigned int)getpid());
	for (run = 0; run < RUNS; run++) {
		one_failover(_metadata, self, run, FROZEN, 150 + rand() % 400,
			     &o);
		EXPECT_EQ(0, o.bad);
		EXPECT_EQ(0, o.never);
		/* None of the map's puts reached the replica. */
		EXPECT_LT(0, o.relost);
		twice += o.twice;
		relost_sum += o.relost;
	}
	TH_LOG("frozen replica, %d runs: %zu items ran twice, %zu messages "
	       "put again, 0 results lost", RUNS, twice, relost_sum);
}

#ifdef NET_POOL_FAILOVER_LONG
/* The replica as replication left it: what a real failover loses. */
TEST_F_TIMEOUT(failover, a_map_completes_when_the_primary_dies_and_sentinel_promotes_the_replica, 60 * RUNS)
{
	struct outcome o;
	size_t twice = 0, relost_sum = 0;
	int run;

	srand((unsigned int)getpid() + 1);
	for (run = 0; run < RUNS; run++) {
		one_failover(_metadata, self, run, LIVE, 100 + rand() % 900,
			     &o);
		EXPECT_EQ(0, o.bad);
		EXPECT_EQ(0, o.never);
		twice += o.twice;
		relost_sum += o.relost;
	}
	TH_LOG("live replica, %d runs: %zu items ran twice, %zu messages put "
	       "again, 0 results lost", RUNS, twice, relost_sum);
}
#endif

#ifdef NET_POOL_FAILOVER_LONG
/*
 * A failover an operator asks for (SENTINEL FAILOVER): the old primary
 * lives on as a replica; the pool's connections to it are cut (or meet
 * READONLY) and find the new one.
 */
TEST_F_TIMEOUT(failover, a_map_completes_across_a_manual_failover_that_demotes_the_live_primary, 60 * RUNS)
{
	struct outcome o;
	size_t twice = 0, relost_sum = 0;
	int run;

	srand((unsigned int)getpid() + 2);
	for (run = 0; run < RUNS; run++) {
		one_failover(_metadata, self, run, MANUAL, 100 + rand() % 900,
			     &o);
		EXPECT_EQ(0, o.bad);
		EXPECT_EQ(0, o.never);
		twice += o.twice;
		relost_sum += o.relost;
	}
	TH_LOG("manual failover, %d runs: %zu items ran twice, %zu messages "
	       "put again, 0 results lost", RUNS, twice, relost_sum);
}
#endif

TEST(a_malformed_sentinel_address_is_EINVAL)
{
	static const char *const bad[] = {
		"sentinel://", "sentinel://127.0.0.1:1", "sentinel://127.0.0.1:1/",
		"sentinel:///m", "sentinel://127.0.0.1/m", "sentinel://127.0.0.1:0/m",
		"sentinel://127.0.0.1:1/m m", "sentinel://127.0.0.1:1,/m",
		"sentinel://[::1/m", "sentinel://127.0.0.1:1/m#bad ns",
		"sentinel://a:1,a:1,a:1,a:1,a:1,a:1,a:1,a:1,a:1,a:1,a:1,a:1,"
		"a:1,a:1,a:1,a:1,a:1/m",
	};
	struct mpq_manager *m = NULL;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		EXPECT_EQ(-EINVAL, mpq_manager_connect(&m, bad[i], "", 0))
			TH_LOG("%s", bad[i]);
		EXPECT_EQ(NULL, m);
	}
}

/*
 * The sentinels are asked in turn: one that does not answer is passed
 * over, and a master name none of them knows is EADDRNOTAVAIL.
 */
TEST_F(failover, the_sentinels_are_asked_in_turn_and_an_unknown_master_is_EADDRNOTAVAIL)
{
	struct mpq_manager *m = NULL;
	char url[256];
	int dead = free_port();

	cluster_up(_metadata, self, 0);
	snprintf(url, sizeof(url), "sentinel://127.0.0.1:%d,127.0.0.1:%d/mpqm",
		 dead, self->ports[2]);
	ASSERT_EQ(0, mpq_manager_connect(&m, url, "", 0));
	EXPECT_EQ(0, mpq_manager_ping(m));
	EXPECT_STREQ(url, mpq_manager_address(m));
	mpq_manager_free(m);
	m = NULL;
	snprintf(url, sizeof(url), "sentinel://127.0.0.1:%d/nosuch",
		 self->ports[2]);
	EXPECT_EQ(-EADDRNOTAVAIL, mpq_manager_connect(&m, url, "", 0));
	snprintf(url, sizeof(url), "sentinel://127.0.0.1:%d/mpqm", dead);
	EXPECT_EQ(-ECONNREFUSED, mpq_manager_connect(&m, url, "", 0));
	EXPECT_EQ(NULL, m);
}

/*
 * A task the manager loses with no failover or reconnection to show it
 * (here: taken off the ready list by another client, as a write the
 * server forgot would lose it): once no result has come for a while, the
 * pool looks and puts it again.
 */
TEST(a_task_the_manager_lost_unseen_is_put_again_when_results_stop)
{
	struct mpq_pool_remote pr = { .lease_ns = 300 * MS,
				      .flags = MPQ_POOL_REMOTE_ONLY };
	struct mpq_pool_attr pa = { .remote = &pr };
	struct mpq_manager *m = start_or_skip(_metadata, NULL);
	struct mpq_async_result *r = NULL;
	struct mpq_pool *p = NULL;
	char runs[] = "/tmp/mpq-lost-runs-XXXXXX", id[24], ns[64];
	uint64_t in[20];
	struct iovec iov[20];
	redisContext *c;
	redisReply *rr = NULL;
	size_t i;
	int fd, tries;
	pid_t w;

	if (!m)
		return;
	fd = mkstemp(runs);
	ASSERT_LE(0, fd);
	close(fd);
	setenv("MPQ_FAILOVER_RUNS", runs, 1);
	pr.manager = m;
	ASSERT_EQ(0, mpq_pool_new(&p, &pa));
	for (i = 0; i < 20; i++) {
		in[i] = i;
		iov[i].iov_base = &in[i];
		iov[i].iov_len = 8;
	}
	ASSERT_EQ(0, mpq_pool_map_async(p, logged_triple, iov, 20, 1, NULL,
					&r));
	/* No worker yet: one task message taken away, no result. */
	ASSERT_EQ(0, pool_id(m, id, sizeof(id)));
	c = raw_connect(m, ns, sizeof(ns));
	ASSERT_NE(NULL, c);
	for (tries = 0; tries < 3000; tries++) {
		rr = redisCommand(c, "LPOP mpq:%s:P:pool.%s.ready", ns, id);
		ASSERT_NE(NULL, rr);
		if (rr->type == REDIS_REPLY_STRING)
			break;
		freeReplyObject(rr);
		rr = NULL;
		sleep_ms(10);
	}
	ASSERT_NE(NULL, rr);
	freeReplyObject(rr);
	redisFree(c);
	w = fork();
	if (!w) {
		setenv("MPQ_WORKER", mpq_manager_address(m), 1);
		setenv("MPQ_AUTHKEY", mpq_manager_authkey(m), 1);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execl("/proc/self/exe", "net_pool_failover_test", (char *)NULL);
		_exit(127);
	}
	ASSERT_EQ(0, mpq_async_result_get(r, 30 * NSEC_PER_SEC));
	EXPECT_EQ(0, wrong_triples(r, 20));
	kill(w, SIGKILL);
	waitpid(w, NULL, 0);
	mpq_async_result_free(r);
	mpq_pool_free(p);
	mpq_manager_shutdown(m);
	unlink(runs);
}

/*
 * A primary demoted behind its clients' backs (REPLICAOF by hand, no
 * client cut): a write meets READONLY, the connection is dropped with
 * ECONNRESET, and the next connect asks the sentinels again and does not
 * take the replica they still name for the primary (ROLE).
 */
TEST_F(failover, a_demoted_primary_is_dropped_on_READONLY_and_not_taken_again)
{
	struct mpq_manager_dict *d = NULL;
	struct mpq_manager *m = NULL;
	redisReply *rr;
	int ret;

	cluster_up(_metadata, self, 1);
	ASSERT_EQ(0, mpq_manager_connect(&m, self->url, "", 0));
	ASSERT_EQ(0, mpq_manager_dict(m, "d", &d));
	ASSERT_EQ(0, mpq_manager_dict_set(d, "k", 1, "v", 1));
	rr = ask(self->ports[1], "REPLICAOF NO ONE");
	ASSERT_TRUE(reply_has(rr, "OK"));
	freeReplyObject(rr);
	rr = ask(self->ports[0], "REPLICAOF 127.0.0.1 %d", self->ports[1]);
	ASSERT_TRUE(reply_has(rr, "OK"));
	freeReplyObject(rr);
	EXPECT_EQ(-ECONNRESET, mpq_manager_dict_set(d, "k", 1, "w", 1));
	ret = mpq_manager_dict_set(d, "k", 1, "w", 1);
	/* The sentinels name the old primary until they see the change. */
	if (ret) {
		EXPECT_EQ(-ECONNREFUSED, ret);
	} else {
		EXPECT_EQ(self->ports[1], primary_port(self));
	}
	mpq_manager_dict_free(d);
	mpq_manager_free(m);
}

/* A count from the server's INFO (section sec), or -1. */
static long long info_field(int port, const char *sec, const char *field)
{
	redisReply *r = ask(port, "INFO %s", sec);
	long long v = -1;
	const char *p;

	if (r && r->type == REDIS_REPLY_STRING) {
		p = strstr(r->str, field);
		if (p && p[strlen(field)] == ':')
			v = atoll(p + strlen(field) + 1);
	}
	if (r)
		freeReplyObject(r);
	return v;
}

/* maxmemory of the server at port (0: none); 1 if it said OK. */
static int set_maxmemory(int port, const char *v)
{
	redisReply *r = ask(port, "CONFIG SET maxmemory %s", v);
	int ok = reply_has(r, "OK");

	if (r)
		freeReplyObject(r);
	return ok;
}

/*
 * A full manager (maxmemory below what it holds, noeviction: every write
 * that may grow it is answered -OOM). A put it refuses fails its task with
 * ENOMEM saying so, and nothing hangs; the first put after an idle spell
 * goes ahead of the pool's result wait in one write (net/pool/pool.c,
 * dp_carry), and its refusal is read there. A result wait it refuses
 * (BLMOVE may grow a list) is tried again after a pause, not at once: a
 * pool must not hammer a full server with connections. Once it has room,
 * the pool goes on and its map completes. No worker while it is full: a
 * worker that meets OOM lets go of its keys, which would make room.
 */
TEST_F(failover, a_full_manager_fails_a_put_saying_why_is_not_hammered_and_the_pool_goes_on)
{
	struct mpq_pool_remote pr = { .flags = MPQ_POOL_REMOTE_ONLY };
	struct mpq_pool_attr pa = { .remote = &pr };
	char runs[] = "/tmp/mpq-oom-runs-XXXXXX", pp[16], url[64];
	static char fill[256 << 10];
	struct mpq_async_result *r = NULL, *mr = NULL;
	struct mpq_manager *m = NULL;
	struct mpq_pool *p = NULL;
	const char *msg = NULL;
	uint64_t x = 7, y, in[40];
	struct iovec iov[40];
	long long c0, c1;
	redisReply *rr;
	void *out = NULL;
	ssize_t len;
	int fd, i;
	pid_t w;

	ASSERT_LT(0, self->ports[0] = free_port());
	str(pp, self->ports[0]);
	self->srv[0] = run_server(self, 0, "--port", pp, "--bind", "127.0.0.1",
				  "--save", "", "--appendonly", "no", "--dir",
				  self->dir, "--maxmemory-policy", "noeviction",
				  NULL);
	ASSERT_EQ(0, await_reply(self->ports[0], "PONG", "PING%s", ""));
	fd = mkstemp(runs);
	ASSERT_LE(0, fd);
	close(fd);
	setenv("MPQ_FAILOVER_RUNS", runs, 1);
	snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", self->ports[0]);
	ASSERT_EQ(0, mpq_manager_connect(&m, url, "", 0));
	pr.manager = m;
	ASSERT_EQ(0, mpq_pool_new(&p, &pa));
	w = start_worker(url);
	len = mpq_pool_apply(p, logged_triple, &x, sizeof(x), &out);
	ASSERT_EQ(8, len);
	memcpy(&y, out, sizeof(y));
	EXPECT_EQ(22, y);
	free(out);
	out = NULL;
	kill(w, SIGKILL);
	waitpid(w, NULL, 0);

	/* A map put while there is room, with no worker to run it. */
	for (i = 0; i < 40; i++) {
		in[i] = (uint64_t)i;
		iov[i].iov_base = &in[i];
		iov[i].iov_len = sizeof(in[i]);
	}
	memset(fill, 'f', sizeof(fill));
	for (i = 0; i < 8; i++) {
		rr = ask(self->ports[0], "SET fill:%d %b", i, fill,
			 sizeof(fill));
		ASSERT_TRUE(reply_has(rr, "OK"));
		freeReplyObject(rr);
	}
	/* Full, by a megabyte and more. */
	ASSERT_TRUE(set_maxmemory(self->ports[0], "1mb"));

	len = mpq_pool_apply(p, logged_triple, &x, sizeof(x), &out);
	EXPECT_EQ(-ENOMEM, len);
	EXPECT_EQ(NULL, out);
	ASSERT_EQ(0, mpq_pool_apply_async(p, logged_triple, &x, sizeof(x),
					  NULL, &r));
	EXPECT_EQ(-ENOMEM, mpq_async_result_get(r, BOUND));
	EXPECT_EQ(-ENOMEM, mpq_async_result_error(r, 0, &msg));
	EXPECT_NE(NULL, strstr(msg, "the manager did not take it"))
		TH_LOG("message: %s", msg);
	mpq_async_result_free(r);

	/* Room for the map's put, then full again with the map waiting. */
	ASSERT_TRUE(set_maxmemory(self->ports[0], "0"));
	ASSERT_EQ(0, mpq_pool_map_async(p, logged_triple, iov, 40, 4, NULL,
					&mr));
	sleep_ms(200);
	ASSERT_TRUE(set_maxmemory(self->ports[0], "1mb"));
	/* The pool's wait (a second long at most) is refused from now on. */
	sleep_ms(1200);
	c0 = info_field(self->ports[0], "stats", "total_connections_received");
	sleep_ms(1000);
	c1 = info_field(self->ports[0], "stats", "total_connections_received");
	ASSERT_LE(0, c0);
	EXPECT_GE(20, c1 - c0)
		TH_LOG("%lld connections in a second to a full server",
		       c1 - c0);
	EXPECT_EQ(0, mpq_async_result_ready(mr));

	/* Room again: a new worker, and the map completes. */
	for (i = 0; i < 8; i++) {
		rr = ask(self->ports[0], "DEL fill:%d", i);
		ASSERT_NE(NULL, rr);
		freeReplyObject(rr);
	}
	ASSERT_TRUE(set_maxmemory(self->ports[0], "0"));
	w = start_worker(url);
	ASSERT_EQ(0, mpq_async_result_get(mr, BOUND));
	EXPECT_EQ(0, wrong_triples(mr, 40));
	mpq_async_result_free(mr);
	x = 9;
	len = mpq_pool_apply(p, logged_triple, &x, sizeof(x), &out);
	ASSERT_EQ(8, len);
	memcpy(&y, out, sizeof(y));
	EXPECT_EQ(28, y);
	free(out);
	kill(w, SIGKILL);
	waitpid(w, NULL, 0);
	mpq_pool_free(p);
	mpq_manager_free(m);
	unlink(runs);
}

TEST_HARNESS_MAIN
