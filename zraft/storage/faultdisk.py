"""An in-memory disk with the failure modes of a real one, for tests and the simulator.

It keeps, for every file, the bytes written and the bytes made durable by the last ``sync``; and for the
directory, the names made durable by the last ``sync_dir``. ``crash()`` keeps only what was durable, and can
tear the last unsynced write (keep a random prefix of it, or zeros in its place). It can also run out of space
(``ENOSPC``, after a partial write, as a real file system does) and fail an fsync (``EIO``).
"""

from __future__ import annotations

import errno
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .disk import Pace


class _File:
    def __init__(self) -> None:
        self.data = bytearray()
        self.synced = b""
        self.pending: list[tuple[int, bytes]] = []
        """Writes since the last sync, in order: what a crash may lose or tear."""


class FaultDisk:
    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.files: dict[str, _File] = {}
        self.durable: dict[str, _File] = {}
        self.dirs: set[str] = set()
        self.space_left: int | None = None
        """Bytes that can still be written; None for unlimited."""
        self.fail_syncs = 0
        """Fail this many of the next fsyncs with EIO."""
        self.syncs = 0
        self.on_sync: Callable[[], None] | None = None
        """Called before every fsync: the simulator crashes the machine there (a write not yet durable)."""

    # ------------------------------------------------------------------ the Disk protocol

    def listdir(self, path: str) -> list[str]:
        prefix = path.rstrip("/") + "/"
        return sorted(p[len(prefix):] for p in self.files if p.startswith(prefix) and "/" not in p[len(prefix):])

    def makedirs(self, path: str) -> None:
        self.dirs.add(path)

    def exists(self, path: str) -> bool:
        return path in self.files

    def read(self, path: str) -> bytes:
        if path not in self.files:
            raise FileNotFoundError(errno.ENOENT, "no such file", path)
        return bytes(self.files[path].data)

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        if path not in self.files:
            raise FileNotFoundError(errno.ENOENT, "no such file", path)
        return bytes(self.files[path].data[offset : offset + length])

    def file_size(self, path: str) -> int:
        if path not in self.files:
            raise FileNotFoundError(errno.ENOENT, "no such file", path)
        return len(self.files[path].data)

    def open_append(self, path: str, end: int) -> FaultFile:
        if path not in self.files:
            self.files[path] = _File()
        return FaultFile(self, self.files[path], end)

    def preallocate(self, path: str, size: int, hurry: Pace | None = None) -> None:
        if self._consume(size) < size:
            raise OSError(errno.ENOSPC, "No space left on device (simulated)")
        f = _File()
        f.data = bytearray(size)
        self._sync()
        f.synced = bytes(f.data)
        self.files[path] = f
        self.sync_dir(path.rsplit("/", 1)[0])

    def write_atomic(self, path: str, data: bytes, sync: bool) -> None:
        f = _File()
        self._consume(len(data))
        f.data = bytearray(data)
        if sync:
            self._sync()
            f.synced = bytes(data)
        self.files[path] = f
        if sync:
            self.sync_dir(path.rsplit("/", 1)[0])

    def remove(self, path: str) -> None:
        if path not in self.files:
            raise FileNotFoundError(errno.ENOENT, "no such file", path)
        del self.files[path]

    def remove_slowly(self, path: str) -> None:
        self.remove(path)

    def rename(self, src: str, dst: str) -> None:
        self.files[dst] = self.files.pop(src)

    def sync_dir(self, path: str) -> None:
        self._sync()
        prefix = path.rstrip("/") + "/"
        for p in [p for p in self.durable if p.startswith(prefix) and "/" not in p[len(prefix):]]:
            del self.durable[p]
        for p, f in self.files.items():
            if p.startswith(prefix) and "/" not in p[len(prefix):]:
                self.durable[p] = f

    # ------------------------------------------------------------------ faults

    def clone(self) -> FaultDisk:
        """A copy of this disk as it is now, everything in it durable."""
        other = FaultDisk()
        for p, f in self.files.items():
            g = _File()
            g.data = bytearray(f.data)
            g.synced = bytes(f.data)
            other.files[p] = g
        other.durable = dict(other.files)
        other.dirs = set(self.dirs)
        return other

    def flip_bit(self, path: str, pos: int) -> None:
        """Damage one bit of a file (bit ``pos % 8`` of byte ``pos``), as bad media would."""
        f = self.files[path]
        f.data[pos] ^= 1 << (pos % 8)
        f.synced = bytes(f.data)

    def crash(self, tear: str = "lose") -> None:
        """Forget everything not durable. ``tear``: "lose" drops every unsynced write; "prefix" keeps some of them
        in order, the last one cut at a random byte; "zeros" does the same but, where a cut write extended the
        file, keeps the file's length with zeros (allocated, never written)."""
        after: dict[str, _File] = {}
        for p, f in self.durable.items():
            g = _File()
            g.data = bytearray(f.synced)
            if tear in ("prefix", "zeros") and f.pending:
                k = self.rng.randint(1, len(f.pending))
                for i, (off, data) in enumerate(f.pending[:k]):
                    full = len(data)
                    if i == k - 1:
                        data = data[: self.rng.randint(0, len(data))]
                    if len(g.data) < off:
                        g.data += bytes(off - len(g.data))
                    g.data[off : off + len(data)] = data
                    if tear == "zeros" and len(g.data) < off + full:
                        g.data += bytes(off + full - len(g.data))
            g.synced = bytes(g.data)
            after[p] = g
        self.files = after
        self.durable = dict(after)

    def _consume(self, n: int) -> int:
        if self.space_left is None:
            return n
        n = min(n, self.space_left)
        self.space_left -= n
        return n

    def _sync(self) -> None:
        if self.on_sync is not None:
            self.on_sync()
        self.syncs += 1
        if self.fail_syncs:
            self.fail_syncs -= 1
            raise OSError(errno.EIO, "simulated fsync failure")


class FaultFile:
    def __init__(self, disk: FaultDisk, f: _File, end: int) -> None:
        self.disk = disk
        self.f = f
        self.end = end

    def write(self, data: bytes) -> None:
        grow = max(0, self.end + len(data) - len(self.f.data))
        n = len(data) - grow + self.disk._consume(grow)
        chunk = bytes(data[:n])
        self.f.data[self.end : self.end + n] = chunk
        self.f.pending.append((self.end, chunk))
        self.end += n
        if n < len(data):
            raise OSError(errno.ENOSPC, "No space left on device (simulated)")

    def sync(self) -> None:
        self.disk._sync()
        self.f.synced = bytes(self.f.data)
        self.f.pending = []

    def zero(self, start: int, stop: int) -> None:
        if stop > start:
            self.f.data[start:stop] = bytes(stop - start)
        self.disk._sync()
        self.f.synced = bytes(self.f.data)
        self.f.pending = []
        self.end = start

    def size(self) -> int:
        return self.end

    def close(self) -> None:
        pass
