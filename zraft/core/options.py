"""The core's tunables: timeouts in ticks, message and window limits, the learner promotion lag."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Options:
    election_ticks: int = 10
    """A follower that hears no leader for a random number of ticks in [election_ticks, 2*election_ticks)
    starts an election; a leader that has not heard from a quorum for election_ticks steps down."""
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_msg_entries: int = 1024
    max_msg_bytes: int = 1 << 20
    max_inflight: int = 64
    """Unanswered appends per follower in steady state (the pipelining window)."""
    snapshot_timeout_ticks: int = 200
    """A follower that neither acknowledges nor fails a snapshot within this many ticks is probed again."""
    read_timeout_ticks: int = 0
    """A read that no leader has confirmed (or answered, when forwarded) within this many ticks fails, so the
    runtime can answer the client (0: twice the election timeout)."""
    promote_lag: int = 4096
    """A learner becomes a voter only once it has answered the leader (its progress is in steady replication) and
    its log is within this many entries of the leader's (diss. §4.2.1: a new voter that is far behind, or not
    reachable at all, would hold up commits while it catches up)."""

    def __post_init__(self) -> None:
        if self.heartbeat_ticks < 1 or self.election_ticks <= self.heartbeat_ticks:
            raise ValueError("need 1 <= heartbeat_ticks < election_ticks")
        if self.promote_lag < 0:
            raise ValueError("promote_lag must not be negative")
        if self.max_msg_entries < 1 or self.max_msg_bytes < 1 or self.max_inflight < 1:
            raise ValueError("message and window limits must be positive")
