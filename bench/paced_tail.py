"""Where a paced run's slow writes come from: a 3-node zraft cluster (fsync on, CurveZMQ) written at fixed rates by
bench/zload, which logs every request slower than ``--slow-ms``; the slow ones are grouped into bursts (sent within
10 ms of one another) and printed with their time in the measured window and on CLOCK_MONOTONIC, the clock of the
nodes' ``time.monotonic``, so that they can be lined up with what the nodes log (``--keep`` keeps the data
directory and its node logs). A p99 made of a few bursts at regular intervals points at something every node does
at the same log index (snapshots, segment files, the GC); one made of many small scattered bursts, at the machine
being busy.

    apt-get install -y gcc libzmq3-dev
    python bench/paced_tail.py [--rates 20000,40000] [--seconds 6] [--slow-ms 8] [--min-burst 20] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

import compare  # bench/compare.py: the cluster and the load generator


def bursts(path: str, gap_s: float = 0.010) -> tuple[float, list[tuple[float, float, int, float]]]:
    """The trace's window start and its slow requests grouped into bursts: (first sent, last sent, count, max
    latency)."""
    points: list[tuple[float, float]] = []
    start = 0.0
    with open(path) as f:
        for line in f:
            parts = line.split()
            if parts[0] == "window":
                start = float(parts[1])
            else:
                points.append((float(parts[0]), float(parts[1])))
    out: list[list[float]] = []
    for sent, lat in sorted(points):
        if out and sent - out[-1][1] < gap_s:
            b = out[-1]
            b[1], b[2], b[3] = sent, b[2] + 1, max(b[3], lat)
        else:
            out.append([sent, sent, 1, lat])
    return start, [(b[0], b[1], int(b[2]), b[3]) for b in out]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rates", default="20000,40000", help="writes per second, comma-separated (default 20000,40000)")
    p.add_argument("--seconds", type=float, default=6.0, help="measured seconds per rate (default 6)")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each (default 1)")
    p.add_argument("--slow-ms", type=float, default=8.0, help="requests slower than this are logged (default 8)")
    p.add_argument("--min-burst", type=int, default=20, help="print bursts of at least this many (default 20)")
    p.add_argument("--keep", action="store_true", help="keep the data directory (node logs) and say where")
    a = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="zraft-tail-")
    try:
        compare.ZLOAD = compare.compiled("zload")
        run = compare.start_zraft(tmp)
        try:
            for i, rate in enumerate(float(r) for r in a.rates.split(",")):
                trace = os.path.join(tmp, f"trace-{i}.txt")
                r = compare.zload_run(run, "write", 4, 250, a.warmup, a.seconds, 64, rate,
                                      ["-trace", trace, "-trace-ms", str(a.slow_ms)])
                start, found = bursts(trace)
                slow = sum(b[2] for b in found)
                print(f"{rate:,.0f} writes/s: {r.ops:,.0f}/s, p50 {r.p50:.1f} ms, p99 {r.p99:.1f} ms, max "
                      f"{r.max:.1f} ms; {slow:,} slower than {a.slow_ms:g} ms in {len(found)} bursts", flush=True)
                for first, last, n, worst in found:
                    if n >= a.min_burst:
                        print(f"  at {first - start:7.3f} s (+{(last - first) * 1000:4.0f} ms): {n:5d} requests, up to "
                              f"{worst * 1000:5.1f} ms  [monotonic {first:.3f}]", flush=True)
        finally:
            run.stop()
    except RuntimeError as e:
        print(f"paced_tail: {e}", file=sys.stderr)
        return 2
    finally:
        if a.keep:
            print(f"data directory and node logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
