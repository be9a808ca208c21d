/* SPDX-License-Identifier: MIT */
/*
 * libmpq: Python's multiprocessing for C programs on Linux.
 *
 * Objects are opaque handles (struct mpq_<type>) made by mpq_<type>_new()
 * and released by mpq_<type>_free(). Every call that can fail returns 0 (or
 * a count) on success and a negative errno on failure; errno itself is
 * never the answer. Timeouts are int64_t nanoseconds: MPQ_FOREVER blocks,
 * 0 never blocks.
 *
 * Objects live in memory shared by the processes that use them, made by
 * one of two backends behind the same API:
 *   MPQ_BACKEND_KMOD   objects from the mpq kernel module (/dev/mpq): the
 *                      kernel owns their lifetime and their fds are
 *                      pollable;
 *   MPQ_BACKEND_MEMFD  memfd + futex, for machines without the module.
 * The default is the environment's MPQ_BACKEND ("kmod" or "memfd") if set,
 * else kmod where /dev/mpq exists, else memfd.
 *
 * Objects are inherited across fork(). A queue's fd can also be passed to
 * an unrelated process (SCM_RIGHTS) and opened there with
 * mpq_queue_from_fd().
 */
#ifndef MPQ_H
#define MPQ_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MPQ_VERSION_MAJOR	0
#define MPQ_VERSION_MINOR	1

/* Block without a time limit. */
#define MPQ_FOREVER		((int64_t)-1)

enum mpq_backend {
	MPQ_BACKEND_DEFAULT	= 0,
	MPQ_BACKEND_KMOD	= 1,
	MPQ_BACKEND_MEMFD	= 2,
};

/* "kmod", "memfd", or "?" for a value that names no backend. */
const char *mpq_backend_name(int backend);

/*
 * Queue: Python's multiprocessing.Queue for byte messages. A bounded
 * multi-producer multi-consumer FIFO; each producer's messages come out in
 * the order it put them. A put or get that neither has to wait nor has to
 * wake a sleeper makes no system call.
 */
struct mpq_queue;

/*
 * Creation settings. Zero-initialise, then set what you need: zero means
 * the default. The struct has room to grow; reserved fields must be zero.
 */
struct mpq_queue_attr {
	uint32_t maxsize;	/* messages it holds (default 1024), rounded
				   up to a power of two, 2 at least */
	uint32_t msgsize;	/* largest message in bytes (default 1024) */
	int32_t backend;	/* enum mpq_backend */
	uint32_t flags;		/* none yet: must be 0 */
	int64_t spin_ns;	/* how long a blocking call spins (yielding
				   the CPU after 0.5 us) before it sleeps:
				   0 default (50 us), < 0 never */
	uint64_t __reserved[4];
};

/*
 * Make a queue. attr may be NULL for all defaults.
 * Returns 0, -EINVAL (bad attr or MPQ_BACKEND), -ENODEV (kmod asked for
 * but /dev/mpq absent), -E2BIG (too large), -ENOMEM, -EMFILE.
 */
int mpq_queue_new(struct mpq_queue **out, const struct mpq_queue_attr *attr);

/*
 * Open a queue from an fd that mpq_queue_fileno() gave in some process and
 * that reached this one (SCM_RIGHTS, inheritance). The fd is duplicated:
 * the caller still owns it.
 * Returns 0, -EBADF (not an open fd), -EINVAL (not a queue), -EUCLEAN (a
 * queue whose header is corrupt), -ENOMEM.
 */
int mpq_queue_from_fd(struct mpq_queue **out, int fd);

/* Unmap and close this process's handle. The queue lives on in others. */
void mpq_queue_free(struct mpq_queue *q);

/*
 * Put one message of len bytes (len <= the queue's msgsize; 0 is allowed).
 * Waits while the queue is full, up to timeout_ns.
 * Returns 0, -EAGAIN (full and timeout_ns == 0), -ETIMEDOUT, -EMSGSIZE
 * (len too large), -EINVAL, -EUCLEAN (the shared memory is corrupt).
 */
int mpq_queue_put(struct mpq_queue *q, const void *msg, size_t len,
		  int64_t timeout_ns);
int mpq_queue_put_nowait(struct mpq_queue *q, const void *msg, size_t len);

/*
 * Take the oldest message into buf. *len is in: the size of buf; out: the
 * message's length. Waits while the queue is empty, up to timeout_ns.
 * Returns 0, -EAGAIN (empty and timeout_ns == 0), -ETIMEDOUT, -EMSGSIZE
 * (buf too short: *len is set to the size needed and the message stays in
 * the queue), -EINVAL, -EUCLEAN (the shared memory is corrupt; a corrupt
 * message is dropped so the queue can go on).
 */
int mpq_queue_get(struct mpq_queue *q, void *buf, size_t *len,
		  int64_t timeout_ns);
int mpq_queue_get_nowait(struct mpq_queue *q, void *buf, size_t *len);

/*
 * Batches: put or take up to n messages in one call (at most 256: a larger
 * n is cut to that), with one claim of positions and at most one wake-up
 * for the whole batch.
 *
 * put_many puts msgs[0..n) in order, as many as fit, waiting (up to
 * timeout_ns) only while not even one does. Returns the count put (1..n),
 * or what mpq_queue_put returns for the first message.
 *
 * get_many takes up to n messages, oldest first, into bufs[i].iov_base;
 * iov_len is in: the room, out: the message's length. Waits only while the
 * queue is empty. Returns the count taken (1..n), or what mpq_queue_get
 * returns for the first message (on -EMSGSIZE bufs[0].iov_len is the size
 * needed). A message that does not fit its buffer ends the batch before it
 * and stays queued.
 */
int mpq_queue_put_many(struct mpq_queue *q, const struct iovec *msgs,
		       unsigned int n, int64_t timeout_ns);
int mpq_queue_get_many(struct mpq_queue *q, struct iovec *bufs,
		       unsigned int n, int64_t timeout_ns);

/*
 * Messages in the queue now (exact when nothing is in flight), 1/0 for
 * empty and full, or -EINVAL, -EUCLEAN.
 */
int mpq_queue_qsize(struct mpq_queue *q);
int mpq_queue_empty(struct mpq_queue *q);
int mpq_queue_full(struct mpq_queue *q);

/* Capacity in messages (after rounding) and largest message, or -EINVAL. */
int mpq_queue_maxsize(struct mpq_queue *q);
long mpq_queue_msgsize(struct mpq_queue *q);

/* enum mpq_backend of the queue, or -EINVAL. */
int mpq_queue_backend(struct mpq_queue *q);

/*
 * The fd behind the queue, owned by the handle: pass it to other
 * processes. With MPQ_BACKEND_KMOD it is pollable: EPOLLIN while a message
 * is ready, EPOLLOUT while there is room (level-triggered; edge-triggered
 * epoll works too). With MPQ_BACKEND_MEMFD it is a memfd, not pollable.
 */
int mpq_queue_fileno(struct mpq_queue *q);

/*
 * Pipe and Connection: Python's multiprocessing.Pipe for byte messages,
 * over shared-memory rings (not a kernel pipe). Messages of any size that
 * fits in memory; each is copied once on each side.
 *
 * End of file the kernel's way: when every holder of the other end has
 * closed it or died, a reader gets the messages completed before that,
 * then -EPIPE (Python's EOFError); a message cut short is never delivered;
 * a blocked call wakes at once. A connection must not be used by two
 * processes at the same time (as in Python: the data would interleave).
 */
struct mpq_conn;

/* Zero-initialise; zero means the default; reserved fields must be 0. */
struct mpq_pipe_attr {
	uint32_t bufsize;	/* ring bytes per direction, a power of two,
				   >= 4096 (default 256 KiB) */
	int32_t backend;	/* enum mpq_backend */
	uint32_t flags;		/* none yet: must be 0 */
	uint32_t __pad;
	int64_t spin_ns;	/* as for queues: 0 default, < 0 never */
	uint64_t __reserved[4];
};

/*
 * Make a pipe: *c1 and *c2 are its two ends. duplex: both send and
 * receive; else (Python's Pipe(False)) *c1 only receives and *c2 only
 * sends. Returns 0, -EINVAL, -ENODEV (kmod asked for, no /dev/mpq),
 * -ENOMEM, -EMFILE.
 */
int mpq_pipe(struct mpq_conn **c1, struct mpq_conn **c2, int duplex,
	     const struct mpq_pipe_attr *attr);

/*
 * Send len bytes as one message. timeout_ns bounds the wait for room for
 * its start; once part of a message is out, the call returns when all of
 * it is, or the other end is gone. With the module a send to an end that
 * is gone fails at once; without it, when it would have to wait for room.
 * Returns 0, -EPIPE (the other end is gone), -EAGAIN, -ETIMEDOUT, -EBADF
 * (closed, or the receiving end of a one-way pipe), -EINVAL.
 */
int mpq_conn_send_bytes(struct mpq_conn *c, const void *buf, size_t len,
			int64_t timeout_ns);

/*
 * Receive one message into buf. *len is in: the room, out: the message's
 * length. Returns 0, -EMSGSIZE (buf too short: *len is set to the size
 * needed, and the message stays), -EPIPE (nothing left and the other end
 * is gone), -EAGAIN, -ETIMEDOUT, -EBADF, -EINVAL, -EUCLEAN (corrupt).
 */
int mpq_conn_recv_bytes_into(struct mpq_conn *c, void *buf, size_t *len,
			     int64_t timeout_ns);

/*
 * Receive one message into a buffer from malloc(), *out, that the caller
 * frees. Returns its length, -EMSGSIZE if longer than maxlength (it stays),
 * -ENOMEM, or what mpq_conn_recv_bytes_into returns.
 */
ssize_t mpq_conn_recv_bytes(struct mpq_conn *c, void **out, size_t maxlength,
			    int64_t timeout_ns);

/*
 * Is there something to receive (a message, or the end of file), waiting
 * up to timeout_ns? Returns 1, 0, or -EBADF, -EINVAL.
 */
int mpq_conn_poll(struct mpq_conn *c, int64_t timeout_ns);

/*
 * An fd to poll (epoll, select, io_uring) for this end: readable when a
 * message or the end of file is waiting; with the module also writable
 * when there is room. Owned by the connection. Without the module a
 * wake-up may be spurious: receive with a zero timeout.
 */
int mpq_conn_fileno(struct mpq_conn *c);

/* Close this process's handle of the end; later calls give -EBADF. */
int mpq_conn_close(struct mpq_conn *c);

/* Close if open, and free the handle. */
void mpq_conn_free(struct mpq_conn *c);

/* enum mpq_backend of the connection, or -EINVAL. */
int mpq_conn_backend(struct mpq_conn *c);

/*
 * Waiting on many things: multiprocessing.connection.wait for C. Any mix
 * of connections (ready: a message or the end of file), queues (ready: a
 * message) and plain fds (ready: readable; a process sentinel is one).
 */
enum mpq_wait_kind {
	MPQ_WAIT_FD	= 1,
	MPQ_WAIT_CONN	= 2,
	MPQ_WAIT_QUEUE	= 3,
};

struct mpq_wait_item {
	int32_t kind;		/* enum mpq_wait_kind */
	int32_t ready;		/* out: 1 if ready */
	union {
		int fd;
		struct mpq_conn *conn;
		struct mpq_queue *queue;
	};
};

/*
 * Wait until at least one of items[0..n) is ready, up to timeout_ns, and
 * mark those that are. Returns how many are ready, 0 on timeout, or
 * -EINVAL, -EBADF (a closed object or a negative fd), -EOPNOTSUPP (a
 * memfd queue opened by its fd: it has no doorbell), -ENOMEM.
 */
int mpq_wait(struct mpq_wait_item *items, unsigned int n, int64_t timeout_ns);

/*
 * For a program with its own loop: the fd to poll (EPOLLIN, io_uring
 * POLL_ADD) for an item, or -EOPNOTSUPP for a memfd queue; and a shorthand
 * that adds it to an epoll set with data as its epoll_data.u64. A wake-up
 * says "look": receive or get with a zero timeout.
 */
int mpq_wait_fd(const struct mpq_wait_item *item);
int mpq_epoll_add(int epfd, const struct mpq_wait_item *item, uint64_t data);

#ifdef __cplusplus
}
#endif

#endif /* MPQ_H */
