// SPDX-License-Identifier: MIT
/*
 * mpqstat: the mpq objects alive on this machine, from /proc/mpq, as a
 * table or as JSON: ipcs for mpq. No BPF and no privileges needed.
 *
 * Columns are found by the names in /proc/mpq's header line, so a module
 * that adds columns does not break it; JSON carries every column there is.
 *
 * Names are whatever bytes their creator chose. The module writes every
 * byte of one that is not printable ASCII as \ooo; mpqstat decodes them,
 * then prints nothing a terminal would act on: the table shows such bytes
 * as \ooo again (whatever the file held), JSON as \u00XX escapes, except
 * valid UTF-8 sequences that are not controls, which it copies (a byte
 * that is not valid UTF-8 becomes the code point of the same value).
 *
 * With -u, the same for /proc/mpq_users: what each user holds against the
 * module's per-user limits.
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
	bool users;
	const char *path;
} env;

const char *argp_program_version = "mpqstat 0.2";
static const char doc[] =
"List the live mpq objects (queues, pipes, ...) with their owner, size,\n"
"depth, participants and counters, from /proc/mpq.\n"
"\n"
"USAGE: mpqstat [-h] [-j] [-u] [-f FILE]\n"
"\n"
"EXAMPLES:\n"
"    mpqstat             # a table, one object per line\n"
"    mpqstat -j          # JSON: every column of /proc/mpq\n"
"    mpqstat -u          # per user: objects, bytes, persistent names\n";

static const struct argp_option opts[] = {
	{ "json", 'j', NULL, 0, "JSON: an array with one object per mpq object", 0 },
	{ "users", 'u', NULL, 0, "Per user: what each holds against the module's limits (/proc/mpq_users)", 0 },
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
	case 'u':
		env.users = true;
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

/* Undo /proc/mpq's \ooo escapes, in place. */
static void unescape(char *s)
{
	char *w = s;

	while (*s) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' &&
		    s[2] >= '0' && s[2] <= '7' && s[3] >= '0' && s[3] <= '7' &&
		    (s[1] != '0' || s[2] != '0' || s[3] != '0')) {
			*w++ = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 |
				      (s[3] - '0'));
			s += 4;
		} else {
			*w++ = *s++;
		}
	}
	*w = 0;
}

/* Length of the valid UTF-8 sequence at s that is no control, or 0. */
static int utf8_len(const unsigned char *s)
{
	unsigned int cp;
	int n, i;

	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		n = 2, cp = s[0] & 0x1f;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		n = 3, cp = s[0] & 0x0f;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		n = 4, cp = s[0] & 0x07;
	else
		return 0;
	for (i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
	    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) ||
	    (cp >= 0x80 && cp <= 0x9f))
		return 0;
	return n;
}

static void json_string(const char *str)
{
	const unsigned char *s = (const unsigned char *)str;
	int n;

	putchar('"');
	while (*s) {
		if (*s == '"' || *s == '\\') {
			printf("\\%c", *s++);
		} else if (*s >= 0x20 && *s < 0x7f) {
			putchar(*s++);
		} else if ((n = utf8_len(s)) > 0) {
			fwrite(s, 1, n, stdout);
			s += n;
		} else {
			printf("\\u%04x", *s++);
		}
	}
	putchar('"');
}

/* s with every byte but printable ASCII as \ooo, for the table. */
static const char *safe(const char *s, char *buf, size_t len)
{
	size_t n = 0;

	for (; *s && n + 5 < len; s++) {
		unsigned char c = *s;

		if (c >= 0x20 && c < 0x7f && c != '\\')
			buf[n++] = c;
		else
			n += snprintf(buf + n, len - n, "\\%03o", c);
	}
	buf[n] = 0;
	return buf;
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
	static const char *const keys[] = { "id", "type", "name", "uid",
		"mode", "size", "depth", "capacity", "waiters", "nproc",
		"pids" };
	char f[sizeof(keys) / sizeof(keys[0])][64], depth[140], size[24];
	unsigned int i;

	/* Whatever the file says, nothing raw reaches the terminal. */
	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		safe(get(c, keys[i]), f[i], sizeof(f[i]));
	snprintf(depth, sizeof(depth), "%s/%s", f[6], f[7]);
	printf("%6s %-6s %-12.12s %6s %5s %6s %13s %4s %4s %.19s\n",
	       f[0], f[1], f[2], f[3], f[4], human(f[5], size, sizeof(size)),
	       depth, f[8], f[9], f[10]);
}

/* A user's usage, each against its limit: 3/16384 objects. */
static void print_user_row(const struct cols *c)
{
	static const char *const keys[] = { "uid", "objects", "max_objects",
		"bytes", "max_bytes", "names", "max_names" };
	char f[sizeof(keys) / sizeof(keys[0])][64], bytes[24], max[24];
	char b[140], o[140], n[140];
	unsigned int i;

	/* Whatever the file says, nothing raw reaches the terminal. */
	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		safe(get(c, keys[i]), f[i], sizeof(f[i]));
	snprintf(o, sizeof(o), "%s/%s", f[1], f[2]);
	snprintf(b, sizeof(b), "%s/%s", human(f[3], bytes, sizeof(bytes)),
		 human(f[4], max, sizeof(max)));
	snprintf(n, sizeof(n), "%s/%s", f[5], f[6]);
	printf("%10s %15s %15s %9s\n", f[0], o, b, n);
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
	int n = 0, name_col, err;
	FILE *f;

	err = argp_parse(&argp, argc, argv, 0, NULL, NULL);
	if (err)
		return err;
	if (!env.path)
		env.path = env.users ? "/proc/mpq_users" : "/proc/mpq";
	f = fopen(env.path, "r");
	if (!f) {
		if (errno == ENOENT && !strncmp(env.path, "/proc/mpq", 9))
			fprintf(stderr, "mpqstat: no %s: the mpq module is not loaded (insmod mpq.ko), or is older\n",
				env.path);
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
	for (name_col = 0; name_col < c.n; name_col++)
		if (!strcmp(c.name[name_col], "name"))
			break;

	if (env.json)
		printf("[");
	else if (env.users)
		printf("%10s %15s %15s %9s\n", "UID", "OBJECTS", "BYTES",
		       "NAMES");
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
		if (name_col < c.n && c.val[name_col] &&
		    strcmp(c.val[name_col], "-"))
			unescape(c.val[name_col]);
		if (env.json)
			print_json(&c, n == 0);
		else if (env.users)
			print_user_row(&c);
		else
			print_row(&c);
		n++;
	}
	fclose(f);
	if (env.json)
		printf("%s]\n", n ? "\n" : "");
	return 0;
}
