"""Watching keys: ``Client.watch`` returns a ``WatchStream``, an iterator of the changes to a key, a prefix or a range
from a revision on, each once, in revision order -- across a node's death, a leader change or a lost message: the
stream resumes on another node from the revision after the last one it delivered.

The protocol (docs/PROTOCOL.md): a ``watch`` request to any node, answered ``watching`` and then by batches of
events with the same request id, numbered (``n``); the stream acks the revision it has about every second (which
keeps the watch); a node that has nothing to send sends an empty batch every second. A batch missing, an error
other than ``compacted``, or three seconds of silence: watch again, on the next node, from the next revision.
"""

from __future__ import annotations

import itertools
import random
import time
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import zmq

from zraft.client.errors import Unavailable, ZraftError
from zraft.transport import codec
from zraft.transport.security import client_socket
from zraft.transport.zmq_transport import tune_tcp

if TYPE_CHECKING:
    from zraft.client.client import Client

ACK_EVERY_S = 1.0
SILENCE_S = 3.0
"""A node that sends nothing (not even progress) for this long is given up for the next one."""


class Event(NamedTuple):
    type: str
    """``put`` or ``delete``."""
    key: bytes
    value: bytes | None
    """The new value (None for a delete)."""
    create_revision: int
    mod_revision: int
    """The revision of this change."""
    version: int
    prev_value: bytes | None = None
    """The value before the change (None if the key was absent, or ``prev_kv`` was not asked for)."""


class Compacted(ZraftError):
    """The revision asked for is older than every node's history: read the keys again, and watch from there."""

    def __init__(self, message: str, compact_revision: int) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision


def _event(x: Any, prev_kv: bool) -> Event:
    if (type(x) is not list or len(x) != (7 if prev_kv else 6) or x[0] not in ("put", "delete")
            or type(x[1]) is not bytes or not (x[2] is None or type(x[2]) is bytes)
            or not all(type(v) is int for v in x[3:6]) or (prev_kv and not (x[6] is None or type(x[6]) is bytes))):
        raise ZraftError(f"malformed watch event {x!r:.200}")
    return Event(*x)


class WatchStream:
    def __init__(self, client: Client, key: bytes, end: bytes | None, prefix: bool, all_keys: bool,
                 start_revision: int, prev_kv: bool) -> None:
        self.client = client
        self.base = {"op": "watch", "key": key, **({"end": end} if end is not None else {}),
                     **({"prefix": True} if prefix else {}), **({"all": True} if all_keys else {}),
                     **({"prev_kv": True} if prev_kv else {})}
        self.prev_kv = prev_kv
        self.next_rev = start_revision
        """The revision to resume from (0: from the node's next one, until the first answer says it)."""
        self.revision = start_revision - 1 if start_revision else 0
        """Every change up to this revision was delivered."""
        self.resumes = 0
        """Times the stream watched again (another node, a lost batch)."""
        self._ids = itertools.count(random.randrange(1 << 40, 1 << 50))
        self._node = client.leader if client.leader is not None else random.randrange(len(client.nodes))
        self._sock: zmq.Socket[bytes] | None = None
        self._wid = 0
        self._n = 0
        self._buffer: deque[Event] = deque()
        self._heard = 0.0
        self._acked_at = 0.0
        self._compacted: set[int] = set()
        self._closed = False
        client.enable_watches()  # (the cluster keeps a history of changes from now on, if it did not)
        self._start()
        # Once the first node answers, "from now" is a revision: every change after watch() returned is delivered.
        until = time.monotonic() + client.deadline
        while self._n < 0:
            if time.monotonic() > until:
                self.close()
                raise Unavailable(f"no node took the watch within {client.deadline:.1f} s")
            self._pump(0.2)

    # ------------------------------------------------------------------ what a user calls

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        while not self._buffer:
            if self._closed:
                raise StopIteration
            self._pump(1.0)
        return self._buffer.popleft()

    def get(self, timeout: float) -> list[Event]:
        """The events that arrive within ``timeout`` seconds (at least one if any does; [] if none)."""
        end = time.monotonic() + timeout
        while not self._buffer and not self._closed:
            left = end - time.monotonic()
            if left <= 0:
                break
            self._pump(min(left, 1.0))
        out = list(self._buffer)
        self._buffer.clear()
        return out

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._sock is not None:
            try:
                self._sock.send(codec.encode_client({"op": "watch_cancel", "id": next(self._ids), "watch": self._wid}),
                                zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
            self._sock.close(linger=0)
            self._sock = None

    def __enter__(self) -> WatchStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ machinery

    def _start(self) -> None:
        """Watch on ``self._node`` from ``next_rev``."""
        cl = self.client
        if self._sock is not None:
            self._sock.close(linger=0)
        addr = cl.nodes[self._node]
        s = cl.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        tune_tcp(s)
        if cl.keys is not None:
            client_socket(s, cl.keys.own, cl.keys.servers[addr])
        s.connect(f"tcp://{addr}")
        self._sock = s
        self._wid = next(self._ids)
        self._n = -1
        req = {**self.base, "id": self._wid}
        if self.next_rev:
            req["start_revision"] = self.next_rev
        s.send(codec.encode_client(req))
        self._heard = self._acked_at = time.monotonic()

    def _resume(self) -> None:
        self.resumes += 1
        self._node = (self._node + 1) % len(self.client.nodes)
        self._start()

    def _pump(self, timeout: float) -> None:
        """Receive for up to ``timeout`` seconds: events into the buffer; acks, resumes as due."""
        s = self._sock
        assert s is not None
        now = time.monotonic()
        if now - self._heard > SILENCE_S:
            self._resume()
            return
        if now - self._acked_at >= ACK_EVERY_S and self._n >= 0:
            self._acked_at = now
            try:
                s.send(codec.encode_client({"op": "watch_ack", "id": next(self._ids), "watch": self._wid,
                                            "revision": self.revision}), zmq.NOBLOCK)
            except zmq.Again:
                pass
        if not s.poll(int(min(timeout, ACK_EVERY_S) * 1000) + 1):
            return
        while True:
            try:
                payload = s.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                replies = codec.decode_replies(payload)
            except codec.ProtocolError:
                continue
            for r in replies:
                if r.get("id") != self._wid:
                    continue  # an ack's answer, or an earlier watch's
                if not self._take(r):
                    return

    def _take(self, r: dict[str, Any]) -> bool:
        """One answer of the current watch; False when the stream had to resume (the rest of the frame is stale)."""
        self._heard = time.monotonic()
        n = r.get("n")
        if not r.get("ok"):
            if r.get("error") == "busy":
                time.sleep(0.05)  # (a node not yet keeping the history, or serving its most watches)
            if r.get("error") == "compacted":
                self._compacted.add(self._node)
                if len(self._compacted) >= len(self.client.nodes):
                    self._closed = True
                    raise Compacted(str(r.get("message", "compacted")), int(r.get("compact_revision", 0)))
            self._resume()
            return False
        if n != self._n + 1:
            self._resume()  # a batch was lost: from the revision after the last one delivered
            return False
        self._n = n
        rev = r.get("rev")
        if type(rev) is not int:
            raise ZraftError(f"malformed watch answer {r!r:.200}")
        if r.get("watching"):
            if not self.next_rev:
                self.next_rev = rev + 1
                self.revision = rev
            return True
        events = r.get("events")
        if type(events) is not list:
            raise ZraftError(f"malformed watch answer {r!r:.200}")
        for x in events:
            e = _event(x, self.prev_kv)
            if e.mod_revision < self.next_rev:
                continue  # (never sent twice by one node; a resume starts after the last delivered)
            if e.mod_revision > rev:
                raise ZraftError(f"malformed watch answer: an event of revision {e.mod_revision} in a batch to {rev}")
            self._buffer.append(e)
        if rev >= self.next_rev:
            self.revision = rev
            self.next_rev = rev + 1
        self._compacted.clear()
        return True
