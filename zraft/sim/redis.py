"""The Redis server in the simulator: each node runs the production ``RespServer`` (``zraft.server.redis``) inside
its loop, with only its sockets and clock replaced, and simulated Redis clients speak RESP to it.

A connection is an in-memory byte stream with TCP's guarantees (nothing lost, nothing reordered, a delay each
way); a node that crashes takes its connections with it, and their clients see them close. What the server does
with the bytes is what a node does: it parses commands, hands their requests to the leader's replica (this node's,
or forwarded to the leader as a client frame, answered back), retries them through elections up to its deadline,
holds a connection's reads behind its writes, and answers. The clients append distinct elements and read keys; their
history joins the native clients' and is checked the same way (linearizable, every acknowledged append exactly
once), so a Redis write applied twice or a read that misses an acknowledged write fails the seed.
"""

from __future__ import annotations

import random
from collections import deque
from typing import TYPE_CHECKING, Any

from zraft.server.redis import protocol as resp
from zraft.server.redis.conn import WRITE_DEADLINE_S
from zraft.tools import check

from .checks import Violation

if TYPE_CHECKING:
    from .cluster import SimCluster

REDIS_COVERAGE = {
    "redis_forwarded": "a follower's Redis server forwarded a write to the leader, and was answered",
    "redis_reconnect": "a Redis client's connection closed under it (its node crashed) and it connected again",
    "redis_unknown": "a Redis write's outcome was unknown (an error or a lost connection): it may have applied",
}
"""What a seed with Redis clients counts besides ``cluster.COVERAGE`` (``SimCluster.cov``)."""

_IN, _OUT = 1, 2  # zmq.POLLIN, zmq.POLLOUT: what RespServer reads from its poller's results
CLIENT_TIMEOUT_MS = WRITE_DEADLINE_S * 1000.0 + 5000.0
"""A Redis client gives up on an answer after this long (the server answers a write by its deadline)."""


class SimStream:
    """One TCP connection between a Redis client and a node's server. The server's side is a socket (``fileno``,
    ``recv``, ``send``, ``close``); the client's side is ``client_send`` and the callbacks it gets."""

    def __init__(self, cluster: SimCluster, node_id: int, fd: int, client: RedisSimClient) -> None:
        self.c = cluster
        self.node_id = node_id
        self.fd = fd
        self.client = client
        self.inbuf = bytearray()
        """Bytes arrived at the server, not yet read."""
        self.client_closed = False
        self.server_closed = False
        self._to_server = 0.0
        self._to_client = 0.0
        """When the last bytes sent each way arrive: a stream delivers in order."""

    def _delay(self) -> float:
        cfg = self.c.net
        return self.c.redis_rng.uniform(cfg.min_delay, cfg.max_delay)

    # ---------------------------------------------------------------- the server's side (a non-blocking socket)

    def fileno(self) -> int:
        return self.fd

    def recv(self, bufsize: int, /) -> bytes:
        if self.inbuf:
            data = bytes(self.inbuf[:bufsize])
            del self.inbuf[:bufsize]
            return data
        if self.client_closed:
            return b""
        raise BlockingIOError

    def send(self, data: bytes | bytearray, /) -> int:
        if self.server_closed or self.client_closed:
            raise BrokenPipeError
        chunk = bytes(data)
        self._to_client = max(self.c.now + self._delay(), self._to_client)
        self.c.at(self._to_client - self.c.now, lambda: self.client.on_bytes(self, chunk))
        return len(chunk)

    def setblocking(self, flag: bool, /) -> None:
        pass

    def getpeername(self) -> Any:
        return (f"sim-redis-client-{self.client.number}", 0)

    def close(self) -> None:
        if self.server_closed:
            return
        self.server_closed = True
        self._to_client = max(self.c.now + self._delay(), self._to_client)
        self.c.at(self._to_client - self.c.now, lambda: self.client.on_closed(self))

    # ---------------------------------------------------------------- the client's side

    def client_send(self, data: bytes) -> None:
        self._to_server = max(self.c.now + self._delay(), self._to_server)
        self.c.at(self._to_server - self.c.now, lambda: self._arrive(data))

    def _arrive(self, data: bytes) -> None:
        if not self.server_closed:
            self.inbuf += data
            self.c.redis_wake(self.node_id)

    def client_close(self) -> None:
        self.client_closed = True
        self._to_server = max(self.c.now + self._delay(), self._to_server)
        self.c.at(self._to_server - self.c.now, lambda: self.c.redis_wake(self.node_id))


class SimListener:
    """A node's listening socket: the connections clients opened, waiting to be accepted."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pending: deque[SimStream] = deque()
        self.streams: dict[int, SimStream] = {}
        """Every connection it accepted, by fd (the server's poller names them by fd)."""
        self.closed = False

    def fileno(self) -> int:
        return self.fd

    def accept(self) -> tuple[SimStream, Any]:
        if not self.pending:
            raise BlockingIOError
        s = self.pending.popleft()
        self.streams[s.fd] = s
        return s, s.getpeername()

    def close(self) -> None:
        self.closed = True


class SimPoller:
    """What ``RespServer.attach`` registers its listener and connections with: the events each fd waits for."""

    def __init__(self) -> None:
        self.fds: dict[int, int] = {}

    def register(self, fd: int, events: int) -> None:
        self.fds[fd] = events

    def unregister(self, fd: int) -> None:
        self.fds.pop(fd, None)

    def ready(self, listener: SimListener) -> dict[Any, int]:
        """What a poll would return now: the listener if a connection waits, a connection with bytes to read (or
        closed by its client) if it waits for input, every connection that waits to write (memory never fills)."""
        out: dict[Any, int] = {}
        for fd, events in self.fds.items():
            if fd == listener.fd:
                if listener.pending:
                    out[fd] = _IN
                continue
            s = listener.streams.get(fd)
            if s is None:
                continue
            ev = (_IN if events & _IN and (s.inbuf or s.client_closed) else 0) | (events & _OUT)
            if ev:
                out[fd] = ev
        return out


class _Replies:
    """A RESP2 reply parser for the client: simple strings, errors, integers and bulk strings (what the commands
    it sends answer)."""

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, data: bytes) -> list[tuple[str, Any]]:
        self.buf += data
        out: list[tuple[str, Any]] = []
        while True:
            end = self.buf.find(b"\r\n")
            if end < 0:
                return out
            kind, line = self.buf[:1], self.buf[1:end]
            if kind == b"$":
                n = int(line)
                if n < 0:
                    out.append(("bulk", None))
                    self.buf = self.buf[end + 2:]
                    continue
                if len(self.buf) < end + 2 + n + 2:
                    return out
                out.append(("bulk", self.buf[end + 2:end + 2 + n]))
                self.buf = self.buf[end + 2 + n + 2:]
                continue
            self.buf = self.buf[end + 2:]
            if kind == b"+":
                out.append(("simple", line))
            elif kind == b"-":
                out.append(("error", line.decode(errors="replace")))
            elif kind == b":":
                out.append(("int", int(line)))
            else:
                raise Violation(f"the Redis server sent a reply this client cannot read: {kind + line!r:.80}")


class RedisSimClient:
    """One Redis client: one connection to a node chosen at random (any node: followers forward writes), one
    command at a time -- ``APPEND key <number>-r<n>;`` or ``GET key`` -- and a new connection, to another node,
    when one closes or stops answering. An error or a lost connection leaves an append's outcome unknown."""

    def __init__(self, cluster: SimCluster, number: int, rng: random.Random, keys: tuple[str, ...],
                 history: list[check.Op]) -> None:
        self.c = cluster
        self.number = number
        self.rng = rng
        self.keys = keys
        self.history = history
        self.stopped = False
        self.sessions = 0
        """Connections opened (each is a session of the server's)."""
        self.appended = 0
        self.stream: SimStream | None = None
        self.parser = _Replies()
        self._op: tuple[str, str, bytes | None] | None = None
        """(kind, key, element) of the command waiting for its reply."""
        self._call = 0.0
        self._attempt = 0

    @property
    def busy(self) -> bool:
        return self._op is not None

    def start(self, delay: float) -> None:
        self.c.at(delay, self._next)

    def _connect(self) -> SimStream | None:
        up = [i for i, nd in sorted(self.c.nodes.items()) if nd.up and nd.listener is not None]
        if not up:
            return None
        node = self.rng.choice(up)
        self.sessions += 1
        self.parser = _Replies()
        self.stream = self.c.redis_connect(node, self)
        return self.stream

    def _next(self) -> None:
        if self.stopped or self._op is not None:
            return
        s = self.stream if self.stream is not None and not self.stream.client_closed else self._connect()
        if s is None:
            self.c.at(self.rng.uniform(50, 200), self._next)
            return
        key = self.rng.choice(self.keys)
        if self.rng.random() < 0.6:
            self.appended += 1
            element = f"{self.number}-r{self.appended};".encode()
            self._op = ("append", key, element)
            s.client_send(resp.command(b"APPEND", key.encode(), element))
        else:
            self._op = ("get", key, None)
            s.client_send(resp.command(b"GET", key.encode()))
        self._call = self.c.now
        self._attempt += 1
        attempt = self._attempt
        self.c.at(CLIENT_TIMEOUT_MS, lambda: self._timeout(attempt))

    def on_bytes(self, s: SimStream, data: bytes) -> None:
        if s is not self.stream:
            return  # a connection given up on
        for kind, value in self.parser.feed(data):
            op = self._op
            if op is None:
                raise Violation(f"Redis client {self.number}: a reply to no command: {kind} {value!r:.60}")
            if kind == "error":
                self._finish(None, unknown=True)
            elif op[0] == "append" and kind == "int":
                self._finish(value, unknown=False)
            elif op[0] == "get" and kind == "bulk":
                self._finish(value, unknown=False)
            else:
                raise Violation(f"Redis client {self.number}: {op[0]} answered {kind} {value!r:.60}")

    def on_closed(self, s: SimStream) -> None:
        if s is not self.stream:
            return
        self.stream = None
        s.client_closed = True
        self.c.cov["redis_reconnect"] += 1
        if self._op is not None:
            self._finish(None, unknown=True)

    def _timeout(self, attempt: int) -> None:
        if attempt != self._attempt or self._op is None:
            return
        if self.stream is not None:
            self.stream.client_close()
            self.stream = None
        self._finish(None, unknown=True)

    def _finish(self, value: Any, unknown: bool) -> None:
        op = self._op
        assert op is not None
        self._op = None
        self._attempt += 1
        kind, key, element = op
        if kind == "append":
            if unknown:
                self.c.cov["redis_unknown"] += 1
            self.history.append(check.Op(100 + self.number, "append", key, element, None, self._call,
                                         None if unknown else self.c.now))
        elif not unknown:  # a read that failed changed nothing and says nothing
            self.history.append(check.Op(100 + self.number, "get", key, None, value, self._call, self.c.now))
        if not self.stopped:
            self.c.at(self.rng.uniform(5, 60), self._next)
