/* SPDX-License-Identifier: MIT */
/*
 * libmpq-net: the parts of mpq that talk over a network, kept out of
 * libmpq so that a program using only local objects links no socket,
 * crypto or Redis code and opens no connection.
 *
 *   Listener and Client   multiprocessing.connection's, in Python's own
 *                         wire format and authentication handshake;
 *   Managers              shared objects in a server process (Redis),
 *                         reached from other processes and machines.
 *
 * Link with `pkg-config --libs mpq-net` (it pulls in libmpq). Calls follow
 * libmpq's conventions (mpq.h): 0 or a count on success, a negative errno
 * on failure, timeouts in int64_t nanoseconds.
 */
#ifndef MPQ_NET_H
#define MPQ_NET_H

#include <mpq.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version of libmpq-net, "MAJOR.MINOR.PATCH"; never NULL. */
const char *mpq_net_version(void);

/*
 * Managers (mpq_manager.3): shared objects in a server process that other
 * processes and machines reach by address and authkey, on Redis. A
 * manager's objects live under "mpq:<namespace>:" keys and are found by
 * name. Every call is bounded by the manager's timeout (attr or connect
 * argument; 0 means 5 s) on top of any time it was asked to wait, and
 * fails with one errno: -ECONNREFUSED (nothing listens), -ETIMEDOUT (no
 * reply in time), -ECONNRESET (the server went away), -EPROTO (what
 * answered is not Redis, or sent garbage), -EACCES (wrong authkey, or a
 * key outside the namespace), -EPROTOTYPE (the name holds another type).
 * After a transport error the next call connects again. A forked child
 * uses the parent's handles as they are: it gets a connection of its own.
 * A manager handle, and the objects opened through it, serve one thread
 * at a time (one connection); give each thread its own connect.
 */
struct mpq_manager;

struct mpq_manager_attr {
	const char *address;	/* NULL: a Unix socket in a private 0700
				 * directory; "tcp://HOST:PORT" to listen
				 * there too (loopback unless you mean it) */
	const char *ns;		/* key namespace and ACL user; NULL: "mpq" */
	int aof;		/* 1: an append-only file, fsync always */
	const char *dir;	/* where the AOF lives (absolute); NULL: the
				 * private directory, gone at shutdown */
	int64_t timeout_ns;	/* bound on each call's reply; 0: 5 s */
	const char *redis_server; /* NULL: "redis-server" on PATH */
};

/*
 * Start a manager: a private redis-server as a child of the caller (it
 * dies with the calling thread, see PR_SET_PDEATHSIG), with a generated
 * authkey. Returns 0, -ENOENT (no redis-server), -EADDRINUSE, -EINVAL,
 * -ETIMEDOUT (it did not come up in 10 s), -EIO.
 */
int mpq_manager_start(struct mpq_manager **out,
		      const struct mpq_manager_attr *attr);
/* What other processes pass to mpq_manager_connect: "unix:PATH#NS" or
 * "tcp://HOST:PORT#NS"; and the authkey, a string of 48 hex digits. */
const char *mpq_manager_address(struct mpq_manager *m);
const char *mpq_manager_authkey(struct mpq_manager *m);
/* The server's pidfd (readable once it died) and pid; -ENOENT / 0 for a
 * manager this process did not start. */
int mpq_manager_pidfd(struct mpq_manager *m);
pid_t mpq_manager_server_pid(struct mpq_manager *m);

/*
 * Run the server again after it died (it shows on the pidfd), on the same
 * address with the same authkey; with an AOF (attr aof and dir) it comes
 * back with every write it acknowledged. Other processes' next calls
 * connect to it by themselves. Only the starting process may: -EPERM;
 * -EBUSY while the server still runs.
 */
int mpq_manager_restart(struct mpq_manager *m);

/*
 * Reach a running manager (or any Redis 6+) by address. "#NS" names the
 * namespace and the ACL user; without it the namespace is "mpq" and AUTH
 * sends only the authkey (requirepass; nothing if it is empty or NULL).
 */
int mpq_manager_connect(struct mpq_manager **out, const char *url,
			const char *authkey, int64_t timeout_ns);
int mpq_manager_ping(struct mpq_manager *m);
/* Stop the server if this process started it, and free the handle. */
int mpq_manager_shutdown(struct mpq_manager *m);
/* Free the handle only; a started server runs on until shutdown or until
 * the thread that started it exits. */
void mpq_manager_free(struct mpq_manager *m);

/* A dict of bytes to bytes (a Redis hash). */
struct mpq_manager_dict;
int mpq_manager_dict(struct mpq_manager *m, const char *name,
		     struct mpq_manager_dict **out);
void mpq_manager_dict_free(struct mpq_manager_dict *d);
/*
 * get: *len in: the room in buf; out: the value's length. Returns 0,
 * -ENOENT, -EMSGSIZE (*len is the size needed).
 */
int mpq_manager_dict_get(struct mpq_manager_dict *d, const void *key,
			 size_t klen, void *buf, size_t *len);
int mpq_manager_dict_set(struct mpq_manager_dict *d, const void *key,
			 size_t klen, const void *val, size_t vlen);
/* Set if absent; either way return the value now there, as get does. */
int mpq_manager_dict_setdefault(struct mpq_manager_dict *d, const void *key,
				size_t klen, const void *dflt, size_t dlen,
				void *buf, size_t *len);
/* get and delete in one step; -ENOENT if absent. */
int mpq_manager_dict_pop(struct mpq_manager_dict *d, const void *key,
			 size_t klen, void *buf, size_t *len);
/* 1 if deleted, 0 if it was absent. */
int mpq_manager_dict_delete(struct mpq_manager_dict *d, const void *key,
			    size_t klen);
int mpq_manager_dict_contains(struct mpq_manager_dict *d, const void *key,
			      size_t klen);
/* The number of keys (>= 0) or -errno. */
int64_t mpq_manager_dict_len(struct mpq_manager_dict *d);
/* Set n keys in one command: keys[i] to vals[i]. */
int mpq_manager_dict_update(struct mpq_manager_dict *d,
			    const struct iovec *keys,
			    const struct iovec *vals, unsigned int n);
/*
 * Set key to val only if its value is expected (expected NULL: only if
 * absent). Returns 1 if set, 0 if not.
 */
int mpq_manager_dict_cas(struct mpq_manager_dict *d, const void *key,
			 size_t klen, const void *expected, size_t elen,
			 const void *val, size_t vlen);
/* Add delta to the decimal integer at key (absent: 0) into *result. */
int mpq_manager_dict_add(struct mpq_manager_dict *d, const void *key,
			 size_t klen, int64_t delta, int64_t *result);
/*
 * Call fn for every key, a batch of about `batch` at a time (HSCAN: the
 * dict may be huge; a key present throughout is seen at least once, one
 * changed meanwhile may be seen twice or not). fn returning non-zero
 * stops the walk and is returned.
 */
int mpq_manager_dict_foreach(struct mpq_manager_dict *d, unsigned int batch,
			     int (*fn)(const void *key, size_t klen,
				       const void *val, size_t vlen,
				       void *arg), void *arg);

/* A list of byte strings (a Redis list); indexes may be negative. */
struct mpq_manager_list;
int mpq_manager_list(struct mpq_manager *m, const char *name,
		     struct mpq_manager_list **out);
void mpq_manager_list_free(struct mpq_manager_list *l);
int mpq_manager_list_append(struct mpq_manager_list *l, const void *val,
			    size_t len);
int mpq_manager_list_extend(struct mpq_manager_list *l,
			    const struct iovec *vals, unsigned int n);
/* -ERANGE for an index out of range; -EMSGSIZE as for dict_get. */
int mpq_manager_list_get(struct mpq_manager_list *l, int64_t index,
			 void *buf, size_t *len);
int mpq_manager_list_set(struct mpq_manager_list *l, int64_t index,
			 const void *val, size_t len);
int mpq_manager_list_pop(struct mpq_manager_list *l, int64_t index,
			 void *buf, size_t *len);
int64_t mpq_manager_list_len(struct mpq_manager_list *l);
/* fn for each item in [start, stop) (Python's slice, negatives too). */
int mpq_manager_list_slice(struct mpq_manager_list *l, int64_t start,
			   int64_t stop, int (*fn)(const void *val,
						   size_t len, void *arg),
			   void *arg);

/*
 * A queue that loses nothing: a message taken with get stays the
 * queue's, leased to the taker, until mpq_manager_msg_done; if the lease
 * (renewed by mpq_manager_msg_renew) runs out first, it is delivered
 * again. After max_deliveries deliveries whose leases all ran out it goes
 * to the list "<name>.dead" instead. Every queue is joinable: done is
 * task_done. The first opener's settings are the queue's.
 */
/*
 * lease_ns MPQ_MANAGER_NO_LEASE: Python's Queue. A get takes the message
 * for good (one round trip, no done needed but for join); a taker that
 * dies loses it.
 */
#define MPQ_MANAGER_NO_LEASE	((int64_t)-1)

struct mpq_manager_queue_attr {
	uint64_t maxsize;	/* 0: unbounded; bounds queued + leased */
	int64_t lease_ns;	/* 0: 30 s; or MPQ_MANAGER_NO_LEASE */
	uint32_t max_deliveries; /* 0: never dead-letter */
};

struct mpq_manager_msg {
	void *data;		/* malloc'd; freed by done or msg_free */
	size_t len;
	uint64_t id;
	uint32_t deliveries;	/* 1 on the first delivery */
};

struct mpq_manager_queue;
int mpq_manager_queue(struct mpq_manager *m, const char *name,
		      const struct mpq_manager_queue_attr *attr,
		      struct mpq_manager_queue **out);
void mpq_manager_queue_free(struct mpq_manager_queue *q);
/* As mpq_queue_put/put_many: waits for room up to timeout_ns. */
int mpq_manager_queue_put(struct mpq_manager_queue *q, const void *msg,
			  size_t len, int64_t timeout_ns);
int mpq_manager_queue_put_many(struct mpq_manager_queue *q,
			       const struct iovec *msgs, unsigned int n,
			       int64_t timeout_ns);
/* Take up to n (get: 1) messages; returns the count or -EAGAIN,
 * -ETIMEDOUT. */
int mpq_manager_queue_get(struct mpq_manager_queue *q,
			  struct mpq_manager_msg *msg, int64_t timeout_ns);
int mpq_manager_queue_get_many(struct mpq_manager_queue *q,
			       struct mpq_manager_msg *msgs, unsigned int n,
			       int64_t timeout_ns);
/*
 * Finished with msg (task_done): 0, or -ESTALE if its lease ran out and
 * it was handed back (it will be, or was, delivered again). Frees data.
 */
int mpq_manager_msg_done(struct mpq_manager_queue *q,
			 struct mpq_manager_msg *msg);
/* done for msgs[0..n) (n <= 512) in one round trip: returns how many
 * were done (the others were stale); frees every data. */
int mpq_manager_msg_done_many(struct mpq_manager_queue *q,
			      struct mpq_manager_msg *msgs, unsigned int n);
/* Extend msg's lease by the queue's lease time: 0 or -ESTALE. */
int mpq_manager_msg_renew(struct mpq_manager_queue *q,
			  struct mpq_manager_msg *msg);
void mpq_manager_msg_free(struct mpq_manager_msg *msg);
/* Messages waiting (not leased), and messages not done yet. */
int64_t mpq_manager_queue_size(struct mpq_manager_queue *q);
int64_t mpq_manager_queue_unfinished(struct mpq_manager_queue *q);
/* Wait until every message put has been done (or dead-lettered). */
int mpq_manager_queue_join(struct mpq_manager_queue *q, int64_t timeout_ns);

/*
 * A lock whose holder holds a lease (lease_ns, 0: 30 s): a holder that
 * dies or is cut off loses it when the lease ends, and the next acquirer
 * gets -EOWNERDEAD (it holds the lock; so does every later one until
 * mpq_manager_lock_consistent). Each acquisition gets a fencing token
 * larger than every earlier one. An RLock may be taken again by its
 * holder (same handle, same process).
 */
struct mpq_manager_lock;
int mpq_manager_lock(struct mpq_manager *m, const char *name,
		     int recursive, int64_t lease_ns,
		     struct mpq_manager_lock **out);
void mpq_manager_lock_free(struct mpq_manager_lock *l);
int mpq_manager_lock_acquire(struct mpq_manager_lock *l, int64_t timeout_ns);
/* 0, or -ESTALE: the lease ran out and another took the lock. */
int mpq_manager_lock_release(struct mpq_manager_lock *l);
int mpq_manager_lock_renew(struct mpq_manager_lock *l);
int mpq_manager_lock_consistent(struct mpq_manager_lock *l);
/* The fencing token of the current hold (0 if not held). */
uint64_t mpq_manager_lock_token(struct mpq_manager_lock *l);

/*
 * A BoundedSemaphore of `value` units whose holders hold leases (lease_ns,
 * 0: 30 s), as a lock's do: a dead or cut-off holder's unit comes back
 * when its lease ends, and the acquirer that takes it gets -EOWNERDEAD.
 * The first opener's value is the semaphore's. A process may hold up to
 * 64 units through one handle; release gives back the last one taken
 * (-EPERM if it holds none), -ESTALE if its lease had run out.
 * renew extends every unit the handle holds.
 */
struct mpq_manager_sem;
int mpq_manager_sem(struct mpq_manager *m, const char *name,
		    unsigned int value, int64_t lease_ns,
		    struct mpq_manager_sem **out);
void mpq_manager_sem_free(struct mpq_manager_sem *s);
int mpq_manager_sem_acquire(struct mpq_manager_sem *s, int64_t timeout_ns);
int mpq_manager_sem_release(struct mpq_manager_sem *s);
int mpq_manager_sem_release_token(struct mpq_manager_sem *s, uint64_t token);
int mpq_manager_sem_renew(struct mpq_manager_sem *s);
/* The token of the unit taken last (0 if none). */
uint64_t mpq_manager_sem_token(struct mpq_manager_sem *s);

/*
 * Managed Event, Condition, Barrier, Value and Array, Namespace and
 * BoundedSemaphore (mpq_manager_sync.3): the methods and meaning of the
 * local mpq_event, mpq_cond, mpq_barrier, mpq_value and mpq_sem (bounded),
 * found by name. Waiting blocks on the server. A waiter or a waiting
 * party holds a lease (lease_ns; 0: 5 s) that it renews while it waits:
 * one that dies is seen when it ends. See the page for what each does
 * when a process dies.
 */
struct mpq_manager_event;
int mpq_manager_event(struct mpq_manager *m, const char *name,
		      struct mpq_manager_event **out);
void mpq_manager_event_free(struct mpq_manager_event *e);
int mpq_manager_event_set(struct mpq_manager_event *e);
int mpq_manager_event_clear(struct mpq_manager_event *e);
int mpq_manager_event_is_set(struct mpq_manager_event *e);
int mpq_manager_event_wait(struct mpq_manager_event *e, int64_t timeout_ns);

/* lock: a managed lock of the caller's, or NULL: the RLock "<name>/cond"
 * (lease_ns is its lease too; 0: 30 s). */
struct mpq_manager_cond;
int mpq_manager_cond(struct mpq_manager *m, const char *name,
		     struct mpq_manager_lock *lock, int64_t lease_ns,
		     struct mpq_manager_cond **out);
void mpq_manager_cond_free(struct mpq_manager_cond *c);
struct mpq_manager_lock *mpq_manager_cond_get_lock(struct mpq_manager_cond *c);
int mpq_manager_cond_acquire(struct mpq_manager_cond *c, int64_t timeout_ns);
int mpq_manager_cond_release(struct mpq_manager_cond *c);
int mpq_manager_cond_wait(struct mpq_manager_cond *c, int64_t timeout_ns);
int mpq_manager_cond_wait_for(struct mpq_manager_cond *c,
			      int (*pred)(void *arg), void *arg,
			      int64_t timeout_ns);
int mpq_manager_cond_notify(struct mpq_manager_cond *c, int n);
int mpq_manager_cond_notify_all(struct mpq_manager_cond *c);

/* wait: the arrival index, -ECANCELED (broken), -ETIMEDOUT. */
struct mpq_manager_barrier;
int mpq_manager_barrier(struct mpq_manager *m, const char *name,
			unsigned int parties, int (*action)(void *arg),
			void *arg, int64_t lease_ns,
			struct mpq_manager_barrier **out);
void mpq_manager_barrier_free(struct mpq_manager_barrier *b);
int mpq_manager_barrier_wait(struct mpq_manager_barrier *b,
			     int64_t timeout_ns);
int mpq_manager_barrier_abort(struct mpq_manager_barrier *b);
int mpq_manager_barrier_reset(struct mpq_manager_barrier *b);
int mpq_manager_barrier_parties(struct mpq_manager_barrier *b);
int mpq_manager_barrier_n_waiting(struct mpq_manager_barrier *b);
int mpq_manager_barrier_broken(struct mpq_manager_barrier *b);

/* flags: MPQ_VALUE_RAW (no lock); else the RLock "<name>/value" with
 * lease_ns (0: 30 s). add: on 8-byte little-endian integers. */
struct mpq_manager_value;
int mpq_manager_value(struct mpq_manager *m, const char *name, size_t size,
		      unsigned int flags, int64_t lease_ns,
		      struct mpq_manager_value **out);
int mpq_manager_array(struct mpq_manager *m, const char *name,
		      size_t elem_size, size_t count, unsigned int flags,
		      int64_t lease_ns, struct mpq_manager_value **out);
void mpq_manager_value_free(struct mpq_manager_value *v);
size_t mpq_manager_value_size(struct mpq_manager_value *v);
long mpq_manager_array_len(struct mpq_manager_value *v);
struct mpq_manager_lock *mpq_manager_value_get_lock(struct mpq_manager_value *v);
int mpq_manager_value_get(struct mpq_manager_value *v, void *out);
int mpq_manager_value_set(struct mpq_manager_value *v, const void *in);
int mpq_manager_value_add(struct mpq_manager_value *v, int64_t delta,
			  int64_t *result);
int mpq_manager_array_get(struct mpq_manager_value *v, size_t i, void *out);
int mpq_manager_array_set(struct mpq_manager_value *v, size_t i,
			  const void *in);
/* Elements [start, stop). */
int mpq_manager_array_get_slice(struct mpq_manager_value *v, size_t start,
				size_t stop, void *out);
int mpq_manager_array_set_slice(struct mpq_manager_value *v, size_t start,
				size_t stop, const void *in);
int mpq_manager_array_add(struct mpq_manager_value *v, size_t i,
			  int64_t delta, int64_t *result);

/* get as dict_get; delete: 0 or -ENOENT (AttributeError). */
struct mpq_manager_namespace;
int mpq_manager_namespace(struct mpq_manager *m, const char *name,
			  struct mpq_manager_namespace **out);
void mpq_manager_namespace_free(struct mpq_manager_namespace *n);
int mpq_manager_namespace_get(struct mpq_manager_namespace *n,
			      const char *attr, void *buf, size_t *len);
int mpq_manager_namespace_set(struct mpq_manager_namespace *n,
			      const char *attr, const void *val, size_t len);
int mpq_manager_namespace_delete(struct mpq_manager_namespace *n,
				 const char *attr);
int mpq_manager_namespace_list(struct mpq_manager_namespace *n,
			       int (*fn)(const char *attr, void *arg),
			       void *arg);

/* lease_ns: a unit's lease (0: 30 s), or MPQ_MANAGER_NO_LEASE. */
struct mpq_manager_bsem;
int mpq_manager_bounded_sem(struct mpq_manager *m, const char *name,
			    unsigned int value, int64_t lease_ns,
			    struct mpq_manager_bsem **out);
void mpq_manager_bounded_sem_free(struct mpq_manager_bsem *s);
int mpq_manager_bounded_sem_acquire(struct mpq_manager_bsem *s,
				    int64_t timeout_ns);
int mpq_manager_bounded_sem_release(struct mpq_manager_bsem *s);
int mpq_manager_bounded_sem_get_value(struct mpq_manager_bsem *s);

/*
 * Managed objects of mpq's own types (mpq_manager_proxy.3): what these
 * return is a struct mpq_queue *, mpq_lock * or mpq_sem * that the
 * ordinary mpq_queue_*, mpq_lock_* and mpq_sem_* calls work on, served by
 * the manager, so code written for a local object runs on a managed one
 * (Python's proxies). Calls that cannot apply are -EOPNOTSUPP: fileno,
 * msgsize, backend, the zero-copy window, mpq_wait() on a queue,
 * mpq_sem_get_value, a Condition over a managed lock. export gives a
 * handle that import opens again in a spawned or fork-server child; a
 * forked child uses the object as it is. The manager m must outlive what
 * is opened through it (an imported object has a connection of its own).
 *
 * queue_open: a Queue. A get takes the message for good (and counts it
 * done); task_done, join and unfinished are -EINVAL, as on a local Queue.
 * joinable_queue_open: a JoinableQueue over the queue's leases: a get
 * takes a lease (attr lease_ns), task_done finishes the oldest message
 * this handle took and has not finished (-EINVAL if none; -ESTALE if its
 * lease ran out first and it went back to the queue). maxsize, lease and
 * dead-lettering are the first opener's, as for mpq_manager_queue.
 */
int mpq_manager_queue_open(struct mpq_manager *m, const char *name,
			   const struct mpq_manager_queue_attr *attr,
			   struct mpq_queue **out);
int mpq_manager_joinable_queue_open(struct mpq_manager *m, const char *name,
				    const struct mpq_manager_queue_attr *attr,
				    struct mpq_queue **out);
/*
 * A Lock or RLock whose holder holds a lease (lease_ns, 0: 30 s), as
 * mpq_manager_lock's: mpq_lock_acquire blocks on the server; a holder
 * that dies gives the next acquirer -EOWNERDEAD when its lease ends;
 * mpq_lock_consistent clears it. The holder is the process.
 */
int mpq_manager_lock_open(struct mpq_manager *m, const char *name,
			  int64_t lease_ns, struct mpq_lock **out);
int mpq_manager_rlock_open(struct mpq_manager *m, const char *name,
			   int64_t lease_ns, struct mpq_lock **out);
/* A BoundedSemaphore of leased units, as mpq_manager_sem's. */
int mpq_manager_sem_open(struct mpq_manager *m, const char *name,
			 unsigned int value, int64_t lease_ns,
			 struct mpq_sem **out);
/*
 * Renew the leases a managed object's handle holds: a JoinableQueue's
 * messages taken and not finished, a lock's hold, a semaphore's units.
 * For work longer than the lease. 0, -ESTALE (one had run out already),
 * -EINVAL (not a managed object), or the manager's errors.
 */
int mpq_manager_queue_renew(struct mpq_queue *q);
int mpq_manager_lock_renew_lease(struct mpq_lock *l);
int mpq_manager_sem_renew_lease(struct mpq_sem *s);

/*
 * Event, Condition, Barrier, Value and Array of mpq's own types
 * (mpq_manager_proxy.3): the mpq_event_*, mpq_cond_*, mpq_barrier_* and
 * mpq_value_* and mpq_array_* calls work on them, served by the managed
 * objects above (mpq_manager_event etc.), export/import included. A
 * condition's lock: a managed one from mpq_manager_lock_open or
 * mpq_manager_rlock_open, or NULL for its own RLock "<name>/cond". A
 * value's mpq_value_ptr() is NULL; its lock (unless MPQ_VALUE_RAW) is
 * the managed RLock "<name>/value".
 */
int mpq_manager_event_open(struct mpq_manager *m, const char *name,
			   struct mpq_event **out);
int mpq_manager_cond_open(struct mpq_manager *m, const char *name,
			  struct mpq_lock *lock, int64_t lease_ns,
			  struct mpq_cond **out);
int mpq_manager_barrier_open(struct mpq_manager *m, const char *name,
			     unsigned int parties, int (*action)(void *arg),
			     void *arg, int64_t lease_ns,
			     struct mpq_barrier **out);
int mpq_manager_value_open(struct mpq_manager *m, const char *name,
			   size_t size, unsigned int flags, int64_t lease_ns,
			   struct mpq_value **out);
int mpq_manager_array_open(struct mpq_manager *m, const char *name,
			   size_t elem_size, size_t count, unsigned int flags,
			   int64_t lease_ns, struct mpq_value **out);

/*
 * Listener and Client: multiprocessing.connection's, for processes that
 * are not related, on this machine (AF_UNIX, a path or an abstract name)
 * or across machines (TCP). They speak Python's wire format and
 * authentication handshake, so either end may be Python's
 * multiprocessing.connection. What they give is an ordinary struct
 * mpq_conn (mpq_conn_from_fd() in <mpq.h>): send_bytes, recv_bytes_into,
 * poll, fileno and mpq_wait() as for a pipe. See mpq_listener(3).
 *
 * Addresses: "/path" or any string with a '/' (AF_UNIX path; a bare name
 * without ':port' is one too), "@name" (abstract; Python's "\0name"),
 * "host:port" or "[v6]:port" (TCP; ":port" listens on every interface,
 * port 0 on a free one). A listener's NULL address is an abstract name
 * the kernel picks.
 *
 * authkey: NULL for no authentication (Python's authkey=None); else both
 * ends must hold the same bytes. The handshake is Python's HMAC challenge
 * both ways; mpq sends 3.12's "{sha256}" challenge and answers 3.11's
 * (HMAC-MD5) and 3.12's (any digest it names) alike. A wrong key is
 * -EACCES on both ends (Python's AuthenticationError); a peer that does
 * not speak the handshake, -EPROTO.
 */
struct mpq_listener;

/* Zero-initialise; zero means the default; reserved fields must be 0. */
struct mpq_listener_attr {
	int32_t backlog;		/* listen(2)'s: 0 is SOMAXCONN */
	uint32_t flags;			/* none yet: must be 0 */
	int64_t handshake_timeout_ns;	/* bound on one accepted peer's
					   handshake: 0 is 20 s, < 0 none */
	uint64_t __reserved[4];
};

/*
 * Bind address and listen. An AF_UNIX path must not exist (as in Python);
 * it is unlinked by mpq_listener_close() in the process that bound it.
 * Returns 0, -EINVAL, -ENAMETOOLONG, -EADDRINUSE, -EACCES, -EHOSTUNREACH
 * (host not resolved), -EADDRNOTAVAIL, -ENOMEM, -EMFILE.
 */
int mpq_listener_new(struct mpq_listener **out, const char *address,
		     const void *authkey, size_t authkey_len,
		     const struct mpq_listener_attr *attr);

/*
 * Accept one connection and, with a key, run the handshake, all within
 * timeout_ns (and the handshake within the attr's bound too). A peer that
 * fails the handshake is dropped and its error returned; the listener
 * goes on. Returns 0, -EAGAIN (timeout 0, nobody waiting), -ETIMEDOUT,
 * -EACCES (wrong key), -EPROTO (not Python's handshake, or garbage), -EPIPE
 * (the peer left mid-handshake), -EBADF, -EINVAL, -ENOMEM, -EMFILE.
 */
int mpq_listener_accept(struct mpq_listener *l, struct mpq_conn **out,
			int64_t timeout_ns);

/* The address bound (as above, numeric); its length, or -ERANGE, -EBADF. */
int mpq_listener_address(struct mpq_listener *l, char *buf, size_t len);

/* The listening socket, readable when a peer is waiting to be accepted. */
int mpq_listener_fileno(struct mpq_listener *l);

/* Stop listening (unlinking its path); later calls: -EBADF. */
int mpq_listener_close(struct mpq_listener *l);
void mpq_listener_free(struct mpq_listener *l);

/*
 * Connect to address and, with a key, run the handshake, all within
 * timeout_ns (Python's Client has none: pass MPQ_FOREVER for that).
 * Returns 0, -ECONNREFUSED, -ENOENT (no such path), -ETIMEDOUT, -EACCES,
 * -EPROTO, -EPIPE, -EHOSTUNREACH, -EINVAL, -ENAMETOOLONG, -ENOMEM.
 */
int mpq_client(struct mpq_conn **out, const char *address,
	       const void *authkey, size_t authkey_len, int64_t timeout_ns);

/*
 * The two halves of the handshake, over any connection (Python's
 * deliver_challenge and answer_challenge): the deliverer checks that the
 * answerer holds the key. Returns 0, -EACCES, -EPROTO, -ETIMEDOUT,
 * -EPIPE, -EINVAL, and the connection's errors.
 */
int mpq_deliver_challenge(struct mpq_conn *c, const void *authkey,
			  size_t authkey_len, int64_t timeout_ns);
int mpq_answer_challenge(struct mpq_conn *c, const void *authkey,
			 size_t authkey_len, int64_t timeout_ns);

#ifdef __cplusplus
}
#endif

#endif /* MPQ_NET_H */
