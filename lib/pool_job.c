// SPDX-License-Identifier: MIT
/*
 * Work given to a pool: apply, map, starmap, map_values and imap calls
 * make jobs, which are also the AsyncResult objects users hold and what
 * imap iterators walk.
 *
 * A job is made by the caller and handed to the handler thread through
 * the pool's incoming list; from then on only the handler writes its
 * results (pool_job_value / pool_job_fail, then pool_job_complete), and
 * user threads read them once published: an item by its status (release),
 * imap_unordered's order by ndone (release), everything by ready
 * (release), which is set after the callback has run, as Python does.
 * Waiters sleep on the job's progress word, which the handler bumps; it
 * makes the wake-up call only while waiters count themselves (the fence in
 * pool_job_notify pairs with the increment in job_sleep).
 *
 * Map arguments are not copied: the caller's iovecs and bytes are read
 * when the handler builds messages, so they must outlive the job. An
 * apply's argument is copied into the job.
 */
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "pool.h"

#define MPQ_ITER_MAGIC		0x6d707149U	/* "mpqI" */
/* A waiter spins this long before it sleeps (a wake-up costs ~50 us). */
#define POOL_WAIT_SPIN_NS	20000
#define POOL_SPIN_YIELD_NS	500

struct mpq_pool_iter {
	uint32_t magic;
	struct mpq_async_result *job;
	size_t pos;		/* results returned so far */
};

/* ---- owned resources and freeing -------------------------------------- */

/*
 * A received message is shared by every job with a value in it; those jobs
 * may be freed by user threads while the handler still hands the message
 * out, hence the atomic count (acq_rel: the last one frees what all wrote).
 */
void pool_buf_put(struct pool_buf *b)
{
	if (b && __atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) == 0)
		free(b);
}

/*
 * Make j responsible for a resource its values live in: the handler calls
 * this once per job and buffer, before the first value pointing into it.
 */
int pool_job_own(struct mpq_async_result *j, int kind, void *ptr, size_t len)
{
	/* The first in the job itself: an apply owns one buffer. */
	if (!j->owned_cap) {
		j->owned = &j->owned1;
		j->owned_cap = 1;
	} else if (j->owned == &j->owned1 && j->nowned == 1) {
		struct pool_owned *o = malloc(4 * sizeof(*o));

		if (!o)
			return -ENOMEM;
		o[0] = j->owned1;
		j->owned = o;
		j->owned_cap = 4;
	}
	if (pool_grow(&j->owned, &j->owned_cap, j->nowned, sizeof(*j->owned),
		      4))
		return -ENOMEM;
	j->owned[j->nowned].kind = kind;
	j->owned[j->nowned].ptr = ptr;
	j->owned[j->nowned].len = len;
	j->nowned++;
	if (kind == POOL_OWN_BUF)
		__atomic_add_fetch(&((struct pool_buf *)ptr)->refs, 1,
				   __ATOMIC_RELAXED);
	return 0;
}

/* The last reference is gone: no thread reads the job any more. */
static void job_free(struct mpq_async_result *j)
{
	size_t i;

	for (i = 0; i < j->nowned; i++) {
		struct pool_owned *o = &j->owned[i];

		if (o->kind == POOL_OWN_BUF)
			pool_buf_put(o->ptr);
		else if (o->kind == POOL_OWN_MAP)
			munmap(o->ptr, o->len);
		else
			free(o->ptr);
	}
	for (i = 0; i < j->nfails; i++)
		free(j->fails[i].msg);
	if (j->owned != &j->owned1)
		free(j->owned);
	free(j->fails);
	if (j->done != &j->done1)
		free(j->done);
	free(j->order);
	if (j->kind != POOL_JOB_APPLY)
		free(j->items);
	j->magic = 0;
	if (j->slab)
		pool_slab_free(j->slab, j);
	else
		free(j);
}

/* Drop a reference: the user's, or the pool's once the job is complete. */
void pool_job_put(struct mpq_async_result *j)
{
	if (__atomic_sub_fetch(&j->refs, 1, __ATOMIC_ACQ_REL) == 0)
		job_free(j);
}

/* ---- making and submitting -------------------------------------------- */

static size_t default_chunksize(size_t n, int nproc)
{
	size_t per = (size_t)nproc * 4, c = n / per;

	/* Python's Pool._map_async: divmod(len, 4 * processes), round up. */
	return c + (n % per ? 1 : 0);
}

/* A chunk is counted in 32 bits on the way to a worker. */
static size_t chunk_clamp(size_t c)
{
	if (!c)
		return 1;
	return c > UINT32_MAX / 2 ? UINT32_MAX / 2 : c;
}

/*
 * A job for n items of fn. extra: bytes after the struct (apply's
 * argument and its one item). Results storage is set up by the caller.
 */
static int job_new(struct mpq_pool *p, struct mpq_async_result **out,
		   int kind, mpq_task_fn fn, size_t n, size_t extra)
{
	struct mpq_async_result *j;
	const char *name = NULL;
	int idx = 0;

	if (!fn)
		return -EINVAL;
	if (p->method != MPQ_START_FORK) {
		idx = pool_task_index(fn, &name);
		if (idx < 0)
			return idx;
	}
	/* A job that needs no memory but its own: the slab's. */
	if (n < 64 && extra <= POOL_SLAB_ARG + sizeof(struct pool_item)) {
		j = pool_slab_alloc(p->slab);
		if (j)
			j->slab = p->slab;
	} else {
		j = calloc(1, sizeof(*j) + extra);
	}
	if (!j)
		return -ENOMEM;
	j->magic = MPQ_RESULT_MAGIC;
	j->kind = kind;
	j->fn = fn;
	j->spawn = p->method != MPQ_START_FORK;
	j->fn_wire = j->spawn ? (uint64_t)idx : (uint64_t)(uintptr_t)fn;
	j->fn_name = name;
	j->n = n;
	j->first_fail = SIZE_MAX;
	j->done = n < 64 ? &j->done1 : calloc(n / 64 + 1, sizeof(*j->done));
	if (!j->done) {
		free(j);
		return -ENOMEM;
	}
	*out = j;
	return 0;
}

static int job_items(struct mpq_async_result *j)
{
	j->items = calloc(j->n ? j->n : 1, sizeof(*j->items));
	return j->items ? 0 : -ENOMEM;
}

/*
 * Hand the job to the handler. The pool holds one reference until the
 * job is complete, the caller another if it asked for the result.
 */
static int job_submit(struct mpq_pool *p, struct mpq_async_result *j,
		      const struct mpq_pool_callbacks *cb,
		      struct mpq_async_result **out)
{
	j->refs = out ? 2 : 1;
	if (cb) {
		j->cb = *cb;
		j->has_cb = 1;
	}
	pthread_mutex_lock(&p->lock);
	if (p->state != POOL_RUN) {
		pthread_mutex_unlock(&p->lock);
		job_free(j);
		return -EBADF;
	}
	j->handler = p->thread;
	j->remote = p->rops != NULL;
	if (p->in_tail)
		p->in_tail->qnext = j;
	else
		p->in_head = j;
	p->in_tail = j;
	pthread_mutex_unlock(&p->lock);
	pool_handler_wake(p);
	if (out)
		*out = j;
	return 0;
}

MPQ_EXPORT int mpq_pool_apply_async(struct mpq_pool *p, mpq_task_fn fn,
				    const void *arg, size_t len,
				    const struct mpq_pool_callbacks *cb,
				    struct mpq_async_result **out)
{
	struct mpq_async_result *j;
	size_t room;
	int ret = pool_check(p);

	if (ret)
		return ret;
	if ((!arg && len) || len > SIZE_MAX / 2)
		return -EINVAL;
	/* The argument and the one item live in the job's own allocation. */
	room = (len + 15) & ~(size_t)15;
	ret = job_new(p, &j, POOL_JOB_APPLY, fn, 1, room + sizeof(struct pool_item));
	if (ret)
		return ret;
	j->args_kind = POOL_ARGS_COPY;
	j->arg_len = len;
	if (len)
		memcpy(j->arg, arg, len);
	j->items = (struct pool_item *)(j->arg + room);
	j->chunksize = 1;
	return job_submit(p, j, cb, out);
}

/*
 * The iovecs are read later, on the handler thread: a NULL base with a
 * length is refused now, where the caller can still be told.
 */
static int check_iov(const struct iovec *args, size_t n)
{
	size_t i;

	if (!args && n)
		return -EINVAL;
	for (i = 0; i < n; i++)
		if (!args[i].iov_base && args[i].iov_len)
			return -EINVAL;
	return 0;
}

/* A map-like job over iovecs (argc per item for starmap, else 1). */
static int map_job(struct mpq_pool *p, struct mpq_async_result **jp, int kind,
		   mpq_task_fn fn, const struct iovec *args, unsigned int argc,
		   size_t n, size_t chunksize)
{
	struct mpq_async_result *j;
	int ret = pool_check(p);

	if (ret)
		return ret;
	if (argc && n > SIZE_MAX / argc / sizeof(*args))
		return -EINVAL;
	ret = check_iov(args, n * (argc ? argc : 1));
	if (ret)
		return ret;
	ret = job_new(p, &j, kind, fn, n, 0);
	if (ret)
		return ret;
	j->args_kind = argc ? POOL_ARGS_STAR : POOL_ARGS_IOV;
	j->iov = args;
	j->argc = argc;
	if (!chunksize)
		chunksize = kind == POOL_JOB_IMAP || kind == POOL_JOB_UNORDERED ?
			    1 : default_chunksize(n, p->nproc);
	j->chunksize = chunk_clamp(chunksize);
	ret = job_items(j);
	if (!ret && kind == POOL_JOB_UNORDERED) {
		j->order = calloc(n ? n : 1, sizeof(*j->order));
		ret = j->order ? 0 : -ENOMEM;
	}
	if (ret) {
		job_free(j);
		return ret;
	}
	*jp = j;
	return 0;
}

MPQ_EXPORT int mpq_pool_map_async(struct mpq_pool *p, mpq_task_fn fn,
				  const struct iovec *args, size_t n,
				  size_t chunksize,
				  const struct mpq_pool_callbacks *cb,
				  struct mpq_async_result **out)
{
	struct mpq_async_result *j;
	int ret = map_job(p, &j, POOL_JOB_MAP, fn, args, 0, n, chunksize);

	return ret ? ret : job_submit(p, j, cb, out);
}

MPQ_EXPORT int mpq_pool_starmap_async(struct mpq_pool *p, mpq_task_fn fn,
				      const struct iovec *args,
				      unsigned int argc, size_t n,
				      size_t chunksize,
				      const struct mpq_pool_callbacks *cb,
				      struct mpq_async_result **out)
{
	struct mpq_async_result *j;
	int ret;

	if (!argc)
		return -EINVAL;
	ret = map_job(p, &j, POOL_JOB_MAP, fn, args, argc, n, chunksize);
	return ret ? ret : job_submit(p, j, cb, out);
}

/* Wait for a job made by a blocking call; hand it out even if it failed. */
static int map_wait(struct mpq_async_result *j, struct mpq_async_result **out)
{
	int ret = mpq_async_result_get(j, MPQ_FOREVER);

	if (out)
		*out = j;
	else
		mpq_async_result_free(j);
	return ret;
}

MPQ_EXPORT int mpq_pool_map(struct mpq_pool *p, mpq_task_fn fn,
			    const struct iovec *args, size_t n,
			    size_t chunksize, struct mpq_async_result **out)
{
	struct mpq_async_result *j;
	int ret;

	if (out)
		*out = NULL;
	ret = mpq_pool_map_async(p, fn, args, n, chunksize, NULL, &j);
	return ret ? ret : map_wait(j, out);
}

MPQ_EXPORT int mpq_pool_starmap(struct mpq_pool *p, mpq_task_fn fn,
				const struct iovec *args, unsigned int argc,
				size_t n, size_t chunksize,
				struct mpq_async_result **out)
{
	struct mpq_async_result *j;
	int ret;

	if (out)
		*out = NULL;
	ret = mpq_pool_starmap_async(p, fn, args, argc, n, chunksize, NULL, &j);
	return ret ? ret : map_wait(j, out);
}

/*
 * The values go straight from the results into out, item i at i *
 * out_size, so the job keeps no per-item storage at all: a failure is
 * noted in a short list, and the caller's buffer is the result.
 */
MPQ_EXPORT int mpq_pool_map_values(struct mpq_pool *p, mpq_task_fn fn,
				   const void *in, size_t in_size, void *out,
				   size_t out_size, size_t n, size_t chunksize)
{
	struct mpq_async_result *j;
	int ret = pool_check(p);

	if (ret)
		return ret;
	if ((!in && n && in_size) || (!out && n && out_size) ||
	    in_size > UINT32_MAX ||
	    (in_size && n > SIZE_MAX / in_size) ||
	    (out_size && n > SIZE_MAX / out_size))
		return -EINVAL;
	ret = job_new(p, &j, POOL_JOB_VALUES, fn, n, 0);
	if (ret)
		return ret;
	j->args_kind = POOL_ARGS_FIXED;
	j->base = in;
	j->arg_size = in_size;
	j->out = out;
	j->out_size = out_size;
	j->chunksize = chunk_clamp(chunksize ? chunksize :
				   default_chunksize(n, p->nproc));
	ret = job_submit(p, j, NULL, &j);
	if (ret)
		return ret;
	ret = mpq_async_result_get(j, MPQ_FOREVER);
	mpq_async_result_free(j);
	return ret;
}

/* An iterator holds the user's reference to its job. */
static int imap_common(struct mpq_pool *p, int kind, mpq_task_fn fn,
		       const struct iovec *args, size_t n, size_t chunksize,
		       struct mpq_pool_iter **out)
{
	struct mpq_async_result *j;
	struct mpq_pool_iter *it;
	int ret;

	if (!out)
		return -EINVAL;
	ret = map_job(p, &j, kind, fn, args, 0, n, chunksize);
	if (ret)
		return ret;
	it = calloc(1, sizeof(*it));
	if (!it) {
		job_free(j);
		return -ENOMEM;
	}
	ret = job_submit(p, j, NULL, &it->job);
	if (ret) {
		free(it);
		return ret;
	}
	it->magic = MPQ_ITER_MAGIC;
	*out = it;
	return 0;
}

MPQ_EXPORT int mpq_pool_imap(struct mpq_pool *p, mpq_task_fn fn,
			     const struct iovec *args, size_t n,
			     size_t chunksize, struct mpq_pool_iter **out)
{
	return imap_common(p, POOL_JOB_IMAP, fn, args, n, chunksize, out);
}

MPQ_EXPORT int mpq_pool_imap_unordered(struct mpq_pool *p, mpq_task_fn fn,
				       const struct iovec *args, size_t n,
				       size_t chunksize,
				       struct mpq_pool_iter **out)
{
	return imap_common(p, POOL_JOB_UNORDERED, fn, args, n, chunksize, out);
}

MPQ_EXPORT ssize_t mpq_pool_apply(struct mpq_pool *p, mpq_task_fn fn,
				  const void *arg, size_t len, void **value)
{
	struct mpq_async_result *j;
	const void *v;
	size_t vlen;
	int ret;

	if (!value)
		return -EINVAL;
	*value = NULL;
	ret = mpq_pool_apply_async(p, fn, arg, len, NULL, &j);
	if (ret)
		return ret;
	ret = mpq_async_result_get(j, MPQ_FOREVER);
	if (!ret)
		ret = mpq_async_result_value(j, 0, &v, &vlen);
	if (!ret) {
		*value = malloc(vlen ? vlen : 1);
		if (*value)
			memcpy(*value, v, vlen);
		else
			ret = -ENOMEM;
	}
	mpq_async_result_free(j);
	return ret ? ret : (ssize_t)vlen;
}

/* ---- the handler's side ----------------------------------------------- */

/* Mark item i done; 0 if it was done already (a duplicate is ignored). */
static int job_mark(struct mpq_async_result *j, size_t i)
{
	uint64_t bit = 1ULL << (i % 64);

	if (i >= j->n || (j->done[i / 64] & bit))
		return 0;
	j->done[i / 64] |= bit;
	return 1;
}

/*
 * One more item is done. ndone is what imap_unordered's iterator reads, so
 * order[ndone] is written before ndone moves on.
 */
static void job_count(struct mpq_async_result *j, size_t i)
{
	if (j->order)
		j->order[j->ndone] = i;
	/* Pairs with the acquire in iter_next: order[] is written. */
	store_release(&j->ndone, j->ndone + 1);
}

/* get() reports the failed item with the lowest index, not the first. */
static void job_note_fail(struct mpq_async_result *j, size_t i, int code)
{
	if (i < j->first_fail) {
		j->first_fail = i;
		j->first_code = code;
	}
}

/* Item i gave data (len bytes, valid while the job lives, or copied). */
int pool_job_value(struct mpq_async_result *j, size_t i, const void *data,
		   size_t len)
{
	if (!job_mark(j, i))
		return 0;
	if (j->kind == POOL_JOB_VALUES) {
		if (len != j->out_size) {
			j->done[i / 64] &= ~(1ULL << (i % 64));
			static const char m[] = "the task's value does not "
				"have the size map_values wants";

			pool_job_fail(j, i, -EMSGSIZE, m, sizeof(m) - 1);
			return 1;
		}
		if (len)
			memcpy(j->out + i * j->out_size, data, len);
	} else {
		j->items[i].data = data;
		j->items[i].len = len;
		/* Pairs with the acquire in iter_next. */
		store_release(&j->items[i].status, POOL_ITEM_OK);
	}
	job_count(j, i);
	return 1;
}

/* Mark items [i, i + n) done, if none was: 1, else 0 and nothing marked. */
static int job_mark_range(struct mpq_async_result *j, size_t i, size_t n)
{
	size_t x, end = i + n, span;
	uint64_t mask;
	int pass;

	if (i > j->n || n > j->n - i)
		return 0;
	for (pass = 0; pass < 2; pass++) {
		for (x = i; x < end; x += span) {
			span = 64 - x % 64;
			if (span > end - x)
				span = end - x;
			mask = (span == 64 ? UINT64_MAX : (1ULL << span) - 1)
			       << (x % 64);
			if (!pass && (j->done[x / 64] & mask))
				return 0;
			if (pass)
				j->done[x / 64] |= mask;
		}
	}
	return 1;
}

/*
 * The caller's array is often fresh memory (8 MiB for a million values),
 * whose first touch is a fault a page, all of them taken by this one
 * thread while the workers wait for it. Faulting a stretch in with one
 * call before copying into it costs less than its pages' faults one by
 * one (an 8 MiB copy in 256 KiB steps: 3.0 ms -> 2.3 ms here), and on
 * pages already there it is a walk of the page table. Only stretches of
 * several pages: for a few it does not pay. Best effort: errors (an
 * older kernel, a mapping that refuses) leave it to the copy.
 */
#define POOL_POPULATE_MIN	(64U << 10)

static void pool_out_populate(unsigned char *at, size_t len)
{
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), a, e;

	if (len < POOL_POPULATE_MIN)
		return;
	a = ((uintptr_t)at + page - 1) & ~(page - 1);
	e = ((uintptr_t)at + len) & ~(page - 1);
	if (e > a)
		madvise((void *)a, e - a, MADV_POPULATE_WRITE);
}

/*
 * n values of size bytes for items [i, i + n), back to back at data: for
 * map_values one copy into the caller's array; for the others (data then
 * lives as long as the job) one pass that points the items at them.
 */
void pool_job_values(struct mpq_async_result *j, size_t i,
		     const unsigned char *data, size_t n, size_t size)
{
	size_t k;

	if ((j->kind == POOL_JOB_VALUES && size != j->out_size) ||
	    j->kind == POOL_JOB_UNORDERED || !job_mark_range(j, i, n)) {
		for (k = 0; k < n; k++)
			pool_job_value(j, i + k, data + k * size, size);
		return;
	}
	if (j->kind == POOL_JOB_VALUES) {
		if (size) {
			pool_out_populate(j->out + i * size, n * size);
			memcpy(j->out + i * size, data, n * size);
		}
	} else {
		for (k = 0; k < n; k++) {
			j->items[i + k].data = data + k * size;
			j->items[i + k].len = size;
			/* Pairs with the acquire in iter_next (imap). */
			store_release(&j->items[i + k].status, POOL_ITEM_OK);
		}
	}
	store_release(&j->ndone, j->ndone + n);
}

static int job_fail_list(struct mpq_async_result *j, size_t i, int code,
			 char *msg)
{
	if (pool_grow(&j->fails, &j->fails_cap, j->nfails, sizeof(*j->fails),
		      4))
		return -ENOMEM;
	j->fails[j->nfails].index = i;
	j->fails[j->nfails].code = code;
	j->fails[j->nfails].msg = msg;
	j->nfails++;
	return 0;
}

/*
 * Item i failed with code and a message of msglen bytes (not terminated;
 * none: mpq_strerror(code)).
 */
void pool_job_fail(struct mpq_async_result *j, size_t i, int code,
		   const char *msg, size_t msglen)
{
	char *copy;

	if (!job_mark(j, i))
		return;
	if (!msg || !msglen) {
		msg = mpq_strerror(code);
		msglen = strlen(msg);
	}
	copy = strndup(msg, msglen);
	job_note_fail(j, i, code);
	if (j->kind == POOL_JOB_VALUES) {
		if (!copy || job_fail_list(j, i, code, copy))
			free(copy);
	} else {
		if (copy && pool_job_own(j, POOL_OWN_STR, copy, 0))
			free(copy), copy = NULL;
		j->items[i].data = copy ? copy : "";
		j->items[i].len = 0;
		store_release(&j->items[i].status, code);
	}
	job_count(j, i);
}

/*
 * terminate: every item not done fails with code. why must be a string
 * that lives as long as the program (it is not copied for each item).
 */
void pool_job_cancel(struct mpq_async_result *j, int code, const char *why)
{
	size_t i;

	j->cancel_code = code;
	j->cancel_msg = why;
	for (i = 0; i < j->n; i++) {
		if (j->done[i / 64] == UINT64_MAX) {
			i |= 63;
			continue;
		}
		if (j->done[i / 64] & (1ULL << (i % 64)))
			continue;
		job_note_fail(j, i, code);
		if (j->kind == POOL_JOB_VALUES) {
			/* Left unmarked: item_status() reads cancel_code. */
			j->ndone++;
			continue;
		}
		j->done[i / 64] |= 1ULL << (i % 64);
		j->items[i].data = why;
		store_release(&j->items[i].status, code);
		job_count(j, i);
	}
	store_release(&j->ndone, j->ndone);
}

/* Wake whoever waits for this job's progress (imap) or completion. */
void pool_job_notify(struct mpq_async_result *j)
{
	__atomic_add_fetch(&j->progress, 1, __ATOMIC_RELEASE);
	/* Pairs with the seq_cst increment of waiters in job_sleep. */
	full_fence();
	/*
	 * A count the waiters keep themselves, never cleared here: a store
	 * of 0 after the wake could land after a waiter had just counted
	 * itself again (woken by this very bump) and was on its way to
	 * sleep on it; every later bump would then see no waiter, and
	 * a map's caller slept for ever (the distributed pool, which bumps
	 * once per item, hung a 20,000-item map about one run in 13).
	 */
	if (load_relaxed(&j->waiters))
		mpq_futex_wake(&j->progress, INT32_MAX);
}

static const char *job_msg(struct mpq_async_result *j, size_t i)
{
	size_t k;

	if (j->items)
		return j->items[i].data ? j->items[i].data : "";
	if (!(j->done[i / 64] & (1ULL << (i % 64))))
		return j->cancel_msg ? j->cancel_msg : "";
	for (k = 0; k < j->nfails; k++)
		if (j->fails[k].index == i)
			return j->fails[k].msg ? j->fails[k].msg : "";
	return "";
}

/*
 * Every item is done: run the callback, then say ready (Python sets its
 * event after the callback), then drop the pool's reference.
 */
void pool_job_complete(struct mpq_async_result *j)
{
	j->complete = 1;
	if (j->has_cb) {
		if (j->first_fail == SIZE_MAX) {
			if (j->cb.callback)
				j->cb.callback(j, j->cb.data);
		} else if (j->cb.error_callback) {
			j->cb.error_callback(j, j->first_code,
					     job_msg(j, j->first_fail),
					     j->cb.data);
		}
	}
	store_release(&j->ready, 1);
	pool_job_notify(j);
	pool_job_put(j);
}

/* ---- waiting and reading ---------------------------------------------- */

/* A pointer that is not a result we made is refused, not followed. */
static int job_check(struct mpq_async_result *j)
{
	return j && j->magic == MPQ_RESULT_MAGIC ? 0 : -EINVAL;
}

static int pred_ready(struct mpq_async_result *j, size_t k)
{
	return load_acquire(&j->ready) != 0;
}

static int pred_item(struct mpq_async_result *j, size_t k)
{
	return load_acquire(&j->items[k].status) != POOL_ITEM_PENDING;
}

static int pred_count(struct mpq_async_result *j, size_t k)
{
	return load_acquire(&j->ndone) > k;
}

/* Callbacks run on the handler: waiting there would wait for ourselves. */
static int in_handler(struct mpq_async_result *j)
{
	return pthread_equal(pthread_self(), j->handler);
}

/* Wait until pred(j, k) holds, spinning briefly before sleeping. */
static int job_sleep(struct mpq_async_result *j,
		     int (*pred)(struct mpq_async_result *, size_t), size_t k,
		     int64_t timeout_ns)
{
	int64_t deadline = mpq_deadline(timeout_ns), start;
	uint32_t seen;
	int r;

	if (pred(j, k))
		return 0;
	if (timeout_ns == 0)
		return -EAGAIN;
	/* The handler would wait for itself. */
	if (in_handler(j))
		return -EDEADLK;
	/*
	 * A result that comes through a manager takes two network round
	 * trips at least: spinning for it only takes a CPU from the server
	 * and the worker that are to produce it.
	 */
	start = mpq_now_ns();
	while (!j->remote && mpq_now_ns() - start < POOL_WAIT_SPIN_NS &&
	       (deadline < 0 || mpq_now_ns() < deadline)) {
		cpu_relax();
		if (pred(j, k))
			return 0;
		if (mpq_now_ns() - start > POOL_SPIN_YIELD_NS)
			sched_yield();
	}
	for (;;) {
		seen = load_acquire(&j->progress);
		/* Pairs with the fence in pool_job_notify. */
		__atomic_add_fetch(&j->waiters, 1, __ATOMIC_SEQ_CST);
		if (pred(j, k)) {
			__atomic_sub_fetch(&j->waiters, 1, __ATOMIC_RELAXED);
			return 0;
		}
		r = mpq_futex_wait(&j->progress, seen, deadline);
		__atomic_sub_fetch(&j->waiters, 1, __ATOMIC_RELAXED);
		if (pred(j, k))
			return 0;
		if (r == -ETIMEDOUT)
			return -ETIMEDOUT;
	}
}

MPQ_EXPORT int mpq_async_result_wait(struct mpq_async_result *r,
				     int64_t timeout_ns)
{
	int ret = job_check(r);

	return ret ? ret : job_sleep(r, pred_ready, 0, timeout_ns);
}

MPQ_EXPORT int mpq_async_result_get(struct mpq_async_result *r,
				    int64_t timeout_ns)
{
	int ret = mpq_async_result_wait(r, timeout_ns);

	if (ret)
		return ret;
	return r->first_fail == SIZE_MAX ? 0 : r->first_code;
}

MPQ_EXPORT int mpq_async_result_ready(struct mpq_async_result *r)
{
	int ret = job_check(r);

	return ret ? ret : pred_ready(r, 0);
}

MPQ_EXPORT int mpq_async_result_successful(struct mpq_async_result *r)
{
	int ret = job_check(r);

	if (ret)
		return ret;
	if (!pred_ready(r, 0))
		return -EAGAIN;
	return r->first_fail == SIZE_MAX;
}

MPQ_EXPORT ssize_t mpq_async_result_count(struct mpq_async_result *r)
{
	int ret = job_check(r);

	return ret ? ret : (ssize_t)r->n;
}

/* Complete for this thread: ready, or its callback running here. */
static int job_readable(struct mpq_async_result *j, size_t i)
{
	if (i >= j->n)
		return -ERANGE;
	if (pred_ready(j, 0) || (in_handler(j) && j->complete))
		return 0;
	return -EAGAIN;
}

/*
 * An item's code, 0 for a value. map_values keeps no statuses: an item not
 * in its list of failures succeeded, unless terminate left it undone.
 */
static int item_status(struct mpq_async_result *j, size_t i)
{
	size_t k;

	if (j->items)
		return j->items[i].status == POOL_ITEM_OK ? 0 : j->items[i].status;
	if (!(j->done[i / 64] & (1ULL << (i % 64))))
		return j->cancel_code;
	for (k = 0; k < j->nfails; k++)
		if (j->fails[k].index == i)
			return j->fails[k].code;
	return 0;
}

MPQ_EXPORT int mpq_async_result_value(struct mpq_async_result *r, size_t i,
				      const void **value, size_t *len)
{
	int ret = job_check(r);

	if (!ret)
		ret = job_readable(r, i);
	if (ret)
		return ret;
	ret = item_status(r, i);
	if (value)
		*value = ret ? NULL : r->items ? r->items[i].data :
			 r->out + i * r->out_size;
	if (len)
		*len = ret ? 0 : r->items ? r->items[i].len : r->out_size;
	return ret;
}

MPQ_EXPORT int mpq_async_result_error(struct mpq_async_result *r, size_t i,
				      const char **msg)
{
	int ret = job_check(r);

	if (!ret)
		ret = job_readable(r, i);
	if (ret)
		return ret;
	ret = item_status(r, i);
	if (msg)
		*msg = ret ? job_msg(r, i) : "";
	return ret;
}

/* Only the user's reference: the pool keeps the job until it completes. */
MPQ_EXPORT void mpq_async_result_free(struct mpq_async_result *r)
{
	if (job_check(r))
		return;
	pool_job_put(r);
}

/*
 * imap waits for the item at the iterator's position, imap_unordered for
 * one more item done than it returned; a failed item is returned as its
 * code and the iterator moves past it, as Python's next() raises and goes
 * on.
 */
MPQ_EXPORT int mpq_pool_iter_next(struct mpq_pool_iter *it,
				  int64_t timeout_ns, const void **value,
				  size_t *len, size_t *index)
{
	struct mpq_async_result *j;
	size_t i;
	int ret;

	if (index)
		*index = SIZE_MAX;
	if (!it || it->magic != MPQ_ITER_MAGIC)
		return -EINVAL;
	j = it->job;
	if (it->pos >= j->n)
		return 0;
	if (j->kind == POOL_JOB_UNORDERED) {
		ret = job_sleep(j, pred_count, it->pos, timeout_ns);
		if (ret)
			return ret;
		i = j->order[it->pos];
	} else {
		ret = job_sleep(j, pred_item, it->pos, timeout_ns);
		if (ret)
			return ret;
		i = it->pos;
	}
	it->pos++;
	if (index)
		*index = i;
	ret = j->items[i].status;
	if (value)
		*value = ret == POOL_ITEM_OK ? j->items[i].data : NULL;
	if (len)
		*len = ret == POOL_ITEM_OK ? j->items[i].len : 0;
	return ret == POOL_ITEM_OK ? 1 : ret;
}

MPQ_EXPORT void mpq_pool_iter_free(struct mpq_pool_iter *it)
{
	if (!it || it->magic != MPQ_ITER_MAGIC)
		return;
	it->magic = 0;
	pool_job_put(it->job);
	free(it);
}
