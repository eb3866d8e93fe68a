"""Serving backups from a node: a client's backup is a snapshot file, read in chunks (``Client.backup``; the file
format and restoring are ``zraft.statemachine.backup``).

A backup request's read point is confirmed as for a linearizable read (the replica asks the core for a read
index: every write acknowledged before the request is at or below it); then the backup waits for a snapshot at
least that new -- the newest one, or one the replica takes for it -- whose file is opened and pinned on disk (a
later compaction does not remove it) until the client has read it (``backup_end``) or leaves it idle for
``BACKUP_IDLE_S``. Bounded: ``MAX_BACKUPS`` files open, ``MAX_BACKUP_WAITERS`` requests waiting; more are
answered ``busy``. A client's resend of a request under way is answered once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zraft.core import Snapshot
from zraft.storage import Storage
from zraft.storage.snapshots import SnapshotFile
from zraft.transport.codec import Err
from zraft.transport.requests import BackupChunk, BackupEnd

log = logging.getLogger("zraft.replica")

BACKUP_IDLE_S = 30.0
"""A backup's snapshot file stays open for reading this long after its last chunk was asked for."""
MAX_BACKUPS = 4
"""Snapshot files open for backups at once (each kept on disk while open, however many snapshots follow)."""
MAX_BACKUP_WAITERS = 16
"""Backup requests waiting for their snapshot at once; more are answered ``busy``."""

Reply = Callable[[bytes, dict[str, Any], bool], None]
"""How an answer goes to a client: (identity, answer, batched)."""


@dataclass(slots=True)
class PendingBackup:
    identity: bytes
    req_id: int
    batched: bool
    index: int
    """The read point: the backup's snapshot must be at least this new."""


@dataclass(slots=True)
class OpenBackup:
    file: SnapshotFile
    last_used: float


class Backups:
    def __init__(self, node_id: int, storage: Storage, clock: Callable[[], float], reply: Reply) -> None:
        self.id = node_id
        self.storage = storage
        self.clock = clock
        self.reply = reply
        self.open: dict[tuple[int, int], OpenBackup] = {}
        """Snapshot files open for backups, by (index, term): pinned on disk until read or idle (``tick``)."""
        self.waiting: list[PendingBackup] = []
        """Backups whose read point is confirmed, waiting for a snapshot at least that new."""
        self.asked: set[tuple[bytes, int]] = set()
        """(identity, request id) of every backup request not yet answered: a client's resend is not a second."""

    def begin(self, identity: bytes, rid: int, batched: bool) -> bool:
        """A backup request: True when the replica should confirm its read point (a read index); False when it
        was answered (busy) or is a resend of one under way."""
        asked = (identity, rid)
        if asked in self.asked:
            return False  # a resend of a request under way: it is answered once
        if len(self.asked) >= MAX_BACKUP_WAITERS:
            self.reply(identity, {"id": rid, "ok": False, "error": Err.BUSY,
                                  "message": f"{MAX_BACKUP_WAITERS} backups are already being prepared here; retry "
                                  "later"}, batched)
            return False
        self.asked.add(asked)
        return True

    def confirmed(self, identity: bytes, rid: int, batched: bool, index: int) -> None:
        """Its read point is ``index``: it waits for a snapshot at least that new."""
        self.waiting.append(PendingBackup(identity, rid, batched, index))

    def failed(self, identity: bytes, rid: int) -> None:
        """No leader could confirm its read point (the replica answers it)."""
        self.asked.discard((identity, rid))

    def serve(self, snap: Snapshot | None) -> bool:
        """Answer the backups ``snap`` (the newest snapshot) is new enough for; True when others still wait (the
        replica takes a snapshot for them)."""
        waiting = []
        for b in self.waiting:
            if snap is None or snap.index < b.index or not isinstance(snap.data, SnapshotFile):
                waiting.append(b)
                continue
            self.asked.discard((b.identity, b.req_id))
            key = (snap.index, snap.term)
            ob = self.open.get(key)
            if ob is None:
                if len(self.open) >= MAX_BACKUPS:
                    self.reply(b.identity, {"id": b.req_id, "ok": False, "error": Err.BUSY,
                                            "message": f"{MAX_BACKUPS} backups are being read from this node; retry "
                                            "when one is done"}, b.batched)
                    continue
                ob = self.open[key] = OpenBackup(snap.data, self.clock())
                self.storage.pin(snap.data.path)
                log.info("node=%d event=backup_open index=%d term=%d bytes=%d", self.id, snap.index, snap.term,
                         snap.data.size)
            ob.last_used = self.clock()
            self.reply(b.identity, {"id": b.req_id, "ok": True, "node": self.id, "index": snap.index,
                                    "term": snap.term, "size": snap.data.size}, b.batched)
        self.waiting = waiting
        return bool(waiting)

    def chunk(self, identity: bytes, req: BackupChunk, batched: bool) -> None:
        rid, offset = req.id, req.offset
        ob = self.open.get((req.index, req.term))
        if ob is None:
            self.reply(identity, {"id": rid, "ok": False, "error": Err.BACKUP_GONE,
                                  "message": f"no backup at index {req.index} term {req.term} is open on node "
                                  f"{self.id} (idle over {BACKUP_IDLE_S:.0f} s, or the node restarted): start "
                                  "again"}, batched)
            return
        if offset > ob.file.size:
            self.reply(identity, {"id": rid, "ok": False, "error": Err.BAD_REQUEST,
                                  "message": f"offset {offset} is past the end of the file ({ob.file.size} "
                                  "bytes)"}, batched)
            return
        try:
            data = ob.file.read_raw(offset, req.length)
        except OSError as e:
            self.reply(identity, {"id": rid, "ok": False, "error": Err.BACKUP_GONE,
                                  "message": f"reading the snapshot file failed: {e}"}, batched)
            return
        ob.last_used = self.clock()
        self.reply(identity, {"id": rid, "ok": True, "offset": offset, "data": data}, batched)

    def end(self, identity: bytes, req: BackupEnd, batched: bool) -> None:
        """The client has read it: unpin its file."""
        ob = self.open.pop((req.index, req.term), None)
        if ob is not None:
            self.storage.unpin(ob.file.path)
        self.reply(identity, {"id": req.id, "ok": True}, batched)

    def tick(self, now: float) -> None:
        for key, ob in list(self.open.items()):
            if now - ob.last_used > BACKUP_IDLE_S:
                del self.open[key]
                self.storage.unpin(ob.file.path)
                log.info("node=%d event=backup_closed index=%d (idle)", self.id, key[0])
