"""The state machine seam (``zraft.statemachine.machine``): the replica drives any ``StateMachine``, not only the
key-value store. A journal that is no key-value store -- it keeps the keys of the puts it applied, in order, and
answers each with its position -- runs under a real replica on real storage: its commands are what it made of the
requests, its answers are what the clients get, a refusal it makes is the client's error, reads go through its
``get``, its snapshot is written through the replica's snapshot job and restored from disk after a restart."""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import msgpack

from zraft.core import ClusterConfig, Options, Role
from zraft.server.replica import Replica
from zraft.server.settings import Settings
from zraft.statemachine.kv import KVStore
from zraft.statemachine.leases import Leases
from zraft.statemachine.machine import StateMachine
from zraft.storage import Storage
from zraft.transport import codec
from zraft.transport.requests import Delete, Get, Put, Range, Write


class JournalImage:
    def __init__(self, j: Journal) -> None:
        self.applied = j.applied
        self.key_count = len(j.keys)
        self._keys = list(j.keys)

    def chunks(self) -> Iterator[bytes]:
        yield msgpack.packb([self.applied, self._keys])

    def leftovers(self, small: int) -> list[Any]:
        return []


class Journal:
    def __init__(self) -> None:
        self.applied = 0
        self.revision = self.rev = 0  # a journal has no revisions
        self.leases = Leases()  # and no leases: never granted one, so the leader never expires one
        self.events: list[Any] | None = None  # and no changes to watch
        self.event_sink: list[Any] | None = None
        self.watching = False
        self.watch_start = 1
        self.keys: list[bytes] = []
        self.snapshots = 0
        self.restored_at = 0

    def command(self, req: Write) -> bytes | tuple[str, str]:
        match req:
            case Put(client=client, seq=seq, key=key):
                return msgpack.packb([client, seq, key])
        return "not_journaled", f"the journal takes puts, not {type(req).__name__}"

    def apply(self, index: int, data: bytes) -> tuple[int, int, int]:
        assert index == self.applied + 1
        self.applied = index
        client, seq, key = msgpack.unpackb(data)
        self.keys.append(key)
        return client, seq, 0

    def apply_noop(self, index: int) -> None:
        assert index == self.applied + 1
        self.applied = index

    def answer(self, req: Write, status: int) -> dict[str, Any] | None:
        return {"ok": True, "position": len(self.keys)}

    def get(self, key: bytes) -> bytes | None:
        return b"%d" % self.keys.count(key) if key in self.keys else None

    def query(self, req: Range) -> dict[str, Any]:
        return {"ok": False, "error": "not_journaled", "message": "a journal has no ranges"}

    def leader_commands(self) -> list[bytes]:
        return []

    def expire_command(self, lease_ids: list[int]) -> bytes:
        raise AssertionError("a journal has no leases to expire")

    def watch_command(self) -> bytes:
        raise AssertionError("a journal is not watched")

    def counts(self) -> tuple[int, int]:
        return len(self.keys), 0

    def begin_snapshot(self) -> JournalImage:
        self.snapshots += 1
        return JournalImage(self)

    def end_snapshot(self) -> None:
        pass

    @classmethod
    def restore_chunks(cls, chunks: Iterable[bytes]) -> Journal:
        j = cls()
        j.applied, j.keys = msgpack.unpackb(b"".join(chunks))
        j.restored_at = j.applied
        return j


class Answers:
    def __init__(self) -> None:
        self.got: list[dict[str, Any]] = []

    def send(self, m: Any) -> None:
        raise AssertionError("a single node sends nothing")

    def send_chunk(self, peer: int, c: codec.SnapChunk) -> bool:
        return True

    def send_ack(self, peer: int, a: codec.SnapAck) -> None:
        pass

    def answer(self, client: bytes, replies: list[dict[str, Any]], batch: bool) -> None:
        self.got += replies


def _leader(path: Path, answers: Answers) -> Replica[Journal]:
    rep = Replica(1, ClusterConfig((1,)), Storage(str(path), background_prealloc=False), answers, lambda: 0.0,
                  random.Random(1), Options(election_ticks=10, heartbeat_ticks=1),
                  Settings(snapshot_every=10, threads=False), machine=Journal)
    rep.start()
    for _ in range(100):
        if rep.raft.role == Role.LEADER:
            break
        rep.tick()
        rep.process()
    assert rep.raft.role == Role.LEADER
    return rep


def _put(seq: int, key: bytes) -> Put:
    return Put(seq, 7, seq, seq, key, b"-")


def _pass(rep: Replica[Journal]) -> None:
    rep.end_input()
    for _ in range(20):  # the snapshot job (no threads here) is stepped by work()
        rep.work()
        rep.process()


def test_the_replica_drives_a_state_machine_that_is_not_the_key_value_store(tmp_path: Path) -> None:
    answers = Answers()
    rep = _leader(tmp_path / "n1", answers)
    for seq, key in enumerate([b"a", b"b", b"a"], 1):
        rep.receive("client", _put(seq, key), b"c")
    rep.receive("client", Delete(4, 7, 4, 4, b"x"), b"c")
    _pass(rep)
    assert [(r["id"], r.get("position")) for r in answers.got if r["ok"]] == [(1, 1), (2, 2), (3, 3)]
    assert [(r["id"], r["error"]) for r in answers.got if not r["ok"]] == [(4, "not_journaled")]
    answers.got.clear()
    rep.receive("client", Get(5, b"a"), b"c")
    _pass(rep)
    assert answers.got == [{"id": 5, "ok": True, "value": b"2", "found": True, "rev": 0}]  # (no revisions)
    assert rep.status()["keys"] == 3


def test_its_snapshot_is_taken_and_restored_through_the_seam(tmp_path: Path) -> None:
    answers = Answers()
    rep = _leader(tmp_path / "n1", answers)
    for seq in range(1, 31):
        rep.receive("client", _put(seq, b"k%d" % seq), b"c")
        _pass(rep)
    assert rep.machine.snapshots >= 2 and rep.raft.snapshot_index >= 20
    keys = list(rep.machine.keys)
    rep.close()
    again = _leader(tmp_path / "n1", Answers())
    assert again.machine.restored_at == again.raft.snapshot_index >= 20  # from its snapshot, then the log replayed
    assert again.machine.keys == keys and again.machine.applied == rep.machine.applied + 1  # + the new term's no-op


def test_the_key_value_store_is_a_state_machine() -> None:
    store: StateMachine = KVStore()  # (statically: mypy --strict, where the node makes its replica)
    put = Put(1, 3, 1, 1, b"k", b"v")
    cmd = store.command(put)
    assert isinstance(cmd, bytes)
    assert store.apply(1, cmd) == (3, 1, 0) and store.answer(put, 0) is None
    assert store.get(b"k") == b"v" and store.counts() == (1, 1)
    assert store.command(Put(2, 3, 2, 1, b"k" * 2000, b"")) == \
        ("too_large", "key is 2000 bytes; the limit is 1024")
