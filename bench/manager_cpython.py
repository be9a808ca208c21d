#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""manager_cpython: Python's BaseManager in the cells of manager_bench.c.

A BaseManager serving a queue.Queue per name and one dict, started on TCP
loopback with an authkey; the measuring processes connect to it as remote
clients would (forked Processes, each with its own connection).

  rtt      ping-pong of 64 bytes through two managed queues; p50, p99 us
  single   a producer Process puts N 64-byte messages; the parent gets them
  batched  the same with lists of 256 messages per put (Python's batching)
  dict     set then get of N keys through a managed dict; ops/s
  event    ping-pong through two managed Events (set, wait, clear)

    /usr/bin/python3 bench/manager_cpython.py [PORT] [event|rtt]
"""
import multiprocessing as mp
import queue
import sys
import time
import threading
from multiprocessing.managers import BaseManager, DictProxy, EventProxy

QUEUES = {}
DICT = {}


def get_q(name):
    return QUEUES.setdefault(name, queue.Queue())


def get_d():
    return DICT


EVENTS = {}


def get_ev(name):
    return EVENTS.setdefault(name, threading.Event())


class M(BaseManager):
    pass


M.register('q', callable=get_q)
M.register('d', callable=get_d, proxytype=DictProxy)
M.register('ev', callable=get_ev, proxytype=EventProxy)
ADDR = ('127.0.0.1', int(sys.argv[1]) if len(sys.argv) > 1 else 7398)
KEY = b'bench-key'


def client():
    m = M(address=ADDR, authkey=KEY)
    m.connect()
    return m


def echo(n):
    m = client()
    ping, pong = m.q('ping'), m.q('pong')
    for _ in range(n):
        pong.put(ping.get())


def producer(n, batch):
    q = client().q('stream%d' % batch)
    if batch == 1:
        for i in range(n):
            q.put(i.to_bytes(4, 'little') + bytes(60))
    else:
        for i in range(0, n, batch):
            q.put([j.to_bytes(4, 'little') + bytes(60)
                   for j in range(i, min(n, i + batch))])


def rtt(n):
    p = mp.Process(target=echo, args=(n + 100,))
    p.start()
    m = client()
    ping, pong = m.q('ping'), m.q('pong')
    t = []
    for i in range(-100, n):
        msg = (i % 2**31).to_bytes(4, 'little') + bytes(60)
        t0 = time.perf_counter_ns()
        ping.put(msg)
        assert pong.get() == msg
        if i >= 0:
            t.append(time.perf_counter_ns() - t0)
    p.join()
    t.sort()
    print('rtt        %8.1f us p50  %8.1f us p99  (%d round trips)' %
          (t[n // 2] / 1e3, t[n * 99 // 100] / 1e3, n))


def stream(n, batch, name):
    p = mp.Process(target=producer, args=(n, batch))
    p.start()
    q = client().q('stream%d' % batch)
    got = 0
    t0 = None
    while got < n:
        items = q.get()
        if t0 is None:
            t0 = time.perf_counter()
        if batch == 1:
            items = [items]
        for it in items:
            assert int.from_bytes(it[:4], 'little') == got
            got += 1
    dt = time.perf_counter() - t0
    p.join()
    print('%-10s %10.0f msgs/s  (%d messages of 64 B, batch %d)' %
          (name, (n - 1) / dt, n, batch))


def dict_cell(n):
    d = client().d()
    v = bytes(64)
    t0 = time.perf_counter()
    for i in range(n):
        d['key%d' % i] = v
    print('dict set   %10.0f ops/s' % (n / (time.perf_counter() - t0)))
    t0 = time.perf_counter()
    for i in range(n):
        assert len(d['key%d' % i]) == 64
    print('dict get   %10.0f ops/s' % (n / (time.perf_counter() - t0)))


def event_echo(n):
    m = client()
    ping, pong = m.ev('ping'), m.ev('pong')
    for _ in range(n):
        ping.wait(10)
        ping.clear()
        pong.set()


def event_rtt(n):
    p = mp.Process(target=event_echo, args=(n + 100,))
    p.start()
    m = client()
    ping, pong = m.ev('ping'), m.ev('pong')
    t = []
    for i in range(-100, n):
        t0 = time.perf_counter_ns()
        ping.set()
        assert pong.wait(10)
        pong.clear()
        if i >= 0:
            t.append(time.perf_counter_ns() - t0)
    p.join()
    t.sort()
    print('event rtt  %8.1f us p50  %8.1f us p99  (%d round trips)' %
          (t[n // 2] / 1e3, t[n * 99 // 100] / 1e3, n))


if __name__ == '__main__':
    server = M(address=ADDR, authkey=KEY)
    server.start()
    print('# Python %s BaseManager on %s:%d' % (sys.version.split()[0], *ADDR))
    if sys.argv[2:] == ['event']:   # that cell alone
        event_rtt(3000)
        server.shutdown()
        sys.exit(0)
    if sys.argv[2:] == ['rtt']:     # the queue round trip alone
        rtt(5000)
        server.shutdown()
        sys.exit(0)
    rtt(5000)
    stream(20000, 1, 'single')
    stream(300000, 256, 'batched')
    dict_cell(20000)
    event_rtt(3000)
    server.shutdown()
