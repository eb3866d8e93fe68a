"""Log appends per second with fsync, next to the raw limit of the same disk, and restart time for a big log.

    python bench/storage_throughput.py [--dir DIR] [--seconds 3] [--restart-entries 1000000]

The raw limit is a plain loop of one 100-byte write + fdatasync on one file. The log writes batches of 1, 10,
100 and 1,000 entries of 100 bytes with a hard state, one ``Storage.save`` per batch (encode, write, fsync),
as the node's loop does for each ready batch.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

from zraft.core import Entry, HardState
from zraft.storage import Storage

PAYLOAD = b"x" * 100


def raw_fsyncs_per_second(d: str, seconds: float, size: int = 100) -> float:
    path = os.path.join(d, "raw")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    n = 0
    data = b"r" * size
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        os.write(fd, data)
        os.fdatasync(fd)
        n += 1
    elapsed = time.perf_counter() - start
    os.close(fd)
    os.remove(path)
    return n / elapsed


def log_entries_per_second(d: str, batch: int, seconds: float) -> float:
    path = os.path.join(d, f"log{batch}")
    s = Storage(path)
    index = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        entries = [Entry(index + i + 1, 1, 0, PAYLOAD) for i in range(batch)]
        index += batch
        s.save(HardState(1, 1, index), entries)
    elapsed = time.perf_counter() - start
    s.close()
    shutil.rmtree(path)
    return index / elapsed


def restart_seconds(d: str, n: int) -> tuple[float, float]:
    path = os.path.join(d, "restart")
    s = Storage(path)
    t0 = time.perf_counter()
    for lo in range(1, n + 1, 10_000):
        s.save(HardState(1, 1, lo + 9_999), [Entry(i, 1, 0, b"v" * 16) for i in range(lo, min(lo + 10_000, n + 1))])
    write = time.perf_counter() - t0
    s.close()
    t0 = time.perf_counter()
    s = Storage(path)
    got = len(s.recovered.entries)
    elapsed = time.perf_counter() - t0
    s.close()
    shutil.rmtree(path)
    assert got == n, got
    return write, elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", help="where to write (default: a temporary directory on the working disk)")
    p.add_argument("--seconds", type=float, default=3.0, help="seconds per measurement (default 3)")
    p.add_argument("--restart-entries", type=int, default=1_000_000, help="log size for the restart test")
    a = p.parse_args()
    d = tempfile.mkdtemp(prefix="zraft-bench-", dir=a.dir or os.getcwd())
    try:
        # The disk's speed drifts: measure the raw limit before and after, and compare against the mean.
        raw_before = raw_fsyncs_per_second(d, a.seconds)
        results = []
        for batch in (1, 10, 100, 1000):
            results.append((batch, "save", log_entries_per_second(d, batch, a.seconds)))
        raw_after = raw_fsyncs_per_second(d, a.seconds)
        raw = (raw_before + raw_after) / 2
        print(f"raw write+fdatasync of 100 B: {raw:9.0f} per second (before {raw_before:.0f}, after {raw_after:.0f})")
        # For scale: the same loop with the bytes of one 100-entry batch (about 11.5 KB).
        print(f"raw write+fdatasync of 11.5 KB: {raw_fsyncs_per_second(d, a.seconds, 11_500):7.0f} per second")
        for batch, mode, eps in results:
            print(f"log batch={batch:5d} {mode:9s}: {eps:10.0f} entries/s  ({eps / batch:7.0f} batches/s, "
                  f"{100 * eps / (raw * batch):5.1f}% of raw fsyncs/s x batch)")
        if a.restart_entries:
            write, elapsed = restart_seconds(d, a.restart_entries)
            print(f"restart with {a.restart_entries} entries of 16 B: {elapsed:.2f} s to recover "
                  f"(written in {write:.1f} s)")
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
