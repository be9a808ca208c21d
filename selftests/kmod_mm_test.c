// SPDX-License-Identifier: GPL-2.0
/*
 * The mpq module against what a hostile participant does with the memory
 * of an object: the mm system calls that act on a mapping's file
 * (remap_file_pages, MADV_REMOVE, map_files), the mapping's own life
 * (fork, split, mremap), objects of whole pages whatever the page size,
 * and loops in the kernel that a scribbler keeps busy. Runs in the test VM
 * with mpq.ko loaded.
 */
#include <linux/futex.h>
#include <stdio.h>
#include <sys/syscall.h>

#include "kselftest_harness.h"
#include "kmod_helpers.h"

static long futex(void *addr, int op, uint32_t val, struct timespec *ts)
{
	return syscall(SYS_futex, addr, op, val, ts, NULL, 0);
}

FIXTURE(dev) {
	int dev;
	long page;
};

FIXTURE_SETUP(dev)
{
	self->dev = open("/dev/mpq", O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, self->dev) TH_LOG("/dev/mpq: %s (is mpq.ko loaded?)",
				       strerror(errno));
	self->page = sysconf(_SC_PAGESIZE);
}

FIXTURE_TEARDOWN(dev)
{
	close(self->dev);
}

/* A queue of several pages, mapped whole: its fd, or -errno. */
static int map_queue(int dev, void **p, size_t *size)
{
	struct mpq_queue_info i;
	int fd = queue_create(dev, 64, 1000);

	if (fd < 0)
		return fd;
	if (queue_info(fd, &i))
		return -EIO;
	*size = i.map_size;
	*p = mmap(NULL, *size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	return *p == MAP_FAILED ? -errno : fd;
}

/*
 * remap_file_pages(2) re-maps a shared mapping's file at other offsets.
 * An object's pages are laid out once, at offset 0: moving them around
 * inside a mapping is refused, as mmap at an offset is.
 */
TEST_F(dev, remap_file_pages_cannot_shuffle_the_pages_of_an_object)
{
	size_t size;
	void *p;
	int fd = map_queue(self->dev, &p, &size);

	ASSERT_LE(0, fd);
	ASSERT_LT(2 * self->page, size);
	ASSERT_EQ(-1, syscall(SYS_remap_file_pages, p, self->page, 0, 1, 0));
	ASSERT_EQ(EINVAL, errno);
	/*
	 * As after any failed MAP_FIXED mmap, the caller's page at p is
	 * gone; the rest of the mapping and the object are untouched.
	 */
	((volatile char *)p)[self->page] = 0;
	munmap(p, size);
	p = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
	ASSERT_NE(MAP_FAILED, p);
	ASSERT_EQ(MPQ_QUEUE_MAGIC, *(uint32_t *)p);
	munmap(p, size);
	close(fd);
}

/*
 * Re-mapping the whole object in place goes through the object's own
 * mmap: the new mapping still holds the object (it stays counted after
 * its fd is closed, and is freed with the mapping), may not become
 * executable, and is the same memory the kernel uses.
 */
TEST_F(dev, remap_file_pages_of_a_whole_object_keeps_its_rules)
{
	long objs = objects();
	struct mpq_queue_info i;
	size_t size;
	char *p;
	int fd = map_queue(self->dev, (void **)&p, &size);

	ASSERT_LE(0, objs);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, queue_info(fd, &i));
	if (syscall(SYS_remap_file_pages, p, size, 0, 0, 0))
		TH_LOG("remap_file_pages of the whole object: %s",
		       strerror(errno));
	ASSERT_EQ(objs + 1, objects());
	ASSERT_EQ(5, write(fd, "hello", 5));
	close(fd);
	/* The mapping alone holds the object now. */
	ASSERT_EQ(objs + 1, objects());
	ASSERT_EQ(-1, mprotect(p, size, PROT_READ | PROT_EXEC));
	ASSERT_EQ(EACCES, errno);
	ASSERT_EQ(MAP_FAILED, mremap(p, size, size + self->page, 0));
	/* Still the object's memory: slot 0 holds what write(2) put. */
	ASSERT_EQ(MPQ_QUEUE_MAGIC, *(uint32_t *)p);
	ASSERT_EQ(0, memcmp(p + i.data_off + sizeof(struct mpq_slot),
			    "hello", 5));
	munmap(p, size);
	ASSERT_EQ(objs, objects());
}

/*
 * MADV_REMOVE frees a shared mapping's file pages. An object's pages are
 * pinned and used by the kernel: punching them out would leave the kernel
 * on the old pages and userspace on new zero ones. It is refused, and the
 * kernel and the processes go on sharing one memory: a message put by the
 * library after the attempt is read back through read(2).
 */
TEST(madv_remove_cannot_punch_out_an_objects_memory)
{
	struct mpq_queue_attr attr = { .maxsize = 8, .msgsize = 64,
				       .backend = MPQ_BACKEND_KMOD };
	struct mpq_queue *q;
	char buf[64];
	size_t size;
	void *p;
	int fd;

	ASSERT_EQ(0, mpq_queue_new(&q, &attr));
	fd = mpq_queue_fileno(q);
	p = queue_map(q, &size);
	ASSERT_NE(NULL, p);
	EXPECT_EQ(-1, madvise(p, size, MADV_REMOVE));
	EXPECT_EQ(MPQ_QUEUE_MAGIC, *(volatile uint32_t *)p);
	ASSERT_EQ(0, mpq_queue_put_nowait(q, "after", 5));
	ASSERT_EQ(0, fcntl(fd, F_SETFL, O_NONBLOCK));
	EXPECT_EQ(5, read(fd, buf, sizeof(buf)));
	EXPECT_EQ(0, memcmp(buf, "after", 5));
	munmap(p, size);
	mpq_queue_free(q);
}

/* The same for a pipe and a shared-memory block: every object, one rule. */
TEST_F(dev, madv_remove_is_refused_on_pipes_and_blocks_too)
{
	struct mpq_shm_open o = { .size = sizeof(o), .flags = MPQ_CREATE_CLOEXEC,
				  .kind = MPQ_SHM_KIND_SHM, .mode = 0600,
				  .bytes = 3 * 4096 };
	struct mpq_pipe_info pi;
	int fds[2], shm;
	uint32_t *p;

	ASSERT_EQ(0, pipe_create(self->dev, MPQ_CREATE_CLOEXEC, 8192, fds));
	ASSERT_EQ(0, pipe_info(fds[0], &pi));
	p = mmap(NULL, pi.map_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		 fds[0], 0);
	ASSERT_NE(MAP_FAILED, p);
	ASSERT_EQ(-1, madvise(p, pi.map_size, MADV_REMOVE));
	ASSERT_EQ(MPQ_PIPE_MAGIC, p[0]);
	munmap(p, pi.map_size);
	close(fds[0]);
	close(fds[1]);

	shm = ioctl(self->dev, MPQ_IOC_SHM_OPEN, &o);
	ASSERT_LE(0, shm) TH_LOG("shm open: %s", strerror(errno));
	p = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, shm, 0);
	ASSERT_NE(MAP_FAILED, p);
	p[1000] = 0x5a5a5a5a;
	ASSERT_EQ(-1, madvise(p, 3 * 4096, MADV_REMOVE));
	ASSERT_EQ(0x5a5a5a5a, p[1000]);
	munmap(p, 3 * 4096);
	close(shm);
}

/*
 * MADV_DONTNEED only drops this process's page table entries: the next
 * touch faults the same pinned page back in, with what it held.
 */
TEST_F(dev, madv_dontneed_refaults_the_same_memory)
{
	size_t size;
	uint32_t *p;
	int fd = map_queue(self->dev, (void **)&p, &size);

	ASSERT_LE(0, fd);
	p[size / 4 - 1] = 0xfeedf00d;
	ASSERT_EQ(0, madvise(p, size, MADV_DONTNEED));
	ASSERT_EQ(MPQ_QUEUE_MAGIC, p[0]);
	ASSERT_EQ(0xfeedf00d, p[size / 4 - 1]);
	munmap(p, size);
	close(fd);
}

/*
 * The backing memory is not reachable as a file: map_files names the
 * object's own file, which cannot be opened (even by root), let alone
 * truncated or punched.
 */
TEST_F(dev, map_files_does_not_reach_the_backing_memory)
{
	char path[64];
	size_t size;
	void *p;
	int fd = map_queue(self->dev, &p, &size), shm;

	ASSERT_LE(0, fd);
	snprintf(path, sizeof(path), "/proc/self/map_files/%lx-%lx",
		 (unsigned long)p, (unsigned long)p + (unsigned long)size);
	shm = open(path, O_RDWR);
	if (shm >= 0) {
		EXPECT_EQ(-1, ftruncate(shm, 0));
		EXPECT_EQ(-1, fallocate(shm, FALLOC_FL_PUNCH_HOLE |
					FALLOC_FL_KEEP_SIZE, 0, size));
		close(shm);
	}
	ASSERT_GT(0, shm);
	ASSERT_EQ(MPQ_QUEUE_MAGIC, *(uint32_t *)p);
	munmap(p, size);
	close(fd);
}

struct inherited {
	uint32_t *w;
	size_t size;
};

/* In a child, through the mapping fork copied: wait on a shared futex. */
static int child_waits_on_inherited_mapping(void *arg)
{
	struct inherited *m = arg;
	struct timespec ts = { .tv_sec = 20 };
	uint32_t *w = &m->w[m->size / 4 - 16];

	if (m->w[0] != MPQ_QUEUE_MAGIC)
		return 1;
	while (__atomic_load_n(w, __ATOMIC_ACQUIRE) == 0) {
		if (futex(w, FUTEX_WAIT, 0, &ts) < 0 && errno != EAGAIN &&
		    errno != EINTR)
			return errno == ETIMEDOUT ? 3 : 2;
	}
	return *w == 7 ? 0 : 4;
}

/*
 * A mapping copied by fork is the same memory in the child (its pages
 * fault in from the object) and carries shared futexes: the parent's
 * FUTEX_WAKE finds the child's waiter, which is only true if both are
 * keyed by the same page of the same file.
 */
TEST_F(dev, a_mapping_copied_by_fork_shares_memory_and_futexes)
{
	struct inherited m;
	long woken = 0;
	int64_t end;
	pid_t pid;
	uint32_t *w;
	int fd = map_queue(self->dev, (void **)&m.w, &m.size);

	ASSERT_LE(0, fd);
	close(fd);	/* the mapping alone holds the object */
	w = &m.w[m.size / 4 - 16];
	pid = spawn(child_waits_on_inherited_mapping, &m);
	end = now_ns() + 10 * NSEC_PER_SEC;
	while (woken == 0 && now_ns() < end) {
		sleep_ms(10);
		woken = futex(w, FUTEX_WAKE, 1, NULL);
		ASSERT_LE(0, woken);
	}
	ASSERT_EQ(1, woken);
	__atomic_store_n(w, 7, __ATOMIC_RELEASE);
	futex(w, FUTEX_WAKE, 1, NULL);
	ASSERT_EQ(0, wait_child(pid, 10000));
	munmap(m.w, m.size);
}

/*
 * A mapping may be moved and split (each piece holds the object) but not
 * grown: the object's size is fixed.
 */
TEST_F(dev, a_mapping_moves_and_splits_but_never_grows)
{
	long objs = objects();
	size_t size;
	uint32_t *p, *q;
	int fd = map_queue(self->dev, (void **)&p, &size);

	ASSERT_LE(0, fd);
	close(fd);
	p[size / 4 - 1] = 0x600dcafe;
	ASSERT_EQ(MAP_FAILED, mremap(p, size, size + self->page, MREMAP_MAYMOVE));
	q = mremap(p, size, size, MREMAP_MAYMOVE | MREMAP_FIXED,
		   (char *)mmap(NULL, 2 * size, PROT_NONE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) + size);
	ASSERT_NE(MAP_FAILED, q);
	ASSERT_EQ(0x600dcafe, q[size / 4 - 1]);
	ASSERT_EQ(MPQ_QUEUE_MAGIC, q[0]);
	/* Split: the first page goes, the rest still holds the object. */
	ASSERT_EQ(0, munmap(q, self->page));
	ASSERT_EQ(objs + 1, objects());
	ASSERT_EQ(0x600dcafe, q[size / 4 - 1]);
	ASSERT_EQ(0, munmap((char *)q + self->page, size - self->page));
	ASSERT_EQ(objs, objects());
}

/*
 * Every object is whole pages and holds its whole layout, whatever the
 * page size: a pipe's rings (smaller than a 16K or 64K page), a queue's
 * slots, a block's bytes. The last byte of the layout can be touched.
 */
TEST_F(dev, every_object_is_whole_pages_and_holds_its_layout)
{
	static const uint32_t caps[] = { 1, 2, 3, 64, 1000 };
	static const uint32_t msgs[] = { 1, 8, 100, 4096, 70000 };
	struct mpq_pipe_info pi;
	struct mpq_queue_info qi;
	uint32_t ring;
	int fds[2], fd;
	unsigned int i, j;
	char *p;

	for (ring = MPQ_PIPE_RING_MIN; ring <= (1U << 20); ring <<= 1) {
		ASSERT_EQ(0, pipe_create(self->dev, MPQ_CREATE_CLOEXEC, ring, fds));
		ASSERT_EQ(0, pipe_info(fds[1], &pi));
		ASSERT_EQ(0, pi.map_size % self->page);
		ASSERT_LE(self->page, pi.data_off[0]);
		ASSERT_LE(pi.data_off[0] + ring, pi.data_off[1]);
		ASSERT_LE(pi.data_off[1] + ring, pi.map_size);
		p = mmap(NULL, pi.map_size, PROT_READ | PROT_WRITE, MAP_SHARED,
			 fds[1], 0);
		ASSERT_NE(MAP_FAILED, p);
		p[pi.data_off[1] + ring - 1] = 1;
		/* The kernel sees the whole layout: a message crosses it. */
		ASSERT_EQ(ring / 2, write(fds[1], p + pi.data_off[1], ring / 2));
		munmap(p, pi.map_size);
		close(fds[0]);
		close(fds[1]);
	}
	for (i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
		for (j = 0; j < sizeof(msgs) / sizeof(msgs[0]); j++) {
			fd = queue_create(self->dev, caps[i], msgs[j]);
			ASSERT_LE(0, fd);
			ASSERT_EQ(0, queue_info(fd, &qi));
			ASSERT_EQ(0, qi.map_size % self->page);
			ASSERT_EQ(0, qi.data_off % self->page);
			ASSERT_LE(qi.data_off + (uint64_t)qi.capacity *
				  qi.slot_size, qi.map_size);
			close(fd);
		}
	}
}

/* The ring sizes the header names are the module's. */
TEST_F(dev, pipe_ring_sizes_are_those_the_header_names)
{
	int fds[2], ret;

	ASSERT_EQ(-EINVAL, pipe_create(self->dev, MPQ_CREATE_CLOEXEC,
				       MPQ_PIPE_RING_MIN / 2, fds));
	ASSERT_EQ(-EINVAL, pipe_create(self->dev, MPQ_CREATE_CLOEXEC,
				       MPQ_PIPE_RING_MIN + 8, fds));
	ASSERT_EQ(-E2BIG, pipe_create(self->dev, MPQ_CREATE_CLOEXEC,
				      MPQ_PIPE_RING_MAX * 2, fds));
	ASSERT_EQ(-E2BIG, pipe_create(self->dev, MPQ_CREATE_CLOEXEC,
				      1U << 31, fds));
	/* The largest fits max_object_bytes; a per-user budget may refuse. */
	ret = pipe_create(self->dev, MPQ_CREATE_CLOEXEC, MPQ_PIPE_RING_MAX, fds);
	ASSERT_TRUE(ret == 0 || ret == -ENOMEM || ret == -EDQUOT)
		TH_LOG("ring of %u: %s", MPQ_PIPE_RING_MAX, strerror(-ret));
	if (ret == 0) {
		close(fds[0]);
		close(fds[1]);
	}
}

/*
 * Reap pid if it ends within timeout_ms: its status as wait_child() gives
 * it, or -1 (it is left running; unlike wait_child(), no blocking wait).
 */
static int reaped_within(pid_t pid, int timeout_ms)
{
	int64_t end = now_ns() + timeout_ms * NSEC_PER_MSEC;
	int status;

	while (waitpid(pid, &status, WNOHANG) != pid) {
		if (now_ns() > end)
			return -1;
		sleep_ms(1);
	}
	return WIFSIGNALED(status) ? 128 + WTERMSIG(status) :
				     WEXITSTATUS(status);
}

struct forged {
	int fd;
	int wake_fd;	/* whose MPQ_IOC_*_WAKE wakes a reader of fd */
	struct mpq_queue_info qi;
	struct mpq_pipe_info pi;
	int *in_read;
	int *armed;	/* the forger is at work */
};

/*
 * Keep the slots ahead of head looking full, as messages a dead producer
 * dropped: a reader in the kernel takes (and skips) them as fast as it
 * can, and finds the next one ready whenever it would sleep, for ever.
 */
static int queue_forger(void *arg)
{
	struct forged *f = arg;
	char *p = mmap(NULL, f->qi.map_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		       f->fd, 0);
	struct mpq_queue_shm *shm = (struct mpq_queue_shm *)p;
	uint64_t head, pos, n;

	if (p == MAP_FAILED)
		return 1;
	for (n = 0;; n++) {
		if (n == 1)
			set_flag(f->armed, 1);
		/* Now and then, wake a reader that did get to sleep. */
		if (!(n & 63))
			ioctl(f->wake_fd, MPQ_IOC_QUEUE_WAKE, MPQ_POLL_IN);
		head = __atomic_load_n(&shm->head, __ATOMIC_ACQUIRE);
		for (pos = head; pos < head + f->qi.capacity / 2; pos++) {
			struct mpq_slot *s = (struct mpq_slot *)
				(p + f->qi.data_off + (pos & (f->qi.capacity - 1)) *
				 f->qi.slot_size);

			__atomic_store_n(&s->len, MPQ_SLOT_DROPPED, __ATOMIC_RELAXED);
			__atomic_store_n(&s->seq, (uint32_t)(pos + 1),
					 __ATOMIC_RELEASE);
		}
	}
}

/* Read the queue until killed. */
static int queue_reader(void *arg)
{
	struct forged *f = arg;
	char buf[64];

	set_flag(f->in_read, 1);
	for (;;) {
		if (read(f->fd, buf, sizeof(buf)) < 0 && errno == EBADF)
			return 1;
	}
}

/*
 * Run reader against forger, SIGKILL the reader at a random point, and
 * see it reaped. The bound is a hang guard only: a reader stuck in the
 * kernel never ends while the forger runs.
 */
static void kill_reader_under_forger(struct __test_metadata *_metadata,
				     struct forged *f, int (*forger)(void *),
				     int (*reader)(void *), uint64_t seed)
{
	pid_t fpid, rpid;
	int st;

	*f->in_read = 0;
	*f->armed = 0;
	fpid = spawn(forger, f);
	ASSERT_NE(0, wait_for_flag(f->armed, 10000))
		TH_LOG("forger: %d", wait_child(fpid, 0));
	rpid = spawn(reader, f);
	ASSERT_NE(0, wait_for_flag(f->in_read, 10000));
	/*
	 * At a random point while the forger has the reader busy (a reader
	 * asleep would die all right). The parent keeps off the CPUs
	 * meanwhile: the forger needs one to stay ahead.
	 */
	sleep_ms(200 + rnd(&seed) % 800);
	kill(rpid, SIGKILL);
	st = reaped_within(rpid, 20000);
	kill(fpid, SIGKILL);
	ASSERT_EQ(128 + SIGKILL, wait_child(fpid, 10000));
	if (st < 0) {
		/* Without the forger, the reader's loop ends and it dies. */
		wait_child(rpid, 60000);
	}
	ASSERT_EQ(128 + SIGKILL, st) TH_LOG("the reader outlived SIGKILL");
}

/*
 * A reader in read(2) on a queue is killed while a forger keeps the ring
 * looking ready to the wait and empty to the take: the reader must die,
 * each time, whether the forger has it asleep or going round the loop.
 */
TEST_F_TIMEOUT(dev, a_reader_dies_of_sigkill_while_a_forger_keeps_the_queue_busy,
	       600)
{
	struct forged f;
	uint64_t seed = 0x9e3779b97f4a7c15ULL ^ (uint64_t)getpid();
	int round;

	f.in_read = shared_alloc(2 * sizeof(int));
	ASSERT_NE(NULL, f.in_read);
	f.armed = f.in_read + 1;
	f.fd = queue_create(self->dev, 256, 8);
	ASSERT_LE(0, f.fd);
	ASSERT_EQ(0, queue_info(f.fd, &f.qi));
	f.wake_fd = f.fd;
	TH_LOG("seed %llu", (unsigned long long)seed);
	for (round = 0; round < 8; round++)
		kill_reader_under_forger(_metadata, &f, queue_forger,
					 queue_reader, seed + round);
	close(f.fd);
}

/*
 * Keep publishing and taking back frames of ring 1 that never make a
 * whole message: a first frame of 0 bytes (total 8), then a middle frame
 * at 16 or, in turn, a word at 32 past it. A reader in the kernel waits
 * for a frame where its scan stopped (16 or 32), and one comes each time
 * it would sleep; never a message to take.
 */
static int pipe_forger(void *arg)
{
	struct forged *f = arg;
	char *p = mmap(NULL, f->pi.map_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		       f->fd, 0);
	struct mpq_pipe_shm *shm = (struct mpq_pipe_shm *)p;
	struct mpq_ring *ring;
	uint64_t *data;
	unsigned int n = 0;

	if (p == MAP_FAILED)
		return 1;
	ring = &shm->ring[1];
	data = (uint64_t *)(p + f->pi.data_off[1]);
	data[0] = (uint64_t)MPQ_FRAME_FIRST << 32;
	data[1] = 8;
	data[2] = 0;
	data[4] = 0;
	__atomic_store_n(&ring->head, 0, __ATOMIC_RELEASE);
	set_flag(f->armed, 1);
	for (;;) {
		n++;
		/* A middle frame of 8 bytes at 16; garbage at 32 in turn. */
		__atomic_store_n(&data[2], (n & 1) ? 8 : 0, __ATOMIC_RELEASE);
		__atomic_store_n(&data[4], (n & 1) ? 0 : 8, __ATOMIC_RELEASE);
		__atomic_store_n(&ring->tail, (n & 1) ? 24 : 16,
				 __ATOMIC_RELEASE);
		if (!(n & 1023))
			ioctl(f->wake_fd, MPQ_IOC_PIPE_WAKE, MPQ_POLL_IN);
	}
}

/* The same on a pipe whose positions a forger keeps moving. */
TEST_F_TIMEOUT(dev, a_reader_dies_of_sigkill_while_a_forger_keeps_the_pipe_moving,
	       600)
{
	struct forged f;
	uint64_t seed = 0x2545f4914f6cdd1dULL ^ (uint64_t)getpid();
	int fds[2], round;

	f.in_read = shared_alloc(2 * sizeof(int));
	ASSERT_NE(NULL, f.in_read);
	f.armed = f.in_read + 1;
	ASSERT_EQ(0, pipe_create(self->dev, MPQ_CREATE_CLOEXEC, 4096, fds));
	f.fd = fds[0];		/* end 0 reads ring 1 */
	f.wake_fd = fds[1];
	ASSERT_EQ(0, pipe_info(f.fd, &f.pi));
	TH_LOG("seed %llu", (unsigned long long)seed);
	for (round = 0; round < 8; round++)
		kill_reader_under_forger(_metadata, &f, pipe_forger,
					 queue_reader, seed + round);
	close(fds[0]);
	close(fds[1]);
}

TEST_HARNESS_MAIN
