"""A replica's clients: their requests routed (writes batched into one proposal per loop pass, gets sharing one
read index, the rest answered here or by membership and backups), what waits for the log or a read index, and the
answers, gathered per connection and sent once per pass.

A part of ``Replica`` (``replica.py``), as the core's roles are parts of ``Raft``: its methods run on the one
``Replica`` object. What it reads of the rest is declared at the top of ``ClientRequests``; ``Replica.__init__``
sets it all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from zraft.core import NONE, Raft, Role
from zraft.server.backups import Backups
from zraft.server.membership import Membership
from zraft.server.metrics import Stats
from zraft.server.seams import Clock, Transport
from zraft.server.settings import Settings
from zraft.server.snapshotting import Receiver, Sender, SnapshotJob
from zraft.server.watches import Watches
from zraft.statemachine.machine import StateMachine
from zraft.storage import Storage
from zraft.transport import codec
from zraft.transport.codec import Err
from zraft.transport.requests import (
    OP_OF,
    AddLearner,
    Backup,
    BackupChunk,
    BackupEnd,
    Get,
    LeaseKeepAlive,
    LeaseTTL,
    Members,
    Promote,
    Range,
    Remove,
    Request,
    Status,
    Transfer,
    Watch,
    WatchAck,
    WatchCancel,
    WatchStart,
    Write,
)
from zraft.transport.requests import Probe as ProbeRequest

MAX_RETRY_WAITERS = 16
"""Copies of one write (same client and seq) waiting for its entry at once; more are answered ``busy`` (a client
that keeps resending to a leader that cannot commit must not grow the leader's memory)."""


@dataclass(slots=True)
class PendingWrite:
    identity: bytes
    req_id: int
    batched: bool
    op: str
    arrived: float
    """Clock time of the loop pass it arrived in (request latency metrics)."""
    req: Write
    """The write asked (the state machine reads it again to answer: ``StateMachine.answer``)."""


@dataclass(slots=True)
class PendingRead:
    identity: bytes
    req_id: int
    key: bytes
    batched: bool = False
    arrived: float = 0.0
    backup: bool = False
    """A backup's read point, not a get."""
    query: Range | LeaseKeepAlive | LeaseTTL | None = None
    """A range read, not a get (answered by ``StateMachine.query``), or a request only the leader answers once it
    has confirmed it leads (by its ``Lessor``)."""


M = TypeVar("M", bound=StateMachine)


class ClientRequests(Generic[M]):
    id: int
    raft: Raft
    machine: M
    storage: Storage
    transport: Transport
    clock: Clock
    settings: Settings
    stats: Stats
    addresses: dict[int, str]
    backups: Backups
    membership: Membership
    watches: Watches
    pending_writes: dict[tuple[int, int], list[PendingWrite]]
    pending_reads: dict[int, list[PendingRead]]
    """The reads waiting for each read index asked (a loop pass's gets share one)."""
    _read_group: list[PendingRead]
    """This pass's gets, until ``end_input`` asks their read index."""
    _writes: list[tuple[bytes, Write, bool]]
    _outbox: dict[bytes, list[dict[str, Any]]]
    _next_read: int
    _arrived: float
    """Clock time the client frame being handled arrived (request latency metrics)."""
    status_extra: Callable[[], dict[str, Any]] | None
    snap_stats: dict[str, Any]
    snap_job: SnapshotJob | None
    sender: Sender
    receiver: Receiver
    peer_in: dict[int, list[int]]

    def start_watching(self) -> None:
        raise NotImplementedError  # replica.py

    def reads_waiting(self) -> int:
        return sum(len(g) for g in self.pending_reads.values()) + len(self._read_group)

    def bad_request(self, identity: bytes, e: codec.ProtocolError, batched: bool = False) -> None:
        self._reply(identity, {"id": e.req_id, "ok": False, "error": Err.BAD_REQUEST, "message": str(e)}, batched)

    def _leader_info(self) -> dict[str, Any]:
        ld = self.raft.lead
        return {"leader": ld, "leader_addr": self.addresses.get(ld, "") if ld != NONE else ""}

    def _reply(self, identity: bytes, msg: dict[str, Any], batched: bool = False) -> None:
        outcome = "ok" if msg["ok"] else msg["error"]
        responses = self.stats.responses
        responses[outcome] = responses.get(outcome, 0) + 1
        if batched:  # answered together with the identity's other answers at the end of the loop pass
            box = self._outbox.get(identity)
            if box is None:
                self._outbox[identity] = [msg]
            else:
                box.append(msg)
            return
        self.transport.answer(identity, [msg], False)

    def _flush_outbox(self) -> None:
        answer = self.transport.answer
        for identity, msgs in self._outbox.items():
            answer(identity, msgs, True)
        self._outbox.clear()

    def _not_leader(self, identity: bytes, req_id: int, batched: bool = False) -> None:
        self._reply(identity, {"id": req_id, "ok": False, "error": Err.NOT_LEADER,
                               "message": "this node is not the leader", **self._leader_info()}, batched)

    def _propose(self, writes: list[tuple[bytes, Write, bool]]) -> None:
        if self.raft.role != Role.LEADER:
            for identity, req, batched in writes:
                self._not_leader(identity, req.id, batched)
            return
        target = self.raft.transferee
        if target != NONE:  # diss. §3.10: no new entries while leadership moves; the client follows it there
            for identity, req, batched in writes:
                self._reply(identity, {"id": req.id, "ok": False, "error": Err.NOT_LEADER,
                                       "message": f"leadership is being transferred to node {target}; retry there",
                                       "leader": target, "leader_addr": self.addresses.get(target, "")}, batched)
            return
        datas = []
        pending, machine = self.pending_writes, self.machine
        now = self.clock()
        lg = self.raft.log
        room = self.settings.max_uncommitted - (lg.last_index - lg.commit)
        for identity, req, batched in writes:
            client, seq = req.client, req.seq
            waiting = pending.get((client, seq))
            full = (f"the leader has {lg.last_index - lg.commit} uncommitted entries (at most "
                    f"{self.settings.max_uncommitted})" if waiting is None and room <= 0
                    else f"{MAX_RETRY_WAITERS} copies of this write wait already"
                    if waiting is not None and len(waiting) >= MAX_RETRY_WAITERS else "")
            if full:
                self._reply(identity, {"id": req.id, "ok": False, "error": Err.BUSY,
                                       "message": f"{full}; retry after a backoff", **self._leader_info()}, batched)
                continue
            command = machine.command(req)
            if not isinstance(command, bytes):
                error, why = command
                self._reply(identity, {"id": req.id, "ok": False, "error": error, "message": why}, batched)
                continue
            w = PendingWrite(identity, req.id, batched, OP_OF[type(req)], now, req)
            if waiting is None:
                pending[(client, seq)] = [w]
            else:
                # A retry of a write this leader proposed and has not applied yet: its entry is in our log (a leader
                # never drops its own entries, and stepping down forgets every pending write), so it is answered
                # with the first one, and not logged again.
                waiting.append(w)
                continue
            room -= 1
            datas.append(command)
        if datas:
            self.raft.propose(datas)  # we lead and transfer nothing: checked above, and nothing in between changes

    def _client_other(self, identity: bytes, req: Request, batched: bool = False) -> None:
        rid = req.id
        match req:
            case Get(key=key, stale=stale):
                if stale:
                    self._answer_get(identity, rid, key, batched)
                    return
                # Every get of this loop pass shares one read index (``end_input``): one leadership round at a
                # leader, one READ_INDEX message from a follower, whatever the number of reads.
                self._read_group.append(PendingRead(identity, rid, key, batched, self._arrived))
            case Range(stale=stale):
                if stale:
                    self._reply(identity, {"id": rid, **self.machine.query(req)}, batched)
                    return
                self._read_group.append(PendingRead(identity, rid, b"", batched, self._arrived, query=req))
            case LeaseKeepAlive() | LeaseTTL():
                if self.raft.role != Role.LEADER:
                    self._not_leader(identity, rid, batched)
                    return
                self._read_group.append(PendingRead(identity, rid, b"", batched, self._arrived, query=req))
            case Watch():
                if self.watches.on:
                    self.watches.watch(identity, req)
                else:
                    self.start_watching()
                    self._reply(identity, {"id": rid, "ok": False, "error": Err.BUSY, "message": "the cluster is "
                                           "starting to keep the history of changes watches need; retry in a moment",
                                           **self._leader_info()}, batched)
            case WatchStart():
                if self.raft.role != Role.LEADER:
                    self._not_leader(identity, rid, batched)
                else:
                    self.start_watching()
                    m = self.machine
                    self._reply(identity, {"id": rid, "ok": True, "watching": m.watching,
                                           "rev": m.watch_start if m.watching else 0}, batched)
            case WatchAck(watch=wid, revision=revision):
                self._reply(identity, {"id": rid, "ok": True} if self.watches.ack(identity, wid, revision) else
                            {"id": rid, "ok": False, "error": "no_watch",
                             "message": f"watch {wid} is not served here (it expired, or was cut off)"}, batched)
            case WatchCancel(watch=wid):
                self.watches.cancel(identity, wid)
                self._reply(identity, {"id": rid, "ok": True}, batched)
            case ProbeRequest():
                self._reply(identity, {"id": rid, "ok": True, "node": self.id, "role": self.raft.role.name.lower(),
                                       "term": self.raft.term, **self._leader_info()}, batched)
            case Status():
                self._reply(identity, {"id": rid, "ok": True, **self.status()}, batched)
            case Members() | AddLearner() | Promote() | Remove() | Transfer():
                if self.raft.role != Role.LEADER:
                    self._not_leader(identity, rid, batched)
                elif isinstance(req, Members):
                    self.membership.answer_members(identity, rid, batched)
                else:
                    self.membership.change(identity, req, batched)
            case Backup():
                if self.backups.begin(identity, rid, batched):
                    # Its read point is confirmed as for a linearizable read: every write acknowledged before it
                    # is in the snapshot it is served from.
                    self._next_read += 1
                    self.pending_reads[self._next_read] = [PendingRead(identity, rid, b"", batched, self.clock(),
                                                                       backup=True)]
                    self.raft.read_index(self._next_read)
            case BackupChunk():
                self.backups.chunk(identity, req, batched)
            case BackupEnd():
                self.backups.end(identity, req, batched)

    def _answer_get(self, identity: bytes, rid: int, key: bytes, batched: bool = False) -> None:
        v = self.machine.get(key)
        self._reply(identity, {"id": rid, "ok": True, "value": v, "found": v is not None,
                               "rev": self.machine.revision}, batched)

    def status(self) -> dict[str, Any]:
        raft = self.raft
        st = raft.status()
        del st["id"]  # "id" is the request id in replies; the node's id goes in "node"
        st.update(self._leader_info())
        keys, sessions = self.machine.counts()
        st.update({"node": self.id, "address": self.addresses.get(self.id, ""), "kv_applied": self.machine.applied,
                   "revision": self.machine.revision, "watching": self.machine.watching,
                   "keys": keys, "sessions": sessions,
                   "pending_reads": self.reads_waiting(), "pending_writes": len(self.pending_writes),
                   "log_entries": raft.last_index - raft.snapshot_index,
                   "last_snapshot": self.snap_stats, "snapshot_in_progress": self.snap_job is not None,
                   "snapshot_sending": {str(p): [t.acked, t.file.size] for p, t in self.sender.transfers.items()},
                   "peer_in": {str(p): list(c) for p, c in self.peer_in.items()},
                   "sent": {str(p): n for p, n in self.stats.sent.items()}})
        rc = self.receiver.current
        if rc is not None:
            st["snapshot_receiving"] = [rc.received, rc.size]
        st.update(self.storage.disk_usage())
        if "match" in st:
            st["match"] = {str(k): v for k, v in st["match"].items()}
        if self.status_extra is not None:
            st.update(self.status_extra())
        return st
