// SPDX-License-Identifier: MIT
/*
 * Concurrency Kit's ck_ring (libck-dev) between processes: the lock-free
 * ring a C programmer reaches for first. The ring (struct ck_ring) and its
 * slots live in one MAP_SHARED mapping made before fork, which ck_ring
 * allows: it keeps no pointers, only indexes, and every call gets the
 * buffer's address. Messages are stored by value with CK_RING_PROTOTYPE,
 * ck's type-safe interface for inlining a type in the slots (the plain
 * interface stores void pointers, meaningless in another process). Full
 * and empty are spun on with ck_pr_stall(), ck's pause: ck_ring never
 * sleeps, so these rows are the "spin" kind, like mpq's spin floor.
 *
 *   ck-ring-spsc  ck_ring_enqueue_spsc/dequeue_spsc: rtt (two rings) and
 *                 stream, 8 B and 1 KiB
 *   ck-ring-mpmc  ck_ring_enqueue_mpmc/dequeue_mpmc: mpmc, 8 B
 *
 * A ring of 2^k slots holds 2^k - 1 messages; it gets 1024 slots (1023
 * messages), an mpq queue's 1024 messages within one.
 */
#include <ck_pr.h>
#include <ck_ring.h>

#include "peer.h"

struct msg8 { unsigned char b[8]; };
struct msg1k { unsigned char b[1024]; };
CK_RING_PROTOTYPE(m8, msg8)
CK_RING_PROTOTYPE(m1k, msg1k)

struct ck_side {
	struct ck_ring *ring[2];	/* rtt: ping, pong; else ring[0] */
	void *buf[2];
	struct ck_ring *tx, *rx;
	void *txbuf, *rxbuf;
	size_t len;
};

static struct ck_side ck;

static const char *ck_spsc_unsupported(enum peer_bench bench, size_t size)
{
	if (bench == PEER_MPMC)
		return "ck-ring-spsc: one producer, one consumer (ck-ring-mpmc for mpmc)";
	return size == 8 || size == 1024 ? NULL : "ck-ring: 8 B and 1 KiB";
}

static const char *ck_mpmc_unsupported(enum peer_bench bench, size_t size)
{
	return bench == PEER_MPMC && size == 8 ? NULL : "ck-ring-mpmc: mpmc, 8 B";
}

static int ck_open(struct peer *p)
{
	size_t slot = p->size == 8 ? sizeof(struct msg8) : sizeof(struct msg1k);
	size_t ringsz = (sizeof(struct ck_ring) + 63) & ~(size_t)63;
	size_t one = ringsz + (size_t)p->slots * slot;
	unsigned char *m;
	int i;

	ck.len = 2 * one;
	m = mmap(NULL, ck.len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		 -1, 0);
	if (m == MAP_FAILED)
		return peer_fail("mmap", strerror(errno));
	for (i = 0; i < 2; i++) {
		ck.ring[i] = (struct ck_ring *)(m + i * one);
		ck.buf[i] = m + i * one + ringsz;
		ck_ring_init(ck.ring[i], p->slots);
	}
	return 0;
}

static int ck_attach(struct peer *p)
{
	int out = p->role == PEER_ECHO;	/* the echo sends on pong */

	ck.tx = ck.ring[out];
	ck.txbuf = ck.buf[out];
	ck.rx = ck.ring[p->bench == PEER_RTT ? !out : 0];
	ck.rxbuf = ck.buf[p->bench == PEER_RTT ? !out : 0];
	return 0;
}

static bool ck_put(struct peer *p, const unsigned char *msg)
{
	bool mpmc = p->ops->unsupported == ck_mpmc_unsupported;

	if (p->size == 8)
		return mpmc ? ck_ring_enqueue_mpmc_m8(ck.tx, ck.txbuf,
						      (struct msg8 *)msg) :
			      ck_ring_enqueue_spsc_m8(ck.tx, ck.txbuf,
						      (struct msg8 *)msg);
	return ck_ring_enqueue_spsc_m1k(ck.tx, ck.txbuf, (struct msg1k *)msg);
}

static int ck_send(struct peer *p, const unsigned char *msg)
{
	while (!ck_put(p, msg))
		ck_pr_stall();
	return 0;
}

static int ck_try_send(struct peer *p, const unsigned char *msg)
{
	return ck_put(p, msg) ? 0 : -EAGAIN;
}

static int ck_recv(struct peer *p, unsigned char *msg)
{
	bool mpmc = p->ops->unsupported == ck_mpmc_unsupported;

	if (p->size == 8) {
		while (!(mpmc ? ck_ring_dequeue_mpmc_m8(ck.rx, ck.rxbuf,
							(struct msg8 *)msg) :
				ck_ring_dequeue_spsc_m8(ck.rx, ck.rxbuf,
							(struct msg8 *)msg)))
			ck_pr_stall();
		return 0;
	}
	while (!ck_ring_dequeue_spsc_m1k(ck.rx, ck.rxbuf, (struct msg1k *)msg))
		ck_pr_stall();
	return 0;
}

static void ck_detach(struct peer *p)
{
}

static void ck_close(struct peer *p)
{
	munmap(ck.ring[0], ck.len);
}

static const struct peer_ops ck_spsc = {
	.name = "ck-ring-spsc", .unsupported = ck_spsc_unsupported,
	.open = ck_open, .attach = ck_attach, .send = ck_send,
	.try_send = ck_try_send, .recv = ck_recv, .detach = ck_detach,
	.close = ck_close,
};

static const struct peer_ops ck_mpmc = {
	.name = "ck-ring-mpmc", .unsupported = ck_mpmc_unsupported,
	.open = ck_open, .attach = ck_attach, .send = ck_send,
	.try_send = ck_try_send, .recv = ck_recv, .detach = ck_detach,
	.close = ck_close,
};

int main(int argc, char **argv)
{
	static const struct peer_ops *const impls[] = { &ck_spsc, &ck_mpmc };

	return peer_main(argc, argv, impls, 2);
}
