// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * mpqlat, the BPF side: a message's time in a queue, from the USDT probe
 * where it is published (mpq:queue_put) to the one where its slot is
 * freed (mpq:queue_get). Both carry the queue id and the ring position,
 * which together name the message, and a CLOCK_MONOTONIC time taken by
 * libmpq only while a tracer is attached.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/usdt.bpf.h>

#include "bits.bpf.h"
#include "mpqlat.h"

const volatile __u64 targ_queue = 0;	/* 0: every queue */
const volatile __u32 targ_tgid = 0;	/* 0: every process */
const volatile bool targ_ns = false;	/* ns, else us */
const volatile bool targ_per_queue = false;

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MPQLAT_MAX_INFLIGHT);
	__type(key, struct mpqlat_key);
	__type(value, struct mpqlat_put);
} inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MPQLAT_MAX_QUEUES);
	__type(key, __u64);
	__type(value, struct mpqlat_hist);
} hists SEC(".maps");

static const struct mpqlat_hist zero;

SEC("usdt")
int BPF_USDT(queue_put, __u64 id, __u64 pos, __u32 len, __s64 ts)
{
	struct mpqlat_key key = { .id = id, .pos = pos };
	struct mpqlat_put put = {
		.ts = ts,
		.tgid = bpf_get_current_pid_tgid() >> 32,
	};

	if (targ_queue && id != targ_queue)
		return 0;
	bpf_map_update_elem(&inflight, &key, &put, BPF_ANY);
	return 0;
}

SEC("usdt")
int BPF_USDT(queue_get, __u64 id, __u64 pos, __u32 len, __s64 ts)
{
	struct mpqlat_key key = { .id = id, .pos = pos };
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct mpqlat_hist *h;
	struct mpqlat_put *put;
	__u64 hkey, delta, slot;
	__s64 d;

	put = bpf_map_lookup_elem(&inflight, &key);
	if (!put)
		return 0;	/* put before we attached, or another queue */
	d = ts - put->ts;
	if (targ_tgid && tgid != targ_tgid && put->tgid != targ_tgid)
		d = -1;
	bpf_map_delete_elem(&inflight, &key);
	if (d < 0)
		return 0;
	delta = targ_ns ? (__u64)d : (__u64)d / 1000;

	hkey = targ_per_queue ? id : 0;
	h = bpf_map_lookup_elem(&hists, &hkey);
	if (!h) {
		bpf_map_update_elem(&hists, &hkey, &zero, BPF_NOEXIST);
		h = bpf_map_lookup_elem(&hists, &hkey);
		if (!h)
			return 0;
	}
	slot = mpq_log2_slot(delta);
	/* Keep clang from indexing with the value before the check. */
	barrier_var(slot);
	if (slot >= MPQLAT_SLOTS)
		slot = MPQLAT_SLOTS - 1;
	__sync_fetch_and_add(&h->slots[slot], 1);
	__sync_fetch_and_add(&h->count, 1);
	__sync_fetch_and_add(&h->sum, delta);
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
