// SPDX-License-Identifier: MIT
/*
 * mpq_manager_start: the manager's server process is a private
 * redis-server, a child of the caller that dies with it (PDEATHSIG) and
 * that the caller watches through a pidfd.
 *
 * Everything about it lives in a fresh 0700 directory: its config (0600:
 * it holds the password), its Unix socket (0700), its log. The password
 * is the authkey, 192 random bits; it reaches redis-server in the config
 * file, never on a command line that /proc shows to every user. The
 * default user is off; the one user, named after the namespace, may touch
 * only the namespace's keys and may not run admin or dangerous commands.
 * Persistence is off unless the attr asks for an AOF (fsync always, so a
 * reply the caller saw is on disk).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "manager/manager.h"

int mpq__manager_init(struct mpq_manager *m, const char *url,
		      const char *authkey, int64_t timeout_ns);
void mpq__manager_free_fields(struct mpq_manager *m);

static int gen_authkey(char *hex, size_t bytes)
{
	unsigned char rnd[32];
	size_t i;

	if (bytes > sizeof(rnd))
		return -EINVAL;
	if (getrandom(rnd, bytes, 0) != (ssize_t)bytes)
		return -EIO;
	for (i = 0; i < bytes; i++)
		sprintf(hex + 2 * i, "%02x", rnd[i]);
	explicit_bzero(rnd, sizeof(rnd));
	return 0;
}

static char *make_config(const struct mpq_manager_attr *a, const char *dir,
			 const char *ns, const char *authkey, const char *host,
			 int port)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	if (!f)
		return NULL;
	fprintf(f, "daemonize no\nsupervised no\nloglevel warning\n");
	fprintf(f, "logfile \"%s/redis.log\"\n", dir);
	fprintf(f, "unixsocket \"%s/redis.sock\"\nunixsocketperm 700\n", dir);
	if (host)
		fprintf(f, "port %d\nbind %s\n", port, host);
	else
		fprintf(f, "port 0\n");
	fprintf(f, "protected-mode no\ndatabases 1\nsave \"\"\n");
	fprintf(f, "dir \"%s\"\n", a->dir ? a->dir : dir);
	if (a->aof)
		fprintf(f, "appendonly yes\nappendfsync always\n");
	else
		fprintf(f, "appendonly no\n");
	/*
	 * The only way in: the namespace's user, with the authkey. The
	 * default user is off and has no password, so no one logs in as
	 * it; it keeps all rights because Redis 7.0 checks a MULTI/EXEC
	 * read back from the AOF against them (without, a restart drops
	 * every script's writes with NOPERM).
	 */
	fprintf(f, "user default off resetpass ~* &* +@all\n");
	fprintf(f, "user %s on >%s ~mpq:%s:* resetchannels +@all -@admin -@dangerous\n",
		ns, authkey, ns);
	if (fclose(f)) {
		free(text);
		return NULL;
	}
	return text;
}

/* The config reaches the server as a 0600 file that lives only until the
 * server has read it. */
static int write_config(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	size_t len = strlen(text);
	int err = 0;

	if (fd < 0)
		return -errno;
	if (write(fd, text, len) != (ssize_t)len)
		err = -EIO;
	close(fd);
	return err;
}

static int dir_ok(const char *s)
{
	/* It goes into a config file between quotes. */
	return s && s[0] == '/' && !strpbrk(s, "\"\\\n\r") && strlen(s) < 80;
}

static void remove_dir(struct mpq_manager *m)
{
	static const char *const files[] = {
		"redis.sock", "redis.conf", "redis.log",
	};
	char p[256];
	size_t i;

	if (!m->dir)
		return;
	for (i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(p, sizeof(p), "%s/%s", m->dir, files[i]);
		unlink(p);
	}
	rmdir(m->dir);
}

/* Why the server did not come up, from its exit and its log. */
static int server_failed(struct mpq_manager *m)
{
	char p[256], buf[4096];
	int status = 0, fd;
	ssize_t n;

	waitpid(m->server_pid, &status, 0);
	m->server_pid = 0;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
		return -ENOENT;		/* no redis-server to exec */
	snprintf(p, sizeof(p), "%s/redis.log", m->dir);
	fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		buf[n > 0 ? n : 0] = 0;
		if (strstr(buf, "Address already in use"))
			return -EADDRINUSE;
		if (strstr(buf, "Cannot assign requested address"))
			return -EADDRNOTAVAIL;
	}
	return -EIO;
}

static void stop_server(struct mpq_manager *m)
{
	struct pollfd pfd = { .fd = m->pidfd, .events = POLLIN };

	if (!m->server_pid)
		return;
	/* SIGTERM lets an AOF be flushed; SIGKILL if it takes too long. */
	syscall(SYS_pidfd_send_signal, m->pidfd, SIGTERM, NULL, 0);
	if (poll(&pfd, 1, 5000) <= 0)
		syscall(SYS_pidfd_send_signal, m->pidfd, SIGKILL, NULL, 0);
	waitpid(m->server_pid, NULL, 0);
	m->server_pid = 0;
}

static void child_exec(const char *server, const char *conf, pid_t parent)
{
	int null;

	/* Die with the manager, even if it is SIGKILLed. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(1);
	null = open("/dev/null", O_RDWR);
	if (null >= 0) {
		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
	}
	syscall(SYS_close_range, 3, ~0U, 0);
	execlp(server, "redis-server", conf, (char *)NULL);
	_exit(127);
}

static int wait_ready(struct mpq_manager *m, int64_t deadline)
{
	struct pollfd pfd = { .fd = m->pidfd, .events = POLLIN };
	int err;

	for (;;) {
		err = mpq__mgr_conn_open(m);
		if (!err)
			return 0;
		/* Not listening yet: wait a little or until it dies. */
		if (poll(&pfd, 1, 5) > 0)
			return server_failed(m);
		if (mpq__mgr_now() > deadline)
			return -ETIMEDOUT;
	}
}

/* Write the config, run the server, wait until it answers. */
static int spawn_server(struct mpq_manager *m)
{
	pid_t parent = getpid();
	char conf[160];
	int err;

	snprintf(conf, sizeof(conf), "%s/redis.conf", m->dir);
	unlink(conf);
	err = write_config(conf, m->conf);
	if (err)
		return err;
	m->starter = parent;
	m->server_pid = fork();
	if (m->server_pid < 0) {
		err = -errno;
		m->server_pid = 0;
		goto out;
	}
	if (m->server_pid == 0)
		child_exec(m->server_bin, conf, parent);
	m->pidfd = syscall(SYS_pidfd_open, m->server_pid, 0);
	if (m->pidfd < 0) {
		err = -errno;
		kill(m->server_pid, SIGKILL);
		waitpid(m->server_pid, NULL, 0);
		m->server_pid = 0;
		goto out;
	}
	fcntl(m->pidfd, F_SETFD, FD_CLOEXEC);
	err = wait_ready(m, mpq__mgr_now() + 10 * 1000000000LL);
out:
	/* The password stays in memory and in the server, not on disk. */
	unlink(conf);
	return err;
}

MPQ_NET_EXPORT int mpq_manager_start(struct mpq_manager **out,
				     const struct mpq_manager_attr *attr)
{
	static const struct mpq_manager_attr dflt;
	const struct mpq_manager_attr *a = attr ? attr : &dflt;
	char tmpl[128], authkey[65], *url = NULL, *host = NULL;
	const char *ns = a->ns ? a->ns : "mpq", *tmp = getenv("TMPDIR");
	struct mpq_manager *m;
	int port = 0, err;

	if (!out)
		return -EINVAL;
	*out = NULL;
	if (a->dir && !dir_ok(a->dir))
		return -EINVAL;
	if (a->address) {
		const char *p = a->address, *c;

		if (strncmp(p, "tcp://", 6))
			return -EINVAL;
		p += 6;
		c = strrchr(p, ':');
		if (!c || c == p || strpbrk(p, "\"\\ \n#"))
			return -EINVAL;
		port = atoi(c + 1);
		if (port <= 0 || port > 65535)
			return -EINVAL;
		if (*p == '[' && c[-1] == ']')	/* [v6]:port */
			host = strndup(p + 1, c - p - 2);
		else
			host = strndup(p, c - p);
		if (!host)
			return -ENOMEM;
	}
	if (!dir_ok(tmp))
		tmp = "/tmp";
	snprintf(tmpl, sizeof(tmpl), "%s/mpq-manager-XXXXXX", tmp);
	m = calloc(1, sizeof(*m));
	if (!m) {
		free(host);
		return -ENOMEM;
	}
	m->pidfd = -1;
	err = gen_authkey(authkey, 24);
	if (err)
		goto fail;
	if (!mkdtemp(tmpl)) {	/* mode 0700 */
		err = -errno;
		goto fail;
	}
	m->dir = strdup(tmpl);
	if (a->address)
		err = asprintf(&url, "%s#%s", a->address, ns);
	else
		err = asprintf(&url, "unix:%s/redis.sock#%s", tmpl, ns);
	if (err < 0 || !m->dir) {
		err = -ENOMEM;
		goto fail;
	}
	err = mpq__manager_init(m, url, authkey, a->timeout_ns);
	if (err)
		goto fail;
	m->server_bin = strdup(a->redis_server ? a->redis_server :
			       "redis-server");
	m->conf = make_config(a, tmpl, m->ns, authkey, host, port);
	if (!m->conf || !m->server_bin) {
		err = -ENOMEM;
		goto fail;
	}
	err = spawn_server(m);
	if (err)
		goto fail;
	explicit_bzero(authkey, sizeof(authkey));
	free(url);
	free(host);
	*out = m;
	return 0;
fail:
	stop_server(m);
	if (m->pidfd >= 0)
		close(m->pidfd);
	remove_dir(m);
	mpq__manager_free_fields(m);
	free(m);
	free(url);
	free(host);
	explicit_bzero(authkey, sizeof(authkey));
	return err;
}

MPQ_NET_EXPORT int mpq_manager_restart(struct mpq_manager *m)
{
	struct pollfd pfd;

	if (!m)
		return -EINVAL;
	if (!m->server_pid || m->starter != getpid())
		return -EPERM;
	pfd.fd = m->pidfd;
	pfd.events = POLLIN;
	if (poll(&pfd, 1, 0) != 1)
		return -EBUSY;		/* still running */
	waitpid(m->server_pid, NULL, 0);
	m->server_pid = 0;
	close(m->pidfd);
	m->pidfd = -1;
	return spawn_server(m);
}

MPQ_NET_EXPORT const char *mpq_manager_authkey(struct mpq_manager *m)
{
	return m ? m->authkey : NULL;
}

MPQ_NET_EXPORT int mpq_manager_pidfd(struct mpq_manager *m)
{
	if (!m)
		return -EINVAL;
	return m->pidfd >= 0 ? m->pidfd : -ENOENT;
}

MPQ_NET_EXPORT pid_t mpq_manager_server_pid(struct mpq_manager *m)
{
	return m ? m->server_pid : 0;
}

MPQ_NET_EXPORT void mpq_manager_free(struct mpq_manager *m)
{
	if (!m)
		return;
	if (m->pidfd >= 0)
		close(m->pidfd);
	mpq__manager_free_fields(m);
	free(m);
}

MPQ_NET_EXPORT int mpq_manager_shutdown(struct mpq_manager *m)
{
	if (!m)
		return -EINVAL;
	/* Only the process that started the server stops it; a forked
	 * child that calls this only lets go of its handle. */
	if (m->server_pid && m->starter == getpid()) {
		if (m->pid == getpid())
			mpq__mgr_conn_drop(m);
		stop_server(m);
		remove_dir(m);
	}
	mpq_manager_free(m);
	return 0;
}
