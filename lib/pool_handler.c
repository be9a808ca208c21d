// SPDX-License-Identifier: MIT
/*
 * The pool's handler thread: Python's three pool threads (worker, task
 * and result handler) as one io_uring loop. It polls each worker's pipe
 * end (results), each worker's pidfd (death) and the pool's eventfd (new
 * work, close, terminate); between sleeps it hands out work, takes
 * results, completes jobs (running their callbacks), and replaces workers.
 *
 * Handing out. Work is cut into chunks (chunksize items of one job, as in
 * Python), and a chunk goes to one worker, in one or more messages of at
 * most POOL_MSG_MAX bytes. A message carries as many chunks as fit, within
 * about POOL_MSG_NS of estimated work (per function, from the time the
 * workers report); a worker is given more while it holds less than
 * POOL_TARGET_NS of work, a few messages and half its ring. So trivial
 * tasks go out thousands to a message, long ones one chunk at a time, and
 * a send never waits for room.
 *
 * A death. The pidfd wakes us at once. What the dead worker sent before
 * is read from its pipe; its staging page gives the records it finished
 * since, and which item was running: that one fails with -EOWNERDEAD (or
 * is handed out once more, with MPQ_POOL_RETRY_ONCE); every other item it
 * held goes back to the front of the queue; a new worker takes the slot.
 */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pool.h"

/* Messages in flight to one worker, and the bytes they may hold. */
#define POOL_MSGS_MAX		4
#define POOL_INFLIGHT_BYTES	(POOL_RING - 2 * POOL_MSG_MAX)
/* Estimated work queued at one worker, and in one message. */
#define POOL_TARGET_NS		2000000
#define POOL_MSG_NS		1000000
/* Memfd arguments in one message. */
#define POOL_FDS_MAX		16
/* A worker that cannot start is tried again after this. */
#define POOL_RESTART_NS		100000000LL
/* terminate: SIGTERM, then SIGKILL after this. */
#define POOL_KILL_NS		1000000000LL
/* Reaping a worker whose sentinel said it ended. */
#define POOL_REAP_NS		1000000000LL

_Static_assert(sizeof(struct pool_tasks_hdr) == 16, "wire layout");
_Static_assert(sizeof(struct pool_seg_hdr) == 24, "wire layout");
_Static_assert(sizeof(struct pool_arg_hdr) == 8, "wire layout");
_Static_assert(sizeof(struct pool_results_hdr) == 32, "wire layout");
_Static_assert(sizeof(struct pool_rec_hdr) == 8, "wire layout");
_Static_assert(sizeof(struct pool_run_hdr) == 16, "wire layout");
_Static_assert(offsetof(struct pool_staging, msg) == 64, "staging layout");

/* io_uring user_data: what completed, for which slot and incarnation. */
enum { EV_IGNORE, EV_BELL, EV_CONN, EV_PID };

static uint64_t ev_data(int kind, unsigned int slot, uint32_t gen)
{
	return (uint64_t)kind << 56 | (uint64_t)slot << 32 | gen;
}

static const char pool_cancelled[] = "the pool was terminated";

/* ---- io_uring --------------------------------------------------------- */

static struct io_uring_sqe *handler_sqe(struct mpq_pool *p)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&p->ring);

	if (!sqe) {
		/* Full: send what is queued, which frees every entry. */
		io_uring_submit(&p->ring);
		sqe = io_uring_get_sqe(&p->ring);
	}
	return sqe;
}

static void arm_poll(struct mpq_pool *p, int fd, uint64_t data)
{
	struct io_uring_sqe *sqe = handler_sqe(p);

	if (!sqe)
		return;
	io_uring_prep_poll_add(sqe, fd, POLLIN);
	io_uring_sqe_set_data64(sqe, data);
}

static void cancel_poll(struct mpq_pool *p, uint64_t data)
{
	struct io_uring_sqe *sqe = handler_sqe(p);

	if (!sqe)
		return;
	io_uring_prep_poll_remove(sqe, data);
	io_uring_sqe_set_data64(sqe, ev_data(EV_IGNORE, 0, 0));
}

static void arm_conn(struct mpq_pool *p, unsigned int slot)
{
	struct pool_worker *w = &p->w[slot];

	arm_poll(p, w->connfd, ev_data(EV_CONN, slot, w->gen));
	w->conn_armed = 1;
}

static void arm_worker(struct mpq_pool *p, unsigned int slot)
{
	struct pool_worker *w = &p->w[slot];

	arm_conn(p, slot);
	if (w->pidfd >= 0) {
		arm_poll(p, w->pidfd, ev_data(EV_PID, slot, w->gen));
		w->pid_armed = 1;
	}
}

/* ---- lists ------------------------------------------------------------- */

static void active_add(struct mpq_pool *p, struct mpq_async_result *j)
{
	j->aprev = NULL;
	j->anext = p->active;
	if (p->active)
		p->active->aprev = j;
	p->active = j;
}

static void active_remove(struct mpq_pool *p, struct mpq_async_result *j)
{
	if (j->aprev)
		j->aprev->anext = j->anext;
	else
		p->active = j->anext;
	if (j->anext)
		j->anext->aprev = j->aprev;
}

/* Every item has its value or error: callbacks, ready, and it leaves us. */
static void job_finish(struct mpq_pool *p, struct mpq_async_result *j)
{
	if (j->complete || j->ndone != j->n)
		return;
	active_remove(p, j);
	pool_job_complete(j);
}

static void queue_add(struct mpq_pool *p, struct mpq_async_result *j)
{
	j->qnext = NULL;
	if (p->q_tail)
		p->q_tail->qnext = j;
	else
		p->q_head = j;
	p->q_tail = j;
}

/* Take what callers submitted; returns the pool's state. */
static int take_incoming(struct mpq_pool *p)
{
	struct mpq_async_result *j, *next;
	int state;

	pthread_mutex_lock(&p->lock);
	j = p->in_head;
	p->in_head = p->in_tail = NULL;
	state = p->state;
	pthread_mutex_unlock(&p->lock);
	for (; j; j = next) {
		next = j->qnext;
		active_add(p, j);
		if (j->n)
			queue_add(p, j);
		else
			job_finish(p, j);	/* an empty map is done at once */
	}
	return state;
}

/* Segments to hand out before anything else, in the order given. */
static void requeue_front(struct mpq_pool *p, struct pool_requeue *head,
			  struct pool_requeue *tail)
{
	if (!head)
		return;
	tail->next = p->rq_head;
	p->rq_head = head;
	if (!p->rq_tail)
		p->rq_tail = tail;
}

/* ---- estimates ---------------------------------------------------------- */

static uint64_t est_get(struct mpq_pool *p, uintptr_t fn)
{
	unsigned int s = (unsigned int)((fn >> 4) % POOL_EST_SLOTS);

	return p->est[s].fn == fn ? p->est[s].ns : 0;
}

static void est_put(struct mpq_pool *p, uintptr_t fn, uint64_t sample)
{
	unsigned int s = (unsigned int)((fn >> 4) % POOL_EST_SLOTS);

	if (!sample)
		sample = 1;
	if (p->est[s].fn != fn) {
		p->est[s].fn = fn;
		p->est[s].ns = sample;
	} else {
		p->est[s].ns = (3 * p->est[s].ns + sample) / 4 ?: 1;
	}
}

/* ---- handing out work ---------------------------------------------------- */

/* The bytes of item i's argument as the task sees them. */
static size_t arg_len(const struct mpq_async_result *j, size_t i)
{
	const struct iovec *v;
	size_t len = 0;
	unsigned int k;

	switch (j->args_kind) {
	case POOL_ARGS_COPY:
		return j->arg_len;
	case POOL_ARGS_FIXED:
		return j->arg_size;
	case POOL_ARGS_IOV:
		return j->iov[i].iov_len;
	default:
		v = j->iov + i * j->argc;
		for (k = 0; k < j->argc; k++)
			len += 8 + pool_align8(v[k].iov_len);
		return len;
	}
}

static void arg_write(const struct mpq_async_result *j, size_t i, void *dst,
		      size_t len)
{
	switch (j->args_kind) {
	case POOL_ARGS_COPY:
		memcpy(dst, j->arg, len);
		break;
	case POOL_ARGS_FIXED:
		if (len)
			memcpy(dst, j->base + i * j->arg_size, len);
		break;
	case POOL_ARGS_IOV:
		if (len)
			memcpy(dst, j->iov[i].iov_base, len);
		break;
	default:
		mpq_args_pack(dst, len, j->iov + i * j->argc, j->argc);
	}
}

/* A large argument in a sealed memfd (zero-copy on the worker's side). */
static int arg_memfd(const struct mpq_async_result *j, size_t i, size_t len)
{
	void *map;
	int fd, ret;

	fd = memfd_create("mpq-pool-arg", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)len) < 0)
		goto fail;
	map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		goto fail;
	arg_write(j, i, map, len);
	munmap(map, len);
	fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE |
	      F_SEAL_SEAL);
	return fd;
fail:
	ret = -errno;
	close(fd);
	return ret;
}

/* A message being built for one worker. */
struct pool_builder {
	unsigned char *buf;
	size_t off;
	struct pool_msg *m;
	uint32_t seg_cap;
	int fds[POOL_FDS_MAX];
	int nfds;
	uint64_t est;
	int unknown;		/* a chunk of unknown cost is in it */
	int chunks;		/* chunks taken into it */
};

static int builder_seg(struct pool_builder *b)
{
	struct pool_msg *m;

	if (b->m->nseg < b->seg_cap)
		return 0;
	m = realloc(b->m, sizeof(*m) + 2 * b->seg_cap * sizeof(m->seg[0]));
	if (!m)
		return -ENOMEM;
	b->m = m;
	b->seg_cap *= 2;
	return 0;
}

static uintptr_t job_fn(const struct mpq_async_result *j)
{
	return (uintptr_t)j->fn;
}

/*
 * Give w its next chunk (from the requeued segments, else the queue),
 * unless the message has enough work already. Returns 1 if it took one.
 */
static int take_chunk(struct mpq_pool *p, struct pool_worker *w,
		      struct pool_builder *b)
{
	struct mpq_async_result *j;
	size_t first, count;
	uint32_t flags = POOL_SEG_CHUNK_END;
	uint64_t per, est;

	if (p->maxtasks && w->chunks_given >= p->maxtasks)
		return 0;
	if (p->rq_head) {
		j = p->rq_head->seg.job;
		first = p->rq_head->seg.first;
		count = p->rq_head->seg.count;
		flags |= p->rq_head->seg.flags & POOL_SEG_RETRY;
	} else if (p->q_head) {
		j = p->q_head;
		first = j->next;
		count = j->n - j->next < j->chunksize ? j->n - j->next :
			j->chunksize;
	} else {
		return 0;
	}
	per = est_get(p, job_fn(j));
	est = per * count;
	if (b->m->nitems) {
		if (!per || b->unknown || b->est + est > POOL_MSG_NS ||
		    w->inflight_ns + b->est + est > POOL_TARGET_NS)
			return 0;
	}
	if (p->rq_head) {
		struct pool_requeue *r = p->rq_head;

		p->rq_head = r->next;
		if (!p->rq_head)
			p->rq_tail = NULL;
		free(r);
	} else {
		j->next += count;
		if (j->next == j->n) {
			p->q_head = j->qnext;
			if (!p->q_head)
				p->q_tail = NULL;
		}
	}
	w->cont_job = j;
	w->cont_next = first;
	w->cont_end = first + count;
	w->cont_flags = flags;
	w->chunks_given++;
	w->inflight_chunks++;
	b->est += est;
	b->unknown |= !per;
	b->chunks++;
	return 1;
}

/* The segment header, and the name if this worker has not seen it. */
static int begin_seg(struct pool_worker *w, struct pool_builder *b,
		     struct mpq_async_result *j, struct pool_seg_hdr **hp)
{
	size_t need = sizeof(struct pool_seg_hdr), nlen = 0;
	struct pool_seg_hdr *h;
	int name = 0;

	if (j->spawn && (j->fn_wire >= w->nknown || !w->known[j->fn_wire])) {
		nlen = strlen(j->fn_name);
		need += pool_align8(nlen);
		name = 1;
	}
	if (b->off + need + 16 > POOL_MSG_MAX)
		return 0;
	if (name && j->fn_wire >= w->nknown) {
		unsigned char *k = realloc(w->known, j->fn_wire + 1);

		if (!k)
			return -ENOMEM;
		memset(k + w->nknown, 0, j->fn_wire + 1 - w->nknown);
		w->known = k;
		w->nknown = j->fn_wire + 1;
	}
	h = (struct pool_seg_hdr *)(b->buf + b->off);
	memset(h, 0, sizeof(*h));
	h->fn = j->fn_wire;
	if (name) {
		h->flags = POOL_SEG_NAME;
		h->name_len = (uint32_t)nlen;
		pool_pad(b->buf + b->off + sizeof(*h), nlen);
		memcpy(b->buf + b->off + sizeof(*h), j->fn_name, nlen);
		w->known[j->fn_wire] = 1;
	}
	b->off += need;
	*hp = h;
	return 1;
}

/* Fixed-size arguments: one copy of as many as fit. */
static size_t add_fixed(struct pool_worker *w, struct pool_builder *b,
			struct pool_seg_hdr *h)
{
	struct mpq_async_result *j = w->cont_job;
	size_t room = POOL_MSG_MAX - b->off, n = w->cont_end - w->cont_next;

	if (j->arg_size && n > room / j->arg_size)
		n = room / j->arg_size;
	while (n && pool_align8(n * j->arg_size) > room)
		n--;
	if (n > UINT32_MAX / 2)
		n = UINT32_MAX / 2;
	h->flags |= POOL_SEG_FIXED;
	h->arg_size = (uint32_t)j->arg_size;
	if (n && j->arg_size)
		memcpy(b->buf + b->off, j->base + w->cont_next * j->arg_size,
		       n * j->arg_size);
	memset(b->buf + b->off + n * j->arg_size, 0,
	       pool_align8(n * j->arg_size) - n * j->arg_size);
	b->off += pool_align8(n * j->arg_size);
	return n;
}

/* One argument of its own size: inline, or in a memfd when large. */
static int add_one(struct pool_builder *b, struct mpq_async_result *j,
		   size_t i)
{
	size_t len = arg_len(j, i), need;
	struct pool_arg_hdr *a;
	uint64_t size = len;
	int fd;

	need = sizeof(*a) + (len > POOL_INLINE_MAX ? 8 : pool_align8(len));
	if (b->off + need > POOL_MSG_MAX)
		return 0;
	a = (struct pool_arg_hdr *)(b->buf + b->off);
	if (len > POOL_INLINE_MAX) {
		if (b->nfds == POOL_FDS_MAX)
			return 0;
		fd = arg_memfd(j, i, len);
		if (fd < 0)
			return fd;
		b->fds[b->nfds++] = fd;
		a->len = 8;
		a->flags = POOL_ARG_FD;
		memcpy(a + 1, &size, sizeof(size));
	} else {
		a->len = (uint32_t)len;
		a->flags = 0;
		pool_pad(a + 1, len);
		arg_write(j, i, a + 1, len);
	}
	b->off += need;
	return 1;
}

/*
 * Put items of w's current chunk into the message: a segment of as many
 * as fit. Returns how many, or -errno.
 */
static int add_items(struct pool_worker *w, struct pool_builder *b)
{
	struct mpq_async_result *j = w->cont_job;
	struct pool_seg_hdr *h;
	struct pool_seg *s;
	size_t n = 0;
	int ret;

	ret = builder_seg(b);
	if (!ret)
		ret = begin_seg(w, b, j, &h);
	if (ret <= 0)
		return ret;
	if (j->args_kind == POOL_ARGS_FIXED && j->arg_size <= POOL_INLINE_MAX) {
		n = add_fixed(w, b, h);
	} else {
		while (w->cont_next + n < w->cont_end) {
			ret = add_one(b, j, w->cont_next + n);
			if (ret < 0)
				return ret;
			if (!ret)
				break;
			n++;
		}
	}
	if (!n) {
		b->off = (unsigned char *)h - b->buf;	/* nothing fit: undo */
		return 0;
	}
	h->count = (uint32_t)n;
	s = &b->m->seg[b->m->nseg++];
	s->job = j;
	s->first = w->cont_next;
	s->count = (uint32_t)n;
	s->flags = w->cont_flags & POOL_SEG_RETRY;
	w->cont_next += n;
	if (w->cont_next == w->cont_end) {
		h->flags |= w->cont_flags & POOL_SEG_CHUNK_END;
		s->flags |= w->cont_flags & POOL_SEG_CHUNK_END;
		b->m->chunks += !!(w->cont_flags & POOL_SEG_CHUNK_END);
		w->cont_job = NULL;
	}
	b->m->nitems += (uint32_t)n;
	b->m->fn = b->m->nseg == 1 ? job_fn(j) :
		   b->m->fn == job_fn(j) ? b->m->fn : 0;
	return (int)n;
}

/* Put the segments of m (and w's unfinished chunk) back at the front. */
static void requeue_msg(struct mpq_pool *p, struct pool_worker *w,
			struct pool_msg *m, uint32_t from_seg,
			uint32_t from_off, struct pool_requeue **head,
			struct pool_requeue **tail)
{
	struct pool_requeue *r;
	uint32_t k;

	for (k = from_seg; m && k < m->nseg; k++) {
		struct pool_seg *s = &m->seg[k];
		uint32_t off = k == from_seg ? from_off : 0;

		if (!s->job || off >= s->count)
			continue;
		r = calloc(1, sizeof(*r));
		if (!r) {
			/* No memory to keep it: it fails rather than hangs. */
			uint32_t x;

			for (x = off; x < s->count; x++)
				pool_job_fail(s->job, s->first + x, -ENOMEM,
					      NULL, 0);
			continue;
		}
		r->seg.job = s->job;
		r->seg.first = s->first + off;
		r->seg.count = s->count - off;
		r->seg.flags = (s->flags & POOL_SEG_RETRY) | POOL_SEG_CHUNK_END;
		if (*tail)
			(*tail)->next = r;
		else
			*head = r;
		*tail = r;
	}
}

static void requeue_cont(struct pool_worker *w, struct pool_requeue **head,
			 struct pool_requeue **tail)
{
	struct pool_seg s = {
		.job = w->cont_job,
		.first = w->cont_next,
		.count = (uint32_t)(w->cont_end - w->cont_next),
		.flags = w->cont_flags,
	};
	struct pool_msg *m;

	if (!w->cont_job)
		return;
	w->cont_job = NULL;
	m = calloc(1, sizeof(*m) + sizeof(m->seg[0]));
	if (!m)
		return;
	m->nseg = 1;
	m->seg[0] = s;
	requeue_msg(NULL, w, m, 0, 0, head, tail);
	free(m);
}

static void worker_kill(struct pool_worker *w)
{
	if (w->proc)
		mpq_process_kill(w->proc);
	w->state = POOL_W_EXITING;
}

/* A message could not go out: its work goes back, the worker is ended. */
static void send_failed(struct mpq_pool *p, struct pool_worker *w,
			struct pool_builder *b)
{
	struct pool_requeue *head = NULL, *tail = NULL;

	requeue_msg(p, w, b->m, 0, 0, &head, &tail);
	requeue_cont(w, &head, &tail);
	requeue_front(p, head, tail);
	w->inflight_chunks -= (uint32_t)b->chunks;
	worker_kill(w);
}

static int send_built(struct mpq_pool *p, struct pool_worker *w,
		      struct pool_builder *b)
{
	struct pool_tasks_hdr *h = (struct pool_tasks_hdr *)b->buf;
	int i, ret = 0;

	h->type = POOL_MSG_TASKS;
	h->nseg = b->m->nseg;
	h->seq = b->m->seq = ++p->seq;
	/* The memfds first: the worker takes one per FD argument it reads. */
	for (i = 0; i < b->nfds; i++) {
		if (!ret)
			ret = pool_send_fd(w->sock, b->fds[i], MSG_DONTWAIT);
		close(b->fds[i]);
	}
	if (!ret)
		ret = mpq_conn_send_bytes(w->conn, b->buf, b->off, 0);
	if (ret)
		return ret;
	b->m->bytes = b->off;
	b->m->est_ns = b->unknown ? 0 : b->est;
	if (w->tail)
		w->tail->next = b->m;
	else
		w->head = b->m;
	w->tail = b->m;
	w->nmsgs++;
	w->inflight_bytes += b->off;
	w->inflight_ns += b->m->est_ns;
	return 0;
}

/* Build and send one message to w. Returns 1 if one went out. */
static int send_one(struct mpq_pool *p, struct pool_worker *w,
		    unsigned char *buf)
{
	struct pool_builder b = {
		.buf = buf,
		.off = sizeof(struct pool_tasks_hdr),
		.seg_cap = 8,
	};
	int ret = 0;

	b.m = calloc(1, sizeof(*b.m) + b.seg_cap * sizeof(b.m->seg[0]));
	if (!b.m)
		return 0;
	for (;;) {
		if (!w->cont_job && !take_chunk(p, w, &b))
			break;
		ret = add_items(w, &b);
		if (ret <= 0 || w->cont_job)
			break;
	}
	if (ret < 0 || !b.m->nitems) {
		if (ret < 0 || w->cont_job)
			send_failed(p, w, &b);
		else
			w->inflight_chunks -= (uint32_t)b.chunks;
		free(b.m);
		return 0;
	}
	ret = send_built(p, w, &b);
	if (ret) {
		send_failed(p, w, &b);
		free(b.m);
		return 0;
	}
	return 1;
}

static int can_take(struct mpq_pool *p, struct pool_worker *w)
{
	if (w->state != POOL_W_STARTING && w->state != POOL_W_READY)
		return 0;
	if (w->nmsgs >= POOL_MSGS_MAX || w->inflight_bytes > POOL_INFLIGHT_BYTES)
		return 0;
	if (w->cont_job)
		return 1;
	if (!p->rq_head && !p->q_head)
		return 0;
	if (p->maxtasks && w->chunks_given >= p->maxtasks)
		return 0;
	if (!w->inflight_chunks)
		return 1;
	/* Busy with work of unknown cost: wait to learn it. */
	return w->inflight_ns && w->inflight_ns < POOL_TARGET_NS;
}

/* Hand out work, a message to each worker in turn while any can take. */
static void dispatch(struct mpq_pool *p, unsigned char *buf)
{
	unsigned int k, n = (unsigned int)p->nproc;
	int sent;

	do {
		sent = 0;
		for (k = 0; k < n; k++) {
			struct pool_worker *w = &p->w[(p->rr + k) % n];

			if (can_take(p, w))
				sent |= send_one(p, w, buf);
		}
		p->rr++;
	} while (sent);
}

/* ---- results ------------------------------------------------------------ */

/* Where the records being applied live, and the copy jobs may keep. */
struct pool_rctx {
	const unsigned char *base;
	size_t len;
	struct pool_buf *keep;
	struct mpq_async_result *kept_by;	/* last job given keep */
	struct mpq_async_result *last;		/* last job touched */
};

/* A value a job keeps pointing at: the message, copied once. */
static const void *rctx_pin(struct pool_rctx *c, struct mpq_async_result *j,
			    const unsigned char *data)
{
	if (!c->keep) {
		c->keep = malloc(sizeof(*c->keep) + c->len);
		if (!c->keep)
			return NULL;
		c->keep->refs = 1;
		c->keep->size = c->len;
		memcpy(c->keep->data, c->base, c->len);
	}
	if (c->kept_by != j) {
		if (pool_job_own(j, POOL_OWN_BUF, c->keep, c->len))
			return NULL;
		c->kept_by = j;
	}
	return c->keep->data + (data - c->base);
}

static void value_from_fd(struct pool_worker *w, struct mpq_async_result *j,
			  size_t i, uint64_t size)
{
	struct stat st;
	void *map = MAP_FAILED;
	int fd = pool_recv_fd(w->sock, MSG_DONTWAIT);

	if (fd >= 0 && size && fstat(fd, &st) == 0 &&
	    (uint64_t)st.st_size >= size && size <= SIZE_MAX)
		map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
	if (fd >= 0)
		close(fd);
	if (map == MAP_FAILED) {
		static const char m[] = "the worker's large value was lost";

		pool_job_fail(j, i, -EPROTO, m, sizeof(m) - 1);
		return;
	}
	if (j->kind == POOL_JOB_VALUES) {
		pool_job_value(j, i, map, size);
		munmap(map, size);
	} else if (pool_job_own(j, POOL_OWN_MAP, map, size)) {
		munmap(map, size);
		pool_job_fail(j, i, -ENOMEM, NULL, 0);
	} else {
		pool_job_value(j, i, map, size);
	}
}

/* Tell imap waiters about a job touched before another one. */
static void rctx_touch(struct pool_rctx *c, struct mpq_async_result *j)
{
	if (c->last && c->last != j && !c->last->complete &&
	    c->last->kind >= POOL_JOB_IMAP)
		pool_job_notify(c->last);
	c->last = j;
}

/* The cursor of m moves on by n items (never past its segment). */
static void msg_advance(struct pool_msg *m, uint32_t n)
{
	m->cur_off += n;
	m->received += n;
	if (m->cur_off == m->seg[m->cur_seg].count) {
		m->cur_seg++;
		m->cur_off = 0;
	}
}

static void rctx_done(struct mpq_pool *p, struct pool_rctx *c,
		      struct mpq_async_result *j)
{
	if (j->ndone != j->n)
		return;
	if (c->kept_by == j)
		c->kept_by = NULL;
	c->last = NULL;
	job_finish(p, j);
}

static void apply_value(struct mpq_async_result *j, size_t i,
			const unsigned char *data, size_t len,
			struct pool_rctx *c)
{
	const void *v;

	if (j->kind == POOL_JOB_VALUES) {
		pool_job_value(j, i, data, len);
		return;
	}
	v = rctx_pin(c, j, data);
	if (v)
		pool_job_value(j, i, v, len);
	else
		pool_job_fail(j, i, -ENOMEM, NULL, 0);
}

/* A record for one item, at m's cursor. */
static void apply_one(struct mpq_pool *p, struct pool_worker *w,
		      struct pool_msg *m, const struct pool_rec_hdr *r,
		      struct pool_rctx *c)
{
	struct pool_seg *s = &m->seg[m->cur_seg];
	struct mpq_async_result *j = s->job;
	const unsigned char *data = (const unsigned char *)(r + 1);
	size_t i = s->first + m->cur_off;
	uint64_t size;

	msg_advance(m, 1);
	if (!j)
		return;
	rctx_touch(c, j);
	if (r->status == POOL_REC_FD) {
		memcpy(&size, data, sizeof(size));
		value_from_fd(w, j, i, size);
	} else if (r->status < 0) {
		pool_job_fail(j, i, r->status, (const char *)data, r->len);
	} else {
		apply_value(j, i, data, r->len, c);
	}
	rctx_done(p, c, j);
}

/*
 * n values of a run from its k-th on, at m's cursor: a segment at a time,
 * and for map_values one copy of the whole stretch.
 */
static void apply_run(struct mpq_pool *p, struct pool_msg *m,
		      const struct pool_run_hdr *h, uint32_t k, uint32_t n,
		      struct pool_rctx *c)
{
	const unsigned char *data = (const unsigned char *)(h + 1);
	uint32_t x, cnt;

	while (k < n) {
		struct pool_seg *s = &m->seg[m->cur_seg];
		struct mpq_async_result *j = s->job;
		size_t i = s->first + m->cur_off;

		cnt = s->count - m->cur_off;
		if (cnt > n - k)
			cnt = n - k;
		msg_advance(m, cnt);
		if (j) {
			rctx_touch(c, j);
			if (j->kind == POOL_JOB_VALUES)
				pool_job_values(j, i, data + (size_t)k * h->size,
						cnt, h->size);
			else
				for (x = 0; x < cnt; x++)
					apply_value(j, i + x, data +
						    (size_t)(k + x) * h->size,
						    h->size, c);
			rctx_done(p, c, j);
		}
		k += cnt;
	}
}

/*
 * Check the record at r, left bytes long: its size and *n, the items it
 * holds; 0 if it cannot be right. partial: staging's last record, a run
 * that may hold fewer whole values than its count says.
 */
static size_t rec_size(const struct pool_rec_hdr *r, size_t left, int partial,
		       uint32_t *n)
{
	const struct pool_run_hdr *h = (const void *)r;
	uint64_t bytes;
	size_t size;

	*n = 1;
	if (left < sizeof(*r))
		return 0;
	if (r->status == POOL_REC_RUN) {
		if (left < sizeof(*h) || h->size > POOL_RUN_MAX ||
		    (!h->count && !partial))
			return 0;
		bytes = (uint64_t)h->count * h->size;
		*n = h->count;
		if (bytes <= left - sizeof(*h))
			return sizeof(*h) + pool_align8(bytes) <= left ?
			       sizeof(*h) + pool_align8(bytes) : left;
		if (!partial || !h->size)
			return 0;
		*n = (uint32_t)((left - sizeof(*h)) / h->size);
		return left;
	}
	if (r->status == POOL_REC_FD) {
		if (r->len != 8)
			return 0;
	} else if (r->status > 0 || r->len > POOL_INLINE_MAX) {
		return 0;
	}
	size = sizeof(*r) + pool_align8(r->len);
	return size <= left ? size : 0;
}

/*
 * Apply the records recs[0..size) of positions first, first + 1, ... of
 * message m; they must cover count items (SIZE_MAX: staging, as many as
 * there are). Items taken before are skipped (staging may hold them
 * again). -EPROTO if the records cannot be right.
 */
static int apply_records(struct mpq_pool *p, struct pool_worker *w,
			 struct pool_msg *m, uint32_t first,
			 const unsigned char *recs, size_t size, size_t count,
			 struct pool_rctx *c)
{
	int partial = count == SIZE_MAX;
	uint64_t pos = first, covered = 0;
	size_t off = 0, rs;
	uint32_t n, skip;

	while (off < size) {
		const struct pool_rec_hdr *r = (const void *)(recs + off);

		rs = rec_size(r, size - off, partial, &n);
		if (!rs || pos + n > m->nitems || pos > m->received)
			return -EPROTO;
		skip = pos < m->received ? (uint32_t)(m->received - pos) : 0;
		if (skip > n)
			skip = n;
		if (r->status == POOL_REC_RUN)
			apply_run(p, m, (const void *)r, skip, n, c);
		else if (!skip)
			apply_one(p, w, m, r, c);
		pos += n;
		covered += n;
		off += rs;
	}
	if (c->last && !c->last->complete && c->last->kind >= POOL_JOB_IMAP)
		pool_job_notify(c->last);
	c->last = NULL;
	return partial || covered == count ? 0 : -EPROTO;
}

/* m is answered in full: it leaves the worker's list. */
static void msg_retire(struct pool_worker *w, struct pool_msg *m)
{
	w->head = m->next;
	if (!w->head)
		w->tail = NULL;
	w->nmsgs--;
	w->inflight_bytes -= m->bytes;
	w->inflight_ns -= m->est_ns;
	w->inflight_chunks -= m->chunks;
	free(m);
}

static int handle_results(struct mpq_pool *p, struct pool_worker *w,
			  const unsigned char *msg, size_t len)
{
	const struct pool_results_hdr *h = (const void *)msg;
	struct pool_rctx c = { .base = msg, .len = len };
	struct pool_msg *m = w->head;
	int ret;

	/* After terminate nothing is in flight: late answers are dropped. */
	if (!m)
		return p->killed ? 0 : -EPROTO;
	if (h->seq != m->seq || h->first != m->received ||
	    h->count > m->nitems - m->received)
		return -EPROTO;
	ret = apply_records(p, w, m, h->first, msg + sizeof(*h),
			    len - sizeof(*h), h->count, &c);
	pool_buf_put(c.keep);
	if (ret)
		return ret;
	if (m->fn && h->count)
		est_put(p, m->fn, h->busy_ns / h->count);
	if (m->received == m->nitems)
		msg_retire(w, m);
	return 0;
}

static int handle_ready(struct mpq_pool *p, struct pool_worker *w,
			const struct pool_results_hdr *h)
{
	if (w->state != POOL_W_STARTING)
		return -EPROTO;
	if (h->status) {
		/* The initializer failed: the worker exits; try later. */
		p->broken = h->status > 0 ? -h->status : h->status;
		p->restart_at = mpq_now_ns() + POOL_RESTART_NS;
		w->state = POOL_W_EXITING;
		return 0;
	}
	w->state = POOL_W_READY;
	p->broken = 0;
	return 0;
}

/* Read every message waiting from w. -EPIPE once w's end is gone. */
static int worker_drain(struct mpq_pool *p, struct pool_worker *w)
{
	const struct pool_results_hdr *h;
	size_t len;
	int ret;

	if (!w->rbuf) {
		w->rbuf = malloc(POOL_MSG_MAX);
		if (!w->rbuf)
			return -ENOMEM;
	}
	for (;;) {
		unsigned char *buf = w->rbuf;

		len = POOL_MSG_MAX;
		ret = mpq_conn_recv_bytes_into(w->conn, buf, &len, 0);
		if (ret == -EAGAIN || ret == -EPIPE)
			return ret == -EPIPE ? ret : 0;
		if (ret || len < sizeof(*h))
			return -EPROTO;
		h = (const void *)buf;
		if (h->type == POOL_MSG_READY)
			ret = handle_ready(p, w, h);
		else if (h->type == POOL_MSG_RESULTS)
			ret = handle_results(p, w, buf, len);
		else
			ret = -EPROTO;
		if (ret)
			return ret;
	}
}

/* ---- deaths --------------------------------------------------------------- */

static void death_reason(struct pool_worker *w, int code, char *buf,
			 size_t len)
{
	const char *abbrev;

	if (code < 0) {
		abbrev = sigabbrev_np(-code);
		snprintf(buf, len, "%s (pid %d) was killed by signal %d (SIG%s) "
			 "running this task", w->name, (int)w->pid, -code,
			 abbrev ? abbrev : "?");
	} else {
		snprintf(buf, len, "%s (pid %d) exited with status %d running "
			 "this task", w->name, (int)w->pid, code);
	}
}

/*
 * What the staging page says about the oldest message in flight: its
 * records not read yet are applied; returns 1 if an item was running
 * (it is the next one, at m's cursor).
 */
static int staging_recover(struct mpq_pool *p, struct pool_worker *w,
			   struct pool_msg *m)
{
	struct pool_staging *st = w->st;
	struct pool_rctx c;
	uint64_t used;
	uint32_t first, running;

	if (!m || load_acquire(&st->msg_seq) != m->seq)
		return 0;	/* the worker had not begun this message */
	used = load_acquire(&st->used);
	first = load_acquire(&st->msg.first);
	running = load_acquire(&st->running);
	if (used <= POOL_RECS_MAX) {
		c = (struct pool_rctx){
			.base = (const unsigned char *)(&st->msg + 1),
			.len = used,
		};
		apply_records(p, w, m, first, c.base, used, SIZE_MAX, &c);
		pool_buf_put(c.keep);
	}
	return running != POOL_RUNNING_NONE && running >= m->received &&
	       m->received < m->nitems;
}

/* The item the dead worker was running: fail it, or run it once more. */
static void crashed_item(struct mpq_pool *p, struct pool_worker *w,
			 struct pool_msg *m, int code,
			 struct pool_requeue **head, struct pool_requeue **tail)
{
	struct pool_seg *s = &m->seg[m->cur_seg];
	struct mpq_async_result *j = s->job;
	size_t i = s->first + m->cur_off;
	struct pool_requeue *r;
	char why[256];

	if (++m->cur_off == s->count) {
		m->cur_seg++;
		m->cur_off = 0;
	}
	m->received++;
	if (!j)
		return;
	if ((p->flags & MPQ_POOL_RETRY_ONCE) && !(s->flags & POOL_SEG_RETRY)) {
		r = calloc(1, sizeof(*r));
		if (r) {
			r->seg.job = j;
			r->seg.first = i;
			r->seg.count = 1;
			r->seg.flags = POOL_SEG_RETRY | POOL_SEG_CHUNK_END;
			r->next = *head;
			*head = r;
			if (!*tail)
				*tail = r;
			return;
		}
	}
	death_reason(w, code, why, sizeof(why));
	pool_job_fail(j, i, -EOWNERDEAD, why, strlen(why));
}

/* Everything the worker held and did not finish goes back, in order. */
static void worker_requeue_all(struct mpq_pool *p, struct pool_worker *w,
			       int code, int crashed)
{
	struct pool_requeue *head = NULL, *tail = NULL;
	struct pool_msg *m;

	if (crashed && w->head)
		crashed_item(p, w, w->head, code, &head, &tail);
	for (m = w->head; m; m = m->next)
		requeue_msg(p, w, m, m->cur_seg, m->cur_off, &head, &tail);
	requeue_cont(w, &head, &tail);
	requeue_front(p, head, tail);
	while (w->head)
		msg_retire(w, w->head);
}

/* The jobs a death may have finished (its crashed item failed). */
static void finish_touched(struct mpq_pool *p)
{
	struct mpq_async_result *j, *next;

	for (j = p->active; j; j = next) {
		next = j->anext;
		job_finish(p, j);
	}
}

static void worker_died(struct mpq_pool *p, unsigned int slot)
{
	struct pool_worker *w = &p->w[slot];
	int code = 0, crashed = 0;

	if (mpq_process_join(w->proc, POOL_REAP_NS)) {
		mpq_process_kill(w->proc);
		mpq_process_join(w->proc, MPQ_FOREVER);
	}
	if (mpq_process_exitcode(w->proc, &code))
		code = 0;
	if (w->conn_armed)
		cancel_poll(p, ev_data(EV_CONN, slot, w->gen));
	w->conn_armed = w->pid_armed = 0;
	if (!p->killed) {
		worker_drain(p, w);
		/* Died before it was ready: its initializer could not run. */
		if (w->state == POOL_W_STARTING) {
			p->broken = p->broken ? p->broken : -ECHILD;
			p->restart_at = mpq_now_ns() + POOL_RESTART_NS;
		}
		crashed = staging_recover(p, w, w->head);
		worker_requeue_all(p, w, code, crashed);
		finish_touched(p);
	} else {
		while (w->head)
			msg_retire(w, w->head);
		w->cont_job = NULL;
	}
	pool_worker_release(p, w);
}

/* ---- the pool's own state changes ------------------------------------------ */

static int any_ready(struct mpq_pool *p)
{
	int i;

	for (i = 0; i < p->nproc; i++)
		if (p->w[i].state == POOL_W_READY)
			return 1;
	return 0;
}

/* Fail every item not yet handed out (a broken pool, or terminate). */
static void fail_queued(struct mpq_pool *p, int code, const char *why)
{
	struct pool_requeue *r;
	struct mpq_async_result *j;
	size_t i;

	while ((r = p->rq_head)) {
		p->rq_head = r->next;
		for (i = 0; i < r->seg.count; i++)
			pool_job_fail(r->seg.job, r->seg.first + i, code, why,
				      strlen(why));
		free(r);
	}
	p->rq_tail = NULL;
	while ((j = p->q_head)) {
		p->q_head = j->qnext;
		for (i = j->next; i < j->n; i++)
			pool_job_fail(j, i, code, why, strlen(why));
		j->next = j->n;
	}
	p->q_tail = NULL;
	finish_touched(p);
}

/* No worker can start (initializer or fork failing): fail what waits. */
static void handle_broken(struct mpq_pool *p)
{
	char why[160];

	if (!p->broken || any_ready(p) || (!p->q_head && !p->rq_head))
		return;
	snprintf(why, sizeof(why), "no pool worker could start: %s",
		 mpq_strerror(p->broken));
	fail_queued(p, p->broken, why);
}

static void restart_workers(struct mpq_pool *p, int state)
{
	int64_t now = mpq_now_ns();
	int i, ret;

	if (state == POOL_TERMINATE)
		return;
	if (state != POOL_RUN && !p->q_head && !p->rq_head)
		return;
	if (p->restart_at >= 0 && now < p->restart_at)
		return;
	p->restart_at = -1;
	for (i = 0; i < p->nproc; i++) {
		if (p->w[i].state != POOL_W_EMPTY)
			continue;
		ret = pool_worker_launch(p, (unsigned int)i);
		if (ret) {
			p->broken = ret;
			p->restart_at = now + POOL_RESTART_NS;
			return;
		}
		arm_worker(p, (unsigned int)i);
	}
}

/* close: once nothing is left to do, tell each worker to exit. */
static void close_idle_workers(struct mpq_pool *p)
{
	struct pool_tasks_hdr h = { .type = POOL_MSG_EXIT };
	int i;

	if (p->active || p->q_head || p->rq_head)
		return;
	for (i = 0; i < p->nproc; i++) {
		struct pool_worker *w = &p->w[i];

		if (w->state != POOL_W_STARTING && w->state != POOL_W_READY)
			continue;
		if (mpq_conn_send_bytes(w->conn, &h, sizeof(h), 0))
			worker_kill(w);
		w->state = POOL_W_EXITING;
	}
}

/* terminate: everything unfinished fails, the workers get SIGTERM. */
static void handler_terminate(struct mpq_pool *p)
{
	struct mpq_async_result *j;
	int i;

	if (p->killed)
		return;
	p->killed = 1;
	for (i = 0; i < p->nproc; i++) {
		struct pool_worker *w = &p->w[i];

		while (w->head)
			msg_retire(w, w->head);
		w->cont_job = NULL;
		if (w->state != POOL_W_EMPTY && w->proc)
			mpq_process_terminate(w->proc);
		if (w->state != POOL_W_EMPTY)
			w->state = POOL_W_EXITING;
	}
	while (p->rq_head) {
		struct pool_requeue *r = p->rq_head;

		p->rq_head = r->next;
		free(r);
	}
	p->rq_tail = NULL;
	p->q_head = p->q_tail = NULL;
	while ((j = p->active)) {
		pool_job_cancel(j, -ECANCELED, pool_cancelled);
		job_finish(p, j);
	}
	p->kill_at = mpq_now_ns() + POOL_KILL_NS;
}

/* After the grace: SIGKILL whoever ignored SIGTERM. */
static void handler_kill_stragglers(struct mpq_pool *p)
{
	int i;

	if (p->kill_at < 0 || mpq_now_ns() < p->kill_at)
		return;
	p->kill_at = -1;
	for (i = 0; i < p->nproc; i++)
		if (p->w[i].state != POOL_W_EMPTY && p->w[i].proc)
			mpq_process_kill(p->w[i].proc);
}

static int handler_finished(struct mpq_pool *p, int state)
{
	int i;

	if (state == POOL_RUN)
		return 0;
	for (i = 0; i < p->nproc; i++)
		if (p->w[i].state != POOL_W_EMPTY)
			return 0;
	return state == POOL_TERMINATE ||
	       (!p->active && !p->q_head && !p->rq_head);
}

/* ---- sleeping and waking ----------------------------------------------------- */

void pool_handler_wake(struct mpq_pool *p)
{
	/* Pairs with the handler's store of sleeping under the lock. */
	if (__atomic_exchange_n(&p->sleeping, 0, __ATOMIC_SEQ_CST))
		eventfd_write(p->bell, 1);
}

/* The earliest timer: a restart or the SIGKILL after terminate. */
static int64_t handler_timeout(struct mpq_pool *p)
{
	int64_t at = -1, now;

	if (p->restart_at >= 0)
		at = p->restart_at;
	if (p->kill_at >= 0 && (at < 0 || p->kill_at < at))
		at = p->kill_at;
	if (at < 0)
		return -1;
	now = mpq_now_ns();
	return at > now ? at - now : 0;
}

/*
 * Sleep until an event, unless callers handed in work or changed the
 * state since we looked: "sleeping" is set under the lock, so a caller
 * either sees it and rings the bell, or queued before and we see that.
 */
static void handler_sleep(struct mpq_pool *p, int state)
{
	struct __kernel_timespec ts, *tsp = NULL;
	struct io_uring_cqe *cqe;
	int64_t left = handler_timeout(p);

	pthread_mutex_lock(&p->lock);
	if (p->in_head || p->state != state) {
		pthread_mutex_unlock(&p->lock);
		io_uring_submit(&p->ring);
		return;
	}
	__atomic_store_n(&p->sleeping, 1, __ATOMIC_SEQ_CST);
	pthread_mutex_unlock(&p->lock);
	if (left >= 0) {
		ts.tv_sec = left / 1000000000;
		ts.tv_nsec = left % 1000000000;
		tsp = &ts;
	}
	io_uring_submit_and_wait_timeout(&p->ring, &cqe, 1, tsp, NULL);
	__atomic_store_n(&p->sleeping, 0, __ATOMIC_SEQ_CST);
}

static void handle_event(struct mpq_pool *p, uint64_t data, int res)
{
	unsigned int kind = (unsigned int)(data >> 56);
	unsigned int slot = (unsigned int)(data >> 32) & 0xffffff;
	uint32_t gen = (uint32_t)data;
	struct pool_worker *w;
	eventfd_t v;
	int ret;

	if (kind == EV_BELL) {
		eventfd_read(p->bell, &v);
		arm_poll(p, p->bell, ev_data(EV_BELL, 0, 0));
		return;
	}
	if ((kind != EV_CONN && kind != EV_PID) || slot >= (unsigned int)p->nproc)
		return;
	w = &p->w[slot];
	if (w->gen != gen || w->state == POOL_W_EMPTY)
		return;		/* an older worker of the slot */
	if (kind == EV_PID) {
		w->pid_armed = 0;
		worker_died(p, slot);
		return;
	}
	w->conn_armed = 0;
	ret = worker_drain(p, w);
	if (ret == -EPROTO || ret == -ENOMEM)
		worker_kill(w);		/* garbage: its death sorts it out */
	else if (!ret && res >= 0)
		arm_conn(p, slot);
	/* -EPIPE: it is gone, its pidfd is about to say so. */
}

static void handler_events(struct mpq_pool *p)
{
	struct io_uring_cqe *cqe;
	uint64_t data[64];
	int res[64];
	unsigned int head, n, k;

	do {
		n = 0;
		io_uring_for_each_cqe(&p->ring, head, cqe) {
			if (n == 64)
				break;
			data[n] = io_uring_cqe_get_data64(cqe);
			res[n++] = cqe->res;
		}
		io_uring_cq_advance(&p->ring, n);
		for (k = 0; k < n; k++)
			handle_event(p, data[k], res[k]);
	} while (n == 64);
}

/* What is left when the loop ends: nothing, unless memory ran out. */
static void handler_cleanup(struct mpq_pool *p)
{
	struct mpq_async_result *j;
	int i;

	while ((j = p->active)) {
		pool_job_cancel(j, -ECANCELED, pool_cancelled);
		job_finish(p, j);
	}
	for (i = 0; i < p->nproc; i++)
		if (p->w[i].state != POOL_W_EMPTY || p->w[i].conn)
			pool_worker_release(p, &p->w[i]);
}

void *pool_handler_main(void *arg)
{
	struct mpq_pool *p = arg;
	int state, i;

	arm_poll(p, p->bell, ev_data(EV_BELL, 0, 0));
	for (i = 0; i < p->nproc; i++)
		arm_worker(p, (unsigned int)i);
	for (;;) {
		state = take_incoming(p);
		if (state == POOL_TERMINATE) {
			handler_terminate(p);
			handler_kill_stragglers(p);
		}
		restart_workers(p, state);
		handle_broken(p);
		dispatch(p, p->sbuf);
		if (state == POOL_CLOSE)
			close_idle_workers(p);
		if (handler_finished(p, state))
			break;
		handler_sleep(p, state);
		handler_events(p);
	}
	handler_cleanup(p);
	store_release(&p->finished, 1);
	mpq_futex_wake(&p->finished, INT32_MAX);
	return NULL;
}
