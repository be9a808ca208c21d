// SPDX-License-Identifier: GPL-2.0
/*
 * mpq: kernel-assisted multiprocessing objects.
 *
 * /dev/mpq is a factory, as /dev/userfaultfd is: each create ioctl returns
 * a new anon-inode fd for one object (a queue, a pipe's two ends, a block
 * of shared memory). The object's memory is shmem that every process
 * holding the fd maps; the fast paths run in userspace on that memory and
 * the module supplies what only the kernel can: a lifetime tied to fds and
 * mappings, names checked like files, poll, and a view of what is alive.
 *
 * This file holds the device, its ioctl dispatch and the module-wide
 * counters, exported read-only as module parameters so that tests and
 * users can see that every object was freed. object.c holds what every
 * object has (registry, participants, tracepoints); proc.c lists them.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/compat.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/mpq.h>
#include <linux/uaccess.h>

#include "internal.h"

atomic_long_t mpq_nr_objects = ATOMIC_LONG_INIT(0);
atomic_long_t mpq_nr_pages = ATOMIC_LONG_INIT(0);
static atomic64_t mpq_last_id = ATOMIC64_INIT(0);

/* Largest single object; a create asking for more fails with -E2BIG. */
unsigned long mpq_max_object_bytes = 1UL << 30;
module_param_named(max_object_bytes, mpq_max_object_bytes, ulong, 0644);
MODULE_PARM_DESC(max_object_bytes, "Largest object, in bytes (default 1 GiB)");

static int mpq_get_counter(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%ld\n", atomic_long_read(kp->arg));
}

static const struct kernel_param_ops mpq_counter_ops = {
	.get = mpq_get_counter,
};

module_param_cb(objects, &mpq_counter_ops, &mpq_nr_objects, 0444);
MODULE_PARM_DESC(objects, "Objects alive (read-only)");
module_param_cb(pages, &mpq_counter_ops, &mpq_nr_pages, 0444);
MODULE_PARM_DESC(pages, "Pages held by live objects (read-only)");

u64 mpq_next_id(void)
{
	return atomic64_inc_return(&mpq_last_id);
}

/**
 * mpq_info_to_user() - copy an extensible info struct out to userspace
 * @uarg:	the caller's struct, whose first __u32 is its size
 * @info:	ours, whose first __u32 is the size we fill in
 * @ksize:	sizeof(*info)
 * @min:	the size of the first version of the struct
 *
 * An older caller gets what fits, a newer one zeroes past what we know;
 * either way the size field says how much is real.
 *
 * Return: 0, -EFAULT, -EINVAL (smaller than @min), -E2BIG (over a page).
 */
long mpq_info_to_user(void __user *uarg, void *info, size_t ksize, u32 min)
{
	u32 usize;

	if (get_user(usize, (u32 __user *)uarg))
		return -EFAULT;
	if (usize < min)
		return -EINVAL;
	if (usize > PAGE_SIZE)
		return -E2BIG;
	if (usize < ksize)
		*(u32 *)info = usize;
	if (copy_to_user(uarg, info, min_t(size_t, usize, ksize)))
		return -EFAULT;
	if (usize > ksize && clear_user(uarg + ksize, usize - ksize))
		return -EFAULT;
	return 0;
}

/**
 * mpq_args_from_user() - copy an extensible ioctl argument in
 * @args:	ours, filled in
 * @ksize:	sizeof(*args)
 * @uarg:	the caller's struct, whose first __u32 is its size
 * @min:	the size of the first version of the struct
 *
 * An older caller's struct is zero-extended; a newer one's is accepted if
 * every byte we do not know is zero (copy_struct_from_user()).
 *
 * Return: 0, -EFAULT, -EINVAL (smaller than @min), -E2BIG (over a page,
 * or non-zero bytes past ours).
 */
long mpq_args_from_user(void *args, size_t ksize, const void __user *uarg,
			u32 min)
{
	u32 usize;

	if (get_user(usize, (const u32 __user *)uarg))
		return -EFAULT;
	if (usize < min)
		return -EINVAL;
	if (usize > PAGE_SIZE)
		return -E2BIG;
	return copy_struct_from_user(args, ksize, uarg, usize);
}

static long mpq_dev_ioctl(struct file *file, unsigned int cmd,
			  unsigned long arg)
{
	switch (cmd) {
	case MPQ_IOC_QUEUE_CREATE:
		return mpq_queue_create((void __user *)arg);
	case MPQ_IOC_PIPE_CREATE:
		return mpq_pipe_create((void __user *)arg);
	case MPQ_IOC_SHM_OPEN:
		return mpq_shm_open(file, (void __user *)arg);
	case MPQ_IOC_SHM_UNLINK:
		return mpq_shm_unlink((void __user *)arg);
	default:
		return -ENOTTY;
	}
}

/* The last close of a /dev/mpq file: the names it anchors go (shm.c). */
static int mpq_dev_release(struct inode *inode, struct file *file)
{
	mpq_shm_dev_release(file);
	return 0;
}

static const struct file_operations mpq_dev_fops = {
	.owner		= THIS_MODULE,
	.release	= mpq_dev_release,
	.unlocked_ioctl	= mpq_dev_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
	.llseek		= noop_llseek,
};

/*
 * A fixed minor, so that opening /dev/mpq loads the module: depmod turns
 * the "char-major-10-N" and "devname:mpq" aliases below into
 * modules.devname, from which kmod's static-nodes has /dev/mpq made at
 * boot, and misc_open() asks modprobe for char-major-10-N on first open.
 * Documentation/admin-guide/devices.txt reserves misc minors 243-254 for
 * local use and hands out no new fixed ones, so an out-of-tree module
 * takes one of those; 247 is picked for nothing but being in that range.
 * Should another local driver hold it, /dev/mpq takes a dynamic minor:
 * it still works, only the load on open is lost (see mpq(4)).
 */
#define MPQ_MISC_MINOR	247

/*
 * 0666 is the documented default: every object has its own owner and
 * mode, and each user a budget (user.c). A site that wants fewer users
 * sets the group and mode with a udev rule (60-mpq.rules, group mpq).
 */
static struct miscdevice mpq_misc = {
	.minor	= MPQ_MISC_MINOR,
	.name	= MPQ_DEVICE_NAME,
	.fops	= &mpq_dev_fops,
	.mode	= 0666,
};

static int __init mpq_init(void)
{
	int ret;

	ret = mpq_user_init();
	if (ret)
		return ret;
	ret = mpq_proc_init();
	if (ret)
		goto err_user;
	ret = misc_register(&mpq_misc);
	if (ret == -EBUSY) {
		pr_warn("misc minor %d is taken: /dev/mpq gets a dynamic one and no longer loads the module on open\n",
			MPQ_MISC_MINOR);
		mpq_misc.minor = MISC_DYNAMIC_MINOR;
		ret = misc_register(&mpq_misc);
	}
	if (ret)
		goto err_proc;
	return 0;

err_proc:
	mpq_proc_exit();
err_user:
	mpq_user_exit();
	return ret;
}

static void __exit mpq_exit(void)
{
	misc_deregister(&mpq_misc);
	mpq_shm_exit();
	mpq_proc_exit();
	mpq_user_exit();
}

module_init(mpq_init);
module_exit(mpq_exit);

MODULE_DESCRIPTION("Kernel-assisted multiprocessing queues and locks");
MODULE_AUTHOR("mpq developers");
MODULE_LICENSE("GPL");
/* The top Makefile's VERSION, or DKMS's PACKAGE_VERSION (kmod/Kbuild). */
MODULE_VERSION(MPQ_VERSION);
MODULE_ALIAS_MISCDEV(MPQ_MISC_MINOR);
MODULE_ALIAS("devname:" MPQ_DEVICE_NAME);
