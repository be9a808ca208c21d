// SPDX-License-Identifier: MIT
/*
 * pool_checksum: Python's Pool.map, in C: checksum files in parallel.
 *
 *     def cksum(path): ...                    # CRC and size of one file
 *     with Pool() as pool:
 *         for path, res in zip(paths, pool.map(cksum, paths)): print(...)
 *
 * Each file is read and checksummed by a worker process; the results come
 * back in the order of the arguments and are printed as cksum(1) prints
 * them (POSIX CRC, size, name), so `cksum FILE...` checks the output. A
 * file that cannot be read fails its own item only: its error code and
 * message ("x: No such file or directory") come back instead of a value,
 * and the other files are still summed.
 *
 * Usage: pool_checksum [-j WORKERS] [-s] FILE...   (-s: spawn the workers;
 * with no FILE, the program checksums itself and a file that is missing)
 *
 * Build (installed library):
 *     cc -o pool_checksum pool_checksum.c $(pkg-config --cflags --libs mpq)
 * In the source tree:
 *     make build/examples/pool_checksum
 *     (= cc -Iinclude -o build/examples/pool_checksum \
 *        examples/pool_checksum.c -Lbuild/lib -lmpq -Wl,-rpath,$PWD/build/lib)
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mpq.h>

/* What a worker sends back for one file: a fixed-size C value. */
struct sum {
	uint64_t size;
	uint32_t crc;
	uint32_t __pad;
};

/* The CRC of POSIX cksum: polynomial 0x04C11DB7, most significant bit first. */
static uint32_t crc_table[256];

static void crc_init(void)
{
	uint32_t c;
	int i, k;

	for (i = 0; i < 256; i++) {
		c = (uint32_t)i << 24;
		for (k = 0; k < 8; k++)
			c = c & 0x80000000U ? (c << 1) ^ 0x04C11DB7U : c << 1;
		crc_table[i] = c;
	}
}

static uint32_t crc_update(uint32_t crc, const unsigned char *p, size_t n)
{
	while (n--)
		crc = (crc << 8) ^ crc_table[(crc >> 24) ^ *p++];
	return crc;
}

/* cksum appends the length, least significant byte first, then inverts. */
static uint32_t crc_finish(uint32_t crc, uint64_t size)
{
	unsigned char b;

	for (; size; size >>= 8) {
		b = (unsigned char)size;
		crc = crc_update(crc, &b, 1);
	}
	return ~crc;
}

/* The task: arg is a path (not terminated); the value a struct sum. */
static int checksum_file(const void *arg, size_t len, struct mpq_task *t)
{
	char path[4096];
	struct stat st;
	struct sum s = { 0 };
	void *map = NULL;
	int fd, err;

	if (len >= sizeof(path))
		return mpq_task_error(t, -ENAMETOOLONG, "path too long");
	memcpy(path, arg, len);
	path[len] = '\0';
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		err = errno;
		if (fd >= 0)
			close(fd);
		return mpq_task_error(t, -err, "%s: %s", path, strerror(err));
	}
	s.size = (uint64_t)st.st_size;
	if (s.size) {
		map = mmap(NULL, s.size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (map == MAP_FAILED) {
			err = errno;
			close(fd);
			return mpq_task_error(t, -err, "%s: %s", path,
					      strerror(err));
		}
	}
	s.crc = crc_finish(crc_update(0, map, s.size), s.size);
	if (map)
		munmap(map, s.size);
	close(fd);
	return mpq_task_return(t, &s, sizeof(s));
}
MPQ_TASK(checksum_file);	/* spawned workers find it by this name */

/* Each worker builds the CRC table once, before its first task. */
static int worker_init(const void *arg, size_t len)
{
	crc_init();
	return 0;
}
MPQ_TARGET(worker_init);

int main(int argc, char **argv)
{
	struct mpq_pool_attr attr = { .initializer = worker_init };
	char *fallback[] = { argv[0], "/nonexistent/file" };
	struct mpq_async_result *res;
	struct mpq_pool *pool;
	struct iovec *paths;
	char **files;
	int nfiles, opt, ret, i, failed = 0;

	mpq_init(&argc, &argv);		/* a spawned worker runs from here */
	while ((opt = getopt(argc, argv, "j:s")) != -1) {
		if (opt == 'j')
			attr.processes = atoi(optarg);
		else if (opt == 's')
			attr.start_method = MPQ_START_SPAWN;
		else
			return 2;
	}
	files = optind < argc ? argv + optind : fallback;
	nfiles = optind < argc ? argc - optind : 2;
	paths = calloc((size_t)nfiles, sizeof(*paths));
	if (!paths)
		return 1;
	for (i = 0; i < nfiles; i++) {
		paths[i].iov_base = files[i];
		paths[i].iov_len = strlen(files[i]);
	}

	ret = mpq_pool_new(&pool, &attr);
	if (ret) {
		fprintf(stderr, "pool_checksum: %s\n", mpq_strerror(ret));
		return 1;
	}
	/* Blocks until every file is done; chunksize 0 is Python's default. */
	ret = mpq_pool_map(pool, checksum_file, paths, (size_t)nfiles, 0, &res);
	if (!res) {
		fprintf(stderr, "pool_checksum: map: %s\n", mpq_strerror(ret));
		return 1;
	}
	for (i = 0; i < nfiles; i++) {
		const struct sum *s;
		const char *msg;
		size_t len;

		if (mpq_async_result_value(res, (size_t)i, (const void **)&s,
					   &len) == 0 && len == sizeof(*s)) {
			printf("%u %llu %s\n", s->crc,
			       (unsigned long long)s->size, files[i]);
		} else {
			mpq_async_result_error(res, (size_t)i, &msg);
			fprintf(stderr, "pool_checksum: %s\n", msg);
			failed = 1;
		}
	}
	mpq_async_result_free(res);
	mpq_pool_close(pool);
	mpq_pool_join(pool, MPQ_FOREVER);
	mpq_pool_free(pool);
	free(paths);
	return failed;
}
