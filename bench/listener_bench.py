#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Listener/Client round trip, CPython at both ends: the twin of
bench/listener_bench.c over the same socket kinds. A parent listens (with
an authkey), a forked child connects with Client and echoes; one message of
SIZE bytes goes there and back COUNT times.

  listener_bench.py --list [--quick]
  listener_bench.py net-rtt cpython-listener-unix|cpython-listener-tcp
                    --size N [--quick] [--count N]

Prints one JSON row per metric (rtt_p50_ns, rtt_p99_ns, msgs_per_s, and
cpu_ns_per_msg: both processes' CPU time per exchange, warm-up included).
"""
import argparse
import json
import os
import resource
import sys
import time
from multiprocessing.connection import Client, Listener

KEY = b"bench key"
IMPLS = ("cpython-listener-unix", "cpython-listener-tcp")
SIZES = (8, 65536)


def echo(address):
    with Client(address, authkey=KEY) as c:
        while True:
            try:
                msg = c.recv_bytes()
            except EOFError:
                return
            c.send_bytes(msg)


def cpu_ns():
    """This process's CPU time and its reaped children's, in ns."""
    a = resource.getrusage(resource.RUSAGE_SELF)
    b = resource.getrusage(resource.RUSAGE_CHILDREN)
    return int((a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime) * 1e9)


def run(impl, size, count):
    # The unix kind: an abstract name, as mpq's is (there the kernel's pick).
    where = ("127.0.0.1", 0) if impl.endswith("tcp") else \
        "\0mpq-listener-bench-%d" % os.getpid()
    family = "AF_INET" if impl.endswith("tcp") else "AF_UNIX"
    warm = count // 10 + 10
    buf = bytes(size)
    lat = []
    with Listener(where, family=family, authkey=KEY) as listener:
        address = listener.address
        cpu = cpu_ns()
        pid = os.fork()
        if pid == 0:
            try:
                echo(address)
            finally:
                os._exit(0)
        conn = listener.accept()
        now = time.perf_counter_ns
        start = now()
        for i in range(warm + count):
            t0 = now()
            conn.send_bytes(buf)
            conn.recv_bytes()
            t1 = now()
            if i == warm:
                start = t0
            if i >= warm:
                lat.append(t1 - t0)
        end = now()
        conn.close()
        os.waitpid(pid, 0)
        cpu = cpu_ns() - cpu
    lat.sort()

    def pct(p):
        return lat[min(len(lat) - 1, max(0, int(p / 100 * len(lat) + 0.999999) - 1))]

    rows = (("rtt_p50_ns", pct(50)), ("rtt_p99_ns", pct(99)),
            ("msgs_per_s", count * 1e9 / (end - start)),
            ("cpu_ns_per_msg", cpu / (warm + count)))
    for metric, value in rows:
        print(json.dumps({"bench": "net-rtt", "impl": impl, "backend": None,
                          "wait": None, "size": size, "batch": 1,
                          "metric": metric, "value": value, "count": count}))


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--list", action="store_true")
    ap.add_argument("bench", nargs="?", choices=("net-rtt",))
    ap.add_argument("impl", nargs="?", choices=IMPLS)
    ap.add_argument("--size", type=int, default=8)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--count", type=int)
    a = ap.parse_args(argv)
    if a.list:
        for impl in IMPLS:
            for size in SIZES:
                print(json.dumps({"bench": "net-rtt", "impl": impl,
                                  "size": size, "batch": 1}))
        return 0
    if not a.impl:
        ap.error("BENCH and IMPL are required (or --list)")
    count = a.count or ((20000 if a.size > 4096 else 100000) // (10 if a.quick else 1))
    run(a.impl, a.size, count)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
