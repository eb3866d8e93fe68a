"""Membership changes on a real cluster (fsync on, CurveZMQ): how fast leadership moves, what a change costs the
writers, and how long a new node takes to become a voter when the cluster holds many keys.

    python bench/membership_bench.py [--transfers 10] [--keys 1000000] [--seconds 6]

1. Leadership transfer: the time from ``transfer_leadership(target)`` to the first acknowledged write served by the
   target (median and max of ``--transfers``), next to the election timeout it replaces (0.5-1 s).
2. Writes during a change: a writer process keeps 64 appends in flight while a node is added (learner, catch-up,
   promote) and then removed; reported: writes/s before, during and after, and the longest time with no write
   acknowledged.
3. Growing a cluster that holds ``--keys`` keys (64-byte values): the time from starting the new node to its
   promotion to voter (it catches up by a snapshot).
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import statistics
import sys
import tempfile
import time

from zraft.client import Client
from zraft.tools import chaos, launch
from zraft.transport.security import ClientKeys


def writer(addresses: list[str], keys: ClientKeys | None, until: float, out: multiprocessing.Queue) -> None:
    """Appends with 64 in flight until ``until``; sends the completion time of every acknowledged write."""
    done: list[float] = []
    n = 0

    def next_op() -> tuple[str, bytes, bytes]:
        nonlocal n
        n += 1
        return ("append", b"w%d" % (n % 100), b"x;")

    with Client(addresses, keys=keys, deadline=30.0) as cl:
        while time.monotonic() < until:
            lat = cl.closed_loop(next_op, 64, min(until, time.monotonic() + 0.05))
            now = time.monotonic()
            done.extend([now] * len(lat))
    out.put(done)


def transfers(c: launch.Cluster, count: int) -> list[float]:
    times = []
    with c.client() as cl:
        cl.put("t", "0")
        for i in range(count):
            ld = chaos.leader(c)
            target = next(n.id for n in c.nodes if n.id != ld)
            t0 = time.perf_counter()
            cl.transfer_leadership(target)
            cl.put("t", str(i))
            times.append(time.perf_counter() - t0)
            assert chaos.leader(c) == target
    return times


def writes_during_change(c: launch.Cluster, seconds: float) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    q: multiprocessing.Queue = ctx.Queue()
    t0 = time.monotonic()
    until = t0 + 3 * seconds
    p = ctx.Process(target=writer, args=(c.addresses, c.client_keys(), until, q))
    p.start()
    time.sleep(seconds)
    change_start = time.monotonic()
    spec = c.add_node()
    c.remove_node(spec.id)
    change_end = time.monotonic()
    done = q.get(timeout=3 * seconds + 60)
    p.join()
    done.sort()
    gaps = [b - a for a, b in itertools.pairwise(done) if change_start - 1 <= a <= change_end + 1]

    def rate(lo: float, hi: float) -> float:
        return sum(1 for t in done if lo <= t < hi) / max(hi - lo, 1e-9)

    return {"before": rate(t0 + 1, change_start), "during": rate(change_start, change_end),
            "after": rate(change_end, until), "change_s": change_end - change_start,
            "longest_gap_s": max(gaps or [0.0])}


def grow_with_keys(c: launch.Cluster, keys: int) -> tuple[float, float]:
    t0 = time.monotonic()
    with c.client(deadline=60.0) as cl:
        batch = 1000
        for lo in range(0, keys, batch):
            cl.run_many([("put", b"key%09d" % i, b"v" * 64) for i in range(lo, min(keys, lo + batch))])
    load_s = time.monotonic() - t0
    t1 = time.monotonic()
    spec = c.add_node(wait=600.0)
    grow_s = time.monotonic() - t1
    with c.client() as cl:
        st = cl.status([n.id for n in c.nodes].index(spec.id))
    assert st["keys"] >= keys, st  # it really holds the data (installed from a snapshot, then the log)
    return load_s, grow_s


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--transfers", type=int, default=10, help="leadership transfers to time (default 10)")
    p.add_argument("--seconds", type=float, default=6.0, help="writer seconds before and after the change")
    p.add_argument("--keys", type=int, default=1_000_000, help="keys the cluster holds before growing (0: skip)")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        c = launch.start(3, f"{d}/transfer", ports=launch.free_ports(3))
        try:
            t = transfers(c, a.transfers)
            print(f"leadership transfer to the first write served by the target: median "
                  f"{statistics.median(t) * 1000:.0f} ms, max {max(t) * 1000:.0f} ms over {len(t)} (an election "
                  "timeout is 500-1000 ms)", flush=True)
            w = writes_during_change(c, a.seconds)
            print(f"writes/s with 64 in flight: before {w['before']:,.0f}, during add+promote+remove "
                  f"({w['change_s']:.1f} s) {w['during']:,.0f}, after {w['after']:,.0f}; longest time without an "
                  f"acknowledged write around the change: {w['longest_gap_s'] * 1000:.0f} ms", flush=True)
        finally:
            c.stop()
        if a.keys:
            c = launch.start(3, f"{d}/grow", ports=launch.free_ports(3))
            try:
                load_s, grow_s = grow_with_keys(c, a.keys)
                print(f"{a.keys:,} keys loaded in {load_s:.1f} s; a new node became a voter {grow_s:.1f} s after it "
                      "started", flush=True)
            finally:
                c.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
