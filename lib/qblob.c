// SPDX-License-Identifier: MIT
/*
 * Blobs: a queue's messages out of line (see lib/queue.c for why and
 * when). A blob is memory that the queue owns, by an id that fits in a
 * slot (struct mpq_slot_ext), from the put that makes it until the get
 * that takes its message, and that any process mapping the queue can map:
 *
 *  - kmod: an anonymous SharedMemory block the module holds in the
 *    queue's table (MPQ_IOC_QUEUE_BLOB_*): charged to the creator's
 *    per-user budget like any block (-EDQUOT past it), freed when dropped
 *    and unmapped, or with the queue;
 *  - memfd: pages of the queue's own file, past the ring (the file is
 *    sealed against shrinking, not growing): the id is the offset, handed
 *    out by a bump of blob_end in the header and never reused, the pages
 *    allocated with fallocate (-ENOSPC/-ENOMEM then, not a SIGBUS later)
 *    and punched out when dropped, so the memory goes back as messages are
 *    taken. A hole reads as zeros: a scribbled id maps garbage, no fault.
 *
 * Nothing read from the shared memory is trusted: an id and a length are
 * checked against the file (memfd) or the module's record of the blob
 * (kmod) before anything is mapped.
 */
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/*
 * memfd: how far past the ring blobs may go over the queue's life (a
 * scribbled blob_end stops there too): 2^62 bytes, decades at memory
 * speed, within a file's 2^63.
 */
#define MPQ_BLOB_SPACE		(1ULL << 62)

static uint64_t mpq_blob_pages(uint64_t bytes)
{
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);

	return (bytes + page - 1) & ~(page - 1);
}

int mpq_qblob_new(struct mpq_queue *q, uint64_t bytes, struct mpq_qblob *b)
{
	uint64_t len = mpq_blob_pages(bytes ? bytes : 1), off;
	void *map;
	int fd;

	if (bytes > SIZE_MAX / 2)
		return -E2BIG;
	if (q->backend == MPQ_BACKEND_KMOD) {
		uint64_t id = 0, got = bytes ? bytes : 1;

		fd = mpq_kmod_blob(q->fd, MPQ_IOC_QUEUE_BLOB_NEW, &id, &got);
		if (fd < 0)
			return fd;
		map = mmap(NULL, len, PROT_READ | PROT_WRITE,
			   MAP_SHARED | MAP_POPULATE, fd, 0);
		close(fd);
		if (map == MAP_FAILED) {
			uint64_t zero = 0;

			mpq_kmod_blob(q->fd, MPQ_IOC_QUEUE_BLOB_DROP, &id, &zero);
			return -ENOMEM;
		}
		b->id = id;
	} else {
		off = __atomic_fetch_add(&q->shm->blob_end, len,
					 __ATOMIC_RELAXED);
		if (off < q->map_size || off % mpq_blob_pages(1) ||
		    off > MPQ_BLOB_SPACE || len > MPQ_BLOB_SPACE - off)
			return off > MPQ_BLOB_SPACE ? -ENOSPC : -EUCLEAN;
		/* Allocated now: no memory is an error here, not a SIGBUS. */
		if (fallocate(q->fd, 0, (off_t)off, (off_t)len) < 0)
			return errno == ENOSPC ? -ENOMEM : -errno;
		map = mmap(NULL, len, PROT_READ | PROT_WRITE,
			   MAP_SHARED | MAP_POPULATE,
			   q->fd, (off_t)off);
		if (map == MAP_FAILED) {
			mpq_qblob_drop(q, off, bytes);
			return -ENOMEM;
		}
		b->id = off;
	}
	b->map = map;
	b->map_len = len;
	return 0;
}

int mpq_qblob_open(struct mpq_queue *q, uint64_t id, uint64_t bytes,
		   struct mpq_qblob *b)
{
	uint64_t len = mpq_blob_pages(bytes ? bytes : 1);
	void *map;

	if (bytes > SIZE_MAX / 2)
		return -EUCLEAN;
	if (q->backend == MPQ_BACKEND_KMOD) {
		uint64_t have = 0;
		int fd = mpq_kmod_blob(q->fd, MPQ_IOC_QUEUE_BLOB_OPEN, &id,
				       &have);

		if (fd < 0)
			return fd == -ENOENT || fd == -EINVAL ? -EUCLEAN : fd;
		if (have < bytes) {
			close(fd);
			return -EUCLEAN;
		}
		map = mmap(NULL, len, PROT_READ | PROT_WRITE,
			   MAP_SHARED | MAP_POPULATE, fd, 0);
		close(fd);
	} else {
		struct stat st;

		if (id < q->map_size || id % mpq_blob_pages(1) ||
		    id > MPQ_BLOB_SPACE || len > MPQ_BLOB_SPACE - id)
			return -EUCLEAN;
		/* Past the end of the file a mapping would SIGBUS. */
		if (fstat(q->fd, &st) < 0)
			return -errno;
		if (id + len > (uint64_t)st.st_size)
			return -EUCLEAN;
		map = mmap(NULL, len, PROT_READ | PROT_WRITE,
			   MAP_SHARED | MAP_POPULATE,
			   q->fd, (off_t)id);
	}
	if (map == MAP_FAILED)
		return -ENOMEM;
	b->map = map;
	b->map_len = len;
	b->id = id;
	return 0;
}

void mpq_qblob_unmap(struct mpq_qblob *b)
{
	if (b->map)
		munmap(b->map, b->map_len);
	b->map = NULL;
}

/* The message is taken (or was never put): let the memory go. */
void mpq_qblob_drop(struct mpq_queue *q, uint64_t id, uint64_t bytes)
{
	uint64_t len = mpq_blob_pages(bytes ? bytes : 1);

	if (q->backend == MPQ_BACKEND_KMOD) {
		uint64_t zero = 0;

		mpq_kmod_blob(q->fd, MPQ_IOC_QUEUE_BLOB_DROP, &id, &zero);
		return;
	}
	if (id < q->map_size || id % mpq_blob_pages(1) ||
	    id > MPQ_BLOB_SPACE || len > MPQ_BLOB_SPACE - id)
		return;
	fallocate(q->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		  (off_t)id, (off_t)len);
}

/*
 * Copy an out-of-line message into buf, which has room for e->len bytes
 * (checked by the caller against its own copy of e). Returns 0, -EUCLEAN
 * (the blob is not there: a corrupt descriptor), or -ENOMEM and the like
 * (could not map it now: the message stays where it is).
 */
int mpq_qblob_take(struct mpq_queue *q, const struct mpq_slot_ext *e,
		   void *buf)
{
	struct mpq_qblob b;
	int ret = mpq_qblob_open(q, e->id, e->len, &b);

	if (ret)
		return ret;
	memcpy(buf, b.map, e->len);
	mpq_qblob_unmap(&b);
	return 0;
}
