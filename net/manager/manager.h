/* SPDX-License-Identifier: MIT */
/*
 * The Manager's private header: how its files divide the work.
 *
 *   server.c   mpq_manager_start/shutdown: a private redis-server as a
 *              supervised child (pidfd), its config, its authkey;
 *   conn.c     mpq_manager_connect, the connection of this process (made
 *              again after fork), one command with bounded time and every
 *              failure mapped to one errno, Lua scripts by SHA; and what
 *              the objects share: keys, handles (struct mgr_obj), replies;
 *   dict.c, list.c, queue.c, lock.c, sem.c   the objects, each a few keys under
 *              "mpq:<namespace>:<type>:<name>" and Lua for every compound
 *              step, so a step is atomic on the server whatever dies.
 *
 * No threads anywhere: a process's connection is used by its own calls
 * only, which keeps the Manager safe with fork().
 */
#ifndef MPQ_NET_MANAGER_H
#define MPQ_NET_MANAGER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <hiredis/hiredis.h>

#include "net.h"

struct mpq_manager {
	char *address;		/* endpoint#namespace, what connect takes */
	char *authkey;
	char *ns;		/* key namespace; also the ACL user if named */
	int named_user;		/* AUTH ns authkey, else AUTH authkey */
	char *path;		/* unix socket, or NULL for TCP */
	char *host;
	int port;
	int64_t timeout_ns;	/* bound on connect and on each reply */

	/*
	 * "sentinel://H:P,H:P/master": host and port above are the primary
	 * the sentinels named last; each connect asks them again.
	 */
	char *master;		/* the master's name, or NULL: no sentinels */
	char **sent_host;
	int *sent_port;
	int nsent;
	unsigned long conns;	/* connections made: a change = a new server */

	pid_t pid;		/* the process that c and owner belong to */
	redisContext *c;
	int64_t c_timeout_ns;	/* what the socket's timeout is set to now */
	pid_t owner_pid;	/* the process owner names */
	char owner[96];		/* "host:pid:random": this process, for locks */

	/* Only for a manager this process started (server.c). */
	pid_t starter;
	pid_t server_pid;
	int pidfd;
	char *dir;		/* the private 0700 directory */
	char *conf;		/* redis.conf's text (it holds the authkey) */
	char *server_bin;		/* attr->redis_server or "redis-server" */
};

struct mgr_script {
	const char *src;
	char sha[41];		/* filled on first use */
};

#define MGR_MAX_BLOCK_NS	(10 * 1000000000LL)

int64_t mpq__mgr_now(void);
/* One command of a pipeline: argc words, lens NULL for C strings. */
struct mgr_cmd {
	int argc;
	const char **argv;
	const size_t *lens;
};
/*
 * Send n commands in one write and read their n replies: one round trip.
 * *out is the last one's reply; an error reply of any is its errno (the
 * last's first). block_ns as for mpq__mgr_command.
 */
int mpq__mgr_pipeline(struct mpq_manager *m, redisReply **out,
		      unsigned int n, const struct mgr_cmd *cmds,
		      int64_t block_ns);
/* The same, *out being the reply of command keep (0-based) instead. */
int mpq__mgr_pipeline_at(struct mpq_manager *m, redisReply **out,
			 unsigned int n, const struct mgr_cmd *cmds,
			 int64_t block_ns, unsigned int keep);
/* The timeout argument of a blocking command for a wait of wait_ns, made
 * 1 ms to MGR_MAX_BLOCK_NS (0 would block for ever); returns that wait. */
int64_t mpq__mgr_block_secs(char secs[32], int64_t wait_ns);
/* Run one command; *out (freed by the caller) is a reply of any type but
 * error. block_ns: how long the server may hold the reply back (a
 * blocking command), on top of the manager's timeout. */
int mpq__mgr_command(struct mpq_manager *m, redisReply **out, int argc,
		 const char **argv, const size_t *lens, int64_t block_ns);
int mpq__mgr_eval(struct mpq_manager *m, struct mgr_script *s, redisReply **out,
	      int nkeys, const char **keys, int nargs, const char **args,
	      const size_t *alens);
/* The same, run right after a BLPOP of wait_key for at most wait_ns,
 * pipelined: one round trip for a wait and the step after it. */
int mpq__mgr_eval_after(struct mpq_manager *m, const char *wait_key,
			int64_t wait_ns, struct mgr_script *s,
			redisReply **out, int nkeys, const char **keys,
			int nargs, const char **args, const size_t *alens);
/*
 * Pipelined commands whose replies are read later, one by one, by
 * mpq__mgr_recv (poll mpq__mgr_fd to wait for them beside other fds);
 * until then nothing else may use m (the distributed pool's result wait).
 */
int mpq__mgr_send(struct mpq_manager *m, unsigned int n,
		  const struct mgr_cmd *cmds);
int mpq__mgr_recv(struct mpq_manager *m, redisReply **out, int64_t deadline);
int mpq__mgr_fd(struct mpq_manager *m);
/* 1: a reply or part of one can be read now (buffered or on the socket). */
int mpq__mgr_pending(struct mpq_manager *m);
/*
 * "verb key item..." for n items of width fields each, field j of item i
 * being cols[j][i] (RPUSH: 1, the values; HSET: 2, keys and values), in
 * commands of at most 512 items. An error stops it: the commands before
 * stay done.
 */
int mpq__mgr_command_chunked(struct mpq_manager *m, const char *verb,
			     const char *key, const struct iovec *const *cols,
			     unsigned int width, unsigned int n);
/*
 * mpq__mgr_eval_after's script after "BLMOVE src dst LEFT RIGHT" for at most wait_ns (1 ms to
 * MGR_MAX_BLOCK_NS): the wait is on the data itself, and the script that
 * follows it in the same write finds what the move took (queue.c).
 */
int mpq__mgr_eval_after_move(struct mpq_manager *m, const char *src,
			     const char *dst, int64_t wait_ns,
			     struct mgr_script *s, redisReply **out, int nkeys,
			     const char **keys, int nargs, const char **args,
			     const size_t *alens);
/* BLPOP key for at most wait_ns (>= 1 ms); 0 when woken or timed out. */
int mpq__mgr_wait(struct mpq_manager *m, const char *key, int64_t wait_ns);
char *mpq__mgr_key(struct mpq_manager *m, char type, const char *name,
	       const char *suffix);
const char *mpq__mgr_owner(struct mpq_manager *m);
int mpq__mgr_reply_int(const redisReply *r, long long *v);
/* The errno of an error reply (WRONGTYPE: -EPROTOTYPE, ...). */
int mpq__mgr_reply_err(const redisReply *r);
int mpq__mgr_name_ok(const char *name);
/* Copy a bulk reply out to buf (*len: its size, then the length);
 * -ENOENT for nil, -EMSGSIZE (and the length needed) when too small. */
int mpq__mgr_copy_out(const redisReply *r, void *buf, size_t *len);

#define MGR_MAX_KEYS	4

/*
 * The first member of a dict, list, lock or semaphore handle: its manager
 * and its keys, so that opening and freeing one is written once
 * (conn.c) for them all.
 */
struct mgr_obj {
	struct mpq_manager *m;
	unsigned int nkeys;
	char *keys[MGR_MAX_KEYS];
};

/*
 * A zeroed handle of size bytes (a struct whose first member is a struct
 * mgr_obj) with nkeys keys "mpq:<ns>:<type>:<name><sfx[i]>" (sfx NULL: one
 * key, no suffix). NULL with *err -EINVAL (no manager, a bad name) or
 * -ENOMEM; else *err is 0.
 */
void *mpq__mgr_obj_new(struct mpq_manager *m, char type, const char *name,
		       const char *const *sfx, unsigned int nkeys,
		       size_t size, int *err);
/* Frees a handle from mpq__mgr_obj_new and its keys; NULL is fine. */
void mpq__mgr_obj_free(void *obj);
/* mpq__mgr_eval of a script that answers an integer, put in *v. */
int mpq__mgr_eval_int(struct mpq_manager *m, struct mgr_script *s,
		      long long *v, int nkeys, const char **keys, int nargs,
		      const char **args, const size_t *alens);
/* mpq__mgr_eval of a script that answers a bulk string (or nil: -ENOENT),
 * copied out as mpq__mgr_copy_out does. */
int mpq__mgr_eval_bulk(struct mpq_manager *m, struct mgr_script *s,
		       void *buf, size_t *len, int nkeys, const char **keys,
		       int nargs, const char **args, const size_t *alens);

/*
 * What Lock and Semaphore share (lock.c): leases and the acquire loop.
 * lease_ms: lease_ns in ms, rounded up; 0 means 30 s.
 */
void mpq__mgr_lease_ms(char buf[24], int64_t lease_ns);
/*
 * Run s (ARGV: args[0..2]; answers {1, token, died} when taken, {0, ms
 * until a lease ends} when not) until it takes, blocking on the handle's
 * last key (its wake list) between tries, for at most timeout_ns (< 0: no
 * limit, 0: one try). 0 or -EOWNERDEAD (taken from a holder that died)
 * with *token set; -EAGAIN, -ETIMEDOUT or another error without.
 */
int mpq__mgr_acquire(struct mgr_obj *o, struct mgr_script *s,
		     const char **args, int64_t timeout_ns, uint64_t *token);
/* Run s with ARGV owner, token, lease_ms; its integer answer in *v. */
int mpq__mgr_hold_script(struct mgr_obj *o, struct mgr_script *s,
			 uint64_t token, const char *lease_ms, long long *v);
/*
 * What Semaphore (sem.c) and BoundedSemaphore (bsem.c) share (sem.c).
 * sem_open: write value into vbuf (24 bytes), run open (ARGV: it) on
 * o's keys and put the first opener's value there instead: -EPROTO if it
 * is not 1 to maxlen digits. sem_take: mpq__mgr_acquire of acquire
 * with ARGV owner, lease_ms, vbuf. sem_forked: a forked child holds none
 * of its parent's units (*held 0 when *pid is not this process's).
 */
#define MGR_SEM_KEYS \
	"local CFG, H, FENCE, W = KEYS[1], KEYS[2], KEYS[3], KEYS[4]\n"
/*
 * Their acquire. ARGV: me, lease_ms, value. {1, token, died} when taken;
 * {0, wait} when not, wait a Lua expression of w, the ms until the first
 * lease ends.
 */
#define MGR_SEM_ACQUIRE_LUA(wait) MGR_LUA_NOW MGR_SEM_KEYS \
	"local now = now_ms() local died = 0 " \
	"if redis.call('ZREMRANGEBYSCORE', H, '-inf', now) > 0 then " \
	"died = 1 end " \
	"if redis.call('ZCARD', H) < tonumber(ARGV[3]) then " \
	"local t = redis.call('INCR', FENCE) " \
	"redis.call('ZADD', H, now + tonumber(ARGV[2]), ARGV[1] .. '/' .. t) " \
	"return {1, t, died} end " \
	"local nx = redis.call('ZRANGE', H, 0, 0, 'WITHSCORES') " \
	"local w = math.max(1, tonumber(nx[2]) - now + 1) " \
	"return {0, " wait "}"
int mpq__mgr_sem_open(struct mgr_obj *o, struct mgr_script *open,
		      unsigned int value, char vbuf[24], size_t maxlen);
int mpq__mgr_sem_take(struct mgr_obj *o, struct mgr_script *acquire,
		      const char *lease_ms, const char *vbuf,
		      int64_t timeout_ns, uint64_t *token);
void mpq__mgr_sem_forked(pid_t *pid, int *held);
int mpq__mgr_conn_open(struct mpq_manager *m);
void mpq__mgr_conn_drop(struct mpq_manager *m);

/* What proxy.c (managed objects of libmpq's types) needs of queue.c and
 * lock.c. take: get_many; final: taken for good and done at once. */
struct mpq_manager_queue;
struct mpq_manager_lock;
int mpq__mgr_queue_take(struct mpq_manager_queue *q,
			struct mpq_manager_msg *msgs, unsigned int n,
			int64_t timeout_ns, int final);
uint64_t mpq__mgr_queue_maxsize(struct mpq_manager_queue *q);
int mpq__mgr_queue_leases(struct mpq_manager_queue *q);
int64_t mpq__mgr_queue_used(struct mpq_manager_queue *q);
int mpq__mgr_lock_locked(struct mpq_manager_lock *l);

/* The Lua helpers every script shares. */
#define MGR_LUA_NOW \
	"local function now_ms() local t = redis.call('TIME') " \
	"return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) end\n"

/* The last id of stream s ("0-0" when empty): what XREAD waits after. */
#define MGR_LUA_LAST \
	"local function last_id(s) local e = redis.call('XREVRANGE', s, " \
	"'+', '-', 'COUNT', 1) if #e == 0 then return '0-0' end " \
	"return e[1][1] end\n"

/*
 * XREAD BLOCK the stream key for entries after id, for at most wait_ns
 * (1 ms to MGR_MAX_BLOCK_NS): 1 if there are, 0 on a timeout. Every
 * reader wakes at an XADD, where a BLPOP wakes one (event.c).
 */
int mpq__mgr_xwait(struct mpq_manager *m, const char *key, const char *id,
		   int64_t wait_ns);

/*
 * For Condition.wait and Value (lock.c): the handle's keys, and this
 * process's hold of it: 0 with *token, *depth if held, -EPERM if not.
 */
struct mpq_manager_lock;
struct mgr_obj *mpq__mgr_lock_obj(struct mpq_manager_lock *l);
int mpq__mgr_lock_hold(struct mpq_manager_lock *l, uint64_t *token,
		       int *depth);
/* A lock a Condition or a Value made and frees (owned 0 first): while
 * owned, mpq_manager_lock_free of it does nothing. */
void mpq__mgr_lock_set_owned(struct mpq_manager_lock *l, int owned);
/* A script released every level of the hold on the server. */
void mpq__mgr_lock_forget(struct mpq_manager_lock *l);
/*
 * The lease of a waiter (Condition) or a waiting party (Barrier), in ms,
 * for lease_ns (0: 5 s): it renews it every third of it while it blocks,
 * and one that stops renewing for a whole lease is taken for dead.
 */
int64_t mpq__mgr_waiter_lease_ms(int64_t lease_ns);

#endif
