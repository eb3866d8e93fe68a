"""One simulated node: the production replica on a ``FaultDisk``, its transport into the simulated network, and
what the simulator remembers of it across crashes (what its disk made durable)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from zraft.core import ClusterConfig, HardState, Message, MsgType, Raft
from zraft.server.loop import Loop
from zraft.server.redis import RespServer
from zraft.server.replica import Replica
from zraft.statemachine.kv import KVStore
from zraft.storage.faultdisk import FaultDisk
from zraft.transport import codec
from zraft.transport.codec import SnapAck, SnapChunk

if TYPE_CHECKING:
    from .cluster import SimCluster
    from .redis import SimListener, SimPoller


class Crash(BaseException):
    """Raised inside a replica (by a probe or the disk) to crash its node at that point. Not an ``Exception``:
    like the process dying, nothing in the replica may catch it and carry on."""


SEGMENT_BYTES = 16 << 10
"""Small log segments, so that compaction deletes whole segments often."""


class SimTransport:
    """A replica's ``Transport`` in the simulator: everything goes through the cluster's network, encoded."""

    def __init__(self, cluster: SimCluster, node_id: int) -> None:
        self.c = cluster
        self.id = node_id

    def send(self, m: Message) -> None:
        c = self.c
        c.messages_sent += 1
        if m.type == MsgType.VOTE_RESP and not m.reject and c.crash_after_vote and \
                c.rng.random() < c.crash_after_vote:
            # The classic test for an unpersisted vote: crash the voter right after it votes, bring it straight
            # back, and let a rival ask in the same term.
            c.at(0.0, lambda: c.crash_restart(self.id, 0.0))
        c.send_peer(self.id, m.dst, codec.encode_raft(m))

    def send_chunk(self, peer: int, ch: SnapChunk) -> bool:
        self.c.chunks_sent += 1
        self.c.send_peer(self.id, peer, codec.encode_chunk(ch))
        return True

    def send_ack(self, peer: int, a: SnapAck) -> None:
        self.c.send_peer(self.id, peer, codec.encode_ack(a))

    def answer(self, client: bytes, replies: list[dict[str, Any]], batch: bool) -> None:
        if batch:
            frames = [codec.encode_client_batch(replies[lo:lo + codec.MAX_BATCH])
                      for lo in range(0, len(replies), codec.MAX_BATCH)]
        else:
            frames = [codec.encode_client(replies[0])]
        for f in frames:
            self.c.send_to_client(self.id, client, f)


class SimNode:
    def __init__(self, node_id: int, seed: int, bootstrap: ClusterConfig) -> None:
        self.id = node_id
        self.bootstrap = bootstrap
        """The configuration it is started with the first time (a spare waits with none, to be added)."""
        self.started = False
        self.disk = FaultDisk(seed)
        self.path = f"/sim/node-{node_id}"
        self.replica: Replica[KVStore] | None = None
        self.written_commit = 0
        """The commit index of the hard state it last wrote (an fsync makes it durable)."""
        self.durable_commit = 0
        """A commit index its disk holds for sure: no restart may come back below it."""
        self.last_hard_state: HardState | None = None
        """The hard state it last wrote (its term and vote are durable: they are always synced)."""
        self.up = False
        self.loop: Loop | None = None
        """Its event loop's pass order (``zraft.server.loop``), as the node process runs it."""
        self.inbox: list[tuple[str, Any, bytes]] = []
        """Messages delivered since its last loop pass: the next pass feeds them all (as a node's socket queues)."""
        self.pass_at = math.inf
        """When its next loop pass is scheduled."""
        self.pass_gen = 0
        """Which scheduled pass is the live one (an earlier one replaces a later one; a crash cancels it)."""
        self.resp: RespServer | None = None
        """Its Redis server, when the cluster runs them (``redis.py``), with its listening socket and poller."""
        self.listener: SimListener | None = None
        self.poller: SimPoller | None = None

    @property
    def raft(self) -> Raft | None:
        return self.replica.raft if self.up and self.replica is not None else None

    @property
    def kv(self) -> KVStore | None:
        return self.replica.machine if self.up and self.replica is not None else None

    @property
    def applied(self) -> int:
        return self.replica.machine.applied if self.up and self.replica is not None else 0

    def ops(self, key: str) -> tuple[str, ...]:
        """The op ids appended to ``key`` in this node's store, in order."""
        store = self.kv
        value = (store.get(key.encode()) or b"") if store is not None else b""
        return tuple(value.decode().split(";")[:-1])
