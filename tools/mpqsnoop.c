// SPDX-License-Identifier: MIT
/*
 * mpqsnoop: one line per event of the mpq module, as it happens: objects
 * made and freed, processes that attach and detach, deaths the module
 * sees, wake-ups, hang-ups, owner-died recoveries, and (-w) sleeps in the
 * module. It reads the module's tracepoints, so the module must be loaded.
 */
#include <argp.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <bpf/libbpf.h>
#include <linux/mpq.h>

#include "mpqsnoop.h"
#include "mpqsnoop.skel.h"
#include "tool.h"

const char *mpq_tool_name = "mpqsnoop";

static struct {
	struct mpq_tool_opts o;
	bool waits;
} env;

static __u64 start_ns;

const char *argp_program_version = "mpqsnoop 0.2";
static const char doc[] =
"Print the mpq module's events, one line each, as they happen.\n"
"\n"
"USAGE: mpqsnoop [-h] [-w] [-j] [-T] [-p PID] [-q ID] [-P] [-v]\n"
"\n"
"EXAMPLES:\n"
"    mpqsnoop            # creates, attaches, deaths, wake-ups, hang-ups\n"
"    mpqsnoop -w         # also every sleep and wake in read(2)/write(2)\n"
"    mpqsnoop -q 7       # only object 7 (see mpqstat)\n"
"    mpqsnoop -p 185     # only events about or caused by process 185\n"
"    mpqsnoop -T         # wall-clock time instead of seconds since start\n"
"    mpqsnoop -j         # one JSON object per event (JSON lines)\n";

static const struct argp_option opts[] = {
	{ "pid", 'p', "PID", 0, "Only events about or caused by this process", 0 },
	{ "queue", 'q', "ID", 0, "Only this object (id as mpqstat shows it)", 0 },
	{ "waits", 'w', NULL, 0, "Also sleeps and wake-ups in read(2)/write(2)", 0 },
	{ "json", 'j', NULL, 0, "One JSON object per event, a line each", 0 },
	{ "timestamp", 'T', NULL, 0, "Wall-clock time (HH:MM:SS)", 0 },
	{ "pin", 'P', NULL, 0, "Pin the maps under /sys/fs/bpf/mpq/mpqsnoop", 0 },
	{ "verbose", 'v', NULL, 0, "Print libbpf's log", 0 },
	{ NULL, 'h', NULL, OPTION_HIDDEN, "Show this help", 0 },
	{},
};

static error_t parse_arg(int key, char *arg, struct argp_state *state)
{
	if (key == 'w') {
		env.waits = true;
		return 0;
	}
	return mpq_tool_parse(key, arg, state, &env.o);
}

static const char *kind_name(__u32 kind)
{
	static const char *const names[] = {
		[MPQSNOOP_CREATE] = "create",
		[MPQSNOOP_DESTROY] = "destroy",
		[MPQSNOOP_ATTACH] = "attach",
		[MPQSNOOP_DETACH] = "detach",
		[MPQSNOOP_EXIT] = "died",
		[MPQSNOOP_WAKE] = "wake",
		[MPQSNOOP_HANGUP] = "hangup",
		[MPQSNOOP_OWNER_DIED] = "ownerdead",
		[MPQSNOOP_SLEEP] = "sleep",
		[MPQSNOOP_AWAKE] = "awake",
	};

	return kind < sizeof(names) / sizeof(names[0]) && names[kind] ?
	       names[kind] : "?";
}

static const char *how_name(__u32 kind, __u32 how)
{
	if (kind == MPQSNOOP_ATTACH)
		return how == MPQ_ATTACH_FORK ? "fork" : "mmap";
	switch (how) {
	case MPQ_LEAVE_UNMAP:
		return "munmap";
	case MPQ_LEAVE_EXIT:
		return "mm gone";
	case MPQ_LEAVE_CLOSE:
		return "fds closed";
	default:
		return "?";
	}
}

static const char *dir_name(__u32 bits)
{
	switch (bits & (MPQ_POLL_IN | MPQ_POLL_OUT)) {
	case MPQ_POLL_IN:
		return "read";
	case MPQ_POLL_OUT:
		return "write";
	default:
		return "read+write";
	}
}

/* The DETAIL column: what the event's own fields say. */
static void detail(const struct mpqsnoop_event *e, char *buf, size_t len)
{
	switch (e->kind) {
	case MPQSNOOP_CREATE:
		snprintf(buf, len, "size=%llu uid=%u mode=%04o",
			 (unsigned long long)e->arg, e->a, e->b);
		break;
	case MPQSNOOP_ATTACH:
	case MPQSNOOP_DETACH:
	case MPQSNOOP_EXIT:
		snprintf(buf, len, "%s by %d", how_name(e->kind, e->b),
			 (int)e->a);
		break;
	case MPQSNOOP_WAKE:
		/* mask is poll events: EPOLLIN 0x1, EPOLLOUT 0x4. */
		snprintf(buf, len, "%s%s waiters=%u", e->a & 0x1 ? "in" : "",
			 e->a & 0x4 ? (e->a & 0x1 ? "+out" : "out") : "", e->b);
		break;
	case MPQSNOOP_HANGUP:
		snprintf(buf, len, "end %u gone", e->a);
		break;
	case MPQSNOOP_OWNER_DIED:
		snprintf(buf, len, "dead=%d %s pos=%llu", (int)e->a,
			 e->b == MPQ_DIED_LOCK ? "lock" :
			 e->b == MPQ_DIED_SLOT ? "slot" : "?",
			 (unsigned long long)e->arg);
		break;
	case MPQSNOOP_SLEEP:
		snprintf(buf, len, "to %s", dir_name(e->a));
		break;
	case MPQSNOOP_AWAKE:
		snprintf(buf, len, "to %s ret=%d", dir_name(e->a), (int)e->b);
		break;
	default:
		buf[0] = 0;
	}
}

/*
 * -j: the columns of the table as keys, and the DETAIL column's fields
 * each under its own name. "pid" is null for a fork's child, which has
 * none yet; "time" is seconds since start, or with -T "HH:MM:SS".
 */
static void print_json(const struct mpqsnoop_event *e)
{
	if (env.o.timestamp)
		printf("{\"time\": \"%s\"", mpq_tool_clock());
	else
		printf("{\"time\": %.6f", (e->ts - start_ns) / 1e9);
	printf(", \"event\": \"%s\", \"id\": %llu, \"type\": \"%s\", \"pid\": ",
	       kind_name(e->kind), (unsigned long long)e->id,
	       mpq_tool_type_name(e->type));
	if (e->pid)
		printf("%d", e->pid);
	else
		printf("null");
	printf(", \"by_pid\": %u, \"by_comm\": ", e->tgid);
	mpq_tool_json_string(stdout, e->comm);
	switch (e->kind) {
	case MPQSNOOP_CREATE:
		printf(", \"size\": %llu, \"uid\": %u, \"mode\": %u",
		       (unsigned long long)e->arg, e->a, e->b);
		break;
	case MPQSNOOP_ATTACH:
	case MPQSNOOP_DETACH:
	case MPQSNOOP_EXIT:
		printf(", \"how\": \"%s\", \"how_pid\": %d",
		       how_name(e->kind, e->b), (int)e->a);
		break;
	case MPQSNOOP_WAKE:
		printf(", \"in\": %s, \"out\": %s, \"waiters\": %u",
		       e->a & 0x1 ? "true" : "false",
		       e->a & 0x4 ? "true" : "false", e->b);
		break;
	case MPQSNOOP_HANGUP:
		printf(", \"end\": %u", e->a);
		break;
	case MPQSNOOP_OWNER_DIED:
		printf(", \"dead_pid\": %d, \"held\": \"%s\", \"pos\": %llu",
		       (int)e->a, e->b == MPQ_DIED_LOCK ? "lock" :
		       e->b == MPQ_DIED_SLOT ? "slot" : "?",
		       (unsigned long long)e->arg);
		break;
	case MPQSNOOP_SLEEP:
		printf(", \"dir\": \"%s\"", dir_name(e->a));
		break;
	case MPQSNOOP_AWAKE:
		printf(", \"dir\": \"%s\", \"ret\": %d", dir_name(e->a),
		       (int)e->b);
		break;
	}
	printf("}\n");
	fflush(stdout);
}

static int handle_event(void *ctx, void *data, size_t size)
{
	const struct mpqsnoop_event *e = data;
	char when[32], pid[16], text[96];

	if (size < sizeof(*e))
		return 0;
	if (env.o.json) {
		print_json(e);
		return 0;
	}
	if (env.o.timestamp)
		snprintf(when, sizeof(when), "%s", mpq_tool_clock());
	else
		snprintf(when, sizeof(when), "%.6f",
			 (e->ts - start_ns) / 1e9);
	/* A child's mapping copied by fork has no pid yet. */
	if (e->pid)
		snprintf(pid, sizeof(pid), "%d", e->pid);
	else
		snprintf(pid, sizeof(pid), "?");
	detail(e, text, sizeof(text));
	printf("%-10s %-9s %5llu %-5s %7s %7u %-15.15s %s\n", when,
	       kind_name(e->kind), (unsigned long long)e->id,
	       mpq_tool_type_name(e->type), pid, e->tgid, e->comm, text);
	fflush(stdout);
	return 0;
}

static __u64 now_boot_ns(void)
{
	struct timespec ts;

	/* bpf_ktime_get_ns() is CLOCK_MONOTONIC. */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (__u64)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	static const struct argp argp = {
		.options = opts,
		.parser = parse_arg,
		.doc = doc,
	};
	struct ring_buffer *rb = NULL;
	struct mpqsnoop_bpf *obj;
	int err;

	err = argp_parse(&argp, argc, argv, 0, NULL, NULL);
	if (err)
		return err;
	if (mpq_tool_start(MPQ_NEED_CAPS | MPQ_NEED_BTF | MPQ_NEED_MODULE,
			   NULL, NULL, 0, env.o.verbose))
		return 1;

	obj = mpqsnoop_bpf__open();
	if (!obj) {
		fprintf(stderr, "mpqsnoop: cannot open the BPF object: %s\n",
			strerror(errno));
		return 1;
	}
	obj->rodata->targ_id = env.o.id;
	obj->rodata->targ_tgid = env.o.pid;
	if (!env.waits) {
		bpf_program__set_autoload(obj->progs.on_wait_begin, false);
		bpf_program__set_autoload(obj->progs.on_wait_end, false);
	}
	err = mpqsnoop_bpf__load(obj);
	if (err) {
		fprintf(stderr, "mpqsnoop: cannot load the BPF programs: %s (-v shows why)\n",
			strerror(-err));
		goto out;
	}
	err = mpqsnoop_bpf__attach(obj);
	if (err) {
		if (err == -EACCES || err == -EPERM)
			fprintf(stderr, "mpqsnoop: cannot attach to the mpq tracepoints: %s%s\n",
				strerror(-err), mpq_tool_perm_hint(err));
		else
			fprintf(stderr, "mpqsnoop: cannot attach to the mpq tracepoints: %s (is tracefs mounted?)\n",
				strerror(-err));
		goto out;
	}
	if (env.o.pin && mpq_tool_pin(obj->obj)) {
		err = 1;
		goto out;
	}
	rb = ring_buffer__new(bpf_map__fd(obj->maps.events), handle_event,
			      NULL, NULL);
	if (!rb) {
		err = -errno;
		fprintf(stderr, "mpqsnoop: cannot open the ring buffer: %s\n",
			strerror(errno));
		goto out;
	}

	start_ns = now_boot_ns();
	fprintf(stderr, "Tracing mpq events... Hit Ctrl-C to end.\n");
	if (!env.o.json)
		printf("%-10s %-9s %5s %-5s %7s %7s %-15s %s\n",
		       env.o.timestamp ? "TIME" : "TIME(s)", "EVENT", "ID",
		       "TYPE", "PID", "BY-PID", "BY-COMM", "DETAIL");
	fflush(stdout);
	while (!mpq_tool_exiting) {
		err = ring_buffer__poll(rb, 100);
		if (err == -EINTR) {
			err = 0;
			continue;
		}
		if (err < 0) {
			fprintf(stderr, "mpqsnoop: reading events: %s\n",
				strerror(-err));
			break;
		}
		err = 0;
	}
out:
	ring_buffer__free(rb);
	if (env.o.pin)
		mpq_tool_unpin(obj->obj);
	mpqsnoop_bpf__destroy(obj);
	return err != 0;
}
