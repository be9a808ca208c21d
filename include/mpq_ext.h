/* SPDX-License-Identifier: MIT */
/*
 * libmpq's extension interface (mpq_ext(3)): how another library gives a
 * program objects of libmpq's own types whose calls it serves itself.
 * libmpq-net uses it for managed objects: a struct mpq_queue * that
 * mpq_manager_queue_open() returns works with every mpq_queue_* call,
 * which libmpq hands to libmpq-net's table of operations; libmpq itself
 * holds no network code, only the tables' pointers.
 *
 * Not for applications: they use the objects through <mpq.h>. The
 * symbols are in their own version node (MPQ_EXT_0.3), so that the
 * interface can change with the libraries that use it without touching
 * the application API.
 *
 * An operation a table leaves NULL is -EOPNOTSUPP. Every table starts with
 * its own size, so that a table built against an older header (smaller)
 * is read only as far as it goes. obj is the extension's own object, given
 * at creation and passed back to every operation. Each kind is handed to
 * its table by a single early branch in the public calls that libmpq's
 * fast paths already take on their rare side; a local object pays no
 * more than that branch.
 *
 * Events, conditions, barriers and values (since MPQ_EXT_0.3) follow the
 * same pattern: a struct mpq_ext_<kind>_ops, mpq_ext_<kind>_new() and
 * mpq_ext_<kind>_obj(), and an MPQ_EXT_<KIND> for import.
 */
#ifndef MPQ_EXT_H
#define MPQ_EXT_H

#include <mpq.h>

#ifdef __cplusplus
extern "C" {
#endif

enum mpq_ext_kind {
	MPQ_EXT_QUEUE	= 1,
	MPQ_EXT_LOCK	= 2,	/* Lock and RLock */
	MPQ_EXT_SEM	= 3,
	MPQ_EXT_EVENT	= 4,	/* since MPQ_EXT_0.3 */
	MPQ_EXT_COND	= 5,
	MPQ_EXT_BARRIER	= 6,
	MPQ_EXT_VALUE	= 7,	/* Value and Array */
};

/*
 * A queue's operations. put_many, get_many: as mpq_queue_put_many and
 * mpq_queue_get_many (n >= 1, already checked); mpq_queue_put and
 * mpq_queue_get call them with n = 1. qsize, full: as the public calls
 * (empty is qsize == 0). maxsize: the bound. task_done, join, unfinished:
 * JoinableQueue's. export: write a handle into buf that import() of the
 * same extension opens in a spawned child (it makes whatever fd the child
 * needs inheritable, mpq_ext_inherit_fd()); its length or -errno.
 * free: release obj (the struct mpq_queue is freed by libmpq).
 */
struct mpq_ext_queue_ops {
	size_t size;		/* sizeof(struct mpq_ext_queue_ops) */
	int (*put_many)(void *obj, const struct iovec *msgs, unsigned int n,
			int64_t timeout_ns);
	int (*get_many)(void *obj, struct iovec *bufs, unsigned int n,
			int64_t timeout_ns);
	int (*qsize)(void *obj);
	int (*full)(void *obj);
	int (*maxsize)(void *obj);
	int (*task_done)(void *obj);
	int (*join)(void *obj, int64_t timeout_ns);
	int (*unfinished)(void *obj);
	int (*export)(void *obj, char *buf, size_t len);
	void (*free)(void *obj);
};

/* A Lock's or RLock's: as the mpq_lock_* calls of the same names. */
struct mpq_ext_lock_ops {
	size_t size;
	int (*acquire)(void *obj, int64_t timeout_ns);
	int (*release)(void *obj);
	int (*consistent)(void *obj);
	int (*locked)(void *obj);
	int (*owned)(void *obj);
	int (*export)(void *obj, char *buf, size_t len);
	void (*free)(void *obj);
};

/* A semaphore's: as the mpq_sem_* calls of the same names. */
struct mpq_ext_sem_ops {
	size_t size;
	int (*acquire)(void *obj, int64_t timeout_ns);
	int (*release)(void *obj);
	int (*get_value)(void *obj);
	int (*export)(void *obj, char *buf, size_t len);
	void (*free)(void *obj);
};

/*
 * Make a handle of libmpq's type whose calls go to ops with obj. ops must
 * stay valid for the handle's life (a static table); obj is the caller's
 * until the handle is freed, when ops->free(obj) is called. Returns 0,
 * -EINVAL, -ENOMEM (then obj is still the caller's).
 */
int mpq_ext_queue_new(struct mpq_queue **out,
		      const struct mpq_ext_queue_ops *ops, void *obj);
int mpq_ext_lock_new(struct mpq_lock **out, const struct mpq_ext_lock_ops *ops,
		     void *obj, int recursive);
int mpq_ext_sem_new(struct mpq_sem **out, const struct mpq_ext_sem_ops *ops,
		    void *obj);

/* The obj behind a handle made with ops, or NULL (a local object, or
 * another extension's). */
void *mpq_ext_queue_obj(struct mpq_queue *q,
			const struct mpq_ext_queue_ops *ops);
void *mpq_ext_lock_obj(struct mpq_lock *l, const struct mpq_ext_lock_ops *ops);
void *mpq_ext_sem_obj(struct mpq_sem *s, const struct mpq_ext_sem_ops *ops);

/*
 * Since MPQ_EXT_0.3. An event's, a condition's, a barrier's: as the
 * mpq_event_*, mpq_cond_* and mpq_barrier_* calls of the same names
 * (arguments already checked as the public call checks them; a barrier's
 * wait may get MPQ_BARRIER_DEFAULT_TIMEOUT). A condition's lock is the
 * struct mpq_lock * given to mpq_ext_cond_new(), which mpq_cond_get_lock()
 * returns, and whose acquire and release mpq_cond_acquire() and
 * mpq_cond_release() are: the extension keeps it (and frees it in free,
 * if it is its own).
 */
struct mpq_ext_event_ops {
	size_t size;
	int (*set)(void *obj);
	int (*clear)(void *obj);
	int (*is_set)(void *obj);
	int (*wait)(void *obj, int64_t timeout_ns);
	int (*export)(void *obj, char *buf, size_t len);
	void (*free)(void *obj);
};

struct mpq_ext_cond_ops {
	size_t size;
	int (*wait)(void *obj, int64_t timeout_ns);
	int (*wait_for)(void *obj, int (*pred)(void *arg), void *arg,
			int64_t timeout_ns);
	int (*notify)(void *obj, int n);
	int (*notify_all)(void *obj);
	int (*export)(void *obj, char *buf, size_t len);
	void (*free)(void *obj);
};

struct mpq_ext_barrier_ops {
	size_t size;
	int (*wait)(void *obj, int64_t timeout_ns);
	int (*abort)(void *obj);
	int (*reset)(void *obj);
	int (*parties)(void *obj);
	int (*n_waiting)(void *obj);
	int (*broken)(void *obj);
	int (*export)(void *obj, char *buf, size_t len);
	void (*free)(void *obj);
};

/*
 * A value's or array's: copy elements [start, stop) out or in (the whole
 * value is [0, count); bounds already checked). Its element size, count
 * and lock are given to mpq_ext_value_new(), as a condition's lock is;
 * mpq_value_ptr() of such a value is NULL (its bytes are not here).
 */
struct mpq_ext_value_ops {
	size_t size;
	int (*get)(void *obj, size_t start, size_t stop, void *out);
	int (*set)(void *obj, size_t start, size_t stop, const void *in);
	int (*export)(void *obj, char *buf, size_t len);
	void (*free)(void *obj);
};

int mpq_ext_event_new(struct mpq_event **out,
		      const struct mpq_ext_event_ops *ops, void *obj);
int mpq_ext_cond_new(struct mpq_cond **out, const struct mpq_ext_cond_ops *ops,
		     void *obj, struct mpq_lock *lock);
int mpq_ext_barrier_new(struct mpq_barrier **out,
			const struct mpq_ext_barrier_ops *ops, void *obj);
/* elem_size and count as mpq_array_new's; lock NULL: a raw value. */
int mpq_ext_value_new(struct mpq_value **out,
		      const struct mpq_ext_value_ops *ops, void *obj,
		      size_t elem_size, size_t count, struct mpq_lock *lock);
void *mpq_ext_event_obj(struct mpq_event *e,
			const struct mpq_ext_event_ops *ops);
void *mpq_ext_cond_obj(struct mpq_cond *c, const struct mpq_ext_cond_ops *ops);
void *mpq_ext_barrier_obj(struct mpq_barrier *b,
			  const struct mpq_ext_barrier_ops *ops);
void *mpq_ext_value_obj(struct mpq_value *v,
			const struct mpq_ext_value_ops *ops);

/*
 * What import() gets as out for MPQ_EXT_COND, MPQ_EXT_BARRIER and
 * MPQ_EXT_VALUE (the other kinds get the struct mpq_<kind> ** itself):
 * the caller's out and the import call's other arguments.
 */
struct mpq_ext_import_args {
	void *out;			/* struct mpq_cond ** etc. */
	struct mpq_lock *lock;		/* cond_import's, value_import's */
	int (*action)(void *arg);	/* barrier_import's */
	void *arg;
};

/*
 * Importers: mpq_queue_import(), mpq_lock_import(), mpq_sem_import()
 * and the event's, condition's, barrier's and value's give a handle that
 * starts with prefix to import(kind, handle, out), where out is the
 * struct mpq_<kind> ** the caller passed (or, for a condition, barrier or
 * value, a struct mpq_ext_import_args *). import returns
 * 0, or -EINVAL for a handle of another kind. At most 8 importers; the
 * same one registered twice is one. An extension registers when it is
 * loaded (a constructor): a spawned child runs the same program, so it
 * has the importer before main() runs. Returns 0, -EINVAL, -ENOSPC.
 */
struct mpq_ext_importer {
	const char *prefix;	/* e.g. "mpq-mgr-" */
	int (*import)(int kind, const char *handle, void *out);
};
int mpq_ext_register(const struct mpq_ext_importer *imp);

/* Let fd reach every child started with MPQ_START_SPAWN or by a fork
 * server, at its number, while it stays open (what an export does). */
int mpq_ext_inherit_fd(int fd);

#ifdef __cplusplus
}
#endif

#endif /* MPQ_EXT_H */
