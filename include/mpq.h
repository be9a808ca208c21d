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

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MPQ_VERSION_MAJOR	0
#define MPQ_VERSION_MINOR	2

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
 * A readable meaning for a value libmpq returned: 0, or a negative errno
 * (described as the Python exception it stands for where there is one).
 * Never NULL; the string is static ("unknown error" for a number that
 * names none).
 */
const char *mpq_strerror(int err);

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
	uint32_t maxsize;	/* messages it holds, exactly; 0 (the
				   default): unbounded, as Python's Queue() */
	uint32_t msgsize;	/* slot size in bytes (default 1024): larger
				   messages go out of line, not refused */
	int32_t backend;	/* enum mpq_backend */
	uint32_t flags;		/* MPQ_QUEUE_F_* */
	int64_t spin_ns;	/* how long a blocking call spins (yielding
				   the CPU after 0.5 us) before it sleeps:
				   0 default (50 us), < 0 never */
	uint64_t __reserved[4];
};

/* A JoinableQueue: puts count tasks that task_done() counts off. */
#define MPQ_QUEUE_F_JOINABLE	(1U << 0)

/*
 * The caller's promise that at most one thread (of all processes) puts at
 * a time (ONE_PRODUCER), or gets at a time (ONE_CONSUMER), through the
 * handles made by this mpq_queue_new() and inherited by fork: their puts
 * or gets then claim positions with a plain store instead of a locked
 * compare-and-swap, and a one-message put or get takes no operation
 * record (publish, then move tail; free, then move head: see
 * mpq_queue(3)). Deaths are recovered as before. A broken promise can
 * lose or duplicate messages or make calls fail with -EUCLEAN; it never
 * makes libmpq read or write outside the queue. ONE_PRODUCER takes effect
 * only on a bounded queue (maxsize > 0): an unbounded one's consumers
 * also put, moving its overflow into the ring.
 */
#define MPQ_QUEUE_F_ONE_PRODUCER	(1U << 1)
#define MPQ_QUEUE_F_ONE_CONSUMER	(1U << 2)

/*
 * Make a queue. attr may be NULL for all defaults.
 * Returns 0, -EINVAL (bad attr or MPQ_BACKEND), -ENODEV (kmod asked for
 * but /dev/mpq absent), -E2BIG (too large), -EDQUOT (the module's per-user
 * budget is spent: see /proc/mpq_users), -ENOMEM, -EMFILE.
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
 * Arrays of messages of one size: count (max) messages of size bytes
 * each, one after the other at base (buf), as a C array of records.
 *
 * put_array puts them in order, as many as fit, waiting (up to
 * timeout_ns) only while not even one does; get_array takes up to max,
 * oldest first, waiting only while the queue is empty, and only messages
 * of exactly size bytes: one of another length ends the array before it
 * and stays queued (take it with mpq_queue_get). Both return the count
 * (1..count, 1..max), or what put and get return for the first message
 * (-EMSGSIZE from get_array: the oldest message is not size bytes long).
 * -EOPNOTSUPP for an extension's queue.
 *
 * On a bounded queue, put_array packs a batch of 16 or more small
 * messages into consecutive slots as one run (as put_many does a batch of
 * messages of one length), copied in and out with one memcpy: a tenth of
 * the cost of a slot per message for 8-byte ones (mpq_queue(3)). maxsize
 * still counts messages. Consumers take from a run one at a time (a
 * non-blocking get may find it held by another and return -EAGAIN);
 * smaller batches, and an unbounded queue, get a slot per message;
 * get_array takes both kinds from any queue.
 */
int mpq_queue_put_array(struct mpq_queue *q, const void *base, size_t size,
			unsigned int count, int64_t timeout_ns);
int mpq_queue_get_array(struct mpq_queue *q, void *buf, size_t size,
			unsigned int max, int64_t timeout_ns);

/*
 * The messages in the queue: put and not yet taken (puts still in
 * progress and what dead producers left are not counted), exact when
 * nothing moves. empty: 1 if qsize is 0. full: 1 if a put would have to
 * wait now (the next slot still holds a message, or is held by a peek).
 * Or -EINVAL, -EUCLEAN.
 */
int mpq_queue_qsize(struct mpq_queue *q);
int mpq_queue_empty(struct mpq_queue *q);
int mpq_queue_full(struct mpq_queue *q);

/*
 * Zero-copy. A window on one slot of the queue's shared memory:
 *
 *   reserve: claim a slot for a message of up to size bytes (<= msgsize,
 *            else -EMSGSIZE), waiting up to timeout_ns while the queue is
 *            full; m->data is where to write it in place, m->len the room
 *            (msgsize). commit publishes len bytes of it; cancel gives the
 *            slot up (it is published empty, and consumers pass over it).
 *   peek:    claim the oldest message, waiting while the queue is empty;
 *            m->data and m->len are its bytes, in place, until release.
 *
 * A message of any size up to msgsize goes through without a copy. A
 * window keeps its place in the ring: messages put after an open
 * reservation wait behind it (the queue is FIFO) until it is committed or
 * cancelled, and a peeked message's slot is free for producers again
 * only once released. Producers and consumers do go on claiming other
 * slots meanwhile. A process killed inside a window does not wedge the
 * queue: a reserved slot is published empty, a peeked message is
 * delivered again to another consumer; nothing committed is lost.
 * Close a window from the thread that opened it; do not free the queue
 * with a window open. Returns 0, -EAGAIN (timeout_ns == 0), -ETIMEDOUT,
 * -EBADF (closed), -EMSGSIZE, -EINVAL (not an open window of that kind
 * on this queue), -EUCLEAN.
 */
struct mpq_msg {
	void *data;		/* out: the bytes, in the shared memory */
	size_t len;		/* out: their length (peek), the room (reserve) */
	uint64_t __pos;
	void *__rec;
	struct mpq_queue *__q;
	uint32_t __kind;
	uint32_t __pad;
};

int mpq_queue_reserve(struct mpq_queue *q, size_t size, struct mpq_msg *m,
		      int64_t timeout_ns);
int mpq_queue_commit(struct mpq_queue *q, struct mpq_msg *m, size_t len);
int mpq_queue_cancel(struct mpq_queue *q, struct mpq_msg *m);
int mpq_queue_peek(struct mpq_queue *q, struct mpq_msg *m, int64_t timeout_ns);
int mpq_queue_release(struct mpq_queue *q, struct mpq_msg *m);

/*
 * JoinableQueue (MPQ_QUEUE_F_JOINABLE, or mpq_joinable_queue_new): each
 * message put counts one unfinished task; task_done counts one off (-EINVAL
 * when none is left: Python's ValueError); join waits until none is left
 * (0, -EAGAIN with timeout_ns == 0, -ETIMEDOUT). unfinished returns the
 * count. All -EINVAL on a queue that is not joinable. A consumer that dies
 * before its task_done leaves the count up, as in Python: join with a
 * timeout where consumers may die. What a dead producer left dropped is
 * counted off again.
 */
int mpq_joinable_queue_new(struct mpq_queue **out,
			   const struct mpq_queue_attr *attr);
int mpq_queue_task_done(struct mpq_queue *q);
int mpq_queue_join(struct mpq_queue *q, int64_t timeout_ns);
int mpq_queue_unfinished(struct mpq_queue *q);

/*
 * SimpleQueue: the same queue (it has no feeder thread either: a put is
 * done when it returns). mpq_simple_queue_new is mpq_queue_new.
 */
int mpq_simple_queue_new(struct mpq_queue **out,
			 const struct mpq_queue_attr *attr);

/*
 * Python's close(), join_thread() and cancel_join_thread(). close() stops
 * this handle: later puts and gets through it are -EBADF (Python's
 * ValueError); the queue lives on for other handles. A put has handed its
 * message over when it returns (there is no feeder thread to flush), so
 * join_thread() returns 0 at once after close() (-EINVAL before, as
 * Python's assertion) and cancel_join_thread() does nothing.
 */
int mpq_queue_close(struct mpq_queue *q);
int mpq_queue_join_thread(struct mpq_queue *q);
int mpq_queue_cancel_join_thread(struct mpq_queue *q);

/* maxsize as asked (0: unbounded) and the slot size, or -EINVAL. */
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
 * Process: Python's multiprocessing.Process. A process runs a target
 * function with a copy of an argument's bytes, and its parent can join it,
 * signal it and read its exit code.
 *
 * A process object belongs to the process that made it: only that process
 * starts, joins, signals or closes it as a child (elsewhere, e.g. in a
 * forked child that inherited a copy, those calls give -ECHILD). After
 * mpq_process_close() every call but mpq_process_name(),
 * mpq_process_daemon() and mpq_process_free() gives -EBADF.
 *
 * Start methods:
 *   MPQ_START_FORK   fork(2): the child is a copy of the parent and runs
 *                    the target at once. Only the calling thread is
 *                    copied: a lock that another thread held at that
 *                    moment stays held in the child forever. libmpq's own
 *                    lock is taken around every fork (pthread_atfork), and
 *                    glibc does the same for malloc and stdio; locks of the
 *                    program's own are its business, and the spawn method
 *                    is the way out for a program with threads.
 *   MPQ_START_SPAWN  fork(2) and execve(2) of /proc/self/exe with the
 *                    parent's arguments: the child is a fresh copy of the
 *                    program. Its main() calls mpq_init(), which finds the
 *                    target by the name mpq_register_target() gave it
 *                    (Python pickles a function by its qualified name),
 *                    runs it and exits. Objects reach a spawned child as
 *                    handles (mpq_queue_export()) in the argument bytes.
 *
 * How a child ends: the target's return value is the exit status (only
 * its low 8 bits reach the parent, as with exit(3)); the library then
 * ends the child's own children as at exit (below), flushes stdio and
 * calls _exit(2). Handlers the program registered with atexit(3) run only
 * where the target calls exit(3) itself. Output buffered in stdio before a
 * fork start is flushed first, so that it is not written twice.
 *
 * At exit, libmpq terminates (SIGTERM) the daemon children of the exiting
 * process, joins its other children, then waits up to a second for the
 * daemons and kills (SIGKILL) any left. A daemon child also gets
 * PR_SET_PDEATHSIG(SIGTERM): it is terminated even when its parent is
 * killed. The kernel sends that signal when the *thread* that started the
 * daemon ends, so start daemons from a thread that lives as long as the
 * process (the main thread).
 *
 * Children are reaped with waitid(2) by their process objects: a SIGCHLD
 * handler that reaps every child (wait(-1)), or SIGCHLD set to SIG_IGN,
 * takes their exit codes away (join then returns 0 and exitcode -ECHILD).
 */
#include <sys/types.h>

struct mpq_process;

/* A target: its return value is the process's exit status (0..255). */
typedef int (*mpq_target_fn)(const void *arg, size_t arg_len);

enum mpq_start_method {
	MPQ_START_DEFAULT	= 0,	/* fork */
	MPQ_START_FORK		= 1,
	MPQ_START_SPAWN		= 2,
	MPQ_START_FORKSERVER	= 3,	/* see mpq_forkserver_start() */
};

/*
 * Creation settings. Zero-initialise, then set what you need: zero means
 * the default. Reserved fields and flags must be zero.
 */
struct mpq_process_attr {
	const char *name;	/* NULL: "Process-N" (N counts the processes
				   this process made; "Process-1:2" in a child
				   of Process-1), as Python names them */
	int32_t daemon;		/* 0 or 1 */
	int32_t start_method;	/* enum mpq_start_method */
	uint32_t flags;		/* none yet: must be 0 */
	uint32_t __pad;
	uint64_t __reserved[4];
};

/*
 * Register fn as a spawn target under name (at most 255 bytes; copied).
 * The spawned child finds it there by name, so register every target
 * before mpq_init() runs, in the same way in every run of the program:
 * MPQ_TARGET() does it from a constructor. Registering the same name and
 * function again is harmless.
 * Returns 0, -EINVAL (NULL, empty or too long name, NULL fn), -EEXIST (the
 * name is taken by another function), -ENOMEM.
 */
int mpq_register_target(const char *name, mpq_target_fn fn);

/*
 * Register the function fn under its own name before main() runs. Use it
 * at file scope, after fn's definition or declaration:
 *	static int worker(const void *arg, size_t len) { ... }
 *	MPQ_TARGET(worker);
 * The constructor has priority 101 (the first one open to programs), so
 * that a constructor without priority may call mpq_init() after it.
 */
#define MPQ_TARGET(fn)							\
	static void __attribute__((constructor(101)))			\
	__mpq_register_target_##fn(void)				\
	{								\
		mpq_register_target(#fn, fn);				\
	}								\
	struct __mpq_target_##fn##_needs_a_semicolon

/*
 * Call first in main(), before anything the program should not do twice:
 *	int main(int argc, char **argv) { mpq_init(&argc, &argv); ... }
 * In a process started with MPQ_START_SPAWN it runs the target (with the
 * name, daemon flag and parent the process has) and exits with its return
 * value: it never returns there. It is recognised by the environment
 * variable MPQ_SPAWN, which the parent sets and mpq_init() removes, and
 * which names an inherited memfd holding the target's name, the process's
 * name and the argument bytes. A child whose bootstrap cannot be read
 * exits with status 127 after a message on stderr.
 * Elsewhere it remembers argv (the arguments a spawned child gets again)
 * and returns 0. argc and argv may both be NULL: argv is then read from
 * /proc/self/cmdline when a child is spawned (a test harness that owns
 * main() calls mpq_init(NULL, NULL) from a constructor). Nothing is taken
 * out of argv yet; the pointers leave room for options of libmpq's own.
 * A program that spawns without ever calling mpq_init() has children that
 * run its main() again: they get -EPROTO from mpq_process_start() rather
 * than starting children of their own.
 * Returns 0, or -EINVAL (only one of argc and argv is NULL), -ENOMEM.
 */
int mpq_init(int *argc, char ***argv);

/*
 * Make a process that will run target(copy of arg, arg_len). The arg bytes
 * are copied now (the C form of Python's pickled args): the caller may
 * reuse its buffer at once. attr may be NULL for all defaults.
 * Returns 0, -EINVAL (NULL out or target, NULL arg with arg_len, bad
 * attr), -ENOMEM.
 */
int mpq_process_new(struct mpq_process **out, mpq_target_fn target,
		    const void *arg, size_t arg_len,
		    const struct mpq_process_attr *attr);

/*
 * Start the process. With MPQ_START_SPAWN the call returns once the child
 * has executed the program again (an execve failure is returned here).
 * Returns 0, -EINVAL (started before, or not a child's object), -ECHILD
 * (the object was made by another process), -EPERM (the caller is a
 * daemon process), -ENOENT (spawn: target not registered), -EPROTO (the
 * caller is a spawned child whose main() did not call mpq_init()), -EBADF
 * (closed), -EAGAIN, -ENOMEM, -EMFILE (fork, pipe or fds), or execve's
 * error.
 */
int mpq_process_start(struct mpq_process *p);

/*
 * Wait for the process to end, up to timeout_ns, and reap it. For the
 * object mpq_parent_process() gives, wait for the parent to end.
 * Returns 0 (it has ended), -EAGAIN (running, timeout_ns == 0),
 * -ETIMEDOUT, -EINVAL (not started), -EDEADLK (the current process),
 * -ECHILD (not a child of the caller), -EBADF (closed).
 */
int mpq_process_join(struct mpq_process *p, int64_t timeout_ns);

/*
 * 1 while the process runs (from start until it has ended; always for the
 * current process), else 0; reaps it if it has ended. -EINVAL, -ECHILD,
 * -EBADF as for join.
 */
int mpq_process_is_alive(struct mpq_process *p);

/*
 * The exit code, Python's Process.exitcode: the target's return value, or
 * -N if signal N ended it. Reaps the process if it has ended.
 * Returns 0 with *code set, -EAGAIN (not started or still running:
 * Python's None; always for the current and the parent process), -ECHILD
 * (not a child of the caller, or reaped by someone else), -EINVAL, -EBADF.
 */
int mpq_process_exitcode(struct mpq_process *p, int *code);

/*
 * The process ID: the child's once started (it stays after the end), the
 * caller's for mpq_current_process(). Returns -EAGAIN before start,
 * -EINVAL, -EBADF: check it before passing it to kill(2), where a negative
 * pid names a process group.
 */
pid_t mpq_process_pid(struct mpq_process *p);

/* The name ("MainProcess" for the main process), or NULL if p is NULL. */
const char *mpq_process_name(struct mpq_process *p);

/* 1 for a daemon process, 0 otherwise, or -EINVAL. */
int mpq_process_daemon(struct mpq_process *p);

/*
 * Send SIGTERM (terminate) or SIGKILL (kill) to the child, through its
 * pidfd where there is one, so that a recycled pid is never signalled.
 * A child that has already ended is left alone (returns 0).
 * Returns 0, -EINVAL (not started, or not a child: the current or parent
 * process), -ECHILD, -EBADF, or the error of pidfd_send_signal(2)/kill(2).
 */
int mpq_process_terminate(struct mpq_process *p);
int mpq_process_kill(struct mpq_process *p);

/*
 * An fd that becomes readable (POLLIN) when the process ends: a pidfd
 * (pidfd_open(2), kernel 5.3), else the read end of a pipe whose write
 * end only the child holds (readable once the child and any children that
 * inherited that end are gone). For mpq_parent_process(), a pidfd of the
 * parent. The fd belongs to the object: do not close it; it stays valid
 * after the process ends, until mpq_process_close().
 * Returns the fd, -EINVAL (not started, or the current process), -ENOSYS
 * (the parent's, without pidfds), -ECHILD, -EBADF, or why no fd could be
 * had at start (e.g. -EMFILE).
 */
int mpq_process_sentinel(struct mpq_process *p);

/*
 * Release the object's resources (its sentinel fd, its arg copy); the
 * memory stays until mpq_process_free(). Later calls give -EBADF.
 * Returns 0, -EBUSY (still running: join or terminate it first; Python's
 * ValueError), -EINVAL (the current or the parent process), -EBADF.
 */
int mpq_process_close(struct mpq_process *p);

/*
 * Close and free the object. A child still running is not stopped: the
 * library keeps its record and reaps it later (mpq_active_children(),
 * the next start, or exit), as Python does with a Process it no longer
 * references. The objects of the current and the parent process belong to
 * the library: freeing them does nothing.
 */
void mpq_process_free(struct mpq_process *p);

/*
 * The current process: "MainProcess" in the main process (and in children
 * forked with fork(2) directly), the child's own object in a child. Never
 * NULL. Owned by the library.
 */
struct mpq_process *mpq_current_process(void);

/*
 * In a child that libmpq started: its parent (name, pid, join, is_alive,
 * sentinel). NULL in the main process. Owned by the library.
 */
struct mpq_process *mpq_parent_process(void);

/*
 * Reap the children of the caller that have ended, then store up to max
 * of those still running into out[] (objects freed while running are
 * reaped but not listed). out may be NULL when max is 0.
 * Returns the count of running children (which may be more than max), or
 * -EINVAL.
 */
int mpq_active_children(struct mpq_process **out, int max);

/* The CPUs this process may run on (sched_getaffinity(2)), at least 1. */
int mpq_cpu_count(void);

/* Room for any handle mpq_queue_export() writes, with its NUL. */
#define MPQ_HANDLE_MAX		64

/*
 * Write a short handle for q into buf ("mpq-queue:fd=7"): pass it to a
 * spawned child (in its argument bytes, say), where mpq_queue_import()
 * opens the same queue. From now on q's fd is inherited by every child
 * started with MPQ_START_SPAWN, at the same number, for as long as q is
 * open. (Forked children need no handle: they inherit q itself.)
 * Returns the handle's length, -ERANGE (len too short; MPQ_HANDLE_MAX is
 * enough), -EINVAL, -ENOMEM.
 */
int mpq_queue_export(struct mpq_queue *q, char *buf, size_t len);

/*
 * Open the queue a handle from mpq_queue_export() names, in the child that
 * inherited it. Importing a handle twice gives two handles on one queue.
 * Returns 0, -EINVAL (not a queue handle, or the fd is not a queue),
 * -EBADF (the fd was not inherited), and mpq_queue_from_fd()'s errors.
 */
int mpq_queue_import(struct mpq_queue **out, const char *handle);

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
 *
 * A timeout bounds the whole call, however large the message. A send
 * that times out before any of its message is visible withdraws it whole
 * (always so for a message that fits in the ring: it waits for room for
 * all of it). One larger than the ring streams; if it times out part-way
 * the rest can never follow: that end's sending side is shut for good
 * (its later sends: -EPIPE), and the receiver gets the messages before,
 * -ECONNABORTED for the cut one (never a part of it), then -EPIPE. A
 * receive that times out in the middle of a message keeps what it took
 * in the connection; the next receive goes on with the same message.
 */
struct mpq_conn;

/* Zero-initialise; zero means the default; reserved fields must be 0. */
struct mpq_pipe_attr {
	uint32_t bufsize;	/* ring bytes per direction, a power of two,
				   4096 to 256 MiB (default 256 KiB): see
				   mpq_pipe() */
	int32_t backend;	/* enum mpq_backend */
	uint32_t flags;		/* none yet: must be 0 */
	uint32_t __pad;
	int64_t spin_ns;	/* as for queues: 0 default, < 0 never */
	uint64_t __reserved[4];
};

/*
 * Make a pipe: *c1 and *c2 are its two ends. duplex: both send and
 * receive; else (Python's Pipe(False)) *c1 only receives and *c2 only
 * sends. Both backends take the same ring sizes: a power of two from
 * MPQ_PIPE_RING_MIN (4096), else -EINVAL; at most MPQ_PIPE_RING_MAX
 * (256 MiB) and a pipe (two rings and a page) no larger than the largest
 * object (the module's max_object_bytes, 1 GiB by default), else -E2BIG.
 * Returns 0, -EINVAL, -E2BIG, -ENODEV (kmod asked for, no
 * /dev/mpq), -EDQUOT (the module's per-user budget is spent), -ENOMEM,
 * -EMFILE.
 */
int mpq_pipe(struct mpq_conn **c1, struct mpq_conn **c2, int duplex,
	     const struct mpq_pipe_attr *attr);

/*
 * Send len bytes as one message, within timeout_ns for all of it (see
 * above for a message larger than the ring that times out part-way). A
 * zero timeout never waits: a message larger than the free room is
 * -EAGAIN, withdrawn. With the module a send to an end that is gone
 * fails at once; without it, when it would have to wait for room.
 * Returns 0, -EPIPE (the other end is gone, or this end's sending side
 * was shut by a cut message), -EAGAIN, -ETIMEDOUT (withdrawn, or cut and
 * shut), -EBADF (closed, or the receiving end of a one-way pipe),
 * -EINVAL.
 */
int mpq_conn_send_bytes(struct mpq_conn *c, const void *buf, size_t len,
			int64_t timeout_ns);

/*
 * Receive one message into buf, within timeout_ns for all of it. *len is
 * in: the room, out: the message's length. After an error the contents
 * of buf are unspecified. Returns 0, -EMSGSIZE (buf too short: *len is
 * set to the size needed, and the message stays), -EPIPE (nothing left
 * and the other end is gone, or its sending side is shut), -EAGAIN and
 * -ETIMEDOUT (in the middle of a message: what was taken is kept for the
 * next receive), -ECONNABORTED (the sender cut this message short: it is
 * dropped), -ENOMEM (timed out mid-message with no memory to keep it:
 * the message is lost), -EBADF, -EINVAL, -EUCLEAN (corrupt).
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
 * Hand an end to a spawned child: mpq_conn_export() writes a short handle
 * into buf and marks the end's fds to be inherited by children started
 * with MPQ_START_SPAWN; pass the handle in the target's argument, and the
 * child opens its own handle of the end with mpq_conn_import(). Returns
 * the handle's length or -ERANGE, -EBADF, -EINVAL; import returns 0 or
 * -EINVAL (not a handle of an end), -EUCLEAN, -ENOMEM.
 */
int mpq_conn_export(struct mpq_conn *c, char *buf, size_t len);
int mpq_conn_import(struct mpq_conn **out, const char *handle);

/*
 * A Connection over a connected stream socket (AF_UNIX or TCP), in the
 * framing of Python's multiprocessing.connection.Connection: a 4-byte
 * big-endian length (0xffffffff and an 8-byte one for messages over
 * 2 GiB - 1), then the bytes. Python's Connection(fd) for C; what
 * mpq_listener_accept() and mpq_client() (<mpq_net.h>) return. Every
 * mpq_conn_* call and mpq_wait() take it; mpq_conn_fileno() is the socket,
 * mpq_conn_backend() is -EOPNOTSUPP, and mpq_conn_export() hands the
 * socket to a spawned child. The connection owns fd from success on (it
 * is closed by mpq_conn_close). Calls with a timeout use MSG_DONTWAIT and
 * poll, calls with MPQ_FOREVER block in the kernel; the fd's O_NONBLOCK
 * flag does not matter either way. flags must be 0.
 *
 * The promises of a pipe hold, with two differences: a send that times
 * out after part of its message left cuts it whatever its size (a socket
 * cannot reserve room for it first): the sending side is shut, as for a
 * cut message over a pipe; and a header Python cannot have sent is
 * -EPROTO, then and on every later receive (the stream lost its framing).
 * A receive never allocates more than the bytes that actually came.
 * Returns 0, -EINVAL, -EBADF, -ENOTSOCK, -EPROTOTYPE (not SOCK_STREAM),
 * -ENOMEM.
 */
int mpq_conn_from_fd(struct mpq_conn **out, int fd, uint32_t flags);

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

/*
 * Synchronisation: Python's multiprocessing Lock, RLock, Condition,
 * Semaphore, BoundedSemaphore, Event and Barrier, in shared memory that
 * forked children inherit (and spawned ones import by handle). Taking and
 * releasing them without contention makes no system call; a blocked call
 * spins briefly (spin_ns), then sleeps on a futex.
 *
 * Holders that die: when a process (or thread) dies holding a Lock or an
 * RLock, SIGKILL included, the kernel releases the lock for it and wakes
 * one waiter at once (robust futexes). The next acquirer gets the lock
 * and -EOWNERDEAD: it holds the lock, and the state the lock guards may be
 * half-updated. Every acquirer is told -EOWNERDEAD until one of them
 * calls mpq_lock_consistent() (after repairing the state, or deciding it
 * is fine). A party that dies waiting at a Barrier breaks it for the
 * others. Semaphores and Events have no holder, as in Python: a process
 * that dies after acquiring a semaphore takes its unit with it.
 *
 * This relies on the thread's robust list, which libmpq shares with glibc
 * (whose robust mutexes keep working). mpq_robust_supported() tells
 * whether this thread has it (always with glibc on Linux).
 *
 * Not async-signal-safe: a signal handler must not use mpq locks that the
 * code it interrupts may be using.
 */
struct mpq_lock;

/* Zero-initialise; zero means the default; reserved fields must be 0. */
struct mpq_lock_attr {
	int32_t backend;	/* enum mpq_backend */
	uint32_t flags;		/* none yet: must be 0 */
	int64_t spin_ns;	/* spin before sleeping: 0 default (20 us on
				   more than one CPU), < 0 never */
	uint64_t __reserved[4];
};

/*
 * Make a Lock (mpq_lock_new) or an RLock (mpq_rlock_new: the holder may
 * take it again, and must release it as many times). attr may be NULL.
 * Returns 0, -EINVAL, -ENODEV (kmod asked for, no /dev/mpq), -ENOMEM,
 * -EMFILE.
 */
int mpq_lock_new(struct mpq_lock **out, const struct mpq_lock_attr *attr);
int mpq_rlock_new(struct mpq_lock **out, const struct mpq_lock_attr *attr);

/*
 * Take the lock, waiting up to timeout_ns (MPQ_FOREVER blocks, 0 tries
 * once). Returns 0; -EOWNERDEAD (taken: a holder died, see above);
 * -EAGAIN (held, timeout_ns == 0: also when the caller holds the Lock
 * itself, or an RLock already 2^32 - 1 levels deep); -ETIMEDOUT; -EDEADLK
 * (a Lock the caller already holds, timeout_ns != 0; an RLock just counts
 * one more); -EINVAL; -ENOMEM.
 */
int mpq_lock_acquire(struct mpq_lock *l, int64_t timeout_ns);

/*
 * Release it (an RLock: one level). Only the holding thread may.
 * Returns 0, -EINVAL (a Lock that is not held: Python's ValueError),
 * -EPERM (held by another thread or process, or an RLock not held).
 */
int mpq_lock_release(struct mpq_lock *l);

/*
 * Mark the state the lock guards consistent again after -EOWNERDEAD: later
 * acquirers get 0. The caller must hold the lock. Returns 0, -EPERM,
 * -EINVAL.
 */
int mpq_lock_consistent(struct mpq_lock *l);

/* 1 if anyone holds it (mpq_lock_locked) or this thread does (_owned). */
int mpq_lock_locked(struct mpq_lock *l);
int mpq_lock_owned(struct mpq_lock *l);

/*
 * Free this process's handle. A lock the calling thread holds is released
 * as if it had died (the next acquirer gets -EOWNERDEAD). Do not free a
 * lock that another thread of this process holds. The lock of a Condition
 * or a Value belongs to it: freeing that handle does nothing.
 */
void mpq_lock_free(struct mpq_lock *l);

/*
 * Handles for spawned children, as for queues: export writes
 * "mpq-lock:fd=N" (or mpq-rlock) and makes the fd inheritable; import
 * opens it in the child. Returns the length, or 0; -EINVAL (not a handle
 * of a lock, or a Condition's or Value's lock), -ERANGE, -EBADF,
 * -EUCLEAN, -ENOMEM.
 */
int mpq_lock_export(struct mpq_lock *l, char *buf, size_t len);
int mpq_lock_import(struct mpq_lock **out, const char *handle);

/* 1 if this thread can have its locks released at its death, else 0. */
int mpq_robust_supported(void);

/*
 * Condition: Python's multiprocessing.Condition. Its lock is lock, which
 * the caller keeps alive, or (lock NULL) an RLock of its own in the same
 * shared memory (mpq_cond_get_lock() returns it). wait, wait_for and
 * notify need the caller to hold the lock (-EPERM otherwise: Python's
 * RuntimeError). attr may be NULL.
 */
struct mpq_cond;

int mpq_cond_new(struct mpq_cond **out, struct mpq_lock *lock,
		 const struct mpq_lock_attr *attr);
struct mpq_lock *mpq_cond_get_lock(struct mpq_cond *c);
/* The lock's acquire and release (Python's "with cond:"). */
int mpq_cond_acquire(struct mpq_cond *c, int64_t timeout_ns);
int mpq_cond_release(struct mpq_cond *c);

/*
 * Release the lock (every level of an RLock), sleep until notified or
 * timeout_ns passes, take the lock back. Returns 0 (notified; as with
 * pthread_cond_wait, a notify may also release a waiter it was not meant
 * for: loop on the condition, or use wait_for), -ETIMEDOUT (Python's
 * False), -EOWNERDEAD (the lock's holder died meanwhile: the lock is held
 * all the same), -EPERM, -EINVAL.
 */
int mpq_cond_wait(struct mpq_cond *c, int64_t timeout_ns);

/*
 * Wait until pred(arg) returns non-zero, checking it first and after each
 * wake-up, under the lock. Returns 0 (it holds), -ETIMEDOUT (it still
 * does not), or what mpq_cond_wait returns.
 */
int mpq_cond_wait_for(struct mpq_cond *c, int (*pred)(void *arg), void *arg,
		      int64_t timeout_ns);

/* Wake up to n waiters, or all of them. Returns 0, -EPERM, -EINVAL. */
int mpq_cond_notify(struct mpq_cond *c, int n);
int mpq_cond_notify_all(struct mpq_cond *c);

void mpq_cond_free(struct mpq_cond *c);
/* A condition with a lock of the caller's is imported with that lock. */
int mpq_cond_export(struct mpq_cond *c, char *buf, size_t len);
int mpq_cond_import(struct mpq_cond **out, const char *handle,
		    struct mpq_lock *lock);

/*
 * Semaphore and BoundedSemaphore (value up to 2^31 - 1). A bounded one's
 * release beyond its initial value is -EINVAL (Python's ValueError); an
 * unbounded one's beyond 2^31 - 1 is -EOVERFLOW. acquire waits up to
 * timeout_ns: 0, -EAGAIN (timeout_ns == 0), -ETIMEDOUT.
 */
struct mpq_sem;

int mpq_sem_new(struct mpq_sem **out, unsigned int value,
		const struct mpq_lock_attr *attr);
int mpq_bounded_sem_new(struct mpq_sem **out, unsigned int value,
			const struct mpq_lock_attr *attr);
int mpq_sem_acquire(struct mpq_sem *s, int64_t timeout_ns);
int mpq_sem_release(struct mpq_sem *s);
int mpq_sem_get_value(struct mpq_sem *s);
void mpq_sem_free(struct mpq_sem *s);
int mpq_sem_export(struct mpq_sem *s, char *buf, size_t len);
int mpq_sem_import(struct mpq_sem **out, const char *handle);

/*
 * Event. wait returns 0 once the flag is set, or was set at any moment
 * since the wait began (a clear right after a set does not take it back,
 * as in Python); -ETIMEDOUT (Python's False) if timeout_ns passes first,
 * -EAGAIN at once with timeout_ns 0 and the flag clear. is_set returns 1
 * or 0.
 */
struct mpq_event;

int mpq_event_new(struct mpq_event **out, const struct mpq_lock_attr *attr);
int mpq_event_set(struct mpq_event *e);
int mpq_event_clear(struct mpq_event *e);
int mpq_event_is_set(struct mpq_event *e);
int mpq_event_wait(struct mpq_event *e, int64_t timeout_ns);
void mpq_event_free(struct mpq_event *e);
int mpq_event_export(struct mpq_event *e, char *buf, size_t len);
int mpq_event_import(struct mpq_event **out, const char *handle);

/*
 * Barrier for parties processes or threads (1 to 32767). action, if not
 * NULL, is run by the last party to arrive before any party is released;
 * it belongs to this handle (a function pointer means nothing in another
 * program image: each process gives its own at new or import), and it
 * returns 0 or a negative errno.
 *
 * wait returns the party's arrival index (0 to parties - 1, different for
 * each), or -ECANCELED (Python's BrokenBarrierError: the barrier is or
 * became broken), -ETIMEDOUT (this wait timed out: that breaks the barrier
 * for the others, as in Python; unless it timed out before it could even
 * arrive, the round being full of parties still on their way out), the
 * action's error for the party that ran it (the others get -ECANCELED),
 * -EINVAL. A party that dies inside wait
 * breaks the barrier: the others are woken at once (with more than 64
 * parties, within a tenth of a second). Broken stays broken until reset.
 */
struct mpq_barrier;

int mpq_barrier_new(struct mpq_barrier **out, unsigned int parties,
		    int (*action)(void *arg), void *arg,
		    const struct mpq_lock_attr *attr);
int mpq_barrier_wait(struct mpq_barrier *b, int64_t timeout_ns);
/* Break it: waiting and future calls get -ECANCELED until reset. */
int mpq_barrier_abort(struct mpq_barrier *b);
/* Empty and unbroken again; parties waiting now get -ECANCELED. */
int mpq_barrier_reset(struct mpq_barrier *b);
int mpq_barrier_parties(struct mpq_barrier *b);
int mpq_barrier_n_waiting(struct mpq_barrier *b);
int mpq_barrier_broken(struct mpq_barrier *b);
void mpq_barrier_free(struct mpq_barrier *b);
int mpq_barrier_export(struct mpq_barrier *b, char *buf, size_t len);
int mpq_barrier_import(struct mpq_barrier **out, const char *handle,
		       int (*action)(void *arg), void *arg);

/*
 * Shared state: Python's Value and Array (RawValue and RawArray with
 * MPQ_VALUE_RAW). A value is size bytes, an array count elements of
 * elem_size bytes each, zeroed, in shared memory that forked children
 * inherit. By default it comes with an RLock of its own (get_lock); a
 * lock of the caller's may be given instead, or none (raw).
 */
struct mpq_value;

#define MPQ_VALUE_RAW		(1U << 0)	/* no lock */

struct mpq_value_attr {
	struct mpq_lock *lock;	/* NULL: an RLock of its own (or none, raw) */
	int32_t backend;	/* enum mpq_backend */
	uint32_t flags;		/* MPQ_VALUE_RAW */
	int64_t spin_ns;	/* for its own lock, as in mpq_lock_attr */
	uint64_t __reserved[4];
};

/*
 * Returns 0, -EINVAL (size or count 0 or over 2^32 - 1, bad attr), -E2BIG
 * (over 1 GiB in all), -ENODEV, -ENOMEM, -EMFILE.
 */
int mpq_value_new(struct mpq_value **out, size_t size,
		  const struct mpq_value_attr *attr);
int mpq_array_new(struct mpq_value **out, size_t elem_size, size_t count,
		  const struct mpq_value_attr *attr);
/* The data, to use under the lock; its size in bytes; elements. */
void *mpq_value_ptr(struct mpq_value *v);
size_t mpq_value_size(struct mpq_value *v);
long mpq_array_len(struct mpq_value *v);
/* The lock (its own or the caller's), or NULL for a raw value. */
struct mpq_lock *mpq_value_get_lock(struct mpq_value *v);
/*
 * Copy the whole value, or element i, out or in, under the lock if there
 * is one. Returns 0, -EOWNERDEAD (copied; a holder of the lock died and
 * the data may be half-written), -ERANGE (i too large), -EDEADLK (the
 * caller holds the value's lock, and it is a Lock of its own, not an
 * RLock), -EINVAL.
 */
int mpq_value_get(struct mpq_value *v, void *out);
int mpq_value_set(struct mpq_value *v, const void *in);
int mpq_array_get(struct mpq_value *v, size_t i, void *out);
int mpq_array_set(struct mpq_value *v, size_t i, const void *in);
void mpq_value_free(struct mpq_value *v);
/*
 * A value made with a lock of the caller's is imported with that lock
 * (-EINVAL without one); any other with lock NULL (-EINVAL with one).
 */
int mpq_value_export(struct mpq_value *v, char *buf, size_t len);
int mpq_value_import(struct mpq_value **out, const char *handle,
		     struct mpq_lock *lock);

/*
 * SharedMemory: a named block of bytes that unrelated processes attach to
 * by name (Python's multiprocessing.shared_memory.SharedMemory).
 *
 * With the module (MPQ_BACKEND_KMOD) the name lives in the kernel, in the
 * caller's IPC namespace; the block is owned by the creator's user and
 * group and opened only with read and write permission by its mode (as a
 * file: -EACCES otherwise); and it is freed when the last process using it
 * closes it or dies, creator included, unless MPQ_SHM_ATTR_PERSIST keeps
 * it until unlinked. Without the module it is /dev/shm/<name>, which lives
 * until unlinked whatever happens (as in Python).
 */
struct mpq_shm;

#define MPQ_SHM_ATTR_PERSIST	(1U << 0)	/* live until unlinked */

struct mpq_shm_attr {
	int32_t backend;	/* enum mpq_backend */
	uint32_t flags;		/* MPQ_SHM_ATTR_PERSIST (creation only) */
	uint32_t mode;		/* permission bits at creation, less the
				   umask; 0 means 0600 */
	uint32_t __pad;
	uint64_t __reserved[4];
};

/*
 * Create a block of size bytes (zeroed), named name, or (name NULL) a new
 * random name ("mpq_<hex>") that mpq_shm_name() returns. Returns 0,
 * -EEXIST, -EINVAL (name empty or with '/', size 0), -ENAMETOOLONG (over
 * 255 bytes), -E2BIG (over 1 GiB), -EACCES, -ENODEV, -EDQUOT (the
 * module's per-user budget of bytes, objects or persistent names is
 * spent), -ENOMEM, -EMFILE.
 */
int mpq_shm_new(struct mpq_shm **out, const char *name, size_t size,
		const struct mpq_shm_attr *attr);
/*
 * Attach to an existing block: 0, -ENOENT, -EACCES, and the above; without
 * the module also -EAGAIN while its creator is still giving it its size.
 */
int mpq_shm_open(struct mpq_shm **out, const char *name,
		 const struct mpq_shm_attr *attr);
/* The bytes (NULL once closed), their size, the name. */
void *mpq_shm_buf(struct mpq_shm *s);
size_t mpq_shm_size(struct mpq_shm *s);
const char *mpq_shm_name(struct mpq_shm *s);
int mpq_shm_fileno(struct mpq_shm *s);
/* Unmap it in this process (buf is gone); -EBADF if closed already. */
int mpq_shm_close(struct mpq_shm *s);
/*
 * Remove the name: attaching by it fails from now on, and the block lives
 * while it is used. Only the owner may (-EPERM). Returns 0, -ENOENT.
 */
int mpq_shm_unlink(struct mpq_shm *s);
int mpq_shm_unlink_name(const char *name, int backend);
/* Close if open, and free the handle. */
void mpq_shm_free(struct mpq_shm *s);

/*
 * Pool: Python's multiprocessing.Pool. A set of worker processes runs
 * task functions on byte arguments and sends their byte results back;
 * apply, map, imap and starmap hand out the work, AsyncResult objects and
 * imap iterators give the results. What Python's Pool cannot do, this
 * one does: a worker killed (SIGKILL) or crashing (SIGSEGV) in the middle
 * of a task is noticed at once, replaced, and only the task it was running
 * fails (-EOWNERDEAD, or it is run once more if the pool was made with
 * MPQ_POOL_RETRY_ONCE); every other task completes and no wait hangs.
 *
 * Each worker has channels of its own to the pool (a pipe for tasks and
 * results, a small shared record of what it is running, a socket that
 * moves large values as memfds): no other process can wedge them, and the
 * pool knows exactly which tasks a dead worker held. The pool's handler
 * thread runs an io_uring loop over those channels and the workers'
 * pidfds; callbacks run on that thread.
 *
 * A pool belongs to the process that made it: in another process (a
 * forked child holding a copy) its calls give -ECHILD. After close, new
 * work gives -EBADF.
 */
struct mpq_pool;
struct mpq_async_result;
struct mpq_pool_iter;
/* A task that runs in a worker: where its value or error goes. */
struct mpq_task;

/*
 * A task function: runs in a worker on arg (len bytes, 8-byte aligned, in
 * memory that lives until it returns). It gives its value with
 * mpq_task_return() (or writes it into mpq_task_result_buf()) and returns
 * 0; a task that returns 0 without a value gives an empty one (0 bytes).
 * Any other return is a failure: a negative errno or a code of the
 * program's own (a positive code c is reported as -c), with a message
 * from mpq_task_error() if it gave one. The code and message reach get(),
 * the error callback and the imap iterator.
 */
typedef int (*mpq_task_fn)(const void *arg, size_t len, struct mpq_task *t);

/*
 * Register fn as a task under name (at most 255 bytes; copied), for
 * pools whose workers are spawned: a spawned worker is a fresh copy of
 * the program and finds the function by its name, as spawn finds a
 * target. Forked workers need no registration. MPQ_TASK() registers from
 * a constructor. Registering the same name and function again is
 * harmless. Returns 0, -EINVAL (NULL, empty or too long name, NULL fn),
 * -EEXIST (the name is taken by another function), -ENOMEM.
 */
int mpq_register_task(const char *name, mpq_task_fn fn);

#define MPQ_TASK(fn)							\
	static void __attribute__((constructor(101)))			\
	__mpq_register_task_##fn(void)					\
	{								\
		mpq_register_task(#fn, fn);				\
	}								\
	struct __mpq_task_##fn##_needs_a_semicolon

/*
 * In a task: give value (len bytes, copied) as the task's result. Values
 * up to 64 KiB travel through the worker's pipe; larger ones are written
 * into a memfd that the pool maps as it is (no copy on the way back).
 * Returns 0, -EALREADY (a value was given already), -EINVAL, -ENOMEM.
 */
int mpq_task_return(struct mpq_task *t, const void *value, size_t len);

/*
 * In a task: *buf gets room for a len-byte value that the task writes in
 * place, and that becomes its result (zero-copy for large values: the
 * room is the memfd the pool maps). Valid until the task returns.
 * Returns 0, -EALREADY, -EINVAL, -ENOMEM.
 */
int mpq_task_result_buf(struct mpq_task *t, size_t len, void **buf);

/*
 * In a task: fail with code (a negative errno, or -c for a positive c)
 * and a message (printf format; cut at 1 KiB). Returns that code, so
 *	return mpq_task_error(t, -EINVAL, "want 8 bytes, got %zu", len);
 * ends the task with it. A value given before is dropped.
 */
int mpq_task_error(struct mpq_task *t, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * starmap's arguments: a tuple of byte strings packed into one argument.
 * mpq_args_pack() writes argv[0..argc) into buf (len bytes of room) and
 * returns the packed length, or -ERANGE with nothing written if it needs
 * more (call with buf NULL, len 0 to learn the size), -EINVAL.
 * mpq_task_args() unpacks an argument into argv[0..max) (pointers into
 * arg, 8-byte aligned) and returns the count of strings, which may be
 * more than max, or -EINVAL if arg is not a packed tuple.
 */
ssize_t mpq_args_pack(void *buf, size_t len, const struct iovec *argv,
		      unsigned int argc);
int mpq_task_args(const void *arg, size_t len, struct iovec *argv,
		  unsigned int max);

/*
 * A task's loop over a run of fixed-size arguments: for k in [0, n), the
 * value of the argument at in + k * in_stride goes to out + k * out_size,
 * and *done is raised by one (a release store) once it is there. A worker
 * that dies inside the loop leaves *done saying which item it was in.
 * MPQ_TASK_VALUE() writes and registers one for its task; a worker of
 * mpq_pool_map_values() then runs whole segments through it instead of
 * calling the task once per item.
 */
typedef void (*mpq_task_loop_fn)(const void *in, size_t in_stride, void *out,
				 size_t n, uint32_t *done);

/*
 * Register loop as task fn's loop over in_size-byte arguments (at most 4
 * KiB) giving out_size-byte values (at most 256: values that travel
 * packed). A task has at most one; registering the same again is
 * harmless. Returns 0, -EINVAL, -EEXIST (fn has another), -ENOMEM.
 */
int mpq_register_task_loop(mpq_task_fn fn, mpq_task_loop_fn loop,
			   size_t in_size, size_t out_size);

/*
 * Fixed-size C values: MPQ_TASK_VALUE(square, int64_t, int64_t) wraps
 *	static int64_t square(int64_t x);
 * into a task named square_task (registered under that name) that takes
 * one in_type and returns one out_type, for mpq_pool_map_values(), and a
 * loop over many (mpq_register_task_loop()), in which square is inlined:
 * a map of a cheap function costs its calls, not a task per item. An
 * argument of another size fails with -EINVAL.
 */
#define MPQ_TASK_VALUE(fn, in_type, out_type)				\
	static int fn##_task(const void *arg, size_t len,		\
			     struct mpq_task *t)			\
	{								\
		in_type in_;						\
		out_type out_;						\
									\
		if (len != sizeof(in_))					\
			return mpq_task_error(t, -EINVAL, "%s: %zu "	\
					      "bytes, not %zu", #fn,	\
					      len, sizeof(in_));	\
		__builtin_memcpy(&in_, arg, sizeof(in_));		\
		out_ = fn(in_);						\
		return mpq_task_return(t, &out_, sizeof(out_));	\
	}								\
	static void fn##_task_loop(const void *in, size_t in_stride,	\
				   void *out, size_t n, uint32_t *done)	\
	{								\
		const unsigned char *i_ = (const unsigned char *)in;	\
		unsigned char *o_ = (unsigned char *)out;		\
		size_t k_;						\
									\
		for (k_ = 0; k_ < n; k_++) {				\
			in_type in_;					\
			out_type out_;					\
									\
			__builtin_memcpy(&in_, i_ + k_ * in_stride,	\
					 sizeof(in_));			\
			out_ = fn(in_);					\
			__builtin_memcpy(o_ + k_ * sizeof(out_), &out_,	\
					 sizeof(out_));			\
			__atomic_store_n(done, *done + 1,		\
					 __ATOMIC_RELEASE);		\
		}							\
	}								\
	static void __attribute__((constructor(102)))			\
	__mpq_register_task_loop_##fn(void)				\
	{								\
		mpq_register_task_loop(fn##_task, fn##_task_loop,	\
				       sizeof(in_type), sizeof(out_type)); \
	}								\
	MPQ_TASK(fn##_task)

/* Pool flags. */
enum {
	/*
	 * A task whose worker died while running it is run once more, on
	 * another worker; it fails (-EOWNERDEAD) only if that one dies too.
	 * Only for tasks that can safely run twice.
	 */
	MPQ_POOL_RETRY_ONCE	= 1U << 0,
};

/*
 * A pool whose tasks go out through a Manager (libmpq-net, mpq_net.h) to
 * workers on any machine: the local ones the pool starts (processes of
 * them, forked, unless MPQ_POOL_REMOTE_ONLY) and every copy of the
 * program started with --mpq-worker=ADDRESS (or MPQ_WORKER=ADDRESS) that
 * joins. Tasks travel by name (MPQ_TASK) with leases: a task whose worker
 * dies or is cut off runs again after its lease. See mpq_pool_remote(3).
 */
struct mpq_manager;

enum {
	MPQ_POOL_REMOTE_ONLY	= 1U << 0,	/* no local workers */
};

struct mpq_pool_remote {
	struct mpq_manager *manager;	/* mpq_manager_start/connect's */
	const char *name;	/* the pool's name on the manager, what its
				   workers are given (MPQ_WORKER_POOL);
				   NULL: "pool" */
	int64_t lease_ns;	/* a task's lease, renewed while it runs;
				   0: 10 s */
	uint32_t max_deliveries; /* deliveries before -EOWNERDEAD; 0: 3 */
	uint32_t flags;		/* MPQ_POOL_REMOTE_ONLY */
	uint64_t __reserved[4];
};

/* Zero-initialise; zero means the default; reserved fields must be 0. */
struct mpq_pool_attr {
	int32_t processes;	/* workers: 0 means mpq_cpu_count() */
	int32_t start_method;	/* enum mpq_start_method: fork, spawn or
				   forkserver (tasks by name, as spawn) */
	/*
	 * Run in each worker before its first task, as initializer(initarg)
	 * (copied; spawn or a manager: registered with MPQ_TARGET). It
	 * returns 0, or a negative errno: the worker is tried again, and
	 * three failures in a row fail mpq_pool_new() (or, in every worker's
	 * place, the work waiting while no worker is ready) with that code;
	 * with a manager, see mpq_pool_remote(3).
	 */
	mpq_target_fn initializer;
	const void *initarg;
	size_t initarg_len;
	uint32_t maxtasksperchild;	/* 0: workers live as long as the
					   pool; n: a worker is replaced
					   after n tasks (a map chunk is one
					   task), as in Python */
	uint32_t flags;		/* MPQ_POOL_RETRY_ONCE */
	int32_t backend;	/* enum mpq_backend of the workers' pipes */
	uint32_t __pad;
	/* Since 0.3: workers on many machines, see mpq_pool_remote(3). */
	const struct mpq_pool_remote *remote;
	uint64_t __reserved[3];
};

/*
 * Make a pool and start its workers; returns once every worker has run
 * its initializer. attr may be NULL for all defaults. Workers are daemon
 * processes named ForkPoolWorker-N or SpawnPoolWorker-N.
 * Returns 0, -EINVAL (bad attr; processes < 0 or > 1024), -ENOENT (spawn:
 * initializer not registered), the initializer's error, -ECHILD (a worker
 * died before it was ready), -EPERM (the caller is a daemon process),
 * -ENODEV (kmod backend asked for, no /dev/mpq), and what making pipes,
 * processes and threads returns (-ENOMEM, -EMFILE, -EAGAIN).
 */
int mpq_pool_new(struct mpq_pool **out, const struct mpq_pool_attr *attr);

/*
 * Called once per async call, on the pool's handler thread: callback when
 * every item succeeded, else error_callback with the first failed item's
 * code and message (the lowest index; Python reports the first to
 * arrive). Never both; exactly one, also when the pool is terminated
 * (-ECANCELED). The result is complete then (its values may be read) but
 * not yet ready for waiters: ready, get and wait say so once the callback
 * has returned. A callback must not block: it holds up every other
 * result. It may submit work, but not wait for this pool's results
 * (-EDEADLK).
 */
struct mpq_pool_callbacks {
	void (*callback)(struct mpq_async_result *r, void *data);
	void (*error_callback)(struct mpq_async_result *r, int err,
			       const char *msg, void *data);
	void *data;
};

/*
 * apply_async: run fn(arg) on some worker. arg is copied. *out gets the
 * result object (free it with mpq_async_result_free); out may be NULL for
 * fire-and-forget (the callbacks still run). cb may be NULL.
 * Returns 0, -EBADF (closed or terminated), -EINVAL, -ENOENT (spawn: fn
 * not registered), -ECHILD (not the pool's process), -ENOMEM.
 */
int mpq_pool_apply_async(struct mpq_pool *p, mpq_task_fn fn,
			 const void *arg, size_t len,
			 const struct mpq_pool_callbacks *cb,
			 struct mpq_async_result **out);

/*
 * apply: run fn(arg) and wait for it. *value gets the result in a buffer
 * from malloc() that the caller frees. Returns the value's length, the
 * task's error code, or what apply_async returns.
 */
ssize_t mpq_pool_apply(struct mpq_pool *p, mpq_task_fn fn, const void *arg,
		       size_t len, void **value);

/*
 * map_async: fn over args[0..n), in chunks of chunksize items (0: Python's
 * default, n / (4 * processes) rounded up). The iovec array and the bytes
 * it points to are not copied: they must stay valid until the result is
 * ready. Results keep the order of args. *out as for apply_async.
 * Returns 0 or what apply_async returns.
 *
 * map: the same, waiting for it. Returns 0, the first failed item's code
 * (its index the lowest), or what map_async returns. *out (not NULL) gets
 * the result whenever the map ran, also when an item failed, so that
 * every item's value or error can be read; it is NULL otherwise.
 */
int mpq_pool_map_async(struct mpq_pool *p, mpq_task_fn fn,
		       const struct iovec *args, size_t n, size_t chunksize,
		       const struct mpq_pool_callbacks *cb,
		       struct mpq_async_result **out);
int mpq_pool_map(struct mpq_pool *p, mpq_task_fn fn,
		 const struct iovec *args, size_t n, size_t chunksize,
		 struct mpq_async_result **out);

/*
 * starmap: item i's arguments are args[i * argc .. i * argc + argc),
 * packed as a tuple (mpq_args_pack) that the task unpacks with
 * mpq_task_args(). Otherwise as map and map_async.
 */
int mpq_pool_starmap_async(struct mpq_pool *p, mpq_task_fn fn,
			   const struct iovec *args, unsigned int argc,
			   size_t n, size_t chunksize,
			   const struct mpq_pool_callbacks *cb,
			   struct mpq_async_result **out);
int mpq_pool_starmap(struct mpq_pool *p, mpq_task_fn fn,
		     const struct iovec *args, unsigned int argc, size_t n,
		     size_t chunksize, struct mpq_async_result **out);

/*
 * map for fixed-size C values: in holds n values of in_size bytes, out
 * gets n values of out_size bytes (fn must return exactly that many, else
 * that item fails with -EMSGSIZE). Waits. Returns 0, or the first failed
 * item's code (its out value is left as it was), or what map_async
 * returns. See MPQ_TASK_VALUE().
 */
int mpq_pool_map_values(struct mpq_pool *p, mpq_task_fn fn, const void *in,
			size_t in_size, void *out, size_t out_size, size_t n,
			size_t chunksize);

/*
 * imap and imap_unordered: fn over args[0..n) (chunksize 0 means 1, as in
 * Python), with an iterator that yields each result as soon as it (imap:
 * and every one before it) is there. args as for map_async.
 * Returns 0, or what map_async returns.
 */
int mpq_pool_imap(struct mpq_pool *p, mpq_task_fn fn,
		  const struct iovec *args, size_t n, size_t chunksize,
		  struct mpq_pool_iter **out);
int mpq_pool_imap_unordered(struct mpq_pool *p, mpq_task_fn fn,
			    const struct iovec *args, size_t n,
			    size_t chunksize, struct mpq_pool_iter **out);

/*
 * The next result, waiting up to timeout_ns. Returns 1 with *value, *len
 * (valid until the iterator is freed) and *index (the item's position in
 * args; may be NULL) set; 0 when every result has been returned
 * (StopIteration); the item's error code if it failed (*index set; the
 * next call goes on with the next item); -EAGAIN or -ETIMEDOUT (nothing
 * yet: *index is set to SIZE_MAX), -EINVAL, -EDEADLK. value and len may
 * be NULL.
 */
int mpq_pool_iter_next(struct mpq_pool_iter *it, int64_t timeout_ns,
		       const void **value, size_t *len, size_t *index);

/* Free an iterator; the work it stands for goes on. */
void mpq_pool_iter_free(struct mpq_pool_iter *it);

/*
 * AsyncResult. get waits up to timeout_ns and returns 0, or the task's
 * error (map: the first failed item's), or -EAGAIN (not ready and
 * timeout_ns == 0), -ETIMEDOUT, -EDEADLK (from a callback of its pool),
 * -EINVAL. A task's own code may be -ETIMEDOUT too: ready() tells.
 * wait returns 0 once ready, -EAGAIN, -ETIMEDOUT, -EDEADLK, -EINVAL.
 * ready: 1 or 0. successful: 1 or 0 once ready, -EAGAIN before.
 */
int mpq_async_result_get(struct mpq_async_result *r, int64_t timeout_ns);
int mpq_async_result_wait(struct mpq_async_result *r, int64_t timeout_ns);
int mpq_async_result_ready(struct mpq_async_result *r);
int mpq_async_result_successful(struct mpq_async_result *r);

/* Items in the result: 1 for apply, n for map. -EINVAL for NULL. */
ssize_t mpq_async_result_count(struct mpq_async_result *r);

/*
 * Item i of a complete result (ready, or in its callback): 0 with its
 * value in *value, *len (owned by r, 8-byte aligned, valid until r is
 * freed), or its error code (*value NULL, *len 0). -EAGAIN before the
 * result is complete, -ERANGE for i out of range, -EINVAL. value and len
 * may be NULL.
 */
int mpq_async_result_value(struct mpq_async_result *r, size_t i,
			   const void **value, size_t *len);

/*
 * Item i's error code (0 if it succeeded) and message (a string owned by
 * r; "" if it succeeded): the task's message, or one the pool wrote, such
 * as "ForkPoolWorker-3 (pid 1234) was killed by signal 9 (SIGKILL)
 * running this task". -EAGAIN, -ERANGE, -EINVAL as for value.
 */
int mpq_async_result_error(struct mpq_async_result *r, size_t i,
			   const char **msg);

/*
 * Free the result. Work still running goes on (and its callbacks run);
 * what it gives is dropped.
 */
void mpq_async_result_free(struct mpq_async_result *r);

/*
 * close: no new work (it gives -EBADF); the work submitted is finished,
 * then the workers exit. terminate: stop now: the workers are sent
 * SIGTERM (SIGKILL a second later if still alive), everything not
 * finished fails with -ECANCELED, and the call returns once the workers
 * are gone. Both return 0, -EINVAL, -ECHILD.
 * join: after close or terminate, wait up to timeout_ns for all the work
 * and the workers to end. Returns 0, -EINVAL (the pool is still
 * running), -ETIMEDOUT, -EAGAIN, -EDEADLK (from a callback), -ECHILD.
 */
int mpq_pool_close(struct mpq_pool *p);
int mpq_pool_terminate(struct mpq_pool *p);
int mpq_pool_join(struct mpq_pool *p, int64_t timeout_ns);

/*
 * Free the pool: a pool still running is terminated first (work in
 * flight fails with -ECANCELED) and joined. Results and iterators stay
 * valid until they are freed. In a process other than the pool's, only
 * this process's copies of its fds and memory are released.
 */
void mpq_pool_free(struct mpq_pool *p);

/*
 * Since 0.3 (MPQ_0.3): the forkserver start method, a barrier's default
 * timeout, and which backend is the default.
 *
 * MPQ_START_FORKSERVER: Python's forkserver. A server process, the
 * program executed again as a spawned child is (its main() calls
 * mpq_init(), which serves there and never returns), forks each child on
 * request: a program with threads gets children as cheap as fork's
 * without forking itself. What spawn needs, it needs: targets registered
 * by name before mpq_init(), objects passed as export handles (their fds
 * reach the child at the numbers the handles name, whenever they were
 * exported). The child's mpq_parent_process() is the process that started
 * it; its getppid(2) is the server. Its pid, exit code, signals and
 * sentinel (a pidfd) are as with the other methods.
 *
 * The server starts at the first forkserver start, or earlier with
 * mpq_forkserver_start(): call it at the top of main() to pay for the
 * execve there rather than in the first start (starting it later is safe
 * too, threads or not, since it is executed, not forked). It ends when
 * the process that started it does (it watches that process's pidfd and
 * its socket: not PR_SET_PDEATHSIG, which fires when the starting
 * *thread* ends); before it exits it sends its daemon children SIGTERM,
 * so that they die with their parent, killed or not, as forked daemons do.
 * A server that died (killed) is replaced by a new one at the next start;
 * a child whose server died before the child was told to run never runs
 * its target, and the start is asked once more of a new server. A child
 * that was running goes on (as in Python); its exit status went with the
 * server, so it ends with exitcode -ECHILD. A forked child of the program
 * starts its own server if it uses the method.
 * mpq_forkserver_start returns 0 (running), -EPROTO (called in a spawned
 * child or server whose main() skipped mpq_init()), -ESRCH (the server
 * ended before it was ready: main() does not call mpq_init()?), execve's
 * error, -ENOMEM, -EMFILE. mpq_process_start with the method also returns
 * -ESRCH (64 servers in a row were killed before the child ran), -ENOENT (target not registered
 * in the server: register before mpq_init()), -EMFILE (more than 250
 * exported fds).
 */
int mpq_forkserver_start(void);
/* The server's pid, or -ESRCH if this process has none running. */
pid_t mpq_forkserver_pid(void);

/*
 * The backend objects get with MPQ_BACKEND_DEFAULT, and why: returns
 * MPQ_BACKEND_KMOD or MPQ_BACKEND_MEMFD, -EINVAL (MPQ_BACKEND names
 * neither) or -ENODEV (MPQ_BACKEND=kmod, and /dev/mpq is absent: the
 * module is not loaded; objects then fail with -ENODEV, never fall back
 * to memfd). *why (if why is not NULL) gets a static sentence naming the
 * reason: the environment variable, or whether /dev/mpq exists.
 */
int mpq_backend_default(const char **why);

/*
 * Python's Barrier(parties, action, timeout): timeout_ns (>= 0, or
 * MPQ_FOREVER: none) is the barrier's default timeout, which
 * mpq_barrier_wait() uses when given MPQ_BARRIER_DEFAULT_TIMEOUT. It
 * belongs to the barrier, not the handle: a process that imports it gets
 * it too. mpq_barrier_new() is this call with MPQ_FOREVER. Other
 * negative timeouts are -EINVAL; otherwise as mpq_barrier_new().
 */
#define MPQ_BARRIER_DEFAULT_TIMEOUT	((int64_t)-2)
int mpq_barrier_new_timeout(struct mpq_barrier **out, unsigned int parties,
			    int (*action)(void *arg), void *arg,
			    int64_t timeout_ns,
			    const struct mpq_lock_attr *attr);

#ifdef __cplusplus
}
#endif

#endif /* MPQ_H */
