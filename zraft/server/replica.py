"""One replica: a Raft core with its log storage, its state machine and its clients -- everything a node does
between the wire and the core, and nothing that touches a socket, a thread of its own or the real clock.

The node process (``zraft.server.node``) runs one replica inside its ZeroMQ event loop; the simulator (``zraft.sim``)
runs several in one process under virtual time. Only the seams differ, each passed in (hashicorp/raft's
``NewRaft(conf, fsm, logs, stable, snaps, trans)`` shape):

- ``Clock``: monotonic seconds (``time.monotonic``; the simulator's virtual clock);
- ``Transport``: sends peers' messages and answers clients (``zraft.transport.zmq_transport``; the simulated
  network);
- the log storage: ``zraft.storage.Storage`` over a ``Disk`` (``OsDisk``; ``FaultDisk``, which crashes, tears
  writes and fails fsyncs);
- the state machine: a ``zraft.statemachine.machine.StateMachine`` (``KVStore`` with its client sessions, the same
  in both), made by the ``machine`` given (the class: empty, or restored from a snapshot).

The event loop feeds a replica: ``receive`` each decoded message (Raft messages, snapshot chunks, client
requests), ``end_input`` after a pass's messages (the writes that arrived together become one proposal: one log
append, one fsync, one AppendEntries per follower), ``tick`` on the clock, ``work`` while ``busy`` (a snapshot
being written), then ``process``: carry out the core's ready batch -- send the leader's appends, persist (fsync)
before anything that promises what was persisted, send the rest, apply, answer clients.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from zraft.core import (
    NONE,
    ClusterConfig,
    EntryKind,
    Message,
    MsgType,
    Options,
    Raft,
    Ready,
    Role,
    Snapshot,
)
from zraft.server.backups import Backups
from zraft.server.clients import ClientRequests, PendingRead, PendingWrite
from zraft.server.lessor import Lessor
from zraft.server.membership import Membership
from zraft.server.metrics import Runs, Stats
from zraft.server.seams import Clock, Probe, Transport
from zraft.server.settings import (
    DEFAULT_SETTINGS,
    SNAPSHOT_JITTER,
    TICK_MS,
    Settings,
)
from zraft.server.snapshotting import STEP_BUDGET_S, Receiver, Sender, SnapshotJob
from zraft.server.watches import Watches
from zraft.statemachine.machine import MachineType, StateMachine
from zraft.storage import CorruptionError, Storage, StorageError
from zraft.storage.snapshots import SnapshotFile
from zraft.storage.store import NEWER_ADVICE
from zraft.transport import codec
from zraft.transport.codec import Err
from zraft.transport.requests import (
    OP_OF,
    WRITES,
    LeaseKeepAlive,
    Range,
    Write,
)
from zraft.util.logutil import LogLimiter

log = logging.getLogger("zraft.replica")

RELEASE_PER_PASS = 1_000
"""Dropped log entries freed per loop pass (``RaftLog.release``): 0.1-0.4 ms in a running node (see
``zraft.core.log.RELEASE_AT_ONCE``). 5,000 a pass still made the leader's passes 4-6 ms long, instead of about
1.5, for the 20 passes after each snapshot."""
EARLY_TYPES = frozenset((MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT))
"""What a leader sends before its ready batch is durable: it writes its log in parallel with replicating it
(diss. §10.2.1; the core counts the leader itself only once the batch is durable)."""


M = TypeVar("M", bound=StateMachine)


class Replica(ClientRequests[M]):
    """A Raft core with its storage, state machine and clients (the module's docstring says how it is driven); its
    clients' requests are handled by its part ``ClientRequests`` (``clients.py``)."""

    def __init__(self, node_id: int, config: ClusterConfig, storage: Storage, transport: Transport, clock: Clock,
                 rng: random.Random, options: Options, settings: Settings = DEFAULT_SETTINGS,
                 addresses: dict[int, str] | None = None, probe: Probe | None = None,
                 keys: dict[int, str] | None = None, *, machine: MachineType[M]) -> None:
        """Recover from ``storage`` (its snapshot into the state machine, made by ``machine``; the committed log
        is replayed by ``start``).
        ``config``, ``addresses`` and ``keys`` (Z85 public keys) describe the cluster it was started with; once its
        membership has changed, the configuration in the log (with every member's address and key) wins."""
        self.id = node_id
        self.storage = storage
        self.transport = transport
        self.clock = clock
        self.settings = settings
        self.addresses = dict(addresses or {})
        """Every node's address we know of (for leader hints): the bootstrap list, updated by configurations."""
        self.probe = probe
        rec = storage.recovered
        self.machine_type = machine
        self.machine: M = machine()
        """The state machine (replaced when a snapshot is installed)."""
        applied = 0
        if rec.snapshot is not None:
            try:
                self.machine = self._restore(rec.snapshot)
            except ValueError as e:
                f = rec.snapshot.data
                if not isinstance(f, SnapshotFile):
                    raise
                newer = "format" in str(e) and "not one this version reads" in str(e)
                raise CorruptionError(f.path, f.data_offset, str(e), NEWER_ADVICE if newer else "") from None
            applied = rec.snapshot.index
        self.raft = Raft(node_id, config, rng, options, rec.hard_state, rec.snapshot, rec.entries, applied)
        self.snap_job: SnapshotJob | None = None
        self._snap_rng = random.Random(node_id)  # deterministic (the simulator), and different on every node
        self._snap_due = 1.0 - SNAPSHOT_JITTER * self._snap_rng.random()
        """The fraction of ``snapshot_every`` (and ``snapshot_bytes``) after which the next snapshot is due."""
        self.snap_stats: dict[str, Any] = {}
        self.snapshots_taken = 0
        self.snapshots_installed = 0
        self.installs_during_snapshot = 0
        """Snapshots from the leader installed while this node was taking one of its own (whose result is dropped)."""
        self.stats = Stats()
        """Counters and histograms for ``zraft.server.metrics`` (plain ints: nothing but counting on the hot path)."""
        self.gauges: dict[str, int] = {}
        """Slower-changing figures for the metrics (disk usage, bad frames), refreshed about once a second."""
        self._gauges_due = 0.0
        self._arrived = 0.0
        """Clock time the client frame being handled arrived (request latency metrics)."""
        self._garbage: list[list[Any]] = []
        """Large lists no longer needed (a snapshot image's keys), freed a slice per loop pass (``work``)."""
        self._last_role = Role.FOLLOWER
        self._last_leader = NONE
        self._job_max_pass = 0.0
        self._job_max_late = 0.0
        self.pending_writes: dict[tuple[int, int], list[PendingWrite]] = {}
        self.pending_reads: dict[int, list[PendingRead]] = {}
        """The reads waiting for each read index asked (a loop pass's gets share one)."""
        self._read_group: list[PendingRead] = []
        """This pass's gets, until ``end_input`` asks their read index."""
        self._writes: list[tuple[bytes, Write, bool]] = []
        self._outbox: dict[bytes, list[dict[str, Any]]] = {}
        self._next_read = 0
        self.sender = Sender(node_id, transport.send_chunk, clock, settings.chunk_bytes)
        self.receiver = Receiver(node_id, storage, transport.send_ack, settings.max_snapshot_bytes,
                                 self._validate_snapshot)
        self._prepared: tuple[int, int, M] | None = None
        """The store restored from a received snapshot while validating it, kept for its installation."""
        self.limiter = LogLimiter(log, clock)
        self._dropped_seen = 0
        self.peer_in: dict[int, list[int]] = {}
        """Raft messages received per peer: [all, stale] (stale: from an older term, or entries all committed
        here already -- what a healed link delivers late; harmless, and counted to show it)."""
        self.status_extra: Callable[[], dict[str, Any]] | None = None
        """More fields for status replies (the node adds its transport's)."""
        self.watches = Watches(clock, self._reply)
        """The changes this node applied lately, and the watches it serves (``zraft.server.watches``)."""
        self.watches.reset(self.machine.revision)
        self._watch_asked = 0
        """The term in which this node (leading) last proposed that the store start watching."""
        self._wire_watches()
        self.lessor = Lessor(clock, 2 * options.election_ticks * TICK_MS / 1000)
        """The leader's lease deadlines (``zraft.server.lessor``)."""
        self.backups = Backups(node_id, storage, clock, self._reply)
        self.membership = Membership(node_id, self.raft, self.addresses, keys or {}, self._reply, self._leader_info)
        """Membership changes and leadership transfers clients asked for (``zraft.server.membership``)."""
        """Backups being prepared and read (``zraft.server.backups``)."""

    # ------------------------------------------------------------------ inputs

    def start(self) -> None:
        """Replay the committed log before serving anything."""
        self.membership.config_changed(self.raft.config)
        self.process()
        self._outbox.clear()

    def receive(self, kind: str, msg: Any, identity: bytes) -> None:
        """One decoded message (``codec.decode``'s kinds), from an authenticated peer for the peer kinds."""
        raft = self.raft
        if kind == "raft":
            if msg.type == MsgType.SNAPSHOT:
                self.limiter.warn("raft_snapshot", "node=%d event=bad_raft_message error=snapshots travel in chunks",
                                  self.id)
                return
            counts = self.peer_in.get(msg.src)
            if counts is None and msg.src in self.addresses:  # members only: a stranger's ids cost no memory
                counts = self.peer_in[msg.src] = [0, 0]
            if counts is not None:
                stats = self.stats
                stats.last_contact[msg.src] = self.clock()
                if msg.type == MsgType.APPEND:
                    stats.append_received[msg.src] = stats.append_received.get(msg.src, 0) + 1
                elif msg.type == MsgType.APPEND_RESP and msg.reject:
                    stats.append_rejected[msg.src] = stats.append_rejected.get(msg.src, 0) + 1
                counts[0] += 1
                if msg.term < raft.term or (msg.type == MsgType.APPEND and msg.entries
                                            and msg.index + len(msg.entries) <= raft.log.commit):
                    counts[1] += 1
            raft.step(msg)
        elif kind == "client_batch":
            self._arrived = self.clock()  # one arrival time per frame: its reads' latencies are observed together
            ops = self.stats.requests
            for req in msg:
                if isinstance(req, codec.ProtocolError):
                    ops["invalid"] = ops.get("invalid", 0) + 1
                    self.bad_request(identity, req, True)
                    continue
                op = OP_OF[type(req)]
                ops[op] = ops.get(op, 0) + 1
                if isinstance(req, WRITES):
                    self._writes.append((identity, req, True))
                else:
                    self._client_other(identity, req, True)
        elif kind == "client":
            ops = self.stats.requests
            op = OP_OF[type(msg)]
            ops[op] = ops.get(op, 0) + 1
            self._arrived = self.clock()
            if isinstance(msg, WRITES):
                self._writes.append((identity, msg, False))
            else:
                self._client_other(identity, msg)
        elif msg.dst != self.id:
            return
        elif kind == "snap_chunk":
            # Only from the leader we follow, in its term: a stranger's file never replaces our state.
            if msg.term != raft.term or msg.src != raft.lead or raft.role != Role.FOLLOWER:
                self.limiter.warn("snap_not_leader", "node=%d event=snapshot_chunk_dropped from=%d term=%d "
                                  "(our term %d, leader %d)", self.id, msg.src, msg.term, raft.term, raft.lead)
                return
            self._on_chunk(msg)
        elif kind == "snap_ack":
            if msg.term == raft.term and raft.role == Role.LEADER:
                outcome = self.sender.on_ack(msg)
                if outcome == "failed":
                    raft.report_snapshot(msg.src, False)
                elif outcome == "done":
                    self.stats.snapshots_sent += 1

    def end_input(self) -> None:
        """The messages that arrived together are in: ask one read index for their reads, and propose their
        writes as one batch. (Each read is served at a point after every one of them arrived.)"""
        if self._read_group:
            group, self._read_group = self._read_group, []
            self._next_read += 1
            self.pending_reads[self._next_read] = group
            self.raft.read_index(self._next_read)
        if self._writes:
            writes, self._writes = self._writes, []
            self._propose(writes)
        dropped = sum(self.raft.dropped.values())
        if dropped != self._dropped_seen:
            self._dropped_seen = dropped
            self.limiter.warn("impossible", "node=%d event=impossible_message count=%d last=%s", self.id, dropped,
                              self.raft.last_dropped)

    def tick(self, late_s: float = 0.0) -> None:
        """One tick of the core's clock; ``late_s``: how late the loop got to it (for snapshot statistics)."""
        if self.snap_job is not None:
            self._job_max_late = max(self._job_max_late, late_s)
        self.raft.tick()
        self.membership.ticks += 1
        now = self.clock()
        if now >= self._gauges_due:
            self._gauges_due = now + 1.0
            usage = self.storage.disk_usage()
            extra = self.status_extra() if self.status_extra is not None else {}
            self.gauges = {"log_bytes": usage.get("log_bytes", 0), "disk_bytes": usage.get("disk_bytes", 0),
                           "segments": usage.get("segments", 0), "bad_frames": extra.get("bad_frames", 0)}
        if self.membership.transfer is not None:
            self.membership.check_transfer()
        if self.backups.open:
            self.backups.tick(now)
        for peer in self.sender.tick():
            self.raft.report_snapshot(peer, False)
        if self.lessor.ready and self.raft.role == Role.LEADER and self.raft.transferee == NONE:
            expired = self.lessor.due()
            if expired:
                self.raft.propose([self.machine.expire_command(ids) for ids in expired])

    def busy(self) -> bool:
        """True while a snapshot is being written, or dropped log entries freed, and the loop should call ``work``
        without waiting."""
        job = self.snap_job
        return (job is not None and job.busy()) or bool(self.raft.log.garbage) or bool(self._garbage) \
            or self.storage.tidy_due

    def work(self) -> None:
        if self.storage.tidy_due:
            self.storage.tidy()
        if self.raft.log.garbage:
            self.raft.log.release(RELEASE_PER_PASS)
        elif self._garbage:
            g = self._garbage[-1]
            del g[-RELEASE_PER_PASS:]
            if not g:
                self._garbage.pop()
        job = self.snap_job
        if job is not None:
            job.step()
            if job.done():
                t0 = time.perf_counter()
                self._finish_snapshot()
                if self.backups.waiting:
                    self._serve_backups()
                if self.snap_stats.get("index") == job.image.applied:  # the whole pass, freeing included
                    ms = round((time.perf_counter() - t0) * 1000, 2)
                    self.snap_stats["finish_ms"] = ms
                    self.snap_stats["max_loop_pass_ms"] = max(self.snap_stats["max_loop_pass_ms"], ms)

    def process(self) -> None:
        """Carry out the core's ready batch, if it has one, and send the answers collected in this pass."""
        timed = self.snap_job is not None  # a loop pass is timed only while a snapshot is taken (its statistics)
        t0 = time.perf_counter() if timed else 0.0
        if self.raft.has_ready():
            self._process_ready()
        watches = self.watches
        if watches.watchers:
            watches.send()
        if watches.events:
            watches.seal()
        if self._outbox:
            self._flush_outbox()
        if timed and self.snap_job is not None:
            self._job_max_pass = max(self._job_max_pass, time.perf_counter() - t0)

    def close(self) -> None:
        if self.snap_job is not None:
            self.snap_job.wait()
        self.receiver.abort()
        self.storage.close()

    # ------------------------------------------------------------------ clients

    # ------------------------------------------------------------------ carrying out a ready batch

    def _process_ready(self) -> None:
        rd: Ready = self.raft.ready()
        probe = self.probe
        stats = self.stats
        if probe is not None:
            probe.ready(self, rd)
        elected = False
        # 1. A leader's AppendEntries, heartbeats and snapshots go out first (see EARLY_TYPES).
        late = []
        for m in rd.messages:
            if m.type in EARLY_TYPES:
                self._send(m)
            else:
                late.append(m)
        # 2. Persist before anything else that depends on it is sent (the core's contract).
        if rd.hard_state is not None or rd.entries or rd.snapshot is not None:
            if probe is not None:
                probe.persisting(self, rd)
            t0 = self.clock()
            self.storage.save(rd.hard_state, rd.entries, rd.snapshot, rd.must_sync)
            stats.fsync.observe(self.clock() - t0)
            if rd.entries:
                stats.batch.observe(len(rd.entries))
            if probe is not None:
                probe.persisted(self, rd)
        # 3. Send the rest (votes, answers to the leader: they promise what is now durable).
        for m in late:
            self._send(m)
        if rd.config is not None:
            log.info("node=%d event=config voters=%s learners=%s", self.id, list(rd.config.voters),
                     list(rd.config.learners))
            self.membership.config_changed(rd.config)
        if rd.soft_state is not None:
            log.info("node=%d term=%d role=%s leader=%d event=role_change", self.id, self.raft.term,
                     rd.soft_state.role.name.lower(), rd.soft_state.leader)
            role, leader = rd.soft_state.role, rd.soft_state.leader
            if role == Role.CANDIDATE or (role == Role.LEADER and self._last_role != Role.CANDIDATE):
                stats.elections_started += 1  # (a leader straight from follower: its candidacy fell between two)
            if role == Role.LEADER and self._last_role != Role.LEADER:
                stats.elections_won += 1
                elected = True
                self.lessor.elected(self.raft.last_index)
            if leader != NONE and leader != self._last_leader:
                stats.leader_changes += 1
                self._last_leader = leader
            self._last_role = role
            if rd.soft_state.role != Role.LEADER:
                self.sender.clear()
                self.lessor.stop()
                # Writes waiting here may still commit under the next leader: the client retries with the same
                # sequence number and the session answers it once.
                for waiting in self.pending_writes.values():
                    for w in waiting:
                        self._reply(w.identity, {"id": w.req_id, "ok": False, "error": Err.LEADER_CHANGED,
                                                 "message": "leadership changed; outcome unknown, retry",
                                                 **self._leader_info()}, w.batched)
                self.pending_writes.clear()
                self.membership.leadership_lost()
        # 4. Apply.
        if rd.snapshot is not None:
            self._install(rd.snapshot)
        store, pending = self.machine, self.pending_writes
        runs = Runs(stats, self.clock())
        for e in rd.committed_entries:
            if e.kind == EntryKind.NORMAL:
                client, seq, status = store.apply(e.index, e.data)
                answer = pending.pop((client, seq), None) if pending else None
                if answer:
                    for w in answer:
                        runs.add(w.op, w.arrived)
                        fields = store.answer(w.req, status)
                        self._reply(w.identity, {"id": w.req_id, "ok": True, "rev": store.rev} if fields is None
                                    else {"id": w.req_id, "rev": store.rev, **fields}, w.batched)
            else:
                store.apply_noop(e.index)
                if e.kind == EntryKind.CONFIG and self.membership.pending:
                    self.membership.applied(e.index)
            if probe is not None:
                probe.applied(self, e)
        if store.revision != self.watches.revision:
            self.watches.applied(store.revision)
        if store.watching and not self.watches.on:  # (a WATCHING entry was applied: the history begins)
            self.watches.on = True
            self.watches.compact = store.watch_start
        lessor = self.lessor
        if lessor.start and not lessor.ready and store.applied >= lessor.start and self.raft.role == Role.LEADER:
            lessor.promote(store.leases)
        # 5. Reads.
        for rs in rd.read_states:
            for pr in self.pending_reads.pop(rs.context, ()):
                if pr.backup:
                    self.backups.confirmed(pr.identity, pr.req_id, pr.batched, rs.index)
                    continue
                q = pr.query
                if q is not None:
                    if isinstance(q, Range):
                        self._reply(pr.identity, {"id": pr.req_id, **self.machine.query(q)}, pr.batched)
                        runs.add("range", pr.arrived)
                    elif self.raft.role != Role.LEADER:
                        self._not_leader(pr.identity, pr.req_id, pr.batched)
                    else:
                        leased = lessor.keepalive(q.lease) if isinstance(q, LeaseKeepAlive) else \
                            lessor.time_to_live(q.lease, q.key, q.key is not None and store.get(q.key) is not None)
                        self._reply(pr.identity, {"id": pr.req_id, **leased}, pr.batched)
                    continue
                self._answer_get(pr.identity, pr.req_id, pr.key, pr.batched)
                runs.add("get", pr.arrived)
        runs.flush()
        for ctx in rd.failed_reads:
            for pr in self.pending_reads.pop(ctx, ()):
                if pr.backup:
                    self.backups.failed(pr.identity, pr.req_id)
                self._reply(pr.identity, {"id": pr.req_id, "ok": False, "error": Err.NO_LEADER,
                                          "message": "no leader could confirm the read; retry",
                                          **self._leader_info()}, pr.batched)
        if self.membership.transfer is not None:
            self.membership.check_transfer()
        if self.backups.waiting:
            self._serve_backups()
        if elected and self.raft.role == Role.LEADER and self.raft.transferee == NONE:
            commands = self.machine.leader_commands()  # (the next ready batch carries them)
            if commands:
                self.raft.propose(commands)
        self._maybe_snapshot()

    def _wire_watches(self) -> None:
        """Give the store the watch history to append its changes to (once it is watching)."""
        m = self.machine
        m.event_sink = self.watches.events
        m.events = self.watches.events if m.watching else None
        self.watches.on = m.watching

    def start_watching(self) -> None:
        """A client wants to watch: if the store does not record its changes yet, the leader proposes that it start
        (once a term)."""
        raft = self.raft
        if (not self.machine.watching and raft.role == Role.LEADER and raft.transferee == NONE
                and self._watch_asked != raft.term):
            self._watch_asked = raft.term
            raft.propose([self.machine.watch_command()])

    def _send(self, m: Message) -> None:
        if m.type == MsgType.SNAPSHOT:
            assert m.snapshot is not None
            try:
                self.sender.start(m.dst, m.term, m.snapshot)
            except OSError as e:
                log.warning("node=%d event=snapshot_send_failed peer=%d error=%s", self.id, m.dst, e)
                self.raft.report_snapshot(m.dst, False)
            return
        stats = self.stats
        stats.sent[m.dst] = stats.sent.get(m.dst, 0) + 1
        if m.type == MsgType.APPEND:
            stats.append_sent[m.dst] = stats.append_sent.get(m.dst, 0) + 1
        self.transport.send(m)

    # ------------------------------------------------------------------ snapshots

    def _maybe_snapshot(self, now: bool = False) -> None:
        """Take a snapshot if enough was applied or logged since the last one (``now``: if anything was)."""
        applied, snap_index = self.machine.applied, self.raft.snapshot_index
        if self.snap_job is not None or applied <= snap_index:
            return
        st = self.settings
        due = self._snap_due
        if (now or applied - snap_index >= st.snapshot_every * due
                or self.storage.bytes_since_snapshot >= st.snapshot_bytes * due):
            self._snap_due = 1.0 - SNAPSHOT_JITTER * self._snap_rng.random()
            self._job_max_pass = self._job_max_late = 0.0
            self.snap_job = SnapshotJob(self.storage, self.machine, self.raft.make_snapshot(applied, None),
                                        threads=st.threads, max_pieces=st.snapshot_pieces,
                                        budget_s=STEP_BUDGET_S if st.threads else None, clock=self.clock)
            log.info("node=%d event=snapshot_begin index=%d keys=%d loop_pause_ms=%.1f", self.id, applied,
                     self.snap_job.image.key_count, self.snap_job.begin_s * 1000)

    def _finish_snapshot(self) -> None:
        job = self.snap_job
        assert job is not None
        self.snap_job = None
        t0 = time.perf_counter()
        try:
            snap = job.finish()
        except OSError as e:
            raise StorageError(f"writing a snapshot failed: {e}") from e
        if snap.index <= self.raft.snapshot_index:  # a snapshot from the leader was installed meanwhile
            log.info("node=%d event=snapshot_obsolete index=%d", self.id, snap.index)
            return
        self.storage.save_snapshot(snap)
        self.raft.compact(snap)
        self.snapshots_taken += 1
        self.stats.snapshot_seconds.observe(self.clock() - job.started)
        keys = job.image.key_count
        # The old values kept for the image (up to one per key written meanwhile): a shard's freed per pass.
        self._garbage.extend(job.image.leftovers(RELEASE_PER_PASS))
        finish_s = time.perf_counter() - t0
        assert isinstance(snap.data, SnapshotFile)
        self.snap_stats = {"index": snap.index, "keys": keys, "bytes": snap.data.size,
                           "seconds": round(self.clock() - job.started, 3),
                           "begin_ms": round(job.begin_s * 1000, 2), "finish_ms": round(finish_s * 1000, 2),
                           "max_loop_pass_ms": round(max(self._job_max_pass, finish_s) * 1000, 2),
                           "max_tick_late_ms": round(self._job_max_late * 1000, 2)}
        log.info("node=%d event=snapshot %s", self.id, " ".join(f"{k}={v}" for k, v in self.snap_stats.items()))

    def _serve_backups(self) -> None:
        """Answer the backups the newest snapshot is new enough for; take a snapshot for the others."""
        if self.backups.serve(self.raft.snapshot):
            self._maybe_snapshot(now=True)

    def _install(self, snap: Snapshot) -> None:
        if self.snap_job is not None:
            self.snap_job.wait()  # its image is of the store being replaced; its result will be ignored
            self.installs_during_snapshot += 1
        t0 = time.perf_counter()
        prepared, self._prepared = self._prepared, None
        self.machine = prepared[2] if prepared is not None and prepared[:2] == (snap.index, snap.term) \
            else self._restore(snap)
        self.watches.reset(self.machine.revision)
        self._wire_watches()
        self.snapshots_installed += 1
        log.info("node=%d event=snapshot_installed index=%d keys=%d seconds=%.2f", self.id, snap.index,
                 self.machine.counts()[0], time.perf_counter() - t0)

    def _validate_snapshot(self, snap: Snapshot) -> None:
        """A received snapshot must decode into a store at its own index, before anything names it. (Its
        configuration is the leader's at that index, which may differ from ours: the core takes it.)"""
        store = self._restore(snap)
        if store.applied != snap.index:
            raise ValueError(f"its store is at index {store.applied}, the snapshot says {snap.index}")
        self._prepared = (snap.index, snap.term, store)

    def _restore(self, snap: Snapshot) -> M:
        """The state machine a snapshot holds."""
        if isinstance(snap.data, SnapshotFile):
            return self.machine_type.restore_chunks(snap.data.data_chunks())
        return self.machine_type.restore_chunks([snap.data])

    def _on_chunk(self, c: codec.SnapChunk) -> None:
        try:
            snap = self.receiver.on_chunk(c)
        except OSError as e:
            raise StorageError(f"receiving a snapshot failed: {e}") from e
        if snap is not None:
            self.raft.step(Message(MsgType.SNAPSHOT, c.src, self.id, c.term, snapshot=snap))
