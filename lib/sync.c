// SPDX-License-Identifier: MIT
/*
 * What the synchronisation objects share: a block of shared memory that
 * starts with a header (see sync.h), made by either backend, checked when
 * it comes from another process, and handed to spawned children as a
 * handle ("mpq-lock:fd=7").
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sync.h"

/* Locks spin less than queues: a lock is held for a few instructions. */
#define MPQ_SYNC_DEFAULT_SPIN_NS	20000

/* The spin time to use for a requested one: 0 default, < 0 never. */
int64_t mpq_sync_spin(int64_t spin_ns)
{
	if (spin_ns)
		return spin_ns;
	/* Spinning only helps when the holder runs on another CPU. */
	return sysconf(_SC_NPROCESSORS_ONLN) > 1 ? MPQ_SYNC_DEFAULT_SPIN_NS : -1;
}

int mpq_lock_attr_get(const struct mpq_lock_attr **attr)
{
	static const struct mpq_lock_attr defaults;

	if (!*attr)
		*attr = &defaults;
	if ((*attr)->flags ||
	    !mpq_all_zero((*attr)->__reserved, sizeof((*attr)->__reserved)))
		return -EINVAL;
	return 0;
}

/*
 * Make a block for an object of kind: the header, then records, bytes in
 * all (at least the header). The block is zeroed, so every record starts
 * free.
 */
int mpq_sync_create(struct mpq_sync *s, uint32_t kind, uint32_t flags,
		    const uint32_t param[4], uint64_t bytes, int backend,
		    int64_t spin_ns)
{
	struct mpq_sync_hdr *h;
	int ret;

	memset(s, 0, sizeof(*s));
	if (bytes < sizeof(*h))
		bytes = sizeof(*h);
	ret = mpq_block_new(&s->block, bytes, backend, kind);
	if (ret)
		return ret;
	h = s->block.map;
	h->version = MPQ_SYNC_VERSION;
	h->kind = kind;
	h->flags = flags;
	h->bytes = s->block.bytes;
	memcpy(h->param, param, sizeof(h->param));
	/* The magic last: a block is not one of ours until it is whole. */
	store_release(&h->magic, MPQ_SYNC_MAGIC);
	s->kind = kind;
	s->flags = flags;
	memcpy(s->param, param, sizeof(s->param));
	s->spin_ns = mpq_sync_spin(spin_ns);
	return 0;
}

/*
 * Open the object of kind behind fd (which the caller keeps). Returns 0,
 * -EBADF, -EINVAL (not a block, or not one of this kind), -EUCLEAN (the
 * header is corrupt), -ENOMEM. The caller checks param[] for its kind.
 */
int mpq_sync_open_fd(struct mpq_sync *s, int fd, uint32_t kind)
{
	struct mpq_sync_hdr h;
	int ret;

	memset(s, 0, sizeof(*s));
	ret = mpq_block_from_fd(&s->block, fd);
	if (ret)
		return ret;
	ret = -EINVAL;
	if (s->block.bytes < sizeof(h))
		goto err;
	memcpy(&h, s->block.map, sizeof(h));
	if (h.magic != MPQ_SYNC_MAGIC || h.kind != kind)
		goto err;
	ret = -EUCLEAN;
	if (h.version != MPQ_SYNC_VERSION || h.flags & ~MPQ_SYNC_FLAGS ||
	    h.bytes != s->block.bytes)
		goto err;
	s->kind = kind;
	s->flags = h.flags;
	memcpy(s->param, h.param, sizeof(s->param));
	s->spin_ns = mpq_sync_spin(0);
	return 0;
err:
	mpq_block_free(&s->block);
	return ret;
}

int mpq_sync_import(struct mpq_sync *s, const char *handle, const char *type,
		    uint32_t kind)
{
	int fd, ret;

	memset(s, 0, sizeof(*s));
	s->block.fd = -1;
	ret = mpq_handle_parse(handle, type, &fd);
	if (ret)
		return ret;
	if (fcntl(fd, F_GETFD) < 0)
		return -EBADF;
	ret = mpq_sync_open_fd(s, fd, kind);
	/* As for queues: importable again, not passed on by exec. */
	if (!ret)
		fcntl(fd, F_SETFD, FD_CLOEXEC);
	return ret;
}

int mpq_sync_export(struct mpq_sync *s, const char *type, char *buf,
		    size_t len)
{
	return mpq_handle_export(type, s->block.fd, buf, len);
}

void mpq_sync_free(struct mpq_sync *s)
{
	mpq_block_free(&s->block);
}

void mpq_sync_drop(struct mpq_sync *s)
{
	if (s->block.map)
		mpq_block_free(&s->block);
	free(s);
}
