"""Membership changes and leadership transfer on real node processes (CurveZMQ, as the launcher makes them):
grow while clients write, shrink removing the leader, replace a node that lost its disk, transfer leadership, and
a removed node that comes back with its old data cannot disrupt anyone. Every acknowledged write is there at the
end."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from clusterutil import leader_id, stop_cluster, wait_until

from zraft.client import Unavailable, ZraftError
from zraft.tools import chaos, launch
from zraft.transport import security

ROOT = Path(__file__).resolve().parent.parent


class Writer(threading.Thread):
    """Appends distinct elements to one key until stopped; remembers which were acknowledged."""

    def __init__(self, c: launch.Cluster, key: str) -> None:
        super().__init__(daemon=True)
        self.c, self.key = c, key
        self.acked: list[str] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.c.client(deadline=20.0) as cl:
                n = 0
                while not self.stop.is_set():
                    n += 1
                    try:
                        cl.append(self.key, f"{n};")
                        self.acked.append(str(n))
                    except ZraftError:
                        pass  # outcome unknown: neither counted as acknowledged nor required
        except BaseException as e:
            self.error = e

    def finish(self) -> None:
        self.stop.set()
        self.join(30)
        assert self.error is None, self.error


def elements(c: launch.Cluster, key: str) -> list[str]:
    with c.client() as cl:
        v = cl.get(key) or b""
    return v.decode().split(";")[:-1]


def check_all_there(c: launch.Cluster, w: Writer) -> None:
    got = elements(c, w.key)
    assert len(set(got)) == len(got), "an append applied twice"
    missing = set(w.acked) - set(got)
    assert not missing, f"acknowledged appends missing: {sorted(missing)[:5]}"
    assert len(w.acked) > 20  # the writes really went on during the changes


def test_grow_three_to_five_while_writing_then_shrink_to_three_removing_the_leader(cluster: launch.Cluster) -> None:
    c = cluster
    w = Writer(c, "grow")
    w.start()
    wait_until(lambda: len(w.acked) > 10, what="writes before the change")
    for expected in (4, 5):
        spec = c.add_node()
        assert spec.id == expected
    with c.client() as cl:
        m = cl.members()
    assert m["voters"] == [1, 2, 3, 4, 5] and m["learners"] == []
    wait_until(lambda: len(w.acked) > 40, what="writes after growing")
    # Shrink: first the leader itself (it hands over once the change commits), then one more.
    first = leader_id(c)
    c.remove_node(first)
    second = next(n.id for n in c.nodes if n.id != leader_id(c))
    c.remove_node(second)
    with c.client() as cl:
        m = cl.members()
    assert sorted(m["voters"]) == sorted(n.id for n in c.nodes) and len(m["voters"]) == 3
    assert first not in m["voters"] and m["leader"] != first
    wait_until(lambda: len(w.acked) > 60, what="writes after shrinking")
    w.finish()
    check_all_there(c, w)
    # The launcher brings the cluster back as it is now, not as it was first launched.
    c.stop()
    again = launch.start(None, c.data_dir)
    try:
        assert sorted(n.id for n in again.nodes) == sorted(m["voters"])
        check_all_there(again, w)
    finally:
        again.stop()


def test_replace_a_node_whose_data_directory_was_lost(cluster: launch.Cluster) -> None:
    c = cluster
    with c.client() as cl:
        for i in range(20):
            cl.append("r", f"{i};")
    victim = next(n for n in c.nodes if n.id != leader_id(c))
    p = c.procs.pop(victim.id)
    p.kill()
    p.wait()
    shutil.rmtree(victim.data_dir)  # its disk is gone for good
    c.remove_node(victim.id)
    new = c.add_node()
    assert new.id == 4
    with c.client() as cl:
        m = cl.members()
        cl.append("r", "20;")
    assert sorted(m["voters"]) == sorted({1, 2, 3, 4} - {victim.id})
    assert elements(c, "r") == [str(i) for i in range(21)]


def test_transfer_leadership_and_a_removed_node_cannot_disrupt(cluster: launch.Cluster) -> None:
    c = cluster
    old = leader_id(c)
    target = next(n.id for n in c.nodes if n.id != old)
    with c.client() as cl:
        cl.transfer_leadership(target)
        cl.put("t", "after the transfer")
        st = cl.status([n.id for n in c.nodes].index(target))
    assert st["role"] == "leader" and st["commit"] >= 1  # the next write was served by the target
    assert leader_id(c) == target
    # Remove a follower, then bring it back with its old data: it still thinks it is a voter and campaigns,
    # but the members drop its votes; the leader and the term do not change.
    removed = next(n for n in c.nodes if n.id not in (target,))
    assert c.keys_dir is not None
    saved = {name: open(f"{c.keys_dir}/{name}", "rb").read()
             for name in (f"node-{removed.id}.key", f"node-{removed.id}.key_secret")}
    c.remove_node(removed.id)
    for name, data in saved.items():  # its keys come back too: what keeps it out is Raft, not the transport
        with open(f"{c.keys_dir}/{name}", "wb") as f:
            f.write(data)
    with c.client() as cl:
        term = cl.status(0)["term"]
    proc = subprocess.Popen(removed.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=launch.node_env())
    try:
        with c.client() as cl:
            end = time.monotonic() + 3.0  # several of its election timeouts
            while time.monotonic() < end:
                cl.put("t", "during")
                assert leader_id(c) == target
            statuses = [cl.status(i) for i in range(len(c.nodes))]
        assert all(s["term"] == term and s["leader"] == target for s in statuses), statuses
        assert proc.poll() is None  # it was running all along, and campaigning: its vote requests were dropped
        assert any("not from a member" in s.get("last_dropped", "") for s in statuses), statuses
    finally:
        proc.kill()
        proc.wait()


def test_a_follower_that_was_down_through_the_changes_follows_a_leader_it_never_heard_of(
        cluster: launch.Cluster) -> None:
    """Node 3 is down while node 4 joins and takes the lead: when it comes back, its configuration ({1,2,3}) does
    not name its leader and it has no connection to it. It accepts that leader (it has none of its own), answers
    over the connection the leader opened to it, catches up and learns the configuration."""
    c = cluster
    first = leader_id(c)
    sleeper = next(n.id for n in c.nodes if n.id != first)
    chaos.kill(c, sleeper)
    try:
        new = c.add_node()
        with c.client() as cl:
            cl.transfer_leadership(new.id)
            cl.put("late", "value")
            last = cl.members()["last_index"]
    finally:
        chaos.restart(c, sleeper)
    with c.client() as cl:
        idx = [n.id for n in c.nodes].index(sleeper)

        def caught_up() -> bool:
            try:
                st = cl.status(idx)
            except Unavailable:  # still starting (a fresh interpreter takes most of a second)
                return False
            return st["leader"] == new.id and st["commit"] >= last and new.id in st["voters"]

        wait_until(caught_up, timeout=20.0, what=f"node {sleeper} to follow node {new.id}")


def test_a_node_that_joins_before_its_key_reached_the_cluster_is_added(tmp_path: Path) -> None:
    """Nodes on separate machines (docs/OPERATIONS.md): the new node has its own key directory and starts with
    --join before anyone admits its key, so the cluster refuses its first handshakes. ZeroMQ never dials again
    after a refused handshake; the transport does, so once add_node carries the key the node catches up (it
    used to stay a learner at match 0 forever)."""
    c = launch.start(3, str(tmp_path / "c"), ports=launch.free_ports(3))
    proc = None
    try:
        assert c.keys_dir is not None
        own = tmp_path / "m4"
        pair = security.create_keypair(str(own), "node-4")
        for n in c.nodes:  # the public keys it needs, copied to "its machine"; nothing of it goes the other way
            shutil.copy(os.path.join(c.keys_dir, f"node-{n.id}.key"), own)
        shutil.copytree(os.path.join(c.keys_dir, "clients"), own / "clients")
        addr = f"127.0.0.1:{launch.free_ports(1)[0]}"
        log = tmp_path / "node-4.log"
        join = ",".join(f"{n.id}={n.address}" for n in c.nodes)
        argv = [sys.executable, "-m", "zraft", "node", "--id", "4", "--join", join, "--address", addr, "--data-dir",
                str(tmp_path / "d4"), "--keys", str(own), "--cluster-id", c.cluster_id]
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
        with c.client() as cl:
            wait_until(lambda: any(st and st["refused_connections"] > 0 for st in cl.status_many(1.0)), timeout=20,
                       what="the cluster to refuse the unknown key")
        with c.client(deadline=30.0) as cl:
            cl.put("k", "v")
            cl.add_node(4, addr, pair.public.decode(), timeout=30)
            m = cl.members()
            assert m["voters"] == [1, 2, 3, 4], m
            wait_until(lambda: next(r for r in cl.members()["members"] if r[0] == 4)[3] >= m["last_index"],
                       what="node 4 to catch up")
        assert "event=handshake_refused" in log.read_text()
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        stop_cluster(c)
