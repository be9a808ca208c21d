// SPDX-License-Identifier: MIT
/*
 * A managed queue that loses nothing: Redis lists, a hash and a sorted
 * set, changed only by Lua scripts so each step is atomic on the server.
 *
 * Why not streams with consumer groups: XREADGROUP hands a message out
 * without its delivery count (that needs XPENDING, a second round trip),
 * XADD cannot refuse a put when the queue is full (MAXLEN trims, that is,
 * drops), and blocking on room needs a wake-up list anyway. With lists
 * and Lua one script call does reclaim + take + lease + count, and maxsize
 * is a check in the same script as the push.
 *
 * Keys, under "mpq:<ns>:q:<name>":
 *   :cfg    hash   maxsize, lease_ms, maxdeliv (the first opener's)
 *   :ready  list   ids waiting, oldest first
 *   :msg    hash   id -> payload, until done or dead-lettered
 *   :cnt    hash   id -> deliveries so far
 *   :lease  zset   id -> lease deadline (server clock, ms), while leased
 *   :seq    string the last id
 *   :unf    string messages put and not yet done (JoinableQueue)
 *   :take   list   ids a blocked getter's BLMOVE moved off :ready, for
 *                  the get script that follows it (normally empty)
 *   :wput :wjoin  wake lists, at most one token each
 * and "mpq:<ns>:l:<name>.dead", a managed list of dead letters.
 *
 * A queue without leases (MPQ_MANAGER_NO_LEASE, fixed by its first
 * opener like the rest of :cfg) keeps the payloads in :ready itself: no
 * id, no :msg, no count, since its get is for good. Then an unbounded
 * one's put is MULTI, RPUSH, INCRBY :unf, EXEC and its get a BLMPOP: no
 * Lua, which costs the server more than the commands it runs (a script
 * call and each redis.call in it a few microseconds, against a fraction
 * of one for a plain command). A getter killed after its pop loses the
 * message, as one killed after its get script ran always did.
 *
 * A blocking get is one round trip: "BLMOVE :ready :take" and the get
 * script, in one write. The BLMOVE waits on the data itself (a put's
 * RPUSH serves one blocked getter per message, no herd), and the script,
 * which Redis runs right after it, takes what :take holds before what
 * :ready holds. An id in :take is still queued: every get script takes
 * from there first and puts what it leaves back at the front of :ready,
 * and maxsize counts it, so a getter that dies between its BLMOVE and its
 * script (or whose BLMOVE timed out while another's id sat there) loses
 * and doubles nothing: the next get takes the id. Which getter gets which
 * message does not matter; one whose BLMOVE was served but whose script
 * found nothing (another took it first) just waits again.
 *
 * An expiry wakes nobody, so a blocked getter must not sleep past a
 * lease's end: every get script answers how long until the earliest lease
 * ends, and a lease made later ends a whole lease_ms after it was made;
 * so until min(that, lease_ms) after the script ran, nothing can expire
 * unseen, and the handle blocks in one round trip until then (a queue
 * without leases: always). Past it, one script alone looks first.
 *
 * Putters (maxsize) and joiners wait on wake lists: a waiter runs its
 * script, and if it must wait, BLPOPs the list (pipelined with the next
 * try). A script that makes progress possible pushes a token unless one
 * is there; a token nobody waits for costs one extra script run to
 * whoever comes next.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "manager/manager.h"

enum { K_CFG, K_READY, K_MSG, K_CNT, K_LEASE, K_SEQ, K_UNF, K_TAKE,
	K_WPUT, K_WJOIN, K_DEAD, K_N };

/* ":take" is not the old ":wget" on purpose: a getter of an older build
 * would BLPOP it as its doorbell and throw an id away. */
static const char *const suffix[K_N - 1] = {
	":cfg", ":ready", ":msg", ":cnt", ":lease", ":seq", ":unf",
	":take", ":wput", ":wjoin",
};

struct mpq_manager_queue {
	struct mpq_manager *m;
	char *keys[K_N];
	char maxsize[24], lease_ms[24], maxdeliv[24];
	int64_t lease_ns;
	uint64_t max;		/* maxsize, 0: unbounded */
	int plain;		/* no leases: payloads in :ready (above) */
	/* Until when (mpq__mgr_now) no lease can run out unseen: a get may
	 * block that long in one round trip (0: not known, INT64_MAX: the
	 * queue has no leases). */
	int64_t calm_until;
};

#define Q_KEYS \
	"local CFG, READY, MSG, CNT, LEASE, SEQ, UNF, TAKE, WPUT, WJOIN, " \
	"DEAD = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], " \
	"KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11]\n" \
	"local function wake(k) if redis.call('LLEN', k) == 0 then " \
	"redis.call('RPUSH', k, 1) end end\n"

/*
 * Leases that ran out: back to the front of :ready, or to the dead list
 * once delivered maxdeliv times. Returns how many left the queue.
 */
#define Q_RECLAIM \
	"local function reclaim(now, maxd) " \
	"local exp = redis.call('ZRANGEBYSCORE', LEASE, '-inf', now, " \
	"'LIMIT', 0, 128) local gone = 0 " \
	"for i = #exp, 1, -1 do local id = exp[i] " \
	"redis.call('ZREM', LEASE, id) " \
	"local n = tonumber(redis.call('HGET', CNT, id) or '0') " \
	"if maxd > 0 and n >= maxd then " \
	"redis.call('RPUSH', DEAD, redis.call('HGET', MSG, id) or '') " \
	"redis.call('HDEL', MSG, id) redis.call('HDEL', CNT, id) " \
	"gone = gone + 1 else redis.call('LPUSH', READY, id) end end " \
	"if gone > 0 then wake(WPUT) " \
	"if redis.call('DECRBY', UNF, gone) <= 0 then wake(WJOIN) end end " \
	"return gone end\n"

/*
 * Take up to n from the front: what a BLMOVE parked in :take first (it
 * is older than :ready's head), and what is left there back to the front
 * of :ready, where a blocked getter sees it. Ids, or a plain queue's
 * payloads; false if none.
 */
#define Q_TAKE \
	"local function take_front(n) " \
	"local ids = redis.call('LPOP', TAKE, n) " \
	"if not ids then return redis.call('LPOP', READY, n) end " \
	"if #ids < n then " \
	"local more = redis.call('LPOP', READY, n - #ids) " \
	"if more then for _, id in ipairs(more) do ids[#ids + 1] = id end " \
	"end else " \
	"while redis.call('LMOVE', TAKE, READY, 'RIGHT', 'LEFT') do end end " \
	"return ids end\n"

#define Q_PRELUDE MGR_LUA_NOW Q_KEYS Q_RECLAIM Q_TAKE

/* ARGV: maxsize, lease_ms, maxdeliv. Returns the stored three. */
static struct mgr_script open_lua = { .src = Q_KEYS
	"redis.call('HSETNX', CFG, 'maxsize', ARGV[1]) "
	"redis.call('HSETNX', CFG, 'lease_ms', ARGV[2]) "
	"redis.call('HSETNX', CFG, 'maxdeliv', ARGV[3]) "
	"return redis.call('HMGET', CFG, 'maxsize', 'lease_ms', 'maxdeliv')" };

/*
 * ARGV: maxsize, lease_ms, maxdeliv, payloads... Returns the count put.
 * One command per key for the whole batch, not one per message: a
 * script's redis.call is what costs. The RPUSH itself serves blocked
 * getters; a queue without leases has none to reclaim.
 */
static struct mgr_script put_lua = { .src = Q_PRELUDE
	"local maxsize = tonumber(ARGV[1]) "
	"if tonumber(ARGV[2]) >= 0 then "
	"reclaim(now_ms(), tonumber(ARGV[3])) end "
	"local n = #ARGV - 3 local used = 0 "
	"if maxsize > 0 then "
	"used = redis.call('LLEN', READY) + redis.call('ZCARD', LEASE) + "
	"redis.call('LLEN', TAKE) "
	"if maxsize - used < n then n = maxsize - used end "
	"if n <= 0 then return 0 end end "
	"local first = redis.call('INCRBY', SEQ, n) - n "
	"local hs, ids = {}, {} "
	"for i = 1, n do ids[i] = first + i hs[2 * i - 1] = first + i "
	"hs[2 * i] = ARGV[3 + i] end "
	"redis.call('HSET', MSG, unpack(hs)) "
	"redis.call('RPUSH', READY, unpack(ids)) "
	"redis.call('INCRBY', UNF, n) "
	"if maxsize > 0 and used + n < maxsize then wake(WPUT) end "
	"return n" };

/*
 * ARGV: maxsize, lease_ms, maxdeliv, n, final. Returns {next_ms, id,
 * count, payload, ...}: next_ms is how long until the earliest lease runs
 * out, ours included (-1: none). final "1": taken for good and done in
 * the same step (a plain Queue's get through mpq_queue_get, proxy.c).
 * What a BLMOVE parked in :take is older than :ready's head: taken first,
 * and what is left of it goes back to the front of :ready.
 */
static struct mgr_script get_lua = { .src = Q_PRELUDE
	"local lease, n = tonumber(ARGV[2]), tonumber(ARGV[4]) local now = 0 "
	"if lease >= 0 then now = now_ms() "
	"reclaim(now, tonumber(ARGV[3])) end "
	"local function next_ms() if lease < 0 then return -1 end "
	"local nx = redis.call('ZRANGE', LEASE, 0, 0, 'WITHSCORES') "
	"if nx[2] then return math.max(1, tonumber(nx[2]) - now + 1) end "
	"return -1 end "
	"local ids = take_front(n) "
	"if not ids then return {next_ms()} end "
	"local pay = redis.call('HMGET', MSG, unpack(ids)) "
	"local final = ARGV[5] == '1' "
	"if lease < 0 or final then local out = {0} "	/* taken for good */
	"redis.call('HDEL', MSG, unpack(ids)) "
	"for i, id in ipairs(ids) do out[3 * i - 1] = tonumber(id) "
	"out[3 * i] = 1 out[3 * i + 1] = pay[i] or '' end "
	"if tonumber(ARGV[1]) > 0 then wake(WPUT) end "	/* room */
	"if final then redis.call('HDEL', CNT, unpack(ids)) "
	"if redis.call('DECRBY', UNF, #ids) <= 0 then wake(WJOIN) end end "
	"out[1] = next_ms() return out end "
	"local cnt = redis.call('HMGET', CNT, unpack(ids)) "
	"local hc, z, out = {}, {}, {0} "
	"for i, id in ipairs(ids) do local c = tonumber(cnt[i] or 0) + 1 "
	"hc[2 * i - 1] = id hc[2 * i] = c "
	"z[2 * i - 1] = now + lease z[2 * i] = id "
	"out[3 * i - 1] = tonumber(id) out[3 * i] = c "
	"out[3 * i + 1] = pay[i] or '' end "
	"redis.call('HSET', CNT, unpack(hc)) "
	"redis.call('ZADD', LEASE, unpack(z)) "
	"out[1] = next_ms() return out" };

/*
 * A plain queue's (no leases, payloads in :ready) put when it is bounded:
 * ARGV as put_lua's. Returns the count put.
 */
static struct mgr_script plain_put_lua = { .src = Q_KEYS
	"local maxsize, n = tonumber(ARGV[1]), #ARGV - 3 "
	"local used = redis.call('LLEN', READY) + redis.call('LLEN', TAKE) "
	"if maxsize > 0 and maxsize - used < n then n = maxsize - used end "
	"if n <= 0 then return 0 end "
	"redis.call('RPUSH', READY, unpack(ARGV, 4, 3 + n)) "
	"redis.call('INCRBY', UNF, n) "
	"if maxsize > 0 and used + n < maxsize then wake(WPUT) end "
	"return n" };

/*
 * A plain queue's get when it is bounded (a putter may wait) or final
 * (done at once): ARGV and answer as get_lua's, each id 0.
 */
static struct mgr_script plain_get_lua = { .src = Q_KEYS Q_TAKE
	"local ps = take_front(tonumber(ARGV[4])) "
	"if not ps then return {-1} end "
	"if tonumber(ARGV[1]) > 0 then wake(WPUT) end "
	"if ARGV[5] == '1' and "
	"redis.call('DECRBY', UNF, #ps) <= 0 then wake(WJOIN) end "
	"local out = {-1} for i, p in ipairs(ps) do out[3 * i - 1] = 0 "
	"out[3 * i] = 1 out[3 * i + 1] = p end return out" };

/* ARGV: id, delivery. 0 done, -1 stale. */
static struct mgr_script done_lua = { .src = Q_KEYS
	"local c = redis.call('HGET', CNT, ARGV[1]) "
	"if c ~= ARGV[2] or not redis.call('ZSCORE', LEASE, ARGV[1]) then "
	"return -1 end "
	"redis.call('ZREM', LEASE, ARGV[1]) redis.call('HDEL', MSG, ARGV[1]) "
	"redis.call('HDEL', CNT, ARGV[1]) wake(WPUT) "
	"if redis.call('DECR', UNF) <= 0 then wake(WJOIN) end return 0" };

/* ARGV: id1, delivery1, id2, delivery2, ... Returns how many were done
 * (the rest were stale). */
static struct mgr_script done_many_lua = { .src = Q_KEYS
	"local ids = {} for i = 1, #ARGV, 2 do ids[#ids + 1] = ARGV[i] end "
	"local cnt = redis.call('HMGET', CNT, unpack(ids)) "
	"local sc = redis.call('ZMSCORE', LEASE, unpack(ids)) "
	"local ok = {} for i, id in ipairs(ids) do "
	"if cnt[i] == ARGV[2 * i] and sc[i] then ok[#ok + 1] = id end end "
	"local n = #ok if n == 0 then return 0 end "
	"redis.call('ZREM', LEASE, unpack(ok)) "
	"redis.call('HDEL', MSG, unpack(ok)) "
	"redis.call('HDEL', CNT, unpack(ok)) wake(WPUT) "
	"if redis.call('DECRBY', UNF, n) <= 0 then wake(WJOIN) end "
	"return n" };

/* ARGV: id, delivery, lease_ms. */
static struct mgr_script renew_lua = { .src = MGR_LUA_NOW Q_KEYS
	"local c = redis.call('HGET', CNT, ARGV[1]) "
	"if c ~= ARGV[2] or not redis.call('ZSCORE', LEASE, ARGV[1]) then "
	"return -1 end "
	"redis.call('ZADD', LEASE, 'XX', now_ms() + tonumber(ARGV[3]), "
	"ARGV[1]) return 0" };

/* A queue without leases: ARGV[1] messages are done (task_done). */
static struct mgr_script task_done_lua = { .src = Q_KEYS
	"wake(WPUT) if redis.call('DECRBY', UNF, tonumber(ARGV[1])) <= 0 "
	"then wake(WJOIN) end return 0" };

/* 1 if every message put is done; passes the token to other joiners. */
static struct mgr_script join_lua = { .src = Q_KEYS
	"if tonumber(redis.call('GET', UNF) or '0') <= 0 then wake(WJOIN) "
	"return 1 end return 0" };

MPQ_NET_EXPORT void mpq_manager_queue_free(struct mpq_manager_queue *q)
{
	int i;

	if (!q)
		return;
	for (i = 0; i < K_N; i++)
		free(q->keys[i]);
	free(q);
}

static int copy_cfg(char *dst, const redisReply *r)
{
	if (r->type != REDIS_REPLY_STRING || !r->len || r->len > 20)
		return -EPROTO;
	memcpy(dst, r->str, r->len);
	dst[r->len] = 0;
	return 0;
}

MPQ_NET_EXPORT int mpq_manager_queue(struct mpq_manager *m, const char *name,
				     const struct mpq_manager_queue_attr *attr,
				     struct mpq_manager_queue **out)
{
	static const struct mpq_manager_queue_attr dflt;
	const struct mpq_manager_queue_attr *a = attr ? attr : &dflt;
	struct mpq_manager_queue *q;
	const char *args[3];
	char dead[220];
	redisReply *r;
	int i, err;

	if (!m || !out || !mpq__mgr_name_ok(name) ||
	    (a->lease_ns < 0 && a->lease_ns != MPQ_MANAGER_NO_LEASE))
		return -EINVAL;
	*out = NULL;
	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->m = m;
	for (i = 0; i < K_DEAD; i++)
		q->keys[i] = mpq__mgr_key(m, 'q', name, suffix[i]);
	snprintf(dead, sizeof(dead), "%s.dead", name);
	q->keys[K_DEAD] = mpq__mgr_key(m, 'l', dead, NULL);
	for (i = 0; i < K_N; i++)
		if (!q->keys[i]) {
			mpq_manager_queue_free(q);
			return -ENOMEM;
		}
	snprintf(q->maxsize, sizeof(q->maxsize), "%llu",
		 (unsigned long long)a->maxsize);
	snprintf(q->lease_ms, sizeof(q->lease_ms), "%lld",
		 (long long)(a->lease_ns < 0 ? -1 : a->lease_ns ?
			     (a->lease_ns + 999999) / 1000000 :
			     30000));
	snprintf(q->maxdeliv, sizeof(q->maxdeliv), "%u", a->max_deliveries);
	args[0] = q->maxsize;
	args[1] = q->lease_ms;
	args[2] = q->maxdeliv;
	err = mpq__mgr_eval(m, &open_lua, &r, K_N, (const char **)q->keys, 3, args,
			NULL);
	if (err) {
		mpq_manager_queue_free(q);
		return err;
	}
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
	    copy_cfg(q->maxsize, r->element[0]) ||
	    copy_cfg(q->lease_ms, r->element[1]) ||
	    copy_cfg(q->maxdeliv, r->element[2]))
		err = -EPROTO;
	freeReplyObject(r);
	if (err) {
		mpq_manager_queue_free(q);
		return err;
	}
	q->lease_ns = strtoll(q->lease_ms, NULL, 10) * 1000000LL;
	if (q->lease_ns < 0) {
		q->lease_ns = MPQ_MANAGER_NO_LEASE;
		q->calm_until = INT64_MAX;
		q->plain = 1;
	}
	q->max = strtoull(q->maxsize, NULL, 10);
	*out = q;
	return 0;
}

static int64_t remaining(int64_t deadline)
{
	int64_t left;

	if (deadline < 0)
		return MGR_MAX_BLOCK_NS;
	left = deadline - mpq__mgr_now();
	return left > 0 ? left : 0;
}

/*
 * An unbounded plain queue's put: MULTI, RPUSH :ready, INCRBY :unf, EXEC
 * in one write. MULTI so that a putter cut off half-way through a big
 * batch leaves neither (the server runs nothing before EXEC arrives).
 */
static int plain_put(struct mpq_manager_queue *q, const struct iovec *msgs,
		     unsigned int n)
{
	const char *multi[1] = { "MULTI" }, *exec[1] = { "EXEC" };
	const char *rpush[2 + 512];
	size_t rlens[2 + 512];
	char num[16];
	const char *incr[3] = { "INCRBY", q->keys[K_UNF], num };
	struct mgr_cmd c[4] = {
		{ 1, multi, NULL }, { 2 + n, rpush, rlens },
		{ 3, incr, NULL }, { 1, exec, NULL },
	};
	redisReply *r;
	unsigned int i;
	int err;

	snprintf(num, sizeof(num), "%u", n);
	rpush[0] = "RPUSH";
	rlens[0] = 5;
	rpush[1] = q->keys[K_READY];
	rlens[1] = strlen(rpush[1]);
	for (i = 0; i < n; i++) {
		rpush[2 + i] = msgs[i].iov_base ? msgs[i].iov_base : "";
		rlens[2 + i] = msgs[i].iov_len;
	}
	err = mpq__mgr_pipeline(q->m, &r, 4, c, 0);
	if (err)
		return err;
	/* EXEC's answer: the list's length and the count, or nil (or an
	 * error, mapped above) if the transaction did not run; a command
	 * of it that failed (a key of another type) answers an error. */
	err = -EPROTO;
	if (r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
		for (i = 0, err = n; i < 2; i++)
			if (r->element[i]->type == REDIS_REPLY_ERROR)
				err = mpq__mgr_reply_err(r->element[i]);
			else if (r->element[i]->type != REDIS_REPLY_INTEGER)
				err = -EPROTO;
	}
	freeReplyObject(r);
	return err;
}

/*
 * Put msgs[0..n) (n <= 512), as many as there is room for; after a wait
 * on wait_key if it is not NULL.
 */
static int put_once(struct mpq_manager_queue *q, const struct iovec *msgs,
		    unsigned int n, const char *wait_key, int64_t wait_ns)
{
	const char *args[3 + 512];
	size_t alens[3 + 512];
	redisReply *r;
	long long put;
	unsigned int i;
	int err;

	if (q->plain && !q->max)
		return plain_put(q, msgs, n);
	args[0] = q->maxsize;
	args[1] = q->lease_ms;
	args[2] = q->maxdeliv;
	for (i = 0; i < 3; i++)
		alens[i] = strlen(args[i]);
	for (i = 0; i < n; i++) {
		args[3 + i] = msgs[i].iov_base ? msgs[i].iov_base : "";
		alens[3 + i] = msgs[i].iov_len;
	}
	err = mpq__mgr_eval_after(q->m, wait_key, wait_ns,
				  q->plain ? &plain_put_lua : &put_lua, &r,
				  K_N, (const char **)q->keys, 3 + n, args,
				  alens);
	if (err)
		return err;
	err = mpq__mgr_reply_int(r, &put);
	freeReplyObject(r);
	if (err)
		return err;
	return put < 0 || put > n ? -EPROTO : (int)put;
}

MPQ_NET_EXPORT int mpq_manager_queue_put_many(struct mpq_manager_queue *q,
					      const struct iovec *msgs,
					      unsigned int n,
					      int64_t timeout_ns)
{
	int64_t deadline = timeout_ns < 0 ? -1 : mpq__mgr_now() + timeout_ns;
	const char *wait_key = NULL;
	int64_t wait_ns = 0;
	int put;

	if (!q || !msgs || !n)
		return -EINVAL;
	if (n > 512)
		n = 512;
	for (;;) {
		/* The wait for room and the next try: one round trip. */
		put = put_once(q, msgs, n, wait_key, wait_ns);
		if (put != 0)
			return put;
		if (!timeout_ns)
			return -EAGAIN;
		wait_ns = remaining(deadline);
		if (!wait_ns)
			return -ETIMEDOUT;
		wait_key = q->keys[K_WPUT];
	}
}

MPQ_NET_EXPORT int mpq_manager_queue_put(struct mpq_manager_queue *q,
					 const void *msg, size_t len,
					 int64_t timeout_ns)
{
	struct iovec v = { (void *)msg, len };
	int err;

	if (!msg && len)
		return -EINVAL;
	err = mpq_manager_queue_put_many(q, &v, 1, timeout_ns);
	return err < 0 ? err : 0;
}

MPQ_NET_EXPORT void mpq_manager_msg_free(struct mpq_manager_msg *msg)
{
	if (!msg)
		return;
	free(msg->data);
	msg->data = NULL;
	msg->len = 0;
}

/* Take what the reply holds (-EAGAIN if none), and how long until the
 * earliest lease runs out (-1: none) in *next_ms. */
static int take(redisReply *r, struct mpq_manager_msg *msgs, unsigned int n,
		long long *next_ms)
{
	unsigned int got = 0, i;

	if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
	    (r->elements - 1) % 3 || (r->elements - 1) / 3 > n ||
	    r->element[0]->type != REDIS_REPLY_INTEGER)
		return -EPROTO;
	*next_ms = r->element[0]->integer;
	for (i = 1; i < r->elements; i += 3) {
		redisReply *id = r->element[i], *c = r->element[i + 1];
		redisReply *p = r->element[i + 2];

		if (id->type != REDIS_REPLY_INTEGER ||
		    c->type != REDIS_REPLY_INTEGER ||
		    p->type != REDIS_REPLY_STRING)
			goto bad;
		msgs[got].data = malloc(p->len ? p->len : 1);
		if (!msgs[got].data)
			goto nomem;
		memcpy(msgs[got].data, p->str, p->len);
		msgs[got].len = p->len;
		msgs[got].id = id->integer;
		msgs[got].deliveries = c->integer;
		got++;
	}
	return got ? (int)got : -EAGAIN;
bad:
	while (got)
		mpq_manager_msg_free(&msgs[--got]);
	return -EPROTO;
nomem:
	/* The messages are leased to us: they come back after the lease. */
	while (got)
		mpq_manager_msg_free(&msgs[--got]);
	return -ENOMEM;
}

/*
 * An unbounded plain queue's get (not final): BLMPOP (LMPOP when it must
 * not wait) of up to n payloads, no script. From :take first: a plain
 * Queue proxy's get (final) is the BLMOVE and script of a bounded one,
 * and what one of those left parked there is the oldest.
 */
static int plain_take(struct mpq_manager_queue *q,
		      struct mpq_manager_msg *msgs, unsigned int n,
		      int64_t timeout_ns)
{
	int64_t deadline = timeout_ns < 0 ? -1 : mpq__mgr_now() + timeout_ns;
	const char *argv[8];
	char secs[32], num[16];
	redisReply *r, *ps;
	unsigned int got, i;
	int64_t block;
	int argc, err;

	snprintf(num, sizeof(num), "%u", n);
	for (;;) {
		block = timeout_ns ? remaining(deadline) : 0;
		argc = 0;
		if (block > 0) {
			block = mpq__mgr_block_secs(secs, block);
			argv[argc++] = "BLMPOP";
			argv[argc++] = secs;
		} else {
			argv[argc++] = "LMPOP";
		}
		argv[argc++] = "2";
		argv[argc++] = q->keys[K_TAKE];
		argv[argc++] = q->keys[K_READY];
		argv[argc++] = "LEFT";
		argv[argc++] = "COUNT";
		argv[argc++] = num;
		err = mpq__mgr_command(q->m, &r, argc, argv, NULL,
				       block > 0 ? block : 0);
		if (err)
			return err;
		/* nil, or [key, [payload, ...]] */
		if (r->type == REDIS_REPLY_NIL) {
			freeReplyObject(r);
			if (!timeout_ns)
				return -EAGAIN;
			if (!remaining(deadline))
				return -ETIMEDOUT;
			continue;
		}
		if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
		    r->element[1]->type != REDIS_REPLY_ARRAY ||
		    !r->element[1]->elements || r->element[1]->elements > n) {
			freeReplyObject(r);
			return -EPROTO;
		}
		ps = r->element[1];
		for (got = 0; got < ps->elements; got++) {
			redisReply *p = ps->element[got];

			msgs[got].data = NULL;
			if (p->type != REDIS_REPLY_STRING)
				break;
			msgs[got].data = malloc(p->len ? p->len : 1);
			if (!msgs[got].data)
				break;
			memcpy(msgs[got].data, p->str, p->len);
			msgs[got].len = p->len;
			msgs[got].id = 0;
			msgs[got].deliveries = 1;
		}
		err = got == ps->elements ? 0 :
		      ps->element[got]->type != REDIS_REPLY_STRING ? -EPROTO :
		      -ENOMEM;
		freeReplyObject(r);
		if (err) {
			/* Taken for good, as a reply lost on the way is. */
			for (i = 0; i < got; i++)
				mpq_manager_msg_free(&msgs[i]);
			return err;
		}
		return (int)got;
	}
}

int mpq__mgr_queue_take(struct mpq_manager_queue *q,
			struct mpq_manager_msg *msgs, unsigned int n,
			int64_t timeout_ns, int final)
{
	int64_t deadline = timeout_ns < 0 ? -1 : mpq__mgr_now() + timeout_ns;
	int64_t sent, block;
	struct mgr_script *s;
	const char *args[5];
	char num[16];
	long long next_ms;
	redisReply *r;
	int err;

	if (!q || !msgs || !n)
		return -EINVAL;
	if (n > 512)
		n = 512;
	if (q->plain && !q->max && !final)
		return plain_take(q, msgs, n, timeout_ns);
	snprintf(num, sizeof(num), "%u", n);
	args[0] = q->maxsize;
	args[1] = q->lease_ms;
	args[2] = q->maxdeliv;
	args[3] = num;
	args[4] = final ? "1" : "0";
	s = q->plain ? &plain_get_lua : &get_lua;
	for (;;) {
		sent = mpq__mgr_now();
		block = timeout_ns ? remaining(deadline) : 0;
		if (q->calm_until - sent < block)
			block = q->calm_until - sent;
		/*
		 * The wait and the take in one round trip, whether or not
		 * there is a message; only a lease that may run out in the
		 * meantime (which wakes nobody) makes the script look alone
		 * first, and say how long the next wait may be.
		 */
		if (block > 0)
			err = mpq__mgr_eval_after_move(q->m, q->keys[K_READY],
						       q->keys[K_TAKE], block,
						       s, &r, K_N,
						       (const char **)q->keys,
						       5, args, NULL);
		else
			err = mpq__mgr_eval(q->m, s, &r, K_N,
					    (const char **)q->keys, 5, args,
					    NULL);
		if (err)
			return err;
		err = take(r, msgs, n, &next_ms);
		freeReplyObject(r);
		if (q->lease_ns != MPQ_MANAGER_NO_LEASE && err != -EPROTO) {
			/* The script ran after sent; a lease made after it
			 * ends a whole lease after it. */
			block = q->lease_ns;
			if (next_ms >= 0 && next_ms * 1000000LL < block)
				block = next_ms * 1000000LL;
			q->calm_until = sent + block;
		}
		if (err != -EAGAIN)
			return err;
		if (!timeout_ns)
			return -EAGAIN;
		if (!remaining(deadline))
			return -ETIMEDOUT;
	}
}

MPQ_NET_EXPORT int mpq_manager_queue_get_many(struct mpq_manager_queue *q,
					      struct mpq_manager_msg *msgs,
					      unsigned int n,
					      int64_t timeout_ns)
{
	return mpq__mgr_queue_take(q, msgs, n, timeout_ns, 0);
}

MPQ_NET_EXPORT int mpq_manager_queue_get(struct mpq_manager_queue *q,
					 struct mpq_manager_msg *msg,
					 int64_t timeout_ns)
{
	int err = mpq_manager_queue_get_many(q, msg, 1, timeout_ns);

	return err < 0 ? err : 0;
}

static int task_done(struct mpq_manager_queue *q, unsigned int n)
{
	char num[16];
	const char *args[1] = { num };
	redisReply *r;
	int err;

	snprintf(num, sizeof(num), "%u", n);
	err = mpq__mgr_eval(q->m, &task_done_lua, &r, K_N,
			    (const char **)q->keys, 1, args, NULL);
	if (!err)
		freeReplyObject(r);
	return err;
}

static int msg_script(struct mpq_manager_queue *q, struct mgr_script *s,
		      const struct mpq_manager_msg *msg)
{
	char id[24], c[16];
	const char *args[3] = { id, c, q->lease_ms };
	long long v;
	int err;

	snprintf(id, sizeof(id), "%llu", (unsigned long long)msg->id);
	snprintf(c, sizeof(c), "%u", msg->deliveries);
	err = mpq__mgr_eval_int(q->m, s, &v, K_N, (const char **)q->keys, 3,
				args, NULL);
	if (err)
		return err;
	return v == 0 ? 0 : -ESTALE;
}

MPQ_NET_EXPORT int mpq_manager_msg_done(struct mpq_manager_queue *q,
					struct mpq_manager_msg *msg)
{
	int err;

	if (!q || !msg)
		return -EINVAL;
	if (q->lease_ns == MPQ_MANAGER_NO_LEASE)
		err = task_done(q, 1);
	else
		err = msg_script(q, &done_lua, msg);
	/* A transport error leaves the message ours to try again. */
	if (err == 0 || err == -ESTALE)
		mpq_manager_msg_free(msg);
	return err;
}

MPQ_NET_EXPORT int mpq_manager_msg_done_many(struct mpq_manager_queue *q,
					     struct mpq_manager_msg *msgs,
					     unsigned int n)
{
	char (*nums)[24];
	const char **args;
	long long done;
	unsigned int i;
	int err = -ENOMEM;

	if (!q || !msgs || !n || n > 512)
		return -EINVAL;
	if (q->lease_ns == MPQ_MANAGER_NO_LEASE) {
		err = task_done(q, n);
		if (err)
			return err;
		for (i = 0; i < n; i++)
			mpq_manager_msg_free(&msgs[i]);
		return n;
	}
	nums = malloc(2 * n * sizeof(*nums));
	args = malloc(2 * n * sizeof(*args));
	if (!nums || !args)
		goto out;
	for (i = 0; i < 2 * n; i += 2) {
		snprintf(nums[i], 24, "%llu",
			 (unsigned long long)msgs[i / 2].id);
		snprintf(nums[i + 1], 24, "%u", msgs[i / 2].deliveries);
		args[i] = nums[i];
		args[i + 1] = nums[i + 1];
	}
	err = mpq__mgr_eval_int(q->m, &done_many_lua, &done, K_N,
				(const char **)q->keys, 2 * n, args, NULL);
	if (!err) {
		for (i = 0; i < n; i++)
			mpq_manager_msg_free(&msgs[i]);
		err = done;
	}
out:
	free(nums);
	free(args);
	return err;
}

MPQ_NET_EXPORT int mpq_manager_msg_renew(struct mpq_manager_queue *q,
					 struct mpq_manager_msg *msg)
{
	if (!q || !msg)
		return -EINVAL;
	if (q->lease_ns == MPQ_MANAGER_NO_LEASE)
		return 0;
	return msg_script(q, &renew_lua, msg);
}

static int64_t int_cmd(struct mpq_manager_queue *q, const char *verb, int k)
{
	const char *argv[2] = { verb, q->keys[k] };
	redisReply *r;
	long long n = 0;
	int err;

	err = mpq__mgr_command(q->m, &r, 2, argv, NULL, 0);
	if (err)
		return err;
	if (r->type == REDIS_REPLY_STRING)
		n = strtoll(r->str, NULL, 10);
	else if (r->type != REDIS_REPLY_NIL)
		err = mpq__mgr_reply_int(r, &n);
	freeReplyObject(r);
	return err ? err : n;
}

/* What waits, a parked id included (it is still queued). */
static struct mgr_script size_lua = { .src = Q_KEYS
	"return redis.call('LLEN', READY) + redis.call('LLEN', TAKE)" };

MPQ_NET_EXPORT int64_t mpq_manager_queue_size(struct mpq_manager_queue *q)
{
	long long v;
	int err;

	if (!q)
		return -EINVAL;
	err = mpq__mgr_eval_int(q->m, &size_lua, &v, K_N,
				(const char **)q->keys, 0, NULL, NULL);
	return err ? err : v;
}

MPQ_NET_EXPORT int64_t mpq_manager_queue_unfinished(
	struct mpq_manager_queue *q)
{
	return q ? int_cmd(q, "GET", K_UNF) : -EINVAL;
}

MPQ_NET_EXPORT int mpq_manager_queue_join(struct mpq_manager_queue *q,
					  int64_t timeout_ns)
{
	int64_t deadline = timeout_ns < 0 ? -1 : mpq__mgr_now() + timeout_ns;
	long long v;
	int err;

	if (!q)
		return -EINVAL;
	for (;;) {
		err = mpq__mgr_eval_int(q->m, &join_lua, &v, K_N,
					(const char **)q->keys, 0, NULL, NULL);
		if (err || v == 1)
			return err;
		if (!timeout_ns)
			return -EAGAIN;
		if (!remaining(deadline))
			return -ETIMEDOUT;
		err = mpq__mgr_wait(q->m, q->keys[K_WJOIN], remaining(deadline));
		if (err)
			return err;
	}
}

/* For proxy.c: the queue's bound (0: none), whether it leases, and how
 * much of the bound is used (queued + leased). */
uint64_t mpq__mgr_queue_maxsize(struct mpq_manager_queue *q)
{
	return strtoull(q->maxsize, NULL, 10);
}

int mpq__mgr_queue_leases(struct mpq_manager_queue *q)
{
	return q->lease_ns != MPQ_MANAGER_NO_LEASE;
}

static struct mgr_script used_lua = { .src = Q_KEYS
	"return redis.call('LLEN', READY) + redis.call('ZCARD', LEASE) + "
	"redis.call('LLEN', TAKE)" };

int64_t mpq__mgr_queue_used(struct mpq_manager_queue *q)
{
	long long v;
	int err = mpq__mgr_eval_int(q->m, &used_lua, &v, K_N,
				    (const char **)q->keys, 0, NULL, NULL);

	return err ? err : v;
}
