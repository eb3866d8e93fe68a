"""Backup and restore of a large store: time and size, what clients feel meanwhile, how long a restore takes.

    python bench/backup_bench.py [--keys 1000000] [--seconds 10] [--depth 64]

1. A 3-node cluster (fsync on, CurveZMQ, default snapshot settings) is loaded with ``--keys`` keys (16-byte keys,
   32-byte values).
2. Idle backup: ``Client.backup`` with nothing else running (time, file size, keys).
3. What clients feel: a load process (its own interpreter) writes with ``--depth`` requests in flight for
   ``--seconds``, twice: once alone (the baseline, snapshots of its own included: one every 100,000 entries), once
   with a backup started a second in. Reported per run: writes/s, p50, p99 and the longest latency (the longest
   stall a client saw), and the backup's own time.
4. Restore: ``launch.start(3, ..., restore=FILE)`` on other ports, until every node answers, then the key count
   checked through ``status``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time

from zraft.statemachine import backup
from zraft.tools import launch

VALUE = b"v" * 32


def key(i: int) -> bytes:
    return b"key%013d" % i


def load(c: launch.Cluster, keys: int) -> None:
    with c.client(deadline=60.0) as cl:
        step = 1000
        for lo in range(0, keys, step):
            cl.run_many(("put", key(i), VALUE) for i in range(lo, min(keys, lo + step)))


def writer(data_dir: str, seconds: float, depth: int, keys: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    c = launch.load(data_dir)
    n = [0]

    def next_op() -> tuple[str, bytes, bytes]:
        n[0] += 1
        return "put", key(n[0] * 7919 % keys), VALUE

    with c.client(deadline=60.0) as cl:
        lat = cl.closed_loop(next_op, depth, time.monotonic() + seconds)
    out.put(lat)


def run_load(data_dir: str, seconds: float, depth: int, keys: int, during: str | None,
             c: launch.Cluster) -> tuple[list[float], float | None]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=writer, args=(data_dir, seconds, depth, keys, q))
    p.start()
    took = None
    if during is not None:
        time.sleep(1.0)  # the writer is at full speed
        with c.client() as cl:
            t0 = time.monotonic()
            cl.backup(during)
            took = time.monotonic() - t0
    lat: list[float] = q.get(timeout=seconds + 120)
    p.join(30)
    return lat, took


def describe(lat: list[float], seconds: float) -> str:
    s = sorted(lat)
    return (f"{len(s) / seconds:,.0f} writes/s, p50 {statistics.median(s) * 1000:.1f} ms, "
            f"p99 {s[int(len(s) * 0.99)] * 1000:.1f} ms, longest {s[-1] * 1000:.0f} ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keys", type=int, default=1_000_000, help="keys in the store (1,000,000)")
    p.add_argument("--seconds", type=float, default=10.0, help="each load run (10)")
    p.add_argument("--depth", type=int, default=64, help="writes in flight during the load runs (64)")
    a = p.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    tmp = tempfile.mkdtemp(prefix="zraft-backupbench-")
    c = launch.start(3, os.path.join(tmp, "orig"), ports=launch.free_ports(3))
    restored = None
    try:
        t0 = time.monotonic()
        load(c, a.keys)
        print(f"loaded {a.keys:,} keys in {time.monotonic() - t0:.1f} s")
        f = os.path.join(tmp, "idle.zbak")
        with c.client() as cl:
            t0 = time.monotonic()
            info = cl.backup(f)
            took = time.monotonic() - t0
        print(f"idle backup: {took:.2f} s, {info.size / 2**20:.1f} MiB ({info.size:,} bytes), {info.keys:,} keys, "
              f"{info.sessions} sessions")
        base, _ = run_load(c.data_dir, a.seconds, a.depth, a.keys, None, c)
        print(f"writes alone:          {describe(base, a.seconds)}")
        f2 = os.path.join(tmp, "busy.zbak")
        busy, took2 = run_load(c.data_dir, a.seconds, a.depth, a.keys, f2, c)
        print(f"writes with a backup:  {describe(busy, a.seconds)}; the backup took {took2:.2f} s, "
              f"{os.path.getsize(f2) / 2**20:.1f} MiB")
        with c.client() as cl:
            for st in cl.status_many(2.0):
                if st and st.get("role") == "leader":
                    print(f"leader's last snapshot: {st['last_snapshot']}")
        c.stop()
        t0 = time.monotonic()
        checked = backup.inspect(f2, full=True)
        t_check = time.monotonic() - t0
        t0 = time.monotonic()
        restored = launch.start(3, os.path.join(tmp, "copy"), ports=launch.free_ports(3), restore=f2, wait=300)
        t_start = time.monotonic() - t0
        with restored.client() as cl:
            keys = [st["keys"] for st in cl.status_many(5.0) if st]
        print(f"restore: check {t_check:.2f} s (checksum and decode), launcher --restore until every node answers "
              f"{t_start:.2f} s (check, three data directories, start); keys on the nodes {keys}, backup "
              f"{checked.keys:,}")
    finally:
        c.stop()
        if restored is not None:
            restored.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
