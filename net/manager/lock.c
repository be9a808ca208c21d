// SPDX-License-Identifier: MIT
/*
 * A managed Lock/RLock with a lease and a fencing token.
 *
 * Keys, under "mpq:<ns>:k:<name>":
 *   :h      hash   owner, token, deadline (server clock, ms), count,
 *                  dirty (a holder died; cleared by consistent)
 *   :fence  string the last token handed out
 *   :w      list   wake list, at most one token
 *
 * The holder is a process ("host:pid:random", new after fork), so a forked
 * child does not hold its parent's lock. Nothing needs to happen when a
 * holder dies: its lease simply runs out, and the next acquire script
 * sees an owner whose deadline has passed, takes over and answers
 * -EOWNERDEAD. Waiters block on the wake list, which release pushes to,
 * and wake by themselves when the holder's lease would end.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "manager/manager.h"

struct mpq_manager_lock {
	struct mgr_obj o;	/* keys: :h, :fence, :w */
	char lease_ms[24];
	int recursive;
	pid_t holder_pid;	/* the process that holds it via this handle */
	uint64_t token;
	int depth;
	int owned;		/* a Condition's or a Value's own lock */
};

#define L_KEYS "local H, FENCE, W = KEYS[1], KEYS[2], KEYS[3]\n"

/*
 * ARGV: me, lease_ms, recursive. Returns {1, token, died} when taken,
 * {0, ms until the holder's lease ends} when not.
 */
static struct mgr_script acquire_lua = { .src = MGR_LUA_NOW L_KEYS
	"local now = now_ms() local lease = tonumber(ARGV[2]) "
	"local h = redis.call('HMGET', H, 'owner', 'deadline', 'token', "
	"'dirty') local died = 0 "
	"if h[1] then local dl = tonumber(h[2]) "
	"if dl > now then "
	"if h[1] == ARGV[1] and ARGV[3] == '1' then "
	"redis.call('HINCRBY', H, 'count', 1) "
	"redis.call('HSET', H, 'deadline', now + lease) "
	"return {1, tonumber(h[3]), 0} end "
	"return {0, dl - now} end "
	"died = 1 redis.call('HSET', H, 'dirty', 1) end "
	"if h[4] then died = 1 end "
	"local t = redis.call('INCR', FENCE) "
	"redis.call('HSET', H, 'owner', ARGV[1], 'token', t, "
	"'deadline', now + lease, 'count', 1) "
	"return {1, t, died}" };

/* ARGV: me, token. 0 released, 1 still held (RLock), -1 not ours. */
static struct mgr_script release_lua = { .src = L_KEYS
	"local h = redis.call('HMGET', H, 'owner', 'token', 'count') "
	"if h[1] ~= ARGV[1] or h[2] ~= ARGV[2] then return -1 end "
	"if tonumber(h[3]) > 1 then redis.call('HINCRBY', H, 'count', -1) "
	"return 1 end "
	"redis.call('HDEL', H, 'owner', 'token', 'deadline', 'count') "
	"if redis.call('LLEN', W) == 0 then redis.call('RPUSH', W, 1) end "
	"return 0" };

/* ARGV: me, token, lease_ms. */
static struct mgr_script renew_lua = { .src = MGR_LUA_NOW L_KEYS
	"local h = redis.call('HMGET', H, 'owner', 'token') "
	"if h[1] ~= ARGV[1] or h[2] ~= ARGV[2] then return -1 end "
	"redis.call('HSET', H, 'deadline', now_ms() + tonumber(ARGV[3])) "
	"return 0" };

/* ARGV: me, token. */
static struct mgr_script consistent_lua = { .src = L_KEYS
	"local h = redis.call('HMGET', H, 'owner', 'token') "
	"if h[1] ~= ARGV[1] or h[2] ~= ARGV[2] then return -1 end "
	"redis.call('HDEL', H, 'dirty') return 0" };

MPQ_NET_EXPORT void mpq_manager_lock_free(struct mpq_manager_lock *l)
{
	/* As mpq_lock_free: the lock of a Condition or Value is theirs. */
	if (l && l->owned)
		return;
	mpq__mgr_obj_free(l);
}

void mpq__mgr_lease_ms(char buf[24], int64_t lease_ns)
{
	snprintf(buf, 24, "%lld",
		 (long long)(lease_ns ? (lease_ns + 999999) / 1000000 : 30000));
}

MPQ_NET_EXPORT int mpq_manager_lock(struct mpq_manager *m, const char *name,
				    int recursive, int64_t lease_ns,
				    struct mpq_manager_lock **out)
{
	static const char *const sfx[3] = { ":h", ":fence", ":w" };
	struct mpq_manager_lock *l;
	int err;

	if (!out || lease_ns < 0)
		return -EINVAL;
	l = mpq__mgr_obj_new(m, 'k', name, sfx, 3, sizeof(*l), &err);
	if (!l)
		return err;
	l->recursive = !!recursive;
	mpq__mgr_lease_ms(l->lease_ms, lease_ns);
	*out = l;
	return 0;
}

/* This handle's hold, as this process sees it (not a forked parent's). */
static int holding(struct mpq_manager_lock *l)
{
	if (l->holder_pid != getpid()) {
		l->holder_pid = 0;
		l->token = 0;
		l->depth = 0;
	}
	return l->depth > 0;
}

int mpq__mgr_acquire(struct mgr_obj *o, struct mgr_script *s,
		      const char **args, int64_t timeout_ns, uint64_t *token)
{
	int64_t deadline, left, wait_ns = 0;
	const char *wait_key = NULL;
	redisReply *r;
	int err;

	deadline = timeout_ns < 0 ? -1 : mpq__mgr_now() + timeout_ns;
	for (;;) {
		/* After a wait, the BLPOP and the next try go together. */
		err = mpq__mgr_eval_after(o->m, wait_key, wait_ns, s, &r,
					  o->nkeys, (const char **)o->keys, 3,
					  args, NULL);
		if (err)
			return err;
		if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
		    r->element[0]->type != REDIS_REPLY_INTEGER ||
		    r->element[1]->type != REDIS_REPLY_INTEGER ||
		    (r->element[0]->integer == 1 && (r->elements != 3 ||
		     r->element[2]->type != REDIS_REPLY_INTEGER))) {
			freeReplyObject(r);
			return -EPROTO;
		}
		if (r->element[0]->integer == 1) {
			int died = r->element[2]->integer != 0;

			*token = r->element[1]->integer;
			freeReplyObject(r);
			return died ? -EOWNERDEAD : 0;
		}
		wait_ns = r->element[1]->integer * 1000000LL;
		freeReplyObject(r);
		if (!timeout_ns)
			return -EAGAIN;
		left = deadline < 0 ? MGR_MAX_BLOCK_NS :
			deadline - mpq__mgr_now();
		if (left <= 0)
			return -ETIMEDOUT;
		/* Until a release wakes us, or the (first) lease ends. */
		if (wait_ns <= 0 || wait_ns > left)
			wait_ns = left;
		wait_key = o->keys[o->nkeys - 1];
	}
}

MPQ_NET_EXPORT int mpq_manager_lock_acquire(struct mpq_manager_lock *l,
					    int64_t timeout_ns)
{
	const char *args[3];
	uint64_t token;
	int err;

	if (!l)
		return -EINVAL;
	holding(l);
	args[0] = mpq__mgr_owner(l->o.m);
	args[1] = l->lease_ms;
	args[2] = l->recursive ? "1" : "0";
	err = mpq__mgr_acquire(&l->o, &acquire_lua, args, timeout_ns, &token);
	if (err && err != -EOWNERDEAD)
		return err;
	l->token = token;
	l->holder_pid = getpid();
	l->depth++;
	return err;
}

int mpq__mgr_hold_script(struct mgr_obj *o, struct mgr_script *s,
			 uint64_t token, const char *lease_ms, long long *v)
{
	char tok[24];
	const char *args[3] = { mpq__mgr_owner(o->m), tok, lease_ms };

	snprintf(tok, sizeof(tok), "%llu", (unsigned long long)token);
	return mpq__mgr_eval_int(o->m, s, v, o->nkeys, (const char **)o->keys,
				 3, args, NULL);
}

/* Run s on this handle's hold: -EPERM when it holds none, -ESTALE when
 * the server says the hold is gone (the lease ran out). */
static int hold_step(struct mpq_manager_lock *l, struct mgr_script *s,
		     long long *v)
{
	int err;

	if (!l)
		return -EINVAL;
	if (!holding(l))
		return -EPERM;
	err = mpq__mgr_hold_script(&l->o, s, l->token, l->lease_ms, v);
	if (err)
		return err;
	return *v < 0 ? -ESTALE : 0;
}

MPQ_NET_EXPORT int mpq_manager_lock_release(struct mpq_manager_lock *l)
{
	long long v;
	int err = hold_step(l, &release_lua, &v);

	if (err == -ESTALE) {
		/* The lease ran out and someone else holds it now. */
		l->depth = 0;
		l->token = 0;
		return err;
	}
	if (err)
		return err;
	if (--l->depth == 0)
		l->token = 0;
	return 0;
}

MPQ_NET_EXPORT int mpq_manager_lock_renew(struct mpq_manager_lock *l)
{
	long long v;

	return hold_step(l, &renew_lua, &v);
}

MPQ_NET_EXPORT int mpq_manager_lock_consistent(struct mpq_manager_lock *l)
{
	long long v;

	return hold_step(l, &consistent_lua, &v);
}

MPQ_NET_EXPORT uint64_t mpq_manager_lock_token(struct mpq_manager_lock *l)
{
	return l && holding(l) ? l->token : 0;
}

struct mgr_obj *mpq__mgr_lock_obj(struct mpq_manager_lock *l)
{
	return &l->o;
}

int mpq__mgr_lock_hold(struct mpq_manager_lock *l, uint64_t *token,
		       int *depth)
{
	if (!holding(l))
		return -EPERM;
	*token = l->token;
	*depth = l->depth;
	return 0;
}

void mpq__mgr_lock_forget(struct mpq_manager_lock *l)
{
	l->depth = 0;
	l->token = 0;
}

int64_t mpq__mgr_waiter_lease_ms(int64_t lease_ns)
{
	return lease_ns ? (lease_ns + 999999) / 1000000 : 5000;
}

void mpq__mgr_lock_set_owned(struct mpq_manager_lock *l, int owned)
{
	l->owned = owned;
}

/* For proxy.c: 1 if anyone holds l now (a lease not run out), else 0. */
static struct mgr_script locked_lua = { .src = MGR_LUA_NOW L_KEYS
	"local h = redis.call('HMGET', H, 'owner', 'deadline') "
	"if h[1] and tonumber(h[2]) > now_ms() then return 1 end return 0" };

int mpq__mgr_lock_locked(struct mpq_manager_lock *l)
{
	long long v;
	int err = mpq__mgr_eval_int(l->o.m, &locked_lua, &v, l->o.nkeys,
				    (const char **)l->o.keys, 0, NULL, NULL);

	return err ? err : v != 0;
}
