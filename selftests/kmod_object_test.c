// SPDX-License-Identifier: GPL-2.0
/*
 * What the module shows of its objects: the /proc/mpq listing (owner,
 * geometry, depth, participants, counters), the participant-exit hook
 * that wakes pollers when a process that held the object dies, and the
 * mpq tracepoints. Runs in the test VM with mpq.ko loaded, as root (the
 * tracepoint tests use a tracefs instance of their own).
 */
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/stat.h>

#include "kselftest_harness.h"
#include "kmod_helpers.h"

#define TRACEFS		"/sys/kernel/tracing"
#define INSTANCE	TRACEFS "/instances/mpq_object_test"

/* A queue of the given geometry with its info: the fd or -errno. */
static int queue_with_info(uint32_t capacity, uint32_t msg_max,
			   struct mpq_queue_info *info)
{
	int dev = dev_open(), fd, ret;

	if (dev < 0)
		return -errno;
	fd = queue_create(dev, capacity, msg_max);
	close(dev);
	if (fd < 0)
		return fd;
	ret = queue_info(fd, info);
	if (ret) {
		close(fd);
		return ret;
	}
	return fd;
}

static void *map_queue(int fd, const struct mpq_queue_info *i)
{
	void *p = mmap(NULL, i->map_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		       fd, 0);

	return p == MAP_FAILED ? NULL : p;
}

/*
 * The /proc/mpq line of object id, as column values found by the names in
 * the header line. Returns 0, or -ENOENT when no line has that id.
 */
struct row {
	char names[32][16];
	char vals[32][256];
	int n;
};

static int listing_row(uint64_t id, struct row *r)
{
	char line[4096], *tok, *save;
	FILE *f = fopen("/proc/mpq", "r");
	int found = -ENOENT, k;

	if (!f)
		return -errno;
	memset(r, 0, sizeof(*r));
	if (!fgets(line, sizeof(line), f)) {
		fclose(f);
		return -EIO;
	}
	for (tok = strtok_r(line, " \n", &save); tok && r->n < 32;
	     tok = strtok_r(NULL, " \n", &save))
		snprintf(r->names[r->n++], sizeof(r->names[0]), "%s", tok);
	while (fgets(line, sizeof(line), f)) {
		if (strtoull(line, NULL, 10) != id)
			continue;
		k = 0;
		for (tok = strtok_r(line, " \n", &save); tok && k < r->n;
		     tok = strtok_r(NULL, " \n", &save))
			snprintf(r->vals[k++], sizeof(r->vals[0]), "%s", tok);
		found = k == r->n ? 0 : -EIO;
		break;
	}
	fclose(f);
	return found;
}

static const char *col(const struct row *r, const char *name)
{
	int k;

	for (k = 0; k < r->n; k++)
		if (!strcmp(r->names[k], name))
			return r->vals[k];
	return "";
}

static long long coln(const struct row *r, const char *name)
{
	const char *v = col(r, name);

	return *v ? strtoll(v, NULL, 0) : -1;
}

/* Is pid among the comma-separated pids of the row? */
static int has_pid(const struct row *r, pid_t pid)
{
	char buf[256], *tok, *save;

	snprintf(buf, sizeof(buf), "%s", col(r, "pids"));
	for (tok = strtok_r(buf, ",+", &save); tok; tok = strtok_r(NULL, ",+", &save))
		if (atoi(tok) == pid)
			return 1;
	return 0;
}

TEST(listing_has_a_header_naming_every_column)
{
	static const char *const want[] = {
		"id", "type", "name", "uid", "gid", "mode", "size", "depth",
		"capacity", "creator", "waiters", "nproc", "pids", "polls",
		"wakeups", "sleeps", "reads", "writes", "hangups", "exits",
	};
	struct mpq_queue_info i;
	struct row r;
	unsigned int k;
	int fd = queue_with_info(4, 8, &i);

	ASSERT_LE(0, fd);
	ASSERT_EQ(0, listing_row(i.id, &r));
	for (k = 0; k < sizeof(want) / sizeof(want[0]); k++) {
		const char *name = want[k];

		ASSERT_STRNE("", col(&r, name)) TH_LOG("no column %s", name);
	}
	close(fd);
}

TEST(listing_shows_a_queue_with_its_owner_size_and_creator)
{
	struct mpq_queue_info i;
	struct row r;
	void *p;
	int fd = queue_with_info(100, 64, &i);

	ASSERT_LE(0, fd);
	p = map_queue(fd, &i);
	ASSERT_NE(NULL, p);
	ASSERT_EQ(0, listing_row(i.id, &r));
	ASSERT_STREQ("queue", col(&r, "type"));
	ASSERT_STREQ("-", col(&r, "name"));
	ASSERT_EQ(getuid(), coln(&r, "uid"));
	ASSERT_EQ(getgid(), coln(&r, "gid"));
	ASSERT_EQ(0600, coln(&r, "mode"));
	ASSERT_EQ(i.map_size, coln(&r, "size"));
	ASSERT_EQ(i.capacity, coln(&r, "capacity"));
	ASSERT_EQ(0, coln(&r, "depth"));
	ASSERT_EQ(getpid(), coln(&r, "creator"));
	ASSERT_EQ(1, coln(&r, "nproc"));
	ASSERT_EQ(1, has_pid(&r, getpid()));
	munmap(p, i.map_size);
	ASSERT_EQ(0, listing_row(i.id, &r));
	ASSERT_EQ(0, coln(&r, "nproc"));
	ASSERT_STREQ("-", col(&r, "pids"));
	close(fd);
}

TEST(listing_forgets_an_object_once_its_last_fd_and_mapping_are_gone)
{
	struct mpq_queue_info i;
	struct row r;
	void *p;
	int fd = queue_with_info(4, 8, &i);

	ASSERT_LE(0, fd);
	p = map_queue(fd, &i);
	ASSERT_NE(NULL, p);
	close(fd);
	ASSERT_EQ(0, listing_row(i.id, &r));	/* the mapping holds it */
	munmap(p, i.map_size);
	sleep_ms(20);				/* the deferred fput */
	ASSERT_EQ(-ENOENT, listing_row(i.id, &r));
}

TEST(listing_depth_counts_messages_and_is_clamped_when_memory_lies)
{
	struct mpq_queue_info i;
	struct mpq_queue_shm *shm;
	struct row r;
	char msg[8] = "message";
	int fd = queue_with_info(8, 8, &i), k;

	ASSERT_LE(0, fd);
	shm = map_queue(fd, &i);
	ASSERT_NE(NULL, shm);
	for (k = 0; k < 3; k++)
		ASSERT_EQ(8, write(fd, msg, 8));
	ASSERT_EQ(0, listing_row(i.id, &r));
	ASSERT_EQ(3, coln(&r, "depth"));
	ASSERT_EQ(3, coln(&r, "writes"));
	ASSERT_EQ(8, read(fd, msg, 8));
	ASSERT_EQ(0, listing_row(i.id, &r));
	ASSERT_EQ(2, coln(&r, "depth"));
	ASSERT_EQ(1, coln(&r, "reads"));

	/* A participant scribbles: the listing stays within capacity. */
	shm->tail = shm->head + (1ULL << 40);
	ASSERT_EQ(0, listing_row(i.id, &r));
	ASSERT_EQ(i.capacity, coln(&r, "depth"));
	shm->tail = shm->head - 5;
	ASSERT_EQ(0, listing_row(i.id, &r));
	ASSERT_EQ(0, coln(&r, "depth"));
	munmap(shm, i.map_size);
	close(fd);
}

static int hold_mapping(void *arg)
{
	pause();
	return 0;
}

TEST(listing_names_a_forked_participant_and_drops_it_when_it_dies)
{
	struct mpq_queue_info i;
	struct row r;
	void *p;
	pid_t pid;
	int fd = queue_with_info(4, 8, &i);

	ASSERT_LE(0, fd);
	p = map_queue(fd, &i);
	ASSERT_NE(NULL, p);
	pid = spawn(hold_mapping, NULL);
	ASSERT_LT(0, pid);
	sleep_ms(50);
	ASSERT_EQ(0, listing_row(i.id, &r));
	ASSERT_EQ(2, coln(&r, "nproc"));
	ASSERT_EQ(1, has_pid(&r, getpid()));
	ASSERT_EQ(1, has_pid(&r, pid)) TH_LOG("pids %s", col(&r, "pids"));
	ASSERT_EQ(0, coln(&r, "exits"));

	kill(pid, SIGKILL);
	ASSERT_EQ(128 + SIGKILL, wait_child(pid, 5000));
	ASSERT_EQ(0, listing_row(i.id, &r));
	ASSERT_EQ(1, coln(&r, "nproc"));
	ASSERT_EQ(0, has_pid(&r, pid));
	/* Its mapping and its fd: one death, seen through both. */
	ASSERT_LE(1, coln(&r, "exits"));
	munmap(p, i.map_size);
	close(fd);
}

TEST(listing_shows_a_pipe_and_its_pollers)
{
	struct mpq_pipe_create c = { .size = sizeof(c), .ring_size = 4096,
				     .flags = MPQ_CREATE_CLOEXEC };
	struct mpq_pipe_info pi = { .size = sizeof(pi) };
	struct pollfd pfd;
	struct row r;
	pid_t pid;
	int dev = dev_open();

	ASSERT_LE(0, dev);
	ASSERT_EQ(0, ioctl(dev, MPQ_IOC_PIPE_CREATE, &c));
	close(dev);
	ASSERT_EQ(0, ioctl(c.fds[0], MPQ_IOC_PIPE_INFO, &pi));
	pid = fork();
	if (pid == 0) {
		pfd.fd = c.fds[0];
		pfd.events = POLLIN;
		poll(&pfd, 1, 10000);
		_exit(0);
	}
	sleep_ms(100);
	ASSERT_EQ(0, listing_row(pi.id, &r));
	ASSERT_STREQ("pipe", col(&r, "type"));
	ASSERT_EQ(8192, coln(&r, "capacity"));
	ASSERT_EQ(1, coln(&r, "waiters"));
	ASSERT_LE(1, coln(&r, "polls"));
	kill(pid, SIGKILL);
	wait_child(pid, 5000);
	ASSERT_EQ(0, listing_row(pi.id, &r));
	ASSERT_EQ(0, coln(&r, "waiters"));
	close(c.fds[1]);
	ASSERT_EQ(0, listing_row(pi.id, &r));
	ASSERT_EQ(1, coln(&r, "hangups"));
	close(c.fds[0]);
}

/*
 * The participant-exit hook. A poller sleeps in poll() on an empty queue;
 * another participant publishes a message straight into the ring without
 * the wake-up that libmpq would send (as a process killed between the two
 * would), and then dies. Its death must wake the poller, which then finds
 * the message: without the hook it would sleep to its timeout.
 */
struct death {
	int fd;
	struct mpq_queue_info info;
	int unmap_first;	/* leave only the fd: the ->flush path */
	int published;		/* set by the publisher */
	int revents;		/* set by the poller */
	int64_t returned_ns;
};

static int poller(void *arg)
{
	struct death *d = arg;
	struct pollfd pfd = { .fd = d->fd, .events = POLLIN };
	int n = poll(&pfd, 1, 10000);

	d->returned_ns = now_ns();
	set_flag(&d->revents, n == 1 ? pfd.revents : -1);
	return 0;
}

static int publish_and_hang(void *arg)
{
	struct death *d = arg;
	struct mpq_queue_shm *shm = map_queue(d->fd, &d->info);
	struct mpq_slot *s;
	int64_t end = now_ns() + 5 * NSEC_PER_SEC;

	if (!shm)
		return 1;
	/* Wait until the poller has asked to be woken, then publish. */
	while (!(__atomic_load_n(&shm->poll_wanted, __ATOMIC_ACQUIRE) & MPQ_POLL_IN))
		if (now_ns() > end)
			return 2;
	s = (void *)((char *)shm + d->info.data_off);
	s->len = 1;
	__atomic_store_n(&s->seq, 1, __ATOMIC_RELEASE);
	__atomic_store_n(&shm->tail, 1, __ATOMIC_RELEASE);
	if (d->unmap_first)
		munmap(shm, d->info.map_size);
	set_flag(&d->published, 1);
	pause();
	return 0;
}

static void death_wakes_poller(struct __test_metadata *_metadata, int unmap_first)
{
	struct death *d = shared_alloc(sizeof(*d));
	pid_t pp, pub;
	int64_t killed;

	ASSERT_NE(NULL, d);
	d->fd = queue_with_info(4, 8, &d->info);
	ASSERT_LE(0, d->fd);
	d->unmap_first = unmap_first;
	pp = spawn(poller, d);
	pub = spawn(publish_and_hang, d);
	ASSERT_EQ(1, wait_for_flag(&d->published, 5000));
	sleep_ms(200);
	/* Nobody woke the poller yet: the message alone does not. */
	ASSERT_EQ(0, __atomic_load_n(&d->revents, __ATOMIC_ACQUIRE));
	killed = now_ns();
	kill(pub, SIGKILL);
	ASSERT_EQ(128 + SIGKILL, wait_child(pub, 5000));
	ASSERT_EQ(POLLIN, wait_for_flag(&d->revents, 3000) & POLLIN);
	ASSERT_GT(2 * NSEC_PER_SEC, d->returned_ns - killed);
	ASSERT_EQ(0, wait_child(pp, 5000));
	close(d->fd);
	munmap(d, sizeof(*d));
}

TEST(a_poller_is_woken_when_a_mapping_participant_is_killed)
{
	death_wakes_poller(_metadata, 0);
}

TEST(a_poller_is_woken_when_an_fd_holder_is_killed)
{
	death_wakes_poller(_metadata, 1);
}

/* ---- tracepoints, through a tracefs instance of our own ---- */

static int write_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_TRUNC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = write(fd, s, strlen(s));
	close(fd);
	return n == (ssize_t)strlen(s) ? 0 : -EIO;
}

/* Everything the instance recorded, NUL-terminated, in a malloc'd buffer. */
static char *read_trace(void)
{
	size_t cap = 1 << 20, len = 0;
	char *buf = malloc(cap);
	int fd = open(INSTANCE "/trace", O_RDONLY);
	ssize_t n;

	if (!buf || fd < 0) {
		free(buf);
		return NULL;
	}
	while ((n = read(fd, buf + len, cap - 1 - len)) > 0)
		len += n;
	buf[len] = 0;
	close(fd);
	return buf;
}

FIXTURE(trace) {
	int ok;
};

FIXTURE_SETUP(trace)
{
	rmdir(INSTANCE);
	ASSERT_EQ(0, mkdir(INSTANCE, 0755)) TH_LOG("%s: %s", INSTANCE,
						  strerror(errno));
	ASSERT_EQ(0, write_file(INSTANCE "/buffer_size_kb", "4096"));
	ASSERT_EQ(0, write_file(INSTANCE "/events/mpq/enable", "1"));
	self->ok = 1;
}

FIXTURE_TEARDOWN(trace)
{
	write_file(INSTANCE "/events/mpq/enable", "0");
	rmdir(INSTANCE);
}

/*
 * The line of the first event named ev for object id after *from, with
 * the text "key" in it; moves *from past it. NULL if there is none.
 */
static const char *find_event(const char **from, const char *ev, uint64_t id,
			      const char *key)
{
	char want[64];
	const char *p = *from;

	snprintf(want, sizeof(want), "%s: id=%llu ", ev, (unsigned long long)id);
	while ((p = strstr(p, want))) {
		const char *eol = strchr(p, '\n');
		size_t len = eol ? (size_t)(eol - p) : strlen(p);

		if (!key || memmem(p, len, key, strlen(key))) {
			*from = p + len;
			return p;
		}
		p += len;
	}
	return NULL;
}

TEST_F(trace, create_attach_fork_death_and_destroy_are_traced_in_order)
{
	struct mpq_queue_info i;
	char me[32], child[32], fork_attach[64];
	const char *t, *cur;
	char *buf;
	void *p;
	pid_t pid;
	int fd = queue_with_info(4, 8, &i);

	ASSERT_LE(0, fd);
	p = map_queue(fd, &i);
	ASSERT_NE(NULL, p);
	pid = spawn(hold_mapping, NULL);
	sleep_ms(50);
	kill(pid, SIGKILL);
	ASSERT_EQ(128 + SIGKILL, wait_child(pid, 5000));
	munmap(p, i.map_size);
	close(fd);
	sleep_ms(50);

	buf = read_trace();
	ASSERT_NE(NULL, buf);
	snprintf(me, sizeof(me), "pid=%d ", getpid());
	snprintf(child, sizeof(child), "pid=%d ", pid);
	snprintf(fork_attach, sizeof(fork_attach), "pid=0 by=%d how=%u",
		 getpid(), MPQ_ATTACH_FORK);
	cur = buf;
	t = find_event(&cur, "mpq_obj_create", i.id, me);
	ASSERT_NE(NULL, t) TH_LOG("trace:\n%s", buf);
	ASSERT_NE(NULL, find_event(&cur, "mpq_attach", i.id, me));
	ASSERT_NE(NULL, find_event(&cur, "mpq_attach", i.id, fork_attach));
	ASSERT_NE(NULL, find_event(&cur, "mpq_detach", i.id, child))
		TH_LOG("trace:\n%s", buf);
	ASSERT_NE(NULL, find_event(&cur, "mpq_exit", i.id, child));
	ASSERT_NE(NULL, find_event(&cur, "mpq_detach", i.id, me));
	ASSERT_NE(NULL, find_event(&cur, "mpq_obj_destroy", i.id, NULL));
	free(buf);
}

struct reader {
	int fd;
	int done;
};

static void *blocking_read(void *arg)
{
	struct reader *r = arg;
	char buf[8];

	read(r->fd, buf, sizeof(buf));
	set_flag(&r->done, 1);
	return NULL;
}

TEST_F(trace, a_sleep_in_read_and_its_wake_up_are_traced)
{
	struct mpq_queue_info i;
	struct reader r = { 0 };
	pthread_t th;
	const char *cur;
	char *buf, dir[32];
	int fd = queue_with_info(4, 8, &i);

	ASSERT_LE(0, fd);
	r.fd = fd;
	ASSERT_EQ(0, pthread_create(&th, NULL, blocking_read, &r));
	sleep_ms(100);
	ASSERT_EQ(0, __atomic_load_n(&r.done, __ATOMIC_ACQUIRE));
	ASSERT_EQ(3, write(fd, "abc", 3));
	ASSERT_EQ(1, wait_for_flag(&r.done, 3000));
	pthread_join(th, NULL);
	close(fd);
	sleep_ms(20);

	buf = read_trace();
	ASSERT_NE(NULL, buf);
	snprintf(dir, sizeof(dir), "dir=%u ret=0", MPQ_POLL_IN);
	cur = buf;
	ASSERT_NE(NULL, find_event(&cur, "mpq_wait_begin", i.id, dir))
		TH_LOG("trace:\n%s", buf);
	ASSERT_NE(NULL, find_event(&cur, "mpq_poll_wake", i.id, "waiters=1"));
	ASSERT_NE(NULL, find_event(&cur, "mpq_wait_end", i.id, dir));
	free(buf);
}

TEST_F(trace, closing_a_pipe_end_traces_the_hang_up)
{
	struct mpq_pipe_create c = { .size = sizeof(c), .ring_size = 4096,
				     .flags = MPQ_CREATE_CLOEXEC };
	struct mpq_pipe_info pi = { .size = sizeof(pi) };
	const char *cur;
	char *buf;
	int dev = dev_open();

	ASSERT_LE(0, dev);
	ASSERT_EQ(0, ioctl(dev, MPQ_IOC_PIPE_CREATE, &c));
	close(dev);
	ASSERT_EQ(0, ioctl(c.fds[0], MPQ_IOC_PIPE_INFO, &pi));
	close(c.fds[1]);
	sleep_ms(20);
	close(c.fds[0]);
	sleep_ms(20);
	buf = read_trace();
	ASSERT_NE(NULL, buf);
	cur = buf;
	ASSERT_NE(NULL, find_event(&cur, "mpq_obj_create", pi.id, "type=2 "));
	ASSERT_NE(NULL, find_event(&cur, "mpq_hangup", pi.id, "end=1"))
		TH_LOG("trace:\n%s", buf);
	ASSERT_NE(NULL, find_event(&cur, "mpq_hangup", pi.id, "end=0"));
	ASSERT_NE(NULL, find_event(&cur, "mpq_obj_destroy", pi.id, NULL));
	free(buf);
}

TEST_HARNESS_MAIN
