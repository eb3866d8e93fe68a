"""Chunked snapshot transfer between two nodes' storage over a link that loses, duplicates and reorders
messages: the follower ends with the leader's exact file, and the leader never has more than its window of
chunks unacknowledged (flow control) nor resends more than the losses call for."""

from __future__ import annotations

import random

import pytest

from zraft.core import ClusterConfig, HardState, Snapshot
from zraft.server import snapshotting
from zraft.server.snapshotting import CHUNK_BYTES, WINDOW_CHUNKS, Receiver, Sender
from zraft.storage import Storage
from zraft.storage.faultdisk import FaultDisk
from zraft.storage.snapshots import SnapshotFile, loaded
from zraft.transport import codec

CFG = ClusterConfig((1, 2, 3))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.mark.parametrize("seed", range(16))
def test_transfer_over_a_bad_link(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    clock = Clock()
    leader = Storage("/l", disk=FaultDisk(), segment_bytes=1 << 16)
    leader.save(HardState(2, 1, 1), [])
    data = rng.randbytes(rng.randrange(1, 6 * CHUNK_BYTES))
    leader.save_snapshot(Snapshot(100, 2, CFG, data))
    snap = Storage("/l", disk=leader.disk, segment_bytes=1 << 16).recovered.snapshot
    assert snap is not None and isinstance(snap.data, SnapshotFile)
    follower = Storage("/f", disk=FaultDisk(), segment_bytes=1 << 16)
    loss, dup = rng.choice([0.0, 0.1, 0.3]), rng.choice([0.0, 0.2])
    fifo = seed % 2 == 0  # in order, as over one TCP connection; else in any order
    wire: list[bytes] = []  # both directions
    chunks_sent = 0

    def send_chunk(peer: int, c: codec.SnapChunk) -> bool:
        nonlocal chunks_sent
        chunks_sent += 1
        if rng.random() >= loss:
            wire.extend([codec.encode_chunk(c)] * (2 if rng.random() < dup else 1))
        return True

    def send_ack(peer: int, a: codec.SnapAck) -> None:
        if rng.random() >= loss:
            wire.append(codec.encode_ack(a))

    tx = Sender(1, send_chunk, clock.monotonic)
    rx = Receiver(2, follower, send_ack)
    tx.start(2, 5, snap)
    installed = None
    outcome = None
    for _ in range(100_000):
        t = tx.transfers.get(2)
        if t is not None:
            assert t.sent - t.acked <= WINDOW_CHUNKS * CHUNK_BYTES  # flow control
        if outcome is not None and not wire:
            break
        if not wire:
            clock.now += 0.5  # silence: time passes and the leader resends
            assert not tx.tick(), "the transfer was abandoned"
            continue
        kind, m = codec.decode(wire.pop(0 if fifo else rng.randrange(len(wire))))
        if kind == "snap_chunk":
            got = rx.on_chunk(m)
            if got is not None:
                installed = got
        else:
            assert kind == "snap_ack"
            outcome = tx.on_ack(m) or outcome
    assert installed is not None and outcome == "done"
    assert loaded(installed) == Snapshot(100, 2, CFG, data)
    assert follower.disk.listdir("/f/snap") == ["0000000000000064-0000000000000002.snap"]
    n_chunks = -(-snap.data.size // CHUNK_BYTES)
    if loss == 0 and fifo:
        assert chunks_sent == n_chunks  # nothing lost: every chunk sent exactly once, duplicates or not
    assert chunks_sent <= n_chunks * 20


def test_a_silent_follower_is_given_up_and_the_core_told(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    leader = Storage("/l", disk=FaultDisk(), segment_bytes=1 << 16)
    leader.save(HardState(2, 1, 1), [])
    leader.save_snapshot(Snapshot(100, 2, CFG, b"x" * (3 * CHUNK_BYTES)))
    snap = Storage("/l", disk=leader.disk, segment_bytes=1 << 16).recovered.snapshot
    assert snap is not None
    sent: list[int] = []
    tx = Sender(1, lambda peer, c: sent.append(c.offset) is None, clock.monotonic)
    tx.start(2, 5, snap)
    assert sent == [0, CHUNK_BYTES, 2 * CHUNK_BYTES, 3 * CHUNK_BYTES]  # the window, then wait
    clock.now += snapshotting.RESEND_AFTER_S
    assert tx.tick() == [] and sent[4:] == [0, CHUNK_BYTES, 2 * CHUNK_BYTES, 3 * CHUNK_BYTES]
    clock.now += snapshotting.GIVE_UP_AFTER_S
    assert tx.tick() == [2] and 2 not in tx.transfers
