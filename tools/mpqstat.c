// SPDX-License-Identifier: MIT
/*
 * mpqstat: the mpq objects alive on this machine, from /proc/mpq, as a
 * table or as JSON: ipcs for mpq. No BPF and no privileges needed.
 *
 * Columns are found by the names in /proc/mpq's header line, so a module
 * that adds columns does not break it; JSON carries every column there is.
 */
#include <argp.h>
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MPQSTAT_MAX_COLS	64
#define MPQSTAT_LINE		8192

static struct {
	bool json;
	const char *path;
} env = { .path = "/proc/mpq" };

const char *argp_program_version = "mpqstat 0.2";
static const char doc[] =
"List the live mpq objects (queues, pipes, ...) with their owner, size,\n"
"depth, participants and counters, from /proc/mpq.\n"
"\n"
"USAGE: mpqstat [-h] [-j] [-f FILE]\n"
"\n"
"EXAMPLES:\n"
"    mpqstat             # a table, one object per line\n"
"    mpqstat -j          # JSON: every column of /proc/mpq\n";

static const struct argp_option opts[] = {
	{ "json", 'j', NULL, 0, "JSON: an array with one object per mpq object", 0 },
	{ "file", 'f', "FILE", OPTION_HIDDEN, "Read FILE instead of /proc/mpq", 0 },
	{ NULL, 'h', NULL, OPTION_HIDDEN, "Show this help", 0 },
	{},
};

static error_t parse_arg(int key, char *arg, struct argp_state *state)
{
	switch (key) {
	case 'h':
		argp_state_help(state, stderr, ARGP_HELP_STD_HELP);
		break;
	case 'j':
		env.json = true;
		break;
	case 'f':
		env.path = arg;
		break;
	case ARGP_KEY_ARG:
		argp_usage(state);
		break;
	default:
		return ARGP_ERR_UNKNOWN;
	}
	return 0;
}

struct cols {
	char *name[MPQSTAT_MAX_COLS];
	char *val[MPQSTAT_MAX_COLS];
	int n;
};

/* Split line at blanks into v[], at most max; returns the count. */
static int split(char *line, char **v, int max)
{
	char *save, *tok;
	int n = 0;

	for (tok = strtok_r(line, " \t\n", &save); tok && n < max;
	     tok = strtok_r(NULL, " \t\n", &save))
		v[n++] = tok;
	return n;
}

static const char *get(const struct cols *c, const char *name)
{
	int i;

	for (i = 0; i < c->n; i++)
		if (!strcmp(c->name[i], name))
			return c->val[i] ? c->val[i] : "-";
	return "-";
}

static bool numeric(const char *s)
{
	if (*s == '-')
		s++;
	if (!*s)
		return false;
	for (; *s; s++)
		if (!isdigit((unsigned char)*s))
			return false;
	return true;
}

static void json_string(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", *s);
		else
			putchar(*s);
	}
	putchar('"');
}

static void print_json(const struct cols *c, bool first)
{
	int i;

	printf("%s\n  {", first ? "" : ",");
	for (i = 0; i < c->n; i++) {
		const char *v = c->val[i] ? c->val[i] : "";

		printf("%s", i ? ", " : "");
		json_string(c->name[i]);
		printf(": ");
		/* mode stays a string: it is octal. */
		if (numeric(v) && strcmp(c->name[i], "mode") &&
		    strcmp(c->name[i], "name"))
			printf("%s", v);
		else
			json_string(v);
	}
	printf("}");
}

/* Bytes in a short human form: 4096 -> 4K. */
static const char *human(const char *s, char *buf, size_t len)
{
	unsigned long long v = strtoull(s, NULL, 10);
	const char *unit = "KMGT";
	int i = -1;

	if (!numeric(s) || v < 10240)
		return s;
	while (v >= 10240 && i < 3) {
		v /= 1024;
		i++;
	}
	snprintf(buf, len, "%llu%c", v, unit[i]);
	return buf;
}

static void print_row(const struct cols *c)
{
	char depth[48], size[24];

	snprintf(depth, sizeof(depth), "%s/%s", get(c, "depth"),
		 get(c, "capacity"));
	printf("%6s %-6s %-12.12s %6s %5s %6s %13s %4s %4s %.19s\n",
	       get(c, "id"), get(c, "type"), get(c, "name"), get(c, "uid"),
	       get(c, "mode"), human(get(c, "size"), size, sizeof(size)),
	       depth, get(c, "waiters"), get(c, "nproc"), get(c, "pids"));
}

int main(int argc, char **argv)
{
	static const struct argp argp = {
		.options = opts,
		.parser = parse_arg,
		.doc = doc,
	};
	static char header[MPQSTAT_LINE], line[MPQSTAT_LINE];
	struct cols c = { 0 };
	int n = 0, err;
	FILE *f;

	err = argp_parse(&argp, argc, argv, 0, NULL, NULL);
	if (err)
		return err;
	f = fopen(env.path, "r");
	if (!f) {
		if (errno == ENOENT && !strcmp(env.path, "/proc/mpq"))
			fprintf(stderr, "mpqstat: no /proc/mpq: the mpq module is not loaded (insmod mpq.ko)\n");
		else
			fprintf(stderr, "mpqstat: %s: %s\n", env.path,
				strerror(errno));
		return 1;
	}
	if (!fgets(header, sizeof(header), f)) {
		fprintf(stderr, "mpqstat: %s: empty\n", env.path);
		fclose(f);
		return 1;
	}
	c.n = split(header, c.name, MPQSTAT_MAX_COLS);

	if (env.json)
		printf("[");
	else
		printf("%6s %-6s %-12s %6s %5s %6s %13s %4s %4s %s\n", "ID",
		       "TYPE", "NAME", "UID", "MODE", "SIZE", "DEPTH/CAP",
		       "WAIT", "PROC", "PIDS");
	while (fgets(line, sizeof(line), f)) {
		char *v[MPQSTAT_MAX_COLS] = { 0 };
		int i;

		if (split(line, v, MPQSTAT_MAX_COLS) == 0)
			continue;
		for (i = 0; i < c.n; i++)
			c.val[i] = v[i];
		if (env.json)
			print_json(&c, n == 0);
		else
			print_row(&c);
		n++;
	}
	fclose(f);
	if (env.json)
		printf("%s]\n", n ? "\n" : "");
	return 0;
}
