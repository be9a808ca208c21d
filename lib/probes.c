// SPDX-License-Identifier: MIT
/*
 * The semaphores of libmpq's USDT probes (see probes.h): one counter per
 * probe in the .probes section, which the kernel increments while a
 * uprobe is attached to that probe and which nothing else writes.
 */
#include <stdint.h>

#include "probes.h"

#ifdef MPQ_HAVE_PROBES
#define MPQ_SEMAPHORE(name) \
	unsigned short mpq_##name##_semaphore \
	__attribute__((section(".probes"), used))

MPQ_SEMAPHORE(queue_put);
MPQ_SEMAPHORE(queue_get);
MPQ_SEMAPHORE(queue_wait_begin);
MPQ_SEMAPHORE(queue_wait_end);
MPQ_SEMAPHORE(lock_wait_begin);
MPQ_SEMAPHORE(lock_wait_end);
MPQ_SEMAPHORE(lock_owner_died);
MPQ_SEMAPHORE(queue_reclaim);
MPQ_SEMAPHORE(pool_task_start);
MPQ_SEMAPHORE(pool_task_end);
#else
/* ISO C wants something in a translation unit. */
typedef int mpq_no_probes;
#endif
