"""What must be durable before a node says it (Raft, Figure 2: "Updated on stable storage before responding to RPCs"),
and what must never move backwards on disk, checked on the production replica with the simulator's fault disk: at
the moment a message leaves, a crash must not be able to take back what it promises. Named after bugs that survived
the suite and 2,800 simulator seeds (issue 32): a vote sent before it was durable (after a crash the node voted
again in the same term: two leaders), and a local snapshot saved after a newer one was installed (the snapshot
marker moved backwards).
"""

from __future__ import annotations

import copy
import random
from typing import Any

from zraft.core import ClusterConfig, Message, MsgType, Options
from zraft.server.replica import Replica
from zraft.server.settings import Settings
from zraft.statemachine import kv
from zraft.storage import Storage
from zraft.storage.faultdisk import FaultDisk
from zraft.transport import codec


class CrashAtSend:
    """A transport that, as each message leaves, crashes a copy of the node's disk (everything not yet durable is
    lost) and records what a node restarted from that copy would remember."""

    def __init__(self, disk: FaultDisk, path: str) -> None:
        self.disk = disk
        self.path = path
        self.sent: list[tuple[Message, Any]] = []

    def send(self, m: Message) -> None:
        after = copy.deepcopy(self.disk)
        after.on_sync = None
        after.crash("lose")
        self.sent.append((m, Storage(self.path, disk=after, background_prealloc=False).recovered))

    def send_chunk(self, peer: int, c: codec.SnapChunk) -> bool:
        return True

    def send_ack(self, peer: int, a: codec.SnapAck) -> None:
        pass

    def answer(self, client: bytes, replies: list[dict[str, Any]], batch: bool) -> None:
        pass


def _replica(disk: FaultDisk, transport: CrashAtSend) -> Replica:
    storage = Storage(transport.path, disk=disk, background_prealloc=False)
    rep = Replica(2, ClusterConfig((1, 2, 3)), storage, transport, lambda: 0.0, random.Random(2),
                  Options(election_ticks=10, heartbeat_ticks=1), Settings(), machine=kv.KVStore)
    rep.start()
    return rep


def test_a_vote_is_durable_before_it_is_sent() -> None:
    disk = FaultDisk(7)
    t = CrashAtSend(disk, "/node-2")
    rep = _replica(disk, t)
    rep.receive("raft", Message(MsgType.VOTE, 1, 2, 5), b"node-1")
    rep.end_input()
    rep.process()
    votes = [(m, rec) for m, rec in t.sent if m.type == MsgType.VOTE_RESP and not m.reject]
    assert [m.dst for m, _ in votes] == [1] and votes[0][0].term == 5
    hs = votes[0][1].hard_state
    assert hs is not None and (hs.term, hs.vote) == (5, 1), f"a crash as the vote left would forget it: {hs}"
    # And indeed: restarted from the disk as it is now, it refuses a second candidate in that term.
    disk.crash("lose")
    t2 = CrashAtSend(disk, "/node-2")
    rep2 = _replica(disk, t2)
    rep2.receive("raft", Message(MsgType.VOTE, 3, 2, 5), b"node-3")
    rep2.end_input()
    rep2.process()
    assert [m.reject for m, _ in t2.sent if m.type == MsgType.VOTE_RESP] == [True]


def test_an_append_is_durable_before_it_is_acknowledged() -> None:
    """The follower's acknowledgement lets the leader count it toward commit: the entries must survive a crash."""
    disk = FaultDisk(8)
    t = CrashAtSend(disk, "/node-2")
    rep = _replica(disk, t)
    from zraft.core import Entry, EntryKind

    entries = [Entry(1, 5, EntryKind.NOOP, b""), Entry(2, 5, EntryKind.NORMAL, b"x")]
    rep.receive("raft", Message(MsgType.APPEND, 1, 2, 5, 0, 0, entries, 0), b"node-1")
    rep.end_input()
    rep.process()
    acks = [(m, rec) for m, rec in t.sent if m.type == MsgType.APPEND_RESP and not m.reject]
    assert [m.index for m, _ in acks] == [2]
    rec = acks[0][1]  # what a crash as the acknowledgement left would keep
    assert [e.index for e in rec.entries] == [1, 2] and rec.hard_state is not None and rec.hard_state.term == 5


def test_a_local_snapshot_that_finishes_after_a_newer_one_was_installed_is_dropped(tmp_path: Any) -> None:
    """Issue 32: a node starts its own snapshot (at index 20); before it is written, the leader's snapshot at index
    40 is installed; then the local one finishes. Saving it would move the snapshot marker backwards: a restart
    would recover the older snapshot before newer entries. It must be dropped (a bug that did this survived)."""
    from zraft.core import Entry, EntryKind, Snapshot
    from zraft.statemachine import kv
    from zraft.storage import OsDisk
    from zraft.storage import snapshots as snapfiles

    disk = FaultDisk(9)
    t = CrashAtSend(disk, "/node-2")
    storage = Storage(t.path, disk=disk, background_prealloc=False)
    cfg = ClusterConfig((1, 2, 3))
    rep = Replica(2, cfg, storage, t, lambda: 0.0, random.Random(2), Options(election_ticks=10, heartbeat_ticks=1),
                  Settings(snapshot_every=5, threads=False, snapshot_pieces=1), machine=kv.KVStore)
    rep.start()
    ents = [Entry(i, 1, EntryKind.NORMAL, kv.encode_command(kv.PUT, 9, i, 1, b"k%d" % i, b"v")) for i in range(1, 21)]
    rep.receive("raft", Message(MsgType.APPEND, 1, 2, 1, 0, 0, ents, 20), b"node-1")
    for _ in range(3):
        rep.end_input()
        rep.process()
    assert rep.machine.applied == 20 and rep.snap_job is not None and not rep.snap_job.done()  # under way, not written
    leader = kv.KVStore()
    for i in range(1, 41):
        leader.apply(i, kv.encode_command(kv.PUT, 9, i, 1, b"k%d" % i, b"w"))
    written = snapfiles.write(OsDisk(), str(tmp_path), Snapshot(40, 1, cfg, leader.snapshot()))
    assert isinstance(written.data, snapfiles.SnapshotFile)
    with open(written.data.path, "rb") as f:
        file = f.read()
    rep.receive("snap_chunk", codec.SnapChunk(1, 2, 1, 40, 1, len(file), 0, file), b"node-1")
    for _ in range(3):
        rep.end_input()
        rep.process()
    assert rep.raft.snapshot_index == 40 and rep.machine.applied == 40
    for _ in range(10_000):  # the local job goes on and finishes
        if rep.snap_job is None:
            break
        rep.work()
        rep.process()
    assert rep.snap_job is None and rep.raft.snapshot_index == 40
    after = copy.deepcopy(disk)
    after.on_sync = None
    after.crash("lose")
    rec = Storage(t.path, disk=after, background_prealloc=False).recovered
    assert rec.snapshot is not None and rec.snapshot.index == 40, f"the marker moved back to {rec.snapshot}"
