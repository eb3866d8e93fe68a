"""The values that cross the boundary of the Raft core: entries, messages, hard state, snapshots, ready batches.

Everything here is plain data. Messages and entries are ``NamedTuple``s because they are created on every
replication round (cheap to build, cheap to encode as a msgpack array); the rest are small dataclasses.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgpack

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
    """A membership change: ``data`` is ``ClusterConfig.encode()`` of the new configuration, which is in force
    from the moment the entry is in a node's log (dissertation §4.1; see ``zraft.core.raft``)."""


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
    TIMEOUT_NOW = 12
    """Leadership transfer (diss. §3.10): the leader tells an up-to-date follower to start an election now."""


class Message(NamedTuple):
    """One Raft message. Like etcd's ``raftpb.Message``, one shape serves every type; unused fields keep defaults.

    Field use by type:
      APPEND: ``index``/``log_term`` name the entry preceding ``entries``; ``commit`` is the leader's commit.
      APPEND_RESP: ``index`` is the follower's last matching index; on ``reject``, ``index`` is the rejected
        ``index``, and ``hint``/``log_term`` are the follower's guess at the last entry both logs may share.
      VOTE / PRE_VOTE: ``index``/``log_term`` are the candidate's last log entry; ``context`` is
        ``CAMPAIGN_TRANSFER`` when a leadership transfer asked for the election.
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


CAMPAIGN_TRANSFER = 1
"""The ``context`` of a VOTE sent because the leader handed over leadership: voters grant it even while they
hear from that leader (the CheckQuorum lease would otherwise refuse it)."""
MAX_MEMBERS = 4096
"""Most voters plus learners in a configuration."""
MAX_CONFIG_CONTEXT = 1 << 20
"""Largest opaque runtime data (addresses, keys) carried with a configuration."""


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """The members: ``voters`` elect leaders and count toward every quorum; ``learners`` receive the log but never
    count (they are caught up before they become voters). ``context`` is opaque to the core: the runtime keeps what
    it needs to reach the members there (addresses, keys), so that it travels in the log and in snapshots.

    No voters at all is the configuration of a node that waits to be added to a cluster: it never campaigns."""

    voters: tuple[int, ...]
    learners: tuple[int, ...] = ()
    context: bytes = b""

    def __post_init__(self) -> None:
        members = self.voters + self.learners
        if len(set(members)) != len(members):
            raise ValueError(f"a node id appears twice in voters {list(self.voters)} / learners "
                             f"{list(self.learners)}")
        if any(type(v) is not int or not NONE < v <= MAX_TERM for v in members):
            raise ValueError(f"node ids must be positive integers, got {list(members)!r:.200}")
        if len(members) > MAX_MEMBERS:
            raise ValueError(f"{len(members)} members, more than {MAX_MEMBERS}")
        if type(self.context) is not bytes or len(self.context) > MAX_CONFIG_CONTEXT:
            raise ValueError(f"a configuration's context must be bytes of at most {MAX_CONFIG_CONTEXT}")

    @property
    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    @property
    def members(self) -> tuple[int, ...]:
        return self.voters + self.learners

    def to_wire(self) -> list[Any]:
        """A msgpack-able form: ``[voters, learners, context]``."""
        return [list(self.voters), list(self.learners), self.context]

    @classmethod
    def from_wire(cls, obj: Any) -> ClusterConfig:
        """The inverse of ``to_wire``, checked (``ValueError`` saying what is wrong). A bare list of voters (the
        form written before learners existed) is accepted too."""
        if isinstance(obj, list) and all(type(v) is int for v in obj):
            return cls(tuple(obj))
        if not (isinstance(obj, list) and len(obj) == 3 and isinstance(obj[0], list) and isinstance(obj[1], list)
                and type(obj[2]) is bytes):
            raise ValueError("a configuration must be [voters, learners, context(bytes)]")
        if len(obj[0]) + len(obj[1]) > MAX_MEMBERS:
            raise ValueError(f"a configuration has at most {MAX_MEMBERS} members")
        return cls(tuple(obj[0]), tuple(obj[1]), obj[2])

    def encode(self) -> bytes:
        """The data of a CONFIG entry."""
        out: bytes = msgpack.packb(self.to_wire(), use_bin_type=True)
        return out

    @classmethod
    def decode(cls, data: bytes) -> ClusterConfig:
        """The configuration in a CONFIG entry's data (``ValueError`` if it is not one)."""
        if type(data) is not bytes or len(data) > MAX_CONFIG_CONTEXT + 16 * MAX_MEMBERS:
            raise ValueError("a configuration entry's data is too large")
        try:
            obj = msgpack.unpackb(data, raw=False, max_bin_len=MAX_CONFIG_CONTEXT, max_array_len=MAX_MEMBERS,
                                  max_map_len=0, max_str_len=0, max_ext_len=0)
        except Exception as e:  # msgpack raises several types for malformed input
            raise ValueError(f"a configuration entry does not decode: {e}") from None
        return cls.from_wire(obj)


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
    config: ClusterConfig | None = None
    """The configuration in force, when it changed since the last batch (a CONFIG entry was appended or
    truncated, or a snapshot installed): the runtime connects to new members and lets go of removed ones."""

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
            or self.config is not None
        )


class ConfigChangeError(Exception):
    """A membership change or leadership transfer the core refuses; the text says why (for the client).
    ``code``: "busy" (another change or a transfer is under way, or the leader is new: retry shortly),
    "not_caught_up" (a learner to promote is too far behind: retry when it has caught up) or "invalid"."""

    def __init__(self, message: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.code = code


class NotLeader(Exception):
    """A proposal was made to a node that is not the leader. ``leader`` is its best guess (0 if none)."""

    def __init__(self, leader: int) -> None:
        super().__init__(f"not the leader; leader is {leader or 'unknown'}")
        self.leader = leader


class TransferInProgress(NotLeader):
    """A proposal made while the leader hands leadership over to ``leader`` (retry there shortly)."""

    def __init__(self, leader: int) -> None:
        super().__init__(leader)
        self.args = (f"leadership is being transferred to {leader}",)


LEADER_MESSAGES = frozenset((MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT))
"""The messages only a leader sends (a follower drops them from anyone but the leader it follows)."""
