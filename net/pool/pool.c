// SPDX-License-Identifier: MIT
/*
 * The distributed pool: a Pool (lib/pool*.c) whose tasks go out through
 * a Manager to worker processes on any machine. libmpq has no network
 * code; it calls the operations below (lib/pool_remote.h), which this
 * file installs from a constructor.
 *
 * Keys, under "mpq:<ns>:" (all of them end with the pool, or expire
 * within ttl of its caller's death: the pool's thread refreshes their
 * expiry every ttl/3, and every key a worker writes to is written only
 * while the announcement names the pool, by one script):
 *   P:<name>            the announcement: "<id> <table> <ntasks>
 *                       <lease_ms> <maxdeliv>" (SET NX: one pool per name)
 *   q:<name>.<id>:...   a managed queue of task messages, leased
 *                       (net/manager/queue.c); a chunk of a job each
 *   l:<name>.<id>.dead  its dead letters: chunks whose leases ran out
 *                       max_deliveries times
 *   P:<name>.<id>.res   a list of result messages, and wake tokens
 *
 * A task message: struct dp_task, the task's name (padded to 8), then per
 * item a uint64_t length and the bytes (padded to 8). A result message:
 * struct dp_res, then per item a struct dp_rec and its bytes (padded):
 * status 0 a value, < 0 an error and its message. Both in the byte order
 * of the machines (workers and pool alike: x86_64 or any one order).
 *
 * Nothing lost: a worker holds its message's lease while it runs (a
 * thread renews it every lease/3), sends the results and marks the
 * message done in one script. A worker that dies or is cut off loses the
 * lease, and the message goes to the next worker; the pool applies each
 * item's result once (lib/pool_remote.c). A message delivered again is
 * run item by item with a result sent after each, in the other direction
 * each time, so that an item that kills its workers is soon the only one
 * of its chunk left without a result when the message is dead-lettered.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include "manager/manager.h"
#include "../../lib/pool_remote.h"

#define DP_TASK_MAGIC	0x5471706dU	/* "mpqT" */
#define DP_RES_MAGIC	0x5271706dU	/* "mpqR" */
#define DP_VERSION	1
#define DP_LEASE_NS	(10 * 1000000000LL)
#define DP_MAXDELIV	3
/* A worker with no pool to serve looks again after this. */
#define DP_IDLE_NS	(200 * 1000000LL)

struct dp_task {
	uint32_t magic;
	uint16_t version;
	uint16_t name_len;
	uint64_t table;		/* the pool's task table */
	uint64_t job;
	uint64_t first;
	uint32_t count;
	uint32_t __pad;
};

struct dp_res {
	uint32_t magic;
	uint32_t count;
	uint64_t job;
	uint64_t first;		/* the first item's index; items follow on */
	uint64_t step;		/* 1, or (uint64_t)-1: items go backwards */
};

struct dp_rec {
	int32_t status;
	uint32_t len;
};

static const struct mpq__pool_lib *dp_lib;

static size_t align8(size_t x)
{
	return (x + 7) & ~(size_t)7;
}

/* ---- a growing byte buffer -------------------------------------------- */

struct buf {
	unsigned char *p;
	size_t len, cap;
};

static int buf_add(struct buf *b, const void *data, size_t len)
{
	size_t need = align8(len);

	if (b->len + need > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		unsigned char *g;

		while (cap < b->len + need)
			cap *= 2;
		g = realloc(b->p, cap);
		if (!g)
			return -ENOMEM;
		b->p = g;
		b->cap = cap;
	}
	if (len)
		memcpy(b->p + b->len, data, len);
	memset(b->p + b->len + len, 0, need - len);
	b->len += need;
	return 0;
}

/* ---- scripts -------------------------------------------------------- */

/*
 * KEYS: announcement, res, then the queue's cnt, lease, msg, unf.
 * ARGV: pool id, ttl_ms, payload, then (done) message id, delivery.
 * Push the results only while the announcement names the pool (never
 * re-make the keys of a pool that ended), then mark the message done as
 * mpq_manager_msg_done does. -2: the pool is gone; -1: the lease had run
 * out (the results still count); 0: done.
 */
static struct mgr_script finish_lua = { .src =
	"local v = redis.call('GET', KEYS[1]) "
	"if not v or string.sub(v, 1, #ARGV[1] + 1) ~= ARGV[1] .. ' ' then "
	"return -2 end "
	"redis.call('RPUSH', KEYS[2], ARGV[3]) "
	"redis.call('PEXPIRE', KEYS[2], ARGV[2]) "
	"if not ARGV[4] then return 0 end "
	"local c = redis.call('HGET', KEYS[3], ARGV[4]) "
	"if c ~= ARGV[5] or not redis.call('ZSCORE', KEYS[4], ARGV[4]) then "
	"return -1 end "
	"redis.call('ZREM', KEYS[4], ARGV[4]) "
	"redis.call('HDEL', KEYS[5], ARGV[4]) "
	"redis.call('HDEL', KEYS[3], ARGV[4]) "
	"redis.call('DECR', KEYS[6]) return 0" };

/* KEYS: announcement, then every other key. ARGV: value, ttl_ms. */
static struct mgr_script keep_lua = { .src =
	"local v = redis.call('GET', KEYS[1]) "
	"if v and v ~= ARGV[1] then return -1 end "
	"redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) "
	"for i = 2, #KEYS do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end "
	"return 0" };

/* KEYS: announcement, then every other key. ARGV: value. */
static struct mgr_script drop_lua = { .src =
	"if redis.call('GET', KEYS[1]) == ARGV[1] then "
	"redis.call('DEL', KEYS[1]) end "
	"for i = 2, #KEYS do redis.call('DEL', KEYS[i]) end return 0" };

/* ---- the pool's side ------------------------------------------------ */

#define DP_NKEYS	13	/* announcement, res, 10 queue keys, dead */

static const char *const q_suffix[10] = {
	":cfg", ":ready", ":msg", ":cnt", ":lease", ":seq", ":unf",
	":take", ":wput", ":wjoin",
};

struct dp_pool {
	struct mpq_manager *m;		/* the pool thread's connection */
	struct mpq_manager *wm;		/* the waker's */
	char *url, *authkey, *name;
	char id[24];
	char announce[160];
	char ttl[24];
	int64_t ttl_ns, lease_ns;
	uint32_t maxdeliv;
	uint64_t table;
	char *keys[DP_NKEYS];
	struct mpq_manager_queue *q;
	struct mpq_manager_list *dead;
	int64_t next_keep;

	/* Messages built by send, put by the next collect in one call. */
	struct iovec *pend;
	size_t npend, pend_cap;

	int bell;
	int stop;
	pthread_t waker;
	int waker_made;

	int nlocal;
	struct mpq_process **local;
};

static void dp_local_worker_args(struct dp_pool *d, struct buf *b)
{
	buf_add(b, d->url, strlen(d->url) + 1);
}

static int local_worker_main(const void *arg, size_t len);

static int dp_start_local(struct dp_pool *d, int i)
{
	struct mpq_process_attr a = { .daemon = 1 };
	struct buf b = { 0 };
	char name[48];
	int ret;

	snprintf(name, sizeof(name), "RemotePoolWorker-%d", i + 1);
	a.name = name;
	a.start_method = MPQ_START_FORK;
	dp_local_worker_args(d, &b);
	buf_add(&b, d->authkey, strlen(d->authkey) + 1);
	buf_add(&b, d->name, strlen(d->name) + 1);
	if (!b.p)
		return -ENOMEM;
	ret = mpq_process_new(&d->local[i], local_worker_main, b.p, b.len, &a);
	free(b.p);
	if (ret)
		return ret;
	ret = mpq_process_start(d->local[i]);
	if (ret) {
		mpq_process_free(d->local[i]);
		d->local[i] = NULL;
	}
	return ret;
}

/* Push a wake token (with the list's expiry) so the pool's wait returns. */
static struct mgr_script wake_lua = { .src =
	"redis.call('RPUSH', KEYS[1], 'W') "
	"redis.call('PEXPIRE', KEYS[1], ARGV[1]) return 0" };

static void *dp_waker_main(void *arg)
{
	struct dp_pool *d = arg;
	struct pollfd pfd = { .fd = d->bell, .events = POLLIN };
	const char *args[1] = { d->ttl };
	eventfd_t v;
	redisReply *r;

	for (;;) {
		if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
			break;
		eventfd_read(d->bell, &v);
		if (__atomic_load_n(&d->stop, __ATOMIC_ACQUIRE))
			break;
		if (!mpq__mgr_eval(d->wm, &wake_lua, &r, 1,
				   (const char **)&d->keys[1], 1, args, NULL))
			freeReplyObject(r);
	}
	return NULL;
}

static void dp_stop_waker(struct dp_pool *d)
{
	if (!d->waker_made)
		return;
	__atomic_store_n(&d->stop, 1, __ATOMIC_RELEASE);
	eventfd_write(d->bell, 1);
	pthread_join(d->waker, NULL);
	d->waker_made = 0;
}

static void dp_free(struct dp_pool *d)
{
	size_t i;

	if (!d)
		return;
	dp_stop_waker(d);
	for (i = 0; d->local && i < (size_t)d->nlocal; i++) {
		if (!d->local[i])
			continue;
		mpq_process_terminate(d->local[i]);
		if (mpq_process_join(d->local[i], 1000000000LL) == -ETIMEDOUT) {
			mpq_process_kill(d->local[i]);
			mpq_process_join(d->local[i], -1);
		}
		mpq_process_free(d->local[i]);
	}
	free(d->local);
	for (i = 0; i < d->npend; i++)
		free(d->pend[i].iov_base);
	free(d->pend);
	mpq_manager_queue_free(d->q);
	mpq_manager_list_free(d->dead);
	for (i = 0; i < DP_NKEYS; i++)
		free(d->keys[i]);
	mpq_manager_free(d->m);
	mpq_manager_free(d->wm);
	free(d->url);
	free(d->authkey);
	free(d->name);
	free(d);
}

static int dp_keys(struct dp_pool *d, const char *qname)
{
	char sfx[64], dead[300];
	int i;

	d->keys[0] = mpq__mgr_key(d->m, 'P', d->name, NULL);
	snprintf(sfx, sizeof(sfx), ".%s.res", d->id);
	d->keys[1] = mpq__mgr_key(d->m, 'P', d->name, sfx);
	for (i = 0; i < 10; i++)
		d->keys[2 + i] = mpq__mgr_key(d->m, 'q', qname, q_suffix[i]);
	snprintf(dead, sizeof(dead), "%s.dead", qname);
	d->keys[12] = mpq__mgr_key(d->m, 'l', dead, NULL);
	for (i = 0; i < DP_NKEYS; i++)
		if (!d->keys[i])
			return -ENOMEM;
	return 0;
}

static int dp_open(const struct mpq_pool_remote *cfg, int nlocal,
		   uint64_t table, uint32_t ntasks, int bell, void **ctx)
{
	struct mpq_manager_queue_attr qa = { 0 };
	struct dp_pool *d;
	const char *args[3];
	unsigned char rnd[8];
	char qname[256];
	long long v;
	int ret, i;

	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->bell = bell;
	d->table = table;
	d->name = strdup(cfg->name ? cfg->name : "pool");
	d->url = strdup(mpq_manager_address(cfg->manager));
	d->authkey = strdup(mpq_manager_authkey(cfg->manager) ?
			    mpq_manager_authkey(cfg->manager) : "");
	ret = -ENOMEM;
	if (!d->name || !d->url || !d->authkey)
		goto fail;
	ret = -EINVAL;
	if (!mpq__mgr_name_ok(d->name) || strlen(d->name) > 100 ||
	    strchr(d->name, ' '))
		goto fail;
	d->lease_ns = cfg->lease_ns ? cfg->lease_ns : DP_LEASE_NS;
	d->maxdeliv = cfg->max_deliveries ? cfg->max_deliveries : DP_MAXDELIV;
	/* Keys outlive a dead caller by a little more than two leases. */
	d->ttl_ns = 2 * d->lease_ns + 1000000000LL;
	snprintf(d->ttl, sizeof(d->ttl), "%lld",
		 (long long)(d->ttl_ns / 1000000));
	/* Our own connections: a manager handle serves one thread. */
	ret = mpq_manager_connect(&d->m, d->url, d->authkey, 0);
	if (!ret)
		ret = mpq_manager_connect(&d->wm, d->url, d->authkey, 0);
	if (ret)
		goto fail;
	if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd)) {
		ret = -EIO;
		goto fail;
	}
	for (i = 0; i < 8; i++)
		snprintf(d->id + 2 * i, 3, "%02x", rnd[i]);
	snprintf(qname, sizeof(qname), "%s.%s", d->name, d->id);
	ret = dp_keys(d, qname);
	if (ret)
		goto fail;
	snprintf(d->announce, sizeof(d->announce), "%s %016" PRIx64 " %u %lld %u",
		 d->id, table, ntasks, (long long)(d->lease_ns + 999999) / 1000000,
		 d->maxdeliv);
	{
		const char *argv[6] = { "SET", d->keys[0], d->announce, "NX",
					"PX", d->ttl };
		redisReply *r;

		ret = mpq__mgr_command(d->m, &r, 6, argv, NULL, 0);
		if (ret)
			goto fail;
		ret = r->type == REDIS_REPLY_NIL ? -EBUSY : 0;
		freeReplyObject(r);
		if (ret)
			goto fail;
	}
	qa.lease_ns = d->lease_ns;
	qa.max_deliveries = d->maxdeliv;
	ret = mpq_manager_queue(d->m, qname, &qa, &d->q);
	if (!ret) {
		char dead[300];

		snprintf(dead, sizeof(dead), "%s.dead", qname);
		ret = mpq_manager_list(d->m, dead, &d->dead);
	}
	args[0] = d->announce;
	args[1] = d->ttl;
	if (!ret)
		ret = mpq__mgr_eval_int(d->m, &keep_lua, &v, DP_NKEYS,
					(const char **)d->keys, 2, args, NULL);
	if (ret)
		goto fail_drop;
	d->next_keep = mpq__mgr_now() + d->ttl_ns / 3;
	ret = -pthread_create(&d->waker, NULL, dp_waker_main, d);
	if (ret)
		goto fail_drop;
	d->waker_made = 1;
	d->nlocal = nlocal;
	d->local = calloc((size_t)(nlocal ? nlocal : 1), sizeof(*d->local));
	ret = d->local ? 0 : -ENOMEM;
	for (i = 0; !ret && i < nlocal; i++)
		ret = dp_start_local(d, i);
	if (ret)
		goto fail_drop;
	*ctx = d;
	return 0;
fail_drop:
	args[0] = d->announce;
	mpq__mgr_eval_int(d->m, &drop_lua, &v, DP_NKEYS,
			  (const char **)d->keys, 1, args, NULL);
fail:
	dp_free(d);
	return ret;
}

static int dp_send(void *ctx, uint64_t job, uint64_t first, uint32_t count,
		   const char *name, const struct iovec *args)
{
	struct dp_pool *d = ctx;
	struct dp_task h = {
		.magic = DP_TASK_MAGIC, .version = DP_VERSION,
		.name_len = (uint16_t)strlen(name), .job = job,
		.first = first, .count = count,
	};
	struct buf b = { 0 };
	uint64_t l;
	uint32_t i;
	int ret;

	h.table = d->table;
	ret = buf_add(&b, &h, sizeof(h));
	if (!ret)
		ret = buf_add(&b, name, h.name_len);
	for (i = 0; !ret && i < count; i++) {
		l = args[i].iov_len;
		ret = buf_add(&b, &l, sizeof(l));
		if (!ret)
			ret = buf_add(&b, args[i].iov_base, l);
	}
	if (!ret && d->npend == d->pend_cap) {
		size_t cap = d->pend_cap ? 2 * d->pend_cap : 64;
		struct iovec *g = realloc(d->pend, cap * sizeof(*g));

		if (g) {
			d->pend = g;
			d->pend_cap = cap;
		} else {
			ret = -ENOMEM;
		}
	}
	if (ret) {
		free(b.p);
		return ret;
	}
	d->pend[d->npend].iov_base = b.p;
	d->pend[d->npend++].iov_len = b.len;
	return 0;
}

/* Every item of a task message fails with code and a message. */
static void dp_fail_msg(const void *data, size_t len, int code,
			const char *fmt, mpq__pool_sink_fn sink, void *arg)
{
	struct dp_task h;
	char name[256], why[512];
	uint64_t i;

	if (len < sizeof(h))
		return;
	memcpy(&h, data, sizeof(h));
	if (h.magic != DP_TASK_MAGIC || len - sizeof(h) < h.name_len ||
	    h.name_len >= sizeof(name))
		return;
	memcpy(name, (const char *)data + sizeof(h), h.name_len);
	name[h.name_len] = 0;
	for (i = 0; i < h.count; i++) {
		snprintf(why, sizeof(why), fmt, name, (unsigned long long)(h.first + i));
		sink(arg, h.job, h.first + i, code, why, strlen(why));
	}
}

static void dp_flush(struct dp_pool *d, mpq__pool_sink_fn sink, void *arg)
{
	size_t done = 0, i;
	int ret = 0;

	while (done < d->npend) {
		unsigned int n = d->npend - done > 256 ? 256 :
				 (unsigned int)(d->npend - done);

		ret = mpq_manager_queue_put_many(d->q, d->pend + done, n, -1);
		if (ret < 0)
			break;
		done += (size_t)ret;
	}
	/*
	 * The manager away (restarting, say): keep the rest for the next
	 * collect. A put that was done after all only runs a chunk twice,
	 * and its results are applied once.
	 */
	if (ret == -ECONNRESET || ret == -ECONNREFUSED || ret == -ETIMEDOUT ||
	    ret == -ENOENT) {
		for (i = 0; i < done; i++)
			free(d->pend[i].iov_base);
		memmove(d->pend, d->pend + done,
			(d->npend - done) * sizeof(*d->pend));
		d->npend -= done;
		return;
	}
	for (i = 0; i < d->npend; i++) {
		if (i >= done)
			dp_fail_msg(d->pend[i].iov_base, d->pend[i].iov_len,
				    ret < 0 ? ret : -EIO, "task \"%s\" (item %llu):"
				    " the manager did not take it", sink, arg);
		free(d->pend[i].iov_base);
	}
	d->npend = 0;
}

/* A result message from a worker: each of its items to sink. */
static void dp_results(const unsigned char *p, size_t len,
		       mpq__pool_sink_fn sink, void *arg)
{
	struct dp_res h;
	struct dp_rec r;
	size_t off = sizeof(h);
	uint32_t i;

	if (len < sizeof(h))
		return;		/* a wake token, or garbage: nothing to apply */
	memcpy(&h, p, sizeof(h));
	if (h.magic != DP_RES_MAGIC)
		return;
	for (i = 0; i < h.count; i++) {
		if (len - off < sizeof(r))
			return;
		memcpy(&r, p + off, sizeof(r));
		off += sizeof(r);
		if (r.status > 0 || r.len > len - off)
			return;
		sink(arg, h.job, h.first + (uint64_t)i * h.step, r.status,
		     p + off, r.len);
		off += align8(r.len);
		if (off > len)
			return;
	}
}

/* Dead letters: their items fail (those with a result already stay). */
static void dp_dead(struct dp_pool *d, mpq__pool_sink_fn sink, void *arg)
{
	char fmt[256];
	size_t cap = 1 << 16, len;
	unsigned char *buf;
	int ret;

	snprintf(fmt, sizeof(fmt), "task \"%%s\" (item %%llu) was delivered "
		 "%u times and every worker that ran it died or lost its "
		 "lease: it is not tried again", d->maxdeliv);
	buf = malloc(cap);
	while (buf) {
		len = cap;
		ret = mpq_manager_list_pop(d->dead, 0, buf, &len);
		if (ret == -EMSGSIZE) {
			unsigned char *g = realloc(buf, len);

			if (!g)
				break;
			buf = g;
			cap = len;
			continue;
		}
		if (ret)
			break;
		dp_fail_msg(buf, len, -EOWNERDEAD, fmt, sink, arg);
	}
	free(buf);
}

/* Every ttl/3: expiry of every key, dead letters, local workers. */
static void dp_keep(struct dp_pool *d, mpq__pool_sink_fn sink, void *arg)
{
	const char *args[2] = { d->announce, d->ttl };
	long long v;
	int i;

	d->next_keep = mpq__mgr_now() + d->ttl_ns / 3;
	mpq__mgr_eval_int(d->m, &keep_lua, &v, DP_NKEYS,
			  (const char **)d->keys, 2, args, NULL);
	dp_dead(d, sink, arg);
	for (i = 0; i < d->nlocal; i++) {
		if (d->local[i] && mpq_process_is_alive(d->local[i]) == 1)
			continue;
		if (d->local[i]) {
			mpq_process_join(d->local[i], 0);
			mpq_process_free(d->local[i]);
			d->local[i] = NULL;
		}
		dp_start_local(d, i);
	}
}

static int dp_collect(void *ctx, mpq__pool_sink_fn sink, void *arg)
{
	struct dp_pool *d = ctx;
	redisReply *r = NULL;
	char secs[32];
	int64_t wait;
	size_t i;
	int ret;

	if (d->npend)
		dp_flush(d, sink, arg);
	if (mpq__mgr_now() >= d->next_keep)
		dp_keep(d, sink, arg);
	wait = d->next_keep - mpq__mgr_now();
	if (wait > 1000000000LL)
		wait = 1000000000LL;
	if (wait < 1000000)
		wait = 1000000;
	snprintf(secs, sizeof(secs), "%.3f", (double)wait / 1e9);
	/*
	 * Nothing is taken off the list before it is applied: a reply lost
	 * with the connection (a manager killed mid-reply) would lose the
	 * results for good, their tasks being done. So the wait moves the
	 * head to the tail (it stays in the list), the reads are LRANGE, and
	 * only what was applied is trimmed; a trim that is lost only means
	 * reading those results again, and they are applied once. The pool's
	 * thread is the list's only reader: pushes go to the tail.
	 */
	{
		const char *argv[6] = { "BLMOVE", d->keys[1], d->keys[1],
					"LEFT", "RIGHT", secs };

		ret = mpq__mgr_command(d->m, &r, 6, argv, NULL, wait);
	}
	if (ret) {
		/* The manager is away: try again after a pause, not a spin. */
		usleep(100000);
		return ret;
	}
	freeReplyObject(r);
	for (;;) {
		const char *argv[4] = { "LRANGE", d->keys[1], "0", "255" };
		char from[24];

		if (mpq__mgr_command(d->m, &r, 4, argv, NULL, 0))
			break;
		if (r->type != REDIS_REPLY_ARRAY || !r->elements) {
			freeReplyObject(r);
			break;
		}
		for (i = 0; i < r->elements; i++)
			if (r->element[i]->type == REDIS_REPLY_STRING)
				dp_results((unsigned char *)r->element[i]->str,
					   r->element[i]->len, sink, arg);
		i = r->elements;
		freeReplyObject(r);
		snprintf(from, sizeof(from), "%zu", i);
		{
			const char *targv[4] = { "LTRIM", d->keys[1], from,
						 "-1" };

			if (mpq__mgr_command(d->m, &r, 4, targv, NULL, 0))
				break;
			freeReplyObject(r);
		}
		if (i < 256)
			break;
	}
	return 0;
}

static void dp_close(void *ctx)
{
	struct dp_pool *d = ctx;
	const char *args[1];
	long long v;

	if (!d)
		return;
	args[0] = d->announce;
	/*
	 * The waker first: a token it pushed after the keys went would make
	 * the result list again. Then the keys, before the workers: what
	 * they run now finds the pool gone.
	 */
	dp_stop_waker(d);
	mpq__mgr_eval_int(d->m, &drop_lua, &v, DP_NKEYS,
			  (const char **)d->keys, 1, args, NULL);
	dp_free(d);
}

/* ---- the worker's side ------------------------------------------------ */

struct dp_worker {
	struct mpq_manager *m;
	char *pool;
	char who[128];
	uint64_t table;
	uint32_t ntasks;
	char *ann_key;

	/* The pool served now. */
	char id[24];
	char *keys[6];		/* announcement, res, cnt, lease, msg, unf */
	struct mpq_manager_queue *q;
	struct mpq_manager_queue_attr qa;
	char ttl[24];

	/* The message being run, for the renewing thread. */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	char *url, *authkey;
	char qname[256];
	uint64_t msg_id;
	uint32_t deliveries;
	int active;

	struct mpq__pool_runner *runner;
};

static void *dp_renew_main(void *arg)
{
	struct dp_worker *w = arg;
	struct mpq_manager *m = NULL;
	struct mpq_manager_queue *q = NULL;
	char qname[256] = "";
	struct mpq_manager_msg msg;
	struct timespec ts;
	int64_t period;

	pthread_mutex_lock(&w->lock);
	for (;;) {
		period = w->qa.lease_ns / 3;
		if (period < 1000000)
			period = 1000000;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += period / 1000000000;
		ts.tv_nsec += period % 1000000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&w->cond, &w->lock, &ts);
		if (!w->active)
			continue;
		memset(&msg, 0, sizeof(msg));
		msg.id = w->msg_id;
		msg.deliveries = w->deliveries;
		if (strcmp(qname, w->qname)) {
			mpq_manager_queue_free(q);
			q = NULL;
			snprintf(qname, sizeof(qname), "%s", w->qname);
		}
		pthread_mutex_unlock(&w->lock);
		/*
		 * Connected, the queue open and the lease renewed as soon as
		 * a task starts, not lease/3 later: connecting and
		 * authenticating then could outlast a short lease on a busy
		 * machine, and the task would be handed out again while it
		 * runs.
		 */
		if (!m)
			mpq_manager_connect(&m, w->url, w->authkey, 0);
		if (m && !q && qname[0])
			mpq_manager_queue(m, qname, &w->qa, &q);
		if (q)
			mpq_manager_msg_renew(q, &msg);
		pthread_mutex_lock(&w->lock);
	}
	return NULL;
}

static void dp_worker_drop_pool(struct dp_worker *w)
{
	int i;

	mpq_manager_queue_free(w->q);
	w->q = NULL;
	for (i = 1; i < 6; i++) {
		free(w->keys[i]);
		w->keys[i] = NULL;
	}
	w->id[0] = 0;
}

/*
 * The pool named now: 1 and w set up for it, 0 none (or an error), or
 * exit(3) when its task table is not ours (another program version).
 */
static int dp_worker_find(struct dp_worker *w)
{
	const char *argv[2] = { "GET", w->ann_key };
	char id[24], qname[256], sfx[64];
	unsigned long long table;
	long long lease_ms;
	unsigned int ntasks, maxd;
	redisReply *r;
	int ret, i;

	if (mpq__mgr_command(w->m, &r, 2, argv, NULL, 0))
		return 0;
	if (r->type != REDIS_REPLY_STRING ||
	    sscanf(r->str, "%23s %llx %u %lld %u", id, &table, &ntasks,
		   &lease_ms, &maxd) != 5 || lease_ms <= 0) {
		freeReplyObject(r);
		return 0;
	}
	freeReplyObject(r);
	if (table != w->table) {
		fprintf(stderr, "mpq pool worker %s: refused by pool \"%s\": "
			"its task table (%u tasks, hash %016llx) is not this "
			"program's (%u tasks, hash %016llx); built from another "
			"version of the program?\n", w->who, w->pool, ntasks,
			table, w->ntasks, (unsigned long long)w->table);
		exit(3);
	}
	if (!strcmp(id, w->id) && w->q)
		return 1;
	dp_worker_drop_pool(w);
	snprintf(qname, sizeof(qname), "%s.%s", w->pool, id);
	snprintf(sfx, sizeof(sfx), ".%s.res", id);
	w->keys[1] = mpq__mgr_key(w->m, 'P', w->pool, sfx);
	w->keys[2] = mpq__mgr_key(w->m, 'q', qname, ":cnt");
	w->keys[3] = mpq__mgr_key(w->m, 'q', qname, ":lease");
	w->keys[4] = mpq__mgr_key(w->m, 'q', qname, ":msg");
	w->keys[5] = mpq__mgr_key(w->m, 'q', qname, ":unf");
	for (i = 1; i < 6; i++)
		if (!w->keys[i])
			return 0;
	w->qa.lease_ns = lease_ms * 1000000LL;
	w->qa.max_deliveries = maxd;
	snprintf(w->ttl, sizeof(w->ttl), "%lld", 2 * lease_ms + 1000);
	ret = mpq_manager_queue(w->m, qname, &w->qa, &w->q);
	if (ret)
		return 0;
	snprintf(w->id, sizeof(w->id), "%s", id);
	pthread_mutex_lock(&w->lock);
	snprintf(w->qname, sizeof(w->qname), "%s", qname);
	pthread_mutex_unlock(&w->lock);
	return 1;
}

/* Send res (and with msg, mark it done): the pool's answer, see finish_lua. */
static int dp_worker_send(struct dp_worker *w, struct buf *res,
			  const struct mpq_manager_msg *msg)
{
	char idbuf[24], dbuf[16];
	const char *args[5] = { w->id, w->ttl, (const char *)res->p,
				idbuf, dbuf };
	size_t lens[5] = { strlen(w->id), strlen(w->ttl), res->len, 0, 0 };
	long long v;
	int ret;

	if (msg) {
		snprintf(idbuf, sizeof(idbuf), "%llu",
			 (unsigned long long)msg->id);
		snprintf(dbuf, sizeof(dbuf), "%u", msg->deliveries);
		lens[3] = strlen(idbuf);
		lens[4] = strlen(dbuf);
	}
	w->keys[0] = w->ann_key;
	ret = mpq__mgr_eval_int(w->m, &finish_lua, &v, 6,
				(const char **)w->keys, msg ? 5 : 3, args,
				lens);
	return ret ? ret : (int)v;
}

static void res_start(struct buf *b, uint64_t job, uint64_t first, int back)
{
	struct dp_res h = { .magic = DP_RES_MAGIC, .job = job, .first = first,
			    .step = back ? (uint64_t)-1 : 1 };

	b->len = 0;
	buf_add(b, &h, sizeof(h));
}

static int res_add(struct buf *b, int status, const void *data, size_t len)
{
	struct dp_rec r = { .status = status, .len = (uint32_t)len };
	struct dp_res *h;
	int ret;

	if (len > UINT32_MAX - 8)
		return -EMSGSIZE;
	ret = buf_add(b, &r, sizeof(r));
	if (!ret)
		ret = buf_add(b, data, len);
	if (ret)
		return ret;
	h = (struct dp_res *)b->p;
	h->count++;
	return 0;
}

/* Run one task message: its results back, then done. */
static void dp_worker_run(struct dp_worker *w, struct mpq_manager_msg *msg)
{
	const unsigned char *p = msg->data;
	struct mpq__pool_out out;
	struct buf res = { 0 };
	struct dp_task h;
	struct iovec *args = NULL;
	char name[256], why[512];
	mpq_task_fn fn;
	size_t off;
	uint64_t l;
	uint32_t i, k, valid;
	int back, each;

	if (msg->len < sizeof(h)) {
		fprintf(stderr, "mpq pool worker %s: a malformed task message "
			"(%zu bytes) was dropped\n", w->who, msg->len);
		mpq_manager_msg_done(w->q, msg);
		return;
	}
	memcpy(&h, p, sizeof(h));
	if (h.magic != DP_TASK_MAGIC || h.version != DP_VERSION ||
	    h.name_len == 0 || h.name_len >= sizeof(name) ||
	    msg->len - sizeof(h) < h.name_len) {
		fprintf(stderr, "mpq pool worker %s: a malformed task message "
			"(%zu bytes) was dropped\n", w->who, msg->len);
		mpq_manager_msg_done(w->q, msg);
		return;
	}
	memcpy(name, p + sizeof(h), h.name_len);
	name[h.name_len] = 0;
	off = sizeof(h) + align8(h.name_len);
	args = calloc(h.count ? h.count : 1, sizeof(*args));
	if (!args) {
		free(msg->data);
		msg->data = NULL;	/* the lease runs out: someone else */
		return;
	}
	/* The arguments that are whole; the rest fail as malformed. */
	for (valid = 0; valid < h.count; valid++) {
		if (off > msg->len || msg->len - off < 8)
			break;
		memcpy(&l, p + off, sizeof(l));
		if (l > msg->len - off - 8)
			break;
		args[valid].iov_base = (void *)(p + off + 8);
		args[valid].iov_len = l;
		off += 8 + align8(l);
	}
	fn = dp_lib->task_by_name(name, h.name_len);
	pthread_mutex_lock(&w->lock);
	w->msg_id = msg->id;
	w->deliveries = msg->deliveries;
	w->active = 1;
	/* Its wait may be the last pool's lease/3: start again with ours. */
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
	/* Delivered again: item by item, in the other direction each time. */
	back = msg->deliveries % 2 == 0;
	each = msg->deliveries > 1;
	res_start(&res, h.job, back ? h.first + h.count - 1 : h.first, back);
	for (k = 0; k < h.count; k++) {
		i = back ? h.count - 1 - k : k;
		if (each && k)
			res_start(&res, h.job, h.first + i, back);
		if (i >= valid) {
			snprintf(why, sizeof(why), "task \"%s\": a malformed "
				 "task message (item %u's argument is cut "
				 "short)", name, i);
			res_add(&res, -EPROTO, why, strlen(why));
		} else if (!fn) {
			snprintf(why, sizeof(why), "no task is registered as "
				 "\"%s\" in pool worker %s", name, w->who);
			res_add(&res, -ENOENT, why, strlen(why));
		} else {
			size_t at = res.len;

			dp_lib->run(w->runner, fn, args[i].iov_base,
				    args[i].iov_len, &out);
			if (res_add(&res, out.status, out.data, out.len)) {
				res.len = at;
				snprintf(why, sizeof(why), "the value was too "
					 "large for the worker");
				res_add(&res, -ENOMEM, why, strlen(why));
			}
		}
		if (each && k + 1 < h.count)
			dp_worker_send(w, &res, NULL);
	}
	if (res.p)
		dp_worker_send(w, &res, msg);
	pthread_mutex_lock(&w->lock);
	w->active = 0;
	pthread_mutex_unlock(&w->lock);
	free(res.p);
	free(args);
	mpq_manager_msg_free(msg);
}

/* This worker's name in messages: host, rank under a launcher, pid. */
static void dp_worker_name(char *buf, size_t len)
{
	static const char *const ranks[] = {
		"SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK",
	};
	char host[64] = "?";
	const char *rank = NULL;
	size_t i;

	gethostname(host, sizeof(host) - 1);
	host[sizeof(host) - 1] = 0;
	for (i = 0; i < sizeof(ranks) / sizeof(ranks[0]) && !rank; i++)
		rank = getenv(ranks[i]);
	if (rank)
		snprintf(buf, len, "%s:rank%.16s:%d", host, rank, (int)getpid());
	else
		snprintf(buf, len, "%s:%d", host, (int)getpid());
}

static int dp_worker_serve(const char *url, const char *authkey,
			   const char *pool)
{
	struct dp_worker *w = calloc(1, sizeof(*w));
	struct mpq_manager_msg msg;
	pthread_t renew;
	int ret;

	if (!w)
		return 1;
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	w->url = strdup(url);
	w->authkey = strdup(authkey ? authkey : "");
	w->pool = strdup(pool);
	w->table = dp_lib->table_hash(&w->ntasks);
	w->runner = dp_lib->runner_new();
	w->qa.lease_ns = DP_LEASE_NS;
	dp_worker_name(w->who, sizeof(w->who));
	if (!w->url || !w->authkey || !w->pool || !w->runner)
		return 1;
	/* Wait for the manager: workers may start first. A wrong key ends. */
	for (;;) {
		ret = mpq_manager_connect(&w->m, url, w->authkey, 0);
		if (!ret)
			break;
		if (ret == -EACCES || ret == -EINVAL) {
			fprintf(stderr, "mpq pool worker %s: the manager at %s "
				"refused us: %s\n", w->who, url,
				mpq_strerror(ret));
			return 2;
		}
		usleep(500000);
	}
	w->ann_key = mpq__mgr_key(w->m, 'P', w->pool, NULL);
	if (!w->ann_key || pthread_create(&renew, NULL, dp_renew_main, w))
		return 1;
	for (;;) {
		if (!dp_worker_find(w)) {
			dp_worker_drop_pool(w);
			usleep(DP_IDLE_NS / 1000);
			continue;
		}
		/* get_many: get itself says 0 for a message. */
		ret = mpq_manager_queue_get_many(w->q, &msg, 1, 1000000000LL);
		if (ret == 1)
			dp_worker_run(w, &msg);
		else if (ret < 0 && ret != -ETIMEDOUT && ret != -EAGAIN)
			usleep(100000);
	}
	return 0;
}

/* The authkey: MPQ_AUTHKEY, or the first line of MPQ_AUTHKEY_FILE. */
static char *dp_read_authkey(void)
{
	const char *e = getenv("MPQ_AUTHKEY"), *f;
	char line[256];
	FILE *fp;

	if (e)
		return strdup(e);
	f = getenv("MPQ_AUTHKEY_FILE");
	if (!f)
		return strdup("");
	fp = fopen(f, "re");
	if (!fp || !fgets(line, sizeof(line), fp)) {
		fprintf(stderr, "mpq pool worker: cannot read the authkey "
			"from %s\n", f);
		if (fp)
			fclose(fp);
		return NULL;
	}
	fclose(fp);
	line[strcspn(line, "\r\n")] = 0;
	return strdup(line);
}

/* --mpq-worker=ADDRESS: a manager's address, or a file that holds one. */
static void dp_worker_main(const char *address)
{
	char *key = dp_read_authkey(), line[1024];
	const char *pool = getenv("MPQ_WORKER_POOL");
	FILE *fp;

	if (!key)
		exit(2);
	/* Not for the task's children to see. */
	unsetenv("MPQ_AUTHKEY");
	unsetenv("MPQ_WORKER");
	if (address[0] == '/') {
		fp = fopen(address, "re");
		if (!fp || !fgets(line, sizeof(line), fp)) {
			fprintf(stderr, "mpq pool worker: cannot read the "
				"manager's address from %s\n", address);
			exit(2);
		}
		fclose(fp);
		line[strcspn(line, "\r\n")] = 0;
		address = line;
	}
	exit(dp_worker_serve(address, key, pool && *pool ? pool : "pool"));
}

/* A local worker, forked by the pool: the same loop, our own process. */
static int local_worker_main(const void *arg, size_t len)
{
	const char *url = arg, *key, *pool;
	sigset_t none;

	/*
	 * A worker the pool's thread replaced was forked there, with every
	 * signal blocked: unblock them, or terminate and the parent-death
	 * signal would not end it.
	 */
	sigemptyset(&none);
	pthread_sigmask(SIG_SETMASK, &none, NULL);
	key = url + align8(strlen(url) + 1);
	pool = key + align8(strlen(key) + 1);
	if ((size_t)(pool - url) >= len)
		return 2;
	return dp_worker_serve(url, key, pool);
}

static const struct mpq__pool_remote_ops dp_ops = {
	.open = dp_open,
	.send = dp_send,
	.collect = dp_collect,
	.close = dp_close,
	.worker_main = dp_worker_main,
};

/*
 * Referenced from the Manager's conn.c, so that a static link that uses
 * a manager has this file, and its constructor, too.
 */
const char mpq__net_pool_anchor = 1;

static void __attribute__((constructor(101))) dp_install(void)
{
	dp_lib = mpq__pool_remote_install(&dp_ops);
}
