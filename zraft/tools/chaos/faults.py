"""Process faults on a launcher-made cluster, with psutil: kill (SIGKILL), pause (SIGSTOP), resume (SIGCONT),
restart (from the command recorded in cluster.json), for a node by id, the current leader or a random node.

    from zraft.tools import chaos, launch
    c = launch.load("./zraft-data")
    chaos.kill(c, chaos.leader(c))

Network faults (drop, delay, duplicate, partitions) go to nodes started with ``--chaos`` through a control
socket local to the machine. ``zraft chaos`` is a whole chaos run, checked for linearizability.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import msgpack
import psutil
import zmq

from zraft.tools.launch import Cluster, statuses


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
        best_effort(set_net_faults, c, i, drop_to=others, drop_from=others)


def cut_one_way(c: Cluster, src: int, dst: int) -> None:
    best_effort(set_net_faults, c, src, drop_to=[dst])
    best_effort(set_net_faults, c, dst, drop_from=[src])


def heal_network(c: Cluster) -> None:
    for n in c.nodes:
        best_effort(set_net_faults, c, n.id)


class Network:
    """Where a chaos run cuts the network: by default inside the nodes (``--chaos`` control sockets, which drop
    Raft messages before ZeroMQ sees them); ``LanNetwork`` cuts real TCP between network namespaces."""

    def __init__(self, c: Cluster) -> None:
        self.c = c

    def partition(self, *groups: list[int]) -> None:
        partition(self.c, *groups)

    def bridge(self, left: list[int], right: list[int]) -> None:
        for x in left:
            best_effort(set_net_faults, self.c, x, drop_to=right, drop_from=right)
        for y in right:
            best_effort(set_net_faults, self.c, y, drop_to=left, drop_from=left)

    def one_way(self, src: int, dst: int) -> None:
        cut_one_way(self.c, src, dst)

    def flaky(self) -> str:
        spec = {"loss": 0.2, "duplicate": 0.1, "delay_ms": (1.0, 60.0)}
        for n in self.c.nodes:
            best_effort(set_net_faults, self.c, n.id, **spec)
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


def best_effort(fn: Callable[..., Any], *args: Any, **kw: Any) -> None:
    try:
        fn(*args, **kw)
    except ChaosError:
        pass  # a dead or paused node has no traffic to fault; it is healed when it comes back


# ---------------------------------------------------------------------- the chaos run
