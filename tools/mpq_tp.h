/* SPDX-License-Identifier: MIT */
/*
 * The contexts of the mpq module's tracepoints (kmod/trace.h), written by
 * hand for tp/mpq/<event> programs: module BTF is not available, so the
 * layout is fixed on the module's side instead (fixed-size fields, each
 * event starting with id, type and pid; new fields only at the end).
 * tools_test checks every offset here against the events' format files.
 * Include after vmlinux.h (BPF) or <linux/types.h>.
 */
#ifndef MPQ_TP_H
#define MPQ_TP_H

/* The trace entry header that every event starts with: 8 bytes. */
struct mpq_tp_common {
	__u16 common_type;
	__u8 common_flags;
	__u8 common_preempt_count;
	__s32 common_pid;
};

/* mpq_obj_create */
struct mpq_tp_create {
	struct mpq_tp_common c;
	__u64 id;
	__u32 type;
	__s32 pid;
	__u64 size;
	__u32 uid;
	__u32 mode;
};

/* mpq_obj_destroy */
struct mpq_tp_destroy {
	struct mpq_tp_common c;
	__u64 id;
	__u32 type;
	__s32 pid;
};

/* mpq_attach, mpq_detach, mpq_exit */
struct mpq_tp_member {
	struct mpq_tp_common c;
	__u64 id;
	__u32 type;
	__s32 pid;
	__s32 by;
	__u32 how;
};

/* mpq_wait_begin, mpq_wait_end */
struct mpq_tp_wait {
	struct mpq_tp_common c;
	__u64 id;
	__u32 type;
	__s32 pid;
	__u32 dir;
	__s32 ret;
};

/* mpq_poll_wake */
struct mpq_tp_poll_wake {
	struct mpq_tp_common c;
	__u64 id;
	__u32 type;
	__s32 pid;
	__u32 mask;
	__u32 waiters;
};

/* mpq_hangup */
struct mpq_tp_hangup {
	struct mpq_tp_common c;
	__u64 id;
	__u32 type;
	__s32 pid;
	__u32 end;
	__u32 __pad;
};

/* mpq_owner_died */
struct mpq_tp_owner_died {
	struct mpq_tp_common c;
	__u64 id;
	__u32 type;
	__s32 pid;
	__s32 dead;
	__u32 what;
	__u64 pos;
};

#endif /* MPQ_TP_H */
