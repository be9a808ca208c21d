// SPDX-License-Identifier: MIT
/*
 * Managed objects of mpq's own types: a struct mpq_queue *, mpq_lock * or
 * mpq_sem * whose calls libmpq hands to the tables here (mpq_ext.h), which
 * run them on the manager's queue, lock or semaphore. Python's proxies,
 * with the referent's own API: code written for a local object runs on a
 * managed one.
 *
 * What a local call promises and a managed one keeps:
 *   Queue      put/get (batches too) with timeouts, maxsize exactly, a
 *              blocking put that waits for room; a message too large for
 *              the caller's buffer is -EMSGSIZE and stays first for this
 *              handle (it is held here, leased or taken, not put back).
 *   Joinable   a get takes a lease; task_done finishes the oldest message
 *              this handle took; join waits on the server.
 *   Lock       acquire blocks on the server; a dead holder's lease gives
 *              the next acquirer -EOWNERDEAD; consistent clears it.
 * The holder of a lock is the process, not the thread (the manager's
 * owner string). A forked child starts with nothing held or stashed.
 *
 * Export writes what a child needs to reach the manager (address,
 * authkey, name, settings) into a sealed memfd that spawned and
 * fork-server children inherit (mpq_ext_inherit_fd), and names its fd in
 * the handle: the authkey never goes on a command line or into the
 * environment, where other users' ps(1) or a core's environ would show it.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <mpq_ext.h>

#include "manager/manager.h"
#include "manager/proxy.h"

#define PX_MAGIC	"mpq-mgr/1"
#define PX_FIELDS	9

static const char *const px_kind_name[] = {
	"queue", "queue", "lock", "rlock", "sem",
	"event", "cond", "barrier", "value",
};

/* The libmpq kind (MPQ_EXT_*) each PX_* is imported as. */
static const int px_ext_kind[] = {
	MPQ_EXT_QUEUE, MPQ_EXT_QUEUE, MPQ_EXT_LOCK, MPQ_EXT_LOCK, MPQ_EXT_SEM,
	MPQ_EXT_EVENT, MPQ_EXT_COND, MPQ_EXT_BARRIER, MPQ_EXT_VALUE,
};

struct px_queue {
	struct px_common c;
	struct mpq_manager_queue *q;
	pid_t pid;		/* the process stash and held belong to */
	/* Taken from the server, not handed out yet (FIFO). */
	struct mpq_manager_msg *stash;
	unsigned int nstash, stash_cap;
	/* Handed out, task_done not called yet (joinable; FIFO). */
	struct mpq_manager_msg *held;
	unsigned int nheld, held_cap;
};

struct px_lock {
	struct px_common c;
	struct mpq_manager_lock *l;
};

struct px_sem {
	struct px_common c;
	struct mpq_manager_sem *s;
};

void *mpq__px_new(size_t size, struct mpq_manager *m, int kind,
		  const char *name)
{
	struct px_common *c = calloc(1, size);

	if (!c)
		return NULL;
	c->m = m;
	c->kind = kind;
	c->export_fd = -1;
	c->name = strdup(name);
	if (!c->name) {
		free(c);
		return NULL;
	}
	return c;
}

int mpq__px_opened(void *obj, int own_m, int err, void (*free_obj)(void *))
{
	struct px_common *c = obj;

	if (err)
		free_obj(obj);	/* own_m still 0: m is the caller's */
	else
		c->own_m = own_m;
	return err;
}

void mpq__px_common_fini(struct px_common *c)
{
	if (c->export_fd >= 0)
		close(c->export_fd);
	free(c->name);
	if (c->own_m)
		mpq_manager_free(c->m);
}

/*
 * The handle: "mpq-mgr-<kind>:fd=N", N a sealed memfd holding PX_FIELDS
 * NUL-terminated fields: magic, kind, address, authkey, name, num,
 * lease_ns, max_deliveries, extra (a kind's own: proxy_sync.c).
 */
int mpq__px_export(void *obj, char *buf, size_t len)
{
	struct px_common *c = obj;
	const char *addr = mpq_manager_address(c->m);
	const char *key = mpq_manager_authkey(c->m);
	char kind[8], num[24], lease[24], maxd[16], extra[16];
	char tmp[MPQ_HANDLE_MAX];
	const char *f[PX_FIELDS];
	int fd, n, i, err;

	if (!addr)
		return -EINVAL;
	if (c->export_fd < 0) {
		snprintf(kind, sizeof(kind), "%d", c->kind);
		snprintf(num, sizeof(num), "%llu", (unsigned long long)c->num);
		snprintf(lease, sizeof(lease), "%lld", (long long)c->lease_ns);
		snprintf(maxd, sizeof(maxd), "%u", c->max_deliveries);
		f[0] = PX_MAGIC;
		f[1] = kind;
		f[2] = addr;
		f[3] = key ? key : "";
		f[4] = c->name;
		f[5] = num;
		f[6] = lease;
		f[7] = maxd;
		snprintf(extra, sizeof(extra), "%u", c->extra);
		f[8] = extra;
		fd = memfd_create("mpq-manager-handle",
				  MFD_CLOEXEC | MFD_ALLOW_SEALING);
		if (fd < 0)
			return -errno;
		for (i = 0; i < PX_FIELDS; i++) {
			size_t l = strlen(f[i]) + 1;

			if (write(fd, f[i], l) != (ssize_t)l) {
				close(fd);
				return -EIO;
			}
		}
		/* What the children read is what was written. */
		fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW |
		      F_SEAL_WRITE | F_SEAL_SEAL);
		c->export_fd = fd;
	}
	n = snprintf(tmp, sizeof(tmp), PX_PREFIX "%s:fd=%d",
		     px_kind_name[c->kind], c->export_fd);
	if (n < 0 || (size_t)n >= len)
		return -ERANGE;
	err = mpq_ext_inherit_fd(c->export_fd);
	if (err)
		return err;
	memcpy(buf, tmp, (size_t)n + 1);
	return n;
}

/* ------------------------------------------------------------------ */
/* Queue */

/* A forked child holds none of its parent's messages. */
static void pxq_forked(struct px_queue *p)
{
	unsigned int i;

	if (p->pid == getpid())
		return;
	for (i = 0; i < p->nstash; i++)
		mpq_manager_msg_free(&p->stash[i]);
	p->nstash = 0;
	p->nheld = 0;
	p->pid = getpid();
}

static int pxq_push(struct mpq_manager_msg **a, unsigned int *n,
		    unsigned int *cap, const struct mpq_manager_msg *m)
{
	if (*n == *cap) {
		unsigned int c = *cap ? *cap * 2 : 16;
		struct mpq_manager_msg *t = realloc(*a, c * sizeof(*t));

		if (!t)
			return -ENOMEM;
		*a = t;
		*cap = c;
	}
	(*a)[(*n)++] = *m;
	return 0;
}

static void pxq_shift(struct mpq_manager_msg *a, unsigned int *n)
{
	memmove(a, a + 1, (*n - 1) * sizeof(*a));
	(*n)--;
}

static int pxq_put_many(void *obj, const struct iovec *msgs, unsigned int n,
			int64_t timeout_ns)
{
	struct px_queue *p = obj;

	return mpq_manager_queue_put_many(p->q, msgs, n, timeout_ns);
}

static int pxq_get_many(void *obj, struct iovec *bufs, unsigned int n,
			int64_t timeout_ns)
{
	struct px_queue *p = obj;
	int joinable = p->c.kind == PX_JQUEUE;
	struct mpq_manager_msg msgs[256];
	unsigned int i;
	int got, err;

	pxq_forked(p);
	if (n > 256)
		n = 256;
	if (!p->nstash) {
		/* A plain Queue's get takes it for good, and is done. */
		got = mpq__mgr_queue_take(p->q, msgs, n, timeout_ns,
					  !joinable);
		if (got < 0)
			return got;
		for (i = 0; i < (unsigned int)got; i++) {
			err = pxq_push(&p->stash, &p->nstash, &p->stash_cap,
				       &msgs[i]);
			if (err) {
				/* Leased ones come back after the lease. */
				while (i < (unsigned int)got)
					mpq_manager_msg_free(&msgs[i++]);
				if (!p->nstash)
					return err;
			}
		}
	}
	for (i = 0; i < n && p->nstash; i++) {
		struct mpq_manager_msg *m = &p->stash[0];

		if (m->len > bufs[i].iov_len) {
			if (i)
				break;
			bufs[0].iov_len = m->len;
			return -EMSGSIZE;
		}
		if (joinable) {
			struct mpq_manager_msg h = *m;

			h.data = NULL;
			h.len = 0;
			if (pxq_push(&p->held, &p->nheld, &p->held_cap, &h))
				return i ? (int)i : -ENOMEM;
		}
		memcpy(bufs[i].iov_base, m->data, m->len);
		bufs[i].iov_len = m->len;
		mpq_manager_msg_free(m);
		pxq_shift(p->stash, &p->nstash);
	}
	return (int)i;
}

static int pxq_clamp(int64_t v)
{
	return v < 0 ? (int)v : v > INT_MAX ? INT_MAX : (int)v;
}

static int pxq_qsize(void *obj)
{
	struct px_queue *p = obj;
	int64_t n = mpq_manager_queue_size(p->q);

	pxq_forked(p);
	return n < 0 ? (int)n : pxq_clamp(n + p->nstash);
}

static int pxq_full(void *obj)
{
	struct px_queue *p = obj;
	uint64_t max = mpq__mgr_queue_maxsize(p->q);
	int64_t used;

	if (!max)
		return 0;
	used = mpq__mgr_queue_used(p->q);
	return used < 0 ? (int)used : (uint64_t)used >= max;
}

static int pxq_maxsize(void *obj)
{
	struct px_queue *p = obj;
	uint64_t max = mpq__mgr_queue_maxsize(p->q);

	return max > INT_MAX ? INT_MAX : (int)max;
}

static int pxq_task_done(void *obj)
{
	struct px_queue *p = obj;
	struct mpq_manager_msg m;
	int err;

	if (p->c.kind != PX_JQUEUE)
		return -EINVAL;
	pxq_forked(p);
	if (!p->nheld)
		return -EINVAL;		/* Python's ValueError */
	m = p->held[0];
	err = mpq_manager_msg_done(p->q, &m);
	/* A transport error leaves it ours: task_done may be called again. */
	if (err == 0 || err == -ESTALE)
		pxq_shift(p->held, &p->nheld);
	return err;
}

static int pxq_join(void *obj, int64_t timeout_ns)
{
	struct px_queue *p = obj;

	if (p->c.kind != PX_JQUEUE)
		return -EINVAL;
	return mpq_manager_queue_join(p->q, timeout_ns);
}

static int pxq_unfinished(void *obj)
{
	struct px_queue *p = obj;

	if (p->c.kind != PX_JQUEUE)
		return -EINVAL;
	return pxq_clamp(mpq_manager_queue_unfinished(p->q));
}

static void pxq_free(void *obj)
{
	struct px_queue *p = obj;
	unsigned int i;

	if (!p)
		return;
	/* Leased messages not handed out come back after their lease. */
	for (i = 0; i < p->nstash && p->pid == getpid(); i++)
		mpq_manager_msg_free(&p->stash[i]);
	free(p->stash);
	free(p->held);
	mpq_manager_queue_free(p->q);
	mpq__px_common_fini(&p->c);
	free(p);
}

static const struct mpq_ext_queue_ops pxq_ops = {
	.size = sizeof(struct mpq_ext_queue_ops),
	.put_many = pxq_put_many,
	.get_many = pxq_get_many,
	.qsize = pxq_qsize,
	.full = pxq_full,
	.maxsize = pxq_maxsize,
	.task_done = pxq_task_done,
	.join = pxq_join,
	.unfinished = pxq_unfinished,
	.export = mpq__px_export,
	.free = pxq_free,
};

static int pxq_open(struct mpq_manager *m, int own_m, const char *name,
		    const struct mpq_manager_queue_attr *attr, int kind,
		    struct mpq_queue **out)
{
	static const struct mpq_manager_queue_attr dflt;
	struct px_queue *p;
	int err;

	if (!m || !out || !mpq__mgr_name_ok(name))
		return -EINVAL;
	*out = NULL;
	if (!attr)
		attr = &dflt;
	p = mpq__px_new(sizeof(*p), m, kind, name);
	if (!p)
		return -ENOMEM;
	p->pid = getpid();
	err = mpq_manager_queue(m, name, attr, &p->q);
	if (!err) {
		p->c.num = attr->maxsize;
		p->c.lease_ns = attr->lease_ns;
		p->c.max_deliveries = attr->max_deliveries;
		err = mpq_ext_queue_new(out, &pxq_ops, p);
	}
	return mpq__px_opened(p, own_m, err, pxq_free);
}

MPQ_NET_EXPORT int mpq_manager_queue_open(struct mpq_manager *m,
					  const char *name,
					  const struct mpq_manager_queue_attr *attr,
					  struct mpq_queue **out)
{
	return pxq_open(m, 0, name, attr, PX_QUEUE, out);
}

MPQ_NET_EXPORT int mpq_manager_joinable_queue_open(
	struct mpq_manager *m, const char *name,
	const struct mpq_manager_queue_attr *attr, struct mpq_queue **out)
{
	return pxq_open(m, 0, name, attr, PX_JQUEUE, out);
}

/* ------------------------------------------------------------------ */
/* Lock and RLock */

static int pxl_acquire(void *obj, int64_t timeout_ns)
{
	struct px_lock *p = obj;

	/* A Lock its holder takes again: as the local one (the server
	 * would make it wait for its own lease to run out). */
	if (p->c.kind == PX_LOCK && mpq_manager_lock_token(p->l))
		return timeout_ns == 0 ? -EAGAIN : -EDEADLK;
	return mpq_manager_lock_acquire(p->l, timeout_ns);
}

static int pxl_release(void *obj)
{
	struct px_lock *p = obj;
	int locked;

	if (!mpq_manager_lock_token(p->l)) {
		/* Not ours: -EINVAL for a free Lock, as locally. */
		if (p->c.kind == PX_RLOCK)
			return -EPERM;
		locked = mpq__mgr_lock_locked(p->l);
		return locked < 0 ? locked : locked ? -EPERM : -EINVAL;
	}
	return mpq_manager_lock_release(p->l);
}

static int pxl_consistent(void *obj)
{
	return mpq_manager_lock_consistent(((struct px_lock *)obj)->l);
}

static int pxl_locked(void *obj)
{
	return mpq__mgr_lock_locked(((struct px_lock *)obj)->l);
}

static int pxl_owned(void *obj)
{
	return mpq_manager_lock_token(((struct px_lock *)obj)->l) != 0;
}

static void pxl_free(void *obj)
{
	struct px_lock *p = obj;

	if (!p)
		return;
	mpq_manager_lock_free(p->l);
	mpq__px_common_fini(&p->c);
	free(p);
}

static const struct mpq_ext_lock_ops pxl_ops = {
	.size = sizeof(struct mpq_ext_lock_ops),
	.acquire = pxl_acquire,
	.release = pxl_release,
	.consistent = pxl_consistent,
	.locked = pxl_locked,
	.owned = pxl_owned,
	.export = mpq__px_export,
	.free = pxl_free,
};

static int pxl_open(struct mpq_manager *m, int own_m, const char *name,
		    int64_t lease_ns, int kind, struct mpq_lock **out)
{
	struct px_lock *p;
	int err;

	if (!m || !out || !mpq__mgr_name_ok(name) || lease_ns < 0)
		return -EINVAL;
	*out = NULL;
	p = mpq__px_new(sizeof(*p), m, kind, name);
	if (!p)
		return -ENOMEM;
	err = mpq_manager_lock(m, name, kind == PX_RLOCK, lease_ns, &p->l);
	if (!err) {
		p->c.lease_ns = lease_ns;
		err = mpq_ext_lock_new(out, &pxl_ops, p, kind == PX_RLOCK);
	}
	return mpq__px_opened(p, own_m, err, pxl_free);
}

MPQ_NET_EXPORT int mpq_manager_lock_open(struct mpq_manager *m,
					 const char *name, int64_t lease_ns,
					 struct mpq_lock **out)
{
	return pxl_open(m, 0, name, lease_ns, PX_LOCK, out);
}

MPQ_NET_EXPORT int mpq_manager_rlock_open(struct mpq_manager *m,
					  const char *name, int64_t lease_ns,
					  struct mpq_lock **out)
{
	return pxl_open(m, 0, name, lease_ns, PX_RLOCK, out);
}

/* A Condition's or Value's own lock as a struct mpq_lock *: ml is theirs
 * (mpq_manager_lock_free leaves it alone), this handle only uses it. */
int mpq__px_lock_wrap(struct mpq_manager *m, struct mpq_manager_lock *ml,
		      const char *name, int64_t lease_ns, struct mpq_lock **out)
{
	struct px_lock *p = mpq__px_new(sizeof(*p), m, PX_RLOCK, name);
	int err;

	if (!p)
		return -ENOMEM;
	p->l = ml;
	p->c.lease_ns = lease_ns;
	err = mpq_ext_lock_new(out, &pxl_ops, p, 1);
	if (err) {
		p->l = NULL;
		pxl_free(p);
	}
	return err;
}

struct mpq_manager_lock *mpq__px_lock_of(struct mpq_lock *l)
{
	struct px_lock *p = mpq_ext_lock_obj(l, &pxl_ops);

	return p ? p->l : NULL;
}

/* ------------------------------------------------------------------ */
/* Semaphore */

static int pxs_acquire(void *obj, int64_t timeout_ns)
{
	return mpq_manager_sem_acquire(((struct px_sem *)obj)->s, timeout_ns);
}

static int pxs_release(void *obj)
{
	return mpq_manager_sem_release(((struct px_sem *)obj)->s);
}

static void pxs_free(void *obj)
{
	struct px_sem *p = obj;

	if (!p)
		return;
	mpq_manager_sem_free(p->s);
	mpq__px_common_fini(&p->c);
	free(p);
}

static const struct mpq_ext_sem_ops pxs_ops = {
	.size = sizeof(struct mpq_ext_sem_ops),
	.acquire = pxs_acquire,
	.release = pxs_release,
	.export = mpq__px_export,
	.free = pxs_free,
};

static int pxs_open(struct mpq_manager *m, int own_m, const char *name,
		    unsigned int value, int64_t lease_ns, struct mpq_sem **out)
{
	struct px_sem *p;
	int err;

	if (!m || !out || !mpq__mgr_name_ok(name) || lease_ns < 0)
		return -EINVAL;
	*out = NULL;
	p = mpq__px_new(sizeof(*p), m, PX_SEM, name);
	if (!p)
		return -ENOMEM;
	err = mpq_manager_sem(m, name, value, lease_ns, &p->s);
	if (!err) {
		p->c.num = value;
		p->c.lease_ns = lease_ns;
		err = mpq_ext_sem_new(out, &pxs_ops, p);
	}
	return mpq__px_opened(p, own_m, err, pxs_free);
}

MPQ_NET_EXPORT int mpq_manager_sem_open(struct mpq_manager *m,
					const char *name, unsigned int value,
					int64_t lease_ns, struct mpq_sem **out)
{
	return pxs_open(m, 0, name, value, lease_ns, out);
}

/* ------------------------------------------------------------------ */
/* Import, in a spawned child */

static int px_parse_fd(const char *s, int *fd)
{
	long v = 0;

	if (!*s)
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		v = v * 10 + (*s - '0');
		if (v > INT_MAX)
			return -EINVAL;
	}
	*fd = (int)v;
	return 0;
}

static int px_import(int kind, const char *handle, void *out)
{
	char buf[4096], *f[PX_FIELDS], *p, *end;
	const char *rest = handle + strlen(PX_PREFIX);
	struct mpq_manager *m;
	struct mpq_manager_queue_attr qa = { 0 };
	struct px_fields pf;
	int fd, i, k, err;
	ssize_t n;

	for (k = 0; k < PX_NKINDS; k++) {
		size_t l = strlen(px_kind_name[k]);

		if (!strncmp(rest, px_kind_name[k], l) &&
		    !strncmp(rest + l, ":fd=", 4))
			break;
	}
	if (k == PX_NKINDS ||
	    px_parse_fd(rest + strlen(px_kind_name[k]) + 4, &fd))
		return -EINVAL;
	if (px_ext_kind[k] != kind)
		return -EINVAL;
	n = pread(fd, buf, sizeof(buf) - 1, 0);
	if (n < 0)
		return errno == EBADF ? -EBADF : -EINVAL;
	buf[n] = 0;
	/* Fields, each NUL-terminated; anything else is not ours. */
	p = buf;
	end = buf + n;
	for (i = 0; i < PX_FIELDS; i++) {
		if (p >= end)
			return -EINVAL;
		f[i] = p;
		p += strlen(p) + 1;
	}
	if (strcmp(f[0], PX_MAGIC) || atoi(f[1]) < 0 ||
	    atoi(f[1]) >= PX_NKINDS)
		return -EINVAL;
	/* JoinableQueue's handle says "queue": the memfd tells which. */
	i = atoi(f[1]);
	if (px_ext_kind[i] != px_ext_kind[k])
		return -EINVAL;
	k = i;
	/* Not passed on to what this process executes, as libmpq's own. */
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	err = mpq_manager_connect(&m, f[2], f[3], 0);
	if (err) {
		explicit_bzero(buf, sizeof(buf));	/* the authkey */
		return err;
	}
	pf.name = f[4];
	pf.num = strtoull(f[5], NULL, 10);
	pf.lease_ns = strtoll(f[6], NULL, 10);
	pf.count = strtoul(f[7], NULL, 10);
	pf.extra = strtoul(f[8], NULL, 10);
	switch (k) {
	case PX_QUEUE:
	case PX_JQUEUE:
		qa.maxsize = pf.num;
		qa.lease_ns = pf.lease_ns;
		qa.max_deliveries = pf.count;
		err = pxq_open(m, 1, pf.name, &qa, k, out);
		break;
	case PX_LOCK:
	case PX_RLOCK:
		err = pxl_open(m, 1, pf.name, pf.lease_ns, k, out);
		break;
	case PX_SEM:
		err = pxs_open(m, 1, pf.name, pf.num, pf.lease_ns, out);
		break;
	default:
		err = mpq__px_sync_import(m, k, &pf, out);
	}
	explicit_bzero(buf, sizeof(buf));
	if (err)
		mpq_manager_free(m);
	return err;
}

static const struct mpq_ext_importer px_importer = {
	.prefix = PX_PREFIX,
	.import = px_import,
};

/*
 * At load: a spawned child runs the same program, so mpq_queue_import()
 * there finds the importer before main() runs; priority 101, as
 * MPQ_TARGET's, so that it is there before a constructor without one
 * calls mpq_init(), which runs the child's target. (libmpq-net.a is one
 * prelinked object: a program that uses any of it has this too.)
 */
__attribute__((constructor(101))) static void px_register(void)
{
	mpq_ext_register(&px_importer);
}

/* ------------------------------------------------------------------ */
/* Leases: a long task or hold renews them, as with the manager's types. */

MPQ_NET_EXPORT int mpq_manager_queue_renew(struct mpq_queue *q)
{
	struct px_queue *p = mpq_ext_queue_obj(q, &pxq_ops);
	unsigned int i;
	int err, ret = 0;

	if (!p)
		return -EINVAL;
	pxq_forked(p);
	/* Messages handed out and not done, and those held back here. */
	for (i = 0; i < p->nheld; i++) {
		err = mpq_manager_msg_renew(p->q, &p->held[i]);
		if (err)
			ret = err;
	}
	/* (A plain Queue's were taken for good: no lease to renew.) */
	for (i = 0; i < p->nstash && p->c.kind == PX_JQUEUE; i++) {
		err = mpq_manager_msg_renew(p->q, &p->stash[i]);
		if (err)
			ret = err;
	}
	return ret;
}

MPQ_NET_EXPORT int mpq_manager_lock_renew_lease(struct mpq_lock *l)
{
	struct px_lock *p = mpq_ext_lock_obj(l, &pxl_ops);

	return p ? mpq_manager_lock_renew(p->l) : -EINVAL;
}

MPQ_NET_EXPORT int mpq_manager_sem_renew_lease(struct mpq_sem *s)
{
	struct px_sem *p = mpq_ext_sem_obj(s, &pxs_ops);

	return p ? mpq_manager_sem_renew(p->s) : -EINVAL;
}
