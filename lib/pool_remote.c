// SPDX-License-Identifier: MIT
/*
 * A pool made with a manager (mpq_pool_attr.remote): the same jobs,
 * AsyncResults and iterators as a local pool, but its work goes out
 * through libmpq-net (net/pool/), which libmpq does not link: that
 * library installs its operations here (pool_remote.h) from a
 * constructor, and a pool made with a manager before it did gets
 * -EPROTONOSUPPORT.
 *
 * The pool's thread runs remote_main() instead of the io_uring handler:
 * it takes what callers submit, hands every chunk out at once (the
 * manager holds them, leased, until a worker has run them), and applies
 * the results that come back. Results are keyed by job and item, and an
 * item already done is not done again, so a task run twice (its worker
 * died after sending) is applied once.
 *
 * Also here, for libmpq-net's workers: running one task the way a local
 * worker does (the same mpq_task code, pool_task.c, into a private
 * staging page), so that mpq_task_return() and friends need no second
 * implementation.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pool.h"
#include "pool_remote.h"

static const struct mpq__pool_remote_ops *remote_ops;

/* ---- a remote worker's task runs ------------------------------------- */

struct mpq__pool_runner {
	struct pool_wctx w;
	int peer;		/* the other end of w.sock: large values */
	void *map;		/* the last large value, mapped */
	size_t map_len;
};

static struct mpq__pool_runner *runner_new(void)
{
	struct mpq__pool_runner *r = calloc(1, sizeof(*r));
	int sv[2];

	if (!r)
		return NULL;
	r->w.st = mmap(NULL, POOL_STAGING_SIZE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (r->w.st == MAP_FAILED) {
		free(r);
		return NULL;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		munmap(r->w.st, POOL_STAGING_SIZE);
		free(r);
		return NULL;
	}
	r->w.sock = sv[0];
	r->peer = sv[1];
	r->w.recs = (unsigned char *)(&r->w.st->msg + 1);
	r->w.run_off = POOL_RUN_NONE;
	r->w.task.w = &r->w;
	r->w.task.fd = -1;
	return r;
}

static void runner_free(struct mpq__pool_runner *r)
{
	if (!r)
		return;
	if (r->map)
		munmap(r->map, r->map_len);
	close(r->w.sock);
	close(r->peer);
	munmap(r->w.st, POOL_STAGING_SIZE);
	free(r);
}

static void out_error(struct mpq__pool_out *out, int code, const char *msg)
{
	out->status = code;
	out->data = msg;
	out->len = strlen(msg);
}

/* Run fn on arg; out gets its one record, as the pool would read it. */
static void runner_run(struct mpq__pool_runner *r, mpq_task_fn fn,
		       const void *arg, size_t len, struct mpq__pool_out *out)
{
	struct pool_wctx *w = &r->w;
	struct mpq_task *t = &w->task;
	const struct pool_rec_hdr *rec;
	uint64_t size;
	int ret, fd;

	if (r->map) {
		munmap(r->map, r->map_len);
		r->map = NULL;
	}
	w->st->used = 0;
	w->run_off = POOL_RUN_NONE;
	w->nitems = 0;
	t->has_value = 0;
	t->in_run = 0;
	t->err_set = 0;
	ret = fn(arg, len, t);
	ret = pool_task_finish(w, t, ret);
	if (ret || w->st->used < sizeof(*rec)) {
		out_error(out, ret ? ret : -EIO,
			  "the worker could not record the task's result");
		return;
	}
	rec = (const struct pool_rec_hdr *)w->recs;
	if (rec->status == POOL_REC_RUN) {
		const struct pool_run_hdr *h = (const void *)rec;

		out->status = 0;
		out->data = h + 1;
		out->len = h->size;
	} else if (rec->status == POOL_REC_FD) {
		memcpy(&size, rec + 1, sizeof(size));
		fd = pool_recv_fd(r->peer, MSG_DONTWAIT);
		if (fd < 0) {
			out_error(out, fd, "a large value was lost");
			return;
		}
		r->map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
		close(fd);
		if (r->map == MAP_FAILED) {
			r->map = NULL;
			out_error(out, -ENOMEM, "a large value could not be mapped");
			return;
		}
		r->map_len = size;
		out->status = 0;
		out->data = r->map;
		out->len = size;
	} else {
		out->status = rec->status;
		out->data = rec + 1;
		out->len = rec->len;
	}
}

static const struct mpq__pool_lib pool_lib = {
	.task_by_name = pool_task_by_name,
	.table_hash = pool_task_table_hash,
	.runner_new = runner_new,
	.run = runner_run,
	.runner_free = runner_free,
	.target_by_name = mpq_target_by,
};

MPQ_EXPORT const struct mpq__pool_lib *
mpq__pool_remote_install(const struct mpq__pool_remote_ops *ops)
{
	__atomic_store_n(&remote_ops, ops, __ATOMIC_RELEASE);
	return &pool_lib;
}

/*
 * From mpq_init(): --mpq-worker=ADDRESS (taken out of argv) or
 * MPQ_WORKER=ADDRESS makes this process a remote worker, which never
 * returns. Without libmpq-net linked it cannot be one: exit 127.
 */
void pool_remote_worker_check(int *argc, char ***argv)
{
	static const char opt[] = "--mpq-worker=";
	const struct mpq__pool_remote_ops *ops;
	const char *addr = NULL;
	int i, k;

	if (argc && argv && *argv) {
		for (i = 1; i < *argc; i++) {
			if (!(*argv)[i] ||
			    strncmp((*argv)[i], opt, sizeof(opt) - 1))
				continue;
			addr = (*argv)[i] + sizeof(opt) - 1;
			for (k = i; k < *argc; k++)
				(*argv)[k] = (*argv)[k + 1];
			(*argc)--;
			break;
		}
	}
	if (!addr)
		addr = getenv("MPQ_WORKER");
	if (!addr)
		return;
	ops = __atomic_load_n(&remote_ops, __ATOMIC_ACQUIRE);
	if (!ops) {
		fprintf(stderr, "mpq: asked to be a pool worker (%s), but the "
			"program does not link libmpq-net\n", addr);
		_exit(127);
	}
	ops->worker_main(addr);
	_exit(127);
}

/* ---- the pool's side ---------------------------------------------------- */

#define RTAB_SIZE	4096U	/* buckets of the job table (a power of 2) */
#define ARENA_SIZE	(64U << 10)

static const char remote_cancelled[] = "the pool was terminated";

int pool_remote_open(struct mpq_pool *p, const struct mpq_pool_attr *a)
{
	const struct mpq_pool_remote *cfg = a->remote;
	struct mpq__pool_init init = {
		.arg = p->initarg, .len = p->initarg_len,
		.maxtasks = p->maxtasks,
	};
	char name[256];
	uint32_t ntasks;
	uint64_t table;
	int ret;

	p->rops = __atomic_load_n(&remote_ops, __ATOMIC_ACQUIRE);
	if (!p->rops)
		return -EPROTONOSUPPORT;
	if (!cfg->manager || cfg->flags & ~(uint32_t)MPQ_POOL_REMOTE_ONLY ||
	    cfg->lease_ns < 0 ||
	    !mpq_all_zero(cfg->__reserved, sizeof(cfg->__reserved)))
		return -EINVAL;
	/* Tasks travel by name, as to spawned workers; so does the
	 * initializer (MPQ_TARGET), run by each worker when it joins. */
	p->method = MPQ_START_SPAWN;
	if (p->init) {
		ret = mpq_target_name_of(p->init, name, sizeof(name));
		if (ret)
			return ret;
		init.name = name;
	}
	p->rtab = calloc(RTAB_SIZE, sizeof(*p->rtab));
	if (!p->rtab)
		return -ENOMEM;
	table = pool_task_table_hash(&ntasks);
	return p->rops->open(cfg, cfg->flags & MPQ_POOL_REMOTE_ONLY ? 0 :
			     p->nproc, table, ntasks, &init, p->bell,
			     &p->rctx);
}

static struct mpq_async_result **rtab_slot(struct mpq_pool *p, uint64_t id)
{
	return &p->rtab[(id * 0x9e3779b97f4a7c15ULL) >> 52 & (RTAB_SIZE - 1)];
}

static struct mpq_async_result *rtab_find(struct mpq_pool *p, uint64_t id)
{
	struct mpq_async_result *j = *rtab_slot(p, id);

	while (j && j->rid != id)
		j = j->rnext;
	return j;
}

static void rtab_remove(struct mpq_pool *p, struct mpq_async_result *j)
{
	struct mpq_async_result **pp = rtab_slot(p, j->rid);

	while (*pp && *pp != j)
		pp = &(*pp)->rnext;
	if (*pp)
		*pp = j->rnext;
}

static void remote_finish(struct mpq_pool *p, struct mpq_async_result *j)
{
	if (j->complete || j->ndone != j->n)
		return;
	rtab_remove(p, j);
	pool_job_finish(p, j);
}

/* Item i's argument (starmap's packed into *tmp, grown as needed). */
static int item_arg(struct mpq_async_result *j, size_t i, struct iovec *v,
		    unsigned char **tmp, size_t *tmp_len, size_t *tmp_used)
{
	const struct iovec *av;
	ssize_t need;

	switch (j->args_kind) {
	case POOL_ARGS_COPY:
		v->iov_base = j->arg;
		v->iov_len = j->arg_len;
		return 0;
	case POOL_ARGS_IOV:
		*v = j->iov[i];
		return 0;
	case POOL_ARGS_FIXED:
		v->iov_base = (void *)(j->base + i * j->arg_size);
		v->iov_len = j->arg_size;
		return 0;
	default:
		av = j->iov + i * j->argc;
		need = mpq_args_pack(NULL, 0, av, j->argc);
		if (need < 0)
			return (int)need;
		/* Offsets, not pointers: the buffer may move as it grows. */
		while (*tmp_used + (size_t)need > *tmp_len) {
			size_t n = *tmp_len ? 2 * *tmp_len : 4096;
			unsigned char *g = realloc(*tmp, n);

			if (!g)
				return -ENOMEM;
			*tmp = g;
			*tmp_len = n;
		}
		mpq_args_pack(*tmp + *tmp_used, (size_t)need, av, j->argc);
		v->iov_base = (void *)(uintptr_t)*tmp_used;
		v->iov_len = (size_t)need;
		*tmp_used += (size_t)need;
		return 1;
	}
}

static void fail_range(struct mpq_async_result *j, size_t first, size_t n,
		       int code, const char *why)
{
	size_t i;

	for (i = first; i < first + n; i++)
		pool_job_fail(j, i, code, why, strlen(why));
}

/* Hand out every chunk of j; a chunk the manager refused fails. */
static void remote_send_job(struct mpq_pool *p, struct mpq_async_result *j)
{
	unsigned char *tmp = NULL;
	struct iovec *v = NULL;
	size_t first, count, cs = j->chunksize ? j->chunksize : 1;
	size_t tmp_len = 0, used, i;
	char why[160];
	int ret, packed;

	v = malloc((cs < j->n ? cs : j->n) * sizeof(*v));
	for (first = 0; first < j->n; first += count) {
		count = j->n - first < cs ? j->n - first : cs;
		ret = v ? 0 : -ENOMEM;
		used = 0;
		packed = 0;
		for (i = 0; !ret && i < count; i++) {
			ret = item_arg(j, first + i, &v[i], &tmp, &tmp_len,
				       &used);
			packed |= ret == 1;
			ret = ret < 0 ? ret : 0;
		}
		for (i = 0; !ret && packed && i < count; i++)
			v[i].iov_base = tmp + (uintptr_t)v[i].iov_base;
		if (!ret)
			ret = p->rops->send(p->rctx, j->rid, first,
					    (uint32_t)count, j->fn_name, v);
		if (ret) {
			snprintf(why, sizeof(why), "the manager did not take "
				 "the task: %s", mpq_strerror(ret));
			fail_range(j, first, count, ret, why);
		}
	}
	free(v);
	free(tmp);
	j->next = j->n;
	pool_job_notify(j);
	remote_finish(p, j);
}

/* Take what callers submitted and hand it out; returns the state. */
static int remote_take(struct mpq_pool *p)
{
	struct mpq_async_result *j, *next, **slot;
	int state;

	for (j = pool_take_submitted(p, &state); j; j = next) {
		next = j->qnext;
		j->rid = ++p->rseq;
		slot = rtab_slot(p, j->rid);
		j->rnext = *slot;
		*slot = j;
		pool_active_add(p, j);
		remote_send_job(p, j);
	}
	return state;
}

/* A copy of a value the job keeps: bump-allocated from its arenas. */
static const void *job_copy(struct mpq_async_result *j, const void *data,
			    size_t len)
{
	size_t need = pool_align8(len ? len : 1);
	unsigned char *a;

	if (need > ARENA_SIZE / 4) {
		a = malloc(need);
		if (!a || pool_job_own(j, POOL_OWN_STR, a, 0)) {
			free(a);
			return NULL;
		}
		memcpy(a, data, len);
		return a;
	}
	if (need > j->rleft) {
		a = malloc(ARENA_SIZE);
		if (!a || pool_job_own(j, POOL_OWN_STR, a, 0)) {
			free(a);
			return NULL;
		}
		j->rarena = a;
		j->rleft = ARENA_SIZE;
	}
	a = j->rarena;
	j->rarena += need;
	j->rleft -= need;
	if (len)
		memcpy(a, data, len);
	return a;
}

static void remote_sink(void *arg, uint64_t job, uint64_t index, int status,
			const void *data, size_t len)
{
	struct mpq_pool *p = arg;
	struct mpq_async_result *j = rtab_find(p, job);
	const void *copy;

	if (!j || index >= j->n || j->done[index / 64] & 1ULL << (index % 64))
		return;		/* done already: a task run twice */
	if (status < 0) {
		pool_job_fail(j, index, status, data, len);
	} else if (j->kind == POOL_JOB_VALUES) {
		pool_job_value(j, index, data, len);
	} else {
		copy = job_copy(j, data, len);
		if (copy)
			pool_job_value(j, index, copy, len);
		else
			pool_job_fail(j, index, -ENOMEM, NULL, 0);
	}
	/*
	 * Only an imap's reader waits for single items; the others wait for
	 * the whole job, which pool_job_complete announces. A wake-up per
	 * item would have a map's caller woken 20,000 times for nothing.
	 */
	if (j->kind >= POOL_JOB_IMAP)
		pool_job_notify(j);
	remote_finish(p, j);
}

/* Sleep in collect unless callers handed in work or changed the state. */
static void remote_wait(struct mpq_pool *p, int state)
{
	pthread_mutex_lock(&p->lock);
	if (p->in_head || p->state != state) {
		pthread_mutex_unlock(&p->lock);
		return;
	}
	__atomic_store_n(&p->sleeping, 1, __ATOMIC_SEQ_CST);
	pthread_mutex_unlock(&p->lock);
	p->rops->collect(p->rctx, remote_sink, p);
	__atomic_store_n(&p->sleeping, 0, __ATOMIC_SEQ_CST);
}

void *pool_remote_main(void *arg)
{
	struct mpq_pool *p = arg;
	struct mpq_async_result *j;
	int state;

	for (;;) {
		state = remote_take(p);
		if (state == POOL_TERMINATE)
			break;
		if (state == POOL_CLOSE && !p->active)
			break;
		remote_wait(p, state);
	}
	while ((j = p->active)) {
		pool_job_cancel(j, -ECANCELED, remote_cancelled);
		remote_finish(p, j);
	}
	p->rops->close(p->rctx);
	p->rctx = NULL;
	store_release(&p->finished, 1);
	mpq_futex_wake(&p->finished, INT32_MAX);
	return NULL;
}

void pool_remote_free(struct mpq_pool *p)
{
	if (p->rctx && p->rops)
		p->rops->close(p->rctx);
	p->rctx = NULL;
	free(p->rtab);
	p->rtab = NULL;
}
