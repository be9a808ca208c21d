// SPDX-License-Identifier: GPL-2.0
/*
 * The promises of the Manager (libmpq-net, net/manager/), one test each,
 * against real redis-servers started by mpq_manager_start and stopped by
 * pid, and against fake servers on Unix sockets that answer nonsense:
 * the authkey is required, the server dies with its manager, a forked
 * child gets a connection of its own, every bad peer is one errno within
 * the timeout, the dict and list do what Python's do, a queue loses
 * nothing when consumers are SIGKILLed, leases renewed keep a long task,
 * dead letters after N deliveries, maxsize is exact, join, and a lock
 * whose holder is killed goes to the next acquirer with -EOWNERDEAD.
 *
 * Nothing here uses a local mpq object, so the backend (memfd or kmod)
 * does not matter: the VM run adds nothing but time.
 */
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/un.h>
#include <hiredis/hiredis.h>

#include "kselftest_harness.h"
#include "helpers.h"
#include "mpq_net.h"
#include "net_helpers.h"

#define MS	NSEC_PER_MSEC

FIXTURE(mgr) {
	struct mpq_manager *m;
};

FIXTURE_SETUP(mgr)
{
	self->m = start_or_skip(_metadata, NULL);
}

FIXTURE_TEARDOWN(mgr)
{
	if (self->m)
		mpq_manager_shutdown(self->m);
}

/* A second handle, as another process or machine makes it. */
static struct mpq_manager *peer(struct mpq_manager *m)
{
	struct mpq_manager *p = NULL;

	if (mpq_manager_connect(&p, mpq_manager_address(m),
				mpq_manager_authkey(m), 2000 * MS))
		return NULL;
	return p;
}

TEST_F(mgr, start_gives_an_address_that_others_connect_to_with_the_authkey)
{
	const char *a = mpq_manager_address(self->m);
	struct mpq_manager *p = peer(self->m);
	char dir[256];
	struct stat st;

	ASSERT_NE(NULL, p);
	EXPECT_EQ(0, mpq_manager_ping(p));
	EXPECT_EQ(48, strlen(mpq_manager_authkey(self->m)));
	/* unix:<private dir>/redis.sock#mpq, the dir is 0700. */
	ASSERT_EQ(0, strncmp(a, "unix:/", 6));
	snprintf(dir, sizeof(dir), "%s", a + 5);
	*strrchr(dir, '/') = 0;
	ASSERT_EQ(0, stat(dir, &st));
	EXPECT_EQ(0700, st.st_mode & 0777);
	mpq_manager_free(p);
}

TEST_F(mgr, a_wrong_authkey_is_eacces)
{
	struct mpq_manager *p = NULL;
	char bad[64];

	snprintf(bad, sizeof(bad), "%s", mpq_manager_authkey(self->m));
	bad[0] = bad[0] == 'a' ? 'b' : 'a';
	EXPECT_EQ(-EACCES, mpq_manager_connect(&p, mpq_manager_address(self->m),
					       bad, 2000 * MS));
	EXPECT_EQ(-EACCES, mpq_manager_connect(&p, mpq_manager_address(self->m),
					       "", 2000 * MS));
	EXPECT_EQ(NULL, p);
}

/* The manager's user may touch only its namespace's keys. */
TEST_F(mgr, the_authkey_opens_only_the_namespace)
{
	char path[256], *hash;
	redisContext *c;
	redisReply *r;

	snprintf(path, sizeof(path), "%s", mpq_manager_address(self->m) + 5);
	hash = strchr(path, '#');
	*hash = 0;
	c = redisConnectUnix(path);
	ASSERT_NE(NULL, c);
	ASSERT_EQ(0, c->err);
	/* Not as nobody, not as the default user. */
	r = redisCommand(c, "GET mpq:mpq:x");
	ASSERT_EQ(REDIS_REPLY_ERROR, r->type);
	EXPECT_EQ(0, strncmp(r->str, "NOAUTH", 6));
	freeReplyObject(r);
	r = redisCommand(c, "AUTH default %s", mpq_manager_authkey(self->m));
	ASSERT_EQ(REDIS_REPLY_ERROR, r->type);
	freeReplyObject(r);
	r = redisCommand(c, "AUTH default \"\"");
	ASSERT_EQ(REDIS_REPLY_ERROR, r->type);
	freeReplyObject(r);
	r = redisCommand(c, "AUTH %s %s", hash + 1, mpq_manager_authkey(self->m));
	ASSERT_EQ(REDIS_REPLY_STATUS, r->type);
	freeReplyObject(r);
	r = redisCommand(c, "SET other:key 1");
	ASSERT_EQ(REDIS_REPLY_ERROR, r->type);
	EXPECT_EQ(0, strncmp(r->str, "NOPERM", 6));
	freeReplyObject(r);
	r = redisCommand(c, "FLUSHALL");
	ASSERT_EQ(REDIS_REPLY_ERROR, r->type);
	freeReplyObject(r);
	r = redisCommand(c, "CONFIG SET dir /tmp");
	ASSERT_EQ(REDIS_REPLY_ERROR, r->type);
	freeReplyObject(r);
	r = redisCommand(c, "SET mpq:mpq:x 1");
	EXPECT_EQ(REDIS_REPLY_STATUS, r->type);
	freeReplyObject(r);
	redisFree(c);
}

static int pidfd_dead(int pidfd, int ms)
{
	struct pollfd p = { .fd = pidfd, .events = POLLIN };

	return poll(&p, 1, ms) == 1;
}

TEST(the_server_dies_with_the_manager_process)
{
	int fds[2], pidfd;
	pid_t child, server = 0;
	char addr[128], cmd[300];

	ASSERT_EQ(0, pipe(fds));
	child = fork();
	if (child == 0) {
		struct mpq_manager *m;

		if (mpq_manager_start(&m, NULL))
			_exit(1);
		server = mpq_manager_server_pid(m);
		write(fds[1], &server, sizeof(server));
		snprintf(addr, sizeof(addr), "%s", mpq_manager_address(m));
		write(fds[1], addr, sizeof(addr));
		pause();
		_exit(0);
	}
	ASSERT_EQ(sizeof(server), read(fds[0], &server, sizeof(server)));
	ASSERT_EQ(128, read(fds[0], addr, 128));
	ASSERT_GT(server, 0);
	pidfd = syscall(SYS_pidfd_open, server, 0);
	ASSERT_GE(pidfd, 0);
	EXPECT_FALSE(pidfd_dead(pidfd, 0));
	kill(child, SIGKILL);
	EXPECT_EQ(128 + SIGKILL, wait_child(child, 5000));
	/* PDEATHSIG: the server goes too, with no code in the manager. */
	EXPECT_TRUE(pidfd_dead(pidfd, 5000));
	/* Its private directory is left behind: no one was there to
	 * remove it. */
	*strrchr(addr, '/') = 0;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", addr + 5);
	system(cmd);
	close(pidfd);
	close(fds[0]);
	close(fds[1]);
}

TEST_F(mgr, a_dead_server_shows_on_the_pidfd_and_calls_fail_fast)
{
	int pidfd = mpq_manager_pidfd(self->m);
	struct mpq_manager_queue *q;
	struct mpq_manager_msg msg;
	int64_t t0;
	int err;

	ASSERT_GE(pidfd, 0);
	ASSERT_EQ(0, mpq_manager_queue(self->m, "q", NULL, &q));
	EXPECT_FALSE(pidfd_dead(pidfd, 0));
	kill(mpq_manager_server_pid(self->m), SIGKILL);
	EXPECT_TRUE(pidfd_dead(pidfd, 5000));
	t0 = now_ns();
	err = mpq_manager_queue_get(q, &msg, MPQ_FOREVER);
	EXPECT_TRUE(err == -ECONNRESET || err == -ECONNREFUSED) TH_LOG("%d", err);
	err = mpq_manager_ping(self->m);
	EXPECT_EQ(-ECONNREFUSED, err);
	EXPECT_LT(now_ns() - t0, 4 * NSEC_PER_SEC);
	mpq_manager_queue_free(q);
}

static void get_while_the_server_is_killed(struct __test_metadata *_metadata,
					  struct mpq_manager *m,
					  const struct mpq_manager_queue_attr *a)
{
	struct mpq_manager_queue *q;
	struct mpq_manager_msg msg;
	pid_t server = mpq_manager_server_pid(m), killer;
	int err;

	ASSERT_EQ(0, mpq_manager_queue(m, "q", a, &q));
	killer = fork();
	if (killer == 0) {
		sleep_ms(200);
		kill(server, SIGKILL);
		_exit(0);
	}
	err = mpq_manager_queue_get(q, &msg, MPQ_FOREVER);
	EXPECT_EQ(-ECONNRESET, err);
	EXPECT_EQ(0, wait_child(killer, 5000));
	mpq_manager_queue_free(q);
}

TEST_F(mgr, a_server_killed_during_a_blocking_get_ends_the_get_with_an_error)
{
	get_while_the_server_is_killed(_metadata, self->m, NULL);
}

/* The same for a queue without leases, whose get is a BLMPOP. */
TEST_F(mgr, a_server_killed_during_a_blocking_plain_get_ends_it_with_an_error)
{
	struct mpq_manager_queue_attr a = { .lease_ns = MPQ_MANAGER_NO_LEASE };

	get_while_the_server_is_killed(_metadata, self->m, &a);
}

static int child_adds(void *arg)
{
	struct mpq_manager_dict *d = arg;
	int i;

	for (i = 0; i < 500; i++)
		if (mpq_manager_dict_add(d, "n", 1, 1, NULL))
			return 1;
	return 0;
}

/* The parent keeps using its connection while children use theirs: a
 * shared socket would interleave replies and break the counts. */
TEST_F(mgr, forked_children_use_the_parents_handles_on_their_own_connections)
{
	struct mpq_manager_dict *d;
	pid_t kids[3];
	int64_t v = 0;
	int i;

	ASSERT_EQ(0, mpq_manager_dict(self->m, "counts", &d));
	ASSERT_EQ(0, mpq_manager_dict_add(d, "n", 1, 0, &v));	/* connected */
	for (i = 0; i < 3; i++)
		kids[i] = spawn(child_adds, d);
	for (i = 0; i < 500; i++)
		ASSERT_EQ(0, mpq_manager_dict_add(d, "n", 1, 1, NULL));
	for (i = 0; i < 3; i++)
		EXPECT_EQ(0, wait_child(kids[i], 20000));
	ASSERT_EQ(0, mpq_manager_dict_add(d, "n", 1, 0, &v));
	EXPECT_EQ(2000, v);
	mpq_manager_dict_free(d);
}

/*
 * A fake server on a Unix socket: answers the first request with reply
 * (len bytes), then closes if close_after, else stays silent.
 */
static pid_t fake_server(const char *path, const char *reply, size_t len,
			 int close_after)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int s = socket(AF_UNIX, SOCK_STREAM, 0), c;
	pid_t pid;
	char buf[4096];

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	unlink(path);
	if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) || listen(s, 8))
		return -1;
	pid = fork();
	if (pid) {
		close(s);
		return pid;
	}
	for (;;) {
		c = accept(s, NULL, NULL);
		if (c < 0)
			_exit(1);
		if (read(c, buf, sizeof(buf)) > 0 && len)
			write(c, reply, len);
		if (close_after)
			close(c);
	}
}

static int connect_fake(const char *path, const char *reply, size_t len,
			int close_after, int64_t *took)
{
	struct mpq_manager *m = NULL;
	char url[256];
	pid_t pid = fake_server(path, reply, len, close_after);
	int64_t t0 = now_ns();
	int err;

	if (pid < 0)
		return -999;
	snprintf(url, sizeof(url), "unix:%s#mpq", path);
	err = mpq_manager_connect(&m, url, "key", 300 * MS);
	*took = now_ns() - t0;
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	unlink(path);
	if (!err)
		mpq_manager_free(m);
	return err;
}

TEST(a_peer_that_is_not_redis_is_one_errno_within_the_timeout)
{
	static const struct {
		const char *reply;
		int close_after, err;
	} cases[] = {
		{ "SSH-2.0-OpenSSH_9.2\r\n", 0, -EPROTO },	/* garbage */
		{ "HTTP/1.1 400 Bad Request\r\n\r\n", 1, -EPROTO },
		{ "", 0, -ETIMEDOUT },			/* silent */
		{ "$10\r\nOK", 1, -ECONNRESET },	/* truncated, gone */
		{ "$10\r\nOK", 0, -ETIMEDOUT },	/* truncated, stalls */
		{ "*99999999999\r\n", 0, -EPROTO },	/* huge promise */
		{ "$99999999\r\nab", 0, -ETIMEDOUT },	/* huge, stalls */
		{ ":12\r\n", 1, -EPROTO },		/* Redis, not +OK */
		{ "+OK\r\n", 1, 0 },			/* a fake that agrees */
	};
	char path[64];
	int64_t took = 0;
	size_t i;

	snprintf(path, sizeof(path), "/tmp/mpq-fake-%d.sock", getpid());
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int err = connect_fake(path, cases[i].reply,
				       strlen(cases[i].reply),
				       cases[i].close_after, &took);

		EXPECT_EQ(cases[i].err, err) TH_LOG("case %zu", i);
		EXPECT_LT(took, 3 * NSEC_PER_SEC) TH_LOG("case %zu", i);
	}
	/* Nothing listening at all. */
	{
		struct mpq_manager *m = NULL;

		EXPECT_EQ(-ECONNREFUSED, mpq_manager_connect(&m,
			  "unix:/nonexistent/redis.sock#mpq", "k", 300 * MS));
		EXPECT_EQ(-EINVAL, mpq_manager_connect(&m, "http://x", "k", 0));
		EXPECT_EQ(-EINVAL, mpq_manager_connect(&m, "tcp://h:99999", "k", 0));
		EXPECT_EQ(-EINVAL, mpq_manager_connect(&m, "tcp://h:1#a b", "k", 0));
	}
}

/*
 * A peer that answers a byte at a time, slowly enough that no single
 * read times out: the call still ends at its timeout.
 */
TEST(a_peer_that_trickles_its_reply_is_cut_off_at_the_timeout)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct mpq_manager *m = NULL;
	char path[64], url[128];
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	int64_t t0;
	pid_t pid;

	snprintf(path, sizeof(path), "/tmp/mpq-fake3-%d.sock", getpid());
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	unlink(path);
	ASSERT_EQ(0, bind(s, (struct sockaddr *)&sa, sizeof(sa)));
	ASSERT_EQ(0, listen(s, 8));
	pid = fork();
	if (pid == 0) {
		char in[256];
		int c = accept(s, NULL, NULL), i;

		read(c, in, sizeof(in));
		write(c, "$100\r\n", 6);
		for (i = 0; i < 100; i++) {
			sleep_ms(100);
			write(c, "x", 1);
		}
		pause();
	}
	close(s);
	snprintf(url, sizeof(url), "unix:%s#mpq", path);
	t0 = now_ns();
	EXPECT_EQ(-ETIMEDOUT, mpq_manager_connect(&m, url, "k", 500 * MS));
	/* 10 s if each read had its own 500 ms */
	EXPECT_LT(now_ns() - t0, 3 * NSEC_PER_SEC);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	unlink(path);
}

/* A fake that accepts AUTH, then answers the next command with garbage. */
TEST(a_garbage_reply_after_auth_is_eproto_and_the_next_call_reconnects)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct mpq_manager *m = NULL;
	struct mpq_manager_dict *d;
	char path[64], url[128], buf[16];
	size_t len = sizeof(buf);
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	pid_t pid;

	snprintf(path, sizeof(path), "/tmp/mpq-fake2-%d.sock", getpid());
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	unlink(path);
	ASSERT_EQ(0, bind(s, (struct sockaddr *)&sa, sizeof(sa)));
	ASSERT_EQ(0, listen(s, 8));
	pid = fork();
	if (pid == 0) {
		char in[4096];
		int c;
		static const char *const bad[] = {
			"~~~~~~\r\n",		/* no such type */
			":5\r\n",		/* int for a string */
			"*1\r\n:1\r\n",	/* array for an int */
		};
		int i = 0;

		/* One connection at a time; each command gets the next
		 * answer, and only a client that hangs up ends one. */
		for (;;) {
			c = accept(s, NULL, NULL);
			if (read(c, in, sizeof(in)) > 0)
				write(c, "+OK\r\n", 5);	/* AUTH */
			while (read(c, in, sizeof(in)) > 0) {
				write(c, bad[i % 3], strlen(bad[i % 3]));
				i++;
			}
			close(c);
		}
	}
	close(s);
	snprintf(url, sizeof(url), "unix:%s#mpq", path);
	ASSERT_EQ(0, mpq_manager_connect(&m, url, "k", 300 * MS));
	ASSERT_EQ(0, mpq_manager_dict(m, "d", &d));
	/* Garbage: the connection is dropped ... */
	EXPECT_EQ(-EPROTO, mpq_manager_dict_get(d, "k", 1, buf, &len));
	/* ... the next call makes a new one: a reply of the wrong type ... */
	EXPECT_EQ(-EPROTO, mpq_manager_dict_get(d, "k", 1, buf, &len));
	/* ... an array where a count belongs ... */
	EXPECT_EQ(-EPROTO, mpq_manager_dict_len(d));
	/* ... garbage again, and after it a connection that works. */
	EXPECT_EQ(-EPROTO, mpq_manager_dict_len(d));
	EXPECT_EQ(5, mpq_manager_dict_len(d));
	mpq_manager_dict_free(d);
	mpq_manager_free(m);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	unlink(path);
}

static int count_kv(const void *k, size_t kl, const void *v, size_t vl,
		    void *arg)
{
	(*(int *)arg)++;
	return 0;
}

TEST_F(mgr, the_dict_does_what_pythons_does)
{
	struct mpq_manager_dict *d, *d2;
	struct iovec keys[3000], vals[3000];
	char kb[3000][12], buf[64];
	size_t len;
	int64_t v;
	int i, n = 0;

	ASSERT_EQ(0, mpq_manager_dict(self->m, "d", &d));
	len = sizeof(buf);
	EXPECT_EQ(-ENOENT, mpq_manager_dict_get(d, "a", 1, buf, &len));
	ASSERT_EQ(0, mpq_manager_dict_set(d, "a", 1, "xyz\0w", 5));
	len = sizeof(buf);
	ASSERT_EQ(0, mpq_manager_dict_get(d, "a", 1, buf, &len));
	EXPECT_EQ(5, len);
	EXPECT_EQ(0, memcmp(buf, "xyz\0w", 5));
	len = 2;
	EXPECT_EQ(-EMSGSIZE, mpq_manager_dict_get(d, "a", 1, buf, &len));
	EXPECT_EQ(5, len);
	EXPECT_EQ(1, mpq_manager_dict_contains(d, "a", 1));
	EXPECT_EQ(0, mpq_manager_dict_contains(d, "b", 1));
	len = sizeof(buf);
	ASSERT_EQ(0, mpq_manager_dict_setdefault(d, "a", 1, "D", 1, buf, &len));
	EXPECT_EQ(5, len);
	len = sizeof(buf);
	ASSERT_EQ(0, mpq_manager_dict_setdefault(d, "b", 1, "D", 1, buf, &len));
	EXPECT_EQ(1, len);
	EXPECT_EQ('D', buf[0]);
	EXPECT_EQ(2, mpq_manager_dict_len(d));
	len = sizeof(buf);
	ASSERT_EQ(0, mpq_manager_dict_pop(d, "b", 1, buf, &len));
	len = sizeof(buf);
	EXPECT_EQ(-ENOENT, mpq_manager_dict_pop(d, "b", 1, buf, &len));
	EXPECT_EQ(1, mpq_manager_dict_delete(d, "a", 1));
	EXPECT_EQ(0, mpq_manager_dict_delete(d, "a", 1));
	/* compare-and-set */
	EXPECT_EQ(1, mpq_manager_dict_cas(d, "c", 1, NULL, 0, "1", 1));
	EXPECT_EQ(0, mpq_manager_dict_cas(d, "c", 1, NULL, 0, "2", 1));
	EXPECT_EQ(0, mpq_manager_dict_cas(d, "c", 1, "2", 1, "3", 1));
	EXPECT_EQ(1, mpq_manager_dict_cas(d, "c", 1, "1", 1, "3", 1));
	/* atomic add; not a number is -EINVAL */
	ASSERT_EQ(0, mpq_manager_dict_add(d, "n", 1, 5, &v));
	ASSERT_EQ(0, mpq_manager_dict_add(d, "n", 1, -7, &v));
	EXPECT_EQ(-2, v);
	ASSERT_EQ(0, mpq_manager_dict_set(d, "s", 1, "x", 1));
	EXPECT_EQ(-EINVAL, mpq_manager_dict_add(d, "s", 1, 1, &v));
	/* update of many keys; iteration sees every one */
	for (i = 0; i < 3000; i++) {
		snprintf(kb[i], sizeof(kb[i]), "k%d", i);
		keys[i] = (struct iovec){ kb[i], strlen(kb[i]) };
		vals[i] = (struct iovec){ kb[i], 1 };
	}
	ASSERT_EQ(0, mpq_manager_dict_update(d, keys, vals, 3000));
	EXPECT_EQ(3003, mpq_manager_dict_len(d));
	ASSERT_EQ(0, mpq_manager_dict_foreach(d, 200, count_kv, &n));
	EXPECT_EQ(3003, n);
	/* found by name from another handle */
	ASSERT_EQ(0, mpq_manager_dict(self->m, "d", &d2));
	EXPECT_EQ(3003, mpq_manager_dict_len(d2));
	mpq_manager_dict_free(d2);
	mpq_manager_dict_free(d);
}

TEST_F(mgr, a_name_of_another_type_is_eprototype)
{
	struct mpq_manager_dict *d;
	struct mpq_manager_list *l;
	char buf[8];
	size_t len = sizeof(buf);

	/* The dead-letter list of queue "x" is the list "x.dead". */
	ASSERT_EQ(0, mpq_manager_list(self->m, "x", &l));
	ASSERT_EQ(0, mpq_manager_list_append(l, "a", 1));
	ASSERT_EQ(0, mpq_manager_dict(self->m, "x", &d));
	EXPECT_EQ(1, mpq_manager_dict_len(d) == 0);	/* another key */
	mpq_manager_dict_free(d);
	mpq_manager_list_free(l);
	/* Scribble a list where a dict lives, by raw key name. */
	ASSERT_EQ(0, mpq_manager_list(self->m, "y", &l));
	ASSERT_EQ(0, mpq_manager_list_append(l, "a", 1));
	mpq_manager_list_free(l);
	ASSERT_EQ(0, mpq_manager_dict(self->m, "y", &d));
	EXPECT_EQ(0, mpq_manager_dict_len(d));
	mpq_manager_dict_free(d);
	(void)buf;
	(void)len;
}

static int collect(const void *v, size_t len, void *arg)
{
	char *s = arg;

	strncat(s, v, len);
	return 0;
}

TEST_F(mgr, the_list_does_what_pythons_does)
{
	struct mpq_manager_list *l;
	struct iovec v[4] = { { "b", 1 }, { "c", 1 }, { "d", 1 }, { "e", 1 } };
	char buf[16], out[64] = "";
	size_t len;

	ASSERT_EQ(0, mpq_manager_list(self->m, "l", &l));
	ASSERT_EQ(0, mpq_manager_list_append(l, "a", 1));
	ASSERT_EQ(0, mpq_manager_list_extend(l, v, 4));
	EXPECT_EQ(5, mpq_manager_list_len(l));
	len = sizeof(buf);
	ASSERT_EQ(0, mpq_manager_list_get(l, -1, buf, &len));
	EXPECT_EQ('e', buf[0]);
	len = sizeof(buf);
	EXPECT_EQ(-ERANGE, mpq_manager_list_get(l, 5, buf, &len));
	ASSERT_EQ(0, mpq_manager_list_set(l, 1, "B", 1));
	EXPECT_EQ(-ERANGE, mpq_manager_list_set(l, 9, "B", 1));
	len = sizeof(buf);
	ASSERT_EQ(0, mpq_manager_list_pop(l, 2, buf, &len));	/* "c" */
	EXPECT_EQ('c', buf[0]);
	len = sizeof(buf);
	ASSERT_EQ(0, mpq_manager_list_pop(l, -1, buf, &len));	/* "e" */
	EXPECT_EQ('e', buf[0]);
	len = sizeof(buf);
	EXPECT_EQ(-ERANGE, mpq_manager_list_pop(l, 7, buf, &len));
	ASSERT_EQ(0, mpq_manager_list_slice(l, 0, 100, collect, out));
	EXPECT_STREQ("aBd", out);
	out[0] = 0;
	ASSERT_EQ(0, mpq_manager_list_slice(l, 1, -1, collect, out));
	EXPECT_STREQ("B", out);
	out[0] = 0;
	ASSERT_EQ(0, mpq_manager_list_slice(l, -2, 3, collect, out));
	EXPECT_STREQ("Bd", out);
	mpq_manager_list_free(l);
}

static struct mpq_manager_queue *open_q(struct mpq_manager *m,
					const char *name, uint64_t maxsize,
					int64_t lease_ns, uint32_t maxd)
{
	struct mpq_manager_queue_attr a = {
		.maxsize = maxsize, .lease_ns = lease_ns,
		.max_deliveries = maxd,
	};
	struct mpq_manager_queue *q = NULL;

	mpq_manager_queue(m, name, &a, &q);
	return q;
}

TEST_F(mgr, a_queue_is_fifo_and_batches_go_in_one_call)
{
	struct mpq_manager_queue *q = open_q(self->m, "fifo", 0, 0, 0);
	struct mpq_manager_msg msgs[64];
	struct iovec v[100];
	char bufs[100][8];
	int i, got = 0, n;

	ASSERT_NE(NULL, q);
	for (i = 0; i < 100; i++) {
		snprintf(bufs[i], sizeof(bufs[i]), "%d", i);
		v[i] = (struct iovec){ bufs[i], strlen(bufs[i]) };
	}
	ASSERT_EQ(100, mpq_manager_queue_put_many(q, v, 100, 0));
	EXPECT_EQ(100, mpq_manager_queue_size(q));
	while (got < 100) {
		n = mpq_manager_queue_get_many(q, msgs, 64, 0);
		ASSERT_GT(n, 0);
		for (i = 0; i < n; i++) {
			char s[16];

			snprintf(s, sizeof(s), "%d", got + i);
			EXPECT_EQ(strlen(s), msgs[i].len);
			EXPECT_EQ(0, memcmp(s, msgs[i].data, msgs[i].len));
			EXPECT_EQ(1, msgs[i].deliveries);
		}
		/* done one by one for the first batch, all at once after */
		if (!got) {
			for (i = 0; i < n; i++)
				EXPECT_EQ(0, mpq_manager_msg_done(q, &msgs[i]));
		} else {
			EXPECT_EQ(n, mpq_manager_msg_done_many(q, msgs, n));
		}
		got += n;
	}
	EXPECT_EQ(-EAGAIN, mpq_manager_queue_get(q, msgs, 0));
	EXPECT_EQ(-ETIMEDOUT, mpq_manager_queue_get(q, msgs, 50 * MS));
	EXPECT_EQ(0, mpq_manager_queue_unfinished(q));
	EXPECT_EQ(0, mpq_manager_queue_join(q, 0));
	mpq_manager_queue_free(q);
}

/*
 * Consumers take a message and are SIGKILLed at a random point, before,
 * during or after done; in the end every message is done exactly once by
 * someone, and one that was taken by a killed consumer came back with a
 * higher delivery count.
 */
struct consumer_arg {
	struct mpq_manager_queue *q;
	struct mpq_manager_dict *done;
};

static int consume(void *p)
{
	struct consumer_arg *a = p;
	struct mpq_manager_msg msg;
	char key[32];

	for (;;) {
		if (mpq_manager_queue_get(a->q, &msg, MPQ_FOREVER))
			return 1;
		snprintf(key, sizeof(key), "%.*s", (int)msg.len,
			 (char *)msg.data);
		sleep_ms(rand() % 5);
		/* Count the work, then say done: a kill between the two is
		 * what at-least-once means; a kill before both is what the
		 * lease is for. */
		if (mpq_manager_dict_add(a->done, key, strlen(key), 1, NULL))
			return 1;
		if (mpq_manager_msg_done(a->q, &msg))
			return 1;
	}
}

static int check_all(const void *k, size_t kl, const void *v, size_t vl,
		     void *arg)
{
	int *n = arg;

	n[0]++;
	if (vl != 1 || *(char *)v != '1')
		n[1]++;		/* done more than once */
	return 0;
}

TEST_F(mgr, a_message_taken_by_a_consumer_killed_mid_message_is_delivered_again)
{
	struct mpq_manager_queue *q = open_q(self->m, "work", 0, 500 * MS, 0);
	struct consumer_arg a = { .q = q };
	struct mpq_manager_msg msg;
	int round, i, n[2] = { 0, 0 }, redelivered = 0, err;
	char s[16];

	ASSERT_NE(NULL, q);
	ASSERT_EQ(0, mpq_manager_dict(self->m, "done", &a.done));
	srand(getpid());
	for (i = 0; i < 200; i++) {
		snprintf(s, sizeof(s), "m%d", i);
		ASSERT_EQ(0, mpq_manager_queue_put(q, s, strlen(s), 0));
	}
	for (round = 0; round < 30; round++) {
		pid_t c = spawn(consume, &a);

		sleep_ms(rand() % 20);
		kill(c, SIGKILL);
		EXPECT_EQ(128 + SIGKILL, wait_child(c, 5000));
	}
	/* A survivor drains the rest, redelivered ones included. */
	for (;;) {
		if (mpq_manager_queue_get(q, &msg, 2000 * MS))
			break;
		if (msg.deliveries > 1)
			redelivered++;
		snprintf(s, sizeof(s), "%.*s", (int)msg.len, (char *)msg.data);
		ASSERT_EQ(0, mpq_manager_dict_add(a.done, s, strlen(s), 1, NULL));
		/* -ESTALE: descheduled past the lease; it comes back. */
		err = mpq_manager_msg_done(q, &msg);
		ASSERT_TRUE(err == 0 || err == -ESTALE);
	}
	ASSERT_EQ(0, mpq_manager_dict_foreach(a.done, 100, check_all, n));
	EXPECT_EQ(200, n[0]);		/* nothing lost */
	TH_LOG("redelivered %d, done twice %d", redelivered, n[1]);
	EXPECT_GT(redelivered, 0);	/* the kills did take messages */
	EXPECT_EQ(0, mpq_manager_queue_unfinished(q));
	mpq_manager_dict_free(a.done);
	mpq_manager_queue_free(q);
}

static int hold_with_renewal(void *p)
{
	struct mpq_manager_queue *q = p;
	struct mpq_manager_msg msg;
	int i;

	if (mpq_manager_queue_get(q, &msg, 5000 * MS))
		return 1;
	/* Work for 3 leases' time, renewing every 1/10 lease. */
	for (i = 0; i < 30; i++) {
		sleep_ms(100);
		if (mpq_manager_msg_renew(q, &msg))
			return 2;
	}
	return mpq_manager_msg_done(q, &msg) ? 3 : 0;
}

TEST_F(mgr, a_long_task_whose_lease_is_renewed_is_not_delivered_again)
{
	struct mpq_manager_queue *q = open_q(self->m, "long", 0, 1000 * MS, 0);
	struct mpq_manager_msg msg;
	pid_t worker;

	ASSERT_NE(NULL, q);
	ASSERT_EQ(0, mpq_manager_queue_put(q, "job", 3, 0));
	worker = spawn(hold_with_renewal, q);
	while (mpq_manager_queue_size(q) > 0)
		sleep_ms(5);
	/* Nothing for us while the worker lives and renews. */
	EXPECT_EQ(-ETIMEDOUT, mpq_manager_queue_get(q, &msg, 2500 * MS));
	EXPECT_EQ(0, wait_child(worker, 10000));
	EXPECT_EQ(0, mpq_manager_queue_join(q, 0));
	/* Unrenewed, the same lease does run out: the test can fail. */
	ASSERT_EQ(0, mpq_manager_queue_put(q, "job2", 4, 0));
	ASSERT_EQ(0, mpq_manager_queue_get(q, &msg, 0));
	mpq_manager_msg_free(&msg);
	ASSERT_EQ(0, mpq_manager_queue_get(q, &msg, 5000 * MS));
	EXPECT_EQ(2, msg.deliveries);
	EXPECT_EQ(0, mpq_manager_msg_done(q, &msg));
	mpq_manager_queue_free(q);
}

TEST_F(mgr, a_message_is_dead_lettered_after_n_deliveries)
{
	struct mpq_manager_queue *q = open_q(self->m, "poison", 0, 100 * MS, 3);
	struct mpq_manager_list *dead;
	struct mpq_manager_msg msg, stale;
	char buf[16];
	size_t len = sizeof(buf);
	int i;

	ASSERT_NE(NULL, q);
	ASSERT_EQ(0, mpq_manager_list(self->m, "poison.dead", &dead));
	ASSERT_EQ(0, mpq_manager_queue_put(q, "bad", 3, 0));
	ASSERT_EQ(0, mpq_manager_queue_put(q, "good", 4, 0));
	for (i = 1; i <= 3; i++) {
		/* Each taker "dies": never done, the lease runs out. */
		ASSERT_EQ(0, mpq_manager_queue_get(q, &msg, 2000 * MS));
		if (msg.len == 4) {	/* good: done at once */
			EXPECT_EQ(0, mpq_manager_msg_done(q, &msg));
			ASSERT_EQ(0, mpq_manager_queue_get(q, &msg, 2000 * MS));
		}
		EXPECT_EQ(3, msg.len);
		EXPECT_EQ(i, msg.deliveries);
		if (i == 1)
			stale = msg;
		else
			mpq_manager_msg_free(&msg);
	}
	EXPECT_EQ(-ETIMEDOUT, mpq_manager_queue_get(q, &msg, 400 * MS));
	EXPECT_EQ(1, mpq_manager_list_len(dead));
	ASSERT_EQ(0, mpq_manager_list_get(dead, 0, buf, &len));
	EXPECT_EQ(0, memcmp(buf, "bad", 3));
	/* Dead-lettered counts as finished; a late done is stale. */
	EXPECT_EQ(0, mpq_manager_queue_unfinished(q));
	EXPECT_EQ(0, mpq_manager_queue_join(q, 0));
	EXPECT_EQ(-ESTALE, mpq_manager_msg_done(q, &stale));
	mpq_manager_list_free(dead);
	mpq_manager_queue_free(q);
}

static int blocked_put(void *p)
{
	return mpq_manager_queue_put(p, "c", 1, MPQ_FOREVER) ? 1 : 0;
}

TEST_F(mgr, maxsize_is_exact_and_a_blocking_put_waits_for_room)
{
	struct mpq_manager_queue *q = open_q(self->m, "small", 2, 0, 0);
	struct iovec v[3] = { { "a", 1 }, { "b", 1 }, { "x", 1 } };
	struct mpq_manager_msg msg;
	pid_t putter;

	ASSERT_NE(NULL, q);
	EXPECT_EQ(2, mpq_manager_queue_put_many(q, v, 3, 0));	/* as fit */
	EXPECT_EQ(-EAGAIN, mpq_manager_queue_put(q, "x", 1, 0));
	EXPECT_EQ(-ETIMEDOUT, mpq_manager_queue_put(q, "x", 1, 50 * MS));
	putter = spawn(blocked_put, q);
	sleep_ms(100);
	EXPECT_TRUE(child_running(putter));
	/* A leased message still holds its room: it may come back. */
	ASSERT_EQ(0, mpq_manager_queue_get(q, &msg, 0));
	sleep_ms(100);
	EXPECT_TRUE(child_running(putter));
	EXPECT_EQ(0, mpq_manager_msg_done(q, &msg));
	EXPECT_EQ(0, wait_child(putter, 5000));
	EXPECT_EQ(2, mpq_manager_queue_size(q));
	mpq_manager_queue_free(q);
}

static int worker_done_all(void *p)
{
	struct mpq_manager_queue *q = p;
	struct mpq_manager_msg msg;

	while (!mpq_manager_queue_get(q, &msg, 500 * MS)) {
		sleep_ms(10);
		if (mpq_manager_msg_done(q, &msg))
			return 1;
	}
	return 0;
}

TEST_F(mgr, join_waits_until_every_message_is_done)
{
	struct mpq_manager_queue *q = open_q(self->m, "jq", 0, 0, 0);
	pid_t w[2];
	int i;

	ASSERT_NE(NULL, q);
	for (i = 0; i < 20; i++)
		ASSERT_EQ(0, mpq_manager_queue_put(q, "t", 1, 0));
	EXPECT_EQ(-EAGAIN, mpq_manager_queue_join(q, 0));
	EXPECT_EQ(20, mpq_manager_queue_unfinished(q));
	w[0] = spawn(worker_done_all, q);
	w[1] = spawn(worker_done_all, q);
	EXPECT_EQ(0, mpq_manager_queue_join(q, 10000 * MS));
	EXPECT_EQ(0, mpq_manager_queue_unfinished(q));
	EXPECT_EQ(0, wait_child(w[0], 5000));
	EXPECT_EQ(0, wait_child(w[1], 5000));
	mpq_manager_queue_free(q);
}

/* Python's semantics on request: no lease, a get is for good. */
TEST_F(mgr, a_queue_without_leases_is_pythons_queue)
{
	struct mpq_manager_queue *q = open_q(self->m, "plain", 0,
					     MPQ_MANAGER_NO_LEASE, 0);
	struct mpq_manager_msg msg[2];
	pid_t c;

	ASSERT_NE(NULL, q);
	ASSERT_EQ(0, mpq_manager_queue_put(q, "a", 1, 0));
	ASSERT_EQ(0, mpq_manager_queue_put(q, "b", 1, 0));
	c = fork();
	if (c == 0) {
		if (mpq_manager_queue_get(q, msg, 0))
			_exit(1);
		kill(getpid(), SIGKILL);
	}
	EXPECT_EQ(128 + SIGKILL, wait_child(c, 5000));
	ASSERT_EQ(1, mpq_manager_queue_get_many(q, msg, 2, 0));
	EXPECT_EQ('b', *(char *)msg[0].data);	/* "a" went with the child */
	EXPECT_EQ(-EAGAIN, mpq_manager_queue_join(q, 0));
	EXPECT_EQ(0, mpq_manager_msg_done(q, &msg[0]));
	EXPECT_EQ(1, mpq_manager_queue_unfinished(q));	/* the lost "a" */
	mpq_manager_queue_free(q);
}

/*
 * A raw connection to the manager's own server as its namespace's user
 * (the tests below play a process that died half-way through a call).
 */
static redisContext *raw_conn(struct mpq_manager *m, char ns[64])
{
	char path[256], *hash;
	redisContext *c;
	redisReply *r;

	snprintf(path, sizeof(path), "%s", mpq_manager_address(m) + 5);
	hash = strchr(path, '#');
	if (!hash)
		return NULL;
	*hash = 0;
	snprintf(ns, 64, "%s", hash + 1);
	c = redisConnectUnix(path);
	if (!c || c->err)
		return NULL;
	r = redisCommand(c, "AUTH %s %s", ns, mpq_manager_authkey(m));
	if (!r || r->type != REDIS_REPLY_STATUS) {
		redisFree(c);
		return NULL;
	}
	freeReplyObject(r);
	return c;
}

static long long raw_int(redisContext *c, const char *fmt, const char *a,
			 const char *b)
{
	redisReply *r = redisCommand(c, fmt, a, b);
	long long v = r && r->type == REDIS_REPLY_INTEGER ? r->integer :
		      r && r->type == REDIS_REPLY_STRING ? 1 : -1;

	if (r)
		freeReplyObject(r);
	return v;
}

static int get_one(void *p)
{
	struct mpq_manager_msg msg;

	if (mpq_manager_queue_get(p, &msg, 5000 * MS))
		return 1;
	return msg.len == 1 ? *(char *)msg.data : 2;
}

/*
 * A blocking get is "BLMOVE :ready :take" and the get script in one
 * write; a getter that dies between the two (its BLMOVE served, its
 * script never run) leaves the id in :take. Played here by moving it by
 * hand: the id still counts for size and maxsize, and the next get, a
 * blocked one too, takes it first, once, in order.
 */
TEST_F(mgr, a_getter_that_dies_between_its_wait_and_its_take_loses_nothing)
{
	struct mpq_manager_queue *q = open_q(self->m, "park", 3, 0, 0);
	struct mpq_manager_msg msg;
	char ns[64], ready[128], take[128];
	redisContext *c = raw_conn(self->m, ns);
	pid_t getter;

	ASSERT_NE(NULL, q);
	ASSERT_NE(NULL, c);
	snprintf(ready, sizeof(ready), "mpq:%s:q:park:ready", ns);
	snprintf(take, sizeof(take), "mpq:%s:q:park:take", ns);
	ASSERT_EQ(0, mpq_manager_queue_put(q, "a", 1, 0));
	ASSERT_EQ(0, mpq_manager_queue_put(q, "b", 1, 0));
	/* A getter served "a", then killed before its script ran. */
	ASSERT_EQ(1, raw_int(c, "LMOVE %s %s LEFT RIGHT", ready, take));
	EXPECT_EQ(2, mpq_manager_queue_size(q));
	ASSERT_EQ(0, mpq_manager_queue_put(q, "c", 1, 0));
	EXPECT_EQ(-EAGAIN, mpq_manager_queue_put(q, "d", 1, 0)); /* 3 held */
	ASSERT_EQ(0, mpq_manager_queue_get(q, &msg, 1000 * MS));
	EXPECT_EQ('a', *(char *)msg.data);
	EXPECT_EQ(1, msg.deliveries);
	EXPECT_EQ(0, mpq_manager_msg_done(q, &msg));
	EXPECT_EQ(0, raw_int(c, "LLEN %s%s", take, ""));
	/* The same with the rest taken by a blocked getter: the parked id
	 * goes first, what the getter's own move took stays queued. */
	ASSERT_EQ(0, mpq_manager_queue_get(q, &msg, 0));
	EXPECT_EQ('b', *(char *)msg.data);
	EXPECT_EQ(0, mpq_manager_msg_done(q, &msg));
	ASSERT_EQ(1, raw_int(c, "LMOVE %s %s LEFT RIGHT", ready, take));
	EXPECT_EQ(1, mpq_manager_queue_size(q));
	getter = spawn(get_one, q);
	sleep_ms(100);
	EXPECT_EQ(1, raw_int(c, "LLEN %s%s", take, ""));
	ASSERT_EQ(0, mpq_manager_queue_put(q, "e", 1, 0));
	EXPECT_EQ('c', wait_child(getter, 5000));
	ASSERT_EQ(0, mpq_manager_queue_get(q, &msg, 1000 * MS));
	EXPECT_EQ('e', *(char *)msg.data);
	EXPECT_EQ(1, msg.deliveries);
	EXPECT_EQ(0, mpq_manager_msg_done(q, &msg));
	/* Two parked, a getter blocked on the empty :ready: the next get
	 * takes one and puts the other back where the blocked one sees it
	 * (else it would sleep its whole wait, 10 s, with a message there). */
	ASSERT_EQ(0, mpq_manager_queue_put(q, "f", 1, 0));
	ASSERT_EQ(0, mpq_manager_queue_put(q, "g", 1, 0));
	ASSERT_EQ(1, raw_int(c, "LMOVE %s %s LEFT RIGHT", ready, take));
	ASSERT_EQ(1, raw_int(c, "LMOVE %s %s LEFT RIGHT", ready, take));
	getter = spawn(get_one, q);
	sleep_ms(100);
	ASSERT_EQ(0, mpq_manager_queue_get(q, &msg, 0));
	EXPECT_EQ('f', *(char *)msg.data);
	EXPECT_EQ(0, mpq_manager_msg_done(q, &msg));
	EXPECT_EQ('g', wait_child(getter, 4000));
	EXPECT_EQ(-EAGAIN, mpq_manager_queue_get(q, &msg, 0));
	EXPECT_EQ(0, raw_int(c, "LLEN %s%s", take, ""));
	redisFree(c);
	mpq_manager_queue_free(q);
}

/*
 * A queue without leases keeps its payloads in :ready and, unbounded,
 * runs no script: its put is a MULTI and its get a BLMPOP; bounded or
 * taken as a plain Queue (done at once) it runs scripts. Every path keeps
 * order, maxsize, wakes blocked getters and putters and counts tasks.
 */
TEST_F(mgr, a_queue_without_leases_keeps_order_maxsize_and_task_counts)
{
	struct mpq_manager_queue *q = open_q(self->m, "pq", 0,
					     MPQ_MANAGER_NO_LEASE, 0);
	struct mpq_manager_queue *b = open_q(self->m, "pb", 2,
					     MPQ_MANAGER_NO_LEASE, 0);
	struct iovec v[5] = { { "a", 1 }, { "b", 1 }, { "c", 1 }, { "d", 1 },
			      { "e", 1 } };
	struct mpq_manager_queue_attr nl = { .lease_ns = MPQ_MANAGER_NO_LEASE };
	struct mpq_manager_msg msgs[8];
	struct mpq_queue *pq;
	char ns[64], key[128], buf[8];
	redisContext *c = raw_conn(self->m, ns);
	size_t len;
	pid_t kid;
	int i;

	ASSERT_NE(NULL, q);
	ASSERT_NE(NULL, b);
	ASSERT_NE(NULL, c);
	/* Unbounded: MULTI and BLMPOP. */
	ASSERT_EQ(5, mpq_manager_queue_put_many(q, v, 5, 0));
	EXPECT_EQ(5, mpq_manager_queue_size(q));
	ASSERT_EQ(3, mpq_manager_queue_get_many(q, msgs, 3, 0));
	for (i = 0; i < 3; i++) {
		EXPECT_EQ('a' + i, *(char *)msgs[i].data);
		EXPECT_EQ(1, msgs[i].deliveries);
	}
	ASSERT_EQ(2, mpq_manager_queue_get_many(q, msgs + 3, 8, 1000 * MS));
	EXPECT_EQ('e', *(char *)msgs[4].data);
	EXPECT_EQ(-EAGAIN, mpq_manager_queue_get(q, msgs + 5, 0));
	EXPECT_EQ(-ETIMEDOUT, mpq_manager_queue_get(q, msgs + 5, 50 * MS));
	kid = spawn(get_one, q);
	sleep_ms(100);
	ASSERT_EQ(0, mpq_manager_queue_put(q, "z", 1, 0));
	EXPECT_EQ('z', wait_child(kid, 5000));
	/* Parked by a plain Queue's get (a script's) that died: found. */
	ASSERT_EQ(0, mpq_manager_queue_put(q, "p", 1, 0));
	snprintf(key, sizeof(key), "mpq:%s:q:pq:", ns);
	freeReplyObject(redisCommand(c, "LMOVE %sready %stake LEFT RIGHT",
				     key, key));
	EXPECT_EQ(1, mpq_manager_queue_size(q));
	ASSERT_EQ(0, mpq_manager_queue_get(q, msgs + 5, 1000 * MS));
	EXPECT_EQ('p', *(char *)msgs[5].data);
	mpq_manager_msg_free(&msgs[5]);
	EXPECT_EQ(7, mpq_manager_queue_unfinished(q));
	EXPECT_EQ(1, mpq_manager_msg_done(q, &msgs[5]) == 0);
	EXPECT_EQ(5, mpq_manager_msg_done_many(q, msgs, 5));
	EXPECT_EQ(-EAGAIN, mpq_manager_queue_join(q, 0));  /* z: not done */
	EXPECT_EQ(1, mpq_manager_queue_unfinished(q));
	/* Bounded: scripts, maxsize exact, a blocked putter woken. */
	EXPECT_EQ(2, mpq_manager_queue_put_many(b, v, 3, 0));
	EXPECT_EQ(-EAGAIN, mpq_manager_queue_put(b, "x", 1, 0));
	kid = spawn(blocked_put, b);
	sleep_ms(100);
	EXPECT_TRUE(child_running(kid));
	ASSERT_EQ(0, mpq_manager_queue_get(b, msgs, 1000 * MS));
	EXPECT_EQ('a', *(char *)msgs[0].data);
	mpq_manager_msg_free(&msgs[0]);
	EXPECT_EQ(0, wait_child(kid, 5000));
	ASSERT_EQ(2, mpq_manager_queue_get_many(b, msgs, 8, 0));
	EXPECT_EQ('b', *(char *)msgs[0].data);
	EXPECT_EQ('c', *(char *)msgs[1].data);
	mpq_manager_msg_free(&msgs[0]);
	mpq_manager_msg_free(&msgs[1]);
	/* As a plain Queue: its get is done at once (final). */
	ASSERT_EQ(0, mpq_manager_queue_open(self->m, "pq", &nl, &pq));
	ASSERT_EQ(0, mpq_queue_put(pq, "y", 1, 0));
	len = sizeof(buf);
	ASSERT_EQ(0, mpq_queue_get(pq, buf, &len, 1000 * MS));
	EXPECT_EQ('y', buf[0]);
	EXPECT_EQ(1, mpq_manager_queue_unfinished(q));
	mpq_queue_free(pq);
	/* A key of another type where :ready lives: one errno, both ways. */
	snprintf(key, sizeof(key), "mpq:%s:q:pq:ready", ns);
	freeReplyObject(redisCommand(c, "SET %s x", key));
	EXPECT_EQ(-EPROTOTYPE, mpq_manager_queue_put(q, "w", 1, 0));
	EXPECT_EQ(-EPROTOTYPE, mpq_manager_queue_get(q, msgs, 100 * MS));
	redisFree(c);
	mpq_manager_queue_free(b);
	mpq_manager_queue_free(q);
}

/* Get 1 to 3 messages (blocking) and keep them leased: never done. */
static int get_and_hold(void *p)
{
	struct mpq_manager_msg msgs[3];
	int n = mpq_manager_queue_get_many(p, msgs, 1 + rand() % 3,
					   MPQ_FOREVER);

	if (n < 0)
		return 1;
	pause();
	return 0;
}

/*
 * Getters blocked in a get are SIGKILLed at random points around the put
 * that serves them: still blocked, served but their script not run yet,
 * their script run but its reply unread, or after. Every message put
 * comes to the one living getter in the end (a killed getter's lease
 * runs out), and never twice to it unless its own lease ran out first.
 */
TEST_F(mgr, a_sigkill_storm_on_blocked_getters_loses_nothing_and_doubles_nothing)
{
	struct mpq_manager_queue *q = open_q(self->m, "storm", 0, 300 * MS, 0);
	enum { ROUNDS = 120, MAXPUT = ROUNDS * 3 };
	static int done[MAXPUT], last[MAXPUT];
	int64_t t0;
	int round, k, n = 0, i, got = 0, again = 0, never = 0, err;
	struct mpq_manager_msg msg;
	char s[16];
	pid_t kid[3];

	ASSERT_NE(NULL, q);
	t0 = now_ns();
	memset(done, 0, sizeof(done));
	memset(last, 0, sizeof(last));
	srand(getpid());
	for (round = 0; round < ROUNDS; round++) {
		int puts = 1 + rand() % 3;

		for (k = 0; k < 3; k++) {
			srand(getpid() + round * 3 + k);
			kid[k] = spawn(get_and_hold, q);
		}
		srand(getpid() + round);
		usleep(rand() % 4000);
		for (i = 0; i < puts; i++, n++) {
			snprintf(s, sizeof(s), "%d", n);
			ASSERT_EQ(0, mpq_manager_queue_put(q, s, strlen(s), 0));
		}
		/* At once, within a server's step or two, or later. */
		k = rand() % 3;
		usleep(k == 0 ? 0 : k == 1 ? rand() % 200 : rand() % 1500);
		for (k = 0; k < 3; k++)
			kill(kid[k], SIGKILL);
		for (k = 0; k < 3; k++)
			ASSERT_EQ(128 + SIGKILL, wait_child(kid[k], 5000));
	}
	for (;;) {
		err = mpq_manager_queue_get(q, &msg, 2000 * MS);
		if (err)
			break;
		snprintf(s, sizeof(s), "%.*s", (int)msg.len, (char *)msg.data);
		i = atoi(s);
		ASSERT_TRUE(i >= 0 && i < n);
		/* A second delivery only after a lease ran out. */
		ASSERT_GT(msg.deliveries, last[i]);
		last[i] = msg.deliveries;
		if (msg.deliveries > 1)
			again++;
		else
			never++;
		err = mpq_manager_msg_done(q, &msg);
		ASSERT_TRUE(err == 0 || err == -ESTALE);
		if (!err) {
			done[i]++;
			got++;
		}
	}
	EXPECT_EQ(-ETIMEDOUT, err);
	for (i = 0; i < n; i++)
		EXPECT_EQ(1, done[i]);	/* nothing lost, nothing doubled */
	TH_LOG("%d messages: %d came back from killed getters, %d were never taken (%lld ms)",
	       n, again, never, (long long)((now_ns() - t0) / MS));
	EXPECT_EQ(n, got);
	EXPECT_GT(again, 0);		/* the kills did take messages */
	EXPECT_EQ(0, mpq_manager_queue_size(q));
	EXPECT_EQ(0, mpq_manager_queue_unfinished(q));
	mpq_manager_queue_free(q);
}

static int take_and_die(void *p)
{
	struct mpq_manager_lock *l = p;

	if (mpq_manager_lock_acquire(l, 2000 * MS))
		return 1;
	kill(getpid(), SIGKILL);
	return 2;
}

TEST_F(mgr, a_lock_whose_holder_is_killed_goes_to_the_next_acquirer_with_eownerdead)
{
	struct mpq_manager_lock *l;
	uint64_t t1;
	pid_t holder;

	ASSERT_EQ(0, mpq_manager_lock(self->m, "L", 0, 300 * MS, &l));
	ASSERT_EQ(0, mpq_manager_lock_acquire(l, 0));
	t1 = mpq_manager_lock_token(l);
	EXPECT_GT(t1, 0);
	ASSERT_EQ(0, mpq_manager_lock_release(l));
	holder = spawn(take_and_die, l);
	EXPECT_EQ(128 + SIGKILL, wait_child(holder, 5000));
	EXPECT_EQ(-EAGAIN, mpq_manager_lock_acquire(l, 0));
	/* A blocked acquirer wakes when the dead holder's lease ends. */
	EXPECT_EQ(-EOWNERDEAD, mpq_manager_lock_acquire(l, 5000 * MS));
	EXPECT_GT(mpq_manager_lock_token(l), t1 + 1);	/* fenced */
	ASSERT_EQ(0, mpq_manager_lock_release(l));
	/* Until marked consistent, every acquirer is told. */
	EXPECT_EQ(-EOWNERDEAD, mpq_manager_lock_acquire(l, 0));
	EXPECT_EQ(0, mpq_manager_lock_consistent(l));
	ASSERT_EQ(0, mpq_manager_lock_release(l));
	EXPECT_EQ(0, mpq_manager_lock_acquire(l, 0));
	ASSERT_EQ(0, mpq_manager_lock_release(l));
	mpq_manager_lock_free(l);
}

/*
 * SIGKILL storm: workers take the lock, mark themselves inside with a
 * compare-and-set from absent (which fails if anyone else is inside),
 * work a little, unmark, release. Killed at random points, a holder
 * leaves its mark; the next acquirer is told -EOWNERDEAD and repairs it.
 * Mutual exclusion must hold throughout.
 */
struct storm_arg {
	struct mpq_manager_lock *l;
	struct mpq_manager_dict *d;
};

static int storm_worker(void *p)
{
	struct storm_arg *a = p;
	char me[16];
	int err;

	snprintf(me, sizeof(me), "%d", getpid());
	srand(getpid());
	for (;;) {
		err = mpq_manager_lock_acquire(a->l, 10000 * MS);
		if (err == -EOWNERDEAD) {
			mpq_manager_dict_add(a->d, "repairs", 7, 1, NULL);
			mpq_manager_dict_delete(a->d, "inside", 6);
			if (mpq_manager_lock_consistent(a->l))
				return 3;
		} else if (err) {
			return 1;
		}
		if (mpq_manager_dict_cas(a->d, "inside", 6, NULL, 0, me,
					 strlen(me)) != 1)
			mpq_manager_dict_add(a->d, "violations", 10, 1, NULL);
		sleep_ms(rand() % 3);
		mpq_manager_dict_delete(a->d, "inside", 6);
		err = mpq_manager_lock_release(a->l);
		if (err == -ESTALE)	/* descheduled past the lease */
			mpq_manager_dict_add(a->d, "lapses", 6, 1, NULL);
		else if (err)
			return 2;
	}
}

TEST_F(mgr, a_sigkill_storm_on_lock_holders_keeps_mutual_exclusion)
{
	struct storm_arg a;
	pid_t w[3];
	int64_t v = 0, lapses = 0;
	int i, k;

	ASSERT_EQ(0, mpq_manager_lock(self->m, "storm", 0, 500 * MS, &a.l));
	ASSERT_EQ(0, mpq_manager_dict(self->m, "storm", &a.d));
	srand(getpid());
	for (i = 0; i < 3; i++)
		w[i] = spawn(storm_worker, &a);
	for (k = 0; k < 15; k++) {
		sleep_ms(rand() % 60);
		i = rand() % 3;
		kill(w[i], SIGKILL);
		EXPECT_EQ(128 + SIGKILL, wait_child(w[i], 5000));
		w[i] = spawn(storm_worker, &a);
	}
	for (i = 0; i < 3; i++) {
		kill(w[i], SIGKILL);
		wait_child(w[i], 5000);
	}
	/*
	 * A holder the scheduler stops for longer than its lease loses the
	 * lock to the next acquirer while still inside: that is what a
	 * lease is (fencing tokens are the remedy), not a broken lock. Only
	 * a run with no such lapse can judge mutual exclusion.
	 */
	ASSERT_EQ(0, mpq_manager_dict_add(a.d, "lapses", 6, 0, &lapses));
	ASSERT_EQ(0, mpq_manager_dict_add(a.d, "violations", 10, 0, &v));
	if (lapses == 0)
		EXPECT_EQ(0, v);
	TH_LOG("%lld leases lapsed under load", (long long)lapses);
	ASSERT_EQ(0, mpq_manager_dict_add(a.d, "repairs", 7, 0, &v));
	TH_LOG("%lld holders died holding it", (long long)v);
	mpq_manager_dict_free(a.d);
	mpq_manager_lock_free(a.l);
}

static int acquire_forever(void *p)
{
	struct mpq_manager_lock *l = p;

	if (mpq_manager_lock_acquire(l, MPQ_FOREVER))
		return 1;
	return mpq_manager_lock_release(l) ? 2 : 0;
}

TEST_F(mgr, a_release_wakes_a_blocked_acquirer_and_a_lost_lease_is_estale)
{
	struct mpq_manager_lock *l, *l2;
	pid_t waiter;

	ASSERT_EQ(0, mpq_manager_lock(self->m, "W", 0, 0, &l));
	ASSERT_EQ(0, mpq_manager_lock_acquire(l, 0));
	waiter = spawn(acquire_forever, l);
	sleep_ms(200);
	EXPECT_TRUE(child_running(waiter));
	ASSERT_EQ(0, mpq_manager_lock_release(l));
	/* The lease is 30 s: only the release can have woken it. */
	EXPECT_EQ(0, wait_child(waiter, 5000));

	/* A holder whose lease ran out and was taken over: -ESTALE. */
	ASSERT_EQ(0, mpq_manager_lock(self->m, "S", 0, 100 * MS, &l2));
	ASSERT_EQ(0, mpq_manager_lock_acquire(l2, 0));
	waiter = fork();
	if (waiter == 0)
		_exit(mpq_manager_lock_acquire(l2, 2000 * MS) == -EOWNERDEAD ?
		      0 : 1);
	EXPECT_EQ(0, wait_child(waiter, 5000));
	EXPECT_EQ(-ESTALE, mpq_manager_lock_release(l2));
	mpq_manager_lock_free(l2);
	mpq_manager_lock_free(l);
}

TEST_F(mgr, an_rlock_is_taken_again_by_its_holder_only)
{
	struct mpq_manager_lock *l;
	pid_t other;

	ASSERT_EQ(0, mpq_manager_lock(self->m, "R", 1, 0, &l));
	ASSERT_EQ(0, mpq_manager_lock_acquire(l, 0));
	ASSERT_EQ(0, mpq_manager_lock_acquire(l, 0));
	other = fork();
	if (other == 0)
		_exit(mpq_manager_lock_acquire(l, 0) == -EAGAIN ? 0 : 1);
	EXPECT_EQ(0, wait_child(other, 5000));
	ASSERT_EQ(0, mpq_manager_lock_release(l));
	other = fork();
	if (other == 0)
		_exit(mpq_manager_lock_acquire(l, 0) == -EAGAIN ? 0 : 1);
	EXPECT_EQ(0, wait_child(other, 5000));
	ASSERT_EQ(0, mpq_manager_lock_release(l));
	EXPECT_EQ(-EPERM, mpq_manager_lock_release(l));
	other = fork();
	if (other == 0)
		_exit(mpq_manager_lock_acquire(l, 0) == 0 ? 0 : 1);
	EXPECT_EQ(0, wait_child(other, 5000));
	mpq_manager_lock_free(l);
}

static int sem_take_and_die(void *p)
{
	if (mpq_manager_sem_acquire(p, 2000 * MS))
		return 1;
	kill(getpid(), SIGKILL);
	return 2;
}

static int sem_acquire_forever(void *p)
{
	if (mpq_manager_sem_acquire(p, MPQ_FOREVER))
		return 1;
	return mpq_manager_sem_release(p) ? 2 : 0;
}

TEST_F(mgr, a_semaphore_is_bounded_and_a_dead_holders_unit_comes_back)
{
	struct mpq_manager_sem *s, *s2;
	pid_t c;

	ASSERT_EQ(0, mpq_manager_sem(self->m, "S", 2, 0, &s));
	ASSERT_EQ(0, mpq_manager_sem_acquire(s, 0));
	ASSERT_EQ(0, mpq_manager_sem_acquire(s, 0));
	EXPECT_EQ(-EAGAIN, mpq_manager_sem_acquire(s, 0));
	EXPECT_EQ(-ETIMEDOUT, mpq_manager_sem_acquire(s, 50 * MS));
	/* A blocked acquirer is woken by a release (leases are 30 s). */
	c = spawn(sem_acquire_forever, s);
	sleep_ms(200);
	EXPECT_TRUE(child_running(c));
	ASSERT_EQ(0, mpq_manager_sem_release(s));
	EXPECT_EQ(0, wait_child(c, 5000));
	ASSERT_EQ(0, mpq_manager_sem_release(s));
	EXPECT_EQ(-EPERM, mpq_manager_sem_release(s));	/* bounded */

	/* Units held by a killed process come back when their leases end. */
	ASSERT_EQ(0, mpq_manager_sem(self->m, "D", 1, 300 * MS, &s2));
	c = spawn(sem_take_and_die, s2);
	EXPECT_EQ(128 + SIGKILL, wait_child(c, 5000));
	EXPECT_EQ(-EAGAIN, mpq_manager_sem_acquire(s2, 0));
	EXPECT_EQ(-EOWNERDEAD, mpq_manager_sem_acquire(s2, 5000 * MS));
	EXPECT_GT(mpq_manager_sem_token(s2), 1);
	ASSERT_EQ(0, mpq_manager_sem_release(s2));
	mpq_manager_sem_free(s2);
	mpq_manager_sem_free(s);
}

/*
 * With an AOF, a server that is SIGKILLed and run again has every write
 * it acknowledged; a peer's next call reaches it with no error, and a
 * message leased when it died comes back after its lease.
 */
TEST(a_restarted_server_with_an_aof_loses_nothing_acknowledged)
{
	char dir[] = "/tmp/mpq-aof-XXXXXX", cmd[128];
	struct mpq_manager_attr a = { .aof = 1, .dir = dir };
	struct mpq_manager *m, *p;
	struct mpq_manager_queue *q;
	struct mpq_manager_msg msg;
	struct mpq_manager_queue_attr qa = { .lease_ns = 300 * MS };
	int i, seen = 0, err;
	char s[16];

	ASSERT_NE(NULL, mkdtemp(dir));
	m = start_or_skip(_metadata, &a);
	ASSERT_NE(NULL, m);
	p = peer(m);
	ASSERT_NE(NULL, p);
	ASSERT_EQ(0, mpq_manager_queue(p, "durable", &qa, &q));
	for (i = 0; i < 100; i++) {
		snprintf(s, sizeof(s), "%d", i);
		ASSERT_EQ(0, mpq_manager_queue_put(q, s, strlen(s), 0));
	}
	ASSERT_EQ(0, mpq_manager_queue_get(q, &msg, 0));	/* leased */
	mpq_manager_msg_free(&msg);
	EXPECT_EQ(-EBUSY, mpq_manager_restart(m));
	kill(mpq_manager_server_pid(m), SIGKILL);
	ASSERT_TRUE(pidfd_dead(mpq_manager_pidfd(m), 5000));
	ASSERT_EQ(0, mpq_manager_restart(m));
	/* The peer's old connection is dead; its next call just works. */
	EXPECT_EQ(99, mpq_manager_queue_size(q));
	EXPECT_EQ(100, mpq_manager_queue_unfinished(q));
	for (;;) {
		err = mpq_manager_queue_get(q, &msg, 1000 * MS);
		if (err)
			break;
		seen++;
		ASSERT_EQ(0, mpq_manager_msg_done(q, &msg));
	}
	EXPECT_EQ(-ETIMEDOUT, err);
	EXPECT_EQ(100, seen);
	mpq_manager_queue_free(q);
	mpq_manager_free(p);
	mpq_manager_shutdown(m);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	system(cmd);
}

/*
 * "Another machine": a network namespace joined to the manager's by a
 * veth pair, made inside a namespace of the test's own (the host's network
 * is not touched). Machine B takes a message and a lock, then the link is
 * cut: B's calls fail within its timeout (no hang), and on the manager's
 * side the message is delivered again and the lock goes to the next
 * acquirer with -EOWNERDEAD once B's leases end.
 */
static int sh(const char *fmt, ...)
{
	char cmd[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return system(cmd);
}

#define NS_ADDR "tcp://10.77.0.1:7391#mpq"

static int machine_b(int to_world, int from_world, const char *key)
{
	struct mpq_manager_queue_attr qa = { .lease_ns = 500 * MS };
	struct mpq_manager_queue *q;
	struct mpq_manager_lock *l;
	struct mpq_manager_msg msg;
	struct mpq_manager *m;
	char c;
	int64_t t0;
	int err;

	if (read(from_world, &c, 1) != 1)		/* link is up */
		return 10;
	if (mpq_manager_connect(&m, NS_ADDR, key, 1000 * MS))
		return 11;
	if (mpq_manager_queue(m, "jobs", &qa, &q) ||
	    mpq_manager_lock(m, "L", 0, 500 * MS, &l))
		return 12;
	if (mpq_manager_queue_get(q, &msg, 1000 * MS) ||
	    mpq_manager_lock_acquire(l, 1000 * MS))
		return 13;
	write(to_world, "g", 1);			/* got both */
	if (read(from_world, &c, 1) != 1)		/* link is cut */
		return 14;
	t0 = now_ns();
	err = mpq_manager_msg_renew(q, &msg);
	if (err != -ETIMEDOUT)
		return 15;
	/* bounded by the 1 s timeout, not hung */
	if (now_ns() - t0 > 3 * NSEC_PER_SEC)
		return 16;
	return 0;
}

TEST(a_machine_cut_off_loses_its_message_and_its_lock_when_its_leases_end)
{
	int to_world[2], from_world[2], status;
	pid_t world;

	if (getuid() != 0 || access("/usr/sbin/ip", X_OK) ||
	    access("/usr/bin/nsenter", X_OK))
		SKIP(return, "needs root, ip(8) and nsenter(1) for veth pairs");
	ASSERT_EQ(0, pipe(to_world));
	ASSERT_EQ(0, pipe(from_world));
	world = fork();
	if (world == 0) {
		struct mpq_manager_attr a = { .address = "tcp://10.77.0.1:7391" };
		struct mpq_manager_queue_attr qa = { .lease_ns = 500 * MS };
		struct mpq_manager_queue *q;
		struct mpq_manager_lock *l;
		struct mpq_manager_msg msg;
		struct mpq_manager *m;
		char key[64], c;
		pid_t b;
		int rc = 0, err;

		if (unshare(CLONE_NEWNET) || sh("ip link set lo up"))
			_exit(2);
		if (sh("ip link add va type veth peer name vb") ||
		    sh("ip addr add 10.77.0.1/24 dev va && ip link set va up"))
			_exit(3);
		if (mpq_manager_start(&m, &a))
			_exit(4);
		snprintf(key, sizeof(key), "%s", mpq_manager_authkey(m));
		b = fork();
		if (b == 0) {
			close(to_world[0]);
			close(from_world[1]);
			if (unshare(CLONE_NEWNET))
				_exit(9);
			_exit(machine_b(to_world[1], from_world[0], key));
		}
		/* If B dies early, the reads below see EOF, not a hang. */
		close(to_world[1]);
		close(from_world[0]);
		sleep_ms(100);	/* b is in its namespace */
		if (sh("ip link set vb netns %d", b) ||
		    sh("nsenter --net=/proc/%d/ns/net sh -c 'ip link set lo up; "
		       "ip addr add 10.77.0.2/24 dev vb; ip link set vb up'", b))
			rc = 5;
		if (mpq_manager_queue(m, "jobs", &qa, &q) ||
		    mpq_manager_queue_put(q, "job", 3, 0) ||
		    mpq_manager_lock(m, "L", 0, 500 * MS, &l))
			rc = 6;
		write(from_world[1], "u", 1);
		if (read(to_world[0], &c, 1) != 1)
			rc = 7;
		/* Cut the wire; B lives on, unreachable. */
		sh("ip link set va down");
		write(from_world[1], "c", 1);
		err = mpq_manager_queue_get(q, &msg, 5000 * MS);
		if (err || msg.deliveries != 2 || msg.len != 3)
			rc = rc ? rc : 20;
		if (mpq_manager_lock_acquire(l, 5000 * MS) != -EOWNERDEAD)
			rc = rc ? rc : 21;
		waitpid(b, &status, 0);
		if (!rc && (!WIFEXITED(status) || WEXITSTATUS(status)))
			rc = 100 + WEXITSTATUS(status);
		mpq_manager_shutdown(m);
		_exit(rc);
	}
	EXPECT_EQ(0, wait_child(world, 30000));
}

TEST_HARNESS_MAIN
