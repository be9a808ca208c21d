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
	struct mgr_obj o;	/* keys: :cfg, :h, :fence, :w */
	char lease_ms[24], value[24];
	pid_t pid;
	int held;
	uint64_t tokens[SEM_MAX_HELD];
};

#define S_KEYS MGR_SEM_KEYS

static struct mgr_script open_lua = { .src = S_KEYS
	"redis.call('HSETNX', CFG, 'value', ARGV[1]) "
	"return redis.call('HGET', CFG, 'value')" };

/* ARGV: me, lease_ms, value (manager.h). Waits till the first lease ends. */
static struct mgr_script acquire_lua = { .src = MGR_SEM_ACQUIRE_LUA("w") };

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
	mpq__mgr_obj_free(s);
}

MPQ_NET_EXPORT int mpq_manager_sem(struct mpq_manager *m, const char *name,
				   unsigned int value, int64_t lease_ns,
				   struct mpq_manager_sem **out)
{
	static const char *const sfx[4] = { ":cfg", ":h", ":fence", ":w" };
	struct mpq_manager_sem *s;
	int err;

	if (!out || lease_ns < 0 || !value)
		return -EINVAL;
	s = mpq__mgr_obj_new(m, 's', name, sfx, 4, sizeof(*s), &err);
	if (!s)
		return err;
	mpq__mgr_lease_ms(s->lease_ms, lease_ns);
	err = mpq__mgr_sem_open(&s->o, &open_lua, value, s->value, 20);
	if (err) {
		mpq_manager_sem_free(s);
		return err;
	}
	*out = s;
	return 0;
}

int mpq__mgr_sem_open(struct mgr_obj *o, struct mgr_script *open,
		      unsigned int value, char vbuf[24], size_t maxlen)
{
	const char *args[1] = { vbuf };
	redisReply *r;
	int err;

	snprintf(vbuf, 24, "%u", value);
	err = mpq__mgr_eval(o->m, open, &r, 4, (const char **)o->keys, 1,
			    args, NULL);
	if (err)
		return err;
	if (r->type != REDIS_REPLY_STRING || !r->len || r->len > maxlen) {
		freeReplyObject(r);
		return -EPROTO;
	}
	memcpy(vbuf, r->str, r->len);	/* the first opener's value */
	vbuf[r->len] = 0;
	freeReplyObject(r);
	return 0;
}

int mpq__mgr_sem_take(struct mgr_obj *o, struct mgr_script *acquire,
		      const char *lease_ms, const char *vbuf,
		      int64_t timeout_ns, uint64_t *token)
{
	const char *args[3] = { mpq__mgr_owner(o->m), lease_ms, vbuf };

	return mpq__mgr_acquire(o, acquire, args, timeout_ns, token);
}

void mpq__mgr_sem_forked(pid_t *pid, int *held)
{
	if (*pid != getpid()) {
		*pid = getpid();
		*held = 0;	/* a forked child holds none of them */
	}
}

static void forget_parent(struct mpq_manager_sem *s)
{
	mpq__mgr_sem_forked(&s->pid, &s->held);
}

MPQ_NET_EXPORT int mpq_manager_sem_acquire(struct mpq_manager_sem *s,
					   int64_t timeout_ns)
{
	uint64_t token;
	int err;

	if (!s)
		return -EINVAL;
	forget_parent(s);
	if (s->held == SEM_MAX_HELD)
		return -EOVERFLOW;
	err = mpq__mgr_sem_take(&s->o, &acquire_lua, s->lease_ms, s->value,
				timeout_ns, &token);
	if (err && err != -EOWNERDEAD)
		return err;
	s->tokens[s->held++] = token;
	return err;
}

static int held_script(struct mpq_manager_sem *s, struct mgr_script *sc,
		       uint64_t token)
{
	long long v;
	int err = mpq__mgr_hold_script(&s->o, sc, token, s->lease_ms, &v);

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
