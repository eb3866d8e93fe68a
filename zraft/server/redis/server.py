"""A node's Redis-protocol port: redis-cli, redis-benchmark and any Redis client talk to the cluster.

Runs inside the node's event loop (its listening socket and connections are polled with the ZeroMQ sockets), and
turns each Redis command into requests of zraft's own protocol, handed to the replica exactly as a native client's
would be: writes of one loop pass become one log append (a pipeline of 16 SETs is one proposal), reads are
linearizable (ReadIndex), every write has a session (the connection's) so it is applied at most once. The replica
answers through ``Routing.answer``, which gives the answers for Redis connections to this server; a command's
reply is written when all of its requests are answered, and replies go out in the order the commands came.

Bounds (``conn.py``): ``MAX_CLIENTS`` connections (one more is told ``-ERR max number of clients reached`` and
closed), commands bounded by ``protocol.py``, at most ``MAX_QUEUED`` commands waiting per connection (it is not read
meanwhile), ``INPUT_BUDGET`` bytes of incomplete commands over all connections. Replies: a connection with more than
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
import itertools
import logging
import random
import socket
import time
from collections.abc import Callable
from typing import Any

import zmq

from zraft.server.redis import protocol as resp
from zraft.server.redis.bridge import ReplicaBridge
from zraft.server.redis.commands import BEFORE_AUTH, COMMANDS, blocked
from zraft.server.redis.conn import (
    AUTH_BURST,
    AUTH_PER_S,
    AUTH_S,
    BARRIER,
    FIRST_COMMAND_S,
    HALF_SENT_S,
    INPUT_BUDGET,
    MAX_CLIENTS,
    MAX_OUT,
    MAX_QUEUED,
    MAX_UNAUTHED,
    OUT_CAP,
    RECV_BYTES,
    RESEND_S,
    TAG,
    WRITE_DEADLINE_S,
    Conn,
    Listener,
    Pending,
    Write,
)
from zraft.server.redis.expiry import EXPIRY_COMMANDS
from zraft.server.redis.multi import IN_MULTI, TXN_COMMANDS, queue
from zraft.server.redis.notify import NOTIFY_COMMANDS, publish_changes, subscribed_refusal
from zraft.server.replica import Replica
from zraft.statemachine import kv
from zraft.statemachine.kv import KVStore
from zraft.transport import codec, requests
from zraft.transport.codec import Err
from zraft.util.logutil import LogLimiter

log = logging.getLogger("zraft.resp")
COMMANDS.update(TXN_COMMANDS)  # (one table: COMMAND COUNT and DOCS read it too)
COMMANDS.update(EXPIRY_COMMANDS)
COMMANDS.update(NOTIFY_COMMANDS)
_IN, _OUT, _ERR = int(zmq.POLLIN), int(zmq.POLLOUT), int(zmq.POLLERR)  # a zmq.Poller's flags, for plain fds too


class RespServer(ReplicaBridge):
    def __init__(self, replica: Replica[KVStore], bind: str, max_clients: int = MAX_CLIENTS,
                 forward: Callable[[int, bytes], bool] | None = None, password: bytes | None = None,
                 clock: Callable[[], float] = time.monotonic, listener: Listener | None = None,
                 rng: random.Random | None = None) -> None:
        """``forward(node, frame)``: send a frame of client requests to a node over the peer connection (its
        answers come back to ``on_replies``). ``password``: what AUTH must give before anything but AUTH, HELLO,
        PING and QUIT is served (None: no authentication). The seams the simulator replaces: ``clock`` (every
        time the server reads), ``listener`` (a listening socket on ``bind`` when None), ``rng`` (the connections'
        session ids; the OS's randomness when None)."""
        self.password = password
        host, _, port = bind.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--resp {bind!r}: expected HOST:PORT")
        self.replica = replica
        self.address = bind
        self.max_clients = max_clients
        self.clock = clock
        self._session_ids = rng or random.SystemRandom()
        if listener is None:
            sock = socket.create_server((host.strip("[]"), int(port)), backlog=128,
                                        family=socket.AF_INET6 if ":" in host else socket.AF_INET)
            sock.setblocking(False)
            listener = sock
        self.listener: Listener = listener
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
        self.subscribers: set[Conn] = set()
        """Connections subscribed to keyspace notifications (``notify.py``)."""
        self.notified = replica.watches.revision
        """The revision up to which they were sent the node's changes."""
        self.again: set[Conn] = set()
        """Connections to flush in the next loop pass even if nothing happens on them (``flush``)."""
        self.forward = forward
        self.writes: dict[int, Write] = {}
        """Every write not yet answered for good, by request id (retried through elections and redirects)."""
        self.outbox: dict[int, list[requests.Request]] = {}
        """Writes to forward to the leader at the end of this loop pass."""
        self.local_writes = False
        self.batch: dict[bytes, list[requests.Request]] = {}
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
            c.last_rx = self.clock()  # reading again: its silence counts from now
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
            self.batch.setdefault(BARRIER, []).append(requests.Get(rid, b""))
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
        if self.replica.watches.revision != self.notified:
            publish_changes(self)
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
                self.forward(target, codec.encode_requests(reqs[lo:lo + 256]))  # lost: resent after RESEND_S
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
            if isinstance(sock, socket.socket):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                peer = str(sock.getpeername()[0])
            except OSError:
                peer = ""
            c = Conn(sock, next(self._nums), self.password is None, peer, self.clock(),
                     self._session_ids.randrange(1, 1 << 62))
            if not c.authed:
                self.unauthed[c.fd] = c
            self.conns[c.fd] = c
            self.by_ident[c.ident] = c
            self._watch(c)

    def _close(self, c: Conn) -> None:
        if self.conns.get(c.fd) is not c:
            return
        del self.conns[c.fd]
        self.subscribers.discard(c)
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
        c.last_rx = self.clock()
        try:
            commands = c.parser.feed(data)
        except resp.RespError as e:
            self.immediate(c, resp.error(f"ERR {e}"))
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
            if c.deferred or blocked(c, args[0].upper()):
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
            self.immediate(c, resp.error("ERR internal error"))

    def _resume(self) -> bool:
        """Run held-back commands whose earlier writes are answered; True if any was run."""
        ran = False
        for c in list(self.conns.values()):
            while c.deferred and not blocked(c, c.deferred[0][0].upper()):
                self._run(c, c.deferred.popleft())
                ran = True
                self.dirty.add(c)
        return ran

    # ------------------------------------------------------------------ commands

    def immediate(self, c: Conn, data: bytes) -> None:
        c.queue.append(Pending(0, None, data))
        c.built += len(data)

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

    def _execute(self, c: Conn, args: list[bytes]) -> None:
        name = args[0].upper()
        handler = COMMANDS.get(name)
        if handler is None:
            shown = args[0][:128].decode(errors="replace")
            rest = " ".join(f"'{a[:64].decode(errors='replace')}'" for a in args[1:8])
            self.immediate(c, resp.error(f"ERR unknown command '{shown}', with args beginning with: {rest}"))
            c.multi_failed = c.multi is not None
            return
        arity, fn = handler
        if not c.authed and name not in BEFORE_AUTH:
            self.immediate(c, resp.error("NOAUTH Authentication required."))
            return
        if (arity > 0 and len(args) != arity) or (arity < 0 and len(args) < -arity):
            self.immediate(c, resp.error(f"ERR wrong number of arguments for '{name.decode().lower()}' command"))
            c.multi_failed = c.multi is not None
            return
        if c.multi is not None and name not in IN_MULTI:
            queue(self, c, args)  # after MULTI: queued for EXEC (multi.py)
            return
        if c.channels or c.patterns:
            refused = subscribed_refusal(c, name)
            if refused is not None:
                self.immediate(c, refused)
                return
        fn(self, c, args)


# ---------------------------------------------------------------------- replies from native answers


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
