// SPDX-License-Identifier: MIT
/*
 * Program anchors: what ties a SharedMemory name to the lifetime of the
 * program that made it, the same on both backends (mpq_shm(3),
 * "Lifetime").
 *
 * A program is the processes that share its anchor: the process that made
 * it, every process forked from one that had it, and every child that
 * mpq_process_start() spawns (the anchor is passed across the execve). It
 * is made before the first named create and before the first child is
 * started, so the children a program starts are part of it. A process
 * that only attaches by name, or gets a block's fd, is not.
 *
 *   kmod   an open file of /dev/mpq, through which named blocks are made:
 *          the module drops the names a file anchors when the file is
 *          released, that is when no process has it any more, however
 *          they ended. No process of ours has to survive for that.
 *   memfd  the write end of a pipe to a tracker process, as Python's
 *          resource_tracker. Every process of the program holds it; the
 *          tracker reads registrations and, at EOF (the program gone),
 *          unlinks the /dev/shm names still registered. Unlike Python's:
 *            - only a creator registers (Python 3.11 registers attachers
 *              too, so an unrelated attacher's tracker unlinks a block
 *              its creator still uses);
 *            - a registration names the file (device and inode), and the
 *              tracker unlinks a name only while it still is that file,
 *              never a newer block that took the name after an unlink;
 *            - the block is registered before its name exists and named
 *              atomically (an O_TMPFILE linked into /dev/shm, at its
 *              size), so a creator killed mid-create leaks no name and
 *              never leaves a block of size 0 behind;
 *            - the tracker is in a session of its own, ignores every
 *              signal it can, holds no fd but its pipe and no shared
 *              mapping of the program (a block it held mapped would live
 *              on after its unlink). SIGKILL can still end it: then names
 *              registered with it leak, as with Python's, and the next
 *              create starts a new tracker.
 */
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

#define MPQ_ANCHOR_ENV		"MPQ_ANCHORS"
#define MPQ_SHM_DIR		"/dev/shm/"

enum { MPQ_TRACK_REGISTER = 1, MPQ_TRACK_UNREGISTER = 2 };

/* One message to the tracker: one write, below PIPE_BUF, so atomic. */
struct mpq_track_rec {
	uint32_t op;
	uint32_t len;
	uint64_t dev;
	uint64_t ino;
	char name[MPQ_NAME_MAX + 1];
};

_Static_assert(sizeof(struct mpq_track_rec) <= 512, "atomic pipe write");

static pthread_mutex_t mpq_anchor_lock = PTHREAD_MUTEX_INITIALIZER;
static int mpq_anchor_dev = -1;		/* kmod: /dev/mpq */
static int mpq_anchor_track = -1;	/* memfd: the tracker's pipe */
/* What they were, to tell them from other files under the same numbers. */
static ino_t mpq_anchor_dev_ino, mpq_anchor_track_ino;

static ino_t mpq_fd_ino(int fd)
{
	struct stat st;

	return fstat(fd, &st) ? 0 : st.st_ino;
}

/*
 * Lock held. Forget an anchor whose fd the program closed behind our
 * back (a daemon closing every fd): that number may be another file now,
 * which must not get our ioctls or records. Not closed: not ours now.
 */
static void mpq_anchor_recheck(int *fd, ino_t ino, int kmod)
{
	struct stat st;

	if (*fd < 0)
		return;
	if (fstat(*fd, &st) || st.st_ino != ino ||
	    !(kmod ? S_ISCHR(st.st_mode) : S_ISFIFO(st.st_mode)))
		*fd = -1;
}

/* ---- the tracker: async-signal-safe calls only (forked, maybe threaded) */

static size_t mpq_tr_strlen(const char *s)
{
	size_t n = 0;

	while (s[n])
		n++;
	return n;
}

/* Drop every MAP_SHARED mapping inherited from the program. */
static void mpq_tr_unmap_shared(void)
{
	static char buf[8192];
	size_t have = 0, i, start;
	unsigned long lo, hi;
	ssize_t n;
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return;
	for (;;) {
		n = read(fd, buf + have, sizeof(buf) - 1 - have);
		if (n <= 0)
			break;
		have += (size_t)n;
		buf[have] = 0;
		start = 0;
		for (i = 0; i < have; i++) {
			char *line = buf + start, *p;

			if (buf[i] != '\n')
				continue;
			buf[i] = 0;
			/* "lo-hi perms ...": perms[3] is 's' for shared */
			lo = strtoul(line, &p, 16);
			hi = *p == '-' ? strtoul(p + 1, &p, 16) : 0;
			if (hi > lo && p[0] == ' ' && p[4] == 's')
				munmap((void *)lo, hi - lo);
			start = i + 1;
		}
		memmove(buf, buf + start, have - start);
		have -= start;
		if (have == sizeof(buf) - 1)
			have = 0;	/* a line this long is not a mapping */
	}
	close(fd);
}

static __attribute__((noreturn)) void mpq_tracker_main(int rfd)
{
	struct mpq_track_rec *recs = NULL, r;
	size_t n = 0, cap = 0, i;
	char path[sizeof(MPQ_SHM_DIR) + MPQ_NAME_MAX + 1];
	sigset_t all;
	struct stat st;
	ssize_t got;

	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	setsid();
	if (chdir("/") < 0)
		_exit(1);
	if (dup2(rfd, 0) < 0)
		_exit(1);
	if (syscall(SYS_close_range, 1U, ~0U, 0U) < 0)
		for (i = 1; i < 65536; i++)
			close((int)i);
	mpq_tr_unmap_shared();

	while ((got = read(0, &r, sizeof(r))) != 0) {
		/* Not the program's end: leave its names alone. */
		if (got < 0 && errno != EINTR)
			_exit(1);
		if (got < 0)
			continue;
		if (got != (ssize_t)sizeof(r) || r.len > MPQ_NAME_MAX ||
		    r.name[r.len])
			continue;
		if (r.op == MPQ_TRACK_REGISTER) {
			if (n == cap) {
				size_t ncap = cap ? cap * 2 : 64;
				void *m = recs ?
					mremap(recs, cap * sizeof(r),
					       ncap * sizeof(r), MREMAP_MAYMOVE) :
					mmap(NULL, ncap * sizeof(r),
					     PROT_READ | PROT_WRITE,
					     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

				if (m == MAP_FAILED)
					continue;
				recs = m;
				cap = ncap;
			}
			recs[n++] = r;
		} else if (r.op == MPQ_TRACK_UNREGISTER) {
			for (i = 0; i < n; i++) {
				if (recs[i].dev == r.dev && recs[i].ino == r.ino &&
				    !strcmp(recs[i].name, r.name)) {
					recs[i] = recs[--n];
					break;
				}
			}
		}
	}
	/* The program is gone: its names, if they are still its blocks. */
	for (i = 0; i < n; i++) {
		memcpy(path, MPQ_SHM_DIR, sizeof(MPQ_SHM_DIR) - 1);
		memcpy(path + sizeof(MPQ_SHM_DIR) - 1, recs[i].name,
		       mpq_tr_strlen(recs[i].name) + 1);
		if (stat(path, &st) == 0 && (uint64_t)st.st_dev == recs[i].dev &&
		    (uint64_t)st.st_ino == recs[i].ino)
			unlink(path);
	}
	_exit(0);
}

/* Lock held. Start a tracker; its pipe's write end becomes ours. */
static int mpq_tracker_start(void)
{
	int p[2], st;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return -errno;
	}
	if (pid == 0) {
		/* Not our child: nobody of the program waits for it. */
		if (fork() == 0)
			mpq_tracker_main(p[0]);
		_exit(0);
	}
	close(p[0]);
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	mpq_anchor_track = p[1];
	mpq_anchor_track_ino = mpq_fd_ino(p[1]);
	return 0;
}

/* ---- anchors */

/* Lock held. */
static int mpq_anchor_dev_open(void)
{
	int fd;

	mpq_anchor_recheck(&mpq_anchor_dev, mpq_anchor_dev_ino, 1);
	if (mpq_anchor_dev >= 0)
		return 0;
	fd = open("/dev/" MPQ_DEVICE_NAME, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ENODEV : -errno;
	mpq_anchor_dev = fd;
	mpq_anchor_dev_ino = mpq_fd_ino(fd);
	return 0;
}

/*
 * Make the anchor of backend (resolved) if the program has none yet.
 * Called before a child is started, so that it joins the program.
 */
int mpq_anchor_ensure(int backend)
{
	int ret;

	pthread_mutex_lock(&mpq_anchor_lock);
	if (backend == MPQ_BACKEND_KMOD) {
		ret = mpq_anchor_dev_open();
	} else {
		mpq_anchor_recheck(&mpq_anchor_track, mpq_anchor_track_ino, 0);
		ret = mpq_anchor_track >= 0 ? 0 : mpq_tracker_start();
	}
	pthread_mutex_unlock(&mpq_anchor_lock);
	return ret;
}

/*
 * An ioctl on the program's /dev/mpq: named blocks are made through it.
 * Under the lock, so that the fd is the one just checked.
 */
int mpq_anchor_dev_ioctl(unsigned long cmd, void *args)
{
	int ret;

	pthread_mutex_lock(&mpq_anchor_lock);
	ret = mpq_anchor_dev_open();
	if (!ret) {
		ret = ioctl(mpq_anchor_dev, cmd, args);
		if (ret < 0)
			ret = -errno;
	}
	pthread_mutex_unlock(&mpq_anchor_lock);
	return ret;
}

/*
 * One message to the tracker; -EPIPE if it is gone. SIGPIPE is blocked
 * around the write and a pending one consumed, so that a dead tracker
 * does not kill the program.
 */
static int mpq_track_send(int fd, const struct mpq_track_rec *r)
{
	sigset_t pipe_set, old;
	struct timespec zero = { 0, 0 };
	ssize_t n;
	int ret;

	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
	do {
		n = write(fd, r, sizeof(*r));
	} while (n < 0 && errno == EINTR);
	ret = n == (ssize_t)sizeof(*r) ? 0 : n < 0 ? -errno : -EIO;
	if (ret == -EPIPE && !sigismember(&old, SIGPIPE))
		sigtimedwait(&pipe_set, NULL, &zero);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return ret;
}

static void mpq_track_rec_fill(struct mpq_track_rec *r, uint32_t op,
			       const char *name, const struct stat *st)
{
	memset(r, 0, sizeof(*r));
	r->op = op;
	r->len = (uint32_t)strlen(name);
	r->dev = (uint64_t)st->st_dev;
	r->ino = (uint64_t)st->st_ino;
	memcpy(r->name, name, r->len);
}

/*
 * Register the file st of a block about to be named name with the
 * program's tracker, starting one if there is none or it died.
 */
int mpq_anchor_track_register(const char *name, const struct stat *st)
{
	struct mpq_track_rec r;
	int ret, tries;

	mpq_track_rec_fill(&r, MPQ_TRACK_REGISTER, name, st);
	pthread_mutex_lock(&mpq_anchor_lock);
	mpq_anchor_recheck(&mpq_anchor_track, mpq_anchor_track_ino, 0);
	for (tries = 0; tries < 2; tries++) {
		ret = mpq_anchor_track >= 0 ? 0 : mpq_tracker_start();
		if (ret)
			break;
		ret = mpq_track_send(mpq_anchor_track, &r);
		if (ret != -EPIPE)
			break;
		/* Killed: a new one, for what this process makes from now. */
		close(mpq_anchor_track);
		mpq_anchor_track = -1;
	}
	pthread_mutex_unlock(&mpq_anchor_lock);
	return ret;
}

/* The name is gone (or never came): the tracker may forget it. */
void mpq_anchor_track_unregister(const char *name, const struct stat *st)
{
	struct mpq_track_rec r;

	mpq_track_rec_fill(&r, MPQ_TRACK_UNREGISTER, name, st);
	pthread_mutex_lock(&mpq_anchor_lock);
	mpq_anchor_recheck(&mpq_anchor_track, mpq_anchor_track_ino, 0);
	if (mpq_anchor_track >= 0)
		mpq_track_send(mpq_anchor_track, &r);
	pthread_mutex_unlock(&mpq_anchor_lock);
}

/*
 * For mpq_spawn_start(): the anchors to pass to a spawned child, into fds
 * (room for 2), and the environment string that names them (buf, len).
 * Returns how many fds.
 */
size_t mpq_anchor_spawn(int *fds, char *buf, size_t len)
{
	size_t n = 0;
	int k, t;

	pthread_mutex_lock(&mpq_anchor_lock);
	mpq_anchor_recheck(&mpq_anchor_dev, mpq_anchor_dev_ino, 1);
	mpq_anchor_recheck(&mpq_anchor_track, mpq_anchor_track_ino, 0);
	k = mpq_anchor_dev;
	t = mpq_anchor_track;
	if (k >= 0)
		fds[n++] = k;
	if (t >= 0)
		fds[n++] = t;
	snprintf(buf, len, MPQ_ANCHOR_ENV "=%d:%llu,%d:%llu",
		 k, (unsigned long long)mpq_anchor_dev_ino,
		 t, (unsigned long long)mpq_anchor_track_ino);
	pthread_mutex_unlock(&mpq_anchor_lock);
	return n;
}

/* Is fd the file of inode ino, of the kind an anchor is? */
static int mpq_anchor_fd_is(int fd, unsigned long long ino, int kmod)
{
	struct stat st;

	if (fd < 0 || fstat(fd, &st) < 0 || (unsigned long long)st.st_ino != ino)
		return 0;
	return kmod ? S_ISCHR(st.st_mode) : S_ISFIFO(st.st_mode);
}

/*
 * In a spawned child, from mpq_init(): take over the anchors the parent
 * passed, so that this process belongs to its program. The variable goes
 * from the environment: what this process executes later is not of it.
 */
void mpq_anchor_adopt(void)
{
	const char *v = getenv(MPQ_ANCHOR_ENV);
	unsigned long long ki, ti;
	int k, t;

	if (!v)
		return;
	if (sscanf(v, "%d:%llu,%d:%llu", &k, &ki, &t, &ti) == 4) {
		pthread_mutex_lock(&mpq_anchor_lock);
		if (mpq_anchor_fd_is(k, ki, 1) &&
		    fcntl(k, F_SETFD, FD_CLOEXEC) == 0) {
			mpq_anchor_dev = k;
			mpq_anchor_dev_ino = (ino_t)ki;
		}
		if (mpq_anchor_fd_is(t, ti, 0) &&
		    fcntl(t, F_SETFD, FD_CLOEXEC) == 0) {
			mpq_anchor_track = t;
			mpq_anchor_track_ino = (ino_t)ti;
		}
		pthread_mutex_unlock(&mpq_anchor_lock);
	}
	unsetenv(MPQ_ANCHOR_ENV);
}
