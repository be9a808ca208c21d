// SPDX-License-Identifier: GPL-2.0
/*
 * A region is the memory of one mpq object: a shmem file whose pages are
 * pinned and mapped contiguously into the kernel, and mapped into every
 * process that mmaps the object's fd.
 *
 * Why shmem: a shared futex is keyed by the page's mapping and index
 * (get_futex_key() reads folio->mapping, not the vma's file), so it only
 * works on file pages. Pages from vmalloc_user or alloc_pages, or a
 * remap_pfn_range mapping, make FUTEX_WAIT fail.
 *
 * Why the shmem file is never the mapping's file: the vma keeps the
 * object's own file, and our fault handler hands out the region's pinned
 * pages. Whatever the mm core does with vma->vm_file then reaches us, not
 * shmem: remap_file_pages(2) calls our ->mmap, which takes only the whole
 * object at offset 0, and MADV_REMOVE finds a file it cannot fallocate,
 * so no one can punch the pinned pages out from under the kernel or map
 * the memory past the object's rules. The pages are shmem page-cache
 * pages all the same, so shared futexes in them work across processes,
 * and GUP (fast or not) finds ordinary pages in ordinary PTEs. /proc's
 * map_files names the object's anon-inode file, which cannot be opened.
 *
 * What this costs: an rmap walk of such a page goes through the shmem
 * file's mappings, which hold none of ours, so it does not find our PTEs.
 * Nothing needs it to: the pages are pinned and unevictable, so reclaim
 * leaves them alone, and migration (compaction, NUMA) gives up on them
 * since they stay mapped and referenced; MADV_DONTNEED only zaps PTEs,
 * which fault back in. No writeback runs (shmem has none), so the PTEs
 * need no write-protecting for dirty tracking.
 *
 * Lifetime: each mapping holds a reference on the object's file through
 * vma->vm_file, as for any file mapping. The object is freed when its
 * last fd and its last mapping are gone; the file reference also keeps
 * the module loaded. Our vm_operations tell the object core which
 * processes map the object, and when one of them dies (object.c).
 */
#include <linux/fcntl.h>
#include <linux/pagemap.h>
#include <linux/sched/signal.h>
#include <linux/shmem_fs.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>

#include "internal.h"

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

	mpq_object_map(ref->obj, vma->vm_mm);
}

/* The mm core drops vma->vm_file, maybe the object's last reference, after. */
static void mpq_vm_close(struct vm_area_struct *vma)
{
	struct mpq_mapref *ref = vma->vm_private_data;

	mpq_object_unmap(ref->obj, vma->vm_mm);
}

/*
 * Every page exists and is pinned for the region's life: hand out the one
 * asked for, with a reference for the PTE. The core locks it, maps it and,
 * for a write, marks it dirty in shmem's page cache (which does nothing
 * but set the flag: shmem does no writeback).
 */
static vm_fault_t mpq_vm_fault(struct vm_fault *vmf)
{
	struct mpq_mapref *ref = vmf->vma->vm_private_data;
	struct mpq_region *r = ref->region;

	/* mmap took the whole region at 0 and the vma cannot grow. */
	if (WARN_ON_ONCE(vmf->pgoff >= r->nr_pages))
		return VM_FAULT_SIGBUS;
	vmf->page = r->pages[vmf->pgoff];
	get_page(vmf->page);
	return 0;
}

static const struct vm_operations_struct mpq_vm_ops = {
	.open		= mpq_vm_open,
	.close		= mpq_vm_close,
	.fault		= mpq_vm_fault,
};

/* Up to a GiB of pages: let others run between them. */
static void mpq_region_put_pages(struct mpq_region *r, unsigned long n)
{
	while (n--) {
		put_page(r->pages[n]);
		cond_resched();
	}
}

/**
 * mpq_region_init() - allocate, pin and map the memory of an object
 * @r:		the region to fill in
 * @name:	name of the shmem file (internal: no mapping shows it)
 * @size:	bytes, a non-zero multiple of PAGE_SIZE
 *
 * Every page is allocated now, so that a later fault cannot fail and the
 * kernel can read the whole object through @r->kaddr. The pages are zero.
 * The size must be whole pages: the kernel and every process see exactly
 * @size bytes, so a layout that ends inside a page past the last whole one
 * would be read and written out of bounds. Each type rounds its layout up
 * with PAGE_ALIGN() (PAGE_SIZE is 4K to 64K depending on the kernel); a
 * size that is not whole pages is a bug in the module, caught here. The
 * object and its bytes are charged to the caller's user first.
 *
 * Return: 0, or -EINVAL (a size that is not whole pages), -EDQUOT (over
 * the user's budget), -ENOMEM, -EINTR (fatal signal while allocating).
 */
int mpq_region_init(struct mpq_region *r, const char *name, size_t size)
{
	struct address_space *mapping;
	unsigned long i;
	int ret;

	if (WARN_ON_ONCE(!size || !PAGE_ALIGNED(size)))
		return -EINVAL;
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
	 * Its size is fixed. No mapping exposes the file (see the top of
	 * this file); the seals say so to shmem as well.
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
 * @ref:	the region and its object, which counts the mapping's
 *		process in; alive as long as the file being mapped
 * @vma:	the new mapping, of the object's own file
 *
 * Only the whole object at offset 0, MAP_SHARED and not executable: a
 * private copy would silently stop sharing, and nothing in it is code.
 * remap_file_pages(2) comes here too, so the same rules hold for it.
 * The pages are faulted in from @r->pages; vma->vm_file stays the
 * object's file and holds it (and so the region) for the mapping's life.
 *
 * Return: 0, -EINVAL for a wrong offset, length or mapping type, -EPERM
 * for PROT_EXEC.
 */
int mpq_region_mmap(struct mpq_region *r, struct mpq_mapref *ref,
		    struct vm_area_struct *vma)
{
	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;
	if (vma->vm_pgoff || vma_pages(vma) != r->nr_pages)
		return -EINVAL;
	if (vma->vm_flags & VM_EXEC)
		return -EPERM;
	if (WARN_ON_ONCE(ref->region != r))
		return -EINVAL;

	/* No growing by mremap, no mprotect(PROT_EXEC). */
	mpq_vma_flags(vma, VM_DONTEXPAND, VM_MAYEXEC);
	vma->vm_ops = &mpq_vm_ops;
	vma->vm_private_data = ref;
	mpq_object_map(ref->obj, vma->vm_mm);
	return 0;
}
