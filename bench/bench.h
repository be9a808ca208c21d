/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the benchmarks in bench/: clocks, percentiles and
 * medians, the machine description, and running one child process at a
 * time safely (a child that fails or a run that hangs ends the benchmark
 * with a message instead of leaving it blocked forever).
 *
 * Header-only: everything is static inline.
 */
#ifndef MPQ_BENCH_H
#define MPQ_BENCH_H

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static inline uint64_t bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline int bench_cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

static inline int bench_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Nearest-rank percentile p (0 < p <= 100) of n sorted samples. */
static inline uint64_t bench_percentile(const uint64_t *sorted, size_t n,
					double p)
{
	size_t rank;

	if (!n)
		return 0;
	rank = (size_t)((p / 100.0) * (double)n + 0.999999);
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return sorted[rank - 1];
}

/* Median of n values (sorts them in place). */
static inline double bench_median(double *v, size_t n)
{
	if (!n)
		return 0;
	qsort(v, n, sizeof(*v), bench_cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/*
 * "<cpu model>[ (VM)], <n> CPUs, kernel <release>, load <1-min average>":
 * the load says whether something else was competing for the CPUs.
 */
static inline void bench_machine(char *buf, size_t size)
{
	char line[4096], model[256] = "unknown CPU", load[16] = "?";
	const char *vm = "";
	struct utsname u;
	FILE *f;

	f = fopen("/proc/cpuinfo", "r");
	if (f) {
		while (fgets(line, sizeof(line), f)) {
			char *colon = strchr(line, ':');

			if (!strncmp(line, "flags", 5) && strstr(line, " hypervisor"))
				vm = " (VM)";
			if (strncmp(line, "model name", 10) || !colon)
				continue;
			if (strcmp(model, "unknown CPU"))
				continue;	/* the first CPU's model is enough */
			colon++;
			while (*colon == ' ' || *colon == '\t')
				colon++;
			colon[strcspn(colon, "\n")] = 0;
			snprintf(model, sizeof(model), "%s", colon);
		}
		fclose(f);
	}
	f = fopen("/proc/loadavg", "r");
	if (f) {
		if (fscanf(f, "%15s", load) != 1)
			strcpy(load, "?");
		fclose(f);
	}
	if (uname(&u))
		strcpy(u.release, "?");
	snprintf(buf, size, "%s%s, %ld CPUs, kernel %s, load %s", model, vm,
		 sysconf(_SC_NPROCESSORS_ONLN), u.release, load);
}

/*
 * One child at a time. While a child is watched, a SIGCHLD handler looks at
 * it without reaping it: if it died or exited non-zero, the benchmark stops
 * at once (the parent might otherwise wait forever for a message the child
 * will never send). An alarm does the same for a run that takes longer
 * than bench_timeout_s (120, or the environment's BENCH_TIMEOUT), i.e. a
 * hang.
 */
static volatile pid_t bench_child;
static const char *volatile bench_what = "";
static unsigned int bench_timeout_s = 120;

static inline void bench_say(const char *s)
{
	ssize_t r = write(2, s, strlen(s));

	(void)r;
}

/*
 * Several children watched at once (e.g. 2 producers and 2 consumers):
 * bench_fork_member() forks one more, bench_wait_group() reaps them all,
 * bench_kill_group() stops them after a failure. The SIGCHLD handler and
 * the alarm treat every member the way they treat bench_child, and stop
 * the whole group when one member fails.
 */
#define BENCH_GROUP_MAX	8
static volatile pid_t bench_group[BENCH_GROUP_MAX];

/*
 * How a watched child ended, without reaping it: CLD_EXITED (non-zero
 * status), CLD_KILLED or CLD_DUMPED; 0 while it runs or if it exited 0.
 */
static inline int bench_child_failed(pid_t pid)
{
	siginfo_t si;

	memset(&si, 0, sizeof(si));
	if (pid > 0 &&
	    waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
	    si.si_pid == pid &&
	    !(si.si_code == CLD_EXITED && si.si_status == 0))
		return si.si_code;
	return 0;
}

/* Kill and reap every group member (safe in a signal handler). */
static inline void bench_kill_group(void)
{
	unsigned int i;

	for (i = 0; i < BENCH_GROUP_MAX; i++) {
		pid_t pid = bench_group[i];

		bench_group[i] = 0;
		if (pid > 0) {
			kill(pid, SIGKILL);
			while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
				;
		}
	}
}

static inline void bench_on_sigchld(int sig)
{
	int saved = errno, how;
	pid_t pid = bench_child;
	unsigned int i;

	(void)sig;
	how = bench_child_failed(pid);
	for (i = 0; !how && i < BENCH_GROUP_MAX; i++)
		how = bench_child_failed(bench_group[i]);
	if (how) {
		bench_child = 0;
		bench_say("bench: the child process of \"");
		bench_say(bench_what);
		bench_say(how == CLD_EXITED ? "\" failed (see above)\n" :
			  "\" was killed by a signal\n");
		if (pid > 0) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
		}
		bench_kill_group();
		_exit(1);
	}
	errno = saved;
}

static inline void bench_on_alarm(int sig)
{
	pid_t pid = bench_child;

	(void)sig;
	bench_child = 0;	/* its death is no news to the SIGCHLD handler */
	bench_say("bench: \"");
	bench_say(bench_what);
	bench_say("\" did not finish in time: a hang (lost message or lost wake-up?)\n");
	if (pid > 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
	bench_kill_group();
	_exit(1);
}

static inline void bench_install_handlers(void)
{
	const char *env = getenv("BENCH_TIMEOUT");
	struct sigaction sa;

	if (env && atoi(env) > 0)
		bench_timeout_s = (unsigned int)atoi(env);
	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
	sa.sa_handler = bench_on_sigchld;
	sigaction(SIGCHLD, &sa, NULL);
	sa.sa_flags = SA_RESTART;
	sa.sa_handler = bench_on_alarm;
	sigaction(SIGALRM, &sa, NULL);
}

/*
 * Write or read exactly len bytes, retrying short transfers and EINTR.
 * Returns 0, or -1 after saying what failed (end of file: the peer died).
 */
static inline int bench_write_full(int fd, const void *buf, size_t len)
{
	const unsigned char *p = (const unsigned char *)buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(stderr, "bench: write: %s\n",
				strerror(n < 0 ? errno : EIO));
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static inline int bench_read_full(int fd, void *buf, size_t len)
{
	unsigned char *p = (unsigned char *)buf;

	while (len) {
		ssize_t n = read(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(stderr, "bench: read: %s\n", n < 0 ?
				strerror(errno) : "end of file (the peer is gone)");
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/*
 * Placement. With MPQ_BENCH_PIN=split (the default where 2 or more CPUs
 * are allowed) the parent runs on the first allowed CPU and its children
 * on the following ones in turn, so the two processes of a round trip are
 * always on different CPUs; MPQ_BENCH_PIN=none leaves it to the scheduler.
 * Measured here: a sleeping wake-up costs about 5 us when both processes
 * share a vCPU and 40-60 us across vCPUs, so unpinned runs were bimodal
 * and a comparison between two of them meant nothing.
 */
/*
 * CPU time (user + system) of this process and of its reaped children, in
 * ns: the difference across a run, taken once its children (the other
 * side, a pool's workers) are reaped, is what every side spent, for the
 * cpu_ns_per_msg rows (fork, start and exit included).
 */
static inline uint64_t bench_cpu_ns(void)
{
	struct rusage a, b;

	if (getrusage(RUSAGE_SELF, &a) || getrusage(RUSAGE_CHILDREN, &b))
		return 0;
	return (uint64_t)(a.ru_utime.tv_sec + a.ru_stime.tv_sec +
			  b.ru_utime.tv_sec + b.ru_stime.tv_sec) * 1000000000ull +
	       (uint64_t)(a.ru_utime.tv_usec + a.ru_stime.tv_usec +
			  b.ru_utime.tv_usec + b.ru_stime.tv_usec) * 1000ull;
}

static int bench_cpus[64];
static int bench_ncpus;		/* 0: no pinning */
static int bench_nforked;

static inline void bench_pin_to(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(0, sizeof(set), &set);
}

static inline void bench_pin_init(void)
{
	const char *how = getenv("MPQ_BENCH_PIN");
	cpu_set_t set;
	int cpu;

	bench_ncpus = 0;
	if ((how && !strcmp(how, "none")) ||
	    sched_getaffinity(0, sizeof(set), &set))
		return;
	for (cpu = 0; cpu < CPU_SETSIZE && bench_ncpus < 64; cpu++)
		if (CPU_ISSET(cpu, &set))
			bench_cpus[bench_ncpus++] = cpu;
	if (bench_ncpus < 2) {
		bench_ncpus = 0;
		return;
	}
	bench_pin_to(bench_cpus[0]);
}

static inline const char *bench_placement(void)
{
	return bench_ncpus ? "split" : "none";
}

/*
 * Fork a child for the run named what. In the child it returns 0 (the child
 * dies with the parent); in the parent the child's pid, or -1.
 */
static inline pid_t bench_fork_raw(const char *what)
{
	pid_t parent = getpid(), pid;

	bench_what = what;
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0) {
		fprintf(stderr, "bench: fork: %s\n", strerror(errno));
		return -1;
	}
	bench_nforked++;
	if (pid == 0) {
		if (bench_ncpus)
			bench_pin_to(bench_cpus[bench_nforked % bench_ncpus]);
		signal(SIGCHLD, SIG_DFL);
		signal(SIGALRM, SIG_DFL);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
	}
	return pid;
}

static inline pid_t bench_fork(const char *what)
{
	pid_t pid = bench_fork_raw(what);

	if (pid <= 0)
		return pid;
	bench_child = pid;
	alarm(bench_timeout_s);
	return pid;
}

/*
 * Fork one more member of the group for the run named what: like
 * bench_fork(), 0 in the child, the pid or -1 in the parent. The alarm
 * starts again at each member.
 */
static inline pid_t bench_fork_member(const char *what)
{
	unsigned int i;
	pid_t pid;

	for (i = 0; i < BENCH_GROUP_MAX && bench_group[i]; i++)
		;
	if (i == BENCH_GROUP_MAX) {
		fprintf(stderr, "bench: more than %d children at once\n",
			BENCH_GROUP_MAX);
		return -1;
	}
	pid = bench_fork_raw(what);
	if (pid <= 0)
		return pid;
	bench_group[i] = pid;
	alarm(bench_timeout_s);
	return pid;
}

/*
 * Wait for every member of the group: 0 if all exited with status 0. On
 * the first that did not, the others are killed.
 */
static inline int bench_wait_group(void)
{
	unsigned int i;
	int status;

	for (i = 0; i < BENCH_GROUP_MAX; i++) {
		pid_t pid = bench_group[i];

		if (pid <= 0)
			continue;
		while (waitpid(pid, &status, 0) < 0) {
			if (errno != EINTR) {
				fprintf(stderr, "bench: waitpid: %s\n", strerror(errno));
				bench_kill_group();
				alarm(0);
				return -1;
			}
		}
		bench_group[i] = 0;
		if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
			fprintf(stderr, "bench: a child process of \"%s\" %s %d\n",
				bench_what, WIFEXITED(status) ?
				"exited with status" : "was killed by signal",
				WIFEXITED(status) ? WEXITSTATUS(status) :
				WTERMSIG(status));
			bench_kill_group();
			alarm(0);
			return -1;
		}
	}
	alarm(0);
	return 0;
}

/*
 * Wait for the watched child: 0 if it exited with status 0. ru (may be
 * NULL) gets the child's resource usage.
 */
static inline int bench_wait(pid_t pid, struct rusage *ru)
{
	struct rusage dummy;
	int status;

	while (wait4(pid, &status, 0, ru ? ru : &dummy) < 0) {
		if (errno != EINTR) {
			fprintf(stderr, "bench: wait4: %s\n", strerror(errno));
			return -1;
		}
	}
	alarm(0);
	bench_child = 0;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	fprintf(stderr, "bench: the child process of \"%s\" %s %d\n", bench_what,
		WIFEXITED(status) ? "exited with status" : "was killed by signal",
		WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
	return -1;
}

/* Stop the child after the parent side failed, and reap it. */
static inline void bench_kill(pid_t pid)
{
	int status;

	bench_child = 0;
	alarm(0);
	kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
}

/* Voluntary context switches (sleeps) of this process so far. */
static inline long bench_sleeps(void)
{
	struct rusage ru;

	return getrusage(RUSAGE_SELF, &ru) ? 0 : ru.ru_nvcsw;
}

#endif /* MPQ_BENCH_H */
