// SPDX-License-Identifier: MIT
/*
 * mpqlat: how long messages wait in mpq queues, from put to get, as a
 * log2 histogram per interval; all queues together or one per queue.
 *
 * It attaches to the USDT probes mpq:queue_put and mpq:queue_get of
 * libmpq (lib/probes.h), in every process that uses the library file it
 * traces. No module is needed: memfd queues are traced as well.
 */
#include <argp.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "mpqlat.h"
#include "mpqlat.skel.h"
#include "tool.h"

const char *mpq_tool_name = "mpqlat";

static struct {
	struct mpq_tool_opts o;
	bool per_queue;
	bool ns;
} env = { .o = { .intervals = true, .interval = INT_MAX / 2,
		 .count = INT_MAX } };

const char *argp_program_version = "mpqlat 0.2";
static const char doc[] =
"Summarize the time messages spend in mpq queues, put to get, as a histogram.\n"
"\n"
"USAGE: mpqlat [-h] [-Q] [-n] [-j] [-T] [-p PID] [-q ID] [-l LIB] [-P] [-v]\n"
"              [interval] [count]\n"
"\n"
"EXAMPLES:\n"
"    mpqlat              # all queues, one histogram in us, until Ctrl-C\n"
"    mpqlat 1 10         # print every second, 10 times\n"
"    mpqlat -Q           # a histogram per queue\n"
"    mpqlat -q 7 -n      # only queue 7 (see mpqstat), in nanoseconds\n"
"    mpqlat -p 185       # only messages that process 185 put or got\n"
"    mpqlat -j 5         # JSON, one object every 5 seconds\n"
"    mpqlat -l ./app     # a program linked statically with libmpq\n"
"    mpqlat -P           # also pin the maps: bpftool map dump pinned ...\n";

static const struct argp_option opts[] = {
	{ "pid", 'p', "PID", 0, "Only messages this process put or got", 0 },
	{ "queue", 'q', "ID", 0, "Only this queue (id as mpqstat shows it)", 0 },
	{ "per-queue", 'Q', NULL, 0, "A histogram per queue", 0 },
	{ "nanoseconds", 'n', NULL, 0, "Nanoseconds instead of microseconds", 0 },
	{ "json", 'j', NULL, 0, "One JSON object per interval", 0 },
	{ "timestamp", 'T', NULL, 0, "Print the time of each interval", 0 },
	{ "lib", 'l', "PATH", 0, "libmpq, or a program with it linked in (default: libmpq.so.0 as the loader finds it)", 0 },
	{ "pin", 'P', NULL, 0, "Pin the maps under /sys/fs/bpf/mpq/mpqlat", 0 },
	{ "verbose", 'v', NULL, 0, "Print libbpf's log", 0 },
	{ NULL, 'h', NULL, OPTION_HIDDEN, "Show this help", 0 },
	{},
};

static error_t parse_arg(int key, char *arg, struct argp_state *state)
{
	switch (key) {
	case 'Q':
		env.per_queue = true;
		break;
	case 'n':
		env.ns = true;
		break;
	default:
		return mpq_tool_parse(key, arg, state, &env.o);
	}
	return 0;
}

/* Print and clear every histogram; 0 or -errno. */
static int print_hists(int fd)
{
	const char *unit = env.ns ? "nsecs" : "usecs";
	__u64 key, next, *prev = NULL;
	struct mpqlat_hist h;
	bool first = true;
	int ret;

	if (env.o.json)
		printf("{\"time\": \"%s\", \"unit\": \"%s\", \"queues\": [",
		       mpq_tool_clock(), unit);
	else if (env.o.timestamp)
		printf("%-8s\n", mpq_tool_clock());
	while (!bpf_map_get_next_key(fd, prev, &next)) {
		ret = bpf_map_lookup_elem(fd, &next, &h);
		if (ret)
			return -errno;
		if (env.o.json) {
			printf("%s{\"queue\": ", first ? "" : ", ");
			if (next)
				printf("%llu", (unsigned long long)next);
			else
				printf("null");
			printf(", \"count\": %llu, \"sum\": %llu, \"hist\": ",
			       (unsigned long long)h.count,
			       (unsigned long long)h.sum);
			mpq_hist_json(stdout, h.slots, MPQLAT_SLOTS);
			printf("}");
		} else {
			if (next)
				printf("\nqueue %llu\n", (unsigned long long)next);
			else
				printf("\n");
			mpq_hist_print(stdout, h.slots, MPQLAT_SLOTS, unit);
			printf("%llu messages, average %llu %s\n",
			       (unsigned long long)h.count,
			       (unsigned long long)(h.count ? h.sum / h.count : 0),
			       unit);
		}
		first = false;
		key = next;
		prev = &key;
	}
	if (env.o.json)
		printf("]}\n");
	else if (first)
		printf("no messages got\n");
	/* Cleared after printing: an interval's messages, not a total. */
	prev = NULL;
	while (!bpf_map_get_next_key(fd, prev, &next)) {
		bpf_map_delete_elem(fd, &next);
		prev = NULL;
	}
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
	char lib[PATH_MAX];
	struct mpqlat_bpf *obj;
	int err;

	err = argp_parse(&argp, argc, argv, 0, NULL, NULL);
	if (err)
		return err;
	if (mpq_tool_start(MPQ_NEED_CAPS | MPQ_NEED_BTF, env.o.lib, lib,
			   sizeof(lib), env.o.verbose))
		return 1;

	obj = mpqlat_bpf__open();
	if (!obj) {
		fprintf(stderr, "mpqlat: cannot open the BPF object: %s\n",
			strerror(errno));
		return 1;
	}
	obj->rodata->targ_queue = env.o.id;
	obj->rodata->targ_tgid = env.o.pid;
	obj->rodata->targ_ns = env.ns;
	obj->rodata->targ_per_queue = env.per_queue;
	err = mpqlat_bpf__load(obj);
	if (err) {
		fprintf(stderr, "mpqlat: cannot load the BPF programs: %s (-v shows why)\n",
			strerror(-err));
		goto out;
	}
	err = 1;
	if (mpq_tool_attach_usdt(obj->progs.queue_put, &obj->links.queue_put,
				 lib, "queue_put", true) ||
	    mpq_tool_attach_usdt(obj->progs.queue_get, &obj->links.queue_get,
				 lib, "queue_get", true))
		goto out;
	if (env.o.pin && mpq_tool_pin(obj->obj))
		goto out;

	fprintf(stderr, "Tracing mpq queue latency in %s... Hit Ctrl-C to end.\n",
		lib);
	err = mpq_tool_report(env.o.interval, env.o.count, print_hists,
			      bpf_map__fd(obj->maps.hists), "histograms");
out:
	if (env.o.pin)
		mpq_tool_unpin(obj->obj);
	mpqlat_bpf__destroy(obj);
	return err != 0;
}
