"""The probe the simulator hands every replica (``zraft.server.seams.Probe``): it checks Raft's safety properties
at the step of a ready batch that would break them (a second leader in a term, a commit going back, two entries
applied at one index) and crashes nodes at the worst moments -- before a batch is durable, right after, right
after a vote.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgpack

from zraft.core import ClusterConfig, Entry, EntryKind, Ready, Role
from zraft.server.replica import Replica
from zraft.statemachine.kv import LEASE_EXPIRE, KVStore

from . import checks
from .checks import Violation
from .node import Crash

if TYPE_CHECKING:
    from .cluster import SimCluster

LEASE_EXPIRE_OP = bytes([LEASE_EXPIRE])
"""The second byte of a command that expires leases (after its array header: ``kv.encode_command``)."""


class InvariantProbe:
    def __init__(self, cluster: SimCluster) -> None:
        self.c = cluster

    def ready(self, replica: Replica[KVStore], rd: Ready) -> None:
        r = replica.raft
        if rd.soft_state is not None and rd.soft_state.role == Role.LEADER:
            checks.check_new_leader(self.c, replica.id, r)
        if rd.config is not None:
            self.c.config_since[replica.id] = self.c.now
        if rd.entries:
            checks.check_entries(self.c, replica.id, r, rd.entries)
            if r.role == Role.LEADER and sum(e.kind == EntryKind.NORMAL for e in rd.entries) > 1:
                self.c.cov["batched_proposal"] += 1

    def persisting(self, replica: Replica[KVStore], rd: Ready) -> None:
        if not self.c.crash_points:
            return
        grant = self._grants_vote(replica, rd)
        if self.c.rng.random() < (0.02 if rd.entries else 0.05 if grant else 0.0):
            # A crash before the batch is durable: a leader has sent its entries already (they may commit
            # without it); nothing else that promises this batch (a vote, an acknowledgement) may have left.
            if grant and rd.hard_state is not None and self.c.rng.random() < 0.5:
                self.c.rival = (replica.id, rd.hard_state.term, rd.hard_state.vote)
            raise Crash

    def _grants_vote(self, replica: Replica[KVStore], rd: Ready) -> bool:
        """The batch records a vote for another node (a new one: a term or a vote that changed)."""
        hs, last = rd.hard_state, self.c.nodes[replica.id].last_hard_state
        return hs is not None and hs.vote not in (0, replica.id) and (
            last is None or (hs.term, hs.vote) != (last.term, last.vote))

    def _vote_only(self, replica: Replica[KVStore], rd: Ready) -> bool:
        """The batch changes only the vote, in the same term (a vote granted after a term was already seen)."""
        hs, last = rd.hard_state, self.c.nodes[replica.id].last_hard_state
        return hs is not None and not rd.entries and last is not None and hs.term == last.term \
            and hs.vote != last.vote

    def persisted(self, replica: Replica[KVStore], rd: Ready) -> None:
        node = self.c.nodes[replica.id]
        vote_only = self._vote_only(replica, rd)
        if rd.hard_state is not None:
            if rd.hard_state.commit < node.durable_commit:
                raise Violation(f"node {node.id}: commit went back from {node.durable_commit} (durable) to "
                                f"{rd.hard_state.commit}")
            node.written_commit = rd.hard_state.commit
            node.last_hard_state = rd.hard_state
        if rd.must_sync:  # everything written before is durable now, whichever batch wrote it
            node.durable_commit = node.written_commit
        if self.c.crash_points and self.c.rng.random() < (
                0.3 if rd.soft_state is not None and rd.soft_state.role == Role.LEADER else 0.1 if vote_only
                else 0.001):
            # Durable but nothing sent or applied: often right after winning an election, so that a new leader's
            # no-op never leaves it (the Figure 8 pattern), or right after a vote-only change (the restarted
            # node must remember whom it voted for in this term).
            raise Crash

    def applied(self, replica: Replica[KVStore], e: Entry) -> None:
        node = self.c.nodes[replica.id]
        if e.index != replica.machine.applied:
            raise Violation(f"node {node.id} applied {e.index} but its store is at {replica.machine.applied}")
        r = replica.raft
        if r.term < self.c.commit_term.get(e.index, r.term + 1):
            self.c.commit_term[e.index] = r.term
        seen = self.c.committed.get(e.index)
        if seen is None:
            self.c.committed[e.index] = (e.term, e.data)
            if e.kind == EntryKind.CONFIG:
                self.c.committed_configs += 1
                self.c.config_entries[e.index] = ClusterConfig.decode(e.data)
        elif seen != (e.term, e.data):
            raise Violation(f"node {node.id} applied {e} at {e.index}, another node applied term/data {seen}")
        if self.c.lease_watch and e.kind == EntryKind.NORMAL and e.data[1:2] == LEASE_EXPIRE_OP:
            for lease in msgpack.unpackb(msgpack.unpackb(e.data)[5]):
                self.c.lease_expired.setdefault(lease, (self.c.now, f"applied at index {e.index} by node {node.id}"))
