"""Snapshots: how long they stall the event loop, and what compaction does for restarts and catch-up.

    python bench/snapshot_bench.py [--entries 1000000] [--keys 1000000] [--skip-cluster]

1. Event-loop pause while snapshotting ``--keys`` keys (16-byte keys, 32-byte values), in this process, with the
   node's own code (``SnapshotJob``): a stand-in event loop polls (1 ms timeout, none while the job has work),
   applies 20 Puts and steps the job in each pass; reported: the longest gap between two passes, the time to take the
   image, the whole snapshot's duration. For comparison, the pause of a snapshot serialized and written
   synchronously in the loop (what the node did before), on the same store.
2. Restart time of a node whose log holds ``--entries`` Put entries, with compaction (a snapshot at the end of
   the log) and without (the whole log replayed): ``Node()`` plus its first ready batch, in this process.
3. Catch-up time of a follower that is ``--entries`` behind, in a real 3-node cluster (fsync on): two nodes start
   with the log (or the snapshot), the third starts empty; time until it has applied everything. Without
   compaction it receives the entries; with compaction it receives the snapshot file in chunks.
4. The same measurement as 1, from a real node: a node restarted on the uncompacted log takes a snapshot of the
   whole store at once; its status reports the longest loop pass and tick lateness during it.

Data directories are generated directly with the storage code (the same files a node writes), in a temporary
directory that is removed afterwards.
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import sys
import tempfile
import time

import psutil

from zraft.client import Client, Unavailable
from zraft.core import ClusterConfig, Entry, HardState, Snapshot
from zraft.server.node import Node
from zraft.server.snapshotting import STEP_BUDGET_S, SnapshotJob
from zraft.statemachine import kv
from zraft.storage import Storage
from zraft.tools import launch

CFG = ClusterConfig((1, 2, 3))
VALUE = b"v" * 32


def key(i: int, keys: int) -> bytes:
    return b"key%013d" % (i % keys)


def command(i: int, keys: int) -> bytes:
    return kv.Command(kv.Op.PUT, 1, i, i, key(i, keys), VALUE).encode()


def make_store(keys: int) -> kv.KVStore:
    s = kv.KVStore()
    s.set_data({key(i, keys): VALUE for i in range(keys)})
    s.applied = keys
    return s


def bench_pause(keys: int, tmp: str) -> None:
    print(f"\n== event-loop pause while snapshotting {keys:,} keys (in process)")
    store = make_store(keys)
    storage = Storage(os.path.join(tmp, "pause"))
    storage.save(HardState(1, 1, keys), [Entry(keys, 1, 0, b"")])
    # Before: serialize and write in the loop.
    t0 = time.perf_counter()
    blob = store.snapshot()
    storage.save_snapshot(Snapshot(keys, 1, CFG, blob))
    sync_pause = time.perf_counter() - t0
    print(f"synchronous (serialize + write + fsync in the loop): pause {sync_pause * 1000:.0f} ms, "
          f"{len(blob) / 1e6:.1f} MB")
    del blob
    # Now: the node's SnapshotJob, with a stand-in loop applying writes meanwhile.
    r, w = os.pipe()
    n = keys
    t_start = time.perf_counter()
    job = SnapshotJob(storage, store, Snapshot(store.applied, 1, CFG))
    begin = job.begin_s
    last = time.perf_counter()
    worst = begin
    passes = 0
    while True:
        timeout = 0.0 if job.busy() else 0.001  # as the node: no waiting while there is snapshot work
        select.select([r], [], [], timeout)
        now = time.perf_counter()
        worst = max(worst, now - last - timeout)
        for _ in range(20):
            n += 1
            store.apply(n, command(n, keys * 2))
        passes += 1
        job.step()
        if job.done():
            t1 = time.perf_counter()
            snap = job.finish()
            storage.save_snapshot(snap)
            worst = max(worst, time.perf_counter() - t1)
            break
        last = time.perf_counter()
    total = time.perf_counter() - t_start
    os.close(r)
    os.close(w)
    print(f"incremental (image, serialized {STEP_BUDGET_S * 1000:.0f} ms per pass, fsync in a thread): "
          f"longest loop pause {worst * 1000:.1f} ms (taking the image: "
          f"{begin * 1000:.1f} ms); snapshot done in {total:.2f} s, {passes} loop passes, "
          f"{passes * 20:,} writes applied meanwhile")
    storage.close()


def make_log(path: str, entries: int, keys: int, compact: bool) -> None:
    st = Storage(path)
    batch = 20_000
    for lo in range(1, entries + 1, batch):
        hi = min(lo + batch - 1, entries)
        st.save(HardState(1, 1, hi), [Entry(i, 1, 0, command(i, keys)) for i in range(lo, hi + 1)])
    if compact:
        s = kv.KVStore()
        for i in range(1, entries + 1):
            s.apply(i, command(i, keys))
        w = st.snapshot_writer(entries, 1, CFG)
        w.write(s.snapshot())
        st.save_snapshot(w.commit())
    st.close()


def bench_restart(tmp: str, dirs: dict[bool, str], entries: int) -> None:
    print(f"\n== restart of a node with {entries:,} entries (in process: recover + replay)")
    for compact in (False, True):
        work = os.path.join(tmp, f"restart-{compact}")
        shutil.copytree(dirs[compact], work)
        ports = launch.free_ports(3)
        peers = {i + 1: f"127.0.0.1:{ports[i]}" for i in range(3)}
        t0 = time.perf_counter()
        node = Node(1, peers, work, snapshot_every=10 ** 9)
        node.replica.start()
        dt = time.perf_counter() - t0
        print(f"{'with compaction (snapshot + empty log)' if compact else 'without compaction (whole log)':<40} "
              f"{dt:6.2f} s  (applied {node.replica.kv.applied:,}, {len(node.replica.kv):,} keys)")
        node.close()
        shutil.rmtree(work)


def bench_catch_up(tmp: str, dirs: dict[bool, str], entries: int) -> None:
    print(f"\n== catch-up of a follower {entries:,} entries behind (real 3-node cluster, fsync on)")
    for compact in (False, True):
        data = os.path.join(tmp, f"cluster-{compact}")
        for nid in (1, 2):
            shutil.copytree(dirs[compact], os.path.join(data, f"node-{nid}"))
        c = launch.start(3, data, ports=launch.free_ports(3), wait=300,
                         node_args=["--snapshot-every", str(10 ** 9)])
        try:
            t0 = time.monotonic()
            with Client([c.node(3).address], keys=c.client_keys()) as cl:
                while True:
                    try:
                        st = cl.status(0)
                    except Unavailable:  # busy installing the snapshot
                        continue
                    if st.get("kv_applied", 0) >= entries:
                        break
                    time.sleep(0.05)
            dt = time.monotonic() - t0
            how = "by snapshot" if st.get("snapshot_index", 0) >= entries else "by log entries"
            print(f"{'with compaction' if compact else 'without compaction':<20} {dt:6.2f} s after the cluster "
                  f"was up ({how}; node 3 applied {st['kv_applied']:,})")
            keys = int(st.get("keys", 0))  # type: ignore[call-overload]
            rss = [psutil.Process(n.pid).memory_info().rss for n in c.nodes]
            print(f"{'':<20} memory (RSS) per node: " + ", ".join(f"{r / 2**20:,.0f} MiB" for r in rss)
                  + f"; {keys:,} keys, {max(rss) / max(keys, 1):,.0f} bytes per key at most (whole process, "
                  "log entries in memory included)")
        finally:
            c.stop()
        shutil.rmtree(data)


def bench_node_pause(tmp: str, dirs: dict[bool, str], entries: int) -> None:
    print(f"\n== a real node snapshotting {entries:,} keys while clients write (status.last_snapshot)")
    data = os.path.join(tmp, "node-pause")
    shutil.copytree(dirs[False], os.path.join(data, "node-1"))
    # One node on the uncompacted log; its first snapshot falls due 2,000 writes after it is up.
    c = launch.start(1, data, ports=launch.free_ports(1), wait=300,
                     node_args=["--snapshot-every", str(entries + 2000)])
    try:
        with c.client() as cl:
            i = 0
            while not _status(cl).get("last_snapshot"):
                cl.run_many(("put", key(entries + i + j, 10 ** 9), VALUE) for j in range(100))
                i += 100
            st = _status(cl)
        print("  ".join(f"{k}={v}" for k, v in st["last_snapshot"].items()))
    finally:
        c.stop()


def _status(cl: Client) -> dict[str, object]:
    while True:
        try:
            return cl.status(0)
        except Unavailable:
            pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--entries", type=int, default=1_000_000, help="log entries behind / to replay (1,000,000)")
    p.add_argument("--keys", type=int, default=1_000_000, help="keys in the store (1,000,000)")
    p.add_argument("--skip-cluster", action="store_true", help="only the in-process measurements")
    a = p.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    tmp = tempfile.mkdtemp(prefix="zraft-snapbench-")
    try:
        bench_pause(a.keys, tmp)
        dirs = {}
        for compact in (False, True):
            d = os.path.join(tmp, f"src-{compact}")
            t0 = time.perf_counter()
            make_log(d, a.entries, a.keys, compact)
            print(f"(generated {'compacted' if compact else 'full'} data in {time.perf_counter() - t0:.1f} s)")
            dirs[compact] = d
        bench_restart(tmp, dirs, a.entries)
        if not a.skip_cluster:
            bench_catch_up(tmp, dirs, a.entries)
            bench_node_pause(tmp, dirs, a.entries)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
