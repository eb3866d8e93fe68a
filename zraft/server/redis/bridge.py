"""The Redis server's bridge to the replica: a command's native requests (``RespServer.native``) handed to the
leader's replica -- this node's, or forwarded to the leader over the peer connection -- and retried through
elections and redirects up to a deadline; their answers turned back into the command's reply; reads answered
together once the pass's read barrier (one linearizable get) is served.

A part of ``RespServer`` (``server.py``): its methods run on the one server object; what they use of the rest is
declared at the top of ``ReplicaBridge``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from zraft.core import Role
from zraft.server.redis import protocol as resp
from zraft.server.redis.commands import RETRY, failure
from zraft.server.redis.conn import MAX_REPLY, OUT_CAP, RETRY_S, WRITE_DEADLINE_S, Conn, Finish, Pending, Write
from zraft.server.replica import Replica
from zraft.statemachine import kv
from zraft.statemachine.kv import KVStore
from zraft.transport import requests
from zraft.util.logutil import LogLimiter


class ReplicaBridge:
    replica: Replica[KVStore]
    forward: Callable[[int, bytes], bool] | None
    waiting: dict[int, tuple[Conn, Pending, int]]
    """Native request id -> the command it belongs to, and its place among the command's requests."""
    writes: dict[int, Write]
    """Every write not yet answered for good, by request id (retried through elections and redirects)."""
    outbox: dict[int, list[requests.Request]]
    """Writes to forward to the leader at the end of this loop pass."""
    local_writes: bool
    batch: dict[bytes, list[requests.Request]]
    """Requests for the replica from this loop pass, by connection (``_hand_over``)."""
    barriers: dict[int, list[tuple[Conn, Pending, Callable[[kv.KVStore], bytes]]]]
    """Read barriers sent, by request id: the reads each will answer."""
    dirty: set[Conn]
    waiting_resume: bool
    """A connection with held-back commands had its last write answered."""
    limiter: LogLimiter
    clock: Callable[[], float]
    _ids: itertools.count[int]

    def native(self, c: Conn, reqs: list[requests.Request], finish: Finish) -> None:
        """Hand requests to the replica, with their ids (and the connection's session for writes) set here;
        ``finish(answers)`` makes the reply once all are answered."""
        read = not isinstance(reqs[0], requests.WRITES)
        p = Pending(len(reqs), finish, read=read)
        c.queue.append(p)
        if read:
            c.reads += 1
        batch = self.batch
        now = self.clock()
        for i, req in enumerate(reqs):
            rid = next(self._ids)
            self.waiting[rid] = (c, p, i)
            if isinstance(req, requests.WRITES):
                c.seq += 1
                c.unfinished.add(c.seq)
                p.seqs.append(c.seq)
                req = req._replace(id=rid, client=c.client, seq=c.seq, ack=min(c.unfinished))
                self.writes[rid] = Write(req, c.ident, now + WRITE_DEADLINE_S)
                self._submit_write(rid, now)
            elif isinstance(req, requests.LEADER_ONLY):  # to the leader, as a write (but outside the session)
                req = req._replace(id=rid)
                self.writes[rid] = Write(req, c.ident, now + WRITE_DEADLINE_S)
                self._submit_write(rid, now)
            else:
                req = req._replace(id=rid)
                q = batch.get(c.ident)
                if q is None:
                    batch[c.ident] = [req]
                else:
                    q.append(req)

    def _submit_write(self, rid: int, now: float) -> None:
        """The leader's replica takes the write: this node's, or the leader's over the peer connection."""
        w = self.writes[rid]
        raft = self.replica.raft
        w.sent = now
        if raft.role is Role.LEADER:
            w.target = 0
            q = self.batch.get(w.ident)
            if q is None:
                self.batch[w.ident] = [w.req]
            else:
                q.append(w.req)
            self.local_writes = True
        elif raft.lead and self.forward is not None:
            w.target = raft.lead
            self.outbox.setdefault(raft.lead, []).append(w.req)
        else:
            w.target = -1
            w.due = now + RETRY_S  # no leader known yet: ask again shortly

    def on_replies(self, identity: bytes, replies: list[dict[str, Any]], final: bool = False) -> None:
        """The answers to a Redis connection's requests (the replica's, or the leader's for forwarded writes). A
        write that no leader took (a follower's, an election) is tried again, up to its deadline."""
        waiting = self.waiting
        now = self.clock()
        for r in replies:
            rid = r.get("id", -1)
            readers = self.barriers.pop(rid, None)
            if readers is not None:
                self._serve_reads(readers, r)
                continue
            w = self.writes.get(rid)
            if w is not None:
                if not final and not r.get("ok") and r.get("error") in RETRY and now < w.deadline:
                    w.due = now + RETRY_S  # the same request again (same session and sequence: applied once)
                    w.target = -1
                    continue
                del self.writes[rid]
            entry = waiting.pop(rid, None)
            if entry is None:
                continue
            c, p, i = entry
            p.answers[i] = r
            p.left -= 1
            if p.left == 0:
                assert p.finish is not None
                if p.read:
                    c.reads -= 1
                    if c.deferred and not c.reads:
                        self.waiting_resume = True
                if p.seqs:  # its writes are answered: the connection's reads held back for them may go
                    c.unfinished.difference_update(p.seqs)
                    if c.deferred and not c.unfinished:
                        self.waiting_resume = True
                try:
                    p.data = p.finish(p.answers)
                except Exception as e:
                    self.limiter.warn("finish", "event=resp_reply_failed error=%r", e)
                    p.data = resp.error("ERR internal error")
                c.built += len(p.data)
                self.dirty.add(c)

    def _serve_reads(self, readers: list[tuple[Conn, Pending, Callable[[kv.KVStore], bytes]]],
                     barrier: dict[str, Any]) -> None:
        """The read barrier is served (or failed): answer every read that waited for it, from the store as it is --
        but for a connection whose reader is ``OUT_CAP`` behind: its reads are made as it catches up
        (``_make_held``)."""
        failed = failure(barrier, False)
        store = self.replica.machine
        dirty = self.dirty
        for c, p, make in readers:
            dirty.add(c)
            if failed is None and (c.unbuilt or len(c.out) + c.built > OUT_CAP):
                c.unbuilt.append((p, make))
                continue
            # ``_make``, inline: this runs for every GET.
            try:
                data = failed or make(store)
            except Exception as e:
                self.limiter.warn("finish", "event=resp_reply_failed error=%r", e)
                data = resp.error("ERR internal error")
            if len(data) > MAX_REPLY:
                data = resp.error(f"ERR the reply would be {len(data)} bytes; zraft sends at most {MAX_REPLY}")
            p.data = data
            c.built += len(data)
            p.left = 0
            c.reads -= 1
            if c.deferred and not c.reads:
                self.waiting_resume = True

    def _make(self, c: Conn, p: Pending, make: Callable[[kv.KVStore], bytes], failed: bytes | None = None) -> None:
        try:
            p.data = failed or make(self.replica.machine)
        except Exception as e:
            self.limiter.warn("finish", "event=resp_reply_failed error=%r", e)
            p.data = resp.error("ERR internal error")
        if len(p.data) > MAX_REPLY:
            p.data = resp.error(f"ERR the reply would be {len(p.data)} bytes; zraft sends at most {MAX_REPLY}")
        c.built += len(p.data)
        p.left = 0
        c.reads -= 1  # only now may the connection's later writes go (they must not change what this read sees)
        if c.deferred and not c.reads:
            self.waiting_resume = True

    def _make_held(self, c: Conn) -> bool:
        """Make held-back reads of ``c`` (from the store as it is now: its reads index is long served, and nothing
        the connection sent after them has run) until ``OUT_CAP`` is reached; True if any was made."""
        made = False
        while c.unbuilt and len(c.out) + c.built <= OUT_CAP:
            p, make = c.unbuilt.popleft()
            self._make(c, p, make)
            made = True
        return made
