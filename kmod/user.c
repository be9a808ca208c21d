// SPDX-License-Identifier: GPL-2.0
/*
 * Per-user budgets: every object's memory is pinned, unevictable and in no
 * process's RSS, and a persistent name keeps it after its creator's last
 * process is gone, so without a bound any local user could pin the
 * machine's memory. Each object is charged to the user who made it (its
 * owner, the creator's fsuid: the uid /proc/mpq shows and the one that may
 * unlink its name) for its bytes and as one object; a persistent name is
 * charged as one name while it exists. The charge is taken before the
 * pages are allocated and given back when the object is freed, by whoever
 * drops the last reference, however long after the creator exited.
 *
 * Limits are module parameters, writable by root: max_user_bytes (default
 * a quarter of RAM), max_user_objects, max_user_names. A create past one
 * of them fails with -EDQUOT, distinct from a real -ENOMEM. A process with
 * CAP_SYS_RESOURCE in the initial user namespace (what lets root exceed
 * rlimits) may go past them; its objects are still counted. Lowering a
 * limit frees nothing: it stops new charges only.
 *
 * A user's counters live in a small refcounted struct, found by kuid in a
 * hash table: each charged object and name holds a reference, so the
 * struct lives exactly as long as something is charged to it. Charges are lock-free
 * (a cmpxchg loop against the limit, as io_uring's __io_account_mem);
 * the table lock is taken only to find or free a user.
 *
 * /proc/mpq_users lists each user with something charged, as the reader's
 * user namespace sees it (users it cannot name are left out), and the
 * limits, under a header line naming the columns:
 *
 *   uid objects bytes names max_objects max_bytes max_names
 */
#include <linux/capability.h>
#include <linux/cred.h>
#include <linux/hashtable.h>
#include <linux/mm.h>
#include <linux/moduleparam.h>
#include <linux/proc_fs.h>
#include <linux/refcount.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/user_namespace.h>

#include "internal.h"

/* Limits; 0 bytes is a real limit (only exempt users may create). */
static unsigned long mpq_max_user_bytes;
static bool mpq_max_user_bytes_set;
static unsigned int mpq_max_user_objects = 16384;
static unsigned int mpq_max_user_names = 256;

static int mpq_set_user_bytes(const char *val, const struct kernel_param *kp)
{
	int ret = param_set_ulong(val, kp);

	if (!ret)
		WRITE_ONCE(mpq_max_user_bytes_set, true);
	return ret;
}

static const struct kernel_param_ops mpq_user_bytes_ops = {
	.set = mpq_set_user_bytes,
	.get = param_get_ulong,
};

module_param_cb(max_user_bytes, &mpq_user_bytes_ops, &mpq_max_user_bytes,
		0644);
MODULE_PARM_DESC(max_user_bytes,
		 "Bytes of objects one user may hold (default: RAM / 4)");
module_param_named(max_user_objects, mpq_max_user_objects, uint, 0644);
MODULE_PARM_DESC(max_user_objects,
		 "Objects one user may hold (default 16384)");
module_param_named(max_user_names, mpq_max_user_names, uint, 0644);
MODULE_PARM_DESC(max_user_names,
		 "Persistent names one user may hold (default 256)");

struct mpq_user {
	struct hlist_node node;		/* in mpq_users, under its lock */
	kuid_t uid;
	refcount_t ref;			/* one per charged object and name */
	atomic64_t bytes;
	atomic64_t objects;
	atomic64_t names;
};

#define MPQ_USERS_BITS	6
static DEFINE_HASHTABLE(mpq_users, MPQ_USERS_BITS);
static DEFINE_SPINLOCK(mpq_users_lock);

/* Called only when a limit would be passed: no audit record otherwise. */
static bool mpq_user_exempt(void)
{
	return capable(CAP_SYS_RESOURCE);
}

/* Add n to *v unless that passes max (and the caller is not exempt). */
static int mpq_charge(atomic64_t *v, u64 n, u64 max)
{
	s64 old = atomic64_read(v);

	do {
		if ((u64)old + n > max || (u64)old + n < n) {
			if (!mpq_user_exempt())
				return -EDQUOT;
			atomic64_add(n, v);
			return 0;
		}
	} while (!atomic64_try_cmpxchg(v, &old, old + n));
	return 0;
}

static struct mpq_user *mpq_user_find(kuid_t uid)
{
	struct mpq_user *u;

	lockdep_assert_held(&mpq_users_lock);
	hash_for_each_possible(mpq_users, u, node, __kuid_val(uid))
		if (uid_eq(u->uid, uid))
			return u;
	return NULL;
}

/* The caller's user, with a reference; allocated at its first charge. */
static struct mpq_user *mpq_user_get(void)
{
	kuid_t uid = current_fsuid();
	struct mpq_user *u, *fresh = NULL;

	for (;;) {
		spin_lock(&mpq_users_lock);
		u = mpq_user_find(uid);
		if (u) {
			refcount_inc(&u->ref);
			spin_unlock(&mpq_users_lock);
			kfree(fresh);
			return u;
		}
		if (fresh)
			break;
		spin_unlock(&mpq_users_lock);
		fresh = kzalloc(sizeof(*fresh), GFP_KERNEL_ACCOUNT);
		if (!fresh)
			return ERR_PTR(-ENOMEM);
		fresh->uid = uid;
		refcount_set(&fresh->ref, 1);
	}
	hash_add(mpq_users, &fresh->node, __kuid_val(uid));
	spin_unlock(&mpq_users_lock);
	return fresh;
}

static void mpq_user_put(struct mpq_user *u)
{
	if (!refcount_dec_and_lock(&u->ref, &mpq_users_lock))
		return;
	hash_del(&u->node);
	spin_unlock(&mpq_users_lock);
	WARN_ON_ONCE(atomic64_read(&u->bytes) || atomic64_read(&u->objects) ||
		     atomic64_read(&u->names));
	kfree(u);
}

/**
 * mpq_user_charge() - charge a new object of @bytes to the caller's user
 * @bytes:	the memory it will hold
 *
 * Before its pages are allocated. The object keeps the returned user
 * until mpq_user_uncharge().
 *
 * Return: the user, or ERR_PTR(-EDQUOT) past a limit, ERR_PTR(-ENOMEM).
 */
struct mpq_user *mpq_user_charge(u64 bytes)
{
	struct mpq_user *u = mpq_user_get();
	int ret;

	if (IS_ERR(u))
		return u;
	ret = mpq_charge(&u->objects, 1, READ_ONCE(mpq_max_user_objects));
	if (ret)
		goto err_put;
	ret = mpq_charge(&u->bytes, bytes, READ_ONCE(mpq_max_user_bytes));
	if (ret)
		goto err_objects;
	return u;

err_objects:
	atomic64_dec(&u->objects);
err_put:
	mpq_user_put(u);
	return ERR_PTR(ret);
}

/**
 * mpq_user_uncharge() - an object charged by mpq_user_charge() is freed
 * @u:		its user
 * @bytes:	what it was charged
 *
 * From any context that may free the object; drops the object's
 * reference on @u.
 */
void mpq_user_uncharge(struct mpq_user *u, u64 bytes)
{
	atomic64_sub(bytes, &u->bytes);
	atomic64_dec(&u->objects);
	mpq_user_put(u);
}

/**
 * mpq_user_charge_name() - charge a persistent name to @u
 * @u:	the user of the block the name keeps alive (its creator: the caller)
 *
 * The name holds its own reference on @u, so that a name never given back
 * keeps its user listed. Return: 0, or -EDQUOT past max_user_names.
 */
int mpq_user_charge_name(struct mpq_user *u)
{
	int ret = mpq_charge(&u->names, 1, READ_ONCE(mpq_max_user_names));

	if (!ret)
		refcount_inc(&u->ref);
	return ret;
}

/* The name charged by mpq_user_charge_name() is gone. */
void mpq_user_uncharge_name(struct mpq_user *u)
{
	atomic64_dec(&u->names);
	mpq_user_put(u);
}

static int mpq_users_show(struct seq_file *m, void *v)
{
	struct user_namespace *ns = seq_user_ns(m);
	unsigned long max_bytes = READ_ONCE(mpq_max_user_bytes);
	unsigned int max_objects = READ_ONCE(mpq_max_user_objects);
	unsigned int max_names = READ_ONCE(mpq_max_user_names);
	struct mpq_user *u;
	int bkt;

	seq_puts(m, "uid objects bytes names max_objects max_bytes max_names\n");
	spin_lock(&mpq_users_lock);
	hash_for_each(mpq_users, bkt, u, node) {
		if (!kuid_has_mapping(ns, u->uid))
			continue;
		seq_printf(m, "%u %lld %lld %lld %u %lu %u\n",
			   from_kuid(ns, u->uid), atomic64_read(&u->objects),
			   atomic64_read(&u->bytes), atomic64_read(&u->names),
			   max_objects, max_bytes, max_names);
	}
	spin_unlock(&mpq_users_lock);
	return 0;
}

/**
 * mpq_user_init() - set the default byte budget and create /proc/mpq_users
 *
 * A quarter of RAM unless max_user_bytes was given at load: enough for
 * every ordinary use (the test suite runs as an ordinary user in 4 GiB),
 * while one user alone can no longer pin most of memory.
 *
 * Return: 0 or -ENOMEM.
 */
int mpq_user_init(void)
{
	u64 quarter = (u64)(totalram_pages() / 4) << PAGE_SHIFT;

	if (!READ_ONCE(mpq_max_user_bytes_set))
		mpq_max_user_bytes = min_t(u64, quarter, ULONG_MAX);
	if (!proc_create_single("mpq_users", 0444, NULL, mpq_users_show))
		return -ENOMEM;
	return 0;
}

/* At unload: every object is gone, and with it every user. */
void mpq_user_exit(void)
{
	remove_proc_entry("mpq_users", NULL);
	WARN_ON_ONCE(!hash_empty(mpq_users));
}
