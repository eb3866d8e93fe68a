"""Snapshot files: the state machine's bytes plus (index, term, configuration), checksummed end to end.

Layout of ``<index:016x>-<term:016x>.snap``:
  magic b"ZRSNAP01" | meta_len:u32le | meta (msgpack map: index, term, voters) | data_len:u64le | data
  | crc32:u32le over everything before it
Written to a temporary file, fsynced, renamed, and the directory fsynced: a crash leaves the old one.
"""

from __future__ import annotations

import struct
import zlib

import msgpack

from zraft.core import ClusterConfig, Snapshot

from .disk import Disk
from .records import CorruptionError

MAGIC = b"ZRSNAP01"
U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")
SUFFIX = ".snap"


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


def encode(snap: Snapshot) -> bytes:
    data = snap.data if snap.data is not None else b""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"snapshot data must be bytes to be stored, not {type(data).__name__}")
    meta = msgpack.packb({"index": snap.index, "term": snap.term, "voters": list(snap.config.voters)})
    body = b"".join((MAGIC, U32.pack(len(meta)), meta, U64.pack(len(data)), data))
    return body + U32.pack(zlib.crc32(body))


def decode(path: str, buf: bytes) -> Snapshot:
    def bad(off: int, what: str) -> CorruptionError:
        return CorruptionError(path, off, what, "this snapshot is unusable. If the other nodes are healthy, stop "
                               "this node, move its data directory aside and restart it empty to catch up "
                               "from the leader")

    if len(buf) < len(MAGIC) + U32.size * 2 + U64.size:
        raise bad(0, "file too short to be a snapshot")
    if buf[: len(MAGIC)] != MAGIC:
        if buf[:6] == MAGIC[:6]:
            raise bad(0, f"snapshot format {buf[6:8]!r} is not one this version of zraft can read (it reads 01)")
        raise bad(0, "not a zraft snapshot (bad magic)")
    (crc,) = U32.unpack_from(buf, len(buf) - U32.size)
    if zlib.crc32(memoryview(buf)[: len(buf) - U32.size]) != crc:
        raise bad(len(buf) - U32.size, "checksum mismatch")
    off = len(MAGIC)
    (meta_len,) = U32.unpack_from(buf, off)
    off += U32.size
    try:
        meta = msgpack.unpackb(buf[off : off + meta_len])
        index, term, voters = int(meta["index"]), int(meta["term"]), tuple(int(v) for v in meta["voters"])
    except Exception as e:
        raise bad(off, f"metadata does not decode ({e})") from None
    off += meta_len
    (data_len,) = U64.unpack_from(buf, off)
    off += U64.size
    if off + data_len != len(buf) - U32.size:
        raise bad(off, "data length does not match the file size")
    return Snapshot(index, term, ClusterConfig(voters), bytes(buf[off : off + data_len]))


def write(disk: Disk, directory: str, snap: Snapshot) -> str:
    path = f"{directory}/{file_name(snap.index, snap.term)}"
    disk.write_atomic(path, encode(snap), sync=True)
    return path


def read(disk: Disk, directory: str, index: int, term: int) -> Snapshot:
    path = f"{directory}/{file_name(index, term)}"
    if not disk.exists(path):
        raise CorruptionError(path, 0, f"the snapshot at index {index} (term {term}) that the log refers to is "
                              "missing")
    snap = decode(path, disk.read(path))
    if (snap.index, snap.term) != (index, term):
        raise CorruptionError(path, 0, f"holds index {snap.index} term {snap.term}, its name says {index} {term}")
    return snap
