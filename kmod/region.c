// SPDX-License-Identifier: GPL-2.0
/*
 * A region is the memory of one mpq object: a shmem file whose pages are
 * pinned and mapped contiguously into the kernel, and mapped into every
 * process that mmaps the object's fd.
 *
 * Why shmem: a shared futex is keyed by the page's mapping and index
 * (get_futex_key), so it only works on file pages. Pages from vmalloc_user
 * or alloc_pages, or a remap_pfn_range mapping, make FUTEX_WAIT fail. So an
 * mmap of the object fd is redirected to the shmem file (vma_set_file), as
 * ashmem and bus1 did, and userspace can sleep on futexes in it.
 *
 * Lifetime: the redirected mapping no longer references the object's own
 * file, so each mapping takes a reference on it through vm_private_data (a
 * struct mpq_mapref) and our vm_operations. The object is freed when its
 * last fd and its last mapping are gone; the file reference also keeps the
 * module loaded. The same hooks tell the object core which processes map
 * the object, and when one of them dies (object.c).
 */
#include <linux/fcntl.h>
#include <linux/pagemap.h>
#include <linux/sched/signal.h>
#include <linux/shmem_fs.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>

#include "internal.h"

/* Set once by the first mmap: the operations shmem installs on its vmas. */
static const struct vm_operations_struct *mpq_shmem_vm_ops;

static void mpq_vma_flags(struct vm_area_struct *vma, vm_flags_t set,
			  vm_flags_t clear)
{
#ifdef MPQ_HAVE_VM_FLAGS_MOD
	/* vm_flags became read-only in 6.3. */
	vm_flags_mod(vma, set, clear);
#else
	vma->vm_flags = (vma->vm_flags | set) & ~clear;
#endif
}

/* A copy of a mapping: by fork (in the child's mm), split or mremap. */
static void mpq_vm_open(struct vm_area_struct *vma)
{
	struct mpq_mapref *ref = vma->vm_private_data;

	get_file(ref->file);
	mpq_object_map(ref->obj, vma->vm_mm);
}

static void mpq_vm_close(struct vm_area_struct *vma)
{
	struct mpq_mapref *ref = vma->vm_private_data;

	/* Before the fput, which may be the last reference to the object. */
	mpq_object_unmap(ref->obj, vma->vm_mm);
	fput(ref->file);
}

static vm_fault_t mpq_vm_fault(struct vm_fault *vmf)
{
	return READ_ONCE(mpq_shmem_vm_ops)->fault(vmf);
}

static vm_fault_t mpq_vm_map_pages(struct vm_fault *vmf, pgoff_t start,
				   pgoff_t end)
{
	return READ_ONCE(mpq_shmem_vm_ops)->map_pages(vmf, start, end);
}

static const struct vm_operations_struct mpq_vm_ops = {
	.open		= mpq_vm_open,
	.close		= mpq_vm_close,
	.fault		= mpq_vm_fault,
	.map_pages	= mpq_vm_map_pages,
};

static void mpq_region_put_pages(struct mpq_region *r, unsigned long n)
{
	while (n--)
		put_page(r->pages[n]);
}

/**
 * mpq_region_init() - allocate, pin and map the memory of an object
 * @r:		the region to fill in
 * @name:	name of the shmem file, as /proc/PID/maps shows it
 * @size:	bytes, a multiple of PAGE_SIZE
 *
 * Every page is allocated now, so that a later fault cannot fail and the
 * kernel can read the whole object through @r->kaddr. The pages are zero.
 * The object and its bytes are charged to the caller's user first.
 *
 * Return: 0, or -EDQUOT (over the user's budget), -ENOMEM, -EINTR (fatal
 * signal while allocating).
 */
int mpq_region_init(struct mpq_region *r, const char *name, size_t size)
{
	struct address_space *mapping;
	unsigned long i;
	int ret;

	r->nr_pages = size >> PAGE_SHIFT;
	r->user = mpq_user_charge((u64)r->nr_pages << PAGE_SHIFT);
	if (IS_ERR(r->user))
		return PTR_ERR(r->user);
	r->shmem = shmem_file_setup(name, size, VM_NORESERVE);
	if (IS_ERR(r->shmem)) {
		ret = PTR_ERR(r->shmem);
		goto err_uncharge;
	}

	/*
	 * Its size is fixed: even root, reopening it through
	 * /proc/PID/map_files, may not truncate it under the mappings.
	 */
	SHMEM_I(file_inode(r->shmem))->seals |= F_SEAL_SHRINK | F_SEAL_GROW;

	mapping = r->shmem->f_mapping;
	/* The pages stay pinned: keep reclaim from scanning them in vain. */
	mapping_set_unevictable(mapping);

	ret = -ENOMEM;
	r->pages = kvmalloc_array(r->nr_pages, sizeof(*r->pages),
				  GFP_KERNEL_ACCOUNT);
	if (!r->pages)
		goto err_fput;

	for (i = 0; i < r->nr_pages; i++) {
		struct page *page;

		if (fatal_signal_pending(current)) {
			ret = -EINTR;
			goto err_put;
		}
		page = shmem_read_mapping_page_gfp(mapping, i,
						   mapping_gfp_mask(mapping));
		if (IS_ERR(page)) {
			ret = PTR_ERR(page);
			goto err_put;
		}
		r->pages[i] = page;
		cond_resched();
	}

	r->kaddr = vmap(r->pages, r->nr_pages, VM_MAP, PAGE_KERNEL);
	if (!r->kaddr) {
		ret = -ENOMEM;
		goto err_put;
	}
	atomic_long_add(r->nr_pages, &mpq_nr_pages);
	return 0;

err_put:
	mpq_region_put_pages(r, i);
	kvfree(r->pages);
err_fput:
	fput(r->shmem);
err_uncharge:
	mpq_user_uncharge(r->user, (u64)r->nr_pages << PAGE_SHIFT);
	return ret;
}

/**
 * mpq_region_destroy() - release what mpq_region_init() took
 * @r:	the region
 *
 * Called when no fd and no mapping refers to the object any more.
 */
void mpq_region_destroy(struct mpq_region *r)
{
	vunmap(r->kaddr);
	mpq_region_put_pages(r, r->nr_pages);
	kvfree(r->pages);
	fput(r->shmem);
	atomic_long_sub(r->nr_pages, &mpq_nr_pages);
	mpq_user_uncharge(r->user, (u64)r->nr_pages << PAGE_SHIFT);
}

/**
 * mpq_region_mmap() - map a whole region, shared, into a process
 * @r:		the region
 * @ref:	the object's file, of which each mapping holds a reference,
 *		and the object, which counts the mapping's process in
 * @vma:	the new mapping
 *
 * Only the whole object at offset 0, MAP_SHARED and not executable: a
 * private copy would silently stop sharing, and nothing in it is code.
 *
 * Return: 0, -EINVAL for a wrong offset, length or mapping type, -EPERM
 * for PROT_EXEC, or what shmem's mmap returns.
 */
int mpq_region_mmap(struct mpq_region *r, struct mpq_mapref *ref,
		    struct vm_area_struct *vma)
{
	int ret;

	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;
	if (vma->vm_pgoff || vma_pages(vma) != r->nr_pages)
		return -EINVAL;
	if (vma->vm_flags & VM_EXEC)
		return -EPERM;

	mpq_vma_flags(vma, VM_DONTEXPAND, VM_MAYEXEC);
	vma_set_file(vma, r->shmem);
	ret = call_mmap(r->shmem, vma);
	if (ret)
		return ret;

	WRITE_ONCE(mpq_shmem_vm_ops, vma->vm_ops);
	vma->vm_ops = &mpq_vm_ops;
	get_file(ref->file);
	vma->vm_private_data = ref;
	mpq_object_map(ref->obj, vma->vm_mm);
	return 0;
}
