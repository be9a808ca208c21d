// SPDX-License-Identifier: GPL-2.0
/*
 * /proc/mpq: the live objects of the reader's IPC namespace, one line
 * each, under a header line that names the columns (ipcs for mpq;
 * mpqstat prints it as a table or JSON).
 * Readers find columns by the header's names: columns may be added, at the
 * end, and none will be removed or renamed.
 *
 *   id		system-wide id (MPQ_IOC_*_INFO reports the same)
 *   type	queue, pipe, ...
 *   name	the name, every byte that is not printable ASCII (controls,
 *		space, DEL, bytes >= 0x80) and backslash escaped as \ooo
 *		(three octal digits); - for none
 *   uid gid	owner, in the reader's user namespace
 *   mode	permission bits, octal
 *   size	bytes of memory the object holds
 *   depth	messages (queue) or bytes (pipe) waiting, read from shared
 *		memory that any participant can scribble on: clamped to
 *		capacity, a hint and never a promise
 *   capacity	the most depth can be
 *   creator	pid of the creating process; 0 if the reader's pid
 *		namespace does not see it (or it is gone)
 *   waiters	tasks on the object's wait queues: pollers and sleepers
 *   nproc	processes that map it (participants)
 *   pids	their pids, comma-separated, ? for one not known yet or
 *		not visible in the reader's pid namespace, then
 *		+N for N mappings of processes past the table; - for none
 *   polls wakeups sleeps reads writes hangups exits
 *		counters of events in the module (enum mpq_counter)
 *
 * Scope, as /proc/sysvipc has it: an open of the file lists the objects
 * made in the opener's IPC namespace (ns.c), pids as the opener's pid
 * namespace sees them, owners in the opener's user namespace. The file is
 * readable by everyone; it shows no contents.
 *
 * Each open file keeps a cursor in the registry (a placeholder object
 * whose ops is NULL), left where the last read() stopped: the next read()
 * goes on from there, so reading the whole file walks the registry once,
 * and the registry's mutex is held for one read() chunk at a time.
 */
#include <linux/mpq.h>
#include <linux/pid_namespace.h>
#include <linux/proc_fs.h>
#include <linux/sched.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/user_namespace.h>

#include "internal.h"

static const char *const mpq_counter_names[MPQ_NR_COUNTERS] = {
	[MPQ_CNT_POLLS]		= "polls",
	[MPQ_CNT_WAKEUPS]	= "wakeups",
	[MPQ_CNT_SLEEPS]	= "sleeps",
	[MPQ_CNT_READS]		= "reads",
	[MPQ_CNT_WRITES]	= "writes",
	[MPQ_CNT_HANGUPS]	= "hangups",
	[MPQ_CNT_EXITS]		= "exits",
};

/**
 * struct mpq_proc_iter - an open /proc/mpq
 * @cursor:	in mpq_objects just before the next object to show, once a
 *		read() stopped; a placeholder (ops NULL) that walks skip
 * @index:	the seq_file index of that next object
 * @ns:		the opener's IPC namespace: the objects listed
 * @pid_ns:	the opener's pid namespace: the pids shown
 */
struct mpq_proc_iter {
	struct mpq_object cursor;
	loff_t index;
	struct mpq_ns *ns;
	struct pid_namespace *pid_ns;
};

/* The first object after @from that the reader may see, or NULL. */
static struct mpq_object *mpq_proc_next_visible(struct mpq_proc_iter *it,
						struct list_head *from)
{
	struct list_head *l;
	unsigned int n = 0;

	for (l = from->next; l != &mpq_objects; l = l->next) {
		struct mpq_object *obj = list_entry(l, struct mpq_object, node);

		if (obj->ops && obj->ns && obj->ns == it->ns)
			return obj;
		/* Another namespace's objects: many, perhaps. */
		if (!(++n & 1023))
			cond_resched();
	}
	return NULL;
}

static void *mpq_objects_start(struct seq_file *m, loff_t *pos)
{
	struct mpq_proc_iter *it = m->private;
	struct mpq_object *obj = NULL;
	loff_t i;

	mutex_lock(&mpq_objects_lock);
	if (!*pos) {
		list_move(&it->cursor.node, &mpq_objects);
		return SEQ_START_TOKEN;
	}
	if (*pos == it->index)
		return mpq_proc_next_visible(it, &it->cursor.node);
	/* Not where the last read() stopped (a seek): count from the top. */
	list_move(&it->cursor.node, &mpq_objects);
	for (i = 0; i < *pos; i++) {
		obj = mpq_proc_next_visible(it, obj ? &obj->node :
						     &it->cursor.node);
		if (!obj)
			break;
	}
	return obj;
}

static void *mpq_objects_next(struct seq_file *m, void *v, loff_t *pos)
{
	struct mpq_proc_iter *it = m->private;
	struct mpq_object *obj = v;

	++*pos;
	return mpq_proc_next_visible(it, v == SEQ_START_TOKEN ?
					 &it->cursor.node : &obj->node);
}

/* Park the cursor before v, the next object to show (after all if none). */
static void mpq_objects_stop(struct seq_file *m, void *v)
{
	struct mpq_proc_iter *it = m->private;
	struct mpq_object *obj = v;

	if (v == SEQ_START_TOKEN)
		list_move(&it->cursor.node, &mpq_objects);
	else if (!IS_ERR_OR_NULL(v))
		list_move_tail(&it->cursor.node, &obj->node);
	else
		list_move_tail(&it->cursor.node, &mpq_objects);
	it->index = m->index;
	mutex_unlock(&mpq_objects_lock);
}

static void mpq_show_header(struct seq_file *m)
{
	int i;

	seq_puts(m, "id type name uid gid mode size depth capacity creator waiters nproc pids");
	for (i = 0; i < MPQ_NR_COUNTERS; i++)
		seq_printf(m, " %s", mpq_counter_names[i]);
	seq_putc(m, '\n');
}

/* nproc and pids, from one look at the table. */
static void mpq_show_pids(struct seq_file *m, struct mpq_object *obj,
			  struct pid_namespace *pid_ns)
{
	pid_t pids[MPQ_MAX_PARTICIPANTS];
	unsigned int i, n, untracked;

	spin_lock(&obj->lock);
	n = obj->nr_part;
	for (i = 0; i < n; i++)
		pids[i] = mpq_object_pid(obj, i, pid_ns);
	untracked = obj->untracked;
	spin_unlock(&obj->lock);

	seq_printf(m, "%u ", n);
	for (i = 0; i < n; i++) {
		if (i)
			seq_putc(m, ',');
		if (pids[i])
			seq_printf(m, "%d", pids[i]);
		else
			seq_putc(m, '?');
	}
	if (untracked)
		seq_printf(m, "+%u", untracked);
	else if (!n)
		seq_putc(m, '-');
}

/*
 * A name as one field that is safe on a terminal: only printable ASCII
 * other than space and backslash goes out as it is.
 */
static void mpq_show_name(struct seq_file *m, const char *name)
{
	const unsigned char *c;

	for (c = name; *c; c++) {
		if (*c > ' ' && *c < 0x7f && *c != '\\')
			seq_putc(m, *c);
		else
			seq_printf(m, "\\%03o", *c);
	}
}

static int mpq_objects_show(struct seq_file *m, void *v)
{
	struct user_namespace *ns = seq_user_ns(m);
	struct mpq_proc_iter *it = m->private;
	struct mpq_object *obj = v;
	u64 depth, cap;
	int i;

	if (v == SEQ_START_TOKEN) {
		mpq_show_header(m);
		return 0;
	}
	cap = obj->ops->capacity(obj);
	depth = min(obj->ops->depth(obj), cap);

	seq_printf(m, "%llu %s ", obj->id, obj->ops->name);
	if (obj->name)
		mpq_show_name(m, obj->name);
	else
		seq_putc(m, '-');
	seq_printf(m, " %u %u %04o %llu %llu %llu %d %u ",
		   from_kuid_munged(ns, obj->uid),
		   from_kgid_munged(ns, obj->gid), obj->mode, obj->size,
		   depth, cap, pid_nr_ns(obj->creator_pid, it->pid_ns),
		   obj->ops->waiters(obj));
	mpq_show_pids(m, obj, it->pid_ns);
	for (i = 0; i < MPQ_NR_COUNTERS; i++)
		seq_printf(m, " %ld", atomic_long_read(&obj->count[i]));
	seq_putc(m, '\n');
	return 0;
}

static const struct seq_operations mpq_objects_seq_ops = {
	.start	= mpq_objects_start,
	.next	= mpq_objects_next,
	.stop	= mpq_objects_stop,
	.show	= mpq_objects_show,
};

static int mpq_proc_open(struct inode *inode, struct file *file)
{
	struct mpq_proc_iter *it;

	/* Names of dead namespaces go before anyone looks. */
	mpq_shm_sweep();
	it = __seq_open_private(file, &mpq_objects_seq_ops, sizeof(*it));
	if (!it)
		return -ENOMEM;
	INIT_LIST_HEAD(&it->cursor.node);
	it->ns = mpq_ns_get();
	it->pid_ns = get_pid_ns(task_active_pid_ns(current));
	return 0;
}

static int mpq_proc_release(struct inode *inode, struct file *file)
{
	struct seq_file *m = file->private_data;
	struct mpq_proc_iter *it = m->private;

	mutex_lock(&mpq_objects_lock);
	list_del(&it->cursor.node);
	mutex_unlock(&mpq_objects_lock);
	mpq_ns_put(it->ns);
	put_pid_ns(it->pid_ns);
	return seq_release_private(inode, file);
}

static const struct proc_ops mpq_proc_ops = {
	.proc_open	= mpq_proc_open,
	.proc_read_iter	= seq_read_iter,
	.proc_lseek	= seq_lseek,
	.proc_release	= mpq_proc_release,
};

int mpq_proc_init(void)
{
	if (!proc_create("mpq", 0444, NULL, &mpq_proc_ops))
		return -ENOMEM;
	return 0;
}

void mpq_proc_exit(void)
{
	remove_proc_entry("mpq", NULL);
}
