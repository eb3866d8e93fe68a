"""zraft side by side with PySyncObj and etcd: the same closed-loop workload, 3-node clusters on 127.0.0.1, one
after another, in one run on one machine.

    pip install -r bench/requirements-bench.txt      # PySyncObj, grpcio
    apt-get install -y etcd-server                   # etcd (Debian's package; or put etcd on PATH)
    apt-get install -y golang-go golang-etcd-server-dev   # the Go load generator for etcd (bench/etcdload)
    sh bench/build.sh                                # the compiled load generators, into bench/bin
    python bench/compare.py [--seconds 30] [--warmup 5] [--clients 4] [--depths 8,32,128,512,2048] [--only ...]

Workloads: 64-byte values on 1,000 keys; "write" is 100% puts, "mixed" is 90% reads and 10% puts. Each runs for
``--warmup`` seconds (not counted), then ``--seconds`` measured. ``--clients`` load-generator processes each
keep a number of requests in flight (a closed loop: a new request as soon as one is answered): each system is
first tried at every ``--depths`` value (3 s write runs) and measured at the one that gave it the most writes,
and the table says which. Columns:
operations per second, p50 / p99 / max latency per request, CPU seconds of all cluster processes per 1,000
operations, and the load generators' share of the machine's CPU (if it nears 100% / cores, they are the
bottleneck and the numbers understate the system).

Systems, each driven through its own client:
- zraft: ``launcher``-style nodes with fsync on, CurveZMQ on. Driven by ``bench/bin/zload`` (C, on libzmq: one
  process, a DEALER socket per connection, the wire protocol of docs/PROTOCOL.md; built by ``sh bench/build.sh``
  when a C compiler and ``libzmq3-dev`` are installed), or else by ``zraft.client.Client.closed_loop`` in Python
  processes (``--zraft-driver``); writes and linearizable ReadIndex reads go to the leader. "4 x 250" is then 4
  connections with 250 requests in flight each.
- PySyncObj (``bench/pysyncobj_node.py``): ``ReplDict`` replicated by PySyncObj, driven through a thin ZeroMQ
  RPC documented in that file; twice, with its journal on disk and in memory. Its reads are local reads on
  the leader (PySyncObj offers no linearizable read), and its journal is not fsynced per write.
- etcd: a real 3-node cluster with its defaults (fsync on), through its gRPC API (``KV/Put`` and ``KV/Range``,
  linearizable by default), requests spread over the three members. Driven by ``bench/bin/etcdload`` (Go, on
  etcd's own client, after etcd's tools/benchmark; built by ``sh bench/build.sh`` when ``golang-go`` and
  ``golang-etcd-server-dev`` are installed), or else by Python grpcio -- which is itself the bottleneck at high
  concurrency (the table says which drove it).

Every system is measured at the same total concurrencies (``--concurrency``, default 1, 100 and 1,000 requests
in flight, spread over ``--clients`` processes), and once more at its best from the sweep ("best").

Then zraft alone: 5 nodes; values of 16 B, 1 KiB and 64 KiB; p99 write latency at half of the saturated write
throughput just measured; and the time from kill -9 of the leader to the next acknowledged write (median of
``--failover`` trials).
"""

from __future__ import annotations

import argparse
import array
import multiprocessing
import os
import platform
import queue
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from zraft.tools import launch

ROOT = Path(__file__).resolve().parent.parent

KEYS = 1000


# ---------------------------------------------------------------------- the machine


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.*)", f.read())
            cpu = m.group(1).strip() if m else cpu
    except OSError:
        pass
    mem = psutil.virtual_memory().total / 2**30
    disk = "unknown"
    try:
        dev = subprocess.run(["df", "--output=source,fstype", tempfile.gettempdir()], capture_output=True,
                             text=True, timeout=5).stdout.splitlines()[-1]
        disk = " ".join(dev.split())
    except (OSError, subprocess.SubprocessError, IndexError):
        pass
    return (f"{os.cpu_count()} x {cpu}, {mem:.0f} GiB RAM, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, temp dir on {disk}")


# ---------------------------------------------------------------------- clusters


@dataclass
class Running:
    name: str
    pids: list[int]
    endpoints: list[str]
    stop: Callable[[], None]
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def cpu(self) -> float:
        total = 0.0
        for pid in self.pids:
            try:
                t = psutil.Process(pid).cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total


ZRAFT_SECURE = True
ZLOAD: str | None = None
"""bench/zload built for this run (the C load generator), or None: Python load generators."""
"""CurveZMQ on (the default) or off (--zraft-insecure), for measuring what authentication costs."""


def start_zraft(tmp: str, nodes: int = 3, metrics: bool = False) -> Running:
    """``metrics``: each node also serves /metrics (``extra["metrics"]``: their HOST:PORT, in node order)."""
    c = launch.start(nodes, os.path.join(tmp, f"zraft-{nodes}"), ports=launch.free_ports(nodes), fresh=True,
                     secure=ZRAFT_SECURE, metrics_ports=launch.free_ports(nodes) if metrics else None)
    if c.keys_dir:  # the load generators (spawned processes) find the client's keys here
        os.environ["ZRAFT_BENCH_KEYS"] = c.keys_dir
    else:
        os.environ.pop("ZRAFT_BENCH_KEYS", None)
    with c.client() as cl:
        cl.put(b"warm", b"up")  # a leader exists and answers
    return Running(f"zraft ({nodes} nodes)", [n.pid for n in c.nodes], c.addresses, c.stop,
                   "fsync on, " + ("CurveZMQ" if c.keys_dir else "no authentication")
                   + (", C client" if ZLOAD else ", Python client"),
                   {"zload": ZLOAD, "keys_dir": c.keys_dir, "metrics": [n.metrics for n in c.nodes]})


def _wait_port(addr: str, timeout: float) -> None:
    host, port = addr.rsplit(":", 1)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection((host, int(port)), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens at {addr}")


def _stopper(procs: list[subprocess.Popen[bytes]]) -> Callable[[], None]:
    def stop() -> None:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    return stop


def _need(module: str, package: str) -> None:
    """Benchmark-only dependencies (bench/requirements-bench.txt): a system whose client is missing is skipped."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise RuntimeError(f"{package} is not installed (pip install -r bench/requirements-bench.txt)")


def start_pysyncobj(tmp: str, journal: bool) -> Running:
    _need("pysyncobj", "PySyncObj")
    ports = launch.free_ports(6)
    raft = [f"127.0.0.1:{p}" for p in ports[:3]]
    rpc = [f"127.0.0.1:{p}" for p in ports[3:]]
    procs = []
    for i in range(3):
        argv = [sys.executable, str(ROOT / "bench" / "pysyncobj_node.py"), "--self", raft[i], "--partners",
                ",".join(raft[:i] + raft[i + 1:]), "--rpc", rpc[i]]
        if journal:
            argv += ["--journal", os.path.join(tmp, f"pso-{i}")]
        log = open(os.path.join(tmp, f"pso-{i}.log"), "wb")
        procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))
        log.close()
    run = Running(f"PySyncObj ({'journal on disk' if journal else 'in memory'})", [p.pid for p in procs], rpc,
                  _stopper(procs), "journal via mmap, no fsync" if journal else "no journal")
    try:
        for a in rpc:
            _wait_port(a, 20)
        leader = _pso_leader(rpc, 30)
        run.extra["leader"] = leader
    except BaseException:
        run.stop()
        raise
    return run


def _pso_leader(rpc: list[str], timeout: float) -> str:
    import msgpack
    import zmq

    ctx = zmq.Context()
    try:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for a in rpc:
                s = ctx.socket(zmq.DEALER)
                s.setsockopt(zmq.LINGER, 0)
                s.connect(f"tcp://{a}")
                s.send(msgpack.packb([1, "status", b"", b""]))
                if s.poll(500):
                    _, _, (is_leader, ready) = msgpack.unpackb(s.recv())
                    if is_leader and ready:
                        s.close()
                        return a
                s.close()
            time.sleep(0.2)
        raise RuntimeError("PySyncObj elected no leader")
    finally:
        ctx.destroy(linger=0)


BIN = ROOT / "bench" / "bin"
"""Where ``sh bench/build.sh`` puts the compiled load generators (zload in C, etcdload in Go)."""


def compiled(name: str) -> str:
    """The path of the load generator ``name`` built by ``sh bench/build.sh``; raises RuntimeError saying how to
    build it when it is not there."""
    path = BIN / name
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"bench/bin/{name} is not built: run sh bench/build.sh (it says what it needs)")
    return str(path)


def compiled_driver(name: str, required: bool, what: str, instead: str) -> str | None:
    """A compiled load generator, or None when it is not built (the reason is printed and the Python driver is
    used; ``required``: the run stops with exit code 2)."""
    try:
        return compiled(name)
    except RuntimeError as e:
        if required:
            print(f"cannot use {what}: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        print(f"({instead}: {e})\n", flush=True)
        return None


def zload_run(run: Running, workload: str, conns: int, depth: int, warmup: float, seconds: float,
              value_size: int, rate: float | None, extra: list[str] | None = None) -> Result:
    """zraft driven by bench/zload: one C process, ``conns`` connections to the leader, ``depth`` in flight each;
    ``extra``: more zload options (``-trace FILE``)."""
    import json

    from zraft.client import Client
    from zraft.transport.security import ClientKeys

    keys_dir = run.extra.get("keys_dir")
    keys = ClientKeys.load(keys_dir, run.endpoints) if keys_dir else None
    with Client(run.endpoints, deadline=30, keys=keys) as cl:
        found = cl.find_leader(30)
        if found is None:
            raise RuntimeError("no leader")
        leader = cl.nodes[found]
    env = dict(os.environ)
    if keys is not None:
        env.update(ZLOAD_SERVER_KEY=keys.servers[leader].decode(), ZLOAD_PUBLIC_KEY=keys.own.public.decode(),
                   ZLOAD_SECRET_KEY=keys.own.secret.decode())
    argv = [run.extra["zload"], "-endpoint", leader, "-conns", str(conns), "-depth", str(depth), "-warmup",
            str(warmup), "-seconds", str(seconds), "-value", str(value_size), "-keys", str(KEYS), "-workload",
            workload]
    if rate:
        argv += ["-rate", str(rate)]
    argv += extra or []
    cpu0 = run.cpu()
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=warmup + seconds + 120, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"zload failed: {r.stderr.strip()[-300:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    cpu = (run.cpu() - cpu0) * seconds / max(time.perf_counter() - t0, seconds)
    return Result(out["ops"] / seconds, out["p50"] * 1000, out["p99"] * 1000, out["max"] * 1000,
                  1000 * cpu / max(out["ops"], 1), out["cpu"] / (seconds * (os.cpu_count() or 1)))


def start_etcd(tmp: str, etcdload: str | None) -> Running:
    if etcdload is None:
        _need("grpc", "grpcio")
    exe = shutil.which("etcd")
    if exe is None:
        raise RuntimeError("etcd is not installed (apt-get install -y etcd-server)")
    ports = launch.free_ports(6)
    peer = [f"http://127.0.0.1:{p}" for p in ports[:3]]
    client = [f"http://127.0.0.1:{p}" for p in ports[3:]]
    initial = ",".join(f"e{i}={peer[i]}" for i in range(3))
    procs = []
    for i in range(3):
        argv = [exe, "--name", f"e{i}", "--data-dir", os.path.join(tmp, f"etcd-{i}"),
                "--listen-peer-urls", peer[i], "--initial-advertise-peer-urls", peer[i],
                "--listen-client-urls", client[i], "--advertise-client-urls", client[i],
                "--initial-cluster", initial, "--initial-cluster-state", "new",
                "--initial-cluster-token", f"bench-{os.getpid()}"]
        log = open(os.path.join(tmp, f"etcd-{i}.log"), "wb")
        procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))
        log.close()
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    run = Running("etcd", [p.pid for p in procs], [u.removeprefix("http://") for u in client], _stopper(procs),
                  f"{version.strip()}, defaults (fsync on), " + ("Go client" if etcdload else "grpcio client"),
                  {"etcdload": etcdload})
    try:
        end = time.monotonic() + 30
        healthy: set[str] = set()
        while len(healthy) < 3:
            if time.monotonic() > end:
                raise RuntimeError("etcd did not become healthy")
            for ep in run.endpoints:
                try:
                    if b'"true"' in _http(ep, "GET", "/health", b""):
                        healthy.add(ep)
                except OSError:
                    pass
            time.sleep(0.1)
    except BaseException:
        run.stop()
        raise
    return run


def _http(ep: str, method: str, path: str, body: bytes) -> bytes:
    host, port = ep.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=2) as s:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: {ep}\r\nContent-Length: {len(body)}\r\n"
                  "Connection: close\r\n\r\n".encode() + body)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


# ---------------------------------------------------------------------- load generators (one process each)


def _ops(workload: str, seed: int, value: bytes) -> Callable[[], tuple[str, bytes, bytes]]:
    rng = random.Random(seed)

    def next_op() -> tuple[str, bytes, bytes]:
        k = b"key%04d" % rng.randrange(KEYS)
        if workload == "read" or (workload == "mixed" and rng.random() < 0.9):
            return "get", k, b""
        return "put", k, value
    return next_op


def zraft_worker(endpoints: list[str], workload: str, depth: int, warmup: float, seconds: float, seed: int,
                 value_size: int, rate: float | None, q: Any) -> None:
    from zraft.client import Client
    from zraft.transport.security import ClientKeys

    next_op = _ops(workload, seed, b"v" * value_size)
    keys_dir = os.environ.get("ZRAFT_BENCH_KEYS")
    keys = ClientKeys.load(keys_dir, endpoints) if keys_dir else None
    with Client(endpoints, deadline=30, keys=keys) as cl:
        t0 = time.monotonic()
        cl.closed_loop(next_op, depth, t0 + warmup, rate)
        c0 = time.process_time()
        lat = cl.closed_loop(next_op, depth, t0 + warmup + seconds, rate)
        q.put((len(lat), array.array("d", lat).tobytes(), time.process_time() - c0))


def zraft_conns_worker(endpoints: list[str], workload: str, depth: int, warmup: float, seconds: float, seed: int,
                       value_size: int, rate: float | None, q: Any) -> None:
    """Many client connections from one process: ``ZRAFT_BENCH_CONNS`` sockets to the leader, each its own
    session with ``depth`` requests in flight (the wire protocol directly, one batch frame per socket per pass),
    to see what a thousand separate clients cost the leader compared with a few that pipeline deeply."""
    import zmq

    from zraft.client import Client
    from zraft.transport import codec
    from zraft.transport.security import ClientKeys, client_socket

    conns = int(os.environ["ZRAFT_BENCH_CONNS"])
    next_op = _ops(workload, seed, b"v" * value_size)
    keys_dir = os.environ.get("ZRAFT_BENCH_KEYS")
    keys = ClientKeys.load(keys_dir, endpoints) if keys_dir else None
    with Client(endpoints, deadline=30, keys=keys) as cl:
        found = cl.find_leader(30)
        if found is None:
            raise RuntimeError("no leader")
        leader = cl.nodes[found]
    ctx = zmq.Context()
    socks = []
    for _ in range(conns):
        sk = ctx.socket(zmq.DEALER)
        sk.setsockopt(zmq.LINGER, 0)
        if keys is not None:
            client_socket(sk, keys.own, keys.servers[leader])
        sk.connect(f"tcp://{leader}")
        socks.append(sk)
    poller = zmq.Poller()
    for sk in socks:
        poller.register(sk, zmq.POLLIN)
    sysrng = random.SystemRandom()  # fresh client ids: a later run on the same cluster must not reuse a session
    sessions = [[sysrng.randrange(1, 1 << 62), 0, set()] for _ in socks]  # client id, last seq, unanswered seqs
    out: dict[int, tuple[float, int, int]] = {}  # request id -> (sent, socket index, seq)
    ids = iter(range(1, 1 << 62))

    def send(i: int, n: int) -> None:
        cid, seq, open_ = sessions[i]
        ack = min(open_) if open_ else seq + 1
        reqs = []
        for _ in range(n):
            op, k, v = next_op()
            rid = next(ids)
            req: dict[str, Any] = {"op": op, "key": k, "id": rid}
            if op != "get":
                seq += 1
                open_.add(seq)
                req.update(value=v, client=cid, seq=seq, ack=ack)
            out[rid] = (time.perf_counter(), i, seq if op != "get" else 0)
            reqs.append(req)
        sessions[i][1] = seq
        socks[i].send(codec.encode_client_batch(reqs))

    def loop(until: float) -> list[float]:
        lat: list[float] = []
        for i in range(conns):
            send(i, depth)
        while out:
            ready = poller.poll(30_000)
            if not ready:
                raise RuntimeError("no answer from the leader in 30 s")
            for sk, _ in ready:
                i = index[sk]
                done = 0
                while True:
                    try:
                        payload = sk.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    for r in codec.decode_replies(payload):
                        if not r.get("ok"):
                            raise RuntimeError(f"refused: {r}")
                        t0, _, seq = out.pop(r["id"])
                        if seq:
                            sessions[i][2].discard(seq)
                        lat.append(time.perf_counter() - t0)
                        done += 1
                if done and time.monotonic() < until:
                    send(i, done)
        return lat

    index = {sk: i for i, sk in enumerate(socks)}
    t0 = time.monotonic()
    loop(t0 + warmup)
    c0 = time.process_time()
    lat = loop(t0 + warmup + seconds)
    q.put((len(lat), array.array("d", lat).tobytes(), time.process_time() - c0))
    for sk in socks:
        sk.close(0)
    ctx.term()


def pso_worker(endpoints: list[str], workload: str, depth: int, warmup: float, seconds: float, seed: int,
               value_size: int, rate: float | None, q: Any) -> None:
    import msgpack
    import zmq

    next_op = _ops(workload, seed, b"v" * value_size)
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(f"tcp://{endpoints[0]}")  # the leader
    ids = iter(range(1, 1 << 62))

    def loop(until: float) -> list[float]:
        out: dict[int, float] = {}
        lat: list[float] = []
        while True:
            now = time.monotonic()
            while now < until and len(out) < depth:
                op, k, v = next_op()
                rid = next(ids)
                out[rid] = time.perf_counter()
                s.send(msgpack.packb([rid, op, k, v]))
            if not out:
                return lat
            if not s.poll(10_000):
                raise RuntimeError("PySyncObj did not answer for 10 s")
            while True:
                try:
                    rid, ok, _ = msgpack.unpackb(s.recv(zmq.NOBLOCK))
                except zmq.Again:
                    break
                if not ok:
                    raise RuntimeError("PySyncObj refused a write")
                lat.append(time.perf_counter() - out.pop(rid))

    t0 = time.monotonic()
    loop(t0 + warmup)
    c0 = time.process_time()
    lat = loop(t0 + warmup + seconds)
    q.put((len(lat), array.array("d", lat).tobytes(), time.process_time() - c0))
    ctx.destroy(linger=0)


def _pb(field: int, data: bytes) -> bytes:
    """A protobuf length-delimited field (etcd's PutRequest and RangeRequest need nothing else)."""
    n, out = len(data), bytearray([(field << 3) | 2])
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + data


def etcd_worker(endpoints: list[str], workload: str, depth: int, warmup: float, seconds: float, seed: int,
                value_size: int, rate: float | None, q: Any) -> None:
    import threading

    import grpc  # type: ignore[import-untyped]

    next_op = _ops(workload, seed, b"v" * value_size)
    chans = [grpc.insecure_channel(ep) for ep in endpoints]

    def ident(b: bytes) -> bytes:
        return b

    put = [ch.unary_unary("/etcdserverpb.KV/Put", request_serializer=ident, response_deserializer=ident)
           for ch in chans]
    rng = [ch.unary_unary("/etcdserverpb.KV/Range", request_serializer=ident, response_deserializer=ident)
           for ch in chans]
    lock = threading.RLock()  # a future that is already done runs its callback at once, in this thread
    state: dict[str, Any] = {}

    def fire(slot: int) -> None:
        op, k, v = next_op()
        ep = (seed + slot) % len(chans)
        t0 = time.perf_counter()
        fut = rng[ep].future(_pb(1, k)) if op == "get" else put[ep].future(_pb(1, k) + _pb(2, v))
        fut.add_done_callback(lambda f: done(slot, t0, f))

    def done(slot: int, t0: float, f: Any) -> None:
        if f.exception() is not None:
            state["error"] = f.exception()
        with lock:
            state["lat"].append(time.perf_counter() - t0)
            if time.monotonic() < state["until"] and "error" not in state:
                fire(slot)
                return
            state["busy"] -= 1
            if state["busy"] == 0:
                state["idle"].set()

    def loop(until: float) -> list[float]:
        state.update(lat=[], until=until, busy=depth, idle=threading.Event())
        with lock:
            for slot in range(depth):
                fire(slot)
        state["idle"].wait()
        if "error" in state:
            raise RuntimeError(f"etcd: {state['error']}")
        lat: list[float] = state["lat"]
        return lat

    t0 = time.monotonic()
    loop(t0 + warmup)
    c0 = time.process_time()
    lat = loop(t0 + warmup + seconds)
    q.put((len(lat), array.array("d", lat).tobytes(), time.process_time() - c0))
    for ch in chans:
        ch.close()


WORKERS = {"zraft": zraft_worker, "zraft-conns": zraft_conns_worker, "pysyncobj": pso_worker,
           "etcd": etcd_worker}


@dataclass
class Result:
    ops: float
    p50: float
    p99: float
    max: float
    cpu_per_1k: float
    client_share: float


def go_load(run: Running, workload: str, total: int, warmup: float, seconds: float, value_size: int) -> Result:
    """etcd driven by bench/etcdload: one Go process, ``total`` goroutines over up to 4 connections."""
    import json

    argv = [run.extra["etcdload"], "-endpoints", ",".join(run.endpoints), "-workload", workload,
            "-concurrency", str(total), "-conns", str(min(4, total)), "-warmup", str(warmup),
            "-seconds", str(seconds), "-value", str(value_size), "-keys", str(KEYS)]
    cpu0 = run.cpu()
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=warmup + seconds + 120)
    if r.returncode != 0:
        raise RuntimeError(f"etcdload failed: {r.stderr.strip()[-300:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    # The cluster's CPU over the measured window only: scale the whole run's by the measured share.
    cpu = (run.cpu() - cpu0) * seconds / max(time.perf_counter() - t0, seconds)
    return Result(out["ops"] / seconds, out["p50"] * 1000, out["p99"] * 1000, out["max"] * 1000,
                  1000 * cpu / max(out["ops"], 1), out["cpu"] / (seconds * (os.cpu_count() or 1)))


def split(total: int, clients: int) -> tuple[int, int]:
    """``total`` requests in flight as (processes, in flight each)."""
    n = max(1, min(clients, total))
    return n, max(1, total // n)


def run_load(kind: str, run: Running, workload: str, clients: int, depth: int, warmup: float, seconds: float,
             value_size: int = 64, rate: float | None = None) -> Result:
    if kind == "etcd" and run.extra.get("etcdload") and rate is None:
        return go_load(run, workload, clients * depth, warmup, seconds, value_size)
    if kind in ("zraft", "zraft-conns") and run.extra.get("zload"):
        conns = clients * (int(os.environ["ZRAFT_BENCH_CONNS"]) if kind == "zraft-conns" else 1)
        return zload_run(run, workload, conns, depth, warmup, seconds, value_size, rate)
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    endpoints = [run.extra["leader"]] if kind == "pysyncobj" else run.endpoints
    per_rate = rate / clients if rate else None
    procs = [ctx.Process(target=WORKERS[kind], args=(endpoints, workload, depth, warmup, seconds, i, value_size,
                                                     per_rate, q)) for i in range(clients)]
    for p in procs:
        p.start()
    time.sleep(warmup)
    cpu0 = run.cpu()
    t0 = time.perf_counter()
    results = []
    deadline = time.monotonic() + seconds + 120
    while len(results) < len(procs):
        try:
            results.append(q.get(timeout=1.0))
        except queue.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead or time.monotonic() > deadline:
                for p in procs:
                    p.kill()
                raise RuntimeError(f"a {kind} load generator failed (exit code {dead[0].exitcode})" if dead
                                   else f"the {kind} load generators did not finish") from None
    elapsed = time.perf_counter() - t0
    cpu = run.cpu() - cpu0
    for p in procs:
        p.join()
    total = sum(r[0] for r in results)
    lat = array.array("d")
    for r in results:
        lat.frombytes(r[1])
    s = sorted(lat)
    if not s:
        raise RuntimeError(f"no {kind} request completed in the measured {seconds:.0f} s")
    client_cpu = sum(r[2] for r in results)
    return Result(total / elapsed, s[len(s) // 2] * 1000, s[int(len(s) * 0.99)] * 1000, s[-1] * 1000,
                  1000 * cpu / max(total, 1), client_cpu / (elapsed * (os.cpu_count() or 1)))


def best_depth(kind: str, run: Running, clients: int, depths: list[int]) -> int:
    """The concurrency that gives this system the most writes per second (short trials)."""
    if len(depths) == 1:
        return depths[0]
    tried = []
    for d in depths:
        try:
            r = run_load(kind, run, "write", clients, d, 1.0, 3.0)
        except RuntimeError as e:  # e.g. etcd refuses that many requests in flight ("too many requests")
            print(f"| {run.name} | (sweep: {clients} x {d} failed: {e}) |", flush=True)
            break
        tried.append((r.ops, d))
    print(f"| {run.name} | (sweep: " + ", ".join(f"{clients} x {d}: {ops:,.0f}/s" for ops, d in tried) + ") |",
          flush=True)
    return max(tried)[1]


def row(name: str, workload: str, conc: str, r: Result) -> str:
    return (f"| {name} | {workload} | {conc} | {r.ops:,.0f} | {r.p50:.1f} | {r.p99:.1f} | {r.max:.0f} | "
            f"{r.cpu_per_1k:.3g} | {100 * r.client_share:.0f}% |")


HEADER = ("| system | workload | clients x in flight | ops/s | p50 ms | p99 ms | max ms | cluster CPU s / 1k ops "
          "| load generators' CPU |\n|---|---|---|---:|---:|---:|---:|---:|---:|")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=30.0, help="measured seconds per workload (default 30)")
    p.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds before each (default 5)")
    p.add_argument("--clients", type=int, default=4, help="load-generator processes (default 4)")
    p.add_argument("--depths", default="8,32,128,512,2048",
                   help="requests in flight per process to try (a 3 s write run each); each system is then "
                        "measured at the one that gave it the most writes per second (default 8,32,128,512,2048)")
    p.add_argument("--only", default="zraft,pysyncobj-disk,pysyncobj-memory,etcd,zraft-extras",
                   help="comma-separated subset of: zraft, pysyncobj-disk, pysyncobj-memory, etcd, zraft-extras")
    p.add_argument("--extra-seconds", type=float, default=10.0, help="measured seconds of each zraft-alone run "
                                                                     "(default 10)")
    p.add_argument("--zraft-insecure", action="store_true",
                   help="run zraft without CurveZMQ (to measure what authentication and encryption cost)")
    p.add_argument("--failover", type=int, default=10, help="leader kills to time (default 10)")
    p.add_argument("--concurrency", default="1,100,1000",
                   help="total requests in flight at which every system is measured, comma-separated, spread over "
                        "--clients processes (default 1,100,1000); the best from the sweep is an extra row")
    p.add_argument("--zraft-driver", choices=("auto", "c", "python"), default="auto",
                   help="zraft's load generator: bench/bin/zload (C, built by sh bench/build.sh) or zraft's "
                        "Python client in --clients processes; auto: C if it is built (default)")
    p.add_argument("--etcd-driver", choices=("auto", "go", "grpcio"), default="auto",
                   help="etcd's load generator: bench/bin/etcdload (Go, built by sh bench/build.sh) or "
                        "Python grpcio; auto: Go if it is built (default)")
    a = p.parse_args()
    global ZRAFT_SECURE, ZLOAD
    ZRAFT_SECURE = not a.zraft_insecure
    only = set(a.only.split(","))
    depths = [int(x) for x in a.depths.split(",")]
    totals = [int(x) for x in a.concurrency.split(",") if x]
    print(f"machine: {machine()}")
    print(f"workloads: 64-byte values, {KEYS:,} keys; write = 100% puts, mixed = 90% reads / 10% puts; "
          f"{a.warmup:.0f} s warm-up, {a.seconds:.0f} s measured\n")
    print(HEADER, flush=True)
    tmp = tempfile.mkdtemp(prefix="zraft-compare-")
    saturated_write = 0.0
    zraft_depth = depths[len(depths) // 2]
    try:
        plan: list[tuple[str, str, Callable[[], Running]]] = [
            ("zraft", "zraft", lambda: start_zraft(tmp)),
            ("pysyncobj-disk", "pysyncobj", lambda: start_pysyncobj(tmp, True)),
            ("pysyncobj-memory", "pysyncobj", lambda: start_pysyncobj(tmp, False)),
            ("etcd", "etcd", lambda: start_etcd(tmp, etcdload)),
        ]
        if a.zraft_driver != "python" and only & {"zraft", "zraft-extras"}:
            ZLOAD = compiled_driver("zload", a.zraft_driver == "c", "the C driver for zraft",
                                    "zraft through Python clients")
        etcdload = None
        if "etcd" in only and a.etcd_driver != "grpcio":
            etcdload = compiled_driver("etcdload", a.etcd_driver == "go", "the Go driver for etcd",
                                       "etcd through grpcio")
        for key, kind, starter in plan:
            if key not in only:
                continue
            try:
                run = starter()
            except (RuntimeError, OSError, launch.LaunchError) as e:
                print(f"| {key} | skipped: {e} |", flush=True)
                continue
            try:
                depth = best_depth(kind, run, a.clients, depths)
                if key == "zraft":
                    zraft_depth = depth
                for workload in ("write", "mixed"):
                    for total in totals:
                        n, d = split(total, a.clients)
                        try:
                            r = run_load(kind, run, workload, n, d, a.warmup, a.seconds)
                        except RuntimeError as e:
                            print(f"| {run.name}, {run.detail} | {workload} | {n} x {d} | failed: {e} |", flush=True)
                            continue
                        print(row(f"{run.name}, {run.detail}", workload, f"{n} x {d}", r), flush=True)
                    r = run_load(kind, run, workload, a.clients, depth, a.warmup, a.seconds)
                    if key == "zraft" and workload == "write":
                        saturated_write = r.ops
                    print(row(f"{run.name}, {run.detail}", workload, f"{a.clients} x {depth} (best)", r),
                          flush=True)
            finally:
                run.stop()
        if "zraft-extras" in only:
            conc = f"{a.clients} x {zraft_depth}"
            print(f"\nzraft alone (at the concurrency that saturated it above; {a.extra_seconds:.0f} s each; "
                  f"{'C' if ZLOAD else 'Python'} load generator):\n")
            print(HEADER, flush=True)
            run = start_zraft(tmp, 5)
            try:
                r = run_load("zraft", run, "write", a.clients, zraft_depth, a.warmup, a.extra_seconds)
                print(row(run.name, "write", conc, r), flush=True)
            finally:
                run.stop()
            run = start_zraft(tmp, 3)
            try:
                r = run_load("zraft", run, "read", a.clients, zraft_depth, a.warmup, a.extra_seconds)
                print(row(run.name, "read (100% linearizable gets)", conc, r), flush=True)
                # The same requests in flight over 4 connections, then over 1,000 (separate sessions, a few each).
                for conns, d in ((1, 1000), (250, 4)):
                    os.environ["ZRAFT_BENCH_CONNS"] = str(conns)
                    r = run_load("zraft-conns", run, "write", a.clients, d, a.warmup, a.extra_seconds)
                    print(row(run.name, f"write, {conns * a.clients:,} connections x {d} in flight",
                              f"{a.clients} x {conns * d}", r), flush=True)
                if saturated_write:
                    half = saturated_write / 2
                    r = run_load("zraft", run, "write", a.clients, zraft_depth, a.warmup, a.extra_seconds,
                                 rate=half)
                    print(row(run.name, f"write at {half:,.0f}/s (half of saturated)", conc, r), flush=True)
            finally:
                run.stop()
            for size in (16, 1024, 65536):  # a fresh cluster each: large values leave a large log and store
                run = start_zraft(tmp, 3)
                try:
                    # At most about 8 MiB of values in flight per load generator.
                    d = min(zraft_depth, max(4, (8 << 20) // size))
                    r = run_load("zraft", run, "write", a.clients, d, a.warmup, a.extra_seconds, value_size=size)
                    print(row(run.name, f"write, {size:,} B values", f"{a.clients} x {d}", r), flush=True)
                finally:
                    run.stop()
            if a.failover:
                c = launch.start(3, os.path.join(tmp, "failover"), ports=launch.free_ports(3), fresh=True)
                try:
                    from cluster_bench import failover as cb_failover

                    t = cb_failover(c, a.failover)
                    print(f"\nkill -9 of the leader -> next acknowledged write (3 nodes): median "
                          f"{statistics.median(t) * 1000:.0f} ms, min {min(t) * 1000:.0f}, max {max(t) * 1000:.0f} "
                          f"({len(t)} trials)")
                finally:
                    c.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
