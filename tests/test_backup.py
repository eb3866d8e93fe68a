"""Backup and restore with real processes: a backup taken while a client writes holds every write acknowledged
before it began; a new cluster restored from it on other ports has those keys and the client sessions (a retried
append is answered, not applied twice) and its own identity; a restored node and the original refuse each other;
a backup with one flipped bit is refused by every tool that reads it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from clusterutil import leader_id, stop_cluster, wait_until

from zraft.client import Client, ZraftError
from zraft.statemachine import backup
from zraft.storage import OsDisk, snapshots
from zraft.tools import chaos, launch
from zraft.transport import codec, requests

ROOT = Path(__file__).resolve().parent.parent


class Writer(threading.Thread):
    """Puts keys w0, w1, ... as fast as one client can, recording when each was acknowledged."""

    def __init__(self, c: launch.Cluster) -> None:
        super().__init__(daemon=True)
        self.c = c
        self.acked: list[tuple[str, float]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.c.client() as cl:
                i = 0
                while not self.stop.is_set():
                    cl.put(f"w{i}", f"value-{i}")
                    self.acked.append((f"w{i}", time.monotonic()))
                    i += 1
        except BaseException as e:  # reported by the test
            self.error = e


def test_backup_during_writes_then_restore_on_other_ports(tmp_path: Path) -> None:
    # Snapshots every 500 entries: the backup meets snapshots being taken and log compaction around it.
    c = launch.start(3, str(tmp_path / "orig"), ports=launch.free_ports(3), node_args=["--snapshot-every", "500"])
    restored = None
    try:
        with c.client() as cl:
            for i in range(300):
                cl.put(f"pre{i}", f"p{i}")
        session = Client(c.addresses, keys=c.client_keys())
        session.append("once", "x")  # sequence 1 of this client's session; its answer is cached there
        sid = session.client_id
        session.close()
        w = Writer(c)
        w.start()
        wait_until(lambda: len(w.acked) >= 200, what="the writer to get going")
        began = time.monotonic()
        with c.client() as cl:
            info = cl.backup(str(tmp_path / "b.zbak"))
        ended = time.monotonic()
        wait_until(lambda: w.acked and w.acked[-1][1] > ended + 0.2, what="writes after the backup")
        w.stop.set()
        w.join(10)
        assert w.error is None, w.error
        before = [k for k, t in w.acked if t < began]
        assert len(before) >= 200
        assert info.keys >= 300 + 1 + len(before)
        assert not [n for n in os.listdir(tmp_path) if n.endswith(".part")]  # no temporary file left behind
        assert backup.inspect(str(tmp_path / "b.zbak"), full=True) == info
        with c.client() as cl:
            assert cl.get("once") == b"x"
    finally:
        stop_cluster(c)

    restored = launch.start(3, str(tmp_path / "copy"), ports=launch.free_ports(3), restore=str(tmp_path / "b.zbak"))
    try:
        assert restored.cluster_id and restored.cluster_id != c.cluster_id
        with restored.client() as cl:
            for i in range(0, 300, 7):
                assert cl.get(f"pre{i}") == f"p{i}".encode()
            for k in before:
                assert cl.get(k) == f"value-{k[1:]}".encode(), k
            st = cl.status(cl.find_leader(5.0) or 0)
            assert st["cluster_id"] == restored.cluster_id
            assert st["keys"] == info.keys
            assert st["sessions"] == info.sessions
        # The same client retrying its append (same id, same sequence number): answered, not applied again.
        with Client(restored.addresses, keys=restored.client_keys(), client_id=sid) as again:
            again.append("once", "x")
            assert again.get("once") == b"x"
            again.append("once", "y")  # its next write is applied as usual
            assert again.get("once") == b"xy"
    finally:
        stop_cluster(restored)


def test_a_restored_node_and_the_original_cluster_refuse_each_other(tmp_path: Path) -> None:
    c = launch.start(3, str(tmp_path / "a"), ports=launch.free_ports(3))
    restored = None
    try:
        with c.client() as cl:
            cl.put("k", "v")
            cl.backup(str(tmp_path / "b.zbak"))
        ld = leader_id(c)
        victim = next(n for n in c.nodes if n.id != ld)
        chaos.kill(c, victim.id)
        # The documented way on separate machines, here with the original's keys and addresses: a restored node
        # where a member of the original was. The identity, not the keys, tells them apart.
        peers = ",".join(f"{n.id}={n.address}" for n in c.nodes)
        log = tmp_path / "restored.log"
        restored = subprocess.Popen(
            [sys.executable, "-m", "zraft", "node", "--id", str(victim.id), "--peers", peers, "--data-dir",
             str(tmp_path / "r"), "--keys", c.keys_dir or "", "--cluster-id", "restored-copy",
             "--restore", str(tmp_path / "b.zbak")],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
        with Client([victim.address], keys=c.client_keys(), attempt_timeout=0.5) as rc:
            def up() -> bool:
                try:
                    return bool(rc.status(0)["cluster_id"] == "restored-copy")
                except ZraftError:
                    return False

            wait_until(up, timeout=20, what="the restored node to answer")
            st0 = rc.status(0)
            with c.client() as cl:
                for i in range(50):
                    cl.put(f"after{i}", "v")
                end = time.monotonic() + 2  # the original's leader keeps sending to that address meanwhile
                while time.monotonic() < end:
                    cl.put("tick", str(end))
                others = [cl.status(c.addresses.index(n.address)) for n in c.nodes if n.id != victim.id]
            st = rc.status(0)
        assert st0["keys"] == 1 and st["keys"] == 1  # it has the backup's state and nothing of the original since
        assert st["commit"] == st0["commit"] and st["last_index"] == st0["last_index"]
        assert st["bad_frames"] > 0
        assert any(o["bad_frames"] > 0 for o in others), others
        text = log.read_text()
        assert "event=restored" in text and "event=other_cluster" in text
    finally:
        if restored is not None:
            restored.send_signal(signal.SIGKILL)
            restored.wait()
        stop_cluster(c)


def _small_backup(tmp_path: Path) -> Path:
    c = launch.start(3, str(tmp_path / "a"), ports=launch.free_ports(3), secure=False)
    try:
        with c.client() as cl:
            for i in range(100):
                cl.put(f"k{i}", "v" * 50)
            info = cl.backup(str(tmp_path / "b.zbak"))
            # Reading past the end, a backup that is not open, a length over the limit: error answers, no crash.
            node = cl.answered_by

            def ask(req: dict[str, object]) -> dict[str, object]:
                rid = 700 + len(req)
                cl.socks[node].send(codec.encode_client({**req, "id": rid}))
                r = cl._wait({rid, 0}, time.monotonic() + 5)  # a request that does not decode is answered as id 0
                assert r is not None
                return r

            at = {"index": info.index, "term": info.term}
            assert ask({"op": "backup"})["ok"] is True  # opens it again (the client closed it when done)
            for req, error in (({**at, "offset": info.size + 1, "length": 10}, codec.Err.BAD_REQUEST),
                               ({**at, "offset": 0, "length": requests.MAX_BACKUP_CHUNK + 1}, codec.Err.BAD_REQUEST),
                               ({"index": info.index + 1, "term": info.term, "offset": 0, "length": 10},
                                codec.Err.BACKUP_GONE)):
                r = ask({"op": "backup_chunk", **req})
                assert r["ok"] is False and r["error"] == error, r
            assert ask({"op": "backup_end", **at})["ok"] is True
            r = ask({"op": "backup_chunk", **at, "offset": 0, "length": 10})
            assert r["ok"] is False and r["error"] == codec.Err.BACKUP_GONE, r
            assert cl.get("k1") == b"v" * 50
    finally:
        stop_cluster(c)
    return tmp_path / "b.zbak"


def test_a_backup_with_one_flipped_bit_is_refused(tmp_path: Path) -> None:
    good = _small_backup(tmp_path)
    data = good.read_bytes()
    f = snapshots.verify(OsDisk(), str(good)).data
    assert isinstance(f, snapshots.SnapshotFile)
    # A bit in the magic, the metadata, the store's header, a value, the length, the checksum.
    for pos in (3, len(snapshots.MAGIC) + 6, f.data_offset + 1, f.data_offset + f.data_len // 2, len(data) - 6,
                len(data) - 1):
        bad = tmp_path / f"bad{pos}.zbak"
        flipped = bytearray(data)
        flipped[pos] ^= 0x10
        bad.write_bytes(bytes(flipped))
        with pytest.raises(backup.BackupError, match="not a usable zraft backup"):
            backup.inspect(str(bad))
    bad = tmp_path / f"bad{f.data_offset + f.data_len // 2}.zbak"
    out = subprocess.run([sys.executable, "-m", "zraft", "backup", str(bad)], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1 and "checksum mismatch" in out.stderr
    port = launch.free_ports(1)[0]
    out = subprocess.run([sys.executable, "launcher.py", "--no-resp", "--restore", str(bad), "-n", "3", "--data-dir",
                          str(tmp_path / "r"), "--base-port", str(port), "--insecure", "--no-web", "--no-metrics"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "checksum mismatch" in out.stderr, out.stderr
    assert not any((tmp_path / "r").glob("node-*")), "nothing is made from a damaged backup"
    out = subprocess.run([sys.executable, "-m", "zraft", "node", "--id", "1", "--peers", f"1=127.0.0.1:{port}",
                          "--data-dir", str(tmp_path / "n"), "--cluster-id", "x1", "--restore", str(bad)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "checksum mismatch" in out.stderr, out.stderr
    # A file that is not a backup at all, and a restore over a data directory that holds a cluster.
    with pytest.raises(backup.BackupError, match="bad magic"):
        backup.inspect(str(ROOT / "README.md"))
    out = subprocess.run([sys.executable, "launcher.py", "--no-resp", "--restore", str(good), "-n", "3", "--data-dir",
                          str(tmp_path / "a"), "--base-port", str(port), "--insecure", "--no-web", "--no-metrics"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "already holds one" in out.stderr, out.stderr
