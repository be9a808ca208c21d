// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * mpqtop, the BPF side: operations per object, counted from libmpq's
 * USDT probes (puts, gets, waits: the fast path never enters the kernel;
 * a pool's tasks started and finished count as its puts and gets) and the
 * module's wake-ups (tp/mpq/mpq_poll_wake).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/usdt.bpf.h>

#include "mpq_tp.h"
#include "mpqtop.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MPQTOP_MAX_OBJECTS);
	__type(key, __u64);
	__type(value, struct mpqtop_ops);
} ops SEC(".maps");

static __always_inline struct mpqtop_ops *ops_of(__u64 id)
{
	static const struct mpqtop_ops zero;
	struct mpqtop_ops *o = bpf_map_lookup_elem(&ops, &id);

	if (o)
		return o;
	bpf_map_update_elem(&ops, &id, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&ops, &id);
}

SEC("usdt")
int BPF_USDT(queue_put, __u64 id, __u64 pos, __u32 len, __s64 ts)
{
	struct mpqtop_ops *o = ops_of(id);

	if (o) {
		__sync_fetch_and_add(&o->puts, 1);
		__sync_fetch_and_add(&o->bytes, len);
	}
	return 0;
}

SEC("usdt")
int BPF_USDT(queue_get, __u64 id, __u64 pos, __u32 len, __s64 ts)
{
	struct mpqtop_ops *o = ops_of(id);

	if (o) {
		__sync_fetch_and_add(&o->gets, 1);
		__sync_fetch_and_add(&o->bytes, len);
	}
	return 0;
}

SEC("usdt")
int BPF_USDT(queue_wait_begin, __u64 id, __u32 dir)
{
	struct mpqtop_ops *o = ops_of(id);

	if (o)
		__sync_fetch_and_add(&o->waits, 1);
	return 0;
}

SEC("usdt")
int BPF_USDT(pool_task_start, __u64 pool, __u64 task)
{
	struct mpqtop_ops *o = ops_of(pool);

	if (o)
		__sync_fetch_and_add(&o->puts, 1);
	return 0;
}

SEC("usdt")
int BPF_USDT(pool_task_end, __u64 pool, __u64 task, __s32 ret)
{
	struct mpqtop_ops *o = ops_of(pool);

	if (o)
		__sync_fetch_and_add(&o->gets, 1);
	return 0;
}

SEC("tp/mpq/mpq_poll_wake")
int poll_wake(struct mpq_tp_poll_wake *ctx)
{
	struct mpqtop_ops *o = ops_of(ctx->id);

	if (o)
		__sync_fetch_and_add(&o->wakes, 1);
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
