// SPDX-License-Identifier: MIT
/*
 * Eclipse iceoryx 2.0 through its C binding (libiceoryx-binding-c-dev):
 * zero-copy publish/subscribe in shared memory managed by the RouDi daemon
 * (package iceoryx), which this program starts before the run and stops
 * after it. Used as the binding's examples (icedelivery_in_c) and
 * iceoryx's own iceperf show: iox_runtime_init() once per process, a
 * publisher loans a chunk in shared memory, writes the message into it and
 * publishes it; the subscriber takes the chunk, reads it in place and
 * releases it. The receiver polls iox_sub_take_chunk() in a loop, as
 * iceperf's C benchmark does (a WaitSet would sleep, a slower path); a
 * stream runs with the options for lossless delivery, the subscriber's
 * QueueFullPolicy_BLOCK_PRODUCER and the publisher's
 * ConsumerTooSlowPolicy_WAIT_FOR_CONSUMER, a queue of 256 chunks (the
 * most the binding allows). One-to-many pub/sub has no work-sharing
 * consumers, so there is no mpmc row.
 *
 *   iceoryx     rtt 8 B (two topics), stream 8 B and 1 KiB: the whole
 *               message is written into the loaned chunk and copied out of
 *               the received one, what a copying queue does
 *   iceoryx-zc  rtt 1 MiB: only the sequence number is written and read
 *               in place, what mpq-queue-zc does with its 1 MiB rows
 *
 * RouDi runs with its built-in memory pools (up to 4 MiB chunks) and with
 * process monitoring off; its log goes to /tmp/mpq-peer-roudi.log. Only
 * one RouDi runs on a machine: if another is running, this one fails and
 * the benchmark says so.
 */
#include <fcntl.h>
#include <iceoryx_binding_c/enums.h>
#include <iceoryx_binding_c/publisher.h>
#include <iceoryx_binding_c/runtime.h>
#include <iceoryx_binding_c/subscriber.h>
#include <iceoryx_binding_c/types.h>

#include "peer.h"

#define ROUDI		"/usr/bin/iox-roudi"
#define ROUDI_LOG	"/tmp/mpq-peer-roudi.log"
#define ROUDI_SOCKET	"/tmp/roudi"	/* its IPC channel, once it is up */

static pid_t roudi;
static char instance[32];
static iox_pub_storage_t pub_storage;
static iox_sub_storage_t sub_storage;
static iox_pub_t pub;
static iox_sub_t sub;

static bool is_zc(const struct peer *p)
{
	return p->size == 1048576;
}

static const char *iox_unsupported(enum peer_bench bench, size_t size)
{
	if (bench == PEER_MPMC)
		return "iceoryx: publish/subscribe, no work-sharing consumers";
	if (bench == PEER_RTT)
		return size == 8 ? NULL : "iceoryx rtt: 8 B (iceoryx-zc: 1 MiB)";
	return size == 8 || size == 1024 ? NULL : "iceoryx stream: 8 B and 1 KiB";
}

static const char *iox_zc_unsupported(enum peer_bench bench, size_t size)
{
	return bench == PEER_RTT && size == 1048576 ? NULL :
	       "iceoryx-zc: rtt, 1 MiB";
}

static int roudi_start(void)
{
	uint64_t t0 = bench_now_ns();
	siginfo_t si;
	int fd;

	if (access(ROUDI, X_OK))
		return peer_fail(ROUDI, "not installed (package iceoryx)");
	roudi = fork();
	if (roudi < 0)
		return peer_fail("fork", strerror(errno));
	if (roudi == 0) {
		/* Stops with the benchmark, however that ends. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		fd = open(ROUDI_LOG, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		signal(SIGCHLD, SIG_DFL);
		execl(ROUDI, "iox-roudi", "-m", "off", "-l", "info", (char *)NULL);
		_exit(127);
	}
	/* Up when its socket is there; gone if it exited (another RouDi?). */
	while (access(ROUDI_SOCKET, F_OK)) {
		memset(&si, 0, sizeof(si));
		if (!waitid(P_PID, (id_t)roudi, &si, WEXITED | WNOHANG) && si.si_pid) {
			roudi = 0;
			return peer_fail("iox-roudi", "exited at start (already running? see "
					 ROUDI_LOG ")");
		}
		if (bench_now_ns() - t0 > 20000000000ull)
			return peer_fail("iox-roudi", "not up after 20 s (see " ROUDI_LOG ")");
		usleep(10000);
	}
	return 0;
}

static void roudi_stop(void)
{
	uint64_t t0 = bench_now_ns();

	if (roudi <= 0)
		return;
	kill(roudi, SIGTERM);
	while (waitpid(roudi, NULL, WNOHANG) == 0) {
		if (bench_now_ns() - t0 > 10000000000ull) {
			kill(roudi, SIGKILL);
			waitpid(roudi, NULL, 0);
			break;
		}
		usleep(10000);
	}
	roudi = 0;
}

static int iox_open(struct peer *p)
{
	snprintf(instance, sizeof(instance), "run%d", (int)getpid());
	return roudi_start();
}

static int iox_attach(struct peer *p)
{
	const char *out, *in;
	iox_pub_options_t po;
	iox_sub_options_t so;
	char name[64];
	uint64_t t0;

	snprintf(name, sizeof(name), "mpqpeer%d", (int)getpid());
	iox_runtime_init(name);
	if (p->bench == PEER_RTT) {
		out = p->role == PEER_INITIATOR ? "ping" : "pong";
		in = p->role == PEER_INITIATOR ? "pong" : "ping";
	} else {
		out = p->role == PEER_PRODUCER ? "data" : NULL;
		in = p->role == PEER_CONSUMER ? "data" : NULL;
	}
	if (out) {
		iox_pub_options_init(&po);
		po.historyCapacity = 0;
		po.subscriberTooSlowPolicy = ConsumerTooSlowPolicy_WAIT_FOR_CONSUMER;
		pub = iox_pub_init(&pub_storage, "mpq-peer", instance, out, &po);
	}
	if (in) {
		iox_sub_options_init(&so);
		so.queueCapacity = 256;
		so.historyRequest = 0;
		so.queueFullPolicy = QueueFullPolicy_BLOCK_PRODUCER;
		sub = iox_sub_init(&sub_storage, "mpq-peer", instance, in, &so);
	}
	/* Connected both ways before the first message (RouDi matches them). */
	t0 = bench_now_ns();
	while ((out && !iox_pub_has_subscribers(pub)) ||
	       (in && iox_sub_get_subscription_state(sub) != SubscribeState_SUBSCRIBED)) {
		if (bench_now_ns() - t0 > 30000000000ull)
			return peer_fail("iceoryx", "publisher and subscriber not "
					 "connected after 30 s");
		usleep(1000);
	}
	return 0;
}

static int iox_put(struct peer *p, const unsigned char *msg, bool wait)
{
	enum iox_AllocationResult r;
	void *chunk;

	while ((r = iox_pub_loan_chunk(pub, &chunk, (uint32_t)p->size)) !=
	       AllocationResult_SUCCESS) {
		if (r != AllocationResult_RUNNING_OUT_OF_CHUNKS || !wait)
			return r == AllocationResult_RUNNING_OUT_OF_CHUNKS ? -EAGAIN :
			       peer_fail("iox_pub_loan_chunk", "failed");
		sched_yield();
	}
	memcpy(chunk, msg, is_zc(p) ? 8 : p->size);
	iox_pub_publish_chunk(pub, chunk);
	return 0;
}

static int iox_send(struct peer *p, const unsigned char *msg)
{
	return iox_put(p, msg, true);
}

static int iox_try_send(struct peer *p, const unsigned char *msg)
{
	return iox_put(p, msg, false);
}

static int iox_recv(struct peer *p, unsigned char *msg)
{
	enum iox_ChunkReceiveResult r;
	const void *chunk;

	while ((r = iox_sub_take_chunk(sub, &chunk)) != ChunkReceiveResult_SUCCESS)
		if (r != ChunkReceiveResult_NO_CHUNK_AVAILABLE)
			return peer_fail("iox_sub_take_chunk", "failed");
	memcpy(msg, chunk, is_zc(p) ? 8 : p->size);
	iox_sub_release_chunk(sub, chunk);
	return 0;
}

static void iox_detach(struct peer *p)
{
	if (sub)
		iox_sub_deinit(sub);
	if (pub)
		iox_pub_deinit(pub);
	iox_runtime_shutdown();
}

static void iox_close(struct peer *p)
{
	roudi_stop();
}

static const struct peer_ops iceoryx = {
	.name = "iceoryx", .unsupported = iox_unsupported,
	.open = iox_open, .attach = iox_attach, .send = iox_send,
	.try_send = iox_try_send, .recv = iox_recv, .detach = iox_detach,
	.close = iox_close,
	/*
	 * Its lossless stream ran at 12-70 k msgs/s on this loaded 2-vCPU VM
	 * (the blocked publisher waits by yielding): 2,000,000 messages
	 * would outlast the cell's 120 s.
	 */
	.stream_max = 200000,
	.exit_normally = true,
};

static const struct peer_ops iceoryx_zc = {
	.name = "iceoryx-zc", .unsupported = iox_zc_unsupported,
	.open = iox_open, .attach = iox_attach, .send = iox_send,
	.try_send = iox_try_send, .recv = iox_recv, .detach = iox_detach,
	.close = iox_close, .exit_normally = true,
};

int main(int argc, char **argv)
{
	static const struct peer_ops *const impls[] = { &iceoryx, &iceoryx_zc };

	return peer_main(argc, argv, impls, 2);
}
