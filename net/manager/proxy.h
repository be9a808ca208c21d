/* SPDX-License-Identifier: MIT */
/*
 * What proxy.c (queues, locks, semaphores) and proxy_sync.c (events,
 * conditions, barriers, values) share: the common part of a managed
 * object of mpq's own types, its export into a sealed memfd, and the
 * import's dispatch.
 */
#ifndef MPQ_NET_MANAGER_PROXY_H
#define MPQ_NET_MANAGER_PROXY_H

#include <mpq_ext.h>

#include "manager/manager.h"

#define PX_PREFIX	"mpq-mgr-"

enum {
	PX_QUEUE, PX_JQUEUE, PX_LOCK, PX_RLOCK, PX_SEM,
	PX_EVENT, PX_COND, PX_BARRIER, PX_VALUE,
	PX_NKINDS
};

/* What every proxy has: how to open the object again elsewhere. */
struct px_common {
	struct mpq_manager *m;
	int own_m;		/* an import's connection: freed with it */
	int kind;		/* PX_* */
	char *name;
	uint64_t num;		/* maxsize, a semaphore's value, parties... */
	int64_t lease_ns;
	uint32_t max_deliveries;	/* a queue's; an array's count */
	uint32_t extra;		/* a kind's own flags */
	int export_fd;		/* the memfd of the last export, or -1 */
};

/*
 * Every open's steps, the same for each kind (a proxy's first member is
 * its struct px_common, so obj is either):
 *   mpq__px_new     a zeroed proxy of size bytes for name on m, or NULL
 *                   (-ENOMEM);
 *   mpq__px_opened  its end: on success the proxy owns m if own_m (an
 *                   import's connection); on failure obj goes through
 *                   free_obj and m stays the caller's. Returns err.
 *   mpq__px_export  every kind's ops->export.
 */
void *mpq__px_new(size_t size, struct mpq_manager *m, int kind,
		  const char *name);
int mpq__px_opened(void *obj, int own_m, int err, void (*free_obj)(void *));
void mpq__px_common_fini(struct px_common *c);
int mpq__px_export(void *obj, char *buf, size_t len);

/* A managed lock handle over a Condition's or Value's own lock ml. */
int mpq__px_lock_wrap(struct mpq_manager *m, struct mpq_manager_lock *ml,
		      const char *name, int64_t lease_ns,
		      struct mpq_lock **out);
/* The managed lock behind a handle from mpq_manager_(r)lock_open, or NULL. */
struct mpq_manager_lock *mpq__px_lock_of(struct mpq_lock *l);

/* An export's fields past the connection's, parsed once for every kind. */
struct px_fields {
	const char *name;
	unsigned long long num;
	int64_t lease_ns;
	unsigned long count;	/* max_deliveries, an array's count */
	unsigned long extra;
};

/* proxy_sync.c: open kind k (PX_EVENT...) from an export's fields f, on
 * m, which the opened object then owns. out as mpq_ext_importer's. */
int mpq__px_sync_import(struct mpq_manager *m, int k,
			const struct px_fields *f, void *out);

#endif /* MPQ_NET_MANAGER_PROXY_H */
