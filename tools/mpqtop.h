/* SPDX-License-Identifier: MIT */
/* mpqtop: what its BPF side and its user side share. */
#ifndef MPQTOP_H
#define MPQTOP_H

#define MPQTOP_MAX_OBJECTS	4096

/* A pool's id in libmpq's probes: its top two bits set. */
#define MPQTOP_POOL_ID(id)	(((id) >> 62) == 3)

/* Operations on one object in the current interval. */
struct mpqtop_ops {
	__u64 puts;		/* a pool: tasks started */
	__u64 gets;		/* a pool: tasks finished */
	__u64 bytes;		/* put and got */
	__u64 waits;		/* puts and gets that had to wait */
	__u64 wakes;		/* wake-ups the module issued */
};

#endif /* MPQTOP_H */
