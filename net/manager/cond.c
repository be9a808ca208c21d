// SPDX-License-Identifier: MIT
/*
 * A managed Condition, with mpq_cond's methods and meaning, over a
 * managed lock (its own RLock "<name>/cond" by default, or the caller's).
 *
 * Keys, under "mpq:<ns>:c:<name>":
 *   :q      list   waiter ids, in the order they began to wait
 *   :d      hash   waiter id -> lease deadline (server clock, ms), or
 *                  "n<deadline>" once notified and not yet woken
 *   :seq    string the last waiter id
 *   :w:<id> list   waiter id's wake list (one token, from notify)
 *
 * wait: one script checks that the caller holds the lock, releases every
 * level of it (waking a blocked acquirer) and enqueues the caller, so no
 * notify can fall between the release and the wait. The waiter then
 * blocks on its own wake list for a third of its lease at a time; each
 * wake-up runs, in the same round trip (pipelined after the BLPOP), a
 * script that acknowledges a notification or renews the lease.
 *
 * Dying: a notifier's notify is one script, done or not. A waiter that
 * dies stops renewing: once its lease runs out, notify skips it, and a
 * notification it was given but never acknowledged is handed on to a
 * living waiter (by the next notify or the next waiter's renewal), so a
 * dead waiter cannot swallow the wake-up that others wait for. The lock's
 * holder that dies loses it at the end of its lease, and the waiter that
 * takes it back gets -EOWNERDEAD, as from mpq_cond_wait.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "manager/manager.h"

struct mpq_manager_cond {
	struct mgr_obj o;	/* keys: :q, :d, :seq, :w: (a prefix) */
	struct mpq_manager_lock *lock;
	int own_lock;
	int64_t lease_ms;
};

#define C_KEYS "local Q, D, SEQ, WP = KEYS[1], KEYS[2], KEYS[3], KEYS[4]\n" \
	"local function sweep(now) local o = 0 " \
	"local all = redis.call('HGETALL', D) " \
	"for i = 1, #all, 2 do local id, v = all[i], all[i + 1] " \
	"local n = string.sub(v, 1, 1) == 'n' " \
	"local dl = tonumber(n and string.sub(v, 2) or v) " \
	"if dl < now then redis.call('HDEL', D, id) " \
	"if n then o = o + 1 redis.call('DEL', WP .. id) " \
	"else redis.call('LREM', Q, 1, id) end end end return o end\n" \
	"local function wake(k, now) local w = 0 while w < k do " \
	"local id = redis.call('LPOP', Q) if not id then break end " \
	"local v = redis.call('HGET', D, id) " \
	"if v and string.sub(v, 1, 1) ~= 'n' and tonumber(v) >= now then " \
	"redis.call('HSET', D, id, 'n' .. v) " \
	"redis.call('RPUSH', WP .. id, 1) " \
	"redis.call('PEXPIRE', WP .. id, 3600000) w = w + 1 " \
	"elseif v then redis.call('HDEL', D, id) end end return w end\n"

/*
 * KEYS: the cond's four, the lock's :h and :w. ARGV: me, token,
 * lease_ms. The waiter's id, or -1 if the caller's hold is gone. The
 * keys' types are checked first: a script's writes before an error stay
 * done, and the lock must not be released for a wait that fails.
 */
static struct mgr_script enter_lua = { .src = MGR_LUA_NOW C_KEYS
	"local LH, LW = KEYS[5], KEYS[6] "
	"redis.call('LLEN', Q) redis.call('HLEN', D) redis.call('GET', SEQ) "
	"local h = redis.call('HMGET', LH, 'owner', 'token') "
	"if h[1] ~= ARGV[1] or h[2] ~= ARGV[2] then return -1 end "
	"redis.call('HDEL', LH, 'owner', 'token', 'deadline', 'count') "
	"if redis.call('LLEN', LW) == 0 then redis.call('RPUSH', LW, 1) end "
	"local id = redis.call('INCR', SEQ) "
	"redis.call('RPUSH', Q, id) "
	"redis.call('HSET', D, id, now_ms() + tonumber(ARGV[3])) "
	"return id" };

/*
 * After a BLPOP of the waiter's wake list. ARGV: id, lease_ms. 1: woken
 * (notified, handed a dead waiter's notification, or itself taken for
 * dead: a spurious wake-up); 0: renewed, wait on.
 */
static struct mgr_script beat_lua = { .src = MGR_LUA_NOW C_KEYS
	"local id = ARGV[1] local now = now_ms() "
	"local v = redis.call('HGET', D, id) "
	"if not v or string.sub(v, 1, 1) == 'n' then "
	"redis.call('HDEL', D, id) redis.call('DEL', WP .. id) return 1 end "
	"redis.call('HSET', D, id, now + tonumber(ARGV[2])) "
	"local o = sweep(now) "
	"if o > 0 then redis.call('HDEL', D, id) redis.call('LREM', Q, 1, id) "
	"wake(o - 1, now) return 1 end return 0" };

/* ARGV: id. The wait timed out: 1 if notified all the same, else 0. */
static struct mgr_script leave_lua = { .src = C_KEYS
	"local id = ARGV[1] local v = redis.call('HGET', D, id) "
	"redis.call('HDEL', D, id) redis.call('DEL', WP .. id) "
	"if v and string.sub(v, 1, 1) == 'n' then return 1 end "
	"redis.call('LREM', Q, 1, id) return 0" };

/* ARGV: n (0: all). How many were woken. */
static struct mgr_script notify_lua = { .src = MGR_LUA_NOW C_KEYS
	"local now = now_ms() local o = sweep(now) "
	"local n = tonumber(ARGV[1]) "
	"if n == 0 then n = redis.call('LLEN', Q) else n = n + o end "
	"return wake(n, now)" };

MPQ_NET_EXPORT void mpq_manager_cond_free(struct mpq_manager_cond *c)
{
	if (c && c->own_lock) {
		mpq__mgr_lock_set_owned(c->lock, 0);
		mpq_manager_lock_free(c->lock);
	}
	mpq__mgr_obj_free(c);
}

MPQ_NET_EXPORT int mpq_manager_cond(struct mpq_manager *m, const char *name,
				    struct mpq_manager_lock *lock,
				    int64_t lease_ns,
				    struct mpq_manager_cond **out)
{
	static const char *const sfx[4] = { ":q", ":d", ":seq", ":w:" };
	struct mpq_manager_cond *c;
	char *lname;
	int err;

	if (!out || lease_ns < 0)
		return -EINVAL;
	c = mpq__mgr_obj_new(m, 'c', name, sfx, 4, sizeof(*c), &err);
	if (!c)
		return err;
	c->lease_ms = mpq__mgr_waiter_lease_ms(lease_ns);
	c->lock = lock;
	if (!lock) {
		if (asprintf(&lname, "%s/cond", name) < 0) {
			mpq__mgr_obj_free(c);
			return -ENOMEM;
		}
		err = mpq_manager_lock(m, lname, 1, lease_ns, &c->lock);
		free(lname);
		if (err) {
			mpq__mgr_obj_free(c);
			return err;
		}
		c->own_lock = 1;
		mpq__mgr_lock_set_owned(c->lock, 1);
	}
	*out = c;
	return 0;
}

MPQ_NET_EXPORT struct mpq_manager_lock *
mpq_manager_cond_get_lock(struct mpq_manager_cond *c)
{
	return c ? c->lock : NULL;
}

MPQ_NET_EXPORT int mpq_manager_cond_acquire(struct mpq_manager_cond *c,
					    int64_t timeout_ns)
{
	return c ? mpq_manager_lock_acquire(c->lock, timeout_ns) : -EINVAL;
}

MPQ_NET_EXPORT int mpq_manager_cond_release(struct mpq_manager_cond *c)
{
	return c ? mpq_manager_lock_release(c->lock) : -EINVAL;
}

/* Take the lock back, depth levels deep; -EOWNERDEAD passes through. */
static int retake(struct mpq_manager_cond *c, int depth)
{
	int err, ret = 0;

	while (depth-- > 0) {
		err = mpq_manager_lock_acquire(c->lock, MPQ_FOREVER);
		if (err == -EOWNERDEAD)
			ret = err;
		else if (err)
			return err;
	}
	return ret;
}

MPQ_NET_EXPORT int mpq_manager_cond_wait(struct mpq_manager_cond *c,
					 int64_t timeout_ns)
{
	struct mgr_obj *lo;
	const char *keys[6], *args[3];
	char tok[24], lease[24], id[24], *wkey = NULL;
	int64_t deadline, left, chunk;
	uint64_t token;
	long long v;
	int depth, err, woken = 0, rerr;
	redisReply *r;

	if (!c || timeout_ns < MPQ_FOREVER)
		return -EINVAL;
	err = mpq__mgr_lock_hold(c->lock, &token, &depth);
	if (err)
		return err;
	deadline = mpq__mgr_now() + timeout_ns;
	lo = mpq__mgr_lock_obj(c->lock);
	memcpy(keys, c->o.keys, 4 * sizeof(*keys));
	keys[4] = lo->keys[0];
	keys[5] = lo->keys[2];
	snprintf(tok, sizeof(tok), "%llu", (unsigned long long)token);
	snprintf(lease, sizeof(lease), "%lld", (long long)c->lease_ms);
	args[0] = mpq__mgr_owner(c->o.m);
	args[1] = tok;
	args[2] = lease;
	err = mpq__mgr_eval_int(c->o.m, &enter_lua, &v, 6, keys, 3, args,
				NULL);
	if (err)
		return err;
	mpq__mgr_lock_forget(c->lock);
	if (v < 0)
		return -ESTALE;	/* the lease ran out: the lock is another's */
	snprintf(id, sizeof(id), "%lld", v);
	if (asprintf(&wkey, "%s%s", c->o.keys[3], id) < 0)
		return -ENOMEM;
	chunk = c->lease_ms * 1000000LL / 3;
	args[0] = id;
	args[1] = lease;
	for (;;) {
		left = timeout_ns < 0 ? chunk : deadline - mpq__mgr_now();
		if (left <= 0) {
			err = mpq__mgr_eval_int(c->o.m, &leave_lua, &v, 4,
						(const char **)c->o.keys, 1,
						args, NULL);
			woken = v == 1;
			break;
		}
		err = mpq__mgr_eval_after(c->o.m, wkey, left < chunk ?
					  left : chunk, &beat_lua, &r, 4,
					  (const char **)c->o.keys, 2, args,
					  NULL);
		if (err)
			break;
		err = mpq__mgr_reply_int(r, &v);
		freeReplyObject(r);
		if (err || v == 1) {
			woken = 1;
			break;
		}
	}
	free(wkey);
	if (err)
		return err;	/* the server is gone: the lock with it */
	rerr = retake(c, depth);
	if (rerr)
		return rerr;
	return woken ? 0 : -ETIMEDOUT;
}

MPQ_NET_EXPORT int mpq_manager_cond_wait_for(struct mpq_manager_cond *c,
					     int (*pred)(void *arg),
					     void *arg, int64_t timeout_ns)
{
	int64_t deadline, left = timeout_ns;
	int err, dead = 0;

	if (!c || !pred || timeout_ns < MPQ_FOREVER)
		return -EINVAL;
	deadline = mpq__mgr_now() + timeout_ns;
	while (!pred(arg)) {
		if (timeout_ns >= 0) {
			left = deadline - mpq__mgr_now();
			if (left <= 0)
				return -ETIMEDOUT;
		}
		err = mpq_manager_cond_wait(c, left);
		if (err == -EOWNERDEAD)
			dead = 1;
		else if (err && err != -ETIMEDOUT)
			return err;
	}
	return dead ? -EOWNERDEAD : 0;
}

static int notify(struct mpq_manager_cond *c, int n)
{
	uint64_t token;
	char num[16];
	const char *args[1] = { num };
	long long v;
	int depth, err;

	if (!c || n < 0)
		return -EINVAL;
	err = mpq__mgr_lock_hold(c->lock, &token, &depth);
	if (err)
		return err;
	snprintf(num, sizeof(num), "%d", n);
	return mpq__mgr_eval_int(c->o.m, &notify_lua, &v, 4,
				 (const char **)c->o.keys, 1, args, NULL);
}

MPQ_NET_EXPORT int mpq_manager_cond_notify(struct mpq_manager_cond *c, int n)
{
	if (n <= 0)
		return c ? (n < 0 ? -EINVAL : 0) : -EINVAL;
	return notify(c, n);
}

MPQ_NET_EXPORT int mpq_manager_cond_notify_all(struct mpq_manager_cond *c)
{
	return notify(c, 0);
}
