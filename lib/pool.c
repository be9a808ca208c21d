// SPDX-License-Identifier: MIT
/*
 * mpq_pool: Python's multiprocessing.Pool. This file holds the pool
 * object (make, close, terminate, join, free), its worker slots (the
 * channels of one worker and its process) and the passing of memfds.
 *
 * A pool is a set of worker slots and one handler thread (pool_handler.c)
 * that owns them once the pool is made. Callers hand work to the handler
 * through a list under the pool's lock and an eventfd it sleeps on; they
 * wait for results on the jobs themselves (pool_job.c). close and
 * terminate only set the pool's state and wake the handler, which does
 * the rest and says when it is finished; join waits for that.
 *
 * Workers are daemon processes of the process that made the pool,
 * started with the pool's start method. A forked worker starts as a copy
 * of this process and drops the pool's other fds (pool_worker.c); a
 * spawned one gets its pipe end, socket and staging memfd as fds that
 * only it inherits, named in its argument.
 */
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pool.h"

/* Every pool this process made, for the exit handler (mpq_proc_lock). */
static struct mpq_pool *pool_all;

/*
 * This process's pid, for pool_check(): every call of the API checks
 * that the pool is its own (a forked child's copy is not), and getpid(2)
 * was a system call per apply_async. 0 until first asked; a forked
 * child starts over (pthread_atfork, as the robust list's TID does).
 */
static pid_t pool_self;

static void pool_self_atfork_child(void)
{
	__atomic_store_n(&pool_self, 0, __ATOMIC_RELAXED);
}

static void __attribute__((constructor)) pool_self_setup(void)
{
	pthread_atfork(NULL, NULL, pool_self_atfork_child);
}

static pid_t pool_getpid(void)
{
	pid_t me = __atomic_load_n(&pool_self, __ATOMIC_RELAXED);

	if (unlikely(!me)) {
		me = getpid();
		__atomic_store_n(&pool_self, me, __ATOMIC_RELAXED);
	}
	return me;
}

int pool_check(struct mpq_pool *p)
{
	if (!p)
		return -EINVAL;
	if (p->magic != MPQ_POOL_MAGIC)
		return -EINVAL;
	return p->owner == pool_getpid() ? 0 : -ECHILD;
}

/* ---- passing memfds --------------------------------------------------- */

/* flags: MSG_DONTWAIT for the pool, which must never wait on a worker. */
int pool_send_fd(int sock, int fd, int flags)
{
	char byte = 'v', cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	struct msghdr msg = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = cbuf, .msg_controllen = sizeof(cbuf),
	};
	struct cmsghdr *c;
	ssize_t n;

	memset(cbuf, 0, sizeof(cbuf));
	c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	do {
		n = sendmsg(sock, &msg, MSG_NOSIGNAL | flags);
	} while (n < 0 && errno == EINTR);
	return n == 1 ? 0 : n < 0 ? -errno : -EIO;
}

/*
 * The next fd on sock. The sender always sends it before the message that
 * names it, so it is there: the pool never waits for one (flags
 * MSG_DONTWAIT: a worker that names an fd it did not send is not waited
 * for), a worker may (the pool is alive or the socket reads EOF).
 */
int pool_recv_fd(int sock, int flags)
{
	char byte, cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	struct msghdr msg = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = cbuf, .msg_controllen = sizeof(cbuf),
	};
	struct cmsghdr *c;
	ssize_t n;
	int fd;

	do {
		n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | flags);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	c = CMSG_FIRSTHDR(&msg);
	if (n != 1 || !c || c->cmsg_level != SOL_SOCKET ||
	    c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(sizeof(int)))
		return -EPROTO;
	memcpy(&fd, CMSG_DATA(c), sizeof(int));
	return fd;
}

/* ---- worker slots ----------------------------------------------------- */

static void slot_reset(struct pool_worker *w)
{
	memset(w, 0, sizeof(*w));
	w->sock = w->wsock = w->staging_fd = -1;
	w->pidfd = w->connfd = -1;
}

/* Close what the worker's side needs and the pool does not keep. */
static void slot_drop_worker_side(struct pool_worker *w)
{
	mpq_conn_free(w->wconn);
	w->wconn = NULL;
	if (w->wsock >= 0)
		close(w->wsock);
	if (w->staging_fd >= 0)
		close(w->staging_fd);
	w->wsock = w->staging_fd = -1;
}

/*
 * Release a slot whose process has ended (or never started): its
 * channels, staging page, process object and buffers. The handler has
 * cancelled its polls first.
 */
void pool_worker_release(struct mpq_pool *p, struct pool_worker *w)
{
	uint32_t gen = w->gen, fails = w->fails;

	slot_drop_worker_side(w);
	mpq_conn_free(w->conn);
	if (w->sock >= 0)
		close(w->sock);
	if (w->st)
		munmap(w->st, POOL_STAGING_SIZE);
	mpq_process_free(w->proc);
	free(w->rbuf);
	free(w->known);
	slot_reset(w);
	w->gen = gen;
	w->fails = fails;
}

static int slot_channels(struct pool_worker *w, int backend)
{
	struct mpq_pipe_attr pa = { .bufsize = POOL_RING, .backend = backend };
	int sv[2], ret;
	void *map;

	ret = mpq_pipe(&w->conn, &w->wconn, 1, &pa);
	if (ret)
		return ret;
	/* Datagrams keep each fd with its own byte; EOF when a side is gone. */
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	w->sock = sv[0];
	w->wsock = sv[1];
	w->staging_fd = memfd_create("mpq-pool-staging", MFD_CLOEXEC);
	if (w->staging_fd < 0)
		return -errno;
	if (ftruncate(w->staging_fd, POOL_STAGING_SIZE) < 0)
		return -errno;
	map = mmap(NULL, POOL_STAGING_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
		   w->staging_fd, 0);
	if (map == MAP_FAILED)
		return -errno;
	w->st = map;
	w->st->running = POOL_RUNNING_NONE;
	/*
	 * The rings are used hard from the first map on: fault them in now,
	 * not a page per fault in the middle of it (the worker does its side).
	 */
	mpq_conn_prefault(w->conn);
	return 0;
}

static int slot_process(struct mpq_pool *p, unsigned int slot)
{
	struct pool_worker *w = &p->w[slot];
	struct pool_worker_args fa = { .pool = p, .slot = slot };
	struct mpq_process_attr attr = {
		.name = w->name,
		.daemon = 1,
		.start_method = p->method,
	};
	int fds[8], nfds = 0, ret;
	void *boot = NULL;
	size_t len;

	snprintf(w->name, sizeof(w->name), "%sPoolWorker-%u",
		 p->method == MPQ_START_SPAWN ? "Spawn" :
		 p->method == MPQ_START_FORKSERVER ? "ForkServer" : "Fork",
		 ++p->counter);
	/* A fork server's workers are bootstrapped by name, as spawn's. */
	if (p->method == MPQ_START_FORK)
		return mpq_process_new(&w->proc, pool_worker_fork, &fa,
				       sizeof(fa), &attr);
	ret = pool_worker_boot(p, w, &boot, &len, fds, &nfds);
	if (!ret)
		ret = mpq_process_new(&w->proc, pool_worker_spawn, boot, len,
				      &attr);
	if (!ret)
		ret = mpq_process_keep_fds(w->proc, fds, (unsigned int)nfds);
	free(boot);
	return ret;
}

/*
 * Make slot's channels and start its worker. On success the worker runs
 * (state STARTING) and the pool keeps only its own ends; on failure the
 * slot is empty again.
 */
int pool_worker_launch(struct mpq_pool *p, unsigned int slot)
{
	struct pool_worker *w = &p->w[slot];
	uint32_t gen = w->gen, fails = w->fails;
	int ret;

	slot_reset(w);
	w->gen = gen + 1;
	w->fails = fails;
	ret = slot_channels(w, p->backend);
	if (!ret)
		ret = slot_process(p, slot);
	if (!ret)
		ret = mpq_process_start(w->proc);
	if (ret) {
		pool_worker_release(p, w);
		return ret;
	}
	slot_drop_worker_side(w);
	w->pid = mpq_process_pid(w->proc);
	w->pidfd = mpq_process_sentinel(w->proc);
	w->connfd = mpq_conn_fileno(w->conn);
	w->state = POOL_W_STARTING;
	return 0;
}

/*
 * Before the handler runs: wait for a new worker's READY. 0 once it came;
 * -EAGAIN if the worker failed to start or was killed, and the slot is
 * empty again for another try (after the back-off, restart_at); the
 * pool's error once that broke it (pool_start_failed); or another error.
 * The same rules as the handler's: see pool_results.c.
 */
static int pool_wait_ready(struct mpq_pool *p, struct pool_worker *w)
{
	struct pollfd pf[2] = {
		{ .fd = w->connfd, .events = POLLIN },
		{ .fd = w->pidfd, .events = POLLIN },
	};
	struct pool_results_hdr h;
	size_t len;
	int ret, code = 0, dead = 0;

	/*
	 * READY, or the worker's death as its pidfd tells it, as the handler
	 * sees deaths (a copy of its pipe end in a child forked meanwhile
	 * must not hide one). Once the pidfd is readable nothing more can
	 * come: one more read takes a READY sent just before the death.
	 */
	for (;;) {
		len = sizeof(h);
		ret = mpq_conn_recv_bytes_into(w->conn, &h, &len, 0);
		if (ret != -EAGAIN)
			break;
		if (dead) {
			ret = -EPIPE;
			break;
		}
		if (poll(pf, 2, -1) < 0 && errno != EINTR)
			return -errno;
		dead = w->pidfd >= 0 && (pf[1].revents & POLLIN);
	}
	if (ret && ret != -EPIPE)
		return ret;
	if (!ret && (len != sizeof(h) || h.type != POOL_MSG_READY))
		return -EPROTO;
	if (!ret && !h.status) {
		pool_start_ok(p, w);
		return 0;
	}
	/* It exits after a failed initializer, or it is gone: reap it. */
	if (mpq_process_join(w->proc, POOL_REAP_NS)) {
		mpq_process_kill(w->proc);
		mpq_process_join(w->proc, MPQ_FOREVER);
	}
	if (ret) {
		if (mpq_process_exitcode(w->proc, &code))
			code = POOL_CODE_LOST;
		pool_start_ended(p, w, code);
	} else {
		code = h.status > 0 ? -h.status : h.status;
		pool_start_failed(p, w, code,
				  "the initializer returned %d (%s)", code,
				  mpq_strerror(code));
	}
	pool_worker_release(p, w);
	return w->fails >= POOL_START_TRIES ? p->broken : -EAGAIN;
}

/* Before the handler runs: slot's worker, started again until READY. */
static int pool_start_slot(struct mpq_pool *p, unsigned int slot)
{
	int64_t left;
	int ret;

	while ((ret = pool_wait_ready(p, &p->w[slot])) == -EAGAIN) {
		left = p->restart_at - mpq_now_ns();
		if (p->restart_at >= 0 && left > 0) {
			struct timespec ts = {
				.tv_sec = left / 1000000000,
				.tv_nsec = left % 1000000000,
			};

			while (nanosleep(&ts, &ts) && errno == EINTR)
				;
		}
		ret = pool_worker_launch(p, slot);
		if (ret)
			return ret;
	}
	return ret;
}

/* ---- making a pool ---------------------------------------------------- */

static int attr_check(const struct mpq_pool_attr *a)
{

	if (!mpq_all_zero(a->__reserved, sizeof(a->__reserved)))
		return -EINVAL;
	/* Not with a manager yet: pool flags (MPQ_POOL_RETRY_ONCE). */
	if (a->remote && a->flags)
		return -EOPNOTSUPP;
	if (a->processes < 0 || a->processes > POOL_MAX_PROCESSES ||
	    a->flags & ~(uint32_t)MPQ_POOL_RETRY_ONCE || a->__pad ||
	    (!a->initarg && a->initarg_len))
		return -EINVAL;
	switch (a->start_method) {
	case MPQ_START_DEFAULT:
	case MPQ_START_FORK:
	case MPQ_START_SPAWN:
	case MPQ_START_FORKSERVER:
		return 0;
	default:
		return -EINVAL;
	}
}

static int pool_settings(struct mpq_pool *p, const struct mpq_pool_attr *a)
{
	char name[256];
	int ret;

	p->nproc = a->processes ? a->processes : mpq_cpu_count();
	if (p->nproc > POOL_MAX_PROCESSES)
		p->nproc = POOL_MAX_PROCESSES;
	p->method = a->start_method ? a->start_method : MPQ_START_FORK;
	p->maxtasks = a->maxtasksperchild;
	p->flags = a->flags;
	p->backend = mpq_backend_resolve(a->backend);
	if (p->backend < 0)
		return p->backend;
	p->init = a->initializer;
	if (p->init && p->method != MPQ_START_FORK) {
		ret = mpq_target_name_of(p->init, name, sizeof(name));
		if (ret)
			return ret;
		p->init_name = strdup(name);
		if (!p->init_name)
			return -ENOMEM;
	}
	if (a->initarg_len) {
		p->initarg = malloc(a->initarg_len);
		if (!p->initarg)
			return -ENOMEM;
		memcpy(p->initarg, a->initarg, a->initarg_len);
		p->initarg_len = a->initarg_len;
	}
	/* Workers run with the mask of the thread that made the pool. */
	pthread_sigmask(SIG_BLOCK, NULL, &p->worker_mask);
	return 0;
}

/* Room in the ring for every poll of every worker, the bell and spares. */
static int pool_ring(struct mpq_pool *p)
{
	unsigned int entries = 16;
	int ret;

	while (entries < 4U * (unsigned int)p->nproc + 8 && entries < 4096)
		entries <<= 1;
	ret = io_uring_queue_init(entries, &p->ring, 0);
	if (ret)
		return ret;
	p->ring_ok = 1;
	return 0;
}

/*
 * A pool's id in the probes: bits 63 and 62 set (object ids have 63 clear,
 * memfd ids 62 clear: inode numbers are 32 bits), then the maker's pid and
 * its count of pools.
 */
static uint64_t pool_new_id(pid_t pid)
{
	static uint32_t made;
	uint32_t n = __atomic_add_fetch(&made, 1, __ATOMIC_RELAXED);

	return 3ULL << 62 | (uint64_t)(uint32_t)pid << 24 | (n & 0xffffff);
}

static int pool_alloc(struct mpq_pool **out, const struct mpq_pool_attr *a)
{
	struct mpq_pool *p;
	int ret, i;

	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	*out = p;
	p->magic = MPQ_POOL_MAGIC;
	p->owner = getpid();
	p->id = pool_new_id(p->owner);
	p->bell = -1;
	p->restart_at = p->kill_at = -1;
	pthread_mutex_init(&p->lock, NULL);
	ret = pool_settings(p, a);
	if (ret)
		return ret;
	p->w = calloc((size_t)p->nproc, sizeof(*p->w));
	if (!p->w)
		return -ENOMEM;
	for (i = 0; i < p->nproc; i++)
		slot_reset(&p->w[i]);
	p->sbuf = malloc(POOL_MSG_MAX);
	if (!p->sbuf)
		return -ENOMEM;
	p->slab = pool_slab_new(sizeof(struct mpq_async_result) +
				POOL_SLAB_ARG + sizeof(struct pool_item));
	if (!p->slab)
		return -ENOMEM;
	p->bell = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (p->bell < 0)
		return -errno;
	if (a->remote)
		return pool_remote_open(p, a);
	return pool_ring(p);
}

static void pool_destroy(struct mpq_pool *p)
{
	int i;

	for (i = 0; p->w && i < p->nproc; i++)
		if (p->w[i].conn || p->w[i].proc)
			pool_worker_release(p, &p->w[i]);
	pool_remote_free(p);
	if (p->ring_ok)
		io_uring_queue_exit(&p->ring);
	if (p->bell >= 0)
		close(p->bell);
	pthread_mutex_destroy(&p->lock);
	/* Its jobs may outlive it: the slab goes with the last. */
	pool_slab_put(p->slab);
	free(p->sbuf);
	free(p->w);
	free(p->init_name);
	free(p->initarg);
	p->magic = 0;
	free(p);
}

/* Undo a pool_new that failed after starting workers: end them first. */
static void pool_abort(struct mpq_pool *p)
{
	int i;

	for (i = 0; p->w && i < p->nproc; i++) {
		if (!p->w[i].proc || p->w[i].state == POOL_W_EMPTY)
			continue;
		mpq_process_kill(p->w[i].proc);
		mpq_process_join(p->w[i].proc, MPQ_FOREVER);
	}
	pool_destroy(p);
}

static void pool_exit_all(void);

static void pool_register(struct mpq_pool *p)
{
	static int registered;

	mpq_proc_lock();
	p->gnext = pool_all;
	pool_all = p;
	/*
	 * After the workers started, so after the process module's own exit
	 * handler: ours runs first (atexit is last in, first out) and ends
	 * the pools before that one joins children, which the handlers
	 * would otherwise keep replacing.
	 */
	if (!registered) {
		registered = 1;
		atexit(pool_exit_all);
	}
	mpq_proc_unlock();
}

static void pool_unregister(struct mpq_pool *p)
{
	struct mpq_pool **pp;

	mpq_proc_lock();
	for (pp = &pool_all; *pp; pp = &(*pp)->gnext) {
		if (*pp == p) {
			*pp = p->gnext;
			break;
		}
	}
	mpq_proc_unlock();
}

/* The handler runs with every signal blocked: they are the program's. */
static int pool_start_handler(struct mpq_pool *p)
{
	sigset_t all, old;
	int ret;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	ret = -pthread_create(&p->thread, NULL, p->rops ? pool_remote_main :
			      pool_handler_main, p);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (!ret)
		p->thread_made = 1;
	return ret;
}

MPQ_EXPORT int mpq_pool_new(struct mpq_pool **out,
			    const struct mpq_pool_attr *attr)
{
	static const struct mpq_pool_attr defaults;
	struct mpq_pool *p = NULL;
	int ret, i;

	if (!out)
		return -EINVAL;
	if (!attr)
		attr = &defaults;
	ret = attr_check(attr);
	if (ret)
		return ret;
	if (mpq_process_daemon(mpq_current_process()) == 1)
		return -EPERM;
	ret = pool_alloc(&p, attr);
	/* A pool with a manager: libmpq-net started its workers. */
	for (i = 0; !ret && !p->rops && i < p->nproc; i++)
		ret = pool_worker_launch(p, (unsigned int)i);
	for (i = 0; !ret && !p->rops && i < p->nproc; i++)
		ret = pool_start_slot(p, (unsigned int)i);
	if (!ret)
		ret = pool_start_handler(p);
	if (ret) {
		if (p)
			pool_abort(p);
		return ret;
	}
	pool_register(p);
	*out = p;
	return 0;
}

/* ---- ending a pool ---------------------------------------------------- */

static int in_handler(struct mpq_pool *p)
{
	return p->thread_made && pthread_equal(pthread_self(), p->thread);
}

static void pool_set_state(struct mpq_pool *p, int state)
{
	pthread_mutex_lock(&p->lock);
	if (p->state < state)
		p->state = state;
	pthread_mutex_unlock(&p->lock);
	/* Always: the handler may be asleep without having asked. */
	eventfd_write(p->bell, 1);
}

static int pool_state(struct mpq_pool *p)
{
	int state;

	pthread_mutex_lock(&p->lock);
	state = p->state;
	pthread_mutex_unlock(&p->lock);
	return state;
}

MPQ_EXPORT int mpq_pool_close(struct mpq_pool *p)
{
	int ret = pool_check(p);

	if (ret)
		return ret;
	pool_set_state(p, POOL_CLOSE);
	return 0;
}

/* Wait until the handler has finished, up to timeout_ns; then reap it. */
static int pool_wait_finished(struct mpq_pool *p, int64_t timeout_ns)
{
	int64_t deadline = mpq_deadline(timeout_ns);
	int r;

	while (!load_acquire(&p->finished)) {
		if (timeout_ns == 0)
			return -EAGAIN;
		r = mpq_futex_wait(&p->finished, 0, deadline);
		if (r == -ETIMEDOUT && !load_acquire(&p->finished))
			return -ETIMEDOUT;
	}
	pthread_mutex_lock(&p->lock);
	if (!p->thread_joined) {
		p->thread_joined = 1;
		pthread_join(p->thread, NULL);
	}
	pthread_mutex_unlock(&p->lock);
	return 0;
}

MPQ_EXPORT int mpq_pool_terminate(struct mpq_pool *p)
{
	int ret = pool_check(p);

	if (ret)
		return ret;
	pool_set_state(p, POOL_TERMINATE);
	/* From a callback: the handler ends the pool when it gets back. */
	if (in_handler(p))
		return 0;
	return pool_wait_finished(p, MPQ_FOREVER);
}

MPQ_EXPORT int mpq_pool_join(struct mpq_pool *p, int64_t timeout_ns)
{
	int ret = pool_check(p);

	if (ret)
		return ret;
	if (pool_state(p) == POOL_RUN)
		return -EINVAL;
	if (in_handler(p))
		return -EDEADLK;
	return pool_wait_finished(p, timeout_ns);
}

/* A copy of the pool in another process: release our copies, nothing else. */
static void pool_free_copy(struct mpq_pool *p)
{
	int i;

	for (i = 0; p->w && i < p->nproc; i++) {
		struct pool_worker *w = &p->w[i];

		mpq_conn_free(w->conn);
		if (w->sock >= 0)
			close(w->sock);
		if (w->st)
			munmap(w->st, POOL_STAGING_SIZE);
		mpq_process_free(w->proc);
	}
	if (p->ring_ok)
		io_uring_queue_exit(&p->ring);
	if (p->bell >= 0)
		close(p->bell);
	pool_slab_put(p->slab);
	free(p->sbuf);
	free(p->w);
	free(p->init_name);
	free(p->initarg);
	free(p->rtab);
	free(p);
}

MPQ_EXPORT void mpq_pool_free(struct mpq_pool *p)
{
	if (!p || p->magic != MPQ_POOL_MAGIC)
		return;
	if (p->owner != getpid()) {
		pool_free_copy(p);
		return;
	}
	/* A callback cannot free the pool its thread belongs to. */
	if (in_handler(p))
		return;
	if (!load_acquire(&p->finished))
		mpq_pool_terminate(p);
	pool_wait_finished(p, MPQ_FOREVER);
	pool_unregister(p);
	pool_destroy(p);
}

/*
 * At exit: end every pool of this process that is still running, as
 * Python's finalizers do, so that no handler replaces workers while the
 * process module joins its children.
 */
static void pool_exit_all(void)
{
	struct mpq_pool *p, *next;
	pid_t me = getpid();

	mpq_proc_lock();
	p = pool_all;
	mpq_proc_unlock();
	for (; p; p = next) {
		next = p->gnext;
		if (p->owner == me && !in_handler(p))
			mpq_pool_terminate(p);
	}
}
