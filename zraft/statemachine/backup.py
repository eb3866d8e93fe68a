"""Backups: a cluster's whole state in one file, and new clusters started from one.

A backup file is a snapshot file exactly as the node that served it stored it (``zraft.storage.snapshots``:
magic ``ZRSNAP02`` naming its format, metadata, the store's keys and client sessions, and a CRC-32 over every
byte), so it is checked end to end: the checksum was computed when the node wrote the file and is verified where
the file lands. ``Client.backup`` (``client_shell.py backup FILE``) writes one; ``inspect`` checks one;
``restore_into`` makes a node's empty data directory start from one (``launcher.py --restore FILE``,
``zraft node --restore FILE``).

A restored cluster is a new cluster: it gets a new cluster id (so it and the original refuse each other's
traffic), its membership comes from the command line (the backup's is ignored), and it holds the keys and the
client sessions of the backup at its index -- a client retrying a write the backup already holds is answered from
its session, not applied twice.

``zraft backup FILE`` (``zraft.tools.backup``) checks a backup file and prints what it holds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import msgpack

from zraft.core import ClusterConfig, HardState
from zraft.statemachine import kv
from zraft.storage import CorruptionError, Storage, datadir
from zraft.storage import snapshots as snapfiles
from zraft.storage.disk import OsDisk
from zraft.storage.snapshots import SnapshotFile


class BackupError(Exception):
    """A backup file that cannot be used (the message says why), or a restore that cannot be done."""


@dataclass(frozen=True)
class BackupInfo:
    path: str
    index: int
    """The log index the backup holds the state at."""
    term: int
    keys: int
    sessions: int
    size: int
    """Bytes in the file."""

    def describe(self) -> str:
        return (f"index {self.index}, term {self.term}, {self.keys} keys, {self.sessions} client sessions, "
                f"{self.size} bytes")


def inspect(path: str, full: bool = False) -> BackupInfo:
    """Check backup file ``path`` (its checksum over every byte, its metadata; ``full``: also that the store in it
    decodes, key by key) and say what it holds. Raises ``BackupError`` with a sentence naming what is wrong."""
    if not os.path.isfile(path):
        raise BackupError(f"{path}: no such file")
    disk = OsDisk()
    try:
        snap = snapfiles.verify(disk, path)
    except CorruptionError as e:
        raise BackupError(f"{path} is not a usable zraft backup: {e.what} (at byte {e.offset})") from None
    f = snap.data
    assert isinstance(f, SnapshotFile)
    try:
        head = msgpack.Unpacker(raw=False, strict_map_key=False)
        head.feed(disk.read_range(f.path, f.data_offset, min(f.data_len, 64)))
        first = next(head)
        if type(first) is not list or len(first) < 4:
            raise ValueError("no header")
        fmt, applied, keys, sessions = first[:4]
        if fmt not in (3, 4, 5, kv.SNAPSHOT_FORMAT):  # what backups were written in (1 and 2: old snapshots only)
            raise ValueError(f"store format {fmt}; this zraft reads backups in formats 3 to {kv.SNAPSHOT_FORMAT}")
        if applied != snap.index or type(keys) is not int or type(sessions) is not int:
            raise ValueError("its header disagrees with its metadata")
    except (ValueError, TypeError, StopIteration, msgpack.UnpackException) as e:
        raise BackupError(f"{path} is not a usable zraft backup: its store does not decode ({e})") from None
    if full:
        try:
            store = kv.KVStore.restore_chunks(f.data_chunks())
        except (ValueError, CorruptionError) as e:
            raise BackupError(f"{path} is not a usable zraft backup: {e}") from None
        if store.applied != snap.index:
            raise BackupError(f"{path} is not a usable zraft backup: its store is at index {store.applied}, its "
                              f"metadata says {snap.index}")
    return BackupInfo(path, snap.index, snap.term, keys, sessions, f.size)


def restore_into(data_dir: str, path: str, node_id: int, voters: tuple[int, ...], cluster_id: str) -> BackupInfo:
    """Make the empty data directory ``data_dir`` hold node ``node_id`` of a new cluster ``cluster_id`` (voters
    ``voters``) whose state is the backup's: its snapshot (with this membership in place of the backup's), a log
    that starts after it, and the identity file. Refuses a directory that holds anything of a node already, and a
    damaged or foreign file (``BackupError``). The caller holds the directory's lock (or it is new)."""
    if not cluster_id or not datadir.valid_cluster_id(cluster_id):
        raise BackupError(f"a restored cluster needs a new cluster id (letters, digits, - _ .), not {cluster_id!r}")
    if node_id not in voters:
        raise BackupError(f"node {node_id} is not among the voters {sorted(voters)}")
    for sub in ("log", "snap"):
        d = os.path.join(data_dir, sub)
        if os.path.isdir(d) and os.listdir(d):
            raise BackupError(f"{data_dir} already holds a node's data: a restore fills an empty data directory "
                              "(move it aside, or give another --data-dir)")
    if os.path.exists(os.path.join(data_dir, datadir.META_NAME)):
        raise BackupError(f"{data_dir} already belongs to a node ({datadir.META_NAME} exists): a restore fills an "
                          "empty data directory")
    info = inspect(path)
    source = snapfiles.verify(OsDisk(), path)
    f = source.data
    assert isinstance(f, SnapshotFile)
    config = ClusterConfig(tuple(sorted(voters)))
    with Storage(data_dir) as storage:
        w = storage.snapshot_writer(info.index, info.term, config)
        try:
            for piece in f.data_chunks():
                w.write(piece)
            snap = w.commit()
        except BaseException:
            w.abort()
            raise
        # Everything up to the backup's index is committed, in the backup's term; elections start after it.
        storage.save(HardState(info.term, 0, info.index), [], snap)
    datadir.write_meta(data_dir, datadir.Meta(node_id, tuple(sorted(voters)), cluster_id))
    return info
