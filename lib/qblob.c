// SPDX-License-Identifier: MIT
/*
 * Blobs: a queue's messages out of line (see lib/queue.c for why and
 * when). A blob is memory that the queue owns, by an id that fits in a
 * slot's 8 bytes (struct mpq_slot_ext), from the put that makes it until the get
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
 *
 * Recycling. Making a blob (allocating and zeroing its pages, mapping
 * them, and punching or freeing them once taken) cost 20-35 times the
 * copy itself, so blobs are kept rather than freed: an id carries its
 * size class (a power of two of pages, in its low 6 bits: with memfd the
 * offset in pages above them, with the module its table id), a blob of up
 * to MPQ_BLOB_RECYCLE bytes is made a whole class big, and a consumer
 * done with one puts it in the header's pool (blob_free and
 * blob_free_more, 64 entries, taken and given by a CAS each) for the next
 * put of that class, instead of freeing it; only when the pool is full,
 * or holds MPQ_BLOB_POOL_CLASS of that class, does it go. Each handle
 * also keeps the blobs it used last mapped (struct mpq_qblob_maps, up to
 * MPQ_BLOB_MAPPED), so that a message that goes round the same blobs
 * makes no system call at all: put and get are one copy each. Larger
 * blobs are made and freed per message as before (their copy dwarfs the
 * rest). Pooled blobs stay charged to their maker (kmod) or allocated in
 * the file (memfd) until reused or the queue goes. A memfd offset is
 * never handed out twice, so a mapping kept of a blob freed since is
 * never used again; with the module a kept mapping holds its block until
 * the handle drops it (MPQ_BLOB_MAPPED at most), and its ids are never
 * handed out twice either (MPQ_QUEUE_BLOB_ID_MAX): a kept mapping, a
 * pooled entry or a descriptor that names an id gone can miss, never
 * reach another message's blob.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/ioctl.h>
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
/* The largest blob kept for reuse rather than freed. */
#define MPQ_BLOB_RECYCLE	(8ULL << 20)
#define MPQ_BLOB_CLASS_BITS	6
#define MPQ_BLOB_CLASS_MASK	((1ULL << MPQ_BLOB_CLASS_BITS) - 1)
#define MPQ_BLOB_NFREE1 \
	(sizeof(((struct mpq_queue_shm *)0)->blob_free) / sizeof(uint64_t))
#define MPQ_BLOB_NFREE	(MPQ_BLOB_NFREE1 + \
	sizeof(((struct mpq_queue_shm *)0)->blob_free_more) / sizeof(uint64_t))
/* The pool holds at most this much of one class (4 MiB: 64 of 64 KiB). */
#define MPQ_BLOB_POOL_CLASS	(32ULL << 20)
/* A handle keeps at most this much mapped. */
#define MPQ_BLOB_MAPPED		(32ULL << 20)

/* Entry i of the pool: blob_free, then blob_free_more. */
static __u64 *mpq_blob_pool_at(struct mpq_queue *q, unsigned int i)
{
	return i < MPQ_BLOB_NFREE1 ? &q->shm->blob_free[i] :
	       &q->shm->blob_free_more[i - MPQ_BLOB_NFREE1];
}

static uint64_t mpq_blob_page(void)
{
	return (uint64_t)sysconf(_SC_PAGESIZE);
}

static uint64_t mpq_blob_pages(uint64_t bytes)
{
	uint64_t page = mpq_blob_page();

	return (bytes + page - 1) & ~(page - 1);
}

/* The class of a blob of bytes: the power of two of pages that holds it. */
static unsigned int mpq_blob_class(uint64_t bytes)
{
	unsigned int c = 0;

	while ((mpq_blob_page() << c) < bytes)
		c++;
	return c;
}

/* An id's class and its span, the bytes its class stands for. */
static unsigned int mpq_blob_id_class(uint64_t id)
{
	return (unsigned int)(id & MPQ_BLOB_CLASS_MASK);
}

static int mpq_blob_recycled(unsigned int c)
{
	return (mpq_blob_page() << c) <= MPQ_BLOB_RECYCLE;
}

/*
 * How many bytes of a blob of id holding bytes to map: a recycled class
 * whole for a mapping kept for the next message, else its pages only. 0:
 * no such blob (a class past any file, a message bigger than its class).
 */
static uint64_t mpq_blob_map_len(uint64_t id, uint64_t bytes, int whole)
{
	unsigned int c = mpq_blob_id_class(id);
	uint64_t span;

	if (c > 50)
		return 0;
	span = mpq_blob_page() << c;
	if (bytes > span)
		return 0;
	return whole ? span : mpq_blob_pages(bytes ? bytes : 1);
}

/* memfd: the offset in the file of id, 0 if it cannot be one. */
static uint64_t mpq_blob_off(struct mpq_queue *q, uint64_t id)
{
	uint64_t off = (id >> MPQ_BLOB_CLASS_BITS) * mpq_blob_page();
	uint64_t span = mpq_blob_page() << mpq_blob_id_class(id);

	if (off < q->map_size || off > MPQ_BLOB_SPACE ||
	    span > MPQ_BLOB_SPACE - off)
		return 0;
	return off;
}

/*
 * A pool entry in transit: a blob on its way between the pool and record
 * i (the top bit, then i in the next 6 bits, then the id: ids stay below
 * 2^57, see mpq_blob_off and mpq_qblob_from_arg). A take or a give moves
 * a blob in three steps, each a single store or CAS: the entry becomes
 * T(i, id); the record's blob changes (to id for a take, to 0 for a
 * give); the entry becomes 0 (take) or id (give). Whoever finds record i
 * dead settles its entries in transit by that middle step alone (see
 * mpq_qblob_settle): the record names the blob, so it has it and the
 * entry goes; or not, so the pool has it. No instant of either leaks the
 * blob or puts it in two places.
 */
#define MPQ_BLOB_TRANSIT	(1ULL << 63)
#define MPQ_BLOB_TRANSIT_SHIFT	57
#define MPQ_BLOB_ID_MASK	((1ULL << MPQ_BLOB_TRANSIT_SHIFT) - 1)

static uint64_t mpq_blob_transit(struct mpq_queue *q, struct mpq_queue_rec *r,
				 uint64_t id)
{
	uint64_t i = (uint64_t)(r - q->recs);

	return MPQ_BLOB_TRANSIT | i << MPQ_BLOB_TRANSIT_SHIFT | id;
}

/*
 * A freed blob of class c from the header's pool, or 0; held by r (if r)
 * from the instant it leaves the pool (see MPQ_BLOB_TRANSIT).
 */
static uint64_t mpq_blob_pool_take(struct mpq_queue *q, unsigned int c,
				   struct mpq_queue_rec *r)
{
	unsigned int i;

	for (i = 0; i < MPQ_BLOB_NFREE; i++) {
		__u64 *f = mpq_blob_pool_at(q, i);
		__u64 v = __atomic_load_n(f, __ATOMIC_RELAXED), t;

		if (!v || v & MPQ_BLOB_TRANSIT || v > MPQ_BLOB_ID_MASK ||
		    mpq_blob_id_class(v) != c)
			continue;
		t = r ? mpq_blob_transit(q, r, v) : 0;
		if (!__atomic_compare_exchange_n(f, &v, t, 0, __ATOMIC_ACQ_REL,
						 __ATOMIC_RELAXED))
			continue;
		if (r) {
			__atomic_store_n(&r->blob, v, __ATOMIC_SEQ_CST);
			__atomic_compare_exchange_n(f, &t, 0, 0,
						    __ATOMIC_RELEASE,
						    __ATOMIC_RELAXED);
		}
		return v;
	}
	return 0;
}

/*
 * Put a blob nobody uses any more in the pool: 0, or -ENOSPC (full, or
 * MPQ_BLOB_POOL_CLASS of its class there already). r, if not NULL, holds
 * it until the pool does (see MPQ_BLOB_TRANSIT).
 */
static int mpq_blob_pool_give(struct mpq_queue *q, uint64_t id,
			      struct mpq_queue_rec *r)
{
	unsigned int c = mpq_blob_id_class(id), i, have = 0, max, at = 0;
	int free_at = -1;
	__u64 want;

	if (id > MPQ_BLOB_ID_MASK)
		return -ENOSPC;
	want = r ? mpq_blob_transit(q, r, id) : id;
	max = (unsigned int)(MPQ_BLOB_POOL_CLASS / (mpq_blob_page() << c));
	for (i = 0; i < MPQ_BLOB_NFREE; i++) {
		__u64 v = __atomic_load_n(mpq_blob_pool_at(q, i),
					  __ATOMIC_RELAXED);

		if (!v && free_at < 0)
			free_at = (int)i;
		else if (v && mpq_blob_id_class(v) == c)
			have++;
	}
	if ((have >= max && have) || free_at < 0)
		return -ENOSPC;
	for (i = 0; i < MPQ_BLOB_NFREE; i++) {
		__u64 *f = mpq_blob_pool_at(q, (at + (unsigned int)free_at) %
					       MPQ_BLOB_NFREE);
		__u64 v = 0;

		at++;
		if (!__atomic_compare_exchange_n(f, &v, want, 0,
						 __ATOMIC_ACQ_REL,
						 __ATOMIC_RELAXED))
			continue;
		if (r) {
			__atomic_store_n(&r->blob, 0, __ATOMIC_SEQ_CST);
			__atomic_compare_exchange_n(f, &want, id, 0,
						    __ATOMIC_RELEASE,
						    __ATOMIC_RELAXED);
		}
		return 0;
	}
	return -ENOSPC;
}

/*
 * r's holder died: its pool entries in transit go where its blob says
 * (see MPQ_BLOB_TRANSIT). Before anything reads r->blob. A repairer that
 * dies in the middle leaves the same question with the same answer.
 */
void mpq_qblob_settle(struct mpq_queue *q, struct mpq_queue_rec *r)
{
	uint64_t mine = mpq_blob_transit(q, r, 0);
	unsigned int i;

	for (i = 0; i < MPQ_BLOB_NFREE; i++) {
		__u64 *f = mpq_blob_pool_at(q, i);
		__u64 v = __atomic_load_n(f, __ATOMIC_ACQUIRE), id;

		if ((v & ~MPQ_BLOB_ID_MASK) != mine)
			continue;
		id = v & MPQ_BLOB_ID_MASK;
		__atomic_compare_exchange_n(f, &v,
			__atomic_load_n(&r->blob, __ATOMIC_ACQUIRE) == id ?
			0 : id, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
	}
}

/* The handle's kept mappings, made on first use; NULL: none (no memory). */
static struct mpq_qblob_maps *mpq_blob_maps_lock(struct mpq_queue *q)
{
	struct mpq_qblob_maps *m = __atomic_load_n(&q->bmaps, __ATOMIC_ACQUIRE);

	if (!m) {
		struct mpq_qblob_maps *n = calloc(1, sizeof(*n)), *old = NULL;

		if (!n)
			return NULL;
		if (__atomic_compare_exchange_n(&q->bmaps, &old, n, 0,
						__ATOMIC_ACQ_REL,
						__ATOMIC_ACQUIRE)) {
			m = n;
		} else {
			free(n);
			m = old;
		}
	}
	if (__atomic_exchange_n(&m->lock, 1, __ATOMIC_ACQUIRE))
		return NULL;
	return m;
}

static void mpq_blob_maps_unlock(struct mpq_qblob_maps *m)
{
	__atomic_store_n(&m->lock, 0, __ATOMIC_RELEASE);
}

/* Take id's kept mapping out of the cache (ours alone till kept again). */
static int mpq_blob_maps_get(struct mpq_queue *q, uint64_t id,
			     struct mpq_qblob *b)
{
	struct mpq_qblob_maps *m = mpq_blob_maps_lock(q);
	unsigned int i;
	int ret = 0;

	if (!m)
		return 0;
	for (i = 0; i < MPQ_QBLOB_MAPS; i++) {
		if (m->m[i].map && m->m[i].id == id) {
			*b = m->m[i];
			m->m[i].map = NULL;
			ret = 1;
			break;
		}
	}
	mpq_blob_maps_unlock(m);
	return ret;
}

/* Keep b mapped, the least recently kept one unmapped if need be. */
static void mpq_blob_maps_keep(struct mpq_queue *q, struct mpq_qblob *b)
{
	struct mpq_qblob_maps *m = mpq_blob_maps_lock(q);
	struct mpq_qblob old;
	unsigned int i;
	int v, lru;

	if (!m) {
		mpq_qblob_unmap(b);
		return;
	}
	/* A free entry, within MPQ_BLOB_MAPPED: the oldest go till so. */
	for (;;) {
		uint64_t mapped = b->map_len;

		v = -1;
		lru = -1;
		for (i = 0; i < MPQ_QBLOB_MAPS; i++) {
			if (!m->m[i].map) {
				if (v < 0)
					v = (int)i;
				continue;
			}
			mapped += m->m[i].map_len;
			if (lru < 0 || m->used[i] < m->used[lru])
				lru = (int)i;
		}
		if (v >= 0 && mapped <= MPQ_BLOB_MAPPED)
			break;
		if (lru < 0) {		/* b alone is over the bound */
			mpq_blob_maps_unlock(m);
			mpq_qblob_unmap(b);
			return;
		}
		old = m->m[lru];
		m->m[lru].map = NULL;
		mpq_qblob_unmap(&old);
	}
	m->m[v] = *b;
	m->used[v] = ++m->tick;
	mpq_blob_maps_unlock(m);
	b->map = NULL;
}

/* A blob freed for good is not kept mapped here (kmod: it holds it). */
static void mpq_blob_maps_evict(struct mpq_queue *q, uint64_t id)
{
	struct mpq_qblob b;

	if (mpq_blob_maps_get(q, id, &b))
		mpq_qblob_unmap(&b);
}

void mpq_qblob_forget(struct mpq_queue *q)
{
	struct mpq_qblob_maps *m = q->bmaps;
	unsigned int i;

	if (!m)
		return;
	for (i = 0; i < MPQ_QBLOB_MAPS; i++)
		mpq_qblob_unmap(&m->m[i]);
	q->bmaps = NULL;
	free(m);
}

/*
 * kmod: MPQ_IOC_QUEUE_BLOB_NEW with its argument in r's blob_arg, where the
 * kernel writes the new id before the call returns: killed on the way
 * back, the blob is still r's for whoever finds r dead.
 */
static int mpq_blob_kmod_new(struct mpq_queue *q, struct mpq_queue_rec *r,
			     uint64_t *kid, uint64_t bytes)
{
	struct mpq_queue_blob *a = &r->blob_arg;
	int fd;

	a->bytes = bytes;
	a->flags = MPQ_CREATE_CLOEXEC;
	a->reserved = 0;
	__atomic_store_n(&a->id, 0, __ATOMIC_RELEASE);
	fd = ioctl(q->fd, MPQ_IOC_QUEUE_BLOB_NEW, a);
	if (fd < 0)
		return -errno;
	*kid = __atomic_load_n(&a->id, __ATOMIC_RELAXED);
	return fd;
}

uint64_t mpq_qblob_from_arg(struct mpq_queue *q, uint64_t kid, uint64_t bytes)
{
	if (q->backend != MPQ_BACKEND_KMOD || !kid ||
	    kid > MPQ_QUEUE_BLOB_ID_MAX ||
	    !bytes || bytes > MPQ_BLOB_SPACE)
		return 0;
	return kid << MPQ_BLOB_CLASS_BITS | mpq_blob_class(bytes);
}

/* Make a new blob of class c for bytes, mapped in b (and held by r). */
static int mpq_blob_make(struct mpq_queue *q, uint64_t bytes, unsigned int c,
			 int whole, struct mpq_qblob *b,
			 struct mpq_queue_rec *r)
{
	uint64_t span = mpq_blob_page() << c, off, id;
	uint64_t len = mpq_blob_recycled(c) ? span :
		       mpq_blob_pages(bytes ? bytes : 1);
	/* The module maps a block whole or not at all. */
	uint64_t mlen = whole || q->backend == MPQ_BACKEND_KMOD ? len :
			mpq_blob_pages(bytes ? bytes : 1);
	void *map;
	int fd, ret;

	if (q->backend == MPQ_BACKEND_KMOD) {
		uint64_t kid = 0, got = len;

		if (r)
			fd = mpq_blob_kmod_new(q, r, &kid, got);
		else
			fd = mpq_kmod_blob(q->fd, MPQ_IOC_QUEUE_BLOB_NEW, &kid,
					   &got);
		if (fd < 0)
			return fd;
		id = kid << MPQ_BLOB_CLASS_BITS | c;
		if (r) {
			__atomic_store_n(&r->blob, id, __ATOMIC_RELEASE);
			__atomic_store_n(&r->blob_arg.id, 0, __ATOMIC_RELEASE);
		}
		map = mmap(NULL, mlen, PROT_READ | PROT_WRITE,
			   MAP_SHARED | MAP_POPULATE, fd, 0);
		close(fd);
		if (map == MAP_FAILED) {
			uint64_t zero = 0;

			if (r)
				__atomic_store_n(&r->blob, 0, __ATOMIC_RELEASE);
			mpq_kmod_blob(q->fd, MPQ_IOC_QUEUE_BLOB_DROP, &kid,
				      &zero);
			return -ENOMEM;
		}
	} else {
		off = __atomic_fetch_add(&q->shm->blob_end, span,
					 __ATOMIC_RELAXED);
		if (off < q->map_size || off % mpq_blob_page() ||
		    off > MPQ_BLOB_SPACE || span > MPQ_BLOB_SPACE - off)
			return off > MPQ_BLOB_SPACE ? -ENOSPC : -EUCLEAN;
		id = off / mpq_blob_page() << MPQ_BLOB_CLASS_BITS | c;
		/* Held before its pages exist: a death leaks no page. */
		if (r)
			__atomic_store_n(&r->blob, id, __ATOMIC_RELEASE);
		/* Allocated now: no memory is an error here, not a SIGBUS. */
		if (fallocate(q->fd, 0, (off_t)off, (off_t)len) < 0) {
			ret = errno == ENOSPC ? -ENOMEM : -errno;
			if (r)
				__atomic_store_n(&r->blob, 0, __ATOMIC_RELEASE);
			fallocate(q->fd, FALLOC_FL_PUNCH_HOLE |
				  FALLOC_FL_KEEP_SIZE, (off_t)off,
				  (off_t)span);
			return ret;
		}
		map = mmap(NULL, mlen, PROT_READ | PROT_WRITE,
			   MAP_SHARED | MAP_POPULATE,
			   q->fd, (off_t)off);
		if (map == MAP_FAILED) {
			if (r)
				__atomic_store_n(&r->blob, 0, __ATOMIC_RELEASE);
			fallocate(q->fd, FALLOC_FL_PUNCH_HOLE |
				  FALLOC_FL_KEEP_SIZE, (off_t)off,
				  (off_t)span);
			return -ENOMEM;
		}
	}
	b->id = id;
	b->map = map;
	b->map_len = mlen;
	return 0;
}

static int mpq_blob_open(struct mpq_queue *q, uint64_t id, uint64_t bytes,
			 int whole, struct mpq_qblob *b);

/*
 * A blob for bytes, mapped in b: a pooled one of its class if there is
 * one (one the pool held that cannot be opened is forgotten: someone
 * scribbled it), else a new one.
 */
int mpq_qblob_new_held(struct mpq_queue *q, uint64_t bytes,
		       struct mpq_qblob *b, struct mpq_queue_rec *r)
{
	unsigned int c;

	if (bytes > SIZE_MAX / 2 || bytes > MPQ_BLOB_SPACE / 2)
		return -E2BIG;
	c = mpq_blob_class(bytes ? bytes : 1);
	if (mpq_blob_recycled(c)) {
		uint64_t id = mpq_blob_pool_take(q, c, r);

		if (id && !mpq_qblob_open(q, id, bytes, b))
			return 0;
	}
	return mpq_blob_make(q, bytes, c, 0, b, r);
}

int mpq_qblob_new(struct mpq_queue *q, uint64_t bytes, struct mpq_qblob *b)
{
	return mpq_qblob_new_held(q, bytes, b, NULL);
}

int mpq_qblob_open(struct mpq_queue *q, uint64_t id, uint64_t bytes,
		   struct mpq_qblob *b)
{
	return mpq_blob_open(q, id, bytes, 0, b);
}

static int mpq_blob_open(struct mpq_queue *q, uint64_t id, uint64_t bytes,
			 int whole, struct mpq_qblob *b)
{
	int kmod = q->backend == MPQ_BACKEND_KMOD;
	uint64_t len = mpq_blob_map_len(id, bytes, whole || kmod);
	void *map;

	if (bytes > SIZE_MAX / 2 || !len)
		return -EUCLEAN;
	if (kmod) {
		uint64_t have = 0, kid = id >> MPQ_BLOB_CLASS_BITS;
		int fd = mpq_kmod_blob(q->fd, MPQ_IOC_QUEUE_BLOB_OPEN, &kid,
				       &have);

		if (fd < 0)
			return fd == -ENOENT || fd == -EINVAL ? -EUCLEAN : fd;
		/* Whole or not at all: a large one as big as it was made. */
		if (!mpq_blob_recycled(mpq_blob_id_class(id)) && have >= bytes)
			len = mpq_blob_pages(have);
		if (mpq_blob_pages(have) != len || have < bytes) {
			close(fd);
			return -EUCLEAN;
		}
		map = mmap(NULL, len, PROT_READ | PROT_WRITE,
			   MAP_SHARED | MAP_POPULATE, fd, 0);
		close(fd);
	} else {
		uint64_t off = mpq_blob_off(q, id);
		struct stat st;

		if (!off)
			return -EUCLEAN;
		/* Past the end of the file a mapping would SIGBUS. */
		if (fstat(q->fd, &st) < 0)
			return -errno;
		if (off + len > (uint64_t)st.st_size)
			return -EUCLEAN;
		map = mmap(NULL, len, PROT_READ | PROT_WRITE,
			   MAP_SHARED | MAP_POPULATE,
			   q->fd, (off_t)off);
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

/*
 * The message is taken (or was never put): the blob goes back to the
 * pool, or, a large one or the pool full, its memory goes.
 */
void mpq_qblob_drop(struct mpq_queue *q, uint64_t id, uint64_t bytes)
{
	(void)bytes;	/* the id says how big the blob is */
	if (!mpq_blob_map_len(id, 0, 0))
		return;
	if (mpq_blob_recycled(mpq_blob_id_class(id)) &&
	    !mpq_blob_pool_give(q, id, NULL))
		return;
	mpq_qblob_free(q, id);
}

/*
 * The blob's memory goes, not to the pool: a dead holder's, which may
 * have died in the middle of allocating it (a killed fallocate undoes
 * what it did).
 */
void mpq_qblob_free(struct mpq_queue *q, uint64_t id)
{
	unsigned int c = mpq_blob_id_class(id);
	uint64_t off;

	if (!mpq_blob_map_len(id, 0, 0))
		return;
	/* The system call first: a death in it still frees (see release). */
	if (q->backend == MPQ_BACKEND_KMOD) {
		uint64_t zero = 0, kid = id >> MPQ_BLOB_CLASS_BITS;

		mpq_kmod_blob(q->fd, MPQ_IOC_QUEUE_BLOB_DROP, &kid, &zero);
	} else {
		off = mpq_blob_off(q, id);
		if (off)
			fallocate(q->fd, FALLOC_FL_PUNCH_HOLE |
				  FALLOC_FL_KEEP_SIZE, (off_t)off,
				  (off_t)(mpq_blob_page() << c));
	}
	mpq_blob_maps_evict(q, id);
}

/*
 * A blob holding a copy of msg, for put(): a recycled blob through the
 * mapping this handle kept of it, when it has one.
 */
int mpq_qblob_copy_in(struct mpq_queue *q, const void *msg, size_t len,
		      uint64_t *id, struct mpq_queue_rec *r)
{
	unsigned int c = mpq_blob_class(len ? len : 1);
	struct mpq_qblob b;
	int ret;

	if (len > SIZE_MAX / 2 || len > MPQ_BLOB_SPACE / 2)
		return -E2BIG;
	if (!mpq_blob_recycled(c)) {
		ret = mpq_blob_make(q, len, c, 0, &b, r);
		if (ret)
			return ret;
		memcpy(b.map, msg, len);
		mpq_qblob_unmap(&b);
		*id = b.id;
		return 0;
	}
	*id = mpq_blob_pool_take(q, c, r);
	if (!*id || (!mpq_blob_maps_get(q, *id, &b) &&
		     mpq_blob_open(q, *id, len, 1, &b))) {
		ret = mpq_blob_make(q, len, c, 1, &b, r);
		if (ret)
			return ret;
	}
	memcpy(b.map, msg, len);
	*id = b.id;
	mpq_blob_maps_keep(q, &b);
	return 0;
}

/*
 * The blob r holds goes, to the pool or for good; r names it until the
 * pool does (MPQ_BLOB_TRANSIT), or until its memory went: killed in
 * between, whoever finds r dead frees it again, which does nothing (a
 * memfd offset and a module id are never handed out twice): neither
 * leaked nor given to two.
 */
void mpq_qblob_release(struct mpq_queue *q, struct mpq_queue_rec *r)
{
	uint64_t id = __atomic_load_n(&r->blob, __ATOMIC_ACQUIRE);

	if (!id)
		return;
	if (mpq_blob_map_len(id, 0, 0) &&
	    mpq_blob_recycled(mpq_blob_id_class(id)) &&
	    !mpq_blob_pool_give(q, id, r))
		return;
	mpq_qblob_free(q, id);
	__atomic_store_n(&r->blob, 0, __ATOMIC_RELEASE);
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
	int ret, kept = mpq_blob_recycled(mpq_blob_id_class(e->id));

	if (!kept || !mpq_blob_maps_get(q, e->id, &b)) {
		ret = mpq_blob_open(q, e->id, e->len, kept, &b);
		if (ret)
			return ret;
	}
	ret = e->len > b.map_len ? -EUCLEAN : 0;
	if (!ret)
		memcpy(buf, b.map, e->len);
	if (kept)
		mpq_blob_maps_keep(q, &b);
	else
		mpq_qblob_unmap(&b);
	return ret;
}
