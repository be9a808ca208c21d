// SPDX-License-Identifier: GPL-2.0
/*
 * The module and namespaces: a name is found only from the IPC namespace
 * that made it, even after that namespace died and a new one took its
 * place; a persistent name does not outlive its namespace; /proc/mpq
 * lists the reader's IPC namespace only, with pids as the reader's pid
 * namespace sees them and names escaped for a terminal; and reading it in
 * small pieces while objects come and go shows every object once. Runs in
 * the test VM as root, with mpq.ko loaded; the tests make their own
 * namespaces and drop to other uids where a stranger is needed.
 */
#include <grp.h>
#include <inttypes.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/resource.h>

#include "kselftest_harness.h"
#include "kmod_helpers.h"

#define VICTIM_UID	1000
#define STRANGER_UID	1001

/* Wait up to timeout_ms for a module counter to come to want. */
static long counter_settled(const char *which, long want, int timeout_ms)
{
	long v = param_long(which);
	int i;

	for (i = 0; i < timeout_ms / 5 && v != want; i++) {
		sleep_ms(5);
		v = param_long(which);
	}
	return v;
}

/*
 * As uid (and gid), root of a new user and IPC namespace of its own;
 * returns /dev/mpq opened before, or -1. The VM runs the tests chrooted,
 * and a chrooted process may not make a user namespace: go back to the
 * root of init's (as root, through /proc/1/root) first.
 */
static int become_ns_root(uid_t uid)
{
	int dev = dev_open();

	if (dev < 0 || chroot("/proc/1/root") || chdir("/")) {
		fprintf(stderr, "# leaving the chroot: %s\n", strerror(errno));
		return -1;
	}
	if (setgroups(0, NULL) || setresgid(uid, uid, uid) ||
	    setresuid(uid, uid, uid))
		return -1;
	if (unshare(CLONE_NEWUSER | CLONE_NEWIPC)) {
		fprintf(stderr, "# unshare(NEWUSER|NEWIPC) as %d: %s\n", uid,
			strerror(errno));
		return -1;
	}
	return dev;
}

/*
 * All of /proc/mpq, read with read() calls of chunk bytes, NUL-terminated
 * (malloc'ed); *lines gets the number of lines. NULL on error.
 */
static char *read_listing(size_t chunk, int *lines)
{
	size_t len = 0, cap = 1 << 16;
	char *buf = malloc(cap);
	int fd = open("/proc/mpq", O_RDONLY | O_CLOEXEC);
	ssize_t n;
	size_t i;

	if (fd < 0 || !buf)
		goto err;
	for (;;) {
		if (cap - len < chunk + 1) {
			char *b = realloc(buf, cap *= 2);

			if (!b)
				goto err;
			buf = b;
		}
		n = read(fd, buf + len, chunk);
		if (n < 0)
			goto err;
		if (!n)
			break;
		len += n;
	}
	close(fd);
	buf[len] = 0;
	*lines = 0;
	for (i = 0; i < len; i++)
		if (buf[i] == '\n')
			++*lines;
	return buf;
err:
	if (fd >= 0)
		close(fd);
	free(buf);
	return NULL;
}

/* Field col (from 0) of the listing line with name; 0 if found. */
static int listing_field(const char *listing, const char *name, int col,
			 char *out, size_t outlen)
{
	const char *line = listing;

	while (line && *line) {
		const char *end = strchr(line, '\n');
		char copy[1024], *save, *tok;
		size_t len = end ? (size_t)(end - line) : strlen(line);
		int i = 0;

		if (len < sizeof(copy)) {
			memcpy(copy, line, len);
			copy[len] = 0;
			tok = strtok_r(copy, " ", &save);
			tok = tok ? strtok_r(NULL, " ", &save) : NULL;
			tok = tok ? strtok_r(NULL, " ", &save) : NULL;
			if (tok && !strcmp(tok, name)) {
				/* Start again: the col-th field. */
				memcpy(copy, line, len);
				copy[len] = 0;
				for (tok = strtok_r(copy, " ", &save); tok;
				     tok = strtok_r(NULL, " ", &save), i++) {
					if (i == col) {
						snprintf(out, outlen, "%s", tok);
						return 0;
					}
				}
				return -1;
			}
		}
		line = end ? end + 1 : NULL;
	}
	return -1;
}

#define COL_CREATOR	9
#define COL_PIDS	12

/* Make a persistent 0600 name in a new namespace as VICTIM_UID; exit. */
static int victim_names_a_secret(void *arg)
{
	int dev, fd;

	dev = become_ns_root(VICTIM_UID);
	if (dev < 0)
		return 100;
	fd = shm_open_raw(dev, arg, 4096,
			  MPQ_SHM_CREAT | MPQ_SHM_EXCL | MPQ_SHM_PERSIST, 0600);
	if (fd == -EEXIST)
		return 1;	/* a dead namespace's name was found */
	return fd < 0 ? 101 : 0;
}

/* A stranger, root of a new namespace, must not find the name. */
static int stranger_looks_for_it(void *arg)
{
	int dev, fd;

	dev = become_ns_root(STRANGER_UID);
	if (dev < 0)
		return 100;
	fd = shm_open_raw(dev, arg, 0, 0, 0);
	if (fd >= 0)
		return 1;
	if (fd != -ENOENT)
		return 2;
	if (shm_unlink_raw(dev, arg) != -ENOENT)
		return 3;
	return 0;
}

/*
 * A namespace that dies is freed, and a new one can get its address and
 * inode number: many rounds of die and create, so that reuse happens.
 */
TEST(name_of_a_dead_namespace_is_never_found)
{
	long objects = counter_settled("objects", param_long("objects"), 1000);
	char name[64];
	int round;

	snprintf(name, sizeof(name), "nsvictim_%d", getpid());
	for (round = 0; round < 60; round++) {
		int ret = wait_child(spawn(victim_names_a_secret, name), 10000);

		ASSERT_NE(1, ret) TH_LOG("round %d: the name of a dead namespace was found by a new one",
					 round);
		ASSERT_EQ(0, ret) TH_LOG("round %d: victim failed (%d)",
					 round, ret);
		/* Let the namespace be freed (it is, asynchronously). */
		sleep_ms(20);
		ret = wait_child(spawn(stranger_looks_for_it, name), 10000);
		ASSERT_EQ(0, ret) TH_LOG("round %d: a stranger's namespace found another's name (%d)",
					 round, ret);
	}
	/* And every one of those blocks is freed with its namespace. */
	ASSERT_EQ(objects, counter_settled("objects", objects, 10000));
}

/* Keep a named block's fd past the namespace: pass it to the parent. */
static int named_then_leave(void *arg)
{
	int *sv = arg, dev, fd;
	char name[64];

	snprintf(name, sizeof(name), "nskeep_%d", getppid());
	dev = become_ns_root(VICTIM_UID);
	if (dev < 0)
		return 100;
	fd = shm_open_raw(dev, name, 4096, MPQ_SHM_CREAT | MPQ_SHM_EXCL,
			  0600);
	if (fd < 0)
		return 101;
	return send_fd(sv[1], fd) ? 102 : 0;
}

TEST(name_kept_by_an_fd_is_not_found_after_its_namespace_died)
{
	char name[64];
	int round;

	snprintf(name, sizeof(name), "nskeep_%d", getpid());
	for (round = 0; round < 40; round++) {
		int sv[2], fd, ret;

		ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
					sv));
		ret = wait_child(spawn(named_then_leave, sv), 10000);
		ASSERT_EQ(0, ret);
		fd = recv_fd(sv[0]);
		ASSERT_LE(0, fd);
		close(sv[0]);
		close(sv[1]);
		sleep_ms(20);
		ret = wait_child(spawn(stranger_looks_for_it, name), 10000);
		ASSERT_EQ(0, ret) TH_LOG("round %d: a name whose namespace died was found (%d)",
					 round, ret);
		close(fd);
	}
}

static int persist_in_a_new_namespace(void *arg)
{
	int dev, fd;

	if (unshare(CLONE_NEWIPC))
		return 100;
	dev = dev_open();
	fd = shm_open_raw(dev, "nspinned", 1 << 20,
			  MPQ_SHM_CREAT | MPQ_SHM_PERSIST, 0600);
	return fd < 0 ? 101 : 0;
}

TEST(persistent_name_of_a_dead_namespace_is_freed)
{
	long objects = counter_settled("objects", param_long("objects"), 1000);
	long pages = param_long("pages");

	ASSERT_EQ(0, wait_child(spawn(persist_in_a_new_namespace, NULL),
				10000));
	/* Swept once a second: give it a few. */
	ASSERT_EQ(objects, counter_settled("objects", objects, 10000))
		TH_LOG("the block of a dead namespace stays pinned");
	ASSERT_EQ(pages, counter_settled("pages", pages, 1000));
}

/* Until killed: persistent names, unnamed blocks and listings. */
static int busy_in_a_new_namespace(void *arg)
{
	char name[32], *listing;
	int dev, i, lines;

	if (unshare(CLONE_NEWIPC))
		return 100;
	dev = dev_open();
	for (i = 0;; i++) {
		snprintf(name, sizeof(name), "nsbusy_%d", i);
		shm_open_raw(dev, name, 4096, MPQ_SHM_CREAT | MPQ_SHM_PERSIST,
			     0600);
		shm_open_raw(dev, NULL, 4096, 0, 0);
		if (!(i % 8)) {
			listing = read_listing(512, &lines);
			free(listing);
		}
	}
	return 0;
}

TEST(namespaces_killed_at_random_points_leak_nothing)
{
	long objects = counter_settled("objects", param_long("objects"), 1000);
	long pages = param_long("pages");
	const char *env = getenv("MPQ_TEST_SEED");
	uint64_t seed = env ? strtoull(env, NULL, 0) : (uint64_t)now_ns();
	int round;

	TH_LOG("seed %" PRIu64 " (replay: MPQ_TEST_SEED=%" PRIu64 ")", seed,
	       seed);
	for (round = 0; round < 30; round++) {
		pid_t pid = spawn(busy_in_a_new_namespace, NULL);

		ASSERT_LT(0, pid);
		sleep_ms(rnd(&seed) % 40);
		kill(pid, SIGKILL);
		ASSERT_EQ(128 + SIGKILL, wait_child(pid, 10000));
	}
	ASSERT_EQ(objects, counter_settled("objects", objects, 10000));
	ASSERT_EQ(pages, counter_settled("pages", pages, 1000));
}

static int listing_in_a_new_namespace(void *arg)
{
	char *listing, name[64];
	int lines, dev, fd;

	if (unshare(CLONE_NEWIPC))
		return 100;
	listing = read_listing(4096, &lines);
	if (!listing)
		return 101;
	if (lines != 1 || strstr(listing, arg))
		return 1;	/* the host's objects show */
	free(listing);
	dev = dev_open();
	snprintf(name, sizeof(name), "nsguest_%d", getpid());
	fd = shm_open_raw(dev, name, 100, MPQ_SHM_CREAT, 0600);
	if (fd < 0)
		return 102;
	listing = read_listing(4096, &lines);
	if (!listing)
		return 103;
	if (lines != 2 || !strstr(listing, name))
		return 2;	/* its own object does not */
	free(listing);
	return 0;
}

TEST(proc_lists_only_the_readers_ipc_namespace)
{
	int dev = dev_open(), named, anon, lines;
	char name[64], *listing;

	ASSERT_LE(0, dev);
	snprintf(name, sizeof(name), "nshost_%d", getpid());
	named = shm_open_raw(dev, name, 100, MPQ_SHM_CREAT | MPQ_SHM_EXCL,
			     0600);
	ASSERT_LE(0, named);
	anon = shm_open_raw(dev, NULL, 100, 0, 0);
	ASSERT_LE(0, anon);
	ASSERT_EQ(0, wait_child(spawn(listing_in_a_new_namespace, name),
				10000));
	/* The host still sees its own. */
	listing = read_listing(4096, &lines);
	ASSERT_NE(NULL, listing);
	ASSERT_NE(NULL, strstr(listing, name));
	ASSERT_EQ(NULL, strstr(listing, "nsguest_"));
	free(listing);
	close(anon);
	close(named);
	close(dev);
}

/* pid 1 of a new pid namespace: map the block and look at its line. */
static int pid1_looks(void *arg)
{
	const char *name = arg;
	char creator[32], pids[64], *listing;
	int dev, fd, lines;
	void *p;

	if (getpid() != 1)
		return 100;
	dev = dev_open();
	fd = shm_open_raw(dev, name, 0, 0, 0);
	if (fd < 0)
		return 101;
	p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return 102;
	listing = read_listing(4096, &lines);
	if (!listing)
		return 103;
	if (listing_field(listing, name, COL_CREATOR, creator,
			  sizeof(creator)) ||
	    listing_field(listing, name, COL_PIDS, pids, sizeof(pids)))
		return 104;
	/*
	 * The creator is not visible here, nor are the other participants:
	 * the test and the helper that forked us (fork copied its mapping).
	 */
	if (strcmp(creator, "0"))
		return 1;
	if (strcmp(pids, "?,?,1")) {
		fprintf(stderr, "# pids as pid 1 sees them: %s\n", pids);
		return 2;
	}
	return 0;
}

static int in_a_new_pid_namespace(void *arg)
{
	if (unshare(CLONE_NEWPID))
		return 110;
	return wait_child(spawn(pid1_looks, arg), 10000);
}

TEST(proc_shows_pids_as_the_readers_pid_namespace_sees_them)
{
	char name[64], field[64], want[32], *listing;
	int dev = dev_open(), fd, lines;
	void *p;

	ASSERT_LE(0, dev);
	snprintf(name, sizeof(name), "nspid_%d", getpid());
	fd = shm_open_raw(dev, name, 4096, MPQ_SHM_CREAT | MPQ_SHM_EXCL, 0600);
	ASSERT_LE(0, fd);
	p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ASSERT_NE(MAP_FAILED, p);
	ASSERT_EQ(0, wait_child(spawn(in_a_new_pid_namespace, name), 10000));
	/* From here, the real pid. */
	listing = read_listing(4096, &lines);
	ASSERT_NE(NULL, listing);
	ASSERT_EQ(0, listing_field(listing, name, COL_CREATOR, field,
				   sizeof(field)));
	snprintf(want, sizeof(want), "%d", getpid());
	ASSERT_STREQ(want, field);
	ASSERT_EQ(0, listing_field(listing, name, COL_PIDS, field,
				   sizeof(field)));
	ASSERT_STREQ(want, field);
	free(listing);
	munmap(p, 4096);
	close(fd);
	close(dev);
}

TEST(proc_escapes_every_byte_a_terminal_would_act_on)
{
	/* ESC sequence, space, backslash, DEL, UTF-8, tab, a C1 control. */
	static const char raw[] = "ns\033[2J \\\x7f\xc3\xa9\t\x9b_x";
	static const char want[] =
		"ns\\033[2J\\040\\134\\177\\303\\251\\011\\233_x";
	int dev = dev_open(), fd, lines;
	char *listing, *c;

	ASSERT_LE(0, dev);
	shm_unlink_raw(dev, raw);
	fd = shm_open_raw(dev, raw, 100, MPQ_SHM_CREAT | MPQ_SHM_EXCL, 0600);
	ASSERT_LE(0, fd);
	listing = read_listing(4096, &lines);
	ASSERT_NE(NULL, listing);
	ASSERT_NE(NULL, strstr(listing, want));
	for (c = listing; *c == '\n' || (*c >= ' ' && *c < 0x7f); c++)
		;
	ASSERT_EQ(0, *c) TH_LOG("raw byte 0x%02x at %td", (unsigned char)*c,
				c - listing);
	free(listing);
	close(fd);
	close(dev);
}

#define MANY	10000

/*
 * 10,000 objects, read 100 bytes at a time (a read() per line or so);
 * halfway, a thousand already listed go away and a hundred come. Every
 * object alive throughout shows exactly once: a reader that resumes by
 * position would skip as many as went away.
 */
TEST(proc_lists_many_objects_once_each_while_they_change)
{
	struct rlimit rl = { MANY + 1000, MANY + 1000 };
	int dev = dev_open(), *fds, pfd, i, n, lines = 0, seen_ok = 0;
	size_t len = 0, cap = 1 << 20;
	char *buf = malloc(cap), *line, *save;
	unsigned char *seen;
	uint64_t *ids, base;
	bool changed = false;
	int extra[100];
	ssize_t r;

	ASSERT_LE(0, dev);
	ASSERT_NE(NULL, buf);
	ASSERT_EQ(0, setrlimit(RLIMIT_NOFILE, &rl));
	fds = calloc(MANY, sizeof(*fds));
	ids = calloc(MANY, sizeof(*ids));
	ASSERT_TRUE(fds && ids);
	for (i = 0; i < MANY; i++) {
		fds[i] = shm_open_raw(dev, NULL, 1, 0, 0);
		ASSERT_LE(0, fds[i]) TH_LOG("object %d: %d", i, fds[i]);
		ids[i] = shm_id(fds[i]);
		ASSERT_LT(0, ids[i]);
	}
	base = ids[0];
	seen = calloc(MANY, 1);
	ASSERT_NE(NULL, seen);

	pfd = open("/proc/mpq", O_RDONLY | O_CLOEXEC);
	ASSERT_LE(0, pfd);
	for (;;) {
		if (cap - len < 200) {
			buf = realloc(buf, cap *= 2);
			ASSERT_NE(NULL, buf);
		}
		r = read(pfd, buf + len, 100);
		ASSERT_LE(0, r);
		if (!r)
			break;
		len += r;
		if (!changed && len > 200000) {
			/* Past the first few thousand: change the set. */
			for (i = 0; i < 1000; i++) {
				close(fds[i]);
				fds[i] = -1;
			}
			for (i = 0; i < 100; i++)
				extra[i] = shm_open_raw(dev, NULL, 1, 0, 0);
			changed = true;
		}
	}
	close(pfd);
	buf[len] = 0;
	ASSERT_TRUE(changed) TH_LOG("the set never changed: %zu bytes", len);

	n = 0;
	for (line = strtok_r(buf, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save), n++) {
		uint64_t id;

		if (!n)
			continue;	/* the header */
		ASSERT_EQ(1, sscanf(line, "%" SCNu64, &id));
		if (id < base || id >= base + MANY)
			continue;	/* the hundred new, or others' */
		ASSERT_EQ(ids[id - base], id);
		ASSERT_EQ(0, seen[id - base]) TH_LOG("id %" PRIu64 " twice",
						     id);
		seen[id - base] = 1;
	}
	for (i = 1000; i < MANY; i++)
		if (seen[i])
			seen_ok++;
	ASSERT_EQ(MANY - 1000, seen_ok)
		TH_LOG("objects alive throughout but not listed");

	/* And read whole, in one go: every one of them, one line each. */
	free(buf);
	buf = read_listing(1 << 16, &lines);
	ASSERT_NE(NULL, buf);
	ASSERT_LE(MANY - 1000 + 100 + 1, lines);
	free(buf);
	for (i = 0; i < 100; i++)
		close(extra[i]);
	for (i = 1000; i < MANY; i++)
		close(fds[i]);
	free(seen);
	free(ids);
	free(fds);
	close(dev);
}

TEST_HARNESS_MAIN
