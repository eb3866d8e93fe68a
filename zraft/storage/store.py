"""A node's durable state: the Raft log, its hard state and its snapshots, in one directory.

    <data-dir>/log/<seq:016x>.seg     append-only segments of checksummed records (see ``records``)
    <data-dir>/snap/<index>-<term>.snap  the newest two snapshots (see ``snapshots``)

Every ``save`` is one write and one fsync: the entries of a ready batch, its hard state and (for an installed
snapshot) a snapshot marker go into the active segment together (group commit). Truncating a conflicting
suffix writes nothing special: an entry record replaces every entry at its index or above when the log is
replayed, so the only physical deletions are whole segments that a snapshot covers. A crash at any point
leaves a log that replays to a state the node really persisted: a torn last record is cut off with a warning;
damage anywhere else stops the node with the file and offset.
"""

from __future__ import annotations

import errno
import itertools
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, NoReturn

from zraft.core import ClusterConfig, Entry, HardState, Snapshot

from . import records as rec
from . import snapshots
from .disk import REMOVING_SUFFIX, AppendFile, Disk, OsDisk, Pace
from .records import CorruptionError

log = logging.getLogger("zraft.storage")

SEGMENT_BYTES = 64 << 20
"""A new segment is started once the active one reaches this size."""
SEG_SUFFIX = ".seg"
NEWER_ADVICE = ("run the zraft version that wrote it (or a newer one); a node never rewrites data in a format it "
                "does not know (docs/OPERATIONS.md, Upgrades)")


class StorageError(Exception):
    """Writing to disk failed (a full disk, an I/O error, a failed fsync). Nothing written since the last
    successful save may be assumed durable, so the storage refuses all further writes: the node must stop and be
    restarted, which recovers from what is really on disk."""


@dataclass
class Segment:
    seq: int
    path: str
    max_index: int = 0
    """The highest entry index written to this segment (an upper bound on its live entries)."""
    end: int = 0
    """Where its data ends (the rest is preallocated zeros)."""


@dataclass
class Recovered:
    """What a node restarts from."""

    hard_state: HardState
    snapshot: Snapshot | None
    entries: list[Entry]
    warnings: list[str] = field(default_factory=list)


class _Replay:
    """Rebuilds the log by replaying records in order (the rules in the module docstring)."""

    def __init__(self) -> None:
        self.base_index = 0
        self.base_term: int | None = 0
        self.entries: list[Entry] = []
        self.hard_state = HardState()
        self.snapshot_mark: tuple[int, int] | None = None

    @property
    def last(self) -> int:
        return self.base_index + len(self.entries)

    def batch(self, items: list[list[Any]]) -> None:
        """Consecutive entries as [index, term, kind, data]: the first replaces any entry at its index or above."""
        first = items[0][0]
        skip = self.base_index + 1 - first
        if skip > 0:  # partly covered by the snapshot (or by a gap that a later snapshot marker must cover)
            items = items[skip:]
            first += skip
            if not items:
                # Wholly below the base, yet it still replaced every entry after its first index: those of a
                # deposed leader that a segment removed since had been followed by (found by the simulator).
                self.entries = []
                return
        if first > self.last + 1:
            # A gap: the entries before it were in segments deleted after a snapshot covered them. A later
            # snapshot marker must cover the gap, or the log is broken (checked at the end).
            self.base_index, self.base_term, self.entries = first - 1, None, []
        else:
            del self.entries[first - self.base_index - 1 :]
        for i, (index, _, _, _) in enumerate(items):
            if index != first + i:
                raise ValueError(f"entries out of order at index {index}")
        self.entries.extend(Entry(*x) for x in items)

    def snapshot(self, index: int, term: int) -> None:
        if index == 0:
            return  # "no snapshot yet", as restated at the start of a segment
        self.snapshot_mark = (index, term)
        if index < self.base_index:
            return
        # Raft §7: keep the entries after the snapshot if the log has its last entry; else drop them all.
        if index <= self.last and (
            (index == self.base_index and self.base_term in (term, None))
            or (index > self.base_index and self.entries[index - self.base_index - 1].term == term)
        ):
            del self.entries[: index - self.base_index]
        else:
            self.entries = []
        self.base_index, self.base_term = index, term


class Storage:
    def __init__(self, path: str, unsafe_no_fsync: bool = False, disk: Disk | None = None,
                 segment_bytes: int = SEGMENT_BYTES, background_prealloc: bool | None = None) -> None:
        """Open (creating if needed) and recover the data directory ``path``. ``unsafe_no_fsync=True`` is UNSAFE:
        data is not forced to disk and a machine crash can lose acknowledged writes (tests and benchmarks only).
        ``background_prealloc`` (default: on a real disk): threads prepare the next log segment and remove old ones,
        off the caller's thread; the simulator turns it off to stay deterministic."""
        self.path = path
        self.disk = disk or OsDisk(fsync=not unsafe_no_fsync)
        self.unsafe_no_fsync = unsafe_no_fsync
        self.segment_bytes = segment_bytes
        self.log_dir = f"{path}/log"
        self.snap_dir = f"{path}/snap"
        self.bytes_since_snapshot = 0
        """Bytes written to the log since the last snapshot (or start): a trigger for taking the next one."""
        self._failed: BaseException | None = None
        self._segments: list[Segment] = []
        self._doomed: list[str] = []
        """Files to remove, in this order (``tidy``)."""
        self._remover: tuple[threading.Thread, list[OSError]] | None = None
        """The thread removing a log segment (``tidy``), with the error it met, if any."""
        self._pinned: set[str] = set()
        """Snapshot files being read for a backup: kept even once two newer snapshots exist (``pin``)."""
        self._active: AppendFile | None = None
        self.background_prealloc = isinstance(self.disk, OsDisk) if background_prealloc is None \
            else background_prealloc
        self._spare: tuple[threading.Thread, list[BaseException], Pace, int] | None = None
        """The thread preparing the next segment, its error if any, its pace, and the active segment's size when
        it started."""
        self._spare_path = f"{self.log_dir}/spare.prealloc"
        if unsafe_no_fsync:
            log.warning("path=%s event=unsafe_no_fsync writes are not forced to disk; acknowledged data can be "
                        "lost in a crash", path)
        for d in (path, self.log_dir, self.snap_dir):
            self.disk.makedirs(d)
        self.recovered = self._recover()
        self._hard_state = self.recovered.hard_state
        s = self.recovered.snapshot
        self._snapshot_mark = (s.index, s.term) if s else (0, 0)

    # ------------------------------------------------------------------ recovery

    def _recover(self) -> Recovered:
        warnings: list[str] = []
        listed = self.disk.listdir(self.log_dir)
        for n in listed:
            if n.endswith(REMOVING_SUFFIX):  # a segment a crash caught while it was being removed
                self.disk.remove(f"{self.log_dir}/{n}")
        names = [n for n in listed if n.endswith(SEG_SUFFIX)]
        seqs = []
        for n in names:
            try:
                seqs.append(int(n[: -len(SEG_SUFFIX)], 16))
            except ValueError:
                raise CorruptionError(f"{self.log_dir}/{n}", 0, "unexpected file name in the log directory",
                                      "remove files zraft did not write from the log directory") from None
        seqs.sort()
        for a, b in itertools.pairwise(seqs):
            if b != a + 1:
                raise CorruptionError(f"{self.log_dir}/{self._seg_name(a + 1)}", 0, "segment is missing")
        rp = _Replay()
        for i, seq in enumerate(seqs):
            path = f"{self.log_dir}/{self._seg_name(seq)}"
            last = i == len(seqs) - 1
            buf = self.disk.read(path)
            records, end, torn = rec.scan(path, buf, last)
            seg = Segment(seq, path, end=end)
            if records and records[0][1][0] != rec.HEADER:
                raise CorruptionError(path, 0, "segment does not start with a header record")
            for off, r in records:
                t = r[0]
                if t == rec.ENTRIES:
                    items = r[1]
                    try:
                        rp.batch(items)
                    except (ValueError, TypeError, IndexError) as e:
                        raise CorruptionError(path, off, f"malformed entries record ({e})") from None
                    if items and items[-1][0] > seg.max_index:
                        seg.max_index = items[-1][0]
                elif t == rec.HARD_STATE:
                    rp.hard_state = HardState(r[1], r[2], r[3])
                elif t == rec.SNAPSHOT:
                    rp.snapshot(r[1], r[2])
                elif t == rec.HEADER:
                    if off == 0 and type(r[1]) is int and r[1] > rec.VERSION:
                        raise CorruptionError(path, off, f"log segment format {r[1]} is newer than this zraft reads "
                                              f"({rec.VERSION}): a newer zraft wrote it", NEWER_ADVICE)
                    if off != 0 or r[1] != rec.VERSION or r[2] != seq:
                        raise CorruptionError(path, off, f"bad segment header {r[1:]} (expected version "
                                              f"{rec.VERSION}, segment {seq})")
                else:
                    raise CorruptionError(path, off, f"unknown record type {t}")
            if torn is not None:
                msg = (f"{path}: cut off a torn tail at offset {torn.offset} ({torn.why}; {len(buf) - torn.offset}"
                       " bytes): the last write before a crash never completed, nothing in it was acknowledged")
                log.warning("event=torn_tail %s", msg)
                warnings.append(msg)
                f = self.disk.open_append(path, torn.offset)
                f.zero(torn.offset, len(buf.rstrip(b"\0")))
                f.close()
            if not records:  # a segment created just before a crash, with not even its header
                self.disk.remove(path)
                self.disk.sync_dir(self.log_dir)
                continue
            self._segments.append(seg)
        if rp.base_term is None:
            raise CorruptionError(self.log_dir, 0, f"gap in the log: entries before {rp.base_index + 1} are missing "
                                  "and no snapshot covers them")
        snap = None
        if rp.snapshot_mark is not None:
            snap = snapshots.read(self.disk, self.snap_dir, *rp.snapshot_mark)
        self._remove_unused_snapshots(rp.snapshot_mark or (0, 0), warnings)
        hs = rp.hard_state
        if hs.commit > rp.last:
            raise CorruptionError(self.log_dir, 0, f"hard state commit {hs.commit} is past the last entry {rp.last}")
        return Recovered(hs, snap, rp.entries, warnings)

    def _remove_unused_snapshots(self, mark: tuple[int, int], warnings: list[str]) -> None:
        # Left by a crash: temporary files of a snapshot being written or received, and complete snapshots that
        # no marker names yet (the node took or received them but did not get to record them). Neither was ever
        # the node's state; the leader will send another if it is still needed.
        for n in self.disk.listdir(self.snap_dir):
            p = snapshots.parse_name(n)
            if n.endswith(snapshots.TMP_SUFFIX) or n.endswith(snapshots.PART_SUFFIX) or (p and p[0] > mark[0]):
                self.disk.remove(f"{self.snap_dir}/{n}")
                warnings.append(f"{self.snap_dir}/{n}: removed a snapshot file no log record refers to "
                                "(left by a crash while it was written or received)")

    @staticmethod
    def _seg_name(seq: int) -> str:
        return f"{seq:016x}{SEG_SUFFIX}"

    # ------------------------------------------------------------------ writing

    def save(self, hard_state: HardState | None, entries: list[Entry], snapshot: Snapshot | None = None,
             sync: bool = True) -> None:
        """Make a ready batch durable: its snapshot (if any), then its entries and hard state, in one write and
        one fsync. ``sync=False`` (a batch whose only change is the commit index: ``Ready.must_sync`` is false)
        writes without the fsync; the next synced batch makes it durable, and a crash before then may lose it.
        Raises ``StorageError`` (and refuses all later writes) if the disk fails."""
        self._check()
        parts: list[bytes] = []
        if snapshot is not None:
            parts.append(rec.encode([rec.SNAPSHOT, snapshot.index, snapshot.term]))
        if entries:
            parts.append(rec.entries_record(entries))
        if hard_state is not None:
            parts.append(rec.encode([rec.HARD_STATE, hard_state.term, hard_state.vote, hard_state.commit]))
        if not parts:
            return
        data = b"".join(parts)
        try:
            if snapshot is not None:
                self._place_snapshot(snapshot)
                self.bytes_since_snapshot = 0
            self.bytes_since_snapshot += len(data)
            active = self._active
            if active is None or active.size() >= self.segment_bytes:
                self._roll_if_needed()
            f = self._active
            assert f is not None
            f.write(data)
            if self.background_prealloc:
                spare = self._spare
                if spare is None:
                    if f.size() >= self.segment_bytes // 4:
                        self._start_spare()  # the next segment, prepared while this one fills
                elif not spare[2].is_set():
                    # Hurried once the log gains on it: the spare must be whole by the time the active segment is
                    # three quarters full. At a low write rate it never is (and its writes stay out of the log's
                    # way); at a high one, soon (a segment then lasts a second or two, and pacing only slowed it).
                    pace, start = spare[2], spare[3]
                    window = self.segment_bytes * 3 // 4 - start
                    if (f.size() - start) * self.segment_bytes >= (pace.written + self.segment_bytes // 8) * window:
                        pace.set()
            if entries:
                seg = self._segments[-1]
                seg.max_index = max(seg.max_index, entries[-1].index)
            if hard_state is not None:
                self._hard_state = hard_state
            if sync or snapshot is not None:
                f.sync()
        except OSError as e:
            self._fail(e)
        if snapshot is not None:
            self._snapshot_mark = (snapshot.index, snapshot.term)
            self._after_snapshot(snapshot.index)

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Store a snapshot the state machine took, then drop the log segments it makes unnecessary."""
        self.save(None, [], snapshot)

    def _place_snapshot(self, snapshot: Snapshot) -> None:
        """Make the snapshot's file durable in the snapshot directory before any marker names it."""
        want = f"{self.snap_dir}/{snapshots.file_name(snapshot.index, snapshot.term)}"
        if isinstance(snapshot.data, snapshots.SnapshotFile):
            if snapshot.data.path != want:
                raise ValueError(f"snapshot file {snapshot.data.path} is not {want}: write it with "
                                 "snapshot_writer() or receive it with snapshot_receiver()")
        else:
            snapshots.write(self.disk, self.snap_dir, snapshot)

    def snapshot_writer(self, index: int, term: int, config: ClusterConfig) -> snapshots.SnapshotWriter:
        """Stream a snapshot of the state machine into a file (from any thread); ``commit()`` it, then
        ``save_snapshot()`` the snapshot it returns to make it the node's snapshot and compact the log."""
        self._check()
        return snapshots.SnapshotWriter(self.disk, self.snap_dir, index, term, config)

    def snapshot_receiver(self, index: int, term: int, size: int) -> snapshots.SnapshotReceiver:
        """Receive a whole snapshot file, as another node stored it, in chunks."""
        self._check()
        return snapshots.SnapshotReceiver(self.disk, self.snap_dir, index, term, size)

    def _after_snapshot(self, index: int) -> None:
        # Whole segments before the active one whose entries the snapshot covers are no longer needed; so are
        # snapshots older than the one before this. They are removed by ``tidy``, one file per call, oldest
        # segment first: unlinking hundreds of MiB at once held the loop for 150 ms. A crash before all are gone
        # leaves a consecutive run of old segments and old snapshots, which recovery accepts (and a crash in the
        # middle of the removal always could).
        try:
            while len(self._segments) > 1 and self._segments[0].max_index <= index:
                self._doomed.append(self._segments.pop(0).path)
            names = sorted((p, n) for n in self.disk.listdir(self.snap_dir)
                           if (p := snapshots.parse_name(n)) and p[0] <= index)
            self._doomed += [path for _, n in names[:-2] if (path := f"{self.snap_dir}/{n}") not in self._doomed
                             and path not in self._pinned]
        except OSError as e:
            self._fail(e)

    def pin(self, path: str) -> None:
        """Keep snapshot file ``path`` until ``unpin``, however many snapshots are taken meanwhile (a backup is
        being read from it). A crash forgets pins: the next snapshot removes the file."""
        self._pinned.add(path)
        if path in self._doomed:
            self._doomed.remove(path)

    def unpin(self, path: str) -> None:
        self._pinned.discard(path)
        if self._snapshot_mark[0]:
            self._after_snapshot(self._snapshot_mark[0])

    @property
    def untidy(self) -> bool:
        """Files no longer needed are waiting to be removed, or being removed (``tidy``)."""
        return bool(self._doomed) or self._remover is not None

    @property
    def tidy_due(self) -> bool:
        """``tidy`` has something to do now (not only a segment being removed by a thread to wait for)."""
        r = self._remover
        return bool(self._doomed) if r is None else not r[0].is_alive()

    def tidy(self) -> None:
        """Remove one file that a snapshot made unnecessary (the loop calls this once per pass while ``tidy_due``).
        On a real disk (``background_prealloc``) a log segment is removed by a thread, a slice at a time
        (``Disk.remove_slowly``): unlinking 64 MiB took 20-54 ms, which held the loop, and with it every write, as
        long. Files go in order, oldest first."""
        r = self._remover
        if r is not None:
            if r[0].is_alive():
                return
            self._remover = None
            if r[1]:
                self._fail(r[1][0])
        if self._doomed:
            path = self._doomed.pop(0)
            if self.background_prealloc and path.endswith(SEG_SUFFIX):
                self._remover = self._remove_in_thread(path)
                return
            try:
                self.disk.remove(path)
            except FileNotFoundError:
                pass
            except OSError as e:
                self._fail(e)
        if not self._doomed:
            try:
                self.disk.sync_dir(self.log_dir)
                self.disk.sync_dir(self.snap_dir)
            except OSError as e:
                self._fail(e)

    def _remove_in_thread(self, path: str) -> tuple[threading.Thread, list[OSError]]:
        errors: list[OSError] = []

        def work() -> None:
            try:
                self.disk.remove_slowly(path)
            except FileNotFoundError:
                pass
            except OSError as e:  # reported by the next tidy()
                errors.append(e)

        t = threading.Thread(target=work, name="zraft-remove", daemon=True)
        t.start()
        return t, errors

    def _roll_if_needed(self) -> None:
        f = self._active
        if f is None and self._segments:  # after a restart, go on writing the last segment
            last = self._segments[-1]
            f = self._active = self.disk.open_append(last.path, last.end)
        if f is not None:
            if f.size() < self.segment_bytes:
                return
            f.sync()  # everything written to the old segment is durable before the new one is used
            self._segments[-1].end = f.size()
            f.close()
            self._active = None
        seq = self._segments[-1].seq + 1 if self._segments else 1
        path = f"{self.log_dir}/{self._seg_name(seq)}"
        self._take_spare(path)
        f = self.disk.open_append(path, 0)
        hs = self._hard_state
        # Each segment restates the hard state and the snapshot mark, so older segments can be deleted.
        f.write(rec.encode([rec.HEADER, rec.VERSION, seq])
                + rec.encode([rec.HARD_STATE, hs.term, hs.vote, hs.commit])
                + rec.encode([rec.SNAPSHOT, *self._snapshot_mark]))
        f.sync()
        self._segments.append(Segment(seq, path))
        self._active = f

    # Preallocation: a zero-filled segment is prepared in a background thread (the writes release the GIL), so
    # that rolling to a new segment costs a rename, not writing 64 MiB of zeros on the hot path. It starts once
    # the active segment is a quarter full (not at startup, where its I/O would slow the first elections), and is
    # written at a pace (``OsDisk.preallocate``) until the log gains on it (``save``) or the spare is needed.

    def _start_spare(self) -> None:
        if not self.background_prealloc or self._spare is not None:
            return
        result: list[BaseException] = []
        hurry = Pace()

        def work() -> None:
            try:
                self.disk.preallocate(self._spare_path, self.segment_bytes, hurry)
            except BaseException as e:  # reported when the spare is taken
                result.append(e)

        t = threading.Thread(target=work, name="zraft-prealloc", daemon=True)
        active = self._active
        self._spare = (t, result, hurry, active.size() if active is not None else 0)
        t.start()

    def _take_spare(self, path: str) -> None:
        spare = self._spare
        self._spare = None
        if spare is not None:
            t, result, hurry, _ = spare
            hurry.set()
            t.join()
            if not result:
                self.disk.rename(self._spare_path, path)
                self.disk.sync_dir(self.log_dir)
                return
        self.disk.preallocate(path, self.segment_bytes)

    def _check(self) -> None:
        if self._failed is not None:
            raise StorageError(f"{self.path}: storage failed earlier ({self._failed}); the node must restart")

    def _fail(self, e: OSError) -> NoReturn:
        self._failed = e
        what = "the disk is full" if e.errno == errno.ENOSPC else f"I/O error: {e}"
        raise StorageError(f"{self.path}: {what}. Nothing written since the last successful save can be trusted "
                           "to be durable; this node stops acknowledging writes and must be restarted") from e

    def close(self) -> None:
        while self.untidy and self._failed is None:
            if self._remover is not None:
                self._remover[0].join()
            self.tidy()
        if self._spare is not None:
            self._spare[2].set()  # no pauses: the node is stopping
            self._spare[0].join()
            self._spare = None
        if self._active is not None:
            try:
                self._active.close()
            finally:
                self._active = None

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def disk_usage(self) -> dict[str, int]:
        """Segment count and the snapshot index, for status reports."""
        active = self._active
        log_bytes = sum(s.end for s in self._segments[:-1]) + (active.size() if active else
                                                                  self._segments[-1].end if self._segments else 0)
        return {"segments": len(self._segments), "snapshot_index": self._snapshot_mark[0], "log_bytes": log_bytes,
                "disk_bytes": len(self._segments) * self.segment_bytes + self._snapshot_bytes()}

    def _snapshot_bytes(self) -> int:
        total = 0
        for n in self.disk.listdir(self.snap_dir):
            try:
                total += self.disk.file_size(f"{self.snap_dir}/{n}")
            except OSError:
                pass  # removed meanwhile
        return total
