// SPDX-License-Identifier: MIT
/*
 * mpqtop: the busiest mpq objects, refreshed every interval: puts, gets
 * and bytes per second and waits (libmpq's USDT probes), the module's
 * wake-ups, and from /proc/mpq each object's depth, waiters and processes.
 * Pools are rows too: PUT/s is their tasks started, GET/s finished.
 */
#include <argp.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "mpqtop.h"
#include "mpqtop.skel.h"
#include "tool.h"

const char *mpq_tool_name = "mpqtop";

static struct {
	struct mpq_tool_opts o;
	bool noclear;
	int rows;
} env = { .o = { .intervals = true, .interval = 1, .count = INT_MAX },
	  .rows = 20 };

const char *argp_program_version = "mpqtop 0.2";
static const char doc[] =
"Show the busiest mpq objects: operations per second, depth, waiters.\n"
"\n"
"USAGE: mpqtop [-h] [-C] [-j] [-r ROWS] [-l LIB] [-P] [-v] [interval] [count]\n"
"\n"
"EXAMPLES:\n"
"    mpqtop              # refresh every second until Ctrl-C\n"
"    mpqtop -C 5 3       # every 5 seconds, 3 times, without clearing\n"
"    mpqtop -r 5         # the 5 busiest objects only\n"
"    mpqtop -j 1 10      # one JSON object per second (JSON lines), 10 times\n";

static const struct argp_option opts[] = {
	{ "noclear", 'C', NULL, 0, "Do not clear the screen", 0 },
	{ "rows", 'r', "ROWS", 0, "Objects to show (default 20)", 0 },
	{ "json", 'j', NULL, 0, "One JSON object per interval, a line each", 0 },
	{ "lib", 'l', "PATH", 0, "libmpq, or a program with it linked in (default: libmpq.so.0 as the loader finds it)", 0 },
	{ "pin", 'P', NULL, 0, "Pin the maps under /sys/fs/bpf/mpq/mpqtop", 0 },
	{ "verbose", 'v', NULL, 0, "Print libbpf's log", 0 },
	{ NULL, 'h', NULL, OPTION_HIDDEN, "Show this help", 0 },
	{},
};

static error_t parse_arg(int key, char *arg, struct argp_state *state)
{
	char *end;

	switch (key) {
	case 'C':
		env.noclear = true;
		break;
	case 'r':
		env.rows = strtol(arg, &end, 10);
		if (*end || env.rows <= 0)
			argp_error(state, "invalid rows: %s", arg);
		break;
	default:
		return mpq_tool_parse(key, arg, state, &env.o);
	}
	return 0;
}

struct row {
	__u64 id;
	struct mpqtop_ops ops;
	char type[8];
	char depth[32];
	char waiters[8];
	char pids[24];
};

static int by_ops(const void *a, const void *b)
{
	const struct row *x = a, *y = b;
	__u64 ox = x->ops.puts + x->ops.gets, oy = y->ops.puts + y->ops.gets;

	if (ox != oy)
		return ox < oy ? 1 : -1;
	return x->id < y->id ? -1 : x->id > y->id;
}

/* Fill type, depth, waiters and pids of r from its /proc/mpq line. */
static void proc_fill(struct row *r, int n)
{
	char line[4096], hdr[1024], *save, *tok;
	int col[5] = { -1, -1, -1, -1, -1 }, i, k;
	static const char *const want[5] = {
		"type", "depth", "capacity", "waiters", "pids",
	};
	FILE *f = fopen("/proc/mpq", "r");

	if (!f || !fgets(hdr, sizeof(hdr), f)) {
		if (f)
			fclose(f);
		return;
	}
	for (k = 0, tok = strtok_r(hdr, " \n", &save); tok;
	     tok = strtok_r(NULL, " \n", &save), k++)
		for (i = 0; i < 5; i++)
			if (!strcmp(tok, want[i]))
				col[i] = k;
	while (fgets(line, sizeof(line), f)) {
		char *v[64] = { 0 };
		__u64 id = strtoull(line, NULL, 10);
		struct row *r2 = NULL;

		for (i = 0; i < n; i++)
			if (r[i].id == id)
				r2 = &r[i];
		if (!r2)
			continue;
		for (k = 0, tok = strtok_r(line, " \n", &save); tok && k < 64;
		     tok = strtok_r(NULL, " \n", &save))
			v[k++] = tok;
		if (col[0] >= 0 && v[col[0]])
			snprintf(r2->type, sizeof(r2->type), "%s", v[col[0]]);
		if (col[1] >= 0 && col[2] >= 0 && v[col[1]] && v[col[2]])
			snprintf(r2->depth, sizeof(r2->depth), "%s/%s",
				 v[col[1]], v[col[2]]);
		if (col[3] >= 0 && v[col[3]])
			snprintf(r2->waiters, sizeof(r2->waiters), "%s",
				 v[col[3]]);
		if (col[4] >= 0 && v[col[4]])
			snprintf(r2->pids, sizeof(r2->pids), "%s", v[col[4]]);
	}
	fclose(f);
}

/* A /proc/mpq column ("-" when the object has none) as a number or null. */
static void json_count(const char *key, const char *v)
{
	char *end;
	unsigned long long n;

	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno || end == v || *end)
		printf(", \"%s\": null", key);
	else
		printf(", \"%s\": %llu", key, n);
}

/*
 * -j: one line per interval, the rows as objects: the table's rates per
 * second, and depth, capacity and waiters from /proc/mpq (null where it
 * has none: memfd queues, pools, objects gone).
 */
static void print_json(const struct row *rows, int n)
{
	double s = env.o.interval;
	char depth[32], *cap;
	int i;

	printf("{\"time\": \"%s\", \"interval_s\": %d, \"objects\": [",
	       mpq_tool_clock(), env.o.interval);
	for (i = 0; i < n && i < env.rows; i++) {
		const struct mpqtop_ops *o = &rows[i].ops;

		printf("%s{\"id\": %llu, \"type\": ", i ? ", " : "",
		       (unsigned long long)rows[i].id);
		mpq_tool_json_string(stdout, rows[i].type);
		printf(", \"puts_per_s\": %.1f, \"gets_per_s\": %.1f, \"bytes_per_s\": %.1f, \"waits_per_s\": %.1f, \"wakes_per_s\": %.1f",
		       o->puts / s, o->gets / s, o->bytes / s, o->waits / s,
		       o->wakes / s);
		snprintf(depth, sizeof(depth), "%s", rows[i].depth);
		cap = strchr(depth, '/');
		if (cap)
			*cap++ = 0;
		json_count("depth", depth);
		json_count("capacity", cap ? cap : "-");
		json_count("waiters", rows[i].waiters);
		printf(", \"pids\": ");
		mpq_tool_json_string(stdout, rows[i].pids);
		printf("}");
	}
	printf("]}\n");
	fflush(stdout);
}

static int print_top(int fd)
{
	static struct row rows[MPQTOP_MAX_OBJECTS];
	__u64 *prev = NULL, next;
	int n = 0, i;

	while (n < MPQTOP_MAX_OBJECTS && !bpf_map_get_next_key(fd, prev, &next)) {
		memset(&rows[n], 0, sizeof(rows[n]));
		rows[n].id = next;
		if (bpf_map_lookup_elem(fd, &next, &rows[n].ops))
			return -errno;
		/* Pools and memfd queues are not in /proc/mpq. */
		snprintf(rows[n].type, sizeof(rows[n].type), "%s",
			 MPQTOP_POOL_ID(next) ? "pool" :
			 next >> 63 ? "memfd" : "gone");
		strcpy(rows[n].depth, "-");
		strcpy(rows[n].waiters, "-");
		strcpy(rows[n].pids, "-");
		prev = &rows[n].id;
		n++;
	}
	for (i = 0; i < n; i++)
		bpf_map_delete_elem(fd, &rows[i].id);
	proc_fill(rows, n);
	qsort(rows, n, sizeof(rows[0]), by_ops);

	if (env.o.json) {
		print_json(rows, n);
		return 0;
	}
	if (!env.noclear)
		printf("\033[H\033[2J");
	printf("%s  mpqtop, per second over %d s\n", mpq_tool_clock(),
	       env.o.interval);
	printf("%-8s %-5s %8s %8s %7s %6s %6s %9s %4s %s\n", "ID", "TYPE",
	       "PUT/s", "GET/s", "KB/s", "WAIT/s", "WAKE/s", "DEPTH/CAP",
	       "WTRS", "PIDS");
	for (i = 0; i < n && i < env.rows; i++) {
		const struct mpqtop_ops *o = &rows[i].ops;
		double s = env.o.interval;

		printf("%-8llu %-5s %8.0f %8.0f %7.1f %6.0f %6.0f %9s %4s %.10s\n",
		       (unsigned long long)rows[i].id, rows[i].type,
		       o->puts / s, o->gets / s, o->bytes / s / 1024,
		       o->waits / s, o->wakes / s, rows[i].depth,
		       rows[i].waiters, rows[i].pids);
	}
	if (!n)
		printf("no operations\n");
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
	struct mpqtop_bpf *obj;
	int err;

	err = argp_parse(&argp, argc, argv, 0, NULL, NULL);
	if (err)
		return err;
	if (mpq_tool_start(MPQ_NEED_CAPS | MPQ_NEED_BTF | MPQ_NEED_MODULE,
			   env.o.lib, lib, sizeof(lib), env.o.verbose))
		return 1;

	obj = mpqtop_bpf__open();
	if (!obj) {
		fprintf(stderr, "mpqtop: cannot open the BPF object: %s\n",
			strerror(errno));
		return 1;
	}
	err = mpqtop_bpf__load(obj);
	if (err) {
		fprintf(stderr, "mpqtop: cannot load the BPF programs: %s (-v shows why)\n",
			strerror(-err));
		goto out;
	}
	err = 1;
	if (mpq_tool_attach_usdt(obj->progs.queue_put, &obj->links.queue_put,
				 lib, "queue_put", true) ||
	    mpq_tool_attach_usdt(obj->progs.queue_get, &obj->links.queue_get,
				 lib, "queue_get", true) ||
	    mpq_tool_attach_usdt(obj->progs.queue_wait_begin,
				 &obj->links.queue_wait_begin, lib,
				 "queue_wait_begin", true) ||
	    mpq_tool_attach_usdt(obj->progs.pool_task_start,
				 &obj->links.pool_task_start, lib,
				 "pool_task_start", false) ||
	    mpq_tool_attach_usdt(obj->progs.pool_task_end,
				 &obj->links.pool_task_end, lib,
				 "pool_task_end", false))
		goto out;
	obj->links.poll_wake = bpf_program__attach(obj->progs.poll_wake);
	if (!obj->links.poll_wake) {
		fprintf(stderr, "mpqtop: cannot attach to tp/mpq/mpq_poll_wake: %s%s\n",
			strerror(errno), mpq_tool_perm_hint(-errno));
		goto out;
	}
	if (env.o.pin && mpq_tool_pin(obj->obj))
		goto out;

	fprintf(stderr, "Tracing mpq objects in %s... Hit Ctrl-C to end.\n", lib);
	err = mpq_tool_report(env.o.interval, env.o.count, print_top,
			      bpf_map__fd(obj->maps.ops), "counters");
out:
	if (env.o.pin)
		mpq_tool_unpin(obj->obj);
	mpqtop_bpf__destroy(obj);
	return err != 0;
}
