// SPDX-License-Identifier: MIT
/*
 * mpq_process: Python's multiprocessing.Process, on fork(2) and pidfds.
 *
 * A started child is tracked by a pidfd (pidfd_open(2), Linux 5.3): it is
 * the sentinel users poll, what join sleeps on, what signals are sent
 * through (a recycled pid is never hit) and what waitid(P_PIDFD) reaps.
 * Without pidfds (an old kernel, or a seccomp filter that refuses the
 * call) the sentinel is a pipe whose write end only the child holds, as
 * in Python's fork start method, and children are reaped by pid.
 *
 * The library keeps the running children of this process in one list,
 * for mpq_active_children() and for the exit handler, which does what
 * Python's does: terminate the daemons, join the rest. The list and the
 * rest of the library's process state are guarded by one mutex that is
 * held across every fork(2) (pthread_atfork), so a child never inherits it
 * held, whichever thread forks. Nothing blocks while holding it: join
 * sleeps in ppoll() on the sentinel and takes the lock only to reap.
 *
 * The spawn start method (re-executing the program) is in spawn.c; both
 * methods share the launch steps here (mpq_launch_*). The forkserver
 * method is in forkserver.c: its children are the server's, not ours, so
 * they are reaped by the server, which sends the exit status on a socket
 * (fs_status) that this side reads instead of calling waitid(2).
 */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

#define MPQ_PROC_MAGIC		0x6d707150U	/* "mpqP" */
#define MPQ_PROC_DETACHED	0x6d707144U	/* "mpqD": freed, still running */
/* How long exit waits for terminated daemons before it kills them. */
#define MPQ_DAEMON_GRACE_NS	1000000000LL
/* Without a pidfd, join looks at the child this often at least. */
#define MPQ_POLL_SLICE_NS	20000000LL

static pthread_mutex_t mpq_lock_ = PTHREAD_MUTEX_INITIALIZER;
/* Children started by this process and not yet reaped (under the lock). */
static struct mpq_process *mpq_children;
/* How many processes this process has made: Process-N's N. */
static unsigned int mpq_counter;
/* Launches between their pipes' creation and the parent's close of them. */
static struct mpq_launch *mpq_launches;
/* This thread's launch in flight: the fork whose child may keep its fds. */
static __thread struct mpq_launch *mpq_my_launch;

static struct mpq_process mpq_main = {
	.magic = MPQ_PROC_MAGIC,
	.state = MPQ_PROC_STARTED,
	.sentinel = -1,
	.fs_status = -1,
	.name = "MainProcess",
	.identity = "",
};
/* Set only in a child libmpq started, while it is single-threaded. */
static struct mpq_process *mpq_self = &mpq_main;
static struct mpq_process mpq_parent = { .sentinel = -1, .fs_status = -1 };

enum mpq_role {
	MPQ_ROLE_CHILD,		/* a child of the caller */
	MPQ_ROLE_SELF,		/* the caller */
	MPQ_ROLE_PARENT,	/* the caller's parent */
	MPQ_ROLE_FOREIGN,	/* someone else's child: a copy from a fork */
};

void mpq_proc_lock(void)
{
	pthread_mutex_lock(&mpq_lock_);
}

void mpq_proc_unlock(void)
{
	pthread_mutex_unlock(&mpq_lock_);
}

/*
 * Hold the lock across fork(2): if another thread held it at the moment of
 * the fork, the child's copy would stay locked for good. The child also
 * drops the parent's list of children (they are its siblings), and closes
 * the pipe ends of other threads' launches in flight: a spawning parent
 * waits for its exec-error pipe to close, and a sentinel pipe is read
 * for its end of file, so a child that kept them would stall one or fool
 * the other for as long as it lives.
 */
static void mpq_atfork_prepare(void)
{
	pthread_mutex_lock(&mpq_lock_);
}

static void mpq_atfork_parent(void)
{
	pthread_mutex_unlock(&mpq_lock_);
}

static void mpq_atfork_child(void)
{
	struct mpq_launch *l;

	for (l = mpq_launches; l; l = l->next) {
		if (l == mpq_my_launch)
			continue;
		if (l->pipe[1] >= 0)
			close(l->pipe[1]);
		if (l->err[1] >= 0)
			close(l->err[1]);
	}
	mpq_launches = NULL;
	mpq_children = NULL;
	pthread_mutex_unlock(&mpq_lock_);
}

/*
 * Registered before main() (or at dlopen), so before any thread can hold
 * the lock: a fork can never find it held by a thread it does not copy.
 */
static void __attribute__((constructor)) mpq_process_setup(void)
{
	pthread_atfork(mpq_atfork_prepare, mpq_atfork_parent,
		       mpq_atfork_child);
}

static int mpq_pidfd_open(pid_t pid)
{
	int fd = (int)syscall(SYS_pidfd_open, pid, 0);

	return fd < 0 ? -errno : fd;
}

/* No pidfds here: an old kernel, or a seccomp filter (Docker's gave EPERM). */
static int mpq_no_pidfd(int err)
{
	return err == -ENOSYS || err == -EPERM;
}

static int mpq_proc_role(const struct mpq_process *p)
{
	if (p == mpq_self)
		return MPQ_ROLE_SELF;
	if (p == &mpq_parent)
		return MPQ_ROLE_PARENT;
	if (p->owner != getpid())
		return MPQ_ROLE_FOREIGN;
	return MPQ_ROLE_CHILD;
}

/* 0 for an object that can be used, else what every call then returns. */
static int mpq_proc_check(const struct mpq_process *p)
{
	if (!p)
		return -EINVAL;
	if (p->magic != MPQ_PROC_MAGIC || p->state == MPQ_PROC_CLOSED)
		return -EBADF;
	return 0;
}

static void mpq_children_unlink(struct mpq_process *p)
{
	struct mpq_process **pp;

	for (pp = &mpq_children; *pp; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	}
	p->next = NULL;
}

/* Release what an object holds besides its memory. */
static void mpq_proc_release(struct mpq_process *p)
{
	/* A fork server's child without a pidfd: one fd, both roles. */
	if (p->fs_status == p->sentinel)
		p->fs_status = -1;
	if (p->sentinel >= 0)
		close(p->sentinel);
	p->sentinel = -1;
	p->sentinel_err = -EBADF;
	free(p->arg);
	p->arg = NULL;
	p->arg_len = 0;
	free(p->keep_fds);
	p->keep_fds = NULL;
	p->nkeep_fds = 0;
	if (p->fs_status >= 0)
		close(p->fs_status);
	p->fs_status = -1;
}

static void mpq_proc_destroy(struct mpq_process *p)
{
	mpq_proc_release(p);
	p->magic = 0;
	free(p->name);
	free(p->identity);
	free(p);
}

/*
 * Collect p's exit status if it has ended, without waiting; a child that
 * has ended leaves the list. Called with the lock held, so that only one
 * thread reaps a child and the others see its state change once.
 * Returns 1 once p has ended, 0 while it runs.
 */
static int mpq_wait_readable(int fd, int64_t deadline, int64_t slice_ns);

/*
 * A fork server's child: the server reaps it and sends the status (its
 * exit code, or -signal) on fs_status. If the server ended first (EOF),
 * the status is lost: the child has ended once its pidfd says so (without
 * pidfds, once its pid is gone), with exitcode -ECHILD as for a child
 * reaped behind our back.
 */
static int mpq_reap_forkserver_locked(struct mpq_process *p)
{
	int32_t status;
	ssize_t n;

	if (!p->fs_eof) {
		/*
		 * ECONNRESET: the server closed S with the child's "go"
		 * unread (a child killed before it ran), told once, ahead
		 * of the status still queued.
		 */
		do {
			n = recv(p->fs_status, &status, sizeof(status),
				 MSG_DONTWAIT);
		} while (n < 0 && (errno == EINTR || errno == ECONNRESET));
		if (n == (ssize_t)sizeof(status)) {
			p->exitcode = status;
			goto ended;
		}
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		p->fs_eof = 1;	/* EOF, or a message that is not one */
	}
	if (p->has_pidfd ? !mpq_wait_readable(p->sentinel, 0, 0) :
	    kill(p->pid, 0) == 0 || errno != ESRCH)
		return 0;
	p->reap_err = -ECHILD;
ended:
	p->state = MPQ_PROC_ENDED;
	mpq_children_unlink(p);
	return 1;
}

static int mpq_reap_locked(struct mpq_process *p)
{
	siginfo_t si;
	int ret;

	if (p->state != MPQ_PROC_STARTED)
		return 1;
	if (p->start_method == MPQ_START_FORKSERVER)
		return mpq_reap_forkserver_locked(p);
	memset(&si, 0, sizeof(si));
	ret = -1;
	if (p->has_pidfd)
		ret = waitid(P_PIDFD, (id_t)p->sentinel, &si, WEXITED | WNOHANG);
	/* P_PIDFD came in 5.4, a release after pidfd_open. */
	if (!p->has_pidfd || (ret < 0 && errno == EINVAL))
		ret = waitid(P_PID, (id_t)p->pid, &si, WEXITED | WNOHANG);
	if (ret < 0) {
		/*
		 * ECHILD: reaped behind our back, the exit code is lost.
		 * Nothing else can fail with WNOHANG and a child of ours;
		 * were it to, calling it ended keeps join from spinning.
		 */
		p->reap_err = -errno;
	} else if (si.si_pid == 0) {
		return 0;
	} else if (si.si_code == CLD_EXITED) {
		p->exitcode = si.si_status;
	} else {
		p->exitcode = -si.si_status;	/* CLD_KILLED, CLD_DUMPED */
	}
	p->state = MPQ_PROC_ENDED;
	mpq_children_unlink(p);
	return 1;
}

static int mpq_reap(struct mpq_process *p)
{
	int ended;

	mpq_proc_lock();
	ended = mpq_reap_locked(p);
	mpq_proc_unlock();
	return ended;
}

/*
 * Sleep until fd is readable, the deadline passes (-1: never) or slice_ns
 * has gone by (<= 0: no slice). fd < 0 just sleeps. Returns 1 if fd is
 * readable, 0 otherwise; signals only shorten the sleep.
 */
static int mpq_wait_readable(int fd, int64_t deadline, int64_t slice_ns)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	int64_t left = -1, now;
	struct timespec ts;

	if (deadline >= 0) {
		now = mpq_now_ns();
		left = deadline > now ? deadline - now : 0;
	}
	if (slice_ns > 0 && (left < 0 || left > slice_ns))
		left = slice_ns;
	ts.tv_sec = left / 1000000000;
	ts.tv_nsec = left % 1000000000;
	if (ppoll(&pfd, fd >= 0, left < 0 ? NULL : &ts, NULL) <= 0)
		return 0;
	return !!(pfd.revents & (POLLIN | POLLHUP | POLLERR));
}

/* Has the deadline passed? timeout 0 answers -EAGAIN, others -ETIMEDOUT. */
static int mpq_timed_out(int64_t timeout_ns, int64_t deadline)
{
	if (timeout_ns == 0)
		return -EAGAIN;
	if (deadline >= 0 && mpq_now_ns() >= deadline)
		return -ETIMEDOUT;
	return 0;
}

/* Join a child of ours: sleep on its sentinel, reap it under the lock. */
static int mpq_join_child(struct mpq_process *p, int64_t timeout_ns)
{
	int64_t deadline = mpq_deadline(timeout_ns);
	int ret;

	for (;;) {
		if (mpq_reap(p))
			return 0;
		ret = mpq_timed_out(timeout_ns, deadline);
		if (ret)
			return ret;
		/*
		 * A pidfd is readable exactly when the child has ended. A
		 * pipe may stay open in the child's own children, and there
		 * may be no fd at all: look again every slice. A fork
		 * server's child is done when its status arrives.
		 */
		if (p->fs_status >= 0 && !p->fs_eof)
			mpq_wait_readable(p->fs_status, deadline, 0);
		else if (p->fs_status >= 0 && !p->has_pidfd)
			mpq_wait_readable(-1, deadline, MPQ_POLL_SLICE_NS);
		else
			mpq_wait_readable(p->sentinel, deadline,
					  p->has_pidfd ? 0 : MPQ_POLL_SLICE_NS);
	}
}

static int mpq_parent_alive(void)
{
	if (mpq_parent.sentinel >= 0)
		return !mpq_wait_readable(mpq_parent.sentinel, 0, 0);
	/* Without a pidfd: orphans are re-parented. */
	return getppid() == mpq_parent.pid;
}

/* Python's _ParentProcess.join: wait for the parent's sentinel. */
static int mpq_join_parent(int64_t timeout_ns)
{
	int64_t deadline = mpq_deadline(timeout_ns);
	int ret;

	for (;;) {
		if (!mpq_parent_alive())
			return 0;
		ret = mpq_timed_out(timeout_ns, deadline);
		if (ret)
			return ret;
		mpq_wait_readable(mpq_parent.sentinel, deadline,
				  mpq_parent.sentinel >= 0 ? 0 :
				  MPQ_POLL_SLICE_NS);
	}
}

/*
 * Signal a child unless it has been reaped. Under the lock, so that no
 * other thread reaps it in between: after the reap, its pid may be
 * someone else's. A zombie takes the signal harmlessly.
 */
static int mpq_signal_locked(struct mpq_process *p, int sig)
{
	int ret;

	if (p->state != MPQ_PROC_STARTED)
		return 0;
	if (p->has_pidfd)
		ret = (int)syscall(SYS_pidfd_send_signal, p->sentinel, sig,
				   NULL, 0);
	else
		ret = kill(p->pid, sig);
	return ret < 0 && errno != ESRCH ? -errno : 0;
}

static int mpq_proc_signal(struct mpq_process *p, int sig)
{
	int ret;

	mpq_proc_lock();
	ret = mpq_signal_locked(p, sig);
	mpq_proc_unlock();
	return ret;
}

/* The first child in the list, daemon or not as asked. */
static struct mpq_process *mpq_first_child(int daemons)
{
	struct mpq_process *p;

	mpq_proc_lock();
	for (p = mpq_children; p; p = p->next)
		if (daemons || !p->daemon)
			break;
	mpq_proc_unlock();
	return p;
}

/*
 * Python's _exit_function, for the caller's own children: terminate the
 * daemons, join the others, then give the daemons what is left of
 * MPQ_DAEMON_GRACE_NS before killing them (a daemon that ignores SIGTERM
 * would otherwise hang the exit, as it does in Python). Objects freed
 * while running are freed once reaped.
 */
static void mpq_exit_children(void)
{
	struct mpq_process *p;
	int64_t deadline, left;

	mpq_proc_lock();
	for (p = mpq_children; p; p = p->next)
		if (p->daemon)
			mpq_signal_locked(p, SIGTERM);
	mpq_proc_unlock();
	deadline = mpq_now_ns() + MPQ_DAEMON_GRACE_NS;

	while ((p = mpq_first_child(0))) {
		mpq_join_child(p, MPQ_FOREVER);
		if (p->detached)
			mpq_proc_destroy(p);
	}
	while ((p = mpq_first_child(1))) {
		left = deadline - mpq_now_ns();
		if (mpq_join_child(p, left > 0 ? left : 0)) {
			mpq_proc_signal(p, SIGKILL);
			mpq_join_child(p, MPQ_FOREVER);
		}
		if (p->detached)
			mpq_proc_destroy(p);
	}
}

static void mpq_register_exit(void)
{
	atexit(mpq_exit_children);
}

/*
 * Python's _cleanup: reap the children that have ended, and free those
 * whose objects were freed while they ran. Lock held.
 */
static void mpq_cleanup_locked(void)
{
	struct mpq_process *p, *next;

	for (p = mpq_children; p; p = next) {
		next = p->next;
		if (mpq_reap_locked(p) && p->detached)
			mpq_proc_destroy(p);
	}
}

/* Python's _identity: the current process's, then its own count. */
static char *mpq_next_identity(void)
{
	unsigned int n = __atomic_add_fetch(&mpq_counter, 1, __ATOMIC_RELAXED);
	const char *mine = mpq_self->identity;
	char *s;

	if (asprintf(&s, "%s%s%u", mine, mine[0] ? ":" : "", n) < 0)
		return NULL;
	return s;
}

int mpq_proc_create(struct mpq_process **out, mpq_target_fn target,
		    const void *arg, size_t arg_len, const char *name,
		    const char *identity, int daemon, int start_method)
{
	struct mpq_process *p;

	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->magic = MPQ_PROC_MAGIC;
	p->state = MPQ_PROC_NEW;
	p->daemon = daemon;
	p->start_method = start_method;
	p->owner = getpid();
	p->sentinel = -1;
	p->sentinel_err = -EINVAL;
	p->fs_status = -1;
	p->target = target;
	if (arg_len) {
		p->arg = malloc(arg_len);
		if (!p->arg)
			goto nomem;
		memcpy(p->arg, arg, arg_len);
		p->arg_len = arg_len;
	}
	p->identity = identity ? strdup(identity) : mpq_next_identity();
	if (!p->identity)
		goto nomem;
	if (name)
		p->name = strdup(name);
	else if (asprintf(&p->name, "Process-%s", p->identity) < 0)
		p->name = NULL;
	if (!p->name)
		goto nomem;
	*out = p;
	return 0;
nomem:
	free(p->arg);
	free(p->identity);
	free(p);
	return -ENOMEM;
}

MPQ_EXPORT int mpq_process_new(struct mpq_process **out, mpq_target_fn target,
			       const void *arg, size_t arg_len,
			       const struct mpq_process_attr *attr)
{
	static const struct mpq_process_attr defaults;
	int method;

	if (!out || !target || (!arg && arg_len))
		return -EINVAL;
	if (!attr)
		attr = &defaults;
	if (attr->flags || attr->__pad)
		return -EINVAL;
	if (!mpq_all_zero(attr->__reserved, sizeof(attr->__reserved)))
		return -EINVAL;
	if (attr->daemon != 0 && attr->daemon != 1)
		return -EINVAL;
	switch (attr->start_method) {
	case MPQ_START_DEFAULT:
	case MPQ_START_FORK:
		method = MPQ_START_FORK;
		break;
	case MPQ_START_SPAWN:
	case MPQ_START_FORKSERVER:
		method = attr->start_method;
		break;
	default:
		return -EINVAL;
	}
	return mpq_proc_create(out, target, arg, arg_len, attr->name, NULL,
			       attr->daemon, method);
}

static void mpq_close_pair(int fds[2])
{
	if (fds[0] >= 0)
		close(fds[0]);
	if (fds[1] >= 0)
		close(fds[1]);
	fds[0] = fds[1] = -1;
}

/*
 * Before the fork: the parent's pidfd for the child's parent sentinel or,
 * without pidfds, the sentinel pipe; for spawn (spawn != 0) the
 * exec-error pipe. The pipes are made under the lock and listed at once,
 * so that no fork, from any thread, copies them unlisted.
 */
int mpq_launch_prepare(struct mpq_launch *l, int spawn)
{
	int fd, ret = 0;

	l->parent_pid = getpid();
	l->pipe[0] = l->pipe[1] = -1;
	l->err[0] = l->err[1] = -1;
	/* The child's mpq_parent_process() sentinel, opened while we live. */
	fd = mpq_pidfd_open(l->parent_pid);
	if (fd < 0 && !mpq_no_pidfd(fd))
		return fd;
	l->parent_pidfd = fd >= 0 ? fd : -1;

	mpq_proc_lock();
	if (fd < 0 && pipe2(l->pipe, O_CLOEXEC) < 0)
		ret = -errno;
	if (!ret && spawn && pipe2(l->err, O_CLOEXEC) < 0)
		ret = -errno;
	if (!ret) {
		l->next = mpq_launches;
		mpq_launches = l;
	}
	mpq_proc_unlock();
	if (ret) {
		if (l->parent_pidfd >= 0)
			close(l->parent_pidfd);
		mpq_close_pair(l->pipe);
		mpq_close_pair(l->err);
		return ret;
	}
	mpq_my_launch = l;
	return 0;
}

/*
 * After the fork, in the parent: the write ends belong to the child now.
 * Closed and unlisted under the lock: a fork in between would copy them,
 * and a fork after the close must not close their numbers again, which
 * may name other files by then.
 */
void mpq_launch_forked(struct mpq_launch *l)
{
	struct mpq_launch **pp;

	mpq_proc_lock();
	for (pp = &mpq_launches; *pp; pp = &(*pp)->next) {
		if (*pp == l) {
			*pp = l->next;
			break;
		}
	}
	if (l->pipe[1] >= 0)
		close(l->pipe[1]);
	if (l->err[1] >= 0)
		close(l->err[1]);
	l->pipe[1] = l->err[1] = -1;
	mpq_proc_unlock();
	mpq_my_launch = NULL;
}

void mpq_launch_abort(struct mpq_launch *l)
{
	mpq_launch_forked(l);
	if (l->parent_pidfd >= 0)
		close(l->parent_pidfd);
	mpq_close_pair(l->pipe);
	mpq_close_pair(l->err);
}

/*
 * In the child, right after fork(2): only async-signal-safe calls, since a
 * spawn child of a threaded parent runs this before execve(2).
 */
void mpq_launch_child(const struct mpq_launch *l, int daemon)
{
	if (l->pipe[0] >= 0)
		close(l->pipe[0]);
	if (l->err[0] >= 0)
		close(l->err[0]);
	if (daemon) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		/* The parent died before the prctl: it will not tell us. */
		if (getppid() != l->parent_pid)
			raise(SIGTERM);
	}
}

/* The child runs: list p among the children, drop its argument. */
static void proc_running(struct mpq_process *p)
{
	/* The child has its copy; Python drops its _args here too. */
	free(p->arg);
	p->arg = NULL;
	mpq_proc_lock();
	p->state = MPQ_PROC_STARTED;
	p->next = mpq_children;
	mpq_children = p;
	mpq_proc_unlock();
}

void mpq_launch_parent(struct mpq_launch *l, struct mpq_process *p, pid_t pid)
{
	int fd;

	mpq_launch_forked(l);
	if (l->parent_pidfd >= 0)
		close(l->parent_pidfd);
	if (l->err[0] >= 0)
		close(l->err[0]);
	p->pid = pid;
	if (l->pipe[0] >= 0) {
		p->sentinel = l->pipe[0];
	} else {
		/*
		 * Not reaped until we reap it, so the pid is still this
		 * child's. If no fd is left (EMFILE), the child runs anyway:
		 * it is tracked by pid, and only its sentinel is missing.
		 */
		fd = mpq_pidfd_open(pid);
		p->has_pidfd = fd >= 0;
		p->sentinel = fd >= 0 ? fd : -1;
		p->sentinel_err = fd >= 0 ? 0 : fd;
	}
	proc_running(p);
}

void mpq_proc_started(struct mpq_process *p, pid_t pid, int pidfd,
		      int status_fd)
{
	p->pid = pid;
	p->fs_status = status_fd;
	p->has_pidfd = pidfd >= 0;
	/* Without a pidfd the status socket is what ends with the child. */
	p->sentinel = pidfd >= 0 ? pidfd : status_fd;
	p->sentinel_err = 0;
	proc_running(p);
}

const char *mpq_proc_self_name(void)
{
	return mpq_self->name;
}

/*
 * In a new child, single-threaded: p is now the current process, and the
 * process that started it (ppid, named pname, pidfd ppidfd) its parent.
 */
void mpq_proc_become(struct mpq_process *p, pid_t ppid, const char *pname,
		     int ppidfd)
{
	static char unknown[] = "?";
	char *name = strdup(pname);

	/* The grandparent's pidfd, if the parent was a child too. */
	if (mpq_parent.sentinel >= 0)
		close(mpq_parent.sentinel);
	if (mpq_parent.name != unknown)
		free(mpq_parent.name);
	memset(&mpq_parent, 0, sizeof(mpq_parent));
	mpq_parent.fs_status = -1;
	mpq_parent.magic = MPQ_PROC_MAGIC;
	mpq_parent.state = MPQ_PROC_STARTED;
	mpq_parent.pid = ppid;
	mpq_parent.name = name ? name : unknown;
	mpq_parent.identity = unknown;
	mpq_parent.sentinel = ppidfd;
	mpq_parent.sentinel_err = ppidfd >= 0 ? 0 : -ENOSYS;
	mpq_parent.has_pidfd = ppidfd >= 0;
	p->state = MPQ_PROC_STARTED;
	p->owner = ppid;
	p->pid = getpid();
	mpq_self = p;
	mpq_counter = 0;
}

/*
 * Run the target and end the child as Python's _bootstrap does: its own
 * children as at exit, stdio flushed, then _exit(2), so that the
 * parent's atexit(3) handlers do not run a second time here.
 */
void mpq_proc_run(struct mpq_process *p)
{
	int code = p->target(p->arg, p->arg_len);

	mpq_exit_children();
	fflush(NULL);
	_exit(code);
}

static int mpq_fork_start(struct mpq_process *p)
{
	struct mpq_launch l;
	const char *pname;
	pid_t pid;
	int ret;

	ret = mpq_launch_prepare(&l, 0);
	if (ret)
		return ret;
	/* What stdio holds now would be written by both processes. */
	fflush(NULL);
	pname = mpq_self->name;
	pid = fork();
	if (pid < 0) {
		ret = -errno;
		mpq_launch_abort(&l);
		return ret;
	}
	if (pid == 0) {
		mpq_launch_child(&l, p->daemon);
		mpq_proc_become(p, l.parent_pid, pname, l.parent_pidfd);
		mpq_proc_run(p);
	}
	mpq_launch_parent(&l, p, pid);
	return 0;
}

MPQ_EXPORT int mpq_process_start(struct mpq_process *p)
{
	static pthread_once_t exit_once = PTHREAD_ONCE_INIT;
	int ret = mpq_proc_check(p);

	if (ret)
		return ret;
	switch (mpq_proc_role(p)) {
	case MPQ_ROLE_SELF:
	case MPQ_ROLE_PARENT:
		return -EINVAL;
	case MPQ_ROLE_FOREIGN:
		return -ECHILD;
	}
	if (p->state != MPQ_PROC_NEW)
		return -EINVAL;
	if (mpq_self->daemon)
		return -EPERM;
	/*
	 * A spawned child that never called mpq_init() is running main()
	 * again; let it not start children of its own (Python's "attempt to
	 * start a new process before the current process has finished its
	 * bootstrapping phase"), or each would do the same.
	 */
	if (getenv(MPQ_SPAWN_ENV) || getenv(MPQ_FORKSERVER_ENV))
		return -EPROTO;
	mpq_proc_lock();
	mpq_cleanup_locked();
	mpq_proc_unlock();
	pthread_once(&exit_once, mpq_register_exit);
	/*
	 * The child joins this program: the names it and we make go when
	 * the last of us does (anchor.c). Without an anchor it would start
	 * a program of its own at its first create; not worth failing for.
	 */
	ret = mpq_backend_resolve(MPQ_BACKEND_DEFAULT);
	if (ret >= 0)
		mpq_anchor_ensure(ret);
	if (p->start_method == MPQ_START_SPAWN)
		return mpq_spawn_start(p);
	if (p->start_method == MPQ_START_FORKSERVER)
		return mpq_forkserver_launch(p);
	return mpq_fork_start(p);
}

MPQ_EXPORT int mpq_process_join(struct mpq_process *p, int64_t timeout_ns)
{
	int ret = mpq_proc_check(p);

	if (ret)
		return ret;
	switch (mpq_proc_role(p)) {
	case MPQ_ROLE_SELF:
		return -EDEADLK;
	case MPQ_ROLE_PARENT:
		return mpq_join_parent(timeout_ns);
	case MPQ_ROLE_FOREIGN:
		return -ECHILD;
	}
	if (p->state == MPQ_PROC_NEW)
		return -EINVAL;
	return mpq_join_child(p, timeout_ns);
}

MPQ_EXPORT int mpq_process_is_alive(struct mpq_process *p)
{
	int ret = mpq_proc_check(p);

	if (ret)
		return ret;
	switch (mpq_proc_role(p)) {
	case MPQ_ROLE_SELF:
		return 1;
	case MPQ_ROLE_PARENT:
		return mpq_parent_alive();
	case MPQ_ROLE_FOREIGN:
		return -ECHILD;
	}
	if (p->state == MPQ_PROC_NEW)
		return 0;
	return !mpq_reap(p);
}

MPQ_EXPORT int mpq_process_exitcode(struct mpq_process *p, int *code)
{
	int ret = mpq_proc_check(p);

	if (ret)
		return ret;
	if (!code)
		return -EINVAL;
	switch (mpq_proc_role(p)) {
	case MPQ_ROLE_SELF:
	case MPQ_ROLE_PARENT:
		return -EAGAIN;
	case MPQ_ROLE_FOREIGN:
		return -ECHILD;
	}
	if (p->state == MPQ_PROC_NEW || !mpq_reap(p))
		return -EAGAIN;
	if (p->reap_err)
		return p->reap_err;
	*code = p->exitcode;
	return 0;
}

MPQ_EXPORT pid_t mpq_process_pid(struct mpq_process *p)
{
	int ret = mpq_proc_check(p);

	if (ret)
		return ret;
	switch (mpq_proc_role(p)) {
	case MPQ_ROLE_SELF:
		return getpid();
	case MPQ_ROLE_PARENT:
		return mpq_parent.pid;
	}
	return p->state == MPQ_PROC_NEW ? -EAGAIN : p->pid;
}

MPQ_EXPORT const char *mpq_process_name(struct mpq_process *p)
{
	if (!p || (p->magic != MPQ_PROC_MAGIC))
		return NULL;
	return p->name;
}

MPQ_EXPORT int mpq_process_daemon(struct mpq_process *p)
{
	if (!p)
		return -EINVAL;
	if (p->magic != MPQ_PROC_MAGIC)
		return -EBADF;
	return p->daemon;
}

static int mpq_process_send(struct mpq_process *p, int sig)
{
	int ret = mpq_proc_check(p);

	if (ret)
		return ret;
	switch (mpq_proc_role(p)) {
	case MPQ_ROLE_SELF:
	case MPQ_ROLE_PARENT:
		return -EINVAL;
	case MPQ_ROLE_FOREIGN:
		return -ECHILD;
	}
	if (p->state == MPQ_PROC_NEW)
		return -EINVAL;
	return mpq_proc_signal(p, sig);
}

MPQ_EXPORT int mpq_process_terminate(struct mpq_process *p)
{
	return mpq_process_send(p, SIGTERM);
}

MPQ_EXPORT int mpq_process_kill(struct mpq_process *p)
{
	return mpq_process_send(p, SIGKILL);
}

MPQ_EXPORT int mpq_process_sentinel(struct mpq_process *p)
{
	int ret = mpq_proc_check(p);

	if (ret)
		return ret;
	switch (mpq_proc_role(p)) {
	case MPQ_ROLE_SELF:
		return -EINVAL;
	case MPQ_ROLE_FOREIGN:
		return -ECHILD;
	case MPQ_ROLE_PARENT:
		break;
	default:
		if (p->state == MPQ_PROC_NEW)
			return -EINVAL;
	}
	return p->sentinel >= 0 ? p->sentinel : p->sentinel_err;
}

MPQ_EXPORT int mpq_process_close(struct mpq_process *p)
{
	int ret = mpq_proc_check(p);

	if (ret)
		return ret;
	switch (mpq_proc_role(p)) {
	case MPQ_ROLE_SELF:
	case MPQ_ROLE_PARENT:
		return -EINVAL;
	case MPQ_ROLE_CHILD:
		if (p->state == MPQ_PROC_STARTED && !mpq_reap(p))
			return -EBUSY;
		break;
	}
	/* A foreign object is this process's copy: its fds are ours. */
	mpq_proc_release(p);
	p->state = MPQ_PROC_CLOSED;
	return 0;
}

MPQ_EXPORT void mpq_process_free(struct mpq_process *p)
{
	if (!p || p->magic != MPQ_PROC_MAGIC || p == mpq_self ||
	    p == &mpq_parent || p == &mpq_main)
		return;
	mpq_proc_lock();
	if (mpq_proc_role(p) == MPQ_ROLE_CHILD &&
	    p->state == MPQ_PROC_STARTED && !mpq_reap_locked(p)) {
		/* Still running: the list keeps it until it is reaped. */
		p->magic = MPQ_PROC_DETACHED;
		p->detached = 1;
		mpq_proc_unlock();
		return;
	}
	mpq_children_unlink(p);
	mpq_proc_unlock();
	mpq_proc_destroy(p);
}

MPQ_EXPORT struct mpq_process *mpq_current_process(void)
{
	return mpq_self;
}

MPQ_EXPORT struct mpq_process *mpq_parent_process(void)
{
	return mpq_parent.magic == MPQ_PROC_MAGIC ? &mpq_parent : NULL;
}

MPQ_EXPORT int mpq_active_children(struct mpq_process **out, int max)
{
	struct mpq_process *p;
	int n = 0;

	if (max < 0 || (max && !out))
		return -EINVAL;
	mpq_proc_lock();
	mpq_cleanup_locked();
	for (p = mpq_children; p; p = p->next) {
		if (p->detached)
			continue;
		if (n < max)
			out[n] = p;
		n++;
	}
	mpq_proc_unlock();
	return n;
}

MPQ_EXPORT int mpq_cpu_count(void)
{
	int ncpu = 1024, count;
	cpu_set_t *set;
	size_t size;

	/* A mask as large as the kernel's: it refuses a smaller one. */
	for (;;) {
		set = CPU_ALLOC(ncpu);
		if (!set)
			break;
		size = CPU_ALLOC_SIZE(ncpu);
		if (sched_getaffinity(0, size, set) == 0) {
			count = CPU_COUNT_S(size, set);
			CPU_FREE(set);
			return count > 0 ? count : 1;
		}
		CPU_FREE(set);
		if (errno != EINVAL || ncpu >= (1 << 22))
			break;
		ncpu *= 2;
	}
	count = (int)sysconf(_SC_NPROCESSORS_ONLN);
	return count > 0 ? count : 1;
}
