// SPDX-License-Identifier: MIT
/*
 * A managed Semaphore (bounded: value units at most) whose holders hold
 * leases, as the Lock's do (lock.c): a holder that dies or is cut off
 * loses its unit when its lease ends, and the acquirer that takes the
 * expired unit back gets -EOWNERDEAD.
 *
 * Keys, under "mpq:<ns>:s:<name>":
 *   :cfg    hash   value (the first opener's)
 *   :h      zset   "owner/token" -> lease deadline (server clock, ms)
 *   :fence  string the last token handed out
 *   :w      list   wake list, at most one token
 *
 * A process may hold several units; this handle keeps the tokens of the
 * ones it holds, and release gives back the last one taken.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "manager/manager.h"

#define SEM_MAX_HELD	64

struct mpq_manager_sem {
	struct mpq_manager *m;
	char *keys[4];
	char lease_ms[24], value[24];
	pid_t pid;
	int held;
	uint64_t tokens[SEM_MAX_HELD];
};

#define S_KEYS "local CFG, H, FENCE, W = KEYS[1], KEYS[2], KEYS[3], KEYS[4]\n"

static struct mgr_script open_lua = { .src = S_KEYS
	"redis.call('HSETNX', CFG, 'value', ARGV[1]) "
	"return redis.call('HGET', CFG, 'value')" };

/*
 * ARGV: me, lease_ms, value. {1, token, died} when taken; {0, ms until
 * the first lease ends (-1: none)} when not.
 */
static struct mgr_script acquire_lua = { .src = MGR_LUA_NOW S_KEYS
	"local now = now_ms() local died = 0 "
	"if redis.call('ZREMRANGEBYSCORE', H, '-inf', now) > 0 then "
	"died = 1 end "
	"if redis.call('ZCARD', H) < tonumber(ARGV[3]) then "
	"local t = redis.call('INCR', FENCE) "
	"redis.call('ZADD', H, now + tonumber(ARGV[2]), ARGV[1] .. '/' .. t) "
	"return {1, t, died} end "
	"local nx = redis.call('ZRANGE', H, 0, 0, 'WITHSCORES') "
	"return {0, math.max(1, tonumber(nx[2]) - now + 1)}" };

/* ARGV: me, token. 0 released, -1 not held (its lease ran out). */
static struct mgr_script release_lua = { .src = S_KEYS
	"if redis.call('ZREM', H, ARGV[1] .. '/' .. ARGV[2]) == 0 then "
	"return -1 end "
	"if redis.call('LLEN', W) == 0 then redis.call('RPUSH', W, 1) end "
	"return 0" };

/* ARGV: me, token, lease_ms. */
static struct mgr_script renew_lua = { .src = MGR_LUA_NOW S_KEYS
	"if redis.call('ZADD', H, 'XX', 'CH', now_ms() + tonumber(ARGV[3]), "
	"ARGV[1] .. '/' .. ARGV[2]) == 0 then return -1 end return 0" };

MPQ_NET_EXPORT void mpq_manager_sem_free(struct mpq_manager_sem *s)
{
	int i;

	if (!s)
		return;
	for (i = 0; i < 4; i++)
		free(s->keys[i]);
	free(s);
}

MPQ_NET_EXPORT int mpq_manager_sem(struct mpq_manager *m, const char *name,
				   unsigned int value, int64_t lease_ns,
				   struct mpq_manager_sem **out)
{
	static const char *const sfx[4] = { ":cfg", ":h", ":fence", ":w" };
	struct mpq_manager_sem *s;
	const char *args[1];
	redisReply *r;
	int i, err;

	if (!m || !out || !mpq__mgr_name_ok(name) || lease_ns < 0 || !value)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->m = m;
	for (i = 0; i < 4; i++) {
		s->keys[i] = mpq__mgr_key(m, 's', name, sfx[i]);
		if (!s->keys[i]) {
			mpq_manager_sem_free(s);
			return -ENOMEM;
		}
	}
	snprintf(s->lease_ms, sizeof(s->lease_ms), "%lld",
		 (long long)(lease_ns ? (lease_ns + 999999) / 1000000 : 30000));
	snprintf(s->value, sizeof(s->value), "%u", value);
	args[0] = s->value;
	err = mpq__mgr_eval(m, &open_lua, &r, 4, (const char **)s->keys, 1,
			    args, NULL);
	if (err) {
		mpq_manager_sem_free(s);
		return err;
	}
	if (r->type != REDIS_REPLY_STRING || !r->len || r->len > 20) {
		freeReplyObject(r);
		mpq_manager_sem_free(s);
		return -EPROTO;
	}
	memcpy(s->value, r->str, r->len);	/* the first opener's value */
	s->value[r->len] = 0;
	freeReplyObject(r);
	*out = s;
	return 0;
}

static void forget_parent(struct mpq_manager_sem *s)
{
	if (s->pid != getpid()) {
		s->pid = getpid();
		s->held = 0;	/* a forked child holds none of them */
	}
}

MPQ_NET_EXPORT int mpq_manager_sem_acquire(struct mpq_manager_sem *s,
					   int64_t timeout_ns)
{
	int64_t deadline, left, wait_ns = 0;
	const char *args[3], *wait_key = NULL;
	redisReply *r;
	int err;

	if (!s)
		return -EINVAL;
	forget_parent(s);
	if (s->held == SEM_MAX_HELD)
		return -EOVERFLOW;
	deadline = timeout_ns < 0 ? -1 : mpq__mgr_now() + timeout_ns;
	args[0] = mpq__mgr_owner(s->m);
	args[1] = s->lease_ms;
	args[2] = s->value;
	for (;;) {
		err = mpq__mgr_eval_after(s->m, wait_key, wait_ns, &acquire_lua,
					  &r, 4, (const char **)s->keys, 3,
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

			s->tokens[s->held++] = r->element[1]->integer;
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
		/* Until a release wakes us, or the first lease ends. */
		if (wait_ns <= 0 || wait_ns > left)
			wait_ns = left;
		wait_key = s->keys[3];
	}
}

static int held_script(struct mpq_manager_sem *s, struct mgr_script *sc,
		       uint64_t token)
{
	char tok[24];
	const char *args[3] = { mpq__mgr_owner(s->m), tok, s->lease_ms };
	redisReply *r;
	long long v;
	int err;

	snprintf(tok, sizeof(tok), "%llu", (unsigned long long)token);
	err = mpq__mgr_eval(s->m, sc, &r, 4, (const char **)s->keys, 3, args,
			    NULL);
	if (err)
		return err;
	err = mpq__mgr_reply_int(r, &v);
	freeReplyObject(r);
	if (err)
		return err;
	return v < 0 ? -ESTALE : 0;
}

MPQ_NET_EXPORT int mpq_manager_sem_release(struct mpq_manager_sem *s)
{
	int err;

	if (!s)
		return -EINVAL;
	forget_parent(s);
	if (!s->held)
		return -EPERM;	/* BoundedSemaphore: more releases than acquires */
	err = mpq_manager_sem_release_token(s, s->tokens[s->held - 1]);
	return err;
}

MPQ_NET_EXPORT int mpq_manager_sem_release_token(struct mpq_manager_sem *s,
						 uint64_t token)
{
	int err, i;

	if (!s)
		return -EINVAL;
	forget_parent(s);
	err = held_script(s, &release_lua, token);
	if (err && err != -ESTALE)
		return err;
	/* Released, or lost to an expired lease: either way not ours. */
	for (i = 0; i < s->held; i++)
		if (s->tokens[i] == token) {
			s->tokens[i] = s->tokens[--s->held];
			break;
		}
	return err;
}

MPQ_NET_EXPORT int mpq_manager_sem_renew(struct mpq_manager_sem *s)
{
	int i, err, ret = 0;

	if (!s)
		return -EINVAL;
	forget_parent(s);
	for (i = 0; i < s->held; i++) {
		err = held_script(s, &renew_lua, s->tokens[i]);
		if (err)
			ret = err;
	}
	return ret;
}

MPQ_NET_EXPORT uint64_t mpq_manager_sem_token(struct mpq_manager_sem *s)
{
	if (!s)
		return 0;
	forget_parent(s);
	return s->held ? s->tokens[s->held - 1] : 0;
}
