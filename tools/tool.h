/* SPDX-License-Identifier: MIT */
/*
 * What every mpq tool shares on the user side: the checks that turn a
 * machine that cannot run it into one clear line (not root, no BTF, no
 * module, no library), libbpf's log behind -v, Ctrl-C, map pinning, and
 * log2 histograms as star bars (80 columns) or JSON.
 */
#ifndef MPQ_TOOL_H
#define MPQ_TOOL_H

#include <argp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>

#include <sys/types.h>

#include <linux/types.h>

struct bpf_object;
struct bpf_program;
struct bpf_link;

/*
 * The options several tools share, parsed by mpq_tool_parse(). A tool
 * lists in its own argp options those it takes (its help says what they
 * mean for it) and hands every key it does not know to mpq_tool_parse().
 */
struct mpq_tool_opts {
	pid_t pid;		/* -p PID: only this process */
	__u64 id;		/* -q ID: only this object */
	bool json;		/* -j */
	bool timestamp;		/* -T */
	const char *lib;	/* -l PATH: the library to trace */
	bool pin;		/* -P: pin the maps */
	bool verbose;		/* -v: libbpf's log */
	bool intervals;		/* set by the tool: it takes [interval [count]] */
	int interval;		/* seconds */
	int count;
};

error_t mpq_tool_parse(int key, char *arg, struct argp_state *state,
		       struct mpq_tool_opts *o);

/* What a tool needs; mpq_tool_check() says what is missing. */
#define MPQ_NEED_CAPS	(1U << 0)	/* CAP_BPF + CAP_PERFMON, or root */
#define MPQ_NEED_BTF	(1U << 1)
#define MPQ_NEED_MODULE	(1U << 2)

extern const char *mpq_tool_name;
extern volatile sig_atomic_t mpq_tool_exiting;

/* Every requirement in need that is met: 0; else one line on stderr, 1. */
int mpq_tool_check(unsigned int need);
/* Ctrl-C and SIGTERM set mpq_tool_exiting; libbpf logs only when verbose. */
void mpq_tool_setup(bool verbose);
/*
 * The three steps before a tool opens its BPF object: mpq_tool_check(need),
 * then, if lib is not NULL, mpq_tool_find_lib(path, lib, len), then
 * mpq_tool_setup(verbose). 0, or 1 once one of them said what is wrong.
 */
int mpq_tool_start(unsigned int need, const char *path, char *lib,
		   size_t len, bool verbose);
/*
 * Attach prog to the USDT probe mpq:probe of lib. A required probe that is
 * missing fails the tool (one line, 1); an optional one (a probe newer
 * than the library being traced) is left out, said under -v, and 0.
 */
int mpq_tool_attach_usdt(struct bpf_program *prog, struct bpf_link **link,
			 const char *lib, const char *probe, bool required);
/*
 * count times (or until Ctrl-C), sleep interval seconds and print(fd);
 * what names the map in the message if print fails. 0 or print's -errno.
 */
int mpq_tool_report(int interval, int count, int (*print)(int fd), int fd,
		    const char *what);
/*
 * The library (or program) whose USDT probes to attach to: path if given,
 * else $MPQ_LIB, else where the dynamic loader finds libmpq.so.0. Writes
 * it to out; 0, or one line on stderr and 1.
 */
int mpq_tool_find_lib(const char *path, char *out, size_t len);
/*
 * Pin every map of obj under /sys/fs/bpf/mpq/<tool>/ (for bpftool map
 * dump) or take them away again; 0 or -errno (reported on stderr).
 */
int mpq_tool_pin(struct bpf_object *obj);
void mpq_tool_unpin(struct bpf_object *obj);
/* Sleep up to secs seconds, waking early on Ctrl-C. */
void mpq_tool_sleep(int secs);
/*
 * str as a JSON string: quotes and backslashes escaped, every byte that
 * is not printable ASCII as \u00XX (a comm is bytes, not UTF-8).
 */
void mpq_tool_json_string(FILE *f, const char *str);
/* What to add to an attach's error err (-errno) when it is a permission. */
const char *mpq_tool_perm_hint(int err);
/* "HH:MM:SS" of now, for -T. */
const char *mpq_tool_clock(void);
/* The name of an MPQ_OBJ_* type. */
const char *mpq_tool_type_name(__u32 type);

/* Histograms: slot i counts values v with 2^(i-1) <= v < 2^i (0 in 0). */
void mpq_hist_print(FILE *f, const __u32 *slots, int nslots,
		    const char *unit);
void mpq_hist_json(FILE *f, const __u32 *slots, int nslots);

#endif /* MPQ_TOOL_H */
