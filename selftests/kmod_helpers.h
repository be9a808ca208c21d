/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Helpers shared by the module's selftests (kmod_*_test.c): the raw
 * ioctls on /dev/mpq that make and describe queues, pipes and shared
 * memory, the module's counters and limits in /sys/module/mpq/parameters,
 * dropping CAP_SYS_RESOURCE, and running a function as another user. Each
 * test file used to carry its own copy; one copy here keeps them from
 * drifting apart. They return -errno, never assert: the tests decide what
 * a failure means.
 */
#ifndef MPQ_SELFTEST_KMOD_HELPERS_H
#define MPQ_SELFTEST_KMOD_HELPERS_H

#include <grp.h>
#include <linux/capability.h>
#include <stdio.h>

#include "helpers.h"

#define MPQ_PARAMS	"/sys/module/mpq/parameters/"

static inline int dev_open(void)
{
	return open("/dev/mpq", O_RDWR | O_CLOEXEC);
}

/* MPQ_IOC_QUEUE_CREATE with the given arguments: the fd or -errno. */
static inline int queue_create(int dev, uint32_t capacity, uint32_t msg_max)
{
	struct mpq_queue_create c = { .size = sizeof(c), .flags = MPQ_CREATE_CLOEXEC,
				      .capacity = capacity, .msg_max = msg_max };
	int fd = ioctl(dev, MPQ_IOC_QUEUE_CREATE, &c);

	return fd < 0 ? -errno : fd;
}

static inline int queue_info(int fd, struct mpq_queue_info *i)
{
	memset(i, 0, sizeof(*i));
	i->size = sizeof(*i);
	return ioctl(fd, MPQ_IOC_QUEUE_INFO, i) < 0 ? -errno : 0;
}

/*
 * MPQ_IOC_PIPE_CREATE: 0 with fds[] filled in, or -errno with fds[] -1
 * and no fd leaked.
 */
static inline int pipe_create(int dev, uint32_t flags, uint32_t ring,
			      int fds[2])
{
	struct mpq_pipe_create c = { .size = sizeof(c), .flags = flags,
				     .ring_size = ring, .fds = { -1, -1 } };

	if (ioctl(dev, MPQ_IOC_PIPE_CREATE, &c) < 0) {
		fds[0] = fds[1] = -1;
		return -errno;
	}
	fds[0] = c.fds[0];
	fds[1] = c.fds[1];
	return 0;
}

static inline int pipe_info(int fd, struct mpq_pipe_info *i)
{
	memset(i, 0, sizeof(*i));
	i->size = sizeof(*i);
	return ioctl(fd, MPQ_IOC_PIPE_INFO, i) < 0 ? -errno : 0;
}

/* MPQ_IOC_SHM_OPEN (always close-on-exec): the fd or -errno. */
static inline int shm_open_raw(int dev, const char *name, uint64_t bytes,
			       uint32_t flags, uint32_t mode)
{
	struct mpq_shm_open o = {
		.size = sizeof(o), .flags = flags | MPQ_CREATE_CLOEXEC,
		.bytes = bytes, .name = (uint64_t)(uintptr_t)name,
		.mode = mode, .kind = MPQ_SHM_KIND_SHM,
	};
	int fd = ioctl(dev, MPQ_IOC_SHM_OPEN, &o);

	return fd < 0 ? -errno : fd;
}

static inline int shm_unlink_raw(int dev, const char *name)
{
	struct mpq_shm_unlink u = {
		.size = sizeof(u), .name = (uint64_t)(uintptr_t)name,
	};

	return ioctl(dev, MPQ_IOC_SHM_UNLINK, &u) < 0 ? -errno : 0;
}

static inline int shm_info(int fd, struct mpq_shm_info *i)
{
	memset(i, 0, sizeof(*i));
	i->size = sizeof(*i);
	return ioctl(fd, MPQ_IOC_SHM_INFO, i) < 0 ? -errno : 0;
}

/* The object id of a shared-memory fd, or 0 if it has none. */
static inline uint64_t shm_id(int fd)
{
	struct mpq_shm_info i;

	return shm_info(fd, &i) ? 0 : i.id;
}

/* A number the module shows in /sys/module/mpq/parameters, or -1. */
static inline long param_long(const char *name)
{
	char path[128];
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), MPQ_PARAMS "%s", name);
	f = fopen(path, "r");
	if (!f)
		return -1;
	if (fscanf(f, "%ld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

/* A module parameter's text, without its newline: 0 or -errno. */
static inline int param_read(const char *name, char *buf, size_t len)
{
	char path[128];
	int fd, n;

	snprintf(path, sizeof(path), MPQ_PARAMS "%s", name);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n <= 0)
		return -EIO;
	buf[n] = 0;
	buf[strcspn(buf, "\n")] = 0;
	return 0;
}

/* Set a module parameter (root only): 0 or -errno. */
static inline int param_write(const char *name, const char *val)
{
	char path[128];
	int fd, n;

	snprintf(path, sizeof(path), MPQ_PARAMS "%s", name);
	fd = open(path, O_WRONLY);
	if (fd < 0)
		return -errno;
	n = write(fd, val, strlen(val));
	close(fd);
	return n == (int)strlen(val) ? 0 : -EIO;
}

/*
 * Give up CAP_SYS_RESOURCE (which passes the per-user budget), staying
 * uid 0: an ordinary user to the budget. 0 or -errno.
 */
static inline int drop_sys_resource(void)
{
	struct __user_cap_header_struct h = {
		.version = _LINUX_CAPABILITY_VERSION_3,
	};
	struct __user_cap_data_struct d[2];

	if (syscall(SYS_capget, &h, d))
		return -errno;
	d[0].effective &= ~(1U << CAP_SYS_RESOURCE);
	d[0].permitted &= ~(1U << CAP_SYS_RESOURCE);
	d[0].inheritable &= ~(1U << CAP_SYS_RESOURCE);
	return syscall(SYS_capset, &h, d) ? -errno : 0;
}

/* How many objects the module holds, or -1. */
static inline long objects(void)
{
	return param_long("objects");
}

/*
 * Run fn in a child as uid and gid (no other groups), bounded by
 * timeout_ms: its exit status as wait_child() gives it, 200 if it could
 * not become that user.
 */
static inline int run_as(uid_t uid, gid_t gid, int (*fn)(void *), void *arg,
			 int timeout_ms)
{
	pid_t pid = fork();

	if (pid == 0) {
		if (setgroups(0, NULL) || setresgid(gid, gid, gid) ||
		    setresuid(uid, uid, uid))
			_exit(200);
		_exit(fn(arg));
	}
	return wait_child(pid, timeout_ms);
}

#endif
