// SPDX-License-Identifier: GPL-2.0
/* mpq_strerror(): every value libmpq returns has a readable meaning. */
#include <limits.h>
#include <stdio.h>

#include "kselftest_harness.h"
#include "helpers.h"

TEST(strerror_names_the_python_exception_for_mpq_errors)
{
	ASSERT_NE(NULL, strstr(mpq_strerror(-EAGAIN), "queue.Empty"));
	ASSERT_NE(NULL, strstr(mpq_strerror(-EPIPE), "EOFError"));
	ASSERT_NE(NULL, strstr(mpq_strerror(-ECANCELED), "BrokenBarrierError"));
	ASSERT_NE(NULL, strstr(mpq_strerror(-EOWNERDEAD), "holder died"));
}

TEST(strerror_says_edquot_is_the_users_mpq_budget)
{
	ASSERT_NE(NULL, strstr(mpq_strerror(-EDQUOT), "mpq budget"));
	ASSERT_NE(NULL, strstr(mpq_strerror(-EDQUOT), "/proc/mpq_users"));
}

TEST(strerror_falls_back_to_the_c_library_for_other_errnos)
{
	ASSERT_STREQ(strerror(ENOENT), mpq_strerror(-ENOENT));
	ASSERT_STREQ("success", mpq_strerror(0));
	ASSERT_STREQ("not an error code", mpq_strerror(5));
	ASSERT_STREQ("not an error code", mpq_strerror(-2147483647 - 1));
	ASSERT_STREQ("unknown error", mpq_strerror(-4000));
}

TEST_HARNESS_MAIN
