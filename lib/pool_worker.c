// SPDX-License-Identifier: MIT
/*
 * The pool's worker process, and what a task can call in it: the table of
 * task names (for spawned workers), mpq_task_return() and friends, the
 * packing of starmap's argument tuples.
 *
 * A worker runs the initializer, says READY, then takes task messages
 * from its pipe in order. For each item it notes in the staging page
 * which one it starts, runs the task, and appends the item's record
 * (value or error) to the RESULTS message it builds in that page; the
 * message goes out when the task message is done, or earlier when the
 * page is full. So the pool gets one message per batch of items, and if
 * the worker dies, the page still tells the pool which item was running
 * and holds the records not yet sent (see struct pool_staging).
 *
 * Values up to POOL_INLINE_MAX bytes are written into the page (in place,
 * for mpq_task_result_buf) and copied once into the pipe; larger ones go
 * into a memfd that is sealed and passed over the worker's socket before
 * its record, and the pool maps it as it is.
 */
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pool.h"

#define POOL_TASK_NAME_MAX	255
#define POOL_MSG_TEXT_MAX	1024
#define POOL_BOOT_MAGIC		"MPQPOOL1"
/* More task names than any program registers: a bad index is refused. */
#define POOL_TASKS_MAX		(1U << 20)

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
	struct pool_task_entry *grown;
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
	if (pool_ntasks == pool_tasks_cap) {
		size_t cap = pool_tasks_cap ? 2 * pool_tasks_cap : 16;

		grown = realloc(pool_tasks, cap * sizeof(*grown));
		if (!grown) {
			ret = -ENOMEM;
			goto out;
		}
		pool_tasks = grown;
		pool_tasks_cap = cap;
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

static mpq_task_fn pool_task_by_name(const char *name, size_t len)
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

/* ---- a worker and its tasks ------------------------------------------ */

struct pool_wctx;

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

#define RUN_NONE	SIZE_MAX

struct pool_wctx {
	struct mpq_conn *conn;
	int sock;
	struct pool_staging *st;
	unsigned char *recs;	/* the records, after st->msg */
	uint64_t seq;		/* the task message being run */
	uint32_t first;		/* position of the first record in staging */
	uint32_t nitems;	/* items the records in staging cover */
	size_t run_off;		/* the open run's header in recs, or RUN_NONE */
	uint32_t run_size;
	uint32_t run_count;
	int64_t since;		/* when the items in staging started */
	uint32_t maxtasks;
	uint32_t done;		/* chunks finished */
	int spawn;
	mpq_task_fn *fns;	/* spawn: the pool's index -> our function */
	size_t nfns;
	unsigned char *rbuf;
	size_t rbuf_size;
	struct mpq_task task;
};

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

	if (w->run_off == RUN_NONE)
		return;
	w->run_off = RUN_NONE;
	if (used & 7) {
		memset(w->recs + used, 0, pool_align8(used) - used);
		store_release(&w->st->used, pool_align8(used));
	}
}

/* Send what staging holds, and start it again after those records. */
static int worker_flush(struct pool_wctx *w)
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
		if (worker_flush(w))
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

	if (w->run_off != RUN_NONE && w->run_size == len &&
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

/* The run's next value is complete: the count first, then used (release). */
static void run_commit(struct pool_wctx *w)
{
	struct pool_run_hdr *h = (struct pool_run_hdr *)(w->recs + w->run_off);

	h->count = ++w->run_count;
	w->nitems++;
	store_release(&w->st->used, w->run_off + sizeof(*h) +
		      (uint64_t)w->run_count * w->run_size);
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

	if (t->has_value || len != w->run_size || w->run_off == RUN_NONE)
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
static int task_code(int code)
{
	if (code > 0)
		return -code;
	return code == INT32_MIN ? -EINVAL : code;
}

MPQ_EXPORT int mpq_task_error(struct mpq_task *t, int code, const char *fmt,
			      ...)
{
	va_list ap;

	code = task_code(code);
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
static int task_finish(struct pool_wctx *w, struct mpq_task *t, int ret)
{
	if (likely(!ret && t->in_run)) {
		run_commit(w);
		return 0;
	}
	if (ret) {
		task_drop_large(t);
		return task_record_error(w, task_code(ret),
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
		run_commit(w);
	else
		worker_commit(w, sizeof(struct pool_rec_hdr) +
			      pool_align8(t->value_len));
	return 0;
}

static int worker_run_item(struct pool_wctx *w, mpq_task_fn fn,
			   const void *arg, size_t len, uint32_t pos,
			   const char *missing)
{
	struct mpq_task *t = &w->task;
	int ret;

	/* The rest (fd, map, value_len) is set by whatever uses it. */
	t->has_value = 0;
	t->in_run = 0;
	t->err_set = 0;
	/* Before the call: if we die in it, the pool knows whom to blame. */
	store_release(&w->st->running, pos);
	if (!fn) {
		snprintf(t->msg, sizeof(t->msg),
			 "no task is registered as \"%s\" in the worker",
			 missing);
		t->err_set = 1;
		ret = -ENOENT;
	} else {
		ret = fn(arg, len, t);
	}
	return task_finish(w, t, ret);
}

/*
 * A segment of fixed-size arguments: the loop of worker_run_item() with
 * nothing in it that a trivial task would notice, since map's cost per
 * item is this loop's.
 */
static int worker_run_fixed(struct pool_wctx *w, mpq_task_fn fn,
			    const unsigned char *args,
			    const struct pool_seg_hdr *s, uint32_t *pos)
{
	struct mpq_task *t = &w->task;
	uint32_t *running = &w->st->running;
	size_t size = s->arg_size;
	uint32_t i, p = *pos;
	int ret;

	for (i = 0; i < s->count; i++, args += size, p++) {
		t->has_value = 0;
		t->in_run = 0;
		t->err_set = 0;
		store_release(running, p);
		ret = fn(args, size, t);
		if (likely(!ret && t->in_run)) {
			run_commit(w);
			continue;
		}
		ret = task_finish(w, t, ret);
		if (ret)
			return ret;
	}
	*pos = p;
	return 0;
}

/* ---- reading a task message ------------------------------------------ */

struct pool_reader {
	const unsigned char *p;
	size_t off, len;
};

static const void *rd_take(struct pool_reader *r, size_t n)
{
	const void *at;

	if (n > r->len - r->off || pool_align8(n) > r->len - r->off)
		return NULL;
	at = r->p + r->off;
	r->off += pool_align8(n);
	return at;
}

/* Resolve a segment's function, learning its name if one came with it. */
static int worker_fn(struct pool_wctx *w, const struct pool_seg_hdr *s,
		     const char *name, mpq_task_fn *fn)
{
	mpq_task_fn *grown;

	if (!w->spawn) {
		*fn = (mpq_task_fn)(uintptr_t)s->fn;
		return 0;
	}
	if (s->fn >= POOL_TASKS_MAX)
		return -EPROTO;
	if (s->fn >= w->nfns) {
		grown = realloc(w->fns, (s->fn + 1) * sizeof(*grown));
		if (!grown)
			return -ENOMEM;
		memset(grown + w->nfns, 0, (s->fn + 1 - w->nfns) * sizeof(*grown));
		w->fns = grown;
		w->nfns = s->fn + 1;
	}
	if (name)
		w->fns[s->fn] = pool_task_by_name(name, s->name_len);
	*fn = w->fns[s->fn];
	return 0;
}

/* An argument that came as a memfd: map it for the task. */
static const void *worker_map_arg(struct pool_wctx *w, uint64_t size, int *fd)
{
	struct stat st;
	void *map;

	*fd = pool_recv_fd(w->sock, 0);
	if (*fd < 0)
		return NULL;
	if (fstat(*fd, &st) < 0 || (uint64_t)st.st_size < size || !size)
		return NULL;
	map = mmap(NULL, size, PROT_READ, MAP_SHARED, *fd, 0);
	return map == MAP_FAILED ? NULL : map;
}

static int worker_segment(struct pool_wctx *w, struct pool_reader *r,
			  uint32_t *pos, uint32_t *flags)
{
	const struct pool_seg_hdr *s = rd_take(r, sizeof(*s));
	const char *name = NULL;
	char missing[POOL_TASK_NAME_MAX + 1] = "?";
	mpq_task_fn fn;
	uint32_t i;
	int ret;

	if (!s)
		return -EPROTO;
	*flags = s->flags;
	if (s->flags & POOL_SEG_NAME) {
		if (!s->name_len || s->name_len > POOL_TASK_NAME_MAX)
			return -EPROTO;
		name = rd_take(r, s->name_len);
		if (!name)
			return -EPROTO;
	}
	ret = worker_fn(w, s, name, &fn);
	if (ret)
		return ret;
	if (!fn && name)
		snprintf(missing, sizeof(missing), "%.*s", (int)s->name_len, name);
	if (s->flags & POOL_SEG_FIXED) {
		const unsigned char *args;

		if (s->arg_size && s->count > SIZE_MAX / s->arg_size)
			return -EPROTO;
		args = rd_take(r, (size_t)s->count * s->arg_size);
		if (!args)
			return -EPROTO;
		if (fn)
			return worker_run_fixed(w, fn, args, s, pos);
		for (i = 0; i < s->count; i++) {
			ret = worker_run_item(w, fn, args + (size_t)i * s->arg_size,
					      s->arg_size, (*pos)++, missing);
			if (ret)
				return ret;
		}
		return 0;
	}
	for (i = 0; i < s->count; i++) {
		const struct pool_arg_hdr *a = rd_take(r, sizeof(*a));
		const void *arg;
		uint64_t size = 0;
		int fd = -1;

		if (!a)
			return -EPROTO;
		arg = rd_take(r, a->len);
		if (!arg)
			return -EPROTO;
		if (a->flags & POOL_ARG_FD) {
			if (a->len != 8)
				return -EPROTO;
			memcpy(&size, arg, sizeof(size));
			arg = worker_map_arg(w, size, &fd);
			if (!arg) {
				if (fd >= 0)
					close(fd);
				return -EPROTO;
			}
		} else {
			size = a->len;
		}
		ret = worker_run_item(w, fn, arg, size, (*pos)++, missing);
		if (fd >= 0) {
			munmap((void *)arg, size);
			close(fd);
		}
		if (ret)
			return ret;
	}
	return 0;
}

static int worker_tasks(struct pool_wctx *w, const unsigned char *msg,
			size_t len)
{
	const struct pool_tasks_hdr *h = (const void *)msg;
	struct pool_reader r = { .p = msg, .off = sizeof(*h), .len = len };
	struct pool_staging *st = w->st;
	uint32_t pos = 0, i, flags;
	int ret;

	/* Staging now speaks of this message (order: see pool_staging). */
	store_release(&st->used, 0);
	store_release(&st->running, POOL_RUNNING_NONE);
	store_release(&st->msg.first, 0);
	w->seq = h->seq;
	w->first = 0;
	w->nitems = 0;
	w->run_off = RUN_NONE;
	w->since = mpq_now_ns();
	store_release(&st->msg_seq, h->seq);
	for (i = 0; i < h->nseg; i++) {
		ret = worker_segment(w, &r, &pos, &flags);
		if (ret)
			return ret;
		if (flags & POOL_SEG_CHUNK_END)
			w->done++;
	}
	return w->nitems ? worker_flush(w) : 0;
}

/* The next message into rbuf (grown as needed); its length or -errno. */
static ssize_t worker_recv(struct pool_wctx *w)
{
	size_t len;
	void *grown;
	int ret;

	for (;;) {
		len = w->rbuf_size;
		ret = mpq_conn_recv_bytes_into(w->conn, w->rbuf, &len,
					       MPQ_FOREVER);
		if (ret != -EMSGSIZE)
			return ret ? ret : (ssize_t)len;
		grown = realloc(w->rbuf, len);
		if (!grown)
			return -ENOMEM;
		w->rbuf = grown;
		w->rbuf_size = len;
	}
}

static int worker_ready(struct pool_wctx *w, int status)
{
	struct pool_results_hdr h = {
		.type = POOL_MSG_READY,
		.status = status,
	};

	return mpq_conn_send_bytes(w->conn, &h, sizeof(h), MPQ_FOREVER);
}

/*
 * The worker: initializer, READY, then task messages until EXIT, the
 * pool's end going away, or maxtasksperchild. Returns the exit status.
 */
static int worker_loop(struct pool_wctx *w, mpq_target_fn init,
		       const void *initarg, size_t initarg_len)
{
	const struct pool_tasks_hdr *h;
	int status = 0;
	ssize_t n;

	if (init)
		status = task_code(init(initarg, initarg_len));
	/* Our view of the pipe and staging, faulted in before work comes. */
	mpq_conn_prefault(w->conn);
	madvise(w->st, POOL_STAGING_SIZE, MADV_POPULATE_WRITE);
	w->rbuf_size = POOL_MSG_MAX;
	w->rbuf = malloc(w->rbuf_size);
	if (!w->rbuf)
		status = -ENOMEM;
	else
		memset(w->rbuf, 0, w->rbuf_size);
	if (worker_ready(w, status) || status)
		return 1;
	for (;;) {
		n = worker_recv(w);
		if (n == -EPIPE)
			return 0;	/* the pool is gone */
		if (n < (ssize_t)sizeof(*h))
			return 1;
		h = (const void *)w->rbuf;
		if (h->type == POOL_MSG_EXIT)
			return 0;
		if (h->type != POOL_MSG_TASKS || worker_tasks(w, w->rbuf, (size_t)n))
			return 1;
		if (w->maxtasks && w->done >= w->maxtasks)
			return 0;
	}
}

static void worker_ctx_init(struct pool_wctx *w, struct mpq_conn *conn,
			    int sock, struct pool_staging *st)
{
	memset(w, 0, sizeof(*w));
	w->conn = conn;
	w->sock = sock;
	w->st = st;
	w->recs = (unsigned char *)(&st->msg + 1);
	w->task.w = w;
	w->task.fd = -1;
	w->run_off = RUN_NONE;
}

/*
 * A forked worker: the pool's memory is a copy; drop what belongs to the
 * pool and to the other workers (their pipes must see their peers go
 * when those die, not stay open here), and run with the signal mask the
 * pool's maker had (the handler thread that may have forked us blocks
 * every signal).
 */
static void pool_worker_fork_cleanup(struct mpq_pool *p, unsigned int slot)
{
	unsigned int i;

	pthread_sigmask(SIG_SETMASK, &p->worker_mask, NULL);
	if (p->ring_ok)
		io_uring_queue_exit(&p->ring);
	if (p->bell >= 0)
		close(p->bell);
	for (i = 0; i < (unsigned int)p->nproc; i++) {
		struct pool_worker *o = &p->w[i];

		if (o->conn)
			mpq_conn_close(o->conn);
		if (o->sock >= 0)
			close(o->sock);
		if (o->proc)
			mpq_process_close(o->proc);
		if (i != slot && o->st)
			munmap(o->st, POOL_STAGING_SIZE);
	}
}

int pool_worker_fork(const void *arg, size_t len)
{
	const struct pool_worker_args *a = arg;
	struct pool_worker *me;
	struct pool_wctx w;
	struct mpq_pool *p;

	if (len != sizeof(*a))
		return 1;
	p = a->pool;
	me = &p->w[a->slot];
	pool_worker_fork_cleanup(p, a->slot);
	worker_ctx_init(&w, me->wconn, me->wsock, me->st);
	w.maxtasks = p->maxtasks;
	return worker_loop(&w, p->init, p->initarg, p->initarg_len);
}

/* What a spawned worker is given: this header, then the strings and initarg. */
struct pool_boot {
	char magic[8];
	uint32_t maxtasks;
	int32_t sock;
	int32_t staging;
	uint32_t handle_len;
	uint32_t init_len;
	uint32_t __pad;
	uint64_t initarg_len;
	uint64_t sigmask;	/* signals 1..64 blocked in the pool's maker */
};

/*
 * Build a spawned worker's argument, and the fds it must inherit (the
 * worker's pipe end, socket and staging memfd).
 */
int pool_worker_boot(struct mpq_pool *p, struct pool_worker *w, void **out,
		     size_t *out_len, int *fds, int *nfds)
{
	char handle[160];
	struct pool_boot b = {
		.magic = POOL_BOOT_MAGIC,
		.maxtasks = p->maxtasks,
		.sock = w->wsock,
		.staging = w->staging_fd,
		.init_len = p->init_name ? (uint32_t)strlen(p->init_name) : 0,
		.initarg_len = p->initarg_len,
	};
	unsigned char *buf;
	int n, sig;

	n = mpq_conn_handle(w->wconn, handle, sizeof(handle), fds, nfds);
	if (n < 0)
		return n;
	b.handle_len = (uint32_t)n;
	for (sig = 1; sig <= 64; sig++)
		if (sigismember(&p->worker_mask, sig) == 1)
			b.sigmask |= 1ULL << (sig - 1);
	*out_len = sizeof(b) + b.handle_len + b.init_len + p->initarg_len;
	buf = malloc(*out_len);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, &b, sizeof(b));
	memcpy(buf + sizeof(b), handle, b.handle_len);
	if (b.init_len)
		memcpy(buf + sizeof(b) + b.handle_len, p->init_name, b.init_len);
	if (p->initarg_len)
		memcpy(buf + sizeof(b) + b.handle_len + b.init_len, p->initarg,
		       p->initarg_len);
	fds[(*nfds)++] = w->wsock;
	fds[(*nfds)++] = w->staging_fd;
	*out = buf;
	return 0;
}

static void worker_set_mask(uint64_t bits)
{
	sigset_t set;
	int sig;

	sigemptyset(&set);
	for (sig = 1; sig <= 64; sig++)
		if (bits & (1ULL << (sig - 1)))
			sigaddset(&set, sig);
	pthread_sigmask(SIG_SETMASK, &set, NULL);
}

/* Take an inherited fd as ours: close-on-exec from now on. */
static int worker_keep_fd(int fd)
{
	return fcntl(fd, F_SETFD, FD_CLOEXEC) < 0 ? -errno : 0;
}

/* A spawned worker: open what the boot names, then the same loop. */
int pool_worker_spawn(const void *arg, size_t len)
{
	const unsigned char *a = arg;
	char handle[160], init_name[256];
	struct pool_staging *st;
	mpq_target_fn init = NULL;
	struct mpq_conn *conn;
	struct pool_wctx w;
	struct pool_boot b;

	if (len < sizeof(b))
		return 1;
	memcpy(&b, a, sizeof(b));
	if (memcmp(b.magic, POOL_BOOT_MAGIC, sizeof(b.magic)) ||
	    b.handle_len >= sizeof(handle) || b.init_len >= sizeof(init_name) ||
	    len != sizeof(b) + b.handle_len + b.init_len + b.initarg_len)
		return 1;
	worker_set_mask(b.sigmask);
	memcpy(handle, a + sizeof(b), b.handle_len);
	handle[b.handle_len] = '\0';
	memcpy(init_name, a + sizeof(b) + b.handle_len, b.init_len);
	init_name[b.init_len] = '\0';
	if (b.init_len) {
		init = mpq_target_by(init_name);
		if (!init)
			return 1;
	}
	if (mpq_conn_import(&conn, handle) || worker_keep_fd(b.sock) ||
	    worker_keep_fd(b.staging))
		return 1;
	st = mmap(NULL, POOL_STAGING_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
		  b.staging, 0);
	close(b.staging);
	if (st == MAP_FAILED)
		return 1;
	worker_ctx_init(&w, conn, b.sock, st);
	w.maxtasks = b.maxtasks;
	w.spawn = 1;
	return worker_loop(&w, init, a + sizeof(b) + b.handle_len + b.init_len,
			   b.initarg_len);
}

/* Spawned workers find their entry point by this name. */
static void __attribute__((constructor(101))) pool_worker_register(void)
{
	mpq_register_target(POOL_WORKER_TARGET, pool_worker_spawn);
}
