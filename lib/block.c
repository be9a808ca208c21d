// SPDX-License-Identifier: MIT
/*
 * Blocks: the shared memory under locks, semaphores, events, barriers,
 * Values and SharedMemory. A block is one fd and one MAP_SHARED mapping of
 * it, made by either backend:
 *   kmod   a shared-memory object of the module (MPQ_IOC_SHM_OPEN), which
 *          frees it with its last fd and mapping, or its name, and can
 *          name it;
 *   memfd  a memfd (anonymous), or a POSIX shared memory file under
 *          /dev/shm (named: SharedMemory without the module).
 * A named block lives until it is unlinked or its program ends, unless
 * persistent (anchor.c).
 * Both are shmem, so the futex words that the objects keep in them work
 * across processes. A memfd is sealed at its size: a participant that
 * could shrink it would turn everyone else's next access into a SIGBUS.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define MPQ_BLOCK_SEALS		(F_SEAL_SHRINK | F_SEAL_GROW)

static uint64_t mpq_block_page(void)
{
	return (uint64_t)sysconf(_SC_PAGESIZE);
}

static int mpq_block_map(struct mpq_block *b)
{
	void *map = mmap(NULL, b->map_size, PROT_READ | PROT_WRITE,
			 MAP_SHARED, b->fd, 0);

	if (map == MAP_FAILED)
		return -errno;
	b->map = map;
	return 0;
}

/* The geometry of a module block, from the module (never from the block). */
static int mpq_block_kmod_info(struct mpq_block *b)
{
	struct mpq_shm_info info = { .size = sizeof(info) };

	if (ioctl(b->fd, MPQ_IOC_SHM_INFO, &info) < 0)
		return -errno;
	b->bytes = info.bytes;
	b->map_size = info.map_size;
	b->id = info.id;
	b->backend = MPQ_BACKEND_KMOD;
	return 0;
}

/*
 * A memfd or /dev/shm file: its size is the block's. Without the module,
 * the id (for tracers) is the file's inode number, unique among live
 * shmem files, with the top bit set as for memfd queues (probes.h).
 */
static int mpq_block_file_info(struct mpq_block *b, int need_seals)
{
	struct stat st;
	int seals;

	if (fstat(b->fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || st.st_size <= 0)
		return -EINVAL;
	if (need_seals) {
		seals = fcntl(b->fd, F_GET_SEALS);
		if (seals < 0 || (seals & MPQ_BLOCK_SEALS) != MPQ_BLOCK_SEALS)
			return -EINVAL;
	}
	b->bytes = (uint64_t)st.st_size;
	b->map_size = (b->bytes + mpq_block_page() - 1) & ~(mpq_block_page() - 1);
	b->id = 1ULL << 63 | (uint64_t)st.st_ino;
	b->backend = MPQ_BACKEND_MEMFD;
	return 0;
}

/* Undo a half-made block: nothing of it stays open or mapped. */
static int mpq_block_undo(struct mpq_block *b, int ret)
{
	mpq_block_free(b);
	return ret;
}

/*
 * Undo a block that this call made under a name, and the name: closing
 * frees a module block and its name unless persistent (or someone opened
 * it meanwhile), a /dev/shm file lives on until unlinked. Either way
 * another create of the name must not find it.
 */
static int mpq_block_undo_named(struct mpq_block *b, const char *name,
				uint32_t flags, int ret)
{
	mpq_block_undo(b, ret);
	if ((flags & (MPQ_SHM_CREAT | MPQ_SHM_EXCL)) ==
	    (MPQ_SHM_CREAT | MPQ_SHM_EXCL))
		mpq_block_unlink(name, b->backend);
	return ret;
}

static int mpq_block_kmod_open(struct mpq_block *b, uint64_t bytes,
			       const char *name, uint32_t flags, uint32_t mode,
			       uint32_t kind)
{
	struct mpq_shm_open args = {
		.size = sizeof(args),
		.flags = MPQ_CREATE_CLOEXEC | flags,
		.bytes = bytes,
		.name = (uint64_t)(uintptr_t)name,
		.mode = mode,
		.kind = kind,
	};
	int ret;

	/* A name made goes with the program's /dev/mpq file (anchor.c). */
	if (name && flags & MPQ_SHM_CREAT)
		ret = mpq_anchor_dev_ioctl(MPQ_IOC_SHM_OPEN, &args);
	else
		ret = mpq_kmod_dev_ioctl(MPQ_IOC_SHM_OPEN, &args);
	if (ret < 0)
		return ret;
	b->fd = ret;
	b->backend = MPQ_BACKEND_KMOD;
	ret = mpq_block_kmod_info(b);
	if (!ret)
		ret = mpq_block_map(b);
	if (ret && name)
		return mpq_block_undo_named(b, name, flags, ret);
	return ret ? mpq_block_undo(b, ret) : 0;
}

static int mpq_block_memfd_new(struct mpq_block *b, uint64_t bytes,
			       uint32_t kind)
{
	char name[32];
	int ret;

	snprintf(name, sizeof(name), "mpq-shm-%u", kind);
	b->fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (b->fd < 0)
		return -errno;
	if (ftruncate(b->fd, (off_t)bytes) < 0 ||
	    fcntl(b->fd, F_ADD_SEALS, MPQ_BLOCK_SEALS | F_SEAL_SEAL) < 0) {
		ret = -errno;
		goto err;
	}
	ret = mpq_block_file_info(b, 1);
	if (!ret)
		ret = mpq_block_map(b);
	if (!ret)
		return 0;
err:
	return mpq_block_undo(b, ret);
}

/*
 * A new anonymous block of bytes (zeroed), by the backend asked for (or
 * the default). kind is what the module's listing shows.
 * Returns 0, -EINVAL, -ENODEV (kmod asked for, no module), -E2BIG,
 * -ENOMEM, -EMFILE.
 */
int mpq_block_new(struct mpq_block *b, uint64_t bytes, int backend,
		  uint32_t kind)
{
	memset(b, 0, sizeof(*b));
	b->fd = -1;
	if (!bytes)
		return -EINVAL;
	if (bytes > MPQ_BLOCK_MAX_BYTES)
		return -E2BIG;
	backend = mpq_backend_resolve(backend);
	if (backend < 0)
		return backend;
	if (backend == MPQ_BACKEND_KMOD)
		return mpq_block_kmod_open(b, bytes, NULL, 0, 0, kind);
	return mpq_block_memfd_new(b, bytes, kind);
}

/*
 * Map the block behind fd (a module block or a sealed memfd), which the
 * caller keeps: the block holds a duplicate. Returns 0, -EBADF, -EINVAL
 * (not a block), -ENOMEM.
 */
int mpq_block_from_fd(struct mpq_block *b, int fd)
{
	int ret;

	memset(b, 0, sizeof(*b));
	b->fd = -1;
	if (fd < 0)
		return -EBADF;
	b->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (b->fd < 0)
		return -errno;
	ret = mpq_block_kmod_info(b);
	if (ret == -ENOTTY || ret == -EINVAL)
		ret = mpq_block_file_info(b, 1);
	if (!ret)
		ret = mpq_block_map(b);
	return ret ? mpq_block_undo(b, ret) : 0;
}

/*
 * Make /dev/shm/<name> of bytes, exclusively, and never a name without
 * its size or without its registration: an unnamed file of /dev/shm
 * (O_TMPFILE), sized, registered with the program's tracker unless
 * persistent, then linked under the name, which fails if it is taken. A
 * creator killed at any point leaves either nothing or a whole block that
 * its tracker knows. Returns the fd or -errno; -EOPNOTSUPP where
 * O_TMPFILE or /proc is missing (the caller falls back to shm_open).
 */
static int mpq_block_shm_create(const char *name, uint64_t bytes,
				uint32_t flags, uint32_t mode)
{
	char path[MPQ_NAME_MAX + 16], self[32];
	struct stat st;
	int fd, ret;

	fd = open("/dev/shm", O_TMPFILE | O_RDWR | O_CLOEXEC, mode);
	if (fd < 0)
		return errno == EISDIR || errno == EOPNOTSUPP ||
		       errno == EINVAL ? -EOPNOTSUPP : -errno;
	if (ftruncate(fd, (off_t)bytes) < 0 || fstat(fd, &st) < 0) {
		ret = -errno;
		goto err;
	}
	if (!(flags & MPQ_SHM_PERSIST)) {
		ret = mpq_anchor_track_register(name, &st);
		if (ret)
			goto err;
	}
	snprintf(path, sizeof(path), "/dev/shm/%s", name);
	snprintf(self, sizeof(self), "/proc/self/fd/%d", fd);
	if (linkat(AT_FDCWD, self, AT_FDCWD, path, AT_SYMLINK_FOLLOW) == 0)
		return fd;
	ret = errno == ENOENT && access("/proc/self/fd", F_OK) ?
	      -EOPNOTSUPP : -errno;
	if (!(flags & MPQ_SHM_PERSIST))
		mpq_anchor_track_unregister(name, &st);
err:
	close(fd);
	return ret;
}

/*
 * A named block: the module's (named in the IPC namespace) or, without
 * it, a POSIX shared memory file /dev/shm/<name>. flags are MPQ_SHM_*;
 * without CREAT an existing block is opened and bytes is ignored.
 */
int mpq_block_named(struct mpq_block *b, const char *name, uint64_t bytes,
		    uint32_t flags, uint32_t mode, int backend)
{
	char path[MPQ_NAME_MAX + 2];
	int oflags = O_RDWR | O_CLOEXEC, ret;

	memset(b, 0, sizeof(*b));
	b->fd = -1;
	if (flags & MPQ_SHM_CREAT && (!bytes || bytes > MPQ_BLOCK_MAX_BYTES))
		return bytes ? -E2BIG : -EINVAL;
	backend = mpq_backend_resolve(backend);
	if (backend < 0)
		return backend;
	if (backend == MPQ_BACKEND_KMOD)
		return mpq_block_kmod_open(b, bytes, name, flags, mode,
					   MPQ_SHM_KIND_SHM);

	b->backend = MPQ_BACKEND_MEMFD;
	if ((flags & (MPQ_SHM_CREAT | MPQ_SHM_EXCL)) ==
	    (MPQ_SHM_CREAT | MPQ_SHM_EXCL)) {
		ret = mpq_block_shm_create(name, bytes, flags, mode);
		if (ret >= 0) {
			b->fd = ret;
			ret = mpq_block_file_info(b, 0);
			if (!ret)
				ret = mpq_block_map(b);
			if (!ret)
				return 0;
			goto err;
		}
		if (ret != -EOPNOTSUPP)
			return ret;
	}

	snprintf(path, sizeof(path), "/%s", name);
	if (flags & MPQ_SHM_CREAT)
		oflags |= O_CREAT;
	if (flags & MPQ_SHM_EXCL)
		oflags |= O_EXCL;
	b->fd = shm_open(path, oflags, mode);
	if (b->fd < 0)
		return -errno;
	/*
	 * A block just created has size 0: give it its size. One that
	 * someone else is creating may still be 0: that is -EAGAIN.
	 */
	if (flags & MPQ_SHM_CREAT) {
		struct stat st;

		if (fstat(b->fd, &st) == 0 && st.st_size == 0 &&
		    ftruncate(b->fd, (off_t)bytes) < 0) {
			ret = -errno;
			goto err;
		}
		/* Without O_TMPFILE: a short window unregistered. */
		if (oflags & O_EXCL && !(flags & MPQ_SHM_PERSIST)) {
			ret = mpq_anchor_track_register(name, &st);
			if (ret)
				goto err;
		}
	}
	ret = mpq_block_file_info(b, 0);
	if (ret == -EINVAL)
		ret = -EAGAIN;
	if (!ret)
		ret = mpq_block_map(b);
	if (!ret)
		return 0;
err:
	return mpq_block_undo_named(b, name, flags, ret);
}

static int stat_shm(const char *name, struct stat *st)
{
	char path[MPQ_NAME_MAX + 16];

	snprintf(path, sizeof(path), "/dev/shm/%s", name);
	return stat(path, st);
}

/* Remove a name: the module's, or the /dev/shm file. */
int mpq_block_unlink(const char *name, int backend)
{
	char path[MPQ_NAME_MAX + 2];
	struct mpq_shm_unlink args = {
		.size = sizeof(args),
		.name = (uint64_t)(uintptr_t)name,
	};
	struct stat st;
	int ret;

	backend = mpq_backend_resolve(backend);
	if (backend < 0)
		return backend;
	if (backend == MPQ_BACKEND_KMOD) {
		ret = mpq_kmod_dev_ioctl(MPQ_IOC_SHM_UNLINK, &args);
		return ret < 0 ? ret : 0;
	}
	/* The tracker forgets it: by its file, whoever registered it. */
	snprintf(path, sizeof(path), "/%s", name);
	if (stat_shm(name, &st) < 0)
		st.st_ino = 0;
	if (shm_unlink(path) < 0)
		return -errno;
	if (st.st_ino)
		mpq_anchor_track_unregister(name, &st);
	return 0;
}

void mpq_block_free(struct mpq_block *b)
{
	if (b->map)
		munmap(b->map, b->map_size);
	if (b->fd >= 0)
		close(b->fd);
	b->map = NULL;
	b->fd = -1;
}
