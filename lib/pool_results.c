// SPDX-License-Identifier: MIT
/*
 * What comes back from the workers, alive or dead: READY (or a death
 * before it), result messages applied to their jobs, and a dead worker's
 * last word, its staging page.
 *
 * Starting. A worker that dies before READY is one of two things. Killed
 * by someone (a SIGKILL at any instant of its start, an OOM kill): it is
 * replaced like any dead worker and nothing else happens. Failed on its
 * own (its initializer returned an error, or it crashed or exited before
 * READY; the staging page says whether the initializer was running): a
 * failed start; a few in a row in every slot break the pool
 * (pool_start_failed) rather than letting it start workers for ever.
 *
 * Results. A RESULTS message names the task message and the position of
 * its first item; its records follow in order, so the pool maps each to
 * its job and index through the segments it sent, keeping a cursor per
 * message. A job that keeps values (everything but map_values) gets a
 * copy of the message, made once and shared by its items; map_values
 * gets a run's stretch copied straight into the caller's array.
 *
 * A death. The pidfd wakes the handler at once. The messages the worker
 * completed are read from its pipe first (a message cut short by the
 * death is never delivered). Its staging page then gives the records it
 * finished since, and which item was running: that one fails with
 * -EOWNERDEAD and a message naming the worker and the signal (or is handed
 * out once more with MPQ_POOL_RETRY_ONCE); every other item it held goes
 * back to the front of the queue, in order, and a new worker takes the
 * slot. Nothing read from a worker, alive or dead, is trusted: a record
 * that cannot be right ends that worker, and its death sorts it out.
 */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pool.h"


/* ---- results ----------------------------------------------------------- */

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
	pool_job_finish(p, j);
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
			const unsigned char *at = data + (size_t)k * h->size;

			rctx_touch(c, j);
			/* Jobs that keep values point into the message's copy. */
			if (j->kind != POOL_JOB_VALUES)
				at = rctx_pin(c, j, at);
			if (at)
				pool_job_values(j, i, at, cnt, h->size);
			else
				for (x = 0; x < cnt; x++)
					pool_job_fail(j, i + x, -ENOMEM, NULL, 0);
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
void pool_msg_retire(struct pool_worker *w, struct pool_msg *m)
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
		pool_est_put(p, m->fn, h->busy_ns / h->count);
	if (m->received == m->nitems)
		pool_msg_retire(w, m);
	return 0;
}

/* ---- starting ---------------------------------------------------------- */

/* A worker said READY: its slot, and the pool, start well again. */
void pool_start_ok(struct mpq_pool *p, struct pool_worker *w)
{
	w->state = POOL_W_READY;
	w->fails = 0;
	p->start_deaths = 0;
	p->broken = 0;
}

/*
 * w's worker failed to start, by its own doing or the pool's (code and
 * the words after "no pool worker could start: "): tried again after the
 * back-off. After POOL_START_TRIES in a row the slot gives the pool its
 * cause, and once every slot is there the pool is broken, which fails the
 * work waiting while no worker is ready. A failure that passes (a busy
 * resource, a fork that hit a limit) does not fail anything; one that
 * stays does not hang anyone, as it does in Python, whose pool starts
 * workers that fail for ever.
 */
void pool_start_failed(struct mpq_pool *p, struct pool_worker *w, int code,
		       const char *fmt, ...)
{
	char what[160];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	p->restart_at = mpq_now_ns() + POOL_RESTART_NS;
	if (++w->fails < POOL_START_TRIES)
		return;
	p->broken = code;
	snprintf(p->broken_why, sizeof(p->broken_why), "%s, %u times in a row",
		 what, w->fails);
}

/* Signals a process gets from its own code, not from someone else. */
static int self_inflicted(int sig)
{
	switch (sig) {
	case SIGSEGV:
	case SIGBUS:
	case SIGILL:
	case SIGFPE:
	case SIGABRT:
	case SIGSYS:
	case SIGTRAP:
		return 1;
	default:
		return 0;
	}
}

static void end_words(int code, char *buf, size_t len)
{
	const char *abbrev;

	if (code == POOL_CODE_LOST) {
		snprintf(buf, len, "ended, its exit status lost with its "
			 "fork server");
	} else if (code < 0) {
		abbrev = sigabbrev_np(-code);
		snprintf(buf, len, "crashed with signal %d (SIG%s)", -code,
			 abbrev ? abbrev : "?");
	} else {
		snprintf(buf, len, "exited with status %d", code);
	}
}

/*
 * w's worker ended (exit code, or -signal) before READY. Killed by a
 * signal someone sent (SIGKILL, SIGTERM...), at whatever instant of its
 * start (before or after a spawned worker's exec, in its initializer,
 * with READY on its way): it is replaced like any dead worker, at once
 * unless every slot has lost one so in a row. Crashed or exited: that is
 * the initializer's doing if the staging page says it was running it,
 * else the worker's, and either is a failed start. -ECHILD says so.
 */
void pool_start_ended(struct mpq_pool *p, struct pool_worker *w, int code)
{
	uint32_t init = load_acquire(&w->st->init);
	int64_t later;
	char how[64];

	/*
	 * A status lost with its fork server is no verdict on the worker:
	 * whoever killed the server likely killed it too. Replaced, as a
	 * kill is (and -code would overflow on INT_MIN).
	 */
	if (code == POOL_CODE_LOST ||
	    (code < 0 && !self_inflicted(-code))) {
		if (++p->start_deaths > (uint32_t)p->nproc) {
			later = mpq_now_ns() + POOL_RESTART_NS;
			if (p->restart_at < later)
				p->restart_at = later;
		}
		return;
	}
	end_words(code, how, sizeof(how));
	if (init == POOL_INIT_RUNNING)
		pool_start_failed(p, w, -ECHILD, "the initializer %s", how);
	else
		pool_start_failed(p, w, -ECHILD, "a worker %s %s", how,
				  init == POOL_INIT_DONE ?
				  "before it said ready" : "while starting");
}

static int handle_ready(struct mpq_pool *p, struct pool_worker *w,
			const struct pool_results_hdr *h)
{
	int code = h->status > 0 ? -h->status : h->status;

	if (w->state != POOL_W_STARTING)
		return -EPROTO;
	if (code) {
		/* The initializer failed: the worker exits; try later. */
		pool_start_failed(p, w, code,
				  "the initializer returned %d (%s)", code,
				  mpq_strerror(code));
		w->state = POOL_W_EXITING;
		return 0;
	}
	pool_start_ok(p, w);
	return 0;
}

/* Read every message waiting from w. -EPIPE once w's end is gone. */
int pool_worker_drain(struct mpq_pool *p, struct pool_worker *w)
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


/* ---- deaths ------------------------------------------------------------ */

static void death_reason(struct pool_worker *w, int code, char *buf,
			 size_t len)
{
	const char *abbrev;

	if (code == POOL_CODE_LOST) {
		snprintf(buf, len, "%s (pid %d) ended running this task, its "
			 "exit status lost with its fork server", w->name,
			 (int)w->pid);
	} else if (code < 0) {
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
 * A worker that died in a task's loop: the run's count says how far it
 * got. used becomes the end of the values it finished; returns the item
 * it was in, or the last one if it had finished them all. Fields that do
 * not add up leave used as it was and blame the loop's first item.
 */
static uint32_t staging_loop(struct pool_staging *st, uint64_t *used)
{
	uint64_t off = load_relaxed(&st->loop_run_off);
	uint32_t first = load_relaxed(&st->loop_first);
	uint32_t count0 = load_relaxed(&st->loop_count0);
	uint32_t n = load_relaxed(&st->loop_n), count, done;
	const struct pool_run_hdr *h;
	uint64_t end;

	if (off > POOL_RECS_MAX - sizeof(*h) || off % 8)
		return first;
	h = (const struct pool_run_hdr *)((const unsigned char *)(&st->msg + 1) +
					  off);
	count = load_acquire(&h->count);
	done = count - count0;
	if (done > n || !n)		/* done wraps if count < count0 */
		return first;
	end = off + sizeof(*h) + (uint64_t)count * h->size;
	if (end > POOL_RECS_MAX)
		return first;
	*used = end;
	return done == n ? first + n - 1 : first + done;
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
	if (running == POOL_RUNNING_LOOP)
		running = staging_loop(st, &used);
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
		pool_requeue_msg(p, w, m, m->cur_seg, m->cur_off, &head, &tail);
	pool_requeue_cont(w, &head, &tail);
	pool_requeue_front(p, head, tail);
	while (w->head)
		pool_msg_retire(w, w->head);
}

/* The jobs a death may have finished (its crashed item failed). */
void pool_finish_active(struct mpq_pool *p)
{
	struct mpq_async_result *j, *next;

	for (j = p->active; j; j = next) {
		next = j->anext;
		pool_job_finish(p, j);
	}
}

void pool_worker_died(struct mpq_pool *p, unsigned int slot)
{
	struct pool_worker *w = &p->w[slot];
	int code = 0, crashed = 0;

	if (mpq_process_join(w->proc, POOL_REAP_NS)) {
		mpq_process_kill(w->proc);
		mpq_process_join(w->proc, MPQ_FOREVER);
	}
	if (mpq_process_exitcode(w->proc, &code))
		code = POOL_CODE_LOST;
	if (!p->killed) {
		pool_worker_drain(p, w);
		/* Died before it was ready (READY, if sent, is read now). */
		if (w->state == POOL_W_STARTING)
			pool_start_ended(p, w, code);
		crashed = staging_recover(p, w, w->head);
		worker_requeue_all(p, w, code, crashed);
		pool_finish_active(p);
	} else {
		while (w->head)
			pool_msg_retire(w, w->head);
		w->cont_job = NULL;
	}
	pool_worker_release(p, w);
}
