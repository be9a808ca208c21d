// SPDX-License-Identifier: GPL-2.0
/*
 * The mpq module's ABI, tested through raw ioctls and mmap on /dev/mpq:
 * creation, hostile arguments, mapping rules, the shmem backing that makes
 * shared futexes work, poll, and object lifetime. Runs in the test VM with
 * mpq.ko loaded; without /dev/mpq every test fails.
 */
#include <linux/futex.h>
#include <liburing.h>
#include <poll.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/syscall.h>

#include "kselftest_harness.h"
#include "kmod_helpers.h"

FIXTURE(dev) {
	int dev;
};

FIXTURE_SETUP(dev)
{
	self->dev = dev_open();
	ASSERT_LE(0, self->dev) TH_LOG("/dev/mpq: %s (is mpq.ko loaded?)",
				       strerror(errno));
}

FIXTURE_TEARDOWN(dev)
{
	close(self->dev);
}

TEST_F(dev, create_returns_a_queue_fd_with_its_geometry)
{
	struct mpq_queue_info i;
	int fd = queue_create(self->dev, 100, 1000);

	ASSERT_LE(0, fd);
	ASSERT_EQ(0, queue_info(fd, &i));
	ASSERT_EQ(128, i.capacity);		/* rounded up */
	ASSERT_EQ(1000, i.msg_max);
	ASSERT_EQ(0, i.slot_size % MPQ_SLOT_ALIGN);
	ASSERT_LE(sizeof(struct mpq_slot) + 1000, i.slot_size);
	ASSERT_LE(i.data_off + (uint64_t)i.capacity * i.slot_size, i.map_size);
	ASSERT_NE(0, i.id);
	ASSERT_EQ(FD_CLOEXEC, fcntl(fd, F_GETFD) & FD_CLOEXEC);
	close(fd);
}

TEST_F(dev, create_refuses_bad_struct_sizes)
{
	struct { struct mpq_queue_create c; uint64_t more[4]; } big = { 0 };

	big.c.capacity = 4;
	big.c.msg_max = 8;
	big.c.size = 0;
	ASSERT_EQ(-1, ioctl(self->dev, MPQ_IOC_QUEUE_CREATE, &big));
	ASSERT_EQ(EINVAL, errno);
	big.c.size = sizeof(big.c) - 8;
	ASSERT_EQ(-1, ioctl(self->dev, MPQ_IOC_QUEUE_CREATE, &big));
	ASSERT_EQ(EINVAL, errno);
	big.c.size = 1 << 20;
	ASSERT_EQ(-1, ioctl(self->dev, MPQ_IOC_QUEUE_CREATE, &big));
	ASSERT_EQ(E2BIG, errno);
	/* A newer caller's longer struct: fine while the extra is zero. */
	big.c.size = sizeof(big);
	big.more[2] = 1;
	ASSERT_EQ(-1, ioctl(self->dev, MPQ_IOC_QUEUE_CREATE, &big));
	ASSERT_EQ(E2BIG, errno);
	big.more[2] = 0;
	int fd = ioctl(self->dev, MPQ_IOC_QUEUE_CREATE, &big);

	ASSERT_LE(0, fd);
	close(fd);
}

TEST_F(dev, create_refuses_unknown_flags_and_reserved_fields)
{
	struct mpq_queue_create c = { .size = sizeof(c), .capacity = 4,
				      .msg_max = 8 };
	int bit;

	for (bit = 1; bit < 32; bit++) {
		c.flags = 1U << bit;
		if (c.flags & MPQ_QUEUE_CREATE_FLAGS)
			continue;
		ASSERT_EQ(-1, ioctl(self->dev, MPQ_IOC_QUEUE_CREATE, &c));
		ASSERT_EQ(EINVAL, errno);
	}
	c.flags = 0;
	for (bit = 0; bit < 4; bit++) {
		c.reserved[bit] = 1;
		ASSERT_EQ(-1, ioctl(self->dev, MPQ_IOC_QUEUE_CREATE, &c));
		ASSERT_EQ(EINVAL, errno);
		c.reserved[bit] = 0;
	}
}

TEST_F(dev, create_refuses_zero_and_absurd_lengths)
{
	ASSERT_EQ(-EINVAL, queue_create(self->dev, 0, 8));
	ASSERT_EQ(-EINVAL, queue_create(self->dev, 8, 0));
	ASSERT_EQ(-E2BIG, queue_create(self->dev, 0x80000001U, 8));
	ASSERT_EQ(-E2BIG, queue_create(self->dev, 0xffffffffU, 0xffffffffU));
	ASSERT_EQ(-E2BIG, queue_create(self->dev, 1, 0xffffffffU));
	ASSERT_EQ(-E2BIG, queue_create(self->dev, 1U << 30, 1U << 30));
	ASSERT_EQ(-E2BIG, queue_create(self->dev, 1U << 20, 4096));	/* > 1 GiB */
}

TEST_F(dev, bad_pointers_are_efault)
{
	void *hole = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS,
			  -1, 0);
	int fd = queue_create(self->dev, 4, 8);

	ASSERT_LE(0, fd);
	ASSERT_EQ(-1, ioctl(self->dev, MPQ_IOC_QUEUE_CREATE, NULL));
	ASSERT_EQ(EFAULT, errno);
	ASSERT_EQ(-1, ioctl(self->dev, MPQ_IOC_QUEUE_CREATE, (void *)1));
	ASSERT_EQ(EFAULT, errno);
	ASSERT_EQ(-1, ioctl(self->dev, MPQ_IOC_QUEUE_CREATE, hole));
	ASSERT_EQ(EFAULT, errno);
	ASSERT_EQ(-1, ioctl(self->dev, MPQ_IOC_QUEUE_CREATE,
			    (void *)0xffff800000000000ULL));
	ASSERT_EQ(EFAULT, errno);
	ASSERT_EQ(-1, ioctl(fd, MPQ_IOC_QUEUE_INFO, NULL));
	ASSERT_EQ(EFAULT, errno);
	ASSERT_EQ(-1, ioctl(fd, MPQ_IOC_QUEUE_INFO, hole));
	ASSERT_EQ(EFAULT, errno);
	close(fd);
	munmap(hole, 4096);
}

TEST_F(dev, info_honours_the_callers_struct_size)
{
	struct { struct mpq_queue_info i; uint64_t more[2]; } big;
	int fd = queue_create(self->dev, 4, 8);

	ASSERT_LE(0, fd);
	memset(&big, 0xff, sizeof(big));
	big.i.size = sizeof(big);
	ASSERT_EQ(0, ioctl(fd, MPQ_IOC_QUEUE_INFO, &big));
	ASSERT_EQ(sizeof(big.i), big.i.size);
	ASSERT_EQ(0, big.more[0]);	/* cleared past what the kernel knows */
	ASSERT_EQ(0, big.more[1]);
	big.i.size = 8;
	ASSERT_EQ(-1, ioctl(fd, MPQ_IOC_QUEUE_INFO, &big));
	ASSERT_EQ(EINVAL, errno);
	close(fd);
}

TEST_F(dev, unknown_ioctls_and_wake_bits_are_refused)
{
	int fd = queue_create(self->dev, 4, 8);

	ASSERT_LE(0, fd);
	ASSERT_EQ(-1, ioctl(self->dev, _IO(MPQ_IOC_MAGIC, 0x7f)));
	ASSERT_EQ(ENOTTY, errno);
	ASSERT_EQ(-1, ioctl(fd, _IO(MPQ_IOC_MAGIC, 0x7f)));
	ASSERT_EQ(ENOTTY, errno);
	ASSERT_EQ(-1, ioctl(fd, MPQ_IOC_QUEUE_CREATE, NULL));
	ASSERT_EQ(ENOTTY, errno);
	ASSERT_EQ(-1, ioctl(fd, MPQ_IOC_QUEUE_WAKE, 4UL));
	ASSERT_EQ(EINVAL, errno);
	ASSERT_EQ(-1, ioctl(fd, MPQ_IOC_QUEUE_WAKE, ~0UL));
	ASSERT_EQ(EINVAL, errno);
	ASSERT_EQ(0, ioctl(fd, MPQ_IOC_QUEUE_WAKE, (unsigned long)MPQ_POLL_ALL));
	close(fd);
}

TEST_F(dev, mmap_needs_offset_zero_whole_size_shared_no_exec)
{
	struct mpq_queue_info i;
	int fd = queue_create(self->dev, 4, 8);
	void *p;

	ASSERT_LE(0, fd);
	ASSERT_EQ(0, queue_info(fd, &i));
	p = mmap(NULL, i.map_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 4096);
	ASSERT_EQ(MAP_FAILED, p);
	ASSERT_EQ(EINVAL, errno);
	p = mmap(NULL, i.map_size - 4096, PROT_READ, MAP_SHARED, fd, 0);
	ASSERT_EQ(MAP_FAILED, p);
	ASSERT_EQ(EINVAL, errno);
	p = mmap(NULL, i.map_size + 4096, PROT_READ, MAP_SHARED, fd, 0);
	ASSERT_EQ(MAP_FAILED, p);
	ASSERT_EQ(EINVAL, errno);
	p = mmap(NULL, i.map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	ASSERT_EQ(MAP_FAILED, p);
	ASSERT_EQ(EINVAL, errno);
	p = mmap(NULL, i.map_size, PROT_READ | PROT_EXEC, MAP_SHARED, fd, 0);
	ASSERT_EQ(MAP_FAILED, p);
	ASSERT_EQ(EPERM, errno);
	p = mmap(NULL, i.map_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ASSERT_NE(MAP_FAILED, p);
	/* Nor can it be made executable or grown later. */
	ASSERT_EQ(-1, mprotect(p, i.map_size, PROT_READ | PROT_EXEC));
	ASSERT_EQ(MAP_FAILED, mremap(p, i.map_size, i.map_size + 4096, 0));
	ASSERT_EQ(0, munmap(p, i.map_size));
	close(fd);
}

TEST_F(dev, new_queue_memory_holds_the_formatted_header)
{
	struct mpq_queue_info i;
	struct mpq_queue_shm *shm;
	int fd = queue_create(self->dev, 8, 100);
	uint32_t k;

	ASSERT_LE(0, fd);
	ASSERT_EQ(0, queue_info(fd, &i));
	shm = mmap(NULL, i.map_size, PROT_READ, MAP_SHARED, fd, 0);
	ASSERT_NE(MAP_FAILED, shm);
	ASSERT_EQ(MPQ_QUEUE_MAGIC, shm->magic);
	ASSERT_EQ(MPQ_QUEUE_VERSION, shm->version);
	ASSERT_EQ(i.capacity, shm->capacity);
	ASSERT_EQ(i.map_size, shm->map_size);
	ASSERT_EQ(0, shm->head);
	ASSERT_EQ(0, shm->tail);
	for (k = 0; k < i.capacity; k++) {
		struct mpq_slot *s = (void *)((char *)shm + i.data_off +
					      (size_t)k * i.slot_size);
		ASSERT_EQ(k, s->seq);
	}
	munmap(shm, i.map_size);
	close(fd);
}

struct shared_map {
	int fd;
	size_t size;
	volatile uint64_t *word;
};

/* A new queue and one shared mapping of it, or NULL. */
static void *map_new(int dev, struct shared_map *m)
{
	struct mpq_queue_info i;
	void *p;

	m->fd = queue_create(dev, 8, 100);
	if (m->fd < 0 || queue_info(m->fd, &i))
		return NULL;
	m->size = i.map_size;
	p = mmap(NULL, m->size, PROT_READ | PROT_WRITE, MAP_SHARED, m->fd, 0);
	return p == MAP_FAILED ? NULL : p;
}

static int child_sees_and_writes(void *arg)
{
	struct shared_map *m = arg;
	volatile uint64_t *w = mmap(NULL, m->size, PROT_READ | PROT_WRITE,
				    MAP_SHARED, m->fd, 0);

	if (w == MAP_FAILED)
		return 1;
	if (w[600] != 0x1122334455667788ULL)	/* parent's store */
		return 2;
	w[601] = 0x8877665544332211ULL;
	return 0;
}

TEST_F(dev, every_process_that_holds_the_fd_maps_the_same_memory)
{
	struct shared_map m;
	volatile uint64_t *w;
	int sv[2];
	pid_t pid;

	w = map_new(self->dev, &m);
	ASSERT_NE(NULL, w);
	w[600] = 0x1122334455667788ULL;

	/* Inherited by fork, mapped anew in the child. */
	pid = spawn(child_sees_and_writes, &m);
	ASSERT_EQ(0, wait_child(pid, 10000));
	ASSERT_EQ(0x8877665544332211ULL, w[601]);

	/* Passed over a socket to a child that closed its inherited fd. */
	w[601] = 0;
	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	pid = fork();
	if (pid == 0) {
		close(m.fd);
		m.fd = recv_fd(sv[1]);
		_exit(m.fd < 0 ? 9 : child_sees_and_writes(&m));
	}
	ASSERT_EQ(0, send_fd(sv[0], m.fd));
	ASSERT_EQ(0, wait_child(pid, 10000));
	ASSERT_EQ(0x8877665544332211ULL, w[601]);
	munmap((void *)w, m.size);
	close(m.fd);
	close(sv[0]);
	close(sv[1]);
}

static long futex(uint32_t *uaddr, int op, uint32_t val,
		  const struct timespec *ts)
{
	return syscall(SYS_futex, uaddr, op, val, ts, NULL, 0);
}

static int child_futex_waits(void *arg)
{
	struct shared_map *m = arg;
	struct timespec ts = { .tv_sec = 20 };
	uint32_t *w = mmap(NULL, m->size, PROT_READ | PROT_WRITE, MAP_SHARED,
			   m->fd, 0);

	if (w == MAP_FAILED)
		return 1;
	while (__atomic_load_n(&w[1024], __ATOMIC_ACQUIRE) == 0) {
		/* A shared futex: keyed by the shmem page, not by the mm. */
		if (futex(&w[1024], FUTEX_WAIT, 0, &ts) < 0 &&
		    errno != EAGAIN && errno != EINTR)
			return errno == ETIMEDOUT ? 3 : 2;
	}
	return 0;
}

/*
 * The queue memory is shmem: a FUTEX_WAIT in one process, on its own
 * mapping, is woken by a FUTEX_WAKE from another process on another
 * mapping. On pages that are not file pages (vmalloc, remap_pfn_range)
 * the wait would fail with EFAULT and the wake would find no one.
 */
TEST_F(dev, queue_memory_carries_shared_futexes_across_processes)
{
	struct shared_map m;
	uint32_t *w;
	long woken = 0;
	int64_t end;
	pid_t pid;

	w = map_new(self->dev, &m);
	ASSERT_NE(NULL, w);
	pid = spawn(child_futex_waits, &m);
	/* Wake until the kernel reports it woke the child's waiter. */
	end = now_ns() + 10 * NSEC_PER_SEC;
	while (woken == 0 && now_ns() < end) {
		sleep_ms(10);
		woken = futex(&w[1024], FUTEX_WAKE, 1, NULL);
		ASSERT_LE(0, woken);
	}
	ASSERT_EQ(1, woken);
	__atomic_store_n(&w[1024], 1, __ATOMIC_RELEASE);
	futex(&w[1024], FUTEX_WAKE, 1, NULL);
	ASSERT_EQ(0, wait_child(pid, 10000));
	munmap(w, m.size);
	close(m.fd);
}

static short poll_now(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN | POLLOUT };

	return poll(&p, 1, 0) < 0 ? -1 : p.revents;
}

TEST(poll_reports_pollin_when_nonempty_pollout_when_not_full)
{
	struct mpq_queue_attr attr = { .maxsize = 2, .msgsize = 8,
				       .backend = MPQ_BACKEND_KMOD };
	struct mpq_queue *q;
	char buf[8];
	size_t len;
	int fd;

	ASSERT_EQ(0, mpq_queue_new(&q, &attr));
	fd = mpq_queue_fileno(q);
	ASSERT_EQ(POLLOUT, poll_now(fd));
	ASSERT_EQ(0, mpq_queue_put_nowait(q, "a", 1));
	ASSERT_EQ(POLLIN | POLLOUT, poll_now(fd));
	ASSERT_EQ(0, mpq_queue_put_nowait(q, "b", 1));
	ASSERT_EQ(POLLIN, poll_now(fd));
	len = sizeof(buf);
	ASSERT_EQ(0, mpq_queue_get_nowait(q, buf, &len));
	len = sizeof(buf);
	ASSERT_EQ(0, mpq_queue_get_nowait(q, buf, &len));
	ASSERT_EQ(POLLOUT, poll_now(fd));
	mpq_queue_free(q);
}

struct waiter {
	struct mpq_queue *q;
	int how;		/* 0 poll, 1 epoll LT, 2 epoll ET */
	short events;
};

/* Sleep in poll/epoll until the queue becomes ready; 0 when it did. */
static int wait_ready(void *arg)
{
	struct waiter *w = arg;
	int fd = mpq_queue_fileno(w->q), ep, n, round;
	struct epoll_event ev = { 0 };

	if (w->how == 0) {
		struct pollfd p = { .fd = fd, .events = w->events };

		n = poll(&p, 1, 20000);
		return n == 1 && (p.revents & w->events) ? 0 : 1;
	}
	ep = epoll_create1(0);
	ev.events = (w->events == POLLIN ? EPOLLIN : EPOLLOUT) |
		    (w->how == 2 ? EPOLLET : 0);
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev))
		return 2;
	/* Twice: the second wake needs the kernel to have re-armed. */
	for (round = 0; round < 2; round++) {
		char buf[8];
		size_t len = sizeof(buf);

		n = epoll_wait(ep, &ev, 1, 20000);
		if (n != 1)
			return 3 + round;
		if (w->events == POLLIN &&
		    mpq_queue_get_nowait(w->q, buf, &len))
			return 5;
		if (w->events == POLLOUT &&
		    mpq_queue_put_nowait(w->q, "z", 1))
			return 6;
	}
	return 0;
}

static void check_wakeup(struct __test_metadata *_metadata, int how,
			 short events)
{
	struct mpq_queue_attr attr = { .maxsize = 1, .msgsize = 8,
				       .backend = MPQ_BACKEND_KMOD };
	struct waiter w = { .how = how, .events = events };
	char buf[8];
	size_t len;
	int round, rounds = how ? 2 : 1, full;
	pid_t pid;

	ASSERT_EQ(0, mpq_queue_new(&w.q, &attr));
	full = mpq_queue_maxsize(w.q);
	if (events == POLLOUT)
		while (mpq_queue_full(w.q) == 0)
			ASSERT_EQ(0, mpq_queue_put_nowait(w.q, "f", 1));
	pid = spawn(wait_ready, &w);
	for (round = 0; round < rounds; round++) {
		sleep_ms(100);
		ASSERT_TRUE(child_running(pid)) TH_LOG("woke too early");
		if (events == POLLIN) {
			ASSERT_EQ(0, mpq_queue_put(w.q, "p", 1, 5 * NSEC_PER_SEC));
		} else {
			len = sizeof(buf);
			ASSERT_EQ(0, mpq_queue_get(w.q, buf, &len, 5 * NSEC_PER_SEC));
		}
		/* Wait until the child consumed (or refilled) it. */
		while (child_running(pid) &&
		       mpq_queue_qsize(w.q) != (events == POLLIN ? 0 : full))
			sleep_ms(1);
	}
	ASSERT_EQ(0, wait_child(pid, 20000));
	mpq_queue_free(w.q);
}

TEST(poll_sleeper_wakes_on_put)
{
	check_wakeup(_metadata, 0, POLLIN);
}

TEST(poll_sleeper_wakes_on_get_when_full)
{
	check_wakeup(_metadata, 0, POLLOUT);
}

TEST(epoll_level_triggered_wakes_on_every_put)
{
	check_wakeup(_metadata, 1, POLLIN);
}

TEST(epoll_edge_triggered_wakes_on_every_put)
{
	check_wakeup(_metadata, 2, POLLIN);
}

TEST(epoll_wakes_writer_on_get)
{
	check_wakeup(_metadata, 1, POLLOUT);
}

/*
 * The object lives while an fd or a mapping holds it, and not longer: the
 * module's own counters prove the memory is released.
 */
TEST_F(dev, memory_is_freed_after_the_last_fd_and_mapping)
{
	long objs = param_long("objects"), pages = param_long("pages");
	struct mpq_queue_info i;
	void *p;
	int fd;

	ASSERT_LE(0, objs);
	ASSERT_LE(0, pages);
	fd = queue_create(self->dev, 64, 4000);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, queue_info(fd, &i));
	ASSERT_EQ(objs + 1, param_long("objects"));
	ASSERT_EQ(pages + (long)(i.map_size / 4096), param_long("pages"));
	p = mmap(NULL, i.map_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ASSERT_NE(MAP_FAILED, p);
	close(fd);
	/* The mapping alone keeps it alive, and usable. */
	ASSERT_EQ(objs + 1, param_long("objects"));
	((struct mpq_queue_shm *)p)->nonempty = 7;
	ASSERT_EQ(0, munmap(p, i.map_size));
	ASSERT_EQ(objs, param_long("objects"));
	ASSERT_EQ(pages, param_long("pages"));
}

static int hold_and_die(void *arg)
{
	struct shared_map *m = arg;
	void *p = mmap(NULL, m->size, PROT_READ, MAP_SHARED, m->fd, 0);

	if (p == MAP_FAILED)
		return 1;
	close(m->fd);
	pause();		/* killed here, mapping held */
	return 0;
}

TEST_F(dev, memory_is_freed_when_a_killed_holder_was_the_last)
{
	long objs = param_long("objects"), pages = param_long("pages");
	struct mpq_queue_info i;
	struct shared_map m;
	pid_t pid;

	m.fd = queue_create(self->dev, 16, 100);
	ASSERT_LE(0, m.fd);
	ASSERT_EQ(0, queue_info(m.fd, &i));
	m.size = i.map_size;
	pid = spawn(hold_and_die, &m);
	close(m.fd);
	sleep_ms(50);
	ASSERT_EQ(objs + 1, param_long("objects"));
	kill(pid, SIGKILL);
	ASSERT_EQ(128 + SIGKILL, wait_child(pid, 10000));
	ASSERT_EQ(objs, param_long("objects"));
	ASSERT_EQ(pages, param_long("pages"));
}

/*
 * An fd or a mapping keeps the module loaded: its code still serves them.
 * (The successful rmmod at the end of every VM run is checked by run-vm.)
 */
TEST_F(dev, module_cannot_unload_while_an_object_lives)
{
	struct mpq_queue_info i;
	void *p;
	int fd = queue_create(self->dev, 4, 8);

	ASSERT_LE(0, fd);
	ASSERT_EQ(0, queue_info(fd, &i));
	p = mmap(NULL, i.map_size, PROT_READ, MAP_SHARED, fd, 0);
	ASSERT_NE(MAP_FAILED, p);
	close(self->dev);
	self->dev = -1;
	ASSERT_EQ(-1, syscall(SYS_delete_module, "mpq", O_NONBLOCK));
	ASSERT_TRUE(errno == EBUSY || errno == EWOULDBLOCK);
	close(fd);
	ASSERT_EQ(-1, syscall(SYS_delete_module, "mpq", O_NONBLOCK));
	ASSERT_TRUE(errno == EBUSY || errno == EWOULDBLOCK);
	munmap(p, i.map_size);
}

/*
 * Garbage over every byte of the shared memory, then every operation the
 * kernel offers on the object: the kernel reads the ring only through its
 * private geometry, so nothing it does can go out of bounds. The run's
 * kernel-log check would catch a splat.
 */
TEST_F(dev, garbage_in_shared_memory_cannot_hurt_the_kernel)
{
	uint64_t seed = 42;
	int round;

	for (round = 0; round < 50; round++) {
		struct mpq_queue_info i, j;
		uint64_t *p;
		size_t k;
		int fd = queue_create(self->dev, 1U << (round % 8), 1 + round * 37);

		ASSERT_LE(0, fd);
		ASSERT_EQ(0, queue_info(fd, &i));
		p = mmap(NULL, i.map_size, PROT_READ | PROT_WRITE, MAP_SHARED,
			 fd, 0);
		ASSERT_NE(MAP_FAILED, p);
		for (k = 0; k < i.map_size / 8; k++)
			p[k] = round & 1 ? rnd(&seed) : ~0ULL;
		ASSERT_LE(0, poll_now(fd));
		/* The kernel's own get and put on the garbage: errors only. */
		char buf[4096];

		fcntl(fd, F_SETFL, O_NONBLOCK);
		k = read(fd, buf, sizeof(buf));
		ASSERT_TRUE((ssize_t)k >= 0 || errno == EAGAIN || errno == EIO ||
			    errno == EMSGSIZE) TH_LOG("read: %s", strerror(errno));
		k = write(fd, buf, i.msg_max < 100 ? i.msg_max : 100);
		ASSERT_TRUE((ssize_t)k >= 0 || errno == EAGAIN)
			TH_LOG("write: %s", strerror(errno));
		ASSERT_EQ(0, ioctl(fd, MPQ_IOC_QUEUE_WAKE,
				   (unsigned long)MPQ_POLL_ALL));
		ASSERT_EQ(0, queue_info(fd, &j));
		ASSERT_EQ(0, memcmp(&i, &j, sizeof(i)));
		munmap(p, i.map_size);
		close(fd);
	}
}

TEST_F(dev, pipe_create_returns_two_ends_with_their_geometry)
{
	struct mpq_pipe_info i[2];
	int fds[2], k;

	ASSERT_EQ(0, pipe_create(self->dev, MPQ_CREATE_CLOEXEC | MPQ_PIPE_DUPLEX,
				 8192, fds));
	for (k = 0; k < 2; k++) {
		memset(&i[k], 0, sizeof(i[k]));
		i[k].size = sizeof(i[k]);
		ASSERT_EQ(0, ioctl(fds[k], MPQ_IOC_PIPE_INFO, &i[k]));
		ASSERT_EQ(k, i[k].end);
		ASSERT_EQ(8192, i[k].ring_size);
		ASSERT_EQ(MPQ_PIPE_DUPLEX, i[k].flags);
		ASSERT_LE(i[k].data_off[1] + 8192, i[k].map_size);
		ASSERT_EQ(FD_CLOEXEC, fcntl(fds[k], F_GETFD) & FD_CLOEXEC);
	}
	ASSERT_EQ(i[0].id, i[1].id);
	close(fds[0]);
	close(fds[1]);
}

TEST_F(dev, pipe_create_refuses_bad_arguments)
{
	struct mpq_pipe_create c = { .size = sizeof(c), .ring_size = 4096 };
	int fds[2], k;

	ASSERT_EQ(-EINVAL, pipe_create(self->dev, 1U << 7, 4096, fds));
	ASSERT_EQ(-EINVAL, pipe_create(self->dev, 0, 4095, fds));
	ASSERT_EQ(-EINVAL, pipe_create(self->dev, 0, 2048, fds));
	ASSERT_EQ(-EINVAL, pipe_create(self->dev, 0, 0, fds));
	ASSERT_EQ(-E2BIG, pipe_create(self->dev, 0, 1U << 31, fds));
	for (k = 0; k < 4; k++) {
		c.reserved[k] = 1;
		ASSERT_EQ(-1, ioctl(self->dev, MPQ_IOC_PIPE_CREATE, &c));
		ASSERT_EQ(EINVAL, errno);
		c.reserved[k] = 0;
	}
	c.size = 8;
	ASSERT_EQ(-1, ioctl(self->dev, MPQ_IOC_PIPE_CREATE, &c));
	ASSERT_EQ(EINVAL, errno);
	ASSERT_EQ(-1, ioctl(self->dev, MPQ_IOC_PIPE_CREATE, NULL));
	ASSERT_EQ(EFAULT, errno);
	/* Read-only memory: the fds cannot be written back, none leaks. */
	c.size = sizeof(c);
	void *ro = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memcpy(ro, &c, sizeof(c));
	mprotect(ro, 4096, PROT_READ);
	long objs = param_long("objects");
	int before = dup(0);

	close(before);
	ASSERT_EQ(-1, ioctl(self->dev, MPQ_IOC_PIPE_CREATE, ro));
	ASSERT_EQ(EFAULT, errno);
	k = dup(0);
	ASSERT_EQ(before, k);		/* the lowest fd is free again */
	close(k);
	sleep_ms(10);			/* the failed ends' deferred release */
	ASSERT_EQ(objs, param_long("objects"));
	munmap(ro, 4096);
}

TEST_F(dev, closing_one_end_hangs_up_the_other)
{
	struct pollfd p;
	int fds[2];

	ASSERT_EQ(0, pipe_create(self->dev, MPQ_PIPE_DUPLEX, 4096, fds));
	p.fd = fds[1];
	p.events = POLLIN | POLLOUT;
	ASSERT_EQ(1, poll(&p, 1, 0));
	ASSERT_EQ(POLLOUT, p.revents);
	close(fds[0]);
	ASSERT_EQ(1, poll(&p, 1, 0));
	ASSERT_TRUE(p.revents & POLLHUP);
	ASSERT_FALSE(p.revents & POLLOUT);
	close(fds[1]);
}

static int hold_end_and_die(void *arg)
{
	int *fds = arg;

	close(fds[1]);
	pause();
	return 0;
}

TEST_F(dev, a_dead_holder_hangs_up_its_end_and_the_pipe_is_freed)
{
	long objs = param_long("objects"), pages = param_long("pages");
	struct pollfd p;
	int fds[2];
	pid_t pid;

	ASSERT_EQ(0, pipe_create(self->dev, MPQ_PIPE_DUPLEX, 4096, fds));
	pid = spawn(hold_end_and_die, fds);
	close(fds[0]);			/* only the child holds end 0 now */
	p.fd = fds[1];
	p.events = POLLIN;
	ASSERT_EQ(0, poll(&p, 1, 100));
	kill(pid, SIGKILL);
	ASSERT_EQ(1, poll(&p, 1, 5000));	/* woken by the death */
	ASSERT_TRUE(p.revents & POLLHUP);
	ASSERT_EQ(128 + SIGKILL, wait_child(pid, 5000));
	ASSERT_EQ(objs + 1, param_long("objects"));
	close(fds[1]);
	ASSERT_EQ(objs, param_long("objects"));
	ASSERT_EQ(pages, param_long("pages"));
}

static void kmod_pipe(struct __test_metadata *_metadata, struct mpq_conn **a,
		      struct mpq_conn **b, uint32_t bufsize)
{
	struct mpq_pipe_attr attr = { .backend = MPQ_BACKEND_KMOD,
				      .bufsize = bufsize };

	ASSERT_EQ(0, mpq_pipe(a, b, 1, &attr));
}

/* read(2)/write(2) on an end move whole messages, in the library's frames. */
TEST(read_and_write_on_an_end_move_whole_messages)
{
	struct mpq_conn *a, *b;
	char buf[64], big[4096] = { 0 };
	size_t len = sizeof(buf);
	int fa, fb;

	kmod_pipe(_metadata, &a, &b, 4096);
	fa = mpq_conn_fileno(a);
	fb = mpq_conn_fileno(b);
	ASSERT_EQ(5, write(fa, "hello", 5));
	ASSERT_EQ(0, mpq_conn_recv_bytes_into(b, buf, &len, 0));
	ASSERT_EQ(5, len);
	ASSERT_EQ(0, memcmp(buf, "hello", 5));
	ASSERT_EQ(0, mpq_conn_send_bytes(b, "world!", 6, 0));
	ASSERT_EQ(-1, read(fa, buf, 3));	/* too short: it stays */
	ASSERT_EQ(EMSGSIZE, errno);
	ASSERT_EQ(6, read(fa, buf, sizeof(buf)));
	ASSERT_EQ(0, memcmp(buf, "world!", 6));
	/* More than a frame (a quarter ring), less than half a ring. */
	memset(big, 'z', 1500);
	ASSERT_EQ(1500, write(fb, big, 1500));
	ASSERT_EQ(1500, read(fa, big + 2000, 2000));
	ASSERT_EQ(0, memcmp(big, big + 2000, 1500));
	ASSERT_EQ(-1, write(fa, big, 2049));	/* over half the ring */
	ASSERT_EQ(EMSGSIZE, errno);
	ASSERT_EQ(0, write(fa, "", 0));		/* an empty message */
	len = sizeof(buf);
	ASSERT_EQ(0, mpq_conn_recv_bytes_into(b, buf, &len, 0));
	ASSERT_EQ(0, len);
	mpq_conn_close(b);
	ASSERT_EQ(0, read(fa, buf, sizeof(buf)));	/* end of file */
	ASSERT_EQ(-1, write(fa, "x", 1));
	ASSERT_EQ(EPIPE, errno);
	mpq_conn_free(a);
	mpq_conn_free(b);
}

static int send_late(void *arg)
{
	struct mpq_conn **ends = arg;

	sleep_ms(100);
	return mpq_conn_send_bytes(ends[0], "async hello", 11, MPQ_FOREVER) ? 1 : 0;
}

/* io_uring READ on an end completes when a message comes, not before. */
TEST(io_uring_read_completes_asynchronously_when_a_message_arrives)
{
	struct mpq_conn *ends[2];
	struct io_uring_cqe *cqe;
	struct io_uring_sqe *sqe;
	struct io_uring ring;
	char buf[64] = { 0 };
	pid_t pid;

	kmod_pipe(_metadata, &ends[0], &ends[1], 0);
	ASSERT_EQ(0, io_uring_queue_init(4, &ring, 0));
	sqe = io_uring_get_sqe(&ring);
	io_uring_prep_read(sqe, mpq_conn_fileno(ends[1]), buf, sizeof(buf), 0);
	ASSERT_EQ(1, io_uring_submit(&ring));
	ASSERT_EQ(-EAGAIN, io_uring_peek_cqe(&ring, &cqe));	/* pending */
	pid = spawn(send_late, ends);
	ASSERT_EQ(0, io_uring_wait_cqe(&ring, &cqe));
	ASSERT_EQ(11, cqe->res);
	ASSERT_EQ(0, memcmp(buf, "async hello", 11));
	io_uring_cqe_seen(&ring, cqe);

	/* And WRITE, read back by the library. */
	sqe = io_uring_get_sqe(&ring);
	io_uring_prep_write(sqe, mpq_conn_fileno(ends[1]), "uring", 5, 0);
	ASSERT_EQ(1, io_uring_submit(&ring));
	ASSERT_EQ(0, io_uring_wait_cqe(&ring, &cqe));
	ASSERT_EQ(5, cqe->res);
	io_uring_cqe_seen(&ring, cqe);
	size_t len = sizeof(buf);

	ASSERT_EQ(0, mpq_conn_recv_bytes_into(ends[0], buf, &len, 0));
	ASSERT_EQ(0, memcmp(buf, "uring", 5));
	ASSERT_EQ(0, wait_child(pid, 5000));
	io_uring_queue_exit(&ring);
	mpq_conn_free(ends[0]);
	mpq_conn_free(ends[1]);
}

/* Garbage over a pipe's whole memory: read, write and poll stay sane. */
TEST_F(dev, garbage_in_a_pipe_cannot_hurt_the_kernel)
{
	uint64_t seed = 9;
	int round;

	for (round = 0; round < 40; round++) {
		struct mpq_pipe_info i = { .size = sizeof(i) };
		char buf[256];
		uint64_t *p;
		size_t k;
		int fds[2];

		ASSERT_EQ(0, pipe_create(self->dev, MPQ_PIPE_DUPLEX, 4096, fds));
		ASSERT_EQ(0, ioctl(fds[0], MPQ_IOC_PIPE_INFO, &i));
		p = mmap(NULL, i.map_size, PROT_READ | PROT_WRITE, MAP_SHARED,
			 fds[0], 0);
		ASSERT_NE(MAP_FAILED, p);
		ASSERT_EQ(3, write(fds[1], "abc", 3));
		for (k = 0; k < i.map_size / 8; k++)
			if (round % 3 == 0 || rnd(&seed) % 8 == 0)
				p[k] = rnd(&seed) >> (round % 64);
		fcntl(fds[0], F_SETFL, O_NONBLOCK);
		fcntl(fds[1], F_SETFL, O_NONBLOCK);
		k = read(fds[0], buf, sizeof(buf));
		ASSERT_TRUE((ssize_t)k >= 0 || errno == EIO || errno == EAGAIN ||
			    errno == EMSGSIZE) TH_LOG("read: %s", strerror(errno));
		k = write(fds[0], buf, 100);
		ASSERT_TRUE((ssize_t)k >= 0 || errno == EIO || errno == EAGAIN)
			TH_LOG("write: %s", strerror(errno));
		ASSERT_LE(0, poll_now(fds[0]));
		ASSERT_LE(0, poll_now(fds[1]));
		munmap(p, i.map_size);
		close(fds[0]);
		close(fds[1]);
	}
}

static void kmod_queue(struct __test_metadata *_metadata, struct mpq_queue **q,
		       uint32_t maxsize, int64_t spin)
{
	struct mpq_queue_attr attr = { .maxsize = maxsize, .msgsize = 64,
				       .backend = MPQ_BACKEND_KMOD,
				       .spin_ns = spin };

	ASSERT_EQ(0, mpq_queue_new(q, &attr));
}

/* read(2)/write(2) on a queue fd get and put one message, as the library. */
TEST(read_and_write_on_a_queue_fd_get_and_put_messages)
{
	struct mpq_queue *q;
	char buf[128];
	size_t len = sizeof(buf);
	int fd;

	kmod_queue(_metadata, &q, 2, 0);
	fd = mpq_queue_fileno(q);
	ASSERT_EQ(5, write(fd, "hello", 5));
	ASSERT_EQ(0, mpq_queue_get_nowait(q, buf, &len));
	ASSERT_EQ(5, len);
	ASSERT_EQ(0, memcmp(buf, "hello", 5));
	ASSERT_EQ(0, mpq_queue_put_nowait(q, "world!", 6));
	ASSERT_EQ(-1, read(fd, buf, 3));		/* too short: it stays */
	ASSERT_EQ(EMSGSIZE, errno);
	ASSERT_EQ(1, mpq_queue_qsize(q));
	ASSERT_EQ(6, read(fd, buf, sizeof(buf)));
	ASSERT_EQ(0, memcmp(buf, "world!", 6));
	ASSERT_EQ(-1, write(fd, buf, 65));		/* over msgsize */
	ASSERT_EQ(EMSGSIZE, errno);
	ASSERT_EQ(1, write(fd, "a", 1));
	ASSERT_EQ(1, write(fd, "b", 1));
	fcntl(fd, F_SETFL, O_NONBLOCK);
	ASSERT_EQ(-1, write(fd, "c", 1));		/* full */
	ASSERT_EQ(EAGAIN, errno);
	ASSERT_EQ(1, read(fd, buf, sizeof(buf)));
	ASSERT_EQ('a', buf[0]);
	ASSERT_EQ(1, read(fd, buf, sizeof(buf)));
	ASSERT_EQ(-1, read(fd, buf, sizeof(buf)));	/* empty */
	ASSERT_EQ(EAGAIN, errno);
	mpq_queue_free(q);
}

/*
 * A write(2) whose copy faults has claimed its slot already: it is
 * published dropped, as a dead producer's claim, and counts no task. A
 * get then finds nothing (the length above msgsize written before,
 * which the library now reads as an out-of-line message's, made every
 * get into a msgsize buffer -EMSGSIZE, the slot never passed) and join
 * does not wait for a task that never was.
 */
TEST(a_write_whose_copy_faults_leaves_nothing_and_no_task)
{
	struct mpq_queue_attr attr = { .maxsize = 4, .msgsize = 64,
				       .backend = MPQ_BACKEND_KMOD,
				       .flags = MPQ_QUEUE_F_JOINABLE };
	void *hole = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS,
			  -1, 0);
	struct mpq_queue *q;
	char buf[64];
	size_t len = sizeof(buf);

	ASSERT_NE(MAP_FAILED, hole);
	ASSERT_EQ(0, mpq_queue_new(&q, &attr));
	ASSERT_EQ(-1, write(mpq_queue_fileno(q), hole, 8));
	ASSERT_EQ(EFAULT, errno);
	ASSERT_EQ(-EAGAIN, mpq_queue_get_nowait(q, buf, &len));
	ASSERT_EQ(0, mpq_queue_join(q, 0));
	ASSERT_EQ(0, mpq_queue_put_nowait(q, "after", 5));
	ASSERT_EQ(0, mpq_queue_get_nowait(q, buf, &len));
	ASSERT_EQ(5, len);
	ASSERT_EQ(0, memcmp(buf, "after", 5));
	mpq_queue_free(q);
	munmap(hole, 4096);
}

/*
 * A run (put_array on a queue with one producer and one consumer) comes
 * out of read(2) a message per call, in order; its last frees it (the
 * next read finds what follows it); poll and write(2) count its messages
 * against maxsize, including those read(2) took from it.
 */
TEST(read_takes_a_run_a_message_at_a_time_and_poll_counts_its_messages)
{
	struct mpq_queue_attr attr = { .maxsize = 16, .msgsize = 64,
				       .backend = MPQ_BACKEND_KMOD,
				       .flags = MPQ_QUEUE_F_ONE_PRODUCER |
						MPQ_QUEUE_F_ONE_CONSUMER };
	uint64_t in[16], v;
	struct mpq_queue *q;
	char buf[128];
	int fd, i;

	for (i = 0; i < 16; i++)
		in[i] = 100 + i;
	ASSERT_EQ(0, mpq_queue_new(&q, &attr));
	fd = mpq_queue_fileno(q);
	fcntl(fd, F_SETFL, O_NONBLOCK);
	ASSERT_EQ(16, mpq_queue_put_array(q, in, 8, 16, 0));
	/* maxsize messages, in far fewer than 16 slots: full all the same. */
	ASSERT_EQ(POLLIN, poll_now(fd));
	ASSERT_EQ(-1, write(fd, "x", 1));
	ASSERT_EQ(EAGAIN, errno);
	ASSERT_EQ(-1, read(fd, buf, 4));		/* too short: it stays */
	ASSERT_EQ(EMSGSIZE, errno);
	for (i = 0; i < 15; i++) {
		ASSERT_EQ(8, read(fd, &v, 8));
		ASSERT_EQ(in[i], v);
		/* Each message read leaves room for one. */
		ASSERT_EQ(POLLIN | POLLOUT, poll_now(fd));
	}
	ASSERT_EQ(0, mpq_queue_put(q, "tail", 4, 0));
	ASSERT_EQ(8, read(fd, &v, 8));
	ASSERT_EQ(in[15], v);
	ASSERT_EQ(4, read(fd, buf, sizeof(buf)));	/* after the run */
	ASSERT_EQ(0, memcmp(buf, "tail", 4));
	ASSERT_EQ(-1, read(fd, buf, sizeof(buf)));
	ASSERT_EQ(EAGAIN, errno);
	ASSERT_EQ(0, mpq_queue_qsize(q));
	/* Freed: a run goes in again, and the library takes it. */
	ASSERT_EQ(16, mpq_queue_put_array(q, in, 8, 16, 0));
	ASSERT_EQ(8, read(fd, &v, 8));
	ASSERT_EQ(15, mpq_queue_get_array(q, in, 8, 16, 0));
	ASSERT_EQ(POLLOUT, poll_now(fd));
	mpq_queue_free(q);
}

/*
 * A queue of 8-byte messages has 16-byte slots, where a run keeps its
 * count and size in its second slot's data: read(2) takes such a run a
 * message per call, and the run is freed after its last (a second run
 * goes in). An out-of-line message, its length in the slot's len, is
 * EMSGSIZE to read(2) and stays for the library's get.
 */
TEST(read_takes_runs_of_16_byte_slots_and_leaves_out_of_line_messages)
{
	struct mpq_queue_attr attr = { .maxsize = 32, .msgsize = 8,
				       .backend = MPQ_BACKEND_KMOD };
	struct mpq_queue_info i = { .size = sizeof(i) };
	uint64_t in[32], v = 0;
	char big[100], out[200];
	size_t len = sizeof(out);
	struct mpq_queue *q;
	int fd, k, round;

	for (k = 0; k < 32; k++)
		in[k] = 0x5151000000000000ULL + k;
	memset(big, 'b', sizeof(big));
	ASSERT_EQ(0, mpq_queue_new(&q, &attr));
	fd = mpq_queue_fileno(q);
	fcntl(fd, F_SETFL, O_NONBLOCK);
	ASSERT_EQ(0, ioctl(fd, MPQ_IOC_QUEUE_INFO, &i));
	ASSERT_EQ(16, i.slot_size);
	for (round = 0; round < 2; round++) {
		ASSERT_EQ(16, mpq_queue_put_array(q, in, 8, 16, 0));
		for (k = 0; k < 16; k++) {
			ASSERT_EQ(8, read(fd, &v, 8));
			ASSERT_EQ(in[k], v);
		}
		ASSERT_EQ(-1, read(fd, &v, 8));
		ASSERT_EQ(EAGAIN, errno);
		ASSERT_EQ(0, mpq_queue_qsize(q));
	}
	ASSERT_EQ(0, mpq_queue_put(q, big, sizeof(big), 0));
	ASSERT_EQ(-1, read(fd, out, sizeof(out)));
	ASSERT_EQ(EMSGSIZE, errno);
	ASSERT_EQ(1, mpq_queue_qsize(q));
	ASSERT_EQ(0, mpq_queue_get(q, out, &len, 0));
	ASSERT_EQ(sizeof(big), len);
	ASSERT_EQ(0, memcmp(big, out, len));
	mpq_queue_free(q);
}

/*
 * On a queue of many consumers read(2) takes a run under its busy bit, as
 * the library's consumers do: while a peek's window holds the run,
 * read(2) finds nothing (EAGAIN, and poll no POLLIN), and a read(2) that
 * blocks meanwhile wakes when the window is released and takes the next
 * message; poll counts against maxsize what read(2) took from the run.
 */
TEST(read_takes_from_a_run_of_a_queue_of_many_consumers_under_its_bit)
{
	struct mpq_queue_attr attr = { .maxsize = 32, .msgsize = 64,
				       .backend = MPQ_BACKEND_KMOD };
	uint64_t in[32], v = 0;
	struct mpq_msg m = { 0 };
	struct mpq_queue *q;
	int fd, i, st;
	pid_t pid;

	for (i = 0; i < 32; i++)
		in[i] = 500 + i;
	ASSERT_EQ(0, mpq_queue_new(&q, &attr));
	fd = mpq_queue_fileno(q);
	fcntl(fd, F_SETFL, O_NONBLOCK);
	ASSERT_EQ(32, mpq_queue_put_array(q, in, 8, 32, 0));
	ASSERT_EQ(POLLIN, poll_now(fd));
	ASSERT_EQ(8, read(fd, &v, 8));
	ASSERT_EQ(in[0], v);
	/* One taken from the run: room for one, and only one. */
	ASSERT_EQ(POLLIN | POLLOUT, poll_now(fd));
	ASSERT_EQ(0, mpq_queue_peek(q, &m, 0));
	ASSERT_EQ(8, m.len);
	ASSERT_EQ(0, memcmp(m.data, &in[1], 8));
	/* The window holds the run: nothing for read(2) now. */
	ASSERT_EQ(-1, read(fd, &v, 8));
	ASSERT_EQ(EAGAIN, errno);
	ASSERT_EQ(POLLOUT, poll_now(fd));
	/* Blocking (the flag is the open file's: the child's too). */
	fcntl(fd, F_SETFL, 0);
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0)	/* blocks until the window lets the run go */
		_exit(read(fd, &v, 8) == 8 && v == in[2] ? 0 : 1);
	sleep_ms(100);
	ASSERT_TRUE(child_running(pid));
	ASSERT_EQ(0, mpq_queue_release(q, &m));
	ASSERT_EQ(pid, waitpid(pid, &st, 0));
	ASSERT_TRUE(WIFEXITED(st));
	ASSERT_EQ(0, WEXITSTATUS(st));
	fcntl(fd, F_SETFL, O_NONBLOCK);
	for (i = 3; i < 32; i++) {
		ASSERT_EQ(8, read(fd, &v, 8));
		ASSERT_EQ(in[i], v);
	}
	ASSERT_EQ(-1, read(fd, &v, 8));
	ASSERT_EQ(EAGAIN, errno);
	ASSERT_EQ(0, mpq_queue_qsize(q));
	/* Freed: the ring takes maxsize messages again, no more. */
	ASSERT_EQ(32, mpq_queue_put_array(q, in, 8, 32, 0));
	ASSERT_EQ(-EAGAIN, mpq_queue_put(q, &v, 8, 0));
	ASSERT_EQ(32, mpq_queue_get_array(q, in, 8, 32, 0));
	mpq_queue_free(q);
}

static int queue_put_late(void *arg)
{
	sleep_ms(100);
	return mpq_queue_put(arg, "async", 5, MPQ_FOREVER) ? 1 : 0;
}

/* io_uring READ on a queue fd completes when another process puts. */
TEST(io_uring_read_on_a_queue_completes_when_a_message_arrives)
{
	struct io_uring_cqe *cqe;
	struct io_uring ring;
	struct mpq_queue *q;
	char buf[64] = { 0 };
	size_t len = sizeof(buf);
	pid_t pid;

	kmod_queue(_metadata, &q, 4, 0);
	ASSERT_EQ(0, io_uring_queue_init(4, &ring, 0));
	io_uring_prep_read(io_uring_get_sqe(&ring), mpq_queue_fileno(q), buf,
			   sizeof(buf), 0);
	ASSERT_EQ(1, io_uring_submit(&ring));
	ASSERT_EQ(-EAGAIN, io_uring_peek_cqe(&ring, &cqe));
	pid = spawn(queue_put_late, q);
	ASSERT_EQ(0, io_uring_wait_cqe(&ring, &cqe));
	ASSERT_EQ(5, cqe->res);
	ASSERT_EQ(0, memcmp(buf, "async", 5));
	io_uring_cqe_seen(&ring, cqe);
	io_uring_prep_write(io_uring_get_sqe(&ring), mpq_queue_fileno(q),
			    "uring", 5, 0);
	ASSERT_EQ(1, io_uring_submit(&ring));
	ASSERT_EQ(0, io_uring_wait_cqe(&ring, &cqe));
	ASSERT_EQ(5, cqe->res);
	io_uring_cqe_seen(&ring, cqe);
	ASSERT_EQ(0, mpq_queue_get_nowait(q, buf, &len));
	ASSERT_EQ(0, memcmp(buf, "uring", 5));
	ASSERT_EQ(0, wait_child(pid, 5000));
	io_uring_queue_exit(&ring);
	mpq_queue_free(q);
}

static int write_to_queue_fd_late(void *arg)
{
	struct mpq_queue *q = arg;

	sleep_ms(100);
	return write(mpq_queue_fileno(q), "kernel", 6) == 6 ? 0 : 1;
}

/* A library get asleep (no spinning) is woken by a put made in the kernel. */
TEST(a_sleeping_get_is_woken_by_a_write_to_the_fd)
{
	struct mpq_queue *q;
	char buf[64];
	size_t len = sizeof(buf);
	pid_t pid;

	kmod_queue(_metadata, &q, 4, -1);
	pid = spawn(write_to_queue_fd_late, q);
	ASSERT_EQ(0, mpq_queue_get(q, buf, &len, 10 * NSEC_PER_SEC));
	ASSERT_EQ(6, len);
	ASSERT_EQ(0, memcmp(buf, "kernel", 6));
	ASSERT_EQ(0, wait_child(pid, 5000));
	mpq_queue_free(q);
}

TEST_HARNESS_MAIN
