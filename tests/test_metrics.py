"""Prometheus metrics of live nodes (``--metrics``), parsed with prometheus_client's own parser, and the shell's
``status --json``."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from clusterutil import leader_id, stop_cluster, wait_until
from prometheus_client.parser import text_string_to_metric_families

from zraft.tools import chaos, launch

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def mcluster(tmp_path: Path) -> Iterator[launch.Cluster]:
    ports = launch.free_ports(6)
    c = launch.start(3, str(tmp_path / "data"), ports=ports[:3], metrics_ports=ports[3:])
    try:
        yield c
    finally:
        stop_cluster(c)


def scrape(c: launch.Cluster, node_id: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the node's /metrics: (name, sorted labels without "node") -> value."""
    with urllib.request.urlopen(f"http://{c.node(node_id).metrics}/metrics", timeout=5) as r:
        assert r.status == 200
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            assert s.labels.get("node") == str(node_id), s
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "node"))
            out[(s.name, labels)] = s.value
    return out


def value(m: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_move_with_writes_and_leader_changes(mcluster: launch.Cluster) -> None:
    c = mcluster
    ld = leader_id(c)
    before = scrape(c, ld)
    assert value(before, "zraft_is_leader") == 1
    assert value(before, "zraft_role", role="leader") == 1 and value(before, "zraft_role", role="follower") == 0
    assert value(before, "zraft_elections_won_total") >= 1
    commit0 = value(before, "zraft_commit_index")
    with c.client() as cl:
        for i in range(20):
            cl.put(f"k{i}", "v")
        assert cl.get("k0") == b"v"
    after = scrape(c, ld)
    assert value(after, "zraft_requests_total", op="put") - value(before, "zraft_requests_total", op="put") >= 20
    assert value(after, "zraft_responses_total", outcome="ok") > value(before, "zraft_responses_total", outcome="ok")
    assert value(after, "zraft_commit_index") >= commit0 + 20
    assert value(after, "zraft_keys") >= 20
    assert value(after, "zraft_request_duration_seconds_count", op="put") >= 20
    assert value(after, "zraft_request_duration_seconds_count", op="get") >= 1
    assert value(after, "zraft_fsync_duration_seconds_count") > value(before, "zraft_fsync_duration_seconds_count")
    followers = [n.id for n in c.nodes if n.id != ld]
    for f in followers:
        assert value(after, "zraft_append_sent_total", peer=str(f)) > 0
        assert value(after, "zraft_peer_last_contact_seconds", peer=str(f)) < 5
    fm = scrape(c, followers[0])
    assert value(fm, "zraft_is_leader") == 0 and value(fm, "zraft_leader_id") == ld
    assert value(fm, "zraft_append_received_total", peer=str(ld)) > 0

    survivors = {f: value(scrape(c, f), "zraft_leader_changes_total") for f in followers}
    chaos.kill(c, ld)

    def new_leader_seen() -> bool:
        return all(value(scrape(c, f), "zraft_leader_changes_total") > n for f, n in survivors.items())

    wait_until(new_leader_seen, timeout=15, what="the survivors to count a leader change")
    new = leader_id(c)
    assert new != ld and value(scrape(c, new), "zraft_is_leader") == 1


def test_status_json_for_scripts(mcluster: launch.Cluster) -> None:
    c = mcluster
    leader_id(c)
    r = subprocess.run([sys.executable, "client_shell.py", "--cluster", c.file, "status", "--json"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [row["endpoint"] for row in rows] == c.addresses
    roles = sorted(row["status"]["role"] for row in rows)
    assert roles == ["follower", "follower", "leader"]
    assert all(row["status"]["node"] == n.id for row, n in zip(rows, c.nodes, strict=True))
    chaos.kill(c, c.nodes[0].id)
    r = subprocess.run([sys.executable, "client_shell.py", "--cluster", c.file, "status", "--json"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    rows = json.loads(r.stdout)
    assert "error" in rows[0] and "status" not in rows[0]
    assert all("status" in row for row in rows[1:])


def test_metrics_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        r = subprocess.run([sys.executable, "-m", "zraft", "node", "--id", "1", "--peers",
                            f"1=127.0.0.1:{launch.free_ports(1)[0]}", "--data-dir", str(tmp_path / "n"),
                            "--metrics", f"127.0.0.1:{port}"], capture_output=True, text=True, cwd=ROOT,
                           timeout=60)
    finally:
        busy.close()
    assert r.returncode == 2
    assert f"cannot serve metrics at 127.0.0.1:{port}" in r.stderr


def test_half_sent_requests_hold_bounded_threads_and_time_out(mcluster: launch.Cluster) -> None:
    """300 connections that each send half a request once made the node start 304 threads. Now at most
    ``MAX_CONNECTIONS`` are served at once, each dropped after ``SILENT_S`` of silence, and scrapes work again."""
    import socket
    import time

    import psutil

    from zraft.server.metrics import MAX_CONNECTIONS, SILENT_S

    node = mcluster.nodes[0]
    host, _, port = node.metrics.rpartition(":")
    proc = psutil.Process(node.pid)
    before = proc.num_threads()
    socks = []
    try:
        for _ in range(300):
            s = socket.create_connection((host, int(port)), timeout=5)
            s.sendall(b"GET /metr")
            socks.append(s)
        end = time.monotonic() + 1.0  # never more threads than the bound while they are accepted
        while time.monotonic() < end:
            assert proc.num_threads() <= before + MAX_CONNECTIONS + 2
        first = socks[0]
        first.settimeout(SILENT_S + 10)
        t0 = time.monotonic()
        assert first.recv(100) == b""  # dropped by the node after its silence, not held forever
        assert time.monotonic() - t0 <= SILENT_S + 5
    finally:
        for s in socks:
            s.close()

    def scraped() -> bool:
        try:
            return bool(scrape(mcluster, node.id))
        except OSError:
            return False

    wait_until(scraped, timeout=SILENT_S + 10, what="a scrape to be served again")
