"""A node's tunable settings and their defaults, in one place: the Raft timing (ticks, election timeout,
heartbeats), when snapshots are taken, how large they may be, and how far a leader may run ahead of its commit
index. ``zraft node``'s options set them; the simulator sets its own."""

from __future__ import annotations

from dataclasses import dataclass

from zraft.server.snapshotting import CHUNK_BYTES, MAX_SNAPSHOT_BYTES

TICK_MS = 50
"""Milliseconds per Raft tick (the node's loop and the simulator's virtual time alike)."""
ELECTION_TICKS = 10
"""Election timeout: 10-20 ticks (0.5-1 s). A new leader is usually elected within a second of a leader's death."""
HEARTBEAT_TICKS = 2
"""The leader sends heartbeats every 2 ticks (100 ms)."""
SNAPSHOT_EVERY = 100_000
"""Take a snapshot and compact the log after this many applied entries..."""
SNAPSHOT_BYTES = 256 << 20
"""... or once this many bytes have been written to the log since the last snapshot."""
SNAPSHOT_JITTER = 0.2
"""Each snapshot is due after a random 80-100% of ``snapshot_every`` entries (or ``snapshot_bytes``), drawn per
node and per snapshot. The nodes of a cluster apply the same entries, so without it they all snapshot at the same
index, at the same moment: on one machine, where they share the CPUs and the disk, a paced run's writes waited
20-35 ms at each snapshot (1-2% of them, every 2.5 s at 40,000 writes/s)."""
MAX_UNCOMMITTED = 65_536
"""Entries a leader holds beyond its commit index at most (etcd's MaxUncommittedEntriesSize, by count): past it,
writes are answered ``busy`` and the clients back off, so a leader that cannot commit (its followers cut off or
slow, clients that keep retrying) does not grow its log without bound."""


@dataclass(frozen=True, slots=True)
class Settings:
    snapshot_every: int = SNAPSHOT_EVERY
    snapshot_bytes: int = SNAPSHOT_BYTES
    max_snapshot_bytes: int = MAX_SNAPSHOT_BYTES
    chunk_bytes: int = CHUNK_BYTES
    """Snapshot files are sent in chunks of this size."""
    threads: bool = True
    """A snapshot's file is fsynced by a thread and its serialization is bounded by real time per loop pass;
    False (the simulator): by the loop, ``snapshot_pieces`` pieces per pass, so that a replay is exact."""
    snapshot_pieces: int | None = None
    max_uncommitted: int = MAX_UNCOMMITTED


DEFAULT_SETTINGS = Settings()

__all__ = ["CHUNK_BYTES", "DEFAULT_SETTINGS", "ELECTION_TICKS", "HEARTBEAT_TICKS", "MAX_SNAPSHOT_BYTES",
           "MAX_UNCOMMITTED", "SNAPSHOT_BYTES", "SNAPSHOT_EVERY", "SNAPSHOT_JITTER", "TICK_MS", "Settings"]
