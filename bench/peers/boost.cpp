// SPDX-License-Identifier: MIT
/*
 * Boost.Interprocess message_queue (libboost-dev, header-only): the
 * portable C++ message queue between processes, a fixed number of
 * fixed-size slots in a named shared memory object, guarded by a
 * process-shared mutex and condition variables (it sleeps when full or
 * empty). Used as its documentation shows: the parent creates the queue
 * with create_only, each process opens it by name with open_only, the
 * blocking send()/receive() move one message per call (try_send() for the
 * mpmc stops), remove() at the end. Many processes may send and receive
 * on one queue, so mpmc is the same queue with 2 of each.
 *
 *   boost-mq  rtt (two queues, 8 B), stream (8 B and 1 KiB), mpmc (8 B);
 *             1024 messages of the message size each, like an mpq queue
 */
#include <boost/interprocess/ipc/message_queue.hpp>

#include "peer.h"

namespace bi = boost::interprocess;

static char names[2][64];
static bi::message_queue *tx, *rx;

static const char *boost_unsupported(enum peer_bench bench, size_t size)
{
	if (bench == PEER_RTT)
		return size == 8 ? NULL : "boost-mq rtt: 8 B";
	return size == 8 || (bench == PEER_STREAM && size == 1024) ? NULL :
	       "boost-mq: 8 B (and 1 KiB streams)";
}

static int boost_open(struct peer *p)
{
	int i;

	for (i = 0; i < 2; i++) {
		snprintf(names[i], sizeof(names[i]), "mpq-peer-boost-%d-%d",
			 (int)getpid(), i);
		bi::message_queue::remove(names[i]);
		try {
			bi::message_queue q(bi::create_only, names[i], p->slots,
					    p->size);
		} catch (const bi::interprocess_exception &e) {
			return peer_fail("message_queue create", e.what());
		}
	}
	return 0;
}

static int boost_attach(struct peer *p)
{
	int out = p->role == PEER_ECHO;

	try {
		tx = new bi::message_queue(bi::open_only, names[out]);
		rx = new bi::message_queue(bi::open_only,
					   names[p->bench == PEER_RTT ? !out : 0]);
	} catch (const bi::interprocess_exception &e) {
		return peer_fail("message_queue open", e.what());
	}
	return 0;
}

static int boost_send(struct peer *p, const unsigned char *msg)
{
	try {
		tx->send(msg, p->size, 0);
	} catch (const bi::interprocess_exception &e) {
		return peer_fail("message_queue send", e.what());
	}
	return 0;
}

static int boost_try_send(struct peer *p, const unsigned char *msg)
{
	try {
		return tx->try_send(msg, p->size, 0) ? 0 : -EAGAIN;
	} catch (const bi::interprocess_exception &e) {
		return peer_fail("message_queue try_send", e.what());
	}
}

static int boost_recv(struct peer *p, unsigned char *msg)
{
	bi::message_queue::size_type got;
	unsigned int prio;

	try {
		rx->receive(msg, p->size, got, prio);
	} catch (const bi::interprocess_exception &e) {
		return peer_fail("message_queue receive", e.what());
	}
	return got == p->size ? 0 : peer_fail("message_queue receive", "wrong size");
}

static void boost_detach(struct peer *p)
{
	delete tx;
	delete rx;
}

static void boost_close(struct peer *p)
{
	bi::message_queue::remove(names[0]);
	bi::message_queue::remove(names[1]);
}

static const struct peer_ops boost_mq = {
	"boost-mq", boost_unsupported, boost_open, boost_attach, boost_send,
	boost_try_send, boost_recv, boost_detach, boost_close,
};

int main(int argc, char **argv)
{
	static const struct peer_ops *const impls[] = { &boost_mq };

	return peer_main(argc, argv, impls, 1);
}
