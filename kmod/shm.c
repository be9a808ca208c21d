// SPDX-License-Identifier: GPL-2.0
/*
 * The shared-memory object: a block of bytes in a region (see region.c),
 * anonymous or named. libmpq builds its locks, semaphores, events,
 * barriers and Values in such blocks (the futex words in them work because
 * the region is shmem), and hands them to users as SharedMemory. The module
 * never reads the contents; it gives the block a lifetime, a name and
 * permissions.
 *
 * Names live in the IPC namespace of the process that creates them and
 * are checked like files: owner and group are the creator's fsuid and
 * fsgid, the mode is masked by the umask, and opening needs read and write
 * permission or CAP_IPC_OWNER over the namespace (as System V shared
 * memory does).
 *
 * Lifetime. A name holds a reference on its block: the block outlives the
 * close of every fd and mapping until its name goes, as a POSIX shared
 * memory object does (Python's promise). A name goes when it is unlinked,
 * and, unless it was made with MPQ_SHM_PERSIST, when its program ends: the
 * /dev/mpq open file description it was created through (its anchor) is
 * released, that is closed in every process that had it. Processes share
 * that file by fork and by passing the fd (libmpq passes it to the
 * children it spawns), so "the program" is whatever holds it, and a
 * crashed program leaks nothing, with no tracker process that could itself
 * be killed: the kernel drops the name at the file's last fput. Only the
 * creator's anchor counts; a process that opens a block by name holds the
 * block while it has it open or mapped, never the name. A persistent name
 * has no anchor: it stays until unlinked (or its namespace dies, or the
 * module is unloaded) and is charged to its creator's budget of names.
 *
 * A /dev/mpq file that anchors a name is marked (its private_data, which
 * nothing else of the module uses, points at mpq_anchor_mark), so that the
 * release of the many files that anchor nothing does not walk the table.
 *
 * The name table is a list under one mutex: names are looked up at open
 * and unlink, never on a fast path. A block's reference count only drops
 * to zero with that mutex held (kref_put_mutex), so every block on the
 * list is alive while the mutex is held, and the last put removes the
 * name before anyone can look it up again.
 *
 * A name is found only from the IPC namespace that made it: the block
 * holds that namespace as a token of ns.c (a reference on its mqueue
 * mount, which no other namespace can have while we hold it), and a
 * lookup compares tokens, never addresses or inode numbers that a later
 * namespace could reuse. That holds for every name, persistent or not: a
 * process may keep an fd of a named block after its namespace died.
 *
 * A namespace that dies takes its names with it: a name of a dead
 * namespace could never be reached again, so it drops the reference it
 * held, and the block is freed once no fd or mapping holds it. Nothing
 * tells a module that a namespace died; the names of dead namespaces are
 * swept at every named open, unlink and open of /proc/mpq, and once a
 * second (deferrable work) while a persistent name of a namespace other
 * than the initial one exists, so none stays pinned.
 *
 * Without CONFIG_POSIX_MQUEUE namespaces other than the initial one cannot
 * be told apart (ns.c): naming a block there fails with -EOPNOTSUPP.
 */
#include <linux/anon_inodes.h>
#include <linux/capability.h>
#include <linux/cred.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/futex.h>
#include <linux/ipc_namespace.h>
#include <linux/kref.h>
#include <linux/mpq.h>
#include <linux/mutex.h>
#include <linux/nsproxy.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/workqueue.h>

#include "internal.h"

#define MPQ_SHM_OPEN_SIZE_VER0		56
#define MPQ_SHM_INFO_SIZE_VER0		80
#define MPQ_SHM_UNLINK_SIZE_VER0	32

struct mpq_shm {
	struct mpq_object obj;		/* owner, mode, name for the listing */
	struct mpq_region region;
	struct kref ref;		/* a file each, and the name */
	u64 bytes;
	u64 map_size;
	u32 kind;
	/* Under mpq_names_lock. */
	struct list_head node;		/* in mpq_names while named */
	char *name;			/* obj.name too, freed with s */
	struct file *anchor;		/* a program's name: its /dev/mpq file */
	bool persist;			/* the name has no anchor */
	bool foreign;			/* not of the initial namespace */
};

/* Each open file of a block: what its mappings hold on to. */
struct mpq_shm_file {
	struct mpq_mapref ref;
	struct mpq_shm *s;
};

static LIST_HEAD(mpq_names);
static DEFINE_MUTEX(mpq_names_lock);
/* What a /dev/mpq file that anchors names has as private_data. */
static char mpq_anchor_mark;
/* Persistent names of namespaces that may die; under mpq_names_lock. */
static unsigned int mpq_nr_foreign;

static void mpq_shm_sweep_work(struct work_struct *work);
static DECLARE_DEFERRABLE_WORK(mpq_sweep_dwork, mpq_shm_sweep_work);

/* Called with mpq_names_lock held by kref_put_mutex(); drops it. */
static void mpq_shm_release(struct kref *ref)
	__releases(&mpq_names_lock)
{
	struct mpq_shm *s = container_of(ref, struct mpq_shm, ref);

	list_del_init(&s->node);
	mutex_unlock(&mpq_names_lock);
	mpq_object_del(&s->obj);
	mpq_region_destroy(&s->region);
	kfree(s->obj.name);
	kfree(s->name);
	kfree(s);
}

static void mpq_shm_put(struct mpq_shm *s)
{
	kref_put_mutex(&s->ref, mpq_shm_release, &mpq_names_lock);
}

static struct ipc_namespace *mpq_ipc_ns(void)
{
	return current->nsproxy->ipc_ns;
}

/* A name of the caller's IPC namespace, or NULL. */
static struct mpq_shm *mpq_shm_lookup(const char *name)
{
	struct mpq_shm *s;

	lockdep_assert_held(&mpq_names_lock);
	list_for_each_entry(s, &mpq_names, node)
		if (mpq_ns_is_current(s->obj.ns) && !strcmp(s->name, name))
			return s;
	return NULL;
}

/*
 * Take s, which is in the table, out of it; the caller puts the reference
 * its name held.
 */
static void mpq_shm_unname(struct mpq_shm *s)
{
	lockdep_assert_held(&mpq_names_lock);
	list_del_init(&s->node);
	if (s->persist && s->foreign)
		mpq_nr_foreign--;
	if (s->persist)
		mpq_user_uncharge_name(s->region.user);
	s->persist = false;
	s->anchor = NULL;
}

/*
 * Drop every name for which match(s, arg) holds, as if unlinked: each
 * name's reference goes after the lock is dropped, and a block is freed
 * then if nothing else holds it.
 */
static void mpq_shm_unname_if(bool (*match)(struct mpq_shm *s, const void *arg),
			      const void *arg)
{
	struct mpq_shm *s, *tmp;
	LIST_HEAD(dead);

	mutex_lock(&mpq_names_lock);
	list_for_each_entry_safe(s, tmp, &mpq_names, node) {
		if (!match(s, arg))
			continue;
		/* The name's reference keeps s alive on our list. */
		mpq_shm_unname(s);
		list_add(&s->node, &dead);
	}
	mutex_unlock(&mpq_names_lock);

	list_for_each_entry_safe(s, tmp, &dead, node) {
		list_del_init(&s->node);
		mpq_shm_put(s);
	}
}

static bool mpq_shm_ns_dead(struct mpq_shm *s, const void *arg)
{
	return mpq_ns_is_dead(s->obj.ns);
}

static bool mpq_shm_anchored_by(struct mpq_shm *s, const void *file)
{
	return s->anchor == file;
}

/**
 * mpq_shm_sweep() - drop the names of IPC namespaces that died
 *
 * No process can ever look them up again.
 */
void mpq_shm_sweep(void)
{
	mpq_shm_unname_if(mpq_shm_ns_dead, NULL);
}

/* Once a second while names of namespaces that can die exist. */
static void mpq_shm_sweep_work(struct work_struct *work)
{
	bool again;

	mpq_shm_sweep();
	mutex_lock(&mpq_names_lock);
	again = mpq_nr_foreign;
	mutex_unlock(&mpq_names_lock);
	if (again)
		schedule_delayed_work(&mpq_sweep_dwork, HZ);
}

/**
 * mpq_shm_dev_release() - a /dev/mpq file is released: its program ended
 * @file:	the file, at its last fput
 *
 * The names it anchors go, as if unlinked; each block lives on while
 * someone has it open or mapped.
 */
void mpq_shm_dev_release(struct file *file)
{
	/* No ioctl runs on a file being released: nothing marks it now. */
	if (file->private_data != &mpq_anchor_mark)
		return;
	mpq_shm_unname_if(mpq_shm_anchored_by, file);
}

/* Can the caller's names be told apart from other namespaces'? (ns.c) */
static bool mpq_shm_can_name(void)
{
	struct mpq_ns *ns = mpq_ns_get();

	mpq_ns_put(ns);
	return ns;
}

/* May the caller open s? Read and write, as a file's mode bits say. */
static int mpq_shm_permission(struct mpq_shm *s)
{
	umode_t granted = s->obj.mode;

	if (uid_eq(current_fsuid(), s->obj.uid))
		granted >>= 6;
	else if (in_group_p(s->obj.gid))
		granted >>= 3;
	if ((granted & 06) == 06)
		return 0;
	if (ns_capable(mpq_ipc_ns()->user_ns, CAP_IPC_OWNER))
		return 0;
	return -EACCES;
}

static long mpq_shm_info(struct mpq_shm *s, void __user *uarg)
{
	struct mpq_shm_info info = {
		.size		= sizeof(info),
		.bytes		= s->bytes,
		.map_size	= s->map_size,
		.id		= s->obj.id,
		.kind		= s->kind,
		.mode		= s->obj.mode,
		.uid		= from_kuid_munged(current_user_ns(), s->obj.uid),
		.gid		= from_kgid_munged(current_user_ns(), s->obj.gid),
	};

	mutex_lock(&mpq_names_lock);
	if (s->persist)
		info.flags = MPQ_SHM_PERSIST;
	mutex_unlock(&mpq_names_lock);
	return mpq_info_to_user(uarg, &info, sizeof(info),
				MPQ_SHM_INFO_SIZE_VER0);
}

static long mpq_shm_ioctl(struct file *file, unsigned int cmd,
			  unsigned long arg)
{
	struct mpq_shm_file *f = file->private_data;

	switch (cmd) {
	case MPQ_IOC_SHM_INFO:
		return mpq_shm_info(f->s, (void __user *)arg);
	default:
		return -ENOTTY;
	}
}

static int mpq_shm_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct mpq_shm_file *f = file->private_data;

	return mpq_region_mmap(&f->s->region, &f->ref, vma);
}

static int mpq_shm_flush(struct file *file, fl_owner_t id)
{
	struct mpq_shm_file *f = file->private_data;

	mpq_object_flush(&f->s->obj);
	return 0;
}

static int mpq_shm_file_release(struct inode *inode, struct file *file)
{
	struct mpq_shm_file *f = file->private_data;

	mpq_shm_put(f->s);
	kfree(f);
	return 0;
}

static const struct file_operations mpq_shm_fops = {
	.owner		= THIS_MODULE,
	.flush		= mpq_shm_flush,
	.release	= mpq_shm_file_release,
	.unlocked_ioctl	= mpq_shm_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
	.mmap		= mpq_shm_mmap,
	.llseek		= noop_llseek,
};

/*
 * For the listing: blocks have no ring and no wait queue of the module's
 * (their sleepers sleep on futexes in the block, woken by userspace and,
 * at a holder's death, by the kernel's robust-futex processing).
 */
static u64 mpq_shm_zero(struct mpq_object *obj)
{
	return 0;
}

static unsigned int mpq_shm_nowaiters(struct mpq_object *obj)
{
	return 0;
}

/*
 * A participant of a lock block died: if the kernel's robust-futex
 * processing marked the lock owner-died, tell the tracers (libmpq's next
 * acquirer recovers it, with -EOWNERDEAD). The word is read once.
 */
static void mpq_shm_lock_exit(struct mpq_object *obj, pid_t pid)
{
	struct mpq_shm *s = container_of(obj, struct mpq_shm, obj);
	u32 word;

	if (s->bytes < MPQ_SHM_LOCK_WORD_OFF + sizeof(u32))
		return;
	word = READ_ONCE(*(u32 *)(s->region.kaddr + MPQ_SHM_LOCK_WORD_OFF));
	if ((word & FUTEX_OWNER_DIED) && !(word & FUTEX_TID_MASK))
		mpq_object_owner_died(obj, pid, MPQ_DIED_LOCK, 0);
}

#define MPQ_SHM_OPS(kname, exit) {			\
	.name = kname, .type = MPQ_OBJ_SHM,		\
	.depth = mpq_shm_zero, .capacity = mpq_shm_zero,	\
	.waiters = mpq_shm_nowaiters, .participant_exit = exit }

/* One type name per kind, as the listing shows it. */
static const struct mpq_object_ops mpq_shm_ops[MPQ_SHM_KIND_MAX] = {
	[MPQ_SHM_KIND_SHM]	= MPQ_SHM_OPS("shm", NULL),
	[MPQ_SHM_KIND_LOCK]	= MPQ_SHM_OPS("lock", mpq_shm_lock_exit),
	[MPQ_SHM_KIND_RLOCK]	= MPQ_SHM_OPS("rlock", mpq_shm_lock_exit),
	[MPQ_SHM_KIND_COND]	= MPQ_SHM_OPS("cond", NULL),
	[MPQ_SHM_KIND_SEM]	= MPQ_SHM_OPS("sem", NULL),
	[MPQ_SHM_KIND_EVENT]	= MPQ_SHM_OPS("event", NULL),
	[MPQ_SHM_KIND_BARRIER]	= MPQ_SHM_OPS("barrier", NULL),
	[MPQ_SHM_KIND_VALUE]	= MPQ_SHM_OPS("value", NULL),
};

/*
 * A new block of args->bytes, owned by the caller, listed (under name,
 * which the listing keeps even after an unlink), not yet in the name
 * table.
 */
static struct mpq_shm *mpq_shm_new(const struct mpq_shm_open *args,
				   const char *name)
{
	struct mpq_shm *s;
	int ret;

	if (!args->bytes)
		return ERR_PTR(-EINVAL);
	if (args->bytes > mpq_max_object_bytes)
		return ERR_PTR(-E2BIG);
	s = kzalloc(sizeof(*s), GFP_KERNEL_ACCOUNT);
	if (!s)
		return ERR_PTR(-ENOMEM);
	s->bytes = args->bytes;
	s->map_size = PAGE_ALIGN(args->bytes);
	ret = mpq_region_init(&s->region, "mpq-shm", s->map_size);
	if (ret) {
		kfree(s);
		return ERR_PTR(ret);
	}
	kref_init(&s->ref);
	INIT_LIST_HEAD(&s->node);
	s->kind = args->kind;
	mpq_object_init(&s->obj, &mpq_shm_ops[s->kind], s->map_size);
	s->obj.mode = args->mode & ~current_umask() & 0777;
	if (name) {
		s->obj.name = kstrdup(name, GFP_KERNEL_ACCOUNT);
		if (!s->obj.name) {
			mpq_region_destroy(&s->region);
			kfree(s);
			return ERR_PTR(-ENOMEM);
		}
	}
	mpq_object_add(&s->obj);
	return s;
}

/* Copy a name in from userspace: 1 to MPQ_NAME_MAX bytes, no '/'. */
static char *mpq_name_from_user(u64 uname)
{
	char *name;

	name = strndup_user(u64_to_user_ptr(uname), MPQ_NAME_MAX + 1);
	if (IS_ERR(name))
		return PTR_ERR(name) == -EINVAL ? ERR_PTR(-ENAMETOOLONG) : name;
	if (!*name || strchr(name, '/')) {
		kfree(name);
		return ERR_PTR(-EINVAL);
	}
	return name;
}

/*
 * Find or make the block args asks for, with a reference for the caller.
 * A new block's pages are allocated without the name table's mutex held
 * (that can take long); then the table is looked at again, and a block
 * that someone else named meanwhile wins.
 */
static struct mpq_shm *mpq_shm_get_named(struct file *dev,
					 const struct mpq_shm_open *args,
					 char *name)
{
	struct mpq_shm *s, *fresh = NULL;
	int ret;

	if (!mpq_shm_can_name()) {
		kfree(name);
		return ERR_PTR(-EOPNOTSUPP);
	}
	mpq_shm_sweep();
	for (;;) {
		mutex_lock(&mpq_names_lock);
		s = mpq_shm_lookup(name);
		if (s) {
			ret = -EEXIST;
			if (args->flags & MPQ_SHM_EXCL)
				goto err_unlock;
			ret = mpq_shm_permission(s);
			if (ret)
				goto err_unlock;
			kref_get(&s->ref);
			mutex_unlock(&mpq_names_lock);
			kfree(name);
			if (fresh)
				mpq_shm_put(fresh);
			return s;
		}
		ret = -ENOENT;
		if (!(args->flags & MPQ_SHM_CREAT))
			goto err_unlock;
		if (fresh)
			break;
		mutex_unlock(&mpq_names_lock);
		fresh = mpq_shm_new(args, name);
		if (IS_ERR(fresh)) {
			kfree(name);
			return fresh;
		}
	}
	/* A persistent name is charged to the block's creator, the caller. */
	ret = -EDQUOT;
	if (args->flags & MPQ_SHM_PERSIST &&
	    mpq_user_charge_name(fresh->region.user))
		goto err_unlock;
	fresh->name = name;
	kref_get(&fresh->ref);		/* the name's */
	if (args->flags & MPQ_SHM_PERSIST) {
		fresh->persist = true;
		fresh->foreign = !mpq_ns_is_initial();
		if (fresh->foreign && !mpq_nr_foreign++)
			schedule_delayed_work(&mpq_sweep_dwork, HZ);
	} else {
		/* The caller's file holds a reference while it runs this. */
		fresh->anchor = dev;
		dev->private_data = &mpq_anchor_mark;
	}
	list_add(&fresh->node, &mpq_names);
	mutex_unlock(&mpq_names_lock);
	return fresh;

err_unlock:
	mutex_unlock(&mpq_names_lock);
	kfree(name);
	if (fresh)
		mpq_shm_put(fresh);
	return ERR_PTR(ret);
}

static int mpq_shm_check_open(const struct mpq_shm_open *args)
{
	if (args->flags & ~MPQ_SHM_FLAGS || args->mode & ~0777U ||
	    args->kind >= MPQ_SHM_KIND_MAX)
		return -EINVAL;
	if (memchr_inv(args->reserved, 0, sizeof(args->reserved)))
		return -EINVAL;
	if (!args->name && args->flags & (MPQ_SHM_EXCL | MPQ_SHM_PERSIST))
		return -EINVAL;
	if (args->flags & MPQ_SHM_PERSIST && !(args->flags & MPQ_SHM_CREAT))
		return -EINVAL;
	return 0;
}

/**
 * mpq_shm_open() - MPQ_IOC_SHM_OPEN: create or open a block, return its fd
 * @dev:	the /dev/mpq file: the anchor of a name created without
 *		MPQ_SHM_PERSIST
 * @uarg:	user pointer to struct mpq_shm_open
 *
 * Return: the new fd, or -EFAULT, -EINVAL, -ENAMETOOLONG, -ENOENT,
 * -EEXIST, -EACCES, -E2BIG, -EDQUOT (over the caller's budget of bytes,
 * objects or persistent names: user.c), -ENOMEM, -EMFILE, -EOPNOTSUPP (a
 * name where namespaces cannot be told apart).
 */
long mpq_shm_open(struct file *dev, void __user *uarg)
{
	struct mpq_shm_open args;
	struct mpq_shm_file *f;
	struct mpq_shm *s;
	struct file *file;
	char *name;
	int fd, ret;

	ret = mpq_args_from_user(&args, sizeof(args), uarg,
				 MPQ_SHM_OPEN_SIZE_VER0);
	if (ret)
		return ret;
	ret = mpq_shm_check_open(&args);
	if (ret)
		return ret;

	if (args.name) {
		name = mpq_name_from_user(args.name);
		if (IS_ERR(name))
			return PTR_ERR(name);
		s = mpq_shm_get_named(dev, &args, name);
	} else {
		s = mpq_shm_new(&args, NULL);
	}
	if (IS_ERR(s))
		return PTR_ERR(s);

	ret = -ENOMEM;
	f = kzalloc(sizeof(*f), GFP_KERNEL_ACCOUNT);
	if (!f)
		goto err_put;
	f->s = s;
	fd = get_unused_fd_flags(O_RDWR |
			(args.flags & MPQ_CREATE_CLOEXEC ? O_CLOEXEC : 0));
	if (fd < 0) {
		ret = fd;
		goto err_free;
	}
	file = anon_inode_getfile("[mpq-shm]", &mpq_shm_fops, f, O_RDWR);
	if (IS_ERR(file)) {
		ret = PTR_ERR(file);
		goto err_fd;
	}
	f->ref.region = &s->region;
	f->ref.obj = &s->obj;
	fd_install(fd, file);
	return fd;

err_fd:
	put_unused_fd(fd);
err_free:
	kfree(f);
err_put:
	mpq_shm_put(s);
	return ret;
}

/* The size of the block whose file this is (from mpq_shm_anon_file()). */
u64 mpq_shm_file_bytes(struct file *file)
{
	struct mpq_shm_file *f = file->private_data;

	return f->s->bytes;
}

/**
 * mpq_shm_anon_file() - a new anonymous block, as a file of its own
 * @bytes:	its size
 *
 * For a queue's blobs (queue.c): a block like any SharedMemory, charged to
 * the caller, whose file the queue holds and hands out fds of.
 *
 * Return: the file, or ERR_PTR(-EINVAL, -E2BIG, -EDQUOT, -ENOMEM).
 */
struct file *mpq_shm_anon_file(u64 bytes)
{
	struct mpq_shm_open args = { .bytes = bytes,
				     .kind = MPQ_SHM_KIND_SHM, .mode = 0600 };
	struct mpq_shm_file *f;
	struct mpq_shm *s;
	struct file *file;

	s = mpq_shm_new(&args, NULL);
	if (IS_ERR(s))
		return ERR_CAST(s);
	f = kzalloc(sizeof(*f), GFP_KERNEL_ACCOUNT);
	if (!f) {
		mpq_shm_put(s);
		return ERR_PTR(-ENOMEM);
	}
	f->s = s;
	f->ref.region = &s->region;
	f->ref.obj = &s->obj;
	file = anon_inode_getfile("[mpq-shm]", &mpq_shm_fops, f, O_RDWR);
	if (IS_ERR(file)) {
		kfree(f);
		mpq_shm_put(s);
	}
	return file;
}

/**
 * mpq_shm_unlink() - MPQ_IOC_SHM_UNLINK: remove a name
 * @uarg:	user pointer to struct mpq_shm_unlink
 *
 * The name's reference goes: the block lives on while it has fds or
 * mappings.
 *
 * Return: 0, or -EFAULT, -EINVAL, -ENAMETOOLONG, -ENOENT, -EPERM.
 */
long mpq_shm_unlink(void __user *uarg)
{
	struct mpq_shm_unlink args;
	struct mpq_shm *s;
	char *name;
	int ret;

	ret = mpq_args_from_user(&args, sizeof(args), uarg,
				 MPQ_SHM_UNLINK_SIZE_VER0);
	if (ret)
		return ret;
	if (args.flags || memchr_inv(args.reserved, 0, sizeof(args.reserved)))
		return -EINVAL;
	name = mpq_name_from_user(args.name);
	if (IS_ERR(name))
		return PTR_ERR(name);

	mpq_shm_sweep();
	mutex_lock(&mpq_names_lock);
	s = mpq_shm_lookup(name);
	kfree(name);
	if (!s) {
		mutex_unlock(&mpq_names_lock);
		return -ENOENT;
	}
	if (!uid_eq(current_fsuid(), s->obj.uid) &&
	    !ns_capable(mpq_ipc_ns()->user_ns, CAP_IPC_OWNER)) {
		mutex_unlock(&mpq_names_lock);
		return -EPERM;
	}
	mpq_shm_unname(s);
	mutex_unlock(&mpq_names_lock);
	mpq_shm_put(s);			/* the name's reference */
	return 0;
}

/**
 * mpq_shm_exit() - at module unload, free the blocks only names hold
 *
 * No fd or mapping exists any more (each would hold the module), nor any
 * /dev/mpq file, so what is left on the list is held by persistent names
 * alone.
 */
void mpq_shm_exit(void)
{
	struct mpq_shm *s;

	cancel_delayed_work_sync(&mpq_sweep_dwork);
	for (;;) {
		mutex_lock(&mpq_names_lock);
		s = list_first_entry_or_null(&mpq_names, struct mpq_shm, node);
		if (!s) {
			mutex_unlock(&mpq_names_lock);
			return;
		}
		mpq_shm_unname(s);
		mutex_unlock(&mpq_names_lock);
		mpq_shm_put(s);
	}
}
