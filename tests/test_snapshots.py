"""Snapshots and log compaction with real node processes: catch-up by a chunked snapshot, bounded logs,
kill -9 while a snapshot is saved or installed, and client sessions that survive both."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clusterutil import leader_id, stop_cluster, wait_until

from zraft.client import Client
from zraft.tools import chaos, launch


def _status(c: launch.Cluster, node_id: int) -> dict[str, Any]:
    return launch.statuses(c).get(node_id) or {}


def _start(tmp_path: Path, *node_args: str) -> launch.Cluster:
    return launch.start(3, str(tmp_path / "data"), ports=launch.free_ports(3), node_args=list(node_args))


@pytest.fixture
def small_snapshots(tmp_path: Path) -> Iterator[launch.Cluster]:
    c = _start(tmp_path, "--snapshot-every", "5000")
    try:
        yield c
    finally:
        stop_cluster(c)


def _write(cl: Client, n: int, keys: int = 1000, start: int = 0) -> None:
    batch = 2000
    for lo in range(start, start + n, batch):
        cl.run_many(("put", f"k{i % keys}", f"v{i}") for i in range(lo, min(lo + batch, start + n)))


def _keys_on(c: launch.Cluster, node_id: int, keys: list[str]) -> list[bytes | None]:
    """What one node holds (stale reads straight from it)."""
    with Client([c.node(node_id).address], keys=c.client_keys()) as direct:
        return [direct.get(k, stale=True) for k in keys]


def test_follower_behind_100k_writes_catches_up_by_snapshot(small_snapshots: launch.Cluster) -> None:
    c = small_snapshots
    ld = leader_id(c)
    f = next(n.id for n in c.nodes if n.id != ld)
    with c.client() as cl:
        cl.put(b"before", b"1")
        wait_until(lambda: _status(c, f).get("kv_applied", 0) >= 2, what="follower has the first write")
        chaos.kill(c, f)
        _write(cl, 100_000, keys=2000)
        cl.append(b"session", b"x")
        ld_status = _status(c, ld)
        # The leader compacted: the entries the follower lacks are gone from its log.
        assert ld_status["snapshot_index"] > 5, ld_status
        assert ld_status["log_entries"] < 20_000, ld_status
        chaos.restart(c, f)
        wait_until(lambda: _status(c, f).get("kv_applied", 0) >= _status(c, ld)["commit"], timeout=60,
                   what="the follower catches up")
    st = _status(c, f)
    # It caught up by a snapshot, not by replaying the log: its snapshot is one the leader took after it died.
    assert st["snapshot_index"] > 100_000 - 5000, st
    keys = ["before", "session"] + [f"k{i}" for i in range(2000)]
    with Client([c.node(ld).address], keys=c.client_keys()) as direct:
        want = [direct.get(k, stale=True) for k in keys]
    assert want[0] == b"1" and want[1] == b"x" and want[2] == b"v98000"
    assert _keys_on(c, f, keys) == want


def test_log_stays_bounded_during_a_long_write_run(tmp_path: Path) -> None:
    # 2 KiB values, 1 MiB segments and a snapshot every 4 MiB of log: about 100 MiB written in all.
    c = _start(tmp_path, "--snapshot-bytes", str(4 << 20), "--snapshot-every", "1000000", "--segment-bytes",
               str(1 << 20))
    try:
        value = b"x" * 2048
        most_segments = 0
        with c.client() as cl:
            for round_ in range(25):
                cl.run_many(("put", f"k{i % 500}", value) for i in range(2000))
                for n in c.nodes:
                    st = _status(c, n.id)
                    if st:
                        most_segments = max(most_segments, st["segments"])
                        # The trigger, plus what is written while a snapshot is taken, plus the active segment.
                        assert st["log_bytes"] < 12 << 20, (round_, st)
        sts = [_status(c, n.id) for n in c.nodes]
        assert all(st["snapshot_index"] > 40_000 for st in sts), sts
        # Without compaction the log would be about 100 segments.
        assert most_segments <= 12, most_segments
    finally:
        stop_cluster(c)


def test_session_table_survives_snapshot_and_restart(small_snapshots: launch.Cluster) -> None:
    c = small_snapshots
    with c.client() as once, c.client() as cl:
        once.append(b"once", b"a")  # seq 1; this client sends nothing else, so its reply stays in its session
        _write(cl, 6000)  # past --snapshot-every: every node snapshots (sessions included) and compacts
        wait_until(lambda: all(_status(c, n.id).get("snapshot_index", 0) > 1 for n in c.nodes),
                   what="every node snapshotted")
        for n in c.nodes:  # restart everything: state comes back from the snapshot plus the log after it
            chaos.kill(c, n.id)
        for n in c.nodes:
            chaos.restart(c, n.id)
        leader_id(c)
        # The append's retry (same client and sequence number), as after a lost reply: answered, not applied.
        reply = once._call({"op": "append", "key": b"once", "value": b"a", "client": once.client_id, "seq": 1,
                            "ack": 1}, write=True)
        assert reply["ok"], reply
        assert cl.get(b"once") == b"a"


def test_kill_during_snapshot_save_and_install(tmp_path: Path) -> None:
    """kill -9 at random moments while nodes take snapshots (every 300 entries) and a restarted follower installs
    one: applied never goes backwards, nothing acknowledged is lost, and every node converges."""
    c = _start(tmp_path, "--snapshot-every", "300")
    rng = random.Random(int(os.environ.get("ZRAFT_TEST_SEED", "7")))
    keys = [f"k{i}" for i in range(1500)]
    try:
        acked: dict[str, bytes] = {}
        with c.client(deadline=30) as cl:
            for round_ in range(6):
                ld = leader_id(c)
                victim = rng.choice([n.id for n in c.nodes if n.id != ld])
                before = _status(c, victim).get("kv_applied", 0)
                chaos.kill(c, victim)
                # The victim falls behind by more than a snapshot (distinct keys: a batch has no order).
                batch = {k: b"%d-%d" % (round_, i) for i, k in enumerate(keys)}
                cl.run_many(("put", k, v) for k, v in batch.items())
                acked.update(batch)
                chaos.restart(c, victim)
                # Kill it again at a random moment: while it receives or installs a snapshot, or takes its own.
                time.sleep(rng.uniform(0.0, 0.8))
                chaos.kill(c, victim)
                chaos.restart(c, victim)
                wait_until(lambda v=victim, b=before: _status(c, v).get("kv_applied", -1) >= b,  # type: ignore[misc]
                           timeout=30, what="the restarted node answers")
                if round_ % 2:  # and the leader, while it snapshots
                    ld = leader_id(c)
                    time.sleep(rng.uniform(0.0, 0.3))
                    chaos.kill(c, ld)
                    chaos.restart(c, ld)
        commit = max(_status(c, n.id).get("commit", 0) for n in c.nodes)
        for n in c.nodes:
            wait_until(lambda i=n.id: _status(c, i).get("kv_applied", 0) >= commit,  # type: ignore[misc]
                       timeout=60, what=f"node {n.id} converges")
            assert _keys_on(c, n.id, keys) == [acked[k] for k in keys], f"node {n.id} differs"
    finally:
        stop_cluster(c)
