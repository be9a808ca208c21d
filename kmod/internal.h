/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Private declarations of the mpq module: the object core every object
 * type embeds (object.c), the shmem-backed memory region every object is
 * built on (region.c), the create entry points of each type, and the
 * module-wide counters that show what the module still holds.
 */
#ifndef _MPQ_INTERNAL_H
#define _MPQ_INTERNAL_H

#include <linux/atomic.h>
#include <linux/fcntl.h>
#include <linux/fs.h>
#include <linux/mm.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/pid.h>
#include <linux/spinlock.h>
#include <linux/types.h>
#include <linux/uidgid.h>
#include <linux/wait.h>

struct mpq_object;
struct mpq_user;

/**
 * struct mpq_object_ops - what an object type tells the object core
 * @name:	type name, as /proc/mpq and mpqstat show it
 * @type:	MPQ_OBJ_* from the uapi header, as the tracepoints carry it
 * @depth:	messages (queue) or bytes (pipe) waiting now; reads shared
 *		memory, so it must clamp whatever it finds there
 * @capacity:	the most @depth can be
 * @waiters:	tasks on the object's wait queues (pollers and sleepers)
 * @participant_exit: a process that held the object died (or exec'd and
 *		dropped its mapping). Robust-futex processing has already run
 *		for it; the type wakes whoever sleeps in the module so that
 *		they look again. May sleep; called without locks held, and
 *		possibly more than once for one death (mapping and fds).
 *
 * A new type embeds struct mpq_object, fills one of these, calls
 * mpq_object_init() and mpq_object_add() when it is created,
 * mpq_object_del() when it is freed, routes ->flush to
 * mpq_object_flush() and maps its region through a struct mpq_mapref.
 */
struct mpq_object_ops {
	const char *name;
	u32 type;
	u64 (*depth)(struct mpq_object *obj);
	u64 (*capacity)(struct mpq_object *obj);
	unsigned int (*waiters)(struct mpq_object *obj);
	void (*participant_exit)(struct mpq_object *obj, pid_t pid);
};

/* Per-object event counters, as /proc/mpq lists them. */
enum mpq_counter {
	MPQ_CNT_POLLS,		/* ->poll() calls */
	MPQ_CNT_WAKEUPS,	/* wake-ups of pollers and sleepers */
	MPQ_CNT_SLEEPS,		/* sleeps in read(2)/write(2) */
	MPQ_CNT_READS,		/* messages taken by read(2) */
	MPQ_CNT_WRITES,		/* messages put by write(2) */
	MPQ_CNT_HANGUPS,	/* ends released (pipes) */
	MPQ_CNT_EXITS,		/* participant deaths seen */
	MPQ_NR_COUNTERS
};

/* Processes tracked per object; more are counted, not named. */
#define MPQ_MAX_PARTICIPANTS	32

/**
 * struct mpq_participant - one address space that maps an object
 * @mm:		the address space; an identity only, never dereferenced
 *		except to name its owner while a mapping keeps it alive
 * @pid:	its process (PIDTYPE_TGID), referenced; NULL until known, as
 *		for a child whose mapping was copied by fork
 * @maps:	the object's vmas in @mm
 */
struct mpq_participant {
	struct mm_struct *mm;
	struct pid *pid;
	u32 maps;
};

/**
 * struct mpq_object - the header every mpq object embeds
 * @ops:	its type
 * @node:	in the registry of live objects (object.c)
 * @id:		system-wide id, never reused while the module is loaded
 * @name:	NUL-terminated name, or NULL; fixed once the object is added
 * @uid:	owner: the creator's fsuid
 * @gid:	the creator's fsgid
 * @mode:	permission bits
 * @size:	bytes of memory the object holds
 * @creator:	tgid of the creating process (initial pid namespace)
 * @creator_pid: the same, referenced, for readers in other pid namespaces
 * @ns:		the IPC namespace it was made in (ns.c), referenced
 * @lock:	protects @part, @nr_part and @untracked
 * @part:	the processes that map the object, up to MPQ_MAX_PARTICIPANTS
 * @nr_part:	entries used in @part
 * @untracked:	mappings of processes beyond @part
 * @count:	enum mpq_counter events
 */
struct mpq_object {
	const struct mpq_object_ops *ops;
	struct list_head node;
	u64 id;
	const char *name;
	kuid_t uid;
	kgid_t gid;
	umode_t mode;
	u64 size;
	pid_t creator;
	struct pid *creator_pid;
	struct mpq_ns *ns;
	spinlock_t lock;	/* the participant table */
	struct mpq_participant part[MPQ_MAX_PARTICIPANTS];
	unsigned int nr_part;
	unsigned int untracked;
	atomic_long_t count[MPQ_NR_COUNTERS];
};

struct mpq_region;

/**
 * struct mpq_mapref - what a mapping of an object refers to
 * @region:	the memory it maps, whose pages its faults are served from
 * @obj:	its object, for participant tracking
 *
 * Embedded in the type, one per file (a queue has one, a pipe one per
 * end), and alive as long as that file, which each mapping holds as its
 * vm_file. Both fields are set before the file is made.
 */
struct mpq_mapref {
	struct mpq_region *region;
	struct mpq_object *obj;
};

void mpq_object_init(struct mpq_object *obj, const struct mpq_object_ops *ops,
		     u64 size);
void mpq_object_add(struct mpq_object *obj);
void mpq_object_del(struct mpq_object *obj);
void mpq_object_flush(struct mpq_object *obj);
void mpq_object_map(struct mpq_object *obj, struct mm_struct *mm);
void mpq_object_unmap(struct mpq_object *obj, struct mm_struct *mm);
pid_t mpq_object_pid(struct mpq_object *obj, unsigned int i,
		     struct pid_namespace *ns);
void mpq_object_owner_died(struct mpq_object *obj, pid_t dead, u32 what,
			   u64 pos);
unsigned int mpq_wq_waiters(wait_queue_head_t *wq);
void mpq_object_wait(struct mpq_object *obj, u32 dir, bool begin, int ret);
void mpq_object_woke(struct mpq_object *obj, wait_queue_head_t *wq,
		     __poll_t mask);
void mpq_object_hangup(struct mpq_object *obj, u32 end);

static inline void mpq_count(struct mpq_object *obj, enum mpq_counter c)
{
	atomic_long_inc(&obj->count[c]);
}

/*
 * The registry of live objects, for the listing (proc.c). Readers of the
 * listing keep a cursor in it: an entry whose ops is NULL, to be skipped.
 */
extern struct list_head mpq_objects;
extern struct mutex mpq_objects_lock;

/* An IPC namespace, held (ns.c); opaque. */
struct mpq_ns;
struct mpq_ns *mpq_ns_get(void);
void mpq_ns_put(struct mpq_ns *ns);
bool mpq_ns_is_current(const struct mpq_ns *ns);
bool mpq_ns_is_dead(const struct mpq_ns *ns);
bool mpq_ns_is_initial(void);

int mpq_proc_init(void);
void mpq_proc_exit(void);

/**
 * struct mpq_region - memory shared between the kernel and every process
 * @shmem:	the shmem file that backs it, so that its pages are file pages
 *		and shared futexes work on them; never seen by userspace
 * @pages:	every page of @shmem, pinned for the life of the region, and
 *		what the object's mappings fault in
 * @nr_pages:	number of entries in @pages
 * @kaddr:	kernel mapping of @pages, contiguous, nr_pages * PAGE_SIZE
 * @user:	the user it is charged to (user.c)
 */
struct mpq_region {
	struct file *shmem;
	struct page **pages;
	unsigned long nr_pages;
	void *kaddr;
	struct mpq_user *user;
};

int mpq_region_init(struct mpq_region *r, const char *name, size_t size);
void mpq_region_destroy(struct mpq_region *r);
int mpq_region_mmap(struct mpq_region *r, struct mpq_mapref *ref,
		    struct vm_area_struct *vma);

/* read_iter/write_iter: must this call not sleep (io_uring, O_NONBLOCK)? */
static inline bool mpq_nowait(struct kiocb *iocb)
{
	return iocb->ki_flags & IOCB_NOWAIT ||
	       iocb->ki_filp->f_flags & O_NONBLOCK;
}

/* Per-user budgets (user.c): charged by the region, names by shm.c. */
struct mpq_user *mpq_user_charge(u64 bytes);
void mpq_user_uncharge(struct mpq_user *u, u64 bytes);
int mpq_user_charge_name(struct mpq_user *u);
void mpq_user_uncharge_name(struct mpq_user *u);
int mpq_user_init(void);
void mpq_user_exit(void);

long mpq_queue_create(void __user *uarg);
long mpq_pipe_create(void __user *uarg);
long mpq_shm_open(struct file *dev, void __user *uarg);
struct file *mpq_shm_anon_file(u64 bytes);
u64 mpq_shm_file_bytes(struct file *file);
long mpq_shm_unlink(void __user *uarg);
void mpq_shm_exit(void);
void mpq_shm_sweep(void);
void mpq_shm_dev_release(struct file *file);

/* Module-wide accounting, readable under /sys/module/mpq/parameters/. */
extern atomic_long_t mpq_nr_objects;
extern atomic_long_t mpq_nr_pages;
extern unsigned long mpq_max_object_bytes;

u64 mpq_next_id(void);
long mpq_info_to_user(void __user *uarg, void *info, size_t ksize, u32 min);
long mpq_args_from_user(void *args, size_t ksize, const void __user *uarg,
			u32 min);

#endif /* _MPQ_INTERNAL_H */
