"""Durable storage for a node: the Raft log, hard state and snapshots (see ``zraft.storage.store``)."""

from .disk import Disk, OsDisk
from .records import CorruptionError
from .store import SEGMENT_BYTES, Recovered, Storage, StorageError

__all__ = ["SEGMENT_BYTES", "CorruptionError", "Disk", "OsDisk", "Recovered", "Storage", "StorageError"]
