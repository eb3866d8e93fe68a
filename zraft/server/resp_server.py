"""A node's Redis-protocol port: redis-cli, redis-benchmark and any Redis client talk to the cluster.

Runs inside the node's event loop (its listening socket and connections are polled with the ZeroMQ sockets), and
turns each Redis command into requests of zraft's own protocol, handed to the replica exactly as a native client's
would be: writes of one loop pass become one log append (a pipeline of 16 SETs is one proposal), reads are
linearizable (ReadIndex), every write has a session (the connection's) so it is applied at most once. The replica
answers through ``Routing.answer``, which gives the answers for Redis connections to this server; a command's
reply is written when all of its requests are answered, and replies go out in the order the commands came.

Bounds: ``MAX_CLIENTS`` connections (one more is told ``-ERR max number of clients reached`` and closed), commands
bounded by ``zraft.server.resp``, at most ``MAX_QUEUED`` commands waiting per connection (it is not read meanwhile),
``INPUT_BUDGET`` bytes of incomplete commands over all connections. Replies: a connection with more than
``OUT_CAP`` bytes of replies made and not yet taken by its reader is not read, and its reads' replies are not
made until it takes them (from the store as it is then: still linearizable, and still after the writes the
connection sent before them and before the ones after); one reply is at most ``MAX_REPLY`` bytes. So a reader that
pipelines 10,000 GETs of a 1 MiB value and never reads costs the node about ``OUT_CAP``, not 10 GB.

Commands: PING, ECHO, HELLO, SELECT 0, QUIT, CLIENT SETNAME/GETNAME/ID/SETINFO, COMMAND (COUNT, DOCS), CONFIG GET,
INFO, DBSIZE, KEYS, SCAN, GET, MGET, EXISTS, STRLEN, SET (NX, XX, GET), SETNX, APPEND, DEL, INCR, DECR, INCRBY, DECRBY,
GETDEL, MSET. Anything else: ``-ERR unknown command``. Replies are RESP2 until a connection sends ``HELLO 3``, RESP3
after it (null as ``_``, maps for HELLO, CONFIG GET and COMMAND DOCS, INFO as a verbatim string: what Redis 7 sends).

Any node serves every command: reads locally (linearizable, through the leader's read index), writes at the leader
-- a follower forwards them over its peer connection and relays the answers. A write that meets an election or a
redirect is tried again with the same session and sequence number (applied once) for up to ``WRITE_DEADLINE_S``,
then answered ``-TRYAGAIN``. A connection's commands take effect in the order sent: a read waits for the
connection's unanswered writes, a write for its unanswered reads.
"""

from __future__ import annotations

import errno
import fnmatch
import hmac
import itertools
import logging
import os
import random
import socket
import time
import zlib
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

from zraft.core import Role
from zraft.server import resp
from zraft.server.replica import Replica
from zraft.statemachine import kv
from zraft.statemachine.kv import KVStore
from zraft.transport import codec
from zraft.transport.codec import Err
from zraft.util.logutil import LogLimiter

log = logging.getLogger("zraft.resp")

MAX_CLIENTS = 1024
WRITE_DEADLINE_S = 10.0
"""A write no leader has taken after this long is answered ``-TRYAGAIN`` (it may or may not have been applied)."""
RETRY_S = 0.05
"""Pause before a write refused by a non-leader (or during an election) is tried again."""
RESEND_S = 1.0
"""A write forwarded to the leader and not answered within this is sent again (same session and sequence)."""
MAX_QUEUED = 10_000
MAX_KEYS_STORE = 100_000
"""KEYS is refused on a store with more keys than this: it reads them all in one pass of the event loop (1.1 s at a
million, time enough to lose leadership); SCAN reads a shard per call."""
MAX_OUT = 64 << 20
"""A connection with more than this waiting to be sent is closed (only writes' replies can get it there)."""
OUT_CAP = 4 << 20
"""Reply bytes made for a connection and not yet sent, past which it is not read and its reads wait unmade."""
MAX_REPLY = 64 << 20
"""The largest reply made (MGET, KEYS): a larger one is refused with an error."""
FIRST_COMMAND_S = 10.0
"""A connection that has not sent a whole command this long after it was accepted is closed."""
HALF_SENT_S = 10.0
"""A connection holding part of a command that sends nothing more for this long is closed (``*`` and silence)."""
MAX_UNAUTHED = 64
"""Connections not yet authenticated (with a password) at once: one more closes the oldest of them (a real client
sends AUTH at once), so they never take more than these slots from authenticated ones."""
AUTH_S = 10.0
"""A connection that has not authenticated this long after it was accepted is closed (with a password)."""
MAX_AUTH_FAILURES = 5
"""Wrong passwords on one connection before it is closed."""
AUTH_BURST = 20
AUTH_PER_S = 5.0
"""Wrong passwords from one source address: ``AUTH_BURST`` at once, then ``AUTH_PER_S`` a second; past that an AUTH
from the address is refused unchecked (even a right password) until its allowance grows back."""
INPUT_BUDGET = 256 << 20
RECV_BYTES = 256 << 10
TAG = b"\xffresp"
"""Prefix of the identities the replica answers Redis connections by (ZeroMQ's own start with a zero byte)."""
BARRIER = TAG + b"barrier"
"""The identity the replica answers read barriers by."""
VERSION = "7.0.0"
"""The Redis version reported to clients (the command set of Redis 7 that zraft implements behaves as there)."""

Finish = Callable[[list[dict[str, Any]]], bytes]
_IN, _OUT, _ERR = int(zmq.POLLIN), int(zmq.POLLOUT), int(zmq.POLLERR)  # a zmq.Poller's flags, for plain fds too


class Pending:
    """A command waiting for the answers to its native requests."""

    __slots__ = ("answers", "data", "finish", "left", "read")

    def __init__(self, n: int, finish: Finish | None, data: bytes = b"", read: bool = False) -> None:
        self.answers: list[dict[str, Any]] = [{}] * n
        self.left = n
        self.finish = finish
        self.data = data
        self.read = read
        """The reply, once known."""


class Write:
    __slots__ = ("deadline", "due", "ident", "req", "sent", "target")

    def __init__(self, req: dict[str, Any], ident: bytes, deadline: float) -> None:
        self.req = req
        self.ident = ident
        self.deadline = deadline
        self.sent = 0.0
        self.due = 0.0
        """When to try again (0: not scheduled)."""
        self.target = 0
        """Where it went: 0 this node (the leader), a node id (forwarded), -1 nowhere yet."""


class Conn:
    __slots__ = ("auth_failures", "authed", "built", "client", "closing", "deferred", "events", "fd", "ident",
                 "last_rx", "name", "num", "out", "parser", "peer", "queue", "r", "reads", "seq", "since", "sock",
                 "started", "unbuilt", "unfinished")

    def __init__(self, sock: socket.socket, num: int, authed: bool, peer: str = "", now: float = 0.0) -> None:
        self.sock = sock
        self.peer = peer
        """The source address (the host, without the port)."""
        self.since = now
        self.last_rx = now
        """When bytes last arrived (or reading resumed)."""
        self.started = False
        """A whole command has arrived."""
        self.auth_failures = 0
        self.authed = authed
        """False until AUTH (or HELLO ... AUTH) gave the password, when the server has one."""
        self.fd = sock.fileno()
        self.num = num
        self.parser = resp.Parser()
        self.out = bytearray()
        self.queue: deque[Pending] = deque()
        self.ident = TAG + num.to_bytes(8, "big")
        self.client = random.SystemRandom().randrange(1, 1 << 62)
        """The session id of this connection's writes (exactly-once, as a native client's)."""
        self.seq = 0
        self.unfinished: set[int] = set()
        self.name = b""
        self.closing = False
        """QUIT or a protocol error: close once the replies before it are sent."""
        self.deferred: deque[list[bytes]] = deque()
        """Commands held back, in order, so that this connection's commands take effect in the order sent: a read
        waits until the writes before it are answered, a write until the reads before it are (``_resume``)."""
        self.reads = 0
        """Read commands sent to the replica and not yet answered."""
        self.events = 0
        self.built = 0
        """Bytes of replies made and still in ``queue`` (not yet moved to ``out``)."""
        self.unbuilt: deque[tuple[Pending, Callable[[kv.KVStore], bytes]]] = deque()
        """Reads whose barrier was served while the connection had ``OUT_CAP`` unsent: made as it drains."""
        self.r = resp.RESP2
        """The reply encoders of the protocol the connection asked for (HELLO 3: RESP3); RESP2 until then."""


class RespServer:
    def __init__(self, replica: Replica[KVStore], bind: str, max_clients: int = MAX_CLIENTS,
                 forward: Callable[[int, bytes], bool] | None = None, password: bytes | None = None) -> None:
        """``forward(node, frame)``: send a frame of client requests to a node over the peer connection (its
        answers come back to ``on_replies``). ``password``: what AUTH must give before anything but AUTH, HELLO,
        PING and QUIT is served (None: no authentication)."""
        self.password = password
        host, _, port = bind.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--resp {bind!r}: expected HOST:PORT")
        self.replica = replica
        self.address = bind
        self.max_clients = max_clients
        self.listener = socket.create_server((host.strip("[]"), int(port)), backlog=128,
                                             family=socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.listener.setblocking(False)
        self.lfd = self.listener.fileno()
        self.conns: dict[int, Conn] = {}
        self.by_ident: dict[bytes, Conn] = {}
        self.waiting: dict[int, tuple[Conn, Pending, int]] = {}
        """Native request id -> the command it belongs to, and its place among the command's requests."""
        self._ids = itertools.count(1 << 40)
        self._nums = itertools.count(1)
        self.poller: Any = None
        self.limiter = LogLimiter(log)
        self.commands = 0
        self.rejected = 0
        self.auth_failures = 0
        self.unauthed: dict[int, Conn] = {}
        """Connections open and not yet authenticated (with a password), oldest first."""
        self.auth_allowance: dict[str, tuple[float, float]] = {}
        """Source address -> (wrong passwords it may still try, when that was reckoned)."""
        self.timed_out = 0
        self._next_sweep = 0.0
        self.dirty: set[Conn] = set()
        self.again: set[Conn] = set()
        """Connections to flush in the next loop pass even if nothing happens on them (``flush``)."""
        self.forward = forward
        self.writes: dict[int, Write] = {}
        """Every write not yet answered for good, by request id (retried through elections and redirects)."""
        self.outbox: dict[int, list[dict[str, Any]]] = {}
        """Writes to forward to the leader at the end of this loop pass."""
        self.local_writes = False
        self.batch: dict[bytes, list[dict[str, Any]]] = {}
        """Requests for the replica from this loop pass, by connection (``_hand_over``)."""
        self.barrier_reads: list[tuple[Conn, Pending, Callable[[kv.KVStore], bytes]]] = []
        """This pass's reads, waiting for the pass's read barrier to be sent (``_whole_store``)."""
        self.barriers: dict[int, list[tuple[Conn, Pending, Callable[[kv.KVStore], bytes]]]] = {}
        """Read barriers sent, by request id: the reads each will answer."""
        self.waiting_resume = False
        """A connection with held-back commands had its last write answered."""

    # ------------------------------------------------------------------ the event loop's side

    def attach(self, poller: Any) -> None:
        """Register the listener and every connection with ``poller`` (a ``zmq.Poller``)."""
        self.poller = poller
        poller.register(self.lfd, _IN)
        for c in self.conns.values():
            c.events = 0
            self._watch(c)

    def _watch(self, c: Conn) -> None:
        events = (_IN if len(c.queue) < MAX_QUEUED and not c.closing and len(c.out) + c.built <= OUT_CAP else 0) | \
            (_OUT if c.out else 0)
        if events & _IN and not c.events & _IN:
            c.last_rx = time.monotonic()  # reading again: its silence counts from now
        if events != c.events and self.poller is not None:
            if events:
                self.poller.register(c.fd, events)  # registers or modifies
            else:
                self.poller.unregister(c.fd)
            c.events = events

    def handle(self, ready: dict[Any, int]) -> bool:
        """Serve the connections ``ready`` names; True if any of ours was there (the loop then ends the input)."""
        mine = False
        if self.lfd in ready:
            self._accept()
            mine = True
        for fd, ev in list(ready.items()):
            c = self.conns.get(fd) if isinstance(fd, int) else None
            if c is None:
                continue
            mine = True
            if ev & _ERR and not ev & _IN:
                self._close(c)
                continue
            if ev & _IN:
                self._read(c)
            if ev & _OUT and c.fd in self.conns:
                self.dirty.add(c)
        if self.batch or self.barrier_reads:
            self._hand_over()
        return mine

    def _hand_over(self) -> None:
        """Give the replica this pass's requests, one batch per connection (answered in one batch too), and one
        read barrier for all of this pass's reads."""
        if self.barrier_reads:
            rid = next(self._ids)
            self.barriers[rid] = self.barrier_reads
            self.barrier_reads = []
            self.batch.setdefault(BARRIER, []).append({"op": "get", "key": b"", "id": rid})
        receive = self.replica.receive
        for ident, reqs in self.batch.items():
            receive("client_batch", reqs, ident)
        self.batch.clear()

    def flush(self) -> None:
        """Send what the commands answered in this loop pass produced (first running held-back commands that can
        run now: their requests are carried out here and now, as the loop would have), and the writes forwarded
        to the leader, in batches."""
        if self.outbox:
            self._forward()
        for _ in range(8):
            if not self.waiting_resume or not self._resume():
                break
            self.waiting_resume = False
            self._hand_over()
            self.replica.end_input()
            self.replica.process()
        self.waiting_resume = False
        if self.again:
            self.dirty |= self.again
            self.again.clear()
        conns = self.conns
        for c in self.dirty:
            if c.fd not in conns:
                continue
            if not self._send(c):
                continue
            if c.unbuilt and not c.out:  # the reader caught up with the reads held back for it
                for _ in range(16):
                    self._make_held(c)
                    if not self._send(c) or not c.unbuilt or c.out:
                        break  # closed, all made, or the socket is full: POLLOUT brings us back
                else:
                    self.again.add(c)  # a fast reader of many held reads: more in the next loop pass
                if c.fd not in conns:
                    continue
            if c.closing and not c.queue and not c.out:
                self._close(c)
                continue
            if len(c.out) > MAX_OUT:
                self.limiter.warn("slow_reader", "event=resp_slow_reader fd=%d bytes=%d: closed", c.fd, len(c.out))
                self._close(c)
                continue
            self._watch(c)
        self.dirty.clear()

    def _send(self, c: Conn) -> bool:
        """Move the replies that are made, in order, to ``c.out`` and send what the socket takes; False if the
        connection broke (it is closed)."""
        q = c.queue
        while q and q[0].left == 0:
            data = q.popleft().data
            c.out += data
            c.built -= len(data)
        if c.out:
            try:
                n = c.sock.send(c.out)
                del c.out[:n]
            except BlockingIOError:
                pass
            except OSError:
                self._close(c)
                return False
        return True

    def _forward(self) -> None:
        assert self.forward is not None
        for target, reqs in self.outbox.items():
            for lo in range(0, len(reqs), 256):
                self.forward(target, codec.encode_client_batch(reqs[lo:lo + 256]))  # lost: resent after RESEND_S
        self.outbox.clear()

    def close(self) -> None:
        for c in list(self.conns.values()):
            self._close(c)
        self.listener.close()

    # ------------------------------------------------------------------ connections

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.limiter.warn("accept", "event=resp_accept_failed error=%s", e)
                    return
                raise
            if self.password is not None and len(self.unauthed) >= MAX_UNAUTHED:
                oldest = next(iter(self.unauthed.values()))
                self.timed_out += 1
                self.limiter.warn("unauthed", "event=resp_unauthenticated_evicted fd=%d peer=%s: %d connections "
                                  "waiting to authenticate; the oldest closed", oldest.fd, oldest.peer, MAX_UNAUTHED)
                self._close(oldest)
            if len(self.conns) >= self.max_clients:
                self.rejected += 1
                try:
                    sock.setblocking(False)
                    sock.send(resp.error("ERR max number of clients reached"))
                except OSError:
                    pass
                sock.close()
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                peer = str(sock.getpeername()[0])
            except OSError:
                peer = ""
            c = Conn(sock, next(self._nums), self.password is None, peer, time.monotonic())
            if not c.authed:
                self.unauthed[c.fd] = c
            self.conns[c.fd] = c
            self.by_ident[c.ident] = c
            self._watch(c)

    def _close(self, c: Conn) -> None:
        if self.conns.get(c.fd) is not c:
            return
        del self.conns[c.fd]
        del self.by_ident[c.ident]
        if not c.authed:
            del self.unauthed[c.fd]
        if self.poller is not None and c.events:
            self.poller.unregister(c.fd)
        c.events = 0
        try:
            c.sock.close()
        except OSError:
            pass
        # Answers still to come for its requests find no connection and are dropped (``on_replies``).

    def _read(self, c: Conn) -> None:
        try:
            data = c.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(c)
            return
        if not data:
            self._close(c)
            return
        c.last_rx = time.monotonic()
        try:
            commands = c.parser.feed(data)
        except resp.RespError as e:
            self._immediate(c, resp.error(f"ERR {e}"))
            c.closing = True
            self.dirty.add(c)
            return
        if c.parser.pending > 1 << 20 and sum(x.parser.pending for x in self.conns.values()) > INPUT_BUDGET:
            self.limiter.warn("budget", "event=resp_input_budget fd=%d: closed", c.fd)
            self._close(c)
            return
        if commands:
            c.started = True
        for args in commands:
            if c.closing:
                break
            self.commands += 1
            if c.deferred or _blocked(c, args[0].upper()):
                c.deferred.append(args)  # it must not overtake (or be overtaken by) what the connection sent before
            else:
                self._run(c, args)
        self.dirty.add(c)
        self._watch(c)

    def _run(self, c: Conn, args: list[bytes]) -> None:
        try:
            self._execute(c, args)
        except Exception as e:  # a bug of ours must not kill the node: the client gets an error
            self.limiter.warn("failed", "event=resp_command_failed error=%r", e)
            self._immediate(c, resp.error("ERR internal error"))

    def _resume(self) -> bool:
        """Run held-back commands whose earlier writes are answered; True if any was run."""
        ran = False
        for c in list(self.conns.values()):
            while c.deferred and not _blocked(c, c.deferred[0][0].upper()):
                self._run(c, c.deferred.popleft())
                ran = True
                self.dirty.add(c)
        return ran

    # ------------------------------------------------------------------ commands

    def _immediate(self, c: Conn, data: bytes) -> None:
        c.queue.append(Pending(0, None, data))
        c.built += len(data)

    def _native(self, c: Conn, reqs: list[dict[str, Any]], finish: Finish) -> None:
        """Hand requests to the replica; ``finish(answers)`` makes the reply once all are answered."""
        read = reqs[0]["op"] not in codec.WRITE_OPS
        p = Pending(len(reqs), finish, read=read)
        c.queue.append(p)
        if read:
            c.reads += 1
        batch = self.batch
        now = time.monotonic()
        for i, req in enumerate(reqs):
            rid = next(self._ids)
            req["id"] = rid
            self.waiting[rid] = (c, p, i)
            if req["op"] in codec.WRITE_OPS:
                c.seq += 1
                c.unfinished.add(c.seq)
                req.update(client=c.client, seq=c.seq, ack=min(c.unfinished))
                self.writes[rid] = Write(req, c.ident, now + WRITE_DEADLINE_S)
                self._submit_write(rid, now)
            else:
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

    def _sweep(self, now: float) -> None:
        """Close the connections that hold a slot and do nothing with it: no whole command ``FIRST_COMMAND_S`` after
        they came, part of one and silence for ``HALF_SENT_S``, no AUTH within ``AUTH_S`` (with a password). An
        authenticated connection that is merely idle is kept (Redis's ``timeout 0``)."""
        for c in list(self.conns.values()):
            reading = bool(c.events & _IN)
            why = ""
            if not c.authed and now - c.since > AUTH_S:
                why = "did not authenticate"
            elif reading and not c.started and now - c.since > FIRST_COMMAND_S:
                why = "sent no command"
            elif reading and c.parser.pending and now - c.last_rx > HALF_SENT_S:
                why = "sent part of a command, then nothing"
            if why:
                self.timed_out += 1
                self.limiter.warn("timeout", "event=resp_timeout fd=%d peer=%s: %s; closed", c.fd, c.peer, why)
                try:
                    c.sock.send(resp.error(f"ERR timeout: this connection {why} in time"))
                except OSError:
                    pass
                self._close(c)
        if len(self.auth_allowance) > 10_000:  # forget the addresses whose allowance is whole again
            self.auth_allowance = {a: v for a, v in self.auth_allowance.items()
                                   if v[0] + (now - v[1]) * AUTH_PER_S < AUTH_BURST}

    def tick(self, now: float) -> None:
        """Retries: writes whose leader was unknown or changed, forwarded ones unanswered for ``RESEND_S``, and the
        ones past their deadline answered with an error. Once a second, connections that hold a slot for nothing
        are closed (``_sweep``)."""
        if now >= self._next_sweep:
            self._next_sweep = now + 1.0
            self._sweep(now)
        for rid, w in list(self.writes.items()):
            if now >= w.deadline:
                self.on_replies(b"", [{"id": rid, "ok": False, "error": Err.NO_LEADER,
                                       "message": f"no leader took the write within {WRITE_DEADLINE_S:.0f} s; it may "
                                       "or may not have been applied"}], final=True)
            elif (w.due and now >= w.due) or (w.target > 0 and now - w.sent >= RESEND_S):
                w.due = 0.0
                self._submit_write(rid, now)
        if self.local_writes:
            self.local_writes = False
            self._hand_over()
            self.replica.end_input()

    def on_replies(self, identity: bytes, replies: list[dict[str, Any]], final: bool = False) -> None:
        """The answers to a Redis connection's requests (the replica's, or the leader's for forwarded writes). A
        write that no leader took (a follower's, an election) is tried again, up to its deadline."""
        waiting = self.waiting
        now = time.monotonic()
        for r in replies:
            rid = r.get("id", -1)
            readers = self.barriers.pop(rid, None)
            if readers is not None:
                self._serve_reads(readers, r)
                continue
            w = self.writes.get(rid)
            if w is not None:
                if not final and not r.get("ok") and r.get("error") in _RETRY and now < w.deadline:
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
        failed = _failure(barrier, False)
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

    def _execute(self, c: Conn, args: list[bytes]) -> None:
        name = args[0].upper()
        handler = _COMMANDS.get(name)
        if handler is None:
            shown = args[0][:128].decode(errors="replace")
            rest = " ".join(f"'{a[:64].decode(errors='replace')}'" for a in args[1:8])
            self._immediate(c, resp.error(f"ERR unknown command '{shown}', with args beginning with: {rest}"))
            return
        arity, fn = handler
        if not c.authed and name not in _BEFORE_AUTH:
            self._immediate(c, resp.error("NOAUTH Authentication required."))
            return
        if (arity > 0 and len(args) != arity) or (arity < 0 and len(args) < -arity):
            self._immediate(c, resp.error(f"ERR wrong number of arguments for '{name.decode().lower()}' command"))
            return
        fn(self, c, args)


# ---------------------------------------------------------------------- replies from native answers

def _failure(r: dict[str, Any], write: bool) -> bytes | None:
    """The Redis error for a failed native answer (None: it succeeded)."""
    if r.get("ok"):
        return None
    err = r.get("error", "")
    if err == Err.NOT_LEADER and write:
        ld = r.get("leader", 0)
        where = f"node {ld} ({r.get('leader_addr', '')})" if ld else "not known yet"
        return resp.error(f"READONLY You can't write against a read only replica. (zraft: the leader is {where})")
    if err in (Err.NOT_LEADER, Err.LEADER_CHANGED, Err.NO_LEADER, Err.BUSY):
        return resp.error(f"TRYAGAIN {r.get('message', err)}")
    if err == Err.TOO_LARGE:
        return resp.error(f"ERR string exceeds maximum allowed size ({r.get('message', '')})")
    return resp.error(f"ERR {err}: {r.get('message', '')}")


def _first_failure(answers: list[dict[str, Any]], write: bool) -> bytes | None:
    for r in answers:
        bad = _failure(r, write)
        if bad is not None:
            return bad
    return None


def _blocked(c: Conn, name: bytes) -> bool:
    """Whether command ``name`` must wait: a read for the connection's unanswered writes, a write for its reads."""
    if name in _READS:
        return bool(c.unfinished)
    if name in _WRITES:
        return c.reads > 0
    return False


def _done_writes(s: RespServer, c: Conn, reqs: list[dict[str, Any]]) -> None:
    for req in reqs:
        c.unfinished.discard(req.get("seq", 0))
    if c.deferred and not c.unfinished:
        s.waiting_resume = True


# ---------------------------------------------------------------------- the commands

def _ping(s: RespServer, c: Conn, a: list[bytes]) -> None:
    if len(a) > 2:
        s._immediate(c, resp.error("ERR wrong number of arguments for 'ping' command"))
    else:
        s._immediate(c, resp.PONG if len(a) == 1 else resp.bulk(a[1]))


def _echo(s: RespServer, c: Conn, a: list[bytes]) -> None:
    s._immediate(c, resp.bulk(a[1]))


def _select(s: RespServer, c: Conn, a: list[bytes]) -> None:
    s._immediate(c, resp.OK if a[1] == b"0" else resp.error("ERR DB index is out of range"))


def _quit(s: RespServer, c: Conn, a: list[bytes]) -> None:
    s._immediate(c, resp.OK)
    c.closing = True


def _auth(s: RespServer, c: Conn, a: list[bytes]) -> None:
    if len(a) not in (2, 3):
        s._immediate(c, resp.error("ERR wrong number of arguments for 'auth' command"))
        return
    if s.password is None:
        s._immediate(c, resp.error("ERR AUTH <password> called without any password configured for the default "
                                   "user. Are you sure your configuration is correct?"))
        return
    s._immediate(c, _check(s, c, a[1] if len(a) == 3 else b"default", a[-1]) or resp.OK)


_WRONGPASS = resp.error("WRONGPASS invalid username-password pair or user is disabled.")


def _check(s: RespServer, c: Conn, user: bytes, password: bytes) -> bytes | None:
    """None if ``user`` and ``password`` are right (the connection is then authenticated), else the error to answer.
    Wrong passwords are rate-limited: ``MAX_AUTH_FAILURES`` close the connection, and a source address past its
    allowance (``AUTH_BURST``, ``AUTH_PER_S``) is refused unchecked until the allowance grows back."""
    assert s.password is not None
    now = time.monotonic()
    left, then = s.auth_allowance.get(c.peer, (float(AUTH_BURST), now))
    left = min(float(AUTH_BURST), left + (now - then) * AUTH_PER_S)
    if left < 1.0:
        s.auth_allowance[c.peer] = (left, now)
        s.limiter.warn("auth_limited", "event=resp_auth_limited peer=%s: too many wrong passwords; refused unchecked",
                       c.peer)
        return resp.error("ERR too many wrong passwords from this address; try again in a few seconds")
    if user == b"default" and hmac.compare_digest(password, s.password):
        if not c.authed:
            c.authed = True
            del s.unauthed[c.fd]
        return None
    s.auth_allowance[c.peer] = (left - 1.0, now)
    s.auth_failures += 1
    c.auth_failures += 1
    s.limiter.warn("auth", "event=resp_auth_failed fd=%d peer=%s (a wrong password)", c.fd, c.peer)
    if c.auth_failures >= MAX_AUTH_FAILURES:
        c.closing = True  # closed once this answer is sent
    return _WRONGPASS


def _hello(s: RespServer, c: Conn, a: list[bytes]) -> None:
    i = 2
    while i < len(a):  # HELLO protover [AUTH username password] [SETNAME clientname]
        opt = a[i].upper()
        if opt == b"AUTH" and i + 2 < len(a):
            bad = _WRONGPASS if s.password is None else _check(s, c, a[i + 1], a[i + 2])
            if bad is not None:
                s._immediate(c, bad)
                return
            i += 3
        elif opt == b"SETNAME" and i + 1 < len(a):
            c.name = a[i + 1][:128]
            i += 2
        else:
            s._immediate(c, resp.error(f"ERR Syntax error in HELLO option '{a[i][:64].decode(errors='replace')}'"))
            return
    if not c.authed:
        s._immediate(c, resp.error("NOAUTH HELLO must be called with the client already authenticated, otherwise the "
                                   "HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client "
                                   "and select the RESP protocol version at the same time"))
        return
    proto = c.r.proto  # HELLO without a version: the one in use, unchanged
    if len(a) > 1:
        if not a[1].isdigit():
            s._immediate(c, resp.error("ERR Protocol version is not an integer or out of range"))
            return
        proto = int(a[1])
        if proto not in (2, 3):
            s._immediate(c, resp.error("NOPROTO unsupported protocol version"))
            return
    # From here on every reply of this connection is in the protocol asked for (the commands after HELLO in a
    # pipeline included: each command's reply is made with the protocol in use when it ran).
    c.r = resp.RESP3 if proto == 3 else resp.RESP2
    role = "master" if s.replica.raft.role is Role.LEADER else "replica"
    b = resp.bulk
    s._immediate(c, c.r.map([(b(b"server"), b(b"redis")), (b(b"version"), b(VERSION.encode())),
                             (b(b"proto"), resp.integer(proto)), (b(b"id"), resp.integer(c.num)),
                             (b(b"mode"), b(b"standalone")), (b(b"role"), b(role.encode())),
                             (b(b"modules"), resp.EMPTY_ARRAY)]))


def _client(s: RespServer, c: Conn, a: list[bytes]) -> None:
    sub = a[1].upper()
    if sub == b"SETNAME" and len(a) == 3:
        if any(ch <= 32 or ch > 126 for ch in a[2]):
            s._immediate(c, resp.error("ERR Client names cannot contain spaces, newlines or special characters."))
            return
        c.name = a[2][:128]
        s._immediate(c, resp.OK)
    elif sub == b"GETNAME" and len(a) == 2:
        s._immediate(c, c.r.bulk(c.name or None))
    elif sub == b"ID" and len(a) == 2:
        s._immediate(c, resp.integer(c.num))
    elif sub == b"SETINFO" and len(a) == 4:
        s._immediate(c, resp.OK)
    else:
        s._immediate(c, resp.error(f"ERR unknown subcommand '{a[1][:64].decode(errors='replace')}'. Try CLIENT HELP."))


def _command(s: RespServer, c: Conn, a: list[bytes]) -> None:
    sub = a[1].upper() if len(a) > 1 else b""
    if sub == b"COUNT":
        s._immediate(c, resp.integer(len(_COMMANDS)))
    elif sub == b"DOCS":
        s._immediate(c, c.r.map([]))  # enough for redis-cli's hints (a map in RESP3, as Redis 7 answers)
    elif sub in (b"", b"INFO"):
        s._immediate(c, resp.EMPTY_ARRAY)
    else:
        s._immediate(c, resp.error(f"ERR unknown subcommand '{a[1][:64].decode(errors='replace')}'."))


_CONFIG = {b"save": b"", b"appendonly": b"yes", b"appendfsync": b"always", b"databases": b"1",
           b"timeout": b"0"}
"""What CONFIG GET reports: the settings clients and tools ask about, with what zraft does in their terms."""


def _config(s: RespServer, c: Conn, a: list[bytes]) -> None:
    if a[1].upper() == b"GET" and len(a) >= 3:  # CONFIG GET parameter [parameter ...]: glob patterns, as Redis 7
        found: dict[bytes, bytes] = {}
        known = {**_CONFIG, b"maxclients": b"%d" % s.max_clients}
        for pattern in a[2:]:
            pattern = pattern.lower()
            for name, value in known.items():
                if name == pattern or fnmatch.fnmatchcase(name, pattern):
                    found[name] = value
        s._immediate(c, c.r.map([(resp.bulk(k), resp.bulk(v)) for k, v in found.items()]))
    else:
        s._immediate(c, resp.error("ERR CONFIG: only CONFIG GET is supported"))


def _info(s: RespServer, c: Conn, a: list[bytes]) -> None:
    st = s.replica.status()
    leader = st.get("role") == "leader"
    lines = ["# Server", f"redis_version:{VERSION}", "redis_mode:standalone", "zraft:1", f"process_id:{os.getpid()}",
             f"tcp_port:{s.address.rpartition(':')[2]}", f"zraft_node:{st['node']}",
             f"zraft_cluster_id:{st.get('cluster_id', '')}", "", "# Clients",
             f"connected_clients:{len(s.conns)}", f"maxclients:{s.max_clients}", "", "# Replication",
             f"role:{'master' if leader else 'slave'}", f"zraft_role:{st['role']}", f"zraft_term:{st['term']}",
             f"zraft_leader:{st['leader']}", f"zraft_leader_addr:{st.get('leader_addr', '')}",
             f"zraft_commit_index:{st['commit']}", f"zraft_applied_index:{st['applied']}",
             f"zraft_last_index:{st['last_index']}", f"zraft_snapshot_index:{st['snapshot_index']}",
             f"zraft_voters:{','.join(map(str, st.get('voters', [])))}", "", "# Keyspace"]
    if st["keys"]:
        lines.append(f"db0:keys={st['keys']},expires=0,avg_ttl=0")
    want = {x.lower() for x in a[1:]} - {b"all", b"everything", b"default"}
    if want:  # only the sections asked for
        sections = "\r\n".join(lines).split("\r\n\r\n")
        lines = [sec for sec in sections if sec[2:].split("\r\n")[0].lower().encode() in want]
        lines = ["\r\n\r\n".join(lines)] if lines else []
    s._immediate(c, c.r.verbatim(("\r\n".join(lines) + "\r\n").encode() if lines else b""))


def _get(s: RespServer, c: Conn, a: list[bytes]) -> None:
    key = a[1]
    bulk = c.r.bulk
    _whole_store(s, c, lambda data: bulk(data.get(key)))


def _mget(s: RespServer, c: Conn, a: list[bytes]) -> None:
    keys = a[1:]  # all read at one moment (one read barrier): an MSET is seen whole or not at all
    bulks = c.r.bulks

    def make(data: kv.KVStore) -> bytes:
        values = [data.get(k) for k in keys]
        return _too_large(sum(len(v) for v in values if v is not None)) or bulks(values)

    _whole_store(s, c, make)


def _exists(s: RespServer, c: Conn, a: list[bytes]) -> None:
    keys = a[1:]
    _whole_store(s, c, lambda data: resp.integer(sum(1 for k in keys if k in data)))


def _strlen(s: RespServer, c: Conn, a: list[bytes]) -> None:
    key = a[1]
    _whole_store(s, c, lambda data: resp.integer(len(data.get(key) or b"")))


def _whole_store(s: RespServer, c: Conn, make: Callable[[kv.KVStore], bytes]) -> None:
    """A read: ``make(store)`` when a linearizable read barrier is served. Every read of a loop pass, of every
    connection, shares one barrier (one read index: one READ_INDEX from a follower, not one per GET); each is
    answered from the store as it is when the barrier is served -- in this process, with nothing applied in
    between -- a moment after every one of them was sent, before any was answered."""
    p = Pending(1, None, read=True)
    c.queue.append(p)
    c.reads += 1
    s.barrier_reads.append((c, p, make))


def _too_large(size: int) -> bytes | None:
    """The error for a reply of ``size`` bytes of values, if it is past ``MAX_REPLY`` (checked before it is made)."""
    if size <= MAX_REPLY:
        return None
    return resp.error(f"ERR the reply would hold {size} bytes; zraft sends at most {MAX_REPLY} in one reply")


def _dbsize(s: RespServer, c: Conn, a: list[bytes]) -> None:
    _whole_store(s, c, lambda data: resp.integer(len(data)))


def _keys(s: RespServer, c: Conn, a: list[bytes]) -> None:
    pattern = a[1]

    def make(data: kv.KVStore) -> bytes:
        n = len(data)
        if n > MAX_KEYS_STORE:
            return resp.error(f"ERR KEYS would read all {n} keys in one step of this node's event loop (it does for at "
                              f"most {MAX_KEYS_STORE}): use SCAN")
        keys: list[bytes | None] = list(data) if pattern == b"*" else \
            [k for k in data if fnmatch.fnmatchcase(k, pattern)]
        return _too_large(sum(len(k or b"") for k in keys)) or resp.bulks(keys)

    _whole_store(s, c, make)


def _scan(s: RespServer, c: Conn, a: list[bytes]) -> None:
    """SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]. Keys are visited in the order of their CRC-32 (the same
    on every node, whatever was inserted or deleted): a cursor is the CRC to go on from, so a key present for the
    whole iteration is returned exactly once, on any node. The store's shards hold consecutive ranges of that order
    (``kv.SHARD_SHIFT``): a call returns the rest of the cursor's shard and as many whole shards after it as it takes
    to reach COUNT keys (COUNT is a hint in Redis too). A call costs the loop one shard's keys, not the store's (one
    sorted all ten million keys: 1.1 s per million, time enough for an election), and a full iteration is at most 256
    calls."""
    cursor = _arg_int(a[1])
    if cursor is None or not 0 <= cursor <= 1 << 32:
        s._immediate(c, resp.error("ERR invalid cursor"))
        return
    pattern, count, only_strings = b"*", 10, True
    i = 2
    while i < len(a):
        opt = a[i].upper()
        if i + 1 >= len(a):
            s._immediate(c, resp.error("ERR syntax error"))
            return
        if opt == b"MATCH":
            pattern = a[i + 1]
        elif opt == b"COUNT":
            n = _arg_int(a[i + 1])
            if n is None or n < 1:
                s._immediate(c, resp.error("ERR value is not an integer or out of range" if n is None else
                                           "ERR syntax error"))
                return
            count = n
        elif opt == b"TYPE":
            only_strings = a[i + 1].lower() == b"string"
        else:
            s._immediate(c, resp.error("ERR syntax error"))
            return
        i += 2
    start = cursor

    def make(data: kv.KVStore) -> bytes:
        if not only_strings:
            return resp.array([resp.bulk(b"0"), resp.EMPTY_ARRAY])
        shard = start >> kv.SHARD_SHIFT
        chosen: list[tuple[int, bytes]] = []
        while shard < kv.SHARDS and len(chosen) < count:
            chosen += sorted((h, k) for k in data.shards[shard] if (h := zlib.crc32(k)) >= start)
            shard += 1
        nxt = shard << kv.SHARD_SHIFT if shard < kv.SHARDS else 0
        keys: list[bytes | None] = [k for _, k in chosen if pattern == b"*" or fnmatch.fnmatchcase(k, pattern)]
        return resp.array([resp.bulk(b"%d" % nxt), resp.bulks(keys)])

    _whole_store(s, c, make)


def _set(s: RespServer, c: Conn, a: list[bytes]) -> None:
    req: dict[str, Any] = {"op": "put", "key": a[1], "value": a[2]}
    for opt in (x.upper() for x in a[3:]):
        if opt in (b"NX", b"XX", b"GET"):
            req[opt.decode().lower()] = True
        elif opt in (b"EX", b"PX", b"EXAT", b"PXAT", b"KEEPTTL"):
            s._immediate(c, resp.error("ERR zraft keeps keys until they are deleted: SET options EX, PX, EXAT, PXAT "
                                       "and KEEPTTL are not supported"))
            return
        else:
            s._immediate(c, resp.error("ERR syntax error"))
            return
    if req.get("nx") and req.get("xx"):
        s._immediate(c, resp.error("ERR syntax error"))
        return
    reqs = [req]
    conditional, get = "nx" in req or "xx" in req, "get" in req
    rr = c.r  # the protocol in use now: a HELLO later in the pipeline does not change this command's reply

    def finish(ans: list[dict[str, Any]]) -> bytes:
        _done_writes(s, c, reqs)
        r = ans[0]
        bad = _failure(r, True)
        if bad is not None:
            return bad
        if get:
            return rr.bulk(r.get("value"))
        return resp.OK if not conditional or r.get("done", True) else rr.null

    s._native(c, reqs, finish)


def _setnx(s: RespServer, c: Conn, a: list[bytes]) -> None:
    reqs = [{"op": "put", "key": a[1], "value": a[2], "nx": True}]

    def finish(ans: list[dict[str, Any]]) -> bytes:
        _done_writes(s, c, reqs)
        return _failure(ans[0], True) or resp.integer(1 if ans[0].get("done") else 0)

    s._native(c, reqs, finish)


def _incr_by(s: RespServer, c: Conn, key: bytes, by: int | None) -> None:
    if by is None:
        s._immediate(c, resp.error("ERR value is not an integer or out of range"))
        return
    reqs = [{"op": "incr", "key": key, "by": by}]

    def finish(ans: list[dict[str, Any]]) -> bytes:
        _done_writes(s, c, reqs)
        r = ans[0]
        if r.get("error") == "not_integer":
            return resp.error("ERR value is not an integer or out of range")
        if r.get("error") == "overflow":
            return resp.error("ERR increment or decrement would overflow")
        return _failure(r, True) or resp.integer(int(r.get("value") or b"0"))

    s._native(c, reqs, finish)


def _arg_int(b: bytes) -> int | None:
    try:
        n = int(b)
    except ValueError:
        return None
    return n if -(1 << 63) <= n < 1 << 63 and b.strip() == b and not b.startswith(b"+") else None


def _incr(s: RespServer, c: Conn, a: list[bytes]) -> None:
    _incr_by(s, c, a[1], 1)


def _decr(s: RespServer, c: Conn, a: list[bytes]) -> None:
    _incr_by(s, c, a[1], -1)


def _incrby(s: RespServer, c: Conn, a: list[bytes]) -> None:
    _incr_by(s, c, a[1], _arg_int(a[2]))


def _decrby(s: RespServer, c: Conn, a: list[bytes]) -> None:
    n = _arg_int(a[2])
    _incr_by(s, c, a[1], None if n is None or n == -(1 << 63) else -n)


def _getdel(s: RespServer, c: Conn, a: list[bytes]) -> None:
    reqs = [{"op": "getdel", "key": a[1]}]
    bulk = c.r.bulk

    def finish(ans: list[dict[str, Any]]) -> bytes:
        _done_writes(s, c, reqs)
        return _failure(ans[0], True) or bulk(ans[0].get("value"))

    s._native(c, reqs, finish)


def _mset(s: RespServer, c: Conn, a: list[bytes]) -> None:
    if len(a) % 2 == 0:
        s._immediate(c, resp.error("ERR wrong number of arguments for 'mset' command"))
        return
    if len(a) - 1 > 2 * codec.MAX_MSET_PAIRS:
        s._immediate(c, resp.error(f"ERR zraft's MSET takes at most {codec.MAX_MSET_PAIRS} pairs"))
        return
    reqs = [{"op": "mset", "pairs": a[1:]}]  # one log entry: every pair set at once, or none

    def finish(ans: list[dict[str, Any]]) -> bytes:
        _done_writes(s, c, reqs)
        return _failure(ans[0], True) or resp.OK

    s._native(c, reqs, finish)


def _append(s: RespServer, c: Conn, a: list[bytes]) -> None:
    reqs = [{"op": "append", "key": a[1], "value": a[2], "len": True}]

    def finish(ans: list[dict[str, Any]]) -> bytes:
        _done_writes(s, c, reqs)
        return _failure(ans[0], True) or resp.integer(ans[0].get("length", 0))

    s._native(c, reqs, finish)


def _del(s: RespServer, c: Conn, a: list[bytes]) -> None:
    reqs = [{"op": "delete", "key": k} for k in a[1:]]

    def finish(ans: list[dict[str, Any]]) -> bytes:
        _done_writes(s, c, reqs)
        return _first_failure(ans, True) or resp.integer(sum(1 for r in ans if r.get("found", True)))

    s._native(c, reqs, finish)


_COMMANDS: dict[bytes, tuple[int, Callable[[RespServer, Conn, list[bytes]], None]]] = {
    b"PING": (-1, _ping), b"ECHO": (2, _echo), b"SELECT": (2, _select), b"QUIT": (-1, _quit),
    b"HELLO": (-1, _hello), b"CLIENT": (-2, _client), b"COMMAND": (-1, _command), b"CONFIG": (-2, _config),
    b"INFO": (-1, _info), b"DBSIZE": (1, _dbsize), b"KEYS": (2, _keys), b"GET": (2, _get), b"MGET": (-2, _mget),
    b"EXISTS": (-2, _exists), b"STRLEN": (2, _strlen), b"SET": (-3, _set), b"APPEND": (3, _append),
    b"DEL": (-2, _del), b"SETNX": (3, _setnx), b"INCR": (2, _incr), b"DECR": (2, _decr), b"INCRBY": (3, _incrby),
    b"DECRBY": (3, _decrby), b"GETDEL": (2, _getdel), b"MSET": (-3, _mset), b"AUTH": (-2, _auth),
    b"SCAN": (-2, _scan),
}
"""Name -> (arity, handler): arity n means exactly n words (the name included), -n at least n."""
_BEFORE_AUTH = frozenset((b"AUTH", b"HELLO", b"PING", b"QUIT"))
_RETRY = frozenset((Err.NOT_LEADER, Err.LEADER_CHANGED, Err.NO_LEADER, Err.BUSY))
_READS = frozenset((b"GET", b"MGET", b"EXISTS", b"STRLEN", b"DBSIZE", b"KEYS", b"SCAN"))
_WRITES = frozenset((b"SET", b"APPEND", b"DEL", b"SETNX", b"INCR", b"DECR", b"INCRBY", b"DECRBY", b"GETDEL",
                     b"MSET"))
"""The commands that read the store (held back after a write of the same connection until it is answered)."""


class Routing:
    """The replica's transport with the answers to Redis connections routed to the Redis server."""

    def __init__(self, inner: Any, server: RespServer) -> None:
        self.inner = inner
        self.server = server

    def send(self, m: Any) -> None:
        self.inner.send(m)

    def send_chunk(self, peer: int, c: Any) -> bool:
        return bool(self.inner.send_chunk(peer, c))

    def send_ack(self, peer: int, a: Any) -> None:
        self.inner.send_ack(peer, a)

    def answer(self, client: bytes, replies: list[dict[str, Any]], batch: bool) -> None:
        if client[:5] == TAG:
            self.server.on_replies(client, replies)
        else:
            self.inner.answer(client, replies, batch)
