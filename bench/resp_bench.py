"""The Redis protocol against the native one, and against Redis itself, in one run on this machine.

    python bench/resp_bench.py [-n 200000] [-c 50] [-P 16]

1. A 3-node zraft cluster (fsync on, CurveZMQ on the native port): ``redis-benchmark -t set,get -n N -c C -P P -q``
   through the leader's Redis port and through a follower's (which forwards writes to the leader).
2. zraft's native client at the same number of requests in flight (C x P), spread over 4 processes
   (``Client.closed_loop``): writes, then linearizable reads.
3. Redis itself (Debian's ``redis-server``; one node, not replicated: the ceiling), with ``appendonly yes`` and
   ``appendfsync always`` so that every write is on disk before its reply, as in zraft: the same redis-benchmark.

Needs ``apt-get install redis-tools redis-server``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from zraft.tools import launch

VALUE = b"x" * 3  # redis-benchmark's default payload is 3 bytes


def redis_benchmark(port: int, n: int, c: int, pipeline: int) -> dict[str, tuple[float, float]]:
    """{"SET": (requests/s, p50 ms), "GET": ...} from one redis-benchmark run."""
    out = subprocess.run(["redis-benchmark", "-p", str(port), "-t", "set,get", "-n", str(n), "-c", str(c), "-P",
                          str(pipeline), "-q"], capture_output=True, text=True, timeout=600)
    found = {}
    for m in re.finditer(r"(SET|GET): ([\d.]+) requests per second, p50=([\d.]+) msec", out.stdout):
        found[m.group(1)] = (float(m.group(2)), float(m.group(3)))
    if len(found) != 2:
        raise RuntimeError(f"redis-benchmark said: {out.stdout[-500:]} {out.stderr[-500:]}")
    return found


def native_worker(data_dir: str, op: str, depth: int, seconds: float, q: mp.Queue) -> None:  # type: ignore[type-arg]
    c = launch.load(data_dir)
    n = [0]

    def next_op() -> tuple[str, bytes, bytes]:
        n[0] += 1
        return op, b"key:%012d" % (n[0] % 100_000), VALUE

    with c.client(deadline=30.0) as cl:
        lat = cl.closed_loop(next_op, depth, time.monotonic() + seconds)
    q.put(len(lat))


def native(data_dir: str, op: str, in_flight: int, seconds: float, procs: int = 4) -> float:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    ps = [ctx.Process(target=native_worker, args=(data_dir, op, in_flight // procs, seconds, q)) for _ in range(procs)]
    for p in ps:
        p.start()
    total: int = sum(q.get(timeout=seconds + 120) for _ in ps)
    for p in ps:
        p.join(30)
    return total / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=200_000, help="requests per redis-benchmark test (200,000)")
    p.add_argument("-c", type=int, default=50, help="redis-benchmark connections (50)")
    p.add_argument("-P", type=int, default=16, help="redis-benchmark pipeline depth (16)")
    p.add_argument("--seconds", type=float, default=10.0, help="each native run (10)")
    a = p.parse_args()
    for tool in ("redis-benchmark", "redis-server"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed: apt-get install redis-tools redis-server")
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; "
          f"redis-benchmark -t set,get -n {a.n} -c {a.c} -P {a.P}")
    tmp = tempfile.mkdtemp(prefix="zraft-respbench-")
    rows: list[tuple[str, str, float, str]] = []
    c = launch.start(3, os.path.join(tmp, "z"), ports=launch.free_ports(3), resp_ports=launch.free_ports(3))
    try:
        with c.client() as cl:
            idx = cl.find_leader(10.0)
            if idx is None:
                raise RuntimeError("no leader within 10 s")
            ld = c.node(cl.status(idx)["node"])
        fw = next(n for n in c.nodes if n.id != ld.id)
        for name, spec in (("leader", ld), ("follower", fw)):
            res = redis_benchmark(int(spec.resp.rpartition(":")[2]), a.n, a.c, a.P)
            for op in ("SET", "GET"):
                rows.append((f"zraft RESP via the {name}", op, res[op][0], f"p50 {res[op][1]:.1f} ms"))
        in_flight = a.c * a.P
        rows.append(("zraft native client", "SET", native(c.data_dir, "put", in_flight, a.seconds),
                     f"4 processes x {in_flight // 4} in flight"))
        rows.append(("zraft native client", "GET", native(c.data_dir, "get", in_flight, a.seconds),
                     f"4 processes x {in_flight // 4} in flight"))
    finally:
        c.stop()
    port = launch.free_ports(1)[0]
    rdir = os.path.join(tmp, "redis")
    os.makedirs(rdir)
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", rdir,
                               "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() != b"PONG":
            if time.monotonic() > end:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.1)
        res = redis_benchmark(port, a.n, a.c, a.P)
        for op in ("SET", "GET"):
            rows.append(("Redis 7, appendfsync always (1 node)", op, res[op][0], f"p50 {res[op][1]:.1f} ms"))
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n| system | op | requests/s | notes |\n|---|---|---:|---|")
    for system, op, rate, note in rows:
        print(f"| {system} | {op} | {rate:,.0f} | {note} |")
    native_set = next(r for s, o, r, _ in rows if s == "zraft native client" and o == "SET")
    resp_set = next(r for s, o, r, _ in rows if s == "zraft RESP via the leader" and o == "SET")
    print(f"\nSET through RESP (leader) / native: {resp_set / native_set:.0%} (target: at least 80%)")


if __name__ == "__main__":
    main()
