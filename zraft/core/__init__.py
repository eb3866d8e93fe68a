"""The Raft core: a pure, deterministic state machine with no I/O (see ``zraft.core.raft``)."""

from .log import CompactedError, RaftLog
from .raft import Options, Raft
from .types import (
    MAX_TERM,
    NONE,
    ClusterConfig,
    ConfigChangeError,
    Entry,
    EntryKind,
    HardState,
    Message,
    MsgType,
    NotLeader,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SoftState,
)

__all__ = [
    "MAX_TERM", "NONE", "ClusterConfig", "CompactedError", "ConfigChangeError",
    "Entry", "EntryKind", "HardState", "Message", "MsgType",
    "NotLeader", "Options", "Raft", "RaftLog", "ReadState", "Ready", "Role", "Snapshot", "SoftState",
]
