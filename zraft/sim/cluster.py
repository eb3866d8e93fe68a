"""A whole cluster of production replicas (``zraft.server.replica``) in one process, under virtual time, driven by one
seed.

Each node is the replica a node process runs -- the Raft core, ``zraft.storage`` on a ``FaultDisk``, the real
``KVStore`` with its client sessions, the real snapshot path (taken in slices, compacted, sent in chunks with
flow control, verified, installed, restored) -- with only the clock, the network and the disk replaced. Every
message crosses the wire codec. A crash keeps only what the disk made durable (and may tear the last write);
crashes also strike inside a ready batch: before or after it is persisted, and inside an fsync. The replica's
probe hooks let the simulator check Raft's safety properties at the step that would break them, and the same
seed replays the same trace.
"""

from __future__ import annotations

import collections
import functools
import heapq
import logging
import math
import random
from collections.abc import Callable
from typing import Any

from zraft.core import (
    ClusterConfig,
    Options,
    Role,
)
from zraft.server.loop import Loop
from zraft.server.redis import RespServer, Routing
from zraft.server.replica import EARLY_TYPES, Replica
from zraft.server.settings import TICK_MS, Settings
from zraft.statemachine.kv import KVStore
from zraft.storage import Storage
from zraft.storage.faultdisk import FaultDisk
from zraft.transport import codec

from . import checks
from .checks import CONTACT_CHECK_MS, Violation
from .direct import DirectRequest, DirectRequests
from .network import NetConfig, SimNetwork
from .node import SEGMENT_BYTES, Crash, SimNode, SimTransport
from .probe import InvariantProbe
from .redis import RedisSimClient, SimListener, SimPoller, SimStream

__all__ = ["COVERAGE", "EARLY_TYPES", "TICK_MS", "Crash", "NetConfig", "SimCluster", "SimNode", "Violation"]

COVERAGE = {
    "vote_crash_rival": "a node crashed before its vote was durable, and a rival then campaigned in that same term",
    "leader_removed_self_cut": "a leader removed itself, then was cut off with new voters one short of a quorum",
    "learner_only_contact": "a leader heard from learners but not from a quorum of voters for an election timeout",
    "read_at_deposed_leader": "a leader cut off from its voters was asked for a read after a newer one took a write",
    "read_at_new_leader": "a new leader was asked for a read before it knew what the last one had committed",
    "crash_at_ack": "a leader crashed the moment it acknowledged a write (before its followers learned the commit)",
    "promote_unheard": "a promotion asked for a learner that had not answered this leader",
    "session_trims": "a session forgot the answers below its client's ack (pipelined clients)",
    "install_during_local_snapshot": "a snapshot from the leader was installed while the node was taking its own",
    "restart_after_compaction": "a node crashed just after a compaction removed its old files, and restarted",
    "restart_after_install": "a node crashed just after installing a snapshot from the leader, and restarted",
    "damage_detected": "a restart found a sealed log segment cut short, zero-filled or with a flipped bit",
    "recovery_checks": "what a restart would recover checked against the node (after compactions and installs)",
    "busy_refusals": "a leader refused proposals: too many uncommitted entries (clients back off)",
    "batched_pass": "a loop pass handled several messages that arrived while the node was busy",
    "batched_proposal": "a leader logged several client writes in one ready batch (one append, one fsync)",
}
"""What a run counts (``SimCluster.cov``) to show that the seeds reached the situations the planted bugs of issue
32 needed; ``zraft sim`` prints the table."""


class SimCluster(DirectRequests):
    def __init__(self, n: int, seed: int, net: NetConfig | None = None, options: Options | None = None,
                 compact_every: int = 0, chunk_bytes: int = 4096, spares: int = 0,
                 max_uncommitted: int = 4096, redis: bool = False) -> None:
        """``redis``: every node runs the Redis server too (``redis.py``), for ``RedisSimClient``s."""
        self.seed = seed
        self.rng = random.Random(seed)
        self.network = SimNetwork(net or NetConfig(), self.rng)
        """The links between nodes and clients: delays, loss, duplicates, cuts (``network.py``)."""
        self.options = options or Options(election_ticks=10, heartbeat_ticks=2, max_inflight=16,
                                          snapshot_timeout_ticks=20)
        self.config = ClusterConfig(tuple(range(1, n + 1)))
        self.settings = Settings(snapshot_every=compact_every or 1 << 62, snapshot_bytes=1 << 62,
                                 chunk_bytes=chunk_bytes, threads=False, snapshot_pieces=1,
                                 max_uncommitted=max_uncommitted)
        self.addresses = {i: f"sim-node-{i}:7000" for i in range(1, n + spares + 1)}
        self.crash_after_vote = 0.0
        """Probability of crashing a node right after it grants a vote (it restarts a moment later)."""
        self.crash_points = False
        """Crash nodes inside ready batches: before and after persisting them, and inside fsyncs; right after
        compactions and snapshot installs; and damage a copy of the disk at restarts (it must be detected)."""
        self.segment_bytes = SEGMENT_BYTES
        self.read_new_leaders = 0.0
        """Probability that a new leader is asked for a read of key f8 the moment it wins."""
        self.work_ms = 1.0
        self.pass_ms = 0.0
        """Virtual time from a message's arrival at a node to the loop pass that handles it: what else arrives
        meanwhile is handled in the same pass (one proposal for a pass's writes, one ready batch for its answers),
        as on a node busy with its previous pass. 0: a pass per instant."""
        """Virtual time between the loop passes that write a snapshot (or free memory) a piece at a time: a slow
        disk makes a local snapshot overlap what the network brings (an install from the leader)."""
        self.cov: collections.Counter[str] = collections.Counter()
        """How often each situation of ``COVERAGE`` happened."""
        self.last_heard: dict[tuple[int, int], float] = {}
        """(node, peer) -> when a message from the peer was last delivered to the node."""
        self.lead_since: dict[int, float] = {}
        self.config_since: dict[int, float] = {}
        """node -> when the configuration in force on it last changed."""
        """node -> when it last became leader."""
        self.contact_reported: set[tuple[int, int]] = set()
        self.config_entries: dict[int, ClusterConfig] = {}
        """index -> the configuration a committed configuration entry there made."""
        self.rival: tuple[int, int, int] | None = None
        """(node, term, candidate) of a crash before a vote was durable, in the batch being carried out."""
        self.drift: dict[int, float] = {}
        """node -> how fast its clock runs (1.0 when absent): the seeds with lease clients set it."""
        self.lease_watch = False
        """Whether lease expiries are recorded (``lease_expired``), for the lease clients' check."""
        self.lease_expired: dict[int, tuple[float, str]] = {}
        """lease id -> when an entry expiring it was first applied, and by which node at which index."""
        self.lease_promised: dict[int, tuple[float, float]] = {}
        """lease id -> (the latest promise until, the send time of the keepalive that made it)."""
        self.lease_ttl: dict[int, int] = {}
        self.probe = InvariantProbe(self)
        """Every replica's probe: the invariants checked inside a ready batch, and crashes there (``probe.py``)."""
        self.nodes = {i: SimNode(i, self.rng.getrandbits(32), self.config) for i in self.config.voters}
        self.now = 0.0
        self._seq = 0
        self._events: list[tuple[float, int, int, Any]] = []
        self.steps = 0
        self.messages_sent = 0
        self.chunks_sent = 0
        self.messages_delivered = 0
        self.faults = 0
        self.crashes = 0
        self.snapshots_taken = 0
        self.snapshots_installed = 0
        self.log_lines: list[str] = []
        self.clients: dict[bytes, Callable[[int, dict[str, Any]], None]] = {}
        """Who receives the replies sent to a client identity: (node, reply)."""
        # Global knowledge for the invariants.
        self.leaders: dict[int, int] = {}  # term -> node
        self.entries_seen: dict[tuple[int, int], tuple[bytes, int, int]] = {}  # (index, term) -> data, kind, prev
        self.committed: dict[int, tuple[int, bytes]] = {}  # index -> (term, data) applied somewhere
        self.commit_term: dict[int, int] = {}
        """index -> the lowest term of a node that applied it: the entry was committed in that term or earlier."""
        # Direct requests (tests): each write is an append of a fresh op id, in a session of its own.
        self._direct: dict[int, DirectRequest] = {}
        self._refused: dict[int, int] = {}  # request id -> the leader a refusal named
        self._next_id = 0
        self.acked: dict[str, list[str]] = {}  # key -> op ids acknowledged, in ack order
        self.acked_ops: set[str] = set()
        self.last_direct_op = ""
        """The op id of the last ``client_write``."""
        self.stats = {"writes_ok": 0, "writes_unknown": 0, "reads_ok": 0, "reads_failed": 0, "not_leader": 0}
        self.read_results: list[tuple[str, tuple[str, ...]]] = []
        self.membership: dict[str, int] = {}
        """Membership changes and transfers the leader accepted, by kind (``membership_refused``: refused)."""
        self.membership_refused = 0
        self.membership_acked: dict[str, int] = {}
        """Membership requests answered OK (the change committed, or the new leader leads), by kind."""
        self._member_reqs: dict[int, str] = {}
        self.committed_configs = 0
        self.clients[b"direct"] = self._direct_reply
        self.clients[b"members"] = self._member_reply
        self.redis = redis
        self.redis_rng = random.Random(f"redis-{seed}")
        """The Redis connections' delays and the servers' session ids: a generator of their own, so that a seed
        without Redis runs exactly as it did before there was any."""
        self._next_fd = 1000
        for name in ("zraft.replica", "zraft.node", "zraft.storage"):
            lg = logging.getLogger(name)
            if lg.level == logging.NOTSET:
                lg.setLevel(logging.ERROR)  # thousands of seeds: their expected warnings are not news
        for i in self.config.voters:
            self._start(self.nodes[i])
        # Spare nodes, started only when added (they wait with no configuration of their own).
        for i in range(n + 1, n + spares + 1):
            self.nodes[i] = SimNode(i, self.rng.getrandbits(32), ClusterConfig(()))
        self.at(CONTACT_CHECK_MS, lambda: checks.check_leader_contact(self))

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
        if kind == _PASS:
            node = self.nodes[payload[0]]
            if payload[1] == node.pass_gen and node.up:
                node.pass_at = math.inf
                self._guard(node, functools.partial(self._pass, node))
        elif kind == _DELIVER:
            self._deliver(*payload)
        elif kind == _TO_NODE:
            self._deliver_request(*payload)
        elif kind == _TO_CLIENT:
            node_id, client, frame = payload
            handler = self.clients.get(client)
            if handler is not None:
                for reply in codec.decode_replies(frame):
                    handler(node_id, reply)
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

    def _guard(self, node: SimNode, fn: Callable[[], Any]) -> None:
        """Run replica work; a ``Crash`` raised inside it crashes the node there. Afterwards, a snapshot being
        written gets its next slice a moment later (the loop's busy passes)."""
        rep = node.replica
        before = (rep.storage.untidy, rep.snapshots_installed, rep.installs_during_snapshot,
                  rep.machine.trims, rep.snapshots_taken) if rep is not None else None
        try:
            fn()
        except Crash:
            rival = self.rival
            if rival is not None and rival[0] == node.id:
                # Back at once (before any message can reach it), and a rival asks for its vote in the same term.
                self.crash(node.id, restart_after=0.0)
                self.at(0.0, lambda: self._campaign_rival(*rival))
            else:
                self.crash(node.id, restart_after=self.rng.uniform(20.0, 1500.0))
            return
        finally:
            self.rival = None
        rep = node.replica
        if before is not None and rep is not None and node.up:
            if rep.installs_during_snapshot > before[2]:
                self.cov["install_during_local_snapshot"] += 1
            if rep.machine is not None and rep.machine.trims > before[3]:
                self.cov["session_trims"] += rep.machine.trims - before[3]
            if (before[0] and not rep.storage.untidy) or rep.snapshots_installed > before[1] \
                    or (rep.snapshots_taken > before[4] and rep.snapshots_installed):
                # After a compaction, an install, and a snapshot of its own once it has installed one (its job may
                # have raced the install; its configuration comes from what the install left).
                checks.check_recovery(self, node)
            if self.crash_points:
                # Restarts right where recovery has most to get right: just after a compaction removed the files
                # a snapshot made unnecessary, and just after a snapshot from the leader replaced the log.
                if before[0] and not rep.storage.untidy and self.rng.random() < 0.2:
                    self.cov["restart_after_compaction"] += 1
                    self.crash(node.id, restart_after=self.rng.uniform(1.0, 200.0))
                    return
                if rep.snapshots_installed > before[1] and self.rng.random() < 0.2:
                    self.cov["restart_after_install"] += 1
                    self.crash(node.id, restart_after=self.rng.uniform(1.0, 200.0))
                    return
        loop = node.loop
        if node.up and loop is not None:
            # The next pass: at the next tick, or a moment later while a snapshot is being written.
            self._wake(node, self.now + self.work_ms if loop.busy() else loop.next_tick * 1000.0 + 1e-6)

    def _wake(self, node: SimNode, at: float) -> None:
        """Run a loop pass of ``node`` at ``at``, unless one is due sooner."""
        if at < node.pass_at:
            node.pass_at = at
            node.pass_gen += 1
            self._schedule(at, _PASS, (node.id, node.pass_gen))

    def _pass(self, node: SimNode) -> None:
        """One pass of the node's loop: feed what arrived, then end input, tick, work, process."""
        rep, loop = node.replica, node.loop
        assert rep is not None and loop is not None  # only live nodes have passes
        inbox, node.inbox = node.inbox, []
        if len(inbox) > 1:
            self.cov["batched_pass"] += 1
        resp = node.resp
        for kind, msg, identity in inbox:
            if kind == "client_replies":  # answers to the writes its Redis server forwarded to the leader
                if resp is not None:
                    resp.on_replies(b"", msg)
                continue
            rep.receive(kind, msg, identity)
        if resp is not None and node.poller is not None and node.listener is not None:
            resp.handle(node.poller.ready(node.listener))  # the Redis commands of this pass join its proposal
        loop.run_pass(self.now / 1000.0)

    def _feed(self, node: SimNode, kind: str, msg: Any, identity: bytes) -> None:
        """A message arrives at ``node``: its next loop pass, ``pass_ms`` from now (or sooner), handles it."""
        node.inbox.append((kind, msg, identity))
        self._wake(node, self.now + self.pass_ms)

    def _feed_now(self, node: SimNode, kind: str, msg: Any, identity: bytes) -> None:
        """A request handed to ``node`` that it handles in a pass right now (the tests' and the nemesis's)."""
        node.inbox.append((kind, msg, identity))
        self._guard(node, functools.partial(self._pass, node))

    # ------------------------------------------------------------------ network

    @property
    def net(self) -> NetConfig:
        return self.network.config

    @net.setter
    def net(self, config: NetConfig) -> None:
        self.network.config = config

    def send_peer(self, src: int, dst: int, payload: bytes) -> None:
        network = self.network
        if network.lost():
            return
        for _ in range(network.copies()):
            self._schedule(network.arrival((src, dst), self.now), _DELIVER, (src, dst, payload))

    def _deliver(self, src: int, dst: int, payload: bytes) -> None:
        if self.network.blocks(src, dst, payload):
            return
        node = self.nodes[dst]
        rep = node.replica
        if not node.up or rep is None:
            return
        self.messages_delivered += 1
        kind, msg = codec.decode(payload)
        if msg.src != src:
            raise Violation(f"node {src} sent a message as node {msg.src}")
        self.last_heard[(dst, src)] = self.now
        self._feed(node, kind, msg, b"node-%d" % src)

    def send_to_node(self, client: bytes, node_id: int, req: dict[str, Any]) -> None:
        """A client's request, over the network (lost with the network's loss rate; never blocked)."""
        if self.network.lost():
            return
        self._schedule(self.network.arrival((client, node_id), self.now), _TO_NODE,
                       (client, node_id, codec.encode_client(req)))

    def _deliver_request(self, client: bytes, node_id: int, frame: bytes) -> None:
        node = self.nodes[node_id]
        rep = node.replica
        if not node.up or rep is None:
            return
        kind, msg = codec.decode(frame, peer=False)
        self._feed(node, kind, msg, client)

    def send_to_client(self, node_id: int, client: bytes, frame: bytes) -> None:
        if client in (b"direct", b"members"):  # the tests' and the nemesis's requests are answered at once
            handler = self.clients[client]
            for reply in codec.decode_replies(frame):
                handler(node_id, reply)
            return
        if self.network.lost():
            return
        self._schedule(self.network.arrival((node_id, client), self.now), _TO_CLIENT, (node_id, client, frame))

    def isolate(self, i: int) -> None:
        self.partition([i], [j for j in self.nodes if j != i])

    def partition(self, *groups: list[int]) -> None:
        """Cut every link between nodes of different groups (nodes in no group are cut from all)."""
        self.network.partition(list(self.nodes), groups)
        self.faults += 1
        self.note(f"partition {[sorted(g) for g in groups]}")

    def cut(self, a: int, b: int, both: bool = True) -> None:
        self.network.cut(a, b, both)
        self.faults += 1
        self.note(f"cut {a}->{b}{' both ways' if both else ''}")

    def heal(self) -> None:
        held = len(self.network.held)
        self.note("heal network" + (f", releasing {held} held messages" if held else ""))
        for at, m in self.network.heal(self.now):  # the backlog arrives at once, in order, a little late
            self._schedule(at, _DELIVER, m)

    # ------------------------------------------------------------------ nodes

    def _start(self, node: SimNode) -> None:
        if self.crash_points and node.replica is None and node.started and self.rng.random() < 0.3:
            checks.damage_probe(self, node)
        node.disk.on_sync = lambda: self._maybe_crash_in_sync(node)
        storage = self.open_storage(node, node.disk)
        node.started = True
        drift = self.drift
        rep = Replica(node.id, node.bootstrap, storage, SimTransport(self, node.id),
                      lambda i=node.id: drift.get(i, 1.0) * self.now / 1000.0,
                      random.Random(self.rng.getrandbits(64)), self.options, self.settings, self.addresses,
                      probe=self.probe, machine=KVStore)
        node.replica = rep
        node.loop = Loop(rep, TICK_MS / 1000.0, (self.now + self.rng.uniform(0, TICK_MS)) / 1000.0)
        if self.redis:
            self._start_redis(node, rep, node.loop)
        node.last_hard_state = storage.recovered.hard_state
        node.written_commit = node.last_hard_state.commit if node.last_hard_state is not None else 0
        node.up = True
        checks.check_log_terms(node.id, rep.raft, "after a restart")
        # Like a real node, replay the committed log before serving anything.
        self._guard(node, rep.start)
        if node.up and rep.machine.applied < node.durable_commit:
            raise Violation(f"node {node.id} restarted with applied {rep.machine.applied} < {node.durable_commit}, "
                            "a commit index it had made durable")

    # ------------------------------------------------------------------ the Redis server (redis.py)

    def _start_redis(self, node: SimNode, rep: Replica[KVStore], loop: Loop) -> None:
        """The node's Redis server, as ``zraft node --resp`` runs it: a source of its loop, its answers routed from
        the replica's transport, its writes forwarded to the leader over the peer links."""
        self._next_fd += 1
        node.listener = SimListener(self._next_fd)
        node.poller = SimPoller()
        src = node.id
        resp = node.resp = RespServer(rep, f"sim-node-{src}:6379",
                                      forward=lambda target, frame: self._redis_forward(src, target, frame),
                                      clock=lambda: self.now / 1000.0, listener=node.listener,
                                      rng=random.Random(self.redis_rng.getrandbits(64)))
        rep.transport = Routing(rep.transport, resp)
        resp.attach(node.poller)
        loop.sources.append(resp)
        self.clients[b"fwd-%d" % src] = lambda leader, reply: self._redis_replies(src, leader, reply)

    def redis_connect(self, node_id: int, client: RedisSimClient) -> SimStream:
        """A client opens a connection to ``node_id``'s Redis server: accepted there a moment later, or closed
        under the client if the node is down by then."""
        self._next_fd += 1
        stream = SimStream(self, node_id, self._next_fd, client)
        node = self.nodes[node_id]
        listener = node.listener

        def arrive() -> None:
            if node.up and node.listener is listener and listener is not None:
                listener.pending.append(stream)
                self.redis_wake(node_id)
            else:
                stream.close()  # refused: nobody listens there now

        self.at(self.redis_rng.uniform(self.net.min_delay, self.net.max_delay), arrive)
        return stream

    def redis_wake(self, node_id: int) -> None:
        node = self.nodes[node_id]
        if node.up:
            self._wake(node, self.now + self.pass_ms)

    def _redis_forward(self, src: int, target: int, frame: bytes) -> bool:
        """A follower's Redis server sends writes to the leader over the peer link (cut by partitions, lost with
        the network's loss rate: the server resends them)."""
        network = self.network
        if network.lost():
            return True

        def arrive() -> None:
            node = self.nodes[target]
            if (src, target) in network.blocked or not node.up or node.replica is None:
                return
            kind, msg = codec.decode(frame)
            self._feed(node, kind, msg, b"fwd-%d" % src)

        self._schedule(network.arrival((src, target), self.now), _CALL, arrive)
        return True

    def _redis_replies(self, src: int, leader: int, reply: dict[str, Any]) -> None:
        node = self.nodes[src]
        if (leader, src) in self.network.blocked or not node.up or node.resp is None:
            return
        if reply.get("ok"):
            self.cov["redis_forwarded"] += 1
        self._feed(node, "client_replies", [reply], b"")

    def open_storage(self, node: SimNode, disk: FaultDisk) -> Storage:
        """A node's storage opened (recovered) from ``disk``: its own, or a copy to try a restart on."""
        return Storage(node.path, disk=disk, segment_bytes=self.segment_bytes, background_prealloc=False)

    def crash(self, i: int, restart_after: float | None = None) -> None:
        """Crash node ``i``: it loses everything its disk had not made durable (a write in flight may be torn)."""
        node = self.nodes[i]
        if not node.up:
            return
        node.up = False
        rep = node.replica
        if rep is not None:
            self.snapshots_taken += rep.snapshots_taken
            self.snapshots_installed += rep.snapshots_installed
        node.replica = None
        node.loop = None
        node.inbox = []
        if node.listener is not None:  # its Redis connections die with it
            for stream in [*node.listener.pending, *node.listener.streams.values()]:
                stream.close()
            node.resp = node.listener = node.poller = None
        node.pass_at = math.inf
        node.pass_gen += 1  # its scheduled pass is cancelled
        node.disk.on_sync = None
        node.disk.crash(self.rng.choice(("lose", "prefix", "zeros")))
        self.faults += 1
        self.crashes += 1
        self.note(f"crash node {i}")
        for rid in [rid for rid, d in self._direct.items() if d.node == i]:
            self._direct_failed(self._direct.pop(rid))
        if restart_after is not None:
            self.at(restart_after, lambda: self.restart(i))

    def crash_restart(self, i: int, after: float) -> None:
        if self.nodes[i].up:
            self.crash(i, restart_after=after)

    def restart(self, i: int) -> None:
        node = self.nodes[i]
        if node.up:
            return
        self.note(f"restart node {i}")
        self._start(node)

    def _maybe_crash_in_sync(self, node: SimNode) -> None:
        if self.crash_points and node.up and self.rng.random() < 0.002:
            raise Crash  # inside an fsync: the write is on its way, not durable (it may be torn)

    def _campaign_rival(self, voter: int, term: int, candidate: int) -> None:
        """After ``voter`` crashed before its vote for ``candidate`` in ``term`` was durable: another voter, still
        in the term before, starts an election now, so that it asks the restarted node for a vote in the same term
        (the node must not grant a second vote in a term: its first one may have been sent)."""
        for node in self.nodes.values():
            r = node.raft
            if r is not None and node.id not in (voter, candidate) and r.term == term - 1 \
                    and node.id in r.config.voters and r.role != Role.LEADER:
                self.cov["vote_crash_rival"] += 1
                self.note(f"node {node.id} campaigns in term {term} against {candidate}")
                rep = node.replica
                assert rep is not None
                self._guard(node, functools.partial(_campaign, rep))
                return

    def leader(self) -> int | None:
        """The leader of the highest term among live nodes, if one exists."""
        best: tuple[int, int] | None = None
        for node in self.nodes.values():
            r = node.raft
            if r is not None and r.role == Role.LEADER and (best is None or r.term > best[0]):
                best = (r.term, node.id)
        return best[1] if best else None

    def members(self) -> list[SimNode]:
        """The nodes of the configuration in force at the leader (all started nodes if there is none)."""
        ld = self.leader()
        if ld is None:
            return [n for n in self.nodes.values() if n.started]
        r = self.nodes[ld].raft
        assert r is not None
        return [self.nodes[i] for i in r.config.members if i in self.nodes] + [self.nodes[ld]] * (
            ld not in r.config.members)

    def stable_leader(self) -> int | None:
        """A leader that every live member follows in its term and has heard from lately (and that is not
        handing leadership over)."""
        ld = self.leader()
        if ld is None or self.nodes[ld].raft.transferee:  # type: ignore[union-attr]
            return None
        term = self.nodes[ld].raft.term  # type: ignore[union-attr]
        fresh = 2 * self.options.heartbeat_ticks  # heard from the leader within two heartbeat intervals
        for node in self.members():
            r = node.raft
            if r is not None and (r.term != term or r.lead != ld or (node.id != ld and r.election_elapsed > fresh)):
                return None
        return ld

    def note(self, text: str) -> None:
        self.log_lines.append(f"t={self.now:9.1f} {text}")

    def check_converged(self) -> None:
        """After the heal: every member holds the same store and sessions (``checks.check_converged``)."""
        checks.check_converged(self)

    # ------------------------------------------------------------------ end-of-run checks

_PASS = 0
_DELIVER = 1
_CALL = 2
_TO_NODE = 3
_TO_CLIENT = 4


def _campaign(rep: Replica[KVStore]) -> None:
    rep.raft.campaign(pre_vote=False)  # its pre-vote round (if any) done: it asks for votes in the next term
    rep.process()

