"""What a leader knows about one follower's log, and how fast it may send to it (etcd's Progress)."""

from __future__ import annotations

import enum
from collections import deque


class ReplState(enum.IntEnum):
    PROBE = 0
    """The follower's log is unknown: send one append at a time and wait for its answer."""
    REPLICATE = 1
    """Steady state: send new batches without waiting (pipelining), at most ``max_inflight`` unanswered."""
    SNAPSHOT = 2
    """The follower needs entries we compacted: a snapshot is on its way; send nothing else."""


class Progress:
    __slots__ = (
        "commit_sent",
        "inflight",
        "match",
        "match_at_last_heartbeat",
        "max_inflight",
        "next",
        "pending_snapshot",
        "probe_sent",
        "read_ack",
        "recent_active",
        "snapshot_ticks",
        "state",
    )

    def __init__(self, next_index: int, max_inflight: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ReplState.PROBE
        self.probe_sent = False
        self.inflight: deque[int] = deque()
        """The last index of each unanswered append, oldest first."""
        self.max_inflight = max_inflight
        self.pending_snapshot = 0
        self.snapshot_ticks = 0
        self.recent_active = False
        """Heard from since the last CheckQuorum round."""
        self.read_ack = 0
        """The highest read-index round this follower has confirmed in the current term."""
        self.match_at_last_heartbeat = 0
        self.commit_sent = 0
        """The commit index the last append to this follower carried."""

    def become_probe(self) -> None:
        if self.state == ReplState.SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
            self.pending_snapshot = 0
        else:
            self.next = self.match + 1
        self.state = ReplState.PROBE
        self.probe_sent = False
        self.inflight.clear()

    def become_replicate(self) -> None:
        self.state = ReplState.REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflight.clear()

    def become_snapshot(self, index: int) -> None:
        self.state = ReplState.SNAPSHOT
        self.pending_snapshot = index
        self.snapshot_ticks = 0
        self.inflight.clear()

    def is_paused(self) -> bool:
        if self.state == ReplState.PROBE:
            return self.probe_sent
        if self.state == ReplState.REPLICATE:
            return len(self.inflight) >= self.max_inflight
        return True

    def sent(self, last_index: int, commit: int) -> None:
        """An append went out; ``last_index`` is its last entry's index (its ``index`` field if it had none)."""
        self.commit_sent = commit
        if self.state == ReplState.REPLICATE:
            if last_index >= self.next:
                self.next = last_index + 1
                self.inflight.append(last_index)
        elif self.state == ReplState.PROBE:
            self.probe_sent = True

    def maybe_update(self, index: int) -> bool:
        """The follower acknowledged ``index``. Returns whether that told us anything new."""
        updated = index > self.match
        if updated:
            self.match = index
            self.probe_sent = False
        if self.next < index + 1:
            self.next = index + 1
        inflight = self.inflight
        while inflight and inflight[0] <= index:
            inflight.popleft()
        return updated

    def maybe_decrease_to(self, rejected: int, match_hint: int) -> bool:
        """The follower rejected an append at ``rejected``. Returns False for a stale rejection."""
        if self.state == ReplState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True
