"""The state machine seam: what the replica asks of the replicated state machine (hashicorp/raft's ``FSM``:
apply, snapshot, restore), plus the two things a store with client sessions adds -- turning a client's write into
a log command, and turning what applying it did into the client's answer.

The replica (``zraft.server.replica``), the node and the simulator hold their store only through this protocol;
``zraft.statemachine.kv.KVStore`` is the implementation. New operations (transactions, leases, watches) are added
to the state machine, not to the replica.

The contract:

- **Deterministic.** ``apply`` depends only on the store's state and the command: no clock, no randomness, no
  environment. Every node applies the same entries to the same result. Time-based decisions are made by a leader
  and committed as commands.
- **In order, each index once.** The replica applies committed entries in log order; ``apply`` and
  ``apply_noop`` refuse any other index (``ValueError``). The committed entries of one ready batch are applied
  in one pass, each answered right after it is applied (an answer may read the store as that entry left it).
- **Exactly once.** A command carries the client's session (client id, sequence number, acknowledged sequence):
  the store answers a retry from the session, without applying it again.
- **Snapshots while it goes on.** ``begin_snapshot`` returns an image of the store as it is now, serialized in
  pieces (``chunks``) while the store keeps applying; ``end_snapshot`` releases it. ``restore_chunks`` (on the
  class, see ``MachineType``) rebuilds a store from those pieces, in pieces of any size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol, TypeVar

from zraft.statemachine.leases import Leases
from zraft.transport.requests import Range, Write


class Image(Protocol):
    """A snapshot being taken: the store's state when it began, as pieces of bytes (``chunks``)."""

    applied: int
    """The index the image is of."""
    key_count: int
    """How many keys it holds (for logs and status)."""

    def chunks(self) -> Iterator[bytes]: ...

    def leftovers(self, small: int) -> list[Any]:
        """Once the image is written: what the store kept for it (old values), as containers for the caller to
        drop a few per loop pass -- dropping millions at once would pause the loop; [] when fewer than
        ``small`` (then they go with the image)."""
        ...


class StateMachine(Protocol):
    applied: int
    """The index of the last entry applied (or restored from a snapshot)."""
    revision: int
    """The store's revision (every answer says the one it was served at)."""
    rev: int
    """The revision to answer the last command applied with (read right after its ``apply``)."""

    def command(self, req: Write) -> bytes | tuple[str, str]:
        """The log command for a client's write (a ``requests`` record: its fields, with ``client``, ``seq``,
        ``ack``), or (error, message) when it is refused before it is logged (a key or value too large, a write
        this machine does not take)."""
        ...

    def apply(self, index: int, data: bytes) -> tuple[int, int, int]:
        """Apply the command at log ``index``: (client, seq, status) of the write it was, to answer."""
        ...

    leases: Leases
    """The leases and their keys (the leader's ``Lessor`` keeps their deadlines)."""
    events: list[Any] | None
    """When a list, every change ``apply`` makes to a key is appended to it (``kv.EVENT_FIELDS`` items each): the
    node's watches are served from them. It is ``event_sink`` (the replica's watch history) once ``watching``."""
    event_sink: list[Any] | None
    watching: bool
    """Whether the store records its changes: from a log entry (``watch_command``) on, the same on every node."""
    watch_start: int
    """The first revision recorded (since watching began, or the snapshot the store was restored from)."""

    def watch_command(self) -> bytes:
        """The command that starts ``watching`` (a leader proposes it when a client first watches)."""
        ...

    def expire_command(self, lease_ids: list[int]) -> bytes:
        """The command a leader proposes for leases whose time ran out (no session)."""
        ...

    def leader_commands(self) -> list[bytes]:
        """Commands a new leader proposes at the start of its term (the state machine's own, without a session:
        applying one answers no client)."""
        ...

    def apply_noop(self, index: int) -> None:
        """An entry without a command (a leader's no-op, a configuration change)."""
        ...

    def answer(self, req: Write, status: int) -> dict[str, Any] | None:
        """The answer to ``req`` just applied with ``status`` (read right after its ``apply``): the fields beside
        the request id, or None for a plain success (``{"ok": True}``, the common case, built by the caller)."""
        ...

    def get(self, key: bytes) -> bytes | None:
        """A key's value as of ``applied`` (a read the replica has made linearizable, or a stale read)."""
        ...

    def query(self, req: Range) -> dict[str, Any]:
        """The answer to a read other than a get (a range) as of ``applied`` (a read the replica has made
        linearizable, or a stale read): its fields beside the request id."""
        ...

    def counts(self) -> tuple[int, int]:
        """(keys, client sessions) held: for status and metrics."""
        ...

    def begin_snapshot(self) -> Image: ...

    def end_snapshot(self) -> None: ...


M = TypeVar("M", bound=StateMachine, covariant=True)


class MachineType(Protocol[M]):
    """How the replica makes a state machine: empty, or from a snapshot's pieces (``KVStore`` itself: the class
    and its ``restore_chunks`` class method)."""

    def __call__(self) -> M: ...

    def restore_chunks(self, chunks: Iterable[bytes]) -> M: ...
