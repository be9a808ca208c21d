// SPDX-License-Identifier: MIT
/*
 * The pool's handler thread: Python's three pool threads (worker, task
 * and result handler) as one io_uring loop. It polls each worker's pipe
 * end (results), each worker's pidfd (death) and the pool's eventfd (new
 * work, close, terminate); between sleeps it hands out work
 * (pool_dispatch.c), takes results and deaths (pool_results.c), completes
 * jobs (running their callbacks), replaces workers and ends the pool.
 *
 * One thread owns the workers, the queue and the jobs in flight, so none
 * of that needs a lock: callers only append to the incoming list (under
 * the pool's lock) and ring the eventfd if the handler said it sleeps.
 * Polls are one-shot and re-armed after each completion; each carries the
 * slot's incarnation, so that a completion for a worker already replaced
 * is recognised and dropped.
 */
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "pool.h"

/* terminate: SIGTERM, then SIGKILL after this. */
#define POOL_KILL_NS		1000000000LL

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


/* ---- io_uring ---------------------------------------------------------- */

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

/*
 * One-shot polls: a multishot poll on a level-triggered fd (a memfd
 * pipe's doorbell, a dead worker's socket) would flood the ring until the
 * fd is drained; one-shot ones are re-armed once we have looked.
 */
static void arm_poll(struct mpq_pool *p, int fd, uint64_t data)
{
	struct io_uring_sqe *sqe = handler_sqe(p);

	if (!sqe)
		return;
	io_uring_prep_poll_add(sqe, fd, POLLIN);
	io_uring_sqe_set_data64(sqe, data);
}

/*
 * An armed poll holds a reference to its file: cancel it when the slot is
 * released, or the module would see that pipe end open until the ring goes.
 */
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

/* A new worker: its pipe for results, its pidfd for its death. */
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

void pool_active_add(struct mpq_pool *p, struct mpq_async_result *j)
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
void pool_job_finish(struct mpq_pool *p, struct mpq_async_result *j)
{
	if (j->complete || j->ndone != j->n)
		return;
	active_remove(p, j);
	pool_job_complete(j);
}

/* Jobs are handed out in the order they came, as Python's task queue does. */
static void queue_add(struct mpq_pool *p, struct mpq_async_result *j)
{
	j->qnext = NULL;
	if (p->q_tail)
		p->q_tail->qnext = j;
	else
		p->q_head = j;
	p->q_tail = j;
}

/*
 * The jobs callers submitted since the last call, oldest first (linked by
 * qnext), and the pool's state then: the handler's and the remote loop's.
 */
struct mpq_async_result *pool_take_submitted(struct mpq_pool *p, int *state)
{
	struct mpq_async_result *j;

	pthread_mutex_lock(&p->lock);
	j = p->in_head;
	p->in_head = p->in_tail = NULL;
	*state = p->state;
	pthread_mutex_unlock(&p->lock);
	return j;
}

/* Take what callers submitted; returns the pool's state. */
static int take_incoming(struct mpq_pool *p)
{
	struct mpq_async_result *j, *next;
	int state;

	for (j = pool_take_submitted(p, &state); j; j = next) {
		next = j->qnext;
		pool_active_add(p, j);
		if (j->n)
			queue_add(p, j);
		else
			pool_job_finish(p, j);	/* an empty map is done at once */
	}
	return state;
}

/* Segments to hand out before anything else, in the order given. */
void pool_requeue_front(struct mpq_pool *p, struct pool_requeue *head,
			  struct pool_requeue *tail)
{
	if (!head)
		return;
	tail->next = p->rq_head;
	p->rq_head = head;
	if (!p->rq_tail)
		p->rq_tail = tail;
}


/* ---- the pool's own state changes -------------------------------------- */

/*
 * Broken: no worker is ready and every slot has failed to start one
 * POOL_START_TRIES times in a row (pool_start_failed). While a slot is
 * below that (one whose worker was only killed, say), work waits for it.
 */
static int pool_broken(struct mpq_pool *p)
{
	int i;

	if (!p->broken)
		return 0;
	for (i = 0; i < p->nproc; i++)
		if (p->w[i].state == POOL_W_READY ||
		    p->w[i].fails < POOL_START_TRIES)
			return 0;
	return 1;
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
	pool_finish_active(p);
}

/*
 * No worker can start (in every slot an initializer, or making workers,
 * failed in a row) and none is ready: fail what waits, with the cause.
 * Workers killed while starting never get the pool here.
 */
static void handle_broken(struct mpq_pool *p)
{
	char why[sizeof(p->broken_why) + 32];

	if ((!p->q_head && !p->rq_head) || !pool_broken(p))
		return;
	snprintf(why, sizeof(why), "no pool worker could start: %s",
		 p->broken_why);
	fail_queued(p, p->broken, why);
}

/*
 * Whether empty slots get workers: always while running (Python's
 * _maintain_pool), but after close, or while the pool is broken (no idle
 * pool starts failing workers for ever), only while work is left for
 * them; never after terminate.
 */
static int restart_wanted(struct mpq_pool *p, int state)
{
	if (state == POOL_TERMINATE)
		return 0;
	if (p->q_head || p->rq_head)
		return 1;
	return state == POOL_RUN && !pool_broken(p);
}

/* Start workers in empty slots, not before the back-off after a failure. */
static void restart_workers(struct mpq_pool *p, int state)
{
	int64_t now = mpq_now_ns();
	int i, ret;

	if (!restart_wanted(p, state))
		return;
	if (p->restart_at >= 0 && now < p->restart_at)
		return;
	p->restart_at = -1;
	for (i = 0; i < p->nproc; i++) {
		if (p->w[i].state != POOL_W_EMPTY)
			continue;
		ret = pool_worker_launch(p, (unsigned int)i);
		if (ret) {
			pool_start_failed(p, &p->w[i], ret,
					  "making a worker failed with %d (%s)",
					  ret, mpq_strerror(ret));
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
			pool_worker_kill(w);
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
			pool_msg_retire(w, w->head);
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
		pool_job_finish(p, j);
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

/* Done: no worker left, and after close no work left either. */
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


/* ---- sleeping and waking ----------------------------------------------- */

void pool_handler_wake(struct mpq_pool *p)
{
	/* Pairs with the handler's store of sleeping under the lock. */
	if (__atomic_exchange_n(&p->sleeping, 0, __ATOMIC_SEQ_CST))
		eventfd_write(p->bell, 1);
}

/* The earliest timer: a restart (if one is wanted) or terminate's SIGKILL. */
static int64_t handler_timeout(struct mpq_pool *p, int state)
{
	int64_t at = -1, now;

	if (p->restart_at >= 0 && restart_wanted(p, state))
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
	int64_t left = handler_timeout(p, state);

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

/* One completion: the bell, a worker's results, or its death. */
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
		/* Its pipe's poll goes with it: nothing to say any more. */
		if (w->conn_armed)
			cancel_poll(p, ev_data(EV_CONN, slot, w->gen));
		w->conn_armed = w->pid_armed = 0;
		pool_worker_died(p, slot);
		return;
	}
	w->conn_armed = 0;
	ret = pool_worker_drain(p, w);
	if (ret == -EPROTO || ret == -ENOMEM)
		pool_worker_kill(w);		/* garbage: its death sorts it out */
	else if (!ret && res >= 0)
		arm_conn(p, slot);
	/* -EPIPE: it is gone, its pidfd is about to say so. */
}

/*
 * Take the completions first, then handle them: handling re-arms polls,
 * whose submission may need the ring's attention in the middle.
 */
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
		pool_job_finish(p, j);
	}
	for (i = 0; i < p->nproc; i++)
		if (p->w[i].state != POOL_W_EMPTY || p->w[i].conn)
			pool_worker_release(p, &p->w[i]);
}

/*
 * The loop: take new work and state changes, react to them, hand out
 * work, then sleep until something happens. It ends when the pool is
 * closed and done, or terminated, and its last act says so (finished).
 */
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
		pool_dispatch(p, p->sbuf);
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
