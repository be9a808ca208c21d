// SPDX-License-Identifier: MIT
/*
 * The user side every mpq tool shares (see tool.h).
 */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <link.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <bpf/libbpf.h>
#include <linux/capability.h>
#include <linux/mpq.h>

#include "tool.h"

#define MPQ_PIN_ROOT	"/sys/fs/bpf/mpq"

volatile sig_atomic_t mpq_tool_exiting;
static bool mpq_tool_verbose;

/* A number of at least min, or argp's error (which exits). */
static long mpq_tool_num(const char *arg, struct argp_state *state,
			 const char *what, long min)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(arg, &end, 10);
	if (errno || end == arg || *end || v < min || v > INT_MAX)
		argp_error(state, "invalid %s: %s", what, arg);
	return v;
}

error_t mpq_tool_parse(int key, char *arg, struct argp_state *state,
		       struct mpq_tool_opts *o)
{
	char *end;

	switch (key) {
	case 'h':
		argp_state_help(state, stderr, ARGP_HELP_STD_HELP);
		break;
	case 'p':
		o->pid = (pid_t)mpq_tool_num(arg, state, "PID", 1);
		break;
	case 'q':
		errno = 0;
		o->id = strtoull(arg, &end, 0);
		if (errno || end == arg || *end || !o->id)
			argp_error(state, "invalid object id: %s", arg);
		break;
	case 'j':
		o->json = true;
		break;
	case 'T':
		o->timestamp = true;
		break;
	case 'l':
		o->lib = arg;
		break;
	case 'P':
		o->pin = true;
		break;
	case 'v':
		o->verbose = true;
		break;
	case ARGP_KEY_ARG:
		if (!o->intervals || state->arg_num > 1)
			argp_usage(state);
		if (state->arg_num == 0)
			o->interval = (int)mpq_tool_num(arg, state, "interval", 1);
		else
			o->count = (int)mpq_tool_num(arg, state, "count", 1);
		break;
	default:
		return ARGP_ERR_UNKNOWN;
	}
	return 0;
}

#ifndef CAP_PERFMON
#define CAP_PERFMON	38
#endif
#ifndef CAP_BPF
#define CAP_BPF		39
#endif

/*
 * Loading BPF programs and attaching them to tracepoints and uprobes
 * takes CAP_BPF and CAP_PERFMON (Linux 5.8), or CAP_SYS_ADMIN, which
 * root has and which older kernels ask for instead. The effective set is
 * what the kernel checks, not the euid: a user given the two (setcap on
 * the tool, or ambient capabilities) runs the tools too.
 */
static bool mpq_tool_capable(void)
{
	struct __user_cap_header_struct h = {
		.version = _LINUX_CAPABILITY_VERSION_3,
	};
	struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3] = { 0 };

	if (syscall(SYS_capget, &h, d))
		return false;
#define MPQ_HAS_CAP(c)	(d[(c) / 32].effective & (1U << ((c) % 32)))
	return MPQ_HAS_CAP(CAP_SYS_ADMIN) ||
	       (MPQ_HAS_CAP(CAP_BPF) && MPQ_HAS_CAP(CAP_PERFMON));
#undef MPQ_HAS_CAP
}

/*
 * CAP_BPF and CAP_PERFMON let the tools load their programs; attaching
 * them is the kernel's own check, stricter on some: Linux 6.1 asks
 * CAP_SYS_ADMIN for a uprobe (the USDT probes), Debian's kernels ask it
 * for every perf event while kernel.perf_event_paranoid is 3, their
 * default (tracepoints included), and libbpf finds a tracepoint's id in
 * tracefs, which only root may read unless mounted otherwise.
 */
const char *mpq_tool_perm_hint(int err)
{
	if (err != -EACCES && err != -EPERM)
		return "";
	return " (beyond CAP_BPF and CAP_PERFMON the kernel may want CAP_SYS_ADMIN: for uprobes on Linux 6.1, for any perf event while kernel.perf_event_paranoid > 2; and tracepoints read /sys/kernel/tracing, root's alone by default)";
}

int mpq_tool_check(unsigned int need)
{
	if ((need & MPQ_NEED_CAPS) && !mpq_tool_capable()) {
		fprintf(stderr, "%s: needs CAP_BPF and CAP_PERFMON, or root (it loads BPF programs)\n",
			mpq_tool_name);
		return 1;
	}
	if ((need & MPQ_NEED_BTF) && access("/sys/kernel/btf/vmlinux", R_OK)) {
		fprintf(stderr, "%s: this kernel has no BTF (/sys/kernel/btf/vmlinux): CO-RE needs CONFIG_DEBUG_INFO_BTF=y\n",
			mpq_tool_name);
		return 1;
	}
	if ((need & MPQ_NEED_MODULE) && access("/sys/module/mpq", F_OK)) {
		fprintf(stderr, "%s: the mpq module is not loaded (no /sys/module/mpq): insmod mpq.ko\n",
			mpq_tool_name);
		return 1;
	}
	return 0;
}

static int mpq_libbpf_print(enum libbpf_print_level level, const char *fmt,
			    va_list ap)
{
	/* Without -v the tool says in one line what failed, not libbpf. */
	if (!mpq_tool_verbose)
		return 0;
	return vfprintf(stderr, fmt, ap);
}

static void mpq_tool_sig(int sig)
{
	mpq_tool_exiting = 1;
}

void mpq_tool_setup(bool verbose)
{
	struct sigaction sa = { .sa_handler = mpq_tool_sig };

	mpq_tool_verbose = verbose;
	libbpf_set_print(mpq_libbpf_print);
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	/* A closed pipe (| head) ends the tool as Ctrl-C would. */
	signal(SIGPIPE, SIG_IGN);
}

int mpq_tool_find_lib(const char *path, char *out, size_t len)
{
	struct link_map *lm = NULL;
	void *h;

	if (!path)
		path = getenv("MPQ_LIB");
	if (path) {
		if (access(path, R_OK)) {
			fprintf(stderr, "%s: %s: %s\n", mpq_tool_name, path,
				strerror(errno));
			return 1;
		}
		snprintf(out, len, "%s", path);
		return 0;
	}
	/* Where a program linked with -lmpq would find it. */
	h = dlopen("libmpq.so.0", RTLD_LAZY | RTLD_LOCAL);
	if (!h || dlinfo(h, RTLD_DI_LINKMAP, &lm) || !lm || !lm->l_name[0]) {
		fprintf(stderr, "%s: libmpq.so.0 not found: give -l PATH (the library, or a program linked statically with libmpq)\n",
			mpq_tool_name);
		if (h)
			dlclose(h);
		return 1;
	}
	if (!realpath(lm->l_name, out))
		snprintf(out, len, "%s", lm->l_name);
	dlclose(h);
	return 0;
}

int mpq_tool_start(unsigned int need, const char *path, char *lib,
		   size_t len, bool verbose)
{
	if (mpq_tool_check(need))
		return 1;
	if (lib && mpq_tool_find_lib(path, lib, len))
		return 1;
	mpq_tool_setup(verbose);
	return 0;
}

int mpq_tool_attach_usdt(struct bpf_program *prog, struct bpf_link **link,
			 const char *lib, const char *probe, bool required)
{
	*link = bpf_program__attach_usdt(prog, -1, lib, "mpq", probe, NULL);
	if (*link)
		return 0;
	if (errno == EACCES || errno == EPERM) {
		fprintf(stderr, "%s: %s: cannot attach to mpq:%s: %s%s\n",
			mpq_tool_name, lib, probe, strerror(errno),
			mpq_tool_perm_hint(-errno));
		return 1;
	}
	if (required) {
		fprintf(stderr, "%s: %s: no USDT probe mpq:%s (%s; a libmpq built without <sys/sdt.h>?)\n",
			mpq_tool_name, lib, probe, strerror(errno));
		return 1;
	}
	if (mpq_tool_verbose)
		fprintf(stderr, "%s: %s has no mpq:%s yet: not traced\n",
			mpq_tool_name, lib, probe);
	return 0;
}

int mpq_tool_report(int interval, int count, int (*print)(int fd), int fd,
		    const char *what)
{
	int err = 0, i;

	/* After Ctrl-C, one last table of what the interval had so far. */
	for (i = 0; i < count && !mpq_tool_exiting; i++) {
		mpq_tool_sleep(interval);
		err = print(fd);
		if (err) {
			fprintf(stderr, "%s: reading the %s: %s\n",
				mpq_tool_name, what, strerror(-err));
			break;
		}
	}
	return err;
}

int mpq_tool_pin(struct bpf_object *obj)
{
	char dir[PATH_MAX / 2], path[PATH_MAX];
	struct bpf_map *map;
	int ret;

	snprintf(dir, sizeof(dir), "%s/%s", MPQ_PIN_ROOT, mpq_tool_name);
	mkdir(MPQ_PIN_ROOT, 0700);
	if (mkdir(dir, 0700) && errno != EEXIST) {
		ret = -errno;
		fprintf(stderr, "%s: %s: %s (is bpffs mounted on /sys/fs/bpf?)\n",
			mpq_tool_name, dir, strerror(errno));
		return ret;
	}
	bpf_object__for_each_map(map, obj) {
		/* Internal maps (.rodata, .bss) hold no results. */
		if (bpf_map__is_internal(map))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, bpf_map__name(map));
		unlink(path);
		ret = bpf_map__pin(map, path);
		if (ret) {
			fprintf(stderr, "%s: pinning %s: %s\n", mpq_tool_name,
				path, strerror(-ret));
			return ret;
		}
	}
	fprintf(stderr, "%s: maps pinned under %s (bpftool map dump pinned %s/<map>)\n",
		mpq_tool_name, dir, dir);
	return 0;
}

void mpq_tool_unpin(struct bpf_object *obj)
{
	char dir[PATH_MAX];
	struct bpf_map *map;

	bpf_object__for_each_map(map, obj)
		if (bpf_map__is_pinned(map))
			bpf_map__unpin(map, NULL);
	snprintf(dir, sizeof(dir), "%s/%s", MPQ_PIN_ROOT, mpq_tool_name);
	rmdir(dir);
}

void mpq_tool_sleep(int secs)
{
	struct timespec ts = { .tv_sec = secs };

	/* A signal interrupts it: the tool then sees mpq_tool_exiting. */
	nanosleep(&ts, NULL);
}

const char *mpq_tool_clock(void)
{
	static char buf[16];
	time_t t = time(NULL);
	struct tm tm;

	strftime(buf, sizeof(buf), "%H:%M:%S", localtime_r(&t, &tm));
	return buf;
}

const char *mpq_tool_type_name(__u32 type)
{
	switch (type) {
	case MPQ_OBJ_QUEUE:
		return "queue";
	case MPQ_OBJ_PIPE:
		return "pipe";
	case MPQ_OBJ_SHM:
		/* A block: a lock, a value, a SharedMemory... (/proc/mpq says). */
		return "shm";
	default:
		return "?";
	}
}

#define MPQ_HIST_STARS	40

static void mpq_stars(FILE *f, __u32 val, __u32 max)
{
	int n = max ? (int)((__u64)val * MPQ_HIST_STARS / max) : 0, i;

	if (val && !n)
		n = 1;		/* something is there: show it */
	for (i = 0; i < MPQ_HIST_STARS; i++)
		fputc(i < n ? '*' : ' ', f);
}

void mpq_hist_print(FILE *f, const __u32 *slots, int nslots,
		    const char *unit)
{
	int i, first = -1, last = -1;
	__u32 max = 0;

	for (i = 0; i < nslots; i++) {
		if (!slots[i])
			continue;
		if (first < 0)
			first = i;
		last = i;
		if (slots[i] > max)
			max = slots[i];
	}
	fprintf(f, "%*s%-*s : count    distribution\n", 11, "", 15, unit);
	if (first < 0)
		return;
	for (i = first; i <= last; i++) {
		unsigned long long lo = i ? 1ULL << (i - 1) : 0;
		unsigned long long hi = (1ULL << i) - 1;

		/* 24 columns for the range, 10 for the count, 42 bars. */
		fprintf(f, "%11llu -> %-10llu : %-8u |", lo, hi, slots[i]);
		mpq_stars(f, slots[i], max);
		fputs("|\n", f);
	}
}

void mpq_hist_json(FILE *f, const __u32 *slots, int nslots)
{
	bool any = false;
	int i;

	fputc('[', f);
	for (i = 0; i < nslots; i++) {
		if (!slots[i])
			continue;
		fprintf(f, "%s{\"low\": %llu, \"high\": %llu, \"count\": %u}",
			any ? ", " : "", i ? 1ULL << (i - 1) : 0,
			(1ULL << i) - 1, slots[i]);
		any = true;
	}
	fputc(']', f);
}

void mpq_tool_json_string(FILE *f, const char *str)
{
	const unsigned char *s = (const unsigned char *)str;

	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fprintf(f, "\\%c", *s);
		else if (*s >= 0x20 && *s < 0x7f)
			fputc(*s, f);
		else
			fprintf(f, "\\u%04x", *s);
	}
	fputc('"', f);
}
