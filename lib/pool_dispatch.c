// SPDX-License-Identifier: MIT
/*
 * Handing out work: the pool's handler cuts jobs into chunks and packs
 * them into messages for the workers.
 *
 * A chunk is chunksize items of one job, as in Python, and goes to one
 * worker, in one or more messages of at most POOL_MSG_MAX bytes (a chunk
 * too big for one message continues in the next one to the same worker,
 * so that maxtasksperchild counts chunks as Python does). A message
 * carries as many chunks as fit within about POOL_MSG_NS of estimated
 * work (per function, from the time workers report for their batches); a
 * worker is given more while it holds less than POOL_TARGET_NS of work, a
 * few messages and half its ring. So trivial tasks go out thousands to a
 * message, long ones a chunk at a time (the others stay in the queue for
 * whichever worker is free first), and a send never waits for room.
 *
 * Arguments travel in the message: fixed-size ones with one copy for a
 * whole segment, others with a small header each, and those over
 * POOL_INLINE_MAX as sealed memfds sent over the worker's socket just
 * before the message.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
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


/* ---- estimates --------------------------------------------------------- */

static uint64_t est_get(struct mpq_pool *p, uintptr_t fn)
{
	unsigned int s = (unsigned int)((fn >> 4) % POOL_EST_SLOTS);

	return p->est[s].fn == fn ? p->est[s].ns : 0;
}

/*
 * A new sample of a function's time per item: a moving average, weighted
 * to the past, so that one slow batch does not stop batching.
 */
void pool_est_put(struct mpq_pool *p, uintptr_t fn, uint64_t sample)
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


/* ---- arguments --------------------------------------------------------- */

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

/* Write item i's argument (len bytes, from arg_len) to dst. */
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

/* ---- building messages ------------------------------------------------- */

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

/* Room for one more segment in the record of the message. */
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

/* What estimates are kept by: the function, whatever workers call it. */
static uintptr_t job_fn(const struct mpq_async_result *j)
{
	return (uintptr_t)j->fn;
}

/*
 * Adaptive chunks: after the chunk of count items at j->next, how many
 * items of whole chunks more of the same job go into the same segment.
 * A chunk of a trivial task costs far more to hand out (a segment, its
 * record, its results) than its items cost to run: map with chunksize 1
 * spent 60 ns per item on chunks, 4 ns on the items. So while the
 * message's estimated work stays within POOL_MSG_NS (and the worker's
 * within POOL_TARGET_NS) and the arguments fit in what is left of the
 * message, the next chunks join this one. Never when chunks count
 * (maxtasksperchild), nor for work of unknown cost, nor for arguments
 * that go as memfds: those keep Python's chunks exactly. Which worker
 * runs an item is all a merge changes; each item still has its own
 * result, and a death still fails or requeues items one by one.
 */
static size_t take_more(struct mpq_pool *p, struct pool_worker *w,
			struct pool_builder *b, struct mpq_async_result *j,
			size_t count, uint64_t per)
{
	size_t left = j->n - j->next - count, more, k, room, need;
	uint64_t spent = b->est + per * count, cap = POOL_MSG_NS;

	if (p->maxtasks || !per || b->unknown || !left)
		return 0;
	if (w->inflight_ns < POOL_TARGET_NS &&
	    POOL_TARGET_NS - w->inflight_ns < cap)
		cap = POOL_TARGET_NS - w->inflight_ns;
	if (spent >= cap)
		return 0;
	more = (cap - spent) / per;
	if (more > left)
		more = left;
	/* Room after the segment header (and a name) for the arguments. */
	need = sizeof(struct pool_seg_hdr) + POOL_TASK_NAME_MAX + 1 + 16;
	if (b->off + need >= POOL_MSG_MAX)
		return 0;
	room = POOL_MSG_MAX - b->off - need;
	if (j->args_kind == POOL_ARGS_FIXED) {
		if (j->arg_size > POOL_INLINE_MAX)
			return 0;
		if (j->arg_size) {
			k = room / j->arg_size;
			k = k > count ? k - count : 0;
			if (more > k)
				more = k;
		}
	} else {
		for (k = 0; k < count + more; k++) {
			size_t len = arg_len(j, j->next + k);

			if (len > POOL_INLINE_MAX)
				break;
			len = sizeof(struct pool_arg_hdr) + pool_align8(len);
			if (len > room)
				break;
			room -= len;
		}
		more = k > count ? k - count : 0;
	}
	/* Whole chunks, unless the job ends with them. */
	if (more < left)
		more -= more % j->chunksize;
	return more;
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
	if (!p->rq_head) {
		count += take_more(p, w, b, j, count, per);
		est = per * count;
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

/* ---- work that goes back ----------------------------------------------- */

/* Put the segments of m (and w's unfinished chunk) back at the front. */
void pool_requeue_msg(struct mpq_pool *p, struct pool_worker *w,
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

/* The part of w's current chunk not sent yet, as one more segment. */
void pool_requeue_cont(struct pool_worker *w, struct pool_requeue **head,
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
	pool_requeue_msg(NULL, w, m, 0, 0, head, tail);
	free(m);
}

/*
 * End a worker the pool cannot trust or reach: its death is then handled
 * like any other, which is what puts its work back.
 */
void pool_worker_kill(struct pool_worker *w)
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

	pool_requeue_msg(p, w, b->m, 0, 0, &head, &tail);
	pool_requeue_cont(w, &head, &tail);
	pool_requeue_front(p, head, tail);
	w->inflight_chunks -= (uint32_t)b->chunks;
	pool_worker_kill(w);
}

/* ---- sending ----------------------------------------------------------- */

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

/*
 * May w be given another message? Room in its ring and in its share of
 * the work; a chunk begun must be finished first; and no more chunks than
 * maxtasksperchild lets it run.
 */
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
void pool_dispatch(struct mpq_pool *p, unsigned char *buf)
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
