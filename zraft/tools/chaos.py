"""Process faults on a launcher-made cluster, with psutil: kill (SIGKILL), pause (SIGSTOP), resume (SIGCONT),
restart (from the command recorded in cluster.json), for a node by id, the current leader or a random node.

    from zraft.tools import chaos, launch
    c = launch.load("./zraft-data")
    chaos.kill(c, chaos.leader(c))

Network faults (drop, delay, duplicate, partitions) go to nodes started with ``--chaos`` through a control
socket local to the machine. ``zraft chaos`` is a whole chaos run, checked for linearizability.
"""

from __future__ import annotations

import argparse
import html
import itertools
import json
import logging
import multiprocessing
import os
import random
import secrets
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import msgpack
import psutil
import zmq

from zraft.tools.launch import Cluster, statuses
from zraft.transport.security import ClientKeys


class ChaosError(Exception):
    pass


def _proc(c: Cluster, node_id: int) -> psutil.Process:
    spec = c.node(node_id)
    try:
        p = psutil.Process(spec.pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            raise psutil.NoSuchProcess(spec.pid)
        return p
    except psutil.NoSuchProcess:
        raise ChaosError(f"node {node_id} (pid {spec.pid}) is not running; `restart {node_id}` starts it") from None


def kill(c: Cluster, node_id: int) -> None:
    """SIGKILL: the node dies at once, as in a crash; what it fsynced survives."""
    p = _proc(c, node_id)
    p.kill()
    proc = c.procs.get(node_id)
    if proc is not None:  # our child: reap it
        proc.wait()
        return
    # Another process's child (the launcher's, when the shell kills): it is dead once it is a zombie; waiting for
    # it to vanish would wait for its parent to reap it.
    end = time.monotonic() + 5
    while time.monotonic() < end:
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.005)


def pause(c: Cluster, node_id: int) -> None:
    """SIGSTOP: the node freezes (like a long GC pause or a stalled VM) until resumed."""
    _proc(c, node_id).suspend()


def resume(c: Cluster, node_id: int) -> None:
    _proc(c, node_id).resume()


def restart(c: Cluster, node_id: int) -> int:
    """Start a node that is not running, from the command in the cluster file. Returns its new pid."""
    spec = c.node(node_id)
    try:
        p = psutil.Process(spec.pid)
        if p.status() != psutil.STATUS_ZOMBIE and spec.pid > 0:
            raise ChaosError(f"node {node_id} (pid {spec.pid}) is still running; kill it first")
    except psutil.NoSuchProcess:
        pass
    return c.start_node(node_id)


def leader(c: Cluster) -> int:
    """The node id that the live nodes report as leader of the highest term."""
    best: tuple[int, int] | None = None
    for st in statuses(c).values():
        if st and st.get("leader") and (best is None or st["term"] > best[0]):
            best = (st["term"], st["leader"])
    if best is None:
        raise ChaosError("no node reports a leader right now")
    return best[1]


def random_node(c: Cluster, rng: random.Random | None = None) -> int:
    return (rng or random).choice([n.id for n in c.nodes])


# ---------------------------------------------------------------------- network faults


def set_net_faults(c: Cluster, node_id: int, **spec: Any) -> None:
    """Tell a node started with --chaos what to do to its Raft traffic: drop_to / drop_from (peer ids), loss,
    duplicate (probabilities), delay_ms ((min, max)). No arguments: heal."""
    from zraft.transport.faults import chaos_endpoint

    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    try:
        s.connect(chaos_endpoint(c.node(node_id).data_dir))
        s.send(msgpack.packb(spec))
        if not s.poll(2000):
            raise ChaosError(f"node {node_id} did not answer its chaos control socket (paused, dead, or not "
                             "started with --chaos)")
        r = msgpack.unpackb(s.recv())
        if not r.get("ok"):
            raise ChaosError(f"node {node_id} refused the fault: {r.get('message')}")
    finally:
        s.close()


def partition(c: Cluster, *groups: list[int]) -> None:
    """Cut every link between nodes of different groups (a node in no group is cut from all)."""
    where = {n: g for g, members in enumerate(groups) for n in members}
    ids = [n.id for n in c.nodes]
    for i in ids:
        others = [j for j in ids if j != i and (i not in where or j not in where or where[i] != where[j])]
        _quiet(set_net_faults, c, i, drop_to=others, drop_from=others)


def cut_one_way(c: Cluster, src: int, dst: int) -> None:
    _quiet(set_net_faults, c, src, drop_to=[dst])
    _quiet(set_net_faults, c, dst, drop_from=[src])


def heal_network(c: Cluster) -> None:
    for n in c.nodes:
        _quiet(set_net_faults, c, n.id)


class Network:
    """Where a chaos run cuts the network: by default inside the nodes (``--chaos`` control sockets, which drop
    Raft messages before ZeroMQ sees them); ``LanNetwork`` cuts real TCP between network namespaces."""

    def __init__(self, c: Cluster) -> None:
        self.c = c

    def partition(self, *groups: list[int]) -> None:
        partition(self.c, *groups)

    def bridge(self, left: list[int], right: list[int]) -> None:
        for x in left:
            _quiet(set_net_faults, self.c, x, drop_to=right, drop_from=right)
        for y in right:
            _quiet(set_net_faults, self.c, y, drop_to=left, drop_from=left)

    def one_way(self, src: int, dst: int) -> None:
        cut_one_way(self.c, src, dst)

    def flaky(self) -> str:
        spec = {"loss": 0.2, "duplicate": 0.1, "delay_ms": (1.0, 60.0)}
        for n in self.c.nodes:
            _quiet(set_net_faults, self.c, n.id, **spec)
        return "20% loss, 10% duplicates, 1-60 ms delays, every node"

    def heal(self) -> None:
        heal_network(self.c)


class LanNetwork(Network):
    """Faults on real TCP between the nodes' network namespaces, with nftables (``zraft.tools.netns``)."""

    def __init__(self, c: Cluster, lan: Any) -> None:
        super().__init__(c)
        self.lan = lan

    def partition(self, *groups: list[int]) -> None:
        self.lan.partition(*groups)

    def bridge(self, left: list[int], right: list[int]) -> None:
        self.lan.bridge(left, right)

    def one_way(self, src: int, dst: int) -> None:
        self.lan.one_way(src, dst)

    def flaky(self) -> str:
        self.lan.loss(20)
        return "20% of the packets between nodes lost (nftables), every node"

    def heal(self) -> None:
        self.lan.heal()


def _quiet(fn: Callable[..., Any], *args: Any, **kw: Any) -> None:
    try:
        fn(*args, **kw)
    except ChaosError:
        pass  # a dead or paused node has no traffic to fault; it is healed when it comes back


# ---------------------------------------------------------------------- the chaos run


def _random_ops(rng: random.Random, cid: int, n: int, count: int, w: float, append_keys: list[str],
                register_keys: list[str]) -> list[dict[str, Any]]:
    """``count`` random operations (appends of unique values, puts, deletes, and a ``1 - w`` share of gets), as
    history records still to be completed; ``n`` is the client's count of operations so far."""
    recs: list[dict[str, Any]] = []
    for i in range(n + 1, n + count + 1):
        x = rng.random()
        if x < 0.7 * w:
            kind, key, value = "append", rng.choice(append_keys), f"{cid}.{i};"
        elif x < 0.93 * w:
            kind, key, value = "put", rng.choice(register_keys), f"{cid}.{i}"
        elif x < w:
            kind, key, value = "delete", rng.choice(register_keys), None
        else:
            kind, key, value = "get", rng.choice(append_keys + register_keys), None
        recs.append({"client": cid, "op": kind, "key": key, "value": value, "output": None})
    return recs


def _client_proc(addresses: list[str], cid: int, seed: int, until: float, append_keys: list[str],
                 register_keys: list[str], path: str, keys: ClientKeys | None = None, pipeline: int = 1,
                 read_share: float = 0.35, namespace: str | None = None) -> None:
    """One client process: random operations until ``until``, each recorded with its call and return times.
    With ``pipeline`` > 1 it sends that many requests at once (``run_many``); they are concurrent, so each is
    recorded with the call and return of the whole group. ``read_share``: the fraction of reads. ``namespace``:
    the network namespace to run in (``--netns``: the LAN's clients' namespace)."""
    if namespace is not None:
        from zraft.tools import netns

        netns.enter(namespace)
    from zraft.client import Client, OutcomeUnknown, RequestRefused, Unavailable

    rng = random.Random(seed)
    n = 0
    # Client 1 gives up quickly, so some of its writes end with an unknown outcome that the checker must place.
    deadline = 1.0 if cid == 1 else 5.0
    with Client(addresses, deadline=deadline, attempt_timeout=0.5, keys=keys) as cl, open(path, "w") as out:
        while time.monotonic() < until:
            recs = _random_ops(rng, cid, n, pipeline, 1.0 - read_share, append_keys, register_keys)
            n += pipeline
            call = time.monotonic()
            for rec in recs:
                rec["call"] = call
            try:
                if pipeline == 1:
                    rec = recs[0]
                    kind, key, value = rec["op"], rec["key"], rec["value"]
                    if kind == "get":
                        v = cl.get(key)
                        rec["output"] = None if v is None else v.decode()
                    elif kind == "delete":
                        cl.delete(key)
                    else:
                        getattr(cl, kind)(key, value)
                else:
                    got = cl.run_many([(r["op"], r["key"], r["value"] or "") for r in recs])
                    for rec, v in zip(recs, got, strict=True):
                        if rec["op"] == "get":
                            rec["output"] = None if v is None else v.decode()
                ret = time.monotonic()
                for rec in recs:
                    rec["return"], rec["status"] = ret, "ok"
            except (OutcomeUnknown, Unavailable):
                for rec in recs:
                    rec["return"] = None
                    rec["status"] = "unknown" if rec["op"] != "get" else "fail"
            except RequestRefused:
                for rec in recs:
                    rec["return"] = time.monotonic()
                    rec["status"] = "fail"
            out.write("".join(json.dumps(rec) + "\n" for rec in recs))
            out.flush()


def _resp_client_proc(addresses: list[str], cid: int, seed: int, until: float, append_keys: list[str],
                      register_keys: list[str], path: str, pipeline: int = 1, read_share: float = 0.35,
                      namespace: str | None = None, password: str | None = None) -> None:
    """``_client_proc`` through the Redis protocol (redis-py): SET, APPEND, DEL, GET at a random node's Redis port
    (any node serves every command), another one after a connection error. A write answered with an error
    (-TRYAGAIN after the node's 10 s of retries) or cut off has an unknown outcome; a failed read none."""
    if namespace is not None:
        from zraft.tools import netns

        netns.enter(namespace)
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    rng = random.Random(seed)
    n = 0
    protocol = 2 + cid % 2  # half the clients speak RESP2, half RESP3 (HELLO 3)

    def connect() -> redis.Redis:
        host, _, port = rng.choice(addresses).rpartition(":")
        # No retries by redis-py (it retries a command up to 10 times on a broken connection by default): a retry
        # on a new connection is a new session, so a write whose answer was lost could be applied twice.
        return redis.Redis(host=host, port=int(port), socket_timeout=12.0, socket_connect_timeout=2.0,
                           protocol=protocol, retry=Retry(NoBackoff(), 0), password=password)

    r = connect()
    with open(path, "w") as out:
        while time.monotonic() < until:
            recs = _random_ops(rng, cid, n, pipeline, 1.0 - read_share, append_keys, register_keys)
            n += pipeline
            call = time.monotonic()
            p = r.pipeline(transaction=False)
            for rec in recs:
                rec["call"] = call
                kind, key, value = rec["op"], rec["key"], rec["value"]
                if kind == "get":
                    p.get(key)
                elif kind == "delete":
                    p.delete(key)
                elif kind == "put":
                    p.set(key, value)
                else:
                    p.append(key, value)
            try:
                results = p.execute(raise_on_error=False)
            except (redis.ConnectionError, redis.TimeoutError):
                results = [None] * len(recs)
                lost = True
            else:
                lost = False
            ret = time.monotonic()
            for rec, res in zip(recs, results, strict=True):
                if lost or isinstance(res, Exception):
                    rec["return"] = None if rec["op"] != "get" else ret
                    rec["status"] = "unknown" if rec["op"] != "get" else "fail"
                else:
                    rec["return"], rec["status"] = ret, "ok"
                    if rec["op"] == "get":
                        rec["output"] = None if res is None else res.decode()
            if lost:
                r.close()
                r = connect()
            out.write("".join(json.dumps(rec) + "\n" for rec in recs))
            out.flush()


FAULTS = ("kill", "kill_leader", "pause", "pause_leader", "isolate_leader", "split", "bridge", "one_way",
          "flaky_network")
LEADER_AFTER_HEAL_S = 10.0
"""After each fault heals, some node must report itself leader within this many seconds."""


MEMBERSHIP_KINDS = ("add", "remove", "replace", "transfer")
SPARE_NAMESPACES = 30
"""Namespaces made for nodes added during a ``--netns --membership`` run (ids are never reused)."""


def _membership_nemesis(c: Cluster, rng: random.Random, until: float, events: list[dict[str, Any]],
                        say: Callable[[str], None], t0: float, voters: tuple[int, int]) -> None:
    """While the other faults happen: every few seconds add a node, remove one (the leader too), replace one
    (remove it, add a fresh one under a new id) or transfer leadership, keeping between ``voters`` voters."""
    from zraft.client import ZraftError
    from zraft.tools.launch import LaunchError

    while time.monotonic() < until:
        time.sleep(rng.uniform(2.0, 5.0))
        if time.monotonic() >= until:
            break
        start = time.monotonic()
        size = len(c.nodes)
        kinds = [k for k in MEMBERSHIP_KINDS
                 if not (k == "add" and size >= voters[1]) and not (k == "remove" and size <= voters[0])]
        kind = rng.choice(kinds)
        note = ""
        try:
            ld = leader(c)
        except ChaosError:
            ld = 0
        try:
            ids = [n.id for n in c.nodes]
            if kind == "add":
                note = f"added node {c.add_node(wait=20.0).id}"
            elif kind in ("remove", "replace"):
                target = ld if ld and rng.random() < 0.3 else rng.choice(ids)
                c.remove_node(target)
                note = f"removed node {target}" + (" (the leader)" if target == ld else "")
                if kind == "replace":
                    note += f", added node {c.add_node(wait=20.0).id}"
            else:
                target = rng.choice([i for i in ids if i != ld] or ids)
                with c.client(deadline=5.0) as cl:
                    cl.transfer_leadership(target)
                note = f"leadership {ld} -> {target}"
        except (ZraftError, LaunchError, ChaosError) as e:
            note += f" failed: {e}" if note else f"failed: {e}"
        end = time.monotonic()
        events.append({"fault": f"member_{kind}", "node": 0, "note": note, "start": start, "end": end,
                       "leader_after": 0.0, "membership": [n.id for n in c.nodes]})
        say(f"  t={start - t0:6.1f} s  member  {kind:<15} {note}  (members now {[n.id for n in c.nodes]})")


def _nemesis(c: Cluster, rng: random.Random, until: float, rate: float, events: list[dict[str, Any]],
             say: Callable[[str], None] = lambda s: None, t0: float = 0.0, net: Network | None = None) -> None:
    from zraft.tools.launch import LaunchError

    net = net or Network(c)
    while time.monotonic() < until:
        time.sleep(rng.uniform(0.5, 1.5) / rate)
        if time.monotonic() >= until:
            break
        ids = [n.id for n in c.nodes]
        kind = rng.choice(FAULTS)
        try:
            ld = leader(c)
        except ChaosError:
            ld = rng.choice(ids)
        target = ld if kind.endswith("_leader") else rng.choice(ids)
        start = time.monotonic()
        note = ""
        try:  # the membership nemesis may remove the target meanwhile: then there is nothing to fault or heal
            if kind.startswith("kill"):
                kill(c, target)
            elif kind.startswith("pause"):
                pause(c, target)
            elif kind == "isolate_leader":
                net.partition([target], [i for i in ids if i != target])
            elif kind == "split":
                shuffled = ids[:]
                rng.shuffle(shuffled)
                k = len(ids) // 2
                net.partition(shuffled[:k], shuffled[k:])
                note = f"{sorted(shuffled[:k])} | {sorted(shuffled[k:])}"
            elif kind == "bridge":
                shuffled = ids[:]
                rng.shuffle(shuffled)
                bridge, rest = shuffled[0], shuffled[1:]
                half = len(rest) // 2
                a, b = rest[:half], rest[half:]
                net.bridge(a, b)
                note = f"{sorted(a)} <-{bridge}-> {sorted(b)}"
            elif kind == "one_way":
                other = rng.choice([i for i in ids if i != target])
                net.one_way(target, other)
                note = f"{target} -/-> {other}"
            else:  # every node loses (and, inside the nodes, duplicates and delays) some of its traffic
                note = net.flaky()
        except (ChaosError, KeyError, LaunchError) as e:
            note = f"skipped: {e}"
        say(f"  t={start - t0:6.1f} s  fault   {kind:<15} node {target}  {note}")
        time.sleep(rng.uniform(1.0, 3.0) / rate)
        # Heal this fault before the next one.
        try:
            if kind.startswith("kill"):
                _quiet(restart, c, target)
            elif kind.startswith("pause"):
                _quiet(resume, c, target)
            else:
                net.heal()
        except (KeyError, LaunchError):
            pass  # the node was removed meanwhile
        end = time.monotonic()
        # Liveness: a leader again soon after each heal.
        recovered = None
        while time.monotonic() - end < LEADER_AFTER_HEAL_S:
            try:
                leader(c)
                recovered = time.monotonic() - end
                break
            except ChaosError:
                time.sleep(0.05)
        events.append({"fault": kind, "node": target, "note": note, "start": start, "end": end,
                       "leader_after": recovered})
        say(f"  t={end - t0:6.1f} s  healed  {kind:<15} " + (
            f"leader after {recovered:.2f} s" if recovered is not None else "NO LEADER"))


class _Progress:
    """Counts the operations the clients have recorded so far (reading only what is new in their files)."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self.offsets = [0] * len(paths)
        self.counts = {"ok": 0, "fail": 0, "unknown": 0}

    def update(self) -> dict[str, int]:
        for i, path in enumerate(self.paths):
            try:
                with open(path) as f:
                    f.seek(self.offsets[i])
                    data = f.read()
            except FileNotFoundError:
                continue
            end = data.rfind("\n") + 1
            self.offsets[i] += len(data[:end].encode())
            for line in data[:end].splitlines():
                for k in self.counts:
                    if f'"status": "{k}"' in line:
                        self.counts[k] += 1
        return self.counts


def _report_progress(paths: list[str], leaders: list[tuple[float, int, int]], stop: Any, t0: float,
                     say: Callable[[str], None], every: float = 5.0) -> None:
    prog = _Progress(paths)
    while not stop.wait(every):
        n = prog.update()
        ld = leaders[-1] if leaders else None
        who = f"leader node {ld[1]} (term {ld[2]})" if ld and ld[1] else "no leader"
        say(f"  t={time.monotonic() - t0:6.1f} s  operations: {n['ok']} ok, {n['fail']} failed, {n['unknown']} "
            f"unknown; {who}")


def _watch_leaders(c: Cluster, stop: Any, samples: list[tuple[float, int, int]]) -> None:
    """Sample who leads, for the timeline: (time, leader node id or 0, term)."""
    while not stop.is_set():
        best = (0, 0)
        for st in statuses(c, timeout=0.2).values():
            if st and st.get("role") == "leader" and st["term"] >= best[1]:
                best = (st["node"], st["term"])
        samples.append((time.monotonic(), *best))
        stop.wait(0.25)


def write_timeline(path: str, t0: float, t1: float, nodes: list[int], events: list[dict[str, Any]],
                   leaders: list[tuple[float, int, int]], history: list[dict[str, Any]]) -> None:
    """A self-contained HTML page (inline SVG): who led in which term, when each fault struck and healed, and
    client latency over time."""
    width, left = 1000, 90
    span = max(t1 - t0, 1e-3)

    def x(t: float) -> float:
        return left + (t - t0) / span * (width - left - 10)

    rows = {n: 30 + 22 * i for i, n in enumerate(nodes)}
    parts = [f'<text x="5" y="{y + 12}" font-size="12">node {n}</text>' for n, y in rows.items()]
    palette = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7"]
    for (ta, ld, term), (tb, _, _) in itertools.pairwise(leaders):
        if ld in rows:
            parts.append(f'<rect x="{x(ta):.1f}" y="{rows[ld]}" width="{max(x(tb) - x(ta), 0.5):.1f}" height="16" '
                         f'fill="{palette[term % len(palette)]}"><title>node {ld} leads term {term}</title></rect>')
    fy = 30 + 22 * len(nodes) + 10
    parts.append(f'<text x="5" y="{fy + 12}" font-size="12">faults</text>')
    for i, e in enumerate(events):
        y = fy + (i % 3) * 14
        label = html.escape(f"{e['fault']} node {e['node']} {e['note']}")
        parts.append(f'<rect x="{x(e["start"]):.1f}" y="{y}" width="{max(x(e["end"]) - x(e["start"]), 1):.1f}" '
                     f'height="12" fill="#d62728" opacity="0.6"><title>{label}</title></rect>'
                     f'<text x="{x(e["start"]):.1f}" y="{y + 10}" font-size="9">{html.escape(e["fault"])}</text>')
    ly = fy + 60
    lh = 160
    done = [h for h in history if h.get("return") is not None and h["client"]]
    worst = max([h["return"] - h["call"] for h in done] or [0.001])
    parts.append(f'<text x="5" y="{ly + 12}" font-size="12">latency</text>'
                 f'<text x="5" y="{ly + 26}" font-size="10">max {worst * 1000:.0f} ms</text>'
                 f'<line x1="{left}" y1="{ly + lh}" x2="{width - 10}" y2="{ly + lh}" stroke="#999"/>')
    step = max(1, len(done) // 4000)
    for h in done[::step]:
        lat = h["return"] - h["call"]
        parts.append(f'<circle cx="{x(h["call"]):.1f}" cy="{ly + lh - lat / worst * lh:.1f}" r="1.2" '
                     f'fill="{"#333" if h["op"] == "get" else "#1f77b4"}"/>')
    for s in range(0, int(span) + 1, max(1, int(span) // 10)):
        parts.append(f'<text x="{x(t0 + s):.1f}" y="{ly + lh + 14}" font-size="10">{s}s</text>')
    height = ly + lh + 24
    page = (f"<!doctype html><meta charset=utf-8><title>zraft chaos run</title>"
            f"<h3 style='font-family:sans-serif'>zraft chaos run: leaders by term (colour), faults, latency "
            f"(blue: writes, black: reads)</h3>"
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'style="font-family:sans-serif">{"".join(parts)}</svg>')
    with open(path, "w") as f:
        f.write(page)


EXIT_PASS, EXIT_VIOLATION, EXIT_UNKNOWN = 0, 1, 3


def run(nodes: int, duration: float, seed: int, clients: int, out_dir: str, rate: float = 1.0,
        keys: int = 3, snapshot_every: int | None = None, quiet: bool = False, pipeline: int = 4,
        read_share: float = 0.35, check_timeout: float = 120.0, check_memory_mib: int = 1024,
        membership: bool = False, use_netns: bool = False, resp: bool = False) -> int:
    """A chaos run: returns the process exit code: 0 when every check passed, 1 on a definite violation, 3 when
    the checker's budget ran out before it could decide (unknown). See ``main``."""
    from zraft.tools import check, launch

    def say(line: str) -> None:
        if not quiet:
            print(line, flush=True)

    rng = random.Random(seed)
    os.makedirs(out_dir, exist_ok=True)
    data = os.path.join(out_dir, "data")
    snap_args = ["--snapshot-every", str(snapshot_every)] if snapshot_every else []
    password = None
    if resp:  # the Redis ports need a password off loopback (--netns); used in both modes alike
        password = secrets.token_urlsafe(16)
        pw_file = os.path.join(out_dir, "redis.pass")
        fd = os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        snap_args += ["--resp-password-file", os.path.abspath(pw_file)]
    lan = None
    if use_netns:  # nodes on their own addresses in network namespaces; faults cut on real TCP (nftables)
        from zraft.tools import netns

        # With --membership, spare namespaces for the nodes the membership nemesis adds (each under a new id).
        lan = netns.Lan(nodes + (SPARE_NAMESPACES if membership else 0), prefix="zrc")
        lan.up()
        try:
            c = launch.start(nodes, data, ports=[7000] * nodes, fresh=True, node_args=snap_args,
                             hosts=[lan.address(i) for i in range(1, nodes + 1)], wrap=lan.wrap,
                             resp_ports=[7001] * nodes if resp else None)
        except BaseException:
            lan.down()
            raise
        net: Network = LanNetwork(c, lan)
        spare_lan = lan

        def place(nid: int) -> tuple[str, int, list[str]]:
            if nid > spare_lan.n:
                raise launch.LaunchError(f"no namespace left for node {nid} (the LAN has {spare_lan.n})")
            return spare_lan.address(nid), 7000, spare_lan.wrap(nid)

        c.placement = place
    else:
        c = launch.start(nodes, data, ports=launch.free_ports(nodes), fresh=True, node_args=["--chaos", *snap_args],
                         resp_ports=launch.free_ports(nodes) if resp else None)
        net = Network(c)
    append_keys = [f"list{i}" for i in range(keys)]
    register_keys = [f"reg{i}" for i in range(keys)]
    events: list[dict[str, Any]] = []
    t0 = time.monotonic()
    until = t0 + duration
    ctx = multiprocessing.get_context("spawn")
    paths = [os.path.join(out_dir, f"client-{i}.jsonl") for i in range(clients)]
    try:
        # Half the clients pipeline (several requests in flight each), half send one at a time.
        if resp:  # every client through the Redis protocol, at any node
            procs = [ctx.Process(target=_resp_client_proc, args=(
                [n.resp for n in c.nodes], i + 1, seed * 1000 + i, until, append_keys, register_keys, paths[i],
                pipeline if i % 2 else 1, read_share, lan.clients if lan is not None else None, password))
                for i in range(clients)]
        else:
            procs = [ctx.Process(target=_client_proc, args=(
                c.addresses, i + 1, seed * 1000 + i, until, append_keys, register_keys, paths[i], c.client_keys(),
                pipeline if i % 2 else 1, read_share, lan.clients if lan is not None else None))
                for i in range(clients)]
        say(f"chaos run: {nodes} nodes, {duration:.0f} s, seed {seed}, {clients} clients ({clients // 2} pipelining "
            f"{pipeline} requests{', through the Redis protocol' if resp else ''}), {keys} list keys and {keys} "
            f"register keys, out {out_dir}")
        for p in procs:
            p.start()
        stop_watch = threading.Event()
        leaders: list[tuple[float, int, int]] = []
        watcher = threading.Thread(target=_watch_leaders, args=(c, stop_watch, leaders), daemon=True)
        watcher.start()
        stop_progress = threading.Event()
        reporter = threading.Thread(target=_report_progress, args=(paths, leaders, stop_progress, t0, say),
                                    daemon=True)
        reporter.start()
        members = None
        if membership:
            members = threading.Thread(target=_membership_nemesis, daemon=True, args=(
                c, random.Random(seed + 1), until, events, say, t0, (3, nodes + 2)))
            members.start()
        initial = [n.id for n in c.nodes]
        _nemesis(c, rng, until, rate, events, say, t0, net)
        if members is not None:
            members.join(120)
        for p in procs:
            p.join(60)
        stop_progress.set()
        reporter.join()
        say(f"  t={time.monotonic() - t0:6.1f} s  load done; healing everything")
        # Heal everything, then the cluster must elect a leader and answer.
        heal_start = time.monotonic()
        for n in c.nodes:
            _quiet(resume, c, n.id)
            _quiet(restart, c, n.id)
        net.heal()
        elected = None
        with c.client(deadline=15.0) as cl:
            final: dict[str, bytes | None] = {}
            cl.put(b"chaos-final", b"1")
            elected = time.monotonic() - heal_start
            stop_watch.set()
            watcher.join()
            finals = []
            for k in append_keys + register_keys:
                call = time.monotonic()
                final[k] = cl.get(k)
                finals.append(json.dumps({"client": 0, "op": "get", "key": k, "value": None, "output": None if
                                          final[k] is None else (final[k] or b"").decode(), "call": call,
                                          "return": time.monotonic(), "status": "ok"}) + "\n")
    finally:
        c.stop()
        if lan is not None:
            lan.down()
    snaps = _count_snapshot_events(c)
    # The history: every client's records and the final reads, copied line by line into history.jsonl and turned
    # into the checker's operations as they go; the records kept for the report drop their (large) read outputs.
    hist_path = os.path.join(out_dir, "history.jsonl")
    history: list[dict[str, Any]] = []
    loader = check.Loader()
    with open(hist_path, "w") as hf:
        for path in [*paths, None]:
            lines = _read_lines(path) if path else finals
            for line in lines:
                if not line.strip():
                    continue
                hf.write(line)
                h = json.loads(line)
                if h["status"] != "fail":
                    loader.add(check.Op.from_json(h))
                h["output"] = None
                history.append(h)
            del lines
    ops = loader.ops
    say(f"checking {len(ops)} operations on {len(append_keys) + len(register_keys)} keys "
        f"(budget {check_timeout:.0f} s, {check_memory_mib} MiB)")
    t_check = time.monotonic()
    results = check.check(ops, check.Budget(check_timeout, check_memory_mib << 20),
                          None if quiet else check.print_progress)
    check_s = time.monotonic() - t_check
    problems = [f"key {r.key!r} is not linearizable: {r.explanation}" for r in results if r.ok is False]
    unknowns = [f"key {r.key!r}: {r.explanation}" for r in results if r.ok is None]
    # Every acknowledged append is in the final value exactly once; no append appears twice.
    for k in append_keys:
        parts = [x for x in (final[k] or b"").decode().split(";") if x]
        dup = {x for x in parts if parts.count(x) > 1}
        if dup:
            problems.append(f"{k}: appended more than once: {sorted(dup)[:5]}")
        acked = {h["value"].rstrip(";") for h in history if h["op"] == "append" and h["key"] == k
                 and h["status"] == "ok"}
        lost = acked - set(parts)
        if lost:
            problems.append(f"{k}: acknowledged appends missing at the end: {sorted(lost)[:5]}")
    bound = 15.0
    if elected is None or elected > bound:
        problems.append(f"no leader answered within {bound:.0f} s of the final heal")
    for e in events:
        if e["leader_after"] is None:
            problems.append(f"no leader within {LEADER_AFTER_HEAL_S:.0f} s after healing {e['fault']} "
                            f"at t={e['end'] - t0:.1f} s")
    changes = sum(1 for a, b in itertools.pairwise(leaders) if b[1] and (a[1], a[2]) != (b[1], b[2]))
    counts = {s: sum(1 for h in history if h["status"] == s and h["client"]) for s in ("ok", "fail", "unknown")}
    where = (f"; nodes in network namespaces on 10.77.0.1-{nodes}, clients in their own at 10.77.0.100, network "
             "faults cut by nftables on the LAN's bridge (real TCP)")
    print(f"chaos run: {nodes} nodes, {duration:.0f} s, seed {seed}, {clients} clients" + (where if use_netns else ""))
    events.sort(key=lambda e: e["start"])
    for e in events:
        if "membership" in e:
            print(f"  t={e['start'] - t0:6.1f}-{e['end'] - t0:5.1f} s  {e['fault']:<15} {e['note']}  "
                  f"(nodes now {e['membership']})")
            continue
        after = "no leader!" if e["leader_after"] is None else f"leader {e['leader_after']:.2f} s after heal"
        print(f"  t={e['start'] - t0:6.1f}-{e['end'] - t0:5.1f} s  {e['fault']:<15} node {e['node']}  "
              f"({after})  {e['note']}")
    print(f"operations: {counts['ok']} ok, {counts['fail']} failed, {counts['unknown']} unknown; "
          f"faults injected: {len(events)}; leader changes seen: {changes}; a leader answered {elected:.2f} s after "
          f"the final heal" if elected is not None
          else "no leader after healing")
    print(f"snapshots taken: {snaps['taken']}, sent: {snaps['sent']}, installed: {snaps['installed']}")
    picture = os.path.join(out_dir, "timeline.html")
    seen = {i for e in events for i in e.get("membership", ())} | {ld for _, ld, _ in leaders if ld}
    write_timeline(picture, t0, time.monotonic(), sorted(set(initial) | {n.id for n in c.nodes} | seen), events,
                   leaders, history)
    print(f"history: {hist_path}")
    print(f"timeline (leaders, faults, latency): {picture}")
    print(f"checker: {check_s:.1f} s, " + ", ".join(f"{m} {sum(1 for r in results if r.method == m)} keys"
                                                   for m in ("list", "wgl")))
    for problem in problems:
        print(f"VIOLATION: {problem}")
    for u in unknowns:
        print(f"UNKNOWN: {u}")
    verdict = "FAIL" if problems else ("UNKNOWN" if unknowns else "PASS")
    print(f"summary: ops={sum(counts.values())} ok={counts['ok']} failed={counts['fail']} "
          f"unknown={counts['unknown']} faults={len(events)} leader_changes={changes} "
          f"snapshots_installed={snaps['installed']} violations={len(problems)} undecided_keys={len(unknowns)} "
          f"verdict={verdict}", flush=True)
    return EXIT_VIOLATION if problems else (EXIT_UNKNOWN if unknowns else EXIT_PASS)


def _read_lines(path: str) -> list[str]:
    with open(path) as f:
        return f.readlines()


def _count_snapshot_events(c: Cluster) -> dict[str, int]:
    """Snapshots the nodes took, sent and installed during the run (from their logs)."""
    counts = {"taken": 0, "sent": 0, "installed": 0}
    marks = {"taken": "event=snapshot index=", "sent": "event=snapshot_sent ", "installed": "event=snapshot_installed"}
    for n in c.nodes:
        try:
            with open(n.log, errors="replace") as f:
                for line in f:
                    for k, m in marks.items():
                        if m in line:
                            counts[k] += 1
        except OSError:
            pass
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(
        "A chaos run: start a fresh cluster, run concurrent clients (append with unique values, put, delete, get) "
        "while a seeded nemesis kills, pauses and partitions nodes, heal, read every key, and check the history "
        "is linearizable, every acknowledged append is present exactly once, and a leader returns after healing. "
        "Exit code 0: passed; 1: a definite violation; 3: the checker's budget ran out (unknown)."))
    p.add_argument("--nodes", type=int, default=5, help="cluster size (default 5)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of faults and load (default 60)")
    p.add_argument("--seed", type=int, default=0, help="nemesis and client seed (default 0)")
    p.add_argument("--clients", type=int, default=8,
                   help="client processes (default 8); every other one pipelines --pipeline requests")
    p.add_argument("--keys", type=int, default=3, help="list keys (appends) and as many register keys (default 3)")
    p.add_argument("--pipeline", type=int, default=4, help="requests in flight per pipelining client (default 4)")
    p.add_argument("--reads", type=float, default=0.35,
                   help="fraction of reads, 0-1: 0.9 is read-heavy, 0.1 write-heavy (default 0.35)")
    p.add_argument("--check-timeout", type=float, default=120.0,
                   help="seconds the linearizability check may take; past it undecided keys are unknown "
                        "(exit code 3) (default 120)")
    p.add_argument("--check-memory", type=int, default=1024,
                   help="MiB the checker's search may use for one key (default 1024)")
    p.add_argument("-q", "--quiet", action="store_true", help="no live progress; only the report at the end")
    p.add_argument("--rate", type=float, default=1.0, help="fault rate multiplier (default 1: about one fault "
                                                           "every 3 s)")
    p.add_argument("--out", help="where to write data, history and report (default ./zraft-chaos-SEED)")
    p.add_argument("--membership", action="store_true",
                   help="a second nemesis adds, removes (the leader too) and replaces nodes and transfers leadership "
                        "every few seconds, between 3 and --nodes + 2 nodes, while the other faults go on")
    p.add_argument("--netns", action="store_true",
                   help="run the nodes in Linux network namespaces on their own addresses (10.77.0.1, ...) and cut "
                        "the network with nftables on real TCP instead of inside the nodes (root; iproute2, "
                        "nftables; see zraft/tools/netns.py)")
    p.add_argument("--resp", action="store_true",
                   help="drive the clients through the Redis protocol (redis-py, at any node) instead of zraft's "
                        "own, so that the Redis path is checked for linearizability too")
    p.add_argument("--snapshot-every", type=int, help="nodes snapshot and compact after this many entries (default: "
                                                      "the node's default); small values exercise snapshots")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not 0 <= a.reads <= 1 or a.clients < 1 or a.keys < 1 or a.pipeline < 1:
        p.error("need --clients, --keys, --pipeline >= 1 and 0 <= --reads <= 1")
    if a.netns:
        from zraft.tools import netns

        why = netns.available()
        if why is not None:
            p.error(f"--netns: {why}")
        if a.membership and a.nodes + SPARE_NAMESPACES > 99:
            p.error(f"--netns --membership: at most {99 - SPARE_NAMESPACES} nodes")
    return run(a.nodes, a.duration, a.seed, a.clients, a.out or f"./zraft-chaos-{a.seed}", a.rate, a.keys,
               a.snapshot_every, a.quiet, a.pipeline, a.reads, a.check_timeout, a.check_memory, a.membership,
               a.netns, a.resp)


if __name__ == "__main__":
    sys.exit(main())
