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
 * Kinds to come (event, condition, barrier, value) follow the same
 * pattern: a struct mpq_ext_<kind>_ops, mpq_ext_<kind>_new() and
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
 * Importers: mpq_queue_import(), mpq_lock_import() and mpq_sem_import()
 * give a handle that starts with prefix to import(kind, handle, out),
 * where out is the struct mpq_<kind> ** the caller passed. import returns
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
