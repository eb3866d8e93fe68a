"""A zraft node: one process, one event loop, wiring the Raft core to storage, ZeroMQ and the KV store.

    python -m zraft.node --id 1 --peers 1=127.0.0.1:5551,2=127.0.0.1:5552,3=127.0.0.1:5553 --data-dir DIR

Sockets: one ROUTER bound at this node's address receives everything (peers' Raft messages and client
requests); one DEALER per peer, with routing id ``node-<id>``, sends our Raft messages to that peer's ROUTER.
Sends never block: when a peer's queue is full the message is dropped and Raft's retries cover it.

Each pass of the loop: wait for input until the next tick is due; take every message that has arrived (up to a
bound), stepping Raft messages into the core and collecting client writes into one batch (one proposal, so
one log append, one fsync and one AppendEntries per follower); tick if due; then carry out the ready batch:
persist (fsync) before sending, send, apply, answer clients.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import heapq
import logging
import os
import random
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

import msgpack
import zmq

from zraft import kv, security
from zraft.core import NONE, ClusterConfig, EntryKind, Message, MsgType, Options, Raft, Ready, Role, Snapshot
from zraft.snapshotting import MAX_SNAPSHOT_BYTES, Receiver, Sender, SnapshotJob
from zraft.storage import SEGMENT_BYTES, CorruptionError, Storage, StorageError, datadir
from zraft.storage.snapshots import SnapshotFile
from zraft.transport import codec

log = logging.getLogger("zraft.node")

TICK_MS = 50
"""Milliseconds per Raft tick."""
ELECTION_TICKS = 10
"""Election timeout: 10-20 ticks (0.5-1 s). A new leader is usually elected within a second of a leader's death."""
HEARTBEAT_TICKS = 2
"""The leader sends heartbeats every 2 ticks (100 ms)."""
MAX_BATCH = 4096
"""Most messages taken from the socket in one loop pass."""
SNAPSHOT_EVERY = 100_000
"""Take a snapshot and compact the log after this many applied entries..."""
SNAPSHOT_BYTES = 256 << 20
"""... or once this many bytes have been written to the log since the last snapshot."""
PEER_HWM = 10_000
GC_FREEZE_EVERY_S = 1.0
GC_THRESHOLDS = (20_000, 20, 100)
"""Young collections every 20,000 net allocations rather than 700: a busy loop allocates that many in a pass."""


@dataclass(slots=True)
class PendingWrite:
    identity: bytes
    req_id: int
    batched: bool = False


@dataclass(slots=True)
class PendingRead:
    identity: bytes
    req_id: int
    key: bytes
    batched: bool = False


class Node:
    def __init__(self, node_id: int, peers: dict[int, str], data_dir: str, bind: str | None = None,
                 tick_ms: int = TICK_MS, election_ticks: int = ELECTION_TICKS,
                 heartbeat_ticks: int = HEARTBEAT_TICKS, unsafe_no_fsync: bool = False,
                 snapshot_every: int = SNAPSHOT_EVERY, chaos: bool = False,
                 snapshot_bytes: int = SNAPSHOT_BYTES, segment_bytes: int = SEGMENT_BYTES,
                 force_peers: bool = False, max_snapshot_bytes: int = MAX_SNAPSHOT_BYTES,
                 keys: security.NodeKeys | None = None) -> None:
        if node_id not in peers:
            raise ValueError(f"node {node_id} is not in the peer list {sorted(peers)}")
        # One process per data directory: the lock comes before reading anything in it, and is held until exit.
        self._dir_lock = datadir.lock(data_dir)
        try:
            self._open(node_id, peers, data_dir, bind, tick_ms, election_ticks, heartbeat_ticks, unsafe_no_fsync,
                       snapshot_every, chaos, snapshot_bytes, segment_bytes, force_peers, max_snapshot_bytes, keys)
        except BaseException:
            os.close(self._dir_lock)
            raise

    def _open(self, node_id: int, peers: dict[int, str], data_dir: str, bind: str | None, tick_ms: int,
              election_ticks: int, heartbeat_ticks: int, unsafe_no_fsync: bool, snapshot_every: int, chaos: bool,
              snapshot_bytes: int, segment_bytes: int, force_peers: bool, max_snapshot_bytes: int,
              keys: security.NodeKeys | None) -> None:
        has_state = any(os.listdir(d) for d in (os.path.join(data_dir, "log"), os.path.join(data_dir, "snap"))
                        if os.path.isdir(d))
        meta, warning = datadir.check_config(data_dir, node_id, tuple(peers), has_state, force_peers)
        if warning:
            log.warning("node=%d event=config %s", node_id, warning)
        config = ClusterConfig(meta.voters)
        self.id = node_id
        self.peers = peers
        self.addr = peers[node_id]
        self.bind = bind or f"tcp://{self.addr}"
        self.tick_s = tick_ms / 1000.0
        self.snapshot_every = snapshot_every
        self.snapshot_bytes = snapshot_bytes
        self.storage = Storage(data_dir, unsafe_no_fsync=unsafe_no_fsync, segment_bytes=segment_bytes)
        rec = self.storage.recovered
        for w in rec.warnings:
            log.warning("node=%d event=recovery %s", node_id, w)
        if rec.snapshot is not None and rec.snapshot.config != config:
            if not force_peers:
                raise datadir.ConfigMismatch(
                    f"data directory {os.path.abspath(data_dir)}: its snapshot names voters "
                    f"{list(rec.snapshot.config.voters)} but {datadir.META_NAME} names {list(config.voters)}; "
                    "--force-peers makes the stored configuration win")
            rec.snapshot = dataclasses.replace(rec.snapshot, config=config)
        self.kv = kv.KVStore()
        applied = 0
        if rec.snapshot is not None:
            self.kv = _restore(rec.snapshot)
            applied = rec.snapshot.index
        self.snap_job: SnapshotJob | None = None
        self.snap_stats: dict[str, Any] = {}
        self._job_max_pass = 0.0
        self._job_max_late = 0.0
        self.raft = Raft(node_id, config, random.Random(), Options(
            election_ticks=election_ticks, heartbeat_ticks=heartbeat_ticks, max_inflight=64,
            snapshot_timeout_ticks=max(200, 4 * election_ticks)), rec.hard_state, rec.snapshot, rec.entries, applied)
        self.pending_writes: dict[tuple[int, int], list[PendingWrite]] = {}
        self.pending_reads: dict[int, PendingRead] = {}
        self._outbox: dict[bytes, list[dict[str, Any]]] = {}
        self._next_read = 0
        self._stop = False
        self.ctx = zmq.Context()
        self.keys = keys
        self.zap: security.ZapHandler | None = None
        self.router = self.ctx.socket(zmq.ROUTER)
        if keys is not None:
            self.zap = security.ZapHandler(self.ctx, keys)  # bound before any CURVE socket needs it
            security.server_socket(self.router, keys.own)
        self.router.setsockopt(zmq.MAXMSGSIZE, codec.MAX_PEER_MESSAGE)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.router.setsockopt(zmq.RCVHWM, 100_000)
        self.router.setsockopt(zmq.SNDHWM, 100_000)
        self.router.bind(self.bind)
        self.dealers: dict[int, zmq.Socket[bytes]] = {}
        for pid, addr in peers.items():
            if pid == node_id:
                continue
            d = self.ctx.socket(zmq.DEALER)
            d.setsockopt(zmq.LINGER, 0)
            d.setsockopt(zmq.IDENTITY, f"node-{node_id}".encode())
            d.setsockopt(zmq.SNDHWM, PEER_HWM)
            d.setsockopt(zmq.IMMEDIATE, 1)
            if keys is not None:
                security.client_socket(d, keys.own, keys.nodes[pid])
            d.connect(f"tcp://{addr}")
            self.dealers[pid] = d
        # Network faults for chaos runs: a control socket on the local machine only (ipc), off by default.
        self.faults = NetFaults()
        self.chaos_sock: zmq.Socket[bytes] | None = None
        if chaos:
            self.chaos_sock = self.ctx.socket(zmq.ROUTER)
            self.chaos_sock.setsockopt(zmq.LINGER, 0)
            self.chaos_sock.bind(chaos_endpoint(data_dir))
            os.chmod(chaos_endpoint(data_dir).removeprefix("ipc://"), 0o600)
        self._delayed: list[tuple[float, int, Message]] = []
        self._delay_seq = 0
        self.sender = Sender(node_id, self._send_chunk)
        self.receiver = Receiver(node_id, self.storage, self._send_ack, max_snapshot_bytes, self._validate_snapshot)
        self._prepared: tuple[int, int, kv.KVStore] | None = None
        """The store restored from a received snapshot while validating it, kept for its installation."""
        self.limiter = LogLimiter()
        self.bad_frames = 0
        """Frames dropped or refused because they break the protocol or could not be handled."""
        self._dropped_seen = 0

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        log.info("node=%d event=start addr=%s term=%d commit=%d last_index=%d", self.id, self.addr, self.raft.term,
                 self.raft.log.commit, self.raft.log.last_index)
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        if self.chaos_sock is not None:
            poller.register(self.chaos_sock, zmq.POLLIN)
        if self.zap is not None:
            poller.register(self.zap.sock, zmq.POLLIN)
        next_tick = time.monotonic() + self.tick_s
        self._process_ready()  # replay the committed log before serving anything
        self._outbox.clear()
        # The cyclic GC: a full collection walks every live object (every log entry, every key), about 170 ms per
        # million, which would stall the loop. Objects that survive a young collection are frozen (excluded from
        # later collections; they are still freed by reference counting when dropped), once a second.
        gc.collect(1)
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        next_freeze = time.monotonic() + GC_FREEZE_EVERY_S
        try:
            while not self._stop:
                wake = min(next_tick, self._delayed[0][0]) if self._delayed else next_tick
                job = self.snap_job
                timeout = 0.0 if job is not None and job.busy() else max(0.0, wake - time.monotonic())
                ready = dict(poller.poll(int(timeout * 1000)))
                t_pass = time.perf_counter()
                if self.router in ready:
                    self._drain()
                if self.chaos_sock is not None and self.chaos_sock in ready:
                    self._chaos_control()
                if self.zap is not None and self.zap.sock in ready:
                    self.zap.handle()
                if self._delayed:
                    self._release_delayed()
                now = time.monotonic()
                if now >= next_tick:
                    if self.snap_job is not None:
                        self._job_max_late = max(self._job_max_late, now - next_tick)
                    self.raft.tick()
                    self._tick_transfers()
                    next_tick += self.tick_s
                    if next_tick < now:  # we were paused (SIGSTOP) or starved: do not tick in a burst
                        next_tick = now + self.tick_s
                if job is not None:
                    job.step()
                    if job.done():
                        self._finish_snapshot()
                if self.raft.has_ready():
                    self._process_ready()
                if self._outbox:
                    self._flush_outbox()
                if self.snap_job is not None:
                    self._job_max_pass = max(self._job_max_pass, time.perf_counter() - t_pass)
                if now >= next_freeze:
                    gc.collect(1)
                    gc.freeze()
                    next_freeze = now + GC_FREEZE_EVERY_S
        finally:
            self.close()

    def stop(self) -> None:
        self._stop = True

    def close(self) -> None:
        if self.snap_job is not None:
            self.snap_job.wait()
        self.receiver.abort()
        self.storage.close()
        if self.zap is not None:
            self.zap.close()
        self.ctx.destroy(linger=0)
        os.close(self._dir_lock)

    def _drain(self) -> None:
        writes: list[tuple[bytes, dict[str, Any], bool]] = []
        secure = self.keys is not None
        router = self.router
        for _ in range(MAX_BATCH):
            user: str | None = None
            try:
                if secure:  # who sent it: the user id our ZAP handler gave the connection's key
                    parts = router.recv_multipart(_NOBLOCK, copy=False)
                    user = str(parts[-1].get("User-Id"))
                    frames = [f.bytes for f in parts]
                else:
                    frames = router.recv_multipart(_NOBLOCK)
            except zmq.Again:
                break
            if len(frames) != 2:
                self.bad_frames += 1
                self.limiter.warn("bad_frames", "node=%d event=bad_message error=expected 2 frames, got %d",
                                  self.id, len(frames))
                continue
            identity, payload = frames
            try:
                self._dispatch(identity, payload, writes, user)
            except (AssertionError, StorageError, CorruptionError):
                raise  # a broken invariant of our own, or our disk: stop rather than go on wrong
            except Exception as e:  # whatever a frame says, it must not kill the node
                self.bad_frames += 1
                self.limiter.warn("unhandled", "node=%d event=message_failed from=%r error=%r", self.id,
                                  identity[:32], e)
        if writes:
            self._propose(writes)
        dropped = sum(self.raft.dropped.values())
        if dropped != self._dropped_seen:
            self._dropped_seen = dropped
            self.limiter.warn("impossible", "node=%d event=impossible_message count=%d last=%s", self.id, dropped,
                              self.raft.last_dropped)

    def _dispatch(self, identity: bytes, payload: bytes, writes: list[tuple[bytes, dict[str, Any], bool]],
                  user: str | None) -> None:
        """Handle one frame. ``user``: who the connection authenticated as (``node-<id>`` or ``client``), or None
        in an insecure cluster, where anyone may send anything."""
        try:
            kind, msg = codec.decode(payload, peer=user is None or user.startswith("node-"))
        except codec.ProtocolError as e:
            self.bad_frames += 1
            self.limiter.warn("bad_message", "node=%d event=bad_message from=%r error=%s", self.id, identity[:32], e)
            self._reply(identity, {"id": 0, "ok": False, "error": "bad_request", "message": str(e)})
            return
        if user is not None and kind in _PEER_KINDS and user != f"node-{msg.src}":
            self.bad_frames += 1
            self.limiter.warn("impersonation", "node=%d event=bad_message error=%s sent a message as node %d",
                              self.id, user, msg.src)
            return
        if kind == "snap_chunk" or kind == "snap_ack":
            if msg.dst != self.id or msg.src in self.faults.drop_from:
                return
            if kind == "snap_chunk":
                # Only from the leader we follow, in its term: a stranger's file never replaces our state.
                if msg.term != self.raft.term or msg.src != self.raft.lead or self.raft.role != Role.FOLLOWER:
                    self.limiter.warn("snap_not_leader", "node=%d event=snapshot_chunk_dropped from=%d term=%d "
                                      "(our term %d, leader %d)", self.id, msg.src, msg.term, self.raft.term,
                                      self.raft.lead)
                    return
                self._on_chunk(msg)
            elif msg.term == self.raft.term and self.raft.role == Role.LEADER:
                if self.sender.on_ack(msg) == "failed":
                    self.raft.report_snapshot(msg.src, False)
        elif kind == "raft":
            if msg.type == MsgType.SNAPSHOT:
                self.limiter.warn("raft_snapshot", "node=%d event=bad_raft_message error=snapshots travel in chunks",
                                  self.id)
                return
            if msg.src in self.faults.drop_from:
                return
            self.raft.step(msg)
        elif kind == "client_batch":
            for req in msg:
                if isinstance(req, codec.ProtocolError):
                    self._reply(identity, {"id": req.req_id, "ok": False, "error": "bad_request",
                                           "message": str(req)}, True)
                elif req["op"] in WRITE_OPS:
                    writes.append((identity, req, True))
                else:
                    self._client_other(identity, req, True)
        elif msg["op"] in WRITE_OPS:
            writes.append((identity, msg, False))
        else:
            self._client_other(identity, msg)

    # ------------------------------------------------------------------ clients

    def _leader_info(self) -> dict[str, Any]:
        ld = self.raft.lead
        return {"leader": ld, "leader_addr": self.peers.get(ld, "") if ld != NONE else ""}

    def _reply(self, identity: bytes, msg: dict[str, Any], batched: bool = False) -> None:
        if batched:  # answered together with the identity's other answers at the end of the loop pass
            box = self._outbox.get(identity)
            if box is None:
                self._outbox[identity] = [msg]
            else:
                box.append(msg)
            return
        self._send_client(identity, codec.encode_client(msg))

    def _send_client(self, identity: bytes, payload: bytes) -> None:
        try:
            self.router.send(identity, _NOBLOCK_MORE)
            self.router.send(payload, _NOBLOCK)
        except zmq.ZMQError:
            pass  # the client is gone or slow; it will retry

    def _flush_outbox(self) -> None:
        for identity, msgs in self._outbox.items():
            for lo in range(0, len(msgs), codec.MAX_BATCH):
                self._send_client(identity, codec.encode_client_batch(msgs[lo:lo + codec.MAX_BATCH]))
        self._outbox.clear()

    def _not_leader(self, identity: bytes, req_id: int, batched: bool = False) -> None:
        self._reply(identity, {"id": req_id, "ok": False, "error": "not_leader",
                               "message": "this node is not the leader", **self._leader_info()}, batched)

    def _propose(self, writes: list[tuple[bytes, dict[str, Any], bool]]) -> None:
        if self.raft.role != Role.LEADER:
            for identity, req, batched in writes:
                self._not_leader(identity, req["id"], batched)
            return
        datas = []
        pending = self.pending_writes
        for identity, req, batched in writes:
            key, value = req["key"], req.get("value", b"")
            if len(key) > kv.MAX_KEY_BYTES or len(value) > kv.MAX_VALUE_BYTES:
                self._reply(identity, {"id": req["id"], "ok": False, "error": "too_large",
                                       "message": kv.check_limits(key, value)}, batched)
                continue
            client, seq = req["client"], req["seq"]
            w = PendingWrite(identity, req["id"], batched)
            waiting = pending.get((client, seq))
            if waiting is None:
                pending[(client, seq)] = [w]
            else:
                waiting.append(w)
            datas.append(kv.encode_command(_OPS[req["op"]], client, seq, req["ack"], key, value))
        if datas:
            self.raft.propose(datas)  # we are leader: checked above, and nothing in between changes the role

    def _client_other(self, identity: bytes, req: dict[str, Any], batched: bool = False) -> None:
        op, rid = req["op"], req["id"]
        if op == "probe":
            self._reply(identity, {"id": rid, "ok": True, "node": self.id, "role": self.raft.role.name.lower(),
                                   "term": self.raft.term, **self._leader_info()}, batched)
        elif op == "status":
            st = self.raft.status()
            del st["id"]  # "id" is the request id in replies; the node's id goes in "node"
            st.update(self._leader_info())
            st.update({"node": self.id, "address": self.addr, "kv_applied": self.kv.applied,
                       "keys": len(self.kv.data), "sessions": len(self.kv.sessions),
                       "pending_reads": len(self.pending_reads), "pending_writes": len(self.pending_writes),
                       "log_entries": self.raft.log.last_index - self.raft.log.snap_index,
                       "last_snapshot": self.snap_stats,
                       "snapshot_in_progress": self.snap_job is not None, "bad_frames": self.bad_frames,
                       "secure": self.keys is not None,
                       "refused_connections": self.zap.refused if self.zap is not None else 0,
                       "snapshot_sending": {str(p): [t.acked, t.file.size] for p, t in
                                            self.sender.transfers.items()}})
            rc = self.receiver.current
            if rc is not None:
                st["snapshot_receiving"] = [rc.received, rc.size]
            st.update(self.storage.disk_usage())
            if "match" in st:
                st["match"] = {str(k): v for k, v in st["match"].items()}
            self._reply(identity, {"id": rid, "ok": True, **st}, batched)
        elif op == "get":
            if req.get("stale"):
                self._answer_get(identity, rid, req["key"], batched)
                return
            self._next_read += 1
            ctx = self._next_read
            self.pending_reads[ctx] = PendingRead(identity, rid, req["key"], batched)
            self.raft.read_index(ctx)

    def _answer_get(self, identity: bytes, rid: int, key: bytes, batched: bool = False) -> None:
        v = self.kv.data.get(key)
        self._reply(identity, {"id": rid, "ok": True, "value": v, "found": v is not None}, batched)

    # ------------------------------------------------------------------ carrying out a ready batch

    def _process_ready(self) -> None:
        rd: Ready = self.raft.ready()
        # 1. A leader's AppendEntries, heartbeats and snapshots go out first: it writes its log in parallel with
        # replicating it (diss. §10.2.1; it counts itself only once this batch is durable, see the core).
        late = []
        for m in rd.messages:
            if m.type in _EARLY_TYPES:
                self._send(m)
            else:
                late.append(m)
        # 2. Persist before anything else that depends on it is sent (the core's contract).
        if rd.hard_state is not None or rd.entries or rd.snapshot is not None:
            self.storage.save(rd.hard_state, rd.entries, rd.snapshot)
        # 3. Send the rest (votes, answers to the leader: they promise what is now durable).
        for m in late:
            self._send(m)
        if rd.soft_state is not None:
            log.info("node=%d term=%d role=%s leader=%d event=role_change", self.id, self.raft.term,
                     rd.soft_state.role.name.lower(), rd.soft_state.leader)
            if rd.soft_state.role != Role.LEADER:
                self.sender.clear()
                # Writes waiting here may still commit under the next leader: the client retries with the same
                # sequence number and the session answers it once.
                for waiting in self.pending_writes.values():
                    for w in waiting:
                        self._reply(w.identity, {"id": w.req_id, "ok": False, "error": "leader_changed",
                                                 "message": "leadership changed; outcome unknown, retry",
                                                 **self._leader_info()}, w.batched)
                self.pending_writes.clear()
        # 4. Apply.
        if rd.snapshot is not None:
            self._install(rd.snapshot)
        store, pending = self.kv, self.pending_writes
        for e in rd.committed_entries:
            if e.kind == EntryKind.NORMAL:
                client, seq, status = store.apply(e.index, e.data)
                answer = pending.pop((client, seq), None) if pending else None
                if answer:
                    for w in answer:
                        if status == kv.OK:
                            self._reply(w.identity, {"id": w.req_id, "ok": True}, w.batched)
                        else:
                            self._reply(w.identity, {"id": w.req_id, "ok": False,
                                                     "error": kv.Status(status).name.lower(),
                                                     "message": _STATUS_TEXT[status]}, w.batched)
            else:
                store.apply_noop(e.index)
        # 5. Reads.
        for rs in rd.read_states:
            pr = self.pending_reads.pop(rs.context, None)
            if pr is not None:
                self._answer_get(pr.identity, pr.req_id, pr.key, pr.batched)
        for ctx in rd.failed_reads:
            pr = self.pending_reads.pop(ctx, None)
            if pr is not None:
                self._reply(pr.identity, {"id": pr.req_id, "ok": False, "error": "no_leader",
                                          "message": "no leader could confirm the read; retry",
                                          **self._leader_info()}, pr.batched)
        self._maybe_snapshot()

    # ------------------------------------------------------------------ snapshots

    def _maybe_snapshot(self) -> None:
        if self.snap_job is not None or self.kv.applied <= self.raft.log.snap_index:
            return
        if (self.kv.applied - self.raft.log.snap_index >= self.snapshot_every
                or self.storage.bytes_since_snapshot >= self.snapshot_bytes):
            self._job_max_pass = self._job_max_late = 0.0
            self.snap_job = SnapshotJob(self.storage, self.kv, self.raft.make_snapshot(self.kv.applied, None))
            log.info("node=%d event=snapshot_begin index=%d keys=%d loop_pause_ms=%.1f", self.id,
                     self.kv.applied, len(self.snap_job.image.keys), self.snap_job.begin_s * 1000)

    def _finish_snapshot(self) -> None:
        job = self.snap_job
        assert job is not None
        self.snap_job = None
        t0 = time.perf_counter()
        try:
            snap = job.finish()
        except OSError as e:
            raise StorageError(f"writing a snapshot failed: {e}") from e
        if snap.index <= self.raft.log.snap_index:  # a snapshot from the leader was installed meanwhile
            log.info("node=%d event=snapshot_obsolete index=%d", self.id, snap.index)
            return
        self.storage.save_snapshot(snap)
        self.raft.compact(snap)
        finish_s = time.perf_counter() - t0
        assert isinstance(snap.data, SnapshotFile)
        self.snap_stats = {"index": snap.index, "keys": len(job.image.keys), "bytes": snap.data.size,
                           "seconds": round(time.monotonic() - job.started, 3),
                           "begin_ms": round(job.begin_s * 1000, 2), "finish_ms": round(finish_s * 1000, 2),
                           "max_loop_pass_ms": round(max(self._job_max_pass, finish_s) * 1000, 2),
                           "max_tick_late_ms": round(self._job_max_late * 1000, 2)}
        log.info("node=%d event=snapshot %s", self.id, " ".join(f"{k}={v}" for k, v in self.snap_stats.items()))

    def _install(self, snap: Snapshot) -> None:
        if self.snap_job is not None:
            self.snap_job.wait()  # its image is of the store being replaced; its result will be ignored
        t0 = time.perf_counter()
        prepared, self._prepared = self._prepared, None
        self.kv = prepared[2] if prepared is not None and prepared[:2] == (snap.index, snap.term) else _restore(snap)
        log.info("node=%d event=snapshot_installed index=%d keys=%d seconds=%.2f", self.id, snap.index,
                 len(self.kv.data), time.perf_counter() - t0)

    def _validate_snapshot(self, snap: Snapshot) -> None:
        """A received snapshot must decode into a store at its own index, before anything names it."""
        if snap.config != self.raft.config:
            raise ValueError(f"its configuration {list(snap.config.voters)} is not ours "
                             f"{list(self.raft.config.voters)}")
        store = _restore(snap)
        if store.applied != snap.index:
            raise ValueError(f"its store is at index {store.applied}, the snapshot says {snap.index}")
        self._prepared = (snap.index, snap.term, store)

    def _on_chunk(self, c: codec.SnapChunk) -> None:
        try:
            snap = self.receiver.on_chunk(c)
        except OSError as e:
            raise StorageError(f"receiving a snapshot failed: {e}") from e
        if snap is not None:
            self.raft.step(Message(MsgType.SNAPSHOT, c.src, self.id, c.term, snapshot=snap))

    def _tick_transfers(self) -> None:
        for peer in self.sender.tick():
            self.raft.report_snapshot(peer, False)

    def _send_chunk(self, peer: int, c: codec.SnapChunk) -> bool:
        return self._send_raw(peer, codec.encode_chunk(c))

    def _send_ack(self, peer: int, a: codec.SnapAck) -> None:
        self._send_raw(peer, codec.encode_ack(a))

    def _send_raw(self, peer: int, payload: bytes) -> bool:
        """Send a snapshot transfer message; False if the peer's queue is full (try again later)."""
        f = self.faults
        if f.active and (peer in f.drop_to or (f.loss and f.rng.random() < f.loss)):
            return True  # lost on the way
        d = self.dealers.get(peer)
        if d is None:
            return True
        try:
            d.send(payload, _NOBLOCK)
        except zmq.Again:
            return False
        return True

    def _send(self, m: Message) -> None:
        f = self.faults
        if f.active:
            if m.dst in f.drop_to or (f.loss and f.rng.random() < f.loss):
                return
            copies = 2 if f.duplicate and f.rng.random() < f.duplicate else 1
            for _ in range(copies):
                if f.delay_ms[1] > 0:
                    self._delay_seq += 1
                    at = time.monotonic() + f.rng.uniform(*f.delay_ms) / 1000
                    heapq.heappush(self._delayed, (at, self._delay_seq, m))
                else:
                    self._send_now(m)
            return
        self._send_now(m)

    def _send_now(self, m: Message) -> None:
        if m.type == MsgType.SNAPSHOT:
            assert m.snapshot is not None
            try:
                self.sender.start(m.dst, m.term, m.snapshot)
            except OSError as e:
                log.warning("node=%d event=snapshot_send_failed peer=%d error=%s", self.id, m.dst, e)
                self.raft.report_snapshot(m.dst, False)
            return
        d = self.dealers.get(m.dst)
        if d is None:
            return
        try:
            d.send(codec.encode_raft(m), _NOBLOCK)
        except zmq.Again:
            pass  # queue full or peer not connected: dropped, Raft retries

    def _release_delayed(self) -> None:
        now = time.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            self._send_now(heapq.heappop(self._delayed)[2])

    def _chaos_control(self) -> None:
        assert self.chaos_sock is not None
        while True:
            try:
                ident, payload = self.chaos_sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except ValueError:
                continue
            try:
                self.faults.configure(msgpack.unpackb(payload))
                reply: dict[str, Any] = {"ok": True}
                log.info("node=%d event=net_faults %s", self.id, self.faults.describe())
            except Exception as e:
                reply = {"ok": False, "message": str(e)}
            self.chaos_sock.send_multipart([ident, msgpack.packb(reply)])


class LogLimiter:
    """Log lines about bad input, at most one per event kind per ``every`` seconds, saying how many were held back:
    a flood of bad frames must not become a flood of log lines."""

    def __init__(self, every: float = 1.0) -> None:
        self.every = every
        self._next: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warn(self, event: str, fmt: str, *args: Any) -> None:
        now = time.monotonic()
        if now < self._next.get(event, 0.0):
            self._held[event] = self._held.get(event, 0) + 1
            return
        self._next[event] = now + self.every
        held = self._held.pop(event, 0)
        if held:
            fmt += " (and %d more like it in the last second)"
            args = (*args, held)
        log.warning(fmt, *args)


class NetFaults:
    """What this node's transport does to its Raft traffic in a chaos run (nothing, normally)."""

    def __init__(self) -> None:
        self.rng = random.Random()
        self.configure({})

    def configure(self, spec: dict[str, Any]) -> None:
        drop_to = {int(x) for x in spec.get("drop_to", ())}
        drop_from = {int(x) for x in spec.get("drop_from", ())}
        loss = float(spec.get("loss", 0.0))
        duplicate = float(spec.get("duplicate", 0.0))
        lo, hi = (float(x) for x in spec.get("delay_ms", (0.0, 0.0)))
        if not (0 <= loss <= 1 and 0 <= duplicate <= 1 and 0 <= lo <= hi):
            raise ValueError(f"bad fault spec {spec}")
        self.drop_to, self.drop_from, self.loss, self.duplicate = drop_to, drop_from, loss, duplicate
        self.delay_ms = (lo, hi)
        self.active = bool(drop_to or loss or duplicate or hi > 0)

    def describe(self) -> str:
        return (f"drop_to={sorted(self.drop_to)} drop_from={sorted(self.drop_from)} loss={self.loss} "
                f"duplicate={self.duplicate} delay_ms={self.delay_ms}")


def chaos_endpoint(data_dir: str) -> str:
    """The node-local control socket of a node started with --chaos."""
    return f"ipc://{os.path.abspath(data_dir)}/chaos.ipc"


def _restore(snap: Snapshot) -> kv.KVStore:
    if isinstance(snap.data, SnapshotFile):
        return kv.KVStore.restore_chunks(snap.data.data_chunks())
    return kv.KVStore.restore(snap.data)


WRITE_OPS = frozenset(("put", "append", "delete"))
_PEER_KINDS = frozenset(("raft", "snap_chunk", "snap_ack"))
_EARLY_TYPES = frozenset((MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT))
_OPS = {"put": int(kv.Op.PUT), "append": int(kv.Op.APPEND), "delete": int(kv.Op.DELETE)}
_NOBLOCK = int(zmq.NOBLOCK)
_NOBLOCK_MORE = int(zmq.NOBLOCK) | int(zmq.SNDMORE)

_STATUS_TEXT: dict[int, str] = {
    kv.Status.TOO_LARGE: "key or value over the size limit",
    kv.Status.SESSION_EXPIRED: "client session expired; the outcome of this request is unknown",
    kv.Status.BAD_COMMAND: "malformed command",
}


def parse_peers(text: str) -> dict[int, str]:
    """``1=host:port,2=host:port`` -> {1: "host:port", ...}"""
    peers = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            i, addr = part.split("=", 1)
            host, port = addr.rsplit(":", 1)
            peers[int(i)] = f"{host}:{int(port)}"
        except ValueError:
            raise ValueError(f"bad peer {part!r}: expected ID=HOST:PORT") from None
    if not peers:
        raise ValueError("no peers given")
    return peers


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m zraft.node", description="Run one zraft node.")
    p.add_argument("--id", type=int, required=True, help="this node's id (a positive integer in the peer list)")
    p.add_argument("--peers", help="every node of the cluster, this one included: 1=HOST:PORT,2=HOST:PORT,...")
    p.add_argument("--cluster", help="a cluster.json written by launcher.py (instead of --peers)")
    p.add_argument("--data-dir", required=True, help="where this node keeps its log and snapshots")
    p.add_argument("--bind", help="ZeroMQ endpoint to bind (default: tcp://<this node's address>)")
    p.add_argument("--tick-ms", type=int, default=TICK_MS, help=f"milliseconds per tick (default {TICK_MS})")
    p.add_argument("--election-ticks", type=int, default=ELECTION_TICKS,
                   help=f"election timeout in ticks, randomized up to twice this (default {ELECTION_TICKS})")
    p.add_argument("--heartbeat-ticks", type=int, default=HEARTBEAT_TICKS,
                   help=f"heartbeat interval in ticks (default {HEARTBEAT_TICKS})")
    p.add_argument("--snapshot-every", type=int, default=SNAPSHOT_EVERY,
                   help=f"snapshot after this many applied entries (default {SNAPSHOT_EVERY})")
    p.add_argument("--snapshot-bytes", type=int, default=SNAPSHOT_BYTES,
                   help="... or after this many bytes written to the log since the last one "
                        f"(default {SNAPSHOT_BYTES})")
    p.add_argument("--segment-bytes", type=int, default=SEGMENT_BYTES,
                   help="size of a log segment file; whole segments are deleted after a snapshot "
                        f"(default {SEGMENT_BYTES})")
    p.add_argument("--unsafe-no-fsync", action="store_true",
                   help="UNSAFE: do not fsync; a machine crash can lose acknowledged writes (benchmarks only)")
    p.add_argument("--chaos", action="store_true",
                   help="accept network-fault instructions (drop, delay, duplicate) on a local ipc socket in the "
                        "data directory, for chaos runs")
    p.add_argument("--max-snapshot-bytes", type=int, default=MAX_SNAPSHOT_BYTES,
                   help="refuse snapshot files from the leader announced larger than this (default "
                        f"{MAX_SNAPSHOT_BYTES}); a file larger than the free disk space is refused too")
    p.add_argument("--keys", metavar="DIR",
                   help="CurveZMQ keys: DIR/node-<id>.key_secret (this node's pair), DIR/node-<n>.key (every "
                        "node's public key), DIR/clients/*.key (allowed clients); see zraft/security.py")
    p.add_argument("--insecure", action="store_true",
                   help="run without keys on a non-loopback address (anyone who reaches the port can read and "
                        "forge everything); without keys, a loopback address is allowed with a warning")
    p.add_argument("--force-peers", action="store_true",
                   help="RECOVERY ONLY: replace the configuration stored in the data directory with --peers (the "
                        "node refuses to start when they disagree; forcing it can lose acknowledged writes)")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    a = p.parse_args(argv)
    logging.basicConfig(level=a.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        if a.cluster:
            import json

            with open(a.cluster) as f:
                peers = {int(n["id"]): n["address"] for n in json.load(f)["nodes"]}
        elif a.peers:
            peers = parse_peers(a.peers)
        else:
            p.error("give --peers or --cluster")
        if a.id not in peers:
            raise ValueError(f"node {a.id} is not in the peer list {sorted(peers)}")
        keys = None
        if a.keys:
            keys = security.NodeKeys.load(a.keys, a.id, sorted(peers))
        else:
            bind = a.bind or f"tcp://{peers[a.id]}"
            host = bind.removeprefix("tcp://").rsplit(":", 1)[0]
            if not security.is_loopback(host) and not a.insecure:
                raise ValueError(f"{bind} is not a loopback address: give --keys DIR (CurveZMQ authentication "
                                 "and encryption), or --insecure to accept anyone who can reach the port")
            log.warning("node=%d event=insecure no --keys: connections are neither authenticated nor encrypted",
                        a.id)
        node = Node(a.id, peers, a.data_dir, a.bind, a.tick_ms, a.election_ticks, a.heartbeat_ticks,
                    a.unsafe_no_fsync, a.snapshot_every, a.chaos, a.snapshot_bytes, a.segment_bytes, a.force_peers,
                    a.max_snapshot_bytes, keys)
    except (datadir.DataDirLocked, datadir.ConfigMismatch, security.KeysError) as e:
        print(f"zraft node {a.id}: {e}", file=sys.stderr)
        return 2
    except zmq.ZMQError as e:
        if e.errno == zmq.EADDRINUSE:
            print(f"zraft node {a.id}: address {a.bind or 'tcp://' + peers[a.id]} is in use; stop whatever "
                  "listens there or pass another port (launcher.py --base-port)", file=sys.stderr)
        else:
            print(f"zraft node {a.id}: cannot open sockets: {e}", file=sys.stderr)
        return 2
    except CorruptionError as e:
        print(f"zraft node {a.id}: {e}", file=sys.stderr)
        return 3
    except (ValueError, OSError) as e:
        print(f"zraft node {a.id}: {e}", file=sys.stderr)
        return 2

    def on_term(signum: int, frame: Any) -> None:
        node.stop()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        node.run()
    except StorageError as e:
        log.critical("node=%d event=storage_failed %s", a.id, e)
        return 4
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
