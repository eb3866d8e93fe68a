"""How long each node's threads wait for a CPU: a 3-node zraft cluster (fsync on, CurveZMQ) written by bench/zload
at fixed rates (and saturated), with each node's threads' running time and run-queue wait read from
``/proc/<pid>/task/<tid>/schedstat`` over the measured window.

A thread that waits on a run queue is ready to run but finds every CPU busy. On a machine with fewer cores than
busy threads (three nodes, each a loop thread and a ZeroMQ I/O thread, plus the load generator and the kernel's
work), every hop of a write (client to leader, leader to followers, and back) can wait there, and that wait is
in the latency: this is how to tell CPU contention from slow code or a slow disk.

    apt-get install -y gcc libzmq3-dev
    python bench/sched_wait.py [--rates 20000,50000,0] [--seconds 8]    # 0: saturated (4 x 512 in flight)
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import compare  # bench/compare.py: the cluster and the load generator

Sched = dict[str, tuple[int, int, int]]


def sched(pid: int) -> Sched:
    """Per thread of ``pid``: (ns running, ns waiting on a run queue, time slices), from /proc."""
    out: Sched = {}
    for task in glob.glob(f"/proc/{pid}/task/*"):
        try:
            with open(os.path.join(task, "schedstat")) as f:
                run, wait, slices = (int(x) for x in f.read().split())
        except (OSError, ValueError):
            continue  # the thread ended
        out[os.path.basename(task)] = (run, wait, slices)
    return out


def describe(pid: int, before: Sched, after: Sched, seconds: float) -> str:
    now, then = after.get(str(pid), (0, 0, 0)), before.get(str(pid), (0, 0, 0))
    main = [(a - b) / seconds for a, b in zip(now, then, strict=True)]
    run = sum(after[t][0] - before[t][0] for t in after if t in before) / seconds
    wait = sum(after[t][1] - before[t][1] for t in after if t in before) / seconds
    return (f"loop thread ran {main[0] / 1e9:.2f} s/s, waited for a CPU {main[1] / 1e9:.2f} s/s "
            f"({main[2]:,.0f} slices/s, {main[1] / max(main[2], 1) / 1e3:.0f} us each); "
            f"all threads ran {run / 1e9:.2f}, waited {wait / 1e9:.2f}")


def leader_index(run: compare.Running) -> int:
    from zraft.client import Client
    from zraft.transport.security import ClientKeys

    keys_dir = run.extra.get("keys_dir")
    with Client(run.endpoints, deadline=30, keys=ClientKeys.load(keys_dir, run.endpoints) if keys_dir else None) as cl:
        found = cl.find_leader(30)
    if found is None:
        raise RuntimeError("no leader")
    return found


@contextmanager
def loaded_cluster(metrics: bool = False) -> Iterator[tuple[compare.Running, int]]:
    """A 3-node zraft cluster and bench/zload built for it, in a temporary directory removed afterwards; yields
    the cluster and its leader's index."""
    tmp = tempfile.mkdtemp(prefix="zraft-bench-")
    try:
        compare.ZLOAD = compare.compiled("zload")
        run = compare.start_zraft(tmp, 3, metrics=metrics)
        try:
            yield run, leader_index(run)
        finally:
            run.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


T = TypeVar("T")


def measure_rates(run: compare.Running, rates: str, seconds: float, look: Callable[[], T],
                  rows: Callable[[T, T, float], list[str]]) -> None:
    """Write to ``run`` at each of ``rates`` (comma-separated writes/s; 0: saturated, 4 x 512 in flight) with
    bench/zload, ``look`` at the nodes before and after the measured window, and print the result with ``rows``."""
    for rate in (float(x) for x in rates.split(",")):
        seen: dict[str, list[str]] = {}

        def watch(seen: dict[str, list[str]] = seen) -> None:
            time.sleep(2.0 + 1.0)  # the load generator's warm-up, and a second more
            before = look()
            t0 = time.monotonic()
            time.sleep(seconds)
            after = look()
            seen["rows"] = rows(before, after, time.monotonic() - t0)

        w = threading.Thread(target=watch)
        w.start()
        r = compare.zload_run(run, "write", 4, 2048 if rate else 512, 2.0, seconds + 2.0, 64, rate or None)
        w.join()
        label = f"paced at {rate:,.0f}/s" if rate else "saturated (4 x 512)"
        print(f"{label}: {r.ops:,.0f} writes/s, p50 {r.p50:.1f} ms, p99 {r.p99:.1f} ms", flush=True)
        for row in seen.get("rows", []):
            print("   ", row, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rates", default="20000,50000,0",
                   help="writes per second to pace at, comma-separated; 0 = saturated (default 20000,50000,0)")
    p.add_argument("--seconds", type=float, default=8.0, help="measured seconds per rate (default 8)")
    a = p.parse_args(argv)
    if not sys.platform.startswith("linux"):
        print("sched_wait.py reads /proc/<pid>/task/*/schedstat: Linux only", file=sys.stderr)
        return 2
    with loaded_cluster() as (run, leader):
        measure_rates(run, a.rates, a.seconds, lambda: {pid: sched(pid) for pid in run.pids},
                      lambda before, after, dt: [f"{'leader  ' if i == leader else 'follower'} "
                                                 f"{describe(pid, before[pid], after[pid], dt)}"
                                                 for i, pid in enumerate(run.pids)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
