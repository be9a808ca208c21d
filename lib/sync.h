/* SPDX-License-Identifier: MIT */
/*
 * Private to libmpq: how locks, conditions, semaphores, events, barriers
 * and Values lie in their blocks of shared memory, and the code they share
 * (sync.c): making a block with its header, checking a block that came
 * from elsewhere, handles for spawned children, and waiting.
 *
 * A sync block starts with a header (struct mpq_sync_hdr), then 64-byte
 * records: one cache line each, so that two objects' hot words never
 * share a line. The header's fields are written once, at creation; a
 * process that opens the block checks them and keeps its own copies: any
 * participant can write anything into the block afterwards, and a wrong
 * value there must give a wrong answer or -EUCLEAN, never a bad access.
 */
#ifndef MPQ_SYNC_H
#define MPQ_SYNC_H

#include "internal.h"
#include "robust.h"

#define MPQ_SYNC_MAGIC		0x6d707153U	/* "Sqpm" */
#define MPQ_SYNC_VERSION	1U
#define MPQ_SYNC_REC		64U

/* Header flags. */
#define MPQ_SYNC_OWN_LOCK	(1U << 0)	/* record 0 is a lock of its own */
#define MPQ_SYNC_RLOCK		(1U << 1)	/* ...and it is recursive */
#define MPQ_SYNC_BOUNDED	(1U << 2)	/* semaphore: BoundedSemaphore */
#define MPQ_SYNC_EXT_LOCK	(1U << 3)	/* value: a lock of the caller's */
#define MPQ_SYNC_FLAGS		(MPQ_SYNC_OWN_LOCK | MPQ_SYNC_RLOCK | \
				 MPQ_SYNC_BOUNDED | MPQ_SYNC_EXT_LOCK)

struct mpq_sync_hdr {
	uint32_t magic;
	uint32_t version;
	uint32_t kind;		/* enum mpq_shm_kind */
	uint32_t flags;		/* MPQ_SYNC_* */
	uint64_t bytes;		/* of the block */
	uint32_t param[4];	/* per kind, fixed at creation */
	uint32_t __pad[6];
};

/*
 * Lock and RLock. word is a robust futex word (robust.h): 0 when free,
 * else the owner's TID, with FUTEX_WAITERS while someone sleeps on it;
 * the kernel turns it into FUTEX_OWNER_DIED when the owner dies holding
 * it. state's INCONSISTENT bit then stays set, and every acquirer is told
 * -EOWNERDEAD, until one calls mpq_lock_consistent().
 */
#define MPQ_LOCK_INCONSISTENT	(1U << 0)

struct mpq_lock_rec {
	uint32_t word;
	uint32_t count;		/* RLock: how many times the owner holds it */
	uint32_t state;
	uint32_t __pad0[5];
	uint64_t link;		/* robust list link, 32 bytes after word */
	uint64_t __pad1[3];
};
MPQ_ROBUST_RECORD(struct mpq_lock_rec, word, link);

/*
 * A lock handle. It owns a block (a Lock made by mpq_lock_new) or points
 * into the block of the object that owns it (the lock of a Condition or a
 * Value: "borrowed", freed with that object).
 */
struct mpq_sync {
	struct mpq_block block;
	uint32_t kind;
	uint32_t flags;
	uint32_t param[4];
	int64_t spin_ns;
};

struct mpq_lock {
	struct mpq_sync sync;
	struct mpq_lock_rec *rec;
	uint64_t oid;		/* its block's id, for tracers (probes.h) */
	uint32_t index;		/* its record in that block */
	int recursive;
	int borrowed;
	int64_t spin_ns;
	/* An extension's lock (ext.c); rec is NULL, so the fast paths
	 * already leave for the slow ones, which look here. */
	const struct mpq_ext_lock_ops *ext;
	void *ext_obj;
};

/* ext.c: a lock's calls, into its extension. */
int mpq_xl_acquire(struct mpq_lock *l, int64_t timeout_ns);
int mpq_xl_call(struct mpq_lock *l, size_t off);
#define MPQ_XL(l, op)	mpq_xl_call((l), offsetof(struct mpq_ext_lock_ops, op))
int mpq_xl_export(struct mpq_lock *l, char *buf, size_t len);
void mpq_xl_free(struct mpq_lock *l);

/* In sync.h, not sem.c, for ext.c. */
struct mpq_sem {
	struct mpq_sync sync;
	struct mpq_sem_rec *rec;
	uint32_t bound;		/* BoundedSemaphore: the initial value */
	int bounded;
	/* An extension's semaphore (ext.c); rec is NULL, as for a lock. */
	const struct mpq_ext_sem_ops *ext;
	void *ext_obj;
};

int mpq_xs_acquire(struct mpq_sem *s, int64_t timeout_ns);
int mpq_xs_call(struct mpq_sem *s, size_t off);
#define MPQ_XS(s, op)	mpq_xs_call((s), offsetof(struct mpq_ext_sem_ops, op))
/*
 * Events, conditions, barriers, values of an extension (event.c, cond.c,
 * barrier.c, value.c): their record pointer is NULL, so the check every
 * public call makes of it is their one branch. mpq_x_op(): the
 * int (*)(void *) at off in a table of size bytes, or NULL; MPQ_X_FN:
 * any member, or NULL past the table's size.
 */
typedef int (*mpq_x_fn)(void *obj);
mpq_x_fn mpq_x_op(const void *ops, size_t size, size_t off);
#define MPQ_X_FN(ops, member) \
	((ops)->size >= offsetof(__typeof__(*(ops)), member) + \
	 sizeof((ops)->member) ? (ops)->member : NULL)
int mpq_xs_export(struct mpq_sem *s, char *buf, size_t len);
void mpq_xs_free(struct mpq_sem *s);

static inline void *mpq_sync_rec(struct mpq_sync *s, unsigned int i)
{
	return (char *)s->block.map + MPQ_SYNC_REC * (1 + i);
}

/*
 * The attr a sync object is made with: defaults for NULL; -EINVAL for
 * flags or reserved bytes set (none are defined yet).
 */
int mpq_lock_attr_get(const struct mpq_lock_attr **attr);
int mpq_sync_create(struct mpq_sync *s, uint32_t kind, uint32_t flags,
		    const uint32_t param[4], uint64_t bytes, int backend,
		    int64_t spin_ns);
int mpq_sync_open_fd(struct mpq_sync *s, int fd, uint32_t kind);
int mpq_sync_import(struct mpq_sync *s, const char *handle, const char *type,
		    uint32_t kind);
int mpq_sync_export(struct mpq_sync *s, const char *type, char *buf,
		    size_t len);
void mpq_sync_free(struct mpq_sync *s);
/*
 * A handle that failed half-way: its block if it got one, then the handle
 * itself, which must start with s.
 */
void mpq_sync_drop(struct mpq_sync *s);
int64_t mpq_sync_spin(int64_t spin_ns);

/* lock.c: a lock handle over a record in someone else's block. */
void mpq_lock_borrow(struct mpq_lock *l, struct mpq_sync *owner,
		     unsigned int index, int recursive);
void mpq_lock_init_rec(struct mpq_lock_rec *rec);
/* Drop this thread's hold before the memory goes (see mpq_lock_free). */
void mpq_lock_fini(struct mpq_lock *l);
/* Condition.wait: release every level of an owned lock, and take it back. */
int mpq_lock_release_save(struct mpq_lock *l, uint32_t *count);
int mpq_lock_acquire_restore(struct mpq_lock *l, uint32_t count);
int mpq_lock_is_mine(struct mpq_lock *l);

#endif /* MPQ_SYNC_H */
