// SPDX-License-Identifier: MIT
/*
 * Reaching a manager: parse its address, connect and authenticate with
 * bounded time, run one command and turn every way it can fail into one
 * errno, and run the objects' Lua scripts by SHA.
 *
 * A connection belongs to one process. Each call compares getpid() with
 * the pid that made it; a forked child drops (closes its copy of) the
 * parent's socket without a byte on it and connects anew, so two processes
 * never interleave replies on one socket.
 *
 * Any transport failure (timeout, EOF, garbage) leaves hiredis's context
 * unusable, so it is dropped, and the next call connects again: that is
 * how a restarted server is reached with no extra code.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <poll.h>
#include <sys/socket.h>
#include <hiredis/sds.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "manager/manager.h"

/*
 * Link the distributed pool (net/pool/pool.c) wherever a manager is: its
 * constructor installs it into libmpq's Pool, also in a static link.
 */
extern const char mpq__net_pool_anchor;
static const char *const pool_anchor __attribute__((used)) =
	&mpq__net_pool_anchor;

int64_t mpq__mgr_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static struct timeval tv_of(int64_t ns)
{
	struct timeval tv = { ns / 1000000000LL, (ns % 1000000000LL) / 1000 };

	if (!tv.tv_sec && !tv.tv_usec)
		tv.tv_usec = 1;
	return tv;
}

/*
 * hiredis reports a failed connect or read as a string (strerror of the
 * errno it saw, which later calls may have overwritten): find the errno
 * whose text it is.
 */
static int errno_of(const char *errstr, int dflt)
{
	static const int known[] = {
		ECONNREFUSED, ENOENT, ETIMEDOUT, EHOSTUNREACH, ENETUNREACH,
		ECONNRESET, EPIPE, EACCES, EAGAIN, EADDRNOTAVAIL, ENOTSOCK,
	};
	size_t i;

	for (i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (strstr(errstr, strerror(known[i])))
			return known[i];
	if (strstr(errstr, "timed out"))
		return ETIMEDOUT;
	return dflt;
}

static int ctx_err(const redisContext *c)
{
	int e;

	switch (c->err) {
	case REDIS_ERR_EOF:
		return -ECONNRESET;
	case REDIS_ERR_PROTOCOL:
		return -EPROTO;
	case REDIS_ERR_OOM:
		return -ENOMEM;
	case REDIS_ERR_IO:
		e = errno_of(c->errstr, ECONNRESET);
		/* SO_RCVTIMEO ran out: the reply did not come in time. */
		if (e == EAGAIN)
			return -ETIMEDOUT;
		if (e == ENOENT)
			return -ECONNREFUSED;
		/* Writing to a peer that is gone. */
		if (e == EPIPE)
			return -ECONNRESET;
		return -e;
	default:
		return -EIO;
	}
}

/* An error reply from the server, by its code word. */
static int reply_err(const redisReply *r)
{
	static const struct { const char *code; int err; } map[] = {
		{ "WRONGPASS", -EACCES }, { "NOAUTH", -EACCES },
		{ "NOPERM", -EACCES }, { "WRONGTYPE", -EPROTOTYPE },
		{ "NOSCRIPT", -ENOEXEC }, { "OOM", -ENOMEM },
		{ "LOADING", -EAGAIN }, { "BUSY", -EBUSY },
	};
	size_t i, n;

	for (i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
		n = strlen(map[i].code);
		if (r->len >= n && !strncmp(r->str, map[i].code, n))
			return map[i].err;
	}
	if (r->str && strstr(r->str, "out of range"))
		return -ERANGE;
	/* A script's own failures are "MPQ <errno>". */
	if (r->len > 4 && !strncmp(r->str, "MPQ ", 4)) {
		long e = strtol(r->str + 4, NULL, 10);

		if (e > 0 && e < 4096)
			return -(int)e;
	}
	return -EREMOTEIO;
}

/*
 * An error reply, freed, as its errno. Through sentinels, READONLY means
 * the server we reach was the primary and is a replica now (a failover):
 * drop it; the next call asks the sentinels for the new one.
 */
static int error_reply(struct mpq_manager *m, redisReply *r)
{
	int err = reply_err(r);

	if (m->master && r->len >= 8 && !strncmp(r->str, "READONLY", 8)) {
		mpq__mgr_conn_drop(m);
		err = -ECONNRESET;
	}
	freeReplyObject(r);
	return err;
}

int mpq__mgr_reply_err(const redisReply *r)
{
	return reply_err(r);
}

void mpq__mgr_conn_drop(struct mpq_manager *m)
{
	if (m->c)
		redisFree(m->c);	/* closes only this process's fd */
	m->c = NULL;
}

/*
 * The bound on each read(2) of a reply (SO_RCVTIMEO; sends keep the
 * manager's timeout, set at connect). A call's wanted bound moves by
 * microseconds from call to call (the time left of a wait, of a reply's
 * deadline), and hiredis's redisSetTimeout cost two setsockopt calls each
 * time: the socket's is changed only when it is shorter than asked, or
 * longer by MGR_TIMEOUT_SLACK or more, so that a read ends at most the
 * slack after its deadline and never before.
 */
#define MGR_TIMEOUT_SLACK	(10 * 1000000LL)

static int set_timeout(struct mpq_manager *m, int64_t ns)
{
	struct timeval tv;

	if (m->c_timeout_ns >= ns && m->c_timeout_ns - ns < MGR_TIMEOUT_SLACK)
		return 0;
	tv = tv_of(ns);
	if (setsockopt(m->c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)))
		return -EIO;
	m->c_timeout_ns = ns;
	return 0;
}

/*
 * Send what hiredis formatted, with MSG_NOSIGNAL: hiredis itself would
 * write(2), and a peer that is gone would kill the caller with SIGPIPE (a
 * library must not change the process's signal disposition or mask, and
 * masking around every call would cost three system calls).
 */
static int flush_out(redisContext *c, int64_t deadline)
{
	size_t len = sdslen(c->obuf), off = 0;
	ssize_t n;

	while (off < len) {
		/* A peer that reads a little at a time: the same deadline. */
		if (off && mpq__mgr_now() > deadline)
			return -ETIMEDOUT;
		n = send(c->fd, c->obuf + off, len - off, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return -ETIMEDOUT;
			return errno == EPIPE ? -ECONNRESET : -errno;
		}
		off += n;
	}
	sdsclear(c->obuf);
	return 0;
}

/*
 * A reply, read by hand rather than by redisGetReply: SO_RCVTIMEO bounds
 * each read(2), so a peer that trickles a byte now and then would hold
 * redisGetReply forever; here the whole reply must come by the deadline.
 * A reply bigger than Redis can send (its strings stop at 512 MiB) is a
 * peer that is not Redis: -EPROTO before it eats the memory.
 */
#define MGR_MAX_REPLY	((size_t)600 << 20)

static int read_reply(struct mpq_manager *m, redisReply **out,
		      int64_t deadline)
{
	void *r = NULL;
	int64_t left;

	for (;;) {
		if (redisGetReplyFromReader(m->c, &r) != REDIS_OK)
			return ctx_err(m->c);
		if (r) {
			*out = r;
			return 0;
		}
		if (m->c->reader->len > MGR_MAX_REPLY)
			return -EPROTO;
		left = deadline - mpq__mgr_now();
		if (left <= 0)
			return -ETIMEDOUT;
		if (set_timeout(m, left))
			return -EIO;
		if (redisBufferRead(m->c) != REDIS_OK)
			return ctx_err(m->c);
	}
}

/*
 * One exchange on the open connection: n commands in one write (a wait
 * and the step after it, a MULTI ... EXEC), so that they cost one round
 * trip; the last one's reply is returned, the others' are only checked
 * for an error (the last's error wins, then the first other's). Drops
 * the connection on a transport failure.
 */
static int exchange_n(struct mpq_manager *m, redisReply **out,
		      unsigned int n, const struct mgr_cmd *cmds,
		      int64_t block_ns, unsigned int keep)
{
	int64_t deadline = mpq__mgr_now() + m->timeout_ns + block_ns;
	redisReply *r = NULL, *kept = NULL;
	int err, first_err = 0;
	unsigned int i;

	*out = NULL;
	err = set_timeout(m, m->timeout_ns + block_ns);
	if (err)
		return err;
	for (i = 0; i < n; i++)
		if (redisAppendCommandArgv(m->c, cmds[i].argc, cmds[i].argv,
					   cmds[i].lens) != REDIS_OK) {
			mpq__mgr_conn_drop(m);
			return -ENOMEM;
		}
	err = flush_out(m->c, deadline);
	for (i = 0; !err && i < n; i++) {
		err = read_reply(m, &r, deadline);
		if (err)
			break;
		if (i == keep) {
			kept = r;
			continue;
		}
		if (r->type == REDIS_REPLY_ERROR && !first_err)
			first_err = reply_err(r);
		freeReplyObject(r);
	}
	if (err) {
		if (kept)
			freeReplyObject(kept);
		mpq__mgr_conn_drop(m);
		return err;
	}
	if (kept->type == REDIS_REPLY_ERROR)
		return error_reply(m, kept);
	if (first_err) {
		freeReplyObject(kept);
		return first_err;
	}
	*out = kept;
	return 0;
}

static int exchange(struct mpq_manager *m, redisReply **out, int argc,
		    const char **argv, const size_t *lens, int64_t block_ns)
{
	struct mgr_cmd c = { argc, argv, lens };

	return exchange_n(m, out, 1, &c, block_ns, 0);
}

/*
 * Ask one sentinel where the master named m->master is (SENTINEL
 * get-master-addr-by-name), within deadline; on success m->host and
 * m->port name it. -EADDRNOTAVAIL: the sentinel knows no such master.
 */
static int sentinel_ask(struct mpq_manager *m, int i, int64_t deadline)
{
	const char *argv[3] = { "SENTINEL", "get-master-addr-by-name",
				m->master };
	int64_t left = deadline - mpq__mgr_now();
	redisContext *c;
	void *rv = NULL;
	redisReply *r;
	char *end, *host;
	long port;
	int err;

	if (left <= 0)
		return -ETIMEDOUT;
	c = redisConnectWithTimeout(m->sent_host[i], m->sent_port[i],
				    tv_of(left));
	if (!c)
		return -ENOMEM;
	if (c->err) {
		err = ctx_err(c);
		redisFree(c);
		return err == -ECONNRESET ? -ECONNREFUSED : err;
	}
	fcntl(c->fd, F_SETFD, FD_CLOEXEC);
	err = -ENOMEM;
	if (redisSetTimeout(c, tv_of(left)) != REDIS_OK ||
	    redisAppendCommandArgv(c, 3, argv, NULL) != REDIS_OK)
		goto out;
	err = flush_out(c, deadline);
	while (!err) {
		if (redisGetReplyFromReader(c, &rv) != REDIS_OK) {
			err = ctx_err(c);
			break;
		}
		if (rv)
			break;
		if (c->reader->len > 65536)
			err = -EPROTO;
		else if (mpq__mgr_now() > deadline)
			err = -ETIMEDOUT;
		else if (redisBufferRead(c) != REDIS_OK)
			err = ctx_err(c);
	}
	if (err)
		goto out;
	r = rv;
	if (r->type == REDIS_REPLY_NIL) {
		err = -EADDRNOTAVAIL;
	} else if (r->type == REDIS_REPLY_ERROR) {
		err = reply_err(r);
	} else if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
		   r->element[0]->type != REDIS_REPLY_STRING ||
		   r->element[1]->type != REDIS_REPLY_STRING) {
		err = -EPROTO;
	} else {
		errno = 0;
		port = strtol(r->element[1]->str, &end, 10);
		host = strdup(r->element[0]->str);
		err = !host ? -ENOMEM : (errno || *end || port <= 0 ||
					 port > 65535) ? -EPROTO : 0;
		if (err) {
			free(host);
		} else {
			free(m->host);
			m->host = host;
			m->port = (int)port;
		}
	}
	freeReplyObject(r);
out:
	redisFree(c);
	return err;
}

/*
 * The primary's address from the first sentinel that knows it, each
 * asked in turn with its share of the time left; the one that answered
 * is asked first next time (as Redis's guidelines for sentinel clients
 * say).
 */
static int sentinel_resolve(struct mpq_manager *m)
{
	int64_t deadline = mpq__mgr_now() + m->timeout_ns, left;
	int i, err = -ECONNREFUSED, e;

	for (i = 0; i < m->nsent; i++) {
		left = deadline - mpq__mgr_now();
		e = sentinel_ask(m, i, mpq__mgr_now() + left / (m->nsent - i));
		if (!e) {
			if (i) {
				char *h = m->sent_host[i];
				int p = m->sent_port[i];

				m->sent_host[i] = m->sent_host[0];
				m->sent_port[i] = m->sent_port[0];
				m->sent_host[0] = h;
				m->sent_port[0] = p;
			}
			return 0;
		}
		/* A sentinel that knows no such master says the most. */
		if (err != -EADDRNOTAVAIL)
			err = e;
	}
	return err;
}

/* Is the server on m->c the primary? ROLE says; a user not let run it
 * (an ACL) is taken at its word: writes to a replica fail READONLY. */
static int sentinel_check_role(struct mpq_manager *m)
{
	const char *argv[1] = { "ROLE" };
	redisReply *r;
	int err = exchange(m, &r, 1, argv, NULL, 0);

	if (err == -EACCES)
		return 0;
	if (err)
		return err;
	err = r->type == REDIS_REPLY_ARRAY && r->elements &&
	      r->element[0]->type == REDIS_REPLY_STRING &&
	      !strcmp(r->element[0]->str, "master") ? 0 : -ECONNREFUSED;
	freeReplyObject(r);
	return err;
}

int mpq__mgr_conn_open(struct mpq_manager *m)
{
	struct timeval tv = tv_of(m->timeout_ns);
	const char *argv[3];
	redisReply *r;
	int argc = 0, err;

	mpq__mgr_conn_drop(m);
	m->pid = getpid();
	if (m->master) {
		err = sentinel_resolve(m);
		if (err)
			return err;
	}
	m->c = m->path ? redisConnectUnixWithTimeout(m->path, tv) :
			 redisConnectWithTimeout(m->host, m->port, tv);
	if (!m->c)
		return -ENOMEM;
	if (m->c->err) {
		err = ctx_err(m->c);
		mpq__mgr_conn_drop(m);
		return err == -ECONNRESET ? -ECONNREFUSED : err;
	}
	/* exec'd children must not inherit the socket. */
	fcntl(m->c->fd, F_SETFD, FD_CLOEXEC);
	if (redisSetTimeout(m->c, tv)) {
		mpq__mgr_conn_drop(m);
		return -EIO;
	}
	m->c_timeout_ns = m->timeout_ns;
	if (m->named_user || m->authkey[0]) {
		argv[argc++] = "AUTH";
		if (m->named_user)
			argv[argc++] = m->ns;
		argv[argc++] = m->authkey;
	} else {
		/* No AUTH to send: PING proves it is Redis and lets us in. */
		argv[argc++] = "PING";
	}
	err = exchange(m, &r, argc, argv, NULL, 0);
	if (err) {
		mpq__mgr_conn_drop(m);
		return err;
	}
	/* Anything but +OK (+PONG) is not a Redis that accepted us. */
	err = (r->type == REDIS_REPLY_STATUS &&
	       !strcmp(r->str, argc == 1 ? "PONG" : "OK")) ? 0 : -EPROTO;
	freeReplyObject(r);
	/* Sentinels may still name a primary that has just been demoted. */
	if (!err && m->master)
		err = sentinel_check_role(m);
	if (err)
		mpq__mgr_conn_drop(m);
	else
		m->conns++;
	return err;
}

static int conn_ready(struct mpq_manager *m)
{
	struct pollfd p;

	if (m->c && m->pid == getpid()) {
		/*
		 * Between calls nothing is due from the server: a readable or
		 * hung-up socket means it closed (it restarted, or timed us
		 * out), so connect again before sending, not after a request
		 * that may or may not have been run.
		 */
		p.fd = m->c->fd;
		p.events = POLLIN | POLLRDHUP;
		p.revents = 0;
		if (poll(&p, 1, 0) == 0)
			return 0;
	}
	if (m->c && m->pid != getpid()) {
		/* A forked child: its copy of the parent's socket is closed,
		 * never written to. */
		mpq__mgr_conn_drop(m);
	}
	return mpq__mgr_conn_open(m);
}

int mpq__mgr_pipeline_at(struct mpq_manager *m, redisReply **out,
			 unsigned int n, const struct mgr_cmd *cmds,
			 int64_t block_ns, unsigned int keep)
{
	int64_t deadline = mpq__mgr_now() + m->timeout_ns;
	struct timespec pause = { 0, 10 * 1000000L };
	int err;

	*out = NULL;
	if (keep >= n)
		return -EINVAL;
	for (;;) {
		err = conn_ready(m);
		*out = NULL;
		if (err)
			return err;
		err = exchange_n(m, out, n, cmds, block_ns, keep);
		/* A server still loading its AOF has run nothing: wait
		 * (within the timeout) and send again. */
		if (err != -EAGAIN || mpq__mgr_now() > deadline)
			return err;
		nanosleep(&pause, NULL);
	}
}

int mpq__mgr_pipeline(struct mpq_manager *m, redisReply **out,
		      unsigned int n, const struct mgr_cmd *cmds,
		      int64_t block_ns)
{
	return mpq__mgr_pipeline_at(m, out, n, cmds, block_ns, n ? n - 1 : 0);
}

static int command2(struct mpq_manager *m, redisReply **out, int pre_argc,
		    const char **pre_argv, int argc, const char **argv,
		    const size_t *lens, int64_t block_ns)
{
	struct mgr_cmd c[2] = {
		{ pre_argc, pre_argv, NULL }, { argc, argv, lens },
	};

	if (!pre_argc)
		return mpq__mgr_pipeline(m, out, 1, c + 1, block_ns);
	return mpq__mgr_pipeline(m, out, 2, c, block_ns);
}

int mpq__mgr_command(struct mpq_manager *m, redisReply **out, int argc,
		     const char **argv, const size_t *lens, int64_t block_ns)
{
	return command2(m, out, 0, NULL, argc, argv, lens, block_ns);
}

/*
 * Commands sent now, replies read later (mpq__mgr_recv), so that a caller
 * can poll the socket beside its own fds while the server holds a
 * blocking command. Nothing else may use m until every reply is read.
 */
int mpq__mgr_send(struct mpq_manager *m, unsigned int n,
		  const struct mgr_cmd *cmds)
{
	unsigned int i;
	int err;

	err = conn_ready(m);
	if (!err)
		err = set_timeout(m, m->timeout_ns);
	if (err)
		return err;
	for (i = 0; i < n; i++) {
		if (redisAppendCommandArgv(m->c, cmds[i].argc, cmds[i].argv,
					   cmds[i].lens) != REDIS_OK) {
			mpq__mgr_conn_drop(m);
			return -ENOMEM;
		}
	}
	err = flush_out(m->c, mpq__mgr_now() + m->timeout_ns);
	if (err)
		mpq__mgr_conn_drop(m);
	return err;
}

/* The next reply of what mpq__mgr_send sent, by deadline; an error reply
 * is its errno. A transport failure drops the connection. */
int mpq__mgr_recv(struct mpq_manager *m, redisReply **out, int64_t deadline)
{
	redisReply *r = NULL;
	int err;

	*out = NULL;
	if (!m->c)
		return -ECONNRESET;
	err = read_reply(m, &r, deadline);
	if (err) {
		mpq__mgr_conn_drop(m);
		return err;
	}
	if (r->type == REDIS_REPLY_ERROR)
		return error_reply(m, r);
	*out = r;
	return 0;
}

/* The socket, to poll for a reply mpq__mgr_send asked for; -1: none. */
int mpq__mgr_fd(struct mpq_manager *m)
{
	return m->c ? m->c->fd : -1;
}

/*
 * 1 if a reply (or part of one) is here to read without waiting: in
 * hiredis's buffer (read with an earlier one) or on the socket.
 */
int mpq__mgr_pending(struct mpq_manager *m)
{
	struct pollfd p;

	if (!m->c)
		return 0;
	if (m->c->reader->pos < m->c->reader->len)
		return 1;
	p.fd = m->c->fd;
	p.events = POLLIN;
	p.revents = 0;
	return poll(&p, 1, 0) > 0;
}

static void sha1_hex(const char *src, char *hex)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0, i;

	EVP_Digest(src, strlen(src), md, &n, EVP_sha1(), NULL);
	for (i = 0; i < n && i < 20; i++)
		sprintf(hex + 2 * i, "%02x", md[i]);
	hex[40] = 0;
}

/*
 * argv of "BLPOP key secs" for a wait of wait_ns, made at least 1 ms (BLPOP
 * with 0 would block for ever) and at most MGR_MAX_BLOCK_NS; returns the
 * wait it asks for.
 */
static int64_t blpop_argv(const char *argv[3], char secs[32],
			  const char *key, int64_t wait_ns)
{
	if (wait_ns < 1000000)
		wait_ns = 1000000;
	if (wait_ns > MGR_MAX_BLOCK_NS)
		wait_ns = MGR_MAX_BLOCK_NS;
	snprintf(secs, 32, "%.3f", wait_ns / 1e9);
	argv[0] = "BLPOP";
	argv[1] = key;
	argv[2] = secs;
	return wait_ns;
}

/*
 * The script s, after the command pre (pre_argc words; 0: none) that may
 * block for up to block_ns, both in one write: one round trip.
 */
static int eval_pre(struct mpq_manager *m, int pre_argc, const char **pre,
		    int64_t block_ns, struct mgr_script *s, redisReply **out,
		    int nkeys, const char **keys, int nargs, const char **args,
		    const size_t *alens)
{
	const char *stackv[40], **argv = stackv;
	size_t stackl[40], *lens = stackl;
	char nk[16];
	int argc = 3 + nkeys + nargs, i, err;

	if (!s->sha[0])
		sha1_hex(s->src, s->sha);
	if (argc > 40) {
		argv = malloc(argc * sizeof(*argv));
		lens = malloc(argc * sizeof(*lens));
		if (!argv || !lens) {
			err = -ENOMEM;
			goto out;
		}
	}
	snprintf(nk, sizeof(nk), "%d", nkeys);
	argv[0] = "EVALSHA";
	argv[1] = s->sha;
	argv[2] = nk;
	for (i = 0; i < 3; i++)
		lens[i] = strlen(argv[i]);
	for (i = 0; i < nkeys; i++) {
		argv[3 + i] = keys[i];
		lens[3 + i] = strlen(keys[i]);
	}
	for (i = 0; i < nargs; i++) {
		argv[3 + nkeys + i] = args[i];
		lens[3 + nkeys + i] = alens ? alens[i] : strlen(args[i]);
	}
	err = command2(m, out, pre_argc, pre, argc, argv, lens,
		       pre_argc ? block_ns : 0);
	if (err == -ENOEXEC) {
		/* Not cached on this server yet (or it restarted): EVAL
		 * sends the source once and caches it. */
		argv[0] = "EVAL";
		argv[1] = s->src;
		lens[0] = 4;
		lens[1] = strlen(s->src);
		err = mpq__mgr_command(m, out, argc, argv, lens, 0);
	}
out:
	if (argv != stackv) {
		free(argv);
		free(lens);
	}
	return err;
}

int64_t mpq__mgr_block_secs(char secs[32], int64_t wait_ns)
{
	const char *argv[3];

	return blpop_argv(argv, secs, "", wait_ns);
}

int mpq__mgr_eval_after(struct mpq_manager *m, const char *wait_key,
			int64_t wait_ns, struct mgr_script *s,
			redisReply **out, int nkeys, const char **keys,
			int nargs, const char **args, const size_t *alens)
{
	const char *pre[3];
	char secs[32];

	if (!wait_key)
		return eval_pre(m, 0, NULL, 0, s, out, nkeys, keys, nargs,
				args, alens);
	wait_ns = blpop_argv(pre, secs, wait_key, wait_ns);
	return eval_pre(m, 3, pre, wait_ns, s, out, nkeys, keys, nargs, args,
			alens);
}

int mpq__mgr_eval_after_move(struct mpq_manager *m, const char *src,
			     const char *dst, int64_t wait_ns,
			     struct mgr_script *s, redisReply **out, int nkeys,
			     const char **keys, int nargs, const char **args,
			     const size_t *alens)
{
	const char *pre[6];
	char secs[32];

	/* The same bounds as a BLPOP's (0 would block for ever). */
	wait_ns = blpop_argv(pre, secs, src, wait_ns);
	pre[0] = "BLMOVE";
	pre[2] = dst;
	pre[3] = "LEFT";
	pre[4] = "RIGHT";
	pre[5] = secs;
	return eval_pre(m, 6, pre, wait_ns, s, out, nkeys, keys, nargs, args,
			alens);
}

int mpq__mgr_eval(struct mpq_manager *m, struct mgr_script *s, redisReply **out,
		  int nkeys, const char **keys, int nargs, const char **args,
		  const size_t *alens)
{
	return mpq__mgr_eval_after(m, NULL, 0, s, out, nkeys, keys, nargs,
				   args, alens);
}

int mpq__mgr_eval_int(struct mpq_manager *m, struct mgr_script *s,
		      long long *v, int nkeys, const char **keys, int nargs,
		      const char **args, const size_t *alens)
{
	redisReply *r;
	int err = mpq__mgr_eval(m, s, &r, nkeys, keys, nargs, args, alens);

	if (err)
		return err;
	err = mpq__mgr_reply_int(r, v);
	freeReplyObject(r);
	return err;
}

int mpq__mgr_eval_bulk(struct mpq_manager *m, struct mgr_script *s,
		       void *buf, size_t *len, int nkeys, const char **keys,
		       int nargs, const char **args, const size_t *alens)
{
	redisReply *r;
	int err = mpq__mgr_eval(m, s, &r, nkeys, keys, nargs, args, alens);

	if (err)
		return err;
	err = mpq__mgr_copy_out(r, buf, len);
	freeReplyObject(r);
	return err;
}

int mpq__mgr_command_chunked(struct mpq_manager *m, const char *verb,
			     const char *key, const struct iovec *const *cols,
			     unsigned int width, unsigned int n)
{
	unsigned int done = 0, chunk, i, j;
	const char **argv;
	size_t *lens;
	redisReply *r;
	int err = 0;

	argv = malloc((2 + width * 512) * sizeof(*argv));
	lens = malloc((2 + width * 512) * sizeof(*lens));
	if (!argv || !lens) {
		err = -ENOMEM;
		goto out;
	}
	argv[0] = verb;
	lens[0] = strlen(verb);
	argv[1] = key;
	lens[1] = strlen(key);
	/* One command per 512 items: one round trip each, and no reply or
	 * request so big that it blocks the server for long. */
	while (done < n) {
		chunk = n - done < 512 ? n - done : 512;
		for (i = 0; i < chunk; i++)
			for (j = 0; j < width; j++) {
				const struct iovec *v = &cols[j][done + i];

				argv[2 + width * i + j] = v->iov_base ?
					v->iov_base : "";
				lens[2 + width * i + j] = v->iov_len;
			}
		err = mpq__mgr_command(m, &r, 2 + width * chunk, argv, lens, 0);
		if (err)
			break;
		freeReplyObject(r);
		done += chunk;
	}
out:
	free(argv);
	free(lens);
	return err;
}

int mpq__mgr_wait(struct mpq_manager *m, const char *key, int64_t wait_ns)
{
	const char *argv[3];
	redisReply *r;
	char secs[32];
	int err;

	wait_ns = blpop_argv(argv, secs, key, wait_ns);
	err = mpq__mgr_command(m, &r, 3, argv, NULL, wait_ns);
	if (!err)
		freeReplyObject(r);
	return err;
}

char *mpq__mgr_key(struct mpq_manager *m, char type, const char *name,
	       const char *suffix)
{
	char *k;

	if (asprintf(&k, "mpq:%s:%c:%s%s", m->ns, type, name,
		     suffix ? suffix : "") < 0)
		return NULL;
	return k;
}

const char *mpq__mgr_owner(struct mpq_manager *m)
{
	unsigned char rnd[8];
	char host[64] = "?";
	size_t i;

	if (m->owner[0] && m->owner_pid == getpid())
		return m->owner;
	m->owner_pid = getpid();
	gethostname(host, sizeof(host) - 1);
	host[sizeof(host) - 1] = 0;
	if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
		memset(rnd, 0, sizeof(rnd));
	i = snprintf(m->owner, sizeof(m->owner), "%.40s:%d:", host,
		     (int)getpid());
	for (size_t j = 0; j < sizeof(rnd) && i + 3 < sizeof(m->owner); j++)
		i += snprintf(m->owner + i, sizeof(m->owner) - i, "%02x",
			      rnd[j]);
	return m->owner;
}

int mpq__mgr_reply_int(const redisReply *r, long long *v)
{
	if (!r || r->type != REDIS_REPLY_INTEGER)
		return -EPROTO;
	*v = r->integer;
	return 0;
}

int mpq__mgr_name_ok(const char *name)
{
	return name && name[0] && strlen(name) <= 200;
}

void *mpq__mgr_obj_new(struct mpq_manager *m, char type, const char *name,
		       const char *const *sfx, unsigned int nkeys,
		       size_t size, int *err)
{
	struct mgr_obj *o;
	unsigned int i;

	*err = -EINVAL;
	if (!m || !mpq__mgr_name_ok(name) || !nkeys || nkeys > MGR_MAX_KEYS ||
	    size < sizeof(*o))
		return NULL;
	*err = -ENOMEM;
	o = calloc(1, size);
	if (!o)
		return NULL;
	o->m = m;
	o->nkeys = nkeys;
	for (i = 0; i < nkeys; i++) {
		o->keys[i] = mpq__mgr_key(m, type, name, sfx ? sfx[i] : NULL);
		if (!o->keys[i]) {
			mpq__mgr_obj_free(o);
			return NULL;
		}
	}
	*err = 0;
	return o;
}

void mpq__mgr_obj_free(void *obj)
{
	struct mgr_obj *o = obj;
	unsigned int i;

	if (!o)
		return;
	for (i = 0; i < o->nkeys; i++)
		free(o->keys[i]);
	free(o);
}

int mpq__mgr_copy_out(const redisReply *r, void *buf, size_t *len)
{
	if (!len)
		return -EINVAL;
	if (r->type == REDIS_REPLY_NIL)
		return -ENOENT;
	if (r->type != REDIS_REPLY_STRING)
		return -EPROTO;
	if (r->len > *len) {
		*len = r->len;
		return -EMSGSIZE;
	}
	if (r->len)
		memcpy(buf, r->str, r->len);
	*len = r->len;
	return 0;
}

static int ns_ok(const char *ns)
{
	size_t i, n = strlen(ns);

	if (!n || n > 64)
		return 0;
	for (i = 0; i < n; i++)
		if (!(ns[i] >= 'a' && ns[i] <= 'z') &&
		    !(ns[i] >= 'A' && ns[i] <= 'Z') &&
		    !(ns[i] >= '0' && ns[i] <= '9') && !strchr("_.-", ns[i]))
			return 0;
	return 1;
}

/* "host:port" or "[v6]:port" in [p, end): *host malloc'd. */
static int parse_hostport(const char *p, const char *ep_end, char **host,
			  int *portp)
{
	const char *colon;
	char *end;
	long port;

	if (*p == '[') {
		const char *rb = memchr(p, ']', ep_end - p);

		if (!rb || rb[1] != ':')
			return -EINVAL;
		*host = strndup(p + 1, rb - p - 1);
		colon = rb + 1;
	} else {
		colon = memrchr(p, ':', ep_end - p);
		if (!colon || colon == p)
			return -EINVAL;
		*host = strndup(p, colon - p);
	}
	if (!*host)
		return -ENOMEM;
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if (errno || end != ep_end || port <= 0 || port > 65535)
		return -EINVAL;
	*portp = port;
	return 0;
}

/*
 * "sentinel://H:P[,H:P...]/MASTER": the sentinels to ask for the primary
 * of MASTER (1 to 16 of them; MASTER as the sentinels' config names it).
 */
static int parse_sentinels(struct mpq_manager *m, const char *p,
			   const char *ep_end)
{
	const char *slash = memchr(p, '/', ep_end - p), *q, *comma;
	size_t i, n = 1;
	int err;

	if (!slash || slash == p || slash + 1 >= ep_end ||
	    ep_end - slash - 1 > 200)
		return -EINVAL;
	for (q = slash + 1; q < ep_end; q++)
		if (!(*q >= 'a' && *q <= 'z') && !(*q >= 'A' && *q <= 'Z') &&
		    !(*q >= '0' && *q <= '9') && !strchr("_.-", *q))
			return -EINVAL;
	for (q = p; q < slash; q++)
		n += *q == ',';
	if (n > 16)
		return -EINVAL;
	m->master = strndup(slash + 1, ep_end - slash - 1);
	m->sent_host = calloc(n, sizeof(*m->sent_host));
	m->sent_port = calloc(n, sizeof(*m->sent_port));
	if (!m->master || !m->sent_host || !m->sent_port)
		return -ENOMEM;
	for (i = 0, q = p; i < n; i++, q = comma + 1) {
		comma = memchr(q, ',', slash - q);
		if (!comma)
			comma = slash;
		/* Counted before the parse: a failure frees what is there. */
		m->nsent = (int)i + 1;
		err = parse_hostport(q, comma, &m->sent_host[i],
				     &m->sent_port[i]);
		if (err)
			return err;
	}
	return 0;
}

/*
 * "unix:/path/redis.sock#ns", "tcp://host:port#ns" ("[v6]:port" too) or
 * "sentinel://host:port,.../master#ns" (the primary that Redis Sentinel
 * names, asked at every connect). Without "#ns" the namespace is "mpq"
 * and AUTH names no user (a Redis with requirepass, or none when the
 * authkey is empty).
 */
static int parse_address(struct mpq_manager *m, const char *url)
{
	const char *hash = strchr(url, '#'), *ep_end, *p;

	ep_end = hash ? hash : url + strlen(url);
	m->named_user = !!hash;
	m->ns = strdup(hash ? hash + 1 : "mpq");
	if (!m->ns)
		return -ENOMEM;
	if (!ns_ok(m->ns))
		return -EINVAL;
	if (!strncmp(url, "unix:", 5)) {
		p = url + 5;
		while (p[0] == '/' && p[1] == '/')
			p++;
		if (*p != '/' || ep_end - p >= 108)
			return -EINVAL;
		m->path = strndup(p, ep_end - p);
		return m->path ? 0 : -ENOMEM;
	}
	if (!strncmp(url, "sentinel://", 11))
		return parse_sentinels(m, url + 11, ep_end);
	if (strncmp(url, "tcp://", 6))
		return -EINVAL;
	p = url + 6;
	return parse_hostport(p, ep_end, &m->host, &m->port);
}

void mpq__manager_free_fields(struct mpq_manager *m);
void mpq__manager_free_fields(struct mpq_manager *m)
{
	mpq__mgr_conn_drop(m);
	free(m->address);
	if (m->authkey)
		explicit_bzero(m->authkey, strlen(m->authkey));
	free(m->authkey);
	free(m->ns);
	free(m->path);
	free(m->host);
	for (int i = 0; m->sent_host && i < m->nsent; i++)
		free(m->sent_host[i]);
	free(m->sent_host);
	free(m->sent_port);
	free(m->master);
	free(m->dir);
	if (m->conf)
		explicit_bzero(m->conf, strlen(m->conf));
	free(m->conf);
	free(m->server_bin);
}

int mpq__manager_init(struct mpq_manager *m, const char *url,
		      const char *authkey, int64_t timeout_ns);
int mpq__manager_init(struct mpq_manager *m, const char *url,
		      const char *authkey, int64_t timeout_ns)
{
	int err;

	m->pidfd = -1;
	m->timeout_ns = timeout_ns > 0 ? timeout_ns : 5 * 1000000000LL;
	m->address = strdup(url);
	m->authkey = strdup(authkey ? authkey : "");
	if (!m->address || !m->authkey)
		return -ENOMEM;
	err = parse_address(m, url);
	return err;
}

MPQ_NET_EXPORT int mpq_manager_connect(struct mpq_manager **out,
				       const char *url, const char *authkey,
				       int64_t timeout_ns)
{
	struct mpq_manager *m;
	int err;

	if (!out || !url)
		return -EINVAL;
	*out = NULL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	err = mpq__manager_init(m, url, authkey, timeout_ns);
	if (!err)
		err = mpq__mgr_conn_open(m);
	if (err) {
		mpq__manager_free_fields(m);
		free(m);
		return err;
	}
	*out = m;
	return 0;
}

MPQ_NET_EXPORT const char *mpq_manager_address(struct mpq_manager *m)
{
	return m ? m->address : NULL;
}

MPQ_NET_EXPORT int mpq_manager_ping(struct mpq_manager *m)
{
	const char *argv[] = { "PING" };
	redisReply *r;
	int err;

	if (!m)
		return -EINVAL;
	err = mpq__mgr_command(m, &r, 1, argv, NULL, 0);
	if (err)
		return err;
	err = (r->type == REDIS_REPLY_STATUS && !strcmp(r->str, "PONG")) ?
		0 : -EPROTO;
	freeReplyObject(r);
	return err;
}
