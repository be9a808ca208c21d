// SPDX-License-Identifier: GPL-2.0
/*
 * io_uring READ and WRITE on the module's object fds, in states where
 * ->poll() reports the fd ready but a read or write that may not block
 * cannot move anything: an unbounded queue whose messages wait in the
 * overflow (libmpq's to move in, not the kernel's), a pipe with less room
 * than the message being written, a pipe whose ring holds an unfinished
 * message. io_uring answers -EAGAIN after "ready" by arming its poll
 * again and retrying from task work, in the task itself, where nothing
 * but a retry limit (APOLL_MAX_RETRY, which Debian's 6.1 and 6.12 have)
 * ends the loop: not SIGKILL, since the task never leaves the kernel.
 * Each case must end: complete, or go to io-wq and die on SIGKILL. And
 * each try must be short or end on a signal: a read that walks a ring of
 * millions of empty frames 128 times kept a task past its SIGKILL for
 * minutes (found by kmod_fuzz). Run in the VM, as root, with mpq.ko
 * loaded.
 */
#include <liburing.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>

#include "kselftest_harness.h"
#include "kmod_helpers.h"

/*
 * In a child: submit one READ or WRITE of len bytes on fd and wait for its
 * completion; exit 0 whatever the result. The parent kills it after a
 * moment and then wants it gone: a child still there 10 s after SIGKILL
 * is stuck in the kernel.
 */
static int uring_op_ends_or_dies(int fd, bool write, size_t len)
{
	static char buf[1 << 16];
	pid_t pid;
	int status;

	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		struct io_uring ring;
		struct io_uring_sqe *sqe;
		struct io_uring_cqe *cqe;

		if (io_uring_queue_init(4, &ring, 0))
			_exit(3);
		sqe = io_uring_get_sqe(&ring);
		if (write)
			io_uring_prep_write(sqe, fd, buf, len, 0);
		else
			io_uring_prep_read(sqe, fd, buf, len, 0);
		io_uring_submit(&ring);
		io_uring_wait_cqe(&ring, &cqe);
		_exit(0);
	}
	usleep(300 * 1000);
	kill(pid, SIGKILL);
	for (int i = 0; i < 1000; i++) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid)
			return 0;
		if (r < 0)
			return -errno;
		usleep(10 * 1000);
	}
	return -ETIMEDOUT;	/* the child spins in the kernel, unkillable */
}

TEST(uring_read_of_a_queue_whose_messages_wait_in_the_overflow_ends)
{
	struct mpq_queue_create c = { .size = sizeof(c), .capacity = 4,
				      .msg_max = 64,
				      .flags = MPQ_QUEUE_UNBOUNDED |
					       MPQ_CREATE_CLOEXEC };
	struct mpq_queue_info i;
	struct mpq_queue_shm *shm;
	int dev = dev_open(), fd;

	ASSERT_LE(0, dev);
	fd = ioctl(dev, MPQ_IOC_QUEUE_CREATE, &c);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, queue_info(fd, &i));
	shm = mmap(NULL, i.map_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ASSERT_NE(MAP_FAILED, shm);
	/* What libmpq's put leaves when the ring is full: one in overflow. */
	shm->ovf_count = 1;
	EXPECT_EQ(0, uring_op_ends_or_dies(fd, false, 64));
	munmap(shm, i.map_size);
	close(fd);
	close(dev);
}

TEST(uring_write_larger_than_a_pipes_room_ends)
{
	static char fill[8192];
	struct mpq_pipe_info i;
	int dev = dev_open(), fds[2];
	ssize_t n;

	ASSERT_LE(0, dev);
	ASSERT_EQ(0, pipe_create(dev, MPQ_CREATE_CLOEXEC, 16384, fds));
	ASSERT_EQ(0, pipe_info(fds[1], &i));
	/* Fill the ring until a 4 KiB message no longer fits. */
	for (;;) {
		struct iovec v = { fill, 4096 };

		n = pwritev2(fds[1], &v, 1, -1, RWF_NOWAIT);
		if (n < 0) {
			n = -errno;
			break;
		}
	}
	ASSERT_EQ(-EAGAIN, n);
	/* Room for a small message (poll says writable), not for 4 KiB. */
	EXPECT_EQ(0, uring_op_ends_or_dies(fds[1], true, 4096));
	close(fds[0]);
	close(fds[1]);
	close(dev);
}

/*
 * A pipe whose reading ring a participant filled with a first frame and
 * then frames of one byte that never end the message, up to a zero word
 * just short of a lap: poll says readable, and each read walks
 * ring_size / 16 frames to find no message's end. io_uring's 128 retries
 * in task work then took minutes on a large ring, with SIGKILL unseen;
 * the walk must end on a signal.
 */
TEST(uring_read_of_a_pipe_full_of_endless_frames_dies_on_sigkill)
{
	struct mpq_frame first = { .len = 0, .flags = MPQ_FRAME_FIRST };
	struct mpq_frame middle = { .len = 1, .flags = 0 };
	uint64_t ring = 64 << 20, total = ring / 2, pos;
	struct mpq_pipe_shm *shm;
	struct mpq_pipe_info i;
	int dev = dev_open(), fds[2];
	char *data;

	ASSERT_LE(0, dev);
	ASSERT_EQ(0, pipe_create(dev, MPQ_CREATE_CLOEXEC, ring, fds));
	ASSERT_EQ(0, pipe_info(fds[0], &i));
	shm = mmap(NULL, i.map_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		   fds[0], 0);
	ASSERT_NE(MAP_FAILED, shm);
	/* End 0 reads ring 1. */
	data = (char *)shm + i.data_off[1];
	for (pos = 16; pos + 16 <= ring - 16; pos += 16)
		memcpy(data + pos, &middle, sizeof(middle));
	memcpy(data + sizeof(first), &total, sizeof(total));
	memcpy(data, &first, sizeof(first));
	__atomic_store_n(&shm->ring[1].tail, ring - 16, __ATOMIC_RELEASE);
	EXPECT_EQ(0, uring_op_ends_or_dies(fds[0], false, 64));
	munmap(shm, i.map_size);
	close(fds[0]);
	close(fds[1]);
	close(dev);
}

TEST_HARNESS_MAIN
