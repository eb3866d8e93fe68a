"""A zraft node process: the event loop and the command line around one replica.

    zraft node --id 1 --peers 1=127.0.0.1:5551,2=127.0.0.1:5552,3=127.0.0.1:5553 --data-dir DIR

What runs where: ``zraft.server.replica`` does everything between the wire and the Raft core (client requests,
carrying out ready batches, sessions, snapshots); ``zraft.transport.zmq_transport`` owns the sockets and checks
every frame; ``zraft.transport.faults`` injects network faults in chaos runs. This module opens the data
directory (its lock, its configuration check, recovery), wires them together and runs the loop.

Each pass of the loop: wait for input until the next tick is due; hand every message that has arrived (up to a
bound) to the replica, then ``end_input`` (the writes among them become one proposal: one log append, one fsync,
one AppendEntries per follower); tick if due; write a slice of a snapshot in progress; then ``process`` the
replica's ready batch: persist (fsync) before sending, send, apply, answer clients.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

import zmq

from zraft.core import ClusterConfig, EntryKind, Options
from zraft.server.loop import Loop
from zraft.server.recovery import force_new_cluster_config
from zraft.server.redis import RespServer, Routing
from zraft.server.replica import Replica
from zraft.server.settings import (
    ELECTION_TICKS,
    HEARTBEAT_TICKS,
    MAX_SNAPSHOT_BYTES,
    SNAPSHOT_BYTES,
    SNAPSHOT_EVERY,
    TICK_MS,
    Settings,
)
from zraft.statemachine import backup
from zraft.statemachine.backup import BackupError
from zraft.statemachine.kv import KVStore
from zraft.storage import SEGMENT_BYTES, CorruptionError, Storage, StorageError, datadir
from zraft.transport import security
from zraft.transport.faults import ChaosControl, FaultyTransport
from zraft.transport.zmq_transport import PEER_KINDS, ZmqTransport

log = logging.getLogger("zraft.node")

MAX_BATCH = 4096
"""Most messages taken from the socket in one loop pass."""
GC_FREEZE_EVERY_S = 0.1
"""How often the young generations are collected and their survivors frozen. The collection walks what survived
since the last one: once a second that was 5-16 ms at 40,000 writes/s (and the automatic young collections in
between, 3-13 ms each); ten times a second it is about a tenth, for the same total."""
GC_THRESHOLDS = (20_000, 20, 100)
"""Young collections every 20,000 net allocations rather than 700: a busy loop allocates that many in a pass."""


class Node:
    def __init__(self, node_id: int, peers: dict[int, str], data_dir: str, bind: str | None = None,
                 tick_ms: int = TICK_MS, election_ticks: int = ELECTION_TICKS,
                 heartbeat_ticks: int = HEARTBEAT_TICKS, unsafe_no_fsync: bool = False,
                 snapshot_every: int = SNAPSHOT_EVERY, chaos: bool = False,
                 snapshot_bytes: int = SNAPSHOT_BYTES, segment_bytes: int = SEGMENT_BYTES,
                 force_peers: bool = False, max_snapshot_bytes: int = MAX_SNAPSHOT_BYTES,
                 keys: security.NodeKeys | None = None, join: bool = False, cluster_id: str = "",
                 force_new_cluster: bool = False, restore: str = "", resp: str = "",
                 resp_password: bytes | None = None) -> None:
        """``peers``: every node's address, this one's included. ``join``: ``peers`` names a running cluster
        this node waits to be added to (it has no configuration of its own and never campaigns before).
        ``cluster_id``: the cluster's identity (recorded in the data directory; peers of another cluster are
        refused); empty: the one the data directory holds, if any. ``force_new_cluster``: disaster recovery
        (``force_new_cluster``, below). ``restore``: a backup file this node of a new cluster (``cluster_id``)
        starts from, if its data directory is empty (``zraft.statemachine.backup.restore_into``). ``resp``:
        HOST:PORT to serve the Redis protocol on (``zraft.server.redis``)."""
        if node_id not in peers:
            raise ValueError(f"node {node_id} is not in the peer list {sorted(peers)}")
        # One process per data directory: the lock comes before reading anything in it, and is held until exit.
        self._dir_lock = datadir.lock(data_dir)
        self.ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        try:
            self._open(node_id, peers, data_dir, bind, tick_ms, election_ticks, heartbeat_ticks, unsafe_no_fsync,
                       snapshot_every, chaos, snapshot_bytes, segment_bytes, force_peers, max_snapshot_bytes, keys,
                       join, cluster_id, force_new_cluster, restore, resp, resp_password)
        except BaseException:
            if self.ctx is not None:
                self.ctx.destroy(linger=0)
            os.close(self._dir_lock)
            raise

    def _open(self, node_id: int, peers: dict[int, str], data_dir: str, bind: str | None, tick_ms: int,
              election_ticks: int, heartbeat_ticks: int, unsafe_no_fsync: bool, snapshot_every: int, chaos: bool,
              snapshot_bytes: int, segment_bytes: int, force_peers: bool, max_snapshot_bytes: int,
              keys: security.NodeKeys | None, join: bool, cluster_id: str, force_new_cluster: bool,
              restore: str, resp: str, resp_password: bytes | None) -> None:
        if restore:
            self._restore(data_dir, restore, node_id, tuple(peers), cluster_id)
        has_state = any(os.listdir(d) for d in (os.path.join(data_dir, "log"), os.path.join(data_dir, "snap"))
                        if os.path.isdir(d))
        self.id = node_id
        self.addr = peers[node_id]
        self.tick_s = tick_ms / 1000.0
        storage = Storage(data_dir, unsafe_no_fsync=unsafe_no_fsync, segment_bytes=segment_bytes)
        rec = storage.recovered
        for w in rec.warnings:
            log.warning("node=%d event=recovery %s", node_id, w)
        if force_new_cluster:
            try:
                force_new_cluster_config(storage, node_id, peers[node_id],
                                         keys.own.public.decode() if keys is not None else "")
            except BaseException:
                storage.close()
                raise
        # Once the membership has changed, it is whatever the log (or snapshot) says, not the command line.
        configs = [e for e in rec.entries if e.kind == EntryKind.CONFIG]
        try:
            in_force = ClusterConfig.decode(configs[-1].data) if configs else \
                rec.snapshot.config if rec.snapshot is not None else None
            managed = in_force is not None and bool(in_force.context)
            meta, warning = datadir.check_config(data_dir, node_id, () if join else tuple(peers), has_state,
                                                 force_peers, managed, cluster_id)
        except BaseException:
            storage.close()
            raise
        if warning:
            log.warning("node=%d event=config %s", node_id, warning)
        if managed:
            assert in_force is not None
            log.info("node=%d event=membership voters=%s learners=%s (from the data directory)", node_id,
                     list(in_force.voters), list(in_force.learners))
        config = ClusterConfig(meta.voters)
        if not managed and rec.snapshot is not None and rec.snapshot.config != config:
            if not force_peers:
                storage.close()
                raise datadir.ConfigMismatch(
                    f"data directory {os.path.abspath(data_dir)}: its snapshot names voters "
                    f"{list(rec.snapshot.config.voters)} but {datadir.META_NAME} names {list(config.voters)}; "
                    "--force-peers makes the stored configuration win")
            rec.snapshot = dataclasses.replace(rec.snapshot, config=config)
        self.ctx = zmq.Context()
        self.cluster_id = meta.cluster
        self.zmq = ZmqTransport(self.ctx, node_id, peers, bind or f"tcp://{self.addr}", keys, meta.cluster,
                                silence_s=2 * election_ticks * self.tick_s)
        # Network faults for chaos runs: a control socket on the local machine only (ipc), off by default.
        self.net = FaultyTransport(self.zmq)
        self.chaos: ChaosControl | None = ChaosControl(self.ctx, data_dir, node_id, self.net) if chaos else None
        self.replica = Replica(
            node_id, config, storage, self.net if chaos else self.zmq, time.monotonic, random.Random(),
            Options(election_ticks=election_ticks, heartbeat_ticks=heartbeat_ticks, max_inflight=64,
                    snapshot_timeout_ticks=max(200, 4 * election_ticks)),
            Settings(snapshot_every=snapshot_every, snapshot_bytes=snapshot_bytes,
                     max_snapshot_bytes=max_snapshot_bytes),
            addresses=peers,
            keys={i: k.decode() for i, k in keys.nodes.items()} if keys is not None else None, machine=KVStore)
        self.replica.status_extra = self.zmq.status
        self.replica.membership.on_config = self.zmq.set_members
        self.resp: RespServer | None = None
        if resp:
            self.resp = RespServer(self.replica, resp, forward=self.zmq.send_client, password=resp_password)
            self.replica.transport = Routing(self.replica.transport, self.resp)
        self._stop = False

    @staticmethod
    def _restore(data_dir: str, path: str, node_id: int, voters: tuple[int, ...], cluster_id: str) -> None:
        meta = datadir.read_meta(data_dir)
        if meta is not None and meta.cluster == cluster_id and meta.node == node_id:
            log.info("node=%d event=restore_skipped %s already holds this node of cluster %s (restored before): "
                     "starting from its data", node_id, data_dir, cluster_id)
            return
        info = backup.restore_into(data_dir, path, node_id, voters, cluster_id)
        log.warning("node=%d event=restored from=%s %s; new cluster %s with voters %s", node_id, path,
                    info.describe(), cluster_id, list(voters))

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        replica, raft = self.replica, self.replica.raft
        log.info("node=%d event=start addr=%s term=%d commit=%d last_index=%d", self.id, self.addr, raft.term,
                 raft.commit_index, raft.last_index)
        router = self.zmq.router
        chaos_sock = self.chaos.sock if self.chaos is not None else None
        zap = self.zmq.zap
        resp = self.resp

        def make_poller() -> tuple[zmq.Poller, set[zmq.Socket[bytes]]]:
            poller = zmq.Poller()
            for sock in (router, chaos_sock, zap.sock if zap is not None else None):
                if sock is not None:
                    poller.register(sock, zmq.POLLIN)
            dealers = set(self.zmq.dealers.values())
            for d in dealers:
                poller.register(d, zmq.POLLIN)
            self.zmq.dealers_changed = False
            if resp is not None:
                resp.attach(poller)
            return poller, dealers

        poller, dealers = make_poller()
        net = self.net
        loop = Loop(replica, self.tick_s, time.monotonic() + self.tick_s)
        loop.on_tick.append(self.zmq.redial)
        if resp is not None:
            loop.sources.append(resp)
        replica.start()
        # The cyclic GC: a full collection walks every live object (every log entry, every key), about 170 ms per
        # million, which would stall the loop. Objects that survive a young collection are frozen (excluded from
        # later collections; they are still freed by reference counting when dropped), ten times a second.
        gc.collect(1)
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        next_freeze = time.monotonic() + GC_FREEZE_EVERY_S
        loop_pass = replica.stats.loop_pass
        try:
            while not self._stop:
                due = net.due()
                wake = loop.next_tick if due is None else min(loop.next_tick, due)
                timeout = 0.0 if loop.busy() else max(0.0, wake - time.monotonic())
                ready = dict(poller.poll(int(timeout * 1000)))
                pass_start = time.perf_counter()
                if router in ready:
                    self._drain(self.zmq.incoming(MAX_BATCH))
                if len(ready) > (router in ready) and not dealers.isdisjoint(ready):
                    self._drain(self.zmq.incoming_back(ready, MAX_BATCH))
                if chaos_sock is not None and chaos_sock in ready:
                    self.chaos.handle()  # type: ignore[union-attr]
                if zap is not None and zap.sock in ready:
                    zap.handle()
                if resp is not None:
                    resp.handle(ready)  # the Redis commands of this pass (their writes join its proposal)
                if due is not None:
                    net.release()
                now = time.monotonic()
                loop.run_pass(now)  # end input, tick, work, process, flush (zraft.server.loop)
                if self.zmq.dealers_changed:  # the membership changed: poll the new peers' connections
                    poller, dealers = make_poller()
                if now >= next_freeze:
                    gc.collect(1)
                    gc.freeze()
                    next_freeze = now + GC_FREEZE_EVERY_S
                loop_pass.observe(time.perf_counter() - pass_start)
        finally:
            self.close()

    def _drain(self, messages: Iterator[tuple[str, Any, bytes]]) -> None:
        replica, net, chaos = self.replica, self.net, self.chaos is not None
        for kind, msg, identity in messages:
            if chaos and kind in PEER_KINDS and net.drops(msg.src):
                continue
            if kind == "client_replies":
                if self.resp is not None:
                    self.resp.on_replies(b"", msg)
                continue
            try:
                replica.receive(kind, msg, identity)
            except (AssertionError, StorageError, CorruptionError):
                raise  # a broken invariant of our own, or our disk: stop rather than go on wrong
            except Exception as e:  # whatever a frame says, it must not kill the node
                self.zmq.refused("unhandled", "node=%d event=message_failed from=%r error=%r", self.id,
                                 identity[:32], e)

    def stop(self) -> None:
        self._stop = True

    def close(self) -> None:
        if self.resp is not None:
            self.resp.close()
        self.replica.close()
        self.zmq.close()
        if self.ctx is not None:
            self.ctx.destroy(linger=0)
        os.close(self._dir_lock)


def read_password(path: str) -> bytes:
    """The Redis password in ``path``: its first line, 1 to 512 bytes; the file must be its owner's alone."""
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            line = f.read(4096).split(b"\n", 1)[0].rstrip(b"\r")
    except OSError as e:
        raise ValueError(f"--resp-password-file {path}: {e.strerror or e}") from None
    if st.st_mode & 0o077:
        raise ValueError(f"--resp-password-file {path} can be read by others (mode {st.st_mode & 0o777:o}): "
                         f"chmod 600 {path}")
    if not 0 < len(line) <= 512:
        raise ValueError(f"--resp-password-file {path}: its first line must hold the password (1 to 512 bytes)")
    return line


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
    p = argparse.ArgumentParser(description="Run one zraft node.")
    p.add_argument("--id", type=int, required=True, help="this node's id (a positive integer in the peer list)")
    p.add_argument("--peers", help="every node of the cluster, this one included: 1=HOST:PORT,2=HOST:PORT,...")
    p.add_argument("--cluster", help="a cluster.json written by launcher.py (instead of --peers)")
    p.add_argument("--join", metavar="ID=HOST:PORT,...",
                   help="start with no configuration of its own and wait to be added (add_learner, then promote) "
                        "by the cluster whose nodes these are; give this node's own address with --address")
    p.add_argument("--address", metavar="HOST:PORT", help="this node's address (with --join)")
    p.add_argument("--data-dir", required=True, help="where this node keeps its log and snapshots")
    p.add_argument("--bind", help="ZeroMQ endpoint to bind (default: tcp://<this node's address>)")
    p.add_argument("--tick-ms", type=int, default=TICK_MS, help=f"milliseconds per tick (default {TICK_MS})")
    p.add_argument("--election-ticks", type=int, default=ELECTION_TICKS,
                   help=f"election timeout in ticks, randomized up to twice this (default {ELECTION_TICKS})")
    p.add_argument("--heartbeat-ticks", type=int, default=HEARTBEAT_TICKS,
                   help=f"heartbeat interval in ticks (default {HEARTBEAT_TICKS})")
    p.add_argument("--snapshot-every", type=int, default=SNAPSHOT_EVERY,
                   help=f"snapshot after at most this many applied entries (default {SNAPSHOT_EVERY}; each "
                   "node draws 80-100%% of it per snapshot, so that the nodes do not all snapshot at once)")
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
                        "node's public key), DIR/clients/*.key (allowed clients); see zraft/transport/security.py")
    p.add_argument("--insecure", action="store_true",
                   help="run without keys on a non-loopback address (anyone who reaches the port can read and "
                        "forge everything); without keys, a loopback address is allowed with a warning")
    p.add_argument("--force-peers", action="store_true",
                   help="RECOVERY ONLY: replace the configuration stored in the data directory with --peers (the "
                        "node refuses to start when they disagree; forcing it can lose acknowledged writes)")
    p.add_argument("--cluster-id", default="", metavar="ID",
                   help="the cluster's identity (letters, digits, - _ .; up to 64), recorded in the data directory "
                        "and announced on every peer connection: nodes of another cluster are refused (the "
                        "launcher makes one per cluster). Default: the one the data directory holds, if any")
    p.add_argument("--metrics", metavar="HOST:PORT",
                   help="serve Prometheus metrics at http://HOST:PORT/metrics (off by default; the launcher gives "
                        "node i port base-port + 1000 + i - 1). Read-only, unauthenticated: bind it to loopback or "
                        "a monitoring network")
    p.add_argument("--force-new-cluster", action="store_true",
                   help="DISASTER RECOVERY, when a majority is lost for good: make this node the only member, "
                        "keeping its log and snapshot (writes acknowledged only by the lost nodes may be gone); "
                        "then add fresh nodes with the membership commands. Use it once, on one survivor")
    p.add_argument("--restore", metavar="FILE",
                   help="start a NEW cluster from a backup (client_shell.py backup FILE): fills this node's empty "
                        "data directory with the backup's keys and client sessions; needs --cluster-id with a new "
                        "id, the same on every node, and --peers naming the new cluster's nodes. Once restored, "
                        "later starts (with or without --restore) use the data directory")
    p.add_argument("--resp", metavar="HOST:PORT",
                   help="also serve the Redis protocol (RESP2) there: redis-cli, redis-benchmark, any Redis client "
                        "(the launcher gives node i base-port + 3000 + i - 1). On a non-loopback address it needs "
                        "--resp-password-file (or --insecure)")
    p.add_argument("--resp-password-file", metavar="FILE",
                   help="the password Redis clients must give (AUTH, HELLO ... AUTH default PASSWORD): the first "
                        "line of FILE, which must be readable by its owner only (mode 0600)")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    a = p.parse_args(argv)
    logging.basicConfig(level=a.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        if not datadir.valid_cluster_id(a.cluster_id):
            raise ValueError(f"--cluster-id {a.cluster_id!r:.80}: letters, digits, - _ . only, at most "
                             f"{datadir.MAX_CLUSTER_ID}")
        if a.restore:
            if not a.cluster_id:
                raise ValueError("--restore starts a new cluster: give it --cluster-id NEW_ID, the same on every "
                                 "node of the new cluster (for example the output of: python -c 'import secrets; "
                                 "print(secrets.token_hex(8))')")
            if a.join or a.force_new_cluster:
                raise ValueError("--restore cannot be combined with --join or --force-new-cluster")
        if a.join:
            if not a.address:
                p.error("--join needs --address HOST:PORT (this node's own)")
            peers = parse_peers(a.join)
            if a.id in peers:
                raise ValueError(f"node {a.id} is already in the --join list: give the cluster's other nodes")
            peers[a.id] = parse_peers(f"{a.id}={a.address}")[a.id]
        elif a.cluster:
            import json

            with open(a.cluster) as f:
                peers = {int(n["id"]): n["address"] for n in json.load(f)["nodes"]}
        elif a.peers:
            peers = parse_peers(a.peers)
        else:
            p.error("give --peers, --cluster or --join")
        if a.id not in peers:
            raise ValueError(f"node {a.id} is not in the peer list {sorted(peers)}")
        resp_password = None
        if a.resp_password_file:
            resp_password = read_password(a.resp_password_file)
        if a.resp:
            rhost = a.resp.rpartition(":")[0]
            if not security.is_loopback(rhost) and resp_password is None and not a.insecure:
                raise ValueError(f"--resp {a.resp} is not a loopback address: give --resp-password-file FILE (Redis "
                                 "AUTH), or --insecure to let anyone who reaches the port read and write everything")
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
                    a.max_snapshot_bytes, keys, join=bool(a.join), cluster_id=a.cluster_id,
                    force_new_cluster=a.force_new_cluster, restore=a.restore or "", resp=a.resp or "",
                    resp_password=resp_password)
        if a.metrics:
            from zraft.server import metrics

            host, sep, port = a.metrics.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                node.close()
                raise ValueError(f"--metrics {a.metrics!r}: expected HOST:PORT")
            try:
                metrics.serve(a.metrics, node.replica)
            except OSError as e:
                node.close()
                raise ValueError(f"cannot serve metrics at {a.metrics}: {e.strerror or e}") from None
    except (datadir.DataDirLocked, datadir.ConfigMismatch, security.KeysError, BackupError) as e:
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
