// SPDX-License-Identifier: MIT
/*
 * A managed Event, with mpq_event's methods and meaning.
 *
 * Keys, under "mpq:<ns>:e:<name>":
 *   :h      hash   flag ("1" set, "0" clear)
 *   :s      stream one entry per clear-to-set transition (a doorbell;
 *                  at most 8 kept)
 *
 * Every waiter must wake at a set, so the wake-up is a stream: XREAD
 * BLOCK wakes every reader, where a BLPOP list would wake one. A waiter
 * reads the flag and the stream's last id in one script, then blocks for
 * entries after that id: a set between the two is an entry after it, so
 * no wake-up is lost, and a set followed at once by a clear still ends
 * the wait (as Python's and mpq_event_wait's promise). Nothing is held,
 * so a process that dies anywhere leaves nothing to clean up.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "manager/manager.h"

struct mpq_manager_event {
	struct mgr_obj o;	/* keys: :h, :s */
};

#define E_KEYS "local H, S = KEYS[1], KEYS[2]\n"

/* XLEN first: a wrong type fails before the flag is written. */
static struct mgr_script set_lua = { .src = E_KEYS
	"redis.call('XLEN', S) if redis.call('HGET', H, 'flag') ~= '1' then "
	"redis.call('HSET', H, 'flag', 1) "
	"redis.call('XADD', S, 'MAXLEN', 8, '*', 's', 1) end return 0" };

static struct mgr_script clear_lua = { .src = E_KEYS
	"redis.call('XLEN', S) redis.call('HSET', H, 'flag', 0) return 0" };

/* {flag, the stream's last id}. */
static struct mgr_script check_lua = { .src = MGR_LUA_LAST E_KEYS
	"return {tonumber(redis.call('HGET', H, 'flag') or 0), last_id(S)}" };

MPQ_NET_EXPORT int mpq_manager_event(struct mpq_manager *m, const char *name,
				     struct mpq_manager_event **out)
{
	static const char *const sfx[2] = { ":h", ":s" };
	struct mpq_manager_event *e;
	int err;

	if (!out)
		return -EINVAL;
	e = mpq__mgr_obj_new(m, 'e', name, sfx, 2, sizeof(*e), &err);
	if (e)
		*out = e;
	return err;
}

MPQ_NET_EXPORT void mpq_manager_event_free(struct mpq_manager_event *e)
{
	mpq__mgr_obj_free(e);
}

static int run(struct mpq_manager_event *e, struct mgr_script *s)
{
	long long v;

	if (!e)
		return -EINVAL;
	return mpq__mgr_eval_int(e->o.m, s, &v, 2, (const char **)e->o.keys,
				 0, NULL, NULL);
}

MPQ_NET_EXPORT int mpq_manager_event_set(struct mpq_manager_event *e)
{
	return run(e, &set_lua);
}

MPQ_NET_EXPORT int mpq_manager_event_clear(struct mpq_manager_event *e)
{
	return run(e, &clear_lua);
}

/* The flag and the last id; id is at least 48 bytes. */
static int check(struct mpq_manager_event *e, char *id)
{
	redisReply *r;
	int err, flag;

	err = mpq__mgr_eval(e->o.m, &check_lua, &r, 2,
			    (const char **)e->o.keys, 0, NULL, NULL);
	if (err)
		return err;
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[0]->type != REDIS_REPLY_INTEGER ||
	    r->element[1]->type != REDIS_REPLY_STRING ||
	    r->element[1]->len >= 48) {
		freeReplyObject(r);
		return -EPROTO;
	}
	flag = r->element[0]->integer == 1;
	memcpy(id, r->element[1]->str, r->element[1]->len);
	id[r->element[1]->len] = 0;
	freeReplyObject(r);
	return flag;
}

MPQ_NET_EXPORT int mpq_manager_event_is_set(struct mpq_manager_event *e)
{
	char id[48];

	if (!e)
		return -EINVAL;
	return check(e, id);
}

int mpq__mgr_xwait(struct mpq_manager *m, const char *key, const char *id,
		   int64_t wait_ns)
{
	const char *argv[7] = { "XREAD", "COUNT", "1", "BLOCK", NULL,
				"STREAMS", key };
	const char *full[8];
	redisReply *r;
	char ms[32];
	int err, got;

	if (wait_ns > MGR_MAX_BLOCK_NS)
		wait_ns = MGR_MAX_BLOCK_NS;
	/* BLOCK 0 would block for ever: at least 1 ms, rounded up. */
	snprintf(ms, sizeof(ms), "%lld",
		 (long long)(wait_ns <= 1000000 ? 1 :
			     (wait_ns + 999999) / 1000000));
	argv[4] = ms;
	memcpy(full, argv, sizeof(argv));
	full[7] = id;
	err = mpq__mgr_command(m, &r, 8, full, NULL, wait_ns);
	if (err)
		return err;
	/* Nil on a timeout; else [[key, [entries]]]. */
	got = r->type == REDIS_REPLY_ARRAY && r->elements > 0;
	if (r->type != REDIS_REPLY_NIL && r->type != REDIS_REPLY_ARRAY)
		got = -EPROTO;
	freeReplyObject(r);
	return got;
}

MPQ_NET_EXPORT int mpq_manager_event_wait(struct mpq_manager_event *e,
					  int64_t timeout_ns)
{
	int64_t deadline, left;
	char id[48];
	int err;

	if (!e || timeout_ns < MPQ_FOREVER)
		return -EINVAL;
	deadline = mpq__mgr_now() + timeout_ns;
	err = check(e, id);
	if (err)
		return err < 0 ? err : 0;
	if (!timeout_ns)
		return -EAGAIN;
	for (;;) {
		left = timeout_ns < 0 ? MGR_MAX_BLOCK_NS :
			deadline - mpq__mgr_now();
		if (left <= 0)
			return -ETIMEDOUT;
		err = mpq__mgr_xwait(e->o.m, e->o.keys[1], id, left);
		if (err)
			return err < 0 ? err : 0;
	}
}
