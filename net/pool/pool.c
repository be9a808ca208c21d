// SPDX-License-Identifier: MIT
/*
 * The distributed pool: a Pool (lib/pool*.c) whose tasks go out through
 * a Manager to worker processes on any machine. libmpq has no network
 * code; it calls the operations below (lib/pool_remote.h), which this
 * file installs from a constructor.
 *
 * Keys, under "mpq:<ns>:" (all of them end with the pool, or expire
 * within ttl of its caller's death: the pool's thread refreshes the
 * expiry of its own every ttl/3, and every key a worker writes to it
 * gives an expiry in the same transaction):
 *   P:<name>            the announcement: "<id> <table> <ntasks>
 *                       <lease_ms> <maxdeliv> <init> <version>" (SET NX:
 *                       one pool per name; init 1: read the .init key;
 *                       version: DP_VERSION, absent before 2)
 *   P:<name>.<id>.ready a list of task messages to run: a chunk of a job
 *                       each
 *   P:<name>.<id>.w.<w> worker w's message in hand (moved there from
 *                       ready by its BLMOVE)
 *   P:<name>.<id>.hb.<w> worker w's lease: set for lease_ns, renewed by
 *                       a thread of the worker every lease/4 while it
 *                       lives, whatever it runs
 *   P:<name>.<id>.workers the set of workers that joined
 *   P:<name>.<id>.dead  dead letters: messages delivered max_deliveries
 *                       times to workers that all lost their lease
 *   P:<name>.<id>.res   a list of result messages
 *   P:<name>.<id>.init  what workers are told on joining (struct dp_init,
 *                       the initializer's name, its argument), when the
 *                       announcement's sixth field is 1
 *
 * The path of a task is three native commands, no script: the pool's
 * RPUSH to ready, the worker's BLMOVE from ready to its own list (woken
 * on the server, so a task costs no round trip of the worker's), and one
 * MULTI/EXEC of the worker's that pushes the results and deletes its
 * list. Leases are the workers', not the messages': a script of the
 * pool's (reap_lua), every lease/4, puts back what a worker without a
 * lease held, counting the delivery in the message.
 *
 * A task message: struct dp_task, the task's name (padded to 8), then per
 * item a uint64_t length and the bytes (padded to 8). A result message:
 * struct dp_res, then per item a struct dp_rec and its bytes (padded):
 * status 0 a value, < 0 an error and its message. Both in the byte order
 * of the machines (workers and pool alike: x86_64 or any one order).
 *
 * Nothing lost: a worker holds its lease while it lives (a thread renews
 * it every lease/4), and sends the results and lets the message go in
 * one transaction. A worker that dies or is cut off loses the lease, and
 * its message goes to the next worker; the pool applies each item's
 * result once (lib/pool_remote.c). A message delivered again is
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
 * once: a transaction's writes replicate as one, so the server never
 * holds a message let go without its results.
 */
#include <endian.h>
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
#define DP_VERSION	2
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
	uint32_t deliveries;	/* little-endian: reap_lua counts them */
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

/* KEYS: announcement, then every other key. ARGV: value, ttl_ms. */
static struct mgr_script keep_lua = { .src =
	"local v = redis.call('GET', KEYS[1]) "
	"if v and v ~= ARGV[1] then return -1 end "
	"redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) "
	"for i = 2, #KEYS do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end "
	"return 0" };

/*
 * KEYS: announcement, workers, then every other key. ARGV: value, the
 * keys' prefix ("...P:<name>.<id>."). Every worker's list and lease go
 * too.
 */
static struct mgr_script drop_lua = { .src =
	"if redis.call('GET', KEYS[1]) == ARGV[1] then "
	"redis.call('DEL', KEYS[1]) end "
	"for _, w in ipairs(redis.call('SMEMBERS', KEYS[2])) do "
	"redis.call('DEL', ARGV[2] .. 'w.' .. w, ARGV[2] .. 'hb.' .. w) end "
	"for i = 2, #KEYS do redis.call('DEL', KEYS[i]) end return 0" };

/*
 * KEYS: workers, ready, dead. ARGV: the keys' prefix, max_deliveries,
 * ttl_ms. Every worker whose lease ran out: what it held goes back to
 * the front of ready, its deliveries (the little-endian uint32_t at byte
 * 36 of struct dp_task) counted, or to dead once delivered
 * max_deliveries times; the worker leaves the set. Returns how many went
 * to dead.
 */
static struct mgr_script reap_lua = { .src =
	"local dead = 0 "
	"for _, w in ipairs(redis.call('SMEMBERS', KEYS[1])) do "
	"if redis.call('EXISTS', ARGV[1] .. 'hb.' .. w) == 0 then "
	"local l = ARGV[1] .. 'w.' .. w "
	"local ms = redis.call('LRANGE', l, 0, -1) "
	"for i = #ms, 1, -1 do "
	"local m, d = ms[i], 0 "
	"if #m >= 40 then "
	"d = struct.unpack('<I4', m, 37) + 1 "
	"m = string.sub(m, 1, 36) .. struct.pack('<I4', d) .. "
	"string.sub(m, 41) end "
	"if #m < 40 or d >= tonumber(ARGV[2]) then "
	"redis.call('RPUSH', KEYS[3], m) dead = dead + 1 "
	"else redis.call('LPUSH', KEYS[2], m) end end "
	"redis.call('DEL', l) redis.call('SREM', KEYS[1], w) end end "
	"if dead > 0 then redis.call('PEXPIRE', KEYS[3], ARGV[3]) end "
	"return dead" };

/* ---- the pool's side ------------------------------------------------ */

/* The pool's keys, in the order keep_lua and drop_lua take them. */
enum { K_ANN, K_WORKERS, K_RES, K_READY, K_DEAD, K_INIT, DP_NKEYS };
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
	char *prefix;			/* "...P:<name>.<id>." */
	char maxdeliv_s[16];
	int64_t next_keep, next_reap;

	/* Messages built by send (or lost), put by the next collect. */
	struct dp_key *pend;
	size_t npend, pend_cap;
	/*
	 * The first inflight of pend: put by an RPUSH sent ahead of the
	 * result wait on wm (dp_wait_send), its reply not read yet. An
	 * error there: the next collect puts them by dp_flush (no_carry).
	 */
	size_t inflight;
	int no_carry;

	/* Every message put and not yet answered in full, by job. */
	struct dp_job *jobs[DP_JOBS];
	size_t njobs;
	unsigned long conns_seen;	/* connections made, reconciled */
	unsigned long reap_conns;	/* connections made, at the last reap
					   postponed for a new server */
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
	if (*pp) {
		*pp = j->next;
		d->njobs--;
	}
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

/* The local workers end (and so write nothing more to the manager). */
static void dp_stop_local(struct dp_pool *d)
{
	size_t i;

	for (i = 0; d->local && i < (size_t)d->nlocal; i++) {
		if (!d->local[i])
			continue;
		mpq_process_terminate(d->local[i]);
		if (mpq_process_join(d->local[i], 1000000000LL) == -ETIMEDOUT) {
			mpq_process_kill(d->local[i]);
			mpq_process_join(d->local[i], -1);
		}
		mpq_process_free(d->local[i]);
		d->local[i] = NULL;
	}
}

static void dp_free(struct dp_pool *d)
{
	size_t i;

	if (!d)
		return;
	dp_stop_local(d);
	free(d->local);
	for (i = 0; i < DP_JOBS; i++)
		while (d->jobs[i])
			dp_job_free(d, d->jobs[i]);
	free(d->pend);
	for (i = 0; i < DP_NKEYS; i++)
		free(d->keys[i]);
	free(d->prefix);
	mpq_manager_free(d->m);
	mpq_manager_free(d->wm);
	free(d->url);
	free(d->authkey);
	free(d->name);
	free(d);
}

/* "...P:<pool>.<id>.<what>": the keys of pool id. */
static char *dp_key(struct mpq_manager *m, const char *pool, const char *id,
		    const char *what)
{
	char sfx[96];

	snprintf(sfx, sizeof(sfx), ".%s.%s", id, what);
	return mpq__mgr_key(m, 'P', pool, sfx);
}

static int dp_keys(struct dp_pool *d)
{
	static const char *const what[DP_NKEYS] = {
		[K_WORKERS] = "workers", [K_RES] = "res", [K_READY] = "ready",
		[K_DEAD] = "dead", [K_INIT] = "init",
	};
	int i;

	d->keys[K_ANN] = mpq__mgr_key(d->m, 'P', d->name, NULL);
	for (i = 1; i < DP_NKEYS; i++)
		d->keys[i] = dp_key(d->m, d->name, d->id, what[i]);
	d->prefix = dp_key(d->m, d->name, d->id, "");
	for (i = 0; i < DP_NKEYS; i++)
		if (!d->keys[i])
			return -ENOMEM;
	return d->prefix ? 0 : -ENOMEM;
}

/*
 * The .init key, before the announcement that points to it: SET with the
 * keys' expiry (a pool that does not come up leaves it for ttl at most).
 */
static int dp_put_init(struct dp_pool *d, const struct mpq__pool_init *in)
{
	struct dp_init h = { .magic = DP_INIT_MAGIC, .maxtasks = in->maxtasks,
			     .arg_len = in->len };
	const char *argv[5] = { "SET", d->keys[K_INIT], NULL, "PX", d->ttl };
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
	struct dp_pool *d;
	const char *args[3];
	unsigned char rnd[8];
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
	snprintf(d->maxdeliv_s, sizeof(d->maxdeliv_s), "%u", d->maxdeliv);
	ret = dp_keys(d);
	if (ret)
		goto fail;
	snprintf(d->announce, sizeof(d->announce),
		 "%s %016" PRIx64 " %u %lld %u %d %d", d->id, table, ntasks,
		 (long long)(d->lease_ns + 999999) / 1000000, d->maxdeliv,
		 with_init, DP_VERSION);
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
	args[0] = d->announce;
	args[1] = d->ttl;
	ret = mpq__mgr_eval_int(d->m, &keep_lua, &v, DP_NKEYS,
				(const char **)d->keys, 2, args, NULL);
	if (ret)
		goto fail_drop;
	d->next_keep = mpq__mgr_now() + d->ttl_ns / 3;
	d->next_reap = mpq__mgr_now() + d->lease_ns / 4;
	d->conns_seen = d->reap_conns = dp_conns(d);
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
	args[1] = d->prefix;
	mpq__mgr_eval_int(d->m, &drop_lua, &v, DP_NKEYS,
			  (const char **)d->keys, 2, args, NULL);
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
		d->njobs++;
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

/* RPUSH n (<= 256: one command) messages to ready: n, or an errno. */
static int dp_push(struct dp_pool *d, const struct iovec *v, unsigned int n)
{
	const struct iovec *cols[1] = { v };
	int ret = mpq__mgr_command_chunked(d->m, "RPUSH", d->keys[K_READY],
					   cols, 1, n);

	return ret ? ret : (int)n;
}

/* Drop from pend (past those in flight) what no longer waits to be put. */
static void dp_pend_live(struct dp_pool *d)
{
	struct dp_out *o;
	size_t i, k;

	/* Only what still waits for results (lost ones were answered). */
	for (i = k = d->inflight; i < d->npend; i++) {
		o = dp_out_find(d, d->pend[i].job, d->pend[i].first, 1);
		if (o && o->left && o->queued)
			d->pend[k++] = d->pend[i];
	}
	d->npend = k;
}

static void dp_flush(struct dp_pool *d, mpq__pool_sink_fn sink, void *arg)
{
	struct iovec v[256];
	struct dp_key *pend;
	struct dp_out *o;
	size_t done = 0, npend, i;
	unsigned int n;
	int ret = 0;

	dp_pend_live(d);
	pend = d->pend + d->inflight;
	npend = d->npend - d->inflight;
	d->no_carry = 0;
	while (done < npend) {
		n = npend - done > 256 ? 256 : (unsigned int)(npend - done);
		for (i = 0; i < n; i++) {
			o = dp_out_find(d, pend[done + i].job,
					pend[done + i].first, 1);
			v[i].iov_base = o->data;
			v[i].iov_len = o->len;
		}
		ret = dp_push(d, v, n);
		if (ret < 0)
			break;
		for (i = 0; i < (size_t)ret; i++) {
			o = dp_out_find(d, pend[done + i].job,
					pend[done + i].first, 1);
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
		memmove(pend, pend + done, (npend - done) * sizeof(*pend));
		d->npend -= done;
		return;
	}
	/* Failing a message's items may free it (dp_answered): look again. */
	for (i = done; i < npend; i++) {
		o = dp_out_find(d, pend[i].job, pend[i].first, 1);
		if (!o || !o->left)
			continue;
		o->queued = 0;
		dp_fail_msg(o->data, o->len, ret < 0 ? ret : -EIO,
			    "task \"%s\" (item %llu): the manager did not "
			    "take it", sink, arg);
	}
	d->npend = d->inflight;
}

/*
 * What dp_flush would put, few and small enough to go in one RPUSH ahead
 * of the result wait (dp_wait_send): 1 if so. An apply then costs the
 * server one command loop and the pool's thread one wake-up fewer than a
 * put that waits for its reply before the wait is sent.
 */
#define DP_CARRY_BYTES	(256 * 1024)
static int dp_carry(struct dp_pool *d)
{
	struct dp_out *o;
	size_t i, bytes = 0;

	/* Many waiting: dp_flush, without a look at each first. */
	if (d->waiting || d->no_carry || d->inflight || !d->npend ||
	    d->npend > 256)
		return 0;
	dp_pend_live(d);
	if (!d->npend)
		return 0;
	for (i = 0; i < d->npend; i++) {
		o = dp_out_find(d, d->pend[i].job, d->pend[i].first, 1);
		bytes += o->len;
	}
	return bytes <= DP_CARRY_BYTES;
}

/* The RPUSH sent ahead of the wait was answered: those messages are put. */
static void dp_carried(struct dp_pool *d)
{
	struct dp_out *o;
	size_t i;

	for (i = 0; i < d->inflight; i++) {
		o = dp_out_find(d, d->pend[i].job, d->pend[i].first, 1);
		if (o) {
			o->put = 1;
			o->queued = 0;
		}
	}
	memmove(d->pend, d->pend + d->inflight,
		(d->npend - d->inflight) * sizeof(*d->pend));
	d->npend -= d->inflight;
	d->inflight = 0;
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
	const char *argv[2] = { "LPOP", d->keys[K_DEAD] };
	char fmt[256];
	redisReply *r;

	snprintf(fmt, sizeof(fmt), "task \"%%s\" (item %%llu) was delivered "
		 "%u times and every worker that ran it died or lost its "
		 "lease: it is not tried again", d->maxdeliv);
	while (!mpq__mgr_command(d->m, &r, 2, argv, NULL, 0)) {
		if (r->type != REDIS_REPLY_STRING) {
			freeReplyObject(r);
			break;
		}
		dp_fail_msg(r->str, r->len, -EOWNERDEAD, fmt, sink, arg);
		freeReplyObject(r);
	}
}

/*
 * Every lease/4: what workers without a lease held goes back (reap_lua),
 * or is dead-lettered, and then fails.
 */
static void dp_reap(struct dp_pool *d, mpq__pool_sink_fn sink, void *arg)
{
	const char *keys[3] = { d->keys[K_WORKERS], d->keys[K_READY],
				d->keys[K_DEAD] };
	const char *args[3] = { d->prefix, d->maxdeliv_s, d->ttl };
	long long dead = 0;

	d->next_reap = mpq__mgr_now() + d->lease_ns / 4;
	if (!mpq__mgr_eval_int(d->m, &reap_lua, &dead, 3, keys, 3, args,
			       NULL) && dead > 0)
		dp_dead(d, sink, arg);
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
static int dp_wait_send(struct dp_pool *d, int64_t wait, int carry)
{
	char secs[32];
	const char *trim[4] = { "LTRIM", d->keys[K_RES], d->trim, "-1" };
	const char *move[6] = { "BLMOVE", d->keys[K_RES], d->keys[K_RES],
				"LEFT", "RIGHT", secs };
	const char *range[4] = { "LRANGE", d->keys[K_RES], "0", "255" };
	const char *push[2 + 256];
	size_t lens[2 + 256];
	struct mgr_cmd c[4];
	struct dp_out *o;
	unsigned int n = 0;
	size_t i;
	int ret;

	snprintf(secs, sizeof(secs), "%.3f", (double)wait / 1e9);
	if (carry) {
		push[0] = "RPUSH";
		push[1] = d->keys[K_READY];
		lens[0] = 5;
		lens[1] = strlen(push[1]);
		for (i = 0; i < d->npend; i++) {
			o = dp_out_find(d, d->pend[i].job, d->pend[i].first,
					1);
			push[2 + i] = (const char *)o->data;
			lens[2 + i] = o->len;
		}
		c[n++] = (struct mgr_cmd){ (int)(2 + d->npend), push, lens };
	}
	if (d->trim[0])
		c[n++] = (struct mgr_cmd){ 4, trim, NULL };
	c[n++] = (struct mgr_cmd){ 6, move, NULL };
	c[n++] = (struct mgr_cmd){ 4, range, NULL };
	ret = mpq__mgr_send(d->wm, n, c);
	if (ret)
		return ret;
	d->inflight = carry ? d->npend : 0;
	d->waiting = (int)n;
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
		if (d->inflight) {
			/* The RPUSH ahead of the wait. */
			dp_carried(d);
			d->waiting--;
			freeReplyObject(r);
			r = NULL;
			continue;
		}
		if (--d->waiting)
			freeReplyObject(r);
	}
	if (ret) {
		/*
		 * Out of step with the server: start again on a new one. An
		 * RPUSH not answered is done again by dp_flush, which fails
		 * its items if the server refuses it.
		 */
		mpq__mgr_conn_drop(d->wm);
		d->waiting = 0;
		d->no_carry = d->inflight != 0;
		d->inflight = 0;
		/*
		 * A server that refused the wait (full: BLMOVE may grow a
		 * list, so it is answered -OOM) refuses it again at once:
		 * not a connection and a refusal in a loop, a pause first.
		 */
		usleep(100000);
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
 * The job and first item of every task message the server holds (ready,
 * in a worker's hands, or dead-lettered), and every result in the result
 * list, at one instant. KEYS: workers, ready, dead, res. ARGV: the keys'
 * prefix.
 */
static struct mgr_script heads_lua = { .src =
	"local h, ks = {}, {KEYS[2], KEYS[3]} "
	"for _, w in ipairs(redis.call('SMEMBERS', KEYS[1])) do "
	"ks[#ks + 1] = ARGV[1] .. 'w.' .. w end "
	"for _, k in ipairs(ks) do "
	"for _, v in ipairs(redis.call('LRANGE', k, 0, -1)) do "
	"if #v >= 32 then h[#h + 1] = string.sub(v, 17, 32) end end end "
	"return {h, redis.call('LRANGE', KEYS[4], 0, -1)}" };

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
	const char *keys[4] = { d->keys[K_WORKERS], d->keys[K_READY],
				d->keys[K_DEAD], d->keys[K_RES] };
	const char *args[1] = { d->prefix };
	unsigned long conns = dp_conns(d);
	struct dp_out *o;
	struct dp_job *j;
	redisReply *r, *h, *res;
	uint64_t hd[2];
	size_t i, k, lost = 0;
	int ret;

	ret = mpq__mgr_eval(d->m, &heads_lua, &r, 4, keys, 1, args, NULL);
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
 * the manager. With nothing handed out there is no result to wait for:
 * no wait is sent, and the next work goes in the same write as the wait
 * (dp_carry). A caller's apply then costs one write of the pool's, the
 * worker's take (woken on the server, pipelined), its result, and
 * nothing more.
 */
static int dp_collect(void *ctx, mpq__pool_sink_fn user_sink, void *user_arg)
{
	struct dp_pool *d = ctx;
	struct dp_fwd fwd = { d, user_sink, user_arg };
	mpq__pool_sink_fn sink = dp_sink;
	void *arg = &fwd;
	struct pollfd pfd[2 + 64];
	int64_t wait, now, idle;
	eventfd_t v;
	int ret, n = 2, i, carry;

	if (dp_conns(d) != d->reap_conns) {
		/*
		 * Perhaps a new server (a replica promoted, a restart) that
		 * lacks the workers' last renewals: let them renew there
		 * (each does every lease/4) before taking them for gone.
		 */
		d->reap_conns = dp_conns(d);
		d->next_reap = mpq__mgr_now() + d->lease_ns;
	}
	if (dp_conns(d) != d->conns_seen || d->recheck)
		dp_reconcile(d, sink, arg);
	if (d->npend > d->inflight && !dp_carry(d))
		dp_flush(d, sink, arg);
	if (mpq__mgr_now() >= d->next_keep)
		dp_keep(d, sink, arg);
	if (mpq__mgr_now() >= d->next_reap)
		dp_reap(d, sink, arg);
	now = mpq__mgr_now();
	wait = (d->next_keep < d->next_reap ? d->next_keep : d->next_reap) -
	       now;
	if (wait > 1000000000LL)
		wait = 1000000000LL;
	if (wait < 1000000)
		wait = 1000000;
	idle = wait;
	if (!d->waiting && d->njobs) {
		/* Again: keep and reap may have answered some (dead letters). */
		carry = dp_carry(d);
		ret = dp_wait_send(d, wait, carry);
		if (ret) {
			/* The manager is away: try again after a pause. */
			usleep(100000);
			return ret;
		}
	} else if (d->waiting && now > d->wait_until + d->wm->timeout_ns) {
		/* The reply is past its time: on a new connection. */
		mpq__mgr_conn_drop(d->wm);
		d->waiting = 0;
		d->no_carry = d->inflight != 0;
		d->inflight = 0;
		return -ETIMEDOUT;
	}
	/* Replies read with the last ones (hiredis's buffer): no poll. */
	if (d->waiting && mpq__mgr_pending(d->wm))
		return dp_wait_recv(d, sink, arg);
	pfd[0].fd = d->waiting ? mpq__mgr_fd(d->wm) : -1;
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
	wait = d->waiting ? d->wait_until - now + 1000000 : idle;
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
	const char *args[2];
	long long v;

	if (!d)
		return;
	args[0] = d->announce;
	args[1] = d->prefix;
	/*
	 * Our workers first, then the keys: nothing of ours writes to them
	 * after. A remote worker finds the pool gone at its next lease
	 * (lease_lua) or result (dp_worker_send); what a result it sends
	 * meanwhile makes again expires within ttl.
	 */
	dp_stop_local(d);
	mpq__mgr_eval_int(d->m, &drop_lua, &v, DP_NKEYS,
			  (const char **)d->keys, 2, args, NULL);
	dp_free(d);
}

/* ---- the worker's side ------------------------------------------------ */

/* A worker's keys for the pool it serves. */
enum { W_ANN, W_RES, W_READY, W_LIST, W_HB, W_WORKERS, W_NKEYS };

struct dp_worker {
	struct mpq_manager *m;
	char *pool;
	char who[128];
	char wid[24];		/* this process's name in the pool's keys */
	uint64_t table;
	uint32_t ntasks;
	char *ann_key;

	/* The pool served now. */
	char id[24];
	char *keys[W_NKEYS];
	char ttl[24];
	char lease_ms[24];
	int64_t lease_ns;

	/*
	 * id, keys, ttl and the lease change under lock (in the main
	 * thread), which the renewing thread holds while it renews.
	 */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	char *url, *authkey;

	struct mpq__pool_runner *runner;

	/* The pool's initializer ran for this pool; tasks run since. */
	char init_id[24];
	uint32_t maxtasks, ran;

	/* The last take that set the lease: when, for which pool, on
	   which connection (dp_worker_take). */
	int64_t hb_at;
	char hb_id[24];
	unsigned long hb_conns;
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

/*
 * KEYS: announcement, hb, workers, the worker's list. ARGV: pool id,
 * worker name, lease_ms, ttl_ms. The worker's lease (hb) for lease_ms,
 * its name in the set of workers, and the expiry of the set and of its
 * list; only while the announcement names the pool, so that no key of a
 * pool that ended is made again. -2: the pool is gone.
 */
static struct mgr_script lease_lua = { .src =
	"local v = redis.call('GET', KEYS[1]) "
	"if not v or string.sub(v, 1, #ARGV[1] + 1) ~= ARGV[1] .. ' ' then "
	"return -2 end "
	"redis.call('SET', KEYS[2], '1', 'PX', ARGV[3]) "
	"redis.call('SADD', KEYS[3], ARGV[2]) "
	"redis.call('PEXPIRE', KEYS[3], ARGV[4]) "
	"redis.call('PEXPIRE', KEYS[4], ARGV[4]) return 0" };

/*
 * The worker's lease in the keys k of pool id: from the renewing thread
 * every lease/4, and on joining a pool. One round trip; 0, -2 (the pool
 * is gone) or a negative errno.
 */
static int dp_worker_lease(struct mpq_manager *m, const char *id,
			   const char *wid, char *const *k,
			   const char *lease_ms, const char *ttl)
{
	const char *keys[4] = { k[W_ANN], k[W_HB], k[W_WORKERS], k[W_LIST] };
	const char *args[4] = { id, wid, lease_ms, ttl };
	long long v;
	int ret = mpq__mgr_eval_int(m, &lease_lua, &v, 4, keys, 4, args,
				    NULL);

	return ret ? ret : (int)v;
}

static void dp_keys_free(char **k)
{
	int i;

	for (i = 0; i < W_NKEYS; i++) {
		free(k[i]);
		k[i] = NULL;
	}
}

/*
 * Every lease/4, whether a task runs or not: the lease of a worker that
 * lives never runs out (a task longer than its lease is not handed out
 * again), and one of a worker that died or was cut off does, within a
 * lease. Its own connection: the main thread may be in a task, or
 * blocked waiting for one.
 */
static void *dp_renew_main(void *arg)
{
	struct dp_worker *w = arg;
	struct mpq_manager *m = NULL;
	struct timespec ts;
	int64_t period;

	pthread_mutex_lock(&w->lock);
	for (;;) {
		period = w->lease_ns / 4;
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
		if (!w->id[0])
			continue;
		if (!m) {
			pthread_mutex_unlock(&w->lock);
			mpq_manager_connect(&m, w->url, w->authkey, 0);
			pthread_mutex_lock(&w->lock);
		}
		/* The main thread waits for the lock only to change pools. */
		if (m && w->id[0])
			dp_worker_lease(m, w->id, w->wid, w->keys, w->lease_ms,
					w->ttl);
	}
	return NULL;
}

static void dp_worker_drop_pool(struct dp_worker *w)
{
	pthread_mutex_lock(&w->lock);
	dp_keys_free(w->keys);
	w->id[0] = 0;
	pthread_mutex_unlock(&w->lock);
	w->hb_at = 0;	/* the next take sets the lease, whatever pool */
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
	static const char *const what[W_NKEYS] = {
		[W_RES] = "res", [W_READY] = "ready", [W_WORKERS] = "workers",
	};
	const char *argv[2] = { "GET", w->ann_key };
	char id[24], sfx[64];
	unsigned long long table;
	long long lease_ms;
	unsigned int ntasks, maxd;
	int ret, i, with_init = 0, version = 1;
	redisReply *r;

	if (mpq__mgr_command(w->m, &r, 2, argv, NULL, 0))
		return 0;
	/*
	 * A sixth field (with_init) since maxtasksperchild and initializers,
	 * a seventh (the task messages' version) since they have keys of
	 * their own (DP_VERSION 2).
	 */
	if (r->type != REDIS_REPLY_STRING ||
	    sscanf(r->str, "%23s %llx %u %lld %u %d %d", id, &table,
		   &ntasks, &lease_ms, &maxd, &with_init, &version) < 5 ||
	    lease_ms <= 0 ||
	    lease_ms > 1000000000LL) {
		freeReplyObject(r);
		return 0;
	}
	freeReplyObject(r);
	if (version != DP_VERSION) {
		fprintf(stderr, "mpq pool worker %s: refused by pool \"%s\": "
			"it hands out tasks in the distributed pool's protocol "
			"version %d, this worker's libmpq-net speaks version "
			"%d\n", w->who, w->pool, version, DP_VERSION);
		exit(3);
	}
	if (table != w->table) {
		fprintf(stderr, "mpq pool worker %s: refused by pool \"%s\": "
			"its task table (%u tasks, hash %016llx) is not this "
			"program's (%u tasks, hash %016llx); built from another "
			"version of the program?\n", w->who, w->pool, ntasks,
			table, w->ntasks, (unsigned long long)w->table);
		exit(3);
	}
	if (!strcmp(id, w->id))
		return 1;
	/* The renewing thread leaves keys alone while id is empty. */
	dp_worker_drop_pool(w);
	w->keys[W_ANN] = strdup(w->ann_key);
	for (i = 1; i < W_NKEYS; i++)
		if (what[i])
			w->keys[i] = dp_key(w->m, w->pool, id, what[i]);
	snprintf(sfx, sizeof(sfx), "w.%s", w->wid);
	w->keys[W_LIST] = dp_key(w->m, w->pool, id, sfx);
	snprintf(sfx, sizeof(sfx), "hb.%s", w->wid);
	w->keys[W_HB] = dp_key(w->m, w->pool, id, sfx);
	for (i = 0; i < W_NKEYS; i++)
		if (!w->keys[i])
			goto fail;
	snprintf(w->lease_ms, sizeof(w->lease_ms), "%lld", lease_ms);
	snprintf(w->ttl, sizeof(w->ttl), "%lld", 2 * lease_ms + 1000);
	/* Leased before the first take; renewed from now on. */
	if (dp_worker_lease(w->m, id, w->wid, w->keys, w->lease_ms, w->ttl))
		goto fail;
	if (strcmp(id, w->init_id)) {
		ret = dp_worker_join(w, id, with_init);
		if (ret)
			goto fail;
	}
	pthread_mutex_lock(&w->lock);
	w->lease_ns = lease_ms * 1000000LL;
	snprintf(w->id, sizeof(w->id), "%s", id);
	/* Its period may be the last pool's: renew on this one's. */
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
	return 1;
fail:
	dp_worker_drop_pool(w);
	return 0;
}

/*
 * The next message, moved from ready into this worker's list, waiting up
 * to a second: 1 (*r its reply), 0 none, or a negative errno. In the same
 * write, before it, the worker's lease and its name in the set of workers
 * (so that whatever the list holds is reaped, should the worker die, even
 * if a lease that lapsed had taken it out of the set), and after it the
 * list's expiry (for a worker that dies holding it when the pool has
 * ended too). A pool that ended meanwhile gets these keys again, each
 * with an expiry, until the worker sees it gone (its next take, a second
 * at most, finds nothing).
 *
 * The lease and the name are sent only when the last take that sent them
 * is older than lease/8 (or was for another pool or connection): until a
 * lease set then runs out, nothing takes the worker out of the set, and
 * the renewing thread sets it every lease/4 besides. Three commands fewer
 * for the server on each task of a busy worker, a task's round trip being
 * mostly the server's work.
 */
static int dp_worker_take(struct dp_worker *w, redisReply **r)
{
	char secs[32];
	const char *hb[5] = { "SET", w->keys[W_HB], "1", "PX", w->lease_ms };
	const char *add[3] = { "SADD", w->keys[W_WORKERS], w->wid };
	const char *xs[3] = { "PEXPIRE", w->keys[W_WORKERS], w->ttl };
	const char *move[6] = { "BLMOVE", w->keys[W_READY], w->keys[W_LIST],
				"LEFT", "RIGHT", secs };
	const char *xl[3] = { "PEXPIRE", w->keys[W_LIST], w->ttl };
	const struct mgr_cmd c[5] = {
		{ 5, hb, NULL }, { 3, add, NULL }, { 3, xs, NULL },
		{ 6, move, NULL }, { 3, xl, NULL },
	};
	int64_t wait = mpq__mgr_block_secs(secs, 1000000000LL);
	int64_t now = mpq__mgr_now();
	int fresh = now - w->hb_at < w->lease_ns / 8 &&
		    w->hb_conns == w->m->conns && !strcmp(w->hb_id, w->id);
	int ret = fresh ? mpq__mgr_pipeline_at(w->m, r, 2, c + 3, wait, 0) :
			  mpq__mgr_pipeline_at(w->m, r, 5, c, wait, 3);

	if (ret)
		return ret;
	if (!fresh) {
		w->hb_at = now;
		w->hb_conns = w->m->conns;
		snprintf(w->hb_id, sizeof(w->hb_id), "%s", w->id);
	}
	if ((*r)->type == REDIS_REPLY_STRING)
		return 1;
	freeReplyObject(*r);
	*r = NULL;
	return 0;
}

/*
 * Send res: with done, in one transaction with letting the message go
 * (the worker's list deleted) and reading the announcement. 0, -2 when
 * the announcement no longer names the pool, or a negative errno. The
 * results key gets an expiry with each push: a pool that ended is not
 * made again for ever.
 */
static int dp_worker_send(struct dp_worker *w, struct buf *res, int done)
{
	const char *multi[1] = { "MULTI" };
	const char *push[3] = { "RPUSH", w->keys[W_RES], (const char *)res->p };
	const size_t plens[3] = { 5, strlen(w->keys[W_RES]), res->len };
	const char *exp[3] = { "PEXPIRE", w->keys[W_RES], w->ttl };
	const char *del[2] = { "DEL", w->keys[W_LIST] };
	const char *get[2] = { "GET", w->keys[W_ANN] };
	const char *exec[1] = { "EXEC" };
	const struct mgr_cmd c[6] = {
		{ 1, multi, NULL }, { 3, push, plens }, { 3, exp, NULL },
		{ 2, del, NULL }, { 2, get, NULL }, { 1, exec, NULL },
	};
	size_t idl = strlen(w->id);
	redisReply *r, *a;
	int ret;

	/* Not done: the push and its expiry alone. */
	ret = done ? mpq__mgr_pipeline(w->m, &r, 6, c, 0) :
		     mpq__mgr_pipeline(w->m, &r, 2, c + 1, 0);
	if (ret || !done) {
		if (!ret)
			freeReplyObject(r);
		return ret;
	}
	ret = -EPROTO;
	if (r->type == REDIS_REPLY_ARRAY && r->elements == 4 &&
	    r->element[0]->type == REDIS_REPLY_INTEGER) {
		a = r->element[3];
		ret = a->type == REDIS_REPLY_STRING && a->len > idl &&
		      !memcmp(a->str, w->id, idl) && a->str[idl] == ' ' ?
		      0 : -2;
	}
	freeReplyObject(r);
	return ret;
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

/* Let a message go with no result (malformed): the worker's list goes. */
static void dp_worker_drop_msg(struct dp_worker *w, size_t len)
{
	const char *del[2] = { "DEL", w->keys[W_LIST] };
	redisReply *r;

	fprintf(stderr, "mpq pool worker %s: a malformed task message "
		"(%zu bytes) was dropped\n", w->who, len);
	if (!mpq__mgr_command(w->m, &r, 2, del, NULL, 0))
		freeReplyObject(r);
}

/* Run one task message: its results back, then done; -2: the pool ended. */
static int dp_worker_run(struct dp_worker *w, const unsigned char *p,
			 size_t len)
{
	struct mpq__pool_out out;
	struct buf res = { 0 };
	struct dp_task h;
	struct iovec *args = NULL;
	char name[256], why[512];
	mpq_task_fn fn;
	size_t off;
	uint64_t l;
	uint32_t i, k, valid, deliveries;
	int back, each, ret = 0;

	if (len < sizeof(h)) {
		dp_worker_drop_msg(w, len);
		return 0;
	}
	memcpy(&h, p, sizeof(h));
	if (h.magic != DP_TASK_MAGIC || h.version != DP_VERSION ||
	    h.name_len == 0 || h.name_len >= sizeof(name) ||
	    len - sizeof(h) < h.name_len) {
		dp_worker_drop_msg(w, len);
		return 0;
	}
	memcpy(name, p + sizeof(h), h.name_len);
	name[h.name_len] = 0;
	off = sizeof(h) + align8(h.name_len);
	args = calloc(h.count ? h.count : 1, sizeof(*args));
	if (!args)
		return -ENOMEM;
	/* The arguments that are whole; the rest fail as malformed. */
	for (valid = 0; valid < h.count; valid++) {
		if (off > len || len - off < 8)
			break;
		memcpy(&l, p + off, sizeof(l));
		if (l > len - off - 8)
			break;
		args[valid].iov_base = (void *)(p + off + 8);
		args[valid].iov_len = l;
		off += 8 + align8(l);
	}
	fn = dp_lib->task_by_name(name, h.name_len);
	/* This delivery is the one after those reap_lua counted. */
	deliveries = le32toh(h.deliveries) + 1;
	/* Delivered again: item by item, in the other direction each time. */
	back = deliveries % 2 == 0;
	each = deliveries > 1;
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
			dp_worker_send(w, &res, 0);
	}
	if (res.p)
		ret = dp_worker_send(w, &res, 1);
	free(res.p);
	free(args);
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

/*
 * A new name for this worker in the pool's keys: after a message it could
 * not let go (a send that failed, so perhaps one still in its list), the
 * old name's lease runs out and reap_lua hands out what it held; the new
 * list starts empty, and a message is never let go with another.
 */
static int dp_worker_new_wid(struct dp_worker *w)
{
	unsigned char rnd[8];
	int i;

	if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
		return -EIO;
	for (i = 0; i < 8; i++)
		snprintf(w->wid + 2 * i, 3, "%02x", rnd[i]);
	return 0;
}

static int dp_worker_serve(const char *url, const char *authkey,
			   const char *pool)
{
	struct dp_worker *w = calloc(1, sizeof(*w));
	int64_t next_find = 0;
	pthread_t renew;
	redisReply *r;
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
	w->lease_ns = DP_LEASE_NS;
	dp_worker_name(w->who, sizeof(w->who));
	if (!w->url || !w->authkey || !w->pool || !w->runner ||
	    dp_worker_new_wid(w))
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
		 * change. A pool that ended is seen by the transaction that
		 * sends results (dp_worker_send) or by a take that finds
		 * nothing.
		 */
		if (!w->id[0] || mpq__mgr_now() >= next_find) {
			if (!dp_worker_find(w)) {
				usleep(DP_IDLE_NS / 1000);
				continue;
			}
			next_find = mpq__mgr_now() + 1000000000LL;
		}
		ret = dp_worker_take(w, &r);
		if (ret == 1) {
			ret = dp_worker_run(w, (const unsigned char *)r->str,
					    r->len);
			freeReplyObject(r);
			if (ret == -2) {
				next_find = 0;
			} else if (ret < 0) {
				/* Whatever our list holds goes back. */
				dp_worker_drop_pool(w);
				if (dp_worker_new_wid(w))
					return 1;
				usleep(100000);
			}
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
