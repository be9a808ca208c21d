// SPDX-License-Identifier: GPL-2.0
/*
 * kmod_fuzz: a fuzzer for the mpq module's ABI, run in the test VM.
 *
 * Worker processes (some as root, some as nobody), each with a few
 * threads, make random calls on /dev/mpq and on object fds: every ioctl
 * with hostile and valid arguments, mmap/mremap/munmap/madvise (every
 * advice)/mprotect/remap_file_pages on object mappings, read/write/poll
 * and io_uring READ/WRITE/POLL_ADD on object fds, fork with children
 * killed at random times, and random bytes scribbled into queue and pipe
 * headers and rings while the others read and write. The supervisor kills
 * workers at random times and starts new ones.
 *
 * Any answer the kernel gives is fine, errors included. What fails the
 * run: a process that does not finish within the hang guard (stuck, or
 * not dying on SIGKILL), module counters (objects, pages) that do not
 * return to 0 once every fuzz process is gone, and a fuzz process (a
 * worker or a child it forked) that dies of a signal but SIGKILL (its
 * memory broken: the fuzzer keeps its own out of the kernel's way, so
 * that is worth a look). Kernel splats are caught by the VM runner's log
 * check.
 *
 *   kmod_fuzz [--seed N] [--seconds N] [--ops N] [--procs N] [--threads N]
 *             [--hang N] [--crash-children 1]
 *
 * --crash-children 1 makes every forked child fault at once: the run must
 * then fail its test 4 (a check that the checker sees a child's death).
 *
 * The seed is printed at start and on failure; --seed N replays each
 * worker's sequence of calls (the interleaving of processes is the
 * scheduler's). Prints TAP with a "# Totals:" line.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include <linux/mpq.h>

#ifndef MADV_SOFT_OFFLINE
#define MADV_SOFT_OFFLINE	101	/* asm-generic/mman-common.h */
#endif

#define MAX_FDS		48
#define MAX_MAPS	32
#define MAX_PROCS	16
#define MAX_THREADS	8
/* Every name the fuzzer can create: the supervisor unlinks them all. */
#define NR_NAMES	(24 + 26 + 8)
#define MAX_GROUPS	4096

/* ---- randomness: splitmix64, one state per thread ---- */

static __thread uint64_t rs;

static uint64_t rnd(void)
{
	uint64_t z = (rs += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static uint64_t below(uint64_t n)
{
	return n ? rnd() % n : 0;
}

static bool chance(unsigned int pct)
{
	return below(100) < pct;
}

static uint64_t mix(uint64_t a, uint64_t b)
{
	uint64_t s = rs, r;

	rs = a ^ (b * 0xd1342543de82ef95ULL);
	r = rnd();
	rs = s;
	return r;
}

/* A size with a taste for edges: 0, 1, powers of two and their neighbours. */
static uint64_t edgy(uint64_t max)
{
	switch (below(6)) {
	case 0:
		return below(3);
	case 1: {
		uint64_t p = 1ULL << below(64);

		return p + below(3) - 1;
	}
	case 2:
		return rnd();
	default:
		return below(max + 1);
	}
}

/* ---- the process's objects: fds and mappings, shared by its threads ---- */

enum kind { K_DEV, K_QUEUE, K_PIPE, K_SHM, K_DEAD };

struct ofd {
	int fd;
	enum kind kind;
	uint64_t map_size;
};

struct map {
	char *addr;
	size_t len;
	enum kind kind;
};

/*
 * A range of the map table stays ours for the process's life: "unmapping"
 * one maps PROT_NONE anonymous memory over it (the object's mapping goes
 * exactly as with munmap) and it is reused only by MAP_FIXED. So a
 * pointer into it that a read() or io_uring still holds never lands in
 * memory the fuzzer itself uses (a thread stack, liburing's rings). The
 * table's lock is held across every call that changes a range.
 */
static pthread_mutex_t tab_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ofd fds[MAX_FDS];
static int nfds;
static struct map maps[MAX_MAPS];
static int nmaps;
static long page;
static char *guard;		/* a page followed by a PROT_NONE page */

static void add_fd(int fd, enum kind kind)
{
	struct mpq_queue_info qi = { .size = sizeof(qi) };
	struct mpq_pipe_info pi = { .size = sizeof(pi) };
	struct mpq_shm_info si = { .size = sizeof(si) };
	uint64_t ms = page;

	if (fd < 0)
		return;
	if (kind == K_QUEUE && !ioctl(fd, MPQ_IOC_QUEUE_INFO, &qi))
		ms = qi.map_size;
	if (kind == K_PIPE && !ioctl(fd, MPQ_IOC_PIPE_INFO, &pi))
		ms = pi.map_size;
	if (kind == K_SHM && !ioctl(fd, MPQ_IOC_SHM_INFO, &si))
		ms = si.map_size;
	if (!chance(70))
		fcntl(fd, F_SETFL, O_NONBLOCK);
	pthread_mutex_lock(&tab_lock);
	if (nfds < MAX_FDS) {
		fds[nfds++] = (struct ofd){ fd, kind, ms };
		fd = -1;
	}
	pthread_mutex_unlock(&tab_lock);
	if (fd >= 0)
		close(fd);
}

/* A random fd of the table (a copy: it may be closed under us). */
static bool pick_fd(struct ofd *o)
{
	bool ok = false;

	pthread_mutex_lock(&tab_lock);
	if (nfds) {
		*o = fds[below(nfds)];
		ok = true;
	}
	pthread_mutex_unlock(&tab_lock);
	return ok;
}

static bool pick_map(struct map *m)
{
	bool ok = false;

	pthread_mutex_lock(&tab_lock);
	if (nmaps) {
		*m = maps[below(nmaps)];
		ok = true;
	}
	pthread_mutex_unlock(&tab_lock);
	return ok;
}

/* With tab_lock held: a new range, or munmap if the table is full. */
static void add_map_locked(void *addr, size_t len, enum kind kind)
{
	if (nmaps < MAX_MAPS)
		maps[nmaps++] = (struct map){ addr, len, kind };
	else
		munmap(addr, len);
}

/* Is some of [addr, addr + len) not mapped? (madvise() says ENOMEM.) */
static bool has_hole(char *addr, size_t len)
{
	return madvise(addr, len, MADV_NORMAL) && errno == ENOMEM;
}

/* With tab_lock held: the range at addr is no longer ours. */
static void forget_locked(char *addr)
{
	for (int i = 0; i < nmaps; i++)
		if (maps[i].addr == addr) {
			maps[i] = maps[--nmaps];
			return;
		}
}

/*
 * With tab_lock held: map PROT_NONE at [addr, addr + len) if nothing is
 * there. False if something is, even ours (a failed MAP_FIXED mmap may or
 * may not have unmapped it): the range is then dropped from the table,
 * which is always safe; keeping one that is not ours is not.
 */
static bool take_back(char *addr, size_t len)
{
	void *back = mmap(addr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS |
			  MAP_FIXED_NOREPLACE, -1, 0);

	if (back == addr)
		return true;
	if (back != MAP_FAILED)	/* a kernel without NOREPLACE put it elsewhere */
		munmap(back, len);
	return false;
}

/* With tab_lock held: unmap what is at [addr, addr + len), keep the range. */
static void bury(char *addr, size_t len)
{
	mmap(addr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
}

/* ---- bounding blocking calls: a per-thread timer interrupts them ---- */

static __thread timer_t tmr;
static __thread bool have_tmr;

static void on_alarm(int sig)
{
	(void)sig;
}

/*
 * Interrupt the calling thread's next blocking call after ms, and every ms
 * after that until disarm(): under load the call may start only after a
 * one-shot timer has fired, and then nothing would end it.
 */
static void arm(unsigned int ms)
{
	struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };
	struct itimerspec its = { .it_interval = t, .it_value = t };

	if (!have_tmr) {
		struct sigevent sev = { .sigev_notify = SIGEV_THREAD_ID,
					.sigev_signo = SIGALRM };

		sev._sigev_un._tid = gettid();
		if (timer_create(CLOCK_MONOTONIC, &sev, &tmr))
			return;
		have_tmr = true;
	}
	timer_settime(tmr, 0, &its, NULL);
}

static void disarm(void)
{
	struct itimerspec its = { 0 };

	if (have_tmr)
		timer_settime(tmr, 0, &its, NULL);
}

/* ---- scribbling: a fault in a mapping torn down under us is expected ---- */

static __thread sigjmp_buf scribble_jmp;
static __thread volatile int in_scribble;

/*
 * For the report of an unexpected fault: the lines of /proc/self/maps
 * that hold the address and the ip (or "not mapped"), so that a crash
 * says whose memory it was. Only read(), write() and our own parsing.
 */
static void say_mapping(const char *what, unsigned long addr)
{
	static char buf[1 << 17];
	char *line, *end, msg[64];
	ssize_t n, len = 0;
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return;
	while (len < (ssize_t)sizeof(buf) - 1 &&
	       (n = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0)
		len += n;
	close(fd);
	buf[len] = 0;
	for (line = buf; *line; line = end + 1) {
		unsigned long lo = strtoul(line, &end, 16), hi = 0;

		if (*end == '-')
			hi = strtoul(end + 1, NULL, 16);
		end = strchr(line, '\n');
		if (!end)
			end = line + strlen(line);
		if (addr >= lo && addr < hi) {
			n = snprintf(msg, sizeof(msg), "#   %s in: ", what);
			if (write(1, msg, n) == n)
				n = write(1, line, end - line + 1);
			return;
		}
		if (!*end)
			break;
	}
	n = snprintf(msg, sizeof(msg), "#   %s: not mapped\n", what);
	n = write(1, msg, n);
}

static void on_fault(int sig, siginfo_t *si, void *uc)
{
	unsigned long ip = ((ucontext_t *)uc)->uc_mcontext.gregs[REG_RIP];
	char msg[128];
	int n;

	if (in_scribble)
		siglongjmp(scribble_jmp, 1);
	/* Not expected: say where, for the report, then die of it. */
	n = snprintf(msg, sizeof(msg), "# kmod_fuzz: pid %d: signal %d at %p, ip %#lx\n",
		     getpid(), sig, si->si_addr, ip);
	if (write(1, msg, n) < 0)
		n = 0;
	say_mapping("address", (unsigned long)si->si_addr);
	say_mapping("ip", ip);
	signal(sig, SIG_DFL);
	raise(sig);
}

/*
 * A pointer for the kernel to use: valid, in an object's mapping, or
 * hostile. *len is cut so that [p, p + *len) stays inside what it points
 * into (a guard page or one of our ranges): a read() must not reach the
 * fuzzer's own memory next to it.
 */
static void *some_ptr_len_(void *valid, size_t *len, bool len_exact)
{
	struct map m;
	size_t off;

	switch (below(12)) {
	case 0:
		return NULL;
	case 1:
		return (void *)(uintptr_t)below(4096);
	case 2:
		return (void *)0xffff888000000000ULL;
	case 3:
		if (len && *len > 2 * (size_t)page)
			*len = 2 * page;
		return guard + page - below(64);	/* runs into PROT_NONE */
	case 4:
		if (pick_map(&m) && m.len) {
			off = below(m.len);
			if (len && *len > m.len - off) {
				if (len_exact)
					return valid;	/* no room for all of it */
				*len = m.len - off;
			}
			return m.addr + off;
		}
		return valid;
	default:
		return valid;
	}
}

static void *some_ptr_len(void *valid, size_t *len)
{
	return some_ptr_len_(valid, len, false);
}

/*
 * An ioctl argument: the kernel may write as many bytes as its size field
 * says, up to a page (it zeroes what it does not know), so the pointer
 * must have a page and more of ours behind it (or run into the guard).
 */
static void *some_ptr(void *valid)
{
	size_t len = page + 64;

	return some_ptr_len_(valid, &len, true);
}

/* ---- the calls ---- */

static int dev_fd;
static char names[NR_NAMES][MPQ_NAME_MAX + 1];

/*
 * The names: "mpqfz.N", 255 times one letter (the longest), and eight of
 * random bytes (control characters, bytes above 127; a '/' makes one
 * invalid). Made from fixed seeds, so the supervisor knows them all.
 */
static void make_names(void)
{
	uint64_t s = rs;

	for (int i = 0; i < 24; i++)
		snprintf(names[i], sizeof(names[i]), "mpqfz.%d", i);
	for (int i = 0; i < 26; i++) {
		memset(names[24 + i], 'a' + i, MPQ_NAME_MAX);
		names[24 + i][MPQ_NAME_MAX] = 0;
	}
	rs = 42;
	for (int i = 0; i < 8; i++) {
		for (int j = 0; j < 16; j++)
			names[50 + i][j] = 1 + below(255);
		names[50 + i][16] = 0;
	}
	rs = s;
}

static const char *some_name(char *buf)
{
	switch (below(8)) {
	case 0:		/* too long */
	{
		size_t n = MPQ_NAME_MAX + 1 + below(40);

		memset(buf, 'a' + below(26), n);
		buf[n] = 0;
		return buf;
	}
	case 1:
		return "";
	case 2:
		return "a/b";
	case 3:
		return names[24 + below(34)];
	default:
		return names[below(24)];
	}
}

static void op_create(void)
{
	static __thread char buf[8192];	/* more than a page: see some_ptr() */
	char nb[MPQ_NAME_MAX + 48];
	void *arg;
	int fd;

	for (size_t i = 0; i < 512; i++)
		buf[i] = rnd();
	switch (below(3)) {
	case 0: {
		struct mpq_queue_create *c = (void *)buf;

		if (chance(80)) {
			memset(c, 0, sizeof(*c));
			c->capacity = chance(80) ? 1 + below(256) : edgy(1U << 31);
			c->msg_max = chance(80) ? below(8192) : edgy(1U << 30);
			c->flags = chance(80) ? below(4) : rnd();
		}
		c->size = chance(85) ? sizeof(*c) : edgy(8192);
		fd = ioctl(dev_fd, MPQ_IOC_QUEUE_CREATE, some_ptr(c));
		add_fd(fd, K_QUEUE);
		break;
	}
	case 1: {
		struct mpq_pipe_create *c = (void *)buf;

		if (chance(80)) {
			memset(c, 0, sizeof(*c));
			c->ring_size = chance(80) ? 4096U << below(6) : edgy(1U << 31);
			c->flags = chance(80) ? below(4) : rnd();
		}
		c->size = chance(85) ? sizeof(*c) : edgy(8192);
		arg = some_ptr(c);
		/* fds[] are only ours to keep if they were written there. */
		if (ioctl(dev_fd, MPQ_IOC_PIPE_CREATE, arg) == 0 && arg == c &&
		    c->fds[0] > 2 && c->fds[1] > 2) {
			add_fd(c->fds[0], K_PIPE);
			add_fd(c->fds[1], K_PIPE);
		}
		break;
	}
	default: {
		struct mpq_shm_open *o = (void *)buf;

		if (chance(80)) {
			memset(o, 0, sizeof(*o));
			o->bytes = chance(90) ? 1 + below(1 << 20) : edgy(1ULL << 40);
			o->flags = chance(80) ? below(16) : rnd();
			o->mode = chance(80) ? 0600 | below(0100) : rnd();
			o->kind = below(MPQ_SHM_KIND_MAX + 1);
			o->name = chance(30) ? 0 : (uintptr_t)some_ptr((void *)some_name(nb));
		}
		o->size = chance(85) ? sizeof(*o) : edgy(8192);
		fd = ioctl(dev_fd, MPQ_IOC_SHM_OPEN, some_ptr(o));
		add_fd(fd, K_SHM);
		break;
	}
	}
}

static void op_unlink(void)
{
	struct mpq_shm_unlink u = { .size = sizeof(u) };
	char nb[MPQ_NAME_MAX + 48];

	u.name = (uintptr_t)some_ptr((void *)some_name(nb));
	if (chance(10))
		u.flags = rnd();
	if (chance(10))
		u.size = edgy(4096);
	ioctl(dev_fd, MPQ_IOC_SHM_UNLINK, some_ptr(&u));
}

static const unsigned long cmds[] = {
	MPQ_IOC_QUEUE_CREATE, MPQ_IOC_QUEUE_INFO, MPQ_IOC_QUEUE_WAKE,
	MPQ_IOC_PIPE_CREATE, MPQ_IOC_PIPE_INFO, MPQ_IOC_PIPE_WAKE,
	MPQ_IOC_SHM_OPEN, MPQ_IOC_SHM_INFO, MPQ_IOC_SHM_UNLINK,
	MPQ_IOC_QUEUE_BLOB_NEW, MPQ_IOC_QUEUE_BLOB_OPEN, MPQ_IOC_QUEUE_BLOB_DROP,
};

static bool is_blob_cmd(unsigned long cmd)
{
	return cmd == MPQ_IOC_QUEUE_BLOB_NEW || cmd == MPQ_IOC_QUEUE_BLOB_OPEN ||
	       cmd == MPQ_IOC_QUEUE_BLOB_DROP;
}

/* Any ioctl on any of our fds: known commands and neighbours of theirs. */
static void op_ioctl(void)
{
	unsigned long cmd = cmds[below(sizeof(cmds) / sizeof(cmds[0]))];
	static __thread char buf[8192];	/* more than a page: see some_ptr() */
	struct ofd o = { .fd = dev_fd };
	void *arg = NULL;
	long r;

	if (chance(80))
		pick_fd(&o);
	for (size_t i = 0; i < 512; i++)
		buf[i] = chance(50) ? 0 : rnd();
	*(uint32_t *)buf = chance(70) ? 64 + 8 * below(8) : edgy(8192);
	if (chance(10))
		cmd = _IOC(below(4), MPQ_IOC_MAGIC, below(0x30), below(1 << 14));
	/* Blobs: mostly small ids and sizes, so that some calls succeed. */
	if (is_blob_cmd(cmd) && chance(70)) {
		struct mpq_queue_blob *b = (void *)buf;

		b->id = chance(90) ? below(8) : rnd();
		b->bytes = chance(90) ? 1 + below(1 << 16) : edgy(1ULL << 40);
		b->flags = chance(90) ? below(2) : rnd();
		b->reserved = chance(90) ? 0 : rnd();
	}
	if (cmd == MPQ_IOC_QUEUE_WAKE || cmd == MPQ_IOC_PIPE_WAKE)
		r = ioctl(o.fd, cmd, chance(80) ? below(4) : rnd());
	else
		r = ioctl(o.fd, cmd, arg = some_ptr(buf));
	/* A create through another fd: keep what it made, or it leaks an fd. */
	if (r > 2 && (cmd == MPQ_IOC_QUEUE_CREATE || cmd == MPQ_IOC_SHM_OPEN ||
		      cmd == MPQ_IOC_QUEUE_BLOB_NEW ||
		      cmd == MPQ_IOC_QUEUE_BLOB_OPEN))
		add_fd(r, cmd == MPQ_IOC_QUEUE_CREATE ? K_QUEUE : K_SHM);
	if (r == 0 && cmd == MPQ_IOC_PIPE_CREATE && arg == buf) {
		struct mpq_pipe_create *c = (void *)buf;

		if (c->fds[0] > 2 && c->fds[1] > 2) {
			add_fd(c->fds[0], K_PIPE);
			add_fd(c->fds[1], K_PIPE);
		}
	}
}

static void op_close(void)
{
	int fd = -1;

	pthread_mutex_lock(&tab_lock);
	if (nfds) {
		int i = below(nfds);

		fd = fds[i].fd;
		fds[i] = fds[--nfds];
	}
	pthread_mutex_unlock(&tab_lock);
	if (fd >= 0)
		close(fd);
}

static void op_mmap(void)
{
	static const int prots[] = { PROT_READ | PROT_WRITE, PROT_READ,
		PROT_WRITE, PROT_NONE, PROT_READ | PROT_WRITE | PROT_EXEC };
	struct ofd o;
	size_t len;
	off_t off = 0;
	int flags = MAP_SHARED;
	void *want = NULL, *p;
	struct map m = { 0 };

	if (!pick_fd(&o))
		return;
	len = chance(75) ? o.map_size : edgy(o.map_size * 2 + page);
	if (chance(10))
		off = page * below(4);
	if (chance(10))
		flags = MAP_PRIVATE;
	if (chance(5))
		flags |= MAP_POPULATE;
	int i = -1;

	pthread_mutex_lock(&tab_lock);
	if ((nmaps == MAX_MAPS || chance(15)) && nmaps) {
		i = below(nmaps);
		m = maps[i];
		want = m.addr;
		flags |= MAP_FIXED;	/* over one of ours: never anything else */
		if (len > m.len)
			len = m.len;
	}
	p = mmap(want, len, prots[chance(70) ? 0 : below(5)], flags, o.fd, off);
	if (p != MAP_FAILED && !want)
		add_map_locked(p, len, o.kind);
	/*
	 * A MAP_FIXED mmap that fails (the module refuses the mapping) may
	 * have unmapped the range already: take it back, or drop it if
	 * another thread's mmap got it first (see op_mremap()).
	 */
	if (p == MAP_FAILED && want && !take_back(m.addr, m.len))
		maps[i] = maps[--nmaps];
	pthread_mutex_unlock(&tab_lock);
}

static void op_munmap(void)
{
	struct map *m;
	size_t off, len;

	pthread_mutex_lock(&tab_lock);
	if (nmaps) {
		m = &maps[below(nmaps)];
		if (chance(60)) {
			bury(m->addr, m->len);
			m->kind = K_DEAD;
		} else if (m->len >= (size_t)page) {	/* a hole, splitting the mapping */
			off = page * below(m->len / page);
			len = page * (1 + below(2));
			bury(m->addr + off, len < m->len - off ? len : m->len - off);
		}
	}
	pthread_mutex_unlock(&tab_lock);
}

static void op_mremap(void)
{
	struct map *m;
	size_t nlen;
	int flags = chance(70) ? MREMAP_MAYMOVE : 0;
	enum kind kind;
	char *p;

	pthread_mutex_lock(&tab_lock);
	if (!nmaps)
		goto out;
	m = &maps[below(nmaps)];
	nlen = chance(50) ? m->len : chance(50) ? m->len + page * (1 + below(4)) :
		(m->len > (size_t)page ? m->len - page : m->len);
	if (chance(15))
		flags = MREMAP_MAYMOVE | MREMAP_DONTUNMAP;
	if (!(flags & MREMAP_MAYMOVE) && nlen > m->len)
		goto out;	/* growing in place could take a neighbour's room */
	p = mremap(m->addr, m->len, nlen, flags);
	if (p == MAP_FAILED)
		goto out;
	if (p == m->addr) {
		/*
		 * The tail it gave back stays ours if nothing took it since:
		 * another thread's mmap (liburing's rings, made without the
		 * table's lock) may have, and burying over it then took
		 * their memory (workers died in liburing on PROT_NONE).
		 */
		if (nlen >= m->len || !take_back(m->addr + nlen, m->len - nlen))
			m->len = nlen;
		goto out;
	}
	/*
	 * Moved: the old range was freed; take it back (buried) unless
	 * another thread's mmap (liburing's rings, a thread stack) got it
	 * first, in which case it is no longer ours to touch: drop it.
	 */
	kind = m->kind;
	if (!(flags & MREMAP_DONTUNMAP)) {
		if (!take_back(m->addr, m->len))
			*m = maps[--nmaps];
	}
	add_map_locked(p, nlen, kind);
out:
	pthread_mutex_unlock(&tab_lock);
}

static const int advice[] = {
	MADV_NORMAL, MADV_RANDOM, MADV_SEQUENTIAL, MADV_WILLNEED,
	MADV_DONTNEED, MADV_FREE, MADV_REMOVE, MADV_DONTFORK, MADV_DOFORK,
	MADV_MERGEABLE, MADV_UNMERGEABLE, MADV_HUGEPAGE, MADV_NOHUGEPAGE,
	MADV_DONTDUMP, MADV_DODUMP, MADV_WIPEONFORK, MADV_KEEPONFORK,
	MADV_COLD, MADV_PAGEOUT,
#ifdef MADV_POPULATE_READ
	MADV_POPULATE_READ, MADV_POPULATE_WRITE,
#endif
#ifdef MADV_DONTNEED_LOCKED
	MADV_DONTNEED_LOCKED,
#endif
#ifdef MADV_COLLAPSE
	MADV_COLLAPSE,
#endif
};

static void op_madvise_mprotect(void)
{
	struct map m;
	size_t off, len;

	pthread_mutex_lock(&tab_lock);
	if (!nmaps || maps[0].len < (size_t)page)
		goto out;
	m = maps[below(nmaps)];
	off = page * below(m.len / page);
	len = chance(50) ? m.len - off : page * (1 + below(3));
	if (len > m.len - off)
		len = m.len - off;
	switch (below(4)) {
	case 0:
		mprotect(m.addr + off, len, below(8));
		break;
	case 1:
		/*
		 * remap_file_pages: pgoff within or beyond the object. It is
		 * an mmap(MAP_FIXED) of the range, which the module may refuse
		 * after the range was unmapped: the hole is no longer ours
		 * (liburing's rings were seen to land in one, and be buried
		 * with the range). Take it back, or forget the range.
		 */
		if (syscall(SYS_remap_file_pages, m.addr + off, len, 0,
			    chance(70) ? below(m.len / page + 2) : rnd(), 0) &&
		    has_hole(m.addr + off, len) && !take_back(m.addr + off, len))
			forget_locked(m.addr);
		break;
	case 2:
		mlock(m.addr + off, len);
		munlock(m.addr + off, len);
		break;
	default: {
		int adv = chance(95) ? advice[below(sizeof(advice) / sizeof(advice[0]))] :
				       (int)below(128);

		/*
		 * Not the two that simulate a failing DIMM (root only): the
		 * range may no longer be ours (see op_mremap()), and then
		 * they poison whatever is there, the shared zero page or
		 * libc's page cache, for every process in the VM.
		 */
		if (adv == MADV_HWPOISON || adv == MADV_SOFT_OFFLINE)
			adv = MADV_NORMAL;
		madvise(m.addr + off, len, adv);
		break;
	}
	}
out:
	pthread_mutex_unlock(&tab_lock);
}

/* Random bytes where the kernel looks: headers, records, ring positions. */
static void op_scribble(void)
{
	/* A pipe's: ring heads and box_taken 256, 264, 640, 648; boxes 896. */
	static const size_t hot[] = { 0, 4, 8, 12, 16, 20, 24, 32, 36, 40, 44,
		128, 256, 264, 384, 388, 392, 396, 400, 404, 512, 520, 640, 648,
		768, 896, 900, 904, 928, 932, 936, 4096, 4100, 4104, 4112, 4116 };
	struct map m;
	volatile char *p;
	size_t off;
	int n = 1 + below(8);

	/* Under the table's lock: the range cannot change hands meanwhile. */
	pthread_mutex_lock(&tab_lock);
	if (!nmaps) {
		pthread_mutex_unlock(&tab_lock);
		return;
	}
	m = maps[below(nmaps)];
	if (sigsetjmp(scribble_jmp, 1)) {
		in_scribble = 0;
		pthread_mutex_unlock(&tab_lock);
		return;
	}
	in_scribble = 1;
	/*
	 * A queue's operation record forged dead (FUTEX_OWNER_DIED, no
	 * TID), with a random intent: what ->poll() looks at after a
	 * participant's exit (struct mpq_queue_rec).
	 */
	off = 4096 + 128 * (size_t)below(64);
	if (chance(20) && off + 24 <= m.len) {
		static const uint32_t ops[] = { 1, 2, 5, 6, 17, 21, 34, 37,
						65, 0 };

		p = m.addr + off;
		*(volatile uint32_t *)(p + 4) = chance(80) ?
			ops[below(sizeof(ops) / sizeof(ops[0]))] : rnd();
		*(volatile uint64_t *)(p + 8) = chance(50) ? below(64) : rnd();
		*(volatile uint32_t *)(p + 16) = edgy(UINT32_MAX);
		*(volatile uint32_t *)p = 0x40000000;
	}
	/*
	 * A run forged at a slot near head (struct mpq_slot_run): published,
	 * with counts, sizes and taken at their edges, the busy bits set or
	 * not, its lap right or wrong, for read(2), ->poll() and the bound's
	 * count of messages (runs_put, runs_freed, runs_out).
	 */
	if (m.kind == K_QUEUE && chance(20) && m.len >= 4096) {
		volatile struct mpq_queue_shm *h = (void *)m.addr;
		uint32_t cap = h->capacity, ss = h->slot_size;
		uint64_t pos = h->head + (chance(50) ? 0 : below(4));
		volatile struct mpq_slot *s;

		off = h->data_off + (size_t)(pos & (cap - 1)) * ss;
		if (cap && !(cap & (cap - 1)) && ss >= 16 &&
		    off + MPQ_RUN_DATA_OFF(ss) <= m.len) {
			volatile uint32_t *z = (volatile void *)(m.addr + off +
						MPQ_RUN_SIZE_OFF(ss));

			s = (volatile void *)(m.addr + off);
			z[0] = edgy(UINT32_MAX);	/* count */
			z[1] = edgy(UINT32_MAX);	/* size */
			((volatile uint32_t *)(s + 1))[0] = edgy(UINT32_MAX) |
				(chance(30) ? MPQ_RUN_BUSY : 0) |
				(chance(20) ? MPQ_RUN_KERNEL : 0);
			((volatile uint32_t *)(s + 1))[1] = chance(70) ?
				(uint32_t)pos : edgy(UINT32_MAX);
			s->len = chance(80) ? MPQ_SLOT_RUN : edgy(UINT32_MAX);
			s->seq = (uint32_t)(pos + 1);
			if (chance(30))
				h->runs_put = h->runs_freed +
					      edgy(UINT32_MAX);
		}
	}
	while (n--) {
		off = chance(60) ? hot[below(sizeof(hot) / sizeof(hot[0]))] : below(m.len);
		if (off + 8 > m.len)
			continue;
		p = m.addr + (off & ~7UL);
		switch (below(5)) {
		case 0:
			*(volatile uint64_t *)p = rnd();
			break;
		case 1:
			*(volatile uint64_t *)p += below(5) - 2;
			break;
		case 2:
			*(volatile uint32_t *)p = edgy(UINT32_MAX);
			break;
		case 3:
			*(volatile uint64_t *)p = ~0ULL;
			break;
		default:
			for (int i = 0; i < 8; i++)
				p[i] = rnd();
		}
	}
	in_scribble = 0;
	pthread_mutex_unlock(&tab_lock);
}

static void op_rw(void)
{
	static __thread char buf[65536];
	struct ofd o;
	size_t len = chance(80) ? below(4096) : edgy(sizeof(buf));
	void *b;
	long r;

	if (!pick_fd(&o))
		return;
	if (len > sizeof(buf))
		len = sizeof(buf);
	b = some_ptr_len(buf, &len);
	if (chance(90) && b == buf) {
		uint64_t l = len;

		for (size_t i = 0; i < len; i++)
			buf[i] = rnd();
		if (len >= 8)	/* sometimes a plausible pipe frame */
			memcpy(buf, &l, 8);
	}
	arm(5 + below(30));
	if (chance(50))
		r = read(o.fd, b, len);
	else
		r = write(o.fd, b, len);
	disarm();
	(void)r;
}

static void op_poll(void)
{
	struct pollfd p[4];
	int n = 0;
	struct ofd o;

	for (int i = 0; i < 4; i++)
		if (pick_fd(&o))
			p[n++] = (struct pollfd){ o.fd, chance(50) ? POLLIN : POLLOUT | POLLIN, 0 };
	poll(p, n, below(20));
}

static __thread struct io_uring ring;
static __thread bool have_ring;

static void uring_exit(void)
{
	if (!have_ring)
		return;
	pthread_mutex_lock(&tab_lock);
	io_uring_queue_exit(&ring);
	pthread_mutex_unlock(&tab_lock);
	have_ring = false;
}

static void op_uring(void)
{
	static __thread char ubuf[4][8192];
	struct io_uring_sqe *sqe;
	struct io_uring_cqe *cqe;
	struct __kernel_timespec ts = { 0, 1000000L * below(20) };
	struct ofd o;

	/*
	 * The rings are liburing's mmaps: made and unmade under the table's
	 * lock, so that no range change of ours races with them.
	 */
	if (!have_ring) {
		pthread_mutex_lock(&tab_lock);
		have_ring = !io_uring_queue_init(8, &ring, 0);
		pthread_mutex_unlock(&tab_lock);
		if (!have_ring)
			return;
	}
	if (chance(5)) {	/* go away with requests in flight */
		uring_exit();
		return;
	}
	for (int i = 0, n = 1 + below(3); i < n && pick_fd(&o); i++) {
		size_t len = chance(80) ? below(8192) : 8192;
		void *b = some_ptr_len(ubuf[below(4)], &len);

		sqe = io_uring_get_sqe(&ring);
		if (!sqe)
			break;
		switch (below(3)) {
		case 0:
			io_uring_prep_read(sqe, o.fd, b, len, 0);
			break;
		case 1:
			io_uring_prep_write(sqe, o.fd, b, len, 0);
			break;
		default:
			io_uring_prep_poll_add(sqe, o.fd, chance(50) ? POLLIN : POLLOUT);
		}
		if (chance(20))
			sqe->flags |= IOSQE_ASYNC;
	}
	io_uring_submit(&ring);
	while (io_uring_wait_cqe_timeout(&ring, &cqe, &ts) == 0) {
		io_uring_cqe_seen(&ring, cqe);
		ts.tv_nsec = 0;
	}
}

static void op_proc(void)
{
	static const char *const files[] = { "/proc/mpq",
		"/sys/module/mpq/parameters/objects",
		"/sys/module/mpq/parameters/pages", "/proc/self/maps" };
	char buf[4096];
	int fd = open(files[below(4)], O_RDONLY);

	if (fd < 0)
		return;
	while (read(fd, buf, sizeof(buf)) > 0 && chance(95))
		;
	close(fd);
}

static void run_ops(int n, bool may_fork);

/*
 * A worker's forked children die of unexpected signals where the
 * supervisor cannot see it: their worker reaps them and may be SIGKILLed
 * a moment later. So whoever reaps a fuzz process counts such a death
 * here, in a page shared with the supervisor (outside the range table:
 * no fuzz call touches it).
 */
static unsigned int *crashes;
/* --crash-children: every forked child faults at once, which test 4 must
 * catch (a check of the checker; guest_tests.sh runs it). */
static bool crash_children;

/* A fuzz process reaped with status st: count a signal but SIGKILL. */
static void reaped(pid_t pid, int st)
{
	if (pid <= 0 || !WIFSIGNALED(st) || WTERMSIG(st) == SIGKILL)
		return;
	printf("# fuzz process %d died of signal %d\n", pid, WTERMSIG(st));
	__atomic_fetch_add(crashes, 1, __ATOMIC_RELAXED);
}

/*
 * In a fork's child: a range some of which the parent marked
 * MADV_DONTFORK is not (all) here, and the child's own mmaps (its io_uring
 * rings) could land in it; it is no longer ours.
 */
static void drop_unforked(void)
{
	for (int i = 0; i < nmaps; i++)
		if (has_hole(maps[i].addr, maps[i].len))
			maps[i--] = maps[--nmaps];
}

/* A child that runs a few calls, maybe in a new IPC namespace, and is
 * maybe killed by its parent at a random point. */
static void op_fork(void)
{
	uint64_t seed = rnd();
	pid_t pid;

	/* Not in the middle of another thread's range change. */
	pthread_mutex_lock(&tab_lock);
	pid = fork();
	if (pid == 0)
		pthread_mutex_init(&tab_lock, NULL);
	else
		pthread_mutex_unlock(&tab_lock);
	if (pid < 0)
		return;
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		drop_unforked();
		have_ring = false;
		have_tmr = false;
		rs = seed;
		if (crash_children)
			*(volatile char *)(guard + page) = 1;
		if (chance(10) && unshare(CLONE_NEWIPC) == 0)
			op_create();
		run_ops(1 + below(30), false);
		_exit(0);
	}
	if (chance(60)) {
		usleep(below(3000));
		kill(pid, SIGKILL);
	}
	if (chance(70)) {
		int st = 0;

		reaped(waitpid(pid, &st, 0), st);
	}
}

static void run_ops(int n, bool may_fork)
{
	pid_t pid;
	int st;

	while (n--) {
		switch (below(may_fork ? 100 : 97)) {
		case 0 ... 11:
			op_create();
			break;
		case 12 ... 14:
			op_unlink();
			break;
		case 15 ... 27:
			op_ioctl();
			break;
		case 28 ... 33:
			op_close();
			break;
		case 34 ... 45:
			op_mmap();
			break;
		case 46 ... 49:
			op_munmap();
			break;
		case 50 ... 53:
			op_mremap();
			break;
		case 54 ... 61:
			op_madvise_mprotect();
			break;
		case 62 ... 71:
			op_scribble();
			break;
		case 72 ... 83:
			op_rw();
			break;
		case 84 ... 87:
			op_poll();
			break;
		case 88 ... 93:
			op_uring();
			break;
		case 94 ... 96:
			op_proc();
			break;
		default:
			op_fork();
		}
		while ((pid = waitpid(-1, &st, WNOHANG)) > 0)
			reaped(pid, st);
	}
}

/* ---- a worker process ---- */

static struct timespec deadline;
static long ops_per_thread;

static bool past_deadline(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec > deadline.tv_sec ||
	       (now.tv_sec == deadline.tv_sec && now.tv_nsec >= deadline.tv_nsec);
}

struct thr {
	pthread_t t;
	uint64_t seed;
};

static void *thread_main(void *arg)
{
	struct thr *t = arg;

	rs = t->seed;
	for (long i = 0; !past_deadline() && (!ops_per_thread || i < ops_per_thread); i += 16)
		run_ops(16, true);
	uring_exit();
	return NULL;
}

static void worker(uint64_t seed, int threads)
{
	struct thr t[MAX_THREADS];
	struct sigaction sa = { .sa_sigaction = on_fault, .sa_flags = SA_SIGINFO | SA_NODEFER };

	setpgid(0, 0);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGBUS, &sa, NULL);
	sa.sa_handler = on_alarm;
	sa.sa_flags = 0;
	sigaction(SIGALRM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	rs = seed;
	dev_fd = open("/dev/mpq", O_RDWR | O_CLOEXEC);
	if (dev_fd < 0) {
		perror("kmod_fuzz: /dev/mpq");
		_exit(2);
	}
	add_fd(open("/dev/mpq", O_RDWR), K_DEV);
	/* Half the workers are an ordinary user: what a hostile one can do. */
	if (chance(50) && setresgid(65534, 65534, 65534) == 0)
		setresuid(65534, 65534, 65534);
	for (int i = 0; i < threads; i++) {
		t[i].seed = mix(seed, i + 1);
		pthread_create(&t[i].t, NULL, thread_main, &t[i]);
	}
	for (int i = 0; i < threads; i++)
		pthread_join(t[i].t, NULL);
	_exit(0);
}

/* ---- the supervisor ---- */

static long counter(const char *name)
{
	char path[128];
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/sys/module/mpq/parameters/%s", name);
	f = fopen(path, "r");
	if (!f)
		return -1;
	if (fscanf(f, "%ld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

/*
 * A name made from a pointer into random memory is not in names[]: a
 * persistent block under it lives, as it should, until unlinked. Unlink
 * every name /proc/mpq still lists (the supervisor is root in the
 * initial namespace, where the workers that made them ran), decoding the
 * listing's \ooo escapes.
 */
static void unlink_listed(int dev)
{
	char line[4096], name[MPQ_NAME_MAX + 1], *f;
	FILE *p = fopen("/proc/mpq", "r");

	if (!p)
		return;
	while (fgets(line, sizeof(line), p)) {
		struct mpq_shm_unlink u = { .size = sizeof(u), .name = (uintptr_t)name };
		size_t n = 0;

		/* id type name ...: the third field, escaped, or - for none. */
		if (!strtok(line, " ") || !strtok(NULL, " ") || !(f = strtok(NULL, " ")))
			continue;
		if (!strcmp(f, "-") || !strcmp(f, "name"))
			continue;
		while (*f && n < MPQ_NAME_MAX) {
			if (f[0] == '\\' && f[1] >= '0' && f[1] <= '3' &&
			    f[2] >= '0' && f[2] <= '7' && f[3] >= '0' && f[3] <= '7') {
				name[n++] = (char)((f[1] - '0') << 6 | (f[2] - '0') << 3 |
						   (f[3] - '0'));
				f += 4;
			} else {
				name[n++] = *f++;
			}
		}
		name[n] = 0;
		ioctl(dev, MPQ_IOC_SHM_UNLINK, &u);
	}
	fclose(p);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static char stuck_note[320];

/* The state letter of a /proc/PID/stat line ("R", "D", ...), '?' if none. */
static char stat_state(const char *stat)
{
	const char *p = strrchr(stat, ')');

	return p && p[1] == ' ' && p[2] ? p[2] : '?';
}

/*
 * A backtrace's "RIP: 0010:func+0x1/0x2" of a CPU that is not idle: where
 * a thread that shows no stack (it is on a CPU) was running. Up to two,
 * into the stuck thread's one-line note.
 */
static void note_rip(const char *l)
{
	const char *f = strstr(l, "RIP: 0010:");	/* kernel code only */
	size_t at = strlen(stuck_note);
	int n;

	if (!f || !at || strstr(l, "idle") || strstr(l, "halt"))
		return;
	f = strchr(f, ':');
	f = f ? strchr(f + 1, ':') : NULL;
	if (!f || strstr(stuck_note, " rip2 "))
		return;
	f++;
	n = (int)strcspn(f, "+ \n");
	snprintf(stuck_note + at, sizeof(stuck_note) - at, " %s %.*s",
		 strstr(stuck_note, " rip1 ") ? "rip2" : "rip1", n, f);
}

/* The kernel log from the last line that holds @mark on, from /dev/kmsg. */
static void show_kmsg_from(const char *mark)
{
	static char log[1 << 17];
	size_t len = 0, from = 0;
	char rec[2048];
	int fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK);
	ssize_t n;

	if (fd < 0)
		return;
	for (;;) {
		n = read(fd, rec, sizeof(rec) - 1);
		if (n < 0 && errno == EPIPE)
			continue;	/* overwritten while we read: go on */
		if (n <= 0)
			break;
		rec[n] = 0;
		/* "prio,seq,usec,flags;text\n": keep the text. */
		char *text = strchr(rec, ';');

		text = text ? text + 1 : rec;
		if (strstr(text, mark))
			len = from = 0;
		n = strlen(text);
		if (len + n < sizeof(log)) {
			memcpy(log + len, text, n);
			len += n;
		}
	}
	close(fd);
	log[len] = 0;
	for (char *l = strtok(log + from, "\n"); l; l = strtok(NULL, "\n")) {
		printf("#   kernel: %s\n", l);
		note_rip(l);
	}
}

/*
 * The first stuck thread in one line (pid, state, wchan, the top of its
 * kernel stack), for the failure's own TAP line: a run's summary may
 * keep only that line, and it should say where to look.
 */
static void note_stuck(pid_t pid, int tid, int i, const char *text)
{
	size_t at = strlen(stuck_note);
	char one[128];
	const char *p;
	int k;

	if (i == 0) {
		if (at)
			return;
		snprintf(stuck_note, sizeof(stuck_note), "; pid %d tid %d state %c",
			 pid, tid, stat_state(text));
		return;
	}
	if (!at || strstr(stuck_note, i == 1 ? " wchan " : " stack "))
		return;
	if (i == 1) {
		snprintf(one, sizeof(one), " wchan %.100s", text);
	} else if (i == 3) {
		/* "[<0>] func+0x1/0x2" lines: the first three names. */
		strcpy(one, " stack");
		for (p = text, k = 0; p && k < 3; k++) {
			const char *f = strstr(p, "] "), *e;

			if (!f)
				break;
			f += 2;
			e = f + strcspn(f, "+\n");
			snprintf(one + strlen(one), sizeof(one) - strlen(one), "%s%.*s",
				 k ? "<" : " ", (int)(e - f), f);
			p = strchr(f, '\n');
		}
	} else {
		return;
	}
	snprintf(stuck_note + at, sizeof(stuck_note) - at, "%s", one);
}

/* Where each thread of a stuck process is: wchan, syscall and stack. */
static void show_stuck(pid_t pid)
{
	char path[96], buf[4096];
	bool running = false;
	struct dirent *e;
	DIR *d;
	int fd;
	ssize_t n;

	printf("# stuck: pid %d\n", pid);
	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	d = opendir(path);
	while (d && (e = readdir(d))) {
		static const char *const what[] = { "stat", "wchan", "syscall", "stack" };
		int tid = atoi(e->d_name);

		if (tid <= 0)
			continue;
		printf("#   thread %d\n", tid);
		for (int i = 0; i < 4; i++) {
			snprintf(path, sizeof(path), "/proc/%d/task/%d/%s", pid, tid, what[i]);
			fd = open(path, O_RDONLY);
			if (fd < 0)
				continue;
			n = read(fd, buf, sizeof(buf) - 1);
			close(fd);
			if (n <= 0)
				continue;
			buf[n] = 0;
			note_stuck(pid, tid, i, buf);
			if (i == 0 && stat_state(buf) == 'R')
				running = true;
			printf("#     %s: %s\n", what[i], strtok(buf, "\n") ?: "");
			for (char *l; (l = strtok(NULL, "\n"));)
				printf("#       %s\n", l);
		}
	}
	if (d)
		closedir(d);
	if (!running)
		return;
	/*
	 * A thread running in the kernel shows no stack in /proc (it is on
	 * a CPU): ask every CPU for its backtrace, which lands in the
	 * kernel log, and show that.
	 */
	fd = open("/proc/sysrq-trigger", O_WRONLY);
	if (fd < 0)
		return;
	if (write(fd, "l", 1) == 1) {
		sleep(1);
		show_kmsg_from("sysrq: Show backtrace");
	}
	close(fd);
}

/* Every process still in one of our process groups: where it is stuck. */
static void show_group_left(const pid_t *groups, int ngroups)
{
	char path[64], buf[512], *p;
	int fd, pgid;
	ssize_t n;

	DIR *d = opendir("/proc");
	struct dirent *e;

	while (d && (e = readdir(d))) {
		pid_t pid = atoi(e->d_name);

		if (pid <= 1)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/stat", pid);
		fd = open(path, O_RDONLY);
		if (fd < 0)
			continue;
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n <= 0)
			continue;
		buf[n] = 0;
		p = strrchr(buf, ')');	/* state ppid pgrp follow the name */
		if (!p || sscanf(p + 2, "%*c %*d %d", &pgid) != 1)
			continue;
		for (int i = 0; i < ngroups; i++)
			if (groups[i] == pgid) {
				printf("# not dead after SIGKILL: %s\n", buf);
				show_stuck(pid);
				break;
			}
	}
	if (d)
		closedir(d);
}

static void usage(void)
{
	fprintf(stderr, "usage: kmod_fuzz [--seed N] [--seconds N] [--ops N] "
		"[--procs N] [--threads N] [--hang N] [--crash-children 1]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	uint64_t seed = 0;
	bool have_seed = false;
	long seconds = 0, ops = 0, procs = 4, threads = 2, hang = 60;
	pid_t pids[MAX_PROCS] = { 0 };
	static pid_t groups[MAX_GROUPS];
	int ngroups = 0, gen = 0, fails = 0, tests = 0, stuck = 0, broken = 0;
	double end, t0 = now_s();
	long objs, pgs, objs0 = counter("objects");
	char row[200] = "";

	for (int i = 1; i < argc; i++) {
		char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!v)
			usage();
		if (!strcmp(argv[i], "--seed"))
			seed = strtoull(v, NULL, 0), have_seed = true;
		else if (!strcmp(argv[i], "--seconds"))
			seconds = atol(v);
		else if (!strcmp(argv[i], "--ops"))
			ops = atol(v);
		else if (!strcmp(argv[i], "--procs"))
			procs = atol(v);
		else if (!strcmp(argv[i], "--threads"))
			threads = atol(v);
		else if (!strcmp(argv[i], "--hang"))
			hang = atol(v);
		else if (!strcmp(argv[i], "--crash-children"))
			crash_children = atoi(v);
		else
			usage();
		i++;
	}
	if (procs < 1 || procs > MAX_PROCS || threads < 1 || threads > MAX_THREADS)
		usage();
	if (!seconds && !ops)
		seconds = 60;
	if (!have_seed && getrandom(&seed, sizeof(seed), 0) != sizeof(seed))
		seed = time(NULL) ^ getpid();
	page = sysconf(_SC_PAGESIZE);
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("TAP version 13\n1..4\n");
	printf("# kmod_fuzz: seed %llu (replay: --seed %llu), %ld s, %ld ops, "
	       "%ld procs x %ld threads, hang guard %ld s\n", (unsigned long long)seed,
	       (unsigned long long)seed, seconds, ops, procs, threads, hang);

	guard = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (guard == MAP_FAILED)
		return 2;
	mprotect(guard + page, page, PROT_NONE);
	crashes = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (crashes == MAP_FAILED)
		return 2;
	rs = seed;
	make_names();
	/* Orphans of killed workers come to us: we reap and count them all. */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	signal(SIGPIPE, SIG_IGN);

	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += seconds ? seconds : 365 * 86400L;
	ops_per_thread = ops ? (ops + procs * threads - 1) / (procs * threads) : 0;
	end = seconds ? t0 + seconds : 1e18;

	/* Run: workers, killed at random times and replaced until the end. */
	for (;;) {
		pid_t pid;
		int st, live = 0;

		for (int i = 0; i < procs; i++) {
			if (pids[i] || now_s() >= end || (ops && gen >= procs))
				continue;
			uint64_t s = mix(seed, 1000 + gen);

			pid = fork();
			if (pid == 0)
				worker(s, threads);
			if (pid < 0)
				continue;
			pids[i] = pid;
			setpgid(pid, pid);
			if (ngroups < MAX_GROUPS)
				groups[ngroups++] = pid;
			gen++;
		}
		for (int i = 0; i < procs; i++)
			live += pids[i] != 0;
		if (!live)
			break;
		if (now_s() >= end + hang)
			break;
		usleep(10000 + below(100000));
		/* SIGKILL one at a random point of whatever it is doing. */
		if (ops == 0 && now_s() < end && chance(20)) {
			int i = below(procs);

			if (pids[i])
				kill(pids[i], SIGKILL);
		}
		while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
			/* Not our SIGKILL: the fuzzer crashed, or the kernel
			 * broke its memory (orphans of killed workers too). */
			reaped(pid, st);
			for (int i = 0; i < procs; i++)
				if (pids[i] == pid) {
					pids[i] = 0;
					if (WIFEXITED(st) && WEXITSTATUS(st) == 2)
						broken++;
				}
		}
		if (ops && now_s() > t0 + 3600)	/* --ops alone: an hour at most */
			end = now_s();
	}

	/* 1: every worker finished by itself within the hang guard. */
	for (int i = 0; i < procs; i++)
		if (pids[i]) {
			show_stuck(pids[i]);
			stuck++;
		}
	tests++;
	if (stuck || broken) {
		printf("not ok 1 every worker finished within %lds of the end "
		       "(%d stuck, %d could not start, %d crashed; seed %llu%s)\n", hang,
		       stuck, broken, __atomic_load_n(crashes, __ATOMIC_RELAXED),
		       (unsigned long long)seed, stuck_note);
		fails++;
	} else {
		printf("ok 1 every worker finished within %lds of the end (%d workers)\n",
		       hang, gen);
	}

	/* 2: everything dies on SIGKILL, orphans included. */
	for (int i = 0; i < ngroups; i++)
		kill(-groups[i], SIGKILL);
	{
		double limit = now_s() + hang;
		bool left = false;

		for (;;) {
			int st = 0;
			pid_t pid = waitpid(-1, &st, WNOHANG);

			reaped(pid, st);

			if (pid < 0 && errno == ECHILD)
				break;
			if (pid > 0)
				continue;
			if (now_s() > limit) {
				left = true;
				break;
			}
			for (int i = 0; i < ngroups; i++)
				kill(-groups[i], SIGKILL);
			usleep(20000);
		}
		tests++;
		if (left) {
			stuck_note[0] = 0;
			show_group_left(groups, ngroups);
			printf("not ok 2 every fuzz process died on SIGKILL within %lds "
			       "(seed %llu%s)\n", hang, (unsigned long long)seed, stuck_note);
			fails++;
		} else {
			printf("ok 2 every fuzz process died on SIGKILL\n");
		}
	}

	/* 3: the module holds nothing once they are gone and the names unlinked. */
	dev_fd = open("/dev/mpq", O_RDWR | O_CLOEXEC);
	for (int i = 0; dev_fd >= 0 && i < NR_NAMES; i++) {
		struct mpq_shm_unlink u = { .size = sizeof(u), .name = (uintptr_t)names[i] };

		ioctl(dev_fd, MPQ_IOC_SHM_UNLINK, &u);
	}
	if (dev_fd >= 0)
		unlink_listed(dev_fd);
	if (dev_fd >= 0)
		close(dev_fd);
	/* Released files and io_uring rings go away asynchronously: wait. */
	for (double limit = now_s() + hang;;) {
		objs = counter("objects");
		pgs = counter("pages");
		if ((objs == 0 && pgs == 0) || now_s() > limit)
			break;
		usleep(50000);
	}
	tests++;
	if (objs != 0 || pgs != 0) {
		char buf[4096];
		int fd = open("/proc/mpq", O_RDONLY);
		ssize_t n;

		printf("# what /proc/mpq still shows:\n");
		while (fd >= 0 && (n = read(fd, buf, sizeof(buf) - 1)) > 0) {
			buf[n] = 0;
			for (char *l = strtok(buf, "\n"); l; l = strtok(NULL, "\n")) {
				printf("#   %s\n", l);
				/* The first object's row, past the header, for the line below. */
				if (!row[0] && strncmp(l, "id ", 3))
					snprintf(row, sizeof(row), "; first: %s", l);
			}
		}
		if (fd >= 0)
			close(fd);
		printf("not ok 3 module counters back to 0 (objects=%ld pages=%ld, objects=%ld "
		       "before the fuzz; seed %llu%s)\n",
		       objs, pgs, objs0, (unsigned long long)seed, row);
		fails++;
	} else {
		printf("ok 3 module counters back to 0\n");
	}
	/*
	 * 4: no fuzz process (a worker, or a child one forked) died of a
	 * signal but ours. The fuzzer keeps its own memory out of the
	 * kernel's way (the range table), so a SIGSEGV or SIGBUS is the
	 * kernel breaking a mapping, or a fuzzer bug to fix; on_fault()
	 * printed whose memory it was.
	 */
	tests++;
	if (*crashes) {
		printf("not ok 4 no fuzz process died of an unexpected signal (%u did, "
		       "see above; seed %llu)\n", *crashes, (unsigned long long)seed);
		fails++;
	} else {
		printf("ok 4 no fuzz process died of an unexpected signal\n");
	}
	printf("# kmod_fuzz: seed %llu, %d workers, %.1f s%s\n", (unsigned long long)seed,
	       gen, now_s() - t0, fails ? ": FAILED (replay with --seed)" : "");
	printf("# Totals: pass:%d fail:%d xfail:0 xpass:0 skip:0 error:0\n",
	       tests - fails > 0 ? tests - fails : 0, fails > tests ? tests : fails);
	return fails ? 1 : 0;
}
