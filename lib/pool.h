/* SPDX-License-Identifier: MIT */
/*
 * Private to the pool: the wire formats between the pool and its workers,
 * the worker's shared "staging" record, and the objects of the parent side
 * (pool, worker slots, jobs = async results, messages in flight).
 *
 * The files: pool.c (the pool object and its worker slots), pool_job.c
 * (submitting work, async results and iterators), pool_handler.c (the
 * parent's io_uring loop and the pool's state changes), pool_dispatch.c
 * (handing out work), pool_results.c (results, and deaths), pool_task.c
 * (the task API and the records it writes), pool_worker.c (the worker
 * process).
 *
 * Why each worker has channels of its own. A worker can die at any
 * instruction. On a channel shared by all workers (Python's inqueue and
 * outqueue) a death inside a put or get can leave the channel itself
 * unusable, and nobody knows which task the dead worker had taken. Here
 * the pool owns, per worker, a pipe (tasks down, results up), a socket
 * for memfds of large values, and a staging page both map: no worker can
 * touch another's, the pool knows exactly what it sent to whom, and
 * after a death the staging page says which item was running and holds
 * the results finished since the last message went out.
 */
#ifndef MPQ_POOL_H
#define MPQ_POOL_H

#include <limits.h>
#include <liburing.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Each direction of a worker's pipe. */
#define POOL_RING		(1U << 20)
/*
 * Largest message either way: one frame of the ring (a quarter of it), so
 * that a message is published with one store and a reader never waits in
 * the middle of one, and a death never leaves half of one visible.
 */
#define POOL_MSG_MAX		MPQ_FRAME_MAX(POOL_RING)
/* Values and arguments larger than this travel as memfds. */
#define POOL_INLINE_MAX		(64U << 10)
#define POOL_MAX_PROCESSES	1024
/*
 * A worker that could not start is tried again after this: one whose
 * start failed (fork, its initializer), and, once every slot has lost a
 * worker in a row before READY, one killed while starting (so that a
 * killer, or a program that cannot start, makes no fork storm).
 */
#define POOL_RESTART_NS		100000000LL
/*
 * Once every slot's worker failed to start this many times in a row (its
 * initializer returned an error, crashed or exited, or the worker could
 * not be made or crashed or exited before READY) the pool is broken:
 * the work waiting while no worker is ready fails with the cause. A
 * worker killed by a signal someone sent is replaced, whenever it dies,
 * and counts for nothing. mpq_pool_new gives up on the first slot that
 * gets there.
 */
#define POOL_START_TRIES	3
/* Reaping a worker whose sentinel said it ended. */
#define POOL_REAP_NS		1000000000LL
/*
 * A worker's exit code that nobody knows: a fork server that died took
 * it (mpq_process_exitcode() gave -ECHILD).
 */
#define POOL_CODE_LOST		INT_MIN

/* The name spawned workers run under (a target in spawn.c's table). */
#define POOL_WORKER_TARGET	"mpq-pool-worker"

enum pool_msg_type {
	POOL_MSG_TASKS = 1,	/* pool -> worker: items to run */
	POOL_MSG_EXIT,		/* pool -> worker: no more work, exit */
	POOL_MSG_READY,		/* worker -> pool: initializer done */
	POOL_MSG_RESULTS,	/* worker -> pool: records of finished items */
};

/* Pool -> worker: a header, then nseg segments. */
struct pool_tasks_hdr {
	uint32_t type;
	uint32_t nseg;
	uint64_t seq;		/* the pool's number for this message */
};

/*
 * A segment: count items of one job, one function. Followed by the name
 * (NAME; padded to 8), then the arguments: FIXED, count * arg_size bytes
 * (padded to 8); else per item a struct pool_arg_hdr and its bytes
 * (padded to 8).
 */
struct pool_seg_hdr {
	uint64_t fn;		/* fork: the function's address; spawn: its
				   index in the pool's table of names */
	uint32_t count;
	uint32_t flags;		/* POOL_SEG_* */
	uint32_t arg_size;	/* FIXED: each argument's size */
	uint32_t name_len;	/* NAME: bytes of the name */
};

#define POOL_SEG_FIXED		(1U << 0)
#define POOL_SEG_NAME		(1U << 1)	/* spawn: first use of fn */
#define POOL_SEG_CHUNK_END	(1U << 2)	/* ends a chunk: one task done
						   for maxtasksperchild */
#define POOL_SEG_RETRY		(1U << 3)	/* pool only: a second run */

struct pool_arg_hdr {
	uint32_t len;		/* bytes that follow; FD: 8, the size */
	uint32_t flags;		/* POOL_ARG_FD: the next memfd on the socket */
};

#define POOL_ARG_FD		(1U << 0)

/* Worker -> pool: READY, or RESULTS whose records cover count items. */
struct pool_results_hdr {
	uint32_t type;
	uint32_t count;		/* items */
	uint64_t seq;		/* the task message the records belong to */
	uint32_t first;		/* position of the first record in it */
	int32_t status;		/* READY: what the initializer returned */
	uint64_t busy_ns;	/* time the records' items took to run */
};

/*
 * A record: status 0 is a value of len bytes; POOL_REC_FD a value in the
 * next memfd on the socket (len 8: its size follows); POOL_REC_RUN the
 * values of several items, all of one size (struct pool_run_hdr); < 0 an
 * error code with len bytes of message. The bytes are padded to 8.
 */
struct pool_rec_hdr {
	int32_t status;
	uint32_t len;
};

#define POOL_REC_FD		1
#define POOL_REC_RUN		2

/* A run: count values of size bytes each, back to back. */
struct pool_run_hdr {
	int32_t status;		/* POOL_REC_RUN */
	uint32_t count;
	uint32_t size;
	uint32_t __pad;
};

/* Values up to this size go into runs. */
#define POOL_RUN_MAX		256

/*
 * The staging page, shared by a worker and the pool. The worker builds its
 * next RESULTS message in msg (a flush sends it and starts again), and says
 * what it is doing in the fields before it. The pool reads them only after
 * the worker has died, when nothing moves any more; every field is still
 * written with a release store, so that an item is never seen started or
 * recorded before it was (the compiler keeps these stores in order across
 * the task call). Written order, for each task message: used = 0, running
 * = NONE, msg_seq; for each item: running, the record, used.
 */
struct pool_staging {
	uint64_t msg_seq;	/* the task message worked on */
	uint32_t running;	/* position of the item started last */
	uint32_t init;		/* POOL_INIT_*: how far the initializer got */
	uint64_t used;		/* bytes of complete records after msg */
	/*
	 * running == POOL_RUNNING_LOOP: a task's loop (mpq_task_loop_fn)
	 * runs items from loop_first, writing their values into the run at
	 * loop_run_off, whose count the loop raises after each: the count
	 * says which item it is in, and used is to be worked out from it.
	 */
	uint32_t loop_first;
	uint32_t loop_count0;	/* the run's count when the loop began */
	uint64_t loop_run_off;
	uint32_t loop_n;	/* the items the loop was given */
	uint32_t __pad1;
	uint64_t __pad2[2];
	struct pool_results_hdr msg;	/* then the records */
};

#define POOL_RUNNING_NONE	UINT32_MAX
#define POOL_RUNNING_LOOP	(UINT32_MAX - 1)
/* staging->init: not begun (the page is zeroed), running, returned. */
#define POOL_INIT_NOT_YET	0
#define POOL_INIT_RUNNING	1
#define POOL_INIT_DONE		2
#define POOL_STAGING_SIZE	(offsetof(struct pool_staging, msg) + POOL_MSG_MAX)
#define POOL_RECS_MAX		(POOL_MSG_MAX - sizeof(struct pool_results_hdr))

/*
 * Room for one more element in the array at *arrp (pointer to the array
 * pointer) of n elements of size bytes, capacity *cap: doubled when full,
 * first when empty. 0, or -ENOMEM with the array as it was.
 */
static inline int pool_grow(void *arrp, size_t *cap, size_t n, size_t size,
			    size_t first)
{
	size_t c = *cap ? 2 * *cap : first;
	void *arr, *grown;

	if (n < *cap)
		return 0;
	if (c > SIZE_MAX / size)
		return -ENOMEM;
	memcpy(&arr, arrp, sizeof(arr));
	grown = realloc(arr, c * size);
	if (!grown)
		return -ENOMEM;
	memcpy(arrp, &grown, sizeof(grown));
	*cap = c;
	return 0;
}

static inline size_t pool_align8(size_t x)
{
	return (x + 7) & ~(size_t)7;
}

/*
 * Zero the padding after len bytes at data (before they are written): the
 * last, partial word, so no bytes of an older message go out with them.
 */
static inline void pool_pad(void *data, size_t len)
{
	if (len & 7)
		memset((unsigned char *)data + (len & ~(size_t)7), 0, 8);
}

/* ---- the parent side ------------------------------------------------- */

/* A received message that values point into, freed with its last user. */
struct pool_buf {
	uint32_t refs;
	uint32_t __pad;
	size_t size;
	unsigned char data[] __attribute__((aligned(16)));
};

/* An item's status: PENDING, then OK or its error code (< 0). */
#define POOL_ITEM_PENDING	0
#define POOL_ITEM_OK		1

struct pool_item {
	const void *data;	/* value, or the error's message (a string) */
	size_t len;
	int32_t status;
	uint32_t __pad;
};

/* A failed item of a map_values job, whose values have no room for it. */
struct pool_fail {
	size_t index;
	int code;
	char *msg;
};

/* What a job owns besides its memory: buffers, mappings, strings. */
struct pool_owned {
	int kind;		/* POOL_OWN_* */
	void *ptr;
	size_t len;
};

enum { POOL_OWN_BUF, POOL_OWN_MAP, POOL_OWN_STR };

enum pool_args_kind {
	POOL_ARGS_COPY,		/* apply: one argument, copied into the job */
	POOL_ARGS_IOV,		/* one iovec per item */
	POOL_ARGS_FIXED,	/* base + i * arg_size */
	POOL_ARGS_STAR,		/* argc iovecs per item, packed as a tuple */
};

enum pool_job_kind {
	POOL_JOB_APPLY,
	POOL_JOB_MAP,
	POOL_JOB_VALUES,	/* map_values: values go straight to out */
	POOL_JOB_IMAP,
	POOL_JOB_UNORDERED,
};

#define MPQ_RESULT_MAGIC	0x6d707152U	/* "mpqR" */

/*
 * A job: one apply or map call, and the AsyncResult the user holds.
 * Reference counted: the user's reference (none for fire-and-forget) and
 * the pool's until the job is complete. Fields the handler writes after
 * submission are published by ndone (release) and ready (release).
 */
struct mpq_async_result {
	uint32_t magic;
	uint32_t refs;
	pthread_t handler;	/* the pool's handler thread: -EDEADLK */
	int kind;		/* enum pool_job_kind */
	int args_kind;		/* enum pool_args_kind */
	mpq_task_fn fn;
	uint64_t fn_wire;	/* what workers are told: see pool_seg_hdr */
	int spawn;		/* workers find fn by name */
	int remote;		/* through a manager: no result within a spin */
	const char *fn_name;	/* spawn: the registered name */
	const struct iovec *iov;
	const unsigned char *base;
	size_t arg_size;
	unsigned int argc;
	size_t n;
	size_t chunksize;

	struct pool_slab *slab;	/* its memory's, or NULL: malloc's */

	/* The handler's. */
	size_t next;		/* next item to hand out */
	uint64_t *done;		/* bitmap: items with a value or error */
	uint64_t done1;		/* done, for a job of under 64 items */
	int complete;
	struct mpq_async_result *qnext;		/* incoming, then queued */
	struct mpq_async_result *anext, *aprev;	/* incomplete jobs */

	/* Results: written by the handler, read once published. */
	struct pool_item *items;	/* NULL for VALUES */
	unsigned char *out;		/* VALUES */
	size_t out_size;
	size_t *order;			/* UNORDERED: indices as they came */
	size_t ndone;
	size_t first_fail;		/* lowest failed index, or SIZE_MAX */
	int first_code;
	int cancel_code;		/* VALUES: items never done failed so */
	const char *cancel_msg;
	struct pool_owned *owned;	/* owned1, or malloc's past one */
	size_t nowned, owned_cap;
	struct pool_owned owned1;
	struct pool_fail *fails;	/* VALUES: the failed items */
	size_t nfails, fails_cap;

	uint32_t progress;	/* futex word: bumped as items complete */
	uint32_t waiters;	/* how many sleep on progress, or will */
	uint32_t ready;		/* complete and the callback has run */
	int has_cb;
	struct mpq_pool_callbacks cb;

	/* A pool with a manager (pool_remote.c): the job's key, its
	   bucket's chain, and where copies of values go. */
	uint64_t rid;
	struct mpq_async_result *rnext;
	unsigned char *rarena;
	size_t rleft;

	size_t arg_len;		/* COPY: the argument, after the struct */
	unsigned char arg[] __attribute__((aligned(16)));
};

/* A segment handed out: items [first, first + count) of job. */
struct pool_seg {
	struct mpq_async_result *job;
	size_t first;
	uint32_t count;
	uint32_t flags;		/* POOL_SEG_CHUNK_END, POOL_SEG_RETRY */
};

/* A message sent to a worker whose results are not all in yet. */
struct pool_msg {
	struct pool_msg *next;
	uint64_t seq;
	size_t bytes;		/* in the worker's ring until answered */
	uint64_t est_ns;	/* estimated time to run it */
	uint32_t nitems;
	uint32_t received;	/* records taken, in order */
	uint32_t nseg;
	uint32_t cur_seg;	/* segment of position received */
	uint32_t cur_off;	/* and the offset in it */
	uint32_t chunks;	/* chunks it ends */
	uintptr_t fn;		/* the one function of all segments, or 0 */
	struct pool_seg seg[];
};

/* Segments to hand out again, first, after a worker died. */
struct pool_requeue {
	struct pool_requeue *next;
	struct pool_seg seg;
};

enum pool_worker_state {
	POOL_W_EMPTY,		/* no process (not started, or reaped) */
	POOL_W_STARTING,	/* started, no READY yet */
	POOL_W_READY,
	POOL_W_EXITING,		/* told to exit, or retiring */
};

struct pool_worker {
	int state;
	uint32_t gen;			/* incarnation: tags io_uring polls */
	uint32_t fails;			/* failed starts in a row (gen and
					   fails outlive the incarnation) */
	struct mpq_process *proc;
	struct mpq_conn *conn;		/* the pool's end */
	struct mpq_conn *wconn;		/* the worker's end, until started */
	int sock, wsock;		/* memfds both ways */
	int staging_fd;			/* until started */
	struct pool_staging *st;
	int pidfd;			/* the process's sentinel */
	int connfd;			/* readable when results wait */
	pid_t pid;
	struct pool_msg *head, *tail;	/* in flight, oldest first */
	uint32_t nmsgs;
	uint32_t inflight_chunks;
	size_t inflight_bytes;
	uint64_t inflight_ns;
	uint32_t chunks_given;		/* for maxtasksperchild */
	/* A chunk handed out in pieces: the rest goes to this worker too. */
	struct mpq_async_result *cont_job;
	size_t cont_next, cont_end;
	uint32_t cont_flags;
	unsigned char *known;		/* spawn: names this worker knows */
	size_t nknown;
	unsigned char *rbuf;		/* receive buffer, POOL_MSG_MAX */
	unsigned char conn_armed;	/* polls in the ring for this slot */
	unsigned char pid_armed;
	char name[40];
};

enum pool_state {
	POOL_RUN,
	POOL_CLOSE,
	POOL_TERMINATE,
};

#define MPQ_POOL_MAGIC		0x6d707150U	/* "mpqP" + 1 below */
#define POOL_EST_SLOTS		64

struct mpq_pool {
	uint32_t magic;
	pid_t owner;
	pthread_mutex_t lock;
	/* Under the lock. */
	int state;			/* enum pool_state */
	struct mpq_async_result *in_head, *in_tail;	/* submitted */
	/* The handler sleeps and asks to be woken through bell. */
	uint32_t sleeping;
	int bell;
	uint32_t finished;		/* futex word: the handler is done */
	pthread_t thread;
	int thread_made;
	int thread_joined;

	/* Settings, read-only once made. */
	uint64_t id;			/* for tracers: probes.h */
	int nproc;
	int method;
	int backend;			/* of the workers' pipes */
	uint32_t maxtasks;
	uint32_t flags;
	mpq_target_fn init;
	char *init_name;		/* spawn */
	void *initarg;
	size_t initarg_len;
	sigset_t worker_mask;		/* the signal mask workers run with */
	struct pool_slab *slab;		/* small jobs' memory (pool_slab.c) */

	/* The handler's own. */
	struct io_uring ring;
	int ring_ok;
	unsigned char *sbuf;		/* a message being built */
	struct pool_worker *w;
	struct mpq_async_result *q_head, *q_tail;	/* items to hand out */
	struct mpq_async_result *active;		/* incomplete jobs */
	struct pool_requeue *rq_head, *rq_tail;
	uint64_t seq;
	unsigned int rr;		/* where the next hand-out starts */
	unsigned int counter;		/* worker names */
	int broken;			/* why the last slot to reach
					   POOL_START_TRIES failed, or 0 */
	char broken_why[192];		/* and in words */
	uint32_t start_deaths;		/* killed before READY, in a row */
	int64_t restart_at;		/* when to try starting again, or -1 */
	int64_t kill_at;		/* terminate: SIGKILL then, or -1 */
	int killed;
	struct {
		uintptr_t fn;
		uint64_t ns;		/* estimated ns per item */
	} est[POOL_EST_SLOTS];

	struct mpq_pool *gnext;		/* every pool of this process */

	/* A pool with a manager: libmpq-net's side (pool_remote.c). */
	const struct mpq__pool_remote_ops *rops;
	void *rctx;
	struct mpq_async_result **rtab;	/* jobs by rid */
	uint64_t rseq;
};

/* pool_remote.c: a pool with a manager (mpq_pool_attr.remote). */
struct mpq__pool_remote_ops;
int pool_remote_open(struct mpq_pool *p, const struct mpq_pool_attr *a);
void *pool_remote_main(void *arg);
void pool_remote_free(struct mpq_pool *p);
void pool_remote_worker_check(int *argc, char ***argv);
uint64_t pool_task_table_hash(uint32_t *ntasks);

/* pool.c */
int pool_worker_launch(struct mpq_pool *p, unsigned int slot);
void pool_worker_release(struct mpq_pool *p, struct pool_worker *w);
int pool_send_fd(int sock, int fd, int flags);
int pool_recv_fd(int sock, int flags);

int pool_check(struct mpq_pool *p);

/* pool_slab.c: the memory of small jobs (an apply's). */
#define POOL_SLAB_ARG	64	/* the argument room of a slab job */
struct pool_slab;
struct pool_slab *pool_slab_new(size_t obj);
void *pool_slab_alloc(struct pool_slab *s);
void pool_slab_free(struct pool_slab *s, void *o);
void pool_slab_put(struct pool_slab *s);

/* pool_job.c: called by the handler. */
int pool_job_value(struct mpq_async_result *j, size_t i, const void *data,
		   size_t len);
void pool_job_values(struct mpq_async_result *j, size_t i,
		     const unsigned char *data, size_t n, size_t size);
int pool_job_own(struct mpq_async_result *j, int kind, void *ptr, size_t len);
void pool_job_fail(struct mpq_async_result *j, size_t i, int code,
		   const char *msg, size_t msglen);
void pool_job_cancel(struct mpq_async_result *j, int code, const char *why);
void pool_job_notify(struct mpq_async_result *j);
void pool_job_complete(struct mpq_async_result *j);
void pool_job_put(struct mpq_async_result *j);
void pool_buf_put(struct pool_buf *b);

/* pool_handler.c: the loop, its lists, and the pool's state changes. */
void *pool_handler_main(void *arg);
struct mpq_async_result *pool_take_submitted(struct mpq_pool *p, int *state);
void pool_active_add(struct mpq_pool *p, struct mpq_async_result *j);
void pool_handler_wake(struct mpq_pool *p);
void pool_job_finish(struct mpq_pool *p, struct mpq_async_result *j);
void pool_requeue_front(struct mpq_pool *p, struct pool_requeue *head,
			struct pool_requeue *tail);

/* pool_dispatch.c: handing out work. */
void pool_dispatch(struct mpq_pool *p, unsigned char *buf);
void pool_est_put(struct mpq_pool *p, uintptr_t fn, uint64_t sample);
void pool_requeue_msg(struct mpq_pool *p, struct pool_worker *w,
		      struct pool_msg *m, uint32_t from_seg, uint32_t from_off,
		      struct pool_requeue **head, struct pool_requeue **tail);
void pool_requeue_cont(struct pool_worker *w, struct pool_requeue **head,
		       struct pool_requeue **tail);
void pool_worker_kill(struct pool_worker *w);

/* pool_results.c: results, and a dead worker's last word. */
void pool_start_ok(struct mpq_pool *p, struct pool_worker *w);
void pool_start_failed(struct mpq_pool *p, struct pool_worker *w, int code,
		       const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
void pool_start_ended(struct mpq_pool *p, struct pool_worker *w, int code);
int pool_worker_drain(struct mpq_pool *p, struct pool_worker *w);
void pool_worker_died(struct mpq_pool *p, unsigned int slot);
void pool_msg_retire(struct pool_worker *w, struct pool_msg *m);
void pool_finish_active(struct mpq_pool *p);

/* ---- the worker side ------------------------------------------------- */

#define POOL_TASK_NAME_MAX	255
#define POOL_MSG_TEXT_MAX	1024
/* More task names than any program registers: a bad index is refused. */
#define POOL_TASKS_MAX		(1U << 20)

/* A worker's task being run: where its value or error goes. */
struct mpq_task {
	struct pool_wctx *w;
	int has_value;
	int in_run;		/* the value is the next one of the open run */
	size_t value_len;	/* a plain record's value: bytes after it */
	int fd;			/* large value: its memfd, or -1 */
	void *map;
	size_t map_len;
	int err_set;
	char msg[POOL_MSG_TEXT_MAX];
};

#define POOL_RUN_NONE	SIZE_MAX

struct pool_wctx {
	struct mpq_conn *conn;
	int sock;
	struct pool_staging *st;
	unsigned char *recs;	/* the records, after st->msg */
	uint64_t seq;		/* the task message being run */
	uint32_t first;		/* position of the first record in staging */
	uint32_t nitems;	/* items the records in staging cover */
	size_t run_off;		/* the open run's header in recs, or NONE */
	uint32_t run_size;
	uint32_t run_count;
	int64_t since;		/* when the items in staging started */
	uint32_t maxtasks;
	uint32_t done;		/* chunks finished */
	uint64_t pool_id;	/* the pool's id, for the task probes */
	int spawn;
	mpq_task_fn *fns;	/* spawn: the pool's index -> our function */
	size_t nfns;
	unsigned char *rbuf;
	size_t rbuf_size;
	struct mpq_task task;
};

/*
 * The run's next n values are complete: the count first, then used
 * (release). A task's loop raised the count already, to the same value.
 */
static inline void pool_run_commit_n(struct pool_wctx *w, uint32_t n)
{
	struct pool_run_hdr *h = (struct pool_run_hdr *)(w->recs + w->run_off);

	w->run_count += n;
	h->count = w->run_count;
	w->nitems += n;
	store_release(&w->st->used, w->run_off + sizeof(*h) +
		      (uint64_t)w->run_count * w->run_size);
}

static inline void pool_run_commit(struct pool_wctx *w)
{
	pool_run_commit_n(w, 1);
}

/* pool_task.c */
mpq_task_fn pool_task_by_name(const char *name, size_t len);
mpq_task_loop_fn pool_task_loop(mpq_task_fn fn, size_t in_size,
				size_t *out_size);
unsigned char *pool_run_room(struct pool_wctx *w, uint32_t size, uint32_t n,
			     uint32_t *room);
int pool_task_code(int code);
int pool_worker_flush(struct pool_wctx *w);
int pool_task_finish(struct pool_wctx *w, struct mpq_task *t, int ret);

/* pool_worker.c */
struct pool_worker_args {
	struct mpq_pool *pool;		/* fork: the parent's copy */
	unsigned int slot;
};
int pool_worker_fork(const void *arg, size_t len);
int pool_worker_spawn(const void *arg, size_t len);
int pool_worker_boot(struct mpq_pool *p, struct pool_worker *w, void **out,
		     size_t *out_len, int *fds, int *nfds);
int pool_task_index(mpq_task_fn fn, const char **name);

#endif /* MPQ_POOL_H */
