// SPDX-License-Identifier: MIT
/*
 * crash_recovery: what happens to a lock, and to a queue, when the
 * process using it is killed (SIGKILL) in the middle. In Python, a Lock
 * held by a killed process stays held forever, and a message it was
 * taking is lost; here neither is.
 *
 * 1. A lock. Two accounts in a RawValue, guarded by a Lock, always add up
 *    to 1000 between updates. An update first writes what it is about to
 *    do into a log beside them (a roll-forward log), then does it, then
 *    clears the log. A worker takes the lock, writes the log, moves 100
 *    out of the first account, and is killed before it puts them into
 *    the second. Another process is blocked in mpq_lock_acquire()
 *    meanwhile: the kernel wakes it as the holder dies, and it gets the
 *    lock with -EOWNERDEAD. It finds the log set, finishes the update
 *    from it, and calls mpq_lock_consistent(), so that the next acquirer
 *    (the parent) gets 0 and a whole ledger.
 *
 * 2. A queue. A consumer takes a message with mpq_queue_peek() (it reads
 *    it in place, in the queue's memory) and is killed before
 *    mpq_queue_release(). The message was never finished with: the next
 *    get delivers it again.
 *
 * An Event tells the parent when a worker has reached the point where it
 * is to be killed.
 *
 * Build (installed library):
 *     cc -o crash_recovery crash_recovery.c $(pkg-config --cflags --libs mpq)
 * In the source tree:
 *     make build/examples/crash_recovery
 *     (= cc -Iinclude -o build/examples/crash_recovery \
 *        examples/crash_recovery.c -Lbuild/lib -lmpq -Wl,-rpath,$PWD/build/lib)
 * Run:
 *     build/examples/crash_recovery
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mpq.h>

#define NSEC_PER_SEC	1000000000LL
#define TOTAL		1000

/* What the lock guards. */
struct ledger {
	long a, b;		/* a + b == TOTAL between updates */
	long new_a, new_b;	/* the log: the update in progress */
	int logged;		/* 1 while an update is in progress */
	int64_t killed_at;	/* not guarded: when the parent sent SIGKILL */
};

static struct mpq_lock *lock;
static struct mpq_value *shared;	/* RawValue: struct ledger */
static struct mpq_event *ready;		/* "kill me now" */
static struct mpq_queue *q;

static int fail(const char *what, int ret)
{
	fprintf(stderr, "crash_recovery: %s: %s\n", what, mpq_strerror(ret));
	return 1;
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);	/* the same in every process */
	return ts.tv_sec * NSEC_PER_SEC + ts.tv_nsec;
}

/* Killed in the middle of moving 100 from a to b, the lock held. */
static int transfer_and_die(const void *arg, size_t len)
{
	struct ledger *l = mpq_value_ptr(shared);
	int ret = mpq_lock_acquire(lock, 10 * NSEC_PER_SEC);

	if (ret)
		return fail("victim: mpq_lock_acquire", ret);
	/* The log first: from here on, a repairer can finish the update. */
	l->new_a = l->a - 100;
	l->new_b = l->b + 100;
	l->logged = 1;
	/*
	 * A death may come between any two stores, so they must happen in
	 * this order: the compiler may not move the update above the log.
	 */
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	l->a = l->new_a;
	printf("victim: holds the lock, a = %ld, b = %ld: killed now\n",
	       l->a, l->b);
	mpq_event_set(ready);
	for (;;)
		pause();	/* never gets to b = new_b */
}

/* The next acquirer, blocked while the victim holds the lock. */
static int repair(const void *arg, size_t len)
{
	struct ledger *l = mpq_value_ptr(shared);
	int ret = mpq_lock_acquire(lock, 10 * NSEC_PER_SEC);
	int64_t woke = now_ns();

	printf("waiter: woken %.2f ms after the kill: %d, \"%s\"\n",
	       (woke - __atomic_load_n(&l->killed_at, __ATOMIC_ACQUIRE)) / 1e6,
	       ret, mpq_strerror(ret));
	if (ret != -EOWNERDEAD)
		return 1;
	/* The lock is ours; the ledger may be half-updated. */
	if (l->logged) {
		printf("waiter: a + b = %ld; the log says a = %ld, b = %ld: "
		       "roll forward\n", l->a + l->b, l->new_a, l->new_b);
		l->a = l->new_a;	/* again, if it was done already */
		l->b = l->new_b;
		l->logged = 0;
	}
	/* Repaired: the next acquirer may be told 0. */
	ret = mpq_lock_consistent(lock);
	if (!ret)
		ret = mpq_lock_release(lock);
	return ret ? fail("waiter", ret) : 0;
}

/* Takes the message in place, and is killed before releasing it. */
static int peek_and_die(const void *arg, size_t len)
{
	struct mpq_msg m = { 0 };
	int ret = mpq_queue_peek(q, &m, 10 * NSEC_PER_SEC);

	if (ret)
		return fail("consumer: mpq_queue_peek", ret);
	printf("consumer: peeked \"%.*s\", in the queue's memory: killed now\n",
	       (int)m.len, (char *)m.data);
	mpq_event_set(ready);
	for (;;)
		pause();	/* never gets to mpq_queue_release() */
}

/* Start target in a forked child. */
static int start(struct mpq_process **p, mpq_target_fn target)
{
	int ret = mpq_process_new(p, target, NULL, 0, NULL);

	if (!ret)
		ret = mpq_process_start(*p);
	return ret ? fail("mpq_process_start", ret) : 0;
}

/* Join p; its exit code, or -1000 if that cannot be had. */
static int join(struct mpq_process *p)
{
	int code = -1000;

	if (mpq_process_join(p, 30 * NSEC_PER_SEC) == 0)
		mpq_process_exitcode(p, &code);
	mpq_process_free(p);
	return code;
}

static int lock_demo(void)
{
	struct mpq_value_attr raw = { .flags = MPQ_VALUE_RAW };
	struct mpq_process *victim, *waiter;
	struct ledger *l;
	int ret, bad = 0;

	ret = mpq_lock_new(&lock, NULL);
	if (!ret)
		ret = mpq_value_new(&shared, sizeof(struct ledger), &raw);
	if (ret)
		return fail("new", ret);
	l = mpq_value_ptr(shared);
	l->a = TOTAL;

	if (start(&victim, transfer_and_die))
		return 1;
	ret = mpq_event_wait(ready, 10 * NSEC_PER_SEC);
	if (ret)
		return fail("waiting for the victim", ret);
	if (start(&waiter, repair))
		return 1;
	usleep(100 * 1000);		/* time to fall asleep in acquire */

	__atomic_store_n(&l->killed_at, now_ns(), __ATOMIC_RELEASE);
	mpq_process_kill(victim);
	ret = join(victim);
	printf("parent: the victim's exit code is %d (SIGKILL)\n", ret);
	bad |= ret != -9;
	bad |= join(waiter) != 0;

	/* Repaired and marked consistent: 0, and a whole ledger. */
	ret = mpq_lock_acquire(lock, 10 * NSEC_PER_SEC);
	printf("parent: acquire returned %d; a = %ld, b = %ld, a + b = %ld\n",
	       ret, l->a, l->b, l->a + l->b);
	bad |= ret != 0 || l->a + l->b != TOTAL || l->logged;
	if (ret == 0 || ret == -EOWNERDEAD)
		mpq_lock_release(lock);

	mpq_value_free(shared);
	mpq_lock_free(lock);
	return bad;
}

static int queue_demo(void)
{
	struct mpq_queue_attr attr = { .maxsize = 4, .msgsize = 64 };
	struct mpq_process *consumer;
	char buf[64];
	size_t len = sizeof(buf);
	int64_t t;
	int ret, bad = 0;

	ret = mpq_queue_new(&q, &attr);
	if (!ret)
		ret = mpq_queue_put(q, "job 42", 6, 0);
	if (ret)
		return fail("queue", ret);

	if (start(&consumer, peek_and_die))
		return 1;
	ret = mpq_event_wait(ready, 10 * NSEC_PER_SEC);
	if (ret)
		return fail("waiting for the consumer", ret);
	/* Taken by the peek: no longer counted, not yet gone either. */
	printf("parent: qsize while the consumer holds it: %d\n",
	       mpq_queue_qsize(q));
	mpq_process_kill(consumer);
	ret = join(consumer);
	printf("parent: the consumer's exit code is %d (SIGKILL)\n", ret);
	bad |= ret != -9;

	/*
	 * A get that may wait is what repairs after the dead; one with a
	 * zero timeout would not (see mpq_queue(3)).
	 */
	t = now_ns();
	ret = mpq_queue_get(q, buf, &len, 10 * NSEC_PER_SEC);
	if (ret)
		return fail("mpq_queue_get", ret);
	printf("parent: got \"%.*s\" again, %.2f ms later\n", (int)len, buf,
	       (now_ns() - t) / 1e6);
	bad |= len != 6 || memcmp(buf, "job 42", 6);
	mpq_queue_free(q);
	return bad;
}

int main(int argc, char **argv)
{
	int ret, bad;

	ret = mpq_init(&argc, &argv);
	if (ret)
		return fail("mpq_init", ret);
	/* Lines from several processes: write each one whole, at once. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	ret = mpq_event_new(&ready, NULL);
	if (ret)
		return fail("mpq_event_new", ret);

	bad = lock_demo();
	mpq_event_clear(ready);
	bad |= queue_demo();
	mpq_event_free(ready);
	printf("%s\n", bad ? "something went wrong" : "nothing was lost");
	return bad;
}
