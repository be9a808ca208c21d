// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * mpqsnoop, the BPF side: every event of the mpq module's tracepoints
 * (kmod/trace.h) as a record in a ring buffer. The contexts are the
 * hand-written layouts of mpq_tp.h: tp/ programs, not tp_btf, because
 * module BTF is not available.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "mpq_tp.h"
#include "mpqsnoop.h"

const volatile __u64 targ_id = 0;	/* 0: every object */
const volatile __u32 targ_tgid = 0;	/* 0: every process */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

static __always_inline int emit(__u32 kind, __u64 id, __u32 type, __s32 pid,
				__u32 a, __u32 b, __u64 arg)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct mpqsnoop_event *e;

	if (targ_id && id != targ_id)
		return 0;
	if (targ_tgid && tgid != targ_tgid && (__u32)pid != targ_tgid)
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	e->ts = bpf_ktime_get_ns();
	e->id = id;
	e->arg = arg;
	e->kind = kind;
	e->type = type;
	e->pid = pid;
	e->tgid = tgid;
	e->a = a;
	e->b = b;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tp/mpq/mpq_obj_create")
int on_obj_create(struct mpq_tp_create *ctx)
{
	return emit(MPQSNOOP_CREATE, ctx->id, ctx->type, ctx->pid, ctx->uid,
		    ctx->mode, ctx->size);
}

SEC("tp/mpq/mpq_obj_destroy")
int on_obj_destroy(struct mpq_tp_destroy *ctx)
{
	return emit(MPQSNOOP_DESTROY, ctx->id, ctx->type, ctx->pid, 0, 0, 0);
}

SEC("tp/mpq/mpq_attach")
int on_attach(struct mpq_tp_member *ctx)
{
	return emit(MPQSNOOP_ATTACH, ctx->id, ctx->type, ctx->pid, ctx->by,
		    ctx->how, 0);
}

SEC("tp/mpq/mpq_detach")
int on_detach(struct mpq_tp_member *ctx)
{
	return emit(MPQSNOOP_DETACH, ctx->id, ctx->type, ctx->pid, ctx->by,
		    ctx->how, 0);
}

SEC("tp/mpq/mpq_exit")
int on_exit(struct mpq_tp_member *ctx)
{
	return emit(MPQSNOOP_EXIT, ctx->id, ctx->type, ctx->pid, ctx->by,
		    ctx->how, 0);
}

SEC("tp/mpq/mpq_poll_wake")
int on_poll_wake(struct mpq_tp_poll_wake *ctx)
{
	return emit(MPQSNOOP_WAKE, ctx->id, ctx->type, ctx->pid, ctx->mask,
		    ctx->waiters, 0);
}

SEC("tp/mpq/mpq_hangup")
int on_hangup(struct mpq_tp_hangup *ctx)
{
	return emit(MPQSNOOP_HANGUP, ctx->id, ctx->type, ctx->pid, ctx->end, 0,
		    0);
}

SEC("tp/mpq/mpq_owner_died")
int on_owner_died(struct mpq_tp_owner_died *ctx)
{
	return emit(MPQSNOOP_OWNER_DIED, ctx->id, ctx->type, ctx->pid,
		    ctx->dead, ctx->what, ctx->pos);
}

SEC("tp/mpq/mpq_wait_begin")
int on_wait_begin(struct mpq_tp_wait *ctx)
{
	return emit(MPQSNOOP_SLEEP, ctx->id, ctx->type, ctx->pid, ctx->dir,
		    ctx->ret, 0);
}

SEC("tp/mpq/mpq_wait_end")
int on_wait_end(struct mpq_tp_wait *ctx)
{
	return emit(MPQSNOOP_AWAKE, ctx->id, ctx->type, ctx->pid, ctx->dir,
		    ctx->ret, 0);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
