// SPDX-License-Identifier: GPL-2.0
/*
 * /proc/mpq: every live object, one line each, under a header line that
 * names the columns (ipcs for mpq; mpqstat prints it as a table or JSON).
 * Readers find columns by the header's names: columns may be added, at the
 * end, and none will be removed or renamed.
 *
 *   id		system-wide id (MPQ_IOC_*_INFO reports the same)
 *   type	queue, pipe, ...
 *   name	the name, with whitespace and backslash escaped as \ooo;
 *		- for none
 *   uid gid	owner, in the reader's user namespace
 *   mode	permission bits, octal
 *   size	bytes of memory the object holds
 *   depth	messages (queue) or bytes (pipe) waiting, read from shared
 *		memory that any participant can scribble on: clamped to
 *		capacity, a hint and never a promise
 *   capacity	the most depth can be
 *   creator	pid of the creating process
 *   waiters	tasks on the object's wait queues: pollers and sleepers
 *   nproc	processes that map it (participants)
 *   pids	their pids, comma-separated, ? for one not known yet, then
 *		+N for N mappings of processes past the table; - for none
 *   polls wakeups sleeps reads writes hangups exits
 *		counters of events in the module (enum mpq_counter)
 *
 * pids are as the initial pid namespace sees them. The file is readable
 * by everyone, as /proc/sysvipc is; it shows no contents.
 */
#include <linux/mpq.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>
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

static void *mpq_objects_start(struct seq_file *m, loff_t *pos)
{
	mutex_lock(&mpq_objects_lock);
	return seq_list_start_head(&mpq_objects, *pos);
}

static void *mpq_objects_next(struct seq_file *m, void *v, loff_t *pos)
{
	return seq_list_next(v, &mpq_objects, pos);
}

static void mpq_objects_stop(struct seq_file *m, void *v)
{
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
static void mpq_show_pids(struct seq_file *m, struct mpq_object *obj)
{
	pid_t pids[MPQ_MAX_PARTICIPANTS];
	unsigned int i, n, untracked;

	spin_lock(&obj->lock);
	n = obj->nr_part;
	for (i = 0; i < n; i++)
		pids[i] = mpq_object_pid(obj, i);
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

static int mpq_objects_show(struct seq_file *m, void *v)
{
	struct user_namespace *ns = seq_user_ns(m);
	struct mpq_object *obj;
	u64 depth, cap;
	int i;

	if (v == &mpq_objects) {
		mpq_show_header(m);
		return 0;
	}
	obj = list_entry(v, struct mpq_object, node);
	cap = obj->ops->capacity(obj);
	depth = min(obj->ops->depth(obj), cap);

	seq_printf(m, "%llu %s ", obj->id, obj->ops->name);
	if (obj->name)
		seq_escape(m, obj->name, " \t\n\\");
	else
		seq_putc(m, '-');
	seq_printf(m, " %u %u %04o %llu %llu %llu %d %u ",
		   from_kuid_munged(ns, obj->uid),
		   from_kgid_munged(ns, obj->gid), obj->mode, obj->size,
		   depth, cap, obj->creator, obj->ops->waiters(obj));
	mpq_show_pids(m, obj);
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

int mpq_proc_init(void)
{
	if (!proc_create_seq("mpq", 0444, NULL, &mpq_objects_seq_ops))
		return -ENOMEM;
	return 0;
}

void mpq_proc_exit(void)
{
	remove_proc_entry("mpq", NULL);
}
