/* SPDX-License-Identifier: MIT */
/* mpqwait: what its BPF side and its user side share. */
#ifndef MPQWAIT_H
#define MPQWAIT_H

#define MPQWAIT_COMM_LEN	16
#define MPQWAIT_MAX_ENTRIES	10240

/* What waited. */
enum mpqwait_kind {
	MPQWAIT_QUEUE = 1,	/* a put or get in libmpq (spin, then sleep) */
	MPQWAIT_LOCK,		/* a lock acquire in libmpq */
	MPQWAIT_KERNEL,		/* read(2)/write(2) asleep in the module */
};

/* A wait in progress, per thread. */
struct mpqwait_start {
	__u64 ts;
	__u64 id;
	__u32 kind;
	__u32 __pad;
};

/* Waits summed per object, kind and process. */
struct mpqwait_key {
	__u64 id;
	__u32 kind;
	__u32 tgid;
};

struct mpqwait_val {
	__u64 count;
	__u64 total_ns;
	__u64 max_ns;
	char comm[MPQWAIT_COMM_LEN];
};

#endif /* MPQWAIT_H */
