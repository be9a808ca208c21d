// SPDX-License-Identifier: GPL-2.0
/*
 * The pipe object: two ends, each its own anon-inode fd, sharing one
 * region (see region.c) that holds a byte ring per direction (struct
 * mpq_pipe_shm in the uapi header). Messages move in userspace; the kernel
 * tracks the ends and answers poll().
 *
 * Hang-up: an end is gone when its file is released, that is when every
 * fd and every mapping of it is gone in every process, by close or by
 * death. The other end's pollers are then woken with EPOLLHUP. A futex
 * waiter could not be woken from here (nothing in kernel/futex is
 * exported), so libmpq sleeps on a pipe in poll() on its end's fd.
 *
 * As for queues, nothing in the shared memory is trusted: the kernel only
 * reads the rings' positions to answer poll(), and uses its own geometry.
 */
#include <linux/anon_inodes.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/kref.h>
#include <linux/mpq.h>
#include <linux/poll.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/wait.h>

#include "internal.h"

#define MPQ_PIPE_CREATE_SIZE_VER0	56
#define MPQ_PIPE_INFO_SIZE_VER0		80
#define MPQ_PIPE_MIN_RING		4096U
#define MPQ_PIPE_MAX_RING		BIT(30)

struct mpq_pipe;

struct mpq_end {
	struct mpq_pipe *pipe;
	unsigned int idx;
};

struct mpq_pipe {
	struct mpq_region region;
	struct mpq_pipe_shm *shm;
	struct kref ref;
	struct mpq_end end[2];
	wait_queue_head_t wq[2];	/* pollers of end i */
	bool closed[2];			/* end i is gone */
	u64 id;
	u32 flags;
	u32 ring_size;
	u64 data_off[2];
	u64 map_size;
};

static void mpq_pipe_free(struct kref *ref)
{
	struct mpq_pipe *p = container_of(ref, struct mpq_pipe, ref);

	mpq_region_destroy(&p->region);
	kfree(p);
	atomic_long_dec(&mpq_nr_objects);
}

static __poll_t mpq_pipe_poll(struct file *file, poll_table *pt)
{
	struct mpq_end *e = file->private_data;
	struct mpq_pipe *p = e->pipe;
	struct mpq_ring *rx = &p->shm->ring[!e->idx];
	struct mpq_ring *tx = &p->shm->ring[e->idx];
	__poll_t want = poll_requested_events(pt), mask = 0;
	u64 used;

	poll_wait(file, &p->wq[e->idx], pt);
	/* Ask the other side to wake us; see mpq_queue_poll() for why always. */
	if (want & (EPOLLIN | EPOLLRDNORM))
		atomic_or(MPQ_POLL_IN, (atomic_t *)&rx->wanted);
	if (want & (EPOLLOUT | EPOLLWRNORM))
		atomic_or(MPQ_POLL_OUT, (atomic_t *)&tx->wanted);
	/* Pairs with the full fence in libmpq between moving a position and
	 * reading wanted.
	 */
	smp_mb__after_atomic();

	if (READ_ONCE(rx->tail) != READ_ONCE(rx->head))
		mask |= EPOLLIN | EPOLLRDNORM;
	if (READ_ONCE(p->closed[!e->idx])) {
		mask |= EPOLLHUP;
		if (p->flags & MPQ_PIPE_DUPLEX || e->idx == 1)
			mask |= EPOLLERR;	/* no one reads what we write */
	} else {
		used = READ_ONCE(tx->tail) - READ_ONCE(tx->head);
		if (used <= p->ring_size - MPQ_PIPE_MIN_SPACE)
			mask |= EPOLLOUT | EPOLLWRNORM;
	}
	return mask;
}

static long mpq_pipe_wake(struct mpq_end *e, unsigned long arg)
{
	struct mpq_pipe *p = e->pipe;
	__poll_t key = 0;

	if (arg & ~(unsigned long)MPQ_POLL_ALL)
		return -EINVAL;
	/* Clear before waking: a poller re-arming after this is not lost. */
	if (arg & MPQ_POLL_IN) {
		atomic_andnot(MPQ_POLL_IN,
			      (atomic_t *)&p->shm->ring[e->idx].wanted);
		key |= EPOLLIN | EPOLLRDNORM;
	}
	if (arg & MPQ_POLL_OUT) {
		atomic_andnot(MPQ_POLL_OUT,
			      (atomic_t *)&p->shm->ring[!e->idx].wanted);
		key |= EPOLLOUT | EPOLLWRNORM;
	}
	if (key)
		wake_up_interruptible_poll(&p->wq[!e->idx], key);
	return 0;
}

static long mpq_pipe_info(struct mpq_end *e, void __user *uarg)
{
	struct mpq_pipe *p = e->pipe;
	struct mpq_pipe_info info = {
		.size		= sizeof(info),
		.flags		= p->flags & MPQ_PIPE_DUPLEX,
		.ring_size	= p->ring_size,
		.end		= e->idx,
		.data_off	= { p->data_off[0], p->data_off[1] },
		.map_size	= p->map_size,
		.id		= p->id,
	};
	u32 usize;

	if (get_user(usize, (u32 __user *)uarg))
		return -EFAULT;
	if (usize < MPQ_PIPE_INFO_SIZE_VER0)
		return -EINVAL;
	if (usize > PAGE_SIZE)
		return -E2BIG;
	if (usize < sizeof(info))
		info.size = usize;
	if (copy_to_user(uarg, &info, min_t(size_t, usize, sizeof(info))))
		return -EFAULT;
	if (usize > sizeof(info) &&
	    clear_user(uarg + sizeof(info), usize - sizeof(info)))
		return -EFAULT;
	return 0;
}

static long mpq_pipe_ioctl(struct file *file, unsigned int cmd,
			   unsigned long arg)
{
	struct mpq_end *e = file->private_data;

	switch (cmd) {
	case MPQ_IOC_PIPE_WAKE:
		return mpq_pipe_wake(e, arg);
	case MPQ_IOC_PIPE_INFO:
		return mpq_pipe_info(e, (void __user *)arg);
	default:
		return -ENOTTY;
	}
}

static int mpq_pipe_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct mpq_end *e = file->private_data;

	return mpq_region_mmap(&e->pipe->region, file, vma);
}

static int mpq_pipe_release(struct inode *inode, struct file *file)
{
	struct mpq_end *e = file->private_data;
	struct mpq_pipe *p = e->pipe;

	WRITE_ONCE(p->closed[e->idx], true);
	WRITE_ONCE(p->shm->closed[e->idx], 1);
	smp_mb();	/* the flag before the wake-up: pairs with libmpq's check */
	wake_up_interruptible_poll(&p->wq[!e->idx],
				   EPOLLHUP | EPOLLERR | EPOLLIN | EPOLLOUT);
	kref_put(&p->ref, mpq_pipe_free);
	return 0;
}

static const struct file_operations mpq_pipe_fops = {
	.owner		= THIS_MODULE,
	.release	= mpq_pipe_release,
	.poll		= mpq_pipe_poll,
	.unlocked_ioctl	= mpq_pipe_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
	.mmap		= mpq_pipe_mmap,
	.llseek		= noop_llseek,
};

static int mpq_pipe_geometry(struct mpq_pipe *p,
			     const struct mpq_pipe_create *args)
{
	u64 total;

	if (args->flags & ~MPQ_PIPE_FLAGS || args->__pad)
		return -EINVAL;
	if (memchr_inv(args->reserved, 0, sizeof(args->reserved)))
		return -EINVAL;
	if (args->ring_size < MPQ_PIPE_MIN_RING ||
	    !is_power_of_2(args->ring_size))
		return -EINVAL;
	if (args->ring_size > MPQ_PIPE_MAX_RING)
		return -E2BIG;
	p->flags = args->flags;
	p->ring_size = args->ring_size;
	p->data_off[0] = PAGE_SIZE;
	p->data_off[1] = PAGE_SIZE + (u64)args->ring_size;
	total = PAGE_SIZE + 2 * (u64)args->ring_size;
	if (total > mpq_max_object_bytes)
		return -E2BIG;
	p->map_size = total;
	return 0;
}

static void mpq_pipe_format(struct mpq_pipe *p)
{
	struct mpq_pipe_shm *shm = p->region.kaddr;

	p->shm = shm;
	shm->magic = MPQ_PIPE_MAGIC;
	shm->version = MPQ_PIPE_VERSION;
	shm->flags = p->flags & MPQ_PIPE_DUPLEX;
	shm->ring_size = p->ring_size;
	shm->data_off[0] = p->data_off[0];
	shm->data_off[1] = p->data_off[1];
	shm->map_size = p->map_size;
}

/**
 * mpq_pipe_create() - MPQ_IOC_PIPE_CREATE: make a pipe, return its two ends
 * @uarg:	user pointer to struct mpq_pipe_create
 *
 * Return: 0 with fds[] filled in, or -EFAULT, -EINVAL (bad size, flags,
 * reserved fields, ring size), -E2BIG, -ENOMEM, -EMFILE.
 */
long mpq_pipe_create(void __user *uarg)
{
	struct mpq_pipe_create args;
	struct mpq_pipe_create __user *u = uarg;
	struct file *files[2] = { NULL, NULL };
	int fds[2] = { -1, -1 };
	struct mpq_pipe *p;
	u32 usize;
	int ret, i;

	if (get_user(usize, &u->size))
		return -EFAULT;
	if (usize < MPQ_PIPE_CREATE_SIZE_VER0)
		return -EINVAL;
	if (usize > PAGE_SIZE)
		return -E2BIG;
	ret = copy_struct_from_user(&args, sizeof(args), uarg, usize);
	if (ret)
		return ret;

	p = kzalloc(sizeof(*p), GFP_KERNEL_ACCOUNT);
	if (!p)
		return -ENOMEM;
	ret = mpq_pipe_geometry(p, &args);
	if (ret)
		goto err_free;
	ret = mpq_region_init(&p->region, "mpq-pipe", p->map_size);
	if (ret)
		goto err_free;
	mpq_pipe_format(p);
	kref_init(&p->ref);	/* ours, until both ends exist */
	p->id = mpq_next_id();
	atomic_long_inc(&mpq_nr_objects);

	for (i = 0; i < 2; i++) {
		p->end[i].pipe = p;
		p->end[i].idx = i;
		init_waitqueue_head(&p->wq[i]);
	}
	for (i = 0; i < 2; i++) {
		fds[i] = get_unused_fd_flags(O_RDWR |
			(args.flags & MPQ_CREATE_CLOEXEC ? O_CLOEXEC : 0));
		if (fds[i] < 0) {
			ret = fds[i];
			goto err_files;
		}
		files[i] = anon_inode_getfile("[mpq-pipe]", &mpq_pipe_fops,
					      &p->end[i], O_RDWR);
		if (IS_ERR(files[i])) {
			ret = PTR_ERR(files[i]);
			files[i] = NULL;
			goto err_files;
		}
		kref_get(&p->ref);
	}
	if (put_user(fds[0], &u->fds[0]) || put_user(fds[1], &u->fds[1])) {
		ret = -EFAULT;
		goto err_files;
	}
	/* Nothing can fail from here: the fds become visible. */
	for (i = 0; i < 2; i++)
		fd_install(fds[i], files[i]);
	kref_put(&p->ref, mpq_pipe_free);
	return 0;

err_files:
	for (i = 0; i < 2; i++) {
		if (files[i])
			fput(files[i]);	/* its release drops its reference */
		if (fds[i] >= 0)
			put_unused_fd(fds[i]);
	}
	kref_put(&p->ref, mpq_pipe_free);
	return ret;

err_free:
	kfree(p);
	return ret;
}
