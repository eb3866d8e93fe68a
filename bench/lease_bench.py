"""Leases at scale, in one process (no cluster): the memory a key's own TTL costs, and what expiring a million keys
at once costs the leader's loop -- each tick the lessor finds what expired and proposes entries (``Lessor.due``),
and those entries are applied (every node does that part); the longest such tick's work is what a loop pass can
take at worst.

    python bench/lease_bench.py [--keys 1000000]

Prints the memory per key with a TTL (RSS, beside the same keys without), the ticks and seconds the expiry took,
and the longest tick's work in ms.
"""

from __future__ import annotations

import argparse
import gc
import time

import psutil

from zraft.server.lessor import Lessor
from zraft.statemachine.kv import KVStore
from zraft.transport.requests import Put


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fill(s: KVStore, n: int, ttl_ms: int) -> None:
    for i in range(n):
        cmd = s.command(Put(0, 1, i + 1, i + 1, b"key-%08d" % i, b"v" * 32, ttl_ms=ttl_ms))
        assert isinstance(cmd, bytes)
        s.apply(s.applied + 1, cmd)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=1_000_000)
    a = ap.parse_args()
    proc = psutil.Process()
    gc.collect()
    base = proc.memory_info().rss
    plain = KVStore()
    for c in plain.leader_commands():
        plain.apply(1, c)
    fill(plain, a.keys, 0)
    gc.collect()
    plain_bytes = proc.memory_info().rss - base
    del plain
    gc.collect()
    base = proc.memory_info().rss
    s = KVStore()
    for c in s.leader_commands():
        s.apply(1, c)
    t0 = time.perf_counter()
    fill(s, a.keys, 60_000)
    fill_s = time.perf_counter() - t0
    gc.collect()
    ttl_bytes = proc.memory_info().rss - base
    print(f"{a.keys:,} keys with 32-byte values: {plain_bytes / a.keys:.0f} bytes a key without a TTL, "
          f"{ttl_bytes / a.keys:.0f} with one ({(ttl_bytes - plain_bytes) / a.keys:.0f} for the lease); "
          f"{a.keys / fill_s:,.0f} SET PX applied a second")
    clock = Clock()
    lessor = Lessor(clock, extension_s=1.0)
    lessor.elected(s.applied + 1)
    lessor.promote(s.leases)
    clock.now += 62.0  # past every deadline: a million keys expire at once
    longest = 0.0
    ticks = 0
    t0 = time.perf_counter()
    while s.leases.table:
        t1 = time.perf_counter()
        for ids in lessor.due():
            s.apply(s.applied + 1, s.expire_command(ids))
        longest = max(longest, time.perf_counter() - t1)
        ticks += 1
        clock.now += 0.05
    total = time.perf_counter() - t0
    print(f"expired all {a.keys:,} in {ticks} ticks ({ticks * 0.05:.1f} s of 50 ms ticks; {total:.1f} s of work); "
          f"longest tick's work (finding them, proposing, applying): {longest * 1000:.1f} ms; store left with "
          f"{len(s)} keys")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
