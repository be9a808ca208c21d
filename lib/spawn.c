// SPDX-License-Identifier: MIT
/*
 * The spawn start method: the child executes the program again and runs
 * a target it finds by name, the C form of Python pickling a function by
 * its qualified name. Also here: the table of those names, mpq_init(),
 * and the handles by which objects reach a spawned child.
 *
 * The handshake. Before forking, the parent writes a bootstrap (struct
 * mpq_boot: the target's name, the process's name, identity and daemon
 * flag, the parent's pid, name and pidfd, then the argument bytes) into a
 * memfd, and gives the child an environment with MPQ_SPAWN=<that fd>. The
 * child clears FD_CLOEXEC on the memfd, the parent's pidfd and the fds
 * that objects were exported with, and executes /proc/self/exe with the
 * parent's argv. Its main() calls mpq_init(), which sees MPQ_SPAWN,
 * removes it (so that the target's own children are not mistaken for
 * spawned ones), reads the bootstrap and runs the target.
 *
 * A memfd rather than more environment variables: no size limit on the
 * arguments (one environment string is at most 128 KiB), no encoding, and
 * nothing a user's argv or environment could be confused with. It is
 * written completely before the fork, so the parent never waits for the
 * child to read. The parent does wait for the execve(2), on a close-on-exec
 * pipe that carries its errno if it fails, so that mpq_process_start()
 * reports an exec failure rather than a child that exits with 127.
 *
 * Between fork(2) and execve(2) the child of a threaded parent may only make
 * async-signal-safe calls: everything it needs (argv, envp, the fd list)
 * is built before the fork.
 */
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "pool.h"

#define MPQ_BOOT_MAGIC		"MPQBOOT1"
#define MPQ_TARGET_NAME_MAX	255
/* Strings in a bootstrap: names are short; refuse what cannot be one. */
#define MPQ_BOOT_STR_MAX	(1U << 20)
/* The exit status of a spawned child that cannot run its target. */
#define MPQ_SPAWN_FAILED	127

struct mpq_target {
	char *name;
	mpq_target_fn fn;
	struct mpq_target *next;
};

/* An fd exported for spawned children, and the file it was then. */
struct mpq_inherit {
	int fd;
	dev_t dev;
	ino_t ino;
};

/* The bootstrap's header; the strings and the arg bytes follow it. */
struct mpq_boot {
	char magic[8];
	int32_t parent_pid;
	int32_t parent_pidfd;	/* inherited; -1 without pidfds */
	uint32_t daemon;
	uint32_t target_len;
	uint32_t name_len;
	uint32_t identity_len;
	uint32_t parent_name_len;
	uint32_t __pad;
	uint64_t arg_len;
};

/* All under mpq_proc_lock(). */
static struct mpq_target *mpq_targets;
static struct mpq_inherit *mpq_inherits;
static size_t mpq_ninherits;
static char **mpq_argv;		/* what a spawned child is executed with */

static struct mpq_target *mpq_target_by_name(const char *name)
{
	struct mpq_target *t;

	for (t = mpq_targets; t; t = t->next)
		if (!strcmp(t->name, name))
			return t;
	return NULL;
}

MPQ_EXPORT int mpq_register_target(const char *name, mpq_target_fn fn)
{
	struct mpq_target *t;
	int ret = 0;

	if (!name || !fn || !name[0] ||
	    strnlen(name, MPQ_TARGET_NAME_MAX + 1) > MPQ_TARGET_NAME_MAX)
		return -EINVAL;
	mpq_proc_lock();
	t = mpq_target_by_name(name);
	if (t) {
		ret = t->fn == fn ? 0 : -EEXIST;
		goto out;
	}
	t = calloc(1, sizeof(*t));
	if (t)
		t->name = strdup(name);
	if (!t || !t->name) {
		free(t);
		ret = -ENOMEM;
		goto out;
	}
	t->fn = fn;
	t->next = mpq_targets;
	mpq_targets = t;
out:
	mpq_proc_unlock();
	return ret;
}

static void mpq_argv_free(char **argv)
{
	char **a;

	if (!argv)
		return;
	for (a = argv; *a; a++)
		free(*a);
	free(argv);
}

static char **mpq_argv_copy(int argc, char **argv)
{
	char **copy;
	int i;

	copy = calloc((size_t)argc + 1, sizeof(*copy));
	if (!copy)
		return NULL;
	for (i = 0; i < argc && argv[i]; i++) {
		copy[i] = strdup(argv[i]);
		if (!copy[i]) {
			mpq_argv_free(copy);
			return NULL;
		}
	}
	return copy;
}

/* argv from /proc/self/cmdline, for a program that gave mpq_init() none. */
static char **mpq_argv_from_proc(void)
{
	char *buf = NULL, *s, **argv = NULL;
	size_t len = 0, cap = 0;
	int fd, argc = 0, i;
	ssize_t n;

	fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	for (;;) {
		if (len + 1 >= cap) {
			cap = cap ? cap * 2 : 4096;
			s = realloc(buf, cap);
			if (!s)
				goto out;
			buf = s;
		}
		n = read(fd, buf + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	if (!buf || !len)
		goto out;
	buf[len] = '\0';	/* the last string is ended even if cut */
	for (s = buf; s < buf + len; s += strlen(s) + 1)
		argc++;
	argv = calloc((size_t)argc + 1, sizeof(*argv));
	if (!argv)
		goto out;
	for (s = buf, i = 0; i < argc; s += strlen(s) + 1, i++) {
		argv[i] = strdup(s);
		if (!argv[i]) {
			mpq_argv_free(argv);
			argv = NULL;
			goto out;
		}
	}
out:
	free(buf);
	close(fd);
	return argv;
}

static int mpq_write_full(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	ssize_t n;

	while (len) {
		n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int mpq_pread_full(int fd, void *buf, size_t len, off_t off)
{
	char *p = buf;
	ssize_t n;

	while (len) {
		n = pread(fd, p, len, off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		p += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

/* Write the bootstrap for p into a new memfd; returns the fd or -errno. */
int mpq_boot_write(struct mpq_process *p, const char *target,
			  const struct mpq_launch *l)
{
	const char *pname = mpq_proc_self_name();
	struct mpq_boot b = {
		.parent_pid = l->parent_pid,
		.parent_pidfd = l->parent_pidfd,
		.daemon = (uint32_t)p->daemon,
		.target_len = (uint32_t)strlen(target),
		.name_len = (uint32_t)strlen(p->name),
		.identity_len = (uint32_t)strlen(p->identity),
		.parent_name_len = (uint32_t)strlen(pname),
		.arg_len = p->arg_len,
	};
	int fd, ret;

	if (strlen(p->name) > MPQ_BOOT_STR_MAX || strlen(pname) > MPQ_BOOT_STR_MAX ||
	    strlen(p->identity) > MPQ_BOOT_STR_MAX)
		return -E2BIG;
	memcpy(b.magic, MPQ_BOOT_MAGIC, sizeof(b.magic));
	fd = memfd_create("mpq-spawn", MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	ret = mpq_write_full(fd, &b, sizeof(b));
	if (!ret)
		ret = mpq_write_full(fd, target, b.target_len);
	if (!ret)
		ret = mpq_write_full(fd, p->name, b.name_len);
	if (!ret)
		ret = mpq_write_full(fd, p->identity, b.identity_len);
	if (!ret)
		ret = mpq_write_full(fd, pname, b.parent_name_len);
	if (!ret)
		ret = mpq_write_full(fd, p->arg, p->arg_len);
	if (ret) {
		close(fd);
		return ret;
	}
	return fd;
}

/*
 * Read and check a bootstrap: *data gets the strings and the arg bytes, in
 * one allocation, after the header. The parent wrote it, but a bootstrap
 * that does not add up is refused rather than believed.
 */
static int mpq_boot_read(int fd, struct mpq_boot *b, char **data)
{
	uint64_t total;
	struct stat st;
	int ret;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size < sizeof(*b))
		return -EINVAL;
	ret = mpq_pread_full(fd, b, sizeof(*b), 0);
	if (ret)
		return ret;
	if (memcmp(b->magic, MPQ_BOOT_MAGIC, sizeof(b->magic)) ||
	    b->target_len > MPQ_TARGET_NAME_MAX || b->daemon > 1 ||
	    b->name_len > MPQ_BOOT_STR_MAX ||
	    b->identity_len > MPQ_BOOT_STR_MAX ||
	    b->parent_name_len > MPQ_BOOT_STR_MAX)
		return -EINVAL;
	total = (uint64_t)b->target_len + b->name_len + b->identity_len +
		b->parent_name_len;
	if (__builtin_add_overflow(total, b->arg_len, &total) ||
	    total != (uint64_t)st.st_size - sizeof(*b) || total >= SIZE_MAX)
		return -EINVAL;
	*data = malloc(total + 1);
	if (!*data)
		return -ENOMEM;
	ret = mpq_pread_full(fd, *data, total, sizeof(*b));
	if (ret) {
		free(*data);
		*data = NULL;
	}
	return ret;
}

static __attribute__((noreturn)) void mpq_spawn_fail(const char *what,
						     const char *detail)
{
	fprintf(stderr, "mpq: spawned process %d: %s%s%s\n", (int)getpid(),
		what, detail ? ": " : "", detail ? detail : "");
	_exit(MPQ_SPAWN_FAILED);
}

/*
 * In a new child, from the bootstrap in fd: become the process, run it.
 * With override, ppidfd (an fd of ours or -1) is the parent's pidfd, not
 * the number the bootstrap names: a fork server's child got it by
 * SCM_RIGHTS, at whatever number was free.
 */
__attribute__((noreturn)) void mpq_boot_run(int fd, int ppidfd, int override)
{
	char *data = NULL, *target, *name, *identity, *pname, *arg;
	struct mpq_process *p;
	struct mpq_target *t;
	struct mpq_boot b;
	int ret;

	ret = mpq_boot_read(fd, &b, &data);
	if (ret)
		mpq_spawn_fail("cannot read the bootstrap", strerror(-ret));
	close(fd);
	if (override)
		b.parent_pidfd = ppidfd;

	target = strndup(data, b.target_len);
	name = strndup(data + b.target_len, b.name_len);
	identity = strndup(data + b.target_len + b.name_len, b.identity_len);
	pname = strndup(data + b.target_len + b.name_len + b.identity_len,
			b.parent_name_len);
	arg = data + b.target_len + b.name_len + b.identity_len +
		b.parent_name_len;
	if (!target || !name || !identity || !pname)
		mpq_spawn_fail("out of memory", NULL);

	mpq_proc_lock();
	t = mpq_target_by_name(target);
	mpq_proc_unlock();
	if (!t)
		mpq_spawn_fail("no target registered under the name", target);
	ret = mpq_proc_create(&p, t->fn, arg, b.arg_len, name, identity,
			      (int)b.daemon, MPQ_START_SPAWN);
	if (ret)
		mpq_spawn_fail("cannot make the process", strerror(-ret));
	free(data);
	free(target);
	free(name);
	free(identity);

	/* Ours to keep, not to hand on to whatever this process executes. */
	if (b.parent_pidfd >= 0 &&
	    fcntl(b.parent_pidfd, F_SETFD, FD_CLOEXEC) < 0)
		b.parent_pidfd = -1;
	mpq_proc_become(p, b.parent_pid, pname, b.parent_pidfd);
	free(pname);
	mpq_proc_run(p);
}

/* In the spawned child, from mpq_init(). */
static __attribute__((noreturn)) void mpq_spawn_child(const char *val)
{
	char *end;
	long fd;

	errno = 0;
	fd = strtol(val, &end, 10);
	if (errno || end == val || *end || fd < 0 || fd > INT_MAX)
		mpq_spawn_fail("bad " MPQ_SPAWN_ENV, val);
	unsetenv(MPQ_SPAWN_ENV);
	mpq_anchor_adopt();
	mpq_boot_run((int)fd, -1, 0);
}

MPQ_EXPORT int mpq_init(int *argc, char ***argv)
{
	const char *boot = getenv(MPQ_SPAWN_ENV);
	char **copy;

	/* A spawned child runs its target whatever the arguments are. */
	if (boot)
		mpq_spawn_child(boot);
	/* A fork server serves until its parent ends. */
	boot = getenv(MPQ_FORKSERVER_ENV);
	if (boot)
		mpq_forkserver_main(boot);
	/* A distributed pool's worker (pool_remote.c) serves too. */
	pool_remote_worker_check(argc, argv);
	if (!argc != !argv)
		return -EINVAL;
	if (!argc || !*argv || *argc < 0)
		return 0;
	copy = mpq_argv_copy(*argc, *argv);
	if (!copy)
		return -ENOMEM;
	mpq_proc_lock();
	if (!mpq_argv) {
		mpq_argv = copy;
		copy = NULL;
	}
	mpq_proc_unlock();
	mpq_argv_free(copy);
	return 0;
}

/* Lock held. Is the fd still the file it was exported as? */
static int mpq_inherit_valid(const struct mpq_inherit *in)
{
	struct stat st;

	return fstat(in->fd, &st) == 0 && st.st_dev == in->dev &&
	       st.st_ino == in->ino;
}

int mpq_spawn_inherit_fd(int fd)
{
	struct mpq_inherit *in;
	struct stat st;
	size_t i;
	int ret = 0;

	if (fstat(fd, &st) < 0)
		return -errno;
	mpq_proc_lock();
	for (i = 0; i < mpq_ninherits; i++) {
		if (mpq_inherits[i].fd == fd) {
			mpq_inherits[i].dev = st.st_dev;
			mpq_inherits[i].ino = st.st_ino;
			goto out;
		}
	}
	in = realloc(mpq_inherits, (mpq_ninherits + 1) * sizeof(*in));
	if (!in) {
		ret = -ENOMEM;
		goto out;
	}
	mpq_inherits = in;
	in[mpq_ninherits].fd = fd;
	in[mpq_ninherits].dev = st.st_dev;
	in[mpq_ninherits].ino = st.st_ino;
	mpq_ninherits++;
out:
	mpq_proc_unlock();
	return ret;
}

/*
 * The exported fds to pass on, into fds[] (room for mpq_ninherits).
 * Exported objects may have been freed since, and their fd numbers reused
 * for other files: those entries are dropped, not passed on. Lock held.
 */
static size_t mpq_inherit_collect(int *fds)
{
	size_t i, n = 0;

	for (i = 0; i < mpq_ninherits; i++)
		if (mpq_inherit_valid(&mpq_inherits[i]))
			mpq_inherits[n++] = mpq_inherits[i];
	mpq_ninherits = n;
	for (i = 0; i < n; i++)
		fds[i] = mpq_inherits[i].fd;
	return n;
}

/*
 * environ without any MPQ_SPAWN, MPQ_FORKSERVER or MPQ_ANCHORS, plus ours
 * and the anchors' (anchor.c) if any; the strings are not copied.
 */
char **mpq_spawn_envp(const char *ours, const char *anchors)
{
	size_t n = 0, k = 0, plen = strlen(MPQ_SPAWN_ENV "=");
	size_t flen = strlen(MPQ_FORKSERVER_ENV "=");
	char **envp, **e;

	for (e = environ; e && *e; e++)
		n++;
	envp = calloc(n + 3, sizeof(*envp));
	if (!envp)
		return NULL;
	for (e = environ; e && *e; e++)
		if (strncmp(*e, MPQ_SPAWN_ENV "=", plen) &&
		    strncmp(*e, MPQ_FORKSERVER_ENV "=", flen) &&
		    strncmp(*e, "MPQ_ANCHORS=", strlen("MPQ_ANCHORS=")))
			envp[k++] = *e;
	envp[k++] = (char *)ours;
	if (anchors)
		envp[k++] = (char *)anchors;
	envp[k] = NULL;
	return envp;
}

static const char *mpq_target_name(mpq_target_fn fn)
{
	struct mpq_target *t;

	for (t = mpq_targets; t; t = t->next)
		if (t->fn == fn)
			return t->name;
	return NULL;
}

int mpq_target_name_of(mpq_target_fn fn, char *buf, size_t len)
{
	const char *name;
	int ret = -ENOENT;

	mpq_proc_lock();
	name = mpq_target_name(fn);
	if (name)
		ret = snprintf(buf, len, "%s", name) < (int)len ? 0 : -ERANGE;
	mpq_proc_unlock();
	return ret;
}

mpq_target_fn mpq_target_by(const char *name)
{
	struct mpq_target *t;

	mpq_proc_lock();
	t = mpq_target_by_name(name);
	mpq_proc_unlock();
	return t ? t->fn : NULL;
}

int mpq_process_keep_fds(struct mpq_process *p, const int *fds, unsigned int n)
{
	int *copy = malloc(n * sizeof(*copy));

	if (!copy)
		return -ENOMEM;
	memcpy(copy, fds, n * sizeof(*copy));
	free(p->keep_fds);
	p->keep_fds = copy;
	p->nkeep_fds = n;
	return 0;
}

/* The child: pass the fds on, execute the program, or report why not. */
static __attribute__((noreturn)) void mpq_spawn_exec(char **argv,
						     char **envp,
						     const int *fds, size_t nfds,
						     int errfd)
{
	size_t i;
	int err;

	for (i = 0; i < nfds; i++)
		fcntl(fds[i], F_SETFD, 0);
	execve("/proc/self/exe", argv, envp);
	err = errno;
	while (write(errfd, &err, sizeof(err)) < 0 && errno == EINTR)
		;
	_exit(MPQ_SPAWN_FAILED);
}

char **mpq_spawn_argv_locked(void)
{
	if (!mpq_argv)
		mpq_argv = mpq_argv_from_proc();
	return mpq_argv;
}

int mpq_spawn_fds(struct mpq_process *p, int **fds, size_t *nfds,
		  size_t extra)
{
	mpq_proc_lock();
	*fds = malloc((mpq_ninherits + p->nkeep_fds + extra) * sizeof(**fds));
	*nfds = *fds ? mpq_inherit_collect(*fds) : 0;
	mpq_proc_unlock();
	if (!*fds)
		return -ENOMEM;
	if (p->nkeep_fds) {
		memcpy(*fds + *nfds, p->keep_fds, p->nkeep_fds * sizeof(**fds));
		*nfds += p->nkeep_fds;
	}
	return 0;
}

int mpq_spawn_start(struct mpq_process *p)
{
	char envbuf[sizeof(MPQ_SPAWN_ENV) + 16], **argv, **envp = NULL;
	char anchors[96];
	int *fds = NULL, bootfd = -1, err, ret;
	const char *target;
	struct mpq_launch l;
	size_t nfds;
	ssize_t n;
	pid_t pid;

	mpq_proc_lock();
	target = mpq_target_name(p->target);
	if (!mpq_argv)
		mpq_argv = mpq_argv_from_proc();
	argv = mpq_argv;
	/*
	 * Room for what the child must keep: exports, its own, bootstrap,
	 * parent, and its program's two anchors.
	 */
	fds = malloc((mpq_ninherits + p->nkeep_fds + 5) * sizeof(*fds));
	nfds = fds ? mpq_inherit_collect(fds) : 0;
	mpq_proc_unlock();
	if (fds && p->nkeep_fds) {
		memcpy(fds + nfds, p->keep_fds, p->nkeep_fds * sizeof(*fds));
		nfds += p->nkeep_fds;
	}
	if (!target)
		ret = -ENOENT;
	else if (!argv || !fds)
		ret = -ENOMEM;
	else
		ret = mpq_launch_prepare(&l, 1);
	if (ret)
		goto out;

	bootfd = mpq_boot_write(p, target, &l);
	if (bootfd < 0) {
		ret = bootfd;
		goto abort;
	}
	fds[nfds++] = bootfd;
	if (l.parent_pidfd >= 0)
		fds[nfds++] = l.parent_pidfd;
	/* Without pidfds the sentinel pipe must outlive the execve. */
	if (l.pipe[1] >= 0)
		fds[nfds++] = l.pipe[1];
	nfds += mpq_anchor_spawn(fds + nfds, anchors, sizeof(anchors));
	snprintf(envbuf, sizeof(envbuf), MPQ_SPAWN_ENV "=%d", bootfd);
	envp = mpq_spawn_envp(envbuf, anchors);
	if (!envp) {
		ret = -ENOMEM;
		goto abort;
	}

	pid = fork();
	if (pid < 0) {
		ret = -errno;
		goto abort;
	}
	if (pid == 0) {
		mpq_launch_child(&l, p->daemon);
		mpq_spawn_exec(argv, envp, fds, nfds, l.err[1]);
	}

	/* Our copy of the write end closed, the pipe ends at the execve. */
	mpq_launch_forked(&l);
	do {
		n = read(l.err[0], &err, sizeof(err));
	} while (n < 0 && errno == EINTR);
	if (n == (ssize_t)sizeof(err)) {
		/* The child never ran the program: undo the start. */
		waitpid(pid, NULL, 0);
		ret = -err;
		goto abort;
	}
	mpq_launch_parent(&l, p, pid);
	ret = 0;
	goto out;
abort:
	mpq_launch_abort(&l);
out:
	if (bootfd >= 0)
		close(bootfd);
	free(envp);
	free(fds);
	return ret;
}

int mpq_handle_format(char *buf, size_t len, const char *type, int fd)
{
	int n;

	if (!buf || fd < 0)
		return -EINVAL;
	n = snprintf(buf, len, "mpq-%s:fd=%d", type, fd);
	if (n < 0)
		return -EINVAL;
	if ((size_t)n >= len)
		return -ERANGE;
	return n;
}

int mpq_handle_parse(const char *handle, const char *type, int *fd)
{
	size_t tlen = strlen(type);
	const char *s;
	long v = 0;

	if (!handle || strncmp(handle, "mpq-", 4) ||
	    strncmp(handle + 4, type, tlen) ||
	    strncmp(handle + 4 + tlen, ":fd=", 4))
		return -EINVAL;
	s = handle + 4 + tlen + 4;
	if (!*s)
		return -EINVAL;
	/* Digits only: no sign, space or trailing text that strtol takes. */
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		v = v * 10 + (*s - '0');
		if (v > INT_MAX)
			return -EINVAL;
	}
	*fd = (int)v;
	return 0;
}

/*
 * Write the handle of the object behind fd into buf and let spawned
 * children inherit fd: what every mpq_<type>_export() does.
 */
int mpq_handle_export(const char *type, int fd, char *buf, size_t len)
{
	char tmp[MPQ_HANDLE_MAX];
	int n, ret;

	if (!buf)
		return -EINVAL;
	n = mpq_handle_format(tmp, sizeof(tmp), type, fd);
	if (n < 0)
		return n;
	if ((size_t)n >= len)
		return -ERANGE;
	ret = mpq_spawn_inherit_fd(fd);
	if (ret)
		return ret;
	memcpy(buf, tmp, (size_t)n + 1);
	return n;
}

MPQ_EXPORT int mpq_queue_export(struct mpq_queue *q, char *buf, size_t len)
{
	if (!q)
		return -EINVAL;
	if (q->ext)
		return mpq_xq_export(q, buf, len);
	return mpq_handle_export("queue", mpq_queue_fileno(q), buf, len);
}

MPQ_EXPORT int mpq_queue_import(struct mpq_queue **out, const char *handle)
{
	int fd, ret;

	if (!out)
		return -EINVAL;
	if (handle && strncmp(handle, "mpq-queue:", 10))
		return mpq_ext_import(MPQ_EXT_QUEUE, handle, out);
	ret = mpq_handle_parse(handle, "queue", &fd);
	if (ret)
		return ret;
	ret = mpq_queue_from_fd(out, fd);
	if (ret)
		return ret;
	/*
	 * The queue has its own copy of the fd now. The inherited one stays
	 * open, so the handle can be imported again, but is not passed on
	 * to what this process executes.
	 */
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	return 0;
}
