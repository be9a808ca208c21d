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
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
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

/* pid's parent, from /proc (-1 if it is gone). */
static inline pid_t stat_ppid(pid_t pid)
{
	char path[64], buf[512], *rp;
	int fd, ppid = -1;
	ssize_t n;
	char state;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	rp = strrchr(buf, ')');
	if (!rp || sscanf(rp + 1, " %c %d", &state, &ppid) != 2)
		return -1;
	return ppid;
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

/* A queue of maxsize messages of msgsize bytes made with flags, or NULL. */
static inline struct mpq_queue *make_queue(uint32_t maxsize, uint32_t msgsize,
					   uint32_t flags)
{
	struct mpq_queue_attr attr = { .maxsize = maxsize, .msgsize = msgsize,
				       .flags = flags };
	struct mpq_queue *q = NULL;

	if (mpq_queue_new(&q, &attr))
		return NULL;
	return q;
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

/* The slot at head in a mapping of a queue's memory (queue_map()). */
static inline struct mpq_slot *shm_head_slot(struct mpq_queue_shm *shm)
{
	return (struct mpq_slot *)((unsigned char *)shm + shm->data_off +
				   (shm->head & (shm->capacity - 1)) *
				   shm->slot_size);
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

/*
 * The pipe's region as the end's first fd (from its export handle) maps
 * it: memfd or the module's end alike. Returns the mapping, or NULL.
 */
static inline struct mpq_pipe_shm *map_pipe(struct mpq_conn *c)
{
	struct mpq_pipe_info info = { .size = sizeof(info) };
	struct mpq_pipe_shm *shm;
	char handle[128];
	struct stat st;
	int fd, end;

	if (mpq_conn_export(c, handle, sizeof(handle)) < 0)
		return NULL;
	if (sscanf(handle, "mpq-conn:kmod:%d", &fd) == 1) {
		if (ioctl(fd, MPQ_IOC_PIPE_INFO, &info))
			return NULL;
	} else if (sscanf(handle, "mpq-conn:memfd:%d:%d", &end, &fd) == 2) {
		if (fstat(fd, &st))
			return NULL;
		info.map_size = st.st_size;
	} else {
		return NULL;
	}
	shm = mmap(NULL, info.map_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		   fd, 0);
	return shm == MAP_FAILED ? NULL : shm;
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

/*
 * Wait up to timeout_ms for *flag (in memory shared with another process)
 * to become non-zero. Returns its value, or 0 on timeout.
 */
static inline int wait_for_flag(int *flag, int timeout_ms)
{
	int64_t end = now_ns() + timeout_ms * NSEC_PER_MSEC;
	int v;

	while (!(v = __atomic_load_n(flag, __ATOMIC_ACQUIRE))) {
		if (now_ns() > end)
			return 0;
		sleep_ms(1);
	}
	return v;
}

static inline void set_flag(int *flag, int v)
{
	__atomic_store_n(flag, v, __ATOMIC_RELEASE);
}

/* pidfd_open(2), for watching a process that is not our child. */
static inline int pidfd_of(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

/* Is fd readable (or at end of file: POLLHUP) within timeout_ms? */
static inline int readable_within(int fd, int timeout_ms)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };

	return poll(&pfd, 1, timeout_ms) == 1 &&
	       (pfd.revents & (POLLIN | POLLHUP));
}

/* Install a seccomp filter of n instructions on this process: 0 or -errno. */
static inline int seccomp_install(struct sock_filter *filter, unsigned short n)
{
	struct sock_fprog prog = { .len = n, .filter = filter };

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ||
	    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
		return -errno;
	return 0;
}

/*
 * Make the system call nr fail with err from now on, in this process and
 * the children it makes (x86-64 only; elsewhere every call is allowed and
 * the caller should skip). Returns 0 or -errno.
 */
static inline int seccomp_fail_syscall(int nr, int err)
{
	struct sock_filter filter[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned int)nr, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (err & 0xffff)),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};

	return seccomp_install(filter, sizeof(filter) / sizeof(filter[0]));
}

/*
 * From now on every system call but exit and exit_group fails with ENOSYS,
 * in this process (x86-64; elsewhere nothing is filtered and the caller
 * should skip). For proving that a fast path makes none. Returns 0 or
 * -errno.
 */
static inline int seccomp_allow_only_exit(void)
{
	struct sock_filter filter[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_exit_group, 2, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_exit, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};

	return seccomp_install(filter, sizeof(filter) / sizeof(filter[0]));
}

#endif /* MPQ_SELFTEST_HELPERS_H */
