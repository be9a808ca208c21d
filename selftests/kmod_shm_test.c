// SPDX-License-Identifier: GPL-2.0
/*
 * The module's shared-memory objects through raw ioctls on /dev/mpq:
 * hostile arguments, names in the IPC namespace, permissions checked like
 * a file (another user gets -EACCES), persistence, and the lifetime: a
 * name holds its block until unlinked or until the /dev/mpq file it was
 * made through is closed everywhere, which frees a crashed creator's
 * block. Runs in the test VM as root, with
 * mpq.ko loaded; without /dev/mpq every test fails.
 */
#include <grp.h>
#include <sched.h>
#include <stdio.h>

#include "kselftest_harness.h"
#include "kmod_helpers.h"

#define OTHER_UID	1000
#define OTHER_GID	1000
#define RUN_AS_MS	10000	/* how long a run_as() child may take */

/* Objects are freed when the last reference goes; fput may be deferred. */
static long objects_settled(long want)
{
	long v = objects();
	int i;

	for (i = 0; i < 500 && v != want; i++) {
		sleep_ms(2);
		v = objects();
	}
	return v;
}

static int as_other_user(int (*fn)(void *), void *arg)
{
	return run_as(OTHER_UID, OTHER_GID, fn, arg, RUN_AS_MS);
}

FIXTURE(shm) {
	int dev;
	long objects;
	char name[64];
};

FIXTURE_SETUP(shm)
{
	self->dev = dev_open();
	ASSERT_LE(0, self->dev) TH_LOG("/dev/mpq: %s (is mpq.ko loaded?)",
				       strerror(errno));
	self->objects = objects_settled(objects());
	snprintf(self->name, sizeof(self->name), "kshm_%d", getpid());
}

FIXTURE_TEARDOWN(shm)
{
	shm_unlink_raw(self->dev, self->name);
	close(self->dev);
}

TEST_F(shm, anonymous_block_reports_its_geometry_and_maps)
{
	struct mpq_shm_info i;
	int fd = shm_open_raw(self->dev, NULL, 5000, 0, 0);
	char *p;

	ASSERT_LE(0, fd);
	ASSERT_EQ(0, shm_info(fd, &i));
	ASSERT_EQ(5000, i.bytes);
	ASSERT_EQ(8192, i.map_size);
	ASSERT_EQ(MPQ_SHM_KIND_SHM, i.kind);
	ASSERT_EQ(0, i.flags);
	ASSERT_LT(0, i.id);
	p = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ASSERT_NE(MAP_FAILED, p);
	ASSERT_EQ(0, p[0]);
	ASSERT_EQ(0, p[8191]);
	ASSERT_EQ(MAP_FAILED, mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0));
	ASSERT_EQ(MAP_FAILED, mmap(NULL, 8192, PROT_READ, MAP_PRIVATE, fd, 0));
	ASSERT_EQ(MAP_FAILED, mmap(NULL, 8192, PROT_READ | PROT_EXEC,
				   MAP_SHARED, fd, 0));
	munmap(p, 8192);
	close(fd);
	ASSERT_EQ(self->objects, objects_settled(self->objects));
}

TEST_F(shm, open_refuses_hostile_arguments)
{
	struct mpq_shm_open o = { .size = sizeof(o), .bytes = 100 };
	char longname[300];

	ASSERT_EQ(-EINVAL, shm_open_raw(self->dev, NULL, 0, 0, 0));
	ASSERT_EQ(-E2BIG, shm_open_raw(self->dev, NULL, 1ULL << 40, 0, 0));
	ASSERT_EQ(-EINVAL, shm_open_raw(self->dev, NULL, 10, 1U << 20, 0));
	ASSERT_EQ(-EINVAL, shm_open_raw(self->dev, NULL, 10, 0, 01000));
	ASSERT_EQ(-EINVAL, shm_open_raw(self->dev, NULL, 10, MPQ_SHM_EXCL, 0));
	ASSERT_EQ(-EINVAL, shm_open_raw(self->dev, NULL, 10, MPQ_SHM_PERSIST, 0));
	ASSERT_EQ(-EINVAL, shm_open_raw(self->dev, "x", 10, MPQ_SHM_PERSIST, 0));
	ASSERT_EQ(-EINVAL, shm_open_raw(self->dev, "", 10, MPQ_SHM_CREAT, 0));
	ASSERT_EQ(-EINVAL, shm_open_raw(self->dev, "a/b", 10, MPQ_SHM_CREAT, 0));
	memset(longname, 'n', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = 0;
	ASSERT_EQ(-ENAMETOOLONG, shm_open_raw(self->dev, longname, 10,
					      MPQ_SHM_CREAT, 0600));
	longname[255] = 0;	/* exactly the longest name */
	{
		int fd = shm_open_raw(self->dev, longname, 10,
				      MPQ_SHM_CREAT | MPQ_SHM_EXCL, 0600);

		ASSERT_LE(0, fd);
		close(fd);
		ASSERT_EQ(0, shm_unlink_raw(self->dev, longname));
	}
	ASSERT_EQ(-EFAULT, shm_open_raw(self->dev, (char *)8, 10,
					MPQ_SHM_CREAT, 0600));
	ASSERT_EQ(-EFAULT, shm_open_raw(self->dev, (char *)-4096L, 10,
					MPQ_SHM_CREAT, 0600));
	o.kind = MPQ_SHM_KIND_MAX;
	ASSERT_EQ(-1, ioctl(self->dev, MPQ_IOC_SHM_OPEN, &o));
	ASSERT_EQ(EINVAL, errno);
	o.kind = 0;
	o.reserved[3] = 1;
	ASSERT_EQ(-1, ioctl(self->dev, MPQ_IOC_SHM_OPEN, &o));
	ASSERT_EQ(EINVAL, errno);
	o.reserved[3] = 0;
	o.size = 8;
	ASSERT_EQ(-1, ioctl(self->dev, MPQ_IOC_SHM_OPEN, &o));
	ASSERT_EQ(EINVAL, errno);
	ASSERT_EQ(-1, ioctl(self->dev, MPQ_IOC_SHM_OPEN, (void *)16));
	ASSERT_EQ(EFAULT, errno);
	ASSERT_EQ(self->objects, objects_settled(self->objects));
}

TEST_F(shm, unlink_refuses_hostile_arguments)
{
	struct mpq_shm_unlink u = { .size = sizeof(u), .flags = 1,
				    .name = (uint64_t)(uintptr_t)"x" };

	ASSERT_EQ(-1, ioctl(self->dev, MPQ_IOC_SHM_UNLINK, &u));
	ASSERT_EQ(EINVAL, errno);
	u.flags = 0;
	u.reserved[1] = 5;
	ASSERT_EQ(-1, ioctl(self->dev, MPQ_IOC_SHM_UNLINK, &u));
	ASSERT_EQ(EINVAL, errno);
	ASSERT_EQ(-EFAULT, shm_unlink_raw(self->dev, (char *)8));
	ASSERT_EQ(-ENOENT, shm_unlink_raw(self->dev, "kshm_never_made"));
	ASSERT_EQ(-ENOTTY, ioctl(self->dev, MPQ_IOC_SHM_INFO, &u) ? -errno : 0);
}

TEST_F(shm, names_create_exclusively_and_open_the_same_memory)
{
	int a, b;
	char *pa, *pb;

	ASSERT_EQ(-ENOENT, shm_open_raw(self->dev, self->name, 0, 0, 0));
	a = shm_open_raw(self->dev, self->name, 4096,
			 MPQ_SHM_CREAT | MPQ_SHM_EXCL, 0600);
	ASSERT_LE(0, a);
	ASSERT_EQ(-EEXIST, shm_open_raw(self->dev, self->name, 4096,
					MPQ_SHM_CREAT | MPQ_SHM_EXCL, 0600));
	/* CREAT without EXCL opens what is there; its size wins. */
	b = shm_open_raw(self->dev, self->name, 99999, MPQ_SHM_CREAT, 0600);
	ASSERT_LE(0, b);
	pa = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, a, 0);
	pb = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, b, 0);
	ASSERT_NE(MAP_FAILED, pa);
	ASSERT_NE(MAP_FAILED, pb);
	strcpy(pa, "same");
	ASSERT_STREQ("same", pb);
	munmap(pa, 4096);
	munmap(pb, 4096);
	close(a);
	close(b);
}

TEST_F(shm, a_name_outlives_its_fds_until_its_dev_file_is_closed)
{
	struct mpq_shm_info i;
	int dev = dev_open(), fd;

	ASSERT_LE(0, dev);
	fd = shm_open_raw(dev, self->name, 100, MPQ_SHM_CREAT | MPQ_SHM_EXCL,
			  0600);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, shm_info(fd, &i));
	ASSERT_EQ(0, i.flags);
	close(fd);
	sleep_ms(20);
	/* No fd, no mapping: the name holds it. */
	ASSERT_EQ(self->objects + 1, objects());
	fd = shm_open_raw(self->dev, self->name, 0, 0, 0);
	ASSERT_LE(0, fd);
	close(fd);
	/* Another /dev/mpq file closing changes nothing. */
	close(dev_open());
	ASSERT_LE(0, (fd = shm_open_raw(self->dev, self->name, 0, 0, 0)));
	close(fd);
	/* The file it was made through is closed: its names go. */
	close(dev);
	ASSERT_EQ(self->objects, objects_settled(self->objects));
	ASSERT_EQ(-ENOENT, shm_open_raw(self->dev, self->name, 0, 0, 0));
	ASSERT_EQ(-ENOENT, shm_unlink_raw(self->dev, self->name));
}

static int hold_dev_until_killed(void *arg)
{
	for (;;)
		pause();
	return 0;
}

TEST_F(shm, a_name_stays_while_any_process_has_its_dev_file)
{
	int dev = dev_open(), fd;
	pid_t pid;

	ASSERT_LE(0, dev);
	fd = shm_open_raw(dev, self->name, 100, MPQ_SHM_CREAT | MPQ_SHM_EXCL,
			  0600);
	ASSERT_LE(0, fd);
	close(fd);
	/* A forked child shares the file: it is of the same program. */
	pid = spawn(hold_dev_until_killed, NULL);
	ASSERT_LT(0, pid);
	close(dev);
	ASSERT_LE(0, (fd = shm_open_raw(self->dev, self->name, 0, 0, 0)));
	close(fd);
	kill(pid, SIGKILL);
	ASSERT_EQ(128 + SIGKILL, wait_child(pid, 10000));
	ASSERT_EQ(self->objects, objects_settled(self->objects));
	ASSERT_EQ(-ENOENT, shm_open_raw(self->dev, self->name, 0, 0, 0));
}

TEST_F(shm, a_persistent_name_outlives_its_dev_file_until_unlinked)
{
	struct mpq_shm_info i;
	int dev = dev_open(), fd;

	ASSERT_LE(0, dev);
	fd = shm_open_raw(dev, self->name, 100,
			  MPQ_SHM_CREAT | MPQ_SHM_EXCL | MPQ_SHM_PERSIST, 0600);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, shm_info(fd, &i));
	ASSERT_EQ(MPQ_SHM_PERSIST, i.flags);
	close(fd);
	close(dev);
	sleep_ms(20);
	ASSERT_EQ(self->objects + 1, objects());
	fd = shm_open_raw(self->dev, self->name, 0, 0, 0);
	ASSERT_LE(0, fd);
	close(fd);
	ASSERT_EQ(0, shm_unlink_raw(self->dev, self->name));
	ASSERT_EQ(self->objects, objects_settled(self->objects));
	ASSERT_EQ(-ENOENT, shm_unlink_raw(self->dev, self->name));
}

TEST_F(shm, unlink_removes_the_name_and_the_block_lives_while_used)
{
	int fd = shm_open_raw(self->dev, self->name, 100,
			      MPQ_SHM_CREAT | MPQ_SHM_EXCL, 0600), fd2;
	char *p;

	ASSERT_LE(0, fd);
	p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ASSERT_NE(MAP_FAILED, p);
	close(fd);
	ASSERT_EQ(0, shm_unlink_raw(self->dev, self->name));
	ASSERT_EQ(-ENOENT, shm_open_raw(self->dev, self->name, 0, 0, 0));
	/* A new block may take the name; the old one is still mapped. */
	fd2 = shm_open_raw(self->dev, self->name, 100,
			   MPQ_SHM_CREAT | MPQ_SHM_EXCL, 0600);
	ASSERT_LE(0, fd2);
	strcpy(p, "still here");
	ASSERT_STREQ("still here", p);
	ASSERT_EQ(self->objects + 2, objects());
	munmap(p, 4096);
	/* The old block went with its last mapping, the new one is named. */
	close(fd2);
	ASSERT_EQ(self->objects + 1, objects_settled(self->objects + 1));
	ASSERT_EQ(0, shm_unlink_raw(self->dev, self->name));
	ASSERT_EQ(self->objects, objects_settled(self->objects));
}

static int create_and_die(void *arg)
{
	const char *name = arg;
	int dev = dev_open();
	char *p;
	int fd;

	fd = shm_open_raw(dev, name, 1 << 20, MPQ_SHM_CREAT | MPQ_SHM_EXCL,
			  0600);
	if (fd < 0)
		return 1;
	p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return 2;
	memset(p, 1, 1 << 20);
	raise(SIGKILL);
	return 3;
}

TEST_F(shm, a_crashed_creator_leaks_nothing)
{
	pid_t pid = spawn(create_and_die, self->name);

	ASSERT_EQ(128 + SIGKILL, wait_child(pid, 10000));
	ASSERT_EQ(self->objects, objects_settled(self->objects));
	ASSERT_EQ(-ENOENT, shm_open_raw(self->dev, self->name, 0, 0, 0));
}

static const char *other_name;

static int other_opens(void *arg)
{
	int dev = dev_open();

	return -shm_open_raw(dev, other_name, 0, 0, 0) == EACCES ? 10 :
	       shm_open_raw(dev, other_name, 0, 0, 0) >= 0 ? 0 : 20;
}

static int other_unlinks(void *arg)
{
	return -shm_unlink_raw(dev_open(), other_name);
}

static int other_creates(void *arg)
{
	int fd = shm_open_raw(dev_open(), other_name, 10,
			      MPQ_SHM_CREAT | MPQ_SHM_EXCL | MPQ_SHM_PERSIST,
			      0660);
	struct mpq_shm_info i;

	if (fd < 0)
		return 1;
	if (shm_info(fd, &i) || i.uid != OTHER_UID || i.gid != OTHER_GID ||
	    i.mode != 0660)
		return 2;
	return 0;
}

TEST_F(shm, another_user_is_refused_by_the_mode)
{
	int fd;

	other_name = self->name;
	umask(0);
	fd = shm_open_raw(self->dev, self->name, 100,
			  MPQ_SHM_CREAT | MPQ_SHM_EXCL, 0600);
	ASSERT_LE(0, fd);
	ASSERT_EQ(10, as_other_user(other_opens, NULL));
	ASSERT_EQ(EPERM, as_other_user(other_unlinks, NULL));
	close(fd);
	ASSERT_EQ(0, shm_unlink_raw(self->dev, self->name));
	ASSERT_EQ(self->objects, objects_settled(self->objects));

	/* Read and write for others: then it opens. */
	fd = shm_open_raw(self->dev, self->name, 100,
			  MPQ_SHM_CREAT | MPQ_SHM_EXCL, 0606);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, as_other_user(other_opens, NULL));
	/* Read only is not enough: blocks are mapped for writing. */
	close(fd);
	ASSERT_EQ(0, shm_unlink_raw(self->dev, self->name));
	objects_settled(self->objects);
	fd = shm_open_raw(self->dev, self->name, 100,
			  MPQ_SHM_CREAT | MPQ_SHM_EXCL, 0604);
	ASSERT_LE(0, fd);
	ASSERT_EQ(10, as_other_user(other_opens, NULL));
	close(fd);
}

/* Opens the name with CREAT|PERSIST: it exists, so it is only opened. */
static int other_tries_to_keep(void *arg)
{
	int dev = dev_open(), fd;
	struct mpq_shm_info i;

	fd = shm_open_raw(dev, other_name, 10,
			  MPQ_SHM_CREAT | MPQ_SHM_PERSIST, 0600);
	if (fd < 0)
		return 1;
	if (shm_info(fd, &i) || i.flags || i.uid != 0)
		return 2;
	return 0;	/* its dev and fd close at exit */
}

TEST_F(shm, another_user_cannot_keep_a_name_past_its_program)
{
	int dev = dev_open(), fd;

	ASSERT_LE(0, dev);
	other_name = self->name;
	umask(0);
	fd = shm_open_raw(dev, self->name, 100, MPQ_SHM_CREAT | MPQ_SHM_EXCL,
			  0606);
	ASSERT_LE(0, fd);
	close(fd);
	ASSERT_EQ(0, as_other_user(other_tries_to_keep, NULL));
	/* Still ours, anchored to our file only: it goes with it. */
	close(dev);
	ASSERT_EQ(self->objects, objects_settled(self->objects));
	ASSERT_EQ(-ENOENT, shm_open_raw(self->dev, self->name, 0, 0, 0));
}

TEST_F(shm, the_group_bits_apply_to_the_group)
{
	other_name = self->name;
	umask(0);
	/* OTHER_UID creates it 0660, persistent, owned by its group. */
	ASSERT_EQ(0, as_other_user(other_creates, NULL));
	/* Another user of that group opens it; one of no group does not. */
	ASSERT_EQ(0, run_as(OTHER_UID + 1, OTHER_GID, other_opens, NULL,
			    RUN_AS_MS));
	ASSERT_EQ(10, run_as(OTHER_UID + 2, OTHER_GID + 2, other_opens, NULL,
			     RUN_AS_MS));
	/* Nor may a group member unlink it: only the owner or root may. */
	ASSERT_EQ(EPERM, run_as(OTHER_UID + 1, OTHER_GID, other_unlinks, NULL,
				RUN_AS_MS));
	ASSERT_EQ(0, shm_unlink_raw(self->dev, self->name));
	ASSERT_EQ(self->objects, objects_settled(self->objects));
}

TEST_F(shm, the_umask_masks_the_mode)
{
	struct mpq_shm_info i;
	mode_t old = umask(077);
	int fd;

	fd = shm_open_raw(self->dev, self->name, 100,
			  MPQ_SHM_CREAT | MPQ_SHM_EXCL, 0666);
	umask(old);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, shm_info(fd, &i));
	ASSERT_EQ(0600, i.mode);
	close(fd);
}

static int other_namespace_sees_nothing(void *arg)
{
	const char *name = arg;
	int dev, fd;

	if (unshare(CLONE_NEWIPC))
		return 1;
	dev = dev_open();
	if (shm_open_raw(dev, name, 0, 0, 0) != -ENOENT)
		return 2;
	/* The same name is free here, and its own block. */
	fd = shm_open_raw(dev, name, 100, MPQ_SHM_CREAT | MPQ_SHM_EXCL, 0600);
	if (fd < 0)
		return 3;
	close(fd);
	return 0;
}

TEST_F(shm, names_belong_to_the_ipc_namespace)
{
	int fd = shm_open_raw(self->dev, self->name, 100,
			      MPQ_SHM_CREAT | MPQ_SHM_EXCL, 0600);
	pid_t pid;

	ASSERT_LE(0, fd);
	pid = spawn(other_namespace_sees_nothing, self->name);
	ASSERT_EQ(0, wait_child(pid, 10000));
	/* Ours is untouched. */
	close(fd);
	ASSERT_LE(0, (fd = shm_open_raw(self->dev, self->name, 0, 0, 0)));
	close(fd);
	ASSERT_EQ(0, shm_unlink_raw(self->dev, self->name));
	ASSERT_EQ(self->objects, objects_settled(self->objects));
}

TEST_F(shm, info_honours_the_callers_struct_size)
{
	int fd = shm_open_raw(self->dev, NULL, 100, 0, 0);
	struct {
		struct mpq_shm_info i;
		uint64_t extra[4];
	} big;

	ASSERT_LE(0, fd);
	memset(&big, 0xff, sizeof(big));
	big.i.size = sizeof(big);
	ASSERT_EQ(0, ioctl(fd, MPQ_IOC_SHM_INFO, &big));
	ASSERT_EQ(100, big.i.bytes);
	ASSERT_EQ(0, big.extra[0]);
	ASSERT_EQ(0, big.extra[3]);
	big.i.size = 16;
	ASSERT_EQ(-1, ioctl(fd, MPQ_IOC_SHM_INFO, &big));
	ASSERT_EQ(EINVAL, errno);
	close(fd);
}

TEST_F(shm, a_library_sharedmemory_lives_until_unlinked)
{
	struct mpq_shm_attr attr = { .backend = MPQ_BACKEND_KMOD };
	struct mpq_shm *a, *b;

	ASSERT_EQ(0, mpq_shm_new(&a, self->name, 1000, &attr));
	ASSERT_EQ(0, mpq_shm_open(&b, self->name, &attr));
	mpq_shm_free(a);
	mpq_shm_free(b);
	ASSERT_EQ(self->objects + 1, objects_settled(self->objects + 1));
	ASSERT_EQ(0, mpq_shm_open(&a, self->name, &attr));
	ASSERT_EQ(0, mpq_shm_unlink(a));
	mpq_shm_free(a);
	ASSERT_EQ(self->objects, objects_settled(self->objects));
	ASSERT_EQ(-ENOENT, mpq_shm_open(&a, self->name, &attr));
	attr.flags = MPQ_SHM_ATTR_PERSIST;
	ASSERT_EQ(0, mpq_shm_new(&a, self->name, 1000, &attr));
	mpq_shm_free(a);
	attr.flags = 0;
	ASSERT_EQ(0, mpq_shm_open(&a, self->name, &attr));
	ASSERT_EQ(0, mpq_shm_unlink(a));
	mpq_shm_free(a);
	ASSERT_EQ(self->objects, objects_settled(self->objects));
}

TEST_HARNESS_MAIN
