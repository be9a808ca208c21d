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

int mpq__px_common_init(struct px_common *c, struct mpq_manager *m, int kind,
			const char *name);
void mpq__px_common_fini(struct px_common *c);
int mpq__px_export(struct px_common *c, char *buf, size_t len);

/* A managed lock handle over a Condition's or Value's own lock ml. */
int mpq__px_lock_wrap(struct mpq_manager *m, struct mpq_manager_lock *ml,
		      const char *name, int64_t lease_ns,
		      struct mpq_lock **out);
/* The managed lock behind a handle from mpq_manager_(r)lock_open, or NULL. */
struct mpq_manager_lock *mpq__px_lock_of(struct mpq_lock *l);

/* proxy_sync.c: open kind k (PX_EVENT...) from an export's fields f, on
 * m, which the opened object then owns. out as mpq_ext_importer's. */
int mpq__px_sync_import(struct mpq_manager *m, int k, const char *const *f,
			void *out);

#endif /* MPQ_NET_MANAGER_PROXY_H */
