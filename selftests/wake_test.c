// SPDX-License-Identifier: GPL-2.0
/*
 * A death never swallows a wake-up: when a release (or a notify) wakes one
 * sleeper and that sleeper is killed before it has taken what it was woken
 * for, another sleeper gets it. One test per object with a wake-one
 * hand-off: Lock, RLock, a Value's lock, Semaphore, Condition.notify(1).
 *
 * Each round makes the race happen rather than hope for it: every process
 * runs on one CPU, and the sleepers run at SCHED_IDLE, so a woken sleeper
 * does not run until the parent lets it. Two sleepers queue up (the kernel
 * wakes same-priority futex sleepers first come, first served); the parent
 * releases, which wakes the first; for the locks it then takes the lock
 * itself by the fast path (the "third process" of the race, which sets no
 * FUTEX_WAITERS bit), lets the first sleeper run for a random while (so it
 * is killed at a random point of its wake-up: not yet run, in the middle,
 * or done), kills it, and lets the lock go. The second sleeper must then
 * get what the first was woken for. It waits with MPQ_FOREVER (a timeout
 * would hide a lost wake-up: it takes a free lock when it times out); the
 * parent's hang guard is MPQ_WAKE_GUARD_MS, far longer than anything here
 * needs (the promise is "it gets it", not "it gets it fast"): a round that
 * wedges fails after it.
 */
#include <sched.h>
#include <stdio.h>

#include "kselftest_harness.h"
#include "helpers.h"

#define MPQ_WAKE_GUARD_MS	10000

/* What the children of a test share with it. */
struct shared {
	int asleep[2];		/* pid of each sleeper, set as it goes to wait */
	int returned[2];	/* Condition: back from wait(), under the lock */
};

/* Rounds per object: a few milliseconds each natively, more under TCG. */
static int wake_rounds(void)
{
	return getenv("MPQ_IN_VM") ? 40 : 100;
}

/* One CPU for everyone: the parent decides who runs. */
static int pin_to_one_cpu(void)
{
	cpu_set_t set;

	if (sched_getaffinity(0, sizeof(set), &set))
		return -errno;
	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
		if (CPU_ISSET(cpu, &set)) {
			CPU_ZERO(&set);
			CPU_SET(cpu, &set);
			return sched_setaffinity(0, sizeof(set), &set) ? -errno : 0;
		}
	}
	return -ENOENT;
}

static void go_idle(void)
{
	struct sched_param p = { 0 };

	sched_setscheduler(0, SCHED_IDLE, &p);
}

/* Is pid asleep (state S in /proc/pid/stat)? */
static int is_asleep(pid_t pid)
{
	char path[64], buf[256], *p;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	p = strrchr(buf, ')');
	return p && p[1] == ' ' && p[2] == 'S';
}

/* Wait (a few seconds at most) until pid sleeps in its wait. */
static int wait_asleep(pid_t pid)
{
	int i;

	for (i = 0; i < 5000; i++) {
		if (is_asleep(pid))
			return 0;
		sleep_ms(1);
	}
	return -1;
}

/*
 * Let the woken sleeper run for a random while (often not at all), so
 * that it dies at a random point of its wake-up.
 */
static void let_it_run(uint64_t *seed)
{
	uint64_t r = rnd(seed) % 4;

	if (r == 0)
		return;
	usleep((useconds_t)(rnd(seed) % (r == 1 ? 20 : 200)));
}

/* The object under test, as the rounds drive it. */
struct handoff {
	/* The sleeper: wait for it, for ever; 0 when it got it. */
	int (*sleeper)(void *obj);
	/* Make the object unavailable before the sleepers come. */
	int (*hold)(void *obj);
	/* Release, waking one sleeper. */
	int (*give)(void *obj);
	/* A third party takes it by the fast path, if free: 1 if taken. */
	int (*steal)(void *obj);
	/* ...and lets it go again. */
	int (*unsteal)(void *obj);
	/*
	 * The first sleeper is dead: if it got what the give() was for
	 * (and took it with it), give the second sleeper its own.
	 */
	int (*after)(void *obj, struct shared *sh);
	void *obj;
};

static struct shared *sleeper_shared;
static int sleeper_index;

static int sleeper_main(const struct handoff *h, struct shared *sh, int i)
{
	go_idle();
	sleeper_shared = sh;
	sleeper_index = i;
	__atomic_store_n(&sh->asleep[i], getpid(), __ATOMIC_RELEASE);
	return h->sleeper(h->obj);
}

/* The rounds; a failed one says which, and how its second sleeper ended. */
static void run_rounds(struct __test_metadata *_metadata,
		      const struct handoff *h, int rounds)
{
	struct shared *sh = shared_alloc(sizeof(*sh));
	uint64_t seed = 0x2545f4914f6cdd1dULL ^ (uint64_t)getpid();
	int round;

	ASSERT_NE(NULL, sh);
	ASSERT_EQ(0, pin_to_one_cpu());
	for (round = 0; round < rounds; round++) {
		pid_t pid[2];
		int st, i, stolen;

		memset(sh, 0, sizeof(*sh));
		ASSERT_EQ(0, h->hold(h->obj));
		for (i = 0; i < 2; i++) {
			pid[i] = fork();
			if (pid[i] == 0)
				_exit(sleeper_main(h, sh, i));
			ASSERT_NE(0, wait_for_flag(&sh->asleep[i], 5000));
			ASSERT_EQ(0, wait_asleep(pid[i]));
		}
		/* Wakes the first; it does not run until we block. */
		ASSERT_EQ(0, h->give(h->obj));
		stolen = h->steal ? h->steal(h->obj) : 0;
		let_it_run(&seed);
		kill(pid[0], SIGKILL);
		st = wait_child(pid[0], MPQ_WAKE_GUARD_MS);
		ASSERT_TRUE(st == 128 + SIGKILL || st == 0);
		if (stolen)
			ASSERT_EQ(0, h->unsteal(h->obj));
		if (h->after)
			ASSERT_EQ(0, h->after(h->obj, sh));
		st = wait_child(pid[1], MPQ_WAKE_GUARD_MS);
		if (st)
			TH_LOG("round %d: the second sleeper ended with %d (-1: still waiting after %d ms)",
			       round, st, MPQ_WAKE_GUARD_MS);
		ASSERT_EQ(0, st);
	}
	munmap(sh, sizeof(*sh));
}

/* Lock, RLock, a Value's lock. */
static int lock_sleeper(void *obj)
{
	struct mpq_lock *l = obj;
	int r = mpq_lock_acquire(l, MPQ_FOREVER);

	if (r && r != -EOWNERDEAD)
		return 1;
	if (r)
		mpq_lock_consistent(l);
	return mpq_lock_release(l) ? 2 : 0;
}

static int lock_hold(void *obj)
{
	int r = mpq_lock_acquire(obj, MPQ_FOREVER);

	if (r == -EOWNERDEAD)
		r = mpq_lock_consistent(obj);
	return r;
}

static int lock_give(void *obj)
{
	return mpq_lock_release(obj);
}

static int lock_steal(void *obj)
{
	int r = mpq_lock_acquire(obj, 0);

	if (r == -EOWNERDEAD)
		r = mpq_lock_consistent(obj);
	return r == 0;
}

static int lock_unsteal(void *obj)
{
	return mpq_lock_release(obj);
}

static void lock_rounds(struct __test_metadata *_metadata, struct mpq_lock *l)
{
	struct handoff h = {
		.sleeper = lock_sleeper, .hold = lock_hold, .give = lock_give,
		.steal = lock_steal, .unsteal = lock_unsteal, .obj = l,
	};

	run_rounds(_metadata, &h, wake_rounds());
}

TEST(lock_woken_waiter_killed_passes_the_lock_on)
{
	struct mpq_lock *l;

	ASSERT_EQ(0, mpq_lock_new(&l, NULL));
	lock_rounds(_metadata, l);
	mpq_lock_free(l);
}

TEST(rlock_woken_waiter_killed_passes_the_lock_on)
{
	struct mpq_lock *l;

	ASSERT_EQ(0, mpq_rlock_new(&l, NULL));
	lock_rounds(_metadata, l);
	mpq_lock_free(l);
}

TEST(value_lock_woken_waiter_killed_passes_the_lock_on)
{
	struct mpq_value *v;

	ASSERT_EQ(0, mpq_value_new(&v, sizeof(uint64_t), NULL));
	ASSERT_NE(NULL, mpq_value_get_lock(v));
	lock_rounds(_metadata, mpq_value_get_lock(v));
	mpq_value_free(v);
}

/* Semaphore: the sleepers wait for a unit that the parent releases. */
static int sem_sleeper(void *obj)
{
	return mpq_sem_acquire(obj, MPQ_FOREVER) ? 1 : 0;
}

/*
 * The unit is gone only if a sleeper took it: the first, done or killed
 * (or the second already). Then the second needs another. A unit still
 * there is the one the second must get.
 */
static int sem_after(void *obj, struct shared *sh)
{
	return mpq_sem_get_value(obj) == 0 ? mpq_sem_release(obj) : 0;
}

static int sem_hold(void *obj)
{
	/* A unit left by a round's first sleeper, if it got one and died. */
	while (mpq_sem_acquire(obj, 0) == 0)
		;
	return 0;
}

static int sem_give(void *obj)
{
	return mpq_sem_release(obj);
}

TEST(sem_woken_waiter_killed_passes_the_unit_on)
{
	struct handoff h = {
		.sleeper = sem_sleeper, .hold = sem_hold, .give = sem_give,
		.after = sem_after,
	};
	struct mpq_sem *s;

	ASSERT_EQ(0, mpq_sem_new(&s, 0, NULL));
	h.obj = s;
	run_rounds(_metadata, &h, wake_rounds());
	mpq_sem_free(s);
}

/*
 * Condition: the sleepers wait to be notified; notify(1) wakes one. A
 * waiter that dies inside wait() after being notified must not take the
 * notification with it: the second waiter returns 0, not -ETIMEDOUT.
 */
static int cond_sleeper(void *obj)
{
	int r = mpq_cond_acquire(obj, MPQ_FOREVER);

	if (r)
		return 3;
	r = mpq_cond_wait(obj, MPQ_FOREVER);
	__atomic_store_n(&sleeper_shared->returned[sleeper_index], 1,
			 __ATOMIC_RELEASE);
	if (r == -EOWNERDEAD) {
		mpq_lock_consistent(mpq_cond_get_lock(obj));
		r = 0;
	}
	if (mpq_cond_release(obj))
		return 2;
	return r ? 1 : 0;
}

static int cond_hold(void *obj)
{
	return 0;
}

static int cond_give(void *obj)
{
	int r = mpq_cond_acquire(obj, MPQ_FOREVER);

	if (r == -EOWNERDEAD)
		r = mpq_lock_consistent(mpq_cond_get_lock(obj));
	if (r)
		return r;
	r = mpq_cond_notify(obj, 1);
	return mpq_cond_release(obj) ? -EIO : r;
}

/*
 * The first waiter got the notification if it came back from wait(), or
 * may have if it died holding the lock (-EOWNERDEAD: it cannot be told
 * whether it had taken the signal yet): then notify the second again.
 * Killed anywhere else, it had not, and the second must get that one.
 */
static int cond_after(void *obj, struct shared *sh)
{
	int r = mpq_cond_acquire(obj, MPQ_FOREVER), again = 0;

	if (r == -EOWNERDEAD) {
		again = 1;
		r = mpq_lock_consistent(mpq_cond_get_lock(obj));
	}
	if (r)
		return r;
	if (again || __atomic_load_n(&sh->returned[0], __ATOMIC_ACQUIRE))
		r = mpq_cond_notify(obj, 1);
	return mpq_cond_release(obj) ? -EIO : r;
}

static int cond_steal(void *obj)
{
	int r = mpq_cond_acquire(obj, 0);

	if (r == -EOWNERDEAD)
		r = mpq_lock_consistent(mpq_cond_get_lock(obj));
	return r == 0;
}

static int cond_unsteal(void *obj)
{
	return mpq_cond_release(obj);
}

TEST(cond_notified_waiter_killed_passes_the_notify_on)
{
	struct handoff h = {
		.sleeper = cond_sleeper, .hold = cond_hold, .give = cond_give,
		.steal = cond_steal, .unsteal = cond_unsteal,
		.after = cond_after,
	};
	struct mpq_cond *c;

	ASSERT_EQ(0, mpq_cond_new(&c, NULL, NULL));
	h.obj = c;
	run_rounds(_metadata, &h, wake_rounds());
	mpq_cond_free(c);
}

TEST_HARNESS_MAIN
