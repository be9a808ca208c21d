// SPDX-License-Identifier: GPL-2.0
/*
 * A Connection's send or receive killed at every instruction of its own
 * (kill_points.h): after each death, the other end gets the message
 * whole or not at all (never a part, never another's bytes), then
 * -EPIPE, and never hangs. The send of an answer (right after a
 * receive: the lean one-frame path), a one-way send (the general path),
 * a message of several frames, and a receive right after a send (the
 * looks, then the lean receive). On the backend the environment selects
 * (memfd natively, kmod in the VM); x86-64.
 */
#include <stdio.h>

#include "kselftest_harness.h"
#include "helpers.h"

#ifndef __x86_64__
TEST(kill_points_need_x86_64)
{
	SKIP(return, "kill points use x86-64 debug registers");
}

TEST_HARNESS_MAIN
#else

#define SEC	NSEC_PER_SEC

/* Minutes under TCG: the trace single-steps every instruction. */
FIXTURE(slow) {};
FIXTURE_SETUP(slow) {}
FIXTURE_TEARDOWN(slow) {}

enum kind {
	ANSWER,		/* the child received last: the lean send */
	ONE_WAY,	/* the child sent last: the general send */
	FRAMES,		/* a message of several frames */
	RECEIVE,	/* the child receives right after its send */
};

struct ctx {
	struct mpq_conn *ends[2];	/* [0] the test's, [1] the child's */
	int finished;		/* the operation returned before the kill */
	int arg;		/* enum kind */
};

/* For kill_points.h: the pipe's memory, and freeing it. */
static void *kp_map(struct ctx *c, size_t *size)
{
	struct mpq_pipe_shm *shm = map_pipe(c->ends[0]);

	if (!shm)
		return NULL;
	*size = shm->map_size;
	return shm;
}

static void kp_free(struct ctx *c)
{
	mpq_conn_free(c->ends[0]);
	mpq_conn_free(c->ends[1]);
}

#include "kill_points.h"

/* 16 KiB: frames of 4 KiB at most, so 6000 bytes go in two. */
#define RING		16384
#define MSG_LEN(c)	((c)->arg == FRAMES ? 6000 : 100)

static unsigned char msg[6000];

static int duplex_setup(struct ctx *c, int kind)
{
	struct mpq_pipe_attr attr = { .bufsize = RING };
	size_t i;

	for (i = 0; i < sizeof(msg); i++)
		msg[i] = (unsigned char)(i * 13 + 5);
	c->arg = kind;
	return mpq_pipe(&c->ends[0], &c->ends[1], 1, &attr);
}

static int setup_answer(struct ctx *c)
{
	/* What the child receives first: its send is then an answer. */
	return duplex_setup(c, ANSWER) ||
	       mpq_conn_send_bytes(c->ends[0], "q", 1, SEC);
}

static int setup_one_way(struct ctx *c)
{
	return duplex_setup(c, ONE_WAY);
}

static int setup_frames(struct ctx *c)
{
	return duplex_setup(c, FRAMES);
}

static int setup_receive(struct ctx *c)
{
	/* What the child receives after its own send. */
	return duplex_setup(c, RECEIVE) ||
	       mpq_conn_send_bytes(c->ends[0], msg, 100, SEC);
}

/* The child, before the trace: its end only, and its last call. */
static void prep(struct ctx *c)
{
	char buf[8];
	size_t len = sizeof(buf);

	mpq_conn_close(c->ends[0]);
	if (c->arg == ANSWER)
		mpq_conn_recv_bytes_into(c->ends[1], buf, &len, SEC);
	else
		mpq_conn_send_bytes(c->ends[1], "s", 1, SEC);
}

static void op_send(struct ctx *c)
{
	mpq_conn_send_bytes(c->ends[1], msg, MSG_LEN(c), SEC);
}

static void op_receive(struct ctx *c)
{
	unsigned char buf[128];
	size_t len = sizeof(buf);

	mpq_conn_recv_bytes_into(c->ends[1], buf, &len, SEC);
}

/*
 * After a send's death: prep's "s" (one-way, frames), then the message
 * whole (certainly if the send returned) or nothing, then -EPIPE.
 */
static const char *send_check(struct ctx *c)
{
	static unsigned char got[8192];
	size_t len;
	int ret, n = 0;

	mpq_conn_close(c->ends[1]);
	if (c->arg != ANSWER) {
		len = sizeof(got);
		if (mpq_conn_recv_bytes_into(c->ends[0], got, &len, SEC) ||
		    len != 1 || got[0] != 's')
			return "prep's message did not arrive";
	}
	for (;;) {
		len = sizeof(got);
		ret = mpq_conn_recv_bytes_into(c->ends[0], got, &len, 10 * SEC);
		if (ret)
			break;
		if (len != MSG_LEN(c) || memcmp(got, msg, len))
			return "a message arrived cut or changed";
		n++;
	}
	if (ret == -ETIMEDOUT)
		return "the receive hung: no -EPIPE";
	if (ret != -EPIPE)
		return "the receive failed, not with -EPIPE";
	if (n > 1)
		return "the message arrived twice";
	if (c->finished && !n)
		return "the send returned, the message never arrived";
	return NULL;
}

/*
 * After a receive's death: the test's sends end in -EPIPE (once the
 * ring is full at the latest), never hang; prep's "s" waits, whole.
 */
static const char *receive_check(struct ctx *c)
{
	unsigned char got[8];
	size_t len = sizeof(got);
	int ret = 0, k;

	mpq_conn_close(c->ends[1]);
	if (mpq_conn_recv_bytes_into(c->ends[0], got, &len, SEC) || len != 1 ||
	    got[0] != 's')
		return "prep's message did not arrive";
	for (k = 0; !ret && k < 2 * RING / 100; k++)
		ret = mpq_conn_send_bytes(c->ends[0], msg, 100, 10 * SEC);
	if (ret == -ETIMEDOUT)
		return "a send hung: no -EPIPE";
	if (ret != -EPIPE)
		return "the sends did not end in -EPIPE";
	return NULL;
}

TEST_F_TIMEOUT(slow, a_send_killed_anywhere_delivers_the_message_whole_or_not_at_all, 600)
{
	EXPECT_EQ(0, kill_everywhere(_metadata, "answer", setup_answer, prep,
				     op_send, send_check));
	EXPECT_EQ(0, kill_everywhere(_metadata, "one-way send", setup_one_way,
				     prep, op_send, send_check));
	EXPECT_EQ(0, kill_everywhere(_metadata, "two frames", setup_frames,
				     prep, op_send, send_check));
}

TEST_F_TIMEOUT(slow, a_receive_killed_anywhere_never_wedges_the_sender, 600)
{
	EXPECT_EQ(0, kill_everywhere(_metadata, "receive after send",
				     setup_receive, prep, op_receive,
				     receive_check));
}

TEST_HARNESS_MAIN
#endif
