"""A whole cluster of real Raft cores in one process, under virtual time, driven by one seed.

The network, the disks, the clocks and the clients are all simulated; only ``zraft.core`` is real. Every
ready batch is checked against Raft's safety properties as it is carried out, so a violation is caught at
the step that causes it, and the same seed replays it exactly.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zraft.core import (
    ClusterConfig,
    Entry,
    EntryKind,
    HardState,
    Message,
    MsgType,
    NotLeader,
    Options,
    Raft,
    Ready,
    Role,
    Snapshot,
)

TICK_MS = 50.0
"""Virtual milliseconds per core tick (the node runtime uses the same)."""


class Violation(AssertionError):
    """A safety or liveness property of Raft failed in the simulation."""


@dataclass
class NetConfig:
    min_delay: float = 0.5
    max_delay: float = 5.0
    drop: float = 0.0
    duplicate: float = 0.0
    long_delay: float = 0.0
    """Probability that a message takes up to ``long_delay_max`` ms instead (reordering)."""
    long_delay_max: float = 300.0
    hold_blocked: bool = False
    """Messages on a cut link are held, not lost, and delivered in a burst when the network heals (what ZeroMQ
    does with its queue for a peer it cannot reach): old votes and answers arrive long after their term."""


MAX_HELD = 5000
"""Most messages held on cut links at once (a peer's queue has a high-water mark too)."""
EARLY_TYPES = frozenset((MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT))
"""Messages a leader may send before its ready batch is durable (diss. §10.2.1)."""


@dataclass
class MemStorage:
    """What survives a crash: exactly what the ready batches persisted."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)

    @property
    def offset(self) -> int:
        return self.snapshot.index if self.snapshot else 0

    def save(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self.snapshot = rd.snapshot
            self.entries = []
        if rd.entries:
            first = rd.entries[0].index
            del self.entries[first - self.offset - 1 :]
            expected = self.entries[-1].index + 1 if self.entries else self.offset + 1
            if first != expected:
                raise Violation(f"persisted log would have a gap before index {first}")
            self.entries.extend(rd.entries)
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state

    def compact(self, snap: Snapshot) -> None:
        drop = snap.index - self.offset
        self.snapshot = snap
        del self.entries[:drop]


def encode_command(client: int, seq: int, key: str) -> bytes:
    return f"{client}:{seq}:{key}".encode()


def decode_command(data: bytes) -> tuple[str, str]:
    """(operation id, key) of a client command."""
    client, seq, key = data.decode().split(":")
    return f"{client}:{seq}", key


class SimNode:
    def __init__(self, node_id: int) -> None:
        self.id = node_id
        self.raft: Raft | None = None
        self.storage = MemStorage()
        self.kv: dict[str, tuple[str, ...]] = {}
        self.applied = 0
        self.max_applied = 0
        self.max_commit = 0
        self.up = False


@dataclass
class PendingWrite:
    op: str
    key: str
    data: bytes
    node: int
    index: int
    start: float


@dataclass
class PendingRead:
    key: str
    node: int
    start: float
    required_ops: int
    """How many appends to ``key`` had been acknowledged when the read began: all must be visible."""
    required_index: int


class SimCluster:
    def __init__(
        self,
        n: int,
        seed: int,
        net: NetConfig | None = None,
        options: Options | None = None,
        compact_every: int = 0,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.net = net or NetConfig()
        self.options = options or Options(election_ticks=10, heartbeat_ticks=2, max_inflight=16,
                                                  snapshot_timeout_ticks=20)
        self.config = ClusterConfig(tuple(range(1, n + 1)))
        self.compact_every = compact_every
        self.crash_after_vote = 0.0
        """Probability of crashing a node right after it grants a vote (it restarts a moment later)."""
        self.crash_points = False
        """Crash nodes between persisting a ready batch and sending it (see ``_process``)."""
        self.nodes = {i: SimNode(i) for i in self.config.voters}
        self.now = 0.0
        self._seq = 0
        self._events: list[tuple[float, int, int, Any]] = []
        self.blocked: set[tuple[int, int]] = set()
        self.held: list[Message] = []
        self.steps = 0
        self.messages_sent = 0
        self.messages_delivered = 0
        self.faults = 0
        self.log_lines: list[str] = []
        # Global knowledge for the invariants.
        self.leaders: dict[int, int] = {}  # term -> node
        self.entries_seen: dict[tuple[int, int], tuple[bytes, int, int]] = {}  # (index, term) -> data, kind, prev
        self.committed: dict[int, tuple[int, bytes]] = {}  # index -> (term, data) applied somewhere
        self.commit_term: dict[int, int] = {}
        """index -> the lowest term of a node that applied it: the entry was committed in that term or earlier."""
        self.key_order: dict[str, list[str]] = {}  # key -> op ids in apply order
        # Clients.
        self.pending_writes: dict[tuple[int, int], PendingWrite] = {}  # (node, index) -> write
        self.pending_reads: dict[tuple[int, Any], PendingRead] = {}  # (node, ctx) -> read
        self.acked: dict[str, list[str]] = {}  # key -> op ids acknowledged, in ack order
        self.acked_ops: set[str] = set()
        self.max_acked_index = 0
        self.stats = {"writes_ok": 0, "writes_unknown": 0, "reads_ok": 0, "reads_failed": 0, "not_leader": 0}
        self.read_results: list[tuple[str, tuple[str, ...]]] = []
        self._next_op = 0
        for i in self.config.voters:
            self._start(self.nodes[i])
            self._schedule(self.rng.uniform(0, TICK_MS), _TICK, i)

    # ------------------------------------------------------------------ event machinery

    def _schedule(self, at: float, kind: int, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at, self._seq, kind, payload))

    def step(self) -> bool:
        """Run the next event. Returns False when nothing is scheduled."""
        if not self._events:
            return False
        at, _, kind, payload = heapq.heappop(self._events)
        self.now = at
        self.steps += 1
        if kind == _TICK:
            node = self.nodes[payload]
            self._schedule(at + TICK_MS, _TICK, payload)
            if node.up and node.raft is not None:
                node.raft.tick()
                self._process(node)
        elif kind == _DELIVER:
            self._deliver(payload)
        else:
            payload()
        return True

    def run_for(self, ms: float) -> None:
        end = self.now + ms
        while self._events and self._events[0][0] <= end:
            self.step()
        self.now = end

    def run_until(self, cond: Callable[[], bool], max_ms: float) -> bool:
        end = self.now + max_ms
        while not cond():
            if not self._events or self._events[0][0] > end:
                self.now = end
                return cond()
            self.step()
        return True

    def at(self, delay: float, fn: Callable[[], None]) -> None:
        self._schedule(self.now + delay, _CALL, fn)

    # ------------------------------------------------------------------ network

    def _send(self, m: Message) -> None:
        self.messages_sent += 1
        net = self.net
        rng = self.rng
        if net.drop and rng.random() < net.drop:
            return
        copies = 2 if net.duplicate and rng.random() < net.duplicate else 1
        for _ in range(copies):
            if net.long_delay and rng.random() < net.long_delay:
                d = rng.uniform(net.max_delay, net.long_delay_max)
            else:
                d = rng.uniform(net.min_delay, net.max_delay)
            self._schedule(self.now + d, _DELIVER, m)

    def _deliver(self, m: Message) -> None:
        node = self.nodes[m.dst]
        if (m.src, m.dst) in self.blocked:
            if self.net.hold_blocked and len(self.held) < MAX_HELD:
                self.held.append(m)
            return
        if not node.up or node.raft is None:
            return
        self.messages_delivered += 1
        node.raft.step(m)
        self._process(node)

    def isolate(self, i: int) -> None:
        self.partition([i], [j for j in self.nodes if j != i])

    def partition(self, *groups: list[int]) -> None:
        """Cut every link between nodes of different groups (nodes in no group are cut from all)."""
        where = {n: g for g, members in enumerate(groups) for n in members}
        self.blocked = {
            (a, b) for a in self.nodes for b in self.nodes
            if a != b and (a not in where or b not in where or where[a] != where[b])
        }
        self.faults += 1
        self.note(f"partition {[sorted(g) for g in groups]}")

    def cut(self, a: int, b: int, both: bool = True) -> None:
        self.blocked.add((a, b))
        if both:
            self.blocked.add((b, a))
        self.faults += 1
        self.note(f"cut {a}->{b}{' both ways' if both else ''}")

    def heal(self) -> None:
        self.blocked = set()
        self.note("heal network" + (f", releasing {len(self.held)} held messages" if self.held else ""))
        for m in self.held:  # the backlog arrives at once, in order, a little late
            self._schedule(self.now + self.rng.uniform(0.0, self.net.max_delay), _DELIVER, m)
        self.held = []

    # ------------------------------------------------------------------ nodes

    def _start(self, node: SimNode) -> None:
        st = node.storage
        node.raft = Raft(node.id, self.config, random.Random(self.rng.getrandbits(64)), self.options,
                         st.hard_state, st.snapshot, list(st.entries))
        node.up = True
        if st.snapshot is not None:
            node.kv = dict(st.snapshot.data)
            node.applied = st.snapshot.index
        else:
            node.kv = {}
            node.applied = 0
        # Like a real node, replay the committed log before serving anything.
        self._process(node)
        if node.up and node.applied < node.max_applied:
            raise Violation(f"node {node.id} restarted with applied {node.applied} < {node.max_applied} before")

    def crash(self, i: int) -> None:
        node = self.nodes[i]
        if not node.up:
            return
        node.up = False
        node.raft = None
        self.faults += 1
        self.note(f"crash node {i}")
        for key in [k for k in self.pending_writes if k[0] == i]:
            self._write_unknown(self.pending_writes.pop(key))
        for key in [k for k in self.pending_reads if k[0] == i]:
            del self.pending_reads[key]
            self.stats["reads_failed"] += 1

    def _crash_restart(self, i: int) -> None:
        if self.nodes[i].up:
            self.crash(i)
            self.at(self.rng.uniform(0.1, 3.0), lambda: self.restart(i))

    def restart(self, i: int) -> None:
        node = self.nodes[i]
        if node.up:
            return
        self.note(f"restart node {i}")
        self._start(node)

    def leader(self) -> int | None:
        """The leader of the highest term among live nodes, if one exists."""
        best: tuple[int, int] | None = None
        for node in self.nodes.values():
            r = node.raft
            if node.up and r is not None and r.role == Role.LEADER and (best is None or r.term > best[0]):
                best = (r.term, node.id)
        return best[1] if best else None

    def stable_leader(self) -> int | None:
        """A leader that every live node follows in its term and has heard from lately."""
        ld = self.leader()
        if ld is None:
            return None
        term = self.nodes[ld].raft.term  # type: ignore[union-attr]
        fresh = 2 * self.options.heartbeat_ticks  # heard from the leader within two heartbeat intervals
        for node in self.nodes.values():
            r = node.raft
            if node.up and r is not None and (
                r.term != term or r.lead != ld or (node.id != ld and r.election_elapsed > fresh)
            ):
                return None
        return ld

    def note(self, text: str) -> None:
        self.log_lines.append(f"t={self.now:9.1f} {text}")

    # ------------------------------------------------------------------ the runtime: carrying out ready batches

    def _process(self, node: SimNode) -> None:
        r = node.raft
        assert r is not None
        if not r.has_ready():
            return
        rd = r.ready()
        if rd.soft_state is not None and rd.soft_state.role == Role.LEADER:
            self._check_new_leader(node, r)
        if rd.entries:
            self._check_entries(node, rd.entries)
        # Diss. §10.2.1: a leader replicates its batch while it writes it: its AppendEntries (and heartbeats and
        # snapshots) go before the batch is durable. Everything else waits for the disk.
        early = [m for m in rd.messages if m.type in EARLY_TYPES]
        for m in early:
            self._send(m)
        if self.crash_points and early and rd.entries and self.rng.random() < 0.02:
            # A crash after the leader sent its entries but before it wrote them.
            self.crash(node.id)
            self.at(self.rng.uniform(20.0, 1500.0), lambda: self.restart(node.id))
            return
        node.storage.save(rd)
        if rd.hard_state is not None:
            if rd.hard_state.commit < node.max_commit:
                raise Violation(f"node {node.id}: commit went back from {node.max_commit} to {rd.hard_state.commit}")
            node.max_commit = rd.hard_state.commit
        if self.crash_points and self.rng.random() < (
            0.3 if rd.soft_state is not None and rd.soft_state.role == Role.LEADER else 0.001
        ):
            # A crash after the batch is durable but before any of it is sent or applied; often right after
            # winning an election, so that a new leader's no-op never leaves it (the Figure 8 pattern).
            self.crash(node.id)
            self.at(self.rng.uniform(20.0, 1500.0), lambda: self.restart(node.id))
            return
        voted = False
        for m in rd.messages:
            if m.type in EARLY_TYPES:
                continue
            self._send(m)
            voted = voted or (m.type == MsgType.VOTE_RESP and not m.reject)
        if voted and self.crash_after_vote and self.rng.random() < self.crash_after_vote:
            # The classic test for an unpersisted vote: crash the voter right after it votes, bring it straight
            # back, and let a rival ask in the same term.
            self.at(0.0, lambda: self._crash_restart(node.id))
        if rd.snapshot is not None:
            snap = rd.snapshot
            if snap.index < node.applied:
                raise Violation(f"node {node.id}: snapshot {snap.index} would move applied back from {node.applied}")
            node.kv = dict(snap.data)
            node.applied = snap.index
        for e in rd.committed_entries:
            self._apply(node, e)
        if node.applied > node.max_applied:
            node.max_applied = node.applied
        for rs in rd.read_states:
            self._serve_read(node, rs.context, rs.index)
        for ctx in rd.failed_reads:
            if self.pending_reads.pop((node.id, ctx), None) is not None:
                self.stats["reads_failed"] += 1
        if self.compact_every and node.applied - node.storage.offset >= self.compact_every:
            snap = r.make_snapshot(node.applied, dict(node.kv))
            node.storage.compact(snap)
            r.compact(snap)

    def _apply(self, node: SimNode, e: Entry) -> None:
        if e.index != node.applied + 1:
            raise Violation(f"node {node.id} applied {e.index} after {node.applied}")
        node.applied = e.index
        r = node.raft
        if r is not None and r.term < self.commit_term.get(e.index, r.term + 1):
            self.commit_term[e.index] = r.term
        seen = self.committed.get(e.index)
        if seen is None:
            self.committed[e.index] = (e.term, e.data)
            if e.kind == EntryKind.NORMAL:
                op, key = decode_command(e.data)
                self.key_order.setdefault(key, []).append(op)
        elif seen != (e.term, e.data):
            raise Violation(f"node {node.id} applied {e} at {e.index}, another node applied term/data {seen}")
        if e.kind == EntryKind.NORMAL:
            op, key = decode_command(e.data)
            node.kv[key] = (*node.kv.get(key, ()), op)
        w = self.pending_writes.pop((node.id, e.index), None)
        if w is not None:
            if w.data == e.data:
                self.stats["writes_ok"] += 1
                self.acked.setdefault(w.key, []).append(w.op)
                self.acked_ops.add(w.op)
                self.max_acked_index = max(self.max_acked_index, e.index)
            else:
                self._write_unknown(w)

    def _serve_read(self, node: SimNode, ctx: Any, index: int) -> None:
        rd = self.pending_reads.pop((node.id, ctx), None)
        if rd is None:
            return
        if node.applied < index:
            raise Violation(f"node {node.id} served read at {index} with applied {node.applied}")
        if index < rd.required_index:
            raise Violation(
                f"read on node {node.id} got read index {index}, older than write {rd.required_index} "
                f"acknowledged before it began"
            )
        value = node.kv.get(rd.key, ())
        need = self.acked[rd.key][: rd.required_ops] if rd.required_ops else []
        missing = set(need) - set(value)
        if missing:
            raise Violation(f"stale read of {rd.key!r} on node {node.id}: missing acknowledged {sorted(missing)}")
        order = self.key_order.get(rd.key, [])
        if list(value) != order[: len(value)]:
            raise Violation(f"read of {rd.key!r} on node {node.id} is not a prefix of the applied order")
        self.stats["reads_ok"] += 1
        self.read_results.append((rd.key, value))

    # ------------------------------------------------------------------ invariants

    def _check_new_leader(self, node: SimNode, r: Raft) -> None:
        other = self.leaders.get(r.term)
        if other is not None and other != node.id:
            raise Violation(f"two leaders in term {r.term}: {other} and {node.id}")
        self.leaders[r.term] = node.id
        self.note(f"node {node.id} leads term {r.term}")
        # Leader completeness (§5.4): "If a log entry is committed in a given term, then that entry will be present
        # in the logs of the leaders for all higher-numbered terms." A leader of an older term elected late (its
        # votes arrived after the others moved on) may lack entries committed since: it cannot commit anything.
        lg = r.log
        for index, (term, _) in self.committed.items():
            if index > lg.snap_index and lg.term(index) != term and r.term > self.commit_term[index]:
                raise Violation(f"leader {node.id} of term {r.term} lacks entry {index} (term {term}), committed "
                                f"by term {self.commit_term[index]}")

    def _check_entries(self, node: SimNode, entries: list[Entry]) -> None:
        # Log matching (§5.3): same index and term means same command and same preceding entry; by induction
        # the logs are identical up to there.
        r = node.raft
        assert r is not None
        prev_term = r.log.term(entries[0].index - 1) if entries[0].index - 1 >= r.log.snap_index else -1
        seen = self.entries_seen
        for e in entries:
            key = (e.index, e.term)
            known = seen.get(key)
            if known is None:
                seen[key] = (e.data, e.kind, prev_term)
            elif known[:2] != (e.data, e.kind) or (-1 not in (prev_term, known[2]) and known[2] != prev_term):
                raise Violation(f"log matching: node {node.id} has a different entry at index {e.index} term {e.term}")
            prev_term = e.term

    # ------------------------------------------------------------------ clients

    def new_op(self) -> int:
        self._next_op += 1
        return self._next_op

    def client_write(self, client: int, node_id: int, key: str) -> tuple[bool, int]:
        """Propose an append of a fresh op id to ``key`` at ``node_id``. Returns (accepted, leader hint)."""
        node = self.nodes[node_id]
        if not node.up or node.raft is None:
            return False, 0
        seq = self.new_op()
        data = encode_command(client, seq, key)
        try:
            index = node.raft.propose([data])
        except NotLeader as e:
            self.stats["not_leader"] += 1
            return False, e.leader
        self.pending_writes[(node_id, index)] = PendingWrite(f"{client}:{seq}", key, data, node_id, index, self.now)
        self._process(node)
        return True, node_id

    def client_read(self, client: int, node_id: int, key: str) -> bool:
        node = self.nodes[node_id]
        if not node.up or node.raft is None:
            return False
        seq = self.new_op()
        ctx = (client, seq)
        self.pending_reads[(node_id, ctx)] = PendingRead(
            key, node_id, self.now, len(self.acked.get(key, ())), self.max_acked_index
        )
        node.raft.read_index(ctx)
        self._process(node)
        return True

    def write(self, key: str, max_ms: float = 3000.0, client: int = 0) -> str | None:
        """Append a fresh op id to ``key`` through the current leader and wait for the acknowledgement.
        Returns the op id, or None if there was no leader or it was not acknowledged in time."""
        ld = self.leader()
        if ld is None:
            return None
        before = len(self.acked.get(key, ()))
        ok, _ = self.client_write(client, ld, key)
        if not ok or not self.run_until(lambda: len(self.acked.get(key, ())) > before, max_ms):
            return None
        return self.acked[key][before]

    def expire_clients(self, timeout_ms: float) -> None:
        """Give up on requests older than ``timeout_ms`` (their outcome stays unknown)."""
        old = self.now - timeout_ms
        for k in [k for k, w in self.pending_writes.items() if w.start < old]:
            self._write_unknown(self.pending_writes.pop(k))
        for k in [k for k, rd in self.pending_reads.items() if rd.start < old]:
            del self.pending_reads[k]
            self.stats["reads_failed"] += 1

    def _write_unknown(self, w: PendingWrite) -> None:
        self.stats["writes_unknown"] += 1

    # ------------------------------------------------------------------ end-of-run checks

    def check_converged(self) -> None:
        """All live nodes applied the same commands; every acknowledged write is in the final state."""
        live = [n for n in self.nodes.values() if n.up]
        ref = live[0]
        for n in live[1:]:
            if n.applied != ref.applied or n.kv != ref.kv:
                raise Violation(f"nodes {ref.id} and {n.id} differ at the end (applied {ref.applied} vs {n.applied})")
        final_ops = {op for ops in ref.kv.values() for op in ops}
        lost = self.acked_ops - final_ops
        if lost:
            raise Violation(f"acknowledged writes missing at the end: {sorted(lost)[:5]}")
        for key, ops in ref.kv.items():
            if len(set(ops)) != len(ops):
                raise Violation(f"a command was applied twice to {key!r}")


_TICK = 0
_DELIVER = 1
_CALL = 2
