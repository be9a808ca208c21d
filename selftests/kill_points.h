/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Kill points: an operation of libmpq killed at every instruction of its
 * own. A child runs the operation under ptrace; for each instruction of
 * libmpq it would execute (each one after which a death leaves another
 * aftermath: see trace_op()), a fresh child is stopped exactly there (a
 * hardware breakpoint, its n-th hit) and SIGKILLed, and the test's check
 * looks at what the death left behind. Deterministic, no timing.
 * x86-64 only (debug registers); libmpq linked in statically.
 *
 * The includer defines, before including this:
 *   struct ctx, with an int finished (set: the operation returned before
 *	the kill);
 *   void *kp_map(struct ctx *c, size_t *size): a mapping of the object's
 *	shared memory, whose changes tell kill points apart (the caller
 *	unmaps it);
 *   void kp_free(struct ctx *c): frees what setup made.
 */
#ifndef MPQ_KILL_POINTS_H
#define MPQ_KILL_POINTS_H

#include <errno.h>
#include <stddef.h>
#include <linux/futex.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>

#define MAXPTS	(1 << 17)

/* The test program's own code: libmpq is linked in statically. */
extern char __executable_start[], etext[];

typedef int (*setup_fn)(struct ctx *c);
typedef void (*child_fn)(struct ctx *c);
/* Returns a description of what is wrong, or NULL. */
typedef const char *(*check_fn)(struct ctx *c);

static int in_text(uint64_t rip)
{
	return rip >= (uint64_t)(uintptr_t)__executable_start &&
	       rip < (uint64_t)(uintptr_t)etext;
}

static int wait_stop(pid_t pid)
{
	int st;

	if (waitpid(pid, &st, __WALL) != pid || !WIFSTOPPED(st))
		return -1;
	return WSTOPSIG(st);
}

static uint64_t rip_of(pid_t pid)
{
	struct user_regs_struct regs;

	if (ptrace(PTRACE_GETREGS, pid, 0, &regs))
		return 0;
	return regs.rip;
}

/* The child: stop, run op, stop again (the end), never come back. */
static pid_t start(struct ctx *c, child_fn prep, child_fn op)
{
	pid_t pid = fork();

	if (pid == 0) {
		if (prep)
			prep(c);
		ptrace(PTRACE_TRACEME, 0, 0, 0);
		raise(SIGSTOP);
		op(c);
		raise(SIGSTOP);
		_exit(0);
	}
	if (pid > 0 && wait_stop(pid) != SIGSTOP) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		return -1;
	}
	return pid;
}

static void finish(pid_t pid)
{
	kill(pid, SIGKILL);
	ptrace(PTRACE_CONT, pid, 0, 0);
	while (waitpid(pid, NULL, __WALL) == pid)
		;
}

/*
 * An instruction breakpoint at addr in debug register 0 (0: off): no
 * write into the child's code, which a VM under emulation pays for by
 * translating the page again. Reported as a SIGTRAP before the
 * instruction runs.
 */
static int hw_break(pid_t pid, uint64_t addr)
{
	size_t dr0 = offsetof(struct user, u_debugreg[0]);
	size_t dr7 = offsetof(struct user, u_debugreg[7]);

	if (addr && ptrace(PTRACE_POKEUSER, pid, (void *)dr0, (void *)addr))
		return -1;
	return ptrace(PTRACE_POKEUSER, pid, (void *)dr7,
		      (void *)(addr ? 1UL : 0UL)) ? -1 : 0;
}

/*
 * Run to the occ-th time the child is about to execute addr. 0 there;
 * 1 if op ended first.
 */
static int run_to(pid_t pid, uint64_t addr, unsigned int occ)
{
	unsigned int hits = 0;
	int sig;

	for (;;) {
		if (hw_break(pid, addr) || ptrace(PTRACE_CONT, pid, 0, 0))
			return -1;
		sig = wait_stop(pid);
		if (sig == SIGSTOP)
			return 1;
		if (sig != SIGTRAP || rip_of(pid) != addr || hw_break(pid, 0))
			return -1;
		if (++hits == occ)
			return 0;
		/* Past it, the breakpoint off for the one step. */
		if (ptrace(PTRACE_SINGLESTEP, pid, 0, 0))
			return -1;
		sig = wait_stop(pid);
		if (sig == SIGSTOP)
			return 1;
		if (sig != SIGTRAP)
			return -1;
	}
}

struct points {
	uint64_t *rip;
	unsigned int *occ;
	unsigned int n;
	unsigned int steps;	/* instructions of libmpq traced */
};

/* FNV-1a over 8-byte words (n a multiple of 8), for telling states apart. */
static uint64_t hash(uint64_t h, const void *p, size_t n)
{
	const uint64_t *w = p;

	for (n /= 8; n--; w++)
		h = (h ^ __atomic_load_n(w, __ATOMIC_RELAXED)) *
		    0x100000001b3ULL;
	return h;
}

/*
 * The private words of the robust list the kernel walks at the child's
 * exit: its head (with the pending slot) and the links of libmpq's two
 * anchors (the first entry after the head and the last one: glibc holds
 * no robust mutex here). Found once: they do not move. The entries
 * between are records' links, in the object's shared memory, compared
 * apart (shm_changed).
 */
struct rlist {
	void *head;
	void *first, *last;
};

static uint64_t peek_word(pid_t pid, void *at)
{
	uint64_t v = 0;
	struct iovec l = { &v, sizeof(v) }, r = { at, sizeof(v) };

	process_vm_readv(pid, &l, 1, &r, 1, 0);
	return v;
}

static void rlist_find(pid_t pid, struct rlist *rl)
{
	size_t len;
	uint64_t at;
	int i;

	memset(rl, 0, sizeof(*rl));
	if (syscall(SYS_get_robust_list, pid, &rl->head, &len) || !rl->head)
		return;
	at = peek_word(pid, rl->head);
	rl->first = (void *)(uintptr_t)(at & ~1ULL);
	for (i = 0; i < 64 && at && at != (uint64_t)(uintptr_t)rl->head; i++) {
		rl->last = (void *)(uintptr_t)(at & ~1ULL);
		at = peek_word(pid, rl->last);
	}
}

/* What a death of the child would leave in its private memory, hashed. */
static uint64_t state_of(pid_t pid, const struct rlist *rl)
{
	struct robust_list_head head;
	uint64_t w[2] = { 0, 0 };
	struct iovec l[3] = { { &head, sizeof(head) }, { &w[0], 8 },
			      { &w[1], 8 } };
	struct iovec r[3] = { { rl->head, sizeof(head) }, { rl->first, 8 },
			      { rl->last, 8 } };
	int n = !rl->head ? 0 : !rl->first ? 1 : 3;

	if (n)
		process_vm_readv(pid, l, n, r, n, 0);
	else
		memset(&head, 0, sizeof(head));
	return hash(hash(0xcbf29ce484222325ULL, &head, sizeof(head)), w,
		    sizeof(w));
}

/* Did the object's shared memory change since the copy? (and copy it) */
static int shm_changed(const void *map, void *copy, size_t size)
{
	if (!memcmp(map, copy, size))
		return 0;
	memcpy(copy, map, size);
	return 1;
}

/*
 * The child called out of our code (into libc or the vDSO): run it to
 * the return, at [rsp] (a breakpoint there). 1 there, 0 if op ended, -1.
 * A recursion back to the same address would stop early: our code is not
 * called back from libc here.
 */
static int run_out(pid_t pid)
{
	struct user_regs_struct regs;
	long ret = 0;
	int sig, k;

	if (ptrace(PTRACE_GETREGS, pid, 0, &regs))
		return -1;
	/*
	 * [rsp], or a little above it: a first call through the PLT goes
	 * to the dynamic linker with two more words pushed.
	 */
	for (k = 0; k < 4; k++) {
		errno = 0;
		ret = ptrace(PTRACE_PEEKDATA, pid, (void *)(regs.rsp + 8 * k), 0);
		if (!errno && in_text((uint64_t)ret))
			break;
	}
	if (k == 4 || hw_break(pid, (uint64_t)ret) ||
	    ptrace(PTRACE_CONT, pid, 0, 0))
		return -1;
	sig = wait_stop(pid);
	if (sig == SIGSTOP)
		return 0;
	if (sig != SIGTRAP || rip_of(pid) != (uint64_t)ret || hw_break(pid, 0))
		return -1;
	return 1;
}

/*
 * Single-step op once and choose where to kill it. Every instruction is
 * a place a SIGKILL can land, but two places between which the child
 * changed nothing a death leaves behind (the object's shared memory, its
 * robust list, a system call's effect) leave the same aftermath: so a
 * kill point is each instruction that follows such a change (and the
 * first). A call out of our code (libc, the vDSO) runs to its return as
 * one step that may have changed anything (a system call, a memcpy into
 * the object: killed in the middle of one, the message is as unpublished
 * as before it). MPQ_DEATHS_ALL=1 kills before every instruction of
 * libmpq instead (the same verdicts, many times slower). The hit counts
 * are of every instruction of ours executed, as the breakpoint counts
 * them (a rep instruction once, not at each of its iterations, which are
 * no kill points: a breakpoint cannot stop between them).
 */
static int trace_op(struct ctx *c, setup_fn setup, child_fn prep, child_fn op,
		    struct points *p)
{
	uint64_t *all = malloc(50ULL * MAXPTS * 8), last = 0, st, rip;
	int every = getenv("MPQ_DEATHS_ALL") != NULL, sig = -1, changed = 1;
	unsigned int steps = 0, nall = 0, i;
	void *map, *copy;
	struct rlist rl;
	size_t size = 0;
	pid_t pid;

	if (!all || setup(c))
		return -1;
	map = kp_map(c, &size);
	copy = map ? malloc(size) : NULL;
	if (!copy)
		return -1;
	memcpy(copy, map, size);
	pid = start(c, prep, op);
	if (pid < 0)
		return -1;
	rlist_find(pid, &rl);
	p->n = 0;
	p->steps = 0;
	last = state_of(pid, &rl);
	for (;;) {
		if (ptrace(PTRACE_SINGLESTEP, pid, 0, 0))
			break;
		sig = wait_stop(pid);
		if (sig != SIGTRAP || ++steps > 50 * MAXPTS)
			break;
		rip = rip_of(pid);
		if (!in_text(rip)) {
			int r;

			if (!nall)	/* still in raise(), before op */
				continue;
			r = run_out(pid);
			if (r <= 0) {
				sig = r ? -1 : SIGSTOP;
				break;
			}
			rip = rip_of(pid);
			changed = 1;
		}
		st = state_of(pid, &rl);
		if (st != last || shm_changed(map, copy, size))
			changed = 1;
		last = st;
		/* A rep instruction traps at each iteration: one instruction. */
		if (nall && all[nall - 1] == rip)
			continue;
		all[nall++] = rip;
		p->steps++;
		if (every || changed) {
			/* Its hit count: among all instructions executed. */
			unsigned int occ = 0;

			for (i = 0; i < nall; i++)
				occ += all[i] == rip;
			if (p->n < MAXPTS) {
				p->rip[p->n] = rip;
				p->occ[p->n++] = occ;
			}
		}
		changed = 0;
	}
	finish(pid);
	munmap(map, size);
	free(copy);
	kp_free(c);
	free(all);
	return sig == SIGSTOP ? 0 : -1;
}

/*
 * Kill op at each of its instructions in turn; returns the number of
 * kill points whose aftermath check() found wrong (the first few are
 * logged), -1 if the machinery failed. MPQ_DEATHS_STRIDE=k tries every
 * k-th point only (a quick look).
 */
static int kill_everywhere(struct __test_metadata *_metadata,
			   const char *name, setup_fn setup, child_fn prep,
			   child_fn op, check_fn check)
{
	struct points p = { malloc(MAXPTS * 8), malloc(MAXPTS * 4), 0, 0 };
	const char *env = getenv("MPQ_DEATHS_STRIDE");
	unsigned int i, stride = env ? (unsigned int)atoi(env) : 1, tried = 0;
	unsigned int ended = 0;
	struct ctx c = { 0 };
	int64_t t0 = now_ns(), t1;
	int bad = 0;

	if (!p.rip || !p.occ || trace_op(&c, setup, prep, op, &p))
		return -1;
	t1 = now_ns();
	if (!stride)
		stride = 1;
	for (i = 0; i <= p.n; i += stride) {
		const char *what;
		pid_t pid;
		int r = 1;

		memset(&c, 0, sizeof(c));
		if (setup(&c))
			return -1;
		pid = start(&c, prep, op);
		if (pid < 0)
			return -1;
		/* Point p.n: after the last instruction (op returned). */
		if (i < p.n)
			r = run_to(pid, p.rip[i], p.occ[i]);
		else if (ptrace(PTRACE_CONT, pid, 0, 0) ||
			 wait_stop(pid) != SIGSTOP)
			r = -1;
		if (r < 0) {
			finish(pid);
			return -1;
		}
		finish(pid);
		c.finished = r;
		ended += r;
		tried++;
		what = check(&c);
		if (what) {
			if (bad < 5)
				TH_LOG("%s: killed before instruction %u of %u (%#llx, hit %u): %s",
				       name, i, p.n,
				       (unsigned long long)(i < p.n ? p.rip[i] : 0),
				       i < p.n ? p.occ[i] : 0, what);
			bad++;
		}
		kp_free(&c);
	}
	TH_LOG("%s: %u instructions of libmpq, %u kill points, %u ran to the end, %d wrong (trace %lld ms, kills %lld ms)",
	       name, p.steps, tried, ended, bad,
	       (long long)((t1 - t0) / NSEC_PER_MSEC),
	       (long long)((now_ns() - t1) / NSEC_PER_MSEC));
	free(p.rip);
	free(p.occ);
	return bad;
}

#endif /* MPQ_KILL_POINTS_H */
