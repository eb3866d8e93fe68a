"""Snapshot files: the state machine's bytes plus (index, term, configuration), versioned and checksummed.

Layout of ``<index:016x>-<term:016x>.snap`` (format 02, written as a stream, so a snapshot never has to be
in memory whole):
  magic b"ZRSNAP02" | meta_len:u32le | meta (msgpack map: index, term, voters) | data
  | data_len:u64le | crc32:u32le over everything before it
Format 01 (``magic | meta_len | meta | data_len:u64le | data | crc32``) is still read.

A snapshot is written to ``<name>.tmp``, fsynced, renamed and the directory fsynced: a crash leaves the old
one and at most a temporary file, which the next start removes. A file is verified (checksum, lengths, that
its name matches its metadata) before it is used, and described by a ``SnapshotFile``: where the state
machine's bytes are, so they can be read in chunks, and where the whole file is, so it can be sent as it is.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import msgpack

from zraft.core import ClusterConfig, Snapshot

from .disk import AppendFile, Disk
from .records import CorruptionError

MAGIC = b"ZRSNAP02"
MAGIC_V1 = b"ZRSNAP01"
FORMATS = (MAGIC, MAGIC_V1)
U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")
SUFFIX = ".snap"
TMP_SUFFIX = ".tmp"
PART_SUFFIX = ".part"
CHUNK = 4 << 20
MAX_META = 3 << 20


def file_name(index: int, term: int) -> str:
    return f"{index:016x}-{term:016x}{SUFFIX}"


def parse_name(name: str) -> tuple[int, int] | None:
    if not name.endswith(SUFFIX):
        return None
    try:
        a, b = name[: -len(SUFFIX)].split("-")
        return int(a, 16), int(b, 16)
    except ValueError:
        return None


@dataclass(frozen=True)
class SnapshotFile:
    """A verified snapshot file: ``Snapshot.data`` for snapshots that live on disk."""

    disk: Disk
    path: str
    data_offset: int
    data_len: int
    size: int

    def data_chunks(self, chunk: int = CHUNK) -> Iterator[bytes]:
        """The state machine's bytes, in pieces."""
        off, end = self.data_offset, self.data_offset + self.data_len
        while off < end:
            piece = self.disk.read_range(self.path, off, min(chunk, end - off))
            if not piece:
                raise CorruptionError(self.path, off, "file is shorter than when it was verified")
            off += len(piece)
            yield piece

    def read_data(self) -> bytes:
        return b"".join(self.data_chunks())

    def read_raw(self, offset: int, length: int) -> bytes:
        """Bytes of the whole file (header, data and checksum), for sending it to a follower as it is."""
        return self.disk.read_range(self.path, offset, min(length, self.size - offset))


def _bad(path: str, off: int, what: str) -> CorruptionError:
    return CorruptionError(path, off, what, "this snapshot is unusable. If the other nodes are healthy, stop this "
                           "node, move its data directory aside and restart it empty to catch up from the leader")


def _meta(config: ClusterConfig, index: int, term: int) -> bytes:
    out: bytes = msgpack.packb({"index": index, "term": term, "voters": list(config.voters),
                                "learners": list(config.learners), "context": config.context}, use_bin_type=True)
    return out


class SnapshotWriter:
    """Streams a snapshot into ``<dir>/<name>.tmp``; ``commit()`` makes it durable under its real name."""

    def __init__(self, disk: Disk, directory: str, index: int, term: int, config: ClusterConfig) -> None:
        self.disk, self.directory = disk, directory
        self.index, self.term, self.config = index, term, config
        self.path = f"{directory}/{file_name(index, term)}"
        self.tmp = self.path + TMP_SUFFIX
        meta = _meta(config, index, term)
        head = MAGIC + U32.pack(len(meta)) + meta
        self.data_offset = len(head)
        self._f: AppendFile | None = disk.open_append(self.tmp, 0)
        self._crc = 0
        self._n = 0
        self._raw(head)
        self._n = 0

    def _raw(self, data: bytes) -> None:
        assert self._f is not None, "snapshot writer already finished"
        self._f.write(data)
        self._crc = zlib.crc32(data, self._crc)
        self._n += len(data)

    def write(self, data: bytes) -> None:
        """Append state machine bytes."""
        self._raw(data)

    @property
    def written(self) -> int:
        return self._n

    def flush(self) -> None:
        """fsync what is written so far (may run in another thread while the writer goes on appending): a file
        written in pieces and synced as it grows keeps each journal commit of the file system small, so the log's
        own fsyncs do not wait for the whole snapshot at the end."""
        f = self._f
        if f is not None:
            f.sync()

    def commit(self) -> Snapshot:
        """fsync, rename into place, fsync the directory; returns the snapshot, its data a ``SnapshotFile``."""
        data_len = self._n
        self._raw(U64.pack(data_len))
        f = self._f
        assert f is not None
        f.write(U32.pack(self._crc))
        f.sync()
        f.close()
        self._f = None
        self.disk.rename(self.tmp, self.path)
        self.disk.sync_dir(self.directory)
        size = self.data_offset + data_len + U64.size + U32.size
        return Snapshot(self.index, self.term, self.config,
                        SnapshotFile(self.disk, self.path, self.data_offset, data_len, size))

    def abort(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        try:
            self.disk.remove(self.tmp)
        except OSError:
            pass


class SnapshotReceiver:
    """Receives a snapshot file, as the sending node stored it, in order, into ``<dir>/<name>.part``;
    ``finish()`` verifies it whole and renames it into place (durably), so an install never sees half a file."""

    def __init__(self, disk: Disk, directory: str, index: int, term: int, size: int) -> None:
        self.disk, self.directory = disk, directory
        self.index, self.term, self.size = index, term, size
        self.path = f"{directory}/{file_name(index, term)}"
        self.part = self.path + PART_SUFFIX
        if disk.exists(self.part):
            disk.remove(self.part)
        self._f: AppendFile | None = disk.open_append(self.part, 0)
        self.received = 0

    def write(self, data: bytes) -> None:
        assert self._f is not None, "snapshot receiver already finished"
        if self.received + len(data) > self.size:
            raise ValueError(f"snapshot chunk runs past the announced size {self.size}")
        self._f.write(data)
        self.received += len(data)

    def finish(self) -> Snapshot:
        """The whole file has arrived: make it durable, check it, and give it its real name."""
        f = self._f
        assert f is not None and self.received == self.size
        f.sync()
        f.close()
        self._f = None
        try:
            snap = verify(self.disk, self.part)
        except CorruptionError:
            self.abort()
            raise
        if (snap.index, snap.term) != (self.index, self.term):
            self.abort()
            raise CorruptionError(self.part, 0, f"holds index {snap.index} term {snap.term}, the sender announced "
                                  f"{self.index} {self.term}")
        self.disk.rename(self.part, self.path)
        self.disk.sync_dir(self.directory)
        assert isinstance(snap.data, SnapshotFile)
        d = snap.data
        return Snapshot(snap.index, snap.term, snap.config,
                        SnapshotFile(self.disk, self.path, d.data_offset, d.data_len, d.size))

    def abort(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        try:
            self.disk.remove(self.part)
        except OSError:
            pass


def write(disk: Disk, directory: str, snap: Snapshot) -> Snapshot:
    """Store a snapshot whose data is bytes; returns it with its data a ``SnapshotFile``."""
    data = snap.data if snap.data is not None else b""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"snapshot data must be bytes to be stored, not {type(data).__name__}")
    w = SnapshotWriter(disk, directory, snap.index, snap.term, snap.config)
    try:
        w.write(bytes(data))
        return w.commit()
    except BaseException:
        w.abort()
        raise


def verify(disk: Disk, path: str) -> Snapshot:
    """Check a snapshot file end to end (without holding it in memory) and describe it."""
    try:
        size = disk.file_size(path)
    except FileNotFoundError:
        raise CorruptionError(path, 0, "snapshot file is missing") from None
    if size < len(MAGIC) + U32.size * 2 + U64.size:
        raise _bad(path, 0, "file too short to be a snapshot")
    magic = disk.read_range(path, 0, len(MAGIC))
    if magic not in FORMATS:
        if magic[:6] == MAGIC[:6]:
            raise CorruptionError(path, 0, f"snapshot format {magic[6:8].decode(errors='replace')!r} is not one this "
                                  "zraft reads (01 and 02): a newer zraft wrote it", "run the zraft version that "
                                  "wrote it (or a newer one) (docs/OPERATIONS.md, Upgrades)")
        raise _bad(path, 0, "not a zraft snapshot (bad magic)")
    crc = 0
    off = 0
    body = size - U32.size
    while off < body:
        piece = disk.read_range(path, off, min(CHUNK, body - off))
        crc = zlib.crc32(piece, crc)
        off += len(piece)
    (want,) = U32.unpack(disk.read_range(path, body, U32.size))
    if crc != want:
        raise _bad(path, body, "checksum mismatch")
    off = len(MAGIC)
    (meta_len,) = U32.unpack(disk.read_range(path, off, U32.size))
    off += U32.size
    if meta_len > min(MAX_META, body - off):
        raise _bad(path, off, f"metadata length {meta_len} is impossible")
    try:
        meta = msgpack.unpackb(disk.read_range(path, off, meta_len))
        index, term = int(meta["index"]), int(meta["term"])
        config = ClusterConfig.from_wire([meta["voters"], meta.get("learners", []), meta.get("context", b"")])
    except Exception as e:
        raise _bad(path, off, f"metadata does not decode ({e})") from None
    off += meta_len
    if magic == MAGIC:
        (data_len,) = U64.unpack(disk.read_range(path, body - U64.size, U64.size))
        data_offset = off
        expected_end = data_offset + data_len + U64.size
    else:
        (data_len,) = U64.unpack(disk.read_range(path, off, U64.size))
        data_offset = off + U64.size
        expected_end = data_offset + data_len
    if expected_end != body:
        raise _bad(path, off, "data length does not match the file size")
    return Snapshot(index, term, config, SnapshotFile(disk, path, data_offset, data_len, size))


def read(disk: Disk, directory: str, index: int, term: int) -> Snapshot:
    """The verified snapshot at (index, term) in ``directory``, its data a ``SnapshotFile``."""
    path = f"{directory}/{file_name(index, term)}"
    if not disk.exists(path):
        raise CorruptionError(path, 0, f"the snapshot at index {index} (term {term}) that the log refers to is "
                              "missing")
    snap = verify(disk, path)
    if (snap.index, snap.term) != (index, term):
        raise CorruptionError(path, 0, f"holds index {snap.index} term {snap.term}, its name says {index} {term}")
    return snap


def loaded(snap: Snapshot | None) -> Snapshot | None:
    """``snap`` with its data read into bytes (for tests and small state machines)."""
    if snap is None or not isinstance(snap.data, SnapshotFile):
        return snap
    return Snapshot(snap.index, snap.term, snap.config, snap.data.read_data())
