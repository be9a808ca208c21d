/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Helpers shared by the mpq selftests: running a function in a child
 * process, waiting for it with a bound, passing fds, and mapping a queue's
 * shared memory so a test can look at it or scribble over it.
 */
#ifndef MPQ_SELFTEST_HELPERS_H
#define MPQ_SELFTEST_HELPERS_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/mpq.h>

#include "mpq.h"

#define NSEC_PER_MSEC	1000000LL
#define NSEC_PER_SEC	1000000000LL

static inline int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * NSEC_PER_SEC + ts.tv_nsec;
}

static inline void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* Fork; the child runs fn(arg) and exits with its return value. */
static inline pid_t spawn(int (*fn)(void *), void *arg)
{
	pid_t pid = fork();

	if (pid == 0)
		_exit(fn(arg));
	return pid;
}

/*
 * Wait for pid at most timeout_ms; kill it if it is still running then.
 * Returns its exit status (0..255), 128 + signal if a signal ended it, or
 * -1 if it had to be killed for taking too long.
 */
static inline int wait_child(pid_t pid, int timeout_ms)
{
	int64_t end = now_ns() + timeout_ms * NSEC_PER_MSEC;
	int status;

	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid)
			break;
		if (r < 0)
			return -2;
		if (now_ns() > end) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			return -1;
		}
		sleep_ms(1);
	}
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

/* Is pid still running? Leaves an exited child to be reaped later. */
static inline int child_running(pid_t pid)
{
	siginfo_t si = { 0 };

	if (waitid(P_PID, pid, &si, WEXITED | WNOHANG | WNOWAIT))
		return 0;
	return si.si_pid == 0;
}

static inline int send_fd(int sock, int fd)
{
	char dummy = 'f', cbuf[CMSG_SPACE(sizeof(int))] = { 0 };
	struct iovec iov = { .iov_base = &dummy, .iov_len = 1 };
	struct msghdr msg = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = cbuf, .msg_controllen = sizeof(cbuf),
	};
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);

	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	return sendmsg(sock, &msg, 0) == 1 ? 0 : -errno;
}

static inline int recv_fd(int sock)
{
	char dummy, cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { .iov_base = &dummy, .iov_len = 1 };
	struct msghdr msg = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = cbuf, .msg_controllen = sizeof(cbuf),
	};
	struct cmsghdr *c;
	int fd;

	if (recvmsg(sock, &msg, 0) != 1)
		return -errno;
	c = CMSG_FIRSTHDR(&msg);
	if (!c || c->cmsg_type != SCM_RIGHTS)
		return -EBADMSG;
	memcpy(&fd, CMSG_DATA(c), sizeof(int));
	return fd;
}

/* Size of a queue's shared memory, from the module or the memfd's size. */
static inline size_t queue_map_size(struct mpq_queue *q)
{
	struct mpq_queue_info info = { .size = sizeof(info) };
	struct stat st;
	int fd = mpq_queue_fileno(q);

	if (ioctl(fd, MPQ_IOC_QUEUE_INFO, &info) == 0)
		return info.map_size;
	if (fstat(fd, &st) == 0)
		return st.st_size;
	return 0;
}

/* A second mapping of the queue's memory, as another participant has it. */
static inline void *queue_map(struct mpq_queue *q, size_t *size)
{
	void *p;

	*size = queue_map_size(q);
	p = mmap(NULL, *size, PROT_READ | PROT_WRITE, MAP_SHARED,
		 mpq_queue_fileno(q), 0);
	return p == MAP_FAILED ? NULL : p;
}

/* Anonymous shared memory for results that children report back. */
static inline void *shared_alloc(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

/* xorshift64*: reproducible randomness from a seed. */
static inline uint64_t rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ULL;
}

#endif /* MPQ_SELFTEST_HELPERS_H */
