// SPDX-License-Identifier: MIT
/*
 * A managed Barrier, with mpq_barrier's methods and meaning: wait gives
 * the arrival index, -ECANCELED when the barrier is or becomes broken
 * (Python's BrokenBarrierError), -ETIMEDOUT to the party whose wait timed
 * out (which breaks it for the others), the action's error to the party
 * that ran it.
 *
 * Keys, under "mpq:<ns>:b:<name>":
 *   :h      hash   parties (the first opener's), count (arrived in this
 *                  round), gen (the round), broken, seq (party ids),
 *                  x<gen> (that round ended broken, by a reset)
 *   :p      zset   the waiting parties of this round: id -> lease
 *                  deadline (server clock, ms)
 *   :s      stream a doorbell rung when a round ends or breaks
 *
 * A waiting party blocks on the stream (XREAD wakes them all) for a
 * third of its lease at a time, then renews its lease and looks for a
 * party whose lease ran out: one that died (or hung, or was cut off)
 * while the others wait, which breaks the barrier, as a local party that
 * dies in mpq_barrier_wait does. The state is in the hash; the stream
 * only says "look", so its trimming loses nothing.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "manager/manager.h"

struct mpq_manager_barrier {
	struct mgr_obj o;	/* keys: :h, :p, :s */
	int (*action)(void *arg);
	void *arg;
	int64_t lease_ms;
	int parties;
};

#define B_KEYS "local H, P, S = KEYS[1], KEYS[2], KEYS[3]\n" \
	"local function brk(g) if redis.call('HGET', H, 'broken') ~= '1' " \
	"then redis.call('HSET', H, 'broken', 1) " \
	"redis.call('XADD', S, 'MAXLEN', 8, '*', 'b', g) end end\n" \
	"local function done(g) redis.call('HSET', H, 'gen', g + 1, " \
	"'count', 0) redis.call('DEL', P) " \
	"redis.call('XADD', S, 'MAXLEN', 8, '*', 'g', g) end\n" \
	"local function dead(now) return redis.call('ZCOUNT', P, '-inf', " \
	"'(' .. now) > 0 end\n"

/* Results the scripts give, beside an arrival index. */
#define B_BROKEN	(-1)
#define B_FULL		(-2)	/* every party arrived; not released yet */
#define B_TIMEDOUT	(-3)

/* ARGV: parties. The first opener's parties. */
static struct mgr_script open_lua = { .src = B_KEYS
	"redis.call('HSETNX', H, 'parties', ARGV[1]) "
	"redis.call('HSETNX', H, 'count', 0) "
	"redis.call('HSETNX', H, 'gen', 0) "
	"redis.call('HSETNX', H, 'broken', 0) redis.call('ZCARD', P) "
	"redis.call('XLEN', S) "
	"return tonumber(redis.call('HGET', H, 'parties'))" };

/*
 * ARGV: lease_ms, has_action. {B_BROKEN} or {B_FULL, last id}; else
 * {state, index, gen, id, last id}: state 1 released (the last party,
 * no action), 2 run the action then finish, 0 wait.
 */
static struct mgr_script arrive_lua = { .src = MGR_LUA_NOW MGR_LUA_LAST
	B_KEYS
	"local now = now_ms() "
	"local h = redis.call('HMGET', H, 'parties', 'count', 'gen', "
	"'broken') "
	"local parties, count, gen = tonumber(h[1]), tonumber(h[2]), "
	"tonumber(h[3]) "
	"if not parties then return redis.error_reply('MPQ 2') end "
	"if h[4] == '1' then return {-1} end "
	"if dead(now) then brk(gen) return {-1} end "
	"if count >= parties then return {-2, last_id(S)} end "
	"redis.call('HSET', H, 'count', count + 1) "
	"local id = redis.call('HINCRBY', H, 'seq', 1) "
	"if count + 1 == parties and ARGV[2] == '0' then done(gen) "
	"return {1, count, gen, id, ''} end "
	"redis.call('ZADD', P, now + tonumber(ARGV[1]), id) "
	"if count + 1 == parties then return {2, count, gen, id, ''} end "
	"return {0, count, gen, id, last_id(S)}" };

/* How round ARGV[1] ended, if it did: 1 released, B_BROKEN; else nil. */
#define B_ENDED \
	"local function ended(g) local h = redis.call('HMGET', H, 'gen', " \
	"'broken') if tonumber(h[1]) ~= tonumber(g) then " \
	"if redis.call('HEXISTS', H, 'x' .. g) == 1 then return {-1} end " \
	"return {1} end if h[2] == '1' then return {-1} end return nil end\n"

/*
 * ARGV: gen, id, lease_ms. Renew this party's lease and break the
 * barrier if another's ran out. {1}, {B_BROKEN}, or {0, last id}.
 */
static struct mgr_script check_lua = { .src = MGR_LUA_NOW MGR_LUA_LAST
	B_KEYS B_ENDED
	"local e = ended(ARGV[1]) if e then return e end "
	"local now = now_ms() "
	"redis.call('ZADD', P, 'XX', now + tonumber(ARGV[3]), ARGV[2]) "
	"if dead(now) then brk(ARGV[1]) return {-1} end "
	"return {0, last_id(S)}" };

/* ARGV: gen. This party's wait timed out: {1} if it was released first,
 * {B_BROKEN} if broken first, else it breaks it: {B_TIMEDOUT}. */
static struct mgr_script timeout_lua = { .src = B_KEYS B_ENDED
	"local e = ended(ARGV[1]) if e then return e end "
	"brk(ARGV[1]) return {-3}" };

/* ARGV: gen, ok. The action ran: release the round, or break it. */
static struct mgr_script finish_lua = { .src = B_KEYS B_ENDED
	"local e = ended(ARGV[1]) if e then return e end "
	"if ARGV[2] == '1' then done(tonumber(ARGV[1])) return {1} end "
	"brk(ARGV[1]) return {-1}" };

static struct mgr_script abort_lua = { .src = B_KEYS
	"local g = redis.call('HGET', H, 'gen') "
	"if not g then return redis.error_reply('MPQ 2') end "
	"brk(g) return 0" };

/* Waiting parties of this round get -ECANCELED (x<gen>). */
static struct mgr_script reset_lua = { .src = B_KEYS
	"local h = redis.call('HMGET', H, 'gen', 'count', 'broken') "
	"local g = tonumber(h[1]) "
	"if not g then return redis.error_reply('MPQ 2') end "
	"if tonumber(h[2]) > 0 or h[3] == '1' then "
	"redis.call('HSET', H, 'x' .. g, 1) end "
	"redis.call('HDEL', H, 'x' .. (g - 64)) "
	"redis.call('HSET', H, 'gen', g + 1, 'count', 0, 'broken', 0) "
	"redis.call('DEL', P) "
	"redis.call('XADD', S, 'MAXLEN', 8, '*', 'r', g) return 0" };

/* {count, broken} */
static struct mgr_script state_lua = { .src = B_KEYS
	"local h = redis.call('HMGET', H, 'count', 'broken') "
	"if not h[1] then return redis.error_reply('MPQ 2') end "
	"return {tonumber(h[1]), tonumber(h[2])}" };

MPQ_NET_EXPORT void mpq_manager_barrier_free(struct mpq_manager_barrier *b)
{
	mpq__mgr_obj_free(b);
}

static int eval_b(struct mpq_manager_barrier *b, struct mgr_script *s,
		  redisReply **r, int nargs, const char **args)
{
	return mpq__mgr_eval(b->o.m, s, r, 3, (const char **)b->o.keys,
			     nargs, args, NULL);
}

MPQ_NET_EXPORT int mpq_manager_barrier(struct mpq_manager *m,
				       const char *name, unsigned int parties,
				       int (*action)(void *arg), void *arg,
				       int64_t lease_ns,
				       struct mpq_manager_barrier **out)
{
	static const char *const sfx[3] = { ":h", ":p", ":s" };
	struct mpq_manager_barrier *b;
	long long v;
	char p[16];
	const char *args[1] = { p };
	int err;

	if (!out || !parties || parties > 32767 || lease_ns < 0)
		return -EINVAL;
	b = mpq__mgr_obj_new(m, 'b', name, sfx, 3, sizeof(*b), &err);
	if (!b)
		return err;
	b->action = action;
	b->arg = arg;
	b->lease_ms = mpq__mgr_waiter_lease_ms(lease_ns);
	snprintf(p, sizeof(p), "%u", parties);
	err = mpq__mgr_eval_int(m, &open_lua, &v, 3, (const char **)b->o.keys,
				1, args, NULL);
	if (!err && (v < 1 || v > 32767))
		err = -EPROTO;
	if (err) {
		mpq__mgr_obj_free(b);
		return err;
	}
	b->parties = v;		/* the first opener's */
	*out = b;
	return 0;
}

/* {code} or {code, ...}: the first element, an integer. */
static int first(const redisReply *r, long long *v)
{
	if (r->type != REDIS_REPLY_ARRAY || !r->elements ||
	    r->element[0]->type != REDIS_REPLY_INTEGER)
		return -EPROTO;
	*v = r->element[0]->integer;
	return 0;
}

static int code_err(long long c)
{
	return c == B_TIMEDOUT ? -ETIMEDOUT : -ECANCELED;
}

/* The last id in element i, copied to id[48]. */
static int copy_id(const redisReply *r, size_t i, char *id)
{
	if (r->elements <= i || r->element[i]->type != REDIS_REPLY_STRING ||
	    r->element[i]->len >= 48)
		return -EPROTO;
	memcpy(id, r->element[i]->str, r->element[i]->len);
	id[r->element[i]->len] = 0;
	return 0;
}

MPQ_NET_EXPORT int mpq_manager_barrier_wait(struct mpq_manager_barrier *b,
					    int64_t timeout_ns)
{
	char lease[24], gen[24], pid[24], id[48];
	const char *args[3];
	int64_t deadline, left, chunk;
	long long c, index = 0;
	redisReply *r;
	int err;

	if (!b || timeout_ns < MPQ_FOREVER)
		return -EINVAL;
	deadline = mpq__mgr_now() + timeout_ns;
	snprintf(lease, sizeof(lease), "%lld", (long long)b->lease_ms);
	chunk = b->lease_ms * 1000000LL / 3;
	for (;;) {
		args[0] = lease;
		args[1] = b->action ? "1" : "0";
		err = eval_b(b, &arrive_lua, &r, 2, args);
		if (err)
			return err;
		err = first(r, &c);
		if (!err && c == B_FULL)
			err = copy_id(r, 1, id);
		if (!err && c >= 0 && (r->elements != 5 ||
				       r->element[1]->type != REDIS_REPLY_INTEGER ||
				       r->element[2]->type != REDIS_REPLY_INTEGER ||
				       r->element[3]->type != REDIS_REPLY_INTEGER))
			err = -EPROTO;
		if (!err && c >= 0) {
			index = r->element[1]->integer;
			snprintf(gen, sizeof(gen), "%lld",
				 r->element[2]->integer);
			snprintf(pid, sizeof(pid), "%lld",
				 r->element[3]->integer);
			if (c == 0)
				err = copy_id(r, 4, id);
		}
		freeReplyObject(r);
		if (err)
			return err;
		if (c == B_BROKEN)
			return -ECANCELED;
		if (c != B_FULL)
			break;
		/* The round is full of parties on their way out. */
		left = timeout_ns < 0 ? chunk : deadline - mpq__mgr_now();
		if (left <= 0)
			return -ETIMEDOUT;
		err = mpq__mgr_xwait(b->o.m, b->o.keys[2], id,
				     left < chunk ? left : chunk);
		if (err < 0)
			return err;
	}
	if (c == 1)
		return index;
	if (c == 2) {
		int aerr = b->action(b->arg);

		args[0] = gen;
		args[1] = aerr ? "0" : "1";
		err = eval_b(b, &finish_lua, &r, 2, args);
		if (err)
			return err;
		err = first(r, &c);
		freeReplyObject(r);
		if (err)
			return err;
		if (aerr)
			return aerr < 0 ? aerr : -ECANCELED;
		return c == 1 ? index : code_err(c);
	}
	for (;;) {
		left = timeout_ns < 0 ? chunk : deadline - mpq__mgr_now();
		if (left <= 0) {
			args[0] = gen;
			err = eval_b(b, &timeout_lua, &r, 1, args);
			if (err)
				return err;
			err = first(r, &c);
			freeReplyObject(r);
			if (err)
				return err;
			return c == 1 ? index : code_err(c);
		}
		err = mpq__mgr_xwait(b->o.m, b->o.keys[2], id,
				     left < chunk ? left : chunk);
		if (err < 0)
			return err;
		args[0] = gen;
		args[1] = pid;
		args[2] = lease;
		err = eval_b(b, &check_lua, &r, 3, args);
		if (err)
			return err;
		err = first(r, &c);
		if (!err && c == 0)
			err = copy_id(r, 1, id);
		freeReplyObject(r);
		if (err)
			return err;
		if (c == 1)
			return index;
		if (c < 0)
			return code_err(c);
	}
}

static int simple(struct mpq_manager_barrier *b, struct mgr_script *s)
{
	long long v;

	if (!b)
		return -EINVAL;
	return mpq__mgr_eval_int(b->o.m, s, &v, 3, (const char **)b->o.keys,
				 0, NULL, NULL);
}

MPQ_NET_EXPORT int mpq_manager_barrier_abort(struct mpq_manager_barrier *b)
{
	return simple(b, &abort_lua);
}

MPQ_NET_EXPORT int mpq_manager_barrier_reset(struct mpq_manager_barrier *b)
{
	return simple(b, &reset_lua);
}

MPQ_NET_EXPORT int mpq_manager_barrier_parties(struct mpq_manager_barrier *b)
{
	return b ? b->parties : -EINVAL;
}

/* {count, broken} of the round now. */
static int state(struct mpq_manager_barrier *b, long long *count,
		 long long *broken)
{
	redisReply *r;
	int err;

	if (!b)
		return -EINVAL;
	err = eval_b(b, &state_lua, &r, 0, NULL);
	if (err)
		return err;
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[0]->type != REDIS_REPLY_INTEGER ||
	    r->element[1]->type != REDIS_REPLY_INTEGER)
		err = -EPROTO;
	else {
		*count = r->element[0]->integer;
		*broken = r->element[1]->integer;
	}
	freeReplyObject(r);
	return err;
}

MPQ_NET_EXPORT int mpq_manager_barrier_n_waiting(struct mpq_manager_barrier *b)
{
	long long count, broken;
	int err = state(b, &count, &broken);

	if (err)
		return err;
	return broken ? 0 : (int)count;
}

MPQ_NET_EXPORT int mpq_manager_barrier_broken(struct mpq_manager_barrier *b)
{
	long long count, broken;
	int err = state(b, &count, &broken);

	return err ? err : !!broken;
}
