// SPDX-License-Identifier: MIT
/*
 * The kmod backend: objects made by the mpq module through /dev/mpq. The
 * kernel writes the shared header and keeps the authoritative geometry,
 * which MPQ_IOC_QUEUE_INFO reports; nothing here trusts the header.
 */
#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "internal.h"

/* A create ioctl on /dev/mpq: its result, or -ENODEV without the module. */
int mpq_kmod_dev_ioctl(unsigned long cmd, void *args)
{
	int dev, ret;

	dev = open("/dev/" MPQ_DEVICE_NAME, O_RDWR | O_CLOEXEC);
	if (dev < 0)
		return errno == ENOENT ? -ENODEV : -errno;
	ret = ioctl(dev, cmd, args);
	if (ret < 0)
		ret = -errno;
	close(dev);
	return ret;
}

int mpq_kmod_queue_create(const struct mpq_geom *want, int *fd)
{
	struct mpq_queue_create args = {
		.size = sizeof(args),
		.flags = MPQ_CREATE_CLOEXEC |
			 (want->flags & (MPQ_QUEUE_JOINABLE | MPQ_QUEUE_UNBOUNDED)),
		.capacity = want->maxsize ? want->maxsize : want->capacity,
		.msg_max = want->msg_max,
	};
	int ret = mpq_kmod_dev_ioctl(MPQ_IOC_QUEUE_CREATE, &args);

	if (ret < 0)
		return ret;
	*fd = ret;
	return 0;
}

/* Returns 0, or -ENOTTY when fd is not a queue of the module. */
int mpq_kmod_queue_info(int fd, struct mpq_geom *g)
{
	struct mpq_queue_info info = { .size = sizeof(info) };

	if (ioctl(fd, MPQ_IOC_QUEUE_INFO, &info) < 0)
		return -errno;
	g->flags = info.flags;
	/* A module without the field bounds by the ring's capacity. */
	g->maxsize = info.maxsize ? info.maxsize :
		     info.flags & MPQ_QUEUE_UNBOUNDED ? 0 : info.capacity;
	g->capacity = info.capacity;
	g->msg_max = info.msg_max;
	g->slot_size = info.slot_size;
	g->data_off = info.data_off;
	g->map_size = info.map_size;
	g->id = info.id;
	return 0;
}

/*
 * A queue's blobs (struct mpq_queue_blob): NEW (*bytes in, *id out) and
 * OPEN (*id in, *bytes out) return a new fd, DROP 0; or -errno.
 */
int mpq_kmod_blob(int fd, unsigned long cmd, uint64_t *id, uint64_t *bytes)
{
	struct mpq_queue_blob b = { .id = *id, .bytes = *bytes,
				    .flags = MPQ_CREATE_CLOEXEC };
	int ret = ioctl(fd, cmd, &b);

	if (ret < 0)
		return -errno;
	*id = b.id;
	*bytes = b.bytes;
	return ret;
}

/* Wake the pollers waiting for the MPQ_POLL_* bits. */
void mpq_kmod_queue_wake(int fd, uint32_t bits)
{
	ioctl(fd, MPQ_IOC_QUEUE_WAKE, (unsigned long)bits);
}

int mpq_kmod_pipe_create(uint32_t ring_size, int duplex, int fds[2])
{
	struct mpq_pipe_create args = {
		.size = sizeof(args),
		.flags = MPQ_CREATE_CLOEXEC | (duplex ? MPQ_PIPE_DUPLEX : 0),
		.ring_size = ring_size,
	};
	int dev, ret;

	dev = open("/dev/" MPQ_DEVICE_NAME, O_RDWR | O_CLOEXEC);
	if (dev < 0)
		return errno == ENOENT ? -ENODEV : -errno;
	ret = ioctl(dev, MPQ_IOC_PIPE_CREATE, &args) < 0 ? -errno : 0;
	close(dev);
	if (ret)
		return ret;
	fds[0] = args.fds[0];
	fds[1] = args.fds[1];
	return 0;
}

/*
 * Returns 0, or -ENOTTY when fd is not a pipe end of the module. end and
 * flags (MPQ_PIPE_DUPLEX) may be NULL.
 */
int mpq_kmod_pipe_info(int fd, struct mpq_pipe_geom *g, int *end,
		       uint32_t *flags)
{
	struct mpq_pipe_info info = { .size = sizeof(info) };

	if (ioctl(fd, MPQ_IOC_PIPE_INFO, &info) < 0)
		return -errno;
	if (end)
		*end = (int)info.end;
	if (flags)
		*flags = info.flags;
	g->ring_size = info.ring_size;
	g->data_off[0] = info.data_off[0];
	g->data_off[1] = info.data_off[1];
	g->map_size = info.map_size;
	return 0;
}
