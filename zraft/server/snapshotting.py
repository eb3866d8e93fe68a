"""A node's snapshot work outside the Raft core: taking snapshots without stalling the event loop, and moving
snapshot files between nodes in chunks with flow control.

Taking a snapshot (``SnapshotJob``): the event loop takes an image of the KV store (its key count and a
list of its sessions; the store then saves old values of keys and sessions it changes, see
``zraft.statemachine.kvsnapshot.SnapshotImage``),
serializes it a few milliseconds per pass (listing one of the store's shards at a time) into the snapshot file,
and a thread fsyncs the file. The loop finds the job finished on a later pass and only then records the snapshot
and compacts the log.

Sending one (``Outgoing``): the core asks for a snapshot to be sent with an ordinary SNAPSHOT message; the
node instead streams the snapshot *file* to the follower in chunks of ``CHUNK_BYTES``, at most ``WINDOW_CHUNKS``
unacknowledged at a time, each read from disk when it is sent -- so a slow follower costs the leader a few
MiB of socket buffers, never a copy of the snapshot per retry. The follower acknowledges every chunk with the
number of bytes it holds in order; a chunk out of order is answered with a gap notice and the leader sends
again from there (go-back-N); silence for ``RESEND_AFTER_S`` makes the leader resend from the last
acknowledged byte, and silence for ``GIVE_UP_AFTER_S`` abandons the transfer (the core probes and tries again).

Receiving one (``Incoming``): chunks are appended to ``<name>.part`` in the snapshot directory; when the whole
file is there it is fsynced, verified (checksum, metadata) and renamed to its real name, and only then handed
to the core as a SNAPSHOT message. The core decides whether to install it; the node then records it in the log
and rebuilds the KV store from it. A crash at any point leaves either the old state or the new snapshot.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from zraft.core import Snapshot
from zraft.statemachine.machine import StateMachine
from zraft.storage import CorruptionError, Storage
from zraft.storage.snapshots import SnapshotFile, SnapshotReceiver
from zraft.transport.codec import ACK_DONE, ACK_ERROR, ACK_GAP, ACK_OK, SnapAck, SnapChunk

log = logging.getLogger("zraft.node")

CHUNK_BYTES = 1 << 20
WINDOW_CHUNKS = 4
RESEND_AFTER_S = 1.0
GIVE_UP_AFTER_S = 10.0
MAX_SNAPSHOT_BYTES = 16 << 30
"""A follower refuses a snapshot file announced larger than this (``--max-snapshot-bytes``)..."""
DISK_RESERVE_BYTES = 256 << 20
"""... or larger than the free space on its disk less this reserve (its log must still be writable)."""
STEP_BUDGET_S = 0.003
"""Longest stretch of snapshot serialization in one loop pass."""
FLUSH_BYTES = 4 << 20
"""A snapshot file being written is fsynced (in a thread) every time this much more has been written."""


class SnapshotJob:
    """One snapshot being taken. The event loop calls ``step()`` on each pass while ``busy()``: it serializes
    the image for at most ``budget_s`` and writes the bytes to the snapshot file (page cache, no fsync). Once
    everything is written, a thread makes the file durable (fsync, rename) -- it runs no Python code meanwhile,
    and it already fsynced every ``FLUSH_BYTES`` along the way so that the log's fsyncs, which share the file
    system's journal, never wait for the whole file --
    so it does not compete with the loop for the GIL, as a thread serializing the store would (measured: such a
    thread stretched the loop's passes to 100-200 ms, each GIL hand-off costing up to the 5 ms switch interval).
    """

    def __init__(self, storage: Storage, store: StateMachine, base: Snapshot, budget_s: float | None = STEP_BUDGET_S,
                 threads: bool = True, max_pieces: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``threads=False`` (the simulator): the file is fsynced by the loop itself, and ``step`` is bounded by
        ``max_pieces`` pieces rather than by ``budget_s`` of the real clock, so that a replay is exact. ``clock``:
        the replica's (``started``); ``perf_counter`` only measures how long the loop's own slices take."""
        t0 = time.perf_counter()
        self.store = store
        self.budget_s = budget_s
        self.threads = threads
        self.max_pieces = max_pieces
        self.image = store.begin_snapshot()
        assert self.image.applied == base.index
        self.writer = storage.snapshot_writer(base.index, base.term, base.config)
        self._pieces: Iterator[bytes] | None = self.image.chunks()
        self.begin_s = time.perf_counter() - t0
        self.started = clock()
        self.result: Snapshot | None = None
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None
        self._flushed = 0

    def busy(self) -> bool:
        """True while there is serialization work for the loop."""
        return self._pieces is not None

    def step(self) -> None:
        pieces = self._pieces
        if pieces is None:
            return
        end = time.perf_counter() + self.budget_s if self.budget_s is not None else None
        left = self.max_pieces
        try:
            for piece in pieces:
                self.writer.write(piece)
                if self.threads and self.writer.written - self._flushed >= FLUSH_BYTES and not self._flushing():
                    self._flushed = self.writer.written
                    self.thread = threading.Thread(target=self._flush, name="zraft-snapshot-sync", daemon=True)
                    self.thread.start()
                if left is not None:
                    left -= 1
                    if left <= 0:
                        return
                if end is not None and time.perf_counter() >= end:
                    return
        except Exception as e:
            self._pieces = None
            self.store.end_snapshot()
            self._fail(e)
            return
        self._pieces = None
        self.store.end_snapshot()  # the image is serialized: the store need not keep old values any more
        flusher = self.thread
        if not self.threads:
            self._commit(None)
            return
        self.thread = threading.Thread(target=self._commit, args=(flusher,), name="zraft-snapshot-sync",
                                       daemon=True)
        self.thread.start()

    def _flushing(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def _flush(self) -> None:
        try:
            self.writer.flush()
        except Exception as e:  # reported to the event loop by finish()
            self.error = e

    def _commit(self, flusher: threading.Thread | None) -> None:
        if flusher is not None:
            flusher.join()
        if self.error is not None:
            self._fail(self.error)
            return
        try:
            self.result = self.writer.commit()
        except Exception as e:
            self._fail(e)

    def _fail(self, e: BaseException) -> None:
        self.error = e
        self.writer.abort()

    def done(self) -> bool:
        return self._pieces is None and not self._flushing()

    def finish(self) -> Snapshot:
        """After done(): the durable snapshot, or the error raised."""
        self.wait()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result

    def wait(self) -> None:
        """Finish the job here and now (at shutdown, or before the store is replaced)."""
        while self._pieces is not None:
            self.step()
        if self.thread is not None:
            self.thread.join()


@dataclass
class Outgoing:
    peer: int
    term: int
    snap: Snapshot
    file: SnapshotFile
    sent: int = 0
    acked: int = 0
    rewound: int = -1
    last_progress: float = 0.0
    started: float = 0.0


class Sender:
    """The leader's side: every snapshot being streamed to a follower."""

    def __init__(self, node_id: int, send: Callable[[int, SnapChunk], bool],
                 clock: Callable[[], float] = time.monotonic, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.id = node_id
        self._send = send
        self.clock = clock
        self.chunk_bytes = chunk_bytes
        self.transfers: dict[int, Outgoing] = {}
        self.sent_bytes = 0

    def start(self, peer: int, term: int, snap: Snapshot) -> None:
        """The core wants ``snap`` sent to ``peer``: begin, or go on with the same snapshot already underway."""
        f = snap.data
        if not isinstance(f, SnapshotFile):
            raise TypeError("the node sends snapshots stored on disk")
        now = self.clock()
        cur = self.transfers.get(peer)
        if cur is not None and (cur.snap.index, cur.snap.term) == (snap.index, snap.term) \
                and now - cur.last_progress < RESEND_AFTER_S:
            cur.term = term
            return
        log.info("node=%d event=snapshot_send_start peer=%d index=%d bytes=%d", self.id, peer, snap.index, f.size)
        self.transfers[peer] = Outgoing(peer, term, snap, f, last_progress=now, started=now)
        self._pump(self.transfers[peer])

    def _pump(self, t: Outgoing) -> None:
        while t.sent < t.file.size and t.sent - t.acked < WINDOW_CHUNKS * self.chunk_bytes:
            data = t.file.read_raw(t.sent, self.chunk_bytes)
            if not data:
                raise OSError(f"{t.file.path} is shorter than {t.file.size} bytes")
            c = SnapChunk(self.id, t.peer, t.term, t.snap.index, t.snap.term, t.file.size, t.sent, data)
            if not self._send(t.peer, c):
                return  # the peer's queue is full: try again on the next tick
            t.sent += len(data)
            self.sent_bytes += len(data)

    def on_ack(self, a: SnapAck) -> str | None:
        """Returns "done" or "failed" when the transfer to ``a.src`` is over, else None."""
        t = self.transfers.get(a.src)
        if t is None or (t.snap.index, t.snap.term) != (a.snap_index, a.snap_term):
            return None
        if a.status == ACK_DONE:
            del self.transfers[a.src]
            log.info("node=%d event=snapshot_sent peer=%d index=%d seconds=%.2f", self.id, a.src, a.snap_index,
                     self.clock() - t.started)
            return "done"
        if a.status == ACK_ERROR:
            del self.transfers[a.src]
            log.warning("node=%d event=snapshot_send_failed peer=%d index=%d (the follower could not use it)",
                        self.id, a.src, a.snap_index)
            return "failed"
        if a.next_offset > t.acked:
            t.acked = min(a.next_offset, t.file.size)
            t.last_progress = self.clock()
        if a.status == ACK_GAP and a.next_offset != t.rewound:
            # A hole at next_offset: send again from there (once per hole; later chunks bring more notices).
            t.sent = t.acked = t.rewound = min(a.next_offset, t.file.size)
        elif a.status != ACK_OK:
            return None
        return self._pump_safely(t)

    def _pump_safely(self, t: Outgoing) -> str | None:
        try:
            self._pump(t)
        except OSError as e:  # e.g. the file was replaced by a newer snapshot and removed
            self.transfers.pop(t.peer, None)
            log.warning("node=%d event=snapshot_send_failed peer=%d error=%s", self.id, t.peer, e)
            return "failed"
        return None

    def tick(self) -> list[int]:
        """Resend after silence; returns the peers whose transfers were abandoned."""
        now = self.clock()
        failed = []
        for peer, t in list(self.transfers.items()):
            idle = now - t.last_progress
            if idle >= GIVE_UP_AFTER_S:
                del self.transfers[peer]
                log.warning("node=%d event=snapshot_send_abandoned peer=%d index=%d after=%.1fs", self.id, peer,
                            t.snap.index, idle)
                failed.append(peer)
            elif idle >= RESEND_AFTER_S and t.sent > t.acked:
                t.sent = t.acked
                t.last_progress = now  # one resend per silence
                if self._pump_safely(t) == "failed":
                    failed.append(peer)
            elif t.sent < t.file.size and self._pump_safely(t) == "failed":
                failed.append(peer)
        return failed

    def clear(self) -> None:
        self.transfers.clear()


class Receiver:
    """The follower's side: the one snapshot file being received."""

    def __init__(self, node_id: int, storage: Storage, send_ack: Callable[[int, SnapAck], None],
                 max_bytes: int = MAX_SNAPSHOT_BYTES, validate: Callable[[Snapshot], None] | None = None) -> None:
        self.id = node_id
        self.storage = storage
        self._ack = send_ack
        self.max_bytes = max_bytes
        self.validate = validate
        """Checks a received snapshot's contents before it is used; raises ``ValueError`` to refuse it."""
        self.current: SnapshotReceiver | None = None
        self.source = 0
        self.completed: tuple[int, int, int, int] | None = None
        """(source, index, term, size) of the last file received whole: late duplicates of it are not news."""

    def on_chunk(self, c: SnapChunk) -> Snapshot | None:
        """Take a chunk; returns the verified snapshot when the file is complete."""
        if self.completed == (c.src, c.snap_index, c.snap_term, c.size):
            self._reply(c, c.size, ACK_DONE)
            return None
        cur = self.current
        same = cur is not None and self.source == c.src and (cur.index, cur.term, cur.size) == (
            c.snap_index, c.snap_term, c.size)
        if not same:
            if c.offset != 0:
                self._reply(c, 0, ACK_GAP)
                return None
            why = self._refuse(c.size)
            if why:
                log.warning("node=%d event=snapshot_refused from=%d index=%d bytes=%d why=%s", self.id, c.src,
                            c.snap_index, c.size, why)
                self._reply(c, 0, ACK_ERROR)
                return None
            self.abort()
            cur = self.current = self.storage.snapshot_receiver(c.snap_index, c.snap_term, c.size)
            self.source = c.src
            log.info("node=%d event=snapshot_receive_start from=%d index=%d bytes=%d", self.id, c.src, c.snap_index,
                     c.size)
        assert cur is not None
        if c.offset < cur.received:  # a duplicate or a resend of what we hold
            self._reply(c, cur.received, ACK_OK)
            return None
        if c.offset > cur.received:  # a chunk before this one was lost
            self._reply(c, cur.received, ACK_GAP)
            return None
        cur.write(c.data)
        if cur.received < cur.size:
            self._reply(c, cur.received, ACK_OK)
            return None
        self.current = None
        try:
            snap = cur.finish()
        except CorruptionError as e:
            log.warning("node=%d event=snapshot_receive_failed from=%d error=%s", self.id, c.src, e)
            self._reply(c, 0, ACK_ERROR)
            return None
        if self.validate is not None:
            try:
                self.validate(snap)
            except ValueError as e:
                # Refused before anything names it: the file goes, the node keeps what it had.
                assert isinstance(snap.data, SnapshotFile)
                self.storage.disk.remove(snap.data.path)
                log.warning("node=%d event=snapshot_refused from=%d index=%d why=%s", self.id, c.src, c.snap_index, e)
                self._reply(c, 0, ACK_ERROR)
                return None
        self.completed = (c.src, c.snap_index, c.snap_term, c.size)
        self._reply(c, cur.received, ACK_DONE)
        log.info("node=%d event=snapshot_received from=%d index=%d", self.id, c.src, c.snap_index)
        return snap

    def _refuse(self, size: int) -> str:
        """Why a snapshot file of ``size`` bytes cannot be received here ("" if it can)."""
        if size > self.max_bytes:
            return f"over the limit of {self.max_bytes} bytes (--max-snapshot-bytes)"
        try:
            free = shutil.disk_usage(self.storage.snap_dir).free
        except OSError:
            return ""
        if size > free - DISK_RESERVE_BYTES:
            return f"only {free} bytes free on the disk (and {DISK_RESERVE_BYTES} kept in reserve)"
        return ""

    def _reply(self, c: SnapChunk, next_offset: int, status: int) -> None:
        self._ack(c.src, SnapAck(self.id, c.src, c.term, c.snap_index, c.snap_term, next_offset, status))

    def abort(self) -> None:
        if self.current is not None:
            self.current.abort()
            self.current = None
