"""Process faults on a launcher-made cluster, with psutil: kill (SIGKILL), pause (SIGSTOP), resume (SIGCONT),
restart (from the command recorded in cluster.json), for a node by id, the current leader or a random node.

    from zraft import chaos, launch
    c = launch.load("./zraft-data")
    chaos.kill(c, chaos.leader(c))

Network faults and the chaos run (``python -m zraft.chaos``) are still to come (see the chaos issue).
"""

from __future__ import annotations

import random

import psutil

from zraft.launch import Cluster, statuses


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
    try:
        p.wait(5)
    except psutil.TimeoutExpired:
        pass
    proc = c.procs.get(node_id)
    if proc is not None:
        proc.wait()


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
