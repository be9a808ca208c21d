#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The mpq benchmark suite: every workload against every alternative, in
one run, with a report.

Programs that measure one cell each per invocation and print JSON rows:
build/bench/mpqbench (mpq and the C alternatives: spin floor, pipe, Unix
socket, eventfd, futex, POSIX mqueue, memcpy), build/bench/pool_bench
(mpq_pool), build/bench/lockbench (locks), bench/cpython_bench.py
(CPython's multiprocessing) and build/bench/peers/* (the libraries a C
programmer would pick instead of mpq: Concurrency Kit's ck_ring, Boost.
Interprocess message_queue, ZeroMQ ipc://, iceoryx; bench/peers/). This
script asks each for the cells it supports here, runs all cells round
after round with the alternatives of one
workload next to each other (A B A B ...), so that drift on a noisy machine
hits all of them alike, and then writes:

  OUT/results.json  {"machine": {...}, "results": [rows]}, each row
                    {"bench", "impl", "backend", "wait", "size", "batch",
                     "workers", "metric", "value", "min", "max", "rounds"}:
                    workers is a pool's (null elsewhere); value is
                    the median over rounds, min and max the spread
  OUT/report.md     tables with ratios and the goals (bench/README.md)
                    with verdicts
  OUT/*.png         latency vs size, throughput vs batch, mpq beside its
                    peers (gnuplot; bars are the min-max over rounds)

With --baseline DIR (the build directory of another checkout, e.g. the
commit an issue was filed against, built with make bench-bin), every mpq
cell of mpqbench and pool_bench that DIR's programs also list is run with
them too, in the same rounds, next to the current one: results.json gets
"baseline": {"dir", "results": [rows]}, and the report judges the "no
regressions" goal row by row (each row against the same row of the
baseline, beyond both rows' spread or not). A cell with a row worse in
that pass is measured again, both builds interleaved, and judged by the
second look (recheck()).

Usage: run.py [--quick] [--rounds N] [--out DIR] [--only REGEX]
              [--baseline BUILD_DIR] [--report-only]
"""
import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPQBENCH = os.path.join(TOP, "build", "bench", "mpqbench")
POOLBENCH = os.path.join(TOP, "build", "bench", "pool_bench")
LOCKBENCH = os.path.join(TOP, "build", "bench", "lockbench")
CPYBENCH = [sys.executable, os.path.join(TOP, "bench", "cpython_bench.py")]
# Listener/Client round trips (net-rtt), mpq at both ends vs CPython at both.
NETBENCH = os.path.join(TOP, "build", "bench", "listener_bench")
NETPYBENCH = [sys.executable, os.path.join(TOP, "bench", "listener_bench.py")]
# Start + join by fork, spawn and forkserver (issue 12): run once, not
# per round (its own medians are over -n starts each).
STARTBENCH = os.path.join(TOP, "build", "bench", "start_bench")
START_RE = re.compile(r"^(fork|spawn|forkserver)\s+(\d+) threads\s+median\s+"
                      r"([\d.]+) us\s+p90\s+([\d.]+) us")
# The same mpqbench on a libmpq built with -DMPQ_NO_PROBES: the price of
# the USDT probes when no tracer is attached (one load and branch each).
NOPROBES_LIB = os.path.join(TOP, "build", "noprobes")
NOPROBES = ["env", "LD_LIBRARY_PATH=" + NOPROBES_LIB, MPQBENCH]
NOPROBES_IMPL = "mpq-queue-noprobes"
# The cells measured both ways.
PROBE_CELLS = r"^(rtt|stream) mpq-queue memfd adaptive 8B$"
KEY = ("bench", "impl", "backend", "wait", "size", "batch", "workers", "metric")
# The peers, one program per library (bench/peers/, built by make bench-bin).
PEER_DIR = os.path.join(TOP, "build", "bench", "peers")
PEERS = ("ck", "boost", "zeromq", "iceoryx")
# Their impl names, in the order the report shows them.
PEER_COLS = (("ck_ring (Concurrency Kit)", ("ck-ring-spsc", "ck-ring-mpmc")),
             ("iceoryx 2.0", ("iceoryx", "iceoryx-zc")),
             ("Boost.Interprocess", ("boost-mq",)),
             ("ZeroMQ ipc", ("zeromq-ipc",)))


def machine():
    model = "?"
    vm = False
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and model == "?":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and " hypervisor" in line:
                vm = True
    return {
        "cpu": model,
        "vcpus": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "vm": vm,
        "in_test_vm": os.environ.get("MPQ_IN_VM") == "1",
        "dev_mpq": os.path.exists("/dev/mpq"),
        "python": platform.python_version(),
        "load": os.getloadavg()[0],
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }


def list_cells(cmd, quick):
    args = cmd + ["--list"] + (["--quick"] if quick else [])
    out = subprocess.run(args, check=True, capture_output=True, text=True)
    return [(cmd, json.loads(l)) for l in out.stdout.splitlines() if l.strip()]


def cell_args(cell):
    args = [cell["bench"], cell["impl"]]
    for k in ("size", "batch", "backend", "wait", "workers"):
        if cell.get(k) is not None:
            args += ["--" + k, str(cell[k])]
    return args


def cell_name(cell):
    parts = [cell["bench"], cell["impl"]]
    for k in ("backend", "wait"):
        if cell.get(k):
            parts.append(cell[k])
    parts.append("%sB" % cell.get("size", "-"))
    if cell.get("batch") not in (None, 1):
        parts.append("x%s" % cell["batch"])
    if cell.get("workers"):
        parts.append("w%s" % cell["workers"])
    return " ".join(parts)


def order_key(cell):
    # Alternatives of one workload stand next to each other.
    return (cell["bench"], cell.get("size") or 0, cell.get("batch") or 0,
            cell.get("workers") or 0, cell["impl"], cell.get("backend") or "",
            cell.get("wait") or "")


class BaseCmd(list):
    """A baseline checkout's program (--baseline): its rows are kept apart."""


def fresh_copies(cells, tmp):
    """Each mpq program of cells (mpqbench, pool_bench, lockbench, of this
    build or the baseline's), copied with its build's libraries into new
    files under tmp: {cmd: cmd running the copies}. On the VMs these were
    measured on, the same bytes ran at 44 M/s from one file and at 130-150
    M/s from a copy, in the same minutes (the flagged 8 B stream), and
    the slow file turned fast once the page cache dropped it: the
    physical pages a program and libmpq sit in weigh on its speed. A copy
    each round draws them again, so that one unlucky placement widens a
    row's spread instead of biasing all its rounds (bench/README.md).
    Keyed by id(cmd): a program's cells share its cmd list."""
    out, made = {}, {}
    for cmd, _ in cells:
        key = id(cmd)
        if key in out or len(cmd) != 1 or cmd is NOPROBES:
            continue
        exe = cmd[0]
        bench_dir = os.path.dirname(exe)
        lib = os.path.join(os.path.dirname(bench_dir), "lib")
        if os.path.basename(bench_dir) != "bench" or not os.path.isdir(lib):
            continue
        d = made.get(lib)
        if d is None:
            d = made[lib] = tempfile.mkdtemp(dir=tmp)
            os.mkdir(os.path.join(d, "lib"))
            for f in os.listdir(lib):
                if ".so" in f:
                    shutil.copy(os.path.join(lib, f), os.path.join(d, "lib", f))
        copy = os.path.join(d, os.path.basename(exe))
        if not os.path.exists(copy):
            shutil.copy(exe, copy)
        new = ["env", "LD_LIBRARY_PATH=" + os.path.join(d, "lib"), copy]
        out[key] = BaseCmd(new) if isinstance(cmd, BaseCmd) else new
    return out


def row_key(r):
    """A row's identity: KEY's values, and whether it is the baseline's."""
    return tuple(r.get(k) for k in KEY) + (bool(r.get("baseline")),)


def run_cells(cells, rounds, quick, log):
    samples = {}
    failures = []
    tmp = tempfile.mkdtemp(prefix="mpq-bench-")
    try:
        for r in range(rounds):
            fresh = fresh_copies(cells, tmp)
            for cmd, cell in cells:
                run_cell(fresh.get(id(cmd), cmd), cmd, cell, quick,
                         "round %d/%d" % (r + 1, rounds), log, samples,
                         failures)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    for k, vals in sorted(samples.items(), key=lambda kv: str(kv[0])):
        row = dict(zip(KEY, k[:-1]))
        row.update(value=statistics.median(vals), min=min(vals),
                   max=max(vals), rounds=len(vals))
        if k[-1]:
            row["baseline"] = True
        rows.append(row)
    return rows, failures


def run_cell(args, cmd, cell, quick, when, log, samples, failures):
    """One run of cell by args (cmd, or its fresh copy); its rows' values
    go into samples under row_key()."""
    base = isinstance(cmd, BaseCmd)
    name = cell_name(cell) + (" (baseline)" if base else "")
    t0 = time.time()
    try:
        p = subprocess.run(args + cell_args(cell) + (["--quick"] if quick
                                                     else []),
                           capture_output=True, text=True, timeout=600)
        ok = p.returncode == 0
        err = p.stderr.strip().splitlines()[-3:] if not ok else []
    except subprocess.TimeoutExpired:
        ok, p, err = False, None, ["timed out after 600 s"]
    log("%s  %-48s %6.2fs %s" % (when, name, time.time() - t0,
                                 "ok" if ok else "FAILED"))
    if not ok:
        failures.append((name, " | ".join(err)))
        return
    for line in p.stdout.splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if cmd is NOPROBES:
            row["impl"] = NOPROBES_IMPL
        if base:
            row["baseline"] = True
        samples.setdefault(row_key(row), []).append(row["value"])


# ---- looking rows up --------------------------------------------------

class Results:
    def __init__(self, rows):
        self.rows = rows

    def get(self, metric, **want):
        for r in self.rows:
            if r["metric"] != metric:
                continue
            if all(r.get(k) == v for k, v in want.items()):
                return r["value"]
        return None

    def noise(self, metric, **want):
        """Half the min-max spread of a row, relative to its median."""
        for r in self.rows:
            if r["metric"] == metric and all(r.get(k) == v for k, v in want.items()):
                return (r["max"] - r["min"]) / 2 / r["value"] if r["value"] else 0
        return 0

    def best(self, metric, higher=True, **want):
        vals = [r["value"] for r in self.rows if r["metric"] == metric and
                all(r.get(k) == v for k, v in want.items())]
        if not vals:
            return None
        return max(vals) if higher else min(vals)


def fmt_ns(v):
    if v is None:
        return "–"
    if v >= 1e6:
        return "%.2f ms" % (v / 1e6)
    if v >= 1e3:
        return "%.1f µs" % (v / 1e3)
    return "%.0f ns" % v


def fmt_rate(v):
    if v is None:
        return "–"
    if v >= 1e9:
        return "%.2f G" % (v / 1e9)
    if v >= 1e6:
        return "%.2f M" % (v / 1e6)
    if v >= 1e3:
        return "%.1f k" % (v / 1e3)
    return "%.0f" % v


def spread(r):
    if not r["value"]:
        return ""
    s = (r["max"] - r["min"]) / 2 / r["value"] * 100
    return " ±%.0f%%" % s if r["rounds"] > 1 else ""


def label(r):
    s = r["impl"]
    if r.get("backend"):
        s += " (%s" % r["backend"] + (", %s)" % r["wait"] if r.get("wait") else ")")
    elif r.get("wait"):
        s += " (%s)" % r["wait"]
    return s


# ---- the first suite's goals -------------------------------------------

def goals(res, backend, tcg):
    """Each of the first suite's goals: (goal, measured, verdict). verdict is 'met',
    'not met' or why it is not measured yet. Under TCG (the test VM) only
    ratios mean something: absolute goals get no verdict there."""
    g = []
    q = dict(impl="mpq-queue", backend=backend)

    def ratio(a, b):
        return a / b if a and b else None

    def add(goal, value, text, ok, missing):
        if value is None:
            g.append((goal, "–", missing))
        elif tcg and "/s" in text and "x" not in text.split()[0]:
            g.append((goal, text, "no verdict: absolute rates under TCG "
                      "mean nothing (see make bench)"))
        else:
            g.append((goal, text, "met" if ok else "not met"))

    floor = res.get("rtt_p50_ns", bench="rtt", impl="spin-floor", size=8)
    mq = res.get("rtt_p50_ns", bench="rtt", size=8, wait="adaptive", **q)
    cpipe = res.get("rtt_p50_ns", bench="rtt", impl="cpython-pipe", size=8)
    r = ratio(mq, floor)
    add("Queue ping-pong 8 B, default wait: ≤ 2x the spin floor", r,
        r and "%.2fx (%s vs %s)" % (r, fmt_ns(mq), fmt_ns(floor)), r and r <= 2,
        "no spin-floor or mpq row")
    r = ratio(cpipe, mq)
    add("Queue ping-pong 8 B: ≥ 50x faster than mp.Pipe", r,
        r and "%.0fx" % r, r and r >= 50, "no cpython-pipe row")
    mc = res.get("rtt_p50_ns", bench="rtt", size=8, impl="mpq-conn",
                 backend=backend, wait="adaptive")
    cpipe_c = res.get("rtt_p50_ns", bench="rtt", impl="pipe", size=8)
    r = ratio(mc, floor)
    add("Connection ping-pong 8 B: ≤ 2x the spin floor", r,
        r and "%.2fx (%s vs %s)" % (r, fmt_ns(mc), fmt_ns(floor)), r and r <= 2,
        "no mpq-conn row")
    if r and r > 2:
        # Why, as measured (README): the byte ring's reader must see the
        # tail's line and the data's line, where the queue's slot is one.
        g[-1] = (g[-1][0], g[-1][1], "not met: each message moves two cache "
                 "lines to the reader (tail, data); the queue moves one")
    r = ratio(cpipe_c, mc)
    add("Connection ping-pong 8 B: ≥ 20x faster than a C pipe", r,
        r and "%.0fx" % r, r and r >= 20, "no pipe row")
    blk = res.get("rtt_p50_ns", bench="rtt", size=8, wait="block", **q)
    fut = res.get("rtt_p50_ns", bench="rtt", impl="futex", size=8)
    efd = res.get("rtt_p50_ns", bench="rtt", impl="eventfd", size=8)
    # Sleeping round trips differ by less than their own spread here, so a
    # ratio just past the bound but within the spread of both rows is
    # reported as such rather than as a miss.
    nb = res.noise("rtt_p50_ns", bench="rtt", size=8, wait="block", **q)
    for goal, other, name, bound in (
            ("Blocking path: ≤ 1.1x a raw futex ping-pong", fut, "futex", 1.1),
            ("Blocking path: never slower than eventfd", efd, "eventfd", 1.0)):
        r = ratio(blk, other)
        if r is None:
            g.append((goal, "–", "no %s or blocking mpq row" % name))
            continue
        n = nb + res.noise("rtt_p50_ns", bench="rtt", size=8, impl=name)
        text = "%.2fx (%s vs %s)" % (r, fmt_ns(blk), fmt_ns(other))
        verdict = "met" if r <= bound else (
            "within noise (±%.0f%%)" % (n * 100) if r - bound <= n else "not met")
        g.append((goal, text, verdict))
    st = res.get("msgs_per_s", bench="stream", size=8, batch=1,
                 wait="adaptive", **q)
    cq = res.get("msgs_per_s", bench="stream", impl="cpython-queue", size=8)
    add("Queue stream 8 B, one put per message: ≥ 20 M msgs/s", st,
        st and fmt_rate(st) + " msgs/s", st and st >= 20e6, "no stream row")
    r = ratio(st, cq)
    add("Queue stream 8 B: ≥ 50x mp.Queue", r, r and "%.0fx" % r,
        r and r >= 50, "no cpython-queue row")
    bt = res.best("msgs_per_s", bench="stream", size=8, wait="adaptive", **q)
    add("Queue stream batched (put_many/get_many): ≥ 100 M msgs/s", bt,
        bt and fmt_rate(bt) + " msgs/s (best batch)", bt and bt >= 100e6,
        "no batched row")
    mp = res.get("msgs_per_s", bench="mpmc", **q)
    add("Queue MPMC 2P2C 8 B: ≥ 10 M msgs/s, nothing lost", mp,
        mp and fmt_rate(mp) + " msgs/s", mp and mp >= 10e6, "no mpmc row")
    zc = res.get("rtt_p50_ns", bench="rtt", size=1048576, impl="mpq-queue-zc",
                 backend=backend, wait="adaptive")
    q64 = res.get("rtt_p50_ns", bench="rtt", size=64, wait="adaptive", **q)
    r = ratio(zc, q64)
    add("1 MiB zero-copy round trip ≤ 1.5x the 64 B round trip", r,
        r and "%.2fx (%s vs %s)" % (r, fmt_ns(zc), fmt_ns(q64)), r and r <= 1.5,
        "no mpq-queue-zc 1 MiB or mpq-queue 64 B row")
    big = res.get("bytes_per_s", bench="stream", size=1048576, batch=1,
                  wait="adaptive", **q)
    mc = res.get("bytes_per_s", bench="memcpy", impl="memcpy")
    r = ratio(big, mc)
    add("1 MiB messages, copying API: ≥ 0.7x memcpy bandwidth (in cache)", r,
        r and "%.2fx (%s/s vs %s/s)" % (r, fmt_rate(big) + "B", fmt_rate(mc) + "B"),
        r and r >= 0.7, "no 1 MiB or memcpy row")
    pm = res.get("tasks_per_s", bench="pool-map", impl="mpq-pool",
                 backend=backend, batch=0)
    cm = res.get("tasks_per_s", bench="pool-map", impl="cpython-pool", batch=0)
    pm1 = res.get("tasks_per_s", bench="pool-map", impl="mpq-pool",
                  backend=backend, batch=1)
    cm1 = res.get("tasks_per_s", bench="pool-map", impl="cpython-pool", batch=1)
    r = ratio(pm, cm)
    r1 = ratio(pm1, cm1)
    add("Pool.map, trivial task, default chunking: ≥ 10x CPython Pool.map", r,
        r and "%.1fx (%s vs %s tasks/s%s)" % (
            r, fmt_rate(pm), fmt_rate(cm),
            "; chunksize 1: %.0fx" % r1 if r1 else ""),
        r and r >= 10, "no mpq-pool or cpython-pool pool-map row")
    pa = res.get("tasks_per_s", bench="pool-apply", impl="mpq-pool",
                 backend=backend)
    ca = res.get("tasks_per_s", bench="pool-apply", impl="cpython-pool")
    r = ratio(pa, ca)
    add("Pool.apply_async, one small task each: ≥ 20x CPython", r,
        r and "%.1fx (%s vs %s tasks/s)" % (r, fmt_rate(pa), fmt_rate(ca)),
        r and r >= 20, "no pool-apply rows")
    add("Pool.apply_async: ≥ 1 M tasks/s", pa,
        pa and fmt_rate(pa) + " tasks/s", pa and pa >= 1e6,
        "no mpq-pool pool-apply row")
    ml = res.get("ns_per_op", bench="lock", impl="mpq-lock", backend=backend)
    pm = res.get("ns_per_op", bench="lock", impl="pthread-mutex")
    pr = res.get("ns_per_op", bench="lock", impl="pthread-robust")
    r = ratio(ml, pm)
    add("Lock acquire+release, uncontended: ≤ 1.0x a process-shared pthread mutex",
        r, r and "%.2fx (%s vs %s; a robust one: %s)" % (
            r, fmt_ns(ml), fmt_ns(pm), fmt_ns(pr)), r and r <= 1.0,
        "no lockbench rows")
    if r and r > 1.0 and pr:
        # Why, as measured: mpq's lock is robust (its holder's death is
        # recovered); the plain mutex is not. The fair twin is glibc's
        # robust mutex.
        g[-1] = (g[-1][0], g[-1][1], "not met: the robust-list bookkeeping "
                 "that recovers a dead holder (%.2fx glibc's robust mutex, "
                 "which does the same)" % (ml / pr))
    km = res.get("msgs_per_s", bench="stream", size=8, batch=1,
                 impl="mpq-queue", backend="kmod", wait="adaptive")
    mf = res.get("msgs_per_s", bench="stream", size=8, batch=1,
                 impl="mpq-queue", backend="memfd", wait="adaptive")
    r = ratio(mf, km)
    add("kmod vs memfd backend, fast path (stream 8 B): ≤ 1.05x", r,
        r and "%.2fx (kmod %s, memfd %s msgs/s)" % (r, fmt_rate(km), fmt_rate(mf)),
        r and r <= 1.05, "needs /dev/mpq: see make bench-vm")
    ep = res.get("rtt_p50_ns", bench="rtt", size=8, impl="mpq-queue",
                 backend="kmod", wait="epoll")
    r = ratio(ep, efd)
    add("epoll wake through /dev/mpq: ≤ 1.2x an eventfd wake", r,
        r and "%.2fx (%s vs %s)" % (r, fmt_ns(ep), fmt_ns(efd)), r and r <= 1.2,
        "needs /dev/mpq: see make bench-vm")
    return g


# ---- mpq beside its peers (issue 16) -----------------------------------

# (row, metric, the cell, higher is better)
PEER_ROWS = (
    ("round trip p50, 8 B", "rtt_p50_ns", dict(bench="rtt", size=8), False),
    ("stream 1P1C, one 8 B message per call", "msgs_per_s",
     dict(bench="stream", size=8, batch=1), True),
    ("the same, 1 KiB", "msgs_per_s", dict(bench="stream", size=1024, batch=1),
     True),
    ("2 producers 2 consumers, 8 B", "msgs_per_s", dict(bench="mpmc", size=8),
     True),
    ("1 MiB round trip, zero-copy", "rtt_p50_ns",
     dict(bench="rtt", size=1048576), False),
)


def find_row(rows, metric, **want):
    for r in rows:
        if r["metric"] == metric and all(r.get(k) == v for k, v in want.items()):
            return r
    return None


def peer_cells(rows, backend, cell, metric):
    """The row of each column for one comparison: [(column, row or None)]."""
    zc = cell["size"] == 1048576
    mpq = "mpq-queue-zc" if zc else "mpq-queue"
    out = [("spin floor", None if zc or cell["bench"] == "mpmc" else
            find_row(rows, metric, impl="spin-floor", **cell)),
           ("mpq", find_row(rows, metric, impl=mpq, backend=backend,
                            wait="adaptive", **cell))]
    for col, impls in PEER_COLS:
        r = None
        for im in impls:
            if im.endswith("-zc") == zc:
                r = r or find_row(rows, metric, impl=im, backend=None, **cell)
        out.append((col, r))
    return out


def fmt_cell(rows, r, metric):
    if r is None:
        return "–"
    if metric.endswith("_ns"):
        return fmt_ns(r["value"]) + spread(r)
    text = fmt_rate(r["value"]) + "/s" + spread(r)
    cpu = find_row(rows, "cpu_ns_per_msg", **{k: r[k] for k in KEY
                                               if k != "metric"})
    if cpu:
        text += ", %s CPU" % fmt_ns(cpu["value"])
    return text


def speedup(mpq, other, higher):
    """How many times faster mpq is than other (> 1: mpq is faster)."""
    if not mpq or not other or not mpq["value"] or not other["value"]:
        return None
    return (mpq["value"] / other["value"] if higher else
            other["value"] / mpq["value"])


def peer_section(rows, backend):
    table = [(name, metric, peer_cells(rows, backend, cell, metric), higher)
             for name, metric, cell, higher in PEER_ROWS]
    if not any(r for _, _, cells, _ in table for col, r in cells[2:]):
        return []
    cols = [c for c, _ in table[0][2]]
    L = ["## mpq beside the libraries a C programmer would pick instead\n",
         "Same run, interleaved with the rest; processes, pinned to "
         "different CPUs. mpq: mpq-queue, %s backend, default (adaptive) "
         "wait; the 1 MiB row is mpq-queue-zc (reserve/commit, peek/release) "
         "against iceoryx's loan/publish, take/release. Throughput rows "
         "show the CPU time both sides spent per message (getrusage; a "
         "spinning side costs CPU whether or not it has work). How each "
         "peer is used: bench/peers/*.\n" % backend,
         "| | " + " | ".join(cols) + " |",
         "| --- |" + " --- |" * len(cols)]
    for name, metric, cells, higher in table:
        L.append("| %s | %s |" % (name, " | ".join(
            fmt_cell(rows, r, metric) for _, r in cells)))
    L.append("\n**mpq's speed relative to each** (how many times faster mpq "
             "is: the other's round trip over mpq's, mpq's rate over the "
             "other's; below 1: mpq is slower):\n")
    L.append("| | " + " | ".join(c for c in cols if c != "mpq") + " |")
    L.append("| --- |" + " --- |" * (len(cols) - 1))
    for name, metric, cells, higher in table:
        mpq = cells[1][1]
        L.append("| %s | %s |" % (name, " | ".join(
            "%.2fx" % x if x else "–" for x in
            (speedup(mpq, r, higher) for c, r in cells if c != "mpq"))))
    L.append("")
    return L


def goals16(rows, res, backend, tcg, busy=False, base=None):
    """Issue 16's goals, and the two peer goals of bench/README.md:
    (goal, measured, verdict). A ratio that misses by less than the two rows' spread says
    so: one noisy run does not settle it."""
    g = []
    q = dict(impl="mpq-queue", backend=backend, wait="adaptive")

    def noise(*rs):
        return sum((r["max"] - r["min"]) / 2 / r["value"]
                   for r in rs if r and r["value"] and r["rounds"] > 1)

    def ratio_goal(goal, a, b, bound, at_least, what):
        if not a or not b or not b["value"]:
            g.append((goal, "–", "not measured: no %s row" % what))
            return
        r = a["value"] / b["value"]
        n = noise(a, b)
        ok = r >= bound if at_least else r <= bound
        text = "%.2fx (%s vs %s)" % (
            r, *(fmt_ns(x["value"]) if x["metric"].endswith("_ns") else
                 fmt_rate(x["value"]) + "/s" for x in (a, b)))
        if ok:
            verdict = "met"
        elif abs(r - bound) / bound <= n:
            verdict = "not met, but within the rows' spread (±%.0f%%)" % (n * 100)
        else:
            verdict = "not met"
        if busy:
            verdict += " (on a busy machine: see above)"
        g.append((goal, text, verdict))

    for size, name in ((8, "8 B"), (1024, "1 KiB")):
        ratio_goal("Stream 1P1C %s, one message per call: ≥ 0.8x ck_ring SPSC"
                   % name,
                   find_row(rows, "msgs_per_s", bench="stream", size=size,
                            batch=1, **q),
                   find_row(rows, "msgs_per_s", bench="stream", size=size,
                            batch=1, impl="ck-ring-spsc"), 0.8, True,
                   "mpq-queue or ck-ring-spsc stream %s" % name)
        # The same queue told it has one producer and one consumer.
        ratio_goal("... the same queue with MPQ_QUEUE_F_ONE_PRODUCER + _ONE_CONSUMER",
                   find_row(rows, "msgs_per_s", bench="stream", size=size,
                            batch=1, **dict(q, impl="mpq-queue-spsc")),
                   find_row(rows, "msgs_per_s", bench="stream", size=size,
                            batch=1, impl="ck-ring-spsc"), 0.8, True,
                   "mpq-queue-spsc or ck-ring-spsc stream %s" % name)
    floor = find_row(rows, "rtt_p50_ns", bench="rtt", size=8, impl="spin-floor")
    ratio_goal("Round trip 8 B: ≤ 1.3x the spin floor",
               find_row(rows, "rtt_p50_ns", bench="rtt", size=8, **q), floor,
               1.3, False, "mpq-queue or spin-floor rtt")
    ratio_goal("Connection round trip 8 B: ≤ 1.5x the spin floor",
               find_row(rows, "rtt_p50_ns", bench="rtt", size=8,
                        impl="mpq-conn", backend=backend, wait="adaptive"),
               floor, 1.5, False, "mpq-conn or spin-floor rtt")
    # Not a goal: the floor of a round trip over two channels, a line each
    # way, beside the one-line floor the goals are set against.
    two = find_row(rows, "rtt_p50_ns", bench="rtt", size=8,
                   impl="spin-floor-2")
    if two and floor and floor["value"]:
        g.append(("For reference: the floor with a line each way "
                  "(spin-floor-2), as two channels need",
                  "%.2fx the spin floor (%s vs %s)" % (
                      two["value"] / floor["value"], fmt_ns(two["value"]),
                      fmt_ns(floor["value"])),
                  "no goal"))
    ratio_goal("Batched stream (8 B, batch 256, put_many/get_many): ≥ 0.8x "
               "the floor's batched ring",
               find_row(rows, "msgs_per_s", bench="stream", size=8, batch=256,
                        **q),
               find_row(rows, "msgs_per_s", bench="stream", size=8, batch=256,
                        impl="spin-floor"), 0.8, True, "batch-256 stream")
    # The array calls: runs, on the default queue and on the flagged one.
    for which, impl in (
            ("the same queue (runs, taken under their busy bit)",
             "mpq-queue-array"),
            ("the queue with MPQ_QUEUE_F_ONE_PRODUCER + _ONE_CONSUMER (runs)",
             "mpq-queue-spsc")):
        ratio_goal("... put_array/get_array on " + which,
                   find_row(rows, "msgs_per_s", bench="stream", size=8,
                            batch=256, **dict(q, impl=impl)),
                   find_row(rows, "msgs_per_s", bench="stream", size=8,
                            batch=256, impl="spin-floor"), 0.8, True,
                   "%s batch-256 stream" % impl)
    ratio_goal("2 producers 2 consumers, 8 B: ≥ 1.0x ck_ring MPMC",
               find_row(rows, "msgs_per_s", bench="mpmc", **q),
               find_row(rows, "msgs_per_s", bench="mpmc", impl="ck-ring-mpmc"),
               1.0, True, "mpmc mpq-queue or ck-ring-mpmc")
    ratio_goal("1 MiB zero-copy round trip: ≤ 0.2x iceoryx's zero-copy",
               find_row(rows, "rtt_p50_ns", bench="rtt", size=1048576,
                        impl="mpq-queue-zc", backend=backend, wait="adaptive"),
               find_row(rows, "rtt_p50_ns", bench="rtt", size=1048576,
                        impl="iceoryx-zc"), 0.2, False,
               "mpq-queue-zc or iceoryx-zc 1 MiB")
    pm = find_row(rows, "tasks_per_s", bench="pool-map", impl="mpq-pool",
                  backend=backend, batch=0)
    pt = find_row(rows, "tasks_per_s", bench="pool-map", impl="pthread-pool",
                  batch=0)
    if pm and pt:
        ratio_goal("Pool.map, trivial task: ≥ 0.5x an in-process pthread pool "
                   "of the same width", pm, pt, 0.5, True, "pool-map")
    else:
        g.append(("Pool.map, trivial task: ≥ 0.5x an in-process pthread pool "
                  "of the same width", fmt_rate(pm["value"]) + " tasks/s"
                  if pm else "–", "not measured: no in-process pthread pool "
                  "row in this suite"))
    pa = find_row(rows, "tasks_per_s", bench="pool-apply", impl="mpq-pool",
                  backend=backend)
    if not pa:
        g.append(("Pool.apply_async: ≥ 2 M tasks/s", "–",
                  "not measured: no pool-apply row"))
    else:
        g.append(("Pool.apply_async: ≥ 2 M tasks/s",
                  fmt_rate(pa["value"]) + " tasks/s",
                  "no verdict: absolute rates under TCG mean nothing" if tcg
                  else "met" if pa["value"] >= 2e6 else "not met"))
    thr = [r for r in rows if r["metric"] == "msgs_per_s" or (
        r["metric"] == "tasks_per_s" and r["bench"] in ("pool-map",
                                                        "pool-apply"))]
    missing = [r for r in thr if not find_row(
        rows, "cpu_ns_per_msg" if r["metric"] == "msgs_per_s" else
        "cpu_ns_per_task", **{k: r[k] for k in KEY if k != "metric"})]
    g.append(("CPU time per message beside each throughput",
              "%d of %d message and task rate rows" % (
                  len(thr) - len(missing), len(thr)),
              "met" if thr and not missing else
              "not met: no CPU row for %s" % ", ".join(
                  label(r) + " " + r["bench"] for r in missing[:4])))
    g.append(no_regressions(rows, base, backend))
    return g


# Metrics a regression is judged on: rates, CPU per message or task, and
# the round trip's p50 and p99 (its p99.9 and max are one bad moment each).
REGRESSION_METRICS = {"msgs_per_s": True, "tasks_per_s": True,
                      "cpu_ns_per_msg": False, "cpu_ns_per_task": False,
                      "rtt_p50_ns": False, "rtt_p99_ns": False}


def compare_base(rows, base):
    """Each baseline row beside the same row now: (base, now, verdict),
    where verdict is worse or better only beyond both rows' spread."""
    now = {row_key(r)[:-1]: r for r in rows}
    out = []
    for b in base:
        higher = REGRESSION_METRICS.get(b["metric"])
        r = now.get(row_key(b)[:-1])
        if higher is None or not r:
            continue
        if higher:
            worse, better = r["max"] < b["min"], r["min"] > b["max"]
        else:
            worse, better = r["min"] > b["max"], r["max"] < b["min"]
        out.append((b, r, "worse" if worse else "better" if better else
                    "within the spreads"))
    return out


def cell_of(r):
    """The cell a row came from: its key without the metric."""
    return tuple(r.get(k) for k in KEY if k != "metric")


# Rounds of the second look at cells whose rows came out worse.
RECHECK_ROUNDS = 5


def recheck(cells, rows, rounds, quick, log):
    """A second look at the cells that a row of came out worse than the
    baseline (both builds, interleaved again, max(rounds, RECHECK_ROUNDS)
    rounds): with a few hundred rows, some pairs' spreads miss each other
    by chance, code the change did not touch included. The re-run's rows
    replace the first pass's, which each keeps as "first"; the verdict is
    the re-run's alone, so a real regression has to show twice."""
    now = [r for r in rows if not r.get("baseline")]
    base = [r for r in rows if r.get("baseline")]
    worse = {cell_of(b) for b, _, v in compare_base(now, base) if v == "worse"}
    again = [(cmd, c) for cmd, c in cells if cell_of(c) in worse]
    if not again:
        return rows, []
    n = max(rounds, RECHECK_ROUNDS)
    log("%d cells looked worse than the baseline: again, %d rounds" % (
        len(worse), n))
    fresh, failures = run_cells(again, n, quick, log)
    old = {row_key(r): r for r in rows}
    for r in fresh:
        k = row_key(r)
        if k in old:
            o = old[k]
            r["first"] = {x: o[x] for x in ("value", "min", "max", "rounds")}
            old[k] = r
    return list(old.values()), failures


def row_name(r):
    s = "%s %s %s" % (r["bench"], label(r), size_name(r["size"]))
    if r.get("batch") not in (None, 1):
        s += " batch %s" % ("default" if r["batch"] == 0 else r["batch"])
    return s + " " + r["metric"]


def no_regressions(rows, base, backend):
    goal = ("No regressions: every row within its spread or better, both "
            "backends")
    if not base:
        return (goal, "–", "not judged: no baseline in this run (run.py "
                "--baseline BUILD_DIR of the older checkout; make bench-vm "
                "for kmod)")
    cmp = compare_base(rows, base)
    worse = [c for c in cmp if c[2] == "worse"]
    better = [c for c in cmp if c[2] == "better"]
    val = "%d rows against the baseline: %d better, %d worse, the rest " \
          "within the spreads (%s backend)" % (len(cmp), len(better),
                                              len(worse), backend)
    again = [c for c in cmp if "first" in c[1]]
    if again:
        val += "; %d rows of cells measured again (a row of each was worse " \
               "in the first pass)" % len(again)
    if not cmp:
        return (goal, "–", "not judged: no row in both runs")
    if worse:
        return (goal, val, "not met: " + "; ".join(
            "%s %s -> %s" % (row_name(b), fmt_value(b), fmt_value(r))
            for b, r, _ in worse[:6]) + ("; ..." if len(worse) > 6 else ""))
    return (goal, val, "met on this backend; the other is judged by its "
            "own run (make bench-vm for kmod)")


def fmt_value(r):
    return fmt_ns(r["value"]) if r["metric"].endswith("_ns") else (
        "%.1f ns" % r["value"] if r["metric"].startswith("cpu_") else
        fmt_rate(r["value"]) + "/s")


def base_section(rows, base, info):
    cmp = compare_base(rows, base)
    if not cmp:
        return []
    L = ["## Against the baseline\n",
         "The same cells with %s's programs and libmpq, interleaved in this "
         "run (each row's median, ± half its spread). Worse or better only "
         "where the two rows' spreads do not meet. A cell with a row worse "
         "in the first pass was measured again, both builds interleaved, "
         "and is judged by that second look.\n" % info.get("dir", "?"),
         "| row | baseline | now | now / baseline | verdict |",
         "| --- | --- | --- | --- | --- |"]
    for b, r, v in sorted(cmp, key=lambda c: (c[2] != "worse",
                                               "first" not in c[1],
                                               row_name(c[0]))):
        if "first" in r and "first" in b:
            v += " (measured again, %d rounds; the first pass, %d: %s -> %s)" \
                % (r["rounds"], r["first"]["rounds"],
                   fmt_value(dict(b["first"], metric=b["metric"])),
                   fmt_value(dict(r["first"], metric=r["metric"])))
        L.append("| %s | %s%s | %s%s | %.2fx | %s |" % (
            row_name(b), fmt_value(b), spread(b), fmt_value(r), spread(r),
            r["value"] / b["value"] if b["value"] else 0, v))
    L.append("")
    return L


# ---- report -----------------------------------------------------------

def probe_cost(res):
    """The USDT probes with no tracer: libmpq with them against without."""
    L = ["## USDT probes, no tracer attached\n",
         "The same mpqbench, memfd backend, adaptive wait, 8 B, on libmpq "
         "with its probes (a semaphore test at each) and on libmpq built "
         "with -DMPQ_NO_PROBES, interleaved in this run.\n",
         "| row | probes compiled in | compiled out | in / out |",
         "| --- | --- | --- | --- |"]
    q = dict(backend="memfd", wait="adaptive", size=8)
    found = False
    for name, bench, metric, fmt in (
            ("queue round trip p50", "rtt", "rtt_p50_ns", fmt_ns),
            ("queue round trip p99", "rtt", "rtt_p99_ns", fmt_ns),
            ("queue stream, 1 per call", "stream", "msgs_per_s", fmt_rate)):
        extra = {"batch": 1} if bench == "stream" else {}
        on = res.get(metric, bench=bench, impl="mpq-queue", **q, **extra)
        off = res.get(metric, bench=bench, impl=NOPROBES_IMPL, **q, **extra)
        if on is None or off is None:
            continue
        found = True
        L.append("| %s | %s | %s | %.3fx |" % (name, fmt(on), fmt(off),
                                                on / off))
    if not found:
        return []
    L.append("")
    return L

def report(m, rows, failures, quick, rounds, baseline=None):
    base = (baseline or {}).get("results") or []
    res = Results(rows)
    backend = "kmod" if m["dev_mpq"] else "memfd"
    L = []
    L.append("# mpq benchmark report\n")
    L.append("Machine: %s, %d vCPUs%s, kernel %s, load %.2f at start; %s." % (
        m["cpu"], m["vcpus"], " (a VM)" if m["vm"] else "", m["kernel"],
        m["load"], m["date"]))
    L.append("Mode: %s, %d round%s, alternatives interleaved; values are the "
             "median over rounds, ±%% is half the min–max spread. Processes "
             "throughout, never threads. mpq backend for the goals: %s.\n" % (
                 "quick (fewer samples)" if quick else "full", rounds,
                 "s" if rounds > 1 else "", backend))
    if m["load"] > m["vcpus"]:
        L.append("**The machine was busy** (load %.1f on %d vCPUs at the "
                 "start): whatever spins while it waits (the spin floor, "
                 "ck_ring, iceoryx's subscriber, mpq's spin phase) loses "
                 "most when its process is descheduled, so ratios between "
                 "spinning and sleeping rows mean little in this run.\n" % (
                     m["load"], m["vcpus"]))
    if failures:
        L.append("**Failed cells:**\n")
        for name, err in failures:
            L.append("- %s: %s" % (name, err))
        L.append("")

    tcg = "TCG" in m["cpu"] or m.get("in_test_vm", False)
    L.append("## Goals (issue 16; bench/README.md), with verdicts\n")
    L.append("Ratios in one run: absolute numbers on a shared VM mean "
             "little, and a ratio that misses by less than its rows' spread "
             "is not settled by one run.\n")
    L.append("| goal | measured | verdict |")
    L.append("| --- | --- | --- |")
    for goal, val, verdict in goals16(rows, res, backend, tcg,
                                      m["load"] > m["vcpus"], base):
        L.append("| %s | %s | %s |" % (goal, val, verdict))
    L.append("")

    L += peer_section(rows, backend)
    L += base_section(rows, base, baseline or {})

    L.append("## Earlier goals (the first suite's)\n")
    L.append("| goal | measured | verdict |")
    L.append("| --- | --- | --- |")
    for goal, val, verdict in goals(res, backend, tcg):
        L.append("| %s | %s | %s |" % (goal, val, verdict))
    L.append("")

    L += probe_cost(res)

    rtt8 = [r for r in rows if r["bench"] == "rtt" and r["size"] == 8 and
            r["metric"] == "rtt_p50_ns"]
    mq = res.get("rtt_p50_ns", bench="rtt", size=8, impl="mpq-queue",
                 backend=backend, wait="adaptive")
    L.append("## Round trip, 8 B, two processes\n")
    L.append("| impl | p50 | p90 | p99 | p99.9 | max | p50 vs mpq-queue |")
    L.append("| --- | --- | --- | --- | --- | --- | --- |")
    for r in sorted(rtt8, key=lambda r: r["value"]):
        k = {x: r[x] for x in KEY if x != "metric"}
        cols = [fmt_ns(r["value"]) + spread(r)]
        for met in ("rtt_p90_ns", "rtt_p99_ns", "rtt_p999_ns", "rtt_max_ns"):
            cols.append(fmt_ns(res.get(met, **k)))
        cols.append("%.2fx" % (r["value"] / mq) if mq else "–")
        L.append("| %s | %s |" % (label(r), " | ".join(cols)))
    L.append("")

    sizes = sorted({r["size"] for r in rows if r["bench"] == "rtt"})
    L.append("## Round trip p50 by message size\n")
    L.append("| impl | " + " | ".join(size_name(s) for s in sizes) + " |")
    L.append("| --- |" + " --- |" * len(sizes))
    for lab, per in by_label(rows, "rtt", "rtt_p50_ns", "size"):
        L.append("| %s | %s |" % (lab, " | ".join(fmt_ns(per.get(s)) for s in sizes)))
    L.append("")

    batches = sorted({r["batch"] for r in rows if r["bench"] == "stream" and
                      r["size"] == 8})
    L.append("## Stream, 8 B, one producer one consumer: msgs/s by batch\n")
    L.append("| impl | " + " | ".join("batch %s" % b for b in batches) + " |")
    L.append("| --- |" + " --- |" * len(batches))
    for lab, per in by_label([r for r in rows if r["size"] == 8], "stream",
                             "msgs_per_s", "batch"):
        L.append("| %s | %s |" % (lab, " | ".join(fmt_rate(per.get(b)) for b in batches)))
    L.append("")

    ssizes = sorted({r["size"] for r in rows if r["bench"] == "stream" and
                     r["batch"] == 1})
    L.append("## Stream, batch 1: bytes/s by message size\n")
    L.append("| impl | " + " | ".join(size_name(s) for s in ssizes) + " |")
    L.append("| --- |" + " --- |" * len(ssizes))
    for lab, per in by_label([r for r in rows if r["batch"] == 1], "stream",
                             "bytes_per_s", "size"):
        L.append("| %s | %s |" % (lab, " | ".join(
            fmt_rate(per.get(s)) + "B/s" if per.get(s) else "–" for s in ssizes)))
    if any(r["impl"] == "mpq-queue-zc" and r["bench"] == "stream"
           for r in rows):
        L.append("\nmpq-queue-zc moves no bytes: its row is messages/s times "
                 "the message size, what a copying API would have had to "
                 "move to keep up.")
    mc = res.get("bytes_per_s", bench="memcpy", impl="memcpy")
    md = res.get("bytes_per_s", bench="memcpy", impl="memcpy-dram")
    if mc:
        L.append("\nmemcpy, one core, 1 MiB chunks: %sB/s within 4 MiB (in "
                 "cache, like the rings and queues above, which hold at most "
                 "4 MiB; the goal's reference), %sB/s through 256 MiB.\n" % (
                     fmt_rate(mc), fmt_rate(md)))

    pool_section(L, res, rows, backend)
    sizes_section(L, res, backend)
    start_section(L, rows)

    other = [r for r in rows if r["bench"] not in ("rtt", "stream", "memcpy",
                                                   "start")
             and not r["bench"].startswith("pool-")]
    if other:
        L.append("## Other workloads\n")
        L.append("| bench | impl | size | batch | metric | value |")
        L.append("| --- | --- | --- | --- | --- | --- |")
        for r in sorted(other, key=lambda r: (r["bench"], r["metric"], -r["value"])):
            v = fmt_ns(r["value"]) if r["metric"].endswith("_ns") else fmt_rate(r["value"])
            L.append("| %s | %s | %s | %s | %s | %s%s |" % (
                r["bench"], label(r), size_name(r["size"]),
                "default" if r["batch"] == 0 else r["batch"], r["metric"], v,
                spread(r)))
        L.append("")
    L.append("Plots: latency_vs_size.png, latency_wait_modes.png, "
             "throughput_vs_batch.png, peers.png (bars: the min-max over "
             "rounds). Raw rows: results.json.")
    return "\n".join(L) + "\n"


def sizes_section(L, res, backend):
    """Issue 12: an exact maxsize, unbounded vs bounded, out of line."""
    def ratio(a, b):
        return "%.2f" % (a / b) if a and b else "–"
    L.append("## Queue sizes (issue 12)\n")
    L.append("| cell | mpq-queue (1024) | exact (1023) | unbounded | "
             "exact / bounded | unbounded / bounded |")
    L.append("| --- | --- | --- | --- | --- | --- |")
    for bench, metric, size, batch in (("rtt", "rtt_p50_ns", 8, 1),
                                       ("stream", "msgs_per_s", 8, 1),
                                       ("stream", "msgs_per_s", 8, 32)):
        v = [res.get(metric, bench=bench, size=size, batch=batch, impl=i,
                     backend=backend, wait="adaptive")
             for i in ("mpq-queue", "mpq-queue-exact", "mpq-queue-unbounded")]
        f = fmt_ns if metric.endswith("_ns") else fmt_rate
        L.append("| %s %s %d B batch %d | %s | %s | %s | %s | %s |" % (
            bench, metric, size, batch,
            *[f(x) if x else "–" for x in v],
            ratio(v[1], v[0]), ratio(v[2], v[0])))
    L.append("\n| cell | in the slot | out of line | mpq-conn | "
             "out of line / conn |")
    L.append("| --- | --- | --- | --- | --- |")
    for bench, metric in (("rtt", "rtt_p50_ns"), ("stream", "bytes_per_s")):
        for size in (65536, 1048576):
            v = [res.get(metric, bench=bench, size=size, batch=1, impl=i,
                         backend=backend, wait="adaptive")
                 for i in ("mpq-queue", "mpq-queue-ool", "mpq-conn")]
            f = fmt_ns if metric.endswith("_ns") else fmt_rate
            L.append("| %s %s %s | %s | %s | %s | %s |" % (
                bench, metric, size_name(size),
                *[f(x) if x else "–" for x in v], ratio(v[1], v[2])))
    L.append("")


def run_start(quick, log):
    """start_bench once: rows of start + join per method and threads."""
    if not os.access(STARTBENCH, os.X_OK):
        log("no %s: no start-method rows (make bench-bin)" % STARTBENCH)
        return [], []
    n = 50 if quick else 200
    t0 = time.time()
    try:
        p = subprocess.run([STARTBENCH, "-n", str(n)], capture_output=True,
                           text=True, timeout=600)
        ok = p.returncode == 0
    except subprocess.TimeoutExpired:
        p, ok = None, False
    log("once      %-48s %6.2fs %s" % ("start fork/spawn/forkserver",
                                       time.time() - t0,
                                       "ok" if ok else "FAILED"))
    if not ok:
        err = p.stderr.strip().splitlines()[-3:] if p else ["timed out"]
        return [], [("start fork/spawn/forkserver", " | ".join(err))]
    rows = []
    for line in p.stdout.splitlines():
        mt = START_RE.match(line)
        if not mt:
            continue
        base = dict.fromkeys(KEY)
        base.update(bench="start", impl=mt.group(1),
                    workers=int(mt.group(2)), min=None, max=None, rounds=1)
        p50, p90 = float(mt.group(3)) * 1e3, float(mt.group(4)) * 1e3
        for metric, v in (("start_join_p50_ns", p50),
                          ("start_join_p90_ns", p90),
                          ("starts_per_s", 1e9 / p50 if p50 else 0)):
            r = dict(base, metric=metric, value=v)
            r["min"] = r["max"] = v
            rows.append(r)
    return rows, []


def start_section(L, rows):
    """Start methods: start + join per second, the parent idle or busy."""
    st = [r for r in rows if r["bench"] == "start"]
    if not st:
        return
    L.append("## Start methods: start + join of a trivial child (one run)\n")
    L.append("| method | parent's busy threads | starts/s | p50 | p90 "
             "| vs fork |")
    L.append("| --- | --- | --- | --- | --- | --- |")
    for th in sorted({r["workers"] for r in st}):
        fork = find_row(st, "starts_per_s", impl="fork", workers=th)
        for impl in ("fork", "spawn", "forkserver"):
            rate = find_row(st, "starts_per_s", impl=impl, workers=th)
            p50 = find_row(st, "start_join_p50_ns", impl=impl, workers=th)
            p90 = find_row(st, "start_join_p90_ns", impl=impl, workers=th)
            if not rate:
                continue
            L.append("| %s | %d | %s | %s | %s | %s |" % (
                impl, th, fmt_rate(rate["value"]),
                fmt_ns(p50["value"]) if p50 else "–",
                fmt_ns(p90["value"]) if p90 else "–",
                "%.2fx" % (rate["value"] / fork["value"])
                if fork and fork["value"] else "–"))
    L.append("")


def pool_section(L, res, rows, backend):
    """Pool rows beside CPython's Pool, and the CPU-bound map by workers."""
    prow = [r for r in rows if r["bench"] in ("pool-map", "pool-apply") and
            r["metric"] == "tasks_per_s"]
    if prow:
        L.append("## Pool: tasks/s, 2 workers, trivial task (x + 1)\n")
        L.append("| bench | chunksize | impl | tasks/s | CPU per task "
                 "| vs CPython |")
        L.append("| --- | --- | --- | --- | --- | --- |")
        for r in sorted(prow, key=lambda r: (r["bench"], r["batch"],
                                             -r["value"])):
            cp = res.get("tasks_per_s", bench=r["bench"], impl="cpython-pool",
                         batch=r["batch"])
            chunk = "–" if r["bench"] == "pool-apply" else (
                "default" if r["batch"] == 0 else r["batch"])
            cpu = find_row(rows, "cpu_ns_per_task", **{
                k: r[k] for k in KEY if k != "metric"})
            L.append("| %s | %s | %s | %s%s | %s | %s |" % (
                r["bench"], chunk, label(r), fmt_rate(r["value"]), spread(r),
                fmt_ns(cpu["value"]) if cpu else "–",
                "%.1fx" % (r["value"] / cp) if cp and r["impl"] !=
                "cpython-pool" else "–"))
        L.append("")
    cpu = sorted([r for r in rows if r["bench"] == "pool-cpu" and
                  r["metric"] == "tasks_per_s"],
                 key=lambda r: (r.get("backend") or "", r.get("workers") or 0))
    if cpu:
        L.append("## Pool: CPU-bound map (FNV-1a over 16 KiB blocks, 16 "
                 "rounds), by workers\n")
        L.append("| backend | workers | blocks/s | MB/s hashed | vs 1 worker "
                 "| CPUs the workers got |")
        L.append("| --- | --- | --- | --- | --- | --- |")
        for r in cpu:
            one = res.get("tasks_per_s", bench="pool-cpu", impl=r["impl"],
                          backend=r["backend"], workers=1)
            bps = res.get("bytes_per_s", bench="pool-cpu", impl=r["impl"],
                          backend=r["backend"], workers=r["workers"])
            cpus = res.get("worker_cpus", bench="pool-cpu", impl=r["impl"],
                           backend=r["backend"], workers=r["workers"])
            L.append("| %s | %s | %s%s | %.0f | %s | %s |" % (
                r["backend"], r["workers"], fmt_rate(r["value"]), spread(r),
                (bps or 0) / 1e6, "%.2fx" % (r["value"] / one) if one else "–",
                "%.2f" % cpus if cpus is not None else "–"))
        L.append("\nCPUs the workers got: their CPU time over the wall time; "
                 "below the worker count when other work shares the "
                 "machine's CPUs (see the load above).\n")


def size_name(s):
    if s is None:
        return "–"
    if s >= 1 << 20:
        return "%d MiB" % (s >> 20)
    if s >= 1 << 10:
        return "%d KiB" % (s >> 10)
    return "%d B" % s


def by_label(rows, bench, metric, col):
    out = {}
    for r in rows:
        if r["bench"] == bench and r["metric"] == metric:
            out.setdefault(label(r), {})[r[col]] = r["value"]
    return sorted(out.items())


# ---- plots ------------------------------------------------------------

# One colour and one point shape per series of a plot, none repeated (at
# most 8 series a plot, so a reader tells them apart at a glance).
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
           "#e377c2", "#17becf")
POINTS = (7, 5, 9, 11, 13, 15, 1, 2)


def plot_title(m, quick, rounds, what):
    mode = ("quick mode: 1/10 of the samples, %d round" % rounds if quick else
            "full run: %d rounds" % rounds) + (
                ", bars: min-max over rounds" if rounds > 1 else
                ", one round: no spread")
    return "%s\\n%s, %d vCPUs%s, load %.1f; %s" % (
        what, m["cpu"], m["vcpus"], " (VM)" if m["vm"] else "", m["load"],
        mode)


def gnuplot(script, log, name):
    p = subprocess.run(["gnuplot"], input="\n".join(script) + "\n",
                       capture_output=True, text=True)
    if p.returncode:
        log("gnuplot failed for %s: %s" % (name, p.stderr.strip()))


def line_plot(rows, outdir, log, name, title, series, col, xl, yl, scale,
              extra):
    """series: [(label, {want})]; a line per series over col, with the
    min-max bars; a series of fewer than 3 points is drawn as points only,
    not as a line across the axis."""
    datafiles, plots = [], []
    for i, (lab, want) in enumerate(series[:len(COLOURS)]):
        sel = sorted((r for r in rows if all(r.get(k) == v for k, v in
                                             want.items())),
                     key=lambda r: r[col])
        if not sel:
            continue
        path = os.path.join(outdir, "%s.%d.dat" % (name, i))
        with open(path, "w") as f:
            for r in sel:
                f.write("%s %g %g %g\n" % (r[col], r["value"] / scale,
                                           r["min"] / scale, r["max"] / scale))
        datafiles.append(path)
        plots.append('"%s" using 1:2:3:4 with %s lw 2 pt %d ps 1.3 '
                     'lc rgb "%s" title "%s"' % (
                         path, "yerrorlines" if len(sel) >= 3 else "yerrorbars",
                         POINTS[i], COLOURS[i], lab))
    if not plots:
        return
    gnuplot(['set terminal pngcairo noenhanced size 1100,680 font "sans,10"',
             'set output "%s"' % os.path.join(outdir, name),
             'set title "%s"' % title, 'set xlabel "%s"' % xl,
             'set ylabel "%s"' % yl, "set logscale x 2", "set logscale y 10",
             extra, "set grid", "set key outside right",
             "plot " + ", ".join(plots)], log, name)
    for p in datafiles:
        os.unlink(p)


def peers_plot(rows, m, outdir, log, backend, quick, rounds):
    """One panel per comparison row: mpq, the spin floor and each peer."""
    panels = []
    for name, metric, cell, higher in PEER_ROWS:
        cells = [(c, r) for c, r in peer_cells(rows, backend, cell, metric) if r]
        if len(cells) > 1:
            panels.append((name, metric, cells))
    if not panels:
        return
    cols = [c for c, _ in peer_cells(rows, backend, PEER_ROWS[0][2],
                                     PEER_ROWS[0][1])]
    out = os.path.join(outdir, "peers.png")
    script = ['set terminal pngcairo noenhanced size 1300,820 font "sans,10"',
              'set output "%s"' % out,
              "set multiplot layout 2,3 title \"%s\"" % plot_title(
                  m, quick, rounds, "mpq beside the libraries a C programmer "
                  "would pick instead (lower is better for round trips, "
                  "higher for rates)"),
              "set logscale y 10", "set grid ytics", "unset key",
              "set pointsize 2"] + [
                  "set linetype %d lc rgb \"%s\" pt %d" % (i + 1, c, POINTS[i])
                  for i, c in enumerate(COLOURS)] + [
              "set xtics rotate by -30 left", "set xrange [-0.7:%g]" % (
                  len(cols) - 0.3), "set offsets 0, 0, graph 0.15, graph 0.1"]
    datafiles = []
    for k, (name, metric, cells) in enumerate(panels):
        ns = metric.endswith("_ns")
        scale = 1e3 if ns else 1e6
        path = os.path.join(outdir, "peers.%d.dat" % k)
        with open(path, "w") as f:
            for c, r in cells:
                i = cols.index(c)
                f.write('%d %g %g %g "%s" "%s"\n' % (
                    i, r["value"] / scale, r["min"] / scale, r["max"] / scale,
                    c.split(" (")[0], (fmt_ns(r["value"]) if ns else
                                       fmt_rate(r["value"]) + "/s")))
        datafiles.append(path)
        script += ['set title "%s"' % name,
                   'set ylabel "%s"' % ("µs, p50" if ns else "M msgs/s"),
                   # lc variable: the column's own linetype, so each
                   # library keeps its colour and shape in every panel
                   'plot "%s" using 1:2:3:4:($1+1):xtic(5) with yerrorbars '
                   'lw 2 ps 2 lc variable, "" using 1:2:6 with labels '
                   'offset 0,1 font "sans,8"' % path]
    script.append("unset multiplot")
    gnuplot(script, log, "peers.png")
    for p in datafiles:
        os.unlink(p)


def plot(rows, outdir, log, m=None, quick=False, rounds=1):
    m = m or {"cpu": "?", "vcpus": 0, "vm": False, "load": 0}
    backend = "kmod" if m.get("dev_mpq") else "memfd"
    rtt = [r for r in rows if r["bench"] == "rtt" and r["metric"] == "rtt_p50_ns"]
    q = dict(backend=backend)
    sizes = ('set xtics ("8" 8, "64" 64, "256" 256, "1K" 1024, "4K" 4096, '
             '"16K" 16384, "64K" 65536, "256K" 262144, "1M" 1048576)\n'
             'set xrange [6:1400000]\nset format y "%g"')
    line_plot(rtt, outdir, log, "latency_vs_size.png",
              plot_title(m, quick, rounds, "round trip between two processes, "
                         "p50: mpq (default wait, %s) and kernel IPC" % backend),
              [("mpq-queue", dict(impl="mpq-queue", wait="adaptive", **q)),
               ("mpq-queue-zc (zero-copy)", dict(impl="mpq-queue-zc", **q)),
               ("mpq-conn", dict(impl="mpq-conn", wait="adaptive", **q)),
               ("pipe", dict(impl="pipe")),
               ("unix-socket", dict(impl="unix-socket")),
               ("posix-mq", dict(impl="posix-mq")),
               ("CPython mp.Pipe", dict(impl="cpython-pipe")),
               ("spin floor", dict(impl="spin-floor"))],
              "size", "message size (bytes)", "round trip p50 (µs)", 1e3,
              sizes)
    line_plot(rtt, outdir, log, "latency_wait_modes.png",
              plot_title(m, quick, rounds, "round trip p50 by mpq-queue wait "
                         "mode (%s), beside the sleeping doorbells" % backend),
              [("mpq-queue spin", dict(impl="mpq-queue", wait="spin", **q)),
               ("mpq-queue adaptive (default)",
                dict(impl="mpq-queue", wait="adaptive", **q)),
               ("mpq-queue block", dict(impl="mpq-queue", wait="block", **q)),
               ("mpq-queue epoll", dict(impl="mpq-queue", wait="epoll", **q)),
               ("eventfd + shared ring", dict(impl="eventfd")),
               ("futex + shared ring", dict(impl="futex")),
               ("spin floor", dict(impl="spin-floor"))],
              "size", "message size (bytes)", "round trip p50 (µs)", 1e3,
              sizes)
    st = [r for r in rows if r["bench"] == "stream" and r["size"] == 8 and
          r["metric"] == "msgs_per_s"]
    line_plot(st, outdir, log, "throughput_vs_batch.png",
              plot_title(m, quick, rounds, "one-way stream, 8-byte messages, "
                         "by messages per call (%s)" % backend),
              [("spin floor (ring)", dict(impl="spin-floor")),
               ("mpq-queue adaptive (default)",
                dict(impl="mpq-queue", wait="adaptive", **q)),
               ("mpq-queue spin", dict(impl="mpq-queue", wait="spin", **q)),
               ("mpq-queue block", dict(impl="mpq-queue", wait="block", **q)),
               ("eventfd + shared ring", dict(impl="eventfd")),
               ("futex + shared ring", dict(impl="futex")),
               ("pipe", dict(impl="pipe")),
               ("unix-socket", dict(impl="unix-socket"))],
              "batch", "batch (messages per call)", "messages/s", 1,
              'set xtics (1, 8, 32, 256)\nset xrange [0.8:320]\n'
              'set format y "%.0s%c"')
    peers_plot(rows, m, outdir, log, backend, quick, rounds)


def baseline_cells(bdir, cells, quick, log):
    """mpq's cells of mpqbench and pool_bench, with bdir's programs, where
    those list the cell too (an older checkout may not have it)."""
    out = []
    for prog in (MPQBENCH, POOLBENCH):
        exe = os.path.join(bdir, "bench", os.path.basename(prog))
        if not os.access(exe, os.X_OK):
            log("baseline: no %s" % exe)
            continue
        cmd = BaseCmd([exe])
        have = {cell_name(c) for _, c in list_cells(cmd, quick)}
        out += [(cmd, c) for p, c in cells
                if p == [prog] and c["impl"].startswith("mpq") and
                cell_name(c) in have]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--out", default=os.path.join(TOP, "build", "bench"))
    ap.add_argument("--only", help="regex over cell names")
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite report and plots from OUT/results.json")
    ap.add_argument("--baseline", metavar="BUILD_DIR",
                    help="also run mpq's cells with another checkout's "
                    "build (its bench/mpqbench, bench/pool_bench), "
                    "interleaved, and judge regressions against them")
    a = ap.parse_args()
    # Quick: one round, a first look in under a minute; full: three.
    rounds = a.rounds or (1 if a.quick else 3)
    os.makedirs(a.out, exist_ok=True)

    def log(s):
        print(s, file=sys.stderr, flush=True)

    if a.report_only:
        with open(os.path.join(a.out, "results.json")) as f:
            data = json.load(f)
        text = report(data["machine"], data["results"], [], a.quick,
                      max([r["rounds"] for r in data["results"]] or [1]),
                      data.get("baseline"))
        with open(os.path.join(a.out, "report.md"), "w") as f:
            f.write(text)
        plot(data["results"], a.out, log, data["machine"], a.quick,
             max([r["rounds"] for r in data["results"]] or [1]))
        print(text)
        return 0

    m = machine()
    cells = (list_cells([MPQBENCH], a.quick) + list_cells([POOLBENCH], a.quick)
             + list_cells([LOCKBENCH], a.quick) + list_cells(CPYBENCH, a.quick))
    # The peers are compared on the host; in the test VM (make bench-vm,
    # for the kmod backend) they are not run unless asked for: untried
    # there (iceoryx's RouDi, ZeroMQ's /tmp sockets under the 9p root).
    peers = PEERS
    if m["in_test_vm"] and os.environ.get("MPQ_BENCH_PEERS") != "1":
        log("in the test VM: no peer rows (MPQ_BENCH_PEERS=1 to run them)")
        peers = ()
    for name in peers:
        exe = os.path.join(PEER_DIR, name)
        if os.access(exe, os.X_OK):
            cells += list_cells([exe], a.quick)
        else:
            log("no %s: its peer rows are missing (make bench-bin, "
                "scripts/deps.sh)" % exe)
    if os.path.exists(NETBENCH):
        cells += list_cells([NETBENCH], a.quick) + list_cells(NETPYBENCH, a.quick)
    if os.path.exists(NOPROBES_LIB):
        cells += [(NOPROBES, c) for _, c in list_cells([MPQBENCH], a.quick)
                  if re.search(PROBE_CELLS, cell_name(c))]
    if a.baseline:
        cells += baseline_cells(a.baseline, cells, a.quick, log)
    if a.only:
        cells = [c for c in cells if re.search(a.only, cell_name(c[1]))]
    cells.sort(key=lambda c: order_key(c[1]) + (isinstance(c[0], BaseCmd),))
    log("%d cells x %d rounds on %s, %d vCPUs, kernel %s" % (
        len(cells), rounds, m["cpu"], m["vcpus"], m["kernel"]))
    t0 = time.time()
    rows, failures = run_cells(cells, rounds, a.quick, log)
    baseline = None
    if a.baseline:
        rows, refail = recheck(cells, rows, rounds, a.quick, log)
        failures += refail
        base, now = [], []
        for r in rows:
            (base if r.pop("baseline", False) else now).append(r)
        baseline = {"dir": os.path.abspath(a.baseline), "results": base}
        rows = now
    if not a.only or re.search(a.only, "start fork/spawn/forkserver"):
        srows, sfail = run_start(a.quick, log)
        rows += srows
        failures += sfail
    m["seconds"] = round(time.time() - t0, 1)
    out = {"machine": m, "results": rows}
    if baseline:
        out["baseline"] = baseline
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(out, f, indent=1)
    text = report(m, rows, failures, a.quick, rounds, baseline)
    with open(os.path.join(a.out, "report.md"), "w") as f:
        f.write(text)
    plot(rows, a.out, log, m, a.quick, rounds)
    print(text)
    log("wrote %s/{results.json,report.md,*.png} in %.0f s" % (a.out, m["seconds"]))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
