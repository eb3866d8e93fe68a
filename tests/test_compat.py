"""Data written by an earlier release opens in this one: ``data/release-0.1.tar.gz`` holds a 3-node cluster's
data directories (log segments, snapshots, node.meta, cluster.json) and a backup, made by zraft 0.1 with
``data/make_release_data.py`` (see there what they hold); ``data/release-0.2.tar.gz`` the same made by zraft 0.2,
the last release without revisions, with results kept in a session (store format 4). The cluster is brought back
on new ports and must answer every key, keep its client sessions (a retried append is answered, not applied twice)
and go on taking writes that survive a restart; the backup must restore into a new cluster with the same keys.
Revisions begin once the new release leads: the old keys carry revision 1, new writes the revisions after."""

from __future__ import annotations

import tarfile
from pathlib import Path

from clusterutil import stop_cluster

from zraft.client import Client
from zraft.statemachine import backup
from zraft.tools import launch

DATA = Path(__file__).resolve().parent / "data" / "release-0.1.tar.gz"
DATA_0_2 = Path(__file__).resolve().parent / "data" / "release-0.2.tar.gz"
SESSION = 4242


def _unpack(tmp_path: Path, data: Path = DATA) -> Path:
    with tarfile.open(data) as t:
        t.extractall(tmp_path, filter="data")
    return tmp_path


def _check_keys(cl: Client) -> None:
    for i in range(150):
        assert cl.get(f"k{i}") == f"v{i}".encode()
    for i in range(10):
        assert cl.get(f"gone{i}") is None
    assert cl.get("log") == "".join(f"a{i}" for i in range(30)).encode()
    assert cl.get("session") == b"s"


def test_a_data_directory_of_release_0_1_opens_with_its_keys_and_sessions(tmp_path: Path) -> None:
    d = _unpack(tmp_path) / "cluster"
    c = launch.start(None, str(d), ports=launch.free_ports(3), secure=False)
    try:
        with c.client() as cl:
            _check_keys(cl)
            cl.put("after", "1")
        s = Client(c.addresses, client_id=SESSION)
        s.append("session", "s")  # sequence 1 again: the old session's cached answer, not a second append
        s.close()
        with c.client() as cl:
            assert cl.get("session") == b"s"
        c.stop()
        c.release()
        c = launch.start(None, str(d), ports=launch.free_ports(3), secure=False)
        with c.client() as cl:
            _check_keys(cl)
            assert cl.get("after") == b"1"
    finally:
        stop_cluster(c)


def test_a_backup_of_release_0_1_restores_into_a_new_cluster(tmp_path: Path) -> None:
    src = _unpack(tmp_path) / "backup.zbak"
    info = backup.inspect(str(src), full=True)
    assert info.keys == 150 + 1 + 1
    c = launch.start(3, str(tmp_path / "new"), ports=launch.free_ports(3), secure=False, restore=str(src))
    try:
        with c.client() as cl:
            _check_keys(cl)
    finally:
        stop_cluster(c)


def test_a_data_directory_and_backup_of_release_0_2_open_and_revisions_begin(tmp_path: Path) -> None:
    d = _unpack(tmp_path, DATA_0_2) / "cluster"
    c = launch.start(None, str(d), ports=launch.free_ports(3), secure=False)
    try:
        with c.client() as cl:
            _check_keys(cl)
            assert cl.get("counter") == b"5"
            old = cl.range(prefix="k1", keys_only=True)
            assert old.count == 61 and all((kv.create_revision, kv.mod_revision, kv.version) == (1, 1, 1)
                                           for kv in old.kvs)
            rev = cl.put("after", "1")
            assert rev > 1 and cl.range(prefix="after").kvs[0].mod_revision == rev
        # The session kept the last incr's result: a retry of sequence 5 is answered with what it answered then.
        s = Client(c.addresses, client_id=SESSION + 1)
        r = s._call({"op": "incr", "key": b"counter", "by": 1, "client": SESSION + 1, "seq": 5, "ack": 5}, write=True)
        assert r["value"] == b"5"
        s.close()
        c.stop()
        c.release()
        c = launch.start(None, str(d), ports=launch.free_ports(3), secure=False)
        with c.client() as cl:
            _check_keys(cl)
            assert cl.get("counter") == b"5" and cl.range(prefix="after").kvs[0].mod_revision == rev
    finally:
        stop_cluster(c)
    src = tmp_path / "backup.zbak"
    info = backup.inspect(str(src), full=True)
    assert info.keys == 150 + 1 + 1 + 1
    c = launch.start(3, str(tmp_path / "new"), ports=launch.free_ports(3), secure=False, restore=str(src))
    try:
        with c.client() as cl:
            _check_keys(cl)
            assert cl.get("counter") == b"5" and cl.put("new", "1") > 1
    finally:
        stop_cluster(c)
