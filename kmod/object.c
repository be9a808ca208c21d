// SPDX-License-Identifier: GPL-2.0
/*
 * The object core: what every mpq object has, whatever its type. An id,
 * an owner and a mode, its size, who made it; a place in the registry of
 * live objects that /proc/mpq lists (proc.c); the processes that take
 * part in it; event counters; and the tracepoints (trace.h) that tell
 * eBPF tools about each of these.
 *
 * Participants are address spaces that map the object. That is what a
 * process of libmpq does with every object it uses, and it is what the
 * kernel can follow exactly: a mapping is made by mmap(), copied by fork
 * (vm_open in the child's address space), split and moved (vm_open again)
 * and dropped by munmap or by the end of the address space (vm_close).
 * Holding an fd alone is not tracked: fds are copied by fork and passed
 * over sockets without the file being told. The table is bounded; past
 * MPQ_MAX_PARTICIPANTS processes, mappings are counted, not named.
 *
 * Death. When the last task of an address space goes (exit, or exec
 * replacing it), its mappings are closed with mm_users already zero: the
 * object core then calls the type's participant_exit() so that sleepers
 * in the module look at the object again. The same happens when an
 * exiting process closes its fds (->flush with PF_EXITING), which also
 * covers holders without a mapping. Both run after the kernel has
 * processed the dead task's robust futex list (exit_mm() does that before
 * it drops the address space), so whatever that marked is visible.
 *
 * Namespaces. An object belongs to the IPC namespace it was made in, held
 * by a token of ns.c from mpq_object_add() to mpq_object_del(); the
 * listing shows it only there. Its creator and participants are held as
 * struct pid, so that the listing can name them as the reader's pid
 * namespace sees them; tracepoints carry initial-namespace pids.
 */
#include <linux/mm.h>
#include <linux/mpq.h>
#include <linux/pid_namespace.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/stat.h>

#include "internal.h"

#define CREATE_TRACE_POINTS
#include "trace.h"

/* Every object between mpq_object_add() and mpq_object_del(). */
LIST_HEAD(mpq_objects);
/* Guards mpq_objects; held across a read of /proc/mpq, which may sleep. */
DEFINE_MUTEX(mpq_objects_lock);

/**
 * mpq_object_init() - fill in the header of a new object
 * @obj:	the header, zeroed
 * @ops:	its type
 * @size:	bytes of memory it holds
 *
 * The caller is the creating process: it becomes the owner, with its
 * fsuid and fsgid, as a file it created would.
 */
void mpq_object_init(struct mpq_object *obj, const struct mpq_object_ops *ops,
		     u64 size)
{
	obj->ops = ops;
	INIT_LIST_HEAD(&obj->node);
	obj->id = mpq_next_id();
	obj->uid = current_fsuid();
	obj->gid = current_fsgid();
	/* Unnamed: only holders of its fd reach it. */
	obj->mode = 0600;
	obj->size = size;
	obj->creator = current->tgid;
	spin_lock_init(&obj->lock);
}

/**
 * mpq_object_add() - make a new object visible: listed and traced
 * @obj:	an object past mpq_object_init(), whose memory is set up
 *
 * From here until mpq_object_del() the listing may call its ops. The
 * caller is the creating process: the object joins its IPC namespace.
 */
void mpq_object_add(struct mpq_object *obj)
{
	obj->ns = mpq_ns_get();
	obj->creator_pid = get_task_pid(current, PIDTYPE_TGID);
	mutex_lock(&mpq_objects_lock);
	list_add_tail(&obj->node, &mpq_objects);
	mutex_unlock(&mpq_objects_lock);
	atomic_long_inc(&mpq_nr_objects);
	trace_mpq_obj_create(obj);
}

/**
 * mpq_object_del() - take an object out of the registry before freeing it
 * @obj:	an object that mpq_object_add() made visible
 */
void mpq_object_del(struct mpq_object *obj)
{
	unsigned int i;

	trace_mpq_obj_destroy(obj, current->tgid);
	mutex_lock(&mpq_objects_lock);
	list_del_init(&obj->node);
	mutex_unlock(&mpq_objects_lock);
	atomic_long_dec(&mpq_nr_objects);
	/* Every mapping is gone by now; whatever is left is put. */
	for (i = 0; i < obj->nr_part; i++)
		put_pid(obj->part[i].pid);
	obj->nr_part = 0;
	put_pid(obj->creator_pid);
	mpq_ns_put(obj->ns);
}

/* A participant died: tell the tracers, then let the type wake sleepers. */
static void mpq_object_exited(struct mpq_object *obj, pid_t pid, u32 how)
{
	mpq_count(obj, MPQ_CNT_EXITS);
	trace_mpq_exit(obj, pid, current->tgid, how);
	if (obj->ops->participant_exit)
		obj->ops->participant_exit(obj, pid);
}

/**
 * mpq_object_flush() - the type's ->flush: every close of an object fd
 * @obj:	the object
 *
 * At exit the task's fds are closed with PF_EXITING set: a holder is
 * dying, whether it mapped the object or not.
 */
void mpq_object_flush(struct mpq_object *obj)
{
	if (current->flags & PF_EXITING)
		mpq_object_exited(obj, current->tgid, MPQ_LEAVE_CLOSE);
}

static struct mpq_participant *mpq_part_find(struct mpq_object *obj,
					     struct mm_struct *mm)
{
	unsigned int i;

	for (i = 0; i < obj->nr_part; i++)
		if (obj->part[i].mm == mm)
			return &obj->part[i];
	return NULL;
}

/**
 * mpq_object_map() - a mapping of the object appeared in @mm
 * @obj:	the object
 * @mm:		the address space: current's for mmap(), a child's for fork
 *
 * Called from mmap and from vm_open; cannot fail. Under fork the child
 * has no pid yet: its entry has none until someone asks (see
 * mpq_object_pid()).
 */
void mpq_object_map(struct mpq_object *obj, struct mm_struct *mm)
{
	struct mpq_participant *p;
	bool mine = mm == current->mm;
	struct pid *spid = mine ? get_task_pid(current, PIDTYPE_TGID) : NULL;
	pid_t pid = mine ? current->tgid : 0;
	bool added = false;

	spin_lock(&obj->lock);
	p = mpq_part_find(obj, mm);
	if (p) {
		p->maps++;
	} else if (obj->nr_part < MPQ_MAX_PARTICIPANTS) {
		p = &obj->part[obj->nr_part++];
		p->mm = mm;
		p->pid = spid;
		spid = NULL;
		p->maps = 1;
		added = true;
	} else {
		obj->untracked++;
	}
	spin_unlock(&obj->lock);
	put_pid(spid);
	if (added)
		trace_mpq_attach(obj, pid, current->tgid,
				 pid ? MPQ_ATTACH_MMAP : MPQ_ATTACH_FORK);
}

/*
 * The process of a participant whose pid is not known yet: the task that
 * owns the address space (CONFIG_MEMCG keeps mm->owner), referenced.
 * Called with obj->lock held, so the entry's mapping, and with it the mm,
 * still exists.
 */
static struct pid *mpq_part_owner(struct mpq_participant *p)
{
	struct pid *pid = NULL;
#ifdef CONFIG_MEMCG
	struct task_struct *t;

	rcu_read_lock();
	t = rcu_dereference(p->mm->owner);
	if (t)
		pid = get_task_pid(t, PIDTYPE_TGID);
	rcu_read_unlock();
#endif
	return pid;
}

/**
 * mpq_object_pid() - the pid of participant @i, learning it if need be
 * @obj:	the object, with obj->lock held
 * @i:		an index below obj->nr_part
 * @ns:		the pid namespace to name it in (&init_pid_ns for tracers)
 *
 * Return: its tgid in @ns, or 0 if it cannot be known (yet) or is not
 * visible there.
 */
pid_t mpq_object_pid(struct mpq_object *obj, unsigned int i,
		     struct pid_namespace *ns)
{
	struct mpq_participant *p = &obj->part[i];

	if (!p->pid)
		p->pid = mpq_part_owner(p);
	return pid_nr_ns(p->pid, ns);
}

/**
 * mpq_object_unmap() - a mapping of the object in @mm was closed
 * @obj:	the object
 * @mm:		the address space it was in
 *
 * Called from vm_close. With mm_users at zero the address space itself is
 * going (its last task exited or exec'd): that participant is dead to the
 * object, and the type hears of it.
 */
void mpq_object_unmap(struct mpq_object *obj, struct mm_struct *mm)
{
	bool gone = !atomic_read(&mm->mm_users);
	struct mpq_participant *p;
	struct pid *spid = NULL;
	bool left = false;
	pid_t pid = 0;

	spin_lock(&obj->lock);
	p = mpq_part_find(obj, mm);
	if (p && !--p->maps) {
		pid = mpq_object_pid(obj, p - obj->part, &init_pid_ns);
		spid = p->pid;
		*p = obj->part[--obj->nr_part];
		left = true;
	} else if (!p && obj->untracked) {
		obj->untracked--;
	}
	spin_unlock(&obj->lock);
	put_pid(spid);

	/* Not named yet: the exiting task itself is the likely owner. */
	if (!pid && (mm == current->mm ||
		     (gone && (current->flags & PF_EXITING))))
		pid = current->tgid;
	if (left)
		trace_mpq_detach(obj, pid, current->tgid,
				 gone ? MPQ_LEAVE_EXIT : MPQ_LEAVE_UNMAP);
	if (gone && (left || !p))
		mpq_object_exited(obj, pid, MPQ_LEAVE_EXIT);
}

/**
 * mpq_object_owner_died() - report what a dead process held, recovered
 * @obj:	the object
 * @dead:	the process that held it
 * @what:	MPQ_DIED_LOCK or MPQ_DIED_SLOT
 * @pos:	which: a queue position, a lock's index
 *
 * For the recovery code of each type (locks marked owner-died, abandoned
 * queue slots reclaimed): counts it and emits mpq_owner_died.
 */
void mpq_object_owner_died(struct mpq_object *obj, pid_t dead, u32 what,
			   u64 pos)
{
	mpq_count(obj, MPQ_CNT_EXITS);
	trace_mpq_owner_died(obj, dead, what, pos);
}

/**
 * mpq_wq_waiters() - how many entries a wait queue holds
 * @wq:		the wait queue
 *
 * Pollers (poll, select, epoll, io_uring) and sleepers alike; counted up
 * to 65535, which is plenty for a listing.
 */
unsigned int mpq_wq_waiters(wait_queue_head_t *wq)
{
	struct wait_queue_entry *e;
	unsigned long flags;
	unsigned int n = 0;

	spin_lock_irqsave(&wq->lock, flags);
	list_for_each_entry(e, &wq->head, entry)
		if (++n == U16_MAX)
			break;
	spin_unlock_irqrestore(&wq->lock, flags);
	return n;
}

/**
 * mpq_object_wait() - a task starts or ends a sleep in the module
 * @obj:	the object it sleeps on
 * @dir:	MPQ_POLL_IN (to read) or MPQ_POLL_OUT (to write)
 * @begin:	true before the sleep, false after it
 * @ret:	after: what the wait returned
 */
void mpq_object_wait(struct mpq_object *obj, u32 dir, bool begin, int ret)
{
	if (begin) {
		mpq_count(obj, MPQ_CNT_SLEEPS);
		trace_mpq_wait_begin(obj, dir, 0);
	} else {
		trace_mpq_wait_end(obj, dir, ret);
	}
}

/**
 * mpq_object_woke() - the module is about to wake the tasks on @wq
 * @obj:	the object
 * @wq:		one of its wait queues
 * @mask:	the poll events of the wake-up
 */
void mpq_object_woke(struct mpq_object *obj, wait_queue_head_t *wq,
		     __poll_t mask)
{
	mpq_count(obj, MPQ_CNT_WAKEUPS);
	if (trace_mpq_poll_wake_enabled())
		trace_mpq_poll_wake(obj, (__force u32)mask,
				    mpq_wq_waiters(wq));
}

/**
 * mpq_object_hangup() - an end of the object is gone for good
 * @obj:	the object
 * @end:	which end
 */
void mpq_object_hangup(struct mpq_object *obj, u32 end)
{
	mpq_count(obj, MPQ_CNT_HANGUPS);
	trace_mpq_hangup(obj, end);
}
