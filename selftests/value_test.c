// SPDX-License-Identifier: GPL-2.0
/*
 * The promises of mpq_value (Value, Array, RawValue, RawArray) and
 * mpq_shm (SharedMemory), one test each, on the backend the environment
 * selects. What only the module does (names tied to a /dev/mpq file,
 * permissions, IPC namespaces) is in kmod_shm_test.c; the lifetime of
 * names, on both backends, in shm_lifetime_test.c.
 */
#include <stdio.h>
#include <sys/resource.h>

#include "kselftest_harness.h"
#include "helpers.h"

TEST(value_is_shared_with_forked_children_and_zeroed)
{
	struct mpq_value *v;
	int64_t x = 1;
	pid_t pid;

	ASSERT_EQ(0, mpq_value_new(&v, sizeof(int64_t), NULL));
	ASSERT_EQ(sizeof(int64_t), mpq_value_size(v));
	ASSERT_EQ(0, mpq_value_get(v, &x));
	ASSERT_EQ(0, x);
	pid = fork();
	if (pid == 0) {
		x = 42;
		_exit(mpq_value_set(v, &x) != 0);
	}
	ASSERT_EQ(0, wait_child(pid, 10000));
	ASSERT_EQ(0, mpq_value_get(v, &x));
	ASSERT_EQ(42, x);
	ASSERT_EQ(42, *(int64_t *)mpq_value_ptr(v));
	mpq_value_free(v);
}

TEST(value_has_an_rlock_and_get_lock_returns_it)
{
	struct mpq_value *v;
	struct mpq_lock *l;

	ASSERT_EQ(0, mpq_value_new(&v, 4, NULL));
	l = mpq_value_get_lock(v);
	ASSERT_NE(NULL, l);
	ASSERT_EQ(0, mpq_lock_acquire(l, 0));
	ASSERT_EQ(0, mpq_lock_acquire(l, 0));	/* recursive */
	ASSERT_EQ(0, mpq_lock_release(l));
	ASSERT_EQ(0, mpq_lock_release(l));
	mpq_lock_free(l);			/* the value's: a no-op */
	ASSERT_EQ(0, mpq_lock_acquire(l, 0));
	ASSERT_EQ(0, mpq_lock_release(l));
	mpq_value_free(v);
}

TEST(increments_under_get_lock_are_exact_across_processes)
{
	enum { N = 4, ROUNDS = 20000 };
	struct mpq_value *v;
	struct mpq_lock *l;
	pid_t pids[N];
	int i, j;

	ASSERT_EQ(0, mpq_value_new(&v, sizeof(long), NULL));
	l = mpq_value_get_lock(v);
	for (i = 0; i < N; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			long *p = mpq_value_ptr(v);

			for (j = 0; j < ROUNDS; j++) {
				if (mpq_lock_acquire(l, MPQ_FOREVER))
					_exit(1);
				*p = *p + 1;
				mpq_lock_release(l);
			}
			_exit(0);
		}
	}
	for (i = 0; i < N; i++)
		ASSERT_EQ(0, wait_child(pids[i], 60000));
	ASSERT_EQ((long)N * ROUNDS, *(long *)mpq_value_ptr(v));
	mpq_value_free(v);
}

TEST(raw_value_has_no_lock)
{
	struct mpq_value_attr attr = { .flags = MPQ_VALUE_RAW };
	struct mpq_value *v;
	double d = 2.5, e = 0;

	ASSERT_EQ(0, mpq_value_new(&v, sizeof(double), &attr));
	ASSERT_EQ(NULL, mpq_value_get_lock(v));
	ASSERT_EQ(0, mpq_value_set(v, &d));
	ASSERT_EQ(0, mpq_value_get(v, &e));
	ASSERT_EQ(2.5, e);
	mpq_value_free(v);
}

TEST(value_with_a_lock_of_the_callers)
{
	struct mpq_value_attr attr = { 0 };
	struct mpq_value *v;
	struct mpq_lock *l;
	int x = 7;

	ASSERT_EQ(0, mpq_lock_new(&l, NULL));
	attr.lock = l;
	ASSERT_EQ(0, mpq_value_new(&v, sizeof(int), &attr));
	ASSERT_EQ(l, mpq_value_get_lock(v));
	ASSERT_EQ(0, mpq_value_set(v, &x));
	ASSERT_EQ(0, mpq_lock_locked(l));
	attr.flags = MPQ_VALUE_RAW;
	ASSERT_EQ(-EINVAL, mpq_value_new(&v, sizeof(int), &attr));
	mpq_value_free(v);
	mpq_lock_free(l);
}

TEST(array_elements_and_bounds)
{
	struct mpq_value *a;
	int i, x;

	ASSERT_EQ(0, mpq_array_new(&a, sizeof(int), 100, NULL));
	ASSERT_EQ(100, mpq_array_len(a));
	ASSERT_EQ(100 * sizeof(int), mpq_value_size(a));
	for (i = 0; i < 100; i++) {
		x = i * i;
		ASSERT_EQ(0, mpq_array_set(a, i, &x));
	}
	for (i = 0; i < 100; i++) {
		ASSERT_EQ(0, mpq_array_get(a, i, &x));
		ASSERT_EQ(i * i, x);
	}
	ASSERT_EQ(-ERANGE, mpq_array_get(a, 100, &x));
	ASSERT_EQ(-ERANGE, mpq_array_set(a, 1000, &x));
	mpq_value_free(a);
}

TEST(a_holder_killed_mid_update_is_reported_by_the_next_set)
{
	struct mpq_value *v;
	int *flag = shared_alloc(sizeof(int)), x = 1;
	pid_t pid;

	ASSERT_EQ(0, mpq_value_new(&v, sizeof(int), NULL));
	*flag = 0;
	pid = fork();
	if (pid == 0) {
		mpq_lock_acquire(mpq_value_get_lock(v), MPQ_FOREVER);
		set_flag(flag, 1);
		pause();
	}
	ASSERT_EQ(1, wait_for_flag(flag, 10000));
	kill(pid, SIGKILL);
	wait_child(pid, 10000);
	ASSERT_EQ(-EOWNERDEAD, mpq_value_set(v, &x));
	ASSERT_EQ(0, mpq_lock_acquire(mpq_value_get_lock(v), 0) == -EOWNERDEAD ?
		     mpq_lock_consistent(mpq_value_get_lock(v)) : -1);
	ASSERT_EQ(0, mpq_lock_release(mpq_value_get_lock(v)));
	ASSERT_EQ(0, mpq_value_get(v, &x));
	mpq_value_free(v);
}

TEST(value_imported_by_handle_sees_the_same_data)
{
	char handle[MPQ_HANDLE_MAX];
	struct mpq_value *a, *b;
	int x = 99, y = 0;

	ASSERT_EQ(0, mpq_array_new(&a, sizeof(int), 8, NULL));
	ASSERT_LT(0, mpq_value_export(a, handle, sizeof(handle)));
	ASSERT_EQ(0, mpq_value_import(&b, handle, NULL));
	ASSERT_EQ(8, mpq_array_len(b));
	ASSERT_EQ(0, mpq_array_set(a, 3, &x));
	ASSERT_EQ(0, mpq_array_get(b, 3, &y));
	ASSERT_EQ(99, y);
	ASSERT_NE(NULL, mpq_value_get_lock(b));
	mpq_value_free(b);
	mpq_value_free(a);
}

TEST(a_value_comes_back_with_the_lock_it_was_made_with)
{
	struct mpq_value_attr attr = { 0 };
	char handle[MPQ_HANDLE_MAX];
	struct mpq_value *v, *w;
	struct mpq_lock *l;

	ASSERT_EQ(0, mpq_lock_new(&l, NULL));
	attr.lock = l;
	ASSERT_EQ(0, mpq_value_new(&v, 8, &attr));
	ASSERT_LT(0, mpq_value_export(v, handle, sizeof(handle)));
	ASSERT_EQ(-EINVAL, mpq_value_import(&w, handle, NULL));
	ASSERT_EQ(0, mpq_value_import(&w, handle, l));
	ASSERT_EQ(l, mpq_value_get_lock(w));
	mpq_value_free(w);
	mpq_value_free(v);
	/* And one with a lock of its own refuses a lock of the caller's. */
	ASSERT_EQ(0, mpq_value_new(&v, 8, NULL));
	ASSERT_LT(0, mpq_value_export(v, handle, sizeof(handle)));
	ASSERT_EQ(-EINVAL, mpq_value_import(&w, handle, l));
	ASSERT_EQ(0, mpq_value_import(&w, handle, NULL));
	mpq_value_free(w);
	mpq_value_free(v);
	mpq_lock_free(l);
}

TEST(value_bad_arguments_are_errors_not_a_crash)
{
	struct mpq_value_attr attr = { .flags = 8 };
	struct mpq_value *v;

	ASSERT_EQ(-EINVAL, mpq_value_new(&v, 0, NULL));
	ASSERT_EQ(-EINVAL, mpq_value_new(&v, 4, &attr));
	ASSERT_EQ(-EINVAL, mpq_value_new(NULL, 4, NULL));
	ASSERT_EQ(-E2BIG, mpq_array_new(&v, 1 << 20, 1 << 20, NULL));
	ASSERT_EQ(-EINVAL, mpq_value_get(NULL, &v));
	ASSERT_EQ(NULL, mpq_value_ptr(NULL));
	mpq_value_free(NULL);
}

/* --- SharedMemory ------------------------------------------------------ */

static void unique_name(char *buf, size_t len, const char *what)
{
	snprintf(buf, len, "mpqtest_%s_%d", what, getpid());
}

TEST(shm_create_attach_by_name_close_unlink)
{
	struct mpq_shm *a, *b;
	char name[64];

	unique_name(name, sizeof(name), "basic");
	ASSERT_EQ(0, mpq_shm_new(&a, name, 10000, NULL));
	ASSERT_STREQ(name, mpq_shm_name(a));
	ASSERT_EQ(10000, mpq_shm_size(a));
	memcpy(mpq_shm_buf(a), "hello", 6);
	ASSERT_EQ(0, mpq_shm_open(&b, name, NULL));
	ASSERT_EQ(10000, mpq_shm_size(b));
	ASSERT_STREQ("hello", mpq_shm_buf(b));
	ASSERT_EQ(0, mpq_shm_close(b));
	ASSERT_EQ(NULL, mpq_shm_buf(b));
	ASSERT_EQ(-EBADF, mpq_shm_close(b));
	ASSERT_EQ(0, mpq_shm_unlink(a));
	ASSERT_EQ(-ENOENT, mpq_shm_open(&b, name, NULL));
	/* Unlinked, the block lives on while it is mapped. */
	ASSERT_STREQ("hello", mpq_shm_buf(a));
	mpq_shm_free(a);
	mpq_shm_free(b);
}

TEST(shm_without_a_name_gets_a_fresh_one)
{
	struct mpq_shm *a, *b;

	ASSERT_EQ(0, mpq_shm_new(&a, NULL, 4096, NULL));
	ASSERT_EQ(0, strncmp(mpq_shm_name(a), "mpq_", 4));
	ASSERT_EQ(0, mpq_shm_open(&b, mpq_shm_name(a), NULL));
	((char *)mpq_shm_buf(a))[4095] = 'z';
	ASSERT_EQ('z', ((char *)mpq_shm_buf(b))[4095]);
	ASSERT_EQ(0, mpq_shm_unlink(b));
	mpq_shm_free(b);
	mpq_shm_free(a);
}

TEST(shm_an_unrelated_process_attaches_by_name)
{
	struct mpq_shm *a;
	char name[64];
	pid_t pid;

	unique_name(name, sizeof(name), "unrelated");
	ASSERT_EQ(0, mpq_shm_new(&a, name, 64, NULL));
	pid = fork();
	if (pid == 0) {
		/* Nothing inherited is used: only the name. */
		struct mpq_shm *b;

		if (mpq_shm_open(&b, name, NULL))
			_exit(1);
		strcpy(mpq_shm_buf(b), "from the child");
		mpq_shm_free(b);
		_exit(0);
	}
	ASSERT_EQ(0, wait_child(pid, 10000));
	ASSERT_STREQ("from the child", mpq_shm_buf(a));
	ASSERT_EQ(0, mpq_shm_unlink(a));
	mpq_shm_free(a);
}

TEST(shm_names_are_checked)
{
	char name[300];
	struct mpq_shm *s;

	ASSERT_EQ(-EINVAL, mpq_shm_new(&s, "", 10, NULL));
	ASSERT_EQ(-EINVAL, mpq_shm_new(&s, "a/b", 10, NULL));
	memset(name, 'x', 299);
	name[299] = 0;
	ASSERT_EQ(-ENAMETOOLONG, mpq_shm_new(&s, name, 10, NULL));
	ASSERT_EQ(-EINVAL, mpq_shm_new(&s, "ok", 0, NULL));
	ASSERT_EQ(-ENOENT, mpq_shm_open(&s, "mpqtest_no_such_block", NULL));
	ASSERT_EQ(-ENOENT, mpq_shm_unlink_name("mpqtest_no_such_block", 0));
	ASSERT_EQ(-EINVAL, mpq_shm_open(NULL, "x", NULL));
	mpq_shm_free(NULL);
}

TEST(shm_create_of_an_existing_name_is_eexist)
{
	struct mpq_shm *a, *b;
	char name[64];

	unique_name(name, sizeof(name), "exist");
	ASSERT_EQ(0, mpq_shm_new(&a, name, 100, NULL));
	ASSERT_EQ(-EEXIST, mpq_shm_new(&b, name, 100, NULL));
	ASSERT_EQ(0, mpq_shm_unlink(a));
	mpq_shm_free(a);
}

/*
 * Create name in a child whose address space has no room for the block,
 * so that the create fails after the name is made (at the mmap). Returns
 * what mpq_shm_new returned, or 1 if the child did not report.
 */
static int create_without_address_space(const char *name, uint32_t flags)
{
	struct mpq_shm_attr attr = { .flags = flags };
	int *res = mmap(NULL, sizeof(int), PROT_READ | PROT_WRITE,
			MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	int ret = 1;
	pid_t pid;

	if (res == MAP_FAILED)
		return 1;
	*res = 1;
	pid = fork();
	if (pid == 0) {
		unsigned long vm_pages = 0;
		struct rlimit rl;
		struct mpq_shm *s;
		FILE *f = fopen("/proc/self/statm", "r");

		if (!f || fscanf(f, "%lu", &vm_pages) != 1)
			_exit(1);
		fclose(f);
		/* What is mapped now and 16 MiB: not the 256 MiB block. */
		rl.rlim_cur = rl.rlim_max = vm_pages * sysconf(_SC_PAGESIZE) +
					    (16 << 20);
		if (setrlimit(RLIMIT_AS, &rl))
			_exit(1);
		*res = mpq_shm_new(&s, name, 256 << 20, &attr);
		_exit(0);
	}
	/* Generous: a debug kernel under TCG may fill the block first. */
	if (wait_child(pid, 60000) == 0)
		ret = *res;
	munmap(res, sizeof(int));
	return ret;
}

/*
 * A create that fails part-way leaves nothing behind: not the block, not
 * its name, so that the next create of the name succeeds (the memfd
 * backend left /dev/shm/<name>, and the next create got -EEXIST).
 */
TEST(shm_a_create_that_fails_leaves_no_name_behind)
{
	uint32_t flags[2] = { 0, MPQ_SHM_ATTR_PERSIST };
	struct mpq_shm *s;
	char name[64];
	int i;

	for (i = 0; i < 2; i++) {
		unique_name(name, sizeof(name), i ? "failp" : "fail");
		ASSERT_EQ(-ENOMEM, create_without_address_space(name, flags[i]));
		ASSERT_EQ(-ENOENT, mpq_shm_open(&s, name, NULL));
		ASSERT_EQ(0, mpq_shm_new(&s, name, 4096, NULL));
		ASSERT_EQ(0, mpq_shm_unlink(s));
		mpq_shm_free(s);
	}
}

TEST_HARNESS_MAIN
