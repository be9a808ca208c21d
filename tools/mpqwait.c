// SPDX-License-Identifier: MIT
/*
 * mpqwait: how long processes wait on mpq objects, per object, kind of
 * wait and process: queue puts and gets that found the queue full or
 * empty and lock acquires (libmpq's USDT probes), and sleeps in read(2)
 * and write(2) on an object fd (the module's tracepoints, when loaded).
 */
#include <argp.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "mpqwait.h"
#include "mpqwait.skel.h"
#include "tool.h"

const char *mpq_tool_name = "mpqwait";

static struct {
	struct mpq_tool_opts o;
} env = { .o = { .intervals = true, .interval = INT_MAX / 2,
		 .count = INT_MAX } };

const char *argp_program_version = "mpqwait 0.2";
static const char doc[] =
"Sum the time processes wait on mpq queues and locks, per object and process.\n"
"\n"
"USAGE: mpqwait [-h] [-j] [-T] [-p PID] [-q ID] [-l LIB] [-P] [-v]\n"
"               [interval] [count]\n"
"\n"
"EXAMPLES:\n"
"    mpqwait             # until Ctrl-C, then one table\n"
"    mpqwait 1 5         # a table every second, 5 times\n"
"    mpqwait -q 7        # only object 7 (see mpqstat)\n"
"    mpqwait -p 185 -j   # only process 185, as JSON\n";

static const struct argp_option opts[] = {
	{ "pid", 'p', "PID", 0, "Only waits of this process", 0 },
	{ "queue", 'q', "ID", 0, "Only this object (id as mpqstat shows it)", 0 },
	{ "json", 'j', NULL, 0, "One JSON object per interval", 0 },
	{ "timestamp", 'T', NULL, 0, "Print the time of each interval", 0 },
	{ "lib", 'l', "PATH", 0, "libmpq, or a program with it linked in (default: libmpq.so.0 as the loader finds it)", 0 },
	{ "pin", 'P', NULL, 0, "Pin the maps under /sys/fs/bpf/mpq/mpqwait", 0 },
	{ "verbose", 'v', NULL, 0, "Print libbpf's log", 0 },
	{ NULL, 'h', NULL, OPTION_HIDDEN, "Show this help", 0 },
	{},
};

static error_t parse_arg(int key, char *arg, struct argp_state *state)
{
	return mpq_tool_parse(key, arg, state, &env.o);
}

static const char *kind_name(__u32 kind)
{
	switch (kind) {
	case MPQWAIT_QUEUE:
		return "queue";
	case MPQWAIT_LOCK:
		return "lock";
	case MPQWAIT_KERNEL:
		return "kernel";
	default:
		return "?";
	}
}

struct row {
	struct mpqwait_key key;
	struct mpqwait_val val;
};

static int by_total(const void *a, const void *b)
{
	const struct row *x = a, *y = b;

	return x->val.total_ns < y->val.total_ns ? 1 :
	       x->val.total_ns > y->val.total_ns ? -1 : 0;
}

/* Print and clear the table; 0 or -errno. */
static int print_waits(int fd)
{
	static struct row rows[MPQWAIT_MAX_ENTRIES];
	struct mpqwait_key *prev = NULL, next;
	int n = 0, i;

	while (n < MPQWAIT_MAX_ENTRIES &&
	       !bpf_map_get_next_key(fd, prev, &next)) {
		rows[n].key = next;
		if (bpf_map_lookup_elem(fd, &next, &rows[n].val))
			return -errno;
		prev = &rows[n].key;
		n++;
	}
	for (i = 0; i < n; i++)
		bpf_map_delete_elem(fd, &rows[i].key);
	qsort(rows, n, sizeof(rows[0]), by_total);

	if (env.o.json) {
		printf("{\"time\": \"%s\", \"waits\": [", mpq_tool_clock());
		for (i = 0; i < n; i++) {
			printf("%s{\"id\": %llu, \"kind\": \"%s\", \"pid\": %u, \"comm\": ",
			       i ? ", " : "",
			       (unsigned long long)rows[i].key.id,
			       kind_name(rows[i].key.kind), rows[i].key.tgid);
			/* A comm is any bytes its process chose. */
			mpq_tool_json_string(stdout, rows[i].val.comm);
			printf(", \"count\": %llu, \"total_ns\": %llu, \"max_ns\": %llu}",
			       (unsigned long long)rows[i].val.count,
			       (unsigned long long)rows[i].val.total_ns,
			       (unsigned long long)rows[i].val.max_ns);
		}
		printf("]}\n");
		fflush(stdout);
		return 0;
	}
	if (env.o.timestamp)
		printf("%-8s\n", mpq_tool_clock());
	printf("%-8s %-6s %7s %-15s %7s %10s %9s %9s\n", "ID", "KIND", "PID",
	       "COMM", "WAITS", "TOTAL(ms)", "AVG(us)", "MAX(us)");
	for (i = 0; i < n; i++) {
		const struct mpqwait_val *v = &rows[i].val;

		printf("%-8llu %-6s %7u %-15.15s %7llu %10.3f %9.1f %9.1f\n",
		       (unsigned long long)rows[i].key.id,
		       kind_name(rows[i].key.kind), rows[i].key.tgid, v->comm,
		       (unsigned long long)v->count, v->total_ns / 1e6,
		       v->count ? v->total_ns / 1e3 / v->count : 0.0,
		       v->max_ns / 1e3);
	}
	if (!n)
		printf("no waits\n");
	printf("\n");
	fflush(stdout);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct argp argp = {
		.options = opts,
		.parser = parse_arg,
		.doc = doc,
	};
	bool module = !access("/sys/module/mpq", F_OK);
	char lib[PATH_MAX];
	struct mpqwait_bpf *obj;
	int err;

	err = argp_parse(&argp, argc, argv, 0, NULL, NULL);
	if (err)
		return err;
	if (mpq_tool_start(MPQ_NEED_CAPS | MPQ_NEED_BTF, env.o.lib, lib,
			   sizeof(lib), env.o.verbose))
		return 1;

	obj = mpqwait_bpf__open();
	if (!obj) {
		fprintf(stderr, "mpqwait: cannot open the BPF object: %s\n",
			strerror(errno));
		return 1;
	}
	obj->rodata->targ_id = env.o.id;
	obj->rodata->targ_tgid = env.o.pid;
	/* Without the module only the library's waits exist. */
	if (!module) {
		bpf_program__set_autoload(obj->progs.kernel_wait_begin, false);
		bpf_program__set_autoload(obj->progs.kernel_wait_end, false);
	}
	err = mpqwait_bpf__load(obj);
	if (err) {
		fprintf(stderr, "mpqwait: cannot load the BPF programs: %s (-v shows why)\n",
			strerror(-err));
		goto out;
	}
	err = 1;
	if (mpq_tool_attach_usdt(obj->progs.queue_wait_begin,
			&obj->links.queue_wait_begin, lib, "queue_wait_begin",
			true) ||
	    mpq_tool_attach_usdt(obj->progs.queue_wait_end, &obj->links.queue_wait_end,
			lib, "queue_wait_end", true) ||
	    mpq_tool_attach_usdt(obj->progs.lock_wait_begin,
			&obj->links.lock_wait_begin, lib, "lock_wait_begin",
			false) ||
	    mpq_tool_attach_usdt(obj->progs.lock_wait_end, &obj->links.lock_wait_end,
			lib, "lock_wait_end", false))
		goto out;
	if (module) {
		obj->links.kernel_wait_begin =
			bpf_program__attach(obj->progs.kernel_wait_begin);
		obj->links.kernel_wait_end =
			bpf_program__attach(obj->progs.kernel_wait_end);
		if (!obj->links.kernel_wait_begin ||
		    !obj->links.kernel_wait_end) {
			fprintf(stderr, "mpqwait: cannot attach to the mpq tracepoints: %s%s\n",
				strerror(errno), mpq_tool_perm_hint(-errno));
			goto out;
		}
	}
	if (env.o.pin && mpq_tool_pin(obj->obj))
		goto out;

	fprintf(stderr, "Tracing waits on mpq objects in %s%s... Hit Ctrl-C to end.\n",
		lib, module ? " and the module" : "");
	err = mpq_tool_report(env.o.interval, env.o.count, print_waits,
			      bpf_map__fd(obj->maps.waits), "waits");
out:
	if (env.o.pin)
		mpq_tool_unpin(obj->obj);
	mpqwait_bpf__destroy(obj);
	return err != 0;
}
