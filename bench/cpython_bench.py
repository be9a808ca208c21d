#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""cpython_bench: CPython's multiprocessing, the baseline mpq is compared to.

Run by bench/run.py once per measurement cell, with /usr/bin/python3 (the
standard library only). Every child is a process, never a thread. The start
method is the platform default, which is "fork" on Linux (CPython 3.11): the
children are forked from this process, as a user of multiprocessing on Linux
gets them. Functions run in children are module-level so they also pickle.

Cells (bench, impl):

  rtt, cpython-pipe
      multiprocessing.Pipe() (duplex, a socketpair) ping-pong between the
      parent and one child Process. The parent send_bytes() a payload of
      --size bytes (its first bytes carry a sequence number), the child
      recv_bytes() it and sends it back, the parent recv_bytes() it and
      checks it is the same. After 1,000 warm-up exchanges, N round trips
      are each timed with time.perf_counter_ns() in the parent (send to
      reply received). Metrics rtt_p50_ns, rtt_p90_ns, rtt_p99_ns,
      rtt_p999_ns, rtt_max_ns: nearest-rank percentiles over every sample.
      N: 20,000 for sizes <= 1 KiB, 5,000 up to 64 KiB, 500 above.

  stream, cpython-queue | cpython-simplequeue
      multiprocessing.Queue or SimpleQueue. A producer Process puts the ints
      0..M-1, then None; the parent gets until None and checks it received
      exactly 0..M-1 in order. Timed from the return of the first get
      (item 0) to the return of the get of item M-1, so M-1 messages are
      timed ("count"). Metrics msgs_per_s, and cpu_ns_per_msg: the CPU
      time of both processes (getrusage) over M. M: 300,000.

  pool-map, cpython-pool
      Pool(2).map(f, range(N)) with f(x) = x + 1, checked against
      [1..N]. batch is the chunksize: 0 means map's default chunksize (N/8
      with two workers), k >= 1 means chunksize=k. N: 1,000,000 as in
      pool_bench's mpq cells, but 20,000 for chunksize 1 (one task per
      item is slow; the rate is what is compared). The pool is created and
      warmed with one small map first; only the measured map is timed.
      Metrics tasks_per_s (items per second), and cpu_ns_per_task: the CPU
      time of the parent and the workers over N, less that of a pool that
      only starts, warms up and ends.

  pool-apply, cpython-pool
      Pool(2): apply_async(f, (i,)) for i in range(N), then get() on every
      result, checked; the submissions and the gets are timed together
      (pool created and warmed first). Metrics tasks_per_s and
      cpu_ns_per_task (as for pool-map). N: 100,000, as
      in pool_bench's mpq cell.

  lock, cpython-lock
      multiprocessing.Lock() acquire() + release() in one process, nobody
      else touching it; N pairs in a Python loop with the bound methods
      held in locals (the interpreter's loop overhead is included: it is
      what a Python user pays; the empty loop's cost goes to stderr).
      Metric ns_per_op, per acquire+release pair. N: 2,000,000.

  lock-contended, cpython-lock
      The parent and one child each do N/2 times: acquire the Lock,
      increment a multiprocessing.Value('q', lock=False), release. Both
      start together at a Barrier; timed in the parent from the barrier to
      both having finished. The final count must be exactly N. Metric
      ns_per_op = total time / N pairs. N: 400,000 (200,000 per process).

--quick divides every default N (and M) by 10; --count N sets it exactly
(samples for rtt, messages for stream, items/tasks/pairs otherwise; the
warm-up stays). size is 8 and batch 1 wherever they mean nothing (pool-map
uses batch as described above); other values are refused there.

Usage:
  cpython_bench.py --list [--quick]
      every cell, one JSON object per line: {"bench", "impl", "size", "batch"}
      (the same cells with or without --quick)
  cpython_bench.py BENCH IMPL [--size N] [--batch N] [--quick] [--count N]
                   [--timeout SECONDS]
      result rows on stdout, one JSON object per line:
      {"bench", "impl", "backend": null, "wait": null, "size", "batch",
       "metric", "value", "count"}; diagnostics on stderr.

Exit status: 0 on success; 1 if anything went wrong (a wrong or lost
message, a wrong result, a child that failed, an exception, the timeout,
300 s by default, after which the children are terminated); 2 on bad usage.
No result row is printed unless the whole cell succeeded.
"""

import argparse
import ctypes
import json
import multiprocessing as mp
import os
import resource
import signal
import sys
import time

WARMUP = 1000                   # rtt warm-up exchanges, never measured
RTT_SIZES = (8, 1024, 65536, 1048576)
STREAM_IMPLS = ("cpython-queue", "cpython-simplequeue")
POOL_WORKERS = 2

# bench -> the impls it accepts
BENCHES = {
    "rtt": ("cpython-pipe",),
    "stream": STREAM_IMPLS,
    "pool-map": ("cpython-pool",),
    "pool-apply": ("cpython-pool",),
    "lock": ("cpython-lock",),
    "lock-contended": ("cpython-lock",),
}

PR_SET_PDEATHSIG = 1
try:
    _LIBC = ctypes.CDLL(None, use_errno=True)
except OSError:
    _LIBC = None


class BenchError(Exception):
    """A cell went wrong: a wrong result, a lost message, a failed child."""


class BenchTimeout(BenchError):
    """The cell ran out of time (SIGALRM)."""


# ---------------------------------------------------------------- the cells

def all_cells():
    """Every measurement cell, in the order run.py should run them."""
    cells = [("rtt", "cpython-pipe", size, 1) for size in RTT_SIZES]
    cells += [("stream", impl, 8, 1) for impl in STREAM_IMPLS]
    cells += [("pool-map", "cpython-pool", 8, 1),
              ("pool-map", "cpython-pool", 8, 0),
              ("pool-apply", "cpython-pool", 8, 1),
              ("lock", "cpython-lock", 8, 1),
              ("lock-contended", "cpython-lock", 8, 1)]
    return cells


def default_count(bench, size, batch, quick):
    """How many samples/messages/items/pairs a cell measures by default."""
    if bench == "rtt":
        n = 20000 if size <= 1024 else 5000 if size <= 65536 else 500
    elif bench == "stream":
        n = 300000
    elif bench == "pool-map":
        n = 20000 if batch == 1 else 1000000
    elif bench == "pool-apply":
        n = 100000
    elif bench == "lock":
        n = 2000000
    else:                                       # lock-contended, in total
        n = 400000
    return n // 10 if quick else n


# ------------------------------------------------------- children, helpers

# Placement, as in bench/bench.h: with MPQ_BENCH_PIN=split (the default on
# two or more CPUs) the parent of a two-process cell runs on the first
# allowed CPU and its child on the second, so that CPython and mpq are
# compared with the same placement; a sleeping wake-up costs ~5 us on one
# vCPU and 40-60 us across vCPUs here. Pool cells are left to the scheduler.
_CPUS = sorted(os.sched_getaffinity(0))
_PIN = os.environ.get("MPQ_BENCH_PIN", "split") != "none" and len(_CPUS) >= 2


def _pin_parent():
    if _PIN:
        os.sched_setaffinity(0, {_CPUS[0]})


def _die_with_parent(parent_pid):
    """In a child: be killed if the parent dies (even by SIGKILL), so that no
    benchmark child outlives a killed run; and take the second CPU."""
    if _PIN:
        os.sched_setaffinity(0, {_CPUS[1]})
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:              # the parent died already
        os._exit(1)


def _inc(x):
    """The trivial Pool task."""
    return x + 1


def _pipe_echo(conn, parent_pid):
    """rtt child: send every message back until an empty one."""
    _die_with_parent(parent_pid)
    recv, send = conn.recv_bytes, conn.send_bytes
    while True:
        msg = recv()
        if not msg:
            break
        send(msg)
    conn.close()


def _stream_producer(q, m, parent_pid):
    """stream child: put 0..m-1, then None."""
    _die_with_parent(parent_pid)
    put = q.put
    for i in range(m):
        put(i)
    put(None)


def _lock_worker(lock, counter, n, barrier, done, parent_pid):
    """lock-contended child: n locked increments, then say so."""
    _die_with_parent(parent_pid)
    barrier.wait(60)
    acquire, release = lock.acquire, lock.release
    for _ in range(n):
        acquire()
        counter.value += 1
        release()
    done.set()


def start_child(target, *args):
    """Start a daemonic child Process (fork) running target(*args, our pid)."""
    p = mp.Process(target=target, args=args + (os.getpid(),), daemon=True)
    p.start()
    return p


def join_child(p, what):
    """Wait for a child that should be finishing; it must exit with 0."""
    p.join(30)
    if p.exitcode is None:
        raise BenchError(f"{what}: the child did not exit")
    if p.exitcode != 0:
        raise BenchError(f"{what}: the child exited with {p.exitcode}")


def make_pool():
    """Pool(2) whose workers die with us, warmed up by the caller."""
    return mp.Pool(POOL_WORKERS, initializer=_die_with_parent,
                   initargs=(os.getpid(),))


def nearest_rank(sorted_samples, num, den):
    """The num/den quantile by nearest rank: the smallest sample with at
    least num/den of all samples at or below it."""
    n = len(sorted_samples)
    rank = max(1, -(-num * n // den))           # ceil(num * n / den)
    return sorted_samples[rank - 1]


def rate(count, elapsed_ns):
    return count * 1e9 / elapsed_ns


def diag(msg):
    print(f"cpython_bench: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------- benchmarks
# Each returns [(metric, value), ...]; the caller adds the other fields.

def bench_rtt(size, n):
    if size < 1:
        raise BenchError("rtt needs --size >= 1 (an empty message means stop)")
    parent_end, child_end = mp.Pipe()           # duplex: a socketpair
    child = start_child(_pipe_echo, child_end)
    child_end.close()                   # so a dead child reads as EOFError
    send, recv = parent_end.send_bytes, parent_end.recv_bytes
    seq_len = min(8, size)
    mask = (1 << (8 * seq_len)) - 1
    buf = bytearray(size)
    pc = time.perf_counter_ns
    samples = [0] * n
    for i in range(WARMUP + n):
        # A new sequence number in every message: a lost, repeated or
        # corrupted reply does not compare equal.
        buf[:seq_len] = (i & mask).to_bytes(8, "little")[:seq_len]
        t0 = pc()
        send(buf)
        reply = recv()
        t1 = pc()
        if reply != buf:
            raise BenchError(f"rtt: round trip {i}: the reply differs "
                             f"({len(reply)} bytes back, {size} sent)")
        if i >= WARMUP:
            samples[i - WARMUP] = t1 - t0
    send(b"")
    join_child(child, "rtt")
    parent_end.close()
    samples.sort()
    return [("rtt_p50_ns", nearest_rank(samples, 50, 100)),
            ("rtt_p90_ns", nearest_rank(samples, 90, 100)),
            ("rtt_p99_ns", nearest_rank(samples, 99, 100)),
            ("rtt_p999_ns", nearest_rank(samples, 999, 1000)),
            ("rtt_max_ns", samples[-1])], n


def bench_stream(impl, m):
    if m < 2:
        raise BenchError("stream needs --count >= 2")
    q = mp.Queue() if impl == "cpython-queue" else mp.SimpleQueue()
    cpu0 = _cpu_ns()
    producer = start_child(_stream_producer, q, m)
    get = q.get
    pc = time.perf_counter_ns
    first = get()
    t0 = pc()
    if first != 0:
        raise BenchError(f"stream: message 0 is {first!r}")
    for i in range(1, m):
        x = get()
        if x != i:
            raise BenchError(f"stream: message {i} is {x!r}")
    t1 = pc()
    last = get()
    if last is not None:
        raise BenchError(f"stream: {last!r} after message {m - 1}, not None")
    join_child(producer, "stream")
    cpu = _cpu_ns() - cpu0
    q.close()
    return [("msgs_per_s", rate(m - 1, t1 - t0)),
            ("cpu_ns_per_msg", cpu / m)], m - 1


def _cpu_ns():
    """CPU time (user + system) of this process and its reaped children:
    across a run, what both sides (and mp.Queue's feeder thread) spent."""
    a = resource.getrusage(resource.RUSAGE_SELF)
    b = resource.getrusage(resource.RUSAGE_CHILDREN)
    return int((a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime) * 1e9)


def _pool_overhead(warm):
    """CPU time of a pool that only starts, warms up and ends: subtracted
    from a run's, so that cpu_ns_per_task is the tasks' own (the workers'
    time counts once they are reaped, at join)."""
    cpu0 = _cpu_ns()
    pool = make_pool()
    try:
        warm(pool)
        pool.close()
        pool.join()
    finally:
        pool.terminate()
    return _cpu_ns() - cpu0


def _warm_map(pool, chunksize=None):
    pool.map(_inc, range(1000), chunksize)


def _warm_apply(pool):
    for r in [pool.apply_async(_inc, (i,)) for i in range(100)]:
        r.get()


def bench_pool_map(chunksize, n):
    base = _pool_overhead(lambda p: _warm_map(p, chunksize or None))
    cpu0 = _cpu_ns()
    pool = make_pool()
    try:
        _warm_map(pool, chunksize or None)                     # warm-up
        pc = time.perf_counter_ns
        t0 = pc()
        result = pool.map(_inc, range(n), chunksize or None)
        t1 = pc()
        if result != list(range(1, n + 1)):
            raise BenchError("pool-map: wrong result list")
        pool.close()
        pool.join()
    finally:
        pool.terminate()
    cpu = max(_cpu_ns() - cpu0 - base, 0)
    return [("tasks_per_s", rate(n, t1 - t0)),
            ("cpu_ns_per_task", cpu / n)], n


def bench_pool_apply(n):
    base = _pool_overhead(_warm_apply)
    cpu0 = _cpu_ns()
    pool = make_pool()
    try:
        _warm_apply(pool)                                       # warm-up
        pc = time.perf_counter_ns
        apply_async = pool.apply_async
        t0 = pc()
        pending = [apply_async(_inc, (i,)) for i in range(n)]
        results = [r.get() for r in pending]
        t1 = pc()
        if results != list(range(1, n + 1)):
            raise BenchError("pool-apply: wrong results")
        pool.close()
        pool.join()
    finally:
        pool.terminate()
    cpu = max(_cpu_ns() - cpu0 - base, 0)
    return [("tasks_per_s", rate(n, t1 - t0)),
            ("cpu_ns_per_task", cpu / n)], n


def bench_lock(n):
    lock = mp.Lock()
    acquire, release = lock.acquire, lock.release
    pc = time.perf_counter_ns
    for _ in range(10000):                                      # warm-up
        acquire()
        release()
    t0 = pc()
    for _ in range(n):
        acquire()
        release()
    t1 = pc()
    # For reference only: what the bare for loop costs per iteration.
    t2 = pc()
    for _ in range(n):
        pass
    t3 = pc()
    diag(f"lock: the empty loop alone costs {(t3 - t2) / n:.1f} ns "
         f"per iteration")
    if not acquire(False):
        raise BenchError("lock: still held after the loop")
    release()
    return [("ns_per_op", (t1 - t0) / n)], n


def bench_lock_contended(n):
    if n < 2 or n % 2:
        raise BenchError("lock-contended needs an even --count >= 2")
    each = n // 2
    lock = mp.Lock()
    counter = mp.Value("q", 0, lock=False)
    barrier = mp.Barrier(2)
    done = mp.Event()
    child = start_child(_lock_worker, lock, counter, each, barrier, done)
    acquire, release = lock.acquire, lock.release
    pc = time.perf_counter_ns
    barrier.wait(60)
    t0 = pc()
    for _ in range(each):
        acquire()
        counter.value += 1
        release()
    if not done.wait(240):
        raise BenchError("lock-contended: the child did not finish")
    t1 = pc()
    join_child(child, "lock-contended")
    if counter.value != n:
        raise BenchError(f"lock-contended: count {counter.value}, "
                         f"expected {n}")
    return [("ns_per_op", (t1 - t0) / n)], n


def run_cell(bench, impl, size, batch, count):
    if bench in ("rtt", "stream", "lock-contended"):
        _pin_parent()
    if bench == "rtt":
        return bench_rtt(size, count)
    if bench == "stream":
        return bench_stream(impl, count)
    if bench == "pool-map":
        return bench_pool_map(batch, count)
    if bench == "pool-apply":
        return bench_pool_apply(count)
    if bench == "lock":
        return bench_lock(count)
    return bench_lock_contended(count)


# ------------------------------------------------------------------ main

def cleanup_children():
    """Terminate, then kill, whatever children are still alive."""
    for p in mp.active_children():
        p.terminate()
    deadline = time.monotonic() + 5
    for p in mp.active_children():
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(1)


def on_alarm(signum, frame):
    # First alarm: raise in the main thread, so the cell fails and its
    # children are cleaned up; a second one means the cleanup hangs: leave
    # at once (the children die with us, see _die_with_parent).
    if getattr(on_alarm, "fired", False):
        os.write(2, b"cpython_bench: cleanup timed out\n")
        os._exit(1)
    on_alarm.fired = True
    signal.alarm(15)
    raise BenchTimeout("timed out")


def parse_args(argv):
    ap = argparse.ArgumentParser(
        description="CPython multiprocessing baseline, one cell per run.")
    ap.add_argument("--list", action="store_true",
                    help="print every cell as JSON lines and exit")
    ap.add_argument("bench", nargs="?", choices=sorted(BENCHES))
    ap.add_argument("impl", nargs="?")
    ap.add_argument("--size", type=int, help="message size, rtt only")
    ap.add_argument("--batch", type=int,
                    help="pool-map chunksize (0: default); 1 elsewhere")
    ap.add_argument("--quick", action="store_true",
                    help="a tenth of the default counts")
    ap.add_argument("--count", type=int, help="exact count to measure")
    ap.add_argument("--timeout", type=int, default=300,
                    help="fail the cell after this many seconds (300)")
    args = ap.parse_args(argv)
    if args.list:
        return args
    if args.bench is None or args.impl is None:
        ap.error("BENCH and IMPL are required (or --list)")
    if args.impl not in BENCHES[args.bench]:
        ap.error(f"impl {args.impl!r} is not one of {BENCHES[args.bench]} "
                 f"for {args.bench}")
    if args.size is None:
        args.size = 8
    elif args.bench != "rtt" and args.size != 8:
        ap.error(f"--size means nothing for {args.bench}: only 8")
    if args.batch is None:
        args.batch = 1
    elif args.bench == "pool-map":
        if args.batch < 0:
            ap.error("--batch (the chunksize) must be >= 0")
    elif args.batch != 1:
        ap.error(f"--batch means nothing for {args.bench}: only 1")
    if args.count is not None and args.count < 1:
        ap.error("--count must be >= 1")
    if args.timeout < 1:
        ap.error("--timeout must be >= 1")
    return args


def main(argv):
    args = parse_args(argv)
    if args.list:
        for bench, impl, size, batch in all_cells():
            print(json.dumps({"bench": bench, "impl": impl,
                              "size": size, "batch": batch}))
        return 0

    count = args.count or default_count(args.bench, args.size, args.batch,
                                        args.quick)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(args.timeout)
    started = time.monotonic()
    try:
        metrics, measured = run_cell(args.bench, args.impl, args.size,
                                     args.batch, count)
        signal.alarm(0)
    except BaseException as e:  # noqa: B902 - any failure fails the cell
        signal.alarm(0)
        signal.alarm(15)            # the cleanup gets its own short deadline
        diag(f"{args.bench} {args.impl} size={args.size} "
             f"batch={args.batch}: FAILED: {type(e).__name__}: {e}")
        try:
            cleanup_children()
        finally:
            # Skip multiprocessing's exit handlers: they could wait on a
            # half-written queue; the children are gone or die with us.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)

    for metric, value in metrics:
        print(json.dumps({"bench": args.bench, "impl": args.impl,
                          "backend": None, "wait": None,
                          "size": args.size, "batch": args.batch,
                          "metric": metric, "value": value,
                          "count": measured}))
    sys.stdout.flush()
    diag(f"{args.bench} {args.impl} size={args.size} batch={args.batch} "
         f"count={measured}: "
         + ", ".join(f"{m}={v:.6g}" for m, v in metrics)
         + f" ({time.monotonic() - started:.2f} s; python "
           f"{sys.version.split()[0]}, start method "
           f"{mp.get_start_method()})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
