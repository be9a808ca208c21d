/* SPDX-License-Identifier: MIT */
/* mpqlat: what its BPF side and its user side share (see mpqlat.bpf.c). */
#ifndef MPQLAT_H
#define MPQLAT_H

#define MPQLAT_SLOTS		40	/* up to 2^39: 9 minutes in ns */
#define MPQLAT_MAX_QUEUES	1024
#define MPQLAT_MAX_INFLIGHT	65536	/* messages put, not yet got */

/* A message in flight: which queue, which ring position. */
struct mpqlat_key {
	__u64 id;
	__u64 pos;
};

struct mpqlat_put {
	__s64 ts;		/* CLOCK_MONOTONIC ns, from the probe */
	__u32 tgid;		/* who put it */
	__u32 __pad;
};

/* One histogram: per queue id, or all under id 0. */
struct mpqlat_hist {
	__u32 slots[MPQLAT_SLOTS];
	__u64 count;
	__u64 sum;		/* in the unit of the slots */
};

#endif /* MPQLAT_H */
