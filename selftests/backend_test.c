// SPDX-License-Identifier: GPL-2.0
/*
 * No silent backend: which backend objects get by default, and why, is
 * one call away (mpq_backend_default), and a program that insists on the
 * module (MPQ_BACKEND=kmod) where it is absent fails with an error that
 * names the module and /dev/mpq rather than quietly using memfd.
 *
 * The same binary runs natively (no module: /dev/mpq absent) and in the
 * VM (module loaded): each test checks the promise for the machine it is
 * on, by looking at /dev/mpq itself.
 */
#include <stdlib.h>

#include "kselftest_harness.h"
#include "helpers.h"

static int have_module(void)
{
	return access("/dev/mpq", F_OK) == 0;
}

TEST(the_default_is_the_module_where_dev_mpq_exists_else_memfd_and_says_why)
{
	const char *why = NULL;
	int b;

	ASSERT_EQ(0, unsetenv("MPQ_BACKEND"));
	b = mpq_backend_default(&why);
	ASSERT_NE(NULL, why);
	EXPECT_NE(NULL, strstr(why, "/dev/mpq")) TH_LOG("%s", why);
	if (have_module()) {
		EXPECT_EQ(MPQ_BACKEND_KMOD, b) TH_LOG("%s", why);
	} else {
		EXPECT_EQ(MPQ_BACKEND_MEMFD, b) TH_LOG("%s", why);
		EXPECT_NE(NULL, strstr(why, "module")) TH_LOG("%s", why);
	}
	/* why may be NULL. */
	EXPECT_EQ(b, mpq_backend_default(NULL));
}

TEST(the_environment_decides_first_and_is_named_as_the_reason)
{
	const char *why = NULL;

	ASSERT_EQ(0, setenv("MPQ_BACKEND", "memfd", 1));
	EXPECT_EQ(MPQ_BACKEND_MEMFD, mpq_backend_default(&why));
	EXPECT_NE(NULL, strstr(why, "MPQ_BACKEND=memfd")) TH_LOG("%s", why);
	ASSERT_EQ(0, setenv("MPQ_BACKEND", "kmdo", 1));
	EXPECT_EQ(-EINVAL, mpq_backend_default(&why));
	EXPECT_NE(NULL, strstr(why, "MPQ_BACKEND")) TH_LOG("%s", why);
}

TEST(insisting_on_the_module_where_it_is_absent_fails_and_names_it)
{
	struct mpq_queue *q;
	struct mpq_lock *l;
	const char *why = NULL;
	int b, ret;

	ASSERT_EQ(0, setenv("MPQ_BACKEND", "kmod", 1));
	b = mpq_backend_default(&why);
	ASSERT_NE(NULL, why);
	EXPECT_NE(NULL, strstr(why, "MPQ_BACKEND=kmod")) TH_LOG("%s", why);
	if (have_module()) {
		EXPECT_EQ(MPQ_BACKEND_KMOD, b);
		ASSERT_EQ(0, mpq_lock_new(&l, NULL));
		mpq_lock_free(l);
		return;
	}
	/* Never memfd in its place. */
	EXPECT_EQ(-ENODEV, b);
	EXPECT_NE(NULL, strstr(why, "/dev/mpq")) TH_LOG("%s", why);
	EXPECT_NE(NULL, strstr(why, "module")) TH_LOG("%s", why);
	EXPECT_EQ(-ENODEV, mpq_lock_new(&l, NULL));
	EXPECT_EQ(-ENODEV, mpq_queue_new(&q, NULL));
	ret = -ENODEV;
	/* The error, printed as programs print it, says what to do. */
	EXPECT_NE(NULL, strstr(mpq_strerror(ret), "/dev/mpq"))
		TH_LOG("%s", mpq_strerror(ret));
	EXPECT_NE(NULL, strstr(mpq_strerror(ret), "mpq kernel module"))
		TH_LOG("%s", mpq_strerror(ret));
}

TEST(objects_made_by_default_use_the_backend_the_call_names)
{
	struct mpq_queue *q;
	int b;

	ASSERT_EQ(0, unsetenv("MPQ_BACKEND"));
	b = mpq_backend_default(NULL);
	ASSERT_LT(0, b);
	ASSERT_EQ(0, mpq_queue_new(&q, NULL));
	EXPECT_EQ(b, mpq_queue_backend(q));
	mpq_queue_free(q);
}

TEST_HARNESS_MAIN
