/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Tracepoints of the mpq module: TRACE_SYSTEM mpq, under
 * /sys/kernel/tracing/events/mpq/.
 *
 * The eBPF tools in tools/ read these events through tp/mpq/<event>
 * programs whose context structs are written by hand (tools/mpq_tp.h):
 * module BTF cannot be generated from Debian's headers, so tp_btf is not
 * an option. Every field is therefore of fixed size, and every event
 * starts the same way: id (u64), type (u32), pid (s32), then its own
 * fields, ordered so that none needs padding. Add fields only at the end.
 * Values of type, how, dir and what are the MPQ_* numbers of the uapi
 * header. pid is a tgid in the initial pid namespace.
 */
#undef TRACE_SYSTEM
#define TRACE_SYSTEM mpq

#if !defined(_MPQ_TRACE_H) || defined(TRACE_HEADER_MULTI_READ)
#define _MPQ_TRACE_H

#include <linux/tracepoint.h>

#include "internal.h"

/* An object was made (after its memory exists) and is listed from now. */
TRACE_EVENT(mpq_obj_create,
	    TP_PROTO(const struct mpq_object *obj),
	    TP_ARGS(obj),
	    TP_STRUCT__entry(__field(u64, id)
			     __field(u32, type)
			     __field(s32, pid)
			     __field(u64, size)
			     __field(u32, uid)
			     __field(u32, mode)),
	    TP_fast_assign(__entry->id = obj->id;
			   __entry->type = obj->ops->type;
			   __entry->pid = obj->creator;
			   __entry->size = obj->size;
			   __entry->uid = from_kuid(&init_user_ns, obj->uid);
			   __entry->mode = obj->mode;),
	    TP_printk("id=%llu type=%u pid=%d size=%llu uid=%u mode=%o",
		      __entry->id, __entry->type, __entry->pid, __entry->size,
		      __entry->uid, __entry->mode)
);

/* The last fd and mapping are gone; pid is whoever dropped them. */
TRACE_EVENT(mpq_obj_destroy,
	    TP_PROTO(const struct mpq_object *obj, pid_t pid),
	    TP_ARGS(obj, pid),
	    TP_STRUCT__entry(__field(u64, id)
			     __field(u32, type)
			     __field(s32, pid)),
	    TP_fast_assign(__entry->id = obj->id;
			   __entry->type = obj->ops->type;
			   __entry->pid = pid;),
	    TP_printk("id=%llu type=%u pid=%d",
		      __entry->id, __entry->type, __entry->pid)
);

/*
 * A process joins or leaves an object (mpq_attach, mpq_detach), or the
 * object learns that a participant died (mpq_exit, after which the type
 * wakes its sleepers). by is the process that made it happen: the parent,
 * for a mapping copied by fork (whose pid is still 0 then).
 */
DECLARE_EVENT_CLASS(mpq_member,
		    TP_PROTO(const struct mpq_object *obj, pid_t pid, pid_t by, u32 how),
		    TP_ARGS(obj, pid, by, how),
		    TP_STRUCT__entry(__field(u64, id)
				     __field(u32, type)
				     __field(s32, pid)
				     __field(s32, by)
				     __field(u32, how)),
		    TP_fast_assign(__entry->id = obj->id;
				   __entry->type = obj->ops->type;
				   __entry->pid = pid;
				   __entry->by = by;
				   __entry->how = how;),
		    TP_printk("id=%llu type=%u pid=%d by=%d how=%u",
			      __entry->id, __entry->type, __entry->pid, __entry->by,
			      __entry->how)
);

DEFINE_EVENT(mpq_member, mpq_attach,
	     TP_PROTO(const struct mpq_object *obj, pid_t pid, pid_t by,
		      u32 how),
	     TP_ARGS(obj, pid, by, how));
DEFINE_EVENT(mpq_member, mpq_detach,
	     TP_PROTO(const struct mpq_object *obj, pid_t pid, pid_t by,
		      u32 how),
	     TP_ARGS(obj, pid, by, how));
DEFINE_EVENT(mpq_member, mpq_exit,
	     TP_PROTO(const struct mpq_object *obj, pid_t pid, pid_t by,
		      u32 how),
	     TP_ARGS(obj, pid, by, how));

/*
 * A task sleeps in the module (read(2)/write(2) on an object fd, which
 * io_uring also uses) and wakes: dir is MPQ_POLL_IN to read, MPQ_POLL_OUT
 * to write; ret is 0 or -ERESTARTSYS on wait_end, 0 on wait_begin.
 */
DECLARE_EVENT_CLASS(mpq_wait,
		    TP_PROTO(const struct mpq_object *obj, u32 dir, int ret),
		    TP_ARGS(obj, dir, ret),
		    TP_STRUCT__entry(__field(u64, id)
				     __field(u32, type)
				     __field(s32, pid)
				     __field(u32, dir)
				     __field(s32, ret)),
		    TP_fast_assign(__entry->id = obj->id;
				   __entry->type = obj->ops->type;
				   __entry->pid = current->tgid;
				   __entry->dir = dir;
				   __entry->ret = ret;),
		    TP_printk("id=%llu type=%u pid=%d dir=%u ret=%d",
			      __entry->id, __entry->type, __entry->pid, __entry->dir,
			      __entry->ret)
);

DEFINE_EVENT(mpq_wait, mpq_wait_begin,
	     TP_PROTO(const struct mpq_object *obj, u32 dir, int ret),
	     TP_ARGS(obj, dir, ret));
DEFINE_EVENT(mpq_wait, mpq_wait_end,
	     TP_PROTO(const struct mpq_object *obj, u32 dir, int ret),
	     TP_ARGS(obj, dir, ret));

/*
 * The module woke the tasks on one of an object's wait queues (pollers,
 * sleepers): mask is the poll events, waiters how many tasks were queued.
 */
TRACE_EVENT(mpq_poll_wake,
	    TP_PROTO(const struct mpq_object *obj, u32 mask, u32 waiters),
	    TP_ARGS(obj, mask, waiters),
	    TP_STRUCT__entry(__field(u64, id)
			     __field(u32, type)
			     __field(s32, pid)
			     __field(u32, mask)
			     __field(u32, waiters)),
	    TP_fast_assign(__entry->id = obj->id;
			   __entry->type = obj->ops->type;
			   __entry->pid = current->tgid;
			   __entry->mask = mask;
			   __entry->waiters = waiters;),
	    TP_printk("id=%llu type=%u pid=%d mask=0x%x waiters=%u",
		      __entry->id, __entry->type, __entry->pid, __entry->mask,
		      __entry->waiters)
);

/* A pipe end is gone (every fd and mapping of it): its peer is hung up. */
TRACE_EVENT(mpq_hangup,
	    TP_PROTO(const struct mpq_object *obj, u32 end),
	    TP_ARGS(obj, end),
	    TP_STRUCT__entry(__field(u64, id)
			     __field(u32, type)
			     __field(s32, pid)
			     __field(u32, end)
			     __field(u32, __pad)),
	    TP_fast_assign(__entry->id = obj->id;
			   __entry->type = obj->ops->type;
			   __entry->pid = current->tgid;
			   __entry->end = end;
			   __entry->__pad = 0;),
	    TP_printk("id=%llu type=%u pid=%d end=%u",
		      __entry->id, __entry->type, __entry->pid, __entry->end)
);

/*
 * What a dead process held was found and recovered: a lock marked
 * owner-died, or an abandoned queue slot reclaimed (what), at pos (a
 * queue position or a lock index); dead is the process that held it,
 * pid the one that recovers it.
 */
TRACE_EVENT(mpq_owner_died,
	    TP_PROTO(const struct mpq_object *obj, pid_t dead, u32 what, u64 pos),
	    TP_ARGS(obj, dead, what, pos),
	    TP_STRUCT__entry(__field(u64, id)
			     __field(u32, type)
			     __field(s32, pid)
			     __field(s32, dead)
			     __field(u32, what)
			     __field(u64, pos)),
	    TP_fast_assign(__entry->id = obj->id;
			   __entry->type = obj->ops->type;
			   __entry->pid = current->tgid;
			   __entry->dead = dead;
			   __entry->what = what;
			   __entry->pos = pos;),
	    TP_printk("id=%llu type=%u pid=%d dead=%d what=%u pos=%llu",
		      __entry->id, __entry->type, __entry->pid, __entry->dead,
		      __entry->what, __entry->pos)
);

#endif /* _MPQ_TRACE_H */

/* Out of tree: the header is found through -I$(src), see kmod/Kbuild. */
#undef TRACE_INCLUDE_PATH
#define TRACE_INCLUDE_PATH .
#undef TRACE_INCLUDE_FILE
#define TRACE_INCLUDE_FILE trace
#include <trace/define_trace.h>
