// SPDX-License-Identifier: MIT
/*
 * The memfd backend, for machines without the module: the queue lives in
 * a memfd (shmem, so shared futexes work on it) laid out exactly as the
 * module lays it out. The library formats the header itself, and a process
 * that opens someone else's memfd checks that header against the file size
 * before it believes it.
 */
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/*
 * A queue's file never shrinks: a participant that could shrink it would
 * turn every other participant's next access into a SIGBUS. It grows, for
 * blobs (qblob.c), which are pages past the ring, punched out once taken.
 * (A pipe's is sealed against growing too.)
 */
#define MPQ_MEMFD_SEALS		(F_SEAL_SHRINK | F_SEAL_GROW)
#define MPQ_MEMFD_QUEUE_SEALS	F_SEAL_SHRINK

static void mpq_memfd_format(void *map, const struct mpq_geom *g)
{
	struct mpq_queue_shm *shm = map;
	unsigned char *slots = (unsigned char *)map + g->data_off;
	uint32_t i;

	shm->magic = MPQ_QUEUE_MAGIC;
	shm->version = MPQ_QUEUE_VERSION;
	shm->capacity = g->capacity;
	shm->msg_max = g->msg_max;
	shm->slot_size = g->slot_size;
	shm->data_off = g->data_off;
	shm->map_size = g->map_size;
	shm->maxsize = g->maxsize;
	shm->blob_end = g->map_size;
	shm->flags = g->flags;
	for (i = 0; i < g->capacity; i++)
		((struct mpq_slot *)(slots + i * g->slot_size))->seq = i;
}

int mpq_memfd_queue_create(const struct mpq_geom *g, int *fd)
{
	void *map;
	int mfd, ret;

	mfd = memfd_create("mpq-queue", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (mfd < 0)
		return -errno;
	/*
	 * Sealed at its size: a participant that could shrink the file would
	 * turn every other participant's next access into a SIGBUS.
	 */
	if (ftruncate(mfd, (off_t)g->map_size) < 0 ||
	    fcntl(mfd, F_ADD_SEALS, MPQ_MEMFD_QUEUE_SEALS | F_SEAL_SEAL) < 0) {
		ret = -errno;
		goto err;
	}
	map = mmap(NULL, g->map_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		   mfd, 0);
	if (map == MAP_FAILED) {
		ret = -errno;
		goto err;
	}
	mpq_memfd_format(map, g);
	munmap(map, g->map_size);
	*fd = mfd;
	return 0;
err:
	close(mfd);
	return ret;
}

/*
 * Read the geometry from a memfd queue's header, and believe it only if it
 * is one mpq_geom_make() could have made and matches the file's size,
 * and only if the file is sealed at that size (see above).
 * Returns 0, -EINVAL (not a queue), -EUCLEAN (a queue, corrupt).
 */
int mpq_memfd_queue_info(int fd, struct mpq_geom *g)
{
	struct mpq_queue_shm hdr;
	struct stat st;
	int seals;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || (size_t)st.st_size < sizeof(hdr))
		return -EINVAL;
	if (pread(fd, &hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr))
		return -EINVAL;
	if (hdr.magic != MPQ_QUEUE_MAGIC)
		return -EINVAL;
	if (hdr.version != MPQ_QUEUE_VERSION)
		return -EUCLEAN;
	g->flags = hdr.flags;
	g->maxsize = hdr.maxsize;
	g->capacity = hdr.capacity;
	g->msg_max = hdr.msg_max;
	g->slot_size = hdr.slot_size;
	g->data_off = hdr.data_off;
	g->map_size = hdr.map_size;
	g->id = 0;
	/* Blobs past the ring make the file longer than the mapping. */
	if (mpq_geom_check(g) || g->map_size > (uint64_t)st.st_size)
		return -EUCLEAN;
	seals = fcntl(fd, F_GET_SEALS);
	if (seals < 0 ||
	    (seals & MPQ_MEMFD_QUEUE_SEALS) != MPQ_MEMFD_QUEUE_SEALS)
		return -EUCLEAN;
	return 0;
}

/*
 * A pipe's region in a sealed memfd, laid out as the module lays it out,
 * and bounded as the module bounds an object by default (its parameter
 * max_object_bytes): -E2BIG past MPQ_BLOCK_MAX_BYTES, so that a ring size
 * one backend takes the other takes too.
 */
int mpq_memfd_pipe_create(uint32_t ring_size, int duplex, int *fd,
			  struct mpq_pipe_geom *g)
{
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	struct mpq_pipe_shm *shm;
	int mfd, ret;

	g->ring_size = ring_size;
	g->data_off[0] = page;
	g->data_off[1] = page + ring_size;
	g->map_size = page + 2 * (uint64_t)ring_size;
	if (g->map_size > MPQ_BLOCK_MAX_BYTES)
		return -E2BIG;

	mfd = memfd_create("mpq-pipe", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (mfd < 0)
		return -errno;
	if (ftruncate(mfd, (off_t)g->map_size) < 0 ||
	    fcntl(mfd, F_ADD_SEALS, MPQ_MEMFD_SEALS | F_SEAL_SEAL) < 0) {
		ret = -errno;
		goto err;
	}
	shm = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (shm == MAP_FAILED) {
		ret = -errno;
		goto err;
	}
	shm->magic = MPQ_PIPE_MAGIC;
	shm->version = MPQ_PIPE_VERSION;
	shm->flags = duplex ? MPQ_PIPE_DUPLEX : 0;
	shm->ring_size = ring_size;
	shm->data_off[0] = g->data_off[0];
	shm->data_off[1] = g->data_off[1];
	shm->map_size = g->map_size;
	munmap(shm, page);
	*fd = mfd;
	return 0;
err:
	close(mfd);
	return ret;
}

/*
 * A pipe's geometry from its memfd, believed only if it is one
 * mpq_memfd_pipe_create() could have made, at the file's sealed size.
 */
int mpq_memfd_pipe_info(int fd, struct mpq_pipe_geom *g, uint32_t *flags)
{
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	struct mpq_pipe_shm hdr;
	struct stat st;
	int seals;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || (size_t)st.st_size < sizeof(hdr) ||
	    pread(fd, &hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr) ||
	    hdr.magic != MPQ_PIPE_MAGIC)
		return -EINVAL;
	if (hdr.version != MPQ_PIPE_VERSION ||
	    hdr.ring_size < MPQ_PIPE_RING_MIN ||
	    hdr.ring_size > MPQ_PIPE_RING_MAX ||
	    hdr.ring_size & (hdr.ring_size - 1) ||
	    hdr.data_off[0] != page || hdr.data_off[1] != page + hdr.ring_size ||
	    hdr.map_size != page + 2 * (uint64_t)hdr.ring_size ||
	    hdr.map_size != (uint64_t)st.st_size)
		return -EUCLEAN;
	seals = fcntl(fd, F_GET_SEALS);
	if (seals < 0 || (seals & MPQ_MEMFD_SEALS) != MPQ_MEMFD_SEALS)
		return -EUCLEAN;
	g->ring_size = hdr.ring_size;
	g->data_off[0] = hdr.data_off[0];
	g->data_off[1] = hdr.data_off[1];
	g->map_size = hdr.map_size;
	*flags = hdr.flags & MPQ_PIPE_DUPLEX;
	return 0;
}

/*
 * A memfd queue's id for tracers (see probes.h): its inode number, unique
 * among live memfds, with the top bit set so that it never equals the id
 * of a module object.
 */
uint64_t mpq_memfd_queue_id(int fd)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return 1ULL << 63;
	return 1ULL << 63 | (uint64_t)st.st_ino;
}
