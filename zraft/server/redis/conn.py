"""A Redis connection's state, what it waits for, and the limits every connection is held to (the server's docstring
explains them)."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from zraft.server.redis import protocol as resp
from zraft.statemachine import kv
from zraft.transport import requests

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


class Pending:
    """A command waiting for the answers to its native requests."""

    __slots__ = ("answers", "data", "finish", "left", "read", "seqs")

    def __init__(self, n: int, finish: Finish | None, data: bytes = b"", read: bool = False) -> None:
        self.answers: list[dict[str, Any]] = [{}] * n
        self.left = n
        self.finish = finish
        self.data = data
        """The reply, once known."""
        self.read = read
        self.seqs: list[int] = []
        """The sequence numbers of its writes in the connection's session (``Conn.unfinished`` until answered)."""


class Write:
    __slots__ = ("deadline", "due", "ident", "req", "sent", "target")

    def __init__(self, req: requests.Write | requests.LeaderOnly, ident: bytes, deadline: float) -> None:
        self.req = req
        self.ident = ident
        self.deadline = deadline
        self.sent = 0.0
        self.due = 0.0
        """When to try again (0: not scheduled)."""
        self.target = 0
        """Where it went: 0 this node (the leader), a node id (forwarded), -1 nowhere yet."""


class Stream(Protocol):
    """A connection's socket as the server uses it: a non-blocking ``socket.socket``, or the simulator's in-memory
    stream (``zraft.sim.redis``)."""

    def fileno(self) -> int: ...
    def recv(self, bufsize: int, /) -> bytes: ...
    def send(self, data: bytes | bytearray, /) -> int: ...
    def setblocking(self, flag: bool, /) -> None: ...
    def getpeername(self) -> Any: ...
    def close(self) -> None: ...


class Listener(Protocol):
    """The listening socket: ``accept`` gives a new connection or raises ``BlockingIOError``."""

    def fileno(self) -> int: ...
    def accept(self) -> tuple[Any, Any]: ...
    def close(self) -> None: ...


class Conn:
    __slots__ = ("auth_failures", "authed", "built", "channels", "client", "closing", "deferred", "events", "fd",
                 "ident", "last_rx", "multi", "multi_failed", "name", "num", "out", "parser", "patterns", "peer",
                 "queue", "r", "reads", "seq", "since", "sock", "started", "unbuilt", "unfinished", "watched")

    def __init__(self, sock: Stream, num: int, authed: bool, peer: str = "", now: float = 0.0,
                 client: int = 0) -> None:
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
        self.client = client or random.SystemRandom().randrange(1, 1 << 62)
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
        self.multi: list[list[bytes]] | None = None
        """The commands queued since MULTI (None: not in a transaction)."""
        self.multi_failed = False
        """A command after MULTI was refused: EXEC answers EXECABORT."""
        self.watched: dict[bytes, int] = {}
        """WATCHed keys and the mod_revision each had when watched (0: absent)."""
        self.channels: set[bytes] | None = None
        self.patterns: set[bytes] | None = None
        """The channels and patterns it subscribed to (``notify.py``; None: none)."""

    def __hash__(self) -> int:
        return self.num  # not the object's address: sets of connections iterate in the same order every run

    def __eq__(self, other: object) -> bool:
        return self is other


