// SPDX-License-Identifier: MIT
/*
 * What a task can call, and the records it leaves: the table of task
 * names (how spawned workers find functions), mpq_task_return() and its
 * friends, starmap's argument tuples, and the writing of results into
 * the worker's staging page.
 *
 * Each item's record is appended to the RESULTS message the worker builds
 * in its staging page, and counted in (the page's "used", with a release
 * store) only once the task has returned: a worker that dies inside a task
 * leaves that item unrecorded and named as running, never half recorded.
 * Small values of one size share a run record (the common map of numbers
 * costs their bytes and nothing else per item); values up to
 * POOL_INLINE_MAX go in a record of their own; larger ones into a memfd
 * that is sealed and passed over the worker's socket before its record,
 * and that the pool maps as it is. A full page is sent before the next
 * record, so a message is never larger than one frame of the pipe.
 */
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "pool.h"

/* ---- the table of task names ----------------------------------------- */

/*
 * Append-only, under mpq_proc_lock() (held across fork, so a worker forked
 * while another thread registers never finds it locked). An entry's index
 * is how a spawn pool names a function to its workers, after sending the
 * name once.
 */
struct pool_task_entry {
	char *name;
	mpq_task_fn fn;
};

static struct pool_task_entry *pool_tasks;
static size_t pool_ntasks, pool_tasks_cap;

static ssize_t pool_task_find_name(const char *name)
{
	size_t i;

	for (i = 0; i < pool_ntasks; i++)
		if (!strcmp(pool_tasks[i].name, name))
			return (ssize_t)i;
	return -1;
}

MPQ_EXPORT int mpq_register_task(const char *name, mpq_task_fn fn)
{
	ssize_t i;
	int ret = 0;

	if (!name || !fn || !name[0] ||
	    strnlen(name, POOL_TASK_NAME_MAX + 1) > POOL_TASK_NAME_MAX)
		return -EINVAL;
	mpq_proc_lock();
	i = pool_task_find_name(name);
	if (i >= 0) {
		ret = pool_tasks[i].fn == fn ? 0 : -EEXIST;
		goto out;
	}
	if (pool_ntasks == POOL_TASKS_MAX) {
		ret = -ENOSPC;		/* more than a worker would accept */
		goto out;
	}
	if (pool_grow(&pool_tasks, &pool_tasks_cap, pool_ntasks,
		      sizeof(*pool_tasks), 16)) {
		ret = -ENOMEM;
		goto out;
	}
	pool_tasks[pool_ntasks].name = strdup(name);
	if (!pool_tasks[pool_ntasks].name) {
		ret = -ENOMEM;
		goto out;
	}
	pool_tasks[pool_ntasks++].fn = fn;
out:
	mpq_proc_unlock();
	return ret;
}

/*
 * Tasks' loops (mpq_register_task_loop()): few, looked up once per
 * segment. Append-only under the same lock; entries are published with
 * the count, so a lookup reads them without it.
 */
#define POOL_LOOPS_MAX		256
#define POOL_LOOP_ARG_MAX	4096

struct pool_loop_entry {
	mpq_task_fn fn;
	mpq_task_loop_fn loop;
	size_t in_size, out_size;
};

static struct pool_loop_entry pool_loops[POOL_LOOPS_MAX];
static size_t pool_nloops;

MPQ_EXPORT int mpq_register_task_loop(mpq_task_fn fn, mpq_task_loop_fn loop,
				      size_t in_size, size_t out_size)
{
	struct pool_loop_entry *e;
	size_t i;
	int ret = 0;

	if (!fn || !loop || !in_size || !out_size ||
	    in_size > POOL_LOOP_ARG_MAX || out_size > POOL_RUN_MAX)
		return -EINVAL;
	mpq_proc_lock();
	for (i = 0; i < pool_nloops; i++) {
		e = &pool_loops[i];
		if (e->fn != fn)
			continue;
		ret = e->loop == loop && e->in_size == in_size &&
		      e->out_size == out_size ? 0 : -EEXIST;
		goto out;
	}
	if (pool_nloops == POOL_LOOPS_MAX) {
		ret = -ENOMEM;
		goto out;
	}
	pool_loops[pool_nloops] = (struct pool_loop_entry){
		.fn = fn, .loop = loop, .in_size = in_size,
		.out_size = out_size,
	};
	store_release(&pool_nloops, pool_nloops + 1);
out:
	mpq_proc_unlock();
	return ret;
}

/* fn's loop over in_size-byte arguments (*out_size: its values'), or NULL. */
mpq_task_loop_fn pool_task_loop(mpq_task_fn fn, size_t in_size,
				size_t *out_size)
{
	size_t i, n = load_acquire(&pool_nloops);

	for (i = 0; i < n; i++) {
		if (pool_loops[i].fn == fn) {
			if (pool_loops[i].in_size != in_size)
				return NULL;
			*out_size = pool_loops[i].out_size;
			return pool_loops[i].loop;
		}
	}
	return NULL;
}

/* The index of fn in the table and its name (stable: never freed). */
int pool_task_index(mpq_task_fn fn, const char **name)
{
	size_t i;
	int ret = -ENOENT;

	mpq_proc_lock();
	for (i = 0; i < pool_ntasks; i++) {
		if (pool_tasks[i].fn == fn) {
			*name = pool_tasks[i].name;
			ret = (int)i;
			break;
		}
	}
	mpq_proc_unlock();
	return ret;
}

mpq_task_fn pool_task_by_name(const char *name, size_t len)
{
	mpq_task_fn fn = NULL;
	size_t i;

	mpq_proc_lock();
	for (i = 0; i < pool_ntasks; i++) {
		if (strlen(pool_tasks[i].name) == len &&
		    !memcmp(pool_tasks[i].name, name, len)) {
			fn = pool_tasks[i].fn;
			break;
		}
	}
	mpq_proc_unlock();
	return fn;
}

/*
 * The table as a remote worker compares it with its pool's: a hash of
 * the set of names (the order constructors ran in does not matter), so
 * that a worker built from another version of the program is refused.
 */
uint64_t pool_task_table_hash(uint32_t *ntasks)
{
	uint64_t sum = 0, h;
	const char *c;
	size_t i;

	mpq_proc_lock();
	for (i = 0; i < pool_ntasks; i++) {
		h = 0xcbf29ce484222325ULL;	/* FNV-1a, then a mix */
		for (c = pool_tasks[i].name; *c; c++)
			h = (h ^ (unsigned char)*c) * 0x100000001b3ULL;
		h ^= h >> 31;
		h *= 0x9e3779b97f4a7c15ULL;
		sum += h ^ (h >> 29);
	}
	*ntasks = (uint32_t)pool_ntasks;
	mpq_proc_unlock();
	return sum;
}

/* ---- tuples of arguments (starmap) ------------------------------------ */

/* A tuple: per string a uint64_t length, then the bytes padded to 8. */
MPQ_EXPORT ssize_t mpq_args_pack(void *buf, size_t len,
				 const struct iovec *argv, unsigned int argc)
{
	unsigned char *p = buf;
	size_t need = 0, off = 0;
	unsigned int i;

	if ((!argv && argc) || (!buf && len))
		return -EINVAL;
	for (i = 0; i < argc; i++) {
		if (!argv[i].iov_base && argv[i].iov_len)
			return -EINVAL;
		if (argv[i].iov_len > SSIZE_MAX / 2 - need)
			return -EINVAL;
		need += 8 + pool_align8(argv[i].iov_len);
	}
	if (need > len)
		return buf ? -ERANGE : (ssize_t)need;
	for (i = 0; i < argc; i++) {
		uint64_t l = argv[i].iov_len;

		memcpy(p + off, &l, sizeof(l));
		if (l)
			memcpy(p + off + 8, argv[i].iov_base, l);
		memset(p + off + 8 + l, 0, pool_align8(l) - l);
		off += 8 + pool_align8(l);
	}
	return (ssize_t)need;
}

MPQ_EXPORT int mpq_task_args(const void *arg, size_t len, struct iovec *argv,
			     unsigned int max)
{
	const unsigned char *p = arg;
	size_t off = 0;
	unsigned int n = 0;
	uint64_t l;

	if ((!arg && len) || (!argv && max))
		return -EINVAL;
	while (off < len) {
		if (len - off < 8)
			return -EINVAL;
		memcpy(&l, p + off, sizeof(l));
		if (l > len - off - 8 || pool_align8(l) > len - off - 8)
			return -EINVAL;
		if (n < max) {
			argv[n].iov_base = (void *)(p + off + 8);
			argv[n].iov_len = l;
		}
		if (n == INT32_MAX)
			return -EINVAL;
		n++;
		off += 8 + pool_align8(l);
	}
	return (int)n;
}

/* ---- a task's value or error ------------------------------------------ */

static int task_check(struct mpq_task *t)
{
	if (!t || !t->w)
		return -EINVAL;
	return t->has_value ? -EALREADY : 0;
}

/*
 * End the open run: pad its values to 8 bytes, so that the next record
 * starts aligned. (A run whose header no item has committed yet is
 * simply forgotten: used never covered it.)
 */
static void run_close(struct pool_wctx *w)
{
	uint64_t used = w->st->used;

	if (w->run_off == POOL_RUN_NONE)
		return;
	w->run_off = POOL_RUN_NONE;
	if (used & 7) {
		memset(w->recs + used, 0, pool_align8(used) - used);
		store_release(&w->st->used, pool_align8(used));
	}
}

/* Send what staging holds, and start it again after those records. */
int pool_worker_flush(struct pool_wctx *w)
{
	struct pool_staging *st = w->st;
	int64_t now = mpq_now_ns();
	int ret;

	run_close(w);
	st->msg.type = POOL_MSG_RESULTS;
	st->msg.count = w->nitems;
	st->msg.seq = w->seq;
	st->msg.status = 0;
	st->msg.busy_ns = (uint64_t)(now - w->since);
	ret = mpq_conn_send_bytes(w->conn, &st->msg,
				  sizeof(st->msg) + st->used, MPQ_FOREVER);
	if (ret)
		return ret;
	/* used first: a death in between leaves no records, never stale ones. */
	store_release(&st->used, 0);
	w->first += w->nitems;
	store_release(&st->msg.first, w->first);
	w->nitems = 0;
	w->since = now;
	return 0;
}

/* Room for a record of size bytes at the end of staging: flush if full. */
static unsigned char *worker_reserve(struct pool_wctx *w, size_t size)
{
	run_close(w);
	if (w->st->used + size > POOL_RECS_MAX && w->nitems) {
		if (pool_worker_flush(w))
			return NULL;
	}
	return w->recs + w->st->used;
}

/* An item's plain record is complete: count it in (the pool may read it). */
static void worker_commit(struct pool_wctx *w, size_t size)
{
	w->nitems++;
	store_release(&w->st->used, w->st->used + size);
}

/*
 * Room for the next small value of len bytes: after the open run if it
 * holds values of that size, else in a new run. Consecutive values of one
 * size cost len bytes each, and the pool copies a run of them at once.
 */
static void *run_reserve(struct pool_wctx *w, uint32_t len)
{
	struct pool_run_hdr *h;
	uint64_t used = w->st->used;

	if (w->run_off != POOL_RUN_NONE && w->run_size == len &&
	    used + len <= POOL_RECS_MAX)
		return w->recs + used;
	h = (struct pool_run_hdr *)worker_reserve(w, sizeof(*h) + len);
	if (!h)
		return NULL;
	h->status = POOL_REC_RUN;
	h->count = 0;
	h->size = len;
	h->__pad = 0;
	w->run_off = (size_t)((unsigned char *)h - w->recs);
	w->run_size = len;
	w->run_count = 0;
	return h + 1;
}

/*
 * Room for up to n values of size bytes (at most POOL_RUN_MAX) after the
 * open run, or in a new one (the page sent first if full): where the
 * first goes, with *room (>= 1) how many fit; NULL if the pool is gone.
 * For a task's loop, which writes them and raises the run's count.
 */
unsigned char *pool_run_room(struct pool_wctx *w, uint32_t size, uint32_t n,
			     uint32_t *room)
{
	unsigned char *at = run_reserve(w, size);
	uint64_t fit;

	if (!at)
		return NULL;
	fit = (POOL_RECS_MAX - (uint64_t)(at - w->recs)) / size;
	*room = fit < n ? (uint32_t)fit : n;
	return at;
}

static int task_map_large(struct mpq_task *t, size_t len)
{
	t->fd = memfd_create("mpq-pool-value", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (t->fd < 0)
		return -errno;
	if (ftruncate(t->fd, (off_t)len) < 0)
		goto fail;
	t->map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, t->fd, 0);
	if (t->map == MAP_FAILED) {
		t->map = NULL;
		goto fail;
	}
	t->map_len = len;
	return 0;
fail:
	close(t->fd);
	t->fd = -1;
	return errno == ENOMEM || errno == ENOSPC || errno == EFBIG ?
		-ENOMEM : -errno;
}

/* A plain inline record for a value too large for a run. */
static void *task_plain(struct mpq_task *t, size_t len)
{
	struct pool_rec_hdr *rec;

	rec = (struct pool_rec_hdr *)worker_reserve(t->w, sizeof(*rec) +
						    pool_align8(len));
	if (!rec)
		return NULL;
	rec->status = 0;
	rec->len = (uint32_t)len;
	/* The padding is ours: no bytes of an older record leak. */
	pool_pad(rec + 1, len);
	t->value_len = len;
	return rec + 1;
}

/*
 * The common case, kept short: a small value continuing the open run.
 * Returns where it goes, or NULL for the general path.
 */
static inline void *run_next(struct mpq_task *t, size_t len)
{
	struct pool_wctx *w = t->w;
	uint64_t used;

	if (t->has_value || len != w->run_size || w->run_off == POOL_RUN_NONE)
		return NULL;
	used = w->st->used;
	if (used + len > POOL_RECS_MAX)
		return NULL;
	t->has_value = 1;
	t->in_run = 1;
	return w->recs + used;
}

static int task_result_buf(struct mpq_task *t, size_t len, void **buf)
{
	int ret = task_check(t);

	if (ret)
		return ret;
	if (!buf)
		return -EINVAL;
	if (len > POOL_INLINE_MAX) {
		ret = task_map_large(t, len);
		if (ret)
			return ret;
		*buf = t->map;
	} else if (len <= POOL_RUN_MAX) {
		*buf = run_reserve(t->w, (uint32_t)len);
		t->in_run = 1;
	} else {
		*buf = task_plain(t, len);
	}
	if (!*buf)
		return -EPIPE;		/* the pool is gone */
	t->has_value = 1;
	return 0;
}

MPQ_EXPORT int mpq_task_result_buf(struct mpq_task *t, size_t len, void **buf)
{
	void *at;

	if (likely(t && t->w && buf)) {
		at = run_next(t, len);
		if (at) {
			*buf = at;
			return 0;
		}
	}
	return task_result_buf(t, len, buf);
}

MPQ_EXPORT int mpq_task_return(struct mpq_task *t, const void *value,
			       size_t len)
{
	void *buf;
	int ret;

	if (!value && len)
		return -EINVAL;
	if (likely(t && t->w)) {
		buf = run_next(t, len);
		if (buf) {
			mpq_copy(buf, value, len);
			return 0;
		}
	}
	ret = task_result_buf(t, len, &buf);
	if (!ret && len)
		mpq_copy(buf, value, len);
	return ret;
}

/* Task codes are negative; a positive c is taken as -c. */
int pool_task_code(int code)
{
	if (code > 0)
		return -code;
	return code == INT32_MIN ? -EINVAL : code;
}

MPQ_EXPORT int mpq_task_error(struct mpq_task *t, int code, const char *fmt,
			      ...)
{
	va_list ap;

	code = pool_task_code(code);
	if (!code)
		code = -EINVAL;
	if (!t || !t->w)
		return code;
	t->msg[0] = '\0';
	if (fmt) {
		va_start(ap, fmt);
		vsnprintf(t->msg, sizeof(t->msg), fmt, ap);
		va_end(ap);
	}
	t->err_set = 1;
	return code;
}

static void task_drop_large(struct mpq_task *t)
{
	if (t->map)
		munmap(t->map, t->map_len);
	if (t->fd >= 0)
		close(t->fd);
	t->map = NULL;
	t->fd = -1;
}

/*
 * Hand a large value's memfd to the pool: sealed, so that its size can no
 * longer change under the pool's mapping (it would fault past the end),
 * then sent before the record that names it.
 */
static int task_send_large(struct mpq_task *t)
{
	struct pool_rec_hdr *rec;
	uint64_t size = t->map_len;
	int ret;

	munmap(t->map, t->map_len);
	t->map = NULL;
	fcntl(t->fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE |
	      F_SEAL_SEAL);
	ret = pool_send_fd(t->w->sock, t->fd, 0);
	close(t->fd);
	t->fd = -1;
	if (ret)
		return ret;
	rec = (struct pool_rec_hdr *)worker_reserve(t->w, sizeof(*rec) + 8);
	if (!rec)
		return -EPIPE;
	rec->status = POOL_REC_FD;
	rec->len = 8;
	memcpy(rec + 1, &size, sizeof(size));
	worker_commit(t->w, sizeof(*rec) + 8);
	return 0;
}

static int task_record_error(struct pool_wctx *w, int code, const char *msg)
{
	size_t len = strlen(msg);
	struct pool_rec_hdr *rec;

	rec = (struct pool_rec_hdr *)worker_reserve(w, sizeof(*rec) +
						    pool_align8(len));
	if (!rec)
		return -EPIPE;
	rec->status = code;
	rec->len = (uint32_t)len;
	pool_pad(rec + 1, len);
	memcpy(rec + 1, msg, len);
	worker_commit(w, sizeof(*rec) + pool_align8(len));
	return 0;
}

/* After the task returned ret: its record, value or error. */
int pool_task_finish(struct pool_wctx *w, struct mpq_task *t, int ret)
{
	if (likely(!ret && t->in_run)) {
		pool_run_commit(w);
		return 0;
	}
	if (ret) {
		task_drop_large(t);
		return task_record_error(w, pool_task_code(ret),
					 t->err_set ? t->msg : "");
	}
	if (t->fd >= 0)
		return task_send_large(t);
	if (!t->has_value) {
		/* No value: an empty one, in a run of empty ones. */
		if (!run_reserve(w, 0))
			return -EPIPE;
		t->in_run = 1;
	}
	if (t->in_run)
		pool_run_commit(w);
	else
		worker_commit(w, sizeof(struct pool_rec_hdr) +
			      pool_align8(t->value_len));
	return 0;
}
