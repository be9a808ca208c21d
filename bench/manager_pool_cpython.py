#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""manager_pool_cpython: Python's own distributed pool, for manager_pool_bench.

The "distributed processes" pattern of the multiprocessing documentation
(and of every tutorial that builds a pool across machines by hand): a
BaseManager on TCP loopback serving a task queue and a result queue;
WORKERS worker processes connect to it as remote machines would, take
tasks and put results. The master puts N tasks, then gets N results.

  classic   one task per queue item, as the pattern is written
  chunked   tasks in lists of Pool's default chunksize (ceil(N / (4 *
            WORKERS))), each worker returning a list: what Pool.map does
  rtt       one task put, its result got, one at a time; median us

The task is the trivial one of manager_pool_bench.c: x -> x + 1; every
result is checked.

    /usr/bin/python3 bench/manager_pool_cpython.py WORKERS N [PORT]
"""
import multiprocessing as mp
import queue
import statistics
import sys
import time
from multiprocessing.managers import BaseManager

TASKS = queue.Queue()
RESULTS = queue.Queue()


class M(BaseManager):
    pass


M.register('tasks', callable=lambda: TASKS)
M.register('results', callable=lambda: RESULTS)
KEY = b'bench-key'


def worker(addr):
    m = M(address=addr, authkey=KEY)
    m.connect()
    tasks, results = m.tasks(), m.results()
    while True:
        t = tasks.get()
        if t is None:
            return
        if isinstance(t, list):
            results.put([(i, x + 1) for i, x in t])
        else:
            i, x = t
            results.put((i, x + 1))


def run_map(tasks, results, n, chunk):
    out = [None] * n
    t0 = time.perf_counter()
    if chunk:
        for s in range(0, n, chunk):
            tasks.put([(i, i) for i in range(s, min(n, s + chunk))])
        got = 0
        while got < n:
            for i, y in results.get():
                out[i] = y
                got += 1
    else:
        for i in range(n):
            tasks.put((i, i))
        for _ in range(n):
            i, y = results.get()
            out[i] = y
    dt = time.perf_counter() - t0
    assert out == [i + 1 for i in range(n)]
    return n / dt


def rtt(tasks, results, k):
    t = []
    for j in range(k):
        t0 = time.perf_counter_ns()
        tasks.put((0, 41))
        assert results.get() == (0, 42)
        t.append((time.perf_counter_ns() - t0) / 1e3)
    return statistics.median(t)


def main():
    nw = int(sys.argv[1])
    n = int(sys.argv[2])
    addr = ('127.0.0.1', int(sys.argv[3]) if len(sys.argv) > 3 else 0)
    server = M(address=addr, authkey=KEY)
    server.start()
    addr = server.address
    ws = [mp.Process(target=worker, args=(addr,)) for _ in range(nw)]
    for w in ws:
        w.start()
    tasks, results = server.tasks(), server.results()
    run_map(tasks, results, 200, 0)                     # warm up
    classic = run_map(tasks, results, n, 0)
    chunked = run_map(tasks, results, n, -(-n // (4 * nw)))
    us = rtt(tasks, results, 200)
    for _ in ws:
        tasks.put(None)
    for w in ws:
        w.join()
    server.shutdown()
    print('%.1f %.1f %.1f' % (classic, chunked, us))


if __name__ == '__main__':
    main()
