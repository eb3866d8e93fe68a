"""The state machine alone, as it grows: what one apply costs, the longest single apply (a hash table growing
under it), and what taking a snapshot image costs the event loop, at sizes up to ``--keys``.

    python bench/kv_bench.py [--keys 10000000] [--report-every 1000000] [--gets 1000000]

Keys of 16 bytes, values of 32, as PUT commands through ``KVStore.apply`` (the code every node runs), one client
session, the garbage collector set up as a node sets it. Reported at each ``--report-every`` keys: the longest
single apply so far; at the end: ns per apply (overwriting existing keys), ns per get, the time ``begin_snapshot``
takes, and the longest stretch between two pieces of the image's serialization (what ``SnapshotJob.step`` may
spend in one go beyond its budget); the process's resident memory once the keys are in (revisions on: every key
an entry with its revisions, and in the ordered index); range reads of 1,000 keys (what one read costs the
loop); and the store rebuilt from the snapshot's pieces (what a restart or an install costs).
"""

from __future__ import annotations

import argparse
import gc
import time

import psutil

from zraft.server.node import GC_THRESHOLDS
from zraft.statemachine import kv

VALUE = b"v" * 32


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=10_000_000)
    ap.add_argument("--report-every", type=int, default=1_000_000)
    ap.add_argument("--gets", type=int, default=1_000_000)
    a = ap.parse_args()
    store = kv.KVStore()
    for c in store.leader_commands():  # revisions begin, as a new leader of this release makes them
        store.apply(store.applied + 1, c)
    base = store.applied
    gc.set_threshold(*GC_THRESHOLDS)  # as a node does, freezing survivors between batches (it does once a second)
    clock = time.perf_counter
    worst = 0.0
    worst_at = 0
    enc = kv.encode_command
    batch = 10_000
    i = 0
    print(f"{'keys':>12} {'longest single apply so far':>28}")
    while i < a.keys:
        cmds = [enc(kv.PUT, 1, i + j + 1, i + j + 1, b"key%013d" % (i + j), VALUE) for j in range(batch)]
        t = clock()
        for j, c in enumerate(cmds):
            store.apply(base + i + j + 1, c)
            u = clock()
            if u - t > worst:
                worst, worst_at = u - t, i + j
            t = u
        i += batch
        gc.collect(1)
        gc.freeze()
        if i % a.report_every == 0:
            print(f"{i:>12,} {worst * 1000:>25.1f} ms  (at key {worst_at:,})", flush=True)
    # Steady-state apply cost: overwrite existing keys.
    n = min(a.keys, 1_000_000)
    cmds = [enc(kv.PUT, 1, i + j + 1, i + j + 1, b"key%013d" % ((j * 7919) % a.keys), VALUE) for j in range(n)]
    t = clock()
    for j, c in enumerate(cmds):
        store.apply(base + i + j + 1, c)
    apply_ns = (clock() - t) / n * 1e9
    del cmds
    gc.collect()
    rss = psutil.Process().memory_info().rss
    i += n
    keys = [b"key%013d" % ((j * 104729) % a.keys) for j in range(a.gets)]
    get = store.get
    t = clock()
    for k in keys:
        get(k)
    get_ns = (clock() - t) / len(keys) * 1e9
    times = []
    for j in range(100):  # 1,000 keys from 100 places across the store
        start = b"key%013d" % ((j * 7919 * 1009) % a.keys)
        t = clock()
        store.range(start, None, 1000, 4 << 20)
        times.append((clock() - t) * 1000)
    times.sort()
    range_ms = times[50]
    range_max = times[-1]
    t = clock()
    img = store.begin_snapshot()
    begin_ms = (clock() - t) * 1000
    longest = 0.0
    pieces = 0
    size = 0
    it = img.chunks()
    t = t_all = clock()
    kept = []
    for piece in it:
        u = clock()
        longest = max(longest, u - t)
        pieces += 1
        size += len(piece)
        kept.append(piece)
        t = clock()
    serialize_s = clock() - t_all
    store.end_snapshot()
    t = clock()
    again = kv.KVStore.restore_chunks(kept)
    restore_s = clock() - t
    assert len(again) == len(store) and again.revision == store.revision
    print(f"\nkeys {a.keys:,}: apply (overwrite) {apply_ns:.0f} ns, get {get_ns:.0f} ns; longest single apply while "
          f"growing {worst * 1000:.1f} ms (at key {worst_at:,})")
    print(f"snapshot image: begin {begin_ms:.1f} ms; longest stretch between pieces {longest * 1000:.1f} ms; "
          f"{pieces:,} pieces, {size / 1e6:.0f} MB, serialized in {serialize_s:.2f} s; restored in {restore_s:.2f} s")
    print(f"resident memory {rss / 2**20:,.0f} MiB ({rss / a.keys:.0f} bytes per key); a range read of 1,000 keys "
          f"(100 of them, from places across the store): median {range_ms:.2f} ms, longest {range_max:.2f} ms")


if __name__ == "__main__":
    main()
