// SPDX-License-Identifier: GPL-2.0
/*
 * SharedMemory's lifetime, the same promises on both backends (natively
 * on memfd, in the VM on kmod; mpq_shm(3), "Lifetime"):
 *   - a block outlives close() until it is unlinked (Python's promise);
 *   - unlink removes the name at once, mappings stay valid;
 *   - a name not made persistent goes when the program that made it is
 *     gone: its creator and every process it forked or spawned, however
 *     they ended, SIGKILL mid-create included; a process that merely
 *     attached keeps the block mapped but never the name;
 *   - a persistent block stays until unlinked, whatever its program does.
 * Under the module, its counters (objects, and the caller's persistent
 * names in /proc/mpq_users) return to where they were.
 *
 * Each "program" here is a process forked from the test before the test
 * made any block, so it starts a program of its own. Spawned children are
 * this binary executed again: mpq_init() runs from a constructor (see
 * process_test.c).
 */
#include <dirent.h>
#include <stdio.h>

#include "kselftest_harness.h"
#include "helpers.h"

#define ROUNDS		25	/* SIGKILLs at random points per test */
#define SETTLE_MS	10000	/* bound for the tracker's cleanup (memfd) */

static void __attribute__((constructor)) run_spawned_target(void)
{
	mpq_init(NULL, NULL);
}

static int on_kmod(void)
{
	const char *b = getenv("MPQ_BACKEND");

	return b && !strcmp(b, "kmod");
}

static long read_long(const char *path)
{
	FILE *f = fopen(path, "r");
	long v = -1;

	if (!f)
		return -1;
	if (fscanf(f, "%ld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

/* The module's object count; 0 on memfd, where there is none. */
static long mod_objects(void)
{
	return on_kmod() ? read_long("/sys/module/mpq/parameters/objects") : 0;
}

/* Our uid's persistent names in /proc/mpq_users; 0 on memfd, or absent. */
static long mod_names(void)
{
	long uid, objs, bytes, names, v = 0;
	char line[256];
	FILE *f;

	if (!on_kmod())
		return 0;
	f = fopen("/proc/mpq_users", "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%ld %ld %ld %ld", &uid, &objs, &bytes,
			   &names) == 4 && uid == (long)getuid())
			v = names;
	fclose(f);
	return v;
}

/* Does a block of that name exist? By attaching to it, as a user would. */
static int exists(const char *name)
{
	struct mpq_shm *s;
	int ret = mpq_shm_open(&s, name, NULL);

	if (!ret)
		mpq_shm_free(s);
	return ret;
}

/* Files of /dev/shm whose name starts with prefix (memfd's names). */
static int devshm_count(const char *prefix)
{
	struct dirent *e;
	DIR *d;
	int n = 0;

	if (on_kmod())
		return 0;
	d = opendir("/dev/shm");
	if (!d)
		return -1;
	while ((e = readdir(d)))
		n += !strncmp(e->d_name, prefix, strlen(prefix));
	closedir(d);
	return n;
}

/*
 * Wait until cond(arg) holds, bounded: under memfd the tracker cleans up
 * after the program's last process, asynchronously.
 */
static int settled(int (*cond)(void *), void *arg)
{
	int64_t end = now_ns() + SETTLE_MS * NSEC_PER_MSEC;

	while (!cond(arg)) {
		if (now_ns() > end)
			return 0;
		sleep_ms(2);
	}
	return 1;
}

static int name_gone(void *arg)
{
	return exists(arg) == -ENOENT;
}

/* What a test's programs report through (MAP_SHARED, survives fork). */
struct prog {
	char prefix[32];
	int created;		/* names prefix0 .. prefix<created> may exist */
	int ready;		/* the program's other process is running */
	pid_t other;		/* that process */
	int persist;
	int spawn;
};

static void prog_name(const struct prog *p, int i, char *buf, size_t len)
{
	snprintf(buf, len, "%s%d", p->prefix, i);
}

static int prog_names_gone(void *arg)
{
	struct prog *p = arg;
	char name[64];
	int i;

	for (i = 0; i <= p->created + 1; i++) {
		prog_name(p, i, name, sizeof(name));
		if (exists(name) != -ENOENT)
			return 0;
	}
	return devshm_count(p->prefix) == 0;
}

static struct prog *prog_new(const char *tag)
{
	struct prog *p = shared_alloc(sizeof(*p));

	if (p) {
		memset(p, 0, sizeof(*p));
		snprintf(p->prefix, sizeof(p->prefix), "lt%s%d_", tag,
			 (int)getpid());
	}
	return p;
}

/* A spawned member of a program: lives until killed. */
static int sleep_until_killed(const void *arg, size_t len)
{
	(void)arg;
	(void)len;
	for (;;)
		pause();
	return 0;
}
MPQ_TARGET(sleep_until_killed);

/*
 * A program: makes prefix0, starts another process of the program (forked
 * or spawned), then makes, writes and closes blocks without unlinking
 * them until it is killed. Exits 0 after the first block if p->created is
 * -1 (a creator that ends normally).
 */
static int program(void *arg)
{
	struct mpq_shm_attr attr = { 0 };
	struct prog *p = arg;
	struct mpq_process *child;
	struct mpq_process_attr pa = { 0 };
	struct mpq_shm *s;
	uint64_t seed = (uint64_t)now_ns() ^ (uint64_t)getpid();
	char name[64];
	int i, stop = p->created < 0;
	pid_t pid;

	if (p->persist)
		attr.flags = MPQ_SHM_ATTR_PERSIST;
	p->created = 0;
	prog_name(p, 0, name, sizeof(name));
	if (mpq_shm_new(&s, name, 4096, &attr))
		return 10;
	strcpy(mpq_shm_buf(s), "first");
	mpq_shm_free(s);

	if (p->spawn) {
		pa.start_method = MPQ_START_SPAWN;
		if (mpq_process_new(&child, sleep_until_killed, NULL, 0, &pa) ||
		    mpq_process_start(child))
			return 11;
		p->other = mpq_process_pid(child);
	} else {
		pid = fork();
		if (pid < 0)
			return 12;
		if (pid == 0) {
			for (;;)
				pause();
		}
		p->other = pid;
	}
	__atomic_store_n(&p->ready, 1, __ATOMIC_RELEASE);
	if (stop)
		_exit(0);	/* no atexit: the child is not joined */

	for (i = 1;; i++) {
		size_t size = 1 + rnd(&seed) % 65536;

		__atomic_store_n(&p->created, i, __ATOMIC_RELEASE);
		prog_name(p, i, name, sizeof(name));
		if (mpq_shm_new(&s, name, size, &attr))
			return 13;
		memset(mpq_shm_buf(s), i, size);
		mpq_shm_free(s);
	}
}

static void wait_ready(struct __test_metadata *_metadata, struct prog *p,
		       pid_t pid)
{
	int64_t end = now_ns() + 30000 * NSEC_PER_MSEC;

	while (!__atomic_load_n(&p->ready, __ATOMIC_ACQUIRE)) {
		int st;

		ASSERT_EQ(0, waitpid(pid, &st, WNOHANG))
			TH_LOG("program ended early: status %#x", st);
		ASSERT_GT(end, now_ns());
		sleep_ms(1);
	}
}

/*
 * Kill the other process of the program and reap it: orphaned by the
 * program's first process, it came to us (become_reaper()).
 */
static void kill_other(struct prog *p)
{
	kill(p->other, SIGKILL);
	while (waitpid(p->other, NULL, 0) < 0 && errno == EINTR)
		;
}

/* Orphans of our programs come to us, to be reaped by kill_other(). */
static int become_reaper(void)
{
	return prctl(PR_SET_CHILD_SUBREAPER, 1);
}

TEST(close_then_attach_by_name_finds_the_block)
{
	long objs = mod_objects();
	struct mpq_shm *a, *b;
	char name[64];

	snprintf(name, sizeof(name), "ltclose%d", (int)getpid());
	ASSERT_EQ(0, mpq_shm_new(&a, name, 5000, NULL));
	strcpy(mpq_shm_buf(a), "kept");
	ASSERT_EQ(0, mpq_shm_close(a));
	ASSERT_EQ(NULL, mpq_shm_buf(a));
	/* No handle open anywhere: the block is still there, by name. */
	ASSERT_EQ(0, mpq_shm_open(&b, name, NULL));
	ASSERT_EQ(5000, mpq_shm_size(b));
	ASSERT_STREQ("kept", mpq_shm_buf(b));
	mpq_shm_free(b);
	ASSERT_EQ(0, mpq_shm_unlink(a));
	mpq_shm_free(a);
	ASSERT_EQ(-ENOENT, exists(name));
	ASSERT_EQ(objs, mod_objects());
}

TEST(unlink_then_attach_is_enoent_and_mappings_stay_valid)
{
	long objs = mod_objects();
	struct mpq_shm *a, *b, *c;
	char name[64], *pa, *pb;

	snprintf(name, sizeof(name), "ltunlink%d", (int)getpid());
	ASSERT_EQ(0, mpq_shm_new(&a, name, 8192, NULL));
	ASSERT_EQ(0, mpq_shm_open(&b, name, NULL));
	pa = mpq_shm_buf(a);
	pb = mpq_shm_buf(b);
	ASSERT_EQ(0, mpq_shm_unlink_name(name, MPQ_BACKEND_DEFAULT));
	ASSERT_EQ(-ENOENT, exists(name));
	ASSERT_EQ(-ENOENT, mpq_shm_unlink(a));
	/* Both handles still map the same memory, to its last byte. */
	strcpy(pa + 8000, "after unlink");
	ASSERT_STREQ("after unlink", pb + 8000);
	/* The name is free for a new block, which is not the old one. */
	ASSERT_EQ(0, mpq_shm_new(&c, name, 100, NULL));
	ASSERT_EQ(0, ((char *)mpq_shm_buf(c))[0]);
	ASSERT_STREQ("after unlink", pb + 8000);
	ASSERT_EQ(0, mpq_shm_unlink(c));
	mpq_shm_free(c);
	mpq_shm_free(a);
	ASSERT_STREQ("after unlink", pb + 8000);
	mpq_shm_free(b);
	ASSERT_EQ(objs, mod_objects());
}

/*
 * The creator SIGKILLed at a random point of making blocks (mid-create
 * included), ROUNDS times; the other process of its program (forked)
 * keeps the names alive until it is killed too, then nothing is left.
 */
static void killed_rounds(struct __test_metadata *_metadata, int spawned)
{
	long objs = mod_objects(), names = mod_names();
	uint64_t seed = (uint64_t)now_ns();
	char first[64];
	int r;

	ASSERT_EQ(0, become_reaper());
	for (r = 0; r < ROUNDS; r++) {
		struct prog *p = prog_new(spawned ? "s" : "k");
		pid_t pid;

		ASSERT_NE(NULL, p);
		p->spawn = spawned;
		pid = spawn(program, p);
		ASSERT_LT(0, pid);
		wait_ready(_metadata, p, pid);
		/* Anywhere in the loop of creates: 0 to 3 ms into it. */
		usleep(rnd(&seed) % 3000);
		kill(pid, SIGKILL);
		ASSERT_EQ(128 + SIGKILL, wait_child(pid, 10000));

		/* Its program lives on in the other process. */
		prog_name(p, 0, first, sizeof(first));
		ASSERT_EQ(0, exists(first)) TH_LOG("round %d", r);
		kill_other(p);
		ASSERT_TRUE(settled(prog_names_gone, p))
			TH_LOG("round %d: names of %s0..%d left", r,
			       p->prefix, p->created);
		munmap(p, sizeof(*p));
	}
	ASSERT_EQ(objs, mod_objects());
	ASSERT_EQ(names, mod_names());
}

TEST(a_killed_creator_leaves_nothing_once_its_forked_children_are_gone)
{
	killed_rounds(_metadata, 0);
}

TEST(a_killed_creator_leaves_nothing_once_its_spawned_children_are_gone)
{
	killed_rounds(_metadata, 1);
}

TEST(a_creator_that_exits_normally_leaves_the_name_to_its_program)
{
	long objs = mod_objects();
	struct prog *p = prog_new("x");
	struct mpq_shm *s;
	char first[64];
	pid_t pid;

	ASSERT_NE(NULL, p);
	ASSERT_EQ(0, become_reaper());
	p->created = -1;
	pid = spawn(program, p);
	ASSERT_EQ(0, wait_child(pid, 10000));
	prog_name(p, 0, first, sizeof(first));
	/* Attached from outside the program: the block, not the name. */
	ASSERT_EQ(0, mpq_shm_open(&s, first, NULL));
	ASSERT_STREQ("first", mpq_shm_buf(s));
	kill_other(p);
	ASSERT_TRUE(settled(name_gone, first));
	/* Our mapping is still good, and the block goes with it. */
	strcpy(mpq_shm_buf(s), "mine still");
	ASSERT_STREQ("mine still", mpq_shm_buf(s));
	mpq_shm_free(s);
	ASSERT_EQ(objs, mod_objects());
	munmap(p, sizeof(*p));
}

/* An unrelated program that attaches, uses and exits: not the owner. */
static int attach_and_exit(void *arg)
{
	struct mpq_shm *s;

	if (mpq_shm_open(&s, arg, NULL))
		return 1;
	strcpy(mpq_shm_buf(s), "visited");
	mpq_shm_close(s);
	return 0;
}

/* Python 3.11's tracker unlinks what an unrelated attacher registered. */
static int unrelated_attacher(void *arg)
{
	pid_t pid = spawn(attach_and_exit, arg);

	return wait_child(pid, 10000);
}

TEST(an_unrelated_program_that_attached_does_not_take_the_name)
{
	long objs = mod_objects();
	struct prog *p = prog_new("u");
	char first[64];
	pid_t pid, q;

	ASSERT_NE(NULL, p);
	ASSERT_EQ(0, become_reaper());
	p->created = -1;
	pid = spawn(program, p);
	ASSERT_EQ(0, wait_child(pid, 10000));
	prog_name(p, 0, first, sizeof(first));
	/* A program of its own: forked before it made any block. */
	q = spawn(unrelated_attacher, first);
	ASSERT_EQ(0, wait_child(q, 20000));
	/* Give a tracker the time it would take to do it wrong. */
	sleep_ms(200);
	ASSERT_EQ(0, exists(first));
	kill_other(p);
	ASSERT_TRUE(settled(name_gone, first));
	ASSERT_EQ(objs, mod_objects());
	munmap(p, sizeof(*p));
}

TEST(a_persistent_block_outlives_its_program_until_unlinked)
{
	long objs = mod_objects(), names = mod_names();
	struct prog *p = prog_new("p");
	struct mpq_shm *s;
	char first[64];
	pid_t pid;

	ASSERT_NE(NULL, p);
	ASSERT_EQ(0, become_reaper());
	p->created = -1;
	p->persist = 1;
	pid = spawn(program, p);
	ASSERT_EQ(0, wait_child(pid, 10000));
	kill_other(p);
	/* The whole program is gone; a tracker would have acted by now. */
	sleep_ms(200);
	prog_name(p, 0, first, sizeof(first));
	ASSERT_EQ(0, mpq_shm_open(&s, first, NULL));
	ASSERT_STREQ("first", mpq_shm_buf(s));
	if (on_kmod())
		ASSERT_EQ(names + 1, mod_names());
	ASSERT_EQ(0, mpq_shm_unlink(s));
	ASSERT_EQ(-ENOENT, exists(first));
	ASSERT_EQ(names, mod_names());
	mpq_shm_free(s);
	ASSERT_EQ(objs, mod_objects());
	ASSERT_EQ(0, devshm_count(p->prefix));
	munmap(p, sizeof(*p));
}

TEST(a_persistent_block_survives_its_creator_killed_mid_create)
{
	long objs = mod_objects(), names = mod_names();
	uint64_t seed = (uint64_t)now_ns();
	struct prog *p = prog_new("q");
	char name[64];
	pid_t pid;
	int i, found = 0;

	ASSERT_NE(NULL, p);
	ASSERT_EQ(0, become_reaper());
	p->persist = 1;
	pid = spawn(program, p);
	ASSERT_LT(0, pid);
	wait_ready(_metadata, p, pid);
	usleep(rnd(&seed) % 3000);
	kill(pid, SIGKILL);
	ASSERT_EQ(128 + SIGKILL, wait_child(pid, 10000));
	kill_other(p);
	sleep_ms(200);
	/* Every name it finished is there; at most the last was cut short. */
	for (i = 0; i <= p->created; i++) {
		prog_name(p, i, name, sizeof(name));
		if (!exists(name)) {
			found++;
			ASSERT_EQ(0, mpq_shm_unlink_name(name,
							 MPQ_BACKEND_DEFAULT));
		}
	}
	ASSERT_LE(p->created, found);
	ASSERT_EQ(names, mod_names());
	ASSERT_EQ(objs, mod_objects());
	ASSERT_EQ(0, devshm_count(p->prefix));
	munmap(p, sizeof(*p));
}

TEST_HARNESS_MAIN
