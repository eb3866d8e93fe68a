"""Throughput and latency of a real zraft cluster (fsync on), and the time to recover from a leader's death.

    python bench/cluster_bench.py [--nodes 3] [--seconds 10] [--clients 4] [--depth 32] [--failover 5]

Starts a fresh cluster on free ports of 127.0.0.1, then for each workload (put, append, get) runs ``--clients``
client processes, each keeping ``--depth`` requests in flight (``Client.run_many``), on 1,000 keys with 64-byte
values, for ``--seconds``. Latency is per request (send to answer). Then kills the leader with SIGKILL
``--failover`` times and reports the time from the kill to the next acknowledged write.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import statistics
import tempfile
import time

from zraft.client import Client
from zraft.tools import chaos, launch
from zraft.transport.security import ClientKeys

KEYS = 1000
VALUE = b"v" * 64


def worker(addresses: list[str], op: str, seconds: float, depth: int, seed: int, out: multiprocessing.Queue,
           keys: ClientKeys | None = None) -> None:
    rng = random.Random(seed)
    lat: list[float] = []
    done = 0
    with Client(addresses, keys=keys) as cl:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ops = [(op, b"key%d" % rng.randrange(KEYS), VALUE) for _ in range(depth)]
            t0 = time.perf_counter()
            cl.run_many(ops)
            dt = time.perf_counter() - t0
            lat.extend([dt] * depth)
            done += depth
    out.put((done, lat, time.process_time()))


def run_workload(c: launch.Cluster, op: str, clients: int, depth: int, seconds: float) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    q: multiprocessing.Queue = ctx.Queue()
    if op == "get":  # give the keys values first
        with c.client() as cl:
            for lo in range(0, KEYS, 100):
                cl.run_many([("put", b"key%d" % k, VALUE) for k in range(lo, lo + 100)])
    keys = c.client_keys()
    procs = [ctx.Process(target=worker, args=(c.addresses, op, seconds, depth, i, q, keys)) for i in range(clients)]
    cpu0 = _cluster_cpu(c)
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - t0
    cpu = _cluster_cpu(c) - cpu0
    total = sum(r[0] for r in results)
    lat = sorted(x for r in results for x in r[1])
    client_cpu = sum(r[2] for r in results)
    return {
        "ops": total / elapsed,
        "p50": lat[len(lat) // 2] * 1000,
        "p99": lat[int(len(lat) * 0.99)] * 1000,
        "max": lat[-1] * 1000,
        "cpu_per_1k": 1000 * cpu / max(total, 1),
        "client_cpu_share": client_cpu / max(client_cpu + cpu, 1e-9),
    }


def _cluster_cpu(c: launch.Cluster) -> float:
    import psutil

    total = 0.0
    for n in c.nodes:
        try:
            t = psutil.Process(n.pid).cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def failover(c: launch.Cluster, trials: int) -> list[float]:
    times = []
    with c.client(deadline=30, attempt_timeout=0.2) as cl:
        for _ in range(trials):
            cl.put(b"warm", b"up")
            ld = chaos.leader(c)
            t0 = time.perf_counter()
            chaos.kill(c, ld)
            cl.leader = None
            cl.put(b"after", b"failover")
            times.append(time.perf_counter() - t0)
            chaos.restart(c, ld)
            launch.wait_ready(c, 15)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0, help="per workload (default 10)")
    p.add_argument("--clients", type=int, default=4, help="client processes (default 4)")
    p.add_argument("--depth", type=int, default=32, help="requests in flight per client (default 32)")
    p.add_argument("--failover", type=int, default=5, help="leader kills to time (default 5; 0 to skip)")
    a = p.parse_args()
    d = tempfile.mkdtemp(prefix="zraft-bench-", dir=os.getcwd())
    c = launch.start(a.nodes, d, ports=launch.free_ports(a.nodes), fresh=True)
    try:
        print(f"{a.nodes} nodes, fsync on, {a.clients} client processes x {a.depth} in flight, 64-byte values, "
              f"{KEYS} keys, {a.seconds:.0f} s per workload, {os.cpu_count()} CPUs")
        print(f"{'workload':<8} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'node CPU s/1k ops':>18} "
              f"{'client CPU share':>17}")
        for op in ("put", "append", "get"):
            r = run_workload(c, op, a.clients, a.depth, a.seconds)
            print(f"{op:<8} {r['ops']:>9.0f} {r['p50']:>8.1f} {r['p99']:>8.1f} {r['max']:>8.1f} "
                  f"{r['cpu_per_1k']:>18.3f} {100 * r['client_cpu_share']:>16.0f}%", flush=True)
        if a.failover:
            t = failover(c, a.failover)
            print(f"kill -9 leader -> next acknowledged write: median {statistics.median(t) * 1000:.0f} ms "
                  f"(min {min(t) * 1000:.0f}, max {max(t) * 1000:.0f}, {len(t)} trials)")
    finally:
        c.stop()
        import shutil

        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
