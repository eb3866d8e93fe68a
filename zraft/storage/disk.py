"""The file operations storage needs, behind one small interface, so tests can swap in a disk that crashes.

``OsDisk`` is the real one. Its rules: data written is durable only after ``sync``; a new file or a rename is
durable only after ``sync_dir`` of its directory; after a failed ``sync`` nothing written since the last good
one may be assumed durable (Linux may drop the dirty pages: "fsyncgate"), so callers must stop, not retry.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Protocol


class AppendFile(Protocol):
    """A file written at its logical end, which may be before its physical end (preallocated zeros)."""

    def write(self, data: bytes) -> None: ...
    def sync(self) -> None: ...
    def zero(self, start: int, stop: int) -> None: ...
    def size(self) -> int: ...
    def close(self) -> None: ...


class Pace(threading.Event):
    """Handed to ``OsDisk.preallocate`` by a thread that prepares a file ahead of need: the writer rests after each
    fsync until the event is set, and keeps ``written`` up to date so that the owner can tell whether it lags."""

    written: int = 0


class Disk(Protocol):
    def listdir(self, path: str) -> list[str]: ...
    def makedirs(self, path: str) -> None: ...
    def exists(self, path: str) -> bool: ...
    def read(self, path: str) -> bytes: ...
    def read_range(self, path: str, offset: int, length: int) -> bytes: ...
    def file_size(self, path: str) -> int: ...
    def open_append(self, path: str, end: int) -> AppendFile: ...
    def preallocate(self, path: str, size: int, hurry: Pace | None = None) -> None: ...
    def write_atomic(self, path: str, data: bytes, sync: bool) -> None: ...
    def remove(self, path: str) -> None: ...
    def remove_slowly(self, path: str) -> None: ...
    def rename(self, src: str, dst: str) -> None: ...
    def sync_dir(self, path: str) -> None: ...


REMOVING_SUFFIX = ".removing"
REMOVE_STEP_BYTES = 4 << 20
"""``remove_slowly`` shortens the file by this much at a time (about 1.4 ms of kernel time each) ..."""
REMOVE_PAUSE_S = 0.005
"""... resting this long in between."""
PREALLOC_SYNC_BYTES = 1 << 20
"""A segment being preallocated is fsynced every time this much more is written."""
PREALLOC_PAUSE_S = 0.015
"""... and, when it is prepared ahead of need (``hurry`` given and not set), rests this long after each fsync."""


class OsAppendFile:
    def __init__(self, path: str, end: int, fsync: bool) -> None:
        self.path = path
        self._fsync = fsync
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self._end = end

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, self._end)
            view = view[n:]
            self._end += n

    def sync(self) -> None:
        if self._fsync:
            os.fdatasync(self._fd)

    def zero(self, start: int, stop: int) -> None:
        """Overwrite [start, stop) with zeros, make it durable, and make ``start`` the logical end."""
        if stop > start:
            os.pwrite(self._fd, bytes(stop - start), start)
        if self._fsync:
            os.fsync(self._fd)
        self._end = start

    def size(self) -> int:
        return self._end

    def close(self) -> None:
        os.close(self._fd)


class OsDisk:
    """The real file system. With ``fsync=False`` nothing is ever forced to disk: unsafe, for tests and
    benchmarks only (``Storage`` says so loudly)."""

    def __init__(self, fsync: bool = True) -> None:
        self.fsync = fsync

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def makedirs(self, path: str) -> None:
        os.makedirs(path, mode=0o700, exist_ok=True)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def read(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        fd = os.open(path, os.O_RDONLY)
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def file_size(self, path: str) -> int:
        return os.stat(path).st_size

    def open_append(self, path: str, end: int) -> AppendFile:
        return OsAppendFile(path, end, self.fsync)

    def preallocate(self, path: str, size: int, hurry: Pace | None = None) -> None:
        """Create ``path`` filled with ``size`` zero bytes, really written (not a sparse or unwritten extent, so
        later overwrites need no metadata update), and durable. Written to a temporary name, then renamed.
        ``hurry``: the file is prepared ahead of need, by a thread; it is written at a measured pace until
        ``hurry`` is set. Written at full speed, 64 MiB took 440-610 ms, and the log's fsyncs waited behind it:
        with the three nodes of a cluster on one disk rolling their segments at the same index, a paced run's
        writes stalled for half a second."""
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            chunk = bytes(min(size, PREALLOC_SYNC_BYTES))
            left = size
            unsynced = 0
            while left > 0:
                n = os.write(fd, chunk[: min(left, len(chunk))])
                left -= n
                unsynced += n
                if self.fsync and unsynced >= PREALLOC_SYNC_BYTES:
                    # Synced as it grows: one 64 MiB flush at the end would hold up the file system's journal,
                    # and with it the log's own fsyncs, for hundreds of milliseconds.
                    os.fdatasync(fd)
                    unsynced = 0
                    if hurry is not None and left > 0:
                        hurry.written = size - left
                        hurry.wait(PREALLOC_PAUSE_S)
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        self.sync_dir(os.path.dirname(path) or ".")

    def write_atomic(self, path: str, data: bytes, sync: bool) -> None:
        """Write a temporary file, fsync it, rename it over ``path``, fsync the directory."""
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if sync and self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if sync:
            self.sync_dir(os.path.dirname(path) or ".")

    def remove(self, path: str) -> None:
        os.remove(path)

    def remove_slowly(self, path: str) -> None:
        """Remove a large file a slice at a time, for a thread: unlinking a 64 MiB segment at once took 20-54 ms
        of kernel time, and the three nodes of a cluster on one machine do it at the same moment. It is renamed to
        ``<path>.removing`` first, durably, so that a crash midway leaves a file recovery deletes
        (``REMOVING_SUFFIX``), never a shortened segment."""
        doomed = path + REMOVING_SUFFIX
        try:
            os.replace(path, doomed)
        except FileNotFoundError:
            return
        self.sync_dir(os.path.dirname(path) or ".")
        size = os.stat(doomed).st_size
        while size > REMOVE_STEP_BYTES:
            size -= REMOVE_STEP_BYTES
            os.truncate(doomed, size)
            time.sleep(REMOVE_PAUSE_S)
        os.remove(doomed)

    def rename(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def sync_dir(self, path: str) -> None:
        if not self.fsync:
            return
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
