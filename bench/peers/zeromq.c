// SPDX-License-Identifier: MIT
/*
 * ZeroMQ (libzmq3-dev) over ipc://, its transport between processes on one
 * machine (a Unix domain socket underneath, driven by ZeroMQ's I/O thread
 * in each process). Used with the patterns its guide gives each job, and
 * the way its own perf tools (local_lat/remote_lat, local_thr/remote_thr)
 * use them: one context per process, zmq_send()/zmq_recv() of one message
 * per call, blocking, default high-water marks (1000 messages).
 *
 *   zeromq-ipc  rtt: REQ (initiator) to REP (echo), 8 B
 *               stream: PUSH to PULL, 8 B and 1 KiB
 *               mpmc: each consumer a PULL bound to its own endpoint, each
 *               producer a PUSH connected to both (PUSH deals messages
 *               round-robin over its peers, PULL queues fairly), 8 B
 *
 * The endpoints are files in /tmp named for the benchmark's pid, removed
 * at the end. No process closes before what it sent is through (see
 * zq_detach), then with ZMQ_LINGER 0: mpmc stops nobody reads are dropped.
 */
#include <zmq.h>

#include "peer.h"

static char ep[2][80];
static void *ctx, *sock;
/* Shared: how many endpoints are bound; the stream's consumer is done. */
static uint32_t *bound;

static const char *zmq_unsupported(enum peer_bench bench, size_t size)
{
	if (bench == PEER_STREAM)
		return size == 8 || size == 1024 ? NULL : "zeromq-ipc stream: 8 B and 1 KiB";
	return size == 8 ? NULL : "zeromq-ipc: 8 B";
}

static int zmq_fail(const char *what)
{
	return peer_fail(what, zmq_strerror(zmq_errno()));
}

static int zq_open(struct peer *p)
{
	int i;

	bound = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
		     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (bound == MAP_FAILED)
		return peer_fail("mmap", strerror(errno));
	bound[0] = bound[1] = 0;
	for (i = 0; i < 2; i++) {
		snprintf(ep[i], sizeof(ep[i]), "ipc:///tmp/mpq-peer-zmq-%d-%d",
			 (int)getpid(), i);
		unlink(ep[i] + 6);
	}
	return 0;
}

static int zq_attach(struct peer *p)
{
	static const int types[] = {
		[PEER_INITIATOR] = ZMQ_REQ, [PEER_ECHO] = ZMQ_REP,
		[PEER_PRODUCER] = ZMQ_PUSH, [PEER_CONSUMER] = ZMQ_PULL,
	};
	int linger = 0, i;
	uint32_t n;

	ctx = zmq_ctx_new();
	if (!ctx)
		return zmq_fail("zmq_ctx_new");
	sock = zmq_socket(ctx, types[p->role]);
	if (!sock)
		return zmq_fail("zmq_socket");
	if (zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof(linger)))
		return zmq_fail("zmq_setsockopt");
	/*
	 * Bind, then connect: a PUSH that connected before the PULL had
	 * bound lost its messages now and then here (ipc://, 4.3.4), so the
	 * connecting side waits for the bound ones.
	 */
	if (p->role == PEER_ECHO || p->role == PEER_CONSUMER) {
		if (zmq_bind(sock, ep[p->index]))
			return zmq_fail("zmq_bind");
		__atomic_add_fetch(bound, 1, __ATOMIC_SEQ_CST);
		return 0;
	}
	n = p->bench == PEER_MPMC ? PEER_NCONS : 1;
	while (__atomic_load_n(bound, __ATOMIC_ACQUIRE) < n)
		sched_yield();
	for (i = 0; i < (int)n; i++)
		if (zmq_connect(sock, ep[i]))
			return zmq_fail("zmq_connect");
	return 0;
}

static int zq_send(struct peer *p, const unsigned char *msg)
{
	while (zmq_send(sock, msg, p->size, 0) < 0)
		if (zmq_errno() != EINTR)
			return zmq_fail("zmq_send");
	return 0;
}

static int zq_try_send(struct peer *p, const unsigned char *msg)
{
	if (zmq_send(sock, msg, p->size, ZMQ_DONTWAIT) >= 0)
		return 0;
	if (zmq_errno() == EAGAIN || zmq_errno() == EINTR)
		return -EAGAIN;
	return zmq_fail("zmq_send");
}

static int zq_recv(struct peer *p, unsigned char *msg)
{
	int n;

	while ((n = zmq_recv(sock, msg, p->size, 0)) < 0)
		if (zmq_errno() != EINTR)
			return zmq_fail("zmq_recv");
	return (size_t)n == p->size ? 0 : peer_fail("zmq_recv", "wrong size");
}

static void zq_detach(struct peer *p)
{
	/*
	 * A stream's producer closes only after the consumer has had every
	 * message: with the default linger, closing right after the last
	 * send still lost the last few hundred messages now and then here.
	 */
	if (p->role == PEER_CONSUMER)
		__atomic_store_n(&bound[1], 1, __ATOMIC_RELEASE);
	else if (p->role == PEER_PRODUCER && p->bench == PEER_STREAM)
		while (!__atomic_load_n(&bound[1], __ATOMIC_ACQUIRE))
			usleep(100);
	zmq_close(sock);
	zmq_ctx_term(ctx);
}

static void zq_close(struct peer *p)
{
	unlink(ep[0] + 6);
	unlink(ep[1] + 6);
	munmap(bound, 4096);
}

static const struct peer_ops zeromq_ipc = {
	.name = "zeromq-ipc", .unsupported = zmq_unsupported,
	.open = zq_open, .attach = zq_attach, .send = zq_send,
	.try_send = zq_try_send, .recv = zq_recv, .detach = zq_detach,
	.close = zq_close,
};

int main(int argc, char **argv)
{
	static const struct peer_ops *const impls[] = { &zeromq_ipc };

	return peer_main(argc, argv, impls, 1);
}
