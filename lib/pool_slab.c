// SPDX-License-Identifier: MIT
/*
 * The memory of a pool's small jobs, all of one size: those of under 64
 * items whose argument, if any, fits in the job (an apply's of up to
 * POOL_SLAB_ARG bytes), so that the job is all the memory they need.
 *
 * Why not malloc: a caller that submits many applies before it collects
 * them holds them all at once, and from malloc each page of the growing
 * heap is a page fault of its own. At 100,000 live jobs those faults were
 * about a third of the caller's time (perf). Here jobs come from chunks
 * that double from 64 KiB up to 2 MiB, each faulted in by one call as it
 * is made, and freed jobs are reused last in, first out, while their
 * lines are still in the cache.
 *
 * Small pages, on purpose. Chunks used to be huge-page aligned and
 * advised (MADV_HUGEPAGE): one fault per 2 MiB. On a virtual machine
 * whose host backs guest memory as it is first touched, a huge page is
 * a lottery: the kernel takes it from whatever order-9 block is free, and
 * a block the guest never used costs the host's faults for all of it. A
 * 48 MiB populate took 2 ms warm and 120 ms cold with huge pages, 15 ms
 * with small ones, which come from memory freed a moment ago; 100,000
 * applies ran at 0.8-9.5 M/s with huge pages (a third of the runs under
 * 1 M/s) and 2.7-4.5 M/s without (bench/README.md). So chunks say
 * MADV_NOHUGEPAGE, which also keeps a system whose THP is "always" from
 * choosing for us.
 *
 * Any thread allocates (apply_async) under the slab's mutex. A free only
 * pushes the object onto an atomic list, because the handler thread frees
 * jobs too and must not wait for an allocator; an allocator whose own list
 * is empty takes that list whole. Push and take-all cannot suffer ABA.
 *
 * The slab lives while the pool or any of its jobs does (refs: one per
 * live object, one for the pool). An allocation that finds no job live
 * starts again from the first chunk and unmaps the others, so a burst of
 * jobs does not keep its memory for the pool's life.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "pool.h"

/*
 * Under AddressSanitizer a freed job stays poisoned until it is handed
 * out again, past its first word (the free list's link), so that a use
 * after free is still caught as it was with malloc.
 */
#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/asan_interface.h>
#define slab_poison(p, n)	ASAN_POISON_MEMORY_REGION(p, n)
#define slab_unpoison(p, n)	ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define slab_poison(p, n)	((void)(p), (void)(n))
#define slab_unpoison(p, n)	((void)(p), (void)(n))
#endif

#define POOL_SLAB_FIRST		(64UL << 10)
#define POOL_SLAB_LAST		(2UL << 20)

/* At the start of each chunk; objects begin POOL_SLAB_HDR after it. */
struct pool_slab_chunk {
	struct pool_slab_chunk *next;	/* older */
	size_t size;
};

#define POOL_SLAB_HDR	64

struct pool_slab {
	pthread_mutex_t lock;
	size_t obj;				/* a multiple of 64 */
	/* Under lock. */
	struct pool_slab_chunk *chunks;		/* newest first */
	unsigned char *bump, *end;		/* the newest's unused part */
	void *free;				/* the allocators' list */
	size_t next_size;
	/* Atomic. */
	void *returned;				/* pushed by pool_slab_free */
	uint64_t refs;
};

struct pool_slab *pool_slab_new(size_t obj)
{
	struct pool_slab *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	pthread_mutex_init(&s->lock, NULL);
	/* Whole lines: the handler writes one job while the caller reads
	 * the next. */
	s->obj = (obj + 63) & ~(size_t)63;
	s->next_size = POOL_SLAB_FIRST;
	s->refs = 1;
	return s;
}

/* A chunk of size bytes, in small pages (see above), faulted in. */
static struct pool_slab_chunk *slab_map(size_t size)
{
	unsigned char *a;

	a = mmap(NULL, size, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (a == MAP_FAILED)
		return NULL;
	/* Advice only: a kernel without THP has nothing to turn off. */
	madvise(a, size, MADV_NOHUGEPAGE);
	/*
	 * Faulted in now, in one call rather than a fault a page: a chunk
	 * is made when the last one is full, so it is about to be used.
	 * Best effort: MADV_POPULATE_WRITE came in Linux 5.14.
	 */
	madvise(a, size, MADV_POPULATE_WRITE);
	((struct pool_slab_chunk *)a)->size = size;
	return (struct pool_slab_chunk *)a;
}

static int slab_grow(struct pool_slab *s)
{
	struct pool_slab_chunk *c = slab_map(s->next_size);

	if (!c)
		return -ENOMEM;
	c->next = s->chunks;
	/* One store links a whole chunk: a fork sees it or does not. */
	s->chunks = c;
	s->bump = (unsigned char *)c + POOL_SLAB_HDR;
	s->end = (unsigned char *)c + c->size;
	if (s->next_size < POOL_SLAB_LAST)
		s->next_size *= 2;
	return 0;
}

/*
 * No object is live (refs is the pool's alone, and no allocator runs but
 * us): every one has been pushed, since a free pushes before it drops its
 * reference. Keep the first chunk, empty, and give back the rest (none,
 * mostly: then this is a few stores).
 */
static void slab_reset(struct pool_slab *s)
{
	struct pool_slab_chunk *c = s->chunks, *next;

	if (!c)
		return;
	while (c->next) {
		next = c->next;
		slab_unpoison(c, c->size);	/* the range may be mapped anew */
		munmap(c, c->size);
		c = next;
	}
	s->chunks = c;
	s->bump = (unsigned char *)c + POOL_SLAB_HDR;
	s->end = (unsigned char *)c + c->size;
	s->next_size = 2 * POOL_SLAB_FIRST;
	s->free = NULL;
	__atomic_store_n(&s->returned, NULL, __ATOMIC_RELAXED);
}

/* A zeroed object, or NULL (out of memory). */
void *pool_slab_alloc(struct pool_slab *s)
{
	void *o;

	pthread_mutex_lock(&s->lock);
	if (__atomic_load_n(&s->refs, __ATOMIC_ACQUIRE) == 1)
		slab_reset(s);
	if (!s->free)
		s->free = __atomic_exchange_n(&s->returned, NULL,
					      __ATOMIC_ACQUIRE);
	o = s->free;
	if (o) {
		memcpy(&s->free, o, sizeof(void *));
	} else if ((s->bump && s->bump + s->obj <= s->end) || !slab_grow(s)) {
		/* Used before, if the slab was reset since it was mapped. */
		o = s->bump;
		s->bump += s->obj;
	}
	if (o)
		__atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&s->lock);
	if (o) {
		slab_unpoison(o, s->obj);
		memset(o, 0, s->obj);
	}
	return o;
}

static void slab_destroy(struct pool_slab *s)
{
	struct pool_slab_chunk *c = s->chunks, *next;

	for (; c; c = next) {
		next = c->next;
		slab_unpoison(c, c->size);
		munmap(c, c->size);
	}
	pthread_mutex_destroy(&s->lock);
	free(s);
}

/* Drop a reference: the pool's, or (pool_slab_free) an object's. */
void pool_slab_put(struct pool_slab *s)
{
	if (s && __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) == 0)
		slab_destroy(s);
}

void pool_slab_free(struct pool_slab *s, void *o)
{
	void *head = __atomic_load_n(&s->returned, __ATOMIC_RELAXED);

	/* Before the push: once pushed, an allocator may unpoison it. */
	slab_poison((unsigned char *)o + sizeof(void *), s->obj - sizeof(void *));
	do
		memcpy(o, &head, sizeof(head));
	while (!__atomic_compare_exchange_n(&s->returned, &head, o, 1,
					    __ATOMIC_RELEASE, __ATOMIC_RELAXED));
	pool_slab_put(s);
}
