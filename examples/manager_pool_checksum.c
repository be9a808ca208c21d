// SPDX-License-Identifier: MIT
/*
 * manager_pool_checksum: checksums (FNV-1a 64) of many files by a pool
 * whose workers may run on other machines. The pool starts a manager
 * listening on TCP, writes its address and authkey to two files (the
 * key one 0600) in a directory the workers can read (a shared
 * filesystem), and maps the task "checksum" over the paths. The same
 * program started in worker mode joins it, here or on another machine:
 *
 *   make net build/examples/manager_pool_checksum
 *   ex=build/examples/manager_pool_checksum
 *   $ex /shared/mpq tcp://0.0.0.0:6400 /etc/hosts /etc/passwd &   # the pool
 *   MPQ_AUTHKEY_FILE=/shared/mpq/key $ex --mpq-worker=/shared/mpq/address
 *   ssh host2 MPQ_AUTHKEY_FILE=/shared/mpq/key $PWD/$ex --mpq-worker=/shared/mpq/address
 *   srun -n 8 env MPQ_AUTHKEY_FILE=/shared/mpq/key $ex --mpq-worker=/shared/mpq/address
 *
 * The address file names the host as others reach it: set MPQ_HOST to
 * it (default: this host's name). Paths are read by the workers, so they
 * must be the same on every machine.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mpq_net.h>

static int checksum(const void *arg, size_t len, struct mpq_task *t)
{
	char path[4096];
	unsigned char buf[65536];
	uint64_t h = 0xcbf29ce484222325ULL;
	ssize_t n, i;
	int fd;

	if (len >= sizeof(path))
		return mpq_task_error(t, -ENAMETOOLONG, "path too long");
	memcpy(path, arg, len);
	path[len] = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return mpq_task_error(t, -errno, "%s: %s", path,
				      strerror(errno));
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		for (i = 0; i < n; i++)
			h = (h ^ buf[i]) * 0x100000001b3ULL;
	close(fd);
	if (n < 0)
		return mpq_task_error(t, -EIO, "%s: read failed", path);
	return mpq_task_return(t, &h, sizeof(h));
}
MPQ_TASK(checksum);

static int write_file(const char *dir, const char *name, const char *text,
		      mode_t mode)
{
	char path[4096];
	FILE *f;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	f = fdopen(fd, "w");
	fprintf(f, "%s\n", text);
	return fclose(f) ? -EIO : 0;
}

int main(int argc, char **argv)
{
	struct mpq_manager_attr ma = { 0 };
	struct mpq_pool_remote rem = { 0 };
	struct mpq_pool_attr pa = { .processes = 2, .remote = &rem };
	struct mpq_async_result *r = NULL;
	struct mpq_manager *m;
	struct mpq_pool *p;
	struct iovec *args;
	char host[256], url[512];
	const char *port, *msg;
	const void *v;
	uint64_t h;
	int i, n, ret;

	/* A worker (--mpq-worker=...) serves here and never returns. */
	mpq_init(&argc, &argv);
	if (argc < 4) {
		fprintf(stderr, "usage: %s DIR tcp://0.0.0.0:PORT FILE...\n",
			argv[0]);
		return 2;
	}
	ma.address = argv[2];
	ret = mpq_manager_start(&m, &ma);
	if (ret) {
		fprintf(stderr, "manager: %s\n", mpq_strerror(ret));
		return 1;
	}
	port = strrchr(argv[2], ':');
	if (getenv("MPQ_HOST"))
		snprintf(host, sizeof(host), "%s", getenv("MPQ_HOST"));
	else if (gethostname(host, sizeof(host)))
		snprintf(host, sizeof(host), "localhost");
	snprintf(url, sizeof(url), "tcp://%s%s%s", host, port ? port : "",
		 strchr(mpq_manager_address(m), '#'));
	if (write_file(argv[1], "address", url, 0644) ||
	    write_file(argv[1], "key", mpq_manager_authkey(m), 0600)) {
		fprintf(stderr, "cannot write to %s\n", argv[1]);
		return 1;
	}
	rem.manager = m;
	ret = mpq_pool_new(&p, &pa);
	if (ret) {
		fprintf(stderr, "pool: %s\n", mpq_strerror(ret));
		return 1;
	}
	n = argc - 3;
	args = calloc((size_t)n, sizeof(*args));
	for (i = 0; i < n; i++) {
		args[i].iov_base = argv[3 + i];
		args[i].iov_len = strlen(argv[3 + i]);
	}
	mpq_pool_map(p, checksum, args, (size_t)n, 0, &r);
	for (i = 0; r && i < n; i++) {
		if (mpq_async_result_value(r, (size_t)i, &v, NULL) == 0) {
			memcpy(&h, v, sizeof(h));
			printf("%016llx  %s\n", (unsigned long long)h,
			       argv[3 + i]);
		} else {
			mpq_async_result_error(r, (size_t)i, &msg);
			printf("error             %s: %s\n", argv[3 + i], msg);
		}
	}
	mpq_async_result_free(r);
	mpq_pool_free(p);
	mpq_manager_shutdown(m);
	free(args);
	return 0;
}
