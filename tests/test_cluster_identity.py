"""Cluster identity: every connection announces its cluster's id (ZeroMQ handshake metadata) and a node drops peer
messages from another cluster -- e.g. a node of a restored copy (same keys) or of another test cluster that
reuses an address."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from clusterutil import leader_id, stop_cluster, wait_until

from zraft.client import Client, ZraftError
from zraft.tools import chaos, launch

ROOT = Path(__file__).resolve().parent.parent


def test_a_node_of_another_cluster_at_a_members_address_is_refused_both_ways(tmp_path: Path) -> None:
    c = launch.start(3, str(tmp_path / "a"), ports=launch.free_ports(3))
    stranger = None
    try:
        assert c.cluster_id
        ld = leader_id(c)
        victim = next(n for n in c.nodes if n.id != ld)
        with c.client() as cl:
            cl.put("before", "1")
            assert cl.status(c.addresses.index(victim.address))["cluster_id"] == c.cluster_id
        chaos.kill(c, victim.id)
        # Same id, same address, same keys (as a restored copy would have), another cluster's identity.
        peers = ",".join(f"{n.id}={n.address}" for n in c.nodes)
        stranger = subprocess.Popen(
            [sys.executable, "-m", "zraft", "node", "--id", str(victim.id), "--peers", peers, "--data-dir",
             str(tmp_path / "b"), "--keys", c.keys_dir or "", "--cluster-id", "another-cluster"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "stranger.log", "wb"))
        keys = c.client_keys()
        with Client([victim.address], keys=keys, attempt_timeout=0.5) as sc:
            def up() -> bool:
                try:
                    return bool(sc.status(0)["cluster_id"] == "another-cluster")
                except ZraftError:
                    return False

            wait_until(up, timeout=20, what="the stranger to answer")
            with c.client() as cl:
                end = time.monotonic() + 3  # the leader keeps replicating to the stranger's address meanwhile
                i = 0
                while time.monotonic() < end:
                    cl.put(f"k{i}", "v")
                    i += 1
                others = [cl.status(c.addresses.index(n.address)) for n in c.nodes if n.id != victim.id]
            st = sc.status(0)
        assert st["last_index"] == 0 and st["commit"] == 0, st  # nothing of the other cluster's log came in
        assert st["bad_frames"] > 0  # the cluster's messages were dropped there
        assert any(o["bad_frames"] > 0 for o in others), others  # its campaign was dropped there
        assert all(o["term"] == others[0]["term"] for o in others)
        assert "event=other_cluster" in (tmp_path / "stranger.log").read_text()
    finally:
        if stranger is not None:
            stranger.send_signal(signal.SIGKILL)
            stranger.wait()
        stop_cluster(c)
