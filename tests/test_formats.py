"""On-disk format versions: every file zraft writes names its format, and a file in a newer format than this
zraft reads is refused with the file and both versions in the message -- never misread, never rewritten.
(node.meta's and the snapshot file's own cases are in test_datadir.py and test_storage.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from zraft.core import ClusterConfig, Entry, HardState
from zraft.statemachine import kv
from zraft.storage import CorruptionError, Storage, snapshots
from zraft.storage import records as rec
from zraft.tools import launch

ROOT = Path(__file__).resolve().parent.parent
CFG = ClusterConfig((1,))


def test_a_log_segment_of_a_newer_format_is_refused(tmp_path: Path) -> None:
    d = str(tmp_path / "n")
    with Storage(d) as s:
        s.save(HardState(1, 1, 3), [Entry(i, 1, 0, b"x") for i in range(1, 4)])
    seg = next((tmp_path / "n" / "log").glob("*.seg"))
    buf = seg.read_bytes()
    seq = int(seg.stem, 16)
    old = rec.encode([rec.HEADER, rec.VERSION, seq])
    assert buf.startswith(old)
    seg.write_bytes(rec.encode([rec.HEADER, rec.VERSION + 1, seq]) + buf[len(old):])
    with pytest.raises(CorruptionError, match=f"log segment format {rec.VERSION + 1} is newer than this zraft reads "
                       f"\\({rec.VERSION}\\)") as e:
        Storage(d)
    assert e.value.path == str(seg) and "run the zraft version that wrote it" in str(e.value)


def test_a_store_of_a_newer_format_stops_the_node_with_the_file_named(tmp_path: Path) -> None:
    d = tmp_path / "n"
    with Storage(str(d)) as s:
        w = s.snapshot_writer(5, 1, CFG)
        w.write(msgpack.packb([99, 5, 0, 0]))
        s.save(HardState(1, 0, 5), [], w.commit())
    out = subprocess.run([sys.executable, "-m", "zraft", "node", "--id", "1", "--peers",
                          f"1=127.0.0.1:{launch.free_ports(1)[0]}", "--data-dir", str(d)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 3, out.stderr
    assert f"{d}/snap/{snapshots.file_name(5, 1)}" in out.stderr
    assert (f"state machine snapshot format 99 is not one this version reads (1 to {kv.SNAPSHOT_FORMAT}): a newer "
            "zraft wrote it") in out.stderr


def test_a_cluster_file_of_a_newer_format_is_refused(tmp_path: Path) -> None:
    doc = {"version": launch.CLUSTER_FILE_VERSION + 1, "nodes": [], "keys": None, "cluster_id": ""}
    (tmp_path / launch.CLUSTER_FILE).write_text(json.dumps(doc))
    with pytest.raises(launch.LaunchError, match=f"has format version {launch.CLUSTER_FILE_VERSION + 1}; this zraft "
                       f"reads {launch.CLUSTER_FILE_VERSION}"):
        launch.load(str(tmp_path))


def test_error_codes_go_on_the_wire_as_the_plain_strings_of_the_protocol() -> None:
    """``Err`` is a StrEnum: an answer carrying one is byte for byte the answer carrying its string
    (docs/PROTOCOL.md's codes), one and batched, and a decoded answer's code compares equal to the member."""
    from zraft.transport import codec

    for e in codec.Err:
        answer = {"id": 7, "ok": False, "error": e, "message": "m"}
        plain = {"id": 7, "ok": False, "error": str.__str__(e), "message": "m"}
        assert type(plain["error"]) is str
        assert codec.encode_client(answer) == codec.encode_client(plain)
        assert codec.encode_client_batch([answer, answer]) == codec.encode_client_batch([plain, plain])
        assert codec.decode_replies(codec.encode_client_batch([answer]))[0]["error"] == e
    assert codec.Err.BUSY == "busy" and codec.Err.NOT_LEADER == "not_leader"
