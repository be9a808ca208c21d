/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR MIT */
/*
 * mpq: kernel-assisted multiprocessing objects.
 *
 * The one ABI between the mpq kernel module (/dev/mpq) and libmpq. Every
 * structure here is made of fixed-size types; reserved fields must be zero
 * and unknown flags are refused, so that later versions can give them a
 * meaning. Ioctl argument structures lead with their own size, filled in
 * by the caller, and are read with copy_struct_from_user(): an older
 * caller passes a shorter struct, a newer one a longer one whose extra
 * bytes must be zero.
 *
 * A queue is a bounded multi-producer multi-consumer ring of fixed-size
 * slots in memory shared by every process that maps the queue fd. The
 * layout of that memory is part of this ABI (struct mpq_queue_shm and
 * struct mpq_slot) because the kernel reads it to answer poll().
 */
#ifndef _UAPI_LINUX_MPQ_H
#define _UAPI_LINUX_MPQ_H

#include <linux/types.h>
#include <linux/ioctl.h>

#define MPQ_DEVICE_NAME		"mpq"
#define MPQ_IOC_MAGIC		0xD9

/* Flags for MPQ_IOC_QUEUE_CREATE. */
#define MPQ_CREATE_CLOEXEC	(1U << 0)	/* the new fd is O_CLOEXEC */
#define MPQ_CREATE_FLAGS	(MPQ_CREATE_CLOEXEC)

/**
 * struct mpq_queue_create - argument of MPQ_IOC_QUEUE_CREATE
 * @size:	sizeof(struct mpq_queue_create) as the caller knows it
 * @flags:	MPQ_CREATE_* flags
 * @capacity:	messages the queue holds; rounded up to a power of two, at
 *		least 2
 * @msg_max:	largest message, in bytes
 * @reserved:	must be zero
 *
 * The ioctl returns a new queue fd. mmap() that fd, MAP_SHARED, offset 0,
 * with the length that MPQ_IOC_QUEUE_INFO reports.
 */
struct mpq_queue_create {
	__u32 size;
	__u32 flags;
	__u32 capacity;
	__u32 msg_max;
	__u64 reserved[4];
};

/**
 * struct mpq_queue_info - argument of MPQ_IOC_QUEUE_INFO
 * @size:	in: sizeof(struct mpq_queue_info) as the caller knows it
 * @flags:	out: zero for now
 * @capacity:	out: slots in the ring, a power of two
 * @msg_max:	out: largest message, in bytes
 * @slot_size:	out: bytes per slot (struct mpq_slot and its data)
 * @data_off:	out: offset of slot 0 in the mapping
 * @map_size:	out: the length to mmap
 * @id:		out: system-wide id of the object
 * @reserved:	out: zero
 *
 * The geometry the kernel keeps is authoritative: the copy at the top of
 * the shared memory can be overwritten by any participant.
 */
struct mpq_queue_info {
	__u32 size;
	__u32 flags;
	__u32 capacity;
	__u32 msg_max;
	__u32 slot_size;
	__u32 data_off;
	__u64 map_size;
	__u64 id;
	__u64 reserved[4];
};

/* Bits of mpq_queue_shm.poll_wanted and the MPQ_IOC_QUEUE_WAKE argument. */
#define MPQ_POLL_IN		(1U << 0)	/* a poller waits to read */
#define MPQ_POLL_OUT		(1U << 1)	/* a poller waits to write */
#define MPQ_POLL_ALL		(MPQ_POLL_IN | MPQ_POLL_OUT)

/* On /dev/mpq: returns a new queue fd, or -errno. */
#define MPQ_IOC_QUEUE_CREATE	_IOW(MPQ_IOC_MAGIC, 0x01, struct mpq_queue_create)
/* On a queue fd: reports its geometry. */
#define MPQ_IOC_QUEUE_INFO	_IOWR(MPQ_IOC_MAGIC, 0x02, struct mpq_queue_info)
/*
 * On a queue fd: clears the given MPQ_POLL_* bits of poll_wanted and wakes
 * the pollers waiting for them. Userspace calls it after a put (MPQ_POLL_IN)
 * or a get (MPQ_POLL_OUT) that found the bit set.
 */
#define MPQ_IOC_QUEUE_WAKE	_IO(MPQ_IOC_MAGIC, 0x03)

#define MPQ_QUEUE_MAGIC		0x6d707151U	/* "Qqpm" */
#define MPQ_QUEUE_VERSION	1U

/*
 * Layout of a queue's shared memory. The producers' and the consumers'
 * positions sit 128 bytes apart (two cache lines: the adjacent-line
 * prefetcher pairs lines) so that a producer and a consumer running at the
 * same time do not bounce one line between their CPUs.
 *
 * The ring follows Dmitry Vyukov's bounded MPMC queue: slot i starts with
 * seq == i. A producer that claims position p (moving tail from p to p+1)
 * writes the message and then publishes seq = p + 1; a consumer that claims
 * position p (head p to p+1) reads it and then frees the slot with
 * seq = p + capacity, which is the position of the next producer to use it.
 * The capacity is a power of two and at least 2: with a single slot a full
 * slot (seq p + 1) would look free to the producer of position p + 1.
 */
struct mpq_queue_shm {
	/* Informational copy of the geometry, written once at creation. */
	__u32 magic;
	__u32 version;
	__u32 capacity;
	__u32 msg_max;
	__u32 slot_size;
	__u32 data_off;
	__u64 map_size;
	__u8 __pad0[128 - 32];

	/* Next position a producer claims. */
	__u64 tail;
	__u8 __pad1[128 - 8];

	/* Next position a consumer claims. */
	__u64 head;
	__u8 __pad2[128 - 8];

	/*
	 * Sleeping. nonempty and nonfull are futex words: bit 0
	 * (MPQ_FUTEX_SLEEPING) says that someone sleeps on the word or is
	 * about to, the other bits count wake-ups. A sleeper sets the bit
	 * before its last look at the ring; a publisher that finds it set
	 * clears it, bumps the count and wakes every sleeper, and later
	 * publishers find it clear and make no system call until someone
	 * sleeps again. poll_wanted holds MPQ_POLL_* bits that the kernel
	 * sets when a poller may sleep.
	 */
	__u32 nonempty;
	__u32 nonfull;
	__u32 poll_wanted;
	__u32 __pad3[5];
};

/*
 * Header of each slot; msg_max bytes of data follow, and slots are packed
 * (8-byte aligned): a batch of small messages fills whole cache lines. seq
 * holds the low 32 bits of a position; positions are compared modulo 2^32,
 * which is unambiguous because the capacity is below 2^31.
 */
struct mpq_slot {
	__u32 seq;
	__u32 len;
};

#define MPQ_SLOT_ALIGN		8
#define MPQ_FUTEX_SLEEPING	1U

#endif /* _UAPI_LINUX_MPQ_H */
