// SPDX-License-Identifier: MIT
/*
 * The forkserver start method, Python's: a server process forks the
 * children on request, so a program with threads gets fork(2)'s speed per
 * child without the hazard of forking a threaded process (a lock another
 * thread held stays held in the child for good).
 *
 * The server is the program itself executed again, as a spawned child is
 * (spawn.c): fork(2) and execve(2) of /proc/self/exe with the parent's
 * argv and MPQ_FORKSERVER=<ctl>,<pidfd>,<ppid> in its environment; its
 * main() calls mpq_init(), which serves instead of returning. Executing
 * the program again, rather than forking the parent as it is, is what
 * makes the server safe to start lazily, at the first forkserver start:
 * by then the program may have threads, and a forked copy of it would be
 * a process with the other threads' locks held for good, which is exactly
 * the hazard the method exists to avoid. The execve(2) leaves nothing of
 * the parent behind (no heap, no locks, no fds but the two it is given),
 * and is paid once. mpq_forkserver_start() starts it explicitly: at the
 * top of main(), so that the cost is not paid by the first start.
 *
 * As with spawn, a target is found by its registered name (its address
 * differs in another execution of a PIE program) and objects reach the
 * child by their export handles. The fds of the handles are sent with
 * each request (SCM_RIGHTS), and the child moves them to the numbers the
 * handles name, so handles made after the server started work as well.
 *
 * One request. The requester makes a socket pair (R, S) and sends one
 * message on the control socket: the target's name, the fd numbers, and
 * the fds S, the bootstrap memfd that spawn also uses (the process's
 * name, identity, daemon flag, argument bytes), its own pidfd (the
 * child's mpq_parent_process() sentinel) and the objects' fds. The server
 * forks; the child waits on S for "go"; the server sends (error, pid,
 * the child's pidfd) on S, keeps S, and later sends the exit status on
 * it when it has reaped the child. The requester reads the reply on R,
 * sends "go", waits for the child's "A" (it runs), and keeps R as the
 * process's status socket.
 *
 * Death, at any point:
 * - the server ends when the requester does: it polls the requester's
 *   pidfd and the control socket, whose other end only the requester
 *   holds (close-on-exec, and closed in the requester's forked children),
 *   so either tells it at once. PR_SET_PDEATHSIG is not used for this:
 *   it fires when the *thread* that forked the server ends, and a lazy
 *   start may come from a short-lived thread. The server is
 *   single-threaded, so its own children can use it;
 * - a child waiting for "go" has PR_SET_PDEATHSIG(SIGKILL) towards the
 *   server, so a server killed after the fork and before its reply takes
 *   the child with it: R then reads EOF (no process holds S), and the
 *   target never ran. The requester then starts a new server and asks
 *   again, up to MPQ_FS_ATTEMPTS servers (a target never runs twice).
 *   The child says "A" only after it cleared the prctl: from then on it
 *   runs whatever becomes of the server. A requester killed before "go"
 *   closes R: the child reads EOF on S and exits without running;
 * - a child killed (by anyone) before its "A" never ran its target, but
 *   is not asked for again: its server reaps it and sends its status,
 *   -signal, where the requester waits for "A", and the start returns a
 *   process that has ended by that signal, as fork's does for a child
 *   killed right after the fork (a pool replaces it as any dead worker);
 * - a running child does not die with the server (as in Python): its
 *   PR_SET_PDEATHSIG is cleared at "go". Daemons die with the requester
 *   all the same: the server that sees the requester end sends its
 *   daemon children SIGTERM (what PR_SET_PDEATHSIG does for a forked
 *   daemon) before it exits. Only a requester and server killed together
 *   leave daemons behind (a process group's SIGKILL takes them too);
 * - a server killed later loses the exit statuses it had not sent: those
 *   children end with exitcode -ECHILD, as a child reaped by someone else.
 */
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

#define MPQ_FS_MAGIC		"MPQFSRQ1"
/* SCM_MAX_FD is 253: S, the bootstrap, the pidfd, and the objects. */
#define MPQ_FS_MAX_FDS		250
#define MPQ_FS_NAME_MAX		256
/* Servers killed in a row before a start gives up with -ESRCH. */
#define MPQ_FS_ATTEMPTS		64
/* What a child that never ran its target exits with (spawn.c's too). */
#define MPQ_FS_FAILED		127

struct mpq_fs_req {
	char magic[8];
	uint32_t nfds;		/* object fds, after S, boot, [pidfd] */
	uint32_t has_pidfd;
	uint32_t daemon;
	uint32_t __pad;
	char target[MPQ_FS_NAME_MAX];
	int32_t fdnum[MPQ_FS_MAX_FDS];	/* the numbers they must have */
};

struct mpq_fs_reply {
	int32_t err;		/* 0 or -errno */
	int32_t pid;
	int32_t has_pidfd;	/* a pidfd of the child comes with it */
	int32_t __pad;
};

/* The requester's side, under mpq_fs_lock. */
static pthread_mutex_t mpq_fs_lock = PTHREAD_MUTEX_INITIALIZER;
static int mpq_fs_ctl = -1;	/* our end of the control socket */
static pid_t mpq_fs_pid;	/* the server, a child of ours */

/*
 * A forked child is not the requester: the control socket is its
 * parent's (the server must see EOF when the parent ends), and the lock
 * may have been held by a thread the fork did not copy. It starts a
 * server of its own if it asks for one.
 */
static void mpq_fs_atfork_child(void)
{
	pthread_mutex_init(&mpq_fs_lock, NULL);
	if (mpq_fs_ctl >= 0)
		close(mpq_fs_ctl);
	mpq_fs_ctl = -1;
	mpq_fs_pid = 0;
}

static void __attribute__((constructor)) mpq_fs_setup(void)
{
	pthread_atfork(NULL, NULL, mpq_fs_atfork_child);
}

static int mpq_fs_pidfd_open(pid_t pid)
{
	int fd = (int)syscall(SYS_pidfd_open, pid, 0);

	return fd < 0 ? -errno : fd;
}

/* Send buf with fds[0..n) attached. */
static int mpq_fs_send(int sock, const void *buf, size_t len, const int *fds,
		       size_t n)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int) * (MPQ_FS_MAX_FDS + 3))];
	} u;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *c;
	ssize_t r;

	memset(&u, 0, sizeof(u));
	if (n) {
		m.msg_control = u.b;
		m.msg_controllen = CMSG_SPACE(sizeof(int) * n);
		c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * n);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
	}
	do {
		r = sendmsg(sock, &m, MSG_NOSIGNAL);
	} while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	return r == (ssize_t)len ? 0 : -EIO;
}

/*
 * Receive one message into buf (its length, 0 at EOF, or -errno) and up
 * to max fds (close-on-exec) into fds, *n of them. Fds that came with a
 * message that does not fit are closed, and the message refused.
 */
static ssize_t mpq_fs_recv(int sock, void *buf, size_t len, int *fds,
			   size_t max, size_t *n, int flags)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int) * (MPQ_FS_MAX_FDS + 3))];
	} u;
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	struct msghdr m = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = u.b, .msg_controllen = sizeof(u.b),
	};
	struct cmsghdr *c;
	size_t i, k;
	ssize_t r;
	int *got;

	*n = 0;
	do {
		r = recvmsg(sock, &m, MSG_CMSG_CLOEXEC | flags);
	} while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	for (c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		got = (int *)CMSG_DATA(c);
		for (i = 0; i < k; i++) {
			if (*n < max)
				fds[(*n)++] = got[i];
			else
				close(got[i]);
		}
	}
	if (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
		for (i = 0; i < *n; i++)
			close(fds[i]);
		*n = 0;
		return -EMSGSIZE;
	}
	return r;
}

/* ---- the server ---------------------------------------------------- */

struct mpq_fs_child {
	pid_t pid;
	int sock;		/* S: where its status goes */
	int daemon;
};

static struct mpq_fs_child *mpq_fs_kids;
static size_t mpq_fs_nkids, mpq_fs_cap;

static __attribute__((noreturn)) void mpq_fs_die(const char *what, int err)
{
	fprintf(stderr, "mpq: fork server %d: %s: %s\n", (int)getpid(), what,
		strerror(err));
	_exit(MPQ_FS_FAILED);
}

/* Reap what has ended and send each status to its requester. */
static void mpq_fs_reap(void)
{
	int32_t status;
	size_t i;
	pid_t pid;
	int ws;

	while ((pid = waitpid(-1, &ws, WNOHANG)) > 0) {
		status = WIFEXITED(ws) ? WEXITSTATUS(ws) :
			 WIFSIGNALED(ws) ? -WTERMSIG(ws) : -ECHILD;
		for (i = 0; i < mpq_fs_nkids; i++) {
			if (mpq_fs_kids[i].pid != pid)
				continue;
			/* Never blocks: one small message per socket. */
			send(mpq_fs_kids[i].sock, &status, sizeof(status),
			     MSG_DONTWAIT | MSG_NOSIGNAL);
			close(mpq_fs_kids[i].sock);
			mpq_fs_kids[i] = mpq_fs_kids[--mpq_fs_nkids];
			break;
		}
	}
}

/*
 * The requester has ended, killed or not: its daemon children are
 * terminated, as PR_SET_PDEATHSIG(SIGTERM) terminates a forked daemon
 * (unreaped children of ours: their pids are theirs). The others run on,
 * as forked children do.
 */
static __attribute__((noreturn)) void mpq_fs_parent_died(void)
{
	size_t i;

	mpq_fs_reap();
	for (i = 0; i < mpq_fs_nkids; i++)
		if (mpq_fs_kids[i].daemon)
			kill(mpq_fs_kids[i].pid, SIGTERM);
	_exit(0);
}

static void mpq_fs_reply(int sock, int err, pid_t pid, int pidfd)
{
	struct mpq_fs_reply r = {
		.err = err, .pid = pid, .has_pidfd = pidfd >= 0,
	};

	mpq_fs_send(sock, &r, sizeof(r), &pidfd, pidfd >= 0);
}

/*
 * In the new child: put the objects' fds at their numbers, drop the
 * server's fds, wait for "go", run. fds: S, boot, [pidfd], objects.
 */
static __attribute__((noreturn)) void mpq_fs_child(const struct mpq_fs_req *q,
						   int *fds, size_t n,
						   int ctl, int sfd, int ppidfd,
						   pid_t server)
{
	int maxnum = 2, s, boot, pidfd = -1;
	size_t i, first = q->has_pidfd ? 3 : 2;
	sigset_t none;
	char go;
	ssize_t r;

	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGCHLD, SIG_DFL);
	/* The server dies before "go": so does this child, target unrun. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != server)
		_exit(MPQ_FS_FAILED);
	close(ctl);
	close(sfd);
	if (ppidfd >= 0)
		close(ppidfd);
	for (i = 0; i < mpq_fs_nkids; i++)
		close(mpq_fs_kids[i].sock);
	free(mpq_fs_kids);
	mpq_fs_kids = NULL;
	mpq_fs_nkids = mpq_fs_cap = 0;

	/* Out of the way of the numbers the handles name, then to them. */
	for (i = 0; i < q->nfds; i++)
		if (q->fdnum[i] > maxnum)
			maxnum = q->fdnum[i];
	for (i = 0; i < n; i++) {
		s = fcntl(fds[i], F_DUPFD_CLOEXEC, maxnum + 1);
		if (s < 0)
			_exit(MPQ_FS_FAILED);
		close(fds[i]);
		fds[i] = s;
	}
	for (i = first; i < n; i++) {
		/* dup2 leaves the new fd inheritable, as spawn's are. */
		if (dup2(fds[i], q->fdnum[i - first]) < 0)
			_exit(MPQ_FS_FAILED);
		close(fds[i]);
	}
	s = fds[0];
	boot = fds[1];
	if (q->has_pidfd)
		pidfd = fds[2];

	do {
		r = recv(s, &go, 1, 0);
	} while (r < 0 && errno == EINTR);
	if (r != 1)
		_exit(MPQ_FS_FAILED);	/* the requester gave up or died */
	/*
	 * Running now: the server's death is no business of ours (as with
	 * Python's), only our parent's, which the server acts on. Said
	 * after the prctl: a requester told we run knows we will.
	 */
	prctl(PR_SET_PDEATHSIG, 0);
	if (send(s, "A", 1, MSG_NOSIGNAL) != 1)
		_exit(MPQ_FS_FAILED);
	close(s);
	mpq_boot_run(boot, pidfd, 1);
}

/* One request from the control socket; a bad one is refused. */
static void mpq_fs_serve(int ctl, int sfd, int ppidfd)
{
	int fds[MPQ_FS_MAX_FDS + 3], pidfd, err = 0;
	struct mpq_fs_child *k;
	struct mpq_fs_req q;
	size_t n, i, want;
	pid_t pid, self = getpid();
	ssize_t r;

	r = mpq_fs_recv(ctl, &q, sizeof(q), fds, MPQ_FS_MAX_FDS + 3, &n,
			MSG_DONTWAIT);
	if (r == -EAGAIN || r == -EINTR || r == -EMSGSIZE)
		return;
	if (r == 0)
		mpq_fs_parent_died();
	if (r < 0)
		mpq_fs_die("control socket", (int)-r);
	if (n < 2)
		goto drop;	/* no S to answer on */
	want = 2 + (q.has_pidfd ? 1 : 0) + q.nfds;
	if ((size_t)r != sizeof(q) || memcmp(q.magic, MPQ_FS_MAGIC, 8) ||
	    q.has_pidfd > 1 || q.daemon > 1 || q.nfds > MPQ_FS_MAX_FDS ||
	    n != want || !memchr(q.target, 0, sizeof(q.target))) {
		err = -EINVAL;
		goto refuse;
	}
	for (i = 0; i < q.nfds; i++) {
		if (q.fdnum[i] < 3) {
			err = -EINVAL;
			goto refuse;
		}
	}
	/* Registered before mpq_init() in the parent, and so here too. */
	if (!mpq_target_by(q.target)) {
		err = -ENOENT;
		goto refuse;
	}
	if (mpq_fs_nkids == mpq_fs_cap) {
		k = realloc(mpq_fs_kids, (mpq_fs_cap * 2 + 16) * sizeof(*k));
		if (!k) {
			err = -ENOMEM;
			goto refuse;
		}
		mpq_fs_kids = k;
		mpq_fs_cap = mpq_fs_cap * 2 + 16;
	}
	pid = fork();
	if (pid < 0) {
		err = -errno;
		goto refuse;
	}
	if (pid == 0)
		mpq_fs_child(&q, fds, n, ctl, sfd, ppidfd, self);
	/* Not reaped before the reply: the pid is the child's until then. */
	pidfd = mpq_fs_pidfd_open(pid);
	mpq_fs_reply(fds[0], 0, pid, pidfd);
	if (pidfd >= 0)
		close(pidfd);
	mpq_fs_kids[mpq_fs_nkids].pid = pid;
	mpq_fs_kids[mpq_fs_nkids].sock = fds[0];
	mpq_fs_kids[mpq_fs_nkids].daemon = (int)q.daemon;
	mpq_fs_nkids++;
	for (i = 1; i < n; i++)
		close(fds[i]);
	return;
refuse:
	mpq_fs_reply(fds[0], err, 0, -1);
drop:
	for (i = 0; i < n; i++)
		close(fds[i]);
}

/*
 * The server, from mpq_init(): MPQ_FORKSERVER=<ctl>,<parent pidfd or
 * -1>,<parent pid>. Reports ready on the control socket, then serves
 * until the parent ends.
 */
void mpq_forkserver_main(const char *val)
{
	struct pollfd pfd[3];
	int ctl, ppidfd, ppid, sfd, nfd;
	struct signalfd_siginfo si;
	char ready = 'R';
	sigset_t chld;

	if (sscanf(val, "%d,%d,%d", &ctl, &ppidfd, &ppid) != 3 || ctl < 0 ||
	    fcntl(ctl, F_SETFD, FD_CLOEXEC) < 0)
		mpq_fs_die("bad " MPQ_FORKSERVER_ENV, EINVAL);
	unsetenv(MPQ_FORKSERVER_ENV);
	mpq_anchor_adopt();
	if (ppidfd >= 0 && fcntl(ppidfd, F_SETFD, FD_CLOEXEC) < 0)
		ppidfd = -1;
	/* The parent ended before we could watch it. */
	if (getppid() != ppid)
		_exit(0);
	/* Children are reaped as they end, from a signalfd. */
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, NULL);
	sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0)
		mpq_fs_die("signalfd", errno);
	if (send(ctl, &ready, 1, MSG_NOSIGNAL) != 1)
		_exit(0);
	for (;;) {
		pfd[0] = (struct pollfd){ .fd = ctl, .events = POLLIN };
		pfd[1] = (struct pollfd){ .fd = sfd, .events = POLLIN };
		pfd[2] = (struct pollfd){ .fd = ppidfd, .events = POLLIN };
		nfd = ppidfd >= 0 ? 3 : 2;
		if (poll(pfd, nfd, -1) < 0) {
			if (errno == EINTR)
				continue;
			mpq_fs_die("poll", errno);
		}
		/* The parent has ended. */
		if (nfd == 3 && pfd[2].revents)
			mpq_fs_parent_died();
		if (pfd[1].revents) {
			while (read(sfd, &si, sizeof(si)) > 0)
				;
			mpq_fs_reap();
		}
		if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR))
			mpq_fs_serve(ctl, sfd, ppidfd);
		/* A SIGCHLD may have been merged with one already read. */
		mpq_fs_reap();
	}
}

/* ---- the requester ------------------------------------------------- */

/*
 * Start a server; lock held. Its exec error comes back on a pipe, as
 * spawn's does, and then its ready byte on the control socket (or EOF if
 * it ended first: a program whose main() does not call mpq_init()).
 */
static int mpq_fs_start_locked(void)
{
	char env[sizeof(MPQ_FORKSERVER_ENV) + 48], **argv, **envp, c;
	int sv[2], errp[2] = { -1, -1 }, pidfd, err, ret, afds[2];
	char anchors[96];
	size_t nafds, i;
	ssize_t n;
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	pidfd = mpq_fs_pidfd_open(getpid());
	if (pidfd < 0 && pidfd != -ENOSYS && pidfd != -EPERM) {
		ret = pidfd;
		goto close_sv;
	}
	if (pipe2(errp, O_CLOEXEC) < 0) {
		ret = -errno;
		goto close_pidfd;
	}
	snprintf(env, sizeof(env), MPQ_FORKSERVER_ENV "=%d,%d,%d", sv[1],
		 pidfd >= 0 ? pidfd : -1, (int)getpid());
	/*
	 * The server, and so every child it forks, joins this program: the
	 * SharedMemory names the program makes live while any of them does
	 * (anchor.c), as for a spawned child.
	 */
	ret = mpq_backend_resolve(MPQ_BACKEND_DEFAULT);
	if (ret >= 0)
		mpq_anchor_ensure(ret);
	nafds = mpq_anchor_spawn(afds, anchors, sizeof(anchors));
	mpq_proc_lock();
	argv = mpq_spawn_argv_locked();
	mpq_proc_unlock();
	envp = mpq_spawn_envp(env, anchors);
	if (!argv || !envp) {
		ret = -ENOMEM;
		goto free_envp;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		ret = -errno;
		goto free_envp;
	}
	if (pid == 0) {
		/* Async-signal-safe only: the parent may have threads. */
		fcntl(sv[1], F_SETFD, 0);
		if (pidfd >= 0)
			fcntl(pidfd, F_SETFD, 0);
		for (i = 0; i < nafds; i++)
			fcntl(afds[i], F_SETFD, 0);
		execve("/proc/self/exe", argv, envp);
		err = errno;
		while (write(errp[1], &err, sizeof(err)) < 0 && errno == EINTR)
			;
		_exit(MPQ_FS_FAILED);
	}
	close(errp[1]);
	errp[1] = -1;
	close(sv[1]);
	sv[1] = -1;
	do {
		n = read(errp[0], &err, sizeof(err));
	} while (n < 0 && errno == EINTR);
	if (n == (ssize_t)sizeof(err)) {
		waitpid(pid, NULL, 0);
		ret = -err;
		goto free_envp;
	}
	do {
		n = recv(sv[0], &c, 1, 0);
	} while (n < 0 && errno == EINTR);
	if (n != 1) {
		/*
		 * Killed (a signal): worth another try. Exited: it will
		 * again (a main() that skips mpq_init()).
		 */
		ret = waitpid(pid, &err, 0) == pid && WIFSIGNALED(err) ?
		      -ECONNRESET : -ESRCH;
		goto free_envp;
	}
	mpq_fs_ctl = sv[0];
	sv[0] = -1;
	mpq_fs_pid = pid;
	ret = 0;
free_envp:
	free(envp);
	close(errp[0]);
	if (errp[1] >= 0)
		close(errp[1]);
close_pidfd:
	if (pidfd >= 0)
		close(pidfd);
close_sv:
	if (sv[0] >= 0)
		close(sv[0]);
	if (sv[1] >= 0)
		close(sv[1]);
	return ret;
}

/*
 * The server pid failed a request: end it and forget it, unless another
 * thread has already put a new one in its place. Lock held.
 */
static void mpq_fs_drop_locked(pid_t pid)
{
	if (mpq_fs_ctl < 0 || mpq_fs_pid != pid)
		return;
	close(mpq_fs_ctl);
	mpq_fs_ctl = -1;
	/* Our unreaped child, so the pid cannot be someone else's. */
	kill(mpq_fs_pid, SIGKILL);
	waitpid(mpq_fs_pid, NULL, 0);
	mpq_fs_pid = 0;
}

MPQ_EXPORT int mpq_forkserver_start(void)
{
	int ret = 0;

	if (getenv(MPQ_SPAWN_ENV) || getenv(MPQ_FORKSERVER_ENV))
		return -EPROTO;
	pthread_mutex_lock(&mpq_fs_lock);
	if (mpq_fs_ctl < 0)
		ret = mpq_fs_start_locked();
	pthread_mutex_unlock(&mpq_fs_lock);
	return ret;
}

MPQ_EXPORT pid_t mpq_forkserver_pid(void)
{
	pid_t pid;

	pthread_mutex_lock(&mpq_fs_lock);
	pid = mpq_fs_ctl >= 0 ? mpq_fs_pid : -ESRCH;
	pthread_mutex_unlock(&mpq_fs_lock);
	return pid;
}

/*
 * Send the request (on a server started now if there is none). -EPIPE
 * and the like mean the server has died since: the caller starts another.
 */
static int mpq_fs_request(const struct mpq_fs_req *q, const int *fds,
			  size_t n, pid_t *server)
{
	int ret = 0;

	pthread_mutex_lock(&mpq_fs_lock);
	if (*server)
		mpq_fs_drop_locked(*server);
	if (mpq_fs_ctl < 0)
		ret = mpq_fs_start_locked();
	*server = mpq_fs_pid;
	if (!ret)
		ret = mpq_fs_send(mpq_fs_ctl, q, sizeof(*q), fds, n);
	pthread_mutex_unlock(&mpq_fs_lock);
	return ret;
}

/*
 * Tell the child to run, and wait until it says it does. 0: it runs, or
 * it was killed before it could say so: then the server's status for it
 * (-signal) is left on the socket for the reap, and the start is one of a
 * child that died at once, as a forked child killed right after the fork
 * is. -ESRCH: it died with its server (EOF, no status), never ran, ask
 * again. -EIO: it could not take its fds and exited.
 */
static int mpq_fs_go(int sock)
{
	char go = 'G', ack[sizeof(int32_t)];
	int32_t status;
	ssize_t n;

	/* Failing, no one holds S any more; a status may still be queued. */
	if (send(sock, &go, 1, MSG_NOSIGNAL) != 1 && errno != EPIPE &&
	    errno != ECONNRESET)
		return -errno;
	/*
	 * ECONNRESET is S closed with our "go" unread, and is reported once,
	 * before what is queued: the status comes on the next call.
	 */
	do {
		n = recv(sock, ack, sizeof(ack), MSG_PEEK);
	} while (n < 0 && (errno == EINTR || errno == ECONNRESET));
	if (n == 1 && ack[0] == 'A')
		return recv(sock, ack, 1, 0) == 1 ? 0 : -EIO;
	if (n == (ssize_t)sizeof(status)) {
		memcpy(&status, ack, sizeof(status));
		return status < 0 ? 0 : -EIO;
	}
	if (n == 0)
		return -ESRCH;
	return n < 0 ? -errno : -EPROTO;
}

int mpq_forkserver_launch(struct mpq_process *p)
{
	int *fds = NULL, sv[2] = { -1, -1 }, bootfd = -1, ppidfd, attempt;
	struct mpq_launch l = { .parent_pidfd = -1 };
	struct mpq_fs_reply r;
	pid_t server = 0;
	int got[1], ret;
	struct mpq_fs_req *q;
	size_t nobj, n, i = 0;
	ssize_t len;

	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	memcpy(q->magic, MPQ_FS_MAGIC, sizeof(q->magic));
	q->daemon = (uint32_t)p->daemon;
	ret = mpq_target_name_of(p->target, q->target, sizeof(q->target));
	if (ret)
		goto out;
	ret = mpq_spawn_fds(p, &fds, &nobj, 3);
	if (ret)
		goto out;
	if (nobj > MPQ_FS_MAX_FDS) {
		ret = -EMFILE;
		goto out;
	}
	for (i = 0; i < nobj; i++) {
		if (fds[i] < 3) {
			ret = -EBADF;
			goto out;
		}
		q->fdnum[i] = fds[i];
	}
	q->nfds = (uint32_t)nobj;
	/* fds becomes: S, boot, [pidfd], objects. */
	memmove(fds + 3, fds, nobj * sizeof(*fds));
	l.parent_pid = getpid();
	ppidfd = mpq_fs_pidfd_open(l.parent_pid);
	if (ppidfd < 0 && ppidfd != -ENOSYS && ppidfd != -EPERM) {
		ret = ppidfd;
		goto out;
	}
	bootfd = mpq_boot_write(p, q->target, &l);
	if (bootfd < 0) {
		ret = bootfd;
		goto close_pidfd;
	}
	q->has_pidfd = ppidfd >= 0;
	fds[1] = bootfd;
	if (ppidfd >= 0) {
		fds[2] = ppidfd;
	} else {
		memmove(fds + 2, fds + 3, nobj * sizeof(*fds));
	}
	n = 2 + q->has_pidfd + nobj;

	/*
	 * A server that died (killed) before it forked the child, or whose
	 * child died with it before it said it runs, ran no target: asking a
	 * new one cannot run it twice. MPQ_FS_ATTEMPTS servers at most.
	 */
	for (attempt = 0; attempt < MPQ_FS_ATTEMPTS; attempt++) {
		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0,
			       sv) < 0) {
			ret = -errno;
			break;
		}
		fds[0] = sv[1];
		i = 0;
		ret = mpq_fs_request(q, fds, n, &server);
		/* Only the server (and the child) may hold S: R sees EOF. */
		close(sv[1]);
		sv[1] = -1;
		if (ret == -EPIPE || ret == -ECONNRESET || ret == -ENOTCONN ||
		    ret == -ECONNREFUSED) {
			ret = -ESRCH;
		} else if (!ret) {
			len = mpq_fs_recv(sv[0], &r, sizeof(r), got, 1, &i, 0);
			if (len == (ssize_t)sizeof(r)) {
				ret = r.err;
				if (!ret && (r.pid <= 0 ||
					     (size_t)r.has_pidfd != i))
					ret = -EPROTO;
				if (!ret)
					ret = mpq_fs_go(sv[0]);
				if (ret != -ESRCH)
					break;
			}
			while (i)
				close(got[--i]);
			if (len != (ssize_t)sizeof(r))
				ret = len < 0 ? (int)len : -ESRCH;
		} else {
			break;
		}
		close(sv[0]);
		sv[0] = -1;
	}
	if (!ret) {
		mpq_proc_started(p, r.pid, i ? got[0] : -1, sv[0]);
		sv[0] = -1;
	} else if (i) {
		close(got[0]);
	}
	if (sv[0] >= 0)
		close(sv[0]);
	close(bootfd);
close_pidfd:
	if (ppidfd >= 0)
		close(ppidfd);
out:
	free(fds);
	free(q);
	return ret;
}
