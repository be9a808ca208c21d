// SPDX-License-Identifier: GPL-2.0
/*
 * Per-user budgets of the module: every object is charged to the user who
 * made it (bytes, one object, and one name while it has a persistent
 * name), an ordinary user past a limit gets -EDQUOT, freeing an object
 * gives its charge back whoever frees it and whenever, a process with
 * CAP_SYS_RESOURCE is exempt, and /proc/mpq_users shows it all. Runs in
 * the test VM as root, with mpq.ko loaded: ordinary users are forked
 * children that setresuid() to a uid of their own, one per test, and the
 * limits are set small through /sys/module/mpq/parameters and restored.
 */
#include <grp.h>
#include <sched.h>
#include <stdio.h>

#include "kselftest_harness.h"
#include "kmod_helpers.h"

#define PAGE		4096
#define RUN_AS_MS	20000	/* how long a run_as() child may take */

/* Where usage_of() reads /proc/mpq_users: relative to users_dir. */
static int users_dir = AT_FDCWD;
static const char *users_file = "/proc/mpq_users";

/* MPQ_IOC_SHM_OPEN on a /dev/mpq of its own: the fd or -errno. */
static int shm_raw(const char *name, uint64_t bytes, uint32_t flags)
{
	int dev = dev_open(), fd;

	if (dev < 0)
		return -errno;
	fd = shm_open_raw(dev, name, bytes, flags, 0600);
	close(dev);
	return fd;
}

static int shm_new(uint64_t bytes)
{
	return shm_raw(NULL, bytes, 0);
}

static int shm_persist(const char *name, uint64_t bytes)
{
	return shm_raw(name, bytes,
		       MPQ_SHM_CREAT | MPQ_SHM_EXCL | MPQ_SHM_PERSIST);
}

static int unlink_raw(const char *name)
{
	int dev = dev_open(), ret;

	if (dev < 0)
		return -errno;
	ret = shm_unlink_raw(dev, name);
	close(dev);
	return ret;
}

/* The smallest queue: the fd or -errno. */
static int queue_new(void)
{
	int dev = dev_open(), fd;

	if (dev < 0)
		return -errno;
	fd = queue_create(dev, 2, 8);
	close(dev);
	return fd;
}

/* The smallest pipe: 0 with fds[] filled in, or -errno. */
static int pipe_new(int fds[2])
{
	int dev = dev_open(), ret;

	if (dev < 0)
		return -errno;
	ret = pipe_create(dev, MPQ_CREATE_CLOEXEC, PAGE, fds);
	close(dev);
	return ret;
}

static int param_set(const char *name, unsigned long v)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%lu", v);
	return param_write(name, buf);
}

struct usage {
	long long objects, bytes, names;
};

/*
 * The /proc/mpq_users row of uid, by the header's column names. Returns
 * 0, -ESRCH when the user has no row (nothing charged), or -errno (no
 * such file: a module without budgets).
 */
static int usage_of(uid_t uid, struct usage *u)
{
	char line[512], *col[16], *save, *tok;
	int ncol = 0, i, ret = -ESRCH;
	int fd = openat(users_dir, users_file, O_RDONLY | O_CLOEXEC);
	FILE *f = fd < 0 ? NULL : fdopen(fd, "r");

	memset(u, 0, sizeof(*u));
	if (!f)
		return fd < 0 ? -errno : -ENOMEM;
	if (!fgets(line, sizeof(line), f)) {
		fclose(f);
		return -EIO;
	}
	for (tok = strtok_r(line, " \n", &save); tok && ncol < 16;
	     tok = strtok_r(NULL, " \n", &save))
		col[ncol++] = strdup(tok);
	while (ret == -ESRCH && fgets(line, sizeof(line), f)) {
		struct usage v = { -1, -1, -1 };
		long long x;
		bool mine = false;

		for (i = 0, tok = strtok_r(line, " \n", &save);
		     tok && i < ncol; tok = strtok_r(NULL, " \n", &save), i++) {
			x = strtoll(tok, NULL, 10);
			if (!strcmp(col[i], "uid"))
				mine = (uid_t)x == uid;
			else if (!strcmp(col[i], "objects"))
				v.objects = x;
			else if (!strcmp(col[i], "bytes"))
				v.bytes = x;
			else if (!strcmp(col[i], "names"))
				v.names = x;
		}
		if (mine) {
			*u = v;
			ret = 0;
		}
	}
	for (i = 0; i < ncol; i++)
		free(col[i]);
	fclose(f);
	return ret;
}

/*
 * The row of uid once it says objects (or none, for 0), polling for at
 * most ms: fput may lag, and names of dead namespaces go once a second.
 */
static int usage_settled_ms(uid_t uid, long long objects, struct usage *u,
			    int ms)
{
	int i, ret = 0;

	for (i = 0; i < ms / 2; i++) {
		ret = usage_of(uid, u);
		if (ret && ret != -ESRCH)
			return ret;
		if (u->objects == objects)
			return ret;
		sleep_ms(2);
	}
	return ret;
}

static int usage_settled(uid_t uid, long long objects, struct usage *u)
{
	return usage_settled_ms(uid, objects, u, 1000);
}

FIXTURE(limits) {
	char bytes[32], objects[32], names[32];
	char name[4][64];
};

FIXTURE_SETUP(limits)
{
	int i;

	ASSERT_EQ(0, param_read("max_user_bytes", self->bytes, 32))
		TH_LOG("is mpq.ko (with per-user budgets) loaded?");
	ASSERT_EQ(0, param_read("max_user_objects", self->objects, 32));
	ASSERT_EQ(0, param_read("max_user_names", self->names, 32));
	for (i = 0; i < 4; i++)
		snprintf(self->name[i], sizeof(self->name[i]), "klim_%d_%d",
			 getpid(), i);
}

FIXTURE_TEARDOWN(limits)
{
	int i;

	for (i = 0; i < 4; i++)
		unlink_raw(self->name[i]);
	param_write("max_user_bytes", self->bytes);
	param_write("max_user_objects", self->objects);
	param_write("max_user_names", self->names);
}

TEST_F(limits, defaults_are_a_quarter_of_ram_16384_objects_256_names)
{
	unsigned long long kb = 0, pages;
	char line[256];
	FILE *f = fopen("/proc/meminfo", "r");

	ASSERT_NE(NULL, f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "MemTotal: %llu kB", &kb) == 1)
			break;
	fclose(f);
	pages = kb / (PAGE / 1024);
	/* Within 1 MiB: RAM the kernel frees after the module's load counts. */
	ASSERT_GE(1 << 20, llabs((long long)(pages / 4 * PAGE) -
				 (long long)strtoull(self->bytes, NULL, 10)))
		TH_LOG("max_user_bytes %s, MemTotal %llu kB", self->bytes, kb);
	ASSERT_EQ(16384, atoi(self->objects));
	ASSERT_EQ(256, atoi(self->names));
}

/* Fills a 1 MiB budget, then every type of object is refused. */
static int fill_byte_budget(void *arg)
{
	struct usage u;
	int a, b, c, fds[2];

	a = shm_new(512 * 1024);
	b = shm_new(512 * 1024);
	if (a < 0 || b < 0)
		return 1;
	if (shm_new(1) != -EDQUOT)
		return 3;
	if (queue_new() != -EDQUOT)
		return 4;
	if (pipe_new(fds) != -EDQUOT)
		return 5;
	/* Refusals charge nothing; a freed block gives its bytes back. */
	if (usage_of(getuid(), &u) || u.objects != 2 || u.bytes != 1 << 20)
		return 6;
	close(a);
	c = shm_new(512 * 1024);
	if (c < 0)
		return 7;
	return 0;
}

TEST_F(limits, an_ordinary_user_gets_edquot_past_its_byte_budget)
{
	struct usage u;

	ASSERT_EQ(0, param_set("max_user_bytes", 1 << 20));
	ASSERT_EQ(0, run_as(4201, 4201, fill_byte_budget, NULL, RUN_AS_MS));
	ASSERT_EQ(-ESRCH, usage_settled(4201, 0, &u));
}

static int fill_object_cap(void *arg)
{
	int q, s, fds[2];
	struct usage u;

	q = queue_new();
	s = shm_new(PAGE);
	if (q < 0 || s < 0 || pipe_new(fds))
		return 1;
	if (shm_new(PAGE) != -EDQUOT)
		return 3;
	if (queue_new() != -EDQUOT)
		return 4;
	if (pipe_new(fds) != -EDQUOT)
		return 5;
	if (usage_of(getuid(), &u) || u.objects != 3)
		return 2;
	close(s);
	if (shm_new(PAGE) < 0)
		return 6;
	return 0;
}

TEST_F(limits, an_ordinary_user_gets_edquot_past_its_object_cap)
{
	struct usage u;

	ASSERT_EQ(0, param_set("max_user_objects", 3));
	ASSERT_EQ(0, run_as(4202, 4202, fill_object_cap, NULL, RUN_AS_MS));
	ASSERT_EQ(-ESRCH, usage_settled(4202, 0, &u));
}

static int fill_name_cap(void *arg)
{
	char (*name)[64] = arg;
	struct usage u;
	int fd;

	if (shm_persist(name[0], PAGE) < 0 || shm_persist(name[1], PAGE) < 0)
		return 1;
	if (shm_persist(name[2], PAGE) != -EDQUOT)
		return 2;
	/* The refused name does not exist, and charged nothing. */
	if (shm_raw(name[2], PAGE, 0) != -ENOENT)
		return 3;
	if (usage_of(getuid(), &u) || u.names != 2 || u.objects != 2)
		return 4;
	/* A name that goes with its program (its /dev/mpq) is not charged. */
	fd = shm_raw(name[2], PAGE, MPQ_SHM_CREAT);
	if (fd < 0)
		return 5;
	close(fd);
	/* Unlinking gives the name back. */
	if (unlink_raw(name[0]) || shm_persist(name[3], PAGE) < 0)
		return 6;
	if (usage_of(getuid(), &u) || u.names != 2)
		return 7;
	return 0;
}

TEST_F(limits, an_ordinary_user_gets_edquot_past_its_persistent_name_cap)
{
	struct usage u;

	ASSERT_EQ(0, param_set("max_user_names", 2));
	ASSERT_EQ(0, run_as(4203, 4203, fill_name_cap, self->name, RUN_AS_MS));
	ASSERT_EQ(0, usage_of(4203, &u));
	ASSERT_EQ(2, u.names);
	ASSERT_EQ(0, unlink_raw(self->name[1]));
	ASSERT_EQ(0, unlink_raw(self->name[3]));
	ASSERT_EQ(-ESRCH, usage_settled(4203, 0, &u));
}

/* Makes a queue, a pipe and a block, and hands their fds over. */
static int make_and_hand_over(void *arg)
{
	int sock = *(int *)arg, fds[2], q, s;

	q = queue_new();
	s = shm_new(3 * PAGE);
	if (q < 0 || s < 0 || pipe_new(fds))
		return 1;
	if (send_fd(sock, q) || send_fd(sock, s) || send_fd(sock, fds[0]) ||
	    send_fd(sock, fds[1]))
		return 2;
	return 0;
}

TEST_F(limits, freeing_returns_the_charge_after_the_creator_exited)
{
	int sv[2], fd[4], i;
	struct usage u;
	void *p;

	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
	ASSERT_EQ(0, run_as(4204, 4204, make_and_hand_over, &sv[1], RUN_AS_MS));
	for (i = 0; i < 4; i++) {
		fd[i] = recv_fd(sv[0]);
		ASSERT_LE(0, fd[i]);
	}
	/* The creator is gone; what it made is still charged to it. */
	ASSERT_EQ(0, usage_of(4204, &u));
	ASSERT_EQ(3, u.objects);
	ASSERT_LT(3 * PAGE, u.bytes);
	ASSERT_EQ(0, u.names);

	/* Another process's mapping keeps the block, and its charge. */
	p = mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd[1], 0);
	ASSERT_NE(MAP_FAILED, p);
	for (i = 0; i < 4; i++)
		close(fd[i]);
	ASSERT_EQ(0, usage_settled(4204, 1, &u));
	ASSERT_EQ(1, u.objects);
	ASSERT_EQ(3 * PAGE, u.bytes);
	ASSERT_EQ(0, munmap(p, 3 * PAGE));
	ASSERT_EQ(-ESRCH, usage_settled(4204, 0, &u));
	close(sv[0]);
	close(sv[1]);
}

static int make_persistent(void *arg)
{
	int fd = shm_persist(arg, 3 * PAGE);

	if (fd < 0)
		return 1;
	close(fd);
	return 0;
}

TEST_F(limits, a_persistent_name_stays_charged_to_its_creator_until_unlinked)
{
	struct usage u;

	ASSERT_EQ(0, run_as(4205, 4205, make_persistent, self->name[0], RUN_AS_MS));
	ASSERT_EQ(0, usage_settled(4205, 1, &u));
	ASSERT_EQ(1, u.objects);
	ASSERT_EQ(3 * PAGE, u.bytes);
	ASSERT_EQ(1, u.names);
	/* Root unlinks it: the creator's charge goes with the block. */
	ASSERT_EQ(0, unlink_raw(self->name[0]));
	ASSERT_EQ(-ESRCH, usage_settled(4205, 0, &u));
}

/* A persistent name in an IPC namespace of its own, which then dies. */
static int persist_in_own_ipc_ns(void *arg)
{
	if (unshare(CLONE_NEWIPC) || setgroups(0, NULL) ||
	    setresgid(4211, 4211, 4211) || setresuid(4211, 4211, 4211))
		return 10;
	return make_persistent(arg);
}

TEST_F(limits, a_name_dropped_with_its_dead_namespace_gives_its_charge_back)
{
	struct usage u;

	ASSERT_EQ(0, wait_child(spawn(persist_in_own_ipc_ns, self->name[0]),
				10000));
	/* Nothing can reach the name now: it goes, and its charges too. */
	ASSERT_EQ(-ESRCH, usage_settled_ms(4211, 0, &u, 10000))
		TH_LOG("objects %lld bytes %lld names %lld", u.objects, u.bytes,
		       u.names);
}

/* uid 0 without CAP_SYS_RESOURCE: an ordinary user to the budget. */
static int root_without_sys_resource(void *arg)
{
	if (drop_sys_resource())
		return 1;
	if (shm_new(PAGE) != -EDQUOT)
		return 2;
	if (queue_new() != -EDQUOT)
		return 3;
	return 0;
}

TEST_F(limits, cap_sys_resource_is_exempt_and_still_counted)
{
	struct usage before, after;
	int fd[3], fds[2], i;

	ASSERT_EQ(0, param_set("max_user_bytes", 0));
	ASSERT_EQ(0, param_set("max_user_objects", 0));
	ASSERT_EQ(0, param_set("max_user_names", 0));
	usage_of(0, &before);
	fd[0] = shm_new(2 * PAGE);
	fd[1] = queue_new();
	fd[2] = shm_persist(self->name[0], 2 * PAGE);
	ASSERT_LE(0, fd[0]);
	ASSERT_LE(0, fd[1]);
	ASSERT_LE(0, fd[2]);
	ASSERT_EQ(0, pipe_new(fds));
	ASSERT_EQ(0, usage_of(0, &after));
	ASSERT_EQ(before.objects + 4, after.objects);
	ASSERT_EQ(before.names + 1, after.names);
	ASSERT_LT(before.bytes + 4 * PAGE, after.bytes);

	ASSERT_EQ(0, run_as(0, 0, root_without_sys_resource, NULL, RUN_AS_MS));
	for (i = 0; i < 3; i++)
		close(fd[i]);
	close(fds[0]);
	close(fds[1]);
	ASSERT_EQ(0, unlink_raw(self->name[0]));
}

struct names {
	char (*name)[64];
	int first, n, want;	/* create names first.., expect want */
};

static int make_names(void *arg)
{
	struct names *a = arg;
	int i, fd;

	for (i = 0; i < a->n; i++) {
		fd = shm_persist(a->name[a->first + i], PAGE);
		if (fd < 0)
			return -fd == a->want && i == a->n - 1 ? 0 : 1;
		close(fd);
	}
	return a->want ? 2 : 0;
}

static int fill_objects(void *arg)
{
	int a = shm_new(PAGE), b = shm_new(PAGE);

	if (a < 0 || b < 0)
		return 1;
	return shm_new(PAGE) == -EDQUOT ? 0 : 2;
}

TEST_F(limits, two_users_budgets_are_independent)
{
	struct names first = { self->name, 0, 2, 0 };
	struct names more = { self->name, 2, 1, EDQUOT };
	struct usage u;

	ASSERT_EQ(0, param_set("max_user_objects", 2));
	/* User A fills its budget with blocks that outlive it. */
	ASSERT_EQ(0, run_as(4206, 4206, make_names, &first, RUN_AS_MS));
	/* User B still has all of its own, and no more. */
	ASSERT_EQ(0, run_as(4207, 4207, fill_objects, NULL, RUN_AS_MS));
	ASSERT_EQ(-ESRCH, usage_settled(4207, 0, &u));
	/* A has none left. */
	ASSERT_EQ(0, run_as(4206, 4206, make_names, &more, RUN_AS_MS));
	ASSERT_EQ(0, usage_of(4206, &u));
	ASSERT_EQ(2, u.objects);
	ASSERT_EQ(2, u.names);
	ASSERT_EQ(0, unlink_raw(self->name[0]));
	ASSERT_EQ(0, unlink_raw(self->name[1]));
	ASSERT_EQ(-ESRCH, usage_settled(4206, 0, &u));
}

/*
 * Become root of a new user namespace that maps uid 0 (to 0) only, with
 * every capability in it and none outside. The VM runs the tests
 * chrooted, and a chrooted process may not make a user namespace: leave
 * the chroot first (root may), keeping /proc open for usage_of().
 */
static int enter_userns(void)
{
	int fd, i;

	users_dir = open("/proc", O_PATH | O_DIRECTORY | O_CLOEXEC);
	users_file = "mpq_users";
	if (users_dir < 0 || chdir("/") || chroot("/proc"))
		return -1;
	for (i = 0; i < 64; i++)
		if (chdir(".."))
			return -1;
	if (chroot(".") || unshare(CLONE_NEWUSER))
		return -1;
	fd = openat(users_dir, "self/uid_map", O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, "0 0 1", 5) != 5)
		return -1;
	close(fd);
	return 0;
}

/* In a user namespace that maps uid 0 only: 4208 must not show. */
static int read_in_userns(void *arg)
{
	struct usage u;

	if (enter_userns())
		return 1;
	if (usage_of(4208, &u) != -ESRCH)
		return 3;
	if (usage_of(65534, &u) != -ESRCH)	/* nor as overflowuid */
		return 4;
	if (usage_of((uid_t)-1, &u) != -ESRCH)	/* nor as no uid */
		return 5;
	return 0;
}

TEST_F(limits, users_show_only_where_the_reader_can_name_them)
{
	struct usage u;

	ASSERT_EQ(0, run_as(4208, 4208, make_persistent, self->name[0], RUN_AS_MS));
	ASSERT_EQ(0, usage_of(4208, &u));
	ASSERT_EQ(1, u.names);
	ASSERT_EQ(0, wait_child(spawn(read_in_userns, NULL), 10000));
	ASSERT_EQ(0, unlink_raw(self->name[0]));
}

/* Root of a user namespace has CAP_SYS_RESOURCE there only: not exempt. */
static int create_in_userns(void *arg)
{
	if (enter_userns())
		return 1;
	if (shm_new(PAGE) != -EDQUOT)
		return 2;
	return 0;
}

TEST_F(limits, root_of_a_user_namespace_is_not_exempt)
{
	ASSERT_EQ(0, param_set("max_user_objects", 0));
	ASSERT_EQ(0, wait_child(spawn(create_in_userns, NULL), 10000));
}

/* The library's creates report the module's refusal as it is. */
static int create_through_libmpq(void *arg)
{
	struct mpq_queue_attr qa = { .backend = MPQ_BACKEND_KMOD };
	struct mpq_pipe_attr pa = { .backend = MPQ_BACKEND_KMOD };
	struct mpq_shm_attr sa = { .backend = MPQ_BACKEND_KMOD };
	struct mpq_conn *c0, *c1;
	struct mpq_queue *q;
	struct mpq_shm *s;

	if (mpq_queue_new(&q, &qa) != -EDQUOT)
		return 1;
	if (mpq_pipe(&c0, &c1, 1, &pa) != -EDQUOT)
		return 2;
	if (mpq_shm_new(&s, NULL, PAGE, &sa) != -EDQUOT)
		return 3;
	return 0;
}

TEST_F(limits, libmpq_returns_edquot_unchanged)
{
	ASSERT_EQ(0, param_set("max_user_objects", 0));
	ASSERT_EQ(0, run_as(4209, 4209, create_through_libmpq, NULL, RUN_AS_MS));
}

TEST_HARNESS_MAIN
