/* SPDX-License-Identifier: MIT */
/* mpqsnoop: what its BPF side and its user side share. */
#ifndef MPQSNOOP_H
#define MPQSNOOP_H

#define MPQSNOOP_COMM_LEN	16

enum mpqsnoop_kind {
	MPQSNOOP_CREATE = 1,
	MPQSNOOP_DESTROY,
	MPQSNOOP_ATTACH,
	MPQSNOOP_DETACH,
	MPQSNOOP_EXIT,
	MPQSNOOP_WAKE,
	MPQSNOOP_HANGUP,
	MPQSNOOP_OWNER_DIED,
	MPQSNOOP_SLEEP,
	MPQSNOOP_AWAKE,
};

/* One event, as the tracepoint gave it; a and b depend on kind. */
struct mpqsnoop_event {
	__u64 ts;		/* ns since boot */
	__u64 id;
	__u64 arg;		/* create: size; owner-died: pos */
	__u32 kind;		/* enum mpqsnoop_kind */
	__u32 type;		/* MPQ_OBJ_* */
	__s32 pid;		/* the process the event is about */
	__u32 tgid;		/* the process that was running */
	__u32 a;		/* by, mask, end, dead, uid, dir */
	__u32 b;		/* how, waiters, what, mode, ret */
	char comm[MPQSNOOP_COMM_LEN];	/* of tgid's running thread */
};

#endif /* MPQSNOOP_H */
