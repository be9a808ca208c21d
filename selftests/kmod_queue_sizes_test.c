// SPDX-License-Identifier: GPL-2.0
/*
 * The module's side of issue 12's queue sizes: the maxsize it reports and
 * enforces, the blobs a queue holds for out-of-line messages
 * (MPQ_IOC_QUEUE_BLOB_*) with hostile arguments, their lifetime, and an
 * unbounded queue that meets the per-user budget: -EDQUOT, nothing lost.
 * Run in the VM, as root, with mpq.ko loaded.
 */
#include "kselftest_harness.h"
#include "kmod_helpers.h"

static int blob(int qfd, unsigned long cmd, struct mpq_queue_blob *b)
{
	int ret = ioctl(qfd, cmd, b);

	return ret < 0 ? -errno : ret;
}

TEST(info_reports_maxsize_and_the_ring_rounded_up)
{
	struct mpq_queue_create c = { .size = sizeof(c), .capacity = 3,
				      .msg_max = 8 };
	struct mpq_queue_info i;
	int dev = dev_open(), fd;

	ASSERT_LE(0, dev);
	fd = ioctl(dev, MPQ_IOC_QUEUE_CREATE, &c);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, queue_info(fd, &i));
	ASSERT_EQ(3, i.maxsize);
	ASSERT_EQ(4, i.capacity);
	/*
	 * 8-byte messages in 16-byte slots: four to a cache line, the
	 * data room enough for an out-of-line message's blob id.
	 */
	ASSERT_EQ(sizeof(struct mpq_slot) + MPQ_SLOT_MIN_DATA, i.slot_size);
	ASSERT_EQ(16, i.slot_size);
	close(fd);
	c.flags = MPQ_QUEUE_UNBOUNDED;
	c.capacity = 100;
	fd = ioctl(dev, MPQ_IOC_QUEUE_CREATE, &c);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, queue_info(fd, &i));
	ASSERT_EQ(0, i.maxsize);
	ASSERT_EQ(128, i.capacity);
	ASSERT_EQ(MPQ_QUEUE_UNBOUNDED, i.flags & MPQ_QUEUE_UNBOUNDED);
	close(fd);
	close(dev);
}

TEST(write_holds_exactly_maxsize)
{
	int dev = dev_open(), fd, n;
	struct pollfd p;

	ASSERT_LE(0, dev);
	fd = queue_create(dev, 3, 8);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, fcntl(fd, F_SETFL, O_NONBLOCK));
	for (n = 0; n < 3; n++)
		ASSERT_EQ(8, write(fd, "12345678", 8));
	p.fd = fd;
	p.events = POLLOUT;
	ASSERT_EQ(0, poll(&p, 1, 0));
	ASSERT_EQ(-1, write(fd, "12345678", 8));
	ASSERT_EQ(EAGAIN, errno);
	close(fd);
	close(dev);
}

TEST(blobs_are_made_opened_and_dropped_and_bad_arguments_refused)
{
	struct mpq_queue_blob b = { .bytes = 10000 }, o;
	int dev = dev_open(), q, fd, fd2;
	char *p, *p2;

	ASSERT_LE(0, dev);
	q = queue_create(dev, 4, 64);
	ASSERT_LE(0, q);
	fd = blob(q, MPQ_IOC_QUEUE_BLOB_NEW, &b);
	ASSERT_LE(0, fd);
	ASSERT_LE(1, b.id);
	p = mmap(NULL, 12288, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ASSERT_NE(MAP_FAILED, p);
	strcpy(p + 9000, "blob");
	o = (struct mpq_queue_blob){ .id = b.id };
	fd2 = blob(q, MPQ_IOC_QUEUE_BLOB_OPEN, &o);
	ASSERT_LE(0, fd2);
	ASSERT_EQ(10000, o.bytes);
	p2 = mmap(NULL, 12288, PROT_READ, MAP_SHARED, fd2, 0);
	ASSERT_NE(MAP_FAILED, p2);
	ASSERT_STREQ("blob", p2 + 9000);
	ASSERT_EQ(0, blob(q, MPQ_IOC_QUEUE_BLOB_DROP, &o));
	/* Gone from the queue; the mappings and fds still hold the memory. */
	ASSERT_EQ(-ENOENT, blob(q, MPQ_IOC_QUEUE_BLOB_OPEN, &o));
	ASSERT_EQ(-ENOENT, blob(q, MPQ_IOC_QUEUE_BLOB_DROP, &o));
	ASSERT_STREQ("blob", p2 + 9000);
	munmap(p, 12288);
	munmap(p2, 12288);
	close(fd);
	close(fd2);
	/* Hostile arguments. */
	o = (struct mpq_queue_blob){ .bytes = 4096, .flags = 1U << 7 };
	ASSERT_EQ(-EINVAL, blob(q, MPQ_IOC_QUEUE_BLOB_NEW, &o));
	o = (struct mpq_queue_blob){ .bytes = 4096, .reserved = 1 };
	ASSERT_EQ(-EINVAL, blob(q, MPQ_IOC_QUEUE_BLOB_NEW, &o));
	o = (struct mpq_queue_blob){ .bytes = 0 };
	ASSERT_EQ(-EINVAL, blob(q, MPQ_IOC_QUEUE_BLOB_NEW, &o));
	o = (struct mpq_queue_blob){ .bytes = 1ULL << 50 };
	ASSERT_EQ(-E2BIG, blob(q, MPQ_IOC_QUEUE_BLOB_NEW, &o));
	o = (struct mpq_queue_blob){ .id = 1ULL << 40 };
	ASSERT_EQ(-ENOENT, blob(q, MPQ_IOC_QUEUE_BLOB_OPEN, &o));
	ASSERT_EQ(-ENOENT, blob(q, MPQ_IOC_QUEUE_BLOB_DROP, &o));
	o = (struct mpq_queue_blob){ .id = 0 };
	ASSERT_EQ(-ENOENT, blob(q, MPQ_IOC_QUEUE_BLOB_OPEN, &o));
	ASSERT_EQ(-1, ioctl(q, MPQ_IOC_QUEUE_BLOB_NEW, NULL));
	ASSERT_EQ(EFAULT, errno);
	ASSERT_EQ(-1, ioctl(q, MPQ_IOC_QUEUE_BLOB_OPEN, (void *)1));
	ASSERT_EQ(EFAULT, errno);
	/* Only on a queue fd. */
	ASSERT_EQ(-1, ioctl(dev, MPQ_IOC_QUEUE_BLOB_NEW, &b));
	close(q);
	close(dev);
}

TEST(blobs_a_queue_holds_are_freed_with_it)
{
	long objects = param_long("objects"), pages = param_long("pages");
	struct mpq_queue_blob b;
	int dev = dev_open(), q, i, fd;

	ASSERT_LE(0, objects);
	ASSERT_LE(0, dev);
	q = queue_create(dev, 4, 64);
	ASSERT_LE(0, q);
	for (i = 0; i < 5; i++) {
		b = (struct mpq_queue_blob){ .bytes = 1 << 20 };
		fd = blob(q, MPQ_IOC_QUEUE_BLOB_NEW, &b);
		ASSERT_LE(0, fd);
		close(fd);
	}
	ASSERT_EQ(objects + 6, param_long("objects"));
	close(q);
	close(dev);
	ASSERT_EQ(objects, param_long("objects"));
	ASSERT_EQ(pages, param_long("pages"));
}

/*
 * A blob's id is never handed out twice in a queue's life, and is a
 * 64-bit number from the first: a dropped id that something still names
 * (a slot, a pooled entry, a handle's kept mapping) can only miss, never
 * reach another blob, as ids that wrapped after 2^32 could.
 */
TEST(blob_ids_are_64_bit_and_never_handed_out_twice)
{
	struct mpq_queue_blob b, o;
	uint64_t last = 0;
	int dev = dev_open(), q, i, fd;

	ASSERT_LE(0, dev);
	q = queue_create(dev, 4, 64);
	ASSERT_LE(0, q);
	for (i = 0; i < 2000; i++) {
		b = (struct mpq_queue_blob){ .bytes = 4096 };
		fd = blob(q, MPQ_IOC_QUEUE_BLOB_NEW, &b);
		ASSERT_LE(0, fd);
		close(fd);
		ASSERT_LT(0xffffffffULL, b.id);
		ASSERT_GE(MPQ_QUEUE_BLOB_ID_MAX, b.id);
		ASSERT_LT(last, b.id);
		/* Opened by its full id, gone once dropped. */
		o = (struct mpq_queue_blob){ .id = b.id };
		fd = blob(q, MPQ_IOC_QUEUE_BLOB_OPEN, &o);
		ASSERT_LE(0, fd);
		close(fd);
		ASSERT_EQ(0, blob(q, MPQ_IOC_QUEUE_BLOB_DROP, &o));
		ASSERT_EQ(-ENOENT, blob(q, MPQ_IOC_QUEUE_BLOB_OPEN, &o));
		/* Its low 32 bits name nothing either. */
		o = (struct mpq_queue_blob){ .id = b.id & 0xffffffffULL };
		ASSERT_EQ(-ENOENT, blob(q, MPQ_IOC_QUEUE_BLOB_OPEN, &o));
		last = b.id;
	}
	o = (struct mpq_queue_blob){ .id = MPQ_QUEUE_BLOB_ID_MAX + 1 };
	ASSERT_EQ(-ENOENT, blob(q, MPQ_IOC_QUEUE_BLOB_OPEN, &o));
	ASSERT_EQ(-ENOENT, blob(q, MPQ_IOC_QUEUE_BLOB_DROP, &o));
	o = (struct mpq_queue_blob){ .id = ~0ULL };
	ASSERT_EQ(-ENOENT, blob(q, MPQ_IOC_QUEUE_BLOB_DROP, &o));
	close(q);
	close(dev);
}

FIXTURE(budget) {
	char bytes[32];
};

FIXTURE_SETUP(budget)
{
	ASSERT_EQ(0, param_read("max_user_bytes", self->bytes, 32));
}

FIXTURE_TEARDOWN(budget)
{
	param_write("max_user_bytes", self->bytes);
}

/* A message far past the budget, out of line (zeros: never written). */
static char budget_big[32 << 20];

TEST_F_TIMEOUT(budget, an_unbounded_queue_past_the_budget_is_edquot_and_loses_nothing,
	       300)
{
	struct mpq_queue_attr attr = { .backend = MPQ_BACKEND_KMOD,
				       .msgsize = 1024 };
	char msg[1024], out[1024];
	struct mpq_queue *q;
	uint32_t n = 0, i;
	size_t len;
	int ret;

	ASSERT_EQ(0, param_write("max_user_bytes", "16777216"));
	ASSERT_EQ(0, drop_sys_resource());
	ASSERT_EQ(0, mpq_queue_new(&q, &attr));
	memset(msg, 'm', sizeof(msg));
	for (;;) {
		memcpy(msg, &n, sizeof(n));
		ret = mpq_queue_put_nowait(q, msg, 1000);
		if (ret)
			break;
		n++;
		ASSERT_LT(n, 1000000);
	}
	ASSERT_EQ(-EDQUOT, ret);
	ASSERT_LT(1024, n);	/* past the ring, into the overflow */
	ASSERT_EQ((int)n, mpq_queue_qsize(q));
	/* A message out of line meets the budget the same way. */
	ASSERT_EQ(-EDQUOT, mpq_queue_put_nowait(q, budget_big, sizeof(budget_big)));
	for (i = 0; i < n; i++) {
		len = sizeof(out);
		ASSERT_EQ(0, mpq_queue_get_nowait(q, out, &len));
		ASSERT_EQ(1000, len);
		ASSERT_EQ(0, memcmp(out, &i, sizeof(i)));
	}
	ASSERT_EQ(1, mpq_queue_empty(q));
	/* Taken, the memory went back: the same again fits. */
	for (i = 0; i < n; i++) {
		ASSERT_EQ(0, mpq_queue_put_nowait(q, msg, 1000))
			TH_LOG("put %u of %u after the drain", i, n);
	}
	mpq_queue_free(q);
}

TEST_HARNESS_MAIN
