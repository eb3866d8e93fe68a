"""Disaster recovery: a 5-node cluster loses three nodes' data for good; ``--force-new-cluster`` on one survivor
makes it the only member with everything it had committed, and the cluster grows back with the membership
commands."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from clusterutil import leader_id, stop_cluster, wait_until

from zraft.tools import launch

ROOT = Path(__file__).resolve().parent.parent


def test_force_new_cluster_on_one_survivor_then_grow_back(tmp_path: Path) -> None:
    data = str(tmp_path / "d")
    c = launch.start(5, data, ports=launch.free_ports(5))
    acked: list[str] = []
    try:
        ld = leader_id(c)
        survivor = next(n for n in c.nodes if n.id != ld)
        with c.client() as cl:
            for i in range(60):
                cl.append("log", f"{i};")
                acked.append(str(i))
            last = cl.members()["last_index"]
            idx = c.addresses.index(survivor.address)
            wait_until(lambda: cl.status(idx)["applied"] >= last, what="the survivor to apply everything")
    finally:
        stop_cluster(c)
    for n in [n for n in c.nodes if n.id != survivor.id][:3]:  # a majority is lost for good: three data dirs
        shutil.rmtree(n.data_dir)
    assert sum(1 for n in c.nodes if Path(n.data_dir).exists()) == 2

    c2 = launch.load(data)
    spec = c2.node(survivor.id)
    plain = list(spec.argv)
    spec.argv = [*plain, "--force-new-cluster"]
    c2.nodes = [spec]
    c2.reconfigured = True
    c2.start_node(spec.id)
    spec.argv = plain  # once: a later restart must not force again
    c2.save()
    try:
        with c2.client(deadline=20.0) as cl:
            assert (cl.get("log") or b"").decode().split(";")[:-1] == acked  # everything it had committed
            m = cl.members()
            assert m["voters"] == [survivor.id] and m["leader"] == survivor.id
            cl.append("log", "after;")
        log_text = Path(spec.log).read_text()
        assert "FORCED A NEW CLUSTER" in log_text
        for _ in range(2):
            c2.add_node()
        with c2.client(deadline=20.0) as cl:
            m = cl.members()
            assert len(m["voters"]) == 3 and survivor.id in m["voters"]
            cl.append("log", "grown;")
            assert (cl.get("log") or b"").decode().split(";")[:-1] == [*acked, "after", "grown"]
            for n in c2.nodes:
                i = c2.addresses.index(n.address)
                wait_until(lambda i=i: cl.status(i)["applied"] >= cl.members()["last_index"],
                           what=f"node {n.id} to catch up")
    finally:
        stop_cluster(c2)
    # Left on the command line, the flag would drop the members added since: a second force is refused.
    r = subprocess.run([*plain, "--force-new-cluster"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert f"node {survivor.id} was forced into a new cluster at entry" in r.stderr
    assert "forcing again would drop nodes" in r.stderr and "FORCED and force again" in r.stderr
