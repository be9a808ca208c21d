// SPDX-License-Identifier: GPL-2.0
/*
 * The IPC namespace an object belongs to, held so that it can be compared
 * and cannot be mistaken for another.
 *
 * Objects live in the IPC namespace of the process that made them: names
 * are looked up there only (shm.c), and /proc/mpq lists an object only to
 * readers of that namespace (proc.c), as System V IPC does. A module
 * cannot hold an ipc_namespace itself (put_ipc_ns() is not exported), and
 * an address and inode number held without a reference are not an
 * identity: once the namespace is freed, a new one can get both.
 *
 * What a module can hold is a vfsmount. Every IPC namespace has its own
 * internal mount of the mqueue filesystem, ns->mq_mnt, made with the
 * namespace and released (kern_unmount()) only when it is freed. A token
 * of this file is that vfsmount with a reference (mntget()): while we hold
 * it, the vfsmount is not freed, so no other namespace can ever have the
 * same ns->mq_mnt, and "the token equals current's ns->mq_mnt" means
 * "current is in the namespace that made it" and nothing else.
 *
 * Death: put_ipc_ns() calls mq_clear_sbinfo(), which sets the mqueue
 * superblock's s_fs_info to NULL, when the namespace's last reference
 * goes (and a namespace never comes back to life). The superblock stays
 * valid while our reference keeps the mount, so a NULL s_fs_info tells
 * that no process is in the namespace, nor ever will be again. Checked in
 * ipc/namespace.c and ipc/mqueue.c of 6.1 and 6.12.
 *
 * The final mntput() of a token whose namespace died unmounts (sleeps):
 * tokens are put in process context, without spinlocks held.
 *
 * Without CONFIG_POSIX_MQUEUE there is no such mount. The initial IPC
 * namespace, which is never freed, gets a token of its own (it has the
 * fixed inode number PROC_IPC_INIT_INO that no other namespace can have);
 * in any other namespace mpq_ns_get() returns NULL, which equals nothing:
 * objects made there are listed to no one and cannot be named.
 */
#include <linux/ipc_namespace.h>
#include <linux/mount.h>
#include <linux/nsproxy.h>
#include <linux/proc_ns.h>
#include <linux/sched.h>

#include "internal.h"

#ifdef CONFIG_POSIX_MQUEUE
static struct vfsmount *mpq_ns_mnt(void)
{
	struct vfsmount *mnt = current->nsproxy->ipc_ns->mq_mnt;

	return IS_ERR_OR_NULL(mnt) ? NULL : mnt;
}

/**
 * mpq_ns_get() - the caller's IPC namespace, held
 *
 * Return: a token to mpq_ns_put() later, or NULL if the namespace cannot
 * be told apart from others (then it equals no namespace).
 */
struct mpq_ns *mpq_ns_get(void)
{
	struct vfsmount *mnt = mpq_ns_mnt();

	return mnt ? (struct mpq_ns *)mntget(mnt) : NULL;
}

/**
 * mpq_ns_put() - drop a token of mpq_ns_get(); may sleep
 * @ns:		the token, or NULL
 */
void mpq_ns_put(struct mpq_ns *ns)
{
	if (ns)
		mntput((struct vfsmount *)ns);
}

/**
 * mpq_ns_is_current() - is the caller in the namespace of @ns?
 * @ns:		a held token, or NULL (which is no namespace)
 */
bool mpq_ns_is_current(const struct mpq_ns *ns)
{
	return ns && (const struct vfsmount *)ns == mpq_ns_mnt();
}

/**
 * mpq_ns_is_dead() - has the namespace of @ns ended for good?
 * @ns:		a held token
 *
 * Return: true once no process is, or can ever again be, in it.
 */
bool mpq_ns_is_dead(const struct mpq_ns *ns)
{
	const struct vfsmount *mnt = (const struct vfsmount *)ns;

	return ns && !READ_ONCE(mnt->mnt_sb->s_fs_info);
}
#else
/* The initial namespace's token; it never dies. */
static char mpq_initial_ns;

struct mpq_ns *mpq_ns_get(void)
{
	if (current->nsproxy->ipc_ns->ns.inum != PROC_IPC_INIT_INO)
		return NULL;
	return (struct mpq_ns *)&mpq_initial_ns;
}

void mpq_ns_put(struct mpq_ns *ns)
{
}

bool mpq_ns_is_current(const struct mpq_ns *ns)
{
	return ns && ns == mpq_ns_get();
}

bool mpq_ns_is_dead(const struct mpq_ns *ns)
{
	return false;
}
#endif

/**
 * mpq_ns_is_initial() - is the caller in the initial IPC namespace?
 *
 * Its inode number is fixed and no other namespace can have it.
 */
bool mpq_ns_is_initial(void)
{
	return current->nsproxy->ipc_ns->ns.inum == PROC_IPC_INIT_INO;
}
