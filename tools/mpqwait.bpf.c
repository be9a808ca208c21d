// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * mpqwait, the BPF side: the time tasks spend waiting on mpq objects,
 * summed per object, kind of wait and process. A wait is bracketed by
 * libmpq's USDT probes (mpq:queue_wait_begin/end, mpq:lock_wait_begin/end)
 * or by the module's tracepoints around a sleep in read(2)/write(2)
 * (mpq_wait_begin/end); the begin is remembered per thread.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/usdt.bpf.h>

#include "mpq_tp.h"
#include "mpqwait.h"

const volatile __u64 targ_id = 0;	/* 0: every object */
const volatile __u32 targ_tgid = 0;	/* 0: every process */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MPQWAIT_MAX_ENTRIES);
	__type(key, __u32);
	__type(value, struct mpqwait_start);
} starts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MPQWAIT_MAX_ENTRIES);
	__type(key, struct mpqwait_key);
	__type(value, struct mpqwait_val);
} waits SEC(".maps");

static __always_inline int begin(__u64 id, __u32 kind)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct mpqwait_start s = { .id = id, .kind = kind };
	__u32 tid = (__u32)pid_tgid;

	if (targ_id && id != targ_id)
		return 0;
	if (targ_tgid && (pid_tgid >> 32) != targ_tgid)
		return 0;
	s.ts = bpf_ktime_get_ns();
	bpf_map_update_elem(&starts, &tid, &s, BPF_ANY);
	return 0;
}

static __always_inline int end(__u32 kind)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	struct mpqwait_start *s;
	struct mpqwait_key key = {};
	struct mpqwait_val *v, zero = {};
	__u64 delta;

	s = bpf_map_lookup_elem(&starts, &tid);
	if (!s)
		return 0;
	if (s->kind != kind) {
		bpf_map_delete_elem(&starts, &tid);
		return 0;
	}
	delta = bpf_ktime_get_ns() - s->ts;
	key.id = s->id;
	key.kind = kind;
	key.tgid = pid_tgid >> 32;
	bpf_map_delete_elem(&starts, &tid);

	v = bpf_map_lookup_elem(&waits, &key);
	if (!v) {
		bpf_get_current_comm(zero.comm, sizeof(zero.comm));
		bpf_map_update_elem(&waits, &key, &zero, BPF_NOEXIST);
		v = bpf_map_lookup_elem(&waits, &key);
		if (!v)
			return 0;
	}
	__sync_fetch_and_add(&v->count, 1);
	__sync_fetch_and_add(&v->total_ns, delta);
	if (delta > v->max_ns)
		v->max_ns = delta;	/* racy: a maximum, not a sum */
	return 0;
}

SEC("usdt")
int BPF_USDT(queue_wait_begin, __u64 id, __u32 dir)
{
	return begin(id, MPQWAIT_QUEUE);
}

SEC("usdt")
int BPF_USDT(queue_wait_end, __u64 id, __u32 dir, __s32 ret)
{
	return end(MPQWAIT_QUEUE);
}

SEC("usdt")
int BPF_USDT(lock_wait_begin, __u64 id, __u32 index)
{
	return begin(id, MPQWAIT_LOCK);
}

SEC("usdt")
int BPF_USDT(lock_wait_end, __u64 id, __u32 index, __s32 ret)
{
	return end(MPQWAIT_LOCK);
}

SEC("tp/mpq/mpq_wait_begin")
int kernel_wait_begin(struct mpq_tp_wait *ctx)
{
	return begin(ctx->id, MPQWAIT_KERNEL);
}

SEC("tp/mpq/mpq_wait_end")
int kernel_wait_end(struct mpq_tp_wait *ctx)
{
	return end(MPQWAIT_KERNEL);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
