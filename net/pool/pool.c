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
 *                       <lease_ms> <maxdeliv> <init>" (SET NX: one pool
 *                       per name; init 1: read the .init key)
 *   q:<name>.<id>:...   a managed queue of task messages, leased
 *                       (net/manager/queue.c); a chunk of a job each
 *   l:<name>.<id>.dead  its dead letters: chunks whose leases ran out
 *                       max_deliveries times
 *   P:<name>.<id>.res   a list of result messages
 *   P:<name>.<id>.init  what workers are told on joining (struct dp_init,
 *                       the initializer's name, its argument), when the
 *                       announcement's sixth field is 1
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
 *
 * Nothing lost when the manager loses writes: a failover to a replica
 * (Redis Sentinel: replication is asynchronous) or a restart can forget
 * the last puts it acknowledged. So the pool keeps every message it put
 * until each of its items has a result (struct dp_out), and whenever its
 * connection was made again (a new server, perhaps) it reconciles: every
 * message it put that the server no longer holds (in the queue, leased or
 * dead-lettered) and whose results have not all come is put again. A
 * forgotten lease, done or result only means a task run twice, applied
 * once: a script's writes replicate as one, so the server never holds a
 * message marked done without its results.
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

/* The .init key: then the initializer's name (padded to 8), its arg. */
#define DP_INIT_MAGIC	0x4971706dU	/* "mpqI" */
struct dp_init {
	uint32_t magic;
	uint32_t maxtasks;	/* maxtasksperchild, 0: none */
	uint32_t name_len;	/* 0: no initializer */
	uint32_t __pad;
	uint64_t arg_len;
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

/* announcement, res, 10 queue keys, dead, init */
#define DP_NKEYS	14
#define DP_JOBS		256	/* buckets of the table of jobs handed out */

/*
 * A task message handed out, kept until each of its items has a result
 * (or an error), so that one the manager lost can be put again.
 */
struct dp_out {
	unsigned char *data;	/* the message; NULL once answered in full */
	size_t len;
	uint64_t first;
	uint32_t count, left;	/* its items; those without a result */
	uint32_t mark;		/* the reconcile that saw it on the server */
	uint8_t put;		/* the manager took it (as far as we know) */
	uint8_t queued;		/* in pend, to be put */
	uint64_t *bits;		/* the items with a result */
};

/* A job's messages, by first item (send hands them out in order). */
struct dp_job {
	uint64_t job;
	struct dp_out *outs;
	size_t n, cap, live;	/* live: messages not answered in full */
	struct dp_job *next;
};

struct dp_key {
	uint64_t job, first;
};


static const char *const q_suffix[10] = {
	":cfg", ":ready", ":msg", ":cnt", ":lease", ":seq", ":unf",
	":take", ":wput", ":wjoin",
};

struct dp_pool {
	struct mpq_manager *m;		/* the pool thread's connection */
	struct mpq_manager *wm;		/* for its result wait */
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

	/* Messages built by send (or lost), put by the next collect. */
	struct dp_key *pend;
	size_t npend, pend_cap;

	/* Every message put and not yet answered in full, by job. */
	struct dp_job *jobs[DP_JOBS];
	unsigned long conns_seen;	/* connections made, reconciled */
	uint32_t epoch;
	size_t relost;			/* messages put again, in all */
	uint64_t answered, answered_kept;	/* items; at the last keep */
	uint32_t stalled;		/* keeps in a row with none */
	int recheck;			/* reconcile at the next collect */


	int bell;
	/* The result wait sent on wm and not yet answered; then its end. */
	int waiting;
	int64_t wait_until;
	char trim[24];		/* results applied: to trim next time */

	int nlocal;
	struct mpq_process **local;
	uint32_t maxtasks;	/* local workers leave after so many tasks */
	int64_t next_replace;	/* not before: at most 10 replaced a second */
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

/* Connections made by the pool's two handles: a change, a new server? */
static unsigned long dp_conns(struct dp_pool *d)
{
	return d->m->conns + d->wm->conns;
}

/* ---- messages handed out, until answered ------------------------------ */

static struct dp_job **dp_job_slot(struct dp_pool *d, uint64_t job)
{
	return &d->jobs[(job * 0x9e3779b97f4a7c15ULL) >> 56 & (DP_JOBS - 1)];
}

static struct dp_job *dp_job_find(struct dp_pool *d, uint64_t job)
{
	struct dp_job *j = *dp_job_slot(d, job);

	while (j && j->job != job)
		j = j->next;
	return j;
}

static void dp_job_free(struct dp_pool *d, struct dp_job *j)
{
	struct dp_job **pp = dp_job_slot(d, j->job);
	size_t i;

	while (*pp && *pp != j)
		pp = &(*pp)->next;
	if (*pp)
		*pp = j->next;
	for (i = 0; i < j->n; i++) {
		free(j->outs[i].data);
		free(j->outs[i].bits);
	}
	free(j->outs);
	free(j);
}

/* The message of job that holds item index (first: exactly), or NULL. */
static struct dp_out *dp_out_find(struct dp_pool *d, uint64_t job,
				  uint64_t index, int exact)
{
	struct dp_job *j = dp_job_find(d, job);
	size_t lo = 0, hi, mid;

	if (!j || !j->n)
		return NULL;
	/* The last message whose first item is index or before it. */
	hi = j->n;
	while (hi - lo > 1) {
		mid = lo + (hi - lo) / 2;
		if (j->outs[mid].first <= index)
			lo = mid;
		else
			hi = mid;
	}
	if (j->outs[lo].first > index ||
	    index - j->outs[lo].first >= j->outs[lo].count ||
	    (exact && j->outs[lo].first != index))
		return NULL;
	return &j->outs[lo];
}

/* Item index of job has a result: its message is answered once all are. */
static void dp_answered(struct dp_pool *d, uint64_t job, uint64_t index)
{
	struct dp_out *o = dp_out_find(d, job, index, 0);
	struct dp_job *j;
	uint64_t i, bit;

	if (!o || !o->left)
		return;
	i = index - o->first;
	bit = 1ULL << (i % 64);
	if (o->bits[i / 64] & bit)
		return;
	o->bits[i / 64] |= bit;
	d->answered++;
	if (--o->left)
		return;
	free(o->data);
	o->data = NULL;
	j = dp_job_find(d, job);
	if (!--j->live)
		dp_job_free(d, j);
}

/* What the pool's sink gets goes through here: dp_answered, then on. */
struct dp_fwd {
	struct dp_pool *d;
	mpq__pool_sink_fn sink;
	void *arg;
};

static void dp_sink(void *arg, uint64_t job, uint64_t index, int status,
		    const void *data, size_t len)
{
	struct dp_fwd *f = arg;

	f->sink(f->arg, job, index, status, data, len);
	dp_answered(f->d, job, index);
}

static int dp_pend_add(struct dp_pool *d, uint64_t job, uint64_t first)
{
	if (d->npend == d->pend_cap) {
		size_t cap = d->pend_cap ? 2 * d->pend_cap : 64;
		struct dp_key *g = realloc(d->pend, cap * sizeof(*g));

		if (!g)
			return -ENOMEM;
		d->pend = g;
		d->pend_cap = cap;
	}
	d->pend[d->npend].job = job;
	d->pend[d->npend++].first = first;
	return 0;
}

static void dp_free(struct dp_pool *d)
{
	size_t i;

	if (!d)
		return;
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
	for (i = 0; i < DP_JOBS; i++)
		while (d->jobs[i])
			dp_job_free(d, d->jobs[i]);
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
	snprintf(sfx, sizeof(sfx), ".%s.init", d->id);
	d->keys[13] = mpq__mgr_key(d->m, 'P', d->name, sfx);
	for (i = 0; i < DP_NKEYS; i++)
		if (!d->keys[i])
			return -ENOMEM;
	return 0;
}

/*
 * The .init key, before the announcement that points to it: SET with the
 * keys' expiry (a pool that does not come up leaves it for ttl at most).
 */
static int dp_put_init(struct dp_pool *d, const struct mpq__pool_init *in)
{
	struct dp_init h = { .magic = DP_INIT_MAGIC, .maxtasks = in->maxtasks,
			     .arg_len = in->len };
	const char *argv[5] = { "SET", d->keys[13], NULL, "PX", d->ttl };
	size_t lens[5];
	struct buf b = { 0 };
	redisReply *r;
	int ret, i;

	h.name_len = in->name ? (uint32_t)strlen(in->name) : 0;
	ret = buf_add(&b, &h, sizeof(h));
	if (!ret)
		ret = buf_add(&b, in->name, h.name_len);
	if (!ret)
		ret = buf_add(&b, in->arg, in->len);
	if (ret) {
		free(b.p);
		return ret;
	}
	argv[2] = (const char *)b.p;
	for (i = 0; i < 5; i++)
		lens[i] = i == 2 ? b.len : strlen(argv[i]);
	ret = mpq__mgr_command(d->m, &r, 5, argv, lens, 0);
	free(b.p);
	if (!ret)
		freeReplyObject(r);
	return ret;
}

static int dp_open(const struct mpq_pool_remote *cfg, int nlocal,
		   uint64_t table, uint32_t ntasks,
		   const struct mpq__pool_init *init, int bell, void **ctx)
{
	int with_init = init->name || init->maxtasks;
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
	snprintf(d->announce, sizeof(d->announce),
		 "%s %016" PRIx64 " %u %lld %u %d", d->id, table, ntasks,
		 (long long)(d->lease_ns + 999999) / 1000000, d->maxdeliv,
		 with_init);
	d->maxtasks = init->maxtasks;
	if (with_init) {
		ret = dp_put_init(d, init);
		if (ret)
			goto fail;
	}
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
	d->conns_seen = dp_conns(d);
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

/* Keep a message built by send until answered; queue it to be put. */
static int dp_record(struct dp_pool *d, uint64_t job, uint64_t first,
		     uint32_t count, struct buf *b)
{
	struct dp_job *j = dp_job_find(d, job);
	struct dp_out *o;
	int made = 0;

	if (!j) {
		j = calloc(1, sizeof(*j));
		if (!j)
			goto nomem;
		j->job = job;
		j->next = *dp_job_slot(d, job);
		*dp_job_slot(d, job) = j;
		made = 1;
	}
	/* Sent in order of first item: the table stays sorted. */
	if ((j->n && j->outs[j->n - 1].first >= first) || !count)
		goto inval;
	if (j->n == j->cap) {
		size_t cap = j->cap ? 2 * j->cap : 8;
		struct dp_out *g = realloc(j->outs, cap * sizeof(*g));

		if (!g)
			goto nomem;
		j->outs = g;
		j->cap = cap;
	}
	o = &j->outs[j->n];
	memset(o, 0, sizeof(*o));
	o->bits = calloc((count + 63) / 64, sizeof(*o->bits));
	if (!o->bits || dp_pend_add(d, job, first)) {
		free(o->bits);
		goto nomem;
	}
	o->data = b->p;
	o->len = b->len;
	o->first = first;
	o->count = o->left = count;
	o->queued = 1;
	j->n++;
	j->live++;
	return 0;
inval:
	free(b->p);
	if (made)
		dp_job_free(d, j);
	return -EINVAL;
nomem:
	free(b->p);
	if (made)
		dp_job_free(d, j);
	return -ENOMEM;
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
	if (ret) {
		free(b.p);
		return ret;
	}
	return dp_record(d, job, first, count, &b);
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
	struct iovec v[256];
	struct dp_out *o;
	size_t done = 0, i, k;
	unsigned int n;
	int ret = 0;

	/* Only what still waits for results (lost ones were answered). */
	for (i = k = 0; i < d->npend; i++) {
		o = dp_out_find(d, d->pend[i].job, d->pend[i].first, 1);
		if (o && o->left && o->queued)
			d->pend[k++] = d->pend[i];
	}
	d->npend = k;
	while (done < d->npend) {
		n = d->npend - done > 256 ? 256 : (unsigned int)(d->npend - done);
		for (i = 0; i < n; i++) {
			o = dp_out_find(d, d->pend[done + i].job,
					d->pend[done + i].first, 1);
			v[i].iov_base = o->data;
			v[i].iov_len = o->len;
		}
		ret = mpq_manager_queue_put_many(d->q, v, n, -1);
		if (ret < 0)
			break;
		for (i = 0; i < (size_t)ret; i++) {
			o = dp_out_find(d, d->pend[done + i].job,
					d->pend[done + i].first, 1);
			o->put = 1;
			o->queued = 0;
		}
		done += (size_t)ret;
	}
	/*
	 * The manager away (restarting, say): keep the rest for the next
	 * collect. A put that was done after all only runs a chunk twice,
	 * and its results are applied once.
	 */
	if (ret == -ECONNRESET || ret == -ECONNREFUSED || ret == -ETIMEDOUT ||
	    ret == -ENOENT) {
		memmove(d->pend, d->pend + done,
			(d->npend - done) * sizeof(*d->pend));
		d->npend -= done;
		return;
	}
	/* Failing a message's items may free it (dp_answered): look again. */
	for (i = done; i < d->npend; i++) {
		o = dp_out_find(d, d->pend[i].job, d->pend[i].first, 1);
		if (!o || !o->left)
			continue;
		o->queued = 0;
		dp_fail_msg(o->data, o->len, ret < 0 ? ret : -EIO,
			    "task \"%s\" (item %llu): the manager did not "
			    "take it", sink, arg);
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
		return;		/* garbage: nothing to apply */
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

/* Local workers that died, or left after maxtasksperchild: new ones. */
static void dp_replace_local(struct dp_pool *d)
{
	int i;

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
	/*
	 * Work out and no result for a whole period: look at the server too
	 * (a long task, or a message lost in a way no new connection shows,
	 * such as a done sent by a worker of the old primary's lease after
	 * a failover landing on a message of the same id). Reading every
	 * queued message costs their size on the server: after 1, 2, 4, 8...
	 * such periods, not after each.
	 */
	for (i = 0; i < DP_JOBS && !d->jobs[i]; i++)
		;
	if (i == DP_JOBS || d->answered != d->answered_kept) {
		d->stalled = 0;
	} else {
		d->stalled++;
		if (!(d->stalled & (d->stalled - 1)))
			d->recheck = 1;
	}
	d->answered_kept = d->answered;
	dp_replace_local(d);
}

/*
 * The result wait, pipelined on wm: trim what the last one applied, wait
 * (BLMOVE) for the list not to be empty, read its first 256 entries.
 *
 * Nothing is taken off the list before it is applied: a reply lost with
 * the connection (a manager killed mid-reply) would lose the results for
 * good, their tasks being done. So the wait moves the head to the tail
 * (it stays in the list), the read is LRANGE, and only what was applied
 * is trimmed; a trim that is lost only means reading those results again,
 * and they are applied once. The pool's thread is the list's only
 * reader: pushes go to the tail.
 */
static int dp_wait_send(struct dp_pool *d, int64_t wait)
{
	char secs[32];
	const char *trim[4] = { "LTRIM", d->keys[1], d->trim, "-1" };
	const char *move[6] = { "BLMOVE", d->keys[1], d->keys[1], "LEFT",
				"RIGHT", secs };
	const char *range[4] = { "LRANGE", d->keys[1], "0", "255" };
	const char *const *argvs[3];
	int argcs[3], n = 0, ret;

	snprintf(secs, sizeof(secs), "%.3f", (double)wait / 1e9);
	if (d->trim[0]) {
		argvs[n] = trim;
		argcs[n++] = 4;
	}
	argvs[n] = move;
	argcs[n++] = 6;
	argvs[n] = range;
	argcs[n++] = 4;
	ret = mpq__mgr_send(d->wm, n, argcs, argvs);
	if (ret)
		return ret;
	d->waiting = n;
	d->wait_until = mpq__mgr_now() + wait;
	d->trim[0] = 0;
	return 0;
}

/* The wait's replies (the socket is readable): apply what it read. */
static int dp_wait_recv(struct dp_pool *d, mpq__pool_sink_fn sink, void *arg)
{
	int64_t deadline = mpq__mgr_now() + d->wm->timeout_ns;
	redisReply *r = NULL;
	size_t i;
	int ret = 0;

	/*
	 * The trim's reply comes at once, the wait's when there are results:
	 * read what is here, and leave the rest pending for the next poll.
	 */
	while (d->waiting) {
		if (!mpq__mgr_pending(d->wm))
			return 0;
		ret = mpq__mgr_recv(d->wm, &r, deadline);
		if (ret)
			break;
		if (--d->waiting)
			freeReplyObject(r);
	}
	if (ret) {
		/* Out of step with the server: start again on a new one. */
		mpq__mgr_conn_drop(d->wm);
		d->waiting = 0;
		return ret;
	}
	if (r->type == REDIS_REPLY_ARRAY) {
		for (i = 0; i < r->elements; i++)
			if (r->element[i]->type == REDIS_REPLY_STRING)
				dp_results((unsigned char *)r->element[i]->str,
					   r->element[i]->len, sink, arg);
		if (r->elements)
			snprintf(d->trim, sizeof(d->trim), "%zu", r->elements);
	}
	freeReplyObject(r);
	return 0;
}

/*
 * The job and first item of every task message the server holds (in the
 * queue, ready or leased: its :msg hash; or dead-lettered), and every
 * result in the result list, at one instant. KEYS: msg, dead, res.
 */
static struct mgr_script heads_lua = { .src =
	"local h = {} "
	"for _, k in ipairs({KEYS[1], KEYS[2]}) do "
	"local vs = k == KEYS[1] and redis.call('HVALS', k) or "
	"redis.call('LRANGE', k, 0, -1) "
	"for _, v in ipairs(vs) do "
	"if #v >= 32 then h[#h + 1] = string.sub(v, 17, 32) end end end "
	"return {h, redis.call('LRANGE', KEYS[3], 0, -1)}" };

/*
 * A connection was made again: perhaps to another server (a replica
 * promoted by Sentinel) or one restarted, which may not hold the last
 * messages we put. Put again every message we put that the server does
 * not hold and whose results have not all come. The server's messages
 * and its results are read in one script, so that a message answered in
 * between (and so gone from the queue) is not taken for lost; the
 * results are applied (once, as ever) but not trimmed: the result wait
 * on wm reads and trims them as usual.
 */
static int dp_reconcile(struct dp_pool *d, mpq__pool_sink_fn sink, void *arg)
{
	const char *keys[3] = { d->keys[4], d->keys[12], d->keys[1] };
	unsigned long conns = dp_conns(d);
	struct dp_out *o;
	struct dp_job *j;
	redisReply *r, *h, *res;
	uint64_t hd[2];
	size_t i, k, lost = 0;
	int ret;

	ret = mpq__mgr_eval(d->m, &heads_lua, &r, 3, keys, 0, NULL, NULL);
	if (ret)
		return ret;
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[0]->type != REDIS_REPLY_ARRAY ||
	    r->element[1]->type != REDIS_REPLY_ARRAY) {
		freeReplyObject(r);
		return -EPROTO;
	}
	h = r->element[0];
	res = r->element[1];
	d->epoch++;
	for (i = 0; i < h->elements; i++) {
		if (h->element[i]->type != REDIS_REPLY_STRING ||
		    h->element[i]->len != sizeof(hd))
			continue;
		memcpy(hd, h->element[i]->str, sizeof(hd));
		o = dp_out_find(d, hd[0], hd[1], 1);
		if (o)
			o->mark = d->epoch;
	}
	for (i = 0; i < res->elements; i++)
		if (res->element[i]->type == REDIS_REPLY_STRING)
			dp_results((unsigned char *)res->element[i]->str,
				   res->element[i]->len, sink, arg);
	freeReplyObject(r);
	/* Connected again meanwhile: what was read may be another server's. */
	if (dp_conns(d) != conns)
		return -EAGAIN;
	for (k = 0; k < DP_JOBS; k++)
		for (j = d->jobs[k]; j; j = j->next)
			for (i = 0; i < j->n; i++) {
				o = &j->outs[i];
				if (!o->left || !o->put || o->queued ||
				    o->mark == d->epoch ||
				    dp_pend_add(d, j->job, o->first))
					continue;
				o->put = 0;
				o->queued = 1;
				lost++;
			}
	d->conns_seen = conns;
	d->recheck = 0;
	d->relost += lost;
	if (lost)
		fprintf(stderr, "mpq pool \"%s\": the manager had lost %zu "
			"task message%s we put (a failover or a restart): "
			"they are handed out again\n", d->name, lost,
			lost == 1 ? "" : "s");
	return 0;
}

/*
 * Wait for results or the bell at once: the wait is on wm's socket, the
 * bell an fd beside it, so that work handed in while the pool waits goes
 * out at once on m (the wait still pending) and no wake-up goes through
 * the manager. A caller's apply then costs the put, the worker's take
 * (woken on the server, pipelined), its result, and nothing more.
 */
static int dp_collect(void *ctx, mpq__pool_sink_fn user_sink, void *user_arg)
{
	struct dp_pool *d = ctx;
	struct dp_fwd fwd = { d, user_sink, user_arg };
	mpq__pool_sink_fn sink = dp_sink;
	void *arg = &fwd;
	struct pollfd pfd[2 + 64];
	int64_t wait, now;
	eventfd_t v;
	int ret, n = 2, i;

	if (dp_conns(d) != d->conns_seen || d->recheck)
		dp_reconcile(d, sink, arg);
	if (d->npend)
		dp_flush(d, sink, arg);
	if (mpq__mgr_now() >= d->next_keep)
		dp_keep(d, sink, arg);
	now = mpq__mgr_now();
	wait = d->next_keep - now;
	if (wait > 1000000000LL)
		wait = 1000000000LL;
	if (wait < 1000000)
		wait = 1000000;
	if (!d->waiting) {
		ret = dp_wait_send(d, wait);
		if (ret) {
			/* The manager is away: try again after a pause. */
			usleep(100000);
			return ret;
		}
	} else if (now > d->wait_until + d->wm->timeout_ns) {
		/* The reply is past its time: on a new connection. */
		mpq__mgr_conn_drop(d->wm);
		d->waiting = 0;
		return -ETIMEDOUT;
	}
	/* Replies read with the last ones (hiredis's buffer): no poll. */
	if (mpq__mgr_pending(d->wm))
		return dp_wait_recv(d, sink, arg);
	pfd[0].fd = mpq__mgr_fd(d->wm);
	pfd[0].events = POLLIN;
	pfd[1].fd = d->bell;
	pfd[1].events = POLLIN;
	pfd[0].revents = pfd[1].revents = 0;
	/*
	 * With maxtasksperchild, local workers leave often: their ends are
	 * waited for here too (the first 64), and they are replaced at once;
	 * but not in a loop, a tenth of a second apart at least, should
	 * they die as they start (an initializer that fails exits 4).
	 */
	for (i = 0; d->maxtasks && now >= d->next_replace && i < d->nlocal &&
	     n < 2 + 64; i++) {
		if (!d->local[i])
			continue;
		pfd[n].fd = mpq_process_sentinel(d->local[i]);
		pfd[n].events = POLLIN;
		pfd[n++].revents = 0;
	}
	wait = d->wait_until - now + 1000000;
	if (wait < 1000000)
		wait = 1000000;
	if (d->maxtasks && d->nlocal && wait > 100000000)
		wait = 100000000;
	ret = poll(pfd, (nfds_t)n, (int)(wait / 1000000));
	if (ret < 0)
		return errno == EINTR ? 0 : -errno;
	for (i = 2; i < n; i++)
		if (pfd[i].revents)
			break;
	if (i < n) {
		dp_replace_local(d);
		d->next_replace = mpq__mgr_now() + 100000000;
	}
	if (pfd[1].revents)
		eventfd_read(d->bell, &v);
	if (pfd[0].revents)
		return dp_wait_recv(d, sink, arg);
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
	/* The keys before the workers: what they run finds the pool gone. */
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
	int64_t started;	/* when the task in hand started */
	char renew_qname[256];	/* the queue the renewing thread has open */

	struct mpq__pool_runner *runner;

	/* The pool's initializer ran for this pool; tasks run since. */
	char init_id[24];
	uint32_t maxtasks, ran;
};

/*
 * A worker started in worker mode (not one the pool forked): how it was
 * started, to start again after maxtasksperchild tasks.
 */
static struct {
	int remote;
	int key_env;		/* the authkey came in MPQ_AUTHKEY */
	char address[1024];
} dp_self;

static void *dp_renew_main(void *arg)
{
	struct dp_worker *w = arg;
	struct mpq_manager *m = NULL;
	struct mpq_manager_queue *q = NULL;
	char qname[256] = "";
	struct mpq_manager_msg msg;
	struct timespec ts;
	int64_t period;
	int due, fresh;

	pthread_mutex_lock(&w->lock);
	for (;;) {
		period = w->qa.lease_ns / 4;
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
		/*
		 * A task is renewed once it has run a period (lease/4): one
		 * that started just after our last wake-up is renewed at most
		 * half its lease after its get leased it. A quick task is never
		 * renewed, and its start wakes nobody: no round trip, no
		 * thread switch per task.
		 */
		due = mpq__mgr_now() - w->started >= period;
		pthread_mutex_unlock(&w->lock);
		/*
		 * But connected, the queue open and the lease renewed as soon
		 * as the first task of a pool starts (the worker wakes us
		 * then): connecting and authenticating later could outlast a
		 * short lease on a busy machine, and the task would be handed
		 * out again while it runs.
		 */
		fresh = !m || !q;
		if (!m)
			mpq_manager_connect(&m, w->url, w->authkey, 0);
		if (m && !q && qname[0])
			mpq_manager_queue(m, qname, &w->qa, &q);
		if (q && (due || fresh))
			mpq_manager_msg_renew(q, &msg);
		pthread_mutex_lock(&w->lock);
		if (q)
			snprintf(w->renew_qname, sizeof(w->renew_qname), "%s",
				 qname);
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
 * Joining pool id: its .init key (when with_init) says maxtasksperchild
 * and which initializer to run, once, now. 0, or -EAGAIN (try again
 * later); exit(4) when the initializer is not registered here or fails:
 * this worker cannot serve the pool as it asks.
 */
static int dp_worker_join(struct dp_worker *w, const char *id, int with_init)
{
	const unsigned char *p;
	struct dp_init h;
	char sfx[64], name[256];
	const char *argv[2] = { "GET", NULL };
	mpq_target_fn fn;
	redisReply *r;
	char *key;
	int ret;

	w->maxtasks = 0;
	w->ran = 0;
	if (!with_init)
		goto joined;
	snprintf(sfx, sizeof(sfx), ".%s.init", id);
	key = mpq__mgr_key(w->m, 'P', w->pool, sfx);
	if (!key)
		return -EAGAIN;
	argv[1] = key;
	ret = mpq__mgr_command(w->m, &r, 2, argv, NULL, 0);
	free(key);
	if (ret)
		return -EAGAIN;
	p = (const unsigned char *)r->str;
	if (r->type != REDIS_REPLY_STRING || r->len < sizeof(h) ||
	    (memcpy(&h, p, sizeof(h)), h.magic != DP_INIT_MAGIC) ||
	    h.name_len >= sizeof(name) ||
	    r->len - sizeof(h) < align8(h.name_len) ||
	    h.arg_len > r->len - sizeof(h) - align8(h.name_len)) {
		/* Gone with its pool, or not ours: not this pool, now. */
		freeReplyObject(r);
		return -EAGAIN;
	}
	memcpy(name, p + sizeof(h), h.name_len);
	name[h.name_len] = 0;
	w->maxtasks = h.maxtasks;
	if (h.name_len) {
		fn = dp_lib->target_by_name(name);
		if (!fn) {
			fprintf(stderr, "mpq pool worker %s: pool \"%s\" "
				"asks for the initializer \"%s\", which this "
				"program does not register (MPQ_TARGET)\n",
				w->who, w->pool, name);
			exit(4);
		}
		ret = fn(p + sizeof(h) + align8(h.name_len), h.arg_len);
		if (ret) {
			ret = ret > 0 ? -ret : ret;
			fprintf(stderr, "mpq pool worker %s: the initializer "
				"\"%s\" of pool \"%s\" returned %d (%s)\n",
				w->who, name, w->pool, ret, mpq_strerror(ret));
			exit(4);
		}
	}
	freeReplyObject(r);
joined:
	snprintf(w->init_id, sizeof(w->init_id), "%s", id);
	return 0;
}

/*
 * maxtasksperchild: a fresh process, as Python's pool gives. A worker
 * the pool forked leaves (the pool starts another); one started in worker
 * mode executes itself again, with the same pid (what srun, systemd or a
 * shell see stays), arguments and address, and joins again, running the
 * initializer again. If that fails it leaves.
 */
static void dp_worker_restart(struct dp_worker *w)
{
	char *buf = NULL, **argv = NULL;
	size_t len = 0, cap = 0, i;
	int fd, argc = 0;
	ssize_t n;

	fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
	while (fd >= 0) {
		if (len + 4096 > cap) {
			char *g = realloc(buf, cap + 65536);

			if (!g)
				break;
			buf = g;
			cap += 65536;
		}
		n = read(fd, buf + len, cap - len - 1);
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	if (fd >= 0)
		close(fd);
	if (buf && len) {
		buf[len] = 0;
		argv = calloc(len + 2, sizeof(*argv));
		for (i = 0; argv && i < len; i += strlen(buf + i) + 1)
			argv[argc++] = buf + i;
	}
	if (argv && argc) {
		setenv("MPQ_WORKER", dp_self.address, 1);
		setenv("MPQ_WORKER_POOL", w->pool, 1);
		if (dp_self.key_env)
			setenv("MPQ_AUTHKEY", w->authkey, 1);
		fflush(NULL);
		execv("/proc/self/exe", argv);
	}
	fprintf(stderr, "mpq pool worker %s: could not start again after "
		"maxtasksperchild (%u) tasks: %s; leaving\n", w->who,
		w->maxtasks, strerror(errno));
	exit(0);
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
	int ret, i, with_init = 0;
	redisReply *r;

	if (mpq__mgr_command(w->m, &r, 2, argv, NULL, 0))
		return 0;
	/* A sixth field (with_init) since maxtasksperchild and initializers. */
	if (r->type != REDIS_REPLY_STRING ||
	    sscanf(r->str, "%23s %llx %u %lld %u %d", id, &table, &ntasks,
		   &lease_ms, &maxd, &with_init) < 5 || lease_ms <= 0) {
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
	if (strcmp(id, w->init_id) && dp_worker_join(w, id, with_init))
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

/* Run one task message: its results back, then done; -2: the pool ended. */
static int dp_worker_run(struct dp_worker *w, struct mpq_manager_msg *msg)
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
	int back, each, ret = 0;

	if (msg->len < sizeof(h)) {
		fprintf(stderr, "mpq pool worker %s: a malformed task message "
			"(%zu bytes) was dropped\n", w->who, msg->len);
		mpq_manager_msg_done(w->q, msg);
		return 0;
	}
	memcpy(&h, p, sizeof(h));
	if (h.magic != DP_TASK_MAGIC || h.version != DP_VERSION ||
	    h.name_len == 0 || h.name_len >= sizeof(name) ||
	    msg->len - sizeof(h) < h.name_len) {
		fprintf(stderr, "mpq pool worker %s: a malformed task message "
			"(%zu bytes) was dropped\n", w->who, msg->len);
		mpq_manager_msg_done(w->q, msg);
		return 0;
	}
	memcpy(name, p + sizeof(h), h.name_len);
	name[h.name_len] = 0;
	off = sizeof(h) + align8(h.name_len);
	args = calloc(h.count ? h.count : 1, sizeof(*args));
	if (!args) {
		free(msg->data);
		msg->data = NULL;	/* the lease runs out: someone else */
		return 0;
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
	w->started = mpq__mgr_now();
	/*
	 * The renewing thread not yet set up for this pool (its wait may
	 * also be the last pool's period): wake it, to connect now.
	 */
	if (strcmp(w->renew_qname, w->qname))
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
		ret = dp_worker_send(w, &res, msg);
	pthread_mutex_lock(&w->lock);
	w->active = 0;
	pthread_mutex_unlock(&w->lock);
	free(res.p);
	free(args);
	mpq_manager_msg_free(msg);
	return ret;
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
	int64_t next_find = 0;
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
		/*
		 * The announcement is read when there was nothing to do, and
		 * at most a second apart while tasks keep coming, not before
		 * every task: a round trip per task for a pool that does not
		 * change. A pool that ended is seen by its result script
		 * (dp_worker_send) or by a get that finds nothing.
		 */
		if (!w->q || mpq__mgr_now() >= next_find) {
			if (!dp_worker_find(w)) {
				dp_worker_drop_pool(w);
				usleep(DP_IDLE_NS / 1000);
				continue;
			}
			next_find = mpq__mgr_now() + 1000000000LL;
		}
		/* get_many: get itself says 0 for a message. */
		ret = mpq_manager_queue_get_many(w->q, &msg, 1, 1000000000LL);
		if (ret == 1) {
			if (dp_worker_run(w, &msg) == -2)
				next_find = 0;
			if (w->maxtasks && ++w->ran >= w->maxtasks) {
				if (!dp_self.remote)
					return 0;
				dp_worker_restart(w);
			}
		} else {
			next_find = 0;
			if (ret < 0 && ret != -ETIMEDOUT && ret != -EAGAIN)
				usleep(100000);
		}
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
	dp_self.remote = 1;
	dp_self.key_env = getenv("MPQ_AUTHKEY") != NULL;
	snprintf(dp_self.address, sizeof(dp_self.address), "%s", address);
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
