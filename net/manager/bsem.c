// SPDX-License-Identifier: MIT
/*
 * A managed BoundedSemaphore with mpq_sem's methods and meaning (as made
 * by mpq_bounded_sem_new): any process may release, and a release that
 * would take the value above its initial one is -EINVAL (Python's
 * ValueError). Units taken hold leases, as the Semaphore's (sem.c) do: a
 * taker that dies without releasing gives its unit back when its lease
 * ends, and the acquirer that takes it gets -EOWNERDEAD; with
 * MPQ_MANAGER_NO_LEASE, a unit is the semaphore's until some process
 * releases it, as in Python.
 *
 * Keys, under "mpq:<ns>:S:<name>":
 *   :cfg    hash   value (the first opener's)
 *   :h      zset   "owner/token" -> lease deadline (server clock, ms)
 *   :fence  string the last token handed out
 *   :w      list   wake list, at most one token
 *
 * A release by the process that took a unit gives back the unit it took
 * last if it is still out; otherwise (another process's release) the
 * unit nearest its lease's end (the oldest, with no leases).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "manager/manager.h"

#define BSEM_MAX_HELD	64
/* A lease that never ends: a deadline past any clock (ms, < 2^53). */
#define BSEM_FOREVER_MS	"4000000000000000"

struct mpq_manager_bsem {
	struct mgr_obj o;	/* keys: :cfg, :h, :fence, :w */
	char lease_ms[24], value[24];
	pid_t pid;
	int held;
	uint64_t tokens[BSEM_MAX_HELD];
};

#define BS_KEYS MGR_SEM_KEYS

static struct mgr_script open_lua = { .src = BS_KEYS
	"redis.call('HSETNX', CFG, 'value', ARGV[1]) redis.call('ZCARD', H) "
	"return redis.call('HGET', CFG, 'value')" };

/*
 * As sem.c's, but waits at most 10 s (a lease that never ends would
 * overflow the caller's ns).
 */
static struct mgr_script acquire_lua = {
	.src = MGR_SEM_ACQUIRE_LUA("math.min(10000, w)") };

/*
 * ARGV: member ("" for none). Gives back the member's unit if it is
 * still out, else any (another process's release, or the unit's lease,
 * may have given back this one already): 0; or -2 when no unit is out
 * (Python's ValueError).
 */
static struct mgr_script release_lua = { .src = BS_KEYS
	"if ARGV[1] == '' or redis.call('ZREM', H, ARGV[1]) == 0 then "
	"if #redis.call('ZPOPMIN', H) == 0 then return -2 end end "
	"if redis.call('LLEN', W) == 0 then redis.call('RPUSH', W, 1) end "
	"return 0" };

/* ARGV: value. The units free now. */
static struct mgr_script value_lua = { .src = MGR_LUA_NOW BS_KEYS
	"return tonumber(ARGV[1]) - redis.call('ZCOUNT', H, now_ms(), '+inf')" };

MPQ_NET_EXPORT void mpq_manager_bounded_sem_free(struct mpq_manager_bsem *s)
{
	mpq__mgr_obj_free(s);
}

MPQ_NET_EXPORT int mpq_manager_bounded_sem(struct mpq_manager *m,
					   const char *name,
					   unsigned int value,
					   int64_t lease_ns,
					   struct mpq_manager_bsem **out)
{
	static const char *const sfx[4] = { ":cfg", ":h", ":fence", ":w" };
	struct mpq_manager_bsem *s;
	int err;

	if (!out || !value || value > INT32_MAX ||
	    (lease_ns < 0 && lease_ns != MPQ_MANAGER_NO_LEASE))
		return -EINVAL;
	s = mpq__mgr_obj_new(m, 'S', name, sfx, 4, sizeof(*s), &err);
	if (!s)
		return err;
	if (lease_ns == MPQ_MANAGER_NO_LEASE)
		strcpy(s->lease_ms, BSEM_FOREVER_MS);
	else
		mpq__mgr_lease_ms(s->lease_ms, lease_ns);
	err = mpq__mgr_sem_open(&s->o, &open_lua, value, s->value, 10);
	if (err) {
		mpq__mgr_obj_free(s);
		return err;
	}
	*out = s;
	return 0;
}

static void forget_parent(struct mpq_manager_bsem *s)
{
	mpq__mgr_sem_forked(&s->pid, &s->held);
}

MPQ_NET_EXPORT int mpq_manager_bounded_sem_acquire(struct mpq_manager_bsem *s,
						   int64_t timeout_ns)
{
	uint64_t token;
	int err;

	if (!s || timeout_ns < MPQ_FOREVER)
		return -EINVAL;
	forget_parent(s);
	err = mpq__mgr_sem_take(&s->o, &acquire_lua, s->lease_ms, s->value,
				timeout_ns, &token);
	if (err && err != -EOWNERDEAD)
		return err;
	/* Past 64, the unit is released as another process's would be. */
	if (s->held < BSEM_MAX_HELD)
		s->tokens[s->held++] = token;
	return err;
}

MPQ_NET_EXPORT int mpq_manager_bounded_sem_release(struct mpq_manager_bsem *s)
{
	char member[128] = "";
	const char *args[1] = { member };
	long long v;
	int err;

	if (!s)
		return -EINVAL;
	forget_parent(s);
	if (s->held)
		snprintf(member, sizeof(member), "%s/%llu",
			 mpq__mgr_owner(s->o.m),
			 (unsigned long long)s->tokens[s->held - 1]);
	err = mpq__mgr_eval_int(s->o.m, &release_lua, &v, 4,
				(const char **)s->o.keys, 1, args, NULL);
	if (err)
		return err;
	if (s->held)
		s->held--;
	return v == -2 ? -EINVAL : 0;
}

MPQ_NET_EXPORT int mpq_manager_bounded_sem_get_value(struct mpq_manager_bsem *s)
{
	long long v;
	const char *args[1];
	int err;

	if (!s)
		return -EINVAL;
	args[0] = s->value;
	err = mpq__mgr_eval_int(s->o.m, &value_lua, &v, 4,
				(const char **)s->o.keys, 1, args, NULL);
	if (err)
		return err;
	return v < 0 ? 0 : (int)v;
}
