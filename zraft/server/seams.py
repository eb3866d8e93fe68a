"""The seams a replica is given (hashicorp/raft's shape): the clock, the transport, and the simulator's probe.
Production passes ``time.monotonic`` and ``zraft.transport.zmq_transport``; the simulator its virtual clock and
network, and a probe that watches (and crashes) the replica between the steps of a ready batch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from zraft.core import Entry, Message, Ready
from zraft.transport import codec

if TYPE_CHECKING:
    from zraft.server.replica import Replica


class Clock(Protocol):
    def __call__(self) -> float:
        """Monotonic seconds."""
        ...


class Transport(Protocol):
    """How a replica reaches its peers and its clients. Sends never block and may be lost: Raft retries."""

    def send(self, m: Message) -> None:
        """A Raft message to ``m.dst`` (never a SNAPSHOT: snapshot files travel in chunks)."""
        ...

    def send_chunk(self, peer: int, c: codec.SnapChunk) -> bool:
        """A piece of a snapshot file; False if the peer's queue is full (the sender tries again later)."""
        ...

    def send_ack(self, peer: int, a: codec.SnapAck) -> None:
        """A follower's acknowledgement of snapshot chunks."""
        ...

    def answer(self, client: bytes, replies: list[dict[str, Any]], batch: bool) -> None:
        """Replies to one client connection: one reply to a request that came alone (``batch=False``), or the
        replies to requests that came in batches, in as many batch frames as they need."""
        ...


class Probe(Protocol):
    """What the simulator watches as a replica works (production passes none). It may raise to crash the
    replica at that point: the simulator then keeps only what the disk made durable."""

    def ready(self, replica: Replica[Any], rd: Ready) -> None: ...
    def persisting(self, replica: Replica[Any], rd: Ready) -> None: ...
    def persisted(self, replica: Replica[Any], rd: Ready) -> None: ...
    def applied(self, replica: Replica[Any], e: Entry) -> None: ...
