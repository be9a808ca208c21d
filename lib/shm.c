// SPDX-License-Identifier: MIT
/*
 * mpq_shm: Python's multiprocessing.shared_memory.SharedMemory. A named
 * block of bytes that unrelated processes attach to by name.
 *
 * With the module the name lives in the kernel, in the caller's IPC
 * namespace, checked like a file (owner, group, mode). Without it the
 * block is a POSIX shared memory file, /dev/shm/<name>, as in Python. On
 * both a name keeps its block until it is unlinked or, unless persistent,
 * until the program that made it is gone (anchor.c): close() keeps it, as
 * Python does, and a crashed program leaves nothing behind.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "internal.h"

struct mpq_shm {
	struct mpq_block block;
	char name[MPQ_NAME_MAX + 1];
	int backend;
	int closed;
};

static int mpq_shm_name_ok(const char *name)
{
	size_t n;

	if (!name)
		return -EINVAL;
	n = strnlen(name, MPQ_NAME_MAX + 1);
	if (n > MPQ_NAME_MAX)
		return -ENAMETOOLONG;
	if (!n || strchr(name, '/'))
		return -EINVAL;
	return 0;
}

static int mpq_shm_attr_check(const struct mpq_shm_attr *attr)
{

	if (attr->flags & ~MPQ_SHM_ATTR_PERSIST || attr->mode & ~0777U)
		return -EINVAL;
	if (!mpq_all_zero(attr->__reserved, sizeof(attr->__reserved)))
		return -EINVAL;
	return 0;
}

/* A fresh name as Python makes one: a prefix and random hex. */
static void mpq_shm_random_name(char *buf, size_t len)
{
	uint64_t r = 0;

	if (getrandom(&r, sizeof(r), 0) != sizeof(r))
		r = (uint64_t)mpq_now_ns() ^ ((uint64_t)getpid() << 32);
	snprintf(buf, len, "mpq_%016llx", (unsigned long long)r);
}

static int mpq_shm_open_block(struct mpq_shm **out, const char *name,
			      size_t size, uint32_t flags,
			      const struct mpq_shm_attr *attr)
{
	struct mpq_shm *s;
	int ret;

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->backend = mpq_backend_resolve(attr->backend);
	if (s->backend < 0) {
		ret = s->backend;
		goto err;
	}
	if (attr->flags & MPQ_SHM_ATTR_PERSIST)
		flags |= MPQ_SHM_PERSIST;
	ret = mpq_block_named(&s->block, name, size, flags,
			      attr->mode ? attr->mode : 0600, s->backend);
	if (ret)
		goto err;
	strcpy(s->name, name);
	*out = s;
	return 0;
err:
	free(s);
	return ret;
}

MPQ_EXPORT int mpq_shm_new(struct mpq_shm **out, const char *name,
			   size_t size, const struct mpq_shm_attr *attr)
{
	static const struct mpq_shm_attr defaults;
	char fresh[32];
	int ret, tries;

	if (!out)
		return -EINVAL;
	if (!attr)
		attr = &defaults;
	ret = mpq_shm_attr_check(attr);
	if (ret)
		return ret;
	if (!size)
		return -EINVAL;
	if (size > MPQ_BLOCK_MAX_BYTES)
		return -E2BIG;
	if (name) {
		ret = mpq_shm_name_ok(name);
		if (ret)
			return ret;
		return mpq_shm_open_block(out, name, size,
					  MPQ_SHM_CREAT | MPQ_SHM_EXCL, attr);
	}
	for (tries = 0; tries < 16; tries++) {
		mpq_shm_random_name(fresh, sizeof(fresh));
		ret = mpq_shm_open_block(out, fresh, size,
					 MPQ_SHM_CREAT | MPQ_SHM_EXCL, attr);
		if (ret != -EEXIST)
			break;
	}
	return ret;
}

MPQ_EXPORT int mpq_shm_open(struct mpq_shm **out, const char *name,
			    const struct mpq_shm_attr *attr)
{
	static const struct mpq_shm_attr defaults;
	int ret;

	if (!out)
		return -EINVAL;
	if (!attr)
		attr = &defaults;
	ret = mpq_shm_attr_check(attr);
	if (!ret)
		ret = mpq_shm_name_ok(name);
	if (!ret && attr->flags & MPQ_SHM_ATTR_PERSIST)
		ret = -EINVAL;
	if (ret)
		return ret;
	return mpq_shm_open_block(out, name, 0, 0, attr);
}

MPQ_EXPORT void *mpq_shm_buf(struct mpq_shm *s)
{
	return s && !s->closed ? s->block.map : NULL;
}

MPQ_EXPORT size_t mpq_shm_size(struct mpq_shm *s)
{
	return s ? (size_t)s->block.bytes : 0;
}

MPQ_EXPORT const char *mpq_shm_name(struct mpq_shm *s)
{
	return s ? s->name : NULL;
}

MPQ_EXPORT int mpq_shm_fileno(struct mpq_shm *s)
{
	if (!s)
		return -EINVAL;
	return s->closed ? -EBADF : s->block.fd;
}

MPQ_EXPORT int mpq_shm_close(struct mpq_shm *s)
{
	if (!s)
		return -EINVAL;
	if (s->closed)
		return -EBADF;
	mpq_block_free(&s->block);
	s->closed = 1;
	return 0;
}

MPQ_EXPORT int mpq_shm_unlink(struct mpq_shm *s)
{
	if (!s)
		return -EINVAL;
	return mpq_block_unlink(s->name, s->backend);
}

MPQ_EXPORT int mpq_shm_unlink_name(const char *name, int backend)
{
	int ret = mpq_shm_name_ok(name);

	return ret ? ret : mpq_block_unlink(name, backend);
}

MPQ_EXPORT void mpq_shm_free(struct mpq_shm *s)
{
	if (!s)
		return;
	if (!s->closed)
		mpq_block_free(&s->block);
	free(s);
}
