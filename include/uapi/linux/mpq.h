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
 * A queue is a multi-producer multi-consumer ring of fixed-size slots in
 * memory shared by every process that maps the queue fd, bounded by its
 * maxsize or (MPQ_QUEUE_UNBOUNDED) not bounded: messages past the ring,
 * and messages larger than a slot, live out of line in blobs the queue
 * owns (MPQ_IOC_QUEUE_BLOB). The layout of that memory is part of this
 * ABI (struct mpq_queue_shm and struct mpq_slot) because the kernel reads
 * it to answer poll().
 *
 * Every object is charged to the user who creates it (the creator's
 * fsuid) until it is freed, whoever frees it: its bytes and one object,
 * and one name while it has a persistent name (MPQ_SHM_PERSIST). A create
 * that would take a user past the module parameters max_user_bytes,
 * max_user_objects or max_user_names fails with -EDQUOT, unless the caller
 * has CAP_SYS_RESOURCE in the initial user namespace; -ENOMEM means the
 * memory itself could not be had. /proc/mpq_users shows each user's usage.
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
/* JoinableQueue: puts count unfinished tasks (mpq_queue_shm.unfinished). */
#define MPQ_QUEUE_JOINABLE	(1U << 1)
/* Python's maxsize 0: no bound; capacity is then only the ring's size. */
#define MPQ_QUEUE_UNBOUNDED	(1U << 2)
#define MPQ_QUEUE_CREATE_FLAGS	(MPQ_CREATE_CLOEXEC | MPQ_QUEUE_JOINABLE | \
				 MPQ_QUEUE_UNBOUNDED)

/**
 * struct mpq_queue_create - argument of MPQ_IOC_QUEUE_CREATE
 * @size:	sizeof(struct mpq_queue_create) as the caller knows it
 * @flags:	MPQ_CREATE_CLOEXEC, MPQ_QUEUE_JOINABLE
 * @capacity:	messages the queue holds, exactly (its maxsize); the ring
 *		has that many slots rounded up to a power of two, 2 at least.
 *		With MPQ_QUEUE_UNBOUNDED: the ring's slots, and no bound
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
 * @flags:	out: MPQ_QUEUE_JOINABLE if made so
 * @capacity:	out: slots in the ring, a power of two
 * @msg_max:	out: largest message in a slot, in bytes
 * @slot_size:	out: bytes per slot (struct mpq_slot and its data)
 * @data_off:	out: offset of slot 0 in the mapping
 * @map_size:	out: the length to mmap
 * @id:		out: system-wide id of the object
 * @maxsize:	out: messages it holds at most; 0: unbounded (a kernel
 *		before this field leaves it 0 and bounds by @capacity)
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
	__u32 maxsize;
	__u32 __pad;
	__u64 reserved[3];
};

/**
 * struct mpq_queue_blob - argument of MPQ_IOC_QUEUE_BLOB_*
 * @id:		out (NEW), in (OPEN, DROP): the blob's id in this queue
 * @bytes:	in (NEW), out (OPEN): its size
 * @flags:	MPQ_CREATE_CLOEXEC for the fd returned
 * @reserved:	must be zero
 *
 * A blob is a block of memory (an anonymous SharedMemory block, charged
 * as any) that the queue holds by id until it is dropped or the queue is
 * freed: a message out of line. NEW makes one and returns an fd of it;
 * OPEN returns an fd of the blob with that id; DROP lets the queue's hold
 * go (the memory goes with the last fd and mapping). Ids are never handed
 * out twice in a queue's life: they count up from 2^32 (so that nobody
 * keeps them in 32 bits) to MPQ_QUEUE_BLOB_ID_MAX, past which NEW is
 * -EBUSY (decades of making blobs at the fastest a system call goes).
 */
#define MPQ_QUEUE_BLOB_ID_MAX	((1ULL << 50) - 1)

struct mpq_queue_blob {
	__u64 id;
	__u64 bytes;
	__u32 flags;
	__u32 reserved;
};

/* Bits of mpq_queue_shm.poll_wanted and the MPQ_IOC_QUEUE_WAKE argument. */
#define MPQ_POLL_IN		(1U << 0)	/* a poller waits to read */
#define MPQ_POLL_OUT		(1U << 1)	/* a poller waits to write */
#define MPQ_POLL_ALL		(MPQ_POLL_IN | MPQ_POLL_OUT)

/* On /dev/mpq: returns a new queue fd, or -errno (-EDQUOT: over budget). */
#define MPQ_IOC_QUEUE_CREATE	_IOW(MPQ_IOC_MAGIC, 0x01, struct mpq_queue_create)
/* On a queue fd: reports its geometry. */
#define MPQ_IOC_QUEUE_INFO	_IOWR(MPQ_IOC_MAGIC, 0x02, struct mpq_queue_info)
/*
 * On a queue fd: clears the given MPQ_POLL_* bits of poll_wanted and wakes
 * the pollers waiting for them. Userspace calls it after a put (MPQ_POLL_IN)
 * or a get (MPQ_POLL_OUT) that found the bit set.
 */
#define MPQ_IOC_QUEUE_WAKE	_IO(MPQ_IOC_MAGIC, 0x03)
/* On a queue fd: blobs (struct mpq_queue_blob). NEW, OPEN return an fd. */
#define MPQ_IOC_QUEUE_BLOB_NEW	_IOWR(MPQ_IOC_MAGIC, 0x04, struct mpq_queue_blob)
#define MPQ_IOC_QUEUE_BLOB_OPEN	_IOWR(MPQ_IOC_MAGIC, 0x05, struct mpq_queue_blob)
#define MPQ_IOC_QUEUE_BLOB_DROP	_IOW(MPQ_IOC_MAGIC, 0x06, struct mpq_queue_blob)

#define MPQ_QUEUE_MAGIC		0x6d707151U	/* "Qqpm" */
/*
 * 4: a JoinableQueue's count lives in the header and the operation
 * records (tasks), promotes commit with MPQ_REC_FILLED, and memfd
 * publishers skip the wake-up fence when sleepers pay with membarrier:
 * a libmpq of layout 3 would miscount or sleep through a wake-up on a
 * queue of layout 4, so each refuses the other's queues.
 */
/*
 * 5: the only producer or consumer (MPQ_QUEUE_F_ONE_PRODUCER/_CONSUMER)
 * of a one-message put or get publishes or frees its slot before it moves
 * tail or head, so a death between leaves that cursor one behind (see
 * the ring rules below); a reader of layout 4 would call such a queue
 * corrupt, or wait at its head for ever.
 */
/*
 * 6: runs (MPQ_SLOT_RUN): a batch of messages of one size packed over
 * consecutive slots, the headers of all but the first included; a reader
 * of layout 5 would take the first for a corrupt message and the others'
 * payload for seqs.
 */
/*
 * 7: runs in every bounded queue: consumers take from one under its busy
 * bit (MPQ_RUN_BUSY), and a run's header carries its position (lap); a
 * reader of layout 6 would take from a run beside another consumer.
 */
/*
 * 8: slots of 8 data bytes (MPQ_SLOT_MIN_DATA 8): an out-of-line
 * message's length in the slot's len, its blob's id in the data; a
 * run's count and size after taken and lap, in the second slot's data
 * when the first has no room (MPQ_RUN_SIZE_OFF). A reader of layout 7
 * would call such a slot corrupt, or read a run's header from payload.
 */
#define MPQ_QUEUE_VERSION	8U

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
 * A bounded queue's producer also keeps tail - head within maxsize, which
 * may be less than the capacity (maxsize 3: a ring of 4 that holds 3).
 *
 * A cursor left behind. The only producer (consumer) of a queue may
 * publish (free) its slot first and move tail (head) after, taking no
 * operation record: killed between the two, it leaves the cursor at p
 * with slot p already past it. So tail at p over a slot whose seq is
 * p + 1 or p + capacity, or head at p over a slot whose seq is
 * p + capacity or p + capacity + 1, is behind: whoever finds it moves it
 * to p + 1 with a compare-and-swap and looks again. No claim-first
 * operation leaves either state, so the rule is safe for every queue.
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
	__u32 maxsize;		/* 0: unbounded */
	__u32 __pad00;
	/*
	 * libmpq's: freed blobs kept for the next out-of-line message, by
	 * id (0: none), so that a message does not cost a blob's making.
	 * The kernel never reads them.
	 */
	__u64 blob_free[8];
	__u8 __pad0[128 - 104];

	/*
	 * Next position a producer claims. runs_put sums, over the runs
	 * (struct mpq_slot_run) producers claimed, the messages each holds
	 * beyond its positions (count - k > 0), added before the run's
	 * positions are claimed (and taken back if the claim fails);
	 * runs_freed sums the same over the runs consumers freed, added
	 * after the run's covered slots are freed and before head moves
	 * past it (struct mpq_slot_run).
	 * A bounded queue's messages are tail - head + runs_put -
	 * runs_freed, less what consumers took from the run at head (the
	 * only one that can be partly taken: head_taken), and that is what the bound is
	 * kept with while runs_out says a run may be in the ring: a producer
	 * sets it before its run is counted, and one that finds the two sums
	 * equal clears it (and sets it again if they are not equal after:
	 * a one-message put looks at this word and nothing more, so it stays
	 * on the producers' line). A death between a run's count and its
	 * claim, or between its free and its sum, leaves the bound counting
	 * more than there is (never less) until a producer finds the ring
	 * empty (head == tail: no run in it) with no live producer's record
	 * saying it is putting a run, and makes runs_put equal runs_freed.
	 */
	__u64 tail;
	__u64 runs_put;
	__u32 runs_out;
	__u8 __pad1[128 - 20];

	/*
	 * Next position a consumer claims. head_taken: what consumers took
	 * from the run at head, as the run's taken and lap word (struct
	 * mpq_slot_run) with the busy bits clear, written by the run's
	 * holder before it lets the run go, and made 0 taken before the run
	 * is freed: never more than the run's own taken, so that the bound
	 * reads this line and not the run's, which its holder is writing.
	 * It counts only while its lap is head's.
	 */
	__u64 head;
	__u64 runs_freed;
	__u64 head_taken;
	__u8 __pad2[128 - 24];

	/*
	 * Sleeping. nonempty and nonfull are futex words: bit 0
	 * (MPQ_FUTEX_SLEEPING) says that someone sleeps on the word or is
	 * about to, the other bits count wake-ups. A sleeper sets the bit
	 * before its last look at the ring; a publisher that finds it set
	 * clears it, bumps the count and wakes every sleeper, and later
	 * publishers find it clear and make no system call until someone
	 * sleeps again. poll_wanted holds MPQ_POLL_* bits that the kernel
	 * sets when a poller may sleep.
	 *
	 * unfinished counts, for a JoinableQueue, the messages put and not
	 * yet marked done (a futex word that join() sleeps on). deathbell
	 * is always 0: a participant in the middle of a put or get names it
	 * in its robust list's pending slot, so that the kernel wakes one
	 * sleeper on it if the participant dies there (see struct
	 * mpq_queue_rec). flags copies the creation flags. libmpq keeps
	 * the tasks its puts count in its operation records instead (see
	 * mpq_queue_rec.tasks): unfinished is then the sum, mod 2^32, of
	 * these and unfinished, which task_done takes from; join_seq is
	 * what join() sleeps on, bumped when that sum reaches 0. deaths is
	 * bumped by the module when a participant dies with an operation
	 * unfinished (a record left dead): a get that does not wait and
	 * sees it change looks for a dead consumer's message to deliver
	 * again.
	 */
	__u32 nonempty;
	__u32 nonfull;
	__u32 poll_wanted;
	__u32 unfinished;
	__u32 deathbell;
	__u32 flags;
	__u32 join_seq;
	__u32 deaths;
	__u8 __pad4[128 - 32];

	/*
	 * An unbounded queue's overflow, a FIFO of messages that did not
	 * fit in the ring, under a lock of libmpq's (ovf_lock, a robust
	 * futex record): chunks (blobs) from ovf_head to ovf_tail, linked by
	 * their headers, read from ovf_off in the head chunk. ovf_count is
	 * the messages in it (the kernel reads it for poll(): readable if
	 * non-zero). blob_end is the memfd backend's next free offset for a
	 * blob past the ring.
	 */
	__u32 ovf_count;
	__u32 __pad5;
	__u64 ovf_head;
	__u64 ovf_off;
	__u64 ovf_tail;
	__u64 blob_end;
	__u64 __pad6[3];
	__u8 ovf_lock[64];
	/* libmpq's: more of blob_free, for a queue that streams (56). */
	__u64 blob_free_more[56];
};

/*
 * Operation records, MPQ_QUEUE_NREC of them at MPQ_QUEUE_REC_OFF, 128
 * bytes apart (the threads that use them write them on every operation:
 * two cache lines each, as the header's positions, so that the adjacent-
 * line prefetcher does not pair two threads' records); the ring starts
 * after them, at the next page boundary (data_off). They are how a
 * process killed in the middle of a put or a
 * get (or between reserve and commit, peek and release) is cleaned up
 * after. A participant takes a free record for each operation: word is a
 * robust futex word (set_robust_list(2)) holding its TID, linked in its
 * thread's robust list, so the kernel replaces the TID with
 * FUTEX_OWNER_DIED if it dies. Before it claims positions it writes its
 * intent (op, pos, n), marks it MPQ_REC_WON once the claim succeeded, and
 * clears it (n = 0) when the positions are published (put) or freed
 * (get). Whoever finds a slot stuck (claimed but never published, or
 * taken but never freed) looks for the dead record whose intent covers
 * it: a put's slot is published as MPQ_SLOT_DROPPED, which consumers
 * skip; a get's message is delivered again, to another consumer. Only
 * records whose holder died are acted upon, and the lowest-numbered one
 * covering a slot acts for it, so two repairers never both do.
 */
#define MPQ_QUEUE_REC_OFF	4096
#define MPQ_QUEUE_NREC		64

#define MPQ_REC_PUT		(1U << 0)
#define MPQ_REC_GET		(1U << 1)
#define MPQ_REC_WON		(1U << 2)	/* the claim succeeded */
#define MPQ_REC_COUNTED		(1U << 3)	/* unfinished was raised */
/* libmpq's: a promote's slots hold their messages: publish, never drop. */
#define MPQ_REC_FILLED		(1U << 4)
/*
 * libmpq's: a put of a run (struct mpq_slot_run), once its claim is WON:
 * its slots go together; with MPQ_REC_GET, a take from a run under its
 * busy bit (run_word).
 */
#define MPQ_REC_RUN		(1U << 5)
/* libmpq's: a run counted in runs_put, its claim not yet made. */
#define MPQ_REC_RUN_COUNTED	(1U << 6)
/*
 * libmpq's, with MPQ_REC_GET | MPQ_REC_RUN: the run is spent and being
 * freed, and run_word is the runs_freed its freer stores (a repairer
 * stores the same; see struct mpq_slot_run).
 */
#define MPQ_REC_RUN_SUMMED	(1U << 7)

struct mpq_queue_rec {
	__u32 word;
	__u32 op;
	__u64 pos;
	__u32 n;
	__u32 last;	/* TID of its last user: spreads threads out */
	/*
	 * libmpq's: a take from a run (op MPQ_REC_GET | MPQ_REC_RUN, pos
	 * the run's): the run's taken word (struct mpq_slot_run) as this
	 * holder makes it, busy, written before it does.
	 */
	__u64 run_word;
	__u64 link;	/* robust list link, 32 bytes after word */
	/*
	 * libmpq's: a blob (out-of-line message) its holder owns and no
	 * slot holds yet or any more, for whoever finds the record dead to
	 * free; blob_arg is MPQ_IOC_QUEUE_BLOB_NEW's argument, so that the
	 * kernel writes a new blob's id here before the holder could die.
	 */
	__u64 blob;
	struct mpq_queue_blob blob_arg;
	/*
	 * libmpq's: a JoinableQueue's tasks counted by puts under this
	 * record (shifted left by one), bit 0 set while the operation in
	 * the intent has counted its own: one word, so that a death
	 * leaves the count and the fact together.
	 */
	__u64 tasks;
	/*
	 * libmpq's: an unbounded queue's promote (op MPQ_REC_FILLED): the
	 * overflow chunk it moves messages from, and where the overflow's
	 * read offset goes once they are in the ring.
	 */
	__u64 ovf_chunk;
	__u64 ovf_off;
	__u64 __pad1[4];
};

/* Where the ring may start: after the records, on a page boundary. */
#define MPQ_QUEUE_DATA_MIN	(MPQ_QUEUE_REC_OFF + MPQ_QUEUE_NREC * 128)

/* A slot's len when a dead producer's claim was published empty. */
#define MPQ_SLOT_DROPPED	0xffffffffU
/*
 * A slot's len when the message is out of line and 4 GiB or longer:
 * struct mpq_slot_ext.
 */
#define MPQ_SLOT_EXT		0xfffffffeU
/* A slot's len when it starts a run: struct mpq_slot_run. */
#define MPQ_SLOT_RUN		0xfffffffdU

/*
 * Header of each slot; msg_max bytes of data follow, and slots are packed
 * (8-byte aligned): a batch of small messages fills whole cache lines. seq
 * holds the low 32 bits of a position; positions are compared modulo 2^32,
 * which is unambiguous because the capacity is below 2^31. len is the
 * message's length, in the slot if it is msg_max or less; above msg_max
 * and below MPQ_SLOT_RUN the message is out of line, in the blob whose
 * id (__u64) is the slot's data.
 */
struct mpq_slot {
	__u32 seq;
	__u32 len;
};

/*
 * Out of line: the message is the first len bytes of blob id, which the
 * queue owns until a consumer has taken it. The slot's data is the id
 * alone (8 bytes, which every slot has: MPQ_SLOT_MIN_DATA) while the
 * length fits in the slot's len, the whole of this struct (len
 * MPQ_SLOT_EXT) for a message of 4 GiB or more, which a queue of 8 data
 * bytes a slot cannot take (EMSGSIZE).
 */
struct mpq_slot_ext {
	__u64 id;
	__u64 len;
};

/*
 * The data of an MPQ_SLOT_RUN slot: taken and lap, then count messages of
 * size bytes each (1 <= size <= msg_max) described by a struct
 * mpq_slot_run_size at MPQ_RUN_SIZE_OFF(slot_size) from the first slot's
 * start, packed one after the other from the end of that struct on
 * (MPQ_RUN_DATA_OFF). In slots of 16 bytes the second slot's header
 * sits where count and size would, and its seq is rewritten when the run
 * is freed, while a repairer may still need them: they go in its data.
 * A run takes k = DIV_ROUND_UP(MPQ_RUN_DATA_OFF(slot_size) + count * size,
 * slot_size) consecutive
 * positions, p to p + k - 1, and never wraps past the ring's last slot;
 * the slots after its first hold its payload, headers included, from
 * the claim until the run is freed, and only the first's seq says what
 * the run is. A producer claims the k positions at once (moving tail by
 * k), writes the payload, then the first slot, and publishes its seq.
 *
 * Consumers take a run's messages in order, any number at a time,
 * without moving head: taken says how many are gone. taken and lap (the
 * low 32 bits of the run's position p) are one 64-bit word, written
 * whole: a run of another lap at the same slot never has the word a
 * consumer expects. A consumer first sets MPQ_RUN_BUSY in taken with a
 * compare-and-swap (the queue's only consumer, MPQ_QUEUE_F_ONE_CONSUMER,
 * needs none), under a record whose intent is MPQ_REC_GET | MPQ_REC_RUN
 * at p and whose run_word is the busy word, copies, and stores the new
 * taken, not busy. The one that takes the last keeps it busy (taken =
 * count | MPQ_RUN_BUSY), frees the covered slots (seq p + i + capacity),
 * adds count - k to runs_freed (struct mpq_queue_shm) and moves head by
 * k, and frees the first slot either before all that (the module, and
 * the queue's only consumer: head is then a cursor left behind if it is
 * killed before head moves, moved on slot by slot by the ring rules
 * below) or after (libmpq among many consumers, whose record says the
 * sum first: MPQ_REC_RUN_SUMMED). While the first slot still holds the
 * run, busy, no other consumer moves head and no producer reaches the
 * run's slots. Killed while busy, the messages it was copying are
 * delivered again: whoever finds its record dead with the word still
 * its run_word clears the bit; at count, it finishes the free (the first
 * slot, if head is past it already).
 * libmpq writes runs to bounded queues only (an unbounded one's overflow
 * keeps a message per entry). A dead producer's run (its record's op has
 * MPQ_REC_RUN) is published as k dropped slots.
 */
struct mpq_slot_run {
	__u32 taken;	/* | MPQ_RUN_BUSY while a consumer takes from it */
	__u32 lap;	/* (__u32)p */
};

struct mpq_slot_run_size {
	__u32 count;
	__u32 size;
};

#define MPQ_RUN_SIZE_OFF(slot_size)	((slot_size) > 16 ? 16U : 24U)
#define MPQ_RUN_DATA_OFF(slot_size)	(MPQ_RUN_SIZE_OFF(slot_size) + \
					 sizeof(struct mpq_slot_run_size))

#define MPQ_RUN_BUSY		(1U << 31)
/*
 * With MPQ_RUN_BUSY: the module's read(2) holds the bit, which it clears
 * (or frees the run) before the call returns; no record is its, and no
 * repairer acts on it. count is below this bit.
 */
#define MPQ_RUN_KERNEL		(1U << 30)

#define MPQ_SLOT_MIN_DATA	8

#define MPQ_SLOT_ALIGN		8
#define MPQ_FUTEX_SLEEPING	1U

/*
 * Pipes: two ends, each its own fd, over two single-producer
 * single-consumer byte rings in one shared region; ring i is written
 * through end i and read through the other end. The kernel tracks the
 * ends: when every fd and mapping of one end is gone (closed, or its
 * holders died), the other end's pollers see EPOLLHUP.
 */
/* Both ends send; without it end 1 sends and end 0 receives. */
#define MPQ_PIPE_DUPLEX		(1U << 1)
#define MPQ_PIPE_FLAGS		(MPQ_CREATE_CLOEXEC | MPQ_PIPE_DUPLEX)

/*
 * The ring sizes a pipe may have, both backends alike: the module refuses
 * others with EINVAL (too small, not a power of two) or E2BIG (too large).
 * The largest fits the module's default max_object_bytes (1 GiB) whole,
 * with its header page and both rings, whatever the page size; an admin
 * who lowers that parameter lowers what fits (E2BIG).
 */
#define MPQ_PIPE_RING_MIN	4096U
#define MPQ_PIPE_RING_MAX	(1U << 28)

/**
 * struct mpq_pipe_create - argument of MPQ_IOC_PIPE_CREATE
 * @size:	sizeof(struct mpq_pipe_create) as the caller knows it
 * @flags:	MPQ_CREATE_CLOEXEC, MPQ_PIPE_DUPLEX
 * @ring_size:	bytes of data per direction: a power of two from
 *		MPQ_PIPE_RING_MIN to MPQ_PIPE_RING_MAX
 * @fds:	out: the fds of end 0 and end 1
 * @reserved:	must be zero
 */
struct mpq_pipe_create {
	__u32 size;
	__u32 flags;
	__u32 ring_size;
	__s32 fds[2];
	__u32 __pad;
	__u64 reserved[4];
};

/**
 * struct mpq_pipe_info - argument of MPQ_IOC_PIPE_INFO, on an end's fd
 * @size:	in: sizeof(struct mpq_pipe_info) as the caller knows it
 * @flags:	out: the pipe's MPQ_PIPE_DUPLEX flag
 * @ring_size:	out: bytes of data per direction
 * @end:	out: 0 or 1, which end this fd is
 * @data_off:	out: offset of ring i's data in the mapping
 * @map_size:	out: the length to mmap
 * @id:		out: system-wide id of the object
 * @reserved:	out: zero
 */
struct mpq_pipe_info {
	__u32 size;
	__u32 flags;
	__u32 ring_size;
	__u32 end;
	__u64 data_off[2];
	__u64 map_size;
	__u64 id;
	__u64 reserved[4];
};

/* On /dev/mpq: fills in fds[], returns 0 or -errno (-EDQUOT: over budget). */
#define MPQ_IOC_PIPE_CREATE	_IOWR(MPQ_IOC_MAGIC, 0x10, struct mpq_pipe_create)
/* On an end: reports the geometry. */
#define MPQ_IOC_PIPE_INFO	_IOWR(MPQ_IOC_MAGIC, 0x11, struct mpq_pipe_info)
/*
 * On an end: wakes the other end's pollers. MPQ_POLL_IN after writing to
 * this end's ring (clears its MPQ_POLL_IN wanted bit), MPQ_POLL_OUT after
 * reading from the other end's ring (clears that ring's MPQ_POLL_OUT bit).
 */
#define MPQ_IOC_PIPE_WAKE	_IO(MPQ_IOC_MAGIC, 0x12)

#define MPQ_PIPE_MAGIC		0x6d707150U	/* "Ppqm" */
/*
 * 2: a frame is published by its header word, not by tail (see struct
 * mpq_frame); a reader of version 1 would wait on tail, which may trail,
 * and a writer of version 1 would leave no zero word after its frames.
 * 3: a box beside each ring (struct mpq_pipe_box); a reader of version 2
 * would never look in it.
 */
#define MPQ_PIPE_VERSION	3U
/* A writer is offered EPOLLOUT while this much of its ring is free. */
#define MPQ_PIPE_MIN_SPACE	64

/*
 * One direction's ring. Positions only grow; data of position p is at
 * data_off[i] + (p & (ring_size - 1)). The writer moves tail, the reader
 * head; wanted holds MPQ_POLL_IN (the reader may sleep) and MPQ_POLL_OUT
 * (the writer may sleep), set by the kernel's ->poll() or, without the
 * module, by the sleeper itself. A reader learns that a frame is there
 * from the frame itself (see struct mpq_frame), never from tail: tail is
 * where the writer goes on, and trails the frames it published by at
 * most one (a writer that died between the two stores).
 */
struct mpq_ring {
	__u64 tail;
	__u64 tail_next;	/* see struct mpq_frame */
	__u8 __pad0[128 - 16];
	__u64 head;
	__u32 box_taken;	/* see struct mpq_pipe_box */
	__u8 __pad1[128 - 12];
	__u32 wanted;
	__u8 __pad2[128 - 4];
};

/*
 * closed[i] is set once end i is gone: by the kernel when the end's file is
 * released, or, without the module, by the library when it closes the end
 * (a dead process's end is then seen through its socket). It lets a sender
 * fail fast with EPIPE; sleepers learn it from poll().
 *
 * shut[i] is set by libmpq (the module neither reads nor writes it) when
 * end i gave up on a message part-way, its send timed out with frames of
 * it already visible: ring i then carries nothing more but, once there is
 * room, one MPQ_FRAME_ABORT frame that ends the cut message and stays.
 */
/*
 * A message crosses a ring as one or more frames, each 8-byte aligned: a
 * struct mpq_frame, on the first frame the message's total length as a
 * __u64, then len bytes of data padded to 8. The module reads and writes
 * frames itself for read(2)/write(2) and io_uring on an end.
 *
 * The header, read as one __u64, is never 0, and a frame is published by
 * storing it, last, with release: the reader spins on the one line where
 * the next frame starts, as it would on a flag, instead of on tail and
 * then the frame (two lines that cross between CPUs one after the
 * other). For that, the __u64 after a frame must read 0 until a frame is
 * published there: a writer stores 0 there before it publishes the frame
 * (so a ring never fills its last 8 bytes), and a ring starts zeroed.
 * The frames of one message may be published one by one (libmpq streams
 * a message larger than the ring) or the first last (the module does).
 * Then tail moves past the frame, with release. A header found at tail
 * by the next writer is a frame whose writer died between the two
 * stores: it was sent, and tail moves past it first. So that the next
 * writer need not read that word (the line the reader spins on) every
 * time, libmpq stores where the frame ends in tail_next before it
 * publishes; tail_next equal to tail says no frame waits there. The
 * module, which cannot die between the stores, looks at the word.
 */
struct mpq_frame {
	__u32 len;
	__u32 flags;
};

#define MPQ_FRAME_FIRST		(1U << 0)
#define MPQ_FRAME_LAST		(1U << 1)
/* Alone, len 0: the message it follows was cut short (see shut[]). */
#define MPQ_FRAME_ABORT		(1U << 2)
/* The most data one frame holds: a quarter of the ring. */
#define MPQ_FRAME_MAX(ring_size)	((ring_size) / 4)

/*
 * The box of ring i holds one small message beside the ring, written
 * through end i of a duplex pipe: both boxes share one cache line, so that
 * a message and its answer cross in the line each side has just read, as
 * one counter would, not in a line each way (two rings' lines cost 2.2x
 * one line in a round trip on a VM measured: bench/rtt_floor.c).
 *
 * seq counts the messages end i put in box i: the writer stores len and
 * data, then seq + 1 with release. A message waits while seq differs from
 * ring i's box_taken, which its reader stores (the seq it took, with
 * release) once it has the data: on the reader's own line. ack is the
 * box_taken of the other ring as end i last told it: each end stores it
 * in its own box whenever it sends, so box i is free when box !i's ack
 * equals box i's seq. The line then crosses once per message and once
 * per answer, not also for each take (a take's store there made a round
 * trip with work between message and answer cost two lines' worth); the
 * module's read(2), which never sends, stores ack as it takes.
 *
 * A writer may put a message in the box only while the box is free and
 * ring i is empty (head == tail: everything before the message is
 * taken); it may always use the ring instead (the module's write(2)
 * does). So a waiting box message comes before every frame in the ring. A
 * reader looks at the word at head first, then (acquire) at seq, and
 * takes the box first when a message waits there: a frame seen at head
 * was published after the box message it follows, so that message is
 * seen then too. A reader in the middle of a message's frames never finds
 * one in the box.
 */
#define MPQ_PIPE_BOX_MAX	20

struct mpq_pipe_box {
	__u32 seq;
	__u32 ack;
	__u32 len;
	__u8 data[MPQ_PIPE_BOX_MAX];
};

struct mpq_pipe_shm {
	__u32 magic;
	__u32 version;
	__u32 flags;
	__u32 ring_size;
	__u64 data_off[2];
	__u64 map_size;
	__u32 closed[2];
	__u32 shut[2];
	__u8 __pad0[128 - 56];
	struct mpq_ring ring[2];
	struct mpq_pipe_box box[2];	/* at 896: one line of its own */
};

/*
 * Shared memory objects: a block of bytes that every process holding the
 * fd maps (MAP_SHARED, offset 0, map_size bytes), shmem like the rest, so
 * shared futexes work in it. libmpq lays out its locks, semaphores,
 * events, barriers and Values in such blocks, and hands them to users as
 * SharedMemory. The kernel does not read the contents.
 *
 * A block may have a name, looked up in the caller's IPC namespace and
 * checked like a file: the creator's fsuid and fsgid own it, mode holds
 * permission bits (less the umask), and opening it needs read and write
 * permission (or CAP_IPC_OWNER in the namespace's user namespace). A name
 * keeps its block alive, fds and mappings or not, until the name goes:
 * when it is unlinked, or, without MPQ_SHM_PERSIST, when the /dev/mpq open
 * file it was created through is released (closed in every process that
 * shares it: the creator's program), so a program that crashes leaks
 * nothing. Opening an existing name never ties it to the opener's file.
 * Unlinking needs ownership (or CAP_IPC_OWNER); it removes the name only,
 * the block lives on while it is open or mapped.
 */
#define MPQ_SHM_CREAT		(1U << 1)	/* create it if absent */
#define MPQ_SHM_EXCL		(1U << 2)	/* with CREAT: fail if present */
#define MPQ_SHM_PERSIST		(1U << 3)	/* the name keeps it alive */
#define MPQ_SHM_FLAGS		(MPQ_CREATE_CLOEXEC | MPQ_SHM_CREAT | \
				 MPQ_SHM_EXCL | MPQ_SHM_PERSIST)

/* Longest name, without its NUL. Names hold no '/'. */
#define MPQ_NAME_MAX		255

/*
 * A Lock or RLock block keeps its robust futex word at this offset (libmpq
 * lays the rest out). The kernel only reads it, to report a holder that
 * died (the mpq_owner_died tracepoint).
 */
#define MPQ_SHM_LOCK_WORD_OFF	64

/* What a block is used for, as listings show it; the kernel keeps it. */
enum mpq_shm_kind {
	MPQ_SHM_KIND_SHM	= 0,	/* SharedMemory: bytes of the user's */
	MPQ_SHM_KIND_LOCK	= 1,
	MPQ_SHM_KIND_RLOCK	= 2,
	MPQ_SHM_KIND_COND	= 3,
	MPQ_SHM_KIND_SEM	= 4,
	MPQ_SHM_KIND_EVENT	= 5,
	MPQ_SHM_KIND_BARRIER	= 6,
	MPQ_SHM_KIND_VALUE	= 7,
	MPQ_SHM_KIND_MAX,
};

/**
 * struct mpq_shm_open - argument of MPQ_IOC_SHM_OPEN
 * @size:	sizeof(struct mpq_shm_open) as the caller knows it
 * @flags:	MPQ_CREATE_CLOEXEC, MPQ_SHM_CREAT, MPQ_SHM_EXCL,
 *		MPQ_SHM_PERSIST (without it, a name created is tied to the
 *		/dev/mpq file this ioctl is made on)
 * @bytes:	size of a block to create (1 at least); ignored when an
 *		existing block is opened
 * @name:	user pointer to a NUL-terminated name, or 0 for an anonymous
 *		block (which is always created: MPQ_SHM_CREAT is implied, and
 *		EXCL and PERSIST are refused)
 * @mode:	permission bits of a block to create (0777 at most)
 * @kind:	enum mpq_shm_kind, of a block to create
 * @reserved:	must be zero
 *
 * Returns a new fd: -ENOENT (no such name, no CREAT), -EEXIST (CREAT|EXCL
 * and present), -EACCES, -ENAMETOOLONG, -EINVAL, -E2BIG, -EDQUOT (a new
 * block or persistent name would take its creator past a per-user limit),
 * -ENOMEM, -EMFILE.
 */
struct mpq_shm_open {
	__u32 size;
	__u32 flags;
	__u64 bytes;
	__u64 name;
	__u32 mode;
	__u32 kind;
	__u64 reserved[4];
};

/**
 * struct mpq_shm_info - argument of MPQ_IOC_SHM_INFO, on a block's fd
 * @size:	in: sizeof(struct mpq_shm_info) as the caller knows it
 * @flags:	out: MPQ_SHM_PERSIST while the name keeps it alive
 * @bytes:	out: the size it was created with
 * @map_size:	out: the length to mmap (bytes rounded up to pages)
 * @id:		out: system-wide id of the object
 * @kind:	out: enum mpq_shm_kind
 * @mode:	out: permission bits
 * @uid:	out: owner, in the caller's user namespace
 * @gid:	out: group, likewise
 * @reserved:	out: zero
 */
struct mpq_shm_info {
	__u32 size;
	__u32 flags;
	__u64 bytes;
	__u64 map_size;
	__u64 id;
	__u32 kind;
	__u32 mode;
	__u32 uid;
	__u32 gid;
	__u64 reserved[4];
};

/**
 * struct mpq_shm_unlink - argument of MPQ_IOC_SHM_UNLINK, on /dev/mpq
 * @size:	sizeof(struct mpq_shm_unlink) as the caller knows it
 * @flags:	must be zero
 * @name:	user pointer to the NUL-terminated name
 * @reserved:	must be zero
 *
 * Returns 0, -ENOENT, -EPERM (not the owner), -EINVAL, -ENAMETOOLONG.
 */
struct mpq_shm_unlink {
	__u32 size;
	__u32 flags;
	__u64 name;
	__u64 reserved[2];
};

/* On /dev/mpq: returns a block's fd, or -errno. */
#define MPQ_IOC_SHM_OPEN	_IOW(MPQ_IOC_MAGIC, 0x20, struct mpq_shm_open)
/* On a block's fd: reports its size, owner and kind. */
#define MPQ_IOC_SHM_INFO	_IOWR(MPQ_IOC_MAGIC, 0x21, struct mpq_shm_info)
/* On /dev/mpq: removes a name. */
#define MPQ_IOC_SHM_UNLINK	_IOW(MPQ_IOC_MAGIC, 0x22, struct mpq_shm_unlink)

/*
 * Seeing inside: the numbers that /proc/mpq and the mpq tracepoints
 * (/sys/kernel/tracing/events/mpq/) use, so that tools can name them.
 */
/* Object types. */
#define MPQ_OBJ_QUEUE		1U
#define MPQ_OBJ_PIPE		2U
#define MPQ_OBJ_SHM		3U	/* a block: lock, value, SharedMemory... */

/* How a process became a participant (mpq_attach, "how"). */
#define MPQ_ATTACH_MMAP		1U	/* it mapped the object */
#define MPQ_ATTACH_FORK		2U	/* it inherited a mapping by fork */

/* How a participant left (mpq_detach and mpq_exit, "how"). */
#define MPQ_LEAVE_UNMAP		1U	/* it unmapped the object, alive */
#define MPQ_LEAVE_EXIT		2U	/* its address space went: exit, exec */
#define MPQ_LEAVE_CLOSE		3U	/* it closed its fds while exiting */

/* What a dead holder left behind (mpq_owner_died, "what"). */
#define MPQ_DIED_LOCK		1U	/* a lock, now marked owner-died */
#define MPQ_DIED_SLOT		2U	/* a claimed slot of a queue, reclaimed */

#endif /* _UAPI_LINUX_MPQ_H */
