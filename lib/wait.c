// SPDX-License-Identifier: MIT
/*
 * mpq_wait(): multiprocessing.connection.wait for C, over any mix of
 * connections, queues and plain fds (a process sentinel is an fd).
 *
 * Each object first says whether it is ready without a system call; if
 * none is, each asks to be woken (its "wanted" bit: see conn.c, queue.c),
 * looks once more, and hands over the fds to sleep on. The sleep is one
 * io_uring with a POLL_ADD per fd, the library's event engine: it scales
 * to thousands of objects without building a poll array in the kernel on
 * every call, and later the Pool's result handler runs on the same. After
 * a wake-up everything is looked at again, so a spurious wake-up costs a
 * loop, never a wrong answer.
 */
#include <liburing.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "internal.h"

/* Ready now? 1, 0 with up to two fds to sleep on, or -errno. */
static int wait_prepare(struct mpq_wait_item *it, struct pollfd *p, int *np)
{
	*np = 0;
	switch (it->kind) {
	case MPQ_WAIT_CONN:
		return mpq_conn_wait_prepare(it->conn, p, np);
	case MPQ_WAIT_QUEUE: {
		int r = mpq_queue_wait_prepare(it->queue, p);

		*np = r == 0;
		return r;
	}
	case MPQ_WAIT_FD:
		if (it->fd < 0)
			return -EBADF;
		p->fd = it->fd;
		p->events = POLLIN;
		*np = 1;
		return 0;
	default:
		return -EINVAL;
	}
}

/* Sleep until one of p[] polls readable or the deadline; 0 or -errno. */
static int wait_sleep(struct pollfd *p, unsigned int np, int64_t deadline)
{
	struct __kernel_timespec ts, *tsp = NULL;
	struct io_uring_cqe *cqe;
	struct io_uring ring;
	unsigned int entries = 1, i;
	int ret;

	while (entries < np && entries < 4096)
		entries <<= 1;
	ret = io_uring_queue_init(entries, &ring, 0);
	if (ret)
		return ret;
	for (i = 0; i < np; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);

		if (!sqe) {		/* more fds than entries: send these */
			ret = io_uring_submit(&ring);
			if (ret < 0)
				goto out;
			sqe = io_uring_get_sqe(&ring);
		}
		io_uring_prep_poll_add(sqe, p[i].fd, p[i].events);
		io_uring_sqe_set_data64(sqe, i);
	}
	if (deadline >= 0) {
		int64_t left = deadline - mpq_now_ns();

		if (left < 0)
			left = 0;
		ts.tv_sec = left / 1000000000;
		ts.tv_nsec = left % 1000000000;
		tsp = &ts;
	}
	ret = io_uring_submit_and_wait_timeout(&ring, &cqe, 1, tsp, NULL);
	if (ret == -ETIME || ret == -EINTR || ret >= 0)
		ret = 0;
out:
	/* Tearing the ring down cancels the polls still armed. */
	io_uring_queue_exit(&ring);
	return ret;
}

/* The sleep's end: the deadline, or sooner for a queue that asks (queue.c). */
static int64_t wait_until(const struct mpq_wait_item *items, unsigned int n,
			  int64_t deadline)
{
	unsigned int i;

	for (i = 0; i < n; i++)
		if (items[i].kind == MPQ_WAIT_QUEUE)
			deadline = mpq_queue_wait_until(items[i].queue,
							deadline);
	return deadline;
}

MPQ_EXPORT int mpq_wait(struct mpq_wait_item *items, unsigned int n,
			int64_t timeout_ns)
{
	int64_t deadline = mpq_deadline(timeout_ns);
	struct pollfd *p;
	unsigned int i, np;
	int ready, ret = 0;

	if (!items && n)
		return -EINVAL;
	p = calloc(2 * (size_t)n + 1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	for (;;) {
		ready = 0;
		np = 0;
		for (i = 0; i < n; i++) {
			int k;

			items[i].ready = 0;
			ret = wait_prepare(&items[i], &p[np], &k);
			if (ret < 0)
				goto out;
			if (ret == 1) {
				items[i].ready = 1;
				ready++;
			}
			np += (unsigned int)k;
		}
		/* The fds of objects not ready, and plain fds: anything now? */
		if (np && poll(p, np, 0) > 0) {
			unsigned int j = 0;

			for (i = 0; i < n; i++) {
				struct pollfd q[2];
				int k, r;

				if (items[i].ready)
					continue;
				if (items[i].kind == MPQ_WAIT_FD) {
					if (p[j].revents) {
						items[i].ready = 1;
						ready++;
					}
					j++;
					continue;
				}
				/* An object's fd woke: ask the object. */
				r = wait_prepare(&items[i], q, &k);
				if (r == 1) {
					items[i].ready = 1;
					ready++;
				}
				j += (unsigned int)k;
			}
		}
		if (ready) {
			ret = ready;
			goto out;
		}
		if (deadline == 0 || (deadline > 0 && mpq_now_ns() >= deadline)) {
			ret = 0;
			goto out;
		}
		ret = wait_sleep(p, np, wait_until(items, n, deadline));
		if (ret < 0)
			goto out;
	}
out:
	free(p);
	return ret;
}

MPQ_EXPORT int mpq_wait_fd(const struct mpq_wait_item *item)
{
	if (!item)
		return -EINVAL;
	switch (item->kind) {
	case MPQ_WAIT_CONN:
		return mpq_conn_fileno(item->conn);
	case MPQ_WAIT_QUEUE:
		if (mpq_queue_backend(item->queue) != MPQ_BACKEND_KMOD)
			return -EOPNOTSUPP;
		return mpq_queue_fileno(item->queue);
	case MPQ_WAIT_FD:
		return item->fd >= 0 ? item->fd : -EBADF;
	default:
		return -EINVAL;
	}
}

MPQ_EXPORT int mpq_epoll_add(int epfd, const struct mpq_wait_item *item,
			     uint64_t data)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = data };
	int fd = mpq_wait_fd(item);

	if (fd < 0)
		return fd;
	return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) ? -errno : 0;
}
