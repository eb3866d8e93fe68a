"""Network faults for chaos runs, injected in a node's own transport: drop, lose at random, duplicate and delay
its peer traffic, as told on a control socket that only the local machine can reach (``--chaos``).

``FaultyTransport`` wraps the real transport (it is one itself); ``ChaosControl`` is the ipc socket in the data
directory that ``zraft.tools.chaos`` sends fault specs to. Off by default, and then nothing here is in the path.
"""

from __future__ import annotations

import heapq
import logging
import os
import random
import time
from collections.abc import Callable
from typing import Any

import msgpack
import zmq

from zraft.core import Message
from zraft.transport import codec
from zraft.transport.zmq_transport import ZmqTransport

log = logging.getLogger("zraft.transport")


class NetFaults:
    """What a node's transport does to its Raft traffic in a chaos run (nothing, normally)."""

    def __init__(self) -> None:
        self.rng = random.Random()
        self.configure({})

    def configure(self, spec: dict[str, Any]) -> None:
        drop_to = {int(x) for x in spec.get("drop_to", ())}
        drop_from = {int(x) for x in spec.get("drop_from", ())}
        loss = float(spec.get("loss", 0.0))
        duplicate = float(spec.get("duplicate", 0.0))
        lo, hi = (float(x) for x in spec.get("delay_ms", (0.0, 0.0)))
        if not (0 <= loss <= 1 and 0 <= duplicate <= 1 and 0 <= lo <= hi):
            raise ValueError(f"bad fault spec {spec}")
        self.drop_to, self.drop_from, self.loss, self.duplicate = drop_to, drop_from, loss, duplicate
        self.delay_ms = (lo, hi)
        self.active = bool(drop_to or loss or duplicate or hi > 0)

    def describe(self) -> str:
        return (f"drop_to={sorted(self.drop_to)} drop_from={sorted(self.drop_from)} loss={self.loss} "
                f"duplicate={self.duplicate} delay_ms={self.delay_ms}")

    def lost(self, peer: int) -> bool:
        return self.active and (peer in self.drop_to or (self.loss > 0 and self.rng.random() < self.loss))


class FaultyTransport:
    """The node's transport with ``faults`` applied to what it sends to peers (and, through ``drops``, to what
    it receives from them). Delayed messages wait in a heap; the loop wakes for ``due()`` and calls
    ``release()``."""

    def __init__(self, inner: ZmqTransport, clock: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self.clock = clock
        self.faults = NetFaults()
        self._delayed: list[tuple[float, int, Message]] = []
        self._seq = 0

    def drops(self, src: int) -> bool:
        """True if a peer message from ``src`` is to be dropped on arrival."""
        return src in self.faults.drop_from

    def send(self, m: Message) -> None:
        f = self.faults
        if not f.active:
            self.inner.send(m)
            return
        if f.lost(m.dst):
            return
        copies = 2 if f.duplicate and f.rng.random() < f.duplicate else 1
        for _ in range(copies):
            if f.delay_ms[1] > 0:
                self._seq += 1
                at = self.clock() + f.rng.uniform(*f.delay_ms) / 1000
                heapq.heappush(self._delayed, (at, self._seq, m))
            else:
                self.inner.send(m)

    def send_chunk(self, peer: int, c: codec.SnapChunk) -> bool:
        return True if self.faults.lost(peer) else self.inner.send_chunk(peer, c)

    def send_ack(self, peer: int, a: codec.SnapAck) -> None:
        if not self.faults.lost(peer):
            self.inner.send_ack(peer, a)

    def answer(self, client: bytes, replies: list[dict[str, Any]], batch: bool) -> None:
        self.inner.answer(client, replies, batch)

    def due(self) -> float | None:
        """When the next delayed message is due (clock seconds), if any."""
        return self._delayed[0][0] if self._delayed else None

    def release(self) -> None:
        now = self.clock()
        while self._delayed and self._delayed[0][0] <= now:
            self.inner.send(heapq.heappop(self._delayed)[2])


class ChaosControl:
    """The node-local control socket of a node started with ``--chaos``: each request is a msgpack fault spec
    (``NetFaults.configure``), answered ``{"ok": true}`` or with the error."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], data_dir: str, node_id: int,
                 transport: FaultyTransport) -> None:
        self.id = node_id
        self.transport = transport
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(chaos_endpoint(data_dir))
        os.chmod(chaos_endpoint(data_dir).removeprefix("ipc://"), 0o600)

    def handle(self) -> None:
        while True:
            try:
                ident, payload = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except ValueError:
                continue
            try:
                self.transport.faults.configure(msgpack.unpackb(payload))
                reply: dict[str, Any] = {"ok": True}
                log.info("node=%d event=net_faults %s", self.id, self.transport.faults.describe())
            except Exception as e:
                reply = {"ok": False, "message": str(e)}
            self.sock.send_multipart([ident, msgpack.packb(reply)])


def chaos_endpoint(data_dir: str) -> str:
    """The node-local control socket of a node started with --chaos."""
    return f"ipc://{os.path.abspath(data_dir)}/chaos.ipc"
