"""The values that cross the boundary of the Raft core: entries, messages, hard state, snapshots, ready batches.

Everything here is plain data. Messages and entries are ``NamedTuple``s because they are created on every
replication round (cheap to build, cheap to encode as a msgpack array); the rest are small dataclasses.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, NamedTuple

NONE = 0
"""The node id that means "nobody" (no vote, no known leader). Real node ids are 1 or more."""
MAX_TERM = 1 << 62
"""Terms, indexes and node ids above this are impossible: a message carrying one is dropped (and the wire codec
refuses it), so a forged term of 2**63-1 cannot leave a node unable to count past it."""


class EntryKind(enum.IntEnum):
    NORMAL = 0
    """A command for the state machine; ``data`` is opaque to the core."""
    NOOP = 1
    """The empty entry a new leader appends at once (Raft §5.4.2, dissertation §6.4)."""
    CONFIG = 2
    """Reserved for membership changes: ``data`` will encode a ``ClusterConfig``."""


class Entry(NamedTuple):
    index: int  # type: ignore[assignment]  # shadows tuple.index, as intended
    term: int
    kind: int = EntryKind.NORMAL
    data: bytes = b""


class MsgType(enum.IntEnum):
    APPEND = 1
    APPEND_RESP = 2
    VOTE = 3
    VOTE_RESP = 4
    PRE_VOTE = 5
    PRE_VOTE_RESP = 6
    HEARTBEAT = 7
    HEARTBEAT_RESP = 8
    SNAPSHOT = 9
    READ_INDEX = 10
    """A follower forwards a read to the leader (``context`` is the follower's read id)."""
    READ_INDEX_RESP = 11
    """The leader's answer: ``index`` is the read index, ``reject`` is set if the leader could not serve it."""


class Message(NamedTuple):
    """One Raft message. Like etcd's ``raftpb.Message``, one shape serves every type; unused fields keep defaults.

    Field use by type:
      APPEND: ``index``/``log_term`` name the entry preceding ``entries``; ``commit`` is the leader's commit.
      APPEND_RESP: ``index`` is the follower's last matching index; on ``reject``, ``index`` is the rejected
        ``index``, and ``hint``/``log_term`` are the follower's guess at the last entry both logs may share.
      VOTE / PRE_VOTE: ``index``/``log_term`` are the candidate's last log entry.
      HEARTBEAT: ``commit`` is min(follower's match, leader commit); ``context`` is the read-index round (0: none).
      HEARTBEAT_RESP: ``context`` echoes the round.
      SNAPSHOT: ``snapshot`` carries the leader's snapshot (its ``data`` opaque to the core).
      READ_INDEX / READ_INDEX_RESP: see ``MsgType``.
    """

    type: int
    src: int
    dst: int
    term: int
    log_term: int = 0
    index: int = 0  # type: ignore[assignment]  # shadows tuple.index, as intended
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    hint: int = 0
    context: Any = None
    snapshot: Snapshot | None = None


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """The voting members. It is data, not a constant, so that the log can change it later."""

    voters: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.voters:
            raise ValueError("a cluster needs at least one voter")
        if len(set(self.voters)) != len(self.voters):
            raise ValueError(f"duplicate node ids in {self.voters}")
        if any(v <= NONE for v in self.voters):
            raise ValueError(f"node ids must be positive integers, got {self.voters}")

    @property
    def quorum(self) -> int:
        return len(self.voters) // 2 + 1


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before any message that depends on it is sent (Raft Figure 2: persistent state)."""

    term: int = 0
    vote: int = NONE
    commit: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A point-in-time image of the state machine. ``data`` is opaque to the core (bytes, a file handle, ...)."""

    index: int
    term: int
    config: ClusterConfig
    data: Any = None


@dataclass(frozen=True, slots=True)
class ReadState:
    """A read that may be served once the state machine has applied ``index`` (dissertation §6.4)."""

    context: Any
    index: int


class Role(enum.IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile facts the runtime may want to report (status, logs); never persisted."""

    leader: int
    role: Role


@dataclass(slots=True)
class Ready:
    """One batch of work for the runtime. Carry it out in this order:

    1. Persist ``snapshot`` (if any), then ``entries`` (an entry replaces any stored entry with the same or a
       higher index: truncate, then append), then ``hard_state`` (if any). Make it durable (fsync) if
       ``must_sync``; otherwise (the only change is a new commit index, which the core can learn again after a
       crash) writing it without an fsync is enough.
    2. Send ``messages``.
    3. Install ``snapshot`` into the state machine (if any), then apply ``committed_entries`` in order.
    4. Serve each of ``read_states`` (the state machine has now applied its index); fail ``failed_reads``.
    """

    hard_state: HardState | None = None
    soft_state: SoftState | None = None
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    committed_entries: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    failed_reads: list[Any] = field(default_factory=list)
    must_sync: bool = False

    def __bool__(self) -> bool:
        return bool(
            self.hard_state is not None
            or self.soft_state is not None
            or self.snapshot is not None
            or self.entries
            or self.messages
            or self.committed_entries
            or self.read_states
            or self.failed_reads
        )


class NotLeader(Exception):
    """A proposal was made to a node that is not the leader. ``leader`` is its best guess (0 if none)."""

    def __init__(self, leader: int) -> None:
        super().__init__(f"not the leader; leader is {leader or 'unknown'}")
        self.leader = leader
