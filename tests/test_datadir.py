"""One process per data directory, and a cluster's membership from its own data, never from the command line:
the lock and the stored configuration (zraft/storage/datadir.py), with real node and launcher processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from clusterutil import stop_cluster, wait_until

from zraft.client import Client
from zraft.storage import CorruptionError, datadir
from zraft.tools import chaos, launch

ROOT = Path(__file__).resolve().parent.parent


def run_node(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zraft", "node", *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)


def run_launcher(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(ROOT / "launcher.py"), "--no-resp", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True)


def finish(p: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    """Wait for a launcher that is expected to exit by itself (kill its group if it does not)."""
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGTERM)
        out, err = p.communicate(timeout=30)
        raise AssertionError(f"launcher did not exit: {out}\n{err}") from None
    return p.returncode, out, err


def peers_arg(c: launch.Cluster) -> str:
    return ",".join(f"{n.id}={n.address}" for n in c.nodes)


# ---------------------------------------------------------------------------------------------- the lock


def test_second_node_on_a_locked_directory_is_refused_and_the_first_is_untouched(cluster: launch.Cluster) -> None:
    spec = cluster.node(1)
    with cluster.client() as cl:
        cl.put(b"canary", b"1")
        before = cl.status(0)
    # Same directory, another port: without the lock this process would append to the same segments.
    other = launch.free_ports(1)[0]
    r = run_node("--id", "1", "--peers", f"1=127.0.0.1:{other},2={cluster.node(2).address},"
                 f"3={cluster.node(3).address}", "--data-dir", spec.data_dir)
    assert r.returncode == 2
    assert f"data directory {spec.data_dir} is in use by process {spec.pid}" in r.stderr
    assert launch.alive(spec.pid)
    with cluster.client() as cl:
        after = cl.status(0)
        assert cl.get(b"canary") == b"1"
    assert after["node"] == 1 and after["last_index"] >= before["last_index"]


def test_lock_is_released_by_kill_9_and_a_restart_succeeds_at_once(cluster: launch.Cluster) -> None:
    with cluster.client() as cl:
        cl.put(b"k", b"v")
    spec = cluster.node(2)
    old = spec.pid
    chaos.kill(cluster, 2)  # SIGKILL: no cleanup code runs in the node
    assert datadir.holder(spec.data_dir) is None
    new = chaos.restart(cluster, 2)
    assert new != old
    with cluster.client(attempt_timeout=0.3) as cl:
        wait_until(lambda: _answers(cl, 1), what="node 2 answering after its restart")
        assert cl.status(1)["node"] == 2
    assert datadir.holder(spec.data_dir) == new


def _answers(cl: Client, index: int) -> bool:
    from zraft.client import Unavailable

    try:
        cl.status(index)
        return True
    except Unavailable:
        return False


def test_second_launcher_on_a_running_cluster_is_refused_and_cluster_json_unchanged(
        cluster: launch.Cluster) -> None:
    before = Path(cluster.file).read_bytes()
    code, _, err = finish(run_launcher("-n", "3", "--data-dir", cluster.data_dir, "--base-port",
                                       str(launch.free_ports(1)[0])))
    assert code == 1
    assert f"the cluster in {cluster.data_dir} is in use by launcher pid {os.getpid()}" in err
    assert Path(cluster.file).read_bytes() == before
    # --fresh must not delete a running cluster's data either.
    code, _, err = finish(run_launcher("-n", "3", "--data-dir", cluster.data_dir, "--fresh"))
    assert code == 1 and "in use by launcher" in err
    assert Path(cluster.file).read_bytes() == before
    for n in cluster.nodes:
        assert launch.alive(n.pid)
    with cluster.client() as cl:
        cl.put(b"still", b"serving")


def test_launcher_refuses_a_directory_whose_nodes_outlived_their_launcher(cluster: launch.Cluster) -> None:
    cluster.release()  # as if the first launcher had been killed with kill -9: its nodes keep running
    before = Path(cluster.file).read_bytes()
    with pytest.raises(launch.LaunchError, match=r"is running \(node-1 pid \d+, node-2 pid \d+, node-3 pid"):
        launch.start(3, cluster.data_dir, ports=launch.free_ports(3))
    assert Path(cluster.file).read_bytes() == before
    with cluster.client() as cl:
        cl.put(b"still", b"serving")


# ------------------------------------------------------------------------------------ the configuration


def test_more_nodes_on_an_existing_directory_are_refused_and_the_cluster_starts_with_its_own_size(
        tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    c = launch.start(3, data, ports=launch.free_ports(3))
    try:
        with c.client() as cl:
            cl.put(b"acknowledged", b"before")
    finally:
        stop_cluster(c)
    before = Path(c.file).read_bytes()
    code, _, err = finish(run_launcher("-n", "5", "--data-dir", data, "--base-port", str(launch.free_ports(1)[0])))
    assert code == 1
    assert "this data directory" in err and "holds a 3-node cluster; start it with -n 3" in err
    assert Path(c.file).read_bytes() == before
    assert sorted(os.listdir(data)) == sorted(["cluster.json", "keys", "launcher.lock", "node-1", "node-2", "node-3",
                                               "node-1.log", "node-2.log", "node-3.log"])
    c = launch.start(None, data, ports=launch.free_ports(3))  # no -n: the stored size
    try:
        assert len(c.nodes) == 3
        with c.client() as cl:
            assert cl.get(b"acknowledged") == b"before"
    finally:
        stop_cluster(c)
    c = launch.start(3, data, ports=launch.free_ports(3))
    try:
        with c.client() as cl:
            assert cl.get(b"acknowledged") == b"before"
    finally:
        stop_cluster(c)


def test_node_whose_peers_disagree_with_its_stored_configuration_refuses_to_start(tmp_path: Path) -> None:
    c = launch.start(3, str(tmp_path / "data"), ports=launch.free_ports(3))
    try:
        with c.client() as cl:
            cl.put(b"k", b"v")
    finally:
        stop_cluster(c)
    spec = c.node(1)
    p4, p5 = launch.free_ports(2)
    five = f"{peers_arg(c)},4=127.0.0.1:{p4},5=127.0.0.1:{p5}"
    r = run_node("--id", "1", "--peers", five, "--data-dir", spec.data_dir)
    assert r.returncode == 2
    assert "holds a 3-node cluster with voters [1, 2, 3], but the peer list names [1, 2, 3, 4, 5]" in r.stderr
    two = ",".join(f"{n.id}={n.address}" for n in c.nodes[:2])
    r = run_node("--id", "1", "--peers", two, "--data-dir", spec.data_dir)
    assert r.returncode == 2 and "but the peer list names [1, 2]" in r.stderr
    r = run_node("--id", "2", "--peers", peers_arg(c), "--data-dir", spec.data_dir)
    assert r.returncode == 2 and "belongs to node 1, not node 2" in r.stderr
    r = run_node("--id", "1", "--peers", peers_arg(c), "--data-dir", spec.data_dir, "--cluster-id", "another")
    assert r.returncode == 2 and f"belongs to cluster {c.cluster_id}, not another" in r.stderr
    assert c.cluster_id
    assert datadir.read_meta(spec.data_dir) == datadir.Meta(1, (1, 2, 3), c.cluster_id)  # nothing was rewritten
    # Same members at other addresses is the same cluster: the whole cluster comes back with its data.
    c = launch.start(3, c.data_dir, ports=launch.free_ports(3))
    try:
        with c.client() as cl:
            assert cl.get(b"k") == b"v"
    finally:
        stop_cluster(c)


# ------------------------------------------------------------------------------------------ in process


def test_lock_in_process(tmp_path: Path) -> None:
    d = str(tmp_path / "n")
    fd = datadir.lock(d)
    try:
        assert datadir.holder(d) == os.getpid()
        with pytest.raises(datadir.DataDirLocked, match=f"in use by process {os.getpid()}"):
            datadir.lock(d)
        assert os.stat(os.path.join(d, datadir.LOCK_NAME)).st_mode & 0o777 == 0o600
        assert os.stat(d).st_mode & 0o777 == 0o700
    finally:
        os.close(fd)
    assert datadir.holder(d) is None
    os.close(datadir.lock(d))


def test_stored_configuration_round_trip_force_and_damage(tmp_path: Path) -> None:
    d = str(tmp_path / "n")
    meta, warning = datadir.check_config(d, 2, (3, 1, 2), has_state=False)
    assert meta == datadir.Meta(2, (1, 2, 3)) and warning is None
    assert datadir.check_config(d, 2, (1, 2, 3), has_state=True) == (meta, None)
    with pytest.raises(datadir.ConfigMismatch, match="--force-peers"):
        datadir.check_config(d, 2, (1, 2), has_state=True)
    meta, warning = datadir.check_config(d, 2, (1, 2), has_state=True, force=True)
    assert meta == datadir.Meta(2, (1, 2)) and warning and "--force-peers" in warning
    assert datadir.read_meta(d) == meta
    path = os.path.join(d, datadir.META_NAME)
    assert os.stat(path).st_mode & 0o777 == 0o600
    good = Path(path).read_bytes()
    for i in range(len(good)):  # any one flipped byte is damage, named with the file
        Path(path).write_bytes(good[:i] + bytes([good[i] ^ 0x40]) + good[i + 1:])
        with pytest.raises(CorruptionError, match=path):
            datadir.read_meta(d)
    Path(path).write_bytes(good[:-3])
    with pytest.raises(CorruptionError):
        datadir.read_meta(d)
    Path(path).write_bytes(good)
    assert datadir.read_meta(d) == meta
    # A directory written before node.meta existed: its configuration is recorded, with a warning.
    d2 = str(tmp_path / "old")
    os.makedirs(os.path.join(d2, "log"))
    meta, warning = datadir.check_config(d2, 1, (1, 2, 3), has_state=True)
    assert warning and "older zraft" in warning and datadir.read_meta(d2) == meta


def test_cluster_identity_is_recorded_kept_and_a_newer_format_refused(tmp_path: Path) -> None:
    import msgpack

    from zraft.storage import records

    d = str(tmp_path / "n")
    meta, _ = datadir.check_config(d, 1, (1, 2, 3), has_state=False, cluster="abc")
    assert meta == datadir.Meta(1, (1, 2, 3), "abc") and datadir.read_meta(d) == meta
    assert datadir.check_config(d, 1, (1, 2, 3), has_state=True)[0].cluster == "abc"  # none named: the stored one
    with pytest.raises(datadir.ConfigMismatch, match="belongs to cluster abc, not xyz"):
        datadir.check_config(d, 1, (1, 2, 3), has_state=True, cluster="xyz")
    old = str(tmp_path / "old")  # a directory recorded before identities takes the one it is given
    datadir.check_config(old, 1, (1, 2, 3), has_state=False)
    assert datadir.read_meta(old) == datadir.Meta(1, (1, 2, 3))
    assert datadir.check_config(old, 1, (1, 2, 3), has_state=True, cluster="abc")[0].cluster == "abc"
    assert datadir.read_meta(old) == datadir.Meta(1, (1, 2, 3), "abc")
    path = os.path.join(d, datadir.META_NAME)
    Path(path).write_bytes(datadir.META_MAGIC + records.frame(msgpack.packb([3, 1, [1, 2, 3], "abc", "more"])))
    with pytest.raises(CorruptionError, match="format 3 is newer than this zraft reads"):
        datadir.read_meta(d)
