"""What every part of the Raft core shares: one node's state, and the operations the parts call on one another.

``Raft`` (``raft.py``) is one object built from parts, each a class with the methods of one side of the algorithm:
``ElectionRole`` (``election.py``), ``FollowerRole`` (``follower.py``), ``LeaderRole`` (``leader.py``) and
``MembershipRole`` (``membership.py``). Each part subclasses ``RaftState``, so that what it reads and calls is
declared -- and typed -- here, once; ``Raft.__init__`` sets every attribute. The methods below are the ones a part
calls in another part (or in ``raft.py``): each is defined there, and these declarations are never run.
"""

from __future__ import annotations

import random

from .log import RaftLog
from .options import Options
from .progress import Progress
from .readindex import ReadIndex
from .types import ClusterConfig, Message, Role, Snapshot


class RaftState:
    id: int
    rng: random.Random
    opts: Options
    term: int
    vote: int
    lead: int
    """The leader of ``term`` this node knows (NONE: none known)."""
    role: Role
    log: RaftLog
    snapshot: Snapshot | None
    config: ClusterConfig
    """The configuration in force: the last CONFIG entry in the log, committed or not (or the snapshot's)."""
    _base_config: ClusterConfig
    _configs: list[tuple[int, ClusterConfig]]
    _members: frozenset[int]
    _config_changed: bool
    transferee: int
    _transfer_elapsed: int
    prs: dict[int, Progress]
    """The leader's view of each other member's log."""
    votes: dict[int, bool]
    election_elapsed: int
    heartbeat_elapsed: int
    randomized_timeout: int
    msgs: list[Message]
    """Messages to send, handed out in the next ``Ready``."""
    _restored: Snapshot | None
    _bcast_new: bool
    _bcast_commit: bool
    reads: ReadIndex
    _ticks: int
    dropped: dict[str, int]
    last_dropped: str

    # raft.py
    def _send(self, m: Message) -> None:
        raise NotImplementedError

    def _drop(self, reason: str, m: Message) -> None:
        raise NotImplementedError

    def _reset(self, term: int) -> None:
        raise NotImplementedError

    def _become_follower(self, term: int, leader: int) -> None:
        raise NotImplementedError

    def _become_leader(self) -> None:
        raise NotImplementedError

    # election.py
    def _campaign(self, pre: bool, transfer: bool = False) -> None:
        raise NotImplementedError

    # follower.py
    def _step_follower(self, m: Message) -> None:
        raise NotImplementedError

    # leader.py
    def _send_append(self, to: int, send_if_empty: bool) -> bool:
        raise NotImplementedError

    def _maybe_commit(self) -> bool:
        raise NotImplementedError

    def _check_read_quorum(self) -> None:
        raise NotImplementedError

    # membership.py
    def _set_config(self, cfg: ClusterConfig) -> None:
        raise NotImplementedError

    @property
    def pending_config_index(self) -> int:
        raise NotImplementedError
