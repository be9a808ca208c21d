// SPDX-License-Identifier: MIT
/*
 * The pool's worker process: how it starts (forked, from a copy of the
 * pool, or spawned, from handles in its argument), and its loop.
 *
 * A worker runs the initializer, faults in its side of the pipe and
 * staging page, says READY, then takes task messages from its pipe in
 * order. For each item it notes in the staging page which one it starts
 * (a store before the call: if it dies in the task, the pool knows whom
 * to blame), runs the task and records its value or error (pool_task.c).
 * The records go out when the task message is done, or earlier when the
 * page is full: one message per batch of items. It exits on EXIT, when the
 * pool's end of the pipe is gone, or after maxtasksperchild chunks.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pool.h"
#include "probes.h"

#define POOL_BOOT_MAGIC		"MPQPOOL1"

/* ---- running items ---------------------------------------------------- */

/* A task in the probes: its task message's number, then its place in it. */
static inline uint64_t pool_task_id(const struct pool_wctx *w, uint32_t pos)
{
	return w->seq << 32 | pos;
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
		mpq_probe_pool_task_start(w->pool_id, pool_task_id(w, pos));
		ret = fn(arg, len, t);
		mpq_probe_pool_task_end(w->pool_id, pool_task_id(w, pos), ret);
	}
	return pool_task_finish(w, t, ret);
}

/*
 * A segment through the task's loop (mpq_register_task_loop()): as many
 * values at a time as the staging page holds, written by the loop into
 * the open run, whose count it raises after each. Not while a tracer
 * counts tasks: the loop fires no probe per item.
 */
static int worker_run_loop(struct pool_wctx *w, mpq_task_loop_fn loop,
			   size_t out_size, const unsigned char *args,
			   const struct pool_seg_hdr *s, uint32_t *pos)
{
	struct pool_staging *st = w->st;
	size_t size = s->arg_size;
	uint32_t i = 0, p = *pos, room;

	while (i < s->count) {
		unsigned char *at = pool_run_room(w, (uint32_t)out_size,
						  s->count - i, &room);
		struct pool_run_hdr *h;

		if (!at)
			return -EPIPE;
		h = (struct pool_run_hdr *)(w->recs + w->run_off);
		st->loop_first = p;
		st->loop_count0 = w->run_count;
		st->loop_run_off = w->run_off;
		st->loop_n = room;
		/* After them: a death from here on is read from the count. */
		store_release(&st->running, POOL_RUNNING_LOOP);
		loop(args, size, at, room, &h->count);
		pool_run_commit_n(w, room);
		store_release(&st->running, p + room - 1);
		i += room;
		p += room;
		args += (size_t)room * size;
	}
	*pos = p;
	return 0;
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
	size_t size = s->arg_size, out_size;
	uint32_t i, p = *pos;
	mpq_task_loop_fn loop;
	int ret;

	if (s->count > 1 && !MPQ_PROBE_ON(pool_task_start) &&
	    !MPQ_PROBE_ON(pool_task_end)) {
		loop = pool_task_loop(fn, size, &out_size);
		if (loop)
			return worker_run_loop(w, loop, out_size, args, s, pos);
	}
	for (i = 0; i < s->count; i++, args += size, p++) {
		t->has_value = 0;
		t->in_run = 0;
		t->err_set = 0;
		store_release(running, p);
		mpq_probe_pool_task_start(w->pool_id, pool_task_id(w, p));
		ret = fn(args, size, t);
		mpq_probe_pool_task_end(w->pool_id, pool_task_id(w, p), ret);
		if (likely(!ret && t->in_run)) {
			pool_run_commit(w);
			continue;
		}
		ret = pool_task_finish(w, t, ret);
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

/*
 * The next n bytes (padded to 8) of the message, or NULL past its end:
 * the pool wrote it, but a message that does not add up is refused rather
 * than followed.
 */
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

/*
 * Run one segment: its function (by address, or by the pool's index of
 * names), then each argument, fixed-size, inline or in a memfd.
 */
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

/* Run a task message; its results go out as they fill the staging page. */
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
	w->run_off = POOL_RUN_NONE;
	w->since = mpq_now_ns();
	store_release(&st->msg_seq, h->seq);
	for (i = 0; i < h->nseg; i++) {
		ret = worker_segment(w, &r, &pos, &flags);
		if (ret)
			return ret;
		if (flags & POOL_SEG_CHUNK_END)
			w->done++;
	}
	return w->nitems ? pool_worker_flush(w) : 0;
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

/* READY: the initializer's return, which the pool reports if it failed. */
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

	/* The pool tells an initializer that crashed from a worker killed. */
	if (init) {
		store_release(&w->st->init, POOL_INIT_RUNNING);
		status = pool_task_code(init(initarg, initarg_len));
	}
	store_release(&w->st->init, POOL_INIT_DONE);
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

/* ---- how a worker starts ----------------------------------------------- */

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
	w->run_off = POOL_RUN_NONE;
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

/* The target of a forked worker: arg names the pool's copy and the slot. */
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
	w.pool_id = p->id;
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
	uint64_t pool_id;
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
		.pool_id = p->id,
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

/*
 * The mask the pool's maker had: a spawned worker inherits the mask of
 * the thread that started it, and the handler blocks every signal.
 */
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
	w.pool_id = b.pool_id;
	w.spawn = 1;
	/*
	 * Registered in the pool's process but not here (after mpq_init()):
	 * the initializer's failure, said so, not a worker that just exits.
	 */
	if (b.init_len) {
		init = mpq_target_by(init_name);
		if (!init) {
			worker_ready(&w, -ENOENT);
			return 1;
		}
	}
	return worker_loop(&w, init, a + sizeof(b) + b.handle_len + b.init_len,
			   b.initarg_len);
}

/* Spawned workers find their entry point by this name. */
static void __attribute__((constructor(101))) pool_worker_register(void)
{
	mpq_register_target(POOL_WORKER_TARGET, pool_worker_spawn);
}
