"""Transactions against plain writes, in one sitting on one cluster: a 3-node zraft cluster (fsync on, CurveZMQ on,
as bench/compare.py starts it) driven by bench/bin/zload, alternating the "write" workload (puts) and the "txn"
workload (one-compare-one-put transactions: if the key's mod_revision < 2^62 -- it always holds -- then put), each
at the same concurrency, several rounds. The issue's bar: a transaction at least half the plain write rate.

    sh bench/build.sh                       # bench/bin/zload
    python bench/txn_bench.py [--seconds 10] [--warmup 3] [--rounds 3] [--conns 4] [--depth 250]

Prints one line per run (ops/s, p50 / p99 ms) and the mean ratio of txn to write. ``--workloads write`` runs the
plain writes alone: with an older zraft on ``PYTHONPATH`` (a git worktree; run from its directory, so that its
nodes import it), it compares plain writes before and after a change in one sitting.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

import compare


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--conns", type=int, default=4)
    ap.add_argument("--depth", type=int, default=250)
    ap.add_argument("--workloads", default="write,txn", help="comma-separated: write, txn (default both)")
    a = ap.parse_args()
    workloads = a.workloads.split(",")
    compare.ZLOAD = compare.compiled_driver("zload", True, "the C load generator", "")
    rates: dict[str, list[float]] = {w: [] for w in workloads}
    with tempfile.TemporaryDirectory(prefix="zraft-txn-bench-") as tmp:
        run = compare.start_zraft(tmp)
        try:
            for i in range(a.rounds):
                for workload in workloads:
                    r = compare.zload_run(run, workload, a.conns, a.depth, a.warmup, a.seconds, 64, None)
                    rates[workload].append(r.ops)
                    print(f"round {i + 1} {workload:>5}: {r.ops:>9,.0f} ops/s  p50 {r.p50:.1f} ms  p99 {r.p99:.1f} ms"
                          f"  cluster CPU {r.cpu_per_1k:.2f} s per 1,000", flush=True)
        finally:
            run.stop()
    mean = {w: sum(v) / len(v) for w, v in rates.items()}
    print("mean: " + ", ".join(f"{w} {m:,.0f} ops/s" for w, m in mean.items())
          + (f": txn/write = {mean['txn'] / mean['write']:.2f}" if len(mean) == 2 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
