/* SPDX-License-Identifier: MIT */
/*
 * The seam between libmpq's Pool and libmpq-net's distributed pool
 * (net/pool/): libmpq has no network code, so a pool made with a manager
 * (mpq_pool_attr.remote) drives its work through this table of
 * operations, which libmpq-net installs from a constructor with
 * mpq__pool_remote_install(); libmpq gives back the few things a remote
 * worker needs from it (the task table, and running one task the way a
 * local worker does). Private to the two libraries: not API.
 */
#ifndef MPQ_POOL_REMOTE_H
#define MPQ_POOL_REMOTE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "mpq.h"

/* A result for item index of job (status 0: a value; < 0 an error). */
typedef void (*mpq__pool_sink_fn)(void *arg, uint64_t job, uint64_t index,
				  int status, const void *data, size_t len);

/*
 * What every worker of the pool is told besides tasks: the initializer
 * (name NULL: none; registered with MPQ_TARGET) run once when a worker
 * joins, its argument, and maxtasksperchild (0: none).
 */
struct mpq__pool_init {
	const char *name;
	const void *arg;
	size_t len;
	uint32_t maxtasks;
};

struct mpq__pool_remote_ops {
	/*
	 * The pool's side, all on one thread but open (the caller's).
	 * open: claim the pool's name on the manager, start nlocal local
	 * workers; bell is readable when the pool wants its loop back
	 * (collect returns). table: the task table's hash.
	 */
	int (*open)(const struct mpq_pool_remote *cfg, int nlocal,
		    uint64_t table, uint32_t ntasks,
		    const struct mpq__pool_init *init, int bell, void **ctx);
	/* Hand out items [first, first + count) of job, running name. */
	int (*send)(void *ctx, uint64_t job, uint64_t first, uint32_t count,
		    const char *name, const struct iovec *args);
	/*
	 * Wait (at most about a second) for results, the bell, or work of
	 * the pool's own (leases, dead letters, workers to replace); give
	 * each result to sink. The same item may come more than once.
	 */
	int (*collect)(void *ctx, mpq__pool_sink_fn sink, void *arg);
	/* The pool ends: remove every key, stop the local workers. */
	void (*close)(void *ctx);
	/* A worker process (mpq_init saw --mpq-worker): never returns. */
	void (*worker_main)(const char *address);
};

/* A remote worker's task run, as a local worker runs it. */
struct mpq__pool_runner;
struct mpq__pool_out {
	int status;		/* 0 or the task's code (< 0) */
	const void *data;	/* the value, or the error's message */
	size_t len;		/* valid until the next run or free */
};

struct mpq__pool_lib {
	mpq_task_fn (*task_by_name)(const char *name, size_t len);
	uint64_t (*table_hash)(uint32_t *ntasks);
	struct mpq__pool_runner *(*runner_new)(void);
	void (*run)(struct mpq__pool_runner *r, mpq_task_fn fn,
		    const void *arg, size_t len, struct mpq__pool_out *out);
	void (*runner_free)(struct mpq__pool_runner *r);
	/* An initializer registered with MPQ_TARGET, by name; NULL: none. */
	mpq_target_fn (*target_by_name)(const char *name);
};

const struct mpq__pool_lib *
mpq__pool_remote_install(const struct mpq__pool_remote_ops *ops);

#endif
