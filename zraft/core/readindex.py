"""Linearizable reads by read index (diss. §6.4): the core's bookkeeping for the reads it has been asked for.

A read is served once three things hold: the leader knew its commit index when the read arrived (after an entry
of its own term committed: before that, its commit index may be behind, so reads are *held*); a quorum of voters
confirmed, after the read arrived, that it still leads (a heartbeat *round*: every read that arrived before a
round's heartbeats went out joins that round, so one round confirms many reads); and the node's state machine
has applied that index (the read *waits for apply*). A follower asks its leader for the index (*forwarded*) and
then waits for its own state machine in the same way.

Every read ends, served or failed: a round no quorum confirms within the timeout fails its reads, a leader that
steps down fails what it holds, a forwarded read whose leader never answers (or is replaced) fails, and at most
``MAX_PENDING_READS`` are held on either side. The client retries a failed read.

``Raft`` owns one ``ReadIndex`` and does what needs the rest of the core (sending heartbeats and answers,
counting the voters' confirmations); this class only keeps the reads in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .types import ReadState

MAX_PENDING_READS = 100_000
"""Most linearizable reads a leader holds unconfirmed, and most a follower has forwarded unanswered; more are
failed at once (the client retries)."""


@dataclass(slots=True)
class PendingRead:
    """A read at the leader, waiting for a quorum to confirm its round."""

    round: int
    """The heartbeat round whose confirmation by a quorum releases it."""
    index: int
    """The leader's commit index when it arrived: served once the state machine has applied this."""
    context: Any
    """The asker's token for the read, handed back in ``Ready.read_states`` or ``Ready.failed_reads``."""
    origin: int
    """The node that asked: this one, or a follower that forwarded it."""
    tick: int
    """When it arrived (it fails once the read timeout has passed)."""


class ReadIndex:
    def __init__(self, timeout_ticks: int) -> None:
        self.timeout = timeout_ticks
        # Leader side.
        self.held: list[tuple[Any, int]] = []
        """(context, origin) of reads that arrived before an entry of this term committed."""
        self.round = 0
        """Heartbeat rounds started for reads in this term."""
        self.round_open = False
        """The current round's heartbeats are not handed out yet: a new read joins it."""
        self.pending: list[PendingRead] = []
        """Reads waiting for their round, oldest (lowest round) first."""
        # Both sides.
        self.waiting_apply: list[ReadState] = []
        """Confirmed reads waiting for the state machine to reach their index."""
        self.failed: list[Any] = []
        """Contexts of reads that failed, for the next ``Ready``."""
        # Follower side.
        self.forwarded: dict[Any, tuple[int, int]] = {}
        """Reads asked of a leader: context -> (that leader, tick by which it must answer), in deadline order."""

    # ------------------------------------------------------------------ leader

    def full(self) -> bool:
        return len(self.pending) + len(self.held) >= MAX_PENDING_READS

    def hold(self, context: Any, origin: int) -> None:
        self.held.append((context, origin))

    def take_held(self) -> list[tuple[Any, int]]:
        """The held reads, once an entry of this term has committed (they are asked again)."""
        held, self.held = self.held, []
        return held

    def add(self, context: Any, origin: int, commit: int, tick: int) -> bool:
        """A read joins the open round; True when a new round had to be opened (the caller sends its
        heartbeats, carrying ``round``)."""
        opened = not self.round_open
        if opened:
            self.round += 1
            self.round_open = True
        self.pending.append(PendingRead(self.round, commit, context, origin, tick))
        return opened

    def confirmed(self, confirmed_round: int) -> list[PendingRead]:
        """The reads a quorum's confirmation of ``confirmed_round`` releases, taken out."""
        pending = self.pending
        n = 0
        while n < len(pending) and pending[n].round <= confirmed_round:
            n += 1
        out = pending[:n]
        if n:
            del pending[:n]
        return out

    def expired(self, tick: int) -> list[PendingRead]:
        """The reads no quorum confirmed within the timeout, taken out (they fail: the client retries)."""
        pending = self.pending
        if not pending or pending[0].tick + self.timeout > tick:
            return []
        n = 0
        while n < len(pending) and pending[n].tick + self.timeout <= tick:
            n += 1
        out = pending[:n]
        del pending[:n]
        return out

    def abort(self) -> list[tuple[Any, int]]:
        """Every read the leader holds or waits to confirm, taken out (it steps down: they fail)."""
        out = self.held + [(p.context, p.origin) for p in self.pending]
        self.held = []
        self.pending = []
        self.round_open = False
        return out

    def new_term(self) -> None:
        """A new leadership: rounds count from the start again."""
        self.round = 0

    def pass_done(self) -> None:
        """A ``Ready`` was handed out: the open round's heartbeats are gone, the next read opens another."""
        self.round_open = False

    # ------------------------------------------------------------------ follower

    def forward(self, context: Any, leader: int, tick: int) -> bool:
        """Record a read asked of ``leader``; False (the read fails) when too many wait or ``context`` is
        already asked."""
        if len(self.forwarded) >= MAX_PENDING_READS or context in self.forwarded:
            return False
        self.forwarded[context] = (leader, tick + self.timeout)
        return True

    def expire_forwarded(self, tick: int) -> None:
        fw = self.forwarded
        while fw:
            ctx, (_, deadline) = next(iter(fw.items()))  # insertion order is deadline order
            if deadline > tick:
                return
            del fw[ctx]
            self.failed.append(ctx)

    def fail_forwarded(self) -> None:
        """Their leader may be gone: fail them now, the client retries with the next one."""
        self.failed.extend(self.forwarded)
        self.forwarded = {}

    # ------------------------------------------------------------------ both

    def has_ready(self) -> bool:
        return bool(self.failed or self.waiting_apply)

    def ready(self, applied: int) -> tuple[list[ReadState], list[Any]]:
        """The reads to serve now (their index is applied) and those that failed, taken out."""
        served: list[ReadState] = []
        waiting = self.waiting_apply
        if waiting:
            served = [r for r in waiting if r.index <= applied]
            if served:
                self.waiting_apply = [r for r in waiting if r.index > applied]
        failed, self.failed = self.failed, []
        return served, failed
