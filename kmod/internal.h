/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Private declarations of the mpq module: the shmem-backed memory region
 * every object is built on, the queue object, and the module-wide counters
 * that show what the module still holds.
 */
#ifndef _MPQ_INTERNAL_H
#define _MPQ_INTERNAL_H

#include <linux/atomic.h>
#include <linux/fcntl.h>
#include <linux/fs.h>
#include <linux/mm.h>
#include <linux/types.h>

/**
 * struct mpq_region - memory shared between the kernel and every process
 * @shmem:	the shmem file that backs it; mappings are redirected to it so
 *		that its pages are file pages and shared futexes work on them
 * @pages:	every page of @shmem, pinned for the life of the region
 * @nr_pages:	number of entries in @pages
 * @kaddr:	kernel mapping of @pages, contiguous
 */
struct mpq_region {
	struct file *shmem;
	struct page **pages;
	unsigned long nr_pages;
	void *kaddr;
};

int mpq_region_init(struct mpq_region *r, const char *name, size_t size);
void mpq_region_destroy(struct mpq_region *r);
int mpq_region_mmap(struct mpq_region *r, struct file *owner,
		    struct vm_area_struct *vma);

/* read_iter/write_iter: must this call not sleep (io_uring, O_NONBLOCK)? */
static inline bool mpq_nowait(struct kiocb *iocb)
{
	return iocb->ki_flags & IOCB_NOWAIT ||
	       iocb->ki_filp->f_flags & O_NONBLOCK;
}

long mpq_queue_create(void __user *uarg);
long mpq_pipe_create(void __user *uarg);
long mpq_shm_open(void __user *uarg);
long mpq_shm_unlink(void __user *uarg);
void mpq_shm_exit(void);

/* Module-wide accounting, readable under /sys/module/mpq/parameters/. */
extern atomic_long_t mpq_nr_objects;
extern atomic_long_t mpq_nr_pages;
extern unsigned long mpq_max_object_bytes;

u64 mpq_next_id(void);
long mpq_info_to_user(void __user *uarg, void *info, size_t ksize, u32 min);

#endif /* _MPQ_INTERNAL_H */
